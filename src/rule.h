/*
 * rule.h - what a consumer becomes when it is a rule: durable state per
 * key, a clock (event time with a watermark, or arrival time), windows
 * with aggregates, and timers.
 *
 *   tide.on("card.transaction", function(ev, st, w) ... end, {
 *     name = "velocity", key = "subject", ttl = "30d",
 *     windows = { h1 = { sliding = "1h", value = "data.amount" } },
 *     timers = { quiet = function(key, data, st) ... end },
 *   })
 *
 * Everything a rule keeps is in the log's `rules` database and is written
 * in one transaction with the consumer's checkpoint, when the consumer
 * layer says (every turn, or every few seconds while busy): after kill -9
 * the rule goes back to its last write and handles the events since then
 * again, as it did the first time.  Between turns, the states of the keys
 * seen lately stay decoded in the scripts' Lua state (a cache, bounded by
 * a number of keys), each with its last good encoding, which is what is
 * written and what a failing call is rolled back to.
 *
 * The clock moves only with the rule's own input, in log order, so a
 * replay of the log moves it the same way: timers and windows fire at the
 * same events live and in a replay.  The consumer layer (consumer.c)
 * decides when events are handled and appends what they emit; this
 * module does the rest.
 */
#ifndef TIDE_RULE_H
#define TIDE_RULE_H

#include <lua.h>
#include <stddef.h>
#include <stdint.h>

#include "log.h"
#include "rtimer.h"
#include "rwin.h"
#include "script.h"

typedef struct tidei_rule tidei_rule;

/** The clock a rule's timers, windows and expiry follow. */
enum {
	TIDEI_CLOCK_EVENT,   /* the events' `time` (their arrival if they have none) */
	TIDEI_CLOCK_ARRIVAL, /* when the events were recorded */
};

/** What becomes of an event older than the watermark. */
enum {
	TIDEI_LATE_DROP,   /* counted (tide stat), not handled */
	TIDEI_LATE_HANDLE, /* handled like any other, but not added to windows */
	TIDEI_LATE_FN,     /* handed to the rule's `late` function */
};

/** Longest key a rule keeps state under, and longest timer name. */
#define TIDEI_RULE_KEY_MAX 200
#define TIDEI_RULE_TIMER_MAX 64

/** Keys whose state stays decoded between turns (per rule), while the
 *  scripts' Lua state is at most half full. */
#define TIDEI_RULE_CACHE 250000
/** Changes (keys and timers) that may wait in memory for a write. */
#define TIDEI_RULE_UNWRITTEN 200000

/** What tide.on's options make a rule (key, ttl, clock, lateness, late,
 *  windows, timers, on_close), read from the options table at @p idx of
 *  @p L.  *out is NULL when the options name none of them: a plain
 *  consumer.  Errors (an unknown clock, a bad duration or window) name the
 *  option. */
int tidei_rule_new(tidei_rule **out, lua_State *L, int idx, const char *consumer, char *err);
void tidei_rule_free(tidei_rule *r, lua_State *L);

/** Read the rule's clock from @p txn; the cache starts empty. */
int tidei_rule_start(tidei_rule *r, tidei_log *log, MDB_txn *txn, char *err);
/** Forget what is cached (the turn was aborted, or the Lua state is
 *  going away); the log holds the truth. */
void tidei_rule_reset(tidei_rule *r, lua_State *L);

/** A new event reaches the rule: its time on the rule's clock moves the
 *  watermark.  Returns 1 when the event is late (older than the
 *  watermark), with what to do in *late (TIDEI_LATE_*), else 0. */
int tidei_rule_clock(tidei_rule *r, const struct tide_event *ev, int *late);

/** The next timer due at the watermark, taken out of the log (a
 *  recurring one is put back, due again): 1 with it in @p t, 0 if none,
 *  or a negative TIDE_E* code (message in @p err). */
int tidei_rule_due(tidei_rule *r, tidei_log *log, tidei_rule_timer *t, char *err);

/** Call the handler of @p t (a named timer, a window closing, or a key's
 *  expiry) in @p s.  TIDE_OK, or TIDE_ESCRIPT with the error in @p why
 *  (then nothing it did to the state stays), or another code when the log
 *  failed under the call (TIDE_EFULL...): then the turn must be aborted. */
int tidei_rule_fire(tidei_rule *r, tidei_script *s, tidei_log *log, const tidei_rule_timer *t,
		    char *why, char *trace);

/** Call handler @p ref with the event, its key's state and windows (a late
 *  event with @p late: TIDEI_LATE_HANDLE or _FN).  As tidei_rule_fire(). */
int tidei_rule_call(tidei_rule *r, tidei_script *s, tidei_log *log, int ref,
		    const struct tide_event *ev, int late, char *why, char *trace);
/** The same for an event tried again (a retry, or a dead letter retried):
 *  it is not added to windows again.  (An event released after an earlier
 *  one of its subject was never tried: it goes to tidei_rule_call().) */
int tidei_rule_call_again(tidei_rule *r, tidei_script *s, tidei_log *log, int ref,
			  const struct tide_event *ev, char *why, char *trace);

/** tide.timer.* from the call in progress: @p op is TIDEI_TIMER_*.
 *  Applied when the call succeeds. */
enum { TIDEI_TIMER_AT, TIDEI_TIMER_AFTER, TIDEI_TIMER_EVERY, TIDEI_TIMER_CANCEL };
int tidei_rule_timer_op(tidei_rule *r, lua_State *L, int op, const char *name, size_t n,
			int64_t when, int data, char *err);
/** tide.window(name[, aggregate...]) in a call: push the aggregates of
 *  window @p name of the key in hand, at the time of the call: a table,
 *  or the @p nfields named at index @p fields on (tidei_rwins_push). */
int tidei_rule_window(tidei_rule *r, lua_State *L, const char *name, int fields, int nfields,
		      char *err);
/** For a rule on the arrival clock: when its next timer is due (ns since
 *  the epoch; INT64_MAX: none), read from @p txn when not known (with
 *  @p txn NULL, INT64_MIN then: "look").  INT64_MAX for other rules. */
int64_t tidei_rule_wall_due(tidei_rule *r, tidei_log *log, MDB_txn *txn);
/** The rule's clock: the watermark (ns), or INT64_MIN before any event. */
int64_t tidei_rule_now(const tidei_rule *r);

/** Write what changed since the last write (states, timers, the clock) in
 *  the open write transaction.  Until then it is only in memory: a turn
 *  that does not write leaves nothing of the rule in the log, and an
 *  aborted turn takes the rule back to its last write (tidei_rule_start).
 *  */
int tidei_rule_flush(tidei_rule *r, tidei_log *log, char *err);
/** At most this many events for tidei_rule_ahead(). */
#define TIDEI_RULE_AHEAD 16
/** Events @p evs (@p n, at most TIDEI_RULE_AHEAD are looked at) are to
 *  be handled soon: start bringing their keys' slots into the CPU cache.
 *  Only a hint; rules keyed by a function are not looked ahead for. */
void tidei_rule_ahead(const tidei_rule *r, const struct tide_event *const *evs, size_t n);
/** The records (key states, timers) its next write writes. */
size_t tidei_rule_unwritten(const tidei_rule *r);
/** 1 if the rule must be written this turn: too much waits in memory
 *  (TIDEI_RULE_UNWRITTEN changes, more keys than the cache holds, or the
 *  scripts' Lua state more than half full). */
int tidei_rule_must_write(const tidei_rule *r, lua_State *L);
/** A turn that wrote the rule committed; the cache is trimmed to its
 *  bound. */
void tidei_rule_committed(tidei_rule *r, lua_State *L);

/** What the rule is, in words ("key subject, ttl 30d, event clock"),
 *  appended to @p out; its windows (may be NULL); and the names of its
 *  timer handlers, one call of @p fn each (read from @p L). */
void tidei_rule_describe(const tidei_rule *r, tidei_buf *out);
const tidei_rwins *tidei_rule_windows(const tidei_rule *r);
void tidei_rule_timer_names(const tidei_rule *r, lua_State *L,
			    void (*fn)(void *ud, const char *name), void *ud);

/** Windows closed and keys expired since the rule was defined (for the
 *  metrics; a reload starts them again). */
void tidei_rule_counts(const tidei_rule *r, uint64_t *closed, uint64_t *expired);

/** Figures for tide stat (rstore.c). */
typedef struct tidei_rule_stat {
	int64_t watermark;
	uint64_t late, fired, failed;
	uint64_t keys, timers; /* stored (with @p count) */
} tidei_rule_stat;
/** The clock and counters stored for consumer @p name, and with @p count
 *  the keys and timers it keeps (a walk over them): TIDE_OK,
 *  TIDE_ENOTFOUND (not a rule, or it has not run yet), TIDE_EIO. */
int tidei_rule_stat_read(tidei_log *log, MDB_txn *txn, const char *name, tidei_rule_stat *st,
			 int count);

/** Called with each key of a rule that keeps a state, in key order, and
 *  that state as JSON; non-zero stops the walk. */
typedef int tidei_rule_state_fn(void *ud, const char *key, size_t klen, const char *json,
				size_t jlen);
/** The states consumer @p name has stored (rstore.c): TIDE_OK,
 *  TIDE_ENOTFOUND (a log from before rules), TIDE_EIO (a damaged record),
 *  TIDE_ENOMEM. */
int tidei_rule_states_read(tidei_log *log, MDB_txn *txn, const char *name, tidei_rule_state_fn *fn,
			   void *ud);

#endif
