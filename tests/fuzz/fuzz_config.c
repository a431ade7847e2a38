/*
 * fuzz_config.c - libFuzzer target for the config loader (conf.c).
 *
 * Feeds: the input as the contents of a config file (Lua), written to a
 * memory file and loaded by tide_config_load() through its
 * /proc/self/fd/N path into a fresh tide_config.
 *
 * Asserts, beyond no crash, leak, hang or undefined behaviour:
 *  - the result is TIDE_OK, or an error code with a non-empty
 *    tide_errmsg();
 *  - a config that loaded holds only what tide_config_set() accepts: a
 *    data directory, positive event, message and turn sizes, a known
 *    durability and log level, scripts that are all there, and an allow
 *    list of io, os and debug ending with NULL.
 *
 * The loader runs the file in a script state under the default limits
 * (instruction budget, time limit, memory ceiling), so a loop or a string
 * of gigabytes in it is a configuration error, not a hang or a crash:
 * libFuzzer's -timeout (10 s in ./setup.sh fuzz, twice the time limit)
 * and -rss_limit_mb stop the run if that ever stops being true.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "conf.h"
#include "fuzz.h"
#include "tide.h"

static int fd = -1;
static char path[64];

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
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
		FUZZ_CHECK(tide_errmsg()[0] != '\0', "code %d without a message", rc);
	tide_config_destroy(c);
	return 0;
}
