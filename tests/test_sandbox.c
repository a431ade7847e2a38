/*
 * test_sandbox.c - hostile scripts: every way user code could hold the
 * engine, hide its failure or take memory outside the ceiling, and the
 * pattern matcher that replaces Lua's.
 *
 * The unit tests run code in a state of script.c directly (run_lua), and
 * time it: each case that used to hang (a catastrophic pattern, a library
 * function looping in C, a finalizer, a config file that loops) must end
 * within a few seconds with an error that says which limit it met, once
 * with the instruction budget and once with only the time limit.  Errors
 * that pcall, xpcall and coroutines used to swallow must fail the call.
 *
 * The differential test runs fixed tricky cases and a few thousand seeded
 * random ones through string.find, match, gmatch and gsub of Lua's own
 * library (a plain lua_State) and of Tide's, and compares results and
 * errors; a failure prints its seed and case.  TIDE_SANDBOX_CASES sets
 * the number of random cases.
 *
 * The integration tests run `tide run` with a consumer, a projection
 * built on threads, and a script that tries a finalizer across a SIGHUP
 * reload: the engine must go on, park or stop what failed, and stop
 * promptly on SIGTERM.  Every wait has a deadline.
 */
#define _GNU_SOURCE
#include <check.h>
#include <lauxlib.h>
#include <lualib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"
#include "script.h"
#include "tide.h"

#define HAS(text, needle) \
	ck_assert_msg(strstr(text, needle) != NULL, "'%s' not in:\n%s", needle, text)

/* What a case may take at most, ms: the limits stop it far sooner. */
#define BOUND_MS 10000

/* ------------------------------------------------------------------------
 * Running code in a script state
 * ------------------------------------------------------------------------ */

typedef struct limits {
	uint64_t budget;
	uint64_t time_ns;
	size_t memory;
	const char *const *allow;
} limits;

static const limits defaults = { 10000000, 5000000000ull, (size_t)256 << 20, NULL };
/* no time limit: the budget alone decides, however slow the machine */
static const limits budget_only = { 10000000, 0, (size_t)256 << 20, NULL };
/* no instruction budget: only the clock can stop it */
static const limits clock_only = { 0, 1000000000ull, (size_t)256 << 20, NULL };

typedef struct outcome {
	int rc, failure;
	int64_t ms, close_ms; /* the call, and destroying the state */
	char err[TIDEI_ERRLEN];
	char printed[8192];
	size_t used;
} outcome;

/* tide.emit's host: takes the event and does nothing with it. */
static int
ignore_emit(void *ud, tidei_evb *b, char *err)
{
	(void)ud;
	(void)b;
	(void)err;
	return TIDE_OK;
}

static void
collect_print(void *ud, int level, const char *msg)
{
	outcome *o = ud;
	size_t n = strlen(o->printed);

	(void)level;
	snprintf(o->printed + n, sizeof o->printed - n, "%s\n", msg);
}

/* Run the chunk (light userdata, a string) as "s".  [-1, +0, e] */
static int
l_chunk(lua_State *L)
{
	const char *code = lua_touserdata(L, 1);

	if (luaL_loadbuffer(L, code, strlen(code), "=s") != LUA_OK)
		return lua_error(L);
	lua_call(L, 0, 0);
	return 0;
}

static outcome
run_lua(const limits *lim, const char *code)
{
	tidei_script_opts o;
	tidei_host h;
	tidei_script *s;
	outcome out;
	int64_t t0;

	memset(&out, 0, sizeof out);
	memset(&o, 0, sizeof o);
	memset(&h, 0, sizeof h);
	o.instruction_budget = lim->budget;
	o.time_limit_ns = lim->time_ns;
	o.memory_limit = lim->memory;
	o.allow = lim->allow;
	h.ud = &out;
	h.log = collect_print;
	h.emit = ignore_emit;
	ck_assert_int_eq(tidei_script_new(&s, &o, &h, out.err), TIDE_OK);
	t0 = th_ms();
	out.rc = tidei_script_protect(s, l_chunk, (void *)code, out.err, NULL);
	out.ms = th_ms() - t0;
	out.failure = tidei_script_failure(s);
	out.used = tidei_lstate_memory(tidei_script_lstate(s));
	t0 = th_ms();
	tidei_script_destroy(s);
	out.close_ms = th_ms() - t0;
	return out;
}

static const char *const fail_names[] = { "none", "error", "budget", "time", "memory" };

/* The code must fail with @p failure within BOUND_MS, its message naming
 * @p needle; the state must close at once too. */
static outcome
expect_failure(const limits *lim, const char *code, int failure, const char *needle)
{
	outcome o = run_lua(lim, code);

	ck_assert_msg(o.rc == TIDE_ESCRIPT && o.failure == failure,
		      "%s\n -> rc %d, failure %s (want %s): %s\nprinted: %s", code, o.rc,
		      fail_names[o.failure], fail_names[failure], o.err, o.printed);
	ck_assert_msg(o.ms < BOUND_MS, "%s\n -> took %lld ms", code, (long long)o.ms);
	ck_assert_msg(o.close_ms < BOUND_MS, "%s\n -> closing took %lld ms", code,
		      (long long)o.close_ms);
	ck_assert_msg(strstr(o.err, needle) != NULL, "%s\n -> '%s' not in: %s", code, needle,
		      o.err);
	return o;
}

static outcome
expect_ok(const limits *lim, const char *code)
{
	outcome o = run_lua(lim, code);

	ck_assert_msg(o.rc == TIDE_OK && o.failure == TIDEI_FAIL_NONE,
		      "%s\n -> rc %d, failure %s: %s\nprinted: %s", code, o.rc,
		      fail_names[o.failure], o.err, o.printed);
	return o;
}

/* ------------------------------------------------------------------------
 * Work in C is bounded
 * ------------------------------------------------------------------------ */

/* Each of these ran in C for hours (or for ever) before: the count hook
 * never ran, or ran too seldom to matter. */
static const char *const hangs[] = {
	/* the matcher backtracks exponentially */
	"local x = ('a'):rep(40):find(('a*'):rep(40) .. 'b')",
	"local x = ('a'):rep(40):match(('a*'):rep(40) .. 'b')",
	"for w in ('a'):rep(40):gmatch(('a*'):rep(40) .. 'b') do end",
	"local x = ('a'):rep(40):gsub(('a-'):rep(40) .. 'b', '')",
	"local x = string.find(('a'):rep(30), ('(a?)'):rep(30) .. ('a'):rep(30) .. 'b')",
	/* %b scans to the end from every start */
	"local s = ('('):rep(1e5) while true do local x = s:find('%b()') end",
	/* a loop around something that returns at once */
	"while true do local x = string.rep('', 1e15) end",
	/* nil to nil, 10^12 times */
	"table.move({1}, 1, 1e12, 2)",
	/* quadratic shifting */
	"local t = {} while true do table.insert(t, 1, #t) end",
	"local t = {} for i = 1, 2e5 do t[i] = i end while #t > 0 do table.remove(t, 1) end",
	/* a C function as __index answers every index */
	"local t = setmetatable({}, { __index = tostring }) table.concat(t, '', 1, 1e12)",
	"local t = setmetatable({}, { __index = tostring }) while true do "
	"local x = { table.unpack(t, 1, 5e5) } end",
	"local t = {} for i = 1, 1e5 do t[i] = (i * 7919) % 1e5 end "
	"while true do table.sort(t) table.sort(t, function(a, b) return a > b end) end",
	/* whole strings, one call each */
	"local s = ('a'):rep(1e7) while true do local u = s:upper() end",
	"local s = ('a'):rep(1e7) while true do local u = s:reverse() end",
	"local s = ('a'):rep(1e7) while true do local n = utf8.len(s) end",
	"local s = ('\\x80'):rep(1e7) local f = utf8.codes(s) while true do f(s, 0) end",
	"local s = ('1'):rep(1e6) while true do local n = tonumber(s) end",
	"local s = ('x'):rep(1e5) while true do local t = { s:byte(1, -1) } end",
	"local s = ('x'):rep(1e6) while true do local t = string.format('%s%s', s, s) end",
	/* one instruction copying a long string */
	"local s = ('x'):rep(5e7) while true do local t = s .. 'y' end",
	/* the collector over a large heap, again and again */
	"local t = {} for i = 1, 2e5 do t[i] = { i } end while true do collectgarbage() end",
	/* parsing */
	"local c = ('x = 1 '):rep(1e5) while true do local f = load(c) end",
	/* a table that refers to one table many times */
	"local tide = require 'tide' local t = {} for i = 1, 60 do t = { t, t } end "
	"tide.json.encode(t)",
	"local tide = require 'tide' local t = {} for i = 1, 60 do t = { t, t } end "
	"tide.emit{ type = 'x', source = '/x', id = '1', data = t }",
	/* require along a long path: a system call for each name */
	"package.path = ('/nonexistent/?.lua;'):rep(1e6) require 'nothing'",
	/* a coroutine */
	"local f = coroutine.wrap(function() while true do end end) f()",
};

START_TEST(library_work_is_bounded)
{
	const char *code = hangs[_i];
	outcome o;

	/* the instruction budget stops it, deterministically */
	o = expect_failure(&budget_only, code, TIDEI_FAIL_BUDGET,
			   "exceeded its instruction budget (10000000 instructions)");
	ck_assert_msg(strncmp(o.err, "s:1: ", 5) == 0, "no script:line in %s", o.err);
	/* and without one the clock does */
	o = expect_failure(&clock_only, code, TIDEI_FAIL_TIME, "exceeded its time limit (1 s)");
	ck_assert_msg(o.ms >= 900, "%s\n -> stopped after %lld ms", code, (long long)o.ms);
}
END_TEST

START_TEST(results_of_bounded_functions)
{
	outcome o;

	/* an empty result is made at once whatever the count; an impossible
	 * one is refused before any work */
	o = expect_ok(&defaults, "assert(string.rep('', 1e15) == '')\n"
				 "assert(string.rep('', 1e15, '') == '')\n"
				 "assert(('x'):rep(1, ('y'):rep(100)) == 'x')\n"
				 "assert(('ab'):rep(3, ',') == 'ab,ab,ab')\n"
				 "assert(('ab'):rep(0) == '' and ('ab'):rep(-5) == '')\n"
				 "assert((''):rep(3, '-') == '--')\n"
				 "assert(('x'):rep(5) == 'xxxxx')\n"
				 "local ok, e = pcall(string.rep, 'x', 1e15)\n"
				 "assert(not ok and e:find('resulting string too large'), e)\n");
	ck_assert_int_lt(o.ms, 1000);
	/* a huge result within the size limit meets the budget at once */
	o = expect_failure(&defaults, "local s = ('x'):rep(2e9)", TIDEI_FAIL_BUDGET,
			   "instruction budget");
	ck_assert_int_lt(o.ms, 1000);
	/* the table functions as Lua has them */
	expect_ok(
		&defaults,
		"local t = { 1, 2, 3 }\n"
		"table.insert(t, 4) table.insert(t, 1, 0)\n"
		"assert(table.concat(t, ',') == '0,1,2,3,4')\n"
		"assert(table.remove(t, 1) == 0 and table.remove(t) == 4)\n"
		"assert(table.concat(t, '-', 2, 3) == '2-3')\n"
		"assert(table.concat({}, 'x') == '' and table.concat({ 1 }, 'x', 2, 1) == '')\n"
		"local u = table.move({ 1, 2, 3 }, 1, 3, 2) assert(table.concat(u) == '1123')\n"
		"local v = table.move({ 1, 2, 3 }, 2, 3, 1) assert(table.concat(v) == '233')\n"
		"local w = table.move({ 1, 2 }, 1, 2, 2, { 9 }) assert(table.concat(w) == '912')\n"
		"assert(select('#', table.unpack({ 1, nil, 3 }, 1, 3)) == 3)\n"
		"assert(select('#', table.unpack({}, 5, 4)) == 0)\n"
		"local s = { 5, 2, 8, 1 } table.sort(s) assert(table.concat(s) == '1258')\n"
		"table.sort(s, function(a, b) return a > b end) assert(table.concat(s) == '8521')\n"
		"local ok, e = pcall(table.insert, { 1 }, 5, 2)\n"
		"assert(e:find(\"bad argument #2 to 'table.insert' %(position out of bounds%)\"), "
		"e)\n"
		"ok, e = pcall(table.insert, { 1 }, 1, 2, 3)\n"
		"assert(e:find(\"wrong number of arguments to 'insert'\"), e)\n"
		"ok, e = pcall(table.concat, { 1, {}, 3 })\n"
		"assert(e:find(\"invalid value %(table%) at index 2 in table for 'concat'\"), e)\n"
		"ok, e = pcall(table.move, {}, -1, math.maxinteger, 1)\n"
		"assert(e:find('too many elements to move'), e)\n"
		"ok, e = pcall(table.move, {}, 1, 2, math.maxinteger)\n"
		"assert(e:find('destination wrap around'), e)\n"
		"ok, e = pcall(table.sort, { 3, 1, 'x' })\n"
		"assert(e:find('attempt to compare'), e)\n"
		"ok, e = pcall(table.sort, { 1, 2 }, 3)\n"
		"assert(e:find('bad argument #2'), e)\n"
		"local p = setmetatable({}, { __index = function(_, i) return i * 2 end,\n"
		"  __len = function() return 3 end })\n"
		"assert(table.concat(p, ',') == '2,4,6')\n"
		"assert(utf8.len('a\\u{e9}\\u{20ac}b') == 4 and utf8.offset('a\\u{e9}b', 3) == 4)\n"
		"local n = 0 for p, c in utf8.codes('a\\u{e9}') do n = n + c end assert(n == 330)\n"
		"assert(select(2, utf8.len('a\\xffb')) == 2)\n"
		"assert(('abc'):upper() == 'ABC' and ('abc'):reverse() == 'cba')\n"
		"assert(tonumber('0x10') == 16 and tonumber('z', 36) == 35)\n"
		"assert(string.format('%5.1f|%s', 1.25, 'x') == '  1.2|x')\n");
}
END_TEST

/* ------------------------------------------------------------------------
 * Failures that cannot be caught
 * ------------------------------------------------------------------------ */

/* Code after each of these must not run: the call has failed. */
static const struct {
	const char *code;
	int failure;
	const char *needle;
} swallowed[] = {
	{ "pcall(function() while true do end end) survived()", TIDEI_FAIL_BUDGET,
	  "instruction budget" },
	{ "xpcall(function() while true do end end, function(e) return e end) survived()",
	  TIDEI_FAIL_BUDGET, "instruction budget" },
	{ "xpcall(error, function() while true do end end) survived()", TIDEI_FAIL_BUDGET,
	  "instruction budget" },
	{ "coroutine.resume(coroutine.create(function() while true do end end)) survived()",
	  TIDEI_FAIL_BUDGET, "instruction budget" },
	{ "pcall(coroutine.wrap(function() while true do end end)) survived()", TIDEI_FAIL_BUDGET,
	  "instruction budget" },
	{ "local co = coroutine.create(function()\n"
	  "  local x <close> = setmetatable({}, { __close = function() while true do end end })\n"
	  "  coroutine.yield()\n"
	  "end)\n"
	  "coroutine.resume(co) coroutine.close(co) survived()",
	  TIDEI_FAIL_BUDGET, "instruction budget" },
	{ "pcall(function()\n"
	  "  local x <close> = setmetatable({}, { __close = function() while true do end end })\n"
	  "  error('x')\n"
	  "end) survived()",
	  TIDEI_FAIL_BUDGET, "instruction budget" },
	{ "pcall(string.find, ('a'):rep(40), ('a*'):rep(40) .. 'b') survived()", TIDEI_FAIL_BUDGET,
	  "instruction budget" },
	{ "local hog = function() local t = {} while true do t[#t + 1] = ('x'):rep(64) .. #t end "
	  "end\n"
	  "pcall(hog) survived()",
	  TIDEI_FAIL_MEMORY, "memory limit" },
	{ "local hog = function() local t = {} while true do t[#t + 1] = {} end end\n"
	  "coroutine.resume(coroutine.create(hog)) survived()",
	  TIDEI_FAIL_MEMORY, "memory limit" },
	{ "local hog = function() local t = {} while true do t[#t + 1] = {} end end\n"
	  "pcall(coroutine.wrap(hog)) survived()",
	  TIDEI_FAIL_MEMORY, "memory limit" },
	{ "local hog = function() local t = {} while true do t[#t + 1] = {} end end\n"
	  "xpcall(hog, function(e) return e end) survived()",
	  TIDEI_FAIL_MEMORY, "memory limit" },
	{ "pcall(string.rep, 'x', 1e8) survived()", TIDEI_FAIL_MEMORY, "memory limit" },
	/* Lua itself raises this message as a memory error */
	{ "pcall(error, 'not enough memory') survived()", TIDEI_FAIL_MEMORY, "memory limit" },
	{ "local tide = require 'tide' local s = ('x'):rep(1e6) local t = {}\n"
	  "for i = 1, 200 do t[i] = s end\n"
	  "pcall(tide.json.encode, t) survived()",
	  TIDEI_FAIL_MEMORY, "tide.json.encode: not enough memory (the memory limit)" },
};

START_TEST(failures_cannot_be_swallowed)
{
	limits lim = defaults;
	char code[2048];

	lim.memory = (size_t)16 << 20;
	snprintf(code, sizeof code, "function survived() print('survived') end\n%s",
		 swallowed[_i].code);
	expect_failure(&lim, code, swallowed[_i].failure, swallowed[_i].needle);
	/* the time limit the same way */
	if (swallowed[_i].failure == TIDEI_FAIL_BUDGET) {
		lim = clock_only;
		expect_failure(&lim, code, TIDEI_FAIL_TIME, "time limit (1 s)");
	}
}
END_TEST

START_TEST(ordinary_errors_are_still_caught)
{
	outcome o;

	o = expect_ok(
		&defaults,
		"local ok, e = pcall(error, 'boom') assert(not ok and e == 'boom')\n"
		"ok, e = xpcall(error, function(m) return 'handled ' .. m end, 'x')\n"
		"assert(not ok and e == 'handled x')\n"
		"ok, e = coroutine.resume(coroutine.create(function() error('in co') end))\n"
		"assert(not ok and e:find('in co'))\n"
		"local co = coroutine.create(function(a) local b = coroutine.yield(a + 1)\n"
		"  return b * 2 end)\n"
		"local _, x = coroutine.resume(co, 1) local _, y = coroutine.resume(co, 10)\n"
		"assert(x == 2 and y == 20 and coroutine.status(co) == 'dead')\n"
		"ok, e = coroutine.resume(co) assert(not ok and e == 'cannot resume dead "
		"coroutine')\n"
		"local w = coroutine.wrap(function() error('wrapped') end)\n"
		"ok, e = pcall(w) assert(not ok and e:find('wrapped'))\n"
		"local g = coroutine.wrap(function() coroutine.yield(1) return 2 end)\n"
		"assert(g() == 1 and g() == 2)\n"
		"ok, e = pcall(g) assert(not ok and e:find('cannot resume dead coroutine'))\n"
		"local c2 = coroutine.create(function()\n"
		"  local x <close> = setmetatable({}, { __close = function() error('c') end })\n"
		"  coroutine.yield() end)\n"
		"coroutine.resume(c2) ok, e = coroutine.close(c2)\n"
		"assert(not ok and e:find('c'))\n"
		"ok, e = pcall(coroutine.close, coroutine.running())\n"
		"assert(not ok and e:find('cannot close a running coroutine'))\n"
		"print('done')\n");
	HAS(o.printed, "done");
}
END_TEST

START_TEST(failure_kinds_and_memory)
{
	limits lim = defaults;
	outcome o;

	o = expect_failure(&defaults, "error('plain')", TIDEI_FAIL_ERROR, "s:1: plain");
	lim.memory = (size_t)8 << 20;
	o = expect_failure(&lim, "local t = {} while true do t[#t+1] = #t end", TIDEI_FAIL_MEMORY,
			   "script exceeded its memory limit (not enough memory)");
	(void)o;
	/* memory: the state's usage, with what C code reserved */
	{
		tidei_script_opts so;
		tidei_script *s;
		char err[TIDEI_ERRLEN];
		size_t base, room;

		memset(&so, 0, sizeof so);
		so.instruction_budget = 1000000;
		so.memory_limit = (size_t)8 << 20;
		ck_assert_int_eq(tidei_script_new(&s, &so, NULL, err), TIDE_OK);
		base = tidei_lstate_memory(tidei_script_lstate(s));
		room = tidei_lstate_room(tidei_script_lstate(s));
		ck_assert_uint_le(room, (size_t)8 << 20);
		ck_assert_uint_gt(room, (size_t)7 << 20);
		ck_assert_int_eq(tidei_lstate_reserve(tidei_script_lstate(s), room + 1),
				 TIDE_ENOMEM);
		ck_assert_uint_eq(tidei_lstate_memory(tidei_script_lstate(s)), base);
		ck_assert_int_eq(tidei_lstate_reserve(tidei_script_lstate(s), room - 4096),
				 TIDE_OK);
		ck_assert_uint_eq(tidei_lstate_memory(tidei_script_lstate(s)), base + room - 4096);
		ck_assert_uint_eq(tidei_lstate_room(tidei_script_lstate(s)), 4096);
		/* the state itself cannot take what is reserved */
		ck_assert_int_eq(tidei_script_protect(s, l_chunk,
						      (void *)"local s = ('x'):rep(64 * 1024)", err,
						      NULL),
				 TIDE_ESCRIPT);
		ck_assert_int_eq(tidei_script_failure(s), TIDEI_FAIL_MEMORY);
		tidei_lstate_release(tidei_script_lstate(s), room - 4096);
		ck_assert_int_eq(tidei_script_protect(s, l_chunk,
						      (void *)"keep = ('x'):rep(64 * 1024)", err,
						      NULL),
				 TIDE_OK);
		ck_assert_int_eq(tidei_script_failure(s), TIDEI_FAIL_NONE);
		/* what a call keeps shows in the usage read afterwards */
		ck_assert_uint_ge(tidei_lstate_memory(tidei_script_lstate(s)), base + 64 * 1024);
		tidei_script_destroy(s);
	}
}
END_TEST

/* The engine's own work on a state at its ceiling (pushing the event
 * before a handler, loading a script) fails as a memory failure of the
 * call: outside a protected call it once ended the process (a Lua panic). */
START_TEST(host_work_at_the_ceiling)
{
	tidei_script_opts so;
	tidei_script *s;
	tidei_lstate *ls;
	struct tide_event ev;
	char err[TIDEI_ERRLEN], trace[TIDEI_ERRLEN];
	const char *dir = th_tmpdir();
	const char *path = th_write(dir, "s.lua", "x = 1\n");
	lua_State *L;
	size_t room;
	int ref;

	memset(&so, 0, sizeof so);
	memset(&ev, 0, sizeof ev);
	so.instruction_budget = 1000000;
	so.memory_limit = (size_t)1 << 20;
	ck_assert_int_eq(tidei_script_new(&s, &so, NULL, err), TIDE_OK);
	ck_assert_int_eq(
		tidei_script_protect(s, l_chunk, (void *)"function handler(ev) end", err, NULL),
		TIDE_OK);
	L = tidei_script_state(s);
	lua_getglobal(L, "handler");
	ref = luaL_ref(L, LUA_REGISTRYINDEX);
	ls = tidei_script_lstate(s);
	/* nothing left, no garbage to collect: every allocation fails */
	lua_gc(L, LUA_GCCOLLECT);
	room = tidei_lstate_room(ls);
	ck_assert_int_eq(tidei_lstate_reserve(ls, room), TIDE_OK);
	ck_assert_int_eq(tidei_script_call(s, ref, &ev, err, trace), TIDE_ESCRIPT);
	ck_assert_int_eq(tidei_script_failure(s), TIDEI_FAIL_MEMORY);
	HAS(err, "not enough memory");
	ck_assert_int_eq(tidei_script_load(s, path, err), TIDE_ESCRIPT);
	ck_assert_int_eq(tidei_script_failure(s), TIDEI_FAIL_MEMORY);
	HAS(err, "not enough memory");
	/* with room again, the same work succeeds */
	tidei_lstate_release(ls, room);
	ck_assert_int_eq(tidei_script_call(s, ref, &ev, err, trace), TIDE_OK);
	ck_assert_int_eq(tidei_script_load(s, path, err), TIDE_OK);
	tidei_script_destroy(s);
}
END_TEST

/* ------------------------------------------------------------------------
 * Finalizers and the collector
 * ------------------------------------------------------------------------ */

START_TEST(no_finalizers)
{
	static const char *const allow_debug[] = { "debug", NULL };
	limits dbg = defaults;
	outcome o;

	/* refused, with __gc a function or anything else not nil */
	expect_failure(&defaults, "setmetatable({}, { __gc = function() while true do end end })",
		       TIDEI_FAIL_ERROR, "a metatable with a __gc field is not allowed");
	expect_failure(&defaults, "setmetatable({}, { __gc = false })", TIDEI_FAIL_ERROR, "__gc");
	/* a __gc added afterwards does not make a finalizer (Lua decides when
	 * the metatable is set), so the state closes at once */
	o = expect_ok(
		&defaults,
		"local mt = {} keep = {} for i = 1, 100 do keep[i] = setmetatable({}, mt) "
		"end\n"
		"mt.__gc = function() while true do end end\n"
		"keep = nil collectgarbage() collectgarbage()\n"
		"assert(getmetatable(setmetatable({}, { __index = {} })).__index)\n"
		"local ok, e = pcall(setmetatable, setmetatable({}, { __metatable = 1 }), {})\n"
		"assert(e:find('cannot change a protected metatable'))\n");
	ck_assert_int_lt(o.close_ms, 1000);
	/* Tide's own metatables, which getmetatable reaches */
	expect_failure(&defaults,
		       "local tide = require 'tide'\n"
		       "rawset(getmetatable(tide.array({})), '__gc', function() while true do end "
		       "end)\n"
		       "tide.array({})",
		       TIDEI_FAIL_ERROR, "__gc");
	expect_failure(&defaults,
		       "local tide = require 'tide'\n"
		       "rawset(getmetatable(tide.array({})), '__gc', function() while true do end "
		       "end)\n"
		       "tide.json.decode('[[]]')",
		       TIDEI_FAIL_ERROR, "__gc");
	/* with the debug library allowed: debug.setmetatable refuses too, and
	 * the hook cannot be taken away */
	dbg.allow = allow_debug;
	expect_failure(&dbg, "debug.setmetatable({}, { __gc = function() end })", TIDEI_FAIL_ERROR,
		       "__gc");
	expect_failure(&dbg, "debug.sethook() while true do end", TIDEI_FAIL_ERROR,
		       "debug.sethook is not allowed");
	expect_failure(&dbg, "debug.setupvalue(string.upper, 1, 5)", TIDEI_FAIL_ERROR,
		       "the upvalues of C functions are the engine's");
	expect_ok(&dbg, "debug.setmetatable(10, nil) assert(debug.traceback('x'))\n"
			"local a = 1 local function f() return a end\n"
			"debug.setupvalue(f, 1, 2) assert(f() == 2)\n");
}
END_TEST

START_TEST(collector_options)
{
	static const char *const refused[] = { "stop",         "restart",  "incremental",
					       "generational", "setpause", "setstepmul" };
	char code[256];

	expect_ok(&defaults, "assert(collectgarbage('count') > 0)\n"
			     "assert(collectgarbage() == 0 and collectgarbage('collect') == 0)\n"
			     "collectgarbage('step') collectgarbage('step', 10)\n"
			     "assert(collectgarbage('isrunning') == true)\n"
			     "local ok, e = pcall(collectgarbage, 'bogus')\n"
			     "assert(e:find(\"invalid option 'bogus'\"), e)\n");
	for (size_t k = 0; k < sizeof refused / sizeof *refused; k++) {
		snprintf(code, sizeof code, "collectgarbage('%s')", refused[k]);
		expect_failure(&defaults, code, TIDEI_FAIL_ERROR,
			       "is not allowed: the engine manages the collector");
	}
	/* and the collector still runs after a refused stop */
	expect_ok(&defaults, "pcall(collectgarbage, 'stop')\n"
			     "assert(collectgarbage('isrunning'))\n");
}
END_TEST

START_TEST(modules_are_regular_files)
{
	const char *dir = th_tmpdir();
	char fifo[700], code[4096];
	outcome o;

	th_write(dir, "good.lua", "#!/usr/bin/env lua\n\nreturn { answer = 42 }\n");
	th_write(dir, "bad.lua", "\n\nerror('at three')\n");
	snprintf(fifo, sizeof fifo, "%s/pipe.lua", dir);
	ck_assert_int_eq(mkfifo(fifo, 0600), 0);
	/* a FIFO (or a device) is not a module: opening it would wait for a
	 * writer that never comes */
	snprintf(code, sizeof code,
		 "package.path = '%s/?.lua'\n"
		 "assert(require('good').answer == 42)\n"
		 "local ok, e = pcall(require, 'bad') assert(e:find('bad.lua:3: at three'), e)\n"
		 "ok, e = pcall(require, 'pipe')\n"
		 "assert(e:find(\"module 'pipe' not found\") and e:find('no file'), e)\n"
		 "assert(package.searchpath('good', package.path):find('good.lua$'))\n"
		 "local f, m = package.searchpath('pipe', package.path .. ';/dev/?')\n"
		 "assert(f == nil and m:find(\"no file '/dev/pipe'\"), m)\n"
		 "assert(not package.searchpath('null', '/dev/?'))\n"
		 "print('done')\n",
		 dir);
	o = expect_ok(&defaults, code);
	HAS(o.printed, "done");
	ck_assert_int_lt(o.ms, BOUND_MS);
}
END_TEST

/* ------------------------------------------------------------------------
 * tide.json and the memory ceiling
 * ------------------------------------------------------------------------ */

static long
max_rss_kb(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_maxrss;
}

START_TEST(json_encode_stays_within_the_ceiling)
{
	limits lim = defaults;
	long before;
	outcome o;

	/* 200 references to one 1 MB string: 200 MB of JSON from 1 MB of Lua */
	lim.memory = (size_t)32 << 20;
	before = max_rss_kb();
	o = expect_failure(&lim,
			   "local tide = require 'tide' local s = ('x'):rep(1e6) local t = {}\n"
			   "for i = 1, 200 do t[i] = s end\n"
			   "local j = tide.json.encode(t)",
			   TIDEI_FAIL_MEMORY,
			   "tide.json.encode: not enough memory (the memory limit)");
	ck_assert_msg(max_rss_kb() - before < 100 * 1024,
		      "the process grew by %ld KiB encoding under a 32 MiB ceiling",
		      max_rss_kb() - before);
	/* what fits is encoded and decoded as before */
	lim.memory = (size_t)64 << 20;
	expect_ok(&lim, "local tide = require 'tide' local s = ('x'):rep(1e6) local t = {}\n"
			"for i = 1, 20 do t[i] = s end\n"
			"local j = tide.json.encode(t) assert(#j == 20 * (1e6 + 3) + 1)\n"
			"assert(#tide.json.decode(tide.json.encode({ s, s })) == 2)\n"
			"assert(tide.json.encode({ a = 1, b = { 1, 2 }, c = tide.array() }) ==\n"
			"  '{\"a\":1,\"b\":[1,2],\"c\":[]}')\n"
			"assert(select(2, tide.json.decode('[1,')):find('not valid JSON'))\n");
	(void)o;
}
END_TEST

/* ------------------------------------------------------------------------
 * The config file
 * ------------------------------------------------------------------------ */

/* Load @p text as a config file: the code, the config (destroy it), and
 * the time taken in *ms. */
static int
load_config(const char *text, tide_config **cfg, int64_t *ms)
{
	const char *path = th_write(th_tmpdir(), "tide.lua", text);
	int64_t t0;
	int rc;

	ck_assert_int_eq(tide_config_new(cfg), TIDE_OK);
	t0 = th_ms();
	rc = tide_config_load(*cfg, path);
	*ms = th_ms() - t0;
	return rc;
}

START_TEST(config_file_is_bounded)
{
	static const struct {
		const char *text, *needle;
	} bad[] = {
		{ "data = 'x'\nwhile true do end\n",
		  "tide.lua:2: config file exceeded its instruction budget" },
		{ "local x = ('a'):rep(40):find(('a*'):rep(40) .. 'b')\n",
		  "config file exceeded its instruction budget" },
		{ "local s = ('x'):rep(3e8)\n", "memory limit" },
		{ "x = setmetatable({}, { __gc = function() while true do end end })\n", "__gc" },
		{ "collectgarbage('stop')\n", "not allowed" },
		{ "dofile('/etc/passwd')\n", "dofile" },
	};
	tide_config *cfg;
	int64_t ms;
	int rc;

	for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
		rc = load_config(bad[k].text, &cfg, &ms);
		ck_assert_msg(rc == TIDE_ECONFIG, "%s -> %d: %s", bad[k].text, rc, tide_errmsg());
		ck_assert_msg(ms < BOUND_MS, "%s -> %lld ms", bad[k].text, (long long)ms);
		HAS(tide_errmsg(), bad[k].needle);
		tide_config_destroy(cfg);
	}
	/* a good one still works, helpers and the string library included */
	rc = load_config("local function mb(n) return n .. 'M' end\n"
			 "memory_limit = mb(64)\n"
			 "time_limit = 0.5\n"
			 "instruction_budget = math.tointeger(5e6)\n"
			 "data = ('d'):rep(2) .. ('/%s'):format('x')\n"
			 "scripts = { 'a.lua' }\n",
			 &cfg, &ms);
	ck_assert_msg(rc == TIDE_OK, "%s", tide_errmsg());
	ck_assert_str_eq(tide_config_get(cfg, "memory_limit"), "67108864");
	ck_assert_str_eq(tide_config_get(cfg, "time_limit"), "500ms");
	ck_assert_str_eq(tide_config_get(cfg, "instruction_budget"), "5000000");
	HAS(tide_config_get(cfg, "data"), "/dd/x");
	tide_config_destroy(cfg);
	rc = load_config("time_limit = '2s'\n", &cfg, &ms);
	ck_assert_int_eq(rc, TIDE_OK);
	ck_assert_str_eq(tide_config_get(cfg, "time_limit"), "2s");
	tide_config_destroy(cfg);
	rc = load_config("time_limit = 'soon'\n", &cfg, &ms);
	ck_assert_int_eq(rc, TIDE_ECONFIG);
	HAS(tide_errmsg(), "time_limit: 'soon' is not a duration");
	tide_config_destroy(cfg);
}
END_TEST

START_TEST(time_limit_setting)
{
	tide_config *cfg;

	ck_assert_int_eq(tide_config_new(&cfg), TIDE_OK);
	ck_assert_str_eq(tide_config_get(cfg, "time_limit"), "5s");
	ck_assert_int_eq(tide_config_set(cfg, "time_limit", "250ms"), TIDE_OK);
	ck_assert_str_eq(tide_config_get(cfg, "time_limit"), "250ms");
	ck_assert_int_eq(tide_config_set(cfg, "time_limit", "1.5"), TIDE_OK);
	ck_assert_str_eq(tide_config_get(cfg, "time_limit"), "1500ms");
	ck_assert_int_eq(tide_config_set(cfg, "time_limit", "0"), TIDE_OK);
	ck_assert_str_eq(tide_config_get(cfg, "time_limit"), "0s");
	ck_assert_int_eq(tide_config_set(cfg, "time_limit", "3 s"), TIDE_OK);
	ck_assert_str_eq(tide_config_get(cfg, "time_limit"), "3s");
	ck_assert_int_eq(tide_config_set(cfg, "time_limit", "-1"), TIDE_ECONFIG);
	ck_assert_int_eq(tide_config_set(cfg, "time_limit", "1e3"), TIDE_ECONFIG);
	ck_assert_int_eq(tide_config_set(cfg, "time_limit", "5 minutes"), TIDE_ECONFIG);
	ck_assert_int_eq(tide_config_set(cfg, "time_limit", "inf"), TIDE_ECONFIG);
	HAS(tide_errmsg(), "time_limit: 'inf' is not a duration");
	tide_config_destroy(cfg);
}
END_TEST

/* ------------------------------------------------------------------------
 * The pattern matcher against Lua's
 * ------------------------------------------------------------------------ */

/* Loaded into both states: run(op, s, p, x, y) -> a text of the results
 * (or the error).  x: the init of find/match/gmatch or gsub's maximum. */
static const char diff_lua[] =
	"local function ser(...)\n"
	"  local t = {}\n"
	"  for i = 1, select('#', ...) do\n"
	"    local v = select(i, ...)\n"
	"    local ty = type(v)\n"
	"    t[i] = ty == 'string' and ('%q'):format(v) or (ty == 'number' or ty == 'boolean'\n"
	"      or ty == 'nil') and tostring(v) or ty\n"
	"  end\n"
	"  return select('#', ...) .. ':' .. table.concat(t, ',')\n"
	"end\n"
	"local repls = { '<%0>', '%1-%2', 'x', '%%', '', '%2', '%', '%a', '%1%1', '()' }\n"
	"local rtab = { a = 'A', b = false, ab = 'AB', ['1'] = 1, [1] = 'one' }\n"
	"local function rfun(a, b)\n"
	"  if a == 'a' then return nil end\n"
	"  if a == 'b' then return false end\n"
	"  if a == 'c' then return {} end\n"
	"  return '[' .. tostring(a) .. '|' .. tostring(b) .. ']'\n"
	"end\n"
	"function run(op, s, p, x, y)\n"
	"  if op == 0 then return ser(pcall(string.find, s, p, x))\n"
	"  elseif op == 1 then return ser(pcall(string.find, s, p, x, true))\n"
	"  elseif op == 2 then return ser(pcall(string.match, s, p, x))\n"
	"  elseif op == 3 then\n"
	"    return ser(pcall(function()\n"
	"      local out, n = {}, 0\n"
	"      for a, b, c in s:gmatch(p, x) do\n"
	"        n = n + 1 out[n] = ser(a, b, c)\n"
	"        if n > 200 then break end\n"
	"      end\n"
	"      return table.concat(out, ';')\n"
	"    end))\n"
	"  elseif op == 4 then return ser(pcall(string.gsub, s, p, repls[y % #repls + 1], x))\n"
	"  elseif op == 5 then return ser(pcall(string.gsub, s, p, rtab, x))\n"
	"  elseif op == 6 then return ser(pcall(string.gsub, s, p, rfun, x))\n"
	"  elseif op == 7 then return ser(pcall(string.gsub, s, p, 42, x))\n"
	"  else return ser(pcall(s.find, s, p, x)) end\n"
	"end\n"
	"function runx(code)\n"
	"  local f, e = load('return ' .. code)\n"
	"  if not f then return 'load: ' .. e end\n"
	"  return ser(pcall(f))\n"
	"end\n";

#define DIFF_OPS 9

typedef struct diff {
	lua_State *ref; /* Lua's own library */
	tidei_script *s;
	uint64_t seed;
	long ncases, nrandom;
	char fail[8192];
} diff;

static void
escape(char *out, size_t n, const char *s, size_t len)
{
	size_t o = 0;

	for (size_t k = 0; k < len && o + 5 < n; k++) {
		unsigned char c = (unsigned char)s[k];
		if (c >= 32 && c < 127 && c != '\\')
			out[o++] = (char)c;
		else
			o += (size_t)snprintf(out + o, n - o, "\\%u", c);
	}
	out[o] = '\0';
}

/* Run one case in @p L; the result text, which stays on L's stack. */
static const char *
diff_run(lua_State *L, int op, const char *s, size_t ls, const char *p, size_t lp, int has_x,
	 lua_Integer x, int y)
{
	lua_getglobal(L, "run");
	lua_pushinteger(L, op);
	lua_pushlstring(L, s, ls);
	lua_pushlstring(L, p, lp);
	if (has_x)
		lua_pushinteger(L, x);
	else
		lua_pushnil(L);
	lua_pushinteger(L, y);
	if (lua_pcall(L, 5, 1, 0) != LUA_OK)
		return lua_pushfstring(L, "run failed: %s", lua_tostring(L, -1));
	return lua_tostring(L, -1);
}

/* Both states on one case; 0, or -1 with the difference in d->fail. */
static int
diff_case(diff *d, int op, const char *s, size_t ls, const char *p, size_t lp, int has_x,
	  lua_Integer x, int y)
{
	lua_State *mine = tidei_script_state(d->s);
	const char *a, *b;
	char es[512], ep[512];
	int rc = 0;

	tidei_script_rearm(d->s);
	a = diff_run(d->ref, op, s, ls, p, lp, has_x, x, y);
	b = diff_run(mine, op, s, ls, p, lp, has_x, x, y);
	if (strcmp(a, b) != 0) {
		escape(es, sizeof es, s, ls);
		escape(ep, sizeof ep, p, lp);
		snprintf(d->fail, sizeof d->fail,
			 "case %ld (seed %llu): op %d, subject \"%s\", pattern \"%s\", x %s%lld, y "
			 "%d\n  Lua:  %.1500s\n  Tide: %.1500s",
			 d->ncases, (unsigned long long)d->seed, op, es, ep, has_x ? "" : "nil/",
			 (long long)x, y, a, b);
		rc = -1;
	}
	lua_pop(d->ref, 1);
	lua_pop(mine, 1);
	d->ncases++;
	return rc;
}

/* Every operation on one subject and pattern. */
static int
diff_all(diff *d, const char *s, size_t ls, const char *p, size_t lp, uint64_t *rnd)
{
	static const lua_Integer inits[] = { 1, 2, -3, 0, 100, -100, 4 };

	for (int op = 0; op < DIFF_OPS; op++) {
		int has_x = th_rand_range(rnd, 0, 2) != 0;
		lua_Integer x = inits[th_rand_range(rnd, 0, 6)];
		if (diff_case(d, op, s, ls, p, lp, has_x, x, (int)th_rand_range(rnd, 0, 9)) != 0)
			return -1;
	}
	return 0;
}

/* Subject and pattern, with their lengths (some hold a NUL). */
#define CASE(s, p) \
	{ \
		s, sizeof(s) - 1, p, sizeof(p) - 1 \
	}
static const struct {
	const char *s;
	size_t ls;
	const char *p;
	size_t lp;
} fixed_cases[] = {
	/* subject, pattern */
	CASE("hello world from Lua", "(%w+)"),
	CASE("hello world", "^(h)(.-)(o)"),
	CASE("  trim me  ", "^%s*(.-)%s*$"),
	CASE("key = value", "(%w+)%s*=%s*(%w+)"),
	CASE("hello", "()ll()"),
	CASE("hello", ""),
	CASE("", ""),
	CASE("", "a*"),
	CASE("abc", ""),
	CASE("baaac", "a*"),
	CASE("baaac", "a-"),
	CASE("THE (quick) fox", "%f[%a]%a+"),
	CASE("THE (quick) fox", "%f[%A]"),
	CASE("x = (a(b)c) (d)", "%b()"),
	CASE("[[x]]", "%b[]"),
	CASE("\"a\" \"b\"", "%b\"\""),
	CASE("aaa", "(a)%1"),
	CASE("abab", "(ab)%1"),
	CASE("abcabc", "(a)(b)(c)%1%2%3"),
	CASE("a]b", "[]]"),
	CASE("a]b^", "[^]]"),
	CASE("a-b", "[a-]"),
	CASE("a-b", "[-a]"),
	CASE("z-a", "[%a-z]+"),
	CASE("a%b", "%%"),
	CASE("a.b", "%."),
	CASE("a$b", "a$b"),
	CASE("a$", "a$"),
	CASE("^a", "^^a"),
	CASE("x^y", "x^y"),
	CASE("abc", "[a"),
	CASE("abc", "x["),
	CASE("abc", "a%"),
	CASE("abc", "%"),
	CASE("abc", "%b"),
	CASE("abc", "%ba"),
	CASE("abc", "%f"),
	CASE("abc", "%fa"),
	CASE("abc", "%f[a"),
	CASE("abc", "(a"),
	CASE("abc", "a)"),
	CASE("abc", "%1"),
	CASE("abc", "(a%1)"),
	CASE("abc", "()%1"),
	CASE("abc", "%0"),
	CASE("abc", "(()"),
	CASE("a\0b\0c", "%z"),
	CASE("a\0b\0c", "[%z]"),
	CASE("a\0b\0c", "b\0c"),
	CASE("a\0b", "%Z+"),
	CASE("one two  three", "%s+"),
	CASE("x1y22z333", "%d+"),
	CASE("CamelCaseWord", "%u%l*"),
	CASE("0x1F 0xZZ", "0x(%x+)"),
	CASE("tab\there", "%c"),
	CASE("p.u,n;c!", "%p"),
	CASE("gr aph", "%g+"),
	CASE("hello.world", "[%w.]+"),
	CASE("a+b-c*d", "[+%-*]"),
	CASE("aaa", "a?a?a?aaa"),
	CASE("aaab", "a-b"),
	CASE("aaab", "a+b"),
	CASE("ab", "a?b?c?"),
	CASE("(foo)", "%((%w+)%)"),
	CASE("2024-11-24T09:00:00Z", "^(%d+)-(%d+)-(%d+)T"),
	CASE("order.placed", "^order%."),
	CASE("a,b,,c", "([^,]*)"),
	CASE("abc", ".-"),
	CASE("abc", ".-$"),
	CASE("abc", "$"),
	CASE("abc", "^$"),
	CASE("", "^$"),
	CASE("abc", "()"),
	CASE("abc", "^"),
	CASE("a*b", "a*b"),
	CASE("a*b", "a%*b"),
	CASE("((a))", "%b(("),
	CASE("]]", "%b]]"),
	CASE("abc", "[a-c-e]+"),
	CASE("abc", "[c-a]"),
	CASE("abc", "[%a-]"),
	CASE("a-z", "[a%-z]+"),
};
#undef CASE

/* A random pattern: pieces, repetitions, anchors, and malformed bits. */
static size_t
random_pattern(uint64_t *rnd, char *out, size_t cap)
{
	static const char *const atoms[] = {
		"a",     "b",    "a",    "b",    ".",      "%a",     "%d",     "%s",     "%w",
		"%p",    "%l",   "%u",   "%x",   "%c",     "%g",     "%A",     "%S",     "%D",
		"%W",    "%z",   "%.",   "%%",   "[ab]",   "[^a]",   "[a-c]",  "[%d_]",  "[%a%-]",
		"[]]",   "[^]]", "[a-]", "[-a]", "x",      "(",      ")",      "()",     "(a)",
		"(.)",   "%1",   "%2",   "%0",   "%b()",   "%bab",   "%f[%w]", "%f[%W]", "%f[a]",
		"$",     "^",    "[",    "%",    "%b",     "%f",     "%fa",    "[a",     "\0",
		" ",     "1",    "-",    "*",    "?",      "+",      "(a*)",   "(%w+)",  "[%s%d]",
		"[^%s]", "%bxy", "]",    "[a%]", "%f[%z]", "%f[%Z]",
	};
	static const char *const reps[] = { "", "", "", "*", "+", "-", "?" };
	size_t n = 0;
	int pieces = (int)th_rand_range(rnd, 1, 5);

#define PUT(s, len) \
	do { \
		size_t l_ = (len); \
		if (n + l_ < cap) { \
			memcpy(out + n, (s), l_); \
			n += l_; \
		} \
	} while (0)
	if (th_rand_range(rnd, 0, 4) == 0)
		PUT("^", 1);
	for (int i = 0; i < pieces; i++) {
		const char *a = atoms[th_rand_range(rnd, 0, sizeof atoms / sizeof *atoms - 1)];
		const char *r = reps[th_rand_range(rnd, 0, sizeof reps / sizeof *reps - 1)];
		PUT(a, a[0] == '\0' ? 1 : strlen(a));
		PUT(r, strlen(r));
	}
	if (th_rand_range(rnd, 0, 4) == 0)
		PUT("$", 1);
#undef PUT
	return n;
}

static size_t
random_subject(uint64_t *rnd, char *out, size_t cap)
{
	static const char alphabet[] = "aaabbbab()xy1 2_-.%]\t";
	size_t n = (size_t)th_rand_range(rnd, 0, cap < 20 ? cap : 20);

	for (size_t k = 0; k < n; k++)
		out[k] = th_rand_range(rnd, 0, 60) == 0
				 ? '\0'
				 : alphabet[th_rand_range(rnd, 0, sizeof alphabet - 2)];
	return n;
}

/* Run under tidei_script_protect: the cases, until one differs. */
static int
l_diff(lua_State *L)
{
	diff *d = lua_touserdata(L, 1);
	uint64_t rnd = d->seed;
	char s[64], p[128];
	size_t ls, lp;

	for (size_t k = 0; k < sizeof fixed_cases / sizeof *fixed_cases; k++)
		if (diff_all(d, fixed_cases[k].s, fixed_cases[k].ls, fixed_cases[k].p,
			     fixed_cases[k].lp, &rnd) != 0)
			return 0;
	/* limits Lua has: captures and nesting */
	{
		char many[256] = "", deep[1024] = "", subject[512] = "";
		for (int i = 0; i < 33; i++)
			strcat(many, "(a)");
		for (int i = 0; i < 250; i++) {
			strcat(deep, "a?");
			strcat(subject, "a");
		}
		/* k matching a?'s nest k + 1 attempts: 199 is the most */
		if (diff_all(d, subject, 33, many, strlen(many), &rnd) != 0 ||
		    diff_all(d, subject, 32, many, 3 * 32, &rnd) != 0 ||
		    diff_all(d, subject, 250, deep, strlen(deep), &rnd) != 0 ||
		    diff_all(d, subject, 199, deep, 2 * 199, &rnd) != 0 ||
		    diff_all(d, subject, 200, deep, 2 * 200, &rnd) != 0 ||
		    diff_all(d, subject, 150, deep, 300, &rnd) != 0)
			return 0;
	}
	for (long k = 0; k < d->nrandom; k++) {
		lp = random_pattern(&rnd, p, sizeof p);
		ls = random_subject(&rnd, s, sizeof s);
		if (diff_all(d, s, ls, p, lp, &rnd) != 0)
			return 0;
	}
	return 0;
}

START_TEST(patterns_match_lua)
{
	tidei_script_opts so;
	char err[TIDEI_ERRLEN];
	diff d;

	memset(&d, 0, sizeof d);
	memset(&so, 0, sizeof so);
	so.instruction_budget = 1000000000;
	d.seed = (uint64_t)th_env_ll("TIDE_SANDBOX_SEED", (long long)time(NULL));
	d.nrandom = (long)th_env_ll("TIDE_SANDBOX_CASES", 3000);
	d.ref = luaL_newstate();
	ck_assert_ptr_nonnull(d.ref);
	luaL_openlibs(d.ref);
	/* the same chunk name in both, for the same messages */
	ck_assert_int_eq(luaL_loadbuffer(d.ref, diff_lua, strlen(diff_lua), "=s"), LUA_OK);
	ck_assert_int_eq(lua_pcall(d.ref, 0, 0, 0), LUA_OK);
	ck_assert_int_eq(tidei_script_new(&d.s, &so, NULL, err), TIDE_OK);
	ck_assert_int_eq(tidei_script_protect(d.s, l_chunk, (void *)diff_lua, err, NULL), TIDE_OK);
	ck_assert_msg(tidei_script_protect(d.s, l_diff, &d, err, NULL) == TIDE_OK, "%s", err);
	ck_assert_msg(d.fail[0] == '\0', "%s", d.fail);
	ck_assert_int_gt(d.ncases,
			 9 * (long)(sizeof fixed_cases / sizeof *fixed_cases) + 9 * d.nrandom);
	fprintf(stderr, "patterns: %ld cases agree with Lua's library (seed %llu)\n", d.ncases,
		(unsigned long long)d.seed);
	lua_close(d.ref);
	tidei_script_destroy(d.s);
	/* and unlike Lua's, it pays for its steps: one find over 1 MB is more
	 * than 100,000 instructions' worth */
	{
		limits lim = defaults;
		lim.budget = 100000;
		expect_failure(&lim, "local s = ('ab '):rep(4e5) local x = s:find('%f[%w]zebra')",
			       TIDEI_FAIL_BUDGET, "instruction budget");
	}
}
END_TEST

/* The replaced library functions give Lua's results and messages. */
static const char *const library_cases[] = {
	"table.insert({ 1 }, 5, 2)",
	"table.insert({ 1 }, 0, 2)",
	"table.insert({ 1 }, 1, 2, 3)",
	"table.insert(nil, 1)",
	"table.insert({ 1, 2 }, 2, 'x') or 'ok'",
	"table.remove({}, 5)",
	"table.remove({ 1, 2, 3 }, 1)",
	"table.remove({ 1, 2, 3 }, 4)",
	"table.remove({ 1, 2, 3 }, 5)",
	"table.remove({})",
	"table.remove({}, 0)",
	"table.remove({ 1 }, -1)",
	"table.unpack(table.move({ 1, 2, 3 }, 1, 3, 2))",
	"table.unpack(table.move({ 1, 2, 3 }, 2, 3, 1))",
	"table.move({}, -1, math.maxinteger, 1)",
	"table.move({}, 1, 2, math.maxinteger)",
	"table.move(1, 1, 2, 3)",
	"table.move({ 1, 2 }, 1, 2, 1, 5)",
	"table.move({ 1, 2 }, 3, 1, 1)",
	"table.concat({ 1, {}, 3 })",
	"table.concat({ 1, 2, 3 }, ', ', 2, 3)",
	"table.concat({}, 'x', 3, 1)",
	"table.concat({ 1, 2 }, 3)",
	"table.concat(5)",
	"table.concat({ 'a', 'b' }, {})",
	"table.concat(setmetatable({}, { __index = function(_, i) return i end, __len = "
	"function() return 4 end }), '-')",
	"table.unpack({ 1, 2, 3 }, 2)",
	"table.unpack({ 1, 2, 3 }, -1, 1)",
	"table.unpack({}, 1, 1e8)",
	"table.unpack({ 1 }, 'x')",
	"table.unpack({ 1 }, 1, math.maxinteger)",
	"(function() local t = { 3, 1, 2 } table.sort(t) return table.unpack(t) end)()",
	"(function() local t = { 'b', 'a' } table.sort(t, function(a, b) return a > b end) "
	"return table.unpack(t) end)()",
	"table.sort({ 1, 'x' })",
	"table.sort({ 1, 2 }, 3)",
	"table.sort(5)",
	"string.rep('ab', 3, ',')",
	"string.rep('x', -1)",
	"string.rep('x', 1e10)",
	"string.rep('x', 2^31)",
	"string.rep('', 1e10)",
	"string.rep('', 1e10, 'x')",
	"string.rep('x', 2.5)",
	"string.rep()",
	"string.rep('x', 3, 4)",
	"('abc'):rep(2)",
	"string.upper(nil)",
	"('aBc'):lower()",
	"string.reverse()",
	"string.byte('abc', 1, -1)",
	"string.byte('abc', 10)",
	"string.char(72, 105)",
	"string.char(256)",
	"string.format('%5d|%-3s|%q', 3, 'x', 'a\\n')",
	"string.format('%99999d', 1)",
	"string.format('%d', 'x')",
	"string.pack('i4', 7):len()",
	"string.unpack('i4', string.pack('i4', 7))",
	"string.packsize('i4i8')",
	"utf8.len('\\xff')",
	"utf8.len('abc', 5)",
	"utf8.len('abc', 1, 5)",
	"utf8.len('a\\u{e9}b', -2)",
	"utf8.offset('abc', 1, 5)",
	"utf8.offset('a\\u{e9}', 0, 3)",
	"utf8.offset('a\\u{e9}b', -1)",
	"utf8.offset('\\x80', 1)",
	"utf8.offset('abc', 5)",
	"utf8.codepoint('abc', 1, 3)",
	"utf8.codepoint('\\xff')",
	"utf8.char(72, 0x10FFFF)",
	"(function() local r = {} for p, c in utf8.codes('a\\u{e9}z') do r[#r + 1] = p .. '=' "
	".. c end return table.concat(r, ' ') end)()",
	"(function() for p, c in utf8.codes('a\\xffz') do end end)()",
	"setmetatable(1, {})",
	"setmetatable({}, 1)",
	"getmetatable(setmetatable({}, nil))",
	"setmetatable(setmetatable({}, { __metatable = 'no' }), {})",
	"collectgarbage('bogus')",
	"tonumber('10', 2)",
	"tonumber('z', 36)",
	"tonumber('x')",
	"tonumber()",
	"tonumber('  0x1p4  ')",
	"tonumber(10, 2)",
	"coroutine.resume(5)",
	"coroutine.wrap(5)",
	"coroutine.close(5)",
	"coroutine.resume(coroutine.create(function(...) return select('#', ...), ... end), 1, "
	"nil, 3)",
	"coroutine.close(coroutine.create(print))",
	"select('#', coroutine.wrap(function(...) return ... end)(1, 2, 3))",
	"load('x = ')",
};

static int
l_library_diff(lua_State *L)
{
	diff *d = lua_touserdata(L, 1);
	lua_State *mine = tidei_script_state(d->s);

	for (size_t k = 0; k < sizeof library_cases / sizeof *library_cases; k++) {
		const char *a, *b;
		tidei_script_rearm(d->s);
		lua_getglobal(d->ref, "runx");
		lua_pushstring(d->ref, library_cases[k]);
		lua_call(d->ref, 1, 1);
		a = lua_tostring(d->ref, -1);
		lua_getglobal(mine, "runx");
		lua_pushstring(mine, library_cases[k]);
		lua_call(mine, 1, 1);
		b = lua_tostring(mine, -1);
		if (strcmp(a, b) != 0) {
			snprintf(d->fail, sizeof d->fail, "%s\n  Lua:  %.1500s\n  Tide: %.1500s",
				 library_cases[k], a, b);
			return 0;
		}
		lua_pop(d->ref, 1);
		lua_pop(mine, 1);
		d->ncases++;
	}
	return 0;
}

START_TEST(library_matches_lua)
{
	tidei_script_opts so;
	char err[TIDEI_ERRLEN];
	diff d;

	memset(&d, 0, sizeof d);
	memset(&so, 0, sizeof so);
	so.instruction_budget = 1000000000;
	d.ref = luaL_newstate();
	ck_assert_ptr_nonnull(d.ref);
	luaL_openlibs(d.ref);
	ck_assert_int_eq(luaL_loadbuffer(d.ref, diff_lua, strlen(diff_lua), "=s"), LUA_OK);
	ck_assert_int_eq(lua_pcall(d.ref, 0, 0, 0), LUA_OK);
	ck_assert_int_eq(tidei_script_new(&d.s, &so, NULL, err), TIDE_OK);
	ck_assert_int_eq(tidei_script_protect(d.s, l_chunk, (void *)diff_lua, err, NULL), TIDE_OK);
	ck_assert_msg(tidei_script_protect(d.s, l_library_diff, &d, err, NULL) == TIDE_OK, "%s",
		      err);
	ck_assert_msg(d.fail[0] == '\0', "%s", d.fail);
	ck_assert_int_eq(d.ncases, (long)(sizeof library_cases / sizeof *library_cases));
	lua_close(d.ref);
	tidei_script_destroy(d.s);
	/* and unlike Lua's, they pay for their work */
	{
		limits lim = defaults;
		lim.budget = 100000;
		expect_failure(&lim, "local t = {} table.move(t, 1, 1e6, 2)", TIDEI_FAIL_BUDGET,
			       "instruction budget");
	}
}
END_TEST

/* Seconds per run of @p code in @p L (best of three). */
static double
time_chunk(lua_State *L, tidei_script *s, const char *code)
{
	double best = 1e9;
	char err[TIDEI_ERRLEN];

	for (int k = 0; k < 3; k++) {
		struct timespec a, b;
		double t;
		clock_gettime(CLOCK_MONOTONIC, &a);
		if (s != NULL)
			ck_assert_msg(tidei_script_protect(s, l_chunk, (void *)code, err, NULL) ==
					      TIDE_OK,
				      "%s", err);
		else
			ck_assert_int_eq(luaL_dostring(L, code), LUA_OK);
		clock_gettime(CLOCK_MONOTONIC, &b);
		t = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
		if (t < best)
			best = t;
	}
	return best;
}

/* Not a benchmark suite, a guard: the matcher must stay near Lua's speed
 * on ordinary patterns (the figures go to the test log). */
START_TEST(pattern_speed)
{
	static const struct {
		const char *what, *code;
	} runs[] = {
		{ "gmatch %a+ over 1 MiB",
		  "local n = 0 for w in text:gmatch('%a+') do n = n + 1 end assert(n > 1e5)" },
		{ "gsub %s+ over 1 MiB", "local r, n = text:gsub('%s+', ' ') assert(n > 1e5)" },
		{ "find of an absent word over 1 MiB",
		  "assert(not text:find('%f[%w]zebra%f[%W]'))" },
		{ "match per line, 20000 lines",
		  "local n = 0 for line in text:gmatch('[^\\n]+') do\n"
		  "  if line:match('^%s*(%w+)%s+(%w+)') then n = n + 1 end end assert(n > 1e4)" },
	};
	static const char setup[] =
		"local words = { 'lorem', 'ipsum', 'dolor', 'sit', 'amet,', 'consectetur',\n"
		"  'adipiscing', 'elit', 'sed', 'do', 'eiusmod', 'tempor' }\n"
		"local t = {} local i = 0 local n = 0\n"
		"while n < 1048576 do i = i + 1 local w = words[i % #words + 1]\n"
		"  t[#t + 1] = w n = n + #w + 1\n"
		"  if i % 9 == 0 then t[#t + 1] = '\\n' n = n + 1 end end\n"
		"text = table.concat(t, ' ')\n";
	tidei_script_opts so;
	tidei_script *s;
	lua_State *ref = luaL_newstate();
	char err[TIDEI_ERRLEN];

	memset(&so, 0, sizeof so);
	so.instruction_budget = 1000000000;
	ck_assert_int_eq(tidei_script_new(&s, &so, NULL, err), TIDE_OK);
	luaL_openlibs(ref);
	ck_assert_int_eq(luaL_dostring(ref, setup), LUA_OK);
	ck_assert_int_eq(tidei_script_protect(s, l_chunk, (void *)setup, err, NULL), TIDE_OK);
	for (size_t k = 0; k < sizeof runs / sizeof *runs; k++) {
		double lua = time_chunk(ref, NULL, runs[k].code);
		double tide = time_chunk(NULL, s, runs[k].code);
		fprintf(stderr, "pattern speed, %s: Lua %.2f ms, Tide %.2f ms (%.2fx)\n",
			runs[k].what, lua * 1e3, tide * 1e3, tide / lua);
		ck_assert_msg(tide < 5 * lua + 0.005, "%s: Lua %.2f ms, Tide %.2f ms", runs[k].what,
			      lua * 1e3, tide * 1e3);
	}
	lua_close(ref);
	tidei_script_destroy(s);
}
END_TEST

/* ------------------------------------------------------------------------
 * The engine: a consumer, a build on threads, a reload
 * ------------------------------------------------------------------------ */

#define EVIL "local x = ('a'):rep(40):find(('a*'):rep(40) .. 'b')"

static const char *
subpath(const char *dir, const char *name)
{
	static char p[4][700];
	static int slot;
	char *out = p[slot++ & 3];

	snprintf(out, 700, "%s/%s", dir, name);
	return out;
}

/* Publish one event over REP; it must be stored, within 10 s. */
static void
publish(const char *rep, const char *id, const char *data)
{
	char msg[1024], reply[1024];
	uint64_t seq;

	snprintf(msg, sizeof msg,
		 "{\"specversion\":\"1.0\",\"id\":\"%s\",\"source\":\"/t\",\"type\":\"job\","
		 "\"subject\":\"s-%s\",\"data\":%s}",
		 id, id, data);
	ck_assert_msg(th_req(rep, msg, reply, sizeof reply, 10000) > 0, "no answer to %s", id);
	ck_assert_msg(th_ack_parse(reply, &seq) == TH_ACK_STORED, "%s -> %s", id, reply);
}

typedef struct dl_found {
	char error[1024];
	int n;
} dl_found;

static int
dl_one(void *ud, const tide_dead_letter *dl)
{
	dl_found *f = ud;

	snprintf(f->error, sizeof f->error, "%s", dl->error);
	f->n++;
	return 0;
}

/* Wait (10 s) for the dead letter of @p consumer at @p seq; its error. */
static const char *
wait_dead_letter(const char *data, const char *consumer, uint64_t seq)
{
	static dl_found f;
	int64_t deadline = th_ms() + 10000;
	tide_log *log;

	do {
		memset(&f, 0, sizeof f);
		if (tide_log_open(&log, data) == TIDE_OK) {
			ck_assert_int_eq(tide_log_dead_letters(log, consumer, seq, dl_one, &f),
					 TIDE_OK);
			tide_log_close(log);
		}
		if (f.n > 0)
			return f.error;
		th_pause();
	} while (th_ms() < deadline);
	ck_abort_msg("no dead letter of %s at %llu", consumer, (unsigned long long)seq);
	return NULL;
}

/* SIGTERM: the daemon must exit 0 within 5 s. */
static void
stop_promptly(th_daemon *d)
{
	int64_t t0 = th_ms();
	int st = th_daemon_stop(d);

	ck_assert_int_eq(st, 0);
	ck_assert_msg(th_ms() - t0 < 5000, "SIGTERM took %lld ms", (long long)(th_ms() - t0));
}

START_TEST(daemon_consumer_with_a_runaway_pattern)
{
	const char *dir = th_tmpdir(), *data = subpath(dir, "data"), *script, *err;
	th_daemon d;

	script = th_write(dir, "s.lua",
			  "local tide = require 'tide'\n"
			  "tide.on('job', function(ev)\n"
			  "  if ev.data.evil then " EVIL " end -- EVIL\n"
			  "  tide.emit{ type = 'done', data = ev.id }\n"
			  "end, { name = 'worker', retries = 0 })\n");
	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s' --script '%s' --durability relaxed",
					 data, script),
			 0);
	/* acknowledged: the turn that runs the handler commits */
	publish(d.rep, "e1", "{\"evil\":true}");
	err = wait_dead_letter(data, "worker", 1);
	ck_assert_msg(strstr(err, "s.lua:3: handler exceeded its instruction budget"), "%s", err);
	/* the engine goes on */
	publish(d.rep, "g1", "{}");
	ck_assert_int_eq(th_wait_log(data, "--type done", 1, 10000), 1);
	stop_promptly(&d);
}
END_TEST

/* Events 1..n in @p data (event TBOOM evil), written by an engine without
 * scripts, 100 to a message. */
#define TEVENTS 3000
#define TBOOM 2000

static void
write_log(const char *data)
{
	int nmsg = TEVENTS / 100;
	char **msgs = calloc((size_t)nmsg, sizeof *msgs), **replies;
	th_daemon d;

	ck_assert_ptr_nonnull(msgs);
	replies = calloc((size_t)nmsg, sizeof *replies);
	ck_assert_ptr_nonnull(replies);
	for (int m = 0; m < nmsg; m++) {
		sbuf b = { 0 };
		for (int i = m * 100 + 1; i <= (m + 1) * 100; i++)
			sb_printf(
				&b,
				"{\"specversion\":\"1.0\",\"id\":\"t-%d\",\"source\":\"/t\","
				"\"type\":\"t.add\",\"subject\":\"s%d\",\"data\":{\"k\":\"k%02d\","
				"\"i\":%d%s}}\n",
				i, i % 7, i % 97, i, i == TBOOM ? ",\"evil\":true" : "");
		msgs[m] = sb_take(&b);
	}
	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s'", data), 0);
	ck_assert_uint_eq(th_req_many(d.rep, msgs, (size_t)nmsg, replies, 1, 60000), (size_t)nmsg);
	for (int m = 0; m < nmsg; m++) {
		ck_assert_msg(replies[m] && th_count(replies[m], "\"ok\":true") == 100, "%s",
			      replies[m] ? replies[m] : "(none)");
		free(msgs[m]);
		free(replies[m]);
	}
	free(msgs);
	free(replies);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
}

typedef struct pstate {
	const char *name;
	int found, building, faulted;
	uint64_t fault_seq;
	char error[512];
} pstate;

static void
proj_cb(void *ud, const tide_projection_info *pi)
{
	pstate *p = ud;

	if (strcmp(pi->name, p->name) != 0)
		return;
	p->found = 1;
	p->building = pi->building;
	p->faulted = pi->faulted;
	p->fault_seq = pi->fault_seq;
	snprintf(p->error, sizeof p->error, "%s", pi->error ? pi->error : "");
}

/* Wait (30 s) until projection @p name of @p data is stopped with
 * @p needle in its error. */
static pstate
wait_stopped(const char *data, const char *name, const char *needle)
{
	int64_t deadline = th_ms() + 30000;
	pstate p;
	tide_log *log;

	do {
		memset(&p, 0, sizeof p);
		p.name = name;
		if (tide_log_open(&log, data) == TIDE_OK) {
			ck_assert_int_eq(tide_log_projections(log, proj_cb, &p), TIDE_OK);
			tide_log_close(log);
		}
		if (p.faulted && strstr(p.error, needle) != NULL)
			return p;
		th_pause();
	} while (th_ms() < deadline);
	ck_abort_msg("projection '%s' not stopped by '%s' within 30 s (found %d, building %d, "
		     "stopped %d: %s)",
		     name, needle, p.found, p.building, p.faulted, p.error);
	return p;
}

static const char proj_lua[] = "local tide = require 'tide'\n"
			       "local IN_KEY = %s\n"
			       "tide.projection('sum', {\n"
			       "  version = %d,\n"
			       "  key = function(ev)\n"
			       "    if IN_KEY and ev.data.evil then " EVIL " end\n"
			       "    return ev.data.k end,\n"
			       "  on = { ['t.add'] = function(s, ev)\n"
			       "    if not IN_KEY and ev.data.evil then " EVIL " end\n"
			       "    s.n = (s.n or 0) + 1 s.sum = (s.sum or 0) + ev.data.i end },\n"
			       "})\n";

/* A projection handler (or key function) that runs away during a build
 * shared by threads: the threads stop, the engine meets the same failure
 * on its own, and the projection stops at that event with the error, with
 * the instruction budget and, with none, with the time limit (which the
 * threads get from the configuration too). */
START_TEST(daemon_projection_build_on_threads)
{
	const char *dir = th_tmpdir(), *data = subpath(dir, "data"), *script;
	char text[sizeof proj_lua + 16], *log;
	static const char *const extra[] = { "", "--set instruction_budget=0 --set time_limit=1s",
					     "" };
	static const char *const in_key[] = { "false", "false", "true" };
	static const char *const needle[] = { "handler exceeded its instruction budget",
					      "handler exceeded its time limit (1 s)",
					      "handler exceeded its instruction budget" };
	th_daemon d;
	pstate p;

	write_log(data);
	for (int v = 0; v < 3; v++) {
		snprintf(text, sizeof text, proj_lua, in_key[v], v + 1);
		script = th_write(dir, "p.lua", text);
		ck_assert_int_eq(
			th_daemon_spawn(&d, data,
					"--data '%s' --script '%s' --set build_threads=2 %s", data,
					script, extra[v]),
			0);
		p = wait_stopped(data, "sum", needle[v]);
		ck_assert_uint_eq(p.fault_seq, TBOOM);
		ck_assert_msg(strstr(p.error, needle[v]), "%s", p.error);
		stop_promptly(&d);
		log = th_slurp(d.log);
		ck_assert_ptr_nonnull(log);
		/* it was a shared build, and its threads stopped on the failure */
		HAS(log, "on 2 threads");
		HAS(log, "the build's threads stopped (event 2000: ");
		HAS(log, "projection 'sum' stopped at event 2000");
		free(log);
		unlink(d.log);
	}
}
END_TEST

/* A state that refers to one table many times: 2^60 values to write.
 * Writing each state has a handler's budget, so the projection stops with
 * the state it cannot store instead of the engine walking it for ever. */
START_TEST(daemon_projection_state_too_costly_to_store)
{
	const char *dir = th_tmpdir(), *data = subpath(dir, "data"), *script;
	pstate p;
	th_daemon d;

	script = th_write(dir, "p.lua",
			  "local tide = require 'tide'\n"
			  "tide.projection('dag', {\n"
			  "  on = { job = function(s, ev)\n"
			  "    if ev.data.dag then local t = {} for i = 1, 60 do t = { t, t } end "
			  "s.t = t end\n"
			  "    s.n = (s.n or 0) + 1 end },\n"
			  "})\n");
	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s' --script '%s' --durability relaxed",
					 data, script),
			 0);
	publish(d.rep, "a1", "{}");
	publish(d.rep, "a2", "{\"dag\":true}");
	p = wait_stopped(data, "dag", "cannot be stored: the instruction budget ran out");
	ck_assert_uint_eq(p.fault_seq, 2);
	publish(d.rep, "a3", "{}"); /* the engine goes on */
	stop_promptly(&d);
}
END_TEST

static const char gc_lua[] =
	"local tide = require 'tide'\n"
	"local ok, err = pcall(setmetatable, {}, { __gc = function() while true do end end })\n"
	"print('top level: ' .. tostring(err))\n"
	"tide.on('job', function(ev)\n"
	"  if ev.data.gc then\n"
	"    keep = setmetatable({}, { __gc = function() while true do end end })\n"
	"  end\n"
	"  tide.emit{ type = 'done', data = ev.id }\n"
	"end, { name = 'worker', retries = 0 })\n"
	"print('loaded %s')\n";

/* A handler trying to leave a finalizer behind: refused, so neither the
 * collector nor the reload's lua_close of the old state runs it. */
START_TEST(daemon_finalizer_and_reload)
{
	const char *dir = th_tmpdir(), *data = subpath(dir, "data"), *err;
	char text[sizeof gc_lua + 16];
	th_daemon d;

	snprintf(text, sizeof text, gc_lua, "v1");
	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s' --script '%s' --durability relaxed",
					 data, th_write(dir, "s.lua", text)),
			 0);
	ck_assert(th_wait_file(d.log, "loaded v1", 10000));
	ck_assert(th_wait_file(d.log,
			       "top level: setmetatable: a metatable with a __gc field is not "
			       "allowed",
			       1000));
	publish(d.rep, "e1", "{\"gc\":true}");
	err = wait_dead_letter(data, "worker", 1);
	ck_assert_msg(strstr(err, "s.lua:6: setmetatable: a metatable with a __gc field is not "
				  "allowed"),
		      "%s", err);
	publish(d.rep, "e2", "{}");
	ck_assert_int_eq(th_wait_log(data, "--type done", 1, 10000), 1);
	/* a reload closes the old state */
	snprintf(text, sizeof text, gc_lua, "v2");
	th_write(dir, "s.lua", text);
	ck_assert_int_eq(kill(d.pid, SIGHUP), 0);
	ck_assert(th_wait_file(d.log, "scripts reloaded", 10000));
	ck_assert(th_wait_file(d.log, "loaded v2", 1000));
	publish(d.rep, "e3", "{}");
	ck_assert_int_eq(th_wait_log(data, "--type done", 2, 10000), 2);
	stop_promptly(&d);
}
END_TEST

Suite *
sandbox_suite(void)
{
	Suite *s = suite_create("sandbox");
	TCase *tc;

	tc = tcase_create("library_work_is_bounded");
	tcase_add_loop_test(tc, library_work_is_bounded, 0, (int)(sizeof hangs / sizeof *hangs));
	tcase_add_test(tc, results_of_bounded_functions);
	suite_add_tcase(s, tc);

	tc = tcase_create("failures_cannot_be_swallowed");
	tcase_add_loop_test(tc, failures_cannot_be_swallowed, 0,
			    (int)(sizeof swallowed / sizeof *swallowed));
	tcase_add_test(tc, ordinary_errors_are_still_caught);
	tcase_add_test(tc, failure_kinds_and_memory);
	tcase_add_test(tc, host_work_at_the_ceiling);
	suite_add_tcase(s, tc);

	tc = tcase_create("finalizers_and_collector");
	tcase_add_test(tc, no_finalizers);
	tcase_add_test(tc, modules_are_regular_files);
	tcase_add_test(tc, collector_options);
	suite_add_tcase(s, tc);

	tc = tcase_create("json_and_memory");
	tcase_add_test(tc, json_encode_stays_within_the_ceiling);
	suite_add_tcase(s, tc);

	tc = tcase_create("config_file");
	tcase_add_test(tc, config_file_is_bounded);
	tcase_add_test(tc, time_limit_setting);
	suite_add_tcase(s, tc);

	tc = tcase_create("patterns");
	tcase_add_test(tc, patterns_match_lua);
	tcase_add_test(tc, library_matches_lua);
	tcase_add_test(tc, pattern_speed);
	tcase_set_timeout(tc, 300);
	suite_add_tcase(s, tc);

	tc = tcase_create("daemon");
	tcase_add_test(tc, daemon_consumer_with_a_runaway_pattern);
	tcase_add_test(tc, daemon_projection_build_on_threads);
	tcase_add_test(tc, daemon_projection_state_too_costly_to_store);
	tcase_add_test(tc, daemon_finalizer_and_reload);
	tcase_set_timeout(tc, 180);
	suite_add_tcase(s, tc);
	return s;
}
