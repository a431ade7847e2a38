/*
 * consumer.c - subscriptions, checkpoints and handler dispatch.
 *
 * Consumers read the log, never the sockets: each turn, every consumer
 * walks the events after its checkpoint inside the turn's write
 * transaction, calls its handler for each event whose type matches its
 * pattern (matched here, in C, before any Lua table is built), appends
 * what the handler emitted, and moves its checkpoint.  Emits commit with
 * the rest of the turn; checkpoints and what the rules keep commit with it
 * too, or a few turns later while the consumers are busy (WRITE_BUSY):
 * after a crash the consumers handle again the events since their last
 * write, and the emits made again carry the ids they had, so the log keeps
 * one copy.  Inside Tide an event's effects happen exactly once.
 *
 * A handler that fails is retried with exponential backoff.  The failed
 * event goes to the consumer's pending set (durable, in the same
 * transaction); with `ordered`, later events of the same subject join it
 * as waiting and are released one by one, in order, once the retry
 * succeeds or the event is given up and parked in the dead letters.  The
 * checkpoint itself always moves on, so other subjects are not held up,
 * and nothing is handled twice after a restart: what is pending is in the
 * log.
 *
 * An emitted event is built by the script through tidei_evb and completed
 * by emit.c: a default source ("/tide/<consumer>") and a deterministic id
 * ("<cause seq>.<n>"), causationid = the cause's id, correlationid = the
 * cause's correlationid or id.  A handler's emits are kept aside during
 * the call and appended only if the call succeeds.  When a retry is due
 * and what the log keeps of it is pending.c's.
 *
 * What the scripts call (tide.on, tide.emit, tide.once, ...) is
 * chost.c's.  This module owns the Lua state of the scripts (through
 * script.c) and the consumer table; it does not touch sockets or decide
 * when turns happen (engine.c).
 */
#include "config.h"

#include <lauxlib.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consumer_int.h"
#include "keymap.h"
#include "pending.h"
#include "shared.h"

/* A consumer hands the loop back after this long (ns), however much is left
 * (its clock is read every CLOCK_EVERY events), so requests wait little. */
#define TURN_NS 50000000
#define CLOCK_EVERY 16
/* A turn that handled at least WRITE_BUSY events leaves its consumers'
 * work in memory, unwritten, until WRITE_NS after the last write or until
 * a quieter turn (the next one that finds nothing new, at the latest).
 * Each write of a key's state copies its LMDB page, so writing every turn
 * at 100,000 keys costs a page per event.  An aborted turn, a crash or a
 * kill takes the consumers back to the last write; the events after it
 * are handled again, and what they emit again has the ids it had the
 * first time, so the log keeps one copy (emits are appended at once).
 * Past WRITE_NS, a write that would store many records for the events
 * since the last one (rules' key states and timers: fewer than
 * WRITE_EVENTS_PER_RECORD events each) waits for more events, up to
 * WRITE_MAX_NS: writing a record costs about as much as handling an
 * event, so rules over many keys spend at most about a ninth of their
 * time writing, and a restart handles at most WRITE_MAX_NS of events
 * again. */
#define WRITE_BUSY 256
#define WRITE_NS 2000000000ll
#define WRITE_MAX_NS 10000000000ll
#define WRITE_EVENTS_PER_RECORD 8
/* Events per consumer that a run in a lent transaction handles (the
 * engine waits meanwhile): what needed the writer, and a little after. */
#define LENT_BUDGET 256

static int
name_valid(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 200)
		return 0;
	for (size_t k = 0; k < n; k++)
		if ((unsigned char)s[k] < 0x21 || s[k] == 0x7f)
			return 0;
	return 1;
}

static int
pattern_valid(const char *p)
{
	const char *star = strchr(p, '*');

	if (*p == '\0')
		return 0;
	/* '*' alone, or once at the end after a dot */
	return star == NULL || strcmp(p, "*") == 0 ||
	       (star[1] == '\0' && star > p && star[-1] == '.');
}

static tidei_consumer *
find(tidei_consumers *cs, const char *name)
{
	for (size_t k = 0; k < cs->n; k++)
		if (strcmp(cs->v[k].name, name) == 0)
			return &cs->v[k];
	return NULL;
}

static int
add(tidei_consumers *cs, const tidei_on_opts *o, int ref, tide_consumer_fn *fn, void *ud,
    const char *where, char *err)
{
	tidei_consumer *c, *dup;

	if (!name_valid(o->name))
		return tidei_err(err, TIDE_EINVAL,
				 "consumer name '%s' must be 1 to 200 printable characters without "
				 "spaces",
				 o->name);
	if (!pattern_valid(o->pattern))
		return tidei_err(err, TIDE_EINVAL,
				 "pattern '%s' must be an event type, a prefix ending in \".*\", "
				 "or \"*\"",
				 o->pattern);
	if ((dup = find(cs, o->name)) != NULL)
		return tidei_err(err, TIDE_EINVAL, "a consumer named '%s' already exists (%s)",
				 o->name, dup->where);
	if (tidei_array_grow(&cs->v, &cs->cap, cs->n, sizeof *cs->v, 8) != 0)
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	c = &cs->v[cs->n];
	memset(c, 0, sizeof *c);
	c->name = strdup(o->name);
	c->pattern = strdup(o->pattern);
	c->where = strdup(where);
	if (c->name == NULL || c->pattern == NULL || c->where == NULL) {
		free(c->name);
		free(c->pattern);
		free(c->where);
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	}
	c->plen = strlen(o->pattern);
	c->from = o->from;
	c->ref = ref;
	c->fn = fn;
	c->ud = ud;
	c->retries =
		o->retries >= 0 ? (uint32_t)(o->retries > 1000 ? 1000 : o->retries) : TIDEI_RETRIES;
	c->backoff_ns = o->backoff >= 0 ? (int64_t)(o->backoff * 1e9) : TIDEI_BACKOFF_NS;
	c->backoff_max_ns =
		o->backoff_max >= 0 ? (int64_t)(o->backoff_max * 1e9) : TIDEI_BACKOFF_MAX_NS;
	if (c->backoff_max_ns < c->backoff_ns)
		c->backoff_max_ns = c->backoff_ns;
	c->ordered = o->ordered != 0;
	cs->n++;
	return TIDE_OK;
}

/* tide.on: a consumer (and its rule) of the script that is loading. */
static int
host_on(void *ud, const tidei_on_opts *o, int ref, const char *where, char *err)
{
	tidei_consumers *cs = ud;
	tidei_on_opts named = *o;
	char defname[256];
	char loc[256];
	size_t wl;
	int rc;

	if (cs->loading == NULL)
		return tidei_err(err, TIDE_ESTATE, "tide.on must be called while the script loads");
	cs->loading_count++;
	if (named.name == NULL) {
		/* "<script stem>:<n>": stable while the script's tide.on calls keep
		 * their order.  Scripts should name their consumers. */
		const char *base = strrchr(cs->loading, '/');
		const char *dot;
		base = base ? base + 1 : cs->loading;
		dot = strrchr(base, '.');
		snprintf(defname, sizeof defname, "%.*s:%d",
			 (int)(dot && dot != base ? dot - base : (long)strlen(base)), base,
			 cs->loading_count);
		named.name = defname;
	}
	/* luaL_where gives "file:line: "; keep "file:line" */
	snprintf(loc, sizeof loc, "%s", where);
	wl = strlen(loc);
	while (wl > 0 && (loc[wl - 1] == ' ' || loc[wl - 1] == ':'))
		loc[--wl] = '\0';
	if ((rc = add(cs, &named, ref, NULL, NULL, loc, err)) != TIDE_OK)
		return rc;
	if (o->L != NULL && o->opts != 0 &&
	    (rc = tidei_rule_new(&cs->v[cs->n - 1].rule, o->L, o->opts, named.name, err)) !=
		    TIDE_OK) {
		tidei_consumer *c = &cs->v[--cs->n];
		free(c->name);
		free(c->pattern);
		free(c->where);
		return rc;
	}
	return TIDE_OK;
}

/* ------------------------------------------------------------------------
 * Lifecycle
 * ------------------------------------------------------------------------ */

/* Messages of scripts run outside an engine: on stderr, a line each. */
static void
stderr_log(void *ud, int level, const char *fmt, ...)
{
	va_list ap;

	(void)ud;
	(void)level;
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

void
tidei_consumers_opts_offline(tidei_consumers_opts *co, const char *lua_path)
{
	memset(co, 0, sizeof *co);
	co->script.instruction_budget = TIDEI_DEFAULT_BUDGET;
	co->script.time_limit_ns = TIDEI_DEFAULT_TIME_NS;
	co->script.memory_limit = TIDEI_DEFAULT_MEMORY;
	co->script.lua_path = lua_path;
	co->max_event = 1 << 20; /* the engine's defaults */
	co->max_depth = TIDEI_DEFAULT_EMIT_DEPTH;
	co->log = stderr_log;
}

int
tidei_consumers_new(tidei_consumers **out, const tidei_consumers_opts *o, char *err)
{
	tidei_consumers *cs = calloc(1, sizeof *cs);
	tidei_host host = { 0 };
	int rc;

	*out = NULL;
	if (cs == NULL)
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	cs->o = *o;
	cs->tag = "";
	cs->emit_at = INT64_MIN;
	if (tidei_shared_new(&cs->shared) != TIDE_OK) {
		free(cs);
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	}
	tidei_keymap_init(&cs->claims);
	tidei_chost_init(&host, cs);
	host.on = host_on;
	if ((rc = tidei_script_new(&cs->script, &o->script, &host, err)) != TIDE_OK) {
		tidei_shared_free(cs->shared, NULL);
		free(cs);
		return rc;
	}
	*out = cs;
	return TIDE_OK;
}

void
tidei_consumers_destroy(tidei_consumers *cs)
{
	if (cs == NULL)
		return;
	for (size_t k = 0; k < cs->n; k++) {
		tidei_rule_free(cs->v[k].rule, tidei_script_state(cs->script));
		free(cs->v[k].name);
		free(cs->v[k].pattern);
		free(cs->v[k].where);
		free(cs->v[k].pend);
		free(cs->v[k].subj);
	}
	free(cs->v);
	tidei_shared_free(cs->shared, tidei_script_state(cs->script));
	tidei_script_destroy(cs->script);
	tidei_buf_free(&cs->emits);
	tidei_keymap_free(&cs->claims);
	tidei_buf_free(&cs->claim);
	tidei_buf_free(&cs->owed);
	tidei_buf_free(&cs->scratch);
	tidei_buf_free(&cs->attrs);
	tidei_buf_free(&cs->timer.key);
	tidei_buf_free(&cs->timer.name);
	tidei_buf_free(&cs->timer.data);
	free(cs->emit_len);
	free(cs);
}

int
tidei_consumers_load(tidei_consumers *cs, const char *path, char *err)
{
	int rc;

	cs->loading = path;
	cs->loading_count = 0;
	rc = tidei_script_load(cs->script, path, err);
	cs->loading = NULL;
	return rc;
}

int
tidei_consumers_add(tidei_consumers *cs, const tidei_on_opts *o, tide_consumer_fn *fn, void *ud,
		    char *err)
{
	return add(cs, o, LUA_NOREF, fn, ud, "C", err);
}

/* ------------------------------------------------------------------------
 * Pending events
 * ------------------------------------------------------------------------ */

void
tidei_consumers_requeue(tidei_consumers *cs, const char *name, uint64_t seq)
{
	tidei_consumer *c = find(cs, name);
	tidei_pending_rec r = { TIDEI_PENDING_RETRY, 1, 0, 0 };
	tidei_pending *p;
	size_t at;

	if (c == NULL)
		return;
	if ((p = tidei_pend_find(c, seq, &at)) != NULL) {
		/* already pending (or resolved and not yet swept): due now, as
		 * the store says */
		tidei_pend_done(c, at);
		p->done = 0;
		p->subject = 0;
		p->r = r;
		return;
	}
	(void)tidei_pend_add(c, seq, 0, &r); /* out of memory: the next reload finds it */
}

void
tidei_consumers_forget(tidei_consumers *cs, const char *name, uint64_t seq)
{
	tidei_consumer *c = find(cs, name);
	size_t at;

	if (c != NULL && tidei_pend_find(c, seq, &at) != NULL)
		tidei_pend_done(c, at);
}

typedef struct load_ctx {
	tidei_consumer *c;
	tidei_log *log;
	MDB_txn *txn;
} load_ctx;

static int
load_one(void *ud, uint64_t seq, const tidei_pending_rec *r)
{
	load_ctx *lc = ud;
	struct tide_event ev;
	uint64_t subject = 0;

	if (tidei_log_get(lc->log, lc->txn, seq, &ev) == TIDE_OK)
		subject = tidei_subject_hash(&ev);
	return tidei_pend_add(lc->c, seq, subject, r);
}

/* Read the consumers' state from @p txn; on failure, why in @p why. */
static int
load(tidei_consumers *cs, tidei_log *log, MDB_txn *txn, uint64_t head, char *why)
{
	int rc = tidei_shared_load(cs->shared, cs->script, log, txn, why);

	for (size_t k = 0; k < cs->n && rc == TIDE_OK; k++) {
		tidei_consumer *c = &cs->v[k];
		load_ctx lc = { c, log, txn };
		int stored;
		uint64_t seq;
		rc = tidei_log_checkpoint_get(log, txn, c->name, &seq, &stored);
		if (rc != TIDE_OK) {
			tidei_err(why, rc, "%s", log->err);
			break;
		}
		if (stored) {
			c->committed = seq;
			c->stored = 1;
		} else if (!c->stored) {
			c->committed = c->from == TIDE_FROM_BEGINNING ? 0 : head;
		}
		c->checkpoint = c->committed;
		tidei_pend_clear(c);
		rc = tidei_log_pending_each(log, txn, c->name, load_one, &lc);
		if (rc != TIDE_OK)
			tidei_err(why, rc, "%s", log->err);
		if (rc == TIDE_OK && c->rule != NULL) {
			tidei_rule_reset(c->rule, tidei_script_state(cs->script));
			rc = tidei_rule_start(c->rule, log, txn, why);
		}
	}
	return rc;
}

int
tidei_consumers_start(tidei_consumers *cs, tidei_log *log, uint64_t head, char *err)
{
	char why[TIDEI_ERRLEN];
	MDB_txn *txn;
	int rc = tidei_log_read_begin(log, &txn);

	if (rc != TIDE_OK)
		return tidei_err(err, rc, "%s", log->err);
	rc = load(cs, log, txn, head, why);
	tidei_log_read_end(log);
	cs->written_at = tidei_now(); /* what is stored is where they are */
	cs->since_write = 0;
	if (rc != TIDE_OK)
		return tidei_err(err, rc, "cannot read consumer state: %s", why);
	return TIDE_OK;
}

int
tidei_consumers_reload(tidei_consumers *cs, tidei_log *log)
{
	char why[TIDEI_ERRLEN];
	MDB_txn *txn;
	int rc = tidei_log_read_begin(log, &txn);

	cs->ran = 0; /* aborted: the claims made stay remembered */
	cs->tick_seq = 0;
	cs->failed.set = 0; /* the run that failed is handled again */
	cs->need = 0;
	tidei_buf_reset(&cs->owed);
	cs->wrote = 0;
	cs->must_write = 0;
	if (rc != TIDE_OK)
		return rc;
	rc = load(cs, log, txn, log->committed, why);
	tidei_log_read_end(log);
	return rc;
}

const char *
tidei_consumers_full(const tidei_consumers *cs)
{
	return cs->full ? cs->full_why : NULL;
}

void
tidei_consumers_blame_all(tidei_consumers *cs)
{
	cs->full = 0;
	cs->blame_all = 1;
}

void
tidei_consumers_set_flight(tidei_consumers *cs, tidei_flight *f)
{
	cs->flight = f;
}

void
tidei_consumers_committed(tidei_consumers *cs)
{
	if (!cs->wrote)
		return; /* the consumers' work waits in memory */
	cs->wrote = 0;
	cs->must_write = 0;
	/* the claims of the consumers' work are durable now */
	if (cs->ran && cs->claims.n > 0)
		tidei_keymap_clear(&cs->claims);
	cs->ran = 0;
	for (size_t k = 0; k < cs->n; k++) {
		cs->v[k].committed = cs->v[k].checkpoint;
		cs->v[k].stored = 1;
		if (cs->v[k].rule != NULL)
			tidei_rule_committed(cs->v[k].rule, tidei_script_state(cs->script));
	}
}

int64_t
tidei_consumers_next_retry(const tidei_consumers *cs)
{
	int64_t next = -1;

	/* the arrival clock's timers: a tick is due (0: find out now) */
	for (size_t k = 0; k < cs->n; k++) {
		int64_t due;
		if (cs->v[k].rule == NULL ||
		    (due = tidei_rule_wall_due(cs->v[k].rule, NULL, NULL)) == INT64_MAX)
			continue;
		if (due == INT64_MIN)
			due = 0;
		if (next < 0 || due < next)
			next = due;
	}

	for (size_t k = 0; k < cs->n; k++)
		for (size_t i = 0; i < cs->v[k].npend; i++) {
			const tidei_pending *p = &cs->v[k].pend[i];
			if (!p->done && p->r.state == TIDEI_PENDING_RETRY &&
			    (next < 0 || p->r.next_at < next))
				next = p->r.next_at;
		}
	return next;
}

tidei_script *
tidei_consumers_script(tidei_consumers *cs)
{
	return cs->script;
}

const tidei_consumer *
tidei_consumers_find(const tidei_consumers *cs, const char *name)
{
	return find((tidei_consumers *)cs, name);
}

size_t
tidei_consumers_count(const tidei_consumers *cs)
{
	return cs->n;
}

const tidei_consumer *
tidei_consumers_at(const tidei_consumers *cs, size_t k)
{
	return k < cs->n ? &cs->v[k] : NULL;
}

/* ------------------------------------------------------------------------
 * Running
 * ------------------------------------------------------------------------ */

/* "file:line" at the start of a Lua error message, or "" */
static void
where_of(const char *msg, char *where, size_t n)
{
	const char *colon = strchr(msg, ':');
	const char *p = colon ? colon + 1 : NULL;

	where[0] = '\0';
	if (p == NULL || *p < '0' || *p > '9')
		return;
	while (*p >= '0' && *p <= '9')
		p++;
	if (*p == ':' && (size_t)(p - msg) < n)
		snprintf(where, n, "%.*s", (int)(p - msg), msg);
}

/* What a handler call came to (*ok of handle()). */
enum {
	H_SET_ASIDE = -1, /* not run: the engine died on this event before (flight.h) */
	H_FAILED = 0,
	H_OK = 1,
	H_NOT_RUN = 2, /* the state was full of what others left: try again afresh */
};

/* A call ran out of memory: was it to blame?  Only if it used much of the
 * ceiling itself, i.e. the state was at most half full when it began
 * (@p room_before).  Either way, if the state stays more than half full
 * once the garbage is collected, someone keeps what they took (a global
 * table): the engine loads the scripts into a fresh state before the next
 * handler runs, so that others do not fail for it. */
static int
blame(tidei_consumers *cs, const tidei_consumer *c, size_t room_before)
{
	size_t ceiling = tidei_lstate_ceiling(tidei_script_lstate(cs->script)), room;
	lua_State *L = tidei_script_state(cs->script);
	int guilty = cs->blame_all || room_before >= ceiling / 2;

	lua_gc(L, LUA_GCCOLLECT, 0);
	room = tidei_lstate_room(tidei_script_lstate(cs->script));
	if (!cs->blame_all && room < ceiling / 2) {
		cs->full = 1;
		snprintf(
			cs->full_why, sizeof cs->full_why,
			"the scripts' Lua state still holds %zu of its %zu MiB after consumer '%s' "
			"ran out of memory%s",
			(ceiling - room) >> 20, ceiling >> 20, c->name,
			guilty ? ""
			       : " (the state was already full when it began: it is not "
				 "counted as a failure of its own)");
	}
	return guilty ? H_FAILED : H_NOT_RUN;
}

/* Append what the call that succeeded emitted. */
static int
append_emits(tidei_consumers *cs, const tidei_consumer *c, const struct tide_event *cause,
	     tidei_log *log, int *appended, char *err)
{
	int rc;

	if (cs->emits.failed)
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	for (size_t k = 0, off = 0; k < cs->nemits; off += cs->emit_len[k], k++) {
		tidei_append res;
		if (cs->sink.emit != NULL) {
			cs->sink.emit(cs->sink.ud, c->name, cs->emits.p + off, cs->emit_len[k],
				      cause);
			continue;
		}
		if (cs->handoff != NULL) { /* to the engine, from the consumers' thread */
			if ((rc = cs->handoff(cs->handoff_ud, cs->emits.p + off, cs->emit_len[k],
					      err)) != TIDE_OK)
				return rc;
			continue;
		}
		if (cs->outbox != NULL) { /* to the cluster's stream, after the commit */
			if ((rc = cs->outbox(cs->outbox_ud, cs->emits.p + off, cs->emit_len[k],
					     err)) != TIDE_OK)
				return rc;
			continue;
		}
		rc = tidei_log_append(log, cs->emits.p + off, cs->emit_len[k], tidei_now(), -1,
				      &res);
		if (rc != TIDE_OK)
			return tidei_err(err, rc, "%s", log->err);
		*appended = 1;
	}
	return TIDE_OK;
}

/* Fire the timers of rule consumer @p c that the watermark has passed,
 * in due order, each with event @p ev (which moved the clock) as the
 * cause of what it emits.  A timer that fails is logged and dropped: it
 * has no event to retry or to park. */
static int
fire_due(tidei_consumers *cs, tidei_consumer *c, const struct tide_event *ev, tidei_log *log,
	 int *appended, char *err)
{
	char why[TIDEI_ERRLEN], trace[TIDEI_ERRLEN];
	struct tide_event cause;
	size_t base = 0;
	int got, rc;

	for (;;) {
		if ((got = tidei_rule_due(c->rule, log, &cs->timer, err)) <= 0)
			return got;
		/* the cause again: appending may have moved its pages */
		if (*appended && (rc = tidei_log_get(log, log->txn, ev->seq, &cause)) == TIDE_OK)
			ev = &cause;
		cs->log = log;
		cs->cur = c;
		cs->cause = ev;
		cs->nemits = 0;
		cs->tag = "t";
		cs->tag_base = base;
		cs->emit_at = cs->timer.due;
		tidei_buf_reset(&cs->emits);
		cs->store_rc = TIDE_OK;
		rc = tidei_rule_fire(c->rule, cs->script, log, &cs->timer, why, trace);
		if (cs->store_rc != TIDE_OK) /* even if the handler caught it */
			rc = cs->store_rc;
		base += cs->nemits;
		tidei_chost_release(cs);
		cs->cur = NULL;
		cs->cause = NULL;
		cs->tag = "";
		cs->tag_base = 0;
		cs->emit_at = INT64_MIN;
		if (rc == TIDE_ESCRIPT) {
			LOG(cs, TIDE_LOG_ERROR, "rule '%s': timer '%.*s' of key '%.*s' failed: %s",
			    c->name, (int)cs->timer.name.len, (const char *)cs->timer.name.p,
			    (int)cs->timer.key.len, (const char *)cs->timer.key.p, why);
			continue;
		}
		if (rc != TIDE_OK)
			return tidei_err(err, rc, "%s", why);
		if ((rc = append_emits(cs, c, ev, log, appended, err)) != TIDE_OK)
			return rc;
	}
}

/* Call one handler.  *ok tells whether it succeeded (H_OK: then its emits
 * are appended), failed, was set aside or was not run (H_*); a non-TIDE_OK
 * return is a failure of the turn itself. */
static int
handle(tidei_consumers *cs, tidei_consumer *c, struct tide_event *ev, tidei_log *log, int *appended,
       int *ok, char *why, char *where, char *err)
{
	char trace[TIDEI_ERRLEN];
	int64_t t0;
	int rc;

	if (tidei_flight_verdict(cs->flight, TIDEI_FLIGHT_CONSUMER, c->name, ev, why)) {
		c->failed++;
		where[0] = '\0';
		*ok = H_SET_ASIDE;
		return TIDE_OK;
	}
	cs->log = log;
	cs->cur = c;
	cs->cause = ev;
	cs->nemits = 0;
	tidei_buf_reset(&cs->emits);
	cs->store_rc = TIDE_OK;
	trace[0] = '\0';
	tidei_flight_enter(cs->flight, TIDEI_FLIGHT_CONSUMER, c->name, ev);
	t0 = tidei_mono();
	if (c->fn != NULL) {
		ev->scratch = &cs->scratch;
		ev->attrs = &cs->attrs;
		ev->handling = cs;
		rc = c->fn(c->ud, ev);
		ev->handling = NULL;
		if (rc != TIDE_OK)
			snprintf(why, TIDEI_ERRLEN, "handler returned %d (%s)", rc,
				 tide_strerror(rc));
		snprintf(where, 256, "C");
	} else {
		size_t room = tidei_lstate_room(tidei_script_lstate(cs->script));
		if (c->rule != NULL && cs->again)
			rc = tidei_rule_call_again(c->rule, cs->script, log, c->ref, ev, why,
						   trace);
		else if (c->rule != NULL)
			rc = tidei_rule_call(c->rule, cs->script, log, c->ref, ev, cs->late, why,
					     trace);
		else
			rc = tidei_script_call(cs->script, c->ref, ev, why, trace);
		if (cs->store_rc != TIDE_OK) /* even if the handler caught it */
			rc = cs->store_rc;
		if (rc != TIDE_OK && rc != TIDE_ESCRIPT) {
			/* the log failed under the call (its map is full, say): the
			 * turn fails and runs again; the handler did not fail */
			tidei_flight_leave(cs->flight);
			tidei_chost_release(cs);
			cs->cur = NULL;
			cs->cause = NULL;
			return tidei_err(err, rc, "%s", why);
		}
		if (rc != TIDE_OK)
			where_of(why, where, 256);
		if (rc != TIDE_OK && tidei_script_failure(cs->script) == TIDEI_FAIL_MEMORY &&
		    (*ok = blame(cs, c, room)) == H_NOT_RUN) {
			tidei_flight_leave(cs->flight);
			tidei_chost_release(cs);
			cs->cur = NULL;
			cs->cause = NULL;
			return TIDE_OK;
		}
	}
	tidei_histo_add(&c->took, &tidei_histo_handler, tidei_mono() - t0);
	tidei_flight_leave(cs->flight);
	tidei_chost_release(cs);
	cs->cur = NULL;
	cs->cause = NULL;
	*ok = rc == TIDE_OK ? H_OK : H_FAILED;
	if (*ok != H_OK) {
		c->failed++;
		if (trace[0])
			/* a line each: the log escapes line feeds in a message */
			for (const char *t = trace, *nl; *t; t = nl ? nl + 1 : t + strlen(t)) {
				nl = strchr(t, '\n');
				LOG(cs, TIDE_LOG_DEBUG, "%.*s", nl ? (int)(nl - t) : (int)strlen(t),
				    t);
			}
		return TIDE_OK;
	}
	c->handled++;
	return append_emits(cs, c, ev, log, appended, err);
}

/* A failed try of pending event @p p: back off, or give up. */
static int
failed_try(tidei_consumers *cs, tidei_consumer *c, tidei_log *log, size_t i,
	   const struct tide_event *ev, const char *why, const char *where, int ok, int64_t now,
	   char *err)
{
	tidei_pending *p = &c->pend[i];
	int rc;

	p->r.attempts++;
	if (ok == 0 && p->r.attempts <= c->retries) {
		p->r.next_at = now + tidei_pend_backoff(c, p->r.attempts);
		c->retried++;
		LOG(cs, TIDE_LOG_WARN,
		    "consumer '%s' failed on event %llu (type %s, id %s), attempt %u of %u: %s",
		    c->name, (unsigned long long)p->seq, ev->attr[TIDEI_A_TYPE],
		    ev->attr[TIDEI_A_ID], p->r.attempts, c->retries + 1, why);
		return tidei_pend_persist(c, log, p, err);
	} else {
		tidei_dead_rec d;
		uint32_t before = 0;
		MDB_txn *txn = log->txn;
		if (p->r.from_dlq && tidei_log_dead_get(log, txn, c->name, p->seq, &d) == TIDE_OK)
			before = d.attempts;
		d.attempts = before + p->r.attempts;
		d.failed_at = now;
		d.where = where;
		d.where_len = strlen(where);
		d.error = why;
		d.error_len = strlen(why);
		if ((rc = tidei_log_dead_put(log, c->name, p->seq, &d)) != TIDE_OK)
			return tidei_err(err, rc, "%s", log->err);
		c->dead_letters++;
		LOG(cs, TIDE_LOG_ERROR,
		    "consumer '%s' gave up on event %llu (type %s, id %s) after %u attempts: %s; "
		    "it is in the dead letters (tide dlq show %llu)",
		    c->name, (unsigned long long)p->seq, ev->attr[TIDEI_A_TYPE],
		    ev->attr[TIDEI_A_ID], d.attempts, why, (unsigned long long)p->seq);
		tidei_pend_done(c, i);
		if ((rc = tidei_pend_persist(c, log, p, err)) != TIDE_OK)
			return rc;
		return tidei_pend_release(c, log, i, err);
	}
}

/* Retries that are due, and events released by resolved ones, in seq
 * order (a released event sits after the one that released it). */
static int
run_pending(tidei_consumers *cs, tidei_consumer *c, tidei_log *log, int64_t now, size_t *handled,
	    size_t budget, int64_t deadline, char *err)
{
	char why[TIDEI_ERRLEN], where[256];
	size_t k, kept;
	int rc = TIDE_OK;

	/* like new events, retries hand the loop back after a while: a
	 * thousand dead letters retried at once must not hold producers */
	for (k = 0; k < c->npend && *handled < budget &&
		    (*handled % CLOCK_EVERY != 0 || *handled == 0 || tidei_now() < deadline);
	     k++) {
		tidei_pending *p = &c->pend[k];
		struct tide_event ev;
		int appended = 0, ok;
		if (p->done || p->r.state != TIDEI_PENDING_RETRY || p->r.next_at > now)
			continue;
		if ((rc = tidei_log_get(log, log->txn, p->seq, &ev)) != TIDE_OK) {
			rc = tidei_err(err, rc == TIDE_ENOTFOUND ? TIDE_EIO : rc,
				       "pending event %llu of '%s' is not in the log",
				       (unsigned long long)p->seq, c->name);
			break;
		}
		ev.scratch = NULL;
		(*handled)++;
		cs->again = p->r.attempts > 0 || p->r.from_dlq;
		cs->late = 0; /* not what the last event offered was */
		rc = handle(cs, c, &ev, log, &appended, &ok, why, where, err);
		cs->again = 0;
		if (rc != TIDE_OK || ok == H_NOT_RUN)
			break;
		/* appends may have moved pages: re-read before using ev again */
		if (appended && tidei_log_get(log, log->txn, c->pend[k].seq, &ev) != TIDE_OK)
			memset(&ev, 0, sizeof ev);
		p = &c->pend[k];
		if (ok == H_OK) {
			if (p->r.from_dlq)
				tidei_log_dead_del(log, c->name, p->seq);
			tidei_pend_done(c, k);
			if ((rc = tidei_pend_persist(c, log, p, err)) != TIDE_OK ||
			    (rc = tidei_pend_release(c, log, k, err)) != TIDE_OK)
				break;
		} else if ((rc = failed_try(cs, c, log, k, &ev, why, where, ok, now, err)) !=
			   TIDE_OK) {
			break;
		}
	}
	for (k = kept = 0; k < c->npend; k++)
		if (!c->pend[k].done)
			c->pend[kept++] = c->pend[k];
	c->npend = kept;
	return rc;
}

static int
save_checkpoint(tidei_consumer *c, tidei_log *log, char *err)
{
	int rc;

	if (c->stored && c->checkpoint == c->committed)
		return TIDE_OK;
	if ((rc = tidei_log_checkpoint_set(log, c->name, c->checkpoint)) != TIDE_OK)
		return tidei_err(err, rc, "%s", log->err);
	return TIDE_OK;
}

#define TICK_TYPE "tide.tick"
#define TICK_SOURCE "/tide"

/* A tick: an event the engine appends so that rules on the arrival clock
 * see time pass while no event comes (tidei_consumers_tick()). */
static int
is_tick(const struct tide_event *ev)
{
	return ev->len[TIDEI_A_TYPE] == sizeof TICK_TYPE - 1 &&
	       memcmp(ev->attr[TIDEI_A_TYPE], TICK_TYPE, sizeof TICK_TYPE - 1) == 0 &&
	       ev->len[TIDEI_A_SOURCE] == sizeof TICK_SOURCE - 1 &&
	       memcmp(ev->attr[TIDEI_A_SOURCE], TICK_SOURCE, sizeof TICK_SOURCE - 1) == 0;
}

/* When the next tick is due (INT64_MAX: none), or -1 while a rule with
 * wall-clock work has not passed the last tick yet: one tick at a time. */
static int64_t
next_tick(const tidei_consumers *cs, tidei_log *log)
{
	int64_t due = INT64_MAX;

	for (size_t k = 0; k < cs->n; k++) {
		const tidei_consumer *c = &cs->v[k];
		int64_t d;
		if (c->rule == NULL ||
		    (d = tidei_rule_wall_due(c->rule, log, log->txn)) == INT64_MAX)
			continue;
		if (cs->tick_seq != 0 && c->checkpoint < cs->tick_seq)
			return -1;
		if (d < due)
			due = d;
	}
	return due;
}

int
tidei_consumers_tick(tidei_consumers *cs, tidei_log *log, int64_t now, char *err)
{
	int64_t due = next_tick(cs, log);
	char id[64], time[40];
	tidei_evb b;
	tidei_buf rec = { 0 };
	tidei_append res;
	int rc = TIDE_OK, n;

	if (due < 0)
		return TIDE_OK;
	cs->tick_seq = 0;
	if (due > now)
		return TIDE_OK;
	memset(&b, 0, sizeof b);
	tidei_evb_reset(&b);
	n = snprintf(id, sizeof id, "tick-%lld", (long long)now);
	tidei_evb_string(&b, "specversion", 11, "1.0", 3);
	tidei_evb_string(&b, "id", 2, id, (size_t)n);
	tidei_evb_string(&b, "source", 6, TICK_SOURCE, sizeof TICK_SOURCE - 1);
	tidei_evb_string(&b, "type", 4, TICK_TYPE, sizeof TICK_TYPE - 1);
	n = tidei_time_format(time, now);
	tidei_evb_string(&b, "time", 4, time, (size_t)n);
	if (b.invalid || tidei_evb_finish(&b, &rec) != 0 || rec.failed)
		rc = tidei_err(err, TIDE_ENOMEM, "cannot make a tick: %s", b.err);
	else if ((rc = tidei_log_append(log, rec.p, rec.len, now, -1, &res)) != TIDE_OK)
		rc = tidei_err(err, rc, "%s", log->err);
	else
		cs->tick_seq = res.seq;
	tidei_evb_free(&b);
	tidei_buf_free(&rec);
	return rc;
}

/* Event @p ev (at @p seq) for consumer @p c: handled, held back behind an
 * earlier event of its subject, or not for it.  *stop is set when the
 * turn must end before the consumer passed it (the state was full). */
static int
offer(tidei_consumers *cs, tidei_consumer *c, struct tide_event *ev, tidei_log *log, int64_t now,
      size_t *handled, int *appended, int *stop, char *err)
{
	char why[TIDEI_ERRLEN], where[256];
	tidei_pending_rec r = { TIDEI_PENDING_WAITING, 0, 0, 0 };
	uint64_t subject, seq = ev->seq;
	int rc, ok = H_OK;

	if (is_tick(ev)) {
		/* the passage of time, for rules on the arrival clock only */
		if (c->rule != NULL && tidei_rule_wall_due(c->rule, NULL, NULL) != INT64_MAX &&
		    !tidei_rule_clock(c->rule, ev, &cs->late))
			return fire_due(cs, c, ev, log, appended, err);
		return TIDE_OK;
	}
	if (!tidei_pattern_match(c->pattern, c->plen, ev->attr[TIDEI_A_TYPE],
				 ev->len[TIDEI_A_TYPE]))
		return TIDE_OK;
	if (cs->reading && c->npend > 0 && tidei_pend_blocked(c, tidei_subject_hash(ev))) {
		/* to be held back: that is written, so the writer does it */
		cs->need = 1;
		*stop = 1;
		return TIDE_OK;
	}
	cs->late = 0;
	if (c->rule != NULL) {
		/* its clock moves, and what falls due fires, before it is handled */
		if (tidei_rule_clock(c->rule, ev, &cs->late) && cs->late == TIDEI_LATE_DROP)
			return TIDE_OK;
		if ((rc = fire_due(cs, c, ev, log, appended, err)) != TIDE_OK)
			return rc;
		if (*appended && (rc = tidei_log_get(log, log->txn, seq, ev)) != TIDE_OK)
			return tidei_err(err, rc, "%s", log->err);
		ev->seq = seq;
		ev->scratch = NULL;
	}
	subject = tidei_subject_hash(ev);
	if (tidei_pend_blocked(c, subject)) {
		/* wait behind the earlier event of this subject */
		cs->must_write = 1;
		if ((rc = tidei_pend_add(c, seq, subject, &r)) != TIDE_OK ||
		    (rc = tidei_log_pending_put(log, c->name, seq, &r)) != TIDE_OK)
			return tidei_err(err, rc, "cannot hold back event %llu",
					 (unsigned long long)seq);
		return TIDE_OK;
	}
	(*handled)++;
	rc = handle(cs, c, ev, log, appended, &ok, why, where, err);
	cs->late = 0;
	if (rc != TIDE_OK)
		return rc;
	if (ok == H_NOT_RUN) {
		*stop = 1; /* not run: its checkpoint stays before it */
		return TIDE_OK;
	}
	if (ok == H_OK)
		return TIDE_OK;
	if (cs->sink.fail != NULL) {
		cs->sink.fail(cs->sink.ud, c->name, seq, why);
		return TIDE_OK;
	}
	if (cs->reading) {
		/* its retry is recorded by the writer, before anything else */
		cs->failed.set = 1;
		cs->failed.c = (size_t)(c - cs->v);
		cs->failed.seq = seq;
		cs->failed.ok = ok;
		cs->failed.now = now;
		snprintf(cs->failed.why, sizeof cs->failed.why, "%s", why);
		snprintf(cs->failed.where, sizeof cs->failed.where, "%s", where);
		cs->need = 1;
		return TIDE_OK;
	}
	/* nothing was appended by a failed call: ev is still good */
	cs->must_write = 1; /* its retry is stored now */
	r.state = TIDEI_PENDING_RETRY;
	if ((rc = tidei_pend_add(c, seq, subject, &r)) != TIDE_OK ||
	    (rc = failed_try(cs, c, log, c->npend - 1, ev, why, where, ok, now, err)) != TIDE_OK)
		return rc;
	if (c->npend > 0 && c->pend[c->npend - 1].done)
		c->npend--; /* given up at once (retries = 0) */
	return TIDE_OK;
}

/* Read the events after @p after (at most TIDEI_RULE_AHEAD):
 * their seqs in @p seqs, their records in @p vals (good until the next
 * append).  Returns how many, 0 at the end (*@p mrc says why). */
static size_t
read_ahead(MDB_cursor *cur, uint64_t after, uint64_t *seqs, MDB_val *vals, int *mrc)
{
	MDB_val k;
	size_t n = 0;
	uint64_t from = after + 1;

	k.mv_size = 8;
	k.mv_data = &from;
	*mrc = mdb_cursor_get(cur, &k, &vals[0], MDB_SET_RANGE);
	while (*mrc == 0) {
		memcpy(&seqs[n], k.mv_data, 8);
		if (++n == TIDEI_RULE_AHEAD)
			break;
		*mrc = mdb_cursor_get(cur, &k, &vals[n], MDB_NEXT);
	}
	if (n > 0)
		*mrc = 0; /* an error past them is met again by the next read */
	return n;
}

/* Events @p ahead (@p n) are next: the rules keyed by a field start
 * bringing their keys' slots into the CPU cache. */
static void
look_ahead(tidei_consumers *cs, const struct tide_event *ahead, size_t n)
{
	const struct tide_event *mine[TIDEI_RULE_AHEAD];

	for (size_t i = 0; i < cs->n; i++) {
		tidei_consumer *c = &cs->v[i];
		size_t m = 0;
		if (c->rule == NULL)
			continue;
		for (size_t j = 0; j < n; j++)
			if (ahead[j].seq > c->checkpoint &&
			    tidei_pattern_match(c->pattern, c->plen, ahead[j].attr[TIDEI_A_TYPE],
						ahead[j].len[TIDEI_A_TYPE]))
				mine[m++] = &ahead[j];
		if (m > 0)
			tidei_rule_ahead(c->rule, mine, m);
	}
}

/* New events, in log order: each event goes through every consumer that
 * has not passed it, in the order the consumers were defined, before the
 * next event is looked at.  Emitted events are appended to the log and
 * reached in their turn, so the order of calls is the log's and a replay
 * of the log makes the same calls in the same order (replay.c).  Events
 * are read and decoded TIDEI_RULE_AHEAD at a time, for the rules to look
 * ahead; a decoded event serves every consumer until an append. */
static int
run_new(tidei_consumers *cs, tidei_log *log, int64_t now, size_t *handled, size_t budget,
	int64_t deadline, char *err)
{
	MDB_cursor *cur;
	MDB_val k, v, vals[TIDEI_RULE_AHEAD];
	uint64_t seq = UINT64_MAX, seqs[TIDEI_RULE_AHEAD];
	struct tide_event ahead[TIDEI_RULE_AHEAD];
	size_t scanned = 0, n = 0, j = 0;
	int rc = TIDE_OK, mrc = 0, stop = 0, stale = 0, decoded = 0;

	for (size_t i = 0; i < cs->n; i++)
		if (cs->v[i].checkpoint < seq)
			seq = cs->v[i].checkpoint;
	if (cs->n == 0 || seq >= log->head)
		return TIDE_OK;
	if ((mrc = mdb_cursor_open(log->txn, log->events, &cur)) != 0)
		return tidei_err(err, tidei_err_mdb(mrc), "cannot read the log: %s",
				 mdb_strerror(mrc));
	/* Non-matching events cost little: scanning is allowed further. */
	while (!stop && *handled < budget && scanned < 8 * budget &&
	       (scanned % CLOCK_EVERY != 0 || scanned == 0 || tidei_now() < deadline)) {
		if (j == n) {
			/* the next events, after the last one read (an append
			 * may have moved the pages under them since) */
			if ((n = read_ahead(cur, n > 0 ? seqs[n - 1] : seq, seqs, vals, &mrc)) == 0)
				break;
			j = 0;
			stale = 0;
			decoded = 1;
			for (size_t i = 0; i < n && decoded; i++) {
				if (tidei_event_decode(&ahead[i], vals[i].mv_data,
						       vals[i].mv_size) != 0)
					decoded = 0; /* reported below, when reached */
				ahead[i].seq = seqs[i];
				ahead[i].scratch = NULL;
			}
			if (decoded)
				look_ahead(cs, ahead, n);
		}
		seq = seqs[j];
		v = vals[j];
		scanned++;
		for (size_t i = 0; i < cs->n && !stop; i++) {
			tidei_consumer *c = &cs->v[i];
			struct tide_event ev;
			int appended = 0;
			if (c->checkpoint >= seq)
				continue;
			if (stale) {
				/* read again: an append may have moved the pages
				 * under the last copy */
				k.mv_size = 8;
				k.mv_data = &seq;
				if ((mrc = mdb_cursor_get(cur, &k, &v, MDB_SET)) != 0)
					break;
			}
			if (!stale && decoded) {
				ev = ahead[j];
			} else if (tidei_event_decode(&ev, v.mv_data, v.mv_size) != 0) {
				rc = tidei_err(err, TIDE_EIO, "event %llu is corrupt",
					       (unsigned long long)seq);
				break;
			}
			ev.seq = seq;
			ev.scratch = NULL;
			rc = offer(cs, c, &ev, log, now, handled, &appended, &stop, err);
			if (rc != TIDE_OK)
				break;
			if (!stop)
				c->checkpoint = seq;
			if (cs->reading && cs->need)
				stop = 1; /* the writer goes on from here */
			if (appended)
				stale = 1;
			if (cs->full)
				stop = 1; /* the rest after the engine made a fresh state */
		}
		if (rc != TIDE_OK || mrc != 0)
			break;
		j++;
	}
	mdb_cursor_close(cur);
	if (rc != TIDE_OK)
		return rc;
	if (mrc != 0 && mrc != MDB_NOTFOUND)
		return tidei_err(err, tidei_err_mdb(mrc), "cannot read the log: %s",
				 mdb_strerror(mrc));
	return TIDE_OK;
}

/* 1 if the consumers' work must be written this turn. */
static int
write_due(const tidei_consumers *cs)
{
	lua_State *L = tidei_script_state(cs->script);

	if (cs->must_write || cs->full)
		return 1;
	for (size_t k = 0; k < cs->n; k++)
		if (cs->v[k].npend > 0 ||
		    (cs->v[k].rule != NULL && tidei_rule_must_write(cs->v[k].rule, L)))
			return 1;
	return 0;
}

/* 1 if a busy turn's work is to be written now (see WRITE_NS). */
static int
write_wanted(const tidei_consumers *cs, int64_t now)
{
	int64_t after = cs->o.write_ns > 0 ? cs->o.write_ns : WRITE_NS;
	int64_t most = after > WRITE_MAX_NS ? after : WRITE_MAX_NS;
	size_t records = 0;

	if (now - cs->written_at < after)
		return write_due(cs);
	if (now - cs->written_at >= most)
		return 1;
	for (size_t k = 0; k < cs->n; k++)
		if (cs->v[k].rule != NULL)
			records += tidei_rule_unwritten(cs->v[k].rule);
	return cs->since_write >= (uint64_t)records * WRITE_EVENTS_PER_RECORD || write_due(cs);
}

/* 1 if a consumer holds a retry that is due at @p now. */
static int
retry_due(const tidei_consumers *cs, int64_t now)
{
	for (size_t k = 0; k < cs->n; k++)
		for (size_t i = 0; i < cs->v[k].npend; i++)
			if (cs->v[k].pend[i].r.state == TIDEI_PENDING_RETRY &&
			    cs->v[k].pend[i].r.next_at <= now)
				return 1;
	return 0;
}

int
tidei_consumers_behind(const tidei_consumers *cs, uint64_t seq)
{
	for (size_t k = 0; k < cs->n; k++)
		if (cs->v[k].checkpoint < seq)
			return 1;
	return 0;
}

/* Events per consumer that a turn handles at most. */
static size_t
turn_per(const tidei_consumers *cs)
{
	return cs->o.turn_budget ? cs->o.turn_budget : 10000;
}

static int
run(tidei_consumers *cs, tidei_log *log, size_t per, int *more, char *err)
{
	size_t budget = per * (cs->n > 0 ? cs->n : 1), handled = 0;
	int64_t now = tidei_now(), deadline = now + TURN_NS;
	int rc = TIDE_OK;

	*more = 0;
	cs->ran = 1;
	cs->wrote = 0;
	/* due retries first, consumer by consumer: they wait for time, not
	 * for their place in the log; what they change is written at once */
	for (size_t k = 0; k < cs->n && rc == TIDE_OK && !cs->full; k++)
		if (cs->v[k].npend > 0) {
			cs->must_write = 1;
			rc = run_pending(cs, &cs->v[k], log, now, &handled, budget, deadline, err);
		}
	if (rc == TIDE_OK && !cs->full && (handled == 0 || tidei_now() < deadline))
		rc = run_new(cs, log, now, &handled, budget, deadline, err);
	if (rc != TIDE_OK)
		return rc;
	cs->since_write += handled;
	if (handled >= WRITE_BUSY && !write_wanted(cs, now))
		*more = 1; /* a turn soon, to write it if nothing else comes */
	else if ((rc = tidei_consumers_write(cs, log, err)) != TIDE_OK)
		return rc;
	/* behind, emitted past, or released a waiting event that is due now */
	if (tidei_consumers_behind(cs, log->head) || retry_due(cs, now))
		*more = 1;
	if (cs->full)
		*more = 1;
	return TIDE_OK;
}

int
tidei_consumers_run(tidei_consumers *cs, tidei_log *log, int *more, char *err)
{
	return run(cs, log, turn_per(cs), more, err);
}

/* 1 if the consumers handled or passed anything since their last write,
 * or hold what must be written: else a write would store nothing new. */
static int
moved(const tidei_consumers *cs)
{
	if (cs->since_write > 0 || cs->must_write)
		return 1;
	for (size_t k = 0; k < cs->n; k++)
		if (!cs->v[k].stored || cs->v[k].checkpoint != cs->v[k].committed)
			return 1;
	return 0;
}

int
tidei_consumers_read(tidei_consumers *cs, tidei_log *view, int *need, char *err)
{
	size_t budget = turn_per(cs) * (cs->n > 0 ? cs->n : 1), handled = 0;
	int64_t now = tidei_now(), tick;
	int rc = TIDE_OK;

	/* a retry that is due writes, and so does a tick */
	cs->need = cs->failed.set || cs->owed.len > 0 || cs->full || retry_due(cs, now) ||
		   ((tick = next_tick(cs, view)) >= 0 && tick <= now);
	if (!cs->need) {
		cs->reading = 1;
		cs->ran = 1;
		rc = run_new(cs, view, now, &handled, budget, now + TURN_NS, err);
		cs->reading = 0;
		cs->since_write += handled;
	}
	/* written as a busy turn's would be; once the thread has ended, the
	 * engine's next turn writes the rest */
	if (rc == TIDE_OK && !cs->need && moved(cs) && write_wanted(cs, now))
		cs->need = 1;
	*need = cs->need;
	return rc;
}

int
tidei_consumers_deferred(const tidei_consumers *cs)
{
	return cs->failed.set || cs->owed.len > 0;
}

int
tidei_consumers_settle(tidei_consumers *cs, tidei_log *log, char *err)
{
	const uint8_t *p = cs->owed.p, *end = p + cs->owed.len;
	int rc = TIDE_OK, first;

	cs->need = 0;
	while (p < end && rc == TIDE_OK) {
		const char *name = (const char *)p;
		uint32_t n;
		uint64_t seq;
		p += strlen(name) + 1;
		memcpy(&n, p, 4);
		memcpy(&seq, p + 4 + n, 8);
		if ((rc = tidei_log_once(log, name, (const char *)p + 4, n, seq, &first)) !=
		    TIDE_OK)
			rc = tidei_err(err, rc, "%s", log->err);
		p += 4 + n + 8;
	}
	tidei_buf_reset(&cs->owed);
	if (rc == TIDE_OK && cs->failed.set) {
		tidei_consumer *c = &cs->v[cs->failed.c];
		tidei_pending_rec r = { TIDEI_PENDING_RETRY, 0, 0, 0 };
		struct tide_event ev;
		cs->failed.set = 0;
		cs->must_write = 1;
		if ((rc = tidei_log_get(log, log->txn, cs->failed.seq, &ev)) != TIDE_OK)
			return tidei_err(err, rc == TIDE_ENOTFOUND ? TIDE_EIO : rc,
					 "event %llu is not in the log",
					 (unsigned long long)cs->failed.seq);
		ev.seq = cs->failed.seq;
		if ((rc = tidei_pend_add(c, ev.seq, tidei_subject_hash(&ev), &r)) != TIDE_OK ||
		    (rc = failed_try(cs, c, log, c->npend - 1, &ev, cs->failed.why,
				     cs->failed.where, cs->failed.ok, cs->failed.now, err)) !=
			    TIDE_OK)
			return rc;
		if (c->npend > 0 && c->pend[c->npend - 1].done)
			c->npend--; /* given up at once (retries = 0) */
	}
	return rc;
}

int
tidei_consumers_lent(tidei_consumers *cs, tidei_log *log, char *err)
{
	int more, rc;

	cs->ran = 1;
	if ((rc = tidei_consumers_settle(cs, log, err)) == TIDE_OK &&
	    (rc = tidei_consumers_tick(cs, log, tidei_now(), err)) == TIDE_OK &&
	    (rc = run(cs, log, LENT_BUDGET, &more, err)) == TIDE_OK && !cs->wrote)
		rc = tidei_consumers_write(cs, log, err);
	return rc;
}

void
tidei_consumers_set_handoff(tidei_consumers *cs, tidei_outbox_fn *put, void *ud)
{
	cs->handoff = put;
	cs->handoff_ud = ud;
}

void
tidei_consumers_set_sink(tidei_consumers *cs, const tidei_replay_sink *sink)
{
	cs->sink = *sink;
}

void
tidei_consumers_set_outbox(tidei_consumers *cs, tidei_outbox_fn *put, void *ud)
{
	cs->outbox = put;
	cs->outbox_ud = ud;
}

int
tidei_consumers_offer(tidei_consumers *cs, tidei_log *log, struct tide_event *ev, char *err)
{
	size_t handled = 0;
	int rc = TIDE_OK, stop = 0, appended = 0;

	for (size_t i = 0; i < cs->n && rc == TIDE_OK && !stop; i++)
		rc = offer(cs, &cs->v[i], ev, log, tidei_now(), &handled, &appended, &stop, err);
	return rc;
}

int
tidei_consumers_write(tidei_consumers *cs, tidei_log *log, char *err)
{
	int rc = tidei_consumers_flush(cs, log, err);

	for (size_t k = 0; k < cs->n && rc == TIDE_OK; k++)
		rc = save_checkpoint(&cs->v[k], log, err);
	if (rc == TIDE_OK) {
		cs->wrote = 1;
		cs->written_at = tidei_now();
		cs->since_write = 0;
	}
	return rc;
}

int
tidei_consumers_flush(tidei_consumers *cs, tidei_log *log, char *err)
{
	int rc = TIDE_OK;

	for (size_t k = 0; k < cs->n && rc == TIDE_OK; k++)
		if (cs->v[k].rule != NULL)
			rc = tidei_rule_flush(cs->v[k].rule, log, err);
	if (rc == TIDE_OK)
		rc = tidei_shared_flush(cs->shared, cs->script, log, err);
	return rc;
}
