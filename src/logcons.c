/*
 * logcons.c - the consumers' records in the log: events waiting for a
 * retry (pending), dead letters, and once claims.  Keys are the
 * consumer's name, a zero byte and the seq (big-endian, so that a
 * consumer's records sort by seq), or its name and the claimed key; they
 * are written in the engine's open write transaction like everything
 * else a turn does.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"

/* consumer "\0" seq (big-endian, so keys sort by seq) */
static size_t
seq_key(uint8_t *key, const char *consumer, uint64_t seq)
{
	size_t n = strlen(consumer);

	if (n > TIDEI_KEYMAX - 9)
		n = TIDEI_KEYMAX - 9;
	memcpy(key, consumer, n);
	key[n] = '\0';
	for (int i = 0; i < 8; i++)
		key[n + 1 + i] = (uint8_t)(seq >> (8 * (7 - i)));
	return n + 9;
}

static uint64_t
key_seq(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

int
tidei_log_pending_put(tidei_log *log, const char *consumer, uint64_t seq,
		      const tidei_pending_rec *r)
{
	uint8_t key[TIDEI_KEYMAX + 1], raw[16];
	MDB_val k = { seq_key(key, consumer, seq), key }, v = { sizeof raw, raw };
	int rc;

	raw[0] = r->state;
	raw[1] = r->from_dlq;
	raw[2] = raw[3] = 0;
	tidei_st32(raw + 4, r->attempts);
	tidei_st64(raw + 8, (uint64_t)r->next_at);
	rc = mdb_put(log->txn, log->pending, &k, &v, 0);
	return rc ? tidei_log_txn_fail(log, rc, "cannot record a retry") : TIDE_OK;
}

int
tidei_log_pending_del(tidei_log *log, const char *consumer, uint64_t seq)
{
	uint8_t key[TIDEI_KEYMAX + 1];
	MDB_val k = { seq_key(key, consumer, seq), key };
	int rc = mdb_del(log->txn, log->pending, &k, NULL);

	return rc && rc != MDB_NOTFOUND ? tidei_log_txn_fail(log, rc, "cannot clear a retry")
					: TIDE_OK;
}

int
tidei_log_pending_each(tidei_log *log, MDB_txn *txn, const char *consumer,
		       int (*fn)(void *ud, uint64_t seq, const tidei_pending_rec *r), void *ud)
{
	uint8_t key[TIDEI_KEYMAX + 1];
	size_t plen = seq_key(key, consumer, 0) - 8;
	MDB_cursor *cur;
	MDB_val k = { plen + 8, key }, v;
	int rc, mrc;

	if ((mrc = mdb_cursor_open(txn, log->pending, &cur)) != 0)
		return tidei_log_txn_fail(log, mrc, "cannot read retries");
	rc = TIDE_OK;
	for (mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); mrc == 0 && rc == TIDE_OK;
	     mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		const uint8_t *raw = v.mv_data;
		tidei_pending_rec r;
		if (k.mv_size != plen + 8 || memcmp(k.mv_data, key, plen) != 0)
			break;
		if (v.mv_size < 16)
			continue;
		r.state = raw[0];
		r.from_dlq = raw[1];
		r.attempts = tidei_ld32(raw + 4);
		r.next_at = (int64_t)tidei_ld64(raw + 8);
		rc = fn(ud, key_seq((const uint8_t *)k.mv_data + plen), &r);
	}
	mdb_cursor_close(cur);
	if (mrc != 0 && mrc != MDB_NOTFOUND)
		return tidei_log_txn_fail(log, mrc, "cannot read retries");
	return rc;
}

int
tidei_log_dead_put(tidei_log *log, const char *consumer, uint64_t seq, const tidei_dead_rec *r)
{
	uint8_t key[TIDEI_KEYMAX + 1];
	MDB_val k = { seq_key(key, consumer, seq), key }, v;
	uint8_t *p;
	int rc;

	v.mv_size = 16 + r->where_len + r->error_len;
	v.mv_data = NULL;
	rc = mdb_put(log->txn, log->dead, &k, &v, MDB_RESERVE);
	if (rc != 0)
		return tidei_log_txn_fail(log, rc, "cannot store a dead letter");
	p = v.mv_data;
	tidei_st32(p, r->attempts);
	tidei_st32(p + 4, (uint32_t)r->where_len);
	tidei_st64(p + 8, (uint64_t)r->failed_at);
	memcpy(p + 16, r->where, r->where_len);
	memcpy(p + 16 + r->where_len, r->error, r->error_len);
	return TIDE_OK;
}

int
tidei_log_dead_del(tidei_log *log, const char *consumer, uint64_t seq)
{
	uint8_t key[TIDEI_KEYMAX + 1];
	MDB_val k = { seq_key(key, consumer, seq), key };
	int rc = mdb_del(log->txn, log->dead, &k, NULL);

	if (rc == MDB_NOTFOUND)
		return TIDE_ENOTFOUND;
	return rc ? tidei_log_txn_fail(log, rc, "cannot remove a dead letter") : TIDE_OK;
}

static int
dead_decode(const MDB_val *v, tidei_dead_rec *r)
{
	const uint8_t *p = v->mv_data;

	if (v->mv_size < 16)
		return -1;
	r->attempts = tidei_ld32(p);
	r->where_len = tidei_ld32(p + 4);
	r->failed_at = (int64_t)tidei_ld64(p + 8);
	if (r->where_len > v->mv_size - 16)
		return -1;
	r->where = (const char *)p + 16;
	r->error = r->where + r->where_len;
	r->error_len = v->mv_size - 16 - r->where_len;
	return 0;
}

int
tidei_log_dead_get(tidei_log *log, MDB_txn *txn, const char *consumer, uint64_t seq,
		   tidei_dead_rec *r)
{
	uint8_t key[TIDEI_KEYMAX + 1];
	MDB_val k = { seq_key(key, consumer, seq), key }, v;
	int rc = mdb_get(txn, log->dead, &k, &v);

	if (rc == MDB_NOTFOUND)
		return TIDE_ENOTFOUND;
	if (rc != 0)
		return tidei_log_txn_fail(log, rc, "cannot read a dead letter");
	return dead_decode(&v, r) == 0 ? TIDE_OK : TIDE_EIO;
}

int
tidei_log_dead_each(tidei_log *log, MDB_txn *txn, const char *consumer,
		    int (*fn)(void *ud, const char *consumer, uint64_t seq,
			      const tidei_dead_rec *r),
		    void *ud)
{
	return tidei_log_dead_each_after(log, txn, consumer, NULL, 0, fn, ud);
}

int
tidei_log_dead_each_after(
	tidei_log *log, MDB_txn *txn, const char *consumer, const char *after, uint64_t after_seq,
	int (*fn)(void *ud, const char *consumer, uint64_t seq, const tidei_dead_rec *r), void *ud)
{
	uint8_t key[TIDEI_KEYMAX + 1], from[TIDEI_KEYMAX + 1];
	size_t plen = consumer ? seq_key(key, consumer, 0) - 8 : 0;
	MDB_cursor *cur;
	MDB_val k = { plen + 8, key }, v;
	char name[TIDEI_KEYMAX + 1];
	int mrc, stop = 0;

	if ((mrc = mdb_cursor_open(txn, log->dead, &cur)) != 0)
		return tidei_log_txn_fail(log, mrc, "cannot read dead letters");
	if (after != NULL) {
		/* the first key past (after, after_seq) */
		k.mv_size = seq_key(from, after, after_seq);
		k.mv_data = from;
		mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
		if (mrc == 0 && k.mv_size == seq_key(from, after, after_seq) &&
		    memcmp(k.mv_data, from, k.mv_size) == 0)
			mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
	} else {
		mrc = consumer ? mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE)
			       : mdb_cursor_get(cur, &k, &v, MDB_FIRST);
	}
	for (; mrc == 0 && !stop; mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		tidei_dead_rec r;
		size_t nl;
		if (k.mv_size < 9 ||
		    (consumer && (k.mv_size != plen + 8 || memcmp(k.mv_data, key, plen) != 0)))
			break;
		nl = k.mv_size - 9;
		memcpy(name, k.mv_data, nl);
		name[nl] = '\0';
		if (dead_decode(&v, &r) != 0)
			continue;
		stop = fn(ud, name, key_seq((const uint8_t *)k.mv_data + nl + 1), &r);
	}
	mdb_cursor_close(cur);
	if (mrc != 0 && mrc != MDB_NOTFOUND)
		return tidei_log_txn_fail(log, mrc, "cannot read dead letters");
	return TIDE_OK;
}

/* Whether a claim is stored under the key @p kv (*@p found),
 * as of @p txn.  TIDE_OK or the read's failure. */
static int
once_found(tidei_log *log, MDB_txn *txn, MDB_val *kv, int *found)
{
	MDB_val v;
	int rc = mdb_get(txn, log->once, kv, &v);

	*found = rc == 0;
	if (rc != 0 && rc != MDB_NOTFOUND)
		return tidei_log_txn_fail(log, rc, "cannot read tide.once");
	return TIDE_OK;
}

/* A long key claimed before format 2 is stored under the old hash, which
 * cannot be recomputed from what is stored: look there too. */
static int
once_legacy(tidei_log *log, MDB_txn *txn, const char *consumer, size_t cn, const char *key,
	    size_t n, int *found)
{
	uint8_t k[TIDEI_KEYMAX + 1];
	MDB_val kv;

	*found = 0;
	if (!log->once_legacy || cn + 1 + n <= TIDEI_KEYMAX)
		return TIDE_OK;
	kv.mv_size = tidei_log_make_key_v1(k, consumer, cn, key, n);
	kv.mv_data = k;
	return once_found(log, txn, &kv, found);
}

int
tidei_log_once(tidei_log *log, const char *consumer, const char *key, size_t n, uint64_t seq,
	       int *first)
{
	uint8_t k[TIDEI_KEYMAX + 1], raw[8];
	size_t cn = strlen(consumer);
	MDB_val kv, v = { 8, raw };
	int rc, found;

	*first = 0;
	if ((rc = once_legacy(log, log->txn, consumer, cn, key, n, &found)) != TIDE_OK || found)
		return rc;
	/* the same long-key scheme as ids: consumer "\0" key */
	kv.mv_size = tidei_log_make_key(log->format, k, consumer, cn, key, n);
	kv.mv_data = k;
	tidei_st64(raw, seq);
	rc = mdb_put(log->txn, log->once, &kv, &v, MDB_NOOVERWRITE);
	if (rc == MDB_KEYEXIST) {
		*first = 0;
		return TIDE_OK;
	}
	if (rc != 0)
		return tidei_log_txn_fail(log, rc, "cannot record tide.once");
	*first = 1;
	return TIDE_OK;
}

int
tidei_log_once_get(tidei_log *log, MDB_txn *txn, const char *consumer, const char *key, size_t n,
		   int *first)
{
	uint8_t k[TIDEI_KEYMAX + 1];
	size_t cn = strlen(consumer);
	MDB_val kv;
	int rc, found;

	*first = 0;
	if ((rc = once_legacy(log, txn, consumer, cn, key, n, &found)) != TIDE_OK || found)
		return rc;
	kv.mv_size = tidei_log_make_key(log->format, k, consumer, cn, key, n);
	kv.mv_data = k;
	if ((rc = once_found(log, txn, &kv, &found)) != TIDE_OK)
		return rc;
	*first = !found;
	return TIDE_OK;
}

int
tidei_log_stream_head(tidei_log *log, MDB_txn *txn, const char *subject, size_t n,
		      uint64_t *version, uint64_t *last)
{
	uint8_t key[TIDEI_KEYMAX + 1];
	MDB_val k, v;
	int rc;

	k.mv_size = tidei_log_make_key(tidei_log_key_format(log, txn), key, subject, n, NULL, 0);
	k.mv_data = key;
	*version = *last = 0;
	rc = mdb_get(txn, log->streams, &k, &v);
	if (rc == MDB_NOTFOUND)
		return TIDE_ENOTFOUND;
	if (rc != 0 || v.mv_size != 16)
		return tidei_log_txn_fail(log, rc ? rc : MDB_CORRUPTED, "cannot read stream head");
	*version = tidei_ld64(v.mv_data);
	*last = tidei_ld64((const uint8_t *)v.mv_data + 8);
	return TIDE_OK;
}

int
tidei_log_seq_key_parse(const void *key, size_t klen, size_t *name_len, uint64_t *seq)
{
	const uint8_t *p = key;

	if (klen < 9 || p[klen - 9] != '\0' || memchr(p, '\0', klen - 9) != NULL)
		return -1;
	*name_len = klen - 9;
	*seq = key_seq(p + klen - 8);
	return 0;
}

int
tidei_log_dead_decode(const MDB_val *v, tidei_dead_rec *r)
{
	return dead_decode(v, r);
}
