/*
 * rule.c - durable keyed state, clock and timers of rules (see rule.h).
 *
 * Records of the `rules` database, all under the consumer's name:
 *
 *   'S' name "\0" key             -> the key's record: [1, last seen,
 *                                    expiry due, windows due, state,
 *                                    {window name -> bytes}]
 *   'T', 'N'                       -> its timers (rtimer.c)
 *   'M' name                       -> [1, largest time, watermark, late,
 *                                    fired, failed]
 *
 * Two timer names are the rule's own: "" (the key's expiry after ttl) and
 * "\1w" (its windows' next close).
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
#include "rule.h"
#include "rwin.h"
#include "val.h"

#define REC_FORMAT 1
#define TIMER_TTL ""
#define TIMER_WIN "\1w"

/* A key seen by the rule, in the cache. */
/* The windows a slot holds in itself; a rule with more has an array. */
#define SLOT_WINS 4

typedef struct slot {
	/* what every call reads first, together */
	int loaded;                       /* its state is in the cache table (nil: it has none) */
	int known;                        /* enc is its record (empty: it has none) */
	int dirty;                        /* enc is to be written (or, empty, deleted) */
	int64_t last_seen;                /* largest event time of the key */
	int64_t ttl_due;                  /* its expiry timer, 0 if none */
	int64_t win_due;                  /* its windows' timer, 0 if none */
	union {                           /* its windows (rwin.h), if the rule has any: */
		tidei_win *in[SLOT_WINS]; /* up to SLOT_WINS, here */
		tidei_win **out;          /* more, in an array of their own */
	} w;
	tidei_buf enc; /* its state's last good encoding (empty: none) */
} slot;

/* A timer set or cancelled by the call in progress. */
typedef struct timer_op {
	int op;
	int64_t due, every;
	size_t name_at, name_len, data_at, data_len; /* in r->opbuf */
} timer_op;

struct tidei_rule {
	char *consumer;
	size_t nlen;
	char *key_path; /* or NULL */
	int key_ref;    /* or LUA_NOREF; neither: one key, "" */
	int64_t ttl;    /* 0: keys never expire */
	int clock;
	int64_t lateness;
	int late;
	int late_ref, timers_ref, on_close_ref;
	tidei_rwins *wins; /* or NULL */
	/* the clock */
	int64_t maxtime, watermark;
	uint64_t nlate, fired, failed;
	uint64_t closed, expired; /* windows closed, keys expired: for the metrics, not stored */
	int meta_dirty;
	int64_t next_due; /* no timer is due before this (a hint) */
	tidei_rtimers *timers;
	/* the cache */
	tidei_keymap keys;
	slot *slots;
	size_t scap;
	uint32_t *dirty; /* slots with dirty set, in the order they were marked */
	size_t ndirty, dcap;
	int dirty_all; /* the list ran out of memory: look at every slot */
	int cache_ref; /* Lua table: slot + 1 -> state */
	/* the call in progress */
	tidei_log *log;
	long cur;        /* its key's slot, or -1 */
	int64_t cur_now; /* its time on the rule's clock */
	timer_op *ops;
	size_t nops, opcap;
	tidei_buf opbuf;
	const struct tide_event *ev;
	const tidei_rule_timer *timer;
	int ref, late_call;
	int again;     /* the event is being tried again (not added to windows) */
	int store_rc;  /* the log failed under the call: the turn's failure */
	int ttl_armed; /* the call armed its key's expiry */
	char *errbuf;
	tidei_buf kbuf;    /* record keys */
	tidei_buf rec;     /* a record being written */
	tidei_buf scratch; /* a state being encoded */
};

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

/* Slot @p s's windows; NULL if the rule has none.  Not kept in the slot:
 * the slots move when their array grows. */
static tidei_win **
wins_of(const tidei_rule *r, const slot *s)
{
	if (r->wins == NULL)
		return NULL;
	return tidei_rwins_count(r->wins) <= SLOT_WINS ? (tidei_win **)s->w.in : s->w.out;
}

static void
slots_free(tidei_rule *r)
{
	for (size_t k = 0; k < r->keys.n; k++) {
		tidei_win **w = wins_of(r, &r->slots[k]);
		tidei_buf_free(&r->slots[k].enc);
		if (w != NULL) {
			tidei_rwins_drop(r->wins, w);
			if (w != r->slots[k].w.in)
				free(w);
		}
	}
	r->ndirty = 0;
	r->dirty_all = 0;
}

/* Slot @p s is to be written. */
static void
mark_dirty(tidei_rule *r, slot *s)
{
	if (s->dirty)
		return;
	s->dirty = 1;
	if (tidei_array_grow(&r->dirty, &r->dcap, r->ndirty, sizeof *r->dirty, 256) != 0)
		r->dirty_all = 1;
	else
		r->dirty[r->ndirty++] = (uint32_t)(s - r->slots);
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
	slots_free(r);
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

/* r->kbuf = tag name "\0" */
static void
key_start(tidei_rule *r, char tag)
{
	tidei_buf_reset(&r->kbuf);
	tidei_buf_putc(&r->kbuf, (uint8_t)tag);
	tidei_buf_put(&r->kbuf, r->consumer, r->nlen);
	tidei_buf_putc(&r->kbuf, 0);
}

static int
mdb_fail(tidei_log *log, int mrc, const char *what, char *err)
{
	int rc = tidei_log_txn_fail(log, mrc, what);

	return tidei_err(err, rc, "%s", log->err);
}

static int
put(tidei_rule *r, tidei_log *log, const void *v, size_t n, char *err)
{
	MDB_val k = { r->kbuf.len, r->kbuf.p }, d = { n, (void *)v };
	int mrc;

	if (r->kbuf.failed)
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	if ((mrc = mdb_put(log->txn, log->rules, &k, &d, 0)) != 0)
		return mdb_fail(log, mrc, "cannot store rule state", err);
	return TIDE_OK;
}

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

static int
meta_write(tidei_rule *r, tidei_log *log, char *err)
{
	tidei_buf b = { 0 };
	int rc;

	tidei_buf_reset(&r->kbuf);
	tidei_buf_putc(&r->kbuf, 'M');
	tidei_buf_put(&r->kbuf, r->consumer, r->nlen);
	tidei_val_array(&b, 6);
	tidei_val_int(&b, REC_FORMAT);
	tidei_val_int(&b, r->maxtime);
	tidei_val_int(&b, r->watermark);
	tidei_val_int(&b, (int64_t)r->nlate);
	tidei_val_int(&b, (int64_t)r->fired);
	tidei_val_int(&b, (int64_t)r->failed);
	rc = b.failed ? tidei_err(err, TIDE_ENOMEM, "out of memory") : put(r, log, b.p, b.len, err);
	tidei_buf_free(&b);
	return rc;
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

void
tidei_rule_reset(tidei_rule *r, lua_State *L)
{
	if (L != NULL && r->cache_ref != LUA_NOREF) {
		/* emptied in place, not replaced: no protected call is active
		 * here, and setting a key to nil allocates nothing (a new table
		 * could raise, with nothing to catch it) */
		lua_rawgeti(L, LUA_REGISTRYINDEX, r->cache_ref);
		for (size_t k = 0; k < r->keys.n; k++) {
			lua_pushnil(L);
			lua_rawseti(L, -2, (lua_Integer)k + 1);
		}
		lua_pop(L, 1);
	}
	slots_free(r);
	tidei_keymap_clear(&r->keys);
	r->next_due = INT64_MIN;
}

/* Read record @p p (from the log) into slot @p s: its times, its state's
 * encoding and its windows.  [-0, +0, e] */
static void
read_record(lua_State *L, tidei_rule *r, slot *s, const uint8_t *p, size_t n)
{
	tidei_vreader rd = { p, p + n };
	tidei_vitem it;
	const uint8_t *state;
	int64_t f[3];
	uint32_t count;
	char err[TIDEI_ERRLEN];

	if (tidei_val_next(&rd, &it) != 0 || it.type != TIDEI_V_ARRAY || it.u.count < 5)
		luaL_error(L, "the stored state of rule '%s' is damaged", r->consumer);
	count = it.u.count;
	for (int i = 0; i < 4; i++) {
		if (tidei_val_next(&rd, &it) != 0 || it.type != TIDEI_V_INT)
			luaL_error(L, "the stored state of rule '%s' is damaged", r->consumer);
		if (i > 0)
			f[i - 1] = it.u.i;
	}
	s->last_seen = f[0];
	s->ttl_due = f[1];
	s->win_due = f[2];
	state = rd.p;
	if (tidei_val_skip(&rd) != 0)
		luaL_error(L, "the stored state of rule '%s' is damaged", r->consumer);
	tidei_buf_reset(&s->enc);
	if (!(rd.p - state == 1 && *state == 0xc0)) /* nil: no state */
		tidei_buf_put(&s->enc, state, (size_t)(rd.p - state));
	if (s->enc.failed)
		luaL_error(L, "out of memory");
	if (count >= 6 && r->wins != NULL &&
	    tidei_rwins_decode(r->wins, wins_of(r, s), &rd, err) != TIDE_OK)
		luaL_error(L, "rule '%s': %s", r->consumer, err);
}

/* Append slot @p s's record to @p out; 0 when it has nothing to keep. */
static int
write_record(tidei_rule *r, const slot *s, tidei_buf *out)
{
	int wins = r->wins != NULL && !tidei_rwins_empty(r->wins, wins_of(r, s));

	if (s->enc.len == 0 && !wins)
		return 0;
	tidei_val_array(out, 6);
	tidei_val_int(out, REC_FORMAT);
	tidei_val_int(out, s->last_seen);
	tidei_val_int(out, s->ttl_due);
	tidei_val_int(out, s->win_due);
	if (s->enc.len > 0)
		tidei_buf_put(out, s->enc.p, s->enc.len);
	else
		tidei_val_nil(out);
	if (wins)
		tidei_rwins_encode(r->wins, wins_of(r, s), out);
	else
		tidei_val_nil(out);
	return 1;
}

/* The slot of key @p k with its state pushed (nil if it has none).
 * [-0, +1, e] */
static long
load_slot(lua_State *L, tidei_rule *r, const char *k, size_t kn)
{
	int fresh;
	long at = tidei_keymap_get(&r->keys, k, kn);
	slot *s;

	if (at < 0) {
		/* what the slot needs first: a key in the keymap has its slot,
		 * and a slot of a rule with windows has their array */
		tidei_win **w = NULL;
		if (r->keys.n >= r->scap) {
			size_t cap = r->scap ? r->scap * 2 : 256;
			slot *v = realloc(r->slots, cap * sizeof *v);
			if (v == NULL)
				luaL_error(L, "not enough memory for the rule's keys");
			r->slots = v;
			r->scap = cap;
		}
		if (r->wins != NULL && tidei_rwins_count(r->wins) > SLOT_WINS &&
		    (w = calloc(tidei_rwins_count(r->wins), sizeof(tidei_win *))) == NULL)
			luaL_error(L, "not enough memory for the rule's keys");
		if ((at = tidei_keymap_put(&r->keys, k, kn, &fresh)) < 0) {
			free(w);
			luaL_error(L, "not enough memory for the rule's keys");
		}
		memset(&r->slots[at], 0, sizeof r->slots[at]);
		r->slots[at].last_seen = INT64_MIN;
		if (w != NULL)
			r->slots[at].w.out = w;
	}
	s = &r->slots[at];
	if (r->wins != NULL) /* on their way while the state is found */
		tidei_rwins_prefetch(r->wins, wins_of(r, s));
	lua_rawgeti(L, LUA_REGISTRYINDEX, r->cache_ref);
	if (s->loaded) {
		lua_rawgeti(L, -1, at + 1);
		lua_remove(L, -2);
		return at;
	}
	if (!s->known) {
		MDB_val key, v;
		int mrc;
		key_start(r, 'S');
		tidei_buf_put(&r->kbuf, k, kn);
		if (r->kbuf.failed)
			luaL_error(L, "out of memory");
		key.mv_size = r->kbuf.len;
		key.mv_data = r->kbuf.p;
		mrc = mdb_get(r->log->txn, r->log->rules, &key, &v);
		if (mrc != 0 && mrc != MDB_NOTFOUND) {
			r->store_rc = tidei_err_mdb(mrc);
			luaL_error(L, "cannot read the state of rule '%s': %s", r->consumer,
				   mdb_strerror(mrc));
		}
		tidei_buf_reset(&s->enc);
		if (mrc == 0)
			read_record(L, r, s, v.mv_data, v.mv_size);
		s->known = 1;
	}
	if (s->enc.len > 0) {
		tidei_vreader rd = { s->enc.p, s->enc.p + s->enc.len };
		if (tidei_lua_push_val(L, &rd) != 0)
			luaL_error(L, "the stored state of rule '%s' is damaged", r->consumer);
	} else {
		lua_pushnil(L);
	}
	lua_pushvalue(L, -1);
	lua_rawseti(L, -3, at + 1);
	lua_remove(L, -2);
	s->loaded = 1;
	return at;
}

/* After a failed call: the key goes back to its last good record (read
 * again at its next call). */
static void
rollback(tidei_rule *r, lua_State *L, long at)
{
	r->slots[at].loaded = 0;
	lua_rawgeti(L, LUA_REGISTRYINDEX, r->cache_ref);
	lua_pushnil(L);
	lua_rawseti(L, -2, at + 1);
	lua_pop(L, 1);
}

/* Encode the state at @p idx as slot @p at's (nil: it has none;
 * tide.delete: the key is forgotten, windows too).  [-0, +0, e] */
static void
encode_slot(lua_State *L, tidei_rule *r, long at, int idx)
{
	slot *s = &r->slots[at];
	char err[TIDEI_ERRLEN];
	tidei_buf b = { 0 };

	if (lua_isnil(L, idx) || lua_touserdata(L, idx) == &tidei_delete_marker) {
		int had = s->enc.len > 0;
		if (lua_touserdata(L, idx) == &tidei_delete_marker && r->wins != NULL &&
		    !tidei_rwins_empty(r->wins, wins_of(r, s))) {
			tidei_rwins_drop(r->wins, wins_of(r, s)); /* forgotten, windows too */
			had = 1;
		}
		if (!had)
			return; /* nothing kept, nothing to forget */
		mark_dirty(r, s);
		tidei_buf_reset(&s->enc);
		return;
	}
	mark_dirty(r, s);
	/* into the rule's scratch buffer, then over the last encoding if it
	 * fits (no allocation per call), else into a new one */
	b = r->scratch;
	tidei_buf_reset(&b);
	b.limit = tidei_lstate_ceiling(tidei_lstate_of(L));
	if (b.cap > b.limit) {
		tidei_buf_free(&b);
		b.limit = tidei_lstate_ceiling(tidei_lstate_of(L));
	}
	if (tidei_lua_to_val_charged(L, idx, &b, err) != 0) {
		tidei_buf_free(&b);
		r->scratch = b;
		luaL_error(L, "the state cannot be stored: %s", err);
	}
	b.limit = 0;
	if (b.failed) {
		tidei_buf_free(&b);
		r->scratch = b;
		luaL_error(L, "not enough memory to store the state");
	}
	r->scratch = b;
	if (s->enc.cap >= b.len && s->enc.p != NULL) {
		memcpy(s->enc.p, b.p, b.len);
		s->enc.len = b.len;
		return;
	}
	tidei_buf_free(&s->enc);
	s->enc = b;
	memset(&r->scratch, 0, sizeof r->scratch);
}

/* ------------------------------------------------------------------------
 * Calls
 * ------------------------------------------------------------------------ */

/* The key of r->ev pushed: 1, or 0 (nothing pushed) when it has none.
 * @p evi is the event's index.  [-0, +(0|1), e] */
static int
push_key(lua_State *L, tidei_rule *r, int evi)
{
	const struct tide_event *ev = r->ev;
	tide_value v;
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
		if (tide_event_value(ev, r->key_path, &v) != TIDE_OK || v.type == TIDE_NULL)
			return 0;
		if (v.type == TIDE_STRING)
			lua_pushlstring(L, v.s, v.len);
		else if (v.type == TIDE_INT)
			lua_pushfstring(L, "%I", (lua_Integer)v.i);
		else if (v.type == TIDE_DOUBLE) {
			char num[32];
			int len = snprintf(num, sizeof num, "%.14g", v.d);
			lua_pushlstring(L, num, (size_t)len);
		} else
			luaL_error(L, "key '%s' is not a string or a number", r->key_path);
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
has_windows(const tidei_rule *r, const slot *s)
{
	return r->wins != NULL && !tidei_rwins_empty(r->wins, wins_of(r, s));
}

/* The key's expiry: due again after ttl from its last event. */
static void
arm_expiry(tidei_rule *r, slot *s, lua_State *L)
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

/* Encode the state at @p si as slot @p at's and keep it in the cache.
 * [-0, +0, e] */
static void
settle(lua_State *L, tidei_rule *r, long at, int si)
{
	encode_slot(L, r, at, si);
	lua_rawgeti(L, LUA_REGISTRYINDEX, r->cache_ref);
	if (lua_istable(L, si))
		lua_pushvalue(L, si);
	else
		lua_pushnil(L);
	lua_rawseti(L, -2, at + 1);
	lua_pop(L, 1);
}

/* The key's windows' timer: due when the next of them closes.  Written
 * at once, not with the call's other timers: what the windows hold stays
 * even if the call fails (the event happened), so must their timer. */
static void
arm_windows(tidei_rule *r, slot *s, lua_State *L, const char *k, size_t kn)
{
	int64_t next = tidei_rwins_next_close(r->wins, wins_of(r, s));
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
	mark_dirty(r, s);
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
	slot *s;

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
	at = load_slot(L, r, k, kn);
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
		if (tidei_rwins_add(r->wins, wins_of(r, s), r->ev, r->cur_now, err) != TIDE_OK)
			return luaL_error(L, "%s", err);
		mark_dirty(r, s);
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
	settle(L, r, at, si);
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
			rollback(r, L, r->cur);
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
	slot *s = &r->slots[at];
	closed_list c = { L, r, 0, 0 };
	char err[TIDEI_ERRLEN];
	size_t kn;
	const char *k = lua_tolstring(L, ki, &kn);

	s->win_due = 0;
	mark_dirty(r, s);
	if (r->wins == NULL)
		return 0;
	lua_newtable(L);
	c.list = lua_gettop(L);
	if (tidei_rwins_advance(r->wins, wins_of(r, s), r->watermark, on_closed, &c, err) !=
	    TIDE_OK)
		return luaL_error(L, "%s", err);
	r->closed += (uint64_t)c.n;
	arm_windows(r, s, L, k, kn);
	if (r->on_close_ref == LUA_NOREF || c.n == 0) {
		settle(L, r, at, si);
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
	settle(L, r, at, si);
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
	slot *s;

	lua_pushlstring(L, (const char *)t->key.p, t->key.len);
	ki = lua_gettop(L);
	at = load_slot(L, r, (const char *)t->key.p, t->key.len);
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
			encode_slot(L, r, at, si);
			mark_dirty(r, &r->slots[at]); /* its record holds its new expiry */
			return 0;
		}
		r->expired++;
		lua_pushlightuserdata(L, (void *)&tidei_delete_marker);
		lua_replace(L, si);
		encode_slot(L, r, at, si);
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
	settle(L, r, at, si);
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

/* Write slot @p at's record (or delete it: it has none) through @p cur:
 * the writes come in key order, and a positioned cursor finds the next
 * key on its page without a descent from the root. */
static int
write_slot(tidei_rule *r, tidei_log *log, MDB_cursor *cur, size_t at, char *err)
{
	MDB_val kv, dv;
	int mrc;
	slot *s = &r->slots[at];
	size_t kn;
	const char *k;

	if (!s->dirty)
		return TIDE_OK;
	s->dirty = 0;
	k = tidei_keymap_key(&r->keys, at, &kn);
	key_start(r, 'S');
	tidei_buf_put(&r->kbuf, k, kn);
	tidei_buf_reset(&r->rec);
	if (r->kbuf.failed)
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	kv.mv_size = r->kbuf.len;
	kv.mv_data = r->kbuf.p;
	if (!write_record(r, s, &r->rec)) {
		mrc = mdb_cursor_get(cur, &kv, NULL, MDB_SET);
		if (mrc == 0)
			mrc = mdb_cursor_del(cur, 0);
		if (mrc != 0 && mrc != MDB_NOTFOUND)
			return mdb_fail(log, mrc, "cannot delete rule state", err);
		return TIDE_OK;
	}
	if (r->rec.failed)
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	dv.mv_size = r->rec.len;
	dv.mv_data = r->rec.p;
	if ((mrc = mdb_cursor_put(cur, &kv, &dv, 0)) != 0)
		return mdb_fail(log, mrc, "cannot store rule state", err);
	return TIDE_OK;
}

/* Dirty slots in key order, so that the writes walk the B-tree once. */
static int
by_key(const void *a, const void *b, void *keys)
{
	size_t an, bn;
	const char *ak = tidei_keymap_key(keys, *(const uint32_t *)a, &an);
	const char *bk = tidei_keymap_key(keys, *(const uint32_t *)b, &bn);
	int c = memcmp(ak, bk, an < bn ? an : bn);

	return c != 0 ? c : an < bn ? -1 : an > bn;
}

int
tidei_rule_flush(tidei_rule *r, tidei_log *log, char *err)
{
	int rc = TIDE_OK;

	MDB_cursor *cur;
	int mrc;

	if (!r->dirty_all && r->ndirty > 1)
		qsort_r(r->dirty, r->ndirty, sizeof *r->dirty, by_key, &r->keys);
	if ((mrc = mdb_cursor_open(log->txn, log->rules, &cur)) != 0)
		return mdb_fail(log, mrc, "cannot store rule state", err);
	if (r->dirty_all) {
		for (size_t at = 0; at < r->keys.n && rc == TIDE_OK; at++)
			rc = write_slot(r, log, cur, at, err);
	} else {
		for (size_t i = 0; i < r->ndirty && rc == TIDE_OK; i++)
			rc = write_slot(r, log, cur, r->dirty[i], err);
	}
	mdb_cursor_close(cur);
	if (rc == TIDE_OK) {
		r->ndirty = 0;
		r->dirty_all = 0;
		rc = tidei_rtimers_write(r->timers, log, err);
	}
	if (rc == TIDE_OK && r->meta_dirty) {
		rc = meta_write(r, log, err);
		r->meta_dirty = 0;
	}
	return rc;
}

int
tidei_rule_must_write(const tidei_rule *r, lua_State *L)
{
	tidei_lstate *ls = tidei_lstate_of(L);
	size_t n = (r->dirty_all ? r->keys.n : r->ndirty) + tidei_rtimers_changes(r->timers);

	return n >= TIDEI_RULE_UNWRITTEN || r->keys.n > TIDEI_RULE_CACHE ||
	       tidei_lstate_room(ls) < tidei_lstate_ceiling(ls) / 2;
}

void
tidei_rule_committed(tidei_rule *r, lua_State *L)
{
	tidei_lstate *ls = tidei_lstate_of(L);

	if (r->keys.n > TIDEI_RULE_CACHE || tidei_lstate_room(ls) < tidei_lstate_ceiling(ls) / 2) {
		int64_t next = r->next_due;
		tidei_rule_reset(r, L);
		r->next_due = next;
	}
}

int
tidei_rule_window(tidei_rule *r, lua_State *L, const char *name, int fields, int nfields, char *err)
{
	if (r->cur < 0 || r->wins == NULL) {
		if (r->wins == NULL)
			return tidei_err(err, TIDE_EINVAL, "rule '%s' has no windows", r->consumer);
		return tidei_err(err, TIDE_ESTATE, "windows are read in a handler with a key");
	}
	tidei_rwins_push(r->wins, wins_of(r, &r->slots[r->cur]), L, name, r->cur_now, fields,
			 nfields);
	return TIDE_OK;
}
