/*
 * l_stats.h - statistics helpers for rule scripts: the table that the
 * `tide` module exposes as tide.stats.
 *
 * Every function is pure and deterministic, and keeps its state, if any,
 * in plain tables the script passes in (so that it can live in durable
 * rule state, which stores only plain tables, numbers and strings).
 */
#ifndef TIDE_L_STATS_H
#define TIDE_L_STATS_H

#include <lua.h>

/** Push a new table of the functions: erf, erfc, normal_cdf, zscore,
 *  ewma, ewmvar, welford, welford_var, welford_sd, median, mad.  Returns
 *  1, as a luaopen_ function does.  [-0, +1, m] */
int tidei_lua_open_stats(lua_State *L);

#endif
