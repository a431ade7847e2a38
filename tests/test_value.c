/*
 * test_value.c - reading an event's data and attributes in place
 * (tide_event_value, tide_value_get/_at/_next, tide_event_data): events
 * go through the real parser and record decoder; damaged encodings are
 * built by hand and must give TIDE_EIO, never a read past their bytes.
 */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "helpers.h"
#include "tide.h"
#include "val.h"

/* One event as a consumer would see it: the record, the view of it and
 * the view's scratch buffer. */
typedef struct fixture {
	tidei_buf rec;
	tidei_buf scratch;
	struct tide_event ev;
} fixture;

static void
sink(void *ud, const uint8_t *rec, size_t len, const char *err)
{
	fixture *f = ud;

	ck_assert_msg(err == NULL, "rejected: %s", err);
	ck_assert_uint_eq(f->rec.len, 0);
	tidei_buf_put(&f->rec, rec, len);
}

/* Parse @p json, which must be one valid event, into @p f. */
static const tide_event *
load(fixture *f, const char *json)
{
	tidei_eparser p;

	memset(f, 0, sizeof *f);
	tidei_eparser_init(&p, 1 << 20);
	ck_assert_int_eq(tidei_eparser_run(&p, json, strlen(json), sink, f), 1);
	tidei_eparser_free(&p);
	ck_assert(!f->rec.failed);
	ck_assert_int_eq(tidei_event_decode(&f->ev, f->rec.p, f->rec.len), 0);
	f->ev.seq = 0;
	f->ev.scratch = &f->scratch;
	return &f->ev;
}

static void
unload(fixture *f)
{
	tidei_buf_free(&f->rec);
	tidei_buf_free(&f->scratch);
}

/* The value at @p path, which must exist. */
static tide_value
get(const tide_event *ev, const char *path)
{
	tide_value v;
	int rc = tide_event_value(ev, path, &v);

	ck_assert_msg(rc == TIDE_OK, "%s: %d (%s)", path, rc, tide_errmsg());
	return v;
}

/* Assert that @p path fails with @p code and a message containing @p msg. */
static void
fails(const tide_event *ev, const char *path, int code, const char *msg)
{
	tide_value v;
	int rc;

	memset(&v, 0x5a, sizeof v);
	rc = tide_event_value(ev, path, &v);
	ck_assert_msg(rc == code, "%s: %d, expected %d (%s)", path ? path : "(null)", rc, code,
		      tide_errmsg());
	ck_assert_msg(strstr(tide_errmsg(), msg) != NULL, "%s: message '%s' lacks '%s'",
		      path ? path : "(null)", tide_errmsg(), msg);
	ck_assert_int_eq(v.type, 0x5a5a5a5a); /* *out untouched */
}

static void
assert_str(tide_value v, const char *s, size_t n)
{
	ck_assert_int_eq(v.type, TIDE_STRING);
	ck_assert_uint_eq(v.len, n);
	ck_assert(memcmp(v.s, s, n) == 0);
}

#define MIN "\"specversion\":\"1.0\",\"id\":\"e-1\",\"source\":\"/shop\",\"type\":\"order.placed\""

#define NESTED \
	"{" MIN ",\"subject\":\"order-17\",\"data\":{" \
	"\"card\":{\"holder\":{\"name\":\"Ann\"},\"last4\":\"4242\"}," \
	"\"items\":[{\"sku\":\"A1\",\"qty\":1},{\"sku\":\"B2\",\"qty\":3}]," \
	"\"matrix\":[[1,2],[3,4,5]],\"empty\":{},\"none\":[],\"a.b\":1}}"

START_TEST(numbers)
{
	fixture f;
	const tide_event *ev =
		load(&f, "{" MIN ",\"data\":{\"i\":42,\"neg\":-7,\"max\":9223372036854775807,"
			 "\"min\":-9223372036854775808,\"d\":2.5,\"nd\":-2.75,\"one\":1.0,"
			 "\"huge\":1e300,\"tiny\":-1e300,\"beyond\":18446744073709551616}}");
	tide_value v;

	v = get(ev, "data.i");
	ck_assert_int_eq(v.type, TIDE_INT);
	ck_assert_int_eq(v.i, 42);
	ck_assert(v.d == 42.0);
	v = get(ev, "data.neg");
	ck_assert_int_eq(v.type, TIDE_INT);
	ck_assert_int_eq(v.i, -7);
	v = get(ev, "data.max");
	ck_assert_int_eq(v.type, TIDE_INT);
	ck_assert(v.i == INT64_MAX);
	v = get(ev, "data.min");
	ck_assert_int_eq(v.type, TIDE_INT);
	ck_assert(v.i == INT64_MIN);
	v = get(ev, "data.d");
	ck_assert_int_eq(v.type, TIDE_DOUBLE);
	ck_assert(v.d == 2.5);
	ck_assert_int_eq(v.i, 2);
	v = get(ev, "data.nd");
	ck_assert_int_eq(v.type, TIDE_DOUBLE);
	ck_assert(v.d == -2.75);
	ck_assert_int_eq(v.i, -2); /* truncated toward zero */
	v = get(ev, "data.one");
	ck_assert_int_eq(v.type, TIDE_DOUBLE); /* a fraction keeps it a double */
	ck_assert(v.d == 1.0);
	ck_assert_int_eq(v.i, 1);
	/* out of int64 range: i is clamped rather than undefined */
	v = get(ev, "data.huge");
	ck_assert_int_eq(v.type, TIDE_DOUBLE);
	ck_assert(v.d == 1e300);
	ck_assert(v.i == INT64_MAX);
	v = get(ev, "data.tiny");
	ck_assert(v.i == INT64_MIN);
	v = get(ev, "data.beyond");
	ck_assert_int_eq(v.type, TIDE_DOUBLE);
	ck_assert(v.d == 18446744073709551616.0);
	unload(&f);
}
END_TEST

START_TEST(bools_and_null)
{
	fixture f;
	const tide_event *ev =
		load(&f, "{" MIN ",\"data\":{\"t\":true,\"f\":false,\"n\":null,\"l\":[null]}}");
	tide_value v;

	v = get(ev, "data.t");
	ck_assert_int_eq(v.type, TIDE_BOOL);
	ck_assert_int_eq(v.boolean, 1);
	v = get(ev, "data.f");
	ck_assert_int_eq(v.type, TIDE_BOOL);
	ck_assert_int_eq(v.boolean, 0);
	v = get(ev, "data.n");
	ck_assert_int_eq(v.type, TIDE_NULL);
	v = get(ev, "data.l.0");
	ck_assert_int_eq(v.type, TIDE_NULL);
	/* a null member is there: only a missing one is not found */
	fails(ev, "data.x", TIDE_ENOTFOUND, "no member 'x' in data");
	unload(&f);
}
END_TEST

START_TEST(strings)
{
	fixture f;
	const tide_event *ev = load(&f, "{" MIN ",\"data\":{\"esc\":\"a\\\"b\\\\c\\nd\\u0001\","
					"\"utf\":\"h\xc3\xa9llo \xe2\x82\xac \\ud834\\udd1e\","
					"\"nul\":\"a\\u0000b\",\"empty\":\"\"}}");

	assert_str(get(ev, "data.esc"), "a\"b\\c\nd\x01", 8);
	/* the escaped surrogate pair is stored as the 4-byte UTF-8 of U+1D11E */
	assert_str(get(ev, "data.utf"), "h\xc3\xa9llo \xe2\x82\xac \xf0\x9d\x84\x9e", 15);
	assert_str(get(ev, "data.nul"), "a\0b", 3);
	assert_str(get(ev, "data.empty"), "", 0);
	unload(&f);
}
END_TEST

START_TEST(nested_paths)
{
	fixture f;
	const tide_event *ev = load(&f, NESTED);
	tide_value v;

	assert_str(get(ev, "data.items.1.sku"), "B2", 2);
	v = get(ev, "data.items.0.qty");
	ck_assert_int_eq(v.type, TIDE_INT);
	ck_assert_int_eq(v.i, 1);
	v = get(ev, "data.matrix.1.2");
	ck_assert_int_eq(v.i, 5);
	assert_str(get(ev, "data.card.holder.name"), "Ann", 3);
	v = get(ev, "data");
	ck_assert_int_eq(v.type, TIDE_OBJECT);
	ck_assert_uint_eq(v.len, 6);
	v = get(ev, "data.items");
	ck_assert_int_eq(v.type, TIDE_ARRAY);
	ck_assert_uint_eq(v.len, 2);
	ck_assert_ptr_nonnull(v.at);
	ck_assert((const uint8_t *)v.at < (const uint8_t *)v.end);
	/* the container's bytes lie within the record's data */
	ck_assert((const uint8_t *)v.at > ev->data);
	ck_assert((const uint8_t *)v.end <= ev->data + ev->data_len);
	v = get(ev, "data.empty");
	ck_assert_int_eq(v.type, TIDE_OBJECT);
	ck_assert_uint_eq(v.len, 0);
	ck_assert(v.at == v.end);
	v = get(ev, "data.none");
	ck_assert_int_eq(v.type, TIDE_ARRAY);
	ck_assert_uint_eq(v.len, 0);
	/* leading zeros still read as decimal */
	assert_str(get(ev, "data.items.01.sku"), "B2", 2);
	unload(&f);
}
END_TEST

START_TEST(missing_steps)
{
	fixture f;
	const tide_event *ev = load(&f, NESTED);

	fails(ev, "data.items.2", TIDE_ENOTFOUND,
	      "index 2 is past the end of data.items (an array of 2)");
	fails(ev, "data.items.2.sku", TIDE_ENOTFOUND, "past the end of data.items");
	fails(ev, "data.items.99999999999999999999999", TIDE_ENOTFOUND, "past the end");
	fails(ev, "data.matrix.0.2", TIDE_ENOTFOUND, "past the end of data.matrix.0");
	fails(ev, "data.items.x", TIDE_ENOTFOUND, "'x' is not an index into data.items");
	fails(ev, "data.items.-1", TIDE_ENOTFOUND, "'-1' is not an index");
	fails(ev, "data.card.nope", TIDE_ENOTFOUND, "no member 'nope' in data.card (an object)");
	fails(ev, "data.card.holder.nope.deeper", TIDE_ENOTFOUND,
	      "no member 'nope' in data.card.holder");
	fails(ev, "data.items.0.sku.x", TIDE_ENOTFOUND,
	      "cannot look up 'x' in data.items.0.sku: it is a string");
	fails(ev, "data.items.0.qty.0", TIDE_ENOTFOUND, "it is an integer");
	fails(ev, "data.empty.a", TIDE_ENOTFOUND, "no member 'a' in data.empty");
	fails(ev, "data.none.0", TIDE_ENOTFOUND, "past the end of data.none");
	/* a member whose name has a dot is not reachable by path */
	fails(ev, "data.a.b", TIDE_ENOTFOUND, "no member 'a' in data");
	fails(ev, "nosuch", TIDE_ENOTFOUND, "the event has no attribute 'nosuch'");
	fails(ev, "nosuch.x", TIDE_ENOTFOUND, "the event has no attribute 'nosuch'");
	fails(ev, "time", TIDE_ENOTFOUND, "the event has no attribute 'time'");
	unload(&f);
}
END_TEST

START_TEST(bad_paths)
{
	fixture f;
	const tide_event *ev = load(&f, NESTED);
	tide_value v;

	fails(ev, NULL, TIDE_EINVAL, "the path is NULL");
	fails(ev, "", TIDE_EINVAL, "the path is empty");
	fails(ev, ".", TIDE_EINVAL, "empty segment in path '.'");
	fails(ev, "data.", TIDE_EINVAL, "empty segment in path 'data.'");
	fails(ev, ".data", TIDE_EINVAL, "empty segment");
	fails(ev, "data..items", TIDE_EINVAL, "empty segment in path 'data..items'");
	fails(ev, "data.items.0.", TIDE_EINVAL, "empty segment");
	/* a bad path is refused before anything is looked up */
	fails(ev, "nosuch..x", TIDE_EINVAL, "empty segment");
	ck_assert_int_eq(tide_event_value(NULL, "data", &v), TIDE_EINVAL);
	ck_assert_int_eq(tide_event_value(ev, "data", NULL), TIDE_EINVAL);
	ck_assert_ptr_nonnull(strstr(tide_errmsg(), "tide_event_value"));
	unload(&f);
}
END_TEST

START_TEST(context_attributes)
{
	fixture f;
	const tide_event *ev = load(&f, "{" MIN ",\"subject\":\"order-17\","
					"\"time\":\"2024-05-06T07:08:09Z\",\"data\":1}");
	tide_value v;

	v = get(ev, "subject");
	assert_str(v, "order-17", 8);
	ck_assert_ptr_eq(v.s, ev->attr[TIDEI_A_SUBJECT]); /* in place, not copied */
	assert_str(get(ev, "type"), "order.placed", 12);
	assert_str(get(ev, "id"), "e-1", 3);
	assert_str(get(ev, "source"), "/shop", 5);
	assert_str(get(ev, "time"), "2024-05-06T07:08:09Z", 20);
	assert_str(get(ev, "specversion"), "1.0", 3);
	fails(ev, "subject.x", TIDE_ENOTFOUND, "cannot look up 'x' in subject: it is a string");
	fails(ev, "dataschema", TIDE_ENOTFOUND, "no attribute 'dataschema'");
	fails(ev, "correlationid", TIDE_ENOTFOUND, "no attribute 'correlationid'");
	unload(&f);
}
END_TEST

START_TEST(extension_attributes)
{
	fixture f, g;
	const tide_event *ev = load(&f, "{" MIN ",\"tenant\":\"acme\",\"priority\":7,"
					"\"urgent\":true,\"quiet\":false,"
					"\"floor\":-2147483648,\"data\":{}}");
	const tide_event *plain = load(&g, "{" MIN "}");
	tide_value v;

	assert_str(get(ev, "tenant"), "acme", 4);
	v = get(ev, "priority");
	ck_assert_int_eq(v.type, TIDE_INT);
	ck_assert_int_eq(v.i, 7);
	v = get(ev, "urgent");
	ck_assert_int_eq(v.type, TIDE_BOOL);
	ck_assert_int_eq(v.boolean, 1);
	v = get(ev, "quiet");
	ck_assert_int_eq(v.type, TIDE_BOOL);
	ck_assert_int_eq(v.boolean, 0);
	v = get(ev, "floor"); /* CloudEvents integers are 32-bit */
	ck_assert_int_eq(v.type, TIDE_INT);
	ck_assert(v.i == INT32_MIN);
	fails(ev, "tenant.x", TIDE_ENOTFOUND, "cannot look up 'x' in tenant: it is a string");
	fails(ev, "priority.0", TIDE_ENOTFOUND, "it is an integer");
	fails(ev, "region", TIDE_ENOTFOUND, "the event has no attribute 'region'");
	/* no extensions at all */
	fails(plain, "tenant", TIDE_ENOTFOUND, "the event has no attribute 'tenant'");
	unload(&f);
	unload(&g);
}
END_TEST

START_TEST(no_data)
{
	fixture f;
	const tide_event *ev = load(&f, "{" MIN ",\"tenant\":\"acme\"}");
	const char *json = "unset";
	size_t len = 99;

	fails(ev, "data", TIDE_ENOTFOUND, "the event has no data");
	fails(ev, "data.x", TIDE_ENOTFOUND, "the event has no data");
	ck_assert_int_eq(tide_event_data(ev, &json, &len), TIDE_ENOTFOUND);
	ck_assert_str_eq(tide_errmsg(), "the event has no data");
	ck_assert_str_eq(json, "unset");
	ck_assert_uint_eq(len, 99);
	unload(&f);
}
END_TEST

START_TEST(binary_data)
{
	fixture f;
	const tide_event *ev = load(&f, "{" MIN ",\"data_base64\":\"AAEC/f7/\"}");
	const char *json;
	size_t len;
	tide_value v;

	v = get(ev, "data");
	ck_assert_int_eq(v.type, TIDE_BINARY);
	ck_assert_uint_eq(v.len, 6);
	ck_assert(memcmp(v.s, "\x00\x01\x02\xfd\xfe\xff", 6) == 0);
	fails(ev, "data.0", TIDE_ENOTFOUND, "it is binary data");
	ck_assert_int_eq(tide_event_data(ev, &json, &len), TIDE_OK);
	ck_assert_str_eq(json, "\"AAEC/f7/\"");
	ck_assert_uint_eq(len, 10);
	unload(&f);
}
END_TEST

START_TEST(value_at)
{
	fixture f;
	const tide_event *ev = load(&f, NESTED);
	tide_value card = get(ev, "data.card"), items = get(ev, "data.items"), v;
	tide_value num = get(ev, "data.items.0.qty");
	const char *name = "unset";
	size_t nlen = 99;

	ck_assert_int_eq(tide_value_at(&card, 0, &name, &nlen, &v), TIDE_OK);
	ck_assert_uint_eq(nlen, 6);
	ck_assert(memcmp(name, "holder", 6) == 0);
	ck_assert_int_eq(v.type, TIDE_OBJECT);
	ck_assert_int_eq(tide_value_at(&card, 1, &name, &nlen, &v), TIDE_OK);
	ck_assert_uint_eq(nlen, 5);
	ck_assert(memcmp(name, "last4", 5) == 0);
	assert_str(v, "4242", 4);
	ck_assert_int_eq(tide_value_at(&card, 2, &name, &nlen, &v), TIDE_ENOTFOUND);
	ck_assert_ptr_nonnull(strstr(tide_errmsg(), "2 is past the end of an object of 2"));

	/* array elements have no name; name and nlen may be NULL */
	ck_assert_int_eq(tide_value_at(&items, 1, &name, &nlen, &v), TIDE_OK);
	ck_assert_ptr_null(name);
	ck_assert_uint_eq(nlen, 0);
	ck_assert_int_eq(v.type, TIDE_OBJECT);
	ck_assert_int_eq(tide_value_at(&items, 0, NULL, NULL, &v), TIDE_OK);
	ck_assert_int_eq(tide_value_get(&v, "sku", &v), TIDE_OK); /* out may be the input */
	assert_str(v, "A1", 2);
	ck_assert_int_eq(tide_value_at(&items, 2, NULL, NULL, &v), TIDE_ENOTFOUND);
	ck_assert_ptr_nonnull(strstr(tide_errmsg(), "past the end of an array of 2"));

	ck_assert_int_eq(tide_value_at(&num, 0, NULL, NULL, &v), TIDE_EINVAL);
	ck_assert_ptr_nonnull(strstr(tide_errmsg(), "an integer, not an array or object"));
	ck_assert_int_eq(tide_value_at(NULL, 0, NULL, NULL, &v), TIDE_EINVAL);
	ck_assert_int_eq(tide_value_at(&items, 0, NULL, NULL, NULL), TIDE_EINVAL);
	unload(&f);
}
END_TEST

START_TEST(value_next)
{
	static const char *const names[] = { "card", "items", "matrix", "empty", "none", "a.b" };
	static const int types[] = { TIDE_OBJECT, TIDE_ARRAY, TIDE_ARRAY,
				     TIDE_OBJECT, TIDE_ARRAY, TIDE_INT };
	fixture f;
	const tide_event *ev = load(&f, NESTED);
	tide_value data = get(ev, "data"), row = get(ev, "data.matrix.1"), v;
	tide_value empty = get(ev, "data.empty"), str = get(ev, "data.card.last4");
	const char *name;
	size_t nlen, it = 0, n = 0;
	int rc;

	while ((rc = tide_value_next(&data, &it, &name, &nlen, &v)) == TIDE_OK) {
		ck_assert_uint_lt(n, 6);
		ck_assert_uint_eq(nlen, strlen(names[n]));
		ck_assert(memcmp(name, names[n], nlen) == 0);
		ck_assert_int_eq(v.type, types[n]);
		n++;
	}
	ck_assert_int_eq(rc, TIDE_ENOTFOUND);
	ck_assert_uint_eq(n, data.len);
	ck_assert_uint_eq(n, 6);

	/* the end says so, like every other code but TIDE_OK */
	fails(ev, "data.nope", TIDE_ENOTFOUND, "no member 'nope'");
	ck_assert_int_eq(tide_value_next(&data, &it, &name, &nlen, &v), TIDE_ENOTFOUND);
	ck_assert_str_eq(tide_errmsg(), "no more elements (the end of the walk)");

	for (it = 0, n = 0; (rc = tide_value_next(&row, &it, &name, NULL, &v)) == TIDE_OK; n++) {
		ck_assert_ptr_null(name);
		ck_assert_int_eq(v.type, TIDE_INT);
		ck_assert_int_eq(v.i, 3 + (int64_t)n);
	}
	ck_assert_int_eq(rc, TIDE_ENOTFOUND);
	ck_assert_uint_eq(n, 3);

	/* the same walk with the element written over the container */
	it = 0;
	v = get(ev, "data.matrix");
	ck_assert_int_eq(tide_value_next(&v, &it, NULL, NULL, &v), TIDE_OK);
	ck_assert_int_eq(v.type, TIDE_ARRAY);
	ck_assert_uint_eq(v.len, 2);

	it = 0;
	ck_assert_int_eq(tide_value_next(&empty, &it, NULL, NULL, &v), TIDE_ENOTFOUND);
	it = 0;
	ck_assert_int_eq(tide_value_next(&str, &it, NULL, NULL, &v), TIDE_EINVAL);
	ck_assert_ptr_nonnull(strstr(tide_errmsg(), "a string, not an array or object"));
	it = (size_t)((const uint8_t *)row.end - (const uint8_t *)row.at) + 1;
	ck_assert_int_eq(tide_value_next(&row, &it, NULL, NULL, &v), TIDE_EINVAL);
	ck_assert_ptr_nonnull(strstr(tide_errmsg(), "iterator"));
	ck_assert_int_eq(tide_value_next(&row, NULL, NULL, NULL, &v), TIDE_EINVAL);
	unload(&f);
}
END_TEST

START_TEST(relative_paths)
{
	fixture f;
	const tide_event *ev = load(&f, NESTED);
	tide_value items = get(ev, "data.items"), card = get(ev, "data.card"), v;
	tide_value sku = get(ev, "data.items.1.sku");

	ck_assert_int_eq(tide_value_get(&items, "1.sku", &v), TIDE_OK);
	assert_str(v, "B2", 2);
	ck_assert_int_eq(tide_value_get(&items, "0", &v), TIDE_OK);
	ck_assert_int_eq(v.type, TIDE_OBJECT);
	ck_assert_uint_eq(v.len, 2);
	ck_assert_int_eq(tide_value_get(&card, "holder.name", &v), TIDE_OK);
	assert_str(v, "Ann", 3);

	ck_assert_int_eq(tide_value_get(&card, "nope", &v), TIDE_ENOTFOUND);
	ck_assert_str_eq(tide_errmsg(), "no member 'nope' in the value (an object)");
	ck_assert_int_eq(tide_value_get(&card, "holder.nope", &v), TIDE_ENOTFOUND);
	ck_assert_str_eq(tide_errmsg(), "no member 'nope' in holder (an object)");
	ck_assert_int_eq(tide_value_get(&items, "5", &v), TIDE_ENOTFOUND);
	ck_assert_ptr_nonnull(strstr(tide_errmsg(), "past the end of the value"));
	ck_assert_int_eq(tide_value_get(&sku, "x", &v), TIDE_ENOTFOUND);
	ck_assert_ptr_nonnull(strstr(tide_errmsg(), "it is a string"));
	ck_assert_int_eq(tide_value_get(&items, "", &v), TIDE_EINVAL);
	ck_assert_int_eq(tide_value_get(&items, "0..sku", &v), TIDE_EINVAL);
	ck_assert_int_eq(tide_value_get(&items, NULL, &v), TIDE_EINVAL);
	ck_assert_int_eq(tide_value_get(NULL, "0", &v), TIDE_EINVAL);
	unload(&f);
}
END_TEST

/* The data of @p event as tide_event_data() writes it. */
static void
data_is(const char *event, const char *want)
{
	fixture f;
	const tide_event *ev = load(&f, event);
	const char *json, *whole;
	size_t len, wlen;

	ck_assert_int_eq(tide_event_data(ev, &json, &len), TIDE_OK);
	ck_assert_str_eq(json, want);
	ck_assert_uint_eq(len, strlen(want));
	/* the same text tide_event_json() writes as the event's data */
	ck_assert_int_eq(tide_event_json(ev, &whole, &wlen), TIDE_OK);
	ck_assert_ptr_nonnull(strstr(whole, want));
	unload(&f);
}

START_TEST(data_as_json)
{
	/* written back exactly: numbers keep their kind, strings their escapes */
	data_is("{" MIN ",\"data\":{\"a\":1,\"b\":[true,false,null],\"c\":{\"d\":\"x\\ny\\\"\","
		"\"e\":2.5,\"f\":[]},\"h\":\"h\xc3\xa9\",\"big\":9223372036854775807,"
		"\"small\":-9223372036854775808,\"one\":1.0,\"o\":{}}}",
		"{\"a\":1,\"b\":[true,false,null],\"c\":{\"d\":\"x\\ny\\\"\",\"e\":2.5,\"f\":[]},"
		"\"h\":\"h\xc3\xa9\",\"big\":9223372036854775807,"
		"\"small\":-9223372036854775808,\"one\":1.0,\"o\":{}}");
	data_is("{" MIN ",\"data\":\"text\"}", "\"text\"");
	data_is("{" MIN ",\"data\":-42}", "-42");
	data_is("{" MIN ",\"data\":null}", "null");
	data_is("{" MIN ",\"data\":[1,[2,[3]]]}", "[1,[2,[3]]]");
}
END_TEST

START_TEST(data_needs_a_buffer)
{
	fixture f;
	struct tide_event ev = *load(&f, "{" MIN ",\"data\":1}");
	const char *json;

	ev.scratch = NULL; /* as the views made for Lua handlers */
	ck_assert_int_eq(tide_event_data(&ev, &json, NULL), TIDE_EINVAL);
	ck_assert_ptr_nonnull(strstr(tide_errmsg(), "no buffer"));
	ck_assert_int_eq(tide_event_data(NULL, &json, NULL), TIDE_EINVAL);
	ck_assert_int_eq(tide_event_data(&f.ev, NULL, NULL), TIDE_EINVAL);
	unload(&f);
}
END_TEST

/* An event of nothing but @p n bytes of encoded data, copied to the heap
 * so that a read past them is caught by the sanitizers. */
static struct tide_event
raw_event(const uint8_t *data, size_t n, tidei_buf *scratch)
{
	struct tide_event ev;
	uint8_t *copy = malloc(n);

	ck_assert_ptr_nonnull(copy);
	memcpy(copy, data, n);
	memset(&ev, 0, sizeof ev);
	ev.data = copy;
	ev.data_len = n;
	ev.scratch = scratch;
	return ev;
}

START_TEST(damaged_data)
{
	tidei_buf enc = { 0 }, scratch = { 0 };
	struct tide_event ev;
	const char *json;
	tide_value v;
	size_t it;

	/* {"items":[1,2,300],"s":"hello","n":{"k":true}} */
	tidei_val_map(&enc, 3);
	tidei_val_str(&enc, "items", 5);
	tidei_val_array(&enc, 3);
	tidei_val_int(&enc, 1);
	tidei_val_int(&enc, 2);
	tidei_val_int(&enc, 300);
	tidei_val_str(&enc, "s", 1);
	tidei_val_str(&enc, "hello", 5);
	tidei_val_str(&enc, "n", 1);
	tidei_val_map(&enc, 1);
	tidei_val_str(&enc, "k", 1);
	tidei_val_bool(&enc, 1);
	ck_assert(!enc.failed);

	/* whole, it reads */
	ev = raw_event(enc.p, enc.len, &scratch);
	v = get(&ev, "data.items.2");
	ck_assert_int_eq(v.i, 300);
	ck_assert_int_eq(tide_event_data(&ev, &json, NULL), TIDE_OK);
	ck_assert_str_eq(json, "{\"items\":[1,2,300],\"s\":\"hello\",\"n\":{\"k\":true}}");
	free((void *)ev.data);

	/* every truncation: damaged, or (for what lies before the cut) read */
	for (size_t n = 1; n < enc.len; n++) {
		static const char *const paths[] = { "data",   "data.items",  "data.items.2",
						     "data.s", "data.n.k",    "data.n",
						     "data.x", "data.items.0" };
		ev = raw_event(enc.p, n, &scratch);
		fails(&ev, "data", TIDE_EIO, "damaged");
		ck_assert_int_eq(tide_event_data(&ev, &json, NULL), TIDE_EIO);
		ck_assert_str_eq(tide_errmsg(), "the event's data is damaged");
		for (size_t k = 0; k < sizeof paths / sizeof *paths; k++) {
			int rc = tide_event_value(&ev, paths[k], &v);
			ck_assert_msg(rc == TIDE_OK || rc == TIDE_EIO || rc == TIDE_ENOTFOUND,
				      "%s at %zu bytes: %d", paths[k], n, rc);
		}
		/* the last member is cut short whatever the cut */
		fails(&ev, "data.n.k", TIDE_EIO, "the stored value at 'data.n");
		free((void *)ev.data);
	}
	tidei_buf_free(&enc);

	/* a byte no value starts with */
	ev = raw_event((const uint8_t *)"\xc1", 1, &scratch);
	fails(&ev, "data", TIDE_EIO, "the stored value at 'data' is damaged");
	ck_assert_int_eq(tide_event_data(&ev, &json, NULL), TIDE_EIO);
	free((void *)ev.data);

	/* an array claiming four billion elements, holding two */
	ev = raw_event((const uint8_t *)"\xdd\xff\xff\xff\xff\x01\x02", 7, &scratch);
	fails(&ev, "data", TIDE_EIO, "damaged");
	fails(&ev, "data.5", TIDE_EIO, "damaged");
	v = get(&ev, "data.1"); /* what is there reads */
	ck_assert_int_eq(v.i, 2);
	free((void *)ev.data);

	/* an object whose member name is not a string */
	ev = raw_event((const uint8_t *)"\x81\x01\x02", 3, &scratch);
	fails(&ev, "data.x", TIDE_EIO, "damaged");
	v = get(&ev, "data");
	ck_assert_int_eq(v.type, TIDE_OBJECT);
	it = 0;
	ck_assert_int_eq(tide_value_next(&v, &it, NULL, NULL, &v), TIDE_EIO);
	ck_assert_str_eq(tide_errmsg(), "a member name of the object is damaged");
	free((void *)ev.data);

	/* damaged extension attributes */
	memset(&ev, 0, sizeof ev);
	ev.ext = (const uint8_t *)"\x81\xa1";
	ev.ext_len = 2;
	fails(&ev, "tenant", TIDE_EIO, "damaged");
	ev.ext = (const uint8_t *)"\x01";
	ev.ext_len = 1;
	fails(&ev, "tenant", TIDE_EIO, "extension attributes are damaged");
	tidei_buf_free(&scratch);
}
END_TEST

Suite *
value_suite(void)
{
	Suite *s = suite_create("value");
	TCase *tc = tcase_create("kinds");

	tcase_add_test(tc, numbers);
	tcase_add_test(tc, bools_and_null);
	tcase_add_test(tc, strings);
	tcase_add_test(tc, binary_data);
	suite_add_tcase(s, tc);

	tc = tcase_create("paths");
	tcase_add_test(tc, nested_paths);
	tcase_add_test(tc, missing_steps);
	tcase_add_test(tc, bad_paths);
	tcase_add_test(tc, context_attributes);
	tcase_add_test(tc, extension_attributes);
	tcase_add_test(tc, no_data);
	tcase_add_test(tc, relative_paths);
	suite_add_tcase(s, tc);

	tc = tcase_create("walking");
	tcase_add_test(tc, value_at);
	tcase_add_test(tc, value_next);
	suite_add_tcase(s, tc);

	tc = tcase_create("json");
	tcase_add_test(tc, data_as_json);
	tcase_add_test(tc, data_needs_a_buffer);
	suite_add_tcase(s, tc);

	tc = tcase_create("damage");
	tcase_add_test(tc, damaged_data);
	suite_add_tcase(s, tc);
	return s;
}
