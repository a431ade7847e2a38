/*
 * accum.h - the accumulator behind a tumbling window, a hopping pane or
 * a session (agg.c): count, compensated sum, Welford's mean and m2, min,
 * max and the sketches, each kept only when asked for.  Accumulators
 * merge (hopping windows are merged panes, bridged sessions merge), are
 * stored, and are the one place aggregates are read out into a
 * tidei_agg, for the ring of sliding and count windows too.
 */
#ifndef TIDE_ACCUM_H
#define TIDE_ACCUM_H

#include <stddef.h>
#include <stdint.h>

#include "agg.h"
#include "buf.h"
#include "sketch.h"

/** Aggregates read from the value, and those kept by Welford's update. */
#define TIDEI_VALUE_AGGS \
	(TIDEI_AGG_SUM | TIDEI_AGG_MIN | TIDEI_AGG_MAX | TIDEI_AGG_MEAN | TIDEI_AGG_VARIANCE | \
	 TIDEI_AGG_STDDEV | TIDEI_AGG_QUANTILE)
#define TIDEI_WELFORD_AGGS (TIDEI_AGG_MEAN | TIDEI_AGG_VARIANCE | TIDEI_AGG_STDDEV)

/** The mergeable summary of a set of events; all zero is empty. */
typedef struct tidei_acc {
	uint64_t n;
	double sum, c;   /* SUM: Neumaier's compensated sum is sum + c */
	double mean, m2; /* MEAN, VARIANCE, STDDEV: Welford */
	double min, max; /* MIN, MAX (kept whatever is asked: they are cheap) */
	tidei_dset *ds;  /* DISTINCT */
	tidei_qsk *qs;   /* QUANTILE */
} tidei_acc;

/** Neumaier's compensated addition: *@p s + *@p c is the sum, each
 *  step's rounding error going to *@p c. */
void tidei_neumaier(double *s, double *c, double x);

/** Count value @p v with mixed token @p h (tidei_dset_mix), keeping what
 *  @p aggs asks for.  TIDE_OK, or TIDE_ENOMEM with @p a unchanged. */
int tidei_acc_add(tidei_acc *a, uint32_t aggs, double v, uint64_t h);
/** Merge @p src into @p dst (Chan's formula for m2).  TIDE_OK or
 *  TIDE_ENOMEM; not atomic: merge into a scratch accumulator and keep it
 *  only on success. */
int tidei_acc_merge(tidei_acc *dst, const tidei_acc *src);
/** Free the sketches (the accumulator is then empty of them). */
void tidei_acc_free(tidei_acc *a);
/** Bytes the sketches hold. */
size_t tidei_acc_memory(const tidei_acc *a);

/** Append what @p aggs asks of @p a, which holds at least one event. */
void tidei_acc_encode(const tidei_acc *a, uint32_t aggs, tidei_buf *b);
/** Read it back into @p a (zeroed).  TIDE_OK, TIDE_EIO or TIDE_ENOMEM;
 *  on failure what was read is the caller's to free. */
int tidei_acc_decode(tidei_acc *a, uint32_t aggs, tidei_rd *r);

/** The aggregates of an empty window: count 0, sum 0 when asked, NAN
 *  for the rest, start and end 0. */
void tidei_agg_empty(tidei_agg *o, const tidei_win_spec *s);
/** The aggregates of @p a as @p s asks for them, start and end 0. */
void tidei_agg_fill(tidei_agg *o, const tidei_acc *a, const tidei_win_spec *s);

#endif
