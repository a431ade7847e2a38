/*
 * fuzz_value.c - libFuzzer target for stored values: the value encoding
 * (val.c), its JSON form (json.c), and its decoding onto a Lua stack
 * (l_event.c).  What comes back from disk must not be trusted, so the
 * input is taken, as it is, three ways:
 *
 *  1. An encoded value: walked item by item (tidei_val_next), skipped
 *     (tidei_val_skip), looked up as a map (tidei_val_find), written as
 *     JSON (tidei_json_encode) and pushed with tidei_lua_push_val() into
 *     a Lua state made by tidei_script_new(), under its protection and
 *     memory ceiling as the engine uses it, then encoded back from Lua
 *     (tidei_lua_to_val).
 *  2. A stored event record: tidei_event_decode(), tidei_event_json(),
 *     tide_event_attr(), and tidei_lua_push_event() with a script that
 *     reads every field (attributes, Tide's fields, extensions, data and
 *     each of its members before and after it turns into a plain table),
 *     ev:to_table(), pairs(ev) and tide.json.encode(ev); then the object
 *     is expired and must refuse to be read.
 *  3. An entry of a projection's state database (first byte: the name's
 *     length, second: the key format; then the key, at most 511 bytes,
 *     and the value) through tidei_pstate_check().
 *
 * Asserts, beyond no crash, leak, hang or undefined behaviour:
 *  - the reader never points outside its input and always moves on;
 *  - encoding to JSON succeeds exactly when pushing onto Lua does, and
 *    both end where tidei_val_skip() ends;
 *  - a value written as JSON whose strings are all UTF-8 and whose nesting
 *    JSON allows reads back (tidei_json_decode) to a value written as the
 *    same JSON;
 *  - tidei_lua_push_val() pushes one value, or nothing when it fails;
 *  - a state entry that checks gives a state inside its value.
 */
#include "config.h"

#include <lauxlib.h>
#include <lua.h>
#include <string.h>

#include "event.h"
#include "fuzz.h"
#include "json.h"
#include "l_event.h"
#include "pstate.h"
#include "script.h"
#include "tide.h"
#include "val.h"

/* The Lua state's budgets: enough for the script below on any input the
 * fuzzer makes, small enough that a claim of a huge table fails fast. */
#define MEMORY_LIMIT (64u << 20)
#define INSTRUCTIONS 10000000

/* What one walk of the input as a value found. */
typedef struct facts {
	int skip_ok, enc_ok, push_ok;
	const uint8_t *skip_end, *enc_end, *push_end;
	int depth;    /* containers open at once, at the deepest */
	int utf8;     /* every string and key of it is UTF-8 */
	int pushed;   /* values tidei_lua_push_val() left on the stack */
	int lua_done; /* the protected call got to its end */
} facts;

/* ------------------------------------------------------------------------
 * 1. The input as an encoded value
 * ------------------------------------------------------------------------ */

/* Every item, one after another, as a reader that knows no structure. */
static void
walk_items(const uint8_t *p, size_t n)
{
	tidei_vreader r = { p, p + n };
	tidei_vitem it;
	size_t items = 0;

	while (r.p < r.end) {
		const uint8_t *before = r.p;
		if (tidei_val_next(&r, &it) != 0) {
			FUZZ_CHECK(r.p >= p && r.p <= r.end, "reader outside its input");
			break;
		}
		FUZZ_CHECK(r.p > before && r.p <= r.end, "reader did not move on, or went past");
		if (it.type == TIDEI_V_STR || it.type == TIDEI_V_BIN)
			FUZZ_CHECK((const uint8_t *)it.u.s.p >= before &&
					   (const uint8_t *)it.u.s.p + it.u.s.n <= r.p,
				   "string outside its item");
		items++;
	}
	FUZZ_CHECK(items <= n, "%zu items in %zu bytes", items, n);
}

/* The nesting (containers open at once, at the deepest) and the UTF-8 of
 * the first value; -1 if it is malformed or deeper than the encoder goes.
 * @p depth is that of the value read next, 0 at the top. */
static int
scan(tidei_vreader *r, int depth, facts *f)
{
	tidei_vitem it;

	if (depth > TIDEI_JSON_MAXDEPTH + 4 || tidei_val_next(r, &it) != 0)
		return -1;
	if ((it.type == TIDEI_V_ARRAY || it.type == TIDEI_V_MAP) && depth + 1 > f->depth)
		f->depth = depth + 1;
	switch (it.type) {
	case TIDEI_V_STR:
		if (tidei_utf8_check(it.u.s.p, it.u.s.n, NULL) != NULL)
			f->utf8 = 0;
		return 0;
	case TIDEI_V_ARRAY:
		for (uint32_t k = 0; k < it.u.count; k++)
			if (scan(r, depth + 1, f) != 0)
				return -1;
		return 0;
	case TIDEI_V_MAP:
		for (uint32_t k = 0; k < it.u.count; k++) {
			tidei_vitem key;
			if (tidei_val_next(r, &key) != 0 || key.type != TIDEI_V_STR)
				return -1;
			if (tidei_utf8_check(key.u.s.p, key.u.s.n, NULL) != NULL)
				f->utf8 = 0;
			if (scan(r, depth + 1, f) != 0)
				return -1;
		}
		return 0;
	default: return 0;
	}
}

/* Write the value as JSON, read that back, write it again: the same text. */
static void
json_round_trip(const uint8_t *p, size_t n, facts *f)
{
	tidei_buf json = { 0 }, val = { 0 }, again = { 0 };
	tidei_vreader r = { p, p + n };
	char err[TIDEI_ERRLEN];

	f->enc_ok = tidei_json_encode(&json, &r) == 0;
	f->enc_end = r.p;
	FUZZ_CHECK(r.p >= p && r.p <= p + n, "reader outside its input");
	FUZZ_CHECK(!json.failed, "out of memory");
	if (!f->enc_ok)
		goto out;
	FUZZ_CHECK(f->skip_ok && f->enc_end == f->skip_end,
		   "written as JSON to %td, skipped (%d) to %td", f->enc_end - p, f->skip_ok,
		   f->skip_end - p);
	r.p = p;
	f->utf8 = 1;
	f->depth = 0;
	FUZZ_CHECK(scan(&r, 0, f) == 0 && r.p == f->enc_end, "scan and encoder disagree");
	if (!f->utf8 || f->depth > TIDEI_JSON_MAXDEPTH)
		goto out;
	FUZZ_CHECK(tidei_json_decode((const char *)json.p, json.len, &val, err) == 0,
		   "%.*s does not read back: %s", (int)json.len, (const char *)json.p, err);
	r.p = val.p;
	r.end = val.p + val.len;
	FUZZ_CHECK(tidei_json_encode(&again, &r) == 0 && r.p == r.end,
		   "%.*s read back is not one value", (int)json.len, (const char *)json.p);
	FUZZ_CHECK(again.len == json.len && memcmp(again.p, json.p, json.len) == 0,
		   "%.*s came back as %.*s", (int)json.len, (const char *)json.p, (int)again.len,
		   (const char *)again.p);
out:
	tidei_buf_free(&json);
	tidei_buf_free(&val);
	tidei_buf_free(&again);
}

/* A job for a protected call: the bytes, what happened, and a buffer that
 * must be freed whether or not the call raised. */
typedef struct job {
	const uint8_t *p;
	size_t n;
	facts *f;
	tidei_buf out;
	const struct tide_event *ev;
} job;

/* [-0, +0, e] under tidei_script_protect: push the value and encode it
 * back from Lua. */
static int
l_push(lua_State *L)
{
	job *j = lua_touserdata(L, 1);
	tidei_vreader r = { j->p, j->p + j->n };
	char err[TIDEI_ERRLEN];
	int top = lua_gettop(L);

	j->f->push_ok = tidei_lua_push_val(L, &r) == 0;
	j->f->push_end = r.p;
	j->f->pushed = lua_gettop(L) - top;
	if (j->f->push_ok && j->f->pushed == 1)
		(void)tidei_lua_to_val(L, -1, &j->out, err);
	j->f->lua_done = 1;
	return 0;
}

static tidei_script *
new_script(void)
{
	tidei_script_opts o = { .instruction_budget = INSTRUCTIONS, .memory_limit = MEMORY_LIMIT };
	tidei_host host;
	tidei_script *s;
	char err[TIDEI_ERRLEN];

	memset(&host, 0, sizeof host);
	FUZZ_CHECK(tidei_script_new(&s, &o, &host, err) == TIDE_OK, "%s", err);
	return s;
}

static void
as_value(tidei_script *s, const uint8_t *p, size_t n)
{
	facts f;
	job j = { p, n, &f, { 0 }, NULL };
	tidei_vreader r = { p, p + n };
	char err[TIDEI_ERRLEN], trace[TIDEI_ERRLEN];

	memset(&f, 0, sizeof f);
	walk_items(p, n);
	f.skip_ok = tidei_val_skip(&r) == 0;
	f.skip_end = r.p;
	FUZZ_CHECK(r.p >= p && r.p <= p + n, "reader outside its input");
	r.p = p;
	(void)tidei_val_find(&r, "id", 2);
	FUZZ_CHECK(r.p >= p && r.p <= p + n, "reader outside its input");
	json_round_trip(p, n, &f);

	if (tidei_script_protect(s, l_push, &j, err, trace) == TIDE_OK) {
		FUZZ_CHECK(f.lua_done, "the call returned early");
		FUZZ_CHECK(f.pushed == (f.push_ok ? 1 : 0), "pushed %d values (ok: %d)", f.pushed,
			   f.push_ok);
		FUZZ_CHECK(f.push_ok == f.enc_ok, "pushed onto Lua: %d, written as JSON: %d",
			   f.push_ok, f.enc_ok);
		FUZZ_CHECK(!f.push_ok || f.push_end == f.enc_end,
			   "pushed to %td, written as JSON to %td", f.push_end - p, f.enc_end - p);
	}
	tidei_buf_free(&j.out);
}

/* ------------------------------------------------------------------------
 * 2. The input as a stored event record
 * ------------------------------------------------------------------------ */

/* Reads everything an event object offers, each read on its own so that a
 * corrupt part (which raises) does not hide the rest. */
static const char reader_lua[] =
	"local ev = ...\n"
	"local tide = require 'tide'\n"
	"local names = { 'id', 'source', 'type', 'subject', 'time', 'datacontenttype',\n"
	"  'dataschema', 'correlationid', 'causationid', 'data', 'seq', 'version',\n"
	"  'recorded', 'specversion', 'to_table', 'nosuch', '' }\n"
	"local ok, t = pcall(ev.to_table, ev)\n"
	"if ok then for k in pairs(t) do names[#names + 1] = k end end\n"
	"for _, k in ipairs(names) do pcall(function() return ev[k] end) end\n"
	"pcall(function()\n"
	"  local d = ev.data\n"
	"  if type(d) ~= 'table' then return end\n"
	"  if ok and type(t.data) == 'table' then\n"
	"    for k in pairs(t.data) do local _ = d[k]; _ = d[k] end\n"
	"  end\n"
	"  local _ = d.nosuch\n"
	"  for k, v in pairs(d) do end\n"
	"  d.written = true\n"
	"end)\n"
	"pcall(function() for k, v in pairs(ev) do end end)\n"
	"pcall(tostring, ev)\n"
	"pcall(tide.json.encode, ev)\n"
	"pcall(function() return tide.json.encode(ev.data) end)\n"
	"pcall(function() ev.id = 'x' end)\n";

/* [-0, +0, -] a read of an expired event, which must raise */
static int
l_read_id(lua_State *L)
{
	lua_getfield(L, 1, "id");
	return 1;
}

/* [-0, +0, e] under tidei_script_protect */
static int
l_event(lua_State *L)
{
	job *j = lua_touserdata(L, 1);

	tidei_lua_push_event(L, j->ev);
	if (luaL_loadbuffer(L, reader_lua, sizeof reader_lua - 1, "=reader") != LUA_OK)
		return lua_error(L);
	lua_pushvalue(L, -2);
	lua_call(L, 1, 0);
	tidei_lua_expire_event(L, -1);
	lua_pushcfunction(L, l_read_id);
	lua_pushvalue(L, -2);
	FUZZ_CHECK(lua_pcall(L, 1, 1, 0) != LUA_OK, "an expired event was read");
	j->f->lua_done = 1;
	return 0;
}

static void
as_event(tidei_script *s, const uint8_t *p, size_t n)
{
	struct tide_event ev;
	tidei_buf scratch = { 0 }, json = { 0 };
	facts f;
	job j = { p, n, &f, { 0 }, &ev };
	char err[TIDEI_ERRLEN], trace[TIDEI_ERRLEN];
	const char *text;
	size_t len;

	memset(&ev, 0, sizeof ev);
	if (tidei_event_decode(&ev, p, n) != 0)
		return;
	FUZZ_CHECK(ev.rec == p && ev.rec_len == n, "the view is of another record");
	for (int a = 0; a < TIDEI_NATTR; a++)
		if (ev.attr[a] != NULL)
			FUZZ_CHECK((const uint8_t *)ev.attr[a] >= p &&
					   (const uint8_t *)ev.attr[a] + ev.len[a] < p + n &&
					   ev.attr[a][ev.len[a]] == '\0',
				   "attribute %d outside the record", a);
	FUZZ_CHECK(ev.ext == NULL || (ev.ext >= p && ev.ext + ev.ext_len <= p + n),
		   "extensions outside the record");
	FUZZ_CHECK(ev.data == NULL || (ev.data >= p && ev.data + ev.data_len <= p + n),
		   "data outside the record");
	ev.seq = 1;
	ev.scratch = &scratch;
	(void)tidei_event_json(&json, &ev);
	FUZZ_CHECK(!json.failed, "out of memory");
	for (int a = 0; a < TIDEI_NATTR; a++)
		(void)tide_event_attr(&ev, tidei_attr_names[a], &len);
	(void)tide_event_attr(&ev, "specversion", &len);
	(void)tide_event_attr(&ev, "nosuch", &len);
	if (tide_event_json(&ev, &text, &len) == TIDE_OK)
		FUZZ_CHECK(strlen(text) <= len, "JSON of %zu bytes, %zu before its NUL", len,
			   strlen(text));

	memset(&f, 0, sizeof f);
	if (tidei_script_protect(s, l_event, &j, err, trace) == TIDE_OK)
		FUZZ_CHECK(f.lua_done, "the call returned early");
	tidei_buf_free(&scratch);
	tidei_buf_free(&json);
}

/* ------------------------------------------------------------------------
 * 3. The input as an entry of the state database
 * ------------------------------------------------------------------------ */

static void
as_state(const uint8_t *p, size_t n)
{
	size_t nl, klen;
	uint32_t fmt;
	MDB_val k, v, state;
	tidei_vreader r;

	if (n < 2)
		return;
	nl = p[0] % (TIDEI_PROJ_NAME_MAX + 1);
	fmt = 1 + (p[1] & 1);
	p += 2;
	n -= 2;
	klen = n < 511 ? n : 511;
	k.mv_data = (void *)p;
	k.mv_size = klen;
	v.mv_data = (void *)(p + klen);
	v.mv_size = n - klen;
	if (tidei_pstate_check(&k, &v, nl, fmt, &state) != 0)
		return;
	FUZZ_CHECK((const uint8_t *)state.mv_data >= p + klen &&
			   (const uint8_t *)state.mv_data + state.mv_size <= p + n,
		   "state outside its value");
	r.p = state.mv_data;
	r.end = r.p + state.mv_size;
	(void)tidei_val_skip(&r);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	tidei_script *s = new_script();

	as_value(s, data, size);
	as_event(s, data, size);
	as_state(data, size);
	tidei_script_destroy(s);
	return 0;
}
