/*
 * buf.c - growth and formatting for tidei_buf.  Buffers double, so a
 * buffer reused across loop turns stops allocating once it has seen the
 * largest turn.
 */
#include "config.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

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
	if (b->limit != 0 && need > b->limit)
		goto fail;
	cap = b->cap ? b->cap : 256;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	if (b->limit != 0 && cap > b->limit)
		cap = b->limit;
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

void *
tidei_huge_alloc(size_t n)
{
	size_t len = n + TIDEI_HUGE;
	uint8_t *p, *a;

	if (n == 0 || n % TIDEI_HUGE != 0 || len < n)
		return NULL;
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	/* keep the aligned part, give back the ends */
	a = (uint8_t *)(((uintptr_t)p + TIDEI_HUGE - 1) & ~(uintptr_t)(TIDEI_HUGE - 1));
	if (a > p)
		munmap(p, (size_t)(a - p));
	if (a + n < p + len)
		munmap(a + n, (size_t)(p + len - (a + n)));
#ifdef MADV_HUGEPAGE
	madvise(a, n, MADV_HUGEPAGE); /* advice only: 4 KiB pages work too */
#endif
	return a;
}

void
tidei_huge_free(void *p, size_t n)
{
	if (p != NULL)
		munmap(p, n);
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

uint64_t
tidei_fnv(const void *data, size_t n, uint64_t h)
{
	const uint8_t *p = data;

	for (size_t k = 0; k < n; k++) {
		h ^= p[k];
		h *= 0x100000001b3ull;
	}
	return h;
}

uint64_t
tidei_file_hash(const char *path)
{
	FILE *f = path ? fopen(path, "rb") : NULL;
	uint64_t h = TIDEI_FNV_SEED;
	char buf[8192];
	size_t n;

	if (f == NULL)
		return 0;
	while ((n = fread(buf, 1, sizeof buf, f)) > 0)
		h = tidei_fnv(buf, n, h);
	fclose(f);
	return h;
}
