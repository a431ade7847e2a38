/*
 * keyhash.h - the hash that stands in for a key too long to be an LMDB key
 * (more than 511 bytes): event ids, stream subjects, tide.once claims and
 * projection keys.
 *
 * Two keys with the same hash are the same key to the log (a new event
 * would be taken for a duplicate, two streams or two states would merge),
 * and keys come from producers and scripts, so the hash must be
 * collision-resistant, not merely well spread: BLAKE2b with a 256-bit
 * output, from libsodium (crypto_generichash).
 */
#ifndef TIDE_KEYHASH_H
#define TIDE_KEYHASH_H

#include <stddef.h>
#include <stdint.h>

/** Bytes of a key hash. */
#define TIDEI_KEYHASH_LEN 32

/** The hash of @p a (@p an bytes) followed, when @p b is not NULL, by a
 *  zero byte and @p b (@p bn bytes): the same as the hash of those bytes
 *  laid end to end.  Safe from any thread. */
void tidei_keyhash(uint8_t out[TIDEI_KEYHASH_LEN], const void *a, size_t an, const void *b,
		   size_t bn);

#endif
