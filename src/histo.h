/*
 * histo.h - latency histograms for the metrics: counts per bucket, kept
 * by whoever measures (the engine's commits, each consumer's handler
 * calls, each projection's live turns) and written out by metrics.c.
 *
 * Adding a value is a few comparisons and no allocation, so a handler's
 * every call can be timed.  Times are read from the monotonic clock.
 */
#ifndef TIDE_HISTO_H
#define TIDE_HISTO_H

#include <stdint.h>
#include <time.h>

#define TIDEI_HISTO_BUCKETS 12

/** A histogram's upper bounds (ns), increasing. */
typedef struct tidei_histo_bounds {
	int64_t le[TIDEI_HISTO_BUCKETS];
} tidei_histo_bounds;

/** Commits: 0.5 ms to 2.5 s, the fsync included. */
extern const tidei_histo_bounds tidei_histo_commit;
/** A handler's call: 1 µs to 1 s. */
extern const tidei_histo_bounds tidei_histo_handler;

/** Counts per bucket (not cumulative); the last is above every bound. */
typedef struct tidei_histo {
	uint64_t n[TIDEI_HISTO_BUCKETS + 1];
	uint64_t count;
	int64_t sum_ns;
} tidei_histo;

static inline void
tidei_histo_add(tidei_histo *h, const tidei_histo_bounds *b, int64_t ns)
{
	size_t k = 0;

	while (k < TIDEI_HISTO_BUCKETS && ns > b->le[k])
		k++;
	h->n[k]++;
	h->count++;
	h->sum_ns += ns;
}

/** Add the counts of @p from to @p into. */
static inline void
tidei_histo_merge(tidei_histo *into, const tidei_histo *from)
{
	for (size_t k = 0; k <= TIDEI_HISTO_BUCKETS; k++)
		into->n[k] += from->n[k];
	into->count += from->count;
	into->sum_ns += from->sum_ns;
}

/** Now on the monotonic clock (ns), for durations. */
static inline int64_t
tidei_mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

#endif
