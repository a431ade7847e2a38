/*
 * sketch.h - the mergeable summaries behind the window aggregates of
 * agg.c, and the byte codec their stored form shares with it.
 *
 *  - tidei_dset counts distinct 64-bit tokens: exactly up to
 *    TIDEI_DSET_EXACT of them, then as a HyperLogLog of 512 five-bit
 *    registers (320 bytes, a standard error of about 4.6%).
 *  - tidei_qsk estimates quantiles with a relative accuracy of
 *    TIDEI_QSK_ALPHA (DDSketch's logarithmic buckets), in at most
 *    TIDEI_QSK_MAX_BINS buckets; past that the lowest buckets are merged,
 *    which keeps the high quantiles accurate.  It can also forget a value
 *    it was given, for windows whose entries expire.
 *
 * Both are deterministic: the same calls in the same order give the same
 * bits, estimates and encodings.  A NULL pointer is an empty summary;
 * the functions that grow one take a pointer to the pointer and leave it
 * as it was when they fail.
 */
#ifndef TIDE_SKETCH_H
#define TIDE_SKETCH_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* ------------------------------------------------------------------------
 * The byte codec: LEB128 varints, zigzag for signed numbers, doubles as
 * their 8 bytes little-endian.  Readers never pass @p end; a failure is
 * sticky in `bad` and later reads return 0.
 * ------------------------------------------------------------------------ */

typedef struct tidei_rd {
	const uint8_t *p;
	const uint8_t *end;
	int bad;
} tidei_rd;

void tidei_put_u64(tidei_buf *b, uint64_t v);
void tidei_put_i64(tidei_buf *b, int64_t v);
void tidei_put_f64(tidei_buf *b, double v);
uint64_t tidei_get_u64(tidei_rd *r);
int64_t tidei_get_i64(tidei_rd *r);
double tidei_get_f64(tidei_rd *r);
uint8_t tidei_get_u8(tidei_rd *r);
/** The next @p n bytes (NULL, and bad, if fewer are left). */
const uint8_t *tidei_get_bytes(tidei_rd *r, size_t n);
/** A count of items of at least @p min_bytes each that must follow, at
 *  most @p max: anything larger cannot be true and sets bad (so that no
 *  allocation is sized from a number the bytes cannot back). */
uint64_t tidei_get_count(tidei_rd *r, uint64_t max, size_t min_bytes);

/* ------------------------------------------------------------------------
 * Distinct counts
 * ------------------------------------------------------------------------ */

typedef struct tidei_dset tidei_dset;

/** Tokens counted exactly before the sketch takes over. */
#define TIDEI_DSET_EXACT 40

/** The token as the set keeps it: a bijective mix (splitmix64's
 *  finalizer), so that poorly spread tokens (small integers) fill the
 *  registers evenly and exact counts stay exact. */
uint64_t tidei_dset_mix(uint64_t token);
/** Room for one more tidei_dset_add() that cannot fail.  TIDE_OK or
 *  TIDE_ENOMEM (*@p d unchanged). */
int tidei_dset_reserve(tidei_dset **d);
/** Count mixed token @p h; call tidei_dset_reserve() first. */
void tidei_dset_add(tidei_dset **d, uint64_t h);
/** Add everything @p src counted to *@p dst.  TIDE_OK or TIDE_ENOMEM
 *  (*@p dst unchanged). */
int tidei_dset_merge(tidei_dset **dst, const tidei_dset *src);
/** The distinct count: exact, or the HyperLogLog estimate rounded. */
double tidei_dset_count(const tidei_dset *d);
size_t tidei_dset_memory(const tidei_dset *d);
void tidei_dset_free(tidei_dset *d);
/** Append a non-empty set's stored form. */
void tidei_dset_encode(const tidei_dset *d, tidei_buf *b);
/** Read a stored form (*@p d must be NULL).  TIDE_OK, TIDE_EIO (damaged)
 *  or TIDE_ENOMEM. */
int tidei_dset_decode(tidei_dset **d, tidei_rd *r);

/* ------------------------------------------------------------------------
 * Quantiles
 * ------------------------------------------------------------------------ */

typedef struct tidei_qsk tidei_qsk;

/** Relative accuracy: the estimate of a quantile whose exact value is x
 *  lies within x * (1 +- TIDEI_QSK_ALPHA), as long as no bucket was merged
 *  below it. */
#define TIDEI_QSK_ALPHA 0.01
#define TIDEI_QSK_MAX_BINS 2048

/** Room for one more tidei_qsk_add() that cannot fail.  TIDE_OK or
 *  TIDE_ENOMEM. */
int tidei_qsk_reserve(tidei_qsk **q);
/** Count finite value @p v; call tidei_qsk_reserve() first. */
void tidei_qsk_add(tidei_qsk **q, double v);
/** Forget one finite value @p v given before (windows whose entries
 *  expire).  It never allocates, and never frees the sketch: a reserve
 *  made before still holds.  A sketch that becomes empty forgets its
 *  floor. */
void tidei_qsk_remove(tidei_qsk **q, double v);
/** Add everything @p src counted to *@p dst.  TIDE_OK or TIDE_ENOMEM
 *  (*@p dst unchanged). */
int tidei_qsk_merge(tidei_qsk **dst, const tidei_qsk *src);
/** The estimate of quantile @p p (0..1) of the values counted: the value
 *  of rank floor(p * (n - 1)) in ascending order.  NAN when empty. */
double tidei_qsk_quantile(const tidei_qsk *q, double p);
/** The key below which buckets were merged, or TIDEI_QSK_NOFLOOR. */
#define TIDEI_QSK_NOFLOOR INT32_MIN
int32_t tidei_qsk_floor(const tidei_qsk *q);
/** Buckets in use (0 for NULL). */
uint32_t tidei_qsk_bins(const tidei_qsk *q);
/** An empty sketch whose buckets below @p floor are already merged (to
 *  rebuild one from values kept elsewhere).  TIDE_OK or TIDE_ENOMEM. */
int tidei_qsk_start(tidei_qsk **q, int32_t floor);
/** Whether @p floor is one tidei_qsk_floor() can return. */
int tidei_qsk_floor_valid(int64_t floor);
size_t tidei_qsk_memory(const tidei_qsk *q);
void tidei_qsk_free(tidei_qsk *q);
/** Append a non-empty sketch's stored form. */
void tidei_qsk_encode(const tidei_qsk *q, tidei_buf *b);
/** Read a stored form (*@p q must be NULL).  TIDE_OK, TIDE_EIO (damaged)
 *  or TIDE_ENOMEM. */
int tidei_qsk_decode(tidei_qsk **q, tidei_rd *r);

#endif
