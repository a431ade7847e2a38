/*
 * test_projection.c - projections (tide.projection) against a reference
 * model, and optimistic concurrency (expectedversion).
 *
 * The centre of the suite is a generated bank: a few thousand events
 * (accounts opened, money in and out, fees, renames, notes that only the
 * "*" handler takes, closes that delete the state, events the filter drops
 * and events without a key) folded by a plain C model.  The model gives
 * the state of every key at any seq; the real daemon's projection must
 * agree with it through every way of reading it: `tide query`, a REQ
 * query on the REP socket (one key, a prefix with a limit) and
 * tide_log_query() in this process, while the daemon runs.  Then the
 * definition changes (a new version that counts deposits twice and is
 * slow on purpose) and the rebuild must serve the old state until it
 * switches to the new one in one step, also across SIGKILLs in the middle
 * of it.  States are compared whole (every key, every field), so a half-
 * applied or doubly-applied event shows up; a second projection keyed by
 * the subject counts events, the exactly-once evidence.
 *
 * Lua iterates a table's keys in an order that changes between runs, so
 * states are compared after canonicalising the JSON (object members sorted
 * by name; numbers keep their exact text).  Where the text itself is the
 * point (the encoding of states), the states are shaped so that their
 * text is fixed (arrays and one-member objects) and compared byte for
 * byte.
 *
 * Every wait has a deadline and polls the engine's own progress
 * (tide_log_projections); nothing sleeps to synchronise.
 */
#define _GNU_SOURCE
#include <check.h>
#include <event2/event.h>
#include <lmdb.h>
#include <stdarg.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yajl/yajl_tree.h>

#include "helpers.h"
#include "keymap.h"
#include "log.h"
#include "pbuild.h"
#include "pworker.h"
#include "tide.h"

#define LLU(x) ((unsigned long long)(x))

/* ------------------------------------------------------------------------
 * Strings
 * ------------------------------------------------------------------------ */

/* A JSON string literal for @p s (ASCII and UTF-8 pass through). */
static void
sb_jstr(sbuf *b, const char *s, size_t n)
{
	sb_printf(b, "\"");
	for (size_t k = 0; k < n; k++) {
		unsigned char c = (unsigned char)s[k];
		if (c == '"' || c == '\\')
			sb_printf(b, "\\%c", c);
		else if (c == '\n')
			sb_printf(b, "\\n");
		else if (c == '\t')
			sb_printf(b, "\\t");
		else if (c < 0x20)
			sb_printf(b, "\\u%04x", c);
		else
			sb_printf(b, "%c", c);
	}
	sb_printf(b, "\"");
}

/* ------------------------------------------------------------------------
 * Canonical JSON: object members sorted by name, numbers as written
 * ------------------------------------------------------------------------ */

static const char **sort_keys; /* qsort has no context argument */

static int
by_member(const void *a, const void *b)
{
	return strcmp(sort_keys[*(const size_t *)a], sort_keys[*(const size_t *)b]);
}

static void
canon_val(sbuf *b, yajl_val v)
{
	if (YAJL_IS_OBJECT(v)) {
		size_t n = YAJL_GET_OBJECT(v)->len, *ix = calloc(n + 1, sizeof *ix);
		ck_assert_ptr_nonnull(ix);
		for (size_t k = 0; k < n; k++)
			ix[k] = k;
		sort_keys = YAJL_GET_OBJECT(v)->keys;
		qsort(ix, n, sizeof *ix, by_member);
		sb_printf(b, "{");
		for (size_t k = 0; k < n; k++) {
			const char *key = YAJL_GET_OBJECT(v)->keys[ix[k]];
			if (k > 0)
				sb_printf(b, ",");
			sb_jstr(b, key, strlen(key));
			sb_printf(b, ":");
			canon_val(b, YAJL_GET_OBJECT(v)->values[ix[k]]);
		}
		sb_printf(b, "}");
		free(ix);
	} else if (YAJL_IS_ARRAY(v)) {
		sb_printf(b, "[");
		for (size_t k = 0; k < YAJL_GET_ARRAY(v)->len; k++) {
			if (k > 0)
				sb_printf(b, ",");
			canon_val(b, YAJL_GET_ARRAY(v)->values[k]);
		}
		sb_printf(b, "]");
	} else if (YAJL_IS_STRING(v)) {
		const char *str = YAJL_GET_STRING(v);
		sb_jstr(b, str, str ? strlen(str) : 0);
	} else if (YAJL_IS_NUMBER(v)) {
		sb_printf(b, "%s", YAJL_GET_NUMBER(v));
	} else if (YAJL_IS_TRUE(v)) {
		sb_printf(b, "true");
	} else if (YAJL_IS_FALSE(v)) {
		sb_printf(b, "false");
	} else {
		sb_printf(b, "null");
	}
}

/* Parse @p text (NUL-terminated); fails the test if it is not JSON. */
static yajl_val
parse(const char *text)
{
	char err[256];
	yajl_val v = yajl_tree_parse(text, err, sizeof err);

	ck_assert_msg(v != NULL, "not JSON (%s): %.300s", err, text);
	return v;
}

static yajl_val
get(yajl_val v, const char *name)
{
	const char *path[] = { name, NULL };

	return yajl_tree_get(v, path, yajl_t_any);
}

/* "<key>\t<canonical state>\n" of one {"key":K,"state":S} object. */
static void
dump_pair(sbuf *b, yajl_val pair)
{
	yajl_val k = get(pair, "key"), s = get(pair, "state");

	ck_assert_msg(k != NULL && YAJL_IS_STRING(k) && s != NULL, "not a key and a state");
	sb_printf(b, "%s\t", YAJL_GET_STRING(k));
	canon_val(b, s);
	sb_printf(b, "\n");
}

/* Compare two dumps line by line; the first difference is the message. */
static void
same_dump(const char *got, const char *want, const char *what)
{
	size_t line = 1;
	const char *g = got, *w = want;

	while (*g && *w) {
		size_t gl = strcspn(g, "\n"), wl = strcspn(w, "\n");
		ck_assert_msg(gl == wl && memcmp(g, w, gl) == 0,
			      "%s: line %zu differs:\n  got  %.*s\n  want %.*s", what, line,
			      (int)gl, g, (int)wl, w);
		g += gl + (g[gl] == '\n');
		w += wl + (w[wl] == '\n');
		line++;
	}
	ck_assert_msg(*g == '\0' && *w == '\0', "%s: line %zu: %s", what, line,
		      *g ? "more keys than the model has" : "keys missing");
}

/* ------------------------------------------------------------------------
 * Reading projections: progress, queries three ways, the raw LMDB keys
 * ------------------------------------------------------------------------ */

typedef struct pinfo {
	int found, building, serving, faulted;
	uint64_t live_seq, build_seq, fault_seq;
	char error[300];
} pinfo;

typedef struct pfind {
	const char *name;
	pinfo *out;
} pfind;

static void
pinfo_cb(void *ud, const tide_projection_info *pi)
{
	pfind *f = ud;

	if (strcmp(pi->name, f->name) != 0)
		return;
	f->out->found = 1;
	f->out->building = pi->building;
	f->out->serving = pi->serving;
	f->out->faulted = pi->faulted;
	f->out->live_seq = pi->live_seq;
	f->out->build_seq = pi->build_seq;
	f->out->fault_seq = pi->fault_seq;
	snprintf(f->out->error, sizeof f->out->error, "%s", pi->error ? pi->error : "");
}

/* Progress of projection @p name in @p dir, read in-process. */
static pinfo
proj_info(const char *dir, const char *name)
{
	pinfo pi;
	pfind f = { name, &pi };
	tide_log *log;

	memset(&pi, 0, sizeof pi);
	if (tide_log_open(&log, dir) != TIDE_OK)
		return pi;
	ck_assert_int_eq(tide_log_projections(log, pinfo_cb, &f), TIDE_OK);
	tide_log_close(log);
	return pi;
}

/* Wait (deadline @p ms) until @p name is live (not building, not stopped)
 * at seq @p seq or beyond. */
static pinfo
wait_live(const char *dir, const char *name, uint64_t seq, int ms)
{
	int64_t deadline = th_ms() + ms;
	pinfo pi;

	do {
		pi = proj_info(dir, name);
		if (pi.found && !pi.building && !pi.faulted && pi.serving && pi.live_seq >= seq)
			return pi;
		th_pause();
	} while (th_ms() < deadline);
	ck_abort_msg("projection %s not live at %llu within %d ms: found %d building %d faulted %d "
		     "(%s) live_seq %llu build_seq %llu",
		     name, LLU(seq), ms, pi.found, pi.building, pi.faulted, pi.error,
		     LLU(pi.live_seq), LLU(pi.build_seq));
	return pi;
}

/* Wait until @p name is stopped (faulted). */
static pinfo
wait_faulted(const char *dir, const char *name, int ms)
{
	int64_t deadline = th_ms() + ms;
	pinfo pi;

	do {
		pi = proj_info(dir, name);
		if (pi.found && pi.faulted)
			return pi;
		th_pause();
	} while (th_ms() < deadline);
	ck_abort_msg("projection %s did not stop within %d ms (live_seq %llu)", name, ms,
		     LLU(pi.live_seq));
	return pi;
}

static int
collect_state(void *ud, const char *key, size_t klen, const char *json, size_t jlen)
{
	sbuf *b = ud;
	char *text = strndup(json, jlen);
	yajl_val v;

	ck_assert_ptr_nonnull(text);
	v = parse(text);
	sb_printf(b, "%.*s\t", (int)klen, key);
	canon_val(b, v);
	sb_printf(b, "\n");
	yajl_tree_free(v);
	free(text);
	return 0;
}

/* tide_log_query() in this process: the dump, or NULL with *rc set. */
static char *
query_api(const char *dir, const char *name, const char *key, const char *prefix, size_t limit,
	  int *rc)
{
	tide_log *log;
	sbuf b = { 0 };

	ck_assert_int_eq(tide_log_open(&log, dir), TIDE_OK);
	*rc = tide_log_query(log, name, key, prefix, limit, collect_state, &b);
	tide_log_close(log);
	sb_printf(&b, "%s", "");
	return sb_take(&b);
}

/* `tide query NAME [ARGS]`: the dump; *status gets the exit status. */
static char *
query_cli(const char *dir, const char *name, const char *args, int *status)
{
	size_t cap = 4 << 20;
	char *out = malloc(cap), *line, *save = NULL;
	sbuf b = { 0 };

	ck_assert_ptr_nonnull(out);
	*status = th_sh(out, cap, "'%s' query --data '%s' %s %s 2>/dev/null", TIDE_BIN, dir, name,
			args ? args : "");
	ck_assert_uint_lt(strlen(out), cap - 1);
	sb_printf(&b, "%s", "");
	for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		yajl_val v = parse(line);
		dump_pair(&b, v);
		yajl_tree_free(v);
	}
	free(out);
	return sb_take(&b);
}

/* A REQ query on the REP socket; the raw reply (malloc'd). */
static char *
query_rep_raw(const char *url, const char *req)
{
	size_t cap = 4 << 20;
	char *reply = malloc(cap);

	ck_assert_ptr_nonnull(reply);
	ck_assert_msg(th_req(url, req, reply, cap, 10000) > 0, "no reply to %s", req);
	return reply;
}

/* A REQ query for a prefix (and limit): the dump of its "states". */
static char *
query_rep_many(const char *url, const char *name, const char *prefix, long limit)
{
	sbuf req = { 0 }, b = { 0 };
	char *reply;
	yajl_val v, ok, states;

	sb_printf(&req, "{\"query\":\"%s\"", name);
	if (prefix)
		sb_printf(&req, ",\"prefix\":\"%s\"", prefix);
	if (limit > 0)
		sb_printf(&req, ",\"limit\":%ld", limit);
	sb_printf(&req, "}");
	reply = query_rep_raw(url, req.p);
	v = parse(reply);
	ok = get(v, "ok");
	states = get(v, "states");
	ck_assert_msg(ok && YAJL_IS_TRUE(ok) && states && YAJL_IS_ARRAY(states), "%s -> %.300s",
		      req.p, reply);
	sb_printf(&b, "%s", "");
	for (size_t k = 0; k < YAJL_GET_ARRAY(states)->len; k++)
		dump_pair(&b, YAJL_GET_ARRAY(states)->values[k]);
	yajl_tree_free(v);
	free(reply);
	free(req.p);
	return sb_take(&b);
}

/* A REQ query for one key: the dump line, or NULL if not ok. */
static char *
query_rep_key(const char *url, const char *name, const char *key)
{
	sbuf req = { 0 }, b = { 0 };
	char *reply;
	yajl_val v, ok;

	sb_printf(&req, "{\"query\":\"%s\",\"key\":\"%s\"}", name, key);
	reply = query_rep_raw(url, req.p);
	v = parse(reply);
	ok = get(v, "ok");
	ck_assert_ptr_nonnull(ok);
	if (YAJL_IS_TRUE(ok))
		dump_pair(&b, v);
	yajl_tree_free(v);
	free(reply);
	free(req.p);
	return b.p ? sb_take(&b) : NULL;
}

/* Keys of projection @p name in the `state` database, read with LMDB
 * itself: how many belong to each generation (gens[] sorted ascending,
 * up to 8), the number of generations returned. */
static int
state_gens(const char *dir, const char *name, uint32_t *gens, long *counts)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_cursor *cur;
	MDB_val k, v;
	size_t nl = strlen(name);
	int ng = 0, rc;

	ck_assert_int_eq(mdb_env_create(&env), 0);
	ck_assert_int_eq(mdb_env_set_maxdbs(env, 16), 0);
	ck_assert_int_eq(mdb_env_open(env, dir, MDB_RDONLY, 0644), 0);
	ck_assert_int_eq(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
	ck_assert_int_eq(mdb_dbi_open(txn, "state", 0, &dbi), 0);
	ck_assert_int_eq(mdb_cursor_open(txn, dbi, &cur), 0);
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		const uint8_t *p = k.mv_data;
		uint32_t g;
		int i;
		if (k.mv_size < nl + 5 || memcmp(p, name, nl) != 0 || p[nl] != '\0')
			continue;
		g = (uint32_t)p[nl + 1] << 24 | (uint32_t)p[nl + 2] << 16 |
		    (uint32_t)p[nl + 3] << 8 | p[nl + 4];
		for (i = 0; i < ng && gens[i] != g; i++)
			;
		if (i == ng) {
			ck_assert_int_lt(ng, 8);
			gens[ng] = g;
			counts[ng++] = 0;
		}
		counts[i]++;
	}
	mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	mdb_env_close(env);
	for (int a = 1; a < ng; a++)
		for (int b = a; b > 0 && gens[b - 1] > gens[b]; b--) {
			uint32_t tg = gens[b];
			long tc = counts[b];
			gens[b] = gens[b - 1], counts[b] = counts[b - 1];
			gens[b - 1] = tg, counts[b - 1] = tc;
		}
	return ng;
}

/* Wait until @p name has keys of exactly one generation (the old ones are
 * collected a slice at a time); returns it and its key count. */
static uint32_t
wait_one_gen(const char *dir, const char *name, long *count, int ms)
{
	int64_t deadline = th_ms() + ms;
	uint32_t gens[8];
	long counts[8];
	int ng;

	do {
		ng = state_gens(dir, name, gens, counts);
		if (ng <= 1) {
			*count = ng ? counts[0] : 0;
			return ng ? gens[0] : 0;
		}
		th_pause();
	} while (th_ms() < deadline);
	ck_abort_msg("projection %s still has keys of %d generations (%u: %ld, %u: %ld)", name, ng,
		     gens[0], counts[0], gens[1], counts[1]);
	return 0;
}

/* ------------------------------------------------------------------------
 * The bank: a generated history and its reference model
 * ------------------------------------------------------------------------ */

#define NACCT 150
#define NEVENTS 3000

typedef struct gev {
	const char *type;
	int acct;    /* the key (data.acct); 0: none, the event has no key */
	int subject; /* 0: "sys", else "acct-<n>" */
	int64_t amount;
	int test; /* data.test: the filter drops it */
	char owner[24];
} gev;

typedef struct account {
	int present;
	int64_t balance, fees;
	long n;
	const char *status;
	char owner[24];
	char tags[2048]; /* JSON array members */
} account;

typedef struct stream_st {
	long n;
	uint64_t last;
} stream_st;

typedef struct model {
	int mult; /* what a deposit counts: 1 in version 1, 2 in version 2 */
	account a[NACCT + 1];
	stream_st s[NACCT + 1];
} model;

/* The projections.  %d: version, iterations of a busy loop per event
 * (to make a rebuild slow), what a deposit counts. */
static const char bank_lua[] =
	"local tide = require 'tide'\n"
	"local SPIN, MULT = %d, %d\n"
	"local function spin() local x = 0 for i = 1, SPIN do x = x + i %% 7 end return x end\n"
	"tide.projection('accounts', {\n"
	"  version = %d,\n"
	"  key = function(ev) return ev.data and ev.data.acct end,\n"
	"  filter = function(ev) return not (ev.data and ev.data.test) end,\n"
	"  init = function(key)\n"
	"    assert(type(key) == 'string', 'keys reach init as strings')\n"
	"    return { id = key, balance = 0, fees = 0, n = 0, status = 'new',\n"
	"             tags = tide.array({}) }\n"
	"  end,\n"
	"  on = {\n"
	"    ['acct.opened'] = function(s, ev) spin()\n"
	"      s.n = s.n + 1; s.status = 'open'; s.owner = ev.data.owner end,\n"
	"    ['acct.deposited'] = function(s, ev) spin()\n"
	"      s.n = s.n + 1; s.balance = s.balance + ev.data.amount * MULT end,\n"
	"    ['acct.withdrew'] = function(s, ev) spin()\n"
	"      s.n = s.n + 1; s.balance = s.balance - ev.data.amount end,\n"
	"    ['acct.closed'] = function(s, ev) spin() return tide.delete end,\n"
	"    ['acct.fee.*'] = function(s, ev) spin()\n"
	"      s.n = s.n + 1; s.fees = s.fees + ev.data.amount\n"
	"      s.balance = s.balance - ev.data.amount end,\n"
	"    ['acct.*'] = function(s, ev) spin()\n" /* acct.renamed: returns a new table */
	"      local t = {}\n"
	"      for k, v in pairs(s) do t[k] = v end\n"
	"      t.n = s.n + 1; t.owner = ev.data.owner\n"
	"      return t end,\n"
	"    ['*'] = function(s, ev) spin()\n" /* note.added, kyc.passed */
	"      s.n = s.n + 1; s.tags[#s.tags + 1] = ev.type end,\n"
	"  },\n"
	"})\n"
	"tide.projection('streams', {\n" /* the default key: the subject */
	"  version = 1,\n"
	"  on = { ['*'] = function(s, ev) s.n = (s.n or 0) + 1; s.last = ev.seq end },\n"
	"})\n";

static const char *
bank_script(const char *dir, int version, int spin, int mult)
{
	char text[sizeof bank_lua + 64];

	snprintf(text, sizeof text, bank_lua, spin, mult, version);
	return th_write(dir, "bank.lua", text);
}

/* The history: @p n events from @p seed. */
static gev *
bank_history(uint64_t seed, int n)
{
	gev *v = calloc((size_t)n, sizeof *v);
	int open[NACCT + 1] = { 0 };
	uint64_t rng = seed;

	ck_assert_ptr_nonnull(v);
	for (int i = 0; i < n; i++) {
		gev *g = &v[i];
		int a = (int)th_rand_range(&rng, 1, NACCT), r = (int)th_rand_range(&rng, 0, 99);
		if (th_rand_range(&rng, 0, 99) < 5) {
			g->type = "sys.tick"; /* no key: not for "accounts" */
			continue;
		}
		g->acct = g->subject = a;
		snprintf(g->owner, sizeof g->owner, "o%d-%d", a, i);
		if (!open[a] && r < 80) {
			g->type = "acct.opened";
			open[a] = 1;
		} else if (r < 40) {
			g->type = "acct.deposited";
			g->amount = (int64_t)th_rand_range(&rng, 1, 1000);
		} else if (r < 60) {
			g->type = "acct.withdrew";
			g->amount = (int64_t)th_rand_range(&rng, 1, 500);
		} else if (r < 68) {
			g->type = "acct.fee.charged";
			g->amount = (int64_t)th_rand_range(&rng, 1, 20);
		} else if (r < 73) {
			g->type = "acct.renamed";
		} else if (r < 78) {
			g->type = "note.added";
		} else if (r < 81) {
			g->type = "kyc.passed";
		} else if (r < 86) {
			g->type = "acct.deposited"; /* a test event: filtered out */
			g->amount = 1000000;
			g->test = 1;
		} else if (r < 90) {
			g->type = "acct.closed";
			open[a] = 0;
		} else {
			g->type = "acct.deposited";
			g->amount = (int64_t)th_rand_range(&rng, 1, 50);
		}
	}
	return v;
}

/* Event @p i of the history as one line of JSON. */
static void
bank_event(sbuf *b, const gev *g, int i)
{
	sb_printf(b,
		  "{\"specversion\":\"1.0\",\"id\":\"e-%d\",\"source\":\"/bank\",\"type\":\"%s\"",
		  i, g->type);
	if (g->subject)
		sb_printf(b, ",\"subject\":\"acct-%d\"", g->subject);
	else
		sb_printf(b, ",\"subject\":\"sys\"");
	sb_printf(b, ",\"data\":{");
	if (g->acct)
		sb_printf(b, "\"acct\":%d,\"amount\":%lld,\"owner\":\"%s\"%s", g->acct,
			  (long long)g->amount, g->owner, g->test ? ",\"test\":true" : "");
	else
		sb_printf(b, "\"tick\":%d", i);
	sb_printf(b, "}}");
}

/* Apply event @p g, stored at @p seq, to the model. */
static void
model_apply(model *m, const gev *g, uint64_t seq)
{
	account *a;

	m->s[g->subject].n++;
	m->s[g->subject].last = seq;
	if (g->test || g->acct == 0)
		return;
	a = &m->a[g->acct];
	if (!a->present) {
		memset(a, 0, sizeof *a);
		a->present = 1;
		a->status = "new";
	}
	if (strcmp(g->type, "acct.opened") == 0) {
		a->n++;
		a->status = "open";
		snprintf(a->owner, sizeof a->owner, "%s", g->owner);
	} else if (strcmp(g->type, "acct.deposited") == 0) {
		a->n++;
		a->balance += g->amount * m->mult;
	} else if (strcmp(g->type, "acct.withdrew") == 0) {
		a->n++;
		a->balance -= g->amount;
	} else if (strcmp(g->type, "acct.closed") == 0) {
		a->present = 0;
	} else if (strcmp(g->type, "acct.fee.charged") == 0) {
		a->n++;
		a->fees += g->amount;
		a->balance -= g->amount;
	} else if (strcmp(g->type, "acct.renamed") == 0) {
		a->n++;
		snprintf(a->owner, sizeof a->owner, "%s", g->owner);
	} else {
		size_t len = strlen(a->tags);
		a->n++;
		snprintf(a->tags + len, sizeof a->tags - len, "%s\"%s\"", len ? "," : "", g->type);
	}
}

/* The model after the first @p upto events of @p h. */
static void
model_at(model *m, int mult, const gev *h, int upto)
{
	memset(m, 0, sizeof *m);
	m->mult = mult;
	for (int i = 0; i < upto; i++)
		model_apply(m, &h[i], (uint64_t)i + 1);
}

typedef struct kv {
	char key[32];
	char *json;
} kv;

static int
by_key(const void *a, const void *b)
{
	return strcmp(((const kv *)a)->key, ((const kv *)b)->key);
}

/* The model's dump of projection @p name ("accounts" or "streams"): keys
 * starting with @p prefix (NULL: all), at most @p limit (0: all), in
 * the order LMDB keeps them (bytewise). */
static char *
model_dump(const model *m, const char *name, const char *prefix, size_t limit)
{
	kv v[NACCT + 1];
	size_t n = 0;
	sbuf out = { 0 };
	int accounts = strcmp(name, "accounts") == 0;

	for (int i = accounts ? 1 : 0; i <= NACCT; i++) {
		sbuf b = { 0 };
		if (accounts) {
			const account *a = &m->a[i];
			if (!a->present)
				continue;
			snprintf(v[n].key, sizeof v[n].key, "%d", i);
			sb_printf(&b, "{\"balance\":%lld,\"fees\":%lld,\"id\":\"%d\",\"n\":%ld",
				  (long long)a->balance, (long long)a->fees, i, a->n);
			if (a->owner[0])
				sb_printf(&b, ",\"owner\":\"%s\"", a->owner);
			sb_printf(&b, ",\"status\":\"%s\",\"tags\":[%s]}", a->status, a->tags);
		} else {
			if (m->s[i].n == 0)
				continue;
			if (i == 0)
				snprintf(v[n].key, sizeof v[n].key, "sys");
			else
				snprintf(v[n].key, sizeof v[n].key, "acct-%d", i);
			sb_printf(&b, "{\"last\":%llu,\"n\":%ld}", LLU(m->s[i].last), m->s[i].n);
		}
		if (prefix && strncmp(v[n].key, prefix, strlen(prefix)) != 0) {
			free(b.p);
			continue;
		}
		v[n++].json = sb_take(&b);
	}
	qsort(v, n, sizeof *v, by_key);
	sb_printf(&out, "%s", "");
	for (size_t k = 0; k < n; k++) {
		if (limit == 0 || k < limit)
			sb_printf(&out, "%s\t%s\n", v[k].key, v[k].json);
		free(v[k].json);
	}
	return sb_take(&out);
}

/* Publish events [from, to) of @p h over REQ, @p per to a message, one
 * message at a time so that seq = index + 1 (checked on the acks). */
static void
bank_publish(const char *url, const gev *h, int from, int to, int per)
{
	size_t nmsg = (size_t)((to - from + per - 1) / per);
	char **msgs = calloc(nmsg, sizeof *msgs), **replies = calloc(nmsg, sizeof *replies);

	ck_assert_ptr_nonnull(msgs);
	ck_assert_ptr_nonnull(replies);
	for (size_t m = 0; m < nmsg; m++) {
		sbuf b = { 0 };
		for (int i = from + (int)m * per; i < to && i < from + (int)(m + 1) * per; i++) {
			bank_event(&b, &h[i], i);
			sb_printf(&b, "\n");
		}
		msgs[m] = sb_take(&b);
	}
	ck_assert_uint_eq(th_req_many(url, msgs, nmsg, replies, 1, 60000), nmsg);
	for (size_t m = 0; m < nmsg; m++) {
		char *line = replies[m], *save = NULL;
		uint64_t want = (uint64_t)from + m * (uint64_t)per + 1, seq;
		for (line = strtok_r(line, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
			ck_assert_msg(th_ack_parse(line, &seq) == TH_ACK_STORED, "ack %s", line);
			ck_assert_uint_eq(seq, want);
			want++;
		}
		ck_assert_uint_eq(want,
				  (uint64_t)from + (m + 1) * (uint64_t)per + 1 > (uint64_t)to + 1
					  ? (uint64_t)to + 1
					  : (uint64_t)from + (m + 1) * (uint64_t)per + 1);
		free(msgs[m]);
		free(replies[m]);
	}
	free(msgs);
	free(replies);
}

/* Every way of reading "accounts" and "streams" agrees with @p m. */
static void
check_all_ways(const char *dir, const char *rep, const model *m)
{
	static const char *const names[] = { "accounts", "streams" };
	char *got, *want;
	int rc;

	for (int i = 0; i < 2; i++) {
		want = model_dump(m, names[i], NULL, 0);
		got = query_cli(dir, names[i], NULL, &rc);
		ck_assert_int_eq(rc, 0);
		same_dump(got, want, "tide query");
		free(got);
		got = query_api(dir, names[i], NULL, NULL, 0, &rc);
		ck_assert_int_eq(rc, TIDE_OK);
		same_dump(got, want, "tide_log_query");
		free(got);
		if (rep) {
			got = query_rep_many(rep, names[i], NULL, 0);
			same_dump(got, want, "REP query");
			free(got);
		}
		free(want);
	}
}

/* Single keys and prefixes with limits, three ways. */
static void
check_keys_and_prefixes(const char *dir, const char *rep, const model *m)
{
	static const char *const prefixes[] = { "1", "12", "9", "150", "7" };
	static const long limits[] = { 5, 0, 3, 1, 100 };
	char *got, *want, limit[32];
	int rc;

	for (int i = 0; i < 5; i++) {
		want = model_dump(m, "accounts", prefixes[i], (size_t)limits[i]);
		got = query_rep_many(rep, "accounts", prefixes[i], limits[i]);
		same_dump(got, want, "REP prefix query");
		free(got);
		got = query_api(dir, "accounts", NULL, prefixes[i], (size_t)limits[i], &rc);
		ck_assert_int_eq(rc, TIDE_OK);
		same_dump(got, want, "tide_log_query prefix");
		free(got);
		snprintf(limit, sizeof limit, "--prefix %s --limit %ld", prefixes[i], limits[i]);
		got = query_cli(dir, "accounts", limit, &rc);
		ck_assert_int_eq(rc, 0);
		same_dump(got, want, "tide query --prefix");
		free(got);
		free(want);
	}
	/* every key, present or deleted */
	for (int a = 1; a <= NACCT; a += 7) {
		char key[16], *one;
		model sub = *m;
		snprintf(key, sizeof key, "%d", a);
		for (int j = 1; j <= NACCT; j++)
			sub.a[j].present = sub.a[j].present && j == a;
		want = model_dump(&sub, "accounts", NULL, 0);
		one = query_rep_key(rep, "accounts", key);
		got = query_cli(dir, "accounts", key, &rc);
		if (m->a[a].present) {
			ck_assert_ptr_nonnull(one);
			same_dump(one, want, "REP key query");
			ck_assert_int_eq(rc, 0);
			same_dump(got, want, "tide query KEY");
		} else {
			ck_assert_ptr_null(one);
			ck_assert_int_eq(rc, 1);
			ck_assert_str_eq(got, "");
		}
		free(got);
		got = query_api(dir, "accounts", key, NULL, 0, &rc);
		ck_assert_int_eq(rc, m->a[a].present ? TIDE_OK : TIDE_ENOTFOUND);
		if (m->a[a].present)
			same_dump(got, want, "tide_log_query KEY");
		free(got);
		free(one);
		free(want);
	}
}

/* Threads of a build (build_threads) for the daemons bank_start() runs;
 * 0 for the default (one per CPU). */
static int bank_threads;

/* A data directory and a running daemon on bank.lua. */
static void
bank_start(th_daemon *d, const char *dir, const char *data, const char *script)
{
	ck_assert_int_eq(th_daemon_spawn(d, data,
					 "--data '%s' --script '%s' --set build_threads=%d", data,
					 script, bank_threads),
			 0);
	(void)dir;
}

/* The loop tests of rebuilds run with these build_threads. */
static const int loop_threads[] = { 1, 3 };

/* After a rebuild with bank_threads: its log says whether it was shared. */
static void
check_threads_used(const th_daemon *d)
{
	char *log = th_slurp(d->log), want[64];

	ck_assert_ptr_nonnull(log);
	snprintf(want, sizeof want, "on %d threads", bank_threads);
	if (bank_threads > 1)
		ck_assert_msg(strstr(log, want), "no build on %d threads in the log", bank_threads);
	else
		ck_assert_msg(!strstr(log, " threads"), "a build on threads with build_threads=1");
	free(log);
}

static const char *
subdir(const char *dir, const char *name)
{
	static char path[4][600];
	static int slot;
	char *p = path[slot++ & 3];

	snprintf(p, 600, "%s/%s", dir, name);
	return p;
}

/* ------------------------------------------------------------------------
 * 1. The live projection equals the model, at points along the way
 * ------------------------------------------------------------------------ */

START_TEST(live_matches_model)
{
	const char *dir = th_tmpdir(), *data = subdir(dir, "data");
	uint64_t seed = (uint64_t)th_env_ll("TIDE_SEED", 20261124);
	gev *h = bank_history(seed, NEVENTS);
	static const int points[] = { 1, 37, 700, 1900, NEVENTS };
	model *m = malloc(sizeof *m);
	int done = 0, deleted = 0, tagged = 0;
	th_daemon d;

	ck_assert_ptr_nonnull(m);
	bank_start(&d, dir, data, bank_script(dir, 1, 0, 1));
	for (size_t p = 0; p < sizeof points / sizeof points[0]; p++) {
		bank_publish(d.rep, h, done, points[p], 100);
		done = points[p];
		wait_live(data, "accounts", (uint64_t)done, 20000);
		wait_live(data, "streams", (uint64_t)done, 20000);
		model_at(m, 1, h, done);
		check_all_ways(data, d.rep, m);
	}
	/* the history exercises what it should: closes (some keys come back
	 * after one, from init), notes that only "*" takes */
	for (int i = 0; i < NEVENTS; i++)
		deleted += strcmp(h[i].type, "acct.closed") == 0;
	for (int a = 1; a <= NACCT; a++)
		tagged += m->a[a].present && m->a[a].tags[0];
	ck_assert_int_gt(deleted, 50);
	ck_assert_int_gt(tagged, 20);
	check_keys_and_prefixes(data, d.rep, m);
	/* and across a restart */
	ck_assert_int_eq(th_daemon_stop(&d), 0);
	check_all_ways(data, NULL, m);
	bank_start(&d, dir, data, bank_script(dir, 1, 0, 1));
	check_all_ways(data, d.rep, m);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
	free(m);
	free(h);
}
END_TEST

/* ------------------------------------------------------------------------
 * 2. and 3. Rebuilds after a change of the definition
 * ------------------------------------------------------------------------ */

/* Busy-loop iterations per event of the version-2 handlers: enough to make
 * the rebuild of the history take a few seconds (TIDE_SPIN overrides). */
#define SPIN_DEFAULT 60000
/* Events published while the rebuild runs. */
#define NLATE 200

/* Version 1 of the bank, the whole history in and the daemon stopped;
 * *gen1 gets the generation "accounts" lives in. */
static void
bank_v1(const char *dir, const char *data, const gev *h, model *m1, uint32_t *gen1)
{
	th_daemon d;
	long keys;
	char *want;

	bank_start(&d, dir, data, bank_script(dir, 1, 0, 1));
	bank_publish(d.rep, h, 0, NEVENTS, 250);
	wait_live(data, "accounts", NEVENTS, 20000);
	wait_live(data, "streams", NEVENTS, 20000);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
	model_at(m1, 1, h, NEVENTS);
	check_all_ways(data, NULL, m1);
	*gen1 = wait_one_gen(data, "accounts", &keys, 1000);
	want = model_dump(m1, "accounts", NULL, 0);
	ck_assert_int_eq(keys, th_count(want, "\n"));
	ck_assert_uint_gt(*gen1, 0);
	free(want);
}

/* After a rebuild: the new state equals @p m2 and only its generation is
 * left in the `state` database. */
static void
check_rebuilt(const char *data, const char *rep, const model *m2, uint32_t gen1)
{
	long keys;
	uint32_t gen2;
	char *want = model_dump(m2, "accounts", NULL, 0);

	check_all_ways(data, rep, m2);
	gen2 = wait_one_gen(data, "accounts", &keys, 20000);
	ck_assert_uint_gt(gen2, gen1);
	ck_assert_int_eq(keys, th_count(want, "\n"));
	free(want);
	want = model_dump(m2, "streams", NULL, 0);
	wait_one_gen(data, "streams", &keys, 20000);
	ck_assert_int_eq(keys, th_count(want, "\n"));
	free(want);
}

/* `tide stat --json` and `tide stat` say "accounts" is building, serving
 * the old state at @p live_seq.  Returns 0 if the rebuild finished before
 * stat looked (the caller tries again or moves on). */
static int
check_stat_building(const char *data, uint64_t live_seq)
{
	char out[8192];
	yajl_val v, ps;
	int seen = 0, building = 0;

	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' stat --json --data '%s'", TIDE_BIN, data), 0);
	v = parse(out);
	ps = get(v, "projections");
	ck_assert_msg(ps && YAJL_IS_ARRAY(ps), "%s", out);
	for (size_t k = 0; k < YAJL_GET_ARRAY(ps)->len; k++) {
		yajl_val p = YAJL_GET_ARRAY(ps)->values[k], name = get(p, "name");
		yajl_val status = get(p, "status"), seq = get(p, "seq"),
			 progress = get(p, "progress");
		const char *nm = YAJL_IS_STRING(name) ? YAJL_GET_STRING(name) : "";
		if (strcmp(nm, "accounts") != 0)
			continue;
		seen = 1;
		ck_assert_msg(YAJL_IS_STRING(status), "%s", out);
		if (strcmp(YAJL_IS_STRING(status) ? YAJL_GET_STRING(status) : "", "live") == 0 &&
		    !proj_info(data, "accounts").building)
			break; /* finished meanwhile */
		ck_assert_str_eq(YAJL_GET_STRING(status), "building");
		building = 1;
		/* the state served is the old one, at its old position */
		ck_assert_uint_eq((uint64_t)YAJL_GET_INTEGER(seq), live_seq);
		ck_assert_msg(progress && YAJL_IS_NUMBER(progress), "no progress: %s", out);
		ck_assert(YAJL_GET_DOUBLE(progress) >= 0 && YAJL_GET_DOUBLE(progress) < 100);
	}
	ck_assert_msg(seen, "no accounts in %s", out);
	yajl_tree_free(v);
	if (!building)
		return 0;
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' stat --data '%s'", TIDE_BIN, data), 0);
	if (strstr(out, "live at") && !proj_info(data, "accounts").building)
		return 1;
	ck_assert_msg(strstr(out, "building") && strstr(out, "serving the previous state"), "%s",
		      out);
	return 1;
}

/* Wait until @p name is being rebuilt (a rebuild requested on REP is
 * recorded when the engine takes the request). */
static void
wait_building(const char *dir, const char *name, int ms)
{
	int64_t deadline = th_ms() + ms;
	pinfo pi;

	do {
		pi = proj_info(dir, name);
		if (pi.building)
			return;
		th_pause();
	} while (th_ms() < deadline);
	ck_abort_msg("%s did not start building within %d ms (live at %llu, stopped %d: %s)", name,
		     ms, LLU(pi.live_seq), pi.faulted, pi.error);
}

/* Change the definition (version 2: deposits count twice, handlers slow)
 * and restart: while the new generation is built every read is the old
 * state, whole; then, in one step, the new one; events that arrive
 * meanwhile are in the new state. */
START_TEST(rebuild_serves_old_state_then_switches)
{
	const char *dir = th_tmpdir(), *data = subdir(dir, "data");

	bank_threads = loop_threads[_i];
	gev *h = bank_history(77, NEVENTS + NLATE);
	model *m1 = malloc(sizeof *m1), *m2 = malloc(sizeof *m2);
	char *old, *new;
	uint32_t gen1;
	int spin = (int)th_env_ll("TIDE_SPIN", SPIN_DEFAULT), reads_old = 0, reads_new = 0;
	int late = 0, stat_checked = 0;
	pid_t publisher = -1;
	int64_t t0;
	th_daemon d;

	ck_assert_ptr_nonnull(m1);
	ck_assert_ptr_nonnull(m2);
	bank_v1(dir, data, h, m1, &gen1);
	model_at(m2, 2, h, NEVENTS + NLATE);
	old = model_dump(m1, "accounts", NULL, 0);
	new = model_dump(m2, "accounts", NULL, 0);
	ck_assert_str_ne(old, new);

	bank_start(&d, dir, data, bank_script(dir, 2, spin, 2));
	/* the new definition's build is recorded before the engine is ready */
	ck_assert_msg(proj_info(data, "accounts").building, "not building right after the start");
	t0 = th_ms();
	for (;;) {
		pinfo before = proj_info(data, "accounts"), after;
		int rc;
		char *got = query_api(data, "accounts", NULL, NULL, 0, &rc);
		ck_assert_int_eq(rc, TIDE_OK);
		after = proj_info(data, "accounts");
		ck_assert_msg(!before.faulted && !after.faulted, "stopped: %s", after.error);
		if (strcmp(got, old) == 0) {
			/* never the old state once the new one was seen */
			ck_assert_int_eq(reads_new, 0);
			ck_assert_msg(before.building, "the old state is read but not building");
			reads_old++;
		} else {
			/* the new one, whole: the model at some seq between
			 * the end of the history and the live seq read after
			 * the query (the late events may still be coming) */
			int k, found = 0;
			ck_assert_msg(!before.building || !after.building,
				      "a new state while building");
			for (k = NEVENTS; k <= (int)after.live_seq && !found; k++) {
				model part;
				char *want;
				model_at(&part, 2, h, k);
				want = model_dump(&part, "accounts", NULL, 0);
				found = strcmp(got, want) == 0;
				free(want);
			}
			ck_assert_msg(found,
				      "a state that is no model's between %d and %llu:\n%.2000s",
				      NEVENTS, LLU(after.live_seq), got);
			reads_new++;
		}
		free(got);
		if (!late) {
			/* events keep coming during the rebuild (from another
			 * process, so that this one keeps reading); the old
			 * state does not move */
			sbuf b = { 0 };
			for (int i = NEVENTS; i < NEVENTS + NLATE; i++) {
				bank_event(&b, &h[i], i);
				sb_printf(&b, "\n");
			}
			th_write(dir, "late.ndjson", b.p);
			free(b.p);
			publisher = th_bg_io(subdir(dir, "late.ndjson"), subdir(dir, "late.out"),
					     subdir(dir, "late.err"), "'%s' publish --data '%s'",
					     TIDE_BIN, data);
			ck_assert_int_gt(publisher, 0);
			late = 1;
		}
		if (after.building && reads_old >= 2 && !stat_checked) {
			stat_checked = check_stat_building(data, NEVENTS);
		}
		if (!after.building && after.live_seq >= NEVENTS + NLATE)
			break;
		ck_assert_msg(th_ms() - t0 < 60000, "the rebuild did not finish within 60 s");
		th_pause();
	}
	if (getenv("TIDE_VERBOSE"))
		fprintf(stderr, "rebuild: %lld ms, %d old reads, %d new\n",
			(long long)(th_ms() - t0), reads_old, reads_new);
	ck_assert_msg(reads_old >= 3, "the rebuild was too quick to watch (%d reads)", reads_old);
	ck_assert_int_eq(late, 1);
	ck_assert_int_eq(th_bg_wait(publisher, 10000), 0);
	ck_assert_int_eq(stat_checked, 1);
	check_rebuilt(data, d.rep, m2, gen1);
	check_threads_used(&d);
	bank_threads = 0;
	ck_assert(th_wait_file(d.log, "projection 'accounts' is built", 1000));
	ck_assert_int_eq(th_daemon_stop(&d), 0);
	free(old);
	free(new);
	free(m1);
	free(m2);
	free(h);
}
END_TEST

/* SIGKILL the daemon three times in the middle of the rebuild: each time
 * the progress committed is kept, the old state is still served, and the
 * restarted daemon resumes; the result is the model, every key whole. */
/* A live projection under load holds its states in memory for a moment
 * and writes them with its progress: killed while a producer streams,
 * what is stored is exactly the state as of the stored progress, and a
 * restart completes it. */
START_TEST(live_under_load_survives_sigkill)
{
	static const char *const names[] = { "accounts", "streams" };
	enum { N = 30000 };
	const char *dir = th_tmpdir(), *data = subdir(dir, "data"), *in;
	gev *h = bank_history(777, N);
	model *m = malloc(sizeof *m);
	uint64_t head = 0, last;
	int64_t deadline;
	sbuf b = { 0 };
	char path[700];
	pid_t pub;
	th_daemon d;

	ck_assert_ptr_nonnull(m);
	for (int i = 0; i < N; i++) {
		bank_event(&b, &h[i], i);
		sb_printf(&b, "\n");
	}
	in = th_write(dir, "events.ndjson", b.p);
	free(b.p);
	snprintf(path, sizeof path, "%s/pub.out", dir);
	bank_start(&d, dir, data, bank_script(dir, 1, 0, 1));
	pub = th_bg_io(in, path, path, "'%s' publish --data '%s'", TIDE_BIN, data);
	ck_assert_int_gt(pub, 0);
	deadline = th_ms() + 30000;
	while (head < N / 3 && th_ms() < deadline) {
		ck_assert_int_eq(th_log_state(data, NULL, &head, &last, NULL), 0);
		th_pause();
	}
	th_daemon_kill(&d);
	th_bg_wait(pub, 30000); /* it fails: the engine is gone */
	ck_assert_int_eq(th_log_state(data, NULL, &head, &last, NULL), 0);
	ck_assert_uint_ge(head, N / 3);
	for (int i = 0; i < 2; i++) {
		pinfo pi = proj_info(data, names[i]);
		char *got, *want;
		int rc;
		ck_assert(pi.found && !pi.faulted);
		ck_assert_uint_le(pi.live_seq, head);
		model_at(m, 1, h, (int)pi.live_seq);
		want = model_dump(m, names[i], NULL, 0);
		got = query_api(data, names[i], NULL, NULL, 0, &rc);
		ck_assert_int_eq(rc, TIDE_OK);
		same_dump(got, want, "after the kill");
		free(got);
		free(want);
	}
	bank_start(&d, dir, data, bank_script(dir, 1, 0, 1));
	wait_live(data, "accounts", head, 20000);
	wait_live(data, "streams", head, 20000);
	model_at(m, 1, h, (int)head);
	check_all_ways(data, d.rep, m);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
	free(m);
	free(h);
}
END_TEST

START_TEST(rebuild_survives_sigkill)
{
	const char *dir = th_tmpdir(), *data = subdir(dir, "data");

	bank_threads = loop_threads[_i];
	gev *h = bank_history(4242, NEVENTS);
	model *m1 = malloc(sizeof *m1), *m2 = malloc(sizeof *m2);
	const char *script;
	char *old;
	uint32_t gen1;
	int spin = (int)th_env_ll("TIDE_SPIN", SPIN_DEFAULT), kills = 0;
	uint64_t floor = 0;
	th_daemon d;

	ck_assert_ptr_nonnull(m1);
	ck_assert_ptr_nonnull(m2);
	bank_v1(dir, data, h, m1, &gen1);
	model_at(m2, 2, h, NEVENTS);
	old = model_dump(m1, "accounts", NULL, 0);
	script = bank_script(dir, 2, spin, 2);
	bank_start(&d, dir, data, script);
	wait_building(data, "accounts", 10000);
	while (kills < 3) {
		int64_t deadline = th_ms() + 30000;
		pinfo pi;
		char *got;
		int rc;
		/* wait for progress beyond what survived the last kill */
		do {
			pi = proj_info(data, "accounts");
			ck_assert_msg(!pi.faulted, "stopped: %s", pi.error);
			if (!pi.building || pi.build_seq > floor)
				break;
			th_pause();
		} while (th_ms() < deadline);
		if (!pi.building)
			break; /* done before the third kill: still a pass */
		ck_assert_uint_gt(pi.build_seq, floor);
		th_daemon_kill(&d);
		kills++;
		/* what a turn committed stays committed */
		pi = proj_info(data, "accounts");
		ck_assert_msg(pi.building, "the kill came after the switch");
		ck_assert_uint_ge(pi.build_seq, floor);
		floor = pi.build_seq;
		got = query_api(data, "accounts", NULL, NULL, 0, &rc);
		ck_assert_int_eq(rc, TIDE_OK);
		same_dump(got, old, "the old state after a kill");
		free(got);
		bank_start(&d, dir, data, script);
		pi = proj_info(data, "accounts");
		ck_assert_msg(!pi.building || pi.build_seq >= floor,
			      "the rebuild went back from %llu to %llu", LLU(floor),
			      LLU(pi.build_seq));
	}
	ck_assert_int_ge(kills, 2);
	wait_live(data, "accounts", NEVENTS, 60000);
	wait_live(data, "streams", NEVENTS, 60000);
	/* exactly once: every counter equals the events of its key */
	check_rebuilt(data, d.rep, m2, gen1);
	check_threads_used(&d);
	bank_threads = 0;
	ck_assert_int_eq(th_daemon_stop(&d), 0);
	free(old);
	free(m1);
	free(m2);
	free(h);
}
END_TEST

/* A rebuild runs "in the background": while it works, the REP socket
 * still answers queries and acknowledges events within a bound far below
 * the length of the rebuild (a turn gives a rebuild about 50 ms). */
/* tide projection rebuild --wait gives up, with a clear word, when the
 * engine goes away before the rebuild is done. */
START_TEST(rebuild_wait_notices_the_engine_stop)
{
	const char *dir = th_tmpdir(), *data = subdir(dir, "data");
	gev *h = bank_history(99, NEVENTS);
	model *m1 = malloc(sizeof *m1);
	int spin = (int)th_env_ll("TIDE_SPIN", SPIN_DEFAULT);
	uint32_t gen1;
	char out[700], text[4096];
	pid_t follower;
	th_daemon d;

	ck_assert_ptr_nonnull(m1);
	bank_v1(dir, data, h, m1, &gen1);
	bank_start(&d, dir, data, bank_script(dir, 1, spin, 1)); /* slow handlers */
	snprintf(out, sizeof out, "%s/wait.out", dir);
	follower =
		th_bg(out, "'%s' projection rebuild --wait accounts --data '%s'", TIDE_BIN, data);
	ck_assert(th_wait_file(out, "building", 10000));
	th_daemon_kill(&d);
	ck_assert_int_eq(th_bg_wait(follower, 10000), 1);
	ck_assert_int_eq(th_sh(text, sizeof text, "cat '%s'", out), 0);
	ck_assert_msg(strstr(text, "the engine stopped at ") &&
			      strstr(text, "goes on when the engine runs again"),
		      "%s", text);
	free(m1);
	free(h);
}
END_TEST

START_TEST(rebuild_does_not_hold_up_queries_and_ingest)
{
	const char *dir = th_tmpdir(), *data = subdir(dir, "data");
	gev *h = bank_history(99, NEVENTS);
	model *m1 = malloc(sizeof *m1);
	int spin = (int)th_env_ll("TIDE_SPIN", SPIN_DEFAULT);
	char reply[65536];
	const char *ev = "{\"specversion\":\"1.0\",\"id\":\"during\",\"source\":\"/t\","
			 "\"type\":\"sys.tick\",\"subject\":\"sys\"}";
	int64_t t, query_ms, ack_ms;
	uint32_t gen1;
	th_daemon d;

	ck_assert_ptr_nonnull(m1);
	bank_v1(dir, data, h, m1, &gen1);
	bank_start(&d, dir, data, bank_script(dir, 2, spin, 2));
	wait_building(data, "accounts", 10000);
	t = th_ms();
	ck_assert_int_gt(
		th_req(d.rep, "{\"query\":\"accounts\",\"key\":\"1\"}", reply, sizeof reply, 60000),
		0);
	query_ms = th_ms() - t;
	ck_assert_msg(strncmp(reply, "{\"ok\":true,\"key\":\"1\",\"state\":", 29) == 0, "%s",
		      reply);
	t = th_ms();
	ck_assert_int_gt(th_req(d.rep, ev, reply, sizeof reply, 60000), 0);
	ack_ms = th_ms() - t;
	ck_assert_str_eq(reply, "{\"ok\":true,\"seq\":3001}");
	ck_assert_msg(query_ms < 1000 && ack_ms < 1000,
		      "while rebuilding, a REP query took %lld ms and an acknowledgement %lld ms "
		      "(still building: %d)",
		      (long long)query_ms, (long long)ack_ms, proj_info(data, "accounts").building);
	wait_live(data, "accounts", NEVENTS + 1, 60000);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
	free(m1);
	free(h);
}
END_TEST

/* ------------------------------------------------------------------------
 * 4. Forced rebuilds, and a projection added to an existing log
 * ------------------------------------------------------------------------ */

START_TEST(rebuild_command_online_and_offline)
{
	const char *dir = th_tmpdir(), *data = subdir(dir, "data");
	gev *h = bank_history(5, NEVENTS);
	model *m1 = malloc(sizeof *m1);
	const char *script;
	char out[4096];
	uint32_t gen1, gen2, gen3;
	long keys;
	th_daemon d;

	ck_assert_ptr_nonnull(m1);
	bank_v1(dir, data, h, m1, &gen1);
	script = bank_script(dir, 1, 0, 1); /* unchanged: nothing to rebuild */
	bank_start(&d, dir, data, script);
	wait_live(data, "accounts", NEVENTS, 10000);
	ck_assert_uint_eq(wait_one_gen(data, "accounts", &keys, 1000), gen1);

	/* online, through the command line (which asks the engine on REP) */
	ck_assert_int_eq(th_sh(out, sizeof out,
			       "'%s' projection rebuild accounts --data '%s' 2>&1 >/dev/null",
			       TIDE_BIN, data),
			 0);
	ck_assert_msg(strstr(out, "rebuilding 'accounts'"), "%s", out);
	{
		int64_t deadline = th_ms() + 20000;
		uint32_t gens[8];
		long counts[8];
		int ng;
		do {
			ng = state_gens(data, "accounts", gens, counts);
			if (ng == 1 && gens[0] > gen1 && !proj_info(data, "accounts").building)
				break;
			th_pause();
		} while (th_ms() < deadline);
		ck_assert_int_eq(ng, 1);
		gen2 = gens[0];
		ck_assert_uint_gt(gen2, gen1);
	}
	wait_live(data, "accounts", NEVENTS, 10000);
	check_all_ways(data, d.rep, m1);
	/* --wait follows the rebuild to its end */
	ck_assert_int_eq(th_sh(out, sizeof out,
			       "'%s' projection rebuild --wait streams --data '%s' 2>&1 >/dev/null",
			       TIDE_BIN, data),
			 0);
	ck_assert_msg(strstr(out, "'streams' is rebuilt and live at seq 3000"), "%s", out);
	ck_assert(!proj_info(data, "streams").building);
	check_all_ways(data, d.rep, m1);
	/* unknown names and bad requests */
	ck_assert_int_eq(th_sh(out, sizeof out,
			       "'%s' projection rebuild nope --data '%s' 2>&1 >/dev/null", TIDE_BIN,
			       data),
			 1);
	ck_assert_msg(strstr(out, "no projection named 'nope' is defined"), "%s", out);
	ck_assert_int_gt(th_req(d.rep, "{\"command\":\"projection\",\"op\":\"rebuild\"}", out,
				sizeof out, 5000),
			 0);
	ck_assert_str_eq(out, "{\"ok\":false,\"error\":\"projection: give its \\\"name\\\"\"}");
	ck_assert_int_gt(
		th_req(d.rep, "{\"command\":\"projection\",\"op\":\"drop\",\"name\":\"accounts\"}",
		       out, sizeof out, 5000),
		0);
	ck_assert_str_eq(
		out, "{\"ok\":false,\"error\":\"projection: \\\"op\\\" must be \\\"rebuild\\\"\"}");
	ck_assert_int_gt(th_req(d.rep, "{\"query\":\"nope\"}", out, sizeof out, 5000), 0);
	ck_assert_str_eq(out, "{\"ok\":false,\"error\":\"no projection named 'nope'\"}");
	ck_assert_int_gt(
		th_req(d.rep, "{\"query\":\"accounts\",\"key\":\"zz\"}", out, sizeof out, 5000), 0);
	ck_assert_str_eq(
		out, "{\"ok\":false,\"error\":\"no state for key 'zz' in projection 'accounts'\"}");
	/* offline: not while the engine runs */
	ck_assert_int_eq(tide_projection_rebuild(data, "accounts"), TIDE_EBUSY);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
	ck_assert_int_eq(tide_projection_rebuild(data, "nope"), TIDE_ENOTFOUND);
	ck_assert_msg(strstr(tide_errmsg(), "nope"), "%s", tide_errmsg());
	ck_assert_int_eq(th_sh(out, sizeof out,
			       "'%s' projection rebuild nope --data '%s' 2>&1 >/dev/null", TIDE_BIN,
			       data),
			 1);
	ck_assert_int_eq(tide_projection_rebuild(data, "accounts"), TIDE_OK);
	ck_assert_int_eq(th_sh(out, sizeof out,
			       "'%s' projection rebuild streams --data '%s' 2>&1 >/dev/null",
			       TIDE_BIN, data),
			 0);
	ck_assert_msg(strstr(out, "'streams' will be rebuilt when the engine next runs"), "%s",
		      out);
	/* the old state is served until the engine has rebuilt it */
	check_all_ways(data, NULL, m1);
	bank_start(&d, dir, data, script);
	ck_assert(th_wait_file(d.log, "projection 'accounts': building from the log", 10000));
	{
		int64_t deadline = th_ms() + 20000;
		do {
			gen3 = wait_one_gen(data, "accounts", &keys, 10000);
			if (gen3 > gen2 && !proj_info(data, "accounts").building)
				break;
			th_pause();
		} while (th_ms() < deadline);
		ck_assert_uint_gt(gen3, gen2);
	}
	wait_live(data, "accounts", NEVENTS, 20000);
	wait_live(data, "streams", NEVENTS, 20000);
	check_all_ways(data, d.rep, m1);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
	free(m1);
	free(h);
}
END_TEST

/* A projection defined when the log already has events builds from the
 * first one; until its first build is done it has no state to serve. */
START_TEST(new_projection_builds_from_the_beginning)
{
	const char *dir = th_tmpdir(), *data = subdir(dir, "data");
	gev *h = bank_history(11, NEVENTS);
	model *m = malloc(sizeof *m);
	int seen_unserved = 0, rc;
	th_daemon d;

	ck_assert_ptr_nonnull(m);
	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s'", data), 0);
	bank_publish(d.rep, h, 0, NEVENTS, 500);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
	ck_assert_int_eq(tide_projection_rebuild(data, "accounts"), TIDE_ENOTFOUND);
	bank_start(&d, dir, data, bank_script(dir, 1, 10000, 1));
	for (;;) {
		pinfo pi = proj_info(data, "accounts");
		if (pi.found && !pi.building)
			break;
		if (pi.found && pi.building && !pi.serving) {
			char *got = query_api(data, "accounts", "1", NULL, 0, &rc);
			if (proj_info(data, "accounts").building) {
				ck_assert_int_eq(rc, TIDE_ESTATE);
				seen_unserved++;
			}
			free(got);
		}
		th_pause();
	}
	ck_assert_int_gt(seen_unserved, 0);
	wait_live(data, "accounts", NEVENTS, 20000);
	wait_live(data, "streams", NEVENTS, 20000);
	model_at(m, 1, h, NEVENTS);
	check_all_ways(data, d.rep, m);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
	free(m);
	free(h);
}
END_TEST

static const char count_lua[] =
	"local tide = require 'tide'\n"
	"tide.projection('count', {\n"
	"  on = { ['*'] = function(s, ev) s.n = (s.n or 0) + 1; s.v = ev.version end },\n"
	"})\n";

/* Asking an unknown projection for a key says the projection is unknown,
 * not that the key has no state. */
START_TEST(query_unknown_projection_with_a_key)
{
	const char *dir = th_tmpdir(), *data = subdir(dir, "data");
	char out[4096];
	th_daemon d;

	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s' --script '%s'", data,
					 th_write(dir, "count.lua", count_lua)),
			 0);
	ck_assert_int_gt(th_req(d.rep,
				"{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/t\","
				"\"type\":\"t\",\"subject\":\"s\"}",
				out, sizeof out, 5000),
			 0);
	wait_live(data, "count", 1, 10000);
	ck_assert_int_eq(
		th_sh(out, sizeof out, "'%s' query nope s --data '%s' 2>&1", TIDE_BIN, data), 1);
	ck_assert_msg(strstr(out, "no projection named 'nope'"), "tide query: %s", out);
	ck_assert_int_gt(th_req(d.rep, "{\"query\":\"nope\",\"key\":\"s\"}", out, sizeof out, 5000),
			 0);
	ck_assert_str_eq(out, "{\"ok\":false,\"error\":\"no projection named 'nope'\"}");
	ck_assert_int_eq(th_daemon_stop(&d), 0);
}
END_TEST

/* ------------------------------------------------------------------------
 * 5. A failing handler stops its projection
 * ------------------------------------------------------------------------ */

static const char tally_lua[] =
	"local tide = require 'tide'\n"
	"local BOOM = %s\n"
	"tide.projection('tally', {\n"
	"  on = { ['t.add'] = function(s, ev)\n"
	"    if BOOM and ev.data.boom then error('boom at ' .. ev.seq) end\n"
	"    s.n = (s.n or 0) + 1; s.sum = (s.sum or 0) + ev.data.i end },\n"
	"})\n"
	"tide.projection('badkey', {\n"
	"  key = function(ev) if ev.data.bad then return {} end return ev.subject end,\n"
	"  on = { ['k.*'] = function(s, ev) s.n = (s.n or 0) + 1 end },\n"
	"})\n"
	"tide.projection('badinit', {\n"
	"  init = function(key) if key == 'bad' then return 5 end return { n = 0 } end,\n"
	"  on = { ['i.*'] = function(s, ev) s.n = s.n + 1 end },\n"
	"})\n"
	"tide.projection('badret', {\n"
	"  on = { ['r.*'] = function(s, ev) if ev.data.bad then return 42 end end },\n"
	"})\n";

/* The log of the daemon send_one() talks to, shown when it does not answer. */
static const char *send_log;

/* Send one event; its seq. */
static uint64_t
send_one(const char *rep, const char *type, const char *subject, const char *data, int id)
{
	char msg[1024], reply[1024], tail[4096] = "";
	uint64_t seq;

	snprintf(msg, sizeof msg,
		 "{\"specversion\":\"1.0\",\"id\":\"x-%d\",\"source\":\"/t\",\"type\":\"%s\","
		 "\"subject\":\"%s\",\"data\":%s}",
		 id, type, subject, data);
	if (th_req(rep, msg, reply, sizeof reply, 10000) <= 0) {
		if (send_log != NULL)
			th_sh(tail, sizeof tail, "tail -c 3000 '%s'", send_log);
		ck_abort_msg("no reply to %s within 10 s; daemon log:\n%s", msg, tail);
	}
	ck_assert_msg(th_ack_parse(reply, &seq) == TH_ACK_STORED, "%s -> %s", msg, reply);
	return seq;
}

/* The tally of events 1..upto (event i: subject k<i%%3>, i, boom at 11). */
static char *
tally_dump(int upto)
{
	long n[3] = { 0 }, sum[3] = { 0 };
	sbuf b = { 0 };

	for (int i = 1; i <= upto; i++)
		n[i % 3]++, sum[i % 3] += i;
	sb_printf(&b, "%s", "");
	for (int k = 0; k < 3; k++)
		if (n[k])
			sb_printf(&b, "k%d\t{\"n\":%ld,\"sum\":%ld}\n", k, n[k], sum[k]);
	return sb_take(&b);
}

START_TEST(failing_handler_stops_the_projection)
{
	const char *dir = th_tmpdir(), *data = subdir(dir, "data");
	char script_text[sizeof tally_lua + 16], out[8192], *got, *want, subj[8], d10[64];
	const char *script;
	pinfo pi;
	yajl_val v;
	int rc;
	th_daemon d;

	snprintf(script_text, sizeof script_text, tally_lua, "true");
	script = th_write(dir, "tally.lua", script_text);
	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s' --script '%s'", data, script), 0);
	send_log = d.log;
	for (int i = 1; i <= 10; i++) {
		snprintf(subj, sizeof subj, "k%d", i % 3);
		snprintf(d10, sizeof d10, "{\"i\":%d}", i);
		ck_assert_uint_eq(send_one(d.rep, "t.add", subj, d10, i), (uint64_t)i);
	}
	wait_live(data, "tally", 10, 10000);
	want = tally_dump(10);
	got = query_api(data, "tally", NULL, NULL, 0, &rc);
	same_dump(got, want, "before the failure");
	free(got);
	/* event 11 fails; 12..14 come after it */
	ck_assert_uint_eq(send_one(d.rep, "t.add", "k2", "{\"i\":11,\"boom\":true}", 11), 11);
	for (int i = 12; i <= 14; i++) {
		snprintf(subj, sizeof subj, "k%d", i % 3);
		snprintf(d10, sizeof d10, "{\"i\":%d}", i);
		send_one(d.rep, "t.add", subj, d10, i);
	}
	pi = wait_faulted(data, "tally", 10000);
	ck_assert_uint_eq(pi.fault_seq, 11);
	ck_assert_uint_eq(pi.live_seq, 10);
	ck_assert_msg(strstr(pi.error, "boom at 11"), "%s", pi.error);
	/* what came before stays queryable, and nothing after it is in */
	got = query_api(data, "tally", NULL, NULL, 0, &rc);
	ck_assert_int_eq(rc, TIDE_OK);
	same_dump(got, want, "after the failure");
	free(got);
	got = query_rep_many(d.rep, "tally", NULL, 0);
	same_dump(got, want, "REP after the failure");
	free(got);
	ck_assert(th_wait_file(d.log, "projection 'tally' stopped at event 11", 5000));
	/* tide stat and tide projection list say so */
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' stat --json --data '%s'", TIDE_BIN, data), 0);
	ck_assert_msg(strstr(out, "{\"name\":\"tally\",\"status\":\"stopped\",\"seq\":10,\"lag\":4,"
				  "\"stopped_at\":11,\"error\":\"") &&
			      strstr(out, "boom at 11"),
		      "%s", out);
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' stat --data '%s'", TIDE_BIN, data), 0);
	ck_assert_msg(strstr(out, "stopped at 11: ") && strstr(out, "boom at 11"), "%s", out);
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' projection list --data '%s'", TIDE_BIN, data),
			 0);
	ck_assert_int_eq(th_count(out, "\n"), 4);
	v = parse(strstr(out, "{\"name\":\"tally\""));
	ck_assert_str_eq(YAJL_GET_STRING(get(v, "status")), "stopped");
	ck_assert_int_eq(YAJL_GET_INTEGER(get(v, "seq")), 10);
	ck_assert_int_eq(YAJL_GET_INTEGER(get(v, "stopped_at")), 11);
	{
		yajl_val e = get(v, "error");
		const char *es = YAJL_IS_STRING(e) ? YAJL_GET_STRING(e) : NULL;
		ck_assert_msg(strstr(es ? es : "", "boom at 11"), "%s", out);
	}
	yajl_tree_free(v);
	/* the other projection of the script is not affected */
	pi = proj_info(data, "badkey");
	ck_assert(!pi.faulted);

	/* a key that is a table stops "badkey" only */
	ck_assert_uint_eq(send_one(d.rep, "k.x", "a", "{}", 15), 15);
	ck_assert_uint_eq(send_one(d.rep, "k.x", "a", "{\"bad\":true}", 16), 16);
	pi = wait_faulted(data, "badkey", 10000);
	ck_assert_uint_eq(pi.fault_seq, 16);
	ck_assert_uint_eq(pi.live_seq, 15);
	ck_assert_msg(strstr(pi.error, "key must return a string or a number, not a table"), "%s",
		      pi.error);
	got = query_api(data, "badkey", "a", NULL, 0, &rc);
	ck_assert_int_eq(rc, TIDE_OK);
	ck_assert_str_eq(got, "a\t{\"n\":1}\n");
	free(got);
	/* init must give a table, a handler a table, tide.delete or nothing */
	ck_assert_uint_eq(send_one(d.rep, "i.x", "good", "{}", 17), 17);
	ck_assert_uint_eq(send_one(d.rep, "i.x", "bad", "{}", 18), 18);
	pi = wait_faulted(data, "badinit", 10000);
	ck_assert_uint_eq(pi.fault_seq, 18);
	ck_assert_msg(strstr(pi.error, "init must return a table, not a number"), "%s", pi.error);
	got = query_api(data, "badinit", NULL, NULL, 0, &rc);
	ck_assert_str_eq(got, "good\t{\"n\":1}\n");
	free(got);
	ck_assert_uint_eq(send_one(d.rep, "r.x", "q", "{\"bad\":true}", 19), 19);
	pi = wait_faulted(data, "badret", 10000);
	ck_assert_uint_eq(pi.fault_seq, 19);
	ck_assert_msg(strstr(pi.error, "a handler must return a table, tide.delete or nothing, "
				       "not a number"),
		      "%s", pi.error);
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' projection list --data '%s'", TIDE_BIN, data),
			 0);
	ck_assert_int_eq(th_count(out, "\"status\":\"stopped\""), 4);

	/* a forced rebuild of the unchanged script stops at the same event
	 * (--wait says so), and the old state is served meanwhile */
	ck_assert_int_eq(th_sh(out, sizeof out,
			       "'%s' projection rebuild tally --wait --data '%s' 2>&1 >/dev/null",
			       TIDE_BIN, data),
			 1);
	ck_assert_msg(strstr(out, "'tally' stopped at event 11: ") && strstr(out, "boom at 11"),
		      "%s", out);
	{
		int64_t deadline = th_ms() + 10000;
		do {
			pi = proj_info(data, "tally");
			if (pi.faulted && pi.building)
				break;
			th_pause();
		} while (th_ms() < deadline);
	}
	ck_assert(pi.faulted && pi.building);
	ck_assert_uint_eq(pi.fault_seq, 11);
	got = query_api(data, "tally", NULL, NULL, 0, &rc);
	same_dump(got, want, "old state, while the rebuild is stopped");
	free(got);
	free(want);
	ck_assert_int_eq(th_daemon_stop(&d), 0);

	/* fixing the script rebuilds both; everything is in */
	snprintf(script_text, sizeof script_text, tally_lua, "false");
	th_write(dir, "tally.lua", script_text);
	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s' --script '%s'", data, script), 0);
	wait_live(data, "tally", 19, 10000);
	want = tally_dump(14);
	got = query_api(data, "tally", NULL, NULL, 0, &rc);
	same_dump(got, want, "after the fix");
	free(got);
	free(want);
	/* badkey is still broken (the fix did not touch its key): stopped at 16 again */
	pi = wait_faulted(data, "badkey", 10000);
	ck_assert_uint_eq(pi.fault_seq, 16);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
}
END_TEST

/* ------------------------------------------------------------------------
 * 6. The encoding of states
 * ------------------------------------------------------------------------ */

static const char enc_lua[] =
	"local tide = require 'tide'\n"
	"tide.projection('enc', {\n"
	"  on = {\n"
	"    ['enc.set'] = function(s, ev)\n"
	"      return { v = { 0, ev.data.big, math.maxinteger, math.mininteger, 0.1, 0.1 + 0.2,\n"
	"        2.0, 1e300, -0.0, 1.5e-7, true, false, tide.null, 'h\\u{e9}\"\\\\\\n\\t',\n"
	"        tide.array({}), {}, { a = { b = { 1, { 2, tide.array({}) } } } },\n"
	"        { tide.array({}) }, ev.data.nested } }\n"
	"    end,\n"
	"    ['enc.bump'] = function(s, ev) s.v[1] = s.v[1] + 1 end,\n"
	"  },\n"
	"})\n"
	"tide.projection('encfn', {\n"
	"  on = { ['fn.*'] = function(s, ev)\n"
	"    s.n = (s.n or 0) + 1\n"
	"    if ev.type == 'fn.bad' then s.f = function() end end end },\n"
	"})\n"
	"tide.projection('encnan', {\n"
	"  on = { ['nan.*'] = function(s, ev)\n"
	"    s.n = (s.n or 0) + 1\n"
	"    if ev.type == 'nan.bad' then s.x = 0/0 end end },\n"
	"})\n";

static const char enc_want[] =
	"{\"v\":[%d,9007199254740993,9223372036854775807,-9223372036854775808,0.1,"
	"0.30000000000000004,2.0,1e+300,-0.0,1.5e-07,true,false,null,\"h\xc3\xa9\\\"\\\\\\n\\t\","
	"[],{},{\"a\":{\"b\":[1,[2,[]]]}},[[]],{\"x\":[1.0,[],{},\"s\",-12345678901234567]}]}";

/* The text of one key's state, exactly as `tide query` prints it. */
static void
check_text(const char *data, const char *name, const char *key, const char *state)
{
	char out[8192], want[8192];

	ck_assert_int_eq(
		th_sh(out, sizeof out, "'%s' query --data '%s' %s %s", TIDE_BIN, data, name, key),
		0);
	snprintf(want, sizeof want, "{\"key\":\"%s\",\"state\":%s}\n", key, state);
	ck_assert_str_eq(out, want);
}

START_TEST(state_encoding_keeps_values)
{
	const char *dir = th_tmpdir(), *data = subdir(dir, "data");
	const char *script = th_write(dir, "enc.lua", enc_lua);
	char want[2048], out[8192];
	th_daemon d;

	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s' --script '%s'", data, script), 0);
	send_one(d.rep, "enc.set", "r",
		 "{\"big\":9007199254740993,\"nested\":{\"x\":[1.0,[],{},\"s\","
		 "-12345678901234567]}}",
		 1);
	wait_live(data, "enc", 1, 10000);
	snprintf(want, sizeof want, enc_want, 0);
	check_text(data, "enc", "r", want);
	ck_assert_int_eq(th_daemon_stop(&d), 0);

	/* across a restart, and through Lua again (decoded, changed, encoded) */
	check_text(data, "enc", "r", want);
	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s' --script '%s'", data, script), 0);
	send_one(d.rep, "enc.bump", "r", "{}", 2);
	send_one(d.rep, "enc.bump", "r", "{}", 3);
	wait_live(data, "enc", 3, 10000);
	snprintf(want, sizeof want, enc_want, 2);
	check_text(data, "enc", "r", want);
	ck_assert_int_gt(th_req(d.rep, "{\"query\":\"enc\",\"key\":\"r\"}", out, sizeof out, 5000),
			 0);
	{
		char line[4096];
		snprintf(line, sizeof line, "{\"ok\":true,\"key\":\"r\",\"state\":%s}", want);
		ck_assert_str_eq(out, line);
	}

	ck_assert_int_eq(th_daemon_stop(&d), 0);
}
END_TEST

/* A state holding a function or a NaN cannot be stored: the projection
 * stops at that event, and says so at once (no later event needed). */
START_TEST(unencodable_state_stops_at_once)
{
	const char *dir = th_tmpdir(), *data = subdir(dir, "data");
	const char *script = th_write(dir, "enc.lua", enc_lua);
	pinfo pi;
	th_daemon d;

	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s' --script '%s'", data, script), 0);
	ck_assert_uint_eq(send_one(d.rep, "fn.ok", "f", "{}", 1), 1);
	wait_live(data, "encfn", 1, 10000);
	ck_assert_uint_eq(send_one(d.rep, "fn.bad", "f", "{}", 2), 2);
	pi = wait_faulted(data, "encfn", 5000);
	ck_assert_uint_eq(pi.fault_seq, 2);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
}
END_TEST

/* The same, with a later event to carry the stop through: the error
 * names the key and the reason, the state before the event is intact and
 * the position shown is the last event applied. */
START_TEST(unencodable_state_keeps_the_position)
{
	const char *dir = th_tmpdir(), *data = subdir(dir, "data");
	const char *script = th_write(dir, "enc.lua", enc_lua);
	pinfo pi;
	int rc;
	char *got;
	th_daemon d;

	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s' --script '%s'", data, script), 0);
	ck_assert_uint_eq(send_one(d.rep, "fn.ok", "f", "{}", 1), 1);
	ck_assert_uint_eq(send_one(d.rep, "nan.ok", "n", "{}", 2), 2);
	ck_assert_uint_eq(send_one(d.rep, "fn.bad", "f", "{}", 3), 3);
	ck_assert_uint_eq(send_one(d.rep, "nan.bad", "n", "{}", 4), 4);
	ck_assert_uint_eq(send_one(d.rep, "other", "o", "{}", 5), 5);
	pi = wait_faulted(data, "encfn", 10000);
	ck_assert_msg(strstr(pi.error, "state of key 'f' cannot be stored") &&
			      strstr(pi.error, "function"),
		      "%s", pi.error);
	ck_assert_uint_eq(pi.fault_seq, 3);
	got = query_api(data, "encfn", "f", NULL, 0, &rc);
	ck_assert_int_eq(rc, TIDE_OK);
	ck_assert_str_eq(got, "f\t{\"n\":1}\n");
	free(got);
	pi = wait_faulted(data, "encnan", 10000);
	ck_assert_msg(strstr(pi.error, "state of key 'n' cannot be stored") &&
			      strstr(pi.error, "NaN"),
		      "%s", pi.error);
	ck_assert_uint_eq(pi.fault_seq, 4);
	got = query_api(data, "encnan", "n", NULL, 0, &rc);
	ck_assert_int_eq(rc, TIDE_OK);
	ck_assert_str_eq(got, "n\t{\"n\":1}\n");
	free(got);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
	/* stopped for good, at the event before the bad one */
	pi = proj_info(data, "encfn");
	ck_assert(pi.faulted);
	ck_assert_uint_eq(pi.fault_seq, 3);
	ck_assert_msg(pi.live_seq == 2, "encfn shows position %llu after stopping at 3",
		      LLU(pi.live_seq));
	pi = proj_info(data, "encnan");
	ck_assert_msg(pi.live_seq == 3, "encnan shows position %llu after stopping at 4",
		      LLU(pi.live_seq));
}
END_TEST

/* An unencodable state among many keys touched in one turn: the stop
 * keeps all of the turn's other states or none of them, never some. */
START_TEST(unencodable_state_is_not_half_applied)
{
	const char *dir = th_tmpdir(), *data = subdir(dir, "data");
	const char *script = th_write(dir, "enc.lua", enc_lua);
	enum { KEYS = 200 };
	char msg[256];
	sbuf b = { 0 };
	int rc;
	char *got, reply[65536];
	pinfo pi;
	th_daemon d;

	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s' --script '%s'", data, script), 0);
	ck_assert_uint_eq(send_one(d.rep, "fn.ok", "k0", "{}", 0), 1);
	wait_live(data, "encfn", 1, 10000);
	/* one message, so one turn: k1..k199 fine, then k0 gets a function */
	for (int k = 1; k <= KEYS; k++) {
		snprintf(msg, sizeof msg,
			 "{\"specversion\":\"1.0\",\"id\":\"m-%d\",\"source\":\"/t\","
			 "\"type\":\"%s\",\"subject\":\"k%d\"}\n",
			 k, k < KEYS ? "fn.ok" : "fn.bad", k < KEYS ? k : 0);
		sb_printf(&b, "%s", msg);
	}
	ck_assert_int_gt(th_req(d.rep, b.p, reply, sizeof reply, 10000), 0);
	ck_assert_int_eq(th_count(reply, "\"ok\":true"), KEYS);
	free(b.p);
	send_one(d.rep, "other", "o", "{}", 9999);
	pi = wait_faulted(data, "encfn", 10000);
	ck_assert_uint_eq(pi.fault_seq, KEYS + 1);
	got = query_api(data, "encfn", NULL, NULL, 0, &rc);
	ck_assert_int_eq(rc, TIDE_OK);
	/* k0 as before the turn, and of k1..k199 all or nothing */
	ck_assert_msg(strncmp(got, "k0\t{\"n\":1}\n", 11) == 0, "%.200s", got);
	ck_assert_msg(th_count(got, "\n") == 1 || th_count(got, "\n") == KEYS,
		      "%ld of the %d keys the failed turn touched were written",
		      th_count(got, "\n") - 1, KEYS - 1);
	free(got);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
}
END_TEST

/* ------------------------------------------------------------------------
 * 7. Optimistic concurrency: expectedversion
 * ------------------------------------------------------------------------ */

static char *
xv_event(const char *id, const char *subject, long expect)
{
	sbuf b = { 0 };

	sb_printf(
		&b,
		"{\"specversion\":\"1.0\",\"id\":\"%s\",\"source\":\"/w\",\"type\":\"acct.moved\"",
		id);
	if (subject)
		sb_printf(&b, ",\"subject\":\"%s\"", subject);
	sb_printf(&b, ",\"expectedversion\":%ld}", expect);
	return sb_take(&b);
}

static void
expect_conflict(const char *reply, const char *stream, long at, long expected)
{
	char want[512];

	snprintf(want, sizeof want,
		 "{\"ok\":false,\"error\":\"version conflict: stream '%s' is at version %ld, not "
		 "%ld\",\"conflict\":true,\"version\":%ld}",
		 stream, at, expected, at);
	ck_assert_str_eq(reply, want);
}

START_TEST(expected_version_races)
{
	const char *dir = th_tmpdir(), *data = subdir(dir, "data");
	const char *script = th_write(dir, "count.lua", count_lua);
	enum { ROUNDS = 40 };
	char reply[4096], id[64], *msg, *msgs[2], *replies[2];
	char winners[ROUNDS][16], losers[ROUNDS][16];
	uint64_t seq, dup_seq = 0;
	th_rec *recs;
	long n, in_s2 = 0;
	th_daemon d;

	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s' --script '%s'", data, script), 0);
	/* a new stream is at version 0 */
	msg = xv_event("a1", "s1", 0);
	ck_assert_int_gt(th_req(d.rep, msg, reply, sizeof reply, 5000), 0);
	ck_assert_str_eq(reply, "{\"ok\":true,\"seq\":1}");
	free(msg);
	msg = xv_event("a2", "s1", 0);
	ck_assert_int_gt(th_req(d.rep, msg, reply, sizeof reply, 5000), 0);
	expect_conflict(reply, "s1", 1, 0);
	free(msg);
	msg = xv_event("a2", "s1", 5);
	ck_assert_int_gt(th_req(d.rep, msg, reply, sizeof reply, 5000), 0);
	expect_conflict(reply, "s1", 1, 5);
	free(msg);
	/* the refused event left no trace: the same id is stored later */
	msg = xv_event("a2", "s1", 1);
	ck_assert_int_gt(th_req(d.rep, msg, reply, sizeof reply, 5000), 0);
	ck_assert_str_eq(reply, "{\"ok\":true,\"seq\":2}");
	free(msg);
	/* a repeat of a stored event is a duplicate, whatever it expects */
	msg = xv_event("a1", "s1", 0);
	ck_assert_int_gt(th_req(d.rep, msg, reply, sizeof reply, 5000), 0);
	ck_assert_str_eq(reply, "{\"ok\":true,\"duplicate\":true,\"seq\":1}");
	free(msg);
	/* an expectation needs a subject and a version */
	msg = xv_event("a3", NULL, 0);
	ck_assert_int_gt(th_req(d.rep, msg, reply, sizeof reply, 5000), 0);
	ck_assert_msg(strstr(reply, "\"ok\":false") && strstr(reply, "needs a subject"), "%s",
		      reply);
	free(msg);
	msg = xv_event("a4", "s1", -1);
	ck_assert_int_gt(th_req(d.rep, msg, reply, sizeof reply, 5000), 0);
	ck_assert_msg(strstr(reply, "\"ok\":false") && strstr(reply, "must be a version"), "%s",
		      reply);
	free(msg);
	/* in one message: the second of two with the same expectation loses,
	 * the rest of the message goes on */
	{
		char *a = xv_event("b1", "s3", 0), *b = xv_event("b2", "s3", 0),
		     *c = xv_event("b3", "s3", 1);
		sbuf m = { 0 };
		sb_printf(&m, "%s\n%s\n%s\n", a, b, c);
		ck_assert_int_gt(th_req(d.rep, m.p, reply, sizeof reply, 5000), 0);
		ck_assert_msg(strncmp(reply, "{\"ok\":true,\"seq\":3}\n{\"ok\":false,", 31) == 0,
			      "%s", reply);
		ck_assert_msg(
			strstr(reply, "\"conflict\":true,\"version\":1}\n{\"ok\":true,\"seq\":4}"),
			"%s", reply);
		free(a), free(b), free(c), free(m.p);
	}

	/* two writers race on s2, each round with the same expectation */
	for (int r = 0; r < ROUNDS; r++) {
		int won[2];
		snprintf(id, sizeof id, "w%d-a", r);
		msgs[0] = xv_event(id, "s2", r);
		snprintf(id, sizeof id, "w%d-b", r);
		msgs[1] = xv_event(id, "s2", r);
		ck_assert_uint_eq(th_req_many(d.rep, msgs, 2, replies, 2, 10000), 2);
		for (int k = 0; k < 2; k++)
			won[k] = th_ack_parse(replies[k], &seq) == TH_ACK_STORED;
		ck_assert_msg(won[0] + won[1] == 1, "round %d: %s | %s", r, replies[0], replies[1]);
		expect_conflict(replies[won[0] ? 1 : 0], "s2", r + 1, r);
		snprintf(winners[r], sizeof winners[r], "w%d-%c", r, won[0] ? 'a' : 'b');
		snprintf(losers[r], sizeof losers[r], "w%d-%c", r, won[0] ? 'b' : 'a');
		for (int k = 0; k < 2; k++)
			free(msgs[k]), free(replies[k]);
	}
	/* the winner of round 0 sent again: a duplicate, not a conflict */
	msg = xv_event(winners[0], "s2", 0);
	ck_assert_int_gt(th_req(d.rep, msg, reply, sizeof reply, 5000), 0);
	ck_assert_int_eq(th_ack_parse(reply, &dup_seq), TH_ACK_DUPLICATE);
	free(msg);

	/* tide publish --expect-version: two at once, one wins */
	for (int r = 0; r < 3; r++) {
		pid_t p[2];
		int st[2];
		char out[2][600], *text[2];
		for (int k = 0; k < 2; k++) {
			snprintf(out[k], sizeof out[k], "%s/pub-%d-%d", dir, r, k);
			p[k] = th_bg(
				out[k],
				"'%s' publish --acks --data '%s' --type acct.moved --subject s4 "
				"--id c%d-%d --expect-version %d",
				TIDE_BIN, data, r, k, r);
		}
		for (int k = 0; k < 2; k++) {
			st[k] = th_bg_wait(p[k], 20000);
			text[k] = th_slurp(out[k]);
			ck_assert_ptr_nonnull(text[k]);
		}
		ck_assert_msg((st[0] == 0 && st[1] == 1) || (st[0] == 1 && st[1] == 0),
			      "round %d: %d %s | %d %s", r, st[0], text[0], st[1], text[1]);
		{
			char want[128];
			snprintf(want, sizeof want, "\"conflict\":true,\"version\":%d}", r + 1);
			ck_assert_msg(strstr(text[st[0] == 0 ? 1 : 0], want), "%s",
				      text[st[0] == 0 ? 1 : 0]);
		}
		free(text[0]), free(text[1]);
	}

	/* the log holds the winners only, in order, versions 1..ROUNDS */
	n = th_log_read(data, &recs);
	ck_assert_int_gt(n, 0);
	for (long k = 0; k < n; k++) {
		if (recs[k].subject == NULL || strcmp(recs[k].subject, "s2") != 0)
			continue;
		ck_assert_int_lt(in_s2, ROUNDS);
		ck_assert_str_eq(recs[k].id, winners[in_s2]);
		ck_assert_uint_eq(recs[k].version, (uint64_t)in_s2 + 1);
		if (in_s2 == 0)
			ck_assert_uint_eq(recs[k].seq, dup_seq);
		in_s2++;
		for (int r = 0; r < ROUNDS; r++)
			ck_assert_str_ne(recs[k].id, losers[r]);
	}
	ck_assert_int_eq(in_s2, ROUNDS);
	th_recs_free(recs, n);
	/* a projection over the streams saw each stored event once */
	{
		sbuf b = { 0 };
		int rc;
		char *got;
		sb_printf(&b, "s1\t{\"n\":2,\"v\":2}\ns2\t{\"n\":%d,\"v\":%d}\n", ROUNDS, ROUNDS);
		sb_printf(&b, "s3\t{\"n\":2,\"v\":2}\ns4\t{\"n\":3,\"v\":3}\n");
		wait_live(data, "count", 4 + ROUNDS + 3, 10000);
		got = query_api(data, "count", NULL, NULL, 0, &rc);
		ck_assert_int_eq(rc, TIDE_OK);
		same_dump(got, b.p, "count");
		free(got);
		free(b.p);
	}
	ck_assert_int_eq(th_daemon_stop(&d), 0);
}
END_TEST

/* ------------------------------------------------------------------------
 * In process: load errors, tide_engine_query, TIDE_ECONFLICT
 * ------------------------------------------------------------------------ */

/* A build's threads load the scripts themselves; if what they load is not
 * what the engine loaded (the file changed on disk, or no longer defines
 * the projection), they stop with a word on it and write nothing. */
START_TEST(threads_refuse_another_definition)
{
	const char *dir = th_tmpdir();
	const char *script = th_write(dir, "p.lua",
				      "local tide = require 'tide'\n"
				      "tide.projection('p', { on = { x = function() end } })\n");
	const char *scripts[] = { script };
	const char *names[] = { "p", "q", "p" };
	const char *why[] = { "differs from the engine's", "differs from the engine's",
			      "a script changed on disk since the engine loaded it" };
	tidei_log_opts lo = { 0 };
	tidei_pbuild_env env;
	tidei_log *log;
	char err[TIDEI_ERRLEN];

	ck_assert_msg(tidei_log_open(&log, subdir(dir, "data"), &lo, err) == TIDE_OK, "%s", err);
	memset(&env, 0, sizeof env);
	env.ops = &tidei_pworker_ops;
	env.scripts = scripts;
	env.nscripts = 1;
	env.threads = 2;
	for (int k = 0; k < 3; k++) {
		tidei_pbuild_opts o;
		tidei_pbuild *b;
		uint64_t seq = 0;
		int64_t deadline = th_ms() + 10000;
		int r;
		memset(&o, 0, sizeof o);
		o.env = &env;
		o.log = log;
		o.name = names[k];
		o.hash = 12345; /* not the hash of p.lua's 'p' */
		/* the third time, the engine loaded another text of p.lua */
		env.scripts_hash = k == 2 ? tidei_pbuild_scripts_hash(&env) + 1 : 0;
		o.gen = 1;
		o.until = 10;
		o.threads = 2;
		ck_assert_int_eq(tidei_pbuild_start(&b, &o, err), TIDE_OK);
		while ((r = tidei_pbuild_poll(b, &seq)) == 0 && th_ms() < deadline)
			th_pause();
		ck_assert_int_eq(r, -1);
		ck_assert_msg(strstr(tidei_pbuild_error(b, &seq), why[k]), "%s",
			      tidei_pbuild_error(b, &seq));
		ck_assert_uint_eq(seq, 0);
		tidei_pbuild_destroy(b);
	}
	tidei_log_close(log);
}
END_TEST

/* ------------------------------------------------------------------------
 * Builds shared among threads: failures and opting out
 * ------------------------------------------------------------------------ */

#define TEVENTS 3000
#define TKEYS 97
#define TBOOM 2000 /* the event whose handler fails, when BOOM */
#define TSAY 500   /* the event whose handler prints */

static const char threads_lua[] =
	"local tide = require 'tide'\n"
	"local BOOM, SPIN = %s, %d\n"
	"local MUL = tide.param('t.mul', 1)\n"
	"tide.projection('sum', {\n"
	"  version = %d,\n"
	"  parallel = %s,\n"
	"  key = function(ev) return ev.data.k end,\n"
	"  on = { ['t.add'] = function(s, ev)\n"
	"    if BOOM and ev.data.boom then error('boom at ' .. ev.seq) end\n"
	"    if ev.data.say then print('said at ' .. ev.seq) end\n"
	"    local x = 0 for i = 1, SPIN do x = x + i %% 7 end\n"
	"    s.n = (s.n or 0) + 1; s.sum = (s.sum or 0) + MUL * ev.data.i end },\n"
	"})\n"
	"tide.projection('count', {\n" /* by subject; it builds beside 'sum' */
	"  on = { ['t.add'] = function(s, ev) s.n = (s.n or 0) + 1 end },\n"
	"})\n";

/* The expected dump of 'count' after events 1..@p upto. */
static char *
count_dump(int upto)
{
	sbuf b = { 0 };

	for (int k = 0; k < 7; k++)
		sb_printf(&b, "s%d\t{\"n\":%d}\n", k, upto / 7 + (k >= 1 && k <= upto % 7));
	return sb_take(&b);
}

/* Event @p i of threads.lua's projections, as a line of NDJSON. */
static void
threads_event(sbuf *b, int i)
{
	sb_printf(b,
		  "{\"specversion\":\"1.0\",\"id\":\"t-%d\",\"source\":\"/t\","
		  "\"type\":\"t.add\",\"subject\":\"s%d\",\"data\":{\"k\":\"k%02d\","
		  "\"i\":%d%s%s}}\n",
		  i, i % 7, i % TKEYS, i, i == TBOOM ? ",\"boom\":true" : "",
		  i == TSAY ? ",\"say\":true" : "");
}

/* Publish events @p from..@p to (a multiple of 100 of them) to @p rep. */
static void
threads_publish(const char *rep, int from, int to)
{
	int nmsg = (to - from + 1) / 100;
	char **msgs = calloc((size_t)nmsg, sizeof *msgs), **replies;

	ck_assert_ptr_nonnull(msgs);
	replies = calloc((size_t)nmsg, sizeof *replies);
	ck_assert_ptr_nonnull(replies);
	for (int m = 0; m < nmsg; m++) {
		sbuf b = { 0 };
		for (int i = from + m * 100; i < from + (m + 1) * 100; i++)
			threads_event(&b, i);
		msgs[m] = sb_take(&b);
	}
	ck_assert_uint_eq(th_req_many(rep, msgs, (size_t)nmsg, replies, 1, 60000), (size_t)nmsg);
	for (int m = 0; m < nmsg; m++) {
		ck_assert_msg(th_count(replies[m], "\n") >= 99, "%s", replies[m]);
		free(msgs[m]);
		free(replies[m]);
	}
	free(msgs);
	free(replies);
}

/* A log of events 1..TEVENTS in @p data, written by an engine without
 * scripts. */
static void
threads_log(const char *data)
{
	th_daemon d;

	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s'", data), 0);
	threads_publish(d.rep, 1, TEVENTS);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
}

/* The expected dump of 'sum' after events 1..@p upto. */
static char *
threads_dump_mul(int upto, long mul)
{
	long n[TKEYS] = { 0 }, sum[TKEYS] = { 0 };
	char *keys[TKEYS];
	sbuf b = { 0 };

	for (int i = 1; i <= upto; i++) {
		n[i % TKEYS]++;
		sum[i % TKEYS] += mul * i;
	}
	for (int k = 0; k < TKEYS; k++) {
		ck_assert_int_ne(asprintf(&keys[k], "k%02d", k), -1);
	}
	/* in key order: "k00" .. "k96" */
	for (int k = 0; k < TKEYS; k++)
		if (n[k] > 0)
			sb_printf(&b, "%s\t{\"n\":%ld,\"sum\":%ld}\n", keys[k], n[k], sum[k]);
	for (int k = 0; k < TKEYS; k++)
		free(keys[k]);
	sb_printf(&b, "%s", "");
	return sb_take(&b);
}

static char *
threads_dump(int upto)
{
	return threads_dump_mul(upto, 1);
}

/* Query projection @p name in @p data and compare it with @p want (freed). */
static void
query_is(const char *data, const char *name, char *want, const char *what)
{
	int rc;
	char *got = query_api(data, name, NULL, NULL, 0, &rc);

	ck_assert_int_eq(rc, TIDE_OK);
	same_dump(got, want, what);
	free(got);
	free(want);
}

/* Start a daemon on threads.lua as given; the log's length before it. */
static size_t
threads_start(th_daemon *d, const char *dir, const char *data, const char *boom, int spin,
	      int version, const char *parallel, int threads, const char *extra)
{
	char text[sizeof threads_lua + 64], *before;
	size_t at;

	snprintf(text, sizeof text, threads_lua, boom, spin, version, parallel);
	before = th_slurp(subdir(dir, "data.log"));
	at = before ? strlen(before) : 0;
	free(before);
	ck_assert_int_eq(th_daemon_spawn(d, data,
					 "--data '%s' --script '%s' --set build_threads=%d %s",
					 data, th_write(dir, "threads.lua", text), threads, extra),
			 0);
	return at;
}

/* What the daemon logged since @p at. */
static char *
log_since(const th_daemon *d, size_t at)
{
	char *all = th_slurp(d->log), *tail;

	ck_assert_ptr_nonnull(all);
	ck_assert_uint_ge(strlen(all), at);
	tail = strdup(all + at);
	free(all);
	return tail;
}

/* A build shared among threads ends as the same build on one thread
 * would: the same states, a handler's failure stops the projection at the
 * same event with the same error (the threads give up and the engine goes
 * on from their last checkpoint), and `parallel = false` keeps a build on
 * the engine's thread. */
START_TEST(threads_build_fail_and_opt_out)
{
	const char *dir = th_tmpdir(), *data = subdir(dir, "data");
	char *want, *got, *log;
	size_t at;
	pinfo pi;
	int rc;
	th_daemon d;

	/* the log first, with no script: every build below is from the log */
	threads_log(data);
	want = threads_dump(TEVENTS);

	/* 1. built by three threads: the states of the model; print relayed once */
	at = threads_start(&d, dir, data, "false", 0, 1, "true", 3, "");
	wait_live(data, "sum", TEVENTS, 30000);
	got = query_api(data, "sum", NULL, NULL, 0, &rc);
	ck_assert_int_eq(rc, TIDE_OK);
	same_dump(got, want, "built by three threads");
	free(got);
	/* a second projection builds at the same time, on the engine's thread:
	 * one shared build at a time */
	wait_live(data, "count", TEVENTS, 30000);
	got = query_api(data, "count", NULL, NULL, 0, &rc);
	ck_assert_int_eq(rc, TIDE_OK);
	log = count_dump(TEVENTS);
	same_dump(got, log, "built beside it");
	free(log);
	free(got);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
	log = log_since(&d, at);
	ck_assert_msg(strstr(log, "'sum': building events 1 to 3000 on 3 threads"), "%s", log);
	ck_assert_int_eq(th_count(log, " threads"), 1);
	ck_assert_int_eq(th_count(log, "said at 500"), 1);
	ck_assert_msg(!strstr(log, "threads stopped"), "%s", log);
	free(log);

	/* 2. a handler fails at TBOOM: stopped there, as on one thread, and the
	 * old state is still served */
	at = threads_start(&d, dir, data, "true", 0, 2, "true", 3, "");
	pi = wait_faulted(data, "sum", 30000);
	ck_assert_uint_eq(pi.fault_seq, TBOOM);
	ck_assert_msg(strstr(pi.error, "boom at 2000"), "%s", pi.error);
	got = query_api(data, "sum", NULL, NULL, 0, &rc);
	ck_assert_int_eq(rc, TIDE_OK);
	same_dump(got, want, "the old state while the new one is stopped");
	free(got);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
	log = log_since(&d, at);
	ck_assert_msg(strstr(log, "the build's threads stopped (event 2000: ") &&
			      strstr(log, "boom at 2000") && strstr(log, "in one thread"),
		      "%s", log);
	ck_assert_msg(strstr(log, "projection 'sum' stopped at event 2000"), "%s", log);
	free(log);

	/* 3. parallel = false: the build stays on the engine's thread */
	at = threads_start(&d, dir, data, "false", 0, 3, "false", 3, "");
	wait_live(data, "sum", TEVENTS, 30000);
	got = query_api(data, "sum", NULL, NULL, 0, &rc);
	same_dump(got, want, "built on one thread");
	free(got);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
	log = log_since(&d, at);
	ck_assert_msg(strstr(log, "projection 'sum' is built") &&
			      !strstr(log, "'sum': building events"),
		      "%s", log);
	free(log);
	free(want);
}
END_TEST

/* The log's map grows while a build's threads read it: they wait with no
 * read transaction open while it moves (reading a map that moves would
 * crash the engine), then go on where they were.  The engine opens the log
 * with a map far smaller than the data, so its first turns grow it while
 * the build runs, and more events arrive meanwhile. */
START_TEST(threads_survive_map_growth)
{
	const char *dir = th_tmpdir(), *data = subdir(dir, "data");
	char out[4096], *want, *got, *log;
	const char *ms;
	size_t at;
	int rc;
	th_daemon d;

	threads_log(data);
	at = threads_start(&d, dir, data, "false", 20000, 1, "true", 3, "--set map_size=64K");
	threads_publish(d.rep, TEVENTS + 1, 2 * TEVENTS);
	wait_live(data, "sum", 2 * TEVENTS, 60000);
	want = threads_dump(2 * TEVENTS);
	got = query_api(data, "sum", NULL, NULL, 0, &rc);
	ck_assert_int_eq(rc, TIDE_OK);
	same_dump(got, want, "built while the map grew");
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' stat --json --data '%s'", TIDE_BIN, data), 0);
	ck_assert_ptr_nonnull(ms = strstr(out, "\"map_size\":"));
	ck_assert_uint_ge(strtoull(ms + 11, NULL, 10), 32ull << 20);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
	log = log_since(&d, at);
	ck_assert_msg(strstr(log, "on 3 threads"), "%s", log);
	/* never started again from a checkpoint */
	ck_assert_int_eq(th_count(log, "'sum': building events"), 1);
	free(log);
	free(got);
	free(want);
}
END_TEST

/* Start `tide publish` of events @p from..@p to of threads.lua into
 * @p data (up to 1,000 per message, so that the engine's turns are busy). */
static pid_t
threads_publish_bg(const char *dir, const char *data, int from, int to)
{
	sbuf b = { 0 };
	const char *in;
	char out[700];
	pid_t pid;

	for (int i = from; i <= to; i++)
		threads_event(&b, i);
	in = th_write(dir, "live.ndjson", b.p);
	free(b.p);
	snprintf(out, sizeof out, "%s/publish.out", dir);
	pid = th_bg_io(in, out, out, "'%s' publish --data '%s'", TIDE_BIN, data);
	ck_assert_int_gt(pid, 0);
	return pid;
}

static void
threads_publish_file(const char *dir, const char *data, int from, int to)
{
	ck_assert_int_eq(th_bg_wait(threads_publish_bg(dir, data, from, to), 60000), 0);
}

/* A live projection under load goes to the build's threads, beside
 * ingest: they follow the log as it grows and end once they have caught
 * up.  The states are the model's, and a handler that fails there stops
 * the projection at the same event, with the same error, as on the
 * engine's thread. */
START_TEST(live_under_load_on_threads)
{
	enum { N = 8000 };
	const char *dir = th_tmpdir(), *dir2 = th_tmpdir();
	char data[600], data2[600], out[4096], *log;
	size_t at;
	pinfo pi;
	th_daemon d;

	snprintf(data, sizeof data, "%s/data", dir);
	snprintf(data2, sizeof data2, "%s/data", dir2);
	/* a parameter of the scripts reaches the threads' states too */
	at = threads_start(&d, dir, data, "false", 200, 1, "true", 3,
			   "-v --set turn_events=500 --http 127.0.0.1:0 --param t.mul=3");
	wait_live(data, "sum", 0, 30000);
	threads_publish_file(dir, data, 1, N);
	wait_live(data, "sum", N, 60000);
	query_is(data, "sum", threads_dump_mul(N, 3), "kept live by three threads");
	wait_live(data, "count", N, 30000);
	query_is(data, "count", count_dump(N), "kept live beside it");
	/* every live call is timed, on the threads too: the metrics count
	 * each event once (none was applied twice: no thread stopped) */
	ck_assert_int_eq(
		th_sh(out, sizeof out,
		      "curl -sf \"http://$(sed -n 's/^http=//p' '%s/endpoints')/metrics\" | "
		      "grep '^tide_projection_handler_seconds_count{projection=\"sum\"}'",
		      data),
		0);
	ck_assert_msg(strstr(out, "} 8000\n") != NULL, "%s", out);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
	log = log_since(&d, at);
	ck_assert_msg(strstr(log, "'sum': catching up with events"), "%s", log);
	ck_assert_msg(!strstr(log, "threads stopped"), "%s", log);
	ck_assert_int_eq(th_count(log, "said at 500"), 1);
	free(log);

	/* a handler fails at TBOOM: stopped there whichever thread met it */
	at = threads_start(&d, dir2, data2, "true", 200, 1, "true", 3, "-v --set turn_events=500");
	wait_live(data2, "sum", 0, 30000);
	threads_publish_file(dir2, data2, 1, N);
	pi = wait_faulted(data2, "sum", 30000);
	ck_assert_uint_eq(pi.fault_seq, TBOOM);
	ck_assert_msg(strstr(pi.error, "boom at 2000"), "%s", pi.error);
	wait_live(data2, "count", N, 30000);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
	log = log_since(&d, at);
	ck_assert_msg(strstr(log, "projection 'sum' stopped at event 2000"), "%s", log);
	free(log);
}
END_TEST

/* SIGKILL while the threads keep a live projection: what is stored is
 * exactly the state as of the stored position (the threads' states and
 * the position commit together), and a restart completes it. */
START_TEST(live_on_threads_survives_sigkill)
{
	enum { N = 30000 };
	const char *dir = th_tmpdir();
	char data[600], *log = NULL;
	uint64_t head = 0, last;
	int64_t deadline;
	pid_t pub;
	pinfo pi;
	th_daemon d;

	snprintf(data, sizeof data, "%s/data", dir);
	threads_start(&d, dir, data, "false", 200, 1, "true", 3, "-v --set turn_events=500");
	wait_live(data, "sum", 0, 30000);
	pub = threads_publish_bg(dir, data, 1, N);
	/* until the threads have written a checkpoint of the live projection */
	deadline = th_ms() + 60000;
	do {
		free(log);
		th_pause();
		log = th_slurp(d.log);
	} while ((!log || !strstr(log, "'sum': writing the states of its threads")) &&
		 th_ms() < deadline);
	ck_assert_msg(log && strstr(log, "'sum': catching up with events"), "%s", log);
	free(log);
	th_daemon_kill(&d);
	th_bg_wait(pub, 30000); /* it may fail: the engine is gone */
	ck_assert_int_eq(th_log_state(data, NULL, &head, &last, NULL), 0);
	pi = proj_info(data, "sum");
	ck_assert(pi.found && !pi.faulted);
	ck_assert_uint_gt(pi.live_seq, 0);
	ck_assert_uint_le(pi.live_seq, head);
	query_is(data, "sum", threads_dump((int)pi.live_seq), "stored when killed");
	threads_start(&d, dir, data, "false", 200, 1, "true", 3, "-v --set turn_events=500");
	wait_live(data, "sum", head, 60000);
	query_is(data, "sum", threads_dump((int)head), "after the restart");
	ck_assert_int_eq(th_daemon_stop(&d), 0);
}
END_TEST

typedef struct inproc {
	tide_engine *e;
	tide_config *cfg;
	int results;
	tide_result last[4];
	char errors[4][256];
} inproc;

static int
inproc_open(inproc *r, const char *dir, const char *script)
{
	char data[600];

	memset(r, 0, sizeof *r);
	snprintf(data, sizeof data, "%s/data", dir);
	ck_assert_int_eq(tide_config_new(&r->cfg), TIDE_OK);
	ck_assert_int_eq(tide_config_set(r->cfg, "data", data), TIDE_OK);
	ck_assert_int_eq(tide_config_set(r->cfg, "pull", ""), TIDE_OK);
	ck_assert_int_eq(tide_config_set(r->cfg, "rep", ""), TIDE_OK);
	ck_assert_int_eq(tide_config_set(r->cfg, "pub", ""), TIDE_OK);
	ck_assert_int_eq(tide_config_add_script(r->cfg, th_write(dir, "s.lua", script)), TIDE_OK);
	ck_assert_int_eq(tide_engine_new(&r->e, r->cfg), TIDE_OK);
	return tide_engine_open(r->e, NULL);
}

static void
inproc_close(inproc *r)
{
	tide_engine_destroy(r->e);
	tide_config_destroy(r->cfg);
}

static void
inproc_result(void *ud, const tide_result *res)
{
	inproc *r = ud;

	if (r->results < 4) {
		r->last[r->results] = *res;
		snprintf(r->errors[r->results], sizeof r->errors[0], "%s",
			 res->error ? res->error : "");
	}
	r->results++;
}

START_TEST(in_process_query_and_conflict)
{
	const char *dir = th_tmpdir();
	const char *two = "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/c\",\"type\":\"t\","
			  "\"subject\":\"s\",\"expectedversion\":0}\n"
			  "{\"specversion\":\"1.0\",\"id\":\"2\",\"source\":\"/c\",\"type\":\"t\","
			  "\"subject\":\"s\",\"expectedversion\":0}\n";
	int64_t deadline = th_ms() + 10000;
	sbuf b = { 0 };
	inproc r;

	ck_assert_int_eq(inproc_open(&r, dir, count_lua), TIDE_OK);
	ck_assert_int_eq(tide_publish(r.e, two, strlen(two), inproc_result, &r), TIDE_OK);
	while (r.results < 2 && th_ms() < deadline)
		event_base_loop(tide_engine_base(r.e), EVLOOP_ONCE);
	ck_assert_int_eq(r.results, 2);
	ck_assert_int_eq(r.last[0].code, TIDE_OK);
	ck_assert_uint_eq(r.last[0].seq, 1);
	ck_assert_uint_eq(r.last[0].version, 1);
	ck_assert_int_eq(r.last[1].code, TIDE_ECONFLICT);
	ck_assert_uint_eq(r.last[1].version, 1);
	ck_assert_str_eq(r.errors[1], "version conflict: stream 's' is at version 1, not 0");
	/* the projection ran in the same turn: the engine's thread reads it */
	ck_assert_int_eq(tide_engine_query(r.e, "count", "s", NULL, 0, collect_state, &b), TIDE_OK);
	ck_assert_str_eq(b.p, "s\t{\"n\":1,\"v\":1}\n");
	free(b.p);
	ck_assert_int_eq(tide_engine_query(r.e, "count", "nope", NULL, 0, collect_state, &b),
			 TIDE_ENOTFOUND);
	ck_assert_int_eq(tide_engine_query(r.e, "nope", NULL, NULL, 0, collect_state, &b),
			 TIDE_ENOTFOUND);
	inproc_close(&r);
}
END_TEST

static const char paths_lua[] =
	"local tide = require 'tide'\n"
	"local function count(s) s.n = (s.n or 0) + 1 end\n"
	"tide.projection('acct', { key = 'data.account', on = { ['*'] = count } })\n"
	"tide.projection('deep', { key = 'data.who.id', on = { ['*'] = count } })\n"
	"tide.projection('region', { key = 'region', on = { ['*'] = count } })\n"
	"tide.projection('bytype', { key = 'type', on = { ['*'] = count } })\n";

START_TEST(key_by_field_path)
{
	const char *dir = th_tmpdir();
	static const char *const evs[] = {
		"\"type\":\"t.x\",\"region\":\"eu\",\"data\":{\"account\":\"a1\",\"who\":{\"id\":7}"
		"}",
		"\"type\":\"t.y\",\"data\":{\"account\":42,\"who\":{\"id\":\"u2\"}}",
		"\"type\":\"t.x\",\"region\":\"us\",\"data\":{\"account\":1.5,\"who\":7}",
		"\"type\":\"t.x\",\"data\":{\"account\":null}",
		"\"type\":\"t.x\",\"data\":\"just text\"",
		"\"type\":\"t.x\",\"data\":{\"account\":{\"no\":1}}",
		"\"type\":\"t.x\",\"data\":{\"account\":\"a1\"}",
	};
	const size_t n = sizeof evs / sizeof evs[0];
	int64_t deadline = th_ms() + 10000;
	char out[4096];
	sbuf in = { 0 }, b = { 0 };
	inproc r;

	size_t split = 0;

	for (size_t i = 0; i < n; i++) {
		if (i == n - 2)
			split = in.len;
		sb_printf(&in, "{\"specversion\":\"1.0\",\"id\":\"%zu\",\"source\":\"/k\",%s}\n", i,
			  evs[i]);
	}
	ck_assert_int_eq(inproc_open(&r, dir, paths_lua), TIDE_OK);
	/* the good events first, so that the projections are live before
	 * "acct" stops (a first build that stops is never served) */
	ck_assert_int_eq(tide_publish(r.e, in.p, split, inproc_result, &r), TIDE_OK);
	while ((r.results < (int)n - 2 ||
		tide_engine_query(r.e, "acct", NULL, NULL, 0, NULL, NULL) == TIDE_ESTATE) &&
	       th_ms() < deadline)
		event_base_loop(tide_engine_base(r.e), EVLOOP_ONCE);
	ck_assert_int_eq(r.results, (int)n - 2);
	ck_assert_int_eq(tide_publish(r.e, in.p + split, in.len - split, inproc_result, &r),
			 TIDE_OK);
	while (r.results < (int)n && th_ms() < deadline)
		event_base_loop(tide_engine_base(r.e), EVLOOP_ONCE);
	ck_assert_int_eq(r.results, (int)n);
	for (int k = 0; k < 20; k++) /* a few more turns for the projections */
		event_base_loop(tide_engine_base(r.e), EVLOOP_NONBLOCK);
	/* strings and numbers are keys; a missing or null field skips the
	 * event; an object stops the projection before event 6 */
	ck_assert_int_eq(tide_engine_query(r.e, "acct", NULL, NULL, 0, collect_state, &b), TIDE_OK);
	ck_assert_str_eq(b.p, "1.5\t{\"n\":1}\n42\t{\"n\":1}\na1\t{\"n\":1}\n");
	b.len = 0;
	ck_assert_int_eq(tide_engine_query(r.e, "deep", NULL, NULL, 0, collect_state, &b), TIDE_OK);
	ck_assert_str_eq(b.p, "7\t{\"n\":1}\nu2\t{\"n\":1}\n");
	b.len = 0;
	ck_assert_int_eq(tide_engine_query(r.e, "region", NULL, NULL, 0, collect_state, &b),
			 TIDE_OK);
	ck_assert_str_eq(b.p, "eu\t{\"n\":1}\nus\t{\"n\":1}\n");
	b.len = 0;
	ck_assert_int_eq(tide_engine_query(r.e, "bytype", NULL, NULL, 0, collect_state, &b),
			 TIDE_OK);
	ck_assert_str_eq(b.p, "t.x\t{\"n\":6}\nt.y\t{\"n\":1}\n");
	free(b.p);
	free(in.p);
	inproc_close(&r);
	/* the stop names the field and what it held */
	ck_assert_int_eq(th_sh(out, sizeof out,
			       "'%s' replay -q --data '%s/data' --script '%s/s.lua' "
			       "--projection acct 2>&1",
			       TIDE_BIN, dir, dir),
			 1);
	ck_assert_msg(strstr(out, "key 'data.account' is an object, not a string or a number"),
		      "%s", out);
}
END_TEST

/* SIGHUP reloads the scripts between two turns: a changed projection is
 * rebuilt, a consumer goes on from its checkpoint (one child per input,
 * none twice), and a script that does not load leaves the running ones. */
static const char reload_lua[] =
	"local tide = require 'tide'\n"
	"tide.projection('tally', { version = %d,\n"
	"  on = { ['t.*'] = function(s, ev) s.n = (s.n or 0) + %d end } })\n"
	"tide.on('t.*', function(ev) tide.emit{ type = 'c.done', subject = ev.subject } end,\n"
	"  { name = 'child' })\n"
	"%s\n";

static void
reload_script(const char *dir, int version, int step, const char *extra)
{
	char text[sizeof reload_lua + 64];

	snprintf(text, sizeof text, reload_lua, version, step, extra);
	th_write(dir, "reload.lua", text);
}

/* Wait until the stored state of "tally" key "a" reads @p want. */
static void
wait_tally(const char *data, const char *want)
{
	int64_t deadline = th_ms() + 10000;
	char *got = NULL;
	int rc;

	do {
		free(got);
		got = query_api(data, "tally", "a", NULL, 0, &rc);
		if (rc == TIDE_OK && strcmp(got, want) == 0)
			break;
		th_pause();
	} while (th_ms() < deadline);
	ck_assert_str_eq(got, want);
	free(got);
}

START_TEST(sighup_reloads_scripts)
{
	const char *dir = th_tmpdir(), *data = subdir(dir, "data");
	th_rec *v;
	long n, children = 0;
	th_daemon d;

	reload_script(dir, 1, 1, "");
	ck_assert_int_eq(
		th_daemon_spawn(&d, data, "--data '%s' --script '%s/reload.lua'", data, dir), 0);
	send_log = d.log;
	for (int i = 1; i <= 3; i++)
		send_one(d.rep, "t.x", "a", "{}", i);
	wait_tally(data, "a\t{\"n\":3}\n");
	/* a new definition: rebuilt from the log, the old state served meanwhile */
	reload_script(dir, 2, 10, "");
	ck_assert_int_eq(kill(d.pid, SIGHUP), 0);
	ck_assert(th_wait_file(d.log, "scripts reloaded: 1 consumers, 1 projections", 10000));
	wait_tally(data, "a\t{\"n\":30}\n");
	send_one(d.rep, "t.x", "a", "{}", 4);
	wait_tally(data, "a\t{\"n\":40}\n");
	/* a script that does not load: the running ones stay */
	reload_script(dir, 3, 100, "this is not Lua (");
	ck_assert_int_eq(kill(d.pid, SIGHUP), 0);
	ck_assert(th_wait_file(d.log, "reload failed, the running scripts stay: ", 10000));
	send_one(d.rep, "t.x", "a", "{}", 5);
	wait_tally(data, "a\t{\"n\":50}\n");
	ck_assert_int_eq(th_daemon_stop(&d), 0);
	/* every input has exactly one child */
	n = th_log_read(data, &v);
	ck_assert_int_gt(n, 0);
	for (long i = 0; i < n; i++) {
		int kids = 0;
		if (strcmp(v[i].type, "t.x") != 0)
			continue;
		for (long j = 0; j < n; j++)
			kids += strcmp(v[j].type, "c.done") == 0 && v[j].causationid &&
				strcmp(v[j].causationid, v[i].id) == 0;
		ck_assert_msg(kids == 1, "event %s has %d children", v[i].id, kids);
		children += kids;
	}
	ck_assert_int_eq(children, 5);
	th_recs_free(v, n);
}
END_TEST

START_TEST(bad_definitions_fail_the_load)
{
	static const struct {
		const char *spec, *error;
	} cases[] = {
		{ "{ on = { x = function() end }, keys = 1 }", "unknown field 'keys'" },
		{ "{ on = { ['acct*'] = function() end } }",
		  "keyed by a type, \"prefix.*\" or \"*\"" },
		{ "{ on = { ['*.x'] = function() end } }",
		  "keyed by a type, \"prefix.*\" or \"*\"" },
		{ "{ on = { ['a.*.b'] = function() end } }",
		  "keyed by a type, \"prefix.*\" or \"*\"" },
		{ "{ on = { [''] = function() end } }", "keyed by a type, \"prefix.*\" or \"*\"" },
		{ "{ on = { x = 1 } }", "the handler for 'x' must be a function" },
		{ "{ on = {} }", "'on' has no handlers" },
		{ "{ }", "'on' must be a table" },
		{ "{ version = 1.5, on = { x = function() end } }",
		  "'version' must be an integer" },
		{ "{ key = true, on = { x = function() end } }",
		  "'key' must be a function or a field path such as \"data.account\"" },
		{ "{ key = 'data..a', on = { x = function() end } }",
		  "'key' path 'data..a' is not of the form" },
		{ "{ key = 'data.', on = { x = function() end } }", "is not of the form" },
		{ "{ key = '', on = { x = function() end } }", "is not of the form" },
		{ "{ key = 'subject.x', on = { x = function() end } }",
		  "'key' path 'subject.x': only data has fields" },
		{ "{ key = 'data', on = { x = function() end } }",
		  "'key' path 'data' names the whole data" },
		{ "{ filter = true, on = { x = function() end } }", "'filter' must be a function" },
		{ "{ parallel = 1, on = { x = function() end } }",
		  "'parallel' must be true or false" },
	};
	char script[512];

	for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
		inproc r;
		int rc;
		snprintf(script, sizeof script,
			 "local tide = require 'tide'\ntide.projection('p', %s)\n", cases[k].spec);
		rc = inproc_open(&r, th_tmpdir(), script);
		ck_assert_msg(rc == TIDE_ESCRIPT, "%s: %s", cases[k].spec, tide_strerror(rc));
		ck_assert_msg(strstr(tide_errmsg(), cases[k].error), "%s: %s", cases[k].spec,
			      tide_errmsg());
		inproc_close(&r);
	}
	{
		inproc r;
		int rc = inproc_open(&r, th_tmpdir(),
				     "local tide = require 'tide'\n"
				     "tide.projection('p', { on = { x = function() end } })\n"
				     "tide.projection('p', { on = { y = function() end } })\n");
		ck_assert_int_eq(rc, TIDE_ESCRIPT);
		ck_assert_msg(strstr(tide_errmsg(), "a projection named 'p' already exists"), "%s",
			      tide_errmsg());
		inproc_close(&r);
	}
}
END_TEST

/* The key map that holds a projection's keys between writes: slots in
 * order of arrival, every key found again after the table grew, long keys
 * (beyond the bucket's inline bytes) told apart by their tails, and both
 * ways of clearing. */
START_TEST(keymap_slots)
{
	tidei_keymap m;
	char k[64];
	int fresh;

	tidei_keymap_init(&m);
	for (int round = 0; round < 4; round++) {
		/* round 1 clears few keys in a big table; round 3 grows the
		 * buckets past a huge page */
		int n = round == 1 ? 20 : round == 3 ? 70000 : 5000;
		for (int i = 0; i < n; i++) {
			int len = snprintf(k, sizeof k,
					   i % 2 ? "key-%d" : "a-long-shared-prefix-%d", i);
			ck_assert_int_eq(tidei_keymap_put(&m, k, (size_t)len, &fresh), i);
			ck_assert_int_eq(fresh, 1);
		}
		ck_assert_uint_eq(m.n, (size_t)n);
		for (int i = n - 1; i >= 0; i--) {
			size_t kl;
			int len = snprintf(k, sizeof k,
					   i % 2 ? "key-%d" : "a-long-shared-prefix-%d", i);
			const char *got;
			ck_assert_int_eq(tidei_keymap_put(&m, k, (size_t)len, &fresh), i);
			ck_assert_int_eq(fresh, 0);
			got = tidei_keymap_key(&m, (size_t)i, &kl);
			ck_assert_uint_eq(kl, (size_t)len);
			ck_assert(memcmp(got, k, kl) == 0);
		}
		/* a prefix of a key, and a key one byte longer, are other keys */
		ck_assert_int_eq(tidei_keymap_put(&m, "key-1", 4, &fresh), n);
		ck_assert_int_eq(fresh, 1);
		ck_assert_int_eq(tidei_keymap_put(&m, "key-11x", 7, &fresh), n + 1);
		ck_assert_int_eq(fresh, 1);
		tidei_keymap_clear(&m);
		ck_assert_uint_eq(m.n, 0);
		ck_assert_int_eq(tidei_keymap_put(&m, "key-1", 5, &fresh), 0);
		ck_assert_int_eq(fresh, 1);
		tidei_keymap_clear(&m);
	}
	ck_assert_uint_ge((m.mask + 1) * sizeof *m.b, TIDEI_HUGE);
	tidei_keymap_free(&m);
}
END_TEST

/* Huge-page allocations: aligned, zeroed, writable, and given back. */
START_TEST(huge_alloc_aligned)
{
	for (int k = 1; k <= 3; k++) {
		size_t n = (size_t)k * TIDEI_HUGE;
		unsigned char *p = tidei_huge_alloc(n);
		ck_assert_ptr_nonnull(p);
		ck_assert_uint_eq((uintptr_t)p % TIDEI_HUGE, 0);
		ck_assert_uint_eq(p[0] | p[n / 2] | p[n - 1], 0);
		memset(p, 0xab, n);
		ck_assert_uint_eq(p[n - 1], 0xab);
		tidei_huge_free(p, n);
	}
	ck_assert_ptr_null(tidei_huge_alloc(0));
	ck_assert_ptr_null(tidei_huge_alloc(TIDEI_HUGE + 1)); /* not a whole number of them */
}
END_TEST

Suite *
projection_suite(void)
{
	Suite *s = suite_create("projection");
	TCase *live = tcase_create("model");
	TCase *rebuild = tcase_create("rebuild");
	TCase *misc = tcase_create("semantics");

	tcase_add_checked_fixture(live, NULL, th_cleanup);
	tcase_set_timeout(live, 60);
	tcase_add_test(live, live_matches_model);
	suite_add_tcase(s, live);

	tcase_add_checked_fixture(rebuild, NULL, th_cleanup);
	tcase_set_timeout(rebuild, 90);
	tcase_add_loop_test(rebuild, rebuild_serves_old_state_then_switches, 0,
			    (int)(sizeof loop_threads / sizeof loop_threads[0]));
	tcase_add_loop_test(rebuild, rebuild_survives_sigkill, 0,
			    (int)(sizeof loop_threads / sizeof loop_threads[0]));
	tcase_add_test(rebuild, live_under_load_survives_sigkill);
	tcase_add_test(rebuild, rebuild_does_not_hold_up_queries_and_ingest);
	tcase_add_test(rebuild, rebuild_command_online_and_offline);
	tcase_add_test(rebuild, rebuild_wait_notices_the_engine_stop);
	tcase_add_test(rebuild, new_projection_builds_from_the_beginning);
	suite_add_tcase(s, rebuild);

	tcase_add_checked_fixture(misc, NULL, th_cleanup);
	tcase_set_timeout(misc, 60);
	tcase_add_test(misc, keymap_slots);
	tcase_add_test(misc, huge_alloc_aligned);
	tcase_add_test(misc, failing_handler_stops_the_projection);
	tcase_add_test(misc, threads_build_fail_and_opt_out);
	tcase_add_test(misc, threads_refuse_another_definition);
	tcase_add_test(misc, threads_survive_map_growth);
	tcase_add_test(misc, live_under_load_on_threads);
	tcase_add_test(misc, live_on_threads_survives_sigkill);
	tcase_add_test(misc, state_encoding_keeps_values);
	tcase_add_test(misc, unencodable_state_stops_at_once);
	tcase_add_test(misc, unencodable_state_keeps_the_position);
	tcase_add_test(misc, unencodable_state_is_not_half_applied);
	tcase_add_test(misc, expected_version_races);
	tcase_add_test(misc, in_process_query_and_conflict);
	tcase_add_test(misc, query_unknown_projection_with_a_key);
	tcase_add_test(misc, key_by_field_path);
	tcase_add_test(misc, bad_definitions_fail_the_load);
	tcase_add_test(misc, sighup_reloads_scripts);
	suite_add_tcase(s, misc);
	return s;
}
