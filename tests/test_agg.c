/*
 * test_agg.c - keyed windows and aggregates (agg.h, sketch.h) against
 * brute force: random events with fixed seeds, some out of order and
 * some late, go through a window and through a plain list of the events
 * accepted; every read and every close must agree with what the list
 * gives when computed from scratch.  Then what the stored form promises:
 * decoding continues bit for bit where encoding left off, and damaged
 * bytes are refused without a crash.
 */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agg.h"
#include "err.h"
#include "helpers.h"
#include "sketch.h"

/* check's ck_assert records each assertion that passes (a write to the
 * runner), which the millions of comparisons here would spend most of
 * their time on: these test first and call check only to fail. */
#define need(c) \
	do { \
		if (!(c)) \
			ck_abort_msg("Assertion '%s' failed", #c); \
	} while (0)
#define need_msg(c, ...) \
	do { \
		if (!(c)) \
			ck_abort_msg(__VA_ARGS__); \
	} while (0)
#define need_cmp(a, op, b) \
	do { \
		long long a_ = (long long)(a), b_ = (long long)(b); \
		if (!(a_ op b_)) \
			ck_abort_msg("Assertion '%s %s %s' failed: %lld, %lld", #a, #op, #b, a_, \
				     b_); \
	} while (0)

#define NS 1000000000LL
#define MS 1000000LL
/* A realistic origin: November 2023. */
#define T0 (1700000000LL * NS)

typedef struct ev {
	int64_t t;
	double v;
	uint64_t tok;
	int64_t wm; /* panes: the watermark when it was added */
} ev;

typedef struct evs {
	ev *p;
	size_t n, cap;
} evs;

static void
evs_push(evs *a, ev e)
{
	if (a->n == a->cap) {
		a->cap = a->cap ? a->cap * 2 : 256;
		a->p = realloc(a->p, a->cap * sizeof *a->p);
		need(a->p != NULL);
	}
	a->p[a->n++] = e;
}

static tidei_win_spec
spec(int kind, int64_t size, int64_t hop, int64_t gap, uint32_t count, uint32_t aggs, double q)
{
	tidei_win_spec s;

	memset(&s, 0, sizeof s);
	s.kind = kind;
	s.size_ns = size;
	s.hop_ns = hop;
	s.gap_ns = gap;
	s.count = count;
	s.aggs = aggs;
	s.q = q;
	return s;
}

static tidei_win *
make(const tidei_win_spec *s)
{
	char err[TIDEI_ERRLEN];
	tidei_win *w;

	need_msg(tidei_win_spec_check(s, err) == TIDE_OK, "spec: %s", err);
	w = tidei_win_new(s);
	need(w != NULL);
	return w;
}

static double
urand(uint64_t *st)
{
	return (double)(th_rand(st) >> 11) * (1.0 / 9007199254740992.0);
}

/* A value with duplicates and a spread of magnitudes and signs. */
static double
rand_value(uint64_t *st)
{
	switch (th_rand(st) % 4) {
	case 0: return (double)(int64_t)th_rand_range(st, 0, 20); /* ties */
	case 1: return -50 + 100 * urand(st);
	case 2: return 1000 * urand(st);
	default: return exp(10 * urand(st)); /* 1 .. 22026 */
	}
}

static int
cmp_dbl(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

static void
near(double got, double want, double tol, const char *what, const char *where)
{
	need_msg(fabs(got - want) <= tol, "%s: %s is %.17g, expected %.17g (within %g)", where,
		 what, got, want, tol);
}

/* Relative error allowed to a HyperLogLog estimate: three standard
 * errors. */
#define HLL_TOL 0.14

/* Check @p a against the @p n events @p e computed from scratch.  With
 * @p exact, the distinct count must be exact (sliding and count windows;
 * the others are exact up to TIDEI_DSET_EXACT tokens). */
static void
check_agg(const tidei_agg *a, const ev *e, size_t n, const tidei_win_spec *s, int exact,
	  const char *where)
{
	uint32_t g = s->aggs;
	long double sum = 0, mag = 0, mean, m2 = 0;
	double *v, var, x;
	uint64_t *tok;
	size_t uniq = 0;

	need_msg(a->count == n, "%s: count %llu, expected %zu", where, (unsigned long long)a->count,
		 n);
	if (n == 0) {
		need_msg((g & TIDEI_AGG_SUM) ? a->sum == 0 : isnan(a->sum), "%s: sum", where);
		need(isnan(a->mean) && isnan(a->min) && isnan(a->max));
		need(isnan(a->variance) && isnan(a->stddev));
		need(isnan(a->distinct) && isnan(a->quantile));
		return;
	}
	v = malloc(n * sizeof *v);
	tok = malloc(n * sizeof *tok);
	need(v != NULL && tok != NULL);
	for (size_t i = 0; i < n; i++) {
		v[i] = e[i].v;
		tok[i] = e[i].tok;
		sum += e[i].v;
		mag += fabsl((long double)e[i].v);
	}
	mean = sum / n;
	for (size_t i = 0; i < n; i++)
		m2 += ((long double)e[i].v - mean) * ((long double)e[i].v - mean);
	var = n >= 2 ? (double)(m2 / (n - 1)) : 0;
	qsort(v, n, sizeof *v, cmp_dbl);
	qsort(tok, n, sizeof *tok, cmp_u64);
	for (size_t i = 0; i < n; i++)
		uniq += i == 0 || tok[i] != tok[i - 1];

	if (g & TIDEI_AGG_SUM)
		near(a->sum, (double)sum, 1e-9 * (double)(mag > 1 ? mag : 1), "sum", where);
	else
		need(isnan(a->sum));
	if (g & TIDEI_AGG_MEAN)
		near(a->mean, (double)mean, 1e-9 * (double)(mag / n > 1 ? mag / n : 1), "mean",
		     where);
	else
		need(isnan(a->mean));
	if (g & TIDEI_AGG_VARIANCE)
		near(a->variance, var, 1e-9 * (var > 1 ? var : 1), "variance", where);
	else
		need(isnan(a->variance));
	if (g & TIDEI_AGG_STDDEV)
		near(a->stddev, sqrt(var), 1e-9 * (var > 1 ? sqrt(var) : 1), "stddev", where);
	else
		need(isnan(a->stddev));
	if (g & TIDEI_AGG_MIN)
		need_msg(a->min == v[0], "%s: min %g, expected %g", where, a->min, v[0]);
	else
		need(isnan(a->min));
	if (g & TIDEI_AGG_MAX)
		need_msg(a->max == v[n - 1], "%s: max %g, expected %g", where, a->max, v[n - 1]);
	else
		need(isnan(a->max));
	if (!(g & TIDEI_AGG_DISTINCT))
		need(isnan(a->distinct));
	else if (exact || uniq <= TIDEI_DSET_EXACT)
		need_msg(a->distinct == (double)uniq, "%s: distinct %g, expected %zu", where,
			 a->distinct, uniq);
	else
		near(a->distinct, (double)uniq, HLL_TOL * (double)uniq, "distinct", where);
	if (g & TIDEI_AGG_QUANTILE) {
		x = v[(size_t)floor(s->q * (double)(n - 1))];
		near(a->quantile, x, TIDEI_QSK_ALPHA * fabs(x) * (1 + 1e-9), "quantile", where);
	} else {
		need(isnan(a->quantile));
	}
	free(v);
	free(tok);
}

/* The events of @p m with start <= t < end (start < t <= end with
 * @p open_left) into @p out. */
static void
select_range(const evs *m, int64_t start, int64_t end, int open_left, evs *out)
{
	out->n = 0;
	for (size_t i = 0; i < m->n; i++) {
		int64_t t = m->p[i].t;

		if (open_left ? (t > start && t <= end) : (t >= start && t < end))
			evs_push(out, m->p[i]);
	}
}

static int64_t
fdiv(int64_t a, int64_t b)
{
	return a / b - (a % b < 0);
}

/* ------------------------------------------------------------------------
 * Tumbling and hopping windows
 * ------------------------------------------------------------------------ */

typedef struct pane_run {
	const tidei_win_spec *s;
	int64_t H, R;
	evs model; /* accepted events */
	evs sel;
	int64_t wm, next_wm, last_end;
	unsigned char *closed; /* by window index - kbase */
	int64_t kbase, kn;
	size_t closes;
} pane_run;

static void
pane_closed(void *ud, const tidei_agg *a)
{
	pane_run *r = ud;
	int64_t k = a->start / r->H;
	char where[96];

	snprintf(where, sizeof where, "window [%lld, %lld) closed at %lld", (long long)a->start,
		 (long long)a->end, (long long)r->next_wm);
	need_msg(a->start % r->H == 0 && a->end - a->start == r->s->size_ns, "%s", where);
	need_msg(a->end > r->wm && a->end <= r->next_wm, "%s: not due", where);
	need_msg(a->end > r->last_end, "%s: out of order", where);
	need_msg(k - r->kbase >= 0 && k - r->kbase < r->kn, "%s: index", where);
	need_msg(!r->closed[k - r->kbase], "%s: closed twice", where);
	need_msg(a->count > 0, "%s: closed empty", where);
	r->closed[k - r->kbase] = 1;
	r->last_end = a->end;
	r->closes++;
	select_range(&r->model, a->start, a->end, 0, &r->sel);
	check_agg(a, r->sel.p, r->sel.n, r->s, 0, where);
}

static void
pane_advance_to(pane_run *r, tidei_win *w, int64_t wm)
{
	int64_t next = INT64_MAX;

	r->next_wm = wm;
	need_cmp(tidei_win_advance(w, r->s, wm, pane_closed, r), ==, TIDE_OK);
	if (wm > r->wm)
		r->wm = wm;
	/* every window of every event that is due has closed; the next to
	 * close is the earliest of the others */
	for (size_t i = 0; i < r->model.n; i++) {
		int64_t p = fdiv(r->model.p[i].t, r->H);

		for (int64_t k = p - r->R + 1; k <= p; k++) {
			int64_t end = k * r->H + r->s->size_ns;

			if (end <= r->model.p[i].wm)
				continue; /* closed before the event came, maybe empty */
			if (end <= r->wm)
				need_msg(r->closed[k - r->kbase], "window %lld never closed",
					 (long long)k);
			else if (end < next)
				next = end;
		}
	}
	need(tidei_win_next_close(w, r->s) == (r->wm == INT64_MAX ? INT64_MAX : next));
}

/* What tidei_win_read() shows for t: the earliest open window holding
 * it (or the last one when all closed). */
static void
pane_check_read(pane_run *r, const tidei_win *w, int64_t t)
{
	int64_t p = fdiv(t, r->H), kc, k;
	tidei_agg a;
	char where[64];

	kc = r->wm == INT64_MIN ? INT64_MIN / 2 : fdiv(r->wm - r->s->size_ns, r->H);
	k = p - r->R + 1 > kc + 1 ? p - r->R + 1 : kc + 1;
	if (k > p)
		k = p;
	need_cmp(tidei_win_read(w, r->s, t, &a), ==, TIDE_OK);
	need(a.start == k * r->H && a.end == k * r->H + r->s->size_ns);
	snprintf(where, sizeof where, "read at %lld", (long long)t);
	/* a window closed before some of its events came misses them; read
	 * only open windows against the model */
	if (a.end > r->wm) {
		select_range(&r->model, a.start, a.end, 0, &r->sel);
		check_agg(&a, r->sel.p, r->sel.n, r->s, 0, where);
	}
}

static void
run_panes(const tidei_win_spec *s, uint64_t seed, size_t nevents)
{
	pane_run r;
	tidei_win *w = make(s);
	int64_t clock = T0, lateness = 200 * MS;
	size_t late = 0;

	memset(&r, 0, sizeof r);
	r.s = s;
	r.H = s->kind == TIDEI_WIN_HOPPING ? s->hop_ns : s->size_ns;
	r.R = s->size_ns / r.H;
	r.wm = INT64_MIN;
	r.last_end = INT64_MIN;
	r.kbase = fdiv(T0 - 10 * NS, r.H) - r.R; /* no event is 10 s before T0 */
	r.kn = (int64_t)(nevents * 40 * MS + 20 * NS) / r.H + 2 * r.R + 10;
	r.closed = calloc((size_t)r.kn, 1);
	need(r.closed != NULL);
	for (size_t i = 0; i < nevents; i++) {
		int64_t back = th_rand(&seed) % 20 == 0
				       ? (int64_t)th_rand_range(&seed, 0, 4000) * MS
				       : (int64_t)th_rand_range(&seed, 0, 200) * MS;
		ev e = { clock - back, rand_value(&seed), th_rand_range(&seed, 0, 150), r.wm };
		int64_t end = fdiv(e.t, r.H) * r.H + s->size_ns;
		int rc = tidei_win_add(w, s, e.t, e.v, e.tok, NULL);

		need_cmp(rc, ==, end <= r.wm ? TIDEI_WIN_LATE : TIDE_OK);
		if (rc == TIDE_OK)
			evs_push(&r.model, e);
		else
			late++;
		if (i % 5 == 0)
			pane_check_read(&r, w, e.t);
		if (i % 16 == 15)
			pane_advance_to(&r, w, clock - lateness);
		clock += (int64_t)th_rand_range(&seed, 0, 40) * MS;
	}
	need_msg(late > 0 && late < nevents / 10, "%zu late", late);
	pane_advance_to(&r, w, INT64_MAX);
	need(tidei_win_empty(w));
	need(r.closes * (uint64_t)r.H * 4 > nevents * 20 * MS);
	tidei_win_free(w);
	free(r.model.p);
	free(r.sel.p);
	free(r.closed);
}

START_TEST(tumbling_model)
{
	tidei_win_spec s = spec(TIDEI_WIN_TUMBLING, 1 * NS, 0, 0, 0, TIDEI_AGG_ALL, 0.9);

	run_panes(&s, 11, 4000);
	s.aggs = TIDEI_AGG_COUNT | TIDEI_AGG_MAX;
	run_panes(&s, 12, 1000);
}
END_TEST

START_TEST(hopping_model)
{
	tidei_win_spec s = spec(TIDEI_WIN_HOPPING, 1 * NS, 250 * MS, 0, 0, TIDEI_AGG_ALL, 0.5);

	run_panes(&s, 21, 4000);
	s = spec(TIDEI_WIN_HOPPING, 3 * NS, 100 * MS, 0, 0, TIDEI_AGG_SUM | TIDEI_AGG_QUANTILE,
		 0.99);
	run_panes(&s, 22, 2000);
}
END_TEST

/* Small cases worked by hand. */
typedef struct closes {
	tidei_agg a[64];
	int n;
} closes;

static void
collect(void *ud, const tidei_agg *a)
{
	closes *c = ud;

	need_cmp(c->n, <, 64);
	c->a[c->n++] = *a;
}

START_TEST(tumbling_by_hand)
{
	tidei_win_spec s = spec(TIDEI_WIN_TUMBLING, 10 * NS, 0, 0, 0,
				TIDEI_AGG_SUM | TIDEI_AGG_MIN | TIDEI_AGG_MEAN, 0);
	tidei_win *w = make(&s);
	closes c = { .n = 0 };
	tidei_agg a;

	need(tidei_win_empty(w));
	need(tidei_win_next_close(w, &s) == INT64_MAX);
	need_cmp(tidei_win_add(w, &s, 1 * NS, 2, 0, NULL), ==, TIDE_OK);
	need_cmp(tidei_win_add(w, &s, 12 * NS, 7, 0, NULL), ==, TIDE_OK); /* next window */
	need_cmp(tidei_win_add(w, &s, 9 * NS, 4, 0, NULL), ==, TIDE_OK);  /* out of order */
	need(tidei_win_next_close(w, &s) == 10 * NS);
	need_cmp(tidei_win_read(w, &s, 5 * NS, &a), ==, TIDE_OK);
	need(a.count == 2 && a.sum == 6 && a.min == 2 && a.mean == 3);
	need(a.start == 0 && a.end == 10 * NS);
	need(isnan(a.max) && isnan(a.variance));
	need_cmp(tidei_win_read(w, &s, 25 * NS, &a), ==, TIDE_OK); /* nothing there yet */
	need(a.count == 0 && a.sum == 0 && isnan(a.mean));
	need(a.start == 20 * NS && a.end == 30 * NS);

	need_cmp(tidei_win_advance(w, &s, 10 * NS - 1, collect, &c), ==, TIDE_OK);
	need_cmp(c.n, ==, 0);
	need_cmp(tidei_win_advance(w, &s, 10 * NS, collect, &c), ==, TIDE_OK);
	need_cmp(c.n, ==, 1);
	need(c.a[0].count == 2 && c.a[0].sum == 6 && c.a[0].start == 0);
	/* closed: late; the open one still takes events from before the watermark */
	need_cmp(tidei_win_add(w, &s, 9 * NS, 1, 0, NULL), ==, TIDEI_WIN_LATE);
	need_cmp(tidei_win_advance(w, &s, 5 * NS, collect, &c), ==, TIDE_OK); /* backwards */
	need_cmp(tidei_win_add(w, &s, 10 * NS, 1, 0, NULL), ==, TIDE_OK);
	need_cmp(tidei_win_advance(w, &s, 40 * NS, collect, &c), ==, TIDE_OK);
	need_cmp(c.n, ==, 2);
	need(c.a[1].count == 2 && c.a[1].sum == 8 && c.a[1].start == 10 * NS);
	need(tidei_win_empty(w));
	tidei_win_free(w);
}
END_TEST

START_TEST(hopping_by_hand)
{
	/* 3 s windows every second: an event at 2.5 s is in [0,3), [1,4), [2,5) */
	tidei_win_spec s = spec(TIDEI_WIN_HOPPING, 3 * NS, 1 * NS, 0, 0, TIDEI_AGG_SUM, 0);
	tidei_win *w = make(&s);
	closes c = { .n = 0 };
	tidei_agg a;

	need_cmp(tidei_win_add(w, &s, 2500 * MS, 1, 0, NULL), ==, TIDE_OK);
	need_cmp(tidei_win_add(w, &s, 3500 * MS, 10, 0, NULL), ==, TIDE_OK);
	need(tidei_win_next_close(w, &s) == 3 * NS);
	/* read at 3.5 s: [1,4) holds both */
	need_cmp(tidei_win_read(w, &s, 3500 * MS, &a), ==, TIDE_OK);
	need(a.start == 1 * NS && a.count == 2 && a.sum == 11);
	need_cmp(tidei_win_advance(w, &s, 100 * NS, collect, &c), ==, TIDE_OK);
	need_cmp(c.n, ==, 4); /* [0,3) [1,4) [2,5) [3,6) */
	need(c.a[0].start == 0 && c.a[0].sum == 1);
	need(c.a[1].start == 1 * NS && c.a[1].sum == 11);
	need(c.a[2].start == 2 * NS && c.a[2].sum == 11);
	need(c.a[3].start == 3 * NS && c.a[3].sum == 10 && c.a[3].end == 6 * NS);
	/* a pane is late only when its last window closed: at 201 s
	 * [198, 201) closes, pane 199 is still in [199, 202) */
	c.n = 0;
	need_cmp(tidei_win_add(w, &s, 200 * NS, 1, 0, NULL), ==, TIDE_OK);
	need_cmp(tidei_win_advance(w, &s, 201 * NS, collect, &c), ==, TIDE_OK);
	need_cmp(c.n, ==, 1);
	need(c.a[0].start == 198 * NS && c.a[0].count == 1);
	need_cmp(tidei_win_advance(w, &s, 201 * NS + 1, collect, &c), ==, TIDE_OK);
	need_cmp(c.n, ==, 1);
	need_cmp(tidei_win_add(w, &s, 199 * NS, 1, 0, NULL), ==, TIDE_OK);
	need_cmp(tidei_win_add(w, &s, 198 * NS, 1, 0, NULL), ==, TIDEI_WIN_LATE);
	need_cmp(tidei_win_read(w, &s, 199 * NS, &a), ==, TIDE_OK);
	need(a.start == 199 * NS && a.count == 2);
	tidei_win_free(w);
}
END_TEST

/* ------------------------------------------------------------------------
 * Sliding and count windows
 * ------------------------------------------------------------------------ */

static void
check_ring_read(const tidei_win *w, const tidei_win_spec *s, const evs *win, const char *where)
{
	tidei_agg a;
	int64_t lo = INT64_MAX, hi = INT64_MIN;

	need_cmp(tidei_win_read(w, s, 0, &a), ==, TIDE_OK);
	check_agg(&a, win->p, win->n, s, 1, where);
	if (win->n == 0)
		return;
	if (s->kind == TIDEI_WIN_SLIDING) {
		for (size_t i = 0; i < win->n; i++) {
			lo = win->p[i].t < lo ? win->p[i].t : lo;
			hi = win->p[i].t > hi ? win->p[i].t : hi;
		}
	} else {
		lo = win->p[0].t;
		hi = win->p[win->n - 1].t;
	}
	need_msg(a.start == lo && a.end == hi, "%s: bounds", where);
}

static void
run_sliding(const tidei_win_spec *s, uint64_t seed, size_t nevents)
{
	tidei_win *w = make(s);
	int64_t clock = T0, latest = INT64_MIN, wm = INT64_MIN, cut;
	evs model = { 0 }, win = { 0 };
	char where[64];
	size_t late = 0;

	for (size_t i = 0; i < nevents; i++) {
		int64_t back = th_rand(&seed) % 20 == 0
				       ? (int64_t)th_rand_range(&seed, 0, 3000) * MS
				       : (int64_t)th_rand_range(&seed, 0, 300) * MS;
		ev e = { clock - back, rand_value(&seed), th_rand_range(&seed, 0, 60), 0 };
		int64_t now = latest > wm ? latest : wm;
		int rc = tidei_win_add(w, s, e.t, e.v, e.tok, NULL);

		snprintf(where, sizeof where, "sliding, event %zu", i);
		need_msg(rc == (now != INT64_MIN && e.t <= now - s->size_ns ? TIDEI_WIN_LATE
									    : TIDE_OK),
			 "%s: %d", where, rc);
		if (rc == TIDE_OK) {
			evs_push(&model, e);
			latest = e.t > latest ? e.t : latest;
		} else {
			late++;
		}
		if (i % 16 == 15)
			need_cmp(tidei_win_advance(w, s, wm = clock - 300 * MS, NULL, NULL), ==,
				 TIDE_OK);
		cut = (latest > wm ? latest : wm) - s->size_ns;
		select_range(&model, cut, INT64_MAX, 1, &win);
		check_ring_read(w, s, &win, where);
		if (model.n > 4 * win.n + 1000) { /* forget what can never return */
			memcpy(model.p, win.p, win.n * sizeof *win.p);
			model.n = win.n;
		}
		clock += (int64_t)th_rand_range(&seed, 0, 20) * MS;
	}
	need(late > 0);
	need_cmp(tidei_win_advance(w, s, clock + s->size_ns, NULL, NULL), ==, TIDE_OK);
	need(tidei_win_empty(w));
	need(tidei_win_next_close(w, s) == INT64_MAX);
	tidei_win_free(w);
	free(model.p);
	free(win.p);
}

START_TEST(sliding_model)
{
	tidei_win_spec s = spec(TIDEI_WIN_SLIDING, 2 * NS, 0, 0, 0, TIDEI_AGG_ALL, 0.75);

	run_sliding(&s, 31, 5000);
	s.aggs = TIDEI_AGG_COUNT | TIDEI_AGG_MIN | TIDEI_AGG_DISTINCT;
	s.size_ns = 500 * MS;
	run_sliding(&s, 32, 3000);
}
END_TEST

START_TEST(count_model)
{
	tidei_win_spec s = spec(TIDEI_WIN_COUNT, 0, 0, 0, 50, TIDEI_AGG_ALL, 0.1);
	tidei_win *w = make(&s);
	uint64_t seed = 41;
	evs model = { 0 }, win = { 0 };
	char where[64];

	for (size_t i = 0; i < 4000; i++) {
		ev e = { T0 + (int64_t)th_rand_range(&seed, 0, 100000) * MS, rand_value(&seed),
			 th_rand_range(&seed, 0, 80), 0 };

		need_cmp(tidei_win_add(w, &s, e.t, e.v, e.tok, NULL), ==, TIDE_OK);
		evs_push(&model, e);
		if (i % 100 == 0) /* watermarks do not matter to count windows */
			need_cmp(tidei_win_advance(w, &s, e.t + 100 * NS, NULL, NULL), ==, TIDE_OK);
		win.n = 0;
		for (size_t j = model.n > 50 ? model.n - 50 : 0; j < model.n; j++)
			evs_push(&win, model.p[j]);
		snprintf(where, sizeof where, "count, event %zu", i);
		check_ring_read(w, &s, &win, where);
	}
	tidei_win_free(w);
	free(model.p);
	free(win.p);
}
END_TEST

/* Values that defeat running figures: a huge value passing through a
 * window of small ones, a jump of level, a long run far from zero with a
 * tiny spread.  Windows of 1000 entries (t = i for sliding ones). */
static double
numeric_value(int kind, uint64_t *seed, int64_t i)
{
	switch (kind) {
	case 0: return i % 2500 == 17 ? 1e12 : urand(seed);          /* spikes */
	case 1: return i < 1500 ? urand(seed) : 1e9 + urand(seed);   /* a jump */
	case 2: return i % 3000 < 1500 ? -1e6 : 1e6 + urand(seed);   /* flips */
	default: return 1e9 + urand(seed) * (i % 7 == 0 ? 1e-3 : 1); /* far */
	}
}

static void
run_numeric(int wkind, int vkind, int64_t n)
{
	tidei_win_spec s =
		spec(wkind, 1000, 0, 0, 1000,
		     TIDEI_AGG_SUM | TIDEI_AGG_MEAN | TIDEI_AGG_VARIANCE | TIDEI_AGG_STDDEV, 0);
	tidei_win *w = make(&s);
	uint64_t seed = 53 + (uint64_t)vkind;
	evs model = { 0 }, win = { 0 };
	char where[64];
	tidei_agg a;

	for (int64_t i = 0; i < n; i++) {
		ev e = { i, numeric_value(vkind, &seed, i), 0, 0 };

		need_cmp(tidei_win_add(w, &s, e.t, e.v, 0, NULL), ==, TIDE_OK);
		evs_push(&model, e);
		if (i % 97 != 0 && i < n - 1)
			continue;
		win.n = 0;
		for (size_t j = model.n > 1000 ? model.n - 1000 : 0; j < model.n; j++)
			evs_push(&win, model.p[j]);
		need_cmp(tidei_win_read(w, &s, 0, &a), ==, TIDE_OK);
		snprintf(where, sizeof where, "kind %d, values %d, event %lld", wkind, vkind,
			 (long long)i);
		check_agg(&a, win.p, win.n, &s, 1, where);
		if (model.n > 100000) {
			memmove(model.p, model.p + model.n - 1000, 1000 * sizeof *model.p);
			model.n = 1000;
		}
	}
	tidei_win_free(w);
	free(model.p);
	free(win.p);
}

START_TEST(ring_numerics)
{
	for (int v = 0; v < 4; v++) {
		run_numeric(TIDEI_WIN_SLIDING, v, v == 3 ? 3000000 : 20000);
		run_numeric(TIDEI_WIN_COUNT, v, 20000);
	}
}
END_TEST

START_TEST(sliding_by_hand)
{
	tidei_win_spec s = spec(TIDEI_WIN_SLIDING, 10 * NS, 0, 0, 0,
				TIDEI_AGG_SUM | TIDEI_AGG_MIN | TIDEI_AGG_MAX, 0);
	tidei_win *w = make(&s);
	tidei_agg a;

	need_cmp(tidei_win_add(w, &s, 100 * NS, 5, 0, NULL), ==, TIDE_OK);
	need_cmp(tidei_win_add(w, &s, 105 * NS, 9, 0, NULL), ==, TIDE_OK);
	need_cmp(tidei_win_add(w, &s, 102 * NS, 1, 0, NULL), ==, TIDE_OK); /* out of order */
	need_cmp(tidei_win_read(w, &s, 0, &a), ==, TIDE_OK);
	need(a.count == 3 && a.sum == 15 && a.min == 1 && a.max == 9);
	need(a.start == 100 * NS && a.end == 105 * NS);
	/* (t_latest - 10 s, t_latest]: 111 evicts 100; 95 is too old */
	need_cmp(tidei_win_add(w, &s, 111 * NS, 2, 0, NULL), ==, TIDE_OK);
	need_cmp(tidei_win_add(w, &s, 101 * NS, 2, 0, NULL), ==, TIDEI_WIN_LATE);
	need_cmp(tidei_win_read(w, &s, 0, &a), ==, TIDE_OK);
	need(a.count == 3 && a.sum == 12 && a.min == 1 && a.start == 102 * NS);
	/* the watermark evicts too */
	need_cmp(tidei_win_advance(w, &s, 113 * NS, NULL, NULL), ==, TIDE_OK);
	need_cmp(tidei_win_read(w, &s, 0, &a), ==, TIDE_OK);
	need(a.count == 2 && a.sum == 11 && a.min == 2 && a.max == 9);
	need_cmp(tidei_win_add(w, &s, 103 * NS, 2, 0, NULL), ==, TIDEI_WIN_LATE);
	need_cmp(tidei_win_advance(w, &s, 200 * NS, NULL, NULL), ==, TIDE_OK);
	need(tidei_win_empty(w));
	need_cmp(tidei_win_read(w, &s, 0, &a), ==, TIDE_OK);
	need(a.count == 0 && a.sum == 0 && isnan(a.min) && a.start == 0 && a.end == 0);
	tidei_win_free(w);
}
END_TEST

START_TEST(sliding_cap)
{
	tidei_win_spec s = spec(TIDEI_WIN_SLIDING, TIDEI_WIN_MAX_SPAN, 0, 0, 0, TIDEI_AGG_COUNT, 0);
	tidei_win *w = make(&s);
	char err[TIDEI_ERRLEN];
	tidei_agg a;

	for (int64_t i = 0; i < TIDEI_WIN_MAX_ENTRIES; i++)
		need_cmp(tidei_win_add(w, &s, i, 0, 0, err), ==, TIDE_OK);
	need_cmp(tidei_win_add(w, &s, TIDEI_WIN_MAX_ENTRIES, 0, 0, err), ==, TIDE_EINVAL);
	need_msg(strstr(err, "at most 1000000 entries") != NULL, "%s", err);
	need_cmp(tidei_win_read(w, &s, 0, &a), ==, TIDE_OK);
	need_cmp(a.count, ==, TIDEI_WIN_MAX_ENTRIES);
	/* once time moves on, entries leave and room comes back */
	need_cmp(tidei_win_add(w, &s, TIDEI_WIN_MAX_SPAN + 10, 0, 0, err), ==, TIDE_OK);
	need_cmp(tidei_win_read(w, &s, 0, &a), ==, TIDE_OK);
	need_cmp(a.count, ==, TIDEI_WIN_MAX_ENTRIES - 10);
	tidei_win_free(w);
}
END_TEST

/* ------------------------------------------------------------------------
 * Sessions
 * ------------------------------------------------------------------------ */

typedef struct session_run {
	const tidei_win_spec *s;
	evs open; /* accepted events whose session has not closed, by time */
	evs sel;
	int64_t wm, next_wm;
	size_t closes, expect_from;
	evs expect; /* the sessions due, as [first, last] in .t and .tok */
} session_run;

static void
open_insert(evs *o, ev e)
{
	size_t i = o->n;

	evs_push(o, e);
	while (i > 0 && o->p[i - 1].t > e.t) { /* stable: ties stay in arrival order */
		o->p[i] = o->p[i - 1];
		i--;
	}
	o->p[i] = e;
}

/* The sessions of the open events: runs with gaps below the gap. */
static size_t
session_end(const evs *o, size_t from, int64_t gap)
{
	size_t j = from + 1;

	while (j < o->n && o->p[j].t - o->p[j - 1].t < gap)
		j++;
	return j;
}

static void
session_closed(void *ud, const tidei_agg *a)
{
	session_run *r = ud;
	size_t from = r->expect_from, to;
	char where[96];

	snprintf(where, sizeof where, "session [%lld, %lld] closed at %lld", (long long)a->start,
		 (long long)a->end, (long long)r->next_wm);
	need_msg(from < r->open.n, "%s: unexpected", where);
	to = session_end(&r->open, from, r->s->gap_ns);
	need_msg(r->open.p[to - 1].t + r->s->gap_ns <= r->next_wm, "%s: not due", where);
	need_msg(a->start == r->open.p[from].t && a->end == r->open.p[to - 1].t, "%s: bounds",
		 where);
	check_agg(a, r->open.p + from, to - from, r->s, 0, where);
	r->expect_from = to;
	r->closes++;
}

static void
session_advance_to(session_run *r, tidei_win *w, int64_t wm)
{
	size_t to;

	r->next_wm = wm;
	r->expect_from = 0;
	need_cmp(tidei_win_advance(w, r->s, wm, session_closed, r), ==, TIDE_OK);
	/* nothing due is left open */
	if (r->expect_from < r->open.n) {
		to = session_end(&r->open, r->expect_from, r->s->gap_ns);
		need(r->open.p[to - 1].t + r->s->gap_ns > wm);
		need(tidei_win_next_close(w, r->s) == r->open.p[to - 1].t + r->s->gap_ns);
	} else {
		need(tidei_win_next_close(w, r->s) == INT64_MAX);
	}
	memmove(r->open.p, r->open.p + r->expect_from,
		(r->open.n - r->expect_from) * sizeof *r->open.p);
	r->open.n -= r->expect_from;
	if (wm > r->wm)
		r->wm = wm;
}

/* Reading at an event's time gives its session. */
static void
session_check_read(session_run *r, const tidei_win *w, int64_t t)
{
	size_t from = 0, to;
	tidei_agg a;

	need_cmp(tidei_win_read(w, r->s, t, &a), ==, TIDE_OK);
	for (;;) {
		need(from < r->open.n);
		to = session_end(&r->open, from, r->s->gap_ns);
		if (r->open.p[to - 1].t >= t)
			break;
		from = to;
	}
	need(a.start == r->open.p[from].t && a.end == r->open.p[to - 1].t);
	check_agg(&a, r->open.p + from, to - from, r->s, 0, "session read");
}

START_TEST(session_model)
{
	tidei_win_spec s = spec(TIDEI_WIN_SESSION, 0, 0, 300 * MS, 0, TIDEI_AGG_ALL, 0.5);
	tidei_win *w = make(&s);
	session_run r;
	uint64_t seed = 61;
	int64_t clock = T0;
	size_t late = 0, merges = 0;
	tidei_agg a;

	memset(&r, 0, sizeof r);
	r.s = &s;
	r.wm = INT64_MIN;
	for (size_t i = 0; i < 5000; i++) {
		int64_t back = th_rand(&seed) % 10 == 0
				       ? (int64_t)th_rand_range(&seed, 0, 2000) * MS
				       : (int64_t)th_rand_range(&seed, 0, 400) * MS;
		ev e = { clock - back, rand_value(&seed), th_rand_range(&seed, 0, 100), 0 };
		int reach = 0, rc;
		size_t before = 0;

		for (size_t j = 0; j < r.open.n; j++) {
			int64_t d = r.open.p[j].t - e.t;

			reach |= (d < 0 ? -d : d) < s.gap_ns;
			before += j == 0 || r.open.p[j].t - r.open.p[j - 1].t >= s.gap_ns;
		}
		rc = tidei_win_add(w, &s, e.t, e.v, e.tok, NULL);
		need_cmp(rc, ==,
			 !reach && r.wm != INT64_MIN && e.t + s.gap_ns <= r.wm ? TIDEI_WIN_LATE
									       : TIDE_OK);
		if (rc != TIDE_OK) {
			late++;
		} else {
			size_t after = 0;

			open_insert(&r.open, e);
			for (size_t j = 0; j < r.open.n; j++)
				after += j == 0 || r.open.p[j].t - r.open.p[j - 1].t >= s.gap_ns;
			merges += after < before;
			if (i % 3 == 0)
				session_check_read(&r, w, e.t);
		}
		if (i % 8 == 7)
			session_advance_to(&r, w, clock - 500 * MS);
		/* bursts, then pauses longer than the gap */
		clock += th_rand(&seed) % 8 == 0 ? (int64_t)th_rand_range(&seed, 200, 1500) * MS
						 : (int64_t)th_rand_range(&seed, 0, 60) * MS;
	}
	need_msg(late > 0 && merges > 10, "%zu late, %zu merges", late, merges);
	/* between sessions nothing is read */
	need_cmp(tidei_win_read(w, &s, clock + 100 * NS, &a), ==, TIDE_OK);
	need(a.count == 0);
	session_advance_to(&r, w, INT64_MAX);
	need(tidei_win_empty(w) && r.open.n == 0);
	need(r.closes > 100);
	tidei_win_free(w);
	free(r.open.p);
	free(r.sel.p);
}
END_TEST

START_TEST(session_by_hand)
{
	tidei_win_spec s = spec(TIDEI_WIN_SESSION, 0, 0, 3 * NS, 0, TIDEI_AGG_SUM, 0);
	tidei_win *w = make(&s);
	closes c = { .n = 0 };
	tidei_agg a;

	need_cmp(tidei_win_add(w, &s, 0, 1, 0, NULL), ==, TIDE_OK);
	need_cmp(tidei_win_add(w, &s, 1 * NS, 1, 0, NULL), ==, TIDE_OK);
	need_cmp(tidei_win_add(w, &s, 5 * NS, 10, 0, NULL), ==, TIDE_OK);
	need_cmp(tidei_win_add(w, &s, 6 * NS, 10, 0, NULL), ==, TIDE_OK);
	need_cmp(tidei_win_read(w, &s, 0, &a), ==, TIDE_OK);
	need(a.count == 2 && a.sum == 2 && a.start == 0 && a.end == 1 * NS);
	need(tidei_win_next_close(w, &s) == 4 * NS);
	/* 3 s is within the gap of both 1 s and 5 s: one session */
	need_cmp(tidei_win_add(w, &s, 3 * NS, 100, 0, NULL), ==, TIDE_OK);
	need_cmp(tidei_win_read(w, &s, 3 * NS, &a), ==, TIDE_OK);
	need(a.count == 5 && a.sum == 122 && a.start == 0 && a.end == 6 * NS);
	need(tidei_win_next_close(w, &s) == 9 * NS);
	need_cmp(tidei_win_advance(w, &s, 9 * NS - 1, collect, &c), ==, TIDE_OK);
	need_cmp(c.n, ==, 0);
	/* exactly a gap after the last: a new session, and closing time */
	need_cmp(tidei_win_add(w, &s, 9 * NS, 7, 0, NULL), ==, TIDE_OK);
	need_cmp(tidei_win_advance(w, &s, 9 * NS, collect, &c), ==, TIDE_OK);
	need_cmp(c.n, ==, 1);
	need(c.a[0].count == 5 && c.a[0].sum == 122 && c.a[0].end == 6 * NS);
	/* before the watermark but within the gap of an open session: joins */
	need_cmp(tidei_win_add(w, &s, 6500 * MS, 1, 0, NULL), ==, TIDE_OK);
	need_cmp(tidei_win_add(w, &s, 3 * NS, 1, 0, NULL), ==, TIDEI_WIN_LATE);
	need_cmp(tidei_win_read(w, &s, 9 * NS, &a), ==, TIDE_OK);
	need(a.count == 2 && a.start == 6500 * MS);
	need_cmp(tidei_win_advance(w, &s, INT64_MAX, collect, &c), ==, TIDE_OK);
	need_cmp(c.n, ==, 2);
	need(tidei_win_empty(w));
	tidei_win_free(w);
}
END_TEST

/* ------------------------------------------------------------------------
 * Sketch accuracy
 * ------------------------------------------------------------------------ */

START_TEST(distinct_accuracy)
{
	tidei_win_spec s = spec(TIDEI_WIN_TUMBLING, NS, 0, 0, 0, TIDEI_AGG_DISTINCT, 0);
	const size_t sizes[] = { 10, 40, 41, 100, 1000, 5000, 100000 };
	double total_err = 0;
	int runs = 0;

	for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
		for (uint64_t seed = 1; seed <= 10; seed++) {
			tidei_win *w = make(&s);
			uint64_t st = seed * 977 + k;
			tidei_agg a;
			double err;

			for (size_t i = 0; i < sizes[k]; i++) /* each twice */
				for (int rep = 0; rep < 2; rep++)
					need_cmp(tidei_win_add(w, &s, 0, 0, i * 0x9e37 + (st << 32),
							       NULL),
						 ==, TIDE_OK);
			need_cmp(tidei_win_read(w, &s, 0, &a), ==, TIDE_OK);
			err = fabs(a.distinct - (double)sizes[k]) / (double)sizes[k];
			if (sizes[k] <= TIDEI_DSET_EXACT)
				need(err == 0);
			need_msg(err < HLL_TOL, "%zu distinct: %g", sizes[k], a.distinct);
			if (sizes[k] > TIDEI_DSET_EXACT) {
				total_err += err;
				runs++;
			}
			need_cmp(tidei_win_memory(w), <=, 32 + 88 + 8 + 8 * TIDEI_DSET_EXACT);
			tidei_win_free(w);
		}
	}
	need_msg(total_err / runs < 0.05, "mean error %g", total_err / runs);
}
END_TEST

START_TEST(quantile_accuracy)
{
	const double qs[] = { 0, 0.01, 0.25, 0.5, 0.9, 0.99, 0.999, 1 };

	for (size_t k = 0; k < sizeof qs / sizeof qs[0]; k++) {
		tidei_win_spec s = spec(TIDEI_WIN_TUMBLING, NS, 0, 0, 0, TIDEI_AGG_QUANTILE, qs[k]);
		tidei_win *w = make(&s);
		uint64_t seed = 71 + k;
		evs all = { 0 };
		tidei_agg a;

		for (int i = 0; i < 50000; i++) {
			/* lognormal-ish latencies, some negative values and zeros */
			double v = exp(3 * (urand(&seed) + urand(&seed) + urand(&seed) - 1.5));
			ev e = { 0,
				 th_rand(&seed) % 50 == 0   ? -v
				 : th_rand(&seed) % 97 == 0 ? 0
							    : v,
				 0, 0 };

			need_cmp(tidei_win_add(w, &s, 0, e.v, 0, NULL), ==, TIDE_OK);
			evs_push(&all, e);
		}
		need_cmp(tidei_win_read(w, &s, 0, &a), ==, TIDE_OK);
		check_agg(&a, all.p, all.n, &s, 1, "quantile");
		/* a bounded sketch: a few hundred buckets here */
		need_cmp(tidei_win_memory(w), <, 20000);
		tidei_win_free(w);
		free(all.p);
	}
}
END_TEST

/* Values spread over more decades than the buckets cover: the lowest
 * merge, the high quantiles stay within the accuracy. */
START_TEST(quantile_collapse)
{
	tidei_win_spec s = spec(TIDEI_WIN_SLIDING, 1000000, 0, 0, 0, TIDEI_AGG_QUANTILE, 0.99);
	tidei_win *w = make(&s);
	uint64_t seed = 81;
	evs all = { 0 };
	tidei_agg a;

	for (int i = 0; i < 20000; i++) {
		ev e = { i, exp(-300 + 600 * urand(&seed)), 0, 0 };

		need_cmp(tidei_win_add(w, &s, e.t, e.v, 0, NULL), ==, TIDE_OK);
		evs_push(&all, e);
	}
	need_cmp(tidei_win_read(w, &s, 0, &a), ==, TIDE_OK);
	check_agg(&a, all.p, all.n, &s, 1, "collapsed");
	need_cmp(tidei_win_memory(w), <, 20000 * 24 * 2 + 2049 * 8 * 2);
	tidei_win_free(w);
	free(all.p);
}
END_TEST

/* ------------------------------------------------------------------------
 * The stored form
 * ------------------------------------------------------------------------ */

/* The specs the stored form is tested with: every kind, every aggregate,
 * and a lean one. */
static tidei_win_spec
spec_n(int i)
{
	switch (i) {
	case 0: return spec(TIDEI_WIN_TUMBLING, 1 * NS, 0, 0, 0, TIDEI_AGG_ALL, 0.9);
	case 1: return spec(TIDEI_WIN_HOPPING, 1 * NS, 200 * MS, 0, 0, TIDEI_AGG_ALL, 0.5);
	case 2: return spec(TIDEI_WIN_SLIDING, 1 * NS, 0, 0, 0, TIDEI_AGG_ALL, 0.99);
	case 3: return spec(TIDEI_WIN_COUNT, 0, 0, 0, 64, TIDEI_AGG_ALL, 0.25);
	case 4: return spec(TIDEI_WIN_SESSION, 0, 0, 150 * MS, 0, TIDEI_AGG_ALL, 0.75);
	case 5: return spec(TIDEI_WIN_SLIDING, 1 * NS, 0, 0, 0, TIDEI_AGG_COUNT, 0);
	default: return spec(TIDEI_WIN_HOPPING, 1 * NS, 100 * MS, 0, 0, TIDEI_AGG_DISTINCT, 0);
	}
}
#define NSPECS 7

typedef struct recorder {
	tidei_buf b;
} recorder;

static void
record(void *ud, const tidei_agg *a)
{
	recorder *r = ud;

	tidei_buf_put(&r->b, a, sizeof *a);
}

static void
encode(const tidei_win *w, const tidei_win_spec *s, tidei_buf *b)
{
	tidei_buf_reset(b);
	tidei_win_encode(w, s, b);
	need(!b->failed && b->len > 9);
}

static tidei_win *
decode(const tidei_buf *b, const tidei_win_spec *s)
{
	char err[TIDEI_ERRLEN];
	tidei_win *w;

	need_msg(tidei_win_decode(&w, s, b->p, b->len, err) == TIDE_OK, "decode: %s", err);
	return w;
}

/* One random step: mostly an event near the clock (some old, with a few
 * distinct tokens or many), now and then a watermark. */
static void
random_step(tidei_win *w, const tidei_win_spec *s, uint64_t *seed, int64_t *clock, recorder *rec)
{
	int64_t back;

	if (th_rand(seed) % 10 == 0) {
		need_cmp(tidei_win_advance(w, s, *clock - 300 * MS, record, rec), ==, TIDE_OK);
		return;
	}
	back = (int64_t)th_rand_range(seed, 0, th_rand(seed) % 10 ? 200 : 2000) * MS;
	tidei_buf_putc(&rec->b, (uint8_t)tidei_win_add(w, s, *clock - back, rand_value(seed),
						       th_rand_range(seed, 0, 500), NULL));
	/* now and then a pause, so that sessions end */
	*clock += (int64_t)th_rand_range(seed, 0, th_rand(seed) % 20 ? 15 : 400) * MS;
}

/* Two windows driven alike, one encoded and decoded every few steps: the
 * same closes, the same reads and the same bytes, to the bit. */
START_TEST(roundtrip_determinism)
{
	for (int k = 0; k < NSPECS; k++) {
		tidei_win_spec s = spec_n(k);
		tidei_win *a = make(&s), *b = make(&s);
		uint64_t sa = 91 + k, sb = sa;
		int64_t ca = T0, cb = T0;
		recorder ra = { { 0 } }, rb = { { 0 } };
		tidei_buf ea = { 0 }, eb = { 0 };

		for (int i = 0; i < 3000; i++) {
			tidei_agg x, y;
			int64_t t = ca - (int64_t)(i % 7) * 100 * MS;

			random_step(a, &s, &sa, &ca, &ra);
			random_step(b, &s, &sb, &cb, &rb);
			if (i % 5 == 0) {
				encode(b, &s, &eb);
				tidei_win_free(b);
				b = decode(&eb, &s);
			}
			need_cmp(tidei_win_read(a, &s, t, &x), ==, TIDE_OK);
			need_cmp(tidei_win_read(b, &s, t, &y), ==, TIDE_OK);
			need_msg(memcmp(&x, &y, sizeof x) == 0, "spec %d step %d: reads differ", k,
				 i);
			need(tidei_win_next_close(a, &s) == tidei_win_next_close(b, &s));
			need_cmp(tidei_win_empty(a), ==, tidei_win_empty(b));
			encode(a, &s, &ea);
			encode(b, &s, &eb);
			need_msg(ea.len == eb.len && memcmp(ea.p, eb.p, ea.len) == 0,
				 "spec %d step %d: encodings differ", k, i);
		}
		need_cmp(tidei_win_advance(a, &s, INT64_MAX, record, &ra), ==, TIDE_OK);
		need_cmp(tidei_win_advance(b, &s, INT64_MAX, record, &rb), ==, TIDE_OK);
		need(ra.b.len == rb.b.len && memcmp(ra.b.p, rb.b.p, ra.b.len) == 0);
		tidei_win_free(a);
		tidei_win_free(b);
		tidei_buf_free(&ra.b);
		tidei_buf_free(&rb.b);
		tidei_buf_free(&ea);
		tidei_buf_free(&eb);
	}
}
END_TEST

/* A window whose state touches much of the format. */
static tidei_win *
busy_window(const tidei_win_spec *s, uint64_t seed, int steps)
{
	tidei_win *w = make(s);
	int64_t clock = T0;
	recorder rec = { { 0 } };

	for (int i = 0; i < steps; i++)
		random_step(w, s, &seed, &clock, &rec);
	tidei_buf_free(&rec.b);
	return w;
}

/* Whatever decode accepted must be usable. */
static void
exercise(tidei_win *w, const tidei_win_spec *s)
{
	tidei_buf b = { 0 };
	tidei_agg a;

	(void)tidei_win_memory(w);
	(void)tidei_win_next_close(w, s);
	(void)tidei_win_read(w, s, T0, &a);
	(void)tidei_win_add(w, s, T0 + 100 * MS, 1.5, 7, NULL);
	(void)tidei_win_add(w, s, T0 - 100 * NS, -2, 8, NULL);
	(void)tidei_win_read(w, s, T0 + 100 * MS, &a);
	tidei_win_encode(w, s, &b);
	(void)tidei_win_advance(w, s, INT64_MAX, NULL, NULL);
	tidei_buf_free(&b);
	tidei_win_free(w);
}

START_TEST(decode_damage)
{
	for (int k = 0; k < NSPECS; k++) {
		tidei_win_spec s = spec_n(k);
		tidei_win *w = busy_window(&s, 101 + k, 400), *d;
		tidei_buf b = { 0 };
		char err[TIDEI_ERRLEN];
		uint64_t seed = 111 + k;
		uint8_t *m;
		size_t accepted = 0;

		encode(w, &s, &b);
		tidei_win_free(w);
		need_msg(b.len > 200, "spec %d: only %zu bytes", k, b.len);
		/* every truncation is refused (malloc'd exactly: ASan sees overreads) */
		for (size_t n = 0; n < b.len; n++) {
			m = malloc(n ? n : 1);
			memcpy(m, b.p, n);
			need_cmp(tidei_win_decode(&d, &s, m, n, err), !=, TIDE_OK);
			need(d == NULL);
			free(m);
		}
		/* flipped bytes: refused, or a window that works */
		for (int i = 0; i < 3000; i++) {
			int flips = 1 + (int)(th_rand(&seed) % 3);

			m = malloc(b.len);
			memcpy(m, b.p, b.len);
			for (int f = 0; f < flips; f++) {
				size_t at = th_rand(&seed) % b.len;

				if (th_rand(&seed) % 2)
					m[at] ^= (uint8_t)(1u << (th_rand(&seed) % 8));
				else
					m[at] = (uint8_t)th_rand(&seed);
			}
			if (tidei_win_decode(&d, &s, m, b.len, err) == TIDE_OK) {
				accepted++;
				exercise(d, &s);
			} else {
				need(d == NULL && err[0] != '\0');
			}
			free(m);
		}
		/* garbage behind a valid header */
		for (int i = 0; i < 2000; i++) {
			size_t n = 9 + th_rand(&seed) % 300;

			m = malloc(n);
			memcpy(m, b.p, 9);
			for (size_t j = 9; j < n; j++)
				m[j] = (uint8_t)(th_rand(&seed) % 4 ? th_rand(&seed) : 0);
			if (tidei_win_decode(&d, &s, m, n, err) == TIDE_OK)
				exercise(d, &s);
			free(m);
		}
		need(accepted < 3000);
		tidei_buf_free(&b);
	}
}
END_TEST

START_TEST(decode_other_spec)
{
	tidei_win_spec s = spec_n(0), t;
	tidei_win *w = busy_window(&s, 121, 200), *d;
	tidei_buf b = { 0 };
	char err[TIDEI_ERRLEN];

	encode(w, &s, &b);
	t = s;
	t.size_ns *= 2;
	need_cmp(tidei_win_decode(&d, &t, b.p, b.len, err), ==, TIDE_EINVAL);
	need_msg(strstr(err, "another window definition") != NULL, "%s", err);
	t = s;
	t.aggs &= ~(uint32_t)TIDEI_AGG_MAX;
	need_cmp(tidei_win_decode(&d, &t, b.p, b.len, err), ==, TIDE_EINVAL);
	t = s;
	t.q = 0.95;
	need_cmp(tidei_win_decode(&d, &t, b.p, b.len, err), ==, TIDE_EINVAL);
	t = s;
	t.kind = TIDEI_WIN_SLIDING;
	need_cmp(tidei_win_decode(&d, &t, b.p, b.len, err), ==, TIDE_EINVAL);
	/* fields of other kinds are not part of it */
	t = s;
	t.hop_ns = 12345;
	t.count = 9;
	d = decode(&b, &t);
	tidei_win_free(d);
	/* another format version */
	b.p[0] = 2;
	need_cmp(tidei_win_decode(&d, &s, b.p, b.len, err), ==, TIDE_EINVAL);
	need_msg(strstr(err, "format") != NULL, "%s", err);
	need_cmp(tidei_win_decode(&d, &s, b.p, 0, err), ==, TIDE_EIO);
	/* trailing bytes */
	b.p[0] = 1;
	tidei_buf_putc(&b, 0);
	need_cmp(tidei_win_decode(&d, &s, b.p, b.len, err), ==, TIDE_EIO);
	need_msg(strstr(err, "damaged") != NULL, "%s", err);
	tidei_buf_free(&b);
	tidei_win_free(w);
}
END_TEST

/* ------------------------------------------------------------------------
 * Specs, names, errors, memory
 * ------------------------------------------------------------------------ */

static void
spec_fails(tidei_win_spec s, const char *msg)
{
	char err[TIDEI_ERRLEN];

	need_cmp(tidei_win_spec_check(&s, err), ==, TIDE_EINVAL);
	need_msg(strstr(err, msg) != NULL, "'%s' lacks '%s'", err, msg);
}

START_TEST(spec_errors)
{
	char err[TIDEI_ERRLEN];
	tidei_win_spec ok = spec(TIDEI_WIN_HOPPING, 10 * NS, 1 * NS, 0, 0, 0, 0);

	need_cmp(tidei_win_spec_check(&ok, err), ==, TIDE_OK);
	spec_fails(spec(TIDEI_WIN_HOPPING, 10 * NS, 3 * NS, 0, 0, 0, 0), "hop must divide size");
	spec_fails(spec(TIDEI_WIN_HOPPING, 10 * NS, 20 * NS, 0, 0, 0, 0), "hop must divide size");
	spec_fails(spec(TIDEI_WIN_HOPPING, 1001, 1, 0, 0, 0, 0), "at most 1000 (it is 1001)");
	spec_fails(spec(TIDEI_WIN_HOPPING, 10, 0, 0, 0, 0, 0), "hop must be positive");
	spec_fails(spec(TIDEI_WIN_TUMBLING, 0, 0, 0, 0, 0, 0), "size must be positive");
	spec_fails(spec(TIDEI_WIN_SLIDING, -5, 0, 0, 0, 0, 0), "size must be positive");
	spec_fails(spec(TIDEI_WIN_SLIDING, TIDEI_WIN_MAX_SPAN + 1, 0, 0, 0, 0, 0), "at most 2^60");
	spec_fails(spec(TIDEI_WIN_SESSION, 0, 0, 0, 0, 0, 0), "gap must be positive");
	spec_fails(spec(TIDEI_WIN_COUNT, 0, 0, 0, 0, 0, 0), "count must be 1 to 1000000");
	spec_fails(spec(TIDEI_WIN_COUNT, 0, 0, 0, 1000001, 0, 0), "count must be 1 to 1000000");
	spec_fails(spec(7, 1, 0, 0, 0, 0, 0), "unknown window kind 7");
	spec_fails(spec(TIDEI_WIN_TUMBLING, 1, 0, 0, 0, 0x200, 0), "unknown aggregate bits 0x200");
	spec_fails(spec(TIDEI_WIN_TUMBLING, 1, 0, 0, 0, TIDEI_AGG_QUANTILE, 1.5),
		   "quantile must be between 0 and 1");
	spec_fails(spec(TIDEI_WIN_TUMBLING, 1, 0, 0, 0, TIDEI_AGG_QUANTILE, NAN),
		   "quantile must be between 0 and 1");
	ok = spec(TIDEI_WIN_COUNT, 0, 0, 0, TIDEI_WIN_MAX_ENTRIES, TIDEI_AGG_QUANTILE, 1);
	need_cmp(tidei_win_spec_check(&ok, err), ==, TIDE_OK);
}
END_TEST

START_TEST(add_errors)
{
	tidei_win_spec s = spec(TIDEI_WIN_TUMBLING, NS, 0, 0, 0, TIDEI_AGG_SUM, 0);
	tidei_win_spec c = spec(TIDEI_WIN_TUMBLING, NS, 0, 0, 0, TIDEI_AGG_COUNT, 0);
	tidei_win_spec other = spec(TIDEI_WIN_SESSION, 0, 0, NS, 0, TIDEI_AGG_SUM, 0);
	tidei_win *w = make(&s);
	char err[TIDEI_ERRLEN];
	tidei_buf b = { 0 }, b2 = { 0 };
	tidei_agg a;

	need_cmp(tidei_win_add(w, &s, T0, 1, 0, err), ==, TIDE_OK);
	encode(w, &s, &b);
	need_cmp(tidei_win_add(w, &s, T0, NAN, 0, err), ==, TIDE_EINVAL);
	need_msg(strstr(err, "not a finite number") != NULL, "%s", err);
	need_cmp(tidei_win_add(w, &s, T0, INFINITY, 0, err), ==, TIDE_EINVAL);
	need_cmp(tidei_win_add(w, &s, TIDEI_WIN_TMAX + 1, 1, 0, err), ==, TIDE_EINVAL);
	need_msg(strstr(err, "out of the range") != NULL, "%s", err);
	need_cmp(tidei_win_add(w, &s, INT64_MIN, 1, 0, err), ==, TIDE_EINVAL);
	need_cmp(tidei_win_add(w, &other, T0, 1, 0, err), ==, TIDE_EINVAL);
	need_cmp(tidei_win_advance(w, &other, T0, NULL, NULL), ==, TIDE_EINVAL);
	need_cmp(tidei_win_read(w, &other, T0, &a), ==, TIDE_EINVAL);
	/* nothing changed */
	encode(w, &s, &b2);
	need(b.len == b2.len && memcmp(b.p, b2.p, b.len) == 0);
	tidei_win_free(w);
	/* a value nobody aggregates may be anything */
	w = make(&c);
	need_cmp(tidei_win_add(w, &c, T0, NAN, 0, err), ==, TIDE_OK);
	need_cmp(tidei_win_add(w, &c, TIDEI_WIN_TMIN, INFINITY, 0, err), ==, TIDE_OK);
	need_cmp(tidei_win_read(w, &c, T0, &a), ==, TIDE_OK);
	need(a.count == 1 && isnan(a.sum));
	tidei_win_free(w);
	tidei_buf_free(&b);
	tidei_buf_free(&b2);
}
END_TEST

/* Late events change nothing, in every kind that has them. */
START_TEST(late_changes_nothing)
{
	for (int k = 0; k < NSPECS; k++) {
		tidei_win_spec s = spec_n(k);
		tidei_win *w = busy_window(&s, 131 + k, 500);
		tidei_buf before = { 0 }, after = { 0 };
		int lates = 0;

		/* steps wider than the gap: accepted ones do not chain into
		 * one session reaching back */
		for (int64_t back = 0; back < 60 * NS; back += 997 * MS) {
			encode(w, &s, &before);
			if (tidei_win_add(w, &s, T0 - back, 1, 1, NULL) != TIDEI_WIN_LATE)
				continue;
			lates++;
			encode(w, &s, &after);
			need(before.len == after.len && memcmp(before.p, after.p, before.len) == 0);
		}
		need_msg((lates > 0) == (s.kind != TIDEI_WIN_COUNT), "spec %d: %d late", k, lates);
		tidei_win_free(w);
		tidei_buf_free(&before);
		tidei_buf_free(&after);
	}
}
END_TEST

typedef struct duration_case {
	const char *s;
	int64_t ns; /* -1: an error */
} duration_case;

START_TEST(duration_parse)
{
	static const duration_case cases[] = {
		{ "500ms", 500 * MS },
		{ "15m", 15 * 60 * NS },
		{ "1h", 3600 * NS },
		{ "30d", 30 * 86400 * NS },
		{ "2w", 14 * 86400 * NS },
		{ "1.5s", 1500 * MS },
		{ "0.25ms", 250000 },
		{ "10", 10 * NS },
		{ "2.5", 2500 * MS },
		{ "0", 0 },
		{ "7ns", 7 },
		{ "3us", 3000 },
		{ "1.000000001s", NS + 1 },
		{ "0.1w", 60480 * NS },
		{ "1.5h", 5400 * NS },
		{ "9223372036s", 9223372036 * NS },
		{ "9223372037s", -1 },
		{ "106751d", NS * 86400 * 106751 },
		{ "106752d", -1 },
		{ "99999999999999999999999s", -1 },
		{ "1.0000000001s", -1 },
		{ "", -1 },
		{ "s", -1 },
		{ ".5s", -1 },
		{ "1.s", -1 },
		{ "-1s", -1 },
		{ "1 s", -1 },
		{ "1S", -1 },
		{ "1sec", -1 },
		{ "1ms ", -1 },
		{ "1e3", -1 },
		{ "5mss", -1 },
	};
	char err[TIDEI_ERRLEN];
	int64_t ns;

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		int rc = tidei_duration_parse(cases[i].s, strlen(cases[i].s), &ns, err);

		if (cases[i].ns < 0) {
			need_msg(rc == TIDE_EINVAL && ns == -1, "'%s' accepted", cases[i].s);
			need(err[0] != '\0');
		} else {
			need_msg(rc == TIDE_OK, "'%s': %s", cases[i].s, err);
			need_msg(ns == cases[i].ns, "'%s': %lld", cases[i].s, (long long)ns);
		}
	}
	/* a length, not a NUL */
	need_cmp(tidei_duration_parse("15mXYZ", 3, &ns, err), ==, TIDE_OK);
	need(ns == 15 * 60 * NS);
	need_cmp(tidei_duration_parse("2h", 1, &ns, err), ==, TIDE_OK);
	need(ns == 2 * NS);
	need_cmp(tidei_duration_parse("1x", 2, &ns, err), ==, TIDE_EINVAL);
	need_msg(strstr(err, "'1x' is not a duration") != NULL, "%s", err);
}
END_TEST

START_TEST(agg_parse)
{
	static const struct {
		const char *name;
		uint32_t bit;
		double q;
	} good[] = {
		{ "count", TIDEI_AGG_COUNT, -1 },
		{ "sum", TIDEI_AGG_SUM, -1 },
		{ "min", TIDEI_AGG_MIN, -1 },
		{ "max", TIDEI_AGG_MAX, -1 },
		{ "mean", TIDEI_AGG_MEAN, -1 },
		{ "variance", TIDEI_AGG_VARIANCE, -1 },
		{ "stddev", TIDEI_AGG_STDDEV, -1 },
		{ "distinct", TIDEI_AGG_DISTINCT, -1 },
		{ "median", TIDEI_AGG_QUANTILE, 0.5 },
		{ "p95", TIDEI_AGG_QUANTILE, 0.95 },
		{ "p99.9", TIDEI_AGG_QUANTILE, 0.999 },
		{ "p0", TIDEI_AGG_QUANTILE, 0 },
		{ "p100", TIDEI_AGG_QUANTILE, 1 },
		{ "p50", TIDEI_AGG_QUANTILE, 0.5 },
		{ "p99.99", TIDEI_AGG_QUANTILE, 0.9999 },
		{ "p5", TIDEI_AGG_QUANTILE, 0.05 },
		{ "p100.0", TIDEI_AGG_QUANTILE, 1 },
	};
	static const char *const bad[] = { "",       "avg",  "Count",       "p",    "p101",
					   "p100.1", "p-1",  "p9x",         "p99.", "p.5",
					   "p1000",  "sum ", "p99.1234567", "q95" };
	char err[TIDEI_ERRLEN];
	uint32_t bit;
	double q;

	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
		q = -1;
		need_msg(tidei_agg_parse(good[i].name, &bit, &q, err) == TIDE_OK, "%s: %s",
			 good[i].name, err);
		need_msg(bit == good[i].bit && q == good[i].q, "%s: %x %g", good[i].name, bit, q);
	}
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		need_msg(tidei_agg_parse(bad[i], &bit, &q, err) == TIDE_EINVAL, "'%s' accepted",
			 bad[i]);
		need_msg(strstr(err, "unknown aggregate") != NULL, "%s", err);
	}
}
END_TEST

START_TEST(memory_small)
{
	tidei_win_spec t = spec(TIDEI_WIN_TUMBLING, NS, 0, 0, 0, TIDEI_AGG_SUM | TIDEI_AGG_MAX, 0);
	tidei_win_spec s = spec(TIDEI_WIN_SLIDING, NS, 0, 0, 0, TIDEI_AGG_ALL, 0.5);
	tidei_win *w = make(&t);
	tidei_buf b = { 0 };
	size_t empty;

	need_cmp(tidei_win_memory(w), <=, 32);
	need_cmp(tidei_win_add(w, &t, T0, 1, 0, NULL), ==, TIDE_OK);
	need_cmp(tidei_win_memory(w), <=, 32 + 88);
	encode(w, &t, &b);
	/* format, fingerprint, watermark, start, count, 3 doubles */
	need_cmp(b.len, <=, 1 + 8 + 10 + 1 + 5 + 1 + 24);
	tidei_win_free(w);

	w = make(&s);
	empty = tidei_win_memory(w);
	need_cmp(empty, <=, 256);
	for (int i = 0; i < 3; i++)
		need_cmp(tidei_win_add(w, &s, T0 + i, i, (uint64_t)i, NULL), ==, TIDE_OK);
	need_cmp(tidei_win_memory(w), <=, 1024);
	/* grown to many entries, then back to a few: the memory comes back */
	for (int i = 0; i < 100000; i++)
		need_cmp(tidei_win_add(w, &s, T0 + 10 + i, i, (uint64_t)i, NULL), ==, TIDE_OK);
	need_cmp(tidei_win_memory(w), >=, 100000 * 24);
	need_cmp(tidei_win_add(w, &s, T0 + 10 * NS, 1, 1, NULL), ==, TIDE_OK);
	need_cmp(tidei_win_add(w, &s, T0 + 10 * NS + 1, 2, 2, NULL), ==, TIDE_OK);
	need_cmp(tidei_win_memory(w), <=, 1024);
	need_cmp(tidei_win_advance(w, &s, T0 + 20 * NS, NULL, NULL), ==, TIDE_OK);
	need(tidei_win_empty(w));
	need_cmp(tidei_win_memory(w), ==, empty);
	tidei_win_free(w);
	tidei_buf_free(&b);
}
END_TEST

START_TEST(open_cap)
{
	tidei_win_spec s = spec(TIDEI_WIN_TUMBLING, NS, 0, 0, 0, TIDEI_AGG_COUNT, 0);
	tidei_win *w = make(&s);
	char err[TIDEI_ERRLEN];

	for (int64_t i = 0; i < TIDEI_WIN_MAX_OPEN; i++)
		need_cmp(tidei_win_add(w, &s, i * NS, 0, 0, err), ==, TIDE_OK);
	need_cmp(tidei_win_add(w, &s, -NS, 0, 0, err), ==, TIDE_EINVAL);
	need_msg(strstr(err, "at most 65536 windows open") != NULL, "%s", err);
	need_cmp(tidei_win_add(w, &s, 5 * NS, 0, 0, err), ==, TIDE_OK); /* an open one */
	need_cmp(tidei_win_advance(w, &s, INT64_MAX, NULL, NULL), ==, TIDE_OK);
	need(tidei_win_empty(w));
	tidei_win_free(w);
}
END_TEST

Suite *
agg_suite(void)
{
	Suite *s = suite_create("agg");
	TCase *tc = tcase_create("windows");

	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, tumbling_by_hand);
	tcase_add_test(tc, hopping_by_hand);
	tcase_add_test(tc, sliding_by_hand);
	tcase_add_test(tc, session_by_hand);
	tcase_add_test(tc, tumbling_model);
	tcase_add_test(tc, hopping_model);
	tcase_add_test(tc, sliding_model);
	tcase_add_test(tc, count_model);
	tcase_add_test(tc, session_model);
	tcase_add_test(tc, ring_numerics);
	tcase_add_test(tc, sliding_cap);
	tcase_add_test(tc, open_cap);
	suite_add_tcase(s, tc);

	tc = tcase_create("sketches");
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, distinct_accuracy);
	tcase_add_test(tc, quantile_accuracy);
	tcase_add_test(tc, quantile_collapse);
	suite_add_tcase(s, tc);

	tc = tcase_create("stored");
	tcase_set_timeout(tc, 600);
	tcase_add_test(tc, roundtrip_determinism);
	tcase_add_test(tc, decode_damage);
	tcase_add_test(tc, decode_other_spec);
	suite_add_tcase(s, tc);

	tc = tcase_create("api");
	tcase_add_test(tc, spec_errors);
	tcase_add_test(tc, add_errors);
	tcase_add_test(tc, late_changes_nothing);
	tcase_add_test(tc, duration_parse);
	tcase_add_test(tc, agg_parse);
	tcase_add_test(tc, memory_small);
	suite_add_tcase(s, tc);
	return s;
}
