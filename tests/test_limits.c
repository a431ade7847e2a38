/*
 * test_limits.c - size and memory limits meet their users with clear
 * errors: a message over max_message_size is refused with an answer (REP),
 * a log line (PULL) or before it is sent (`tide publish`), and whatever
 * else arrives is stored as usual.
 */
#define _GNU_SOURCE
#include <check.h>
#include <nanomsg/nn.h>
#include <nanomsg/pipeline.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"
#include "ingest.h"
#include "tide.h"

#define HAS(text, needle) \
	ck_assert_msg(strstr(text, needle) != NULL, "'%s' not in:\n%s", needle, text)

/* An event whose data holds @p pad bytes of text (malloc'd). */
static char *
big_event(const char *id, size_t pad)
{
	char *s = malloc(pad + 200);
	int n;

	ck_assert_ptr_nonnull(s);
	n = snprintf(s, 200,
		     "{\"specversion\":\"1.0\",\"id\":\"%s\",\"source\":\"/t\",\"type\":\"big\","
		     "\"data\":\"",
		     id);
	memset(s + n, 'a', pad);
	strcpy(s + n + pad, "\"}");
	return s;
}

START_TEST(oversized_messages_are_refused_clearly)
{
	const char *dir = th_tmpdir();
	char data[600], reply[1024], out[4096], path[700];
	th_daemon d;
	char *ev;
	int push, rc;
	FILE *f;

	snprintf(data, sizeof data, "%s/data", dir);
	ck_assert_int_eq(th_daemon_spawn(&d, data,
					 "--data '%s' --set max_message_size=64K "
					 "--set max_event_size=32K",
					 data),
			 0);
	/* the limit is what the engine says it is */
	ck_assert_int_eq(th_sh(out, sizeof out, "grep max_message= '%s/endpoints'", data), 0);
	HAS(out, "max_message=65536");

	/* REP: over the limit (up to twice it) gets an answer */
	ev = big_event("r1", 100 * 1024);
	ck_assert_int_gt(th_req(d.rep, ev, reply, sizeof reply, 10000), 0);
	HAS(reply, "\"ok\":false");
	HAS(reply, "over the max_message_size limit of 64 KiB; nothing in it was stored");
	free(ev);

	/* PULL: the same is said in the log */
	ev = big_event("p1", 100 * 1024);
	push = nn_socket(AF_SP, NN_PUSH);
	ck_assert_int_ge(nn_connect(push, d.pull), 0);
	ck_assert_int_eq(nn_send(push, ev, strlen(ev), 0), (int)strlen(ev));
	ck_assert_msg(th_wait_file(d.log, "pull: a message of", 10000), "no log line in %s", d.log);
	ck_assert(th_wait_file(d.log, "over the max_message_size limit of 64 KiB", 1000));
	nn_close(push);
	free(ev);

	/* tide publish does not send what the engine cannot take (far beyond
	 * the limit nanomsg would only close the connection), and sends the
	 * rest */
	snprintf(path, sizeof path, "%s/in.ndjson", dir);
	ck_assert_ptr_nonnull(f = fopen(path, "w"));
	ev = big_event("c1", 300 * 1024);
	fprintf(f, "%s\n", ev);
	fprintf(f,
		"{\"specversion\":\"1.0\",\"id\":\"c2\",\"source\":\"/t\",\"type\":\"small\"}\n");
	fclose(f);
	free(ev);
	rc = th_sh(out, sizeof out, "'%s' publish --data '%s' --timeout 20 < '%s' 2>&1", TIDE_BIN,
		   data, path);
	ck_assert_int_eq(rc, 1);
	HAS(out, "line 1: an event of");
	HAS(out, "over the engine's max_message_size of 65536 bytes; not sent");
	HAS(out, "1 stored");

	/* within the limits, everything works */
	ck_assert_int_gt(th_req(d.rep,
				"{\"specversion\":\"1.0\",\"id\":\"ok\",\"source\":\"/"
				"t\",\"type\":\"small\"}",
				reply, sizeof reply, 10000),
			 0);
	HAS(reply, "\"ok\":true");
	ck_assert_int_eq(th_log_count(data, "--type big"), 0);
	ck_assert_int_eq(th_log_count(data, "--type small"), 2);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
}
END_TEST

START_TEST(message_limit_below_event_limit_is_a_config_error)
{
	const char *dir = th_tmpdir();
	char out[4096];

	ck_assert_int_eq(th_sh(out, sizeof out,
			       "'%s' run --data '%s/d' --set max_message_size=1K 2>&1", TIDE_BIN,
			       dir),
			 1);
	HAS(out, "max_message_size (1024 bytes) must be at least max_event_size");
}
END_TEST

/* @p invalid events "{}" and one valid event of id @p id, one per line
 * (malloc'd). */
static char *
mostly_invalid(size_t invalid, const char *id)
{
	size_t cap = invalid * 3 + 200;
	char *s = malloc(cap), *p = s;

	ck_assert_ptr_nonnull(s);
	for (size_t k = 0; k < invalid; k++, p += 3)
		memcpy(p, "{}\n", 3);
	snprintf(p, 200,
		 "{\"specversion\":\"1.0\",\"id\":\"%s\",\"source\":\"/t\",\"type\":\"ok\"}", id);
	return s;
}

/* Peak resident memory of process @p pid in KiB, or -1. */
static long
peak_kib(pid_t pid)
{
	char out[256];

	if (th_sh(out, sizeof out, "grep VmHWM /proc/%d/status | tr -dc 0-9", (int)pid) != 0)
		return -1;
	return atol(out);
}

/* Each refused event is answered with a line of tens of bytes, so a
 * message of nothing but "{}" once took gigabytes of replies: a message
 * with more than 10,000 invalid events is refused whole, with one answer. */
START_TEST(mostly_invalid_messages_are_refused_whole)
{
	const char *dir = th_tmpdir();
	size_t replylen = 4 << 20;
	char data[600], *reply = malloc(replylen), *msg;
	th_daemon d;
	int push;

	ck_assert_ptr_nonnull(reply);
	snprintf(data, sizeof data, "%s/data", dir);
	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s'", data), 0);

	/* up to the bound, each event is answered on its own */
	msg = mostly_invalid(10000, "a");
	ck_assert_int_gt(th_req(d.rep, msg, reply, replylen, 30000), 0);
	ck_assert_int_eq(th_count(reply, "missing required attribute 'specversion'"), 10000);
	HAS(reply, "\"ok\":true");
	free(msg);

	/* beyond it, the whole message is refused: its valid event too */
	msg = mostly_invalid(10001, "b");
	ck_assert_int_gt(th_req(d.rep, msg, reply, replylen, 30000), 0);
	ck_assert_str_eq(reply, "{\"ok\":false,\"error\":\"message refused: more than 10000 of its "
				"events are invalid; nothing of it was stored\"}");
	free(msg);
	ck_assert(th_wait_file(d.log, "rep: a message of 30059 bytes was refused whole", 1000));

	/* PULL: 16 MiB of "{}" costs a log line, not gigabytes */
	msg = mostly_invalid((16 << 20) / 3 - 100, "c");
	push = nn_socket(AF_SP, NN_PUSH);
	ck_assert_int_ge(nn_connect(push, d.pull), 0);
	ck_assert_int_eq(nn_send(push, msg, strlen(msg), 0), (int)strlen(msg));
	ck_assert_msg(th_wait_file(d.log, "pull: a message of", 30000), "no log line in %s", d.log);
	{
		char *log = th_slurp(d.log);

		ck_assert_ptr_nonnull(log);
		HAS(log, "more than 10000 of its events are invalid; nothing of it was stored");
		free(log);
	}
	nn_close(push);
	free(msg);
	ck_assert_int_lt(peak_kib(d.pid), 256 * 1024);

	/* tide publish counts every event of such a message as refused */
	msg = mostly_invalid(10001, "d");
	{
		char path[700], out[4096];
		FILE *f;

		snprintf(path, sizeof path, "%s/in.ndjson", dir);
		ck_assert_ptr_nonnull(f = fopen(path, "w"));
		fprintf(f, "%s\n", msg);
		fclose(f);
		ck_assert_int_eq(
			th_sh(out, sizeof out,
			      "'%s' publish --data '%s' --batch 20000 < '%s' 2>&1 | tail -n 2",
			      TIDE_BIN, data, path),
			0);
		HAS(out, "lines 1 to 10002: message refused");
		HAS(out, "0 stored, 0 duplicates, 10002 rejected");
	}
	free(msg);

	ck_assert_int_eq(th_log_count(data, "--type ok"), 1);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
	free(reply);
}
END_TEST

/* Endpoints reachable from other machines are warned about at start. */
START_TEST(endpoints_beyond_loopback_are_recognised)
{
	static const char *const local[] = {
		"ipc:///tmp/x/rep.ipc", "inproc://a",           "tcp://127.0.0.1:5551",
		"tcp://127.1.2.3:9",    "tcp://localhost:5551", "tcp://lo;127.0.0.1:5551",
		"tcp://[::1]:5551",     "ws://127.0.0.1:80",
	};
	static const char *const remote[] = {
		"tcp://*:5551",        "tcp://0.0.0.0:5551",
		"tcp://10.0.0.7:5551", "tcp://eth0;10.1.1.1:5",
		"tcp://[::]:5551",     "tcp://example.org:5551",
		"ws://*:80",           "tcp://127.example.org:1x",
		"tcp://[::1x]:5",
	};

	for (size_t k = 0; k < sizeof local / sizeof *local; k++)
		ck_assert_msg(tidei_ingest_local(local[k]), "%s", local[k]);
	for (size_t k = 0; k < sizeof remote / sizeof *remote; k++)
		ck_assert_msg(!tidei_ingest_local(remote[k]), "%s", remote[k]);
}
END_TEST

/* A consumer that runs out of memory and keeps what it took (a global
 * table; pcall cannot hide the error) fails as its own; another consumer
 * of the same scripts does not fail for it: the engine loads the scripts
 * into a fresh state first. */
START_TEST(memory_is_blamed_on_who_used_it)
{
	const char *dir = th_tmpdir();
	const char *script =
		th_write(dir, "m.lua",
			 "local tide = require 'tide'\n"
			 "big = {}\n"
			 "tide.on('hog', function(ev)\n"
			 "  local ok = pcall(function()\n"
			 "    while true do big[#big + 1] = string.rep('x', 1000) .. #big end\n"
			 "  end)\n"
			 "end, { name = 'hog', retries = 0 })\n"
			 "tide.on('*', function(ev)\n"
			 "  if ev.type ~= 'child' then\n"
			 "    local t = {}\n"
			 "    for i = 1, 100 do t[i] = string.rep('y', 100) .. i end\n"
			 "    tide.emit{ type = 'child', data = { of = ev.id, n = #t } }\n"
			 "  end\n"
			 "end, { name = 'innocent', retries = 0 })\n");
	char data[600], reply[512], out[16384];
	th_daemon d;

	snprintf(data, sizeof data, "%s/data", dir);
	ck_assert_int_eq(th_daemon_spawn(&d, data,
					 "--data '%s' --script '%s' --set memory_limit=32M "
					 "--set instruction_budget=0",
					 data, script),
			 0);
	for (int k = 1; k <= 5; k++) {
		char ev[200];
		snprintf(ev, sizeof ev,
			 "{\"specversion\":\"1.0\",\"id\":\"e%d\",\"source\":\"/"
			 "t\",\"type\":\"%s\"}",
			 k, k == 1 || k == 3 ? "hog" : "x");
		ck_assert_int_gt(th_req(d.rep, ev, reply, sizeof reply, 30000), 0);
		HAS(reply, "\"ok\":true");
	}
	ck_assert_int_eq(th_wait_log(data, "--type child", 5, 30000), 5);
	ck_assert(th_wait_settled(data, "innocent", 10, 30000));
	ck_assert(th_wait_settled(data, "hog", 10, 30000));
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' dlq list --data '%s'", TIDE_BIN, data), 0);
	/* the hog is blamed for both its events; the innocent for none */
	ck_assert_int_eq(th_count(out, "\"consumer\":\"hog\""), 2);
	ck_assert_int_eq(th_count(out, "\"consumer\":\"innocent\""), 0);
	HAS(out, "not enough memory");
	ck_assert(th_wait_file(d.log, "after consumer 'hog' ran out of memory", 1000));
	ck_assert(th_wait_file(d.log, "the scripts are loaded into a fresh state", 1000));
	ck_assert_int_eq(th_daemon_stop(&d), 0);
}
END_TEST

Suite *
limits_suite(void)
{
	Suite *s = suite_create("limits");
	TCase *tc = tcase_create("messages");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, oversized_messages_are_refused_clearly);
	tcase_add_test(tc, message_limit_below_event_limit_is_a_config_error);
	tcase_add_test(tc, mostly_invalid_messages_are_refused_whole);
	tcase_add_test(tc, endpoints_beyond_loopback_are_recognised);
	tcase_add_test(tc, memory_is_blamed_on_who_used_it);
	suite_add_tcase(s, tc);
	return s;
}
