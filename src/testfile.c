/*
 * testfile.c - tide_test_lua(): test files written in Lua.
 *
 *   test("six payments in ten minutes raise one alert", function(t)
 *     for i = 1, 6 do
 *       t:send{ type = "card.transaction", subject = "c1",
 *               time = t.at("2026-01-01T10:00:00Z", 60 * i),
 *               data = { amount = 20 } }
 *     end
 *     t:expect({ { type = "fraud.alert", data = { rule = "velocity" } } },
 *              "fraud.*")
 *     t:eq(t:rule("fraud.velocity", "c1"), { alerted = true })
 *   end)
 *
 * The file runs in a Lua state of its own (not the scripts' sandbox: it is
 * the author's code, like a Makefile), with the standard libraries and
 * `test`.  Each case gets a fresh `t`; what it sends is run through the
 * scripts by tide_backtest(), on a scratch log of its own, when it first
 * asks what came out (or calls t:run()), and again when it sent more.
 * The helpers are written in Lua below; this file adds the run itself,
 * JSON, and RFC 3339 times.
 */
#include "config.h"

#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "err.h"
#include "event.h"
#include "json.h"
#include "l_event.h"
#include "tide.h"
#include "val.h"

/* What a test file sees besides its own code.  `run`, `json`, `tparse`
 * and `tformat` are this file's C functions. */
static const char prelude[] =
	"local run, json, tparse, tformat, report = ...\n"
	"local cases = {}\n"
	"local getinfo = debug.getinfo\n"
	"-- an error where the test file called in\n"
	"local function fail(msg)\n"
	"  local level = 2\n"
	"  while true do\n"
	"    local info = getinfo(level, 'Sl')\n"
	"    if info == nil then error(msg, 0) end\n"
	"    if info.source ~= '=tide test' and info.what ~= 'C' then\n"
	"      error(info.short_src .. ':' .. info.currentline .. ': ' .. msg, 0)\n"
	"    end\n"
	"    level = level + 1\n"
	"  end\n"
	"end\n"
	"function test(name, fn)\n"
	"  if type(name) ~= 'string' or type(fn) ~= 'function' then\n"
	"    error('test(name, function(t) ... end)', 2)\n"
	"  end\n"
	"  cases[#cases + 1] = { name = name, fn = fn }\n"
	"end\n"
	"local function show(v, depth)\n"
	"  depth = depth or 0\n"
	"  if type(v) == 'string' then return string.format('%q', v) end\n"
	"  if type(v) ~= 'table' then return tostring(v) end\n"
	"  if depth > 3 then return '{...}' end\n"
	"  local parts = {}\n"
	"  if #v > 0 then\n"
	"    for i = 1, #v do parts[i] = show(v[i], depth + 1) end\n"
	"    return '[' .. table.concat(parts, ',') .. ']'\n"
	"  end\n"
	"  local keys = {}\n"
	"  for k in pairs(v) do keys[#keys + 1] = k end\n"
	"  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)\n"
	"  for _, k in ipairs(keys) do\n"
	"    parts[#parts + 1] = tostring(k) .. '=' .. show(v[k], depth + 1)\n"
	"  end\n"
	"  return '{' .. table.concat(parts, ',') .. '}'\n"
	"end\n"
	"local function at(path, k)\n"
	"  if math.type(k) == 'integer' then return path .. '[' .. k .. ']' end\n"
	"  return path == '' and tostring(k) or path .. '.' .. tostring(k)\n"
	"end\n"
	"-- the first difference: 'path: expected X, got Y', or nil; partial:\n"
	"-- only the members want has\n"
	"local function diff(got, want, path, partial)\n"
	"  if type(got) == 'table' and type(want) == 'table' then\n"
	"    for k, w in pairs(want) do\n"
	"      local d = diff(got[k], w, at(path, k), partial)\n"
	"      if d then return d end\n"
	"    end\n"
	"    if not partial then\n"
	"      for k, g in pairs(got) do\n"
	"        if want[k] == nil then\n"
	"          return at(path, k) .. ': not expected, got ' .. show(g)\n"
	"        end\n"
	"      end\n"
	"    end\n"
	"    return nil\n"
	"  end\n"
	"  if got == want then return nil end\n"
	"  return (path == '' and 'value' or path) .. ': expected ' .. show(want)\n"
	"    .. ', got ' .. show(got)\n"
	"end\n"
	"local function glob(p)\n"
	"  return '^' .. p:gsub('[%^%$%(%)%%%.%[%]%+%-%?]', '%%%0'):gsub('%*', '.*') .. '$'\n"
	"end\n"
	"local T = {}\n"
	"T.__index = T\n"
	"-- t.at(base, seconds): the RFC 3339 time @seconds after @base\n"
	"function T.at(a, b, c)\n"
	"  if getmetatable(a) == T then a, b = b, c end\n"
	"  local base = type(a) == 'number' and math.floor(a * 1e9 + 0.5) or tparse(a)\n"
	"  return tformat(base + math.floor((b or 0) * 1e9 + 0.5))\n"
	"end\n"
	"-- t.time(text): seconds since the epoch\n"
	"function T.time(a, b)\n"
	"  if getmetatable(a) == T then a = b end\n"
	"  return tparse(a) / 1e9\n"
	"end\n"
	"function T:send(ev)\n"
	"  if type(ev) ~= 'table' then fail('t:send(event): the event is a table') end\n"
	"  if ev.type == nil then fail('t:send(event): the event has no type') end\n"
	"  local e = {}\n"
	"  for k, v in pairs(ev) do e[k] = v end\n"
	"  self.n = self.n + 1\n"
	"  e.specversion = e.specversion or '1.0'\n"
	"  e.id = e.id or ('t-' .. self.n)\n"
	"  e.source = e.source or '/test'\n"
	"  if type(e.time) == 'number' then e.time = T.at(e.time) end\n"
	"  self.lines[#self.lines + 1] = json(e)\n"
	"  self.dirty = true\n"
	"  return e.id\n"
	"end\n"
	"function T:set(name, value)\n"
	"  self.sets[#self.sets + 1] = tostring(name) .. '=' .. tostring(value)\n"
	"  self.dirty = true\n"
	"end\n"
	"function T:run()\n"
	"  local ok, emits, states, rules = pcall(run, table.concat(self.lines, '\\n'), "
	"self.sets)\n"
	"  if not ok then fail(emits) end\n"
	"  self.emits, self.states, self.rules, self.dirty = emits, states, rules, false\n"
	"  return emits\n"
	"end\n"
	"local function fresh(self)\n"
	"  if self.dirty or self.emits == nil then T.run(self) end\n"
	"end\n"
	"function T:emitted(pattern)\n"
	"  fresh(self)\n"
	"  if pattern == nil then return self.emits end\n"
	"  local out, p = {}, glob(pattern)\n"
	"  for _, e in ipairs(self.emits) do\n"
	"    if e.type:match(p) then out[#out + 1] = e end\n"
	"  end\n"
	"  return out\n"
	"end\n"
	"function T:state(projection, key)\n"
	"  fresh(self)\n"
	"  local p = self.states[projection]\n"
	"  return p and p[key]\n"
	"end\n"
	"function T:rule(rule, key)\n"
	"  fresh(self)\n"
	"  local r = self.rules[rule]\n"
	"  return r and r[key]\n"
	"end\n"
	"function T:eq(got, want, what)\n"
	"  local d = diff(got, want, '', false)\n"
	"  if d then fail((what and what .. ': ' or '') .. d) end\n"
	"end\n"
	"function T:has(got, want, what)\n"
	"  local d = diff(got, want, '', true)\n"
	"  if d then fail((what and what .. ': ' or '') .. d) end\n"
	"end\n"
	"function T:ok(v, what)\n"
	"  if not v then fail(what or 'not true') end\n"
	"  return v\n"
	"end\n"
	"-- the events emitted (of types @pattern) are @want's, in order: each\n"
	"-- member an expectation names is compared whole\n"
	"function T:expect(want, pattern)\n"
	"  if type(want) ~= 'table' then fail('t:expect({event, ...}, [pattern])') end\n"
	"  local got = self:emitted(pattern)\n"
	"  for i = 1, math.max(#got, #want) do\n"
	"    if got[i] == nil then\n"
	"      fail(string.format('emitted %d events, %d expected; the first missing: %s',\n"
	"        #got, #want, show(want[i])))\n"
	"    elseif want[i] == nil then\n"
	"      fail(string.format('emitted %d events, %d expected; the first unexpected: %s',\n"
	"        #got, #want, show({ type = got[i].type, subject = got[i].subject,\n"
	"          data = got[i].data })))\n"
	"    end\n"
	"    for k, w in pairs(want[i]) do\n"
	"      local d = diff(got[i][k], w, tostring(k), false)\n"
	"      if d then fail(string.format('event %d: %s', i, d)) end\n"
	"    end\n"
	"  end\n"
	"end\n"
	"return function()\n"
	"  for _, c in ipairs(cases) do\n"
	"    local t = setmetatable({ n = 0, lines = {}, sets = {}, dirty = true }, T)\n"
	"    local ok, err = pcall(c.fn, t)\n"
	"    if ok and t.dirty and #t.lines > 0 then ok, err = pcall(T.run, t) end\n"
	"    report(c.name, ok, ok and nil or tostring(err), t.emits and #t.emits or 0)\n"
	"  end\n"
	"  return #cases\n"
	"end\n";

typedef struct runner {
	const tide_test_opts *o;
	tide_test_fn *fn;
	void *ud;
} runner;

/* What one run gave, collected during tide_backtest() and made Lua
 * tables after it (a Lua error must not cross the backtest). */
typedef struct item {
	int kind; /* TIDE_BACKTEST_EMIT, _STATE or _RULE */
	char *name, *key, *json;
} item;

typedef struct items {
	item *v;
	size_t n, cap;
	int failed;
} items;

static void
collect(void *ud, const tide_backtest_item *it)
{
	items *c = ud;
	const char *json;
	size_t len;
	item *x;

	if (it->kind != TIDE_BACKTEST_EMIT && it->kind != TIDE_BACKTEST_STATE &&
	    it->kind != TIDE_BACKTEST_RULE)
		return;
	if (tidei_array_grow(&c->v, &c->cap, c->n, sizeof *c->v, 64) != 0) {
		c->failed = 1;
		return;
	}
	x = &c->v[c->n];
	memset(x, 0, sizeof *x);
	x->kind = it->kind;
	if (it->kind == TIDE_BACKTEST_EMIT) {
		if (tide_event_json(it->ev, &json, &len) != TIDE_OK ||
		    (x->json = strndup(json, len)) == NULL)
			c->failed = 1;
	} else if ((x->name = strdup(it->consumer)) == NULL ||
		   (x->key = strdup(it->type)) == NULL ||
		   (x->json = strndup(it->json, it->len)) == NULL) {
		c->failed = 1;
	}
	if (x->json != NULL)
		c->n++;
	else {
		free(x->name);
		free(x->key);
	}
}

static void
items_free(items *c)
{
	for (size_t i = 0; i < c->n; i++) {
		free(c->v[i].name);
		free(c->v[i].key);
		free(c->v[i].json);
	}
	free(c->v);
}

/* JSON text as a Lua value.  [-0, +1, e] */
static void
push_json(lua_State *L, const char *json, tidei_buf *scratch)
{
	char err[TIDEI_ERRLEN];
	tidei_vreader rd;

	tidei_buf_reset(scratch);
	if (tidei_json_decode(json, strlen(json), scratch, err) != 0) {
		lua_pushnil(L);
		return;
	}
	rd.p = scratch->p;
	rd.end = scratch->p + scratch->len;
	if (tidei_lua_push_val(L, &rd) != 0)
		lua_pushnil(L);
}

/* The temporary file the events go through. */
static int
write_events(char *path, size_t n, const char *text, size_t len, char *err)
{
	const char *tmp = getenv("TMPDIR");
	FILE *f;
	int fd;

	/* mkstemp() replaces the six X */
	snprintf(path, n, "%s/tide-test-XXXXXX", tmp != NULL && tmp[0] ? tmp : "/tmp");
	if ((fd = mkstemp(path)) < 0 || (f = fdopen(fd, "w")) == NULL) {
		snprintf(err, TIDEI_ERRLEN, "cannot make a file for the events in %s: %s",
			 tmp != NULL && tmp[0] ? tmp : "/tmp", strerror(errno));
		if (fd >= 0) {
			close(fd);
			unlink(path);
		}
		return -1;
	}
	if (fwrite(text, 1, len, f) != len || fputc('\n', f) == EOF || fclose(f) != 0) {
		snprintf(err, TIDEI_ERRLEN, "cannot write the events: %s", strerror(errno));
		unlink(path);
		return -1;
	}
	return 0;
}

/* run(ndjson, sets) -> emits, states, rules: the scripts over the events,
 * from scratch.  [-2, +3, e] */
static int
l_run(lua_State *L)
{
	runner *r = lua_touserdata(L, lua_upvalueindex(1));
	size_t len, nsets = 0, ng = 0;
	const char *text = luaL_checklstring(L, 1, &len);
	tide_backtest_opts bo;
	items c = { 0 };
	tidei_buf scratch = { 0 };
	const char **sets;
	char path[4200], err[TIDEI_ERRLEN];
	int rc;

	luaL_checktype(L, 2, LUA_TTABLE);
	while (r->o->sets != NULL && r->o->sets[ng] != NULL)
		ng++;
	nsets = ng + (size_t)luaL_len(L, 2);
	sets = lua_newuserdatauv(L, (nsets + 1) * sizeof *sets, 0);
	for (size_t i = 0; i < ng; i++)
		sets[i] = r->o->sets[i];
	for (size_t i = ng; i < nsets; i++) {
		lua_geti(L, 2, (lua_Integer)(i - ng + 1));
		sets[i] = luaL_checkstring(L, -1); /* stays: the table holds it */
		lua_pop(L, 1);
	}
	sets[nsets] = NULL;
	if (write_events(path, sizeof path, text, len, err) != 0)
		return luaL_error(L, "%s", err);
	memset(&bo, 0, sizeof bo);
	bo.scripts = r->o->scripts;
	bo.sets = sets;
	bo.input = path;
	rc = tide_backtest(&bo, collect, &c);
	unlink(path);
	if (rc != TIDE_OK || c.failed) {
		snprintf(err, sizeof err, "the scripts could not run: %s",
			 rc != TIDE_OK ? tide_errmsg() : "out of memory");
		items_free(&c);
		return luaL_error(L, "%s", err);
	}
	/* emits, states, rules */
	lua_createtable(L, 0, 0);
	lua_createtable(L, 0, 0);
	lua_createtable(L, 0, 0);
	for (size_t i = 0; i < c.n; i++) {
		const item *x = &c.v[i];
		if (x->kind == TIDE_BACKTEST_EMIT) {
			push_json(L, x->json, &scratch);
			lua_rawseti(L, -4, (lua_Integer)luaL_len(L, -4) + 1);
			continue;
		}
		/* states[name][key] = state */
		int t = x->kind == TIDE_BACKTEST_STATE ? -2 : -1;
		if (lua_getfield(L, t, x->name) != LUA_TTABLE) {
			lua_pop(L, 1);
			lua_createtable(L, 0, 0);
			lua_pushvalue(L, -1);
			lua_setfield(L, t - 2, x->name);
		}
		push_json(L, x->json, &scratch);
		lua_setfield(L, -2, x->key);
		lua_pop(L, 1);
	}
	tidei_buf_free(&scratch);
	items_free(&c);
	return 3;
}

/* json(value) -> text.  [-1, +1, e] */
static int
l_json(lua_State *L)
{
	tidei_buf v = { 0 }, out = { 0 };
	tidei_vreader rd;
	char err[TIDEI_ERRLEN];

	if (tidei_lua_to_val(L, 1, &v, err) != 0) {
		tidei_buf_free(&v);
		return luaL_error(L, "t:send: %s", err);
	}
	rd.p = v.p;
	rd.end = v.p + v.len;
	if (tidei_json_encode(&out, &rd) != 0 || out.failed) {
		tidei_buf_free(&v);
		tidei_buf_free(&out);
		return luaL_error(L, "t:send: the event cannot be written as JSON");
	}
	lua_pushlstring(L, (const char *)out.p, out.len);
	tidei_buf_free(&v);
	tidei_buf_free(&out);
	return 1;
}

/* tparse(text) -> ns since the epoch.  [-1, +1, e] */
static int
l_tparse(lua_State *L)
{
	size_t n;
	const char *s = luaL_checklstring(L, 1, &n);
	int64_t ns;

	if (tidei_time_parse(s, n, &ns) != 0)
		return luaL_error(L, "'%s' is not an RFC 3339 time", s);
	lua_pushinteger(L, (lua_Integer)ns);
	return 1;
}

/* tformat(ns) -> RFC 3339 UTC text.  [-1, +1, e] */
static int
l_tformat(lua_State *L)
{
	char out[64];
	int n = tidei_time_format(out, (int64_t)luaL_checkinteger(L, 1));

	lua_pushlstring(L, out, (size_t)n);
	return 1;
}

/* report(name, passed, message, emitted).  [-4, +0, -] */
static int
l_report(lua_State *L)
{
	runner *r = lua_touserdata(L, lua_upvalueindex(1));
	tide_test_result res;

	res.name = luaL_checkstring(L, 1);
	res.passed = lua_toboolean(L, 2);
	res.message = lua_tostring(L, 3);
	res.emitted = (uint64_t)luaL_optinteger(L, 4, 0);
	r->fn(r->ud, &res);
	return 0;
}

/* Load the prelude and the file, then run the cases.  [-0, +0, e] */
static int
run_file(lua_State *L)
{
	runner *r = lua_touserdata(L, 1);
	lua_CFunction fns[] = { l_run, l_json, l_tparse, l_tformat, l_report };

	luaL_openlibs(L);
	if (luaL_loadbuffer(L, prelude, sizeof prelude - 1, "=tide test") != LUA_OK)
		return lua_error(L);
	for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
		lua_pushlightuserdata(L, r);
		lua_pushcclosure(L, fns[i], 1);
	}
	lua_call(L, 5, 1); /* the runner of the cases */
	if (luaL_loadfile(L, r->o->file) != LUA_OK)
		return lua_error(L);
	lua_call(L, 0, 0); /* declares the cases */
	lua_call(L, 0, 1);
	if (lua_tointeger(L, -1) == 0)
		return luaL_error(L, "%s declares no test(name, function(t) ... end)", r->o->file);
	return 0;
}

TIDE_API int
tide_test_lua(const tide_test_opts *o, tide_test_fn *fn, void *ud)
{
	runner r = { o, fn, ud };
	lua_State *L;
	int rc = TIDE_OK;

	if (o == NULL || fn == NULL || o->file == NULL || o->scripts == NULL ||
	    o->scripts[0] == NULL)
		return tidei_fail(TIDE_EINVAL, "tide_test_lua: a file, scripts and a callback are "
					       "needed");
	if ((L = luaL_newstate()) == NULL)
		return tidei_fail(TIDE_ENOMEM, "out of memory");
	lua_pushcfunction(L, run_file);
	lua_pushlightuserdata(L, &r);
	if (lua_pcall(L, 1, 0, 0) != LUA_OK)
		rc = tidei_fail(TIDE_ESCRIPT, "%s",
				lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
	lua_close(L);
	return rc;
}
