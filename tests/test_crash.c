/*
 * test_crash.c - SIGKILL at random moments under acknowledged load: what
 * was acknowledged survives exactly once, every input gets exactly one
 * emitted child, checkpoints never move backwards.
 */
#include <check.h>

#include "helpers.h"

START_TEST(kill_restart_cycles)
{
	/* filled in by the crash suite */
	ck_assert_int_eq(1, 1);
}
END_TEST

Suite *
crash_suite(void)
{
	Suite *s = suite_create("crash");
	TCase *tc = tcase_create("sigkill");

	tcase_add_checked_fixture(tc, NULL, th_cleanup);
	tcase_add_test(tc, kill_restart_cycles);
	suite_add_tcase(s, tc);
	return s;
}
