/*
 * err.c - the table of error codes behind tide_strerror(), and the helpers
 * that fill per-handle detail messages.  The enum in tide.h and the strings
 * here are kept side by side so that they cannot drift: a code without a
 * message is caught by the static assertion below.
 */
#include "config.h"

#include <errno.h>
#include <lmdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "err.h"

static const char *const messages[] = {
	[0] = "success",
	[-TIDE_EINVAL] = "invalid argument",
	[-TIDE_ENOMEM] = "out of memory",
	[-TIDE_EIO] = "storage error",
	[-TIDE_EFORMAT] = "incompatible log format",
	[-TIDE_ENOTFOUND] = "not found",
	[-TIDE_EFULL] = "log is full",
	[-TIDE_ESOCKET] = "socket error",
	[-TIDE_ESCRIPT] = "script error",
	[-TIDE_EEVENT] = "invalid event",
	[-TIDE_ECONFIG] = "invalid configuration",
	[-TIDE_EBUSY] = "data directory in use",
	[-TIDE_ESTATE] = "operation not allowed in this state",
	[-TIDE_ECONFLICT] = "version conflict",
};

_Static_assert(sizeof messages / sizeof messages[0] == 1 - TIDE_ECONFLICT,
	       "every TIDE_E* code needs a message");

TIDE_API const char *
tide_strerror(int code)
{
	if (code > 0 || -code >= (int)(sizeof messages / sizeof messages[0]))
		return "unknown error";
	return messages[-code];
}

TIDE_API const char *
tide_version(void)
{
	return TIDE_VERSION_STRING;
}

TIDE_API int
tide_version_num(void)
{
	return TIDE_VERSION_NUM;
}

/* The one place a failing public call leaves its detail: per thread, so
 * that calls on different threads (tide_publish_mt, readers of the log)
 * never read each other's message. */
static _Thread_local char last_error[TIDEI_ERRLEN];

TIDE_API const char *
tide_errmsg(void)
{
	return last_error;
}

int
tidei_fail(int code, const char *fmt, ...)
{
	va_list ap;

	if (code == TIDE_OK)
		return code;
	if (fmt == NULL || fmt[0] == '\0') {
		snprintf(last_error, sizeof last_error, "%s", tide_strerror(code));
		return code;
	}
	va_start(ap, fmt);
	vsnprintf(last_error, sizeof last_error, fmt, ap);
	va_end(ap);
	if (last_error[0] == '\0') /* a detail that was never written */
		snprintf(last_error, sizeof last_error, "%s", tide_strerror(code));
	return code;
}

int
tidei_done(int rc, const char *detail)
{
	return rc == TIDE_OK ? rc : tidei_fail(rc, "%s", detail);
}

int
tidei_verr(char *buf, int code, const char *fmt, va_list ap)
{
	if (buf != NULL)
		vsnprintf(buf, TIDEI_ERRLEN, fmt, ap);
	return code;
}

int
tidei_err(char *buf, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	tidei_verr(buf, code, fmt, ap);
	va_end(ap);
	return code;
}

int
tidei_err_mdb(int rc)
{
	switch (rc) {
	case MDB_SUCCESS: return TIDE_OK;
	case MDB_NOTFOUND: return TIDE_ENOTFOUND;
	case MDB_MAP_FULL: return TIDE_EFULL;
	case MDB_VERSION_MISMATCH:
	case MDB_INVALID:
	case MDB_INCOMPATIBLE: return TIDE_EFORMAT;
	case ENOMEM: return TIDE_ENOMEM;
	default: return TIDE_EIO;
	}
}

void
tidei_panic(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("tide: internal error: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	abort();
}
