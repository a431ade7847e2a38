/*
 * cmd_backtest.c - `tide backtest`: scripts over past events (a file, or
 * the stored log) on a scratch log of their own, as a live engine would
 * run them; what they emitted, counted, and scored against labels.  With
 * --sweep, the same for each combination of the swept values, and a table
 * that compares them.
 */
#include "config.h"

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "tide.h"

/* --threads: more than variants (64 at most) is no use. */
#define MAX_THREADS 64

static const char usage_text[] =
	"usage: tide backtest --script FILE [options] [EVENTS]\n"
	"\n"
	"Run the scripts over past events as a live engine would, on a scratch log\n"
	"of their own: the events are appended a batch at a time and the consumers\n"
	"and projections run over them turn by turn, so emits reach projections and\n"
	"other consumers, and timers and windows follow event time.  Nothing is\n"
	"written to the log read.  A summary goes to stdout (to stderr with --emits):\n"
	"events read, what each consumer emitted by type, and with labels the\n"
	"precision, recall and F1 of the flagged events, overall and per consumer.\n"
	"With --sweep, the input is read once and every combination of the swept\n"
	"values runs on a scratch log and scripts of its own: the summary of each,\n"
	"then a table of them, the best F1 (or NAB score) marked.\n"
	"\n"
	"input:\n"
	"  EVENTS                  NDJSON events ('-': stdin); without it, the log in --data\n"
	"  -s, --script FILE       script to run (repeatable)\n"
	"      --set NAME=VALUE    the scripts' tide.param(NAME, default) gives VALUE\n"
	"                          (repeatable; --param is the same)\n"
	"      --params FILE       the same from a file of NAME = VALUE lines (lines\n"
	"                          starting with # are comments); a later value wins\n"
	"      --sweep NAME=V,V... each of these values of NAME in turn (repeatable:\n"
	"                          every combination, 64 at most); wins over --set\n"
	"      --threads N         variants run at once, a thread each (default: one per\n"
	"                          CPU; 1: one after the other)\n"
	"  -d, --data DIR          the log to read (default ./tide-data)\n"
	"      --from SEQ|TIME     from this seq of the log, or from this event time\n"
	"      --until SEQ|TIME    up to this seq of the log, or this event time (RFC 3339)\n"
	"\n"
	"output:\n"
	"      --emits             print every emitted event on stdout, one JSON line each\n"
	"                          (not with --sweep: the variants' would mix)\n"
	"  -q, --quiet             no progress or summary (with --sweep, the table alone)\n"
	"\n"
	"scoring (an input event is flagged when an alert descends from it):\n"
	"      --label PATH        its positives: PATH is true, 1 or \"1\" (data.is_fraud)\n"
	"      --labels FILE       its positives: the ids listed in FILE, one per line\n"
	"      --alerts PATTERN    the emitted types that flag (default: every type)\n"
	"      --score-from TIME   score only the input events from this event time on\n"
	"      --score-until TIME  ...and up to this one (the rules still run over all)\n"
	"      --nab WINDOWS       score as the Numenta Anomaly Benchmark does, against\n"
	"                          its windows file (labels/combined_windows.json); each\n"
	"                          subject is a series named as there\n"
	"      --nab-profile P     standard (default), reward_low_FP_rate, reward_low_FN_rate\n"
	"  -h, --help              show this help\n"
	"\n"
	"exit status: 0 done, 1 a script, the input or the scratch log failed,\n"
	"2 usage error.\n";

/* A variant's line in the sweep's table. */
typedef struct row {
	char *variant;
	uint64_t emitted;
	int scored, nabbed;
	double precision, recall, f1, nab; /* of all the consumers together */
	uint64_t tp, fp, fn;
} row;

typedef struct out {
	int emits, quiet, tty;
	FILE *sum; /* where the summary goes */
	struct timespec t0;
	uint64_t last_progress;
	int counted, scored, nabbed; /* their headings are out */
	int nab;                     /* --nab: the table's best is by NAB score */
	row *rows;                   /* sweeping: a row per variant, as they come */
	size_t nrows, maxrows;
	uint64_t inputs, rejected;
} out;

static double
since(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

static void
progress(void *ud, uint64_t done)
{
	out *o = ud;

	if (!o->tty || o->quiet || done - o->last_progress < 100000)
		return;
	o->last_progress = done;
	fprintf(stderr, "\rtide backtest: %llu events (%.0f/s)", (unsigned long long)done,
		(double)done / since(&o->t0));
}

static void
print_ratio(FILE *f, const char *name, double v)
{
	if (isnan(v))
		fprintf(f, "  %s -    ", name);
	else
		fprintf(f, "  %s %.3f", name, v);
}

/* Sweeping: the row of the variant of @p it, a new one (its heading
 * printed) when the variant changes; NULL if there are too many. */
static row *
variant_row(out *o, const tide_backtest_item *it)
{
	row *r = o->nrows > 0 ? &o->rows[o->nrows - 1] : NULL;

	if (r != NULL && strcmp(r->variant, it->variant) == 0)
		return r;
	if (o->nrows == o->maxrows || (o->rows[o->nrows].variant = strdup(it->variant)) == NULL)
		return NULL;
	r = &o->rows[o->nrows++];
	r->precision = r->recall = r->f1 = r->nab = NAN;
	o->counted = o->scored = o->nabbed = 0;
	if (o->quiet)
		return r;
	if (o->tty && o->nrows == 1)
		fputs("\r\033[K", stderr);
	fprintf(o->sum, "%s== %s\n", o->nrows > 1 ? "\n" : "", it->variant);
	return r;
}

/* What the table keeps of a variant's item; 1 if the item is done with. */
static int
note_variant(out *o, const tide_backtest_item *it)
{
	row *r = variant_row(o, it);

	if (r == NULL)
		return 1;
	switch (it->kind) {
	case TIDE_BACKTEST_SCORE:
		if (it->consumer[0] == '\0') {
			r->scored = 1;
			r->precision = it->precision;
			r->recall = it->recall;
			r->f1 = it->f1;
			r->tp = it->tp;
			r->fp = it->fp;
			r->fn = it->fn;
		}
		return o->quiet;
	case TIDE_BACKTEST_NAB:
		if (it->type[0] == '\0') {
			r->nabbed = 1;
			r->nab = it->score;
		}
		return o->quiet;
	case TIDE_BACKTEST_DONE:
		/* the totals come once, after the table */
		r->emitted = it->fp;
		o->inputs = it->count;
		o->rejected = it->tp;
		if (!o->quiet)
			fprintf(o->sum, "%llu emitted\n", (unsigned long long)it->fp);
		return 1;
	default: return o->quiet;
	}
}

static void
on_item(void *ud, const tide_backtest_item *it)
{
	out *o = ud;
	double s;

	if (it->variant != NULL && note_variant(o, it))
		return;
	switch (it->kind) {
	case TIDE_BACKTEST_EMIT:
		if (o->emits) {
			const char *json;
			size_t len;
			if (tide_event_json(it->ev, &json, &len) == TIDE_OK)
				printf("%.*s\n", (int)len, json);
		}
		break;
	case TIDE_BACKTEST_COUNT:
		if (!o->quiet && !o->counted++) {
			if (o->tty)
				fputs("\r\033[K", stderr);
			fprintf(o->sum, "emitted, by consumer and type:\n");
		}
		if (!o->quiet)
			fprintf(o->sum, "  %-20s %-28s %llu\n", it->consumer, it->type,
				(unsigned long long)it->count);
		break;
	case TIDE_BACKTEST_SCORE:
		if (o->quiet)
			break;
		if (!o->scored++) {
			if (o->tty && !o->counted)
				fputs("\r\033[K", stderr);
			fprintf(o->sum, "flagged input events against the labels:\n");
		}
		fprintf(o->sum, "  %-20s", it->consumer[0] ? it->consumer : "(all)");
		print_ratio(o->sum, "precision", it->precision);
		print_ratio(o->sum, "recall", it->recall);
		print_ratio(o->sum, "F1", it->f1);
		fprintf(o->sum, "  (tp %llu, fp %llu, fn %llu)\n", (unsigned long long)it->tp,
			(unsigned long long)it->fp, (unsigned long long)it->fn);
		break;
	case TIDE_BACKTEST_STATE:
	case TIDE_BACKTEST_RULE: break; /* (tide test compares them) */
	case TIDE_BACKTEST_NAB:
		if (o->quiet)
			break;
		if (!o->nabbed++) {
			if (o->tty && !o->counted)
				fputs("\r\033[K", stderr);
			fprintf(o->sum, "NAB, series by series (raw score; windows detected, false "
					"detections, windows missed):\n");
		}
		if (it->type[0])
			fprintf(o->sum, "  %-60s %9.3f  (%llu, %llu, %llu)\n", it->type, it->score,
				(unsigned long long)it->tp, (unsigned long long)it->fp,
				(unsigned long long)it->fn);
		else
			fprintf(o->sum,
				"NAB score (normalised: 100 perfect, 0 no detection): %.1f  (%llu "
				"windows "
				"detected, %llu false detections, %llu windows missed)\n",
				it->score, (unsigned long long)it->tp, (unsigned long long)it->fp,
				(unsigned long long)it->fn);
		break;
	default:
		if (o->quiet)
			break;
		s = since(&o->t0);
		if (o->tty)
			fputs("\r\033[K", stderr);
		fprintf(o->sum,
			"tide backtest: %llu events in %.2f s (%.0f events/s), %llu rejected, "
			"%llu emitted\n",
			(unsigned long long)it->count, s, s > 0 ? (double)it->count / s : 0,
			(unsigned long long)it->tp, (unsigned long long)it->fp);
	}
}

/* A ratio in the table: 3 decimals, or "-" when undefined. */
static void
table_ratio(FILE *f, double v)
{
	if (isnan(v))
		fprintf(f, "  %9s", "-");
	else
		fprintf(f, "  %9.3f", v);
}

/* The sweep's table: a row per variant, the best marked (the highest
 * F1, or NAB score with --nab; the first of equals). */
static void
print_table(const out *o)
{
	size_t w = strlen("variant"), best = SIZE_MAX;
	int scored = 0, nabbed = 0;

	for (size_t k = 0; k < o->nrows; k++) {
		const row *r = &o->rows[k];
		double v = o->nab ? r->nab : r->f1;
		if (strlen(r->variant) > w)
			w = strlen(r->variant);
		scored |= r->scored;
		nabbed |= r->nabbed;
		if (!isnan(v) &&
		    (best == SIZE_MAX || v > (o->nab ? o->rows[best].nab : o->rows[best].f1)))
			best = k;
	}
	fprintf(o->sum, "%s%zu variants:\n  %-*s  %10s", o->quiet ? "" : "\n", o->nrows, (int)w,
		"variant", "emitted");
	if (scored)
		fprintf(o->sum, "  %9s  %9s  %9s  %8s  %8s  %8s", "precision", "recall", "F1", "tp",
			"fp", "fn");
	if (nabbed)
		fprintf(o->sum, "  %9s", "NAB");
	fputc('\n', o->sum);
	for (size_t k = 0; k < o->nrows; k++) {
		const row *r = &o->rows[k];
		fprintf(o->sum, "  %-*s  %10llu", (int)w, r->variant,
			(unsigned long long)r->emitted);
		if (scored) {
			table_ratio(o->sum, r->precision);
			table_ratio(o->sum, r->recall);
			table_ratio(o->sum, r->f1);
			fprintf(o->sum, "  %8llu  %8llu  %8llu", (unsigned long long)r->tp,
				(unsigned long long)r->fp, (unsigned long long)r->fn);
		}
		if (nabbed)
			fprintf(o->sum, "  %9.1f", r->nab);
		fprintf(o->sum, "%s\n",
			k != best ? ""
			: o->nab  ? "  <- best NAB score"
				  : "  <- best F1");
	}
}

/* SEQ or RFC 3339 TIME into one of the two; 0 or -1. */
static int
seq_or_time(const char *s, uint64_t *seq, int64_t *t)
{
	char *end;
	unsigned long long v = strtoull(s, &end, 10);

	if (*s >= '0' && *s <= '9' && *end == '\0' && v > 0) {
		*seq = v;
		return 0;
	}
	return (*t = cli_time(s)) >= 0 ? 0 : -1;
}

int
cmd_backtest(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "script", required_argument, NULL, 's' },
		{ "data", required_argument, NULL, 'd' },
		{ "from", required_argument, NULL, 'F' },
		{ "until", required_argument, NULL, 'U' },
		{ "emits", no_argument, NULL, 'e' },
		{ "label", required_argument, NULL, 'l' },
		{ "labels", required_argument, NULL, 'L' },
		{ "alerts", required_argument, NULL, 'a' },
		{ "set", required_argument, NULL, 'S' },
		{ "param", required_argument, NULL, 'M' },
		{ "params", required_argument, NULL, 'X' },
		{ "sweep", required_argument, NULL, 'W' },
		{ "threads", required_argument, NULL, 'T' },
		{ "score-from", required_argument, NULL, 'f' },
		{ "nab", required_argument, NULL, 'N' },
		{ "nab-profile", required_argument, NULL, 'P' },
		{ "score-until", required_argument, NULL, 'u' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	tide_backtest_opts bo;
	const char **scripts = NULL, **sweeps = NULL;
	cli_params sets = { 0 };
	size_t n = 0, nsweeps = 0, variants = 1;
	out o = { 0 };
	int c, rc = CLI_USAGE;

	memset(&bo, 0, sizeof bo);
	bo.data = "./tide-data";
	optind = 1;
	while ((c = getopt_long(argc, argv, "s:d:qh", longopts, NULL)) != -1) {
		switch (c) {
		case 's': {
			const char **v = realloc(scripts, (n + 2) * sizeof *v);
			if (v == NULL) {
				free(scripts);
				return CLI_FAIL;
			}
			scripts = v;
			scripts[n++] = optarg;
			scripts[n] = NULL;
			break;
		}
		case 'd': bo.data = optarg; break;
		case 'F':
		case 'U':
			if (seq_or_time(optarg, c == 'F' ? &bo.from_seq : &bo.until_seq,
					c == 'F' ? &bo.from_time : &bo.until_time) != 0) {
				cli_error("backtest",
					  "--%s takes a seq from 1 or an RFC 3339 time, not '%s'",
					  c == 'F' ? "from" : "until", optarg);
				goto out;
			}
			break;
		case 'e': o.emits = 1; break;
		case 'l': bo.label = optarg; break;
		case 'L': bo.labels_file = optarg; break;
		case 'a': bo.alerts = optarg; break;
		case 'N': bo.nab_windows = optarg; break;
		case 'P': bo.nab_profile = optarg; break;
		case 'f':
		case 'u': {
			int64_t t = cli_time(optarg);
			if (t < 0) {
				cli_error("backtest", "--score-%s takes an RFC 3339 time, not '%s'",
					  c == 'f' ? "from" : "until", optarg);
				goto out;
			}
			*(c == 'f' ? &bo.score_from : &bo.score_until) = t;
			break;
		}
		case 'S':
		case 'M':
			if (cli_params_add("backtest", c == 'S' ? "set" : "param", &sets, optarg) !=
			    0)
				goto out;
			break;
		case 'X':
			if (cli_params_file("backtest", &sets, optarg) != 0) {
				rc = CLI_FAIL; /* what the file holds, not how it was asked */
				goto out;
			}
			break;
		case 'W': {
			const char **v = realloc(sweeps, (nsweeps + 2) * sizeof *v);
			if (v == NULL) {
				rc = CLI_FAIL;
				goto out;
			}
			sweeps = v;
			sweeps[nsweeps++] = optarg;
			sweeps[nsweeps] = NULL;
			break;
		}
		case 'T': {
			char *end;
			unsigned long t = strtoul(optarg, &end, 10);
			if (*optarg < '0' || *optarg > '9' || *end != '\0' || t < 1 ||
			    t > MAX_THREADS) {
				cli_error("backtest",
					  "--threads takes a number from 1 to %d, not '%s'",
					  MAX_THREADS, optarg);
				goto out;
			}
			bo.threads = (unsigned)t;
			break;
		}
		case 'q': o.quiet = 1; break;
		case 'h':
			fputs(usage_text, stdout);
			rc = CLI_OK;
			goto out;
		default: cli_try_help("backtest"); goto out;
		}
	}
	if (n == 0) {
		cli_error("backtest", "name a script (--script FILE)");
		goto out;
	}
	if (optind < argc - 1) {
		cli_error("backtest", "one input at most, not '%s' and '%s'", argv[optind],
			  argv[optind + 1]);
		goto out;
	}
	if (optind == argc - 1)
		bo.input = argv[optind];
	if (bo.input != NULL && (bo.from_seq || bo.until_seq)) {
		cli_error("backtest",
			  "--from and --until take times for a file (seqs are the log's)");
		goto out;
	}
	if (sweeps != NULL && tide_backtest_sweep_count(sweeps, &variants) != TIDE_OK) {
		cli_error("backtest", "--sweep: %s", tide_errmsg());
		goto out;
	}
	if (sweeps != NULL && o.emits) {
		cli_error("backtest",
			  "--emits and --sweep do not go together: the variants' emitted events "
			  "would come out as one stream, with no mark of their variant (run one "
			  "variant alone, with --set, to see its events)");
		goto out;
	}
	if (sweeps != NULL && (o.rows = calloc(variants, sizeof *o.rows)) == NULL) {
		rc = CLI_FAIL;
		goto out;
	}
	o.maxrows = sweeps != NULL ? variants : 0;
	o.nab = bo.nab_windows != NULL;
	bo.scripts = scripts;
	bo.sets = (const char *const *)sets.v;
	bo.sweeps = sweeps;
	bo.progress = progress;
	bo.progress_ud = &o;
	o.tty = isatty(2);
	o.sum = o.emits ? stderr : stdout;
	clock_gettime(CLOCK_MONOTONIC, &o.t0);
	rc = tide_backtest(&bo, on_item, &o);
	fflush(stdout);
	if (rc != TIDE_OK) {
		if (o.tty && !o.quiet)
			fputs("\r\033[K", stderr);
		cli_error("backtest", "%s", tide_errmsg());
		rc = CLI_FAIL;
	} else {
		rc = CLI_OK;
		if (sweeps != NULL)
			print_table(&o);
		if (sweeps != NULL && !o.quiet) {
			double s = since(&o.t0);
			fprintf(o.sum,
				"tide backtest: %llu events in %.2f s (%.0f events/s) through %zu "
				"variants, %llu rejected\n",
				(unsigned long long)o.inputs, s, s > 0 ? (double)o.inputs / s : 0,
				o.nrows, (unsigned long long)o.rejected);
		}
	}
out:
	for (size_t k = 0; k < o.nrows; k++)
		free(o.rows[k].variant);
	free(o.rows);
	free(scripts);
	cli_params_free(&sets);
	free(sweeps);
	return rc;
}
