/*
 * test_keys.c - keys longer than LMDB's 511 bytes: event ids, subjects
 * (stream heads) and tide.once keys stored by a collision-resistant hash,
 * projection keys of any length, and the migration of logs of format 1.
 *
 * The daemon cases publish a history over subjects of 467 to 100,000 bytes
 * (around the lengths where the stored forms change: a projection's L and
 * L + 1, the indexes' 510, 511 and 512) and two subjects sharing their
 * first 600 bytes, with ids of up to 10,000 bytes that share their first
 * 600 or 10,000 bytes.  Two projections fold them: one keyed by subject
 * (the default), one whose key function returns a longer string still.
 * Their states must equal a plain model however they are read (tide query,
 * a REP query, tide_log_query(), by key and by prefix, prefixes longer
 * than what a long key keeps in the clear), however they were built (live,
 * rebuilt on the engine's thread, built by two threads) and in `tide
 * replay`.
 *
 * The format-1 case writes a log as format 1 left it (FNV-hashed long
 * keys, keys of exactly 511 bytes kept as they were) through LMDB
 * directly, reads it read-only, then lets a writable open migrate it.
 */
#define _GNU_SOURCE
#include <check.h>
#include <lmdb.h>
#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <yajl/yajl_tree.h>

#include "event.h"
#include "helpers.h"
#include "log.h"
#include "pstate.h"
#include "tide.h"
#include "val.h"

#define LLU(x) ((unsigned long long)(x))

/* ------------------------------------------------------------------------
 * Long strings
 * ------------------------------------------------------------------------ */

/* @p s[from..to) filled with a pattern that differs from byte to byte. */
static void
fill(char *s, size_t from, size_t to)
{
	for (size_t k = from; k < to; k++)
		s[k] = (char)('a' + k % 26);
}

/* "<head>" followed by the pattern, @p len bytes in all (malloc'd). */
static char *
long_str(const char *head, size_t len)
{
	char *s = malloc(len + 1);
	size_t n = strlen(head);

	ck_assert_ptr_nonnull(s);
	ck_assert_uint_le(n, len);
	memcpy(s, head, n);
	fill(s, n, len);
	s[len] = '\0';
	return s;
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

static int
by_line(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Lines of @p text sorted (a query's order is that of the stored keys,
 * which for long keys is not the order of the keys themselves). */
static char *
sorted(char *text)
{
	size_t n = (size_t)th_count(text, "\n"), k = 0;
	char **lines = calloc(n + 1, sizeof *lines), *save = NULL, *l;
	sbuf b = { 0 };

	ck_assert_ptr_nonnull(lines);
	for (l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
		lines[k++] = l;
	qsort(lines, k, sizeof *lines, by_line);
	sb_printf(&b, "%s", "");
	for (size_t i = 0; i < k; i++)
		sb_printf(&b, "%s\n", lines[i]);
	free(lines);
	free(text);
	return sb_take(&b);
}

static void
same_text(const char *got, const char *want, const char *what)
{
	size_t at = 0;

	while (got[at] && got[at] == want[at])
		at++;
	ck_assert_msg(
		got[at] == want[at],
		"%s: differs at byte %zu of %zu (want %zu):\n  got  ...%.120s\n  want ...%.120s",
		what, at, strlen(got), strlen(want), got + (at > 40 ? at - 40 : 0),
		want + (at > 40 ? at - 40 : 0));
}

/* ------------------------------------------------------------------------
 * The history and its model
 * ------------------------------------------------------------------------ */

/* Around 'bysubj''s L (499) and its long form's clear part (467), the
 * indexes' limit (510/511/512), and far beyond. */
static const size_t long_lens[] = {
	467, 468, 499, 500, 501, 504, 510, 511, 512, 600, 10000, 100000
};
#define NLONG (sizeof long_lens / sizeof *long_lens)
#define TWIN_A NLONG
#define TWIN_B (NLONG + 1)
#define NSUBJ (NLONG + 4)
#define NEV 1200

static char *subj[NSUBJ];

static void
make_subjects(void)
{
	char head[32];

	for (size_t k = 0; k < NLONG; k++) {
		snprintf(head, sizeof head, "long/%zu/", long_lens[k]);
		subj[k] = long_str(head, long_lens[k]);
	}
	/* the twins share 600 bytes, then 100 bytes of x or of y */
	subj[TWIN_A] = long_str("twin/", 700);
	subj[TWIN_B] = long_str("twin/", 700);
	memset(subj[TWIN_A] + 600, 'x', 100);
	memset(subj[TWIN_B] + 600, 'y', 100);
	subj[NLONG + 2] = strdup("short/1");
	subj[NLONG + 3] = strdup("short/2");
}

static void
free_subjects(void)
{
	for (size_t k = 0; k < NSUBJ; k++)
		free(subj[k]);
}

static size_t
subject_of(long i)
{
	return (size_t)(i - 1) % NSUBJ;
}

/* Event @p i's id: short, or 600+ bytes sharing their first 600, or
 * 10,000+ bytes sharing their first 10,000. */
static char *
id_of(long i)
{
	char tail[32];
	char *s;

	snprintf(tail, sizeof tail, "/%ld", i);
	if (i % 5 != 0 && i % 7 != 0) {
		ck_assert_int_ne(asprintf(&s, "id-%ld", i), -1);
		return s;
	}
	s = long_str(i % 5 == 0 ? "idl/" : "idx/", i % 5 == 0 ? 600 : 10000);
	s = realloc(s, strlen(s) + sizeof tail);
	ck_assert_ptr_nonnull(s);
	strcat(s, tail);
	return s;
}

static void
event_json(sbuf *b, long i)
{
	char *id = id_of(i);

	sb_printf(b,
		  "{\"specversion\":\"1.0\",\"id\":\"%s\",\"source\":\"/keys\",\"type\":\"k.add\","
		  "\"subject\":\"%s\",\"data\":{\"i\":%ld}}\n",
		  id, subj[subject_of(i)], i);
	free(id);
}

/* Publish events @p from..@p to over REP in messages of about 256 KiB;
 * each must be stored as seq i, or (@p dup) be a duplicate of it. */
static void
publish(const char *rep, long from, long to, int dup)
{
	char *msgs[NEV] = { 0 }, *replies[NEV] = { 0 };
	long first[NEV];
	size_t n = 0;

	for (long i = from; i <= to;) {
		sbuf b = { 0 };
		ck_assert_uint_lt(n, NEV);
		first[n] = i;
		while (i <= to && b.len < (256u << 10))
			event_json(&b, i++);
		msgs[n++] = sb_take(&b);
	}
	ck_assert_uint_eq(th_req_many(rep, msgs, n, replies, 1, 60000), n);
	for (size_t m = 0; m < n; m++) {
		char *save = NULL, *line;
		long i = first[m];
		ck_assert_ptr_nonnull(replies[m]);
		for (line = strtok_r(replies[m], "\n", &save); line;
		     line = strtok_r(NULL, "\n", &save), i++) {
			uint64_t seq;
			int kind = th_ack_parse(line, &seq);
			ck_assert_msg(kind == (dup ? TH_ACK_DUPLICATE : TH_ACK_STORED),
				      "event %ld: %.300s", i, line);
			ck_assert_uint_eq(seq, (uint64_t)i);
		}
		ck_assert_int_eq(i, m + 1 < n ? first[m + 1] : to + 1);
		free(msgs[m]);
		free(replies[m]);
	}
}

/* Projection 'bysubj' is keyed by subject; 'byfn' by subject "|" subject
 * (a key twice as long as any event attribute).  The state: events, sum
 * of data.i, the stream version of the last. */
static const char keys_lua[] = "local tide = require 'tide'\n"
			       "local V = %d\n"
			       "local function init() return { 0, 0, 0 } end\n"
			       "local function add(s, ev)\n"
			       "  s[1] = s[1] + 1; s[2] = s[2] + ev.data.i; s[3] = ev.version\n"
			       "end\n"
			       "tide.projection('bysubj', { version = V, init = init,\n"
			       "  on = { ['k.*'] = add } })\n"
			       "tide.projection('byfn', { version = V, init = init,\n"
			       "  key = function(ev) return ev.subject .. '|' .. ev.subject end,\n"
			       "  on = { ['k.*'] = add } })\n";

static const char *
keys_script(const char *dir, int version)
{
	char text[sizeof keys_lua + 16];

	snprintf(text, sizeof text, keys_lua, version);
	return th_write(dir, "keys.lua", text);
}

/* Projection @p fn's key of subject @p j (malloc'd). */
static char *
key_of(int fn, size_t j)
{
	char *k;

	if (!fn)
		return strdup(subj[j]);
	ck_assert_int_ne(asprintf(&k, "%s|%s", subj[j], subj[j]), -1);
	return k;
}

/* The model's "key\tstate" lines (sorted) after events 1..@p upto, of the
 * keys that start with @p prefix (NULL: all) or equal @p key. */
static char *
model_dump(int fn, long upto, const char *key, const char *prefix)
{
	long n[NSUBJ] = { 0 }, sum[NSUBJ] = { 0 };
	sbuf b = { 0 };

	for (long i = 1; i <= upto; i++) {
		n[subject_of(i)]++;
		sum[subject_of(i)] += i;
	}
	sb_printf(&b, "%s", "");
	for (size_t j = 0; j < NSUBJ; j++) {
		char *k = key_of(fn, j);
		if (n[j] > 0 && (key == NULL || strcmp(k, key) == 0) &&
		    (prefix == NULL || strncmp(k, prefix, strlen(prefix)) == 0))
			sb_printf(&b, "%s\t[%ld,%ld,%ld]\n", k, n[j], sum[j], n[j]);
		free(k);
	}
	return sorted(sb_take(&b));
}

/* ------------------------------------------------------------------------
 * Reading the projections
 * ------------------------------------------------------------------------ */

typedef struct pinfo {
	int found, building, serving, faulted;
	uint64_t live_seq;
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
	snprintf(f->out->error, sizeof f->out->error, "%s", pi->error ? pi->error : "");
}

/* Wait until @p name is live at @p seq or beyond; fails at once if it
 * stopped. */
static void
wait_live(const char *data, const char *name, uint64_t seq, int ms)
{
	int64_t deadline = th_ms() + ms;
	pinfo pi;
	pfind f = { name, &pi };

	do {
		tide_log *log;
		memset(&pi, 0, sizeof pi);
		if (tide_log_open(&log, data) == TIDE_OK) {
			ck_assert_int_eq(tide_log_projections(log, pinfo_cb, &f), TIDE_OK);
			tide_log_close(log);
		}
		ck_assert_msg(!pi.faulted, "projection %s stopped: %s", name, pi.error);
		if (pi.found && !pi.building && pi.serving && pi.live_seq >= seq)
			return;
		th_pause();
	} while (th_ms() < deadline);
	ck_abort_msg("projection %s not live at %llu within %d ms (live at %llu, building %d)",
		     name, LLU(seq), ms, LLU(pi.live_seq), pi.building);
}

static int
collect(void *ud, const char *key, size_t klen, const char *json, size_t jlen)
{
	sb_printf(ud, "%.*s\t%.*s\n", (int)klen, key, (int)jlen, json);
	return 0;
}

/* tide_log_query() in this process: the sorted lines; *rc its code. */
static char *
api_dump(const char *data, const char *name, const char *key, const char *prefix, int *rc)
{
	tide_log *log;
	sbuf b = { 0 };

	ck_assert_int_eq(tide_log_open(&log, data), TIDE_OK);
	sb_printf(&b, "%s", "");
	*rc = tide_log_query(log, name, key, prefix, 0, collect, &b);
	tide_log_close(log);
	return sorted(sb_take(&b));
}

/* A state as the tests write it: an array of integers. */
static void
state_text(sbuf *b, yajl_val s)
{
	ck_assert_msg(s != NULL && YAJL_IS_ARRAY(s), "a state is not an array");
	sb_printf(b, "[");
	for (size_t k = 0; k < YAJL_GET_ARRAY(s)->len; k++)
		sb_printf(b, "%s%s", k ? "," : "", YAJL_GET_NUMBER(YAJL_GET_ARRAY(s)->values[k]));
	sb_printf(b, "]");
}

static yajl_val
member(yajl_val v, const char *name)
{
	const char *path[] = { name, NULL };

	return yajl_tree_get(v, path, yajl_t_any);
}

static void
pair_line(sbuf *b, yajl_val pair)
{
	yajl_val k = member(pair, "key");

	ck_assert_msg(k != NULL && YAJL_IS_STRING(k), "no key");
	sb_printf(b, "%s\t", YAJL_GET_STRING(k));
	state_text(b, member(pair, "state"));
	sb_printf(b, "\n");
}

static yajl_val
parse(const char *text)
{
	char err[256];
	yajl_val v = yajl_tree_parse(text, err, sizeof err);

	ck_assert_msg(v != NULL, "not JSON (%s): %.300s", err, text);
	return v;
}

/* A REP query by @p key or @p prefix: the sorted lines, NULL if not ok. */
static char *
rep_dump(const char *rep, const char *name, const char *key, const char *prefix)
{
	size_t cap = 4u << 20;
	char *reply = malloc(cap);
	sbuf req = { 0 }, b = { 0 };
	yajl_val v, ok;

	ck_assert_ptr_nonnull(reply);
	sb_printf(&req, "{\"query\":\"%s\"", name);
	if (key)
		sb_printf(&req, ",\"key\":\"%s\"", key);
	if (prefix)
		sb_printf(&req, ",\"prefix\":\"%s\"", prefix);
	sb_printf(&req, "}");
	ck_assert_msg(th_req(rep, req.p, reply, cap, 10000) > 0, "no reply to a query");
	v = parse(reply);
	ok = member(v, "ok");
	ck_assert_ptr_nonnull(ok);
	sb_printf(&b, "%s", "");
	if (!YAJL_IS_TRUE(ok)) {
		free(b.p);
		b.p = NULL;
	} else if (key) {
		pair_line(&b, v);
	} else {
		yajl_val states = member(v, "states");
		ck_assert_msg(states && YAJL_IS_ARRAY(states), "%.300s", reply);
		for (size_t k = 0; k < YAJL_GET_ARRAY(states)->len; k++)
			pair_line(&b, YAJL_GET_ARRAY(states)->values[k]);
	}
	yajl_tree_free(v);
	free(reply);
	free(req.p);
	return b.p ? sorted(sb_take(&b)) : NULL;
}

/* Lines of {"key":..,"state":..} objects (tide query, tide replay) as
 * sorted lines. */
static char *
pairs_dump(char *out)
{
	char *save = NULL, *line;
	sbuf b = { 0 };

	sb_printf(&b, "%s", "");
	for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		yajl_val v = parse(line);
		pair_line(&b, v);
		yajl_tree_free(v);
	}
	return sorted(sb_take(&b));
}

/* `tide query NAME KEY` or `--prefix P` (passed through files: the
 * command line of th_sh is short); *status its exit status. */
static char *
cli_dump(const char *dir, const char *data, const char *name, const char *key, const char *prefix,
	 int *status)
{
	size_t cap = 4u << 20;
	char *out = malloc(cap), *got;

	ck_assert_ptr_nonnull(out);
	th_write(dir, "arg", key ? key : prefix);
	*status = th_sh(out, cap, "'%s' query --data '%s' %s %s\"$(cat '%s')\" 2>'%s'", TIDE_BIN,
			data, name, key ? "" : "--prefix ", subdir(dir, "arg"),
			subdir(dir, "query.err"));
	if (*status != 0) {
		char *why = th_slurp(subdir(dir, "query.err"));
		ck_abort_msg("tide query %s (%s of %zu bytes): exit %d: %.300s", name,
			     key ? "key" : "prefix", strlen(key ? key : prefix), *status,
			     why ? why : "");
	}
	ck_assert_uint_lt(strlen(out), cap - 1);
	got = pairs_dump(out);
	free(out);
	return got;
}

/* Every key of both projections, by key and by prefix, three ways. */
static void
check_queries(const char *dir, const char *data, const char *rep, long upto)
{
	static const char *const names[] = { "bysubj", "byfn" };
	char *want, *got, *prefixes[5];
	int rc, status;

	/* whole */
	for (int fn = 0; fn < 2; fn++) {
		want = model_dump(fn, upto, NULL, NULL);
		got = api_dump(data, names[fn], NULL, NULL, &rc);
		ck_assert_int_eq(rc, TIDE_OK);
		same_text(got, want, "tide_log_query, every key");
		free(got);
		if (rep) {
			got = rep_dump(rep, names[fn], NULL, NULL);
			ck_assert_ptr_nonnull(got);
			same_text(got, want, "REP, every key");
			free(got);
		}
		free(want);
	}
	/* each key by its full text */
	for (int fn = 0; fn < 2; fn++)
		for (size_t j = 0; j < NSUBJ; j++) {
			char *key = key_of(fn, j);
			want = model_dump(fn, upto, key, NULL);
			got = api_dump(data, names[fn], key, NULL, &rc);
			ck_assert_int_eq(rc, TIDE_OK);
			same_text(got, want, "tide_log_query by key");
			free(got);
			if (rep) {
				got = rep_dump(rep, names[fn], key, NULL);
				ck_assert_msg(got != NULL, "REP: no state for key %zu", j);
				same_text(got, want, "REP by key");
				free(got);
			}
			if (strlen(key) < 120000) { /* the longest argument Linux takes */
				got = cli_dump(dir, data, names[fn], key, NULL, &status);
				ck_assert_int_eq(status, 0);
				same_text(got, want, "tide query by key");
				free(got);
			}
			free(want);
			/* the same key, one byte longer or shorter, has no state */
			ck_assert_int_ne(asprintf(&want, "%sx", key), -1);
			free(api_dump(data, names[fn], want, NULL, &rc));
			ck_assert_int_eq(rc, TIDE_ENOTFOUND);
			free(want);
			key[strlen(key) - 1] = '\0';
			free(api_dump(data, names[fn], key, NULL, &rc));
			ck_assert_int_eq(rc, TIDE_ENOTFOUND);
			free(key);
		}
	/* prefixes: short; as long as a twin's shared part (longer than a
	 * long key keeps in the clear); into one twin's own part; into the
	 * middle of a 10,000-byte key */
	prefixes[0] = strdup("long/");
	prefixes[1] = strndup(subj[TWIN_A], 600);
	prefixes[2] = strndup(subj[TWIN_A], 650);
	prefixes[3] = strndup(subj[NLONG - 2], 5000);
	ck_assert_ptr_nonnull(prefixes[3]);
	ck_assert_int_ne(asprintf(&prefixes[4], "%s|%.700s", subj[NLONG - 3], subj[NLONG - 3]), -1);
	for (int fn = 0; fn < 2; fn++)
		for (int k = 0; k < 5; k++) {
			want = model_dump(fn, upto, NULL, prefixes[k]);
			ck_assert_msg(strlen(want) > 0 || (k == 4 && !fn),
				      "prefix %d finds nothing", k);
			got = api_dump(data, names[fn], NULL, prefixes[k], &rc);
			ck_assert_int_eq(rc, TIDE_OK);
			same_text(got, want, "tide_log_query by prefix");
			free(got);
			if (rep) {
				got = rep_dump(rep, names[fn], NULL, prefixes[k]);
				ck_assert_ptr_nonnull(got);
				same_text(got, want, "REP by prefix");
				free(got);
			}
			got = cli_dump(dir, data, names[fn], NULL, prefixes[k], &status);
			ck_assert_int_eq(status, 0);
			same_text(got, want, "tide query --prefix");
			free(got);
			free(want);
		}
	for (int k = 0; k < 5; k++)
		free(prefixes[k]);
}

/* Both projections equal the model after events 1..@p upto. */
static void
check_states(const char *data, long upto, const char *what)
{
	static const char *const names[] = { "bysubj", "byfn" };

	for (int fn = 0; fn < 2; fn++) {
		char *want = model_dump(fn, upto, NULL, NULL), *got;
		int rc;
		got = api_dump(data, names[fn], NULL, NULL, &rc);
		ck_assert_int_eq(rc, TIDE_OK);
		same_text(got, want, what);
		free(got);
		free(want);
	}
}

/* Each subject's stream, read by `tide log --subject`, has its events. */
static void
check_streams(const char *dir, const char *data, long upto)
{
	for (size_t j = 0; j < NSUBJ; j++) {
		char args[700];
		long n = 0;
		for (long i = 1; i <= upto; i++)
			n += subject_of(i) == j;
		th_write(dir, "subject", subj[j]);
		snprintf(args, sizeof args, "--subject \"$(cat '%s')\"", subdir(dir, "subject"));
		ck_assert_int_eq(th_log_count(data, args), n);
	}
}

/* ------------------------------------------------------------------------
 * Long keys through a real daemon
 * ------------------------------------------------------------------------ */

START_TEST(long_keys_in_projections)
{
	const char *dir = th_tmpdir();
	char data[600], out[4096], *log;
	th_daemon d;
	int rc;

	snprintf(data, sizeof data, "%s/data", dir);
	make_subjects();
	/* 1. live, built on the engine's thread */
	ck_assert_int_eq(th_daemon_spawn(&d, data,
					 "--data '%s' --script '%s' --set build_threads=1", data,
					 keys_script(dir, 1)),
			 0);
	publish(d.rep, 1, NEV, 0);
	/* long ids and subjects dedupe: every event again is a duplicate */
	publish(d.rep, 1, NEV, 1);
	wait_live(data, "bysubj", NEV, 60000);
	wait_live(data, "byfn", NEV, 60000);
	check_queries(dir, data, d.rep, NEV);
	check_streams(dir, data, NEV);
	/* 2. rebuilt on the engine's thread */
	for (int k = 0; k < 2; k++) {
		const char *name = k ? "byfn" : "bysubj";
		rc = th_sh(out, sizeof out, "'%s' projection rebuild --wait %s --data '%s' 2>&1",
			   TIDE_BIN, name, data);
		ck_assert_msg(rc == 0, "rebuild %s: %s", name, out);
	}
	check_states(data, NEV, "rebuilt on one thread");
	/* 3. live again over the rebuilt states */
	publish(d.rep, NEV + 1, NEV + 2 * NSUBJ, 0);
	wait_live(data, "bysubj", NEV + 2 * NSUBJ, 30000);
	wait_live(data, "byfn", NEV + 2 * NSUBJ, 30000);
	check_states(data, NEV + 2 * NSUBJ, "live after a rebuild");
	ck_assert_int_eq(th_daemon_stop(&d), 0);

	/* 4. a new definition, built by two threads (one projection at a
	 * time shares its build), then the other one rebuilt by them too */
	ck_assert_int_eq(th_daemon_spawn(&d, data,
					 "--data '%s' --script '%s' --set build_threads=2", data,
					 keys_script(dir, 2)),
			 0);
	wait_live(data, "bysubj", NEV + 2 * NSUBJ, 60000);
	wait_live(data, "byfn", NEV + 2 * NSUBJ, 60000);
	check_states(data, NEV + 2 * NSUBJ, "built by two threads");
	rc = th_sh(out, sizeof out, "'%s' projection rebuild --wait byfn --data '%s' 2>&1",
		   TIDE_BIN, data);
	ck_assert_msg(rc == 0, "rebuild byfn: %s", out);
	check_queries(dir, data, d.rep, NEV + 2 * NSUBJ);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
	log = th_slurp(d.log);
	ck_assert_ptr_nonnull(log);
	ck_assert_msg(strstr(log, "'bysubj': building events 1 to ") &&
			      strstr(log, "'byfn': building events 1 to ") &&
			      th_count(log, " on 2 threads") >= 2 &&
			      !strstr(log, "threads stopped") && !strstr(log, "' stopped at event"),
		      "%s", log);
	free(log);

	/* 5. replay agrees, from the log alone */
	for (int fn = 0; fn < 2; fn++) {
		size_t cap = 4u << 20;
		char *buf = malloc(cap), *got, *want;
		ck_assert_ptr_nonnull(buf);
		rc = th_sh(buf, cap, "'%s' replay -q --script '%s' --projection %s --data '%s'",
			   TIDE_BIN, subdir(dir, "keys.lua"), fn ? "byfn" : "bysubj", data);
		ck_assert_int_eq(rc, 0);
		got = pairs_dump(buf);
		want = model_dump(fn, NEV + 2 * NSUBJ, NULL, NULL);
		same_text(got, want, "tide replay");
		free(got);
		free(want);
		free(buf);
	}
	free_subjects();
}
END_TEST

/* A key found in C by a field path may be long too; an empty key still
 * stops the projection, at its event. */
START_TEST(field_path_keys_and_empty_keys)
{
	const char *dir = th_tmpdir();
	char data[600], msg[1024], reply[1024], *k = long_str("field/", 600), *got, *want;
	uint64_t seq;
	tide_log *log;
	pinfo pi;
	pfind f = { "byfield", &pi };
	th_daemon d;
	int rc;

	snprintf(data, sizeof data, "%s/data", dir);
	ck_assert_int_eq(
		th_daemon_spawn(
			&d, data, "--data '%s' --script '%s'", data,
			th_write(dir, "f.lua",
				 "local tide = require 'tide'\n"
				 "tide.projection('byfield', { key = 'data.k',\n"
				 "  on = { ['*'] = function(s) s[1] = (s[1] or 0) + 1 end } })\n")),
		0);
	for (int i = 1; i <= 3; i++) {
		snprintf(msg, sizeof msg,
			 "{\"specversion\":\"1.0\",\"id\":\"f%d\",\"source\":\"/f\","
			 "\"type\":\"t\",\"data\":{\"k\":\"%s\"}}",
			 i, i < 3 ? k : "");
		ck_assert_int_gt(th_req(d.rep, msg, reply, sizeof reply, 10000), 0);
		ck_assert_int_eq(th_ack_parse(reply, &seq), TH_ACK_STORED);
	}
	{
		int64_t deadline = th_ms() + 10000;
		do {
			memset(&pi, 0, sizeof pi);
			ck_assert_int_eq(tide_log_open(&log, data), TIDE_OK);
			ck_assert_int_eq(tide_log_projections(log, pinfo_cb, &f), TIDE_OK);
			tide_log_close(log);
			if (pi.faulted)
				break;
			th_pause();
		} while (th_ms() < deadline);
	}
	ck_assert_msg(pi.faulted && strstr(pi.error, "key must not be empty"), "%s", pi.error);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
	got = api_dump(data, "byfield", k, NULL, &rc);
	ck_assert_int_eq(rc, TIDE_OK);
	ck_assert_int_ne(asprintf(&want, "%s\t[2]\n", k), -1);
	ck_assert_str_eq(got, want);
	free(got);
	free(want);
	free(k);
}
END_TEST

/* ------------------------------------------------------------------------
 * The stored forms (in process)
 * ------------------------------------------------------------------------ */

static tidei_log *
open_log(const char *dir)
{
	tidei_log_opts o = { 0 };
	tidei_log *log;
	char err[TIDEI_ERRLEN];

	ck_assert_msg(tidei_log_open(&log, dir, &o, err) == TIDE_OK, "%s", err);
	return log;
}

static tidei_append
append(tidei_log *log, const char *id, const char *subject)
{
	static tidei_buf out;
	tidei_evb b;
	tidei_append res;

	memset(&b, 0, sizeof b);
	tidei_evb_reset(&b);
	tidei_evb_string(&b, "specversion", 11, "1.0", 3);
	tidei_evb_string(&b, "source", 6, "/s", 2);
	tidei_evb_string(&b, "id", 2, id, strlen(id));
	tidei_evb_string(&b, "type", 4, "t", 1);
	if (subject)
		tidei_evb_string(&b, "subject", 7, subject, strlen(subject));
	tidei_buf_reset(&out);
	ck_assert_msg(tidei_evb_finish(&b, &out) == 0, "%s", b.err);
	tidei_evb_free(&b);
	ck_assert_int_eq(tidei_log_append(log, out.p, out.len, tidei_now(), -1, &res), TIDE_OK);
	return res;
}

/* Format 2's key for @p a ["\0" @p b], computed here from the definition:
 * as it is up to 510 bytes, else its first 478 bytes, a zero byte and the
 * BLAKE2b-256 of the whole. */
static size_t
key_v2(uint8_t *out, const char *a, const char *b)
{
	size_t an = strlen(a), n = an + (b ? 1 + strlen(b) : 0);
	uint8_t *whole = malloc(n + 1);

	ck_assert_ptr_nonnull(whole);
	memcpy(whole, a, an);
	if (b) {
		whole[an] = '\0';
		memcpy(whole + an + 1, b, strlen(b));
	}
	if (n <= 510) {
		memcpy(out, whole, n);
	} else {
		memcpy(out, whole, 478);
		out[478] = 0;
		crypto_generichash(out + 479, 32, whole, n, NULL, 0);
		n = 511;
	}
	free(whole);
	return n;
}

/* Format 1's key, as format 1 made it. */
static size_t
key_v1(uint8_t *out, const char *a, const char *b)
{
	size_t an = strlen(a), bn = b ? strlen(b) : 0, n = an + (b ? 1 + bn : 0);
	uint64_t h1, h2;

	if (n <= 511) {
		memcpy(out, a, an);
		if (b) {
			out[an] = '\0';
			memcpy(out + an + 1, b, bn);
		}
		return n;
	}
	h1 = tidei_fnv(a, an, 0xcbf29ce484222325ull);
	h2 = tidei_fnv(a, an, 0x84222325cbf29ce4ull);
	if (b) {
		h1 = tidei_fnv(b, bn, tidei_fnv("\0", 1, h1));
		h2 = tidei_fnv(b, bn, tidei_fnv("\0", 1, h2));
	}
	if (an >= 477) {
		memcpy(out, a, 477);
	} else {
		memcpy(out, a, an);
		out[an] = '\0';
		memcpy(out + an + 1, b, 477 - an - 1);
	}
	out[477] = '\0';
	out[478] = 0xff;
	tidei_st64(out + 479, h1);
	tidei_st64(out + 487, h2);
	return 495;
}

/* 1 if @p dbi of @p log holds @p key (@p n bytes), read in a snapshot. */
static int
has_key(tidei_log *log, MDB_dbi dbi, const uint8_t *key, size_t n)
{
	MDB_txn *txn;
	MDB_val k = { n, (void *)key }, v;
	int rc;

	ck_assert_int_eq(tidei_log_read_begin(log, &txn), TIDE_OK);
	rc = mdb_get(txn, dbi, &k, &v);
	tidei_log_read_end(log);
	ck_assert(rc == 0 || rc == MDB_NOTFOUND);
	return rc == 0;
}

static uint32_t
meta_format(tidei_log *log)
{
	MDB_txn *txn;
	MDB_val k = { 6, "format" }, v;
	uint32_t f;

	ck_assert_int_eq(tidei_log_read_begin(log, &txn), TIDE_OK);
	ck_assert_int_eq(mdb_get(txn, log->meta, &k, &v), 0);
	f = tidei_ld32(v.mv_data);
	tidei_log_read_end(log);
	return f;
}

/* Ids and subjects past the limit are stored by BLAKE2b, and stay apart
 * however many bytes they share; exactly 511 bytes is long now. */
START_TEST(long_ids_and_subjects_by_blake2b)
{
	const char *dir = th_tmpdir();
	tidei_log *log = open_log(dir);
	char *a = long_str("x", 900), *b = long_str("x", 900), *s510 = long_str("s", 510),
	     *s511 = long_str("s", 511), *id508 = long_str("i", 508);
	uint8_t key[512];
	tidei_append r;
	size_t n;

	b[899] = '!';
	ck_assert_uint_eq(meta_format(log), 2);
	ck_assert_int_eq(tidei_log_begin(log), TIDE_OK);
	ck_assert_uint_eq(append(log, a, a).seq, 1);
	ck_assert_uint_eq(append(log, b, b).version, 1);
	r = append(log, a, a);
	ck_assert(r.duplicate && r.seq == 1);
	ck_assert_uint_eq(append(log, "2", a).version, 2);
	ck_assert_uint_eq(append(log, id508, s510).seq, 4); /* "/s" "\0" id: 511 bytes */
	ck_assert_uint_eq(append(log, "3", s511).version, 1);
	ck_assert_int_eq(tidei_log_commit(log), TIDE_OK);
	/* the keys as defined */
	n = key_v2(key, "/s", a);
	ck_assert_uint_eq(n, 511);
	ck_assert(has_key(log, log->ids, key, n));
	n = key_v2(key, "/s", b);
	ck_assert(has_key(log, log->ids, key, n));
	n = key_v2(key, "/s", id508);
	ck_assert_uint_eq(n, 511);
	ck_assert(has_key(log, log->ids, key, n));
	n = key_v2(key, a, NULL);
	ck_assert(has_key(log, log->streams, key, n));
	ck_assert(has_key(log, log->streams, (const uint8_t *)s510, 510));
	n = key_v2(key, s511, NULL);
	ck_assert_uint_eq(n, 511);
	ck_assert(has_key(log, log->streams, key, n));
	ck_assert(!has_key(log, log->streams, (const uint8_t *)s511, 511));
	/* after a reopen (nothing cached) */
	tidei_log_close(log);
	log = open_log(dir);
	ck_assert_int_eq(tidei_log_begin(log), TIDE_OK);
	r = append(log, b, b);
	ck_assert(r.duplicate && r.seq == 2);
	ck_assert_uint_eq(append(log, "4", b).version, 2);
	ck_assert_uint_eq(append(log, "5", s511).version, 2);
	ck_assert_int_eq(tidei_log_commit(log), TIDE_OK);
	tidei_log_close(log);
	free(a);
	free(b);
	free(s510);
	free(s511);
	free(id508);
}
END_TEST

/* ------------------------------------------------------------------------
 * A log of format 1
 * ------------------------------------------------------------------------ */

/* Rewrite the log in @p dir as format 1 stored it: `ids` and `streams`
 * rebuilt from the events with format 1's keys, the tide.once claims of
 * consumer "c" for @p once (format 1's keys), and projection 'p' (live
 * generation 1) with the states @p pkeys -> [@p pvals], kept as they are
 * (format 1 did so up to 505 bytes for a name of one byte). */
static void
make_format1(const char *dir, const char *const *once, size_t nonce, const char *const *pkeys,
	     const int *pvals, size_t np)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi events, ids, streams, oncedb, state, projections, meta;
	MDB_cursor *cur;
	MDB_val k, v;
	uint8_t key[512], raw[64];
	int rc;

	ck_assert_int_eq(mdb_env_create(&env), 0);
	ck_assert_int_eq(mdb_env_set_maxdbs(env, 16), 0);
	ck_assert_int_eq(mdb_env_open(env, dir, 0, 0644), 0);
	ck_assert_int_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
	ck_assert_int_eq(mdb_dbi_open(txn, "events", MDB_INTEGERKEY, &events), 0);
	ck_assert_int_eq(mdb_dbi_open(txn, "ids", 0, &ids), 0);
	ck_assert_int_eq(mdb_dbi_open(txn, "streams", 0, &streams), 0);
	ck_assert_int_eq(mdb_dbi_open(txn, "once", 0, &oncedb), 0);
	ck_assert_int_eq(mdb_dbi_open(txn, "state", 0, &state), 0);
	ck_assert_int_eq(mdb_dbi_open(txn, "projections", 0, &projections), 0);
	ck_assert_int_eq(mdb_dbi_open(txn, "meta", 0, &meta), 0);
	ck_assert_int_eq(mdb_drop(txn, ids, 0), 0);
	ck_assert_int_eq(mdb_drop(txn, streams, 0), 0);
	ck_assert_int_eq(mdb_drop(txn, oncedb, 0), 0);
	ck_assert_int_eq(mdb_cursor_open(txn, events, &cur), 0);
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		struct tide_event ev;
		uint64_t seq;
		MDB_val kk, vv;
		memcpy(&seq, k.mv_data, 8);
		ck_assert_int_eq(tidei_event_decode(&ev, v.mv_data, v.mv_size), 0);
		kk.mv_size = key_v1(key, ev.attr[TIDEI_A_SOURCE], ev.attr[TIDEI_A_ID]);
		kk.mv_data = key;
		vv.mv_size = 8;
		vv.mv_data = &seq;
		ck_assert_int_eq(mdb_put(txn, ids, &kk, &vv, MDB_NOOVERWRITE), 0);
		if (ev.attr[TIDEI_A_SUBJECT] == NULL)
			continue;
		kk.mv_size = key_v1(key, ev.attr[TIDEI_A_SUBJECT], NULL);
		tidei_st64(raw, ev.version);
		tidei_st64(raw + 8, seq);
		vv.mv_size = 16;
		vv.mv_data = raw;
		ck_assert_int_eq(mdb_put(txn, streams, &kk, &vv, 0), 0);
	}
	ck_assert_int_eq(rc, MDB_NOTFOUND);
	mdb_cursor_close(cur);
	for (size_t i = 0; i < nonce; i++) {
		memset(raw, 0, 8);
		k.mv_size = key_v1(key, "c", once[i]);
		k.mv_data = key;
		v.mv_size = 8;
		v.mv_data = raw;
		ck_assert_int_eq(mdb_put(txn, oncedb, &k, &v, 0), 0);
	}
	/* projection 'p': live and built at generation 1 */
	memset(raw, 0, sizeof raw);
	tidei_st32(raw, 1);
	tidei_st32(raw + 4, 1);
	tidei_st64(raw + 8, 1);
	tidei_st64(raw + 16, 1);
	tidei_st64(raw + 24, 42);
	k.mv_size = 1;
	k.mv_data = "p";
	v.mv_size = 60;
	v.mv_data = raw;
	ck_assert_int_eq(mdb_put(txn, projections, &k, &v, 0), 0);
	for (size_t i = 0; i < np; i++) {
		tidei_buf val = { 0 };
		size_t n = strlen(pkeys[i]);
		ck_assert_uint_le(n, 505);
		memcpy(key, "p\0\0\0\0\1", 6);
		memcpy(key + 6, pkeys[i], n);
		tidei_val_array(&val, 1);
		tidei_val_int(&val, pvals[i]);
		k.mv_size = 6 + n;
		k.mv_data = key;
		v.mv_size = val.len;
		v.mv_data = val.p;
		ck_assert_int_eq(mdb_put(txn, state, &k, &v, 0), 0);
		tidei_buf_free(&val);
	}
	tidei_st32(raw, 1);
	k.mv_size = 6;
	k.mv_data = "format";
	v.mv_size = 4;
	v.mv_data = raw;
	ck_assert_int_eq(mdb_put(txn, meta, &k, &v, 0), 0);
	ck_assert_int_eq(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
}

/* A cursor over @p subject's stream: its seqs, comma-separated. */
static char *
stream_seqs(tide_log *l, const char *subject)
{
	tide_filter f;
	tide_cursor *c;
	const tide_event *ev;
	sbuf b = { 0 };
	int rc;

	memset(&f, 0, sizeof f);
	f.subject = subject;
	ck_assert_int_eq(tide_cursor_open(l, &f, &c), TIDE_OK);
	sb_printf(&b, "%s", "");
	while ((rc = tide_cursor_next(c, &ev)) == TIDE_OK)
		sb_printf(&b, "%s%llu", b.len ? "," : "", LLU(tide_event_seq(ev)));
	ck_assert_int_eq(rc, TIDE_ENOTFOUND);
	tide_cursor_close(c);
	return sb_take(&b);
}

static void
once_is(tidei_log *log, const char *key, int first)
{
	int got = -1;

	ck_assert_int_eq(tidei_log_once(log, "c", key, strlen(key), 9, &got), TIDE_OK);
	ck_assert_msg(got == first, "tide.once of %.20s... (%zu bytes): %d, not %d", key,
		      strlen(key), got, first);
}

START_TEST(format1_log_migrates)
{
	const char *dir = th_tmpdir();
	char *id508 = long_str("i", 508), *id600a = long_str("i", 700),
	     *id600b = long_str("i", 700), *id10k = long_str("j", 10000),
	     *id600c = long_str("i", 700);
	char *s511 = long_str("s", 511), *s600 = long_str("t", 600), *s10k = long_str("u", 10000);
	char *o509 = long_str("o", 509), *o600 = long_str("o", 600), *o10k = long_str("p", 10000),
	     *o600new = long_str("o", 600);
	char *k505 = long_str("q", 505), *k504 = long_str("q", 504), *pre, *got, out[4096];
	const char *once[] = { "short", o509, o600, o10k };
	const char *pkeys[] = { "k", k504, k505 };
	const int pvals[] = { 1, 3, 7 };
	tide_log *ro, *early;
	tidei_log *log;
	tidei_log_opts opts = { 0 };
	tidei_append r;
	uint8_t key[512];
	char err[TIDEI_ERRLEN];
	int rc;

	memset(id600a + 600, 'a', 100); /* the three share their first 600 bytes */
	memset(id600b + 600, 'b', 100);
	memset(id600c + 600, 'c', 100);
	k504[503] = 'r';
	o600new[599] = '!';
	/* the events and claims, then the log as format 1 had it */
	log = open_log(dir);
	ck_assert_int_eq(tidei_log_begin(log), TIDE_OK);
	append(log, "a", "short");
	append(log, id508, s511);
	append(log, id600a, s600);
	append(log, id600b, s600);
	append(log, id10k, s10k);
	append(log, "b", s511);
	ck_assert_int_eq(tidei_log_commit(log), TIDE_OK);
	tidei_log_close(log);
	make_format1(dir, once, 4, pkeys, pvals, 3);

	/* read-only, before any engine ran: streams found by format 1's keys,
	 * states of 505 bytes as they were kept */
	ck_assert_int_eq(tide_log_open(&ro, dir), TIDE_OK);
	got = stream_seqs(ro, s511);
	ck_assert_str_eq(got, "2,6");
	free(got);
	got = stream_seqs(ro, s600);
	ck_assert_str_eq(got, "3,4");
	free(got);
	got = stream_seqs(ro, s10k);
	ck_assert_str_eq(got, "5");
	free(got);
	got = api_dump(dir, "p", k505, NULL, &rc);
	ck_assert_int_eq(rc, TIDE_OK);
	pre = NULL;
	ck_assert_int_ne(asprintf(&pre, "%s\t[7]\n", k505), -1);
	ck_assert_str_eq(got, pre);
	free(got);
	free(pre);
	got = api_dump(dir, "p", NULL, NULL, &rc);
	ck_assert_int_eq(rc, TIDE_OK);
	ck_assert_int_eq(th_count(got, "\n"), 3);
	ck_assert_int_eq(th_count(got, "\t[7]\n"), 1);
	free(got);
	th_write(dir, "subject", s600);
	snprintf(out, sizeof out, "--subject \"$(cat '%s/subject')\"", dir);
	ck_assert_int_eq(th_log_count(dir, out), 2);
	tide_log_close(ro);
	/* a reader that stays open across the migration */
	ck_assert_int_eq(tide_log_open(&early, dir), TIDE_OK);

	/* the first writable open migrates */
	log = open_log(dir);
	ck_assert_uint_eq(meta_format(log), 2);
	ck_assert(log->once_legacy);
	key_v1(key, "/s", id600a);
	ck_assert(!has_key(log, log->ids, key, 495));
	ck_assert(has_key(log, log->ids, key, key_v2(key, "/s", id600a)));
	ck_assert(has_key(log, log->ids, key, key_v2(key, "/s", id508)));
	ck_assert(has_key(log, log->streams, key, key_v2(key, s10k, NULL)));
	ck_assert(has_key(log, log->streams, key, key_v2(key, s511, NULL)));
	ck_assert_int_eq(tidei_log_begin(log), TIDE_OK);
	/* old long ids are still duplicates, and a new one sharing 600 bytes
	 * with them is not */
	r = append(log, id600a, NULL);
	ck_assert(r.duplicate && r.seq == 3);
	r = append(log, id600b, NULL);
	ck_assert(r.duplicate && r.seq == 4);
	r = append(log, id508, NULL);
	ck_assert(r.duplicate && r.seq == 2);
	r = append(log, id10k, NULL);
	ck_assert(r.duplicate && r.seq == 5);
	r = append(log, "a", NULL);
	ck_assert(r.duplicate && r.seq == 1);
	r = append(log, id600c, s600);
	ck_assert(!r.duplicate && r.seq == 7 && r.version == 3);
	ck_assert_uint_eq(append(log, "c", s511).version, 3);
	ck_assert_uint_eq(append(log, "d", s10k).version, 2);
	/* claims: the old ones stay claimed, whatever their length */
	once_is(log, "short", 0);
	once_is(log, o509, 0);
	once_is(log, o600, 0);
	once_is(log, o10k, 0);
	once_is(log, o600new, 1);
	once_is(log, o600new, 0);
	ck_assert_int_eq(tidei_log_commit(log), TIDE_OK);
	tidei_log_close(log);

	/* the reader opened before: now format 2's keys */
	got = stream_seqs(early, s600);
	ck_assert_str_eq(got, "3,4,7");
	free(got);
	tide_log_close(early);
	/* states: the 505-byte key (L + 1 for a name of one byte) moved to the
	 * long form; lookups and prefixes longer than its clear part find it */
	got = api_dump(dir, "p", k505, NULL, &rc);
	ck_assert_int_eq(rc, TIDE_OK);
	ck_assert_int_eq(th_count(got, "\t[7]\n"), 1);
	ck_assert_uint_eq(strlen(got), 505 + 5);
	free(got);
	pre = strndup(k505, 480);
	got = api_dump(dir, "p", NULL, pre, &rc);
	ck_assert_int_eq(rc, TIDE_OK);
	ck_assert_int_eq(th_count(got, "\n"), 2);
	free(pre);
	free(got);
	pre = strndup(k505, 504);
	got = api_dump(dir, "p", NULL, pre, &rc);
	ck_assert_int_eq(rc, TIDE_OK);
	ck_assert_int_eq(th_count(got, "\n"), 1);
	ck_assert_int_eq(th_count(got, "\t[7]\n"), 1);
	free(pre);
	free(got);
	got = api_dump(dir, "p", "k", NULL, &rc);
	ck_assert_str_eq(got, "k\t[1]\n");
	free(got);
	ck_assert_int_eq(th_log_count(dir, out), 3);

	/* a second open does not migrate again, and remembers the old claims */
	log = open_log(dir);
	ck_assert(log->once_legacy);
	ck_assert_int_eq(tidei_log_begin(log), TIDE_OK);
	once_is(log, o600, 0);
	once_is(log, o10k, 0);
	ck_assert_uint_eq(append(log, "e", s600).version, 4);
	/* a format newer than this build is refused */
	{
		MDB_val k = { 6, "format" }, v;
		uint8_t raw[4];
		tidei_st32(raw, 3);
		v.mv_size = 4;
		v.mv_data = raw;
		ck_assert_int_eq(mdb_put(log->txn, log->meta, &k, &v, 0), 0);
	}
	ck_assert_int_eq(tidei_log_commit(log), TIDE_OK);
	tidei_log_close(log);
	ck_assert_int_eq(tidei_log_open(&log, dir, &opts, err), TIDE_EFORMAT);
	ck_assert_msg(strstr(err, "format 3 is not supported"), "%s", err);

	free(id508);
	free(id600a);
	free(id600b);
	free(id600c);
	free(id10k);
	free(s511);
	free(s600);
	free(s10k);
	free(o509);
	free(o600);
	free(o10k);
	free(o600new);
	free(k505);
	free(k504);
}
END_TEST

/* verify.c checks each long key's entry with tidei_pstate_check(): a value
 * that holds a key too short to be a long one is refused, and read only
 * as far as it goes (it ends here just before a page that cannot be read,
 * where copying the first bytes of a long key from it once went). */
START_TEST(state_check_short_stored_key)
{
	const size_t nl = 1, vm = 511 - nl - 6; /* projection "p", format 2 */
	long page = sysconf(_SC_PAGESIZE);
	uint8_t *mem, *end, kb[511];
	tidei_buf v = { 0 };
	MDB_val k = { nl + 5 + vm + 1, kb }, val, state;

	mem = mmap(NULL, 2 * (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
		   0);
	ck_assert_ptr_ne(mem, MAP_FAILED);
	ck_assert_int_eq(mprotect(mem + page, (size_t)page, PROT_NONE), 0);
	end = mem + page;
	memset(kb, 'k', sizeof kb);
	memcpy(kb, "p\0\0\0\0\1", 6);

	tidei_val_bin(&v, "short", 5);
	tidei_val_map(&v, 0);
	memcpy(end - v.len, v.p, v.len);
	val.mv_data = end - v.len;
	val.mv_size = v.len;
	ck_assert_int_eq(tidei_pstate_check(&k, &val, nl, 2, &state), -1);
	/* a key of vm bytes would be stored as it is, not as a long key */
	tidei_buf_reset(&v);
	{
		char key[511];
		memset(key, 'k', vm);
		tidei_val_bin(&v, key, vm);
	}
	ck_assert_uint_le(v.len, (size_t)page);
	memcpy(end - v.len, v.p, v.len);
	val.mv_data = end - v.len;
	val.mv_size = v.len;
	ck_assert_int_eq(tidei_pstate_check(&k, &val, nl, 2, &state), -1);
	tidei_buf_free(&v);
	munmap(mem, 2 * (size_t)page);
}
END_TEST

Suite *
keys_suite(void)
{
	Suite *s = suite_create("keys");
	TCase *tc = tcase_create("stored");

	tcase_add_checked_fixture(tc, NULL, th_cleanup);
	tcase_add_test(tc, long_ids_and_subjects_by_blake2b);
	tcase_add_test(tc, format1_log_migrates);
	tcase_add_test(tc, state_check_short_stored_key);
	suite_add_tcase(s, tc);

	tc = tcase_create("daemon");
	tcase_add_checked_fixture(tc, NULL, th_cleanup);
	tcase_add_test(tc, long_keys_in_projections);
	tcase_add_test(tc, field_path_keys_and_empty_keys);
	tcase_set_timeout(tc, 600);
	suite_add_tcase(s, tc);
	return s;
}
