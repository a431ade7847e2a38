/*
 * cmd_projection.c - `tide projection`: list the projections and their
 * progress, or force one to be rebuilt from the log.
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

#include "cli.h"
#include "tide.h"

static const char usage_text[] =
	"usage: tide projection list\n"
	"       tide projection rebuild NAME\n"
	"\n"
	"  list      every projection with its progress, one JSON object per line\n"
	"  rebuild   build NAME again from the start of the log; the current state is\n"
	"            served until the new one has caught up (if no engine runs, this\n"
	"            happens when one starts)\n"
	"\n"
	"options:\n"
	"  -d, --data DIR          data directory (default ./tide-data)\n"
	"      --rep URL           the engine's REP endpoint, if not in DIR/endpoints\n"
	"      --timeout SEC       wait for the engine's answer (default 10)\n"
	"  -w, --wait              rebuild: follow the rebuild, showing its progress on\n"
	"                          stderr, until it is live (exit 0) or stops (exit 1)\n"
	"  -h, --help              show this help\n";

typedef struct list_ctx {
	uint64_t last;
} list_ctx;

static void
print_one(void *ud, const tide_projection_info *pi)
{
	const list_ctx *l = ud;

	cli_projection_json(pi, l->last);
	putchar('\n');
}

/* The engine runs there: ask it over REP. */
static int
ask_engine(const cli_client *cl, const char *name)
{
	yajl_gen g = yajl_gen_alloc(NULL);
	const unsigned char *req;
	size_t len;
	yajl_val v;
	int rc;

	if (g == NULL)
		return CLI_FAIL;
	yajl_gen_map_open(g);
	cli_gen_str(g, "command");
	cli_gen_str(g, "projection");
	cli_gen_str(g, "op");
	cli_gen_str(g, "rebuild");
	cli_gen_str(g, "name");
	cli_gen_str(g, name);
	yajl_gen_map_close(g);
	yajl_gen_get_buf(g, &req, &len);
	v = cli_ask("projection", cl, req, len, &rc);
	yajl_gen_free(g);
	if (v == NULL)
		return rc;
	fprintf(stderr, "tide projection: rebuilding '%s' (tide stat shows progress)\n", name);
	yajl_tree_free(v);
	return CLI_OK;
}

/* Where projection @p name is, read from the log. */
typedef struct seen {
	const char *name;
	int found, building, faulted;
	uint64_t live_seq, build_seq, fault_seq;
	char error[256];
} seen;

static void
on_seen(void *ud, const tide_projection_info *pi)
{
	seen *w = ud;

	if (strcmp(pi->name, w->name) != 0)
		return;
	w->found = 1;
	w->building = pi->building;
	w->faulted = pi->faulted;
	w->live_seq = pi->live_seq;
	w->build_seq = pi->build_seq;
	w->fault_seq = pi->fault_seq;
	snprintf(w->error, sizeof w->error, "%s", pi->error ? pi->error : "");
}

static double
mono_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Follow a rebuild until the projection is live or stops, with a progress
 * line on stderr (rewritten in place on a terminal, once a second
 * otherwise). */
static int
follow(const char *data, const char *name)
{
	int tty = isatty(STDERR_FILENO), had_engine = cli_engine_running(data) == 1;
	double t0 = mono_now(), shown = 0, checked = t0;
	uint64_t last = UINT64_MAX;
	tide_log *log;

	if (tide_log_open(&log, data) != TIDE_OK) {
		cli_error("projection", "%s", tide_errmsg());
		return CLI_FAIL;
	}
	for (;;) {
		seen w = { name, 0, 0, 0, 0, 0, 0, "" };
		tide_log_stat st;
		struct timespec pause = { 0, 100 * 1000 * 1000 };
		double now = mono_now();
		if (tide_log_projections(log, on_seen, &w) != TIDE_OK ||
		    tide_log_stat_get(log, &st) != TIDE_OK) {
			cli_error("projection", "cannot read the log in %s", data);
			break;
		}
		if (!w.found) {
			cli_error("projection", "projection '%s' is gone from the log", name);
			break;
		}
		if (w.faulted) {
			cli_error("projection", "%s'%s' stopped at event %llu: %s",
				  tty ? "\r\033[K" : "", name, (unsigned long long)w.fault_seq,
				  w.error);
			break;
		}
		if (!w.building) {
			fprintf(stderr,
				"%stide projection: '%s' is rebuilt and live at seq %llu (%.1f "
				"s)\n",
				tty ? "\r\033[K" : "", name, (unsigned long long)w.live_seq,
				now - t0);
			tide_log_close(log);
			return CLI_OK;
		}
		/* the rebuild goes on only while an engine runs */
		if (had_engine && now - checked >= 1.0) {
			checked = now;
			if (cli_engine_running(data) != 1) {
				cli_error(
					"projection",
					"%sthe engine stopped at %.1f%% of the rebuild of '%s'; it "
					"goes on when the engine runs again",
					tty ? "\r\033[K" : "",
					st.last_seq
						? 100.0 * (double)w.build_seq / (double)st.last_seq
						: 100.0,
					name);
				break;
			}
		}
		/* the progress moves when the rebuild writes its states (every
		 * few seconds); on a terminal the line also counts the time */
		if (tty || w.build_seq != last || now - shown >= 10.0) {
			double pct = st.last_seq ? 100.0 * (double)w.build_seq / (double)st.last_seq
						 : 100.0;
			fprintf(stderr,
				"%stide projection: '%s' building %.1f%% (%llu of %llu events), "
				"%.0f s%s",
				tty ? "\r\033[K" : "", name, pct, (unsigned long long)w.build_seq,
				(unsigned long long)st.last_seq, now - t0, tty ? "" : "\n");
			shown = now;
			last = w.build_seq;
		}
		nanosleep(&pause, NULL);
	}
	tide_log_close(log);
	return CLI_FAIL;
}

int
cmd_projection(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "data", required_argument, NULL, 'd' },
		{ "rep", required_argument, NULL, 'R' },
		{ "timeout", required_argument, NULL, 'o' },
		{ "wait", no_argument, NULL, 'w' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	cli_client cl = { "./tide-data", NULL, NULL, NULL, 10 };
	const char *action;
	int c, rc, wait = 0;

	optind = 1;
	while ((c = getopt_long(argc, argv, "d:hw", longopts, NULL)) != -1) {
		switch (c) {
		case 'w': wait = 1; break;
		case 'd': cl.data = optarg; break;
		case 'R': cl.rep = optarg; break;
		case 'o': cl.timeout = cli_seconds(optarg); break;
		case 'h': fputs(usage_text, stdout); return CLI_OK;
		default: return cli_try_help("projection");
		}
	}
	if (optind >= argc) {
		fputs(usage_text, stderr);
		return CLI_USAGE;
	}
	action = argv[optind++];
	if (strcmp(action, "list") == 0 && optind == argc) {
		tide_log *log;
		tide_log_stat st;
		list_ctx l = { 0 };
		if (tide_log_open(&log, cl.data) != TIDE_OK) {
			cli_error("projection", "%s", tide_errmsg());
			return CLI_FAIL;
		}
		if (tide_log_stat_get(log, &st) == TIDE_OK)
			l.last = st.last_seq;
		rc = tide_log_projections(log, print_one, &l);
		tide_log_close(log);
		return rc == TIDE_OK && fflush(stdout) == 0 ? CLI_OK : CLI_FAIL;
	}
	if (strcmp(action, "rebuild") == 0 && optind + 1 == argc) {
		rc = tide_projection_rebuild(cl.data, argv[optind]);
		if (rc == TIDE_EBUSY) {
			rc = ask_engine(&cl, argv[optind]);
			return rc == CLI_OK && wait ? follow(cl.data, argv[optind]) : rc;
		}
		if (rc != TIDE_OK) {
			cli_error("projection", "%s", tide_errmsg());
			return CLI_FAIL;
		}
		fprintf(stderr,
			"tide projection: '%s' will be rebuilt when the engine next runs%s\n",
			argv[optind], wait ? " (no engine runs now: nothing to wait for)" : "");
		return CLI_OK;
	}
	fputs(usage_text, stderr);
	return CLI_USAGE;
}
