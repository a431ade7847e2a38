/*
 * rtimer.h - a rule's timers: stored in the log's `rules` database in
 * the order they fire, with what calls changed since the last write kept
 * in memory.
 *
 * A timer is (key, name) -> due time, period and data.  Setting,
 * cancelling and taking timers changes only the set of changes in
 * memory; tidei_rtimers_write() applies them in a write transaction, with
 * the rule's states and its consumer's checkpoint.  Reads merge the two:
 * the stored timers a change has not overridden, and the changes.  So
 * several turns' worth of timers cost one write each, and a turn that is
 * not written leaves nothing of itself in the log.
 *
 * Stored records, under the consumer's name:
 *
 *   'T' name "\0" due key-length key timer -> [data, every]   (by due time)
 *   'N' name "\0" key-length key timer     -> due             (to cancel)
 *
 * Due times are big-endian with the sign bit flipped, so timers sort by
 * due time, then key, then name: the order they fire in, live and in a
 * replay, whether they were written yet or not.
 */
#ifndef TIDE_RTIMER_H
#define TIDE_RTIMER_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "log.h"

typedef struct tidei_rtimers tidei_rtimers;

/** A timer that fell due. */
typedef struct tidei_rule_timer {
	int64_t due, every;
	tidei_buf key, name, data; /* data: encoded value (val.h) */
} tidei_rule_timer;

int tidei_rtimers_new(tidei_rtimers **out, const char *consumer, size_t nlen);
void tidei_rtimers_free(tidei_rtimers *t);
/** Drop the changes not written (the log holds the truth again). */
void tidei_rtimers_forget(tidei_rtimers *t);

/** Set timer @p name of @p key at @p due (replacing it), recurring every
 *  @p every ns if > 0, with @p data (an encoded value; NULL: nil).
 *  TIDE_OK or TIDE_ENOMEM. */
int tidei_rtimers_set(tidei_rtimers *t, const char *key, size_t kn, const char *name, size_t nn,
		      int64_t due, int64_t every, const void *data, size_t dn);
/** Cancel timer @p name of @p key (nothing if there is none). */
int tidei_rtimers_cancel(tidei_rtimers *t, const char *key, size_t kn, const char *name, size_t nn);

/** The first timer in firing order, read through @p txn: 1 with its due
 *  time in *due, 0 if there is none, or a negative TIDE_E* code (message
 *  in @p err). */
int tidei_rtimers_first(tidei_rtimers *t, tidei_log *log, MDB_txn *txn, int64_t *due, char *err);
/** Take the first timer if it is due at @p now (a recurring one is set
 *  again, at its first period after @p now): 1 with it in @p out, 0 with
 *  the first due time in *next (INT64_MAX: none), or a negative code. */
int tidei_rtimers_take(tidei_rtimers *t, tidei_log *log, MDB_txn *txn, int64_t now,
		       tidei_rule_timer *out, int64_t *next, char *err);

/** Changes waiting to be written. */
size_t tidei_rtimers_changes(const tidei_rtimers *t);
/** Write the changes in the open write transaction of @p log. */
int tidei_rtimers_write(tidei_rtimers *t, tidei_log *log, char *err);

#endif
