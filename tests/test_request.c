/*
 * test_request.c - requests to the engine on REP: the parser refuses
 * anything malformed rather than reading it as "all", and a real daemon
 * answers malformed dead-letter and query requests with an error while
 * nothing changes.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "helpers.h"
#include "request.h"
#include "tide.h"

#define HAS(text, needle) \
	ck_assert_msg(strstr(text, needle) != NULL, "'%s' not in:\n%s", needle, text)

/* Parse @p msg; returns the code and leaves the error in @p err. */
static int
parse(const char *msg, tidei_request *r, char *err)
{
	static tidei_buf scratch;
	int rc;

	err[0] = '\0';
	rc = tidei_request_parse(r, msg, strlen(msg), &scratch, err);
	return rc;
}

/* @p msg must be refused with a message containing @p why. */
static void
refused(const char *msg, const char *why)
{
	tidei_request r;
	char err[TIDEI_ERRLEN];

	ck_assert_msg(parse(msg, &r, err) == TIDE_EINVAL, "accepted: %s", msg);
	ck_assert_msg(strstr(err, why) != NULL, "%s: '%s' not in '%s'", msg, why, err);
}

START_TEST(parse_queries)
{
	tidei_request r;
	char err[TIDEI_ERRLEN];

	ck_assert_int_eq(parse("{\"query\":\"p\",\"key\":\"c-42\"}", &r, err), TIDE_OK);
	ck_assert_int_eq(r.kind, TIDEI_REQ_QUERY);
	ck_assert_str_eq(r.name, "p");
	ck_assert_str_eq(r.key, "c-42");
	ck_assert_uint_eq(r.klen, 4);
	ck_assert_ptr_null(r.prefix);

	ck_assert_int_eq(parse(" {\"query\":\"p\", \"prefix\":\"c-\", \"limit\":10}", &r, err),
			 TIDE_OK);
	ck_assert_ptr_null(r.key);
	ck_assert_str_eq(r.prefix, "c-");
	ck_assert_uint_eq(r.limit, 10);

	ck_assert_int_eq(parse("{\"query\":\"p\"}", &r, err), TIDE_OK);
	ck_assert_ptr_null(r.key);
	ck_assert_ptr_null(r.prefix);
	ck_assert_uint_eq(r.limit, 0);

	/* a long key is passed on whole */
	{
		sbuf b = { 0 };
		char *msg;
		sb_printf(&b, "{\"query\":\"p\",\"key\":\"");
		for (int k = 0; k < 2000; k++)
			sb_printf(&b, "%c", 'a' + k % 26);
		sb_printf(&b, "\"}");
		msg = sb_take(&b);
		ck_assert_int_eq(parse(msg, &r, err), TIDE_OK);
		ck_assert_uint_eq(r.klen, 2000);
		ck_assert_uint_eq(strlen(r.key), 2000);
		ck_assert_int_eq(r.key[1999], 'a' + 1999 % 26);
		free(msg);
	}

	/* what used to become "every state, no limit" */
	refused("{\"query\":\"p\",\"key\":5}", "\"key\" must be a string");
	refused("{\"query\":\"p\",\"key\":null}", "\"key\" must be a string");
	refused("{\"query\":\"p\",\"key\":{\"a\":1}}", "\"key\" must not be an object");
	refused("{\"query\":\"p\",\"key\":[\"a\"]}", "\"key\" must not be an array");
	refused("{\"query\":\"p\",\"limit\":\"5\"}", "\"limit\" must be a positive integer");
	refused("{\"query\":\"p\",\"limit\":-1}", "\"limit\" must be a positive integer");
	refused("{\"query\":\"p\",\"limit\":0}", "\"limit\" must be a positive integer");
	refused("{\"query\":\"p\",\"limit\":1.5}", "\"limit\" must be a positive integer");
	refused("{\"query\":\"p\",\"prefix\":7}", "\"prefix\" must be a string");
	refused("{\"query\":\"p\",\"key\":\"a\",\"prefix\":\"b\"}", "not both");
	refused("{\"query\":\"p\",\"key\":\"a\",\"limit\":3}", "not both");
	refused("{\"query\":\"p\",\"key\":\"a\\u0000b\"}", "must not contain NUL");
	refused("{\"query\":\"p\",\"kye\":\"a\"}", "unknown member \"kye\"");
	refused("{\"query\":\"p\",\"key\":\"a\",\"key\":\"b\"}", "given twice");
	refused("{\"query\":5}", "\"query\" must be a string");
	refused("{\"query\":\"\"}", "\"query\" must be 1 to 200 bytes long");
	refused("{\"query\":\"p\",\"seq\":3}", "does not belong in a query request");
	refused("{\"key\":\"a\",\"query\":\"p\"}", "begins with \"query\" or \"command\"");
	refused("[1,2]", "a request is a JSON object");
	refused("{\"query\":\"p\"", "not valid JSON");
}
END_TEST

/* A request that names nothing to do is refused, not taken as a request of
 * no kind; and text after the object is refused even when it is the start
 * of a string (which yajl lets through at the end of the text). */
START_TEST(refuses_empty_and_trailing)
{
	refused("{}", "a request begins with \"query\" or \"command\"");
	refused(" { } ", "a request begins with \"query\" or \"command\"");
	refused("{}\r\r\r\"", "text after the document");
	refused("{\"query\":\"p\"} \"key", "text after the document");
	refused("{\"query\":\"p\"}\"", "text after the document");
}
END_TEST

/* A long member name or command is quoted by its start, cut between two
 * characters: the message goes back as JSON, which must be UTF-8. */
START_TEST(long_names_quoted_whole_characters)
{
	const char *a63 = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
	tidei_request r;
	char msg[256], err[TIDEI_ERRLEN], want[96];

	snprintf(want, sizeof want, "\"%s\"", a63);
	snprintf(msg, sizeof msg, "{\"query\":\"p\",\"%s\xe2\x82\xac\":1}", a63);
	ck_assert_int_eq(parse(msg, &r, err), TIDE_EINVAL);
	HAS(err, want);
	snprintf(msg, sizeof msg, "{\"command\":\"%s\xe2\x82\xac\"}", a63);
	ck_assert_int_eq(parse(msg, &r, err), TIDE_EINVAL);
	HAS(err, want);
}
END_TEST

START_TEST(parse_commands)
{
	tidei_request r;
	char err[TIDEI_ERRLEN];

	ck_assert_int_eq(
		parse("{\"command\":\"dlq\",\"op\":\"drop\",\"consumer\":\"cp\",\"seq\":1}", &r,
		      err),
		TIDE_OK);
	ck_assert_int_eq(r.kind, TIDEI_REQ_DLQ);
	ck_assert_int_eq(r.op, TIDE_DLQ_DROP);
	ck_assert_str_eq(r.consumer, "cp");
	ck_assert_uint_eq(r.seq, 1);
	/* absent members, and only absent ones, mean "all" */
	ck_assert_int_eq(parse("{\"command\":\"dlq\",\"op\":\"retry\"}", &r, err), TIDE_OK);
	ck_assert_int_eq(r.op, TIDE_DLQ_RETRY);
	ck_assert_str_eq(r.consumer, "");
	ck_assert_uint_eq(r.seq, 0);

	/* the request of the report, and its relatives */
	refused("{\"command\":\"dlq\",\"op\":\"drop\",\"consumer\":\"cp\",\"seq\":\"1\"}",
		"\"seq\" must be a positive integer");
	refused("{\"command\":\"dlq\",\"op\":\"drop\",\"seq\":0}", "\"seq\" must be a positive");
	refused("{\"command\":\"dlq\",\"op\":\"drop\",\"seq\":-4}", "\"seq\" must be a positive");
	refused("{\"command\":\"dlq\",\"op\":\"drop\",\"seq\":2.0}", "\"seq\" must be a positive");
	refused("{\"command\":\"dlq\",\"op\":\"drop\",\"seq\":null}", "\"seq\" must be a positive");
	refused("{\"command\":\"dlq\",\"op\":\"drop\",\"consumer\":5}",
		"\"consumer\" must be a string");
	refused("{\"command\":\"dlq\",\"op\":\"drop\",\"consumer\":[\"cp\"]}",
		"\"consumer\" must not be an array");
	refused("{\"command\":\"dlq\",\"op\":\"drop\",\"consumer\":\"\"}",
		"\"consumer\" must be 1 to 200 bytes long");
	refused("{\"command\":\"dlq\",\"op\":\"drop\",\"consumer\":\"c\\u0000p\"}",
		"must not contain control characters");
	refused("{\"command\":\"dlq\",\"op\":\"drop\",\"sequence\":1}",
		"unknown member \"sequence\"");
	refused("{\"command\":\"dlq\",\"op\":\"drop\",\"name\":\"x\"}",
		"\"name\" does not belong in a dlq request");
	refused("{\"command\":\"dlq\"}", "\"op\" must be \"retry\" or \"drop\"");
	refused("{\"command\":\"dlq\",\"op\":\"bury\"}", "\"op\" must be \"retry\" or \"drop\"");
	refused("{\"command\":\"dlq\",\"op\":1}", "\"op\" must be \"retry\" or \"drop\"");
	refused("{\"command\":\"nuke\"}", "unknown command \"nuke\"");
	refused("{\"command\":1}", "\"command\" must be");

	ck_assert_int_eq(
		parse("{\"command\":\"projection\",\"op\":\"rebuild\",\"name\":\"p\"}", &r, err),
		TIDE_OK);
	ck_assert_int_eq(r.kind, TIDEI_REQ_REBUILD);
	ck_assert_str_eq(r.name, "p");
	refused("{\"command\":\"projection\",\"op\":\"rebuild\"}", "projection: give its \"name\"");
	refused("{\"command\":\"projection\",\"op\":\"drop\",\"name\":\"p\"}",
		"projection: \"op\" must be \"rebuild\"");
	refused("{\"command\":\"projection\",\"op\":\"rebuild\",\"name\":3}",
		"\"name\" must be a string");
}
END_TEST

START_TEST(recognised)
{
	ck_assert(tidei_request_is("{\"query\":1}", 11));
	ck_assert(tidei_request_is(" \n{ \"command\":1}", 16));
	ck_assert(!tidei_request_is("{\"id\":\"x\",\"query\":1}", 20));
	ck_assert(!tidei_request_is("[{\"query\":1}]", 13));
	ck_assert(!tidei_request_is("", 0));
}
END_TEST

/* ------------------------------------------------------------------------
 * Against a real engine
 * ------------------------------------------------------------------------ */

static const char failing_script[] =
	"local tide = require 'tide'\n"
	"tide.on('x', function(ev) error('no') end, { name = 'cp', retries = 0 })\n"
	"tide.projection('p', { on = { x = function(s, ev) s.n = (s.n or 0) + 1 end } })\n";

static long
dead_count(const char *data)
{
	char out[16384];

	if (th_sh(out, sizeof out, "'%s' dlq list --data '%s'", TIDE_BIN, data) != 0)
		return -1;
	return th_count(out, "\"consumer\":\"cp\"");
}

START_TEST(daemon_refuses_wider_actions)
{
	const char *dir = th_tmpdir();
	char data[600], reply[4096];
	th_daemon d;
	int64_t deadline;
	static const char *const bad[] = {
		"{\"command\":\"dlq\",\"op\":\"drop\",\"consumer\":\"cp\",\"seq\":\"1\"}",
		"{\"command\":\"dlq\",\"op\":\"drop\",\"consumer\":\"cp\",\"seq\":0}",
		"{\"command\":\"dlq\",\"op\":\"drop\",\"consumer\":\"cp\",\"seq\":-1}",
		"{\"command\":\"dlq\",\"op\":\"drop\",\"consumer\":7,\"seq\":1}",
		"{\"command\":\"dlq\",\"op\":\"drop\",\"consumer\":null}",
		"{\"command\":\"dlq\",\"op\":\"drop\",\"seqs\":[1]}",
		"{\"command\":\"dlq\",\"op\":\"retry\",\"seq\":{}}",
	};

	snprintf(data, sizeof data, "%s/data", dir);
	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s' --script '%s'", data,
					 th_write(dir, "f.lua", failing_script)),
			 0);
	for (int k = 1; k <= 3; k++) {
		char ev[200];
		snprintf(ev, sizeof ev,
			 "{\"specversion\":\"1.0\",\"id\":\"e%d\",\"source\":\"/t\",\"type\":\"x\","
			 "\"subject\":\"s%d\"}",
			 k, k);
		ck_assert_int_gt(th_req(d.rep, ev, reply, sizeof reply, 10000), 0);
		HAS(reply, "\"ok\":true");
	}
	deadline = th_ms() + 10000;
	while (dead_count(data) != 3 && th_ms() < deadline)
		th_pause();
	ck_assert_int_eq(dead_count(data), 3);

	for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
		ck_assert_int_gt(th_req(d.rep, bad[k], reply, sizeof reply, 10000), 0);
		ck_assert_msg(strstr(reply, "\"ok\":false") != NULL, "%s -> %s", bad[k], reply);
		ck_assert_int_eq(dead_count(data), 3);
	}
	/* the well-formed request still does exactly what it says */
	ck_assert_int_gt(
		th_req(d.rep, "{\"command\":\"dlq\",\"op\":\"drop\",\"consumer\":\"cp\",\"seq\":1}",
		       reply, sizeof reply, 10000),
		0);
	ck_assert_str_eq(reply, "{\"ok\":true,\"count\":1}");
	ck_assert_int_eq(dead_count(data), 2);

	/* queries: errors, not every state */
	{
		static const char *const badq[] = {
			"{\"query\":\"p\",\"key\":5}",
			"{\"query\":\"p\",\"key\":[\"s1\"]}",
			"{\"query\":\"p\",\"limit\":-1}",
			"{\"query\":\"p\",\"limit\":\"2\"}",
			"{\"query\":\"p\",\"prefix\":\"s\",\"limit\":0}",
		};
		deadline = th_ms() + 10000;
		do {
			th_req(d.rep, "{\"query\":\"p\",\"key\":\"s3\"}", reply, sizeof reply,
			       10000);
		} while (strstr(reply, "\"n\":1") == NULL && th_ms() < deadline && (th_pause(), 1));
		HAS(reply, "{\"ok\":true,\"key\":\"s3\",\"state\":{\"n\":1}}");
		for (size_t k = 0; k < sizeof badq / sizeof *badq; k++) {
			ck_assert_int_gt(th_req(d.rep, badq[k], reply, sizeof reply, 10000), 0);
			ck_assert_msg(strstr(reply, "\"ok\":false") != NULL &&
					      strstr(reply, "states") == NULL,
				      "%s -> %s", badq[k], reply);
		}
		ck_assert_int_gt(th_req(d.rep, "{\"query\":\"p\",\"prefix\":\"s\",\"limit\":2}",
					reply, sizeof reply, 10000),
				 0);
		ck_assert_int_eq(th_count(reply, "\"key\""), 2);
	}
	ck_assert_int_eq(th_daemon_stop(&d), 0);
}
END_TEST

/* A listing answers at most max_message_size bytes, and says when it
 * stopped there: a prefix query over a large projection once built a reply
 * of any size on the engine's thread, larger than a client can take. */
START_TEST(daemon_bounds_listings)
{
	const char *dir = th_tmpdir();
	const char *script =
		th_write(dir, "big.lua",
			 "local tide = require 'tide'\n"
			 "tide.projection('big', {\n"
			 "  init = function() return {} end,\n"
			 "  on = { x = function(s, ev) s.pad = string.rep('p', 3000) end },\n"
			 "})\n");
	size_t replylen = 1 << 20;
	char data[600], *reply = malloc(replylen), *msg = malloc(100 * 200), *p = msg;
	th_daemon d;
	int64_t deadline;
	int n;

	ck_assert_ptr_nonnull(reply);
	ck_assert_ptr_nonnull(msg);
	snprintf(data, sizeof data, "%s/data", dir);
	ck_assert_int_eq(th_daemon_spawn(&d, data,
					 "--data '%s' --script '%s' --set max_message_size=64K "
					 "--set max_event_size=32K",
					 data, script),
			 0);
	for (int k = 0; k < 100; k++)
		p += sprintf(p,
			     "{\"specversion\":\"1.0\",\"id\":\"e%d\",\"source\":\"/t\","
			     "\"type\":\"x\",\"subject\":\"k%03d\"}\n",
			     k, k);
	ck_assert_int_gt(th_req(d.rep, msg, reply, replylen, 10000), 0);
	ck_assert_int_eq(th_count(reply, "\"ok\":true"), 100);
	deadline = th_ms() + 10000;
	do {
		th_req(d.rep, "{\"query\":\"big\",\"key\":\"k099\"}", reply, replylen, 10000);
	} while (strstr(reply, "\"ok\":true") == NULL && th_ms() < deadline && (th_pause(), 1));
	HAS(reply, "\"key\":\"k099\"");

	/* 100 states of 3 KB: the listing stops within 64 KiB and says so */
	n = th_req(d.rep, "{\"query\":\"big\",\"prefix\":\"k\"}", reply, replylen, 10000);
	ck_assert_int_gt(n, 0);
	ck_assert_int_le(n, 64 * 1024);
	HAS(reply, "],\"truncated\":true}");
	ck_assert_int_ge(th_count(reply, "\"key\""), 15);
	ck_assert_int_lt(th_count(reply, "\"key\""), 100);
	/* one within the bound is whole */
	n = th_req(d.rep, "{\"query\":\"big\",\"prefix\":\"k\",\"limit\":5}", reply, replylen,
		   10000);
	ck_assert_int_gt(n, 0);
	ck_assert_int_eq(th_count(reply, "\"key\""), 5);
	ck_assert_ptr_null(strstr(reply, "truncated"));
	ck_assert_int_eq(th_daemon_stop(&d), 0);
	free(msg);
	free(reply);
}
END_TEST

Suite *
request_suite(void)
{
	Suite *s = suite_create("request");
	TCase *tc = tcase_create("parse");

	tcase_add_test(tc, parse_queries);
	tcase_add_test(tc, parse_commands);
	tcase_add_test(tc, refuses_empty_and_trailing);
	tcase_add_test(tc, long_names_quoted_whole_characters);
	tcase_add_test(tc, recognised);
	suite_add_tcase(s, tc);
	tc = tcase_create("daemon");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, daemon_refuses_wider_actions);
	tcase_add_test(tc, daemon_bounds_listings);
	suite_add_tcase(s, tc);
	return s;
}
