/*
 * l_stats.c - tide.stats: statistics helpers for rule scripts (l_stats.h).
 *
 * Functions of numbers, and updates of running figures kept in plain
 * tables the script owns ({n=, mean=, m2=} for Welford's algorithm,
 * {mean=, var=} for exponentially weighted ones), so that they survive in
 * durable rule state.  Nothing here holds state of its own or reaches the
 * engine.
 *
 * Errors name the function ("tide.stats.zscore: sd must be a number").
 * Numbers are taken as Lua's arithmetic takes them: numeric strings
 * convert.  median and mad sort a copy of their list in memory from Lua's
 * allocator, so the memory ceiling bounds them; sorting is a heapsort,
 * O(n log n) whatever the order of the input.
 */
#include "config.h"

#include <lauxlib.h>
#include <math.h>

#include "l_stats.h"

/* Argument @p i as a number, or an error naming @p fn and @p what. */
static lua_Number
arg_number(lua_State *L, int i, const char *fn, const char *what)
{
	int ok;
	lua_Number v = lua_tonumberx(L, i, &ok);

	if (!ok)
		luaL_error(L, "tide.stats.%s: %s must be a number (got %s)", fn, what,
			   luaL_typename(L, i));
	return v;
}

static void
arg_table(lua_State *L, int i, const char *fn, const char *what)
{
	if (!lua_istable(L, i))
		luaL_error(L, "tide.stats.%s: %s must be a table (got %s)", fn, what,
			   luaL_typename(L, i));
}

/* A smoothing factor: 0 < alpha <= 1. */
static lua_Number
arg_alpha(lua_State *L, int i, const char *fn)
{
	lua_Number a = arg_number(L, i, fn, "alpha");

	if (!(a > 0 && a <= 1))
		luaL_error(L, "tide.stats.%s: alpha must be in (0, 1]", fn);
	return a;
}

/* Field @p k of the table at @p t as a number, @p dflt when absent. */
static lua_Number
field_number(lua_State *L, int t, const char *k, lua_Number dflt, const char *fn)
{
	lua_Number v = dflt;
	int ok = 1;

	if (lua_getfield(L, t, k) != LUA_TNIL)
		v = lua_tonumberx(L, -1, &ok);
	if (!ok)
		luaL_error(L, "tide.stats.%s: field '%s' must be a number (got %s)", fn, k,
			   luaL_typename(L, -1));
	lua_pop(L, 1);
	return v;
}

static void
set_number(lua_State *L, int t, const char *k, lua_Number v)
{
	lua_pushnumber(L, v);
	lua_setfield(L, t, k);
}

/* ------------------------------------------------------------------------
 * Functions of numbers
 * ------------------------------------------------------------------------ */

/* erf(x) [-1, +1, e] */
static int
l_stats_erf(lua_State *L)
{
	lua_pushnumber(L, erf(arg_number(L, 1, "erf", "x")));
	return 1;
}

/* erfc(x) [-1, +1, e] */
static int
l_stats_erfc(lua_State *L)
{
	lua_pushnumber(L, erfc(arg_number(L, 1, "erfc", "x")));
	return 1;
}

/* normal_cdf(x [, mean [, sd]]): P(X <= x) for X ~ N(mean, sd^2); mean 0
 * and sd 1 by default.  [-(1|2|3), +1, e] */
static int
l_stats_normal_cdf(lua_State *L)
{
	lua_Number x = arg_number(L, 1, "normal_cdf", "x");
	lua_Number mean = lua_isnoneornil(L, 2) ? 0 : arg_number(L, 2, "normal_cdf", "mean");
	lua_Number sd = lua_isnoneornil(L, 3) ? 1 : arg_number(L, 3, "normal_cdf", "sd");

	if (!(sd > 0))
		return luaL_error(L, "tide.stats.normal_cdf: sd must be positive");
	/* erfc keeps its precision far into the lower tail, where 1 + erf
	 * would round to 0 */
	lua_pushnumber(L, 0.5 * erfc(-(x - mean) / (sd * sqrt(2.0))));
	return 1;
}

/* zscore(x, mean, sd): (x - mean) / sd, or nil when sd is nil or 0 (no
 * spread known yet).  [-3, +1, e] */
static int
l_stats_zscore(lua_State *L)
{
	lua_Number x = arg_number(L, 1, "zscore", "x");
	lua_Number mean = arg_number(L, 2, "zscore", "mean");
	lua_Number sd;

	if (lua_isnoneornil(L, 3)) {
		lua_pushnil(L);
		return 1;
	}
	sd = arg_number(L, 3, "zscore", "sd");
	if (sd < 0)
		return luaL_error(L, "tide.stats.zscore: sd must not be negative");
	if (sd == 0)
		lua_pushnil(L);
	else
		lua_pushnumber(L, (x - mean) / sd);
	return 1;
}

/* ------------------------------------------------------------------------
 * Running figures
 * ------------------------------------------------------------------------ */

/* ewma(prev, x, alpha): prev + alpha * (x - prev); x when prev is nil.
 * [-3, +1, e] */
static int
l_stats_ewma(lua_State *L)
{
	lua_Number x = arg_number(L, 2, "ewma", "x");
	lua_Number alpha = arg_alpha(L, 3, "ewma");
	lua_Number prev;

	if (lua_isnil(L, 1)) {
		lua_pushnumber(L, x);
		return 1;
	}
	prev = arg_number(L, 1, "ewma", "prev");
	lua_pushnumber(L, prev + alpha * (x - prev));
	return 1;
}

/* ewmvar(state, x, alpha): the exponentially weighted mean and variance
 * in state {mean=, var=} (updated in place; empty at first) moved by x.
 * Returns mean, standard deviation.  [-3, +2, e] */
static int
l_stats_ewmvar(lua_State *L)
{
	lua_Number x, alpha, mean, var, diff, incr;

	arg_table(L, 1, "ewmvar", "state");
	x = arg_number(L, 2, "ewmvar", "x");
	alpha = arg_alpha(L, 3, "ewmvar");
	lua_getfield(L, 1, "mean");
	if (lua_isnil(L, -1)) {
		mean = x;
		var = 0;
	} else {
		mean = field_number(L, 1, "mean", 0, "ewmvar");
		var = field_number(L, 1, "var", 0, "ewmvar");
		/* the incremental form (Finch, 2009): no sums that grow */
		diff = x - mean;
		incr = alpha * diff;
		mean += incr;
		var = (1 - alpha) * (var + diff * incr);
	}
	lua_pop(L, 1);
	set_number(L, 1, "mean", mean);
	set_number(L, 1, "var", var);
	lua_pushnumber(L, mean);
	lua_pushnumber(L, sqrt(var));
	return 2;
}

/* The count of a Welford table: absent is 0, else a whole number >= 0. */
static lua_Number
welford_n(lua_State *L, const char *fn)
{
	lua_Number n = field_number(L, 1, "n", 0, fn);

	if (!(n >= 0) || n != floor(n))
		luaL_error(L, "tide.stats.%s: field 'n' must be a count", fn);
	return n;
}

/* The sample variance (n - 1) of a Welford table; 0 while n < 2. */
static lua_Number
welford_variance(lua_State *L, const char *fn)
{
	lua_Number n = welford_n(L, fn), m2 = field_number(L, 1, "m2", 0, fn);

	return n >= 2 && m2 > 0 ? m2 / (n - 1) : 0;
}

/* welford(t, x): count x in t {n=, mean=, m2=} (fields made when
 * absent, updated in place).  Returns n, mean, sample standard deviation.
 * [-2, +3, e] */
static int
l_stats_welford(lua_State *L)
{
	lua_Number x, n, mean, m2, d;

	arg_table(L, 1, "welford", "t");
	x = arg_number(L, 2, "welford", "x");
	n = welford_n(L, "welford") + 1;
	mean = field_number(L, 1, "mean", 0, "welford");
	m2 = field_number(L, 1, "m2", 0, "welford");
	d = x - mean;
	mean += d / n;
	m2 += d * (x - mean);
	if (n <= 9007199254740992.0) /* 2^53: exact as an integer too */
		lua_pushinteger(L, (lua_Integer)n);
	else
		lua_pushnumber(L, n);
	lua_setfield(L, 1, "n");
	set_number(L, 1, "mean", mean);
	set_number(L, 1, "m2", m2);
	lua_getfield(L, 1, "n");
	lua_pushnumber(L, mean);
	lua_pushnumber(L, n >= 2 && m2 > 0 ? sqrt(m2 / (n - 1)) : 0);
	return 3;
}

/* welford_var(t): the sample variance, 0 while n < 2.  [-1, +1, e] */
static int
l_stats_welford_var(lua_State *L)
{
	arg_table(L, 1, "welford_var", "t");
	lua_pushnumber(L, welford_variance(L, "welford_var"));
	return 1;
}

/* welford_sd(t): the sample standard deviation, 0 while n < 2.
 * [-1, +1, e] */
static int
l_stats_welford_sd(lua_State *L)
{
	arg_table(L, 1, "welford_sd", "t");
	lua_pushnumber(L, sqrt(welford_variance(L, "welford_sd")));
	return 1;
}

/* ------------------------------------------------------------------------
 * Medians
 * ------------------------------------------------------------------------ */

static void
sift_down(double *a, size_t i, size_t n)
{
	for (;;) {
		size_t c = 2 * i + 1;
		double t;

		if (c >= n)
			return;
		if (c + 1 < n && a[c + 1] > a[c])
			c++;
		if (!(a[c] > a[i]))
			return;
		t = a[i], a[i] = a[c], a[c] = t;
		i = c;
	}
}

/* Heapsort: no recursion, no worst case beyond n log n. */
static void
sort_numbers(double *a, size_t n)
{
	for (size_t i = n / 2; i-- > 0;)
		sift_down(a, i, n);
	for (size_t end = n; end-- > 1;) {
		double t = a[0];

		a[0] = a[end], a[end] = t;
		sift_down(a, 0, end);
	}
}

static double
sorted_median(const double *a, size_t n)
{
	return n % 2 ? a[n / 2] : (a[n / 2 - 1] + a[n / 2]) / 2;
}

/* A sorted copy of the list at index 1 on top of the stack (a userdata),
 * its length in *n. */
static double *
sorted_copy(lua_State *L, const char *fn, size_t *n)
{
	lua_Integer len;
	double *a;

	arg_table(L, 1, fn, "list");
	len = luaL_len(L, 1);
	if (len < 0 || (lua_Unsigned)len > ((size_t)-1) / sizeof(double))
		luaL_error(L, "tide.stats.%s: list is too long", fn);
	a = lua_newuserdatauv(L, (size_t)len * sizeof(double), 0);
	for (lua_Integer i = 1; i <= len; i++) {
		int ok;

		lua_geti(L, 1, i);
		a[i - 1] = lua_tonumberx(L, -1, &ok);
		if (!ok || isnan(a[i - 1]))
			luaL_error(L, "tide.stats.%s: list[%I] must be a number (got %s)", fn, i,
				   ok ? "nan" : luaL_typename(L, -1));
		lua_pop(L, 1);
	}
	sort_numbers(a, (size_t)len);
	*n = (size_t)len;
	return a;
}

/* median(list): the median of an array of numbers (the mean of the two
 * middle ones for an even count), nil when empty; the list is not
 * changed.  [-1, +1, e] */
static int
l_stats_median(lua_State *L)
{
	size_t n;
	double *a = sorted_copy(L, "median", &n);

	if (n == 0)
		lua_pushnil(L);
	else
		lua_pushnumber(L, sorted_median(a, n));
	return 1;
}

/* mad(list): the median absolute deviation from the median (unscaled),
 * nil when empty.  [-1, +1, e] */
static int
l_stats_mad(lua_State *L)
{
	size_t n;
	double *a = sorted_copy(L, "mad", &n), m;

	if (n == 0) {
		lua_pushnil(L);
		return 1;
	}
	m = sorted_median(a, n);
	for (size_t i = 0; i < n; i++)
		a[i] = fabs(a[i] - m);
	sort_numbers(a, n);
	lua_pushnumber(L, sorted_median(a, n));
	return 1;
}

static const luaL_Reg stats_fns[] = {
	{ "erf", l_stats_erf },
	{ "erfc", l_stats_erfc },
	{ "normal_cdf", l_stats_normal_cdf },
	{ "zscore", l_stats_zscore },
	{ "ewma", l_stats_ewma },
	{ "ewmvar", l_stats_ewmvar },
	{ "welford", l_stats_welford },
	{ "welford_var", l_stats_welford_var },
	{ "welford_sd", l_stats_welford_sd },
	{ "median", l_stats_median },
	{ "mad", l_stats_mad },
	{ NULL, NULL },
};

int
tidei_lua_open_stats(lua_State *L)
{
	luaL_newlib(L, stats_fns);
	return 1;
}
