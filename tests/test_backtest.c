/*
 * test_backtest.c - `tide backtest`: the scripts over past events emit
 * what a live engine emits from the same events; the log read is left as
 * it was; bounds, labels and scores; bad input and usage.
 */
#define _GNU_SOURCE
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "rules_rig.h"

/* A rule with a window and a timer, a plain consumer, and a projection. */
static const char script[] =
	"local tide = require 'tide'\n"
	"tide.projection('spent', { version = 1,\n"
	"  init = function() return { sum = 0 } end,\n"
	"  on = { ['card.tx'] = function(s, ev) s.sum = s.sum + ev.data.amount end } })\n"
	"tide.on('card.tx', function(ev, st, card)\n"
	"  st.n = (st.n or 0) + 1\n"
	"  local h = tide.window('h')\n"
	"  if h.count >= 3 then\n"
	"    tide.emit{ type = 'alert.burst', subject = card,\n"
	"               data = { n = h.count, sum = h.sum, seen = st.n } }\n"
	"  end\n"
	"  tide.timer.after('quiet', '20m', { n = st.n })\n"
	"end, { name = 'burst', key = 'subject', from = 'beginning',\n"
	"       windows = { h = { sliding = '10m', value = 'data.amount',\n"
	"                         aggregates = { 'count', 'sum' } } },\n"
	"       timers = { quiet = function(key, data, st)\n"
	"         tide.emit{ type = 'alert.quiet', subject = key, data = { n = data.n } }\n"
	"       end } })\n"
	"tide.on('card.tx', function(ev)\n"
	"  if ev.data.amount > 90 then\n"
	"    tide.emit{ type = 'alert.big', subject = ev.subject,\n"
	"               data = { amount = ev.data.amount } }\n"
	"  end\n"
	"end, { name = 'big', from = 'beginning' })\n";

/* @p n card transactions over 5 cards, 4 a minute with a pause of 30
 * minutes after every 500; every 7th is labelled a fraud. */
static const char *
write_events(const char *dir, int n)
{
	static char path[700];
	uint64_t seed = 11;
	FILE *f;

	snprintf(path, sizeof path, "%s/events.ndjson", dir);
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	for (int i = 0; i < n; i++) {
		int minute = i / 4 + 30 * (i / 500);
		fprintf(f,
			"{\"specversion\":\"1.0\",\"id\":\"tx%d\",\"source\":\"/bank\","
			"\"type\":\"card.tx\",\"subject\":\"c%d\","
			"\"time\":\"2026-03-%02dT%02d:%02d:00Z\","
			"\"data\":{\"amount\":%d,\"fraud\":%s}}\n",
			i, (int)th_rand_range(&seed, 0, 4), 1 + minute / 1440, minute / 60 % 24,
			minute % 60, (int)th_rand_range(&seed, 1, 100),
			i % 7 == 0 ? "true" : "false");
	}
	fclose(f);
	return path;
}

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The emitted events of NDJSON text @p text, from their source on, sorted:
 * seqs, and the ids made of them, differ between logs. */
static char *
emit_lines(const char *text)
{
	char *copy = strdup(text), *line, *save = NULL;
	char **v = NULL;
	size_t n = 0, cap = 0;
	sbuf b = { 0 };

	ck_assert_ptr_nonnull(copy);
	for (line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		const char *src = strstr(line, "\"source\":\"/tide/");
		if (src == NULL)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 256;
			v = realloc(v, cap * sizeof *v);
			ck_assert_ptr_nonnull(v);
		}
		v[n++] = strdup(src); /* from the source on: ids count seqs, which differ */
	}
	if (n > 1)
		qsort(v, n, sizeof *v, cmp_str);
	for (size_t k = 0; k < n; k++) {
		sb_printf(&b, "%s\n", v[k]);
		free(v[k]);
	}
	free(v);
	free(copy);
	return sb_take(&b);
}

/* Live and backtest emit the same events, with the same ids, data and
 * times; the log a backtest reads is left as it was. */
START_TEST(backtest_emits_what_live_emits)
{
	const char *dir = th_tmpdir(), *data;
	char datab[600], events[700], path[700], cmd[2400], err[4096];
	char *out = malloc(1 << 22), *live, *bt, *before, *after;
	th_daemon d;

	ck_assert_ptr_nonnull(out);
	snprintf(datab, sizeof datab, "%s/data", dir);
	data = datab;
	snprintf(path, sizeof path, "%s", th_write(dir, "rules.lua", script));
	snprintf(events, sizeof events, "%s", write_events(dir, 3000));
	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s' --script '%s'", data, path), 0);
	ck_assert_int_eq(th_sh(err, sizeof err,
			       "'%s' publish -q --wait --batch 300 --data '%s' < '%s' 2>&1",
			       TIDE_BIN, data, events),
			 0);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
	ck_assert_int_eq(th_sh(out, 1 << 22, "'%s' log --data '%s'", TIDE_BIN, data), 0);
	live = emit_lines(out);
	ck_assert_int_gt(th_count(live, "alert.burst"), 100);
	ck_assert_int_gt(th_count(live, "alert.quiet"), 20);
	ck_assert_int_gt(th_count(live, "alert.big"), 20);

	/* from the file */
	snprintf(cmd, sizeof cmd, "'%s' backtest -q --emits -s '%s' '%s'", TIDE_BIN, path, events);
	ck_assert_int_eq(th_sh(out, 1 << 22, "%s", cmd), 0);
	bt = emit_lines(out);
	same_lines(bt, live);
	free(bt);

	/* from the stored log: the log stays as it was */
	ck_assert_int_eq(th_sh(err, sizeof err, "'%s' stat --json --data '%s'", TIDE_BIN, data), 0);
	before = strdup(err);
	ck_assert_int_eq(th_sh(out, 1 << 22, "'%s' backtest -q --emits -s '%s' --data '%s'",
			       TIDE_BIN, path, data),
			 0);
	bt = emit_lines(out);
	same_lines(bt, live);
	free(bt);
	ck_assert_int_eq(th_sh(err, sizeof err, "'%s' stat --json --data '%s'", TIDE_BIN, data), 0);
	after = strdup(err);
	ck_assert_str_eq(after, before);
	free(before);
	free(after);
	free(live);
	free(out);
}
END_TEST

/* --until by seq (the log) and by time (a file); the summary's counts. */
START_TEST(bounds_and_summary)
{
	const char *dir = th_tmpdir();
	char path[700], events[700], out[8192];

	snprintf(path, sizeof path, "%s", th_write(dir, "rules.lua", script));
	snprintf(events, sizeof events, "%s", write_events(dir, 400));
	/* 400 events, 4 a minute from 00:00: up to 00:09 is the first 40 */
	ck_assert_int_eq(th_sh(out, sizeof out,
			       "'%s' backtest -s '%s' --until 2026-03-01T00:09:00Z '%s' 2>&1",
			       TIDE_BIN, path, events),
			 0);
	ck_assert_msg(strstr(out, "tide backtest: 40 events in ") != NULL, "%s", out);
	ck_assert_msg(strstr(out, "emitted, by consumer and type:\n") != NULL, "%s", out);
	ck_assert_msg(strstr(out, "  big                  alert.big") != NULL, "%s", out);
	ck_assert_msg(strstr(out, "--from and --until") == NULL, "%s", out);
	ck_assert_int_eq(th_sh(out, sizeof out,
			       "'%s' backtest -s '%s' --from 2026-03-01T00:50:00Z '%s' 2>&1",
			       TIDE_BIN, path, events),
			 0);
	ck_assert_msg(strstr(out, "tide backtest: 200 events in ") != NULL, "%s", out);
	/* seqs are the log's */
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' backtest -s '%s' --until 5 '%s' 2>&1",
			       TIDE_BIN, path, events),
			 2);
	ck_assert_msg(strstr(out, "seqs are the log's") != NULL, "%s", out);
}
END_TEST

/* On a terminal a long backtest shows a count that moves, then the
 * summary over it; in a pipe, the summary alone. */
START_TEST(progress_on_a_terminal)
{
	static const char rule[] = "local tide = require 'tide'\n"
				   "tide.on('tx', function(ev) end, { name = 'quiet' })\n";
	const char *dir = th_tmpdir();
	char path[700], big[700], tty[700], res[4096], *text;

	snprintf(path, sizeof path, "%s", th_write(dir, "r.lua", rule));
	snprintf(big, sizeof big, "%s/big.ndjson", dir);
	snprintf(tty, sizeof tty, "%s/tty.out", dir);
	ck_assert_int_eq(
		th_sh(NULL, 0,
		      "awk 'BEGIN { for (i = 1; i <= 200000; i++) printf "
		      "\"{\\\"specversion\\\":\\\"1.0\\\",\\\"id\\\":\\\"p%%d\\\","
		      "\\\"source\\\":\\\"/x\\\",\\\"type\\\":\\\"tx\\\"}\\n\", i }' >'%s'",
		      big),
		0);
	/* script(1) gives it a terminal */
	ck_assert_int_eq(th_sh(res, sizeof res,
			       "script -qec \"'%s' backtest -s '%s' '%s'\" /dev/null >'%s' 2>&1",
			       TIDE_BIN, path, big, tty),
			 0);
	text = th_slurp(tty);
	ck_assert_ptr_nonnull(text);
	ck_assert_msg(strstr(text, "\rtide backtest: 131072 events (") &&
			      strstr(text, "\r\033[Ktide backtest: 200000 events in "),
		      "%.500s", text);
	free(text);
	/* not a terminal: the summary alone */
	ck_assert_int_eq(
		th_sh(res, sizeof res, "'%s' backtest -s '%s' '%s' 2>&1", TIDE_BIN, path, big), 0);
	ck_assert_msg(strncmp(res, "tide backtest: 200000 events in ", 32) == 0 &&
			      strchr(res, '\r') == NULL,
		      "%s", res);
}
END_TEST

/* Scores against labels, from a field or a file of ids, overall and per
 * consumer, checked by hand on a small input. */
START_TEST(scores_against_labels)
{
	static const char rule[] =
		"local tide = require 'tide'\n"
		"tide.on('tx', function(ev)\n"
		"  if ev.data.amount > 50 then\n"
		"    tide.emit{ type = 'alert.x', data = { a = ev.data.amount } }\n"
		"  end\n"
		"  if ev.data.amount > 80 then tide.emit{ type = 'note.x' } end\n"
		"end, { name = 'big', from = 'beginning' })\n"
		"tide.on('alert.x', function(ev)\n"
		"  tide.emit{ type = 'alert.y' }\n"
		"end, { name = 'follow', from = 'beginning' })\n";
	/* amounts and labels: flagged are 60, 90, 70 (> 50); positives 60, 90, 10 */
	static const int amount[] = { 60, 90, 10, 20, 70, 30 };
	static const int fraud[] = { 1, 1, 1, 0, 0, 0 };
	const char *dir = th_tmpdir();
	char path[700], events[700], ids[700], out[8192];
	FILE *f;

	snprintf(path, sizeof path, "%s", th_write(dir, "r.lua", rule));
	snprintf(events, sizeof events, "%s/e.ndjson", dir);
	snprintf(ids, sizeof ids, "%s/ids.txt", dir);
	f = fopen(events, "w");
	ck_assert_ptr_nonnull(f);
	for (int i = 0; i < 6; i++)
		fprintf(f,
			"{\"specversion\":\"1.0\",\"id\":\"e%d\",\"source\":\"/t\",\"type\":\"tx\","
			"\"time\":\"2026-01-01T00:00:0%dZ\",\"data\":{\"amount\":%d,\"f\":%d}}\n",
			i, i, amount[i], fraud[i]);
	fputs("not json\n", f);
	fclose(f);
	f = fopen(ids, "w");
	ck_assert_ptr_nonnull(f);
	fputs("e0\ne1\ne2\n", f);
	fclose(f);
	/* alert.* flags: tp 2 (e0, e1), fp 1 (e4), fn 1 (e2); follow's alert.y
	 * descends from the same inputs */
	ck_assert_int_eq(th_sh(out, sizeof out,
			       "'%s' backtest -s '%s' --label data.f --alerts 'alert.*' '%s' 2>&1",
			       TIDE_BIN, path, events),
			 0);
	ck_assert_msg(strstr(out, "  (all)                 precision 0.667  recall 0.667  F1 "
				  "0.667  (tp 2, fp 1, fn 1)\n") != NULL,
		      "%s", out);
	ck_assert_msg(strstr(out, "  big                   precision 0.667  recall 0.667  F1 "
				  "0.667  (tp 2, fp 1, fn 1)\n") != NULL,
		      "%s", out);
	ck_assert_msg(strstr(out, "  follow                precision 0.667") != NULL, "%s", out);
	ck_assert_msg(strstr(out, "line 7: ") != NULL, "%s", out);
	ck_assert_msg(strstr(out, "6 events in ") != NULL && strstr(out, "1 rejected") != NULL,
		      "%s", out);
	/* only the stretch from e2 on is scored: e4 flagged, e2 missed */
	ck_assert_int_eq(th_sh(out, sizeof out,
			       "'%s' backtest -s '%s' --label data.f --alerts 'alert.*' "
			       "--score-from 2026-01-01T00:00:02Z '%s' 2>&1",
			       TIDE_BIN, path, events),
			 0);
	ck_assert_msg(strstr(out, "  (all)                 precision 0.000  recall 0.000  F1 "
				  "0.000  (tp 0, fp 1, fn 1)\n") != NULL,
		      "%s", out);
	/* the same positives from a file of ids; only note.x flags: e1 */
	ck_assert_int_eq(th_sh(out, sizeof out,
			       "'%s' backtest -s '%s' --labels '%s' --alerts note.x '%s' 2>&1",
			       TIDE_BIN, path, ids, events),
			 0);
	ck_assert_msg(strstr(out, "  (all)                 precision 1.000  recall 0.333  F1 "
				  "0.500  (tp 1, fp 0, fn 2)\n") != NULL,
		      "%s", out);
	ck_assert_msg(strstr(out, "  follow                precision -      recall 0.000  F1 "
				  "0.000  (tp 0, fp 0, fn 3)\n") != NULL,
		      "%s", out);
}
END_TEST

START_TEST(usage_and_errors)
{
	const char *dir = th_tmpdir();
	char path[700], out[8192];

	snprintf(path, sizeof path, "%s", th_write(dir, "r.lua", script));
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' backtest x.ndjson 2>&1", TIDE_BIN), 2);
	ck_assert_msg(strstr(out, "name a script") != NULL, "%s", out);
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' backtest -s '%s' '%s/none.ndjson' 2>&1",
			       TIDE_BIN, path, dir),
			 1);
	ck_assert_msg(strstr(out, "none.ndjson: No such file or directory") != NULL, "%s", out);
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' backtest -s '%s' --data '%s/nolog' 2>&1",
			       TIDE_BIN, path, dir),
			 1);
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' backtest -s '%s' --until never x 2>&1",
			       TIDE_BIN, path),
			 2);
	ck_assert_msg(strstr(out, "--until takes a seq from 1 or an RFC 3339 time") != NULL, "%s",
		      out);
	ck_assert_int_eq(th_sh(out, sizeof out,
			       "echo 'if' > '%s/bad.lua'; '%s' backtest -s "
			       "'%s/bad.lua' '%s/none' 2>&1",
			       dir, TIDE_BIN, dir, dir),
			 1);
	ck_assert_msg(strstr(out, "bad.lua:") != NULL, "%s", out);
}
END_TEST

/* tide test: the shipped cases pass; a case that emits something else
 * fails with the difference; --update writes the expectations. */
START_TEST(tide_test_compares_with_expectations)
{
	static const char rule[] = "local tide = require 'tide'\n"
				   "tide.on('tx', function(ev)\n"
				   "  if ev.data.amount > 50 then\n"
				   "    tide.emit{ type = 'alert.x', subject = ev.subject, data = "
				   "{ a = ev.data.amount } }\n"
				   "  end\n"
				   "end, { name = 'big', from = 'beginning' })\n";
	static const char events[] =
		"{\"specversion\":\"1.0\",\"id\":\"e1\",\"source\":\"/t\",\"type\":\"tx\","
		"\"subject\":\"s1\",\"data\":{\"amount\":60}}\n"
		"{\"specversion\":\"1.0\",\"id\":\"e2\",\"source\":\"/t\",\"type\":\"tx\","
		"\"subject\":\"s2\",\"data\":{\"amount\":10}}\n"
		"{\"specversion\":\"1.0\",\"id\":\"e3\",\"source\":\"/t\",\"type\":\"tx\","
		"\"subject\":\"s3\",\"data\":{\"amount\":70.5}}\n";
	const char *dir = th_tmpdir();
	char path[700], out[16384];

	/* every rule of the packs has its cases, and so has every example */
	ck_assert_int_eq(th_sh(out, sizeof out,
			       "cd '%s' && for r in rules/*/*.lua; do d=${r%%/*.lua}; n=${r##*/}; "
			       "'%s' test -s \"$r\" \"$d/tests/${n%%.lua}\" 2>/dev/null || exit 1; "
			       "done && '%s' test -s examples/rules/rules.lua examples/rules/tests "
			       "2>/dev/null && for p in fraud iot; do '%s' test $(for r in "
			       "rules/$p/*.lua; do printf -- '-s %%s ' $r; done) examples/$p/tests "
			       "2>/dev/null || exit 1; done && cd examples/orders && '%s' test -s "
			       "orders.lua -s large_amount.lua tests 2>/dev/null && cd ../saga && "
			       "'%s' test -s "
			       "saga.lua tests 2>/dev/null",
			       TIDE_SRCDIR, TIDE_BIN, TIDE_BIN, TIDE_BIN, TIDE_BIN, TIDE_BIN),
			 0);
	ck_assert_int_ge(th_count(out, " passed, 0 failed\n"), 18);
	ck_assert_int_eq(th_count(out, "FAIL"), 0);
	/* test files in Lua among them */
	ck_assert_msg(strstr(out,
			     "PASS rules/iot/tests/offline/cases.test.lua: a sensor silent for "
			     "15 minutes is reported once (1 emitted)\n") != NULL,
		      "%s", out);

	snprintf(path, sizeof path, "%s", th_write(dir, "r.lua", rule));
	ck_assert_int_eq(th_sh(out, sizeof out, "mkdir '%s/cases'", dir), 0);
	th_write(dir, "cases/one.ndjson", events);
	/* no expectations yet */
	ck_assert_int_eq(
		th_sh(out, sizeof out, "'%s' test -s '%s' '%s/cases'", TIDE_BIN, path, dir), 1);
	ck_assert_msg(strstr(out, "(tide test --update writes it)") != NULL, "%s", out);
	ck_assert_msg(strstr(out, "0 passed, 1 failed\n") != NULL, "%s", out);
	/* written, then they pass; numbers compare by value */
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' test -s '%s' --update '%s/cases'", TIDE_BIN,
			       path, dir),
			 0);
	th_write(dir, "cases/one.expected.ndjson",
		 "{\"type\":\"alert.x\",\"subject\":\"s1\",\"data\":{\"a\":60.0}}\n"
		 "{\"type\":\"alert.x\",\"data\":{\"a\":70.5}}\n");
	ck_assert_int_eq(
		th_sh(out, sizeof out, "'%s' test -s '%s' '%s/cases'", TIDE_BIN, path, dir), 0);
	ck_assert_msg(strstr(out, "PASS ") != NULL && strstr(out, "1 passed, 0 failed\n"), "%s",
		      out);
	/* a different value, then one event too few */
	th_write(dir, "cases/one.expected.ndjson",
		 "{\"type\":\"alert.x\",\"subject\":\"s1\",\"data\":{\"a\":61}}\n"
		 "{\"type\":\"alert.x\",\"data\":{\"a\":70.5}}\n");
	ck_assert_int_eq(
		th_sh(out, sizeof out, "'%s' test -s '%s' '%s/cases'", TIDE_BIN, path, dir), 1);
	ck_assert_msg(strstr(out,
			     "  event 1: data differs\n  - expected {\"type\":\"alert.x\","
			     "\"subject\":\"s1\",\"data\":{\"a\":61}}\n  + got      "
			     "{\"type\":\"alert.x\",\"subject\":\"s1\",\"data\":{\"a\":60}}\n") !=
			      NULL,
		      "%s", out);
	th_write(dir, "cases/one.expected.ndjson", "{\"type\":\"alert.x\",\"subject\":\"s1\"}\n");
	ck_assert_int_eq(
		th_sh(out, sizeof out, "'%s' test -s '%s' '%s/cases'", TIDE_BIN, path, dir), 1);
	ck_assert_msg(strstr(out, "emitted 2 events, 1 expected; the first unexpected:") != NULL,
		      "%s", out);
	/* the projections' states at the end, when NAME.state.ndjson lists them */
	ck_assert_int_eq(
		th_sh(out, sizeof out,
		      "mkdir '%s/orders' && cp -L '%s'/examples/orders/tests/events.* "
		      "'%s/orders/' && sed -i '1s/\"status\":\"[a-z]*\"/\"status\":\"lost\"/' "
		      "'%s/orders/events.state.ndjson' && cd '%s/examples/orders' && '%s' test "
		      "-s orders.lua -s large_amount.lua '%s/orders' 2>/dev/null",
		      dir, TIDE_SRCDIR, dir, dir, TIDE_SRCDIR, TIDE_BIN, dir),
		1);
	ck_assert_msg(strstr(out, "  a state differs or is missing (") != NULL &&
			      strstr(out, "\"state\":{\"status\":\"lost\"") != NULL,
		      "%s", out);
	/* and the rules' states: one changed, then one left out */
	ck_assert_int_eq(
		th_sh(out, sizeof out,
		      "cp -r '%s/rules/fraud/tests/spike' '%s/spike' && sed -i "
		      "'1s/\"n\":14/\"n\":15/' '%s/spike/cases.state.ndjson' && '%s' test -s "
		      "'%s/rules/fraud/spike.lua' '%s/spike' 2>/dev/null",
		      TIDE_SRCDIR, dir, dir, TIDE_BIN, TIDE_SRCDIR, dir),
		1);
	ck_assert_msg(
		strstr(out, "  a state differs or is missing (") != NULL &&
			strstr(out, "  - expected {\"rule\":\"fraud.spike\",\"key\":\"c1\"") &&
			strstr(out, "  + held     {\"rule\":\"fraud.spike\",\"key\":\"c1\"") &&
			strstr(out, "\"n\":14}"),
		"%s", out);
	ck_assert_int_eq(th_sh(out, sizeof out,
			       "sed -i '1d' '%s/spike/cases.state.ndjson' && '%s' test -s "
			       "'%s/rules/fraud/spike.lua' '%s/spike' 2>/dev/null",
			       dir, TIDE_BIN, TIDE_SRCDIR, dir),
			 1);
	ck_assert_msg(strstr(out, "the rules hold 2 states, ") != NULL && strstr(out, "expects 1"),
		      "%s", out);
	/* usage */
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' test '%s/cases' 2>&1", TIDE_BIN, dir), 2);
	ck_assert_msg(strstr(out, "name a script") != NULL, "%s", out);
}
END_TEST

/* tide test: a test file in Lua declares cases that send events and
 * check what came out; a failing check says where and what differs; a
 * file that does not load, or declares nothing, fails as a whole. */
START_TEST(tide_test_runs_lua_test_files)
{
	static const char rule[] =
		"local tide = require 'tide'\n"
		"tide.on('tx', function(ev, st)\n"
		"  if not st then return end\n"
		"  st.n = (st.n or 0) + 1\n"
		"  st.sum = (st.sum or 0) + ev.data.amount\n"
		"  if st.sum > tide.param('limit', 100) then\n"
		"    tide.emit{ type = 'alert.sum', subject = ev.subject, data = { sum = st.sum } "
		"}\n"
		"  end\n"
		"end, { name = 'sum', key = 'subject', from = 'beginning' })\n"
		"tide.projection('count', { key = 'subject', init = function() return { n = 0 } "
		"end,\n"
		"  on = { tx = function(s, ev) s.n = s.n + 1; return s end } })\n";
	static const char cases[] =
		"local function tx(t, who, amount, minute)\n"
		"  return t:send{ type = 'tx', subject = who, data = { amount = amount },\n"
		"                 time = t.at('2026-01-01T00:00:00Z', 60 * (minute or 0)) }\n"
		"end\n"
		"test('over the limit, an alert', function(t)\n"
		"  tx(t, 'a', 60); local second = tx(t, 'a', 50, 1)\n"
		"  t:expect({ { type = 'alert.sum', subject = 'a', data = { sum = 110 } } })\n"
		"  t:eq(t:emitted()[1].causationid, second)\n"
		"  t:eq(t:rule('sum', 'a'), { n = 2, sum = 110 })\n"
		"  t:eq(t:state('count', 'a'), { n = 2 })\n"
		"  t:eq(t:state('count', 'b'), nil)\n"
		"  t:eq(t.time(t.at(0, 90.5)), 90.5)\n"
		"end)\n"
		"test('the limit is a parameter, sends go on after a look', function(t)\n"
		"  t:set('limit', 10)\n"
		"  tx(t, 'b', 20)\n"
		"  t:eq(#t:emitted('alert.*'), 1)\n"
		"  tx(t, 'b', 5)\n"
		"  t:eq(#t:emitted('alert.*'), 2)\n"
		"  t:eq(#t:emitted('other.*'), 0)\n"
		"end)\n"
		"test('a wrong state', function(t)\n"
		"  tx(t, 'c', 1)\n"
		"  t:eq(t:rule('sum', 'c'), { n = 1, sum = 2 }, 'state of c')\n"
		"end)\n"
		"test('one event too many', function(t)\n"
		"  tx(t, 'd', 200); tx(t, 'd', 1)\n"
		"  t:expect({ { type = 'alert.sum' } })\n"
		"end)\n"
		"test('an error in the test', function(t)\n"
		"  local x = nil\n"
		"  return x.y\n"
		"end)\n";
	const char *dir = th_tmpdir();
	char path[700], out[16384];

	snprintf(path, sizeof path, "%s", th_write(dir, "r.lua", rule));
	th_write(dir, "sum.test.lua", cases);
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' test -s '%s' '%s' 2>&1", TIDE_BIN, path, dir),
			 1);
	ck_assert_msg(strstr(out, "sum.test.lua: over the limit, an alert (1 emitted)\n") != NULL,
		      "%s", out);
	ck_assert_msg(strstr(out, "PASS ") && strstr(out, "sum.test.lua: the limit is a parameter, "
							  "sends go on after a look (2 emitted)\n"),
		      "%s", out);
	ck_assert_msg(strstr(out, "sum.test.lua: a wrong state\n  ") != NULL &&
			      strstr(out, "sum.test.lua:24: state of c: sum: expected 2, got 1\n"),
		      "%s", out);
	ck_assert_msg(strstr(out, "sum.test.lua:28: emitted 2 events, 1 expected; the first "
				  "unexpected: {") != NULL,
		      "%s", out);
	ck_assert_msg(strstr(out, "sum.test.lua:32: attempt to index a nil value") != NULL, "%s",
		      out);
	ck_assert_msg(strstr(out, "2 passed, 3 failed\n") != NULL, "%s", out);
	/* a parameter from the command line, overridden by a case's t:set */
	ck_assert_int_eq(th_sh(out, sizeof out,
			       "'%s' test -s '%s' --set limit=1000 '%s/sum.test.lua'", TIDE_BIN,
			       path, dir),
			 1);
	ck_assert_msg(strstr(out, "over the limit, an alert\n  ") != NULL &&
			      strstr(out, "parameter, sends go on after a look (2 emitted)"),
		      "%s", out);
	/* a file that does not load, one with no cases, scripts that fail */
	th_write(dir, "bad.test.lua", "test('x', function(t)\n");
	ck_assert_int_eq(
		th_sh(out, sizeof out, "'%s' test -s '%s' '%s/bad.test.lua'", TIDE_BIN, path, dir),
		1);
	ck_assert_msg(strstr(out, "bad.test.lua:2:") != NULL && strstr(out, "0 passed, 1 failed"),
		      "%s", out);
	th_write(dir, "none.test.lua", "local x = 1\n");
	ck_assert_int_eq(
		th_sh(out, sizeof out, "'%s' test -s '%s' '%s/none.test.lua'", TIDE_BIN, path, dir),
		1);
	ck_assert_msg(strstr(out, "declares no test(name, function(t) ... end)") != NULL, "%s",
		      out);
	th_write(dir, "broken.lua", "tide.on(\n");
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' test -s '%s/broken.lua' '%s/sum.test.lua'",
			       TIDE_BIN, dir, dir),
			 1);
	ck_assert_msg(strstr(out, "sum.test.lua:7: the scripts could not run: ") != NULL &&
			      strstr(out, "broken.lua:") && strstr(out, "0 passed, 5 failed"),
		      "%s", out);
}
END_TEST

/* tide.param(name, default) answers --set NAME=VALUE, in the default's
 * type, and refuses a value of another. */
START_TEST(params_from_the_command_line)
{
	static const char rule[] =
		"local tide = require 'tide'\n"
		"local LIMIT = tide.param('limit', 50)\n"
		"local ON = tide.param('on', true)\n"
		"local NAME = tide.param('name', 'big')\n"
		"tide.on('tx', function(ev)\n"
		"  if ON and ev.data.amount > LIMIT then\n"
		"    tide.emit{ type = 'alert.' .. NAME, data = { a = ev.data.amount } }\n"
		"  end\n"
		"end, { name = 'big', from = 'beginning' })\n";
	const char *dir = th_tmpdir();
	char path[700], events[700], out[8192];
	FILE *f;

	snprintf(path, sizeof path, "%s", th_write(dir, "r.lua", rule));
	snprintf(events, sizeof events, "%s/e.ndjson", dir);
	f = fopen(events, "w");
	ck_assert_ptr_nonnull(f);
	for (int i = 0; i < 10; i++)
		fprintf(f,
			"{\"specversion\":\"1.0\",\"id\":\"e%d\",\"source\":\"/t\",\"type\":\"tx\","
			"\"data\":{\"amount\":%d}}\n",
			i, i * 10);
	fclose(f);
	ck_assert_int_eq(
		th_sh(out, sizeof out, "'%s' backtest -s '%s' '%s' 2>&1", TIDE_BIN, path, events),
		0);
	ck_assert_msg(strstr(out, "  big                  alert.big                    4\n") !=
			      NULL,
		      "%s", out);
	ck_assert_int_eq(th_sh(out, sizeof out,
			       "'%s' backtest -s '%s' --set limit=75.5 --set name=huge '%s' 2>&1",
			       TIDE_BIN, path, events),
			 0);
	ck_assert_msg(strstr(out, "  big                  alert.huge                   2\n") !=
			      NULL,
		      "%s", out);
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' backtest -s '%s' --set on=false '%s' 2>&1",
			       TIDE_BIN, path, events),
			 0);
	ck_assert_msg(strstr(out, "0 emitted") != NULL, "%s", out);
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' backtest -s '%s' --set limit=lots '%s' 2>&1",
			       TIDE_BIN, path, events),
			 1);
	ck_assert_msg(strstr(out, "r.lua:2: parameter 'limit': 'lots' is not a number") != NULL,
		      "%s", out);
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' backtest -s '%s' --set limit '%s' 2>&1",
			       TIDE_BIN, path, events),
			 2);
}
END_TEST

/* examples/fraud, examples/iot and examples/saga: one command each. */
START_TEST(pack_examples_run)
{
	char out[32768];

	ck_assert_int_eq(th_sh(out, sizeof out, "TIDE='%s' '%s/examples/fraud/run.sh' 2>&1",
			       TIDE_BIN, TIDE_SRCDIR),
			 0);
	ck_assert_msg(strstr(out, "== 13 alerts\n") != NULL, "%s", out);
	for (const char *r = "amount\0velocity\0spike\0terminal\0card_testing\0travel\0habit\0"; *r;
	     r += strlen(r) + 1) {
		char want[64];
		snprintf(want, sizeof want, "\"rule\":\"fraud.%s\"", r);
		ck_assert_msg(strstr(out, want) != NULL, "%s: %s", want, out);
	}
	ck_assert_int_eq(th_sh(out, sizeof out, "TIDE='%s' '%s/examples/iot/run.sh' 2>&1", TIDE_BIN,
			       TIDE_SRCDIR),
			 0);
	ck_assert_msg(strstr(out, "== 14 alerts\n") != NULL, "%s", out);
	ck_assert_msg(strstr(out, "boiler-2  {\"after\":\"15m\"") != NULL, "%s", out);
	ck_assert_msg(strstr(out, "\"rule\":\"iot.stuck\"") != NULL, "%s", out);
	ck_assert_int_eq(th_sh(out, sizeof out, "TIDE='%s' '%s/examples/saga/run.sh' 2>&1",
			       TIDE_BIN, TIDE_SRCDIR),
			 0);
	ck_assert_int_eq(th_count(out, "  order.confirmed  "), 2);
	ck_assert_int_eq(th_count(out, "  order.cancelled  "), 3);
	ck_assert_int_eq(th_count(out, "  inventory.release  "), 2);
	ck_assert_msg(strstr(out, "order-3  order.cancelled  {\"reason\":\"no answer within "
				  "10m\"}") != NULL,
		      "%s", out);
}
END_TEST

/* --nab: a detection at a window's first point scores 100, none 0, one
 * before the window less. */
START_TEST(nab_scores_through_backtest)
{
	static const char rule[] =
		"local tide = require 'tide'\n"
		"tide.on('sensor.reading', function(ev)\n"
		"  if ev.data.value > 50 then\n"
		"    tide.emit{ type = 'sensor.anomaly', subject = ev.subject }\n"
		"  end\n"
		"end, { name = 'over', from = 'beginning' })\n";
	const char *dir = th_tmpdir();
	char path[700], events[700], windows[700], out[16384];
	FILE *f;

	snprintf(path, sizeof path, "%s", th_write(dir, "r.lua", rule));
	snprintf(windows, sizeof windows, "%s",
		 th_write(dir, "windows.json",
			  "{\"a/s.csv\": [[\"2026-01-01 08:20:00.000000\", "
			  "\"2026-01-01 09:59:00.000000\"]], \"a/quiet.csv\": []}"));
	snprintf(events, sizeof events, "%s/e.ndjson", dir);
	f = fopen(events, "w");
	ck_assert_ptr_nonnull(f);
	/* 1000 minutes from 00:00; the window is minutes 500-599 */
	for (int i = 0; i < 1000; i++)
		fprintf(f,
			"{\"specversion\":\"1.0\",\"id\":\"r%d\",\"source\":\"/t\","
			"\"type\":\"sensor.reading\",\"subject\":\"a/s.csv\","
			"\"time\":\"2026-01-01T%02d:%02d:00Z\",\"data\":{\"value\":%d}}\n",
			i, i / 60, i % 60, i == 500 ? 100 : 1);
	fclose(f);
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' backtest -s '%s' --nab '%s' '%s' 2>&1",
			       TIDE_BIN, path, windows, events),
			 0);
	ck_assert_msg(strstr(out,
			     "NAB score (normalised: 100 perfect, 0 no detection): 100.0  (1 "
			     "windows detected, 0 false detections, 0 windows missed)") != NULL,
		      "%s", out);
	ck_assert_int_eq(th_sh(out, sizeof out,
			       "'%s' backtest -s '%s' --nab '%s' --set x=1 "
			       "--nab-profile reward_low_FN_rate '%s' 2>&1 && sed -i "
			       "'s/\"value\":100/\"value\":2/' '%s' && '%s' backtest -s '%s' --nab "
			       "'%s' '%s' 2>&1",
			       TIDE_BIN, path, windows, events, events, TIDE_BIN, path, windows,
			       events),
			 0);
	ck_assert_msg(strstr(out, "normalised: 100 perfect, 0 no detection): 0.0  (0 windows "
				  "detected, 0 false detections, 1 windows missed)") != NULL,
		      "%s", out);
	ck_assert_int_eq(th_sh(out, sizeof out,
			       "'%s' backtest -s '%s' --nab '%s' --nab-profile best '%s' 2>&1",
			       TIDE_BIN, path, windows, events),
			 1);
	ck_assert_msg(strstr(out, "unknown NAB profile 'best'") != NULL, "%s", out);
}
END_TEST

/* ------------------------------------------------------------------------
 * Sweeps
 * ------------------------------------------------------------------------ */

/* `script` with two parameters (the amount a big alert needs, the count
 * a burst needs), and a consumer of the big alerts. */
static const char swept[] =
	"local tide = require 'tide'\n"
	"local LIMIT = tide.param('limit', 90)\n"
	"local BURST = tide.param('burst', 3)\n"
	"tide.projection('spent', { version = 1,\n"
	"  init = function() return { sum = 0 } end,\n"
	"  on = { ['card.tx'] = function(s, ev) s.sum = s.sum + ev.data.amount end } })\n"
	"tide.on('card.tx', function(ev, st, card)\n"
	"  st.n = (st.n or 0) + 1\n"
	"  local h = tide.window('h')\n"
	"  if h.count >= BURST then\n"
	"    tide.emit{ type = 'alert.burst', subject = card,\n"
	"               data = { n = h.count, v = ev.version } }\n"
	"  end\n"
	"  if ev.data.amount > LIMIT then\n"
	"    tide.emit{ type = 'alert.big', subject = card, data = { a = ev.data.amount } }\n"
	"  end\n"
	"  tide.timer.after('quiet', '20m', { n = st.n })\n"
	"end, { name = 'burst', key = 'subject', from = 'beginning',\n"
	"       windows = { h = { sliding = '10m', value = 'data.amount',\n"
	"                         aggregates = { 'count' } } },\n"
	"       timers = { quiet = function(key, data)\n"
	"         tide.emit{ type = 'note.quiet', subject = key, data = { n = data.n } }\n"
	"       end } })\n"
	"tide.on('alert.big', function(ev)\n"
	"  tide.emit{ type = 'alert.follow', subject = ev.subject }\n"
	"end, { name = 'follow', from = 'beginning' })\n";

/* The summary of variant @p v in a sweep's output @p out: what follows its
 * "== v" heading up to its "N emitted" line, which gives *@p emitted. */
static char *
variant_summary(const char *out, const char *v, unsigned long long *emitted)
{
	char head[256];
	const char *from, *end, *line;

	snprintf(head, sizeof head, "== %s\n", v);
	from = strstr(out, head);
	ck_assert_msg(from != NULL, "no %s in %s", head, out);
	from += strlen(head);
	end = strstr(from, " emitted\n");
	ck_assert_ptr_nonnull(end);
	for (line = end; line > from && line[-1] != '\n'; line--)
		;
	ck_assert_int_eq(sscanf(line, "%llu emitted\n", emitted), 1);
	return strndup(from, (size_t)(line - from));
}

/* The summary of a run by itself, without its last line (times differ),
 * which gives the events it emitted through *@p emitted. */
static char *
run_summary(const char *out, unsigned long long *emitted)
{
	const char *last = strstr(out, "tide backtest: ");
	const char *n;

	ck_assert_msg(last != NULL, "%s", out);
	n = strstr(last, " rejected, ");
	ck_assert_ptr_nonnull(n);
	ck_assert_int_eq(sscanf(n, " rejected, %llu emitted", emitted), 1);
	return strndup(out, (size_t)(last - out));
}

/* The row of variant @p v in a sweep's table: its emitted events, and its
 * F1 (NAN if none is shown). */
static void
table_row(const char *out, const char *v, unsigned long long *emitted, double *f1)
{
	char head[256], line[512], f1s[32] = "";
	const char *table = strstr(out, " variants:\n"), *row;

	ck_assert_msg(table != NULL, "%s", out);
	snprintf(head, sizeof head, "\n  %s ", v);
	row = strstr(table, head);
	ck_assert_msg(row != NULL, "no row %s in %s", v, out);
	row += strlen(head);
	snprintf(line, sizeof line, "%.*s", (int)strcspn(row, "\n"), row);
	ck_assert_int_ge(sscanf(line, "%llu %*s %*s %31s", emitted, f1s), 1);
	*f1 = f1s[0] ? strtod(f1s, NULL) : NAN;
}

/* A sweep of 3 values reads the input once, and each variant emits and
 * scores exactly what a run of its value with --set does, over more
 * than one batch of input (65,536 events), with consumers reacting to
 * each other's emits, timers and windows; the table agrees and marks the
 * best F1. */
START_TEST(sweep_is_separate_runs_in_one_pass)
{
	static const char *const limit[] = { "60", "80", "95" };
	const char *dir = th_tmpdir();
	char path[700], events[700], v[64], *out = malloc(1 << 16), *one = malloc(1 << 16);
	unsigned long long emitted[3], n, row;
	double f1[3], best = -1, rf1;
	char *want, *got;

	ck_assert_ptr_nonnull(out);
	ck_assert_ptr_nonnull(one);
	snprintf(path, sizeof path, "%s", th_write(dir, "swept.lua", swept));
	snprintf(events, sizeof events, "%s", write_events(dir, 70000));
	ck_assert_int_eq(th_sh(out, 1 << 16,
			       "'%s' backtest -s '%s' --set burst=5 --sweep limit=60,80,95 "
			       "--label data.fraud --alerts 'alert.*' '%s' 2>/dev/null",
			       TIDE_BIN, path, events),
			 0);
	ck_assert_msg(strstr(out, "\n3 variants:\n") != NULL, "%s", out);
	ck_assert_msg(strstr(out, "tide backtest: 70000 events in ") != NULL &&
			      strstr(out, " through 3 variants, 0 rejected\n") != NULL,
		      "%s", out);
	for (int k = 0; k < 3; k++) {
		ck_assert_int_eq(th_sh(one, 1 << 16,
				       "'%s' backtest -s '%s' --set burst=5 --set limit=%s "
				       "--label data.fraud --alerts 'alert.*' '%s' 2>/dev/null",
				       TIDE_BIN, path, limit[k], events),
				 0);
		want = run_summary(one, &emitted[k]);
		ck_assert_msg(strstr(want, "  follow               alert.follow") != NULL &&
				      strstr(want, "  burst                note.quiet") != NULL,
			      "%s", want);
		ck_assert_int_eq(sscanf(strstr(want, "  (all) "),
					"  (all) precision %*s recall %*s F1 %lf", &f1[k]),
				 1);
		snprintf(v, sizeof v, "limit=%s", limit[k]);
		got = variant_summary(out, v, &n);
		ck_assert_str_eq(got, want);
		ck_assert_uint_eq(n, emitted[k]);
		table_row(out, v, &row, &rf1);
		ck_assert_uint_eq(row, emitted[k]);
		ck_assert_msg(fabs(rf1 - f1[k]) < 0.0006, "%s: %f, %f", v, rf1, f1[k]);
		if (f1[k] > best)
			best = f1[k];
		free(want);
		free(got);
	}
	/* the values took: the higher the limit, the fewer big alerts */
	ck_assert_uint_gt(emitted[0], emitted[1]);
	ck_assert_uint_gt(emitted[1], emitted[2]);
	ck_assert_int_eq(th_count(out, "  <- best F1\n"), 1);
	for (int k = 0; k < 3; k++) {
		char mark[64];
		snprintf(mark, sizeof mark, "\n  limit=%s ", limit[k]);
		if (f1[k] == best) {
			const char *r = strstr(strstr(out, " variants:\n"), mark);
			ck_assert_msg(strstr(r, "  <- best F1\n") < strchr(r + 1, '\n') + 1, "%s",
				      out);
			break;
		}
	}
	free(out);
	free(one);
}
END_TEST

/* Two sweeps: every combination, the last sweep's values changing
 * fastest, each what its --set run emits; a sweep wins over a --set of
 * the same name; -q leaves the table alone; the variants one after the
 * other (--threads 1) or three at once make the same table. */
START_TEST(sweeps_make_every_combination)
{
	static const char *const names[] = { "limit=60 burst=3", "limit=60 burst=5",
					     "limit=95 burst=3", "limit=95 burst=5" };
	const char *dir = th_tmpdir();
	char path[700], events[700], out[16384], one[16384], serial[16384];
	const char *at = NULL;
	unsigned long long row, n, prev = 0;
	double f1;

	snprintf(path, sizeof path, "%s", th_write(dir, "swept.lua", swept));
	snprintf(events, sizeof events, "%s", write_events(dir, 3000));
	ck_assert_int_eq(th_sh(out, sizeof out,
			       "'%s' backtest -q -s '%s' --set limit=10 --sweep limit=60,95 "
			       "--sweep burst=3,5 '%s' 2>&1",
			       TIDE_BIN, path, events),
			 0);
	ck_assert_msg(strncmp(out, "4 variants:\n  variant ", 22) == 0, "%s", out);
	ck_assert_msg(strstr(out, "== ") == NULL && strstr(out, "tide backtest") == NULL &&
			      strstr(out, "best") == NULL,
		      "%s", out);
	for (int k = 0; k < 4; k++) {
		char set[64];
		const char *r;
		snprintf(set, sizeof set, "\n  %s ", names[k]);
		r = strstr(out, set);
		ck_assert_msg(r != NULL && r > at, "%s: %s", names[k], out);
		at = r;
		table_row(out, names[k], &row, &f1);
		ck_assert(isnan(f1));
		snprintf(set, sizeof set, "%s", names[k]);
		set[8] = '\0'; /* "limit=60", then "burst=3" */
		ck_assert_int_eq(th_sh(one, sizeof one,
				       "'%s' backtest -s '%s' --set %s --set %s '%s' 2>/dev/null",
				       TIDE_BIN, path, set, set + 9, events),
				 0);
		free(run_summary(one, &n));
		ck_assert_uint_eq(row, n);
		ck_assert_uint_ne(row, prev);
		prev = row;
	}
	ck_assert_int_eq(th_sh(serial, sizeof serial,
			       "'%s' backtest -q -s '%s' --set limit=10 --sweep limit=60,95 "
			       "--sweep burst=3,5 --threads 1 '%s' 2>&1",
			       TIDE_BIN, path, events),
			 0);
	ck_assert_str_eq(serial, out);
	ck_assert_int_eq(th_sh(serial, sizeof serial,
			       "'%s' backtest -q -s '%s' --set limit=10 --sweep limit=60,95 "
			       "--sweep burst=3,5 --threads 3 '%s' 2>&1",
			       TIDE_BIN, path, events),
			 0);
	ck_assert_str_eq(serial, out);
}
END_TEST

/* --sweep's mistakes are usage errors, refused before anything runs. */
START_TEST(sweep_usage_errors)
{
	static const char *const bad[] = {
		"--sweep limit",
		"a sweep is NAME=V1,V2,..., not 'limit'",
		"--sweep =1,2",
		"a sweep is NAME=V1,V2,..., not '=1,2'",
		"--sweep limit=",
		"the sweep of 'limit' has no values",
		"--sweep limit=1,,2",
		"the sweep of 'limit' has an empty value: 'limit=1,,2'",
		"--sweep limit=1,2,",
		"has an empty value",
		"--sweep limit=1 --sweep burst=2 --sweep limit=3",
		"'limit' is swept twice",
		"--sweep limit=1,2 --emits",
		"--emits and --sweep do not go together",
		"--sweep a=1,2,3,4,5 --sweep b=1,2,3,4,5,6,7,8,9,10,11,12,13",
		"the sweeps make 65 combinations of values, 64 at most",
		"--sweep limit=1,2 --threads 0",
		"--threads takes a number from 1 to 64, not '0'",
		"--sweep a=1,2 --sweep b=1,2,3,4,5,6,7,8 --sweep c=1,2,3,4",
		"the sweeps make 64 combinations",
		NULL,
	};
	const char *dir = th_tmpdir();
	char path[700], events[700], out[16384];

	snprintf(path, sizeof path, "%s", th_write(dir, "swept.lua", swept));
	snprintf(events, sizeof events, "%s", write_events(dir, 100));
	for (int k = 0; bad[k] != NULL; k += 2) {
		/* exactly 64 is allowed: the last is not an error */
		int last = bad[k + 2] == NULL;
		ck_assert_int_eq(th_sh(out, sizeof out, "'%s' backtest -s '%s' %s '%s' 2>&1",
				       TIDE_BIN, path, bad[k], events),
				 last ? 0 : 2);
		if (last) {
			ck_assert_msg(strstr(out, bad[k + 1]) == NULL, "%s", out);
			ck_assert_msg(strstr(out, "\n64 variants:\n") != NULL, "%s", out);
			ck_assert_int_eq(th_count(out, "== a="), 64);
		} else {
			ck_assert_msg(strstr(out, bad[k + 1]) != NULL, "%s: %s", bad[k], out);
			ck_assert_msg(strstr(out, "variants:") == NULL, "%s: %s", bad[k], out);
		}
	}
	/* a value the script refuses: the variant is named */
	ck_assert_int_eq(th_sh(out, sizeof out,
			       "'%s' backtest -s '%s' --sweep limit=1,lots '%s' 2>&1", TIDE_BIN,
			       path, events),
			 1);
	ck_assert_msg(strstr(out, "limit=lots: ") != NULL &&
			      strstr(out, "parameter 'limit': 'lots' is not a number") != NULL,
		      "%s", out);
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' backtest --help", TIDE_BIN), 0);
	ck_assert_msg(strstr(out, "--sweep NAME=V,V...") != NULL, "%s", out);
}
END_TEST

/* --nab with --sweep: the table has each variant's NAB score, and marks
 * the best; each is what a run with --set scores. */
START_TEST(sweep_scores_nab)
{
	static const char rule[] =
		"local tide = require 'tide'\n"
		"local OVER = tide.param('over', 50)\n"
		"tide.on('sensor.reading', function(ev)\n"
		"  if ev.data.value > OVER then\n"
		"    tide.emit{ type = 'sensor.anomaly', subject = ev.subject }\n"
		"  end\n"
		"end, { name = 'over', from = 'beginning' })\n";
	static const char *const over[] = { "0.5", "50", "200" };
	const char *dir = th_tmpdir();
	char path[700], events[700], windows[700], out[16384], one[16384];
	FILE *f;

	snprintf(path, sizeof path, "%s", th_write(dir, "r.lua", rule));
	snprintf(windows, sizeof windows, "%s",
		 th_write(dir, "windows.json",
			  "{\"a/s.csv\": [[\"2026-01-01 08:20:00.000000\", "
			  "\"2026-01-01 09:59:00.000000\"]]}"));
	snprintf(events, sizeof events, "%s/e.ndjson", dir);
	f = fopen(events, "w");
	ck_assert_ptr_nonnull(f);
	/* 1000 minutes from 00:00, all 1 but minute 500 (in the window) */
	for (int i = 0; i < 1000; i++)
		fprintf(f,
			"{\"specversion\":\"1.0\",\"id\":\"r%d\",\"source\":\"/t\","
			"\"type\":\"sensor.reading\",\"subject\":\"a/s.csv\","
			"\"time\":\"2026-01-01T%02d:%02d:00Z\",\"data\":{\"value\":%d}}\n",
			i, i / 60, i % 60, i == 500 ? 100 : 1);
	fclose(f);
	ck_assert_int_eq(th_sh(out, sizeof out,
			       "'%s' backtest -q -s '%s' --nab '%s' --sweep over=0.5,50,200 '%s' "
			       "2>&1",
			       TIDE_BIN, path, windows, events),
			 0);
	ck_assert_msg(strstr(out, "  variant      emitted        NAB\n") != NULL, "%s", out);
	ck_assert_msg(strstr(out, "  over=50            1      100.0  <- best NAB score\n") != NULL,
		      "%s", out);
	ck_assert_msg(strstr(out, "  over=200           0        0.0\n") != NULL, "%s", out);
	ck_assert_int_eq(th_count(out, "<- best"), 1);
	for (int k = 0; k < 3; k++) {
		char row[64];
		double nab, want;
		const char *r, *score;
		ck_assert_int_eq(th_sh(one, sizeof one,
				       "'%s' backtest -s '%s' --nab '%s' --set over=%s '%s' 2>&1",
				       TIDE_BIN, path, windows, over[k], events),
				 0);
		score = strstr(one, "no detection): ");
		ck_assert_msg(score != NULL, "%s", one);
		ck_assert_int_eq(sscanf(score, "no detection): %lf", &want), 1);
		snprintf(row, sizeof row, "  over=%s ", over[k]);
		r = strstr(out, row);
		ck_assert_msg(r != NULL, "%s", out);
		ck_assert_int_eq(sscanf(r + strlen(row), "%*u %lf", &nab), 1);
		ck_assert_msg(fabs(nab - want) < 0.05, "%s: %f, %f", row, nab, want);
		/* every reading flagged: false detections, below no detection */
		if (k == 0)
			ck_assert_double_lt(nab, 0);
	}
	ck_assert_msg(strstr(out, "  over=0.5        1000 ") != NULL, "%s", out);
}
END_TEST

typedef struct seen {
	int items, unnamed, regress; /* items; without a variant; back to an earlier one */
	int kinds[8];                /* per kind, of the variant "limit=95 burst=3" */
	char variants[8][64];
	int nvariants;
	sbuf emits[8]; /* per variant (0 without), its emitted events' JSON */
} seen;

static void
on_seen(void *ud, const tide_backtest_item *it)
{
	seen *s = ud;
	int v = 0;

	s->items++;
	if (it->variant == NULL) {
		s->unnamed++;
	} else {
		if (s->nvariants == 0 || strcmp(s->variants[s->nvariants - 1], it->variant) != 0) {
			for (int k = 0; k < s->nvariants; k++)
				if (strcmp(s->variants[k], it->variant) == 0)
					s->regress++;
			ck_assert_int_lt(s->nvariants, 8);
			snprintf(s->variants[s->nvariants++], 64, "%s", it->variant);
		}
		v = s->nvariants - 1;
		if (strcmp(it->variant, "limit=95 burst=3") == 0 && it->kind >= 0 && it->kind < 8)
			s->kinds[it->kind]++;
	}
	if (it->kind == TIDE_BACKTEST_EMIT) {
		const char *json, *rec;
		size_t len, skip = 0;
		ck_assert_int_eq(tide_event_json(it->ev, &json, &len), TIDE_OK);
		/* an emitted event arrives when it is emitted, by the wall clock */
		rec = strstr(json, "\"recorded\":\"");
		ck_assert_ptr_nonnull(rec);
		skip = (size_t)(strchr(rec + 12, '"') + 2 - rec);
		sb_printf(&s->emits[v], "%.*s%.*s\n", (int)(rec - json), json,
			  (int)(len - (size_t)(rec - json) - skip), rec + skip);
	}
}

/* Through tide.h: tide_backtest_sweep_count(); every item of a variant
 * carries it, states and rules' states too, variant after variant; each
 * variant emits, event for event (ids, versions and times included),
 * what a run with its values in sets emits, its variants taking the
 * batches at once; no item has a variant without sweeps; bad sweeps are
 * TIDE_EINVAL. */
START_TEST(sweep_through_the_api)
{
	static const char *const two[] = { "limit=60,95", "burst=3,4", NULL };
	static const char *const none[] = { NULL };
	static const char *const wrong[] = { "limit=60,95", "limit", NULL };
	static const char *const sets[4][3] = { { "limit=60", "burst=3", NULL },
						{ "limit=60", "burst=4", NULL },
						{ "limit=95", "burst=3", NULL },
						{ "limit=95", "burst=4", NULL } };
	const char *dir = th_tmpdir();
	char path[700], events[700];
	const char *scripts[] = { path, NULL };
	char *swept_emits[4];
	tide_backtest_opts o;
	seen s;
	size_t n = 0;

	snprintf(path, sizeof path, "%s", th_write(dir, "swept.lua", swept));
	snprintf(events, sizeof events, "%s", write_events(dir, 20000));
	ck_assert_int_eq(tide_backtest_sweep_count(two, &n), TIDE_OK);
	ck_assert_uint_eq(n, 4);
	ck_assert_int_eq(tide_backtest_sweep_count(NULL, &n), TIDE_OK);
	ck_assert_uint_eq(n, 1);
	ck_assert_int_eq(tide_backtest_sweep_count(none, &n), TIDE_OK);
	ck_assert_uint_eq(n, 1);
	ck_assert_int_eq(tide_backtest_sweep_count(wrong, &n), TIDE_EINVAL);
	ck_assert_msg(strstr(tide_errmsg(), "not 'limit'") != NULL, "%s", tide_errmsg());

	memset(&o, 0, sizeof o);
	o.scripts = scripts;
	o.input = events;
	o.sweeps = two;
	o.threads = 4;
	memset(&s, 0, sizeof s);
	ck_assert_int_eq(tide_backtest(&o, on_seen, &s), TIDE_OK);
	ck_assert_int_eq(s.unnamed, 0);
	ck_assert_int_eq(s.regress, 0);
	ck_assert_int_eq(s.nvariants, 4);
	ck_assert_int_eq(s.kinds[TIDE_BACKTEST_DONE], 1);
	ck_assert_int_gt(s.kinds[TIDE_BACKTEST_EMIT], 0);
	ck_assert_int_eq(s.kinds[TIDE_BACKTEST_STATE], 5); /* the projection's 5 cards */
	ck_assert_int_eq(s.kinds[TIDE_BACKTEST_RULE], 5);  /* the rule's */
	for (int k = 0; k < 4; k++) {
		ck_assert_int_eq(th_count(s.variants[k], "limit="), 1);
		ck_assert_msg(strncmp(s.variants[k], sets[k][0], 8) == 0 &&
				      strcmp(s.variants[k] + 9, sets[k][1]) == 0,
			      "%s", s.variants[k]);
		swept_emits[k] = sb_take(&s.emits[k]);
	}

	o.sweeps = NULL;
	for (int k = 0; k < 4; k++) {
		char *alone;
		memset(&s, 0, sizeof s);
		o.sets = sets[k];
		ck_assert_int_eq(tide_backtest(&o, on_seen, &s), TIDE_OK);
		ck_assert_int_gt(s.items, 0);
		ck_assert_int_eq(s.unnamed, s.items);
		alone = sb_take(&s.emits[0]);
		ck_assert_int_gt(th_count(alone, "\"v\":"), 100);
		ck_assert_msg(strcmp(swept_emits[k], alone) == 0, "%s and %s differ", sets[k][0],
			      sets[k][1]);
		free(alone);
		free(swept_emits[k]);
	}

	o.sweeps = wrong;
	ck_assert_int_eq(tide_backtest(&o, on_seen, &s), TIDE_EINVAL);
}
END_TEST

Suite *
backtest_suite(void)
{
	Suite *s = suite_create("backtest");
	TCase *tc = tcase_create("backtest");

	tcase_add_checked_fixture(tc, NULL, th_cleanup);
	tcase_add_test(tc, backtest_emits_what_live_emits);
	tcase_add_test(tc, bounds_and_summary);
	tcase_add_test(tc, progress_on_a_terminal);
	tcase_add_test(tc, scores_against_labels);
	tcase_add_test(tc, usage_and_errors);
	tcase_add_test(tc, tide_test_compares_with_expectations);
	tcase_add_test(tc, tide_test_runs_lua_test_files);
	tcase_add_test(tc, params_from_the_command_line);
	tcase_add_test(tc, pack_examples_run);
	tcase_add_test(tc, nab_scores_through_backtest);
	tcase_add_test(tc, sweep_is_separate_runs_in_one_pass);
	tcase_add_test(tc, sweeps_make_every_combination);
	tcase_add_test(tc, sweep_usage_errors);
	tcase_add_test(tc, sweep_scores_nab);
	tcase_add_test(tc, sweep_through_the_api);
#ifdef __SANITIZE_ADDRESS__
	tcase_set_timeout(tc, 360); /* sweeps over thousands of events run slowly there */
#else
	tcase_set_timeout(tc, 120);
#endif
	suite_add_tcase(s, tc);
	return s;
}
