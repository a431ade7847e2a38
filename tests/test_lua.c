/*
 * test_lua.c - the Lua host through an in-process engine: tide.on and
 * tide.emit, the event table, error isolation, the sandbox and budgets.
 * The engine runs on its own event_base with no sockets; events go in
 * through tide_publish() and come out of the log.
 */
#include <check.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "tide.h"

/* An engine with @p script (Lua source), data in a fresh directory. */
typedef struct rig {
	tide_engine *e;
	tide_config *cfg;
	const char *dir;
	char logs[16384];
	size_t loglen;
	int results, stored;
} rig;

static void
collect_log(void *ud, int level, const char *msg)
{
	rig *r = ud;
	int n = snprintf(r->logs + r->loglen, sizeof r->logs - r->loglen, "%d %s\n", level, msg);

	if (n > 0 && r->loglen + (size_t)n < sizeof r->logs)
		r->loglen += (size_t)n;
}

static int
rig_open(rig *r, const char *script)
{
	char data[600];

	memset(r, 0, sizeof *r);
	r->dir = th_tmpdir();
	snprintf(data, sizeof data, "%s/data", r->dir);
	ck_assert_int_eq(tide_config_new(&r->cfg), TIDE_OK);
	tide_config_set(r->cfg, "data", data);
	tide_config_set(r->cfg, "pull", "");
	tide_config_set(r->cfg, "rep", "");
	tide_config_set(r->cfg, "pub", "");
	tide_config_set(r->cfg, "log_level", "debug");
	tide_config_set_log(r->cfg, collect_log, r);
	tide_config_add_script(r->cfg, th_write(r->dir, "s.lua", script));
	ck_assert_int_eq(tide_engine_new(&r->e, r->cfg), TIDE_OK);
	return tide_engine_open(r->e, NULL);
}

static void
rig_close(rig *r)
{
	tide_engine_destroy(r->e);
	tide_config_destroy(r->cfg);
}

static void
on_result(void *ud, const tide_result *res)
{
	rig *r = ud;

	r->results++;
	r->stored += res->code == TIDE_OK;
}

/* Publish and run the loop until every result is in and consumers idle. */
static void
rig_publish(rig *r, const char *json)
{
	int want = r->results + 1;
	int64_t deadline = th_ms() + 10000;

	ck_assert_int_eq(tide_publish(r->e, json, strlen(json), on_result, r), TIDE_OK);
	while (r->results < want && th_ms() < deadline)
		event_base_loop(tide_engine_base(r->e), EVLOOP_ONCE | EVLOOP_NONBLOCK);
	ck_assert_int_ge(r->results, want);
	/* let the consumers catch up with what they emitted */
	for (int i = 0; i < 50; i++)
		event_base_loop(tide_engine_base(r->e), EVLOOP_ONCE | EVLOOP_NONBLOCK);
}

/* Read the log of rig @p r: lines of NDJSON into @p out. */
static int
rig_log(rig *r, char *out, size_t len)
{
	char data[600];

	snprintf(data, sizeof data, "%s/data", r->dir);
	return th_sh(out, len, "'%s' log --data '%s'", TIDE_BIN, data);
}

#define EV(id, type, extra) \
	"{\"specversion\":\"1.0\",\"id\":\"" id "\",\"source\":\"/t\",\"type\":\"" type "\"" extra "}"

START_TEST(emit_carries_causation)
{
	rig r;
	char out[8192];

	ck_assert_int_eq(rig_open(&r, "local tide = require 'tide'\n"
	                              "tide.on('order.placed', function(ev)\n"
	                              "  tide.emit{ type = 'payment.requested', subject = ev.subject,\n"
	                              "             data = { amount = ev.data.total * 2 } }\n"
	                              "end, { name = 'pay', from = 'beginning' })\n"),
	                 TIDE_OK);
	rig_publish(&r, EV("o1", "order.placed", ",\"subject\":\"c1\",\"data\":{\"total\":21}"));
	ck_assert_int_eq(r.stored, 1);
	rig_close(&r);
	ck_assert_int_eq(rig_log(&r, out, sizeof out), 0);
	ck_assert_ptr_nonnull(strstr(out, "\"type\":\"payment.requested\""));
	ck_assert_ptr_nonnull(strstr(out, "\"causationid\":\"o1\""));
	ck_assert_ptr_nonnull(strstr(out, "\"correlationid\":\"o1\""));
	ck_assert_ptr_nonnull(strstr(out, "\"data\":{\"amount\":42}"));
}
END_TEST

Suite *
lua_suite(void)
{
	Suite *s = suite_create("lua");
	TCase *tc = tcase_create("host");

	tcase_add_checked_fixture(tc, NULL, th_cleanup);
	tcase_add_test(tc, emit_carries_causation);
	suite_add_tcase(s, tc);
	return s;
}
