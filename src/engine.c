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
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "batch.h"
#include "conf.h"
#include "consumer.h"
#include "dlq.h"
#include "ingest.h"
#include "json.h"
#include "log.h"
#include "loop.h"
#include "projection.h"

/* Growing the map this many times in one turn means something is wrong. */
#define MAX_GROWTHS 8
/* Pause after a consumer failed for a reason other than a full map. */
#define CONSUMER_RETRY_NS 1000000000ll

/* A consumer added with tide_consumer_add(). */
struct c_consumer {
	char *name, *pattern;
	int from;
	tide_consumer_fn *fn;
	void *ud;
};

struct tide_engine {
	tide_config *cfg;
	tidei_loop loop;
	tidei_log *log;
	tidei_ingest *in;
	tidei_consumers *cs;
	tidei_projections *ps;
	tidei_projections *defining; /* where tide.projection() goes while scripts load */
	struct c_consumer *cc;       /* consumers added in C, again on a reload */
	size_t ncc;
	tidei_batch batch;
	tidei_buf pubbuf;
	uint64_t published; /* last seq sent on PUB */
	uint64_t synced;    /* last seq flushed to disk */
	int opened;
	int stopping;
	int in_turn; /* commit_turn() is running: handlers may call back into us */
	volatile sig_atomic_t stop_requested;
	int lagging;              /* a consumer is behind the end of the log */
	int64_t consumers_resume; /* consumers paused until this time (ns) */
	char dir[PATH_MAX];
	char urls[3][PATH_MAX + 16];
	char endpoints_file[PATH_MAX + 16];
	char err[TIDEI_ERRLEN];
};

static void
elog(void *ud, int level, const char *fmt, ...)
{
	tide_engine *e = ud;
	char msg[2048];
	va_list ap;

	if (e->cfg->log == NULL || level > e->cfg->log_level)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	e->cfg->log(e->cfg->log_ud, level, msg);
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

/* Append the batch and run the consumers in one transaction. */
static int
commit_turn(tide_engine *e, int with_consumers, int *more, char *err)
{
	tidei_batch *b = &e->batch;
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
	if (with_consumers) {
		int pmore = 0;
		if ((rc = tidei_consumers_run(e->cs, e->log, more, err)) != TIDE_OK)
			goto abort;
		/* after the consumers: projections see what they emitted */
		if ((rc = tidei_projections_run(e->ps, e->log, &pmore, err)) != TIDE_OK)
			goto abort;
		*more |= pmore;
	}
	if ((rc = tidei_log_commit(e->log)) != TIDE_OK) {
		tidei_consumers_reload(e->cs, e->log);
		tidei_projections_reload(e->ps, e->log);
		return tidei_err(err, rc, "%s", e->log->err);
	}
	tidei_consumers_committed(e->cs);
	return TIDE_OK;
abort:
	tidei_log_abort(e->log);
	tidei_consumers_reload(e->cs, e->log);
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
	int64_t a = tidei_consumers_next_retry(e->cs), b = -1;

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

static void
turn(void *ud)
{
	tide_engine *e = ud;
	tidei_batch *b = &e->batch;
	char err[TIDEI_ERRLEN];
	int more = 0, growths = 0, rc;
	int with_consumers = tidei_now() >= e->consumers_resume;

	if (b->valid == 0 && !(e->lagging && with_consumers) && !retry_due(e)) {
		tidei_batch_finish(b); /* rejected events and empty requests */
		if (e->in != NULL)
			tidei_ingest_drained(e->in);
		schedule_retry(e);
		return;
	}
	for (;;) {
		e->in_turn = 1;
		rc = commit_turn(e, with_consumers, &more, err);
		e->in_turn = 0;
		if (rc == TIDE_EFULL && growths < MAX_GROWTHS) {
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
	}
	e->lagging = more || !with_consumers;
	tidei_batch_finish(b);
	if (e->in != NULL)
		tidei_ingest_drained(e->in);
	publish_new(e);
	if (more) /* after the loop has polled the sockets: requests go first */
		tidei_loop_schedule_in(&e->loop, 0);
	else
		schedule_retry(e);
}

/* Before the log's map grows: a projection build's threads read it, so
 * they stop (the next turn starts them again from their last checkpoint). */
static void
stop_builds(void *ud)
{
	tide_engine *e = ud;

	tidei_projections_stop(e->ps);
}

/* Periodic: flush in "relaxed" durability; resume paused consumers. */
static void
tick(void *ud)
{
	tide_engine *e = ud;

	if (e->cfg->durability == TIDEI_DURABILITY_RELAXED && e->synced < e->log->committed) {
		if (tidei_log_sync(e->log) == TIDE_OK)
			e->synced = e->log->committed;
		else
			elog(e, TIDE_LOG_ERROR, "%s", e->log->err);
	}
	if (e->in != NULL)
		tidei_ingest_tick(e->in);
	if (e->lagging)
		tidei_loop_schedule(&e->loop);
}

static void
wake(void *ud)
{
	tide_engine *e = ud;

	if (!e->stop_requested || e->stopping)
		return;
	e->stopping = 1;
	if (e->in != NULL)
		tidei_ingest_pause(e->in, 1);
	/* Commit what has been received, answer everyone, then stop. */
	turn(e);
	if (e->cfg->durability == TIDEI_DURABILITY_RELAXED && tidei_log_sync(e->log) == TIDE_OK)
		e->synced = e->log->committed;
	if (e->loop.own)
		tidei_loop_exit(&e->loop);
	elog(e, TIDE_LOG_INFO, "stopped at seq %llu", (unsigned long long)e->log->committed);
}

/* ------------------------------------------------------------------------
 * Requests on the REP endpoint: {"command": ...}
 * ------------------------------------------------------------------------ */

/* Member @p name of the top-level object in @p val. */
static int
member(const tidei_buf *val, const char *name, tidei_vitem *out)
{
	tidei_vreader r = { val->p, val->p + val->len };

	return tidei_val_find(&r, name, strlen(name)) && tidei_val_next(&r, out) == 0;
}

static void
reply_error(tidei_buf *reply, const char *msg)
{
	tidei_buf_puts(reply, "{\"ok\":false,\"error\":");
	tidei_json_str(reply, msg, strlen(msg));
	tidei_buf_putc(reply, '}');
}

/* {"command":"dlq","op":"retry"|"drop","consumer":NAME,"seq":N} */
static void
command_dlq(tide_engine *e, const tidei_buf *val, tidei_buf *reply)
{
	tidei_vitem op, consumer, seq;
	char name[256] = "";
	uint64_t at = 0, count = 0;
	int kind, rc;

	if (!member(val, "op", &op) || op.type != TIDEI_V_STR) {
		reply_error(reply, "dlq: \"op\" must be \"retry\" or \"drop\"");
		return;
	}
	if (op.u.s.n == 5 && memcmp(op.u.s.p, "retry", 5) == 0) {
		kind = TIDE_DLQ_RETRY;
	} else if (op.u.s.n == 4 && memcmp(op.u.s.p, "drop", 4) == 0) {
		kind = TIDE_DLQ_DROP;
	} else {
		reply_error(reply, "dlq: \"op\" must be \"retry\" or \"drop\"");
		return;
	}
	if (member(val, "consumer", &consumer) && consumer.type == TIDEI_V_STR)
		snprintf(name, sizeof name, "%.*s", (int)consumer.u.s.n, consumer.u.s.p);
	if (member(val, "seq", &seq) && seq.type == TIDEI_V_INT && seq.u.i > 0)
		at = (uint64_t)seq.u.i;
	if ((rc = tidei_log_begin(e->log)) == TIDE_OK) {
		rc = tidei_dlq_apply(e->log, kind, name[0] ? name : NULL, at, &count);
		if (rc == TIDE_OK)
			rc = tidei_log_commit(e->log);
		else
			tidei_log_abort(e->log);
	}
	if (rc != TIDE_OK) {
		reply_error(reply, e->log->err);
		return;
	}
	/* the consumers pick up what changed in their pending sets */
	tidei_consumers_reload(e->cs, e->log);
	tidei_loop_schedule(&e->loop);
	elog(e, TIDE_LOG_INFO, "dead letters: %s %llu",
	     kind == TIDE_DLQ_RETRY ? "retrying" : "dropped", (unsigned long long)count);
	tidei_buf_printf(reply, "{\"ok\":true,\"count\":%llu}", (unsigned long long)count);
}

/* {"command":"projection","op":"rebuild","name":NAME} */
static void
command_projection(tide_engine *e, const tidei_buf *val, tidei_buf *reply)
{
	tidei_vitem op, name;
	char n[256];
	int rc;

	if (!member(val, "op", &op) || op.type != TIDEI_V_STR || op.u.s.n != 7 ||
	    memcmp(op.u.s.p, "rebuild", 7) != 0) {
		reply_error(reply, "projection: \"op\" must be \"rebuild\"");
		return;
	}
	if (!member(val, "name", &name) || name.type != TIDEI_V_STR || name.u.s.n >= sizeof n) {
		reply_error(reply, "projection: give its \"name\"");
		return;
	}
	snprintf(n, sizeof n, "%.*s", (int)name.u.s.n, name.u.s.p);
	if ((rc = tidei_log_begin(e->log)) == TIDE_OK) {
		rc = tidei_projections_rebuild(e->ps, e->log, n);
		if (rc == TIDE_OK)
			rc = tidei_log_commit(e->log);
		else
			tidei_log_abort(e->log);
	}
	if (rc == TIDE_ENOTFOUND) {
		char msg[320];
		snprintf(msg, sizeof msg, "no projection named '%s' is defined", n);
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
} query_reply;

static int
add_state(void *ud, const char *key, size_t klen, const char *json, size_t jlen)
{
	query_reply *q = ud;

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

/* {"query":NAME,"key":K} or {"query":NAME,"prefix":P,"limit":N}, answered
 * from a read snapshot: a query never waits for a turn. */
static void
query(tide_engine *e, const tidei_buf *val, tidei_buf *reply)
{
	tidei_vitem name, key, prefix, limit;
	char n[256], k[512], p[512], msg[900];
	query_reply q = { reply, 0, 0 };
	size_t before = reply->len;
	int has_key, rc;

	if (!member(val, "query", &name) || name.type != TIDEI_V_STR || name.u.s.n >= sizeof n) {
		reply_error(reply, "\"query\" names a projection");
		return;
	}
	snprintf(n, sizeof n, "%.*s", (int)name.u.s.n, name.u.s.p);
	has_key = member(val, "key", &key) && key.type == TIDEI_V_STR && key.u.s.n < sizeof k;
	if (has_key)
		snprintf(k, sizeof k, "%.*s", (int)key.u.s.n, key.u.s.p);
	p[0] = '\0';
	if (member(val, "prefix", &prefix) && prefix.type == TIDEI_V_STR && prefix.u.s.n < sizeof p)
		snprintf(p, sizeof p, "%.*s", (int)prefix.u.s.n, prefix.u.s.p);
	if (!member(val, "limit", &limit) || limit.type != TIDEI_V_INT || limit.u.i < 0)
		limit.u.i = 0;
	q.many = !has_key;
	tidei_buf_puts(reply, q.many ? "{\"ok\":true,\"states\":[" : "{\"ok\":true,");
	rc = tidei_log_query(e->log, n, has_key ? k : NULL, p[0] ? p : NULL, (size_t)limit.u.i,
			     add_state, &q);
	if (rc == TIDE_OK) {
		tidei_buf_puts(reply, q.many ? "]}" : "}");
		return;
	}
	reply->len = before;
	if (rc == TIDE_ENOTFOUND && has_key &&
	    tidei_log_query(e->log, n, NULL, NULL, 1, NULL, NULL) == TIDE_ENOTFOUND)
		has_key = 0; /* the projection itself is unknown */
	if (rc == TIDE_ENOTFOUND && has_key)
		snprintf(msg, sizeof msg, "no state for key '%s' in projection '%s'", k, n);
	else if (rc == TIDE_ENOTFOUND)
		snprintf(msg, sizeof msg, "no projection named '%s'", n);
	else if (rc == TIDE_ESTATE)
		snprintf(msg, sizeof msg, "projection '%s' is being built; try again shortly", n);
	else
		snprintf(msg, sizeof msg, "cannot query '%s': %s", n, tide_strerror(rc));
	reply_error(reply, msg);
}

static void
control(void *ud, const char *msg, size_t len, tidei_buf *reply)
{
	tide_engine *e = ud;
	tidei_buf val = { 0 };
	tidei_vitem cmd;
	char err[TIDEI_ERRLEN];

	if (tidei_json_decode(msg, len, &val, err) != 0) {
		reply_error(reply, err);
	} else if (member(&val, "query", &cmd)) {
		query(e, &val, reply);
	} else if (!member(&val, "command", &cmd) || cmd.type != TIDEI_V_STR) {
		reply_error(reply, "requests name a \"command\"");
	} else if (cmd.u.s.n == 3 && memcmp(cmd.u.s.p, "dlq", 3) == 0) {
		command_dlq(e, &val, reply);
	} else if (cmd.u.s.n == 10 && memcmp(cmd.u.s.p, "projection", 10) == 0) {
		command_projection(e, &val, reply);
	} else {
		snprintf(err, sizeof err, "unknown command '%.*s'", (int)cmd.u.s.n, cmd.u.s.p);
		reply_error(reply, err);
	}
	tidei_buf_free(&val);
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
	co.turn_budget = (size_t)e->cfg->turn_events;
	co.max_emits = (size_t)e->cfg->max_emits;
	co.log = elog;
	co.log_ud = e;
	co.projection = define_projection;
	co.projection_ud = e;
	rc = tidei_consumers_new(cs, &co, e->err);
	if (rc == TIDE_OK) {
		tidei_pbuild_env be;
		long cpus = sysconf(_SC_NPROCESSORS_ONLN);
		memset(&be, 0, sizeof be);
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
		return TIDE_EINVAL;
	*out = NULL;
	if ((e = calloc(1, sizeof *e)) == NULL)
		return TIDE_ENOMEM;
	if ((rc = tidei_config_copy(&e->cfg, cfg)) != TIDE_OK) {
		free(e);
		return rc;
	}
	if ((rc = new_runtime(e, &e->cs, &e->ps)) != TIDE_OK) {
		tide_config_destroy(e->cfg);
		free(e);
		return rc;
	}
	tidei_batch_init(&e->batch, (size_t)e->cfg->max_event_size);
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
	FILE *f;

	snprintf(e->endpoints_file, sizeof e->endpoints_file, "%s/endpoints", e->dir);
	snprintf(tmp, sizeof tmp, "%s.tmp", e->endpoints_file);
	if ((f = fopen(tmp, "w")) == NULL)
		return tidei_err(e->err, TIDE_EIO, "cannot write %s: %s", tmp, strerror(errno));
	fprintf(f, "pull=%s\nrep=%s\npub=%s\npid=%ld\n", e->urls[0], e->urls[1], e->urls[2],
		(long)getpid());
	if (fclose(f) != 0 || rename(tmp, e->endpoints_file) != 0) {
		unlink(tmp);
		return tidei_err(e->err, TIDE_EIO, "cannot write %s: %s", e->endpoints_file,
				 strerror(errno));
	}
	return TIDE_OK;
}

TIDE_API int
tide_engine_open(tide_engine *e, struct event_base *base)
{
	tidei_log_opts lo = { 0 };
	tidei_ingest_opts io = { 0 };
	tidei_ingest_host ih = { 0 };
	uint64_t tick_ms;
	int rc;

	if (e == NULL)
		return TIDE_EINVAL;
	if (e->opened)
		return tidei_err(e->err, TIDE_ESTATE, "engine is already open");
	e->err[0] = '\0';

	lo.nosync = e->cfg->durability == TIDEI_DURABILITY_RELAXED;
	lo.map_size = e->cfg->map_size;
	if ((rc = tidei_log_open(&e->log, e->cfg->data, &lo, e->err)) != TIDE_OK)
		goto fail;
	if (realpath(e->cfg->data, e->dir) == NULL) {
		rc = tidei_err(e->err, TIDE_EIO, "%s: %s", e->cfg->data, strerror(errno));
		goto fail;
	}
	e->published = e->synced = e->log->committed;
	e->log->before_remap = stop_builds;
	e->log->before_remap_ud = e;

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

	if ((rc = resolve_endpoints(e)) != TIDE_OK)
		goto fail;
	io.pull = e->urls[0];
	io.rep = e->urls[1];
	io.pub = e->urls[2];
	io.turn_events = (size_t)e->cfg->turn_events;
	io.max_message = 64u << 20;
	if (io.max_message < e->cfg->max_event_size * 2)
		io.max_message = (size_t)e->cfg->max_event_size * 2;
	ih.ud = e;
	ih.input = on_input;
	ih.control = control;
	ih.log = elog;
	if ((rc = tidei_ingest_open(&e->in, e->loop.base, &io, &e->batch, &ih, e->err)) != TIDE_OK)
		goto fail;
	if ((rc = write_endpoints(e)) != TIDE_OK)
		goto fail;

	e->opened = 1;
	e->lagging = tidei_consumers_count(e->cs) + tidei_projections_count(e->ps) > 0;
	tidei_loop_schedule(&e->loop);
	elog(e, TIDE_LOG_INFO,
	     "ready: %s, %zu consumers, %zu projections, log at seq %llu, durability %s", e->dir,
	     tidei_consumers_count(e->cs), tidei_projections_count(e->ps),
	     (unsigned long long)e->log->committed,
	     e->cfg->durability == TIDEI_DURABILITY_SYNC ? "sync" : "relaxed");
	return TIDE_OK;
fail:
	tidei_ingest_close(e->in);
	e->in = NULL;
	tidei_loop_close(&e->loop);
	tidei_log_close(e->log);
	e->log = NULL;
	return rc;
}

TIDE_API int
tide_engine_run(tide_engine *e)
{
	if (e == NULL || !e->opened || !e->loop.own)
		return TIDE_ESTATE;
	if (e->stopping)
		return TIDE_OK;
	return tidei_loop_run(&e->loop);
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
		unlink(e->endpoints_file);
		tidei_loop_close(&e->loop);
		/* a build's threads read the log: they go first */
		tidei_projections_stop(e->ps);
		tidei_log_close(e->log);
	}
	tidei_projections_destroy(e->ps);
	tidei_consumers_destroy(e->cs);
	for (size_t k = 0; k < e->ncc; k++) {
		free(e->cc[k].name);
		free(e->cc[k].pattern);
	}
	free(e->cc);
	tidei_batch_free(&e->batch);
	tidei_buf_free(&e->pubbuf);
	tide_config_destroy(e->cfg);
	free(e);
}

TIDE_API const char *
tide_errmsg(const tide_engine *e)
{
	return e ? e->err : "";
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

TIDE_API int
tide_publish(tide_engine *e, const char *json, size_t len, tide_publish_fn *fn, void *ud)
{
	size_t first;
	long got;
	pubwait *w;

	if (e == NULL || json == NULL)
		return TIDE_EINVAL;
	if (!e->opened || e->stopping)
		return tidei_err(e->err, TIDE_ESTATE, "engine is not running");
	if ((w = malloc(sizeof *w)) == NULL)
		return TIDE_ENOMEM;
	w->fn = fn;
	w->ud = ud;
	first = e->batch.n;
	got = tidei_batch_add(&e->batch, json, len);
	if (got < 0 || tidei_batch_wait(&e->batch, first, (size_t)got, publish_done, e, w) != 0) {
		if (got > 0)
			e->batch.n = first;
		free(w);
		return TIDE_ENOMEM;
	}
	tidei_loop_schedule(&e->loop);
	return TIDE_OK;
}

TIDE_API int
tide_engine_query(tide_engine *e, const char *name, const char *key, const char *prefix,
		  size_t limit, tide_state_fn *fn, void *ud)
{
	if (e == NULL || !e->opened)
		return TIDE_ESTATE;
	return tidei_log_query(e->log, name, key, prefix, limit, fn, ud);
}

TIDE_API int
tide_consumer_add(tide_engine *e, const char *name, const char *pattern, int from,
		  tide_consumer_fn *fn, void *ud)
{
	if (e == NULL || name == NULL || pattern == NULL || fn == NULL)
		return TIDE_EINVAL;
	if (e->opened)
		return tidei_err(e->err, TIDE_ESTATE,
				 "consumers are added before tide_engine_open()");
	{
		struct c_consumer *v = realloc(e->cc, (e->ncc + 1) * sizeof *v);
		int rc;
		if (v == NULL)
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
		if ((rc = tidei_consumers_add(e->cs, name, pattern, from, fn, ud, e->err)) !=
		    TIDE_OK) {
			free(v->name);
			free(v->pattern);
			return rc;
		}
		v->from = from;
		v->fn = fn;
		v->ud = ud;
		e->ncc++;
		return TIDE_OK;
	}
}

TIDE_API int
tide_engine_reload(tide_engine *e)
{
	tidei_consumers *cs;
	tidei_projections *ps;
	int rc;

	if (e == NULL)
		return TIDE_EINVAL;
	if (!e->opened || e->stopping)
		return tidei_err(e->err, TIDE_ESTATE, "engine is not running");
	if (e->in_turn)
		return tidei_err(e->err, TIDE_ESTATE,
				 "scripts cannot be reloaded from inside a turn (a handler or "
				 "the log callback); reload from the event loop");
	if ((rc = new_runtime(e, &cs, &ps)) != TIDE_OK)
		goto fail;
	for (size_t k = 0; k < e->ncc && rc == TIDE_OK; k++)
		rc = tidei_consumers_add(cs, e->cc[k].name, e->cc[k].pattern, e->cc[k].from,
					 e->cc[k].fn, e->cc[k].ud, e->err);
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
		goto fail;
	}
	tidei_projections_destroy(e->ps);
	tidei_consumers_destroy(e->cs);
	e->cs = cs;
	e->ps = ps;
	e->lagging = 1;
	tidei_loop_schedule(&e->loop);
	elog(e, TIDE_LOG_INFO, "scripts reloaded: %zu consumers, %zu projections",
	     tidei_consumers_count(cs), tidei_projections_count(ps));
	return TIDE_OK;
fail:
	elog(e, TIDE_LOG_ERROR, "reload failed, the running scripts stay: %s", e->err);
	return rc;
}
