/*
 * script.c - the lua_State that runs user scripts.
 *
 * Owns the state's lifecycle and its safety: the sandboxed standard
 * library, the memory ceiling (a counting lua_Alloc), the per-call
 * instruction budget (a count hook), and protected calls whose errors come
 * back as "file:line: message" plus a traceback.  It knows nothing about
 * consumers or the log: what scripts may do to the engine goes through the
 * tidei_host callbacks, reached by the `tide` module (l_tide.c).
 *
 * The sandbox is the state itself: only safe libraries are opened into its
 * globals, so modules loaded by require() are as confined as scripts.
 */
#include "config.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "l_event.h"
#include "l_tide.h"
#include "script.h"

/* The count hook runs every HOOK_EVERY instructions. */
#define HOOK_EVERY 1000

/* Small blocks (Lua's strings, tables, closures, the event objects) come
 * from per-size free lists carved out of slabs: a handler call allocates
 * and frees several of them, and malloc/free was a fifth of a projection
 * rebuild.  Lua passes the old size to every free and realloc, so a block
 * needs no header.  Slabs go back to the system with the state. */
#define POOL_STEP 16
#if defined(__SANITIZE_ADDRESS__)
#define POOL_MAX 0 /* let AddressSanitizer see every block */
#else
#define POOL_MAX 512
#endif
#define POOL_CLASSES (POOL_MAX / POOL_STEP + 1)
#define SLAB_SIZE (64 * 1024)
/* After this many small slabs, a state that keeps growing (a projection's
 * states) gets slabs of a huge page: its objects are read at random, and
 * with 4 KiB pages nearly every such read also misses the TLB. */
#define SMALL_SLABS 16

typedef struct slab {
	struct slab *next;
	size_t size; /* of the whole slab; TIDEI_HUGE ones are mapped */
	char mem[];
} slab;

typedef struct pool {
	void *free[POOL_CLASSES]; /* singly linked through the blocks */
	slab *slabs;
	size_t nslabs;
	char *cur, *end; /* unused part of the newest slab */
} pool;

struct tidei_script {
	lua_State *L;
	pool pool;
	tidei_host host;
	size_t mem_used;
	size_t mem_limit;
	uint64_t budget;    /* instructions per call, 0 = unlimited */
	uint64_t remaining; /* left in the current call */
	int exhausted;      /* the current call ran out; pcall must not hide it */
};

static tidei_script *
script_of(lua_State *L)
{
	return *(tidei_script **)lua_getextraspace(L);
}

static size_t
pool_class(size_t n)
{
	return (n + POOL_STEP - 1) / POOL_STEP - 1;
}

static void *
pool_get(pool *p, size_t n)
{
	size_t c = pool_class(n), sz = (c + 1) * POOL_STEP;
	void *b = p->free[c];

	if (b != NULL) {
		p->free[c] = *(void **)b;
		return b;
	}
	if ((size_t)(p->end - p->cur) < sz) {
		size_t size = sizeof(slab) + SLAB_SIZE;
		slab *sl = NULL;
		if (p->nslabs >= SMALL_SLABS && (sl = tidei_huge_alloc(TIDEI_HUGE)) != NULL)
			size = TIDEI_HUGE;
		else if ((sl = malloc(size)) == NULL)
			return NULL;
		sl->next = p->slabs;
		sl->size = size;
		p->slabs = sl;
		p->nslabs++;
		p->cur = sl->mem;
		p->end = (char *)sl + size;
	}
	b = p->cur;
	p->cur += sz;
	return b;
}

static void
pool_put(pool *p, void *b, size_t n)
{
	size_t c = pool_class(n);

	*(void **)b = p->free[c];
	p->free[c] = b;
}

static void
pool_free_all(pool *p)
{
	while (p->slabs != NULL) {
		slab *next = p->slabs->next;
		if (p->slabs->size == TIDEI_HUGE)
			tidei_huge_free(p->slabs, TIDEI_HUGE);
		else
			free(p->slabs);
		p->slabs = next;
	}
}

/* A lua_Alloc that refuses to grow the state past its ceiling (Lua turns
 * the refusal into a "not enough memory" error in the running code), with
 * small blocks from the pool. */
static void *
counting_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	tidei_script *s = ud;
	size_t old = ptr ? osize : 0;
	void *p;

	if (nsize == 0) {
		if (ptr != NULL) {
			if (old <= POOL_MAX)
				pool_put(&s->pool, ptr, old);
			else
				free(ptr);
		}
		s->mem_used -= old;
		return NULL;
	}
	if (s->mem_limit && nsize > old && s->mem_used + (nsize - old) > s->mem_limit)
		return NULL;
	if (ptr != NULL && old > POOL_MAX && nsize > POOL_MAX) {
		p = realloc(ptr, nsize);
	} else if (ptr != NULL && old <= POOL_MAX && nsize <= POOL_MAX &&
		   pool_class(old) == pool_class(nsize)) {
		p = ptr; /* same size class */
	} else {
		p = nsize <= POOL_MAX ? pool_get(&s->pool, nsize) : malloc(nsize);
		if (p != NULL && ptr != NULL) {
			memcpy(p, ptr, old < nsize ? old : nsize);
			if (old <= POOL_MAX)
				pool_put(&s->pool, ptr, old);
			else
				free(ptr);
		}
	}
	if (p != NULL)
		s->mem_used = s->mem_used - old + nsize;
	return p;
}

static void
count_hook(lua_State *L, lua_Debug *ar)
{
	tidei_script *s = script_of(L);

	(void)ar;
	if (s->budget == 0)
		return;
	if (s->remaining <= HOOK_EVERY) {
		s->remaining = 0;
		s->exhausted = 1;
		/* level 0: the Lua function that was running, so the message
		 * names the looping line */
		luaL_where(L, 0);
		lua_pushfstring(L, "handler exceeded its instruction budget (%I instructions)",
				(lua_Integer)s->budget);
		lua_concat(L, 2);
		lua_error(L);
	}
	s->remaining -= HOOK_EVERY;
}

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

/* pcall/xpcall that let a budget error through: otherwise a handler could
 * catch it and loop forever. */
static int
finish_pcall(lua_State *L, int status, lua_KContext extra)
{
	if (script_of(L)->exhausted)
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
 * could never be stopped.  It is skipped once the budget is spent. */
static int
guarded_msgh(lua_State *L)
{
	if (script_of(L)->exhausted)
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

static int
l_print(lua_State *L)
{
	tidei_script *s = script_of(L);
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
	s->host = *host;
	s->budget = o->instruction_budget;
	s->L = lua_newstate(counting_alloc, s);
	if (s->L == NULL) {
		pool_free_all(&s->pool);
		free(s);
		return tidei_err(err, TIDE_ENOMEM, "cannot create a Lua state");
	}
	*(tidei_script **)lua_getextraspace(s->L) = s;
	open_sandbox(s->L, o);
	tidei_lua_open_event(s->L);
	tidei_lua_open_tide(s->L);
	/* Events and their data are short-lived: the generational collector
	 * frees them young, without sweeping the whole heap.  A minor
	 * collection every 5% of growth (not Lua's 20%) sweeps them while
	 * they are still in the caches: with a projection's 100,000 states in
	 * the heap, a cache simulation of a rebuild counts 21 instead of 29
	 * last-level misses per event, for 1% more instructions. */
	lua_gc(s->L, LUA_GCGEN, 5, 0);
	lua_sethook(s->L, count_hook, LUA_MASKCOUNT, HOOK_EVERY);
	/* The ceiling starts after the libraries: it bounds what scripts use. */
	s->mem_limit = o->memory_limit ? s->mem_used + o->memory_limit : 0;
	*out = s;
	return TIDE_OK;
}

void
tidei_script_destroy(tidei_script *s)
{
	if (s == NULL)
		return;
	s->mem_limit = 0;
	lua_close(s->L);
	pool_free_all(&s->pool);
	free(s);
}

lua_State *
tidei_script_state(tidei_script *s)
{
	return s->L;
}

size_t
tidei_script_memory(const tidei_script *s)
{
	return s->mem_used;
}

const tidei_host *
tidei_script_host(lua_State *L)
{
	return &script_of(L)->host;
}

/* Run the function under the message handler at the top of the stack with
 * @p nargs arguments below it; split the result into message and trace. */
static int
protected_call(tidei_script *s, int nargs, char *err, char *trace)
{
	lua_State *L = s->L;
	int base = lua_gettop(L) - nargs; /* index of the function */
	int rc;
	const char *msg, *nl;

	lua_pushcfunction(L, msgh);
	lua_insert(L, base);
	s->remaining = s->budget;
	s->exhausted = 0;
	rc = lua_pcall(L, nargs, 0, base);
	s->exhausted = 0;
	if (rc == LUA_OK) {
		lua_settop(L, base - 1);
		return TIDE_OK;
	}
	msg = lua_tostring(L, -1);
	if (msg == NULL)
		msg = rc == LUA_ERRMEM ? "not enough memory" : "unknown error";
	if (rc == LUA_ERRMEM)
		msg = "script exceeded its memory limit (not enough memory)";
	nl = strchr(msg, '\n');
	tidei_err(err, TIDE_ESCRIPT, "%.*s", nl ? (int)(nl - msg) : (int)strlen(msg), msg);
	if (trace != NULL)
		snprintf(trace, TIDEI_ERRLEN, "%s", nl ? nl + 1 : "");
	lua_settop(L, base - 1);
	return TIDE_ESCRIPT;
}

int
tidei_script_load(tidei_script *s, const char *path, char *err)
{
	lua_State *L = s->L;
	int rc;

	rc = luaL_loadfilex(L, path, "t");
	if (rc != LUA_OK) {
		tidei_err(err, TIDE_ESCRIPT, "%s", lua_tostring(L, -1));
		lua_pop(L, 1);
		return TIDE_ESCRIPT;
	}
	return protected_call(s, 0, err, NULL);
}

int
tidei_script_call(tidei_script *s, int ref, const struct tide_event *ev, char *err, char *trace)
{
	lua_State *L = s->L;

	int rc;

	/* The event object stays below the call so that it can be expired
	 * afterwards, whatever the handler did with it. */
	tidei_lua_push_event(L, ev);
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
	lua_State *L = s->L;

	lua_pushcfunction(L, fn);
	lua_pushlightuserdata(L, ud);
	return protected_call(s, 1, err, trace);
}

void
tidei_script_rearm(tidei_script *s)
{
	s->remaining = s->budget;
}

void
tidei_script_unref(tidei_script *s, int ref)
{
	luaL_unref(s->L, LUA_REGISTRYINDEX, ref);
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
