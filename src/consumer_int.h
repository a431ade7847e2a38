/*
 * consumer_int.h - what consumer.c and chost.c share: the structure of a
 * set of consumers.  Not for embedders.
 */
#ifndef TIDE_CONSUMER_INT_H
#define TIDE_CONSUMER_INT_H

#include "consumer.h"
#include "keymap.h"
#include "shared.h"

struct tidei_consumers {
	tidei_consumer *v;
	size_t n, cap;
	tidei_script *script;
	tidei_consumers_opts o;
	/* while a script is loading */
	const char *loading;
	int loading_count;
	tidei_flight *flight; /* the engine's flight recorder, or NULL */
	/* while a handler runs */
	tidei_log *log;
	tidei_consumer *cur;
	const struct tide_event *cause;
	tidei_buf emits; /* records emitted by the current call */
	uint32_t *emit_len;
	size_t nemits, emit_cap;
	size_t reserved; /* of emits, against the scripts' memory ceiling */
	/* the Lua state is full of what an earlier call left (see handle()):
	 * no more handlers this turn; the engine loads the scripts afresh */
	int full;
	int blame_all; /* a fresh state did not help: every call pays for itself */
	char full_why[TIDEI_ERRLEN];
	int take_nomem; /* tide_emit: an event of the text ran out of memory */
	int store_rc;   /* the log failed under the call in hand (tide.once) */
	/* Once keys granted since the consumers' work last committed: a turn
	 * aborted and run again (the map grew, or another consumer failed
	 * the turn) rolls their claims back, but the effects they guard have
	 * happened, so they are not granted a second time. */
	tidei_keymap claims;     /* "consumer\0key" */
	tidei_buf claim;         /* the one being looked up */
	int ran;                 /* the consumers ran in the open transaction */
	const char *tag;         /* emits' ids: "<seq>.<tag><k>" */
	size_t tag_base;         /* k of the call's first emit, less one */
	int64_t emit_at;         /* the time of what it emits, or INT64_MIN: the cause's */
	int late;                /* the event in hand is late (TIDEI_LATE_*), or 0 */
	int again;               /* the event in hand was tried before */
	tidei_rule_timer timer;  /* the one firing */
	tidei_replay_sink sink;  /* a replay's, or all NULL */
	tidei_outbox_fn *outbox; /* a cluster's: emits go there, not to the log */
	void *outbox_ud;
	tidei_shared *shared; /* tide.shared tables */
	uint64_t tick_seq;    /* the tick appended last, until every rule passed it */
	/* Writing the consumers' work (checkpoints, rule states and timers,
	 * shared tables) waits while they are busy: see tidei_consumers_run. */
	int64_t written_at;   /* when it was last written */
	uint64_t since_write; /* events handled since */
	int must_write;       /* this turn wrote what cannot wait (a retry, a claim) */
	int wrote;            /* the open turn writes it */
	tidei_buf scratch;    /* tide_event_json() for C handlers */
	tidei_buf attrs;      /* tide_event_attr() for C handlers */
	/* On the consumers' thread (cthread.c), a run reads a snapshot of the
	 * log and writes nothing: its emits are handed off, and what only the
	 * writer may do stops it (need) until the engine lends its
	 * transaction (tidei_consumers_lent). */
	int reading;
	int need;
	tidei_outbox_fn *handoff; /* emits go there, the cause's ids kept */
	void *handoff_ud;
	struct {
		int set;
		size_t c; /* the consumer's index */
		uint64_t seq;
		int ok;
		int64_t now;
		char why[TIDEI_ERRLEN];
		char where[256];
	} failed;       /* a call that failed while reading: its retry to record */
	tidei_buf owed; /* tide.once claims granted while reading, to write:
			 * consumer "\0", u32 key length, key, u64 seq */
};

#define LOG(cs, level, ...) (cs)->o.log((cs)->o.log_ud, level, __VA_ARGS__)

/* chost.c */
/** The scripts' host: @p cs and its callbacks, but for `on`
 *  (consumer.c's). */
void tidei_chost_init(tidei_host *host, tidei_consumers *cs);
/** Give back what the call in hand's emits held of the scripts' memory. */
void tidei_chost_release(tidei_consumers *cs);

#endif
