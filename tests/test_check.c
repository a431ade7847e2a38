/*
 * test_check.c - `tide check` and tide_check(): scripts loaded as
 * `tide run` would, without a log; what they define listed, every error
 * reported with file:line, every script loaded whatever failed before;
 * and every script shipped in the repo passes.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "tide.h"

static const char good_script[] =
	"local tide = require 'tide'\n"
	"tide.on('card.transaction', function(ev, st) end, {\n"
	"  name = 'velocity', key = 'data.card', ttl = '30d', lateness = '5m',\n"
	"  windows = { h1 = { sliding = '1h', value = 'data.amount',\n"
	"                     aggregates = { 'count', 'sum', 'p95' } },\n"
	"              days = { tumbling = '1d' } },\n"
	"  on_close = function(key, name, agg, st) end,\n"
	"  timers = { quiet = function() end, again = function() end } })\n"
	"tide.on('order.*', function(ev) end, { name = 'orders' })\n"
	"tide.projection('totals', { version = 3, key = 'data.customer',\n"
	"  init = function() return { n = 0 } end,\n"
	"  on = { ['order.placed'] = function(s) s.n = s.n + 1 end,\n"
	"         ['order.*'] = function(s) end } })\n";

/* What the listing says about a good script: each consumer, rule option,
 * window, timer and projection. */
START_TEST(lists_what_a_script_defines)
{
	const char *dir = th_tmpdir(), *path = th_write(dir, "good.lua", good_script);
	char out[8192];

	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' check '%s' 2>&1", TIDE_BIN, path), 0);
	ck_assert_msg(strstr(out, "  consumer velocity (") != NULL, "%s", out);
	ck_assert_msg(strstr(out,
			     "good.lua:2): on card.transaction; rule: key data.card, ttl "
			     "30d, event clock, lateness 5m, late events dropped, on_close\n") !=
			      NULL,
		      "%s", out);
	ck_assert_msg(strstr(out, "    window h1: sliding 1h: count, sum, p95; value "
				  "data.amount\n") != NULL,
		      "%s", out);
	ck_assert_msg(strstr(out, "    window days: tumbling 1d: count\n") != NULL, "%s", out);
	ck_assert_msg(strstr(out, "    timer again\n    timer quiet\n") != NULL, "%s", out);
	ck_assert_msg(strstr(out, "good.lua:9): on order.*\n") != NULL, "%s", out);
	ck_assert_msg(strstr(out, "  projection totals (") != NULL &&
			      strstr(out, "version 3, key data.customer; on order.placed, "
					  "order.*\n") != NULL,
		      "%s", out);
	ck_assert_msg(strstr(out, "tide check: 1 script, all loaded\n") != NULL, "%s", out);
	/* the same as JSON lines */
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' check --json '%s'", TIDE_BIN, path), 0);
	ck_assert_int_eq(th_count(out, "\n"), 8);
	ck_assert_msg(strstr(out, "{\"kind\":\"timer\",\"script\":") != NULL &&
			      strstr(out, "\"name\":\"quiet\",\"owner\":\"velocity\"}\n") != NULL,
		      "%s", out);
	ck_assert_msg(strstr(out, "{\"kind\":\"projection\",") != NULL, "%s", out);
}
END_TEST

/* Every script is loaded; each error names its file and line; the exit
 * status says some failed. */
START_TEST(reports_every_error)
{
	const char *dir = th_tmpdir();
	char out[8192];
	/* (th_write's path is overwritten by the next call: names only) */
	th_write(dir, "syntax.lua",
		 "local tide = require 'tide'\n"
		 "tide.on('x', function(ev)\n"
		 "  if then end\n"
		 "end)\n");
	th_write(dir, "option.lua",
		 "local tide = require 'tide'\n"
		 "tide.on('a', function(ev, st) end,\n"
		 "  { name = 'r', key = 'subject', ttl = 'soon' })\n");
	th_write(dir, "runtime.lua", "local x\nx.y = 1\n");
	th_write(dir, "dup.lua",
		 "local tide = require 'tide'\n"
		 "tide.on('b', function(ev) end, { name = 'one' })\n");
	th_write(dir, "dup2.lua",
		 "local tide = require 'tide'\n"
		 "tide.on('c', function(ev) end, { name = 'one' })\n");
	th_write(dir, "good.lua", good_script);

	ck_assert_int_eq(th_sh(out, sizeof out,
			       "cd '%s' && '%s' check syntax.lua option.lua runtime.lua dup.lua "
			       "dup2.lua good.lua none.lua 2>&1",
			       dir, TIDE_BIN),
			 1);
	ck_assert_msg(strstr(out, "syntax.lua:3: unexpected symbol near 'then'\n") != NULL, "%s",
		      out);
	ck_assert_msg(strstr(out, "option.lua:2: option 'ttl': 'soon' is not a duration") != NULL,
		      "%s", out);
	ck_assert_msg(strstr(out, "runtime.lua:2: attempt to index a nil value") != NULL, "%s",
		      out);
	ck_assert_msg(strstr(out, "dup2.lua:2: a consumer named 'one' already exists (") != NULL,
		      "%s", out);
	ck_assert_msg(strstr(out, "none.lua: No such file or directory") != NULL, "%s", out);
	/* the good script after them is loaded and listed all the same */
	ck_assert_msg(strstr(out, "  projection totals (") != NULL, "%s", out);
	ck_assert_msg(strstr(out, "tide check: 7 scripts, 5 with errors\n") != NULL, "%s", out);
	/* usage */
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' check 2>&1", TIDE_BIN), 2);
	ck_assert_msg(strstr(out, "name at least one script") != NULL, "%s", out);
}
END_TEST

static void
count_items(void *ud, const tide_check_item *it)
{
	int *n = ud;

	n[it->kind]++;
}

/* The C call: the same report, item by item. */
START_TEST(tide_check_in_c)
{
	const char *dir = th_tmpdir();
	char good[600], bad[600];
	const char *scripts[] = { good, bad, NULL };

	snprintf(good, sizeof good, "%s", th_write(dir, "good.lua", good_script));
	snprintf(bad, sizeof bad, "%s", th_write(dir, "bad.lua", "this is not lua\n"));
	int n[6] = { 0 };

	ck_assert_int_eq(tide_check(scripts, count_items, n), TIDE_ESCRIPT);
	ck_assert_int_eq(n[TIDE_CHECK_SCRIPT], 2);
	ck_assert_int_eq(n[TIDE_CHECK_ERROR], 1);
	ck_assert_int_eq(n[TIDE_CHECK_CONSUMER], 2);
	ck_assert_int_eq(n[TIDE_CHECK_WINDOW], 2);
	ck_assert_int_eq(n[TIDE_CHECK_TIMER], 2);
	ck_assert_int_eq(n[TIDE_CHECK_PROJECTION], 1);
	ck_assert_int_eq(tide_check(NULL, count_items, n), TIDE_EINVAL);
	scripts[1] = NULL;
	ck_assert_int_eq(tide_check(scripts, count_items, n), TIDE_OK);
}
END_TEST

/* Every script shipped in the repo loads (test files, NAME.test.lua, are
 * tide test's, not scripts). */
START_TEST(shipped_scripts_pass)
{
	char out[8192];

	ck_assert_int_eq(
		th_sh(out, sizeof out,
		      "cd '%s' && for f in $(find examples rules -name '*.lua' ! -name "
		      "tide.lua ! -name '*.test.lua' | sort); do '%s' check -q \"$f\" 2>&1 "
		      "|| exit 1; done",
		      TIDE_SRCDIR, TIDE_BIN),
		0);
	ck_assert_int_ge(th_count(out, "all loaded"), 4);
}
END_TEST

Suite *
check_suite(void)
{
	Suite *s = suite_create("check");
	TCase *tc = tcase_create("check");

	tcase_add_checked_fixture(tc, NULL, th_cleanup);
	tcase_add_test(tc, lists_what_a_script_defines);
	tcase_add_test(tc, reports_every_error);
	tcase_add_test(tc, tide_check_in_c);
	tcase_add_test(tc, shipped_scripts_pass);
	tcase_set_timeout(tc, 60);
	suite_add_tcase(s, tc);
	return s;
}
