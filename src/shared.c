/*
 * shared.c - tables that several handlers share, made durable (shared.h).
 *
 * Each table is stored whole under 'G' name in the log's `rules`
 * database, encoded as a value (val.h), and written only when its
 * encoding changed since it was last read or written.
 */
#include "config.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "l_event.h"
#include "shared.h"
#include "val.h"

typedef struct shared_table {
	char *name;
	int ref;        /* the table itself */
	tidei_buf enc;  /* as last written or read */
	tidei_buf init; /* as the script made it */
} shared_table;

struct tidei_shared {
	shared_table *v;
	size_t n, cap;
	tidei_log *log;
	MDB_txn *txn;
	tidei_buf kbuf, tmp;
	char err[TIDEI_ERRLEN];
};

int
tidei_shared_new(tidei_shared **out)
{
	*out = calloc(1, sizeof **out);
	return *out ? TIDE_OK : TIDE_ENOMEM;
}

void
tidei_shared_free(tidei_shared *sh, lua_State *L)
{
	if (sh == NULL)
		return;
	for (size_t k = 0; k < sh->n; k++) {
		if (L != NULL)
			luaL_unref(L, LUA_REGISTRYINDEX, sh->v[k].ref);
		free(sh->v[k].name);
		tidei_buf_free(&sh->v[k].enc);
		tidei_buf_free(&sh->v[k].init);
	}
	free(sh->v);
	tidei_buf_free(&sh->kbuf);
	tidei_buf_free(&sh->tmp);
	free(sh);
}

int
tidei_shared_define(tidei_shared *sh, lua_State *L, const char *name, int idx, char *err)
{
	shared_table *t;

	for (size_t k = 0; k < sh->n; k++)
		if (strcmp(sh->v[k].name, name) == 0)
			return tidei_err(err, TIDE_EINVAL,
					 "a shared table named '%s' already exists", name);
	if (*name == '\0' || strlen(name) > TIDEI_SHARED_NAME_MAX)
		return tidei_err(err, TIDE_EINVAL, "a shared table's name has 1 to %d characters",
				 TIDEI_SHARED_NAME_MAX);
	if (tidei_array_grow(&sh->v, &sh->cap, sh->n, sizeof *sh->v, 4) != 0)
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	t = &sh->v[sh->n];
	memset(t, 0, sizeof *t);
	if ((t->name = strdup(name)) == NULL)
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	lua_pushvalue(L, idx);
	t->ref = luaL_ref(L, LUA_REGISTRYINDEX);
	sh->n++;
	return TIDE_OK;
}

static void
shared_key(tidei_shared *sh, const char *name)
{
	tidei_buf_reset(&sh->kbuf);
	tidei_buf_putc(&sh->kbuf, 'G');
	tidei_buf_put(&sh->kbuf, name, strlen(name));
}

/* Fill each table in place from the log (a table that was never written
 * keeps its initial contents).  [-1, +0, e] */
static int
l_shared_load(lua_State *L)
{
	tidei_shared *sh = lua_touserdata(L, 1);

	for (size_t k = 0; k < sh->n; k++) {
		shared_table *t = &sh->v[k];
		MDB_val key, v;
		tidei_vreader rd;
		int mrc;
		shared_key(sh, t->name);
		key.mv_size = sh->kbuf.len;
		key.mv_data = sh->kbuf.p;
		mrc = sh->log->has_rules ? mdb_get(sh->txn, sh->log->rules, &key, &v)
					 : MDB_NOTFOUND;
		if (mrc != 0 && mrc != MDB_NOTFOUND)
			return luaL_error(L, "cannot read shared table '%s': %s", t->name,
					  mdb_strerror(mrc));
		if (t->init.len == 0) {
			/* the first load: remember the table as the script made it */
			lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref);
			if (tidei_lua_to_val(L, -1, &t->init, sh->err) != 0 || t->init.failed)
				return luaL_error(L, "shared table '%s' cannot be stored: %s",
						  t->name, sh->err);
			lua_pop(L, 1);
			if (mrc == MDB_NOTFOUND) {
				tidei_buf_reset(&t->enc);
				tidei_buf_put(&t->enc, t->init.p, t->init.len);
				continue;
			}
		}
		if (mrc == MDB_NOTFOUND) {
			v.mv_size = t->init.len;
			v.mv_data = t->init.p;
		}
		tidei_buf_reset(&t->enc);
		tidei_buf_put(&t->enc, v.mv_data, v.mv_size);
		rd.p = v.mv_data;
		rd.end = rd.p + v.mv_size;
		lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref);
		if (tidei_lua_push_val(L, &rd) != 0 || !lua_istable(L, -1))
			return luaL_error(L, "shared table '%s' is damaged", t->name);
		/* empty the table, then copy the stored one into it */
		lua_pushnil(L);
		while (lua_next(L, -3) != 0) {
			lua_pop(L, 1);
			lua_pushvalue(L, -1);
			lua_pushnil(L);
			lua_rawset(L, -5);
		}
		lua_pushnil(L);
		while (lua_next(L, -2) != 0) {
			lua_pushvalue(L, -2);
			lua_insert(L, -2);
			lua_rawset(L, -5);
		}
		lua_pop(L, 2);
	}
	return 0;
}

int
tidei_shared_load(tidei_shared *sh, tidei_script *s, tidei_log *log, MDB_txn *txn, char *err)
{
	char why[TIDEI_ERRLEN];

	if (sh == NULL || sh->n == 0)
		return TIDE_OK;
	sh->log = log;
	sh->txn = txn;
	if (tidei_script_protect(s, l_shared_load, sh, why, NULL) != TIDE_OK)
		return tidei_err(err, TIDE_EIO, "%s", why);
	return TIDE_OK;
}

/* Encode each table into its enc when it changed; the changed ones get
 * their slot in sh->tmp marked.  [-1, +0, e] */
static int
l_shared_encode(lua_State *L)
{
	tidei_shared *sh = lua_touserdata(L, 1);
	char err[TIDEI_ERRLEN];

	tidei_buf_reset(&sh->tmp);
	for (size_t k = 0; k < sh->n; k++) {
		shared_table *t = &sh->v[k];
		tidei_buf b = { 0 };
		uint8_t changed;
		lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref);
		if (tidei_lua_to_val_charged(L, -1, &b, err) != 0 || b.failed) {
			tidei_buf_free(&b);
			return luaL_error(L, "shared table '%s' cannot be stored: %s", t->name,
					  err);
		}
		lua_pop(L, 1);
		changed = b.len != t->enc.len || memcmp(b.p, t->enc.p, b.len) != 0;
		if (changed) {
			tidei_buf_free(&t->enc);
			t->enc = b;
		} else {
			tidei_buf_free(&b);
		}
		tidei_buf_putc(&sh->tmp, changed);
	}
	return 0;
}

int
tidei_shared_flush(tidei_shared *sh, tidei_script *s, tidei_log *log, char *err)
{
	char why[TIDEI_ERRLEN];

	if (sh == NULL || sh->n == 0)
		return TIDE_OK;
	if (tidei_script_protect(s, l_shared_encode, sh, why, NULL) != TIDE_OK)
		return tidei_err(err, TIDE_ESCRIPT, "%s", why);
	if (sh->tmp.failed)
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	for (size_t k = 0; k < sh->n; k++) {
		MDB_val key, v;
		int mrc;
		if (!sh->tmp.p[k])
			continue;
		shared_key(sh, sh->v[k].name);
		key.mv_size = sh->kbuf.len;
		key.mv_data = sh->kbuf.p;
		v.mv_size = sh->v[k].enc.len;
		v.mv_data = sh->v[k].enc.p;
		if ((mrc = mdb_put(log->txn, log->rules, &key, &v, 0)) != 0)
			return tidei_err(
				err, tidei_log_txn_fail(log, mrc, "cannot store a shared table"),
				"%s", log->err);
	}
	return TIDE_OK;
}
