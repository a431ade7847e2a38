/*
 * engine_http.c - the engine's side of the HTTP endpoint (http.h): when it
 * is ready, projection queries as REP answers them, and the metrics.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"

/* GET /readyz: able to take events now. */
static int
http_ready(void *ud, char *why, size_t n)
{
	tide_engine *e = ud;

	if (!e->opened || e->stopping || e->halted) {
		snprintf(why, n, "the engine is %s", e->opened ? "stopping" : "starting");
		return 0;
	}
	if (e->log->disk_full) {
		snprintf(why, n, "the disk is full: events cannot be stored");
		return 0;
	}
	return 1;
}

/* GET /projections/...: a REP query's answer, and its status. */
static int
http_query(void *ud, const char *name, const char *key, size_t klen, const char *prefix,
	   size_t limit, tidei_buf *reply)
{
	tide_engine *e = ud;
	tidei_request r;
	int rc;

	memset(&r, 0, sizeof r);
	if (strlen(name) >= sizeof r.name) {
		tidei_buf_puts(reply,
			       "{\"ok\":false,\"error\":\"no projection has so long a name\"}");
		return 404;
	}
	snprintf(r.name, sizeof r.name, "%s", name);
	r.key = key;
	r.klen = klen;
	r.prefix = key == NULL ? prefix : NULL;
	r.plen = r.prefix ? strlen(r.prefix) : 0;
	r.limit = limit;
	rc = e->fns.query(e, &r, reply);
	return rc == TIDE_OK ? 200 : rc == TIDE_ENOTFOUND ? 404 : rc == TIDE_ESTATE ? 503 : 500;
}

/* The consumers and projections as they run, for the metrics: an array
 * for the caller to free (NULL when there are none, or no memory). */
static tidei_handler_stats *
handler_stats(const tide_engine *e, size_t *n)
{
	size_t nc = e->cs ? tidei_consumers_count(e->cs) : 0;
	size_t np = e->ps ? tidei_projections_count(e->ps) : 0;
	tidei_handler_stats *v;

	*n = 0;
	if (nc + np == 0 || (v = calloc(nc + np, sizeof *v)) == NULL)
		return NULL;
	for (size_t k = 0; k < nc; k++) {
		const tidei_consumer *c = tidei_consumers_at(e->cs, k);
		tidei_handler_stats *h = &v[(*n)++];
		h->name = c->name;
		h->handled = c->handled;
		h->failed = c->failed;
		h->retried = c->retried;
		h->dead_letters = c->dead_letters;
		h->took = &c->took;
		if ((h->rule = c->rule != NULL))
			tidei_rule_counts(c->rule, &h->closed, &h->expired);
	}
	for (size_t k = 0; k < np; k++) {
		tidei_handler_stats *h = &v[(*n)++];
		h->projection = 1;
		h->took = tidei_projections_took(e->ps, k, &h->name);
	}
	return v;
}

/* GET /metrics. */
static void
http_metrics(void *ud, tidei_buf *out)
{
	tide_engine *e = ud;
	tidei_ingest_stats is;
	tidei_http_stats hs;
	tidei_metrics_src m = { 0 };
	tidei_handler_stats *hv;
	char why[128];

	m.c = &e->counters;
	if (e->ct != NULL) /* the consumers' counters, still */
		tidei_cthread_pause(e->ct);
	m.handlers = hv = handler_stats(e, &m.nhandlers);
	m.log = e->view;
	if (e->in != NULL) {
		tidei_ingest_stats_get(e->in, &is);
		m.ingest = &is;
	}
	if (e->http != NULL) {
		tidei_http_stats_get(e->http, &hs);
		m.http = &hs;
	}
	m.ready = http_ready(e, why, sizeof why);
	tidei_metrics_write(out, &m);
	if (e->ct != NULL)
		tidei_cthread_unpause(e->ct);
	tidei_engine_cluster_metrics(e, out);
	free(hv);
}

/* The HTTP endpoint, when configured. */
int
tidei_engine_open_http(tide_engine *e, const tidei_engine_fns *fns)
{
	tidei_http_opts o = { 0 };
	tidei_http_host h = { 0 };
	int rc;

	e->fns = *fns; /* engine_cluster.c logs through it too */
	if (e->cfg->http == NULL || e->cfg->http[0] == '\0')
		return TIDE_OK;
	o.listen = e->cfg->http;
	o.token = e->cfg->http_token;
	o.turn_events = (size_t)e->cfg->turn_events;
	o.max_message = (size_t)e->cfg->max_message_size;
	h.ud = e;
	h.input = fns->input;
	h.ready = http_ready;
	h.query = http_query;
	h.metrics = http_metrics;
	h.log = fns->log;
	if (tidei_log_view(e->log, &e->view) != TIDE_OK)
		return tidei_err(e->err, TIDE_ENOMEM, "out of memory");
	if ((rc = tidei_http_open(&e->http, e->loop.base, &o, &e->batch, e->view, &h, e->err)) !=
	    TIDE_OK)
		return rc;
	snprintf(e->http_addr, sizeof e->http_addr, "%s", tidei_http_address(e->http));
	if (!tidei_http_local(e->http))
		fns->log(e, TIDE_LOG_WARN,
			 "the HTTP endpoint %s can be reached from other machines: whoever "
			 "reaches it "
			 "can append events%s",
			 e->http_addr,
			 e->cfg->http_token ? " with the token"
					    : " (set http_token, or bind to 127.0.0.1)");
	return TIDE_OK;
}
