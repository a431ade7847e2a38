/*
 * lstate.c - the limits of a scripts' Lua state (see lstate.h).
 *
 * Memory: a counting lua_Alloc refuses to grow the state past its ceiling
 * (Lua turns the refusal into a "not enough memory" error in the running
 * code), with small blocks from a pool, and counts what C code reserves
 * on a script's behalf.  Time and work: a count hook every HOOK_EVERY
 * instructions takes them from the call's budget and looks at the clock;
 * bindings charge the work they do in C (tidei_lstate_charge) the same
 * way, and a large allocation is charged by its size.
 *
 * A call that runs out of budget, time or memory has failed, whatever the
 * script does next: the failure is sticky until the protected call
 * returns (script.c resets it), and the hook raises it again in any code
 * that still runs (a __close handler).
 */
#include "config.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lstate.h"

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

#define POOL_STEP TIDEI_POOL_STEP
#define POOL_MAX TIDEI_POOL_MAX
#define SLAB_SIZE (64 * 1024)
/* After this many small slabs, a state that keeps growing (a projection's
 * states) gets slabs of a huge page: its objects are read at random, and
 * with 4 KiB pages nearly every such read also misses the TLB. */
#define SMALL_SLABS 16

typedef tidei_slab slab;
typedef tidei_pool pool;

/* Every thread of a state shares the main thread's extra space. */
static tidei_lstate *
script_of(lua_State *L)
{
	return *(tidei_lstate **)lua_getextraspace(L);
}

tidei_lstate *
tidei_lstate_of(lua_State *L)
{
	return script_of(L);
}

const tidei_host *
tidei_lstate_host(lua_State *L)
{
	return &script_of(L)->host;
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
charge_alloc(tidei_lstate *s, size_t n)
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
	tidei_lstate *s = ud;
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
const char *
tidei_lstate_limit_text(char *buf, size_t n, uint64_t ns)
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
raise_limit(lua_State *L, tidei_lstate *s, int kind, int level)
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
				tidei_lstate_limit_text(lim, sizeof lim, s->time_limit));
	}
	lua_concat(L, 2);
	return lua_error(L);
}

/* The deadline is armed by the first look at the clock in a call, not
 * when the call starts: a call that ends before its first hook never
 * reads the clock, which keeps it off the per-event path. */
static void
check_clock(lua_State *L, tidei_lstate *s, int level)
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
	tidei_lstate *s = script_of(L);

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
spend(tidei_lstate *s, uint64_t units)
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
tidei_lstate_charge(lua_State *L, uint64_t units)
{
	tidei_lstate *s = script_of(L);
	int kind = spend(s, units);

	if (kind != TIDEI_FAIL_NONE)
		raise_limit(L, s, kind, 1);
	return 0;
}

int
tidei_lstate_spend(lua_State *L, uint64_t units)
{
	return spend(script_of(L), units);
}

int
tidei_lstate_nomem(lua_State *L, const char *what)
{
	tidei_lstate *s = script_of(L);

	s->failure = TIDEI_FAIL_MEMORY;
	return luaL_error(L, "%s: not enough memory (the memory limit)", what);
}

int
tidei_lstate_reserve(tidei_lstate *s, size_t bytes)
{
	if (s->mem_limit != 0 &&
	    (bytes > s->mem_limit || s->mem_used + s->reserved > s->mem_limit - bytes))
		return TIDE_ENOMEM;
	s->reserved += bytes;
	return TIDE_OK;
}

void
tidei_lstate_release(tidei_lstate *s, size_t bytes)
{
	s->reserved -= bytes < s->reserved ? bytes : s->reserved;
}

size_t
tidei_lstate_ceiling(const tidei_lstate *s)
{
	return s->memory_limit;
}

size_t
tidei_lstate_room(const tidei_lstate *s)
{
	size_t used = s->mem_used + s->reserved;

	if (s->mem_limit == 0)
		return SIZE_MAX;
	return used < s->mem_limit ? s->mem_limit - used : 0;
}

size_t
tidei_lstate_memory(const tidei_lstate *s)
{
	return s->mem_used + s->reserved;
}

void
tidei_lstate_arm(tidei_lstate *s)
{
	s->remaining = s->budget;
	s->deadline = 0;
	s->since_clock = 0;
}

int
tidei_lstate_failed(lua_State *L, int status)
{
	tidei_lstate *s = script_of(L);

	if (status == LUA_ERRMEM && s->failure == TIDEI_FAIL_NONE)
		s->failure = TIDEI_FAIL_MEMORY;
	return s->failure != TIDEI_FAIL_NONE;
}

int
tidei_lstate_open(tidei_lstate *s)
{
	s->L = lua_newstate(counting_alloc, s);
	if (s->L == NULL) {
		pool_free_all(&s->pool);
		return TIDE_ENOMEM;
	}
	*(tidei_lstate **)lua_getextraspace(s->L) = s;
	s->running = s->L;
	lua_sethook(s->L, count_hook, LUA_MASKCOUNT, HOOK_EVERY);
	return TIDE_OK;
}

void
tidei_lstate_cap(tidei_lstate *s, size_t memory_limit)
{
	s->mem_limit = memory_limit ? s->mem_used + memory_limit : 0;
	s->memory_limit = memory_limit;
}

void
tidei_lstate_close(tidei_lstate *s)
{
	/* lua_close runs pending finalizers, with hooks off: scripts cannot
	 * make any (setmetatable refuses __gc), so only C ones run here */
	s->mem_limit = 0;
	lua_close(s->L);
	pool_free_all(&s->pool);
	s->L = NULL;
}
