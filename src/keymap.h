/*
 * keymap.h - a set of byte-string keys numbered in the order they were
 * added (slots 0, 1, 2, ...), for the states a projection holds between
 * writes.
 *
 * A projection looks up the key of every event it applies.  Doing it here
 * on the key's bytes, rather than in a Lua table keyed by strings, spares
 * interning each key in Lua's string table: with 100,000 keys both tables
 * are far larger than the caches, and each probe is a miss.  Short keys
 * are compared inside the bucket, so a lookup touches one cache line.
 */
#ifndef TIDE_KEYMAP_H
#define TIDE_KEYMAP_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define TIDEI_KEYMAP_INLINE 20

typedef struct tidei_keymap_bucket {
	uint32_t hash;
	uint32_t slot; /* slot + 1; 0 for an empty bucket */
	uint32_t len;
	char head[TIDEI_KEYMAP_INLINE]; /* the key's first bytes */
} tidei_keymap_bucket;

typedef struct tidei_keymap {
	tidei_keymap_bucket *b;
	size_t mask;   /* buckets - 1 (a power of two less one), 0 before the first key */
	size_t n;      /* keys, and the next slot */
	uint32_t *off; /* slot -> offset of its key in keys; off[n] is the end */
	size_t offcap;
	tidei_buf keys; /* every key's bytes, in slot order */
} tidei_keymap;

void tidei_keymap_init(tidei_keymap *m);
void tidei_keymap_free(tidei_keymap *m);
/** Forget every key (memory is kept for the next round). */
void tidei_keymap_clear(tidei_keymap *m);

/** The slot of @p key (@p n bytes), or -1 if it is not in the set. */
long tidei_keymap_get(const tidei_keymap *m, const char *key, size_t n);
/** The hash tidei_keymap_get() looks @p key up by. */
uint32_t tidei_keymap_hash(const char *key, size_t n);
/** Start bringing the bucket of hash @p h into the CPU cache. */
void tidei_keymap_prefetch(const tidei_keymap *m, uint32_t h);
/** tidei_keymap_get() of a key whose hash is @p h. */
long tidei_keymap_get_hashed(const tidei_keymap *m, uint32_t h, const char *key, size_t n);
/** The slot of @p key (@p n bytes), added if new (then *@p fresh is 1).
 *  Returns -1 when out of memory. */
long tidei_keymap_put(tidei_keymap *m, const char *key, size_t n, int *fresh);

/** The key of @p slot (< m->n). */
static inline const char *
tidei_keymap_key(const tidei_keymap *m, size_t slot, size_t *n)
{
	*n = m->off[slot + 1] - m->off[slot];
	return (const char *)m->keys.p + m->off[slot];
}

#endif
