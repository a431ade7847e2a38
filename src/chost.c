/*
 * chost.c - what the scripts' calls do in a set of consumers, but for
 * tide.on (consumer.c's): tide.emit keeps an event aside for the call in
 * hand, tide.once claims a key at once in the log, and the rest (timers,
 * windows, projections, shared and reference tables, the clock, log
 * lines) reach the consumer or rule in hand.  tide_emit() and tide_once()
 * do the same for a C handler.
 */
#include "config.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consumer_int.h"
#include "l_table.h"
#include "shared.h"

/* ------------------------------------------------------------------------
 * Host callbacks for the scripts
 * ------------------------------------------------------------------------ */

/* 1 if @p consumer claimed @p key (n bytes) in a turn that was then
 * aborted; otherwise the claim is remembered until the next commit. */
static int
claimed_before(tidei_consumers *cs, const char *consumer, const char *key, size_t n)
{
	int fresh = 0;

	tidei_buf_reset(&cs->claim);
	tidei_buf_put(&cs->claim, consumer, strlen(consumer) + 1);
	tidei_buf_put(&cs->claim, key, n);
	/* out of memory: not remembered, and the claim in the log still holds */
	if (cs->claim.failed) {
		cs->claim.failed = 0;
		return 0;
	}
	return tidei_keymap_put(&cs->claims, (const char *)cs->claim.p, cs->claim.len, &fresh) >=
		       0 &&
	       !fresh;
}

/* tide.once on the consumers' thread, which reads the log: a claim that
 * is neither stored nor made since the last commit is granted and owed
 * to the log; the run stops after this event, and the writer stores it
 * before anything else (tidei_consumers_lent). */
static int
owe_once(tidei_consumers *cs, const char *key, size_t n, int *first, char *err)
{
	const char *name = cs->cur->name;
	uint32_t len = (uint32_t)n;
	uint64_t seq = cs->cause->seq;
	size_t before = cs->owed.len;
	int rc;

	if ((rc = tidei_log_once_get(cs->log, cs->log->txn, name, key, n, first)) != TIDE_OK) {
		cs->store_rc = rc;
		return tidei_err(err, rc, "%s", cs->log->err);
	}
	if (!*first || claimed_before(cs, name, key, n)) {
		*first = 0;
		return TIDE_OK;
	}
	tidei_buf_put(&cs->owed, name, strlen(name) + 1);
	tidei_buf_put(&cs->owed, &len, 4);
	tidei_buf_put(&cs->owed, key, n);
	tidei_buf_put(&cs->owed, &seq, 8);
	if (cs->owed.failed) {
		cs->owed.failed = 0;
		cs->owed.len = before;
		cs->store_rc = TIDE_ENOMEM;
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	}
	cs->need = 1;
	return TIDE_OK;
}

static int
host_once(void *ud, const char *key, size_t n, int *first, char *err)
{
	tidei_consumers *cs = ud;
	int rc;

	if (cs->cur == NULL || cs->cause == NULL)
		return tidei_err(err, TIDE_ESTATE, "tide.once can only be called from a handler");
	if (cs->reading)
		return owe_once(cs, key, n, first, err);
	/* Written at once, not with the handler's emits: a claim must survive
	 * the handler failing afterwards, or a retry would repeat the effect
	 * the claim protects. */
	rc = tidei_log_once(cs->log, cs->cur->name, key, n, cs->cause->seq, first);
	if (rc != TIDE_OK) {
		cs->store_rc = rc; /* the turn's failure, not the handler's */
		return tidei_err(err, rc, "%s", cs->log->err);
	}
	if (*first && claimed_before(cs, cs->cur->name, key, n))
		*first = 0;
	/* written now: claims and what they guard stay together */
	cs->must_write = 1;
	return TIDE_OK;
}

static int
c_reserve(tidei_consumers *cs, size_t n)
{
	if (tidei_lstate_reserve(tidei_script_lstate(cs->script), n) != TIDE_OK)
		return TIDE_ENOMEM;
	cs->reserved += n;
	return TIDE_OK;
}

void
tidei_chost_release(tidei_consumers *cs)
{
	tidei_lstate_release(tidei_script_lstate(cs->script), cs->reserved);
	cs->reserved = 0;
}

static int
host_emit(void *ud, tidei_evb *b, char *err)
{
	tidei_consumers *cs = ud;
	const struct tide_event *cause = cs->cause;
	size_t before;
	int rc;

	if (cs->cur == NULL || cause == NULL)
		return tidei_err(err, TIDE_ESTATE, "tide.emit can only be called from a handler");
	if (cs->o.max_emits && cs->nemits >= cs->o.max_emits)
		return tidei_err(err, TIDE_EINVAL,
				 "a handler may emit at most %zu events per call (is it looping?)",
				 cs->o.max_emits);
	if ((rc = tidei_emit_prepare_tagged(b, cs->cur->name, cause, cs->tag,
					    cs->tag_base + cs->nemits + 1, cs->emit_at,
					    cs->o.max_depth, cs->outbox != NULL, err)) != TIDE_OK)
		return rc;
	if (tidei_array_grow(&cs->emit_len, &cs->emit_cap, cs->nemits, sizeof *cs->emit_len, 16) !=
	    0)
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	before = cs->emits.len;
	if (tidei_evb_finish(b, &cs->emits) != 0) {
		cs->emits.len = before;
		return tidei_err(err, TIDE_EEVENT, "%s", b->err);
	}
	if (cs->o.max_event && cs->emits.len - before > cs->o.max_event) {
		char lim[32];
		cs->emits.len = before;
		tidei_fmt_size(lim, sizeof lim, cs->o.max_event);
		return tidei_err(err, TIDE_EEVENT,
				 "the event is larger than the max_event_size limit of %s", lim);
	}
	/* emitted events are held until the call returns: they count against
	 * the scripts' memory ceiling like the state itself */
	if (c_reserve(cs, cs->emits.len - before) != TIDE_OK) {
		cs->emits.len = before;
		return tidei_err(err, TIDE_ENOMEM,
				 "the emitted events would pass the scripts' memory_limit");
	}
	cs->emit_len[cs->nemits++] = (uint32_t)(cs->emits.len - before);
	return TIDE_OK;
}

static int
host_projection(void *ud, lua_State *L, const char *name, int spec, const char *where, char *err)
{
	tidei_consumers *cs = ud;

	if (cs->loading == NULL || cs->o.projection == NULL)
		return tidei_err(err, TIDE_ESTATE,
				 "tide.projection must be called while the script loads");
	return cs->o.projection(cs->o.projection_ud, L, name, spec, cs->loading, where, err);
}

static int
host_timer(void *ud, lua_State *L, int op, const char *name, size_t n, int64_t when, int data,
	   char *err)
{
	tidei_consumers *cs = ud;

	if (cs->cur == NULL || cs->cur->rule == NULL)
		return tidei_err(err, TIDE_ESTATE,
				 "timers belong to a rule: call this from a handler of a tide.on "
				 "with a 'key' or 'timers' option");
	return tidei_rule_timer_op(cs->cur->rule, L, op, name, n, when, data, err);
}

static int
host_query(void *ud, lua_State *L, const char *name, const char *key, size_t klen, char *err)
{
	tidei_consumers *cs = ud;

	if (cs->cur == NULL || cs->o.query == NULL)
		return tidei_err(err, TIDE_ESTATE, "projections are read from a handler");
	return cs->o.query(cs->o.projection_ud, L, cs->log, name, key, klen, err);
}

static int
host_table(void *ud, lua_State *L, int name, int opts, char *err)
{
	tidei_consumers *cs = ud;
	const char *slash;

	if (cs->loading == NULL)
		return tidei_err(err, TIDE_ESTATE,
				 "tables are read while the script loads, not in handlers");
	/* the script's directory, on the stack while the table is read */
	slash = strrchr(cs->loading, '/');
	if (slash == NULL)
		lua_pushliteral(L, ".");
	else
		lua_pushlstring(L, cs->loading, (size_t)(slash - cs->loading));
	tidei_lua_table(L, lua_tostring(L, -1), name, opts);
	lua_remove(L, -2);
	return TIDE_OK;
}

static int
host_shared(void *ud, lua_State *L, const char *name, int idx, char *err)
{
	tidei_consumers *cs = ud;

	if (cs->loading == NULL)
		return tidei_err(err, TIDE_ESTATE, "call it while the script loads");
	return tidei_shared_define(cs->shared, L, name, idx, err);
}

static int
host_window(void *ud, lua_State *L, const char *name, int fields, int nfields, char *err)
{
	tidei_consumers *cs = ud;

	if (cs->cur == NULL || cs->cur->rule == NULL)
		return tidei_err(err, TIDE_ESTATE,
				 "windows belong to a rule: call this from a handler of a tide.on "
				 "with a 'windows' option");
	return tidei_rule_window(cs->cur->rule, L, name, fields, nfields, err);
}

static int
host_clock(void *ud, int64_t *now)
{
	tidei_consumers *cs = ud;

	if (cs->cur == NULL || cs->cur->rule == NULL ||
	    (*now = tidei_rule_now(cs->cur->rule)) == INT64_MIN)
		return TIDE_ENOTFOUND;
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

void
tidei_chost_init(tidei_host *host, tidei_consumers *cs)
{
	host->ud = cs;
	host->max_event = cs->o.max_event;
	host->once = host_once;
	host->emit = host_emit;
	host->log = host_log;
	host->projection = host_projection;
	host->timer = host_timer;
	host->clock = host_clock;
	host->shared = host_shared;
	host->query = host_query;
	host->table = host_table;
	host->window = host_window;
}

/* ------------------------------------------------------------------------
 * What a C handler may do with the event it handles
 * ------------------------------------------------------------------------ */

/* The consumers whose C handler is handling @p ev now, or NULL. */
static tidei_consumers *
handling(const tide_event *ev)
{
	tidei_consumers *cs = ev ? ev->handling : NULL;

	return cs != NULL && cs->cur != NULL && cs->cause == ev ? cs : NULL;
}

static int
take_emit(void *ud, tidei_evb *b, char *err)
{
	/* as from Lua: an emitted event need not repeat the spec version */
	tidei_consumers *cs = ud;
	int rc;

	if (!b->invalid && !(b->seen & TIDEI_SEEN_SPECVERSION))
		tidei_evb_string(b, "specversion", 11, "1.0", 3);
	if ((rc = host_emit(ud, b, err)) == TIDE_ENOMEM)
		cs->take_nomem = 1;
	return rc;
}

typedef struct emit_sink {
	char err[TIDEI_ERRLEN];
	size_t bad;
	size_t index; /* of the event in the text */
} emit_sink;

static void
emit_seen(void *ud, const uint8_t *rec, size_t len, const char *err)
{
	emit_sink *k = ud;

	(void)rec;
	(void)len;
	k->index++;
	if (err != NULL && k->bad++ == 0)
		snprintf(k->err, sizeof k->err, "event %zu of the text: %s", k->index, err);
}

TIDE_API int
tide_emit(const tide_event *ev, const char *json, size_t len)
{
	tidei_consumers *cs = handling(ev);
	tidei_eparser p;
	emit_sink k;
	size_t nemits, used, reserved;
	int failed;
	long got;

	if (ev == NULL || json == NULL)
		return tidei_fail(TIDE_EINVAL, "tide_emit: ev and json must not be NULL");
	if (cs == NULL)
		return tidei_fail(TIDE_ESTATE,
				  "tide_emit is for the event a C consumer is handling, "
				  "during its callback");
	nemits = cs->nemits;
	used = cs->emits.len;
	reserved = cs->reserved;
	failed = cs->emits.failed;
	cs->take_nomem = 0;
	memset(&k, 0, sizeof k);
	tidei_eparser_init(&p, cs->o.max_event ? cs->o.max_event : SIZE_MAX);
	p.take = take_emit;
	p.take_ud = cs;
	got = tidei_eparser_run(&p, json, len, emit_seen, &k);
	tidei_eparser_free(&p);
	if (got < 0 || k.bad > 0 || got == 0) {
		/* all or nothing: what the text's other events added goes,
		 * with the memory it held against the scripts' limit */
		cs->nemits = nemits;
		cs->emits.len = used;
		cs->emits.failed = failed;
		tidei_lstate_release(tidei_script_lstate(cs->script), cs->reserved - reserved);
		cs->reserved = reserved;
		if (got < 0 || cs->take_nomem)
			return tidei_fail(TIDE_ENOMEM, "%s",
					  k.bad > 0 ? k.err
						    : "out of memory (nothing was emitted)");
		if (got == 0)
			return tidei_fail(TIDE_EEVENT, "tide_emit: the text holds no event");
		return tidei_fail(TIDE_EEVENT, "%s%s", k.err,
				  k.bad > 1 ? " (and more: nothing of it was emitted)"
					    : " (nothing of it was emitted)");
	}
	return TIDE_OK;
}

TIDE_API int
tide_once(const tide_event *ev, const void *key, size_t len, int *first)
{
	tidei_consumers *cs = handling(ev);
	char msg[TIDEI_ERRLEN];
	int rc;

	if (ev == NULL || (key == NULL && len > 0) || first == NULL)
		return tidei_fail(TIDE_EINVAL, "tide_once: ev, key and first must not be NULL");
	if (cs == NULL)
		return tidei_fail(TIDE_ESTATE,
				  "tide_once is for the event a C consumer is handling, "
				  "during its callback");
	if ((rc = host_once(cs, key ? (const char *)key : "", len, first, msg)) != TIDE_OK)
		return tidei_fail(rc, "%s", msg);
	return TIDE_OK;
}
