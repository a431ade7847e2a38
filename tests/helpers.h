/*
 * helpers.h - what the test suites share: a temporary directory per test,
 * running the real `tide` binary, talking nanomsg, waiting with deadlines
 * instead of sleeping.
 */
#ifndef TIDE_TEST_HELPERS_H
#define TIDE_TEST_HELPERS_H

#include <check.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/** A fresh directory under $TMPDIR, removed when the test ends (also when
 *  it fails: the runner forks each test). */
const char *th_tmpdir(void);
/** Remove every directory made by th_tmpdir() in this process. */
void th_cleanup(void);
/** Write @p content to @p dir/@p name; returns the full path (static). */
const char *th_write(const char *dir, const char *name, const char *content);
/** Path of a file inside the source tree. */
const char *th_src(const char *rel);
/** Path of the shared test data (TIDE_TESTDATA), or NULL if absent. */
const char *th_testdata(const char *rel);

/** Milliseconds on a monotonic clock. */
int64_t th_ms(void);
/** Sleep briefly between polls of a condition that has a deadline. */
void th_pause(void);

/** Run a shell command; its stdout (up to @p outlen - 1 bytes) goes to
 *  @p out if not NULL.  Returns the exit status, or -1. */
int th_sh(char *out, size_t outlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/** A `tide run` process. */
typedef struct th_daemon {
	pid_t pid;
	char dir[512];     /* data directory */
	char log[600];     /* its stderr */
	char rep[700], pull[700], pub[700];
} th_daemon;

/** Start `tide run --data DIR EXTRA...` and wait (up to 10 s) until its
 *  endpoints file appears.  @p extra is a shell fragment (may be "").
 *  Returns 0 or -1. */
int th_daemon_start(th_daemon *d, const char *dir, const char *extra);
/** SIGTERM and wait; returns the exit status, or -1 on timeout (then
 *  SIGKILL). */
int th_daemon_stop(th_daemon *d);
/** SIGKILL and reap. */
void th_daemon_kill(th_daemon *d);

/** Send @p msg on a REQ socket to @p url and copy the reply into @p reply.
 *  Returns the reply length or -1 (timeout @p ms). */
int th_req(const char *url, const char *msg, char *reply, size_t replylen, int ms);

/** Number of lines `tide log` prints for @p args in @p dir, or -1. */
long th_log_count(const char *dir, const char *args);
/** Wait until `tide log --data dir ARGS` has at least @p n lines (deadline
 *  @p ms).  Returns the count seen last. */
long th_wait_log(const char *dir, const char *args, long n, int ms);
/** Checkpoint of consumer @p name as read by `tide stat --json`, or -1. */
long th_checkpoint(const char *dir, const char *name);

/* The suites, for the runner. */
Suite *event_suite(void);
Suite *cloudevents_suite(void);
Suite *log_suite(void);
Suite *lua_suite(void);
Suite *engine_suite(void);
Suite *cli_suite(void);

#endif
