/*
 * inbox.h - texts published from other threads (tide_publish_mt), queued
 * for the engine's loop thread: many producers, one taker.
 *
 * Any thread pushes; the loop thread takes everything queued at once, in
 * the order pushed, and at stop closes the inbox, which refuses further
 * pushes and hands back what it still held.  The bytes queued and not yet
 * taken are bounded, so producers faster than the loop are told to wait
 * rather than growing the process without limit.
 */
#ifndef TIDE_INBOX_H
#define TIDE_INBOX_H

#include <stddef.h>

#include "tide.h"

/** One queued text and whom to tell its results.  An item is one
 *  allocation: release it with free(). */
typedef struct tidei_inbox_item {
	struct tidei_inbox_item *next; /* the next one pushed, or NULL */
	tide_publish_fn *fn;           /* may be NULL */
	void *ud;
	size_t len;
	char text[]; /* len bytes, then a NUL */
} tidei_inbox_item;

typedef struct tidei_inbox tidei_inbox;

/** An empty, open inbox holding at most @p max_bytes of text not yet
 *  taken (one text of any size is accepted while it is empty).
 *  Returns TIDE_OK or TIDE_ENOMEM. */
int tidei_inbox_new(tidei_inbox **out, size_t max_bytes);
/** Free the inbox and any item it still holds, without a word to their
 *  producers: close it and answer them first.  Accepts NULL. */
void tidei_inbox_destroy(tidei_inbox *q);

/** Copy @p len bytes of @p text into a new item at the end of the queue.
 *  Any thread.  *@p was_empty is set to 1 when the queue held nothing
 *  before (the taker then needs waking; it has been or will be woken for
 *  anything already queued), else 0.
 *  Returns TIDE_OK, TIDE_ENOMEM, TIDE_EFULL (the bound would be passed:
 *  nothing was queued) or TIDE_ESTATE (closed). */
int tidei_inbox_push(tidei_inbox *q, const char *text, size_t len, tide_publish_fn *fn, void *ud,
		     int *was_empty);

/** Everything queued, oldest first (NULL if nothing), which the caller now
 *  owns; the queue is left empty and its bytes no longer count. */
tidei_inbox_item *tidei_inbox_take(tidei_inbox *q);

/** Refuse every later push (TIDE_ESTATE) and take what is queued, as
 *  tidei_inbox_take().  Closing a closed inbox returns NULL. */
tidei_inbox_item *tidei_inbox_close(tidei_inbox *q);

#endif
