/*
 * replay.c - time travel: run scripts over stored history without side
 * effects (tide replay / backtest).
 *
 * The log is opened read-only and walked from seq 1 to the chosen point
 * (a seq, or the last event recorded at or before a time, found by
 * bisection since `recorded` never goes backwards).  Scripts load into a
 * Lua state of their own, through the consumer layer the engine uses
 * (consumer.c), and each event goes through every consumer in order and
 * then the projections, as live: so rules' clocks, timers, windows and
 * states move exactly as they did live, and what handlers emit is what
 * they emitted live.  Emits are reported, not appended: the log already
 * holds what was emitted live, and it is replayed in its place.  What
 * rules keep and tide.once's claims go to a scratch log in a temporary
 * directory, removed at the end; projections keep their state in Lua
 * only (projection.c's memory mode) and report it at the end.  The log
 * replayed is only read.
 */
#include "config.h"

#include <errno.h>
#include <lauxlib.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "consumer.h"
#include "scratch.h"
#include "projection.h"

typedef struct replay {
	const tide_replay_opts *o;
	tide_replay_fn *fn;
	void *ud;
	tidei_consumers *cs;
	tidei_projections *ps;
	tidei_log *scratch; /* what rules keep, and once claims */
	char scratch_dir[4096];
	tidei_buf json;
	int stop;
	char err[TIDEI_ERRLEN];
} replay;

static void
sink_emit(void *ud, const char *consumer, const uint8_t *rec, size_t len,
	  const struct tide_event *cause)
{
	replay *r = ud;
	struct tide_event ev;
	tide_replay_item it;

	if (r->stop || tidei_event_decode(&ev, rec, len) != 0)
		return;
	ev.seq = 0;
	tidei_buf_reset(&r->json);
	if (tidei_event_json(&r->json, &ev) != 0)
		return;
	memset(&it, 0, sizeof it);
	it.kind = TIDE_REPLAY_EMIT;
	it.name = consumer;
	it.json = (const char *)r->json.p;
	it.len = r->json.len;
	it.seq = cause->seq;
	if (r->fn(r->ud, &it))
		r->stop = 1;
}

static void report_error(replay *r, const char *who, uint64_t seq, const char *why);

static void
sink_fail(void *ud, const char *consumer, uint64_t seq, const char *why)
{
	report_error(ud, consumer, seq, why);
}

static int
host_projection(void *ud, lua_State *L, const char *name, int spec, const char *script,
		const char *where, char *err)
{
	replay *r = ud;

	/* with --projection, the others are not computed at all */
	if (r->o->projection != NULL && strcmp(r->o->projection, name) != 0)
		return TIDE_OK;
	return tidei_projections_define(r->ps, L, name, spec, script, where, err);
}

static int
host_query(void *ud, lua_State *L, tidei_log *log, const char *name, const char *key, size_t klen,
	   char *err)
{
	replay *r = ud;

	(void)log; /* the replay's projections are in memory */
	return tidei_projections_push_state(r->ps, L, NULL, name, key, klen, err);
}

static void
report_error(replay *r, const char *who, uint64_t seq, const char *why)
{
	tide_replay_item it;

	memset(&it, 0, sizeof it);
	it.kind = TIDE_REPLAY_ERROR;
	it.name = who;
	it.json = why;
	it.len = strlen(why);
	it.seq = seq;
	if (r->fn(r->ud, &it))
		r->stop = 1;
}

/* The last seq recorded at or before @p t: recorded times only grow. */
static uint64_t
seq_at_time(tidei_log *log, MDB_txn *txn, uint64_t last, int64_t t)
{
	uint64_t lo = 0, hi = last; /* invariant: lo is at or before t, hi+1 after */

	while (lo < hi) {
		uint64_t mid = lo + (hi - lo + 1) / 2;
		struct tide_event ev;
		if (tidei_log_get(log, txn, mid, &ev) != TIDE_OK || ev.recorded > t)
			hi = mid - 1;
		else
			lo = mid;
	}
	return lo;
}

typedef struct sorted_state {
	char *name;
	char *key;
	size_t klen;
	char *json;
	size_t len;
} sorted_state;

typedef struct collect {
	sorted_state *v;
	size_t n, cap;
	int oom;
} collect;

static int
collect_state(void *ud, const char *proj, const char *key, size_t klen, const char *json,
	      size_t jlen)
{
	collect *c = ud;
	sorted_state *s;

	if (tidei_array_grow(&c->v, &c->cap, c->n, sizeof *c->v, 256) != 0) {
		c->oom = 1;
		return 1;
	}
	s = &c->v[c->n];
	s->name = strdup(proj);
	s->key = strndup(key, klen);
	s->klen = klen;
	s->json = strndup(json, jlen);
	s->len = jlen;
	if (s->name == NULL || s->key == NULL || s->json == NULL) {
		free(s->name);
		free(s->key);
		free(s->json);
		c->oom = 1;
		return 1;
	}
	c->n++;
	return 0;
}

static int
by_name_and_key(const void *a, const void *b)
{
	const sorted_state *x = a, *y = b;
	int c = strcmp(x->name, y->name);
	size_t n = x->klen < y->klen ? x->klen : y->klen;

	if (c != 0)
		return c;
	if ((c = memcmp(x->key, y->key, n)) != 0)
		return c;
	return x->klen < y->klen ? -1 : x->klen > y->klen;
}

/* Report the projections' states in name and key order. */
static int
report_states(replay *r)
{
	collect c = { NULL, 0, 0, 0 };
	int rc = TIDE_OK;

	tidei_projections_each_state(r->ps, NULL, collect_state, &c);
	if (c.oom)
		rc = tidei_err(r->err, TIDE_ENOMEM, "out of memory");
	else if (c.n > 0)
		qsort(c.v, c.n, sizeof *c.v, by_name_and_key);
	for (size_t k = 0; k < c.n; k++) {
		tide_replay_item it;
		memset(&it, 0, sizeof it);
		it.kind = TIDE_REPLAY_STATE;
		it.name = c.v[k].name;
		it.key = c.v[k].key;
		it.klen = c.v[k].klen;
		it.json = c.v[k].json;
		it.len = c.v[k].len;
		if (rc == TIDE_OK && !r->stop && r->fn(r->ud, &it))
			r->stop = 1;
		free(c.v[k].name);
		free(c.v[k].key);
		free(c.v[k].json);
	}
	free(c.v);
	return rc;
}

/* Write what the rules changed to the scratch log. */
static int
commit_scratch(replay *r)
{
	int rc = tidei_consumers_write(r->cs, r->scratch, r->err);

	if (rc != TIDE_OK) {
		tidei_log_abort(r->scratch);
		return rc;
	}
	if ((rc = tidei_log_commit(r->scratch)) != TIDE_OK)
		return tidei_err(r->err, rc, "%s", r->scratch->err);
	tidei_consumers_committed(r->cs);
	return TIDE_OK;
}

static int
run(replay *r, tidei_log *log)
{
	MDB_txn *txn;
	MDB_cursor *cur;
	MDB_val k, v;
	uint64_t seq = 1, until, done = 0;
	char why[TIDEI_ERRLEN];
	int rc, mrc;

	if ((rc = tidei_consumers_start(r->cs, r->scratch, 0, r->err)) != TIDE_OK)
		return rc;

	if ((rc = tidei_log_read_begin(log, &txn)) != TIDE_OK)
		return tidei_err(r->err, rc, "%s", log->err);
	until = log->committed;
	if (r->o->until > 0 && r->o->until < until)
		until = r->o->until;
	if (r->o->until_time > 0)
		until = seq_at_time(log, txn, until, r->o->until_time);
	if ((mrc = mdb_cursor_open(txn, log->events, &cur)) != 0) {
		tidei_log_read_end(log);
		return tidei_err(r->err, tidei_err_mdb(mrc), "cannot read the log");
	}
	k.mv_size = 8;
	k.mv_data = &seq;
	for (mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); mrc == 0 && !r->stop;
	     mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		struct tide_event ev;
		memcpy(&seq, k.mv_data, 8);
		if (seq > until)
			break;
		if (tidei_event_decode(&ev, v.mv_data, v.mv_size) != 0) {
			rc = tidei_err(r->err, TIDE_EIO, "event %llu is corrupt",
				       (unsigned long long)seq);
			break;
		}
		ev.seq = seq;
		ev.scratch = NULL;
		/* the scratch log's transaction, renewed now and then */
		if (r->scratch->txn == NULL && (rc = tidei_log_begin(r->scratch)) != TIDE_OK) {
			tidei_err(r->err, rc, "%s", r->scratch->err);
			break;
		}
		if ((rc = tidei_consumers_offer(r->cs, r->scratch, &ev, r->err)) != TIDE_OK)
			break;
		if (done % 10000 == 9999 && (rc = commit_scratch(r)) != TIDE_OK)
			break;
		if (tidei_projections_apply(r->ps, &ev, why) != TIDE_OK)
			report_error(r, "projection", seq, why);
		if (++done % 100000 == 0 && r->o->progress)
			r->o->progress(r->o->progress_ud, done, until);
	}
	mdb_cursor_close(cur);
	tidei_log_read_end(log);
	if (rc == TIDE_OK && r->scratch->txn != NULL)
		rc = commit_scratch(r);
	if (rc == TIDE_OK && mrc != 0 && mrc != MDB_NOTFOUND && !r->stop)
		rc = tidei_err(r->err, tidei_err_mdb(mrc), "cannot read the log");
	if (r->o->progress)
		r->o->progress(r->o->progress_ud, done, until);
	return rc == TIDE_OK && !r->stop ? report_states(r) : rc;
}

static int
replay_impl(const tide_replay_opts *o, tide_replay_fn *fn, void *ud, char *err, size_t errlen)
{
	tidei_log_opts lo = { 1, 0, 0, 0 };
	tidei_consumers_opts co;
	tidei_projections_opts po;
	tidei_replay_sink sink = { sink_emit, sink_fail, NULL };
	tidei_buf path = { 0 };
	tidei_log *log = NULL;
	replay r;
	size_t nscripts = 0;
	int rc;

	if (o == NULL || o->data == NULL || o->scripts == NULL || fn == NULL)
		return TIDE_EINVAL;
	memset(&r, 0, sizeof r);
	r.o = o;
	r.fn = fn;
	r.ud = ud;
	while (o->scripts[nscripts] != NULL)
		nscripts++;
	if ((rc = tidei_log_open(&log, o->data, &lo, r.err)) != TIDE_OK)
		goto out;
	if ((rc = tidei_scratch_open(r.scratch_dir, sizeof r.scratch_dir, "replay", &r.scratch,
				     r.err)) != TIDE_OK)
		goto out;
	tidei_lua_path(&path, NULL, o->scripts, nscripts);
	tidei_consumers_opts_offline(&co, path.failed ? NULL : (const char *)path.p);
	co.script.memory_limit = (size_t)2 << 30; /* a replay holds every key in memory */
	co.projection = host_projection;
	co.projection_ud = &r;
	co.query = host_query;
	if ((rc = tidei_consumers_new(&r.cs, &co, r.err)) != TIDE_OK)
		goto out;
	sink.ud = &r;
	tidei_consumers_set_sink(r.cs, &sink);
	memset(&po, 0, sizeof po);
	po.script = tidei_consumers_script(r.cs);
	po.memory_only = 1;
	if ((rc = tidei_projections_new(&r.ps, &po, r.err)) != TIDE_OK)
		goto out;
	for (size_t k = 0; k < nscripts; k++)
		if ((rc = tidei_consumers_load(r.cs, o->scripts[k], r.err)) != TIDE_OK)
			goto out;
	if (o->projection != NULL && tidei_projections_count(r.ps) == 0) {
		rc = tidei_err(r.err, TIDE_EINVAL, "the scripts define no projection named '%s'",
			       o->projection);
		goto out;
	}
	rc = run(&r, log);
out:
	if (err != NULL && errlen > 0)
		snprintf(err, errlen, "%s", rc == TIDE_OK ? "" : r.err);
	tidei_projections_destroy(r.ps);
	tidei_consumers_destroy(r.cs);
	tidei_scratch_close(r.scratch_dir, r.scratch);
	tidei_buf_free(&r.json);
	tidei_buf_free(&path);
	tidei_log_close(log);
	return rc;
}

TIDE_API int
tide_replay(const tide_replay_opts *o, tide_replay_fn *fn, void *ud)
{
	char msg[TIDEI_ERRLEN] = "";

	return tidei_done(replay_impl(o, fn, ud, msg, sizeof msg), msg);
}
