/*
 * cmd_run.c - `tide run`: the daemon.  Builds a configuration from the
 * config file and the flags (flags win), opens an engine on its own event
 * loop, turns SIGINT/SIGTERM into a clean stop, and logs to stderr.
 *
 * Stopping always ends the process: the signal handler asks the engine to
 * stop (it finishes the turn, commits and answers everyone), and a
 * watchdog thread ends the process if that has not happened within
 * --stop-timeout seconds, or at once on a second signal.  Ending it then
 * loses nothing acknowledged: LMDB drops the open transaction, as after a
 * kill -9.  Before it does, it tells the engine (tide_engine_postmortem),
 * so that a handler stuck on an event is not run on it again at the next
 * start; a crash signal does the same.  This is the program's business,
 * not the library's, which installs no signal handlers.
 */
#include "config.h"

#include <errno.h>
#include <event2/event.h>
#include <getopt.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
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
	"      --http ADDR         HTTP endpoint: PORT or HOST:PORT (a port alone\n"
	"                          listens on 127.0.0.1); POST /events, /healthz,\n"
	"                          /readyz.  Off unless given\n"
	"      --http-token TOKEN  bearer token that POST /events must carry\n"
	"      --cluster URLS      join a cluster over NATS JetStream (comma-separated\n"
	"                          nats:// URLs); other settings are cluster_*\n"
	"      --node NAME         this node's name in the cluster (default: the host's)\n"
	"      --durability MODE   sync (fsync per commit) or relaxed (periodic sync)\n"
	"      --set KEY=VALUE     any config setting (map_size, max_event_size,\n"
	"                          turn_events, instruction_budget, time_limit,\n"
	"                          memory_limit, build_threads, consumer_thread, ...)\n"
	"      --param NAME=VALUE  the scripts' tide.param(NAME, default) gives VALUE\n"
	"                          (repeatable; read when the scripts load)\n"
	"      --params FILE       the same from a file of NAME = VALUE lines (lines\n"
	"                          starting with # are comments); a later value wins\n"
	"      --log-format FMT    text (the default) or json: one object per line,\n"
	"                          {\"time\":..., \"level\":..., \"msg\":...}\n"
	"      --log-file FILE     append the log to FILE instead of stderr; SIGHUP\n"
	"                          reopens it (for log rotation) and reloads the scripts\n"
	"      --stop-timeout SEC  end the process if a stop takes longer (default 5)\n"
	"  -q, --quiet             log errors and warnings only\n"
	"  -v, --verbose           log debug messages too\n"
	"  -h, --help              show this help\n"
	"\n"
	"SIGINT or SIGTERM finishes the current turn, commits and exits; if that\n"
	"takes longer than --stop-timeout, or on a second signal, the process ends\n"
	"at once (nothing acknowledged is lost), and an event whose handler was\n"
	"stuck is sent to the dead letters at the next start.  SIGHUP reloads the\n"
	"scripts (keeping the running ones if the new ones fail) and reopens the\n"
	"log file.\n";

/* Where the log goes: stderr, or a file that SIGHUP reopens. */
typedef struct log_sink {
	const char *path;
	FILE *f;
	tide_engine *engine; /* SIGHUP reloads its scripts */
	int json;            /* a JSON object per line */
} log_sink;

static const char *const level_names[] = { "error", "warn", "info", "debug" };

/* Lines come from the engine's thread and the consumers' own: one at a
 * time, and not while SIGHUP changes the file. */
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;

/* {"time":"...","level":"info","msg":"..."}: for a log collector.  The
 * engine has already written control characters as escapes. */
static void
json_line(FILE *f, int level, const char *msg)
{
	struct timespec ts;
	struct tm tm;
	char stamp[40];

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
	fprintf(f, "{\"time\":\"%s.%03ldZ\",\"level\":\"%s\",\"msg\":\"", stamp,
		ts.tv_nsec / 1000000, level_names[level & 3]);
	for (const unsigned char *p = (const unsigned char *)msg; *p != '\0'; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else if (*p < 0x20 || *p == 0x7f)
			fprintf(f, "\\u%04x", *p);
		else
			fputc(*p, f);
	}
	fputs("\"}\n", f);
}

static void
log_line(void *ud, int level, const char *msg)
{
	log_sink *sink = ud;
	FILE *f;
	char stamp[32];
	time_t now = time(NULL);
	struct tm tm;

	pthread_mutex_lock(&log_mu);
	f = sink->f ? sink->f : stderr;
	if (sink->json) {
		json_line(f, level, msg);
	} else {
		gmtime_r(&now, &tm);
		strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
		fprintf(f, "%s %-5s %s\n", stamp, level_names[level & 3], msg);
	}
	if (f != stderr)
		fflush(f);
	pthread_mutex_unlock(&log_mu);
}

static int
open_log_file(log_sink *sink)
{
	FILE *f = fopen(sink->path, "a");

	if (f == NULL) {
		cli_error("run", "cannot open log file %s: %s", sink->path, strerror(errno));
		return -1;
	}
	pthread_mutex_lock(&log_mu);
	if (sink->f != NULL)
		fclose(sink->f);
	sink->f = f;
	pthread_mutex_unlock(&log_mu);
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

/* ------------------------------------------------------------------------
 * Stopping, whatever the engine is doing
 *
 * The handlers below run on any thread, at any moment: they use only
 * async-signal-safe calls (write, _exit, tide_engine_stop and
 * tide_engine_postmortem are documented as such).  The program's globals
 * are fine here: there is one daemon per process.
 * ------------------------------------------------------------------------ */

static _Atomic(tide_engine *) running; /* set while the engine may run handlers */
static atomic_int stop_count;          /* SIGINT/SIGTERM received */
static pthread_mutex_t closing = PTHREAD_MUTEX_INITIALIZER; /* held while the engine closes */
static sem_t nudge; /* wakes the watchdog: a stop was asked for, or the engine closed */

static void
say(const char *msg)
{
	ssize_t n = write(STDERR_FILENO, msg, strlen(msg));
	(void)n;
}

static void
on_stop_signal(int sig)
{
	int saved = errno;
	tide_engine *e = atomic_load(&running);

	if (atomic_fetch_add(&stop_count, 1) == 0) {
		say(sig == SIGINT ? "tide run: SIGINT received, stopping\n"
				  : "tide run: SIGTERM received, stopping\n");
		if (e != NULL)
			tide_engine_stop(e);
		sem_post(&nudge);
		errno = saved;
		return;
	}
	/* asked twice: do not wait for the engine */
	if (e != NULL && tide_engine_postmortem(e, 0))
		say("tide run: stopped while a handler was running; its event is set aside at the "
		    "next start\n");
	say("tide run: second signal, exiting now (nothing acknowledged is lost)\n");
	_exit(1);
}

static void
on_crash(int sig)
{
	tide_engine *e = atomic_load(&running);

	if (e != NULL)
		tide_engine_postmortem(e, sig);
	signal(sig, SIG_DFL);
	raise(sig);
}

typedef struct watchdog {
	tide_engine *e;
	double timeout;  /* seconds between the stop request and the end */
	atomic_int done; /* the engine has closed */
} watchdog;

static void *
watch(void *arg)
{
	watchdog *w = arg;
	struct timespec until;

	while (sem_wait(&nudge) != 0 && errno == EINTR)
		;
	if (atomic_load(&w->done))
		return NULL;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += (time_t)w->timeout;
	until.tv_nsec += (long)((w->timeout - (double)(time_t)w->timeout) * 1e9);
	if (until.tv_nsec >= 1000000000) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000;
	}
	while (!atomic_load(&w->done))
		if (sem_timedwait(&nudge, &until) != 0 && errno == ETIMEDOUT)
			break;
	if (atomic_load(&w->done))
		return NULL;
	/* the engine is stuck: in a handler (it is to blame) or elsewhere */
	if (pthread_mutex_trylock(&closing) == 0 && tide_engine_postmortem(w->e, 0))
		say("tide run: the engine did not stop in time: a handler is stuck; its event is "
		    "set aside at the next start\n");
	say("tide run: the engine did not stop in time, exiting now (nothing acknowledged is "
	    "lost)\n");
	_exit(1);
}

static int
install_handlers(tide_engine *e, watchdog *w, pthread_t *thread)
{
	static char altstack[64 * 1024]; /* a crash may be a stack overflow */
	static const int crashes[] = { SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT };
	struct sigaction sa;
	stack_t ss;

	if (sem_init(&nudge, 0, 0) != 0)
		return -1;
	memset(&ss, 0, sizeof ss);
	ss.ss_sp = altstack;
	ss.ss_size = sizeof altstack;
	sigaltstack(&ss, NULL);
	memset(&sa, 0, sizeof sa);
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = on_stop_signal;
	if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0)
		return -1;
	sa.sa_handler = on_crash;
	sa.sa_flags = SA_ONSTACK | SA_RESETHAND;
	for (size_t k = 0; k < sizeof crashes / sizeof *crashes; k++)
		sigaction(crashes[k], &sa, NULL);
	w->e = e;
	atomic_store(&running, e);
	return pthread_create(thread, NULL, watch, w) == 0 ? 0 : -1;
}

static int
set(tide_config *cfg, const char *key, const char *value)
{
	if (tide_config_set(cfg, key, value) != TIDE_OK) {
		cli_error("run", "%s", tide_errmsg());
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
		{ "http", required_argument, NULL, 'H' },
		{ "http-token", required_argument, NULL, 'K' },
		{ "cluster", required_argument, NULL, 'N' },
		{ "node", required_argument, NULL, 'O' },
		{ "durability", required_argument, NULL, 'D' },
		{ "set", required_argument, NULL, 'S' },
		{ "param", required_argument, NULL, 'M' },
		{ "params", required_argument, NULL, 'X' },
		{ "log-file", required_argument, NULL, 'L' },
		{ "log-format", required_argument, NULL, 'F' },
		{ "stop-timeout", required_argument, NULL, 'T' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *config = NULL;
	tide_config *cfg = NULL;
	tide_engine *e = NULL;
	struct event *sighup = NULL;
	log_sink sink = { NULL, NULL, NULL, 0 };
	watchdog w = { NULL, 5, 0 };
	pthread_t watcher;
	int c, rc = CLI_FAIL, level = -1, watching = 0;

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
	/* the daemon's default: its log lines may come from the consumers' thread */
	(void)tide_config_set(cfg, "consumer_thread", "busy");
	if (config != NULL && tide_config_load(cfg, config) != TIDE_OK) {
		cli_error("run", "%s", tide_errmsg());
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
		case 'H':
			if (set(cfg, "http", optarg))
				goto out;
			break;
		case 'K':
			if (set(cfg, "http_token", optarg))
				goto out;
			break;
		case 'N':
			if (set(cfg, "cluster", optarg))
				goto out;
			break;
		case 'O':
			if (set(cfg, "cluster_node", optarg))
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
		case 'M':
			if (strchr(optarg, '=') == NULL || optarg[0] == '=') {
				cli_error("run", "--param takes NAME=VALUE, not '%s'", optarg);
				rc = CLI_USAGE;
				goto out;
			}
			if (set(cfg, "param", optarg))
				goto out;
			break;
		case 'X': {
			cli_params ps = { 0 };
			int bad = cli_params_file("run", &ps, optarg);
			for (size_t k = 0; !bad && k < ps.n; k++)
				bad = set(cfg, "param", ps.v[k]);
			cli_params_free(&ps);
			if (bad)
				goto out;
			break;
		}
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
		case 'F':
			if (strcmp(optarg, "json") != 0 && strcmp(optarg, "text") != 0) {
				cli_error("run", "--log-format is text or json, not '%s'", optarg);
				rc = CLI_USAGE;
				goto out;
			}
			sink.json = strcmp(optarg, "json") == 0;
			break;
		case 'T':
			if ((w.timeout = cli_seconds(optarg)) <= 0) {
				cli_error("run",
					  "--stop-timeout takes a number of seconds > 0, not '%s'",
					  optarg);
				rc = CLI_USAGE;
				goto out;
			}
			break;
		case 'q': level = TIDE_LOG_WARN; break;
		case 'v': level = TIDE_LOG_DEBUG; break;
		default:
			cli_try_help("run");
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
	/* Every signal is handled before the engine opens (it writes the
	 * endpoints file, which tells clients it is there): a SIGHUP meanwhile
	 * is ignored (the scripts being loaded are the current ones), a stop
	 * takes effect once it runs, and the watchdog ends a slow open. */
	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	if (install_handlers(e, &w, &watcher) != 0) {
		cli_error("run", "cannot install signal handlers");
		goto out;
	}
	watching = 1;
	if (tide_engine_open(e, NULL) != TIDE_OK) {
		cli_error("run", "%s", tide_errmsg());
		goto out;
	}
	sink.engine = e;
	sighup = evsignal_new(tide_engine_base(e), SIGHUP, on_sighup, &sink);
	if (sighup == NULL || event_add(sighup, NULL)) {
		cli_error("run", "cannot install signal handlers");
		goto out;
	}
	if (atomic_load(&stop_count) > 0) /* asked while it opened */
		tide_engine_stop(e);
	rc = tide_engine_run(e) == TIDE_OK ? CLI_OK : CLI_FAIL;
out:
	if (sighup)
		event_free(sighup);
	/* the watchdog may still end the process while the engine closes, but
	 * no longer touches it */
	pthread_mutex_lock(&closing);
	atomic_store(&running, NULL);
	tide_engine_destroy(e);
	atomic_store(&w.done, 1);
	if (watching) {
		sem_post(&nudge);
		pthread_join(watcher, NULL);
	}
	tide_config_destroy(cfg);
	if (sink.f != NULL)
		fclose(sink.f);
	return rc;
}
