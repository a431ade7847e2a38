/*
 * projection.c - projections: state per key folded from the log.
 *
 *   tide.projection("orders_by_customer", {
 *     version = 1,                                  -- bump to rebuild
 *     key = function(ev) return ev.data.customer end, -- default: subject
 *     filter = function(ev) return ev.data.total > 0 end,
 *     init = function(key) return { count = 0 } end,
 *     on = { ["order.placed"] = function(s, ev) s.count = s.count + 1 end,
 *            ["*"] = function(s, ev) ... end },
 *   })
 *
 * A handler changes the state in place or returns a new one; returning
 * tide.delete forgets the key.  For each event the most specific handler
 * runs: the exact type, else the longest "prefix.*", else "*".
 *
 * Storage: state lives in the `state` database under
 * name "\0" generation key, encoded as values (val.h; pstate.c owns the
 * keys, and stores those too long for LMDB by hash), and the progress in
 * `projections`.  Queries read the live generation.  When the definition
 * changes (its version, or the script file that defines it), a new
 * generation is built from the start of the log a slice of time per turn
 * while queries keep reading the old one; once it has caught up with the
 * log the live generation switches in the same transaction, and the old
 * generation's keys are deleted a slice at a time.  Everything commits
 * with the turn, so a crash at any point resumes the build where its last
 * turn committed.
 *
 * A build with enough events ahead, or a live projection under load, is
 * shared with helper threads (pshare.c, pbuild.h): each applies a part of
 * the keys in a Lua state of its own, and the engine's turns write their
 * checkpoints; what they did not reach (events appended meanwhile, or
 * everything after their last checkpoint if they stopped) is applied here
 * as usual.  A spec with `parallel = false` keeps its work here.
 *
 * Applying events and storing states is papply.c's: states touched in a
 * turn stay decoded and are written once when the turn's slice ends (or,
 * under load, every LIVE_FLUSH_NS), so a key seen many times costs one
 * write.
 *
 * A handler that fails stops its projection (it is marked faulted at that
 * event): skipping events would make the state wrong.  Fixing the script
 * changes the definition and rebuilds it.
 */
#include "config.h"

#include <errno.h>
#include <lauxlib.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "l_event.h"
#include "l_tide.h"
#include "projection_int.h"

/* ------------------------------------------------------------------------
 * Keys and progress records
 * ------------------------------------------------------------------------ */

static uint32_t
key_gen(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* ------------------------------------------------------------------------
 * Definitions
 * ------------------------------------------------------------------------ */

static int
by_specificity(const void *a, const void *b)
{
	const handler *x = a, *y = b;
	int xs = x->pattern[x->plen - 1] == '*', ys = y->pattern[y->plen - 1] == '*';

	/* exact before patterns; among patterns the longer prefix first */
	if (xs != ys)
		return xs - ys;
	return (int)y->plen - (int)x->plen;
}

static int
ref_field(lua_State *L, int spec, const char *field, int *ref, char *err)
{
	int t = lua_getfield(L, spec, field);

	*ref = LUA_NOREF;
	if (t == LUA_TNIL) {
		lua_pop(L, 1);
		return TIDE_OK;
	}
	if (t != LUA_TFUNCTION) {
		lua_pop(L, 1);
		if (strcmp(field, "key") == 0)
			return tidei_err(err, TIDE_EINVAL,
					 "'key' must be a function or a field path such as "
					 "\"data.account\"");
		return tidei_err(err, TIDE_EINVAL, "'%s' must be a function", field);
	}
	*ref = luaL_ref(L, LUA_REGISTRYINDEX);
	return TIDE_OK;
}

/* key = "subject", "data.account.id", or an extension's name. */
static int
key_path_parse(proj *p, const char *path, char *err)
{
	const char *dot = strchr(path, '.');
	size_t first = dot ? (size_t)(dot - path) : strlen(path);

	if (*path == '\0' || strstr(path, "..") || path[strlen(path) - 1] == '.')
		return tidei_err(err, TIDE_EINVAL,
				 "'key' path '%s' is not of the form \"data.field.field\"", path);
	p->key_attr = -1;
	for (int a = 0; a < TIDEI_NATTR; a++)
		if (strlen(tidei_attr_names[a]) == first &&
		    memcmp(path, tidei_attr_names[a], first) == 0)
			p->key_attr = a;
	if (first == 4 && memcmp(path, "data", 4) == 0)
		p->key_attr = TIDEI_NATTR;
	if (dot != NULL && p->key_attr != TIDEI_NATTR)
		return tidei_err(err, TIDE_EINVAL,
				 "'key' path '%s': only data has fields (\"data.%s\"?)", path,
				 dot + 1);
	if (p->key_attr == TIDEI_NATTR && dot == NULL)
		return tidei_err(err, TIDE_EINVAL,
				 "'key' path 'data' names the whole data, not a field of it");
	if ((p->key_path = strdup(path)) == NULL)
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	return TIDE_OK;
}

static void
proj_free(lua_State *L, proj *p)
{
	free(p->name);
	free(p->key_path);
	free(p->where);
	for (size_t k = 0; k < p->nh; k++) {
		free(p->h[k].pattern);
		if (L)
			luaL_unref(L, LUA_REGISTRYINDEX, p->h[k].ref);
	}
	free(p->h);
	tidei_pbuild_destroy(p->par);
	p->par = NULL;
	tidei_buf_free(&p->out);
	tidei_keymap_free(&p->keys);
	free(p->dirty);
	if (L) {
		luaL_unref(L, LUA_REGISTRYINDEX, p->key_ref);
		luaL_unref(L, LUA_REGISTRYINDEX, p->filter_ref);
		luaL_unref(L, LUA_REGISTRYINDEX, p->init_ref);
		luaL_unref(L, LUA_REGISTRYINDEX, p->cache_ref);
	}
}

int
tidei_projections_define(tidei_projections *ps, lua_State *L, const char *name, int spec,
			 const char *script, const char *where, char *err)
{
	static const char *const known[] = { "version", "key",      "filter", "init",
					     "on",      "parallel", NULL };
	proj p;
	int rc;
	size_t nl = strlen(name), wl;

	spec = lua_absindex(L, spec);
	if (nl == 0 || nl > TIDEI_PROJ_NAME_MAX || strchr(name, '\n') || strchr(name, '\t'))
		return tidei_err(err, TIDE_EINVAL, "projection name must be 1 to %d characters",
				 TIDEI_PROJ_NAME_MAX);
	for (size_t k = 0; k < ps->n; k++)
		if (strcmp(ps->v[k].name, name) == 0)
			return tidei_err(err, TIDE_EINVAL,
					 "a projection named '%s' already exists (%s)", name,
					 ps->v[k].where);
	/* unknown fields are mistakes, not silent defaults */
	lua_pushnil(L);
	while (lua_next(L, spec) != 0) {
		int ok = 0;
		lua_pop(L, 1);
		for (const char *const *f = known; *f && lua_type(L, -1) == LUA_TSTRING; f++)
			ok |= strcmp(lua_tostring(L, -1), *f) == 0;
		if (!ok) {
			const char *bad =
				lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "?";
			rc = tidei_err(err, TIDE_EINVAL, "unknown field '%s' in the spec of '%s'",
				       bad, name);
			lua_pop(L, 1);
			return rc;
		}
	}
	memset(&p, 0, sizeof p);
	p.key_ref = p.filter_ref = p.init_ref = p.cache_ref = LUA_NOREF;
	p.parallel = 1;
	if (lua_getfield(L, spec, "parallel") != LUA_TNIL) {
		if (!lua_isboolean(L, -1)) {
			lua_pop(L, 1);
			return tidei_err(err, TIDE_EINVAL, "'parallel' must be true or false");
		}
		p.parallel = lua_toboolean(L, -1);
	}
	lua_pop(L, 1);
	if (lua_getfield(L, spec, "version") != LUA_TNIL) {
		if (!lua_isinteger(L, -1)) {
			lua_pop(L, 1);
			return tidei_err(err, TIDE_EINVAL, "'version' must be an integer");
		}
		p.version = (int64_t)lua_tointeger(L, -1);
	}
	lua_pop(L, 1);
	if (lua_getfield(L, spec, "key") == LUA_TSTRING) {
		rc = key_path_parse(&p, lua_tostring(L, -1), err);
		lua_pop(L, 1);
		if (rc != TIDE_OK)
			goto fail;
	} else {
		lua_pop(L, 1);
		if ((rc = ref_field(L, spec, "key", &p.key_ref, err)) != TIDE_OK)
			goto fail;
	}
	if ((rc = ref_field(L, spec, "filter", &p.filter_ref, err)) != TIDE_OK ||
	    (rc = ref_field(L, spec, "init", &p.init_ref, err)) != TIDE_OK)
		goto fail;
	if (lua_getfield(L, spec, "on") != LUA_TTABLE) {
		lua_pop(L, 1);
		rc = tidei_err(
			err, TIDE_EINVAL,
			"'on' must be a table of handlers, { [\"type\"] = function(s, ev) }");
		goto fail;
	}
	lua_pushnil(L);
	while (lua_next(L, -2) != 0) {
		handler *h;
		const char *pat = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
		const char *star = pat ? strchr(pat, '*') : NULL;
		if (pat == NULL || *pat == '\0' ||
		    (star && !(strcmp(pat, "*") == 0 ||
			       (star[1] == '\0' && star > pat && star[-1] == '.')))) {
			rc = tidei_err(
				err, TIDE_EINVAL,
				"handlers in 'on' are keyed by a type, \"prefix.*\" or \"*\"");
			lua_pop(L, 3);
			goto fail;
		}
		if (!lua_isfunction(L, -1)) {
			rc = tidei_err(err, TIDE_EINVAL, "the handler for '%s' must be a function",
				       pat);
			lua_pop(L, 3);
			goto fail;
		}
		h = realloc(p.h, (p.nh + 1) * sizeof *p.h);
		if (h == NULL || (h[p.nh].pattern = strdup(pat)) == NULL) {
			p.h = h ? h : p.h;
			lua_pop(L, 3);
			rc = tidei_err(err, TIDE_ENOMEM, "out of memory");
			goto fail;
		}
		p.h = h;
		p.h[p.nh].plen = strlen(pat);
		p.h[p.nh].ref = luaL_ref(L, LUA_REGISTRYINDEX); /* pops the handler */
		p.nh++;
	}
	lua_pop(L, 1);
	if (p.nh == 0) {
		rc = tidei_err(err, TIDE_EINVAL, "'on' has no handlers");
		goto fail;
	}
	qsort(p.h, p.nh, sizeof *p.h, by_specificity);
	lua_newtable(L);
	p.cache_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	p.hash = tidei_fnv(&p.version, sizeof p.version, tidei_file_hash(script));
	p.name = strdup(name);
	wl = strlen(where);
	while (wl > 0 && (where[wl - 1] == ' ' || where[wl - 1] == ':'))
		wl--;
	p.where = strndup(where, wl);
	if (p.name == NULL || p.where == NULL) {
		rc = tidei_err(err, TIDE_ENOMEM, "out of memory");
		goto fail;
	}
	if (tidei_array_grow(&ps->v, &ps->cap, ps->n, sizeof *ps->v, 8) != 0) {
		rc = tidei_err(err, TIDE_ENOMEM, "out of memory");
		goto fail;
	}
	ps->v[ps->n++] = p;
	return TIDE_OK;
fail:
	proj_free(L, &p);
	return rc;
}

int
tidei_projections_new(tidei_projections **out, const tidei_projections_opts *o, char *err)
{
	tidei_projections *ps = calloc(1, sizeof *ps);

	*out = NULL;
	if (ps == NULL)
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	ps->o = *o;
	ps->poll_at = -1;
	if (o->build != NULL && o->build->threads > 1 && !o->memory_only &&
	    (ps->build = tidei_pbuild_env_copy(o->build)) == NULL) {
		free(ps);
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	}
	ps->o.build = ps->build;
	if (ps->o.rebuild_ns <= 0)
		ps->o.rebuild_ns = 50000000; /* 50 ms a turn */
	*out = ps;
	return TIDE_OK;
}

void
tidei_projections_destroy(tidei_projections *ps)
{
	if (ps == NULL)
		return;
	/* The Lua state may be gone already: registry refs die with it. */
	for (size_t k = 0; k < ps->n; k++)
		proj_free(NULL, &ps->v[k]);
	free(ps->v);
	tidei_pbuild_env_free(ps->build);
	free(ps);
}

size_t
tidei_projections_count(const tidei_projections *ps)
{
	return ps->n;
}

const char *
tidei_projections_describe(const tidei_projections *ps, size_t k, const char **where,
			   tidei_buf *out)
{
	const proj *p = &ps->v[k];

	*where = p->where;
	tidei_buf_printf(out, "version %lld, key %s", (long long)p->version,
			 p->key_path               ? p->key_path
			 : p->key_ref != LUA_NOREF ? "from a function"
						   : "subject");
	if (p->filter_ref != LUA_NOREF)
		tidei_buf_printf(out, ", filtered");
	for (size_t i = 0; i < p->nh; i++)
		tidei_buf_printf(out, "%s%s", i ? ", " : "; on ", p->h[i].pattern);
	return p->name;
}

const tidei_histo *
tidei_projections_took(const tidei_projections *ps, size_t k, const char **name)
{
	*name = ps->v[k].name;
	return &ps->v[k].took;
}

uint64_t
tidei_projections_hash(const tidei_projections *ps, const char *name)
{
	for (size_t k = 0; k < ps->n; k++)
		if (strcmp(ps->v[k].name, name) == 0)
			return ps->v[k].hash;
	return 0;
}

/* ------------------------------------------------------------------------
 * Progress
 * ------------------------------------------------------------------------ */

/* Start building a new generation (the live one keeps serving). */
static void
begin_build(proj *p)
{
	uint32_t top = p->meta.live > p->meta.build ? p->meta.live : p->meta.build;

	p->meta.build = top + 1;
	p->meta.build_seq = 0;
	tidei_proj_stop_helpers(p);
	p->par_off = 0;
	p->meta.hash = p->hash;
	p->meta.version = p->version;
	p->meta.faulted = 0;
	p->meta.fault_seq = 0;
	p->meta.error[0] = '\0';
	/* a half-built generation of an older definition may be left over */
	p->meta.gc = 1;
}

static int
load(tidei_projections *ps, tidei_log *log, MDB_txn *txn)
{
	for (size_t k = 0; k < ps->n; k++) {
		proj *p = &ps->v[k];
		int rc = tidei_proj_meta_get(txn, log->projections, p->name, &p->meta);
		p->meta_changed = 1;
		if (rc == TIDE_ENOTFOUND) {
			memset(&p->meta, 0, sizeof p->meta);
			begin_build(p);
			p->meta.gc = 0;
		} else if (rc != TIDE_OK) {
			return tidei_err(ps->err, rc, "cannot read the progress of projection %s",
					 p->name);
		} else if (p->meta.hash != p->hash || p->meta.version != p->version) {
			begin_build(p);
		} else {
			p->meta_changed = 0;
		}
		tidei_keymap_clear(&p->keys);
		if (p->dirty != NULL)
			memset(p->dirty, 0, p->dirty_cap);
		p->ndirty = 0;
	}
	return TIDE_OK;
}

int
tidei_projections_start(tidei_projections *ps, tidei_log *log, char *err)
{
	MDB_txn *txn;
	int rc, any = 0;

	if (ps->n == 0)
		return TIDE_OK;
	if ((rc = tidei_log_read_begin(log, &txn)) != TIDE_OK)
		return tidei_err(err, rc, "%s", log->err);
	rc = load(ps, log, txn);
	tidei_log_read_end(log);
	if (rc != TIDE_OK)
		return tidei_err(err, rc, "%s", ps->err);
	/* record at once that a build has begun, so that tide stat says so
	 * from the start */
	for (size_t k = 0; k < ps->n; k++)
		any |= ps->v[k].meta_changed;
	if (any && (rc = tidei_log_begin(log)) != TIDE_OK)
		return tidei_err(err, rc, "%s", log->err);
	for (size_t k = 0; k < ps->n && any && rc == TIDE_OK; k++)
		if (ps->v[k].meta_changed)
			rc = tidei_proj_record(log, ps->v[k].name, &ps->v[k].meta);
	if (rc == TIDE_OK)
		rc = tidei_log_commit(log);
	else
		tidei_log_abort(log);
	if (rc != TIDE_OK)
		return tidei_err(err, rc, "%s", log->err);
	for (size_t k = 0; k < ps->n; k++) {
		proj *p = &ps->v[k];
		if (tidei_flight_solo(ps->flight, p->name))
			p->par_off = 1; /* where each event is recorded */
		if (p->meta.build != p->meta.live)
			LOG(ps, TIDE_LOG_INFO, "projection '%s': building from the log%s", p->name,
			    p->meta.live ? " (the previous state is served meanwhile)" : "");
		else if (p->meta.faulted)
			LOG(ps, TIDE_LOG_WARN, "projection '%s' is stopped at event %llu: %s",
			    p->name, (unsigned long long)p->meta.fault_seq, p->meta.error);
	}
	return TIDE_OK;
}

void
tidei_projections_set_flight(tidei_projections *ps, tidei_flight *f)
{
	ps->flight = f;
}

void
tidei_projections_pin_scripts(tidei_projections *ps)
{
	if (ps->build != NULL)
		ps->build->scripts_hash = tidei_pbuild_scripts_hash(ps->build);
}

int
tidei_projections_reload(tidei_projections *ps, tidei_log *log)
{
	MDB_txn *txn;
	int rc;

	for (size_t k = 0; k < ps->n; k++) {
		tidei_proj_stop_helpers(&ps->v[k]);
		tidei_proj_new_cache(ps, &ps->v[k]);
	}
	if (ps->n == 0)
		return TIDE_OK;
	if ((rc = tidei_log_read_begin(log, &txn)) != TIDE_OK)
		return rc;
	rc = load(ps, log, txn);
	tidei_log_read_end(log);
	return rc;
}

int
tidei_projections_rebuild(tidei_projections *ps, tidei_log *log, const char *name)
{
	for (size_t k = 0; k < ps->n; k++) {
		proj *p = &ps->v[k];
		if (strcmp(p->name, name) != 0)
			continue;
		begin_build(p);
		tidei_proj_new_cache(ps, p);
		LOG(ps, TIDE_LOG_INFO, "projection '%s': rebuild requested", p->name);
		return tidei_proj_record(log, p->name, &p->meta);
	}
	return TIDE_ENOTFOUND;
}

/* ------------------------------------------------------------------------
 * The turn
 * ------------------------------------------------------------------------ */

/* Delete keys of generations other than live and build, a slice a turn. */
static int
gc_step(proj *p, tidei_log *log, int *more)
{
	size_t plen = strlen(p->name) + 1; /* name "\0" */
	MDB_cursor *cur;
	MDB_val k = { plen, p->name }, v;
	size_t deleted = 0;
	int mrc;

	if ((mrc = mdb_cursor_open(log->txn, log->state, &cur)) != 0)
		return tidei_err_mdb(mrc);
	mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
	while (mrc == 0 && deleted < GC_PER_TURN) {
		uint32_t gen;
		if (k.mv_size < plen + 4 || memcmp(k.mv_data, p->name, plen) != 0)
			break;
		gen = key_gen((const uint8_t *)k.mv_data + plen);
		if (gen != p->meta.live && gen != p->meta.build) {
			if ((mrc = mdb_cursor_del(cur, 0)) != 0)
				break;
			deleted++;
			mrc = mdb_cursor_get(cur, &k, &v, MDB_GET_CURRENT);
			if (mrc == MDB_NOTFOUND || mrc == EINVAL)
				mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
			continue;
		}
		mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
	}
	mdb_cursor_close(cur);
	if (mrc != 0 && mrc != MDB_NOTFOUND)
		return tidei_err_mdb(mrc);
	if (deleted >= GC_PER_TURN)
		*more = 1;
	else
		p->meta.gc = 0;
	return TIDE_OK;
}

static int
run_one(tidei_projections *ps, proj *p, tidei_log *log, int *more, char *err)
{
	int rebuilding = p->meta.build != p->meta.live;
	int64_t now = tidei_now(), deadline = now + ps->o.rebuild_ns;
	size_t handled = 0, budget = ps->o.turn_budget ? ps->o.turn_budget : 20000;
	uint64_t done, seq;
	char why[TIDEI_ERRLEN], trace[TIDEI_ERRLEN];
	tidei_proj_meta before = p->meta;
	int rc = TIDE_OK, mrc, busy = 0;

	p->log = log;
	p->ps = ps;
	p->txn = log->txn;
	if (p->meta.gc && (rc = gc_step(p, log, more)) != TIDE_OK)
		return tidei_err(err, rc, "cannot clean up projection %s", p->name);
	if ((rc = rebuilding
			  ? tidei_proj_helpers(ps, p, log, now, more, &busy, err)
			  : tidei_proj_live_helpers(ps, p, log, now, more, &busy, err)) != TIDE_OK)
		return rc;
	if (busy) /* the helpers have the build */
		return memcmp(&before, &p->meta, sizeof before) == 0 ||
				       tidei_proj_record(log, p->name, &p->meta) == TIDE_OK
			       ? TIDE_OK
			       : tidei_err(err, TIDE_EIO, "%s", log->err);
	done = p->done > p->meta.build_seq ? p->done : p->meta.build_seq;
	seq = done + 1;
	if (p->meta.faulted || done >= log->head)
		goto write;
	if ((mrc = mdb_cursor_open(log->txn, log->events, &p->run.cur)) != 0)
		return tidei_err(err, tidei_err_mdb(mrc), "cannot read the log");
	p->run.seq = seq;
	p->run.done = done;
	p->run.handled = p->run.seen = 0;
	p->run.budget = budget;
	p->run.deadline = deadline;
	p->run.until = UINT64_MAX;
	p->run.rebuilding = rebuilding;
	p->run.mrc = 0;
	p->run.corrupt = 0;
	rc = tidei_script_protect(ps->o.script, tidei_proj_l_run, p, why, trace);
	tidei_flight_leave(ps->flight); /* a failing handler did not get to it */
	p->ev = NULL;
	mdb_cursor_close(p->run.cur);
	p->run.cur = NULL;
	done = p->run.done;
	handled = p->run.handled;
	if (rc != TIDE_OK) {
		/* stop before this event; what came before is kept */
		tidei_proj_fault(ps, p, p->run.seq, why);
		rc = TIDE_OK;
	} else if (p->run.corrupt) {
		return tidei_err(err, TIDE_EIO, "event %llu is corrupt",
				 (unsigned long long)p->run.seq);
	} else if (p->run.mrc != 0 && p->run.mrc != MDB_NOTFOUND) {
		return tidei_err(err, tidei_err_mdb(p->run.mrc), "cannot read the log");
	}
	p->done = done;
	if (!p->meta.faulted && done < log->head)
		*more = 1;
	if (!rebuilding && handled >= LIVE_BUSY)
		p->hot_at = now;
write:
	/* A rebuild keeps its states in memory across turns, and writes them
	 * (with its progress, in the same commit) now and then, when the cache
	 * is large, or when it has caught up. */
	if (rebuilding && !p->meta.faulted && done < log->head && p->keys.n < REBUILD_KEYS &&
	    now - p->flushed_at < REBUILD_FLUSH_NS) {
		if (memcmp(&before, &p->meta, sizeof before) != 0 &&
		    tidei_proj_record(log, p->name, &p->meta) != TIDE_OK)
			return tidei_err(err, TIDE_EIO, "%s", log->err);
		return TIDE_OK;
	}
	if (!rebuilding && !p->meta.faulted && handled >= LIVE_BUSY && p->ndirty < CACHE_MAX &&
	    now - p->flushed_at < LIVE_FLUSH_NS) {
		*more = 1; /* a turn soon, to write them if nothing else comes */
		return TIDE_OK;
	}
	if ((rc = tidei_proj_flush(ps, p, err)) != TIDE_OK) {
		if (rc != TIDE_ESCRIPT)
			return rc;
		/* a state that cannot be stored: what the handlers built since
		 * the last write is dropped, the progress stays where it was */
		tidei_proj_fault(ps, p, done, err);
		done = p->meta.build_seq;
	}
	p->meta.build_seq = done;
	p->done = 0;
	p->flushed_at = now;
	if (rebuilding && !p->meta.faulted && done < log->head)
		tidei_proj_log_progress(ps, p, done, log->head);
	if (!p->meta.faulted && p->meta.build != p->meta.live && p->meta.build_seq >= log->head) {
		LOG(ps, TIDE_LOG_INFO, "projection '%s' is built (%llu events); it is live now",
		    p->name, (unsigned long long)p->meta.build_seq);
		p->meta.gc = p->meta.live != 0;
		p->meta.live = p->meta.build;
		if (p->meta.gc)
			*more = 1;
	}
	if (p->meta.build == p->meta.live)
		p->meta.live_seq = p->meta.build_seq;
	/* a new projection's first progress is written even if nothing moved */
	if (memcmp(&before, &p->meta, sizeof before) == 0 && before.build_seq > 0)
		return TIDE_OK;
	return tidei_proj_record(log, p->name, &p->meta) == TIDE_OK
		       ? TIDE_OK
		       : tidei_err(err, TIDE_EIO, "%s", log->err);
}

int
tidei_projections_run(tidei_projections *ps, tidei_log *log, int *more, char *err)
{
	int rc;

	*more = 0;
	ps->poll_at = -1;
	for (size_t k = 0; k < ps->n; k++)
		if ((rc = run_one(ps, &ps->v[k], log, more, err)) != TIDE_OK)
			return rc;
	return TIDE_OK;
}

/* ------------------------------------------------------------------------
 * Replay: in memory only
 * ------------------------------------------------------------------------ */

int
tidei_projections_apply(tidei_projections *ps, const struct tide_event *ev, char *err)
{
	char why[TIDEI_ERRLEN];

	for (size_t k = 0; k < ps->n; k++) {
		proj *p = &ps->v[k];
		int rc;
		if (p->meta.faulted)
			continue;
		p->handler_ref = tidei_proj_match(p, ev->attr[TIDEI_A_TYPE], ev->len[TIDEI_A_TYPE]);
		if (p->handler_ref == LUA_NOREF)
			continue;
		p->ev = ev;
		p->ps = ps;
		rc = tidei_script_protect(ps->o.script, tidei_proj_l_apply, p, why, NULL);
		p->ev = NULL;
		if (rc != TIDE_OK) {
			p->meta.faulted = 1;
			p->meta.fault_seq = ev->seq;
			snprintf(p->meta.error, sizeof p->meta.error, "%.250s", why);
			return tidei_err(err, rc, "projection '%s' failed at event %llu: %s",
					 p->name, (unsigned long long)ev->seq, why);
		}
	}
	return TIDE_OK;
}

int
tidei_projections_each_state(tidei_projections *ps, const char *name,
			     int (*fn)(void *ud, const char *proj, const char *key, size_t klen,
				       const char *json, size_t jlen),
			     void *ud)
{
	lua_State *L = tidei_proj_lua(ps);
	tidei_buf val = { 0 }, json = { 0 };
	char err[TIDEI_ERRLEN];
	int stop = 0;

	for (size_t k = 0; k < ps->n && !stop; k++) {
		proj *p = &ps->v[k];
		if (name != NULL && strcmp(name, p->name) != 0)
			continue;
		lua_rawgeti(L, LUA_REGISTRYINDEX, p->cache_ref);
		for (size_t slot = 0; slot < p->keys.n && !stop; slot++) {
			size_t klen;
			const char *key = tidei_keymap_key(&p->keys, slot, &klen);
			tidei_vreader r;
			if (lua_rawgeti(L, -1, (lua_Integer)slot + 1) == LUA_TTABLE) {
				tidei_buf_reset(&val);
				tidei_buf_reset(&json);
				/* no call to charge here: a state that refers to one
				 * table many times stops at this size instead */
				val.limit = TIDEI_DEFAULT_MEMORY;
				if (tidei_lua_to_val(L, -1, &val, err) == 0) {
					r.p = val.p;
					r.end = val.p + val.len;
					if (tidei_json_encode(&json, &r) == 0)
						stop = fn(ud, p->name, key, klen,
							  (const char *)json.p, json.len);
				}
			}
			lua_pop(L, 1);
		}
		lua_pop(L, 1);
	}
	tidei_buf_free(&val);
	tidei_buf_free(&json);
	return TIDE_OK;
}

/* ------------------------------------------------------------------------
 * Forcing a rebuild while no engine runs
 * ------------------------------------------------------------------------ */

static int
mark_for_rebuild(tidei_log *log, void *ud)
{
	const char *name = ud;
	tidei_proj_meta m;
	int rc = tidei_proj_meta_get(log->txn, log->projections, name, &m);

	if (rc == TIDE_ENOTFOUND)
		return tidei_err(log->err, rc, "no projection named '%s' in this log", name);
	if (rc != TIDE_OK)
		return tidei_err(log->err, rc, "cannot read projection '%s'", name);
	/* no definition hashes to 0: the next engine rebuilds it */
	m.hash = 0;
	return tidei_proj_record(log, name, &m);
}

static int
projection_rebuild_impl(const char *dir, const char *name, char *err, size_t errlen)
{
	if (dir == NULL || name == NULL)
		return TIDE_EINVAL;
	return tidei_log_offline(dir, mark_for_rebuild, (void *)name, err, errlen);
}

TIDE_API int
tide_projection_rebuild(const char *dir, const char *name)
{
	char msg[TIDEI_ERRLEN] = "";

	return tidei_done(projection_rebuild_impl(dir, name, msg, sizeof msg), msg);
}

/* Push a copy of the value at @p idx (encoded and decoded: the caller may
 * not change the projection's own table).  [-0, +1, e] */
static void
push_copy(lua_State *L, int idx)
{
	char err[TIDEI_ERRLEN];
	tidei_buf b = { 0 };
	tidei_vreader r;

	idx = lua_absindex(L, idx);
	if (tidei_lua_to_val(L, idx, &b, err) != 0 || b.failed) {
		tidei_buf_free(&b);
		luaL_error(L, "cannot copy the state: %s", b.failed ? "out of memory" : err);
	}
	r.p = b.p;
	r.end = b.p + b.len;
	if (tidei_lua_push_val(L, &r) != 0) {
		tidei_buf_free(&b);
		luaL_error(L, "cannot copy the state: out of memory");
	}
	tidei_buf_free(&b);
}

int
tidei_projections_push_state(tidei_projections *ps, lua_State *L, tidei_log *log, const char *name,
			     const char *key, size_t klen, char *err)
{
	proj *p = NULL;
	MDB_val v;
	tidei_vreader r;
	long slot;
	int mrc;

	for (size_t k = 0; k < ps->n && p == NULL; k++)
		if (strcmp(ps->v[k].name, name) == 0)
			p = &ps->v[k];
	if (p == NULL)
		return tidei_err(err, TIDE_ENOTFOUND, "no projection is named '%s'", name);
	/* a state applied and not yet written is the newest (unless it
	 * belongs to a generation being built: queries read the live one) */
	if ((ps->o.memory_only || p->meta.build == p->meta.live) &&
	    (slot = tidei_keymap_get(&p->keys, key, klen)) >= 0) {
		lua_rawgeti(L, LUA_REGISTRYINDEX, p->cache_ref);
		if (lua_rawgeti(L, -1, slot + 1) == LUA_TTABLE) {
			push_copy(L, -1);
			lua_replace(L, -3);
			lua_pop(L, 1);
			return TIDE_OK;
		}
		lua_pop(L, 2);
		if (ps->o.memory_only) {
			lua_pushnil(L);
			return TIDE_OK;
		}
	}
	if (ps->o.memory_only || p->meta.live == 0 || log == NULL || log->txn == NULL) {
		lua_pushnil(L);
		return TIDE_OK;
	}
	mrc = tidei_pstate_get(log->txn, log->state, p->name, p->meta.live, key, klen,
			       TIDEI_LOG_FORMAT, &v);
	if (mrc == MDB_NOTFOUND) {
		lua_pushnil(L);
		return TIDE_OK;
	}
	if (mrc != 0)
		return tidei_err(err, tidei_err_mdb(mrc), "cannot read projection '%s': %s", name,
				 mdb_strerror(mrc));
	r.p = v.mv_data;
	r.end = r.p + v.mv_size;
	if (tidei_lua_push_val(L, &r) != 0)
		return tidei_err(err, TIDE_EIO, "the state of a key of projection '%s' is damaged",
				 name);
	return TIDE_OK;
}
