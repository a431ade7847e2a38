/*
 * metrics.h - the engine's counters, and GET /metrics: everything in the
 * Prometheus text format (version 0.0.4), read from the counters, the
 * ingest and HTTP statistics and the log itself.
 */
#ifndef TIDE_METRICS_H
#define TIDE_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "batch.h"
#include "buf.h"
#include "histo.h"
#include "http.h"
#include "ingest.h"
#include "tide.h"

/** What the engine counts as it runs. */
typedef struct tidei_counters {
	uint64_t commits;
	tidei_histo commit; /* per commit, the fsync included (tidei_histo_commit) */
	uint64_t stored, duplicates, invalid, conflicts, not_stored; /* events */
	uint64_t reloads;
} tidei_counters;

/** Count what became of a finished turn's (or a cluster batch's) events. */
void tidei_counters_add(tidei_counters *c, const tidei_batch *b);

/** A consumer or projection as it runs (not as stored). */
typedef struct tidei_handler_stats {
	const char *name;
	int projection;          /* 0: a consumer */
	uint64_t handled;        /* calls that succeeded (consumers) */
	uint64_t failed;         /* calls that failed (consumers) */
	uint64_t retried;        /* retries scheduled (consumers) */
	uint64_t dead_letters;   /* events given up on (consumers) */
	int rule;                /* a consumer with rule options: the two below */
	uint64_t closed;         /* windows closed */
	uint64_t expired;        /* keys expired */
	const tidei_histo *took; /* handler calls (tidei_histo_handler) */
} tidei_handler_stats;

/** A scrape's sources; any pointer may be NULL when that part is off. */
typedef struct tidei_metrics_src {
	const tidei_counters *c;
	const tidei_handler_stats *handlers; /* consumers, then projections */
	size_t nhandlers;
	tide_log *log; /* a view of the engine's log */
	const tidei_ingest_stats *ingest;
	const tidei_http_stats *http;
	int ready;
} tidei_metrics_src;

/** Append the exposition to @p out. */
void tidei_metrics_write(tidei_buf *out, const tidei_metrics_src *m);

#endif
