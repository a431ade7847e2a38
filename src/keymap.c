/*
 * keymap.c - byte-string keys to dense slots (open addressing, linear
 * probing, at most half full).
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "keymap.h"

void
tidei_keymap_init(tidei_keymap *m)
{
	memset(m, 0, sizeof *m);
}

/* Bucket arrays of a huge page or more get huge pages (a lookup at
 * 100,000 keys is a random access into 8 MiB). */
static size_t
table_bytes(size_t cap)
{
	return cap * sizeof(tidei_keymap_bucket);
}

static tidei_keymap_bucket *
table_alloc(size_t cap)
{
	size_t n = table_bytes(cap);

	if (n >= TIDEI_HUGE && n % TIDEI_HUGE == 0)
		return tidei_huge_alloc(n);
	return calloc(cap, sizeof(tidei_keymap_bucket));
}

static void
table_free(tidei_keymap_bucket *t, size_t cap)
{
	size_t n = table_bytes(cap);

	if (n >= TIDEI_HUGE && n % TIDEI_HUGE == 0)
		tidei_huge_free(t, n);
	else
		free(t);
}

void
tidei_keymap_free(tidei_keymap *m)
{
	if (m->b != NULL)
		table_free(m->b, m->mask + 1);
	free(m->off);
	tidei_buf_free(&m->keys);
	tidei_keymap_init(m);
}

static uint32_t hash(const char *k, size_t n);

void
tidei_keymap_clear(tidei_keymap *m)
{
	if (m->n == 0)
		return;
	if (m->n * 16 > m->mask + 1) {
		memset(m->b, 0, (m->mask + 1) * sizeof *m->b);
	} else {
		/* few keys in a large table (a live projection after a
		 * rebuild): empty just their buckets.  Each is at or after its
		 * home bucket; emptied ones before it are passed over. */
		for (size_t s = 0; s < m->n; s++) {
			size_t n;
			const char *k = tidei_keymap_key(m, s, &n);
			size_t i = hash(k, n) & m->mask;
			while (m->b[i].slot != s + 1)
				i = (i + 1) & m->mask;
			m->b[i].slot = 0;
		}
	}
	m->n = 0;
	tidei_buf_reset(&m->keys);
}

/* FNV-1a over 32-bit words, then a final mix: keys are short, and the
 * low bits choose the bucket. */
static uint32_t
hash(const char *k, size_t n)
{
	uint32_t h = 2166136261u;
	size_t i = 0;

	for (; i + 4 <= n; i += 4) {
		uint32_t w;
		memcpy(&w, k + i, 4);
		h = (h ^ w) * 16777619u;
	}
	for (; i < n; i++)
		h = (h ^ (uint8_t)k[i]) * 16777619u;
	h ^= h >> 15;
	h *= 0x2c1b3c6du;
	h ^= h >> 12;
	return h;
}

static int
same(const tidei_keymap *m, const tidei_keymap_bucket *b, uint32_t h, const char *k, size_t n)
{
	size_t len;

	if (b->hash != h || b->len != n)
		return 0;
	if (n <= TIDEI_KEYMAP_INLINE)
		return memcmp(b->head, k, n) == 0;
	return memcmp(tidei_keymap_key(m, b->slot - 1, &len), k, n) == 0;
}

static void
place(tidei_keymap_bucket *t, size_t mask, const tidei_keymap_bucket *b)
{
	size_t i = b->hash & mask;

	while (t[i].slot != 0)
		i = (i + 1) & mask;
	t[i] = *b;
}

static int
grow(tidei_keymap *m)
{
	size_t cap = m->mask ? 2 * (m->mask + 1) : 1024;
	tidei_keymap_bucket *t = table_alloc(cap);

	if (t == NULL)
		return -1;
	if (m->n > 0)
		for (size_t i = 0; i <= m->mask; i++)
			if (m->b[i].slot != 0)
				place(t, cap - 1, &m->b[i]);
	if (m->b != NULL)
		table_free(m->b, m->mask + 1);
	m->b = t;
	m->mask = cap - 1;
	return 0;
}

uint32_t
tidei_keymap_hash(const char *key, size_t n)
{
	return hash(key, n);
}

void
tidei_keymap_prefetch(const tidei_keymap *m, uint32_t h)
{
	if (m->mask != 0)
		__builtin_prefetch(&m->b[h & m->mask]);
}

long
tidei_keymap_get(const tidei_keymap *m, const char *key, size_t n)
{
	return tidei_keymap_get_hashed(m, hash(key, n), key, n);
}

long
tidei_keymap_get_hashed(const tidei_keymap *m, uint32_t h, const char *key, size_t n)
{
	if (m->mask != 0)
		for (size_t i = h & m->mask; m->b[i].slot != 0; i = (i + 1) & m->mask)
			if (same(m, &m->b[i], h, key, n))
				return (long)m->b[i].slot - 1;
	return -1;
}

long
tidei_keymap_put(tidei_keymap *m, const char *key, size_t n, int *fresh)
{
	uint32_t h = hash(key, n);
	tidei_keymap_bucket *b;
	size_t i;

	*fresh = 0;
	if (m->mask != 0)
		for (i = h & m->mask; m->b[i].slot != 0; i = (i + 1) & m->mask)
			if (same(m, &m->b[i], h, key, n))
				return (long)m->b[i].slot - 1;
	if (n > UINT32_MAX || m->keys.len + n > UINT32_MAX)
		return -1;
	if ((m->n + 1) * 2 > m->mask + 1 && grow(m) != 0)
		return -1;
	if (tidei_array_grow(&m->off, &m->offcap, m->n + 1, sizeof *m->off, 1024) != 0)
		return -1;
	if (m->n == 0)
		m->off[0] = 0;
	tidei_buf_put(&m->keys, key, n);
	if (m->keys.failed)
		return -1;
	m->off[m->n + 1] = (uint32_t)m->keys.len;
	for (i = h & m->mask; m->b[i].slot != 0; i = (i + 1) & m->mask)
		;
	b = &m->b[i];
	b->hash = h;
	b->len = (uint32_t)n;
	b->slot = (uint32_t)(m->n + 1);
	memcpy(b->head, key, n < TIDEI_KEYMAP_INLINE ? n : TIDEI_KEYMAP_INLINE);
	*fresh = 1;
	return (long)m->n++;
}
