/*
 * accum.c - accumulators (accum.h): adding, merging, storing and reading
 * out the aggregates of a set of events.  Owns nothing but the sketches
 * inside the accumulators it is handed.
 */
#include "config.h"

#include <math.h>

#include "accum.h"
#include "tide.h"

/* Neumaier's compensated addition: the error of each step goes to *c. */
void
tidei_neumaier(double *s, double *c, double x)
{
	double t = *s + x;

	if (!isfinite(t)) {
		*s = t; /* past the range of doubles: keep c finite */
		return;
	}
	if (fabs(*s) >= fabs(x))
		*c += (*s - t) + x;
	else
		*c += (x - t) + *s;
	*s = t;
}

/* Room in the sketches for one more event.  Nothing else changes. */
static int
acc_reserve(tidei_acc *a, uint32_t aggs)
{
	if ((aggs & TIDEI_AGG_DISTINCT) && tidei_dset_reserve(&a->ds) != TIDE_OK)
		return TIDE_ENOMEM;
	if ((aggs & TIDEI_AGG_QUANTILE) && tidei_qsk_reserve(&a->qs) != TIDE_OK)
		return TIDE_ENOMEM;
	return TIDE_OK;
}

int
tidei_acc_add(tidei_acc *a, uint32_t aggs, double v, uint64_t h)
{
	double d;

	if (acc_reserve(a, aggs) != TIDE_OK)
		return TIDE_ENOMEM;
	a->n++;
	if (aggs & TIDEI_AGG_SUM)
		tidei_neumaier(&a->sum, &a->c, v);
	if (aggs & TIDEI_WELFORD_AGGS) { /* Welford */
		d = v - a->mean;
		a->mean += d / (double)a->n;
		a->m2 += d * (v - a->mean);
	}
	if (a->n == 1 || v < a->min)
		a->min = v;
	if (a->n == 1 || v > a->max)
		a->max = v;
	if (aggs & TIDEI_AGG_DISTINCT)
		tidei_dset_add(&a->ds, h);
	if (aggs & TIDEI_AGG_QUANTILE)
		tidei_qsk_add(&a->qs, v);
	return TIDE_OK;
}

/* Merge @p src into @p dst (Chan's formula for the variance).  Not
 * atomic: merge into a scratch accumulator and keep it only on success. */
int
tidei_acc_merge(tidei_acc *dst, const tidei_acc *src)
{
	double n, d;

	if (src->n == 0)
		return TIDE_OK;
	if (tidei_dset_merge(&dst->ds, src->ds) != TIDE_OK ||
	    tidei_qsk_merge(&dst->qs, src->qs) != TIDE_OK)
		return TIDE_ENOMEM;
	if (dst->n == 0) {
		dst->n = src->n;
		dst->sum = src->sum, dst->c = src->c;
		dst->mean = src->mean, dst->m2 = src->m2;
		dst->min = src->min, dst->max = src->max;
		return TIDE_OK;
	}
	n = (double)dst->n + (double)src->n;
	d = src->mean - dst->mean;
	dst->c += src->c;
	tidei_neumaier(&dst->sum, &dst->c, src->sum);
	dst->mean += d * ((double)src->n / n);
	dst->m2 += src->m2 + d * d * ((double)dst->n * ((double)src->n / n));
	dst->min = src->min < dst->min ? src->min : dst->min;
	dst->max = src->max > dst->max ? src->max : dst->max;
	dst->n += src->n;
	return TIDE_OK;
}

void
tidei_acc_free(tidei_acc *a)
{
	tidei_dset_free(a->ds);
	tidei_qsk_free(a->qs);
	a->ds = NULL;
	a->qs = NULL;
}

size_t
tidei_acc_memory(const tidei_acc *a)
{
	return tidei_dset_memory(a->ds) + tidei_qsk_memory(a->qs);
}

void
tidei_agg_empty(tidei_agg *o, const tidei_win_spec *s)
{
	o->count = 0;
	o->sum = (s->aggs & TIDEI_AGG_SUM) ? 0 : NAN;
	o->min = o->max = o->mean = o->variance = o->stddev = NAN;
	o->distinct = o->quantile = NAN;
	o->start = o->end = 0;
}

/* The aggregates of @p a as the spec asks for them (start, end apart). */
void
tidei_agg_fill(tidei_agg *o, const tidei_acc *a, const tidei_win_spec *s)
{
	uint32_t g = s->aggs;
	double var;

	tidei_agg_empty(o, s);
	o->count = a->n;
	if (a->n == 0)
		return;
	var = a->n >= 2 ? a->m2 / (double)(a->n - 1) : 0;
	if (g & TIDEI_AGG_SUM)
		o->sum = a->sum + a->c;
	if (g & TIDEI_AGG_MEAN)
		o->mean = a->mean;
	if (g & TIDEI_AGG_VARIANCE)
		o->variance = var;
	if (g & TIDEI_AGG_STDDEV)
		o->stddev = sqrt(var);
	if (g & TIDEI_AGG_MIN)
		o->min = a->min;
	if (g & TIDEI_AGG_MAX)
		o->max = a->max;
	if (g & TIDEI_AGG_DISTINCT)
		o->distinct = tidei_dset_count(a->ds);
	if (g & TIDEI_AGG_QUANTILE)
		o->quantile = tidei_qsk_quantile(a->qs, s->q);
}

void
tidei_acc_encode(const tidei_acc *a, uint32_t aggs, tidei_buf *b)
{
	tidei_put_u64(b, a->n);
	if (aggs & TIDEI_AGG_SUM) {
		tidei_put_f64(b, a->sum);
		tidei_put_f64(b, a->c);
	}
	if (aggs & TIDEI_WELFORD_AGGS) {
		tidei_put_f64(b, a->mean);
		tidei_put_f64(b, a->m2);
	}
	if (aggs & TIDEI_AGG_MIN)
		tidei_put_f64(b, a->min);
	if (aggs & TIDEI_AGG_MAX)
		tidei_put_f64(b, a->max);
	if (aggs & TIDEI_AGG_DISTINCT)
		tidei_dset_encode(a->ds, b);
	if (aggs & TIDEI_AGG_QUANTILE)
		tidei_qsk_encode(a->qs, b);
}

/* Read an accumulator of at least one event into @p a (zeroed); on
 * failure what was read is the caller's to free. */
int
tidei_acc_decode(tidei_acc *a, uint32_t aggs, tidei_rd *r)
{
	int rc;

	a->n = tidei_get_u64(r);
	if (aggs & TIDEI_AGG_SUM) {
		a->sum = tidei_get_f64(r);
		a->c = tidei_get_f64(r);
	}
	if (aggs & TIDEI_WELFORD_AGGS) {
		a->mean = tidei_get_f64(r);
		a->m2 = tidei_get_f64(r);
	}
	if (aggs & TIDEI_AGG_MIN)
		a->min = tidei_get_f64(r);
	if (aggs & TIDEI_AGG_MAX)
		a->max = tidei_get_f64(r);
	if (r->bad || a->n == 0)
		return TIDE_EIO;
	if ((aggs & TIDEI_AGG_DISTINCT) && (rc = tidei_dset_decode(&a->ds, r)) != TIDE_OK)
		return rc;
	if ((aggs & TIDEI_AGG_QUANTILE) && (rc = tidei_qsk_decode(&a->qs, r)) != TIDE_OK)
		return rc;
	return r->bad ? TIDE_EIO : TIDE_OK;
}
