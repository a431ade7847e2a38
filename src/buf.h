/*
 * buf.h - a growable byte buffer with a sticky failure flag, and the
 * doubling growth of plain arrays.
 *
 * Writers append without checking each call; an allocation failure sets
 * `failed`, turns later writes into no-ops, and is checked once when the
 * buffer is used.  This keeps encoders free of error branches.
 */
#ifndef TIDE_BUF_H
#define TIDE_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct tidei_buf {
	uint8_t *p;
	size_t len;
	size_t cap;
	int failed;   /* an allocation failed; content is incomplete */
	size_t limit; /* 0, or the most it may hold: growing past it fails it
		       * (set it while the capacity is within it, e.g. empty) */
	int over;     /* it failed because of the limit, not for lack of memory */
} tidei_buf;

/** Make room for @p extra more bytes.  Returns 0, or -1 (and sets failed). */
int tidei_buf_grow(tidei_buf *b, size_t extra);
void tidei_buf_free(tidei_buf *b);

/** Room for one more element in the array at *@p array (a pointer to the
 *  array's pointer) that holds @p n of *@p cap elements of @p size bytes:
 *  when full it doubles (the first time to @p first).  Returns 0, or -1
 *  with the array as it was. */
int tidei_array_grow(void *array, size_t *cap, size_t n, size_t size, size_t first);

/** The capacity to shrink an array of @p cap elements holding @p n to:
 *  halved while at most a quarter full and above @p least, which leaves
 *  twice what it holds, so that a few more do not make it grow at once.
 *  @p cap itself when it should stay. */
static inline uint32_t
tidei_array_shrunk(uint32_t cap, uint32_t n, uint32_t least)
{
	while (cap > least && n < cap / 4)
		cap /= 2;
	return cap;
}
/** Bytes per huge page, the unit of tidei_huge_alloc(). */
#define TIDEI_HUGE (2u << 20)

/** @p n zeroed bytes (a multiple of TIDEI_HUGE) on a TIDEI_HUGE boundary,
 *  with the kernel asked to back them with transparent huge pages: for
 *  large structures read at random, where 4 KiB pages would miss the TLB
 *  on nearly every access.  NULL when out of memory. */
void *tidei_huge_alloc(size_t n);
void tidei_huge_free(void *p, size_t n);

/** Append formatted text (no NUL is counted in len). */
void tidei_buf_printf(tidei_buf *b, const char *fmt, ...)
#if defined(__GNUC__)
	__attribute__((format(printf, 2, 3)))
#endif
	;

static inline void
tidei_buf_reset(tidei_buf *b)
{
	b->len = 0;
	b->failed = 0;
	b->over = 0;
}

static inline int
tidei_buf_reserve(tidei_buf *b, size_t extra)
{
	if (b->cap - b->len >= extra && !b->failed)
		return 0;
	return tidei_buf_grow(b, extra);
}

static inline void
tidei_buf_put(tidei_buf *b, const void *src, size_t n)
{
	if (tidei_buf_reserve(b, n) == 0) {
		if (n > 0)
			memcpy(b->p + b->len, src, n);
		b->len += n;
	}
}

static inline void
tidei_buf_putc(tidei_buf *b, uint8_t c)
{
	if (tidei_buf_reserve(b, 1) == 0)
		b->p[b->len++] = c;
}

static inline void
tidei_buf_puts(tidei_buf *b, const char *s)
{
	tidei_buf_put(b, s, strlen(s));
}

/* Little-endian fixed-width fields, loaded and stored through memcpy: LMDB
 * values are not aligned.  On little-endian hosts (all Tide runs on) a
 * field is one move; the byte loop keeps big-endian hosts correct. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define TIDEI_LE 1
#else
#define TIDEI_LE 0
#endif

static inline void
tidei_st64(uint8_t *p, uint64_t v)
{
	if (TIDEI_LE) {
		memcpy(p, &v, 8);
		return;
	}
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint64_t
tidei_ld64(const uint8_t *p)
{
	uint64_t v = 0;

	if (TIDEI_LE) {
		memcpy(&v, p, 8);
		return v;
	}
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static inline void
tidei_st32(uint8_t *p, uint32_t v)
{
	if (TIDEI_LE) {
		memcpy(p, &v, 4);
		return;
	}
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint32_t
tidei_ld32(const uint8_t *p)
{
	uint32_t v;

	if (TIDEI_LE) {
		memcpy(&v, p, 4);
		return v;
	}
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/** FNV-1a of @p n bytes, continuing from @p h (TIDEI_FNV_SEED to start). */
#define TIDEI_FNV_SEED 0xcbf29ce484222325ull
uint64_t tidei_fnv(const void *data, size_t n, uint64_t h);

/** FNV-1a of a file's contents (0 if it cannot be read). */
uint64_t tidei_file_hash(const char *path);

#endif
