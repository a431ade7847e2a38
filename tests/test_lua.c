/*
 * test_lua.c - the Lua host through an in-process engine: tide.on and
 * tide.emit, the event table, error isolation, the sandbox and budgets.
 * The engine runs on its own event_base with no sockets; events go in
 * through tide_publish() and come out of the log.
 *
 * The rig registers one C consumer of its own, "rig-watch" on "*" from
 * the beginning, which notes the type of every committed event.  Tests wait
 * on it ("until type X has been committed n times", with a deadline)
 * instead of sleeping or spinning a fixed number of loop turns.  Since a
 * consumer handles events in log order, an emit caused by a later event
 * proves an earlier event of the same consumer has been handled: negative
 * checks ("nothing was emitted for E") wait for such a sentinel first.
 *
 * What is finally in the log is read back with the real `tide log`, as a
 * user would, so the JSON text (exact digits of integers, 2.0 staying a
 * float) is checked end to end.
 */
#define _GNU_SOURCE /* dladdr, timegm */
#include <check.h>
#include <dlfcn.h>
#include <event2/event.h>
#include <lua.h>
#include <stdio.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"
#include "l_event.h"
#include "script.h"
#include "tide.h"
#include "val.h"

/* ------------------------------------------------------------------------
 * The rig
 * ------------------------------------------------------------------------ */

/* An engine with a script, data in a fresh directory. */
typedef struct rig {
	tide_engine *e;
	tide_config *cfg;
	const char *dir;  /* the test's directory: scripts, data/ */
	char data[600];   /* the data directory */
	char logs[65536]; /* "<level> <message>\n" from the log callback */
	size_t loglen;
	int results, stored;
	char lasterr[512]; /* error of the last rejected publish */
	char types[65536]; /* "\n" then "<type>\n" per committed event */
	size_t typeslen;
	uint64_t head; /* highest seq the watcher has seen */
} rig;

static void
collect_log(void *ud, int level, const char *msg)
{
	rig *r = ud;
	int n = snprintf(r->logs + r->loglen, sizeof r->logs - r->loglen, "%d %s\n", level, msg);

	if (n > 0 && r->loglen + (size_t)n < sizeof r->logs)
		r->loglen += (size_t)n;
}

/* The watcher: a C consumer that notes every committed event. */
static int
watch(void *ud, const tide_event *ev)
{
	rig *r = ud;
	size_t n;
	const char *type = tide_event_attr(ev, "type", &n);

	ck_assert_ptr_nonnull(type);
	if (r->typeslen + n + 2 < sizeof r->types) {
		memcpy(r->types + r->typeslen, type, n);
		r->typeslen += n;
		r->types[r->typeslen++] = '\n';
		r->types[r->typeslen] = '\0';
	}
	r->head = tide_event_seq(ev);
	return TIDE_OK;
}

/* A fresh rig: directory, nothing opened. */
static void
rig_init(rig *r)
{
	memset(r, 0, sizeof *r);
	r->dir = th_tmpdir();
	snprintf(r->data, sizeof r->data, "%s/data", r->dir);
	r->types[0] = '\n';
	r->typeslen = 1;
}

/* A configuration with @p script (Lua source, NULL for none) as s.lua. */
static void
rig_config(rig *r, const char *script)
{
	ck_assert_int_eq(tide_config_new(&r->cfg), TIDE_OK);
	ck_assert_int_eq(tide_config_set(r->cfg, "data", r->data), TIDE_OK);
	ck_assert_int_eq(tide_config_set(r->cfg, "pull", ""), TIDE_OK);
	ck_assert_int_eq(tide_config_set(r->cfg, "rep", ""), TIDE_OK);
	ck_assert_int_eq(tide_config_set(r->cfg, "pub", ""), TIDE_OK);
	ck_assert_int_eq(tide_config_set(r->cfg, "log_level", "debug"), TIDE_OK);
	tide_config_set_log(r->cfg, collect_log, r);
	if (script != NULL)
		ck_assert_int_eq(tide_config_add_script(r->cfg, th_write(r->dir, "s.lua", script)),
				 TIDE_OK);
}

static void
rig_set(rig *r, const char *key, const char *value)
{
	ck_assert_msg(tide_config_set(r->cfg, key, value) == TIDE_OK, "%s=%s: %s", key, value,
		      tide_errmsg());
}

/* Create and open the engine of the configuration; returns what
 * tide_engine_open() returned. */
static int
rig_start(rig *r)
{
	ck_assert_int_eq(tide_engine_new(&r->e, r->cfg), TIDE_OK);
	ck_assert_int_eq(tide_consumer_add(r->e, "rig-watch", "*", &th_from_beginning, watch, r),
			 TIDE_OK);
	return tide_engine_open(r->e, NULL);
}

static int
rig_open(rig *r, const char *script)
{
	rig_init(r);
	rig_config(r, script);
	return rig_start(r);
}

/* Open with @p script, which must load. */
static void
rig_open_ok(rig *r, const char *script)
{
	int rc = rig_open(r, script);

	ck_assert_msg(rc == TIDE_OK, "open: %s: %s", tide_strerror(rc), tide_errmsg());
}

/* Destroy the engine (committing what is pending); the directory stays. */
static void
rig_close(rig *r)
{
	tide_engine_destroy(r->e);
	tide_config_destroy(r->cfg);
	r->e = NULL;
	r->cfg = NULL;
}

static void
on_result(void *ud, const tide_result *res)
{
	rig *r = ud;

	r->results++;
	r->stored += res->code == TIDE_OK;
	if (res->code != TIDE_OK)
		snprintf(r->lasterr, sizeof r->lasterr, "%s", res->error ? res->error : "?");
}

/* One turn of the loop: blocks only when nothing is due, and then at most
 * until the engine's one-second tick. */
static void
rig_turn(rig *r)
{
	event_base_loop(tide_engine_base(r->e), EVLOOP_ONCE);
}

/* Publish a message of @p n events and run the loop until every result is
 * in (deadline 10 s). */
static void
rig_publish_n(rig *r, const char *json, int n)
{
	int want = r->results + n;
	int64_t deadline = th_ms() + 10000;

	ck_assert_int_eq(tide_publish(r->e, json, strlen(json), on_result, r), TIDE_OK);
	while (r->results < want && th_ms() < deadline)
		rig_turn(r);
	ck_assert_int_eq(r->results, want);
}

static void
rig_publish(rig *r, const char *json)
{
	rig_publish_n(r, json, 1);
}

/* Occurrences of @p needle in @p hay. */
static int
count(const char *hay, const char *needle)
{
	int n = 0;
	size_t len = strlen(needle);

	for (const char *p = strstr(hay, needle); p != NULL; p = strstr(p + len, needle))
		n++;
	return n;
}

/* How many events of exactly @p type have been committed. */
static int
committed(rig *r, const char *type)
{
	char needle[256];

	snprintf(needle, sizeof needle, "\n%s\n", type);
	/* entries share their newlines: count one by one */
	{
		int n = 0;
		size_t len = strlen(needle);
		for (const char *p = strstr(r->types, needle); p != NULL;
		     p = strstr(p + len - 1, needle))
			n++;
		return n;
	}
}

/* Run the loop until @p type has been committed at least @p n times
 * (deadline 15 s); returns how many times it was. */
static int
rig_wait(rig *r, const char *type, int n)
{
	int64_t deadline = th_ms() + 15000;

	while (committed(r, type) < n && th_ms() < deadline)
		rig_turn(r);
	ck_assert_msg(committed(r, type) >= n, "%d of %d '%s' committed; log:\n%s",
		      committed(r, type), n, type, r->logs);
	return committed(r, type);
}

/* The log, as `tide log ARGS` prints it (NDJSON), into @p out. */
static void
rig_log(rig *r, char *out, size_t len, const char *args)
{
	ck_assert_int_eq(th_sh(out, len, "'%s' log --data '%s' %s", TIDE_BIN, r->data, args), 0);
}

/* The first line of @p text containing @p needle (static), or NULL. */
static const char *
line_with(const char *text, const char *needle)
{
	static char line[8192];
	const char *p = strstr(text, needle), *b, *e;

	if (p == NULL)
		return NULL;
	for (b = p; b > text && b[-1] != '\n'; b--)
		;
	e = strchr(p, '\n');
	if (e == NULL)
		e = p + strlen(p);
	snprintf(line, sizeof line, "%.*s", (int)(e - b), b);
	return line;
}

#define HAS(text, needle) \
	ck_assert_msg(strstr(text, needle) != NULL, "'%s' not in:\n%s", needle, text)
#define HASNT(text, needle) \
	ck_assert_msg(strstr(text, needle) == NULL, "'%s' in:\n%s", needle, text)

#define EV(id, type, extra) \
	"{\"specversion\":\"1.0\",\"id\":\"" id "\",\"source\":\"/t\",\"type\":\"" type "\"" extra \
	"}"

#define LUA_HEAD "local tide = require 'tide'\n"

/* ------------------------------------------------------------------------
 * The event a handler sees
 * ------------------------------------------------------------------------ */

START_TEST(emit_carries_causation)
{
	rig r;
	char out[8192];

	rig_open_ok(&r, LUA_HEAD "tide.on('order.placed', function(ev)\n"
				 "  tide.emit{ type = 'payment.requested', subject = ev.subject,\n"
				 "             data = { amount = ev.data.total * 2 } }\n"
				 "end, { name = 'pay', from = 'beginning' })\n");
	rig_publish(&r, EV("o1", "order.placed", ",\"subject\":\"c1\",\"data\":{\"total\":21}"));
	ck_assert_int_eq(r.stored, 1);
	rig_wait(&r, "payment.requested", 1);
	rig_close(&r);
	rig_log(&r, out, sizeof out, "");
	HAS(out, "\"type\":\"payment.requested\"");
	HAS(out, "\"causationid\":\"o1\"");
	HAS(out, "\"correlationid\":\"o1\"");
	HAS(out, "\"data\":{\"amount\":42}");
}
END_TEST

START_TEST(event_table)
{
	/* Every field of the table, checked in Lua; a failed assert names the
	 * field and the handler's error is in the rig's log. */
	rig r;
	char out[16384];
	const char *line;
	struct tm tm;
	time_t rec, now = time(NULL);

	rig_open_ok(
		&r, LUA_HEAD
		"local function check(ev)\n"
		"  assert(ev.id == 'p1', 'id')\n"
		"  assert(ev.source == '/t', 'source')\n"
		"  assert(ev.type == 'probe', 'type')\n"
		"  assert(ev.specversion == '1.0', 'specversion')\n"
		"  assert(ev.subject == 'k1', 'subject')\n"
		"  assert(ev.time == '2018-04-05T18:31:00.123456789+01:00', 'time: ' .. "
		"tostring(ev.time))\n"
		/* event time, parsed in C: 17:31:00.123456789 UTC */
		"  assert(math.type(ev.time_ns) == 'integer' and ev.time_ns == "
		"1522949460123456789, 'time_ns ' .. tostring(ev.time_ns))\n"
		"  assert(math.type(ev.recorded_ns) == 'integer' and ev.recorded_ns > "
		"1522949460123456789, 'recorded_ns')\n"
		"  assert(ev.datacontenttype == 'application/json', 'datacontenttype')\n"
		"  assert(ev.dataschema == 'https://example.com/s', 'dataschema')\n"
		"  assert(math.type(ev.seq) == 'integer' and ev.seq == 1, 'seq ' .. "
		"tostring(ev.seq))\n"
		"  assert(math.type(ev.version) == 'integer' and ev.version == 1, 'version')\n"
		"  assert(type(ev.recorded) == 'string' and ev.recorded:match(\n"
		"    '^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%d%d%d%dZ$'), 'recorded ' .. "
		"tostring(ev.recorded))\n"
		"  assert(ev.correlationid == 'corr-1', 'correlationid')\n"
		"  assert(ev.causationid == 'cause-1', 'causationid')\n"
		"  assert(ev.extstr == 'x', 'extstr')\n"
		"  assert(math.type(ev.extint) == 'integer' and ev.extint == -7, 'extint')\n"
		"  assert(ev.extbool == true and ev.extoff == false, 'extbool')\n"
		"  local d = ev.data\n"
		"  assert(type(d) == 'table', 'data')\n"
		"  assert(d.order.items[1].sku == 'a' and d.order.items[2].sku == 'b', 'items')\n"
		"  assert(#d.order.items == 2 and d.order.items[0] == nil, 'items are 1-based')\n"
		"  assert(#d.list == 3 and d.list[1] == 10 and d.list[3] == 30, 'list')\n"
		"  assert(d.deep.a.b.c == true, 'deep')\n"
		"  assert(d.gone == nil, 'null member')\n"
		"  assert(#d.holes == 3 and d.holes[2] == tide.null, 'null element')\n"
		"  assert(d.text == 'h\\xc3\\xa9', 'utf-8 text')\n"
		"  assert(d.empty_obj and next(d.empty_obj) == nil, 'empty object')\n"
		/* the rule helpers read the event view like a table */
		"  local path = require 'tide.path'\n"
		"  assert(path.get(ev, 'data.order.items.2.sku') == 'b', 'tide.path on an event')\n"
		"  assert(path.get(ev, 'subject') == 'k1', 'tide.path attribute')\n"
		"  assert(path.get(ev, 'data.gone.x') == nil, 'tide.path missing step')\n"
		"  assert(path.getter('data.deep.a.b.c')(ev) == true, 'tide.path getter')\n"
		"end\n"
		"tide.on('probe', function(ev)\n"
		"  check(ev)\n"
		"  tide.emit{ type = 'probe.ok', data = { recorded = ev.recorded } }\n"
		"end, { name = 'probe' })\n"
		"tide.on('probe.more', function(ev)\n"
		"  tide.emit{ type = 'probe.more.ok', data = { seq = ev.seq, version = "
		"ev.version,\n"
		"             subject = ev.subject, time = ev.time, data = ev.data == nil } }\n"
		"end, { name = 'more' })\n");
	rig_publish(
		&r,
		"{\"specversion\":\"1.0\",\"id\":\"p1\",\"source\":\"/t\",\"type\":\"probe\","
		"\"subject\":\"k1\",\"time\":\"2018-04-05T18:31:00.123456789+01:00\","
		"\"datacontenttype\":\"application/json\",\"dataschema\":\"https://example.com/s\","
		"\"correlationid\":\"corr-1\",\"causationid\":\"cause-1\","
		"\"extstr\":\"x\",\"extint\":-7,\"extbool\":true,\"extoff\":false,"
		"\"data\":{\"order\":{\"items\":[{\"sku\":\"a\"},{\"sku\":\"b\"}]},"
		"\"list\":[10,20,30],\"deep\":{\"a\":{\"b\":{\"c\":true}}},\"gone\":null,"
		"\"holes\":[1,null,3],\"text\":\"h\\u00e9\",\"empty_obj\":{}}}");
	ck_assert_int_eq(r.stored, 1);
	/* the same stream again (version 2), then no stream at all */
	rig_publish(&r, EV("p2", "probe.more", ",\"subject\":\"k1\""));
	rig_publish(&r, EV("p3", "probe.more", ""));
	rig_wait(&r, "probe.ok", 1);
	rig_wait(&r, "probe.more.ok", 2);
	rig_close(&r);
	rig_log(&r, out, sizeof out, "");

	line = line_with(out, "\"type\":\"probe.ok\"");
	ck_assert_msg(line != NULL, "handler failed:\n%s", r.logs);
	/* recorded is the commit time: now, give or take a minute */
	line = strstr(line, "\"recorded\":\"");
	ck_assert_ptr_nonnull(line);
	memset(&tm, 0, sizeof tm);
	ck_assert_ptr_nonnull(strptime(line + 12, "%Y-%m-%dT%H:%M:%S", &tm));
	rec = timegm(&tm);
	ck_assert_msg(rec > now - 60 && rec < now + 60, "recorded %s", line);

	/* p1 is seq 1 and its emit seq 2, so p2 is seq 3 and p3 seq 5; what
	 * the handler saw is in the data of its emit */
	line = line_with(out, "\"causationid\":\"p2\"");
	ck_assert_ptr_nonnull(line);
	line = strstr(line, "\"data\":{");
	ck_assert_ptr_nonnull(line);
	HAS(line, "\"seq\":3");
	HAS(line, "\"version\":2");
	HAS(line, "\"subject\":\"k1\"");
	HAS(line, "\"data\":true"); /* no data member: ev.data is nil */
	line = line_with(out, "\"causationid\":\"p3\"");
	ck_assert_ptr_nonnull(line);
	HASNT(line, "\"version\""); /* no subject, no stream position */
	HASNT(line, "\"subject\"");
	HASNT(line, "\"time\"");
	line = strstr(line, "\"data\":{");
	ck_assert_ptr_nonnull(line);
	HAS(line, "\"seq\":5");
}
END_TEST

/* ev.data of an object decodes its members when read; everything a
 * handler can do with a table must still hold. */
START_TEST(lazy_data_is_a_table)
{
	rig r;
	char out[16384];
	const char *line;

	rig_open_ok(
		&r, LUA_HEAD
		"local json = tide.json\n"
		"local function check(ev)\n"
		"  local d = ev.data\n"
		"  assert(type(d) == 'table', 'type')\n"
		"  assert(d.a == 1 and d.a == 1 and math.type(d.a) == 'integer', 'a')\n"
		"  assert(d.s == 'text' and d.f == 2.5 and d.t == true and d.no == false, "
		"'scalars')\n"
		"  assert(d.missing == nil and d.gone == nil and d[1] == nil, 'absent')\n"
		"  assert(d.x == 2, 'the last duplicate wins: ' .. tostring(d.x))\n"
		"  assert(json.encode(d) == "
		"'{\"a\":1,\"f\":2.5,\"list\":[1,2],\"no\":false,\"obj\":{\"y\":1},\"s\":\"text\","
		"\"t\":true,\"x\":2}', 'encode: ' .. json.encode(d))\n"
		"  assert(d.obj == d.obj and d.obj.y == 1, 'nested identity')\n"
		"  d.obj.y = 5\n"
		"  assert(ev.data.obj.y == 5, 'nested write kept')\n"
		"  kept = ev.data\n"
		"end\n"
		"local function check_writes(ev)\n"
		"  local d = ev.data\n"
		"  d.new = 3\n"
		"  assert(d.new == 3 and d.a == 1, 'write')\n"
		"  d.a = nil\n"
		"  assert(d.a == nil, 'removed stays removed')\n"
		"  local n = 0\n"
		"  for k, v in pairs(d) do n = n + 1; assert(type(k) == 'string', 'key ' .. "
		"tostring(k)) end\n"
		"  assert(n == 2, 'pairs: ' .. n)\n"
		"  assert(next(d) ~= nil, 'next after pairs')\n"
		"  local e = ev.data\n"
		"end\n"
		"local function check_pairs(ev)\n"
		"  local seen = {}\n"
		"  for k, v in pairs(ev.data) do seen[#seen + 1] = k .. '=' .. tostring(v) end\n"
		"  table.sort(seen)\n"
		"  assert(table.concat(seen, ',') == 'a=1,b=x', 'pairs: ' .. table.concat(seen, "
		"','))\n"
		"  assert(kept.s == 'text' and kept.obj.y == 5, 'kept after its handler')\n"
		"  assert(kept_big.k7 == 7 and #kept_big.long == 2000, 'big kept')\n"
		"end\n"
		"tide.on('lazy', function(ev)\n"
		"  check(ev)\n"
		"  tide.emit{ type = 'lazy.ok', data = ev.data }\n"
		"end, { name = 'lazy' })\n"
		"tide.on('lazy.write', function(ev)\n"
		"  check_writes(ev)\n"
		"  tide.emit{ type = 'lazy.write.ok' }\n"
		"end, { name = 'write' })\n"
		"tide.on('lazy.big', function(ev)\n"
		"  local d = ev.data\n"
		"  for i = 1, 20 do assert(d['k' .. i] == i, 'member ' .. i) end\n"
		"  assert(#d.long == 2000 and d.k21 == nil, 'long')\n"
		"  kept_big = d\n"
		"  tide.emit{ type = 'lazy.big.ok' }\n"
		"end, { name = 'big' })\n"
		"tide.on('lazy.pairs', function(ev)\n"
		"  check_pairs(ev)\n"
		"  tide.emit{ type = 'lazy.pairs.ok', data = { d = ev.data } }\n"
		"end, { name = 'pairs' })\n");
	rig_publish(&r, EV("l1", "lazy",
			   ",\"data\":{\"x\":1,\"a\":1,\"s\":\"text\",\"f\":2.5,\"t\":true,"
			   "\"no\":false,\"gone\":null,\"obj\":{\"y\":1},\"list\":[1,2],\"x\":2}"));
	{ /* more members than fit the event object's own room, and more bytes */
		char big[4096];
		int n = snprintf(big, sizeof big, "%s", EV("l0", "lazy.big", ",\"data\":{"));
		n -= 1; /* reopen the object: drop the event's closing brace */
		for (int i = 1; i <= 20; i++)
			n += snprintf(big + n, sizeof big - (size_t)n, "\"k%d\":%d,", i, i);
		n += snprintf(big + n, sizeof big - (size_t)n, "\"long\":\"");
		for (int i = 0; i < 2000; i++)
			big[n++] = 'x';
		snprintf(big + n, sizeof big - (size_t)n, "\"}}");
		rig_publish(&r, big);
		rig_wait(&r, "lazy.big.ok", 1);
	}
	rig_publish(&r, EV("l2", "lazy.write", ",\"data\":{\"a\":1,\"b\":2}"));
	rig_publish(&r, EV("l3", "lazy.pairs", ",\"data\":{\"a\":1,\"b\":\"x\"}"));
	rig_wait(&r, "lazy.ok", 1);
	rig_wait(&r, "lazy.write.ok", 1);
	rig_wait(&r, "lazy.pairs.ok", 1);
	rig_close(&r);
	rig_log(&r, out, sizeof out, "");
	line = line_with(out, "\"type\":\"lazy.ok\"");
	ck_assert_msg(line != NULL, "handler failed:\n%s", r.logs);
	HAS(line, "\"data\":{\"a\":1,\"f\":2.5,\"list\":[1,2],\"no\":false,\"obj\":{\"y\":5},"
		  "\"s\":\"text\",\"t\":true,\"x\":2}");
	line = line_with(out, "\"type\":\"lazy.pairs.ok\"");
	ck_assert_ptr_nonnull(line);
	HAS(line, "\"data\":{\"d\":{\"a\":1,\"b\":\"x\"}}");
	HASNT(r.logs, "assert");
}
END_TEST

START_TEST(integers_keep_64_bits)
{
	rig r;
	char out[16384];
	const char *line;

	rig_open_ok(
		&r, LUA_HEAD
		"tide.on('nums', function(ev)\n"
		"  local d = ev.data\n"
		"  assert(math.type(d.big) == 'integer', 'big is a ' .. "
		"tostring(math.type(d.big)))\n"
		"  assert(string.format('%d', d.big) == '9007199254740993', 'big')\n"
		"  assert(d.big ~= 9007199254740992, 'big rounded through a double')\n"
		"  assert(math.type(d.min) == 'integer' and d.min == math.mininteger, 'min')\n"
		"  assert(string.format('%d', d.min) == '-9223372036854775808', 'min digits')\n"
		"  assert(d.max == math.maxinteger, 'max')\n"
		"  assert(math.type(d.two) == 'float' and d.two == 2.0, 'two is a float')\n"
		"  assert(math.type(d.half) == 'float', 'half')\n"
		"  assert(math.type(d.small) == 'integer' and d.small == -1, 'small')\n"
		"  assert(math.type(d.over) == 'float', 'beyond 64 bits is a float')\n"
		"  tide.emit{ type = 'nums.back', data = { big = d.big, min = d.min, max = d.max,\n"
		"    two = d.two, half = d.half, next = d.big + 1, sbig = string.format('%d', "
		"d.big),\n"
		"    three = 3.0, quarter = 1 / 4, int = 7 // 1, fdiv = 7 / 7, arr = { d.min, "
		"d.two } "
		"} }\n"
		"end, { name = 'nums' })\n");
	rig_publish(&r, EV("n1", "nums",
			   ",\"data\":{\"big\":9007199254740993,\"min\":-9223372036854775808,"
			   "\"max\":9223372036854775807,\"two\":2.0,\"half\":0.5,\"small\":-1,"
			   "\"over\":18446744073709551616}"));
	rig_wait(&r, "nums.back", 1);
	rig_close(&r);
	rig_log(&r, out, sizeof out, "--type nums.back");
	line = line_with(out, "nums.back");
	ck_assert_msg(line != NULL, "handler failed:\n%s", r.logs);
	HAS(line, "\"big\":9007199254740993");
	HAS(line, "\"min\":-9223372036854775808");
	HAS(line, "\"max\":9223372036854775807");
	HAS(line, "\"next\":9007199254740994");
	HAS(line, "\"sbig\":\"9007199254740993\"");
	HAS(line, "\"two\":2.0");
	HAS(line, "\"half\":0.5");
	HAS(line, "\"three\":3.0");
	HAS(line, "\"quarter\":0.25");
	HAS(line, "\"int\":7");
	HAS(line, "\"fdiv\":1.0");
	HAS(line, "\"arr\":[-9223372036854775808,2.0]");
}
END_TEST

/* ------------------------------------------------------------------------
 * tide.emit
 * ------------------------------------------------------------------------ */

START_TEST(emit_defaults_and_explicit)
{
	rig r;
	char out[16384];
	const char *line;

	rig_open_ok(&r, LUA_HEAD
		    "tide.on('start', function(ev)\n"
		    "  local a = tide.emit{ type = 'step.one' }\n"
		    "  local b = tide.emit{ type = 'step.two', data = { prev = a } }\n"
		    "  local c = tide.emit{ type = 'step.mine', id = 'my-id', source = '/mine',\n"
		    "                       data = { prev = b } }\n"
		    "  tide.emit{ type = 'step.ids', data = { a = a, b = b, c = c } }\n"
		    "end, { name = 'alpha' })\n");
	rig_publish(&r, EV("s1", "start", ",\"subject\":\"flow\""));
	rig_wait(&r, "step.ids", 1);
	rig_close(&r);
	rig_log(&r, out, sizeof out, "");

	/* defaults: source /tide/<consumer>, id <cause seq>.<n>, causation
	 * and correlation from the cause; the subject is not inherited */
	line = line_with(out, "\"type\":\"step.one\"");
	ck_assert_msg(line != NULL, "handler failed:\n%s", r.logs);
	HAS(line, "\"id\":\"1.1\",\"source\":\"/tide/alpha\"");
	HAS(line, "\"correlationid\":\"s1\",\"causationid\":\"s1\"");
	HASNT(line, "\"subject\"");
	line = line_with(out, "\"type\":\"step.two\"");
	HAS(line, "\"id\":\"1.2\"");
	HAS(line, "\"data\":{\"prev\":\"1.1\"}"); /* emit returned the id */
	/* explicit id and source are honoured, causation still set */
	line = line_with(out, "\"type\":\"step.mine\"");
	HAS(line, "\"id\":\"my-id\",\"source\":\"/mine\"");
	HAS(line, "\"causationid\":\"s1\"");
	HAS(line, "\"data\":{\"prev\":\"1.2\"}");
	line = line_with(out, "\"type\":\"step.ids\"");
	HAS(line, "\"id\":\"1.4\"");
	HAS(line, "\"c\":\"my-id\"");
	/* emits are appended in the order they were made, after the cause */
	ck_assert(strstr(out, "step.one") < strstr(out, "step.two"));
	ck_assert(strstr(out, "step.two") < strstr(out, "step.mine"));
	ck_assert(strstr(out, "step.mine") < strstr(out, "step.ids"));
}
END_TEST

START_TEST(correlation_chain)
{
	/* A -> B -> C: C's causation is B, its correlation still A. */
	rig r;
	char out[16384];
	const char *line;

	rig_open_ok(&r, LUA_HEAD
		    "tide.on('a', function(ev) tide.emit{ type = 'b' } end, { name = 'ab' })\n"
		    "tide.on('b', function(ev)\n"
		    "  tide.emit{ type = 'c', data = { cause = ev.id, corr = ev.correlationid } }\n"
		    "end, { name = 'bc' })\n");
	rig_publish(&r, EV("a1", "a", ""));
	rig_wait(&r, "c", 1);
	/* a cause that already carries a correlation id passes it on */
	rig_publish(&r, EV("a2", "a", ",\"correlationid\":\"flow-9\""));
	rig_wait(&r, "c", 2);
	rig_close(&r);
	rig_log(&r, out, sizeof out, "");

	line = line_with(out, "\"type\":\"b\"");
	ck_assert_msg(line != NULL, "no b:\n%s", r.logs);
	HAS(line, "\"id\":\"1.1\",\"source\":\"/tide/ab\"");
	HAS(line, "\"correlationid\":\"a1\",\"causationid\":\"a1\"");
	line = line_with(out, "\"cause\":\"1.1\"");
	ck_assert_ptr_nonnull(line);
	HAS(line, "\"id\":\"2.1\",\"source\":\"/tide/bc\"");
	HAS(line, "\"correlationid\":\"a1\",\"causationid\":\"1.1\"");
	HAS(line, "\"corr\":\"a1\"");

	line = line_with(out, "\"causationid\":\"a2\"");
	ck_assert_ptr_nonnull(line);
	HAS(line, "\"correlationid\":\"flow-9\"");
	line = line_with(out, "\"corr\":\"flow-9\"");
	ck_assert_ptr_nonnull(line);
	HAS(line, "\"correlationid\":\"flow-9\"");
}
END_TEST

START_TEST(invalid_emits_discard_the_call)
{
	/* Each bad emit comes after a good one; the handler fails and neither
	 * reaches the log.  The last event is the sentinel: its emits prove the
	 * others were handled. */
	rig r;
	char out[32768];
	static const struct {
		const char *kind, *says;
	} cases[] = {
		{ "notype", "tide.emit: missing required attribute 'type'" },
		{ "extname",
		  "tide.emit: extension attribute name 'BadName' must use only lowercase "
		  "letters and digits" },
		{ "func", "tide.emit: data: a function cannot be encoded" },
		{ "nan", "tide.emit: data: cannot encode NaN" },
		{ "inf", "tide.emit: data: cannot encode infinity" },
		{ "bigext",
		  "tide.emit: extension 'big' is outside the 32-bit integer range of CloudEvents" },
		{ "badtime",
		  "tide.emit: attribute 'time' is not an RFC 3339 timestamp: \"yesterday\"" },
		{ "emptyid", "tide.emit: attribute 'id' must not be empty" },
		{ "notable", "bad argument #1 to 'emit' (table expected, got string)" },
		{ "badutf8", "tide.emit: data: string is not valid UTF-8" },
	};
	char msg[4096] = "";
	int n = 0;

	rig_open_ok(&r, LUA_HEAD
		    "tide.on('bad.*', function(ev)\n"
		    "  tide.emit{ type = 'leak.' .. ev.data.kind }\n"
		    "  local k = ev.data.kind\n"
		    "  if k == 'notype' then tide.emit{ data = {} }\n"
		    "  elseif k == 'extname' then tide.emit{ type = 'x', BadName = 'v' }\n"
		    "  elseif k == 'func' then tide.emit{ type = 'x', data = { f = print } }\n"
		    "  elseif k == 'nan' then tide.emit{ type = 'x', data = { v = 0/0 } }\n"
		    "  elseif k == 'inf' then tide.emit{ type = 'x', data = { 1, math.huge } }\n"
		    "  elseif k == 'bigext' then tide.emit{ type = 'x', big = 1 << 40 }\n"
		    "  elseif k == 'badtime' then tide.emit{ type = 'x', time = 'yesterday' }\n"
		    "  elseif k == 'emptyid' then tide.emit{ type = 'x', id = '' }\n"
		    "  elseif k == 'notable' then tide.emit('x')\n"
		    "  elseif k == 'badutf8' then tide.emit{ type = 'x', data = '\\xff' }\n"
		    "  elseif k == 'done' then tide.emit{ type = 'sentinel' }\n"
		    "  end\n"
		    "end, { name = 'bad' })\n");
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
		n += snprintf(msg + n, sizeof msg - (size_t)n,
			      "{\"specversion\":\"1.0\",\"id\":\"b%zu\",\"source\":\"/t\","
			      "\"type\":\"bad.%s\",\"data\":{\"kind\":\"%s\"}}\n",
			      i, cases[i].kind, cases[i].kind);
	n += snprintf(msg + n, sizeof msg - (size_t)n, "%s\n",
		      EV("done", "bad.done", ",\"data\":{\"kind\":\"done\"}"));
	rig_publish_n(&r, msg, (int)(sizeof cases / sizeof *cases) + 1);
	ck_assert_int_eq(r.stored, (int)(sizeof cases / sizeof *cases) + 1);
	rig_wait(&r, "sentinel", 1);
	rig_close(&r);

	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		char failed[128];
		const char *line;
		/* the failure names the consumer, the event and the problem */
		snprintf(failed, sizeof failed,
			 "consumer 'bad' failed on event %zu (type bad.%s, id b%zu)", i + 1,
			 cases[i].kind, i);
		line = line_with(r.logs, failed);
		ck_assert_msg(line != NULL, "no failure logged for %s:\n%s", cases[i].kind, r.logs);
		ck_assert_msg(strstr(line, cases[i].says) != NULL, "%s: '%s' not in '%s'",
			      cases[i].kind, cases[i].says, line);
	}
	rig_log(&r, out, sizeof out, "");
	/* the good emit of each failed call is gone too; the sentinel's stays */
	ck_assert_int_eq(count(out, "\"type\":\"leak."), 1);
	HAS(out, "\"type\":\"leak.done\"");
	ck_assert_int_eq(count(out, "\"type\":\"x\""), 0);
	ck_assert_int_eq(th_log_count(r.data, ""), (long)(sizeof cases / sizeof *cases) + 3);
}
END_TEST

START_TEST(emit_errors_name_the_script_line)
{
	/* README: "A handler that raises is logged with script:line".  An
	 * invalid emit makes the handler raise: the log line must say where
	 * (s.lua:3), not only what. */
	rig r;
	const char *line;

	rig_open_ok(
		&r, LUA_HEAD
		"tide.on('go', function(ev)\n"
		"  tide.emit{ data = 1 }\n"
		"end, { name = 'where' })\n"
		"tide.on('go', function(ev) tide.emit{ type = 'went' } end, { name = 'ok' })\n");
	rig_publish(&r, EV("g1", "go", ""));
	rig_wait(&r, "went", 1);
	rig_close(&r);
	line = line_with(r.logs, "consumer 'where' failed");
	ck_assert_msg(line != NULL, "%s", r.logs);
	HAS(line, "missing required attribute 'type'");
	HAS(line, "s.lua:3:");
}
END_TEST

START_TEST(emit_outside_a_handler)
{
	rig r;
	int rc;

	rc = rig_open(&r, LUA_HEAD "tide.emit{ type = 'too.early' }\n");
	ck_assert_int_eq(rc, TIDE_ESCRIPT);
	HAS(tide_errmsg(), "tide.emit can only be called from a handler");
	rig_close(&r);
}
END_TEST

START_TEST(max_emits_bounds_a_call)
{
	rig r;
	char out[32768];

	rig_init(&r);
	rig_config(&r, LUA_HEAD "tide.on('many', function(ev)\n"
				"  for i = 1, ev.data.n do tide.emit{ type = 'one', data = { of = "
				"ev.id, i = i } } end\n"
				"  if ev.data.last then tide.emit{ type = 'many.done' } end\n"
				"end, { name = 'many' })\n");
	rig_set(&r, "max_emits", "3");
	ck_assert_int_eq(rig_start(&r), TIDE_OK);
	/* two emits and the marker: 3, allowed; then 4, refused */
	rig_publish(&r, EV("m3", "many", ",\"data\":{\"n\":2,\"last\":true}"));
	rig_wait(&r, "many.done", 1);
	rig_publish(&r, EV("m4", "many", ",\"data\":{\"n\":4}"));
	rig_publish(&r, EV("m5", "many", ",\"data\":{\"n\":1,\"last\":true}"));
	rig_wait(&r, "many.done", 2);
	rig_close(&r);
	HAS(r.logs, "a handler may emit at most 3 events per call");
	rig_log(&r, out, sizeof out, "--type one");
	ck_assert_int_eq(count(out, "\"of\":\"m3\""), 2);
	ck_assert_int_eq(count(out, "\"of\":\"m4\""), 0);
	ck_assert_int_eq(count(out, "\"of\":\"m5\""), 1);
}
END_TEST

/* Handlers that emit what they react to make a chain of emits with no
 * end, which once filled the disk: a chain stops at max_emit_depth, with
 * a dead letter saying why; a chain within it is untouched. */
START_TEST(emit_chains_are_bounded)
{
	rig r;
	char out[65536];

	rig_init(&r);
	rig_config(&r, LUA_HEAD "tide.on('hop', function(ev)\n"
				"  local n = (ev.data and ev.data.n or 0) + 1\n"
				"  tide.emit{ type = 'hop', data = { n = n } }\n"
				"end, { name = 'loop', retries = 0 })\n");
	rig_set(&r, "max_emit_depth", "5");
	ck_assert_int_eq(rig_start(&r), TIDE_OK);
	rig_publish(&r, EV("h1", "hop", ""));
	rig_wait(&r, "hop", 6);
	for (int k = 0; k < 50; k++)
		rig_turn(&r);
	rig_close(&r);
	/* the published event and five emits, one after the other */
	rig_log(&r, out, sizeof out, "--type hop");
	ck_assert_int_eq(count(out, "\"type\":\"hop\""), 6);
	HAS(out, "\"n\":5");
	ck_assert_ptr_null(strstr(out, "\"n\":6"));
	HAS(r.logs, "this event would be the 6th emit in a chain from a published event "
		    "(at most 5: max_emit_depth)");
}
END_TEST

/* An emitted event obeys max_event_size like a published one, and a huge
 * value is refused without being copied first: twenty emits of a 10 MB
 * string once took twenty copies of it. */
START_TEST(emit_obeys_max_event_size)
{
	rig r;
	char out[32768];
	struct rusage before, after;

	rig_init(&r);
	rig_config(&r, LUA_HEAD
		   "local big = string.rep('x', 10 * 1024 * 1024)\n"
		   "tide.on('big', function(ev)\n"
		   "  local ok, err = pcall(tide.emit, { type = 'huge', data = big })\n"
		   "  for i = 1, 19 do pcall(tide.emit, { type = 'huge', data = { big } }) end\n"
		   "  tide.emit{ type = 'small', data = { said = tostring(err) } }\n"
		   "end, { name = 'big' })\n");
	rig_set(&r, "max_event_size", "64K");
	ck_assert_int_eq(rig_start(&r), TIDE_OK);
	getrusage(RUSAGE_SELF, &before);
	rig_publish(&r, EV("b1", "big", ""));
	rig_wait(&r, "small", 1);
	getrusage(RUSAGE_SELF, &after);
	rig_close(&r);
	rig_log(&r, out, sizeof out, "--type small");
	HAS(out, "the event is larger than the max_event_size limit of 64 KiB");
	rig_log(&r, out, sizeof out, "--type huge");
	ck_assert_int_eq(count(out, "huge"), 0);
	ck_assert_msg(after.ru_maxrss - before.ru_maxrss < 100 * 1024,
		      "the process grew by %ld KiB", after.ru_maxrss - before.ru_maxrss);
}
END_TEST

/* ------------------------------------------------------------------------
 * Failing handlers
 * ------------------------------------------------------------------------ */

START_TEST(errors_are_isolated)
{
	rig r;
	char out[32768];

	rig_open_ok(&r,
		    LUA_HEAD "tide.on('work', function(ev)\n"
			     "  if ev.data.fail == 'error' then error('boom ' .. ev.id) end\n"
			     "  if ev.data.fail == 'index' then return ev.data.missing.field end\n"
			     "  if ev.data.fail == 'table' then error({ code = 1 }) end\n"
			     "  tide.emit{ type = 'worked', data = { id = ev.id } }\n"
			     "end, { name = 'worker' })\n"
			     "tide.on('work', function(ev)\n"
			     "  tide.emit{ type = 'other.saw', data = { id = ev.id } }\n"
			     "end, { name = 'other' })\n");
	{
		/* clang-format off */
		static const char batch[] =
			EV("w1", "work", ",\"data\":{}") "\n"
			EV("w2", "work", ",\"data\":{\"fail\":\"error\"}") "\n"
			EV("w3", "work", ",\"data\":{\"fail\":\"index\"}") "\n"
			EV("w4", "work", ",\"data\":{\"fail\":\"table\"}") "\n"
			EV("w5", "work", ",\"data\":{}") "\n";
		/* clang-format on */
		rig_publish_n(&r, batch, 5);
	}
	rig_wait(&r, "worked", 2);
	rig_wait(&r, "other.saw", 5);
	rig_close(&r);

	/* the message says which consumer, which event, the attempt, and
	 * script:line; a failed event is retried, not dropped */
	HAS(r.logs, "1 consumer 'worker' failed on event 2 (type work, id w2), attempt 1 of 4: ");
	HAS(line_with(r.logs, "failed on event 2"), "s.lua:3: boom w2");
	HAS(line_with(r.logs, "failed on event 3"),
	    "s.lua:4: attempt to index a nil value (field 'missing')");
	HAS(line_with(r.logs, "failed on event 4"), "(error object is a table value)");
	/* the traceback goes to the debug level */
	HAS(r.logs, "stack traceback:");

	rig_log(&r, out, sizeof out, "--type worked");
	ck_assert_int_eq(count(out, "\n"), 2);
	HAS(out, "\"id\":\"w1\"");
	HAS(out, "\"id\":\"w5\"");
	rig_log(&r, out, sizeof out, "--type other.saw");
	ck_assert_int_eq(count(out, "\n"), 5);
}
END_TEST

/* ------------------------------------------------------------------------
 * Subscriptions
 * ------------------------------------------------------------------------ */

START_TEST(patterns_exact_prefix_all)
{
	rig r;
	char out[32768];

	rig_open_ok(
		&r, LUA_HEAD
		"local function seen(name)\n"
		"  return function(ev) tide.emit{ type = 'seen.' .. name, data = ev.type } end\n"
		"end\n"
		"tide.on('order.placed', seen('exact'), { name = 'exact' })\n"
		"tide.on('order.*', seen('prefix'), { name = 'prefix' })\n"
		"local all = seen('all')\n"
		"tide.on('*', function(ev)\n"
		"  if not ev.type:find('^seen%.') then all(ev) end\n"
		"end, { name = 'all' })\n");
	{
		/* clang-format off */
		static const char batch[] =
			EV("1", "order.placed", "") "\n"
			EV("2", "order.shipped", "") "\n"
			EV("3", "order.placed.v2", "") "\n"
			EV("4", "orders.x", "") "\n"
			EV("5", "order", "") "\n"
			EV("6", "other", "") "\n"
			EV("7", "end", "") "\n";
		/* clang-format on */
		rig_publish_n(&r, batch, 7);
	}
	rig_wait(&r, "seen.all", 7);
	rig_close(&r);
	rig_log(&r, out, sizeof out, "--type 'seen.*'");
	ck_assert_int_eq(count(out, "\"type\":\"seen.exact\""), 1);
	HAS(out, "\"type\":\"seen.exact\",\"correlationid\":\"1\"");
	ck_assert_int_eq(count(out, "\"type\":\"seen.prefix\""), 3);
	HAS(out, "\"type\":\"seen.prefix\",\"correlationid\":\"1\"");
	HAS(out, "\"type\":\"seen.prefix\",\"correlationid\":\"2\"");
	HAS(out, "\"type\":\"seen.prefix\",\"correlationid\":\"3\"");
	ck_assert_int_eq(count(out, "\"type\":\"seen.all\""), 7);
}
END_TEST

START_TEST(bad_subscriptions_fail_the_load)
{
	static const struct {
		const char *script, *says;
	} cases[] = {
		{ LUA_HEAD "tide.on('or*der', function() end, { name = 'x' })\n",
		  "pattern 'or*der' must be an event type, a prefix ending in \".*\", or \"*\"" },
		{ LUA_HEAD "tide.on('order*', function() end, { name = 'x' })\n",
		  "pattern 'order*'" },
		{ LUA_HEAD "tide.on('', function() end, { name = 'x' })\n", "pattern ''" },
		{ LUA_HEAD "tide.on('a', function() end, { name = 'dup' })\n"
			   "tide.on('b', function() end, { name = 'dup' })\n",
		  "a consumer named 'dup' already exists" },
		{ LUA_HEAD "tide.on('a', function() end, { name = 'has space' })\n",
		  "consumer name 'has space' must be 1 to 200 printable characters without "
		  "spaces" },
		/* a NUL would cut the name C sees: "cp\0x" and "cp\0y" became one */
		{ LUA_HEAD "tide.on('a', function() end, { name = 'cp\\0x' })\n",
		  "tide.on: the consumer name must not contain \"\\0\"" },
		{ LUA_HEAD "tide.on('a', function() end, { name = 5 })\n",
		  "option 'name' must be a string" },
		{ LUA_HEAD "tide.on('a\\0b', function() end, { name = 'n' })\n",
		  "the pattern must not contain" },
		{ LUA_HEAD "tide.projection('p\\0q', { on = { a = function() end } })\n",
		  "tide.projection: the name must not contain" },
		{ LUA_HEAD "tide.on('a', function() end, { name = 'n', from = 'middle' })\n",
		  "from must be \"beginning\" or \"end\"" },
		{ LUA_HEAD "tide.on('a', 'not a function')\n", "function expected" },
		{ LUA_HEAD "tide.on('a', function() end, { name = 'rig-watch' })\n",
		  "a consumer named 'rig-watch' already exists (C)" },
		{ LUA_HEAD "local x = \n", "s.lua:" },
		{ LUA_HEAD "error('at load')\n", "s.lua:2: at load" },
	};

	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		rig r;
		int rc = rig_open(&r, cases[i].script);
		ck_assert_msg(rc == TIDE_ESCRIPT, "case %zu: open returned %d", i, rc);
		ck_assert_msg(strstr(tide_errmsg(), cases[i].says) != NULL,
			      "case %zu: '%s' not in '%s'", i, cases[i].says, tide_errmsg());
		rig_close(&r);
	}
}
END_TEST

START_TEST(load_errors_name_the_script_line)
{
	/* With many scripts, "pattern 'or*der' must be ..." alone does not
	 * say which tide.on to fix: the message should carry script:line, as
	 * every other load error does. */
	rig r;

	ck_assert_int_eq(rig_open(&r, LUA_HEAD "\ntide.on('or*der', function() end)\n"),
			 TIDE_ESCRIPT);
	HAS(tide_errmsg(), "pattern 'or*der'");
	HAS(tide_errmsg(), "s.lua:3:");
	rig_close(&r);
}
END_TEST

START_TEST(on_inside_a_handler_fails)
{
	rig r;

	rig_open_ok(
		&r, LUA_HEAD
		"tide.on('x', function(ev)\n"
		"  tide.on('y', function() end, { name = 'late' })\n"
		"end, { name = 'x' })\n"
		"tide.on('x', function(ev) tide.emit{ type = 'x.done' } end, { name = 'x2' })\n");
	rig_publish(&r, EV("x1", "x", ""));
	rig_wait(&r, "x.done", 1);
	rig_close(&r);
	HAS(line_with(r.logs, "consumer 'x' failed"),
	    "tide.on must be called while the script loads");
}
END_TEST

/* ------------------------------------------------------------------------
 * Checkpoints: from, catching up, restarts
 * ------------------------------------------------------------------------ */

#define HISTORY_SCRIPT \
	LUA_HEAD \
	"tide.on('hist', function(ev) tide.emit{ type = 'late.saw', data = ev.id } end,\n" \
	"        { name = 'late', from = 'beginning' })\n" \
	"tide.on('hist', function(ev) tide.emit{ type = 'fresh.saw', data = ev.id } end,\n" \
	"        { name = 'fresh' })\n" \
	"tide.on('hist', function(ev) tide.emit{ type = 'ended.saw', data = ev.id } end,\n" \
	"        { name = 'ended', from = 'end' })\n"

START_TEST(from_beginning_catches_up)
{
	rig r;
	char out[32768];

	/* history first, with no script at all */
	rig_init(&r);
	rig_config(&r, NULL);
	ck_assert_int_eq(rig_start(&r), TIDE_OK);
	rig_publish_n(&r, EV("h1", "hist", "") "\n" EV("h2", "hist", "") "\n" EV("h3", "hist", ""),
		      3);
	ck_assert_int_eq(r.stored, 3);
	rig_close(&r);

	/* then the script: "beginning" handles h1..h3, "end" (the default and
	 * explicit) only what comes after it */
	rig_config(&r, HISTORY_SCRIPT);
	ck_assert_int_eq(rig_start(&r), TIDE_OK);
	rig_wait(&r, "late.saw", 3);
	rig_publish(&r, EV("h4", "hist", ""));
	rig_wait(&r, "late.saw", 4);
	rig_wait(&r, "fresh.saw", 1);
	rig_wait(&r, "ended.saw", 1);
	rig_close(&r);
	rig_log(&r, out, sizeof out, "--type late.saw");
	ck_assert_int_eq(count(out, "\n"), 4);
	for (int i = 1; i <= 4; i++) {
		char want[32];
		snprintf(want, sizeof want, "\"data\":\"h%d\"", i);
		HAS(out, want);
	}
	rig_log(&r, out, sizeof out, "--type fresh.saw");
	ck_assert_int_eq(count(out, "\n"), 1);
	HAS(out, "\"data\":\"h4\"");
	rig_log(&r, out, sizeof out, "--type ended.saw");
	ck_assert_int_eq(count(out, "\n"), 1);
	HAS(out, "\"data\":\"h4\"");
}
END_TEST

START_TEST(restart_resumes_at_the_checkpoint)
{
	/* one 'tock' per handled 'tick': after a restart the old ticks are
	 * not handled again, the new one is */
	static const char script[] = LUA_HEAD
		"tide.on('tick', function(ev) tide.emit{ type = 'tock', data = ev.id } end,\n"
		"        { name = 'counter', from = 'beginning' })\n";
	rig r;
	char out[16384];

	rig_init(&r);
	rig_config(&r, script);
	ck_assert_int_eq(rig_start(&r), TIDE_OK);
	rig_publish_n(&r, EV("t1", "tick", "") "\n" EV("t2", "tick", "") "\n" EV("t3", "tick", ""),
		      3);
	rig_wait(&r, "tock", 3);
	rig_close(&r);
	ck_assert_int_eq(th_checkpoint(r.data, "counter"), 6);

	rig_config(&r, script);
	ck_assert_int_eq(rig_start(&r), TIDE_OK);
	rig_publish(&r, EV("t4", "tick", ""));
	rig_wait(&r, "tock", 4);
	rig_close(&r);
	/* and once more, with nothing new: nothing is handled */
	rig_config(&r, script);
	ck_assert_int_eq(rig_start(&r), TIDE_OK);
	rig_publish(&r, EV("t5", "tock.not", ""));
	rig_wait(&r, "tock.not", 1);
	rig_close(&r);

	rig_log(&r, out, sizeof out, "--type tock");
	ck_assert_int_eq(count(out, "\n"), 4);
	for (int i = 1; i <= 4; i++) {
		char want[32];
		snprintf(want, sizeof want, "\"data\":\"t%d\"", i);
		ck_assert_int_eq(count(out, want), 1);
	}
	ck_assert_int_eq(th_checkpoint(r.data, "counter"), 9);
}
END_TEST

/* ------------------------------------------------------------------------
 * The sandbox
 * ------------------------------------------------------------------------ */

/* Path of the Lua shared library this binary runs with, for a real C
 * module to refuse; "" if it cannot be found. */
static const char *
lua_library(void)
{
	static char path[1024];
	Dl_info info;

	if (dladdr((void *)lua_newstate, &info) != 0 && info.dli_fname != NULL &&
	    strstr(info.dli_fname, ".so") != NULL)
		snprintf(path, sizeof path, "%s", info.dli_fname);
	return path;
}

START_TEST(sandbox_at_load)
{
	/* The whole check runs as the script loads: any failed assert fails
	 * the open, and tide_errmsg() says which. */
	rig r;
	char script[8192], link[700];
	int rc;

	rig_init(&r);
	/* A real C library exporting luaopen_base, reachable as a module. */
	snprintf(link, sizeof link, "%s/base.so", r.dir);
	if (*lua_library())
		ck_assert_int_eq(symlink(lua_library(), link), 0);
	else
		th_write(r.dir, "base.so", "not a library");
	th_write(r.dir, "helper.lua", "return { answer = 42 }\n");
	snprintf(script, sizeof script,
		 LUA_HEAD
		 "assert(io == nil, 'io is open')\n"
		 "assert(debug == nil, 'debug is open')\n"
		 "assert(dofile == nil, 'dofile is there')\n"
		 "assert(loadfile == nil, 'loadfile is there')\n"
		 "assert(os.execute == nil, 'os.execute is there')\n"
		 "assert(os.getenv == nil, 'os.getenv is there')\n"
		 "assert(os.exit == nil and os.remove == nil and os.rename == nil, 'os is whole')\n"
		 "assert(type(os.time) == 'function' and type(os.clock) == 'function'\n"
		 "       and type(os.date) == 'function', 'time functions missing')\n"
		 "assert(package.loadlib == nil, 'package.loadlib is there')\n"
		 /* the unrestricted libraries must not be reachable another way */
		 "assert(package.loaded.io == nil, 'package.loaded.io')\n"
		 "assert(package.loaded.debug == nil, 'package.loaded.debug')\n"
		 /* bytecode */
		 "local fn, err = load(string.dump(function() return 1 end))\n"
		 "assert(fn == nil and tostring(err):find('binary'), 'binary chunk: ' .. "
		 "tostring(err))\n"
		 "fn, err = load(string.dump(function() return 1 end), 'x', 'b')\n"
		 "assert(fn == nil, 'binary chunk with mode b')\n"
		 "assert(load('return 1 + 1')() == 2, 'text chunks load')\n"
		 "assert(load('return x', 'c', 't', { x = 5 })() == 5, 'load with env')\n"
		 /* C modules: even with a cpath pointing at a real one */
		 "package.cpath = '%s/?.so'\n"
		 "local ok, e = pcall(require, 'base')\n"
		 "assert(not ok and tostring(e):find(\"module 'base' not found\"), 'C module: ' .. "
		 "tostring(e))\n"
		 "assert(not tostring(e):find('base.so'), 'C searcher still looks: ' .. "
		 "tostring(e))\n"
		 /* Lua modules: beside the script, and tide.path from lua/ */
		 "assert(require('helper').answer == 42, 'module beside the script')\n"
		 "local path = require 'tide.path'\n"
		 "assert(path.get({ data = { a = { 1, { b = 'x' } } } }, 'data.a.2.b') == 'x', "
		 "'tide.path')\n"
		 "assert(path.get({ data = {} }, 'data.a.b') == nil, 'tide.path missing step')\n",
		 r.dir);
	rig_config(&r, script);
	rc = rig_start(&r);
	ck_assert_msg(rc == TIDE_OK, "%s", tide_errmsg());
	rig_close(&r);
}
END_TEST

START_TEST(sandbox_os_not_reachable_through_require)
{
	/* The global os is cut down to its time functions, but require('os')
	 * and package.loaded.os must not hand out the whole library. */
	rig r;
	int rc;

	rc = rig_open(
		&r, LUA_HEAD
		"assert(os.execute == nil, 'os.execute')\n"
		"assert(package.loaded.os.execute == nil, 'package.loaded.os is the whole os "
		"library')\n"
		"assert(require('os').execute == nil, 'require(\"os\") is the whole os library')\n"
		"assert(require('os').getenv == nil, 'require(\"os\").getenv')\n");
	ck_assert_msg(rc == TIDE_OK, "%s", tide_errmsg());
	rig_close(&r);
}
END_TEST

START_TEST(sandbox_allow_os)
{
	rig r;
	int rc;

	rig_init(&r);
	rig_config(&r, LUA_HEAD "assert(type(os.getenv) == 'function', 'os.getenv missing')\n"
				"assert(os.getenv('TIDE_TEST_ALLOW') == 'yes', 'getenv')\n"
				"assert(io == nil, 'allowing os opened io')\n");
	rig_set(&r, "allow", "os");
	setenv("TIDE_TEST_ALLOW", "yes", 1);
	rc = rig_start(&r);
	ck_assert_msg(rc == TIDE_OK, "%s", tide_errmsg());
	rig_close(&r);
	/* and io when asked for */
	rig_init(&r);
	rig_config(&r,
		   LUA_HEAD "assert(type(io) == 'table' and type(io.open) == 'function', 'io')\n");
	rig_set(&r, "allow", "io");
	rc = rig_start(&r);
	ck_assert_msg(rc == TIDE_OK, "%s", tide_errmsg());
	rig_close(&r);
	/* anything else is refused by the configuration */
	ck_assert_int_eq(tide_config_new(&r.cfg), TIDE_OK);
	ck_assert_int_eq(tide_config_set(r.cfg, "allow", "ffi"), TIDE_ECONFIG);
	HAS(tide_errmsg(), "allow: 'ffi'");
	tide_config_destroy(r.cfg);
}
END_TEST

#define SPIN_SCRIPT \
	LUA_HEAD \
	"tide.on('spin', function(ev)\n" \
	"  local m = ev.data\n" \
	"  if m == 'loop' then while true do end\n" \
	"  elseif m == 'pcall' then while true do pcall(function() while true do end end) end\n" \
	"  elseif m == 'xpcall' then\n" \
	"    while true do xpcall(function() while true do end end, function(e) return e end) " \
	"end\n" \
	"  elseif m == 'handler' then\n" \
	"    xpcall(error, function() while true do end end)\n" \
	"  elseif m == 'coroutine' then\n" \
	"    while true do coroutine.resume(coroutine.create(function() while true do end end)) " \
	"end\n" \
	"  elseif m == 'errors' then while true do pcall(error, 'x') end\n" \
	"  elseif m == 'recursion' then local function f() return 1 + f() end f()\n" \
	"  end\n" \
	"  tide.emit{ type = 'spun', data = m }\n" \
	"end, { name = 'spinner' })\n" \
	"tide.on('spin', function(ev) tide.emit{ type = 'bystander', data = ev.data } end,\n" \
	"        { name = 'bystander' })\n"

START_TEST(instruction_budget_stops_loops)
{
	static const char *const modes[] = { "loop", "pcall", "xpcall", "coroutine", "errors" };
	rig r;
	char msg[4096] = "", out[16384];
	int n = 0;
	size_t nm = sizeof modes / sizeof *modes;

	rig_init(&r);
	rig_config(&r, SPIN_SCRIPT);
	rig_set(&r, "instruction_budget", "2000000");
	ck_assert_int_eq(rig_start(&r), TIDE_OK);
	for (size_t i = 0; i < nm; i++)
		n += snprintf(msg + n, sizeof msg - (size_t)n,
			      "{\"specversion\":\"1.0\",\"id\":\"%s\",\"source\":\"/t\","
			      "\"type\":\"spin\",\"data\":\"%s\"}\n",
			      modes[i], modes[i]);
	n += snprintf(msg + n, sizeof msg - (size_t)n, "%s\n",
		      EV("fine", "spin", ",\"data\":\"ok\""));
	rig_publish_n(&r, msg, (int)nm + 1);
	rig_wait(&r, "spun", 1);
	rig_wait(&r, "bystander", (int)nm + 1);
	rig_close(&r);

	/* every loop was stopped, and the engine went on */
	for (size_t i = 0; i < nm; i++) {
		char failed[128];
		snprintf(failed, sizeof failed, "consumer 'spinner' failed on event %zu", i + 1);
		ck_assert_msg(line_with(r.logs, failed) != NULL, "%s not stopped:\n%s", modes[i],
			      r.logs);
	}
	rig_log(&r, out, sizeof out, "--type spun");
	ck_assert_int_eq(count(out, "\n"), 1);
	HAS(out, "\"data\":\"ok\"");
	/* and the message says why */
	for (size_t i = 0; i < nm; i++) {
		char failed[128];
		const char *line;
		snprintf(failed, sizeof failed, "consumer 'spinner' failed on event %zu", i + 1);
		line = line_with(r.logs, failed);
		ck_assert_msg(
			strstr(line,
			       "handler exceeded its instruction budget (2000000 instructions)") !=
				NULL,
			"%s: %s", modes[i], line);
	}
}
END_TEST

START_TEST(budget_reaches_message_handlers)
{
	/* xpcall's message handler runs while the budget error is raised, from
	 * inside the count hook, where Lua runs no hooks: a handler that loops
	 * there would never be stopped.  The budget must end it all the same. */
	rig r;

	rig_init(&r);
	rig_config(&r, SPIN_SCRIPT);
	rig_set(&r, "instruction_budget", "2000000");
	ck_assert_int_eq(rig_start(&r), TIDE_OK);
	rig_publish(&r, EV("h1", "spin", ",\"data\":\"handler\""));
	rig_publish(&r, EV("h2", "spin", ",\"data\":\"ok\""));
	rig_wait(&r, "spun", 1);
	rig_close(&r);
	ck_assert_ptr_nonnull(line_with(r.logs, "consumer 'spinner' failed on event 1"));
}
END_TEST

START_TEST(deep_recursion_is_an_error)
{
	rig r;

	rig_open_ok(&r, SPIN_SCRIPT);
	rig_publish(&r, EV("r1", "spin", ",\"data\":\"recursion\""));
	rig_publish(&r, EV("r2", "spin", ",\"data\":\"ok\""));
	rig_wait(&r, "spun", 1);
	rig_close(&r);
	HAS(line_with(r.logs, "consumer 'spinner' failed on event 1"), "stack overflow");
}
END_TEST

/* One value pushed by tidei_lua_push_val() under a script's protection. */
typedef struct push_job {
	const uint8_t *p;
	size_t n;
	int rc;
	size_t len; /* of the table pushed */
} push_job;

static int
l_push_job(lua_State *L)
{
	push_job *j = lua_touserdata(L, 1);
	tidei_vreader r = { j->p, j->p + j->n };

	j->rc = tidei_lua_push_val(L, &r);
	j->len = j->rc == 0 ? lua_rawlen(L, -1) : 0;
	return 0;
}

/* A stored value comes from disk: the counts it claims must not make the
 * reader set aside more than its bytes can hold.  Each level of an array
 * claiming 2^20 elements once took 16 MB before its first element was
 * read, and a few such bytes ran a state out of memory. */
START_TEST(stored_values_claim_only_their_bytes)
{
	static const struct {
		const char *p;
		size_t n;
	} claims[] = {
		{ "\xdd\x00\x0f\xff\xff\x01", 6 },
		{ "\xdf\x00\x0f\xff\xff\xa1k\x01", 8 },
		{ "\xdd\x00\x0f\xff\xff\xdd\x00\x0f\xff\xff\xdd\x00\x0f\xff\xff", 15 },
		{ "\x91\xde\xff\xff\xa1k\x01", 7 },
	};
	tidei_script_opts o = { .memory_limit = 4u << 20 };
	tidei_host host;
	tidei_script *s;
	char err[TIDEI_ERRLEN];
	tidei_buf big = { 0 };
	push_job j;

	memset(&host, 0, sizeof host);
	ck_assert_int_eq(tidei_script_new(&s, &o, &host, err), TIDE_OK);
	for (size_t k = 0; k < sizeof claims / sizeof *claims; k++) {
		j.p = (const uint8_t *)claims[k].p;
		j.n = claims[k].n;
		ck_assert_msg(tidei_script_protect(s, l_push_job, &j, err, NULL) == TIDE_OK,
			      "claim %zu: %s", k, err);
		ck_assert_int_eq(j.rc, -1);
	}
	/* what the bytes do hold is read as before */
	tidei_val_array(&big, 100000);
	for (int k = 0; k < 100000; k++)
		tidei_val_int(&big, k);
	j.p = big.p;
	j.n = big.len;
	ck_assert_int_eq(tidei_script_protect(s, l_push_job, &j, err, NULL), TIDE_OK);
	ck_assert_int_eq(j.rc, 0);
	ck_assert_uint_eq(j.len, 100000);
	tidei_buf_free(&big);
	tidei_script_destroy(s);
}
END_TEST

START_TEST(memory_limit_stops_runaway_tables)
{
	rig r;
	char out[16384];

	rig_init(&r);
	rig_config(&r, LUA_HEAD
		   "tide.on('hog', function(ev)\n"
		   "  local t = {}\n"
		   "  for i = 1, 1e9 do t[i] = string.rep('x', 100) .. i end\n"
		   "end, { name = 'hog' })\n"
		   "tide.on('after', function(ev)\n"
		   "  tide.emit{ type = 'alive', data = { big = string.rep('y', 1e6):len() } }\n"
		   "end, { name = 'after' })\n");
	rig_set(&r, "memory_limit", "8M");
	ck_assert_int_eq(rig_start(&r), TIDE_OK);
	rig_publish(&r, EV("big", "hog", ""));
	rig_publish(&r, EV("a1", "after", ""));
	rig_wait(&r, "alive", 1);
	rig_close(&r);
	HAS(line_with(r.logs, "consumer 'hog' failed on event 1"), "memory");
	rig_log(&r, out, sizeof out, "--type alive");
	HAS(out, "\"big\":1000000");
}
END_TEST

START_TEST(memory_kept_full_across_calls)
{
	/* A handler may fill the state to the brim and catch the error, so
	 * the next call starts with no memory to spare.  Building that call's
	 * event table must then fail as an error of the call (reported), not
	 * abort the process; the engine goes on committing. */
	rig r;
	char out[8192];

	rig_init(&r);
	rig_config(&r, LUA_HEAD
		   "hog = {}\n"
		   "tide.on('fill', function(ev)\n"
		   "  pcall(function() while true do hog[#hog + 1] = string.rep('y', 64) .. #hog "
		   "end end)\n"
		   /* then the crumbs: small tables, no resize to leave room */
		   "  pcall(function() while true do chain = { chain } end end)\n"
		   "end, { name = 'filler' })\n"
		   "tide.on('after', function(ev) tide.emit{ type = 'alive', data = ev.id } end,\n"
		   "        { name = 'after' })\n");
	rig_set(&r, "memory_limit", "4M");
	ck_assert_int_eq(rig_start(&r), TIDE_OK);
	rig_publish(&r, EV("f1", "fill", ""));
	rig_publish(&r, EV("a1", "after", ""));
	rig_wait(&r, "after", 1);
	rig_publish(&r, EV("p1", "ping", ""));
	rig_wait(&r, "ping", 1);
	rig_close(&r);
	rig_log(&r, out, sizeof out, "--type alive");
	/* a1 was either handled or failed for lack of memory, and said so */
	if (strstr(out, "\"data\":\"a1\"") == NULL)
		HAS(line_with(r.logs, "consumer 'after' failed on event 2"), "memory");
}
END_TEST

/* ------------------------------------------------------------------------
 * tide.json, tide.null, tide.array, print
 * ------------------------------------------------------------------------ */

START_TEST(json_helpers)
{
	rig r;
	int rc;

	rc = rig_open(
		&r, LUA_HEAD
		"local J = tide.json\n"
		"local function eq(got, want, what)\n"
		"  assert(got == want, what .. ': got ' .. tostring(got) .. ', want ' .. "
		"tostring(want))\n"
		"end\n"
		"eq(J.encode({ 1, 2, tide.null, 4 }), '[1,2,null,4]', 'null in an array')\n"
		"eq(J.encode(tide.array{}), '[]', 'tide.array{}')\n"
		"eq(J.encode(tide.array()), '[]', 'tide.array()')\n"
		"eq(J.encode({}), '{}', 'empty table')\n"
		"eq(J.encode({ a = { b = { 1, 2.5, 'x', true, false } } }), "
		"'{\"a\":{\"b\":[1,2.5,\"x\",true,false]}}', 'nested')\n"
		"eq(J.encode(2.0), '2.0', 'float stays float')\n"
		"eq(J.encode(math.mininteger), '-9223372036854775808', 'min integer')\n"
		"eq(J.encode('q\"\\n'), '\"q\\\\\"\\\\n\"', 'escapes')\n"
		"eq(J.encode(tide.null), 'null', 'null')\n"
		"eq(J.encode({ [1] = 'a', [2] = 'b' }), '[\"a\",\"b\"]', 'sequence')\n"
		"eq(J.encode({ [2] = 'b' }), '{\"2\":\"b\"}', 'sparse is an object')\n"
		"eq(J.encode({ [10] = 1, [2] = 2, x = 3, [1.5] = 4, [-3] = 5, ab = 6, a = 7 }),\n"
		"   '{\"-3\":5,\"1.5\":4,\"10\":1,\"2\":2,\"a\":7,\"ab\":6,\"x\":3}', "
		"'keys in text order')\n"
		"local big = {}\n"
		"for i = 1, 100 do big['k' .. (1000 + i)] = i end\n"
		"local enc = J.encode(big)\n"
		"eq(enc:sub(1, 18), '{\"k1001\":1,\"k1002\"', 'a large map, sorted')\n"
		"eq(select(2, enc:gsub(':', '')), 100, 'a large map, every key')\n"
		"local ok, e = pcall(J.encode, { f = print })\n"
		"assert(not ok and e:find('a function cannot be encoded'), tostring(e))\n"
		"ok, e = pcall(J.encode, 0/0)\n"
		"assert(not ok and e:find('NaN'), tostring(e))\n"
		"local t = {}; t.self = t\n"
		"ok, e = pcall(J.encode, t)\n"
		"assert(not ok and e:find('cycle'), 'cycle: ' .. tostring(e))\n"
		"local v = "
		"J.decode('{\"a\":[1,null,3],\"b\":null,\"c\":2.0,\"d\":9007199254740993}')\n"
		"eq(#v.a, 3, 'array length'); eq(v.a[2], tide.null, 'null element')\n"
		"eq(v.b, nil, 'null member'); eq(math.type(v.c), 'float', 'c')\n"
		"eq(math.type(v.d), 'integer', 'd'); eq(v.d, 9007199254740993, 'd value')\n"
		"local bad, msg = J.decode('{\"a\":')\n"
		"assert(bad == nil and type(msg) == 'string' and #msg > 0, 'decode error')\n"
		"for _, s in ipairs{ '[1,null,3]', '{\"a\":{\"b\":[true,false]}}', '\"x\"', "
		"'1.5',\n"
		"                    '-9223372036854775808', '[[0],[1]]' } do\n"
		"  eq(J.encode(J.decode(s)), s, 'round trip of ' .. s)\n"
		"end\n");
	ck_assert_msg(rc == TIDE_OK, "%s", tide_errmsg());
	rig_close(&r);
}
END_TEST

START_TEST(json_roundtrip_keeps_empty_arrays)
{
	/* decode then encode must give back what came in: an empty JSON array
	 * is not an empty object, in tide.json and in event data that a
	 * handler forwards unchanged. */
	rig r;
	char out[8192];

	rig_open_ok(&r, LUA_HEAD "tide.on('fwd', function(ev)\n"
				 "  tide.emit{ type = 'fwd.copy', data = ev.data }\n"
				 "  tide.emit{ type = 'fwd.json', data = "
				 "tide.json.encode(tide.json.decode('{\"items\":[]}')) }\n"
				 "end, { name = 'fwd' })\n");
	rig_publish(&r, EV("f1", "fwd", ",\"data\":{\"items\":[],\"n\":1}"));
	rig_wait(&r, "fwd.json", 1);
	rig_close(&r);
	rig_log(&r, out, sizeof out, "--type 'fwd.*'");
	HAS(line_with(out, "fwd.copy"), "\"items\":[]");
	HAS(line_with(out, "fwd.json"), "\"data\":\"{\\\"items\\\":[]}\"");
}
END_TEST

START_TEST(print_goes_to_the_log)
{
	rig r;

	rig_open_ok(&r, LUA_HEAD "print('loading', 1, nil, true)\n"
				 "tide.on('p', function(ev)\n"
				 "  print('handling', ev.id, 2.5)\n"
				 "  tide.log('via tide.log', ev.seq)\n"
				 "  tide.emit{ type = 'p.done' }\n"
				 "end, { name = 'printer' })\n");
	HAS(r.logs, "2 [");
	HAS(r.logs, "s.lua] loading\t1\tnil\ttrue\n");
	rig_publish(&r, EV("e1", "p", ""));
	rig_wait(&r, "p.done", 1);
	rig_close(&r);
	HAS(r.logs, "2 [printer] handling\te1\t2.5\n");
	HAS(r.logs, "2 [printer] via tide.log\t1\n");
}
END_TEST

/* Log messages quote what producers and scripts chose; their control
 * characters are escaped, so an id or an error cannot forge a log line or
 * reach a terminal as an escape sequence. */
START_TEST(log_lines_cannot_be_forged)
{
	rig r;

	rig_open_ok(&r, LUA_HEAD "tide.on('f', function(ev)\n"
				 "  print('two\\nlines')\n"
				 "  error('bad\\n2026-01-01T00:00:00Z error forged')\n"
				 "end, { name = 'forger', retries = 0 })\n"
				 "tide.on('f', function(ev) tide.emit{ type = 'f.done' } end,"
				 " { name = 'other' })\n");
	rig_publish(&r, "{\"specversion\":\"1.0\",\"id\":\"x\\n2026-01-01T00:00:00Z info "
			"fake\\u001b[31m\",\"source\":\"/t\",\"type\":\"f\"}");
	rig_wait(&r, "f.done", 1);
	rig_close(&r);
	HAS(r.logs, "[forger] two\\nlines\n");
	HAS(r.logs, "id x\\n2026-01-01T00:00:00Z info fake\\x1b[31m)");
	/* an error's first line is its message; the rest is its trace */
	HAS(r.logs, "s.lua:4: bad; it is in the dead letters");
	ck_assert_ptr_null(strstr(r.logs, "\n2026-01-01"));
	ck_assert_ptr_null(strstr(r.logs, "\x1b"));
}
END_TEST

Suite *
lua_suite(void)
{
	Suite *s = suite_create("lua");
	TCase *ev = tcase_create("event");
	TCase *emit = tcase_create("emit");
	TCase *fail = tcase_create("failures");
	TCase *sub = tcase_create("subscriptions");
	TCase *box = tcase_create("sandbox");
	TCase *json = tcase_create("json");
	TCase *hang = tcase_create("sandbox-hang");
	TCase *all[] = { ev, emit, fail, sub, box, json, hang };

	for (size_t i = 0; i < sizeof all / sizeof *all; i++) {
		tcase_add_checked_fixture(all[i], NULL, th_cleanup);
		/* each test runs engines and `tide log`; sanitizers slow both */
		tcase_set_timeout(all[i], 120);
	}
	/* a test that may hang on a bug: fail it soon */
	tcase_set_timeout(hang, 30);
	tcase_add_test(hang, budget_reaches_message_handlers);
	tcase_add_test(ev, emit_carries_causation);
	tcase_add_test(ev, event_table);
	tcase_add_test(ev, lazy_data_is_a_table);
	tcase_add_test(ev, integers_keep_64_bits);
	tcase_add_test(emit, emit_defaults_and_explicit);
	tcase_add_test(emit, correlation_chain);
	tcase_add_test(emit, invalid_emits_discard_the_call);
	tcase_add_test(emit, emit_errors_name_the_script_line);
	tcase_add_test(emit, emit_outside_a_handler);
	tcase_add_test(emit, max_emits_bounds_a_call);
	tcase_add_test(emit, emit_chains_are_bounded);
	tcase_add_test(emit, log_lines_cannot_be_forged);
	tcase_add_test(emit, emit_obeys_max_event_size);
	tcase_add_test(fail, errors_are_isolated);
	tcase_add_test(fail, on_inside_a_handler_fails);
	tcase_add_test(sub, patterns_exact_prefix_all);
	tcase_add_test(sub, bad_subscriptions_fail_the_load);
	tcase_add_test(sub, load_errors_name_the_script_line);
	tcase_add_test(sub, from_beginning_catches_up);
	tcase_add_test(sub, restart_resumes_at_the_checkpoint);
	tcase_add_test(box, sandbox_at_load);
	tcase_add_test(box, sandbox_os_not_reachable_through_require);
	tcase_add_test(box, sandbox_allow_os);
	tcase_add_test(box, instruction_budget_stops_loops);
	tcase_add_test(box, deep_recursion_is_an_error);
	tcase_add_test(box, memory_limit_stops_runaway_tables);
	tcase_add_test(box, stored_values_claim_only_their_bytes);
	tcase_add_test(box, memory_kept_full_across_calls);
	tcase_add_test(json, json_helpers);
	tcase_add_test(json, json_roundtrip_keeps_empty_arrays);
	tcase_add_test(json, print_goes_to_the_log);
	for (size_t i = 0; i < sizeof all / sizeof *all; i++)
		suite_add_tcase(s, all[i]);
	return s;
}
