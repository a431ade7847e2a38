/*
 * conf.c - tide_config: defaults, one table of options shared by the
 * C API (tide_config_set), the command line and the Lua config file, and
 * the loader of that file.
 *
 * The config file is user code like a script: it runs in a state of
 * script.c, with the same sandbox (no io, no os but its clock) and the
 * default instruction budget, time limit and memory ceiling, so that a
 * loop or a runaway pattern in it is a configuration error, not a hang.
 * It only sets globals.  Unknown globals are errors, so a typo in a
 * setting name is reported instead of silently ignored.
 */
#include "config.h"

#include <errno.h>
#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "script.h"

enum { T_STR, T_SIZE, T_COUNT, T_DURATION, T_DURABILITY, T_CTHREAD, T_LEVEL, T_LIST, T_PARAM };

/* The option table: name, kind, where it lives. */
/* clang-format off */
#define OPT(name, kind, field) { name, kind, offsetof(struct tide_config, field) }
/* clang-format on */
static const struct opt {
	const char *name;
	int kind;
	size_t off;
} opts[] = {
	OPT("data", T_STR, data),
	OPT("durability", T_DURABILITY, durability),
	OPT("sync_interval", T_COUNT, sync_interval_ms),
	OPT("pull", T_STR, pull),
	OPT("rep", T_STR, rep),
	OPT("pub", T_STR, pub),
	OPT("http", T_STR, http),
	OPT("http_token", T_STR, http_token),
	OPT("cluster", T_STR, cluster),
	OPT("cluster_node", T_STR, cluster_node),
	OPT("cluster_stream", T_STR, cluster_stream),
	OPT("cluster_key", T_STR, cluster_key),
	OPT("cluster_partitions", T_COUNT, cluster_partitions),
	OPT("cluster_replicas", T_COUNT, cluster_replicas),
	OPT("cluster_lease", T_DURATION, cluster_lease_ns),
	OPT("map_size", T_SIZE, map_size),
	OPT("max_event_size", T_SIZE, max_event_size),
	OPT("max_message_size", T_SIZE, max_message_size),
	OPT("turn_events", T_COUNT, turn_events),
	OPT("instruction_budget", T_COUNT, instruction_budget),
	OPT("time_limit", T_DURATION, time_limit_ns),
	OPT("memory_limit", T_SIZE, memory_limit),
	OPT("max_emits", T_COUNT, max_emits),
	OPT("max_emit_depth", T_COUNT, max_emit_depth),
	OPT("build_threads", T_COUNT, build_threads),
	OPT("consumer_thread", T_CTHREAD, consumer_thread),
	OPT("log_level", T_LEVEL, log_level),
	OPT("lua_path", T_STR, lua_path),
	OPT("allow", T_LIST, allow),
	OPT("param", T_PARAM, params),
};

static const char *const levels[] = { "error", "warn", "info", "debug" };
static const char *const cthread_modes[] = { "off", "busy", "always" };

static const struct opt *
find_opt(const char *name)
{
	for (size_t k = 0; k < sizeof opts / sizeof opts[0]; k++)
		if (strcmp(opts[k].name, name) == 0)
			return &opts[k];
	return NULL;
}

int
tidei_parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	uint64_t mul = 1;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (end == s || errno != 0 || s[0] == '-')
		return -1;
	while (*end == ' ')
		end++;
	switch (*end) {
	case '\0': break;
	case 'k':
	case 'K':
		mul = 1ull << 10;
		end++;
		break;
	case 'm':
	case 'M':
		mul = 1ull << 20;
		end++;
		break;
	case 'g':
	case 'G':
		mul = 1ull << 30;
		end++;
		break;
	case 't':
	case 'T':
		mul = 1ull << 40;
		end++;
		break;
	default: return -1;
	}
	if (mul > 1 && (strcmp(end, "") == 0 || strcmp(end, "B") == 0 || strcmp(end, "iB") == 0 ||
			strcmp(end, "b") == 0))
		end += strlen(end);
	if (*end != '\0' || (v > 0 && mul > UINT64_MAX / v))
		return -1;
	*out = (uint64_t)v * mul;
	return 0;
}

int
tidei_parse_duration(const char *s, uint64_t *out)
{
	static const struct {
		const char *unit;
		double ns;
	} units[] = { { "", 1e9 }, { "s", 1e9 }, { "ms", 1e6 }, { "us", 1e3 }, { "ns", 1 } };
	size_t n = strspn(s, "0123456789.");
	const char *unit = s + n;
	char num[32], *end;
	double v;

	/* a plain decimal number: strtod alone would also take "inf", "0x10",
	 * "1e3" and "-1" */
	if (n == 0 || n >= sizeof num)
		return -1;
	memcpy(num, s, n);
	num[n] = '\0';
	if (strchr(num, '.') != strrchr(num, '.'))
		return -1;
	v = strtod(num, &end);
	if (*end != '\0')
		return -1;
	while (*unit == ' ')
		unit++;
	for (size_t k = 0; k < sizeof units / sizeof *units; k++) {
		if (strcmp(unit, units[k].unit) != 0)
			continue;
		v *= units[k].ns;
		if (!(v >= 0 && v < 1e19))
			return -1;
		*out = (uint64_t)(v + 0.5);
		return 0;
	}
	return -1;
}

TIDE_API int
tide_config_new(tide_config **out)
{
	tide_config *c;

	if (out == NULL)
		return tidei_fail(TIDE_EINVAL, "tide_config_new: out is NULL");
	*out = NULL;
	if ((c = calloc(1, sizeof *c)) == NULL)
		return tidei_fail(TIDE_ENOMEM, NULL);
	c->data = strdup("./tide-data");
	c->allow = calloc(1, sizeof *c->allow);
	c->params = calloc(1, sizeof *c->params);
	if (c->data == NULL || c->allow == NULL || c->params == NULL) {
		tide_config_destroy(c);
		return tidei_fail(TIDE_ENOMEM, NULL);
	}
	c->durability = TIDEI_DURABILITY_SYNC;
	c->sync_interval_ms = 1000;
	c->max_event_size = 1 << 20;
	c->max_message_size = 16 << 20;
	c->turn_events = 20000;
	c->instruction_budget = TIDEI_DEFAULT_BUDGET;
	c->time_limit_ns = TIDEI_DEFAULT_TIME_NS;
	c->memory_limit = TIDEI_DEFAULT_MEMORY;
	c->max_emits = 1000;
	c->max_emit_depth = TIDEI_DEFAULT_EMIT_DEPTH;
	c->log_level = TIDE_LOG_INFO;
	*out = c;
	return TIDE_OK;
}

static void
free_list(char **v, size_t n)
{
	for (size_t k = 0; v && k < n; k++)
		free(v[k]);
	free(v);
}

TIDE_API void
tide_config_destroy(tide_config *c)
{
	if (c == NULL)
		return;
	free(c->data);
	free(c->pull);
	free(c->rep);
	free(c->pub);
	free(c->http);
	free(c->http_token);
	free(c->cluster);
	free(c->cluster_node);
	free(c->cluster_stream);
	free(c->cluster_key);
	free(c->lua_path);
	free_list(c->scripts, c->nscripts);
	free_list(c->allow, c->nallow);
	free_list(c->params, c->nparams);
	free(c);
}

static int
push_list(char ***v, size_t *n, const char *s, int nul_terminated)
{
	char **p = realloc(*v, (*n + 2) * sizeof *p);
	char *copy = strdup(s);

	if (p != NULL)
		*v = p;
	if (p == NULL || copy == NULL) {
		free(copy);
		return TIDE_ENOMEM;
	}
	p[(*n)++] = copy;
	if (nul_terminated)
		p[*n] = NULL;
	return TIDE_OK;
}

static int
config_set(tide_config *c, const char *key, const char *value)
{
	const struct opt *o;
	char *copy;
	void *field;
	uint64_t n;

	if (c == NULL || key == NULL || value == NULL)
		return tidei_err(c ? c->err : NULL, TIDE_EINVAL,
				 "tide_config_set: the configuration, key and value must not be "
				 "NULL");
	if ((o = find_opt(key)) == NULL)
		return tidei_err(c->err, TIDE_ECONFIG, "unknown setting '%s'", key);
	field = (char *)c + o->off;
	switch (o->kind) {
	case T_STR:
		if ((copy = strdup(value)) == NULL)
			return TIDE_ENOMEM;
		free(*(char **)field);
		*(char **)field = copy;
		return TIDE_OK;
	case T_SIZE:
	case T_COUNT:
		if (tidei_parse_size(value, &n) != 0 ||
		    (o->kind == T_COUNT && strspn(value, "0123456789") != strlen(value)))
			return tidei_err(c->err, TIDE_ECONFIG, "%s: '%s' is not a %s", key, value,
					 o->kind == T_SIZE ? "size (like 1048576, 64M or 1G)"
							   : "non-negative integer");
		if ((strcmp(key, "max_event_size") == 0 || strcmp(key, "turn_events") == 0 ||
		     strcmp(key, "max_message_size") == 0) &&
		    n == 0)
			return tidei_err(c->err, TIDE_ECONFIG, "%s must be positive", key);
		if (strcmp(key, "memory_limit") == 0 && n > 0 && n < TIDEI_MIN_MEMORY)
			return tidei_err(
				c->err, TIDE_ECONFIG,
				"memory_limit must be 0 (no limit) or at least 1M, not '%s'",
				value);
		if (strcmp(key, "map_size") == 0 && n < TIDEI_MIN_MAP)
			return tidei_err(c->err, TIDE_ECONFIG,
					 "map_size must be at least 64K, not '%s'", value);
		if (strcmp(key, "max_emit_depth") == 0 && n > UINT16_MAX)
			return tidei_err(c->err, TIDE_ECONFIG,
					 "max_emit_depth must be at most 65535, not '%s'", value);
		if (strcmp(key, "build_threads") == 0 && n > TIDEI_MAX_BUILD_THREADS)
			return tidei_err(c->err, TIDE_ECONFIG,
					 "build_threads must be at most %d, not '%s'",
					 TIDEI_MAX_BUILD_THREADS, value);
		*(uint64_t *)field = n;
		return TIDE_OK;
	case T_DURATION:
		if (tidei_parse_duration(value, &n) != 0)
			return tidei_err(c->err, TIDE_ECONFIG,
					 "%s: '%s' is not a duration (seconds, like 5 or 0.5, or "
					 "with a unit: 2s, 500ms)",
					 key, value);
		*(uint64_t *)field = n;
		return TIDE_OK;
	case T_DURABILITY:
		if (strcmp(value, "sync") == 0)
			c->durability = TIDEI_DURABILITY_SYNC;
		else if (strcmp(value, "relaxed") == 0)
			c->durability = TIDEI_DURABILITY_RELAXED;
		else
			return tidei_err(c->err, TIDE_ECONFIG,
					 "durability must be \"sync\" or \"relaxed\", not '%s'",
					 value);
		return TIDE_OK;
	case T_CTHREAD:
		for (int k = 0; k < 3; k++)
			if (strcmp(value, cthread_modes[k]) == 0) {
				c->consumer_thread = k;
				return TIDE_OK;
			}
		return tidei_err(
			c->err, TIDE_ECONFIG,
			"consumer_thread must be \"off\", \"busy\" or \"always\", not '%s'", value);
	case T_LEVEL:
		for (int k = 0; k < 4; k++) {
			if (strcmp(value, levels[k]) == 0) {
				c->log_level = k;
				return TIDE_OK;
			}
		}
		return tidei_err(c->err, TIDE_ECONFIG,
				 "log_level must be error, warn, info or debug, not '%s'", value);
	case T_LIST:
		if (strcmp(value, "io") != 0 && strcmp(value, "os") != 0 &&
		    strcmp(value, "debug") != 0)
			return tidei_err(
				c->err, TIDE_ECONFIG,
				"allow: '%s' is not a module that can be allowed (io, os, debug)",
				value);
		return push_list(&c->allow, &c->nallow, value, 1);
	case T_PARAM:
		/* NAME=VALUE: what tide.param(NAME, default) gives the scripts;
		 * a later one for the same name wins */
		if (value[0] == '=' || strchr(value, '=') == NULL)
			return tidei_err(c->err, TIDE_ECONFIG,
					 "param takes NAME=VALUE (for tide.param), not '%s'",
					 value);
		return push_list(&c->params, &c->nparams, value, 1);
	}
	return TIDE_EINVAL;
}

TIDE_API const char *
tide_config_get(const tide_config *c, const char *key)
{
	const struct opt *o = key != NULL ? find_opt(key) : NULL;
	tide_config *mc = (tide_config *)c;
	const void *field;

	if (c == NULL || o == NULL)
		return NULL;
	field = (const char *)c + o->off;
	switch (o->kind) {
	case T_STR: return *(char *const *)field;
	case T_SIZE:
	case T_COUNT:
		snprintf(mc->getbuf, sizeof mc->getbuf, "%llu",
			 (unsigned long long)*(const uint64_t *)field);
		return mc->getbuf;
	case T_DURATION: {
		uint64_t ns = *(const uint64_t *)field;
		if (ns % 1000000000 == 0)
			snprintf(mc->getbuf, sizeof mc->getbuf, "%llus",
				 (unsigned long long)(ns / 1000000000));
		else if (ns % 1000000 == 0)
			snprintf(mc->getbuf, sizeof mc->getbuf, "%llums",
				 (unsigned long long)(ns / 1000000));
		else
			snprintf(mc->getbuf, sizeof mc->getbuf, "%lluns", (unsigned long long)ns);
		return mc->getbuf;
	}
	case T_DURABILITY: return c->durability == TIDEI_DURABILITY_SYNC ? "sync" : "relaxed";
	case T_CTHREAD: return cthread_modes[c->consumer_thread];
	case T_LEVEL: return levels[c->log_level];
	case T_LIST: return c->nallow ? c->allow[0] : "";
	case T_PARAM: return c->nparams ? c->params[c->nparams - 1] : "";
	}
	return NULL;
}

static int
config_add_script(tide_config *c, const char *path)
{
	if (c == NULL || path == NULL || *path == '\0')
		return tidei_err(c ? c->err : NULL, TIDE_EINVAL, "a script path must not be empty");
	return push_list(&c->scripts, &c->nscripts, path, 0);
}

TIDE_API void
tide_config_set_log(tide_config *c, tide_log_fn *fn, void *ud)
{
	if (c == NULL)
		return;
	c->log = fn;
	c->log_ud = ud;
}

int
tidei_config_copy(tide_config **out, const tide_config *s)
{
	tide_config *c;
	int rc = TIDE_OK;

	if ((rc = tide_config_new(&c)) != TIDE_OK)
		return rc;
	free(c->data);
	free_list(c->allow, 0);
	free_list(c->params, 0);
	*c = *s;
	c->data = c->pull = c->rep = c->pub = c->lua_path = c->http = c->http_token = NULL;
	c->cluster = c->cluster_node = c->cluster_stream = c->cluster_key = NULL;
	c->scripts = c->allow = c->params = NULL;
	c->nscripts = c->nallow = c->nparams = 0;
	c->allow = calloc(1, sizeof *c->allow);
	c->params = calloc(1, sizeof *c->params);
#define DUP(f) \
	if (s->f != NULL && (c->f = strdup(s->f)) == NULL) \
		rc = TIDE_ENOMEM;
	DUP(data);
	DUP(pull);
	DUP(rep);
	DUP(pub);
	DUP(http);
	DUP(http_token);
	DUP(cluster);
	DUP(cluster_node);
	DUP(cluster_stream);
	DUP(cluster_key);
	DUP(lua_path);
#undef DUP
	if (c->allow == NULL || c->params == NULL)
		rc = TIDE_ENOMEM;
	for (size_t k = 0; rc == TIDE_OK && k < s->nscripts; k++)
		rc = push_list(&c->scripts, &c->nscripts, s->scripts[k], 0);
	for (size_t k = 0; rc == TIDE_OK && k < s->nallow; k++)
		rc = push_list(&c->allow, &c->nallow, s->allow[k], 1);
	for (size_t k = 0; rc == TIDE_OK && k < s->nparams; k++)
		rc = push_list(&c->params, &c->nparams, s->params[k], 1);
	if (rc != TIDE_OK) {
		tide_config_destroy(c);
		return rc;
	}
	*out = c;
	return TIDE_OK;
}

/* ------------------------------------------------------------------------
 * The Lua config file
 * ------------------------------------------------------------------------ */

/* Resolve @p p against directory @p dir unless it is absolute. */
static char *
resolve(const char *dir, const char *p)
{
	char *out;
	size_t n;

	if (p[0] == '/' || dir[0] == '\0' || strstr(p, "://") != NULL)
		return strdup(p);
	n = strlen(dir) + strlen(p) + 2;
	if ((out = malloc(n)) != NULL)
		snprintf(out, n, "%s/%s", dir, p);
	return out;
}

/* Apply the value at the top of the stack to setting @p key. */
static int
apply(tide_config *c, lua_State *L, const char *key, const char *dir)
{
	const char *v;
	char *path;
	int rc;

	if (lua_type(L, -1) == LUA_TBOOLEAN)
		return tidei_err(c->err, TIDE_ECONFIG, "%s: expected a string or a number", key);
	if (lua_type(L, -1) == LUA_TNUMBER && lua_isinteger(L, -1) && lua_tointeger(L, -1) < 0)
		return tidei_err(c->err, TIDE_ECONFIG, "%s must not be negative", key);
	v = lua_tostring(L, -1);
	if (v == NULL)
		return tidei_err(c->err, TIDE_ECONFIG,
				 "%s: expected a string or a number, got a %s", key,
				 luaL_typename(L, -1));
	if (strcmp(key, "data") == 0) {
		if ((path = resolve(dir, v)) == NULL)
			return TIDE_ENOMEM;
		rc = config_set(c, key, path);
		free(path);
		return rc;
	}
	return config_set(c, key, v);
}

static int
apply_list(tide_config *c, lua_State *L, const char *key, const char *dir)
{
	int rc = TIDE_OK;

	if (lua_type(L, -1) == LUA_TSTRING) {
		lua_newtable(L);
		lua_insert(L, -2);
		lua_rawseti(L, -2, 1);
	}
	if (!lua_istable(L, -1))
		return tidei_err(c->err, TIDE_ECONFIG, "%s must be a list of strings", key);
	for (lua_Integer i = 1; rc == TIDE_OK; i++) {
		const char *v;
		if (lua_rawgeti(L, -1, i) == LUA_TNIL) {
			lua_pop(L, 1);
			break;
		}
		if ((v = lua_tostring(L, -1)) == NULL) {
			lua_pop(L, 1);
			return tidei_err(c->err, TIDE_ECONFIG, "%s[%lld] must be a string", key,
					 (long long)i);
		}
		if (strcmp(key, "scripts") == 0) {
			char *path = resolve(dir, v);
			rc = path ? config_add_script(c, path) : TIDE_ENOMEM;
			free(path);
		} else {
			rc = config_set(c, "allow", v);
		}
		lua_pop(L, 1);
	}
	return rc;
}

/* params = { ["amount.limit"] = 220, ... }: each a param setting. */
static int
apply_params(tide_config *c, lua_State *L)
{
	int rc = TIDE_OK;

	if (!lua_istable(L, -1))
		return tidei_err(c->err, TIDE_ECONFIG,
				 "params must be a table { [\"name\"] = value, ... }");
	lua_pushnil(L);
	while (rc == TIDE_OK && lua_next(L, -2) != 0) {
		const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL, *v;
		if (lua_type(L, -1) == LUA_TBOOLEAN)
			v = lua_toboolean(L, -1) ? "true" : "false";
		else
			v = lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER
				    ? lua_tostring(L, -1)
				    : NULL;
		if (k == NULL || *k == '\0' || strchr(k, '=') != NULL || v == NULL) {
			rc = tidei_err(c->err, TIDE_ECONFIG,
				       "params: each is a name (a string without '=') and a "
				       "string, a number or a boolean");
		} else {
			char *kv = malloc(strlen(k) + strlen(v) + 2);
			if (kv == NULL) {
				rc = TIDE_ENOMEM;
			} else {
				sprintf(kv, "%s=%s", k, v);
				rc = config_set(c, "param", kv);
				free(kv);
			}
		}
		lua_pop(L, 1);
	}
	if (rc != TIDE_OK)
		lua_pop(L, 1); /* the key */
	return rc;
}

static int
apply_endpoints(tide_config *c, lua_State *L)
{
	static const char *const names[] = { "pull", "rep", "pub" };

	if (!lua_istable(L, -1))
		return tidei_err(c->err, TIDE_ECONFIG,
				 "endpoints must be a table {pull=, rep=, pub=}");
	lua_pushnil(L);
	while (lua_next(L, -2) != 0) {
		const char *k = lua_tostring(L, -2);
		int known = 0, rc;
		for (int i = 0; i < 3; i++)
			known |= k != NULL && lua_type(L, -2) == LUA_TSTRING &&
				 strcmp(k, names[i]) == 0;
		if (!known) {
			lua_pop(L, 2);
			return tidei_err(c->err, TIDE_ECONFIG,
					 "endpoints: unknown endpoint '%s' (pull, rep or pub)",
					 k ? k : "?");
		}
		if (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
			lua_pop(L, 1);
			lua_pushliteral(L, ""); /* false turns an endpoint off */
		}
		if ((rc = apply(c, L, k, "")) != TIDE_OK) {
			lua_pop(L, 2);
			return rc;
		}
		lua_pop(L, 1);
	}
	return TIDE_OK;
}

/* What the protected reading of a config file works on. */
typedef struct loading {
	tide_config *c;
	const char *path;
	const char *dir;
	int rc;
} loading;

/* Run the file with its globals going to a fresh table, then apply them.
 * Runs under tidei_script_protect(): errors of the file's code come back
 * from there; those of the settings are in x->rc.  [-1, +0, e] */
static int
l_read_config(lua_State *L)
{
	loading *x = lua_touserdata(L, 1);
	tide_config *c = x->c;
	int env;

	lua_settop(L, 0);
	if (luaL_loadfilex(L, x->path, "t") != LUA_OK) {
		x->rc = tidei_err(c->err, TIDE_ECONFIG, "%s", lua_tostring(L, -1));
		return 0;
	}
	lua_newtable(L); /* env */
	lua_newtable(L); /* its metatable: read through to _G */
	lua_pushglobaltable(L);
	lua_setfield(L, -2, "__index");
	lua_setmetatable(L, -2);
	lua_pushvalue(L, -1);
	lua_setupvalue(L, -3, 1); /* _ENV of the chunk */
	lua_insert(L, 1);         /* env at 1, chunk at 2 */
	env = 1;
	lua_call(L, 0, 0);
	lua_pushnil(L);
	while (x->rc == TIDE_OK && lua_next(L, env) != 0) {
		const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
		if (k == NULL)
			x->rc = tidei_err(c->err, TIDE_ECONFIG,
					  "%s: settings must have string names", x->path);
		else if (strcmp(k, "scripts") == 0 || strcmp(k, "allow") == 0)
			x->rc = apply_list(c, L, k, x->dir);
		else if (strcmp(k, "endpoints") == 0)
			x->rc = apply_endpoints(c, L);
		else if (strcmp(k, "params") == 0)
			x->rc = apply_params(c, L);
		else if (lua_type(L, -1) == LUA_TFUNCTION)
			; /* helper functions defined in the file are fine */
		else if (find_opt(k) == NULL)
			x->rc = tidei_err(c->err, TIDE_ECONFIG, "%s: unknown setting '%s'", x->path,
					  k);
		else
			x->rc = apply(c, L, k, x->dir);
		lua_pop(L, 1);
	}
	return 0;
}

static int
config_load(tide_config *c, const char *path)
{
	tidei_script_opts so;
	tidei_script *s;
	loading x;
	char dir[4096], msg[TIDEI_ERRLEN];
	const char *slash = strrchr(path, '/');
	int rc;

	snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - path) : 0, path);
	if (slash == path)
		snprintf(dir, sizeof dir, "/");
	/* the file gets the defaults, whatever it or the command line sets */
	memset(&so, 0, sizeof so);
	so.instruction_budget = TIDEI_DEFAULT_BUDGET;
	so.time_limit_ns = TIDEI_DEFAULT_TIME_NS;
	so.memory_limit = TIDEI_DEFAULT_MEMORY;
	so.who = "config file";
	if ((rc = tidei_script_new(&s, &so, NULL, msg)) != TIDE_OK)
		return tidei_err(c->err, rc, "%s", msg);
	x.c = c;
	x.path = path;
	x.dir = dir;
	x.rc = TIDE_OK;
	if (tidei_script_protect(s, l_read_config, &x, msg, NULL) != TIDE_OK)
		x.rc = tidei_err(c->err, TIDE_ECONFIG, "%s", msg);
	rc = x.rc;
	if (rc != TIDE_OK && strncmp(c->err, path, strlen(path)) != 0) {
		char tmp[TIDEI_ERRLEN];
		snprintf(tmp, sizeof tmp, "%s", c->err[0] ? c->err : tide_strerror(rc));
		snprintf(c->err, sizeof c->err, "%.100s: %.400s", path, tmp);
	}
	tidei_script_destroy(s);
	return rc;
}

/* ------------------------------------------------------------------------
 * The public calls: their detail goes where tide_errmsg() reads it
 * ------------------------------------------------------------------------ */

static int
done(tide_config *c, int rc)
{
	return tidei_done(rc, c ? c->err : "");
}

TIDE_API int
tide_config_set(tide_config *c, const char *key, const char *value)
{
	if (c != NULL)
		c->err[0] = '\0';
	return done(c, config_set(c, key, value));
}

TIDE_API int
tide_config_add_script(tide_config *c, const char *path)
{
	if (c != NULL)
		c->err[0] = '\0';
	return done(c, config_add_script(c, path));
}

TIDE_API int
tide_config_load(tide_config *c, const char *path)
{
	if (c == NULL || path == NULL)
		return tidei_fail(TIDE_EINVAL, "tide_config_load: the configuration and path must "
					       "not be NULL");
	c->err[0] = '\0';
	return done(c, config_load(c, path));
}
