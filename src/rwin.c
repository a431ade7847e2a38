/*
 * rwin.c - a rule's windows (rwin.h): options, and each key's set of
 * window states driven by the rule's clock.
 */
#include "config.h"

#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rule.h"
#include "rwin.h"

typedef struct rwin {
	char *name;
	tidei_win_spec spec;
	char *value;    /* path of the value, or NULL (counts only) */
	char *distinct; /* path of what distinct counts, or NULL */
} rwin;

struct tidei_rwins {
	rwin *v;
	size_t n;
};

static const struct {
	const char *field;
	int kind;
} kinds[] = {
	{ "tumbling", TIDEI_WIN_TUMBLING }, { "hopping", TIDEI_WIN_HOPPING },
	{ "sliding", TIDEI_WIN_SLIDING },   { "last", TIDEI_WIN_COUNT },
	{ "session", TIDEI_WIN_SESSION },
};

static const char *const fields[] = { "tumbling", "hopping", "sliding",  "last",       "session",
				      "every",    "value",   "distinct", "aggregates", NULL };

/* A duration field of the window table at -1 into *ns (0 if absent). */
static int
duration(lua_State *L, const char *win, const char *field, int64_t *ns, char *err)
{
	char why[TIDEI_ERRLEN];
	size_t n;
	const char *s;
	int t = lua_getfield(L, -1, field), rc = TIDE_OK;

	*ns = 0;
	if (t == LUA_TSTRING || t == LUA_TNUMBER) {
		s = lua_tolstring(L, -1, &n);
		if (tidei_duration_parse(s, n, ns, why) != TIDE_OK)
			rc = tidei_err(err, TIDE_EINVAL, "window '%s': '%s': %s", win, field, why);
	} else if (t != LUA_TNIL) {
		rc = tidei_err(err, TIDE_EINVAL,
			       "window '%s': '%s' must be a duration such as \"1h\"", win, field);
	}
	lua_pop(L, 1);
	return rc;
}

/* A path field ("data.amount") of the window table at -1, or NULL. */
static int
path(lua_State *L, const char *win, const char *field, char **out, char *err)
{
	int t = lua_getfield(L, -1, field);
	struct tide_event none;
	tide_value v;

	*out = NULL;
	memset(&none, 0, sizeof none);
	/* a malformed path is refused here: it would never find a value */
	if (t == LUA_TSTRING && tide_event_value(&none, lua_tostring(L, -1), &v) == TIDE_EINVAL) {
		tidei_err(err, TIDE_EINVAL,
			  "window '%s': '%s': '%s' is not a path like \"data.amount\"", win, field,
			  lua_tostring(L, -1));
		lua_pop(L, 1);
		return TIDE_EINVAL;
	}
	if (t == LUA_TSTRING)
		*out = strdup(lua_tostring(L, -1));
	lua_pop(L, 1);
	if (t != LUA_TSTRING && t != LUA_TNIL)
		return tidei_err(err, TIDE_EINVAL,
				 "window '%s': '%s' must be a path like "
				 "\"data.amount\"",
				 win, field);
	if (t == LUA_TSTRING && *out == NULL)
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	return TIDE_OK;
}

/* The aggregates asked for (default: count, and with a value sum, min,
 * max and mean). */
static int
aggregates(lua_State *L, rwin *w, char *err)
{
	char why[TIDEI_ERRLEN];
	int t = lua_getfield(L, -1, "aggregates"), rc = TIDE_OK, quantiles = 0;

	w->spec.aggs = TIDEI_AGG_COUNT;
	if (t == LUA_TNIL) {
		if (w->value != NULL)
			w->spec.aggs |=
				TIDEI_AGG_SUM | TIDEI_AGG_MIN | TIDEI_AGG_MAX | TIDEI_AGG_MEAN;
		if (w->distinct != NULL)
			w->spec.aggs |= TIDEI_AGG_DISTINCT;
		lua_pop(L, 1);
		return TIDE_OK;
	}
	if (t != LUA_TTABLE) {
		lua_pop(L, 1);
		return tidei_err(err, TIDE_EINVAL,
				 "window '%s': 'aggregates' must be a list such as "
				 "{ \"count\", \"sum\", \"p95\" }",
				 w->name);
	}
	for (lua_Integer i = 1; rc == TIDE_OK && lua_rawgeti(L, -1, i) != LUA_TNIL; i++) {
		uint32_t bit;
		const char *name = lua_tostring(L, -1);
		if (name == NULL || tidei_agg_parse(name, &bit, &w->spec.q, why) != TIDE_OK)
			rc = tidei_err(err, TIDE_EINVAL, "window '%s': %s", w->name,
				       name ? why : "aggregates are names");
		else if (bit == TIDEI_AGG_QUANTILE && quantiles++ > 0)
			rc = tidei_err(err, TIDE_EINVAL,
				       "window '%s': one quantile per window (define another "
				       "window for a second one)",
				       w->name);
		else if (bit != TIDEI_AGG_COUNT && bit != TIDEI_AGG_DISTINCT && w->value == NULL)
			rc = tidei_err(err, TIDE_EINVAL,
				       "window '%s': '%s' needs a 'value' path to aggregate",
				       w->name, name);
		else if (bit == TIDEI_AGG_DISTINCT && w->distinct == NULL)
			rc = tidei_err(err, TIDE_EINVAL,
				       "window '%s': 'distinct' needs a 'distinct' path to count",
				       w->name);
		else
			w->spec.aggs |= bit;
		lua_pop(L, 1);
	}
	/* the list, and the nil that ended it unless an error did */
	lua_pop(L, rc == TIDE_OK ? 2 : 1);
	return rc;
}

/* One window's definition, from the table at -1. */
static int
parse_one(lua_State *L, rwin *w, char *err)
{
	int64_t ns, every;
	int found = 0, rc;

	lua_pushnil(L);
	while (lua_next(L, -2) != 0) {
		int ok = 0;
		lua_pop(L, 1);
		for (const char *const *f = fields; *f && lua_type(L, -1) == LUA_TSTRING; f++)
			ok |= strcmp(lua_tostring(L, -1), *f) == 0;
		if (!ok) {
			tidei_err(err, TIDE_EINVAL, "window '%s': unknown field '%s'", w->name,
				  lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "?");
			lua_pop(L, 1);
			return TIDE_EINVAL;
		}
	}
	for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
		if (lua_getfield(L, -1, kinds[k].field) != LUA_TNIL) {
			found++;
			w->spec.kind = kinds[k].kind;
		}
		lua_pop(L, 1);
	}
	if (found != 1)
		return tidei_err(err, TIDE_EINVAL,
				 "window '%s' needs one of tumbling, hopping, sliding, last or "
				 "session",
				 w->name);
	if (w->spec.kind == TIDEI_WIN_COUNT) {
		lua_getfield(L, -1, "last");
		if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 ||
		    lua_tointeger(L, -1) > TIDEI_WIN_MAX_ENTRIES) {
			lua_pop(L, 1);
			return tidei_err(
				err, TIDE_EINVAL,
				"window '%s': 'last' must be a count of events from 1 to %d",
				w->name, TIDEI_WIN_MAX_ENTRIES);
		}
		w->spec.count = (uint32_t)lua_tointeger(L, -1);
		lua_pop(L, 1);
	} else {
		const char *f = w->spec.kind == TIDEI_WIN_TUMBLING  ? "tumbling"
				: w->spec.kind == TIDEI_WIN_HOPPING ? "hopping"
				: w->spec.kind == TIDEI_WIN_SLIDING ? "sliding"
								    : "session";
		if ((rc = duration(L, w->name, f, &ns, err)) != TIDE_OK)
			return rc;
		if (w->spec.kind == TIDEI_WIN_SESSION)
			w->spec.gap_ns = ns;
		else
			w->spec.size_ns = ns;
	}
	if ((rc = duration(L, w->name, "every", &every, err)) != TIDE_OK)
		return rc;
	if ((every != 0) != (w->spec.kind == TIDEI_WIN_HOPPING))
		return tidei_err(err, TIDE_EINVAL,
				 "window '%s': 'every' goes with 'hopping' (and hopping needs it)",
				 w->name);
	w->spec.hop_ns = every;
	if ((rc = path(L, w->name, "value", &w->value, err)) != TIDE_OK ||
	    (rc = path(L, w->name, "distinct", &w->distinct, err)) != TIDE_OK ||
	    (rc = aggregates(L, w, err)) != TIDE_OK)
		return rc;
	{
		char why[TIDEI_ERRLEN];
		if (tidei_win_spec_check(&w->spec, why) != TIDE_OK)
			return tidei_err(err, TIDE_EINVAL, "window '%s': %s", w->name, why);
	}
	return TIDE_OK;
}

static int
by_name(const void *a, const void *b)
{
	return strcmp(((const rwin *)a)->name, ((const rwin *)b)->name);
}

int
tidei_rwins_parse(tidei_rwins **out, lua_State *L, int idx, char *err)
{
	tidei_rwins *d;
	size_t n = 0;
	int rc = TIDE_OK;

	*out = NULL;
	idx = lua_absindex(L, idx);
	if (lua_getfield(L, idx, "windows") == LUA_TNIL) {
		lua_pop(L, 1);
		return TIDE_OK;
	}
	if (!lua_istable(L, -1)) {
		lua_pop(L, 1);
		return tidei_err(err, TIDE_EINVAL,
				 "option 'windows' must be a table of name = { definition }");
	}
	lua_pushnil(L);
	while (lua_next(L, -2) != 0) {
		lua_pop(L, 1);
		n++;
	}
	if ((d = calloc(1, sizeof *d)) == NULL ||
	    (d->v = calloc(n ? n : 1, sizeof *d->v)) == NULL) {
		free(d);
		lua_pop(L, 1);
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	}
	lua_pushnil(L);
	while (rc == TIDE_OK && lua_next(L, -2) != 0) {
		rwin *w = &d->v[d->n];
		size_t nl;
		if (lua_type(L, -2) != LUA_TSTRING || !lua_istable(L, -1) ||
		    (lua_tolstring(L, -2, &nl), nl == 0 || nl > 64)) {
			rc = tidei_err(
				err, TIDE_EINVAL,
				"option 'windows': each entry must be name = { definition }, "
				"with a name of 1 to 64 characters");
			lua_pop(L, 2);
			break;
		}
		w->name = strdup(lua_tostring(L, -2));
		d->n++;
		rc = w->name ? parse_one(L, w, err) : tidei_err(err, TIDE_ENOMEM, "out of memory");
		lua_pop(L, rc == TIDE_OK ? 1 : 2);
	}
	lua_pop(L, 1);
	if (rc != TIDE_OK) {
		tidei_rwins_free(d);
		return rc;
	}
	/* a fixed order: closes and encodings must not depend on a Lua
	 * table's traversal */
	qsort(d->v, d->n, sizeof *d->v, by_name);
	*out = d;
	return TIDE_OK;
}

void
tidei_rwins_free(tidei_rwins *d)
{
	if (d == NULL)
		return;
	for (size_t k = 0; k < d->n; k++) {
		free(d->v[k].name);
		free(d->v[k].value);
		free(d->v[k].distinct);
	}
	free(d->v);
	free(d);
}

size_t
tidei_rwins_count(const tidei_rwins *d)
{
	return d ? d->n : 0;
}

const char *
tidei_rwins_describe(const tidei_rwins *d, size_t k, tidei_buf *out)
{
	const rwin *rw = &d->v[k];

	tidei_win_spec_describe(&rw->spec, out);
	if (rw->value != NULL)
		tidei_buf_printf(out, "; value %s", rw->value);
	if (rw->distinct != NULL)
		tidei_buf_printf(out, "; distinct %s", rw->distinct);
	return rw->name;
}

void
tidei_rwins_drop(const tidei_rwins *d, tidei_win **w)
{
	for (size_t k = 0; k < d->n; k++) {
		tidei_win_free(w[k]);
		w[k] = NULL;
	}
}

/* The number at @p p of @p ev: 1, or 0 when it has none. */
static int
number(const struct tide_event *ev, const char *p, double *v)
{
	tide_value x;

	if (tide_event_value(ev, p, &x) != TIDE_OK ||
	    (x.type != TIDE_INT && x.type != TIDE_DOUBLE) || !isfinite(x.d))
		return 0;
	*v = x.d;
	return 1;
}

/* A token for distinct counting: a hash of the value's bytes (a number by
 * its decimal form, so 7 and 7.0 agree). */
static int
token(const struct tide_event *ev, const char *p, uint64_t *h)
{
	tide_value x;
	char num[32];

	if (tide_event_value(ev, p, &x) != TIDE_OK)
		return 0;
	if (x.type == TIDE_STRING) {
		*h = tidei_fnv(x.s, x.len, TIDEI_FNV_SEED);
		return 1;
	}
	if (x.type == TIDE_INT || x.type == TIDE_DOUBLE) {
		int n = snprintf(num, sizeof num, "%.17g", x.d);
		*h = tidei_fnv(num, (size_t)n, TIDEI_FNV_SEED);
		return 1;
	}
	return 0;
}

int
tidei_rwins_add(const tidei_rwins *d, tidei_win **w, const struct tide_event *ev, int64_t t,
		char *err)
{
	const char *last = NULL; /* the value path read last, and what it gave */
	double lastv = 0;
	int lastok = 0;

	for (size_t k = 0; k < d->n; k++) {
		const rwin *rw = &d->v[k];
		double v = 0;
		uint64_t h = 0;
		int rc;
		if (rw->value != NULL) {
			/* windows over the same field read it once */
			if (last == NULL || strcmp(last, rw->value) != 0) {
				last = rw->value;
				lastok = number(ev, rw->value, &lastv);
			}
			if (!lastok)
				continue;
			v = lastv;
		}
		if (rw->distinct != NULL && !token(ev, rw->distinct, &h) && rw->value == NULL)
			continue;
		if (w[k] == NULL && (w[k] = tidei_win_new(&rw->spec)) == NULL)
			return tidei_err(err, TIDE_ENOMEM, "out of memory");
		rc = tidei_win_add(w[k], &rw->spec, t, v, h, err);
		if (rc != TIDE_OK && rc != TIDEI_WIN_LATE) {
			char why[TIDEI_ERRLEN];
			snprintf(why, sizeof why, "%s", err);
			return tidei_err(err, rc, "window '%s': %s", rw->name, why);
		}
	}
	return TIDE_OK;
}

void
tidei_rwins_prefetch(const tidei_rwins *d, tidei_win *const *w, int depth)
{
	for (size_t k = 0; k < d->n; k++)
		if (w[k] != NULL)
			tidei_win_prefetch(w[k], depth);
}

int64_t
tidei_rwins_next_close(const tidei_rwins *d, tidei_win *const *w)
{
	int64_t next = INT64_MAX;

	for (size_t k = 0; k < d->n; k++)
		if (w[k] != NULL) {
			int64_t c = tidei_win_next_close(w[k], &d->v[k].spec);
			if (c < next)
				next = c;
		}
	return next;
}

int
tidei_rwins_empty(const tidei_rwins *d, tidei_win *const *w)
{
	for (size_t k = 0; k < d->n; k++)
		if (w[k] != NULL && !tidei_win_empty(w[k]))
			return 0;
	return 1;
}

typedef struct closing {
	void (*fn)(void *ud, const char *name, const tidei_agg *a);
	void *ud;
	const char *name;
} closing;

static void
closed(void *ud, const tidei_agg *a)
{
	closing *c = ud;

	c->fn(c->ud, c->name, a);
}

int
tidei_rwins_advance(const tidei_rwins *d, tidei_win **w, int64_t watermark,
		    void (*fn)(void *ud, const char *name, const tidei_agg *a), void *ud, char *err)
{
	for (size_t k = 0; k < d->n; k++) {
		closing c = { fn, ud, d->v[k].name };
		int rc;
		if (w[k] == NULL)
			continue;
		if ((rc = tidei_win_advance(w[k], &d->v[k].spec, watermark, closed, &c)) != TIDE_OK)
			return tidei_err(err, rc, "window '%s' cannot close", d->v[k].name);
	}
	return TIDE_OK;
}

void
tidei_rwins_encode(const tidei_rwins *d, tidei_win *const *w, tidei_buf *out)
{
	uint32_t n = 0;
	size_t at;

	at = out->len;
	tidei_val_open_map(out);
	for (size_t k = 0; k < d->n; k++) {
		tidei_buf b = { 0 };
		if (w[k] == NULL || tidei_win_empty(w[k]))
			continue;
		tidei_win_encode(w[k], &d->v[k].spec, &b);
		tidei_val_str(out, d->v[k].name, strlen(d->v[k].name));
		tidei_val_bin(out, b.p, b.len);
		out->failed |= b.failed;
		tidei_buf_free(&b);
		n++;
	}
	tidei_val_close(out, at, n);
}

int
tidei_rwins_decode(const tidei_rwins *d, tidei_win **w, tidei_vreader *r, char *err)
{
	tidei_vitem it, v;

	if (tidei_val_next(r, &it) != 0 || (it.type != TIDEI_V_MAP && it.type != TIDEI_V_NIL))
		return tidei_err(err, TIDE_EIO, "the windows of a key are damaged");
	if (it.type == TIDEI_V_NIL)
		return TIDE_OK;
	for (uint32_t i = 0; i < it.u.count; i++) {
		tidei_vitem name;
		size_t k;
		if (tidei_val_next(r, &name) != 0 || name.type != TIDEI_V_STR ||
		    tidei_val_next(r, &v) != 0 || v.type != TIDEI_V_BIN)
			return tidei_err(err, TIDE_EIO, "the windows of a key are damaged");
		for (k = 0; k < d->n; k++)
			if (strlen(d->v[k].name) == name.u.s.n &&
			    memcmp(d->v[k].name, name.u.s.p, name.u.s.n) == 0)
				break;
		if (k == d->n || w[k] != NULL)
			continue; /* a window the script no longer defines */
		{
			char why[TIDEI_ERRLEN];
			int rc = tidei_win_decode(&w[k], &d->v[k].spec, (const uint8_t *)v.u.s.p,
						  v.u.s.n, why);
			if (rc == TIDE_EINVAL)
				w[k] = NULL; /* redefined: it starts afresh */
			else if (rc != TIDE_OK)
				return tidei_err(err, rc, "window '%s': %s", d->v[k].name, why);
		}
	}
	return TIDE_OK;
}

static void
set_number(lua_State *L, const char *field, double v)
{
	if (isnan(v))
		return;
	lua_pushnumber(L, v);
	lua_setfield(L, -2, field);
}

void
tidei_rwins_push_agg(const tidei_rwins *d, lua_State *L, const char *name, const tidei_agg *a)
{
	double v[] = { a->sum,      a->min,    a->max,      a->mean,
		       a->variance, a->stddev, a->distinct, a->quantile };
	int n = 3; /* count, start and end */

	(void)d;
	(void)name;
	/* sized to what it holds: a window read in every call makes one */
	for (size_t k = 0; k < sizeof v / sizeof v[0]; k++)
		n += !isnan(v[k]);
	lua_createtable(L, 0, n);
	lua_pushinteger(L, (lua_Integer)a->count);
	lua_setfield(L, -2, "count");
	set_number(L, "sum", a->sum);
	set_number(L, "min", a->min);
	set_number(L, "max", a->max);
	set_number(L, "mean", a->mean);
	set_number(L, "variance", a->variance);
	set_number(L, "stddev", a->stddev);
	set_number(L, "distinct", a->distinct);
	set_number(L, "quantile", a->quantile);
	lua_pushinteger(L, (lua_Integer)a->start);
	lua_setfield(L, -2, "start");
	lua_pushinteger(L, (lua_Integer)a->end);
	lua_setfield(L, -2, "end");
}

static const char *const agg_names[] = { "count",    "sum",      "min",    "max",
					 "mean",     "variance", "stddev", "distinct",
					 "quantile", "start",    "end",    NULL };

/* Push aggregate @p name of @p a: a number, nil where the window has
 * none; 0, or -1 (nothing pushed) when it is not an aggregate's name. */
static int
push_field(lua_State *L, const tidei_agg *a, const char *name)
{
	const double v[] = { NAN,         a->sum,    a->min,      a->max,     a->mean,
			     a->variance, a->stddev, a->distinct, a->quantile };
	int k = 0;

	while (agg_names[k] != NULL && strcmp(agg_names[k], name) != 0)
		k++;
	if (agg_names[k] == NULL)
		return -1;
	if (k == 0)
		lua_pushinteger(L, (lua_Integer)a->count);
	else if (k >= 9)
		lua_pushinteger(L, (lua_Integer)(k == 9 ? a->start : a->end));
	else if (isnan(v[k]))
		lua_pushnil(L);
	else
		lua_pushnumber(L, v[k]);
	return 0;
}

void
tidei_rwins_push(const tidei_rwins *d, tidei_win **w, lua_State *L, const char *name, int64_t t,
		 int at, int nfields)
{
	tidei_agg a;
	size_t k;

	for (k = 0; d != NULL && k < d->n; k++)
		if (strcmp(d->v[k].name, name) == 0)
			break;
	if (d == NULL || k == d->n) {
		luaL_error(L, "the rule has no window named '%s'", name);
		return;
	}
	if (w[k] == NULL) {
		memset(&a, 0, sizeof a);
		a.min = a.max = a.mean = a.variance = a.stddev = a.distinct = a.quantile = NAN;
		if (!(d->v[k].spec.aggs & TIDEI_AGG_SUM))
			a.sum = NAN;
	} else if (tidei_win_read(w[k], &d->v[k].spec, t, &a) != TIDE_OK) {
		luaL_error(L, "window '%s' cannot be read", name);
		return;
	}
	if (nfields == 0) {
		tidei_rwins_push_agg(d, L, name, &a);
		return;
	}
	luaL_checkstack(L, nfields, "too many aggregates");
	for (int f = 0; f < nfields; f++)
		if (push_field(L, &a, lua_tostring(L, at + f)) != 0)
			luaL_error(L,
				   "'%s' is not an aggregate: count, sum, min, max, mean, "
				   "variance, stddev, distinct, quantile, start or end",
				   lua_tostring(L, at + f));
}
