/*
 * scratch.c - temporary logs (scratch.h).
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "scratch.h"

int
tidei_scratch_open(char *dir, size_t n, const char *what, tidei_log **out, char *err)
{
	tidei_log_opts lo = { 0, 1, 0, 0 };
	const char *tmp = getenv("TMPDIR");

	*out = NULL;
	/* mkdtemp() replaces the template's last six characters */
	snprintf(dir, n, "%s/tide-%s-%s", tmp && *tmp ? tmp : "/tmp", what, "XXXXXX");
	if (mkdtemp(dir) == NULL) {
		dir[0] = '\0';
		return tidei_err(err, TIDE_EIO, "cannot make a scratch directory in %s: %s",
				 tmp && *tmp ? tmp : "/tmp", strerror(errno));
	}
	return tidei_log_open(out, dir, &lo, err);
}

void
tidei_scratch_close(const char *dir, tidei_log *log)
{
	static const char *const files[] = { "data.mdb", "lock.mdb", "tide.lock", "tide.created",
					     NULL };
	char path[4200];

	tidei_log_close(log);
	if (dir == NULL || dir[0] == '\0')
		return;
	for (const char *const *f = files; *f; f++) {
		snprintf(path, sizeof path, "%s/%s", dir, *f);
		unlink(path);
	}
	rmdir(dir);
}
