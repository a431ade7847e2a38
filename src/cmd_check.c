/*
 * cmd_check.c - `tide check`: load scripts as `tide run` would, without a
 * log or an engine, and list what they define or say why they do not load.
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "tide.h"

static const char usage_text[] =
	"usage: tide check [options] FILE...\n"
	"\n"
	"Load the scripts in order into one sandbox, as 'tide run --script FILE...'\n"
	"would, without a data directory or a running engine.  For each script,\n"
	"list the consumers (and for a rule: its key, ttl, clock, windows and timer\n"
	"handlers) and projections it defines, or report its errors with file:line\n"
	"on stderr.  Every script is loaded, whatever failed before it.\n"
	"\n"
	"options:\n"
	"      --json     one JSON object per line instead: kind (script, error,\n"
	"                 consumer, window, timer, projection), script, name, owner,\n"
	"                 detail, where\n"
	"  -q, --quiet    no listing: errors and the summary only\n"
	"  -h, --help     show this help\n"
	"\n"
	"exit status: 0 every script loaded, 1 some did not, 2 usage error.\n";

typedef struct out {
	int json, quiet;
	size_t scripts, failed;
	const char *last_failed;
} out;

static const char *const kinds[] = {
	"script", "error", "consumer", "window", "timer", "projection"
};

static void
json_field(const char *name, const char *value, int *first)
{
	if (value == NULL)
		return;
	printf("%s\"%s\":", *first ? "" : ",", name);
	cli_json_string(value);
	*first = 0;
}

static void
on_item(void *ud, const tide_check_item *it)
{
	out *o = ud;
	int first = 1;

	if (it->kind == TIDE_CHECK_SCRIPT)
		o->scripts++;
	if (it->kind == TIDE_CHECK_ERROR && o->last_failed != it->script) {
		o->failed++;
		o->last_failed = it->script;
	}
	if (o->json) {
		fputc('{', stdout);
		json_field("kind", kinds[it->kind], &first);
		json_field("script", it->script, &first);
		json_field("name", it->name, &first);
		json_field("owner", it->owner, &first);
		json_field("detail", it->detail, &first);
		json_field("where", it->where, &first);
		fputs("}\n", stdout);
		return;
	}
	switch (it->kind) {
	case TIDE_CHECK_SCRIPT:
		if (!o->quiet)
			printf("%s\n", it->script);
		break;
	case TIDE_CHECK_ERROR:
		fflush(stdout);
		fprintf(stderr, "%s\n", it->detail);
		break;
	case TIDE_CHECK_CONSUMER:
		if (!o->quiet)
			printf("  consumer %s%s%s%s: %s\n", it->name, it->where ? " (" : "",
			       it->where ? it->where : "", it->where ? ")" : "", it->detail);
		break;
	case TIDE_CHECK_WINDOW:
		if (!o->quiet)
			printf("    window %s: %s\n", it->name, it->detail);
		break;
	case TIDE_CHECK_TIMER:
		if (!o->quiet)
			printf("    timer %s\n", it->name);
		break;
	default:
		if (!o->quiet)
			printf("  projection %s%s%s%s: %s\n", it->name, it->where ? " (" : "",
			       it->where ? it->where : "", it->where ? ")" : "", it->detail);
	}
}

int
cmd_check(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	out o = { 0 };
	int c, rc;

	optind = 1;
	while ((c = getopt_long(argc, argv, "qh", longopts, NULL)) != -1) {
		switch (c) {
		case 'j': o.json = 1; break;
		case 'q': o.quiet = 1; break;
		case 'h': fputs(usage_text, stdout); return CLI_OK;
		default: return cli_try_help("check");
		}
	}
	if (optind >= argc) {
		cli_error("check", "name at least one script");
		fputs(usage_text, stderr);
		return CLI_USAGE;
	}
	rc = tide_check((const char *const *)&argv[optind], on_item, &o);
	fflush(stdout);
	if (rc != TIDE_OK && rc != TIDE_ESCRIPT) {
		cli_error("check", "%s", tide_errmsg());
		return CLI_FAIL;
	}
	if (!o.json && o.failed == 0)
		fprintf(stderr, "tide check: %zu script%s, all loaded\n", o.scripts,
			o.scripts == 1 ? "" : "s");
	else if (!o.json)
		fprintf(stderr, "tide check: %zu script%s, %zu with errors\n", o.scripts,
			o.scripts == 1 ? "" : "s", o.failed);
	return o.failed ? CLI_FAIL : CLI_OK;
}
