/*
 * test_replay.c - time travel: `tide replay` over a known history agrees
 * with a plain model at every point asked for (by seq and by time), with
 * the live projection at the end, reports what consumers would emit, and
 * writes nothing.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "helpers.h"

#define ACCOUNTS 7
#define EVENTS 240

/* The history: event i (seq i + 1) moves amount(i) into or out of
 * account(i). */
static int
account(int i)
{
	return (i * 5 + i / 3) % ACCOUNTS;
}

static int
amount(int i)
{
	return 10 + (i * 37) % 90;
}

static int
is_withdrawal(int i)
{
	return i % 4 == 3;
}

static const char script[] =
	"local tide = require 'tide'\n"
	"tide.projection('balances', {\n"
	"  init = function(key) return { balance = 0, moves = 0 } end,\n"
	"  on = {\n"
	"    ['acct.deposited'] = function(s, ev) s.balance = s.balance + ev.data.amount;"
	" s.moves = s.moves + 1 end,\n"
	"    ['acct.withdrew'] = function(s, ev) s.balance = s.balance - ev.data.amount;"
	" s.moves = s.moves + 1 end,\n"
	"  },\n"
	"})\n"
	"tide.on('acct.withdrew', function(ev)\n"
	"  if ev.data.amount > 80 then\n"
	"    tide.emit{ type = 'acct.large_withdrawal', subject = ev.subject,"
	" data = { amount = ev.data.amount } }\n"
	"  end\n"
	"end, { name = 'watch', from = 'beginning' })\n";

/* The expected line of `tide replay --projection balances` for account a
 * after the first n events. */
static void
expected(int n, int a, char *out, size_t len)
{
	long balance = 0, moves = 0;

	for (int i = 0; i < n; i++) {
		if (account(i) != a)
			continue;
		balance += is_withdrawal(i) ? -amount(i) : amount(i);
		moves++;
	}
	snprintf(out, len, "{\"key\":\"a%d\",\"state\":{\"balance\":%ld,\"moves\":%ld}}", a,
		 balance, moves);
}

static int
large_withdrawals(int n)
{
	int c = 0;

	for (int i = 0; i < n; i++)
		c += is_withdrawal(i) && amount(i) > 80;
	return c;
}

static void
write_events(const char *path, int from, int to)
{
	FILE *f = fopen(path, "w");

	ck_assert_ptr_nonnull(f);
	for (int i = from; i < to; i++)
		fprintf(f,
			"{\"specversion\":\"1.0\",\"id\":\"e%d\",\"source\":\"/bank\","
			"\"type\":\"acct.%s\",\"subject\":\"a%d\",\"data\":{\"amount\":%d}}\n",
			i, is_withdrawal(i) ? "withdrew" : "deposited", account(i), amount(i));
	fclose(f);
}

static const char *
path_in(const char *dir, const char *name)
{
	static char path[4][600];
	static int slot;
	char *p = path[slot++ & 3];

	snprintf(p, 600, "%s/%s", dir, name);
	return p;
}

/* A log holding the history in two batches, written without scripts; the
 * time between them goes to @p split (RFC 3339). */
static const char *
history(char *split, size_t splitlen)
{
	const char *dir = th_tmpdir();
	char data[600], out[256];
	struct timespec ts;
	struct tm tm;
	th_daemon d;

	snprintf(data, sizeof data, "%s/data", dir);
	th_write(dir, "s.lua", script);
	write_events(path_in(dir, "first.ndjson"), 0, EVENTS / 2);
	write_events(path_in(dir, "second.ndjson"), EVENTS / 2, EVENTS);
	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s'", data), 0);
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' publish -q --data '%s' < '%s'", TIDE_BIN,
			       data, path_in(dir, "first.ndjson")),
			 0);
	/* everything acknowledged so far was recorded before now */
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(split, splitlen, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(split + strlen(split), splitlen - strlen(split), ".%06ldZ", ts.tv_nsec / 1000);
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' publish -q --data '%s' < '%s'", TIDE_BIN,
			       data, path_in(dir, "second.ndjson")),
			 0);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
	return dir;
}

/* Every account touched by the first @p n events has its line in @p out,
 * and no other key is there. */
static void
check_states(const char *out, int n)
{
	char want[256], key[32];
	int touched = 0;

	for (int a = 0; a < ACCOUNTS; a++) {
		expected(n, a, want, sizeof want);
		snprintf(key, sizeof key, "\"key\":\"a%d\"", a);
		if (strstr(want, "\"moves\":0}") != NULL) {
			ck_assert_msg(strstr(out, key) == NULL,
				      "after %d events, a%d should be absent", n, a);
			continue;
		}
		touched++;
		ck_assert_msg(strstr(out, want) != NULL, "after %d events, missing %s", n, want);
	}
	ck_assert_int_eq(th_count(out, "\n"), touched);
}

START_TEST(replay_agrees_with_the_model_at_every_point)
{
	char split[64], out[65536];
	const char *dir = history(split, sizeof split);
	static const int points[] = { 1, 2, 17, 100, EVENTS / 2, EVENTS / 2 + 1, EVENTS - 1 };

	for (size_t k = 0; k < sizeof points / sizeof *points; k++) {
		ck_assert_int_eq(th_sh(out, sizeof out,
				       "'%s' replay -q --data '%s/data' --script '%s/s.lua' "
				       "--projection balances --until %d",
				       TIDE_BIN, dir, dir, points[k]),
				 0);
		check_states(out, points[k]);
	}
	/* the whole log, and past its end */
	ck_assert_int_eq(th_sh(out, sizeof out,
			       "'%s' replay -q --data '%s/data' --script '%s/s.lua' "
			       "--projection balances --until 99999",
			       TIDE_BIN, dir, dir),
			 0);
	check_states(out, EVENTS);
	/* by time: the split falls between the two batches */
	ck_assert_int_eq(th_sh(out, sizeof out,
			       "'%s' replay -q --data '%s/data' --script '%s/s.lua' "
			       "--projection balances --until %s",
			       TIDE_BIN, dir, dir, split),
			 0);
	check_states(out, EVENTS / 2);
	ck_assert_int_eq(th_sh(out, sizeof out,
			       "'%s' replay -q --data '%s/data' --script '%s/s.lua' "
			       "--projection balances --until 2000-01-01T00:00:00Z",
			       TIDE_BIN, dir, dir),
			 0);
	ck_assert_str_eq(out, ""); /* before the first event: nothing */
}
END_TEST

START_TEST(replay_matches_the_live_projection_and_writes_nothing)
{
	char split[64], live[65536], replayed[65536], before[4096], after[4096], data[600];
	const char *dir = history(split, sizeof split);
	th_daemon d;

	snprintf(data, sizeof data, "%s/data", dir);

	/* the live projection, built by an engine from the same script */
	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s' --script '%s/s.lua'", data, dir),
			 0);
	for (int64_t deadline = th_ms() + 10000; th_ms() < deadline; th_pause()) {
		th_sh(live, sizeof live, "'%s' projection list --data '%s'", TIDE_BIN, data);
		if (strstr(live, "\"status\":\"live\"") && strstr(live, "\"lag\":0"))
			break;
	}
	ck_assert_int_eq(th_daemon_stop(&d), 0);
	ck_assert_int_eq(
		th_sh(live, sizeof live, "'%s' query balances --data '%s'", TIDE_BIN, data), 0);
	check_states(live, EVENTS);
	ck_assert_int_eq(
		th_sh(before, sizeof before, "'%s' stat --json --data '%s'", TIDE_BIN, data), 0);
	ck_assert_int_eq(
		th_sh(replayed, sizeof replayed,
		      "'%s' replay -q --data '%s' --script '%s/s.lua' --projection balances",
		      TIDE_BIN, data, dir),
		0);
	/* the same lines, in the same (key) order */
	ck_assert_str_eq(replayed, live);
	ck_assert_int_eq(th_sh(after, sizeof after, "'%s' stat --json --data '%s'", TIDE_BIN, data),
			 0);
	ck_assert_str_eq(after, before);
}
END_TEST

START_TEST(replay_reports_would_be_emits)
{
	char split[64], out[65536];
	const char *dir = history(split, sizeof split);
	int n = EVENTS / 2 + 10;

	ck_assert_int_eq(th_sh(out, sizeof out,
			       "'%s' replay -q --data '%s/data' --script '%s/s.lua' --until %d",
			       TIDE_BIN, dir, dir, n),
			 0);
	ck_assert_int_eq(th_count(out, "{\"emit\":"), large_withdrawals(n));
	ck_assert_int_eq(th_count(out, "\"consumer\":\"watch\""), large_withdrawals(n));
	ck_assert_int_eq(th_count(out, "\"causationid\":\"e"), large_withdrawals(n));
	/* with several outputs, states carry their projection */
	ck_assert_int_eq(th_count(out, "{\"projection\":\"balances\",\"key\":"), ACCOUNTS);
	/* nothing was emitted into the log */
	ck_assert_int_eq(th_log_count(path_in(dir, "data"), "--type acct.large_withdrawal"), 0);
	ck_assert_int_eq(th_sh(out, sizeof out,
			       "'%s' replay -q --no-emits --data '%s/data' --script '%s/s.lua'",
			       TIDE_BIN, dir, dir),
			 0);
	ck_assert_int_eq(th_count(out, "{\"emit\":"), 0);
}
END_TEST

START_TEST(replay_errors)
{
	char split[64], out[8192];
	const char *dir = history(split, sizeof split);

	th_write(dir, "bad.lua",
		 "local tide = require 'tide'\n"
		 "tide.on('acct.withdrew', function(ev) error('no') end, { name = 'x' })\n");
	ck_assert_int_eq(
		th_sh(out, sizeof out,
		      "'%s' replay -q --data '%s/data' --script '%s/bad.lua' --until 10 2>&1",
		      TIDE_BIN, dir, dir),
		1);
	ck_assert_ptr_nonnull(strstr(out, "x failed on event 4: "));
	ck_assert_ptr_nonnull(strstr(out, "bad.lua:2: no"));
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' replay --data '%s/data' 2>&1", TIDE_BIN, dir),
			 2);
	ck_assert_ptr_nonnull(strstr(out, "--script"));
	ck_assert_int_eq(th_sh(out, sizeof out,
			       "'%s' replay --data '%s/data' --script '%s/s.lua' --until yesterday "
			       "2>&1",
			       TIDE_BIN, dir, dir),
			 2);
	ck_assert_int_eq(th_sh(out, sizeof out,
			       "'%s' replay -q --data '%s/data' --script '%s/s.lua' --projection "
			       "nosuch 2>&1",
			       TIDE_BIN, dir, dir),
			 1);
	ck_assert_ptr_nonnull(strstr(out, "no projection named 'nosuch'"));
	ck_assert_int_eq(th_sh(out, sizeof out,
			       "'%s' replay -q --data '%s/none' --script '%s/s.lua' 2>&1", TIDE_BIN,
			       dir, dir),
			 1);
	ck_assert_ptr_nonnull(strstr(out, "no log in"));
}
END_TEST

Suite *
replay_suite(void)
{
	Suite *s = suite_create("replay");
	TCase *tc = tcase_create("replay");

	tcase_add_checked_fixture(tc, NULL, th_cleanup);
	tcase_add_test(tc, replay_agrees_with_the_model_at_every_point);
	tcase_add_test(tc, replay_matches_the_live_projection_and_writes_nothing);
	tcase_add_test(tc, replay_reports_would_be_emits);
	tcase_add_test(tc, replay_errors);
	tcase_set_timeout(tc, 120);
	suite_add_tcase(s, tc);
	return s;
}
