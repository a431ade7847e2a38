/*
 * test_retry.c - failing handlers: retries with exponential backoff,
 * per-subject ordering behind a retry, dead letters and `tide dlq`,
 * tide.once, the instruction budget, the memory ceiling and the emit limit
 * as ordinary failures, and retries that survive kill -9.
 *
 * Most tests run an in-process engine (the "rig", as in test_lua.c) with
 * a script whose handlers fail a chosen number of times: each event's
 * data says {"fail":N} and the handler raises on its first N tries, which
 * it counts in a Lua table keyed by consumer and ev.id.  Every try is
 * printed, and the rig stamps each line of the engine's log with the
 * time it arrived, so the tests can see when tries happened without
 * sleeping.  Children are emitted with data = the cause's id, so the log
 * alone tells which event was handled, how often, and in which order.
 *
 * The restart and command-line tests run real `tide run` processes
 * (th_daemon_spawn) and count tries durably through tide.once, which
 * survives the kill.
 *
 * Every wait has a deadline; nothing sleeps to synchronise.
 */
#define _GNU_SOURCE /* timegm */
#include <check.h>
#include <event2/event.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <yajl/yajl_tree.h>

#include "helpers.h"
#include "tide.h"

#define HAS(text, needle) \
	ck_assert_msg(strstr(text, needle) != NULL, "'%s' not in:\n%s", needle, text)
#define HASNT(text, needle) \
	ck_assert_msg(strstr(text, needle) == NULL, "'%s' in:\n%s", needle, text)

/* Wall clock, ns since the epoch (what failed_at and recorded use). */
static int64_t
wall_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ------------------------------------------------------------------------
 * The rig: an engine in this process, no sockets
 * ------------------------------------------------------------------------ */

typedef struct rig {
	tide_engine *e;
	tide_config *cfg;
	const char *dir; /* scripts and data/ */
	char data[600];
	char logs[262144]; /* "<ms> <level> <message>\n", ms since rig_init */
	size_t loglen;
	int64_t t0;
	int results, stored;
	char types[65536]; /* "\n" then "<type>\n" per committed event */
	size_t typeslen;
} rig;

static void
collect_log(void *ud, int level, const char *msg)
{
	rig *r = ud;
	int n = snprintf(r->logs + r->loglen, sizeof r->logs - r->loglen, "%lld %d %s\n",
			 (long long)(th_ms() - r->t0), level, msg);

	if (n > 0 && r->loglen + (size_t)n < sizeof r->logs)
		r->loglen += (size_t)n;
}

/* A C consumer that notes the type of every committed event, so tests
 * can wait for "type X committed n times". */
static int
watch(void *ud, const tide_event *ev)
{
	rig *r = ud;
	size_t n;
	const char *type = tide_event_attr(ev, "type", &n);

	if (type != NULL && r->typeslen + n + 2 < sizeof r->types) {
		memcpy(r->types + r->typeslen, type, n);
		r->typeslen += n;
		r->types[r->typeslen++] = '\n';
		r->types[r->typeslen] = '\0';
	}
	return TIDE_OK;
}

static void
rig_init(rig *r)
{
	memset(r, 0, sizeof *r);
	r->dir = th_tmpdir();
	snprintf(r->data, sizeof r->data, "%s/data", r->dir);
	r->types[0] = '\n';
	r->typeslen = 1;
	r->t0 = th_ms();
}

/* Configure with @p script as s.lua (rewritten on every call, so a test
 * may "fix" its handlers between two runs). */
static void
rig_config(rig *r, const char *script)
{
	ck_assert_int_eq(tide_config_new(&r->cfg), TIDE_OK);
	ck_assert_int_eq(tide_config_set(r->cfg, "data", r->data), TIDE_OK);
	ck_assert_int_eq(tide_config_set(r->cfg, "pull", ""), TIDE_OK);
	ck_assert_int_eq(tide_config_set(r->cfg, "rep", ""), TIDE_OK);
	ck_assert_int_eq(tide_config_set(r->cfg, "pub", ""), TIDE_OK);
	ck_assert_int_eq(tide_config_set(r->cfg, "durability", "relaxed"), TIDE_OK);
	ck_assert_int_eq(tide_config_set(r->cfg, "log_level", "debug"), TIDE_OK);
	tide_config_set_log(r->cfg, collect_log, r);
	ck_assert_int_eq(tide_config_add_script(r->cfg, th_write(r->dir, "s.lua", script)),
			 TIDE_OK);
}

static void
rig_set(rig *r, const char *key, const char *value)
{
	ck_assert_msg(tide_config_set(r->cfg, key, value) == TIDE_OK, "%s=%s: %s", key, value,
		      tide_errmsg());
}

static void
rig_start(rig *r)
{
	int rc;

	ck_assert_int_eq(tide_engine_new(&r->e, r->cfg), TIDE_OK);
	ck_assert_int_eq(tide_consumer_add(r->e, "rig-watch", "*", &th_from_beginning, watch, r),
			 TIDE_OK);
	rc = tide_engine_open(r->e, NULL);
	ck_assert_msg(rc == TIDE_OK, "open: %s: %s", tide_strerror(rc), tide_errmsg());
}

static void
rig_open(rig *r, const char *script)
{
	rig_init(r);
	rig_config(r, script);
	rig_start(r);
}

static void
rig_close(rig *r)
{
	tide_engine_destroy(r->e);
	tide_config_destroy(r->cfg);
	r->e = NULL;
	r->cfg = NULL;
}

static void
on_result(void *ud, const tide_result *res)
{
	rig *r = ud;

	r->results++;
	r->stored += res->code == TIDE_OK && !res->duplicate;
}

/* One turn of the loop; blocks at most until the next timer (a retry
 * falling due, or the engine's one-second tick). */
static void
rig_turn(rig *r)
{
	event_base_loop(tide_engine_base(r->e), EVLOOP_ONCE);
}

/* Publish @p json (NDJSON of @p n events) and run until every result is
 * in; all must be stored. */
static void
rig_publish_n(rig *r, const char *json, int n)
{
	int want = r->results + n, stored = r->stored + n;
	int64_t deadline = th_ms() + 10000;

	ck_assert_int_eq(tide_publish(r->e, json, strlen(json), on_result, r), TIDE_OK);
	while (r->results < want && th_ms() < deadline)
		rig_turn(r);
	ck_assert_int_eq(r->results, want);
	ck_assert_int_eq(r->stored, stored);
}

static int
committed(const rig *r, const char *type)
{
	char needle[256];
	size_t len;
	int n = 0;

	snprintf(needle, sizeof needle, "\n%s\n", type);
	len = strlen(needle);
	for (const char *p = strstr(r->types, needle); p != NULL; p = strstr(p + len - 1, needle))
		n++;
	return n;
}

/* Run until @p type has been committed @p n times (deadline @p ms). */
static void
rig_wait_ms(rig *r, const char *type, int n, int ms)
{
	int64_t deadline = th_ms() + ms;

	while (committed(r, type) < n && th_ms() < deadline)
		rig_turn(r);
	ck_assert_msg(committed(r, type) >= n, "%d of %d '%s' committed; log:\n%s",
		      committed(r, type), n, type, r->logs);
}

static void
rig_wait(rig *r, const char *type, int n)
{
	rig_wait_ms(r, type, n, 15000);
}

/* Run until the engine's log holds @p needle @p n times (deadline 15 s).
 * Lines are logged during a turn, which has committed when rig_turn()
 * returns. */
static void
rig_until(rig *r, const char *needle, int n)
{
	int64_t deadline = th_ms() + 15000;

	while (th_count(r->logs, needle) < n && th_ms() < deadline)
		rig_turn(r);
	ck_assert_msg(th_count(r->logs, needle) >= n, "'%s' logged %ld of %d times; log:\n%s",
		      needle, th_count(r->logs, needle), n, r->logs);
}

/* Run the loop for about @p ms more (to let retries that must not happen
 * have their chance); bounded by the turn's own timers. */
static void
rig_run_for(rig *r, int ms)
{
	int64_t until = th_ms() + ms;

	while (th_ms() < until)
		rig_turn(r);
}

/* The ms stamp of the first log line containing @p needle, or -1. */
static long long
stamp_of(const rig *r, const char *needle)
{
	const char *p = strstr(r->logs, needle), *b;

	if (p == NULL)
		return -1;
	for (b = p; b > r->logs && b[-1] != '\n'; b--)
		;
	return atoll(b);
}

/* The first line of @p text containing @p needle (static), or "". */
static const char *
line_with(const char *text, const char *needle)
{
	static char line[8192];
	const char *p = strstr(text, needle), *b, *e;

	if (p == NULL)
		return "";
	for (b = p; b > text && b[-1] != '\n'; b--)
		;
	e = strchr(p, '\n');
	if (e == NULL)
		e = p + strlen(p);
	snprintf(line, sizeof line, "%.*s", (int)(e - b), b);
	return line;
}

/* Line number (from 1) of the first line of @p script containing @p mark. */
static int
line_of(const char *script, const char *mark)
{
	const char *p = strstr(script, mark);
	int n = 1;

	ck_assert_ptr_nonnull(p);
	for (const char *q = script; q < p; q++)
		n += *q == '\n';
	return n;
}

/* One event as NDJSON: type "job" unless @p type, @p subject may be NULL,
 * data {"fail":F} (the handler raises on its first F tries). */
static void
job(char *out, size_t len, const char *id, const char *type, const char *subject, int fail)
{
	char subj[128] = "";

	if (subject != NULL)
		snprintf(subj, sizeof subj, ",\"subject\":\"%s\"", subject);
	snprintf(out, len,
		 "{\"specversion\":\"1.0\",\"id\":\"%s\",\"source\":\"/t\",\"type\":\"%s\"%s,"
		 "\"data\":{\"fail\":%d}}\n",
		 id, type ? type : "job", subj, fail);
}

/* Append job() to an NDJSON buffer. */
static void
add_job(char *buf, size_t len, const char *id, const char *subject, int fail)
{
	size_t used = strlen(buf);

	job(buf + used, len - used, id, NULL, subject, fail);
}

/* The Lua side shared by the rig tests: flaky(name, pattern, opts) adds a
 * consumer that counts its tries per event, prints each, emits "<name>.early"
 * and then raises while the try is within ev.data.fail, and otherwise emits
 * "<name>.done" with data = ev.id.  The early emit must vanish with every
 * failed call. */
#define FLAKY \
	"local tide = require 'tide'\n" \
	"local tries = {}\n" \
	"local function flaky(name, pattern, opts)\n" \
	"  opts.name = name\n" \
	"  tide.on(pattern, function(ev)\n" \
	"    local k = name .. ' ' .. ev.id\n" \
	"    tries[k] = (tries[k] or 0) + 1\n" \
	"    print('try ' .. k .. ' ' .. tries[k])\n" \
	"    tide.emit{ type = name .. '.early', data = ev.id }\n" \
	"    if tries[k] <= (ev.data.fail or 0) then error('no luck with ' .. ev.id) end " \
	"-- RAISES\n" \
	"    tide.emit{ type = name .. '.done', subject = ev.subject, data = ev.id }\n" \
	"  end, opts)\n" \
	"end\n"

/* ------------------------------------------------------------------------
 * Reading results back: the log and the dead letters, in-process
 * ------------------------------------------------------------------------ */

/* Children of type @p type in log order: their data (the cause's id),
 * space-separated with a leading and trailing space, into @p out.  Returns
 * how many there are. */
static int
children(const char *dir, const char *type, char *out, size_t len)
{
	th_rec *v;
	long n = th_log_read(dir, &v);
	int got = 0;
	size_t used = 1;

	ck_assert_int_ge(n, 0);
	snprintf(out, len, " ");
	for (long k = 0; k < n; k++) {
		const char *d;
		char val[128];
		if (v[k].type == NULL || strcmp(v[k].type, type) != 0 || v[k].json == NULL)
			continue;
		d = strstr(v[k].json, "\"data\":\"");
		if (d == NULL || sscanf(d + 8, "%127[^\"]", val) != 1)
			continue;
		used += (size_t)snprintf(out + used, len - used, "%s ", val);
		ck_assert_uint_lt(used, len);
		got++;
	}
	th_recs_free(v, n);
	return got;
}

/* Commit time (ns) of the first event of @p type whose data is "@p data". */
static int64_t
recorded_of(const char *dir, const char *type, const char *data)
{
	tide_log *log;
	tide_cursor *cur;
	tide_filter f = { 0, 0, NULL, type };
	const tide_event *ev;
	char want[160];
	int64_t at = -1;

	snprintf(want, sizeof want, "\"data\":\"%s\"", data);
	ck_assert_int_eq(tide_log_open(&log, dir), TIDE_OK);
	ck_assert_int_eq(tide_cursor_open(log, &f, &cur), TIDE_OK);
	while (at < 0 && tide_cursor_next(cur, &ev) == TIDE_OK) {
		const char *json;
		size_t n;
		ck_assert_int_eq(tide_event_json(ev, &json, &n), TIDE_OK);
		if (memmem(json, n, want, strlen(want)) != NULL)
			at = tide_event_recorded(ev);
	}
	tide_cursor_close(cur);
	tide_log_close(log);
	ck_assert_msg(at > 0, "no %s with data %s in the log", type, data);
	return at;
}

/* A dead letter, copied out of the listing callback. */
typedef struct dlc {
	char consumer[64];
	uint64_t seq;
	uint32_t attempts;
	int64_t failed_at;
	char where[512];
	char error[1024];
	char id[64];
	int retrying;
} dlc;

typedef struct dl_list {
	dlc v[16];
	int n;
} dl_list;

static int
dl_one(void *ud, const tide_dead_letter *dl)
{
	dl_list *l = ud;
	dlc *d;
	const char *id;

	ck_assert_int_lt(l->n, 16);
	d = &l->v[l->n++];
	snprintf(d->consumer, sizeof d->consumer, "%s", dl->consumer);
	d->seq = dl->seq;
	d->attempts = dl->attempts;
	d->failed_at = dl->failed_at;
	snprintf(d->where, sizeof d->where, "%s", dl->where);
	snprintf(d->error, sizeof d->error, "%s", dl->error);
	ck_assert_ptr_nonnull(dl->event);
	id = tide_event_attr(dl->event, "id", NULL);
	snprintf(d->id, sizeof d->id, "%s", id ? id : "");
	d->retrying = dl->retrying;
	return 0;
}

/* The dead letters of @p consumer (NULL: all) at @p seq (0: all). */
static int
dead_letters(const char *dir, const char *consumer, uint64_t seq, dl_list *l)
{
	tide_log *log;

	memset(l, 0, sizeof *l);
	ck_assert_int_eq(tide_log_open(&log, dir), TIDE_OK);
	ck_assert_int_eq(tide_log_dead_letters(log, consumer, seq, dl_one, l), TIDE_OK);
	tide_log_close(log);
	return l->n;
}

/* Pending (retrying or waiting) and dead counts of @p consumer. */
static void
backlog(const char *dir, const char *consumer, uint64_t *pending, uint64_t *dead)
{
	tide_log *log;

	ck_assert_int_eq(tide_log_open(&log, dir), TIDE_OK);
	ck_assert_int_eq(tide_log_consumer_backlog(log, consumer, pending, dead), TIDE_OK);
	tide_log_close(log);
}

/* Does @p where name line @p line of s.lua ("<path>/s.lua:LINE")? */
static int
where_is(const char *where, int line)
{
	char want[32];
	size_t wl, n;

	snprintf(want, sizeof want, "s.lua:%d", line);
	wl = strlen(want);
	n = strlen(where);
	return n >= wl && strcmp(where + n - wl, want) == 0 &&
	       (n == wl || where[n - wl - 1] == '/');
}

/* ------------------------------------------------------------------------
 * Retries
 * ------------------------------------------------------------------------ */

START_TEST(retry_then_success)
{
	/* default retries (3: "of 4"), backoff 0.1 s doubling */
	static const char script[] = FLAKY "flaky('flaky', 'job', { backoff = 0.1 })\n";
	rig r;
	char msg[512] = "", out[4096];
	long long t1, t2, t3;
	uint64_t pending, dead;
	dl_list dl;

	rig_open(&r, script);
	add_job(msg, sizeof msg, "e1", "s1", 2);
	rig_publish_n(&r, msg, 1);
	rig_wait(&r, "flaky.done", 1);
	/* a little longer: no further try, no second child */
	rig_run_for(&r, 300);
	rig_close(&r);

	HAS(r.logs, "consumer 'flaky' failed on event 1 (type job, id e1), attempt 1 of 4: ");
	HAS(r.logs, "consumer 'flaky' failed on event 1 (type job, id e1), attempt 2 of 4: ");
	HASNT(r.logs, "attempt 3 of 4");
	HASNT(r.logs, "gave up");
	HAS(line_with(r.logs, "attempt 1 of 4"), "no luck with e1");
	ck_assert_int_eq(th_count(r.logs, "[flaky] try flaky e1 "), 3);
	ck_assert_int_eq(th_count(r.logs, "[flaky] try flaky e1 4"), 0);

	/* the backoff grows: about 0.1 s, then about 0.2 s */
	t1 = stamp_of(&r, "try flaky e1 1");
	t2 = stamp_of(&r, "try flaky e1 2");
	t3 = stamp_of(&r, "try flaky e1 3");
	ck_assert_msg(t2 - t1 >= 80 && t3 - t2 >= 170 && t3 - t2 > t2 - t1,
		      "tries at %lld, %lld, %lld ms", t1, t2, t3);

	/* one child, and nothing of the failed calls */
	ck_assert_int_eq(children(r.data, "flaky.done", out, sizeof out), 1);
	ck_assert_str_eq(out, " e1 ");
	ck_assert_int_eq(children(r.data, "flaky.early", out, sizeof out), 1);
	ck_assert_int_eq(dead_letters(r.data, NULL, 0, &dl), 0);
	backlog(r.data, "flaky", &pending, &dead);
	ck_assert_uint_eq(pending, 0);
	ck_assert_uint_eq(dead, 0);
}
END_TEST

START_TEST(retry_after_a_slow_turn)
{
	/* A retry is due 0.2 s after a failure, in a turn that a second
	 * consumer makes last 0.1 s.  The retry must still happen when
	 * nothing else wakes the engine up. */
	static const char script[] = FLAKY "flaky('flaky', 'job', { backoff = 0.2 })\n"
					   "tide.on('job', function(ev)\n"
					   "  local t = os.clock()\n"
					   "  while os.clock() - t < 0.1 do end\n"
					   "end, { name = 'slowpoke' })\n";
	rig r;
	char msg[512] = "", out[512];

	rig_init(&r);
	rig_config(&r, script);
	rig_set(&r, "instruction_budget", "1000000000");
	rig_start(&r);
	add_job(msg, sizeof msg, "e1", "s1", 1);
	rig_publish_n(&r, msg, 1);
	rig_until(&r, "attempt 1 of 4", 1);
	/* due in 0.2 s: 5 s is plenty, even under the sanitizers */
	rig_wait_ms(&r, "flaky.done", 1, 5000);
	rig_close(&r);
	ck_assert_int_eq(children(r.data, "flaky.done", out, sizeof out), 1);
}
END_TEST

START_TEST(backoff_max_caps_the_wait)
{
	/* backoff 0.05 doubling, capped at 0.08: waits of 50, 80, 80 ms */
	static const char script[] = FLAKY
		"flaky('capped', 'job', { retries = 3, backoff = 0.05, backoff_max = 0.08 })\n";
	rig r;
	char msg[512] = "";
	long long t[5];

	rig_open(&r, script);
	add_job(msg, sizeof msg, "e1", "s1", 3);
	rig_publish_n(&r, msg, 1);
	rig_wait(&r, "capped.done", 1);
	rig_close(&r);
	for (int k = 1; k <= 4; k++) {
		char needle[64];
		snprintf(needle, sizeof needle, "try capped e1 %d", k);
		t[k] = stamp_of(&r, needle);
		ck_assert_int_ge(t[k], 0);
	}
	ck_assert_msg(t[2] - t[1] >= 40 && t[3] - t[2] >= 65 && t[4] - t[3] >= 65 &&
			      t[4] - t[3] < 150,
		      "tries at %lld, %lld, %lld, %lld ms", t[1], t[2], t[3], t[4]);
	HAS(r.logs, "attempt 3 of 4");
	HASNT(r.logs, "gave up");
}
END_TEST

START_TEST(give_up_parks_a_dead_letter)
{
	/* 'bad' never succeeds on e1 (3 tries, 0.2 s then 0.4 s apart); 'good'
	 * handles every job at once; other subjects pass while e1 retries */
	static const char script[] = FLAKY
		"flaky('bad', 'job', { retries = 2, backoff = 0.2 })\n"
		"tide.on('job', function(ev) tide.emit{ type = 'good.done', data = ev.id } end,\n"
		"        { name = 'good' })\n";
	rig r;
	char msg[1024] = "", out[4096];
	int64_t before = wall_ns(), after;
	dl_list dl;
	uint64_t pending, dead;

	rig_open(&r, script);
	add_job(msg, sizeof msg, "e1", "s1", 99);
	rig_publish_n(&r, msg, 1);
	rig_until(&r, "attempt 1 of 3", 1);
	/* while e1 waits for its retry */
	msg[0] = '\0';
	add_job(msg, sizeof msg, "e2", "s2", 0);
	add_job(msg, sizeof msg, "e3", NULL, 0);
	rig_publish_n(&r, msg, 2);
	rig_wait(&r, "bad.done", 2);
	rig_until(&r, "gave up on event 1", 1);
	rig_close(&r);
	after = wall_ns();

	ck_assert_int_eq(th_count(r.logs, "try bad e1 "), 3);
	HAS(r.logs, "attempt 2 of 3");
	HASNT(r.logs, "attempt 3 of 3");
	HAS(r.logs, "consumer 'bad' gave up on event 1 (type job, id e1) after 3 attempts: ");
	HAS(line_with(r.logs, "gave up on event 1"), "tide dlq show 1");

	ck_assert_int_eq(dead_letters(r.data, NULL, 0, &dl), 1);
	ck_assert_str_eq(dl.v[0].consumer, "bad");
	ck_assert_uint_eq(dl.v[0].seq, 1);
	ck_assert_str_eq(dl.v[0].id, "e1");
	ck_assert_uint_eq(dl.v[0].attempts, 3);
	ck_assert_msg(where_is(dl.v[0].where, line_of(script, "-- RAISES")), "where: %s",
		      dl.v[0].where);
	HAS(dl.v[0].error, "no luck with e1");
	ck_assert_int_ge(dl.v[0].failed_at, before);
	ck_assert_int_le(dl.v[0].failed_at, after);
	ck_assert_int_eq(dl.v[0].retrying, 0);
	backlog(r.data, "bad", &pending, &dead);
	ck_assert_uint_eq(pending, 0);
	ck_assert_uint_eq(dead, 1);

	/* nothing of e1 from 'bad'; everything else was handled before it
	 * was given up, 'good' even before the first retry */
	ck_assert_int_eq(children(r.data, "bad.done", out, sizeof out), 2);
	ck_assert_str_eq(out, " e2 e3 ");
	ck_assert_int_eq(children(r.data, "bad.early", out, sizeof out), 2);
	ck_assert_int_eq(children(r.data, "good.done", out, sizeof out), 3);
	ck_assert_str_eq(out, " e1 e2 e3 ");
	ck_assert_int_lt(recorded_of(r.data, "bad.done", "e2"), dl.v[0].failed_at);
	ck_assert_int_lt(recorded_of(r.data, "bad.done", "e3"), dl.v[0].failed_at);
	ck_assert_int_lt(recorded_of(r.data, "good.done", "e1"),
			 dl.v[0].failed_at - 500 * 1000000ll);
}
END_TEST

START_TEST(no_retries_gives_up_at_once)
{
	static const char script[] = FLAKY "flaky('once', 'job', { retries = 0 })\n";
	rig r;
	char msg[512] = "", out[512];
	dl_list dl;

	rig_open(&r, script);
	add_job(msg, sizeof msg, "e1", "s1", 1);
	add_job(msg, sizeof msg, "e2", "s1", 0);
	rig_publish_n(&r, msg, 2);
	rig_wait(&r, "once.done", 1);
	rig_close(&r);
	HASNT(r.logs, "attempt 1 of");
	HAS(r.logs, "consumer 'once' gave up on event 1 (type job, id e1) after 1 attempts");
	ck_assert_int_eq(dead_letters(r.data, "once", 0, &dl), 1);
	ck_assert_uint_eq(dl.v[0].attempts, 1);
	ck_assert_int_eq(children(r.data, "once.done", out, sizeof out), 1);
	ck_assert_str_eq(out, " e2 ");
}
END_TEST

START_TEST(options_are_checked)
{
	static const char *const bad[][2] = {
		{ "{ name = 'x', retry = 3 }", "unknown option 'retry'" },
		{ "{ name = 'x', retries = -1 }", "retries" },
		{ "{ name = 'x', retries = 1.5 }", "retries" },
		{ "{ name = 'x', backoff = -0.5 }", "backoff" },
		{ "{ name = 'x', backoff = 'soon' }", "backoff" },
		{ "{ name = 'x', backoff_max = -1 }", "backoff_max" },
		{ "{ name = 'x', from = 'middle' }", "from" },
	};

	for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
		rig r;
		char script[512];
		int rc;
		rig_init(&r);
		snprintf(script, sizeof script,
			 "local tide = require 'tide'\n"
			 "tide.on('job', function(ev) end, %s)\n",
			 bad[k][0]);
		rig_config(&r, script);
		ck_assert_int_eq(tide_engine_new(&r.e, r.cfg), TIDE_OK);
		rc = tide_engine_open(r.e, NULL);
		ck_assert_msg(rc == TIDE_ESCRIPT, "%s: %s", bad[k][0], tide_strerror(rc));
		ck_assert_msg(strstr(tide_errmsg(), bad[k][1]) != NULL, "%s: %s", bad[k][0],
			      tide_errmsg());
		HAS(tide_errmsg(), "s.lua:2");
		rig_close(&r);
		th_cleanup();
	}
}
END_TEST

/* ------------------------------------------------------------------------
 * Ordering
 * ------------------------------------------------------------------------ */

START_TEST(ordered_waits_behind_a_retry)
{
	/* s1's first event fails; its second and third wait and follow in
	 * order; s2 and subject-less events pass meanwhile.  The tries table
	 * is lost with the restart, so a1 fails once more after it. */
	static const char script[] = FLAKY "flaky('ord', 'job', { retries = 3, backoff = 0.3 })\n";
	rig r;
	char msg[2048] = "", out[4096];
	uint64_t pending, dead;

	rig_open(&r, script);
	add_job(msg, sizeof msg, "a1", "s1", 1);
	add_job(msg, sizeof msg, "a2", "s1", 0);
	add_job(msg, sizeof msg, "b1", "s2", 0);
	add_job(msg, sizeof msg, "a3", "s1", 0);
	add_job(msg, sizeof msg, "n1", NULL, 0);
	rig_publish_n(&r, msg, 5);
	rig_until(&r, "attempt 1 of 4", 1);
	rig_wait(&r, "ord.done", 2);
	rig_close(&r);

	/* the retry and the two held events are pending, durably */
	backlog(r.data, "ord", &pending, &dead);
	ck_assert_uint_eq(pending, 3);
	ck_assert_uint_eq(dead, 0);
	ck_assert_int_eq(children(r.data, "ord.done", out, sizeof out), 2);
	ck_assert_str_eq(out, " b1 n1 ");
	/* a2 and a3 were not even tried */
	ck_assert_int_eq(th_count(r.logs, "try ord a2 "), 0);
	ck_assert_int_eq(th_count(r.logs, "try ord a3 "), 0);

	/* a restart keeps them held; then they follow a1 in order */
	rig_config(&r, script);
	rig_start(&r);
	rig_wait(&r, "ord.done", 3);
	rig_close(&r);
	HAS(r.logs, "attempt 2 of 4");
	HASNT(r.logs, "attempt 3 of 4");
	ck_assert_int_eq(children(r.data, "ord.done", out, sizeof out), 5);
	ck_assert_str_eq(out, " b1 n1 a1 a2 a3 ");
	ck_assert_int_eq(th_count(r.logs, "try ord a1 "), 3);
	ck_assert_int_eq(th_count(r.logs, "try ord a2 "), 1);
	ck_assert_int_eq(th_count(r.logs, "try ord a3 "), 1);
	ck_assert_int_lt(stamp_of(&r, "try ord a1 2"), stamp_of(&r, "try ord a2 1") + 1);
	backlog(r.data, "ord", &pending, &dead);
	ck_assert_uint_eq(pending, 0);
}
END_TEST

START_TEST(ordered_released_after_dead_letter)
{
	/* s1's first event is given up; then its waiting events go, in order,
	 * including a later one that fails once itself (and holds a4 back) */
	static const char script[] = FLAKY "flaky('ord', 'job', { retries = 1, backoff = 0.05 })\n";
	rig r;
	char msg[2048] = "", out[4096];
	dl_list dl;
	uint64_t pending, dead;

	rig_open(&r, script);
	add_job(msg, sizeof msg, "a1", "s1", 99);
	add_job(msg, sizeof msg, "a2", "s1", 0);
	add_job(msg, sizeof msg, "a3", "s1", 1);
	add_job(msg, sizeof msg, "b1", "s2", 0);
	add_job(msg, sizeof msg, "a4", "s1", 0);
	rig_publish_n(&r, msg, 5);
	rig_wait(&r, "ord.done", 4);
	rig_close(&r);

	ck_assert_int_eq(children(r.data, "ord.done", out, sizeof out), 4);
	ck_assert_str_eq(out, " b1 a2 a3 a4 ");
	ck_assert_int_eq(dead_letters(r.data, "ord", 0, &dl), 1);
	ck_assert_str_eq(dl.v[0].id, "a1");
	ck_assert_uint_eq(dl.v[0].attempts, 2);
	ck_assert_int_le(dl.v[0].failed_at, recorded_of(r.data, "ord.done", "a2"));
	/* a4 was tried once, after a3 succeeded */
	ck_assert_int_eq(th_count(r.logs, "try ord a4 "), 1);
	ck_assert_int_eq(th_count(r.logs, "try ord a3 "), 2);
	ck_assert_int_lt(stamp_of(&r, "try ord a3 2"), stamp_of(&r, "try ord a4 1") + 1);
	ck_assert_int_lt(stamp_of(&r, "gave up on event 1"), stamp_of(&r, "try ord a2 1") + 1);
	backlog(r.data, "ord", &pending, &dead);
	ck_assert_uint_eq(pending, 0);
	ck_assert_uint_eq(dead, 1);
}
END_TEST

START_TEST(unordered_and_subjectless_pass)
{
	/* ordered = false: later events of a retrying subject pass; events
	 * without a subject never wait, whatever the option */
	static const char script[] =
		FLAKY "flaky('free', 'job', { retries = 2, backoff = 0.2, ordered = false })\n"
		      "flaky('strict', 'job', { retries = 2, backoff = 0.2 })\n";
	rig r;
	char msg[2048] = "", out[4096];

	rig_open(&r, script);
	add_job(msg, sizeof msg, "a1", "s1", 1);
	add_job(msg, sizeof msg, "a2", "s1", 0);
	add_job(msg, sizeof msg, "n1", NULL, 1);
	add_job(msg, sizeof msg, "n2", NULL, 0);
	add_job(msg, sizeof msg, "a3", "s1", 0);
	rig_publish_n(&r, msg, 5);
	rig_wait(&r, "free.done", 5);
	rig_wait(&r, "strict.done", 5);
	rig_close(&r);

	ck_assert_int_eq(children(r.data, "free.done", out, sizeof out), 5);
	ck_assert_str_eq(out, " a2 n2 a3 a1 n1 ");
	ck_assert_int_eq(children(r.data, "strict.done", out, sizeof out), 5);
	/* a1 and n1 fall due together; a1's success releases a2, then a3 */
	ck_assert_str_eq(out, " n2 a1 a2 n1 a3 ");
}
END_TEST

/* ------------------------------------------------------------------------
 * Budgets and limits are ordinary failures
 * ------------------------------------------------------------------------ */

START_TEST(budget_and_memory_become_dead_letters)
{
	static const char script[] = "local tide = require 'tide'\n"
				     "tide.on('job', function(ev)\n"
				     "  if ev.data.mode == 'spin' then\n"
				     "    local n = 0\n"
				     "    while true do n = n + 1 end -- SPINS\n"
				     "  elseif ev.data.mode == 'hog' then\n"
				     "    local t = {}\n"
				     "    for i = 1, 1e9 do t[i] = string.rep('x', 1024) .. i end\n"
				     "  end\n"
				     "  tide.emit{ type = 'risky.done', data = ev.id }\n"
				     "end, { name = 'risky', retries = 1, backoff = 0.02 })\n"
				     "tide.on('job', function(ev)\n"
				     "  tide.emit{ type = 'calm.done', data = ev.id }\n"
				     "end, { name = 'calm' })\n";
	rig r;
	char out[4096];
	dl_list dl;

	rig_init(&r);
	rig_config(&r, script);
	rig_set(&r, "instruction_budget", "1000000");
	rig_set(&r, "memory_limit", "8M");
	rig_start(&r);
	rig_publish_n(&r,
		      "{\"specversion\":\"1.0\",\"id\":\"spin\",\"source\":\"/t\",\"type\":\"job\","
		      "\"subject\":\"x\",\"data\":{\"mode\":\"spin\"}}\n"
		      "{\"specversion\":\"1.0\",\"id\":\"hog\",\"source\":\"/t\",\"type\":\"job\","
		      "\"subject\":\"y\",\"data\":{\"mode\":\"hog\"}}\n"
		      "{\"specversion\":\"1.0\",\"id\":\"ok\",\"source\":\"/t\",\"type\":\"job\","
		      "\"subject\":\"z\",\"data\":{}}\n",
		      3);
	rig_until(&r, "gave up on event 1", 1);
	rig_until(&r, "gave up on event 2", 1);
	/* the engine still serves, also the subject of the given-up event */
	rig_publish_n(&r,
		      "{\"specversion\":\"1.0\",\"id\":\"late\",\"source\":\"/t\",\"type\":\"job\","
		      "\"subject\":\"x\",\"data\":{}}\n",
		      1);
	rig_wait(&r, "risky.done", 2);
	rig_wait(&r, "calm.done", 4);
	rig_close(&r);

	HAS(line_with(r.logs, "consumer 'risky' failed on event 1"), "instruction budget");
	HAS(line_with(r.logs, "consumer 'risky' failed on event 2"), "memory");
	ck_assert_int_eq(children(r.data, "risky.done", out, sizeof out), 2);
	ck_assert_str_eq(out, " ok late ");
	ck_assert_int_eq(children(r.data, "calm.done", out, sizeof out), 4);
	ck_assert_str_eq(out, " spin hog ok late ");

	ck_assert_int_eq(dead_letters(r.data, "risky", 1, &dl), 1);
	ck_assert_uint_eq(dl.v[0].attempts, 2);
	HAS(dl.v[0].error, "handler exceeded its instruction budget (1000000 instructions)");
	ck_assert_int_eq(dead_letters(r.data, "risky", 2, &dl), 1);
	ck_assert_uint_eq(dl.v[0].attempts, 2);
	HAS(dl.v[0].error, "memory");
	ck_assert_int_eq(dead_letters(r.data, "calm", 0, &dl), 0);
}
END_TEST

START_TEST(budget_dead_letter_names_the_line)
{
	/* a dead letter keeps the script:line of the failure; for a handler
	 * stopped by the budget that is where it was looping */
	static const char script[] = "local tide = require 'tide'\n"
				     "tide.on('job', function(ev)\n"
				     "  local n = 0\n"
				     "  while true do n = n + 1 end -- SPINS\n"
				     "end, { name = 'spinner', retries = 0 })\n";
	rig r;
	dl_list dl;

	rig_init(&r);
	rig_config(&r, script);
	rig_set(&r, "instruction_budget", "1000000");
	rig_start(&r);
	rig_publish_n(
		&r,
		"{\"specversion\":\"1.0\",\"id\":\"spin\",\"source\":\"/t\",\"type\":\"job\"}\n",
		1);
	rig_until(&r, "gave up on event 1", 1);
	rig_close(&r);
	ck_assert_int_eq(dead_letters(r.data, "spinner", 1, &dl), 1);
	HAS(dl.v[0].error, "instruction budget");
	ck_assert_msg(where_is(dl.v[0].where, line_of(script, "-- SPINS")),
		      "where is \"%s\", want s.lua:%d; error \"%s\"", dl.v[0].where,
		      line_of(script, "-- SPINS"), dl.v[0].error);
}
END_TEST

START_TEST(emit_loop_is_bounded)
{
	static const char script[] =
		"local tide = require 'tide'\n"
		"tide.on('job', function(ev)\n"
		"  if ev.data.spam then\n"
		"    while true do tide.emit{ type = 'spam', data = ev.id } end -- EMITS\n"
		"  end\n"
		"  tide.emit{ type = 'sane', data = ev.id }\n"
		"end, { name = 'spammer', retries = 1, backoff = 0.02 })\n";
	rig r;
	char out[4096];
	dl_list dl;

	rig_init(&r);
	rig_config(&r, script);
	rig_set(&r, "max_emits", "50");
	rig_start(&r);
	rig_publish_n(&r,
		      "{\"specversion\":\"1.0\",\"id\":\"loop\",\"source\":\"/t\",\"type\":\"job\","
		      "\"data\":{\"spam\":true}}\n"
		      "{\"specversion\":\"1.0\",\"id\":\"fine\",\"source\":\"/t\",\"type\":\"job\","
		      "\"data\":{}}\n",
		      2);
	rig_wait(&r, "sane", 1);
	rig_until(&r, "gave up on event 1", 1);
	rig_close(&r);

	HAS(line_with(r.logs, "consumer 'spammer' failed on event 1"),
	    "at most 50 events per call");
	ck_assert_int_eq(children(r.data, "spam", out, sizeof out), 0);
	ck_assert_int_eq(children(r.data, "sane", out, sizeof out), 1);
	ck_assert_str_eq(out, " fine ");
	ck_assert_int_eq(dead_letters(r.data, "spammer", 0, &dl), 1);
	ck_assert_uint_eq(dl.v[0].seq, 1);
	ck_assert_uint_eq(dl.v[0].attempts, 2);
	HAS(dl.v[0].error, "tide.emit: a handler may emit at most 50 events per call");
	ck_assert_msg(where_is(dl.v[0].where, line_of(script, "-- EMITS")), "where: %s",
		      dl.v[0].where);
}
END_TEST

/* ------------------------------------------------------------------------
 * tide.once
 * ------------------------------------------------------------------------ */

START_TEST(once_claims_survive_retries_and_restarts)
{
	/* two consumers claim "charge:<order>"; 'pay' fails its first try
	 * after claiming, 'audit' never fails */
	static const char script[] =
		"local tide = require 'tide'\n"
		"local tries = {}\n"
		"tide.on('pay', function(ev)\n"
		"  tries[ev.id] = (tries[ev.id] or 0) + 1\n"
		"  local first = tide.once('charge:' .. ev.data.order)\n"
		"  print('pay ' .. ev.id .. ' try ' .. tries[ev.id] .. ' ' .. tostring(first))\n"
		"  if tries[ev.id] <= (ev.data.fail or 0) then error('card declined') end\n"
		"  tide.emit{ type = 'paid', data = ev.id }\n"
		"end, { name = 'pay', retries = 2, backoff = 0.02 })\n"
		"tide.on('pay', function(ev)\n"
		"  local first = tide.once('charge:' .. ev.data.order)\n"
		"  local again = tide.once('charge:' .. ev.data.order)\n"
		"  print('audit ' .. ev.id .. ' ' .. tostring(first) .. ' ' .. tostring(again))\n"
		"  tide.emit{ type = 'audited', data = ev.id }\n"
		"end, { name = 'audit' })\n";
	rig r;
	char out[4096];

	rig_open(&r, script);
	rig_publish_n(&r,
		      "{\"specversion\":\"1.0\",\"id\":\"p1\",\"source\":\"/t\",\"type\":\"pay\","
		      "\"data\":{\"order\":\"o1\",\"fail\":1}}\n",
		      1);
	rig_wait(&r, "paid", 1);
	rig_wait(&r, "audited", 1);
	rig_close(&r);
	HAS(r.logs, "[pay] pay p1 try 1 true\n");
	HAS(r.logs, "[pay] pay p1 try 2 false\n");
	HAS(r.logs, "[audit] audit p1 true false\n");

	/* after a restart the claims hold; a new key is free */
	rig_config(&r, script);
	rig_start(&r);
	rig_publish_n(&r,
		      "{\"specversion\":\"1.0\",\"id\":\"p2\",\"source\":\"/t\",\"type\":\"pay\","
		      "\"data\":{\"order\":\"o1\"}}\n"
		      "{\"specversion\":\"1.0\",\"id\":\"p3\",\"source\":\"/t\",\"type\":\"pay\","
		      "\"data\":{\"order\":\"o2\"}}\n",
		      2);
	rig_wait(&r, "paid", 3);
	rig_wait(&r, "audited", 3);
	rig_close(&r);
	HAS(r.logs, "[pay] pay p2 try 1 false\n");
	HAS(r.logs, "[audit] audit p2 false false\n");
	HAS(r.logs, "[pay] pay p3 try 1 true\n");
	HAS(r.logs, "[audit] audit p3 true false\n");
	ck_assert_int_eq(children(r.data, "paid", out, sizeof out), 3);
	ck_assert_str_eq(out, " p1 p2 p3 ");
}
END_TEST

START_TEST(once_outside_a_handler_fails)
{
	rig r;

	rig_init(&r);
	rig_config(&r, "local tide = require 'tide'\n"
		       "tide.once('at-load')\n");
	ck_assert_int_eq(tide_engine_new(&r.e, r.cfg), TIDE_OK);
	ck_assert_int_eq(tide_engine_open(r.e, NULL), TIDE_ESCRIPT);
	HAS(tide_errmsg(), "tide.once");
	HAS(tide_errmsg(), "s.lua:2");
	rig_close(&r);
}
END_TEST

/* ------------------------------------------------------------------------
 * Real daemons: kill -9 during a retry, `tide dlq`
 * ------------------------------------------------------------------------ */

/* Handlers whose tries are counted durably with tide.once, so the count
 * survives kill -9: try n of event E is the first n for which
 * tide.once(E .. '#' .. n) is true.  'flaky' raises while n <= data.fail
 * (children "flaky.done" carry "<id>/<n>"); 'picky' raises while the
 * global `broken` is set, which a "fix" event clears (and which starts
 * cleared when the script is loaded with FIXED = true). */
#define DURABLE \
	"local tide = require 'tide'\n" \
	"broken = not FIXED\n" \
	"local function try(ev)\n" \
	"  for n = 1, 1000 do if tide.once(ev.id .. '#' .. n) then return n end end\n" \
	"end\n" \
	"tide.on('job', function(ev)\n" \
	"  local n = try(ev)\n" \
	"  print('try ' .. ev.id .. ' ' .. n)\n" \
	"  if n <= (ev.data.fail or 0) then error('flaky on ' .. ev.id) end\n" \
	"  tide.emit{ type = 'flaky.done', subject = ev.subject, data = ev.id .. '/' .. n }\n" \
	"end, { name = 'flaky', retries = 5, backoff = 0.5 })\n" \
	"tide.on('fix', function(ev) broken = false end, { name = 'fixer' })\n" \
	"tide.on('task', function(ev)\n" \
	"  if broken and ev.data.bad then error('picky about ' .. ev.id) end -- PICKY\n" \
	"  tide.emit{ type = 'picky.done', data = ev.id }\n" \
	"end, { name = 'picky', retries = 0 })\n" \
	"tide.on('task', function(ev)\n" \
	"  if broken and ev.data.bad then error('fussy about ' .. ev.id) end\n" \
	"  tide.emit{ type = 'fussy.done', data = ev.id }\n" \
	"end, { name = 'fussy', retries = 0 })\n"

static void
spawn(th_daemon *d, const char *data, const char *script)
{
	ck_assert_msg(th_daemon_spawn(d, data, "--data '%s' --script '%s' --durability relaxed",
				      data, script) == 0,
		      "tide run did not start");
}

/* Publish NDJSON @p events through the daemon's REP endpoint. */
static void
publish(const char *data, const char *events)
{
	char in[700];
	FILE *f;

	snprintf(in, sizeof in, "%s.in", data);
	f = fopen(in, "w");
	ck_assert_ptr_nonnull(f);
	fputs(events, f);
	fclose(f);
	ck_assert_int_eq(th_sh(NULL, 0, "'%s' publish --data '%s' -q < '%s'", TIDE_BIN, data, in),
			 0);
}

/* Wait (10 s) until @p consumer has @p pending pending and @p dead dead
 * letters; -1 means "any". */
static int
wait_backlog(const char *data, const char *consumer, long pending, long dead)
{
	int64_t deadline = th_ms() + 10000;
	uint64_t p = 0, d = 0;

	do {
		backlog(data, consumer, &p, &d);
		if ((pending < 0 || (long)p == pending) && (dead < 0 || (long)d == dead))
			return 1;
		th_pause();
	} while (th_ms() < deadline);
	ck_assert_msg(0, "%s: %llu pending, %llu dead; want %ld, %ld", consumer,
		      (unsigned long long)p, (unsigned long long)d, pending, dead);
	return 0;
}

/* The object of consumer @p name in `tide stat --json` output (static). */
static const char *
stat_of(const char *json, const char *name)
{
	static char obj[512];
	char key[128];
	const char *p, *e;

	snprintf(key, sizeof key, "{\"name\":\"%s\",", name);
	p = strstr(json, key);
	ck_assert_msg(p != NULL, "no consumer %s in %s", name, json);
	e = strchr(p, '}');
	ck_assert_ptr_nonnull(e);
	snprintf(obj, sizeof obj, "%.*s", (int)(e - p + 1), p);
	return obj;
}

START_TEST(kill_during_retry_resumes)
{
	const char *dir = th_tmpdir();
	char data[600], events[2048] = "", out[4096], *logtext;
	const char *script = th_write(dir, "s.lua", DURABLE);
	th_daemon d;

	snprintf(data, sizeof data, "%s/data", dir);
	spawn(&d, data, script);
	/* s1/a1 fails its first two tries; a2 and a3 wait behind it */
	add_job(events, sizeof events, "a1", "s1", 2);
	add_job(events, sizeof events, "a2", "s1", 0);
	add_job(events, sizeof events, "b1", "s2", 0);
	add_job(events, sizeof events, "a3", "s1", 0);
	publish(data, events);
	/* the first failure is committed: one retrying, two held */
	wait_backlog(data, "flaky", 3, 0);
	ck_assert_int_eq(th_wait_log(data, "--type flaky.done", 1, 10000), 1);
	th_daemon_kill(&d);

	ck_assert_int_eq(children(data, "flaky.done", out, sizeof out), 1);
	ck_assert_str_eq(out, " b1/1 ");
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' stat --json --data '%s'", TIDE_BIN, data), 0);
	HAS(stat_of(out, "flaky"), "\"retrying\":3,\"dead\":0}");

	spawn(&d, data, script);
	ck_assert_int_eq(th_wait_log(data, "--type flaky.done", 4, 15000), 4);
	wait_backlog(data, "flaky", 0, 0);
	ck_assert_int_eq(th_daemon_stop(&d), 0);

	/* a1 took exactly three tries in all, its waiting events followed
	 * in order, each once, and none was tried before a1 succeeded */
	ck_assert_int_eq(children(data, "flaky.done", out, sizeof out), 4);
	ck_assert_str_eq(out, " b1/1 a1/3 a2/1 a3/1 ");
	logtext = th_slurp(d.log);
	ck_assert_ptr_nonnull(logtext);
	/* the attempt count went on after the restart */
	ck_assert_int_eq(th_count(logtext, "(type job, id a1), attempt 1 of 6"), 1);
	ck_assert_int_ge(th_count(logtext, "(type job, id a1), attempt 2 of 6"), 1);
	ck_assert_int_eq(th_count(logtext, "attempt 3 of 6"), 0);
	ck_assert_int_eq(th_count(logtext, "gave up"), 0);
	free(logtext);
}
END_TEST

/* Run `tide dlq ARGS` on @p data; stdout to @p out, returns the status. */
static int __attribute__((format(printf, 4, 5)))
dlq(const char *data, char *out, size_t len, const char *fmt, ...)
{
	char args[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(args, sizeof args, fmt, ap);
	va_end(ap);
	return th_sh(out, len, "'%s' dlq --data '%s' %s 2>/dev/null", TIDE_BIN, data, args);
}

/* Check that every line of @p ndjson is an object with exactly the dead
 * letter fields (plus "event" when @p with_event); returns the line count. */
static int
check_ndjson(const char *ndjson, int with_event)
{
	static const char *const fields[] = { "consumer", "seq",     "type",     "id",
					      "source",   "subject", "attempts", "failed_at",
					      "where",    "error",   "retrying" };
	const size_t nf = sizeof fields / sizeof *fields;
	char *copy = strdup(ndjson), *save = NULL;
	int n = 0;

	ck_assert_ptr_nonnull(copy);
	for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char err[256];
		yajl_val v = yajl_tree_parse(line, err, sizeof err);
		size_t want = nf + (with_event ? 1 : 0);
		ck_assert_msg(v != NULL && YAJL_IS_OBJECT(v), "not a JSON object: %s (%s)", line,
			      err);
		for (size_t k = 0; k < nf; k++) {
			const char *path[] = { fields[k], NULL };
			ck_assert_msg(yajl_tree_get(v, path, yajl_t_any) != NULL, "no %s in %s",
				      fields[k], line);
		}
		ck_assert_ptr_nonnull(
			yajl_tree_get(v, (const char *[]){ "seq", NULL }, yajl_t_number));
		ck_assert_ptr_nonnull(
			yajl_tree_get(v, (const char *[]){ "attempts", NULL }, yajl_t_number));
		ck_assert_ptr_nonnull(
			yajl_tree_get(v, (const char *[]){ "failed_at", NULL }, yajl_t_string));
		if (with_event)
			ck_assert_ptr_nonnull(
				yajl_tree_get(v, (const char *[]){ "event", NULL }, yajl_t_object));
		ck_assert_msg(YAJL_GET_OBJECT(v)->len == want, "%zu fields in %s",
			      YAJL_GET_OBJECT(v)->len, line);
		yajl_tree_free(v);
		n++;
	}
	free(copy);
	return n;
}

/* Four tasks for 'picky' and 'fussy': t1, t3, t4 bad (subjects k1, k3, k4). */
static const char tasks[] =
	"{\"specversion\":\"1.0\",\"id\":\"t1\",\"source\":\"/t\",\"type\":\"task\","
	"\"subject\":\"k1\",\"data\":{\"bad\":true}}\n"
	"{\"specversion\":\"1.0\",\"id\":\"t2\",\"source\":\"/t\",\"type\":\"task\","
	"\"subject\":\"k2\",\"data\":{}}\n"
	"{\"specversion\":\"1.0\",\"id\":\"t3\",\"source\":\"/t\",\"type\":\"task\","
	"\"subject\":\"k3\",\"data\":{\"bad\":true}}\n"
	"{\"specversion\":\"1.0\",\"id\":\"t4\",\"source\":\"/t\",\"type\":\"task\","
	"\"subject\":\"k4\",\"data\":{\"bad\":true}}\n";

START_TEST(dlq_list_show_and_exit_codes)
{
	const char *dir = th_tmpdir();
	char data[600], out[16384], nolog[700];
	const char *script = th_write(dir, "s.lua", DURABLE);
	th_daemon d;
	time_t before = time(NULL), when;
	struct tm tm;
	char err[256];
	yajl_val v;

	snprintf(data, sizeof data, "%s/data", dir);
	snprintf(nolog, sizeof nolog, "%s/nothing", dir);
	spawn(&d, data, script);
	publish(data, tasks);
	wait_backlog(data, "picky", 0, 3);
	wait_backlog(data, "fussy", 0, 3);

	/* list: every dead letter, one object per line, ordered by consumer
	 * then seq */
	ck_assert_int_eq(dlq(data, out, sizeof out, "list"), 0);
	ck_assert_int_eq(check_ndjson(out, 0), 6);
	ck_assert_int_eq(th_count(out, "\"consumer\":\"picky\""), 3);
	ck_assert_int_eq(th_count(out, "\"consumer\":\"fussy\""), 3);
	HASNT(out, "\"id\":\"t2\"");
	/* one in detail */
	v = yajl_tree_parse(line_with(out, "\"consumer\":\"picky\",\"seq\":3,"), err, sizeof err);
	ck_assert_ptr_nonnull(v);
	ck_assert_str_eq(
		YAJL_GET_STRING(yajl_tree_get(v, (const char *[]){ "type", NULL }, yajl_t_string)),
		"task");
	ck_assert_str_eq(
		YAJL_GET_STRING(yajl_tree_get(v, (const char *[]){ "id", NULL }, yajl_t_string)),
		"t3");
	ck_assert_str_eq(YAJL_GET_STRING(yajl_tree_get(v, (const char *[]){ "source", NULL },
						       yajl_t_string)),
			 "/t");
	ck_assert_str_eq(YAJL_GET_STRING(yajl_tree_get(v, (const char *[]){ "subject", NULL },
						       yajl_t_string)),
			 "k3");
	ck_assert_int_eq(YAJL_GET_INTEGER(yajl_tree_get(v, (const char *[]){ "attempts", NULL },
							yajl_t_number)),
			 1);
	ck_assert_msg(where_is(YAJL_GET_STRING(yajl_tree_get(v, (const char *[]){ "where", NULL },
							     yajl_t_string)),
			       line_of(DURABLE, "-- PICKY")),
		      "where: %s", line_with(out, "\"seq\":3,"));
	{
		const char *error = YAJL_GET_STRING(
			yajl_tree_get(v, (const char *[]){ "error", NULL }, yajl_t_string));
		ck_assert_ptr_nonnull(error);
		HAS(error, "picky about t3");
	}
	ck_assert(
		YAJL_IS_FALSE(yajl_tree_get(v, (const char *[]){ "retrying", NULL }, yajl_t_any)));
	memset(&tm, 0, sizeof tm);
	ck_assert_ptr_nonnull(
		strptime(YAJL_GET_STRING(yajl_tree_get(v, (const char *[]){ "failed_at", NULL },
						       yajl_t_string)),
			 "%Y-%m-%dT%H:%M:%SZ", &tm));
	when = timegm(&tm);
	ck_assert_int_ge(when, before - 1);
	ck_assert_int_le(when, time(NULL) + 1);
	yajl_tree_free(v);

	/* filters: by consumer, by seq, both */
	ck_assert_int_eq(dlq(data, out, sizeof out, "list --consumer picky"), 0);
	ck_assert_int_eq(check_ndjson(out, 0), 3);
	ck_assert_int_eq(th_count(out, "\"consumer\":\"picky\""), 3);
	ck_assert_int_eq(dlq(data, out, sizeof out, "list 3"), 0);
	ck_assert_int_eq(check_ndjson(out, 0), 2);
	ck_assert_int_eq(th_count(out, "\"seq\":3,"), 2);
	ck_assert_int_eq(dlq(data, out, sizeof out, "list -c fussy 4"), 0);
	ck_assert_int_eq(check_ndjson(out, 0), 1);
	HAS(out, "\"consumer\":\"fussy\",\"seq\":4,");
	ck_assert_int_eq(dlq(data, out, sizeof out, "list --consumer nobody"), 0);
	ck_assert_str_eq(out, "");
	ck_assert_int_eq(dlq(data, out, sizeof out, "list --consumer pick"), 0);
	ck_assert_str_eq(out, "");

	/* show: the same, with the event */
	ck_assert_int_eq(dlq(data, out, sizeof out, "show 4 --consumer fussy"), 0);
	ck_assert_int_eq(check_ndjson(out, 1), 1);
	HAS(out, "\"event\":{");
	HAS(strstr(out, "\"event\":"), "\"id\":\"t4\"");
	HAS(strstr(out, "\"event\":"), "\"data\":{\"bad\":true}");
	ck_assert_int_eq(dlq(data, out, sizeof out, "show 1"), 0);
	ck_assert_int_eq(check_ndjson(out, 1), 2);

	/* stat counts */
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' stat --json --data '%s'", TIDE_BIN, data), 0);
	HAS(stat_of(out, "picky"), "\"lag\":0,\"retrying\":0,\"dead\":3}");
	HAS(stat_of(out, "fussy"), "\"lag\":0,\"retrying\":0,\"dead\":3}");

	/* exit codes: no match 1, usage 2 */
	ck_assert_int_eq(dlq(data, out, sizeof out, "show 2"), 1);
	ck_assert_int_eq(dlq(data, out, sizeof out, "show 99"), 1);
	ck_assert_int_eq(dlq(data, out, sizeof out, "show 1 --consumer nobody"), 1);
	ck_assert_int_eq(dlq(data, out, sizeof out, "retry 99"), 1);
	ck_assert_int_eq(dlq(data, out, sizeof out, "drop 2"), 1);
	ck_assert_int_eq(dlq(data, out, sizeof out, "retry --all --consumer nobody"), 1);
	ck_assert_int_eq(dlq(nolog, out, sizeof out, "list"), 1);
	ck_assert_int_eq(dlq(nolog, out, sizeof out, "retry --all"), 1);
	ck_assert_int_eq(dlq(data, out, sizeof out, "%s", ""), 2);
	ck_assert_int_eq(dlq(data, out, sizeof out, "frobnicate"), 2);
	ck_assert_int_eq(dlq(data, out, sizeof out, "show"), 2);
	ck_assert_int_eq(dlq(data, out, sizeof out, "retry"), 2);
	ck_assert_int_eq(dlq(data, out, sizeof out, "drop"), 2);
	ck_assert_int_eq(dlq(data, out, sizeof out, "retry 3 --all"), 2);
	ck_assert_int_eq(dlq(data, out, sizeof out, "retry x3"), 2);
	ck_assert_int_eq(dlq(data, out, sizeof out, "retry 0"), 2);
	ck_assert_int_eq(dlq(data, out, sizeof out, "drop 3 4"), 2);
	ck_assert_int_eq(dlq(data, out, sizeof out, "list --bogus"), 2);
	ck_assert_int_eq(dlq(data, out, sizeof out, "--help"), 0);
	HAS(out, "usage: tide dlq");

	/* none of that changed anything */
	ck_assert_int_eq(dlq(data, out, sizeof out, "list"), 0);
	ck_assert_int_eq(check_ndjson(out, 0), 6);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
}
END_TEST

START_TEST(dlq_retry_and_drop_online)
{
	const char *dir = th_tmpdir();
	char data[600], out[16384], reply[512];
	const char *script = th_write(dir, "s.lua", DURABLE);
	th_daemon d;
	dl_list dl;

	snprintf(data, sizeof data, "%s/data", dir);
	spawn(&d, data, script);
	publish(data, tasks);
	wait_backlog(data, "picky", 0, 3);
	wait_backlog(data, "fussy", 0, 3);

	/* drop one while the daemon runs */
	ck_assert_int_eq(dlq(data, out, sizeof out, "drop 1 --consumer fussy"), 0);
	wait_backlog(data, "fussy", 0, 2);
	ck_assert_int_eq(dead_letters(data, "fussy", 0, &dl), 2);
	ck_assert_uint_eq(dl.v[0].seq, 3);
	ck_assert_uint_eq(dl.v[1].seq, 4);
	ck_assert_int_eq(dead_letters(data, "picky", 1, &dl), 1);

	/* a retry while still broken: handled again, fails again, stays with
	 * one more attempt */
	ck_assert_int_eq(dlq(data, out, sizeof out, "retry 3 --consumer picky"), 0);
	{
		int64_t deadline = th_ms() + 10000;
		while (th_ms() < deadline && !(dead_letters(data, "picky", 3, &dl) == 1 &&
					       dl.v[0].attempts == 2 && !dl.v[0].retrying))
			th_pause();
	}
	ck_assert_int_eq(dead_letters(data, "picky", 0, &dl), 3);
	ck_assert_uint_eq(dl.v[1].seq, 3);
	ck_assert_uint_eq(dl.v[1].attempts, 2);
	ck_assert_int_eq(dl.v[1].retrying, 0);
	ck_assert_uint_eq(dl.v[0].attempts, 1);

	/* the raw REP request works too, and counts */
	ck_assert_int_gt(th_req(d.rep,
				"{\"command\":\"dlq\",\"op\":\"drop\",\"consumer\":\"fussy\","
				"\"seq\":4}",
				reply, sizeof reply, 5000),
			 0);
	ck_assert_str_eq(reply, "{\"ok\":true,\"count\":1}");
	ck_assert_int_gt(th_req(d.rep, "{\"command\":\"dlq\",\"op\":\"drop\",\"seq\":77}", reply,
				sizeof reply, 5000),
			 0);
	ck_assert_str_eq(reply, "{\"ok\":true,\"count\":0}");
	ck_assert_int_gt(
		th_req(d.rep, "{\"command\":\"dlq\",\"op\":\"bury\"}", reply, sizeof reply, 5000),
		0);
	HAS(reply, "\"ok\":false");
	wait_backlog(data, "fussy", 0, 1);

	/* fix the handler, retry all of picky's: they leave the store and
	 * their children appear, once each */
	publish(data,
		"{\"specversion\":\"1.0\",\"id\":\"fix\",\"source\":\"/t\",\"type\":\"fix\"}\n");
	ck_assert_int_eq(th_wait_log(data, "--type fix", 1, 5000), 1);
	/* the fix is handled once the fixer's checkpoint reaches the end */
	ck_assert(th_wait_settled(data, "fixer", 7, 10000));
	ck_assert_int_eq(dlq(data, out, sizeof out, "retry --all --consumer picky"), 0);
	wait_backlog(data, "picky", 0, 0);
	ck_assert_int_eq(children(data, "picky.done", out, sizeof out), 4);
	ck_assert_str_eq(out, " t2 t1 t3 t4 ");
	/* fussy's last dead letter was not touched */
	ck_assert_int_eq(dead_letters(data, NULL, 0, &dl), 1);
	ck_assert_str_eq(dl.v[0].consumer, "fussy");
	ck_assert_uint_eq(dl.v[0].seq, 3);
	ck_assert_int_eq(dl.v[0].retrying, 0);
	/* nothing left to retry for picky */
	ck_assert_int_eq(dlq(data, out, sizeof out, "retry --all --consumer picky"), 1);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
	ck_assert_int_eq(children(data, "fussy.done", out, sizeof out), 1);
}
END_TEST

START_TEST(dlq_retry_and_drop_offline)
{
	const char *dir = th_tmpdir();
	char data[600], out[16384], fixed[8192];
	const char *script = th_write(dir, "s.lua", DURABLE);
	th_daemon d;
	dl_list dl;

	snprintf(data, sizeof data, "%s/data", dir);
	spawn(&d, data, script);
	publish(data, tasks);
	wait_backlog(data, "picky", 0, 3);
	wait_backlog(data, "fussy", 0, 3);
	ck_assert_int_eq(th_daemon_stop(&d), 0);

	/* offline: drop one, ask to retry two; they stay, marked retrying */
	ck_assert_int_eq(dlq(data, out, sizeof out, "drop 4 --consumer picky"), 0);
	ck_assert_int_eq(dlq(data, out, sizeof out, "drop 4 --consumer picky"), 1);
	ck_assert_int_eq(dlq(data, out, sizeof out, "retry 3"), 0);
	ck_assert_int_eq(dlq(data, out, sizeof out, "retry 1 --consumer fussy"), 0);
	ck_assert_int_eq(dlq(data, out, sizeof out, "retry 2"), 1);
	ck_assert_int_eq(dead_letters(data, NULL, 0, &dl), 5);
	ck_assert_int_eq(dlq(data, out, sizeof out, "list"), 0);
	ck_assert_int_eq(check_ndjson(out, 0), 5);
	ck_assert_int_eq(th_count(out, "\"retrying\":true"), 3);
	HAS(line_with(out, "\"consumer\":\"picky\",\"seq\":3,"), "\"retrying\":true");
	HAS(line_with(out, "\"consumer\":\"fussy\",\"seq\":3,"), "\"retrying\":true");
	HAS(line_with(out, "\"consumer\":\"fussy\",\"seq\":1,"), "\"retrying\":true");
	HAS(line_with(out, "\"consumer\":\"picky\",\"seq\":1,"), "\"retrying\":false");
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' stat --json --data '%s'", TIDE_BIN, data), 0);
	HAS(stat_of(out, "picky"), "\"lag\":0,\"retrying\":1,\"dead\":2}");
	HAS(stat_of(out, "fussy"), "\"lag\":0,\"retrying\":2,\"dead\":3}");

	/* the engine runs again with fixed handlers: the retried ones are
	 * handled and leave the store, the others stay */
	snprintf(fixed, sizeof fixed, "FIXED = true\n%s", DURABLE);
	script = th_write(dir, "fixed.lua", fixed);
	spawn(&d, data, script);
	wait_backlog(data, "fussy", 0, 1);
	wait_backlog(data, "picky", 0, 1);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
	ck_assert_int_eq(dead_letters(data, NULL, 0, &dl), 2);
	ck_assert_str_eq(dl.v[0].consumer, "fussy");
	ck_assert_uint_eq(dl.v[0].seq, 4);
	ck_assert_int_eq(dl.v[0].retrying, 0);
	ck_assert_str_eq(dl.v[1].consumer, "picky");
	ck_assert_uint_eq(dl.v[1].seq, 1);
	ck_assert_int_eq(children(data, "picky.done", out, sizeof out), 2);
	ck_assert_str_eq(out, " t2 t3 ");
	ck_assert_int_eq(children(data, "fussy.done", out, sizeof out), 3);
	ck_assert_str_eq(out, " t2 t1 t3 ");

	/* and the rest can go */
	ck_assert_int_eq(dlq(data, out, sizeof out, "drop --all"), 0);
	ck_assert_int_eq(dead_letters(data, NULL, 0, &dl), 0);
	ck_assert_int_eq(dlq(data, out, sizeof out, "drop --all"), 1);
	ck_assert_int_eq(dlq(data, out, sizeof out, "list"), 0);
	ck_assert_str_eq(out, "");
}
END_TEST

Suite *
retry_suite(void)
{
	Suite *s = suite_create("retry");
	TCase *retry = tcase_create("retries");
	TCase *order = tcase_create("ordering");
	TCase *limits = tcase_create("limits");
	TCase *once = tcase_create("once");
	TCase *daemon = tcase_create("daemon");
	TCase *all[] = { retry, order, limits, once, daemon };

	for (size_t i = 0; i < sizeof all / sizeof *all; i++) {
		tcase_add_checked_fixture(all[i], NULL, th_cleanup);
		tcase_set_timeout(all[i], 30);
		suite_add_tcase(s, all[i]);
	}
	tcase_set_timeout(daemon, 60);
	tcase_add_test(retry, retry_then_success);
	tcase_add_test(retry, retry_after_a_slow_turn);
	tcase_add_test(retry, backoff_max_caps_the_wait);
	tcase_add_test(retry, give_up_parks_a_dead_letter);
	tcase_add_test(retry, no_retries_gives_up_at_once);
	tcase_add_test(retry, options_are_checked);
	tcase_add_test(order, ordered_waits_behind_a_retry);
	tcase_add_test(order, ordered_released_after_dead_letter);
	tcase_add_test(order, unordered_and_subjectless_pass);
	tcase_add_test(limits, budget_and_memory_become_dead_letters);
	tcase_add_test(limits, budget_dead_letter_names_the_line);
	tcase_add_test(limits, emit_loop_is_bounded);
	tcase_add_test(once, once_claims_survive_retries_and_restarts);
	tcase_add_test(once, once_outside_a_handler_fails);
	tcase_add_test(daemon, kill_during_retry_resumes);
	tcase_add_test(daemon, dlq_list_show_and_exit_codes);
	tcase_add_test(daemon, dlq_retry_and_drop_online);
	tcase_add_test(daemon, dlq_retry_and_drop_offline);
	return s;
}
