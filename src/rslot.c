/*
 * rslot.c - the key cache of rules (rule_int.h): a slot per key seen,
 * its state decoded in the scripts' Lua state and its last good encoding
 * beside it, loaded from the log's `rules` database the first time the
 * key comes, rolled back when a call fails, and written, with the
 * rule's clock, when the consumer layer writes.
 *
 * Records, all under the consumer's name:
 *
 *   'S' name "\0" key  -> [1, last seen, expiry due, windows due, state,
 *                         {window name -> bytes}]
 *   'M' name           -> [1, largest time, watermark, late, fired,
 *                         failed]
 */
#include "config.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "l_event.h"
#include "l_tide.h"
#include "lstate.h"
#include "rule_int.h"
#include "val.h"

/* ------------------------------------------------------------------------
 * Slots
 * ------------------------------------------------------------------------ */

void
tidei_rslot_free_all(tidei_rule *r)
{
	for (size_t k = 0; k < r->keys.n; k++) {
		tidei_win **w = tidei_rslot_wins(r, &r->slots[k]);
		tidei_buf_free(&r->slots[k].enc);
		if (w != NULL) {
			tidei_rwins_drop(r->wins, w);
			if (w != r->slots[k].w.in)
				free(w);
		}
	}
	r->ndirty = 0;
	r->dirty_all = 0;
}

/* Slot @p s is to be written. */
void
tidei_rslot_dirty(tidei_rule *r, tidei_rslot *s)
{
	if (s->dirty)
		return;
	s->dirty = 1;
	if (tidei_array_grow(&r->dirty, &r->dcap, r->ndirty, sizeof *r->dirty, 256) != 0)
		r->dirty_all = 1;
	else
		r->dirty[r->ndirty++] = (uint32_t)(s - r->slots);
}

/* ------------------------------------------------------------------------
 * Records
 * ------------------------------------------------------------------------ */

/* r->kbuf = tag name "\0" */
static void
key_start(tidei_rule *r, char tag)
{
	tidei_buf_reset(&r->kbuf);
	tidei_buf_putc(&r->kbuf, (uint8_t)tag);
	tidei_buf_put(&r->kbuf, r->consumer, r->nlen);
	tidei_buf_putc(&r->kbuf, 0);
}

static int
mdb_fail(tidei_log *log, int mrc, const char *what, char *err)
{
	int rc = tidei_log_txn_fail(log, mrc, what);

	return tidei_err(err, rc, "%s", log->err);
}

static int
put(tidei_rule *r, tidei_log *log, const void *v, size_t n, char *err)
{
	MDB_val k = { r->kbuf.len, r->kbuf.p }, d = { n, (void *)v };
	int mrc;

	if (r->kbuf.failed)
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	if ((mrc = mdb_put(log->txn, log->rules, &k, &d, 0)) != 0)
		return mdb_fail(log, mrc, "cannot store rule state", err);
	return TIDE_OK;
}

static int
meta_write(tidei_rule *r, tidei_log *log, char *err)
{
	tidei_buf b = { 0 };
	int rc;

	tidei_buf_reset(&r->kbuf);
	tidei_buf_putc(&r->kbuf, 'M');
	tidei_buf_put(&r->kbuf, r->consumer, r->nlen);
	tidei_val_array(&b, 6);
	tidei_val_int(&b, REC_FORMAT);
	tidei_val_int(&b, r->maxtime);
	tidei_val_int(&b, r->watermark);
	tidei_val_int(&b, (int64_t)r->nlate);
	tidei_val_int(&b, (int64_t)r->fired);
	tidei_val_int(&b, (int64_t)r->failed);
	rc = b.failed ? tidei_err(err, TIDE_ENOMEM, "out of memory") : put(r, log, b.p, b.len, err);
	tidei_buf_free(&b);
	return rc;
}

/* Read record @p p (from the log) into slot @p s: its times, its state's
 * encoding and its windows.  [-0, +0, e] */
static void
read_record(lua_State *L, tidei_rule *r, tidei_rslot *s, const uint8_t *p, size_t n)
{
	tidei_vreader rd = { p, p + n };
	tidei_vitem it;
	const uint8_t *state;
	int64_t f[3];
	uint32_t count;
	char err[TIDEI_ERRLEN];

	if (tidei_val_next(&rd, &it) != 0 || it.type != TIDEI_V_ARRAY || it.u.count < 5)
		luaL_error(L, "the stored state of rule '%s' is damaged", r->consumer);
	count = it.u.count;
	for (int i = 0; i < 4; i++) {
		if (tidei_val_next(&rd, &it) != 0 || it.type != TIDEI_V_INT)
			luaL_error(L, "the stored state of rule '%s' is damaged", r->consumer);
		if (i > 0)
			f[i - 1] = it.u.i;
	}
	s->last_seen = f[0];
	s->ttl_due = f[1];
	s->win_due = f[2];
	state = rd.p;
	if (tidei_val_skip(&rd) != 0)
		luaL_error(L, "the stored state of rule '%s' is damaged", r->consumer);
	tidei_buf_reset(&s->enc);
	if (!(rd.p - state == 1 && *state == 0xc0)) /* nil: no state */
		tidei_buf_put(&s->enc, state, (size_t)(rd.p - state));
	if (s->enc.failed)
		luaL_error(L, "out of memory");
	if (count >= 6 && r->wins != NULL &&
	    tidei_rwins_decode(r->wins, tidei_rslot_wins(r, s), &rd, err) != TIDE_OK)
		luaL_error(L, "rule '%s': %s", r->consumer, err);
}

/* Append slot @p s's record to @p out; 0 when it has nothing to keep. */
static int
write_record(tidei_rule *r, const tidei_rslot *s, tidei_buf *out)
{
	int wins = r->wins != NULL && !tidei_rwins_empty(r->wins, tidei_rslot_wins(r, s));

	if (s->enc.len == 0 && !wins)
		return 0;
	tidei_val_array(out, 6);
	tidei_val_int(out, REC_FORMAT);
	tidei_val_int(out, s->last_seen);
	tidei_val_int(out, s->ttl_due);
	tidei_val_int(out, s->win_due);
	if (s->enc.len > 0)
		tidei_buf_put(out, s->enc.p, s->enc.len);
	else
		tidei_val_nil(out);
	if (wins)
		tidei_rwins_encode(r->wins, tidei_rslot_wins(r, s), out);
	else
		tidei_val_nil(out);
	return 1;
}

/* ------------------------------------------------------------------------
 * The cache of key states
 * ------------------------------------------------------------------------ */

void
tidei_rule_reset(tidei_rule *r, lua_State *L)
{
	if (L != NULL && r->cache_ref != LUA_NOREF) {
		/* emptied in place, not replaced: no protected call is active
		 * here, and setting a key to nil allocates nothing (a new table
		 * could raise, with nothing to catch it) */
		lua_rawgeti(L, LUA_REGISTRYINDEX, r->cache_ref);
		for (size_t k = 0; k < r->keys.n; k++) {
			lua_pushnil(L);
			lua_rawseti(L, -2, (lua_Integer)k + 1);
		}
		lua_pop(L, 1);
	}
	tidei_rslot_free_all(r);
	tidei_keymap_clear(&r->keys);
	r->next_due = INT64_MIN;
}

/* The slot of key @p k with its state pushed (nil if it has none).
 * [-0, +1, e] */
long
tidei_rslot_load(lua_State *L, tidei_rule *r, const char *k, size_t kn)
{
	int fresh;
	long at = tidei_keymap_get(&r->keys, k, kn);
	tidei_rslot *s;

	if (at < 0) {
		/* what the slot needs first: a key in the keymap has its slot,
		 * and a slot of a rule with windows has their array */
		tidei_win **w = NULL;
		if (r->keys.n >= r->scap) {
			size_t cap = r->scap ? r->scap * 2 : 256;
			tidei_rslot *v = realloc(r->slots, cap * sizeof *v);
			if (v == NULL)
				luaL_error(L, "not enough memory for the rule's keys");
			r->slots = v;
			r->scap = cap;
		}
		if (r->wins != NULL && tidei_rwins_count(r->wins) > SLOT_WINS &&
		    (w = calloc(tidei_rwins_count(r->wins), sizeof(tidei_win *))) == NULL)
			luaL_error(L, "not enough memory for the rule's keys");
		if ((at = tidei_keymap_put(&r->keys, k, kn, &fresh)) < 0) {
			free(w);
			luaL_error(L, "not enough memory for the rule's keys");
		}
		memset(&r->slots[at], 0, sizeof r->slots[at]);
		r->slots[at].last_seen = INT64_MIN;
		if (w != NULL)
			r->slots[at].w.out = w;
	}
	s = &r->slots[at];
	if (r->wins != NULL) /* on their way while the state is found */
		tidei_rwins_prefetch(r->wins, tidei_rslot_wins(r, s), 0);
	lua_rawgeti(L, LUA_REGISTRYINDEX, r->cache_ref);
	if (s->loaded) {
		lua_rawgeti(L, -1, at + 1);
		lua_remove(L, -2);
		return at;
	}
	if (!s->known) {
		MDB_val key, v;
		int mrc;
		key_start(r, 'S');
		tidei_buf_put(&r->kbuf, k, kn);
		if (r->kbuf.failed)
			luaL_error(L, "out of memory");
		key.mv_size = r->kbuf.len;
		key.mv_data = r->kbuf.p;
		mrc = mdb_get(r->log->txn, r->log->rules, &key, &v);
		if (mrc != 0 && mrc != MDB_NOTFOUND) {
			r->store_rc = tidei_err_mdb(mrc);
			luaL_error(L, "cannot read the state of rule '%s': %s", r->consumer,
				   mdb_strerror(mrc));
		}
		tidei_buf_reset(&s->enc);
		if (mrc == 0)
			read_record(L, r, s, v.mv_data, v.mv_size);
		s->known = 1;
	}
	if (s->enc.len > 0) {
		tidei_vreader rd = { s->enc.p, s->enc.p + s->enc.len };
		if (tidei_lua_push_val(L, &rd) != 0)
			luaL_error(L, "the stored state of rule '%s' is damaged", r->consumer);
	} else {
		lua_pushnil(L);
	}
	lua_pushvalue(L, -1);
	lua_rawseti(L, -3, at + 1);
	lua_remove(L, -2);
	s->loaded = 1;
	return at;
}

/* After a failed call: the key goes back to its last good record (read
 * again at its next call). */
void
tidei_rslot_rollback(tidei_rule *r, lua_State *L, long at)
{
	r->slots[at].loaded = 0;
	lua_rawgeti(L, LUA_REGISTRYINDEX, r->cache_ref);
	lua_pushnil(L);
	lua_rawseti(L, -2, at + 1);
	lua_pop(L, 1);
}

/* Encode the state at @p idx as slot @p at's (nil: it has none;
 * tide.delete: the key is forgotten, windows too).  [-0, +0, e] */
void
tidei_rslot_encode(lua_State *L, tidei_rule *r, long at, int idx)
{
	tidei_rslot *s = &r->slots[at];
	char err[TIDEI_ERRLEN];
	tidei_buf b = { 0 };

	if (lua_isnil(L, idx) || lua_touserdata(L, idx) == &tidei_delete_marker) {
		int had = s->enc.len > 0;
		if (lua_touserdata(L, idx) == &tidei_delete_marker && r->wins != NULL &&
		    !tidei_rwins_empty(r->wins, tidei_rslot_wins(r, s))) {
			tidei_rwins_drop(r->wins,
					 tidei_rslot_wins(r, s)); /* forgotten, windows too */
			had = 1;
		}
		if (!had)
			return; /* nothing kept, nothing to forget */
		tidei_rslot_dirty(r, s);
		tidei_buf_reset(&s->enc);
		return;
	}
	tidei_rslot_dirty(r, s);
	/* into the rule's scratch buffer, then over the last encoding if it
	 * fits (no allocation per call), else into a new one */
	b = r->scratch;
	tidei_buf_reset(&b);
	b.limit = tidei_lstate_ceiling(tidei_lstate_of(L));
	if (b.cap > b.limit) {
		tidei_buf_free(&b);
		b.limit = tidei_lstate_ceiling(tidei_lstate_of(L));
	}
	if (tidei_lua_to_val_charged(L, idx, &b, err) != 0) {
		tidei_buf_free(&b);
		r->scratch = b;
		luaL_error(L, "the state cannot be stored: %s", err);
	}
	b.limit = 0;
	if (b.failed) {
		tidei_buf_free(&b);
		r->scratch = b;
		luaL_error(L, "not enough memory to store the state");
	}
	r->scratch = b;
	if (s->enc.cap >= b.len && s->enc.p != NULL) {
		memcpy(s->enc.p, b.p, b.len);
		s->enc.len = b.len;
		return;
	}
	tidei_buf_free(&s->enc);
	s->enc = b;
	memset(&r->scratch, 0, sizeof r->scratch);
}

/* Encode the state at @p si as slot @p at's and keep it in the cache.
 * [-0, +0, e] */
void
tidei_rslot_settle(lua_State *L, tidei_rule *r, long at, int si)
{
	tidei_rslot_encode(L, r, at, si);
	lua_rawgeti(L, LUA_REGISTRYINDEX, r->cache_ref);
	if (lua_istable(L, si))
		lua_pushvalue(L, si);
	else
		lua_pushnil(L);
	lua_rawseti(L, -2, at + 1);
	lua_pop(L, 1);
}

/* ------------------------------------------------------------------------
 * Writes
 * ------------------------------------------------------------------------ */

/* Write slot @p at's record (or delete it: it has none) through @p cur:
 * the writes come in key order, and a positioned cursor finds the next
 * key on its page without a descent from the root. */
static int
write_slot(tidei_rule *r, tidei_log *log, MDB_cursor *cur, size_t at, char *err)
{
	MDB_val kv, dv;
	int mrc;
	tidei_rslot *s = &r->slots[at];
	size_t kn;
	const char *k;

	if (!s->dirty)
		return TIDE_OK;
	s->dirty = 0;
	k = tidei_keymap_key(&r->keys, at, &kn);
	key_start(r, 'S');
	tidei_buf_put(&r->kbuf, k, kn);
	tidei_buf_reset(&r->rec);
	if (r->kbuf.failed)
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	kv.mv_size = r->kbuf.len;
	kv.mv_data = r->kbuf.p;
	if (!write_record(r, s, &r->rec)) {
		mrc = mdb_cursor_get(cur, &kv, NULL, MDB_SET);
		if (mrc == 0)
			mrc = mdb_cursor_del(cur, 0);
		if (mrc != 0 && mrc != MDB_NOTFOUND)
			return mdb_fail(log, mrc, "cannot delete rule state", err);
		return TIDE_OK;
	}
	if (r->rec.failed)
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	dv.mv_size = r->rec.len;
	dv.mv_data = r->rec.p;
	if ((mrc = mdb_cursor_put(cur, &kv, &dv, 0)) != 0)
		return mdb_fail(log, mrc, "cannot store rule state", err);
	return TIDE_OK;
}

/* Dirty slots in key order, so that the writes walk the B-tree once. */
static int
by_key(const void *a, const void *b, void *keys)
{
	size_t an, bn;
	const char *ak = tidei_keymap_key(keys, *(const uint32_t *)a, &an);
	const char *bk = tidei_keymap_key(keys, *(const uint32_t *)b, &bn);
	int c = memcmp(ak, bk, an < bn ? an : bn);

	return c != 0 ? c : an < bn ? -1 : an > bn;
}

int
tidei_rule_flush(tidei_rule *r, tidei_log *log, char *err)
{
	int rc = TIDE_OK;

	MDB_cursor *cur;
	int mrc;

	if (!r->dirty_all && r->ndirty > 1)
		qsort_r(r->dirty, r->ndirty, sizeof *r->dirty, by_key, &r->keys);
	if ((mrc = mdb_cursor_open(log->txn, log->rules, &cur)) != 0)
		return mdb_fail(log, mrc, "cannot store rule state", err);
	if (r->dirty_all) {
		for (size_t at = 0; at < r->keys.n && rc == TIDE_OK; at++)
			rc = write_slot(r, log, cur, at, err);
	} else {
		for (size_t i = 0; i < r->ndirty && rc == TIDE_OK; i++)
			rc = write_slot(r, log, cur, r->dirty[i], err);
	}
	mdb_cursor_close(cur);
	if (rc == TIDE_OK) {
		r->ndirty = 0;
		r->dirty_all = 0;
		rc = tidei_rtimers_write(r->timers, log, err);
	}
	if (rc == TIDE_OK && r->meta_dirty) {
		rc = meta_write(r, log, err);
		r->meta_dirty = 0;
	}
	return rc;
}

size_t
tidei_rule_unwritten(const tidei_rule *r)
{
	return (r->dirty_all ? r->keys.n : r->ndirty) + tidei_rtimers_changes(r->timers);
}

int
tidei_rule_must_write(const tidei_rule *r, lua_State *L)
{
	tidei_lstate *ls = tidei_lstate_of(L);
	size_t n = tidei_rule_unwritten(r);

	return n >= TIDEI_RULE_UNWRITTEN || r->keys.n > TIDEI_RULE_CACHE ||
	       tidei_lstate_room(ls) < tidei_lstate_ceiling(ls) / 2;
}

void
tidei_rule_committed(tidei_rule *r, lua_State *L)
{
	tidei_lstate *ls = tidei_lstate_of(L);

	if (r->keys.n > TIDEI_RULE_CACHE || tidei_lstate_room(ls) < tidei_lstate_ceiling(ls) / 2) {
		int64_t next = r->next_due;
		tidei_rule_reset(r, L);
		r->next_due = next;
	}
}
