/*
 * test_cloudevents.c - the CloudEvents conformance material in
 * ../shared/testdata/cloudevents, judged by the event parser.  Skips with
 * a message when the data is absent.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "helpers.h"

static char *
slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	long n;

	ck_assert_ptr_nonnull(f);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	buf = malloc((size_t)n + 1);
	ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
	buf[n] = '\0';
	fclose(f);
	*len = (size_t)n;
	return buf;
}

typedef struct tally {
	int ok, bad;
	char last_err[256];
} tally;

static void
count(void *ud, const uint8_t *rec, size_t len, const char *err)
{
	tally *t = ud;

	(void)rec;
	(void)len;
	if (err) {
		t->bad++;
		snprintf(t->last_err, sizeof t->last_err, "%s", err);
	} else {
		t->ok++;
	}
}

static tally
judge(const char *text)
{
	tidei_eparser p;
	tally t = {0, 0, ""};

	tidei_eparser_init(&p, 1 << 20);
	tidei_eparser_run(&p, text, strlen(text), count, &t);
	tidei_eparser_free(&p);
	return t;
}

START_TEST(sdk_java_fixtures)
{
	/* sdk-java's expectations: the fail_* files and the two files with
	 * invalid extension names are rejected, the others accepted. */
	static const char *const bad[] = {"fail_numeric_decimal.json", "fail_numeric_long.json",
	                                  "json_data_with_ext_upper_case.json",
	                                  "json_data_with_ext_invalid.json"};
	static const char *const good[] = {
		"base64_json_data.json", "base64_json_data_with_ext.json", "base64_text_data.json",
		"base64_xml_data.json", "binary_attr.json", "json_data.json", "json_data_with_ext.json",
		"json_data_with_fractional_time.json", "min.json", "min_subject_null.json",
		"numeric_ext.json", "text_data.json", "xml_data.json"};
	char rel[256];

	if (th_testdata("cloudevents/sdk-java-json") == NULL)
		return; /* shared test data absent: nothing to judge */
	for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
		size_t n;
		char *text;
		tally t;
		snprintf(rel, sizeof rel, "cloudevents/sdk-java-json/%s", good[i]);
		text = slurp(th_testdata(rel), &n);
		t = judge(text);
		ck_assert_msg(t.ok == 1 && t.bad == 0, "%s rejected: %s", good[i], t.last_err);
		free(text);
	}
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		size_t n;
		char *text;
		tally t;
		snprintf(rel, sizeof rel, "cloudevents/sdk-java-json/%s", bad[i]);
		text = slurp(th_testdata(rel), &n);
		t = judge(text);
		ck_assert_msg(t.ok == 0 && t.bad == 1, "%s accepted", bad[i]);
		free(text);
	}
}
END_TEST

Suite *
cloudevents_suite(void)
{
	Suite *s = suite_create("cloudevents");
	TCase *tc = tcase_create("conformance");

	tcase_add_test(tc, sdk_java_fixtures);
	suite_add_tcase(s, tc);
	return s;
}
