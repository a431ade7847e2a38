/*
 * l_event.c - events and encoded values as Lua values.
 *
 * Building the handler's event table is on the per-event path of every
 * Lua consumer, so it reads the record directly (no JSON, no allocation
 * beyond the Lua objects themselves) and formats `recorded` through a
 * one-second cache.  The reverse direction validates through tidei_evb,
 * so an emitted event obeys the same rules as an ingested one.
 */
#include "config.h"

#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "l_event.h"
#include "lstate.h"

/* ------------------------------------------------------------------------
 * Encoded value -> Lua
 * ------------------------------------------------------------------------ */

static int fill_map(lua_State *L, tidei_vreader *r, uint32_t count, int depth);

/* Slots to set aside for a container of @p count items of @p size bytes
 * at least (1 for an element, 2 for a member) before they are read.  The
 * count comes from disk: no more than the bytes left in @p r can fill, or
 * a few bytes claiming 2^20 elements would take 16 MB each level. */
static int
presize(const tidei_vreader *r, uint32_t count, size_t size)
{
	size_t room = (size_t)(r->end - r->p) / size;

	if (count > room)
		count = (uint32_t)room;
	return (int)(count < 1u << 20 ? count : 0);
}

/* Set the metatable at the top (one of Tide's, which a script can reach
 * through getmetatable) on the table below it.  A script that gave it a
 * __gc field would have its function run as a finalizer, outside every
 * limit (Lua marks an object for finalization when its metatable is set),
 * so that is refused.  [-1, +0, e] */
static void
set_own_metatable(lua_State *L)
{
	lua_pushliteral(L, "__gc");
	if (lua_rawget(L, -2) != LUA_TNIL)
		luaL_error(L, "a script gave one of Tide's metatables a __gc field");
	lua_pop(L, 1);
	lua_setmetatable(L, -2);
}

static int
push_val(lua_State *L, tidei_vreader *r, int depth)
{
	tidei_vitem it;

	if (depth > TIDEI_JSON_MAXDEPTH + 4 || tidei_val_next(r, &it) != 0)
		return -1;
	switch (it.type) {
	case TIDEI_V_NIL: lua_pushlightuserdata(L, NULL); return 0;
	case TIDEI_V_FALSE: lua_pushboolean(L, 0); return 0;
	case TIDEI_V_TRUE: lua_pushboolean(L, 1); return 0;
	case TIDEI_V_INT: lua_pushinteger(L, (lua_Integer)it.u.i); return 0;
	case TIDEI_V_DOUBLE: lua_pushnumber(L, (lua_Number)it.u.d); return 0;
	case TIDEI_V_STR:
	case TIDEI_V_BIN: lua_pushlstring(L, it.u.s.p, it.u.s.n); return 0;
	case TIDEI_V_ARRAY:
		luaL_checkstack(L, 3, "value nested too deeply");
		lua_createtable(L, presize(r, it.u.count, 1), 0);
		if (it.u.count == 0) { /* or it would encode back as {} */
			luaL_getmetatable(L, TIDEI_ARRAY_MT);
			set_own_metatable(L);
		}
		for (uint32_t k = 1; k <= it.u.count; k++) {
			if (push_val(L, r, depth + 1) != 0) {
				lua_pop(L, 1);
				return -1;
			}
			lua_rawseti(L, -2, (lua_Integer)k);
		}
		return 0;
	case TIDEI_V_MAP:
		luaL_checkstack(L, 4, "value nested too deeply");
		lua_createtable(L, 0, presize(r, it.u.count, 2));
		if (fill_map(L, r, it.u.count, depth) != 0) {
			lua_pop(L, 1);
			return -1;
		}
		return 0;
	}
	return -1;
}

/* Set the @p count members that follow in @p r into the table at the top.
 * Returns 0, or -1 if the bytes are malformed. */
static int
fill_map(lua_State *L, tidei_vreader *r, uint32_t count, int depth)
{
	for (uint32_t k = 0; k < count; k++) {
		tidei_vitem key;
		if (tidei_val_next(r, &key) != 0 || key.type != TIDEI_V_STR)
			return -1;
		/* null in a map: leave the key out, as Lua cannot hold nil */
		if (r->p < r->end && *r->p == 0xc0) {
			r->p++;
			continue;
		}
		lua_pushlstring(L, key.u.s.p, key.u.s.n);
		if (push_val(L, r, depth + 1) != 0) {
			lua_pop(L, 1);
			return -1;
		}
		lua_rawset(L, -3);
	}
	return 0;
}

int
tidei_lua_push_val(lua_State *L, tidei_vreader *r)
{
	return push_val(L, r, 0);
}

/* ------------------------------------------------------------------------
 * Lazy data
 *
 * `ev.data` of an object is a table that decodes a member when it is
 * first read, from a copy of the encoded bytes kept under a private key.
 * Building the whole table up front (a string interned and a slot set per
 * member) was the largest cost of a projection handler that reads two or
 * three members of five.  The first write, a nested member, pairs() or
 * encoding turns it into the plain table it stands for, with no metatable
 * left, so everything but a raw next() sees an ordinary table.
 * ------------------------------------------------------------------------ */

static const char lazy_mt_key = 0;    /* registry: the metatable */
static const char lazy_bytes_key = 0; /* in the table: the userdata holding its lazy_data */

/* The encoded object with an index of its members, made once so that
 * each read is a short scan of lengths instead of a walk of the bytes. */
typedef struct lazy_member {
	uint32_t key, klen; /* offsets into bytes */
	uint32_t val;
} lazy_member;

typedef struct lazy_data {
	uint32_t n, len;
	const uint8_t *bytes; /* after the members */
	lazy_member m[];
} lazy_data;

/* What the private key holds: an event object (whose userdata has room
 * for its data, saving an allocation per event) or a holder of its own;
 * both begin with this. */
typedef struct l_event {
	const struct tide_event *ev; /* NULL once expired (always, in a holder) */
	lazy_data *data;             /* room for ev.data inside this userdata, or NULL */
} l_event;

/* Objects of up to 15 members (one byte of header) and this many bytes
 * are copied into the event object's own userdata. */
#define LAZY_INLINE_BYTES 1024

static lazy_data *
lazy_get(lua_State *L, int t)
{
	lazy_data *d = NULL;

	if (lua_rawgetp(L, t, &lazy_bytes_key) == LUA_TUSERDATA)
		d = ((l_event *)lua_touserdata(L, -1))->data;
	lua_pop(L, 1);
	return d;
}

static size_t
lazy_size(uint32_t count, size_t n)
{
	return sizeof(lazy_data) + count * sizeof(lazy_member) + n;
}

/* Copy the object @p p (@p n bytes, @p count members) into @p d and
 * index its members.  0, or -1 if malformed. */
static int
lazy_fill(lazy_data *d, const uint8_t *p, size_t n, uint32_t count)
{
	tidei_vreader r = { p, p + n };
	tidei_vitem map, key;

	if (tidei_val_next(&r, &map) != 0 || map.type != TIDEI_V_MAP || map.u.count != count)
		return -1;
	d->n = count;
	d->len = (uint32_t)n;
	d->bytes = (const uint8_t *)&d->m[count];
	memcpy((uint8_t *)&d->m[count], p, n);
	for (uint32_t i = 0; i < count; i++) {
		if (tidei_val_next(&r, &key) != 0 || key.type != TIDEI_V_STR)
			return -1;
		d->m[i].key = (uint32_t)((const uint8_t *)key.u.s.p - p);
		d->m[i].klen = key.u.s.n;
		d->m[i].val = (uint32_t)(r.p - p);
		if (tidei_val_skip(&r) != 0)
			return -1;
	}
	return 0;
}

/* Decode every member into the lazy table at @p t and make it plain.
 * [-0, +0, e] */
static void
lazy_materialize(lua_State *L, int t)
{
	tidei_vreader r;
	tidei_vitem map;
	lazy_data *d;

	t = lua_absindex(L, t);
	if (lua_rawgetp(L, t, &lazy_bytes_key) != LUA_TUSERDATA) {
		lua_pop(L, 1);
		return;
	}
	d = ((l_event *)lua_touserdata(L, -1))->data; /* anchored on the stack */
	r.p = d->bytes;
	r.end = r.p + d->len;
	luaL_checkstack(L, 4, "value nested too deeply");
	lua_pushvalue(L, t);
	if (tidei_val_next(&r, &map) != 0 || map.type != TIDEI_V_MAP ||
	    fill_map(L, &r, map.u.count, 0) != 0)
		luaL_error(L, "event data is corrupt");
	lua_pushnil(L);
	lua_rawsetp(L, -2, &lazy_bytes_key);
	lua_pushnil(L);
	lua_setmetatable(L, -2);
	lua_pop(L, 2);
}

/* data.k  [-0, +1, e] */
static int
lazy_index(lua_State *L)
{
	lazy_data *d;
	const lazy_member *m = NULL;
	tidei_vreader r;
	const char *k;
	size_t n;
	uint8_t c;

	if (lua_type(L, 2) != LUA_TSTRING || (d = lazy_get(L, 1)) == NULL) {
		lua_pushnil(L);
		return 1;
	}
	k = lua_tolstring(L, 2, &n);
	/* the last of duplicate members wins, as in the plain table */
	for (uint32_t i = d->n; i-- > 0;)
		if (d->m[i].klen == n && memcmp(d->bytes + d->m[i].key, k, n) == 0) {
			m = &d->m[i];
			break;
		}
	if (m == NULL || (c = d->bytes[m->val]) == 0xc0) {
		lua_pushnil(L);
		return 1;
	}
	if ((c & 0xe0) == 0x80 || (c >= 0xdc && c <= 0xdf)) {
		/* a table member: it must be the same table at every read */
		lua_settop(L, 2);
		lazy_materialize(L, 1);
		lua_rawget(L, 1);
		return 1;
	}
	r.p = d->bytes + m->val;
	r.end = d->bytes + d->len;
	if (push_val(L, &r, 1) != 0)
		return luaL_error(L, "event data is corrupt");
	return 1;
}

/* data.k = v: only for a key not yet set, so the first write  [-0, +0, e] */
static int
lazy_newindex(lua_State *L)
{
	lua_settop(L, 3);
	lazy_materialize(L, 1);
	lua_rawset(L, 1);
	return 0;
}

static int
lazy_next(lua_State *L)
{
	lua_settop(L, 2);
	if (lua_next(L, 1))
		return 2;
	lua_pushnil(L);
	return 1;
}

static int
lazy_pairs(lua_State *L)
{
	lazy_materialize(L, 1);
	lua_pushcfunction(L, lazy_next);
	lua_pushvalue(L, 1);
	lua_pushnil(L);
	return 3;
}

/* Ready the table at @p idx for encoding with one look at its metatable:
 * lazy data is made plain, and the result says whether tide.array marks
 * it as an array.  [-0, +0, e] */
static int
settle_table(lua_State *L, int idx)
{
	int lazy, marked;

	if (!lua_getmetatable(L, idx))
		return 0;
	lua_rawgetp(L, LUA_REGISTRYINDEX, &lazy_mt_key);
	lazy = lua_rawequal(L, -1, -2);
	luaL_getmetatable(L, TIDEI_ARRAY_MT);
	marked = lua_rawequal(L, -1, -3);
	lua_pop(L, 3);
	if (lazy)
		lazy_materialize(L, idx);
	return marked;
}

/* Push the encoded object @p p (@p n bytes) of the event object at
 * @p ud: a lazy table, or a plain one when it is empty or too large to
 * index.  0, or -1 if malformed. */
static int
push_lazy_map(lua_State *L, int ud, const uint8_t *p, size_t n)
{
	tidei_vreader r = { p, p + n };
	tidei_vitem map;
	l_event *e = lua_touserdata(L, ud), *holder = e;

	if (tidei_val_next(&r, &map) != 0 || map.type != TIDEI_V_MAP)
		return -1;
	if (map.u.count == 0 || map.u.count > 64 || n > UINT32_MAX) {
		r.p = p;
		return push_val(L, &r, 0);
	}
	lua_createtable(L, 0, 1);
	if (e->data != NULL) {
		lua_pushvalue(L, ud);
	} else {
		holder = lua_newuserdatauv(L, sizeof *holder + lazy_size(map.u.count, n), 0);
		holder->ev = NULL;
		holder->data = (lazy_data *)(holder + 1);
	}
	if (lazy_fill(holder->data, p, n, map.u.count) != 0) {
		lua_pop(L, 2);
		return -1;
	}
	lua_rawsetp(L, -2, &lazy_bytes_key);
	lua_rawgetp(L, LUA_REGISTRYINDEX, &lazy_mt_key);
	set_own_metatable(L);
	return 0;
}

void
tidei_lua_plain(lua_State *L, int idx)
{
	int lazy;

	if (!lua_getmetatable(L, idx))
		return;
	lua_rawgetp(L, LUA_REGISTRYINDEX, &lazy_mt_key);
	lazy = lua_rawequal(L, -1, -2);
	lua_pop(L, 2);
	if (lazy)
		lazy_materialize(L, idx);
}

static void
lazy_open(lua_State *L)
{
	static const luaL_Reg meta[] = {
		{ "__index", lazy_index },
		{ "__newindex", lazy_newindex },
		{ "__pairs", lazy_pairs },
		{ NULL, NULL },
	};

	luaL_newlib(L, meta);
	lua_rawsetp(L, LUA_REGISTRYINDEX, &lazy_mt_key);
}

/* ------------------------------------------------------------------------
 * The event object
 *
 * A handler's `ev` is a full userdata pointing at the record; nothing is
 * decoded until a field is read, and `ev.data` is decoded once and kept
 * in the userdata's user value.  Building a complete table for every
 * event (two tables, a dozen interned strings) cost more than the rest of
 * the handler path together; most handlers read a few fields.  The record
 * lives in LMDB memory only for the turn, so the object expires when the
 * handler returns.
 * ------------------------------------------------------------------------ */

/* The metatable is also kept in the registry under this address: a
 * pointer lookup is much cheaper than luaL_testudata's lookup by name,
 * and every field read goes through it. */
static const char event_mt_key = 0;

static l_event *
test_event(lua_State *L, int idx)
{
	l_event *e = lua_touserdata(L, idx);

	if (e == NULL || lua_type(L, idx) != LUA_TUSERDATA || !lua_getmetatable(L, idx))
		return NULL;
	lua_rawgetp(L, LUA_REGISTRYINDEX, &event_mt_key);
	if (!lua_rawequal(L, -1, -2))
		e = NULL;
	lua_pop(L, 2);
	return e;
}

/* For the metamethods: Lua calls them with the event itself, and scripts
 * cannot reach them to call them with anything else (__metatable hides
 * the metatable; the debug library is off unless the config allows it). */
static const struct tide_event *
self_event(lua_State *L)
{
	l_event *e = lua_touserdata(L, 1);

	if (e == NULL || e->ev == NULL)
		luaL_error(L, "event used after its handler returned "
			      "(keep copies of fields, or ev:to_table())");
	return e->ev;
}

static const struct tide_event *
check_event(lua_State *L, int idx)
{
	l_event *e = test_event(L, idx);

	if (e == NULL)
		luaL_typeerror(L, idx, TIDEI_EVENT_MT);
	if (e->ev == NULL)
		luaL_error(L, "event used after its handler returned "
			      "(keep copies of fields, or ev:to_table())");
	return e->ev;
}

static void
push_recorded(lua_State *L, int64_t ns)
{
	char text[40];

	lua_pushlstring(L, text, (size_t)tidei_time_format(text, ns));
}

/* ev.time_ns: the event time as an integer (ns since the epoch), parsed
 * in C; nil without a time, or one int64 nanoseconds do not reach. */
static void
push_time_ns(lua_State *L, const struct tide_event *ev)
{
	int64_t ns;

	if (ev->attr[TIDEI_A_TIME] != NULL &&
	    tidei_time_parse(ev->attr[TIDEI_A_TIME], ev->len[TIDEI_A_TIME], &ns) == 0)
		lua_pushinteger(L, (lua_Integer)ns);
	else
		lua_pushnil(L);
}

/* Push the extension @p name, or nothing (returns 0). */
static int
push_extension(lua_State *L, const struct tide_event *ev, const char *name, size_t n)
{
	tidei_vreader r;

	if (ev->ext == NULL)
		return 0;
	r.p = ev->ext;
	r.end = ev->ext + ev->ext_len;
	return tidei_val_find(&r, name, n) && push_val(L, &r, 1) == 0;
}

static void
push_data(lua_State *L, int ud, const struct tide_event *ev)
{
	tidei_vreader r;

	if (lua_getiuservalue(L, ud, 1) != LUA_TNIL)
		return;
	lua_pop(L, 1);
	if (ev->data == NULL || (ev->data_len == 1 && ev->data[0] == 0xc0)) {
		lua_pushnil(L); /* no data, or "data": null */
		return;
	}
	r.p = ev->data;
	r.end = ev->data + ev->data_len;
	if ((ev->data[0] & 0xf0) == 0x80 || ev->data[0] == 0xde || ev->data[0] == 0xdf
		    ? push_lazy_map(L, ud, ev->data, ev->data_len) != 0
		    : push_val(L, &r, 0) != 0) {
		luaL_error(L, "event %I has corrupt data", (lua_Integer)ev->seq);
		return;
	}
	lua_pushvalue(L, -1);
	lua_setiuservalue(L, ud, 1);
}

static int l_event_to_table(lua_State *L);

/* ev.field  [-0, +1, e] */
static int
l_event_index(lua_State *L)
{
	const struct tide_event *ev = self_event(L);
	size_t n;
	const char *k = luaL_checklstring(L, 2, &n);

	for (int a = 0; a < TIDEI_NATTR; a++) {
		if (k[0] == tidei_attr_names[a][0] && strcmp(k, tidei_attr_names[a]) == 0) {
			if (ev->attr[a] == NULL)
				lua_pushnil(L);
			else
				lua_pushlstring(L, ev->attr[a], ev->len[a]);
			return 1;
		}
	}
	if (strcmp(k, "data") == 0)
		push_data(L, 1, ev);
	else if (strcmp(k, "seq") == 0)
		lua_pushinteger(L, (lua_Integer)ev->seq);
	else if (strcmp(k, "version") == 0)
		ev->version ? lua_pushinteger(L, (lua_Integer)ev->version) : lua_pushnil(L);
	else if (strcmp(k, "recorded") == 0)
		push_recorded(L, ev->recorded);
	else if (strcmp(k, "time_ns") == 0)
		push_time_ns(L, ev);
	else if (strcmp(k, "recorded_ns") == 0)
		ev->seq ? lua_pushinteger(L, (lua_Integer)ev->recorded) : lua_pushnil(L);
	else if (strcmp(k, "specversion") == 0)
		lua_pushliteral(L, "1.0");
	else if (strcmp(k, "to_table") == 0)
		lua_pushcfunction(L, l_event_to_table); /* '_' is never in an attribute name */
	else if (!push_extension(L, ev, k, n))
		lua_pushnil(L);
	return 1;
}

/* ev.x = v  [-0, +0, e] */
static int
l_event_newindex(lua_State *L)
{
	self_event(L);
	return luaL_error(L, "events are read-only (build a new table for tide.emit)");
}

void
tidei_lua_push_event_table(lua_State *L, const struct tide_event *ev)
{
	lua_createtable(L, 0, 14);
	for (int a = 0; a < TIDEI_NATTR; a++) {
		if (ev->attr[a] == NULL)
			continue;
		lua_pushlstring(L, ev->attr[a], ev->len[a]);
		lua_setfield(L, -2, tidei_attr_names[a]);
	}
	lua_pushliteral(L, "1.0");
	lua_setfield(L, -2, "specversion");
	if (ev->seq > 0) {
		lua_pushinteger(L, (lua_Integer)ev->seq);
		lua_setfield(L, -2, "seq");
		push_recorded(L, ev->recorded);
		lua_setfield(L, -2, "recorded");
	}
	if (ev->version > 0) {
		lua_pushinteger(L, (lua_Integer)ev->version);
		lua_setfield(L, -2, "version");
	}
	if (ev->ext != NULL) {
		tidei_vreader r = { ev->ext, ev->ext + ev->ext_len };
		tidei_vitem map, key;
		if (tidei_val_next(&r, &map) == 0 && map.type == TIDEI_V_MAP) {
			for (uint32_t k = 0; k < map.u.count; k++) {
				if (tidei_val_next(&r, &key) != 0 || key.type != TIDEI_V_STR)
					break;
				lua_pushlstring(L, key.u.s.p, key.u.s.n);
				if (push_val(L, &r, 1) != 0) {
					lua_pop(L, 1);
					break;
				}
				lua_rawset(L, -3);
			}
		}
	}
	if (ev->data != NULL) {
		tidei_vreader r = { ev->data, ev->data + ev->data_len };
		if (push_val(L, &r, 0) == 0)
			lua_setfield(L, -2, "data");
	}
}

/* ev:to_table() -> a plain table that may outlive the handler  [-1, +1, e] */
static int
l_event_to_table(lua_State *L)
{
	tidei_lua_push_event_table(L, check_event(L, 1));
	return 1;
}

/* pairs(ev): over a full copy  [-1, +3, e] */
static int
l_event_pairs(lua_State *L)
{
	const struct tide_event *ev = check_event(L, 1);

	lua_getglobal(L, "next");
	tidei_lua_push_event_table(L, ev);
	lua_pushnil(L);
	return 3;
}

/* tostring(ev)  [-1, +1, e] */
static int
l_event_tostring(lua_State *L)
{
	l_event *e = test_event(L, 1);

	if (e == NULL)
		return luaL_typeerror(L, 1, TIDEI_EVENT_MT);
	if (e->ev == NULL)
		lua_pushliteral(L, "tide.event (expired)");
	else
		lua_pushfstring(L, "tide.event %I %s %s", (lua_Integer)e->ev->seq,
				e->ev->attr[TIDEI_A_TYPE], e->ev->attr[TIDEI_A_ID]);
	return 1;
}

void
tidei_lua_push_event(lua_State *L, const struct tide_event *ev)
{
	size_t room = 0;
	l_event *e;

	/* room for a small object's copy and index, used if ev.data is read */
	if (ev->data != NULL && (ev->data[0] & 0xf0) == 0x80 && ev->data_len <= LAZY_INLINE_BYTES)
		room = lazy_size(ev->data[0] & 0x0f, ev->data_len);
	e = lua_newuserdatauv(L, sizeof *e + room, 1);
	e->ev = ev;
	e->data = room ? (lazy_data *)(e + 1) : NULL;
	lua_rawgetp(L, LUA_REGISTRYINDEX, &event_mt_key);
	lua_setmetatable(L, -2);
}

void
tidei_lua_expire_event(lua_State *L, int idx)
{
	l_event *e = test_event(L, idx);

	if (e != NULL)
		e->ev = NULL;
}

void
tidei_lua_open_event(lua_State *L)
{
	static const luaL_Reg meta[] = {
		{ "__index", l_event_index },
		{ "__newindex", l_event_newindex },
		{ "__pairs", l_event_pairs },
		{ "__tostring", l_event_tostring },
		{ NULL, NULL },
	};

	luaL_newmetatable(L, TIDEI_EVENT_MT);
	lua_pushvalue(L, -1);
	lua_rawsetp(L, LUA_REGISTRYINDEX, &event_mt_key);
	luaL_setfuncs(L, meta, 0);
	lua_pushliteral(L, "tide.event");
	lua_setfield(L, -2, "__name");
	lua_pushliteral(L, "tide.event");
	lua_setfield(L, -2, "__metatable");
	lua_pop(L, 1);
	lazy_open(L);
}

/* ------------------------------------------------------------------------
 * Lua -> encoded value
 * ------------------------------------------------------------------------ */

/* Whether the table at @p idx encodes as an array (@p marked: by
 * tide.array), and its length. */
static int
is_array(lua_State *L, int idx, int marked, lua_Integer *len)
{
	lua_Integer n = (lua_Integer)lua_rawlen(L, idx), keys = 0;

	if (marked) {
		*len = n;
		return 1;
	}
	if (n == 0)
		return 0;
	lua_pushnil(L);
	while (lua_next(L, idx) != 0) {
		lua_pop(L, 1);
		if (!lua_isinteger(L, -1) || ++keys > n) {
			lua_pop(L, 1);
			return 0;
		}
	}
	*len = n;
	return keys == n;
}

static int to_val(lua_State *L, int idx, tidei_buf *out, char *err, int depth, uint64_t *nodes);

/* A map key: its text (a string key's own bytes, or a number's decimal
 * form in `num`) and where its value is. */
typedef struct mkey {
	const char *p;
	size_t n;
	char num[32];
	int is_num;
	int at; /* stack index of the value, or 0: look it up by the key */
	lua_Integer i;
	lua_Number d;
	int is_int;
} mkey;

/* The text of a key (a number's text is inside the mkey, which sorting
 * moves). */
static const char *
ktext(const mkey *k)
{
	return k->is_num ? k->num : k->p;
}

static int
by_text(const void *a, const void *b)
{
	const mkey *x = a, *y = b;
	size_t n = x->n < y->n ? x->n : y->n;
	int c = memcmp(ktext(x), ktext(y), n);

	return c ? c : (x->n > y->n) - (x->n < y->n);
}

/* Values of maps up to this size are kept on the stack while the keys
 * are sorted (no second lookup per key); larger ones are looked up. */
#define MAP_ON_STACK 64

/* Encode a table as a map with its keys sorted: the same state always
 * gives the same bytes and the same JSON, whatever order Lua's hash (seeded
 * per state) keeps them in. */
static int
map_to_val(lua_State *L, int idx, tidei_buf *out, char *err, int depth, uint64_t *nodes)
{
	mkey small[16], *keys = small;
	size_t n = 0, cap = 16;
	int rc = 0, base = lua_gettop(L);

	lua_pushnil(L);
	while (lua_next(L, idx) != 0) {
		mkey *k;
		if (n == cap) {
			mkey *v = malloc(2 * cap * sizeof *v);
			if (v == NULL) {
				lua_settop(L, base);
				rc = tidei_err(err, -1, "out of memory");
				goto out;
			}
			memcpy(v, keys, n * sizeof *v);
			if (keys != small)
				free(keys);
			keys = v;
			cap *= 2;
		}
		k = &keys[n];
		if (n < MAP_ON_STACK) {
			/* the value stays below the key: values base+1..base+n */
			luaL_checkstack(L, 4, "table too large");
			lua_insert(L, -2);
			k->at = lua_gettop(L) - 1;
		} else {
			lua_pop(L, 1);
			k->at = 0;
		}
		k->is_num = lua_type(L, -1) == LUA_TNUMBER;
		if (lua_type(L, -1) == LUA_TSTRING) {
			k->p = lua_tolstring(L, -1, &k->n); /* anchored by the table */
			if (tidei_utf8_check(k->p, k->n, NULL) != NULL) {
				rc = tidei_err(err, -1, "table key is not valid UTF-8");
				lua_settop(L, base);
				goto out;
			}
		} else if (k->is_num) {
			/* JSON keys are strings: 1 becomes "1" */
			k->is_int = lua_isinteger(L, -1);
			if (k->is_int) {
				k->i = lua_tointeger(L, -1);
				k->n = (size_t)snprintf(k->num, sizeof k->num, "%lld",
							(long long)k->i);
			} else {
				k->d = lua_tonumber(L, -1);
				k->n = (size_t)snprintf(k->num, sizeof k->num, "%.17g",
							(double)k->d);
			}
		} else {
			rc = tidei_err(err, -1, "table key of type %s cannot be encoded",
				       luaL_typename(L, -1));
			lua_settop(L, base);
			goto out;
		}
		n++;
	}
	if (n <= 16) { /* insertion sort: states are small maps */
		for (size_t k = 1; k < n; k++) {
			mkey t = keys[k];
			size_t j = k;
			for (; j > 0 && by_text(&keys[j - 1], &t) > 0; j--)
				keys[j] = keys[j - 1];
			keys[j] = t;
		}
	} else {
		qsort(keys, n, sizeof *keys, by_text);
	}
	tidei_val_map(out, (uint32_t)n);
	for (size_t k = 0; k < n && rc == 0; k++) {
		tidei_val_str(out, ktext(&keys[k]), keys[k].n);
		if (keys[k].at != 0) {
			rc = to_val(L, keys[k].at, out, err, depth + 1, nodes);
			continue;
		}
		if (!keys[k].is_num)
			lua_pushlstring(L, keys[k].p, keys[k].n);
		else if (keys[k].is_int)
			lua_pushinteger(L, keys[k].i);
		else
			lua_pushnumber(L, keys[k].d);
		lua_rawget(L, idx);
		rc = to_val(L, -1, out, err, depth + 1, nodes);
		lua_pop(L, 1);
	}
	lua_settop(L, base);
out:
	if (keys != small)
		free(keys);
	return rc;
}

/* Values walked by a charged encoding per charge, and units per value. */
#define WALK_CHUNK 1024
#define WALK_UNITS 4

/* Charge @p units of a walk: 0, or -1 with which limit stopped it. */
static int
stopped(lua_State *L, uint64_t units, char *err)
{
	switch (tidei_lstate_spend(L, units)) {
	case TIDEI_FAIL_NONE: return 0;
	case TIDEI_FAIL_TIME: return tidei_err(err, -1, "the time limit passed");
	default: return tidei_err(err, -1, "the instruction budget ran out");
	}
}

static int
to_val(lua_State *L, int idx, tidei_buf *out, char *err, int depth, uint64_t *nodes)
{
	size_t n;
	const char *s;
	lua_Integer len;

	/* a buffer that failed (out of memory, or its limit) ends the walk:
	 * a table that refers to one table many times can take far longer to
	 * walk than its size suggests */
	if (out->failed)
		return tidei_err(err, -1, "out of memory");
	/* the limits cannot be raised from here: map_to_val may hold a
	 * malloc'd array of keys further up */
	if (nodes != NULL && (++*nodes & (WALK_CHUNK - 1)) == 0)
		return stopped(L, WALK_CHUNK * WALK_UNITS, err);
	switch (lua_type(L, idx)) {
	case LUA_TNIL: tidei_val_nil(out); return 0;
	case LUA_TBOOLEAN: tidei_val_bool(out, lua_toboolean(L, idx)); return 0;
	case LUA_TNUMBER:
		if (lua_isinteger(L, idx)) {
			tidei_val_int(out, (int64_t)lua_tointeger(L, idx));
		} else {
			double d = (double)lua_tonumber(L, idx);
			if (!isfinite(d))
				return tidei_err(err, -1, "cannot encode %s",
						 isnan(d) ? "NaN" : "infinity");
			tidei_val_double(out, d);
		}
		return 0;
	case LUA_TSTRING:
		s = lua_tolstring(L, idx, &n);
		/* NUL is fine: JSON has \u0000, and values carry lengths */
		if (tidei_utf8_check(s, n, NULL) != NULL)
			return tidei_err(err, -1, "string is not valid UTF-8");
		tidei_val_str(out, s, n);
		return 0;
	case LUA_TLIGHTUSERDATA:
		if (lua_touserdata(L, idx) == NULL) {
			tidei_val_nil(out);
			return 0;
		}
		break;
	case LUA_TUSERDATA:
		if (test_event(L, idx) != NULL) {
			int rc;
			tidei_lua_push_event_table(L, check_event(L, idx));
			rc = to_val(L, -1, out, err, depth, nodes);
			lua_pop(L, 1);
			return rc;
		}
		break;
	case LUA_TTABLE:
		if (depth >= TIDEI_JSON_MAXDEPTH)
			return tidei_err(err, -1, "table nested deeper than %d levels (a cycle?)",
					 TIDEI_JSON_MAXDEPTH);
		luaL_checkstack(L, 4, "table nested too deeply");
		idx = lua_absindex(L, idx);
		if (is_array(L, idx, settle_table(L, idx), &len)) {
			tidei_val_array(out, (uint32_t)len);
			for (lua_Integer k = 1; k <= len; k++) {
				lua_rawgeti(L, idx, k);
				if (to_val(L, -1, out, err, depth + 1, nodes) != 0) {
					lua_pop(L, 1);
					return -1;
				}
				lua_pop(L, 1);
			}
			return 0;
		}
		return map_to_val(L, idx, out, err, depth, nodes);
	}
	return tidei_err(err, -1, "a %s cannot be encoded", luaL_typename(L, idx));
}

int
tidei_lua_to_val(lua_State *L, int idx, tidei_buf *out, char *err)
{
	if (to_val(L, idx, out, err, 0, NULL) != 0)
		return -1;
	if (out->failed)
		return tidei_err(err, -1, "out of memory");
	return 0;
}

int
tidei_lua_to_val_charged(lua_State *L, int idx, tidei_buf *out, char *err)
{
	uint64_t nodes = 0;

	if (to_val(L, idx, out, err, 0, &nodes) != 0)
		return -1;
	if (out->failed)
		return tidei_err(err, -1, "out of memory");
	return stopped(L, (nodes & (WALK_CHUNK - 1)) * WALK_UNITS, err);
}

int
tidei_lua_to_event(lua_State *L, int idx, tidei_evb *b)
{
	char err[TIDEI_ERRLEN];

	idx = lua_absindex(L, idx);
	b->check_utf8 = 1;
	lua_pushnil(L);
	while (lua_next(L, idx) != 0) {
		size_t kn, n;
		const char *k, *s;

		if (lua_type(L, -2) != LUA_TSTRING) {
			lua_pop(L, 2);
			return tidei_evb_fail(b, "event attribute names must be strings");
		}
		k = lua_tolstring(L, -2, &kn);
		if (kn == 4 && memcmp(k, "data", 4) == 0) {
			if (tidei_evb_data(b) == 0 &&
			    tidei_lua_to_val_charged(L, -1, &b->data, err) != 0)
				tidei_evb_fail(b, "data: %s", err);
		} else if (kn == 11 && memcmp(k, "specversion", 11) == 0 && lua_isstring(L, -1) &&
			   !lua_isnumber(L, -1)) {
			s = lua_tolstring(L, -1, &n);
			tidei_evb_string(b, k, kn, s, n);
		} else {
			switch (lua_type(L, -1)) {
			case LUA_TSTRING:
				s = lua_tolstring(L, -1, &n);
				tidei_evb_string(b, k, kn, s, n);
				break;
			case LUA_TBOOLEAN: tidei_evb_bool(b, k, kn, lua_toboolean(L, -1)); break;
			case LUA_TNUMBER:
				if (lua_isinteger(L, -1))
					tidei_evb_int(b, k, kn, (int64_t)lua_tointeger(L, -1));
				else
					tidei_evb_badtype(b, k, kn, "a number with a fraction");
				break;
			case LUA_TLIGHTUSERDATA: tidei_evb_null(b, k, kn); break;
			default: tidei_evb_badtype(b, k, kn, luaL_typename(L, -1)); break;
			}
		}
		lua_pop(L, 1);
		if (b->invalid) {
			lua_pop(L, 1);
			return -1;
		}
	}
	/* An emitted event need not repeat the spec version. */
	if (!b->invalid && !(b->seen & TIDEI_SEEN_SPECVERSION))
		tidei_evb_string(b, "specversion", 11, "1.0", 3);
	return b->invalid ? -1 : 0;
}
