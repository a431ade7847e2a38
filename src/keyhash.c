/*
 * keyhash.c - BLAKE2b-256 of long keys (see keyhash.h), through libsodium.
 * Holds no state of its own.
 */
#include "config.h"

#include <sodium.h>

#include "keyhash.h"

void
tidei_keyhash(uint8_t out[TIDEI_KEYHASH_LEN], const void *a, size_t an, const void *b, size_t bn)
{
	crypto_generichash_state st;
	const uint8_t zero = 0;

	/* sodium_init() is idempotent and thread-safe (it takes libsodium's
	 * own lock), and here it only picks the fastest BLAKE2b code for this
	 * CPU.  It is called per hash, which only long keys pay for, so that
	 * no caller has to remember to. */
	if (sodium_init() < 0) {
		/* Its lock failed: the portable BLAKE2b, in place from the
		 * start, is used; every implementation gives the same hash. */
	}
	crypto_generichash_init(&st, NULL, 0, TIDEI_KEYHASH_LEN);
	crypto_generichash_update(&st, a, an);
	if (b != NULL) {
		crypto_generichash_update(&st, &zero, 1);
		crypto_generichash_update(&st, b, bn);
	}
	crypto_generichash_final(&st, out, TIDEI_KEYHASH_LEN);
}
