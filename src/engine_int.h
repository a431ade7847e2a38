/*
 * engine_int.h - the engine's state, shared by engine.c (lifecycle,
 * turns, the nanomsg side) and engine_http.c (the HTTP side and its
 * metrics).  Nothing outside the engine includes it.
 */
#ifndef TIDE_ENGINE_INT_H
#define TIDE_ENGINE_INT_H

#include <limits.h>
#include <stdatomic.h>

#include "batch.h"
#include "conf.h"
#include "consumer.h"
#include "cthread.h"
#include "dlq.h"
#include "flight.h"
#include "http.h"
#include "inbox.h"
#include "ingest.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "projection.h"
#include "request.h"
#include "tide.h"

/* Growing the map this many times in one turn means something is wrong. */
#define MAX_GROWTHS 8
/* Pause after a consumer failed for a reason other than a full map. */
#define CONSUMER_RETRY_NS 1000000000ll
/* Dead letters retried or dropped per turn on request, and how many such
 * requests may wait their turn. */
#define DLQ_SLICE 1000
#define DLQ_QUEUE 16

/* A retry or drop of dead letters asked for on REP: done a slice per turn
 * (each slice commits with its turn), answered when the last is done. */
typedef struct dlq_req {
	tidei_dlq_job job;       /* progress, including the open turn */
	tidei_dlq_job committed; /* progress as of the last commit */
	void *ctl;               /* the requester's routing header */
} dlq_req;

/* A consumer added with tide_consumer_add(). */
struct c_consumer {
	char *name, *pattern;
	tidei_on_opts opts; /* name and pattern point to the copies above */
	tide_consumer_fn *fn;
	void *ud;
};

/** What engine.c lends engine_http.c (which calls nothing of engine.c's
 *  by name: the dependency runs one way). */
typedef struct tidei_engine_fns {
	void (*log)(void *ud, int level, const char *fmt, ...) TIDEI_PRINTF(3, 4);
	void (*input)(void *ud); /* new events in the batch: a turn soon */
	/** A REP query's answer into @p reply; its TIDE_* code. */
	int (*query)(tide_engine *e, const tidei_request *r, tidei_buf *reply);
} tidei_engine_fns;

struct tide_engine {
	tide_config *cfg;
	tidei_loop loop;
	tidei_log *log;
	tidei_flight *flight; /* which handler runs on which event, for after a death */
	tidei_ingest *in;
	tidei_http *http; /* NULL unless configured */
	tide_log *view;   /* the log as HTTP reads it */
	tidei_consumers *cs;
	tidei_cthread *ct; /* the consumers' own thread while they are away on it */
	int busy_turns;    /* turns in a row that stored many events */
	tidei_projections *ps;
	tidei_projections *defining; /* where tide.projection() goes while scripts load */
	struct c_consumer *cc;       /* consumers added in C, again on a reload */
	size_t ncc;
	tidei_batch batch;
	tidei_inbox *inbox; /* texts from tide_publish_mt(), taken by wake(); open to close */
	tidei_buf pubbuf;
	tidei_buf reqbuf;        /* a REP request, decoded */
	dlq_req jobs[DLQ_QUEUE]; /* dead-letter requests, oldest first */
	size_t njobs;
	uint64_t published; /* last seq sent on PUB */
	uint64_t synced;    /* last seq flushed to disk */
	int opened;
	int stopping;
	int in_turn; /* commit_turn() is running: handlers may call back into us */
	/* set from any thread or a signal handler: atomic, and lock-free */
	atomic_int stop_requested;
	tide_stop_fn *on_stop; /* the embedder's stop notice, and when it is due */
	void *on_stop_ud;
	struct event *stopped;
	int notified;
	int halted;               /* the stop's last turn is done: no turn or tick after it */
	int lagging;              /* a consumer is behind the end of the log */
	int64_t consumers_resume; /* consumers paused until this time (ns) */
	char dir[PATH_MAX];
	char urls[3][PATH_MAX + 16];
	char http_addr[96]; /* as bound, or "" */
	char endpoints_file[PATH_MAX + 16];
	tidei_counters counters;       /* for GET /metrics */
	struct tidei_cluster *cluster; /* NULL unless configured (engine_cluster.c) */
	tidei_batch cbatch;            /* the turn's events from the cluster's partitions */
	int answering;                 /* a query another node forwarded: answered here */
	tidei_engine_fns fns;          /* engine.c's, for engine_http.c */
	char err[TIDEI_ERRLEN];
};

/* engine_http.c */
/** The HTTP endpoint, when configured (e->cfg->http). */
int tidei_engine_open_http(tide_engine *e, const tidei_engine_fns *fns);

/* engine_cthread.c: the consumers on a thread of their own */
/** At the start of a turn that stores @p stored events: send the
 *  consumers to their thread if the engine is busy (or, with "always", if
 *  they have anything to handle) and nothing keeps them there. */
void tidei_engine_consumers_away(tide_engine *e, size_t stored);
/** Bring them back to the engine's thread (nothing if they are there). */
void tidei_engine_consumers_home(tide_engine *e);

/* engine_cluster.c: cluster mode over NATS JetStream (cluster.h) */
/** Join the cluster when configured (e->cfg->cluster). */
int tidei_engine_open_cluster(tide_engine *e);
/** Consumers made afresh (a reload) emit into the cluster's outbox. */
void tidei_engine_cluster_consumers(tide_engine *e, tidei_consumers *cs);
/** Leave it, after the acknowledgements still due (NULL cluster: nothing). */
void tidei_engine_close_cluster(tide_engine *e);
/** At a turn's start: the producers' batch goes to the stream (when
 *  another may), and what the owned partitions delivered fills the batch
 *  returned, the one the turn stores. */
tidei_batch *tidei_engine_cluster_turn(tide_engine *e);
/** In the turn's transaction: the partitions' positions. */
int tidei_engine_cluster_write(tide_engine *e, char *err);
/** The turn committed (1) or was aborted (0). */
void tidei_engine_cluster_done(tide_engine *e, int committed);
/** A query @p r for a key of a partition another node owns: 1 with that
 *  node's answer in @p reply and its code in *rc; 0 when it is answered
 *  here. */
int tidei_engine_cluster_query(tide_engine *e, const tidei_request *r, tidei_buf *reply, int *rc);
/** The cluster's series for GET /metrics (nothing outside a cluster). */
void tidei_engine_cluster_metrics(tide_engine *e, tidei_buf *out);
/** {"command":"cluster"}: the node's view of the cluster, as JSON. */
void tidei_engine_cluster_stat(tide_engine *e, tidei_buf *reply);

#endif
