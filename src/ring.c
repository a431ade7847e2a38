/*
 * ring.c - the entries of a sliding or count window (ring.h), and what
 * makes evicting them cheap: running sums that an eviction takes back,
 * monotonic deques for MIN and MAX, a count per distinct token, and a
 * quantile sketch that can forget a value.
 *
 * Invariants: sliding entries are sorted by time (ties in the order
 * added) and none is at or before max(latest, watermark) - size; count
 * entries are in the order added, at most N.  The deques, token counts
 * and sketch are functions of the entries (the sketch also of its
 * floor), so the stored form holds the entries and rebuilds them; the
 * running sums carry rounding that depends on history, so they are
 * stored as they are.  An add reserves room everywhere before it evicts
 * or inserts anything, so a failure leaves the window as it was.
 */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "accum.h"
#include "err.h"
#include "ring.h"
#include "tide.h"

/* The sums are recomputed from the entries after this many adds and
 * evictions, or as many as there are entries if more; and sooner (but
 * not more often than every 1/RECENTRE_EVERY of the entries) when more
 * than RECENTRE_BITS bits would cancel in the variance. */
#define RECOMPUTE_MIN 1024
#define RECENTRE_BITS 16
#define RECENTRE_EVERY 64

/* A growable array used from both ends: elements p[head .. head + n). */
typedef struct deq {
	void *p;
	uint32_t head, n, cap;
} deq;

typedef struct entry {
	int64_t t;
	double v;
	uint64_t h; /* the token, mixed (tidei_dset_mix) */
} entry;

/* An entry in a MIN or MAX deque: its key (the time for sliding windows,
 * the order added for count windows) and value. */
typedef struct mono {
	int64_t key;
	double v;
} mono;

/* How many entries hold each token: open addressing, linear probing. */
typedef struct tcount {
	uint64_t h;
	uint32_t n; /* 0: a free cell */
} tcount;

typedef struct tset {
	tcount *s;
	uint32_t cap, used; /* cap: 0 or a power of two */
} tset;

/* The running sums of a ring.  Compensated sums give back, when a value
 * leaves, all that its arrival changed but a rounding of the error term:
 * they do not drift, and a huge value passing through leaves nothing
 * behind (Welford's update run backwards keeps its rounding, which can
 * dwarf the variance of what stays).  The variance's sums are of
 * v - shift, shift being an entry near the mean, so that
 * S2 - S1^2 / n cancels little. */
typedef struct rsums {
	double sum, c; /* SUM: the sum of v */
	double shift;  /* MEAN, VARIANCE, STDDEV: */
	double s1, c1; /* the sum of v - shift */
	double s2, c2; /* the sum of (v - shift)^2 */
} rsums;

struct tidei_ring {
	/* what every add touches first, on the window's first cache lines */
	deq e;          /* entries: sliding by time, count in the order added */
	int64_t latest; /* sliding: the largest time added, TIDEI_WIN_NONE before */
	uint64_t since; /* adds and evictions since the sums were recomputed */
	rsums f;
	uint64_t added; /* count: entries added, the key of the next */
	deq mx, mn;     /* MAX, MIN: oldest first, the entries no later one
			 * equals or beats; the front is the extreme */
	tset tokens;    /* DISTINCT */
	tidei_qsk *qs;  /* QUANTILE */
};

static int64_t
max64(int64_t a, int64_t b)
{
	return a > b ? a : b;
}

/* ------------------------------------------------------------------------
 * Deques and token counts, for the ring
 * ------------------------------------------------------------------------ */

static void *
deq_at(const deq *d, size_t size, uint32_t i)
{
	return (char *)d->p + (size_t)(d->head + i) * size;
}

/* Room for one more element at the back.  Compacting only while a
 * quarter stays free keeps a window that adds one and evicts one per
 * event from moving all its entries each time. */
static int
deq_reserve(deq *d, size_t size)
{
	uint32_t cap = d->cap;
	void *p;

	if (d->head + d->n < d->cap)
		return TIDE_OK;
	if ((size_t)(d->n + 1) * 4 > (size_t)d->cap * 3) {
		cap = d->cap ? d->cap * 2 : 4;
		if ((p = realloc(d->p, (size_t)cap * size)) == NULL)
			return TIDE_ENOMEM;
		d->p = p;
		d->cap = cap;
	}
	memmove(d->p, deq_at(d, size, 0), (size_t)d->n * size);
	d->head = 0;
	return TIDE_OK;
}

/* Insert at index @p i (room reserved). */
static void
deq_insert(deq *d, size_t size, uint32_t i, const void *x)
{
	memmove(deq_at(d, size, i + 1), deq_at(d, size, i), (size_t)(d->n - i) * size);
	memcpy(deq_at(d, size, i), x, size);
	d->n++;
}

static void
deq_erase(deq *d, size_t size, uint32_t i, uint32_t n)
{
	memmove(deq_at(d, size, i), deq_at(d, size, i + n), (size_t)(d->n - i - n) * size);
	d->n -= n;
}

static void
deq_drop_front(deq *d, uint32_t n)
{
	d->head += n;
	d->n -= n;
	if (d->n == 0)
		d->head = 0;
}

/* Give memory back when a quarter or less is used. */
static void
deq_trim(deq *d, size_t size)
{
	uint32_t cap = tidei_array_shrunk(d->cap, d->n, 4);
	void *p;

	if (d->n == 0) {
		free(d->p);
		memset(d, 0, sizeof *d);
		return;
	}
	if (cap == d->cap)
		return;
	memmove(d->p, deq_at(d, size, 0), (size_t)d->n * size);
	d->head = 0;
	if ((p = realloc(d->p, (size_t)cap * size)) != NULL) {
		d->p = p;
		d->cap = cap;
	}
}

/* Index of the first element whose key is > @p key; @p key_of reads an
 * element's key. */
static uint32_t
upper_bound(const deq *d, size_t size, int64_t key)
{
	uint32_t lo = 0, hi = d->n;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		int64_t k;

		memcpy(&k, deq_at(d, size, mid), sizeof k); /* key or t comes first */
		if (k <= key)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Does @p a equal or beat @p b: >= for MAX (@p sign 1), <= for MIN? */
static int
beats(double a, double b, int sign)
{
	return sign > 0 ? a >= b : a <= b;
}

/* Add an entry to a MIN or MAX deque (room reserved).  The deque holds,
 * in key order, the entries that no later one equals or beats, so its
 * values strictly fall (MAX) and its front is the extreme.  A new entry
 * lands among them by key: it is left out if the next one after it
 * equals or beats it, and drops the ones before it that it equals or
 * beats.  Appending is the common case and amortized O(1). */
static void
mono_add(deq *d, int64_t key, double v, int sign)
{
	uint32_t j = upper_bound(d, sizeof(mono), key), i = j;
	mono x = { key, v };

	if (j < d->n && beats(((mono *)deq_at(d, sizeof x, j))->v, v, sign))
		return;
	while (i > 0 && beats(v, ((mono *)deq_at(d, sizeof x, i - 1))->v, sign))
		i--;
	if (i == j) {
		deq_insert(d, sizeof x, j, &x);
	} else {
		memcpy(deq_at(d, sizeof x, i), &x, sizeof x);
		deq_erase(d, sizeof x, i + 1, j - i - 1);
	}
}

/* Entries with keys up to @p key left the window. */
static void
mono_evict(deq *d, int64_t key)
{
	uint32_t n = 0;

	while (n < d->n && ((mono *)deq_at(d, sizeof(mono), n))->key <= key)
		n++;
	deq_drop_front(d, n);
}

static int
tset_rehash(tset *t, uint32_t cap)
{
	tcount *old = t->s, *s = calloc(cap, sizeof *s);
	uint32_t oldcap = t->cap;

	if (s == NULL)
		return TIDE_ENOMEM;
	t->s = s;
	t->cap = cap;
	for (uint32_t i = 0; i < oldcap; i++) {
		uint32_t j = (uint32_t)old[i].h & (cap - 1);

		if (old[i].n == 0)
			continue;
		while (s[j].n != 0)
			j = (j + 1) & (cap - 1);
		s[j] = old[i];
	}
	free(old);
	return TIDE_OK;
}

/* Room for one more token, the table at most three quarters full. */
static int
tset_reserve(tset *t)
{
	if ((size_t)(t->used + 1) * 4 <= (size_t)t->cap * 3)
		return TIDE_OK;
	return tset_rehash(t, t->cap ? t->cap * 2 : 8);
}

/* The cell of @p h, or the free cell where it would go. */
static uint32_t
tset_probe(const tset *t, uint64_t h)
{
	uint32_t j = (uint32_t)h & (t->cap - 1);

	while (t->s[j].n != 0 && t->s[j].h != h)
		j = (j + 1) & (t->cap - 1);
	return j;
}

static void
tset_inc(tset *t, uint64_t h)
{
	uint32_t j = tset_probe(t, h);

	if (t->s[j].n++ == 0) {
		t->s[j].h = h;
		t->used++;
	}
}

/* One entry holding @p h left; the last one takes its token out, and the
 * cells after it move back to keep every probe sequence unbroken. */
static void
tset_dec(tset *t, uint64_t h)
{
	uint32_t mask = t->cap - 1, i = tset_probe(t, h), j = i;

	if (t->s[i].n == 0 || --t->s[i].n > 0)
		return;
	t->used--;
	for (;;) {
		uint32_t home;

		j = (j + 1) & mask;
		if (t->s[j].n == 0)
			break;
		home = (uint32_t)t->s[j].h & mask;
		/* j's entry may move to i unless its home lies in (i, j] */
		if (i < j ? (home <= i || home > j) : (home <= i && home > j)) {
			t->s[i] = t->s[j];
			i = j;
		}
	}
	t->s[i].n = 0;
}

static void
tset_trim(tset *t)
{
	uint32_t cap = t->cap;

	if (t->used == 0) {
		free(t->s);
		memset(t, 0, sizeof *t);
		return;
	}
	while (cap > 8 && (size_t)t->used * 8 < cap)
		cap /= 2;
	if (cap < t->cap)
		(void)tset_rehash(t, cap); /* failing to shrink is harmless */
}

/* ------------------------------------------------------------------------
 * The ring: sliding and count windows
 * ------------------------------------------------------------------------ */

static entry *
ent(const tidei_ring *r, uint32_t i)
{
	return deq_at(&r->e, sizeof(entry), i);
}

/* Room for one more entry everywhere it goes. */
static int
ring_reserve(tidei_ring *r, uint32_t aggs)
{
	if (deq_reserve(&r->e, sizeof(entry)) != TIDE_OK)
		return TIDE_ENOMEM;
	if ((aggs & TIDEI_AGG_MAX) && deq_reserve(&r->mx, sizeof(mono)) != TIDE_OK)
		return TIDE_ENOMEM;
	if ((aggs & TIDEI_AGG_MIN) && deq_reserve(&r->mn, sizeof(mono)) != TIDE_OK)
		return TIDE_ENOMEM;
	if ((aggs & TIDEI_AGG_DISTINCT) && tset_reserve(&r->tokens) != TIDE_OK)
		return TIDE_ENOMEM;
	if ((aggs & TIDEI_AGG_QUANTILE) && tidei_qsk_reserve(&r->qs) != TIDE_OK)
		return TIDE_ENOMEM;
	return TIDE_OK;
}

/* Add @p v to the sums (@p sign 1) or take it out (-1): the same terms,
 * negated exactly. */
static void
rsums_add(rsums *f, uint32_t aggs, double v, double sign)
{
	double d = v - f->shift;

	if (aggs & TIDEI_AGG_SUM)
		tidei_neumaier(&f->sum, &f->c, sign * v);
	if (aggs & TIDEI_WELFORD_AGGS) {
		tidei_neumaier(&f->s1, &f->c1, sign * d);
		tidei_neumaier(&f->s2, &f->c2, sign * (d * d));
	}
}

/* Welford's figures, mean and m2, of @p n entries from the sums. */
static void
rsums_moments(const rsums *f, uint32_t n, double *mean, double *m2)
{
	double s1 = f->s1 + f->c1, s2 = f->s2 + f->c2;

	*mean = f->shift + s1 / n;
	*m2 = s2 - s1 * s1 / n;
	if (!(*m2 > 0))
		*m2 = 0;
}

/* Would S2 - S1^2 / n lose more than RECENTRE_BITS bits? */
static int
rsums_skewed(const rsums *f, uint32_t n)
{
	double mean, m2;

	if (n == 0)
		return 0;
	rsums_moments(f, n, &mean, &m2);
	return f->s2 + f->c2 > ldexp(m2, RECENTRE_BITS);
}

/* The sums afresh from the entries, around the entry nearest the mean:
 * whatever the running updates lost to rounding is gone.  An entry
 * rather than the mean itself, so that equal values give zero terms. */
static void
ring_recompute(tidei_ring *r, uint32_t aggs)
{
	uint32_t n = r->e.n;
	double sum = 0, c = 0, mean, best = 0;

	memset(&r->f, 0, sizeof r->f);
	r->since = 0;
	if (n == 0)
		return;
	for (uint32_t i = 0; i < n; i++)
		tidei_neumaier(&sum, &c, ent(r, i)->v);
	mean = (sum + c) / n;
	for (uint32_t i = 0; i < n; i++) {
		double v = ent(r, i)->v;

		if (i == 0 || fabs(v - mean) < fabs(best - mean))
			best = v;
	}
	r->f.shift = best;
	for (uint32_t i = 0; i < n; i++)
		rsums_add(&r->f, aggs, ent(r, i)->v, 1);
}

/* After each add or eviction: recompute now and then, and when the
 * shift has fallen far behind the mean. */
static void
ring_settle(tidei_ring *r, uint32_t aggs)
{
	uint64_t n = r->e.n;

	if (n == 0) {
		memset(&r->f, 0, sizeof r->f); /* exactly nothing */
		r->since = 0;
	} else if ((r->since >= RECOMPUTE_MIN && r->since >= n) ||
		   ((aggs & TIDEI_WELFORD_AGGS) && r->since * RECENTRE_EVERY >= n &&
		    rsums_skewed(&r->f, r->e.n))) {
		ring_recompute(r, aggs);
	}
}

/* Count entry @p x, whose key is @p key, in everything but the array. */
static void
ring_count(tidei_ring *r, uint32_t aggs, const entry *x, int64_t key)
{
	if (r->e.n == 1) { /* the first: exactly nothing before, zero terms */
		memset(&r->f, 0, sizeof r->f);
		r->f.shift = x->v;
	}
	rsums_add(&r->f, aggs, x->v, 1);
	r->since++;
	if (aggs & TIDEI_AGG_MAX)
		mono_add(&r->mx, key, x->v, 1);
	if (aggs & TIDEI_AGG_MIN)
		mono_add(&r->mn, key, x->v, -1);
	if (aggs & TIDEI_AGG_DISTINCT)
		tset_inc(&r->tokens, x->h);
	if (aggs & TIDEI_AGG_QUANTILE)
		tidei_qsk_add(&r->qs, x->v);
}

/* Evict the @p n oldest entries (the first n), the last of which has
 * key @p key. */
static void
ring_evict(tidei_ring *r, uint32_t aggs, uint32_t n, int64_t key)
{
	if (n == 0)
		return;
	for (uint32_t i = 0; i < n; i++) {
		const entry *x = ent(r, i);

		rsums_add(&r->f, aggs, x->v, -1);
		if (aggs & TIDEI_AGG_DISTINCT)
			tset_dec(&r->tokens, x->h);
		if (aggs & TIDEI_AGG_QUANTILE)
			tidei_qsk_remove(&r->qs, x->v);
	}
	mono_evict(&r->mx, key);
	mono_evict(&r->mn, key);
	deq_drop_front(&r->e, n);
	r->since += n;
}

/* Give back what a shrinking window no longer needs; only once an
 * operation is over, since reserves are made before evicting. */
static void
ring_trim(tidei_ring *r)
{
	deq_trim(&r->e, sizeof(entry));
	deq_trim(&r->mx, sizeof(mono));
	deq_trim(&r->mn, sizeof(mono));
	tset_trim(&r->tokens);
	if (r->qs != NULL && tidei_qsk_bins(r->qs) == 0) {
		tidei_qsk_free(r->qs);
		r->qs = NULL;
	}
}

/* Evict the sliding entries at or before @p cut. */
static void
sliding_evict(tidei_ring *r, uint32_t aggs, int64_t cut)
{
	ring_evict(r, aggs, upper_bound(&r->e, sizeof(entry), cut), cut);
}

static int
sliding_add(tidei_ring *r, const tidei_win_spec *s, int64_t wm, int64_t t, double v, uint64_t h,
	    char *err)
{
	int64_t now = max64(r->latest, wm), cut = max64(now, t) - s->size_ns;
	entry x = { t, v, h };
	uint32_t stay;

	if (t <= now - s->size_ns)
		return TIDEI_WIN_LATE;
	stay = r->e.n - upper_bound(&r->e, sizeof x, cut);
	if (stay >= TIDEI_WIN_MAX_ENTRIES)
		return tidei_err(err, TIDE_EINVAL, "a sliding window holds at most %d entries",
				 TIDEI_WIN_MAX_ENTRIES);
	if (ring_reserve(r, s->aggs) != TIDE_OK)
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	r->latest = max64(r->latest, t);
	sliding_evict(r, s->aggs, cut);
	/* after the entries of the same time: ties stay in the order added */
	deq_insert(&r->e, sizeof x, upper_bound(&r->e, sizeof x, t), &x);
	ring_count(r, s->aggs, &x, t);
	ring_settle(r, s->aggs);
	ring_trim(r);
	return TIDE_OK;
}

static int
count_add(tidei_ring *r, const tidei_win_spec *s, int64_t t, double v, uint64_t h, char *err)
{
	entry x = { t, v, h };

	if (ring_reserve(r, s->aggs) != TIDE_OK)
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	if (r->e.n >= s->count)
		ring_evict(r, s->aggs, r->e.n - s->count + 1, (int64_t)(r->added - s->count));
	deq_insert(&r->e, sizeof x, r->e.n, &x);
	ring_count(r, s->aggs, &x, (int64_t)r->added++);
	ring_settle(r, s->aggs);
	ring_trim(r);
	return TIDE_OK;
}

int
tidei_ring_add(tidei_ring *r, const tidei_win_spec *s, int64_t wm, int64_t t, double v, uint64_t h,
	       char *err)
{
	if (s->kind == TIDEI_WIN_SLIDING)
		return sliding_add(r, s, wm, t, v, h, err);
	return count_add(r, s, t, v, h, err);
}

void
tidei_ring_advance(tidei_ring *r, const tidei_win_spec *s, int64_t wm)
{
	if (s->kind != TIDEI_WIN_SLIDING)
		return; /* count windows know no time */
	sliding_evict(r, s->aggs, max64(r->latest, wm) - s->size_ns);
	ring_settle(r, s->aggs);
	ring_trim(r);
}

void
tidei_ring_prefetch(const tidei_ring *r, int depth)
{
	if (depth == 0) {
		__builtin_prefetch(r);
		__builtin_prefetch((const char *)r + 64);
	} else if (r->e.p != NULL) {
		__builtin_prefetch(deq_at(&r->e, sizeof(entry), 0));
		if (r->e.n > 0)
			__builtin_prefetch(deq_at(&r->e, sizeof(entry), r->e.n - 1));
	}
}

void
tidei_ring_read(const tidei_ring *r, const tidei_win_spec *s, tidei_agg *o)
{
	tidei_acc a = { 0 };

	if (r->e.n == 0) {
		tidei_agg_empty(o, s);
		return;
	}
	a.n = r->e.n;
	a.sum = r->f.sum;
	a.c = r->f.c;
	rsums_moments(&r->f, r->e.n, &a.mean, &a.m2);
	a.qs = r->qs;
	if (r->mx.n > 0)
		a.max = ((const mono *)deq_at(&r->mx, sizeof(mono), 0))->v;
	if (r->mn.n > 0)
		a.min = ((const mono *)deq_at(&r->mn, sizeof(mono), 0))->v;
	tidei_agg_fill(o, &a, s);
	if (s->aggs & TIDEI_AGG_DISTINCT)
		o->distinct = r->tokens.used;
	o->start = ent(r, 0)->t;
	o->end = ent(r, r->e.n - 1)->t;
}

size_t
tidei_ring_size(void)
{
	return (sizeof(tidei_ring) + 7) & ~(size_t)7;
}

tidei_ring *
tidei_ring_init(void *p)
{
	tidei_ring *r = p;

	memset(r, 0, sizeof *r);
	r->latest = TIDEI_WIN_NONE;
	return r;
}

int
tidei_ring_empty(const tidei_ring *r)
{
	return r->e.n == 0;
}

void
tidei_ring_fini(tidei_ring *r)
{
	free(r->e.p);
	free(r->mx.p);
	free(r->mn.p);
	free(r->tokens.s);
	tidei_qsk_free(r->qs);
}

size_t
tidei_ring_memory(const tidei_ring *r)
{
	return (size_t)r->e.cap * sizeof(entry) + (size_t)(r->mx.cap + r->mn.cap) * sizeof(mono) +
	       (size_t)r->tokens.cap * sizeof(tcount) + tidei_qsk_memory(r->qs);
}

/* The entries, and the running figures that rounding made what they
 * are; deques, token counts and the sketch are rebuilt from the entries
 * (the sketch with its floor). */
void
tidei_ring_encode(const tidei_ring *r, const tidei_win_spec *s, tidei_buf *b)
{
	uint32_t aggs = s->aggs;
	int32_t floor = tidei_qsk_floor(r->qs);
	uint8_t tmp[8];

	tidei_put_i64(b, r->latest);
	tidei_put_u64(b, r->since);
	if (aggs & TIDEI_AGG_SUM) {
		tidei_put_f64(b, r->f.sum);
		tidei_put_f64(b, r->f.c);
	}
	if (aggs & TIDEI_WELFORD_AGGS) {
		tidei_put_f64(b, r->f.shift);
		tidei_put_f64(b, r->f.s1);
		tidei_put_f64(b, r->f.c1);
		tidei_put_f64(b, r->f.s2);
		tidei_put_f64(b, r->f.c2);
	}
	if (aggs & TIDEI_AGG_QUANTILE)
		tidei_put_i64(b, floor);
	tidei_put_u64(b, r->e.n);
	for (uint32_t i = 0; i < r->e.n; i++) {
		const entry *x = ent(r, i);

		if (i == 0)
			tidei_put_i64(b, x->t);
		else if (s->kind == TIDEI_WIN_SLIDING)
			tidei_put_u64(b, (uint64_t)(x->t - ent(r, i - 1)->t));
		else
			tidei_put_i64(b, x->t - ent(r, i - 1)->t);
		if (aggs & TIDEI_VALUE_AGGS)
			tidei_put_f64(b, x->v);
		if (aggs & TIDEI_AGG_DISTINCT) {
			tidei_st64(tmp, x->h);
			tidei_buf_put(b, tmp, 8);
		}
	}
}

/* One entry, checked: times within range (sliding: in order and inside
 * the window), values finite. */
static int
ring_decode_entry(const tidei_ring *r, const tidei_win_spec *s, int64_t wm, tidei_rd *rd, entry *x)
{
	const entry *prev = r->e.n ? ent(r, r->e.n - 1) : NULL;
	const uint8_t *h8;
	uint64_t step;
	int64_t d;

	if (prev == NULL) {
		x->t = tidei_get_i64(rd);
	} else if (s->kind == TIDEI_WIN_SLIDING) {
		step = tidei_get_u64(rd);
		if (step > (uint64_t)(TIDEI_WIN_TMAX - prev->t))
			return TIDE_EIO;
		x->t = prev->t + (int64_t)step;
	} else {
		d = tidei_get_i64(rd);
		if (d > TIDEI_WIN_TMAX - prev->t || d < TIDEI_WIN_TMIN - prev->t)
			return TIDE_EIO;
		x->t = prev->t + d;
	}
	x->v = (s->aggs & TIDEI_VALUE_AGGS) ? tidei_get_f64(rd) : 0;
	x->h = 0;
	if ((s->aggs & TIDEI_AGG_DISTINCT) && (h8 = tidei_get_bytes(rd, 8)) != NULL)
		x->h = tidei_ld64(h8);
	if (rd->bad || x->t < TIDEI_WIN_TMIN || x->t > TIDEI_WIN_TMAX || !isfinite(x->v))
		return TIDE_EIO;
	if (s->kind == TIDEI_WIN_SLIDING &&
	    (x->t > r->latest || x->t <= max64(r->latest, wm) - s->size_ns))
		return TIDE_EIO;
	return TIDE_OK;
}

int
tidei_ring_decode(tidei_ring *r, const tidei_win_spec *s, int64_t wm, tidei_rd *rd)
{
	uint32_t aggs = s->aggs;
	int sliding = s->kind == TIDEI_WIN_SLIDING;
	int64_t floor = TIDEI_QSK_NOFLOOR;
	rsums f = { 0 };
	uint64_t n, since;
	entry x;

	r->latest = tidei_get_i64(rd);
	since = tidei_get_u64(rd);
	if (aggs & TIDEI_AGG_SUM) {
		f.sum = tidei_get_f64(rd);
		f.c = tidei_get_f64(rd);
	}
	if (aggs & TIDEI_WELFORD_AGGS) {
		f.shift = tidei_get_f64(rd);
		f.s1 = tidei_get_f64(rd);
		f.c1 = tidei_get_f64(rd);
		f.s2 = tidei_get_f64(rd);
		f.c2 = tidei_get_f64(rd);
	}
	if (aggs & TIDEI_AGG_QUANTILE)
		floor = tidei_get_i64(rd);
	/* an entry takes at least one byte */
	n = tidei_get_count(rd, sliding ? TIDEI_WIN_MAX_ENTRIES : s->count, 1);
	if (rd->bad || !tidei_qsk_floor_valid(floor) || (n == 0 && floor != TIDEI_QSK_NOFLOOR))
		return TIDE_EIO;
	if (r->latest != TIDEI_WIN_NONE &&
	    (!sliding || r->latest < TIDEI_WIN_TMIN || r->latest > TIDEI_WIN_TMAX))
		return TIDE_EIO;
	if (n > 0 && (aggs & TIDEI_AGG_QUANTILE) &&
	    tidei_qsk_start(&r->qs, (int32_t)floor) != TIDE_OK)
		return TIDE_ENOMEM;
	for (uint32_t i = 0; i < n; i++) {
		if (ring_decode_entry(r, s, wm, rd, &x) != TIDE_OK)
			return TIDE_EIO;
		if (ring_reserve(r, aggs) != TIDE_OK)
			return TIDE_ENOMEM;
		deq_insert(&r->e, sizeof x, r->e.n, &x);
		ring_count(r, aggs, &x, sliding ? x.t : (int64_t)i);
	}
	r->added = n;
	r->f = f; /* as they were, rounding and all */
	r->since = since;
	return TIDE_OK;
}
