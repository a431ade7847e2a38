/*
 * script.c - the lua_State that runs user scripts.
 *
 * Owns the state's lifecycle and its safety: the sandboxed standard
 * library, the memory ceiling (a counting lua_Alloc, plus what C code
 * reserves on a script's behalf), the per-call instruction budget and time
 * limit (a count hook, and tidei_script_charge() for work done in C), and
 * protected calls whose errors come back as "file:line: message" plus a
 * traceback.  It knows nothing about consumers or the log: what scripts
 * may do to the engine goes through the tidei_host callbacks, reached by
 * the `tide` module (l_tide.c).  The bounded replacements of the standard
 * library's C functions live in l_stdlib.c and l_pattern.c.
 *
 * The sandbox is the state itself: only safe libraries are opened into its
 * globals, so modules loaded by require() are as confined as scripts.
 *
 * A call that runs out of budget, time or memory has failed, whatever the
 * script does next: the failure is sticky until the protected call
 * returns, so pcall, xpcall, coroutine.resume, coroutine.wrap and
 * coroutine.close pass it on instead of returning it, and the count hook
 * raises it again in any code that still runs (a __close handler).
 * Otherwise a handler could catch its own limit and carry on, or a memory
 * error caught in one handler would surface in an innocent one.
 */
#include "config.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "l_event.h"
#include "l_pattern.h"
#include "l_stdlib.h"
#include "l_tide.h"
#include "script.h"

/* The count hook runs every HOOK_EVERY instructions. */
#define HOOK_EVERY 1000
/* tidei_script_charge() reads the clock once this many units were
 * charged since it last did (about as often as the hook does). */
#define CLOCK_UNITS 4096
/* A block that grows by ALLOC_CHARGE bytes or more is charged one unit per
 * ALLOC_BYTES_PER_UNIT: copying or filling it is work the hook does not
 * count (a concatenation of long strings is one instruction).  From
 * ALLOC_POKE bytes the hook is also made to run at the next instruction,
 * so that the clock is read before the next such block, not 1000
 * instructions later. */
#define ALLOC_CHARGE 4096
#define ALLOC_BYTES_PER_UNIT 16 /* with the page faults of fresh memory */
#define ALLOC_POKE 65536

#ifdef CLOCK_MONOTONIC_COARSE
#define TIDE_CLOCK CLOCK_MONOTONIC_COARSE /* a few ms of resolution, no syscall */
#else
#define TIDE_CLOCK CLOCK_MONOTONIC
#endif

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
	size_t mem_limit;     /* mem_used may reach it; 0 = no ceiling */
	size_t memory_limit;  /* as configured: what scripts may use */
	size_t reserved;      /* by C code, counted against mem_limit */
	uint64_t budget;      /* instructions per call, 0 = unlimited */
	uint64_t remaining;   /* left in the current call */
	uint64_t time_limit;  /* ns per call, 0 = unlimited */
	int64_t deadline;     /* on TIDE_CLOCK; 0: not armed yet in this call */
	uint64_t since_clock; /* units charged since the clock was read */
	int failure;          /* TIDEI_FAIL_* of the running call, sticky */
	int last_failure;     /* of the last protected call */
	lua_State *running;   /* the thread running now: L or a coroutine */
	const char *who;      /* "handler", "config file": names the code in errors */
};

/* Every thread of a state shares the main thread's extra space. */
static tidei_script *
script_of(lua_State *L)
{
	return *(tidei_script **)lua_getextraspace(L);
}

tidei_script *
tidei_script_of(lua_State *L)
{
	return script_of(L);
}

static int64_t
clock_ns(void)
{
	struct timespec ts;

	clock_gettime(TIDE_CLOCK, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
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

static void count_hook(lua_State *L, lua_Debug *ar);

/* A block of @p n bytes was allocated: charge it (an allocator may not
 * raise, so the hook raises if this spent the budget) and, for a large
 * one, have the running thread's hook called at its next instruction. */
static void
charge_alloc(tidei_script *s, size_t n)
{
	uint64_t units = n / ALLOC_BYTES_PER_UNIT;

	if (s->budget != 0)
		s->remaining = s->remaining > units ? s->remaining - units : 0;
	s->since_clock += units;
	/* lua_sethook only sets fields of the thread (Lua allows it even from
	 * a signal handler), so it is safe in the middle of an allocation */
	if (n >= ALLOC_POKE && s->running != NULL && (s->budget != 0 || s->time_limit != 0))
		lua_sethook(s->running, count_hook, LUA_MASKCOUNT, 1);
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
	if (s->mem_limit && nsize > old && s->mem_used + s->reserved + (nsize - old) > s->mem_limit)
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
	if (p == NULL)
		return NULL;
	s->mem_used = s->mem_used - old + nsize;
	if (nsize - old >= ALLOC_CHARGE && nsize > old)
		charge_alloc(s, nsize - old);
	return p;
}

/* "5 s", "250 ms" into @p buf (outside a protected call nothing may
 * allocate in the state: the ceiling may have been reached). */
static const char *
limit_text(char *buf, size_t n, uint64_t ns)
{
	if (ns % 1000000000 == 0)
		snprintf(buf, n, "%llu s", (unsigned long long)(ns / 1000000000));
	else if (ns % 1000000 == 0)
		snprintf(buf, n, "%llu ms", (unsigned long long)(ns / 1000000));
	else
		snprintf(buf, n, "%llu us", (unsigned long long)(ns / 1000));
	return buf;
}

/* "script:line: " of the Lua function at @p level or, if that is a C
 * function, of the nearest Lua function that called it (a limit met in a
 * comparison made by table.sort names the line that called sort). */
static void
push_where(lua_State *L, int level)
{
	lua_Debug ar;

	for (; lua_getstack(L, level, &ar); level++) {
		lua_getinfo(L, "Sl", &ar);
		if (ar.currentline > 0) {
			lua_pushfstring(L, "%s:%d: ", ar.short_src, ar.currentline);
			return;
		}
	}
	lua_pushliteral(L, "");
}

/* Fail the running call with @p kind and raise its error, naming the Lua
 * code at @p level (0 from the hook: the looping line; 1 from a C
 * function: its caller). */
static int
raise_limit(lua_State *L, tidei_script *s, int kind, int level)
{
	s->failure = kind;
	if (kind == TIDEI_FAIL_MEMORY) {
		lua_pushliteral(L, "not enough memory");
		return lua_error(L);
	}
	push_where(L, level);
	if (kind == TIDEI_FAIL_BUDGET) {
		lua_pushfstring(L, "%s exceeded its instruction budget (%I instructions)", s->who,
				(lua_Integer)s->budget);
	} else {
		char lim[32];
		lua_pushfstring(L, "%s exceeded its time limit (%s)", s->who,
				limit_text(lim, sizeof lim, s->time_limit));
	}
	lua_concat(L, 2);
	return lua_error(L);
}

/* The deadline is armed by the first look at the clock in a call, not
 * when the call starts: a call that ends before its first hook never
 * reads the clock, which keeps it off the per-event path. */
static void
check_clock(lua_State *L, tidei_script *s, int level)
{
	int64_t now = clock_ns();

	s->since_clock = 0;
	if (s->deadline == 0)
		s->deadline = now + (int64_t)s->time_limit;
	else if (now >= s->deadline)
		raise_limit(L, s, TIDEI_FAIL_TIME, level);
}

static void
count_hook(lua_State *L, lua_Debug *ar)
{
	tidei_script *s = script_of(L);

	(void)ar;
	if (lua_gethookcount(L) != HOOK_EVERY) /* run early by a large allocation */
		lua_sethook(L, count_hook, LUA_MASKCOUNT, HOOK_EVERY);
	if (s->failure != TIDEI_FAIL_NONE)
		raise_limit(L, s, s->failure, 0); /* code still running after a failure */
	/* the deterministic budget first; time is the backstop */
	if (s->budget != 0) {
		if (s->remaining <= HOOK_EVERY) {
			s->remaining = 0;
			/* level 0: the Lua function that was running, so the
			 * message names the looping line */
			raise_limit(L, s, TIDEI_FAIL_BUDGET, 0);
		}
		s->remaining -= HOOK_EVERY;
	}
	if (s->time_limit != 0)
		check_clock(L, s, 0);
}

/* Take @p units from the running call: the failure it met (now sticky)
 * or TIDEI_FAIL_NONE. */
static int
spend(tidei_script *s, uint64_t units)
{
	int64_t now;

	if (s->failure != TIDEI_FAIL_NONE)
		return s->failure;
	if (s->budget != 0) {
		if (s->remaining <= units) {
			s->remaining = 0;
			return s->failure = TIDEI_FAIL_BUDGET;
		}
		s->remaining -= units;
	}
	if (s->time_limit != 0 && (s->since_clock += units) >= CLOCK_UNITS) {
		s->since_clock = 0;
		now = clock_ns();
		if (s->deadline == 0)
			s->deadline = now + (int64_t)s->time_limit;
		else if (now >= s->deadline)
			return s->failure = TIDEI_FAIL_TIME;
	}
	return TIDEI_FAIL_NONE;
}

int
tidei_script_charge(lua_State *L, uint64_t units)
{
	tidei_script *s = script_of(L);
	int kind = spend(s, units);

	if (kind != TIDEI_FAIL_NONE)
		raise_limit(L, s, kind, 1);
	return 0;
}

int
tidei_script_spend(lua_State *L, uint64_t units)
{
	return spend(script_of(L), units);
}

int
tidei_script_nomem(lua_State *L, const char *what)
{
	tidei_script *s = script_of(L);

	s->failure = TIDEI_FAIL_MEMORY;
	return luaL_error(L, "%s: not enough memory (the memory limit)", what);
}

int
tidei_script_reserve(tidei_script *s, size_t bytes)
{
	if (s->mem_limit != 0 &&
	    (bytes > s->mem_limit || s->mem_used + s->reserved > s->mem_limit - bytes))
		return TIDE_ENOMEM;
	s->reserved += bytes;
	return TIDE_OK;
}

void
tidei_script_release(tidei_script *s, size_t bytes)
{
	s->reserved -= bytes < s->reserved ? bytes : s->reserved;
}

size_t
tidei_script_ceiling(const tidei_script *s)
{
	return s->memory_limit;
}

size_t
tidei_script_room(const tidei_script *s)
{
	size_t used = s->mem_used + s->reserved;

	if (s->mem_limit == 0)
		return SIZE_MAX;
	return used < s->mem_limit ? s->mem_limit - used : 0;
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
	/* parsing code costs an instruction's worth per byte or two; what
	 * it builds is bounded by the memory ceiling */
	tidei_script_charge(L, len / 2 + 1);
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
	tidei_script *s = script_of(L);

	if (status == LUA_ERRMEM && s->failure == TIDEI_FAIL_NONE)
		s->failure = TIDEI_FAIL_MEMORY;
	return s->failure != TIDEI_FAIL_NONE;
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
	if (script_of(L)->failure != TIDEI_FAIL_NONE)
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
	tidei_script *s = script_of(L);
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
	tidei_script *s = script_of(L);
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
		s->host = *host;
	s->budget = o->instruction_budget;
	s->time_limit = o->time_limit_ns;
	s->who = o->who ? o->who : "handler";
	s->L = lua_newstate(counting_alloc, s);
	if (s->L == NULL) {
		pool_free_all(&s->pool);
		free(s);
		return tidei_err(err, TIDE_ENOMEM, "cannot create a Lua state");
	}
	*(tidei_script **)lua_getextraspace(s->L) = s;
	s->running = s->L;
	open_sandbox(s->L, o);
	tidei_lua_open_event(s->L);
	if (host != NULL)
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
	s->memory_limit = o->memory_limit;
	*out = s;
	return TIDE_OK;
}

void
tidei_script_destroy(tidei_script *s)
{
	if (s == NULL)
		return;
	/* lua_close runs pending finalizers, with hooks off: scripts cannot
	 * make any (setmetatable refuses __gc), so only C ones run here */
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
	return s->mem_used + s->reserved;
}

int
tidei_script_failure(const tidei_script *s)
{
	return s->last_failure;
}

const tidei_host *
tidei_script_host(lua_State *L)
{
	return &script_of(L)->host;
}

/* Reset the limits for a new call, or a new piece of work in one. */
static void
arm(tidei_script *s)
{
	s->remaining = s->budget;
	s->deadline = 0;
	s->since_clock = 0;
}

/* The message of a failed call into @p buf when the error object does not
 * say it (a failure raised again from a message handler or a __close). */
static const char *
failure_text(const tidei_script *s, int fail, const char *msg, char *buf, size_t n)
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
			 limit_text(lim, sizeof lim, s->time_limit));
		return buf;
	}
	return msg != NULL ? msg : "unknown error";
}

/* Run the function under the message handler at the top of the stack with
 * @p nargs arguments below it; split the result into message and trace. */
static int
protected_call(tidei_script *s, int nargs, char *err, char *trace)
{
	lua_State *L = s->L;
	int base = lua_gettop(L) - nargs; /* index of the function */
	int rc, fail;
	const char *msg, *nl;
	char text[TIDEI_ERRLEN];

	lua_pushcfunction(L, msgh);
	lua_insert(L, base);
	arm(s);
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

int
tidei_script_load(tidei_script *s, const char *path, char *err)
{
	lua_State *L = s->L;
	int rc;

	rc = luaL_loadfilex(L, path, "t");
	if (rc != LUA_OK) {
		s->last_failure = rc == LUA_ERRMEM ? TIDEI_FAIL_MEMORY : TIDEI_FAIL_ERROR;
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
	arm(s);
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
