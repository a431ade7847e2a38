/*
 * pstate.c - projection states in the `state` database (see pstate.h for
 * the key layout).
 *
 * Owns the encoding of a state's LMDB key and of a long key's value; knows
 * nothing of Lua, handlers or builds (projection.c), nor of a projection's
 * progress beyond the generation a query reads.
 *
 * The per-event path (tidei_pstate_get) costs a short key nothing over a
 * plain mdb_get: only a key longer than the projection's L is hashed.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyhash.h"
#include "pstate.h"
#include "val.h"

#define KEYMAX 511 /* LMDB's default MDB_MAXKEYSIZE */
/* Between a long key's first bytes and its hash.  Any byte would do (the
 * length tells a long key apart); zero sorts it before the keys stored as
 * they are that share those bytes and go on. */
#define MARK 0x00

/* L: the longest key of a projection named by @p nl bytes that is stored
 * as it is, in key format @p fmt (format 1 stored up to L + 1 bytes so,
 * and nothing longer). */
static size_t
verbatim_max(size_t nl, uint32_t fmt)
{
	return KEYMAX - nl - 5 - (fmt >= 2 ? 1 : 0);
}

/* name "\0" generation: what every key of a generation starts with. */
static size_t
key_base(uint8_t *out, const char *name, size_t nl, uint32_t gen)
{
	memcpy(out, name, nl);
	out[nl] = '\0';
	for (int i = 0; i < 4; i++)
		out[nl + 1 + i] = (uint8_t)(gen >> (8 * (3 - i)));
	return nl + 5;
}

/* The stored form of a key longer than @p vm: @p vm + 1 bytes. */
static void
long_form(uint8_t *out, const char *key, size_t klen, size_t vm)
{
	size_t keep = vm - TIDEI_KEYHASH_LEN;

	memcpy(out, key, keep);
	out[keep] = MARK;
	tidei_keyhash(out + keep + 1, key, klen, NULL, 0);
}

static size_t
state_key(uint8_t *out, const char *name, size_t nl, uint32_t gen, const char *key, size_t klen,
	  size_t vm)
{
	size_t base = key_base(out, name, nl, gen);

	if (klen <= vm) {
		memcpy(out + base, key, klen);
		return base + klen;
	}
	long_form(out + base, key, klen, vm);
	return base + vm + 1;
}

/* A long key's value: the whole key, then the state.  0, or -1 when it is
 * malformed. */
static int
split_long(const MDB_val *v, const char **key, size_t *klen, MDB_val *state)
{
	tidei_vreader r = { v->mv_data, (const uint8_t *)v->mv_data + v->mv_size };
	tidei_vitem it;

	if (tidei_val_next(&r, &it) != 0 || it.type != TIDEI_V_BIN)
		return -1;
	*key = it.u.s.p;
	*klen = it.u.s.n;
	state->mv_data = (void *)r.p;
	state->mv_size = (size_t)(r.end - r.p);
	return 0;
}

int
tidei_pstate_get(MDB_txn *txn, MDB_dbi dbi, const char *name, uint32_t gen, const char *key,
		 size_t klen, uint32_t fmt, MDB_val *state)
{
	uint8_t k[KEYMAX];
	size_t nl = strlen(name), vm, sn;
	const char *stored;
	MDB_val kv;
	int mrc;

	if (nl > TIDEI_PROJ_NAME_MAX)
		return MDB_NOTFOUND;
	vm = verbatim_max(nl, fmt);
	if (klen > vm && fmt < 2)
		return MDB_NOTFOUND; /* format 1 had no longer keys */
	kv.mv_size = state_key(k, name, nl, gen, key, klen, vm);
	kv.mv_data = k;
	if ((mrc = mdb_get(txn, dbi, &kv, state)) != 0 || klen <= vm)
		return mrc;
	if (split_long(state, &stored, &sn, state) != 0)
		return MDB_CORRUPTED;
	/* the hash stands for the key; the stored key says it is this one */
	return sn == klen && memcmp(stored, key, klen) == 0 ? 0 : MDB_NOTFOUND;
}

int
tidei_pstate_check(const MDB_val *k, const MDB_val *v, size_t nl, uint32_t fmt, MDB_val *state)
{
	size_t vm = verbatim_max(nl, fmt), sn;
	const char *stored;
	uint8_t want[KEYMAX];

	*state = *v;
	if (k->mv_size < nl + 5 || k->mv_size - nl - 5 <= vm)
		return 0;
	if (fmt < 2 || k->mv_size - nl - 5 != vm + 1 || split_long(v, &stored, &sn, state) != 0)
		return -1;
	/* a key of vm bytes or fewer is stored as it is: this value is not
	 * a long key's (and its first bytes are not there to compare) */
	if (sn <= vm)
		return -1;
	/* the stored form must be that of the key the value holds */
	long_form(want, stored, sn, vm);
	return memcmp(want, (const uint8_t *)k->mv_data + nl + 5, vm + 1) == 0 ? 0 : -1;
}

/* ------------------------------------------------------------------------
 * Writing
 * ------------------------------------------------------------------------ */

typedef struct rec {
	const uint8_t *key; /* the whole key */
	uint32_t klen;
	const uint8_t *val; /* the encoded state; NULL: delete the key */
	uint32_t vlen;
	const uint8_t *skey; /* the key as stored after name "\0" generation */
	size_t sklen;
} rec;

static int
by_stored_key(const void *a, const void *b)
{
	const rec *x = a, *y = b;
	size_t n = x->sklen < y->sklen ? x->sklen : y->sklen;
	int c = memcmp(x->skey, y->skey, n);

	return c ? c : (x->sklen > y->sklen) - (x->sklen < y->sklen);
}

/* The records of @p out as an array (*@p v, *@p n); -1 when out of memory. */
static int
parse_records(const tidei_buf *const *out, size_t nout, rec **v, size_t *n)
{
	size_t cap = 0;

	*v = NULL;
	*n = 0;
	for (size_t b = 0; b < nout; b++)
		for (size_t at = 0; at < out[b]->len;) {
			const uint8_t *o = out[b]->p;
			rec r;
			r.klen = tidei_ld32(o + at);
			r.key = o + at + 4;
			at += 4 + r.klen;
			r.vlen = tidei_ld32(o + at);
			r.val = r.vlen == UINT32_MAX ? NULL : o + at + 4;
			at += 4 + (r.vlen == UINT32_MAX ? 0 : r.vlen);
			r.skey = r.key;
			r.sklen = r.klen;
			if (tidei_array_grow(v, &cap, *n, sizeof **v, 1024) != 0)
				return -1;
			(*v)[(*n)++] = r;
		}
	return 0;
}

int
tidei_pstate_write(MDB_txn *txn, MDB_dbi dbi, const char *name, uint32_t gen, uint32_t fmt,
		   const tidei_buf *const *out, size_t nout, char *err)
{
	uint8_t key[KEYMAX];
	size_t nl = strlen(name), vm, base, n = 0, nlong = 0, k;
	uint8_t *forms = NULL; /* the stored forms of the long keys */
	tidei_buf val = { 0 };
	rec *v = NULL;
	MDB_cursor *cur = NULL;
	int rc = TIDE_OK, mrc, append = 1;

	if (nl > TIDEI_PROJ_NAME_MAX)
		return tidei_err(err, TIDE_EINVAL, "projection name '%.40s...' is too long", name);
	vm = verbatim_max(nl, fmt);
	base = key_base(key, name, nl, gen);
	if (parse_records(out, nout, &v, &n) != 0)
		goto nomem;
	for (k = 0; k < n; k++)
		nlong += v[k].klen > vm;
	if (nlong > 0 && (forms = malloc(nlong * (vm + 1))) == NULL)
		goto nomem;
	for (k = 0, nlong = 0; k < n; k++)
		if (v[k].klen > vm) {
			uint8_t *f = forms + nlong++ * (vm + 1);
			long_form(f, (const char *)v[k].key, v[k].klen, vm);
			v[k].skey = f;
			v[k].sklen = vm + 1;
		}
	/* in the order of the stored keys: neighbouring B-tree pages, and
	 * appends for a new generation */
	if (n > 0)
		qsort(v, n, sizeof *v, by_stored_key);
	if ((mrc = mdb_cursor_open(txn, dbi, &cur)) != 0)
		goto fail;
	for (k = 0; k < n; k++) {
		MDB_val kv = { base + v[k].sklen, key }, vv;
		memcpy(key + base, v[k].skey, v[k].sklen);
		if (v[k].val == NULL) {
			mrc = mdb_del(txn, dbi, &kv, NULL);
			if (mrc == MDB_NOTFOUND)
				mrc = 0;
		} else {
			vv.mv_size = v[k].vlen;
			vv.mv_data = (void *)v[k].val;
			if (v[k].klen > vm) { /* the whole key, then the state */
				tidei_buf_reset(&val);
				tidei_val_bin(&val, v[k].key, v[k].klen);
				tidei_buf_put(&val, v[k].val, v[k].vlen);
				if (val.failed)
					goto nomem;
				vv.mv_size = val.len;
				vv.mv_data = val.p;
			}
			/* A new generation's first write usually comes after every
			 * key in the database: appending fills its pages and skips
			 * the searches.  Refused (MDB_KEYEXIST) as soon as a key is
			 * not the last; then the rest go in place. */
			mrc = MDB_KEYEXIST;
			if (append)
				mrc = mdb_cursor_put(cur, &kv, &vv, MDB_APPEND);
			if (mrc == MDB_KEYEXIST) {
				append = 0;
				mrc = mdb_cursor_put(cur, &kv, &vv, 0);
			}
		}
		if (mrc != 0)
			goto fail;
	}
	goto done;
nomem:
	rc = tidei_err(err, TIDE_ENOMEM, "out of memory");
	goto done;
fail:
	rc = tidei_err(err, tidei_err_mdb(mrc), "cannot write the state of %s: %s", name,
		       mdb_strerror(mrc));
done:
	if (cur != NULL)
		mdb_cursor_close(cur);
	tidei_buf_free(&val);
	free(forms);
	free(v);
	return rc;
}

/* ------------------------------------------------------------------------
 * Format 1 to 2
 * ------------------------------------------------------------------------ */

int
tidei_pstate_upgrade(MDB_txn *txn, MDB_dbi dbi)
{
	tidei_buf found = { 0 }, val = { 0 };
	MDB_cursor *cur;
	MDB_val k, v;
	int mrc;

	/* Keys of exactly KEYMAX bytes are those of L + 1 bytes, whatever the
	 * name (it ends at the first zero byte).  Collected first: a cursor
	 * must not meet the keys it writes. */
	if ((mrc = mdb_cursor_open(txn, dbi, &cur)) != 0)
		return mrc;
	for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); mrc == 0;
	     mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		uint8_t vl[4];
		if (k.mv_size != KEYMAX || memchr(k.mv_data, 0, KEYMAX) == NULL)
			continue;
		tidei_st32(vl, (uint32_t)v.mv_size);
		tidei_buf_put(&found, k.mv_data, KEYMAX);
		tidei_buf_put(&found, vl, 4);
		tidei_buf_put(&found, v.mv_data, v.mv_size);
	}
	mdb_cursor_close(cur);
	mrc = mrc == MDB_NOTFOUND ? 0 : mrc;
	if (mrc == 0 && found.failed)
		mrc = ENOMEM;
	for (size_t at = 0; mrc == 0 && at < found.len;) {
		uint8_t *old = found.p + at;
		size_t nl = strlen((const char *)old), vm = verbatim_max(nl, 2);
		uint32_t vlen = tidei_ld32(old + KEYMAX);
		uint8_t now[KEYMAX];
		at += KEYMAX + 4 + vlen;
		if (nl > TIDEI_PROJ_NAME_MAX) /* not a projection's */
			continue;
		if ((mrc = mdb_del(txn, dbi, &(MDB_val){ KEYMAX, old }, NULL)) != 0)
			break;
		memcpy(now, old, nl + 5);
		long_form(now + nl + 5, (const char *)old + nl + 5, vm + 1, vm);
		tidei_buf_reset(&val);
		tidei_val_bin(&val, old + nl + 5, vm + 1);
		tidei_buf_put(&val, old + KEYMAX + 4, vlen);
		if (val.failed) {
			mrc = ENOMEM;
			break;
		}
		mrc = mdb_put(txn, dbi, &(MDB_val){ KEYMAX, now }, &(MDB_val){ val.len, val.p }, 0);
	}
	tidei_buf_free(&found);
	tidei_buf_free(&val);
	return mrc;
}

/* ------------------------------------------------------------------------
 * Progress records
 * ------------------------------------------------------------------------ */

#define META_FIXED 60

int
tidei_proj_meta_get(MDB_txn *txn, MDB_dbi dbi, const char *name, tidei_proj_meta *m)
{
	MDB_val k = { strlen(name), (void *)name }, v;
	const uint8_t *p;
	int rc = mdb_get(txn, dbi, &k, &v);

	memset(m, 0, sizeof *m);
	if (rc == MDB_NOTFOUND)
		return TIDE_ENOTFOUND;
	if (rc != 0)
		return tidei_err_mdb(rc);
	if (v.mv_size < META_FIXED)
		return TIDE_EIO;
	p = v.mv_data;
	m->live = tidei_ld32(p);
	m->build = tidei_ld32(p + 4);
	m->live_seq = tidei_ld64(p + 8);
	m->build_seq = tidei_ld64(p + 16);
	m->hash = tidei_ld64(p + 24);
	m->version = (int64_t)tidei_ld64(p + 32);
	m->faulted = p[40];
	m->gc = p[41];
	m->fault_seq = tidei_ld64(p + 44);
	snprintf(m->error, sizeof m->error, "%.*s", (int)(v.mv_size - META_FIXED),
		 (const char *)p + META_FIXED);
	return TIDE_OK;
}

int
tidei_proj_meta_put(MDB_txn *txn, MDB_dbi dbi, const char *name, const tidei_proj_meta *m)
{
	uint8_t raw[META_FIXED + sizeof m->error];
	size_t elen = strlen(m->error);
	MDB_val k = { strlen(name), (void *)name }, v = { META_FIXED + elen, raw };

	memset(raw, 0, META_FIXED);
	tidei_st32(raw, m->live);
	tidei_st32(raw + 4, m->build);
	tidei_st64(raw + 8, m->live_seq);
	tidei_st64(raw + 16, m->build_seq);
	tidei_st64(raw + 24, m->hash);
	tidei_st64(raw + 32, (uint64_t)m->version);
	raw[40] = m->faulted;
	raw[41] = m->gc;
	tidei_st64(raw + 44, m->fault_seq);
	memcpy(raw + META_FIXED, m->error, elen);
	return mdb_put(txn, dbi, &k, &v, 0);
}

/* ------------------------------------------------------------------------
 * Queries
 * ------------------------------------------------------------------------ */

int
tidei_state_query(MDB_txn *txn, const tidei_pstate_dbs *db, const char *name, const char *key,
		  size_t klen, const char *prefix, size_t limit,
		  int (*fn)(void *ud, const char *key, size_t klen, const uint8_t *val,
			    size_t vlen),
		  void *ud)
{
	tidei_proj_meta m;
	uint8_t k[KEYMAX];
	size_t nl = strlen(name), plen = prefix ? strlen(prefix) : 0, base, vm, keep, scan, n = 0;
	MDB_cursor *cur;
	MDB_val kv, v;
	uint32_t fmt = db->fmt;
	int rc = tidei_proj_meta_get(txn, db->projections, name, &m), mrc;

	if (rc != TIDE_OK)
		return rc;
	if (m.live == 0)
		return TIDE_ESTATE;
	if (nl > TIDEI_PROJ_NAME_MAX)
		return TIDE_ENOTFOUND;
	if (key != NULL) {
		if (klen == 0)
			return TIDE_ENOTFOUND;
		mrc = tidei_pstate_get(txn, db->state, name, m.live, key, klen, fmt, &v);
		if (mrc != 0)
			return tidei_err_mdb(mrc);
		fn(ud, key, klen, v.mv_data, v.mv_size);
		return TIDE_OK;
	}
	/* Scan the keys that start with the prefix as stored: all of it, or
	 * the part a long key keeps; then compare whole keys. */
	vm = verbatim_max(nl, fmt);
	keep = fmt >= 2 ? vm - TIDEI_KEYHASH_LEN : vm;
	scan = plen > keep ? keep : plen;
	base = key_base(k, name, nl, m.live);
	if (scan > 0)
		memcpy(k + base, prefix, scan);
	kv.mv_size = base + scan;
	kv.mv_data = k;
	if ((mrc = mdb_cursor_open(txn, db->state, &cur)) != 0)
		return tidei_err_mdb(mrc);
	for (mrc = mdb_cursor_get(cur, &kv, &v, MDB_SET_RANGE); mrc == 0;
	     mrc = mdb_cursor_get(cur, &kv, &v, MDB_NEXT)) {
		const char *full = (const char *)kv.mv_data + base;
		size_t flen = kv.mv_size - base;
		if (kv.mv_size < base + scan || memcmp(kv.mv_data, k, base + scan) != 0)
			break;
		if (fmt >= 2 && flen == vm + 1 && split_long(&v, &full, &flen, &v) != 0) {
			rc = TIDE_EIO;
			break;
		}
		if (plen > 0 && (flen < plen || memcmp(full, prefix, plen) != 0))
			continue;
		if (fn(ud, full, flen, v.mv_data, v.mv_size))
			break;
		if (limit && ++n >= limit)
			break;
	}
	mdb_cursor_close(cur);
	if (rc != TIDE_OK)
		return rc;
	return mrc == 0 || mrc == MDB_NOTFOUND ? TIDE_OK : tidei_err_mdb(mrc);
}
