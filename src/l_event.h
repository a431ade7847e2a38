/*
 * l_event.h - events and values between C and Lua: the event table a
 * handler receives, encoded values to Lua and back, and the table given
 * to tide.emit turned into a validated event.
 */
#ifndef TIDE_L_EVENT_H
#define TIDE_L_EVENT_H

#include <lua.h>
#include <stdint.h>

#include "buf.h"
#include "event.h"

/** Caches the formatted second of the last `recorded` time, so building
 *  event tables does not call gmtime per event. */
typedef struct tidei_timecache {
	int64_t sec;
	char text[40];
} tidei_timecache;

/** Push @p ev as a new table.  [-0, +1, m] */
void tidei_lua_push_event(lua_State *L, const struct tide_event *ev, tidei_timecache *tc);

/** Push one encoded value; JSON null inside arrays becomes tide.null (a
 *  light userdata NULL), null in maps leaves the key out.  Returns 0, or
 *  -1 (nothing pushed) if the bytes are malformed.  [-0, +(0|1), m] */
int tidei_lua_push_val(lua_State *L, tidei_vreader *r);

/** Encode the Lua value at @p idx.  Tables with keys 1..n are arrays,
 *  others maps with string keys; tide.array marks an empty array.  Returns
 *  0, or -1 with the reason in @p err (TIDEI_ERRLEN bytes).  [-0, +0, m] */
int tidei_lua_to_val(lua_State *L, int idx, tidei_buf *out, char *err);

/** Fill @p b from the table at @p idx (attribute name -> value).  Returns 0
 *  or -1 with b->err set.  [-0, +0, m] */
int tidei_lua_to_event(lua_State *L, int idx, tidei_evb *b);

/** Registry key of the metatable that marks a table as a JSON array. */
#define TIDEI_ARRAY_MT "tide.array"

#endif
