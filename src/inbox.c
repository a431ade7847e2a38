/*
 * inbox.c - the queue between threads that publish and the engine's loop.
 *
 * A mutex around a singly linked list with a tail pointer: a push copies
 * the text outside the lock and links it in under it; the taker swaps the
 * whole list out under it in constant time, so neither side holds the
 * lock for more than a few stores however much is queued.  One list for
 * every producer keeps each producer's texts in the order it pushed them
 * (the order of the whole queue is the order the lock was taken).
 *
 * The inbox knows nothing of the engine: it neither parses the texts nor
 * calls the callbacks it carries, and it never wakes anyone itself; the
 * pusher learns from was_empty whether the taker must be woken.
 */
#include "config.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "inbox.h"

struct tidei_inbox {
	pthread_mutex_t mu;
	tidei_inbox_item *head, *tail; /* oldest and newest, or both NULL */
	size_t bytes;                  /* text queued and not yet taken */
	size_t max;                    /* bound on bytes */
	int closed;                    /* pushes are refused */
};

int
tidei_inbox_new(tidei_inbox **out, size_t max_bytes)
{
	tidei_inbox *q;

	*out = NULL;
	if ((q = calloc(1, sizeof *q)) == NULL)
		return TIDE_ENOMEM;
	if (pthread_mutex_init(&q->mu, NULL) != 0) {
		free(q);
		return TIDE_ENOMEM;
	}
	q->max = max_bytes;
	*out = q;
	return TIDE_OK;
}

static void
free_items(tidei_inbox_item *it)
{
	while (it != NULL) {
		tidei_inbox_item *next = it->next;
		free(it);
		it = next;
	}
}

void
tidei_inbox_destroy(tidei_inbox *q)
{
	if (q == NULL)
		return;
	free_items(q->head);
	pthread_mutex_destroy(&q->mu);
	free(q);
}

int
tidei_inbox_push(tidei_inbox *q, const char *text, size_t len, tide_publish_fn *fn, void *ud,
		 int *was_empty)
{
	tidei_inbox_item *it;
	int rc = TIDE_OK;

	*was_empty = 0;
	if (len > SIZE_MAX - sizeof *it - 1 || (it = malloc(sizeof *it + len + 1)) == NULL)
		return TIDE_ENOMEM;
	it->next = NULL;
	it->fn = fn;
	it->ud = ud;
	it->len = len;
	memcpy(it->text, text, len);
	it->text[len] = '\0';

	pthread_mutex_lock(&q->mu);
	if (q->closed) {
		rc = TIDE_ESTATE;
	} else if (q->head != NULL && (q->bytes >= q->max || len > q->max - q->bytes)) {
		/* over the bound; an empty queue takes any one text, or a
		 * text larger than the bound could never be queued */
		rc = TIDE_EFULL;
	} else {
		*was_empty = q->head == NULL;
		if (q->tail != NULL)
			q->tail->next = it;
		else
			q->head = it;
		q->tail = it;
		q->bytes += len;
	}
	pthread_mutex_unlock(&q->mu);
	if (rc != TIDE_OK)
		free(it);
	return rc;
}

tidei_inbox_item *
tidei_inbox_take(tidei_inbox *q)
{
	tidei_inbox_item *all;

	pthread_mutex_lock(&q->mu);
	all = q->head;
	q->head = q->tail = NULL;
	q->bytes = 0;
	pthread_mutex_unlock(&q->mu);
	return all;
}

tidei_inbox_item *
tidei_inbox_close(tidei_inbox *q)
{
	tidei_inbox_item *all;

	pthread_mutex_lock(&q->mu);
	q->closed = 1;
	all = q->head;
	q->head = q->tail = NULL;
	q->bytes = 0;
	pthread_mutex_unlock(&q->mu);
	return all;
}
