/*
 * batch.h - the input of one loop turn: the events parsed from every
 * message received during the turn, waiting for the group commit, and the
 * parties waiting for their results.
 */
#ifndef TIDE_BATCH_H
#define TIDE_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "event.h"

/** One event of the turn: a record to append, or the reason it was
 *  rejected; after the commit, its result. */
typedef struct tidei_item {
	size_t off;   /* record (or NUL-terminated error text) in the arena */
	uint32_t len; /* record length; 0 for a rejected event */
	int code;     /* TIDE_OK, or why it was not stored */
	int duplicate;
	uint64_t seq;
	uint64_t version; /* stream version; the current one after a conflict */
	int64_t expect;   /* expected stream version, -1 if none */
} tidei_item;

typedef struct tidei_batch tidei_batch;

/** Told the results of items [first, first + count) after the commit. */
typedef void tidei_waiter_fn(void *ud, void *ctx, const tidei_batch *b, size_t first, size_t count);

typedef struct tidei_waiter {
	tidei_waiter_fn *fn;
	void *ud;
	void *ctx; /* the waiter's own data (a reply header, a callback) */
	size_t first, count;
} tidei_waiter;

/* A message with more refused events than this is refused whole: each
 * refusal is answered with a line of its own, tens of bytes for an input
 * as short as "{}", so without a bound a message of 16 MiB took a reply,
 * and memory, of gigabytes. */
#define TIDEI_MAX_REFUSED 10000

/* tidei_batch_add(): the message was refused whole (TIDEI_MAX_REFUSED). */
#define TIDEI_BATCH_REFUSED (-2)

struct tidei_batch {
	tidei_buf arena;
	tidei_item *items;
	size_t n, cap;
	size_t valid;   /* items with a record */
	size_t refused; /* events of the message being added that were refused */
	tidei_waiter *w;
	size_t nw, wcap;
	tidei_eparser parser;
};

void tidei_batch_init(tidei_batch *b, size_t max_event);
void tidei_batch_free(tidei_batch *b);
/** Parse one message into items.  Returns the number added, -1 if
 *  memory ran out, or TIDEI_BATCH_REFUSED if more than TIDEI_MAX_REFUSED
 *  of its events were refused (b->refused says how many); in both cases
 *  nothing of the message is kept. */
long tidei_batch_add(tidei_batch *b, const char *msg, size_t len);
/** Forget the items from @p first on (those of the last message added). */
void tidei_batch_truncate(tidei_batch *b, size_t first);
/** The reply to a message refused whole. */
#define TIDEI_REFUSED_REPLY \
	"{\"ok\":false,\"error\":\"message refused: more than 10000 of its events are invalid; " \
	"nothing of it was stored\"}"
/** Register a waiter for items [first, first + count). */
int tidei_batch_wait(tidei_batch *b, size_t first, size_t count, tidei_waiter_fn *fn, void *ud,
		     void *ctx);
/** Give every waiter its results, then empty the batch of what they were
 *  told.  What the waiters published meanwhile stays for the next turn:
 *  returns 1 when there is such. */
int tidei_batch_finish(tidei_batch *b);

static inline uint8_t *
tidei_batch_rec(const tidei_batch *b, const tidei_item *it)
{
	return b->arena.p + it->off;
}

/** Error text of a rejected item, or of an item whose commit failed. */
static inline const char *
tidei_batch_error(const tidei_batch *b, const tidei_item *it)
{
	return it->len == 0 ? (const char *)b->arena.p + it->off : NULL;
}

/** Mark item @p it as not stored, with @p code and @p msg. */
void tidei_batch_fail(tidei_batch *b, tidei_item *it, int code, const char *msg);

/** Mark every stored-to-be item as failed with @p code and @p msg. */
void tidei_batch_fail_all(tidei_batch *b, int code, const char *msg);

/** Append the REP reply for items [first, first + count) to @p out: one
 *  JSON object per line. */
void tidei_batch_reply(const tidei_batch *b, size_t first, size_t count, tidei_buf *out);

#endif
