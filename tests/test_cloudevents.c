/*
 * test_cloudevents.c - the CloudEvents conformance material in
 * ../shared/testdata/cloudevents, judged by the event parser.  Skips with
 * a message when the data is absent.
 *
 * The material is read with yajl_tree, not with Tide's own JSON code, and
 * each test's event or batch is written back as JSON text with yajl_gen
 * (numbers verbatim), so the parser under test sees exactly the bytes a
 * producer would send, and a bug in Tide's JSON layer cannot hide itself.
 *
 * What is judged:
 *  - conformance-format-tests: valid events and batches are accepted and
 *    equal the "golden" samples of its README (compared attribute by
 *    attribute; timestamps as instants); invalid events are rejected with
 *    a message that names the problem; invalid batches lose only their
 *    bad elements.
 *  - sdk-java-json, sdk-javascript: sdk-java's own expectations (see the
 *    README of the test data); every sdk-javascript example is valid.
 *  - spec/examples: the JSON blocks of json-format.md.  Two of them use a
 *    prose placeholder for data_base64 ("... base64 encoded string ..."),
 *    which is not base64 and so not a valid event; the HTTP binary-mode
 *    equivalents are not structured-mode events at all.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

#include "event.h"
#include "helpers.h"
#include "val.h"

/* ------------------------------------------------------------------------
 * Plumbing: files, yajl trees, and what the parser reports
 * ------------------------------------------------------------------------ */

/* A file that must be there, whole. */
static char *
slurp(const char *path, size_t *len)
{
	char *text = th_slurp_n(path, len);

	ck_assert_msg(text != NULL, "cannot read %s", path);
	return text;
}

/* Path of a file of the test data, or NULL (with a note) when absent. */
static const char *
data_file(const char *rel)
{
	char full[300];
	const char *p;

	snprintf(full, sizeof full, "cloudevents/%.250s", rel);
	p = th_testdata(full);
	if (p == NULL)
		printf("cloudevents: %s not found (set TIDE_TESTDATA); skipped\n", full);
	return p;
}

/* Parse a test-data file into a tree (freed by the caller), or NULL when
 * the file is absent. */
static yajl_val
load_tree(const char *rel)
{
	const char *path = data_file(rel);
	char errbuf[256];
	char *text;
	size_t n;
	yajl_val root;

	if (path == NULL)
		return NULL;
	text = slurp(path, &n);
	root = yajl_tree_parse(text, errbuf, sizeof errbuf);
	free(text);
	ck_assert_msg(root != NULL, "%s is not JSON: %s", rel, errbuf);
	return root;
}

/* Member @p key of object @p obj, or NULL. */
static yajl_val
member(yajl_val obj, const char *key)
{
	if (!YAJL_IS_OBJECT(obj))
		return NULL;
	for (size_t k = 0; k < obj->u.object.len; k++)
		if (strcmp(obj->u.object.keys[k], key) == 0)
			return obj->u.object.values[k];
	return NULL;
}

static const char *
member_str(yajl_val obj, const char *key)
{
	yajl_val v = member(obj, key);

	return YAJL_IS_STRING(v) ? YAJL_GET_STRING(v) : NULL;
}

static void
gen(yajl_gen g, yajl_val v)
{
	switch (v->type) {
	case yajl_t_string:
		yajl_gen_string(g, (const unsigned char *)v->u.string, strlen(v->u.string));
		break;
	case yajl_t_number:
		/* the number's text as written, so fidelity is not ours to lose */
		yajl_gen_number(g, v->u.number.r, strlen(v->u.number.r));
		break;
	case yajl_t_object:
		yajl_gen_map_open(g);
		for (size_t k = 0; k < v->u.object.len; k++) {
			const char *key = v->u.object.keys[k];
			yajl_gen_string(g, (const unsigned char *)key, strlen(key));
			gen(g, v->u.object.values[k]);
		}
		yajl_gen_map_close(g);
		break;
	case yajl_t_array:
		yajl_gen_array_open(g);
		for (size_t k = 0; k < v->u.array.len; k++)
			gen(g, v->u.array.values[k]);
		yajl_gen_array_close(g);
		break;
	case yajl_t_true: yajl_gen_bool(g, 1); break;
	case yajl_t_false: yajl_gen_bool(g, 0); break;
	default: yajl_gen_null(g); break;
	}
}

/* @p v as JSON text; the caller frees it. */
static char *
to_json(yajl_val v)
{
	yajl_gen g = yajl_gen_alloc(NULL);
	const unsigned char *buf;
	size_t len;
	char *out;

	ck_assert_ptr_nonnull(g);
	gen(g, v);
	ck_assert_int_eq(yajl_gen_get_buf(g, &buf, &len), yajl_gen_status_ok);
	out = malloc(len + 1);
	ck_assert_ptr_nonnull(out);
	memcpy(out, buf, len);
	out[len] = '\0';
	yajl_gen_free(g);
	return out;
}

#define MAXV 16

/* Everything the parser reported for one message, in order. */
typedef struct verdicts {
	int n; /* events reported */
	int ok, bad;
	int accepted[MAXV];
	char err[MAXV][256];
	tidei_buf rec[MAXV]; /* the record of each accepted event */
} verdicts;

static void
collect(void *ud, const uint8_t *rec, size_t len, const char *err)
{
	verdicts *v = ud;

	ck_assert_int_lt(v->n, MAXV);
	v->accepted[v->n] = err == NULL;
	if (err != NULL) {
		v->bad++;
		snprintf(v->err[v->n], sizeof v->err[0], "%s", err);
	} else {
		v->ok++;
		tidei_buf_put(&v->rec[v->n], rec, len);
		ck_assert(!v->rec[v->n].failed);
	}
	v->n++;
}

/* Parse @p text as one message.  The result is static: valid until the
 * next call. */
static verdicts *
judge(const char *text)
{
	static verdicts v;
	tidei_eparser p;
	long got;

	for (int i = 0; i < MAXV; i++)
		tidei_buf_free(&v.rec[i]);
	memset(&v, 0, sizeof v);
	tidei_eparser_init(&p, 1 << 20);
	got = tidei_eparser_run(&p, text, strlen(text), collect, &v);
	tidei_eparser_free(&p);
	ck_assert_int_eq(got, v.n);
	return &v;
}

/* Judge a file of the test data as one message; NULL when absent. */
static verdicts *
judge_file(const char *rel)
{
	const char *path = data_file(rel);
	verdicts *v;
	char *text;
	size_t n;

	if (path == NULL)
		return NULL;
	text = slurp(path, &n);
	v = judge(text);
	free(text);
	return v;
}

/* The view of accepted event @p k, and its JSON line (static). */
static const char *
view(verdicts *v, int k, struct tide_event *ev)
{
	static tidei_buf out;

	ck_assert_int_lt(k, v->n);
	ck_assert_msg(v->accepted[k], "event %d rejected: %s", k, v->err[k]);
	ck_assert_int_eq(tidei_event_decode(ev, v->rec[k].p, v->rec[k].len), 0);
	ev->seq = 0;
	ev->scratch = NULL;
	tidei_buf_reset(&out);
	ck_assert_int_eq(tidei_event_json(&out, ev), 0);
	tidei_buf_putc(&out, '\0');
	return (const char *)out.p;
}

/* Extension @p name of @p ev into @p it; 0 when it has none. */
static int
ext_item(const struct tide_event *ev, const char *name, tidei_vitem *it)
{
	tidei_vreader r;
	tidei_vitem map, key;

	if (ev->ext == NULL)
		return 0;
	r.p = ev->ext;
	r.end = ev->ext + ev->ext_len;
	ck_assert_int_eq(tidei_val_next(&r, &map), 0);
	ck_assert_int_eq(map.type, TIDEI_V_MAP);
	for (uint32_t k = 0; k < map.u.count; k++) {
		ck_assert_int_eq(tidei_val_next(&r, &key), 0);
		ck_assert_int_eq(key.type, TIDEI_V_STR);
		if (key.u.s.n == strlen(name) && memcmp(key.u.s.p, name, key.u.s.n) == 0) {
			ck_assert_int_eq(tidei_val_next(&r, it), 0);
			return 1;
		}
		ck_assert_int_eq(tidei_val_skip(&r), 0);
	}
	return 0;
}

static uint32_t
ext_count(const struct tide_event *ev)
{
	tidei_vreader r;
	tidei_vitem map;

	if (ev->ext == NULL)
		return 0;
	r.p = ev->ext;
	r.end = ev->ext + ev->ext_len;
	ck_assert_int_eq(tidei_val_next(&r, &map), 0);
	return map.u.count;
}

/* Days since 1970-01-01 of a civil date (H. Hinnant's algorithm). */
static int64_t
days_from_civil(int64_t y, int m, int d)
{
	int64_t era, yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

/* The instant an RFC 3339 timestamp names, in milliseconds since the
 * epoch (the precision the conformance README asks for). */
static int64_t
instant_ms(const char *s)
{
	int y, mo, d, h, mi, se, used = 0, oh = 0, om = 0;
	int64_t ms = 0, scale = 100, t;
	const char *p;

	ck_assert_msg(sscanf(s, "%4d-%2d-%2d%*1[Tt]%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &se,
			     &used) == 6 &&
			      used == 19,
		      "not a timestamp: %s", s);
	p = s + used;
	if (*p == '.')
		for (p++; *p >= '0' && *p <= '9'; p++, scale /= 10)
			ms += scale * (*p - '0');
	t = ((days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60 + se;
	if (*p == '+' || *p == '-') {
		ck_assert_int_eq(sscanf(p + 1, "%2d:%2d", &oh, &om), 2);
		t -= (*p == '+' ? 1 : -1) * (oh * 3600 + om * 60);
	} else {
		ck_assert_msg(*p == 'Z' || *p == 'z', "no offset in %s", s);
	}
	return t * 1000 + ms;
}

static int
has_attr(const struct tide_event *ev, int a, const char *want)
{
	if (want == NULL)
		return ev->attr[a] == NULL;
	return ev->attr[a] != NULL && strcmp(ev->attr[a], want) == 0;
}

#define CHECK_ATTR(ev, a, want, test) \
	ck_assert_msg(has_attr(ev, a, want), "%s: %s is \"%s\", want \"%s\"", test, \
		      tidei_attr_names[a], (ev)->attr[a] ? (ev)->attr[a] : "(absent)", \
		      (want) ? (const char *)(want) : "(absent)")

/* ------------------------------------------------------------------------
 * The golden samples of conformance-format-tests/README.md
 * ------------------------------------------------------------------------ */

/* Compare accepted event @p ev (JSON line @p json) with the golden sample
 * @p sample.  The README's simpleTextData gives its id as "simpleData",
 * while the test data says "simpleTextData": the test data wins, so ids
 * are taken from the event's own test where the two disagree. */
static void
check_golden(const char *sample, const struct tide_event *ev, const char *json, const char *test)
{
	const int64_t t17_31 = instant_ms("2018-04-05T17:31:00Z");
	const char *id = sample;
	const char *source = "https://cloudevents.io";
	const char *ctype = NULL, *schema = NULL, *subject = NULL;
	int with_time = 0, with_data = 0, with_ext = 0;

	if (strcmp(sample, "minimal") == 0) {
		/* nothing beyond the required attributes */
	} else if (strcmp(sample, "minimalWithTime") == 0) {
		with_time = 1;
	} else if (strcmp(sample, "minimalWithRelativeSource") == 0) {
		source = "#fragment";
	} else if (strcmp(sample, "allCore") == 0) {
		ctype = "text/plain";
		schema = "https://cloudevents.io/dataschema";
		subject = "tests";
		with_time = 1;
	} else if (strcmp(sample, "simpleTextData") == 0) {
		ctype = "text/plain";
		with_data = 1;
	} else if (strcmp(sample, "allExtensionTypes") == 0) {
		with_ext = 1;
	} else {
		ck_abort_msg("%s: unknown golden sample '%s'", test, sample);
	}

	CHECK_ATTR(ev, TIDEI_A_ID, id, test);
	CHECK_ATTR(ev, TIDEI_A_SOURCE, source, test);
	CHECK_ATTR(ev, TIDEI_A_TYPE, "io.cloudevents.test", test);
	CHECK_ATTR(ev, TIDEI_A_DATACONTENTTYPE, ctype, test);
	CHECK_ATTR(ev, TIDEI_A_DATASCHEMA, schema, test);
	CHECK_ATTR(ev, TIDEI_A_SUBJECT, subject, test);
	CHECK_ATTR(ev, TIDEI_A_CORRELATIONID, NULL, test);
	CHECK_ATTR(ev, TIDEI_A_CAUSATIONID, NULL, test);
	ck_assert_msg(strncmp(json, "{\"specversion\":\"1.0\",", 21) == 0, "%s: %s", test, json);
	if (with_time) {
		ck_assert_msg(ev->attr[TIDEI_A_TIME] != NULL, "%s: no time", test);
		ck_assert_msg(instant_ms(ev->attr[TIDEI_A_TIME]) == t17_31,
			      "%s: time %s is not 2018-04-05T17:31:00Z", test,
			      ev->attr[TIDEI_A_TIME]);
	} else {
		CHECK_ATTR(ev, TIDEI_A_TIME, NULL, test);
	}
	if (with_data) {
		ck_assert_ptr_nonnull(ev->data);
		ck_assert_msg(strstr(json, ",\"data\":\"Simple text\"}") != NULL, "%s: %s", test,
			      json);
	} else {
		ck_assert_msg(ev->data == NULL, "%s has data: %s", test, json);
	}
	if (with_ext) {
		tidei_vitem it;
		static const struct {
			const char *name, *value;
		} strs[] = {
			{ "extstring", "text" },
			{ "exturi", "https://cloudevents.io" },
			{ "exturiref", "//authority/path" },
			{ "exttimestamp", "2023-03-31T15:12:00Z" },
			/* JSON carries Binary as base64 text; without a declared
			 * type the parser cannot know, so it stays a string */
			{ "extbinary", "TWE=" },
		};
		ck_assert_uint_eq(ext_count(ev), 7);
		ck_assert(ext_item(ev, "extinteger", &it));
		ck_assert_int_eq(it.type, TIDEI_V_INT);
		ck_assert_int_eq(it.u.i, 10);
		ck_assert(ext_item(ev, "extboolean", &it));
		ck_assert_int_eq(it.type, TIDEI_V_TRUE);
		for (size_t k = 0; k < sizeof strs / sizeof *strs; k++) {
			ck_assert_msg(ext_item(ev, strs[k].name, &it), "%s: no %s", test,
				      strs[k].name);
			ck_assert_int_eq(it.type, TIDEI_V_STR);
			ck_assert_uint_eq(it.u.s.n, strlen(strs[k].value));
			ck_assert(memcmp(it.u.s.p, strs[k].value, it.u.s.n) == 0);
		}
		ck_assert_ptr_nonnull(strstr(json, "\"extinteger\":10"));
		ck_assert_ptr_nonnull(strstr(json, "\"extboolean\":true"));
		ck_assert_ptr_nonnull(strstr(json, "\"extbinary\":\"TWE=\""));
	} else {
		ck_assert_msg(ext_count(ev) == 0, "%s has extensions: %s", test, json);
	}
}

/* The golden batches: the samples of their events, in order. */
static const struct {
	const char *id;
	int n;
	const char *samples[2];
} golden_batches[] = {
	{ "empty", 0, { NULL, NULL } },
	{ "minimal", 1, { "minimal", NULL } },
	{ "minimal2", 2, { "minimal", "minimal" } },
	{ "minimalAndAllCore", 2, { "minimal", "allCore" } },
	{ "minimalAndAllExtensionTypes", 2, { "minimal", "allExtensionTypes" } },
};

/* Every test of a conformance file, with its effective type checked. */
static yajl_val
conformance_tests(yajl_val root, const char *want_type)
{
	yajl_val tests = member(root, "tests");

	ck_assert_str_eq(member_str(root, "testType"), want_type);
	ck_assert_msg(YAJL_IS_ARRAY(tests) && tests->u.array.len > 0, "no tests");
	for (size_t k = 0; k < tests->u.array.len; k++) {
		const char *type = member_str(tests->u.array.values[k], "testType");
		ck_assert_msg(type == NULL || strcmp(type, want_type) == 0,
			      "test %zu overrides its type to %s", k, type);
	}
	return tests;
}

/* ------------------------------------------------------------------------
 * conformance-format-tests
 * ------------------------------------------------------------------------ */

START_TEST(conformance_valid_events)
{
	yajl_val root = load_tree("conformance-format-tests/json_valid-events.json");
	yajl_val tests;
	size_t judged = 0;

	if (root == NULL)
		return;
	tests = conformance_tests(root, "ValidSingleEvent");
	for (size_t k = 0; k < tests->u.array.len; k++) {
		yajl_val t = tests->u.array.values[k];
		const char *id = member_str(t, "id"), *sample = member_str(t, "sampleId");
		yajl_val event = member(t, "event");
		struct tide_event ev;
		char *text;
		verdicts *v;

		ck_assert_ptr_nonnull(id);
		ck_assert_msg(event != NULL && sample != NULL, "%s: no event or sampleId", id);
		text = to_json(event);
		v = judge(text);
		ck_assert_msg(v->n == 1, "%s: %d events reported for %s", id, v->n, text);
		ck_assert_msg(v->ok == 1, "%s rejected: %s", id, v->err[0]);
		check_golden(sample, &ev, view(v, 0, &ev), id);
		free(text);
		judged++;
	}
	ck_assert_uint_eq(judged, 10); /* the snapshot's count: nothing skipped */
	yajl_tree_free(root);
}
END_TEST

/* What each invalid event's message must say: the exact text, or (when
 * exact is 0) a fragment of it. */
static const struct {
	const char *id;
	int exact;
	const char *says;
} invalid_says[] = {
	{ "invalidNoSpecVersion", 1, "missing required attribute 'specversion'" },
	{ "invalidNoId", 1, "missing required attribute 'id'" },
	{ "invalidNoType", 1, "missing required attribute 'type'" },
	{ "invalidNoSource", 1, "missing required attribute 'source'" },
	{ "invalidTimeGarbage", 1, "attribute 'time' is not an RFC 3339 timestamp: \"lunchtime\"" },
	{ "invalidTimeToMinute", 0, "RFC 3339" },
	{ "invalidTimeOffsetX", 0, "RFC 3339" },
	{ "invalidTimeOffsetOutOfRange", 0, "RFC 3339" },
	{ "invalidTimeOffsetNonInteger", 0, "RFC 3339" },
	{ "invalidTimeOffsetHourOnly", 0, "RFC 3339" },
	{ "invalidEmptyId", 1, "attribute 'id' must not be empty" },
	{ "invalidEmptyType", 1, "attribute 'type' must not be empty" },
	{ "invalidEmptySource", 1, "attribute 'source' must not be empty" },
	{ "invalidEmptySpecVersion", 1, "specversion must be \"1.0\", not \"\"" },
	{ "invalidUnknownSpecVersion", 1, "specversion must be \"1.0\", not \"0.9\"" },
	{ "invalidNonRfc2046DataContentType", 1,
	  "attribute 'datacontenttype' is not a media type (RFC 2046): \"xyz\"" },
	{ "invalidEmptyDataContentType", 1, "attribute 'datacontenttype' must not be empty" },
	{ "invalidEmptyDataSchema", 1, "attribute 'dataschema' must not be empty" },
	{ "invalidEmptySubject", 1, "attribute 'subject' must not be empty" },
	{ "invalidNumericId", 1, "attribute 'id' must be a string, not a number" },
	{ "invalidObjectId", 1, "attribute 'id' must be a string, not an object" },
	{ "invalidCapitalizedExtension", 1,
	  "extension attribute name 'MyExtension' must use only lowercase letters and digits" },
	{ "invalidPunctuatedExtension", 1,
	  "extension attribute name 'my.extension' must use only lowercase letters and digits" },
	/* both the name and the value are wrong; naming either is right */
	{ "invalidNonIntegerExtensionValue", 0, "'my.extension'" },
	{ "invalidBothDataAndDataBase64", 1, "data and data_base64 are mutually exclusive" },
};

START_TEST(conformance_invalid_events)
{
	yajl_val root = load_tree("conformance-format-tests/json_invalid-events.json");
	yajl_val tests;
	size_t judged = 0;

	if (root == NULL)
		return;
	tests = conformance_tests(root, "InvalidSingleEvent");
	for (size_t k = 0; k < tests->u.array.len; k++) {
		yajl_val t = tests->u.array.values[k];
		const char *id = member_str(t, "id");
		yajl_val event = member(t, "event");
		char *text;
		verdicts *v;
		size_t s;

		ck_assert_ptr_nonnull(id);
		ck_assert_msg(event != NULL, "%s: no event", id);
		text = to_json(event);
		v = judge(text);
		ck_assert_msg(v->n == 1, "%s: %d events reported for %s", id, v->n, text);
		ck_assert_msg(v->bad == 1, "%s accepted: %s", id, text);
		ck_assert_msg(strlen(v->err[0]) > 10, "%s: message too vague: '%s'", id, v->err[0]);
		for (s = 0; s < sizeof invalid_says / sizeof *invalid_says; s++)
			if (strcmp(invalid_says[s].id, id) == 0)
				break;
		/* a test added upstream needs only the rejection above */
		if (s < sizeof invalid_says / sizeof *invalid_says) {
			if (invalid_says[s].exact)
				ck_assert_msg(strcmp(v->err[0], invalid_says[s].says) == 0,
					      "%s: message '%s', want '%s'", id, v->err[0],
					      invalid_says[s].says);
			else
				ck_assert_msg(strstr(v->err[0], invalid_says[s].says) != NULL,
					      "%s: message '%s' does not say '%s'", id, v->err[0],
					      invalid_says[s].says);
			judged++;
		}
		free(text);
	}
	ck_assert_uint_eq(judged, sizeof invalid_says / sizeof *invalid_says);
	yajl_tree_free(root);
}
END_TEST

START_TEST(conformance_valid_batches)
{
	yajl_val root = load_tree("conformance-format-tests/json_valid-batches.json");
	yajl_val tests;
	size_t judged = 0;

	if (root == NULL)
		return;
	tests = conformance_tests(root, "ValidBatch");
	for (size_t k = 0; k < tests->u.array.len; k++) {
		yajl_val t = tests->u.array.values[k];
		const char *id = member_str(t, "id"), *sample = member_str(t, "sampleId");
		yajl_val batch = member(t, "batch");
		size_t g;
		char *text;
		verdicts *v;

		ck_assert_ptr_nonnull(id);
		ck_assert_msg(YAJL_IS_ARRAY(batch) && sample != NULL, "%s: no batch or sampleId",
			      id);
		for (g = 0; g < sizeof golden_batches / sizeof *golden_batches; g++)
			if (strcmp(golden_batches[g].id, sample) == 0)
				break;
		ck_assert_msg(g < sizeof golden_batches / sizeof *golden_batches,
			      "%s: unknown golden batch '%s'", id, sample);
		text = to_json(batch);
		v = judge(text);
		ck_assert_msg(v->n == golden_batches[g].n && v->ok == v->n,
			      "%s: %d of %d accepted (want %d): %s", id, v->ok, v->n,
			      golden_batches[g].n, v->bad ? v->err[0] : "");
		ck_assert_uint_eq(batch->u.array.len, (size_t)v->n);
		for (int e = 0; e < v->n; e++) {
			struct tide_event ev;
			char where[128];
			snprintf(where, sizeof where, "%s[%d]", id, e);
			check_golden(golden_batches[g].samples[e], &ev, view(v, e, &ev), where);
		}
		free(text);
		judged++;
	}
	ck_assert_uint_eq(judged, 5);
	yajl_tree_free(root);
}
END_TEST

START_TEST(conformance_invalid_batches)
{
	yajl_val root = load_tree("conformance-format-tests/json_invalid-batches.json");
	yajl_val tests;
	int saw_non_object = 0, saw_mixed = 0;

	if (root == NULL)
		return;
	tests = conformance_tests(root, "InvalidBatch");
	for (size_t k = 0; k < tests->u.array.len; k++) {
		yajl_val t = tests->u.array.values[k];
		const char *id = member_str(t, "id");
		yajl_val batch = member(t, "batch");
		char *text;
		verdicts *v;
		/* each element's verdict when judged on its own */
		int alone_ok[MAXV];
		char alone_err[MAXV][256];

		ck_assert_ptr_nonnull(id);
		ck_assert_msg(YAJL_IS_ARRAY(batch), "%s: no batch", id);
		ck_assert_uint_le(batch->u.array.len, MAXV);
		for (size_t e = 0; e < batch->u.array.len; e++) {
			char *one = to_json(batch->u.array.values[e]);
			v = judge(one);
			ck_assert_int_eq(v->n, 1);
			alone_ok[e] = v->accepted[0];
			snprintf(alone_err[e], sizeof alone_err[e], "%s", v->err[0]);
			free(one);
		}
		text = to_json(batch);
		v = judge(text);
		/* one verdict per element, a bad one costing only itself */
		ck_assert_msg((size_t)v->n == batch->u.array.len,
			      "%s: %d verdicts for %zu elements", id, v->n, batch->u.array.len);
		ck_assert_msg(v->bad >= 1, "%s: every element accepted", id);
		for (int e = 0; e < v->n; e++) {
			ck_assert_msg(v->accepted[e] == alone_ok[e],
				      "%s[%d]: %s in the batch, %s alone", id, e,
				      v->accepted[e] ? "accepted" : "rejected",
				      alone_ok[e] ? "accepted" : "rejected");
			if (!v->accepted[e])
				ck_assert_str_eq(v->err[e], alone_err[e]);
		}
		if (strcmp(id, "invalidBatchContainingNonObject") == 0) {
			struct tide_event ev;
			saw_non_object = 1;
			ck_assert_int_eq(v->ok, 1);
			ck_assert_str_eq(v->err[0], "event must be a JSON object");
			view(v, 1, &ev);
			ck_assert_str_eq(ev.attr[TIDEI_A_ID], "minimal1");
			ck_assert_str_eq(ev.attr[TIDEI_A_SOURCE], "https://cloudevents.io");
		} else if (strcmp(id, "invalidBatchMixedSpecVersions") == 0) {
			struct tide_event ev;
			saw_mixed = 1;
			ck_assert_int_eq(v->ok, 1);
			view(v, 0, &ev);
			ck_assert_str_eq(ev.attr[TIDEI_A_ID], "minimal1");
			ck_assert_str_eq(v->err[1], "specversion must be \"1.0\", not \"0.9\"");
		} else if (strcmp(id, "invalidBatchContainingInvalidCloudEvent") == 0) {
			ck_assert_str_eq(v->err[0], "missing required attribute 'id'");
		}
		free(text);
	}
	ck_assert(saw_non_object && saw_mixed);
	yajl_tree_free(root);
}
END_TEST

/* ------------------------------------------------------------------------
 * SDK fixtures
 * ------------------------------------------------------------------------ */

START_TEST(sdk_java_fixtures)
{
	/* sdk-java's expectations: the fail_* files and the two files with
	 * invalid extension names are rejected, the others accepted. */
	static const struct {
		const char *file, *says;
	} bad[] = {
		{ "fail_numeric_decimal.json",
		  "extension 'decimal' must be a string, boolean or "
		  "integer, not a number with a fraction or exponent" },
		{ "fail_numeric_long.json", "extension 'long' is outside the 32-bit integer range "
					    "of CloudEvents" },
		{ "json_data_with_ext_upper_case.json",
		  "extension attribute name 'aString' must use "
		  "only lowercase letters and digits" },
		{ "json_data_with_ext_invalid.json",
		  "extension attribute name 'a_invalid_name' must "
		  "use only lowercase letters and digits" },
	};
	static const char *const good[] = { "base64_json_data.json",
					    "base64_json_data_with_ext.json",
					    "base64_text_data.json",
					    "base64_xml_data.json",
					    "binary_attr.json",
					    "json_data.json",
					    "json_data_with_ext.json",
					    "json_data_with_fractional_time.json",
					    "min.json",
					    "min_subject_null.json",
					    "numeric_ext.json",
					    "text_data.json",
					    "xml_data.json" };
	char rel[256];
	verdicts *v;
	struct tide_event ev;
	const char *j;

	if (data_file("sdk-java-json") == NULL)
		return;
	for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
		snprintf(rel, sizeof rel, "sdk-java-json/%s", good[i]);
		v = judge_file(rel);
		ck_assert_ptr_nonnull(v);
		ck_assert_msg(v->ok == 1 && v->bad == 0, "%s rejected: %s", good[i], v->err[0]);
	}
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		snprintf(rel, sizeof rel, "sdk-java-json/%s", bad[i].file);
		v = judge_file(rel);
		ck_assert_ptr_nonnull(v);
		ck_assert_msg(v->ok == 0 && v->bad == 1, "%s accepted", bad[i].file);
		ck_assert_str_eq(v->err[0], bad[i].says);
	}

	/* a few contents: what sdk-java's tests read back */
	j = view(judge_file("sdk-java-json/base64_text_data.json"), 0, &ev);
	ck_assert_ptr_nonnull(strstr(j, "\"data_base64\":\"SGVsbG8gV29ybGQgTG9yZW5hIQ==\""));
	ck_assert_uint_eq(ev.data_len, 1 + 1 + strlen("Hello World Lorena!")); /* bin8 header */
	ck_assert(memcmp(ev.data + 2, "Hello World Lorena!", 19) == 0);
	ck_assert_str_eq(ev.attr[TIDEI_A_TIME], "2018-04-26T14:48:09+02:00");

	j = view(judge_file("sdk-java-json/min_subject_null.json"), 0, &ev);
	ck_assert_ptr_null(ev.attr[TIDEI_A_SUBJECT]);
	ck_assert_ptr_null(strstr(j, "subject"));

	view(judge_file("sdk-java-json/numeric_ext.json"), 0, &ev);
	{
		tidei_vitem it;
		ck_assert(ext_item(&ev, "integer", &it));
		ck_assert_int_eq(it.type, TIDEI_V_INT);
		ck_assert_int_eq(it.u.i, 42);
		ck_assert(ext_item(&ev, "decimal", &it));
		ck_assert_int_eq(it.type, TIDEI_V_STR); /* "42.42" was a string: it stays one */
	}

	j = view(judge_file("sdk-java-json/json_data_with_fractional_time.json"), 0, &ev);
	ck_assert_str_eq(ev.attr[TIDEI_A_TIME], "2018-04-26T14:48:09.1234Z");
	ck_assert_ptr_nonnull(strstr(j, "\"data\":{}"));
}
END_TEST

START_TEST(sdk_javascript_structured)
{
	static const char *const files[] = { "structured-event-0.json", "structured-event-1.json",
					     "structured-event-2.json" };
	char rel[128];
	verdicts *v;
	struct tide_event ev;
	const char *j;
	tidei_vitem it;

	if (data_file("sdk-javascript") == NULL)
		return;
	for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
		snprintf(rel, sizeof rel, "sdk-javascript/%s", files[i]);
		v = judge_file(rel);
		ck_assert_ptr_nonnull(v);
		ck_assert_msg(v->n == 1 && v->ok == 1, "%s rejected: %s", files[i], v->err[0]);
		j = view(v, 0, &ev);
		ck_assert_str_eq(ev.attr[TIDEI_A_TYPE], "com.github.pull.create");
		ck_assert_str_eq(ev.attr[TIDEI_A_SOURCE],
				 "https://github.com/cloudevents/spec/pull/123");
		ck_assert_str_eq(ev.attr[TIDEI_A_DATACONTENTTYPE], "application/json");
		ck_assert_str_eq(ev.attr[TIDEI_A_TIME], "2019-11-06T11:08:00Z");
		switch (i) {
		case 0:
			ck_assert_str_eq(ev.attr[TIDEI_A_ID],
					 "b25e2717-a470-45a0-8231-985a99aa9416");
			ck_assert_ptr_nonnull(strstr(j, ",\"data\":{\"much\":\"wow\"}}"));
			ck_assert_uint_eq(ext_count(&ev), 0);
			break;
		case 1:
			ck_assert_ptr_nonnull(strstr(j, ",\"data\":{\"much\":\"wow\"}}"));
			ck_assert(ext_item(&ev, "myextension", &it));
			ck_assert_int_eq(it.type, TIDEI_V_STR);
			break;
		case 2:
			/* binary data keeps its form: base64 in, base64 out */
			ck_assert_ptr_nonnull(
				strstr(j, ",\"data_base64\":\"eyJtdWNoIjoid293In0=\"}"));
			ck_assert_ptr_nonnull(strstr(j, "\"myextension\":\"something\""));
			break;
		}
	}
}
END_TEST

/* ------------------------------------------------------------------------
 * The examples of the JSON format specification
 * ------------------------------------------------------------------------ */

START_TEST(spec_examples)
{
	/* The spec's own placeholder, standing where base64 text belongs. */
	static const char placeholder[] = "... base64 encoded string ...";
	static const char *const valid[] = { "json-format-block02.json", "json-format-block04.json",
					     "json-format-block06.json", "json-format-block08.json",
					     "json-format-block10.json" };
	char rel[128];
	verdicts *v;
	struct tide_event ev;
	const char *j;
	tidei_vitem it;

	if (data_file("spec/examples") == NULL)
		return;
	for (size_t i = 0; i < sizeof valid / sizeof *valid; i++) {
		snprintf(rel, sizeof rel, "spec/examples/%s", valid[i]);
		v = judge_file(rel);
		ck_assert_ptr_nonnull(v);
		ck_assert_msg(v->n == 1 && v->ok == 1, "%s rejected: %s", valid[i], v->err[0]);
		j = view(v, 0, &ev);
		ck_assert_str_eq(ev.attr[TIDEI_A_SOURCE], "/mycontext");
		ck_assert_str_eq(ev.attr[TIDEI_A_TYPE], "com.example.someevent");
		ck_assert_ptr_null(ev.attr[TIDEI_A_SUBJECT]); /* "subject": null is absent */
		ck_assert_ptr_nonnull(ev.data);
		if (i < 4) {
			/* "comexampleothervalue" : 5 is an Integer extension */
			ck_assert(ext_item(&ev, "comexampleothervalue", &it));
			ck_assert_int_eq(it.type, TIDEI_V_INT);
			ck_assert_int_eq(it.u.i, 5);
			ck_assert_ptr_nonnull(strstr(j, "\"comexampleextension1\":\"value\""));
			ck_assert_ptr_null(strstr(j, "unsetextension")); /* null: absent */
		}
		switch (i) {
		case 0:
			ck_assert_ptr_nonnull(strstr(j, ",\"data\":\"<much wow=\\\"xml\\\"/>\"}"));
			break;
		case 1:
			ck_assert_ptr_nonnull(strstr(j, ",\"data\":{\"appinfoA\":\"abc\","
							"\"appinfoB\":123,\"appinfoC\":true}}"));
			break;
		case 2: ck_assert_ptr_nonnull(strstr(j, ",\"data\":1.5}")); break;
		case 3: ck_assert_ptr_nonnull(strstr(j, ",\"data\":\"I'm just a string\"}")); break;
		case 4:
			ck_assert_ptr_nonnull(
				strstr(j, ",\"data_base64\":\"eyAieHl6IjogMTIzIH0=\"}"));
			ck_assert(memcmp(ev.data + 2, "{ \"xyz\": 123 }", 14) == 0);
			break;
		}
	}

	/* block 00: the placeholder is not base64, so this is not a valid
	 * event as written; with real base64 in its place it is. */
	{
		char *text, *at;
		size_t n;
		v = judge_file("spec/examples/json-format-block00.json");
		ck_assert_int_eq(v->n, 1);
		ck_assert_int_eq(v->bad, 1);
		ck_assert_str_eq(v->err[0], "data_base64 is not valid base64");
		text = slurp(data_file("spec/examples/json-format-block00.json"), &n);
		at = strstr(text, placeholder);
		ck_assert_ptr_nonnull(at);
		memcpy(at, "AAEC", 4);
		memmove(at + 4, at + strlen(placeholder), strlen(at + strlen(placeholder)) + 1);
		v = judge(text);
		ck_assert_msg(v->ok == 1, "block00 with real base64 rejected: %s", v->err[0]);
		view(v, 0, &ev);
		ck_assert_str_eq(ev.attr[TIDEI_A_ID], "A234-1234-1234");
		ck_assert_str_eq(ev.attr[TIDEI_A_DATACONTENTTYPE],
				 "application/vnd.apache.thrift.binary");
		free(text);
	}

	/* block 12, a batch: its first event has the placeholder, and costs
	 * only itself; the second is valid. */
	v = judge_file("spec/examples/json-format-block12.json");
	ck_assert_int_eq(v->n, 2);
	ck_assert_int_eq(v->accepted[0], 0);
	ck_assert_str_eq(v->err[0], "data_base64 is not valid base64");
	j = view(v, 1, &ev);
	ck_assert_str_eq(ev.attr[TIDEI_A_ID], "C234-1234-1234");
	ck_assert_str_eq(ev.attr[TIDEI_A_SOURCE], "/mycontext/9");
	ck_assert_str_eq(ev.attr[TIDEI_A_TYPE], "com.example.someotherevent");
	ck_assert_ptr_nonnull(strstr(j, "\"appinfoB\":123"));

	/* block 13: the empty batch */
	v = judge_file("spec/examples/json-format-block13.json");
	ck_assert_int_eq(v->n, 0);
}
END_TEST

START_TEST(spec_binary_mode_is_not_structured)
{
	/* The HTTP binary-mode equivalents of the spec's examples carry the
	 * attributes in headers: as a structured-mode message, nothing in
	 * them is an event, and the parser must not make one up. */
	static const char *const files[] = {
		"json-format-block01-http-binary-equivalent.txt",
		"json-format-block03-http-binary-equivalent.txt",
		"json-format-block05-http-binary-equivalent.txt",
		"json-format-block07-http-binary-equivalent.txt",
		"json-format-block09-http-binary-equivalent.txt",
		"json-format-block11-http-binary-equivalent.txt",
	};
	char rel[128];

	if (data_file("spec/examples") == NULL)
		return;
	for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
		verdicts *v;
		snprintf(rel, sizeof rel, "spec/examples/%s", files[i]);
		v = judge_file(rel);
		ck_assert_ptr_nonnull(v);
		ck_assert_msg(v->n >= 1 && v->ok == 0, "%s: %d events accepted", files[i], v->ok);
		for (int e = 0; e < v->n; e++)
			ck_assert_msg(v->err[e][0] != '\0', "%s: empty message", files[i]);
	}
	/* block 05's body is a JSON object, but not a CloudEvent: its
	 * capitalised keys read as (invalid) extension names */
	{
		verdicts *v =
			judge_file("spec/examples/json-format-block05-http-binary-equivalent.txt");
		ck_assert_int_ge(v->n, 2);
		ck_assert_str_eq(v->err[v->n - 1],
				 "extension attribute name 'appinfoA' must use only "
				 "lowercase letters and digits");
	}
}
END_TEST

/* ------------------------------------------------------------------------
 * Messages that say what is wrong
 * ------------------------------------------------------------------------ */

#define REQ "\"id\":\"e1\",\"source\":\"/s\",\"type\":\"t\""

static const char *
only_error(const char *text)
{
	verdicts *v = judge(text);

	ck_assert_msg(v->n == 1 && v->bad == 1, "accepted: %s", text);
	return v->err[0];
}

START_TEST(error_messages)
{
	ck_assert_str_eq(only_error("{" REQ "}"), "missing required attribute 'specversion'");
	ck_assert_str_eq(only_error("{\"specversion\":\"0.9\"," REQ "}"),
			 "specversion must be \"1.0\", not \"0.9\"");
	ck_assert_str_eq(only_error("{\"specversion\":null," REQ "}"),
			 "specversion must be \"1.0\", not null");
	/* either order of data and data_base64 */
	ck_assert_str_eq(only_error("{\"specversion\":\"1.0\"," REQ ",\"data\":{\"a\":1},"
				    "\"data_base64\":\"TWE=\"}"),
			 "data and data_base64 are mutually exclusive");
	ck_assert_str_eq(only_error("{\"specversion\":\"1.0\"," REQ ",\"data_base64\":\"TWE=\","
				    "\"data\":[1]}"),
			 "data and data_base64 are mutually exclusive");
	/* "data": null is an explicit null payload, not an absent member
	 * (JSON format 3.1.1), so it still excludes data_base64 */
	ck_assert_str_eq(only_error("{\"specversion\":\"1.0\"," REQ ",\"data\":null,"
				    "\"data_base64\":\"TWE=\"}"),
			 "data and data_base64 are mutually exclusive");
	{
		const char *e = only_error("{\"specversion\":\"1.0\"," REQ
					   ",\"time\":\"2018-04-05 17:31\"}");
		ck_assert_ptr_nonnull(strstr(e, "RFC 3339"));
		ck_assert_ptr_nonnull(strstr(e, "'time'"));
		ck_assert_ptr_nonnull(strstr(e, "2018-04-05 17:31")); /* shows the value */
	}
	/* the first problem of an event is the one reported */
	ck_assert_str_eq(only_error("{\"specversion\":\"2.0\",\"id\":\"\"}"),
			 "specversion must be \"1.0\", not \"2.0\"");
	/* a long value is shortened in the message, not copied whole */
	{
		char text[2048], big[1200];
		memset(big, 'x', sizeof big - 1);
		big[sizeof big - 1] = '\0';
		snprintf(text, sizeof text, "{\"specversion\":\"%s\"," REQ "}", big);
		ck_assert_uint_lt(strlen(only_error(text)), 120);
	}
	ck_assert_ptr_nonnull(strstr(only_error("[1]"), "event must be a JSON object"));
	ck_assert_ptr_nonnull(
		strstr(only_error("{\"specversion\":\"1.0\"," REQ ",}"), "not valid JSON"));
}
END_TEST

START_TEST(data_null_is_a_payload)
{
	/* JSON format 3.1.1: "the data member MAY have a value of null,
	 * representing an explicit null payload as distinct from the absence
	 * of the data member".  Storing it as absent loses that distinction. */
	struct tide_event ev;
	verdicts *v = judge("{\"specversion\":\"1.0\"," REQ ",\"data\":null}");
	const char *j;

	ck_assert_int_eq(v->ok, 1);
	j = view(v, 0, &ev);
	ck_assert_msg(ev.data != NULL, "explicit null data was dropped: %s", j);
	ck_assert_ptr_nonnull(strstr(j, ",\"data\":null}"));
}
END_TEST

Suite *
cloudevents_suite(void)
{
	Suite *s = suite_create("cloudevents");
	TCase *tc = tcase_create("conformance");
	TCase *sdk = tcase_create("sdk");
	TCase *spec = tcase_create("spec");

	tcase_add_test(tc, conformance_valid_events);
	tcase_add_test(tc, conformance_invalid_events);
	tcase_add_test(tc, conformance_valid_batches);
	tcase_add_test(tc, conformance_invalid_batches);
	tcase_add_test(tc, error_messages);
	tcase_add_test(tc, data_null_is_a_payload);
	suite_add_tcase(s, tc);
	tcase_add_test(sdk, sdk_java_fixtures);
	tcase_add_test(sdk, sdk_javascript_structured);
	suite_add_tcase(s, sdk);
	tcase_add_test(spec, spec_examples);
	tcase_add_test(spec, spec_binary_mode_is_not_structured);
	suite_add_tcase(s, spec);
	return s;
}
