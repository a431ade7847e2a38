/*
 * consumer.h - subscriptions to the log: Lua handlers registered by
 * tide.on and C handlers registered by tide_consumer_add, each with a
 * durable checkpoint, run inside the turn's write transaction.
 */
#ifndef TIDE_CONSUMER_H
#define TIDE_CONSUMER_H

#include <stddef.h>
#include <stdint.h>

#include "log.h"
#include "script.h"

typedef struct tidei_consumer {
	char *name;
	char *pattern;
	size_t plen;
	char *where;          /* script:line of tide.on, or "C" */
	int from;             /* TIDE_FROM_* for a consumer without checkpoint */
	int ref;              /* Lua handler, or LUA_NOREF */
	tide_consumer_fn *fn; /* C handler */
	void *ud;
	uint64_t checkpoint; /* last seq handled (or skipped), in this turn */
	uint64_t committed;  /* checkpoint as of the last commit */
	int stored;          /* a checkpoint record exists in the log */
	uint64_t handled;
	uint64_t failed;
} tidei_consumer;

typedef struct tidei_consumers_opts {
	tidei_script_opts script;
	size_t turn_budget; /* events a consumer handles per turn */
	size_t max_emits;   /* events one handler call may emit */
	void (*log)(void *ud, int level, const char *fmt, ...) TIDEI_PRINTF(3, 4);
	void *log_ud;
} tidei_consumers_opts;

typedef struct tidei_consumers tidei_consumers;

int tidei_consumers_new(tidei_consumers **out, const tidei_consumers_opts *o, char *err);
void tidei_consumers_destroy(tidei_consumers *cs);

/** Load a script; its tide.on calls register consumers. */
int tidei_consumers_load(tidei_consumers *cs, const char *path, char *err);

/** Register a C consumer.  Strings are copied. */
int tidei_consumers_add(tidei_consumers *cs, const char *name, const char *pattern, int from,
			tide_consumer_fn *fn, void *ud, char *err);

/** Read the checkpoints (new consumers start at the beginning or at
 *  @p head, the end of the log). */
int tidei_consumers_start(tidei_consumers *cs, tidei_log *log, uint64_t head, char *err);

/** Run every consumer over the log inside the open write transaction, up
 *  to the per-turn budget.  Emitted events are appended.  *more is set when
 *  a consumer is still behind.  TIDE_EFULL means: abort, grow, run again. */
int tidei_consumers_run(tidei_consumers *cs, tidei_log *log, int *more, char *err);

/** The turn committed: its checkpoints are now durable. */
void tidei_consumers_committed(tidei_consumers *cs);
/** The turn was aborted: forget its checkpoint moves. */
void tidei_consumers_rollback(tidei_consumers *cs);
/** Smallest checkpoint: the log up to it has been seen by everyone. */
uint64_t tidei_consumers_min_checkpoint(const tidei_consumers *cs, uint64_t head);

size_t tidei_consumers_count(const tidei_consumers *cs);
const tidei_consumer *tidei_consumers_at(const tidei_consumers *cs, size_t k);

#endif
