/*
 * sketch.c - the distinct counter, the quantile sketch and the varint
 * codec of sketch.h.  Owns only the summaries it is handed; knows nothing
 * of windows or time.
 *
 * Every function that grows a summary allocates first and changes it
 * only once nothing can fail any more, so a failure leaves the summary as
 * it was.  Decoders check every count against the bytes left before
 * allocating, and every value against what an encoder could have written.
 */
#include "config.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sketch.h"
#include "tide.h"

/* ------------------------------------------------------------------------
 * Codec
 * ------------------------------------------------------------------------ */

void
tidei_put_u64(tidei_buf *b, uint64_t v)
{
	uint8_t tmp[10];
	size_t n = 0;

	while (v >= 0x80) {
		tmp[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	tmp[n++] = (uint8_t)v;
	tidei_buf_put(b, tmp, n);
}

void
tidei_put_i64(tidei_buf *b, int64_t v)
{
	/* zigzag: small magnitudes of either sign stay short */
	uint64_t u = (uint64_t)v << 1;

	tidei_put_u64(b, v < 0 ? ~u : u);
}

void
tidei_put_f64(tidei_buf *b, double v)
{
	uint8_t tmp[8];
	uint64_t bits;

	memcpy(&bits, &v, 8);
	tidei_st64(tmp, bits);
	tidei_buf_put(b, tmp, 8);
}

static void
rd_fail(tidei_rd *r)
{
	r->bad = 1;
	r->p = r->end;
}

uint64_t
tidei_get_u64(tidei_rd *r)
{
	uint64_t v = 0;

	for (unsigned shift = 0; shift < 64 && r->p < r->end; shift += 7) {
		uint8_t c = *r->p++;

		if (shift == 63 && c > 1)
			break; /* more than 64 bits */
		v |= (uint64_t)(c & 0x7f) << shift;
		if ((c & 0x80) == 0)
			return v;
	}
	rd_fail(r);
	return 0;
}

int64_t
tidei_get_i64(tidei_rd *r)
{
	uint64_t u = tidei_get_u64(r);

	/* written so that no step overflows: u >> 1 fits an int64_t */
	return (u & 1) ? -(int64_t)(u >> 1) - 1 : (int64_t)(u >> 1);
}

const uint8_t *
tidei_get_bytes(tidei_rd *r, size_t n)
{
	const uint8_t *p = r->p;

	if ((size_t)(r->end - r->p) < n) {
		rd_fail(r);
		return NULL;
	}
	r->p += n;
	return p;
}

double
tidei_get_f64(tidei_rd *r)
{
	const uint8_t *p = tidei_get_bytes(r, 8);
	uint64_t bits;
	double v;

	if (p == NULL)
		return 0;
	bits = tidei_ld64(p);
	memcpy(&v, &bits, 8);
	return v;
}

uint8_t
tidei_get_u8(tidei_rd *r)
{
	const uint8_t *p = tidei_get_bytes(r, 1);

	return p ? *p : 0;
}

uint64_t
tidei_get_count(tidei_rd *r, uint64_t max, size_t min_bytes)
{
	uint64_t n = tidei_get_u64(r);

	if (min_bytes == 0)
		min_bytes = 1;
	if (n > max || n > (uint64_t)(r->end - r->p) / min_bytes) {
		rd_fail(r);
		return 0;
	}
	return n;
}

/* ------------------------------------------------------------------------
 * Distinct counts: a sorted array of mixed tokens while small, then a
 * HyperLogLog in the same 320 bytes.
 *
 * The registers follow Ertl's model ("New cardinality estimation
 * algorithms for HyperLogLog sketches", 2017): 9 bits of the hash pick a
 * register, the next 30 bits give a rank of 1..30, or 31 when all are
 * zero.  31 fits five bits, and his improved estimator has no bias to
 * correct and no switch to linear counting at small cardinalities.
 * ------------------------------------------------------------------------ */

#define HLL_P 9
#define HLL_M (1u << HLL_P)
#define HLL_Q 30
#define HLL_BITS 5
#define HLL_BYTES (HLL_M * HLL_BITS / 8)
#define DS_SKETCH UINT32_MAX

_Static_assert(TIDEI_DSET_EXACT * 8 == HLL_BYTES, "the exact set converts in place");

struct tidei_dset {
	uint32_t n;   /* exact: hashes in h[], ascending; DS_SKETCH: registers */
	uint32_t cap; /* exact: room in h[]; a sketch has TIDEI_DSET_EXACT */
	uint64_t h[];
};

uint64_t
tidei_dset_mix(uint64_t x)
{
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* Registers are five bits each, packed little-endian into bytes so that
 * the stored form does not depend on the host's byte order. */
static unsigned
reg_get(const uint8_t *r, unsigned i)
{
	unsigned bit = i * HLL_BITS, byte = bit >> 3, sh = bit & 7;
	unsigned v = r[byte] >> sh;

	if (sh > 8 - HLL_BITS)
		v |= (unsigned)r[byte + 1] << (8 - sh);
	return v & ((1u << HLL_BITS) - 1);
}

static void
reg_set(uint8_t *r, unsigned i, unsigned v)
{
	unsigned bit = i * HLL_BITS, byte = bit >> 3, sh = bit & 7;
	unsigned w = r[byte];

	if (sh > 8 - HLL_BITS)
		w |= (unsigned)r[byte + 1] << 8;
	w = (w & ~(((1u << HLL_BITS) - 1) << sh)) | (v << sh);
	r[byte] = (uint8_t)w;
	if (sh > 8 - HLL_BITS)
		r[byte + 1] = (uint8_t)(w >> 8);
}

static void
hll_add(uint8_t *r, uint64_t h)
{
	unsigned idx = (unsigned)(h >> (64 - HLL_P));
	uint32_t w = (uint32_t)(h >> (64 - HLL_P - HLL_Q)) & ((1u << HLL_Q) - 1);
	unsigned rank = 1;

	while (rank <= HLL_Q && (w & (1u << (HLL_Q - rank))) == 0)
		rank++;
	if (rank > reg_get(r, idx))
		reg_set(r, idx, rank);
}

static tidei_dset *
dset_alloc(uint32_t cap)
{
	tidei_dset *d = malloc(sizeof *d + (size_t)cap * sizeof d->h[0]);

	if (d != NULL) {
		d->n = 0;
		d->cap = cap;
	}
	return d;
}

/* Turn a full exact set into a sketch, in place. */
static void
dset_to_sketch(tidei_dset *d)
{
	uint64_t held[TIDEI_DSET_EXACT];
	uint32_t n = d->n;

	memcpy(held, d->h, (size_t)n * sizeof held[0]);
	memset(d->h, 0, HLL_BYTES);
	d->n = DS_SKETCH;
	for (uint32_t i = 0; i < n; i++)
		hll_add((uint8_t *)d->h, held[i]);
}

/* Index of the first hash >= @p h in an exact set. */
static uint32_t
dset_find(const tidei_dset *d, uint64_t h)
{
	uint32_t lo = 0, hi = d->n;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (d->h[mid] < h)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

int
tidei_dset_reserve(tidei_dset **dp)
{
	tidei_dset *d = *dp;
	uint32_t cap;

	if (d == NULL) {
		*dp = dset_alloc(2);
		return *dp ? TIDE_OK : TIDE_ENOMEM;
	}
	if (d->n == DS_SKETCH || d->n < d->cap || d->cap == TIDEI_DSET_EXACT)
		return TIDE_OK;
	cap = d->cap * 2 < TIDEI_DSET_EXACT ? d->cap * 2 : TIDEI_DSET_EXACT;
	d = realloc(d, sizeof *d + (size_t)cap * sizeof d->h[0]);
	if (d == NULL)
		return TIDE_ENOMEM;
	d->cap = cap;
	*dp = d;
	return TIDE_OK;
}

void
tidei_dset_add(tidei_dset **dp, uint64_t h)
{
	tidei_dset *d = *dp;
	uint32_t i;

	if (d->n == DS_SKETCH) {
		hll_add((uint8_t *)d->h, h);
		return;
	}
	i = dset_find(d, h);
	if (i < d->n && d->h[i] == h)
		return;
	if (d->n == d->cap) { /* full at TIDEI_DSET_EXACT: reserve saw to it */
		dset_to_sketch(d);
		hll_add((uint8_t *)d->h, h);
		return;
	}
	memmove(d->h + i + 1, d->h + i, (size_t)(d->n - i) * sizeof d->h[0]);
	d->h[i] = h;
	d->n++;
}

/* Size of the union of two exact sets. */
static uint32_t
union_size(const tidei_dset *a, const tidei_dset *b)
{
	uint32_t i = 0, j = 0, n = 0;

	while (i < a->n || j < b->n) {
		if (j == b->n || (i < a->n && a->h[i] < b->h[j]))
			i++;
		else if (i == a->n || b->h[j] < a->h[i])
			j++;
		else
			i++, j++;
		n++;
	}
	return n;
}

/* Put everything @p src holds into the sketch @p r. */
static void
sketch_absorb(uint8_t *r, const tidei_dset *src)
{
	if (src->n != DS_SKETCH) {
		for (uint32_t i = 0; i < src->n; i++)
			hll_add(r, src->h[i]);
		return;
	}
	for (unsigned i = 0; i < HLL_M; i++) {
		unsigned v = reg_get((const uint8_t *)src->h, i);

		if (v > reg_get(r, i))
			reg_set(r, i, v);
	}
}

int
tidei_dset_merge(tidei_dset **dp, const tidei_dset *src)
{
	static const tidei_dset empty = { 0, 0 };
	const tidei_dset *dst = *dp ? *dp : &empty;
	tidei_dset *out;
	uint32_t n;

	if (src == NULL)
		return TIDE_OK;
	if (dst->n == DS_SKETCH) { /* in place: merging many panes allocates once */
		sketch_absorb((uint8_t *)(*dp)->h, src);
		return TIDE_OK;
	}
	if (src->n != DS_SKETCH && (n = union_size(dst, src)) <= TIDEI_DSET_EXACT) {
		out = dset_alloc(n > 2 ? n : 2);
		if (out == NULL)
			return TIDE_ENOMEM;
		for (uint32_t i = 0, j = 0; i < dst->n || j < src->n;) {
			if (j == src->n || (i < dst->n && dst->h[i] < src->h[j]))
				out->h[out->n++] = dst->h[i++];
			else if (i == dst->n || src->h[j] < dst->h[i])
				out->h[out->n++] = src->h[j++];
			else
				out->h[out->n++] = dst->h[i++], j++;
		}
	} else {
		out = dset_alloc(TIDEI_DSET_EXACT);
		if (out == NULL)
			return TIDE_ENOMEM;
		out->n = DS_SKETCH;
		memset(out->h, 0, HLL_BYTES);
		sketch_absorb((uint8_t *)out->h, dst);
		sketch_absorb((uint8_t *)out->h, src);
	}
	free(*dp);
	*dp = out;
	return TIDE_OK;
}

/* Ertl's sigma and tau series, summed until they stop changing. */
static double
hll_sigma(double x)
{
	double y = 1, z = x, prev;

	if (x == 1)
		return INFINITY;
	do {
		x *= x;
		prev = z;
		z += x * y;
		y += y;
	} while (z != prev);
	return z;
}

static double
hll_tau(double x)
{
	double y = 1, z = 1 - x, prev;

	if (x == 0 || x == 1)
		return 0;
	do {
		x = sqrt(x);
		prev = z;
		y *= 0.5;
		z -= (1 - x) * (1 - x) * y;
	} while (z != prev);
	return z / 3;
}

double
tidei_dset_count(const tidei_dset *d)
{
	unsigned hist[HLL_Q + 2] = { 0 };
	double m = HLL_M, z;

	if (d == NULL)
		return 0;
	if (d->n != DS_SKETCH)
		return d->n;
	for (unsigned i = 0; i < HLL_M; i++)
		hist[reg_get((const uint8_t *)d->h, i)]++;
	z = m * hll_tau(1 - hist[HLL_Q + 1] / m);
	for (unsigned k = HLL_Q; k >= 1; k--)
		z = 0.5 * (z + hist[k]);
	z += m * hll_sigma(hist[0] / m);
	/* alpha_inf * m^2 / z with alpha_inf = 1 / (2 ln 2) */
	return floor(m * m / (2 * log(2.0) * z) + 0.5);
}

size_t
tidei_dset_memory(const tidei_dset *d)
{
	return d ? sizeof *d + (size_t)d->cap * sizeof d->h[0] : 0;
}

void
tidei_dset_free(tidei_dset *d)
{
	free(d);
}

void
tidei_dset_encode(const tidei_dset *d, tidei_buf *b)
{
	uint8_t tmp[8];

	if (d->n == DS_SKETCH) {
		tidei_buf_putc(b, 1);
		tidei_buf_put(b, d->h, HLL_BYTES);
		return;
	}
	tidei_buf_putc(b, 0);
	tidei_put_u64(b, d->n);
	for (uint32_t i = 0; i < d->n; i++) {
		tidei_st64(tmp, d->h[i]);
		tidei_buf_put(b, tmp, 8);
	}
}

int
tidei_dset_decode(tidei_dset **dp, tidei_rd *r)
{
	uint8_t mode = tidei_get_u8(r);
	tidei_dset *d;
	const uint8_t *p;
	uint64_t n;

	if (mode == 1) {
		p = tidei_get_bytes(r, HLL_BYTES);
		if (p == NULL)
			return TIDE_EIO;
		if ((d = dset_alloc(TIDEI_DSET_EXACT)) == NULL)
			return TIDE_ENOMEM;
		d->n = DS_SKETCH;
		memcpy(d->h, p, HLL_BYTES);
		*dp = d;
		return TIDE_OK;
	}
	n = tidei_get_count(r, TIDEI_DSET_EXACT, 8);
	if (mode != 0 || r->bad || n == 0)
		return TIDE_EIO;
	if ((d = dset_alloc((uint32_t)(n > 2 ? n : 2))) == NULL)
		return TIDE_ENOMEM;
	for (uint32_t i = 0; i < n; i++) {
		const uint8_t *p8 = tidei_get_bytes(r, 8);

		d->h[i] = p8 ? tidei_ld64(p8) : 0;
		if (p8 == NULL || (i > 0 && d->h[i] <= d->h[i - 1])) {
			free(d);
			return TIDE_EIO;
		}
	}
	d->n = (uint32_t)n;
	*dp = d;
	return TIDE_OK;
}

/* ------------------------------------------------------------------------
 * Quantiles: counts in buckets of logarithmic width.
 *
 * A value v > 0 falls in bucket i = ceil(log_gamma(v)), which holds
 * (gamma^(i-1), gamma^i]; gamma = (1 + alpha) / (1 - alpha) makes
 * gamma^i * (1 - alpha) within alpha of anything in it.  Negative values
 * mirror the positive ones and zero has its own bucket, all in one key
 * space ordered as the values are: -(BIAS + i) < 0 < BIAS + i.  The keys
 * are kept sorted in an array of (key, count), so a sketch of a handful
 * of values is a handful of pairs.
 * ------------------------------------------------------------------------ */

#define QK_BIAS 131072
#define QK_IMAX 40000 /* |log_gamma| of every finite double is below it */
#define QK_LN_GAMMA (2.0 * atanh(TIDEI_QSK_ALPHA))

typedef struct qbin {
	int32_t key;
	uint32_t n;
} qbin;

struct tidei_qsk {
	uint32_t n, cap; /* bins used and allocated */
	int32_t floor;   /* keys below it were merged into it, or TIDEI_QSK_NOFLOOR */
	qbin b[];        /* ascending keys */
};

static int32_t
qk_key(double v)
{
	double i;

	if (v == 0)
		return 0;
	i = ceil(log(fabs(v)) / QK_LN_GAMMA);
	i = i > QK_IMAX ? QK_IMAX : i < -QK_IMAX ? -QK_IMAX : i;
	return v > 0 ? QK_BIAS + (int32_t)i : -(QK_BIAS + (int32_t)i);
}

static double
qk_value(int32_t key)
{
	int32_t i = (key < 0 ? -key : key) - QK_BIAS;
	double m;

	if (key == 0)
		return 0;
	m = exp(i * QK_LN_GAMMA) * (1 - TIDEI_QSK_ALPHA);
	if (m > DBL_MAX)
		m = DBL_MAX;
	return key > 0 ? m : -m;
}

static int
qk_valid(int64_t key)
{
	int64_t a = key < 0 ? -key : key;

	return key == 0 || (a >= QK_BIAS - QK_IMAX && a <= QK_BIAS + QK_IMAX);
}

int
tidei_qsk_floor_valid(int64_t floor)
{
	return floor == TIDEI_QSK_NOFLOOR || qk_valid(floor);
}

static tidei_qsk *
qsk_alloc(uint32_t cap, int32_t floor)
{
	tidei_qsk *q = malloc(sizeof *q + (size_t)cap * sizeof q->b[0]);

	if (q != NULL) {
		q->n = 0;
		q->cap = cap;
		q->floor = floor;
	}
	return q;
}

/* Index of the first bin whose key is >= @p key. */
static uint32_t
qsk_find(const tidei_qsk *q, int32_t key)
{
	uint32_t lo = 0, hi = q->n;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (q->b[mid].key < key)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static uint32_t
sat_add(uint32_t a, uint32_t b)
{
	return a > UINT32_MAX - b ? UINT32_MAX : a + b;
}

/* Merge the lowest bins into one until TIDEI_QSK_MAX_BINS are left. */
static void
qsk_collapse(tidei_qsk *q)
{
	uint32_t k = q->n - TIDEI_QSK_MAX_BINS;

	for (uint32_t i = 0; i < k; i++)
		q->b[k].n = sat_add(q->b[k].n, q->b[i].n);
	q->floor = q->b[k].key;
	memmove(q->b, q->b + k, (size_t)TIDEI_QSK_MAX_BINS * sizeof q->b[0]);
	q->n = TIDEI_QSK_MAX_BINS;
}

int
tidei_qsk_start(tidei_qsk **qp, int32_t floor)
{
	*qp = qsk_alloc(4, floor);
	return *qp ? TIDE_OK : TIDE_ENOMEM;
}

int
tidei_qsk_reserve(tidei_qsk **qp)
{
	tidei_qsk *q = *qp;
	uint32_t cap;

	if (q == NULL)
		return tidei_qsk_start(qp, TIDEI_QSK_NOFLOOR);
	if (q->n < q->cap)
		return TIDE_OK;
	/* one past the limit: an add inserts before it collapses */
	cap = q->cap * 2 < TIDEI_QSK_MAX_BINS + 1 ? q->cap * 2 : TIDEI_QSK_MAX_BINS + 1;
	q = realloc(q, sizeof *q + (size_t)cap * sizeof q->b[0]);
	if (q == NULL)
		return TIDE_ENOMEM;
	q->cap = cap;
	*qp = q;
	return TIDE_OK;
}

void
tidei_qsk_add(tidei_qsk **qp, double v)
{
	tidei_qsk *q = *qp;
	int32_t key = qk_key(v);
	uint32_t i;

	if (key < q->floor)
		key = q->floor;
	i = qsk_find(q, key);
	if (i < q->n && q->b[i].key == key) {
		q->b[i].n = sat_add(q->b[i].n, 1);
		return;
	}
	memmove(q->b + i + 1, q->b + i, (size_t)(q->n - i) * sizeof q->b[0]);
	q->b[i].key = key;
	q->b[i].n = 1;
	if (++q->n > TIDEI_QSK_MAX_BINS)
		qsk_collapse(q);
}

void
tidei_qsk_remove(tidei_qsk **qp, double v)
{
	tidei_qsk *q = *qp, *smaller;
	int32_t key = qk_key(v);
	uint32_t i;

	if (key < q->floor)
		key = q->floor; /* where the add put it, since the floor only rises */
	i = qsk_find(q, key);
	if (i == q->n || q->b[i].key != key)
		return;
	if (--q->b[i].n > 0)
		return;
	memmove(q->b + i, q->b + i + 1, (size_t)(q->n - i - 1) * sizeof q->b[0]);
	if (--q->n == 0)
		q->floor = TIDEI_QSK_NOFLOOR; /* nothing left was merged */
	/* give memory back as a window's values narrow; failing to is harmless */
	if (q->cap > 16 && q->n < q->cap / 4) {
		smaller = realloc(q, sizeof *q + (size_t)(q->cap / 2) * sizeof q->b[0]);
		if (smaller != NULL) {
			smaller->cap /= 2;
			*qp = smaller;
		}
	}
}

int
tidei_qsk_merge(tidei_qsk **qp, const tidei_qsk *src)
{
	static const tidei_qsk empty = { 0, 0, TIDEI_QSK_NOFLOOR };
	const tidei_qsk *dst = *qp ? *qp : &empty;
	uint32_t i = 0, j = 0;
	int32_t floor;
	tidei_qsk *out;

	if (src == NULL)
		return TIDE_OK;
	floor = dst->floor > src->floor ? dst->floor : src->floor;
	out = qsk_alloc(dst->n + src->n, floor);
	if (out == NULL)
		return TIDE_ENOMEM;
	while (i < dst->n || j < src->n) {
		qbin bin = (j == src->n || (i < dst->n && dst->b[i].key <= src->b[j].key))
				   ? dst->b[i++]
				   : src->b[j++];

		if (bin.key < floor)
			bin.key = floor;
		if (out->n > 0 && out->b[out->n - 1].key == bin.key)
			out->b[out->n - 1].n = sat_add(out->b[out->n - 1].n, bin.n);
		else
			out->b[out->n++] = bin;
	}
	if (out->n > TIDEI_QSK_MAX_BINS)
		qsk_collapse(out);
	free(*qp);
	*qp = out;
	return TIDE_OK;
}

double
tidei_qsk_quantile(const tidei_qsk *q, double p)
{
	uint64_t total = 0, seen = 0;
	double rank;

	if (q == NULL || q->n == 0)
		return NAN;
	for (uint32_t i = 0; i < q->n; i++)
		total += q->b[i].n;
	p = p < 0 ? 0 : p > 1 ? 1 : p;
	rank = floor(p * (double)(total - 1));
	for (uint32_t i = 0; i < q->n; i++) {
		seen += q->b[i].n;
		if ((double)seen > rank)
			return qk_value(q->b[i].key);
	}
	return qk_value(q->b[q->n - 1].key);
}

int32_t
tidei_qsk_floor(const tidei_qsk *q)
{
	return q ? q->floor : TIDEI_QSK_NOFLOOR;
}

uint32_t
tidei_qsk_bins(const tidei_qsk *q)
{
	return q ? q->n : 0;
}

size_t
tidei_qsk_memory(const tidei_qsk *q)
{
	return q ? sizeof *q + (size_t)q->cap * sizeof q->b[0] : 0;
}

void
tidei_qsk_free(tidei_qsk *q)
{
	free(q);
}

void
tidei_qsk_encode(const tidei_qsk *q, tidei_buf *b)
{
	tidei_put_u64(b, q->n);
	tidei_put_u64(b, q->floor != TIDEI_QSK_NOFLOOR);
	if (q->floor != TIDEI_QSK_NOFLOOR)
		tidei_put_i64(b, q->floor);
	for (uint32_t i = 0; i < q->n; i++) {
		if (i == 0)
			tidei_put_i64(b, q->b[0].key);
		else
			tidei_put_u64(b, (uint64_t)((int64_t)q->b[i].key - q->b[i - 1].key));
		tidei_put_u64(b, q->b[i].n);
	}
}

int
tidei_qsk_decode(tidei_qsk **qp, tidei_rd *r)
{
	uint64_t n = tidei_get_count(r, TIDEI_QSK_MAX_BINS, 2);
	uint64_t has_floor = tidei_get_u64(r);
	int64_t floor = has_floor ? tidei_get_i64(r) : TIDEI_QSK_NOFLOOR, key = 0;
	tidei_qsk *q;

	if (r->bad || n == 0 || has_floor > 1 || !tidei_qsk_floor_valid(floor))
		return TIDE_EIO;
	if ((q = qsk_alloc((uint32_t)n, (int32_t)floor)) == NULL)
		return TIDE_ENOMEM;
	for (uint32_t i = 0; i < n; i++) {
		uint64_t step = i == 0 ? 0 : tidei_get_u64(r), count;

		if (i == 0)
			key = tidei_get_i64(r);
		else if (step == 0 || step > 2 * (QK_BIAS + QK_IMAX))
			break;
		else
			key += (int64_t)step;
		count = tidei_get_u64(r);
		if (r->bad || !qk_valid(key) || key < floor || count == 0 || count > UINT32_MAX)
			break;
		q->b[i].key = (int32_t)key;
		q->b[i].n = (uint32_t)count;
		q->n++;
	}
	if (q->n != n) {
		free(q);
		return TIDE_EIO;
	}
	*qp = q;
	return TIDE_OK;
}
