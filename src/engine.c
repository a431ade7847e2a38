/*
 * engine.c - lifecycle and wiring of a tide_engine; the only file that
 * knows every module.
 *
 * The engine's heartbeat is the turn, run once per loop iteration after
 * the sockets have been drained into the batch (loop.c):
 *
 *   1. one LMDB write transaction begins;
 *   2. the batch's events are appended (duplicates answered, not stored);
 *   3. every consumer handles the new events, appending what it emits
 *      and moving its checkpoint;
 *   4. the transaction commits (fsync in durability "sync");
 *   5. producers get their acknowledgements and PUB gets the new events.
 *
 * Everything a turn does is in one transaction, so a crash applies all of
 * it or none.  If the map fills up, the transaction is aborted, the map
 * doubled and the turn run again.  A consumer that fails for a reason
 * other than a full map does not hold ingest hostage: the turn is redone
 * without consumers and they try again a second later.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "engine_int.h"
#include "json.h"
#include "pworker.h"

/* Copy @p msg into @p out (of @p n > 0 bytes) with its control characters
 * written as escapes: messages quote what producers and scripts chose (an
 * id, an error), and a line feed or an escape sequence in those would
 * forge a log line or drive a terminal. */
static void
escape_controls(char *out, size_t n, const char *msg)
{
	size_t k = 0;

	for (const unsigned char *p = (const unsigned char *)msg; *p && k + 5 < n; p++) {
		if ((*p >= 0x20 && *p != 0x7f) || *p == '\t') {
			out[k++] = (char)*p;
		} else if (*p == '\n') {
			out[k++] = '\\';
			out[k++] = 'n';
		} else {
			k += (size_t)snprintf(out + k, n - k, "\\x%02x", *p);
		}
	}
	out[k] = '\0';
}

static void elog(void *ud, int level, const char *fmt, ...) TIDEI_PRINTF(3, 4);

static void
elog(void *ud, int level, const char *fmt, ...)
{
	tide_engine *e = ud;
	char msg[2048], safe[2048 * 2];
	va_list ap;

	if (e->cfg->log == NULL || level > e->cfg->log_level)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	escape_controls(safe, sizeof safe, msg);
	e->cfg->log(e->cfg->log_ud, level, safe);
}

/* ------------------------------------------------------------------------
 * The turn
 * ------------------------------------------------------------------------ */

/* Send every event committed since the last turn to PUB subscribers. */
static void
publish_new(tide_engine *e)
{
	uint64_t to = e->log->committed, seq = e->published + 1;
	MDB_txn *txn;
	MDB_cursor *cur;
	MDB_val k = { 8, &seq }, v;
	int mrc;

	if (seq > to)
		return;
	if (e->in == NULL || !tidei_ingest_has_subscribers(e->in) ||
	    tidei_log_read_begin(e->log, &txn) != TIDE_OK) {
		e->published = to;
		return;
	}
	if (mdb_cursor_open(txn, e->log->events, &cur) == 0) {
		for (mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); mrc == 0;
		     mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
			struct tide_event ev;
			memcpy(&seq, k.mv_data, 8);
			if (seq > to)
				break;
			if (tidei_event_decode(&ev, v.mv_data, v.mv_size) != 0)
				continue;
			ev.seq = seq;
			tidei_buf_reset(&e->pubbuf);
			if (tidei_event_json(&e->pubbuf, &ev) == 0)
				tidei_ingest_publish(e->in, ev.attr[TIDEI_A_TYPE],
						     ev.len[TIDEI_A_TYPE],
						     (const char *)e->pubbuf.p, e->pubbuf.len);
		}
		mdb_cursor_close(cur);
	}
	tidei_log_read_end(e->log);
	e->published = to;
}

/* ------------------------------------------------------------------------
 * Dead letters retried or dropped on request, a slice per turn
 * ------------------------------------------------------------------------ */

static void
reply_error(tidei_buf *reply, const char *msg)
{
	tidei_buf_puts(reply, "{\"ok\":false,\"error\":");
	tidei_json_str(reply, msg, strlen(msg));
	tidei_buf_putc(reply, '}');
}

static void
dlq_changed(void *ud, int op, const char *consumer, uint64_t seq)
{
	tide_engine *e = ud;

	if (op == TIDE_DLQ_RETRY)
		tidei_consumers_requeue(e->cs, consumer, seq);
	else
		tidei_consumers_forget(e->cs, consumer, seq);
}

/* The next slice of the oldest request, in the turn's transaction. */
static int
dlq_slice(tide_engine *e, char *err)
{
	int rc = tidei_dlq_step(e->log, &e->jobs[0].job, DLQ_SLICE, dlq_changed, e);

	return rc == TIDE_OK ? TIDE_OK : tidei_err(err, rc, "%s", e->log->err);
}

static void
dlq_rollback(tide_engine *e)
{
	if (e->njobs > 0)
		e->jobs[0].job = e->jobs[0].committed;
}

static void
dlq_answer(tide_engine *e, dlq_req *q, const char *error)
{
	tidei_buf out = { 0 };

	if (error == NULL) {
		elog(e, TIDE_LOG_INFO, "dead letters: %s %llu",
		     q->job.op == TIDE_DLQ_RETRY ? "retrying" : "dropped",
		     (unsigned long long)q->job.count);
		tidei_buf_printf(&out, "{\"ok\":true,\"count\":%llu}",
				 (unsigned long long)q->job.count);
	} else {
		reply_error(&out, error);
	}
	if (e->in != NULL && !out.failed)
		tidei_ingest_reply(e->in, q->ctl, &out);
	tidei_buf_free(&out);
}

/* A turn committed: its slice is durable; answer a request that is done. */
static void
dlq_committed(tide_engine *e)
{
	if (e->njobs == 0)
		return;
	e->jobs[0].committed = e->jobs[0].job;
	if (!e->jobs[0].job.done)
		return;
	dlq_answer(e, &e->jobs[0], NULL);
	memmove(e->jobs, e->jobs + 1, (e->njobs - 1) * sizeof *e->jobs);
	e->njobs--;
}

/* Stopping: requests not finished are answered with what was done. */
static void
dlq_abandon(tide_engine *e)
{
	for (size_t k = 0; k < e->njobs; k++) {
		char msg[200];
		snprintf(msg, sizeof msg,
			 "the engine is stopping: %llu dead letters were %s before it did; ask "
			 "again once it runs",
			 (unsigned long long)e->jobs[k].committed.count,
			 e->jobs[k].job.op == TIDE_DLQ_RETRY ? "retried" : "dropped");
		dlq_answer(e, &e->jobs[k], msg);
	}
	e->njobs = 0;
}

/* The turn's transaction was aborted: the consumers go back to their
 * last write (on their thread, once they have stopped). */
static void
consumers_aborted(tide_engine *e)
{
	if (e->ct != NULL)
		tidei_cthread_done(e->ct, 0);
	else
		tidei_consumers_reload(e->cs, e->log);
}

/* Append the batch and run the consumers in one transaction. */
static int
commit_turn(tide_engine *e, tidei_batch *b, int with_consumers, int *more, char *err)
{
	int64_t now = tidei_now();
	int rc;

	if ((rc = tidei_log_begin(e->log)) != TIDE_OK)
		return tidei_err(err, rc, "%s", e->log->err);
	for (size_t k = 0; k < b->n; k++) {
		tidei_item *it = &b->items[k];
		tidei_append res;
		if (it->len == 0)
			continue;
		rc = tidei_log_append(e->log, tidei_batch_rec(b, it), it->len, now, it->expect,
				      &res);
		if (rc == TIDE_ECONFLICT) {
			/* refused, nothing written: the rest of the turn goes on */
			it->version = res.version;
			tidei_batch_fail(b, it, rc, e->log->err);
			continue;
		}
		if (rc != TIDE_OK) {
			tidei_err(err, rc, "%s", e->log->err);
			goto abort;
		}
		it->seq = res.seq;
		it->version = res.version;
		it->duplicate = res.duplicate;
	}
	if (e->njobs > 0 && (rc = dlq_slice(e, err)) != TIDE_OK)
		goto abort;
	if (e->cluster != NULL && (rc = tidei_engine_cluster_write(e, err)) != TIDE_OK)
		goto abort;
	if (with_consumers) {
		int pmore = 0;
		if (e->ct != NULL) {
			/* on their thread: what they emitted, and what they write */
			if ((rc = tidei_cthread_serve(e->ct, err)) != TIDE_OK)
				goto abort;
		} else if ((rc = tidei_consumers_tick(e->cs, e->log, now, err)) != TIDE_OK ||
			   (rc = tidei_consumers_run(e->cs, e->log, more, err)) != TIDE_OK) {
			goto abort;
		}
		/* after the consumers: projections see what they emitted (and
		 * wait for a fresh state if the consumers found it full) */
		if ((e->ct != NULL || tidei_consumers_full(e->cs) == NULL) &&
		    (rc = tidei_projections_run(e->ps, e->log, &pmore, err)) != TIDE_OK)
			goto abort;
		*more |= pmore;
	}
	{
		int64_t t0 = tidei_mono();
		rc = tidei_log_commit(e->log);
		if (rc == TIDE_OK) {
			e->counters.commits++;
			tidei_histo_add(&e->counters.commit, &tidei_histo_commit,
					tidei_mono() - t0);
		}
	}
	if (rc != TIDE_OK) {
		dlq_rollback(e);
		tidei_engine_cluster_done(e, 0);
		consumers_aborted(e);
		tidei_projections_reload(e->ps, e->log);
		return tidei_err(err, rc, "%s", e->log->err);
	}
	if (e->ct != NULL)
		tidei_cthread_done(e->ct, 1);
	else
		tidei_consumers_committed(e->cs);
	dlq_committed(e);
	tidei_engine_cluster_done(e, 1);
	return TIDE_OK;
abort:
	tidei_log_abort(e->log);
	dlq_rollback(e);
	tidei_engine_cluster_done(e, 0);
	consumers_aborted(e);
	tidei_projections_reload(e->ps, e->log);
	return rc;
}

/* Arm the timer for the next retry.  It may fire a little early (libevent
 * measures from the time it cached when the loop woke), so a turn that
 * finds nothing due arms it again. */
/* When a turn is due without input: a consumer's retry, or a look at a
 * projection build's threads; -1 for never. */
static int64_t
next_wake(tide_engine *e)
{
	int64_t a = e->ct != NULL ? -1 : tidei_consumers_next_retry(e->cs), b = -1;

	/* projections run only in turns with the consumers (not paused) */
	if (tidei_now() >= e->consumers_resume)
		b = tidei_projections_next_poll(e->ps);

	return a < 0 ? b : b < 0 || a < b ? a : b;
}

static void
schedule_retry(tide_engine *e)
{
	int64_t next = next_wake(e);

	if (next >= 0)
		tidei_loop_schedule_in(&e->loop, next - tidei_now());
}

static int
retry_due(tide_engine *e)
{
	int64_t next = next_wake(e);

	return next >= 0 && next <= tidei_now();
}

static int reload(tide_engine *e);

/* Write the consumers' work that waits in memory (consumer.c), in a
 * transaction of its own: before the scripts are reloaded or the engine
 * stops.  If it cannot be written, the consumers go back to their last
 * write and handle the events after it again. */
static void
write_consumers(tide_engine *e)
{
	char err[TIDEI_ERRLEN];
	int rc;

	tidei_engine_consumers_home(e);
	if ((rc = tidei_log_begin(e->log)) != TIDE_OK) {
		snprintf(err, sizeof err, "%s", e->log->err);
	} else if ((rc = tidei_consumers_write(e->cs, e->log, err)) != TIDE_OK) {
		tidei_log_abort(e->log);
	} else if ((rc = tidei_log_commit(e->log)) != TIDE_OK) {
		snprintf(err, sizeof err, "%s", e->log->err);
	} else {
		tidei_consumers_committed(e->cs);
		return;
	}
	elog(e, TIDE_LOG_WARN,
	     "the consumers' latest work was not written (%s): they handle "
	     "the events after their last write again",
	     err);
	tidei_consumers_reload(e->cs, e->log);
}

static void
turn(void *ud)
{
	tide_engine *e = ud;
	tidei_batch *b = &e->batch;
	char err[TIDEI_ERRLEN];
	int more = 0, growths = 0, rc;
	int with_consumers = tidei_now() >= e->consumers_resume;

	if (e->halted)
		return;
	if (e->ct != NULL && (e->njobs > 0 || tidei_cthread_over(e->ct, err)))
		tidei_engine_consumers_home(e); /* the consumers are wanted here */
	else if (with_consumers)
		tidei_engine_consumers_away(e, b->valid);
	if (e->cluster !=
	    NULL) /* producers' events go to the stream; the turn stores the partitions' */
		b = tidei_engine_cluster_turn(e);
	if (b->valid == 0 && !(e->lagging && with_consumers) && e->njobs == 0 && !retry_due(e) &&
	    !(e->ct != NULL && tidei_cthread_wants(e->ct))) {
		tidei_counters_add(&e->counters, b);
		if (tidei_batch_finish(b)) /* rejected events and empty requests */
			tidei_loop_schedule(&e->loop);
		if (e->in != NULL)
			tidei_ingest_drained(e->in);
		schedule_retry(e);
		return;
	}
	for (;;) {
		e->in_turn = 1;
		rc = commit_turn(e, b, with_consumers, &more, err);
		e->in_turn = 0;
		/* a full map grows; a full disk does not get better that way */
		if (rc == TIDE_EFULL && !e->log->disk_full && growths < MAX_GROWTHS) {
			growths++;
			if (tidei_log_grow(e->log) == TIDE_OK) {
				elog(e, TIDE_LOG_INFO, "log map grown to %llu MiB",
				     (unsigned long long)(e->log->map_size >> 20));
				continue;
			}
			snprintf(err, sizeof err, "%s", e->log->err);
		}
		if (rc != TIDE_OK && with_consumers && rc != TIDE_EFULL) {
			/* Keep ingesting; consumers try again later. */
			elog(e, TIDE_LOG_ERROR, "consumers paused for a second: %s", err);
			with_consumers = 0;
			e->consumers_resume = tidei_now() + CONSUMER_RETRY_NS;
			continue;
		}
		break;
	}
	if (rc != TIDE_OK) {
		char msg[TIDEI_ERRLEN + 32];
		snprintf(msg, sizeof msg, "not stored: %s", err);
		elog(e, TIDE_LOG_ERROR, "turn failed, %zu events not stored: %s", b->valid, err);
		tidei_batch_fail_all(b, rc, msg);
		if (e->log->disk_full) {
			/* Each turn tries again; until producers send more, the
			 * consumers' backlog waits a second rather than spinning. */
			more = 0;
			with_consumers = 0;
			e->consumers_resume = tidei_now() + CONSUMER_RETRY_NS;
		}
	}
	if (rc == TIDE_OK && e->ct == NULL && tidei_consumers_full(e->cs) != NULL) {
		/* a handler left the scripts' state full: load them afresh before
		 * any other handler runs in it, or every one would fail for it */
		elog(e, TIDE_LOG_WARN, "%s: the scripts are loaded into a fresh state",
		     tidei_consumers_full(e->cs));
		if (reload(e) != TIDE_OK) {
			elog(e, TIDE_LOG_ERROR,
			     "cannot load the scripts afresh (%s): handlers that "
			     "run out of memory fail as their own from now on",
			     e->err);
			tidei_consumers_blame_all(e->cs);
		}
		more = 1;
	}
	e->lagging = more || !with_consumers;
	tidei_counters_add(&e->counters, b);
	if (tidei_batch_finish(b))
		tidei_loop_schedule(&e->loop); /* published by a completion callback */
	if (e->in != NULL)
		tidei_ingest_drained(e->in);
	publish_new(e);
	tidei_http_committed(e->http, e->log->committed);
	if (more || (e->njobs > 0 && rc == TIDE_OK)) /* after the loop has polled the sockets */
		tidei_loop_schedule_in(&e->loop, 0);
	else
		schedule_retry(e);
}

/* Before the log's map grows: a projection build's threads read it, so
 * they wait (with no transaction open) until it has moved. */
static void
pause_builds(void *ud)
{
	tide_engine *e = ud;

	tidei_projections_pause(e->ps);
	if (e->ct != NULL)
		tidei_cthread_pause(e->ct);
}

static void
unpause_builds(void *ud)
{
	tide_engine *e = ud;

	if (e->ct != NULL)
		tidei_cthread_unpause(e->ct);
	tidei_projections_unpause(e->ps);
}

/* Periodic: flush in "relaxed" durability; resume paused consumers. */
static void
tick(void *ud)
{
	tide_engine *e = ud;

	if (e->halted)
		return;
	if (e->cfg->durability == TIDEI_DURABILITY_RELAXED && e->synced < e->log->committed) {
		if (tidei_log_sync(e->log) == TIDE_OK)
			e->synced = e->log->committed;
		else
			elog(e, TIDE_LOG_ERROR, "%s", e->log->err);
	}
	if (e->in != NULL)
		tidei_ingest_tick(e->in);
	if (e->lagging || e->cluster != NULL) /* a cluster's outbox sends again what waits */
		tidei_loop_schedule(&e->loop);
}

/* The embedder's stop notice, once.  The callback may destroy the
 * engine: nothing of it is touched afterwards. */
static void
notify_stopped(tide_engine *e)
{
	if (e->on_stop == NULL || e->notified || !e->stopping)
		return;
	e->notified = 1;
	e->on_stop(e->on_stop_ud, e);
}

static void
stopped_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	notify_stopped(arg);
}

static void take_queued(tide_engine *e, tidei_inbox_item *all);

/* Woken through the pipe: texts published from other threads, or a stop. */
static void
wake(void *ud)
{
	tide_engine *e = ud;

	if (!e->stop_requested || e->stopping) {
		take_queued(e, tidei_inbox_take(e->inbox));
		/* the consumers' thread wants a turn; or the cluster's
		 * acknowledgements, or events to store */
		if (e->ct != NULL || e->cluster != NULL)
			tidei_loop_schedule(&e->loop);
		return;
	}
	e->stopping = 1;
	if (e->in != NULL)
		tidei_ingest_pause(e->in, 1);
	tidei_http_pause(e->http, 1);
	/* Texts queued by other threads until now go into the last turn;
	 * closing the inbox refuses later ones, so none is left unanswered. */
	take_queued(e, tidei_inbox_close(e->inbox));
	/* Commit what has been received, answer everyone, then stop. */
	turn(e);
	tidei_engine_close_cluster(e); /* after the acknowledgements due */
	write_consumers(e);
	if (e->cfg->durability == TIDEI_DURABILITY_RELAXED && tidei_log_sync(e->log) == TIDE_OK)
		e->synced = e->log->committed;
	dlq_abandon(e);
	/* nothing more is written: a retry falling due, a turn the last one
	 * asked for and the periodic tick all find the engine halted */
	e->halted = 1;
	if (e->loop.own)
		tidei_loop_exit(&e->loop); /* tide_engine_run() gives the notice */
	elog(e, TIDE_LOG_INFO, "stopped at seq %llu", (unsigned long long)e->log->committed);
	/* from an event of its own, so that the callback may destroy us */
	if (!e->loop.own && e->stopped != NULL)
		event_active(e->stopped, 0, 1);
}

/* ------------------------------------------------------------------------
 * Requests on the REP endpoint: {"command": ...}
 * ------------------------------------------------------------------------ */

/* {"command":"dlq","op":"retry"|"drop","consumer":NAME,"seq":N}: kept and
 * answered once its last slice has committed (returns 1), or refused at
 * once (returns 0 with the reply written). */
static int
command_dlq(tide_engine *e, const tidei_request *r, tidei_buf *reply, void *ctl)
{
	dlq_req *q;
	char err[TIDEI_ERRLEN];

	if (e->stopping) {
		reply_error(reply, "the engine is stopping");
		return 0;
	}
	if (e->njobs == DLQ_QUEUE) {
		reply_error(reply, "too many dead-letter requests are waiting; try again shortly");
		return 0;
	}
	q = &e->jobs[e->njobs];
	if (tidei_dlq_job_init(&q->job, r->op, r->consumer[0] ? r->consumer : NULL, r->seq, err) !=
	    TIDE_OK) {
		reply_error(reply, err);
		return 0;
	}
	q->committed = q->job;
	q->ctl = ctl;
	e->njobs++;
	tidei_loop_schedule(&e->loop);
	return 1;
}

/* {"command":"projection","op":"rebuild","name":NAME} */
static void
command_projection(tide_engine *e, const tidei_request *r, tidei_buf *reply)
{
	int rc;

	if ((rc = tidei_log_begin(e->log)) == TIDE_OK) {
		rc = tidei_projections_rebuild(e->ps, e->log, r->name);
		if (rc == TIDE_OK)
			rc = tidei_log_commit(e->log);
		else
			tidei_log_abort(e->log);
	}
	if (rc == TIDE_ENOTFOUND) {
		char msg[320];
		snprintf(msg, sizeof msg, "no projection named '%s' is defined", r->name);
		reply_error(reply, msg);
		return;
	}
	if (rc != TIDE_OK) {
		tidei_projections_reload(e->ps, e->log);
		reply_error(reply, e->log->err);
		return;
	}
	e->lagging = 1;
	tidei_loop_schedule(&e->loop);
	tidei_buf_puts(reply, "{\"ok\":true}");
}

typedef struct query_reply {
	tidei_buf *out;
	int many;
	size_t n;
	size_t max;    /* the reply's bound: max_message_size */
	int truncated; /* a listing stopped at it */
} query_reply;

static int
add_state(void *ud, const char *key, size_t klen, const char *json, size_t jlen)
{
	query_reply *q = ud;

	/* A listing answers at most max_message_size bytes of states (a
	 * client can take no more); the first state is answered whatever
	 * its size, as a query for its key would. */
	if (q->many && q->n > 0 && q->out->len + klen * 6 + jlen + 64 > q->max) {
		q->truncated = 1;
		return 1;
	}
	if (q->many && q->n > 0)
		tidei_buf_putc(q->out, ',');
	tidei_buf_puts(q->out, q->many ? "{\"key\":" : "\"key\":");
	tidei_json_str(q->out, key, klen);
	tidei_buf_puts(q->out, ",\"state\":");
	tidei_buf_put(q->out, json, jlen);
	if (q->many)
		tidei_buf_putc(q->out, '}');
	q->n++;
	return 0;
}

/* The first bytes of @p s (at most @p max, whole UTF-8 characters): how
 * many.  Error messages quote keys, which may be of any length. */
static int
quote_len(const char *s, size_t n, size_t max)
{
	if (n > max)
		for (n = max; n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80; n--)
			;
	return (int)n;
}

/* {"query":NAME,"key":K} or {"query":NAME,"prefix":P,"limit":N}, answered
 * from a read snapshot: a query never waits for a turn. */
static int
query(tide_engine *e, const tidei_request *r, tidei_buf *reply)
{
	query_reply q = { reply, r->key == NULL, 0, (size_t)e->cfg->max_message_size, 0 };
	size_t before = reply->len;
	char msg[700];
	int rc;

	/* in a cluster, a key of a partition another node owns is its to answer */
	if (e->cluster != NULL && tidei_engine_cluster_query(e, r, reply, &rc))
		return rc;
	tidei_buf_puts(reply, q.many ? "{\"ok\":true,\"states\":[" : "{\"ok\":true,");
	rc = tidei_log_query(e->log, r->name, r->key, r->prefix, (size_t)r->limit, add_state, &q);
	if (rc == TIDE_OK) {
		tidei_buf_puts(reply, !q.many ? "}" : q.truncated ? "],\"truncated\":true}" : "]}");
		return rc;
	}
	reply->len = before;
	if (rc == TIDE_ENOTFOUND && r->key != NULL &&
	    tidei_log_query(e->log, r->name, NULL, NULL, 1, NULL, NULL) != TIDE_ENOTFOUND)
		snprintf(msg, sizeof msg, "no state for key '%.*s%s' in projection '%s'",
			 quote_len(r->key, r->klen, 300), r->key, r->klen > 300 ? "..." : "",
			 r->name);
	else if (rc == TIDE_ENOTFOUND)
		snprintf(msg, sizeof msg, "no projection named '%s'", r->name);
	else if (rc == TIDE_ESTATE)
		snprintf(msg, sizeof msg, "projection '%s' is being built; try again shortly",
			 r->name);
	else
		snprintf(msg, sizeof msg, "cannot query '%s': %s", r->name, tide_strerror(rc));
	reply_error(reply, msg);
	return rc;
}

static int
control(void *ud, const char *msg, size_t len, tidei_buf *reply, void *ctl)
{
	tide_engine *e = ud;
	tidei_request r;
	char err[TIDEI_ERRLEN];

	if (tidei_request_parse(&r, msg, len, &e->reqbuf, err) != TIDE_OK) {
		reply_error(reply, err);
		return 0;
	}
	switch (r.kind) {
	case TIDEI_REQ_QUERY: query(e, &r, reply); return 0;
	case TIDEI_REQ_DLQ: return command_dlq(e, &r, reply, ctl);
	case TIDEI_REQ_CLUSTER: tidei_engine_cluster_stat(e, reply); return 0;
	default: command_projection(e, &r, reply); return 0;
	}
}

static void
on_input(void *ud)
{
	tide_engine *e = ud;

	tidei_loop_schedule(&e->loop);
}

/* ------------------------------------------------------------------------
 * Lifecycle
 * ------------------------------------------------------------------------ */

static int
define_projection(void *ud, lua_State *L, const char *name, int spec, const char *script,
		  const char *where, char *err)
{
	tide_engine *e = ud;

	return tidei_projections_define(e->defining ? e->defining : e->ps, L, name, spec, script,
					where, err);
}

static int
query_projection(void *ud, lua_State *L, tidei_log *log, const char *name, const char *key,
		 size_t klen, char *err)
{
	tide_engine *e = ud;

	return tidei_projections_push_state(e->ps, L, log, name, key, klen, err);
}

/* A fresh Lua state with its consumers and projections (no scripts yet). */
static int
new_runtime(tide_engine *e, tidei_consumers **cs, tidei_projections **ps)
{
	tidei_consumers_opts co;
	tidei_projections_opts po;
	tidei_buf path = { 0 };
	int rc;

	*cs = NULL;
	*ps = NULL;
	tidei_lua_path(&path, e->cfg->lua_path, (const char *const *)e->cfg->scripts,
		       e->cfg->nscripts);
	memset(&co, 0, sizeof co);
	co.script.instruction_budget = e->cfg->instruction_budget;
	co.script.time_limit_ns = e->cfg->time_limit_ns;
	co.script.memory_limit = (size_t)e->cfg->memory_limit;
	co.script.lua_path = path.failed ? NULL : (const char *)path.p;
	co.script.allow = (const char *const *)e->cfg->allow;
	co.script.params = (const char *const *)e->cfg->params;
	co.turn_budget = (size_t)e->cfg->turn_events;
	co.max_emits = (size_t)e->cfg->max_emits;
	co.max_depth = (unsigned)e->cfg->max_emit_depth;
	co.max_event = (size_t)e->cfg->max_event_size;
	co.log = elog;
	co.log_ud = e;
	co.projection = define_projection;
	co.projection_ud = e;
	co.query = query_projection;
	rc = tidei_consumers_new(cs, &co, e->err);
	if (rc == TIDE_OK)
		tidei_engine_cluster_consumers(e, *cs);
	if (rc == TIDE_OK) {
		tidei_pbuild_env be;
		long cpus = sysconf(_SC_NPROCESSORS_ONLN);
		memset(&be, 0, sizeof be);
		be.ops = &tidei_pworker_ops;
		be.script = co.script;
		be.scripts = (const char *const *)e->cfg->scripts;
		be.nscripts = e->cfg->nscripts;
		/* a build's threads: one per CPU unless configured */
		be.threads = e->cfg->build_threads ? (unsigned)e->cfg->build_threads
			     : cpus > 8            ? 8
			     : cpus > 1            ? (unsigned)cpus
						   : 1;
		memset(&po, 0, sizeof po);
		po.script = tidei_consumers_script(*cs);
		po.build = &be;
		po.turn_budget = (size_t)e->cfg->turn_events;
		po.log = elog;
		po.log_ud = e;
		if ((rc = tidei_projections_new(ps, &po, e->err)) != TIDE_OK) {
			tidei_consumers_destroy(*cs);
			*cs = NULL;
		}
	}
	tidei_buf_free(&path);
	return rc;
}

/* Load the configured scripts into @p cs and @p ps. */
static int
load_scripts(tide_engine *e, tidei_consumers *cs, tidei_projections *ps)
{
	int rc = TIDE_OK;

	e->defining = ps;
	for (size_t k = 0; k < e->cfg->nscripts && rc == TIDE_OK; k++) {
		char msg[TIDEI_ERRLEN];
		if ((rc = tidei_consumers_load(cs, e->cfg->scripts[k], msg)) != TIDE_OK)
			tidei_err(e->err, rc, "%s", msg);
	}
	e->defining = NULL;
	if (rc == TIDE_OK)
		tidei_projections_pin_scripts(ps);
	return rc;
}

TIDE_API int
tide_engine_new(tide_engine **out, const tide_config *cfg)
{
	tide_engine *e;
	int rc;

	if (out == NULL || cfg == NULL)
		return tidei_fail(TIDE_EINVAL, "tide_engine_new: out and cfg must not be NULL");
	*out = NULL;
	if ((e = calloc(1, sizeof *e)) == NULL)
		return tidei_fail(TIDE_ENOMEM, NULL);
	/* a failed open closes the loop, which must not close descriptor 0 */
	e->loop.wake_fd[0] = e->loop.wake_fd[1] = -1;
	if ((rc = tidei_config_copy(&e->cfg, cfg)) != TIDE_OK) {
		free(e);
		return tidei_fail(rc, NULL);
	}
	if ((rc = new_runtime(e, &e->cs, &e->ps)) != TIDE_OK) {
		tidei_fail(rc, "%s", e->err);
		tide_config_destroy(e->cfg);
		free(e);
		return rc;
	}
	tidei_batch_init(&e->batch, (size_t)e->cfg->max_event_size);
	tidei_batch_init(&e->cbatch, (size_t)e->cfg->max_event_size);
	*out = e;
	return TIDE_OK;
}

/* Resolve the endpoints: configured, or ipc:// sockets in the data dir. */
static int
resolve_endpoints(tide_engine *e)
{
	static const char *const names[3] = { "pull", "rep", "pub" };
	const char *set[3] = { e->cfg->pull, e->cfg->rep, e->cfg->pub };

	for (int i = 0; i < 3; i++) {
		if (set[i] != NULL) {
			snprintf(e->urls[i], sizeof e->urls[i], "%s", set[i]);
			continue;
		}
		/* sun_path holds 108 bytes */
		if (strlen(e->dir) + strlen(names[i]) + 5 > 107)
			return tidei_err(
				e->err, TIDE_ECONFIG,
				"data directory %s is too long a path for an ipc:// endpoint; "
				"set the %s endpoint explicitly",
				e->dir, names[i]);
		snprintf(e->urls[i], sizeof e->urls[i], "ipc://%s/%s.ipc", e->dir, names[i]);
	}
	return TIDE_OK;
}

/* DIR/endpoints tells clients (tide publish --data DIR) where to connect. */
static int
write_endpoints(tide_engine *e)
{
	char tmp[PATH_MAX + 32];
	FILE *f = NULL;
	int fd;

	snprintf(e->endpoints_file, sizeof e->endpoints_file, "%s/endpoints", e->dir);
	snprintf(tmp, sizeof tmp, "%s.tmp", e->endpoints_file);
	/* 0600 like every file in the data directory */
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || (f = fdopen(fd, "w")) == NULL) {
		int saved = errno;
		if (fd >= 0)
			close(fd);
		return tidei_err(e->err, TIDE_EIO, "cannot write %s: %s", tmp, strerror(saved));
	}
	fprintf(f, "pull=%s\nrep=%s\npub=%s\npid=%ld\nmax_message=%llu\n", e->urls[0], e->urls[1],
		e->urls[2], (long)getpid(), (unsigned long long)e->cfg->max_message_size);
	if (e->http_addr[0] != '\0')
		fprintf(f, "http=%s\n", e->http_addr);
	if (e->cluster != NULL)
		fprintf(f, "cluster=%s\n", e->cfg->cluster);
	if (fclose(f) != 0 || rename(tmp, e->endpoints_file) != 0) {
		unlink(tmp);
		return tidei_err(e->err, TIDE_EIO, "cannot write %s: %s", e->endpoints_file,
				 strerror(errno));
	}
	return TIDE_OK;
}

static int
engine_open(tide_engine *e, struct event_base *base)
{
	tidei_log_opts lo = { 0 };
	tidei_ingest_opts io = { 0 };
	tidei_ingest_host ih = { 0 };
	uint64_t tick_ms;
	int rc;

	if (e->opened)
		return tidei_err(e->err, TIDE_ESTATE, "engine is already open");

	lo.nosync = e->cfg->durability == TIDEI_DURABILITY_RELAXED;
	lo.map_size = e->cfg->map_size;
	if ((rc = tidei_log_open(&e->log, e->cfg->data, &lo, e->err)) != TIDE_OK)
		goto fail;
	if (realpath(e->cfg->data, e->dir) == NULL) {
		rc = tidei_err(e->err, TIDE_EIO, "%s: %s", e->cfg->data, strerror(errno));
		goto fail;
	}
	e->published = e->synced = e->log->committed;
	e->log->before_remap = pause_builds;
	e->log->after_remap = unpause_builds;
	e->log->before_remap_ud = e;
	{
		char note[TIDEI_ERRLEN];
		if ((rc = tidei_flight_open(&e->flight, e->dir, note, e->err)) != TIDE_OK)
			goto fail;
		if (note[0] != '\0')
			elog(e, TIDE_LOG_WARN, "%s", note);
		tidei_consumers_set_flight(e->cs, e->flight);
		tidei_projections_set_flight(e->ps, e->flight);
	}

	if ((rc = load_scripts(e, e->cs, e->ps)) != TIDE_OK)
		goto fail;
	if ((rc = tidei_consumers_start(e->cs, e->log, e->log->committed, e->err)) != TIDE_OK ||
	    (rc = tidei_projections_start(e->ps, e->log, e->err)) != TIDE_OK)
		goto fail;

	tick_ms = e->cfg->durability == TIDEI_DURABILITY_RELAXED && e->cfg->sync_interval_ms
			  ? e->cfg->sync_interval_ms
			  : 1000;
	if ((rc = tidei_loop_open(&e->loop, base, turn, tick, tick_ms, wake, e, e->err)) != TIDE_OK)
		goto fail;
	if ((e->stopped = event_new(e->loop.base, -1, 0, stopped_cb, e)) == NULL) {
		rc = tidei_err(e->err, TIDE_ENOMEM, "cannot register an event with the loop");
		goto fail;
	}

	if (e->cfg->max_message_size < e->cfg->max_event_size ||
	    e->cfg->max_message_size > INT32_MAX / 2) {
		rc = tidei_err(
			e->err, TIDE_ECONFIG,
			"max_message_size (%llu bytes) must be at least max_event_size (%llu "
			"bytes) and below 1 GiB",
			(unsigned long long)e->cfg->max_message_size,
			(unsigned long long)e->cfg->max_event_size);
		goto fail;
	}
	if ((rc = tidei_inbox_new(&e->inbox, (size_t)e->cfg->max_message_size)) != TIDE_OK) {
		tidei_err(e->err, rc, "out of memory");
		goto fail;
	}
	if ((rc = resolve_endpoints(e)) != TIDE_OK)
		goto fail;
	io.pull = e->urls[0];
	io.rep = e->urls[1];
	io.pub = e->urls[2];
	io.turn_events = (size_t)e->cfg->turn_events;
	io.max_message = (size_t)e->cfg->max_message_size;
	ih.ud = e;
	ih.input = on_input;
	ih.control = control;
	ih.log = elog;
	if ((rc = tidei_ingest_open(&e->in, e->loop.base, &io, &e->batch, &ih, e->err)) != TIDE_OK)
		goto fail;
	if ((rc = tidei_engine_open_http(e, &(tidei_engine_fns){ elog, on_input, query })) !=
	    TIDE_OK)
		goto fail;
	if ((rc = tidei_engine_open_cluster(e)) != TIDE_OK)
		goto fail;
	if ((rc = write_endpoints(e)) != TIDE_OK)
		goto fail;
	for (int i = 0; i < 3; i++)
		if (e->urls[i][0] != '\0' && !tidei_ingest_local(e->urls[i]))
			elog(e, TIDE_LOG_WARN,
			     "the %s endpoint %s can be reached from other machines: whoever "
			     "reaches "
			     "it can %s (bind to 127.0.0.1 unless the network is trusted)",
			     i == 0   ? "pull"
			     : i == 1 ? "rep"
				      : "pub",
			     e->urls[i],
			     i == 0   ? "append events to the log"
			     : i == 1 ? "append events, query projections, retry or drop dead "
					"letters and rebuild projections"
				      : "read every event committed");

	e->opened = 1;
	e->lagging = tidei_consumers_count(e->cs) + tidei_projections_count(e->ps) > 0;
	tidei_loop_schedule(&e->loop);
	elog(e, TIDE_LOG_INFO,
	     "ready: %s, %zu consumers, %zu projections, log at seq %llu, durability %s%s%s",
	     e->dir, tidei_consumers_count(e->cs), tidei_projections_count(e->ps),
	     (unsigned long long)e->log->committed,
	     e->cfg->durability == TIDEI_DURABILITY_SYNC ? "sync" : "relaxed",
	     e->http ? ", http on " : "", e->http ? e->http_addr : "");
	return TIDE_OK;
fail:
	tidei_engine_close_cluster(e);
	tidei_http_close(e->http);
	e->http = NULL;
	tide_log_close(e->view);
	e->view = NULL;
	tidei_ingest_close(e->in);
	e->in = NULL;
	if (e->stopped != NULL)
		event_free(e->stopped);
	e->stopped = NULL;
	tidei_inbox_destroy(e->inbox); /* no thread may have pushed yet */
	e->inbox = NULL;
	tidei_loop_close(&e->loop);
	tidei_projections_stop(e->ps);
	tidei_consumers_set_flight(e->cs, NULL);
	tidei_projections_set_flight(e->ps, NULL);
	tidei_flight_close(e->flight);
	e->flight = NULL;
	tidei_log_close(e->log);
	e->log = NULL;
	return rc;
}

TIDE_API int
tide_engine_run(tide_engine *e)
{
	int rc;

	if (e == NULL)
		return tidei_fail(TIDE_EINVAL, "tide_engine_run: no engine");
	if (!e->opened || !e->loop.own)
		return tidei_fail(TIDE_ESTATE, "tide_engine_run is for an engine opened on a base "
					       "of its own (tide_engine_open with a NULL base)");
	if (!e->stopping && (rc = tidei_loop_run(&e->loop)) != TIDE_OK)
		return tidei_fail(rc, "the event loop failed");
	/* the loop may have left before the notice's event ran */
	notify_stopped(e);
	return TIDE_OK;
}

TIDE_API void
tide_engine_stop(tide_engine *e)
{
	if (e == NULL || !e->opened)
		return;
	e->stop_requested = 1;
	tidei_loop_wake(&e->loop);
}

TIDE_API void
tide_engine_destroy(tide_engine *e)
{
	if (e == NULL)
		return;
	if (e->opened) {
		if (!e->stopping) {
			e->stop_requested = 1;
			wake(e);
		}
		tidei_ingest_close(e->in);
		tidei_http_close(e->http); /* after the last turn answered its requests */
		tide_log_close(e->view);
		unlink(e->endpoints_file);
		event_free(e->stopped);
		tidei_loop_close(&e->loop);
		/* a build's threads read the log: they go first */
		tidei_projections_stop(e->ps);
		tidei_flight_close(e->flight); /* a clean stop */
		e->flight = NULL;
		tidei_log_close(e->log);
	}
	tidei_inbox_destroy(e->inbox); /* closed and emptied by the stop */
	tidei_projections_destroy(e->ps);
	tidei_consumers_destroy(e->cs);
	for (size_t k = 0; k < e->ncc; k++) {
		free(e->cc[k].name);
		free(e->cc[k].pattern);
	}
	free(e->cc);
	tidei_batch_free(&e->batch);
	tidei_batch_free(&e->cbatch);
	tidei_buf_free(&e->pubbuf);
	tidei_buf_free(&e->reqbuf);
	tide_config_destroy(e->cfg);
	free(e);
}

TIDE_API int
tide_engine_postmortem(tide_engine *e, int sig)
{
	if (e == NULL || e->flight == NULL)
		return 0;
	return tidei_flight_postmortem(e->flight, sig ? TIDEI_FLIGHT_CRASHED : TIDEI_FLIGHT_HUNG,
				       sig);
}

TIDE_API struct event_base *
tide_engine_base(tide_engine *e)
{
	return e ? e->loop.base : NULL;
}

/* ------------------------------------------------------------------------
 * Publishing and consuming from C
 * ------------------------------------------------------------------------ */

typedef struct pubwait {
	tide_publish_fn *fn;
	void *ud;
} pubwait;

static void
publish_done(void *ud, void *ctx, const tidei_batch *b, size_t first, size_t count)
{
	pubwait *w = ctx;

	(void)ud;
	for (size_t k = first; w->fn != NULL && k < first + count; k++) {
		const tidei_item *it = &b->items[k];
		tide_result r;
		r.code = it->code;
		r.duplicate = it->duplicate;
		r.seq = it->seq;
		r.version = it->version;
		r.error = tidei_batch_error(b, it);
		w->fn(w->ud, &r);
	}
	free(w);
}

/* The text joins the turn's batch, its results promised to @p fn: TIDE_OK,
 * TIDE_EEVENT (refused whole: too many invalid events) or TIDE_ENOMEM,
 * and then nothing of it is kept. */
static int
enqueue(tide_engine *e, const char *json, size_t len, tide_publish_fn *fn, void *ud)
{
	size_t first = e->batch.n;
	long got;
	pubwait *w;

	if ((w = malloc(sizeof *w)) == NULL)
		return TIDE_ENOMEM;
	w->fn = fn;
	w->ud = ud;
	got = tidei_batch_add(&e->batch, json, len);
	if (got == TIDEI_BATCH_REFUSED) {
		free(w);
		return TIDE_EEVENT;
	}
	if (got < 0 || tidei_batch_wait(&e->batch, first, (size_t)got, publish_done, e, w) != 0) {
		tidei_batch_truncate(&e->batch, first);
		free(w);
		return TIDE_ENOMEM;
	}
	tidei_loop_schedule(&e->loop);
	return TIDE_OK;
}

#define REFUSED_WHOLE "refused: more than %d of its events are invalid; nothing of it was stored"

static int
publish(tide_engine *e, const char *json, size_t len, tide_publish_fn *fn, void *ud)
{
	int rc;

	if (!e->opened || e->stopping)
		return tidei_err(e->err, TIDE_ESTATE, "the engine is not running");
	/* The turn has taken its events already: one published now (by a C
	 * consumer) would be answered as stored without being so. */
	if (e->in_turn)
		return tidei_err(e->err, TIDE_ESTATE,
				 "tide_publish cannot be called while a turn runs (from a C "
				 "consumer); publish from a completion callback or later");
	if ((rc = enqueue(e, json, len, fn, ud)) == TIDE_EEVENT)
		return tidei_err(e->err, rc, REFUSED_WHOLE, TIDEI_MAX_REFUSED);
	return rc;
}

/* Texts published from other threads (tide_publish_mt) wait in the inbox
 * until the loop thread takes them in wake(): each then joins the turn's
 * batch exactly as tide_publish() adds it, so validation, results and
 * callbacks are the same.  What tide_publish() would have refused at the
 * call reaches the callback instead, as a single result: the producer was
 * told TIDE_OK long ago. */
static void
take_one(tide_engine *e, tidei_inbox_item *it)
{
	tide_result r = { 0 };
	char msg[160];

	if ((r.code = enqueue(e, it->text, it->len, it->fn, it->ud)) == TIDE_OK)
		return;
	if (r.code == TIDE_EEVENT)
		snprintf(msg, sizeof msg, REFUSED_WHOLE, TIDEI_MAX_REFUSED);
	else
		snprintf(msg, sizeof msg, "out of memory: nothing of it was stored");
	r.error = msg;
	if (it->fn != NULL)
		it->fn(it->ud, &r);
}

/* Everything taken from the inbox, oldest first; the items are freed. */
static void
take_queued(tide_engine *e, tidei_inbox_item *all)
{
	while (all != NULL) {
		tidei_inbox_item *next = all->next;
		take_one(e, all);
		free(all);
		all = next;
	}
}

/* Any thread.  Only the inbox is shared with the loop thread, and its
 * lock orders everything: the loop closes it when the engine starts
 * stopping, so a closed inbox is how another thread learns of the stop
 * without reading the loop thread's flags.  The handle itself was set by
 * tide_engine_open(), which the caller let finish before this call. */
TIDE_API int
tide_publish_mt(tide_engine *e, const char *json, size_t len, tide_publish_fn *fn, void *ud)
{
	int rc, was_empty;

	if (e == NULL || json == NULL)
		return tidei_fail(TIDE_EINVAL, "tide_publish_mt: the engine and the text must "
					       "not be NULL");
	if (e->inbox == NULL)
		return tidei_fail(TIDE_ESTATE, "tide_publish_mt: the engine is not open");
	rc = tidei_inbox_push(e->inbox, json, len, fn, ud, &was_empty);
	switch (rc) {
	case TIDE_OK: break;
	case TIDE_ESTATE:
		return tidei_fail(rc, "tide_publish_mt: the engine is stopping or has stopped; "
				      "nothing was queued");
	case TIDE_EFULL:
		return tidei_fail(rc,
				  "tide_publish_mt: the queue holds what max_message_size (%llu "
				  "bytes) allows until the engine's loop takes it; try again later",
				  (unsigned long long)e->cfg->max_message_size);
	default: return tidei_fail(rc, "tide_publish_mt: out of memory copying %zu bytes", len);
	}
	/* the loop is woken once for everything queued until it takes it */
	if (was_empty)
		tidei_loop_wake(&e->loop);
	return TIDE_OK;
}

TIDE_API int
tide_engine_query(tide_engine *e, const char *name, const char *key, const char *prefix,
		  size_t limit, tide_state_fn *fn, void *ud)
{
	int rc;

	if (e == NULL || name == NULL)
		return tidei_fail(TIDE_EINVAL,
				  "tide_engine_query: no engine or no projection name");
	if (!e->opened)
		return tidei_fail(TIDE_ESTATE, "the engine is not open");
	/* a handler runs inside the turn's write transaction, and LMDB allows
	 * one transaction per thread */
	if (e->in_turn)
		return tidei_fail(TIDE_ESTATE, "tide_engine_query cannot be called while a turn "
					       "runs (from a C consumer)");
	e->log->err[0] = '\0';
	if ((rc = tidei_log_query(e->log, name, key, prefix, limit, fn, ud)) != TIDE_OK)
		return tidei_query_fail(e->log, rc, name, key);
	return TIDE_OK;
}

/* tide_consumer_opts in the terms of tide.on's options, checked. */
static int
consumer_opts(tide_engine *e, const tide_consumer_opts *o, tidei_on_opts *out)
{
	static const tide_consumer_opts defaults = TIDE_CONSUMER_OPTS_INIT;

	if (o == NULL)
		o = &defaults;
	memset(out, 0, sizeof *out);
	if (o->from != TIDE_FROM_END && o->from != TIDE_FROM_BEGINNING)
		return tidei_err(e->err, TIDE_EINVAL,
				 "from must be TIDE_FROM_END or TIDE_FROM_BEGINNING, not %d",
				 o->from);
	if (o->retries < -1 || o->retries > 1000)
		return tidei_err(e->err, TIDE_EINVAL, "retries must be 0 to 1000 (or -1), not %d",
				 o->retries);
	if (o->backoff_ms < -1 || o->backoff_max_ms < -1 || o->backoff_ms > INT64_MAX / 1000000 ||
	    o->backoff_max_ms > INT64_MAX / 1000000)
		return tidei_err(e->err, TIDE_EINVAL,
				 "backoff_ms and backoff_max_ms must be milliseconds >= 0 (or -1)");
	if (o->ordered < -1 || o->ordered > 1)
		return tidei_err(e->err, TIDE_EINVAL, "ordered must be 0, 1 or -1, not %d",
				 o->ordered);
	out->from = o->from;
	out->retries = o->retries;
	out->backoff = o->backoff_ms < 0 ? -1 : (double)o->backoff_ms / 1e3;
	out->backoff_max = o->backoff_max_ms < 0 ? -1 : (double)o->backoff_max_ms / 1e3;
	out->ordered = o->ordered;
	return TIDE_OK;
}

static int
consumer_add(tide_engine *e, const char *name, const char *pattern, const tide_consumer_opts *opts,
	     tide_consumer_fn *fn, void *ud)
{
	struct c_consumer *v;
	tidei_on_opts o;
	int rc;

	if (name == NULL || pattern == NULL || fn == NULL)
		return tidei_err(e->err, TIDE_EINVAL,
				 "tide_consumer_add: name, pattern and fn must not be NULL");
	if (e->opened)
		return tidei_err(e->err, TIDE_ESTATE,
				 "consumers are added before tide_engine_open()");
	if ((rc = consumer_opts(e, opts, &o)) != TIDE_OK)
		return rc;
	if ((v = realloc(e->cc, (e->ncc + 1) * sizeof *v)) == NULL)
		return tidei_err(e->err, TIDE_ENOMEM, "out of memory");
	e->cc = v;
	v += e->ncc;
	v->name = strdup(name);
	v->pattern = strdup(pattern);
	if (v->name == NULL || v->pattern == NULL) {
		free(v->name);
		free(v->pattern);
		return tidei_err(e->err, TIDE_ENOMEM, "out of memory");
	}
	o.name = v->name;
	o.pattern = v->pattern;
	if ((rc = tidei_consumers_add(e->cs, &o, fn, ud, e->err)) != TIDE_OK) {
		free(v->name);
		free(v->pattern);
		return rc;
	}
	v->opts = o;
	v->fn = fn;
	v->ud = ud;
	e->ncc++;
	return TIDE_OK;
}

/* The scripts into a fresh Lua state, which takes over between two turns
 * from the committed checkpoints; the running one stays if it fails. */
static int
reload(tide_engine *e)
{
	tidei_consumers *cs;
	tidei_projections *ps;
	int rc;

	if (e->opened)
		write_consumers(e); /* the new scripts go on from here */
	if ((rc = new_runtime(e, &cs, &ps)) != TIDE_OK)
		return rc;
	for (size_t k = 0; k < e->ncc && rc == TIDE_OK; k++)
		rc = tidei_consumers_add(cs, &e->cc[k].opts, e->cc[k].fn, e->cc[k].ud, e->err);
	tidei_consumers_set_flight(cs, e->flight);
	tidei_projections_set_flight(ps, e->flight);
	if (rc == TIDE_OK)
		rc = load_scripts(e, cs, ps);
	/* between two turns every checkpoint is committed with the effects
	 * it covers; states a projection holds in memory are not, and neither
	 * is their progress, so the new runtime applies those events again
	 * from the stored progress: nothing is lost or counted twice */
	if (rc == TIDE_OK &&
	    (rc = tidei_consumers_start(cs, e->log, e->log->committed, e->err)) == TIDE_OK)
		rc = tidei_projections_start(ps, e->log, e->err);
	if (rc != TIDE_OK) {
		tidei_projections_destroy(ps);
		tidei_consumers_destroy(cs);
		return rc;
	}
	tidei_projections_destroy(e->ps);
	tidei_consumers_destroy(e->cs);
	e->cs = cs;
	e->ps = ps;
	e->lagging = 1;
	e->counters.reloads++;
	tidei_loop_schedule(&e->loop);
	elog(e, TIDE_LOG_INFO, "scripts reloaded: %zu consumers, %zu projections",
	     tidei_consumers_count(cs), tidei_projections_count(ps));
	return TIDE_OK;
}

static int
engine_reload(tide_engine *e)
{
	int rc;

	if (!e->opened || e->stopping)
		return tidei_err(e->err, TIDE_ESTATE, "engine is not running");
	if (e->in_turn)
		return tidei_err(e->err, TIDE_ESTATE,
				 "scripts cannot be reloaded from inside a turn (a handler or "
				 "the log callback); reload from the event loop");
	if ((rc = reload(e)) != TIDE_OK)
		elog(e, TIDE_LOG_ERROR, "reload failed, the running scripts stay: %s", e->err);
	return rc;
}

/* ------------------------------------------------------------------------
 * The public calls that work through e->err: a failure's detail goes
 * where tide_errmsg() reads it
 * ------------------------------------------------------------------------ */

static int
done(tide_engine *e, int rc)
{
	return tidei_done(rc, e->err);
}

TIDE_API int
tide_engine_open(tide_engine *e, struct event_base *base)
{
	if (e == NULL)
		return tidei_fail(TIDE_EINVAL, "tide_engine_open: no engine");
	e->err[0] = '\0';
	return done(e, engine_open(e, base));
}

TIDE_API int
tide_engine_reload(tide_engine *e)
{
	if (e == NULL)
		return tidei_fail(TIDE_EINVAL, "tide_engine_reload: no engine");
	e->err[0] = '\0';
	return done(e, engine_reload(e));
}

TIDE_API int
tide_publish(tide_engine *e, const char *json, size_t len, tide_publish_fn *fn, void *ud)
{
	if (e == NULL || json == NULL)
		return tidei_fail(TIDE_EINVAL, "tide_publish: no engine or no text");
	e->err[0] = '\0';
	return done(e, publish(e, json, len, fn, ud));
}

TIDE_API int
tide_consumer_add(tide_engine *e, const char *name, const char *pattern,
		  const tide_consumer_opts *opts, tide_consumer_fn *fn, void *ud)
{
	if (e == NULL)
		return tidei_fail(TIDE_EINVAL, "tide_consumer_add: no engine");
	e->err[0] = '\0';
	return done(e, consumer_add(e, name, pattern, opts, fn, ud));
}

TIDE_API int
tide_engine_on_stop(tide_engine *e, tide_stop_fn *fn, void *ud)
{
	if (e == NULL)
		return tidei_fail(TIDE_EINVAL, "tide_engine_on_stop: no engine");
	e->on_stop = fn;
	e->on_stop_ud = ud;
	return TIDE_OK;
}
