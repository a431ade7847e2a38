/*
 * metrics.h - the engine's counters, and GET /metrics: everything in the
 * Prometheus text format (version 0.0.4), read from the counters, the
 * ingest and HTTP statistics and the log itself.
 */
#ifndef TIDE_METRICS_H
#define TIDE_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "http.h"
#include "ingest.h"
#include "tide.h"

#define TIDEI_HISTO_BUCKETS 12

/** A latency histogram: counts per bucket (not cumulative), in seconds. */
typedef struct tidei_histo {
	uint64_t n[TIDEI_HISTO_BUCKETS + 1]; /* the last: above every bound */
	uint64_t count;
	double sum;
} tidei_histo;

void tidei_histo_add(tidei_histo *h, double seconds);

/** What the engine counts as it runs. */
typedef struct tidei_counters {
	uint64_t commits;
	tidei_histo commit; /* seconds per commit, the fsync included */
	uint64_t stored, duplicates, invalid, conflicts, not_stored; /* events */
	uint64_t reloads;
} tidei_counters;

/** A scrape's sources; any pointer may be NULL when that part is off. */
typedef struct tidei_metrics_src {
	const tidei_counters *c;
	tide_log *log; /* a view of the engine's log */
	const tidei_ingest_stats *ingest;
	const tidei_http_stats *http;
	int ready;
} tidei_metrics_src;

/** Append the exposition to @p out. */
void tidei_metrics_write(tidei_buf *out, const tidei_metrics_src *m);

#endif
