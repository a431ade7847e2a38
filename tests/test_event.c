/*
 * test_event.c - the event format: validation rules and their messages,
 * message framing (single, NDJSON, batch arrays, broken lines), records,
 * number fidelity and the JSON form.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "helpers.h"
#include "val.h"

/* Collects what the parser reports. */
typedef struct got {
	int n;
	int ok[64];
	char err[64][256];
	tidei_buf rec[64];
} got;

static void
sink(void *ud, const uint8_t *rec, size_t len, const char *err)
{
	got *g = ud;

	ck_assert_int_lt(g->n, 64);
	g->ok[g->n] = err == NULL;
	if (err)
		snprintf(g->err[g->n], sizeof g->err[0], "%s", err);
	else
		tidei_buf_put(&g->rec[g->n], rec, len);
	g->n++;
}

static got *
parse_max(const char *msg, size_t max)
{
	static got g;
	tidei_eparser p;

	for (int i = 0; i < 64; i++)
		tidei_buf_free(&g.rec[i]);
	memset(&g, 0, sizeof g);
	tidei_eparser_init(&p, max);
	ck_assert_int_ge(tidei_eparser_run(&p, msg, strlen(msg), sink, &g), 0);
	tidei_eparser_free(&p);
	return &g;
}

static got *
parse(const char *msg)
{
	return parse_max(msg, 1 << 20);
}

/* Parse one event that must be valid, and give its JSON line. */
static const char *
roundtrip(const char *msg)
{
	static tidei_buf out;
	struct tide_event ev;
	got *g = parse(msg);

	ck_assert_int_eq(g->n, 1);
	ck_assert_msg(g->ok[0], "rejected: %s", g->err[0]);
	ck_assert_int_eq(tidei_event_decode(&ev, g->rec[0].p, g->rec[0].len), 0);
	ev.seq = 0;
	tidei_buf_reset(&out);
	ck_assert_int_eq(tidei_event_json(&out, &ev), 0);
	tidei_buf_putc(&out, '\0');
	return (const char *)out.p;
}

static const char *
reject(const char *msg)
{
	got *g = parse(msg);

	ck_assert_int_eq(g->n, 1);
	ck_assert_msg(!g->ok[0], "accepted: %s", msg);
	return g->err[0];
}

#define MIN "\"specversion\":\"1.0\",\"id\":\"a\",\"source\":\"/s\",\"type\":\"t\""
/* the same without the id, for a second event in a message */
#define MIN2 "\"specversion\":\"1.0\",\"source\":\"/s\",\"type\":\"t\""

/* RFC 3339 times to nanoseconds: precisions, offsets, leap days and
 * seconds, and the ends of what int64 nanoseconds reach. */
START_TEST(time_parse)
{
	static const struct {
		const char *text;
		int ok;
		int64_t ns;
	} cases[] = {
		{ "1970-01-01T00:00:00Z", 1, 0 },
		{ "1970-01-01T00:00:00.000000001Z", 1, 1 },
		{ "1969-12-31T23:59:59.9Z", 1, -100000000 },
		{ "2026-12-02T21:02:39Z", 1, 1796245359000000000 },
		{ "2026-12-02T22:02:39+01:00", 1, 1796245359000000000 },
		{ "2026-12-02T20:32:39-00:30", 1, 1796245359000000000 },
		{ "2026-12-03T06:47:39+09:45", 1, 1796245359000000000 },
		{ "2024-02-29T12:00:00.5Z", 1, 1709208000500000000 },
		{ "2024-02-29t12:00:00.123456789123z", 1, 1709208000123456789 },
		{ "2024-02-29T12:00:00.12345678999Z", 1, 1709208000123456789 },
		{ "2016-12-31T23:59:60Z", 1, 1483228799999999999 },
		{ "1900-01-01T00:00:00Z", 1, -2208988800000000000 },
		{ "2262-04-10T00:00:00Z", 1, 9223200000000000000 },
		{ "1677-09-21T00:12:43.145224192Z", 0, 0 }, /* INT64_MIN itself */
		{ "2262-04-11T23:47:16.854775807Z", 0, 0 }, /* INT64_MAX itself */
		{ "0001-01-01T00:00:00Z", 0, 0 },
		{ "9999-12-31T23:59:59Z", 0, 0 },
		{ "2023-02-29T00:00:00Z", 0, 0 },
		{ "2026-12-02", 0, 0 },
		{ "2026-12-02T21:02:39", 0, 0 },
		{ "2026-12-02T21:02:39.Z", 0, 0 },
		{ "2026-12-02T21:02:39+0100", 0, 0 },
	};

	for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
		int64_t ns = 42;
		int rc = tidei_time_parse(cases[k].text, strlen(cases[k].text), &ns);
		ck_assert_msg(rc == (cases[k].ok ? 0 : -1), "%s: %d", cases[k].text, rc);
		if (cases[k].ok)
			ck_assert_msg(ns == cases[k].ns, "%s: %lld, not %lld", cases[k].text,
				      (long long)ns, (long long)cases[k].ns);
	}
}
END_TEST

START_TEST(valid_minimal)
{
	ck_assert_str_eq(roundtrip("{" MIN "}"),
			 "{\"specversion\":\"1.0\",\"id\":\"a\",\"source\":\"/s\",\"type\":\"t\"}");
}
END_TEST

START_TEST(attribute_order_and_nulls)
{
	/* Optional attributes set to null are absent; output order is fixed. */
	ck_assert_str_eq(
		roundtrip("{\"type\":\"t\",\"subject\":null,\"time\":null,\"source\":\"/s\","
			  "\"id\":\"a\",\"specversion\":\"1.0\",\"dataschema\":null}"),
		"{\"specversion\":\"1.0\",\"id\":\"a\",\"source\":\"/s\",\"type\":\"t\"}");
}
END_TEST

START_TEST(missing_required)
{
	ck_assert_str_eq(reject("{\"specversion\":\"1.0\",\"id\":\"a\",\"type\":\"t\"}"),
			 "missing required attribute 'source'");
	ck_assert_str_eq(reject("{\"id\":\"a\",\"source\":\"/s\",\"type\":\"t\"}"),
			 "missing required attribute 'specversion'");
	ck_assert_str_eq(reject("{\"specversion\":\"1.0\",\"source\":\"/s\",\"type\":\"t\"}"),
			 "missing required attribute 'id'");
	ck_assert_str_eq(reject("{\"specversion\":\"1.0\",\"id\":\"a\",\"source\":\"/s\"}"),
			 "missing required attribute 'type'");
}
END_TEST

START_TEST(specversion)
{
	ck_assert_str_eq(
		reject("{\"specversion\":\"0.3\",\"id\":\"a\",\"source\":\"/s\",\"type\":\"t\"}"),
		"specversion must be \"1.0\", not \"0.3\"");
	ck_assert_ptr_nonnull(strstr(
		reject("{\"specversion\":1.0,\"id\":\"a\",\"source\":\"/s\",\"type\":\"t\"}"),
		"specversion must be \"1.0\""));
}
END_TEST

START_TEST(wrong_types_and_empty)
{
	ck_assert_str_eq(reject("{" MIN ",\"subject\":\"\"}"),
			 "attribute 'subject' must not be empty");
	ck_assert_str_eq(
		reject("{\"specversion\":\"1.0\",\"id\":25,\"source\":\"/s\",\"type\":\"t\"}"),
		"attribute 'id' must be a string, not a number");
	ck_assert_str_eq(reject("{\"specversion\":\"1.0\",\"id\":{\"x\":1},\"source\":\"/"
				"s\",\"type\":\"t\"}"),
			 "attribute 'id' must be a string, not an object");
	ck_assert_str_eq(
		reject("{\"specversion\":\"1.0\",\"id\":null,\"source\":\"/s\",\"type\":\"t\"}"),
		"attribute 'id' must be a non-empty string, not null");
	ck_assert_str_eq(reject("{" MIN ",\"id\":\"b\"}"), "duplicate attribute 'id'");
}
END_TEST

START_TEST(time_rfc3339)
{
	static const char *const good[] = {
		"2018-04-05T17:31:00Z",           "2018-04-05t17:31:00z",
		"2018-04-05T17:31:00.123456789Z", "2018-04-05T18:31:00+01:00",
		"2020-02-29T00:00:00Z",           "2016-12-31T23:59:60Z",
	};
	static const char *const bad[] = {
		"lunchtime",
		"2018-04-05T18:31Z",
		"2018-04-05T18:31:00X",
		"2018-04-05T18:31:00+25:00",
		"2018-04-05T18:31:00+xx:00",
		"2018-04-05T18:31:00+05",
		"2019-02-29T00:00:00Z",
		"2018-13-05T18:31:00Z",
		"2018-04-05 18:31:00Z",
		"2018-04-05T18:31:00.Z",
	};
	for (size_t i = 0; i < sizeof good / sizeof *good; i++)
		ck_assert_msg(tidei_time_valid(good[i], strlen(good[i])), "%s", good[i]);
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
		ck_assert_msg(!tidei_time_valid(bad[i], strlen(bad[i])), "%s", bad[i]);
	ck_assert_str_eq(reject("{" MIN ",\"time\":\"lunchtime\"}"),
			 "attribute 'time' is not an RFC 3339 timestamp: \"lunchtime\"");
	/* time is kept as written: full precision, offset included */
	ck_assert_ptr_nonnull(
		strstr(roundtrip("{" MIN ",\"time\":\"2018-04-05T18:31:00.123456789123+01:00\"}"),
		       "\"time\":\"2018-04-05T18:31:00.123456789123+01:00\""));
}
END_TEST

START_TEST(content_type_and_schema)
{
	ck_assert_ptr_nonnull(
		strstr(reject("{" MIN ",\"datacontenttype\":\"xyz\"}"), "not a media type"));
	roundtrip("{" MIN ",\"datacontenttype\":\"application/json; charset=utf-8\"}");
	ck_assert_ptr_nonnull(
		strstr(reject("{" MIN ",\"dataschema\":\"no scheme\"}"), "absolute URI"));
	roundtrip("{" MIN ",\"dataschema\":\"https://example.com/s.json\"}");
	ck_assert_ptr_nonnull(strstr(reject("{\"specversion\":\"1.0\",\"id\":\"a\",\"source\":"
					    "\"has space\",\"type\":\"t\"}"),
				     "URI-reference"));
}
END_TEST

START_TEST(extensions)
{
	ck_assert_str_eq(roundtrip("{" MIN ",\"ext1\":\"v\",\"num\":42,\"flag\":true}"),
			 "{\"specversion\":\"1.0\",\"id\":\"a\",\"source\":\"/s\",\"type\":\"t\","
			 "\"ext1\":\"v\",\"num\":42,\"flag\":true}");
	ck_assert_ptr_nonnull(
		strstr(reject("{" MIN ",\"MyExt\":\"x\"}"), "lowercase letters and digits"));
	ck_assert_ptr_nonnull(
		strstr(reject("{" MIN ",\"my.ext\":\"x\"}"), "lowercase letters and digits"));
	ck_assert_ptr_nonnull(
		strstr(reject("{" MIN ",\"a_b\":\"x\"}"), "lowercase letters and digits"));
	ck_assert_ptr_nonnull(
		strstr(reject("{" MIN ",\"ext\":1.5}"), "must be a string, boolean or integer"));
	ck_assert_ptr_nonnull(
		strstr(reject("{" MIN ",\"long\":4247483647}"), "32-bit integer range"));
	ck_assert_ptr_nonnull(strstr(reject("{" MIN ",\"obj\":{}}"), "not an object"));
	ck_assert_str_eq(reject("{" MIN ",\"x\":1,\"x\":2}"), "duplicate attribute 'x'");
	/* correlation and causation are kept in the header */
	ck_assert_ptr_nonnull(
		strstr(roundtrip("{" MIN ",\"causationid\":\"c\",\"correlationid\":\"r\"}"),
		       "\"correlationid\":\"r\",\"causationid\":\"c\""));
}
END_TEST

/* An event with n extension attributes a0, a1, ... (freed by the caller). */
static char *
with_extensions(unsigned n)
{
	size_t cap = 64 + sizeof MIN + (size_t)n * 16, len;
	char *msg = malloc(cap);

	ck_assert_ptr_nonnull(msg);
	len = (size_t)snprintf(msg, cap, "{" MIN);
	for (unsigned i = 0; i < n; i++)
		len += (size_t)snprintf(msg + len, cap - len, ",\"a%u\":1", i);
	snprintf(msg + len, cap - len, "}");
	return msg;
}

/* Names are checked for repeats by a scan, so their number is capped: an
 * event of 100,000 extension attributes once held the engine for minutes. */
START_TEST(many_extensions)
{
	char *msg = with_extensions(TIDEI_MAX_EXTENSIONS);
	got *g = parse(msg);

	ck_assert_int_eq(g->n, 1);
	ck_assert_msg(g->ok[0], "rejected: %s", g->err[0]);
	free(msg);

	msg = with_extensions(TIDEI_MAX_EXTENSIONS + 1);
	ck_assert_str_eq(reject(msg), "more than 256 extension attributes");
	free(msg);

	msg = with_extensions(100000);
	int64_t t0 = th_ms();
	g = parse_max(msg, 4 << 20);
	ck_assert_int_eq(g->n, 1);
	ck_assert(!g->ok[0]);
	ck_assert_str_eq(g->err[0], "more than 256 extension attributes");
	ck_assert_int_lt(th_ms() - t0, 5000);
	free(msg);
}
END_TEST

/* An empty member name, first thing a parser reads, is an extension name
 * refused like any other (it once reached the attribute code as NULL). */
START_TEST(empty_member_name)
{
	static const char *const values[] = { "1", "\"x\"", "null", "true", "{}", "[1]", "1.5" };

	for (size_t k = 0; k < sizeof values / sizeof *values; k++) {
		char msg[128];
		snprintf(msg, sizeof msg, "{\"\":%s}", values[k]);
		ck_assert_str_eq(reject(msg), "extension attribute name '' must use only lowercase "
					      "letters and digits");
	}
}
END_TEST

/* A long name is quoted by its start, cut between two characters: the
 * message travels as JSON, which must be UTF-8. */
START_TEST(long_name_quoted_whole_characters)
{
	char msg[256], want[256];

	/* 63 bytes, then a two-byte character across byte 64 */
	snprintf(msg, sizeof msg, "{" MIN ",\"%s\xc3\xa9tail\":1}",
		 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
	snprintf(want, sizeof want,
		 "extension attribute name '%s' must use only lowercase letters and digits",
		 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
	ck_assert_str_eq(reject(msg), want);
}
END_TEST

/* expectedversion is a directive to the log: checked, kept out of the record */
START_TEST(expected_version_attribute)
{
	got *g = parse("{" MIN ",\"subject\":\"s\",\"expectedversion\":3}");

	ck_assert(g->ok[0]);
	ck_assert_ptr_null(strstr(roundtrip("{" MIN ",\"subject\":\"s\",\"expectedversion\":0}"),
				  "expectedversion"));
	ck_assert_ptr_nonnull(strstr(reject("{" MIN ",\"expectedversion\":1}"), "needs a subject"));
	ck_assert_ptr_nonnull(strstr(reject("{" MIN ",\"subject\":\"s\",\"expectedversion\":-1}"),
				     "must be a version"));
	ck_assert_ptr_nonnull(
		strstr(reject("{" MIN ",\"subject\":\"s\",\"expectedversion\":\"3\"}"),
		       "must be an integer version"));
	ck_assert_ptr_nonnull(strstr(reject("{" MIN ",\"subject\":\"s\",\"expectedversion\":1.5}"),
				     "must be an integer version"));
}
END_TEST

START_TEST(data_kinds)
{
	ck_assert_ptr_nonnull(
		strstr(roundtrip("{" MIN ",\"data\":\"text\"}"), "\"data\":\"text\""));
	ck_assert_ptr_nonnull(strstr(roundtrip("{" MIN ",\"data\":7}"), "\"data\":7}"));
	ck_assert_ptr_nonnull(strstr(roundtrip("{" MIN ",\"data\":false}"), "\"data\":false}"));
	ck_assert_ptr_nonnull(strstr(roundtrip("{" MIN ",\"data\":[1,null,{\"a\":[]}]}"),
				     "\"data\":[1,null,{\"a\":[]}]"));
	ck_assert_ptr_nonnull(strstr(roundtrip("{" MIN ",\"data_base64\":\"TWE=\"}"),
				     "\"data_base64\":\"TWE=\""));
	ck_assert_str_eq(reject("{" MIN ",\"data\":1,\"data_base64\":\"TWE=\"}"),
			 "data and data_base64 are mutually exclusive");
	ck_assert_str_eq(reject("{" MIN ",\"data_base64\":\"T@E=\"}"),
			 "data_base64 is not valid base64");
	/* data before the attributes works too */
	ck_assert_ptr_nonnull(
		strstr(roundtrip("{\"data\":{\"k\":\"v\"}," MIN "}"), "\"data\":{\"k\":\"v\"}"));
}
END_TEST

START_TEST(numbers_keep_fidelity)
{
	const char *j =
		roundtrip("{" MIN ",\"data\":{\"max\":9223372036854775807,"
			  "\"min\":-9223372036854775808,\"big\":9007199254740993,"
			  "\"f\":0.1,\"g\":1e300,\"h\":2.0,\"over\":18446744073709551616}}");
	ck_assert_ptr_nonnull(strstr(j, "\"max\":9223372036854775807"));
	ck_assert_ptr_nonnull(strstr(j, "\"min\":-9223372036854775808"));
	ck_assert_ptr_nonnull(strstr(j, "\"big\":9007199254740993"));
	ck_assert_ptr_nonnull(strstr(j, "\"f\":0.1,"));
	ck_assert_ptr_nonnull(strstr(j, "\"g\":1e+300"));
	ck_assert_ptr_nonnull(strstr(j, "\"h\":2.0"));
	/* beyond 64 bits a number becomes a double */
	ck_assert_ptr_nonnull(strstr(j, "\"over\":1.8446744073709552e+19"));
}
END_TEST

START_TEST(strings_escape)
{
	const char *j =
		roundtrip("{" MIN ",\"data\":\"q\\\"b\\\\n\\n\\t\\u0001\\u00e9\\ud83c\\udf0e\"}");
	ck_assert_str_eq(strstr(j, "\"data\""),
			 "\"data\":\"q\\\"b\\\\n\\n\\t\\u0001\xc3\xa9\xf0\x9f\x8c\x8e\"}");
	/* invalid UTF-8 is not JSON */
	ck_assert_ptr_nonnull(strstr(reject("{" MIN ",\"data\":\"\xff\"}"), "not valid JSON"));
	ck_assert_ptr_nonnull(strstr(reject("{\"specversion\":\"1.0\",\"id\":\"a\\u0000b\","
					    "\"source\":\"/s\",\"type\":\"t\"}"),
				     "NUL"));
}
END_TEST

/* After a syntax error, parsing resumes on the line after the one where
 * the broken value began, and may read again events it has read: what
 * they were refused for the first time (bad UTF-8, a vertical tab) must
 * refuse them the second time too. */
START_TEST(resync_reads_again_strictly)
{
	static const char *const msgs[] = {
		/* a string past U+10FFFF; a key too (its message quoted it) */
		"[\n{" MIN2 ",\"id\":\"\xf4\x90\x80\x80\"}\n,,\n",
		"[\n{" MIN ",\"x\xf4\x90\x80\x80\":1}\n,,\n",
		/* a vertical tab, a form feed between tokens */
		"[\n{" MIN ",\v\"x\":1}\n,,\n",
		"[\n\f{" MIN "}\n,,\n",
	};

	for (size_t m = 0; m < sizeof msgs / sizeof *msgs; m++) {
		got *g = parse(msgs[m]);
		int reread = 0;
		for (int k = 0; k < g->n; k++) {
			ck_assert_msg(!g->ok[k], "message %zu: report %d accepted", m, k);
			ck_assert_msg(tidei_utf8_check(g->err[k], strlen(g->err[k]), NULL) == NULL,
				      "message %zu: %s", m, g->err[k]);
			reread += strstr(g->err[k], "not valid JSON") != NULL &&
				  strstr(g->err[k], "expect") == NULL;
		}
		ck_assert_int_ge(g->n, 3);
		ck_assert_msg(reread >= 2, "message %zu: refused for the byte %d times", m, reread);
	}
}
END_TEST

START_TEST(framing_ndjson_and_batches)
{
	got *g = parse("{" MIN "}\n{\"id\":1}\nnot json\n\n{" MIN2 ",\"id\":\"b\"}\n");
	ck_assert_int_eq(g->n, 4);
	ck_assert(g->ok[0]);
	ck_assert(!g->ok[1]);
	ck_assert(!g->ok[2]);
	ck_assert_ptr_nonnull(strstr(g->err[2], "not valid JSON at byte"));
	ck_assert(g->ok[3]);

	g = parse("[{" MIN "}, \"not an object\", {\"specversion\":\"0.9\"}, {" MIN2
		  ",\"id\":\"z\"}]");
	ck_assert_int_eq(g->n, 4);
	ck_assert(g->ok[0] && g->ok[3]);
	ck_assert_str_eq(g->err[1], "event must be a JSON object");
	ck_assert(!g->ok[2]);

	g = parse("[]");
	ck_assert_int_eq(g->n, 0);
	g = parse("  \n ");
	ck_assert_int_eq(g->n, 0);
	g = parse("42");
	ck_assert_int_eq(g->n, 1);
	ck_assert_str_eq(g->err[0], "event must be a JSON object");

	/* a pretty-printed object spanning lines is one event */
	g = parse("{\n  \"specversion\": \"1.0\",\n  \"id\": \"p\",\n  \"source\": \"/s\",\n  "
		  "\"type\": \"t\"\n}\n");
	ck_assert_int_eq(g->n, 1);
	ck_assert(g->ok[0]);
}
END_TEST

START_TEST(syntax_error_position)
{
	got *g = parse("{\"specversion\":\"1.0\",\"id\" \"a\"}");
	ck_assert_int_eq(g->n, 1);
	ck_assert_msg(strncmp(g->err[0], "not valid JSON at byte ", 23) == 0, "%s", g->err[0]);
	/* a truncated event is reported, and the next line still counts */
	g = parse("{\"specversion\":\"1.0\",\"id\n{" MIN "}");
	ck_assert_int_eq(g->n, 2);
	ck_assert(!g->ok[0]);
	ck_assert(g->ok[1]);
}
END_TEST

START_TEST(size_limit)
{
	char *big = malloc(3000);
	got *g;

	snprintf(big, 3000, "{" MIN ",\"data\":\"%0*d\"}\n{" MIN2 ",\"id\":\"small\"}", 2000, 7);
	g = parse_max(big, 1024);
	ck_assert_int_eq(g->n, 2);
	ck_assert_ptr_nonnull(strstr(g->err[0], "message larger than the 1 KiB limit"));
	ck_assert(g->ok[1]);
	g = parse_max("{" MIN "}", 1 << 20);
	ck_assert(g->ok[0]);
	free(big);
}
END_TEST

START_TEST(nesting_limit)
{
	char msg[512];
	int n = snprintf(msg, sizeof msg, "{" MIN ",\"data\":");
	for (int i = 0; i < 100; i++)
		msg[n++] = '[';
	for (int i = 0; i < 100; i++)
		msg[n++] = ']';
	msg[n++] = '}';
	msg[n] = '\0';
	ck_assert_ptr_nonnull(strstr(reject(msg), "nested deeper than"));
}
END_TEST

START_TEST(record_layout)
{
	got *g = parse("{" MIN ",\"subject\":\"s1\",\"data\":{\"x\":1}}");
	struct tide_event ev;
	uint8_t *rec = g->rec[0].p;

	tidei_event_stamp(rec, 7, 3, 1700000000123456789ll);
	ck_assert_int_eq(tidei_event_decode(&ev, rec, g->rec[0].len), 0);
	ck_assert_uint_eq(ev.version, 7);
	ck_assert_uint_eq(ev.prev, 3);
	ck_assert_int_eq(ev.recorded, 1700000000123456789ll);
	ck_assert_str_eq(ev.attr[TIDEI_A_SUBJECT], "s1");
	ck_assert_ptr_null(ev.attr[TIDEI_A_TIME]);
	/* the data flag with no byte of data is corrupt: a value has at
	 * least one, and readers look at it (once read past the end) */
	ck_assert_int_eq(tidei_event_decode(&ev, rec, (size_t)(ev.data - rec)), -1);
	ck_assert_int_eq(tidei_event_decode(&ev, rec, g->rec[0].len), 0);
	/* truncated records are refused, never read past their end */
	for (size_t cut = 0; cut < g->rec[0].len; cut++) {
		struct tide_event e2;
		int rc = tidei_event_decode(&e2, rec, cut);
		if (rc == 0) {
			/* only a cut inside the data can still decode; the data
			 * value must then fail to read */
			tidei_vreader r = { e2.data, e2.data + e2.data_len };
			ck_assert(e2.data == NULL || tidei_val_skip(&r) != 0 || r.p == r.end);
		}
	}
}
END_TEST

START_TEST(values_roundtrip)
{
	tidei_buf b = { 0 };
	tidei_vreader r;
	tidei_vitem it;
	const int64_t ints[] = { 0,         1,        127,       128,
				 -1,        -32,      -33,       255,
				 65535,     -65536,   INT32_MAX, (int64_t)INT32_MAX + 1,
				 INT64_MAX, INT64_MIN };

	for (size_t i = 0; i < sizeof ints / sizeof *ints; i++)
		tidei_val_int(&b, ints[i]);
	tidei_val_double(&b, -0.5);
	tidei_val_str(&b, "hello", 5);
	r.p = b.p;
	r.end = b.p + b.len;
	for (size_t i = 0; i < sizeof ints / sizeof *ints; i++) {
		ck_assert_int_eq(tidei_val_next(&r, &it), 0);
		ck_assert_int_eq(it.type, TIDEI_V_INT);
		ck_assert_int_eq(it.u.i, ints[i]);
	}
	ck_assert_int_eq(tidei_val_next(&r, &it), 0);
	ck_assert(it.type == TIDEI_V_DOUBLE && it.u.d == -0.5);
	ck_assert_int_eq(tidei_val_next(&r, &it), 0);
	ck_assert(it.type == TIDEI_V_STR && it.u.s.n == 5);
	ck_assert_int_eq(tidei_val_next(&r, &it), -1);
	tidei_buf_free(&b);
}
END_TEST

START_TEST(json_doubles_shortest)
{
	tidei_buf b = { 0 };
	const double ds[] = { 0.1, 1.0 / 3, 1e-7, 123456.789, 5e-324, 1.7976931348623157e308 };

	for (size_t i = 0; i < sizeof ds / sizeof *ds; i++) {
		tidei_buf_reset(&b);
		tidei_json_double(&b, ds[i]);
		tidei_buf_putc(&b, '\0');
		ck_assert_msg(strtod((char *)b.p, NULL) == ds[i], "%s", b.p);
	}
	tidei_buf_reset(&b);
	tidei_json_double(&b, NAN);
	tidei_buf_putc(&b, '\0');
	ck_assert_str_eq((char *)b.p, "null");
	tidei_buf_free(&b);
}
END_TEST

/* Doubles written as JSON read back bit for bit, through the decimal fast
 * path and the general one, and the fast path gives the short form. */
START_TEST(doubles_write_and_read_back)
{
	unsigned seed = 7;
	tidei_buf b = { 0 };

	for (int i = 0; i < 200000; i++) {
		double d;
		if (i % 2) {
			uint64_t bits = (uint64_t)rand_r(&seed) << 33 ^
					(uint64_t)rand_r(&seed) << 11 ^ (uint64_t)rand_r(&seed);
			memcpy(&d, &bits, sizeof d);
			if (!isfinite(d))
				continue;
		} else {
			d = (double)(rand_r(&seed) % 2000000 - 1000000) / 100.0;
		}
		tidei_buf_reset(&b);
		tidei_json_double(&b, d);
		tidei_buf_putc(&b, '\0');
		ck_assert_msg(strtod((char *)b.p, NULL) == d, "%.17g written as %s", d, b.p);
		ck_assert_msg(strpbrk((char *)b.p, ".en") != NULL, "%s looks like an integer", b.p);
	}
	tidei_buf_reset(&b);
	tidei_json_double(&b, 1008.37);
	tidei_json_double(&b, -0.05);
	tidei_json_double(&b, 2.0);
	tidei_json_double(&b, -0.0);
	tidei_buf_putc(&b, '\0');
	ck_assert_str_eq((char *)b.p, "1008.37-0.052.0-0.0");
	tidei_buf_free(&b);
}
END_TEST

/* The decimal fast path must agree with strtod bit for bit. */
START_TEST(numbers_agree_with_strtod)
{
	unsigned seed = 42;
	char buf[64];

	for (int i = 0; i < 200000; i++) {
		int64_t ip;
		double parsed;
		int intdigits = rand_r(&seed) % 12, fracdigits = 1 + rand_r(&seed) % 14, n = 0;
		if (rand_r(&seed) % 4 == 0)
			buf[n++] = '-';
		for (int k = 0; k < intdigits; k++)
			buf[n++] =
				(char)('0' + (k == 0 ? 1 + rand_r(&seed) % 9 : rand_r(&seed) % 10));
		if (intdigits == 0)
			buf[n++] = '0';
		buf[n++] = '.';
		for (int k = 0; k < fracdigits; k++)
			buf[n++] = (char)('0' + rand_r(&seed) % 10);
		buf[n] = '\0';
		ck_assert_int_eq(tidei_json_number(buf, (size_t)n, &ip, &parsed), 0);
		ck_assert_msg(parsed == strtod(buf, NULL), "%s: %.17g != %.17g", buf, parsed,
			      strtod(buf, NULL));
	}
}
END_TEST

START_TEST(base64)
{
	tidei_buf b = { 0 };
	const char *in = "any carnal pleas";

	for (size_t n = 0; n <= strlen(in); n++) {
		tidei_buf enc = { 0 };
		tidei_base64_encode(&enc, (const uint8_t *)in, n);
		tidei_buf_reset(&b);
		ck_assert_int_eq(tidei_base64_decode(&b, (const char *)enc.p, enc.len), (long)n);
		ck_assert(n == 0 || memcmp(b.p, in, n) == 0);
		tidei_buf_free(&enc);
	}
	ck_assert_int_eq(tidei_base64_decode(&b, "abc", 3), -1);
	ck_assert_int_eq(tidei_base64_decode(&b, "a=bc", 4), -1);
	tidei_buf_free(&b);
}
END_TEST

Suite *
event_suite(void)
{
	Suite *s = suite_create("event");
	TCase *tc = tcase_create("validation");

	tcase_add_test(tc, time_parse);
	tcase_add_test(tc, valid_minimal);
	tcase_add_test(tc, attribute_order_and_nulls);
	tcase_add_test(tc, missing_required);
	tcase_add_test(tc, specversion);
	tcase_add_test(tc, wrong_types_and_empty);
	tcase_add_test(tc, time_rfc3339);
	tcase_add_test(tc, content_type_and_schema);
	tcase_add_test(tc, extensions);
	tcase_add_test(tc, many_extensions);
	tcase_add_test(tc, empty_member_name);
	tcase_add_test(tc, long_name_quoted_whole_characters);
	tcase_add_test(tc, data_kinds);
	tcase_add_test(tc, expected_version_attribute);
	suite_add_tcase(s, tc);

	tc = tcase_create("encoding");
	tcase_add_test(tc, numbers_keep_fidelity);
	tcase_add_test(tc, strings_escape);
	tcase_add_test(tc, record_layout);
	tcase_add_test(tc, values_roundtrip);
	tcase_add_test(tc, json_doubles_shortest);
	tcase_add_test(tc, numbers_agree_with_strtod);
	tcase_add_test(tc, doubles_write_and_read_back);
	tcase_add_test(tc, base64);
	suite_add_tcase(s, tc);

	tc = tcase_create("framing");
	tcase_add_test(tc, framing_ndjson_and_batches);
	tcase_add_test(tc, resync_reads_again_strictly);
	tcase_add_test(tc, syntax_error_position);
	tcase_add_test(tc, size_limit);
	tcase_add_test(tc, nesting_limit);
	suite_add_tcase(s, tc);
	return s;
}
