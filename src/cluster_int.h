/*
 * cluster_int.h - what the three parts of cluster mode share (cluster.h):
 * cluster.c (joining, leaving, taking what the partitions deliver),
 * cluster_pub.c (publishing to the stream), cluster_lease.c (the keeper's thread: leases, the
 * subscriptions they bring, queries between nodes) and cluster_outbox.c (what consumers emit, on
 * its way to the stream).  Nothing else includes it.
 */
#ifndef TIDE_CLUSTER_INT_H
#define TIDE_CLUSTER_INT_H

#include <errno.h>
#include <inttypes.h>
#include <nats/nats.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster.h"
#include "histo.h"
#include "event.h"
#include "partition.h"

/* Batches waiting for their acknowledgements at once. */
#define MAX_FLIGHTS 4
/* Messages waiting for the loop; a delivery thread waits above this. */
#define QUEUE_MAX 20000
/* How long close() waits for acknowledgements still due (ms). */
#define CLOSE_WAIT_MS 2000
/* A JetStream API call gives up after this long (ms); a lease's sooner,
 * so that the keeper's round stays short of a lease (and of a stop). */
#define API_WAIT_MS 5000
#define LEASE_WAIT_MS 1500
/* Joining waits this long (ms) for servers that start or elect leaders. */
#define JOIN_WAIT_MS 30000
/* A published event without an acknowledgement after this long (ms) is
 * answered as not stored (the producer sends it again). */
#define PUB_WAIT_MS 10000

/* A table slot whose message was answered (lookups go past it). */
#define SENT_GONE ((natsMsg *)(uintptr_t)1)

/* One published event: where its answer goes. */
typedef struct sent {
	natsMsg *msg; /* as handed to libnats (the key of the table) */
	size_t item;  /* in the flight's batch */
} sent;

/* A batch waiting for its acknowledgements. */
typedef struct flight {
	tidei_batch b;
	sent *sent; /* open addressing by msg pointer, cap a power of 2 */
	size_t cap, n;
	size_t answered;     /* under cl->mu */
	uint64_t *seq;       /* per item: the stream's sequence, or 0 */
	uint8_t *dup;        /* per item: a duplicate */
	char **why;          /* per item: the error, or NULL (malloc'd) */
	struct flight *next; /* in cl->flights */
	int sealed;          /* every event is handed to libnats */
	int has_batch;       /* producers' events: b goes back to the engine */
	size_t nentries;     /* seq, dup and why have this many */
	uint64_t *oid;       /* an outbox flight: entry -> outbox id */
} flight;

/* What a subscription's deliveries carry: its partition and generation.
 * Kept until close (a delivery may still be running when it is dropped). */
typedef struct subctx {
	struct part *pt;
	uint32_t gen;
	struct subctx *next;
} subctx;

/* A growable list of outbox ids. */
typedef struct ids {
	uint64_t *v;
	size_t n, cap;
} ids;

static inline int
tidei_cl_ids_push(ids *l, uint64_t id)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 64;
		uint64_t *v = realloc(l->v, cap * sizeof *v);
		if (v == NULL)
			return -1;
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = id;
	return 0;
}

/* A message from an owned partition, waiting for the loop. */
typedef struct queued {
	natsMsg *msg;
	uint32_t part;
	uint32_t gen; /* the subscription's: older ones are dropped */
} queued;

typedef struct part {
	natsSubscription *sub;
	natsSubscription *qsub; /* queries for its keys, while owned (the keeper's) */
	uint32_t gen;           /* bumped at each (re)subscription and at each loss */
	int owned;
	uint64_t rev;      /* of our lease */
	uint64_t position; /* committed: the last sequence stored here */
	uint64_t taken;    /* taken into the open turn (>= position) */
	uint64_t pending;  /* after the last taken, as the stream said then */
	size_t queued;     /* messages of it in cl->q; under mu */
	int resubscribe;   /* the turn was aborted: read again from position */
	char owner[64];
	uint64_t rpos, rlag; /* another owner's position and lag, as its lease says */
	uint64_t seen_taken; /* the keeper's: taken as of its last round */
	int stalled;         /* the keeper's: rounds with messages pending, none taken */
	struct tidei_cluster *cl;
	uint32_t index;
} part;

struct tidei_cluster {
	tidei_cluster_opts o;
	char *urls, *node, *stream, *prefix, *key;
	tidei_cluster_host host;
	natsConnection *nc;
	jsCtx *js;
	jsCtx *kjs; /* the leases', with a shorter wait */
	kvStore *kv;
	pthread_mutex_t mu;
	pthread_cond_t room; /* the queue has room again */
	pthread_cond_t tick; /* the keeper's sleep (cut short by close) */
	pthread_t keeper;
	int keeper_started;
	atomic_int stopping;
	flight *flights; /* oldest first; under mu */
	size_t nflights; /* under mu */
	queued *q;       /* under mu */
	size_t qn, qcap;
	natsMsg **rq; /* queries from other nodes, waiting for the loop; under mu */
	/* the outbox: events the consumers emitted, kept in the log's meta
	 * database until the stream has them (see tidei_cluster_outbox_put) */
	tidei_log *log;
	uint64_t out_next; /* the next entry's id */
	ids pending;       /* put in the open turn: published once it commits */
	tidei_buf pending_recs;
	size_t *pending_off; /* in pending_recs, per pending entry, and the end */
	size_t pending_cap;
	ids acked;    /* in the stream: deleted in the next turn; under mu */
	ids deleting; /* deleted in the open turn */
	ids retry;    /* not acknowledged: sent again; under mu */
	int64_t retry_at;
	size_t rqn, rqcap;
	part *parts;              /* owned/sub/gen/rev/owner under mu; position/taken loop-only */
	tidei_cluster_part *view; /* for stat */
	subctx *subs;             /* every subscription's, freed at close; under mu */
	unsigned nodes;
	uint64_t published, received;
	tidei_buf json; /* an event as published */
	tidei_buf rec;  /* scratch */
	char err[TIDEI_ERRLEN];
};

#define LOG(cl, level, ...) (cl)->host.log((cl)->host.ud, level, __VA_ARGS__)

/* cluster_pub.c */
/** The reason libnats gave last, or @p s in words. */
const char *tidei_cl_why(natsStatus s);
/** libnats's acknowledgement handler (on its thread). */
void tidei_cl_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure);
/** The flights that are done, oldest first, out of cl->flights. */
flight *tidei_cl_take_done(tidei_cluster *cl);
/** A producers' flight's results into its batch, which goes back to the
 *  engine (host->published); nothing for an outbox flight. */
void tidei_cl_hand_back(tidei_cluster *cl, flight *f);
void tidei_cl_flight_free(flight *f);
/** A flight of @p n entries, appended to cl->flights (NULL: no memory). */
flight *tidei_cl_flight_new(tidei_cluster *cl, size_t n);
/** Publish record @p rec as entry @p i of @p f: 0, or -1 when it could
 *  not be sent (f->why[i] says why; no answer comes for it). */
int tidei_cl_send_rec(tidei_cluster *cl, flight *f, size_t i, const uint8_t *rec, size_t len);
/** Every entry of @p f is handed to libnats. */
void tidei_cl_flight_seal(tidei_cluster *cl, flight *f);

/* cluster_outbox.c */
int tidei_cl_outbox_open(tidei_cluster *cl, tidei_log *log, char *err);
int tidei_cl_outbox_write(tidei_cluster *cl, tidei_log *log, char *err);
void tidei_cl_outbox_committed(tidei_cluster *cl);
void tidei_cl_outbox_aborted(tidei_cluster *cl);
void tidei_cl_outbox_retry(tidei_cluster *cl);

/* cluster_lease.c */
/** The keeper's thread (cl as @p arg), until cl->stopping. */
void *tidei_cl_keeper(void *arg);
void tidei_cl_unsubscribe(tidei_cluster *cl, uint32_t p);
/** Stop owning partition @p p; with @p release, free its lease at once. */
void tidei_cl_drop_lease(tidei_cluster *cl, uint32_t p, int release);
/** Answer the queries other nodes forwarded (in the loop thread). */
void tidei_cl_answer_queries(tidei_cluster *cl);

#endif
