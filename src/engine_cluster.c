/*
 * engine_cluster.c - the engine as a node of a cluster over NATS
 * JetStream (cluster.h).
 *
 * In a cluster the producers' events do not go into this node's log:
 * each turn hands the batch they filled to the stream, and their
 * answers (with the stream's sequence) go out when the stream has
 * acknowledged every event.  What the turn stores instead is what the
 * partitions this node owns delivered, with their positions, and the
 * consumers and projections run over that as over any input.
 *
 * A build without libnats has the same entry points: joining a cluster
 * then fails with a clear error.
 */
#include "config.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "engine_int.h"
#include "json.h"

#ifdef TIDE_HAVE_NATS

#include "cluster.h"

static void
cluster_wake(void *ud)
{
	tide_engine *e = ud;

	tidei_loop_wake(&e->loop);
}

/* A batch the stream has answered: its producers hear of it. */
static void
cluster_published(void *ud, tidei_batch *b)
{
	tide_engine *e = ud;

	tidei_counters_add(&e->counters, b);
	if (tidei_batch_finish(b)) /* a waiter published again: into e->batch */
		tidei_loop_schedule(&e->loop);
	if (e->in != NULL)
		tidei_ingest_drained(e->in);
}

/* A query another node forwarded: answered here, whoever owns the key
 * now (a partition moved meanwhile answers from what is stored here). */
static int
cluster_answer(void *ud, const char *req, size_t len, tidei_buf *out)
{
	tide_engine *e = ud;
	tidei_request r;
	char err[TIDEI_ERRLEN];
	int rc;

	if (tidei_request_parse(&r, req, len, &e->reqbuf, err) != TIDE_OK ||
	    r.kind != TIDEI_REQ_QUERY) {
		tidei_buf_puts(out, "{\"ok\":false,\"error\":\"not a query\"}");
		return TIDE_EINVAL;
	}
	e->answering = 1;
	rc = e->fns.query(e, &r, out);
	e->answering = 0;
	return rc;
}

int
tidei_engine_cluster_query(tide_engine *e, const tidei_request *r, tidei_buf *reply, int *rc)
{
	tidei_buf req = { 0 };
	int here;

	if (e->answering || r->key == NULL)
		return 0; /* listings answer from this node's own states */
	tidei_buf_puts(&req, "{\"query\":");
	tidei_json_str(&req, r->name, strlen(r->name));
	tidei_buf_puts(&req, ",\"key\":");
	tidei_json_str(&req, r->key, r->klen);
	tidei_buf_putc(&req, '}');
	here = req.failed || tidei_cluster_forward(e->cluster, r->key, r->klen, (const char *)req.p,
						   req.len, reply, rc) != 0;
	tidei_buf_free(&req);
	return !here;
}

int
tidei_engine_open_cluster(tide_engine *e)
{
	const tide_config *c = e->cfg;
	tidei_cluster_opts o = { 0 };
	tidei_cluster_host h = { 0 };
	char host[HOST_NAME_MAX + 1] = "tide";
	int rc;

	if (c->cluster == NULL || c->cluster[0] == '\0')
		return TIDE_OK;
	if (c->cluster_node == NULL || c->cluster_node[0] == '\0')
		gethostname(host, sizeof host);
	o.urls = c->cluster;
	o.node = c->cluster_node && c->cluster_node[0] ? c->cluster_node : host;
	o.stream = c->cluster_stream;
	o.key = c->cluster_key;
	o.partitions = c->cluster_partitions > 1024 ? 1024 : (unsigned)c->cluster_partitions;
	o.replicas = c->cluster_replicas > 5 ? 5 : (unsigned)c->cluster_replicas;
	o.lease_ns = (int64_t)c->cluster_lease_ns;
	o.max_event = (size_t)c->max_event_size;
	h.ud = e;
	h.wake = cluster_wake;
	h.published = cluster_published;
	h.answer = cluster_answer;
	h.log = e->fns.log; /* set by tidei_engine_open_http(), which runs first */
	if ((rc = tidei_cluster_open(&e->cluster, &o, &h, e->log, e->err)) != TIDE_OK)
		return rc;
	tidei_engine_cluster_consumers(e, e->cs);
	h.log(e, TIDE_LOG_INFO, "node '%s' joined the cluster at %s (stream %s)", o.node, o.urls,
	      o.stream && o.stream[0] ? o.stream : "TIDE");
	return TIDE_OK;
}

void
tidei_engine_cluster_consumers(tide_engine *e, tidei_consumers *cs)
{
	if (e->cluster != NULL && cs != NULL)
		tidei_consumers_set_outbox(cs, tidei_cluster_outbox_put, e->cluster);
}

void
tidei_engine_close_cluster(tide_engine *e)
{
	tidei_cluster *cl = e->cluster;

	if (cl == NULL)
		return;
	e->cluster = NULL;
	tidei_cluster_close(cl);
}

tidei_batch *
tidei_engine_cluster_turn(tide_engine *e)
{
	char err[TIDEI_ERRLEN];

	if (e->batch.n > 0 && tidei_cluster_can_publish(e->cluster)) {
		if (e->batch.valid == 0) {
			/* nothing to send: the refusals are answered now */
			tidei_counters_add(&e->counters, &e->batch);
			tidei_batch_finish(&e->batch);
		} else if (tidei_cluster_publish(e->cluster, &e->batch, err) != TIDE_OK) {
			tidei_batch_fail_all(&e->batch, TIDE_ESTATE, err);
			tidei_counters_add(&e->counters, &e->batch);
			tidei_batch_finish(&e->batch);
		}
		if (e->in != NULL)
			tidei_ingest_drained(e->in);
	}
	tidei_cluster_poll(e->cluster, &e->cbatch);
	return &e->cbatch;
}

int
tidei_engine_cluster_write(tide_engine *e, char *err)
{
	return tidei_cluster_write(e->cluster, e->log, err);
}

void
tidei_engine_cluster_done(tide_engine *e, int committed)
{
	if (e->cluster == NULL)
		return;
	if (committed)
		tidei_cluster_committed(e->cluster);
	else
		tidei_cluster_aborted(e->cluster);
}

void
tidei_engine_cluster_stat(tide_engine *e, tidei_buf *reply)
{
	tidei_cluster_stat st;

	if (e->cluster == NULL) {
		tidei_buf_puts(reply, "{\"ok\":false,\"error\":\"this node is not in a cluster "
				      "(start it with --cluster)\"}");
		return;
	}
	tidei_cluster_stat_get(e->cluster, &st);
	tidei_buf_puts(reply, "{\"ok\":true,\"node\":");
	tidei_json_str(reply, st.node, strlen(st.node));
	tidei_buf_puts(reply, ",\"stream\":");
	tidei_json_str(reply, st.stream, strlen(st.stream));
	tidei_buf_printf(reply,
			 ",\"connected\":%s,\"nodes\":%u,\"published\":%llu,\"received\":%llu,"
			 "\"partitions\":[",
			 st.connected ? "true" : "false", st.nodes,
			 (unsigned long long)st.published, (unsigned long long)st.received);
	for (unsigned p = 0; p < st.partitions; p++) {
		const tidei_cluster_part *pt = &st.part[p];
		tidei_buf_printf(reply, "%s{\"partition\":%u,\"owner\":", p ? "," : "", p);
		tidei_json_str(reply, pt->owner, strlen(pt->owner));
		tidei_buf_printf(reply, ",\"here\":%s,\"position\":%llu",
				 pt->owned ? "true" : "false", (unsigned long long)pt->position);
		if (pt->owner[0] != '\0') /* as the owner last said */
			tidei_buf_printf(reply, ",\"lag\":%llu", (unsigned long long)pt->lag);
		tidei_buf_putc(reply, '}');
	}
	tidei_buf_puts(reply, "]}");
}

void
tidei_engine_cluster_metrics(tide_engine *e, tidei_buf *out)
{
	tidei_cluster_stat st;
	unsigned owned = 0;

	if (e->cluster == NULL)
		return;
	tidei_cluster_stat_get(e->cluster, &st);
	for (unsigned p = 0; p < st.partitions; p++)
		owned += st.part[p].owned != 0;
	tidei_buf_printf(
		out,
		"# HELP tide_cluster_connected 1 while the node is connected to NATS.\n"
		"# TYPE tide_cluster_connected gauge\ntide_cluster_connected %d\n"
		"# HELP tide_cluster_nodes Nodes alive, as last counted.\n"
		"# TYPE tide_cluster_nodes gauge\ntide_cluster_nodes %u\n"
		"# HELP tide_cluster_partitions Partitions of the stream.\n"
		"# TYPE tide_cluster_partitions gauge\ntide_cluster_partitions %u\n"
		"# HELP tide_cluster_partitions_owned Partitions this node owns.\n"
		"# TYPE tide_cluster_partitions_owned gauge\ntide_cluster_partitions_owned %u\n"
		"# HELP tide_cluster_published_total Events this node published to the stream.\n"
		"# TYPE tide_cluster_published_total counter\ntide_cluster_published_total %llu\n"
		"# HELP tide_cluster_received_total Events this node took from its partitions.\n"
		"# TYPE tide_cluster_received_total counter\ntide_cluster_received_total %llu\n",
		st.connected, st.nodes, st.partitions, owned, (unsigned long long)st.published,
		(unsigned long long)st.received);
	for (int pass = 0; pass < 2; pass++) {
		const char *name =
			pass ? "tide_cluster_partition_lag" : "tide_cluster_partition_position";
		tidei_buf_printf(
			out, "# HELP %s %s\n# TYPE %s gauge\n", name,
			pass ? "Events of a partition in the stream not stored by its owner."
			     : "Stream sequence its owner stored last.",
			name);
		for (unsigned p = 0; p < st.partitions; p++) {
			const tidei_cluster_part *pt = &st.part[p];
			if (pt->owner[0] == '\0')
				continue;
			tidei_buf_printf(out, "%s{partition=\"%u\",owner=", name, p);
			tidei_json_str(out, pt->owner,
				       strlen(pt->owner)); /* a quoted label value */
			tidei_buf_printf(out, "} %llu\n",
					 (unsigned long long)(pass ? pt->lag : pt->position));
		}
	}
}

#else /* no libnats */

void
tidei_engine_cluster_metrics(tide_engine *e, tidei_buf *out)
{
	(void)e;
	(void)out;
}

void
tidei_engine_cluster_consumers(tide_engine *e, tidei_consumers *cs)
{
	(void)e;
	(void)cs;
}

int
tidei_engine_cluster_query(tide_engine *e, const tidei_request *r, tidei_buf *reply, int *rc)
{
	(void)e;
	(void)r;
	(void)reply;
	(void)rc;
	return 0;
}

void
tidei_engine_cluster_stat(tide_engine *e, tidei_buf *reply)
{
	(void)e;
	tidei_buf_puts(reply, "{\"ok\":false,\"error\":\"this build has no cluster mode\"}");
}

int
tidei_engine_open_cluster(tide_engine *e)
{
	if (e->cfg->cluster == NULL || e->cfg->cluster[0] == '\0')
		return TIDE_OK;
	return tidei_err(e->err, TIDE_ECONFIG,
			 "cluster: this build has no cluster mode (configure found no libnats; "
			 "install libnats-dev and build again)");
}

void
tidei_engine_close_cluster(tide_engine *e)
{
	(void)e;
}

tidei_batch *
tidei_engine_cluster_turn(tide_engine *e)
{
	return &e->batch;
}

int
tidei_engine_cluster_write(tide_engine *e, char *err)
{
	(void)e;
	(void)err;
	return TIDE_OK;
}

void
tidei_engine_cluster_done(tide_engine *e, int committed)
{
	(void)e;
	(void)committed;
}

#endif
