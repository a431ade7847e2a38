/*
 * pbuild.c - a projection's build shared among threads (see pbuild.h).
 *
 * The events (after, until] go in chunks.  A chunk's keys are found once,
 * by whichever helper is free (the filter and the key function run once
 * per event, not once per helper), into one of AHEAD tables; then every
 * helper applies the chunk's events of its part, in chunk order.  A
 * helper whose next chunk has no keys yet finds the keys of the next
 * chunk nobody has taken, as long as the slowest helper is fewer than
 * AHEAD chunks behind: a helper slowed down (by the machine, or by
 * heavier keys) is made up for by the others finding more keys.
 *
 * A checkpoint is set at the chunk the furthest helper is applying:
 * every helper hands over its states after that chunk, and waits for the
 * commit.  At `until` they hand over and end.
 *
 * A build that follows the log (a live projection catching up) has no end
 * until the engine says so: `until` grows as events commit, chunks are
 * cut from what is there (a chunk may be short), and a helper renews its
 * read transaction before it reads past what its transaction saw.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "pbuild.h"

/* Events in a chunk. */
#define STEP 1024
/* Chunks whose keys may be found ahead of the slowest helper. */
#define AHEAD 32
/* Renew a helper's read transaction every so many chunks, so that it does
 * not keep the pages the engine frees meanwhile from being reused. */
#define RENEW_STEPS 256
/* Bytes of handler output waiting for the engine's log at most. */
#define LOG_MAX 65536

typedef struct part {
	struct tidei_pbuild *b;
	pthread_t thread;
	int started;
	unsigned index;
	/* under b->mu */
	uint64_t next;   /* the chunk it applies next */
	uint64_t pos;    /* events up to here are applied */
	size_t held;     /* keys in memory */
	uint64_t posted; /* seq of the states handed over, 0 for none */
	tidei_buf states;
	tidei_histo took; /* its handler times, handed over with the states */
	int ended;        /* at until, or stopped */
	int parked;       /* its read transaction is reset: the map may move */
} part;

struct tidei_pbuild {
	tidei_pbuild_opts o;
	char *name;
	pthread_mutex_t mu;
	pthread_cond_t cv; /* helpers waiting for a commit */
	part *parts;
	unsigned n;
	struct slot {
		tidei_keyed kd; /* kd.first: the chunk's first event */
		uint64_t last;  /* and its last */
		uint64_t chunk; /* whose keys are here, once found */
		int found;
	} slot[AHEAD]; /* chunk c's keys are in slot[c % AHEAD] */
	/* under mu (and o.until) */
	int paused;           /* the helpers park (the log's map is to move) */
	int final;            /* until grows no more: the helpers end there */
	uint64_t claim_first; /* the first event of the next chunk to claim */
	uint64_t claimed;     /* chunks whose keys are found or being found */
	int asked;            /* a checkpoint is set and not written yet */
	uint64_t ck;          /* the chunk after which the helpers hand over */
	uint64_t resumed;     /* the last checkpoint that committed */
	atomic_int cancel;    /* also read, without the lock, between events */
	int failed;
	uint64_t fail_seq;
	char err[TIDEI_ERRLEN];
	tidei_buf logs; /* level byte, message, NUL; repeated */
	size_t dropped;
};

/* ------------------------------------------------------------------------
 * The environment
 * ------------------------------------------------------------------------ */

static char **
copy_list(const char *const *v, size_t n)
{
	char **c = calloc(n + 1, sizeof *c);

	for (size_t k = 0; c && k < n; k++)
		if ((c[k] = strdup(v[k])) == NULL) {
			for (size_t j = 0; j < k; j++)
				free(c[j]);
			free(c);
			return NULL;
		}
	return c;
}

static size_t
list_len(const char *const *v)
{
	size_t n = 0;

	while (v && v[n])
		n++;
	return n;
}

tidei_pbuild_env *
tidei_pbuild_env_copy(const tidei_pbuild_env *src)
{
	tidei_pbuild_env *e = calloc(1, sizeof *e);
	char *path = NULL;
	char **allow = NULL, **params = NULL, **scripts = NULL;

	if (e == NULL)
		return NULL;
	*e = *src;
	if (src->script.lua_path && (path = strdup(src->script.lua_path)) == NULL)
		goto fail;
	if (src->script.allow &&
	    (allow = copy_list(src->script.allow, list_len(src->script.allow))) == NULL)
		goto fail;
	if (src->script.params &&
	    (params = copy_list(src->script.params, list_len(src->script.params))) == NULL)
		goto fail;
	if ((scripts = copy_list(src->scripts, src->nscripts)) == NULL)
		goto fail;
	e->script.lua_path = path;
	e->script.allow = (const char *const *)allow;
	e->script.params = (const char *const *)params;
	e->scripts = (const char *const *)scripts;
	return e;
fail:
	free(path);
	for (size_t k = 0; allow && allow[k]; k++)
		free(allow[k]);
	free(allow);
	for (size_t k = 0; params && params[k]; k++)
		free(params[k]);
	free(params);
	free(e);
	return NULL;
}

uint64_t
tidei_pbuild_scripts_hash(const tidei_pbuild_env *env)
{
	uint64_t h = TIDEI_FNV_SEED;

	for (size_t k = 0; k < env->nscripts; k++) {
		uint64_t f = tidei_file_hash(env->scripts[k]);
		h = tidei_fnv(&f, sizeof f, h);
	}
	return h;
}

void
tidei_pbuild_env_free(tidei_pbuild_env *e)
{
	if (e == NULL)
		return;
	free((char *)e->script.lua_path);
	for (size_t k = 0; e->script.allow && e->script.allow[k]; k++)
		free((char *)e->script.allow[k]);
	free((char **)e->script.allow);
	for (size_t k = 0; e->script.params && e->script.params[k]; k++)
		free((char *)e->script.params[k]);
	free((char **)e->script.params);
	for (size_t k = 0; k < e->nscripts; k++)
		free((char *)e->scripts[k]);
	free((char **)e->scripts);
	free(e);
}

/* ------------------------------------------------------------------------
 * A helper
 * ------------------------------------------------------------------------ */

typedef struct helper {
	part *pt;
	tidei_pbuild *b;
	void *w; /* the work's own, from b->o.env->ops */
	MDB_txn *txn;
	int reading;   /* txn is not reset */
	uint64_t sees; /* txn sees events up to here */
} helper;

/* A line a handler printed, kept for the engine's log. */
static void
helper_log(void *ud, int level, const char *msg)
{
	helper *h = ud;
	tidei_pbuild *b = h->b;
	size_t n = strlen(msg);
	uint8_t lv = (uint8_t)level;

	pthread_mutex_lock(&b->mu);
	if (b->logs.len + n + 2 > LOG_MAX || b->logs.failed) {
		b->dropped++;
	} else {
		tidei_buf_put(&b->logs, &lv, 1);
		tidei_buf_put(&b->logs, msg, n + 1);
	}
	pthread_mutex_unlock(&b->mu);
}

static void
fail(tidei_pbuild *b, part *pt, uint64_t seq, const char *why)
{
	pthread_mutex_lock(&b->mu);
	if (!b->failed) {
		b->failed = 1;
		b->fail_seq = seq;
		snprintf(b->err, sizeof b->err, "%s", why);
	}
	pt->ended = 1;
	pthread_cond_broadcast(&b->cv);
	pthread_mutex_unlock(&b->mu);
}

/* The next chunk of the slowest helper (@p most 0) or of the furthest
 * (@p most 1); under b->mu. */
static uint64_t
next_chunk(const tidei_pbuild *b, int most)
{
	uint64_t v = b->parts[0].next;

	for (unsigned k = 1; k < b->n; k++)
		if (most ? b->parts[k].next > v : b->parts[k].next < v)
			v = b->parts[k].next;
	return v;
}

/* Load the scripts; the projection must be defined as the engine has it. */
static int
setup(helper *h, char *err)
{
	const tidei_pbuild_env *env = h->b->o.env;

	/* the scripts must be those the engine runs (modules they require
	 * are not checked) */
	if (env->scripts_hash != 0 && tidei_pbuild_scripts_hash(env) != env->scripts_hash)
		return tidei_err(err, TIDE_ESTATE,
				 "a script changed on disk since the engine loaded it");
	return env->ops->open(&h->w, env, h->b->name, h->b->o.hash, h->pt->index, h->b->n,
			      &h->b->cancel, helper_log, h, err);
}

/* At a checkpoint: hand the states over; wait for the commit unless this
 * is the end.  0 to go on, -1 to stop. */
static int
hand_over(helper *h, uint64_t pos, char *err)
{
	tidei_pbuild *b = h->b;
	part *pt = h->pt;
	tidei_buf states = { 0 };
	tidei_histo took = { 0 };
	int go;

	if (b->o.env->ops->take(h->w, &states, &took, err) != TIDE_OK) {
		tidei_buf_free(&states);
		fail(b, pt, pos, err);
		return -1;
	}
	if (h->reading) { /* renewed after the commit: it reads what was written */
		mdb_txn_reset(h->txn);
		h->reading = 0;
	}
	pthread_mutex_lock(&b->mu);
	tidei_buf_free(&pt->states);
	pt->states = states;
	pt->took = took;
	pt->posted = pos;
	pt->held = 0;
	if (b->final && pos >= b->o.until)
		pt->ended = 1;
	pt->parked = 1;
	pthread_cond_broadcast(&b->cv);
	while (!pt->ended && !b->cancel && (b->resumed < pos || b->paused))
		pthread_cond_wait(&b->cv, &b->mu);
	pt->parked = 0;
	go = !pt->ended && !b->cancel;
	pthread_mutex_unlock(&b->mu);
	return go ? 0 : -1;
}

/* Find the keys of the chunk in slot @p sl (claimed). */
static int
find_keys(helper *h, MDB_txn *txn, struct slot *sl, char *err, uint64_t *at)
{
	tidei_pbuild *b = h->b;

	tidei_buf_reset(&sl->kd.keys[h->pt->index]);
	return b->o.env->ops->find_keys(h->w, b->o.log, txn, &sl->kd, sl->kd.first, sl->last, at,
					err);
}

/* Renew the helper's transaction (under b->mu): it sees at least what was
 * committed up to o.until now. */
static int
renew(helper *h, char *err)
{
	int mrc;

	h->sees = h->b->o.until;
	if (h->reading)
		mdb_txn_reset(h->txn);
	h->reading = 0;
	if ((mrc = mdb_txn_renew(h->txn)) != 0) {
		snprintf(err, TIDEI_ERRLEN, "cannot read the log: %s", mdb_strerror(mrc));
		return -1;
	}
	h->reading = 1;
	return 0;
}

/* While the engine has the helpers paused (under b->mu): no transaction
 * open, then a fresh one. */
static int
park(helper *h, char *err)
{
	tidei_pbuild *b = h->b;

	if (h->reading)
		mdb_txn_reset(h->txn);
	h->reading = 0;
	h->pt->parked = 1;
	pthread_cond_broadcast(&b->cv);
	while (b->paused && !b->cancel)
		pthread_cond_wait(&b->cv, &b->mu);
	h->pt->parked = 0;
	return renew(h, err);
}

/* Raise this thread's nice value by @p by (Linux sets it per thread);
 * lowering a priority is always allowed, and a failure changes nothing. */
static void
lower_priority(int by)
{
	id_t tid = (id_t)syscall(SYS_gettid);
	int now;

	errno = 0;
	now = getpriority(PRIO_PROCESS, tid);
	if (errno == 0)
		(void)setpriority(PRIO_PROCESS, tid, now + by > 19 ? 19 : now + by);
}

static void *
helper_main(void *arg)
{
	part *pt = arg;
	tidei_pbuild *b = pt->b;
	const tidei_pbuild_ops *ops = b->o.env->ops;
	helper h;
	MDB_txn *txn = NULL;
	char err[TIDEI_ERRLEN];
	uint64_t at = 0;
	unsigned steps = 0;
	int mrc;

	memset(&h, 0, sizeof h);
	if (b->o.nice > 0)
		lower_priority(b->o.nice);
	h.pt = pt;
	h.b = b;
	if (setup(&h, err) != TIDE_OK) {
		fail(b, pt, 0, err);
		goto out;
	}
	pthread_mutex_lock(&b->mu);
	h.sees = b->o.until; /* committed before the helpers started */
	pthread_mutex_unlock(&b->mu);
	if ((mrc = mdb_txn_begin(b->o.log->env, NULL, MDB_RDONLY, &txn)) != 0) {
		snprintf(err, sizeof err, "cannot read the log: %s", mdb_strerror(mrc));
		fail(b, pt, 0, err);
		goto out;
	}
	h.txn = txn;
	h.reading = 1;
	pthread_mutex_lock(&b->mu);
	while (!b->cancel && !b->failed) {
		uint64_t c = pt->next, last;
		struct slot *sl = &b->slot[c % AHEAD];
		if (b->paused && park(&h, err) != 0) {
			pthread_mutex_unlock(&b->mu);
			fail(b, pt, 0, err);
			goto out;
		}
		if (b->final && pt->pos >= b->o.until) {
			/* the end (of a build that followed the log: it waited here) */
			pthread_mutex_unlock(&b->mu);
			hand_over(&h, pt->pos, err);
			goto out;
		}
		if (sl->found && sl->chunk == c) {
			/* apply the chunk's events of this part */
			last = sl->last;
			if ((last > h.sees || !h.reading) && renew(&h, err) != 0) {
				pthread_mutex_unlock(&b->mu);
				fail(b, pt, 0, err);
				goto out;
			}
			pthread_mutex_unlock(&b->mu);
			if (ops->run_part(h.w, b->o.log, txn, b->o.gen, &sl->kd, sl->kd.first, last,
					  b->o.follow, &at, err) != TIDE_OK) {
				fail(b, pt, at, err);
				goto out;
			}
			pthread_mutex_lock(&b->mu);
			pt->next = c + 1;
			pt->pos = last;
			pt->held = ops->held(h.w);
			pthread_cond_broadcast(&b->cv); /* its slot may be free */
			if ((b->final && last >= b->o.until) || c == b->ck) {
				pthread_mutex_unlock(&b->mu);
				if (hand_over(&h, last, err) != 0)
					goto out;
				steps = RENEW_STEPS; /* read what the checkpoint wrote */
				pthread_mutex_lock(&b->mu);
			}
		} else if (b->claim_first <= b->o.until && b->claimed < next_chunk(b, 0) + AHEAD) {
			/* find the keys of the next chunk nobody has taken */
			uint64_t k = b->claimed++;
			struct slot *ks = &b->slot[k % AHEAD];
			int rc;
			ks->found = 0;
			ks->kd.first = b->claim_first;
			ks->last = b->o.until - b->claim_first >= STEP ? b->claim_first + STEP - 1
								       : b->o.until;
			b->claim_first = ks->last + 1;
			if ((ks->last > h.sees || !h.reading) && renew(&h, err) != 0) {
				pthread_mutex_unlock(&b->mu);
				fail(b, pt, 0, err);
				goto out;
			}
			pthread_mutex_unlock(&b->mu);
			rc = find_keys(&h, txn, ks, err, &at);
			if (rc != TIDE_OK) {
				fail(b, pt, at, err);
				goto out;
			}
			pthread_mutex_lock(&b->mu);
			ks->chunk = k;
			ks->found = 1;
			pthread_cond_broadcast(&b->cv);
		} else {
			pthread_cond_wait(&b->cv, &b->mu);
			continue;
		}
		if (++steps >= RENEW_STEPS) {
			steps = 0;
			if (renew(&h, err) != 0) {
				pthread_mutex_unlock(&b->mu);
				fail(b, pt, 0, err);
				goto out;
			}
		}
	}
	pthread_mutex_unlock(&b->mu);
out:
	if (txn != NULL)
		mdb_txn_abort(txn);
	if (h.w != NULL)
		ops->close(h.w);
	pthread_mutex_lock(&b->mu);
	pt->ended = 1;
	pthread_cond_broadcast(&b->cv);
	pthread_mutex_unlock(&b->mu);
	return NULL;
}

/* ------------------------------------------------------------------------
 * The engine's side
 * ------------------------------------------------------------------------ */

int
tidei_pbuild_start(tidei_pbuild **out, const tidei_pbuild_opts *o, char *err)
{
	tidei_pbuild *b;

	*out = NULL;
	if (o->threads < 2 || o->threads > 127 || o->until <= o->after)
		return tidei_err(err, TIDE_EINVAL,
				 "a shared build needs 2 to 127 threads and events");
	b = calloc(1, sizeof *b);
	if (b == NULL || (b->name = strdup(o->name)) == NULL ||
	    (b->parts = calloc(o->threads, sizeof *b->parts)) == NULL) {
		if (b)
			free(b->name);
		free(b);
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	}
	b->o = *o;
	b->o.name = b->name;
	b->n = o->threads;
	b->ck = UINT64_MAX;
	b->final = !o->follow;
	b->claim_first = o->after + 1;
	for (int t = 0; t < AHEAD; t++) {
		b->slot[t].kd.n = STEP;
		b->slot[t].kd.e = calloc(STEP, sizeof *b->slot[t].kd.e);
		b->slot[t].kd.keys = calloc(b->n, sizeof *b->slot[t].kd.keys);
		if (b->slot[t].kd.e == NULL || b->slot[t].kd.keys == NULL) {
			for (int u = 0; u <= t; u++) {
				free(b->slot[u].kd.e);
				free(b->slot[u].kd.keys);
			}
			free(b->parts);
			free(b->name);
			free(b);
			return tidei_err(err, TIDE_ENOMEM, "out of memory");
		}
	}
	pthread_mutex_init(&b->mu, NULL);
	pthread_cond_init(&b->cv, NULL);
	for (unsigned k = 0; k < b->n; k++) {
		part *pt = &b->parts[k];
		pt->b = b;
		pt->index = k;
		pt->pos = o->after;
		if (pthread_create(&pt->thread, NULL, helper_main, pt) != 0) {
			tidei_pbuild_destroy(b);
			return tidei_err(err, TIDE_ENOMEM, "cannot start a build thread");
		}
		pt->started = 1;
	}
	*out = b;
	return TIDE_OK;
}

void
tidei_pbuild_destroy(tidei_pbuild *b)
{
	if (b == NULL)
		return;
	pthread_mutex_lock(&b->mu);
	b->cancel = 1;
	pthread_cond_broadcast(&b->cv);
	pthread_mutex_unlock(&b->mu);
	for (unsigned k = 0; k < b->n; k++) {
		if (b->parts[k].started)
			pthread_join(b->parts[k].thread, NULL);
		tidei_buf_free(&b->parts[k].states);
	}
	for (int t = 0; t < AHEAD; t++) {
		for (unsigned k = 0; k < b->n; k++)
			tidei_buf_free(&b->slot[t].kd.keys[k]);
		free(b->slot[t].kd.e);
		free(b->slot[t].kd.keys);
	}
	pthread_cond_destroy(&b->cv);
	pthread_mutex_destroy(&b->mu);
	tidei_buf_free(&b->logs);
	free(b->parts);
	free(b->name);
	free(b);
}

int
tidei_pbuild_poll(tidei_pbuild *b, uint64_t *seq)
{
	int ready = 1;

	pthread_mutex_lock(&b->mu);
	if (b->failed) {
		pthread_mutex_unlock(&b->mu);
		return -1;
	}
	*seq = b->parts[0].posted;
	for (unsigned k = 0; k < b->n; k++)
		ready &= b->parts[k].posted != 0 && b->parts[k].posted == *seq;
	pthread_mutex_unlock(&b->mu);
	return ready;
}

const tidei_buf *
tidei_pbuild_states(tidei_pbuild *b, unsigned k)
{
	return &b->parts[k].states; /* left alone by its helper until released */
}

const tidei_histo *
tidei_pbuild_took(tidei_pbuild *b, unsigned k)
{
	return &b->parts[k].took; /* like the states */
}

unsigned
tidei_pbuild_parts(const tidei_pbuild *b)
{
	return b->n;
}

uint64_t
tidei_pbuild_until(const tidei_pbuild *b)
{
	return b->o.until; /* changed only by the engine's thread */
}

int
tidei_pbuild_final(const tidei_pbuild *b)
{
	return b->final;
}

void
tidei_pbuild_extend(tidei_pbuild *b, uint64_t until)
{
	pthread_mutex_lock(&b->mu);
	if (!b->final && until > b->o.until) {
		b->o.until = until;
		pthread_cond_broadcast(&b->cv);
	}
	pthread_mutex_unlock(&b->mu);
}

int
tidei_pbuild_pause(tidei_pbuild *b, int64_t wait_ms)
{
	struct timespec until;
	int all = 0;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += wait_ms / 1000;
	until.tv_nsec += (wait_ms % 1000) * 1000000;
	if (until.tv_nsec >= 1000000000) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&b->mu);
	b->paused = 1;
	pthread_cond_broadcast(&b->cv);
	for (;;) {
		all = 1;
		for (unsigned k = 0; k < b->n; k++)
			all &= b->parts[k].ended || b->parts[k].parked;
		if (all || pthread_cond_timedwait(&b->cv, &b->mu, &until) == ETIMEDOUT)
			break;
	}
	pthread_mutex_unlock(&b->mu);
	return all ? 0 : -1;
}

void
tidei_pbuild_unpause(tidei_pbuild *b)
{
	pthread_mutex_lock(&b->mu);
	b->paused = 0;
	pthread_cond_broadcast(&b->cv);
	pthread_mutex_unlock(&b->mu);
}

void
tidei_pbuild_finish(tidei_pbuild *b)
{
	pthread_mutex_lock(&b->mu);
	b->final = 1;
	pthread_cond_broadcast(&b->cv);
	pthread_mutex_unlock(&b->mu);
}

uint64_t
tidei_pbuild_pos(tidei_pbuild *b)
{
	uint64_t v;

	pthread_mutex_lock(&b->mu);
	v = b->parts[0].pos;
	for (unsigned k = 1; k < b->n; k++)
		if (b->parts[k].pos < v)
			v = b->parts[k].pos;
	pthread_mutex_unlock(&b->mu);
	return v;
}

void
tidei_pbuild_release(tidei_pbuild *b)
{
	pthread_mutex_lock(&b->mu);
	for (unsigned k = 0; k < b->n; k++) {
		tidei_buf_free(&b->parts[k].states);
		b->parts[k].posted = 0;
	}
	b->asked = 0;
	pthread_mutex_unlock(&b->mu);
}

void
tidei_pbuild_resume(tidei_pbuild *b, uint64_t seq)
{
	pthread_mutex_lock(&b->mu);
	b->resumed = seq;
	pthread_cond_broadcast(&b->cv);
	pthread_mutex_unlock(&b->mu);
}

void
tidei_pbuild_checkpoint(tidei_pbuild *b)
{
	uint64_t top;

	pthread_mutex_lock(&b->mu);
	top = next_chunk(b, 1);
	/* no helper is past it: each of them hands over after that chunk (if
	 * it is past the end, they hand over there anyway) */
	if (!b->asked) {
		b->asked = 1;
		b->ck = top;
	}
	pthread_mutex_unlock(&b->mu);
}

size_t
tidei_pbuild_held(tidei_pbuild *b)
{
	size_t all = 0;

	pthread_mutex_lock(&b->mu);
	for (unsigned k = 0; k < b->n; k++)
		all += b->parts[k].held;
	pthread_mutex_unlock(&b->mu);
	return all;
}

const char *
tidei_pbuild_error(tidei_pbuild *b, uint64_t *seq)
{
	*seq = b->fail_seq;
	return b->err;
}

size_t
tidei_pbuild_drain_log(tidei_pbuild *b, void (*fn)(void *ud, int level, const char *msg), void *ud)
{
	tidei_buf logs;
	size_t dropped;

	pthread_mutex_lock(&b->mu);
	logs = b->logs;
	memset(&b->logs, 0, sizeof b->logs);
	dropped = b->dropped;
	b->dropped = 0;
	pthread_mutex_unlock(&b->mu);
	if (logs.failed) { /* out of memory: a line may be cut */
		dropped++;
		logs.len = 0;
	}
	for (size_t at = 0; at < logs.len;) {
		const char *msg = (const char *)logs.p + at + 1;
		fn(ud, logs.p[at], msg);
		at += 2 + strlen(msg);
	}
	tidei_buf_free(&logs);
	return dropped;
}
