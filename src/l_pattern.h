/*
 * l_pattern.h - Lua 5.4's pattern matching (string.find, string.match,
 * string.gmatch, string.gsub) with its work charged to the running call's
 * instruction budget, for a script's state.
 */
#ifndef TIDE_L_PATTERN_H
#define TIDE_L_PATTERN_H

#include <lua.h>

/** Replace find, match, gmatch and gsub in the string library of @p L (a
 *  state made by tidei_script_new(); the string methods share the
 *  table).  [-0, +0, m] */
void tidei_lua_open_pattern(lua_State *L);

#endif
