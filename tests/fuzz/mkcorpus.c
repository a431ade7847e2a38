/*
 * mkcorpus.c - writes the seed corpora of the fuzz targets into
 * tests/fuzz/corpus/<target>/ (built with the targets; `mkcorpus DIR`).
 *
 * The text seeds (events, requests, config files) are listed below as they
 * are written.  The binary ones (encoded values, stored event records,
 * state entries) are made by the project's own encoders from JSON, so that
 * they are what the engine really stores, plus a few forms only another
 * writer would use (float32, uint64, the longer length forms) and broken
 * ones (truncated, counts larger than the bytes).
 *
 * The files it writes are committed; run it again after changing a list.
 * The fuzzers' own finds are not written here: the inputs that once broke
 * a property are committed beside these as regress-*.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "event.h"
#include "json.h"
#include "keyhash.h"
#include "val.h"

static const char *top;

static void
put_file(const char *target, const char *name, const void *p, size_t n)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof path, "%s/%s", top, target);
	if (mkdir(path, 0777) != 0 && errno != EEXIST) {
		perror(path);
		exit(1);
	}
	snprintf(path, sizeof path, "%s/%s/%s", top, target, name);
	if ((f = fopen(path, "wb")) == NULL || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
		perror(path);
		exit(1);
	}
}

static void
put_text(const char *target, const char *name, const char *s)
{
	put_file(target, name, s, strlen(s));
}

/* ------------------------------------------------------------------------
 * fuzz_event: messages
 * ------------------------------------------------------------------------ */

#define EV(rest) \
	"{\"specversion\":\"1.0\",\"id\":\"e-1\",\"source\":\"/s\",\"type\":\"t.x\"" rest "}"

static const struct {
	const char *name, *text;
} events[] = {
	{ "minimal", EV("") },
	{ "all-attributes",
	  "{\"specversion\":\"1.0\",\"id\":\"order-7\",\"source\":\"https://shop.example/web\","
	  "\"type\":\"order.placed\",\"subject\":\"order-7\",\"time\":\"2026-11-24T09:01:00."
	  "123456+01:00\",\"datacontenttype\":\"application/json; charset=utf-8\","
	  "\"dataschema\":\"https://example.com/s.json\",\"correlationid\":\"c-1\","
	  "\"causationid\":\"e-0\",\"traceparent\":\"00-abc-01\",\"priority\":-7,"
	  "\"sampled\":true,\"flag\":false,\"nothing\":null,\"data\":{\"customer\":\"ada\","
	  "\"items\":[{\"sku\":\"sku-1\",\"qty\":3}],\"total\":331.19,\"paid\":false}}" },
	{ "data-string", EV(",\"data\":\"plain text\"") },
	{ "data-int", EV(",\"data\":-9223372036854775808") },
	{ "data-bigint", EV(",\"data\":18446744073709551616") },
	{ "data-double", EV(",\"data\":[0.1,-0.0,1e2,1E-7,2.5e300,4.9e-324,123456789012345678]") },
	{ "data-literals", EV(",\"data\":[true,false,null,{},[]]") },
	{ "data-null", EV(",\"data\":null") },
	{ "data-base64",
	  EV(",\"datacontenttype\":\"image/png\",\"data_base64\":\"iVBORw0KGgo=\"") },
	{ "data-base64-empty", EV(",\"data_base64\":\"\"") },
	{ "data-nested",
	  EV(",\"data\":{\"a\":{\"b\":{\"c\":[[[{\"d\":[1,2,{\"e\":null}]}]]]}},\"a\":2}") },
	{ "data-escapes",
	  EV(",\"subject\":\"\\u00e9\\ud83d\\ude00\",\"data\":\"tab\\tnl\\nq\\\"bs\\\\\\/\\u0000\\b"
	     "\\f\\r\\u001f \xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"") },
	{ "data-many-members",
	  EV(",\"data\":{\"m1\":1,\"m2\":2,\"m3\":3,\"m4\":4,\"m5\":5,\"m6\":6,\"m7\":7,\"m8\":8,"
	     "\"m9\":9,\"m10\":10,\"m11\":11,\"m12\":12,\"m13\":13,\"m14\":14,\"m15\":15,\"m16\":"
	     "16,"
	     "\"m17\":\"x\"}") },
	{ "expectedversion", EV(",\"subject\":\"acct-1\",\"expectedversion\":7") },
	{ "tide-fields", EV(",\"seq\":12,\"version\":3,\"recorded\":\"2026-11-24T09:00:00Z\"") },
	{ "batch",
	  "[" EV(",\"data\":1") ",\n " EV(",\"data\":[2]") ", " EV(",\"subject\":\"s\"") "]" },
	{ "batch-empty", "[]" },
	{ "batch-mixed", "[" EV("") ", 5, \"x\", [1], {\"id\":\"x\"}]" },
	{ "ndjson", EV(",\"data\":1") "\n" EV(",\"data\":2") "\r\n" EV(",\"data\":3") "\n" },
	{ "ndjson-errors",
	  EV("") "\n{\"specversion\":\"1.0\",\"id\":\n" EV(
		  ",\"data\":{\"ok\":true}") "\n"
					     "{\"specversion\":\"1.0\",\"id\":\"x\",\"source\":\"/"
					     "s\"}\n"
					     "not json at all\n" EV(",\"time\":\"2026-02-30T00:00:"
								    "00Z\"") "\n" EV("") },
	{ "pretty",
	  "{\n  \"specversion\": \"1.0\",\n  \"id\": \"p-1\",\n  \"source\": \"/s\",\n"
	  "  \"type\": \"t\",\n  \"data\": {\n    \"a\": [\n      1,\n      2\n    ]\n  }\n}\n" },
	{ "pretty-broken", "{\n  \"specversion\": \"1.0\",\n  \"id\": \"p-1\",\n  ,\n}\n" EV("") },
	{ "missing-required", "{\"specversion\":\"1.0\",\"source\":\"/s\"}" },
	{ "bad-values",
	  "{\"specversion\":\"0.3\",\"id\":\"\",\"source\":\"a b\",\"type\":1,\"time\":\"x\","
	  "\"datacontenttype\":\"json\",\"dataschema\":\"rel/x\",\"Upper\":1,\"big\":4294967296,"
	  "\"frac\":1.5,\"obj\":{},\"arr\":[]}" },
	{ "duplicate", EV(",\"id\":\"again\",\"x\":1,\"x\":2") },
	{ "data-and-base64", EV(",\"data\":1,\"data_base64\":\"AA==\"") },
	{ "bad-base64", EV(",\"data_base64\":\"A===\"") },
	{ "vertical-tab", EV("") "\v" EV("") },
	{ "form-feed-inside",
	  "{\"specversion\":\"1.0\",\f\"id\":\"x\",\"source\":\"/s\",\"type\":\"t\"}" },
	{ "bad-utf8", EV(",\"data\":\"\xc0\xaf \xed\xa0\x80 \xf4\x90\x80\x80\"") },
	{ "lone-surrogate", EV(",\"data\":[\"\\ud800\",\"\\udc00x\",\"\\ud800\\u0041\"]") },
	{ "number-range", EV(",\"data\":[1e400,-1e400]") },
	{ "nul-in-attribute", EV(",\"subject\":\"a\\u0000b\"") },
	{ "deep", EV(",\"data\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
		     "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]") },
	{ "scalars", "1 \"x\" null true [1,2]" },
	{ "truncated", EV(",\"data\":{\"a\":[1,2") },
};

/* ------------------------------------------------------------------------
 * fuzz_request: REP requests
 * ------------------------------------------------------------------------ */

static const struct {
	const char *name, *text;
} requests[] = {
	{ "query", "{\"query\":\"orders_by_customer\"}" },
	{ "query-key", "{\"query\":\"orders\",\"key\":\"c-42\"}" },
	{ "query-key-utf8", " {\n\"query\":\"o\",\"key\":\"\\u00e9\xc3\xa9\\ud83d\\ude00\"}" },
	{ "query-prefix-limit", "{\"query\":\"orders\",\"prefix\":\"c-\",\"limit\":10}" },
	{ "query-limit", "{\"query\":\"orders\",\"limit\":9223372036854775807}" },
	{ "dlq-retry", "{\"command\":\"dlq\",\"op\":\"retry\"}" },
	{ "dlq-retry-one",
	  "{\"command\":\"dlq\",\"op\":\"retry\",\"consumer\":\"mailer\",\"seq\":42}" },
	{ "dlq-drop", "{\"command\":\"dlq\",\"op\":\"drop\",\"consumer\":\"payments\"}" },
	{ "rebuild", "{\"command\":\"projection\",\"op\":\"rebuild\",\"name\":\"orders\"}" },
	{ "unknown-member", "{\"query\":\"o\",\"keys\":\"x\"}" },
	{ "twice", "{\"query\":\"o\",\"key\":\"a\",\"key\":\"b\"}" },
	{ "key-and-prefix", "{\"query\":\"o\",\"key\":\"a\",\"prefix\":\"b\"}" },
	{ "seq-string", "{\"command\":\"dlq\",\"op\":\"drop\",\"seq\":\"42\"}" },
	{ "limit-zero", "{\"query\":\"o\",\"limit\":0}" },
	{ "limit-double", "{\"query\":\"o\",\"limit\":1.5}" },
	{ "key-nul", "{\"query\":\"o\",\"key\":\"a\\u0000b\"}" },
	{ "name-control", "{\"command\":\"projection\",\"op\":\"rebuild\",\"name\":\"a\\nb\"}" },
	{ "wrong-op", "{\"command\":\"projection\",\"op\":\"retry\",\"name\":\"p\"}" },
	{ "no-op", "{\"command\":\"dlq\"}" },
	{ "unknown-command", "{\"command\":\"shutdown\"}" },
	{ "member-order", "{\"key\":\"a\",\"query\":\"o\"}" },
	{ "mixed-kinds", "{\"query\":\"o\",\"op\":\"retry\"}" },
	{ "nested", "{\"query\":{\"name\":\"o\"}}" },
	{ "escaped-first", "{\"\\u0071uery\":\"o\"}" },
	{ "not-object", "[\"query\",\"o\"]" },
	{ "broken", "{\"query\":\"o\"" },
	{ "two-documents", "{\"query\":\"o\"} {\"query\":\"p\"}" },
	{ "long-name",
	  "{\"query\":"
	  "\"nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn"
	  "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn"
	  "n"
	  "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn\"}" },
};

/* ------------------------------------------------------------------------
 * fuzz_config: config files
 * ------------------------------------------------------------------------ */

static const struct {
	const char *name, *text;
} configs[] = {
	{ "every-setting",
	  "-- every setting\n"
	  "data = \"tide-data\"\n"
	  "durability = \"relaxed\"\n"
	  "sync_interval = 250\n"
	  "endpoints = { pull = \"ipc:///tmp/p\", rep = \"tcp://127.0.0.1:5555\", pub = false }\n"
	  "map_size = \"1G\"\n"
	  "max_event_size = \"64KiB\"\n"
	  "max_message_size = 16777216\n"
	  "turn_events = 20000\n"
	  "instruction_budget = 10000000\n"
	  "time_limit = \"500ms\"\n"
	  "memory_limit = \"256M\"\n"
	  "max_emits = 1000\n"
	  "build_threads = 2\n"
	  "log_level = \"debug\"\n"
	  "lua_path = \"lua/?.lua;lib/?/init.lua\"\n"
	  "scripts = { \"orders.lua\", \"/abs/rules.lua\" }\n"
	  "allow = { \"io\", \"os\", \"debug\" }\n" },
	{ "example", "data = \"tide-data\"            -- overridden by --data\n"
		     "durability = \"sync\"\n"
		     "scripts = {\n  \"orders.lua\",\n  \"large_amount.lua\",\n}\n" },
	{ "computed", "local function mib(n) return n * 1024 * 1024 end\n"
		      "function helper() return 1 end\n"
		      "map_size = mib(64)\n"
		      "max_event_size = string.format(\"%dK\", 2 ^ 6 // 1)\n"
		      "scripts = \"one.lua\"\n"
		      "allow = \"os\"\n"
		      "for i = 1, 3 do turn_events = i * 1000 end\n"
		      "log_level = ({ \"error\", \"warn\" })[2]\n" },
	{ "empty", "" },
	{ "unknown-setting", "datadir = \"x\"\n" },
	{ "wrong-types",
	  "durability = true\nmax_event_size = -1\nturn_events = 0\nmap_size = \"12Q\"\n" },
	{ "bad-list", "scripts = { 1, {}, \"x\" }\nallow = { \"package\" }\n" },
	{ "bad-endpoints", "endpoints = { pull = \"a\", push = \"b\" }\n" },
	{ "endpoints-not-table", "endpoints = \"tcp://x\"\n" },
	{ "number-key", "_ENV[1] = 2\n" },
	{ "syntax-error", "data = = \"x\"\n" },
	{ "runtime-error", "error(\"stop here\")\n" },
	{ "error-object", "error({ code = 1 })\n" },
	{ "reads-globals", "data = tostring(math.pi) .. string.rep(\"x\", 3)\nprint = nil\n" },
	{ "long-string", "lua_path = [==[\na]]b\n]==]\n--[[ comment ]]\n" },
	{ "table-value", "data = {}\n" },
	{ "loop-bounded", "local n = 0\nwhile n < 1000 do n = n + 1 end\nturn_events = n\n" },
	{ "loop-forever", "while true do end\n" },
	{ "huge-string", "data = string.rep(\"x\", 1 << 40)\n" },
	{ "runaway-pattern", "data = (\"a\"):rep(3000):find(\".-.-.-.-b\")\n" },
	{ "time-limit", "time_limit = 2.5\nmemory_limit = \"1G\"\n" },
};

/* ------------------------------------------------------------------------
 * fuzz_value: encoded values, records, state entries
 * ------------------------------------------------------------------------ */

static const struct {
	const char *name, *json;
} values[] = {
	{ "null", "null" },
	{ "true", "true" },
	{ "false", "false" },
	{ "int-small", "7" },
	{ "int-negative", "-7" },
	{ "int-sizes",
	  "[-32,-33,127,128,-128,-129,255,256,32767,32768,-32768,-32769,2147483647,"
	  "2147483648,-2147483648,-2147483649,9223372036854775807,-9223372036854775808]" },
	{ "doubles", "[0.5,-0.0,1e300,4.9e-324,0.1,1234567890123456.0]" },
	{ "strings",
	  "[\"\",\"a\",\"abcdefghijklmnopqrstuvwxyz01234\",\"abcdefghijklmnopqrstuvwxyz012345"
	  "\",\"\\u0000\\n\\\"\",\"\\u00e9\\ud83d\\ude00\"]" },
	{ "map", "{\"id\":\"x\",\"n\":1,\"ok\":true,\"nothing\":null}" },
	{ "map-nested", "{\"a\":{\"b\":{\"c\":[1,{\"d\":[null,true]}]}},\"e\":[[],{}]}" },
	{ "array-nulls", "[null,1,null]" },
	{ "map-duplicates", "{\"k\":1,\"k\":2}" },
	{ "map-16",
	  "{\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5,\"f\":6,\"g\":7,\"h\":8,\"i\":9,\"j\":10,"
	  "\"k\":11,\"l\":12,\"m\":13,\"n\":14,\"o\":15,\"p\":16}" },
};

/* Values in forms the JSON path does not write. */
static const struct {
	const char *name;
	const char *bytes;
	size_t n;
} raw_values[] = {
	{ "float32", "\xca\x3f\xc0\x00\x00", 5 },
	{ "uint64-max", "\xcf\xff\xff\xff\xff\xff\xff\xff\xff", 9 },
	{ "uint-sizes",
	  "\x94\xcc\xff\xcd\xff\xff\xce\xff\xff\xff\xff\xcf\x00\x00\x00\x00\x00\x00\x00\x01", 20 },
	{ "bin", "\x93\xc4\x03\x00\x01\x02\xc5\x00\x01\xff\xc6\x00\x00\x00\x00", 15 },
	{ "str-forms", "\x93\xd9\x01x\xda\x00\x01y\xdb\x00\x00\x00\x01z", 15 },
	{ "containers-16-32", "\x92\xdc\x00\x01\xc0\xdf\x00\x00\x00\x01\xa1k\xde\x00\x00", 15 },
	{ "map-int-key", "\x81\x01\x02", 3 },
	{ "truncated-str",
	  "\xa5"
	  "ab",
	  3 },
	{ "huge-count", "\xdd\xff\xff\xff\xff\x01", 6 },
	{ "huge-map", "\xdf\xff\xff\xff\xff\xa1k\xc0", 8 },
	{ "nested-claims", "\xdd\x00\x0f\xff\xff\xdd\x00\x0f\xff\xff\xdd\x00\x0f\xff\xff", 15 },
	{ "unused-tags", "\x93\xc1\xc7\xd4", 4 },
	{ "nan", "\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00", 9 },
	{ "invalid-utf8", "\x92\xa2\xc0\xaf\x81\xa2\xed\xa0\x01", 9 },
	{ "bytes-after", "\x01\x02\x03", 3 },
};

/* A stored record: the events parser's output, stamped as the log does. */
typedef struct recs {
	const char *name;
	tidei_buf *out;
} recs;

static void
rec_sink(void *ud, const uint8_t *rec, size_t len, const char *err)
{
	tidei_buf *out = ud;

	if (err != NULL) {
		fprintf(stderr, "mkcorpus: a seed event was refused: %s\n", err);
		exit(1);
	}
	tidei_buf_reset(out);
	tidei_buf_put(out, rec, len);
}

static void
put_record(const char *name, const char *json, uint64_t version, uint64_t prev)
{
	tidei_eparser p;
	tidei_buf rec = { 0 };

	tidei_eparser_init(&p, 1 << 20);
	if (tidei_eparser_run(&p, json, strlen(json), rec_sink, &rec) != 1 || rec.len == 0) {
		fprintf(stderr, "mkcorpus: seed %s is not one event\n", name);
		exit(1);
	}
	tidei_event_stamp(rec.p, version, prev, 1795338060123456789);
	put_file("fuzz_value", name, rec.p, rec.len);
	tidei_eparser_free(&p);
	tidei_buf_free(&rec);
}

/* A state entry as fuzz_value reads one: name length, key format, the key
 * (at most 511 bytes), the value. */
static void
put_state(const char *name, size_t nl, uint32_t fmt, const uint8_t *k, size_t kn, const uint8_t *v,
	  size_t vn)
{
	tidei_buf b = { 0 };

	tidei_buf_putc(&b, (uint8_t)nl);
	tidei_buf_putc(&b, (uint8_t)(fmt - 1));
	tidei_buf_put(&b, k, kn);
	tidei_buf_put(&b, v, vn);
	put_file("fuzz_value", name, b.p, b.len);
	tidei_buf_free(&b);
}

static void
put_states(void)
{
	/* projection "p" (1 byte): keys of up to 505 - 1 - 1 = 503 bytes are
	 * stored as they are; a longer one in 504 bytes, its first 471, a
	 * zero and its hash, after "p\0" and the generation */
	const size_t nl = 1, vm = 511 - nl - 6, keep = vm - TIDEI_KEYHASH_LEN;
	uint8_t k[511], key[600];
	tidei_buf v = { 0 };
	size_t base = nl + 5;

	memset(k, 0, sizeof k);
	k[0] = 'p';
	k[4] = 1;
	memcpy(k + base, "c-42", 4);
	put_state("state-short", nl, 2, k, base + 4, (const uint8_t *)"\x81\xa1n\x05", 4);

	memset(key, 'k', sizeof key);
	memcpy(k + base, key, keep);
	k[base + keep] = 0;
	tidei_keyhash(k + base + keep + 1, key, sizeof key, NULL, 0);
	tidei_val_bin(&v, key, sizeof key);
	tidei_buf_put(&v, "\x81\xa1n\x05", 4);
	put_state("state-long", nl, 2, k, base + vm + 1, v.p, v.len);
	put_state("state-long-format1", nl, 1, k, base + vm + 1, v.p, v.len);
	tidei_buf_free(&v);
}

/* The text of the seed event @p name. */
static const char *
event(const char *name)
{
	for (size_t k = 0; k < sizeof events / sizeof *events; k++)
		if (strcmp(events[k].name, name) == 0)
			return events[k].text;
	fprintf(stderr, "mkcorpus: no seed event %s\n", name);
	exit(1);
}

static void
put_values(void)
{
	char err[TIDEI_ERRLEN];
	tidei_buf b = { 0 };

	for (size_t k = 0; k < sizeof values / sizeof *values; k++) {
		tidei_buf_reset(&b);
		if (tidei_json_decode(values[k].json, strlen(values[k].json), &b, err) != 0) {
			fprintf(stderr, "mkcorpus: %s: %s\n", values[k].name, err);
			exit(1);
		}
		put_file("fuzz_value", values[k].name, b.p, b.len);
	}
	for (size_t k = 0; k < sizeof raw_values / sizeof *raw_values; k++)
		put_file("fuzz_value", raw_values[k].name, raw_values[k].bytes, raw_values[k].n);
	tidei_buf_free(&b);

	put_record("record-minimal", EV(""), 0, 0);
	put_record("record-all", event("all-attributes"), 3, 41);
	put_record("record-data-small-map",
		   EV(",\"data\":{\"a\":1,\"b\":[1,2],\"c\":{\"d\":null}}"), 1, 0);
	put_record("record-data-many", event("data-many-members"), 0, 0);
	put_record("record-data-base64", event("data-base64"), 0, 0);
	put_record("record-data-null", event("data-null"), 0, 0);
	put_record("record-data-array", event("data-double"), 0, 0);
	put_record("record-ext", EV(",\"a\":\"x\",\"b\":1,\"c\":true,\"subject\":\"s\""), 2, 9);
	put_states();
}

int
main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: mkcorpus DIR (tests/fuzz/corpus)\n");
		return 2;
	}
	top = argv[1];
	if (mkdir(top, 0777) != 0 && errno != EEXIST) {
		perror(top);
		return 1;
	}
	for (size_t k = 0; k < sizeof events / sizeof *events; k++)
		put_text("fuzz_event", events[k].name, events[k].text);
	for (size_t k = 0; k < sizeof requests / sizeof *requests; k++)
		put_text("fuzz_request", requests[k].name, requests[k].text);
	for (size_t k = 0; k < sizeof configs / sizeof *configs; k++)
		put_text("fuzz_config", configs[k].name, configs[k].text);
	put_values();
	return 0;
}
