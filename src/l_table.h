/*
 * l_table.h - tide.table(file [, {key=, raw=}]): a CSV or JSON file beside
 * the script, read into a Lua table while the script loads.
 */
#ifndef TIDE_L_TABLE_H
#define TIDE_L_TABLE_H

#include <lua.h>

/** Push the table of the file named at stack index @p name, relative to
 *  @p dir (absolute paths and ".." are refused), with the options at
 *  @p opts (may be none).  Raises on any error, naming the file and
 *  line. */
int tidei_lua_table(lua_State *L, const char *dir, int name, int opts);

#endif
