/*
 * cluster.c - a Tide node in a cluster over NATS JetStream (cluster.h).
 *
 * Three flows, each with its own lock-free handover to the loop thread
 * through cl->mu:
 *
 *   publishing  the engine hands over a turn's batch (tidei_cluster_
 *               publish); each valid event goes out with
 *               js_PublishMsgAsync; libnats calls ack() on its thread
 *               with the stream's answer; the batch is "done" when every
 *               event has one, and poll() gives it back to the engine,
 *               which answers its producers.
 *   reading     a subscription per owned partition (an ordered consumer
 *               starting after the stored position) calls deliver() on
 *               its thread; the message waits in cl->q until poll()
 *               moves it into the turn's batch.  Its stream sequence
 *               becomes the partition's position when the turn commits.
 *   leases      keeper() runs on a thread of its own, every third of a
 *               lease: it renews the leases it holds, counts the nodes,
 *               gives up partitions above its share and takes free ones
 *               up to it.
 *
 * Exactly once per partition: the position is written in the same LMDB
 * transaction as the events (and everything the consumers did with
 * them); a message at or below the position is dropped, so a stream
 * that delivers again after a failover or a reconnection changes
 * nothing.
 */
#include "config.h"

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
#include "event.h"
#include "partition.h"

/* Batches waiting for their acknowledgements at once. */
#define MAX_FLIGHTS 4
/* Messages waiting for the loop; a delivery thread waits above this. */
#define QUEUE_MAX 20000
/* How long close() waits for acknowledgements still due (ms). */
#define CLOSE_WAIT_MS 5000
/* A JetStream API call (stream, lease) gives up after this long (ms). */
#define API_WAIT_MS 5000

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
} flight;

/* What a subscription's deliveries carry: its partition and generation.
 * Kept until close (a delivery may still be running when it is dropped). */
typedef struct subctx {
	struct part *pt;
	uint32_t gen;
	struct subctx *next;
} subctx;

/* A message from an owned partition, waiting for the loop. */
typedef struct queued {
	natsMsg *msg;
	uint32_t part;
	uint32_t gen; /* the subscription's: older ones are dropped */
} queued;

typedef struct part {
	natsSubscription *sub;
	uint32_t gen; /* bumped at each (re)subscription and at each loss */
	int owned;
	uint64_t rev;      /* of our lease */
	uint64_t position; /* committed: the last sequence stored here */
	uint64_t taken;    /* taken into the open turn (>= position) */
	uint64_t pending;  /* after the last taken, as the stream said then */
	size_t queued;     /* messages of it in cl->q; under mu */
	int resubscribe;   /* the turn was aborted: read again from position */
	char owner[64];
	struct tidei_cluster *cl;
	uint32_t index;
} part;

struct tidei_cluster {
	tidei_cluster_opts o;
	char *urls, *node, *stream, *prefix, *key;
	tidei_cluster_host host;
	natsConnection *nc;
	jsCtx *js;
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

static const char *
nats_why(natsStatus s)
{
	const char *last = nats_GetLastError(NULL);

	return last != NULL && last[0] != '\0' ? last : natsStatus_GetText(s);
}

/* ------------------------------------------------------------------------
 * Positions, in the log's meta database
 * ------------------------------------------------------------------------ */

static size_t
pos_key(const tidei_cluster *cl, uint32_t p, char *out, size_t n)
{
	int k = snprintf(out, n, "cluster.%s.%" PRIu32, cl->stream, p);

	return k > 0 && (size_t)k < n ? (size_t)k : 0;
}

static int
read_positions(tidei_cluster *cl, tidei_log *log, char *err)
{
	MDB_txn *txn;
	int mrc;

	if ((mrc = mdb_txn_begin(log->env, NULL, MDB_RDONLY, &txn)) != 0)
		return tidei_err(err, TIDE_EIO, "cannot read the log: %s", mdb_strerror(mrc));
	for (uint32_t p = 0; p < cl->o.partitions; p++) {
		char key[128];
		MDB_val k, v;
		k.mv_size = pos_key(cl, p, key, sizeof key);
		k.mv_data = key;
		if (mdb_get(txn, log->meta, &k, &v) == 0 && v.mv_size == 8)
			memcpy(&cl->parts[p].position, v.mv_data, 8);
		cl->parts[p].taken = cl->parts[p].position;
	}
	mdb_txn_abort(txn);
	return TIDE_OK;
}

int
tidei_cluster_write(tidei_cluster *cl, tidei_log *log, char *err)
{
	for (uint32_t p = 0; p < cl->o.partitions; p++) {
		part *pt = &cl->parts[p];
		char key[128];
		MDB_val k, v;
		int mrc;
		if (pt->taken == pt->position)
			continue;
		k.mv_size = pos_key(cl, p, key, sizeof key);
		k.mv_data = key;
		v.mv_size = 8;
		v.mv_data = &pt->taken;
		if ((mrc = mdb_put(log->txn, log->meta, &k, &v, 0)) != 0)
			return tidei_err(err, tidei_err_mdb(mrc),
					 "cannot store partition %" PRIu32 "'s position: %s", p,
					 mdb_strerror(mrc));
	}
	return TIDE_OK;
}

void
tidei_cluster_committed(tidei_cluster *cl)
{
	pthread_mutex_lock(&cl->mu);
	for (uint32_t p = 0; p < cl->o.partitions; p++)
		cl->parts[p].position = cl->parts[p].taken;
	pthread_mutex_unlock(&cl->mu);
}

void
tidei_cluster_aborted(tidei_cluster *cl)
{
	pthread_mutex_lock(&cl->mu);
	for (uint32_t p = 0; p < cl->o.partitions; p++) {
		part *pt = &cl->parts[p];
		if (pt->taken != pt->position) {
			pt->taken = pt->position;
			pt->resubscribe = pt->owned; /* the keeper reads them again */
		}
	}
	pthread_mutex_unlock(&cl->mu);
	pthread_cond_signal(&cl->tick);
}

/* ------------------------------------------------------------------------
 * Publishing
 * ------------------------------------------------------------------------ */

static size_t
slot_of(const flight *f, const natsMsg *m)
{
	uintptr_t h = (uintptr_t)m;

	h ^= h >> 17;
	h *= 0x9e3779b97f4a7c15ull;
	return (size_t)(h >> 7) & (f->cap - 1);
}

static void
flight_free(flight *f)
{
	if (f == NULL)
		return;
	for (size_t k = 0; f->why != NULL && k < f->b.n; k++)
		free(f->why[k]);
	free(f->why);
	free(f->seq);
	free(f->dup);
	free(f->sent);
	tidei_batch_free(&f->b);
	free(f);
}

/* libnats, on its thread: the stream's answer to one event. */
static void
ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
	tidei_cluster *cl = closure;
	int wake = 0;

	(void)js;
	pthread_mutex_lock(&cl->mu);
	for (flight *f = cl->flights; f != NULL; f = f->next) {
		size_t s = slot_of(f, msg);
		while (f->sent[s].msg != NULL && f->sent[s].msg != msg)
			s = (s + 1) & (f->cap - 1);
		if (f->sent[s].msg == NULL)
			continue;
		size_t it = f->sent[s].item;
		if (pa != NULL) {
			f->seq[it] = pa->Sequence;
			f->dup[it] = pa->Duplicate;
		} else {
			char text[300];
			snprintf(text, sizeof text,
				 "not stored: the cluster did not acknowledge it (%s)",
				 pae != NULL && pae->ErrText != NULL ? pae->ErrText
				 : pae != NULL                       ? natsStatus_GetText(pae->Err)
								     : "no answer");
			free(f->why[it]);
			f->why[it] = strdup(text);
		}
		f->answered++;
		wake = f->sealed && f->answered == f->n;
		break;
	}
	pthread_mutex_unlock(&cl->mu);
	if (wake)
		cl->host.wake(cl->host.ud);
}

int
tidei_cluster_can_publish(const tidei_cluster *cl)
{
	tidei_cluster *c = (tidei_cluster *)cl;
	size_t n;

	pthread_mutex_lock(&c->mu);
	n = c->nflights;
	pthread_mutex_unlock(&c->mu);
	return n < MAX_FLIGHTS;
}

uint32_t
tidei_cluster_partition_of(const tidei_cluster *cl, const uint8_t *rec, size_t len)
{
	struct tide_event ev;
	tide_value v;
	char num[40];
	const char *k = NULL;
	size_t n = 0;

	if (tidei_event_decode(&ev, rec, len) != 0)
		return 0;
	ev.seq = 0;
	ev.scratch = NULL;
	if (tide_event_value(&ev, cl->key, &v) == TIDE_OK) {
		if (v.type == TIDE_STRING) {
			k = v.s;
			n = v.len;
		} else if (v.type == TIDE_INT) {
			n = (size_t)snprintf(num, sizeof num, "%lld", (long long)v.i);
			k = num;
		} else if (v.type == TIDE_DOUBLE) {
			n = (size_t)snprintf(num, sizeof num, "%.14g", v.d);
			k = num;
		}
	}
	if (k == NULL) { /* no key: spread by id */
		k = ev.attr[TIDEI_A_ID];
		n = ev.len[TIDEI_A_ID];
	}
	return tidei_partition(k, n, cl->o.partitions);
}

/* Publish item @p i of @p f's batch; 0, or -1 with the item failed. */
static int
send_one(tidei_cluster *cl, flight *f, size_t i)
{
	tidei_item *it = &f->b.items[i];
	const uint8_t *rec = tidei_batch_rec(&f->b, it);
	struct tide_event ev;
	natsMsg *m = NULL, *key;
	char subj[256], id[512];
	natsStatus s;
	uint32_t p;
	size_t slot;

	if (tidei_event_decode(&ev, rec, it->len) != 0) {
		f->why[i] = strdup("not stored: the event could not be read back");
		return -1;
	}
	ev.seq = 0;
	ev.scratch = NULL;
	p = tidei_cluster_partition_of(cl, rec, it->len);
	tidei_buf_reset(&cl->json);
	if (tidei_event_json(&cl->json, &ev) != 0 || cl->json.failed) {
		f->why[i] = strdup("not stored: out of memory");
		return -1;
	}
	snprintf(subj, sizeof subj, "%s.p.%" PRIu32 ".t", cl->prefix, p);
	/* the dedupe key: the event's source and id, as the log's */
	snprintf(id, sizeof id, "%.*s %.*s", (int)ev.len[TIDEI_A_SOURCE], ev.attr[TIDEI_A_SOURCE],
		 (int)ev.len[TIDEI_A_ID], ev.attr[TIDEI_A_ID]);
	if ((s = natsMsg_Create(&m, subj, NULL, (const char *)cl->json.p, (int)cl->json.len)) !=
		    NATS_OK ||
	    (s = natsMsgHeader_Set(m, "Nats-Msg-Id", id)) != NATS_OK ||
	    (s = natsMsgHeader_Set(m, "Content-Type", "application/cloudevents+json")) != NATS_OK) {
		natsMsg_Destroy(m);
		f->why[i] = strdup("not stored: out of memory");
		return -1;
	}
	pthread_mutex_lock(&cl->mu);
	slot = slot_of(f, m);
	while (f->sent[slot].msg != NULL)
		slot = (slot + 1) & (f->cap - 1);
	f->sent[slot].msg = m;
	f->sent[slot].item = i;
	f->n++;
	pthread_mutex_unlock(&cl->mu);
	key = m;
	if ((s = js_PublishMsgAsync(cl->js, &m, NULL)) != NATS_OK) {
		char text[300];
		/* not sent: no answer will come for it */
		snprintf(text, sizeof text, "not stored: the cluster cannot be reached (%s)",
			 nats_why(s));
		pthread_mutex_lock(&cl->mu);
		f->why[i] = strdup(text);
		f->answered++;
		pthread_mutex_unlock(&cl->mu);
		(void)key;
		if (m != NULL)
			natsMsg_Destroy(m);
		return -1;
	}
	return 0;
}

int
tidei_cluster_publish(tidei_cluster *cl, tidei_batch *b, char *err)
{
	flight *f;
	size_t cap = 16;
	int done;

	while (cap < 2 * (b->valid + 1))
		cap <<= 1;
	if ((f = calloc(1, sizeof *f)) == NULL ||
	    (f->sent = calloc(cap, sizeof *f->sent)) == NULL ||
	    (f->seq = calloc(b->n + 1, sizeof *f->seq)) == NULL ||
	    (f->dup = calloc(b->n + 1, 1)) == NULL ||
	    (f->why = calloc(b->n + 1, sizeof *f->why)) == NULL) {
		flight_free(f);
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	}
	f->cap = cap;
	/* the batch moves into the flight; the engine's starts afresh */
	f->b = *b;
	tidei_batch_init(b, cl->o.max_event);
	pthread_mutex_lock(&cl->mu);
	f->next = NULL;
	{
		flight **tail = &cl->flights;
		while (*tail != NULL)
			tail = &(*tail)->next;
		*tail = f;
	}
	cl->nflights++;
	pthread_mutex_unlock(&cl->mu);
	for (size_t i = 0; i < f->b.n; i++) {
		tidei_item *it = &f->b.items[i];
		if (it->len == 0)
			continue;
		if (it->expect >= 0) {
			f->why[i] = strdup("an expected version cannot be checked in a cluster "
					   "(the stream orders events, not subjects' versions)");
			continue;
		}
		send_one(cl, f, i);
	}
	pthread_mutex_lock(&cl->mu);
	f->sealed = 1;
	done = f->answered == f->n;
	pthread_mutex_unlock(&cl->mu);
	cl->published += f->n;
	if (done)
		cl->host.wake(cl->host.ud);
	return TIDE_OK;
}

/* The flights that are done, oldest first, out of the list. */
static flight *
take_done(tidei_cluster *cl)
{
	flight *done = NULL, **tail = &done;

	pthread_mutex_lock(&cl->mu);
	for (flight **pp = &cl->flights; *pp != NULL;) {
		flight *f = *pp;
		if (f->sealed && f->answered == f->n) {
			*pp = f->next;
			f->next = NULL;
			*tail = f;
			tail = &f->next;
			cl->nflights--;
		} else {
			pp = &f->next;
		}
	}
	pthread_mutex_unlock(&cl->mu);
	return done;
}

static void
hand_back(tidei_cluster *cl, flight *f)
{
	for (size_t i = 0; i < f->b.n; i++) {
		tidei_item *it = &f->b.items[i];
		if (it->len == 0)
			continue;
		if (f->why[i] != NULL) {
			tidei_batch_fail(&f->b, it, it->expect >= 0 ? TIDE_EEVENT : TIDE_ESTATE,
					 f->why[i]);
			continue;
		}
		it->seq = f->seq[i];
		it->duplicate = f->dup[i];
	}
	cl->host.published(cl->host.ud, &f->b);
}

/* ------------------------------------------------------------------------
 * Reading the owned partitions
 * ------------------------------------------------------------------------ */

/* libnats, on a subscription's thread: a message of an owned partition. */
static void
deliver(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
	subctx *sc = closure;
	part *pt = sc->pt;
	tidei_cluster *cl = pt->cl;
	int wake;

	(void)nc;
	(void)sub;
	pthread_mutex_lock(&cl->mu);
	while (cl->qn >= QUEUE_MAX && !atomic_load(&cl->stopping) && sc->gen == pt->gen)
		pthread_cond_wait(&cl->room, &cl->mu);
	if (sc->gen != pt->gen || atomic_load(&cl->stopping)) {
		pthread_mutex_unlock(&cl->mu);
		natsMsg_Destroy(msg); /* a subscription given up meanwhile */
		return;
	}
	if (cl->qn == cl->qcap) {
		size_t cap = cl->qcap ? 2 * cl->qcap : 1024;
		queued *q = realloc(cl->q, cap * sizeof *q);
		if (q == NULL) {
			pthread_mutex_unlock(&cl->mu);
			natsMsg_Destroy(msg); /* read again after the next resubscription */
			return;
		}
		cl->q = q;
		cl->qcap = cap;
	}
	cl->q[cl->qn++] = (queued){ msg, pt->index, sc->gen };
	pt->queued++;
	wake = cl->qn == 1;
	pthread_mutex_unlock(&cl->mu);
	if (wake)
		cl->host.wake(cl->host.ud);
}

/* Move one message into @p in: 1 if an event was added. */
static int
take_msg(tidei_cluster *cl, const queued *q, tidei_batch *in)
{
	part *pt = &cl->parts[q->part];
	jsMsgMetaData *meta = NULL;
	const char *why = NULL;
	uint64_t seq;
	size_t first;
	long added;

	if (natsMsg_GetMetaData(&meta, q->msg) != NATS_OK)
		return 0;
	seq = meta->Sequence.Stream;
	pt->pending = meta->NumPending;
	jsMsgMetaData_Destroy(meta);
	if (seq <= pt->taken)
		return 0; /* delivered again: it is stored already */
	pthread_mutex_lock(&cl->mu);
	pt->taken = seq; /* the keeper reads it */
	pthread_mutex_unlock(&cl->mu);
	cl->received++;
	first = in->n;
	added = tidei_batch_add(in, natsMsg_GetData(q->msg), (size_t)natsMsg_GetDataLength(q->msg));
	for (size_t k = first; added > 0 && k < in->n; k++)
		if (in->items[k].len == 0) {
			why = tidei_batch_error(in, &in->items[k]);
			break;
		}
	if (added <= 0 || why != NULL)
		LOG(cl, TIDE_LOG_WARN,
		    "partition %" PRIu32 ", stream sequence %" PRIu64 ": %s; passed over", q->part,
		    seq, why ? why : "not an event");
	return added > 0 && in->valid > 0;
}

int
tidei_cluster_poll(tidei_cluster *cl, tidei_batch *in)
{
	flight *done = take_done(cl);
	queued *q;
	size_t n;
	int got = 0;

	while (done != NULL) {
		flight *next = done->next;
		hand_back(cl, done);
		flight_free(done);
		done = next;
	}
	pthread_mutex_lock(&cl->mu);
	q = cl->q;
	n = cl->qn;
	cl->q = NULL;
	cl->qn = cl->qcap = 0;
	for (uint32_t p = 0; p < cl->o.partitions; p++)
		cl->parts[p].queued = 0;
	pthread_mutex_unlock(&cl->mu);
	pthread_cond_broadcast(&cl->room);
	for (size_t k = 0; k < n; k++) {
		part *pt = &cl->parts[q[k].part];
		uint32_t gen;
		int owned;
		pthread_mutex_lock(&cl->mu);
		gen = pt->gen;
		owned = pt->owned;
		pthread_mutex_unlock(&cl->mu);
		if (owned && gen == q[k].gen)
			got |= take_msg(cl, &q[k], in);
		natsMsg_Destroy(q[k].msg);
	}
	free(q);
	return got;
}

/* ------------------------------------------------------------------------
 * Leases (the keeper's thread)
 * ------------------------------------------------------------------------ */

/* Read partition @p p from after what is stored or taken; under no lock. */
static void
subscribe(tidei_cluster *cl, uint32_t p)
{
	part *pt = &cl->parts[p];
	natsSubscription *sub = NULL, *old;
	jsSubOptions so;
	jsErrCode jerr = 0;
	char subj[128];
	uint64_t from;
	natsStatus s;
	subctx *sc;

	if ((sc = calloc(1, sizeof *sc)) == NULL)
		return; /* tried again at the next tick */
	pthread_mutex_lock(&cl->mu);
	old = pt->sub;
	pt->sub = NULL;
	pt->gen++;
	pt->resubscribe = 0;
	sc->pt = pt;
	sc->gen = pt->gen;
	sc->next = cl->subs;
	cl->subs = sc;
	/* what the open turn took is in its batch: read on after it */
	from = (pt->taken > pt->position ? pt->taken : pt->position) + 1;
	pthread_mutex_unlock(&cl->mu);
	pthread_cond_broadcast(&cl->room);
	if (old != NULL) {
		natsSubscription_Unsubscribe(old);
		natsSubscription_Destroy(old);
	}
	snprintf(subj, sizeof subj, "%s.p.%" PRIu32 ".>", cl->prefix, p);
	jsSubOptions_Init(&so);
	so.Stream = cl->stream;
	so.Ordered = true;
	so.Config.DeliverPolicy = js_DeliverByStartSequence;
	so.Config.OptStartSeq = from;
	s = js_Subscribe(&sub, cl->js, subj, deliver, sc, NULL, &so, &jerr);
	pthread_mutex_lock(&cl->mu);
	if (s == NATS_OK && sc->gen == pt->gen && pt->owned) {
		pt->sub = sub;
		sub = NULL;
	}
	pthread_mutex_unlock(&cl->mu);
	if (s != NATS_OK) {
		LOG(cl, TIDE_LOG_WARN, "cannot read partition %" PRIu32 ": %s (tried again soon)",
		    p, nats_why(s));
		return;
	}
	if (sub != NULL) { /* lost meanwhile */
		natsSubscription_Unsubscribe(sub);
		natsSubscription_Destroy(sub);
		return;
	}
	LOG(cl, TIDE_LOG_INFO, "reading partition %" PRIu32 " from stream sequence %" PRIu64, p,
	    from);
}

static void
unsubscribe(tidei_cluster *cl, uint32_t p)
{
	part *pt = &cl->parts[p];
	natsSubscription *old;

	pthread_mutex_lock(&cl->mu);
	old = pt->sub;
	pt->sub = NULL;
	pt->gen++; /* what waits in the queue for it is dropped */
	pthread_mutex_unlock(&cl->mu);
	pthread_cond_broadcast(&cl->room);
	if (old != NULL) {
		natsSubscription_Unsubscribe(old);
		natsSubscription_Destroy(old);
	}
}

static void
lease_key(char *out, size_t n, uint32_t p)
{
	snprintf(out, n, "p%" PRIu32, p);
}

/* Lost or given up: stop reading it. */
static void
drop_lease(tidei_cluster *cl, uint32_t p, int release)
{
	char key[32];

	pthread_mutex_lock(&cl->mu);
	cl->parts[p].owned = 0;
	pthread_mutex_unlock(&cl->mu);
	unsubscribe(cl, p);
	if (release) {
		lease_key(key, sizeof key, p);
		kvStore_Delete(cl->kv, key);
	}
}

static void
got_lease(tidei_cluster *cl, uint32_t p, uint64_t rev)
{
	pthread_mutex_lock(&cl->mu);
	cl->parts[p].owned = 1;
	cl->parts[p].rev = rev;
	snprintf(cl->parts[p].owner, sizeof cl->parts[p].owner, "%s", cl->node);
	pthread_mutex_unlock(&cl->mu);
	LOG(cl, TIDE_LOG_INFO, "this node now owns partition %" PRIu32, p);
	subscribe(cl, p);
}

/* Try to take partition @p p: its lease is free, or ours from before a
 * restart. */
static void
try_take(tidei_cluster *cl, uint32_t p)
{
	char key[32];
	kvEntry *e = NULL;
	uint64_t rev = 0;
	natsStatus s;

	lease_key(key, sizeof key, p);
	s = kvStore_Get(&e, cl->kv, key);
	if (s == NATS_OK) {
		const char *who = kvEntry_ValueString(e);
		pthread_mutex_lock(&cl->mu);
		snprintf(cl->parts[p].owner, sizeof cl->parts[p].owner, "%s", who ? who : "");
		pthread_mutex_unlock(&cl->mu);
		if (who != NULL && strcmp(who, cl->node) == 0 &&
		    kvStore_UpdateString(&rev, cl->kv, key, cl->node, kvEntry_Revision(e)) ==
			    NATS_OK) {
			kvEntry_Destroy(e);
			got_lease(cl, p, rev);
			return;
		}
		kvEntry_Destroy(e);
		return; /* another node's */
	}
	if (s == NATS_NOT_FOUND && kvStore_CreateString(&rev, cl->kv, key, cl->node) == NATS_OK)
		got_lease(cl, p, rev);
}

/* The owner named in partition @p p's lease ("" when free). */
static void
read_owner(tidei_cluster *cl, uint32_t p)
{
	char key[32];
	kvEntry *e = NULL;
	const char *who = NULL;

	lease_key(key, sizeof key, p);
	if (kvStore_Get(&e, cl->kv, key) == NATS_OK)
		who = kvEntry_ValueString(e);
	pthread_mutex_lock(&cl->mu);
	if (!cl->parts[p].owned)
		snprintf(cl->parts[p].owner, sizeof cl->parts[p].owner, "%s", who ? who : "");
	pthread_mutex_unlock(&cl->mu);
	kvEntry_Destroy(e);
}

/* The nodes alive: each renews its own "n.NAME" key. */
static unsigned
count_nodes(tidei_cluster *cl)
{
	kvKeysList keys = { 0 };
	unsigned n = 0;

	if (kvStore_Keys(&keys, cl->kv, NULL) != NATS_OK) {
		return 0;
	}
	for (int k = 0; k < keys.Count; k++)
		n += strncmp(keys.Keys[k], "n.", 2) == 0;
	kvKeysList_Destroy(&keys);
	return n;
}

static void
keep_leases(tidei_cluster *cl)
{
	char key[160];
	unsigned owned = 0, share, nodes;
	uint64_t rev;

	snprintf(key, sizeof key, "n.%s", cl->node);
	if (kvStore_PutString(&rev, cl->kv, key, "alive") != NATS_OK) {
		return; /* the cluster is away: try again at the next tick */
	}
	/* renew what we hold; a renewal refused means another node took it */
	for (uint32_t p = 0; p < cl->o.partitions; p++) {
		part *pt = &cl->parts[p];
		int mine, again;
		uint64_t r;
		pthread_mutex_lock(&cl->mu);
		mine = pt->owned;
		r = pt->rev;
		again = pt->resubscribe;
		pthread_mutex_unlock(&cl->mu);
		if (!mine)
			continue;
		lease_key(key, sizeof key, p);
		if (kvStore_UpdateString(&rev, cl->kv, key, cl->node, r) != NATS_OK) {
			LOG(cl, TIDE_LOG_WARN, "the lease of partition %" PRIu32 " was lost", p);
			drop_lease(cl, p, 0);
			continue;
		}
		pthread_mutex_lock(&cl->mu);
		pt->rev = rev;
		pthread_mutex_unlock(&cl->mu);
		if (again || pt->sub == NULL)
			subscribe(cl, p);
		owned++;
	}
	nodes = count_nodes(cl);
	if (nodes == 0)
		nodes = 1;
	cl->nodes = nodes;
	share = (cl->o.partitions + nodes - 1) / nodes;
	/* above our share: the highest ones go, to a node that has fewer */
	for (uint32_t p = cl->o.partitions; p-- > 0 && owned > share;) {
		if (!cl->parts[p].owned)
			continue;
		LOG(cl, TIDE_LOG_INFO, "partition %" PRIu32 " is given up (%u nodes share %u)", p,
		    nodes, cl->o.partitions);
		drop_lease(cl, p, 1);
		owned--;
	}
	/* below it: free partitions, first those this node stored before
	 * (it goes on from its position, not from the start) */
	for (int pass = 0; pass < 2; pass++)
		for (uint32_t p = 0; p < cl->o.partitions && owned < share; p++) {
			if (cl->parts[p].owned || (pass == 0) != (cl->parts[p].position > 0))
				continue;
			try_take(cl, p);
			owned += cl->parts[p].owned;
		}
	/* who owns the others, for tide stat */
	for (uint32_t p = 0; p < cl->o.partitions; p++)
		if (!cl->parts[p].owned)
			read_owner(cl, p);
}

static void *
keeper(void *arg)
{
	tidei_cluster *cl = arg;
	int64_t every = cl->o.lease_ns / 3;

	while (!atomic_load(&cl->stopping)) {
		struct timespec until;
		keep_leases(cl);
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += every / 1000000000;
		until.tv_nsec += every % 1000000000;
		if (until.tv_nsec >= 1000000000) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000;
		}
		pthread_mutex_lock(&cl->mu);
		if (!atomic_load(&cl->stopping))
			pthread_cond_timedwait(&cl->tick, &cl->mu, &until);
		pthread_mutex_unlock(&cl->mu);
	}
	return NULL;
}

/* ------------------------------------------------------------------------
 * Opening and closing
 * ------------------------------------------------------------------------ */

/* The stream, created if missing; one of another shape is refused. */
static int
ensure_stream(tidei_cluster *cl, char *err)
{
	jsStreamInfo *si = NULL;
	jsStreamConfig sc;
	jsErrCode jerr = 0;
	char subj[128];
	const char *subjects[1] = { subj };
	natsStatus s;

	snprintf(subj, sizeof subj, "%s.p.>", cl->prefix);
	s = js_GetStreamInfo(&si, cl->js, cl->stream, NULL, &jerr);
	if (s == NATS_OK) {
		int ok = si->Config->SubjectsLen == 1 && strcmp(si->Config->Subjects[0], subj) == 0;
		char desc[64];
		snprintf(desc, sizeof desc, "tide partitions=%u", cl->o.partitions);
		if (ok && si->Config->Description != NULL &&
		    strncmp(si->Config->Description, "tide partitions=", 16) == 0 &&
		    strcmp(si->Config->Description, desc) != 0)
			ok = -1;
		jsStreamInfo_Destroy(si);
		if (ok == -1)
			return tidei_err(err, TIDE_ECONFIG,
					 "stream %s has another number of partitions than %u "
					 "(cluster_partitions must match it)",
					 cl->stream, cl->o.partitions);
		if (!ok)
			return tidei_err(err, TIDE_ECONFIG,
					 "stream %s exists with subjects other than %s: not a "
					 "Tide stream (choose another with cluster_stream)",
					 cl->stream, subj);
		return TIDE_OK;
	}
	{
		char desc[64];
		snprintf(desc, sizeof desc, "tide partitions=%u", cl->o.partitions);
		jsStreamConfig_Init(&sc);
		sc.Name = cl->stream;
		sc.Description = desc;
		sc.Subjects = subjects;
		sc.SubjectsLen = 1;
		sc.Storage = js_FileStorage;
		sc.Replicas = cl->o.replicas;
		sc.Duplicates = cl->o.dedupe_ns;
		s = js_AddStream(&si, cl->js, &sc, NULL, &jerr);
	}
	if (s != NATS_OK)
		return tidei_err(err, TIDE_ESTATE, "cannot create stream %s: %s", cl->stream,
				 nats_why(s));
	jsStreamInfo_Destroy(si);
	LOG(cl, TIDE_LOG_INFO, "created stream %s: %u partitions, %u replicas", cl->stream,
	    cl->o.partitions, cl->o.replicas);
	return TIDE_OK;
}

static int
ensure_leases(tidei_cluster *cl, char *err)
{
	kvConfig kc;
	char bucket[128];
	natsStatus s;

	snprintf(bucket, sizeof bucket, "%s_leases", cl->stream);
	if (js_KeyValue(&cl->kv, cl->js, bucket) == NATS_OK)
		return TIDE_OK;
	kvConfig_Init(&kc);
	kc.Bucket = bucket;
	kc.History = 1;
	kc.TTL = cl->o.lease_ns;
	kc.Replicas = (int)cl->o.replicas;
	if ((s = js_CreateKeyValue(&cl->kv, cl->js, &kc)) != NATS_OK)
		return tidei_err(err, TIDE_ESTATE, "cannot create the lease bucket %s: %s", bucket,
				 nats_why(s));
	return TIDE_OK;
}

static void
ack_err(jsCtx *js, jsPubAckErr *pae, void *closure)
{
	(void)js;
	(void)pae;
	(void)closure;
}

/* The servers of a comma-separated list of URLs. */
static natsStatus
set_servers(natsOptions *no, const char *urls)
{
	const char *v[16];
	char *copy = strdup(urls), *save = NULL, *tok;
	int n = 0;
	natsStatus s;

	if (copy == NULL)
		return NATS_NO_MEMORY;
	for (tok = strtok_r(copy, ", ", &save); tok != NULL && n < 16;
	     tok = strtok_r(NULL, ", ", &save))
		v[n++] = tok;
	s = n > 0 ? natsOptions_SetServers(no, v, n) : NATS_INVALID_ARG;
	free(copy);
	return s;
}

static int
dupstr(char **out, const char *s, const char *dflt)
{
	*out = strdup(s != NULL && s[0] != '\0' ? s : dflt);
	return *out == NULL ? -1 : 0;
}

int
tidei_cluster_open(tidei_cluster **out, const tidei_cluster_opts *o, const tidei_cluster_host *host,
		   tidei_log *log, char *err)
{
	tidei_cluster *cl;
	natsOptions *no = NULL;
	jsOptions jo;
	natsStatus s;
	int rc;

	*out = NULL;
	if ((cl = calloc(1, sizeof *cl)) == NULL)
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	cl->o = *o;
	cl->host = *host;
	if (cl->o.partitions == 0)
		cl->o.partitions = 8;
	if (cl->o.replicas == 0)
		cl->o.replicas = 1;
	if (cl->o.lease_ns <= 0)
		cl->o.lease_ns = 6000000000ll;
	if (cl->o.dedupe_ns <= 0)
		cl->o.dedupe_ns = 600000000000ll;
	pthread_mutex_init(&cl->mu, NULL);
	pthread_cond_init(&cl->room, NULL);
	pthread_cond_init(&cl->tick, NULL);
	if (dupstr(&cl->urls, o->urls, "nats://127.0.0.1:4222") ||
	    dupstr(&cl->node, o->node, "tide") || dupstr(&cl->stream, o->stream, "TIDE") ||
	    dupstr(&cl->prefix, o->prefix, "tide") || dupstr(&cl->key, o->key, "subject") ||
	    (cl->parts = calloc(cl->o.partitions, sizeof *cl->parts)) == NULL ||
	    (cl->view = calloc(cl->o.partitions, sizeof *cl->view)) == NULL) {
		tidei_cluster_close(cl);
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	}
	for (uint32_t p = 0; p < cl->o.partitions; p++) {
		cl->parts[p].cl = cl;
		cl->parts[p].index = p;
	}
	if ((rc = read_positions(cl, log, err)) != TIDE_OK) {
		tidei_cluster_close(cl);
		return rc;
	}
	if ((s = natsOptions_Create(&no)) != NATS_OK ||
	    (s = set_servers(no, cl->urls)) != NATS_OK ||
	    (s = natsOptions_SetName(no, cl->node)) != NATS_OK ||
	    (s = natsOptions_SetMaxReconnect(no, -1)) != NATS_OK ||
	    (s = natsOptions_SetReconnectWait(no, 250)) != NATS_OK ||
	    (s = natsOptions_SetTimeout(no, API_WAIT_MS)) != NATS_OK ||
	    (s = natsConnection_Connect(&cl->nc, no)) != NATS_OK) {
		natsOptions_Destroy(no);
		rc = tidei_err(err, TIDE_ESTATE, "cannot connect to the cluster at %s: %s",
			       cl->urls, nats_why(s));
		tidei_cluster_close(cl);
		return rc;
	}
	natsOptions_Destroy(no);
	jsOptions_Init(&jo);
	jo.Wait = API_WAIT_MS;
	jo.PublishAsync.AckHandler = ack;
	jo.PublishAsync.AckHandlerClosure = cl;
	jo.PublishAsync.ErrHandler = ack_err;
	jo.PublishAsync.MaxPending = 20000;
	if ((s = natsConnection_JetStream(&cl->js, cl->nc, &jo)) != NATS_OK) {
		rc = tidei_err(err, TIDE_ESTATE, "JetStream: %s", nats_why(s));
		tidei_cluster_close(cl);
		return rc;
	}
	if ((rc = ensure_stream(cl, err)) != TIDE_OK || (rc = ensure_leases(cl, err)) != TIDE_OK) {
		tidei_cluster_close(cl);
		return rc;
	}
	if (pthread_create(&cl->keeper, NULL, keeper, cl) != 0) {
		tidei_cluster_close(cl);
		return tidei_err(err, TIDE_ENOMEM, "cannot start the lease thread");
	}
	cl->keeper_started = 1;
	*out = cl;
	return TIDE_OK;
}

void
tidei_cluster_close(tidei_cluster *cl)
{
	flight *f;

	if (cl == NULL)
		return;
	pthread_mutex_lock(&cl->mu);
	atomic_store(&cl->stopping, 1);
	pthread_mutex_unlock(&cl->mu);
	pthread_cond_broadcast(&cl->tick);
	pthread_cond_broadcast(&cl->room);
	if (cl->keeper_started)
		pthread_join(cl->keeper, NULL);
	/* the leases go at once: the others need not wait for them to expire */
	for (uint32_t p = 0; cl->parts != NULL && p < cl->o.partitions; p++)
		if (cl->parts[p].owned)
			drop_lease(cl, p, 1);
		else
			unsubscribe(cl, p);
	if (cl->kv != NULL) {
		char key[160];
		snprintf(key, sizeof key, "n.%s", cl->node);
		kvStore_Delete(cl->kv, key);
	}
	if (cl->js != NULL) {
		jsPubOptions po;
		jsPubOptions_Init(&po);
		po.MaxWait = CLOSE_WAIT_MS;
		js_PublishAsyncComplete(cl->js, &po);
	}
	/* batches still without every answer fail what is unanswered */
	while ((f = cl->flights) != NULL) {
		cl->flights = f->next;
		for (size_t i = 0; i < f->b.n; i++)
			if (f->b.items[i].len > 0 && f->seq[i] == 0 && f->why[i] == NULL)
				f->why[i] =
					strdup("not stored: the node stopped before the cluster "
					       "acknowledged it");
		hand_back(cl, f);
		flight_free(f);
	}
	for (size_t k = 0; k < cl->qn; k++)
		natsMsg_Destroy(cl->q[k].msg);
	free(cl->q);
	while (cl->subs != NULL) {
		subctx *next = cl->subs->next;
		free(cl->subs);
		cl->subs = next;
	}
	if (cl->kv != NULL)
		kvStore_Destroy(cl->kv);
	if (cl->js != NULL)
		jsCtx_Destroy(cl->js);
	if (cl->nc != NULL) {
		natsConnection_Close(cl->nc);
		natsConnection_Destroy(cl->nc);
	}
	pthread_cond_destroy(&cl->room);
	pthread_cond_destroy(&cl->tick);
	pthread_mutex_destroy(&cl->mu);
	tidei_buf_free(&cl->json);
	tidei_buf_free(&cl->rec);
	free(cl->parts);
	free(cl->view);
	free(cl->urls);
	free(cl->node);
	free(cl->stream);
	free(cl->prefix);
	free(cl->key);
	free(cl);
}

void
tidei_cluster_stat_get(tidei_cluster *cl, tidei_cluster_stat *st)
{
	memset(st, 0, sizeof *st);
	st->node = cl->node;
	st->stream = cl->stream;
	st->connected =
		cl->nc != NULL && natsConnection_Status(cl->nc) == NATS_CONN_STATUS_CONNECTED;
	st->partitions = cl->o.partitions;
	st->nodes = cl->nodes;
	st->published = cl->published;
	st->received = cl->received;
	pthread_mutex_lock(&cl->mu);
	for (uint32_t p = 0; p < cl->o.partitions; p++) {
		cl->view[p].owned = cl->parts[p].owned;
		memcpy(cl->view[p].owner, cl->parts[p].owner, sizeof cl->view[p].owner);
		cl->view[p].position = cl->parts[p].position;
		cl->view[p].lag =
			cl->parts[p].owned ? cl->parts[p].pending + cl->parts[p].queued : 0;
	}
	pthread_mutex_unlock(&cl->mu);
	st->part = cl->view;
}
