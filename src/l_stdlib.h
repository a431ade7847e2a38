/*
 * l_stdlib.h - bounded replacements for the standard library's C functions
 * in a script's state: their work is charged to the call's instruction
 * budget (tidei_lstate_charge), finalizers are refused, and the collector
 * is the engine's.  Pattern matching is in l_pattern.h.
 */
#ifndef TIDE_L_STDLIB_H
#define TIDE_L_STDLIB_H

#include <lua.h>

/** Replace the functions of the base, string, table, utf8 (and debug, if
 *  opened) libraries already open in @p L, a state made by
 *  tidei_script_new().  [-0, +0, m] */
void tidei_lua_open_stdlib(lua_State *L);

#endif
