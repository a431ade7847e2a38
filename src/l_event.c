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
#include <string.h>

#include "json.h"
#include "l_event.h"

/* ------------------------------------------------------------------------
 * Encoded value -> Lua
 * ------------------------------------------------------------------------ */

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
		lua_createtable(L, (int)(it.u.count < 1u << 20 ? it.u.count : 0), 0);
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
		lua_createtable(L, 0, (int)(it.u.count < 1u << 20 ? it.u.count : 0));
		for (uint32_t k = 0; k < it.u.count; k++) {
			tidei_vitem key;
			if (tidei_val_next(r, &key) != 0 || key.type != TIDEI_V_STR) {
				lua_pop(L, 1);
				return -1;
			}
			/* null in a map: leave the key out, as Lua cannot hold nil */
			if (r->p < r->end && *r->p == 0xc0) {
				r->p++;
				continue;
			}
			lua_pushlstring(L, key.u.s.p, key.u.s.n);
			if (push_val(L, r, depth + 1) != 0) {
				lua_pop(L, 2);
				return -1;
			}
			lua_rawset(L, -3);
		}
		return 0;
	}
	return -1;
}

int
tidei_lua_push_val(lua_State *L, tidei_vreader *r)
{
	return push_val(L, r, 0);
}

void
tidei_lua_push_event(lua_State *L, const struct tide_event *ev, tidei_timecache *tc)
{
	int64_t sec = ev->recorded / 1000000000;
	long usec = (long)(ev->recorded % 1000000000) / 1000;

	lua_createtable(L, 0, 12);
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
		if (ev->version > 0) {
			lua_pushinteger(L, (lua_Integer)ev->version);
			lua_setfield(L, -2, "version");
		}
		if (tc->sec != sec || tc->text[0] == '\0') {
			tidei_time_format(tc->text, ev->recorded);
			tc->sec = sec;
		}
		/* text is "YYYY-MM-DDTHH:MM:SS.uuuuuuZ": patch the microseconds */
		snprintf(tc->text + 20, sizeof tc->text - 20, "%06ldZ", usec);
		lua_pushlstring(L, tc->text, 27);
		lua_setfield(L, -2, "recorded");
	}
	if (ev->ext != NULL) {
		tidei_vreader r = {ev->ext, ev->ext + ev->ext_len};
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
		tidei_vreader r = {ev->data, ev->data + ev->data_len};
		if (push_val(L, &r, 0) == 0)
			lua_setfield(L, -2, "data");
	}
}

/* ------------------------------------------------------------------------
 * Lua -> encoded value
 * ------------------------------------------------------------------------ */

static int
is_array(lua_State *L, int idx, lua_Integer *len)
{
	lua_Integer n = (lua_Integer)lua_rawlen(L, idx), keys = 0;

	if (lua_getmetatable(L, idx)) {
		luaL_getmetatable(L, TIDEI_ARRAY_MT);
		int marked = lua_rawequal(L, -1, -2);
		lua_pop(L, 2);
		if (marked) {
			*len = n;
			return 1;
		}
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

static int
to_val(lua_State *L, int idx, tidei_buf *out, char *err, int depth)
{
	size_t n;
	const char *s;
	lua_Integer len;

	switch (lua_type(L, idx)) {
	case LUA_TNIL: tidei_val_nil(out); return 0;
	case LUA_TBOOLEAN: tidei_val_bool(out, lua_toboolean(L, idx)); return 0;
	case LUA_TNUMBER:
		if (lua_isinteger(L, idx)) {
			tidei_val_int(out, (int64_t)lua_tointeger(L, idx));
		} else {
			double d = (double)lua_tonumber(L, idx);
			if (!isfinite(d))
				return tidei_err(err, -1, "cannot encode %s", isnan(d) ? "NaN" : "infinity");
			tidei_val_double(out, d);
		}
		return 0;
	case LUA_TSTRING:
		s = lua_tolstring(L, idx, &n);
		if (!tidei_utf8_valid(s, n))
			return tidei_err(err, -1, "string is not valid UTF-8");
		tidei_val_str(out, s, n);
		return 0;
	case LUA_TLIGHTUSERDATA:
		if (lua_touserdata(L, idx) == NULL) {
			tidei_val_nil(out);
			return 0;
		}
		break;
	case LUA_TTABLE:
		if (depth >= TIDEI_JSON_MAXDEPTH)
			return tidei_err(err, -1, "table nested deeper than %d levels (a cycle?)",
			                 TIDEI_JSON_MAXDEPTH);
		luaL_checkstack(L, 4, "table nested too deeply");
		idx = lua_absindex(L, idx);
		if (is_array(L, idx, &len)) {
			tidei_val_array(out, (uint32_t)len);
			for (lua_Integer k = 1; k <= len; k++) {
				lua_rawgeti(L, idx, k);
				if (to_val(L, -1, out, err, depth + 1) != 0) {
					lua_pop(L, 1);
					return -1;
				}
				lua_pop(L, 1);
			}
			return 0;
		} else {
			size_t at = tidei_val_open_map(out);
			uint32_t count = 0;
			lua_pushnil(L);
			while (lua_next(L, idx) != 0) {
				char num[32];
				if (lua_type(L, -2) == LUA_TSTRING) {
					s = lua_tolstring(L, -2, &n);
				} else if (lua_type(L, -2) == LUA_TNUMBER) {
					/* JSON keys are strings: 1 becomes "1" */
					if (lua_isinteger(L, -2))
						n = (size_t)snprintf(num, sizeof num, "%lld",
						                     (long long)lua_tointeger(L, -2));
					else
						n = (size_t)snprintf(num, sizeof num, "%.17g",
						                     (double)lua_tonumber(L, -2));
					s = num;
				} else {
					lua_pop(L, 2);
					return tidei_err(err, -1, "table key of type %s cannot be encoded",
					                 luaL_typename(L, -1));
				}
				tidei_val_str(out, s, n);
				if (to_val(L, -1, out, err, depth + 1) != 0) {
					lua_pop(L, 2);
					return -1;
				}
				count++;
				lua_pop(L, 1);
			}
			tidei_val_close(out, at, count);
			return 0;
		}
	}
	return tidei_err(err, -1, "a %s cannot be encoded", luaL_typename(L, idx));
}

int
tidei_lua_to_val(lua_State *L, int idx, tidei_buf *out, char *err)
{
	if (to_val(L, idx, out, err, 0) != 0)
		return -1;
	if (out->failed)
		return tidei_err(err, -1, "out of memory");
	return 0;
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
			if (tidei_evb_data(b) == 0 && tidei_lua_to_val(L, -1, &b->data, err) != 0)
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
			case LUA_TBOOLEAN:
				tidei_evb_bool(b, k, kn, lua_toboolean(L, -1));
				break;
			case LUA_TNUMBER:
				if (lua_isinteger(L, -1))
					tidei_evb_int(b, k, kn, (int64_t)lua_tointeger(L, -1));
				else
					tidei_evb_badtype(b, k, kn, "a number with a fraction");
				break;
			case LUA_TLIGHTUSERDATA:
				tidei_evb_null(b, k, kn);
				break;
			default:
				tidei_evb_badtype(b, k, kn, luaL_typename(L, -1));
				break;
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
