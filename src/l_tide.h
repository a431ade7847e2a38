/*
 * l_tide.h - the `tide` Lua module that scripts require: tide.on,
 * tide.emit, tide.log, tide.null, tide.array and tide.json.
 */
#ifndef TIDE_L_TIDE_H
#define TIDE_L_TIDE_H

#include <lua.h>

#include "lstate.h"

/** tide.delete: the address of this constant, as a light userdata. */
extern const char tidei_delete_marker;

/** Register `tide` in package.preload of @p L.  [-0, +0, m] */
void tidei_lua_open_tide(lua_State *L);

/** The host callbacks of the script that owns @p L (script.c). */
const tidei_host *tidei_lstate_host(lua_State *L);

/** The overrides tide.param(name, default) answers with: "name=value"
 *  strings, NULL-terminated (@p params may be NULL). */
void tidei_lua_set_params(lua_State *L, const char *const *params);

#endif
