/*
 * batch.c - the turn's pending input.
 *
 * Records and error texts live in one arena that is reused from turn to
 * turn, so steady-state ingest does not allocate per event.  Items refer
 * to the arena by offset because it may move when it grows.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"

void
tidei_batch_init(tidei_batch *b, size_t max_event)
{
	memset(b, 0, sizeof *b);
	tidei_eparser_init(&b->parser, max_event);
}

void
tidei_batch_free(tidei_batch *b)
{
	tidei_buf_free(&b->arena);
	free(b->items);
	free(b->w);
	tidei_eparser_free(&b->parser);
	memset(b, 0, sizeof *b);
}

static int
grow_items(tidei_batch *b)
{
	return tidei_array_grow(&b->items, &b->cap, b->cap, sizeof *b->items, 1024);
}

static void
sink(void *ud, const uint8_t *rec, size_t len, const char *err)
{
	tidei_batch *b = ud;
	tidei_item *it;

	/* past the bound the message is dropped whole: only count */
	if (err != NULL && ++b->refused > TIDEI_MAX_REFUSED)
		return;
	if (b->n == b->cap && grow_items(b) != 0) {
		b->arena.failed = 1;
		return;
	}
	it = &b->items[b->n++];
	it->off = b->arena.len;
	it->duplicate = 0;
	it->seq = 0;
	it->version = 0;
	/* The expectation is not part of the record: read it from the event
	 * the parser has just finished (the sink runs inside event_end). */
	it->expect = err == NULL ? b->parser.b.expect : -1;
	if (err == NULL) {
		it->len = (uint32_t)len;
		it->code = TIDE_OK;
		tidei_buf_put(&b->arena, rec, len);
		b->valid++;
	} else {
		it->len = 0;
		it->code = TIDE_EEVENT;
		tidei_buf_put(&b->arena, err, strlen(err) + 1);
	}
}

long
tidei_batch_add(tidei_batch *b, const char *msg, size_t len)
{
	size_t n0 = b->n, a0 = b->arena.len, v0 = b->valid;
	long got;

	b->refused = 0;
	got = tidei_eparser_run(&b->parser, msg, len, sink, b);
	if (got < 0 || b->arena.failed || b->refused > TIDEI_MAX_REFUSED) {
		b->n = n0;
		b->arena.len = a0;
		b->arena.failed = 0;
		b->valid = v0;
		return got >= 0 && b->refused > TIDEI_MAX_REFUSED ? TIDEI_BATCH_REFUSED : -1;
	}
	return (long)(b->n - n0);
}

void
tidei_batch_truncate(tidei_batch *b, size_t first)
{
	if (first >= b->n)
		return;
	/* a message's items are added in order, each with its text after
	 * the previous one's */
	b->arena.len = b->items[first].off;
	for (size_t k = first; k < b->n; k++)
		if (b->items[k].len > 0)
			b->valid--;
	b->n = first;
}

int
tidei_batch_wait(tidei_batch *b, size_t first, size_t count, tidei_waiter_fn *fn, void *ud,
		 void *ctx)
{
	if (tidei_array_grow(&b->w, &b->wcap, b->nw, sizeof *b->w, 64) != 0)
		return -1;
	b->w[b->nw++] = (tidei_waiter){ fn, ud, ctx, first, count };
	return 0;
}

void
tidei_batch_fail(tidei_batch *b, tidei_item *it, int code, const char *msg)
{
	if (it->len == 0)
		return;
	it->code = code;
	it->len = 0;
	it->off = b->arena.len;
	tidei_buf_put(&b->arena, msg, strlen(msg) + 1);
	b->valid--;
}

void
tidei_batch_fail_all(tidei_batch *b, int code, const char *msg)
{
	for (size_t k = 0; k < b->n; k++)
		tidei_batch_fail(b, &b->items[k], code, msg);
	b->valid = 0;
}

int
tidei_batch_finish(tidei_batch *b)
{
	size_t n0 = b->n, nw0 = b->nw, a0 = b->arena.len, n, nw;

	for (size_t k = 0; k < nw0; k++)
		b->w[k].fn(b->w[k].ud, b->w[k].ctx, b, b->w[k].first, b->w[k].count);
	/* What a waiter published meanwhile (a completion callback chaining a
	 * publish) stays for the next turn: items, their texts and waiters
	 * move to the front. */
	n = b->n - n0;
	nw = b->nw - nw0;
	if (n > 0)
		memmove(b->items, b->items + n0, n * sizeof *b->items);
	if (b->arena.len > a0)
		memmove(b->arena.p, b->arena.p + a0, b->arena.len - a0);
	b->arena.len -= a0;
	b->valid = 0;
	for (size_t k = 0; k < n; k++) {
		b->items[k].off -= a0;
		b->valid += b->items[k].len > 0;
	}
	if (nw > 0)
		memmove(b->w, b->w + nw0, nw * sizeof *b->w);
	for (size_t k = 0; k < nw; k++)
		b->w[k].first -= n0;
	b->n = n;
	b->nw = nw;
	return n > 0 || nw > 0;
}

void
tidei_batch_reply(const tidei_batch *b, size_t first, size_t count, tidei_buf *out)
{
	char tmp[64];

	for (size_t k = first; k < first + count; k++) {
		const tidei_item *it = &b->items[k];
		const char *err = tidei_batch_error(b, it);
		if (k > first)
			tidei_buf_putc(out, '\n');
		if (err != NULL) {
			tidei_buf_puts(out, "{\"ok\":false,\"error\":");
			tidei_json_str(out, err, strlen(err));
			if (it->code == TIDE_ECONFLICT)
				tidei_buf_printf(out, ",\"conflict\":true,\"version\":%llu",
						 (unsigned long long)it->version);
			tidei_buf_putc(out, '}');
		} else if (it->duplicate) {
			tidei_buf_printf(out, "{\"ok\":true,\"duplicate\":true,\"seq\":%llu}",
					 (unsigned long long)it->seq);
		} else {
			int n = snprintf(tmp, sizeof tmp, "{\"ok\":true,\"seq\":%llu}",
					 (unsigned long long)it->seq);
			tidei_buf_put(out, tmp, (size_t)n);
		}
	}
}
