/*
 * http.h - the engine's HTTP endpoint, on its own event loop (libevent's
 * evhttp): CloudEvents posted in the HTTP binding's structured, batched
 * and binary modes go into the turn's batch and are answered after the
 * commit, like REP requests; /healthz and /readyz answer at once.
 */
#ifndef TIDE_HTTP_H
#define TIDE_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "batch.h"
#include "err.h"
#include "tide.h"

struct event_base;

typedef struct tidei_http_opts {
	/* "PORT", ":PORT" (both on 127.0.0.1), "HOST:PORT" or "[V6]:PORT";
	 * port 0 picks a free one (tidei_http_address() tells which) */
	const char *listen;
	const char *token;  /* a bearer token POST /events must carry; NULL: none */
	size_t turn_events; /* a batch holding this many events is full */
	size_t max_message; /* largest request body; also a full batch's bytes */
	int timeout_s;      /* reading a request, writing a reply */
} tidei_http_opts;

/** The engine's side. */
typedef struct tidei_http_host {
	void *ud;
	/** New events wait in the batch. */
	void (*input)(void *ud);
	/** 1 if the engine is ready to take events (log open, scripts loaded,
	 *  not stopping); else 0 with the reason in @p why. */
	int (*ready)(void *ud, char *why, size_t n);
	/** GET /projections/NAME[/KEY]: append the answer to @p reply (the
	 *  same JSON as a REP query: one key's state, or the states under
	 *  @p prefix, at most @p limit) and return its HTTP status. */
	int (*query)(void *ud, const char *name, const char *key, size_t klen, const char *prefix,
		     size_t limit, tidei_buf *reply);
	/** GET /metrics: append the Prometheus exposition to @p out. */
	void (*metrics)(void *ud, tidei_buf *out);
	void (*log)(void *ud, int level, const char *fmt, ...) TIDEI_PRINTF(3, 4);
} tidei_http_host;

typedef struct tidei_http tidei_http;

/** Listen on @p o->listen and serve on @p base.  Events go into @p batch,
 *  the same one the nanomsg endpoints fill; GET /events reads @p log (a
 *  view of the engine's, NULL: no reads). */
int tidei_http_open(tidei_http **out, struct event_base *base, const tidei_http_opts *o,
		    tidei_batch *batch, tide_log *log, const tidei_http_host *host, char *err);
/** Stop listening and drop every connection (NULL is fine).  Requests
 *  still waiting for a commit are not answered: call it after the last
 *  turn. */
void tidei_http_close(tidei_http *h);
/** Refuse new events (503) while the engine stops. */
void tidei_http_pause(tidei_http *h, int paused);
/** The log's end moved to @p seq (after a commit): streams send on.
 *  Call it outside the engine's transactions. */
void tidei_http_committed(tidei_http *h, uint64_t seq);
/** "HOST:PORT" it listens on, the port as bound. */
const char *tidei_http_address(const tidei_http *h);
/** 1 if it listens only on a loopback address. */
int tidei_http_local(const tidei_http *h);

/** Requests answered, by resource, method and status. */
typedef struct tidei_http_count {
	const char *handler; /* "/events", "/projections/", ... or "other" */
	const char *method;  /* "GET", "HEAD", "POST" or "other" */
	int code;
	uint64_t n;
} tidei_http_count;
#define TIDEI_HTTP_COUNTS 64

/** Counters since start. */
typedef struct tidei_http_stats {
	tidei_http_count answered[TIDEI_HTTP_COUNTS]; /* first seen first */
	size_t nanswered;
	uint64_t requests;
	uint64_t events;  /* events taken into the batch */
	uint64_t refused; /* requests answered with 4xx or 5xx before the batch */
	uint64_t streams; /* event streams open now */
} tidei_http_stats;
void tidei_http_stats_get(const tidei_http *h, tidei_http_stats *st);

#endif
