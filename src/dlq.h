/*
 * dlq.h - retrying and dropping dead letters, shared by the engine (on
 * request over REP) and by tide_dlq_apply() when no engine runs.
 */
#ifndef TIDE_DLQ_H
#define TIDE_DLQ_H

#include <stdint.h>

#include "log.h"

/** Apply TIDE_DLQ_RETRY or TIDE_DLQ_DROP inside the open write transaction
 *  of @p log.  Returns TIDE_OK with *count set, or a code with the detail
 *  in log->err. */
int tidei_dlq_apply(tidei_log *log, int op, const char *consumer, uint64_t seq, uint64_t *count);

/** Open the log in @p dir for writing (TIDE_EBUSY if an engine runs
 *  there; TIDE_ENOTFOUND if there is no log), run @p fn in one write
 *  transaction and commit it.  The error goes to @p err. */
int tidei_offline(const char *dir, int (*fn)(tidei_log *log, void *ud), void *ud, char *err,
		  size_t errlen);

#endif
