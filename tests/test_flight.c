/*
 * test_flight.c - defence in depth against a handler that takes the
 * engine down: SIGTERM ends `tide run` within its stop timeout whatever
 * the engine is doing, and an event whose handler froze, crashed or was
 * killed three times is set aside at the next start (a dead letter, or
 * the projection stops there) instead of being run again forever.
 *
 * The handlers here really hang: the scripts' limits are switched off
 * (instruction_budget = 0, time_limit = 0), which is what a bounded
 * sandbox otherwise prevents.
 */
#define _GNU_SOURCE
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "flight.h"
#include "helpers.h"
#include "tide.h"

#define HAS(text, needle) \
	ck_assert_msg(strstr(text, needle) != NULL, "'%s' not in:\n%s", needle, text)

/* No limits: a handler that loops hangs the engine. */
#define UNBOUNDED "--set instruction_budget=0 --set time_limit=0 --stop-timeout 1"

static const char hanging_consumer[] =
	"local tide = require 'tide'\n"
	"tide.on('x', function(ev)\n"
	"  if ev.data and ev.data.hang then print('hanging on ' .. ev.id); while true do end end\n"
	"  tide.emit{ type = 'done', data = ev.id }\n"
	"end, { name = 'c', from = 'beginning', retries = 5 })\n";

static void
publish(const th_daemon *d, const char *id, int hang)
{
	char ev[256], reply[512];

	snprintf(ev, sizeof ev,
		 "{\"specversion\":\"1.0\",\"id\":\"%s\",\"source\":\"/"
		 "t\",\"type\":\"x\",\"subject\":"
		 "\"s\",\"data\":{\"hang\":%s}}",
		 id, hang ? "true" : "false");
	ck_assert_int_gt(th_req(d->rep, ev, reply, sizeof reply, 10000), 0);
	HAS(reply, "\"ok\":true");
}

/* Wait until @p path holds @p needle at least @p n times. */
static int
wait_count(const char *path, const char *needle, long n, int ms)
{
	int64_t deadline = th_ms() + ms;

	for (;;) {
		char *s = th_slurp(path);
		long got = s ? th_count(s, needle) : 0;
		free(s);
		if (got >= n)
			return 1;
		if (th_ms() >= deadline)
			return 0;
		th_pause();
	}
}

static void
dlq(const char *data, char *out, size_t n)
{
	ck_assert_int_eq(th_sh(out, n, "'%s' dlq list --data '%s'", TIDE_BIN, data), 0);
}

/* Store events first, with no consumer, so that they have a seq of their
 * own in the log before any handler runs on them. */
static void
store(const char *data, int hang_at, int n)
{
	th_daemon d;
	char id[32];

	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s'", data), 0);
	for (int k = 1; k <= n; k++) {
		snprintf(id, sizeof id, "e%d", k);
		publish(&d, id, k == hang_at);
	}
	ck_assert_int_eq(th_daemon_stop(&d), 0);
}

/* SIGTERM ends the daemon @p d, frozen in a handler, with status 1 and
 * within its stop timeout. */
static void
sigterm_ends(th_daemon *d)
{
	int64_t t0 = th_ms();

	kill(d->pid, SIGTERM);
	ck_assert_int_eq(th_daemon_wait(d, 10000), 1);
	ck_assert_msg(th_ms() - t0 < 5000, "stopping took %lld ms", (long long)(th_ms() - t0));
}

START_TEST(sigterm_ends_a_frozen_engine_and_the_event_is_set_aside)
{
	const char *dir = th_tmpdir();
	const char *script = th_write(dir, "c.lua", hanging_consumer);
	char data[600], out[8192];
	th_daemon d;

	snprintf(data, sizeof data, "%s/data", dir);
	store(data, 2, 3);
	ck_assert_int_eq(
		th_daemon_spawn(&d, data, "--data '%s' --script '%s' " UNBOUNDED, data, script), 0);
	ck_assert(th_wait_file(d.log, "hanging on e2", 10000));
	/* the engine is stuck in the handler: SIGTERM still ends it */
	sigterm_ends(&d);
	ck_assert(th_wait_file(d.log, "a handler is stuck; its event is set aside", 1000));

	/* the next start does not run it again: it is a dead letter with the
	 * reason, and the events after it are handled */
	ck_assert_int_eq(
		th_daemon_spawn(&d, data, "--data '%s' --script '%s' " UNBOUNDED, data, script), 0);
	ck_assert(th_wait_settled(data, "c", 5, 10000));
	dlq(data, out, sizeof out);
	HAS(out, "\"seq\":2");
	HAS(out, "the engine froze");
	ck_assert_int_eq(th_count(out, "\"consumer\""), 1);
	ck_assert_int_eq(th_log_count(data, "--type done"), 2);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
	ck_assert(th_wait_file(d.log,
			       "froze (it was ended after it did not stop when asked) while "
			       "consumer 'c' was handling event 2",
			       1000));
}
END_TEST

/* The same freeze while the consumers run on a thread of their own, where
 * calls are not recorded: the process still ends within its stop
 * timeout, the next start keeps them on the engine's thread, where the
 * freeze is recorded, and the start after sets the event aside. */
START_TEST(a_freeze_on_the_consumers_thread_brings_them_home)
{
	const char *dir = th_tmpdir();
	const char *script = th_write(dir, "c.lua", hanging_consumer);
	char data[600], out[8192];
	th_daemon d;

	snprintf(data, sizeof data, "%s/data", dir);
	store(data, 2, 3);
	ck_assert_int_eq(th_daemon_spawn(&d, data,
					 "--data '%s' --script '%s' --set consumer_thread=always "
					 "-v " UNBOUNDED,
					 data, script),
			 0);
	ck_assert(th_wait_file(d.log, "hanging on e2", 10000));
	ck_assert(th_wait_file(d.log, "the consumers run on a thread of their own", 1000));
	sigterm_ends(&d);

	/* home: the freeze happens again, recorded this time */
	ck_assert_int_eq(th_daemon_spawn(&d, data,
					 "--data '%s' --script '%s' --set consumer_thread=always "
					 "-v " UNBOUNDED,
					 data, script),
			 0);
	ck_assert(th_wait_file(d.log, "this time they run on the engine's thread", 10000));
	ck_assert(th_wait_file(d.log, "hanging on e2", 10000));
	kill(d.pid, SIGTERM);
	ck_assert_int_eq(th_daemon_wait(&d, 10000), 1);
	ck_assert(th_wait_file(d.log, "a handler is stuck; its event is set aside", 1000));

	ck_assert_int_eq(
		th_daemon_spawn(&d, data,
				"--data '%s' --script '%s' --set consumer_thread=always " UNBOUNDED,
				data, script),
		0);
	ck_assert(th_wait_settled(data, "c", 5, 10000));
	dlq(data, out, sizeof out);
	HAS(out, "\"seq\":2");
	HAS(out, "the engine froze");
	ck_assert_int_eq(th_log_count(data, "--type done"), 2);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
}
END_TEST

START_TEST(a_second_signal_ends_at_once)
{
	const char *dir = th_tmpdir();
	char data[600];
	th_daemon d;
	int64_t t0;

	snprintf(data, sizeof data, "%s/data", dir);
	store(data, 1, 1);
	ck_assert_int_eq(
		th_daemon_spawn(
			&d, data,
			"--data '%s' --script '%s' --set instruction_budget=0 --set time_limit=0 "
			"--stop-timeout 60",
			data, th_write(dir, "c.lua", hanging_consumer)),
		0);
	ck_assert(th_wait_file(d.log, "hanging on e1", 10000));
	t0 = th_ms();
	kill(d.pid, SIGINT);
	ck_assert(th_wait_file(d.log, "SIGINT received, stopping", 5000));
	kill(d.pid, SIGINT);
	ck_assert_int_eq(th_daemon_wait(&d, 10000), 1);
	ck_assert_msg(th_ms() - t0 < 5000, "took %lld ms", (long long)(th_ms() - t0));
	ck_assert(th_wait_file(d.log, "second signal, exiting now", 1000));
}
END_TEST

/* kill -9 while the handler runs, three times: the fourth start sets the
 * event aside.  One kill (an operator restarting) sets nothing aside. */
START_TEST(three_kills_on_one_event_set_it_aside)
{
	const char *dir = th_tmpdir();
	const char *script = th_write(dir, "c.lua", hanging_consumer);
	char data[600], out[8192], needle[64];
	th_daemon d;

	snprintf(data, sizeof data, "%s/data", dir);
	store(data, 1, 2);
	for (int k = 1; k <= TIDEI_FLIGHT_STRIKES; k++) {
		ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s' --script '%s' " UNBOUNDED,
						 data, script),
				 0);
		/* the log gathers every run: this one's handler is the k-th */
		ck_assert(wait_count(d.log, "hanging on e1", k, 10000));
		th_daemon_kill(&d);
		if (k > 1) {
			snprintf(needle, sizeof needle, "(%d time%s on this event)", k - 1,
				 k == 2 ? "" : "s");
			ck_assert(th_wait_file(d.log, needle, 100));
		}
		dlq(data, out, sizeof out);
		ck_assert_msg(strstr(out, "\"seq\":1") == NULL, "set aside after %d kills", k);
	}
	ck_assert_int_eq(
		th_daemon_spawn(&d, data, "--data '%s' --script '%s' " UNBOUNDED, data, script), 0);
	ck_assert(th_wait_settled(data, "c", 3, 10000));
	dlq(data, out, sizeof out);
	HAS(out, "\"seq\":1");
	HAS(out, "the engine died 3 times while handling this event");
	ck_assert_int_eq(th_daemon_stop(&d), 0);
}
END_TEST

/* A projection cannot skip an event: it stops there with the reason. */
START_TEST(a_frozen_projection_stops_at_its_event)
{
	const char *dir = th_tmpdir();
	const char *script = th_write(
		dir, "p.lua",
		"local tide = require 'tide'\n"
		"tide.projection('p', { parallel = false, on = { x = function(s, ev)\n"
		"  if ev.data.hang then print('hanging on ' .. ev.id); while true do end end\n"
		"  s.n = (s.n or 0) + 1 end } })\n");
	char data[600], out[8192];
	th_daemon d;

	snprintf(data, sizeof data, "%s/data", dir);
	store(data, 2, 3);
	ck_assert_int_eq(
		th_daemon_spawn(&d, data, "--data '%s' --script '%s' " UNBOUNDED, data, script), 0);
	ck_assert(th_wait_file(d.log, "hanging on e2", 10000));
	kill(d.pid, SIGTERM);
	ck_assert_int_eq(th_daemon_wait(&d, 10000), 1);
	ck_assert_int_eq(
		th_daemon_spawn(&d, data, "--data '%s' --script '%s' " UNBOUNDED, data, script), 0);
	ck_assert(
		th_wait_file(d.log, "projection 'p' stopped at event 2: the engine froze", 10000));
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' stat --json --data '%s'", TIDE_BIN, data), 0);
	HAS(out, "\"status\":\"stopped\"");
	ck_assert_int_eq(th_daemon_stop(&d), 0);
}
END_TEST

/* The same while a build runs on threads: the next start builds on the
 * engine's thread, where the event is caught. */
START_TEST(a_frozen_shared_build_is_caught_on_the_engine_thread)
{
	const char *dir = th_tmpdir();
	const char *script = th_write(
		dir, "p.lua",
		"local tide = require 'tide'\n"
		"tide.projection('p', { on = { x = function(s, ev)\n"
		"  if ev.data.hang then print('hanging on ' .. ev.id); while true do end end\n"
		"  s.n = (s.n or 0) + 1 end } })\n");
	char data[600], out[8192], path[700];
	th_daemon d;
	FILE *f;

	snprintf(data, sizeof data, "%s/data", dir);
	snprintf(path, sizeof path, "%s/in.ndjson", dir);
	ck_assert_ptr_nonnull(f = fopen(path, "w"));
	for (int k = 1; k <= 3000; k++)
		fprintf(f,
			"{\"specversion\":\"1.0\",\"id\":\"e%d\",\"source\":\"/t\",\"type\":\"x\","
			"\"subject\":\"s%d\",\"data\":{\"hang\":%s}}\n",
			k, k % 50, k == 2500 ? "true" : "false");
	fclose(f);
	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s'", data), 0);
	ck_assert_int_eq(
		th_sh(out, sizeof out, "'%s' publish --data '%s' < '%s'", TIDE_BIN, data, path), 0);
	ck_assert_int_eq(th_daemon_stop(&d), 0);

	ck_assert_int_eq(
		th_daemon_spawn(&d, data,
				"--data '%s' --script '%s' --set build_threads=2 " UNBOUNDED, data,
				script),
		0);
	ck_assert(th_wait_file(d.log, "on 2 threads", 10000));
	ck_assert(th_wait_file(d.log, "hanging on e2500", 10000));
	kill(d.pid, SIGTERM);
	ck_assert_int_eq(th_daemon_wait(&d, 10000), 1);

	ck_assert_int_eq(
		th_daemon_spawn(&d, data,
				"--data '%s' --script '%s' --set build_threads=2 " UNBOUNDED, data,
				script),
		0);
	ck_assert(th_wait_file(d.log, "this time it is built on the engine's thread", 10000));
	ck_assert(th_wait_file(d.log, "hanging on e2500", 10000));
	kill(d.pid, SIGTERM);
	ck_assert_int_eq(th_daemon_wait(&d, 10000), 1);

	ck_assert_int_eq(
		th_daemon_spawn(&d, data,
				"--data '%s' --script '%s' --set build_threads=2 " UNBOUNDED, data,
				script),
		0);
	ck_assert(th_wait_file(d.log, "projection 'p' stopped at event 2500: the engine froze",
			       10000));
	ck_assert_int_eq(th_daemon_stop(&d), 0);
}
END_TEST

/* The library side, as an embedder's crash handler uses it: a C consumer
 * "crashes" (the child records the signal and dies); the next engine sets
 * the event aside. */
typedef struct crash_ctx {
	tide_engine *e;
	int calls;
} crash_ctx;

static int
crashing(void *ud, const tide_event *ev)
{
	crash_ctx *c = ud;
	const char *id = tide_event_attr(ev, "id", NULL);

	c->calls++;
	if (id != NULL && strcmp(id, "e2") == 0) {
		if (tide_engine_postmortem(c->e, SIGSEGV) != 1)
			_exit(2);
		_exit(139);
	}
	return TIDE_OK;
}

/* Run an engine in this process until its consumer was called @p calls
 * times and a few more turns have committed. */
static void
run_embedded(const char *data, int calls)
{
	tide_config *cfg;
	crash_ctx c = { NULL, 0 };
	int64_t deadline = th_ms() + 10000, settle = 0;

	ck_assert_int_eq(tide_config_new(&cfg), TIDE_OK);
	ck_assert_int_eq(tide_config_set(cfg, "data", data), TIDE_OK);
	ck_assert_int_eq(tide_config_set(cfg, "pull", ""), TIDE_OK);
	ck_assert_int_eq(tide_config_set(cfg, "rep", ""), TIDE_OK);
	ck_assert_int_eq(tide_config_set(cfg, "pub", ""), TIDE_OK);
	ck_assert_int_eq(tide_engine_new(&c.e, cfg), TIDE_OK);
	ck_assert_int_eq(tide_consumer_add(c.e, "crashy", "x", &th_from_beginning, crashing, &c),
			 TIDE_OK);
	ck_assert_int_eq(tide_engine_open(c.e, NULL), TIDE_OK);
	while (th_ms() < deadline && (settle == 0 || th_ms() < settle)) {
		event_base_loop(tide_engine_base(c.e), EVLOOP_NONBLOCK);
		if (settle == 0 && c.calls >= calls)
			settle = th_ms() + 300;
		th_pause();
	}
	ck_assert_int_eq(c.calls, calls);
	tide_engine_destroy(c.e);
	tide_config_destroy(cfg);
}

START_TEST(a_crash_recorded_by_the_embedder_sets_the_event_aside)
{
	const char *dir = th_tmpdir();
	char data[600], out[8192];
	pid_t pid;
	int st;

	snprintf(data, sizeof data, "%s/data", dir);
	store(data, 0, 3);
	if ((pid = fork()) == 0) {
		run_embedded(data, 99);
		_exit(0);
	}
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 139, "child status %d", st);
	/* e1 and e3: e2 is not called again */
	run_embedded(data, 2);
	dlq(data, out, sizeof out);
	HAS(out, "\"consumer\":\"crashy\",\"seq\":2");
	HAS(out, "the engine crashed (signal 11) while handling this event");
}
END_TEST

/* A SIGHUP as soon as the endpoints file appears (a supervisor reloading
 * at once) does not kill the daemon: it once had the default action until
 * the loop ran. */
START_TEST(sighup_at_start_is_harmless)
{
	const char *dir = th_tmpdir();
	char data[600], reply[256];
	th_daemon d;

	snprintf(data, sizeof data, "%s/data", dir);
	for (int k = 0; k < 20; k++) {
		ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s'", data), 0);
		kill(d.pid, SIGHUP);
		ck_assert_int_gt(th_req(d.rep, "{\"query\":\"none\"}", reply, sizeof reply, 10000),
				 0);
		ck_assert_int_eq(th_daemon_stop(&d), 0);
	}
}
END_TEST

Suite *
flight_suite(void)
{
	Suite *s = suite_create("flight");
	TCase *tc = tcase_create("recorder");

	tcase_set_timeout(tc, 180);
	tcase_add_test(tc, sigterm_ends_a_frozen_engine_and_the_event_is_set_aside);
	tcase_add_test(tc, a_freeze_on_the_consumers_thread_brings_them_home);
	tcase_add_test(tc, a_second_signal_ends_at_once);
	tcase_add_test(tc, three_kills_on_one_event_set_it_aside);
	tcase_add_test(tc, a_frozen_projection_stops_at_its_event);
	tcase_add_test(tc, a_frozen_shared_build_is_caught_on_the_engine_thread);
	tcase_add_test(tc, a_crash_recorded_by_the_embedder_sets_the_event_aside);
	tcase_add_test(tc, sighup_at_start_is_harmless);
	suite_add_tcase(s, tc);
	return s;
}
