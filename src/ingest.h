/*
 * ingest.h - the nanomsg endpoints of an engine, joined to its event loop:
 * PULL (fire and forget), REP (acknowledged after the commit) and PUB
 * (every committed event, topic = its type).
 */
#ifndef TIDE_INGEST_H
#define TIDE_INGEST_H

#include <stddef.h>
#include <stdint.h>

#include "batch.h"
#include "err.h"

struct event_base;

typedef struct tidei_ingest_opts {
	const char *pull; /* URLs; NULL or "" leaves the endpoint out */
	const char *rep;
	const char *pub;
	size_t turn_events; /* stop draining once the batch holds this many */
	size_t max_message; /* largest message accepted; also the bytes of input
			     * a turn takes (it stops draining past them) */
} tidei_ingest_opts;

/** The engine's side: new input is waiting in the batch; diagnostics. */
typedef struct tidei_ingest_host {
	void *ud;
	void (*input)(void *ud);
	/** A REP request to the engine rather than events (a JSON object whose
	 *  first member is "command" or "query"): append the reply to @p reply
	 *  and return 0, or keep @p ctl (the requester's routing header) and
	 *  return 1 to answer later with tidei_ingest_reply(). */
	int (*control)(void *ud, const char *msg, size_t len, tidei_buf *reply, void *ctl);
	void (*log)(void *ud, int level, const char *fmt, ...) TIDEI_PRINTF(3, 4);
} tidei_ingest_host;

typedef struct tidei_ingest tidei_ingest;

int tidei_ingest_open(tidei_ingest **out, struct event_base *base, const tidei_ingest_opts *o,
		      tidei_batch *batch, const tidei_ingest_host *host, char *err);
void tidei_ingest_close(tidei_ingest *in);

/** Stop or restart reading (while stopping, or when the batch is full). */
void tidei_ingest_pause(tidei_ingest *in, int paused);
/** The turn's batch was committed and emptied: read what was held back. */
void tidei_ingest_drained(tidei_ingest *in);

/** Answer a request kept by the control callback; @p ctl passes back to
 *  nanomsg.  A client that went away is not an error. */
void tidei_ingest_reply(tidei_ingest *in, void *ctl, const tidei_buf *reply);

/** 1 if anything is connected to the PUB endpoint. */
int tidei_ingest_has_subscribers(tidei_ingest *in);
/** Publish one committed event: "<type>\t<json>". */
void tidei_ingest_publish(tidei_ingest *in, const char *type, size_t tlen, const char *json,
			  size_t jlen);

/** 1 if endpoint @p url can only be reached from this machine (ipc://,
 *  inproc://, or tcp:// and ws:// on a loopback address). */
int tidei_ingest_local(const char *url);

/** Once a second: report rejected events that were not logged one by one. */
void tidei_ingest_tick(tidei_ingest *in);

/** Counters since start. */
typedef struct tidei_ingest_stats {
	uint64_t messages;  /* on both sockets */
	uint64_t pull, rep; /* messages per socket */
	uint64_t requests;  /* of rep's: queries and commands (tide query, tide dlq...) */
	uint64_t rejected;  /* events and messages refused */
	uint64_t too_large; /* of those: messages over max_message_size */
} tidei_ingest_stats;
void tidei_ingest_stats_get(const tidei_ingest *in, tidei_ingest_stats *st);

#endif
