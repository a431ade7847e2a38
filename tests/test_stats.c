/*
 * test_stats.c - tide.stats (l_stats.c) in a bare Lua state: values
 * against known ones and against plain Lua computing the same thing,
 * updates of the state tables in place, and the errors scripts see.
 */
#include <check.h>
#include <lauxlib.h>
#include <lualib.h>
#include <string.h>

#include "helpers.h"
#include "l_stats.h"

/* A state with the standard libraries, tide.stats as the global `stats`,
 * and `close(a, b [, tol])` for comparing numbers. */
static lua_State *
state(void)
{
	lua_State *L = luaL_newstate();

	ck_assert(L != NULL);
	luaL_openlibs(L);
	ck_assert_int_eq(tidei_lua_open_stats(L), 1);
	ck_assert(lua_istable(L, -1));
	lua_setglobal(L, "stats");
	ck_assert_int_eq(
		luaL_dostring(L, "function close(a, b, tol)\n"
				 "  tol = tol or 1e-12\n"
				 "  return math.abs(a - b) <= tol * math.max(1, math.abs(b))\n"
				 "end"),
		LUA_OK);
	return L;
}

static void
run(lua_State *L, const char *code)
{
	int rc = luaL_dostring(L, code);

	ck_assert_msg(rc == LUA_OK, "%s\n-> %s", code, lua_tostring(L, -1));
	lua_settop(L, 0);
}

/* @p code must raise an error containing @p msg. */
static void
fails(lua_State *L, const char *code, const char *msg)
{
	int rc = luaL_dostring(L, code);
	const char *got = lua_tostring(L, -1);

	ck_assert_msg(rc != LUA_OK, "%s: no error", code);
	ck_assert_msg(got != NULL && strstr(got, msg) != NULL, "%s: '%s' lacks '%s'", code, got,
		      msg);
	lua_settop(L, 0);
}

START_TEST(functions_of_numbers)
{
	lua_State *L = state();

	run(L, "assert(stats.erf(0) == 0)\n"
	       "assert(close(stats.erf(1), 0.8427007929497149))\n"
	       "assert(close(stats.erf(-1), -0.8427007929497149))\n"
	       "assert(close(stats.erfc(1), 0.15729920705028513))\n"
	       "assert(close(stats.erfc(5), 1.5374597944280349e-12, 1e-9))\n"
	       "assert(stats.normal_cdf(0) == 0.5)\n"
	       "assert(close(stats.normal_cdf(1.96), 0.9750021048517795))\n"
	       "assert(close(stats.normal_cdf(110, 100, 10), 0.8413447460685429))\n"
	       "assert(close(stats.normal_cdf(-1), 1 - 0.8413447460685429))\n"
	       /* the lower tail keeps its precision */
	       "assert(close(stats.normal_cdf(-30), 4.906713927148187e-198, 1e-9))\n"
	       "assert(stats.normal_cdf(100, 100, nil) == 0.5)\n"
	       "assert(stats.zscore(110, 100, 5) == 2)\n"
	       "assert(stats.zscore(90, 100, 5) == -2)\n"
	       "assert(stats.zscore(1, 1, 0) == nil)\n"
	       "assert(stats.zscore(1, 1, nil) == nil)\n"
	       "assert(stats.zscore(1, 1) == nil)\n"
	       "assert(stats.zscore('3', 1, '2') == 1)\n");
	lua_close(L);
}
END_TEST

START_TEST(running_figures)
{
	lua_State *L = state();

	run(L, "assert(stats.ewma(nil, 5, 0.5) == 5)\n"
	       "assert(stats.ewma(4, 6, 0.5) == 5)\n"
	       "assert(stats.ewma(10, 20, 1) == 20)\n"
	       "local s = {}\n"
	       "local m, sd = stats.ewmvar(s, 10, 0.1)\n"
	       "assert(m == 10 and sd == 0 and s.mean == 10 and s.var == 0)\n"
	       "m, sd = stats.ewmvar(s, 20, 0.1)\n"
	       "assert(close(m, 11) and close(sd, 3) and close(s.var, 9))\n");
	/* Welford against a two-pass computation in Lua */
	run(L, "local t, xs = {}, {2, 4, 4, 4, 5, 5, 7, 9}\n"
	       "local n, mean, sd\n"
	       "for _, x in ipairs(xs) do n, mean, sd = stats.welford(t, x) end\n"
	       "assert(n == 8 and math.type(t.n) == 'integer')\n"
	       "assert(close(mean, 5) and close(t.mean, 5))\n"
	       "assert(close(sd, math.sqrt(32 / 7)))\n"
	       "assert(close(stats.welford_var(t), 32 / 7))\n"
	       "assert(close(stats.welford_sd(t), math.sqrt(32 / 7)))\n"
	       "assert(stats.welford_var({}) == 0 and stats.welford_sd({n = 1, mean = 3, m2 = 0}) "
	       "== 0)\n"
	       "local one = {}\n"
	       "n, mean, sd = stats.welford(one, 42)\n"
	       "assert(n == 1 and mean == 42 and sd == 0)\n"
	       /* random data far from zero */
	       "math.randomseed(7)\n"
	       "local u, v = {}, {}\n"
	       "for i = 1, 5000 do v[i] = 1e6 + math.random() end\n"
	       "for i = 1, #v do stats.welford(u, v[i]) end\n"
	       "local s = 0 for i = 1, #v do s = s + v[i] end\n"
	       "local mu = s / #v\n"
	       "local q = 0 for i = 1, #v do q = q + (v[i] - mu)^2 end\n"
	       "assert(close(u.mean, mu, 1e-12))\n"
	       "assert(close(stats.welford_var(u), q / (#v - 1), 1e-8))\n"
	       /* the table survives as plain data: a copy goes on */
	       "local c = {n = u.n, mean = u.mean, m2 = u.m2}\n"
	       "stats.welford(c, 5) stats.welford(u, 5)\n"
	       "assert(c.n == u.n and c.mean == u.mean and c.m2 == u.m2)\n");
	lua_close(L);
}
END_TEST

START_TEST(medians)
{
	lua_State *L = state();

	run(L, "assert(stats.median({3, 1, 2}) == 2)\n"
	       "local l = {4, 1, 3, 2}\n"
	       "assert(stats.median(l) == 2.5)\n"
	       "assert(l[1] == 4 and l[2] == 1 and l[3] == 3 and l[4] == 2)\n"
	       "assert(stats.median({}) == nil and stats.mad({}) == nil)\n"
	       "assert(stats.median({7}) == 7 and stats.mad({7}) == 0)\n"
	       "assert(stats.mad({1, 1, 2, 2, 4, 6, 9}) == 1)\n"
	       "assert(stats.median({-1, -5, 3, math.huge}) == 1)\n"
	       /* against sorting in Lua */
	       "math.randomseed(11)\n"
	       "for n = 1, 60 do\n"
	       "  local v, c = {}, {}\n"
	       "  for i = 1, n do v[i] = math.random(1, 20) + math.random() c[i] = v[i] end\n"
	       "  table.sort(c)\n"
	       "  local m = n % 2 == 1 and c[(n + 1) // 2] or (c[n // 2] + c[n // 2 + 1]) / 2\n"
	       "  assert(stats.median(v) == m)\n"
	       "  local d = {}\n"
	       "  for i = 1, n do d[i] = math.abs(v[i] - m) end\n"
	       "  table.sort(d)\n"
	       "  local md = n % 2 == 1 and d[(n + 1) // 2] or (d[n // 2] + d[n // 2 + 1]) / 2\n"
	       "  assert(stats.mad(v) == md)\n"
	       "end\n"
	       "local big = {}\n"
	       "for i = 1, 100001 do big[i] = (i * 7919) % 100001 end\n"
	       "assert(stats.median(big) == 50000)\n");
	lua_close(L);
}
END_TEST

START_TEST(errors)
{
	lua_State *L = state();

	fails(L, "stats.zscore(1, 1, 'x')", "tide.stats.zscore: sd must be a number (got string)");
	fails(L, "stats.zscore(1, 1, -1)", "tide.stats.zscore: sd must not be negative");
	fails(L, "stats.zscore(nil, 1, 1)", "tide.stats.zscore: x must be a number (got nil)");
	fails(L, "stats.zscore(1, {}, 1)", "tide.stats.zscore: mean must be a number (got table)");
	fails(L, "stats.erf()", "tide.stats.erf: x must be a number (got no value)");
	fails(L, "stats.normal_cdf(1, 0, 0)", "tide.stats.normal_cdf: sd must be positive");
	fails(L, "stats.ewma(1, 2, 0)", "tide.stats.ewma: alpha must be in (0, 1]");
	fails(L, "stats.ewma(1, 2, 1.5)", "tide.stats.ewma: alpha must be in (0, 1]");
	fails(L, "stats.ewma('a', 2, 0.5)", "tide.stats.ewma: prev must be a number");
	fails(L, "stats.ewmvar(nil, 2, 0.5)", "tide.stats.ewmvar: state must be a table (got nil)");
	fails(L, "stats.ewmvar({mean = 1, var = 'x'}, 2, 0.5)",
	      "tide.stats.ewmvar: field 'var' must be a number (got string)");
	fails(L, "stats.welford({}, nil)", "tide.stats.welford: x must be a number (got nil)");
	fails(L, "stats.welford({n = 'a'}, 1)", "tide.stats.welford: field 'n' must be a number");
	fails(L, "stats.welford({n = -1}, 1)", "tide.stats.welford: field 'n' must be a count");
	fails(L, "stats.welford({n = 1.5}, 1)", "tide.stats.welford: field 'n' must be a count");
	fails(L, "stats.welford_sd(5)", "tide.stats.welford_sd: t must be a table (got number)");
	fails(L, "stats.welford_var({m2 = true})",
	      "tide.stats.welford_var: field 'm2' must be a number");
	fails(L, "stats.median(nil)", "tide.stats.median: list must be a table (got nil)");
	fails(L, "stats.median({1, 'x'})",
	      "tide.stats.median: list[2] must be a number (got string)");
	fails(L, "stats.mad({1, 0/0})", "tide.stats.mad: list[2] must be a number (got nan)");
	/* nothing was changed by a failing update */
	run(L, "local t = {n = 2, mean = 1, m2 = 0}\n"
	       "assert(not pcall(stats.welford, t, 'x'))\n"
	       "assert(t.n == 2 and t.mean == 1 and t.m2 == 0)\n");
	lua_close(L);
}
END_TEST

Suite *
stats_suite(void)
{
	Suite *s = suite_create("stats");
	TCase *tc = tcase_create("stats");

	tcase_add_test(tc, functions_of_numbers);
	tcase_add_test(tc, running_figures);
	tcase_add_test(tc, medians);
	tcase_add_test(tc, errors);
	suite_add_tcase(s, tc);
	return s;
}
