/*
 * engine_cthread.c - when the engine's consumers go to a thread of their
 * own (cthread.h), and how they come back.
 *
 * They go while producers keep the engine busy ("busy", the default of
 * `tide run`: BUSY_TURNS turns in a row storing BUSY_EVENTS events or
 * more), or as soon as there is anything to handle ("always"), and only
 * when nothing else needs them on the engine's thread: no projection
 * (projections run in the scripts' Lua state too), no consumer written
 * in C (the embedder's code expects the engine's thread), no cluster, no
 * dead-letter request in progress, no handler under suspicion from an
 * earlier death (each call is recorded there, not on the thread).  They
 * come back when the thread ends (caught up, the scripts' state full, or
 * a failure), and before anything else of the engine touches them: a
 * reload, a stop, a dead-letter request.
 */
#include "config.h"

#include <stdio.h>

#include "cthread.h"
#include "engine_int.h"

#define BUSY_TURNS 3
#define BUSY_EVENTS 64

#define LOG(e, level, ...) (e)->fns.log((e), level, __VA_ARGS__)

static void
wake(void *ud)
{
	tide_engine *e = ud;

	tidei_loop_wake(&e->loop);
}

void
tidei_engine_consumers_away(tide_engine *e, size_t stored)
{
	char err[TIDEI_ERRLEN];
	int rc;

	e->busy_turns = stored >= BUSY_EVENTS ? e->busy_turns + 1 : 0;
	if (e->ct != NULL || e->cfg->consumer_thread == TIDEI_CTHREAD_OFF || e->stopping ||
	    e->cluster != NULL || e->ncc > 0 || e->njobs > 0 || tidei_consumers_count(e->cs) == 0 ||
	    tidei_projections_count(e->ps) > 0 || tidei_consumers_full(e->cs) != NULL ||
	    tidei_flight_home(e->flight) || tidei_now() < e->consumers_resume)
		return;
	if (e->cfg->consumer_thread == TIDEI_CTHREAD_BUSY
		    ? e->busy_turns < BUSY_TURNS
		    : stored == 0 && !tidei_consumers_behind(e->cs, e->log->committed))
		return;
	tidei_consumers_set_flight(e->cs, NULL);
	tidei_flight_away(e->flight, 1);
	if ((rc = tidei_cthread_start(&e->ct, e->cs, e->log, wake, e, err)) != TIDE_OK) {
		tidei_flight_away(e->flight, 0);
		tidei_consumers_set_flight(e->cs, e->flight);
		LOG(e, TIDE_LOG_WARN, "the consumers stay on the engine's thread: %s", err);
		return;
	}
	LOG(e, TIDE_LOG_DEBUG, "the consumers run on a thread of their own");
}

void
tidei_engine_consumers_home(tide_engine *e)
{
	char err[TIDEI_ERRLEN];
	int emits, rc;

	if (e->ct == NULL)
		return;
	emits = tidei_cthread_end(e->ct);
	if (tidei_cthread_over(e->ct, err) && err[0] != '\0') {
		/* as a failed turn of theirs: back to their last write, and a pause */
		LOG(e, TIDE_LOG_ERROR, "consumers paused for a second: %s", err);
		tidei_consumers_reload(e->cs, e->log);
		e->consumers_resume = tidei_now() + CONSUMER_RETRY_NS;
	}
	if (emits || tidei_consumers_deferred(e->cs)) {
		/* what they emitted last, not in the log yet, and what their
		 * last run left for the writer (a retry to record, claims),
		 * with their work, so that a retry and the checkpoint past its
		 * event are stored together */
		if ((rc = tidei_log_begin(e->log)) != TIDE_OK) {
			snprintf(err, sizeof err, "%s", e->log->err);
		} else if ((rc = tidei_cthread_serve(e->ct, err)) != TIDE_OK ||
			   (rc = tidei_consumers_settle(e->cs, e->log, err)) != TIDE_OK ||
			   (rc = tidei_consumers_write(e->cs, e->log, err)) != TIDE_OK) {
			tidei_log_abort(e->log);
		} else if ((rc = tidei_log_commit(e->log)) != TIDE_OK) {
			snprintf(err, sizeof err, "%s", e->log->err);
		}
		tidei_cthread_done(e->ct, rc == TIDE_OK);
		if (rc == TIDE_OK) {
			tidei_consumers_committed(e->cs);
		} else {
			LOG(e, TIDE_LOG_WARN,
			    "what the consumers did last was not written (%s): they handle "
			    "the events after their last write again",
			    err);
			tidei_consumers_reload(e->cs, e->log);
		}
	}
	tidei_cthread_free(e->ct);
	e->ct = NULL;
	e->busy_turns = 0;
	e->lagging = 1; /* a turn, to write what they did last */
	tidei_flight_away(e->flight, 0);
	tidei_consumers_set_flight(e->cs, e->flight);
	LOG(e, TIDE_LOG_DEBUG, "the consumers run on the engine's thread");
}
