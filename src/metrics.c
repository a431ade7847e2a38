/*
 * metrics.c - the Prometheus text exposition (metrics.h).
 *
 * Consumers' and projections' positions are read from the log as last
 * written: a busy consumer writes its checkpoint every 2 s, so its lag
 * here is at most that much behind.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "metrics.h"

static void
head(tidei_buf *out, const char *name, const char *type, const char *help)
{
	tidei_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void
one(tidei_buf *out, const char *name, const char *type, const char *help, uint64_t v)
{
	head(out, name, type, help);
	tidei_buf_printf(out, "%s %llu\n", name, (unsigned long long)v);
}

/* A label value, escaped as the format asks (\\, \" and \n). */
static void
label(tidei_buf *out, const char *v)
{
	for (; *v != '\0'; v++) {
		if (*v == '\\' || *v == '"')
			tidei_buf_putc(out, '\\');
		if (*v == '\n') {
			tidei_buf_puts(out, "\\n");
			continue;
		}
		tidei_buf_putc(out, (uint8_t)*v);
	}
}

static void
labelled(tidei_buf *out, const char *name, const char *key, const char *value, uint64_t v)
{
	tidei_buf_printf(out, "%s{%s=\"", name, key);
	label(out, value);
	tidei_buf_printf(out, "\"} %llu\n", (unsigned long long)v);
}

/* ------------------------------------------------------------------------
 * Consumers and projections, from the log
 * ------------------------------------------------------------------------ */

typedef struct walk {
	tidei_buf *out;
	tide_log *log;
	uint64_t last;
	int pass; /* which metric this walk writes */
} walk;

enum { C_CHECKPOINT, C_LAG, C_RETRYING, C_DEAD, C_KEYS, C_TIMERS, C_LATE, C_FIRED, C_FAILED, C_N };

static const struct {
	const char *name, *type, *help;
} cmetrics[C_N] = {
	{ "tide_consumer_checkpoint", "gauge", "Last seq a consumer handled, as last written." },
	{ "tide_consumer_lag", "gauge", "Events in the log after a consumer's checkpoint." },
	{ "tide_consumer_retrying", "gauge", "Events waiting for a retry." },
	{ "tide_consumer_dead_letters", "gauge", "Events in a consumer's dead letters." },
	{ "tide_rule_keys", "gauge", "Keys a rule keeps state for." },
	{ "tide_rule_timers", "gauge", "Timers a rule has set." },
	{ "tide_rule_late_events_total", "counter", "Events that came after a rule's watermark." },
	{ "tide_rule_timers_fired_total", "counter", "Named timers that fired." },
	{ "tide_rule_failed_total", "counter", "Failed calls of a rule's timer handlers." },
};

static void
each_consumer(void *ud, const char *name, uint64_t seq)
{
	walk *w = ud;
	uint64_t pending = 0, dead = 0, v = 0;
	tide_rule_info ri;
	int rule;

	switch (w->pass) {
	case C_CHECKPOINT: v = seq; break;
	case C_LAG: v = w->last > seq ? w->last - seq : 0; break;
	case C_RETRYING:
	case C_DEAD:
		if (tide_log_consumer_backlog(w->log, name, &pending, &dead) != TIDE_OK)
			return;
		v = w->pass == C_RETRYING ? pending : dead;
		break;
	default:
		rule = tide_log_rule_info(w->log, name, &ri) == TIDE_OK;
		if (!rule)
			return;
		v = w->pass == C_KEYS     ? ri.keys
		    : w->pass == C_TIMERS ? ri.timers
		    : w->pass == C_LATE   ? ri.late
		    : w->pass == C_FIRED  ? ri.fired
					  : ri.failed;
	}
	labelled(w->out, cmetrics[w->pass].name, "consumer", name, v);
}

enum { P_SEQ, P_LAG, P_BUILDING, P_FAULTED, P_N };

static const struct {
	const char *name, *help;
} pmetrics[P_N] = {
	{ "tide_projection_seq", "Last seq applied to the state queries read." },
	{ "tide_projection_lag", "Events in the log after a projection's seq." },
	{ "tide_projection_building", "1 while a projection is being rebuilt." },
	{ "tide_projection_faulted", "1 when a projection stopped on a failed handler." },
};

static void
each_projection(void *ud, const tide_projection_info *pi)
{
	walk *w = ud;
	uint64_t v;

	switch (w->pass) {
	case P_SEQ: v = pi->live_seq; break;
	case P_LAG: v = w->last > pi->live_seq ? w->last - pi->live_seq : 0; break;
	case P_BUILDING: v = (uint64_t)(pi->building != 0); break;
	default: v = (uint64_t)(pi->faulted != 0);
	}
	labelled(w->out, pmetrics[w->pass].name, "projection", pi->name, v);
}

/* ------------------------------------------------------------------------
 * The exposition
 * ------------------------------------------------------------------------ */

/* The series of histogram @p name, labelled @p key="@p value" as well
 * when @p key is not NULL (its HELP and TYPE are written apart). */
static void
histogram_series(tidei_buf *out, const char *name, const char *key, const char *value,
		 const tidei_histo_bounds *b, const tidei_histo *h)
{
	uint64_t cum = 0;
	tidei_buf lb = { 0 };

	if (key != NULL) {
		tidei_buf_printf(&lb, "%s=\"", key);
		label(&lb, value);
		tidei_buf_puts(&lb, "\",");
	}
	for (size_t k = 0; k <= TIDEI_HISTO_BUCKETS; k++) {
		cum += h->n[k];
		if (k < TIDEI_HISTO_BUCKETS)
			tidei_buf_printf(out, "%s_bucket{%.*sle=\"%g\"} %llu\n", name, (int)lb.len,
					 (const char *)lb.p, (double)b->le[k] / 1e9,
					 (unsigned long long)cum);
		else
			tidei_buf_printf(out, "%s_bucket{%.*sle=\"+Inf\"} %llu\n", name,
					 (int)lb.len, (const char *)lb.p, (unsigned long long)cum);
	}
	if (lb.len > 0)
		lb.len--; /* the last comma */
	tidei_buf_printf(out, "%s_sum%s%.*s%s %.9f\n", name, lb.len ? "{" : "", (int)lb.len,
			 (const char *)lb.p, lb.len ? "}" : "", (double)h->sum_ns / 1e9);
	tidei_buf_printf(out, "%s_count%s%.*s%s %llu\n", name, lb.len ? "{" : "", (int)lb.len,
			 (const char *)lb.p, lb.len ? "}" : "", (unsigned long long)h->count);
	tidei_buf_free(&lb);
}

static void
histogram(tidei_buf *out, const char *name, const char *help, const tidei_histo_bounds *b,
	  const tidei_histo *h)
{
	head(out, name, "histogram", help);
	histogram_series(out, name, NULL, NULL, b, h);
}

/* ------------------------------------------------------------------------
 * Consumers and projections, as they run
 * ------------------------------------------------------------------------ */

enum { H_HANDLED, H_FAILED, H_RETRIED, H_DEAD, H_CLOSED, H_EXPIRED, H_N };

static const struct {
	const char *name, *help;
} hmetrics[H_N] = {
	{ "tide_consumer_handled_total", "Handler calls that succeeded." },
	{ "tide_consumer_failed_total", "Handler calls that failed." },
	{ "tide_consumer_retries_total", "Retries scheduled after a failed call." },
	{ "tide_consumer_dead_lettered_total", "Events given up on and put in the dead letters." },
	{ "tide_rule_windows_closed_total", "Windows that closed." },
	{ "tide_rule_keys_expired_total", "Keys forgotten after their ttl." },
};

static void
handlers(tidei_buf *out, const tidei_metrics_src *m)
{
	static const char *const hname[2] = { "tide_consumer_handler_seconds",
					      "tide_projection_handler_seconds" };
	static const char *const hhelp[2] = {
		"Time a consumer's handler took per event.",
		"Time a projection's handler took per event (live, not in a rebuild).",
	};

	for (int i = 0; i < H_N; i++) {
		head(out, hmetrics[i].name, "counter", hmetrics[i].help);
		for (size_t k = 0; k < m->nhandlers; k++) {
			const tidei_handler_stats *h = &m->handlers[k];
			uint64_t v = i == H_HANDLED   ? h->handled
				     : i == H_FAILED  ? h->failed
				     : i == H_RETRIED ? h->retried
				     : i == H_DEAD    ? h->dead_letters
				     : i == H_CLOSED  ? h->closed
						      : h->expired;
			if (h->projection || (i >= H_CLOSED && !h->rule))
				continue;
			labelled(out, hmetrics[i].name, "consumer", h->name, v);
		}
	}
	for (int proj = 0; proj < 2; proj++) {
		head(out, hname[proj], "histogram", hhelp[proj]);
		for (size_t k = 0; k < m->nhandlers; k++)
			if (m->handlers[k].projection == proj)
				histogram_series(out, hname[proj], proj ? "projection" : "consumer",
						 m->handlers[k].name, &tidei_histo_handler,
						 m->handlers[k].took);
	}
}

static void
http_counts(tidei_buf *out, const tidei_http_stats *hs)
{
	head(out, "tide_http_responses_total", "counter",
	     "HTTP responses sent, by resource, method and status.");
	for (size_t k = 0; k < hs->nanswered; k++) {
		const tidei_http_count *c = &hs->answered[k];
		tidei_buf_printf(
			out,
			"tide_http_responses_total{handler=\"%s\",method=\"%s\",code=\"%d\"} "
			"%llu\n",
			c->handler, c->method, c->code, (unsigned long long)c->n);
	}
}

void
tidei_counters_add(tidei_counters *c, const tidei_batch *b)
{
	for (size_t k = 0; k < b->n; k++) {
		const tidei_item *it = &b->items[k];
		if (tidei_batch_error(b, it) == NULL)
			*(it->duplicate ? &c->duplicates : &c->stored) += 1;
		else if (it->code == TIDE_EEVENT)
			c->invalid++;
		else if (it->code == TIDE_ECONFLICT)
			c->conflicts++;
		else
			c->not_stored++;
	}
}

void
tidei_metrics_write(tidei_buf *out, const tidei_metrics_src *m)
{
	tide_log_stat st;
	int have = m->log != NULL && tide_log_stat_get(m->log, &st) == TIDE_OK;

	one(out, "tide_up", "gauge", "1 while the engine serves.", 1);
	one(out, "tide_ready", "gauge", "1 when events can be stored now.", (uint64_t)m->ready);
	if (have) {
		one(out, "tide_log_last_seq", "gauge", "The last committed seq.", st.last_seq);
		one(out, "tide_log_events", "gauge", "Events stored in the log.", st.events);
		one(out, "tide_log_streams", "gauge", "Subjects with a stream.", st.streams);
		one(out, "tide_log_bytes", "gauge", "Bytes of the log's map in use.", st.size);
		one(out, "tide_log_map_bytes", "gauge", "Bytes of the log's map.", st.map_size);
	}
	if (m->c != NULL) {
		const tidei_counters *c = m->c;
		head(out, "tide_events_total", "counter",
		     "Events received, by what became of them.");
		tidei_buf_printf(out,
				 "tide_events_total{result=\"stored\"} %llu\n"
				 "tide_events_total{result=\"duplicate\"} %llu\n"
				 "tide_events_total{result=\"invalid\"} %llu\n"
				 "tide_events_total{result=\"conflict\"} %llu\n"
				 "tide_events_total{result=\"not_stored\"} %llu\n",
				 (unsigned long long)c->stored, (unsigned long long)c->duplicates,
				 (unsigned long long)c->invalid, (unsigned long long)c->conflicts,
				 (unsigned long long)c->not_stored);
		one(out, "tide_commits_total", "counter", "Group commits.", c->commits);
		histogram(out, "tide_commit_seconds",
			  "Time to commit a turn, the fsync included (durability sync).",
			  &tidei_histo_commit, &c->commit);
		one(out, "tide_reloads_total", "counter", "Script reloads.", c->reloads);
	}
	if (m->ingest != NULL) {
		const tidei_ingest_stats *is = m->ingest;
		head(out, "tide_nanomsg_messages_total", "counter",
		     "Messages received, by socket.");
		tidei_buf_printf(out,
				 "tide_nanomsg_messages_total{socket=\"pull\"} %llu\n"
				 "tide_nanomsg_messages_total{socket=\"rep\"} %llu\n",
				 (unsigned long long)is->pull, (unsigned long long)is->rep);
		one(out, "tide_nanomsg_requests_total", "counter",
		    "Queries and commands received on REP (tide query, tide dlq...).",
		    is->requests);
		head(out, "tide_nanomsg_rejected_total", "counter",
		     "Events or messages refused on PULL and REP, by reason.");
		tidei_buf_printf(out,
				 "tide_nanomsg_rejected_total{reason=\"too_large\"} %llu\n"
				 "tide_nanomsg_rejected_total{reason=\"invalid\"} %llu\n",
				 (unsigned long long)is->too_large,
				 (unsigned long long)(is->rejected - is->too_large));
	}
	if (m->http != NULL) {
		one(out, "tide_http_requests_total", "counter", "HTTP requests.",
		    m->http->requests);
		one(out, "tide_http_refused_total", "counter",
		    "HTTP requests answered 4xx or 5xx before their events were read.",
		    m->http->refused);
		one(out, "tide_http_events_total", "counter", "Events posted over HTTP.",
		    m->http->events);
		one(out, "tide_http_streams", "gauge", "Event streams open.", m->http->streams);
		http_counts(out, m->http);
	}
	if (m->nhandlers > 0)
		handlers(out, m);
	if (have) {
		walk w = { out, m->log, st.last_seq, 0 };
		for (w.pass = 0; w.pass < C_N; w.pass++) {
			head(out, cmetrics[w.pass].name, cmetrics[w.pass].type,
			     cmetrics[w.pass].help);
			(void)tide_log_consumers(m->log, each_consumer, &w);
		}
		for (w.pass = 0; w.pass < P_N; w.pass++) {
			head(out, pmetrics[w.pass].name, "gauge", pmetrics[w.pass].help);
			(void)tide_log_projections(m->log, each_projection, &w);
		}
	}
}
