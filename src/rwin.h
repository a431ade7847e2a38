/*
 * rwin.h - the windows of a rule: their definitions, read from tide.on's
 * `windows` option, and each key's set of window states (agg.h), which
 * the rule keeps in the key's record.
 *
 *   windows = {
 *     h1  = { sliding = "1h", value = "data.amount", aggregates = { "count", "sum", "max" } },
 *     day = { tumbling = "1d", value = "data.amount" },
 *     n20 = { last = 20, value = "data.amount", aggregates = { "mean", "stddev" } },
 *     hop = { hopping = "1h", every = "10m", distinct = "data.merchant" },
 *     visit = { session = "30m" },
 *   }
 */
#ifndef TIDE_RWIN_H
#define TIDE_RWIN_H

#include <lua.h>
#include <stdint.h>

#include "agg.h"
#include "event.h"
#include "val.h"

typedef struct tidei_rwins tidei_rwins;

/** The window definitions of the option table at @p idx of @p L, or
 *  *out NULL when it has no `windows`.  Errors name the window and the
 *  field. */
int tidei_rwins_parse(tidei_rwins **out, lua_State *L, int idx, char *err);
void tidei_rwins_free(tidei_rwins *d);
/** How many windows are defined (the length of a key's set). */
size_t tidei_rwins_count(const tidei_rwins *d);
/** Window @p k's name, and in @p out what it is ("sliding 1h over
 *  data.amount: count, sum"). */
const char *tidei_rwins_describe(const tidei_rwins *d, size_t k, tidei_buf *out);

/** Free a key's set (@p w holds tidei_rwins_count() states or NULLs). */
void tidei_rwins_drop(const tidei_rwins *d, tidei_win **w);
/** Add event @p ev at time @p t to each window of the set (a window with
 *  a `value` path takes only events that have a number there).  Events
 *  too late for a window are left out of it.  TIDE_OK, or an error. */
int tidei_rwins_add(const tidei_rwins *d, tidei_win **w, const struct tide_event *ev, int64_t t,
		    char *err);
/** The clock at which the set's next window closes, INT64_MAX if none. */
int64_t tidei_rwins_next_close(const tidei_rwins *d, tidei_win *const *w);
/** 1 when no window of the set holds anything. */
int tidei_rwins_empty(const tidei_rwins *d, tidei_win *const *w);
/** Close what ends at @p watermark: @p fn gets each closed window's name
 *  and aggregates, window by window in definition order, each in end
 *  order. */
int tidei_rwins_advance(const tidei_rwins *d, tidei_win **w, int64_t watermark,
			void (*fn)(void *ud, const char *name, const tidei_agg *a), void *ud,
			char *err);

/** Append the set as a value: a map of window name to its bytes (empty
 *  windows left out). */
void tidei_rwins_encode(const tidei_rwins *d, tidei_win *const *w, tidei_buf *out);
/** Read such a map (at @p r) into a fresh set; a window whose definition
 *  changed since it was written starts empty.  TIDE_OK, TIDE_EIO
 *  (damaged) or TIDE_ENOMEM, with a message in @p err. */
int tidei_rwins_decode(const tidei_rwins *d, tidei_win **w, tidei_vreader *r, char *err);

/** Ask for the memory of windows @p w, soon to be used, ahead, at
 *  @p depth (tidei_win_prefetch). */
void tidei_rwins_prefetch(const tidei_rwins *d, tidei_win *const *w, int depth);
/** Push the aggregates of window @p name at time @p t as a table (count,
 *  sum, min, max, mean, variance, stddev, distinct, quantile, start, end:
 *  the fields asked for); or, with @p nfields > 0, the aggregates named by
 *  the strings at stack index @p fields on, each as a number (nil where
 *  the window has none): no table is made.  Raises for an unknown window
 *  or aggregate.  [-0, +max(1, nfields), e] */
void tidei_rwins_push(const tidei_rwins *d, tidei_win **w, lua_State *L, const char *name,
		      int64_t t, int fields, int nfields);
/** Push @p a as such a table, with the fields of window @p name's
 *  definition.  [-0, +1, m] */
void tidei_rwins_push_agg(const tidei_rwins *d, lua_State *L, const char *name, const tidei_agg *a);

#endif
