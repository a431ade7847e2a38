/*
 * test_log.c - the LMDB log: appends in transactions, gapless seqs,
 * duplicates, stream versions and the prev chain, reopening, map growth,
 * the format check, and a randomised comparison with a plain model.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "helpers.h"
#include "log.h"
#include "tide.h"

/* Build a record for (source, id, subject, type). */
static tidei_buf *
rec(const char *source, const char *id, const char *subject, const char *type)
{
	static tidei_buf out;
	tidei_evb b;

	memset(&b, 0, sizeof b);
	tidei_evb_reset(&b);
	tidei_evb_string(&b, "specversion", 11, "1.0", 3);
	tidei_evb_string(&b, "source", 6, source, strlen(source));
	tidei_evb_string(&b, "id", 2, id, strlen(id));
	tidei_evb_string(&b, "type", 4, type, strlen(type));
	if (subject)
		tidei_evb_string(&b, "subject", 7, subject, strlen(subject));
	tidei_buf_reset(&out);
	ck_assert_msg(tidei_evb_finish(&b, &out) == 0, "%s", b.err);
	tidei_evb_free(&b);
	return &out;
}

static tidei_log *
open_log(const char *dir, uint64_t map)
{
	tidei_log_opts o = { 0 };
	tidei_log *log;
	char err[TIDEI_ERRLEN];

	o.map_size = map;
	ck_assert_msg(tidei_log_open(&log, dir, &o, err) == TIDE_OK, "%s", err);
	return log;
}

static tidei_append
append(tidei_log *log, const char *source, const char *id, const char *subject)
{
	tidei_buf *r = rec(source, id, subject, "t");
	tidei_append res;

	ck_assert_int_eq(tidei_log_append(log, r->p, r->len, tidei_now(), -1, &res), TIDE_OK);
	return res;
}

START_TEST(append_seq_and_dedupe)
{
	const char *dir = th_tmpdir();
	tidei_log *log = open_log(dir, 0);
	tidei_append a;
	MDB_txn *txn;
	struct tide_event ev;

	ck_assert_int_eq(tidei_log_begin(log), TIDE_OK);
	a = append(log, "/s", "1", "k");
	ck_assert_uint_eq(a.seq, 1);
	ck_assert_uint_eq(a.version, 1);
	a = append(log, "/s", "2", "k");
	ck_assert_uint_eq(a.seq, 2);
	ck_assert_uint_eq(a.version, 2);
	/* the same id from another source is a different event */
	a = append(log, "/other", "1", NULL);
	ck_assert_uint_eq(a.seq, 3);
	ck_assert_uint_eq(a.version, 0);
	/* a repeat inside the same transaction is a duplicate */
	a = append(log, "/s", "2", "k");
	ck_assert(a.duplicate);
	ck_assert_uint_eq(a.seq, 2);
	ck_assert_int_eq(tidei_log_commit(log), TIDE_OK);

	/* and after the commit too; no seq is used up */
	ck_assert_int_eq(tidei_log_begin(log), TIDE_OK);
	a = append(log, "/s", "1", "k");
	ck_assert(a.duplicate);
	ck_assert_uint_eq(a.seq, 1);
	a = append(log, "/s", "3", "k");
	ck_assert_uint_eq(a.seq, 4);
	ck_assert_uint_eq(a.version, 3);
	ck_assert_int_eq(tidei_log_commit(log), TIDE_OK);

	ck_assert_int_eq(tidei_log_read_begin(log, &txn), TIDE_OK);
	ck_assert_int_eq(tidei_log_get(log, txn, 4, &ev), TIDE_OK);
	ck_assert_str_eq(ev.attr[TIDEI_A_ID], "3");
	ck_assert_uint_eq(ev.prev, 2);
	ck_assert_int_eq(tidei_log_get(log, txn, 5, &ev), TIDE_ENOTFOUND);
	tidei_log_read_end(log);
	tidei_log_close(log);
}
END_TEST

/* Optimistic concurrency: an append that expects a stream version. */
START_TEST(expected_version)
{
	const char *dir = th_tmpdir();
	tidei_log *log = open_log(dir, 0);
	tidei_append a;
	tidei_buf *r;

	ck_assert_int_eq(tidei_log_begin(log), TIDE_OK);
	r = rec("/s", "1", "acct", "t");
	ck_assert_int_eq(tidei_log_append(log, r->p, r->len, tidei_now(), 0, &a), TIDE_OK);
	ck_assert_uint_eq(a.version, 1);
	/* a stale expectation is refused with the current version */
	r = rec("/s", "2", "acct", "t");
	ck_assert_int_eq(tidei_log_append(log, r->p, r->len, tidei_now(), 0, &a), TIDE_ECONFLICT);
	ck_assert_uint_eq(a.version, 1);
	ck_assert_ptr_nonnull(strstr(log->err, "is at version 1, not 0"));
	/* ... and nothing was written: the id is still free, the seq unused */
	ck_assert_int_eq(tidei_log_append(log, r->p, r->len, tidei_now(), 1, &a), TIDE_OK);
	ck_assert_uint_eq(a.seq, 2);
	ck_assert_uint_eq(a.version, 2);
	/* a repeat of a stored event is a duplicate, whatever it expected */
	r = rec("/s", "1", "acct", "t");
	ck_assert_int_eq(tidei_log_append(log, r->p, r->len, tidei_now(), 0, &a), TIDE_OK);
	ck_assert(a.duplicate);
	ck_assert_uint_eq(a.seq, 1);
	ck_assert_int_eq(tidei_log_commit(log), TIDE_OK);
	/* after the commit the cached head is gone: the stored one is used */
	ck_assert_int_eq(tidei_log_begin(log), TIDE_OK);
	r = rec("/s", "3", "acct", "t");
	ck_assert_int_eq(tidei_log_append(log, r->p, r->len, tidei_now(), 1, &a), TIDE_ECONFLICT);
	ck_assert_uint_eq(a.version, 2);
	ck_assert_int_eq(tidei_log_append(log, r->p, r->len, tidei_now(), 2, &a), TIDE_OK);
	ck_assert_int_eq(tidei_log_commit(log), TIDE_OK);
	ck_assert_uint_eq(log->committed, 3);
	tidei_log_close(log);
}
END_TEST

START_TEST(abort_leaves_no_trace)
{
	const char *dir = th_tmpdir();
	tidei_log *log = open_log(dir, 0);
	tidei_append a;

	ck_assert_int_eq(tidei_log_begin(log), TIDE_OK);
	append(log, "/s", "1", "k");
	tidei_log_abort(log);
	ck_assert_int_eq(tidei_log_begin(log), TIDE_OK);
	a = append(log, "/s", "1", "k");
	ck_assert(!a.duplicate);
	ck_assert_uint_eq(a.seq, 1);
	ck_assert_uint_eq(a.version, 1);
	ck_assert_int_eq(tidei_log_commit(log), TIDE_OK);
	tidei_log_close(log);
}
END_TEST

/* Stream heads stay in memory between turns, and an aborted turn's
 * changes to them are forgotten with it, as is a failed turn's. */
START_TEST(stream_heads_across_turns_and_aborts)
{
	const char *dir = th_tmpdir();
	tidei_log *log = open_log(dir, 0);
	tidei_append a;

	ck_assert_int_eq(tidei_log_begin(log), TIDE_OK);
	append(log, "/s", "1", "k");
	append(log, "/s", "2", "j");
	ck_assert_int_eq(tidei_log_commit(log), TIDE_OK);
	ck_assert_int_eq(tidei_log_begin(log), TIDE_OK);
	a = append(log, "/s", "3", "k");
	ck_assert_uint_eq(a.version, 2);
	a = append(log, "/s", "4", "new");
	ck_assert_uint_eq(a.version, 1);
	tidei_log_abort(log);
	for (int turn = 0; turn < 3; turn++) {
		ck_assert_int_eq(tidei_log_begin(log), TIDE_OK);
		a = append(log, "/s", turn == 0 ? "5" : turn == 1 ? "6" : "7", "k");
		ck_assert_uint_eq(a.version, 2 + (uint64_t)turn);
		ck_assert_uint_eq(a.seq, 3 + (uint64_t)turn);
		ck_assert_int_eq(tidei_log_commit(log), TIDE_OK);
	}
	ck_assert_int_eq(tidei_log_begin(log), TIDE_OK);
	a = append(log, "/s", "8", "new");
	ck_assert_uint_eq(a.version, 1);
	a = append(log, "/s", "9", "j");
	ck_assert_uint_eq(a.version, 2);
	ck_assert_int_eq(tidei_log_commit(log), TIDE_OK);
	tidei_log_close(log);
	/* what was stored agrees with what was cached */
	log = open_log(dir, 0);
	ck_assert_int_eq(tidei_log_begin(log), TIDE_OK);
	a = append(log, "/s", "10", "k");
	ck_assert_uint_eq(a.version, 5);
	a = append(log, "/s", "11", "new");
	ck_assert_uint_eq(a.version, 2);
	ck_assert_int_eq(tidei_log_commit(log), TIDE_OK);
	tidei_log_close(log);
}
END_TEST

START_TEST(reopen_continues)
{
	const char *dir = th_tmpdir();
	tidei_log *log = open_log(dir, 0);
	tidei_append a;
	int64_t last;

	ck_assert_int_eq(tidei_log_begin(log), TIDE_OK);
	append(log, "/s", "1", "k");
	append(log, "/s", "2", "k");
	ck_assert_int_eq(tidei_log_commit(log), TIDE_OK);
	last = log->last_recorded;
	tidei_log_close(log);

	log = open_log(dir, 0);
	ck_assert_uint_eq(log->committed, 2);
	ck_assert_int_eq(log->last_recorded, last);
	ck_assert_int_eq(tidei_log_begin(log), TIDE_OK);
	a = append(log, "/s", "2", "k");
	ck_assert(a.duplicate);
	a = append(log, "/s", "3", "k");
	ck_assert_uint_eq(a.seq, 3);
	ck_assert_uint_eq(a.version, 3);
	ck_assert_int_eq(tidei_log_commit(log), TIDE_OK);
	tidei_log_close(log);
}
END_TEST

START_TEST(one_writer_per_directory)
{
	const char *dir = th_tmpdir();
	tidei_log *log = open_log(dir, 0), *other;
	tidei_log_opts o = { 0 };
	char err[TIDEI_ERRLEN];

	ck_assert_int_eq(tidei_log_open(&other, dir, &o, err), TIDE_EBUSY);
	ck_assert_ptr_nonnull(strstr(err, "in use by another tide process"));
	/* readers are welcome */
	o.readonly = 1;
	ck_assert_int_eq(tidei_log_open(&other, dir, &o, err), TIDE_OK);
	tidei_log_close(other);
	tidei_log_close(log);
}
END_TEST

START_TEST(format_is_checked)
{
	const char *dir = th_tmpdir();
	tidei_log *log = open_log(dir, 0);
	MDB_val k = { 6, "format" }, v;
	uint8_t raw[4] = { 99, 0, 0, 0 };
	tidei_log_opts o = { 0 };
	char err[TIDEI_ERRLEN];

	ck_assert_int_eq(tidei_log_begin(log), TIDE_OK);
	v.mv_size = 4;
	v.mv_data = raw;
	ck_assert_int_eq(mdb_put(log->txn, log->meta, &k, &v, 0), 0);
	ck_assert_int_eq(tidei_log_commit(log), TIDE_OK);
	tidei_log_close(log);
	ck_assert_int_eq(tidei_log_open(&log, dir, &o, err), TIDE_EFORMAT);
	ck_assert_ptr_nonnull(strstr(err, "format 99 is not supported"));
}
END_TEST

START_TEST(missing_log_for_readers)
{
	const char *dir = th_tmpdir();
	tidei_log_opts o = { 1, 0, 0, 0 };
	tidei_log *log;
	char err[TIDEI_ERRLEN];

	ck_assert_int_eq(tidei_log_open(&log, dir, &o, err), TIDE_ENOTFOUND);
	ck_assert_ptr_nonnull(strstr(err, "no log in"));
}
END_TEST

START_TEST(map_grows_when_full)
{
	/* A 1 MiB map fills after a few thousand events: the log grows it
	 * before a turn, or after MDB_MAP_FULL when one turn is too big. */
	const char *dir = th_tmpdir();
	tidei_log *log = open_log(dir, 1 << 20);
	uint64_t start = log->map_size;
	char id[32];
	int full = 0;

	for (int turn = 0; turn < 40; turn++) {
		int rc;
	again:
		ck_assert_int_eq(tidei_log_begin(log), TIDE_OK);
		for (int i = 0; i < 500; i++) {
			tidei_buf *r;
			tidei_append a;
			snprintf(id, sizeof id, "%d-%d", turn, i);
			r = rec("/source/with/a/long/name/to/take/room", id, "subject", "t");
			rc = tidei_log_append(log, r->p, r->len, tidei_now(), -1, &a);
			if (rc == TIDE_EFULL)
				break;
			ck_assert_int_eq(rc, TIDE_OK);
		}
		if (rc == TIDE_OK)
			rc = tidei_log_commit(log);
		else
			tidei_log_abort(log);
		if (rc == TIDE_EFULL) {
			full++;
			ck_assert_int_eq(tidei_log_grow(log), TIDE_OK);
			goto again;
		}
		ck_assert_int_eq(rc, TIDE_OK);
	}
	ck_assert_uint_eq(log->committed, 40 * 500);
	ck_assert_uint_gt(log->map_size, start);
	tidei_log_close(log);
}
END_TEST

START_TEST(readers_see_commits_not_open_turns)
{
	const char *dir = th_tmpdir();
	tidei_log *w = open_log(dir, 0);
	tide_log *r;
	tide_log_stat st;

	ck_assert_int_eq(tidei_log_begin(w), TIDE_OK);
	append(w, "/s", "1", "k");
	ck_assert_int_eq(tidei_log_commit(w), TIDE_OK);
	ck_assert_int_eq(tide_log_open(&r, dir), TIDE_OK);
	ck_assert_int_eq(tidei_log_begin(w), TIDE_OK);
	append(w, "/s", "2", "k");
	ck_assert_int_eq(tide_log_stat_get(r, &st), TIDE_OK);
	ck_assert_uint_eq(st.events, 1);
	ck_assert_int_eq(tidei_log_commit(w), TIDE_OK);
	ck_assert_int_eq(tide_log_stat_get(r, &st), TIDE_OK);
	ck_assert_uint_eq(st.events, 2);
	ck_assert_uint_eq(st.last_seq, 2);
	ck_assert_uint_eq(st.streams, 1);
	tide_log_close(r);
	tidei_log_close(w);
}
END_TEST

/* Random appends against a plain in-memory model of ids and streams. */
START_TEST(matches_reference_model)
{
	enum { N = 3000, SUBJECTS = 17, IDS = 2000 };
	const char *dir = th_tmpdir();
	tidei_log *log = open_log(dir, 0);
	static uint64_t seq_of_id[IDS];
	static uint64_t version_of[SUBJECTS];
	static uint64_t subject_of_seq[N + 1];
	uint64_t next = 1;
	unsigned seed = 12345;
	tide_log *r;

	memset(seq_of_id, 0, sizeof seq_of_id);
	memset(version_of, 0, sizeof version_of);
	for (int i = 0; i < N;) {
		int batch = 1 + rand_r(&seed) % 50;
		ck_assert_int_eq(tidei_log_begin(log), TIDE_OK);
		for (int j = 0; j < batch && i < N; j++, i++) {
			int id = rand_r(&seed) % IDS, subj = rand_r(&seed) % (SUBJECTS + 1);
			char ids[16], subs[16];
			tidei_append a;
			snprintf(ids, sizeof ids, "%d", id);
			snprintf(subs, sizeof subs, "s%d", subj);
			a = append(log, "/m", ids, subj == SUBJECTS ? NULL : subs);
			if (seq_of_id[id]) {
				ck_assert(a.duplicate);
				ck_assert_uint_eq(a.seq, seq_of_id[id]);
				continue;
			}
			ck_assert(!a.duplicate);
			ck_assert_uint_eq(a.seq, next);
			seq_of_id[id] = next;
			subject_of_seq[next] = (uint64_t)subj;
			next++;
			if (subj < SUBJECTS)
				ck_assert_uint_eq(a.version, ++version_of[subj]);
		}
		ck_assert_int_eq(tidei_log_commit(log), TIDE_OK);
	}
	/* every stream reads back complete, in order, with its versions */
	ck_assert_int_eq(tide_log_open(&r, dir), TIDE_OK);
	for (int s = 0; s < SUBJECTS; s++) {
		char subs[16];
		tide_filter f = { 0 };
		tide_cursor *c;
		const tide_event *ev;
		uint64_t want = 1, last = 0;
		snprintf(subs, sizeof subs, "s%d", s);
		f.subject = subs;
		ck_assert_int_eq(tide_cursor_open(r, &f, &c), TIDE_OK);
		while (tide_cursor_next(c, &ev) == TIDE_OK) {
			ck_assert_uint_eq(tide_event_version(ev), want++);
			ck_assert_uint_gt(tide_event_seq(ev), last);
			last = tide_event_seq(ev);
			ck_assert_uint_eq(subject_of_seq[last], (uint64_t)s);
		}
		ck_assert_uint_eq(want - 1, version_of[s]);
		tide_cursor_close(c);
	}
	tide_log_close(r);
	tidei_log_close(log);
}
END_TEST

START_TEST(cursor_filters)
{
	const char *dir = th_tmpdir();
	tidei_log *log = open_log(dir, 0);
	tide_log *r;
	tide_cursor *c;
	const tide_event *ev;
	tide_filter f = { 0 };
	int n = 0;

	ck_assert_int_eq(tidei_log_begin(log), TIDE_OK);
	for (int i = 1; i <= 10; i++) {
		tidei_buf *b;
		tidei_append a;
		char id[8];
		snprintf(id, sizeof id, "%d", i);
		b = rec("/s", id, NULL, i % 2 ? "order.placed" : "payment.done");
		ck_assert_int_eq(tidei_log_append(log, b->p, b->len, tidei_now(), -1, &a), TIDE_OK);
	}
	ck_assert_int_eq(tidei_log_commit(log), TIDE_OK);
	ck_assert_int_eq(tide_log_open(&r, dir), TIDE_OK);
	f.from = 3;
	f.until = 8;
	f.type = "order.*";
	ck_assert_int_eq(tide_cursor_open(r, &f, &c), TIDE_OK);
	while (tide_cursor_next(c, &ev) == TIDE_OK) {
		ck_assert_str_eq(tide_event_attr(ev, "type", NULL), "order.placed");
		ck_assert_uint_ge(tide_event_seq(ev), 3);
		ck_assert_uint_le(tide_event_seq(ev), 8);
		n++;
	}
	ck_assert_int_eq(n, 3); /* 3, 5, 7 */
	tide_cursor_close(c);
	tide_log_close(r);
	tidei_log_close(log);
}
END_TEST

START_TEST(patterns)
{
	ck_assert(tidei_pattern_match("*", 1, "a.b", 3));
	ck_assert(tidei_pattern_match("a.*", 3, "a.b", 3));
	ck_assert(tidei_pattern_match("a.*", 3, "a.b.c", 5));
	ck_assert(!tidei_pattern_match("a.*", 3, "ab.c", 4));
	ck_assert(!tidei_pattern_match("a.*", 3, "a", 1));
	ck_assert(tidei_pattern_match("a.b", 3, "a.b", 3));
	ck_assert(!tidei_pattern_match("a.b", 3, "a.bc", 4));
}
END_TEST

START_TEST(long_keys_stay_distinct)
{
	/* ids and subjects past LMDB's key limit are hashed, not truncated */
	const char *dir = th_tmpdir();
	tidei_log *log = open_log(dir, 0);
	char a[900], b[900];
	tidei_append r1, r2, r3;

	memset(a, 'x', sizeof a - 1);
	a[sizeof a - 1] = '\0';
	memcpy(b, a, sizeof b);
	b[sizeof b - 2] = 'y';
	ck_assert_int_eq(tidei_log_begin(log), TIDE_OK);
	r1 = append(log, "/s", a, a);
	r2 = append(log, "/s", b, b);
	r3 = append(log, "/s", a, a);
	ck_assert(!r1.duplicate && !r2.duplicate && r3.duplicate);
	ck_assert_uint_eq(r2.version, 1);
	ck_assert_int_eq(tidei_log_commit(log), TIDE_OK);
	tidei_log_close(log);
}
END_TEST

Suite *
log_suite(void)
{
	Suite *s = suite_create("log");
	TCase *tc = tcase_create("append");

	tcase_add_checked_fixture(tc, NULL, th_cleanup);
	tcase_add_test(tc, append_seq_and_dedupe);
	tcase_add_test(tc, abort_leaves_no_trace);
	tcase_add_test(tc, stream_heads_across_turns_and_aborts);
	tcase_add_test(tc, expected_version);
	tcase_add_test(tc, reopen_continues);
	tcase_add_test(tc, long_keys_stay_distinct);
	tcase_add_test(tc, matches_reference_model);
	suite_add_tcase(s, tc);

	tc = tcase_create("environment");
	tcase_add_checked_fixture(tc, NULL, th_cleanup);
	tcase_add_test(tc, one_writer_per_directory);
	tcase_add_test(tc, format_is_checked);
	tcase_add_test(tc, missing_log_for_readers);
	tcase_add_test(tc, map_grows_when_full);
	tcase_set_timeout(tc, 60);
	suite_add_tcase(s, tc);

	tc = tcase_create("read");
	tcase_add_checked_fixture(tc, NULL, th_cleanup);
	tcase_add_test(tc, readers_see_commits_not_open_turns);
	tcase_add_test(tc, cursor_filters);
	tcase_add_test(tc, patterns);
	suite_add_tcase(s, tc);
	return s;
}
