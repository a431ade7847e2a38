/*
 * cthread.c - the consumers on a thread of their own (see cthread.h).
 *
 * The thread loops: it takes the committed end of the log the engine
 * published, opens a read transaction, and lets the consumers handle what
 * is new (tidei_consumers_read), their emits handed off into a queue
 * here.  When a run stops for the writer, the thread asks the engine for
 * its transaction and sleeps; the engine, in its next turn, appends the
 * queued emits, lends the transaction, and waits.  The thread does in it
 * what needed the writer (tidei_consumers_lent), gives it back, and waits
 * again until the engine has committed or aborted it, so that the
 * consumers learn which (tidei_cthread_done) before they go on.  Either
 * thread waits for the other only at these points; the consumers' memory
 * is touched by one at a time.
 *
 * Caught up and with nothing new for IDLE_NS, the thread ends by itself
 * and the engine runs the consumers in its turns again; the first of
 * those writes what they did last.  While the thread runs, their work is
 * written as a busy turn's would be (consumer.c): every 2 to 10 s.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "cthread.h"

#define IDLE_NS 100000000ll /* caught up this long: the thread ends */
#define NAP_NS 2000000ll    /* caught up: look again after this long, or a commit */

enum { NONE, LENT, RETURNED };

struct tidei_cthread {
	tidei_consumers *cs;
	tidei_log *log; /* the engine's: the thread uses it only while lent */
	tidei_log view; /* a copy of it with the thread's read transaction */
	MDB_txn *rtxn;
	void (*wake)(void *ud);
	void *ud;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t go;   /* the thread waits on it */
	pthread_cond_t back; /* the engine waits on it */
	/* under mu */
	uint64_t committed; /* the log's committed end, as published */
	int want;           /* the thread asks for the transaction */
	int lent;           /* NONE, LENT, RETURNED */
	int lent_rc;
	int pause, parked, halt, over, over_rc;
	char err[TIDEI_ERRLEN];
	tidei_buf out;    /* emits handed off, one after another */
	uint32_t *lens;   /* their lengths */
	size_t n, cap;    /* how many */
	size_t appended;  /* of them, in the engine's open transaction */
	size_t app_bytes; /* and their bytes */
};

static void
lock(tidei_cthread *t)
{
	pthread_mutex_lock(&t->mu);
}

static void
unlock(tidei_cthread *t)
{
	pthread_mutex_unlock(&t->mu);
}

/* Emits of a consumer call, on the thread: queued for the engine. */
static int
handoff(void *ud, const uint8_t *rec, size_t len, char *err)
{
	tidei_cthread *t = ud;
	int first, rc = TIDE_OK;

	lock(t);
	if (t->n == t->cap) {
		size_t cap = t->cap ? 2 * t->cap : 64;
		uint32_t *v = realloc(t->lens, cap * sizeof *v);
		if (v == NULL)
			rc = TIDE_ENOMEM;
		else {
			t->lens = v;
			t->cap = cap;
		}
	}
	if (rc == TIDE_OK) {
		tidei_buf_put(&t->out, rec, len);
		if (t->out.failed) {
			t->out.failed = 0;
			rc = TIDE_ENOMEM;
		}
	}
	if (rc != TIDE_OK) {
		unlock(t);
		return tidei_err(err, rc, "out of memory for an emitted event");
	}
	t->lens[t->n++] = (uint32_t)len;
	first = t->n == 1 && t->lent == NONE;
	unlock(t);
	if (first)
		t->wake(t->ud); /* to be appended soon, even if nothing comes in */
	return TIDE_OK;
}

/* Once: the consumers handle what is committed up to @p head. */
static int
read_once(tidei_cthread *t, uint64_t head, int *need, char *err)
{
	int mrc, rc;

	mrc = t->rtxn == NULL ? mdb_txn_begin(t->log->env, NULL, MDB_RDONLY, &t->rtxn)
			      : mdb_txn_renew(t->rtxn);
	if (mrc != 0) {
		if (t->rtxn != NULL) {
			mdb_txn_abort(t->rtxn);
			t->rtxn = NULL;
		}
		return tidei_err(err, tidei_err_mdb(mrc), "cannot read the log: %s",
				 mdb_strerror(mrc));
	}
	t->view.txn = t->rtxn;
	t->view.head = t->view.committed = head;
	rc = tidei_consumers_read(t->cs, &t->view, need, err);
	t->view.txn = NULL;
	mdb_txn_reset(t->rtxn);
	return rc;
}

static void
nap(tidei_cthread *t, int64_t ns)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_nsec += ns;
	ts.tv_sec += ts.tv_nsec / 1000000000;
	ts.tv_nsec %= 1000000000;
	pthread_cond_timedwait(&t->go, &t->mu, &ts);
}

/* The thread ends: the engine is to take a turn (under mu). */
static void
finish(tidei_cthread *t, int rc, const char *err)
{
	t->over = 1;
	t->over_rc = rc;
	if (rc != TIDE_OK)
		snprintf(t->err, sizeof t->err, "%s", err);
}

static void *
thread_main(void *arg)
{
	tidei_cthread *t = arg;
	char err[TIDEI_ERRLEN];
	int64_t idle = 0;
	int need, rc;

	lock(t);
	for (;;) {
		uint64_t head;
		if (t->pause && !t->halt) {
			if (t->rtxn != NULL) { /* the map may move */
				mdb_txn_abort(t->rtxn);
				t->rtxn = NULL;
			}
			t->parked = 1;
			pthread_cond_broadcast(&t->back);
			while (t->pause && !t->halt)
				pthread_cond_wait(&t->go, &t->mu);
			t->parked = 0;
			continue;
		}
		if (t->halt)
			break;
		head = t->committed;
		unlock(t);
		rc = read_once(t, head, &need, err);
		lock(t);
		if (rc != TIDE_OK) {
			finish(t, rc, err);
			break;
		}
		if (need && !tidei_consumers_full(t->cs)) {
			t->want = 1;
			pthread_cond_broadcast(&t->back); /* a pause may wait for this */
			unlock(t);
			t->wake(t->ud);
			lock(t);
			while (t->lent != LENT && !t->halt)
				pthread_cond_wait(&t->go, &t->mu);
			if (t->halt) {
				t->want = 0;
				break;
			}
			unlock(t);
			rc = tidei_consumers_lent(t->cs, t->log, err);
			lock(t);
			t->lent = RETURNED;
			t->lent_rc = rc;
			if (rc != TIDE_OK)
				snprintf(t->err, sizeof t->err, "%s", err);
			pthread_cond_broadcast(&t->back);
			while (t->lent != NONE)
				pthread_cond_wait(&t->go, &t->mu);
			/* a full map: the engine grows it, the consumers went back
			 * to their last write, and the thread reads again */
			if (rc != TIDE_OK && rc != TIDE_EFULL) {
				finish(t, rc, err);
				break;
			}
		}
		if (tidei_consumers_full(t->cs)) {
			finish(t, TIDE_OK, "");
			break;
		}
		if (tidei_consumers_behind(t->cs, t->committed)) {
			idle = 0;
			continue;
		}
		if (idle == 0) {
			idle = tidei_mono();
		} else if (tidei_mono() - idle >= IDLE_NS) {
			finish(t, TIDE_OK, "");
			break;
		}
		if (t->committed == head && !t->pause && !t->halt)
			nap(t, NAP_NS);
	}
	if (t->rtxn != NULL) {
		mdb_txn_abort(t->rtxn);
		t->rtxn = NULL;
	}
	t->parked = 1;
	pthread_cond_broadcast(&t->back);
	unlock(t);
	t->wake(t->ud);
	return NULL;
}

int
tidei_cthread_start(tidei_cthread **out, tidei_consumers *cs, tidei_log *log,
		    void (*wake)(void *ud), void *ud, char *err)
{
	tidei_cthread *t;
	int rc;

	*out = NULL;
	if ((t = calloc(1, sizeof *t)) == NULL)
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	t->cs = cs;
	t->log = log;
	t->view = *log;
	t->view.txn = t->view.rtxn = NULL;
	t->view.heads = NULL; /* the engine's, not for the copy */
	t->view.head_cap = t->view.head_count = 0;
	memset(&t->view.head_keys, 0, sizeof t->view.head_keys);
	t->wake = wake;
	t->ud = ud;
	t->committed = log->committed;
	pthread_mutex_init(&t->mu, NULL);
	pthread_cond_init(&t->go, NULL);
	pthread_cond_init(&t->back, NULL);
	tidei_consumers_set_handoff(cs, handoff, t);
	if ((rc = pthread_create(&t->thread, NULL, thread_main, t)) != 0) {
		tidei_consumers_set_handoff(cs, NULL, NULL);
		pthread_cond_destroy(&t->back);
		pthread_cond_destroy(&t->go);
		pthread_mutex_destroy(&t->mu);
		free(t);
		return tidei_err(err, TIDE_ENOMEM, "cannot start the consumers' thread: %s",
				 strerror(rc));
	}
	*out = t;
	return TIDE_OK;
}

/* Append the emits not yet in the open transaction (under mu). */
static int
append_out(tidei_cthread *t, char *err)
{
	int64_t now = tidei_now();
	int rc;

	for (; t->appended < t->n; t->appended++) {
		uint32_t len = t->lens[t->appended];
		tidei_append res;
		rc = tidei_log_append(t->log, t->out.p + t->app_bytes, len, now, -1, &res);
		if (rc != TIDE_OK)
			return tidei_err(err, rc, "%s", t->log->err);
		t->app_bytes += len;
	}
	return TIDE_OK;
}

int
tidei_cthread_serve(tidei_cthread *t, char *err)
{
	int rc;

	lock(t);
	rc = append_out(t, err);
	if (rc == TIDE_OK && t->want && t->lent == NONE && !t->halt && !t->over) {
		t->lent = LENT;
		pthread_cond_broadcast(&t->go);
		while (t->lent != RETURNED)
			pthread_cond_wait(&t->back, &t->mu);
		if ((rc = t->lent_rc) != TIDE_OK)
			snprintf(err, TIDEI_ERRLEN, "%s", t->err);
		else
			rc = append_out(t, err);
	}
	unlock(t);
	return rc;
}

void
tidei_cthread_done(tidei_cthread *t, int committed)
{
	int left;

	lock(t);
	if (committed && t->appended > 0) {
		memmove(t->out.p, t->out.p + t->app_bytes, t->out.len - t->app_bytes);
		t->out.len -= t->app_bytes;
		memmove(t->lens, t->lens + t->appended, (t->n - t->appended) * sizeof *t->lens);
		t->n -= t->appended;
	}
	t->appended = t->app_bytes = 0;
	t->committed = t->log->committed;
	if (t->lent == RETURNED) {
		if (committed)
			tidei_consumers_committed(t->cs);
		else
			tidei_consumers_reload(t->cs, t->log);
		t->lent = NONE;
		t->want = 0; /* not lent again before the thread asks again */
	}
	left = t->n > 0; /* handed off after the engine took the others */
	pthread_cond_broadcast(&t->go);
	unlock(t);
	if (left)
		t->wake(t->ud);
}

int
tidei_cthread_wants(tidei_cthread *t)
{
	int r;

	lock(t);
	r = (t->want && t->lent == NONE) || t->n > 0 || t->over;
	unlock(t);
	return r;
}

int
tidei_cthread_over(tidei_cthread *t, char *err)
{
	int r;

	lock(t);
	if ((r = t->over) && t->over_rc != TIDE_OK)
		snprintf(err, TIDEI_ERRLEN, "%s", t->err);
	else
		err[0] = '\0';
	unlock(t);
	return r;
}

void
tidei_cthread_pause(tidei_cthread *t)
{
	lock(t);
	t->pause = 1;
	pthread_cond_broadcast(&t->go);
	while (!t->parked && !(t->want && t->lent == NONE))
		pthread_cond_wait(&t->back, &t->mu);
	unlock(t);
}

void
tidei_cthread_unpause(tidei_cthread *t)
{
	lock(t);
	t->pause = 0;
	pthread_cond_broadcast(&t->go);
	unlock(t);
}

int
tidei_cthread_end(tidei_cthread *t)
{
	lock(t);
	t->halt = 1;
	pthread_cond_broadcast(&t->go);
	unlock(t);
	pthread_join(t->thread, NULL);
	tidei_consumers_set_handoff(t->cs, NULL, NULL);
	return t->n > 0;
}

void
tidei_cthread_free(tidei_cthread *t)
{
	if (t == NULL)
		return;
	pthread_cond_destroy(&t->back);
	pthread_cond_destroy(&t->go);
	pthread_mutex_destroy(&t->mu);
	tidei_buf_free(&t->out);
	free(t->lens);
	free(t);
}
