/*
 * papply.c - applying events to a projection's states and storing them,
 * wherever it runs: in the engine's turn (projection.c), in a build's
 * helper thread (pshare.c), or in a replay.
 *
 * Per event, one protected Lua call (tidei_proj_l_apply) does filter, key, the state
 * lookup and the handler.  States touched stay decoded in a Lua table,
 * one slot per key (p->keys), marked dirty when changed; flush() encodes
 * the dirty ones and writes them to the generation being built, and
 * keeps them decoded while they are few enough.
 */
#include "config.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "l_event.h"
#include "l_tide.h"
#include "projection_int.h"

int
tidei_proj_record(tidei_log *log, const char *name, const tidei_proj_meta *m)
{
	int rc = tidei_proj_meta_put(log->txn, log->projections, name, m);

	return rc ? tidei_err(log->err, tidei_err_mdb(rc), "cannot record projection %s: %s", name,
			      mdb_strerror(rc))
		  : TIDE_OK;
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

void
tidei_proj_new_cache(tidei_projections *ps, proj *p)
{
	lua_State *L = tidei_proj_lua(ps);

	luaL_unref(L, LUA_REGISTRYINDEX, p->cache_ref);
	lua_createtable(L, (int)(p->keys.n < CACHE_MAX ? p->keys.n : CACHE_MAX), 0);
	p->cache_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	tidei_keymap_clear(&p->keys);
	if (p->dirty != NULL)
		memset(p->dirty, 0, p->ndirty ? p->dirty_cap : 0);
	p->ndirty = 0;
	p->done = 0; /* progress held only in the cache goes with it */
}

/* The handler for @p type, or LUA_NOREF. */
int
tidei_proj_match(const proj *p, const char *type, size_t tlen)
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
int
tidei_proj_l_apply(lua_State *L)
{
	apply(L, lua_touserdata(L, 1));
	return 0;
}

/* A build helper told to stop (looked at between events). */
int
tidei_proj_stopping(const tidei_projections *ps)
{
	return ps->stop != NULL && atomic_load_explicit(ps->stop, memory_order_relaxed);
}

/* tidei_proj_l_run and tidei_proj_l_keys at the cursor's event (key @p k): its seq into
 * p->run.seq; 0 to go on, -1 past p->run.until or when told to stop. */
static int
run_at(proj *p, const MDB_val *k)
{
	memcpy(&p->run.seq, k->mv_data, 8);
	return p->run.seq > p->run.until || tidei_proj_stopping(p->ps) ? -1 : 0;
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
int
tidei_proj_l_run(lua_State *L)
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
		p->handler_ref = tidei_proj_match(p, ev.attr[TIDEI_A_TYPE], ev.len[TIDEI_A_TYPE]);
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
			if (p->run.rebuilding && !p->run.timed) {
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
int
tidei_proj_l_keys(lua_State *L)
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
		if (tidei_proj_match(p, ev.attr[TIDEI_A_TYPE], ev.len[TIDEI_A_TYPE]) != LUA_NOREF) {
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
int
tidei_proj_write_states(proj *p, const tidei_buf *const *out, size_t nout, char *err)
{
	return tidei_pstate_write(p->log->txn, p->log->state, p->name, p->meta.build,
				  TIDEI_LOG_FORMAT, out, nout, err);
}

/* Whether a live projection keeps its states decoded after writing them:
 * while they are not too many and the scripts' state has room.  A build
 * writes and forgets (its keys pass once), unless it is in a helper: no
 * one else writes its keys until it stops. */
int
tidei_proj_keep_cache(tidei_projections *ps, const proj *p)
{
	tidei_lstate *ls = tidei_script_lstate(ps->o.script);

	return (p->meta.build == p->meta.live || ps->nparts > 0) && p->keys.n <= KEEP_MAX &&
	       tidei_lstate_room(ls) > tidei_lstate_ceiling(ls) / 2;
}

/* Write the cached states.  TIDE_ESCRIPT: a state could not be encoded
 * (nothing was written); otherwise an LMDB failure ends the turn. */
int
tidei_proj_encode(tidei_projections *ps, proj *p, char *err)
{
	char why[TIDEI_ERRLEN];

	if (tidei_script_protect(ps->o.script, l_encode, p, why, NULL) != TIDE_OK) {
		tidei_proj_new_cache(ps, p);
		tidei_buf_reset(&p->out);
		return tidei_err(err, TIDE_ESCRIPT, "%s", why);
	}
	if (tidei_proj_keep_cache(ps, p)) {
		/* the states stay decoded for the next events of their keys;
		 * what is written is clean */
		memset(p->dirty, 0, p->keys.n < p->dirty_cap ? p->keys.n : p->dirty_cap);
		p->ndirty = 0;
	} else {
		tidei_proj_new_cache(ps, p);
	}
	return TIDE_OK;
}

int
tidei_proj_flush(tidei_projections *ps, proj *p, char *err)
{
	int rc;

	if (p->ndirty == 0) {
		if (!tidei_proj_keep_cache(ps, p))
			tidei_proj_new_cache(ps, p);
		return TIDE_OK;
	}
	if ((rc = tidei_proj_encode(ps, p, err)) != TIDE_OK)
		return rc;
	{
		const tidei_buf *out = &p->out;
		rc = tidei_proj_write_states(p, &out, 1, err);
	}
	tidei_buf_reset(&p->out);
	return rc;
}

void
tidei_proj_fault(tidei_projections *ps, proj *p, uint64_t seq, const char *why)
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
