/*
 * test_rules.c - rules against a real `tide run`: state per key that
 * survives stops, kill -9 and reloads; timers on event time that fire once,
 * in due order, also when they fell due while the engine was down; keys
 * that expire; late events counted or handed over; a failed call that
 * leaves no trace in the state; and live processing that `tide replay`
 * repeats emit for emit.
 */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consumer.h"
#include "helpers.h"
#include "log.h"

/* ------------------------------------------------------------------------
 * A small rig: a data directory, a script, events written as NDJSON
 * ------------------------------------------------------------------------ */

typedef struct rig {
	const char *dir;
	char data[600], script[600], events[600];
	th_daemon d;
	int running;
} rig;

static void
rig_init(rig *r, const char *script)
{
	memset(r, 0, sizeof *r);
	r->dir = th_tmpdir();
	snprintf(r->data, sizeof r->data, "%s/data", r->dir);
	snprintf(r->script, sizeof r->script, "%s", th_write(r->dir, "rule.lua", script));
	snprintf(r->events, sizeof r->events, "%s/events.ndjson", r->dir);
}

static void
rig_start(rig *r)
{
	ck_assert_int_eq(
		th_daemon_spawn(&r->d, r->data, "--data '%s' --script '%s'", r->data, r->script),
		0);
	r->running = 1;
}

static void
rig_stop(rig *r)
{
	ck_assert_int_eq(th_daemon_stop(&r->d), 0);
	r->running = 0;
}

static void
rig_kill(rig *r)
{
	th_daemon_kill(&r->d);
	r->running = 0;
}

/* Publish the NDJSON text @p text (acknowledged; freed here) and wait
 * until consumer @p name has handled everything in the log. */
static void
rig_publish(rig *r, char *text, const char *name)
{
	char out[4096];
	uint64_t ev, last, cp;
	int64_t deadline = th_ms() + 20000;
	FILE *f = fopen(r->events, "w");

	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	fclose(f);
	free(text);
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' publish -q --data '%s' < '%s'", TIDE_BIN,
			       r->data, r->events),
			 0);
	/* settled: the consumer is at the end and stays there for a moment */
	for (;;) {
		ck_assert_msg(th_ms() < deadline, "consumer %s did not catch up", name);
		if (th_log_state(r->data, name, &ev, &last, &cp) == 0 && cp == last) {
			th_pause();
			if (th_log_state(r->data, name, &ev, &last, &cp) == 0 && cp == last)
				break;
		}
		th_pause();
	}
}

/* An event line: type, subject, minute of 2026-01-01 (may pass 59), data. */
static void
event(sbuf *b, int id, const char *type, const char *subject, int minute, const char *data)
{
	sb_printf(b,
		  "{\"specversion\":\"1.0\",\"id\":\"e%d\",\"source\":\"/test\",\"type\":\"%s\","
		  "\"subject\":\"%s\",\"time\":\"2026-01-01T%02d:%02d:00Z\",\"data\":%s}\n",
		  id, type, subject, minute / 60, minute % 60, data);
}

/* The events of type @p type in the log, as "subject data" lines. */
static char *
emitted(const char *data, const char *type)
{
	th_rec *v;
	long n = th_log_read(data, &v);
	sbuf b = { 0 };

	ck_assert_int_ge(n, 0);
	for (long i = 0; i < n; i++) {
		const char *d;
		if (strcmp(v[i].type, type) != 0)
			continue;
		d = strstr(v[i].json, "\"data\":");
		/* data is the last member: drop the event's closing brace */
		sb_printf(&b, "%s %.*s\n", v[i].subject ? v[i].subject : "-",
			  d ? (int)strlen(d + 7) - 1 : 4, d ? d + 7 : "none");
	}
	th_recs_free(v, n);
	return sb_take(&b);
}

/* Defined with the live = replay test. */
static char *log_emits(const char *data);
static char *replay_emits(const rig *r);
static void same_lines(const char *got, const char *want);

/* `tide run` with script @p name of @p dir must refuse to start; what it
 * said (static). */
static const char *
load_fails(const char *dir, const char *name)
{
	static char out[4096];

	ck_assert_int_ne(th_sh(out, sizeof out, "'%s' run --data '%s/data' --script '%s/%s' 2>&1",
			       TIDE_BIN, dir, dir, name),
			 0);
	return out;
}

/* ------------------------------------------------------------------------
 * State per key
 * ------------------------------------------------------------------------ */

static const char count_script[] =
	"local tide = require 'tide'\n"
	"tide.on('card.tx', function(ev, st)\n"
	"  st.n = (st.n or 0) + 1\n"
	"  st.sum = (st.sum or 0) + ev.data.amount\n"
	"  if st.n % 5 == 0 then\n"
	"    tide.emit{ type = 'card.fifth', subject = ev.subject,\n"
	"               data = { n = st.n, sum = st.sum } }\n"
	"  end\n"
	"end, { name = 'count', key = 'subject', from = 'beginning' })\n";

#define CARDS 7

static int
tx_amount(int i)
{
	return 1 + (i * 37) % 101;
}

static const char *
tx_card(int i, char *buf)
{
	snprintf(buf, 16, "c%d", (i * 3 + i / 5) % CARDS);
	return buf;
}

static void
tx_events(sbuf *b, int from, int to)
{
	char card[16], d[64];

	for (int i = from; i < to; i++) {
		snprintf(d, sizeof d, "{\"amount\":%d}", tx_amount(i));
		event(b, i, "card.tx", tx_card(i, card), i, d);
	}
}

/* What count_script emits for the first @p n events. */
static char *
count_model(int n)
{
	int cnt[CARDS] = { 0 }, sum[CARDS] = { 0 };
	char card[16];
	sbuf b = { 0 };

	for (int i = 0; i < n; i++) {
		int c = atoi(tx_card(i, card) + 1);
		cnt[c]++;
		sum[c] += tx_amount(i);
		if (cnt[c] % 5 == 0)
			sb_printf(&b, "c%d {\"n\":%d,\"sum\":%d}\n", c, cnt[c], sum[c]);
	}
	return sb_take(&b);
}

START_TEST(state_survives_stop_kill_and_reload)
{
	rig r;
	sbuf b = { 0 };
	char *got, *want, out[256];

	rig_init(&r, count_script);
	rig_start(&r);
	tx_events(&b, 0, 40);
	rig_publish(&r, sb_take(&b), "count");
	rig_stop(&r);

	rig_start(&r);
	tx_events(&b, 40, 80);
	rig_publish(&r, sb_take(&b), "count");
	rig_kill(&r); /* after its commits: nothing may be lost or doubled */

	rig_start(&r);
	/* a reload makes a fresh Lua state: the state is read from the log */
	ck_assert_int_eq(kill(r.d.pid, SIGHUP), 0);
	tx_events(&b, 80, 120);
	rig_publish(&r, sb_take(&b), "count");
	rig_stop(&r);

	got = emitted(r.data, "card.fifth");
	want = count_model(120);
	ck_assert_str_eq(got, want);
	free(got);
	free(want);
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' stat --data '%s' | grep -c 'keys %d '",
			       TIDE_BIN, r.data, CARDS),
			 0);
}
END_TEST

/* A call that fails leaves the state as it was: the retry counts the
 * event once. */
START_TEST(failed_call_leaves_no_trace)
{
	static const char script[] = "local tide = require 'tide'\n"
				     "local failed = {}\n"
				     "tide.on('card.tx', function(ev, st)\n"
				     "  st.n = (st.n or 0) + 1\n"
				     "  st.sum = (st.sum or 0) + ev.data.amount\n"
				     "  if ev.id == 'e7' and not failed[ev.id] then\n"
				     "    failed[ev.id] = true\n"
				     "    error('first try fails')\n"
				     "  end\n"
				     "  if st.n % 5 == 0 then\n"
				     "    tide.emit{ type = 'card.fifth', subject = ev.subject,\n"
				     "               data = { n = st.n, sum = st.sum } }\n"
				     "  end\n"
				     "end, { name = 'count', key = 'subject', from = 'beginning',\n"
				     "       retries = 2, backoff = 0.01 })\n";
	rig r;
	sbuf b = { 0 };
	char *got, *want;
	int64_t deadline;

	rig_init(&r, script);
	rig_start(&r);
	tx_events(&b, 0, 60);
	rig_publish(&r, sb_take(&b), "count");
	/* the retry comes after the backoff */
	deadline = th_ms() + 10000;
	while (strstr(got = emitted(r.data, "card.fifth"), "\"n\":5,") == NULL &&
	       th_ms() < deadline) {
		free(got);
		th_pause();
	}
	free(got);
	rig_stop(&r);
	/* e7 was counted once, after the other events of its card that came
	 * before its retry: compare totals, which do not depend on order */
	got = emitted(r.data, "card.fifth");
	want = count_model(60);
	ck_assert_int_eq(th_count(got, "\n"), th_count(want, "\n"));
	ck_assert_msg(th_count(got, "\"n\":10,") == th_count(want, "\"n\":10,"),
		      "got:\n%s\nwant:\n%s", got, want);
	free(got);
	free(want);
}
END_TEST

/* ------------------------------------------------------------------------
 * Timers and expiry
 * ------------------------------------------------------------------------ */

static const char silent_script[] =
	"local tide = require 'tide'\n"
	"tide.on('sensor.reading', function(ev, st)\n"
	"  st.last = ev.data.value\n"
	"  tide.timer.after('silent', '15m', { value = ev.data.value })\n"
	"end, { name = 'silence', key = 'subject', from = 'beginning', ttl = '2h',\n"
	"       timers = { silent = function(key, data, st)\n"
	"         tide.emit{ type = 'sensor.silent', subject = key,\n"
	"                    data = { value = data.value, last = st.last } }\n"
	"       end } })\n";

START_TEST(timers_fire_once_on_event_time)
{
	rig r;
	sbuf b = { 0 };
	char *got;

	rig_init(&r, silent_script);
	rig_start(&r);
	/* s1 every 10 minutes: never silent; s2 twice then quiet */
	event(&b, 1, "sensor.reading", "s1", 0, "{\"value\":1}");
	event(&b, 2, "sensor.reading", "s2", 1, "{\"value\":20}");
	event(&b, 3, "sensor.reading", "s1", 10, "{\"value\":2}");
	event(&b, 4, "sensor.reading", "s2", 11, "{\"value\":21}");
	event(&b, 5, "sensor.reading", "s1", 20, "{\"value\":3}");
	rig_publish(&r, sb_take(&b), "silence");
	got = emitted(r.data, "sensor.silent");
	ck_assert_str_eq(got, ""); /* s2 is due at 00:26, the clock is at 00:20 */
	free(got);
	rig_stop(&r);

	/* down while s2's timer fell due: it fires once, at the first event
	 * after the restart that moves the clock past it */
	rig_start(&r);
	event(&b, 6, "sensor.reading", "s1", 30, "{\"value\":4}");
	event(&b, 7, "sensor.reading", "s1", 40, "{\"value\":5}");
	rig_publish(&r, sb_take(&b), "silence");
	got = emitted(r.data, "sensor.silent");
	ck_assert_str_eq(got, "s2 {\"last\":21,\"value\":21}\n");
	free(got);
	rig_kill(&r);

	/* s1 goes quiet too; both expire after 2 h without events */
	rig_start(&r);
	event(&b, 8, "sensor.reading", "s3", 100, "{\"value\":7}");
	event(&b, 9, "sensor.reading", "s3", 300, "{\"value\":8}");
	rig_publish(&r, sb_take(&b), "silence");
	rig_stop(&r);
	got = emitted(r.data, "sensor.silent");
	ck_assert_str_eq(got, "s2 {\"last\":21,\"value\":21}\n"
			      "s1 {\"last\":5,\"value\":5}\n"
			      "s3 {\"last\":7,\"value\":7}\n");
	free(got);
	{
		char out[512];
		/* only s3 is left (its last event at 05:00), with its timer and
		 * its expiry */
		ck_assert_int_eq(
			th_sh(out, sizeof out, "'%s' stat --data '%s' --json", TIDE_BIN, r.data),
			0);
		ck_assert_msg(strstr(out, "\"keys\":1,\"timers\":2,") != NULL, "%s", out);
		ck_assert_msg(strstr(out, "\"clock\":\"2026-01-01T05:00:00.000Z\"") != NULL, "%s",
			      out);
	}
}
END_TEST

/* tide.timer.every, tide.timer.cancel and the clock a handler sees */
START_TEST(recurring_and_cancelled_timers)
{
	static const char script[] =
		"local tide = require 'tide'\n"
		"tide.on('job.*', function(ev, st)\n"
		"  if ev.type == 'job.start' then\n"
		"    tide.timer.every('tick', '10m', { job = ev.subject })\n"
		"    tide.timer.after('deadline', '25m')\n"
		"  elseif ev.type == 'job.stop' then\n"
		"    tide.timer.cancel('tick')\n"
		"    tide.timer.cancel('deadline')\n"
		"  end\n"
		"end, { name = 'jobs', key = 'subject', from = 'beginning',\n"
		"       timers = {\n"
		"         tick = function(key, data, st)\n"
		"           st.ticks = (st.ticks or 0) + 1\n"
		"           tide.emit{ type = 'out.tick', subject = key, data = { n = st.ticks,\n"
		"                      at = tide.clock() // 60000000000 - 29453760 } }\n"
		"         end,\n"
		"         deadline = function(key, data, st)\n"
		"           tide.emit{ type = 'out.late', subject = key, data = { ticks = st.ticks "
		"} }\n"
		"         end } })\n";
	rig r;
	sbuf b = { 0 };
	char *got;

	rig_init(&r, script);
	rig_start(&r);
	event(&b, 1, "job.start", "a", 0, "{}");
	event(&b, 2, "job.start", "b", 2, "{}");
	event(&b, 3, "job.noise", "x", 21, "{}");
	event(&b, 4, "job.stop", "b", 22, "{}");
	event(&b, 5, "job.noise", "x", 60, "{}");
	rig_publish(&r, sb_take(&b), "jobs");
	rig_stop(&r);
	got = emitted(r.data, "out.tick");
	/* the clock reaches 21: a's tick due at 10 fires once for the span
	 * (10 and 20), due again at 30; b's due at 12, again at 22; at 22 b's
	 * fires, then b stops; at 60, a's deadline (25), then its tick (30,
	 * once for 30..60, due again at 70) */
	ck_assert_str_eq(got, "a {\"at\":21,\"n\":1}\n"
			      "b {\"at\":21,\"n\":1}\n"
			      "b {\"at\":22,\"n\":2}\n"
			      "a {\"at\":60,\"n\":2}\n");
	free(got);
	got = emitted(r.data, "out.late");
	ck_assert_str_eq(got, "a {\"ticks\":1}\n");
	free(got);
}
END_TEST

/* On the arrival clock a timer fires at its time with no event to move
 * the clock: the engine appends a tick, which no handler sees and which
 * a replay follows. */
START_TEST(arrival_clock_timers_fire_without_events)
{
	static const char script[] =
		"local tide = require 'tide'\n"
		"tide.on('*', function(ev, st, key)\n"
		"  st.seen = (st.seen or 0) + 1\n"
		"  if ev.type == 'job.start' then tide.timer.after('check', '1s', { id = ev.id }) "
		"end\n"
		"end, { name = 'watch', key = 'subject', clock = 'arrival', from = 'beginning',\n"
		"       timers = { check = function(key, data, st)\n"
		"         tide.emit{ type = 'out.check', subject = key,\n"
		"                    data = { id = data.id, seen = st.seen } }\n"
		"       end } })\n"
		"tide.on('*', function(ev)\n"
		"  if ev.type == 'tide.tick' then error('a tick reached a handler') end\n"
		"end, { name = 'all', from = 'beginning', retries = 0 })\n";
	rig r;
	sbuf b = { 0 };
	char *got = NULL, *live, *replayed, out[4096];
	int64_t deadline;

	rig_init(&r, script);
	rig_start(&r);
	event(&b, 1, "job.start", "j1", 0, "{}");
	event(&b, 2, "job.start", "j2", 0, "{}");
	rig_publish(&r, sb_take(&b), "watch");
	deadline = th_ms() + 10000;
	do {
		free(got);
		th_pause();
		got = emitted(r.data, "out.check");
	} while (th_count(got, "\n") < 2 && th_ms() < deadline);
	rig_stop(&r);
	ck_assert_str_eq(got, "j1 {\"id\":\"e1\",\"seen\":1}\nj2 {\"id\":\"e2\",\"seen\":1}\n");
	free(got);
	/* no handler saw the tick: nothing in the dead letters */
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' dlq list --data '%s' 2>&1", TIDE_BIN, r.data),
			 0);
	ck_assert_msg(strstr(out, "tick") == NULL, "%s", out);
	ck_assert_int_ge(th_log_count(r.data, "--type tide.tick"), 1);
	live = log_emits(r.data);
	replayed = replay_emits(&r);
	same_lines(replayed, live);
	free(live);
	free(replayed);
}
END_TEST

/* ------------------------------------------------------------------------
 * Late events
 * ------------------------------------------------------------------------ */

START_TEST(late_events_are_counted_or_handed_over)
{
	static const char script[] =
		"local tide = require 'tide'\n"
		"tide.on('m.*', function(ev, st)\n"
		"  st.n = (st.n or 0) + 1\n"
		"end, { name = 'dropper', key = 'subject', from = 'beginning', lateness = '5m' })\n"
		"tide.on('m.*', function(ev, st)\n"
		"  tide.emit{ type = 'out.on_time', data = { id = ev.id } }\n"
		"end, { name = 'keeper', key = 'subject', from = 'beginning', lateness = '5m',\n"
		"       late = function(ev, st)\n"
		"         tide.emit{ type = 'out.late', data = { id = ev.id,\n"
		"                    behind = (tide.clock() - ev.time_ns) // 60000000000 } }\n"
		"       end })\n";
	rig r;
	sbuf b = { 0 };
	char *got, out[4096];

	rig_init(&r, script);
	rig_start(&r);
	event(&b, 1, "m.x", "k", 10, "{}");
	event(&b, 2, "m.x", "k", 20, "{}"); /* watermark 15 */
	event(&b, 3, "m.x", "k", 16, "{}"); /* out of order, within lateness */
	event(&b, 4, "m.x", "k", 12, "{}"); /* late by 3 minutes */
	event(&b, 5, "m.x", "k", 30, "{}"); /* watermark 25 */
	event(&b, 6, "m.x", "k", 5, "{}");  /* late by 20 */
	rig_publish(&r, sb_take(&b), "keeper");
	rig_stop(&r);
	got = emitted(r.data, "out.late");
	ck_assert_str_eq(got, "- {\"behind\":3,\"id\":\"e4\"}\n- {\"behind\":20,\"id\":\"e6\"}\n");
	free(got);
	got = emitted(r.data, "out.on_time");
	ck_assert_int_eq(th_count(got, "\n"), 4);
	free(got);
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' stat --data '%s' --json", TIDE_BIN, r.data),
			 0);
	ck_assert_msg(strstr(out, "\"name\":\"dropper\"") != NULL &&
			      strstr(strstr(out, "\"name\":\"dropper\""), "\"late\":2,") != NULL,
		      "%s", out);
}
END_TEST

/* ------------------------------------------------------------------------
 * Errors in rule options and timers
 * ------------------------------------------------------------------------ */

START_TEST(rule_option_errors)
{
	static const struct {
		const char *opts, *want;
	} cases[] = {
		{ "key = 'subject', clock = 'wall'", "option 'clock' must be \"event\" or" },
		{ "key = 'subject', ttl = '3 days'", "option 'ttl': '3 days' is not a duration" },
		{ "key = 'subject', ttl = true", "option 'ttl' must be a duration" },
		{ "key = 'data..x'", "option 'key': 'data..x' is not a path" },
		{ "key = 42", "option 'key' must be a path" },
		{ "timers = { t = 1 }", "option 'timers': each entry must be name = function" },
		{ "late = 'ignore'", "option 'late' must be \"drop\", \"handle\" or a function" },
		{ "clock = 'arrival', lateness = '1m'",
		  "option 'lateness' is for the event clock" },
		{ "key = 'subject', ttl = '1h', tll = 3", "unknown option 'tll'" },
	};

	for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
		const char *dir = th_tmpdir();
		char script[1024];
		const char *out;
		snprintf(script, sizeof script,
			 "local tide = require 'tide'\n"
			 "tide.on('x', function(ev, st) end, { name = 'r', %s })\n",
			 cases[k].opts);
		th_write(dir, "bad.lua", script);
		out = load_fails(dir, "bad.lua");
		ck_assert_msg(strstr(out, cases[k].want) != NULL, "%s: %s", cases[k].opts, out);
		ck_assert_msg(strstr(out, "bad.lua:2") != NULL, "%s: %s", cases[k].opts, out);
	}
}
END_TEST

/* A timer without a handler is refused when set (the call fails, and is
 * retried and parked like any failure); timers outside rules too. */
START_TEST(timer_errors)
{
	static const char script[] =
		"local tide = require 'tide'\n"
		"tide.on('a', function(ev, st)\n"
		"  tide.timer.after('nameless', '1m')\n"
		"end, { name = 'r', key = 'subject', from = 'beginning', retries = 0 })\n"
		"tide.on('a', function(ev)\n"
		"  tide.timer.after('t', '1m')\n"
		"end, { name = 'plain', from = 'beginning', retries = 0 })\n"
		"tide.on('a', function(ev, st)\n"
		"  tide.timer.after('t', 'soon')\n"
		"end, { name = 'baddelay', key = 'subject', from = 'beginning', retries = 0,\n"
		"       timers = { t = function() end } })\n";
	rig r;
	sbuf b = { 0 };
	char out[8192];

	rig_init(&r, script);
	rig_start(&r);
	event(&b, 1, "a", "k", 0, "{}");
	rig_publish(&r, sb_take(&b), "baddelay");
	rig_stop(&r);
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' dlq list --data '%s' 2>&1", TIDE_BIN, r.data),
			 0);
	ck_assert_msg(strstr(out, "timer 'nameless' has no handler") != NULL, "%s", out);
	ck_assert_msg(strstr(out, "timers belong to a rule") != NULL, "%s", out);
	ck_assert_msg(strstr(out, "'soon' is not a duration") != NULL, "%s", out);
}
END_TEST

/* ------------------------------------------------------------------------
 * Windows
 * ------------------------------------------------------------------------ */

static const char window_script[] =
	"local tide = require 'tide'\n"
	"local base = 29453760 -- 2026-01-01 in minutes\n"
	"local function int(x) return x and math.tointeger(x) or x end\n"
	"tide.on('m.v', function(ev, st, key)\n"
	"  local w, c = tide.window('s30'), tide.window('last3')\n"
	"  tide.emit{ type = 'out.seen', subject = key,\n"
	"             data = { id = ev.id, n = w.count, max = int(w.max), last3 = int(c.sum) } }\n"
	"end, { name = 'win', key = 'subject', from = 'beginning',\n"
	"       windows = { t10 = { tumbling = '10m', value = 'data.v' },\n"
	"                   s30 = { sliding = '30m', value = 'data.v', aggregates = { 'count', "
	"'max' } },\n"
	"                   last3 = { last = 3, value = 'data.v', aggregates = { 'sum' } },\n"
	"                   sess = { session = '5m' } },\n"
	"       on_close = function(key, name, a, st)\n"
	"         tide.emit{ type = 'out.closed', subject = key, data = { name = name,\n"
	"           count = a.count, sum = int(a.sum), start = a.start // 60000000000 - base } }\n"
	"       end })\n";

START_TEST(windows_aggregate_and_close_across_a_kill)
{
	rig r;
	sbuf b = { 0 };
	char *got, *live, *replayed;

	rig_init(&r, window_script);
	rig_start(&r);
	event(&b, 1, "m.v", "k1", 1, "{\"v\":1}");
	event(&b, 2, "m.v", "k2", 2, "{\"v\":2}");
	event(&b, 3, "m.v", "k1", 3, "{\"v\":2}");
	event(&b, 4, "m.v", "k1", 12, "{\"v\":3}");
	event(&b, 5, "m.v", "k1", 14, "{\"v\":6}");
	event(&b, 6, "m.v", "k2", 25, "{\"v\":6}");
	rig_publish(&r, sb_take(&b), "win");
	rig_kill(&r);
	rig_start(&r);
	event(&b, 7, "m.v", "k1", 40, "{\"v\":4}");
	rig_publish(&r, sb_take(&b), "win");
	rig_stop(&r);

	got = emitted(r.data, "out.seen");
	ck_assert_str_eq(got, "k1 {\"id\":\"e1\",\"last3\":1,\"max\":1,\"n\":1}\n"
			      "k2 {\"id\":\"e2\",\"last3\":2,\"max\":2,\"n\":1}\n"
			      "k1 {\"id\":\"e3\",\"last3\":3,\"max\":2,\"n\":2}\n"
			      "k1 {\"id\":\"e4\",\"last3\":6,\"max\":3,\"n\":3}\n"
			      "k1 {\"id\":\"e5\",\"last3\":11,\"max\":6,\"n\":4}\n"
			      "k2 {\"id\":\"e6\",\"last3\":8,\"max\":6,\"n\":2}\n"
			      "k1 {\"id\":\"e7\",\"last3\":13,\"max\":6,\"n\":3}\n");
	free(got);
	got = emitted(r.data, "out.closed");
	ck_assert_str_eq(got, "k2 {\"count\":1,\"name\":\"sess\",\"start\":2}\n"
			      "k2 {\"count\":1,\"name\":\"t10\",\"start\":0,\"sum\":2}\n"
			      "k1 {\"count\":2,\"name\":\"sess\",\"start\":1}\n"
			      "k1 {\"count\":2,\"name\":\"t10\",\"start\":0,\"sum\":3}\n"
			      "k1 {\"count\":2,\"name\":\"sess\",\"start\":12}\n"
			      "k1 {\"count\":2,\"name\":\"t10\",\"start\":10,\"sum\":9}\n"
			      "k2 {\"count\":1,\"name\":\"sess\",\"start\":25}\n"
			      "k2 {\"count\":1,\"name\":\"t10\",\"start\":20,\"sum\":6}\n");
	free(got);
	live = log_emits(r.data);
	replayed = replay_emits(&r);
	same_lines(replayed, live);
	free(live);
	free(replayed);
}
END_TEST

START_TEST(window_option_errors)
{
	static const struct {
		const char *opts, *want;
	} cases[] = {
		{ "windows = { w = { tumbling = '1h', sliding = '1h' } }",
		  "needs one of tumbling" },
		{ "windows = { w = { sliding = '1h', aggregates = { 'sum' } } }",
		  "'sum' needs a 'value' path" },
		{ "windows = { w = { hopping = '1h' } }", "'every' goes with 'hopping'" },
		{ "windows = { w = { hopping = '1h', every = '7m' } }", "window 'w':" },
		{ "windows = { w = { last = 0 } }", "'last' must be a count" },
		{ "windows = { w = { session = '5m', colour = 1 } }", "unknown field 'colour'" },
		{ "windows = { w = { tumbling = '1h', value = 'data.v', aggregates = { 'p95', "
		  "'p99' } } }",
		  "one quantile per window" },
		{ "windows = { w = { tumbling = 'soon' } }", "window 'w': 'tumbling':" },
		{ "windows = { w = { tumbling = '1h', value = 'data..v' } }",
		  "window 'w': 'value': 'data..v' is not a path" },
		{ "windows = { w = { tumbling = '1h', distinct = '' } }",
		  "window 'w': 'distinct': '' is not a path" },
	};

	for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
		const char *dir = th_tmpdir();
		char script[1024];
		const char *out;
		snprintf(
			script, sizeof script,
			"local tide = require 'tide'\n"
			"tide.on('x', function(ev, st) end, { name = 'r', key = 'subject', %s })\n",
			cases[k].opts);
		th_write(dir, "bad.lua", script);
		out = load_fails(dir, "bad.lua");
		ck_assert_msg(strstr(out, cases[k].want) != NULL, "%s: %s", cases[k].opts, out);
	}
}
END_TEST

/* ------------------------------------------------------------------------
 * Patterns (lua/tide/pattern.lua)
 * ------------------------------------------------------------------------ */

static const char pattern_script[] =
	"local tide = require 'tide'\n"
	"local pattern = require 'tide.pattern'\n"
	"pattern.absence{ name = 'silent', on = 'sensor.reading', within = '15m',\n"
	"                 emit = 'sensor.silent', from = 'beginning' }\n"
	"pattern.sequence{ name = 'card_testing', within = '10m', from = 'beginning',\n"
	"  steps = { { type = 'card.tx', where = function(ev) return ev.data.amount < 2 end },\n"
	"            { type = 'card.tx', where = function(ev) return ev.data.amount > 500 end } "
	"},\n"
	"  emit = function(key, evs)\n"
	"    return { type = 'fraud.alert', subject = key,\n"
	"             data = { rule = 'card_testing', small = evs[1].id, large = evs[2].id } }\n"
	"  end }\n"
	"pattern.sequence{ name = 'unpaid', within = '30m', from = 'beginning',\n"
	"  steps = { { type = 'order.placed' }, { type = 'order.paid', absent = true } },\n"
	"  emit = 'order.unpaid' }\n";

START_TEST(absence_sequence_and_negation)
{
	rig r;
	sbuf b = { 0 };
	char *got;

	rig_init(&r, pattern_script);
	rig_start(&r);
	event(&b, 1, "sensor.reading", "s1", 0, "{}");
	event(&b, 2, "sensor.reading", "s2", 0, "{}");
	event(&b, 3, "card.tx", "c1", 1, "{\"amount\":1}");
	event(&b, 4, "card.tx", "c2", 1, "{\"amount\":1}");
	event(&b, 5, "order.placed", "o1", 2, "{}");
	event(&b, 6, "order.placed", "o2", 3, "{}");
	event(&b, 7, "sensor.reading", "s1", 10, "{}");
	event(&b, 8, "card.tx", "c1", 8, "{\"amount\":900}");  /* within 10m: alert */
	event(&b, 9, "card.tx", "c2", 20, "{\"amount\":900}"); /* too late */
	event(&b, 10, "order.paid", "o1", 20, "{}");
	rig_publish(&r, sb_take(&b), "unpaid");
	rig_kill(&r);
	rig_start(&r);
	event(&b, 11, "sensor.reading", "s1", 24, "{}"); /* s2 silent since 15 */
	event(&b, 12, "order.placed", "o3", 40, "{}");   /* o2 unpaid at 33 */
	event(&b, 13, "sensor.reading", "s1", 38, "{}");
	event(&b, 14, "card.tx", "c3", 50, "{\"amount\":1}");
	rig_publish(&r, sb_take(&b), "unpaid");
	rig_stop(&r);

	got = emitted(r.data, "sensor.silent");
	ck_assert_str_eq(got, "s2 {\"events\":[\"e2\"],\"pattern\":\"silent\"}\n");
	free(got);
	got = emitted(r.data, "fraud.alert");
	ck_assert_str_eq(got, "c1 {\"large\":\"e8\",\"rule\":\"card_testing\",\"small\":\"e3\"}\n");
	free(got);
	got = emitted(r.data, "order.unpaid");
	ck_assert_str_eq(got, "o2 {\"events\":[\"e6\"],\"pattern\":\"unpaid\"}\n");
	free(got);
}
END_TEST

/* ------------------------------------------------------------------------
 * Enrichment: projections and reference tables
 * ------------------------------------------------------------------------ */

static const char enrich_script[] =
	"local tide = require 'tide'\n"
	"local risk = tide.table('risk.csv', { key = 'merchant' })\n"
	"local codes = tide.table('codes.json')\n"
	"tide.projection('limits', { on = { ['card.limit'] = function(s, ev)\n"
	"  s.limit = ev.data.limit end } })\n"
	"tide.on('card.tx', function(ev, st, card)\n"
	"  local l = tide.query('limits', card)\n"
	"  local m = risk[ev.data.merchant]\n"
	"  if (l and ev.data.amount > l.limit) or (m and m.score > 0.5) then\n"
	"    tide.emit{ type = 'card.flag', subject = card, data = {\n"
	"      limit = l and l.limit or tide.null, merchant = m and m.name or tide.null,\n"
	"      code = codes[ev.data.merchant] or 'none' } }\n"
	"  end\n"
	"end, { name = 'flags', key = 'subject', from = 'beginning' })\n";

START_TEST(projections_and_tables_enrich_rules)
{
	rig r;
	sbuf b = { 0 };
	char *got;

	rig_init(&r, enrich_script);
	th_write(r.dir, "risk.csv",
		 "merchant,name,score\r\n"
		 "m1,\"Shop, the \"\"first\"\"\",0.9\r\n"
		 "m2,Grocer,0.1\r\n");
	th_write(r.dir, "codes.json", "{\"m1\": \"A1\", \"m2\": \"B2\"}");
	rig_start(&r);
	event(&b, 1, "card.limit", "c1", 0, "{\"limit\":100}");
	rig_publish(&r, sb_take(&b), "flags");
	event(&b, 2, "card.tx", "c1", 1, "{\"amount\":50,\"merchant\":\"m2\"}");
	event(&b, 3, "card.tx", "c1", 2, "{\"amount\":150,\"merchant\":\"m2\"}");
	event(&b, 4, "card.tx", "c2", 3, "{\"amount\":150,\"merchant\":\"m2\"}");
	event(&b, 5, "card.tx", "c2", 4, "{\"amount\":5,\"merchant\":\"m1\"}");
	rig_publish(&r, sb_take(&b), "flags");
	rig_stop(&r);
	got = emitted(r.data, "card.flag");
	ck_assert_str_eq(
		got,
		"c1 {\"code\":\"B2\",\"limit\":100,\"merchant\":\"Grocer\"}\n"
		"c2 {\"code\":\"A1\",\"limit\":null,\"merchant\":\"Shop, the \\\"first\\\"\"}\n");
	free(got);
}
END_TEST

START_TEST(table_errors)
{
	static const struct {
		const char *call, *file, *content, *want;
	} cases[] = {
		{ "tide.table('none.csv')", NULL, NULL, "cannot open none.csv" },
		{ "tide.table('../x.csv')", NULL, NULL, "read from the script's directory" },
		{ "tide.table('t.txt')", "t.txt", "a\n", "a .csv or a .json file" },
		{ "tide.table('t.csv')", "t.csv", "a,b\n1,2,3\n", "t.csv: line 2 has more fields" },
		{ "tide.table('t.csv')", "t.csv", "a,b\n\"1,2\n", "t.csv: line 2: a quoted field" },
		{ "tide.table('t.csv', { key = 'a' })", "t.csv", "a,b\n1,2\n1,3\n",
		  "t.csv: line 3: key '1' is repeated" },
		{ "tide.table('t.csv', { key = 'c' })", "t.csv", "a,b\n",
		  "no column is named 'c'" },
		{ "tide.table('t.json')", "t.json", "{\"a\":", "t.json:" },
	};

	for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
		const char *dir = th_tmpdir();
		char script[512];
		const char *out;
		snprintf(script, sizeof script, "local tide = require 'tide'\nlocal t = %s\n",
			 cases[k].call);
		th_write(dir, "s.lua", script);
		if (cases[k].file != NULL)
			th_write(dir, cases[k].file, cases[k].content);
		out = load_fails(dir, "s.lua");
		ck_assert_msg(strstr(out, cases[k].want) != NULL, "%s: %s", cases[k].call, out);
	}
}
END_TEST

/* ------------------------------------------------------------------------
 * In process: the consumer layer over a log, turn by turn as the engine
 * runs it, so that a turn can be aborted or the log made to fail
 * ------------------------------------------------------------------------ */

typedef struct urig {
	const char *dir;
	char data[600], script[600];
	tidei_log *log;
	tidei_consumers *cs;
	tidei_buf path, rec;
} urig;

static void
u_log(void *ud, int level, const char *fmt, ...)
{
	(void)ud;
	(void)level;
	(void)fmt;
}

/* A log (initial map @p map bytes, 0 for the default) and @p script
 * loaded and started on it. */
static void
u_open(urig *u, const char *script, uint64_t map)
{
	tidei_log_opts lo = { 0 };
	tidei_consumers_opts co;
	char err[TIDEI_ERRLEN];
	const char *scripts[1];

	memset(u, 0, sizeof *u);
	u->dir = th_tmpdir();
	snprintf(u->data, sizeof u->data, "%s/data", u->dir);
	snprintf(u->script, sizeof u->script, "%s", th_write(u->dir, "rule.lua", script));
	lo.map_size = map;
	ck_assert_msg(tidei_log_open(&u->log, u->data, &lo, err) == TIDE_OK, "%s", err);
	scripts[0] = u->script;
	tidei_lua_path(&u->path, NULL, scripts, 1);
	memset(&co, 0, sizeof co);
	co.script.instruction_budget = TIDEI_DEFAULT_BUDGET;
	co.script.time_limit_ns = TIDEI_DEFAULT_TIME_NS;
	co.script.memory_limit = TIDEI_DEFAULT_MEMORY;
	co.script.lua_path = (const char *)u->path.p;
	co.max_event = 1 << 20;
	co.max_depth = TIDEI_DEFAULT_EMIT_DEPTH;
	co.log = u_log;
	ck_assert_msg(tidei_consumers_new(&u->cs, &co, err) == TIDE_OK, "%s", err);
	ck_assert_msg(tidei_consumers_load(u->cs, u->script, err) == TIDE_OK, "%s", err);
	ck_assert_msg(tidei_consumers_start(u->cs, u->log, u->log->committed, err) == TIDE_OK, "%s",
		      err);
}

static void
u_close(urig *u)
{
	tidei_consumers_destroy(u->cs);
	tidei_log_close(u->log);
	tidei_buf_free(&u->path);
	tidei_buf_free(&u->rec);
	u->cs = NULL;
	u->log = NULL;
}

static void
u_append(void *ud, const uint8_t *rec, size_t len, const char *err)
{
	urig *u = ud;
	tidei_append res;

	ck_assert_msg(err == NULL, "%s", err);
	tidei_buf_reset(&u->rec);
	tidei_buf_put(&u->rec, rec, len);
	ck_assert_int_eq(tidei_log_append(u->log, u->rec.p, len, tidei_now(), -1, &res), TIDE_OK);
}

/* Append the NDJSON text @p text (freed here) in a transaction of its own,
 * without running the consumers. */
static void
u_publish(urig *u, char *text)
{
	tidei_eparser p;

	tidei_eparser_init(&p, 1 << 20);
	ck_assert_int_eq(tidei_log_begin(u->log), TIDE_OK);
	ck_assert_int_gt(tidei_eparser_run(&p, text, strlen(text), u_append, u), 0);
	ck_assert_int_eq(tidei_log_commit(u->log), TIDE_OK);
	tidei_eparser_free(&p);
	free(text);
}

/* Turns as the engine makes them until the consumers are done: a turn
 * that fails is aborted and the consumers reloaded; a full map grows. */
static void
u_run(urig *u)
{
	char err[TIDEI_ERRLEN];
	int more = 1, growths = 0, rc;

	for (int turns = 0; more; turns++) {
		ck_assert_int_lt(turns, 1000);
		ck_assert_int_eq(tidei_log_begin(u->log), TIDE_OK);
		rc = tidei_consumers_run(u->cs, u->log, &more, err);
		if (rc == TIDE_OK) {
			rc = tidei_log_commit(u->log);
			snprintf(err, sizeof err, "%s", u->log->err);
		} else {
			tidei_log_abort(u->log);
		}
		if (rc == TIDE_OK) {
			tidei_consumers_committed(u->cs);
			continue;
		}
		tidei_consumers_reload(u->cs, u->log);
		ck_assert_msg(rc == TIDE_EFULL && growths++ < 8, "turn failed (%d): %s", rc, err);
		ck_assert_int_eq(tidei_log_grow(u->log), TIDE_OK);
		more = 1;
	}
}

/* One turn that is then aborted, as when the map turns out too small. */
static void
u_abort_turn(urig *u)
{
	char err[TIDEI_ERRLEN];
	int more;

	ck_assert_int_eq(tidei_log_begin(u->log), TIDE_OK);
	ck_assert_msg(tidei_consumers_run(u->cs, u->log, &more, err) == TIDE_OK, "%s", err);
	tidei_log_abort(u->log);
	tidei_consumers_reload(u->cs, u->log);
}

static const char seen_script[] =
	"local tide = require 'tide'\n"
	"tide.on('m.*', function(ev, st)\n"
	"  st.n = (st.n or 0) + 1\n"
	"  tide.emit{ type = 'out.seen', subject = ev.subject, data = { id = ev.id, n = st.n } }\n"
	"end, { name = 'seen', key = 'subject', from = 'beginning' })\n";

/* A rule's first turn aborted: its clock goes back to where the log has
 * it (nowhere yet), or the turn run again finds its events late. */
START_TEST(aborted_first_turn_resets_the_clock)
{
	urig u;
	sbuf b = { 0 };
	char *got;

	u_open(&u, seen_script, 0);
	for (int i = 1; i <= 4; i++)
		event(&b, i, "m.x", "k", i, "{}");
	u_publish(&u, sb_take(&b));
	u_abort_turn(&u);
	u_run(&u);
	u_close(&u);
	got = emitted(u.data, "out.seen");
	ck_assert_str_eq(got, "k {\"id\":\"e1\",\"n\":1}\n"
			      "k {\"id\":\"e2\",\"n\":2}\n"
			      "k {\"id\":\"e3\",\"n\":3}\n"
			      "k {\"id\":\"e4\",\"n\":4}\n");
	free(got);
}
END_TEST

/* Fill the map in the open write transaction until not one page is left
 * (through nested transactions, so that the one that fails leaves the
 * turn's intact): the next write of the turn finds the map full. */
static void
u_fill(urig *u)
{
	static char junk[16000];
	static const size_t sizes[] = { sizeof junk, 3000, 400, 40 };
	int n = 0;

	for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++)
		for (;;) {
			MDB_txn *child;
			char key[32];
			MDB_val kv, v = { sizes[k], junk };
			int rc;
			ck_assert_int_eq(mdb_txn_begin(u->log->env, u->log->txn, 0, &child), 0);
			kv.mv_size = (size_t)snprintf(key, sizeof key, "junk%08d", n++);
			kv.mv_data = key;
			if ((rc = mdb_put(child, u->log->meta, &kv, &v, 0)) != 0) {
				ck_assert_int_eq(rc, MDB_MAP_FULL);
				mdb_txn_abort(child);
				break;
			}
			ck_assert_int_eq(mdb_txn_commit(child), 0);
		}
}

/* A turn whose write transaction is full before the consumers run: they
 * must report the map full (TIDE_EFULL, so that the engine grows it and
 * runs the turn again), not a failure of a handler or of the log. */
static void
u_full_turn(urig *u)
{
	char err[TIDEI_ERRLEN] = "";
	int more, rc;

	ck_assert_int_eq(tidei_log_begin(u->log), TIDE_OK);
	u_fill(u);
	rc = tidei_consumers_run(u->cs, u->log, &more, err);
	tidei_log_abort(u->log);
	tidei_consumers_reload(u->cs, u->log);
	ck_assert_msg(rc == TIDE_EFULL, "the turn failed with %d: %s", rc, err);
}

/* What the rule counted as failed and what is parked or waiting: nothing
 * in these tests. */
static void
u_no_failures(urig *u, const char *name)
{
	const tidei_consumer *c = tidei_consumers_find(u->cs, name);
	tidei_rule_stat st;
	MDB_txn *txn;

	ck_assert_ptr_nonnull(c);
	ck_assert_uint_eq(c->failed, 0);
	ck_assert_uint_eq(c->npend, 0);
	ck_assert_int_eq(tidei_log_read_begin(u->log, &txn), TIDE_OK);
	ck_assert_int_eq(tidei_rule_stat_read(u->log, txn, name, &st, 0), TIDE_OK);
	tidei_log_read_end(u->log);
	ck_assert_uint_eq(st.failed, 0);
}

static const char full_script[] =
	"local tide = require 'tide'\n"
	"tide.on('m.*', function(ev, st)\n"
	"  if ev.type == 'm.start' then tide.timer.every('tick', '1m') end\n"
	"  if ev.type == 'm.later' then tide.timer.after('later', '1h', { id = ev.id }) end\n"
	"end, { name = 'full', key = 'subject', from = 'beginning',\n"
	"       timers = {\n"
	"         tick = function(key, data, st)\n"
	"           st.ticks = (st.ticks or 0) + 1\n"
	"           tide.emit{ type = 'out.tick', subject = key, data = { n = st.ticks } }\n"
	"         end,\n"
	"         later = function(key, data, st)\n"
	"           tide.emit{ type = 'out.later', subject = key, data = data }\n"
	"         end } })\n"
	"tide.on('o.*', function(ev)\n"
	"  local ok, first = pcall(tide.once, ev.id) -- caught, the turn fails all the same\n"
	"  if ok and first then tide.emit{ type = 'out.once', data = { id = ev.id } } end\n"
	"end, { name = 'once', from = 'beginning' })\n"
	"tide.on('w.*', function(ev, st) end,\n"
	"  { name = 'wins', key = 'subject', from = 'beginning',\n"
	"    windows = { t = { tumbling = '10m' } },\n"
	"    on_close = function(key, name, a, st)\n"
	"      tide.emit{ type = 'out.closed', subject = key, data = { n = a.count } }\n"
	"    end })\n";

/* The map fills up while a timer is taken out and set again, while a
 * handler's timer is stored, and while a window's is: each time the turn
 * is run again in a larger map, and everything happens once. */
START_TEST(full_map_in_timers_runs_the_turn_again)
{
	urig u;
	sbuf b = { 0 };
	char *got;

	u_open(&u, full_script, 1 << 20);
	event(&b, 1, "m.start", "k", 0, "{}");
	u_publish(&u, sb_take(&b));
	u_run(&u);
	/* the clock passes the tick: it is taken out and set again */
	event(&b, 2, "m.noise", "k", 5, "{}");
	u_publish(&u, sb_take(&b));
	u_full_turn(&u);
	u_run(&u);
	/* a handler sets a timer */
	event(&b, 3, "m.later", "k", 6, "{}");
	u_publish(&u, sb_take(&b));
	u_full_turn(&u);
	u_run(&u);
	/* a window opens: its timer is set inside the call */
	event(&b, 4, "w.x", "k", 7, "{}");
	u_publish(&u, sb_take(&b));
	u_full_turn(&u);
	u_run(&u);
	/* a handler claims a key with tide.once */
	event(&b, 7, "o.x", "k", 7, "{}");
	u_publish(&u, sb_take(&b));
	u_full_turn(&u);
	u_run(&u);
	event(&b, 5, "m.noise", "k", 80, "{}");
	event(&b, 6, "w.x", "k", 80, "{}");
	u_publish(&u, sb_take(&b));
	u_run(&u);
	u_no_failures(&u, "full");
	u_no_failures(&u, "wins");
	ck_assert_uint_eq(tidei_consumers_find(u.cs, "once")->failed, 0);
	u_close(&u);
	got = emitted(u.data, "out.tick");
	/* due at 1, 6 and 7: at 5, 6 and 80 */
	ck_assert_str_eq(got, "k {\"n\":1}\nk {\"n\":2}\nk {\"n\":3}\n");
	free(got);
	got = emitted(u.data, "out.later");
	ck_assert_str_eq(got, "k {\"id\":\"e3\"}\n");
	free(got);
	got = emitted(u.data, "out.closed");
	ck_assert_str_eq(got, "k {\"n\":1}\n");
	free(got);
	got = emitted(u.data, "out.once");
	ck_assert_str_eq(got, "- {\"id\":\"e7\"}\n");
	free(got);
}
END_TEST

/* An event kept by a handler that then fails expires all the same: read
 * later, it raises instead of reading memory that is gone. */
START_TEST(event_of_a_failed_call_expires)
{
	static const char script[] =
		"local tide = require 'tide'\n"
		"local kept = {}\n"
		"tide.on('m.first', function(ev, st)\n"
		"  kept.keyed = ev\n"
		"  error('fails')\n"
		"end, { name = 'keyed', key = 'subject', from = 'beginning', retries = 0 })\n"
		"tide.on('m.first', function(ev, st)\n"
		"  kept.keyless = ev\n"
		"  error('fails')\n"
		"end, { name = 'keyless', key = 'data.none', from = 'beginning', retries = 0 })\n"
		"tide.on('m.second', function(ev)\n"
		"  local a = pcall(function() return kept.keyed.id end)\n"
		"  local b = pcall(function() return kept.keyless.id end)\n"
		"  tide.emit{ type = 'out.read', data = { keyed = a, keyless = b } }\n"
		"end, { name = 'reader', from = 'beginning' })\n";
	urig u;
	sbuf b = { 0 };
	char *got;

	u_open(&u, script, 0);
	event(&b, 1, "m.first", "k", 1, "{}");
	u_publish(&u, sb_take(&b));
	u_run(&u);
	event(&b, 2, "m.second", "k", 2, "{}");
	u_publish(&u, sb_take(&b));
	u_run(&u);
	u_close(&u);
	got = emitted(u.data, "out.read");
	ck_assert_str_eq(got, "- {\"keyed\":false,\"keyless\":false}\n");
	free(got);
}
END_TEST

/* A timer's handler that sets a timer at or before the clock (to run "as
 * soon as possible") does not make the turn fire it again and again: it
 * falls due at the next event that moves the clock. */
START_TEST(timer_set_in_the_past_by_a_timer_waits)
{
	static const char script[] =
		"local tide = require 'tide'\n"
		"tide.on('m.*', function(ev, st)\n"
		"  if ev.type == 'm.start' then tide.timer.after('again', '1m') end\n"
		"end, { name = 'loop', key = 'subject', from = 'beginning',\n"
		"       timers = { again = function(key, data, st)\n"
		"         st.n = (st.n or 0) + 1\n"
		"         tide.emit{ type = 'out.again', subject = key,\n"
		"                    data = { n = st.n, at = tide.clock() // 60000000000 - "
		"29453760 } }\n"
		"         if st.n % 2 == 1 then tide.timer.after('again', 0)\n"
		"         else tide.timer.at('again', 0) end\n"
		"       end } })\n";
	urig u;
	sbuf b = { 0 };
	char *got;

	u_open(&u, script, 0);
	event(&b, 1, "m.start", "k", 0, "{}");
	event(&b, 2, "m.x", "k", 5, "{}");
	event(&b, 3, "m.x", "k", 5, "{}");
	event(&b, 4, "m.x", "k", 10, "{}");
	event(&b, 5, "m.x", "k", 20, "{}");
	u_publish(&u, sb_take(&b));
	u_run(&u);
	u_close(&u);
	got = emitted(u.data, "out.again");
	ck_assert_str_eq(got,
			 "k {\"at\":5,\"n\":1}\nk {\"at\":10,\"n\":2}\nk {\"at\":20,\"n\":3}\n");
	free(got);
}
END_TEST

/* Event times at the ends of what a time can be (1677 and 2262), with
 * lateness and a recurring timer whose period is near that span: due times
 * and watermarks saturate instead of wrapping around. */
START_TEST(extreme_times_do_not_wrap)
{
	static const char script[] =
		"local tide = require 'tide'\n"
		"tide.on('a', function(ev, st)\n"
		"  tide.emit{ type = 'out.a', data = { id = ev.id } }\n"
		"end, { name = 'late', key = 'subject', from = 'beginning', lateness = '1h' })\n"
		"tide.on('b', function(ev, st)\n"
		"  if ev.id == 'y1' then tide.timer.every('t', '14880w') end\n"
		"end, { name = 'every', key = 'subject', from = 'beginning',\n"
		"       timers = { t = function(key, data, st)\n"
		"         tide.emit{ type = 'out.t', data = { key = key } }\n"
		"       end } })\n";
	static const char *const lines[][3] = {
		{ "x1", "a", "1677-09-21T00:12:45Z" }, { "x2", "a", "2026-01-01T00:00:00Z" },
		{ "y1", "b", "1700-01-01T00:00:00Z" }, { "y2", "b", "2026-01-01T00:00:00Z" },
		{ "y3", "b", "2262-04-11T23:47:15Z" },
	};
	urig u;
	sbuf b = { 0 };
	char *got;

	for (size_t k = 0; k < sizeof lines / sizeof lines[0]; k++)
		sb_printf(&b,
			  "{\"specversion\":\"1.0\",\"id\":\"%s\",\"source\":\"/test\","
			  "\"type\":\"%s\",\"subject\":\"k\",\"time\":\"%s\"}\n",
			  lines[k][0], lines[k][1], lines[k][2]);
	u_open(&u, script, 0);
	u_publish(&u, sb_take(&b));
	u_run(&u);
	u_close(&u);
	got = emitted(u.data, "out.a");
	ck_assert_str_eq(got, "- {\"id\":\"x1\"}\n- {\"id\":\"x2\"}\n");
	free(got);
	got = emitted(u.data, "out.t"); /* due in 1985, then never */
	ck_assert_int_eq(th_count(got, "\n"), 1);
	free(got);
}
END_TEST

/* ttl forgets a key that kept only windows (its handler keeps no state),
 * windows and all, as it forgets one with a state. */
START_TEST(ttl_forgets_keys_with_only_windows)
{
	static const char script[] =
		"local tide = require 'tide'\n"
		"tide.on('m.*', function(ev, st) end,\n"
		"  { name = 'wins', key = 'subject', from = 'beginning', ttl = '1h',\n"
		"    windows = { s = { sliding = '30m' }, n = { last = 5 } } })\n";
	urig u;
	sbuf b = { 0 };
	tidei_rule_stat st;
	MDB_txn *txn;

	u_open(&u, script, 0);
	event(&b, 1, "m.x", "k1", 0, "{}");
	event(&b, 2, "m.x", "k2", 50, "{}");
	event(&b, 3, "m.x", "k3", 100, "{}");
	event(&b, 4, "m.x", "k2", 101, "{}");
	event(&b, 5, "m.x", "k3", 200, "{}");
	u_publish(&u, sb_take(&b));
	u_run(&u);
	ck_assert_int_eq(tidei_log_read_begin(u.log, &txn), TIDE_OK);
	ck_assert_int_eq(tidei_rule_stat_read(u.log, txn, "wins", &st, 1), TIDE_OK);
	tidei_log_read_end(u.log);
	u_close(&u);
	/* k1 expired at 60 and k2 at 161, k3 is left with its expiry */
	ck_assert_uint_eq(st.keys, 1);
	ck_assert_uint_eq(st.timers, 1);
}
END_TEST

/* A timer belongs to the key in hand: for an event without a key the
 * call says so instead of dropping the timer. */
START_TEST(timer_without_a_key_is_refused)
{
	static const char script[] =
		"local tide = require 'tide'\n"
		"tide.on('m.*', function(ev, st)\n"
		"  local ok, err = pcall(tide.timer.after, 't', '1m')\n"
		"  tide.emit{ type = 'out.timer', data = { ok = ok, err = err or 'none' } }\n"
		"end, { name = 'cards', key = 'data.card', from = 'beginning',\n"
		"       timers = { t = function() end } })\n";
	urig u;
	sbuf b = { 0 };
	char *got;

	u_open(&u, script, 0);
	event(&b, 1, "m.x", "k", 1, "{\"card\":\"c1\"}");
	event(&b, 2, "m.x", "k", 2, "{}");
	u_publish(&u, sb_take(&b));
	u_run(&u);
	u_close(&u);
	got = emitted(u.data, "out.timer");
	ck_assert_str_eq(got,
			 "- {\"err\":\"none\",\"ok\":true}\n"
			 "- {\"err\":\"tide.timer.after: this event has no key (option 'key'): "
			 "a timer belongs to a key\",\"ok\":false}\n");
	free(got);
}
END_TEST

/* A sequence whose steps' types are a type and one below it ("a.b" then
 * "a.b.c"): the rule listens to both. */
START_TEST(sequence_of_a_type_and_its_subtype)
{
	static const char script[] =
		"local pattern = require 'tide.pattern'\n"
		"pattern.sequence{ name = 'down', within = '10m', from = 'beginning',\n"
		"  steps = { { type = 'a.b' }, { type = 'a.b.c' } }, emit = 'out.down' }\n"
		"pattern.sequence{ name = 'up', within = '10m', from = 'beginning',\n"
		"  steps = { { type = 'a.b.c' }, { type = 'a.b' } }, emit = 'out.up' }\n";
	urig u;
	sbuf b = { 0 };
	char *got;

	u_open(&u, script, 0);
	event(&b, 1, "a.b", "k", 1, "{}");
	event(&b, 2, "a.b.c", "k", 2, "{}");
	event(&b, 3, "a.b", "k", 3, "{}");
	u_publish(&u, sb_take(&b));
	u_run(&u);
	u_close(&u);
	got = emitted(u.data, "out.down");
	ck_assert_str_eq(got, "k {\"events\":[\"e1\",\"e2\"],\"pattern\":\"down\"}\n");
	free(got);
	got = emitted(u.data, "out.up");
	ck_assert_str_eq(got, "k {\"events\":[\"e2\",\"e3\"],\"pattern\":\"up\"}\n");
	free(got);
}
END_TEST

/* Write @p n bytes of @p v under key @p k of the rules' database. */
static void
u_put_rules(urig *u, const char *k, size_t kn, const void *v, size_t n)
{
	MDB_val key = { kn, (void *)k }, val = { n, (void *)v };

	ck_assert_int_eq(tidei_log_begin(u->log), TIDE_OK);
	ck_assert_int_eq(mdb_put(u->log->txn, u->log->rules, &key, &val, 0), 0);
	ck_assert_int_eq(tidei_log_commit(u->log), TIDE_OK);
}

/* What the consumers cannot read back when they start is named in the
 * error. */
START_TEST(damaged_records_are_named_at_start)
{
	static const char script[] = "local tide = require 'tide'\n"
				     "local seen = tide.shared('seen', { n = 0 })\n"
				     "tide.on('m.*', function(ev, st) seen.n = seen.n + 1 end,\n"
				     "  { name = 'count', key = 'subject', from = 'beginning' })\n";
	urig u;
	char err[TIDEI_ERRLEN];

	u_open(&u, script, 0);
	u_put_rules(&u, "Gseen", 5, "\xff\xff", 2);
	ck_assert_int_ne(tidei_consumers_start(u.cs, u.log, u.log->committed, err), TIDE_OK);
	ck_assert_msg(strstr(err, "shared table 'seen' is damaged") != NULL, "%s", err);
	u_put_rules(&u, "Gseen", 5, "\x80", 1); /* an empty map */
	u_put_rules(&u, "Mcount", 6, "\x93\x01\x02\x03", 4);
	ck_assert_int_ne(tidei_consumers_start(u.cs, u.log, u.log->committed, err), TIDE_OK);
	ck_assert_msg(strstr(err, "cannot read the clock of rule 'count'") != NULL, "%s", err);
	u_close(&u);
}
END_TEST

/* An event held back behind a failing one of its subject, then released,
 * goes to the handler it is for, whatever the last event offered before
 * was (here a late one, held back too). */
START_TEST(released_event_goes_to_its_handler)
{
	static const char script[] =
		"local tide = require 'tide'\n"
		"local failed = false\n"
		"tide.on('m.*', function(ev, st)\n"
		"  if ev.id == 'e1' and not failed then failed = true; error('once') end\n"
		"  tide.emit{ type = 'out.main', data = { id = ev.id } }\n"
		"end, { name = 'r', key = 'subject', from = 'beginning', backoff = 0,\n"
		"       late = function(ev, st)\n"
		"         tide.emit{ type = 'out.late', data = { id = ev.id } }\n"
		"       end })\n";
	urig u;
	sbuf b = { 0 };
	char *got;

	u_open(&u, script, 0);
	event(&b, 1, "m.x", "a", 10, "{}"); /* fails once */
	event(&b, 2, "m.x", "a", 20, "{}"); /* waits behind e1 */
	event(&b, 3, "m.x", "a", 5, "{}");  /* late, waits too */
	u_publish(&u, sb_take(&b));
	u_run(&u);
	u_close(&u);
	/* e3 is not looked at: a late event tried again is not told apart */
	got = emitted(u.data, "out.main");
	ck_assert_msg(strstr(got, "e2") != NULL, "%s", got);
	free(got);
	got = emitted(u.data, "out.late");
	ck_assert_msg(strstr(got, "e2") == NULL, "%s", got);
	free(got);
}
END_TEST

/* More keys than a rule keeps decoded: the cache is emptied after a
 * commit and what it held is read back from the log. */
START_TEST(cache_trimmed_past_its_bound)
{
	static const char script[] =
		"local tide = require 'tide'\n"
		"tide.on('m.*', function(ev, st)\n"
		"  st.n = (st.n or 0) + 1\n"
		"  if st.n > 1 then tide.emit{ type = 'out.again', subject = ev.subject,\n"
		"                              data = { n = st.n } } end\n"
		"end, { name = 'many', key = 'subject', from = 'beginning' })\n";
	urig u;
	sbuf b = { 0 };
	char subject[32], *got;
	int n = TIDEI_RULE_CACHE + 100;

	u_open(&u, script, 0);
	for (int i = 0; i < n; i++) {
		snprintf(subject, sizeof subject, "k%d", i);
		event(&b, i, "m.x", subject, 1, "{}");
	}
	u_publish(&u, sb_take(&b));
	u_run(&u);
	event(&b, n, "m.x", "k1", 2, "{}");
	event(&b, n + 1, "m.x", "k1", 2, "{}");
	event(&b, n + 2, "m.x", "k49999", 2, "{}");
	u_publish(&u, sb_take(&b));
	u_run(&u);
	u_close(&u);
	got = emitted(u.data, "out.again");
	ck_assert_str_eq(got, "k1 {\"n\":2}\nk1 {\"n\":3}\nk49999 {\"n\":2}\n");
	free(got);
}
END_TEST

/* ------------------------------------------------------------------------
 * Live = replay
 * ------------------------------------------------------------------------ */

/* Two consumers share a table; the second reacts to the first's emits and
 * to a stream of its own; a third is a rule with timers.  Every emit
 * depends on the order in which the consumers saw the events. */
static const char shared_script[] =
	"local tide = require 'tide'\n"
	"local seen = tide.shared('seen', { orders = 0, reports = 0, trail = '' })\n"
	"tide.on('order.*', function(ev)\n"
	"  seen.orders = seen.orders + 1\n"
	"  if seen.orders % 3 == 0 then\n"
	"    tide.emit{ type = 'audit.check', subject = ev.subject,\n"
	"               data = { orders = seen.orders, reports = seen.reports } }\n"
	"  end\n"
	"end, { name = 'orders', from = 'beginning' })\n"
	"tide.on('*', function(ev)\n"
	"  if ev.type == 'report.filed' then seen.reports = seen.reports + 1 end\n"
	"  if ev.type == 'audit.check' then\n"
	"    seen.trail = (seen.trail .. ev.data.orders .. '/' .. ev.data.reports .. "
	"','):sub(-60)\n"
	"    tide.emit{ type = 'audit.done', subject = ev.subject,\n"
	"               data = { orders = seen.orders, reports = seen.reports,\n"
	"                        trail = seen.trail } }\n"
	"  end\n"
	"end, { name = 'reports', from = 'beginning' })\n"
	"tide.on('order.placed', function(ev, st)\n"
	"  st.n = (st.n or 0) + 1\n"
	"  tide.timer.after('followup', '7m', { n = st.n })\n"
	"end, { name = 'follow', key = 'subject', from = 'beginning',\n"
	"       timers = { followup = function(key, data, st)\n"
	"         tide.emit{ type = 'order.followup', subject = key,\n"
	"                    data = { n = data.n, now = st.n, orders = seen.orders } }\n"
	"       end } })\n";

/* The log's emitted events (source /tide/...) without seq, version and
 * recorded, in log order, one per line. */
static char *
log_emits(const char *data)
{
	th_rec *v;
	long n = th_log_read(data, &v);
	sbuf b = { 0 };

	ck_assert_int_ge(n, 0);
	for (long i = 0; i < n; i++)
		if (strncmp(v[i].source, "/tide/", 6) == 0)
			sb_printf(&b, "{%s\n", strstr(v[i].json, "\"specversion\""));
	th_recs_free(v, n);
	return sb_take(&b);
}

/* `tide replay`'s emits in the same form. */
static char *
replay_emits(const rig *r)
{
	char path[700];
	char *out, *line;
	sbuf b = { 0 };

	snprintf(path, sizeof path, "%s/replay.out", r->dir);
	{
		char tmp[256];
		ck_assert_int_eq(th_sh(tmp, sizeof tmp,
				       "'%s' replay -q --data '%s' --script '%s' > '%s'", TIDE_BIN,
				       r->data, r->script, path),
				 0);
	}
	out = th_slurp(path);
	ck_assert_ptr_nonnull(out);
	for (line = strtok(out, "\n"); line != NULL; line = strtok(NULL, "\n")) {
		const char *e = strstr(line, "{\"emit\":");
		char *end;
		if (e != line)
			continue;
		end = strstr(line, "},\"consumer\":");
		ck_assert_ptr_nonnull(end);
		end[1] = '\0';
		sb_printf(&b, "%s\n", line + 8);
	}
	free(out);
	return sb_take(&b);
}

/* @p got and @p want are equal; if not, say where (the whole texts are
 * too long for a message). */
static void
same_lines(const char *got, const char *want)
{
	size_t line = 1, at = 0;

	while (got[at] != '\0' && got[at] == want[at]) {
		if (got[at] == '\n')
			line++;
		at++;
	}
	if (got[at] == want[at])
		return;
	while (at > 0 && want[at - 1] != '\n')
		at--;
	ck_abort_msg("line %zu differs:\n got %.300s\nwant %.300s", line, got + at, want + at);
}

START_TEST(live_equals_replay)
{
	rig r;
	sbuf b = { 0 };
	uint64_t seed = 20261203;
	char *live, *replayed;
	int id = 0, minute = 0;

	rig_init(&r, shared_script);
	rig_start(&r);
	for (int round = 0; round < 4; round++) {
		/* interleaved streams, published in several batches */
		for (int batch = 0; batch < 3; batch++) {
			int n = (int)th_rand_range(&seed, 5, 25);
			for (int i = 0; i < n; i++) {
				char subject[16];
				int kind = (int)th_rand_range(&seed, 0, 9);
				minute += (int)th_rand_range(&seed, 0, 4);
				snprintf(subject, sizeof subject, "o%d",
					 (int)th_rand_range(&seed, 0, 5));
				event(&b, ++id,
				      kind < 5   ? "order.placed"
				      : kind < 7 ? "order.paid"
						 : "report.filed",
				      subject, minute, "{}");
			}
			rig_publish(&r, sb_take(&b), "follow");
		}
		/* a restart in between, clean or not */
		if (round % 2 == 0)
			rig_stop(&r);
		else
			rig_kill(&r);
		rig_start(&r);
	}
	rig_stop(&r);
	live = log_emits(r.data);
	replayed = replay_emits(&r);
	ck_assert_int_gt(th_count(live, "audit.done"), 5);
	ck_assert_int_gt(th_count(live, "order.followup"), 5);
	same_lines(replayed, live);
	free(live);
	free(replayed);
}
END_TEST

/* examples/rules/run.sh: a kill -9 in the middle, the alerts it must
 * show, and tide replay agreeing. */
START_TEST(rules_example_runs)
{
	const char *dir = th_tmpdir();
	static char out[65536];

	ck_assert_int_eq(th_sh(out, sizeof out,
			       "TMPDIR='%s' TIDE='%s' '%s/examples/rules/run.sh' 2>&1", dir,
			       TIDE_BIN, TIDE_SRCDIR),
			 0);
	ck_assert_msg(strstr(out, "\"card-07\" {\"events\":[\"tx-0081\",\"tx-0082\"],"
				  "\"rule\":\"card_testing\"") != NULL,
		      "%s", out);
	ck_assert_msg(strstr(out, "\"card-12\" {\"n1h\":6,\"rule\":\"velocity\"") != NULL, "%s",
		      out);
	ck_assert_msg(strstr(out, "sensor.silent \"sensor-4\"") != NULL, "%s", out);
	ck_assert_msg(strstr(out, "sensor.anomaly \"sensor-3\"") != NULL, "%s", out);
	ck_assert_msg(strstr(out, "== 4 events emitted live, 4 by tide replay of the log") != NULL,
		      "%s", out);
}
END_TEST

static TCase *
tcase(Suite *s, const char *name)
{
	TCase *tc = tcase_create(name);

	tcase_set_timeout(tc, 120);
	tcase_add_checked_fixture(tc, NULL, th_cleanup);
	suite_add_tcase(s, tc);
	return tc;
}

Suite *
rules_suite(void)
{
	Suite *s = suite_create("rules");
	TCase *tc;

	tc = tcase(s, "state");
	tcase_add_test(tc, state_survives_stop_kill_and_reload);
	tcase_add_test(tc, failed_call_leaves_no_trace);
	tc = tcase(s, "timers");
	tcase_add_test(tc, timers_fire_once_on_event_time);
	tcase_add_test(tc, recurring_and_cancelled_timers);
	tcase_add_test(tc, arrival_clock_timers_fire_without_events);
	tc = tcase(s, "late");
	tcase_add_test(tc, late_events_are_counted_or_handed_over);
	tc = tcase(s, "errors");
	tcase_add_test(tc, rule_option_errors);
	tcase_add_test(tc, timer_errors);
	tc = tcase(s, "windows");
	tcase_add_test(tc, windows_aggregate_and_close_across_a_kill);
	tcase_add_test(tc, window_option_errors);
	tc = tcase(s, "patterns");
	tcase_add_test(tc, absence_sequence_and_negation);
	tcase_add_test(tc, sequence_of_a_type_and_its_subtype);
	tc = tcase(s, "enrichment");
	tcase_add_test(tc, projections_and_tables_enrich_rules);
	tcase_add_test(tc, table_errors);
	tc = tcase(s, "determinism");
	tcase_add_test(tc, live_equals_replay);
	tcase_add_test(tc, rules_example_runs);
	tc = tcase(s, "turns");
	tcase_add_test(tc, aborted_first_turn_resets_the_clock);
	tcase_add_test(tc, full_map_in_timers_runs_the_turn_again);
	tcase_add_test(tc, event_of_a_failed_call_expires);
	tcase_add_test(tc, timer_without_a_key_is_refused);
	tcase_add_test(tc, damaged_records_are_named_at_start);
	tcase_add_test(tc, released_event_goes_to_its_handler);
	tcase_add_test(tc, cache_trimmed_past_its_bound);
	tc = tcase(s, "loops");
	tcase_set_timeout(tc, 15); /* what failed here never ended */
	tcase_add_test(tc, timer_set_in_the_past_by_a_timer_waits);
	tcase_add_test(tc, extreme_times_do_not_wrap);
	tcase_add_test(tc, ttl_forgets_keys_with_only_windows);
	return s;
}
