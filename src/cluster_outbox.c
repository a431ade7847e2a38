/*
 * cluster_outbox.c - what the consumers of a cluster node emit, on its
 * way to the stream (cluster_int.h).
 */
#include "config.h"

#include "cluster_int.h"

/* ------------------------------------------------------------------------
 * The outbox: what the consumers emit
 *
 * In a cluster an emitted event belongs to the partition of its own key,
 * which another node may own: it goes to the stream, not to this log.
 * It is put in the log's meta database in the turn's transaction (with
 * the checkpoints and states of the handlers that emitted it), published
 * once the turn commits, and deleted in a later turn once the stream has
 * it.  After a crash, what is left is published again at the start: its
 * id is the same (emit ids come from the cause's source and id in a
 * cluster) and the stream's dedupe window drops the copies.
 * ------------------------------------------------------------------------ */

static size_t
out_key(const tidei_cluster *cl, uint64_t id, uint8_t *out, size_t n)
{
	int k = snprintf((char *)out, n, "cluster.out.%s.", cl->stream);

	if (k < 0 || (size_t)k + 8 > n)
		return 0;
	for (int i = 0; i < 8; i++) /* big-endian: in id order */
		out[k + i] = (uint8_t)(id >> (56 - 8 * i));
	return (size_t)k + 8;
}

int
tidei_cluster_outbox_put(void *ud, const uint8_t *rec, size_t len, char *err)
{
	tidei_cluster *cl = ud;
	uint8_t key[160];
	MDB_val k, v;
	int mrc;

	k.mv_size = out_key(cl, cl->out_next, key, sizeof key);
	k.mv_data = key;
	v.mv_size = len;
	v.mv_data = (void *)rec;
	if (cl->log->txn == NULL)
		return tidei_err(err, TIDE_ESTATE, "an emit outside a turn");
	if ((mrc = mdb_put(cl->log->txn, cl->log->meta, &k, &v, 0)) != 0)
		return tidei_err(err, tidei_err_mdb(mrc), "cannot keep an emitted event: %s",
				 mdb_strerror(mrc));
	if (cl->pending.n + 1 >= cl->pending_cap) {
		size_t cap = cl->pending_cap ? 2 * cl->pending_cap : 64;
		size_t *off = realloc(cl->pending_off, cap * sizeof *off);
		if (off == NULL)
			return tidei_err(err, TIDE_ENOMEM, "out of memory");
		cl->pending_off = off;
		cl->pending_cap = cap;
	}
	if (tidei_cl_ids_push(&cl->pending, cl->out_next) != 0)
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	cl->pending_off[cl->pending.n - 1] = cl->pending_recs.len;
	tidei_buf_put(&cl->pending_recs, rec, len);
	cl->pending_off[cl->pending.n] = cl->pending_recs.len;
	if (cl->pending_recs.failed)
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	cl->out_next++;
	return TIDE_OK;
}

/* Publish outbox entries @p id[0..n) (records at @p rec, lengths @p len);
 * what cannot be sent is tried again later. */
static void
publish_outbox(tidei_cluster *cl, const uint64_t *id, const uint8_t *const *rec, const size_t *len,
	       size_t n)
{
	flight *f;

	if (n == 0)
		return;
	if ((f = tidei_cl_flight_new(cl, n)) == NULL ||
	    (f->oid = malloc(n * sizeof *f->oid)) == NULL) {
		pthread_mutex_lock(&cl->mu);
		for (size_t i = 0; i < n; i++)
			tidei_cl_ids_push(&cl->retry, id[i]);
		if (f != NULL)
			f->sealed = 1; /* empty: done at once */
		pthread_mutex_unlock(&cl->mu);
		return;
	}
	memcpy(f->oid, id, n * sizeof *id);
	for (size_t i = 0; i < n; i++)
		if (tidei_cl_send_rec(cl, f, i, rec[i], len[i]) != 0) {
			pthread_mutex_lock(&cl->mu);
			tidei_cl_ids_push(&cl->retry, id[i]);
			pthread_mutex_unlock(&cl->mu);
		}
	cl->published += f->n;
	tidei_cl_flight_seal(cl, f);
}

/* The open turn committed: what it put in the outbox goes out. */
void
tidei_cl_outbox_committed(tidei_cluster *cl)
{
	size_t n = cl->pending.n;
	const uint8_t **rec;
	size_t *len;

	cl->deleting.n = 0;
	if (n == 0)
		return;
	rec = malloc(n * sizeof *rec);
	len = malloc(n * sizeof *len);
	if (rec == NULL || len == NULL) {
		pthread_mutex_lock(&cl->mu);
		for (size_t i = 0; i < n; i++)
			tidei_cl_ids_push(&cl->retry, cl->pending.v[i]);
		pthread_mutex_unlock(&cl->mu);
	} else {
		for (size_t i = 0; i < n; i++) {
			rec[i] = cl->pending_recs.p + cl->pending_off[i];
			len[i] = cl->pending_off[i + 1] - cl->pending_off[i];
		}
		publish_outbox(cl, cl->pending.v, rec, len, n);
	}
	free(rec);
	free(len);
	cl->pending.n = 0;
	tidei_buf_reset(&cl->pending_recs);
}

/* The open turn was aborted: its entries are gone with it, and what it
 * deleted is deleted again by the next. */
void
tidei_cl_outbox_aborted(tidei_cluster *cl)
{
	if (cl->pending.n > 0)
		cl->out_next = cl->pending.v[0];
	cl->pending.n = 0;
	tidei_buf_reset(&cl->pending_recs);
	pthread_mutex_lock(&cl->mu);
	for (size_t i = 0; i < cl->deleting.n; i++)
		tidei_cl_ids_push(&cl->acked, cl->deleting.v[i]);
	pthread_mutex_unlock(&cl->mu);
	cl->deleting.n = 0;
}

/* In the turn's transaction: entries the stream has are deleted. */
int
tidei_cl_outbox_write(tidei_cluster *cl, tidei_log *log, char *err)
{
	ids done;

	pthread_mutex_lock(&cl->mu);
	done = cl->acked;
	memset(&cl->acked, 0, sizeof cl->acked);
	pthread_mutex_unlock(&cl->mu);
	for (size_t i = 0; i < done.n; i++) {
		uint8_t key[160];
		MDB_val k;
		int mrc;
		k.mv_size = out_key(cl, done.v[i], key, sizeof key);
		k.mv_data = key;
		if ((mrc = mdb_del(log->txn, log->meta, &k, NULL)) != 0 && mrc != MDB_NOTFOUND) {
			pthread_mutex_lock(&cl->mu);
			for (size_t j = i; j < done.n; j++)
				tidei_cl_ids_push(&cl->acked, done.v[j]);
			pthread_mutex_unlock(&cl->mu);
			free(done.v);
			return tidei_err(err, tidei_err_mdb(mrc), "cannot clear the outbox: %s",
					 mdb_strerror(mrc));
		}
		tidei_cl_ids_push(&cl->deleting, done.v[i]);
	}
	free(done.v);
	return TIDE_OK;
}

/* Entries not acknowledged (or left by a crash) are read back and sent
 * again, once a second at most, between turns. */
void
tidei_cl_outbox_retry(tidei_cluster *cl)
{
	ids again;
	MDB_txn *txn;
	int64_t now = tidei_now();

	if (cl->log->txn != NULL || now < cl->retry_at)
		return;
	pthread_mutex_lock(&cl->mu);
	again = cl->retry;
	memset(&cl->retry, 0, sizeof cl->retry);
	pthread_mutex_unlock(&cl->mu);
	if (again.n == 0)
		return;
	cl->retry_at = now + 1000000000ll;
	if (mdb_txn_begin(cl->log->env, NULL, MDB_RDONLY, &txn) != 0) {
		pthread_mutex_lock(&cl->mu);
		for (size_t i = 0; i < again.n; i++)
			tidei_cl_ids_push(&cl->retry, again.v[i]);
		pthread_mutex_unlock(&cl->mu);
		free(again.v);
		return;
	}
	for (size_t i = 0; i < again.n; i++) {
		uint8_t key[160];
		MDB_val k, v;
		k.mv_size = out_key(cl, again.v[i], key, sizeof key);
		k.mv_data = key;
		if (mdb_get(txn, cl->log->meta, &k, &v) == 0) { /* else: deleted meanwhile */
			const uint8_t *rec = v.mv_data;
			size_t len = v.mv_size;
			publish_outbox(cl, &again.v[i], &rec, &len, 1);
		}
	}
	mdb_txn_abort(txn);
	free(again.v);
}

/* At the start: what the outbox holds is sent again, and new entries
 * are numbered after the last. */
int
tidei_cl_outbox_open(tidei_cluster *cl, tidei_log *log, char *err)
{
	uint8_t prefix[160];
	size_t plen = out_key(cl, 0, prefix, sizeof prefix) - 8;
	MDB_txn *txn;
	MDB_cursor *cur;
	MDB_val k, v;
	int mrc;

	cl->out_next = 1;
	if ((mrc = mdb_txn_begin(log->env, NULL, MDB_RDONLY, &txn)) != 0)
		return tidei_err(err, TIDE_EIO, "cannot read the log: %s", mdb_strerror(mrc));
	if ((mrc = mdb_cursor_open(txn, log->meta, &cur)) != 0) {
		mdb_txn_abort(txn);
		return tidei_err(err, TIDE_EIO, "cannot read the log: %s", mdb_strerror(mrc));
	}
	k.mv_size = plen;
	k.mv_data = prefix;
	for (mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); mrc == 0;
	     mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		const uint8_t *kp = k.mv_data;
		uint64_t id = 0;
		if (k.mv_size != plen + 8 || memcmp(kp, prefix, plen) != 0)
			break;
		for (int i = 0; i < 8; i++)
			id = id << 8 | kp[plen + i];
		if (tidei_cl_ids_push(&cl->retry, id) != 0)
			break;
		cl->out_next = id + 1;
	}
	mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	if (cl->retry.n > 0)
		LOG(cl, TIDE_LOG_INFO, "%zu emitted events not yet in the stream are sent again",
		    cl->retry.n);
	return TIDE_OK;
}
