/*
 * dlq.c - dead letters seen from outside the consumers: the public
 * listing, and retrying or dropping them.
 *
 * Retrying does not run anything here: it puts the dead letter back in
 * its consumer's pending set, due now and marked as coming from the dead
 * letters; the consumer handles it on its next turn and deletes the dead
 * letter only if the handler succeeds (consumer.c).  So a retry requested
 * while no engine runs simply happens when one starts.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dlq.h"

/* ------------------------------------------------------------------------
 * Retry and drop, a slice at a time
 * ------------------------------------------------------------------------ */

/* Dead letters looked at per slice beyond the ones changed: a retry of one
 * seq walks every consumer's dead letters to find it. */
#define SCAN_PER_CHANGE 8

typedef struct target {
	char *consumer;
	uint64_t seq;
} target;

typedef struct collect {
	tidei_dlq_job *j;
	size_t max, scanned;
	target *v;
	size_t n, cap;
	int oom;
	int stopped; /* the slice is full: the walk did not reach the end */
} collect;

static int
collect_one(void *ud, const char *consumer, uint64_t seq, const tidei_dead_rec *r)
{
	collect *c = ud;

	(void)r;
	if (c->n >= c->max || c->scanned >= c->max * SCAN_PER_CHANGE) {
		c->stopped = 1;
		return 1;
	}
	c->scanned++;
	/* the walk resumes after the last dead letter looked at */
	snprintf(c->j->at, sizeof c->j->at, "%s", consumer);
	c->j->at_seq = seq;
	c->j->started = 1;
	if (c->j->seq != 0 && seq != c->j->seq)
		return 0;
	if (tidei_array_grow(&c->v, &c->cap, c->n, sizeof *c->v, 64) != 0 ||
	    (c->v[c->n].consumer = strdup(consumer)) == NULL) {
		c->oom = 1;
		return 1;
	}
	c->v[c->n++].seq = seq;
	return 0;
}

int
tidei_dlq_job_init(tidei_dlq_job *j, int op, const char *consumer, uint64_t seq, char *err)
{
	memset(j, 0, sizeof *j);
	if (op != TIDE_DLQ_RETRY && op != TIDE_DLQ_DROP)
		return tidei_err(err, TIDE_EINVAL, "unknown dead-letter operation");
	if (consumer != NULL && (strlen(consumer) == 0 || strlen(consumer) >= sizeof j->consumer))
		return tidei_err(err, TIDE_EINVAL, "consumer name must be 1 to 200 bytes long");
	j->op = op;
	snprintf(j->consumer, sizeof j->consumer, "%s", consumer ? consumer : "");
	j->seq = seq;
	return TIDE_OK;
}

int
tidei_dlq_step(tidei_log *log, tidei_dlq_job *j, size_t max,
	       void (*changed)(void *ud, int op, const char *consumer, uint64_t seq), void *ud)
{
	collect c;
	const char *only = j->consumer[0] ? j->consumer : NULL;
	int rc;

	if (j->done)
		return TIDE_OK;
	memset(&c, 0, sizeof c);
	c.j = j;
	c.max = max ? max : 1;
	/* Collect first: the database is changed while walking it otherwise. */
	rc = tidei_log_dead_each_after(log, log->txn, only, j->started ? j->at : NULL, j->at_seq,
				       collect_one, &c);
	if (rc == TIDE_OK && c.oom)
		rc = tidei_err(log->err, TIDE_ENOMEM, "out of memory");
	for (size_t k = 0; rc == TIDE_OK && k < c.n; k++) {
		if (j->op == TIDE_DLQ_DROP) {
			rc = tidei_log_dead_del(log, c.v[k].consumer, c.v[k].seq);
			if (rc == TIDE_OK)
				rc = tidei_log_pending_del(log, c.v[k].consumer, c.v[k].seq);
		} else {
			tidei_pending_rec r = { TIDEI_PENDING_RETRY, 1, 0, 0 };
			rc = tidei_log_pending_put(log, c.v[k].consumer, c.v[k].seq, &r);
		}
		if (rc == TIDE_OK) {
			j->count++;
			if (changed != NULL)
				changed(ud, j->op, c.v[k].consumer, c.v[k].seq);
		}
	}
	for (size_t k = 0; k < c.n; k++)
		free(c.v[k].consumer);
	free(c.v);
	if (rc == TIDE_OK && !c.stopped)
		j->done = 1;
	return rc;
}

/* Offline, each slice commits on its own: a kill keeps what was done. */
#define OFFLINE_SLICE 1000

typedef struct dlq_args {
	tidei_dlq_job *j;
} dlq_args;

static int
dlq_offline(tidei_log *log, void *ud)
{
	dlq_args *a = ud;

	return tidei_dlq_step(log, a->j, OFFLINE_SLICE, NULL, NULL);
}

static int
dlq_apply_impl(const char *dir, int op, const char *consumer, uint64_t seq, uint64_t *count,
	       char *err, size_t errlen)
{
	tidei_dlq_job j;
	dlq_args a = { &j };
	char msg[TIDEI_ERRLEN];
	int rc;

	if (count != NULL)
		*count = 0;
	if (dir == NULL)
		return TIDE_EINVAL;
	if ((rc = tidei_dlq_job_init(&j, op, consumer, seq, msg)) != TIDE_OK) {
		if (err != NULL && errlen > 0)
			snprintf(err, errlen, "%s", msg);
		return rc;
	}
	do {
		tidei_dlq_job before = j;
		rc = tidei_log_offline(dir, dlq_offline, &a, err, errlen);
		if (rc != TIDE_OK)
			j = before; /* that slice was not committed */
	} while (rc == TIDE_OK && !j.done);
	if (count != NULL)
		*count = j.count;
	return rc;
}

/* ------------------------------------------------------------------------
 * Listing
 * ------------------------------------------------------------------------ */

typedef struct lister {
	tidei_log *log;
	MDB_txn *txn;
	uint64_t seq;
	tide_dead_letter_fn *fn;
	void *ud;
	tidei_buf *scratch;
	tidei_buf attrs; /* tide_event_attr() of the letter's event */
	int stop;
	int nomem;
} lister;

static int
list_one(void *ud, const char *consumer, uint64_t seq, const tidei_dead_rec *r)
{
	lister *l = ud;
	struct tide_event ev;
	tide_dead_letter dl;
	char *where, *error;
	uint8_t key[600];
	size_t cn = strlen(consumer);
	MDB_val k, v;

	if (l->seq != 0 && seq != l->seq)
		return 0;
	where = strndup(r->where, r->where_len);
	error = strndup(r->error, r->error_len);
	if (where == NULL || error == NULL) {
		free(where);
		free(error);
		l->nomem = 1;
		return 1;
	}
	dl.consumer = consumer;
	dl.seq = seq;
	dl.attempts = r->attempts;
	dl.failed_at = r->failed_at;
	dl.where = where;
	dl.error = error;
	dl.event = NULL;
	if (tidei_log_get(l->log, l->txn, seq, &ev) == TIDE_OK) {
		ev.scratch = l->scratch;
		ev.attrs = &l->attrs;
		dl.event = &ev;
	}
	/* a retry is requested when the pending set holds the same key */
	dl.retrying = 0;
	if (cn + 9 <= sizeof key) {
		memcpy(key, consumer, cn);
		key[cn] = '\0';
		for (int i = 0; i < 8; i++)
			key[cn + 1 + i] = (uint8_t)(seq >> (8 * (7 - i)));
		k.mv_size = cn + 9;
		k.mv_data = key;
		dl.retrying = mdb_get(l->txn, l->log->pending, &k, &v) == 0;
	}
	l->stop = l->fn(l->ud, &dl);
	free(where);
	free(error);
	return l->stop;
}

TIDE_API int
tide_log_dead_letters(tide_log *log, const char *consumer, uint64_t seq, tide_dead_letter_fn *fn,
		      void *ud)
{
	tidei_log *il;
	tidei_buf *scratch;
	lister l;
	int rc;

	if (log == NULL || fn == NULL)
		return tidei_fail(TIDE_EINVAL,
				  "tide_log_dead_letters: log and fn must not be NULL");
	tidei_log_reader(log, &il, &scratch);
	memset(&l, 0, sizeof l);
	l.log = il;
	l.seq = seq;
	l.fn = fn;
	l.ud = ud;
	l.scratch = scratch;
	/* A snapshot of its own, not the handle's shared one: the callback may
	 * call other readers of the same handle, which renew that one. */
	il->err[0] = '\0';
	if ((rc = tidei_log_snapshot_begin(il, &l.txn)) != TIDE_OK)
		return tidei_fail(rc, "%s", il->err);
	rc = tidei_log_dead_each(il, l.txn, consumer, list_one, &l);
	tidei_log_snapshot_end(il, l.txn);
	tidei_buf_free(&l.attrs);
	if (l.nomem)
		return tidei_fail(TIDE_ENOMEM, NULL);
	if (rc != TIDE_OK)
		return tidei_fail(rc, "cannot list the dead letters: %s",
				  il->err[0] ? il->err : tide_strerror(rc));
	return TIDE_OK;
}

TIDE_API int
tide_dlq_apply(const char *dir, int op, const char *consumer, uint64_t seq, uint64_t *count)
{
	char msg[TIDEI_ERRLEN] = "";

	return tidei_done(dlq_apply_impl(dir, op, consumer, seq, count, msg, sizeof msg), msg);
}
