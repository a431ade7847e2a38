/*
 * cmd_test.c - `tide test`: run scripts over fixtures and compare what they
 * emit with the expectations kept beside them, like a test runner.
 *
 * A case is an NDJSON file of input events, NAME.ndjson, next to
 * NAME.expected.ndjson: the events the scripts must emit, in order, one
 * JSON object per line holding the members to compare (any of type,
 * subject, source, time, data, ...; data compared as JSON values).  Each
 * case runs on a scratch log of its own through tide_backtest(), so
 * timers and windows follow the fixtures' event time.  NAME.state.ndjson,
 * when there is one, holds the projections' and rules' states expected at
 * the end.  NAME.test.lua is a test file in Lua (tide_test_lua(), in
 * testfile.c), each of its cases counted.
 */
#include "config.h"

#include <dirent.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

#include "cli.h"
#include "tide.h"

static const char usage_text[] =
	"usage: tide test --script FILE [options] CASE...\n"
	"\n"
	"Run the scripts over each case's events, on a scratch log of its own with\n"
	"event time as the clock, and compare what they emit with the case's\n"
	"expectations.  A CASE is NAME.ndjson (input events, one per line) beside\n"
	"NAME.expected.ndjson (the emitted events expected, in order, each a JSON\n"
	"object of the members to compare: type, subject, data, time...), or a\n"
	"directory of such files.  With NAME.state.ndjson beside them too, the\n"
	"states at the end must be those it lists, one per line: a projection's\n"
	"{\"projection\":P,\"key\":K,\"state\":{...}} or a rule's\n"
	"{\"rule\":R,\"key\":K,\"state\":{...}} (when it lists any of either kind,\n"
	"it lists all the states of that kind).\n"
	"\n"
	"A CASE may also be a test file in Lua, NAME.test.lua, whose\n"
	"test(name, function(t) ... end) are cases of their own: t:send{event}\n"
	"sends an event (time may be t.at(base, seconds)), t:set(name, value) a\n"
	"parameter; t:emitted([pattern]), t:state(projection, key) and\n"
	"t:rule(rule, key) give what the scripts did with what was sent, and\n"
	"t:eq(got, want), t:has(got, want), t:expect({event...}, [pattern]) and\n"
	"t:ok(value) check it, a failure naming its line.\n"
	"\n"
	"options:\n"
	"  -s, --script FILE   script to run (repeatable)\n"
	"      --set NAME=VALUE  the scripts' tide.param(NAME, default) gives VALUE\n"
	"                      (repeatable; --param is the same)\n"
	"      --params FILE   the same from a file of NAME = VALUE lines (lines\n"
	"                      starting with # are comments); a later value wins\n"
	"      --update        write NAME.expected.ndjson from what the scripts emit\n"
	"                      (type, subject and data of each), and NAME.state.ndjson\n"
	"                      from the projections' and rules' states, instead of\n"
	"                      comparing\n"
	"  -v, --verbose       print every emitted event of a failing case\n"
	"  -q, --quiet         only failures and the final line\n"
	"  -h, --help          show this help\n"
	"\n"
	"exit status: 0 every case passed, 1 some failed (or could not run),\n"
	"2 usage error.\n";

typedef struct emitted {
	char **json; /* what was emitted, in order */
	size_t n, cap;
	char **states; /* projections' states: {"projection":P,"key":K,"state":S} */
	size_t ns, scap;
} emitted;

/* Append @p s (taken) to @p v. */
static void
push(char ***v, size_t *n, size_t *cap, char *s)
{
	char **nv;

	if (s == NULL)
		return;
	if (*n == *cap) {
		size_t c = *cap ? *cap * 2 : 64;
		if ((nv = realloc(*v, c * sizeof *nv)) == NULL) {
			free(s);
			return;
		}
		*v = nv;
		*cap = c;
	}
	(*v)[(*n)++] = s;
}

typedef struct opts {
	const char **scripts;
	const char **sets; /* params.v */
	cli_params params;
	int update, verbose, quiet;
	size_t passed, failed;
} opts;

typedef struct lua_case {
	opts *o;
	const char *file;
} lua_case;

static void
on_item(void *ud, const tide_backtest_item *it)
{
	emitted *g = ud;
	const char *json;
	size_t len;

	if (it->kind == TIDE_BACKTEST_STATE || it->kind == TIDE_BACKTEST_RULE) {
		/* as a line of NAME.state.ndjson */
		const char *whose = it->kind == TIDE_BACKTEST_RULE ? "rule" : "projection";
		yajl_gen y = yajl_gen_alloc(NULL);
		const unsigned char *buf;
		size_t blen;
		char *line;
		if (y == NULL)
			return;
		yajl_gen_map_open(y);
		yajl_gen_string(y, (const unsigned char *)whose, strlen(whose));
		yajl_gen_string(y, (const unsigned char *)it->consumer, strlen(it->consumer));
		yajl_gen_string(y, (const unsigned char *)"key", 3);
		yajl_gen_string(y, (const unsigned char *)it->type, strlen(it->type));
		yajl_gen_get_buf(y, &buf, &blen);
		/* the map is left open: the state goes in as it is */
		if ((line = malloc(blen + it->len + 12)) != NULL)
			sprintf(line, "%.*s,\"state\":%.*s}", (int)blen, buf, (int)it->len,
				it->json);
		yajl_gen_free(y);
		push(&g->states, &g->ns, &g->scap, line);
		return;
	}
	if (it->kind != TIDE_BACKTEST_EMIT || tide_event_json(it->ev, &json, &len) != TIDE_OK)
		return;
	push(&g->json, &g->n, &g->cap, strndup(json, len));
}

/* JSON values equal: numbers by value, objects whatever their order. */
static int
same(yajl_val a, yajl_val b)
{
	if (a == NULL || b == NULL)
		return a == b;
	if (YAJL_IS_NUMBER(a) && YAJL_IS_NUMBER(b))
		return YAJL_GET_DOUBLE(a) == YAJL_GET_DOUBLE(b) ||
		       (YAJL_IS_INTEGER(a) && YAJL_IS_INTEGER(b) &&
			YAJL_GET_INTEGER(a) == YAJL_GET_INTEGER(b));
	if (a->type != b->type)
		return 0;
	switch (a->type) {
	case yajl_t_string: return strcmp(a->u.string, b->u.string) == 0;
	case yajl_t_true:
	case yajl_t_false:
	case yajl_t_null: return 1;
	case yajl_t_array:
		if (a->u.array.len != b->u.array.len)
			return 0;
		for (size_t i = 0; i < a->u.array.len; i++)
			if (!same(a->u.array.values[i], b->u.array.values[i]))
				return 0;
		return 1;
	case yajl_t_object:
		if (a->u.object.len != b->u.object.len)
			return 0;
		for (size_t i = 0; i < a->u.object.len; i++) {
			const char *path[] = { a->u.object.keys[i], NULL };
			if (!same(a->u.object.values[i], yajl_tree_get(b, path, yajl_t_any)))
				return 0;
		}
		return 1;
	default: return 0;
	}
}

/* The expected event @p want (its members) matches the emitted @p got. */
static int
matches(const char *want, const char *got, char *why, size_t n)
{
	char err[128];
	yajl_val w = yajl_tree_parse(want, err, sizeof err), g;
	int ok = 1;

	if (w == NULL || !YAJL_IS_OBJECT(w)) {
		snprintf(why, n, "the expectation is not a JSON object");
		yajl_tree_free(w);
		return 0;
	}
	g = yajl_tree_parse(got, err, sizeof err);
	for (size_t i = 0; g != NULL && i < w->u.object.len && ok; i++) {
		const char *path[] = { w->u.object.keys[i], NULL };
		if (!same(w->u.object.values[i], yajl_tree_get(g, path, yajl_t_any))) {
			snprintf(why, n, "%s differs", w->u.object.keys[i]);
			ok = 0;
		}
	}
	yajl_tree_free(w);
	yajl_tree_free(g);
	return ok;
}

/* Read @p path's non-empty lines into a malloc'd array; -1 if it cannot be
 * read. */
static long
read_lines(const char *path, char ***out)
{
	FILE *f = fopen(path, "r");
	char *line = NULL, **v = NULL;
	size_t cap = 0, n = 0, vcap = 0;
	ssize_t len;

	*out = NULL;
	if (f == NULL)
		return -1;
	while ((len = getline(&line, &cap, f)) > 0) {
		while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			line[--len] = '\0';
		if (len == 0)
			continue;
		if (n == vcap) {
			char **nv;
			vcap = vcap ? vcap * 2 : 16;
			if ((nv = realloc(v, vcap * sizeof *nv)) == NULL)
				break;
			v = nv;
		}
		v[n++] = strdup(line);
	}
	free(line);
	fclose(f);
	*out = v;
	return (long)n;
}

static void
free_lines(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

/* type, subject and data of emitted event @p json, as an expectation. */
static void
print_expectation(FILE *f, const char *json)
{
	static const char *const keep[] = { "type", "subject" };
	char err[128];
	yajl_val v = yajl_tree_parse(json, err, sizeof err);
	const char *data = strstr(json, ",\"data\":");
	int first = 1;

	fputc('{', f);
	for (size_t k = 0; k < 2; k++) {
		const char *path[] = { keep[k], NULL };
		yajl_val s = yajl_tree_get(v, path, yajl_t_string);
		yajl_gen g;
		const unsigned char *buf;
		size_t len;
		if (s == NULL || (g = yajl_gen_alloc(NULL)) == NULL)
			continue;
		yajl_gen_string(g, (const unsigned char *)s->u.string, strlen(s->u.string));
		yajl_gen_get_buf(g, &buf, &len);
		fprintf(f, "%s\"%s\":%.*s", first ? "" : ",", keep[k], (int)len, buf);
		yajl_gen_free(g);
		first = 0;
	}
	/* data is the event's last member: as it is, without the closing brace */
	if (data != NULL)
		fprintf(f, "%s%.*s", first ? "" : ",", (int)(strlen(data) - 2), data + 1);
	fputs("}\n", f);
	yajl_tree_free(v);
}

/* Whether expectation @p want checks only type, subject and data: then
 * what was emitted is shown as such an expectation, the rest left out. */
static int
plain_expectation(const char *want)
{
	char err[128];
	yajl_val v = yajl_tree_parse(want, err, sizeof err);
	int plain = v != NULL && YAJL_IS_OBJECT(v);

	for (size_t k = 0; plain && k < v->u.object.len; k++) {
		const char *m = v->u.object.keys[k];
		plain = strcmp(m, "type") == 0 || strcmp(m, "subject") == 0 ||
			strcmp(m, "data") == 0;
	}
	yajl_tree_free(v);
	return plain;
}

/* Whose state line @p line is: 0 a projection's, 1 a rule's, -1 neither. */
static int
whose(const char *line)
{
	if (strncmp(line, "{\"projection\":", 14) == 0)
		return 0;
	if (strncmp(line, "{\"rule\":", 8) == 0)
		return 1;
	return -1;
}

/* The states at the end against NAME.state.ndjson, when there is one:
 * each line's state must be the one the projection (or the rule) holds
 * for that key, and when the file lists states of projections (of rules),
 * those are all the projections (rules) hold.  1 if they agree (or there
 * is nothing to check). */
static int
check_states(const char *input, const char *path, const emitted *g)
{
	static const char *const kinds[] = { "projection", "rule" };
	char **want = NULL, why[256];
	long n = read_lines(path, &want);
	int ok = 1;

	if (n < 0)
		return 1; /* no expectations about states */
	for (long i = 0; i < n && ok; i++) {
		size_t k;
		if (whose(want[i]) < 0) {
			printf("FAIL %s\n  %s:%ld: not {\"projection\":P,...} nor "
			       "{\"rule\":R,...}\n",
			       input, path, i + 1);
			ok = 0;
			break;
		}
		for (k = 0; k < g->ns; k++)
			if (matches(want[i], g->states[k], why, sizeof why))
				break;
		if (k == g->ns) {
			const char *key = strstr(want[i], ",\"key\":");
			printf("FAIL %s\n  a state differs or is missing (%s:%ld):\n  - expected "
			       "%s\n",
			       input, path, i + 1, want[i]);
			/* the one held for the same projection (rule) and key, if any */
			for (k = 0; key != NULL && k < g->ns; k++) {
				const char *gk = strstr(g->states[k], ",\"key\":");
				size_t kl = strcspn(key + 7, ",");
				if (gk != NULL && gk - g->states[k] == key - want[i] &&
				    memcmp(g->states[k], want[i], (size_t)(key - want[i])) == 0 &&
				    strncmp(gk + 7, key + 7, kl) == 0 && gk[7 + kl] == ',')
					printf("  + held     %s\n", g->states[k]);
			}
			ok = 0;
		}
	}
	for (size_t kd = 0; kd < 2 && ok; kd++) {
		size_t nw = 0, ng = 0;
		for (long i = 0; i < n; i++)
			nw += whose(want[i]) == (int)kd;
		for (size_t k = 0; k < g->ns; k++)
			ng += whose(g->states[k]) == (int)kd;
		if (nw > 0 && nw != ng) {
			printf("FAIL %s\n  the %ss hold %zu states, %s expects %zu\n", input,
			       kinds[kd], ng, path, nw);
			ok = 0;
		}
	}
	free_lines(want, n > 0 ? (size_t)n : 0);
	return ok;
}

/* One case: @p input (NAME.ndjson).  1 passed, 0 failed. */
static int
run_case(opts *o, const char *input)
{
	tide_backtest_opts bo;
	emitted g = { 0 };
	char expected[4200], states[4200], why[256] = "";
	char **want = NULL;
	long nwant;
	size_t base = strlen(input) - strlen(".ndjson");
	int rc, ok = 1;

	snprintf(expected, sizeof expected, "%.*s.expected.ndjson", (int)base, input);
	snprintf(states, sizeof states, "%.*s.state.ndjson", (int)base, input);
	memset(&bo, 0, sizeof bo);
	bo.scripts = o->scripts;
	bo.sets = o->sets;
	bo.input = input;
	rc = tide_backtest(&bo, on_item, &g);
	if (rc != TIDE_OK) {
		printf("FAIL %s\n  could not run: %s\n", input, tide_errmsg());
		free_lines(g.json, g.n);
		free_lines(g.states, g.ns);
		return 0;
	}
	if (o->update) {
		FILE *f = fopen(expected, "w");
		if (f == NULL) {
			printf("FAIL %s\n  cannot write %s\n", input, expected);
			ok = 0;
		} else {
			for (size_t i = 0; i < g.n; i++)
				print_expectation(f, g.json[i]);
			fclose(f);
			if (!o->quiet)
				printf("UPDATED %s (%zu emitted)\n", expected, g.n);
		}
		if (ok && g.ns > 0) {
			FILE *sf = fopen(states, "w");
			if (sf == NULL) {
				printf("FAIL %s\n  cannot write %s\n", input, states);
				ok = 0;
			} else {
				for (size_t i = 0; i < g.ns; i++)
					fprintf(sf, "%s\n", g.states[i]);
				fclose(sf);
				if (!o->quiet)
					printf("UPDATED %s (%zu states)\n", states, g.ns);
			}
		}
		free_lines(g.json, g.n);
		free_lines(g.states, g.ns);
		return ok;
	}
	if ((nwant = read_lines(expected, &want)) < 0) {
		printf("FAIL %s\n  no %s (tide test --update writes it)\n", input, expected);
		free_lines(g.json, g.n);
		free_lines(g.states, g.ns);
		return 0;
	}
	for (size_t i = 0; i < (size_t)nwant || i < g.n; i++) {
		if (i >= (size_t)nwant || i >= g.n ||
		    !matches(want[i], g.json[i], why, sizeof why)) {
			printf("FAIL %s\n", input);
			if (i >= (size_t)nwant)
				printf("  emitted %zu events, %ld expected; the first unexpected:\n"
				       "  + %s\n",
				       g.n, nwant, g.json[i]);
			else if (i >= g.n)
				printf("  emitted %zu events, %ld expected; the first missing:\n"
				       "  - %s\n",
				       g.n, nwant, want[i]);
			else if (plain_expectation(want[i])) {
				printf("  event %zu: %s\n  - expected %s\n  + got      ", i + 1,
				       why, want[i]);
				print_expectation(stdout, g.json[i]);
			} else
				printf("  event %zu: %s\n  - expected %s\n  + got      %s\n", i + 1,
				       why, want[i], g.json[i]);
			if (o->verbose)
				for (size_t k = 0; k < g.n; k++)
					printf("    %zu: %s\n", k + 1, g.json[k]);
			ok = 0;
			break;
		}
	}
	if (ok)
		ok = check_states(input, states, &g);
	if (ok && !o->quiet)
		printf("PASS %s (%zu emitted%s)\n", input, g.n, g.ns ? ", states checked" : "");
	free_lines(want, (size_t)nwant);
	free_lines(g.json, g.n);
	free_lines(g.states, g.ns);
	return ok;
}

static void
on_result(void *ud, const tide_test_result *r)
{
	lua_case *lc = ud;

	if (r->passed) {
		lc->o->passed++;
		if (!lc->o->quiet)
			printf("PASS %s: %s (%llu emitted)\n", lc->file, r->name,
			       (unsigned long long)r->emitted);
		return;
	}
	lc->o->failed++;
	printf("FAIL %s: %s\n  %s\n", lc->file, r->name, r->message ? r->message : "failed");
}

/* A test file in Lua: each of its cases counts. */
static void
run_lua_case(opts *o, const char *file)
{
	tide_test_opts to;
	lua_case lc = { o, file };

	memset(&to, 0, sizeof to);
	to.scripts = o->scripts;
	to.sets = o->sets;
	to.file = file;
	if (tide_test_lua(&to, on_result, &lc) != TIDE_OK) {
		printf("FAIL %s\n  %s\n", file, tide_errmsg());
		o->failed++;
	}
}

static int
is_lua_case(const char *name)
{
	size_t n = strlen(name);

	return n > 9 && strcmp(name + n - 9, ".test.lua") == 0;
}

static int
is_case(const char *name)
{
	size_t n = strlen(name);

	if (is_lua_case(name))
		return 1;
	return n > 7 && strcmp(name + n - 7, ".ndjson") == 0 &&
	       !(n > 16 && strcmp(name + n - 16, ".expected.ndjson") == 0) &&
	       !(n > 13 && strcmp(name + n - 13, ".state.ndjson") == 0);
}

static int
by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A case file, or every case in a directory (in name order). */
static void
run_path(opts *o, const char *path)
{
	struct stat st;
	DIR *d;
	struct dirent *e;
	char **names = NULL;
	size_t n = 0, cap = 0;

	if (stat(path, &st) != 0) {
		printf("FAIL %s\n  no such file or directory\n", path);
		o->failed++;
		return;
	}
	if (!S_ISDIR(st.st_mode) && is_lua_case(path)) {
		run_lua_case(o, path);
		return;
	}
	if (!S_ISDIR(st.st_mode)) {
		if (run_case(o, path))
			o->passed++;
		else
			o->failed++;
		return;
	}
	if ((d = opendir(path)) == NULL) {
		printf("FAIL %s\n  cannot read the directory\n", path);
		o->failed++;
		return;
	}
	while ((e = readdir(d)) != NULL) {
		char **v;
		if (!is_case(e->d_name))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			if ((v = realloc(names, cap * sizeof *v)) == NULL)
				break;
			names = v;
		}
		if ((names[n] = malloc(strlen(path) + strlen(e->d_name) + 2)) != NULL)
			sprintf(names[n++], "%s/%s", path, e->d_name);
	}
	closedir(d);
	if (n > 1)
		qsort(names, n, sizeof *names, by_name);
	for (size_t i = 0; i < n; i++)
		run_path(o, names[i]);
	if (n == 0) {
		printf("FAIL %s\n  no cases (NAME.ndjson, NAME.test.lua) in it\n", path);
		o->failed++;
	}
	free_lines(names, n);
}

int
cmd_test(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "script", required_argument, NULL, 's' },
		{ "set", required_argument, NULL, 'S' },
		{ "param", required_argument, NULL, 'M' },
		{ "params", required_argument, NULL, 'X' },
		{ "update", no_argument, NULL, 'u' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	opts o;
	size_t n = 0;
	int c, rc = CLI_USAGE;

	memset(&o, 0, sizeof o);
	optind = 1;
	while ((c = getopt_long(argc, argv, "s:vqh", longopts, NULL)) != -1) {
		switch (c) {
		case 's': {
			const char **v = realloc(o.scripts, (n + 2) * sizeof *v);
			if (v == NULL) {
				free(o.scripts);
				return CLI_FAIL;
			}
			o.scripts = v;
			o.scripts[n++] = optarg;
			o.scripts[n] = NULL;
			break;
		}
		case 'S':
		case 'M':
			if (cli_params_add("test", c == 'S' ? "set" : "param", &o.params, optarg) !=
			    0)
				goto out;
			o.sets = (const char **)o.params.v;
			break;
		case 'X':
			if (cli_params_file("test", &o.params, optarg) != 0) {
				rc = CLI_FAIL; /* what the file holds, not how it was asked */
				goto out;
			}
			o.sets = (const char **)o.params.v;
			break;
		case 'u': o.update = 1; break;
		case 'v': o.verbose = 1; break;
		case 'q': o.quiet = 1; break;
		case 'h':
			fputs(usage_text, stdout);
			rc = CLI_OK;
			goto out;
		default: cli_try_help("test"); goto out;
		}
	}
	if (n == 0 || optind >= argc) {
		cli_error("test", n == 0 ? "name a script (--script FILE)"
					 : "name a case (NAME.ndjson) or a directory of them");
		goto out;
	}
	for (int i = optind; i < argc; i++)
		run_path(&o, argv[i]);
	printf("%zu passed, %zu failed\n", o.passed, o.failed);
	rc = o.failed ? CLI_FAIL : CLI_OK;
out:
	free(o.scripts);
	cli_params_free(&o.params);
	return rc;
}
