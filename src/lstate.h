/*
 * lstate.h - what every piece of C code running in a scripts' Lua state
 * reaches through the state's extra space, from any of its threads: the
 * limits of the running call (an instruction budget, a time limit, a
 * memory ceiling with what C code reserves against it), the failure the
 * call met, and the host that the `tide` module calls.
 *
 * script.c makes such states and runs calls in them; the bindings
 * (l_*.c) charge the work they do in C here and reach the host from here,
 * so they need nothing of script.c.
 */
#ifndef TIDE_LSTATE_H
#define TIDE_LSTATE_H

#include <lua.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "event.h"

/** The options of tide.on(pattern, fn, opts); -1 (or NULL) = default. */
typedef struct tidei_on_opts {
	const char *pattern;
	const char *name;
	int from;           /* TIDE_FROM_* */
	int64_t retries;    /* tries after the first failure */
	double backoff;     /* seconds before the first retry; doubles */
	double backoff_max; /* seconds, the longest wait */
	int ordered;        /* later events of a subject wait behind a retry */
	lua_State *L;       /* with tide.on: its options table is at index opts */
	int opts;           /* of L, or 0 */
} tidei_on_opts;

/** What the scripts may ask of whoever hosts them (the consumer layer).
 *  Every callback returns TIDE_OK or a code with a message in @p err. */
typedef struct tidei_host {
	void *ud;
	/** Largest event tide.emit may build, in bytes (0: no limit): the
	 *  binding stops copying a value past it. */
	size_t max_event;
	/** tide.on(pattern, fn, opts): fn is a registry reference. */
	int (*on)(void *ud, const tidei_on_opts *o, int ref, const char *where, char *err);
	/** tide.once(key): *first = 1 the first time @p key is claimed. */
	int (*once)(void *ud, const char *key, size_t n, int *first, char *err);
	/** tide.emit{...}: @p b holds the validated attributes, not finished. */
	int (*emit)(void *ud, tidei_evb *b, char *err);
	/** tide.timer.at/after/every/cancel(name, ...) from a rule's handler:
	 *  @p op is TIDEI_TIMER_* (rule.h), @p when ns (a time or a delay),
	 *  @p data the stack index of the timer's data (0: none). */
	int (*timer)(void *ud, lua_State *L, int op, const char *name, size_t n, int64_t when,
		     int data, char *err);
	/** tide.table(file [, opts]) while a script loads: push the table. */
	int (*table)(void *ud, lua_State *L, int name, int opts, char *err);
	/** tide.query(projection, key): push a copy of its state, or nil. */
	int (*query)(void *ud, lua_State *L, const char *name, const char *key, size_t klen,
		     char *err);
	/** tide.shared(name, t): make table @p idx of @p L durable and shared. */
	int (*shared)(void *ud, lua_State *L, const char *name, int idx, char *err);
	/** tide.window(name[, aggregate...]): push the aggregates of a window
	 *  of the running rule, for the key in hand: as a table, or the
	 *  @p nfields ones named at stack index @p fields on as values. */
	int (*window)(void *ud, lua_State *L, const char *name, int fields, int nfields, char *err);
	/** tide.clock(): the running rule's clock (ns); 0 when there is none. */
	int (*clock)(void *ud, int64_t *now);
	/** print() and tide.log(). */
	void (*log)(void *ud, int level, const char *msg);
	/** tide.projection(name, spec): the spec table is at stack index
	 *  @p spec of @p L; the host takes what it needs (registry refs). */
	int (*projection)(void *ud, lua_State *L, const char *name, int spec, const char *where,
			  char *err);
} tidei_host;

/** Why the last protected call failed (tidei_script_failure(), tidei_lstate_spend()). */
#define TIDEI_FAIL_NONE 0   /* it did not */
#define TIDEI_FAIL_ERROR 1  /* an ordinary error, raised by the script or a binding */
#define TIDEI_FAIL_BUDGET 2 /* the instruction budget ran out */
#define TIDEI_FAIL_TIME 3   /* the time limit passed */
#define TIDEI_FAIL_MEMORY 4 /* the memory ceiling (or the system) refused memory */

/* Small blocks (Lua's strings, tables, closures, the event objects) come
 * from per-size free lists carved out of slabs: a handler call allocates
 * and frees several of them, and malloc/free was a fifth of a projection
 * rebuild.  Lua passes the old size to every free and realloc, so a block
 * needs no header.  Slabs go back to the system with the state. */
#define TIDEI_POOL_STEP 16
#if defined(__SANITIZE_ADDRESS__)
#define TIDEI_POOL_MAX 0 /* let AddressSanitizer see every block */
#else
#define TIDEI_POOL_MAX 512
#endif
#define TIDEI_POOL_CLASSES (TIDEI_POOL_MAX / TIDEI_POOL_STEP + 1)
typedef struct tidei_slab {
	struct tidei_slab *next;
	size_t size; /* of the whole slab; TIDEI_HUGE ones are mapped */
	char mem[];
} tidei_slab;

typedef struct tidei_pool {
	void *free[TIDEI_POOL_CLASSES]; /* singly linked through the blocks */
	tidei_slab *slabs;
	size_t nslabs;
	char *cur, *end; /* unused part of the newest slab */
} tidei_pool;

/** The context of one state.  Only script.c (which embeds it) and lstate.c
 *  touch its fields. */
typedef struct tidei_lstate {
	lua_State *L;
	tidei_pool pool;
	tidei_host host;
	size_t mem_used;
	size_t mem_limit;     /* mem_used may reach it; 0 = no ceiling */
	size_t memory_limit;  /* as configured: what scripts may use */
	size_t reserved;      /* by C code, counted against mem_limit */
	uint64_t budget;      /* instructions per call, 0 = unlimited */
	uint64_t remaining;   /* left in the current call */
	uint64_t time_limit;  /* ns per call, 0 = unlimited */
	int64_t deadline;     /* on the clock; 0: not armed yet in this call */
	uint64_t since_clock; /* units charged since the clock was read */
	int failure;          /* TIDEI_FAIL_* of the running call, sticky */
	int last_failure;     /* of the last protected call */
	lua_State *running;   /* the thread running now: L or a coroutine */
	const char *who;      /* "handler", "config file": names the code in errors */
} tidei_lstate;

/** Make @p ls's Lua state (ls->L), with @p ls in its extra space, the
 *  counting allocator and the count hook; budget, time_limit, who and host
 *  are set by the caller beforehand, the ceiling with tidei_lstate_cap()
 *  once the libraries are open.  TIDE_OK or TIDE_ENOMEM. */
int tidei_lstate_open(tidei_lstate *ls);
/** Start the ceiling now: the state may use @p memory_limit bytes more
 *  than it holds (0: no ceiling). */
void tidei_lstate_cap(tidei_lstate *ls, size_t memory_limit);
/** Close the state (no finalizer of a script's can run) and its memory. */
void tidei_lstate_close(tidei_lstate *ls);

/** The context of @p L (any thread of the state). */
tidei_lstate *tidei_lstate_of(lua_State *L);
/** What scripts may ask of whoever hosts them. */
const tidei_host *tidei_lstate_host(lua_State *L);

/** Give a call (or a new piece of work in one) its whole budget and time
 *  limit again. */
void tidei_lstate_arm(tidei_lstate *ls);
/** After a protected call or a resume ended with @p status: whether the
 *  running call has failed for good (a limit, or memory). */
int tidei_lstate_failed(lua_State *L, int status);
/** "5 s", "250 ms" into @p buf. */
const char *tidei_lstate_limit_text(char *buf, size_t n, uint64_t ns);

/** Charge @p units of work done in C (about one per Lua instruction's
 *  worth) to the running call's instruction budget, and look at the clock
 *  now and then.  Raises the same error as the count hook when a limit is
 *  passed (one that pcall cannot catch); returns 0 otherwise.  Only for
 *  states made by tidei_lstate_open().  [-0, +0, e] */
int tidei_lstate_charge(lua_State *L, uint64_t units);

/** Like tidei_lstate_charge(), for C code that must unwind before it
 *  raises (it holds memory of its own): returns TIDEI_FAIL_BUDGET or
 *  TIDEI_FAIL_TIME, now the call's failure, when a limit is passed
 *  (tidei_lstate_charge(L, 0) raises it), TIDEI_FAIL_NONE otherwise. */
int tidei_lstate_spend(lua_State *L, uint64_t units);

/** Raise the memory-limit error (uncatchable, like a refused allocation)
 *  for @p what, a C buffer that could not be reserved.  [-0, +0, e] */
int tidei_lstate_nomem(lua_State *L, const char *what);

/** Count @p bytes that C code holds on the script's behalf (an encoder's
 *  buffers, emitted events) against the memory ceiling: TIDE_OK, or
 *  TIDE_ENOMEM (nothing reserved) when the state's usage plus what is
 *  reserved would pass it.  Every reservation is released with
 *  tidei_lstate_release() once the bytes are freed or handed on. */
int tidei_lstate_reserve(tidei_lstate *ls, size_t bytes);
void tidei_lstate_release(tidei_lstate *ls, size_t bytes);
/** Bytes that may still be allocated or reserved before the ceiling;
 *  SIZE_MAX when there is none. */
size_t tidei_lstate_room(const tidei_lstate *ls);
/** The memory_limit the state was made with (0: none). */
size_t tidei_lstate_ceiling(const tidei_lstate *ls);

/** Bytes the state uses, with those reserved by C code. */
size_t tidei_lstate_memory(const tidei_lstate *ls);

#endif
