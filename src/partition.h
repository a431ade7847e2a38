/*
 * partition.h - which partition of a cluster's stream an event belongs
 * to: FNV-1a (32 bits) of its partition key, modulo the number of
 * partitions.  It is the function of NATS's `partition(n, token)`
 * subject mapping, so producers that publish straight to NATS with the
 * key as a subject token land in the same partition as Tide would put
 * them.
 */
#ifndef TIDE_PARTITION_H
#define TIDE_PARTITION_H

#include <stddef.h>
#include <stdint.h>

/** FNV-1a, 32 bits, of @p n bytes at @p p. */
static inline uint32_t
tidei_fnv1a32(const void *p, size_t n)
{
	const uint8_t *b = p;
	uint32_t h = 2166136261u;

	for (size_t k = 0; k < n; k++) {
		h ^= b[k];
		h *= 16777619u;
	}
	return h;
}

/** The partition (0 to @p parts - 1) of key @p key (@p n bytes). */
static inline uint32_t
tidei_partition(const char *key, size_t n, uint32_t parts)
{
	return parts > 1 ? tidei_fnv1a32(key, n) % parts : 0;
}

#endif
