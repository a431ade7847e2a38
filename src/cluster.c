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

#include "cluster_int.h"

#include <unistd.h>

/* Clusters open in this process: the last to close releases libnats's
 * own threads and memory (nats_CloseAndWait). */
static atomic_int open_clusters;

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
	int rc;

	if ((rc = tidei_cl_outbox_write(cl, log, err)) != TIDE_OK)
		return rc;
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
	tidei_cl_outbox_committed(cl);
}

void
tidei_cluster_aborted(tidei_cluster *cl)
{
	tidei_cl_outbox_aborted(cl);
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
 * Taking what the owned partitions delivered
 * ------------------------------------------------------------------------ */

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
	{
		/* an emitted event: its place in its chain (max_emit_depth) */
		const char *d = NULL;
		if (added > 0 && natsMsgHeader_Get(q->msg, "Tide-Depth", &d) == NATS_OK &&
		    d != NULL)
			for (size_t k = first; k < in->n; k++)
				if (in->items[k].len > 0)
					tidei_event_set_depth(tidei_batch_rec(in, &in->items[k]),
							      in->items[k].len, (unsigned)atoi(d));
	}
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
	flight *done = tidei_cl_take_done(cl);
	queued *q;
	size_t n;
	int got = 0;

	while (done != NULL) {
		flight *next = done->next;
		tidei_cl_hand_back(cl, done);
		tidei_cl_flight_free(done);
		done = next;
	}
	tidei_cl_answer_queries(cl);
	tidei_cl_outbox_retry(cl);
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
				 tidei_cl_why(s));
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

	jsOptions jo;

	jsOptions_Init(&jo);
	jo.Wait = LEASE_WAIT_MS;
	if (cl->kjs == NULL && (s = natsConnection_JetStream(&cl->kjs, cl->nc, &jo)) != NATS_OK)
		return tidei_err(err, TIDE_ESTATE, "JetStream: %s", tidei_cl_why(s));
	snprintf(bucket, sizeof bucket, "%s_leases", cl->stream);
	if (js_KeyValue(&cl->kv, cl->kjs, bucket) == NATS_OK)
		return TIDE_OK;
	kvConfig_Init(&kc);
	kc.Bucket = bucket;
	kc.History = 1;
	kc.TTL = cl->o.lease_ns;
	kc.Replicas = (int)cl->o.replicas;
	if ((s = js_CreateKeyValue(&cl->kv, cl->kjs, &kc)) != NATS_OK)
		return tidei_err(err, TIDE_ESTATE, "cannot create the lease bucket %s: %s", bucket,
				 tidei_cl_why(s));
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

/* Joining waits JOIN_WAIT_MS at most for the cluster: 0 (after a pause)
 * to try again, 1 when the time is up.  The first wait is said once. */
static int
late(tidei_cluster *cl, int64_t *until, natsStatus s)
{
	int64_t now = tidei_mono();

	if (*until == 0) {
		*until = now + (int64_t)JOIN_WAIT_MS * 1000000;
		LOG(cl, TIDE_LOG_WARN,
		    "the cluster at %s is not ready yet (%s): waiting up to %d s", cl->urls,
		    tidei_cl_why(s), JOIN_WAIT_MS / 1000);
	}
	if (now >= *until)
		return 1;
	usleep(250000);
	return 0;
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
	int64_t until = 0;
	int rc;

	*out = NULL;
	if ((cl = calloc(1, sizeof *cl)) == NULL)
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	atomic_fetch_add(&open_clusters, 1);
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
	cl->log = log;
	if ((rc = read_positions(cl, log, err)) != TIDE_OK ||
	    (rc = tidei_cl_outbox_open(cl, log, err)) != TIDE_OK) {
		tidei_cluster_close(cl);
		return rc;
	}
	if ((s = natsOptions_Create(&no)) != NATS_OK ||
	    (s = set_servers(no, cl->urls)) != NATS_OK ||
	    (s = natsOptions_SetName(no, cl->node)) != NATS_OK ||
	    (s = natsOptions_SetMaxReconnect(no, -1)) != NATS_OK ||
	    (s = natsOptions_SetReconnectWait(no, 250)) != NATS_OK ||
	    (s = natsOptions_SetTimeout(no, API_WAIT_MS)) != NATS_OK) {
		natsOptions_Destroy(no);
		tidei_cluster_close(cl);
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	}
	/* servers that are starting (or electing) get a while to answer */
	while ((s = natsConnection_Connect(&cl->nc, no)) != NATS_OK && !late(cl, &until, s)) {
	}
	natsOptions_Destroy(no);
	if (s != NATS_OK) {
		rc = tidei_err(err, TIDE_ESTATE, "cannot connect to the cluster at %s: %s",
			       cl->urls, tidei_cl_why(s));
		tidei_cluster_close(cl);
		return rc;
	}
	jsOptions_Init(&jo);
	jo.Wait = API_WAIT_MS;
	jo.PublishAsync.AckHandler = tidei_cl_ack;
	jo.PublishAsync.AckHandlerClosure = cl;
	jo.PublishAsync.ErrHandler = ack_err;
	jo.PublishAsync.MaxPending = 20000;
	if ((s = natsConnection_JetStream(&cl->js, cl->nc, &jo)) != NATS_OK) {
		rc = tidei_err(err, TIDE_ESTATE, "JetStream: %s", tidei_cl_why(s));
		tidei_cluster_close(cl);
		return rc;
	}
	/* JetStream may still be electing its leaders (a cluster starting,
	 * or restarting): "temporarily unavailable" is tried again */
	while (((rc = ensure_stream(cl, err)) == TIDE_ESTATE ||
		(rc == TIDE_OK && (rc = ensure_leases(cl, err)) == TIDE_ESTATE)) &&
	       !late(cl, &until, NATS_ERR)) {
	}
	if (rc != TIDE_OK) {
		tidei_cluster_close(cl);
		return rc;
	}
	if (pthread_create(&cl->keeper, NULL, tidei_cl_keeper, cl) != 0) {
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
	/* the producers' events in flight get their answers first */
	if (cl->js != NULL) {
		jsPubOptions po;
		jsPubOptions_Init(&po);
		po.MaxWait = CLOSE_WAIT_MS;
		js_PublishAsyncComplete(cl->js, &po);
	}
	pthread_mutex_lock(&cl->mu);
	atomic_store(&cl->stopping, 1);
	pthread_mutex_unlock(&cl->mu);
	pthread_cond_broadcast(&cl->tick);
	pthread_cond_broadcast(&cl->room);
	if (cl->keeper_started)
		pthread_join(cl->keeper, NULL);
	/* the leases go at once, so that the others need not wait for them
	 * to expire; within a second (the rest expire) */
	{
		int64_t until = tidei_mono() + 1000000000ll;
		for (uint32_t p = 0; cl->parts != NULL && p < cl->o.partitions; p++)
			if (cl->parts[p].owned)
				tidei_cl_drop_lease(cl, p, tidei_mono() < until);
			else
				tidei_cl_unsubscribe(cl, p);
		if (cl->kv != NULL && tidei_mono() < until) {
			char key[160];
			snprintf(key, sizeof key, "n.%s", cl->node);
			kvStore_Delete(cl->kv, key);
		}
	}
	/* batches still without every answer fail what is unanswered */
	while ((f = cl->flights) != NULL) {
		cl->flights = f->next;
		for (size_t i = 0; f->has_batch && i < f->b.n; i++)
			if (f->b.items[i].len > 0 && f->seq[i] == 0 && f->why[i] == NULL)
				f->why[i] =
					strdup("not stored: the node stopped before the cluster "
					       "acknowledged it");
		tidei_cl_hand_back(cl, f);
		tidei_cl_flight_free(f);
	}
	for (size_t k = 0; k < cl->qn; k++)
		natsMsg_Destroy(cl->q[k].msg);
	free(cl->q);
	for (size_t k = 0; k < cl->rqn; k++)
		natsMsg_Destroy(cl->rq[k]);
	free(cl->rq);
	while (cl->subs != NULL) {
		subctx *next = cl->subs->next;
		free(cl->subs);
		cl->subs = next;
	}
	if (cl->kv != NULL)
		kvStore_Destroy(cl->kv);
	if (cl->kjs != NULL)
		jsCtx_Destroy(cl->kjs);
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
	free(cl->pending.v);
	free(cl->pending_off);
	free(cl->acked.v);
	free(cl->deleting.v);
	free(cl->retry.v);
	tidei_buf_free(&cl->pending_recs);
	free(cl->urls);
	free(cl->node);
	free(cl->stream);
	free(cl->prefix);
	free(cl->key);
	free(cl);
	if (atomic_fetch_sub(&open_clusters, 1) == 1)
		nats_CloseAndWait(1000);
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
