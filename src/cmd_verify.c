/*
 * cmd_verify.c - `tide verify`: check every database of a log and say
 * what is damaged (works while the engine runs: it reads a snapshot).
 * Exit status 0 when nothing is wrong, 1 when damage was found or the
 * log cannot be read, 2 for a usage error.
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "tide.h"

static const char usage_text[] =
	"usage: tide verify [options]\n"
	"\n"
	"Check every database of the log and report what is damaged: one line per\n"
	"problem (database, key or seq, what is wrong), then a count per database.\n"
	"Safe while the engine runs.  Exit status 0: no damage found; 1: damage\n"
	"found, or the log cannot be read.\n"
	"\n"
	"options:\n"
	"  -m, --max N             list at most N problems per database (default 100;\n"
	"                          0: all); the others are counted\n"
	"  -d, --data DIR          data directory (default ./tide-data)\n"
	"  -h, --help              show this help\n";

#define NDBS 16

typedef struct verify_ctx {
	unsigned long long max;
	struct {
		const char *db;
		unsigned long long shown;
	} seen[NDBS];
	int nseen;
	unsigned long long hidden;
	int listed, header;
	char damaged[256]; /* names of the databases with problems */
} verify_ctx;

static unsigned long long *
shown_in(verify_ctx *v, const char *db)
{
	for (int i = 0; i < v->nseen; i++)
		if (strcmp(v->seen[i].db, db) == 0)
			return &v->seen[i].shown;
	if (v->nseen == NDBS)
		return &v->seen[NDBS - 1].shown;
	v->seen[v->nseen].db = db; /* the library's static names */
	v->seen[v->nseen].shown = 0;
	return &v->seen[v->nseen++].shown;
}

static int
on_item(void *ud, const tide_verify_item *it)
{
	verify_ctx *v = ud;

	if (it->kind == TIDE_VERIFY_PROBLEM) {
		unsigned long long *shown = shown_in(v, it->db);
		if (v->max && *shown >= v->max) {
			v->hidden++;
			return 0;
		}
		(*shown)++;
		v->listed = 1;
		printf("%s", it->db);
		if (it->key[0] != '\0')
			printf(" \"%s\"", it->key);
		if (it->seq != 0)
			printf(" seq %llu", (unsigned long long)it->seq);
		printf(": %s\n", it->what);
		return 0;
	}
	if (!v->header)
		printf("%s%-12s %12s %9s\n", v->listed ? "\n" : "", "database", "entries",
		       "problems");
	v->header = 1;
	printf("%-12s %12llu %9llu%s\n", it->db, (unsigned long long)it->entries,
	       (unsigned long long)it->problems,
	       it->complete       ? ""
	       : it->entries == 0 ? "  (not read)"
				  : "  (not read to the end)");
	if (it->problems > 0) {
		size_t n = strlen(v->damaged);
		snprintf(v->damaged + n, sizeof v->damaged - n, "%s%s", n ? ", " : " ", it->db);
	}
	return 0;
}

int
cmd_verify(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "max", required_argument, NULL, 'm' },
		{ "data", required_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *data = "./tide-data";
	verify_ctx v;
	uint64_t problems = 0;
	char *end;
	int c, rc;

	memset(&v, 0, sizeof v);
	v.max = 100;
	optind = 1;
	while ((c = getopt_long(argc, argv, "m:d:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'm':
			v.max = strtoull(optarg, &end, 10);
			if (optarg[0] == '-' || end == optarg || *end != '\0') {
				cli_error("verify", "'%s' is not a number", optarg);
				return CLI_USAGE;
			}
			break;
		case 'd': data = optarg; break;
		case 'h': fputs(usage_text, stdout); return CLI_OK;
		default: return cli_try_help("verify");
		}
	}
	if (optind < argc) {
		cli_error("verify", "unexpected argument '%s'", argv[optind]);
		return CLI_USAGE;
	}
	fflush(stdout);
	if ((rc = tide_log_verify(data, on_item, &v, &problems)) != TIDE_OK) {
		cli_error("verify", "%s", tide_errmsg());
		return CLI_FAIL;
	}
	if (v.hidden > 0)
		printf("(%llu more problems not listed; --max 0 lists them all)\n", v.hidden);
	if (problems == 0)
		printf("no damage found in %s\n", data);
	else
		printf("%llu problem%s found in%s: the log in %s is damaged\n",
		       (unsigned long long)problems, problems == 1 ? "" : "s", v.damaged, data);
	if (fflush(stdout) != 0 || ferror(stdout))
		return CLI_FAIL;
	return problems == 0 ? CLI_OK : CLI_FAIL;
}
