/*
 * l_table.c - reference tables for rules: a CSV or JSON file beside the
 * script, read once while the script loads (tide.table).
 *
 *   local merchants = tide.table("merchants.csv", { key = "id" })
 *   -- merchants["m42"] -> { id = "m42", country = "FR", risk = 0.3 }
 *   local limits = tide.table("limits.json")
 *
 * CSV: the first line names the columns; fields may be quoted ("" is a
 * quote inside a quoted field, which may also hold commas and line
 * breaks); lines end with LF or CRLF.  A field that reads as a number
 * becomes one unless `raw = true`; an empty field is absent from its row.
 * Without `key` the result is an array of rows; with it, a table from
 * that column's value to the row (a repeated value is an error: lookups
 * would silently see the last one).  JSON: the file's value as
 * tide.json.decode gives it.
 */
#include "config.h"

#include <errno.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "l_event.h"
#include "l_table.h"

/* Files larger than this are refused: a table is for lookups. */
#define TABLE_MAX ((size_t)256 << 20)

typedef struct csv {
	const char *p, *end;
	size_t line;
	const char *file;
} csv;

/* Read one field into a pushed string; *last set at the end of a line.
 * Returns 0, or -1 at the end of the text.  [-0, +1, e] */
static int
csv_field(lua_State *L, csv *c, int *last)
{
	luaL_Buffer b;

	*last = 0;
	if (c->p >= c->end)
		return -1;
	luaL_buffinit(L, &b);
	if (*c->p == '"') {
		size_t at = c->line;
		c->p++;
		for (;;) {
			if (c->p >= c->end)
				return luaL_error(L, "%s: line %d: a quoted field is not closed",
						  c->file, (int)at);
			if (*c->p == '"') {
				if (c->p + 1 < c->end && c->p[1] == '"') {
					luaL_addchar(&b, '"');
					c->p += 2;
					continue;
				}
				c->p++;
				break;
			}
			if (*c->p == '\n')
				c->line++;
			luaL_addchar(&b, *c->p++);
		}
	} else {
		while (c->p < c->end && *c->p != ',' && *c->p != '\n' &&
		       !(*c->p == '\r' && c->p + 1 < c->end && c->p[1] == '\n'))
			luaL_addchar(&b, *c->p++);
	}
	if (c->p < c->end && *c->p == ',') {
		c->p++;
	} else if (c->p >= c->end || *c->p == '\n' || *c->p == '\r') {
		if (c->p < c->end && *c->p == '\r')
			c->p++;
		if (c->p < c->end)
			c->p++;
		c->line++;
		*last = 1;
	} else {
		return luaL_error(L,
				  "%s: line %d: a quoted field must be followed by ',' or the end "
				  "of the line",
				  c->file, (int)c->line);
	}
	luaL_pushresult(&b);
	return 0;
}

/* Push the field's value: a number when it reads as one (unless raw), a
 * string, or nil when empty.  Pops the string.  [-1, +1, -] */
static void
csv_value(lua_State *L, int raw)
{
	size_t n;
	const char *s = lua_tolstring(L, -1, &n);

	if (n == 0) {
		lua_pop(L, 1);
		lua_pushnil(L);
		return;
	}
	if (!raw && lua_stringtonumber(L, s) == n + 1) {
		lua_remove(L, -2);
		return;
	}
}

/* Parse CSV text into a table (array, or by key column @p key).
 * [-0, +1, e] */
static void
parse_csv(lua_State *L, const char *file, const char *text, size_t len, const char *key, int raw)
{
	csv c = { text, text + len, 1, file };
	int ncol = 0, last = 0, cols, rows, keycol = 0, nrow = 0;

	/* the header */
	lua_newtable(L);
	cols = lua_gettop(L);
	while (!last && csv_field(L, &c, &last) == 0)
		lua_rawseti(L, cols, ++ncol);
	if (ncol == 0)
		luaL_error(L, "%s is empty: its first line must name the columns", file);
	for (int i = 1; i <= ncol && key != NULL; i++) {
		lua_rawgeti(L, cols, i);
		if (strcmp(lua_tostring(L, -1), key) == 0)
			keycol = i;
		lua_pop(L, 1);
	}
	if (key != NULL && keycol == 0)
		luaL_error(L, "%s: no column is named '%s'", file, key);
	lua_newtable(L);
	rows = lua_gettop(L);
	while (c.p < c.end) {
		int col = 0;
		size_t line = c.line;
		if (*c.p == '\n' || (*c.p == '\r' && c.p + 1 < c.end && c.p[1] == '\n')) {
			c.p += *c.p == '\r' ? 2 : 1; /* an empty line */
			c.line++;
			continue;
		}
		lua_newtable(L);
		last = 0;
		while (!last && csv_field(L, &c, &last) == 0) {
			if (++col > ncol)
				luaL_error(L, "%s: line %d has more fields than the %d columns",
					   file, (int)line, ncol);
			csv_value(L, raw);
			if (col == keycol) {
				if (lua_isnil(L, -1))
					luaL_error(L, "%s: line %d: the key '%s' is empty", file,
						   (int)line, key);
				lua_pushvalue(L, -1);
				lua_insert(L, -3); /* key below the row */
			}
			lua_rawgeti(L, cols, col);
			lua_insert(L, -2);
			lua_rawset(L, -3);
		}
		if (keycol != 0) {
			if (col < keycol)
				luaL_error(L, "%s: line %d: the key '%s' is missing", file,
					   (int)line, key);
			lua_pushvalue(L, -2);
			if (lua_rawget(L, rows) != LUA_TNIL)
				luaL_error(L, "%s: line %d: key '%s' is repeated", file, (int)line,
					   luaL_tolstring(L, -3, NULL));
			lua_pop(L, 1);
			lua_rawset(L, rows);
		} else {
			lua_rawseti(L, rows, ++nrow);
		}
	}
	lua_remove(L, cols);
}

/* Read the whole file into a pushed string.  [-0, +1, e] */
static void
read_file(lua_State *L, const char *path, const char *shown)
{
	FILE *f = fopen(path, "rb");
	luaL_Buffer b;
	size_t total = 0, n;

	if (f == NULL)
		luaL_error(L, "cannot open %s: %s", shown, strerror(errno));
	luaL_buffinit(L, &b);
	do {
		char *p = luaL_prepbuffer(&b);
		n = fread(p, 1, LUAL_BUFFERSIZE, f);
		luaL_addsize(&b, n);
		total += n;
		if (total > TABLE_MAX) {
			fclose(f);
			luaL_error(L, "%s is larger than %d MiB", shown, (int)(TABLE_MAX >> 20));
		}
	} while (n == LUAL_BUFFERSIZE);
	if (ferror(f)) {
		fclose(f);
		luaL_error(L, "cannot read %s", shown);
	}
	fclose(f);
	luaL_pushresult(&b);
}

static int
ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n >= m && strcmp(s + n - m, suffix) == 0;
}

int
tidei_lua_table(lua_State *L, const char *dir, int name, int opts)
{
	const char *file = luaL_checkstring(L, name), *key = NULL;
	char err[TIDEI_ERRLEN];
	int raw = 0;
	size_t len;
	const char *text;

	if (file[0] == '/' || strcmp(file, "..") == 0 || strncmp(file, "../", 3) == 0 ||
	    strstr(file, "/../") != NULL || ends_with(file, "/.."))
		return luaL_error(L, "'%s': a table is read from the script's directory or below",
				  file);
	if (!lua_isnoneornil(L, opts)) {
		luaL_checktype(L, opts, LUA_TTABLE);
		if (lua_getfield(L, opts, "key") != LUA_TNIL)
			key = luaL_checkstring(L, -1);
		raw = lua_getfield(L, opts, "raw") != LUA_TNIL && lua_toboolean(L, -1);
		lua_pop(L, 2);
	}
	lua_pushfstring(L, "%s/%s", dir, file);
	read_file(L, lua_tostring(L, -1), file);
	text = lua_tolstring(L, -1, &len);
	if (ends_with(file, ".json")) {
		tidei_buf b = { 0 };
		tidei_vreader r;
		if (tidei_json_decode(text, len, &b, err) != 0) {
			tidei_buf_free(&b);
			return luaL_error(L, "%s: %s", file, err);
		}
		r.p = b.p;
		r.end = b.p + b.len;
		if (tidei_lua_push_val(L, &r) != 0) {
			tidei_buf_free(&b);
			return luaL_error(L, "%s: out of memory", file);
		}
		tidei_buf_free(&b);
	} else if (ends_with(file, ".csv")) {
		parse_csv(L, file, text, len, key, raw);
	} else {
		return luaL_error(L, "'%s': a table is a .csv or a .json file", file);
	}
	return 1;
}
