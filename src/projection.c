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
 * A build with enough events ahead is shared with helper threads
 * (pbuild.h): each applies a part of the keys in a Lua state of its own,
 * and the engine's turns write their checkpoints (helpers()); what they
 * did not reach (events appended meanwhile, or everything after their
 * last checkpoint if they stopped) is applied here as usual.  A spec
 * with `parallel = false` keeps its builds here.
 *
 * Per event, one protected Lua call (l_apply) does filter, key, the state
 * lookup and the handler; states touched in a turn stay in a Lua table and
 * are encoded and written once when the turn's slice ends, so a key seen
 * many times costs one write.
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
#include "keymap.h"
#include "pbuild.h"
#include "projection.h"
#include "pstate.h"

/* Encode and write the cached states when this many keys changed. */
#define CACHE_MAX 100000
/* A live projection keeps up to this many states decoded between writes,
 * so that the next event of a key does not read and decode it again. */
#define KEEP_MAX 200000
/* A rebuild writes its state only now and then (or when it catches up):
 * a key updated many times in the meantime is written once. */
#define REBUILD_KEYS 200000
#define REBUILD_FLUSH_NS 5000000000ll
/* A live projection under load does the same for a short while: a turn
 * that took at least LIVE_BUSY events keeps its states in memory until
 * LIVE_FLUSH_NS after the last write, or until a quieter turn (the next
 * one that finds nothing new, at the latest).  Each write of a state
 * copies its LMDB page, so writing once per turn at 100,000 keys costs a
 * page per event; queries see the last write, as the progress does. */
#define LIVE_BUSY 256
#define LIVE_FLUSH_NS 2000000000ll
/* A live projection under load (a turn of LIVE_BUSY of its events in the
 * last HOT_NS) goes to the build's helper threads, beside ingest, once
 * PAR_MIN_EVENTS events wait for it; it waits up to LIVE_WAIT_NS for them
 * before it runs in the turn again. */
#define HOT_NS 1000000000ll
#define LIVE_WAIT_NS 50000000ll
/* The helpers follow the log until they have caught up with it and
 * nothing new came for this long. */
#define LIVE_IDLE_NS 100000000ll
/* Keys of stale generations deleted per turn. */
#define GC_PER_TURN 20000
/* Check the turn's clock every so many events. */
#define CLOCK_EVERY 16
/* A build shares its work among threads (pbuild.h) when at least this many
 * events are left; the engine looks at their progress this often. */
#define PAR_MIN_EVENTS 1000
#define PAR_POLL_NS 10000000ll
/* How long the helpers may take to pause for the map to grow. */
#define PAUSE_WAIT_MS 2000

typedef struct handler {
	char *pattern;
	size_t plen;
	int ref;
} handler;

typedef struct proj {
	char *name;
	char *where;
	uint64_t hash; /* of the definition: version and script file */
	int64_t version;
	int key_ref, filter_ref, init_ref;
	int parallel;   /* spec.parallel: its builds may be shared among threads */
	char *key_path; /* key = "data.account": found in C, no Lua call */
	int key_attr;   /* its attribute (TIDEI_A_*), TIDEI_NATTR for data, -1 for an extension */
	handler *h;     /* exact types first, then prefixes longest first, then "*" */
	size_t nh;
	tidei_proj_meta meta;
	int meta_changed;  /* by load(): a new definition starts a build */
	tidei_keymap keys; /* keys whose states are in the cache, each with a slot */
	uint8_t *dirty;    /* per slot: changed since the last write */
	size_t dirty_cap;
	size_t ndirty;       /* slots with dirty set */
	int cache_ref;       /* Lua table: slot + 1 -> that key's state */
	uint64_t done;       /* a rebuild's progress in memory, ahead of meta.build_seq */
	int64_t flushed_at;  /* when the states were last written */
	tidei_buf out;       /* encoded states, between encoding and writing */
	MDB_txn *txn;        /* where stored states are read */
	tidei_pbuild *par;   /* the build's helpers, while they run */
	uint64_t par_commit; /* a checkpoint of theirs, written in this turn */
	int par_off;         /* the helpers stopped: this build goes on alone */
	int64_t hot_at;      /* live: when a turn last had LIVE_BUSY of its events */
	int64_t wait_since;  /* live: waiting for events enough for the helpers since */
	/* the event being applied */
	const struct tide_event *ev;
	int handler_ref;
	const char *key; /* its key, when found beforehand (build helpers) */
	size_t klen;
	struct {
		MDB_cursor *cur;
		uint64_t seq, done;    /* the event being applied; the last one applied */
		uint64_t until;        /* the last event to apply */
		const tidei_keyed *kd; /* a build helper's keys of these events */
		tidei_buf *kbuf;       /* where a helper puts the keys it finds */
		size_t handled, seen, budget;
		int64_t deadline;
		int rebuilding;
		int mrc;     /* the cursor's last status */
		int corrupt; /* the event at seq cannot be decoded */
	} run;
	tidei_histo took; /* live handler calls (not a rebuild's), for the metrics */
	tidei_log *log;
	struct tidei_projections *ps;
} proj;

struct tidei_projections {
	proj *v;
	size_t n, cap;
	tidei_projections_opts o;
	tidei_pbuild_env *build; /* how helpers load the scripts; NULL: no helpers */
	unsigned part, nparts;   /* in a helper: its part of the keys */
	const atomic_int *stop;  /* in a helper: set when it must stop */
	tidei_flight *flight;    /* the engine's flight recorder (not in helpers) */
	int64_t poll_at;         /* a turn is wanted then (helpers running), or -1 */
	char err[TIDEI_ERRLEN];
};

#define LOG(ps, level, ...) \
	do { \
		if ((ps)->o.log) \
			(ps)->o.log((ps)->o.log_ud, level, __VA_ARGS__); \
	} while (0)

static lua_State *
state_of(tidei_projections *ps)
{
	return tidei_script_state(ps->o.script);
}

/* ------------------------------------------------------------------------
 * Keys and progress records
 * ------------------------------------------------------------------------ */

static int
meta_put(tidei_log *log, const char *name, const tidei_proj_meta *m)
{
	int rc = tidei_proj_meta_put(log->txn, log->projections, name, m);

	return rc ? tidei_err(log->err, tidei_err_mdb(rc), "cannot record projection %s: %s", name,
			      mdb_strerror(rc))
		  : TIDE_OK;
}

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

/* The key of @p ev by p->key_path: 1 (in *k, *n; numbers are formatted
 * into @p num), 0 when the event has no such field (or null), -1 when the
 * field is not a string or a number (*k is then the type's name). */
static int
key_by_path(const proj *p, const struct tide_event *ev, const char **k, size_t *n, char *num)
{
	tidei_vreader r;
	tidei_vitem it;
	const char *seg = p->key_path;

	if (p->key_attr >= 0 && p->key_attr < TIDEI_NATTR) {
		*k = ev->attr[p->key_attr];
		*n = ev->len[p->key_attr];
		return *k != NULL;
	}
	if (p->key_attr == TIDEI_NATTR) {
		r.p = ev->data;
		r.end = ev->data + ev->data_len;
		seg += 5;
	} else {
		r.p = ev->ext;
		r.end = ev->ext + ev->ext_len;
	}
	if (r.p == NULL)
		return 0;
	for (;;) {
		const char *dot = strchr(seg, '.');
		size_t sl = dot ? (size_t)(dot - seg) : strlen(seg);
		if (!tidei_val_find(&r, seg, sl))
			return 0;
		if (dot == NULL)
			break;
		seg = dot + 1;
	}
	if (tidei_val_next(&r, &it) != 0)
		return 0;
	switch (it.type) {
	case TIDEI_V_STR:
		*k = it.u.s.p;
		*n = it.u.s.n;
		return 1;
	case TIDEI_V_INT:
		*n = (size_t)snprintf(num, 32, "%lld", (long long)it.u.i);
		*k = num;
		return 1;
	case TIDEI_V_DOUBLE:
		*n = (size_t)snprintf(num, 32, "%.14g", it.u.d);
		*k = num;
		return 1;
	case TIDEI_V_NIL: return 0;
	case TIDEI_V_FALSE:
	case TIDEI_V_TRUE: *k = "boolean"; return -1;
	case TIDEI_V_ARRAY: *k = "array"; return -1;
	case TIDEI_V_MAP: *k = "object"; return -1;
	default: *k = "binary value"; return -1;
	}
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

int64_t
tidei_projections_next_poll(const tidei_projections *ps)
{
	return ps->poll_at; /* helpers running, or a live projection waiting for them */
}

/* Stop a build's helpers; what they did since their last checkpoint is
 * done again (alone, or by new helpers). */
static void
stop_helpers(proj *p)
{
	int had = p->par != NULL;

	tidei_pbuild_destroy(p->par); /* joins them: a stuck one keeps the mark */
	if (had && p->ps != NULL)
		tidei_flight_build(p->ps->flight, NULL);
	p->par = NULL;
	p->par_commit = 0;
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
	stop_helpers(p);
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

static void
new_cache(tidei_projections *ps, proj *p)
{
	lua_State *L = state_of(ps);

	luaL_unref(L, LUA_REGISTRYINDEX, p->cache_ref);
	lua_createtable(L, (int)(p->keys.n < CACHE_MAX ? p->keys.n : CACHE_MAX), 0);
	p->cache_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	tidei_keymap_clear(&p->keys);
	if (p->dirty != NULL)
		memset(p->dirty, 0, p->ndirty ? p->dirty_cap : 0);
	p->ndirty = 0;
	p->done = 0; /* progress held only in the cache goes with it */
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
			rc = meta_put(log, ps->v[k].name, &ps->v[k].meta);
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

void
tidei_projections_pause(tidei_projections *ps)
{
	for (size_t k = 0; ps != NULL && k < ps->n; k++) {
		proj *p = &ps->v[k];
		/* one stuck in a handler is stopped (it will be redone) */
		if (p->par != NULL && tidei_pbuild_pause(p->par, PAUSE_WAIT_MS) != 0)
			stop_helpers(p);
	}
}

void
tidei_projections_unpause(tidei_projections *ps)
{
	for (size_t k = 0; ps != NULL && k < ps->n; k++)
		if (ps->v[k].par != NULL)
			tidei_pbuild_unpause(ps->v[k].par);
}

void
tidei_projections_stop(tidei_projections *ps)
{
	for (size_t k = 0; ps != NULL && k < ps->n; k++)
		stop_helpers(&ps->v[k]);
}

int
tidei_projections_reload(tidei_projections *ps, tidei_log *log)
{
	MDB_txn *txn;
	int rc;

	for (size_t k = 0; k < ps->n; k++) {
		stop_helpers(&ps->v[k]);
		new_cache(ps, &ps->v[k]);
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
		new_cache(ps, p);
		LOG(ps, TIDE_LOG_INFO, "projection '%s': rebuild requested", p->name);
		return meta_put(log, p->name, &p->meta);
	}
	return TIDE_ENOTFOUND;
}

/* ------------------------------------------------------------------------
 * Applying events
 * ------------------------------------------------------------------------ */

/* The handler for @p type, or LUA_NOREF. */
static int
match(const proj *p, const char *type, size_t tlen)
{
	for (size_t k = 0; k < p->nh; k++)
		if (tidei_pattern_match(p->h[k].pattern, p->h[k].plen, type, tlen))
			return p->h[k].ref;
	return LUA_NOREF;
}

/* Push @p k for an error message: keys may be of any length, so a long
 * one is cut after about 100 bytes (whole UTF-8 characters).  [-0, +1, m] */
static const char *
push_key_quote(lua_State *L, const char *k, size_t klen)
{
	size_t n = 100;

	if (klen <= n)
		return lua_pushlstring(L, k, klen);
	while (n > 0 && ((unsigned char)k[n] & 0xc0) == 0x80)
		n--;
	lua_pushlstring(L, k, n);
	lua_pushliteral(L, "...");
	lua_concat(L, 2);
	return lua_tostring(L, -1);
}

/* Push the stored state of key @p k, or nil. */
static void
push_stored(lua_State *L, tidei_projections *ps, proj *p, const char *k, size_t klen)
{
	MDB_val v;
	tidei_vreader r;
	int mrc;

	if (ps->o.memory_only || p->meta.build == 0) {
		lua_pushnil(L);
		return;
	}
	mrc = tidei_pstate_get(p->txn, p->log->state, p->name, p->meta.build, k, klen,
			       TIDEI_LOG_FORMAT, &v);
	if (mrc == MDB_CORRUPTED)
		luaL_error(L, "stored state of key '%s' is corrupt", push_key_quote(L, k, klen));
	if (mrc != 0) {
		lua_pushnil(L);
		return;
	}
	r.p = v.mv_data;
	r.end = r.p + v.mv_size;
	if (tidei_lua_push_val(L, &r) != 0)
		luaL_error(L, "stored state of key '%s' is corrupt", push_key_quote(L, k, klen));
}

/* The key of p->ev after its filter: 1 with the key in *@p k, *@p klen
 * (bytes of the event, or a string on the Lua stack), 0 when the event is
 * not for this projection.  The event is pushed when a function needs it
 * and *@p evi is 0 (*@p evi is then its index).  [-0, +(0..3), e] */
static int
event_key(lua_State *L, proj *p, int *evi, const char **k, size_t *klen)
{
	const struct tide_event *ev = p->ev;

	*k = NULL;
	*klen = 0;
	if (*evi == 0 && (p->filter_ref != LUA_NOREF || p->key_ref != LUA_NOREF)) {
		tidei_lua_push_event(L, ev);
		*evi = lua_gettop(L);
	}
	if (p->filter_ref != LUA_NOREF) {
		lua_rawgeti(L, LUA_REGISTRYINDEX, p->filter_ref);
		lua_pushvalue(L, *evi);
		lua_call(L, 1, 1);
		if (!lua_toboolean(L, -1))
			return 0;
		lua_pop(L, 1);
	}
	/* the key, as bytes: no Lua string unless the key function made one */
	if (p->key_path != NULL) {
		char num[32];
		int found = key_by_path(p, ev, k, klen, num);
		if (found < 0)
			luaL_error(L, "key '%s' is %s %s, not a string or a number", p->key_path,
				   (*k)[0] == 'a' || (*k)[0] == 'o' ? "an" : "a", *k);
		if (found && *k == num)
			*k = lua_pushlstring(L, num, *klen); /* anchored on the stack */
		else if (!found)
			*k = NULL;
	} else if (p->key_ref != LUA_NOREF) {
		lua_rawgeti(L, LUA_REGISTRYINDEX, p->key_ref);
		lua_pushvalue(L, *evi);
		lua_call(L, 1, 1);
		if (lua_type(L, -1) == LUA_TNUMBER)
			lua_tolstring(L, -1, NULL); /* the key is its decimal form */
		if (lua_type(L, -1) == LUA_TSTRING)
			*k = lua_tolstring(L, -1, klen);
		else if (!lua_isnil(L, -1))
			luaL_error(L, "key must return a string or a number, not a %s",
				   luaL_typename(L, -1));
	} else if (ev->attr[TIDEI_A_SUBJECT] != NULL) {
		*k = ev->attr[TIDEI_A_SUBJECT];
		*klen = ev->len[TIDEI_A_SUBJECT];
	}
	if (*k == NULL) /* no key: the event is not for this projection */
		return 0;
	/* any length: keys too long for LMDB are stored by hash (pstate.h) */
	if (*klen == 0)
		luaL_error(L, "key must not be empty");
	if (*klen > TIDEI_PSTATE_KEY_MAX)
		luaL_error(L, "key of %I bytes is too long (at most %I)", (lua_Integer)*klen,
			   (lua_Integer)TIDEI_PSTATE_KEY_MAX);
	return 1;
}

/* Slot @p slot is to be written.  0, or -1 when out of memory. */
static int
mark_dirty(proj *p, size_t slot)
{
	if (slot >= p->dirty_cap) {
		size_t cap = p->dirty_cap ? p->dirty_cap : 1024;
		uint8_t *v;
		while (cap <= slot)
			cap *= 2;
		if ((v = realloc(p->dirty, cap)) == NULL)
			return -1;
		memset(v + p->dirty_cap, 0, cap - p->dirty_cap);
		p->dirty = v;
		p->dirty_cap = cap;
	}
	if (!p->dirty[slot]) {
		p->dirty[slot] = 1;
		p->ndirty++;
	}
	return 0;
}

/* Apply p->ev with the handler p->handler_ref, under the key p->key if
 * set (a build helper's, found beforehand).  [-0, +(0..4), e] */
static void
apply(lua_State *L, proj *p)
{
	tidei_projections *ps = p->ps;
	const struct tide_event *ev = p->ev;
	const char *k = p->key;
	size_t klen = p->klen;
	long slot;
	int evi, fresh, si;

	tidei_lua_push_event(L, ev);
	evi = lua_gettop(L);
	if (k == NULL && !event_key(L, p, &evi, &k, &klen)) {
		tidei_lua_expire_event(L, evi);
		return;
	}
	/* state: in the cache, stored, or new */
	if ((slot = tidei_keymap_put(&p->keys, k, klen, &fresh)) < 0 ||
	    mark_dirty(p, (size_t)slot) != 0)
		luaL_error(L, "not enough memory for the projection's keys");
	lua_rawgeti(L, LUA_REGISTRYINDEX, p->cache_ref);
	if (fresh)
		push_stored(L, ps, p, k, klen);
	else if (lua_rawgeti(L, -1, slot + 1) != LUA_TTABLE) { /* deleted since the write */
		lua_pop(L, 1);
		lua_pushnil(L);
	}
	si = lua_gettop(L);
	if (lua_isnil(L, si)) {
		lua_pop(L, 1);
		if (p->init_ref != LUA_NOREF) {
			lua_rawgeti(L, LUA_REGISTRYINDEX, p->init_ref);
			lua_pushlstring(L, k, klen);
			lua_call(L, 1, 1);
			if (!lua_istable(L, -1))
				luaL_error(L, "init must return a table, not a %s",
					   luaL_typename(L, -1));
		} else {
			lua_newtable(L);
		}
		fresh = 1;
	}
	/* stack: ev [key] states state */
	lua_rawgeti(L, LUA_REGISTRYINDEX, p->handler_ref);
	lua_pushvalue(L, si);
	lua_pushvalue(L, evi);
	lua_call(L, 2, 1);
	if (lua_isnil(L, -1)) {
		lua_pop(L, 1); /* changed in place */
	} else {
		if (!lua_istable(L, -1) && lua_touserdata(L, -1) != &tidei_delete_marker)
			luaL_error(
				L,
				"a handler must return a table, tide.delete or nothing, not a %s",
				luaL_typename(L, -1));
		fresh |= !lua_rawequal(L, -1, si); /* a new state */
		lua_replace(L, si);
	}
	if (fresh)
		lua_rawseti(L, si - 1, slot + 1); /* states[slot] = state */
	tidei_lua_expire_event(L, evi);
}

/* One event, under protection: [-1, +0, e] with the proj as light userdata */
static int
l_apply(lua_State *L)
{
	apply(L, lua_touserdata(L, 1));
	return 0;
}

/* A build helper told to stop (looked at between events). */
static int
stopping(const tidei_projections *ps)
{
	return ps->stop != NULL && atomic_load_explicit(ps->stop, memory_order_relaxed);
}

/* l_run and l_keys at the cursor's event (key @p k): its seq into
 * p->run.seq; 0 to go on, -1 past p->run.until or when told to stop. */
static int
run_at(proj *p, const MDB_val *k)
{
	memcpy(&p->run.seq, k->mv_data, 8);
	return p->run.seq > p->run.until || stopping(p->ps) ? -1 : 0;
}

/* Decode the event at the cursor (record @p v): 0, or -1 when it is
 * corrupt (p->run.corrupt is then set). */
static int
run_decode(proj *p, const MDB_val *v, struct tide_event *ev)
{
	if (tidei_event_decode(ev, v->mv_data, v->mv_size) != 0) {
		p->run.corrupt = 1;
		return -1;
	}
	ev->seq = p->run.seq;
	ev->scratch = NULL;
	return 0;
}

/* The events of a turn from p->run.seq on, under one protection: a
 * failing event ends it with p->run.seq at that event and p->run.done at
 * the one before.  [-1, +0, e] */
static int
l_run(lua_State *L)
{
	proj *p = lua_touserdata(L, 1);
	tidei_projections *ps = p->ps;
	MDB_val k = { 8, &p->run.seq }, v;
	int top = lua_gettop(L), mrc;

	for (mrc = mdb_cursor_get(p->run.cur, &k, &v, MDB_SET_RANGE); mrc == 0;
	     mrc = mdb_cursor_get(p->run.cur, &k, &v, MDB_NEXT)) {
		struct tide_event ev;
		const tidei_keyed_ev *ke = NULL;
		if (run_at(p, &k) != 0)
			break;
		if (p->run.kd != NULL) { /* a helper: only its events, by their keys */
			ke = tidei_keyed_at(p->run.kd, p->run.seq);
			if (ke->part != (int)ps->part) {
				p->run.done = p->run.seq;
				continue;
			}
		}
		if (run_decode(p, &v, &ev) != 0)
			break;
		p->handler_ref = match(p, ev.attr[TIDEI_A_TYPE], ev.len[TIDEI_A_TYPE]);
		if (p->handler_ref != LUA_NOREF) {
			char why[TIDEI_ERRLEN];
			p->ev = &ev;
			if (ke != NULL) {
				p->key = (const char *)p->run.kd->keys[ke->who].p + ke->off;
				p->klen = ke->len;
			}
			if (tidei_flight_verdict(ps->flight, TIDEI_FLIGHT_PROJECTION, p->name, &ev,
						 why))
				luaL_error(L, "%s", why); /* it stops here */
			tidei_script_rearm(ps->o.script);
			tidei_flight_enter(ps->flight, TIDEI_FLIGHT_PROJECTION, p->name, &ev);
			if (p->run.rebuilding) {
				apply(L, p);
			} else {
				int64_t t0 = tidei_mono();
				apply(L, p);
				tidei_histo_add(&p->took, &tidei_histo_handler, tidei_mono() - t0);
			}
			tidei_flight_leave(ps->flight);
			lua_settop(L, top);
			p->ev = NULL;
			p->key = NULL;
			p->run.handled++;
		}
		p->run.done = p->run.seq;
		if (!p->run.rebuilding && p->ndirty >= CACHE_MAX)
			break; /* the rest next turn, after this turn's states are written */
		if ((!p->run.rebuilding && p->run.handled >= p->run.budget) ||
		    (++p->run.seen % CLOCK_EVERY == 0 && tidei_now() >= p->run.deadline))
			break;
	}
	p->run.mrc = mrc;
	return 0;
}

/* A build helper's share of finding the keys: the events from p->run.seq
 * to p->run.until, each with the helper that applies it and its key (in
 * p->run.kbuf).  [-1, +0, e] */
static int
l_keys(lua_State *L)
{
	proj *p = lua_touserdata(L, 1);
	tidei_projections *ps = p->ps;
	MDB_val k = { 8, &p->run.seq }, v;
	int top = lua_gettop(L), mrc;

	for (mrc = mdb_cursor_get(p->run.cur, &k, &v, MDB_SET_RANGE); mrc == 0;
	     mrc = mdb_cursor_get(p->run.cur, &k, &v, MDB_NEXT)) {
		struct tide_event ev;
		tidei_keyed_ev *ke;
		if (run_at(p, &k) != 0 || run_decode(p, &v, &ev) != 0)
			break;
		ke = tidei_keyed_at(p->run.kd, p->run.seq);
		if (match(p, ev.attr[TIDEI_A_TYPE], ev.len[TIDEI_A_TYPE]) != LUA_NOREF) {
			const char *key;
			size_t klen;
			int evi = 0;
			p->ev = &ev;
			tidei_script_rearm(ps->o.script);
			if (event_key(L, p, &evi, &key, &klen)) {
				ke->part =
					(int8_t)(tidei_fnv(key, klen, TIDEI_FNV_SEED) % ps->nparts);
				ke->who = (uint8_t)ps->part;
				if (p->run.kbuf->len > UINT32_MAX - klen)
					return luaL_error(L, "not enough memory for the keys");
				ke->off = (uint32_t)p->run.kbuf->len;
				ke->len = (uint32_t)klen;
				tidei_buf_put(p->run.kbuf, key, klen);
			}
			if (evi != 0)
				tidei_lua_expire_event(L, evi);
			lua_settop(L, top);
			p->ev = NULL;
		}
		p->run.done = p->run.seq;
	}
	p->run.mrc = mrc;
	if (p->run.kbuf->failed)
		return luaL_error(L, "not enough memory for the keys");
	return 0;
}

/* Encode every cached state into p->out, under protection (encoding
 * may fail): records of u32 key length, key, u32 value length (or
 * UINT32_MAX for a deleted key), value. */
static int
l_encode(lua_State *L)
{
	proj *p = lua_touserdata(L, 1);
	char err[TIDEI_ERRLEN];
	uint8_t len[4];

	tidei_buf_reset(&p->out);
	/* encoded, states take less room than in Lua; a state that refers to
	 * one table many times stops at the scripts' ceiling (and with it
	 * the time it takes) */
	p->out.limit = tidei_lstate_ceiling(tidei_lstate_of(L));
	lua_rawgeti(L, LUA_REGISTRYINDEX, p->cache_ref);
	for (size_t slot = 0; slot < p->keys.n; slot++) {
		size_t klen, at;
		const char *k = tidei_keymap_key(&p->keys, slot, &klen);
		if (slot >= p->dirty_cap || !p->dirty[slot])
			continue; /* as written */
		if (lua_rawgeti(L, -1, (lua_Integer)slot + 1) == LUA_TNIL) {
			lua_pop(L, 1); /* its first event failed: nothing to write */
			continue;
		}
		tidei_st32(len, (uint32_t)klen);
		tidei_buf_put(&p->out, len, 4);
		tidei_buf_put(&p->out, k, klen);
		at = p->out.len;
		tidei_buf_put(&p->out, len, 4); /* patched below */
		if (lua_touserdata(L, -1) == &tidei_delete_marker) {
			if (!p->out.failed)
				tidei_st32(p->out.p + at, UINT32_MAX);
		} else {
			/* each state has the budget of a handler call: a state
			 * that refers to one table many times can take far
			 * longer to walk than its size suggests */
			tidei_lstate_arm(tidei_lstate_of(L));
			if (tidei_lua_to_val_charged(L, -1, &p->out, err) != 0)
				return luaL_error(L, "state of key '%s' cannot be stored: %s",
						  push_key_quote(L, k, klen), err);
			if (!p->out.failed)
				tidei_st32(p->out.p + at, (uint32_t)(p->out.len - at - 4));
		}
		lua_pop(L, 1);
	}
	if (p->out.failed)
		return luaL_error(L, "not enough memory to store the states");
	return 0;
}

/* Write encoded states (@p nout buffers of l_encode's records, with no
 * key twice) to the generation being built. */
static int
write_states(proj *p, const tidei_buf *const *out, size_t nout, char *err)
{
	return tidei_pstate_write(p->log->txn, p->log->state, p->name, p->meta.build,
				  TIDEI_LOG_FORMAT, out, nout, err);
}

/* Whether a live projection keeps its states decoded after writing them:
 * while they are not too many and the scripts' state has room.  A build
 * writes and forgets (its keys pass once), unless it is in a helper: no
 * one else writes its keys until it stops. */
static int
keep_cache(tidei_projections *ps, const proj *p)
{
	tidei_lstate *ls = tidei_script_lstate(ps->o.script);

	return (p->meta.build == p->meta.live || ps->nparts > 0) && p->keys.n <= KEEP_MAX &&
	       tidei_lstate_room(ls) > tidei_lstate_ceiling(ls) / 2;
}

/* Write the cached states.  TIDE_ESCRIPT: a state could not be encoded
 * (nothing was written); otherwise an LMDB failure ends the turn. */
static int
flush(tidei_projections *ps, proj *p, char *err)
{
	char why[TIDEI_ERRLEN];
	int rc;

	if (p->ndirty == 0) {
		if (!keep_cache(ps, p))
			new_cache(ps, p);
		return TIDE_OK;
	}
	rc = tidei_script_protect(ps->o.script, l_encode, p, why, NULL);
	if (rc != TIDE_OK) {
		new_cache(ps, p);
		tidei_buf_reset(&p->out);
		return tidei_err(err, TIDE_ESCRIPT, "%s", why);
	}
	if (keep_cache(ps, p)) {
		/* the states stay decoded for the next events of their keys;
		 * what was written is clean */
		memset(p->dirty, 0, p->keys.n < p->dirty_cap ? p->keys.n : p->dirty_cap);
		p->ndirty = 0;
	} else {
		new_cache(ps, p);
	}
	{
		const tidei_buf *out = &p->out;
		rc = write_states(p, &out, 1, err);
	}
	tidei_buf_reset(&p->out);
	return rc;
}

static void
fault(tidei_projections *ps, proj *p, uint64_t seq, const char *why)
{
	size_t n = strlen(why);

	p->meta.faulted = 1;
	p->meta.fault_seq = seq;
	if (n > 250) /* cut whole UTF-8 characters: the error is shown as JSON */
		for (n = 250; n > 0 && ((unsigned char)why[n] & 0xc0) == 0x80; n--)
			;
	snprintf(p->meta.error, sizeof p->meta.error, "%.*s", (int)n, why);
	LOG(ps, TIDE_LOG_ERROR,
	    "projection '%s' stopped at event %llu: %s (fix the script to rebuild it, or "
	    "tide projection rebuild %s)",
	    p->name, (unsigned long long)seq, why, p->name);
}

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

/* ------------------------------------------------------------------------
 * Builds shared with helper threads (pbuild.h)
 * ------------------------------------------------------------------------ */

#define PAR_MAX_THREADS 16

static void
poll_soon(tidei_projections *ps, int64_t now)
{
	if (ps->poll_at < 0 || now + PAR_POLL_NS < ps->poll_at)
		ps->poll_at = now + PAR_POLL_NS;
}

static void
relay_log(void *ud, int level, const char *msg)
{
	LOG((tidei_projections *)ud, level, "%s", msg);
}

static void
log_progress(tidei_projections *ps, const proj *p, uint64_t done, uint64_t head)
{
	LOG(ps, TIDE_LOG_INFO, "projection '%s': building, %llu of %llu events (%.0f%%)", p->name,
	    (unsigned long long)done, (unsigned long long)head,
	    100.0 * (double)done / (double)head);
}

/* Whether the projection may go to the helpers now. */
static int
can_share(const tidei_projections *ps, const proj *p)
{
	if (ps->build == NULL || !p->parallel || p->par_off || p->meta.faulted)
		return 0;
	/* one shared build at a time: the threads are as many as the CPUs */
	for (size_t k = 0; k < ps->n; k++)
		if (ps->v[k].par != NULL)
			return 0;
	return 1;
}

/* Start the helpers when a build has enough events ahead. */
static void
start_helpers(tidei_projections *ps, proj *p, tidei_log *log)
{
	tidei_pbuild_opts o;
	char why[TIDEI_ERRLEN];
	uint64_t from = p->meta.build_seq;

	if (!can_share(ps, p) || p->keys.n > 0 || p->done > from ||
	    log->committed < from + PAR_MIN_EVENTS)
		return;
	memset(&o, 0, sizeof o);
	o.env = ps->build;
	o.log = log;
	o.name = p->name;
	o.hash = p->hash;
	o.gen = p->meta.build;
	o.after = from;
	o.until = log->committed; /* what their own transactions can see */
	o.follow = p->meta.build == p->meta.live;
	o.threads = ps->build->threads < PAR_MAX_THREADS ? ps->build->threads : PAR_MAX_THREADS;
	if (tidei_pbuild_start(&p->par, &o, why) != TIDE_OK) {
		LOG(ps, TIDE_LOG_WARN, "projection '%s': %s; the build goes on in one thread",
		    p->name, why);
		p->par_off = 1;
		return;
	}
	tidei_flight_build(ps->flight, p->name);
	LOG(ps, p->meta.build == p->meta.live ? TIDE_LOG_DEBUG : TIDE_LOG_INFO,
	    "projection '%s': %s events %llu to %llu on %u threads", p->name,
	    p->meta.build == p->meta.live ? "catching up with" : "building",
	    (unsigned long long)from + 1, (unsigned long long)o.until, o.threads);
}

/* A build shared with helpers: start them, write their checkpoints, or
 * see that they stopped.  *@p busy while they have the build. */
static int
helpers(tidei_projections *ps, proj *p, tidei_log *log, int64_t now, int *more, int *busy,
	char *err)
{
	const tidei_buf *out[PAR_MAX_THREADS];
	uint64_t seq, at;
	unsigned n;
	int r, rc;

	*busy = 0;
	if (p->par == NULL) {
		start_helpers(ps, p, log);
		if (p->par != NULL) {
			*busy = 1;
			poll_soon(ps, now);
		}
		return TIDE_OK;
	}
	if (tidei_pbuild_drain_log(p->par, relay_log, ps) > 0)
		LOG(ps, TIDE_LOG_WARN,
		    "projection '%s': some lines its handlers printed were dropped", p->name);
	if (p->par_commit != 0) { /* the last checkpoint has committed */
		tidei_pbuild_resume(p->par, p->par_commit);
		p->par_commit = 0;
	}
	r = tidei_pbuild_poll(p->par, &seq);
	if (r < 0) {
		const char *why = tidei_pbuild_error(p->par, &at);
		LOG(ps, TIDE_LOG_INFO,
		    "projection '%s': the build's threads stopped (%s); it goes on from event "
		    "%llu in one thread",
		    p->name, why, (unsigned long long)p->meta.build_seq + 1);
		stop_helpers(p);
		p->par_off = 1;
		return TIDE_OK;
	}
	if (r == 0) {
		int64_t every = p->meta.build == p->meta.live ? LIVE_FLUSH_NS : REBUILD_FLUSH_NS;
		if (now - p->flushed_at >= every || tidei_pbuild_held(p->par) >= REBUILD_KEYS)
			tidei_pbuild_checkpoint(p->par);
		*busy = 1;
		poll_soon(ps, now);
		return TIDE_OK;
	}
	/* a checkpoint: every helper's states and the progress, in one commit */
	n = tidei_pbuild_parts(p->par);
	for (unsigned k = 0; k < n; k++)
		out[k] = tidei_pbuild_states(p->par, k);
	LOG(ps, TIDE_LOG_DEBUG, "projection '%s': writing the states of its threads at event %llu",
	    p->name, (unsigned long long)seq);
	rc = write_states(p, out, n, err);
	tidei_pbuild_release(p->par);
	if (rc != TIDE_OK)
		return rc; /* the turn is undone, and the helpers stopped */
	p->meta.build_seq = seq;
	if (p->meta.build == p->meta.live)
		p->meta.live_seq = seq;
	p->flushed_at = now;
	if (meta_put(log, p->name, &p->meta) != TIDE_OK)
		return tidei_err(err, TIDE_EIO, "%s", log->err);
	if (tidei_pbuild_final(p->par) && seq >= tidei_pbuild_until(p->par)) {
		/* done: the rest (events since) alone */
		stop_helpers(p);
		return TIDE_OK;
	}
	if (p->meta.build != p->meta.live)
		log_progress(ps, p, seq, log->head);
	p->par_commit = seq;
	*busy = 1;
	*more = 1; /* a turn soon: it lets the helpers go on after this one commits */
	return TIDE_OK;
}

/*
 * A live projection under load runs on the build's helpers, beside
 * ingest, rather than in the turn: once PAR_MIN_EVENTS events are
 * committed after its progress, the states it holds are written, and in
 * the next turn (their own transactions see them once it has committed)
 * the helpers start.  They follow the log as it grows, and their states
 * are written every LIVE_FLUSH_NS, until they have caught up and nothing
 * new came for LIVE_IDLE_NS.  Queries and consumers read the last states
 * written, as they do under load anyway.  *@p busy while the helpers have
 * it, or while it waits for events enough.
 */
static int
live_helpers(tidei_projections *ps, proj *p, tidei_log *log, int64_t now, int *more, int *busy,
	     char *err)
{
	uint64_t done;
	int rc;

	*busy = 0;
	if (p->par != NULL) {
		if (!tidei_pbuild_final(p->par)) {
			tidei_pbuild_extend(p->par, log->committed);
			/* caught up, and nothing new for a while: they end there */
			if (log->head > log->committed || tidei_pbuild_pos(p->par) < log->committed)
				p->wait_since = 0;
			else if (p->wait_since == 0)
				p->wait_since = now;
			else if (now - p->wait_since >= LIVE_IDLE_NS)
				tidei_pbuild_finish(p->par);
		}
		return helpers(ps, p, log, now, more, busy, err);
	}
	if (p->hot_at == 0 || now - p->hot_at > HOT_NS || !can_share(ps, p)) {
		p->wait_since = 0;
		return TIDE_OK;
	}
	done = p->done > p->meta.build_seq ? p->done : p->meta.build_seq;
	if (log->committed < done + PAR_MIN_EVENTS) {
		/* a few more events may make it worth it; not for long */
		if (p->wait_since == 0)
			p->wait_since = now;
		if (now - p->wait_since >= LIVE_WAIT_NS || done >= log->head) {
			p->wait_since = 0;
			return TIDE_OK;
		}
		*busy = 1;
		poll_soon(ps, now);
		return TIDE_OK;
	}
	p->wait_since = 0;
	if (p->keys.n > 0 || p->done > p->meta.build_seq) {
		/* the helpers read states from the log: write what is held */
		if ((rc = flush(ps, p, err)) != TIDE_OK) {
			if (rc != TIDE_ESCRIPT)
				return rc;
			fault(ps, p, done, err);
			return TIDE_OK;
		}
		new_cache(ps, p);
		p->meta.build_seq = p->meta.live_seq = done;
		p->flushed_at = now;
		*busy = 1;
		*more = 1;
		return TIDE_OK;
	}
	return helpers(ps, p, log, now, more, busy, err);
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
	if ((rc = rebuilding ? helpers(ps, p, log, now, more, &busy, err)
			     : live_helpers(ps, p, log, now, more, &busy, err)) != TIDE_OK)
		return rc;
	if (busy) /* the helpers have the build */
		return memcmp(&before, &p->meta, sizeof before) == 0 ||
				       meta_put(log, p->name, &p->meta) == TIDE_OK
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
	rc = tidei_script_protect(ps->o.script, l_run, p, why, trace);
	tidei_flight_leave(ps->flight); /* a failing handler did not get to it */
	p->ev = NULL;
	mdb_cursor_close(p->run.cur);
	p->run.cur = NULL;
	done = p->run.done;
	handled = p->run.handled;
	if (rc != TIDE_OK) {
		/* stop before this event; what came before is kept */
		fault(ps, p, p->run.seq, why);
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
		    meta_put(log, p->name, &p->meta) != TIDE_OK)
			return tidei_err(err, TIDE_EIO, "%s", log->err);
		return TIDE_OK;
	}
	if (!rebuilding && !p->meta.faulted && handled >= LIVE_BUSY && p->ndirty < CACHE_MAX &&
	    now - p->flushed_at < LIVE_FLUSH_NS) {
		*more = 1; /* a turn soon, to write them if nothing else comes */
		return TIDE_OK;
	}
	if ((rc = flush(ps, p, err)) != TIDE_OK) {
		if (rc != TIDE_ESCRIPT)
			return rc;
		/* a state that cannot be stored: what the handlers built since
		 * the last write is dropped, the progress stays where it was */
		fault(ps, p, done, err);
		done = p->meta.build_seq;
	}
	p->meta.build_seq = done;
	p->done = 0;
	p->flushed_at = now;
	if (rebuilding && !p->meta.faulted && done < log->head)
		log_progress(ps, p, done, log->head);
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
	return meta_put(log, p->name, &p->meta) == TIDE_OK
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
 * Inside a build helper (pbuild.c): one projection, a part of its keys
 * ------------------------------------------------------------------------ */

void
tidei_projections_part(tidei_projections *ps, unsigned part, unsigned nparts,
		       const atomic_int *stop)
{
	ps->part = part;
	ps->nparts = nparts;
	ps->stop = stop;
}

/* Run @p fn (l_run or l_keys) over the events @p from to @p until in a
 * build helper. */
static int
helper_pass(tidei_projections *ps, lua_CFunction fn, tidei_log *log, MDB_txn *txn, uint64_t from,
	    uint64_t until, uint64_t *at, char *err)
{
	proj *p = &ps->v[0];
	char why[TIDEI_ERRLEN];
	int rc, mrc;

	*at = 0;
	p->log = log;
	p->ps = ps;
	p->txn = txn;
	if ((mrc = mdb_cursor_open(txn, log->events, &p->run.cur)) != 0)
		return tidei_err(err, tidei_err_mdb(mrc), "cannot read the log: %s",
				 mdb_strerror(mrc));
	p->run.seq = from;
	p->run.done = from - 1;
	p->run.until = until;
	p->run.handled = p->run.seen = 0;
	p->run.budget = SIZE_MAX;
	p->run.deadline = INT64_MAX;
	p->run.rebuilding = 1;
	p->run.mrc = 0;
	p->run.corrupt = 0;
	rc = tidei_script_protect(ps->o.script, fn, p, why, NULL);
	p->ev = NULL;
	p->key = NULL;
	mdb_cursor_close(p->run.cur);
	p->run.cur = NULL;
	if (rc != TIDE_OK) {
		*at = p->run.seq;
		return tidei_err(err, TIDE_ESCRIPT, "event %llu: %s", (unsigned long long)*at, why);
	}
	if (p->run.corrupt) {
		*at = p->run.seq;
		return tidei_err(err, TIDE_EIO, "event %llu is corrupt", (unsigned long long)*at);
	}
	if (p->run.mrc != 0 && p->run.mrc != MDB_NOTFOUND)
		return tidei_err(err, tidei_err_mdb(p->run.mrc), "cannot read the log: %s",
				 mdb_strerror(p->run.mrc));
	if (stopping(ps))
		return tidei_err(err, TIDE_ESTATE, "stopped");
	if (p->run.done < until)
		return tidei_err(err, TIDE_EIO, "the log ends before event %llu",
				 (unsigned long long)until);
	return TIDE_OK;
}

int
tidei_projections_find_keys(tidei_projections *ps, tidei_log *log, MDB_txn *txn, tidei_keyed *kd,
			    uint64_t from, uint64_t to, uint64_t *at, char *err)
{
	proj *p = &ps->v[0];
	int rc;

	*at = 0;
	if (ps->n != 1)
		return tidei_err(err, TIDE_ESTATE, "no projection to build");
	for (uint64_t s = from; s <= to; s++)
		tidei_keyed_at(kd, s)->part = -1;
	if (from > to)
		return TIDE_OK;
	p->run.kd = kd;
	p->run.kbuf = &kd->keys[ps->part];
	rc = helper_pass(ps, l_keys, log, txn, from, to, at, err);
	p->run.kd = NULL;
	p->run.kbuf = NULL;
	return rc;
}

int
tidei_projections_run_part(tidei_projections *ps, tidei_log *log, MDB_txn *txn, uint32_t gen,
			   const tidei_keyed *kd, uint64_t from, uint64_t to, uint64_t *at,
			   char *err)
{
	proj *p = &ps->v[0];
	int rc;

	*at = 0;
	if (ps->n != 1)
		return tidei_err(err, TIDE_ESTATE, "no projection to build");
	p->meta.build = gen;
	p->run.kd = kd;
	rc = helper_pass(ps, l_run, log, txn, from, to, at, err);
	p->run.kd = NULL;
	return rc;
}

int
tidei_projections_take(tidei_projections *ps, tidei_buf *out, char *err)
{
	proj *p = &ps->v[0];
	char why[TIDEI_ERRLEN];
	tidei_buf t;
	int rc;

	tidei_buf_reset(out);
	if (ps->n != 1 || p->keys.n == 0)
		return TIDE_OK;
	rc = tidei_script_protect(ps->o.script, l_encode, p, why, NULL);
	if (rc != TIDE_OK) {
		new_cache(ps, p);
		tidei_buf_reset(&p->out);
		return tidei_err(err, TIDE_ESCRIPT, "%s", why);
	}
	if (keep_cache(ps, p)) { /* decoded for their next events */
		memset(p->dirty, 0, p->keys.n < p->dirty_cap ? p->keys.n : p->dirty_cap);
		p->ndirty = 0;
	} else {
		new_cache(ps, p);
	}
	t = *out;
	*out = p->out;
	p->out = t;
	return TIDE_OK;
}

size_t
tidei_projections_held(const tidei_projections *ps)
{
	return ps->n == 1 ? ps->v[0].ndirty : 0; /* to be written */
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
		p->handler_ref = match(p, ev->attr[TIDEI_A_TYPE], ev->len[TIDEI_A_TYPE]);
		if (p->handler_ref == LUA_NOREF)
			continue;
		p->ev = ev;
		p->ps = ps;
		rc = tidei_script_protect(ps->o.script, l_apply, p, why, NULL);
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
	lua_State *L = state_of(ps);
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
	return meta_put(log, name, &m);
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
