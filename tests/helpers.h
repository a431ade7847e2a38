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

#include "tide.h"

/* Consumer options: start at the beginning, the rest by default. */
extern const tide_consumer_opts th_from_beginning;

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
int th_sh(char *out, size_t outlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/** A `tide run` process. */
typedef struct th_daemon {
	pid_t pid;
	char dir[512]; /* data directory */
	char log[600]; /* its stderr */
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

/* ------------------------------------------------------------------------
 * Added for the engine and command-line suites.
 * ------------------------------------------------------------------------ */

/** Like th_daemon_start(), but runs `tide run ARGS` exactly as formatted
 *  (no implicit --data) and waits (10 s) for @p dir/endpoints.  The daemon
 *  dies with the test process (PR_SET_PDEATHSIG), also when check kills a
 *  test that timed out.  Returns 0 or -1. */
int th_daemon_spawn(th_daemon *d, const char *dir, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/** Wait (deadline @p ms) for the daemon to exit without signalling it;
 *  returns its exit status (128 + signal if killed) or -1 on timeout. */
int th_daemon_wait(th_daemon *d, int ms);

/** Run a shell command in the background, stdout and stderr to @p out
 *  (a file path).  It dies with the test process.  Returns its pid or -1. */
pid_t th_bg(const char *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** Wait up to @p ms for a child from th_bg(); its exit status, 128 + signal,
 *  or -1 on timeout (the child is left running). */
int th_bg_wait(pid_t pid, int ms);

/** Whole contents of @p path (malloc'd, NUL-terminated) or NULL. */
char *th_slurp(const char *path);
/** The same, with its length in *@p n (the file may hold NUL bytes). */
char *th_slurp_n(const char *path, size_t *n);
/** Wait up to @p ms until @p path contains @p needle; 1 if it does. */
int th_wait_file(const char *path, const char *needle, int ms);
/** Number of occurrences of @p needle in @p s. */
long th_count(const char *s, const char *needle);

/** A free TCP port on 127.0.0.1 (bound to port 0, then released). */
int th_free_port(void);

/** Send @p msgs[0..n), one request each, at most @p window at a time over
 *  as many plain REQ sockets.  replies[k] receives the malloc'd reply to
 *  msgs[k] (NUL-terminated; free() it), or NULL if none came before the
 *  deadline of @p ms for the whole exchange.  Returns the number of
 *  replies received. */
size_t th_req_many(const char *url, char *const *msgs, size_t n, char **replies, int window,
		   int ms);

/** One event of the log, read in-process through tide.h. */
typedef struct th_rec {
	uint64_t seq, version;
	char *id, *source, *type, *subject, *causationid, *correlationid;
	char *json; /* the whole event as tide_event_json() encodes it */
} th_rec;
/** Read every event of the log in @p dir in seq order; *out gets a malloc'd
 *  array (th_recs_free).  Returns the count, or -1 if the log cannot be
 *  opened. */
long th_log_read(const char *dir, th_rec **out);
void th_recs_free(th_rec *v, long n);
/** Events stored, last seq and the checkpoint of consumer @p name (0 if it
 *  has none; @p name may be NULL), read in-process.  Returns 0 or -1. */
int th_log_state(const char *dir, const char *name, uint64_t *events, uint64_t *last,
		 uint64_t *checkpoint);
/** Wait (deadline @p ms) until the log holds at least @p events events and
 *  consumer @p name (if not NULL) has reached the last seq.  Returns 1 when
 *  it did, 0 on timeout. */
int th_wait_settled(const char *dir, const char *name, uint64_t events, int ms);

/* ------------------------------------------------------------------------
 * Added for the crash suite.
 * ------------------------------------------------------------------------ */

struct tide_event;

/** Like th_bg(), but stdin from @p in, stdout to @p out and stderr to
 *  @p err (three file paths), so that a client's replies and its
 *  diagnostics do not interleave.  Returns the pid or -1. */
pid_t th_bg_io(const char *in, const char *out, const char *err, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/** A small seeded generator (splitmix64): the same seed gives the same
 *  numbers, so a failure can be replayed from its seed. */
uint64_t th_rand(uint64_t *state);
/** A number in [lo, hi] from th_rand(). */
uint64_t th_rand_range(uint64_t *state, uint64_t lo, uint64_t hi);
/** Environment variable @p name as an integer, or @p dflt when it is
 *  unset or not a number. */
long long th_env_ll(const char *name, long long dflt);

/** What one line of a REP reply says. */
enum { TH_ACK_BAD = -1, TH_ACK_ERROR = 0, TH_ACK_STORED = 1, TH_ACK_DUPLICATE = 2 };
/** Classify one reply line, insisting on the exact wire format
 *  ({"ok":true,"seq":N}, {"ok":true,"duplicate":true,"seq":N} or
 *  {"ok":false,"error":"..."}); *seq gets N (0 for errors). */
int th_ack_parse(const char *line, uint64_t *seq);

/** Called by th_log_scan() for each event; @p ev is borrowed for the call.
 *  Return 0 to go on, anything else to stop the scan. */
typedef int th_scan_fn(void *ud, const struct tide_event *ev);
/** Visit the events of the log in @p dir from seq @p from (0 or 1: the
 *  start) in seq order, in-process and without copying, over one read
 *  snapshot.  Returns the number visited, or -1 if the log cannot be read. */
long th_log_scan(const char *dir, uint64_t from, th_scan_fn *fn, void *ud);

/** Copy @p path (a file or a directory) into a fresh directory under
 *  $TMPDIR that th_cleanup() leaves alone, as evidence of a failure.
 *  Returns that directory (static) or NULL. */
const char *th_keep(const char *path, const char *tag);

/* The suites, for the runner. */
/* ------------------------------------------------------------------------
 * A growing string, for building messages and expected output.
 * ------------------------------------------------------------------------ */

typedef struct sbuf {
	char *p;
	size_t len, cap;
} sbuf;

/** Append printf-style to @p b (aborts the test when out of memory). */
void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** Take the string out of @p b (the caller frees it; "" if nothing was
 *  added) and empty @p b. */
char *sb_take(sbuf *b);

Suite *event_suite(void);
Suite *cloudevents_suite(void);
Suite *json_suite(void);
Suite *jscan_suite(void);
Suite *value_suite(void);
Suite *agg_suite(void);
Suite *stats_suite(void);
Suite *log_suite(void);
Suite *lua_suite(void);
Suite *engine_suite(void);
Suite *cli_suite(void);
Suite *crash_suite(void);
Suite *replay_suite(void);
Suite *retry_suite(void);
Suite *projection_suite(void);
Suite *request_suite(void);
Suite *dlq_suite(void);
Suite *limits_suite(void);
Suite *flight_suite(void);
Suite *keys_suite(void);
Suite *damage_suite(void);
Suite *sandbox_suite(void);
Suite *rules_suite(void);
Suite *turns_suite(void);
Suite *cthread_suite(void);
Suite *check_suite(void);
Suite *backtest_suite(void);
Suite *nab_suite(void);
Suite *http_suite(void);

#endif
