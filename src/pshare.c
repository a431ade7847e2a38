/*
 * pshare.c - a projection's work shared with the build's helper threads
 * (pbuild.h), from both sides.
 *
 * The engine's side: a rebuild with enough events ahead, or a live
 * projection under load, goes to the helpers; each turn writes their
 * checkpoints (every helper's states and the progress in one commit) and
 * lets them go on once it has committed.  A live projection's helpers
 * follow the log as it grows and hand back once they have caught up and
 * nothing new came for a moment.  When the log's map moves, the helpers
 * park with no read transaction open.
 *
 * A helper's side: a projections object of its own (loaded by
 * pworker.c) with the one projection, applying the events of its part of
 * the keys through the same calls as the engine's thread (papply.c).
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "projection_int.h"

/* ------------------------------------------------------------------------
 * The engine's side
 * ------------------------------------------------------------------------ */

int64_t
tidei_projections_next_poll(const tidei_projections *ps)
{
	return ps->poll_at; /* helpers running, or a live projection waiting for them */
}

/* Stop a build's helpers; what they did since their last checkpoint is
 * done again (alone, or by new helpers). */
void
tidei_proj_stop_helpers(proj *p)
{
	int had = p->par != NULL;

	tidei_pbuild_destroy(p->par); /* joins them: a stuck one keeps the mark */
	if (had && p->ps != NULL)
		tidei_flight_build(p->ps->flight, NULL);
	p->par = NULL;
	p->par_commit = 0;
}

void
tidei_projections_pause(tidei_projections *ps)
{
	for (size_t k = 0; ps != NULL && k < ps->n; k++) {
		proj *p = &ps->v[k];
		/* one stuck in a handler is stopped (it will be redone) */
		if (p->par != NULL && tidei_pbuild_pause(p->par, PAUSE_WAIT_MS) != 0)
			tidei_proj_stop_helpers(p);
	}
}

void
tidei_projections_unpause(tidei_projections *ps)
{
	for (size_t k = 0; ps != NULL && k < ps->n; k++)
		if (ps->v[k].par != NULL)
			tidei_pbuild_unpause(ps->v[k].par);
}

void
tidei_projections_stop(tidei_projections *ps)
{
	for (size_t k = 0; ps != NULL && k < ps->n; k++)
		tidei_proj_stop_helpers(&ps->v[k]);
}

static void
poll_soon(tidei_projections *ps, int64_t now)
{
	if (ps->poll_at < 0 || now + PAR_POLL_NS < ps->poll_at)
		ps->poll_at = now + PAR_POLL_NS;
}

static void
relay_log(void *ud, int level, const char *msg)
{
	LOG((tidei_projections *)ud, level, "%s", msg);
}

void
tidei_proj_log_progress(tidei_projections *ps, const proj *p, uint64_t done, uint64_t head)
{
	LOG(ps, TIDE_LOG_INFO, "projection '%s': building, %llu of %llu events (%.0f%%)", p->name,
	    (unsigned long long)done, (unsigned long long)head,
	    100.0 * (double)done / (double)head);
}

/* Whether the projection may go to the helpers now. */
static int
can_share(const tidei_projections *ps, const proj *p)
{
	if (ps->build == NULL || !p->parallel || p->par_off || p->meta.faulted)
		return 0;
	/* one shared build at a time: the threads are as many as the CPUs */
	for (size_t k = 0; k < ps->n; k++)
		if (ps->v[k].par != NULL)
			return 0;
	return 1;
}

/* Start the helpers when a build has enough events ahead. */
static void
start_helpers(tidei_projections *ps, proj *p, tidei_log *log)
{
	tidei_pbuild_opts o;
	char why[TIDEI_ERRLEN];
	uint64_t from = p->meta.build_seq;

	if (!can_share(ps, p) || p->keys.n > 0 || p->done > from ||
	    log->committed < from + PAR_MIN_EVENTS)
		return;
	memset(&o, 0, sizeof o);
	o.env = ps->build;
	o.log = log;
	o.name = p->name;
	o.hash = p->hash;
	o.gen = p->meta.build;
	o.after = from;
	o.until = log->committed; /* what their own transactions can see */
	o.follow = p->meta.build == p->meta.live;
	o.nice = o.follow ? LIVE_NICE : 0;
	o.threads = ps->build->threads < PAR_MAX_THREADS ? ps->build->threads : PAR_MAX_THREADS;
	if (tidei_pbuild_start(&p->par, &o, why) != TIDE_OK) {
		LOG(ps, TIDE_LOG_WARN, "projection '%s': %s; the build goes on in one thread",
		    p->name, why);
		p->par_off = 1;
		return;
	}
	tidei_flight_build(ps->flight, p->name);
	LOG(ps, p->meta.build == p->meta.live ? TIDE_LOG_DEBUG : TIDE_LOG_INFO,
	    "projection '%s': %s events %llu to %llu on %u threads", p->name,
	    p->meta.build == p->meta.live ? "catching up with" : "building",
	    (unsigned long long)from + 1, (unsigned long long)o.until, o.threads);
}

/* A build shared with helpers: start them, write their checkpoints, or
 * see that they stopped.  *@p busy while they have the build. */
int
tidei_proj_helpers(tidei_projections *ps, proj *p, tidei_log *log, int64_t now, int *more,
		   int *busy, char *err)
{
	const tidei_buf *out[PAR_MAX_THREADS];
	uint64_t seq, at;
	unsigned n;
	int r, rc;

	*busy = 0;
	if (p->par == NULL) {
		start_helpers(ps, p, log);
		if (p->par != NULL) {
			*busy = 1;
			poll_soon(ps, now);
		}
		return TIDE_OK;
	}
	if (tidei_pbuild_drain_log(p->par, relay_log, ps) > 0)
		LOG(ps, TIDE_LOG_WARN,
		    "projection '%s': some lines its handlers printed were dropped", p->name);
	if (p->par_commit != 0) { /* the last checkpoint has committed */
		tidei_pbuild_resume(p->par, p->par_commit);
		p->par_commit = 0;
	}
	r = tidei_pbuild_poll(p->par, &seq);
	if (r < 0) {
		const char *why = tidei_pbuild_error(p->par, &at);
		LOG(ps, TIDE_LOG_INFO,
		    "projection '%s': the build's threads stopped (%s); it goes on from event "
		    "%llu in one thread",
		    p->name, why, (unsigned long long)p->meta.build_seq + 1);
		tidei_proj_stop_helpers(p);
		p->par_off = 1;
		return TIDE_OK;
	}
	if (r == 0) {
		int64_t every = p->meta.build == p->meta.live ? LIVE_FLUSH_NS : REBUILD_FLUSH_NS;
		if (now - p->flushed_at >= every || tidei_pbuild_held(p->par) >= REBUILD_KEYS)
			tidei_pbuild_checkpoint(p->par);
		*busy = 1;
		poll_soon(ps, now);
		return TIDE_OK;
	}
	/* a checkpoint: every helper's states and the progress, in one commit */
	n = tidei_pbuild_parts(p->par);
	for (unsigned k = 0; k < n; k++) {
		out[k] = tidei_pbuild_states(p->par, k);
		/* live calls, on threads (counted again if this turn is undone
		 * and the helpers redo them, as the engine's own turns are) */
		tidei_histo_merge(&p->took, tidei_pbuild_took(p->par, k));
	}
	LOG(ps, TIDE_LOG_DEBUG, "projection '%s': writing the states of its threads at event %llu",
	    p->name, (unsigned long long)seq);
	rc = tidei_proj_write_states(p, out, n, err);
	tidei_pbuild_release(p->par);
	if (rc != TIDE_OK)
		return rc; /* the turn is undone, and the helpers stopped */
	p->meta.build_seq = seq;
	if (p->meta.build == p->meta.live)
		p->meta.live_seq = seq;
	p->flushed_at = now;
	if (tidei_proj_record(log, p->name, &p->meta) != TIDE_OK)
		return tidei_err(err, TIDE_EIO, "%s", log->err);
	if (tidei_pbuild_final(p->par) && seq >= tidei_pbuild_until(p->par)) {
		/* done: the rest (events since) alone */
		tidei_proj_stop_helpers(p);
		return TIDE_OK;
	}
	if (p->meta.build != p->meta.live)
		tidei_proj_log_progress(ps, p, seq, log->head);
	p->par_commit = seq;
	*busy = 1;
	*more = 1; /* a turn soon: it lets the helpers go on after this one commits */
	return TIDE_OK;
}

/*
 * A live projection under load runs on the build's helpers, beside
 * ingest, rather than in the turn: once PAR_MIN_EVENTS events are
 * committed after its progress, the states it holds are written, and in
 * the next turn (their own transactions see them once it has committed)
 * the helpers start.  They follow the log as it grows, and their states
 * are written every LIVE_FLUSH_NS, until they have caught up and nothing
 * new came for LIVE_IDLE_NS.  Queries and consumers read the last states
 * written, as they do under load anyway.  *@p busy while the helpers have
 * it, or while it waits for events enough.
 */
int
tidei_proj_live_helpers(tidei_projections *ps, proj *p, tidei_log *log, int64_t now, int *more,
			int *busy, char *err)
{
	uint64_t done;
	int rc;

	*busy = 0;
	if (p->par != NULL) {
		if (!tidei_pbuild_final(p->par)) {
			tidei_pbuild_extend(p->par, log->committed);
			/* caught up, and nothing new for a while: they end there */
			if (log->head > log->committed || tidei_pbuild_pos(p->par) < log->committed)
				p->wait_since = 0;
			else if (p->wait_since == 0)
				p->wait_since = now;
			else if (now - p->wait_since >= LIVE_IDLE_NS)
				tidei_pbuild_finish(p->par);
		}
		return tidei_proj_helpers(ps, p, log, now, more, busy, err);
	}
	if (p->hot_at == 0 || now - p->hot_at > HOT_NS || !can_share(ps, p)) {
		p->wait_since = 0;
		return TIDE_OK;
	}
	done = p->done > p->meta.build_seq ? p->done : p->meta.build_seq;
	if (log->committed < done + PAR_MIN_EVENTS) {
		/* a few more events may make it worth it; not for long */
		if (p->wait_since == 0)
			p->wait_since = now;
		if (now - p->wait_since >= LIVE_WAIT_NS || done >= log->head) {
			p->wait_since = 0;
			return TIDE_OK;
		}
		*busy = 1;
		poll_soon(ps, now);
		return TIDE_OK;
	}
	p->wait_since = 0;
	if (p->keys.n > 0 || p->done > p->meta.build_seq) {
		/* the helpers read states from the log: write what is held */
		if ((rc = tidei_proj_flush(ps, p, err)) != TIDE_OK) {
			if (rc != TIDE_ESCRIPT)
				return rc;
			tidei_proj_fault(ps, p, done, err);
			return TIDE_OK;
		}
		tidei_proj_new_cache(ps, p);
		p->meta.build_seq = p->meta.live_seq = done;
		p->flushed_at = now;
		*busy = 1;
		*more = 1;
		return TIDE_OK;
	}
	return tidei_proj_helpers(ps, p, log, now, more, busy, err);
}

/* ------------------------------------------------------------------------
 * Inside a build helper (pbuild.c): one projection, a part of its keys
 * ------------------------------------------------------------------------ */

void
tidei_projections_part(tidei_projections *ps, unsigned part, unsigned nparts,
		       const atomic_int *stop)
{
	ps->part = part;
	ps->nparts = nparts;
	ps->stop = stop;
}

/* Run @p fn (tidei_proj_l_run or tidei_proj_l_keys) over the events @p from to @p until in a
 * build helper. */
static int
helper_pass(tidei_projections *ps, lua_CFunction fn, tidei_log *log, MDB_txn *txn, uint64_t from,
	    uint64_t until, int timed, uint64_t *at, char *err)
{
	proj *p = &ps->v[0];
	char why[TIDEI_ERRLEN];
	int rc, mrc;

	*at = 0;
	p->log = log;
	p->ps = ps;
	p->txn = txn;
	if ((mrc = mdb_cursor_open(txn, log->events, &p->run.cur)) != 0)
		return tidei_err(err, tidei_err_mdb(mrc), "cannot read the log: %s",
				 mdb_strerror(mrc));
	p->run.seq = from;
	p->run.done = from - 1;
	p->run.until = until;
	p->run.handled = p->run.seen = 0;
	p->run.budget = SIZE_MAX;
	p->run.deadline = INT64_MAX;
	p->run.rebuilding = 1;
	p->run.timed = timed;
	p->run.mrc = 0;
	p->run.corrupt = 0;
	rc = tidei_script_protect(ps->o.script, fn, p, why, NULL);
	p->ev = NULL;
	p->key = NULL;
	mdb_cursor_close(p->run.cur);
	p->run.cur = NULL;
	if (rc != TIDE_OK) {
		*at = p->run.seq;
		return tidei_err(err, TIDE_ESCRIPT, "event %llu: %s", (unsigned long long)*at, why);
	}
	if (p->run.corrupt) {
		*at = p->run.seq;
		return tidei_err(err, TIDE_EIO, "event %llu is corrupt", (unsigned long long)*at);
	}
	if (p->run.mrc != 0 && p->run.mrc != MDB_NOTFOUND)
		return tidei_err(err, tidei_err_mdb(p->run.mrc), "cannot read the log: %s",
				 mdb_strerror(p->run.mrc));
	if (tidei_proj_stopping(ps))
		return tidei_err(err, TIDE_ESTATE, "stopped");
	if (p->run.done < until)
		return tidei_err(err, TIDE_EIO, "the log ends before event %llu",
				 (unsigned long long)until);
	return TIDE_OK;
}

int
tidei_projections_find_keys(tidei_projections *ps, tidei_log *log, MDB_txn *txn, tidei_keyed *kd,
			    uint64_t from, uint64_t to, uint64_t *at, char *err)
{
	proj *p = &ps->v[0];
	int rc;

	*at = 0;
	if (ps->n != 1)
		return tidei_err(err, TIDE_ESTATE, "no projection to build");
	for (uint64_t s = from; s <= to; s++)
		tidei_keyed_at(kd, s)->part = -1;
	if (from > to)
		return TIDE_OK;
	p->run.kd = kd;
	p->run.kbuf = &kd->keys[ps->part];
	rc = helper_pass(ps, tidei_proj_l_keys, log, txn, from, to, 0, at, err);
	p->run.kd = NULL;
	p->run.kbuf = NULL;
	return rc;
}

int
tidei_projections_run_part(tidei_projections *ps, tidei_log *log, MDB_txn *txn, uint32_t gen,
			   const tidei_keyed *kd, uint64_t from, uint64_t to, int timed,
			   uint64_t *at, char *err)
{
	proj *p = &ps->v[0];
	int rc;

	*at = 0;
	if (ps->n != 1)
		return tidei_err(err, TIDE_ESTATE, "no projection to build");
	p->meta.build = gen;
	p->run.kd = kd;
	rc = helper_pass(ps, tidei_proj_l_run, log, txn, from, to, timed, at, err);
	p->run.kd = NULL;
	return rc;
}

int
tidei_projections_take(tidei_projections *ps, tidei_buf *out, tidei_histo *took, char *err)
{
	proj *p = &ps->v[0];
	tidei_buf t;
	int rc;

	tidei_buf_reset(out);
	if (ps->n == 1) {
		tidei_histo_merge(took, &p->took);
		memset(&p->took, 0, sizeof p->took);
	}
	if (ps->n != 1 || p->keys.n == 0)
		return TIDE_OK;
	if ((rc = tidei_proj_encode(ps, p, err)) != TIDE_OK)
		return rc;
	t = *out;
	*out = p->out;
	p->out = t;
	return TIDE_OK;
}

size_t
tidei_projections_held(const tidei_projections *ps)
{
	return ps->n == 1 ? ps->v[0].ndirty : 0; /* to be written */
}
