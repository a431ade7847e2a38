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
#include "lstate.h"

typedef struct tidei_script_opts {
	uint64_t instruction_budget; /* per call; 0 = unlimited */
	uint64_t time_limit_ns;      /* wall-clock time per call; 0 = unlimited */
	size_t memory_limit;         /* bytes for the whole state; 0 = unlimited */
	const char *lua_path;        /* extra directories for require, ';'-separated */
	const char *const *allow;    /* NULL-terminated standard modules to open unsandboxed */
	const char *who;             /* names the code in limit errors; NULL: "handler" */
	const char *const *params;   /* NULL-terminated "name=value": tide.param's overrides */
} tidei_script_opts;

/** Defaults of the limits (the configuration's, and the config file's own). */
#define TIDEI_DEFAULT_BUDGET 10000000
#define TIDEI_DEFAULT_TIME_NS 5000000000ull
#define TIDEI_DEFAULT_MEMORY ((size_t)256 << 20)

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

/** The package.path for scripts: @p user's directories (may be NULL),
 *  the directory of each script, then Tide's Lua directory.  NUL-ended. */
void tidei_lua_path(tidei_buf *out, const char *user, const char *const *scripts, size_t n);

/** Release a handler reference. */
void tidei_script_unref(tidei_script *s, int ref);

lua_State *tidei_script_state(tidei_script *s);
/** The limits and the host of its state (lstate.h): what it uses and may
 *  reserve. */
tidei_lstate *tidei_script_lstate(tidei_script *s);

#endif
