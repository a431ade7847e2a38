/*
 * test_dlq.c - retrying many dead letters at once is long work done in
 * slices: producers keep getting their acknowledgements while 30,000 dead
 * letters go back to their consumer, and a kill -9 in the middle keeps
 * what was done (every retried event handled exactly once in the end).
 */
#define _GNU_SOURCE
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"
#include "tide.h"

#define N_DEAD 30000

/* Each event's first try fails (the claim is durable, so the retry after a
 * restart succeeds too); a successful try takes a fifth of a millisecond
 * and emits one child. */
static const char script[] = "local tide = require 'tide'\n"
			     "tide.on('x', function(ev)\n"
			     "  if tide.once('first:' .. ev.id) then error('first try fails') end\n"
			     "  local t = os.clock()\n"
			     "  while os.clock() - t < 0.0002 do end\n"
			     "  tide.emit{ type = 'done', data = ev.id }\n"
			     "end, { name = 'slow', retries = 0, ordered = false })\n";

typedef struct counts {
	long done, x;
} counts;

static int
count_one(void *ud, const struct tide_event *ev)
{
	counts *c = ud;
	const char *type = tide_event_attr(ev, "type", NULL);

	if (type != NULL && strcmp(type, "done") == 0)
		c->done++;
	else if (type != NULL && strcmp(type, "x") == 0)
		c->x++;
	return 0;
}

static long
children(const char *data)
{
	counts c = { 0, 0 };

	return th_log_scan(data, 0, count_one, &c) < 0 ? -1 : c.done;
}

static long
dead_count(const char *data)
{
	tide_log *log;
	uint64_t pending = 0, dead = 0;

	if (tide_log_open(&log, data) != TIDE_OK)
		return -1;
	tide_log_consumer_backlog(log, "slow", &pending, &dead);
	tide_log_close(log);
	return (long)dead;
}

START_TEST(retry_all_in_slices)
{
	const char *dir = th_tmpdir();
	char data[600], reply[512], events[700], out[4096];
	th_daemon d;
	FILE *f;
	int64_t deadline, worst = 0;
	pid_t retry;
	long before_kill, done;

	snprintf(data, sizeof data, "%s/data", dir);
	snprintf(events, sizeof events, "%s/x.ndjson", dir);
	ck_assert_ptr_nonnull(f = fopen(events, "w"));
	for (int k = 0; k < N_DEAD; k++)
		fprintf(f,
			"{\"specversion\":\"1.0\",\"id\":\"x%d\",\"source\":\"/t\",\"type\":\"x\","
			"\"subject\":\"s%d\"}\n",
			k, k % 97);
	fclose(f);
	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s' --script '%s' --quiet", data,
					 th_write(dir, "s.lua", script)),
			 0);
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' publish --data '%s' < '%s' 2>&1", TIDE_BIN,
			       data, events),
			 0);
	deadline = th_ms() + 120000;
	while (dead_count(data) < N_DEAD && th_ms() < deadline)
		th_pause();
	ck_assert_int_eq(dead_count(data), N_DEAD);

	/* hand them all back while a producer keeps publishing */
	retry = th_bg(th_write(dir, "retry.out", ""),
		      "'%s' dlq retry --all --data '%s' --timeout 60", TIDE_BIN, data);
	ck_assert_int_gt(retry, 0);
	deadline = th_ms() + 1500;
	for (int k = 0; th_ms() < deadline; k++) {
		char ev[200];
		int64_t t0 = th_ms(), dt;
		snprintf(
			ev, sizeof ev,
			"{\"specversion\":\"1.0\",\"id\":\"y%d\",\"source\":\"/t\",\"type\":\"y\"}",
			k);
		ck_assert_int_gt(th_req(d.rep, ev, reply, sizeof reply, 30000), 0);
		ck_assert_msg(strstr(reply, "\"ok\":true") != NULL, "%s", reply);
		dt = th_ms() - t0;
		if (dt > worst)
			worst = dt;
		usleep(20000);
	}
	/* a turn is bounded in time: nobody waits for the whole retry */
	ck_assert_msg(worst < 1000, "a producer waited %lld ms for its acknowledgement",
		      (long long)worst);

	/* kill -9 in the middle: what was done is kept */
	th_daemon_kill(&d);
	th_bg_wait(retry, 30000);
	before_kill = children(data);
	ck_assert_msg(before_kill > 0 && before_kill < N_DEAD,
		      "%ld of %d retried events were handled before the kill", before_kill, N_DEAD);

	/* the rest after a restart (an interrupted retry request is asked again;
	 * one already marked goes on by itself) */
	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s' --script '%s' --quiet", data,
					 th_write(dir, "s.lua", script)),
			 0);
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' dlq retry --all --data '%s' --timeout 60",
			       TIDE_BIN, data),
			 0);
	deadline = th_ms() + 120000;
	while ((done = children(data)) < N_DEAD && th_ms() < deadline)
		th_pause();
	ck_assert_int_eq(th_daemon_stop(&d), 0);
	/* exactly once: as many children as events, and no dead letter left */
	ck_assert_int_eq(children(data), N_DEAD);
	ck_assert_int_eq(dead_count(data), 0);
}
END_TEST

Suite *
dlq_suite(void)
{
	Suite *s = suite_create("dlq");
	TCase *tc = tcase_create("slices");

	tcase_set_timeout(tc, 600);
	tcase_add_test(tc, retry_all_in_slices);
	suite_add_tcase(s, tc);
	return s;
}
