/*
 * replay.c - time travel: run scripts over stored history without side
 * effects (tide replay / backtest).
 *
 * The log is opened read-only and walked from seq 1 to the chosen point
 * (a seq, or the last event recorded at or before a time, found by
 * bisection since `recorded` never goes backwards).  Scripts load into a
 * Lua state of their own: projections keep their state in Lua only
 * (projection.c's memory mode) and report it at the end; consumers' emits
 * are completed exactly as the engine would (consumer.c) and reported
 * instead of appended, so they are not fed back into the replay.
 * tide.once remembers claims for the replay only.  Nothing is written.
 */
#include "config.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consumer.h"
#include "projection.h"

typedef struct rconsumer {
	char *name;
	char *pattern;
	size_t plen;
	int ref;
} rconsumer;

typedef struct replay {
	const tide_replay_opts *o;
	tide_replay_fn *fn;
	void *ud;
	tidei_script *script;
	tidei_projections *ps;
	rconsumer *c;
	size_t nc, cap;
	const char *loading;
	int loading_count;
	/* the call in progress */
	const rconsumer *cur;
	const struct tide_event *cause;
	size_t nemits;
	tidei_buf emit, json;
	int once_ref; /* Lua table of claimed keys */
	int stop;
	char err[TIDEI_ERRLEN];
} replay;

static int
host_on(void *ud, const tidei_on_opts *o, int ref, const char *where, char *err)
{
	replay *r = ud;
	char defname[256];
	const char *name = o->name;

	(void)where;
	r->loading_count++;
	if (name == NULL) {
		snprintf(defname, sizeof defname, "%s:%d", r->loading, r->loading_count);
		name = defname;
	}
	if (tidei_array_grow(&r->c, &r->cap, r->nc, sizeof *r->c, 8) != 0)
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	r->c[r->nc].name = strdup(name);
	r->c[r->nc].pattern = strdup(o->pattern);
	if (r->c[r->nc].name == NULL || r->c[r->nc].pattern == NULL) {
		free(r->c[r->nc].name);
		free(r->c[r->nc].pattern);
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	}
	r->c[r->nc].plen = strlen(o->pattern);
	r->c[r->nc].ref = ref;
	r->nc++;
	return TIDE_OK;
}

static int
host_emit(void *ud, tidei_evb *b, char *err)
{
	replay *r = ud;
	struct tide_event ev;
	tide_replay_item it;
	int rc;

	if (r->cur == NULL)
		return tidei_err(err, TIDE_ESTATE, "tide.emit can only be called from a handler");
	if ((rc = tidei_emit_prepare(b, r->cur->name, r->cause, ++r->nemits,
				     TIDEI_DEFAULT_EMIT_DEPTH, err)) != TIDE_OK)
		return rc;
	tidei_buf_reset(&r->emit);
	tidei_buf_reset(&r->json);
	if (tidei_evb_finish(b, &r->emit) != 0)
		return tidei_err(err, TIDE_EEVENT, "%s", b->err);
	if (tidei_event_decode(&ev, r->emit.p, r->emit.len) != 0)
		return tidei_err(err, TIDE_EIO, "cannot read back an emitted event");
	ev.seq = 0;
	if (tidei_event_json(&r->json, &ev) != 0)
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	memset(&it, 0, sizeof it);
	it.kind = TIDE_REPLAY_EMIT;
	it.name = r->cur->name;
	it.json = (const char *)r->json.p;
	it.len = r->json.len;
	it.seq = r->cause->seq;
	if (r->fn(r->ud, &it))
		r->stop = 1;
	return TIDE_OK;
}

static int
host_once(void *ud, const char *key, size_t n, int *first, char *err)
{
	replay *r = ud;
	lua_State *L = tidei_script_state(r->script);

	if (r->cur == NULL)
		return tidei_err(err, TIDE_ESTATE, "tide.once can only be called from a handler");
	lua_rawgeti(L, LUA_REGISTRYINDEX, r->once_ref);
	lua_pushstring(L, r->cur->name);
	lua_pushliteral(L, "\n");
	lua_pushlstring(L, key, n);
	lua_concat(L, 3);
	lua_pushvalue(L, -1);
	*first = lua_rawget(L, -3) == LUA_TNIL;
	lua_pop(L, 1);
	lua_pushboolean(L, 1);
	lua_rawset(L, -3);
	lua_pop(L, 1);
	return TIDE_OK;
}

static int
host_projection(void *ud, lua_State *L, const char *name, int spec, const char *where, char *err)
{
	replay *r = ud;

	/* with --projection, the others are not computed at all */
	if (r->o->projection != NULL && strcmp(r->o->projection, name) != 0)
		return TIDE_OK;
	return tidei_projections_define(r->ps, L, name, spec, r->loading, where, err);
}

static void
host_log(void *ud, int level, const char *msg)
{
	(void)ud;
	(void)level;
	/* print() in a replayed script: a diagnostic, kept off the results */
	fprintf(stderr, "%s\n", msg);
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

static int
run(replay *r, tidei_log *log)
{
	MDB_txn *txn;
	MDB_cursor *cur;
	MDB_val k, v;
	uint64_t seq = 1, until, done = 0;
	char why[TIDEI_ERRLEN];
	int rc, mrc;

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
		for (size_t i = 0; i < r->nc && !r->stop; i++) {
			const rconsumer *c = &r->c[i];
			if (!tidei_pattern_match(c->pattern, c->plen, ev.attr[TIDEI_A_TYPE],
						 ev.len[TIDEI_A_TYPE]))
				continue;
			r->cur = c;
			r->cause = &ev;
			r->nemits = 0;
			if (tidei_script_call(r->script, c->ref, &ev, why, NULL) != TIDE_OK)
				report_error(r, c->name, seq, why);
			r->cur = NULL;
		}
		if (tidei_projections_apply(r->ps, &ev, why) != TIDE_OK)
			report_error(r, "projection", seq, why);
		if (++done % 100000 == 0 && r->o->progress)
			r->o->progress(r->o->progress_ud, done, until);
	}
	mdb_cursor_close(cur);
	tidei_log_read_end(log);
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
	tidei_script_opts so;
	tidei_projections_opts po;
	tidei_host host;
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
	r.once_ref = LUA_NOREF;
	while (o->scripts[nscripts] != NULL)
		nscripts++;
	if ((rc = tidei_log_open(&log, o->data, &lo, r.err)) != TIDE_OK)
		goto out;
	memset(&so, 0, sizeof so);
	so.instruction_budget = TIDEI_DEFAULT_BUDGET;
	so.time_limit_ns = TIDEI_DEFAULT_TIME_NS;
	so.memory_limit = (size_t)2 << 30; /* a replay holds every key in memory */
	tidei_lua_path(&path, NULL, o->scripts, nscripts);
	so.lua_path = path.failed ? NULL : (const char *)path.p;
	memset(&host, 0, sizeof host);
	host.ud = &r;
	host.max_event = 1 << 20; /* the engine's default max_event_size */
	host.on = host_on;
	host.emit = host_emit;
	host.once = host_once;
	host.projection = host_projection;
	host.log = host_log;
	if ((rc = tidei_script_new(&r.script, &so, &host, r.err)) != TIDE_OK)
		goto out;
	lua_newtable(tidei_script_state(r.script));
	r.once_ref = luaL_ref(tidei_script_state(r.script), LUA_REGISTRYINDEX);
	memset(&po, 0, sizeof po);
	po.script = r.script;
	po.memory_only = 1;
	if ((rc = tidei_projections_new(&r.ps, &po, r.err)) != TIDE_OK)
		goto out;
	for (size_t k = 0; k < nscripts; k++) {
		r.loading = o->scripts[k];
		r.loading_count = 0;
		if ((rc = tidei_script_load(r.script, o->scripts[k], r.err)) != TIDE_OK)
			goto out;
	}
	r.loading = NULL;
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
	tidei_script_destroy(r.script);
	for (size_t k = 0; k < r.nc; k++) {
		free(r.c[k].name);
		free(r.c[k].pattern);
	}
	free(r.c);
	tidei_buf_free(&r.emit);
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
