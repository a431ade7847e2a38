/*
 * dlq.h - retrying and dropping dead letters, shared by the engine (on
 * request over REP) and by tide_dlq_apply() when no engine runs.
 */
#ifndef TIDE_DLQ_H
#define TIDE_DLQ_H

#include <stdint.h>

#include "log.h"

/** A retry or drop of dead letters, done a slice at a time so that each
 *  slice commits with a turn of its own: producers are not held up by a
 *  long one, and a crash keeps the slices done. */
typedef struct tidei_dlq_job {
	int op;             /* TIDE_DLQ_RETRY or TIDE_DLQ_DROP */
	char consumer[256]; /* only this consumer's; "" for every consumer */
	uint64_t seq;       /* only this seq; 0 for every one */
	char at[256];       /* the last dead letter looked at (when started) */
	uint64_t at_seq;
	int started;
	uint64_t count; /* dead letters retried or dropped so far */
	int done;
} tidei_dlq_job;

/** Set up @p j.  TIDE_OK, or TIDE_EINVAL (an unknown op, a bad name) with
 *  the reason in @p err (may be NULL). */
int tidei_dlq_job_init(tidei_dlq_job *j, int op, const char *consumer, uint64_t seq, char *err);

/** Retry or drop the next dead letters of @p j, at most @p max of them,
 *  inside the open write transaction of @p log; @p changed (may be NULL)
 *  hears of each one.  Sets j->done when none are left.  Returns TIDE_OK,
 *  or a code with the detail in log->err (then the transaction must be
 *  aborted and @p j restored to its copy from before the call). */
int tidei_dlq_step(tidei_log *log, tidei_dlq_job *j, size_t max,
		   void (*changed)(void *ud, int op, const char *consumer, uint64_t seq), void *ud);

#endif
