/*
 * test_json.c - strict JSON at the door (RFC 8259, RFC 3629 UTF-8): what
 * is stored can always be read back and emitted again as it was.
 *
 * Three layers, all run on the same cases:
 *  - tidei_json_decode (REP requests, tide.json.decode);
 *  - the event parser, with the case as the data of an event between two
 *    valid ones, in NDJSON and in a batch: a refused case costs only its
 *    own event;
 *  - a real `tide run` (events over REP, read back with `tide log`), whose
 *    Lua consumer emits every accepted event's data again unchanged and
 *    runs the cases through tide.json.decode.
 *
 * The project's own fixtures always run.  The JSONTestSuite cases in
 * ../shared/testdata/json are judged when present: every y_ accepted,
 * every n_ refused, every i_ as decided in i_decisions below (a change of
 * behaviour fails the test), and the transform cases must not crash and
 * must read back as written.
 */
#define _GNU_SOURCE /* strdup */
#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_tree.h>

#include "event.h"
#include "helpers.h"
#include "json.h"
#include "val.h"

/* ------------------------------------------------------------------------
 * The project's fixtures
 * ------------------------------------------------------------------------ */

/* A data value: its JSON text, and either how Tide writes it back once
 * stored (accepted) or what the refusal says (refused). */
typedef struct fixture {
	const char *name;
	const char *json;
	const char *stored; /* NULL: refused */
	const char *why;    /* refused: part of the message */
} fixture;

#define HIGH_ALONE "in a string is a high surrogate not followed by a \\u escape of a low surrogate"
#define LOW_ALONE "in a string is a low surrogate with no high surrogate before it"

static const fixture fixtures[] = {
	/* accepted, and how they read back */
	{ "surrogate pair", "\"\\ud83d\\ude00\"", "\"\xf0\x9f\x98\x80\"", NULL },
	{ "pair in upper case", "\"\\uD83D\\uDE00\"", "\"\xf0\x9f\x98\x80\"", NULL },
	{ "raw four bytes", "\"\xf0\x9f\x98\x80\"", "\"\xf0\x9f\x98\x80\"", NULL },
	{ "U+10FFFF escaped", "\"\\udbff\\udfff\"", "\"\xf4\x8f\xbf\xbf\"", NULL },
	{ "U+10FFFF raw", "\"\xf4\x8f\xbf\xbf\"", "\"\xf4\x8f\xbf\xbf\"", NULL },
	{ "edges of the BMP escaped", "\"\\u0080\\u07ff\\u0800\\ud7ff\\ue000\\uffff\"",
	  "\"\xc2\x80\xdf\xbf\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80\xef\xbf\xbf\"", NULL },
	{ "edges of the BMP raw",
	  "\"\xc2\x80\xdf\xbf\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80\xef\xbf\xbf\"",
	  "\"\xc2\x80\xdf\xbf\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80\xef\xbf\xbf\"", NULL },
	{ "mixed text", "{\"name\":\"Ren\xc3\xa9 \xe6\x9d\xb1\xe4\xba\xac\\n\\u00e9\"}",
	  "{\"name\":\"Ren\xc3\xa9 \xe6\x9d\xb1\xe4\xba\xac\\n\xc3\xa9\"}", NULL },
	{ "NUL in data", "\"a\\u0000b\"", "\"a\\u0000b\"", NULL },
	{ "NUL in a member name", "{\"k\\u0000\":\"\\u0000\"}", "{\"k\\u0000\":\"\\u0000\"}",
	  NULL },
	{ "escaped quote and backslash around a pair", "\"\\\"\\ud83d\\ude00\\\\\"",
	  "\"\\\"\xf0\x9f\x98\x80\\\\\"", NULL },
	{ "escapes without surrogates", "\"\\u00e9\\t\xc3\xa9\\/\"", "\"\xc3\xa9\\t\xc3\xa9/\"",
	  NULL },
	{ "escaped question mark", "\"\\u003f?\\n\"", "\"??\\n\"", NULL },
	{ "raw four bytes beside an escape", "\"\xf0\x9f\x98\x80\\n\"", "\"\xf0\x9f\x98\x80\\n\"",
	  NULL },
	{ "underflow to zero", "1e-400", "0.0", NULL },
	{ "negative underflow", "-1e-400", "-0.0", NULL },
	{ "subnormal", "5e-324", "4.94065645841247e-324", NULL },
	{ "largest double", "1.7976931348623157e308", "1.7976931348623157e+308", NULL },
	{ "smallest integer", "-9223372036854775808", "-9223372036854775808", NULL },
	{ "integer past 64 bits", "18446744073709551616", "1.8446744073709552e+19", NULL },
	{ "huge integer", "[-123123123123123123123123123123]", "[-1.2312312312312312e+29]", NULL },
	/* refused, and why */
	{ "overlong 2 bytes", "\"\xc0\xaf\"", NULL, "overlong UTF-8 form in a string" },
	{ "overlong 3 bytes", "\"\xe0\x80\xaf\"", NULL, "overlong UTF-8 form in a string" },
	{ "overlong 4 bytes", "\"\xf0\x80\x80\xaf\"", NULL, "overlong UTF-8 form in a string" },
	{ "encoded high surrogate", "\"\xed\xa0\x80\"", NULL, "UTF-8 encoded surrogate" },
	{ "encoded low surrogate", "\"x\xed\xbf\xbf\"", NULL, "UTF-8 encoded surrogate" },
	{ "above U+10FFFF", "\"\xf4\x90\x80\x80\"", NULL, "above U+10FFFF" },
	{ "lead byte F5", "\"\xf5\x80\x80\x80\"", NULL, "above U+10FFFF" },
	{ "lone high surrogate", "\"\\ud800\"", NULL, "\\ud800 " HIGH_ALONE },
	{ "high surrogate then a letter", "\"\\ud800x\"", NULL, "\\ud800 " HIGH_ALONE },
	{ "high surrogate then another escape", "\"\\ud800\\u0041\"", NULL, "\\ud800 " HIGH_ALONE },
	{ "two high surrogates", "\"\\uD800\\uDBFF\"", NULL, "\\uD800 " HIGH_ALONE },
	{ "high surrogate then \\n", "\"\\ud800\\n\"", NULL, "\\ud800 " HIGH_ALONE },
	{ "question mark, then lone", "\"?\\ud800\"", NULL, "\\ud800 " HIGH_ALONE },
	{ "lone low surrogate", "\"\\udc00\"", NULL, "\\udc00 " LOW_ALONE },
	{ "inverted pair", "\"\\ude00\\ud83d\"", NULL, "\\ude00 " LOW_ALONE },
	{ "escaped quote, then lone", "\"\\\"\\ud800\"", NULL, "\\ud800 " HIGH_ALONE },
	{ "escaped backslash, then lone", "\"\\\\\\ud800\"", NULL, "\\ud800 " HIGH_ALONE },
	{ "escape, then an encoded surrogate", "\"\\n\xed\xa0\x80\"", NULL,
	  "UTF-8 encoded surrogate" },
	{ "bad member name", "{\"\xc0\xaf\":1}", NULL, "overlong UTF-8 form in a string" },
	{ "lone surrogate in a member name", "{\"ok\":{\"\\udc00\":1}}", NULL,
	  "\\udc00 " LOW_ALONE },
	{ "overflow", "1e400", NULL, "number 1e400 is out of range" },
	{ "negative overflow", "-1e400", NULL, "number -1e400 is out of range" },
	{ "just past the largest double", "1.8e308", NULL, "number 1.8e308 is out of range" },
	{ "overflow in an array", "[1,2e999]", NULL, "number 2e999 is out of range" },
	{ "overflow by digits",
	  "1000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
	  "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
	  "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
	  "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
	  NULL, "number 10000000000000000000000000000000... is out of range" },
	{ "form feed", "[1,\f2]", NULL, "a form feed is not JSON whitespace" },
	{ "vertical tab", "{\"a\":\v1}", NULL, "a vertical tab is not JSON whitespace" },
};

#define NFIX (sizeof fixtures / sizeof *fixtures)

/* Attributes go through the same strings checks; NUL is refused in all of
 * them, and an attribute takes no number that is not an integer. */
typedef struct attr_fixture {
	const char *name;
	const char *members; /* after "specversion", "source" and "type" */
	const char *why;     /* NULL: accepted */
} attr_fixture;

static const attr_fixture attr_fixtures[] = {
	{ "pair in the subject", "\"id\":\"a1\",\"subject\":\"\\ud83d\\ude00\"", NULL },
	{ "raw UTF-8 in an extension", "\"id\":\"a2\",\"ext\":\"\xc3\xa9\"", NULL },
	{ "overlong id", "\"id\":\"\xc0\xaf\"", "overlong UTF-8 form in a string" },
	{ "lone surrogate in the subject", "\"id\":\"a3\",\"subject\":\"\\ud800\"",
	  "\\ud800 " HIGH_ALONE },
	{ "lone low surrogate in an extension", "\"id\":\"a4\",\"ext\":\"\\udc00\"",
	  "\\udc00 " LOW_ALONE },
	{ "encoded surrogate in an extension name", "\"id\":\"a5\",\"e\xed\xa0\x80\":\"v\"",
	  "UTF-8 encoded surrogate" },
	{ "NUL in the id", "\"id\":\"a\\u0000b\"", "attribute 'id' contains a NUL character" },
	{ "NUL in an extension", "\"id\":\"a6\",\"ext\":\"a\\u0000b\"",
	  "attribute 'ext' contains a NUL character" },
	{ "overflow in an extension", "\"id\":\"a7\",\"ext\":1e400",
	  "extension 'ext' must be a string, boolean or integer, not a number with a fraction or "
	  "exponent" },
};

#define NATTR (sizeof attr_fixtures / sizeof *attr_fixtures)

/* ------------------------------------------------------------------------
 * Plumbing
 * ------------------------------------------------------------------------ */

#define MAXV 64

/* What the event parser reported for one message. */
typedef struct verdicts {
	int n, bad;
	int ok[MAXV];
	char err[MAXV][TIDEI_ERRLEN];
	tidei_buf rec[MAXV];
} verdicts;

static void
collect(void *ud, const uint8_t *rec, size_t len, const char *err)
{
	verdicts *v = ud;

	v->bad += err != NULL;
	if (v->n < MAXV) {
		v->ok[v->n] = err == NULL;
		if (err != NULL)
			snprintf(v->err[v->n], sizeof v->err[0], "%s", err);
		else
			tidei_buf_put(&v->rec[v->n], rec, len);
	}
	v->n++;
}

/* Run the event parser over @p msg; the result is static (until the next
 * call). */
static verdicts *
parse(const char *msg, size_t len)
{
	static verdicts v;
	tidei_eparser p;

	for (int i = 0; i < MAXV; i++)
		tidei_buf_free(&v.rec[i]);
	memset(&v, 0, sizeof v);
	tidei_eparser_init(&p, 1 << 20);
	ck_assert_int_eq(tidei_eparser_run(&p, msg, len, collect, &v), v.n);
	tidei_eparser_free(&p);
	return &v;
}

/* The JSON text of encoded value bytes (static). */
static const char *
val_text(const uint8_t *p, size_t n)
{
	static tidei_buf out;
	tidei_vreader r = { p, p + n };

	tidei_buf_reset(&out);
	ck_assert_int_eq(tidei_json_encode(&out, &r), 0);
	ck_assert(r.p == r.end);
	tidei_buf_putc(&out, '\0');
	ck_assert(!out.failed);
	return (const char *)out.p;
}

/* The view of accepted record @p k. */
static void
view(verdicts *v, int k, struct tide_event *ev)
{
	ck_assert_msg(v->ok[k], "event %d refused: %s", k, v->err[k]);
	ck_assert_int_eq(tidei_event_decode(ev, v->rec[k].p, v->rec[k].len), 0);
}

/* The data of accepted record @p k as JSON text (static). */
static const char *
data_text(verdicts *v, int k)
{
	struct tide_event ev;

	view(v, k, &ev);
	ck_assert_ptr_nonnull(ev.data);
	return val_text(ev.data, ev.data_len);
}

/* tidei_json_decode of @p text: its value as JSON text (static), or NULL
 * with the message in @p err. */
static const char *
decode(const char *text, size_t len, char *err)
{
	static tidei_buf val;
	const char *out;

	tidei_buf_free(&val);
	if (tidei_json_decode(text, len, &val, err) != 0)
		return NULL;
	out = val_text(val.p, val.len);
	return out;
}

#define ENV "{\"specversion\":\"1.0\",\"source\":\"/json\",\"type\":\"t\""

/* A message of three events, the case as the middle one's data (NDJSON,
 * or a batch array); the offset of the case in *at. */
static char *
embed(const char *json, size_t len, int batch, size_t *at)
{
	sbuf b = { 0 };
	char *head, *msg;
	size_t hn;

	sb_printf(&b, "%s" ENV ",\"id\":\"before\"}%s" ENV ",\"id\":\"case\",\"data\":",
		  batch ? "[" : "", batch ? "," : "\n");
	head = sb_take(&b);
	hn = strlen(head);
	sb_printf(&b, "}%s" ENV ",\"id\":\"after\"}%s\n", batch ? "," : "\n", batch ? "]" : "");
	msg = sb_take(&b);
	{
		size_t tn = strlen(msg);
		char *all = malloc(hn + len + tn + 1);
		ck_assert_ptr_nonnull(all);
		memcpy(all, head, hn);
		memcpy(all + hn, json, len);
		memcpy(all + hn + len, msg, tn + 1);
		free(head);
		free(msg);
		*at = hn;
		return all;
	}
}

/* ------------------------------------------------------------------------
 * Fixtures through tidei_json_decode and the event parser
 * ------------------------------------------------------------------------ */

START_TEST(fixtures_decode)
{
	char err[TIDEI_ERRLEN];

	for (size_t i = 0; i < NFIX; i++) {
		const fixture *f = &fixtures[i];
		const char *got = decode(f->json, strlen(f->json), err);
		if (f->stored != NULL) {
			ck_assert_msg(got != NULL, "%s: refused: %s", f->name, err);
			ck_assert_msg(strcmp(got, f->stored) == 0, "%s: stored as %s", f->name,
				      got);
			/* and what is written reads back the same */
			got = decode(f->stored, strlen(f->stored), err);
			ck_assert_msg(got != NULL && strcmp(got, f->stored) == 0,
				      "%s: %s does not read back", f->name, f->stored);
		} else {
			ck_assert_msg(got == NULL, "%s: accepted as %s", f->name, got);
			ck_assert_msg(strstr(err, f->why) != NULL, "%s: message \"%s\"", f->name,
				      err);
		}
	}
}
END_TEST

START_TEST(fixtures_event_parser)
{
	for (int batch = 0; batch <= 1; batch++) {
		for (size_t i = 0; i < NFIX; i++) {
			const fixture *f = &fixtures[i];
			size_t at;
			char *msg = embed(f->json, strlen(f->json), batch, &at);
			verdicts *v = parse(msg, strlen(msg));
			ck_assert_msg(v->n == 3, "%s: %d reports", f->name, v->n);
			/* an invalid event costs only itself */
			ck_assert_msg(v->ok[0] && v->ok[2], "%s: neighbours: %s / %s", f->name,
				      v->err[0], v->err[2]);
			if (f->stored != NULL) {
				ck_assert_msg(v->ok[1], "%s: refused: %s", f->name, v->err[1]);
				ck_assert_str_eq(data_text(v, 1), f->stored);
			} else {
				ck_assert_msg(!v->ok[1], "%s: accepted", f->name);
				ck_assert_msg(strstr(v->err[1], f->why) != NULL,
					      "%s: message \"%s\"", f->name, v->err[1]);
			}
			free(msg);
		}
	}
}
END_TEST

/* yajl refuses a token after the document, but not one the end of the
 * text cuts off: the start of a string after it was taken for nothing. */
START_TEST(nothing_after_the_document)
{
	static const char *const bad[] = { "{}\"", "{} \"abc", "1 \"", "\"x\" \"", "null\n\"" };
	static const char *const good[] = { "{} ", "12", "12 \r\n", "\"x\"", "-1.5e3", " [[]] \n" };
	char err[TIDEI_ERRLEN];
	tidei_buf b = { 0 };

	for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
		tidei_buf_reset(&b);
		ck_assert_msg(tidei_json_decode(bad[k], strlen(bad[k]), &b, err) != 0,
			      "accepted: %s", bad[k]);
		ck_assert_msg(strstr(err, "text after the document") != NULL, "%s: %s", bad[k],
			      err);
	}
	for (size_t k = 0; k < sizeof good / sizeof *good; k++) {
		tidei_buf_reset(&b);
		ck_assert_msg(tidei_json_decode(good[k], strlen(good[k]), &b, err) == 0, "%s: %s",
			      good[k], err);
	}
	tidei_buf_free(&b);
}
END_TEST

START_TEST(attributes)
{
	for (size_t i = 0; i < NATTR; i++) {
		const attr_fixture *f = &attr_fixtures[i];
		sbuf b = { 0 };
		char *msg;
		verdicts *v;

		sb_printf(&b, ENV ",\"id\":\"x\"}\n" ENV ",%s}\n" ENV ",\"id\":\"y\"}", f->members);
		msg = sb_take(&b);
		v = parse(msg, strlen(msg));
		ck_assert_msg(v->n == 3 && v->ok[0] && v->ok[2], "%s: %d reports", f->name, v->n);
		if (f->why == NULL)
			ck_assert_msg(v->ok[1], "%s: refused: %s", f->name, v->err[1]);
		else
			ck_assert_msg(!v->ok[1] && strstr(v->err[1], f->why) != NULL, "%s: %s",
				      f->name, v->ok[1] ? "accepted" : v->err[1]);
		free(msg);
	}
	/* the pair is stored as its four bytes */
	{
		struct tide_event ev;
		verdicts *v = parse(ENV ",\"id\":\"p\",\"subject\":\"\\ud83d\\ude00\"}",
				    strlen(ENV ",\"id\":\"p\",\"subject\":\"\\ud83d\\ude00\"}"));
		view(v, 0, &ev);
		ck_assert_str_eq(ev.attr[TIDEI_A_SUBJECT], "\xf0\x9f\x98\x80");
	}
}
END_TEST

/* The whole message, exactly: the byte is counted from 1 at the start of
 * the line where the event began, as for syntax errors. */
START_TEST(messages_name_the_byte)
{
	static const char *const msgs[] = {
		ENV ",\"id\":\"a\",\"data\":\"ab\xc0\xaf\"}",
		"\n  " ENV ",\"id\":\"a\",\"data\":[\"x\\ud800\"]}",
		ENV ",\"id\":\"a\",\"data\":{\"k\":\"\\u0041\\udfff\"}}",
		ENV ",\"id\":\"\xed\xa0\x80\"}",
		ENV ",\"id\":\"a\",\"data\":[1,\f2]}",
	};
	static const char *const marks[] = { "\xc0", "\\ud800", "\\udfff", "\xed", "\f" };
	static const char *const whys[] = {
		"overlong UTF-8 form in a string",
		"\\ud800 " HIGH_ALONE,
		"\\udfff " LOW_ALONE,
		"UTF-8 encoded surrogate (U+D800 to U+DFFF) in a string",
		"a form feed is not JSON whitespace",
	};
	char want[TIDEI_ERRLEN], err[TIDEI_ERRLEN];

	for (size_t i = 0; i < sizeof msgs / sizeof *msgs; i++) {
		const char *line = strrchr(msgs[i], '\n');
		size_t col = (size_t)(strstr(msgs[i], marks[i]) - (line ? line + 1 : msgs[i])) + 1;
		verdicts *v = parse(msgs[i], strlen(msgs[i]));
		snprintf(want, sizeof want, "not valid JSON at byte %zu: %s", col, whys[i]);
		ck_assert_int_eq(v->n, 1);
		ck_assert_str_eq(v->err[0], want);
	}
	/* tidei_json_decode counts from the start of the text */
	ck_assert_ptr_null(decode("[\"ab\xc0\xaf\"]", 8, err));
	ck_assert_str_eq(err, "not valid JSON at byte 5: overlong UTF-8 form in a string");
	ck_assert_ptr_null(decode("{\"k\":\"\\ud83d\"}", 14, err));
	ck_assert_str_eq(err, "not valid JSON at byte 7: \\ud83d " HIGH_ALONE);
	ck_assert_ptr_null(decode(" [1e400]", 8, err));
	ck_assert_str_eq(err, "number 1e400 is out of range");
	ck_assert_ptr_null(decode("{}\f", 3, err));
	ck_assert_str_eq(err, "not valid JSON at byte 3: a form feed is not JSON whitespace");
}
END_TEST

/* A vertical tab or form feed between events: it costs the next event, and
 * one after the last event is reported on its own. */
START_TEST(bad_space_between_events)
{
	const char *msg = ENV ",\"id\":\"1\"}\n\f" ENV ",\"id\":\"2\"}\n" ENV ",\"id\":\"3\"}\v\n";
	verdicts *v = parse(msg, strlen(msg));
	char want[TIDEI_ERRLEN];

	ck_assert_int_eq(v->n, 4);
	ck_assert(v->ok[0] && !v->ok[1] && v->ok[2] && !v->ok[3]);
	ck_assert_str_eq(v->err[1], "not valid JSON at byte 1: a form feed is not JSON whitespace");
	/* counted on the line of the last event, which it follows */
	snprintf(want, sizeof want,
		 "not valid JSON at byte %zu: a vertical tab is not JSON whitespace",
		 strlen(ENV ",\"id\":\"3\"}") + 1);
	ck_assert_str_eq(v->err[3], want);
	/* and inside a string they stay what yajl says: a control character */
	v = parse(ENV ",\"id\":\"a\f\"}", strlen(ENV ",\"id\":\"a\f\"}"));
	ck_assert_int_eq(v->n, 1);
	ck_assert_ptr_nonnull(strstr(v->err[0], "not valid JSON at byte"));
}
END_TEST

/* Strings past the first non-ASCII byte of a message are each checked:
 * a valid one does not hide an invalid one after it. */
START_TEST(many_strings_after_non_ascii)
{
	sbuf b = { 0 };
	char *msg;
	verdicts *v;

	for (int i = 0; i < 40; i++)
		sb_printf(&b, ENV ",\"id\":\"%d\",\"data\":{\"a\":\"\xc3\xa9\",\"b\":\"%s\"}}\n", i,
			  i % 7 == 3   ? "\xe0\x80\x80"
			  : i % 5 == 1 ? "\\u00e9x"
				       : "plain");
	msg = sb_take(&b);
	v = parse(msg, strlen(msg));
	ck_assert_int_eq(v->n, 40);
	for (int i = 0; i < 40; i++)
		ck_assert_msg(v->ok[i] == (i % 7 != 3), "event %d: %s", i, v->err[i]);
	free(msg);
}
END_TEST

/* The UTF-8 checks on their own, and tidei_utf8_valid still refusing NUL
 * (attributes set from Lua). */
START_TEST(utf8_check)
{
	static const struct {
		const char *s;
		size_t n, at;
		const char *why;
	} cases[] = {
		{ "plain ascii text, long enough for words", 39, 0, NULL },
		{ "a\0b", 3, 0, NULL },
		{ "\xc2\x80\xf4\x8f\xbf\xbf", 6, 0, NULL },
		{ "0123456789\x80", 11, 10, "invalid UTF-8 byte" },
		{ "\xc1\xbf", 2, 0, "overlong UTF-8 form" },
		{ "ab\xe0\x9f\xbf", 5, 2, "overlong UTF-8 form" },
		{ "\xf0\x8f\xbf\xbf", 4, 0, "overlong UTF-8 form" },
		{ "\xed\xb0\x80", 3, 0, "UTF-8 encoded surrogate (U+D800 to U+DFFF)" },
		{ "\xf4\x90\x80\x80", 4, 0, "UTF-8 sequence of a code point above U+10FFFF" },
		{ "\xf8\x88\x80\x80\x80", 5, 0, "invalid UTF-8 byte" },
		{ "abcdefgh\xe2\x82", 10, 8, "truncated UTF-8 sequence" },
		{ "\xe2\x28\xa1", 3, 0, "truncated UTF-8 sequence" },
	};

	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		size_t at = 99;
		const char *why = tidei_utf8_check(cases[i].s, cases[i].n, &at);
		if (cases[i].why == NULL) {
			ck_assert_msg(why == NULL, "case %zu: %s", i, why);
			continue;
		}
		ck_assert_msg(why != NULL && strcmp(why, cases[i].why) == 0, "case %zu: %s", i,
			      why ? why : "(accepted)");
		ck_assert_uint_eq(at, cases[i].at);
	}
	ck_assert(!tidei_utf8_valid("a\0b", 3));
	ck_assert(tidei_utf8_valid("\xc3\xa9", 2));
	ck_assert(!tidei_utf8_valid("\xc0\x80", 2));
}
END_TEST

/* ------------------------------------------------------------------------
 * JSONTestSuite
 * ------------------------------------------------------------------------ */

/* What Tide does with each implementation-defined case (README.md, "What
 * Tide accepts as JSON").  1: accepted, 0: refused. */
static const struct {
	const char *file;
	int accept;
} i_decisions[] = {
	/* a number too small for a double becomes a zero of its sign */
	{ "i_number_double_huge_neg_exp.json", 1 },
	{ "i_number_real_underflow.json", 1 },
	/* integers beyond 64 bits become the nearest double */
	{ "i_number_too_big_neg_int.json", 1 },
	{ "i_number_too_big_pos_int.json", 1 },
	{ "i_number_very_big_negative_int.json", 1 },
	/* a number too large for a double is refused */
	{ "i_number_huge_exp.json", 0 },
	{ "i_number_neg_int_huge_exp.json", 0 },
	{ "i_number_pos_double_huge_exp.json", 0 },
	{ "i_number_real_neg_overflow.json", 0 },
	{ "i_number_real_pos_overflow.json", 0 },
	/* lone or mispaired surrogate escapes are refused */
	{ "i_object_key_lone_2nd_surrogate.json", 0 },
	{ "i_string_1st_surrogate_but_2nd_missing.json", 0 },
	{ "i_string_1st_valid_surrogate_2nd_invalid.json", 0 },
	{ "i_string_incomplete_surrogate_and_escape_valid.json", 0 },
	{ "i_string_incomplete_surrogate_pair.json", 0 },
	{ "i_string_incomplete_surrogates_escape_valid.json", 0 },
	{ "i_string_invalid_lonely_surrogate.json", 0 },
	{ "i_string_invalid_surrogate.json", 0 },
	{ "i_string_inverted_surrogates_U+1D11E.json", 0 },
	{ "i_string_lone_second_surrogate.json", 0 },
	/* bytes that are not RFC 3629 UTF-8 are refused */
	{ "i_string_UTF-8_invalid_sequence.json", 0 },
	{ "i_string_UTF8_surrogate_U+D800.json", 0 },
	{ "i_string_invalid_utf-8.json", 0 },
	{ "i_string_iso_latin_1.json", 0 },
	{ "i_string_lone_utf8_continuation_byte.json", 0 },
	{ "i_string_not_in_unicode_range.json", 0 },
	{ "i_string_overlong_sequence_2_bytes.json", 0 },
	{ "i_string_overlong_sequence_6_bytes.json", 0 },
	{ "i_string_overlong_sequence_6_bytes_null.json", 0 },
	{ "i_string_truncated-utf-8.json", 0 },
	/* JSON texts are UTF-8: UTF-16 is refused, and so is a byte order mark */
	{ "i_string_UTF-16LE_with_BOM.json", 0 },
	{ "i_string_utf16BE_no_BOM.json", 0 },
	{ "i_string_utf16LE_no_BOM.json", 0 },
	{ "i_structure_UTF-8_BOM_empty_object.json", 0 },
	/* nesting is limited (TIDEI_JSON_MAXDEPTH) */
	{ "i_structure_500_nested_arrays.json", 0 },
};

#define NDECIDED (sizeof i_decisions / sizeof *i_decisions)

static int
by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The sorted names of the files in @p dir (NULL-terminated; free both). */
static char **
list_dir(const char *dir, size_t *n)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	size_t cap = 64;
	char **v = malloc(cap * sizeof *v);

	ck_assert_ptr_nonnull(d);
	ck_assert_ptr_nonnull(v);
	*n = 0;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		if (*n + 1 >= cap)
			ck_assert_ptr_nonnull(v = realloc(v, (cap *= 2) * sizeof *v));
		ck_assert_ptr_nonnull(v[(*n)++] = strdup(de->d_name));
	}
	closedir(d);
	v[*n] = NULL;
	qsort(v, *n, sizeof *v, by_name);
	return v;
}

static void
free_list(char **v)
{
	for (char **p = v; *p != NULL; p++)
		free(*p);
	free(v);
}

static char *
slurp(const char *dir, const char *name, size_t *len)
{
	char path[1200], *text;

	snprintf(path, sizeof path, "%s/%s", dir, name);
	text = th_slurp_n(path, len);
	ck_assert_msg(text != NULL, "cannot read %s", path);
	return text;
}

/* The JSONTestSuite directory @p sub, or NULL (with a note) when absent. */
static const char *
suite_dir(const char *sub)
{
	char rel[200];
	const char *dir;

	snprintf(rel, sizeof rel, "json/JSONTestSuite/%s", sub);
	dir = th_testdata(rel);
	if (dir == NULL)
		printf("json: %s not found (set TIDE_TESTDATA); skipped\n", rel);
	return dir;
}

/* The verdict the name of a test_parsing case asks for: 1 accept, 0
 * refuse. */
static int
expected(const char *name)
{
	if (name[0] == 'y')
		return 1;
	if (name[0] == 'n')
		return 0;
	for (size_t k = 0; k < NDECIDED; k++)
		if (strcmp(i_decisions[k].file, name) == 0)
			return i_decisions[k].accept;
	ck_abort_msg("%s: no decision for this implementation-defined case", name);
	return -1;
}

START_TEST(suite_decode)
{
	const char *dir = suite_dir("test_parsing");
	char err[TIDEI_ERRLEN];
	size_t n, ni = 0;
	char **names;

	if (dir == NULL)
		return;
	names = list_dir(dir, &n);
	ck_assert_uint_ge(n, 300);
	for (char **p = names; *p != NULL; p++) {
		size_t len;
		char *text = slurp(dir, *p, &len);
		const char *got = decode(text, len, err);
		int want = expected(*p);
		ni += (*p)[0] == 'i';
		ck_assert_msg((got != NULL) == want, "%s: %s", *p, got ? "accepted" : err);
		if (got != NULL) {
			/* written back, it reads back the same */
			char *again = strdup(got);
			ck_assert_ptr_nonnull(again);
			got = decode(again, strlen(again), err);
			ck_assert_msg(got != NULL && strcmp(got, again) == 0,
				      "%s: %s reads back as %s", *p, again, got ? got : err);
			free(again);
		}
		free(text);
	}
	/* every decided case is in the suite, and every one of the suite decided */
	ck_assert_uint_eq(ni, NDECIDED);
	free_list(names);
}
END_TEST

/* Each case as the data of an otherwise valid event, followed by another
 * event on the next line.  The parser must agree with tidei_json_decode,
 * and an accepted case is stored as decoded.
 *
 * Embedding changes what top-level-only cases mean, so "refused" is judged
 * for the message: the case's event is not stored as one with that data,
 * and an error is reported.  A case whose own closing bracket ends the
 * event early (n_structure_object_followed_by_closing_object, "{}}") stores
 * the event as closed there, with data {}, and the rest is the error; a
 * byte order mark or trailing garbage is refused inside an event as at the
 * top.  The event on the next line is stored whenever the case's line
 * did not leave a string or container open across it. */
START_TEST(suite_event_parser)
{
	const char *dir = suite_dir("test_parsing");
	char err[TIDEI_ERRLEN];
	size_t n;
	char **names;

	if (dir == NULL)
		return;
	names = list_dir(dir, &n);
	for (char **p = names; *p != NULL; p++) {
		size_t len, at;
		char *text = slurp(dir, *p, &len), *msg, *want = NULL;
		const char *got = decode(text, len, err);
		verdicts *v;
		int accepted;

		if (got != NULL)
			ck_assert_ptr_nonnull(want = strdup(got));
		msg = embed(text, len, 0, &at);
		v = parse(msg, at + len + strlen(msg + at + len));
		ck_assert_msg(v->n >= 2 && v->ok[0], "%s: %d reports, first: %s", *p, v->n,
			      v->err[0]);
		accepted = v->n == 3 && v->bad == 0;
		ck_assert_msg(accepted == expected(*p), "%s: %s", *p,
			      accepted ? "accepted" : v->err[v->ok[1] ? 2 : 1]);
		if (accepted)
			ck_assert_msg(strcmp(data_text(v, 1), want) == 0, "%s: stored as %s", *p,
				      data_text(v, 1));
		free(want);
		free(msg);
		free(text);
	}
	free_list(names);
}
END_TEST

/* The transform cases have no expected verdict; whatever is accepted must
 * read back as written, and both parsers must agree. */
START_TEST(suite_transform)
{
	const char *dir = suite_dir("test_transform");
	char err[TIDEI_ERRLEN];
	size_t n;
	char **names;

	if (dir == NULL)
		return;
	names = list_dir(dir, &n);
	ck_assert_uint_ge(n, 20);
	for (char **p = names; *p != NULL; p++) {
		size_t len, at;
		char *text = slurp(dir, *p, &len), *msg, *first = NULL;
		const char *got = decode(text, len, err);
		verdicts *v;

		if (got != NULL) {
			ck_assert_ptr_nonnull(first = strdup(got));
			got = decode(first, strlen(first), err);
			ck_assert_msg(got != NULL && strcmp(got, first) == 0,
				      "%s: %s reads back as %s", *p, first, got ? got : err);
		}
		msg = embed(text, len, 1, &at);
		v = parse(msg, at + len + strlen(msg + at + len));
		ck_assert_msg((v->n == 3 && v->bad == 0) == (first != NULL), "%s: %s", *p,
			      first ? v->err[1] : "accepted by the event parser only");
		if (first != NULL)
			ck_assert_str_eq(data_text(v, 1), first);
		free(first);
		free(msg);
		free(text);
	}
	free_list(names);
}
END_TEST

/* ------------------------------------------------------------------------
 * End to end: a real engine
 * ------------------------------------------------------------------------ */

/* @p s as a Lua string literal, every byte escaped. */
static void
lua_quote(sbuf *b, const char *s)
{
	sb_printf(b, "\"");
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		sb_printf(b, "\\x%02x", *p);
	sb_printf(b, "\"");
}

/* The consumer emits every json.in event's data again, unchanged; on
 * json.lua it runs each fixture through tide.json.decode and tries
 * emits that must be refused or must pass. */
static const char *
write_script(const char *dir)
{
	sbuf b = { 0 };
	const char *path;
	char *text;

	sb_printf(&b, "local tide = require \"tide\"\n"
		      "tide.on(\"json.in\", function(ev)\n"
		      "  tide.emit{ type = \"json.out\", subject = ev.subject, data = ev.data }\n"
		      "end, { name = \"reemit\", from = \"beginning\" })\n"
		      "local texts = {\n");
	for (size_t i = 0; i < NFIX; i++) {
		sb_printf(&b, "  ");
		lua_quote(&b, fixtures[i].json);
		sb_printf(&b, ",\n");
	}
	sb_printf(
		&b,
		"}\n"
		"tide.on(\"json.lua\", function(ev)\n"
		"  for i, t in ipairs(texts) do\n"
		"    local v, err = tide.json.decode(t)\n"
		"    tide.emit{ type = \"json.decoded\", subject = \"f\" .. i,\n"
		"               data = { error = err, text = err == nil and tide.json.encode(v) or "
		"nil } }\n"
		"  end\n"
		"  local ok, err = pcall(tide.emit, { type = \"x\", data = { [\"\\xc0\\xaf\"] = 1 "
		"} "
		"})\n"
		"  tide.emit{ type = \"json.refused\", subject = \"key\", data = { error = err } "
		"}\n"
		"  ok, err = pcall(tide.emit, { type = \"x\", data = \"\\xed\\xa0\\x80\" })\n"
		"  tide.emit{ type = \"json.refused\", subject = \"value\", data = { error = err } "
		"}\n"
		"  tide.emit{ type = \"json.nul\", subject = \"nul\", data = { [\"a\\0b\"] = "
		"\"c\\0d\" } }\n"
		"end, { name = \"lua\", from = \"beginning\" })\n");
	text = sb_take(&b);
	path = th_write(dir, "json.lua", text);
	free(text);
	return path;
}

/* The "error" member of a REP reply line, or NULL when it says ok. */
static char *
reply_error(const char *reply)
{
	char errbuf[256];
	yajl_val v = yajl_tree_parse(reply, errbuf, sizeof errbuf), e, ok;
	char *out = NULL;

	ck_assert_msg(v != NULL, "reply is not JSON: %s", reply);
	ok = yajl_tree_get(v, (const char *[]){ "ok", NULL }, yajl_t_any);
	e = yajl_tree_get(v, (const char *[]){ "error", NULL }, yajl_t_string);
	ck_assert_ptr_nonnull(ok);
	if (!YAJL_IS_TRUE(ok)) {
		const char *text = e ? YAJL_GET_STRING(e) : NULL;
		ck_assert_ptr_nonnull(text);
		ck_assert_ptr_nonnull(out = strdup(text));
	}
	yajl_tree_free(v);
	return out;
}

/* The text of the "data" member of a JSON line as tide_event_json writes
 * it (data comes last), or NULL (static). */
static const char *
line_data(const char *json)
{
	static char buf[4096];
	const char *d = strstr(json, ",\"data\":");
	size_t n;

	if (d == NULL)
		return NULL;
	d += 8;
	n = strlen(d);
	ck_assert(n > 0 && d[n - 1] == '}' && n < sizeof buf);
	memcpy(buf, d, n - 1);
	buf[n - 1] = '\0';
	return buf;
}

/* The line of `tide log` output @p out with subject @p subject and type
 * @p type (copied, static), or NULL. */
static const char *
log_line(const char *out, const char *type, const char *subject)
{
	static char line[4096];
	char t[64], s[64];

	snprintf(t, sizeof t, "\"type\":\"%s\"", type);
	snprintf(s, sizeof s, "\"subject\":\"%s\"", subject);
	for (const char *p = out; *p;) {
		const char *nl = strchr(p, '\n');
		size_t n = nl ? (size_t)(nl - p) : strlen(p);
		if (n < sizeof line) {
			memcpy(line, p, n);
			line[n] = '\0';
			if (strstr(line, t) && strstr(line, s))
				return line;
		}
		p += n + (nl != NULL);
	}
	return NULL;
}

/* A member of a yajl object, as a string, or NULL. */
static const char *
str_member(yajl_val obj, const char *name)
{
	yajl_val v = yajl_tree_get(obj, (const char *[]){ name, NULL }, yajl_t_string);

	return v ? YAJL_GET_STRING(v) : NULL;
}

START_TEST(engine_end_to_end)
{
	const char *dir = th_tmpdir();
	char data[600], reply[8192], *out;
	th_daemon d;
	th_rec *recs;
	long nrec;
	uint64_t in = 0, lua_out = 0;

	snprintf(data, sizeof data, "%s/data", dir);
	ck_assert_int_eq(
		th_daemon_spawn(&d, data, "--data '%s' --script '%s'", data, write_script(dir)), 0);

	/* every fixture as the data of an event of its own */
	for (size_t i = 0; i < NFIX; i++) {
		sbuf b = { 0 };
		char *msg, *err;
		sb_printf(&b,
			  "{\"specversion\":\"1.0\",\"id\":\"f%zu\",\"source\":\"/json\","
			  "\"type\":\"json.in\",\"subject\":\"f%zu\",\"data\":%s}",
			  i, i, fixtures[i].json);
		msg = sb_take(&b);
		ck_assert_int_gt(th_req(d.rep, msg, reply, sizeof reply, 10000), 0);
		err = reply_error(reply);
		if (fixtures[i].stored != NULL) {
			ck_assert_msg(err == NULL, "%s: %s", fixtures[i].name, err);
			in++;
		} else {
			ck_assert_msg(err != NULL && strstr(err, fixtures[i].why) != NULL, "%s: %s",
				      fixtures[i].name, err ? err : "accepted");
		}
		free(err);
		free(msg);
	}
	for (size_t i = 0; i < NATTR; i++) {
		sbuf b = { 0 };
		char *msg, *err;
		sb_printf(
			&b,
			"{\"specversion\":\"1.0\",\"source\":\"/json\",\"type\":\"json.attr\",%s}",
			attr_fixtures[i].members);
		msg = sb_take(&b);
		ck_assert_int_gt(th_req(d.rep, msg, reply, sizeof reply, 10000), 0);
		err = reply_error(reply);
		if (attr_fixtures[i].why == NULL)
			ck_assert_msg(err == NULL, "%s: %s", attr_fixtures[i].name, err);
		else
			ck_assert_msg(err != NULL && strstr(err, attr_fixtures[i].why) != NULL,
				      "%s: %s", attr_fixtures[i].name, err ? err : "accepted");
		free(err);
		free(msg);
	}
	/* requests to the engine are JSON too, and as strict */
	ck_assert_int_gt(th_req(d.rep, "{\"query\":\"\\ud800\"}", reply, sizeof reply, 10000), 0);
	out = reply_error(reply);
	ck_assert_msg(out != NULL && strstr(out, "\\ud800 " HIGH_ALONE), "%s", reply);
	free(out);
	ck_assert_int_gt(
		th_req(d.rep, "{\"command\":\"dlq\",\"seq\":1e400}", reply, sizeof reply, 10000),
		0);
	out = reply_error(reply);
	ck_assert_msg(out != NULL && strcmp(out, "number 1e400 is out of range") == 0, "%s", reply);
	free(out);

	/* the Lua side */
	ck_assert_int_gt(th_req(d.rep,
				"{\"specversion\":\"1.0\",\"id\":\"lua\",\"source\":\"/json\","
				"\"type\":\"json.lua\"}",
				reply, sizeof reply, 10000),
			 0);
	lua_out = NFIX + 3;
	ck_assert_msg(th_wait_settled(data, "reemit", 0, 30000), "reemit did not catch up");
	ck_assert_msg(th_wait_settled(data, "lua", 0, 30000), "lua did not catch up");

	/* read back with `tide log`: each accepted event and its copy */
	out = malloc(1 << 20);
	ck_assert_ptr_nonnull(out);
	ck_assert_int_eq(th_sh(out, 1 << 20, "'%s' log --data '%s'", TIDE_BIN, data), 0);
	for (size_t i = 0; i < NFIX; i++) {
		char subject[32];
		const char *l;
		if (fixtures[i].stored == NULL)
			continue;
		snprintf(subject, sizeof subject, "f%zu", i);
		l = log_line(out, "json.in", subject);
		ck_assert_msg(l != NULL, "%s: not in the log", fixtures[i].name);
		ck_assert_msg(strcmp(line_data(l), fixtures[i].stored) == 0, "%s: logged as %s",
			      fixtures[i].name, line_data(l));
		l = log_line(out, "json.out", subject);
		ck_assert_msg(l != NULL, "%s: not emitted again", fixtures[i].name);
		ck_assert_msg(strcmp(line_data(l), fixtures[i].stored) == 0,
			      "%s: emitted again as %s", fixtures[i].name, line_data(l));
	}
	ck_assert_ptr_nonnull(strstr(out, "\"subject\":\"\xf0\x9f\x98\x80\""));
	free(out);

	/* nothing went to the dead letters */
	{
		char dl[4096];
		ck_assert_int_eq(th_sh(dl, sizeof dl, "'%s' dlq list --data '%s'", TIDE_BIN, data),
				 0);
		ck_assert_msg(dl[0] == '\0', "dead letters: %s", dl);
	}

	/* what the Lua consumer found */
	nrec = th_log_read(data, &recs);
	ck_assert_int_gt(nrec, 0);
	{
		uint64_t decoded = 0, refused = 0, nul = 0, copies = 0;
		for (long k = 0; k < nrec; k++) {
			char errbuf[256];
			yajl_val v;
			const char *t = recs[k].type;
			if (strcmp(t, "json.out") == 0)
				copies++;
			if (strcmp(t, "json.decoded") != 0 && strcmp(t, "json.refused") != 0 &&
			    strcmp(t, "json.nul") != 0)
				continue;
			v = yajl_tree_parse(recs[k].json, errbuf, sizeof errbuf);
			ck_assert_msg(v != NULL, "%s: %s", recs[k].json, errbuf);
			if (strcmp(t, "json.decoded") == 0) {
				size_t i = strtoul(recs[k].subject + 1, NULL, 10) - 1;
				yajl_val dv = yajl_tree_get(v, (const char *[]){ "data", NULL },
							    yajl_t_object);
				const char *e;
				ck_assert(i < NFIX && dv != NULL);
				e = str_member(dv, "error");
				if (fixtures[i].stored != NULL) {
					ck_assert_msg(e == NULL, "%s: tide.json.decode: %s",
						      fixtures[i].name, e);
					ck_assert_msg(str_member(dv, "text") != NULL &&
							      strcmp(str_member(dv, "text"),
								     fixtures[i].stored) == 0,
						      "%s: tide.json.decode gave %s",
						      fixtures[i].name, str_member(dv, "text"));
				} else {
					ck_assert_msg(e != NULL &&
							      strstr(e, fixtures[i].why) != NULL,
						      "%s: tide.json.decode: %s", fixtures[i].name,
						      e ? e : "accepted");
				}
				decoded++;
			} else if (strcmp(t, "json.refused") == 0) {
				yajl_val dv = yajl_tree_get(v, (const char *[]){ "data", NULL },
							    yajl_t_object);
				const char *e = dv ? str_member(dv, "error") : NULL;
				ck_assert_ptr_nonnull(e);
				ck_assert_msg(strstr(e, strcmp(recs[k].subject, "key") == 0
								? "table key is not valid UTF-8"
								: "string is not valid UTF-8") !=
						      NULL,
					      "%s", e);
				refused++;
			} else {
				ck_assert_ptr_nonnull(strstr(
					recs[k].json, "\"data\":{\"a\\u0000b\":\"c\\u0000d\"}"));
				nul++;
			}
			yajl_tree_free(v);
		}
		ck_assert_uint_eq(copies, in);
		ck_assert_uint_eq(decoded + refused + nul, lua_out);
		ck_assert_uint_eq(refused, 2);
		ck_assert_uint_eq(nul, 1);
	}
	th_recs_free(recs, nrec);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
}
END_TEST

Suite *
json_suite(void)
{
	Suite *s = suite_create("json");
	TCase *tc = tcase_create("fixtures");

	tcase_add_test(tc, fixtures_decode);
	tcase_add_test(tc, fixtures_event_parser);
	tcase_add_test(tc, attributes);
	tcase_add_test(tc, nothing_after_the_document);
	tcase_add_test(tc, messages_name_the_byte);
	tcase_add_test(tc, bad_space_between_events);
	tcase_add_test(tc, many_strings_after_non_ascii);
	tcase_add_test(tc, utf8_check);
	suite_add_tcase(s, tc);

	tc = tcase_create("JSONTestSuite");
	tcase_add_test(tc, suite_decode);
	tcase_add_test(tc, suite_event_parser);
	tcase_add_test(tc, suite_transform);
	suite_add_tcase(s, tc);

	tc = tcase_create("engine");
	tcase_add_test(tc, engine_end_to_end);
	suite_add_tcase(s, tc);
	return s;
}
