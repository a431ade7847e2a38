/*
 * test_engine.c - integration: a real `tide run` process, driven over
 * real nanomsg sockets, its log read back with `tide log`.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

START_TEST(req_acknowledges_after_commit)
{
	const char *dir = th_tmpdir();
	char data[600], reply[4096];
	th_daemon d;

	snprintf(data, sizeof data, "%s/data", dir);
	ck_assert_int_eq(th_daemon_start(&d, data, ""), 0);
	ck_assert_int_gt(th_req(d.rep,
	                        "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/t\",\"type\":\"x\"}",
	                        reply, sizeof reply, 5000),
	                 0);
	ck_assert_str_eq(reply, "{\"ok\":true,\"seq\":1}");
	ck_assert_int_gt(th_req(d.rep,
	                        "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/t\",\"type\":\"x\"}",
	                        reply, sizeof reply, 5000),
	                 0);
	ck_assert_str_eq(reply, "{\"ok\":true,\"duplicate\":true,\"seq\":1}");
	ck_assert_int_eq(th_log_count(data, ""), 1);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
}
END_TEST

Suite *
engine_suite(void)
{
	Suite *s = suite_create("engine");
	TCase *tc = tcase_create("daemon");

	tcase_add_checked_fixture(tc, NULL, th_cleanup);
	tcase_add_test(tc, req_acknowledges_after_commit);
	tcase_set_timeout(tc, 120);
	suite_add_tcase(s, tc);
	return s;
}
