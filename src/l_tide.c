/*
 * l_tide.c - the `tide` module seen by scripts.
 *
 *   tide.on(pattern, fn [, {name=, from="end"|"beginning", retries=,
 *           backoff=, backoff_max=, ordered=,
 *           -- a rule (rule.h):
 *           key=, ttl=, clock=, lateness=, late=, windows=, timers=,
 *           on_close=}])
 *   tide.timer.after(name, delay [, data]), .at(name, time_ns [, data]),
 *   tide.timer.every(name, interval [, data]), .cancel(name)
 *   tide.clock()                             -> the rule's clock (ns) or nil
 *   tide.window(name)                        -> a window's aggregates, key in hand
 *   tide.stats.*                             -> erf, zscore, ewma, welford... (l_stats.c)
 *   tide.shared(name [, init])               -> a durable table, shared
 *   tide.query(projection, key)              -> a copy of its state, or nil
 *   tide.table(file [, {key=, raw=}])        -> a CSV or JSON file, while loading
 *   tide.once(key)                           -> true the first time
 *   tide.emit{type=, subject=, data=, ...}   -> id of the new event
 *   tide.log(...)                            -> like print
 *   tide.null, tide.array(t)                 -> JSON null, JSON array marker
 *   tide.json.encode(v), tide.json.decode(s)
 *
 * Only argument checking and Lua <-> C conversion live here; what `on` and
 * `emit` mean is decided by the host (consumer.c) behind tidei_host.
 * Misuse raises (luaL_argerror); expected failures such as an invalid
 * emitted event raise too, because a handler that emits garbage has
 * failed and must be retried, not silently continue.
 */
#include "config.h"

#include <lauxlib.h>
#include <string.h>

#include "json.h"
#include "l_event.h"
#include "agg.h"
#include "l_stats.h"
#include "l_tide.h"
#include "rule.h"

/* Read an optional number field of the options table at 3. */
static double
opt_number(lua_State *L, const char *field, double dflt, double min)
{
	double v;

	if (lua_getfield(L, 3, field) == LUA_TNIL) {
		lua_pop(L, 1);
		return dflt;
	}
	if (!lua_isnumber(L, -1))
		luaL_error(L, "tide.on: option '%s' must be a number", field);
	v = (double)lua_tonumber(L, -1);
	if (!(v >= min))
		luaL_error(L, "tide.on: option '%s' must be at least %f", field, min);
	lua_pop(L, 1);
	return v;
}

/* A string argument or option that names something durable: a NUL inside
 * would silently cut the name C sees.  [-0, +0, e] */
static const char *
check_name(lua_State *L, int idx, const char *what)
{
	size_t n;
	const char *s = luaL_checklstring(L, idx, &n);

	if (strlen(s) != n)
		luaL_error(L, "%s must not contain \"\\0\"", what);
	return s;
}

/* tide.on(pattern, fn [, {name=, from=, retries=, backoff=, backoff_max=,
 * ordered=}])  [-(2|3), +0, e] */
static int
l_tide_on(lua_State *L)
{
	static const char *const known[] = { "name",        "from",     "retries", "backoff",
					     "backoff_max", "ordered",  "key",     "ttl",
					     "clock",       "lateness", "late",    "windows",
					     "timers",      "on_close", NULL };
	const tidei_host *h = tidei_lstate_host(L);
	tidei_on_opts o;
	const char *from = "end", *where;
	char err[TIDEI_ERRLEN];
	int ref;

	memset(&o, 0, sizeof o);
	o.pattern = check_name(L, 1, "tide.on: the pattern");
	o.retries = -1;
	o.backoff = o.backoff_max = -1;
	o.ordered = -1;
	luaL_checktype(L, 2, LUA_TFUNCTION);
	if (!lua_isnoneornil(L, 3)) {
		luaL_checktype(L, 3, LUA_TTABLE);
		o.L = L;
		o.opts = 3;
		/* a misspelt option is an error, not a silent default */
		lua_pushnil(L);
		while (lua_next(L, 3) != 0) {
			int ok = 0;
			lua_pop(L, 1);
			for (const char *const *k = known; *k && lua_type(L, -1) == LUA_TSTRING;
			     k++)
				ok |= strcmp(lua_tostring(L, -1), *k) == 0;
			if (!ok)
				return luaL_error(L, "tide.on: unknown option '%s'",
						  luaL_tolstring(L, -1, NULL));
		}
		if (lua_getfield(L, 3, "name") != LUA_TNIL) {
			/* kept alive by the options table */
			if (lua_type(L, -1) != LUA_TSTRING)
				return luaL_error(L, "tide.on: option 'name' must be a string");
			o.name = check_name(L, -1, "tide.on: the consumer name");
		}
		if (lua_getfield(L, 3, "from") != LUA_TNIL)
			from = luaL_checkstring(L, -1);
		if (lua_getfield(L, 3, "ordered") != LUA_TNIL)
			o.ordered = lua_toboolean(L, -1);
		lua_pop(L, 3);
		if (lua_getfield(L, 3, "retries") != LUA_TNIL) {
			if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0)
				return luaL_error(
					L, "tide.on: option 'retries' must be an integer >= 0");
			o.retries = (int64_t)lua_tointeger(L, -1);
		}
		lua_pop(L, 1);
		o.backoff = opt_number(L, "backoff", -1, 0);
		o.backoff_max = opt_number(L, "backoff_max", -1, 0);
	}
	if (strcmp(from, "end") != 0 && strcmp(from, "beginning") != 0)
		return luaL_argerror(L, 3, "from must be \"beginning\" or \"end\"");
	o.from = strcmp(from, "beginning") == 0 ? TIDE_FROM_BEGINNING : TIDE_FROM_END;
	luaL_where(L, 1);
	where = lua_tostring(L, -1);
	if (h->on == NULL)
		return luaL_error(L, "tide.on is not available here");
	lua_pushvalue(L, 2);
	ref = luaL_ref(L, LUA_REGISTRYINDEX);
	if (h->on(h->ud, &o, ref, where, err) != TIDE_OK) {
		luaL_unref(L, LUA_REGISTRYINDEX, ref);
		return luaL_error(L, "%s", err);
	}
	return 0;
}

/* tide.projection(name, spec)  [-2, +0, e] */
static int
l_tide_projection(lua_State *L)
{
	const tidei_host *h = tidei_lstate_host(L);
	const char *name = check_name(L, 1, "tide.projection: the name");
	char err[TIDEI_ERRLEN];
	const char *where;

	luaL_checktype(L, 2, LUA_TTABLE);
	if (h->projection == NULL)
		return luaL_error(L, "tide.projection is not available here");
	luaL_where(L, 1);
	where = lua_tostring(L, -1);
	if (h->projection(h->ud, L, name, 2, where, err) != TIDE_OK)
		return luaL_error(L, "tide.projection: %s", err);
	return 0;
}

/* tide.once(key) -> true the first time this consumer claims key  [-1, +1, e] */
static int
l_tide_once(lua_State *L)
{
	const tidei_host *h = tidei_lstate_host(L);
	size_t n;
	const char *key = luaL_checklstring(L, 1, &n);
	char err[TIDEI_ERRLEN];
	int first;

	if (h->once == NULL || h->once(h->ud, key, n, &first, err) != TIDE_OK)
		return luaL_error(L, "tide.once: %s", h->once ? err : "not available here");
	lua_pushboolean(L, first);
	return 1;
}

static void
too_large(char *err, size_t max)
{
	char lim[32];

	tidei_fmt_size(lim, sizeof lim, max);
	tidei_err(err, TIDE_EEVENT, "the event is larger than the max_event_size limit of %s", lim);
}

/* tide.emit(event) -> id  [-1, +1, e] */
static int
l_tide_emit(lua_State *L)
{
	const tidei_host *h = tidei_lstate_host(L);
	char err[TIDEI_ERRLEN];
	tidei_evb b;
	int rc;

	luaL_checktype(L, 1, LUA_TTABLE);
	if (h->emit == NULL)
		return luaL_error(L, "tide.emit is not available here");
	memset(&b, 0, sizeof b);
	tidei_evb_reset(&b);
	/* a value larger than an event may be is not copied whole first */
	b.strs.limit = b.ext.limit = b.data.limit = h->max_event;
	if (tidei_lua_to_event(L, 1, &b) != 0) {
		if (b.strs.over || b.ext.over || b.data.over)
			too_large(b.err, h->max_event);
		lua_pushfstring(L, "tide.emit: %s", b.err);
		tidei_evb_free(&b);
		tidei_lstate_charge(L, 0); /* a limit met walking the data: raised as such */
		return lua_error(L);
	}
	rc = h->emit(h->ud, &b, err);
	if (rc == TIDE_OK)
		lua_pushlstring(L, (const char *)b.strs.p + b.off[TIDEI_A_ID], b.len[TIDEI_A_ID]);
	else if (b.strs.over || b.ext.over)
		too_large(err, h->max_event);
	tidei_evb_free(&b);
	if (rc == TIDE_ENOMEM) /* what the call emitted would pass the ceiling */
		return tidei_lstate_nomem(L, "tide.emit");
	if (rc != TIDE_OK)
		return luaL_error(L, "tide.emit: %s", err);
	return 1;
}

/* tide.log(...)  [-n, +0, e] */
static int
l_tide_log(lua_State *L)
{
	lua_getglobal(L, "print");
	lua_insert(L, 1);
	lua_call(L, lua_gettop(L) - 1, 0);
	return 0;
}

/* tide.array(t) -> t, marked to encode as a JSON array  [-1, +1, e] */
static int
l_tide_array(lua_State *L)
{
	if (lua_isnoneornil(L, 1)) {
		lua_settop(L, 0);
		lua_newtable(L);
	}
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_settop(L, 1);
	tidei_lua_plain(L, 1); /* lazy data keeps its members */
	luaL_getmetatable(L, TIDEI_ARRAY_MT);
	/* the mark is reachable by getmetatable: a __gc given to it would
	 * run as a finalizer, outside every limit */
	lua_pushliteral(L, "__gc");
	if (lua_rawget(L, -2) != LUA_TNIL)
		return luaL_error(L, "tide.array: its metatable was given a __gc field");
	lua_pop(L, 1);
	lua_setmetatable(L, 1);
	return 1;
}

/* tide.json's buffers, in a userdata so that an error raised while they
 * are in use (by the state or by the budget) cannot leak them: the
 * collector frees them and gives their reservation back. */
typedef struct encoder {
	tidei_lstate *s;
	tidei_buf val, out;
	size_t held_val, held_out; /* reserved against the memory ceiling */
} encoder;

static const char encoder_mt_key = 0;

static int
encoder_free(lua_State *L)
{
	encoder *e = lua_touserdata(L, 1);

	tidei_buf_free(&e->val);
	tidei_buf_free(&e->out);
	tidei_lstate_release(e->s, e->held_val + e->held_out);
	e->held_val = e->held_out = 0;
	return 0;
}

/* A fresh encoder, pushed.  [-0, +1, m] */
static encoder *
new_encoder(lua_State *L)
{
	encoder *e = lua_newuserdatauv(L, sizeof *e, 0);

	memset(e, 0, sizeof *e);
	e->s = tidei_lstate_of(L);
	lua_rawgetp(L, LUA_REGISTRYINDEX, &encoder_mt_key);
	lua_setmetatable(L, -2);
	return e;
}

/* Count the buffer @p b, just filled, against the ceiling: it was allowed
 * to grow only as far as there was room, but the state may have grown
 * meanwhile.  [-0, +0, e] */
static void
hold(lua_State *L, encoder *e, const tidei_buf *b, size_t *held, const char *what)
{
	if (b->failed || tidei_lstate_reserve(e->s, b->cap) != TIDE_OK)
		tidei_lstate_nomem(L, what);
	*held = b->cap;
}

/* tide.json.encode(v) -> string  [-1, +1, e] */
static int
l_json_encode(lua_State *L)
{
	char err[TIDEI_ERRLEN];
	tidei_vreader r;
	encoder *e;
	size_t room;

	luaL_checkany(L, 1);
	lua_settop(L, 1);
	e = new_encoder(L);
	/* the intermediate encoding, then the JSON text: neither may take
	 * more than the memory the script has left */
	room = tidei_lstate_room(e->s);
	e->val.limit = room ? room : 1;
	if (tidei_lua_to_val_charged(L, 1, &e->val, err) != 0) {
		tidei_lstate_charge(L, 0); /* raises if a limit stopped it */
		if (!e->val.failed)
			return luaL_error(L, "tide.json.encode: %s", err);
		tidei_lstate_nomem(L, "tide.json.encode");
	}
	hold(L, e, &e->val, &e->held_val, "tide.json.encode");
	room = tidei_lstate_room(e->s);
	e->out.limit = room ? room : 1;
	r.p = e->val.p;
	r.end = e->val.p + e->val.len;
	if (tidei_json_encode(&e->out, &r) != 0 && !e->out.failed)
		return luaL_error(L, "tide.json.encode: the value cannot be encoded");
	hold(L, e, &e->out, &e->held_out, "tide.json.encode");
	/* writing the text: a few instructions' worth per byte */
	tidei_lstate_charge(L, e->out.len / 8 + 1);
	tidei_buf_free(&e->val);
	tidei_lstate_release(e->s, e->held_val);
	e->held_val = 0;
	lua_pushlstring(L, (const char *)e->out.p, e->out.len);
	lua_pushcfunction(L, encoder_free);
	lua_pushvalue(L, 2);
	lua_call(L, 1, 0);
	return 1;
}

/* tide.json.decode(s) -> value | nil, message  [-1, +(1|2), e] */
static int
l_json_decode(lua_State *L)
{
	size_t n, room;
	const char *s = luaL_checklstring(L, 1, &n);
	char err[TIDEI_ERRLEN];
	tidei_vreader r;
	encoder *e;

	lua_settop(L, 1);
	e = new_encoder(L);
	room = tidei_lstate_room(e->s);
	e->val.limit = room ? room : 1;
	tidei_lstate_charge(L, n / 8 + 1);
	if (tidei_json_decode(s, n, &e->val, err) != 0) {
		if (e->val.failed)
			tidei_lstate_nomem(L, "tide.json.decode");
		luaL_pushfail(L);
		lua_pushstring(L, err);
		return 2;
	}
	hold(L, e, &e->val, &e->held_val, "tide.json.decode");
	r.p = e->val.p;
	r.end = e->val.p + e->val.len;
	if (tidei_lua_push_val(L, &r) != 0)
		return luaL_error(L, "tide.json.decode: out of memory");
	lua_pushcfunction(L, encoder_free);
	lua_pushvalue(L, 2);
	lua_call(L, 1, 0);
	return 1;
}

/* A duration argument: a string with a unit ("15m") or seconds.
 * [-0, +0, e] */
static int64_t
check_duration(lua_State *L, int idx, const char *fn)
{
	char err[TIDEI_ERRLEN];
	size_t n;
	const char *s;
	int64_t ns;

	if (lua_type(L, idx) != LUA_TSTRING && lua_type(L, idx) != LUA_TNUMBER)
		luaL_error(L, "%s: the duration must be a string such as \"15m\" or seconds", fn);
	s = lua_tolstring(L, idx, &n);
	if (tidei_duration_parse(s, n, &ns, err) != TIDE_OK)
		luaL_error(L, "%s: %s", fn, err);
	return ns;
}

static int
timer_op(lua_State *L, int op, const char *fn)
{
	const tidei_host *h = tidei_lstate_host(L);
	char err[TIDEI_ERRLEN];
	size_t n;
	const char *name = luaL_checklstring(L, 1, &n);
	int64_t when = 0;

	if (op == TIDEI_TIMER_AT)
		when = (int64_t)luaL_checkinteger(L, 2);
	else if (op != TIDEI_TIMER_CANCEL)
		when = check_duration(L, 2, fn);
	if (h->timer == NULL)
		return luaL_error(L, "%s is not available here", fn);
	if (h->timer(h->ud, L, op, name, n, when, op == TIDEI_TIMER_CANCEL ? 0 : 3, err) != TIDE_OK)
		return luaL_error(L, "%s: %s", fn, err);
	return 0;
}

/* tide.timer.at(name, time_ns [, data])  [-(2|3), +0, e] */
static int
l_timer_at(lua_State *L)
{
	return timer_op(L, TIDEI_TIMER_AT, "tide.timer.at");
}

/* tide.timer.after(name, delay [, data])  [-(2|3), +0, e] */
static int
l_timer_after(lua_State *L)
{
	return timer_op(L, TIDEI_TIMER_AFTER, "tide.timer.after");
}

/* tide.timer.every(name, interval [, data])  [-(2|3), +0, e] */
static int
l_timer_every(lua_State *L)
{
	return timer_op(L, TIDEI_TIMER_EVERY, "tide.timer.every");
}

/* tide.timer.cancel(name)  [-1, +0, e] */
static int
l_timer_cancel(lua_State *L)
{
	return timer_op(L, TIDEI_TIMER_CANCEL, "tide.timer.cancel");
}

/* tide.clock() -> the running rule's clock in ns, or nil  [-0, +1, e] */
static int
l_tide_clock(lua_State *L)
{
	const tidei_host *h = tidei_lstate_host(L);
	int64_t now;

	if (h->clock == NULL || h->clock(h->ud, &now) != TIDE_OK)
		lua_pushnil(L);
	else
		lua_pushinteger(L, (lua_Integer)now);
	return 1;
}

/* tide.shared(name [, init]) -> a table kept in the log, the same for
 * every handler of the scripts  [-(1|2), +1, e] */
static int
l_tide_shared(lua_State *L)
{
	const tidei_host *h = tidei_lstate_host(L);
	const char *name = check_name(L, 1, "tide.shared: the name");
	char err[TIDEI_ERRLEN];

	if (lua_isnoneornil(L, 2)) {
		lua_settop(L, 1);
		lua_newtable(L);
	}
	luaL_checktype(L, 2, LUA_TTABLE);
	lua_settop(L, 2);
	if (h->shared == NULL)
		return luaL_error(L, "tide.shared is not available here");
	if (h->shared(h->ud, L, name, 2, err) != TIDE_OK)
		return luaL_error(L, "tide.shared: %s", err);
	return 1;
}

/* tide.query(projection, key) -> a copy of the projection's state for
 * key, or nil  [-2, +1, e] */
static int
l_tide_query(lua_State *L)
{
	const tidei_host *h = tidei_lstate_host(L);
	const char *name = check_name(L, 1, "tide.query: the projection");
	char err[TIDEI_ERRLEN];
	size_t klen;
	const char *key;

	if (lua_type(L, 2) == LUA_TNUMBER)
		lua_tolstring(L, 2, NULL);
	key = luaL_checklstring(L, 2, &klen);
	if (h->query == NULL)
		return luaL_error(L, "tide.query is not available here");
	if (h->query(h->ud, L, name, key, klen, err) != TIDE_OK)
		return luaL_error(L, "tide.query: %s", err);
	return 1;
}

/* tide.table(file [, {key=, raw=}]) -> the CSV or JSON file beside the
 * script, as a table  [-(1|2), +1, e] */
static int
l_tide_table(lua_State *L)
{
	const tidei_host *h = tidei_lstate_host(L);
	char err[TIDEI_ERRLEN];

	luaL_checkstring(L, 1);
	lua_settop(L, 2);
	if (h->table == NULL)
		return luaL_error(L, "tide.table is not available here");
	if (h->table(h->ud, L, 1, 2, err) != TIDE_OK)
		return luaL_error(L, "tide.table: %s", err);
	return 1;
}

/* tide.window(name) -> { count=, sum=, ... } of the key in hand
 * [-1, +1, e] */
static int
l_tide_window(lua_State *L)
{
	const tidei_host *h = tidei_lstate_host(L);
	const char *name = luaL_checkstring(L, 1);
	int nfields = lua_gettop(L) - 1;
	char err[TIDEI_ERRLEN];

	if (h->window == NULL)
		return luaL_error(L, "tide.window is not available here");
	for (int k = 0; k < nfields; k++)
		luaL_checktype(L, 2 + k, LUA_TSTRING);
	if (h->window(h->ud, L, name, 2, nfields, err) != TIDE_OK)
		return luaL_error(L, "tide.window: %s", err);
	return nfields > 0 ? nfields : 1;
}

/* tide.duration("15m") -> ns  [-1, +1, e] */
static int
l_tide_duration(lua_State *L)
{
	lua_pushinteger(L, (lua_Integer)check_duration(L, 1, "tide.duration"));
	return 1;
}

/* The registry's table of tide.param overrides: name -> value (text). */
static const char params_key = 0;

void
tidei_lua_set_params(lua_State *L, const char *const *params)
{
	lua_newtable(L);
	for (const char *const *p = params; p != NULL && *p != NULL; p++) {
		const char *eq = strchr(*p, '=');
		if (eq == NULL)
			continue;
		lua_pushlstring(L, *p, (size_t)(eq - *p));
		lua_pushstring(L, eq + 1);
		lua_rawset(L, -3);
	}
	lua_rawsetp(L, LUA_REGISTRYINDEX, &params_key);
}

/* tide.param(name, default): the value `--set name=VALUE` gave, read as
 * the default is (a number, a boolean or a string), else the default.
 * [-0, +1, e] */
static int
l_tide_param(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1), *v;

	lua_settop(L, 2);
	if (lua_rawgetp(L, LUA_REGISTRYINDEX, &params_key) != LUA_TTABLE ||
	    lua_getfield(L, -1, name) != LUA_TSTRING) {
		lua_settop(L, 2);
		return 1;
	}
	v = lua_tostring(L, -1);
	switch (lua_type(L, 2)) {
	case LUA_TNUMBER:
		if (lua_stringtonumber(L, v) == 0)
			return luaL_error(L, "parameter '%s': '%s' is not a number", name, v);
		return 1;
	case LUA_TBOOLEAN:
		if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0)
			lua_pushboolean(L, 1);
		else if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0)
			lua_pushboolean(L, 0);
		else
			return luaL_error(L, "parameter '%s': '%s' is not true or false", name, v);
		return 1;
	default: return 1;
	}
}

const char tidei_delete_marker = 0;

static const luaL_Reg tide_funcs[] = {
	{ "on", l_tide_on },         { "once", l_tide_once },
	{ "emit", l_tide_emit },     { "projection", l_tide_projection },
	{ "log", l_tide_log },       { "array", l_tide_array },
	{ "clock", l_tide_clock },   { "duration", l_tide_duration },
	{ "param", l_tide_param },   { "shared", l_tide_shared },
	{ "query", l_tide_query },   { "table", l_tide_table },
	{ "window", l_tide_window }, { NULL, NULL },
};

static const luaL_Reg timer_funcs[] = {
	{ "at", l_timer_at },
	{ "after", l_timer_after },
	{ "every", l_timer_every },
	{ "cancel", l_timer_cancel },
	{ NULL, NULL },
};

static const luaL_Reg json_funcs[] = {
	{ "encode", l_json_encode },
	{ "decode", l_json_decode },
	{ NULL, NULL },
};

static int
luaopen_tide(lua_State *L)
{
	luaL_newlib(L, tide_funcs);
	lua_pushlightuserdata(L, NULL);
	lua_setfield(L, -2, "null");
	/* returned by a projection handler: forget this key's state */
	lua_pushlightuserdata(L, (void *)&tidei_delete_marker);
	lua_setfield(L, -2, "delete");
	luaL_newlib(L, json_funcs);
	lua_setfield(L, -2, "json");
	luaL_newlib(L, timer_funcs);
	lua_setfield(L, -2, "timer");
	tidei_lua_open_stats(L);
	lua_setfield(L, -2, "stats");
	lua_pushstring(L, tide_version());
	lua_setfield(L, -2, "version");
	return 1;
}

void
tidei_lua_open_tide(lua_State *L)
{
	luaL_newmetatable(L, TIDEI_ARRAY_MT);
	lua_pop(L, 1);
	lua_createtable(L, 0, 1);
	lua_pushcfunction(L, encoder_free);
	lua_setfield(L, -2, "__gc");
	lua_rawsetp(L, LUA_REGISTRYINDEX, &encoder_mt_key);
	luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
	lua_pushcfunction(L, luaopen_tide);
	lua_setfield(L, -2, "tide");
	lua_pop(L, 1);
}
