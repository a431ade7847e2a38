/*
 * test_cli.c - the `tide` command's contract: help on every subcommand,
 * exit codes, errors on stderr, machine-readable stdout.
 */
#include <check.h>
#include <stdio.h>
#include <string.h>

#include "helpers.h"

START_TEST(help_everywhere)
{
	static const char *const cmds[] = {"run", "publish", "tail", "log", "stat"};
	char out[8192];

	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' --help", TIDE_BIN), 0);
	ck_assert_ptr_nonnull(strstr(out, "usage: tide"));
	for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++) {
		ck_assert_int_eq(th_sh(out, sizeof out, "'%s' %s --help", TIDE_BIN, cmds[i]), 0);
		ck_assert_msg(strstr(out, "usage: tide ") != NULL, "%s --help", cmds[i]);
	}
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' nonsense 2>&1", TIDE_BIN), 2);
	ck_assert_ptr_nonnull(strstr(out, "'nonsense' is not a command"));
}
END_TEST

Suite *
cli_suite(void)
{
	Suite *s = suite_create("cli");
	TCase *tc = tcase_create("contract");

	tcase_add_checked_fixture(tc, NULL, th_cleanup);
	tcase_add_test(tc, help_everywhere);
	suite_add_tcase(s, tc);
	return s;
}
