/*
 * rule.c - what a consumer becomes when it is a rule (see rule.h): its
 * options, its clock, its timers and the calls of its handlers, with the
 * key's state from the cache of rslot.c.
 *
 * The rule keeps its records in the `rules` database, all under the
 * consumer's name: a record per key and the clock (rslot.c), and the
 * timers ('T', 'N': rtimer.c).  Two timer names are the rule's own: ""
 * (the key's expiry after ttl) and "\1w" (its windows' next close).
 *
 * A key's state is encoded after every call that succeeded (a state that
 * cannot be stored fails the call, as it should: a retry will not help
 * later); that encoding is both what a write stores and what a failing
 * call is rolled back to.  Keys changed since the last write are listed
 * (r->dirty) and written in key order.
 */
#include "config.h"

#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keymap.h"
#include "l_event.h"
#include "l_tide.h"
#include "agg.h"
#include "rtimer.h"
#include "rule_int.h"
#include "rwin.h"
#include "val.h"

/* ------------------------------------------------------------------------
 * Durations and options
 * ------------------------------------------------------------------------ */

/* Option @p field of the table at @p idx as a duration: a string with a
 * unit or a number of seconds.  0 with *ns untouched when absent. */
static int
opt_duration(lua_State *L, int idx, const char *field, int64_t *ns, char *err)
{
	char why[TIDEI_ERRLEN];
	size_t n;
	const char *s;
	int rc = TIDE_OK;

	switch (lua_getfield(L, idx, field)) {
	case LUA_TNIL: break;
	case LUA_TNUMBER:
	case LUA_TSTRING:
		s = lua_tolstring(L, -1, &n);
		if (tidei_duration_parse(s, n, ns, why) != TIDE_OK)
			rc = tidei_err(err, TIDE_EINVAL, "option '%s': %s", field, why);
		break;
	default:
		rc = tidei_err(err, TIDE_EINVAL,
			       "option '%s' must be a duration such as \"15m\" or a number of "
			       "seconds, not a %s",
			       field, luaL_typename(L, -1));
	}
	lua_pop(L, 1);
	return rc;
}

/* A function option into a registry reference (LUA_NOREF when absent). */
static int
opt_function(lua_State *L, int idx, const char *field, int *ref, char *err)
{
	int t = lua_getfield(L, idx, field);

	*ref = LUA_NOREF;
	if (t == LUA_TNIL) {
		lua_pop(L, 1);
		return TIDE_OK;
	}
	if (t != LUA_TFUNCTION) {
		lua_pop(L, 1);
		return tidei_err(err, TIDE_EINVAL, "option '%s' must be a function", field);
	}
	*ref = luaL_ref(L, LUA_REGISTRYINDEX);
	return TIDE_OK;
}

static int
is_rule(lua_State *L, int idx)
{
	static const char *const fields[] = { "key",    "ttl",      "clock",   "lateness", "late",
					      "timers", "on_close", "windows", "state",    NULL };

	for (const char *const *f = fields; *f; f++) {
		int t = lua_getfield(L, idx, *f);
		lua_pop(L, 1);
		if (t != LUA_TNIL)
			return 1;
	}
	return 0;
}

static int
parse_key(tidei_rule *r, lua_State *L, int idx, char *err)
{
	int t = lua_getfield(L, idx, "key");
	tide_value v;

	if (t == LUA_TFUNCTION) {
		r->key_ref = luaL_ref(L, LUA_REGISTRYINDEX);
		return TIDE_OK;
	}
	if (t == LUA_TSTRING) {
		const char *p = lua_tostring(L, -1);
		struct tide_event none;
		memset(&none, 0, sizeof none);
		/* a malformed path is refused here, not at the first event */
		if (tide_event_value(&none, p, &v) == TIDE_EINVAL) {
			lua_pop(L, 1);
			return tidei_err(err, TIDE_EINVAL,
					 "option 'key': '%s' is not a path like \"subject\" or "
					 "\"data.card\"",
					 p);
		}
		r->key_path = strdup(p);
		lua_pop(L, 1);
		return r->key_path ? TIDE_OK : tidei_err(err, TIDE_ENOMEM, "out of memory");
	}
	lua_pop(L, 1);
	if (t == LUA_TNIL)
		return TIDE_OK;
	return tidei_err(err, TIDE_EINVAL,
			 "option 'key' must be a path such as \"data.card\" or a function");
}

static int
parse_clock(tidei_rule *r, lua_State *L, int idx, char *err)
{
	const char *s;
	int rc = TIDE_OK;

	if (lua_getfield(L, idx, "clock") != LUA_TNIL) {
		s = lua_tostring(L, -1);
		if (s != NULL && strcmp(s, "event") == 0)
			r->clock = TIDEI_CLOCK_EVENT;
		else if (s != NULL && strcmp(s, "arrival") == 0)
			r->clock = TIDEI_CLOCK_ARRIVAL;
		else
			rc = tidei_err(err, TIDE_EINVAL,
				       "option 'clock' must be \"event\" or \"arrival\"");
	}
	lua_pop(L, 1);
	if (rc != TIDE_OK)
		return rc;
	switch (lua_getfield(L, idx, "late")) {
	case LUA_TNIL: break;
	case LUA_TFUNCTION:
		r->late = TIDEI_LATE_FN;
		r->late_ref = luaL_ref(L, LUA_REGISTRYINDEX);
		return TIDE_OK;
	case LUA_TSTRING:
		s = lua_tostring(L, -1);
		if (strcmp(s, "drop") == 0) {
			r->late = TIDEI_LATE_DROP;
			break;
		}
		if (strcmp(s, "handle") == 0) {
			r->late = TIDEI_LATE_HANDLE;
			break;
		}
		/* fall through */
	default:
		rc = tidei_err(err, TIDE_EINVAL,
			       "option 'late' must be \"drop\", \"handle\" or a function");
	}
	lua_pop(L, 1);
	return rc;
}

static int
parse_timers(tidei_rule *r, lua_State *L, int idx, char *err)
{
	int t = lua_getfield(L, idx, "timers");

	if (t == LUA_TNIL) {
		lua_pop(L, 1);
		return TIDE_OK;
	}
	if (t != LUA_TTABLE) {
		lua_pop(L, 1);
		return tidei_err(err, TIDE_EINVAL,
				 "option 'timers' must be a table of name = function");
	}
	lua_pushnil(L);
	while (lua_next(L, -2) != 0) {
		size_t n;
		if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TFUNCTION ||
		    (lua_tolstring(L, -2, &n), n == 0 || n > TIDEI_RULE_TIMER_MAX) ||
		    lua_tostring(L, -2)[0] == '\1' || strlen(lua_tostring(L, -2)) != n) {
			lua_pop(L, 3);
			return tidei_err(err, TIDE_EINVAL,
					 "option 'timers': each entry must be name = function, "
					 "with a name of 1 to %d characters",
					 TIDEI_RULE_TIMER_MAX);
		}
		lua_pop(L, 1);
	}
	r->timers_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	return TIDE_OK;
}

int
tidei_rule_new(tidei_rule **out, lua_State *L, int idx, const char *consumer, char *err)
{
	tidei_rule *r;
	int rc;

	*out = NULL;
	idx = lua_absindex(L, idx);
	if (!lua_istable(L, idx) || !is_rule(L, idx))
		return TIDE_OK;
	if ((r = calloc(1, sizeof *r)) == NULL)
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	r->key_ref = r->late_ref = r->timers_ref = r->on_close_ref = r->cache_ref = LUA_NOREF;
	r->clock = TIDEI_CLOCK_EVENT;
	r->late = TIDEI_LATE_DROP;
	r->maxtime = r->watermark = INT64_MIN;
	r->next_due = INT64_MIN;
	r->cur = -1;
	tidei_keymap_init(&r->keys);
	r->consumer = strdup(consumer);
	r->nlen = strlen(consumer);
	if (r->consumer == NULL || tidei_rtimers_new(&r->timers, consumer, r->nlen) != TIDE_OK) {
		free(r->consumer);
		free(r);
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	}
	if ((rc = parse_key(r, L, idx, err)) != TIDE_OK ||
	    (rc = opt_duration(L, idx, "ttl", &r->ttl, err)) != TIDE_OK ||
	    (rc = opt_duration(L, idx, "lateness", &r->lateness, err)) != TIDE_OK ||
	    (rc = parse_clock(r, L, idx, err)) != TIDE_OK ||
	    (rc = parse_timers(r, L, idx, err)) != TIDE_OK ||
	    (rc = opt_function(L, idx, "on_close", &r->on_close_ref, err)) != TIDE_OK ||
	    (rc = tidei_rwins_parse(&r->wins, L, idx, err)) != TIDE_OK) {
		tidei_rule_free(r, L);
		return rc;
	}
	if (r->clock == TIDEI_CLOCK_ARRIVAL && r->lateness > 0) {
		tidei_rule_free(r, L);
		return tidei_err(err, TIDE_EINVAL,
				 "option 'lateness' is for the event clock: on the arrival clock "
				 "nothing is late");
	}
	lua_newtable(L);
	r->cache_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	*out = r;
	return TIDE_OK;
}

void
tidei_rule_free(tidei_rule *r, lua_State *L)
{
	if (r == NULL)
		return;
	if (L != NULL) {
		luaL_unref(L, LUA_REGISTRYINDEX, r->key_ref);
		luaL_unref(L, LUA_REGISTRYINDEX, r->late_ref);
		luaL_unref(L, LUA_REGISTRYINDEX, r->timers_ref);
		luaL_unref(L, LUA_REGISTRYINDEX, r->on_close_ref);
		luaL_unref(L, LUA_REGISTRYINDEX, r->cache_ref);
	}
	tidei_rslot_free_all(r);
	free(r->slots);
	free(r->dirty);
	tidei_rtimers_free(r->timers);
	free(r->ops);
	tidei_keymap_free(&r->keys);
	tidei_buf_free(&r->opbuf);
	tidei_buf_free(&r->kbuf);
	tidei_buf_free(&r->rec);
	tidei_buf_free(&r->scratch);
	tidei_rwins_free(r->wins);
	free(r->key_path);
	free(r->consumer);
	free(r);
}

/* ------------------------------------------------------------------------
 * Records
 * ------------------------------------------------------------------------ */

int
tidei_rule_start(tidei_rule *r, tidei_log *log, MDB_txn *txn, char *err)
{
	tidei_rule_stat st;
	int rc = tidei_rule_stat_read(log, txn, r->consumer, &st, 0);

	/* nothing stored yet: the clock starts again, whatever an aborted
	 * turn moved it to (st is zero, its watermark INT64_MIN) */
	if (rc != TIDE_OK && rc != TIDE_ENOTFOUND)
		return tidei_err(err, rc, "cannot read the clock of rule '%s'", r->consumer);
	r->watermark = st.watermark;
	r->nlate = st.late;
	r->fired = st.fired;
	r->failed = st.failed;
	r->maxtime = st.watermark;
	if (st.watermark != INT64_MIN)
		r->maxtime = st.watermark > INT64_MAX - r->lateness ? INT64_MAX
								    : st.watermark + r->lateness;
	r->meta_dirty = 0;
	r->next_due = INT64_MIN; /* look at the first timer */
	tidei_rtimers_forget(r->timers);
	return TIDE_OK;
}

/* ------------------------------------------------------------------------
 * Timers in the log
 * ------------------------------------------------------------------------ */

/* Cancel timer @p name of @p key (nothing if none): in memory until the
 * rule is written (rtimer.h). */
static int
timer_cancel(tidei_rule *r, const char *key, size_t kn, const char *name, size_t nn, char *err)
{
	if (tidei_rtimers_cancel(r->timers, key, kn, name, nn) != TIDE_OK)
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	return TIDE_OK;
}

/* Set timer @p name of @p key (replacing it) at @p due, with @p data
 * (encoded; NULL: nil). */
static int
timer_set(tidei_rule *r, const char *key, size_t kn, const char *name, size_t nn, int64_t due,
	  int64_t every, const void *data, size_t dn, char *err)
{
	if (tidei_rtimers_set(r->timers, key, kn, name, nn, due, every, data, dn) != TIDE_OK)
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	if (due < r->next_due)
		r->next_due = due;
	return TIDE_OK;
}

int
tidei_rule_due(tidei_rule *r, tidei_log *log, tidei_rule_timer *t, char *err)
{
	int64_t next;
	int rc;

	if (r->watermark == INT64_MIN || r->next_due > r->watermark)
		return 0;
	rc = tidei_rtimers_take(r->timers, log, log->txn, r->watermark, t, &next, err);
	if (rc == 0)
		r->next_due = next;
	return rc;
}

/* ------------------------------------------------------------------------
 * The clock
 * ------------------------------------------------------------------------ */

/* The event's time on the rule's clock. */
static int64_t
event_time(const tidei_rule *r, const struct tide_event *ev)
{
	int64_t t;

	if (r->clock == TIDEI_CLOCK_EVENT && ev->attr[TIDEI_A_TIME] != NULL &&
	    tidei_time_parse(ev->attr[TIDEI_A_TIME], ev->len[TIDEI_A_TIME], &t) == 0)
		return t;
	return ev->recorded;
}

int
tidei_rule_clock(tidei_rule *r, const struct tide_event *ev, int *late)
{
	int64_t t = event_time(r, ev), wm;

	if (r->watermark != INT64_MIN && t < r->watermark) {
		r->nlate++;
		r->meta_dirty = 1;
		*late = r->late;
		return 1;
	}
	if (t > r->maxtime) {
		r->maxtime = t;
		wm = t < INT64_MIN + r->lateness ? INT64_MIN : t - r->lateness;
		if (wm > r->watermark) {
			r->watermark = wm;
			r->meta_dirty = 1;
		}
	}
	return 0;
}

int64_t
tidei_rule_wall_due(tidei_rule *r, tidei_log *log, MDB_txn *txn)
{
	char err[TIDEI_ERRLEN];
	int64_t due;
	int rc;

	if (r->clock != TIDEI_CLOCK_ARRIVAL)
		return INT64_MAX;
	if (r->next_due != INT64_MIN || txn == NULL)
		return r->next_due;
	/* not known: the first timer */
	rc = tidei_rtimers_first(r->timers, log, txn, &due, err);
	if (rc < 0)
		return INT64_MIN;
	r->next_due = rc ? due : INT64_MAX;
	return r->next_due;
}

int64_t
tidei_rule_now(const tidei_rule *r)
{
	return r->watermark;
}

/* ------------------------------------------------------------------------
 * The cache of key states
 * ------------------------------------------------------------------------ */

/* ------------------------------------------------------------------------
 * Calls
 * ------------------------------------------------------------------------ */

/* The key of @p ev at the rule's key path, in *@p k (in @p ev, or in @p
 * num for a number): 1; 0 if it has none; -1 if it is not a string or a
 * number. */
static int
path_key(const tidei_rule *r, const struct tide_event *ev, char num[32], const char **k, size_t *n)
{
	tide_value v;

	if (tide_event_value(ev, r->key_path, &v) != TIDE_OK || v.type == TIDE_NULL)
		return 0;
	if (v.type == TIDE_STRING) {
		*k = v.s;
		*n = v.len;
	} else if (v.type == TIDE_INT) {
		*k = num;
		*n = (size_t)snprintf(num, 32, "%lld", (long long)v.i);
	} else if (v.type == TIDE_DOUBLE) {
		*k = num;
		*n = (size_t)snprintf(num, 32, "%.14g", v.d);
	} else {
		return -1;
	}
	return 1;
}

/* The key of r->ev pushed: 1, or 0 (nothing pushed) when it has none.
 * @p evi is the event's index.  [-0, +(0|1), e] */
static int
push_key(lua_State *L, tidei_rule *r, int evi)
{
	const struct tide_event *ev = r->ev;
	size_t n;

	if (r->key_ref != LUA_NOREF) {
		lua_rawgeti(L, LUA_REGISTRYINDEX, r->key_ref);
		lua_pushvalue(L, evi);
		lua_call(L, 1, 1);
		if (lua_type(L, -1) == LUA_TNUMBER)
			lua_tolstring(L, -1, NULL);
		if (lua_isnil(L, -1)) {
			lua_pop(L, 1);
			return 0;
		}
		if (lua_type(L, -1) != LUA_TSTRING)
			luaL_error(L, "key must return a string or a number, not a %s",
				   luaL_typename(L, -1));
	} else if (r->key_path != NULL) {
		char num[32];
		const char *k;
		int got = path_key(r, ev, num, &k, &n);
		if (got == 0)
			return 0;
		if (got < 0)
			luaL_error(L, "key '%s' is not a string or a number", r->key_path);
		lua_pushlstring(L, k, n);
	} else {
		lua_pushliteral(L, "");
	}
	lua_tolstring(L, -1, &n);
	if (n > TIDEI_RULE_KEY_MAX)
		luaL_error(L, "key of %I bytes is too long (at most %d)", (lua_Integer)n,
			   TIDEI_RULE_KEY_MAX);
	return 1;
}

/* Apply the call's timer operations (it succeeded). */
static int
apply_ops(tidei_rule *r, const char *key, size_t kn, char *err)
{
	int rc = TIDE_OK;

	for (size_t i = 0; i < r->nops && rc == TIDE_OK; i++) {
		const timer_op *o = &r->ops[i];
		const char *name = (const char *)r->opbuf.p + o->name_at;
		if (o->op == TIDEI_TIMER_CANCEL)
			rc = timer_cancel(r, key, kn, name, o->name_len, err);
		else
			rc = timer_set(r, key, kn, name, o->name_len, o->due, o->every,
				       o->data_len ? r->opbuf.p + o->data_at : NULL, o->data_len,
				       err);
	}
	r->nops = 0;
	tidei_buf_reset(&r->opbuf);
	return rc;
}

/* Whether slot @p s's windows hold anything. */
static int
has_windows(const tidei_rule *r, const tidei_rslot *s)
{
	return r->wins != NULL && !tidei_rwins_empty(r->wins, tidei_rslot_wins(r, s));
}

/* The key's expiry: due again after ttl from its last event. */
static void
arm_expiry(tidei_rule *r, tidei_rslot *s, lua_State *L)
{
	int64_t due;

	if (r->ttl <= 0 || s->last_seen == INT64_MIN)
		return;
	due = s->last_seen > INT64_MAX - r->ttl ? INT64_MAX : s->last_seen + r->ttl;
	/* one timer per key, moved only when it fires early (lazily) */
	if (s->ttl_due != 0)
		return;
	if (tidei_array_grow(&r->ops, &r->opcap, r->nops, sizeof *r->ops, 4) != 0)
		luaL_error(L, "out of memory");
	memset(&r->ops[r->nops], 0, sizeof r->ops[r->nops]);
	r->ops[r->nops].op = TIDEI_TIMER_AT;
	r->ops[r->nops].due = due;
	r->ops[r->nops].name_at = r->opbuf.len;
	r->ops[r->nops].name_len = 0;
	r->nops++;
	s->ttl_due = due;
	r->ttl_armed = 1;
}

/* Take what a handler returned (at -1) as the new state at @p si: a
 * table, tide.delete, or nothing (changed in place).  [-1, +0, e] */
static void
take_result(lua_State *L, int si, const char *who)
{
	if (!lua_isnil(L, -1)) {
		if (!lua_istable(L, -1) && lua_touserdata(L, -1) != &tidei_delete_marker)
			luaL_error(L,
				   "%s must return a table (the new state), tide.delete or "
				   "nothing, not a %s",
				   who, luaL_typename(L, -1));
		lua_replace(L, si);
	} else {
		lua_pop(L, 1);
	}
}

/* The key's windows' timer: due when the next of them closes.  Written
 * at once, not with the call's other timers: what the windows hold stays
 * even if the call fails (the event happened), so must their timer. */
static void
arm_windows(tidei_rule *r, tidei_rslot *s, lua_State *L, const char *k, size_t kn)
{
	int64_t next = tidei_rwins_next_close(r->wins, tidei_rslot_wins(r, s));
	char err[TIDEI_ERRLEN];
	int rc;

	if (next == INT64_MAX)
		next = 0;
	if (next == s->win_due)
		return;
	if (next == 0)
		rc = timer_cancel(r, k, kn, TIMER_WIN, 2, err);
	else
		rc = timer_set(r, k, kn, TIMER_WIN, 2, next, 0, NULL, 0, err);
	if (rc != TIDE_OK) {
		r->store_rc = rc;
		luaL_error(L, "%s", err);
	}
	s->win_due = next;
	tidei_rslot_dirty(r, s);
}

void
tidei_rule_ahead(const tidei_rule *r, const struct tide_event *const *evs, size_t n)
{
	uint32_t h[TIDEI_RULE_AHEAD];
	const char *k[TIDEI_RULE_AHEAD];
	size_t kn[TIDEI_RULE_AHEAD];
	long at[TIDEI_RULE_AHEAD];
	char num[TIDEI_RULE_AHEAD][32];
	size_t m = 0;

	if (r->key_path == NULL || r->keys.n == 0)
		return;
	/* each step's loads are independent of one another, so the CPU has
	 * them all on their way at once: the buckets; the slots; their
	 * windows and keys (which the call's timers are stored by); the
	 * windows' rings; the rings' ends */
	for (size_t i = 0; i < n && m < TIDEI_RULE_AHEAD; i++)
		if (path_key(r, evs[i], num[m], &k[m], &kn[m]) == 1) {
			h[m] = tidei_keymap_hash(k[m], kn[m]);
			tidei_keymap_prefetch(&r->keys, h[m]);
			m++;
		}
	for (size_t i = 0; i < m; i++)
		if ((at[i] = tidei_keymap_get_hashed(&r->keys, h[i], k[i], kn[i])) >= 0) {
			__builtin_prefetch(&r->slots[at[i]]);
			__builtin_prefetch(&r->keys.off[at[i]]);
		}
	for (size_t i = 0; i < m; i++)
		if (at[i] >= 0)
			__builtin_prefetch((const char *)r->keys.keys.p + r->keys.off[at[i]]);
	for (int depth = 0; depth < 3 && r->wins != NULL; depth++)
		for (size_t i = 0; i < m; i++)
			if (at[i] >= 0)
				tidei_rwins_prefetch(r->wins, tidei_rslot_wins(r, &r->slots[at[i]]),
						     depth);
}

/* A handler call under protection: light userdata r at 1. */
static int
l_call(lua_State *L)
{
	tidei_rule *r = lua_touserdata(L, 1);
	const char *k;
	size_t kn;
	int evi, ki, si;
	long at;
	tidei_rslot *s;

	tidei_lua_push_event(L, r->ev);
	evi = lua_gettop(L);
	/* found again after the call, to expire it even if the call fails */
	lua_pushvalue(L, evi);
	lua_rawsetp(L, LUA_REGISTRYINDEX, &r->ev);
	if (!push_key(L, r, evi)) {
		/* no key: not for this rule's state; handled without one */
		lua_rawgeti(L, LUA_REGISTRYINDEX, r->ref);
		lua_pushvalue(L, evi);
		lua_call(L, 1, 0);
		tidei_lua_expire_event(L, evi);
		return 0;
	}
	ki = lua_gettop(L);
	k = lua_tolstring(L, ki, &kn);
	at = tidei_rslot_load(L, r, k, kn);
	r->cur = at;
	si = lua_gettop(L);
	if (lua_isnil(L, si)) {
		lua_newtable(L);
		lua_replace(L, si);
	}
	s = &r->slots[at];
	if (!r->late_call) {
		int64_t t = r->cur_now;
		if (t > s->last_seen)
			s->last_seen = t;
	}
	if (r->wins != NULL && !r->late_call && !r->again) {
		/* the event counts in the windows before the handler reads
		 * them; a retry of it is not counted again */
		char err[TIDEI_ERRLEN];
		if (tidei_rwins_add(r->wins, tidei_rslot_wins(r, s), r->ev, r->cur_now, err) !=
		    TIDE_OK)
			return luaL_error(L, "%s", err);
		tidei_rslot_dirty(r, s);
		arm_windows(r, s, L, k, kn);
	}
	lua_rawgeti(L, LUA_REGISTRYINDEX, r->ref);
	lua_pushvalue(L, evi);
	lua_pushvalue(L, si);
	lua_pushvalue(L, ki);
	lua_call(L, 3, 1);
	take_result(L, si, "a rule's handler");
	s = &r->slots[at];
	if (lua_istable(L, si) && s->enc.len == 0) {
		/* a key seen for the first time and left empty is not kept: an
		 * event that does not concern the rule costs no write */
		lua_pushnil(L);
		if (lua_next(L, si) == 0) {
			lua_pushnil(L);
			lua_replace(L, si);
		} else {
			lua_pop(L, 2);
		}
	}
	if (lua_istable(L, si) || has_windows(r, s))
		arm_expiry(r, s, L);
	tidei_rslot_settle(L, r, at, si);
	tidei_lua_expire_event(L, evi);
	return 0;
}

/* Run @p fn under protection; on success apply the timer operations of
 * the key in slot r->cur, on failure forget them and roll the key back. */
static int
run_call(tidei_rule *r, tidei_script *s, tidei_log *log, lua_CFunction fn, char *why, char *trace)
{
	lua_State *L = tidei_script_state(s);
	int rc;

	r->log = log;
	r->cur = -1;
	r->nops = 0;
	r->store_rc = TIDE_OK;
	r->ttl_armed = 0;
	tidei_buf_reset(&r->opbuf);
	rc = tidei_script_protect(s, fn, r, why, trace);
	if (rc != TIDE_OK) {
		if (r->cur >= 0) {
			tidei_rslot_rollback(r, L, r->cur);
			/* the expiry it armed was not stored */
			if (r->ttl_armed)
				r->slots[r->cur].ttl_due = 0;
		}
		r->nops = 0;
		r->cur = -1;
		/* the log failed under the call (its map is full, say): not
		 * the handler's failure but the turn's, which is run again */
		if (r->store_rc != TIDE_OK)
			return r->store_rc;
		r->failed++;
		r->meta_dirty = 1;
		return rc;
	}
	if (r->cur >= 0) {
		size_t kn;
		const char *k = tidei_keymap_key(&r->keys, (size_t)r->cur, &kn);
		/* the key may be gone from the keymap's memory? no: slots stay
		 * until the cache is trimmed between turns */
		if ((rc = apply_ops(r, k, kn, why)) != TIDE_OK)
			return rc;
	}
	r->cur = -1;
	return TIDE_OK;
}

/* The event of the call that returned expires, whatever the handler did
 * with it (kept it in a global before failing, say).  [-0, +0, -] */
static void
expire_event(tidei_rule *r, lua_State *L)
{
	lua_rawgetp(L, LUA_REGISTRYINDEX, &r->ev);
	tidei_lua_expire_event(L, -1);
	lua_pop(L, 1);
	lua_pushnil(L); /* a key set to nil: nothing to allocate */
	lua_rawsetp(L, LUA_REGISTRYINDEX, &r->ev);
}

int
tidei_rule_call(tidei_rule *r, tidei_script *s, tidei_log *log, int ref,
		const struct tide_event *ev, int late, char *why, char *trace)
{
	r->ev = ev;
	r->timer = NULL;
	r->late_call = late;
	r->ref = late == TIDEI_LATE_FN ? r->late_ref : ref;
	r->cur_now = event_time(r, ev);
	r->again = 0;
	int rc = run_call(r, s, log, l_call, why, trace);
	expire_event(r, tidei_script_state(s));
	r->ev = NULL;
	return rc;
}

int
tidei_rule_call_again(tidei_rule *r, tidei_script *s, tidei_log *log, int ref,
		      const struct tide_event *ev, char *why, char *trace)
{
	int rc;

	r->ev = ev;
	r->timer = NULL;
	r->late_call = 0;
	r->ref = ref;
	r->cur_now = event_time(r, ev);
	r->again = 1;
	rc = run_call(r, s, log, l_call, why, trace);
	expire_event(r, tidei_script_state(s));
	r->again = 0;
	r->ev = NULL;
	return rc;
}

typedef struct closed_list {
	lua_State *L;
	const tidei_rule *r;
	int list;
	lua_Integer n;
} closed_list;

/* A window closed: {name, aggregates} onto the list.  [-0, +0, m] */
static void
on_closed(void *ud, const char *name, const tidei_agg *a)
{
	closed_list *c = ud;
	lua_State *L = c->L;

	lua_createtable(L, 2, 0);
	lua_pushstring(L, name);
	lua_rawseti(L, -2, 1);
	tidei_rwins_push_agg(c->r->wins, L, name, a);
	lua_rawseti(L, -2, 2);
	lua_rawseti(L, c->list, ++c->n);
}

/* The key's windows that end at the watermark close, each handed to the
 * rule's on_close(key, name, aggregates, st) in turn.  [-0, +0, e] */
static int
close_windows(lua_State *L, tidei_rule *r, long at, int ki, int si)
{
	tidei_rslot *s = &r->slots[at];
	closed_list c = { L, r, 0, 0 };
	char err[TIDEI_ERRLEN];
	size_t kn;
	const char *k = lua_tolstring(L, ki, &kn);

	s->win_due = 0;
	tidei_rslot_dirty(r, s);
	if (r->wins == NULL)
		return 0;
	lua_newtable(L);
	c.list = lua_gettop(L);
	if (tidei_rwins_advance(r->wins, tidei_rslot_wins(r, s), r->watermark, on_closed, &c,
				err) != TIDE_OK)
		return luaL_error(L, "%s", err);
	r->closed += (uint64_t)c.n;
	arm_windows(r, s, L, k, kn);
	if (r->on_close_ref == LUA_NOREF || c.n == 0) {
		tidei_rslot_settle(L, r, at, si);
		return 0;
	}
	if (lua_isnil(L, si)) {
		lua_newtable(L);
		lua_replace(L, si);
	}
	for (lua_Integer i = 1; i <= c.n && lua_istable(L, si); i++) {
		lua_rawgeti(L, LUA_REGISTRYINDEX, r->on_close_ref);
		lua_pushvalue(L, ki);
		lua_rawgeti(L, c.list, i);
		lua_rawgeti(L, -1, 1);
		lua_rawgeti(L, -2, 2);
		lua_remove(L, -3);
		lua_pushvalue(L, si);
		lua_call(L, 4, 1);
		take_result(L, si, "on_close");
	}
	tidei_rslot_settle(L, r, at, si);
	return 0;
}

/* A timer under protection: light userdata r at 1. */
static int
l_fire(lua_State *L)
{
	tidei_rule *r = lua_touserdata(L, 1);
	const tidei_rule_timer *t = r->timer;
	tidei_vreader rd = { t->data.p, t->data.p + t->data.len };
	int si, ki;
	long at;
	tidei_rslot *s;

	lua_pushlstring(L, (const char *)t->key.p, t->key.len);
	ki = lua_gettop(L);
	at = tidei_rslot_load(L, r, (const char *)t->key.p, t->key.len);
	r->cur = at;
	si = lua_gettop(L);
	s = &r->slots[at];
	if (t->name.len == 0) {
		/* the key's expiry: forget it (its state and its windows) if it
		 * had no event since */
		s->ttl_due = 0;
		if (lua_isnil(L, si) && !has_windows(r, s))
			return 0;
		if (s->last_seen > t->due - r->ttl) {
			arm_expiry(r, s, L);
			tidei_rslot_encode(L, r, at, si);
			tidei_rslot_dirty(r, &r->slots[at]); /* its record holds its new expiry */
			return 0;
		}
		r->expired++;
		lua_pushlightuserdata(L, (void *)&tidei_delete_marker);
		lua_replace(L, si);
		tidei_rslot_encode(L, r, at, si);
		lua_rawgeti(L, LUA_REGISTRYINDEX, r->cache_ref);
		lua_pushnil(L);
		lua_rawseti(L, -2, at + 1);
		return 0;
	}
	if (t->name.len == 2 && memcmp(t->name.p, TIMER_WIN, 2) == 0)
		return close_windows(L, r, at, ki, si);
	if (lua_isnil(L, si)) {
		lua_newtable(L);
		lua_replace(L, si);
	}
	lua_rawgeti(L, LUA_REGISTRYINDEX, r->timers_ref);
	if (r->timers_ref == LUA_NOREF ||
	    lua_getfield(L, -1, (const char *)t->name.p) != LUA_TFUNCTION) {
		/* a timer whose handler is gone from the script: said once,
		 * then dropped */
		return luaL_error(L, "timer '%s' has no handler in the rule's 'timers'",
				  (const char *)t->name.p);
	}
	lua_pushvalue(L, ki);
	if (t->data.len == 0 || tidei_lua_push_val(L, &rd) != 0)
		lua_pushnil(L);
	lua_pushvalue(L, si);
	lua_call(L, 3, 1);
	take_result(L, si, "a timer handler");
	tidei_rslot_settle(L, r, at, si);
	return 0;
}

int
tidei_rule_fire(tidei_rule *r, tidei_script *s, tidei_log *log, const tidei_rule_timer *t,
		char *why, char *trace)
{
	int rc;

	/* names are NUL-ended for lua_getfield */
	tidei_buf_putc((tidei_buf *)&t->name, 0);
	if (t->name.failed)
		return tidei_err(why, TIDE_ENOMEM, "out of memory");
	((tidei_buf *)&t->name)->len--;
	r->ev = NULL;
	r->timer = t;
	r->cur_now = t->due;
	rc = run_call(r, s, log, l_fire, why, trace);
	r->timer = NULL;
	if (t->name.len > 0) {
		r->fired++;
		r->meta_dirty = 1;
	}
	return rc;
}

int
tidei_rule_timer_op(tidei_rule *r, lua_State *L, int op, const char *name, size_t n, int64_t when,
		    int data, char *err)
{
	timer_op *o;
	char why[TIDEI_ERRLEN];

	if (r->cur < 0 && r->ev == NULL && r->timer == NULL)
		return tidei_err(err, TIDE_ESTATE, "timers are set from a rule's handlers");
	if (r->cur < 0) /* they would be dropped with the call */
		return tidei_err(err, TIDE_ESTATE,
				 "this event has no key (option 'key'): a timer belongs to a key");
	if (n == 0 || n > TIDEI_RULE_TIMER_MAX || name[0] == '\1' || memchr(name, 0, n))
		return tidei_err(err, TIDE_EINVAL, "a timer name has 1 to %d characters",
				 TIDEI_RULE_TIMER_MAX);
	if (op != TIDEI_TIMER_CANCEL) {
		lua_rawgeti(L, LUA_REGISTRYINDEX, r->timers_ref);
		int has = r->timers_ref != LUA_NOREF &&
			  (lua_pushlstring(L, name, n), lua_rawget(L, -2) == LUA_TFUNCTION);
		lua_pop(L, r->timers_ref != LUA_NOREF ? 2 : 1);
		if (!has)
			return tidei_err(err, TIDE_EINVAL,
					 "timer '%.*s' has no handler: add it to the rule's "
					 "'timers' option",
					 (int)n, name);
	}
	if (tidei_array_grow(&r->ops, &r->opcap, r->nops, sizeof *r->ops, 4) != 0)
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	o = &r->ops[r->nops];
	memset(o, 0, sizeof *o);
	o->op = op == TIDEI_TIMER_CANCEL ? op : TIDEI_TIMER_AT;
	if (op == TIDEI_TIMER_AT)
		o->due = when;
	else if (op != TIDEI_TIMER_CANCEL)
		o->due = r->cur_now > INT64_MAX - when ? INT64_MAX : r->cur_now + when;
	if (op == TIDEI_TIMER_EVERY) {
		if (when <= 0)
			return tidei_err(err, TIDE_EINVAL, "a recurring timer needs an interval");
		o->every = when;
	}
	/* Set by a timer's handler at a time the clock has passed, it would
	 * fall due in the same round of firings, and set itself again there
	 * without end: it waits for the next event that moves the clock. */
	if (op != TIDEI_TIMER_CANCEL && r->timer != NULL && o->due <= r->watermark)
		o->due = r->watermark == INT64_MAX ? INT64_MAX : r->watermark + 1;
	o->name_at = r->opbuf.len;
	o->name_len = n;
	tidei_buf_put(&r->opbuf, name, n);
	o->data_at = r->opbuf.len;
	if (data != 0 && !lua_isnoneornil(L, data)) {
		if (tidei_lua_to_val_charged(L, data, &r->opbuf, why) != 0)
			return tidei_err(err, TIDE_EINVAL, "timer data cannot be stored: %s", why);
	}
	o->data_len = r->opbuf.len - o->data_at;
	if (r->opbuf.failed)
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	r->nops++;
	return TIDE_OK;
}

/* ------------------------------------------------------------------------
 * What it is (tide check)
 * ------------------------------------------------------------------------ */

void
tidei_rule_describe(const tidei_rule *r, tidei_buf *out)
{
	char d[32];

	if (r->key_path != NULL)
		tidei_buf_printf(out, "key %s", r->key_path);
	else if (r->key_ref != LUA_NOREF)
		tidei_buf_printf(out, "key from a function");
	else
		tidei_buf_printf(out, "one key");
	if (r->ttl > 0) {
		tidei_duration_format(d, sizeof d, r->ttl);
		tidei_buf_printf(out, ", ttl %s", d);
	}
	tidei_buf_printf(out, ", %s clock", r->clock == TIDEI_CLOCK_ARRIVAL ? "arrival" : "event");
	if (r->lateness > 0) {
		tidei_duration_format(d, sizeof d, r->lateness);
		tidei_buf_printf(out, ", lateness %s", d);
	}
	if (r->clock == TIDEI_CLOCK_EVENT)
		tidei_buf_printf(out, ", late events %s",
				 r->late == TIDEI_LATE_FN       ? "to a function"
				 : r->late == TIDEI_LATE_HANDLE ? "handled"
								: "dropped");
	if (r->on_close_ref != LUA_NOREF)
		tidei_buf_printf(out, ", on_close");
}

void
tidei_rule_counts(const tidei_rule *r, uint64_t *closed, uint64_t *expired)
{
	*closed = r->closed;
	*expired = r->expired;
}

const tidei_rwins *
tidei_rule_windows(const tidei_rule *r)
{
	return r->wins;
}

void
tidei_rule_timer_names(const tidei_rule *r, lua_State *L, void (*fn)(void *ud, const char *name),
		       void *ud)
{
	if (r->timers_ref == LUA_NOREF)
		return;
	lua_rawgeti(L, LUA_REGISTRYINDEX, r->timers_ref);
	lua_pushnil(L);
	while (lua_next(L, -2) != 0) {
		if (lua_type(L, -2) == LUA_TSTRING)
			fn(ud, lua_tostring(L, -2));
		lua_pop(L, 1);
	}
	lua_pop(L, 1);
}

/* ------------------------------------------------------------------------
 * Turns
 * ------------------------------------------------------------------------ */

int
tidei_rule_window(tidei_rule *r, lua_State *L, const char *name, int fields, int nfields, char *err)
{
	if (r->cur < 0 || r->wins == NULL) {
		if (r->wins == NULL)
			return tidei_err(err, TIDE_EINVAL, "rule '%s' has no windows", r->consumer);
		return tidei_err(err, TIDE_ESTATE, "windows are read in a handler with a key");
	}
	tidei_rwins_push(r->wins, tidei_rslot_wins(r, &r->slots[r->cur]), L, name, r->cur_now,
			 fields, nfields);
	return TIDE_OK;
}
