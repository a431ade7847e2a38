/*
 * cmd_run.c - `tide run`: the daemon.  Builds a configuration from the
 * config file and the flags (flags win), opens an engine on its own event
 * loop, turns SIGINT/SIGTERM into a clean stop, and logs to stderr.
 */
#include "config.h"

#include <errno.h>
#include <event2/event.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "tide.h"

static const char usage_text[] =
	"usage: tide run [options]\n"
	"\n"
	"Run the engine: ingest events from nanomsg sockets into the log, run the\n"
	"scripts' consumers, publish committed events.  Without --config, data goes\n"
	"to ./tide-data and the endpoints are ipc:// sockets inside it.\n"
	"\n"
	"options:\n"
	"  -c, --config FILE       Lua config file (flags below override it)\n"
	"  -d, --data DIR          data directory (default ./tide-data)\n"
	"  -s, --script FILE       load a Lua script (repeatable)\n"
	"      --pull URL          PULL endpoint, fire and forget ('' disables)\n"
	"      --rep URL           REP endpoint, acknowledged ingest ('' disables)\n"
	"      --pub URL           PUB endpoint, committed events ('' disables)\n"
	"      --durability MODE   sync (fsync per commit) or relaxed (periodic sync)\n"
	"      --set KEY=VALUE     any config setting (map_size, max_event_size,\n"
	"                          turn_events, instruction_budget, time_limit,\n"
	"                          memory_limit, build_threads, ...)\n"
	"      --log-file FILE     append the log to FILE instead of stderr; SIGHUP\n"
	"                          reopens it (for log rotation) and reloads the scripts\n"
	"  -q, --quiet             log errors and warnings only\n"
	"  -v, --verbose           log debug messages too\n"
	"  -h, --help              show this help\n"
	"\n"
	"SIGINT or SIGTERM finishes the current turn, commits and exits.  SIGHUP\n"
	"reloads the scripts (keeping the running ones if the new ones fail) and\n"
	"reopens the log file.\n";

/* Where the log goes: stderr, or a file that SIGHUP reopens. */
typedef struct log_sink {
	const char *path;
	FILE *f;
	tide_engine *engine; /* SIGHUP reloads its scripts */
} log_sink;

static const char *const level_names[] = { "error", "warn", "info", "debug" };

static void
log_line(void *ud, int level, const char *msg)
{
	log_sink *sink = ud;
	FILE *f = sink->f ? sink->f : stderr;
	char stamp[32];
	time_t now = time(NULL);
	struct tm tm;

	gmtime_r(&now, &tm);
	strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
	fprintf(f, "%s %-5s %s\n", stamp, level_names[level & 3], msg);
	if (f != stderr)
		fflush(f);
}

static int
open_log_file(log_sink *sink)
{
	FILE *f = fopen(sink->path, "a");

	if (f == NULL) {
		cli_error("run", "cannot open log file %s: %s", sink->path, strerror(errno));
		return -1;
	}
	if (sink->f != NULL)
		fclose(sink->f);
	sink->f = f;
	return 0;
}

static void
on_sighup(evutil_socket_t sig, short what, void *arg)
{
	log_sink *sink = arg;

	(void)sig;
	(void)what;
	/* Keep writing to the old file if the new one cannot be opened. */
	if (sink->path != NULL && open_log_file(sink) == 0)
		log_line(sink, TIDE_LOG_INFO, "log file reopened (SIGHUP)");
	/* the engine logs how the reload went, and keeps the running
	 * scripts if the new ones do not load */
	if (sink->engine != NULL)
		(void)tide_engine_reload(sink->engine);
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	fprintf(stderr, "tide run: %s received, stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
	tide_engine_stop(arg);
}

static int
set(tide_config *cfg, const char *key, const char *value)
{
	if (tide_config_set(cfg, key, value) != TIDE_OK) {
		cli_error("run", "%s", tide_config_errmsg(cfg));
		return -1;
	}
	return 0;
}

int
cmd_run(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "data", required_argument, NULL, 'd' },
		{ "script", required_argument, NULL, 's' },
		{ "pull", required_argument, NULL, 'P' },
		{ "rep", required_argument, NULL, 'R' },
		{ "pub", required_argument, NULL, 'B' },
		{ "durability", required_argument, NULL, 'D' },
		{ "set", required_argument, NULL, 'S' },
		{ "log-file", required_argument, NULL, 'L' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *config = NULL;
	tide_config *cfg = NULL;
	tide_engine *e = NULL;
	struct event *sigint = NULL, *sigterm = NULL, *sighup = NULL;
	log_sink sink = { NULL, NULL, NULL };
	int c, rc = CLI_FAIL, level = -1;

	/* First pass: find --config and --help, which shape everything else. */
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "c:d:s:qvh", longopts, NULL)) != -1) {
		if (c == 'h') {
			fputs(usage_text, stdout);
			return CLI_OK;
		}
		if (c == 'c')
			config = optarg;
	}
	if (tide_config_new(&cfg) != TIDE_OK) {
		cli_error("run", "out of memory");
		return CLI_FAIL;
	}
	tide_config_set_log(cfg, log_line, &sink);
	if (config != NULL && tide_config_load(cfg, config) != TIDE_OK) {
		cli_error("run", "%s", tide_config_errmsg(cfg));
		goto out;
	}
	optind = 1;
	opterr = 1;
	while ((c = getopt_long(argc, argv, "c:d:s:qvh", longopts, NULL)) != -1) {
		switch (c) {
		case 'c': break;
		case 'd':
			if (set(cfg, "data", optarg))
				goto out;
			break;
		case 's':
			if (tide_config_add_script(cfg, optarg) != TIDE_OK) {
				cli_error("run", "bad script path '%s'", optarg);
				goto out;
			}
			break;
		case 'P':
			if (set(cfg, "pull", optarg))
				goto out;
			break;
		case 'R':
			if (set(cfg, "rep", optarg))
				goto out;
			break;
		case 'B':
			if (set(cfg, "pub", optarg))
				goto out;
			break;
		case 'D':
			if (set(cfg, "durability", optarg))
				goto out;
			break;
		case 'S': {
			char key[128];
			const char *eq = strchr(optarg, '=');
			if (eq == NULL || eq == optarg || (size_t)(eq - optarg) >= sizeof key) {
				cli_error("run", "--set takes KEY=VALUE, not '%s'", optarg);
				rc = CLI_USAGE;
				goto out;
			}
			snprintf(key, sizeof key, "%.*s", (int)(eq - optarg), optarg);
			if (set(cfg, key, eq + 1))
				goto out;
			break;
		}
		case 'L': sink.path = optarg; break;
		case 'q': level = TIDE_LOG_WARN; break;
		case 'v': level = TIDE_LOG_DEBUG; break;
		default:
			fputs(usage_text, stderr);
			rc = CLI_USAGE;
			goto out;
		}
	}
	if (optind < argc) {
		cli_error("run", "unexpected argument '%s'", argv[optind]);
		rc = CLI_USAGE;
		goto out;
	}
	if (level >= 0 && set(cfg, "log_level", level_names[level]))
		goto out;
	if (sink.path != NULL && open_log_file(&sink) != 0)
		goto out;

	if (tide_engine_new(&e, cfg) != TIDE_OK) {
		cli_error("run", "cannot create the engine");
		goto out;
	}
	if (tide_engine_open(e, NULL) != TIDE_OK) {
		cli_error("run", "%s", tide_errmsg(e));
		goto out;
	}
	signal(SIGPIPE, SIG_IGN);
	sink.engine = e;
	sigint = evsignal_new(tide_engine_base(e), SIGINT, on_signal, e);
	sigterm = evsignal_new(tide_engine_base(e), SIGTERM, on_signal, e);
	sighup = evsignal_new(tide_engine_base(e), SIGHUP, on_sighup, &sink);
	if (sigint == NULL || sigterm == NULL || sighup == NULL || event_add(sigint, NULL) ||
	    event_add(sigterm, NULL) || event_add(sighup, NULL)) {
		cli_error("run", "cannot install signal handlers");
		goto out;
	}
	rc = tide_engine_run(e) == TIDE_OK ? CLI_OK : CLI_FAIL;
out:
	if (sigint)
		event_free(sigint);
	if (sigterm)
		event_free(sigterm);
	if (sighup)
		event_free(sighup);
	tide_engine_destroy(e);
	tide_config_destroy(cfg);
	if (sink.f != NULL)
		fclose(sink.f);
	return rc;
}
