/*
 * cluster.h - a Tide node in a cluster over NATS JetStream.
 *
 * Events go into one JetStream stream, partitioned by a key (the event's
 * subject by default): partition P of the stream is the subjects
 * PREFIX.p.P.>, and an event with key K is in partition
 * tidei_partition(K) (partition.h).  Tide publishes an event as its
 * CloudEvents JSON on PREFIX.p.P.t with its id as Nats-Msg-Id, so the
 * stream drops a copy sent again within its dedupe window.  Any NATS
 * client can publish too: on PREFIX.p.P.anything, or on PREFIX.in.K when
 * the servers map that subject with partition(N, 1) (see the README).
 *
 * Each node owns some partitions, through leases in a JetStream
 * key-value bucket (a key per partition, holding the owner's name, that
 * expires unless the owner renews it): it reads the partitions it owns,
 * from the stream sequence it stored last, and appends their events to
 * its own log, with that sequence, in one transaction.  A node that dies
 * stops renewing; its partitions' leases expire and the other nodes take
 * them, each starting from the position it stored for the partition (0
 * when it never owned it: the partition's whole history, which rebuilds
 * its keys' state).  Nodes share the partitions evenly: a node with more
 * than its share lets the extra ones go, so a node that joins gets some.
 *
 * Threads: libnats calls back on threads of its own (acknowledgements,
 * deliveries); the leases are kept by a thread of this module.  The
 * engine's loop thread calls everything below; the module wakes it with
 * host->wake when there is something for tidei_cluster_poll().
 */
#ifndef TIDE_CLUSTER_H
#define TIDE_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include "batch.h"
#include "err.h"
#include "log.h"

typedef struct tidei_cluster tidei_cluster;

typedef struct tidei_cluster_opts {
	const char *urls;    /* "nats://127.0.0.1:4222,nats://..." */
	const char *node;    /* this node's name, unique in the cluster */
	const char *stream;  /* the stream's name (default "TIDE") */
	const char *prefix;  /* its subjects' first token (default "tide") */
	const char *key;     /* partition key: "subject" (default) or a path, "data.card" */
	unsigned partitions; /* default 8; fixed once the stream exists */
	unsigned replicas;   /* of the stream and the leases (default 1) */
	int64_t lease_ns;    /* a lease lasts this long unless renewed (default 6 s) */
	int64_t dedupe_ns;   /* the stream's duplicate window (default 10 min) */
	size_t max_event;    /* max_event_size, for parsing what arrives */
} tidei_cluster_opts;

typedef struct tidei_cluster_host {
	void *ud;
	/** From any thread: call tidei_cluster_poll() soon. */
	void (*wake)(void *ud);
	/** In the loop thread: a batch the engine handed to
	 *  tidei_cluster_publish() has its results (seq: the stream's
	 *  sequence); the host tells its waiters (tidei_batch_finish). */
	void (*published)(void *ud, tidei_batch *b);
	/** In the loop thread: answer a query another node forwarded (a REP
	 *  request's JSON) into @p out, here, without forwarding it again;
	 *  returns its TIDE_* code. */
	int (*answer)(void *ud, const char *req, size_t len, tidei_buf *out);
	void (*log)(void *ud, int level, const char *fmt, ...) TIDEI_PRINTF(3, 4);
} tidei_cluster_host;

/** Connect, create the stream and the lease bucket if they do not exist,
 *  read the positions stored in @p log and start keeping leases.  Errors
 *  (no server answers, a stream of another shape) in @p err. */
int tidei_cluster_open(tidei_cluster **out, const tidei_cluster_opts *o,
		       const tidei_cluster_host *host, tidei_log *log, char *err);
/** Let the leases go (others take the partitions at once), stop reading,
 *  and wait a little for the acknowledgements still due; batches that do
 *  not get theirs fail.  NULL is fine. */
void tidei_cluster_close(tidei_cluster *cl);

/** 1 if another batch can be published now (a bounded number wait for
 *  their acknowledgements). */
int tidei_cluster_can_publish(const tidei_cluster *cl);
/** Publish the valid events of @p b and take the batch: @p b is left
 *  empty, and comes back through host->published once every event has
 *  its acknowledgement or its error.  Events with an expected version
 *  are refused (the stream cannot check it). */
int tidei_cluster_publish(tidei_cluster *cl, tidei_batch *b, char *err);

/** In the loop thread: hand back the batches that are done, and move the
 *  events that arrived from owned partitions into @p in (as records, the
 *  turn's input).  Returns 1 if @p in got events. */
int tidei_cluster_poll(tidei_cluster *cl, tidei_batch *in);
/** In the turn's write transaction: store the partitions' positions of
 *  what the turn took from them. */
int tidei_cluster_write(tidei_cluster *cl, tidei_log *log, char *err);
/** The turn committed (its positions are the partitions' now), or was
 *  aborted (what it took is read again from the stream). */
void tidei_cluster_committed(tidei_cluster *cl);
void tidei_cluster_aborted(tidei_cluster *cl);

/** A query for @p key (the request @p req, JSON) where the key's
 *  partition is owned: 1 when it is owned here (answer it locally), else
 *  0 with the owner's answer in @p out and its TIDE_* code in *code
 *  (TIDE_ESTATE with a reason when no node answers).  Asked over NATS
 *  request/reply, from the loop thread: it waits for the answer (2 s at
 *  most). */
int tidei_cluster_forward(tidei_cluster *cl, const char *key, size_t klen, const char *req,
			  size_t len, tidei_buf *out, int *code);

/** Where the consumers' emits go in a cluster (a tidei_outbox_fn, with
 *  the cluster as @p ud): kept in the log in the open turn, published to
 *  the stream once it commits. */
int tidei_cluster_outbox_put(void *ud, const uint8_t *rec, size_t len, char *err);

/** The partition of an event (a record of @p b's), by the key option. */
uint32_t tidei_cluster_partition_of(const tidei_cluster *cl, const uint8_t *rec, size_t len);

/** What the node knows of the cluster, for tide stat and the metrics. */
typedef struct tidei_cluster_part {
	int owned;         /* by this node */
	char owner[64];    /* as last seen in its lease ("" if none) */
	uint64_t position; /* stream sequence of the last event stored here */
	uint64_t lag;      /* owned: events of it in the stream not stored yet */
} tidei_cluster_part;
typedef struct tidei_cluster_stat {
	const char *node;
	const char *stream;
	int connected;
	unsigned partitions;
	unsigned nodes; /* alive, as last counted */
	uint64_t published, received;
	const tidei_cluster_part *part; /* partitions entries */
} tidei_cluster_stat;
/** Valid until the next call into the module from the loop thread. */
void tidei_cluster_stat_get(tidei_cluster *cl, tidei_cluster_stat *st);

#endif
