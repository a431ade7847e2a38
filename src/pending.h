/*
 * pending.h - a consumer's pending events in memory: those it retries and
 * those waiting behind an earlier event of their subject (the durable
 * copy is in the log's pending database, logcons.c).
 */
#ifndef TIDE_PENDING_H
#define TIDE_PENDING_H

#include <stddef.h>
#include <stdint.h>

#include "consumer.h"

/** A hash of @p ev's subject, never 0; 0 when it has none (it then holds
 *  nothing back). */
uint64_t tidei_subject_hash(const struct tide_event *ev);

/** Add an entry for @p seq (seqs only grow, except for dead letters
 *  retried by hand, which are inserted in order).  TIDE_OK or
 *  TIDE_ENOMEM. */
int tidei_pend_add(tidei_consumer *c, uint64_t seq, uint64_t subject, const tidei_pending_rec *r);
/** Entry @p k is resolved: it no longer holds its subject back (it is
 *  dropped when the set is compacted). */
void tidei_pend_done(tidei_consumer *c, size_t k);
/** Forget every entry. */
void tidei_pend_clear(tidei_consumer *c);
/** Whether a new event of @p subject waits behind an unresolved one (only
 *  for an ordered consumer). */
int tidei_pend_blocked(tidei_consumer *c, uint64_t subject);
/** The entry of @p seq, or NULL; *@p at is where it is or would go. */
tidei_pending *tidei_pend_find(tidei_consumer *c, uint64_t seq, size_t *at);

/** The wait before retry @p attempts of @p c: its backoff, doubling, at
 *  most its maximum. */
int64_t tidei_pend_backoff(const tidei_consumer *c, uint32_t attempts);
/** Write entry @p p (or delete it, when done) in @p log's open write
 *  transaction. */
int tidei_pend_persist(tidei_consumer *c, tidei_log *log, const tidei_pending *p, char *err);
/** The event at @p i is resolved: the next event waiting behind it (same
 *  subject) is let go, due now, and written so. */
int tidei_pend_release(tidei_consumer *c, tidei_log *log, size_t i, char *err);

#endif
