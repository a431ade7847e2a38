/*
 * script.h - one Lua state running user scripts: sandbox, protected calls
 * with tracebacks, and the instruction, time and memory limits.
 */
#ifndef TIDE_SCRIPT_H
#define TIDE_SCRIPT_H

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
	/** print() and tide.log(). */
	void (*log)(void *ud, int level, const char *msg);
	/** tide.projection(name, spec): the spec table is at stack index
	 *  @p spec of @p L; the host takes what it needs (registry refs). */
	int (*projection)(void *ud, lua_State *L, const char *name, int spec, const char *where,
			  char *err);
} tidei_host;

typedef struct tidei_script_opts {
	uint64_t instruction_budget; /* per call; 0 = unlimited */
	uint64_t time_limit_ns;      /* wall-clock time per call; 0 = unlimited */
	size_t memory_limit;         /* bytes for the whole state; 0 = unlimited */
	const char *lua_path;        /* extra directories for require, ';'-separated */
	const char *const *allow;    /* NULL-terminated standard modules to open unsandboxed */
	const char *who;             /* names the code in limit errors; NULL: "handler" */
} tidei_script_opts;

/** Defaults of the limits (the configuration's, and the config file's own). */
#define TIDEI_DEFAULT_BUDGET 10000000
#define TIDEI_DEFAULT_TIME_NS 5000000000ull
#define TIDEI_DEFAULT_MEMORY ((size_t)256 << 20)

/** Why the last protected call failed (tidei_script_failure()). */
#define TIDEI_FAIL_NONE 0   /* it did not */
#define TIDEI_FAIL_ERROR 1  /* an ordinary error, raised by the script or a binding */
#define TIDEI_FAIL_BUDGET 2 /* the instruction budget ran out */
#define TIDEI_FAIL_TIME 3   /* the time limit passed */
#define TIDEI_FAIL_MEMORY 4 /* the memory ceiling (or the system) refused memory */

typedef struct tidei_script tidei_script;

/** A state with the sandbox and limits of @p o.  @p host may be NULL (the
 *  config file): then scripts have no `tide` module. */
int tidei_script_new(tidei_script **out, const tidei_script_opts *o, const tidei_host *host,
		     char *err);
void tidei_script_destroy(tidei_script *s);

/** Load and run one script file.  Returns TIDE_OK or TIDE_ESCRIPT with the
 *  error (file:line: message) in @p err. */
int tidei_script_load(tidei_script *s, const char *path, char *err);

/** Call the handler @p ref with @p ev as a table.  Returns TIDE_OK, or
 *  TIDE_ESCRIPT with "file:line: message" in @p err and the traceback in
 *  @p trace (may be NULL; TIDEI_ERRLEN bytes). */
int tidei_script_call(tidei_script *s, int ref, const struct tide_event *ev, char *err,
		      char *trace);

/** Run @p fn(ud as a light userdata) under the same protection, budget
 *  and error reporting as a handler call. */
int tidei_script_protect(tidei_script *s, lua_CFunction fn, void *ud, char *err, char *trace);

/** Inside tidei_script_protect(): give the next piece of work (one event
 *  of a batch) the whole instruction budget and time limit again. */
void tidei_script_rearm(tidei_script *s);

/** After tidei_script_load(), _call() or _protect() returned TIDE_ESCRIPT:
 *  TIDEI_FAIL_ERROR, _BUDGET, _TIME or _MEMORY.  TIDEI_FAIL_NONE after a
 *  success. */
int tidei_script_failure(const tidei_script *s);

/** Charge @p units of work done in C (about one per Lua instruction's
 *  worth) to the running call's instruction budget, and look at the clock
 *  now and then.  Raises the same error as the count hook when a limit is
 *  passed (one that pcall cannot catch); returns 0 otherwise.  Only for
 *  states made by tidei_script_new().  [-0, +0, e] */
int tidei_script_charge(lua_State *L, uint64_t units);

/** Like tidei_script_charge(), for C code that must unwind before it
 *  raises (it holds memory of its own): returns TIDEI_FAIL_BUDGET or
 *  TIDEI_FAIL_TIME, now the call's failure, when a limit is passed
 *  (tidei_script_charge(L, 0) raises it), TIDEI_FAIL_NONE otherwise. */
int tidei_script_spend(lua_State *L, uint64_t units);

/** Raise the memory-limit error (uncatchable, like a refused allocation)
 *  for @p what, a C buffer that could not be reserved.  [-0, +0, e] */
int tidei_script_nomem(lua_State *L, const char *what);

/** Count @p bytes that C code holds on the script's behalf (an encoder's
 *  buffers, emitted events) against the memory ceiling: TIDE_OK, or
 *  TIDE_ENOMEM (nothing reserved) when the state's usage plus what is
 *  reserved would pass it.  Every reservation is released with
 *  tidei_script_release() once the bytes are freed or handed on. */
int tidei_script_reserve(tidei_script *s, size_t bytes);
void tidei_script_release(tidei_script *s, size_t bytes);
/** Bytes that may still be allocated or reserved before the ceiling;
 *  SIZE_MAX when there is none. */
size_t tidei_script_room(const tidei_script *s);
/** The memory_limit the state was made with (0: none). */
size_t tidei_script_ceiling(const tidei_script *s);

/** The package.path for scripts: @p user's directories (may be NULL),
 *  the directory of each script, then Tide's Lua directory.  NUL-ended. */
void tidei_lua_path(tidei_buf *out, const char *user, const char *const *scripts, size_t n);

/** Release a handler reference. */
void tidei_script_unref(tidei_script *s, int ref);

lua_State *tidei_script_state(tidei_script *s);
/** Bytes the state uses, with those reserved by C code. */
size_t tidei_script_memory(const tidei_script *s);
/** The script that owns @p L (any of its threads). */
tidei_script *tidei_script_of(lua_State *L);

#endif
