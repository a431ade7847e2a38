/*
 * test_jscan.c - the event parser's fast path (jscan.c) against its slow
 * path (yajl and the strictness checks around it).
 *
 * The fast path may only ever change speed.  Every test here parses the
 * same message twice, once as the engine does and once with the scanner
 * turned off (tidei_eparser.slow_only), and requires the same reports:
 * the same records byte for byte, the same rejections word for word, in
 * the same order.  The inputs: hand-written edge cases, the project's own
 * NDJSON fixtures, every JSONTestSuite case (alone, as an event's data,
 * in a batch and between two NDJSON lines), the CloudEvents conformance
 * files, and a few hundred thousand random mutations of real events.  A
 * last test checks that the fast path is taken where it should be, so
 * that the comparison is not between two runs of the slow one.
 */
#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "event.h"
#include "helpers.h"
#include "jscan.h"

/* Every report of one parse, as text: "R <hex>" or "E <message>". */
static void
sink(void *ud, const uint8_t *rec, size_t len, const char *err)
{
	tidei_buf *out = ud;
	static const char hex[] = "0123456789abcdef";

	if (err != NULL) {
		tidei_buf_printf(out, "E %s\n", err);
		return;
	}
	tidei_buf_puts(out, "R ");
	for (size_t k = 0; k < len; k++) {
		tidei_buf_putc(out, hex[rec[k] >> 4]);
		tidei_buf_putc(out, hex[rec[k] & 15]);
	}
	tidei_buf_putc(out, '\n');
}

static long
parse(tidei_buf *out, const char *msg, size_t len, int slow_only)
{
	tidei_eparser p;
	long n;

	tidei_eparser_init(&p, 2048);
	p.slow_only = slow_only;
	tidei_buf_reset(out);
	n = tidei_eparser_run(&p, msg, len, sink, out);
	tidei_eparser_free(&p);
	tidei_buf_putc(out, '\0');
	return n;
}

/* Parse both ways and compare; returns the number of reports. */
static long
same(const char *what, const char *msg, size_t len)
{
	tidei_buf fast = { 0 }, slow = { 0 };
	long nf = parse(&fast, msg, len, 0), ns = parse(&slow, msg, len, 1);

	ck_assert_msg(!fast.failed && !slow.failed, "%s: out of memory", what);
	ck_assert_msg(nf == ns && strcmp((char *)fast.p, (char *)slow.p) == 0,
		      "%s: the fast path differs on [%.*s]\nfast (%ld):\n%s\nslow (%ld):\n%s", what,
		      (int)(len < 300 ? len : 300), msg, nf, (char *)fast.p, ns, (char *)slow.p);
	tidei_buf_free(&fast);
	tidei_buf_free(&slow);
	return nf;
}

static long
same_str(const char *msg)
{
	return same("case", msg, strlen(msg));
}

#define EV "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/s\",\"type\":\"t\""

static const char *const edge_cases[] = {
	EV "}",
	EV ",\"data\":{\"a\":1,\"b\":[1,2.5,-0,1e5,1E+2,-3.25e-7,true,false,null]}}",
	EV ",\"data\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"}",
	EV ",\"data\":\"tab\\t nl\\n q\\\" bs\\\\ sl\\/ \\b\\f\\r \\u00e9 \\u20ac \\u0041\"}",
	EV ",\"data\":\"nul \\u0000 here\"}",
	EV ",\"data\":\"pair \\ud83d\\ude00\"}",
	EV ",\"data\":\"lone \\ud83d x\"}",
	EV ",\"data\":\"low \\ude00 x\"}",
	EV ",\"data\":\"why? \\n\"}",
	EV ",\"data\":\"why?\"}",
	EV ",\"data\":\"\xf0\x9f\x98\x80 \\n\"}",
	EV ",\"data\":\"overlong \xc0\xaf\"}",
	EV ",\"data\":\"surrogate \xed\xa0\x80\"}",
	EV ",\"data\":\"beyond \xf4\x90\x80\x80\"}",
	EV ",\"data\":\"cut \xe2\x82\"}",
	EV ",\"data\":\"ctl \x01\"}",
	EV ",\"data\":\"bad \\x escape\"}",
	EV ",\"data\":\"bad \\u12g4\"}",
	EV ",\"data\":1e400}",
	EV ",\"data\":-01}",
	EV ",\"data\":1.}",
	EV ",\"data\":.5}",
	EV ",\"data\":+1}",
	EV ",\"data\":1e}",
	EV ",\"data\":0x10}",
	EV ",\"data\":tru}",
	EV ",\"data\":truex}",
	EV ",\"data\":nulll}",
	EV ",\"data\":[1 2]}",
	EV ",\"data\":[1,]}",
	EV ",\"data\":{\"a\" 1}}",
	EV ",\"data\":{\"a\":1,}}",
	EV ",\"data\":{1:2}}",
	EV ",\"data\":12345678901234567890123}",
	EV ",\"data\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
	   "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}",
	EV ",\"extra\":{\"x\":1},\"n\":2}",
	EV ",\"time\":\"2026-12-03T10:00:00.123+02:00\",\"subject\":\"k\"}",
	EV ",\"specversion\":\"1.0\"}",
	EV "}\n" EV "}\n" EV "}",
	EV "}" EV "}",
	EV "} " EV "}  \n\t ",
	EV "}\f",
	EV "}\n\v\n",
	EV "}\f" EV "}",
	EV "\f}",
	EV "}\n{\"broken\n" EV "}",
	EV "}\n  {\"indented\": oops}\n" EV "}",
	EV "}]",
	EV "}}",
	EV "} x",
	EV "}1",
	EV "}\"s\"",
	EV "}\xef\xbb\xbf",
	"[" EV "}, " EV ",\"data\":[]}]",
	"[" EV "}, 5, [1], " EV "}]",
	"[]",
	"[[]]",
	"{}",
	"[" EV "}",
	"[" EV "},",
	EV,
	EV ",",
	EV ",\"data\":",
	EV ",\"data\":\"open",
	"  ",
	"\f",
	"1",
	"\"x\"",
	"42",
	EV "}42",
	EV "} 4",
	"[1] true",
	"null",
	"nul",
	"{\"a\":1}\n{\"b\":2}",
	"{\"\":1}",
	"{\"data\":1}",
	"{\"data\":null}",
	EV ",\"data\":{\"\":\"\",\"k\\u00e9y\":\"v\"}}",
	EV ",\"dataschema\":\"http://x/y\",\"datacontenttype\":\"application/json\"}",
	EV ",\"data_base64\":\"aGk=\"}",
	EV ",\"data\":\"\\ud800\\u0041\"}",
	EV ",\"data\":\"\\uD83D\\uDE00\"}",
	EV ",\"data\":\"\\\"\"}",
	EV ",\"data\":\"a\\\\\"}",
	EV ",\"data\":\"\\\\\\\"\"}",
	EV "}\"}}]",
	EV "}\n\"open string\n" EV "}",
	EV "}\n/* a comment */\n" EV "}",
	EV "}\n" EV "}\n/ta\":[0]}\n",
	"// comment\n" EV "}",
};

START_TEST(edges)
{
	for (size_t k = 0; k < sizeof edge_cases / sizeof *edge_cases; k++)
		same_str(edge_cases[k]);
}
END_TEST

/* Two things yajl got wrong, said the same way by both paths. */
START_TEST(stray_text_after_a_value)
{
	tidei_buf out = { 0 };

	/* a string opened after an event and never closed: yajl took the end
	 * of the message for the end of its input and said nothing */
	ck_assert_int_eq(same_str(EV "}\"}}]"), 2);
	parse(&out, EV "}\"}}]", strlen(EV "}\"}}]"), 1);
	ck_assert_ptr_nonnull(strstr((char *)out.p, "E not valid JSON at byte 59: premature EOF"));
	/* a slash between two events: reported once, at its own byte */
	ck_assert_int_eq(same_str(EV "}\n/x\n" EV "}"), 3);
	parse(&out, EV "}\n/x\n" EV "}", strlen(EV "}\n/x\n" EV "}"), 1);
	ck_assert_ptr_nonnull(
		strstr((char *)out.p, "E not valid JSON at byte 1: probable comment"));
	tidei_buf_free(&out);
}
END_TEST

/* Every byte offset of a valid batch as the end of the message. */
START_TEST(every_truncation)
{
	const char *msg = "[" EV ",\"data\":{\"a\":[1,2.5e3,\"x\\u00e9\\n\",true,null]}},\n" EV
			  ",\"subject\":\"caf\xc3\xa9\"}]\n" EV "}\n";
	size_t n = strlen(msg);

	for (size_t k = 0; k <= n; k++)
		same("truncated", msg, k);
}
END_TEST

/* Each regular file under @p dir whose name ends in @p ext (or any, if
 * NULL), at any depth, given to @p fn.  Returns how many. */
static size_t
each_file(const char *dir, const char *ext,
	  void (*fn)(const char *path, const char *text, size_t len))
{
	DIR *d = opendir(dir);
	struct dirent *de;
	size_t count = 0;

	if (d == NULL)
		return 0;
	while ((de = readdir(d)) != NULL) {
		char path[2048];
		struct stat st;
		size_t nl = strlen(de->d_name), el = ext ? strlen(ext) : 0;
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
		if (stat(path, &st) != 0)
			continue;
		if (S_ISDIR(st.st_mode)) {
			count += each_file(path, ext, fn);
		} else if (S_ISREG(st.st_mode) &&
			   (ext == NULL || (nl > el && strcmp(de->d_name + nl - el, ext) == 0))) {
			size_t len;
			char *text = th_slurp_n(path, &len);
			ck_assert_ptr_nonnull(text);
			fn(path, text, len);
			free(text);
			count++;
		}
	}
	closedir(d);
	return count;
}

static void
whole(const char *path, const char *text, size_t len)
{
	same(path, text, len);
}

START_TEST(project_fixtures)
{
	size_t n = 0;

	n += each_file(th_src("examples"), ".ndjson", whole);
	n += each_file(th_src("rules"), ".ndjson", whole);
	n += each_file(th_src("tests/data"), ".ndjson", whole);
	ck_assert_uint_ge(n, 40);
}
END_TEST

/* A JSONTestSuite case: alone, as the data of an event, as a batch's
 * element, and between two events of NDJSON. */
static void
suite_case(const char *path, const char *text, size_t len)
{
	tidei_buf m = { 0 };

	same(path, text, len);
	tidei_buf_puts(&m, EV ",\"data\":");
	tidei_buf_put(&m, text, len);
	tidei_buf_puts(&m, "}");
	same(path, (char *)m.p, m.len);
	tidei_buf_reset(&m);
	tidei_buf_puts(&m, "[" EV "},");
	tidei_buf_put(&m, text, len);
	tidei_buf_puts(&m, "," EV "}]");
	same(path, (char *)m.p, m.len);
	tidei_buf_reset(&m);
	tidei_buf_puts(&m, EV "}\n");
	tidei_buf_put(&m, text, len);
	tidei_buf_puts(&m, "\n" EV "}\n");
	same(path, (char *)m.p, m.len);
	ck_assert(!m.failed);
	tidei_buf_free(&m);
}

/* Every .json file under the shared test data's @p rel through @p fn, at
 * least @p least of them; a note and nothing when the data is absent. */
static void
each_testdata(const char *rel, void (*fn)(const char *path, const char *text, size_t len),
	      size_t least)
{
	const char *dir = th_testdata(rel);

	if (dir == NULL) {
		printf("jscan: %s not found (set TIDE_TESTDATA); skipped\n", rel);
		return;
	}
	ck_assert_uint_ge(each_file(dir, ".json", fn), least);
}

START_TEST(json_test_suite)
{
	each_testdata("json/JSONTestSuite/test_parsing", suite_case, 300);
	each_testdata("json/JSONTestSuite/test_transform", suite_case, 0);
}
END_TEST

START_TEST(cloudevents_files)
{
	each_testdata("cloudevents", whole, 10);
}
END_TEST

/* ------------------------------------------------------------------------
 * Random mutations
 * ------------------------------------------------------------------------ */

static uint64_t rng_state;

static uint32_t
rng(void)
{
	/* xorshift64*: reproducible from the seed printed on failure */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return (uint32_t)((rng_state * 0x2545f4914f6cdd1dull) >> 32);
}

static const char *const seeds[] = {
	"{\"specversion\":\"1.0\",\"id\":\"bench-r1-42\",\"source\":\"/bench/shop\",\"type\":"
	"\"order.placed\",\"subject\":\"order-0731\",\"data\":{\"customer\":\"cust-01234\","
	"\"total\":512.34,\"items\":3,\"currency\":\"EUR\",\"channel\":\"web\"}}",
	"[" EV ",\"data\":{\"a\":[1,-2.5e-3,\"x\\u00e9\\n\",true,false,null],\"b\":{}}},\n" EV
	",\"subject\":\"caf\xc3\xa9\",\"time\":\"2026-01-02T03:04:05Z\"}]",
	EV ",\"data\":\"\\ud83d\\ude00 \xf0\x9f\x98\x80 \\\"q\\\" \\\\\"}\n" EV
	   ",\"data\":[0,1e2,-0.5]}\n",
};

/* Bytes a mutation puts in: JSON's own, and those at its edges. */
static const char alphabet[] = "{}[]\",:\\ \t\n\r\f\v0123456789eE+-.tfnulasrx/"
			       "\x80\xbf\xc3\xa9\xed\xa0\xf0\x9f\xf4\x90\xc0\xff";

static void
mutate(tidei_buf *m)
{
	size_t n = m->len, at = n ? rng() % n : 0;

	switch (rng() % 6) {
	case 0: /* replace a byte */
		if (n)
			m->p[at] = (uint8_t)alphabet[rng() % (sizeof alphabet - 1)];
		break;
	case 1: /* insert one */
		tidei_buf_putc(m, 0);
		memmove(m->p + at + 1, m->p + at, n - at);
		m->p[at] = (uint8_t)alphabet[rng() % (sizeof alphabet - 1)];
		break;
	case 2: /* delete one */
		if (n) {
			memmove(m->p + at, m->p + at + 1, n - at - 1);
			m->len--;
		}
		break;
	case 3: /* cut the end */ m->len = at; break;
	case 4: { /* repeat a span */
		size_t span = n - at < 24 ? n - at : 1 + rng() % 24;
		tidei_buf_reserve(m, span);
		memmove(m->p + at + span, m->p + at, n - at);
		m->len += span;
		break;
	}
	default: /* a NUL */
		if (n)
			m->p[at] = 0;
		break;
	}
}

START_TEST(mutations)
{
	const char *env = getenv("TIDE_JSCAN_ROUNDS");
	long rounds = env ? atol(env) : 60000;
	tidei_buf m = { 0 };

	env = getenv("TIDE_JSCAN_SEED");
	rng_state = env ? strtoull(env, NULL, 0) | 1 : 0x9e3779b97f4a7c15ull;
	for (long r = 0; r < rounds; r++) {
		const char *seed = seeds[r % (sizeof seeds / sizeof *seeds)];
		int times = 1 + (int)(rng() % 4);
		char what[64];
		tidei_buf_reset(&m);
		tidei_buf_puts(&m, seed);
		for (int t = 0; t < times; t++)
			mutate(&m);
		ck_assert(!m.failed);
		snprintf(what, sizeof what, "mutation %ld", r);
		same(what, (char *)m.p, m.len);
	}
	tidei_buf_free(&m);
}
END_TEST

/* ------------------------------------------------------------------------
 * The scanner itself
 * ------------------------------------------------------------------------ */

START_TEST(scanner_takes_the_common_case)
{
	tidei_jtape tp = { 0 };
	const char *ev = seeds[0];
	const char *txt;
	long end;

	end = tidei_jscan(&tp, ev, strlen(ev), 0);
	ck_assert_int_eq(end, (long)strlen(ev));
	/* { 5 attributes as key+string, data key, { 5 members } } */
	ck_assert_uint_eq(tp.n, 1 + 10 + 1 + 1 + 10 + 1 + 1);
	ck_assert_int_eq(tp.t[0].kind, TIDEI_JT_MAP);
	ck_assert_int_eq(tp.t[1].kind, TIDEI_JT_KEY);
	txt = tidei_jtok_text(&tp, ev, &tp.t[2]);
	ck_assert_int_eq(tp.t[2].kind, TIDEI_JT_STRING);
	ck_assert(tp.t[2].len == 3 && memcmp(txt, "1.0", 3) == 0);
	ck_assert_int_eq(tp.t[2].decoded, 0);
	ck_assert_int_eq(tp.t[tp.n - 1].kind, TIDEI_JT_END);
	ck_assert_uint_eq(tp.t[tp.n - 1].end, strlen(ev));

	/* escapes decoded, the end of each token where yajl has it */
	end = tidei_jscan(&tp, "[\"a\\n\\u00e9\", 12 ,null]  ", 25, 0);
	ck_assert_int_eq(end, 23);
	ck_assert_uint_eq(tp.n, 5);
	ck_assert_int_eq(tp.t[1].decoded, 1);
	ck_assert(tp.t[1].len == 4 &&
		  memcmp(tidei_jtok_text(&tp, NULL, &tp.t[1]), "a\n\xc3\xa9", 4) == 0);
	ck_assert_int_eq(tp.t[2].kind, TIDEI_JT_NUMBER);
	ck_assert_uint_eq(tp.t[2].end, 16);
	ck_assert_int_eq(tp.t[3].kind, TIDEI_JT_NULL);

	/* left to the slow path */
	ck_assert_int_eq(tidei_jscan(&tp, "{\"a\":1}", 6, 0), -1);
	ck_assert_int_eq(tidei_jscan(&tp, "[1\f]", 4, 0), -1);
	ck_assert_int_eq(tidei_jscan(&tp, "[\"\\ud83d\\ude00\"]", 16, 0), -1);
	ck_assert_int_eq(tidei_jscan(&tp, "[\"\xc0\xaf\"]", 6, 0), -1);
	ck_assert_int_eq(tidei_jscan(&tp, "[01]", 4, 0), -1);
	ck_assert_int_eq(tidei_jscan(&tp, "1", 1, 0), -1);
	ck_assert_int_eq(tidei_jscan(&tp, "[\"a\\", 4, 0), -1);
	tidei_jtape_free(&tp);
}
END_TEST

Suite *
jscan_suite(void)
{
	Suite *s = suite_create("jscan");
	TCase *tc = tcase_create("same as the slow path");

	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, edges);
	tcase_add_test(tc, stray_text_after_a_value);
	tcase_add_test(tc, every_truncation);
	tcase_add_test(tc, project_fixtures);
	tcase_add_test(tc, json_test_suite);
	tcase_add_test(tc, cloudevents_files);
	tcase_add_test(tc, mutations);
	tcase_add_test(tc, scanner_takes_the_common_case);
	suite_add_tcase(s, tc);
	return s;
}
