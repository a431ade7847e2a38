/*
 * buf.c - growth and formatting for tidei_buf.  Buffers double, so a
 * buffer reused across loop turns stops allocating once it has seen the
 * largest turn.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "buf.h"

int
tidei_buf_grow(tidei_buf *b, size_t extra)
{
	size_t need, cap;
	uint8_t *p;

	if (b->failed)
		return -1;
	if (extra > SIZE_MAX - b->len)
		goto fail;
	need = b->len + extra;
	if (need <= b->cap)
		return 0;
	cap = b->cap ? b->cap : 256;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	p = realloc(b->p, cap);
	if (p == NULL)
		goto fail;
	b->p = p;
	b->cap = cap;
	return 0;
fail:
	b->failed = 1;
	return -1;
}

void
tidei_buf_free(tidei_buf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
	b->failed = 0;
}

void
tidei_buf_printf(tidei_buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (tidei_buf_reserve(b, 64) != 0)
		return;
	va_start(ap, fmt);
	n = vsnprintf((char *)b->p + b->len, b->cap - b->len, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= b->cap - b->len) {
		if (tidei_buf_reserve(b, (size_t)n + 1) != 0)
			return;
		va_start(ap, fmt);
		vsnprintf((char *)b->p + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
	}
	b->len += (size_t)n;
}

int
tidei_array_grow(void *array, size_t *cap, size_t n, size_t size, size_t first)
{
	void **p = array, *v;
	size_t c;

	if (n < *cap)
		return 0;
	c = *cap ? *cap * 2 : first;
	if (c > SIZE_MAX / size || (v = realloc(*p, c * size)) == NULL)
		return -1;
	*p = v;
	*cap = c;
	return 0;
}
