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

/** Metatable of the event objects handlers receive. */
#define TIDEI_EVENT_MT "tide.event"

/** Push @p ev as a tide.event object: a view whose fields are decoded
 *  from the record when read.  It is valid until tidei_lua_expire_event()
 *  (the end of the handler call); @p ev must stay valid until then.
 *  [-0, +1, m] */
void tidei_lua_push_event(lua_State *L, const struct tide_event *ev);

/** Expire the event object at @p idx: later use raises an error.
 *  [-0, +0, -] */
void tidei_lua_expire_event(lua_State *L, int idx);

/** Push @p ev as a plain table with every attribute, the data and Tide's
 *  fields (a copy that may be kept).  [-0, +1, m] */
void tidei_lua_push_event_table(lua_State *L, const struct tide_event *ev);

/** Register the tide.event metatable.  [-0, +0, m] */
void tidei_lua_open_event(lua_State *L);

/** Push one encoded value; JSON null inside arrays becomes tide.null (a
 *  light userdata NULL), null in maps leaves the key out.  Returns 0, or
 *  -1 (nothing pushed) if the bytes are malformed.  [-0, +(0|1), m] */
int tidei_lua_push_val(lua_State *L, tidei_vreader *r);

/** Encode the Lua value at @p idx.  Tables with keys 1..n are arrays,
 *  others maps with string keys; tide.array marks an empty array.  Returns
 *  0, or -1 with the reason in @p err (TIDEI_ERRLEN bytes).  [-0, +0, m] */
int tidei_lua_to_val(lua_State *L, int idx, tidei_buf *out, char *err);

/** tidei_lua_to_val() that charges the walk to the running call (a state
 *  of script.c): a table that refers to one table many times walks far
 *  longer than its size.  -1 also when a limit was passed (@p err names
 *  it; it is the call's failure now).  [-0, +0, m] */
int tidei_lua_to_val_charged(lua_State *L, int idx, tidei_buf *out, char *err);

/** Fill @p b from the table at @p idx (attribute name -> value), the
 *  data's walk charged as by tidei_lua_to_val_charged().  Returns 0 or -1
 *  with b->err set.  [-0, +0, m] */
int tidei_lua_to_event(lua_State *L, int idx, tidei_evb *b);

/** Make the table at @p idx plain if it is an event's lazy data (members
 *  decoded, no metatable), so that a script replacing its metatable keeps
 *  its members.  [-0, +0, e] */
void tidei_lua_plain(lua_State *L, int idx);

/** Registry key of the metatable that marks a table as a JSON array. */
#define TIDEI_ARRAY_MT "tide.array"

#endif
