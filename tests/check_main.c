/*
 * check_main.c - the one runner: every suite, in the order a failure is
 * easiest to read (formats first, the whole daemon last).
 * CK_RUN_SUITE=log runs one suite; CK_RUN_CASE one test case.
 */
#include "config.h"

#include <check.h>
#include <stdlib.h>

#include "helpers.h"

#ifdef TIDE_HAVE_NATS
#include "nats_rig.h" /* nats_suite() */
#endif

int
main(void)
{
	SRunner *sr = srunner_create(event_suite());
	int failed;

	srunner_add_suite(sr, cloudevents_suite());
	srunner_add_suite(sr, json_suite());
	srunner_add_suite(sr, jscan_suite());
	srunner_add_suite(sr, value_suite());
	srunner_add_suite(sr, agg_suite());
	srunner_add_suite(sr, stats_suite());
	srunner_add_suite(sr, log_suite());
	srunner_add_suite(sr, lua_suite());
	srunner_add_suite(sr, engine_suite());
	srunner_add_suite(sr, cli_suite());
	srunner_add_suite(sr, crash_suite());
	srunner_add_suite(sr, replay_suite());
	srunner_add_suite(sr, retry_suite());
	srunner_add_suite(sr, projection_suite());
	srunner_add_suite(sr, request_suite());
	srunner_add_suite(sr, dlq_suite());
	srunner_add_suite(sr, limits_suite());
	srunner_add_suite(sr, flight_suite());
	srunner_add_suite(sr, keys_suite());
	srunner_add_suite(sr, damage_suite());
	srunner_add_suite(sr, sandbox_suite());
	srunner_add_suite(sr, rules_suite());
	srunner_add_suite(sr, turns_suite());
	srunner_add_suite(sr, cthread_suite());
	srunner_add_suite(sr, check_suite());
	srunner_add_suite(sr, backtest_suite());
	srunner_add_suite(sr, nab_suite());
	srunner_add_suite(sr, http_suite());
#ifdef TIDE_HAVE_NATS
	srunner_add_suite(sr, nats_suite());
	srunner_add_suite(sr, cluster_suite());
#endif
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
