/*
 * consumer.h - subscriptions to the log: Lua handlers registered by
 * tide.on and C handlers registered by tide_consumer_add, each with a
 * durable checkpoint, retries with backoff, per-subject ordering and dead
 * letters, run inside the turn's write transaction.
 */
#ifndef TIDE_CONSUMER_H
#define TIDE_CONSUMER_H

#include <stddef.h>
#include <stdint.h>

#include "flight.h"
#include "histo.h"
#include "log.h"
#include "rule.h"
#include "script.h"

/** Defaults of the retry policy. */
#define TIDEI_RETRIES 3
#define TIDEI_BACKOFF_NS 500000000ll       /* 0.5 s, doubling */
#define TIDEI_BACKOFF_MAX_NS 60000000000ll /* 1 min */

/** An event a consumer has not finished with. */
typedef struct tidei_pending {
	uint64_t seq;
	uint64_t subject; /* hash of the subject, 0 if none (never blocks) */
	tidei_pending_rec r;
	int done; /* resolved in this turn; dropped when compacted */
} tidei_pending;

typedef struct tidei_consumer {
	char *name;
	char *pattern;
	size_t plen;
	char *where;          /* script:line of tide.on, or "C" */
	int from;             /* TIDE_FROM_* for a consumer without checkpoint */
	int ref;              /* Lua handler, or LUA_NOREF */
	tide_consumer_fn *fn; /* C handler */
	void *ud;
	/* retry policy */
	uint32_t retries;   /* tries after the first failure */
	int64_t backoff_ns; /* wait before the first retry, doubling */
	int64_t backoff_max_ns;
	int ordered; /* later events of a subject wait behind a retry */
	/* progress */
	uint64_t checkpoint; /* last seq scanned, in this turn */
	uint64_t committed;  /* checkpoint as of the last commit */
	int stored;          /* a checkpoint record exists in the log */
	tidei_pending *pend; /* retrying or waiting events, by seq */
	size_t npend, pcap;
	/* unresolved pending events per subject hash, so that a new event
	 * asks "is my subject held back?" in constant time however many
	 * events are pending (open addressing; a count of 0 is a free slot
	 * for its own hash only, swept when the table grows) */
	struct tidei_subj {
		uint64_t h;
		uint32_t n;
	} * subj;
	size_t subj_cap, subj_used;
	/* for the metrics, since the consumer was defined (a reload starts
	 * them again, as a restart does) */
	uint64_t handled;
	uint64_t failed;
	uint64_t retried;      /* tries scheduled after a failure */
	uint64_t dead_letters; /* events given up on */
	tidei_histo took;      /* handler calls, on tidei_histo_handler */
	tidei_rule *rule;      /* key, clock, windows and timers, or NULL */
} tidei_consumer;

typedef struct tidei_consumers_opts {
	tidei_script_opts script;
	size_t turn_budget; /* events a consumer handles per turn */
	size_t max_emits;   /* events one handler call may emit */
	unsigned max_depth; /* emits from a published event to an emitted one (max_emit_depth) */
	size_t max_event;   /* bytes an emitted event may take (max_event_size) */
	int64_t write_ns;   /* busy turns' work waits in memory this long at most (0: 2 s) */
	void (*log)(void *ud, int level, const char *fmt, ...) TIDEI_PRINTF(3, 4);
	void *log_ud;
	/* tide.projection, handed on with the path of the script being loaded */
	int (*projection)(void *ud, lua_State *L, const char *name, int spec, const char *script,
			  const char *where, char *err);
	void *projection_ud;
	/* tide.query(name, key) from a handler: push the state or nil (with
	 * projection_ud and the log whose transaction is open) */
	int (*query)(void *ud, lua_State *L, tidei_log *log, const char *name, const char *key,
		     size_t klen, char *err);
} tidei_consumers_opts;

typedef struct tidei_consumers tidei_consumers;

/** @p co set for scripts run outside an engine (tide check, tide replay,
 *  tide backtest): the engine's default limits, require() along
 *  @p lua_path, messages (print() included) on stderr; the rest zero. */
void tidei_consumers_opts_offline(tidei_consumers_opts *co, const char *lua_path);

int tidei_consumers_new(tidei_consumers **out, const tidei_consumers_opts *o, char *err);
void tidei_consumers_destroy(tidei_consumers *cs);

/** Load a script; its tide.on calls register consumers. */
int tidei_consumers_load(tidei_consumers *cs, const char *path, char *err);

/** Register a C consumer with tide.on's options.  Strings are copied. */
int tidei_consumers_add(tidei_consumers *cs, const tidei_on_opts *o, tide_consumer_fn *fn, void *ud,
			char *err);

/** Read checkpoints and pending events (new consumers start at the
 *  beginning or at @p head, the end of the log). */
int tidei_consumers_start(tidei_consumers *cs, tidei_log *log, uint64_t head, char *err);

/** Run every consumer inside the open write transaction, up to the
 *  per-turn budget: due retries first, then new events.  Emitted events
 *  are appended at once; the consumers' own work (checkpoints, rule
 *  states) is written with the turn unless the consumers are busy (see
 *  WRITE_BUSY in consumer.c).  *more is set when a consumer is behind, has
 *  a retry due now, or waits to be written.  TIDE_EFULL means: abort,
 *  grow, run again. */
int tidei_consumers_run(tidei_consumers *cs, tidei_log *log, int *more, char *err);

/** Why the scripts' Lua state must be made afresh before another handler
 *  runs (a call ran out of memory and the state stays more than half full
 *  after a collection), or NULL.  The call that was not to blame (the state
 *  was full when it began) is not counted as a failure: its event is
 *  handled again after the engine reloaded the scripts. */
const char *tidei_consumers_full(const tidei_consumers *cs);
/** A fresh state could not be made: from now on every call that runs out
 *  of memory fails as its own. */
void tidei_consumers_blame_all(tidei_consumers *cs);

/** Record each handler call in @p f (may be NULL), and set aside events
 *  the engine died on (see flight.h). */
void tidei_consumers_set_flight(tidei_consumers *cs, tidei_flight *f);

/** A run on the consumers' own thread (cthread.c): the events after the
 *  checkpoints in @p view, a copy of the log whose txn is a read
 *  transaction of that thread, handled as tidei_consumers_run() would,
 *  but writing nothing: emits go to the handoff (set first), and the run
 *  stops where only the writer may go on (a retry to record or due, an
 *  event to hold back, a tide.once claim, a tick, the consumers' work to
 *  write).  *@p need then says the thread must have the engine's
 *  transaction lent for tidei_consumers_lent().  Returns TIDE_OK or the
 *  failure that stopped it. */
int tidei_consumers_read(tidei_consumers *cs, tidei_log *view, int *need, char *err);

/** In @p log's open write transaction, lent to the consumers' thread:
 *  record what the last read left (claims, a failed call's retry), append
 *  a tick if due, handle a few events the way a turn does (retries,
 *  events held back) and write the consumers' work. */
int tidei_consumers_lent(tidei_consumers *cs, tidei_log *log, char *err);

/** Write the consumers' work (checkpoints, rule states and timers, shared
 *  tables) in the open write transaction now, busy or not: before the
 *  scripts are reloaded or the engine stops.  tidei_consumers_run() does
 *  it when it must. */
int tidei_consumers_write(tidei_consumers *cs, tidei_log *log, char *err);

/** The turn committed: what it wrote of the consumers' work is durable. */
void tidei_consumers_committed(tidei_consumers *cs);
/** The turn was aborted (or pending events changed outside a turn):
 *  reload checkpoints and pending events from the log. */
int tidei_consumers_reload(tidei_consumers *cs, tidei_log *log);

/** Dead letter @p seq of consumer @p name was handed back to it (retry) or
 *  dropped, in the open write transaction: update what the consumer holds
 *  in memory to match (the transaction's abort reloads it anyway). */
void tidei_consumers_requeue(tidei_consumers *cs, const char *name, uint64_t seq);
void tidei_consumers_forget(tidei_consumers *cs, const char *name, uint64_t seq);

/** Rules on the arrival clock see time pass through events; when none
 *  comes and one of their timers is due at @p now, append a tick (type
 *  "tide.tick", source "/tide") in the open write transaction.  Ticks
 *  reach no handler; rules on the arrival clock fire their timers at
 *  them, live and in a replay alike. */
int tidei_consumers_tick(tidei_consumers *cs, tidei_log *log, int64_t now, char *err);

/** When the earliest retry (or arrival-clock timer) falls due (ns since
 *  the epoch; 0 = now), or -1 if none. */
int64_t tidei_consumers_next_retry(const tidei_consumers *cs);

size_t tidei_consumers_count(const tidei_consumers *cs);
const tidei_consumer *tidei_consumers_at(const tidei_consumers *cs, size_t k);
/** 1 if a consumer's checkpoint is before @p seq. */
int tidei_consumers_behind(const tidei_consumers *cs, uint64_t seq);
/** The consumer named @p name, or NULL. */
const tidei_consumer *tidei_consumers_find(const tidei_consumers *cs, const char *name);

/** Complete an event emitted by consumer @p consumer while handling
 *  @p cause, as its @p k-th emit: default source "/tide/<consumer>" and id
 *  "<cause seq>.<k>", causationid and correlationid, and its depth (one
 *  more than the cause's) and its time (the cause's, if it has one),
 *  refused beyond @p max_depth (0: no bound).
 *  TIDE_OK or an error in @p err. */
int tidei_emit_prepare(tidei_evb *b, const char *consumer, const struct tide_event *cause, size_t k,
		       unsigned max_depth, char *err);
/** The same with @p tag before @p k in its id ("<cause seq>.<tag><k>":
 *  "t" for what a timer emits) and @p at for its time (INT64_MIN: the
 *  cause's time, as tidei_emit_prepare() gives it). */
int tidei_emit_prepare_tagged(tidei_evb *b, const char *consumer, const struct tide_event *cause,
			      const char *tag, size_t k, int64_t at, unsigned max_depth, int stable,
			      char *err);

/** For a replay: what handlers emit goes to @p emit instead of the log,
 *  and a handler that fails is reported to @p fail instead of retried. */
typedef struct tidei_replay_sink {
	void (*emit)(void *ud, const char *consumer, const uint8_t *rec, size_t len,
		     const struct tide_event *cause);
	void (*fail)(void *ud, const char *consumer, uint64_t seq, const char *why);
	void *ud;
} tidei_replay_sink;
void tidei_consumers_set_sink(tidei_consumers *cs, const tidei_replay_sink *sink);

/** Where emitted events go instead of the log (a cluster's outbox, written
 *  in the open write transaction): @p put returns TIDE_OK or a code with
 *  the reason in @p err, which fails the turn as a failed append would.
 *  Emitted ids then come from the cause's source and id, not its seq, so
 *  that every node that handles a cause emits the same ids. */
typedef int tidei_outbox_fn(void *ud, const uint8_t *rec, size_t len, char *err);
void tidei_consumers_set_outbox(tidei_consumers *cs, tidei_outbox_fn *put, void *ud);

/** 1 if a run that read left work for the writer: a failed call's retry
 *  to record, tide.once claims to store. */
int tidei_consumers_deferred(const tidei_consumers *cs);
/** Do that work in @p log's open write transaction (tidei_consumers_lent
 *  does it first; the engine does it when the thread ends before). */
int tidei_consumers_settle(tidei_consumers *cs, tidei_log *log, char *err);

/** Emits made from now on go to @p put (NULL: to the log again), with the
 *  ids a turn would give them; for the consumers' thread, whose engine
 *  appends them in its next transaction. */
void tidei_consumers_set_handoff(tidei_consumers *cs, tidei_outbox_fn *put, void *ud);

/** Hand @p ev to every consumer in order, as a turn does, inside @p log's
 *  open write transaction (which holds what the rules keep: in a replay,
 *  a scratch log of its own).  Checkpoints are not moved. */
int tidei_consumers_offer(tidei_consumers *cs, tidei_log *log, struct tide_event *ev, char *err);
/** Write what the rules changed in @p log's open write transaction. */
int tidei_consumers_flush(tidei_consumers *cs, tidei_log *log, char *err);

/** The Lua state the scripts run in (shared with the projections). */
tidei_script *tidei_consumers_script(tidei_consumers *cs);

#endif
