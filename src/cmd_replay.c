/*
 * cmd_replay.c - `tide replay`: time travel.  Runs scripts over the log up
 * to a seq or a time, in memory, and prints what their projections would
 * hold and what their consumers would emit.  The log and the live state
 * are only read.
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <yajl/yajl_gen.h>

#include "cli.h"
#include "tide.h"

static const char usage_text[] =
	"usage: tide replay --script FILE [options]\n"
	"\n"
	"Run FILE's projections and consumers over the stored log, from the first\n"
	"event up to --until, without touching the live state.  Prints, one JSON\n"
	"object per line:\n"
	"  {\"key\":K,\"state\":S}                the state of each key, at the end\n"
	"                                       (with \"projection\" when there are several)\n"
	"  {\"emit\":EVENT,\"consumer\":C,\"cause\":SEQ}  what a consumer would have emitted\n"
	"Handler failures go to stderr.\n"
	"\n"
	"options:\n"
	"  -s, --script FILE       script to run (repeatable)\n"
	"  -u, --until SEQ|TIME    stop after this seq, or after the last event recorded\n"
	"                          at or before an RFC 3339 time (default: the end)\n"
	"  -p, --projection NAME   only this projection (and no consumer output)\n"
	"      --no-emits          do not print what consumers would emit\n"
	"  -q, --quiet             no progress on stderr\n"
	"  -d, --data DIR          data directory (default ./tide-data)\n"
	"  -h, --help              show this help\n"
	"\n"
	"exit status: 0 done, 1 a handler failed or the replay could not run.\n";

typedef struct out {
	int several; /* more than one projection may report */
	int emits;
	int failures;
	int tty;
} out;

static void
gen_print_string(const char *s, size_t n)
{
	yajl_gen g = yajl_gen_alloc(NULL);
	const unsigned char *buf;
	size_t len;

	if (g == NULL)
		return;
	yajl_gen_string(g, (const unsigned char *)s, n);
	yajl_gen_get_buf(g, &buf, &len);
	fwrite(buf, 1, len, stdout);
	yajl_gen_free(g);
}

static int
on_item(void *ud, const tide_replay_item *it)
{
	out *o = ud;

	switch (it->kind) {
	case TIDE_REPLAY_STATE:
		fputc('{', stdout);
		if (o->several) {
			fputs("\"projection\":", stdout);
			gen_print_string(it->name, strlen(it->name));
			fputc(',', stdout);
		}
		fputs("\"key\":", stdout);
		gen_print_string(it->key, it->klen);
		printf(",\"state\":%.*s}\n", (int)it->len, it->json);
		break;
	case TIDE_REPLAY_EMIT:
		if (!o->emits)
			break;
		printf("{\"emit\":%.*s,\"consumer\":", (int)it->len, it->json);
		gen_print_string(it->name, strlen(it->name));
		printf(",\"cause\":%llu}\n", (unsigned long long)it->seq);
		break;
	case TIDE_REPLAY_ERROR:
		o->failures++;
		fprintf(stderr, "tide replay: %s failed on event %llu: %.*s\n", it->name,
			(unsigned long long)it->seq, (int)it->len, it->json);
		break;
	}
	return ferror(stdout) ? 1 : 0;
}

static void
progress(void *ud, uint64_t done, uint64_t total)
{
	out *o = ud;

	if (o->tty)
		fprintf(stderr, "\rtide replay: %llu of %llu events (%.0f%%)%s",
			(unsigned long long)done, (unsigned long long)total,
			total ? 100.0 * (double)done / (double)total : 100.0,
			done >= total ? "\n" : "");
}

int
cmd_replay(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "script", required_argument, NULL, 's' },
		{ "until", required_argument, NULL, 'u' },
		{ "projection", required_argument, NULL, 'p' },
		{ "no-emits", no_argument, NULL, 'E' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "data", required_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	tide_replay_opts ro;
	out o = { 1, 1, 0, isatty(STDERR_FILENO) };
	const char **scripts = NULL;
	size_t nscripts = 0;
	int c, rc, quiet = 0;

	memset(&ro, 0, sizeof ro);
	ro.data = "./tide-data";
	optind = 1;
	while ((c = getopt_long(argc, argv, "s:u:p:qd:h", longopts, NULL)) != -1) {
		switch (c) {
		case 's': {
			const char **v = realloc(scripts, (nscripts + 2) * sizeof *v);
			if (v == NULL) {
				free(scripts);
				return CLI_FAIL;
			}
			scripts = v;
			scripts[nscripts++] = optarg;
			scripts[nscripts] = NULL;
			break;
		}
		case 'u': {
			char *end;
			unsigned long long seq = strtoull(optarg, &end, 10);
			if (*end == '\0' && optarg[0] != '-' && end != optarg) {
				ro.until = seq;
				if (seq == 0) {
					cli_error("replay",
						  "--until takes a seq from 1, or a time");
					free(scripts);
					return CLI_USAGE;
				}
			} else if ((ro.until_time = cli_time(optarg)) < 0) {
				cli_error("replay",
					  "--until takes a seq or an RFC 3339 time, not '%s'",
					  optarg);
				free(scripts);
				return CLI_USAGE;
			}
			break;
		}
		case 'p': ro.projection = optarg; break;
		case 'E': o.emits = 0; break;
		case 'q': quiet = 1; break;
		case 'd': ro.data = optarg; break;
		case 'h':
			fputs(usage_text, stdout);
			free(scripts);
			return CLI_OK;
		default:
			cli_try_help("replay");
			free(scripts);
			return CLI_USAGE;
		}
	}
	if (nscripts == 0 || optind < argc) {
		if (optind < argc)
			cli_error("replay", "unexpected argument '%s'", argv[optind]);
		else
			cli_error("replay", "give the script to run with --script FILE");
		free(scripts);
		return CLI_USAGE;
	}
	if (ro.projection != NULL) {
		o.several = 0;
		o.emits = 0;
	}
	ro.scripts = scripts;
	if (!quiet) {
		ro.progress = progress;
		ro.progress_ud = &o;
	}
	rc = tide_replay(&ro, on_item, &o);
	free(scripts);
	if (rc != TIDE_OK) {
		cli_error("replay", "%s", tide_errmsg());
		return CLI_FAIL;
	}
	if (fflush(stdout) != 0)
		return CLI_FAIL;
	return o.failures ? CLI_FAIL : CLI_OK;
}
