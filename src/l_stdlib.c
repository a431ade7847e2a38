/*
 * l_stdlib.c - the standard library of a script's state, bounded.
 *
 * The count hook stops Lua code, not C: a library function that loops in
 * C (string.rep of an empty string 10^15 times, table.move of 10^12 nils)
 * runs to its end however long that takes, and the engine waits with it.
 * This module owns the replacements that script.c installs over the
 * libraries it opened, so that every such function pays for its work
 * through tidei_lstate_charge() (about one unit per Lua instruction's
 * worth), and is stopped by the instruction budget or the time limit:
 *
 *  - rewritten to charge as they go: string.rep (which also refuses an
 *    impossible result before doing anything), table.insert, table.remove,
 *    table.move, table.concat and table.unpack;
 *  - kept, with their work charged from their arguments or results: the
 *    original C function runs in the replacement's own call frame, so its
 *    errors still name the function the script called.  string.upper,
 *    lower, reverse, byte, char, format, pack, unpack, packsize and dump;
 *    the utf8 functions (utf8.codes's iterator too); tonumber; and
 *    table.sort, whose every comparison is charged;
 *  - setmetatable refuses a metatable with a __gc field: finalizers run
 *    with hooks off, and at lua_close on reload and shutdown, where nothing
 *    could stop one;
 *  - collectgarbage keeps the options that do not change the engine's
 *    collector, and charges a collection by the size of the heap;
 *  - when the configuration allows the debug library, debug.setmetatable
 *    refuses __gc as well, debug.sethook is refused (the hook enforces the
 *    limits) and so is debug.setupvalue on a C function (the replacements
 *    keep the originals there).  What else debug can do is the
 *    configuration's choice;
 *  - require (its searcher of Lua files) and package.searchpath open only
 *    regular files, without blocking on a FIFO or a device a script could
 *    name in package.path, read modules as text only (Lua's searcher would
 *    load bytecode) and charge their length.
 *
 * Pattern matching (find, match, gmatch, gsub) is l_pattern.c's.
 *
 * The rest of the library is bounded as Lua has it:
 *  - string.len, math.*, select, type, rawget, rawset, rawlen, next,
 *    pairs, ipairs, getmetatable, error, assert, the coroutine functions
 *    (resume, wrap and close are script.c's) and os.time/clock/difftime do
 *    a fixed amount of work per call;
 *  - string.sub, tostring, table.pack, print, os.date, load and `..` copy
 *    or build at most what the memory ceiling allows, and the allocator in
 *    script.c charges every large block (and load its chunk's length);
 *  - string.format refuses widths and precisions of more than two digits
 *    ("%99999d" is an invalid conversion), so each item but %s and %q is
 *    small, and the result is charged by its length;
 *  - results and arguments (string.byte, table.unpack, select) are
 *    bounded by the stack, at most about a million values;
 *  - comparing two long strings (==, <) is one instruction whose memcmp
 *    is bounded by the memory ceiling: the only work left uncharged.
 */
#include "config.h"

#include <fcntl.h>
#include <lauxlib.h>
#include <limits.h>
#include <lualib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "l_event.h"
#include "l_stdlib.h"
#include "lstate.h"

/* Bytes of a string scanned or transformed per unit charged. */
#define SCAN_BYTES 8
/* Bytes copied per unit charged (memcpy is several times faster). */
#define COPY_BYTES 64
/* Units per element a table function reads or writes (a lua_geti and a
 * lua_seti cost about what three instructions do), charged ELEM_CHUNK
 * elements at a time. */
#define ELEM_UNITS 3
#define ELEM_CHUNK 256
/* Heap bytes per unit charged for a collection, which visits them all. */
#define GC_BYTES 32
/* The longest string Lua's string library builds. */
#define MAX_STRING ((size_t)INT_MAX)

static void
charge_bytes(lua_State *L, size_t n, size_t per_unit)
{
	if (n >= per_unit)
		tidei_lstate_charge(L, n / per_unit);
}

/* Charge elements [k, k + ELEM_CHUNK) of @p n before they are done. */
static void
per_element(lua_State *L, lua_Unsigned k, lua_Unsigned n)
{
	if ((k & (ELEM_CHUNK - 1)) == 0)
		tidei_lstate_charge(L, ELEM_UNITS * (n - k < ELEM_CHUNK ? n - k : ELEM_CHUNK));
}

/* ------------------------------------------------------------------------
 * Original functions charged from their arguments or results
 * ------------------------------------------------------------------------ */

/* How a kept function's work is measured. */
enum cost {
	COST_ARG1_BYTES,   /* before: the length of argument 1, when a string */
	COST_NARGS,        /* before: one per argument */
	COST_RESULTS,      /* after: one per result */
	COST_RESULT_BYTES, /* after: the length of the string results */
	COST_NONE,         /* the replacement charges by itself */
};

/* The upvalue of a replacement: the function it stands for. */
typedef struct orig {
	lua_CFunction fn;
	int cost;
} orig;

static const orig *
orig_of(lua_State *L)
{
	return lua_touserdata(L, lua_upvalueindex(1));
}

/* Any kept function.  [-?, +?, e] */
static int
l_charged(lua_State *L)
{
	const orig *o = orig_of(L);
	int n, top;
	size_t bytes = 0;

	if (o->cost == COST_ARG1_BYTES && lua_type(L, 1) == LUA_TSTRING)
		charge_bytes(L, lua_rawlen(L, 1), SCAN_BYTES);
	else if (o->cost == COST_NARGS)
		tidei_lstate_charge(L, (uint64_t)lua_gettop(L));
	n = o->fn(L);
	if (o->cost == COST_RESULTS) {
		tidei_lstate_charge(L, (uint64_t)n);
	} else if (o->cost == COST_RESULT_BYTES) {
		top = lua_gettop(L);
		for (int i = top - n + 1; i <= top; i++)
			if (lua_type(L, i) == LUA_TSTRING)
				bytes += lua_rawlen(L, i);
		charge_bytes(L, bytes, SCAN_BYTES);
	}
	return n;
}

/* Replace field @p name of the table at @p lib by @p fn with the original
 * (a C function) as its upvalue.  Nothing happens if there is none. */
static void
replace(lua_State *L, int lib, const char *name, lua_CFunction fn, int cost)
{
	lua_CFunction was;
	orig *o;

	lua_getfield(L, lib, name);
	was = lua_tocfunction(L, -1);
	lua_pop(L, 1);
	if (was == NULL)
		return;
	o = lua_newuserdatauv(L, sizeof *o, 0);
	o->fn = was;
	o->cost = cost;
	lua_pushcclosure(L, fn, 1);
	lua_setfield(L, lib, name);
}

/* ------------------------------------------------------------------------
 * utf8: the scans are charged by how far they went
 * ------------------------------------------------------------------------ */

/* A position argument made absolute as utf8 does it (negative: from the
 * end), 0 when it is before the start. */
static lua_Integer
abs_pos(lua_Integer pos, size_t len)
{
	if (pos >= 0)
		return pos;
	if ((size_t)0 - (size_t)pos > len)
		return 0;
	return (lua_Integer)len + pos + 1;
}

/* Argument @p idx of @p nargs, an integer the original function has
 * checked already (its results are above the arguments now). */
static lua_Integer
checked_int(lua_State *L, int idx, int nargs, lua_Integer dflt)
{
	return idx > nargs || lua_isnil(L, idx) ? dflt : lua_tointeger(L, idx);
}

/* utf8.len(s [, i [, j [, lax]]])  [-(1..4), +(1|2), e] */
static int
l_utf8_len(lua_State *L)
{
	int nargs = lua_gettop(L);
	int n = orig_of(L)->fn(L);
	size_t len = lua_rawlen(L, 1);
	lua_Integer i = abs_pos(checked_int(L, 2, nargs, 1), len);
	lua_Integer j = abs_pos(checked_int(L, 3, nargs, -1), len);

	if (j >= i)
		charge_bytes(L, (size_t)(j - i + 1), SCAN_BYTES);
	return n;
}

/* utf8.offset(s, n [, i]): charged by the distance walked.  [-(2|3), +1, e] */
static int
l_utf8_offset(lua_State *L)
{
	int nargs = lua_gettop(L);
	int n = orig_of(L)->fn(L);
	size_t len = lua_rawlen(L, 1);
	lua_Integer from = abs_pos(
		checked_int(L, 3, nargs, lua_tointeger(L, 2) >= 0 ? 1 : (lua_Integer)len + 1), len);

	if (lua_isinteger(L, -1)) {
		lua_Integer to = lua_tointeger(L, -1);
		charge_bytes(L, (size_t)(to > from ? to - from : from - to), SCAN_BYTES);
	} else {
		charge_bytes(L, len, SCAN_BYTES);
	}
	return n;
}

/* utf8.codes's iterator: one step skips any run of continuation bytes.
 * [-2, +(0|2), e] */
static int
l_utf8_step(lua_State *L)
{
	size_t len = lua_type(L, 1) == LUA_TSTRING ? lua_rawlen(L, 1) : 0;
	lua_Unsigned at = (lua_Unsigned)lua_tointeger(L, 2);
	int n = orig_of(L)->fn(L);

	if (at < len) {
		lua_Unsigned next = n == 2 ? (lua_Unsigned)lua_tointeger(L, -2) - 1 : len;
		if (next > at)
			charge_bytes(L, (size_t)(next - at), SCAN_BYTES);
	}
	return n;
}

/* utf8.codes(s [, lax]): the original, with its iterator swapped for the
 * charged one (upvalue 2: strict, 3: lax).  [-(1|2), +3, e] */
static int
l_utf8_codes(lua_State *L)
{
	int lax = lua_toboolean(L, 2);
	int n = orig_of(L)->fn(L);

	lua_pushvalue(L, lua_upvalueindex(lax ? 3 : 2));
	lua_replace(L, -(n + 1)); /* over the original iterator, the first result */
	return n;
}

/* Install the charged utf8.codes: its iterators are found by calling the
 * original once for each mode. */
static void
open_utf8_codes(lua_State *L, int lib)
{
	lua_CFunction codes, step;
	orig *o;

	lua_getfield(L, lib, "codes");
	codes = lua_tocfunction(L, -1);
	if (codes == NULL) {
		lua_pop(L, 1);
		return;
	}
	o = lua_newuserdatauv(L, sizeof *o, 0); /* upvalue 1 */
	o->fn = codes;
	o->cost = COST_NONE;
	for (int lax = 0; lax <= 1; lax++) { /* upvalues 2 and 3 */
		lua_pushvalue(L, -2 - lax);
		lua_pushliteral(L, "");
		lua_pushboolean(L, lax);
		lua_call(L, 2, 3);
		step = lua_tocfunction(L, -3);
		lua_pop(L, 3);
		o = lua_newuserdatauv(L, sizeof *o, 0);
		o->fn = step;
		o->cost = COST_NONE;
		lua_pushcclosure(L, l_utf8_step, 1);
	}
	lua_pushcclosure(L, l_utf8_codes, 3);
	lua_setfield(L, lib, "codes");
	lua_pop(L, 1);
}

/* ------------------------------------------------------------------------
 * string.rep
 * ------------------------------------------------------------------------ */

/* string.rep(s, n [, sep]): an empty result costs nothing whatever n is
 * (Lua would loop n times copying nothing), an impossible one is refused
 * before anything is done, and the rest is charged by its length before
 * it is built.  [-(2|3), +1, e] */
static int
l_str_rep(lua_State *L)
{
	size_t l, lsep, total, done, period;
	const char *s = luaL_checklstring(L, 1, &l);
	lua_Integer n = luaL_checkinteger(L, 2);
	const char *sep = luaL_optlstring(L, 3, "", &lsep);
	luaL_Buffer b;
	char *p;

	if (n <= 0 || (l == 0 && (lsep == 0 || n == 1))) {
		lua_pushliteral(L, "");
		return 1;
	}
	period = l + lsep;
	if (period < l || period > MAX_STRING / (size_t)n)
		return luaL_error(L, "resulting string too large");
	total = (size_t)n * l + (size_t)(n - 1) * lsep;
	charge_bytes(L, total, COPY_BYTES);
	p = luaL_buffinitsize(L, &b, total);
	/* the result is the first `total` bytes of s..sep repeated: write one
	 * period, then double what is written */
	done = period < total ? period : total;
	memcpy(p, s, l < done ? l : done);
	if (done > l)
		memcpy(p + l, sep, done - l);
	while (done < total) {
		size_t k = done < total - done ? done : total - done;
		memcpy(p + done, p, k);
		done += k;
	}
	luaL_pushresultsize(&b, total);
	return 1;
}

/* ------------------------------------------------------------------------
 * The table library's loops, charged per element
 * ------------------------------------------------------------------------ */

#define NEED_R 1 /* __index */
#define NEED_W 2 /* __newindex */
#define NEED_L 4 /* __len */

static int
has_field(lua_State *L, const char *k)
{
	int has;

	lua_pushstring(L, k);
	has = lua_rawget(L, -2) != LUA_TNIL;
	lua_pop(L, 1);
	return has;
}

/* A table, or a value whose metatable has the metamethods that the
 * operation needs (what the table library accepts). */
static void
check_tab(lua_State *L, int arg, int need)
{
	int ok;

	if (lua_type(L, arg) == LUA_TTABLE)
		return;
	if (lua_getmetatable(L, arg)) {
		ok = (!(need & NEED_R) || has_field(L, "__index")) &&
		     (!(need & NEED_W) || has_field(L, "__newindex")) &&
		     (!(need & NEED_L) || has_field(L, "__len"));
		lua_pop(L, 1);
		if (ok)
			return;
	}
	luaL_checktype(L, arg, LUA_TTABLE); /* raises */
}

static lua_Integer
tab_len(lua_State *L, int arg, int need)
{
	check_tab(L, arg, need | NEED_L);
	return luaL_len(L, arg);
}

/* table.insert(t, [pos,] v)  [-(2|3), +0, e] */
static int
l_tab_insert(lua_State *L)
{
	lua_Integer end = (lua_Integer)((lua_Unsigned)tab_len(L, 1, NEED_R | NEED_W) + 1u);
	lua_Integer pos;

	switch (lua_gettop(L)) {
	case 2: pos = end; break;
	case 3:
		pos = luaL_checkinteger(L, 2);
		/* 1 <= pos <= end */
		luaL_argcheck(L, (lua_Unsigned)pos - 1u < (lua_Unsigned)end, 2,
			      "position out of bounds");
		for (lua_Integer i = end; i > pos; i--) { /* t[i] = t[i - 1] */
			per_element(L, (lua_Unsigned)(end - i), (lua_Unsigned)(end - pos));
			lua_geti(L, 1, i - 1);
			lua_seti(L, 1, i);
		}
		break;
	default: return luaL_error(L, "wrong number of arguments to 'insert'");
	}
	lua_seti(L, 1, pos);
	return 0;
}

/* table.remove(t [, pos]) -> t[pos]  [-(1|2), +1, e] */
static int
l_tab_remove(lua_State *L)
{
	lua_Integer size = tab_len(L, 1, NEED_R | NEED_W);
	lua_Integer pos = luaL_optinteger(L, 2, size), from;

	/* a given position must be in 1 .. size + 1 (Lua names argument 1) */
	if (pos != size)
		luaL_argcheck(L, (lua_Unsigned)pos - 1u <= (lua_Unsigned)size, 1,
			      "position out of bounds");
	lua_geti(L, 1, pos);
	for (from = pos; pos < size; pos++) { /* t[pos] = t[pos + 1] */
		per_element(L, (lua_Unsigned)(pos - from), (lua_Unsigned)(size - from));
		lua_geti(L, 1, pos + 1);
		lua_seti(L, 1, pos);
	}
	lua_pushnil(L);
	lua_seti(L, 1, pos);
	return 1;
}

/* table.move(a1, f, e, t [, a2]) -> a2  [-(4|5), +1, e] */
static int
l_tab_move(lua_State *L)
{
	lua_Integer f = luaL_checkinteger(L, 2);
	lua_Integer e = luaL_checkinteger(L, 3);
	lua_Integer t = luaL_checkinteger(L, 4);
	int dst = lua_isnoneornil(L, 5) ? 1 : 5;
	lua_Unsigned n;

	check_tab(L, 1, NEED_R);
	check_tab(L, dst, NEED_W);
	if (e >= f) {
		luaL_argcheck(L, f > 0 || e < LUA_MAXINTEGER + f, 3, "too many elements to move");
		n = (lua_Unsigned)(e - f) + 1u;
		luaL_argcheck(L, t <= LUA_MAXINTEGER - (lua_Integer)n + 1, 4,
			      "destination wrap around");
		/* upwards unless that would overwrite elements not yet moved */
		if (t > e || t <= f || (dst != 1 && !lua_compare(L, 1, dst, LUA_OPEQ))) {
			for (lua_Unsigned k = 0; k < n; k++) {
				per_element(L, k, n);
				lua_geti(L, 1, f + (lua_Integer)k);
				lua_seti(L, dst, t + (lua_Integer)k);
			}
		} else {
			for (lua_Unsigned k = 0; k < n; k++) {
				lua_Integer i = (lua_Integer)(n - 1u - k);
				per_element(L, k, n);
				lua_geti(L, 1, f + i);
				lua_seti(L, dst, t + i);
			}
		}
	}
	lua_pushvalue(L, dst);
	return 1;
}

static void
concat_field(lua_State *L, luaL_Buffer *b, lua_Integer i)
{
	lua_geti(L, 1, i);
	if (!lua_isstring(L, -1))
		luaL_error(L, "invalid value (%s) at index %I in table for 'concat'",
			   luaL_typename(L, -1), (LUAI_UACINT)i);
	luaL_addvalue(b);
}

/* table.concat(t [, sep [, i [, j]]])  [-(1..4), +1, e] */
static int
l_tab_concat(lua_State *L)
{
	luaL_Buffer b;
	lua_Integer last = tab_len(L, 1, NEED_R), first, i;
	size_t lsep;
	const char *sep = luaL_optlstring(L, 2, "", &lsep);
	lua_Unsigned n;

	first = i = luaL_optinteger(L, 3, 1);
	last = luaL_optinteger(L, 4, last);
	/* unsigned: the interval may span every integer */
	n = first <= last ? (lua_Unsigned)last - (lua_Unsigned)first + 1u : 0;
	luaL_buffinit(L, &b);
	for (; i < last; i++) {
		per_element(L, (lua_Unsigned)i - (lua_Unsigned)first, n);
		concat_field(L, &b, i);
		luaL_addlstring(&b, sep, lsep);
	}
	if (i == last) {
		per_element(L, (lua_Unsigned)i - (lua_Unsigned)first, n);
		concat_field(L, &b, i);
	}
	luaL_pushresult(&b);
	return 1;
}

/* table.unpack(t [, i [, j]]) -> t[i], ..., t[j]  [-(1..3), +n, e] */
static int
l_tab_unpack(lua_State *L)
{
	lua_Integer i = luaL_optinteger(L, 2, 1);
	lua_Integer e = luaL_opt(L, luaL_checkinteger, 3, luaL_len(L, 1));
	lua_Unsigned n;

	if (i > e)
		return 0;
	n = (lua_Unsigned)e - (lua_Unsigned)i; /* one less than the count */
	if (n >= (unsigned int)INT_MAX || !lua_checkstack(L, (int)++n))
		return luaL_error(L, "too many results to unpack");
	/* at most the stack's size (a million): charged in one go */
	tidei_lstate_charge(L, ELEM_UNITS * n);
	for (; i < e; i++)
		lua_geti(L, 1, i);
	lua_geti(L, 1, e);
	return (int)n;
}

/* The comparison table.sort makes, charged: the user's function (upvalue
 * 1) or `<`.  [-2, +1, e] */
static int
sort_less(lua_State *L)
{
	tidei_lstate_charge(L, 1);
	if (lua_isnil(L, lua_upvalueindex(1))) {
		lua_pushboolean(L, lua_compare(L, 1, 2, LUA_OPLT));
		return 1;
	}
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_insert(L, 1);
	lua_call(L, 2, 1);
	return 1;
}

/* table.sort(t [, comp]): Lua's own sort (its order of equal elements is
 * kept), with each comparison charged: a sort's comparisons are all its
 * work.  [-(1|2), +0, e] */
static int
l_tab_sort(lua_State *L)
{
	lua_Integer n = tab_len(L, 1, NEED_R | NEED_W);

	if (n > 1) {
		luaL_argcheck(L, n < INT_MAX, 1, "array too big");
		if (!lua_isnoneornil(L, 2))
			luaL_checktype(L, 2, LUA_TFUNCTION);
		lua_settop(L, 2);
		lua_pushcclosure(L, sort_less, 1); /* in place of the comparator */
		tidei_lstate_charge(L, (uint64_t)n);
	}
	return orig_of(L)->fn(L);
}

/* ------------------------------------------------------------------------
 * Finalizers and the collector
 * ------------------------------------------------------------------------ */

static int
has_gc(lua_State *L, int mt)
{
	int has;

	lua_pushliteral(L, "__gc");
	has = lua_rawget(L, mt) != LUA_TNIL;
	lua_pop(L, 1);
	return has;
}

#define GC_REFUSED \
	"a metatable with a __gc field is not allowed (finalizers run outside the " \
	"instruction budget and the time limit)"

/* setmetatable(t, mt) -> t  [-2, +1, e] */
static int
l_setmetatable(lua_State *L)
{
	int t = lua_type(L, 2);

	luaL_checktype(L, 1, LUA_TTABLE);
	luaL_argexpected(L, t == LUA_TNIL || t == LUA_TTABLE, 2, "nil or table");
	/* Lua marks a table for finalization when it gets a metatable with
	 * __gc (even false): a field added later does not count */
	if (t == LUA_TTABLE && has_gc(L, 2))
		return luaL_error(L, "setmetatable: " GC_REFUSED);
	if (luaL_getmetafield(L, 1, "__metatable") != LUA_TNIL)
		return luaL_error(L, "cannot change a protected metatable");
	tidei_lua_plain(L, 1);
	lua_settop(L, 2);
	lua_setmetatable(L, 1);
	return 1;
}

/* debug.setmetatable(v, mt) -> v  [-2, +1, e] */
static int
l_debug_setmetatable(lua_State *L)
{
	if (lua_type(L, 2) == LUA_TTABLE && has_gc(L, 2))
		return luaL_error(L, "debug.setmetatable: " GC_REFUSED);
	return orig_of(L)->fn(L);
}

/* debug.setupvalue(f, n, v): not of a C function, whose upvalues hold
 * what the replacements here stand for.  [-3, +(0|1), e] */
static int
l_debug_setupvalue(lua_State *L)
{
	if (lua_iscfunction(L, 1))
		return luaL_error(L, "debug.setupvalue: the upvalues of C functions are the "
				     "engine's");
	return orig_of(L)->fn(L);
}

/* debug.sethook(...)  [-?, +0, e] */
static int
l_debug_sethook(lua_State *L)
{
	return luaL_error(L, "debug.sethook is not allowed: the engine's hook enforces the "
			     "instruction budget and the time limit");
}

/* collectgarbage([opt [, arg]]): "collect", "step", "count" and
 * "isrunning".  Stopping the collector or changing its mode or pace would
 * change the engine's memory behaviour for every script in the state.
 * [-(0..2), +(0|1), e] */
static int
l_collectgarbage(lua_State *L)
{
	static const char *const refused[] = { "stop",     "restart",      "incremental",
					       "setpause", "generational", "setstepmul" };
	const char *opt = luaL_optstring(L, 1, "collect");

	for (size_t k = 0; k < sizeof refused / sizeof *refused; k++)
		if (strcmp(opt, refused[k]) == 0)
			return luaL_error(L,
					  "collectgarbage('%s') is not allowed: the engine manages "
					  "the collector",
					  opt);
	if (strcmp(opt, "collect") == 0 || strcmp(opt, "step") == 0)
		charge_bytes(L, (size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024, GC_BYTES);
	return orig_of(L)->fn(L);
}

/* ------------------------------------------------------------------------
 * Modules
 * ------------------------------------------------------------------------ */

/* Units per file require tries: an open(2), worth a few hundred
 * instructions. */
#define PROBE_UNITS 100

/* @p path opened for reading if it is a regular file.  Opening a FIFO
 * would wait for a writer, and reading a device may never end: neither
 * can be interrupted. */
static FILE *
open_regular(const char *path)
{
	struct stat st;
	FILE *f;
	int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);

	if (fd < 0)
		return NULL;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (f = fdopen(fd, "r")) == NULL) {
		close(fd);
		return NULL;
	}
	return f;
}

/* Find module @p name along @p path ("a/?.lua;b/?.lua"), as Lua does:
 * push the name of the first regular file that exists and return 1, or
 * push "no file 'a/x.lua'\n\tno file ..." and return 0.  [-0, +1, e] */
static int
search_path(lua_State *L, const char *name, const char *path, const char *sep, const char *dirsep)
{
	luaL_Buffer miss;
	const char *t, *end;
	int found = 0;

	if (*sep != '\0' && strchr(name, *sep) != NULL)
		name = luaL_gsub(L, name, sep, dirsep);
	luaL_buffinit(L, &miss);
	for (t = path; !found; t = end + 1) {
		FILE *f;
		end = strchr(t, ';');
		if (end == NULL)
			end = t + strlen(t);
		/* a path may be long, and each try is a system call */
		tidei_lstate_charge(L, (uint64_t)(end - t) / 8 + PROBE_UNITS);
		lua_pushstring(L, luaL_bufflen(&miss) > 0 ? "\n\tno file '" : "no file '");
		lua_pushlstring(L, t, (size_t)(end - t));
		luaL_gsub(L, lua_tostring(L, -1), "?", name);
		lua_remove(L, -2);
		if ((f = open_regular(lua_tostring(L, -1))) != NULL) {
			fclose(f);
			found = 1;
			break;
		}
		/* the buffer's rules: what is added is on top, the buffer below */
		lua_concat(L, 2);
		luaL_addvalue(&miss);
		luaL_addchar(&miss, '\'');
		if (*end == '\0')
			break;
	}
	if (found) {
		lua_replace(L, -3); /* the file name over the unfinished message */
		lua_pop(L, 1);
		return 1;
	}
	luaL_pushresult(&miss);
	return 0;
}

/* package.searchpath(name, path [, sep [, rep]])  [-(2..4), +(1|2), e] */
static int
l_searchpath(lua_State *L)
{
	if (search_path(L, luaL_checkstring(L, 1), luaL_checkstring(L, 2),
			luaL_optstring(L, 3, "."), luaL_optstring(L, 4, "/")))
		return 1;
	luaL_pushfail(L);
	lua_insert(L, -2);
	return 2;
}

/* Reads a module for lua_load, a buffer at a time, charging each; the
 * first line is skipped if it starts with '#' (after a UTF-8 byte order
 * mark), as luaL_loadfile does, its newline kept for the line numbers. */
typedef struct reader {
	FILE *f;
	int first;    /* nothing read yet */
	int skipping; /* in a first line that starts with '#' */
	int stopped;  /* a limit was met: the text is cut short */
	char buf[8192];
} reader;

static const char *
read_module(lua_State *L, void *ud, size_t *size)
{
	reader *r = ud;
	char *p;
	size_t n;

	for (;;) {
		if (r->stopped || (n = fread(r->buf, 1, sizeof r->buf, r->f)) == 0)
			return NULL;
		if (tidei_lstate_spend(L, n / 2 + 1) != TIDEI_FAIL_NONE) { /* as load() */
			r->stopped = 1;
			return NULL;
		}
		p = r->buf;
		if (r->first) {
			r->first = 0;
			if (n >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0)
				p += 3, n -= 3;
			r->skipping = n > 0 && *p == '#';
		}
		if (r->skipping) {
			char *nl = memchr(p, '\n', n);
			if (nl == NULL)
				continue; /* the whole buffer is the comment */
			r->skipping = 0;
			n -= (size_t)(nl - p);
			p = nl;
		}
		if (n > 0) {
			*size = n;
			return p;
		}
	}
}

/* The searcher of Lua modules along package.path (upvalue 1: package):
 * the loader and the file name, or a message.  [-1, +(1|2), e] */
static int
l_search_lua(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1), *file;
	reader *r;
	int rc;

	lua_getfield(L, lua_upvalueindex(1), "path");
	if (!lua_isstring(L, -1))
		return luaL_error(L, "'package.path' must be a string");
	if (!search_path(L, name, lua_tostring(L, -1), ".", "/"))
		return 1;
	file = lua_tostring(L, -1);
	r = lua_newuserdatauv(L, sizeof *r, 0); /* too big for the C stack of a deep require */
	memset(r, 0, sizeof *r);
	r->first = 1;
	if ((r->f = open_regular(file)) == NULL)
		return luaL_error(L, "cannot open module file '%s'", file);
	lua_pushfstring(L, "@%s", file);
	rc = lua_load(L, read_module, r, lua_tostring(L, -1), "t");
	fclose(r->f);
	if (r->stopped)
		tidei_lstate_charge(L, 0); /* raises the limit that was met */
	if (rc != LUA_OK)
		return luaL_error(L, "error loading module '%s' from file '%s':\n\t%s", name, file,
				  lua_tostring(L, -1));
	lua_pushstring(L, file);
	return 2;
}

/* Replace package.searchpath and the searcher of Lua files (the second;
 * the C ones were removed by script.c). */
static void
open_modules(lua_State *L)
{
	if (lua_getglobal(L, LUA_LOADLIBNAME) != LUA_TTABLE) {
		lua_pop(L, 1);
		return;
	}
	lua_pushcfunction(L, l_searchpath);
	lua_setfield(L, -2, "searchpath");
	if (lua_getfield(L, -1, "searchers") == LUA_TTABLE) {
		lua_pushvalue(L, -2);
		lua_pushcclosure(L, l_search_lua, 1);
		lua_rawseti(L, -2, 2);
	}
	lua_pop(L, 2);
}

/* ------------------------------------------------------------------------
 * Installing
 * ------------------------------------------------------------------------ */

void
tidei_lua_open_stdlib(lua_State *L)
{
	static const struct {
		const char *lib, *name;
		lua_CFunction fn;
		int cost;
	} kept[] = {
		{ LUA_GNAME, "tonumber", l_charged, COST_ARG1_BYTES },
		{ LUA_GNAME, "collectgarbage", l_collectgarbage, COST_NONE },
		{ LUA_STRLIBNAME, "upper", l_charged, COST_ARG1_BYTES },
		{ LUA_STRLIBNAME, "lower", l_charged, COST_ARG1_BYTES },
		{ LUA_STRLIBNAME, "reverse", l_charged, COST_ARG1_BYTES },
		{ LUA_STRLIBNAME, "byte", l_charged, COST_RESULTS },
		{ LUA_STRLIBNAME, "char", l_charged, COST_NARGS },
		{ LUA_STRLIBNAME, "format", l_charged, COST_RESULT_BYTES },
		{ LUA_STRLIBNAME, "pack", l_charged, COST_RESULT_BYTES },
		{ LUA_STRLIBNAME, "unpack", l_charged, COST_RESULTS },
		{ LUA_STRLIBNAME, "packsize", l_charged, COST_ARG1_BYTES },
		{ LUA_STRLIBNAME, "dump", l_charged, COST_RESULT_BYTES },
		{ LUA_TABLIBNAME, "sort", l_tab_sort, COST_NONE },
		{ LUA_UTF8LIBNAME, "char", l_charged, COST_NARGS },
		{ LUA_UTF8LIBNAME, "codepoint", l_charged, COST_RESULTS },
		{ LUA_UTF8LIBNAME, "len", l_utf8_len, COST_NONE },
		{ LUA_UTF8LIBNAME, "offset", l_utf8_offset, COST_NONE },
		{ LUA_DBLIBNAME, "setmetatable", l_debug_setmetatable, COST_NONE },
		{ LUA_DBLIBNAME, "setupvalue", l_debug_setupvalue, COST_NONE },
	};
	static const struct {
		const char *lib, *name;
		lua_CFunction fn;
	} rewritten[] = {
		{ LUA_GNAME, "setmetatable", l_setmetatable },
		{ LUA_STRLIBNAME, "rep", l_str_rep },
		{ LUA_TABLIBNAME, "insert", l_tab_insert },
		{ LUA_TABLIBNAME, "remove", l_tab_remove },
		{ LUA_TABLIBNAME, "move", l_tab_move },
		{ LUA_TABLIBNAME, "concat", l_tab_concat },
		{ LUA_TABLIBNAME, "unpack", l_tab_unpack },
		{ LUA_DBLIBNAME, "sethook", l_debug_sethook },
	};

	/* a library that is not open (debug, mostly) is left alone */
	for (size_t k = 0; k < sizeof kept / sizeof *kept; k++) {
		if (lua_getglobal(L, kept[k].lib) == LUA_TTABLE)
			replace(L, lua_gettop(L), kept[k].name, kept[k].fn, kept[k].cost);
		lua_pop(L, 1);
	}
	for (size_t k = 0; k < sizeof rewritten / sizeof *rewritten; k++) {
		if (lua_getglobal(L, rewritten[k].lib) == LUA_TTABLE) {
			lua_pushcfunction(L, rewritten[k].fn);
			lua_setfield(L, -2, rewritten[k].name);
		}
		lua_pop(L, 1);
	}
	if (lua_getglobal(L, LUA_UTF8LIBNAME) == LUA_TTABLE)
		open_utf8_codes(L, lua_gettop(L));
	lua_pop(L, 1);
	open_modules(L);
}
