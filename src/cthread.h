/*
 * cthread.h - the consumers on a thread of their own while the engine is
 * busy: the engine's thread appends what producers send and commits; the
 * consumers' thread handles what is committed, in a read transaction of
 * its own, at the same time.  LMDB has one writer, so what the consumers
 * write goes through the engine: their emits are handed off and appended
 * in the engine's next transaction, and for the rest (checkpoints, rule
 * states and timers, retries, tide.once claims, ticks) the engine lends
 * its open transaction to the consumers' thread and waits until it is
 * given back.  The order of calls and the ids of what is emitted are the
 * same as on the engine's thread (consumer.c).
 */
#ifndef TIDE_CTHREAD_H
#define TIDE_CTHREAD_H

#include <stdint.h>

#include "consumer.h"
#include "log.h"

typedef struct tidei_cthread tidei_cthread;

/** Hand @p cs to a new thread from the committed end of @p log.  From now
 *  until tidei_cthread_end(), only that thread touches @p cs, but while
 *  the engine lends it a transaction (tidei_cthread_serve) and while it is
 *  paused.  @p wake is called, from that thread, when it wants the engine
 *  to take a turn (it asks for the transaction, handed off emits, or it
 *  is over).  Returns TIDE_OK, or a code with the reason in @p err. */
int tidei_cthread_start(tidei_cthread **out, tidei_consumers *cs, tidei_log *log,
			void (*wake)(void *ud), void *ud, char *err);

/** In the engine's open write transaction: append the emits handed off
 *  (kept until the transaction commits), then, if the thread asks for it,
 *  lend the transaction and wait until it is given back (and append what
 *  it emitted meanwhile).  Returns TIDE_OK, or the failure of an append or
 *  of the consumers' work (the transaction is to be aborted). */
int tidei_cthread_serve(tidei_cthread *t, char *err);

/** After the engine's transaction: committed (1) or aborted (0).  A lent
 *  transaction's work becomes durable, or the consumers go back to their
 *  last write; the thread goes on. */
void tidei_cthread_done(tidei_cthread *t, int committed);

/** 1 if the thread wants a turn: it asks for the transaction, emits wait,
 *  or it is over. */
int tidei_cthread_wants(tidei_cthread *t);

/** 1 if the thread has ended by itself: caught up with nothing new for a
 *  while, its consumers' state full, or a failure (in @p err). */
int tidei_cthread_over(tidei_cthread *t, char *err);

/** Stop the thread (between two events, with no transaction of its own)
 *  and keep it stopped / let it go on: the log's map may move meanwhile,
 *  and the engine's thread may look at the consumers. */
void tidei_cthread_pause(tidei_cthread *t);
void tidei_cthread_unpause(tidei_cthread *t);

/** End the thread; the consumers are the engine's again.  Emits it
 *  handed off that are not in the log yet stay: 1 if some do, to be
 *  appended by tidei_cthread_serve() in a transaction before
 *  tidei_cthread_free(). */
int tidei_cthread_end(tidei_cthread *t);
void tidei_cthread_free(tidei_cthread *t);

#endif
