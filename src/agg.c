/*
 * agg.c - keyed windows and their aggregates (agg.h): window definitions
 * and the parsing of their parts, the state of one key's window, its
 * stored form.  Pure computation: no Lua, no LMDB, no clock; times come
 * from the caller.
 *
 * Two shapes of state:
 *  - slots sorted by start, each with an accumulator (accum.h):
 *    tumbling windows and hopping panes (a tumbling window is a hopping
 *    window of one pane), and sessions; this file's;
 *  - the entries of sliding and count windows: ring.h.
 *
 * Invariants: slots are non-empty and their starts strictly increase;
 * sessions are at least a gap apart (start[i+1] - last[i] >= gap), so
 * they also end in the order they start.  Every operation that can fail
 * allocates before it changes anything, so a failure leaves the window
 * as it was.  The stored form holds only what results depend on.
 */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "accum.h"
#include "agg.h"
#include "err.h"
#include "ring.h"
#include "sketch.h"

/* The format byte that starts a stored window. */
#define FORMAT 1

/* A tumbling window, a hopping pane or a session. */
typedef struct slot {
	int64_t start; /* window or pane start; a session's first event time */
	int64_t last;  /* a session's last event time */
	tidei_acc a;
} slot;

typedef struct keyed {
	slot *s;
	uint32_t n, cap;
} keyed;

struct tidei_win {
	int64_t wm; /* the highest watermark given, clamped; TIDEI_WIN_NONE before */
	int kind;
	union {
		keyed k;       /* TUMBLING, HOPPING, SESSION */
		tidei_ring *r; /* SLIDING, COUNT */
	} u;
};

static int
is_keyed(int kind)
{
	return kind == TIDEI_WIN_TUMBLING || kind == TIDEI_WIN_HOPPING || kind == TIDEI_WIN_SESSION;
}

/* a / b rounded toward minus infinity, for b > 0. */
static int64_t
floor_div(int64_t a, int64_t b)
{
	int64_t q = a / b;

	return (a % b < 0) ? q - 1 : q;
}

static int64_t
max64(int64_t a, int64_t b)
{
	return a > b ? a : b;
}

/* ------------------------------------------------------------------------
 * Specs and the names in them
 * ------------------------------------------------------------------------ */

static int
check_span(int64_t v, const char *what, char *err)
{
	if (v <= 0)
		return tidei_err(err, TIDE_EINVAL, "window %s must be positive", what);
	if (v > TIDEI_WIN_MAX_SPAN)
		return tidei_err(err, TIDE_EINVAL, "window %s must be at most 2^60 ns (36 years)",
				 what);
	return TIDE_OK;
}

static int
check_kind(const tidei_win_spec *s, char *err)
{
	int rc;

	switch (s->kind) {
	case TIDEI_WIN_TUMBLING:
	case TIDEI_WIN_SLIDING: return check_span(s->size_ns, "size", err);
	case TIDEI_WIN_SESSION: return check_span(s->gap_ns, "gap", err);
	case TIDEI_WIN_COUNT:
		if (s->count < 1 || s->count > TIDEI_WIN_MAX_ENTRIES)
			return tidei_err(err, TIDE_EINVAL, "window count must be 1 to %d",
					 TIDEI_WIN_MAX_ENTRIES);
		return TIDE_OK;
	case TIDEI_WIN_HOPPING:
		if ((rc = check_span(s->size_ns, "size", err)) != TIDE_OK ||
		    (rc = check_span(s->hop_ns, "hop", err)) != TIDE_OK)
			return rc;
		if (s->size_ns % s->hop_ns != 0)
			return tidei_err(err, TIDE_EINVAL, "hop must divide size");
		if (s->size_ns / s->hop_ns > TIDEI_WIN_MAX_PANES)
			return tidei_err(err, TIDE_EINVAL,
					 "size / hop must be at most %d (it is %lld)",
					 TIDEI_WIN_MAX_PANES, (long long)(s->size_ns / s->hop_ns));
		return TIDE_OK;
	default: return tidei_err(err, TIDE_EINVAL, "unknown window kind %d", s->kind);
	}
}

int
tidei_win_spec_check(const tidei_win_spec *s, char *err)
{
	if (s->aggs & ~(uint32_t)TIDEI_AGG_ALL)
		return tidei_err(err, TIDE_EINVAL, "unknown aggregate bits 0x%x",
				 s->aggs & ~(uint32_t)TIDEI_AGG_ALL);
	if ((s->aggs & TIDEI_AGG_QUANTILE) && !(s->q >= 0 && s->q <= 1))
		return tidei_err(err, TIDE_EINVAL, "quantile must be between 0 and 1");
	return check_kind(s, err);
}

/* A fingerprint of what a stored window depends on: the fields of its
 * kind, the aggregates and the quantile. */
static uint64_t
spec_print(const tidei_win_spec *s)
{
	uint8_t b[40];
	size_t n = 0;
	uint64_t qbits;

	b[n++] = (uint8_t)s->kind;
	switch (s->kind) {
	case TIDEI_WIN_HOPPING:
		tidei_st64(b + n, (uint64_t)s->hop_ns);
		n += 8;
		/* fall through */
	case TIDEI_WIN_TUMBLING:
	case TIDEI_WIN_SLIDING:
		tidei_st64(b + n, (uint64_t)s->size_ns);
		n += 8;
		break;
	case TIDEI_WIN_SESSION:
		tidei_st64(b + n, (uint64_t)s->gap_ns);
		n += 8;
		break;
	case TIDEI_WIN_COUNT:
		tidei_st32(b + n, s->count);
		n += 4;
		break;
	}
	tidei_st32(b + n, s->aggs | TIDEI_AGG_COUNT);
	n += 4;
	if (s->aggs & TIDEI_AGG_QUANTILE) {
		memcpy(&qbits, &s->q, 8);
		tidei_st64(b + n, qbits);
		n += 8;
	}
	return tidei_fnv(b, n, TIDEI_FNV_SEED);
}

static int
is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* The unit of a duration, in ns; 0 if @p u (@p n bytes) is none. */
static int64_t
duration_unit(const char *u, size_t n)
{
	static const struct {
		const char *name;
		int64_t ns;
	} units[] = {
		{ "", 1000000000 },
		{ "ns", 1 },
		{ "us", 1000 },
		{ "ms", 1000000 },
		{ "s", 1000000000 },
		{ "m", 60 * (int64_t)1000000000 },
		{ "h", 3600 * (int64_t)1000000000 },
		{ "d", 86400 * (int64_t)1000000000 },
		{ "w", 604800 * (int64_t)1000000000 },
	};

	for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
		if (strlen(units[i].name) == n && memcmp(units[i].name, u, n) == 0)
			return units[i].ns;
	return 0;
}

int
tidei_duration_parse(const char *s, size_t n, int64_t *ns, char *err)
{
	uint64_t whole = 0, frac = 0, scale = 1;
	int64_t unit, part;
	size_t i = 0, digits;
	int show = n > 40 ? 40 : (int)n;

	*ns = -1;
	while (i < n && is_digit(s[i])) {
		if (whole > (UINT64_MAX - 9) / 10)
			goto too_long;
		whole = whole * 10 + (uint64_t)(s[i++] - '0');
	}
	digits = i;
	if (digits > 0 && i < n && s[i] == '.') {
		for (i++; i < n && is_digit(s[i]); i++) {
			if (scale == 1000000000)
				return tidei_err(err, TIDE_EINVAL,
						 "duration '%.*s': at most 9 decimals", show, s);
			frac = frac * 10 + (uint64_t)(s[i] - '0');
			scale *= 10;
		}
		if (scale == 1)
			digits = 0; /* "1." */
	}
	unit = digits > 0 ? duration_unit(s + i, n - i) : 0;
	if (unit == 0)
		return tidei_err(err, TIDE_EINVAL,
				 "'%.*s' is not a duration: a number and one of the units ns, us, "
				 "ms, s, m, h, d, w (\"500ms\", \"1.5s\", \"15m\")",
				 show, s);
	if (whole > (uint64_t)(INT64_MAX / unit))
		goto too_long;
	/* frac * unit / scale without overflowing: frac < scale <= 10^9 */
	part = (int64_t)(frac * (uint64_t)(unit / (int64_t)scale) +
			 frac * (uint64_t)(unit % (int64_t)scale) / scale);
	if ((int64_t)whole * unit > INT64_MAX - part)
		goto too_long;
	*ns = (int64_t)whole * unit + part;
	return TIDE_OK;
too_long:
	return tidei_err(err, TIDE_EINVAL, "duration '%.*s' is too long (at most 292 years)", show,
			 s);
}

/* "p95", "p99.9": *q = 0.95, 0.999. */
static int
parse_percentile(const char *name, double *q)
{
	uint64_t m = 0;
	double scale = 100;
	int whole = 0, decimals = 0;
	const char *p = name + 1;

	for (; is_digit(*p) && whole < 3; p++, whole++)
		m = m * 10 + (uint64_t)(*p - '0');
	if (whole == 0)
		return -1;
	if (*p == '.') {
		for (p++; is_digit(*p) && decimals < 6; p++, decimals++) {
			m = m * 10 + (uint64_t)(*p - '0');
			scale *= 10;
		}
		if (decimals == 0)
			return -1;
	}
	if (*p != '\0' || m > 100 * (uint64_t)(scale / 100))
		return -1;
	*q = (double)m / scale;
	return 0;
}

void
tidei_duration_format(char *out, size_t n, int64_t ns)
{
	static const struct {
		const char *unit;
		int64_t ns;
	} units[] = {
		{ "w", 604800000000000ll }, { "d", 86400000000000ll }, { "h", 3600000000000ll },
		{ "m", 60000000000ll },     { "s", 1000000000ll },     { "ms", 1000000ll },
		{ "us", 1000ll },
	};

	for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
		if (ns != 0 && ns % units[i].ns == 0) {
			snprintf(out, n, "%lld%s", (long long)(ns / units[i].ns), units[i].unit);
			return;
		}
	snprintf(out, n, "%lldns", (long long)ns);
}

void
tidei_win_spec_describe(const tidei_win_spec *s, tidei_buf *out)
{
	static const char *const names[] = { "count", "sum",      "min",    "max",
					     "mean",  "variance", "stddev", "distinct" };
	char a[32], b[32];
	int first = 1;

	tidei_duration_format(a, sizeof a, s->size_ns);
	switch (s->kind) {
	case TIDEI_WIN_TUMBLING: tidei_buf_printf(out, "tumbling %s", a); break;
	case TIDEI_WIN_HOPPING:
		tidei_duration_format(b, sizeof b, s->hop_ns);
		tidei_buf_printf(out, "hopping %s every %s", a, b);
		break;
	case TIDEI_WIN_SLIDING: tidei_buf_printf(out, "sliding %s", a); break;
	case TIDEI_WIN_SESSION:
		tidei_duration_format(b, sizeof b, s->gap_ns);
		tidei_buf_printf(out, "session, gap %s", b);
		break;
	default: tidei_buf_printf(out, "last %u", (unsigned)s->count); break;
	}
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		if (s->aggs & (1u << i)) {
			tidei_buf_printf(out, "%s%s", first ? ": " : ", ", names[i]);
			first = 0;
		}
	if (s->aggs & TIDEI_AGG_QUANTILE)
		tidei_buf_printf(out, "%sp%g", first ? ": " : ", ", s->q * 100);
}

int
tidei_agg_parse(const char *name, uint32_t *bit, double *q, char *err)
{
	static const struct {
		const char *name;
		uint32_t bit;
	} names[] = {
		{ "count", TIDEI_AGG_COUNT },   { "sum", TIDEI_AGG_SUM },
		{ "min", TIDEI_AGG_MIN },       { "max", TIDEI_AGG_MAX },
		{ "mean", TIDEI_AGG_MEAN },     { "variance", TIDEI_AGG_VARIANCE },
		{ "stddev", TIDEI_AGG_STDDEV }, { "distinct", TIDEI_AGG_DISTINCT },
	};

	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		if (strcmp(name, names[i].name) == 0) {
			*bit = names[i].bit;
			return TIDE_OK;
		}
	if (strcmp(name, "median") == 0) {
		*bit = TIDEI_AGG_QUANTILE;
		*q = 0.5;
		return TIDE_OK;
	}
	if (name[0] == 'p' && parse_percentile(name, q) == 0) {
		*bit = TIDEI_AGG_QUANTILE;
		return TIDE_OK;
	}
	return tidei_err(err, TIDE_EINVAL,
			 "unknown aggregate '%.40s': count, sum, min, max, mean, variance, stddev, "
			 "distinct, median, or a percentile from p0 to p100 such as p95 or p99.9",
			 name);
}

/* ------------------------------------------------------------------------
 * Keyed slots: tumbling windows, hopping panes, sessions
 * ------------------------------------------------------------------------ */

/* Index of the first slot starting at or after @p start. */
static uint32_t
slot_find(const keyed *k, int64_t start)
{
	uint32_t lo = 0, hi = k->n;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (k->s[mid].start < start)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* A new, empty slot at index @p i. */
static int
slot_insert(keyed *k, uint32_t i, int64_t start, char *err)
{
	if (k->n >= TIDEI_WIN_MAX_OPEN)
		return tidei_err(err, TIDE_EINVAL, "a key has at most %d windows open at once",
				 TIDEI_WIN_MAX_OPEN);
	if (k->n == k->cap) {
		size_t cap = k->cap;

		/* most keys have one window open: start with room for one */
		if (tidei_array_grow(&k->s, &cap, k->n, sizeof k->s[0], 1) != 0)
			return tidei_err(err, TIDE_ENOMEM, "out of memory");
		k->cap = (uint32_t)cap;
	}
	memmove(k->s + i + 1, k->s + i, (size_t)(k->n - i) * sizeof k->s[0]);
	memset(&k->s[i], 0, sizeof k->s[i]);
	k->s[i].start = k->s[i].last = start;
	k->n++;
	return TIDE_OK;
}

/* Free slots [i, i + n) and close the gap; shrink a mostly empty array. */
static void
slot_erase(keyed *k, uint32_t i, uint32_t n)
{
	uint32_t cap;
	slot *smaller;

	for (uint32_t j = i; j < i + n; j++)
		tidei_acc_free(&k->s[j].a);
	memmove(k->s + i, k->s + i + n, (size_t)(k->n - i - n) * sizeof k->s[0]);
	k->n -= n;
	if (k->n == 0) {
		free(k->s);
		k->s = NULL;
		k->cap = 0;
	} else if ((cap = tidei_array_shrunk(k->cap, k->n, 2)) < k->cap) {
		smaller = realloc(k->s, (size_t)cap * sizeof k->s[0]);
		if (smaller != NULL) { /* failing to shrink is harmless */
			k->s = smaller;
			k->cap = cap;
		}
	}
}

/* Tumbling windows are hopping windows of one pane. */
static int64_t
pane_width(const tidei_win_spec *s)
{
	return s->kind == TIDEI_WIN_HOPPING ? s->hop_ns : s->size_ns;
}

/* The last window closed at watermark @p wm: windows k*H + S <= wm. */
static int64_t
last_closed(const tidei_win_spec *s, int64_t wm)
{
	return floor_div(wm - s->size_ns, pane_width(s));
}

static int
pane_add(tidei_win *w, const tidei_win_spec *s, int64_t t, double v, uint64_t h, char *err)
{
	keyed *k = &w->u.k;
	int64_t width = pane_width(s), start = floor_div(t, width) * width;
	uint32_t i = slot_find(k, start);
	int fresh = i == k->n || k->s[i].start != start, rc;

	/* the last window holding the pane starts with it */
	if (start + s->size_ns <= w->wm)
		return TIDEI_WIN_LATE;
	if (fresh && (rc = slot_insert(k, i, start, err)) != TIDE_OK)
		return rc;
	if (tidei_acc_add(&k->s[i].a, s->aggs, v, h) != TIDE_OK) {
		if (fresh)
			slot_erase(k, i, 1);
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	}
	return TIDE_OK;
}

/* The aggregates of window @p kw (its panes kw .. kw + R - 1), whose
 * first pane with events, if any, is at index @p i or after. */
static int
pane_window(const keyed *k, const tidei_win_spec *s, int64_t kw, uint32_t i, tidei_agg *o)
{
	int64_t width = pane_width(s), R = s->size_ns / width;
	uint32_t j = i;
	tidei_acc tmp = { 0 };
	int rc = TIDE_OK;

	while (j < k->n && k->s[j].start / width < kw + R)
		j++;
	if (j - i == 1) {
		tidei_agg_fill(o, &k->s[i].a, s); /* one pane: no merge needed */
	} else {
		for (uint32_t x = i; x < j && rc == TIDE_OK; x++)
			rc = tidei_acc_merge(&tmp, &k->s[x].a);
		if (rc == TIDE_OK)
			tidei_agg_fill(o, &tmp, s);
		tidei_acc_free(&tmp);
	}
	o->start = kw * width;
	o->end = kw * width + s->size_ns;
	return rc;
}

/* Drop the panes whose last window (the one they start) is closed. */
static void
pane_prune(keyed *k, const tidei_win_spec *s, int64_t closed)
{
	int64_t width = pane_width(s);
	uint32_t n = 0;

	while (n < k->n && k->s[n].start / width <= closed)
		n++;
	if (n > 0)
		slot_erase(k, 0, n);
}

static int
pane_advance(tidei_win *w, const tidei_win_spec *s, int64_t wm, tidei_win_close_fn *fn, void *ud)
{
	keyed *k = &w->u.k;
	int64_t width = pane_width(s), R = s->size_ns / width;
	int64_t kw = last_closed(s, w->wm) + 1, last = last_closed(s, wm);
	uint32_t i = 0;
	tidei_agg a;

	/* Windows close in the order of their starts; kw walks them,
	 * jumping over those without a pane and so without events. */
	while (i < k->n) {
		int64_t p = k->s[i].start / width;

		if (p < kw) { /* every window holding pane i is closed */
			i++;
			continue;
		}
		if (kw < p - R + 1)
			kw = p - R + 1;
		if (kw > last)
			break;
		if (pane_window(k, s, kw, i, &a) != TIDE_OK) {
			w->wm = kw * width + s->size_ns - 1; /* closed up to kw - 1 */
			pane_prune(k, s, kw - 1);
			return TIDE_ENOMEM;
		}
		if (fn != NULL)
			fn(ud, &a);
		kw++;
	}
	w->wm = wm;
	pane_prune(k, s, last);
	return TIDE_OK;
}

static int
pane_read(const tidei_win *w, const tidei_win_spec *s, int64_t t, tidei_agg *o)
{
	const keyed *k = &w->u.k;
	int64_t width = pane_width(s), R = s->size_ns / width;
	int64_t p = floor_div(t, width), kw = max64(p - R + 1, last_closed(s, w->wm) + 1);

	if (kw > p)
		kw = p;
	return pane_window(k, s, kw, slot_find(k, kw * width), o);
}

static int64_t
pane_next_close(const tidei_win *w, const tidei_win_spec *s)
{
	const keyed *k = &w->u.k;
	int64_t width = pane_width(s), R = s->size_ns / width, kw;

	if (k->n == 0)
		return INT64_MAX;
	kw = max64(k->s[0].start / width - R + 1, last_closed(s, w->wm) + 1);
	return kw * width + s->size_ns;
}

/* Index of the first session that an event at @p t is not past: the
 * first whose last event + gap is after t. */
static uint32_t
session_find(const keyed *k, int64_t t, int64_t gap)
{
	uint32_t lo = 0, hi = k->n;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (k->s[mid].last <= t - gap)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Sessions i and i + 1 and the event at @p t that bridges them, as one. */
static int
session_bridge(keyed *k, const tidei_win_spec *s, uint32_t i, int64_t t, double v, uint64_t h)
{
	tidei_acc tmp = { 0 };

	if (tidei_acc_merge(&tmp, &k->s[i].a) != TIDE_OK ||
	    tidei_acc_merge(&tmp, &k->s[i + 1].a) != TIDE_OK ||
	    tidei_acc_add(&tmp, s->aggs, v, h) != TIDE_OK) {
		tidei_acc_free(&tmp);
		return TIDE_ENOMEM;
	}
	tidei_acc_free(&k->s[i].a);
	k->s[i].a = tmp;
	k->s[i].last = max64(k->s[i + 1].last, t);
	if (t < k->s[i].start)
		k->s[i].start = t;
	slot_erase(k, i + 1, 1);
	return TIDE_OK;
}

static int
session_add(tidei_win *w, const tidei_win_spec *s, int64_t t, double v, uint64_t h, char *err)
{
	keyed *k = &w->u.k;
	int64_t gap = s->gap_ns;
	uint32_t i = session_find(k, t, gap);
	int rc;

	/* Sessions are at least a gap apart, so an event reaches at most two:
	 * i, and i + 1 only if it reaches i. */
	if (i == k->n || t <= k->s[i].start - gap) {
		if (t + gap <= w->wm)
			return TIDEI_WIN_LATE;
		if ((rc = slot_insert(k, i, t, err)) != TIDE_OK)
			return rc;
		if (tidei_acc_add(&k->s[i].a, s->aggs, v, h) != TIDE_OK) {
			slot_erase(k, i, 1);
			return tidei_err(err, TIDE_ENOMEM, "out of memory");
		}
		return TIDE_OK;
	}
	if (i + 1 < k->n && t > k->s[i + 1].start - gap) {
		if (session_bridge(k, s, i, t, v, h) != TIDE_OK)
			return tidei_err(err, TIDE_ENOMEM, "out of memory");
		return TIDE_OK;
	}
	if (tidei_acc_add(&k->s[i].a, s->aggs, v, h) != TIDE_OK)
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	if (t < k->s[i].start)
		k->s[i].start = t;
	if (t > k->s[i].last)
		k->s[i].last = t;
	return TIDE_OK;
}

static void
session_fill(tidei_agg *o, const slot *x, const tidei_win_spec *s)
{
	tidei_agg_fill(o, &x->a, s);
	o->start = x->start;
	o->end = x->last;
}

static int
session_advance(tidei_win *w, const tidei_win_spec *s, int64_t wm, tidei_win_close_fn *fn, void *ud)
{
	keyed *k = &w->u.k;
	uint32_t n = 0;
	tidei_agg a;

	/* apart by a gap, sessions end in the order they start */
	for (; n < k->n && k->s[n].last + s->gap_ns <= wm; n++) {
		session_fill(&a, &k->s[n], s);
		if (fn != NULL)
			fn(ud, &a);
	}
	if (n > 0)
		slot_erase(k, 0, n);
	w->wm = wm;
	return TIDE_OK;
}

static int
session_read(const tidei_win *w, const tidei_win_spec *s, int64_t t, tidei_agg *o)
{
	const keyed *k = &w->u.k;
	uint32_t i = session_find(k, t, 1); /* the first with last >= t */

	if (i < k->n && k->s[i].start <= t)
		session_fill(o, &k->s[i], s);
	else
		tidei_agg_empty(o, s);
	return TIDE_OK;
}

static void
keyed_free(keyed *k)
{
	for (uint32_t i = 0; i < k->n; i++)
		tidei_acc_free(&k->s[i].a);
	free(k->s);
}

static size_t
keyed_memory(const keyed *k)
{
	size_t n = (size_t)k->cap * sizeof k->s[0];

	for (uint32_t i = 0; i < k->n; i++)
		n += tidei_acc_memory(&k->s[i].a);
	return n;
}

/* Slot starts are stored as differences: pane indexes for panes, and
 * for sessions the gap beyond the minimum and the length. */
static void
keyed_encode(const keyed *k, const tidei_win_spec *s, tidei_buf *b)
{
	int64_t width = pane_width(s);

	tidei_put_u64(b, k->n);
	for (uint32_t i = 0; i < k->n; i++) {
		const slot *x = &k->s[i];

		if (s->kind == TIDEI_WIN_SESSION) {
			if (i == 0)
				tidei_put_i64(b, x->start);
			else
				tidei_put_u64(b,
					      (uint64_t)(x->start - k->s[i - 1].last - s->gap_ns));
			tidei_put_u64(b, (uint64_t)(x->last - x->start));
		} else if (i == 0) {
			tidei_put_i64(b, x->start / width);
		} else {
			tidei_put_u64(b, (uint64_t)((x->start - k->s[i - 1].start) / width - 1));
		}
		tidei_acc_encode(&x->a, s->aggs, b);
	}
}

/* The start and last time of slot @p i, read and checked. */
static int
keyed_decode_times(const keyed *k, const tidei_win_spec *s, uint32_t i, tidei_rd *r, int64_t *start,
		   int64_t *last)
{
	int64_t width, idx, hi, from;
	uint64_t step, len;

	if (s->kind == TIDEI_WIN_SESSION) {
		from = i == 0 ? TIDEI_WIN_TMIN : k->s[i - 1].last + s->gap_ns;
		if (i == 0)
			*start = tidei_get_i64(r);
		else if ((step = tidei_get_u64(r)) <= (uint64_t)(TIDEI_WIN_TMAX - from))
			*start = from + (int64_t)step;
		else
			return TIDE_EIO;
		len = tidei_get_u64(r);
		if (r->bad || *start < from || *start > TIDEI_WIN_TMAX ||
		    len > (uint64_t)(TIDEI_WIN_TMAX - *start))
			return TIDE_EIO;
		*last = *start + (int64_t)len;
		return TIDE_OK;
	}
	width = pane_width(s);
	hi = floor_div(TIDEI_WIN_TMAX, width);
	from = i == 0 ? floor_div(TIDEI_WIN_TMIN, width) : k->s[i - 1].start / width + 1;
	if (i == 0)
		idx = tidei_get_i64(r);
	else if ((step = tidei_get_u64(r)) <= (uint64_t)(hi - from))
		idx = from + (int64_t)step;
	else
		return TIDE_EIO;
	if (r->bad || idx < from || idx > hi)
		return TIDE_EIO;
	*start = *last = idx * width;
	return TIDE_OK;
}

static int
keyed_decode(keyed *k, const tidei_win_spec *s, tidei_rd *r)
{
	/* every slot takes at least 3 bytes: start, (length,) count */
	uint64_t n = tidei_get_count(r, TIDEI_WIN_MAX_OPEN, 3);
	int64_t start = 0, last = 0;
	int rc;

	if (r->bad)
		return TIDE_EIO;
	if (n > 0 && (k->s = calloc((size_t)n, sizeof k->s[0])) == NULL)
		return TIDE_ENOMEM;
	k->cap = (uint32_t)n;
	for (uint32_t i = 0; i < n; i++) {
		if ((rc = keyed_decode_times(k, s, i, r, &start, &last)) != TIDE_OK)
			return rc;
		k->s[i].start = start;
		k->s[i].last = last;
		k->n++; /* so that what was read is freed on failure */
		if ((rc = tidei_acc_decode(&k->s[i].a, s->aggs, r)) != TIDE_OK)
			return rc;
	}
	return TIDE_OK;
}

/* ------------------------------------------------------------------------
 * The window
 * ------------------------------------------------------------------------ */

tidei_win *
tidei_win_new(const tidei_win_spec *s)
{
	/* a ring right behind its window: one allocation, and the cache
	 * lines an add touches next to each other */
	tidei_win *w = calloc(1, sizeof *w + (is_keyed(s->kind) ? 0 : tidei_ring_size()));

	if (w == NULL)
		return NULL;
	w->wm = TIDEI_WIN_NONE;
	w->kind = s->kind;
	if (!is_keyed(s->kind))
		w->u.r = tidei_ring_init(w + 1);
	return w;
}

void
tidei_win_free(tidei_win *w)
{
	if (w == NULL)
		return;
	if (is_keyed(w->kind))
		keyed_free(&w->u.k);
	else
		tidei_ring_fini(w->u.r);
	free(w);
}

int
tidei_win_add(tidei_win *w, const tidei_win_spec *s, int64_t t, double v, uint64_t token, char *err)
{
	char local[TIDEI_ERRLEN];
	uint64_t h = (s->aggs & TIDEI_AGG_DISTINCT) ? tidei_dset_mix(token) : 0;

	if (err == NULL)
		err = local;
	if (w->kind != s->kind)
		return tidei_err(err, TIDE_EINVAL, "window state of another kind than its spec");
	if (t < TIDEI_WIN_TMIN || t > TIDEI_WIN_TMAX)
		return tidei_err(err, TIDE_EINVAL,
				 "event time %lld ns is out of the range of windows (1823 to 2116)",
				 (long long)t);
	if (!(s->aggs & TIDEI_VALUE_AGGS))
		v = 0; /* unused: whatever it is must not reach the state */
	else if (!isfinite(v))
		return tidei_err(err, TIDE_EINVAL, "the value to aggregate is not a finite number");
	switch (s->kind) {
	case TIDEI_WIN_TUMBLING:
	case TIDEI_WIN_HOPPING: return pane_add(w, s, t, v, h, err);
	case TIDEI_WIN_SESSION: return session_add(w, s, t, v, h, err);
	default: return tidei_ring_add(w->u.r, s, w->wm, t, v, h, err);
	}
}

int
tidei_win_advance(tidei_win *w, const tidei_win_spec *s, int64_t wm, tidei_win_close_fn *fn,
		  void *ud)
{
	if (w->kind != s->kind)
		return TIDE_EINVAL;
	if (wm > TIDEI_WIN_WM_LIMIT)
		wm = TIDEI_WIN_WM_LIMIT;
	if (wm <= w->wm) /* also any below -TIDEI_WIN_WM_LIMIT */
		return TIDE_OK;
	switch (s->kind) {
	case TIDEI_WIN_TUMBLING:
	case TIDEI_WIN_HOPPING: return pane_advance(w, s, wm, fn, ud);
	case TIDEI_WIN_SESSION: return session_advance(w, s, wm, fn, ud);
	default:
		w->wm = wm;
		tidei_ring_advance(w->u.r, s, wm);
		return TIDE_OK;
	}
}

int
tidei_win_read(const tidei_win *w, const tidei_win_spec *s, int64_t t, tidei_agg *out)
{
	if (w->kind != s->kind)
		return TIDE_EINVAL;
	switch (s->kind) {
	case TIDEI_WIN_TUMBLING:
	case TIDEI_WIN_HOPPING:
		/* keep floor_div's arithmetic inside int64 */
		t = t < TIDEI_WIN_TMIN ? TIDEI_WIN_TMIN : t > TIDEI_WIN_TMAX ? TIDEI_WIN_TMAX : t;
		return pane_read(w, s, t, out);
	case TIDEI_WIN_SESSION: return session_read(w, s, t, out);
	default: tidei_ring_read(w->u.r, s, out); return TIDE_OK;
	}
}

int64_t
tidei_win_next_close(const tidei_win *w, const tidei_win_spec *s)
{
	if (w->kind != s->kind)
		return INT64_MAX;
	switch (s->kind) {
	case TIDEI_WIN_TUMBLING:
	case TIDEI_WIN_HOPPING: return pane_next_close(w, s);
	case TIDEI_WIN_SESSION: return w->u.k.n ? w->u.k.s[0].last + s->gap_ns : INT64_MAX;
	default: return INT64_MAX;
	}
}

void
tidei_win_prefetch(const tidei_win *w, int depth)
{
	if (depth == 0) {
		/* the window and the start of its panes, where an add begins */
		__builtin_prefetch(w);
		__builtin_prefetch((const char *)w + 64);
	} else if (!is_keyed(w->kind)) {
		tidei_ring_prefetch(w->u.r, depth - 1);
	}
}

int
tidei_win_empty(const tidei_win *w)
{
	return is_keyed(w->kind) ? w->u.k.n == 0 : tidei_ring_empty(w->u.r);
}

void
tidei_win_encode(const tidei_win *w, const tidei_win_spec *s, tidei_buf *out)
{
	uint8_t fp[8];

	if (w->kind != s->kind) {
		out->failed = 1; /* bytes no decode would accept */
		return;
	}
	tidei_buf_putc(out, FORMAT);
	tidei_st64(fp, spec_print(s));
	tidei_buf_put(out, fp, 8);
	tidei_put_i64(out, w->wm);
	if (is_keyed(w->kind))
		keyed_encode(&w->u.k, s, out);
	else
		tidei_ring_encode(w->u.r, s, out);
}

static int
decode_body(tidei_win **out, const tidei_win_spec *s, tidei_rd *r, char *err)
{
	const uint8_t *fp = tidei_get_bytes(r, 8);
	int64_t wm = tidei_get_i64(r);
	tidei_win *w;
	int rc;

	if (r->bad)
		return tidei_err(err, TIDE_EIO, "window state is damaged (truncated)");
	if (tidei_ld64(fp) != spec_print(s))
		return tidei_err(err, TIDE_EINVAL,
				 "window state was written for another window definition");
	if (wm < -TIDEI_WIN_WM_LIMIT || wm > TIDEI_WIN_WM_LIMIT)
		return tidei_err(err, TIDE_EIO, "window state is damaged (watermark)");
	if ((w = tidei_win_new(s)) == NULL)
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	w->wm = wm;
	rc = is_keyed(s->kind) ? keyed_decode(&w->u.k, s, r)
			       : tidei_ring_decode(w->u.r, s, w->wm, r);
	if (rc == TIDE_OK && r->p != r->end)
		rc = TIDE_EIO;
	if (rc != TIDE_OK) {
		tidei_win_free(w);
		return tidei_err(err, rc,
				 rc == TIDE_ENOMEM ? "out of memory" : "window state is damaged");
	}
	*out = w;
	return TIDE_OK;
}

int
tidei_win_decode(tidei_win **out, const tidei_win_spec *s, const uint8_t *p, size_t n, char *err)
{
	tidei_rd r;
	uint8_t format;

	*out = NULL;
	if (n == 0)
		return tidei_err(err, TIDE_EIO, "window state is empty");
	r.p = p;
	r.end = p + n;
	r.bad = 0;
	format = tidei_get_u8(&r);
	if (format != FORMAT)
		return tidei_err(err, TIDE_EINVAL, "window state has format %u, not %u", format,
				 FORMAT);
	if (tidei_win_spec_check(s, err) != TIDE_OK)
		return TIDE_EINVAL;
	return decode_body(out, s, &r, err);
}

size_t
tidei_win_memory(const tidei_win *w)
{
	return sizeof *w + (is_keyed(w->kind) ? keyed_memory(&w->u.k)
					      : tidei_ring_size() + tidei_ring_memory(w->u.r));
}
