/*
 * test_damage.c - damaged and missing files, permissions and a full disk:
 *
 *  - a data.mdb truncated at its tail (several sizes) is refused with a
 *    clear error by tide_log_open(), the writable open, `tide run`,
 *    `tide stat`, `tide log`, `tide query` and `tide dlq`, and nothing
 *    dies of SIGBUS; an empty or deleted data.mdb in a directory that held
 *    a log is refused rather than replaced by an empty log;
 *  - `tide verify` passes a clean log that uses every database (also while
 *    the engine writes), names what is wrong in a log edited behind its
 *    back, and reports random bytes over a page as damage, exit 1, even
 *    when LMDB crashes reading them;
 *  - `tide backup` copies a log while the engine ingests: the copy opens,
 *    verifies clean, holds every event acknowledged before the backup and
 *    runs as a data directory;
 *  - a new data directory is 0700 and the files Tide makes in it 0600;
 *  - a full disk (the tests/enospc.c shim, preloaded into `tide run`)
 *    reaches producers as "disk full" and the engine recovers by itself
 *    once there is room, losing nothing it acknowledged.
 */
#define _GNU_SOURCE
#include <check.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "event.h"
#include "helpers.h"
#include "log.h"
#include "tide.h"

/* @p dir/@p name in @p out (600 bytes), for paths a test keeps. */
static char *
join(char *out, const char *dir, const char *name)
{
	snprintf(out, 600, "%.400s/%.150s", dir, name);
	return out;
}

/* @p dir/@p name for a passing use: the result is overwritten eight calls
 * later. */
static const char *
sub(const char *dir, const char *name)
{
	static char path[8][600];
	static int slot;
	char *p = path[slot++ & 7], base[600];

	snprintf(base, sizeof base, "%s", dir); /* @p dir may be an earlier result */
	snprintf(p, 600, "%.400s/%.150s", base, name);
	return p;
}

static int
mode_of(const char *path)
{
	struct stat sb;

	ck_assert_msg(stat(path, &sb) == 0, "%s is missing", path);
	return (int)(sb.st_mode & 07777);
}

static long long
size_of(const char *path)
{
	struct stat sb;

	return stat(path, &sb) == 0 ? (long long)sb.st_size : -1;
}

/* ------------------------------------------------------------------------
 * Logs made in this process
 * ------------------------------------------------------------------------ */

/* A record for (source, id, subject) with an extension of @p pad bytes. */
static tidei_buf *
rec(const char *source, const char *id, const char *subject, size_t pad)
{
	static tidei_buf out;
	static char fill[4096];
	tidei_evb b;

	memset(fill, 'p', sizeof fill);
	memset(&b, 0, sizeof b);
	tidei_evb_reset(&b);
	tidei_evb_string(&b, "specversion", 11, "1.0", 3);
	tidei_evb_string(&b, "source", 6, source, strlen(source));
	tidei_evb_string(&b, "id", 2, id, strlen(id));
	tidei_evb_string(&b, "type", 4, "t.x", 3);
	if (subject != NULL)
		tidei_evb_string(&b, "subject", 7, subject, strlen(subject));
	if (pad > 0)
		tidei_evb_string(&b, "pad", 3, fill, pad < sizeof fill ? pad : sizeof fill);
	tidei_buf_reset(&out);
	ck_assert_msg(tidei_evb_finish(&b, &out) == 0, "%s", b.err);
	tidei_evb_free(&b);
	return &out;
}

/* A log of @p n events (7 streams, some events without subject) in
 * @p turns transactions; returns the size its pages need. */
static uint64_t
make_log(const char *dir, int n, int turns, size_t pad)
{
	tidei_log_opts o = { 0 };
	tidei_log *log;
	char err[TIDEI_ERRLEN], id[32], subject[16];
	uint64_t need;
	int per = (n + turns - 1) / turns;

	ck_assert_msg(tidei_log_open(&log, dir, &o, err) == TIDE_OK, "%s", err);
	for (int i = 0; i < n;) {
		ck_assert_int_eq(tidei_log_begin(log), TIDE_OK);
		for (int j = 0; j < per && i < n; j++, i++) {
			tidei_buf *r;
			tidei_append a;
			snprintf(id, sizeof id, "e%d", i);
			snprintf(subject, sizeof subject, "s%d", i % 7);
			r = rec("/src", id, i % 5 == 4 ? NULL : subject, pad);
			ck_assert_int_eq(tidei_log_append(log, r->p, r->len, tidei_now(), -1, &a),
					 TIDE_OK);
		}
		ck_assert_int_eq(tidei_log_commit(log), TIDE_OK);
	}
	tidei_log_close(log);
	/* what the pages need, as a reader sees it */
	o.readonly = 1;
	ck_assert_msg(tidei_log_open(&log, dir, &o, err) == TIDE_OK, "%s", err);
	need = log->need_size;
	ck_assert_uint_eq(log->file_size, need);
	tidei_log_close(log);
	return need;
}

static void
copy_dir(const char *from, const char *to)
{
	ck_assert_int_eq(th_sh(NULL, 0, "rm -rf '%s' && cp -a '%s' '%s'", to, from, to), 0);
}

/* ------------------------------------------------------------------------
 * Truncated, empty and missing files
 * ------------------------------------------------------------------------ */

/* Each reader and writer refuses @p data with @p needle in its message,
 * and exits with status 1 (not a signal). */
static void
expect_refusal(const char *data, const char *needle)
{
	static const char *const cmds[] = { "stat", "log", "query nothing", "dlq list" };
	tidei_log_opts o = { 0 };
	tidei_log *log;
	tide_log *reader;
	char err[TIDEI_ERRLEN], out[8192];

	ck_assert_int_eq(tide_log_open(&reader, data), TIDE_EIO);
	ck_assert_ptr_null(reader);
	ck_assert_msg(strstr(tide_errmsg(), needle) != NULL, "tide_log_open: %s", tide_errmsg());
	ck_assert_int_eq(tidei_log_open(&log, data, &o, err), TIDE_EIO);
	ck_assert_msg(strstr(err, needle) != NULL, "writable open: %s", err);
	for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++) {
		int st =
			th_sh(out, sizeof out, "'%s' %s --data '%s' 2>&1", TIDE_BIN, cmds[i], data);
		ck_assert_msg(st == 1, "tide %s: status %d: %s", cmds[i], st, out);
		ck_assert_msg(strstr(out, needle) != NULL, "tide %s: %s", cmds[i], out);
	}
	ck_assert_int_eq(
		th_sh(out, sizeof out, "timeout 30 '%s' run --data '%s' 2>&1", TIDE_BIN, data), 1);
	ck_assert_msg(strstr(out, needle) != NULL, "tide run: %s", out);
	ck_assert_msg(strstr(out, "tide backup") != NULL, "no way back offered: %s", out);
}

START_TEST(truncated_is_refused)
{
	const char *dir = th_tmpdir();
	char orig[600], data[600];
	uint64_t need = make_log(join(orig, dir, "orig"), 2000, 4, 300), psize = 4096;
	tide_log *reader;
	/* two pages (only the meta pages left), half, one page short, a byte short */
	uint64_t sizes[4];

	psize = (uint64_t)sysconf(_SC_PAGESIZE);
	ck_assert_uint_gt(need, 16 * psize);
	sizes[0] = 2 * psize;
	sizes[1] = need / 2;
	sizes[2] = need - psize;
	sizes[3] = need - 1;
	join(data, dir, "cut");
	for (int i = 0; i < 4; i++) {
		char want[64];
		copy_dir(orig, data);
		ck_assert_int_eq(truncate(sub(data, "data.mdb"), (off_t)sizes[i]), 0);
		snprintf(want, sizeof want, "truncated: %llu bytes", (unsigned long long)sizes[i]);
		expect_refusal(data, want);
		/* the refusal changed nothing */
		ck_assert_int_eq(size_of(sub(data, "data.mdb")), (long long)sizes[i]);
	}
	/* the original is fine */
	ck_assert_int_eq(tide_log_open(&reader, orig), TIDE_OK);
	tide_log_close(reader);
}
END_TEST

START_TEST(empty_or_missing_is_refused)
{
	const char *dir = th_tmpdir();
	char data[600];
	join(data, dir, "data");
	tidei_log_opts o = { 0 };
	tidei_log *log;
	tide_log *reader;
	char err[TIDEI_ERRLEN], out[8192];
	th_daemon d;

	make_log(data, 100, 1, 0);
	ck_assert_int_eq(mode_of(sub(data, TIDEI_LOG_MARKER)), 0600);

	/* truncated to nothing */
	ck_assert_int_eq(truncate(sub(data, "data.mdb"), 0), 0);
	expect_refusal(data, "is empty (0 bytes)");
	ck_assert_int_eq(size_of(sub(data, "data.mdb")), 0);

	/* deleted */
	ck_assert_int_eq(unlink(sub(data, "data.mdb")), 0);
	expect_refusal(data, "data.mdb is missing");
	ck_assert_int_eq(size_of(sub(data, "data.mdb")), -1);

	/* without the marker, an empty data.mdb is no log to a reader (an
	 * engine may be creating it) but still refused by a writer */
	ck_assert_int_eq(unlink(sub(data, TIDEI_LOG_MARKER)), 0);
	th_write(data, "data.mdb", "");
	ck_assert_int_eq(tide_log_open(&reader, data), TIDE_ENOTFOUND);
	ck_assert_int_eq(tidei_log_open(&log, data, &o, err), TIDE_EIO);
	ck_assert_msg(strstr(err, "or remove data.mdb to start") != NULL, "%s", err);
	ck_assert_int_eq(unlink(sub(data, "data.mdb")), 0);

	/* starting afresh is deliberate: the marker is gone */
	ck_assert_int_eq(tide_log_open(&reader, data), TIDE_ENOTFOUND);
	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s'", data), 0);
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' publish -q --data '%s' --type a --id 1",
			       TIDE_BIN, data),
			 0);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
	ck_assert_int_eq(th_log_count(data, ""), 1);
	ck_assert_int_eq(mode_of(sub(data, TIDEI_LOG_MARKER)), 0600);

	/* a directory from before the marker gets one on its first writable open */
	ck_assert_int_eq(unlink(sub(data, TIDEI_LOG_MARKER)), 0);
	o.readonly = 1;
	ck_assert_int_eq(tidei_log_open(&log, data, &o, err), TIDE_OK);
	tidei_log_close(log);
	ck_assert_int_eq(size_of(sub(data, TIDEI_LOG_MARKER)), -1);
	o.readonly = 0;
	ck_assert_int_eq(tidei_log_open(&log, data, &o, err), TIDE_OK);
	tidei_log_close(log);
	ck_assert_int_eq(mode_of(sub(data, TIDEI_LOG_MARKER)), 0600);
}
END_TEST

/* ------------------------------------------------------------------------
 * tide verify
 * ------------------------------------------------------------------------ */

typedef struct tally {
	long problems[16];
	long total;
	int databases;
	sbuf text;
} tally;

static const char *const dbs[] = { "file",    "meta",        "events",  "ids",
				   "streams", "consumers",   "pending", "dead",
				   "once",    "projections", "state",   "free" };

static int
db_index(const char *db)
{
	for (int i = 0; i < (int)(sizeof dbs / sizeof *dbs); i++)
		if (strcmp(dbs[i], db) == 0)
			return i;
	ck_abort_msg("unknown database %s", db);
	return -1;
}

static int
tally_cb(void *ud, const tide_verify_item *it)
{
	tally *t = ud;

	if (it->kind == TIDE_VERIFY_PROBLEM) {
		t->problems[db_index(it->db)]++;
		t->total++;
		sb_printf(&t->text, "%s [%s] %llu: %s\n", it->db, it->key,
			  (unsigned long long)it->seq, it->what);
	} else {
		ck_assert_int_eq(it->kind, TIDE_VERIFY_DATABASE);
		ck_assert_int_eq((long)it->problems, t->problems[db_index(it->db)]);
		t->databases++;
	}
	return 0;
}

/* Verify @p data through the API; the problems' text is in t->text. */
static void
verify_api(const char *data, tally *t)
{
	uint64_t n = 99;

	free(t->text.p);
	memset(t, 0, sizeof *t);
	ck_assert_msg(tide_log_verify(data, tally_cb, t, &n) == TIDE_OK, "%s", tide_errmsg());
	ck_assert_int_eq((long)n, t->total);
	ck_assert_int_eq(t->databases, (int)(sizeof dbs / sizeof *dbs));
}

static const char clean_script[] =
	"local tide = require 'tide'\n"
	"tide.on('in.*', function(ev)\n"
	"  if ev.data.n % 9 == 0 then error('unlucky ' .. ev.data.n) end\n"
	"  if tide.once('k' .. ev.data.n % 50) then\n"
	"    tide.emit{ type = 'out.x', subject = ev.subject, data = { n = ev.data.n } }\n"
	"  end\n"
	"end, { name = 'worker', from = 'beginning', retries = 0 })\n"
	"tide.on('in.*', function(ev)\n"
	"  if ev.data.n % 4 == 0 then error('later') end\n"
	"end, { name = 'slow', from = 'beginning', retries = 50, backoff = 30 })\n"
	"tide.projection('per_subject', {\n"
	"  version = 1,\n"
	"  on = { ['*'] = function(s, ev) s.n = (s.n or 0) + 1; s.last = ev.seq;\n"
	"                 s.tags = tide.array({ ev.type, 1.5, true }) end },\n"
	"})\n";

/* A log that uses every database: events with and without subject (a
 * long one too), long ids, consumers with checkpoints, retries and dead
 * letters, tide.once claims, a projection's state. */
static void
busy_log(const char *dir, const char *data, th_daemon *d)
{
	char out[8192], longid[700], longsub[700];
	FILE *f;

	memset(longid, 'i', 600);
	longid[600] = '\0';
	memset(longsub, 'S', 600);
	longsub[600] = '\0';
	th_write(dir, "clean.lua", clean_script);
	f = fopen(sub(dir, "in.ndjson"), "w");
	ck_assert_ptr_nonnull(f);
	for (int i = 1; i <= 400; i++)
		fprintf(f,
			"{\"specversion\":\"1.0\",\"id\":\"%s%d\",\"source\":\"/busy\","
			"\"type\":\"in.x\",\"subject\":\"%s%d\",\"data\":{\"n\":%d,"
			"\"note\":\"%s\"}}\n",
			i % 10 == 0 ? longid : "e", i, i % 25 == 0 ? longsub : "s", i % 13, i,
			i % 2 ? "odd" : "even");
	for (int i = 1; i <= 20; i++)
		fprintf(f,
			"{\"specversion\":\"1.0\",\"id\":\"plain%d\",\"source\":\"/busy\","
			"\"type\":\"other\"}\n",
			i);
	fclose(f);
	ck_assert_int_eq(
		th_daemon_spawn(d, data, "--data '%s' --script '%s'", data, sub(dir, "clean.lua")),
		0);
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' publish --data '%s' < '%s' 2>&1", TIDE_BIN,
			       data, sub(dir, "in.ndjson")),
			 0);
	ck_assert_msg(strstr(out, "420 stored") != NULL, "%s", out);
	ck_assert(th_wait_settled(data, "worker", 420, 20000));
}

START_TEST(verify_clean_log)
{
	const char *dir = th_tmpdir();
	char data[600];
	join(data, dir, "data");
	char out[16384];
	th_daemon d;
	tally t = { .total = 0 };
	uint64_t pending = 0, dead = 0;
	tide_log *log;

	busy_log(dir, data, &d);
	/* every database has something in it */
	ck_assert_int_eq(tide_log_open(&log, data), TIDE_OK);
	ck_assert_int_eq(tide_log_consumer_backlog(log, "slow", &pending, NULL), TIDE_OK);
	ck_assert_int_eq(tide_log_consumer_backlog(log, "worker", NULL, &dead), TIDE_OK);
	tide_log_close(log);
	ck_assert_uint_gt(pending, 0);
	ck_assert_uint_gt(dead, 0);

	/* while the engine runs (and retries) */
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' verify --data '%s' 2>&1", TIDE_BIN, data), 0);
	ck_assert_msg(strstr(out, "no damage found") != NULL, "%s", out);
	verify_api(data, &t);
	ck_assert_msg(t.total == 0, "%s", t.text.p);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
	free(t.text.p);
	t.text.p = NULL;

	/* and after */
	verify_api(data, &t);
	ck_assert_msg(t.total == 0, "%s", t.text.p);
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' verify --data '%s' 2>&1", TIDE_BIN, data), 0);
	for (int i = 0; i < (int)(sizeof dbs / sizeof *dbs); i++) {
		char line[64];
		snprintf(line, sizeof line, "\n%-12s ", dbs[i]);
		ck_assert_msg(strstr(out, line) != NULL, "no count for %s: %s", dbs[i], out);
	}
	/* usage */
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' verify --help", TIDE_BIN), 0);
	ck_assert_ptr_nonnull(strstr(out, "usage: tide verify"));
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' verify stray 2>&1", TIDE_BIN), 2);
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' verify --max x 2>&1", TIDE_BIN), 2);
	ck_assert_int_eq(
		th_sh(out, sizeof out, "'%s' verify --data '%s' 2>&1", TIDE_BIN, sub(dir, "none")),
		1);
	ck_assert_msg(strstr(out, "no log in") != NULL, "%s", out);
	free(t.text.p);
}
END_TEST

/* Edits behind the log's back, one per database, each named by verify. */
START_TEST(verify_names_inconsistencies)
{
	const char *dir = th_tmpdir();
	char data[600];
	join(data, dir, "data");
	tidei_log_opts o = { 0 };
	tidei_log *log;
	char err[TIDEI_ERRLEN];
	uint8_t raw[64];
	uint64_t seq;
	MDB_val k, v;
	tally t = { .total = 0 };

	make_log(data, 300, 3, 20);
	verify_api(data, &t);
	ck_assert_msg(t.total == 0, "%s", t.text.p);

	ck_assert_int_eq(tidei_log_open(&log, data, &o, err), TIDE_OK);
	ck_assert_int_eq(tidei_log_begin(log), TIDE_OK);
	/* events: seq 50 gone (its id, and its stream's next event, now
	 * point at nothing) */
	seq = 50;
	k.mv_size = 8;
	k.mv_data = &seq;
	ck_assert_int_eq(mdb_del(log->txn, log->events, &k, NULL), 0);
	/* ids: an id naming another event */
	k.mv_size = 8;
	k.mv_data = "/src\0bad";
	seq = 3;
	v.mv_size = 8;
	v.mv_data = &seq;
	ck_assert_int_eq(mdb_put(log->txn, log->ids, &k, &v, 0), 0);
	/* streams: a head at the wrong version */
	k.mv_size = 2;
	k.mv_data = "s1";
	tidei_st64(raw, 999);
	tidei_st64(raw + 8, 296); /* event 295 (seq 296): the stream's last */
	v.mv_size = 16;
	v.mv_data = raw;
	ck_assert_int_eq(mdb_put(log->txn, log->streams, &k, &v, 0), 0);
	/* consumers: a checkpoint past the end */
	ck_assert_int_eq(tidei_log_checkpoint_set(log, "ghost", 1000), TIDE_OK);
	/* pending: a retry of an event that does not exist */
	{
		tidei_pending_rec r = { TIDEI_PENDING_RETRY, 0, 1, 0 };
		ck_assert_int_eq(tidei_log_pending_put(log, "ghost", 777, &r), TIDE_OK);
	}
	/* dead: a key without a seq */
	k.mv_size = 5;
	k.mv_data = "nokey";
	v.mv_size = 16;
	memset(raw, 0, 16);
	v.mv_data = raw;
	ck_assert_int_eq(mdb_put(log->txn, log->dead, &k, &v, 0), 0);
	/* once: a claim that is not a seq */
	k.mv_size = 7;
	k.mv_data = "ghost\0k";
	v.mv_size = 3;
	v.mv_data = "abc";
	ck_assert_int_eq(mdb_put(log->txn, log->once, &k, &v, 0), 0);
	/* projections: a progress record cut short */
	k.mv_size = 1;
	k.mv_data = "p";
	v.mv_size = 10;
	v.mv_data = raw;
	ck_assert_int_eq(mdb_put(log->txn, log->projections, &k, &v, 0), 0);
	/* state: a value that is not an encoded value, of no projection */
	k.mv_size = 7;
	k.mv_data = "q\0\0\0\0\1k";
	raw[0] = 0xc1; /* never used by the encoding */
	v.mv_size = 1;
	v.mv_data = raw;
	ck_assert_int_eq(mdb_put(log->txn, log->state, &k, &v, 0), 0);
	ck_assert_int_eq(tidei_log_commit(log), TIDE_OK);
	tidei_log_close(log);

	verify_api(data, &t);
	for (int i = 2; i < 11; i++) /* every database but file, meta and free */
		ck_assert_msg(t.problems[i] > 0, "nothing found in %s:\n%s", dbs[i], t.text.p);
	ck_assert_msg(strstr(t.text.p, "events [] 50: seq 50 is missing") != NULL, "%s", t.text.p);
	ck_assert_msg(strstr(t.text.p, "ids [/src\\x00e49] 50: points at seq 50, which is not") !=
			      NULL,
		      "%s", t.text.p);
	ck_assert_msg(strstr(t.text.p, "another source or id") != NULL, "%s", t.text.p);
	ck_assert_msg(strstr(t.text.p, "head at version 999") != NULL, "%s", t.text.p);
	ck_assert_msg(strstr(t.text.p, "consumers [ghost] 1000: checkpoint 1000 is beyond the "
				       "end of the log (300)") != NULL,
		      "%s", t.text.p);
	ck_assert_msg(strstr(t.text.p, "pending [ghost] 777: is a retry of seq 777") != NULL, "%s",
		      t.text.p);
	ck_assert_msg(strstr(t.text.p, "dead [nokey] 0: key is not a consumer name") != NULL, "%s",
		      t.text.p);
	ck_assert_msg(strstr(t.text.p, "once [ghost\\x00k] 0: value of 3 bytes") != NULL, "%s",
		      t.text.p);
	ck_assert_msg(strstr(t.text.p, "projections [p] 0: progress record of 10 bytes") != NULL,
		      "%s", t.text.p);
	ck_assert_msg(strstr(t.text.p, "belongs to no projection") != NULL, "%s", t.text.p);
	ck_assert_msg(strstr(t.text.p, "state of 1 bytes does not decode") != NULL, "%s", t.text.p);
	free(t.text.p);
}
END_TEST

/* Random bytes over a page in the middle of a real log: damage, exit 1,
 * whatever LMDB does with the page (garbage records, an error, or a
 * crash of the walk). */
START_TEST(verify_finds_random_bytes)
{
	const char *dir = th_tmpdir();
	char orig[600], data[600];
	uint64_t need = make_log(join(orig, dir, "orig"), 3000, 1, 200);
	long psize = sysconf(_SC_PAGESIZE), pages = (long)(need / (uint64_t)psize);
	uint64_t seed = 42;
	char out[65536];

	join(data, dir, "hit");

	for (int round = 0; round < 6; round++) {
		long page = pages / 2 + (round - 3) * (pages / 10);
		unsigned char junk[65536];
		FILE *f;
		tally t = { .total = 0 };
		int st;
		ck_assert_int_le(psize, (long)sizeof junk);
		for (long i = 0; i < psize; i++)
			junk[i] = (unsigned char)th_rand(&seed);
		copy_dir(orig, data);
		f = fopen(sub(data, "data.mdb"), "r+b");
		ck_assert_ptr_nonnull(f);
		ck_assert_int_eq(fseek(f, page * psize, SEEK_SET), 0);
		ck_assert_int_eq(fwrite(junk, 1, (size_t)psize, f), (size_t)psize);
		ck_assert_int_eq(fclose(f), 0);

		st = th_sh(out, sizeof out, "'%s' verify --data '%s' 2>/dev/null", TIDE_BIN, data);
		ck_assert_msg(st == 1, "page %ld: status %d: %s", page, st, out);
		ck_assert_msg(strstr(out, "the log in") != NULL && strstr(out, "is damaged"),
			      "page %ld: %s", page, out);
		verify_api(data, &t);
		ck_assert_msg(t.total > 0, "page %ld: no problem found", page);
		free(t.text.p);
	}
}
END_TEST

START_TEST(verify_reports_truncation)
{
	const char *dir = th_tmpdir();
	char data[600];
	join(data, dir, "data");
	uint64_t need = make_log(data, 2000, 2, 300);
	char out[16384];
	tally t = { .total = 0 };

	ck_assert_int_eq(truncate(sub(data, "data.mdb"), (off_t)(need * 2 / 3)), 0);
	ck_assert_int_eq(
		th_sh(out, sizeof out, "'%s' verify --data '%s' 2>/dev/null", TIDE_BIN, data), 1);
	ck_assert_msg(strstr(out, "file \"data.mdb\": truncated:") != NULL, "%s", out);
	verify_api(data, &t);
	ck_assert_int_ge(t.problems[0], 1);
	free(t.text.p);
}
END_TEST

/* ------------------------------------------------------------------------
 * tide backup
 * ------------------------------------------------------------------------ */

static void
write_events(const char *path, const char *prefix, int n)
{
	FILE *f = fopen(path, "w");

	ck_assert_ptr_nonnull(f);
	for (int i = 0; i < n; i++)
		fprintf(f,
			"{\"specversion\":\"1.0\",\"id\":\"%s%d\",\"source\":\"/b\","
			"\"type\":\"t\",\"subject\":\"s%d\",\"data\":{\"n\":%d}}\n",
			prefix, i, i % 11, i);
	fclose(f);
}

START_TEST(backup_while_ingesting)
{
	const char *dir = th_tmpdir();
	char data[600], copy[600];
	char out[8192], said[8192], want[64];
	th_daemon d;
	th_rec *orig, *got;
	long n_orig, n_copy;
	uint64_t events = 0;
	pid_t feeder;
	int64_t deadline;

	join(data, dir, "data");
	join(copy, dir, "copy");
	write_events(sub(dir, "a.ndjson"), "a", 3000);
	write_events(sub(dir, "b.ndjson"), "b", 100000);
	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s'", data), 0);
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' publish --data '%s' < '%s' 2>&1", TIDE_BIN,
			       data, sub(dir, "a.ndjson")),
			 0);
	ck_assert_msg(strstr(out, "3000 stored") != NULL, "%s", out);
	/* more keeps coming while the backup runs */
	feeder = th_bg(sub(dir, "feeder.out"), "'%s' publish --batch 20 --data '%s' < '%s'",
		       TIDE_BIN, data, sub(dir, "b.ndjson"));
	ck_assert_int_gt(feeder, 0);
	deadline = th_ms() + 20000;
	while (th_ms() < deadline &&
	       (th_log_state(data, NULL, &events, NULL, NULL) != 0 || events < 3000 + 500))
		th_pause();
	ck_assert_uint_ge(events, 3000 + 500);
	ck_assert_int_eq(
		th_sh(said, sizeof said, "'%s' backup --data '%s' '%s' 2>&1", TIDE_BIN, data, copy),
		0);
	ck_assert_msg(strstr(said, "copied") != NULL, "%s", said);
	/* the engine was still ingesting when the copy was done; a check of
	 * the log meanwhile sees one consistent snapshot */
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' verify --data '%s' 2>&1", TIDE_BIN, data), 0);
	ck_assert_int_lt(th_bg_wait(feeder, 0), 0);
	ck_assert_int_eq(th_bg_wait(feeder, 120000), 0);
	ck_assert_int_eq(th_daemon_stop(&d), 0);

	/* a ready data directory, private */
	ck_assert_int_eq(mode_of(copy), 0700);
	ck_assert_int_eq(mode_of(sub(copy, "data.mdb")), 0600);
	ck_assert_int_eq(mode_of(sub(copy, TIDEI_LOG_MARKER)), 0600);
	ck_assert_int_eq(size_of(sub(copy, "data.mdb.tmp")), -1);
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' verify --data '%s' 2>&1", TIDE_BIN, copy), 0);

	/* a prefix of the log, holding everything acknowledged before */
	n_orig = th_log_read(data, &orig);
	n_copy = th_log_read(copy, &got);
	ck_assert_int_eq(n_orig, 3000 + 100000);
	ck_assert_int_ge(n_copy, (long)events);
	ck_assert_int_lt(n_copy, n_orig);
	for (long i = 0; i < n_copy; i++) {
		ck_assert_uint_eq(got[i].seq, (uint64_t)i + 1);
		ck_assert_str_eq(got[i].id, orig[i].id);
		ck_assert_str_eq(got[i].json, orig[i].json);
	}
	for (int i = 0; i < 3000; i++) {
		snprintf(want, sizeof want, "a%d", i);
		ck_assert_str_eq(got[i].id, want);
	}
	snprintf(want, sizeof want, "%ld events, last seq %ld", n_copy, n_copy);
	ck_assert_msg(strstr(said, want) != NULL, "%s", said);
	ck_assert_msg(strstr(out, "no damage found") != NULL, "%s", out);
	th_recs_free(orig, n_orig);
	th_recs_free(got, n_copy);

	/* never over an existing log */
	ck_assert_int_eq(
		th_sh(out, sizeof out, "'%s' backup --data '%s' '%s' 2>&1", TIDE_BIN, data, copy),
		1);
	ck_assert_msg(strstr(out, "is not empty") != NULL, "%s", out);
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' backup --data '%s' 2>&1", TIDE_BIN, data), 2);
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' backup --help", TIDE_BIN), 0);
	ck_assert_ptr_nonnull(strstr(out, "usage: tide backup"));
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' backup a b 2>&1", TIDE_BIN), 2);

	/* restoring is pointing --data at the copy */
	ck_assert_int_eq(th_daemon_spawn(&d, copy, "--data '%s'", copy), 0);
	ck_assert_int_eq(th_sh(out, sizeof out,
			       "'%s' publish -q --acks --data '%s' --type t --source /b --id a1",
			       TIDE_BIN, copy),
			 0);
	ck_assert_msg(strstr(out, "\"duplicate\":true,\"seq\":2") != NULL, "%s", out);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
}
END_TEST

START_TEST(backup_api)
{
	const char *dir = th_tmpdir();
	char data[600];
	join(data, dir, "data");
	tide_backup_info info;
	char empty[600];

	make_log(data, 500, 5, 100);
	join(empty, dir, "empty");
	ck_assert_int_eq(mkdir(empty, 0750), 0);
	ck_assert_int_eq(tide_log_backup(data, empty, &info), TIDE_OK);
	ck_assert_uint_eq(info.events, 500);
	ck_assert_uint_eq(info.last_seq, 500);
	ck_assert_uint_eq(info.size, (uint64_t)size_of(sub(empty, "data.mdb")));
	ck_assert_uint_gt(info.source_size, 0);
	/* an existing directory keeps its mode */
	ck_assert_int_eq(mode_of(empty), 0750);
	ck_assert_int_eq(tide_log_backup(data, empty, &info), TIDE_EINVAL);
	ck_assert_msg(strstr(tide_errmsg(), empty) != NULL, "%s", tide_errmsg());
	ck_assert_int_eq(tide_log_backup(sub(dir, "nothing"), sub(dir, "x"), &info),
			 TIDE_ENOTFOUND);
	ck_assert_int_eq(size_of(sub(dir, "x")), -1);
	ck_assert_int_eq(tide_log_backup(NULL, sub(dir, "x"), NULL), TIDE_EINVAL);
}
END_TEST

/* ------------------------------------------------------------------------
 * Permissions
 * ------------------------------------------------------------------------ */

START_TEST(private_files)
{
	static const char *const files[] = { "data.mdb",  "lock.mdb",       "tide.lock",
					     "endpoints", TIDEI_LOG_MARKER, "flight" };
	const char *dir = th_tmpdir();
	char data[600], old[600];
	th_daemon d;

	join(data, dir, "data");
	join(old, dir, "old");
	umask(0); /* the modes are Tide's own, not the umask's */
	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s'", data), 0);
	ck_assert_int_eq(mode_of(data), 0700);
	for (size_t i = 0; i < sizeof files / sizeof *files; i++)
		ck_assert_msg(mode_of(sub(data, files[i])) == 0600, "%s is %o", files[i],
			      (unsigned)mode_of(sub(data, files[i])));
	ck_assert_int_eq(th_daemon_stop(&d), 0);

	/* an existing directory keeps its mode; what Tide makes in it is 0600 */
	ck_assert_int_eq(mkdir(old, 0755), 0);
	ck_assert_int_eq(th_daemon_spawn(&d, old, "--data '%s'", old), 0);
	ck_assert_int_eq(mode_of(old), 0755);
	for (size_t i = 0; i < sizeof files / sizeof *files; i++)
		ck_assert_msg(mode_of(sub(old, files[i])) == 0600, "%s is %o", files[i],
			      (unsigned)mode_of(sub(old, files[i])));
	ck_assert_int_eq(th_daemon_stop(&d), 0);
}
END_TEST

/* ------------------------------------------------------------------------
 * A full disk
 * ------------------------------------------------------------------------ */

static const char *
event(const char *id)
{
	static char buf[256];

	snprintf(buf, sizeof buf,
		 "{\"specversion\":\"1.0\",\"id\":\"%s\",\"source\":\"/full\",\"type\":\"t\","
		 "\"subject\":\"s\",\"data\":{\"pad\":\"%0100d\"}}",
		 id, 0);
	return buf;
}

/* @p n events "PREFIX0".. in one message, NDJSON. */
static char *
events(const char *prefix, int n)
{
	sbuf b = { 0 };

	for (int i = 0; i < n; i++) {
		char id[32];
		snprintf(id, sizeof id, "%s%d", prefix, i);
		sb_printf(&b, "%s\n", event(id));
	}
	return sb_take(&b);
}

static void
set_full(const char *flag, const char *how)
{
	if (how == NULL)
		ck_assert_int_eq(unlink(flag), 0);
	else
		th_write("/", flag + 1, how);
}

static void
disk_full(const char *how)
{
	const char *dir = th_tmpdir();
	char data[600], flag[600];
	char reply[65536], want[700], *batch;
	const char *asan = getenv("ASAN_OPTIONS");
	char asan_opts[1024];
	th_daemon d;
	th_rec *recs;
	long n;
	char *log;

	join(data, dir, "data");
	join(flag, dir, "full");
	/* the shim goes first; ASan must be told not to mind */
	snprintf(asan_opts, sizeof asan_opts, "%s%sverify_asan_link_order=0", asan ? asan : "",
		 asan && *asan ? ":" : "");
	setenv("ASAN_OPTIONS", asan_opts, 1);
	setenv("TIDE_ENOSPC_FLAG", flag, 1);
	setenv("LD_PRELOAD", TIDE_ENOSPC_SO, 1);
	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s'", data), 0);
	unsetenv("LD_PRELOAD");
	if (asan != NULL)
		setenv("ASAN_OPTIONS", asan, 1);

	ck_assert_int_gt(th_req(d.rep, event("a"), reply, sizeof reply, 10000), 0);
	ck_assert_str_eq(reply, "{\"ok\":true,\"seq\":1}");
	batch = events("b", 100);
	ck_assert_int_gt(th_req(d.rep, batch, reply, sizeof reply, 10000), 0);
	free(batch);
	ck_assert_int_eq(th_count(reply, "\"ok\":true"), 100);

	/* the disk fills up: producers are told, and so is the log */
	set_full(flag, how);
	snprintf(want, sizeof want,
		 "{\"ok\":false,\"error\":\"not stored: disk full: cannot commit to %s (0 bytes "
		 "free)\"}",
		 data);
	for (int i = 0; i < 3; i++) {
		ck_assert_int_gt(th_req(d.rep, event("c"), reply, sizeof reply, 10000), 0);
		ck_assert_str_eq(reply, want);
	}
	batch = events("x", 50);
	ck_assert_int_gt(th_req(d.rep, batch, reply, sizeof reply, 10000), 0);
	free(batch);
	ck_assert_int_eq(th_count(reply, "disk full"), 50);

	/* room again: the same event goes in, next in line */
	set_full(flag, NULL);
	ck_assert_int_gt(th_req(d.rep, event("c"), reply, sizeof reply, 10000), 0);
	ck_assert_str_eq(reply, "{\"ok\":true,\"seq\":102}");
	batch = events("d", 50);
	ck_assert_int_gt(th_req(d.rep, batch, reply, sizeof reply, 10000), 0);
	free(batch);
	ck_assert_int_eq(th_count(reply, "\"ok\":true"), 50);
	ck_assert_int_eq(th_daemon_stop(&d), 0);

	log = th_slurp(d.log);
	ck_assert_ptr_nonnull(log);
	ck_assert_msg(strstr(log, "disk full: cannot commit to") != NULL, "%s", log);
	ck_assert_msg(strstr(log, "map grown") == NULL, "grew the map for a full disk: %s", log);
	free(log);

	/* everything acknowledged, once, in order; nothing refused */
	n = th_log_read(data, &recs);
	ck_assert_int_eq(n, 1 + 100 + 1 + 50);
	for (long i = 0; i < n; i++) {
		ck_assert_uint_eq(recs[i].seq, (uint64_t)i + 1);
		ck_assert_msg(recs[i].id[0] != 'x', "a refused event is in the log");
	}
	ck_assert_str_eq(recs[0].id, "a");
	ck_assert_str_eq(recs[101].id, "c");
	th_recs_free(recs, n);
	ck_assert_int_eq(th_sh(reply, sizeof reply, "'%s' verify --data '%s' 2>&1", TIDE_BIN, data),
			 0);
}

START_TEST(disk_full_enospc)
{
	disk_full("enospc");
}
END_TEST

START_TEST(disk_full_short_write)
{
	disk_full("short");
}
END_TEST

Suite *
damage_suite(void)
{
	Suite *s = suite_create("damage");
	TCase *tc = tcase_create("files");

	tcase_set_timeout(tc, 240);
	tcase_add_checked_fixture(tc, NULL, th_cleanup);
	tcase_add_test(tc, truncated_is_refused);
	tcase_add_test(tc, empty_or_missing_is_refused);
	tcase_add_test(tc, private_files);
	suite_add_tcase(s, tc);

	tc = tcase_create("verify");
	tcase_set_timeout(tc, 240);
	tcase_add_checked_fixture(tc, NULL, th_cleanup);
	tcase_add_test(tc, verify_clean_log);
	tcase_add_test(tc, verify_names_inconsistencies);
	tcase_add_test(tc, verify_finds_random_bytes);
	tcase_add_test(tc, verify_reports_truncation);
	suite_add_tcase(s, tc);

	tc = tcase_create("backup");
	tcase_set_timeout(tc, 240);
	tcase_add_checked_fixture(tc, NULL, th_cleanup);
	tcase_add_test(tc, backup_api);
	tcase_add_test(tc, backup_while_ingesting);
	suite_add_tcase(s, tc);

	tc = tcase_create("full");
	tcase_set_timeout(tc, 240);
	tcase_add_checked_fixture(tc, NULL, th_cleanup);
	tcase_add_test(tc, disk_full_enospc);
	tcase_add_test(tc, disk_full_short_write);
	suite_add_tcase(s, tc);
	return s;
}
