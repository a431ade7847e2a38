/*
 * script.c - the lua_State that runs user scripts.
 *
 * Owns the state's lifecycle and its sandbox: only safe libraries are
 * opened into its globals (so modules loaded by require() are as confined
 * as scripts), the standard library's C functions whose work is not
 * bounded by memory are replaced by bounded ones (l_stdlib.c, l_pattern.c),
 * and pcall, xpcall and the coroutine functions pass on a failure that
 * must not be swallowed.  It runs protected calls whose errors come back
 * as "file:line: message" plus a traceback.  The limits themselves (the
 * memory ceiling, the instruction budget and the time limit) live in
 * lstate.c, where the bindings reach them too.  It knows nothing about
 * consumers or the log: what scripts may do to the engine goes through
 * the tidei_host callbacks, reached by the `tide` module (l_tide.c).
 *
 * A call that runs out of budget, time or memory has failed, whatever the
 * script does next: pcall, xpcall, coroutine.resume, coroutine.wrap and
 * coroutine.close pass the failure on instead of returning it.
 * Otherwise a handler could catch its own limit and carry on, or a memory
 * error caught in one handler would surface in an innocent one.
 */
#include "config.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "l_event.h"
#include "l_pattern.h"
#include "l_stdlib.h"
#include "l_tide.h"
#include "script.h"

struct tidei_script {
	tidei_lstate ls; /* the state and its limits */
};

/* Message handler: keep the message, add a traceback after a newline. */
static int
msgh(lua_State *L)
{
	const char *msg = lua_tostring(L, 1);

	if (msg == NULL) {
		if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
			msg = lua_tostring(L, -1);
		else
			msg = lua_pushfstring(L, "(error object is a %s value)",
					      luaL_typename(L, 1));
	}
	luaL_traceback(L, L, msg, 1);
	return 1;
}

/* ------------------------------------------------------------------------
 * Sandboxed library
 * ------------------------------------------------------------------------ */

/* load() without binary chunks: precompiled bytecode can break the VM. */
static int
l_load_text(lua_State *L)
{
	int env = !lua_isnone(L, 4);
	int status;
	size_t len;
	const char *chunk = lua_tolstring(L, 1, &len);
	const char *name = luaL_optstring(L, 2, chunk ? chunk : "=(load)");

	luaL_argcheck(L, chunk != NULL, 1,
		      "string expected (functions as chunk readers are not allowed)");
	/* parsing code costs an instruction's worth per byte or two; what
	 * it builds is bounded by the memory ceiling */
	tidei_lstate_charge(L, len / 2 + 1);
	status = luaL_loadbufferx(L, chunk, len, name, "t");
	if (status != LUA_OK) {
		luaL_pushfail(L);
		lua_insert(L, -2);
		return 2;
	}
	if (env) {
		lua_pushvalue(L, 4);
		if (!lua_setupvalue(L, -2, 1))
			lua_pop(L, 1);
	}
	return 1;
}

/* Whether the call has failed for good after a protected call or a resume
 * ended with @p status: a memory error is a failure like the limits. */
static int
failed(lua_State *L, int status)
{
	return tidei_lstate_failed(L, status);
}

/* pcall/xpcall that let a limit or memory error through: otherwise a
 * handler could catch it and loop forever, or carry on with the memory it
 * took from the others. */
static int
finish_pcall(lua_State *L, int status, lua_KContext extra)
{
	if (failed(L, status))
		return lua_error(L);
	if (status != LUA_OK && status != LUA_YIELD) {
		lua_pushboolean(L, 0);
		lua_pushvalue(L, -2);
		return 2;
	}
	return lua_gettop(L) - (int)extra;
}

static int
l_pcall(lua_State *L)
{
	int status;

	luaL_checkany(L, 1);
	lua_pushboolean(L, 1);
	lua_insert(L, 1);
	status = lua_pcallk(L, lua_gettop(L) - 2, LUA_MULTRET, 0, 0, finish_pcall);
	return finish_pcall(L, status, 0);
}

/* The message handler given to xpcall, guarded: a budget error runs the
 * handler inside the count hook, where hooks are off, so a looping handler
 * could never be stopped.  It is skipped once the call has failed. */
static int
guarded_msgh(lua_State *L)
{
	if (tidei_lstate_of(L)->failure != TIDEI_FAIL_NONE)
		return 1; /* the error object, unchanged */
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_insert(L, 1);
	lua_call(L, lua_gettop(L) - 1, 1);
	return 1;
}

static int
l_xpcall(lua_State *L)
{
	int status;
	int n = lua_gettop(L);

	luaL_checktype(L, 2, LUA_TFUNCTION);
	lua_pushvalue(L, 2);
	lua_pushcclosure(L, guarded_msgh, 1);
	lua_replace(L, 2);
	lua_pushboolean(L, 1);
	lua_pushvalue(L, 1);
	lua_rotate(L, 3, 2);
	status = lua_pcallk(L, n - 2, LUA_MULTRET, 2, 2, finish_pcall);
	return finish_pcall(L, status, 2);
}

/* ------------------------------------------------------------------------
 * Coroutines: resume, wrap and close that pass failures on
 *
 * A limit or memory error inside a coroutine kills the coroutine, and
 * Lua's resume hands it back as `false, message`: a handler could ignore
 * it.  These raise it in the resumer instead; ordinary errors behave as in
 * Lua.  They also keep track of the running thread, which a large
 * allocation asks to run its hook early.
 * ------------------------------------------------------------------------ */

static lua_State *
check_co(lua_State *L, int idx)
{
	lua_State *co = lua_tothread(L, idx);

	luaL_argexpected(L, co != NULL, idx, "thread");
	return co;
}

/* Resume @p co with the @p nargs values on top of L.  Returns how many
 * results it moved onto L, or -1 with an error object on top of L; *st
 * gets lua_resume's status.  (lua_resume itself refuses dead and running
 * coroutines.) */
static int
resume(lua_State *L, lua_State *co, int nargs, int *st)
{
	tidei_lstate *s = tidei_lstate_of(L);
	lua_State *prev = s->running;
	int nres;

	*st = LUA_ERRRUN;
	if (!lua_checkstack(co, nargs)) {
		lua_pushliteral(L, "too many arguments to resume");
		return -1;
	}
	lua_xmove(L, co, nargs);
	s->running = co;
	*st = lua_resume(co, L, nargs, &nres);
	s->running = prev;
	if (*st == LUA_OK || *st == LUA_YIELD) {
		if (!lua_checkstack(L, nres + 1)) {
			lua_pop(co, nres);
			lua_pushliteral(L, "too many results to resume");
			return -1;
		}
		lua_xmove(co, L, nres);
		return nres;
	}
	lua_xmove(co, L, 1);
	return -1;
}

/* Close @p co's pending to-be-closed variables (their __close handlers
 * run in it); lua_resetthread's status, an error object on co if not OK. */
static int
reset(lua_State *L, lua_State *co)
{
	tidei_lstate *s = tidei_lstate_of(L);
	lua_State *prev = s->running;
	int st;

	s->running = co;
	st = lua_resetthread(co);
	s->running = prev;
	return st;
}

/* coroutine.resume(co, ...) -> true, ... | false, message  [-(n+1), +r, e] */
static int
l_co_resume(lua_State *L)
{
	lua_State *co = check_co(L, 1);
	int st, r = resume(L, co, lua_gettop(L) - 1, &st);

	if (r < 0) {
		if (failed(L, st))
			return lua_error(L);
		lua_pushboolean(L, 0);
		lua_insert(L, -2);
		return 2;
	}
	lua_pushboolean(L, 1);
	lua_insert(L, -(r + 1));
	return r + 1;
}

/* The function made by coroutine.wrap: errors propagate, as in Lua, with
 * the caller's position added to a string message.  [-n, +r, e] */
static int
co_wrapped(lua_State *L)
{
	lua_State *co = lua_tothread(L, lua_upvalueindex(1));
	int st, r = resume(L, co, lua_gettop(L), &st);

	if (r >= 0)
		return r;
	st = lua_status(co);
	if (st != LUA_OK && st != LUA_YIELD) { /* it failed (rather than refused) */
		st = reset(L, co);
		lua_xmove(co, L, 1); /* the error after closing its variables */
	}
	if (failed(L, st))
		return lua_error(L);
	if (st != LUA_ERRMEM && lua_type(L, -1) == LUA_TSTRING) {
		luaL_where(L, 1);
		lua_insert(L, -2);
		lua_concat(L, 2);
	}
	return lua_error(L);
}

/* coroutine.wrap(f) -> function  [-1, +1, m] */
static int
l_co_wrap(lua_State *L)
{
	lua_State *co;

	luaL_checktype(L, 1, LUA_TFUNCTION);
	co = lua_newthread(L);
	lua_pushvalue(L, 1);
	lua_xmove(L, co, 1);
	lua_pushcclosure(L, co_wrapped, 1);
	return 1;
}

/* coroutine.close(co) -> true | false, message  [-1, +(1|2), e] */
static int
l_co_close(lua_State *L)
{
	lua_State *co = check_co(L, 1);
	lua_Debug ar;
	int st = lua_status(co);

	/* suspended (yielded, or not started) and dead coroutines may close */
	if (co == L || (st == LUA_OK && lua_getstack(co, 0, &ar)))
		return luaL_error(L, "cannot close a %s coroutine", co == L ? "running" : "normal");
	st = reset(L, co);
	if (st == LUA_OK) {
		lua_pushboolean(L, 1);
		return 1;
	}
	lua_xmove(co, L, 1);
	if (failed(L, st))
		return lua_error(L);
	lua_pushboolean(L, 0);
	lua_insert(L, -2);
	return 2;
}

static int
l_print(lua_State *L)
{
	tidei_lstate *s = tidei_lstate_of(L);
	luaL_Buffer b;
	int n = lua_gettop(L);

	luaL_buffinit(L, &b);
	for (int i = 1; i <= n; i++) {
		if (i > 1)
			luaL_addchar(&b, '\t');
		luaL_tolstring(L, i, NULL);
		luaL_addvalue(&b);
	}
	luaL_pushresult(&b);
	if (s->host.log != NULL)
		s->host.log(s->host.ud, TIDE_LOG_INFO, lua_tostring(L, -1));
	return 0;
}

static int
is_allowed(const tidei_script_opts *o, const char *name)
{
	for (const char *const *a = o->allow; a && *a; a++)
		if (strcmp(*a, name) == 0)
			return 1;
	return 0;
}

static void
open_sandbox(lua_State *L, const tidei_script_opts *o)
{
	static const char *const os_safe[] = { "clock", "date", "difftime", "time", NULL };

	luaL_requiref(L, LUA_GNAME, luaopen_base, 1);
	luaL_requiref(L, LUA_LOADLIBNAME, luaopen_package, 1);
	luaL_requiref(L, LUA_COLIBNAME, luaopen_coroutine, 1);
	luaL_requiref(L, LUA_TABLIBNAME, luaopen_table, 1);
	luaL_requiref(L, LUA_STRLIBNAME, luaopen_string, 1);
	luaL_requiref(L, LUA_MATHLIBNAME, luaopen_math, 1);
	luaL_requiref(L, LUA_UTF8LIBNAME, luaopen_utf8, 1);
	lua_settop(L, 0);

	/* os: time functions only, unless the configuration allows all of it */
	luaL_requiref(L, LUA_OSLIBNAME, luaopen_os, 1);
	if (!is_allowed(o, "os")) {
		/* replace both the global and package.loaded.os, or require("os")
		 * would hand out the whole library */
		lua_newtable(L);
		for (const char *const *f = os_safe; *f; f++) {
			lua_getfield(L, 1, *f);
			lua_setfield(L, -2, *f);
		}
		lua_pushvalue(L, -1);
		lua_setglobal(L, LUA_OSLIBNAME);
		luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
		lua_insert(L, -2);
		lua_setfield(L, -2, LUA_OSLIBNAME);
	}
	lua_settop(L, 0);
	if (is_allowed(o, "io"))
		luaL_requiref(L, LUA_IOLIBNAME, luaopen_io, 1);
	if (is_allowed(o, "debug"))
		luaL_requiref(L, LUA_DBLIBNAME, luaopen_debug, 1);
	lua_settop(L, 0);

	lua_pushnil(L);
	lua_setglobal(L, "dofile");
	lua_pushnil(L);
	lua_setglobal(L, "loadfile");
	lua_pushcfunction(L, l_load_text);
	lua_setglobal(L, "load");
	lua_pushcfunction(L, l_pcall);
	lua_setglobal(L, "pcall");
	lua_pushcfunction(L, l_xpcall);
	lua_setglobal(L, "xpcall");
	lua_pushcfunction(L, l_print);
	lua_setglobal(L, "print");
	lua_getglobal(L, LUA_COLIBNAME);
	lua_pushcfunction(L, l_co_resume);
	lua_setfield(L, -2, "resume");
	lua_pushcfunction(L, l_co_wrap);
	lua_setfield(L, -2, "wrap");
	lua_pushcfunction(L, l_co_close);
	lua_setfield(L, -2, "close");
	lua_settop(L, 0);
	/* the standard library's C functions whose work is not bounded by
	 * memory, made bounded; no finalizers */
	tidei_lua_open_stdlib(L);
	tidei_lua_open_pattern(L);

	/* require: Lua source modules only, from the configured directories */
	lua_getglobal(L, LUA_LOADLIBNAME);
	lua_pushstring(L, o->lua_path ? o->lua_path : "");
	lua_setfield(L, -2, "path");
	lua_pushliteral(L, "");
	lua_setfield(L, -2, "cpath");
	lua_pushnil(L);
	lua_setfield(L, -2, "loadlib");
	lua_getfield(L, -1, "searchers");
	lua_pushnil(L);
	lua_rawseti(L, -2, 4); /* all-in-one C loader */
	lua_pushnil(L);
	lua_rawseti(L, -2, 3); /* C loader */
	lua_settop(L, 0);
}

/* ------------------------------------------------------------------------
 * Lifecycle and calls
 * ------------------------------------------------------------------------ */

int
tidei_script_new(tidei_script **out, const tidei_script_opts *o, const tidei_host *host, char *err)
{
	tidei_script *s = calloc(1, sizeof *s);

	*out = NULL;
	if (s == NULL)
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	if (host != NULL)
		s->ls.host = *host;
	s->ls.budget = o->instruction_budget;
	s->ls.time_limit = o->time_limit_ns;
	s->ls.who = o->who ? o->who : "handler";
	if (tidei_lstate_open(&s->ls) != TIDE_OK) {
		free(s);
		return tidei_err(err, TIDE_ENOMEM, "cannot create a Lua state");
	}
	open_sandbox(s->ls.L, o);
	tidei_lua_open_event(s->ls.L);
	if (host != NULL) {
		tidei_lua_open_tide(s->ls.L);
		tidei_lua_set_params(s->ls.L, o->params);
	}
	/* Events and their data are short-lived: the generational collector
	 * frees them young, without sweeping the whole heap.  A minor
	 * collection every 5% of growth (not Lua's 20%) sweeps them while
	 * they are still in the caches: with a projection's 100,000 states in
	 * the heap, a cache simulation of a rebuild counts 21 instead of 29
	 * last-level misses per event, for 1% more instructions. */
	lua_gc(s->ls.L, LUA_GCGEN, 5, 0);
	/* The ceiling starts after the libraries: it bounds what scripts use. */
	tidei_lstate_cap(&s->ls, o->memory_limit);
	*out = s;
	return TIDE_OK;
}

void
tidei_script_destroy(tidei_script *s)
{
	if (s == NULL)
		return;
	tidei_lstate_close(&s->ls);
	free(s);
}

lua_State *
tidei_script_state(tidei_script *s)
{
	return s->ls.L;
}

tidei_lstate *
tidei_script_lstate(tidei_script *s)
{
	return &s->ls;
}

int
tidei_script_failure(const tidei_script *s)
{
	return s->ls.last_failure;
}

/* The message of a failed call into @p buf when the error object does not
 * say it (a failure raised again from a message handler or a __close). */
static const char *
failure_text(const tidei_lstate *s, int fail, const char *msg, char *buf, size_t n)
{
	char lim[32];

	switch (fail) {
	case TIDEI_FAIL_MEMORY:
		if (msg == NULL || strncmp(msg, "not enough memory", 17) == 0)
			return "script exceeded its memory limit (not enough memory)";
		return msg; /* a binding's own, naming what it could not reserve */
	case TIDEI_FAIL_BUDGET:
		if (msg != NULL && strstr(msg, "instruction budget") != NULL)
			return msg;
		snprintf(buf, n, "%s exceeded its instruction budget (%llu instructions)", s->who,
			 (unsigned long long)s->budget);
		return buf;
	case TIDEI_FAIL_TIME:
		if (msg != NULL && strstr(msg, "time limit") != NULL)
			return msg;
		snprintf(buf, n, "%s exceeded its time limit (%s)", s->who,
			 tidei_lstate_limit_text(lim, sizeof lim, s->time_limit));
		return buf;
	}
	return msg != NULL ? msg : "unknown error";
}

/* Run the function under the message handler at the top of the stack with
 * @p nargs arguments below it; split the result into message and trace. */
static int
protected_call(tidei_script *sc, int nargs, char *err, char *trace)
{
	tidei_lstate *s = &sc->ls;
	lua_State *L = s->L;
	int base = lua_gettop(L) - nargs; /* index of the function */
	int rc, fail;
	const char *msg, *nl;
	char text[TIDEI_ERRLEN];

	lua_pushcfunction(L, msgh);
	lua_insert(L, base);
	tidei_lstate_arm(s);
	s->failure = TIDEI_FAIL_NONE;
	s->running = L;
	rc = lua_pcall(L, nargs, 0, base);
	fail = s->failure;
	s->failure = TIDEI_FAIL_NONE;
	if (rc == LUA_ERRMEM && fail == TIDEI_FAIL_NONE)
		fail = TIDEI_FAIL_MEMORY;
	if (rc != LUA_OK && fail == TIDEI_FAIL_NONE)
		fail = TIDEI_FAIL_ERROR;
	s->last_failure = fail;
	if (fail == TIDEI_FAIL_NONE) {
		lua_settop(L, base - 1);
		return TIDE_OK;
	}
	/* a failure that the script swallowed anyway still fails the call */
	msg = rc != LUA_OK ? lua_tostring(L, -1) : NULL;
	msg = failure_text(s, fail, msg, text, sizeof text);
	nl = strchr(msg, '\n');
	tidei_err(err, TIDE_ESCRIPT, "%.*s", nl ? (int)(nl - msg) : (int)strlen(msg), msg);
	if (trace != NULL)
		snprintf(trace, TIDEI_ERRLEN, "%s", nl ? nl + 1 : "");
	lua_settop(L, base - 1);
	return TIDE_ESCRIPT;
}

/* Outside a protected call nothing may allocate in the state (a memory
 * error there would end the process): the engine's own work on the state
 * before a call goes through these.  [-1, +2, m] */
static int
load_file(lua_State *L)
{
	int rc = luaL_loadfilex(L, lua_touserdata(L, 1), "t");

	lua_pushinteger(L, rc);
	lua_insert(L, -2);
	return 2; /* status, then the chunk or the message */
}

/* [-1, +1, m] */
static int
push_event(lua_State *L)
{
	tidei_lua_push_event(L, lua_touserdata(L, 1));
	return 1;
}

/* A memory error of the engine's own work on the state, taken as the
 * running code's (the state is at its ceiling). */
static int
host_nomem(tidei_script *s, char *err, char *trace)
{
	lua_pop(s->ls.L, 1);
	s->ls.last_failure = TIDEI_FAIL_MEMORY;
	if (trace != NULL)
		trace[0] = '\0';
	return tidei_err(err, TIDE_ESCRIPT, "script exceeded its memory limit (not enough memory)");
}

int
tidei_script_load(tidei_script *s, const char *path, char *err)
{
	lua_State *L = s->ls.L;
	int rc;

	lua_pushcfunction(L, load_file);
	lua_pushlightuserdata(L, (void *)path);
	if (lua_pcall(L, 1, 2, 0) != LUA_OK)
		return host_nomem(s, err, NULL);
	rc = (int)lua_tointeger(L, -2);
	lua_remove(L, -2);
	if (rc != LUA_OK) {
		s->ls.last_failure = rc == LUA_ERRMEM ? TIDEI_FAIL_MEMORY : TIDEI_FAIL_ERROR;
		tidei_err(err, TIDE_ESCRIPT, "%s", lua_tostring(L, -1));
		lua_pop(L, 1);
		return TIDE_ESCRIPT;
	}
	return protected_call(s, 0, err, NULL);
}

int
tidei_script_call(tidei_script *s, int ref, const struct tide_event *ev, char *err, char *trace)
{
	lua_State *L = s->ls.L;

	int rc;

	/* The event object stays below the call so that it can be expired
	 * afterwards, whatever the handler did with it. */
	lua_pushcfunction(L, push_event);
	lua_pushlightuserdata(L, (void *)ev);
	if (lua_pcall(L, 1, 1, 0) != LUA_OK)
		return host_nomem(s, err, trace);
	lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
	lua_pushvalue(L, -2);
	rc = protected_call(s, 1, err, trace);
	tidei_lua_expire_event(L, -1);
	lua_pop(L, 1);
	return rc;
}

int
tidei_script_protect(tidei_script *s, lua_CFunction fn, void *ud, char *err, char *trace)
{
	lua_State *L = s->ls.L;

	lua_pushcfunction(L, fn);
	lua_pushlightuserdata(L, ud);
	return protected_call(s, 1, err, trace);
}

void
tidei_script_rearm(tidei_script *s)
{
	tidei_lstate_arm(&s->ls);
}

void
tidei_script_unref(tidei_script *s, int ref)
{
	luaL_unref(s->ls.L, LUA_REGISTRYINDEX, ref);
}

void
tidei_lua_path(tidei_buf *out, const char *user, const char *const *scripts, size_t n)
{
	/* require() looks in the user's path, beside each script, then in
	 * Tide's own Lua directory (installed, or the source tree). */
	if (user != NULL)
		tidei_buf_printf(out, "%s;", user);
	for (size_t k = 0; k < n; k++) {
		const char *sc = scripts[k], *slash = strrchr(sc, '/');
		tidei_buf_printf(out, "%.*s/?.lua;", slash ? (int)(slash - sc) : 1,
				 slash ? sc : ".");
	}
	tidei_buf_printf(out, "%s/?.lua;%s/?/init.lua;%s/?.lua;%s/?/init.lua", TIDE_LUADIR,
			 TIDE_LUADIR, TIDE_SRC_LUADIR, TIDE_SRC_LUADIR);
	tidei_buf_putc(out, '\0');
}
