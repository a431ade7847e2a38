/*
 * consumer.c - subscriptions, checkpoints and handler dispatch.
 *
 * Consumers read the log, never the sockets: each turn, every consumer
 * walks the events after its checkpoint inside the turn's write
 * transaction, calls its handler for each event whose type matches its
 * pattern (matched here, in C, before any Lua table is built), appends
 * what the handler emitted, and moves its checkpoint.  Emits and
 * checkpoints commit with the rest of the turn, so inside Tide an event's
 * effects happen exactly once.
 *
 * An emitted event is built by the script through tidei_evb and completed
 * here: a default source ("/tide/<consumer>") and a deterministic id
 * ("<cause seq>.<n>"), causationid = the cause's id, correlationid = the
 * cause's correlationid or id.  A handler's emits are kept aside during
 * the call and appended only if the call succeeds.
 *
 * This module owns the Lua state of the scripts (through script.c) and
 * the consumer table; it does not touch sockets or decide when turns
 * happen (engine.c).
 */
#include "config.h"

#include <lauxlib.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consumer.h"

struct tidei_consumers {
	tidei_consumer *v;
	size_t n, cap;
	tidei_script *script;
	tidei_consumers_opts o;
	/* while a script is loading */
	const char *loading;
	int loading_count;
	/* while a handler runs */
	tidei_consumer *cur;
	const struct tide_event *cause;
	tidei_buf emits; /* records emitted by the current call */
	uint32_t *emit_len;
	size_t nemits, emit_cap;
	tidei_buf scratch; /* tide_event_json() for C handlers */
};

#define LOG(cs, level, ...) (cs)->o.log((cs)->o.log_ud, level, __VA_ARGS__)

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
add(tidei_consumers *cs, const char *name, const char *pattern, int from, int ref,
    tide_consumer_fn *fn, void *ud, const char *where, char *err)
{
	tidei_consumer *c, *dup;

	if (!name_valid(name))
		return tidei_err(err, TIDE_EINVAL,
				 "consumer name '%s' must be 1 to 200 printable characters without "
				 "spaces",
				 name);
	if (!pattern_valid(pattern))
		return tidei_err(err, TIDE_EINVAL,
				 "pattern '%s' must be an event type, a prefix ending in \".*\", "
				 "or \"*\"",
				 pattern);
	if ((dup = find(cs, name)) != NULL)
		return tidei_err(err, TIDE_EINVAL, "a consumer named '%s' already exists (%s)",
				 name, dup->where);
	if (cs->n == cs->cap) {
		size_t cap = cs->cap ? cs->cap * 2 : 8;
		tidei_consumer *v = realloc(cs->v, cap * sizeof *v);
		if (v == NULL)
			return tidei_err(err, TIDE_ENOMEM, "out of memory");
		cs->v = v;
		cs->cap = cap;
	}
	c = &cs->v[cs->n];
	memset(c, 0, sizeof *c);
	c->name = strdup(name);
	c->pattern = strdup(pattern);
	c->where = strdup(where);
	if (c->name == NULL || c->pattern == NULL || c->where == NULL) {
		free(c->name);
		free(c->pattern);
		free(c->where);
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	}
	c->plen = strlen(pattern);
	c->from = from;
	c->ref = ref;
	c->fn = fn;
	c->ud = ud;
	cs->n++;
	return TIDE_OK;
}

/* ------------------------------------------------------------------------
 * Host callbacks for the scripts
 * ------------------------------------------------------------------------ */

static int
host_on(void *ud, const char *name, const char *pattern, int from, int ref, const char *where,
	char *err)
{
	tidei_consumers *cs = ud;
	char defname[256];
	char loc[256];
	size_t wl;

	if (cs->loading == NULL)
		return tidei_err(err, TIDE_ESTATE, "tide.on must be called while the script loads");
	cs->loading_count++;
	if (name == NULL) {
		/* "<script stem>:<n>": stable while the script's tide.on calls keep
		 * their order.  Scripts should name their consumers. */
		const char *base = strrchr(cs->loading, '/');
		const char *dot;
		base = base ? base + 1 : cs->loading;
		dot = strrchr(base, '.');
		snprintf(defname, sizeof defname, "%.*s:%d",
			 (int)(dot && dot != base ? dot - base : (long)strlen(base)), base,
			 cs->loading_count);
		name = defname;
	}
	/* luaL_where gives "file:line: "; keep "file:line" */
	snprintf(loc, sizeof loc, "%s", where);
	wl = strlen(loc);
	while (wl > 0 && (loc[wl - 1] == ' ' || loc[wl - 1] == ':'))
		loc[--wl] = '\0';
	return add(cs, name, pattern, from ? TIDE_FROM_BEGINNING : TIDE_FROM_END, ref, NULL, NULL,
		   loc, err);
}

static int
set_default(tidei_evb *b, int attr, const char *val, size_t n)
{
	if (b->seen & (1u << attr))
		return 0;
	return tidei_evb_string(b, tidei_attr_names[attr], strlen(tidei_attr_names[attr]), val, n);
}

static int
host_emit(void *ud, tidei_evb *b, char *err)
{
	tidei_consumers *cs = ud;
	const struct tide_event *cause = cs->cause;
	char tmp[256];
	size_t before;
	int n;

	if (cs->cur == NULL || cause == NULL)
		return tidei_err(err, TIDE_ESTATE, "tide.emit can only be called from a handler");
	if (cs->o.max_emits && cs->nemits >= cs->o.max_emits)
		return tidei_err(err, TIDE_EINVAL,
				 "a handler may emit at most %zu events per call (is it looping?)",
				 cs->o.max_emits);
	n = snprintf(tmp, sizeof tmp, "/tide/%s", cs->cur->name);
	set_default(b, TIDEI_A_SOURCE, tmp, (size_t)n);
	n = snprintf(tmp, sizeof tmp, "%llu.%zu", (unsigned long long)cause->seq, cs->nemits + 1);
	set_default(b, TIDEI_A_ID, tmp, (size_t)n);
	set_default(b, TIDEI_A_CAUSATIONID, cause->attr[TIDEI_A_ID], cause->len[TIDEI_A_ID]);
	if (cause->attr[TIDEI_A_CORRELATIONID] != NULL)
		set_default(b, TIDEI_A_CORRELATIONID, cause->attr[TIDEI_A_CORRELATIONID],
			    cause->len[TIDEI_A_CORRELATIONID]);
	else
		set_default(b, TIDEI_A_CORRELATIONID, cause->attr[TIDEI_A_ID],
			    cause->len[TIDEI_A_ID]);
	if (cs->nemits == cs->emit_cap) {
		size_t cap = cs->emit_cap ? cs->emit_cap * 2 : 16;
		uint32_t *p = realloc(cs->emit_len, cap * sizeof *p);
		if (p == NULL)
			return tidei_err(err, TIDE_ENOMEM, "out of memory");
		cs->emit_len = p;
		cs->emit_cap = cap;
	}
	before = cs->emits.len;
	if (tidei_evb_finish(b, &cs->emits) != 0) {
		cs->emits.len = before;
		return tidei_err(err, TIDE_EEVENT, "%s", b->err);
	}
	cs->emit_len[cs->nemits++] = (uint32_t)(cs->emits.len - before);
	return TIDE_OK;
}

static void
host_log(void *ud, int level, const char *msg)
{
	tidei_consumers *cs = ud;

	if (cs->cur != NULL)
		LOG(cs, level, "[%s] %s", cs->cur->name, msg);
	else if (cs->loading != NULL)
		LOG(cs, level, "[%s] %s", cs->loading, msg);
	else
		LOG(cs, level, "%s", msg);
}

/* ------------------------------------------------------------------------
 * Lifecycle
 * ------------------------------------------------------------------------ */

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
	host.ud = cs;
	host.on = host_on;
	host.emit = host_emit;
	host.log = host_log;
	if ((rc = tidei_script_new(&cs->script, &o->script, &host, err)) != TIDE_OK) {
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
		free(cs->v[k].name);
		free(cs->v[k].pattern);
		free(cs->v[k].where);
	}
	free(cs->v);
	tidei_script_destroy(cs->script);
	tidei_buf_free(&cs->emits);
	tidei_buf_free(&cs->scratch);
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
tidei_consumers_add(tidei_consumers *cs, const char *name, const char *pattern, int from,
		    tide_consumer_fn *fn, void *ud, char *err)
{
	return add(cs, name, pattern, from, LUA_NOREF, fn, ud, "C", err);
}

int
tidei_consumers_start(tidei_consumers *cs, tidei_log *log, uint64_t head, char *err)
{
	MDB_txn *txn;
	int rc = tidei_log_read_begin(log, &txn);

	if (rc != TIDE_OK)
		return tidei_err(err, rc, "%s", log->err);
	for (size_t k = 0; k < cs->n && rc == TIDE_OK; k++) {
		tidei_consumer *c = &cs->v[k];
		rc = tidei_log_checkpoint_get(log, txn, c->name, &c->committed, &c->stored);
		if (!c->stored)
			c->committed = c->from == TIDE_FROM_BEGINNING ? 0 : head;
		c->checkpoint = c->committed;
	}
	tidei_log_read_end(log);
	if (rc != TIDE_OK)
		return tidei_err(err, rc, "cannot read consumer checkpoints: %s", log->err);
	return TIDE_OK;
}

void
tidei_consumers_committed(tidei_consumers *cs)
{
	for (size_t k = 0; k < cs->n; k++) {
		cs->v[k].committed = cs->v[k].checkpoint;
		cs->v[k].stored = 1;
	}
}

void
tidei_consumers_rollback(tidei_consumers *cs)
{
	for (size_t k = 0; k < cs->n; k++)
		cs->v[k].checkpoint = cs->v[k].committed;
}

uint64_t
tidei_consumers_min_checkpoint(const tidei_consumers *cs, uint64_t head)
{
	uint64_t min = head;

	for (size_t k = 0; k < cs->n; k++)
		if (cs->v[k].checkpoint < min)
			min = cs->v[k].checkpoint;
	return min;
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

/* Call one handler; on success append its emits. */
static int
handle(tidei_consumers *cs, tidei_consumer *c, struct tide_event *ev, tidei_log *log, int *appended,
       char *err)
{
	char why[TIDEI_ERRLEN], trace[TIDEI_ERRLEN];
	int rc;

	cs->cur = c;
	cs->cause = ev;
	cs->nemits = 0;
	tidei_buf_reset(&cs->emits);
	if (c->fn != NULL) {
		ev->scratch = &cs->scratch;
		rc = c->fn(c->ud, ev);
		if (rc != TIDE_OK)
			snprintf(why, sizeof why, "handler returned %d (%s)", rc,
				 tide_strerror(rc));
		trace[0] = '\0';
	} else {
		rc = tidei_script_call(cs->script, c->ref, ev, why, trace);
	}
	cs->cur = NULL;
	cs->cause = NULL;
	if (rc != TIDE_OK) {
		c->failed++;
		LOG(cs, TIDE_LOG_ERROR, "consumer '%s' failed on event %llu (type %s, id %s): %s",
		    c->name, (unsigned long long)ev->seq, ev->attr[TIDEI_A_TYPE],
		    ev->attr[TIDEI_A_ID], why);
		if (trace[0])
			LOG(cs, TIDE_LOG_DEBUG, "%s", trace);
		return TIDE_OK; /* the engine keeps going */
	}
	c->handled++;
	if (cs->emits.failed)
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	for (size_t k = 0, off = 0; k < cs->nemits; off += cs->emit_len[k], k++) {
		tidei_append res;
		rc = tidei_log_append(log, cs->emits.p + off, cs->emit_len[k], tidei_now(), &res);
		if (rc != TIDE_OK)
			return tidei_err(err, rc, "%s", log->err);
		*appended = 1;
	}
	return TIDE_OK;
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

static int
run_one(tidei_consumers *cs, tidei_consumer *c, tidei_log *log, int *more, char *err)
{
	MDB_cursor *cur;
	MDB_val k, v;
	uint64_t seq;
	size_t handled = 0, scanned = 0;
	size_t budget = cs->o.turn_budget ? cs->o.turn_budget : 10000;
	int rc, mrc;

	if (c->checkpoint >= log->head)
		return save_checkpoint(c, log, err);
	if ((mrc = mdb_cursor_open(log->txn, log->events, &cur)) != 0)
		return tidei_err(err, tidei_err_mdb(mrc), "cannot read the log: %s",
				 mdb_strerror(mrc));
	seq = c->checkpoint + 1;
	k.mv_size = 8;
	k.mv_data = &seq;
	mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
	rc = TIDE_OK;
	/* Non-matching events cost little: scanning is allowed further. */
	while (mrc == 0 && handled < budget && scanned < 8 * budget) {
		struct tide_event ev;
		int appended = 0;

		memcpy(&seq, k.mv_data, 8);
		if (tidei_event_decode(&ev, v.mv_data, v.mv_size) != 0) {
			rc = tidei_err(err, TIDE_EIO, "event %llu is corrupt",
				       (unsigned long long)seq);
			break;
		}
		ev.seq = seq;
		ev.scratch = NULL;
		scanned++;
		if (tidei_pattern_match(c->pattern, c->plen, ev.attr[TIDEI_A_TYPE],
					ev.len[TIDEI_A_TYPE])) {
			handled++;
			if ((rc = handle(cs, c, &ev, log, &appended, err)) != TIDE_OK)
				break;
		}
		c->checkpoint = seq;
		if (appended) {
			/* Appending may have moved pages under the cursor. */
			k.mv_size = 8;
			k.mv_data = &seq;
			mrc = mdb_cursor_get(cur, &k, &v, MDB_SET);
			if (mrc != 0)
				break;
		}
		mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
	}
	mdb_cursor_close(cur);
	if (rc != TIDE_OK)
		return rc;
	if (mrc != 0 && mrc != MDB_NOTFOUND)
		return tidei_err(err, tidei_err_mdb(mrc), "cannot read the log: %s",
				 mdb_strerror(mrc));
	if (c->checkpoint < log->head)
		*more = 1;
	return save_checkpoint(c, log, err);
}

int
tidei_consumers_run(tidei_consumers *cs, tidei_log *log, int *more, char *err)
{
	int rc;

	*more = 0;
	for (size_t k = 0; k < cs->n; k++)
		if ((rc = run_one(cs, &cs->v[k], log, more, err)) != TIDE_OK)
			return rc;
	/* A later consumer may have emitted past an earlier one. */
	for (size_t k = 0; k < cs->n; k++)
		if (cs->v[k].checkpoint < log->head)
			*more = 1;
	return TIDE_OK;
}
