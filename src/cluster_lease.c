/*
 * cluster_lease.c - the partitions a cluster node owns (cluster_int.h):
 * the keeper's thread renews this node's leases, takes free partitions
 * up to its share and lets extra ones go; each owned partition brings a
 * subscription to its events (deliver(), on libnats's thread, queues
 * them for the loop) and one to the queries other nodes forward for its
 * keys.
 */
#include "config.h"

#include "cluster_int.h"

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

/* libnats, on its thread: another node asks about a key of a partition
 * owned here.  The loop answers (poll). */
static void
on_query(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
	part *pt = closure;
	tidei_cluster *cl = pt->cl;
	int wake = 0;

	(void)nc;
	(void)sub;
	pthread_mutex_lock(&cl->mu);
	if (cl->rqn == cl->rqcap) {
		size_t cap = cl->rqcap ? 2 * cl->rqcap : 16;
		natsMsg **v = cl->rqn < 4096 ? realloc(cl->rq, cap * sizeof *v) : NULL;
		if (v == NULL) {
			pthread_mutex_unlock(&cl->mu);
			natsMsg_Destroy(msg); /* the asker times out */
			return;
		}
		cl->rq = v;
		cl->rqcap = cap;
	}
	cl->rq[cl->rqn++] = msg;
	wake = cl->rqn == 1;
	pthread_mutex_unlock(&cl->mu);
	if (wake)
		cl->host.wake(cl->host.ud);
}

void
tidei_cl_answer_queries(tidei_cluster *cl)
{
	natsMsg **v;
	size_t n;

	pthread_mutex_lock(&cl->mu);
	v = cl->rq;
	n = cl->rqn;
	cl->rq = NULL;
	cl->rqn = cl->rqcap = 0;
	pthread_mutex_unlock(&cl->mu);
	for (size_t k = 0; k < n; k++) {
		const char *to = natsMsg_GetReply(v[k]);
		natsMsg *a = NULL;
		char code[16];
		int rc;
		tidei_buf_reset(&cl->rec);
		rc = cl->host.answer(cl->host.ud, natsMsg_GetData(v[k]),
				     (size_t)natsMsg_GetDataLength(v[k]), &cl->rec);
		snprintf(code, sizeof code, "%d", rc);
		if (to != NULL && !cl->rec.failed &&
		    natsMsg_Create(&a, to, NULL, (const char *)cl->rec.p, (int)cl->rec.len) ==
			    NATS_OK &&
		    natsMsgHeader_Set(a, "Tide-Code", code) == NATS_OK)
			natsConnection_PublishMsg(cl->nc, a);
		natsMsg_Destroy(a);
		natsMsg_Destroy(v[k]);
	}
	free(v);
}

int
tidei_cluster_forward(tidei_cluster *cl, const char *key, size_t klen, const char *req, size_t len,
		      tidei_buf *out, int *code)
{
	uint32_t p = tidei_partition(key, klen, cl->o.partitions);
	natsMsg *a = NULL;
	const char *c = NULL;
	char subj[128], who[64];
	natsStatus s;
	int mine;

	pthread_mutex_lock(&cl->mu);
	mine = cl->parts[p].owned;
	memcpy(who, cl->parts[p].owner, sizeof who);
	pthread_mutex_unlock(&cl->mu);
	if (mine)
		return 1;
	snprintf(subj, sizeof subj, "%s.q.%" PRIu32, cl->prefix, p);
	s = natsConnection_Request(&a, cl->nc, subj, req, (int)len, 2000);
	if (s != NATS_OK) {
		tidei_buf_printf(out,
				 "{\"ok\":false,\"error\":\"partition %" PRIu32
				 " of the key has no node answering for it now (%s); try again "
				 "shortly\"}",
				 p, who[0] ? "its owner did not answer" : "no owner");
		*code = TIDE_ESTATE;
		return 0;
	}
	tidei_buf_put(out, natsMsg_GetData(a), (size_t)natsMsg_GetDataLength(a));
	*code = natsMsgHeader_Get(a, "Tide-Code", &c) == NATS_OK && c != NULL ? atoi(c) : TIDE_EIO;
	natsMsg_Destroy(a);
	return 0;
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
		    p, tidei_cl_why(s));
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

void
tidei_cl_unsubscribe(tidei_cluster *cl, uint32_t p)
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

/* Lost or given up: stop reading it and answering for it. */
void
tidei_cl_drop_lease(tidei_cluster *cl, uint32_t p, int release)
{
	char key[32];

	pthread_mutex_lock(&cl->mu);
	cl->parts[p].owned = 0;
	pthread_mutex_unlock(&cl->mu);
	if (cl->parts[p].qsub != NULL) {
		natsSubscription_Unsubscribe(cl->parts[p].qsub);
		natsSubscription_Destroy(cl->parts[p].qsub);
		cl->parts[p].qsub = NULL;
	}
	tidei_cl_unsubscribe(cl, p);
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
	if (cl->parts[p].qsub == NULL) {
		char subj[128];
		snprintf(subj, sizeof subj, "%s.q.%" PRIu32, cl->prefix, p);
		if (natsConnection_Subscribe(&cl->parts[p].qsub, cl->nc, subj, on_query,
					     &cl->parts[p]) != NATS_OK)
			LOG(cl, TIDE_LOG_WARN,
			    "cannot answer queries for partition %" PRIu32 ": %s", p,
			    tidei_cl_why(NATS_ERR));
	}
}

/* A partition read by a consumer the servers lost (its server died, or
 * a failover left it without messages or heartbeats) can wait long for
 * libnats to notice.  Each round asks the server: a consumer it does not
 * know, or one with messages pending while nothing was taken for two
 * rounds, is replaced by a new one, from what is stored or taken. */
static void
check_reading(tidei_cluster *cl, uint32_t p)
{
	part *pt = &cl->parts[p];
	jsConsumerInfo *ci = NULL;
	jsOptions jo;
	uint64_t taken;
	int stale = 0;

	pthread_mutex_lock(&cl->mu);
	taken = pt->taken;
	pthread_mutex_unlock(&cl->mu);
	jsOptions_Init(&jo);
	jo.Wait = LEASE_WAIT_MS; /* the round stays short of a lease */
	if (natsSubscription_GetConsumerInfo(&ci, pt->sub, &jo, NULL) != NATS_OK)
		stale = 1;
	else
		stale = ci->NumPending > 0 && taken == pt->seen_taken;
	if (ci != NULL)
		jsConsumerInfo_Destroy(ci);
	pt->seen_taken = taken;
	if (!stale) {
		pt->stalled = 0;
		return;
	}
	if (++pt->stalled < 2)
		return;
	pt->stalled = 0;
	LOG(cl, TIDE_LOG_WARN, "partition %" PRIu32 ": its reading stalled; reading it again", p);
	subscribe(cl, p);
}

/* What partition @p p's lease says while this node holds it: the owner,
 * then its stream position and lag, a line each (for the other nodes'
 * tide stat). */
static const char *
lease_value(tidei_cluster *cl, uint32_t p, char *out, size_t n)
{
	uint64_t pos, lag;

	pthread_mutex_lock(&cl->mu);
	pos = cl->parts[p].position;
	lag = cl->parts[p].pending + cl->parts[p].queued;
	pthread_mutex_unlock(&cl->mu);
	snprintf(out, n, "%s\n%" PRIu64 "\n%" PRIu64, cl->node, pos, lag);
	return out;
}

/* A lease's owner, position and lag into partition @p p's view. */
static void
take_view(tidei_cluster *cl, uint32_t p, const char *v)
{
	const char *nl = v ? strchr(v, '\n') : NULL;
	part *pt = &cl->parts[p];

	pthread_mutex_lock(&cl->mu);
	if (!pt->owned) {
		snprintf(pt->owner, sizeof pt->owner, "%.*s",
			 nl  ? (int)(nl - v)
			 : v ? (int)strlen(v)
			     : 0,
			 v ? v : "");
		pt->rpos = pt->rlag = 0;
		if (nl != NULL) {
			char *end;
			pt->rpos = strtoull(nl + 1, &end, 10);
			if (*end == '\n')
				pt->rlag = strtoull(end + 1, NULL, 10);
		}
	}
	pthread_mutex_unlock(&cl->mu);
}

/* 1 if lease value @p v names this node. */
static int
is_mine(const tidei_cluster *cl, const char *v)
{
	size_t n = strlen(cl->node);

	return v != NULL && strncmp(v, cl->node, n) == 0 && (v[n] == '\0' || v[n] == '\n');
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

	char val[160];

	lease_key(key, sizeof key, p);
	s = kvStore_Get(&e, cl->kv, key);
	if (s == NATS_OK) {
		const char *who = kvEntry_ValueString(e);
		take_view(cl, p, who);
		if (is_mine(cl, who) &&
		    kvStore_UpdateString(&rev, cl->kv, key, lease_value(cl, p, val, sizeof val),
					 kvEntry_Revision(e)) == NATS_OK) {
			kvEntry_Destroy(e);
			got_lease(cl, p, rev);
			return;
		}
		kvEntry_Destroy(e);
		return; /* another node's */
	}
	if (s == NATS_NOT_FOUND &&
	    kvStore_CreateString(&rev, cl->kv, key, lease_value(cl, p, val, sizeof val)) == NATS_OK)
		got_lease(cl, p, rev);
}

/* The owner named in partition @p p's lease ("" when free). */
static void
read_owner(tidei_cluster *cl, uint32_t p)
{
	char key[32];
	kvEntry *e = NULL;
	const char *who = NULL;

	natsStatus s;

	lease_key(key, sizeof key, p);
	if ((s = kvStore_Get(&e, cl->kv, key)) == NATS_OK)
		who = kvEntry_ValueString(e);
	else if (s != NATS_NOT_FOUND)
		LOG(cl, TIDE_LOG_DEBUG, "the lease of partition %" PRIu32 " cannot be read: %s", p,
		    tidei_cl_why(s));
	take_view(cl, p, who);
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

	char val[160];

	snprintf(key, sizeof key, "n.%s", cl->node);
	if (kvStore_PutString(&rev, cl->kv, key, "alive") != NATS_OK)
		return; /* the cluster is away: try again at the next tick */
	/* renew what we hold; a renewal refused means another node took it */
	for (uint32_t p = 0; p < cl->o.partitions && !atomic_load(&cl->stopping); p++) {
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
		if (kvStore_UpdateString(&rev, cl->kv, key, lease_value(cl, p, val, sizeof val),
					 r) != NATS_OK) {
			LOG(cl, TIDE_LOG_WARN, "the lease of partition %" PRIu32 " was lost", p);
			tidei_cl_drop_lease(cl, p, 0);
			continue;
		}
		pthread_mutex_lock(&cl->mu);
		pt->rev = rev;
		pthread_mutex_unlock(&cl->mu);
		if (again || pt->sub == NULL)
			subscribe(cl, p);
		else
			check_reading(cl, p);
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
		tidei_cl_drop_lease(cl, p, 1);
		owned--;
	}
	/* below it: free partitions, first those this node stored before
	 * (it goes on from its position, not from the start) */
	for (int pass = 0; pass < 2; pass++)
		for (uint32_t p = 0;
		     p < cl->o.partitions && owned < share && !atomic_load(&cl->stopping); p++) {
			if (cl->parts[p].owned || (pass == 0) != (cl->parts[p].position > 0))
				continue;
			try_take(cl, p);
			owned += cl->parts[p].owned;
		}
	/* who owns the others, for tide stat */
	for (uint32_t p = 0; p < cl->o.partitions && !atomic_load(&cl->stopping); p++)
		if (!cl->parts[p].owned)
			read_owner(cl, p);
}

void *
tidei_cl_keeper(void *arg)
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
