/*
 * test_rules.c - rules against a real `tide run`: state per key that
 * survives stops, kill -9 and reloads; timers on event time that fire once,
 * in due order, also when they fell due while the engine was down; keys
 * that expire; late events counted or handed over; a failed call that
 * leaves no trace in the state; and live processing that `tide replay`
 * repeats emit for emit.  In-process turns are in test_turns.c.
 */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules_rig.h"

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
	"  -- the same figures without a table; nil for what it does not keep\n"
	"  local n, max, mean = tide.window('s30', 'count', 'max', 'mean')\n"
	"  assert(n == w.count and max == w.max and mean == nil, 'field form differs')\n"
	"  local ok, e = pcall(tide.window, 's30', 'colour')\n"
	"  assert(not ok and e:find(\"'colour' is not an aggregate\"), e)\n"
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

START_TEST(live_equals_replay)
{
	rig r;
	sbuf b = { 0 };
	uint64_t seed = 20261203;
	char *live, *replayed;
	int id = 0, minute = 0;

	rig_init(&r, shared_script);
	/* the second time, on the consumers' own thread from the first event */
	if (_i == 1)
		r.extra = "--set consumer_thread=always";
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

Suite *
rules_suite(void)
{
	Suite *s = suite_create("rules");
	TCase *tc;

	tc = rules_tcase(s, "state");
	tcase_add_test(tc, state_survives_stop_kill_and_reload);
	tcase_add_test(tc, failed_call_leaves_no_trace);
	tc = rules_tcase(s, "timers");
	tcase_add_test(tc, timers_fire_once_on_event_time);
	tcase_add_test(tc, recurring_and_cancelled_timers);
	tcase_add_test(tc, arrival_clock_timers_fire_without_events);
	tc = rules_tcase(s, "late");
	tcase_add_test(tc, late_events_are_counted_or_handed_over);
	tc = rules_tcase(s, "errors");
	tcase_add_test(tc, rule_option_errors);
	tcase_add_test(tc, timer_errors);
	tc = rules_tcase(s, "windows");
	tcase_add_test(tc, windows_aggregate_and_close_across_a_kill);
	tcase_add_test(tc, window_option_errors);
	tc = rules_tcase(s, "patterns");
	tcase_add_test(tc, absence_sequence_and_negation);
	tc = rules_tcase(s, "enrichment");
	tcase_add_test(tc, projections_and_tables_enrich_rules);
	tcase_add_test(tc, table_errors);
	tc = rules_tcase(s, "determinism");
	tcase_add_loop_test(tc, live_equals_replay, 0, 2);
	tcase_add_test(tc, rules_example_runs);
	return s;
}
