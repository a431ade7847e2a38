/*
 * fuzz_config.c - libFuzzer target for the config loader (conf.c).
 *
 * Feeds: the input as the contents of a config file (Lua), written to a
 * memory file and loaded by tide_config_load() through its
 * /proc/self/fd/N path into a fresh tide_config.
 *
 * Asserts, beyond no crash, leak, hang or undefined behaviour:
 *  - the result is TIDE_OK, or an error code with a non-empty
 *    tide_config_errmsg();
 *  - a config that loaded holds only what tide_config_set() accepts: a
 *    data directory, positive event, message and turn sizes, a known
 *    durability and log level, scripts that are all there, and an allow
 *    list of io, os and debug ending with NULL.
 *
 * The loader runs the file in a Lua state of its own with no bound on
 * instructions or memory yet, so "while true do end" or a string of
 * gigabytes would stop the run as a timeout or an out-of-memory finding
 * that says nothing new.  Until the loader bounds itself, this target
 * stands in for that bound: it defines luaL_newstate(), which the static
 * link resolves for conf.c ahead of liblua's, with a memory ceiling and
 * an instruction budget that raise ordinary Lua errors.  Set
 * TIDE_FUZZ_CONFIG_UNBOUNDED=1 to run the loader as it is.  Once
 * tide_config_load() creates its state with budgets of its own (through
 * lua_newstate()), this stand-in is no longer called and can go.
 */
#include "config.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "conf.h"
#include "fuzz.h"
#include "tide.h"

#define MEMORY_LIMIT (32u << 20)
#define INSTRUCTIONS 1000000
#define HOOK_EVERY 1000

/* The bound of the state being loaded: the loader makes one at a time. */
static struct {
	int off; /* TIDE_FUZZ_CONFIG_UNBOUNDED */
	size_t used;
	long long left; /* instructions */
} bound;

static void *
bounded_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	size_t old = ptr ? osize : 0;
	void *p;

	(void)ud;
	if (nsize == 0) {
		free(ptr);
		bound.used -= old;
		return NULL;
	}
	if (!bound.off && nsize > old && bound.used + (nsize - old) > MEMORY_LIMIT)
		return NULL;
	if ((p = realloc(ptr, nsize)) != NULL)
		bound.used = bound.used - old + nsize;
	return p;
}

static void
count_hook(lua_State *L, lua_Debug *ar)
{
	(void)ar;
	if ((bound.left -= HOOK_EVERY) < 0)
		luaL_error(L, "config exceeded the fuzzing budget of %d instructions",
			   INSTRUCTIONS);
}

static int
panic(lua_State *L)
{
	fuzz_fail(__FILE__, __LINE__, "no unprotected Lua error", "%s", lua_tostring(L, -1));
}

lua_State *
luaL_newstate(void)
{
	lua_State *L;

	bound.used = 0;
	bound.left = INSTRUCTIONS;
	if ((L = lua_newstate(bounded_alloc, NULL)) == NULL)
		return NULL;
	lua_atpanic(L, panic);
	if (!bound.off)
		lua_sethook(L, count_hook, LUA_MASKCOUNT, HOOK_EVERY);
	return L;
}

/* ------------------------------------------------------------------------ */

static int fd = -1;
static char path[64];

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *e = getenv("TIDE_FUZZ_CONFIG_UNBOUNDED");

	(void)argc;
	(void)argv;
	bound.off = e != NULL && strcmp(e, "1") == 0;
	fd = memfd_create("tide-fuzz-config", 0);
	FUZZ_CHECK(fd >= 0, "memfd_create");
	snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	return 0;
}

static void
check_loaded(const tide_config *c)
{
	FUZZ_CHECK(c->data != NULL, "no data directory");
	FUZZ_CHECK(c->max_event_size > 0 && c->max_message_size > 0 && c->turn_events > 0,
		   "a size of zero");
	FUZZ_CHECK(c->durability == TIDEI_DURABILITY_SYNC ||
			   c->durability == TIDEI_DURABILITY_RELAXED,
		   "durability %d", c->durability);
	FUZZ_CHECK(c->log_level >= TIDE_LOG_ERROR && c->log_level <= TIDE_LOG_DEBUG, "log level %d",
		   c->log_level);
	for (size_t k = 0; k < c->nscripts; k++)
		FUZZ_CHECK(c->scripts[k] != NULL, "script %zu missing", k);
	FUZZ_CHECK(c->allow != NULL && c->allow[c->nallow] == NULL, "allow list not ended");
	for (size_t k = 0; k < c->nallow; k++)
		FUZZ_CHECK(strcmp(c->allow[k], "io") == 0 || strcmp(c->allow[k], "os") == 0 ||
				   strcmp(c->allow[k], "debug") == 0,
			   "allow '%s'", c->allow[k]);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	tide_config *c;
	int rc;

	FUZZ_CHECK(ftruncate(fd, 0) == 0, "ftruncate");
	FUZZ_CHECK(size == 0 || pwrite(fd, data, size, 0) == (ssize_t)size, "pwrite");
	FUZZ_CHECK(tide_config_new(&c) == TIDE_OK, "tide_config_new");
	rc = tide_config_load(c, path);
	if (rc == TIDE_OK)
		check_loaded(c);
	else
		FUZZ_CHECK(tide_config_errmsg(c)[0] != '\0', "code %d without a message", rc);
	tide_config_destroy(c);
	return 0;
}
