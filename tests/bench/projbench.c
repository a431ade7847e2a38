/*
 * projbench.c - the projection benchmark's clients (links libtide).
 *
 *   projbench wait --data DIR --name NAME --seq N --t0 EPOCH [--pid PID]
 *                  [--from B] [--cpu0 SEC] [--timeout SEC]
 *       Polls the log read-only (tide_log_projections, every 2 ms) until
 *       projection NAME is live at seq >= N (not building, serving, not
 *       faulted).  Elapsed time is from EPOCH (wall-clock seconds, e.g.
 *       bash's $EPOCHREALTIME taken just before `tide run` started) to the
 *       first poll that sees it live.  With --pid, the CPU time (user +
 *       system) that process has used so far is read from /proc at that
 *       moment (less --cpu0, the CPU it had used when the clock started).
 *       The rate counts N - B events (--from B: the log held B events
 *       that were already applied when the clock started).
 *
 *   projbench rebuild --url REP --data DIR --name NAME [--pid PID]
 *       Asks a running engine to rebuild NAME ({"command":"projection",
 *       "op":"rebuild","name":NAME} on REP), then polls as above until the
 *       rebuild has started and then finished (live at the log's last
 *       seq).  Elapsed time and the engine's CPU are from just before the
 *       request to that moment.
 *
 *   projbench query --url REP --name NAME [--keys K] [--requests N]
 *                   [--warmup W] [--seed S] [--while-pid PID] [--timeout SEC]
 *       Sequential REQ queries {"query":NAME,"key":"acc-NNNNN"} for random
 *       keys among K (default 100000); every reply must be {"ok":true...}
 *       with a state, or an error saying the key has no state (counted as
 *       missing: a few of the keys never occur in the log).  With --while-pid,
 *       stops early once process PID has exited (and then reports the
 *       queries done).  A reply may take up to --timeout seconds (default
 *       60) before the run fails.
 *
 *   projbench direct --data DIR --name NAME [--keys K] [--requests N]
 *                    [--warmup W] [--seed S]
 *       The same queries through tide_log_query() on a read-only handle of
 *       the log, in this process.
 *
 * Output: one line of key=value pairs on stdout, for run.sh to parse.
 * Errors go to stderr with exit status 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <nanomsg/nn.h>
#include <nanomsg/reqrep.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "benchev.h"
#include "tide.h"

static double
wall_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU seconds (user + system) process @p pid has used; -1 if unknown. */
static double
proc_cpu(long pid)
{
	char path[64], buf[1024], *p;
	unsigned long long ut, st;
	FILE *f;
	size_t n;

	if (pid <= 0)
		return -1;
	snprintf(path, sizeof path, "/proc/%ld/stat", pid);
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* fields 14 and 15, counted after the ")" that ends the command name */
	if ((p = strrchr(buf, ')')) == NULL ||
	    sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
		return -1;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* ---- the projection's progress ---- */

typedef struct progress {
	const char *name;
	int found, building, serving, faulted;
	uint64_t live_seq;
	char error[256];
} progress;

static void
on_projection(void *ud, const tide_projection_info *pi)
{
	progress *p = ud;

	if (strcmp(pi->name, p->name) != 0)
		return;
	p->found = 1;
	p->building = pi->building;
	p->serving = pi->serving;
	p->faulted = pi->faulted;
	p->live_seq = pi->live_seq;
	snprintf(p->error, sizeof p->error, "%s", pi->error ? pi->error : "");
}

static void
poll_progress(tide_log *log, progress *p)
{
	int rc;

	p->found = 0;
	if ((rc = tide_log_projections(log, on_projection, p)) != TIDE_OK)
		bench_die("cannot read the projections: %s", tide_strerror(rc));
	if (p->found && p->faulted)
		bench_die("the projection is stopped: %s", p->error);
}

static uint64_t
log_head(tide_log *log)
{
	tide_log_stat st;
	int rc;

	if ((rc = tide_log_stat_get(log, &st)) != TIDE_OK)
		bench_die("cannot stat the log: %s", tide_strerror(rc));
	return st.last_seq;
}

static tide_log *
open_log(const char *dir)
{
	tide_log *log;
	int rc;

	if ((rc = tide_log_open(&log, dir)) != TIDE_OK)
		bench_die("cannot open the log: %s", tide_errmsg());
	return log;
}

static int
cmd_wait(const char *data, const char *name, uint64_t base, uint64_t want, double t0, long pid,
	 double cpu0, double timeout)
{
	tide_log *log = open_log(data);
	progress p = { .name = name };
	double t, cpu;

	for (;;) {
		poll_progress(log, &p);
		if (p.found && p.serving && !p.building && p.live_seq >= want)
			break;
		if (wall_now() - t0 > timeout) {
			fprintf(stderr, "projbench: timeout after %.0f s: live at %llu of %llu\n",
				timeout, (unsigned long long)p.live_seq, (unsigned long long)want);
			return 1;
		}
		bench_sleep_ms(2);
	}
	t = wall_now() - t0;
	cpu = proc_cpu(pid) - cpu0;
	printf("events=%llu live_seq=%llu elapsed_s=%.3f rate=%.0f server_cpu_s=%.2f "
	       "server_cpu_us_per_event=%.2f\n",
	       (unsigned long long)(want - base), (unsigned long long)p.live_seq, t,
	       (double)(want - base) / t, cpu, cpu * 1e6 / (double)(want - base));
	tide_log_close(log);
	return 0;
}

static int
cmd_rebuild(const char *url, const char *data, const char *name, long pid, double timeout)
{
	tide_log *log = open_log(data);
	progress p = { .name = name };
	char req[512], *reply = NULL;
	int sock, tmo = 10000, r, seen = 0;
	double t0, t, cpu0, cpu;
	uint64_t want = log_head(log);

	if ((sock = nn_socket(AF_SP, NN_REQ)) < 0)
		bench_die("nn_socket: %s", nn_strerror(nn_errno()));
	nn_setsockopt(sock, NN_SOL_SOCKET, NN_RCVTIMEO, &tmo, sizeof tmo);
	if (nn_connect(sock, url) < 0)
		bench_die("cannot connect: %s", nn_strerror(nn_errno()));
	r = snprintf(req, sizeof req,
		     "{\"command\":\"projection\",\"op\":\"rebuild\",\"name\":\"%s\"}", name);
	cpu0 = proc_cpu(pid);
	t0 = bench_now();
	if (nn_send(sock, req, (size_t)r, 0) < 0)
		bench_die("send: %s", nn_strerror(nn_errno()));
	if ((r = nn_recv(sock, &reply, NN_MSG, 0)) < 0)
		bench_die("no reply: %s", nn_strerror(nn_errno()));
	if (r < 10 || memcmp(reply, "{\"ok\":true", 10) != 0) {
		fprintf(stderr, "projbench: rebuild refused: %.*s\n", r, reply);
		return 1;
	}
	nn_freemsg(reply);
	/* first see the rebuild under way (the request commits with a turn),
	 * then finished */
	for (;;) {
		poll_progress(log, &p);
		if (p.found && p.building)
			seen = 1;
		if (seen && p.serving && !p.building && p.live_seq >= want)
			break;
		if (bench_now() - t0 > timeout) {
			fprintf(stderr, "projbench: rebuild timeout after %.0f s (started: %d)\n",
				timeout, seen);
			return 1;
		}
		bench_sleep_ms(2);
	}
	t = bench_now() - t0;
	cpu = proc_cpu(pid) - cpu0;
	printf("events=%llu elapsed_s=%.3f rate=%.0f server_cpu_s=%.2f "
	       "server_cpu_us_per_event=%.2f\n",
	       (unsigned long long)p.live_seq, t, (double)p.live_seq / t, cpu,
	       cpu * 1e6 / (double)p.live_seq);
	nn_close(sock);
	tide_log_close(log);
	return 0;
}

/* ---- queries ---- */

static void
report(double *lat, long n, long missing, size_t bytes)
{
	printf("requests=%ld missing=%ld avg_reply_bytes=%.0f", n, missing,
	       (double)bytes / (double)n);
	bench_print_latency(lat, n);
}

static unsigned
pick(uint64_t *rng, long keys)
{
	*rng = bench_mix(*rng);
	return (unsigned)(*rng % (uint64_t)keys);
}

static int
cmd_query(const char *url, const char *name, long keys, long nreq, long warmup, uint64_t seed,
	  long while_pid, double timeout)
{
	double *lat = malloc(sizeof *lat * (size_t)nreq), t_start = 0;
	int sock, tmo = (int)(timeout * 1000);
	long done = 0;
	long missing = 0;
	size_t bytes = 0;
	char req[512];

	if (lat == NULL)
		bench_die("out of memory%s", "");
	if ((sock = nn_socket(AF_SP, NN_REQ)) < 0)
		bench_die("nn_socket: %s", nn_strerror(nn_errno()));
	nn_setsockopt(sock, NN_SOL_SOCKET, NN_RCVTIMEO, &tmo, sizeof tmo);
	if (nn_connect(sock, url) < 0)
		bench_die("cannot connect: %s", nn_strerror(nn_errno()));
	for (long i = 0; i < warmup + nreq; i++) {
		int n = snprintf(req, sizeof req, "{\"query\":\"%s\",\"key\":\"acc-%05u\"}", name,
				 pick(&seed, keys));
		char *reply = NULL;
		double t0 = bench_now(), dt;
		int r;

		if (nn_send(sock, req, (size_t)n, 0) < 0)
			bench_die("send: %s", nn_strerror(nn_errno()));
		if ((r = nn_recv(sock, &reply, NN_MSG, 0)) < 0)
			bench_die("no reply: %s", nn_strerror(nn_errno()));
		dt = bench_now() - t0;
		if (r >= 10 && memcmp(reply, "{\"ok\":true", 10) == 0 &&
		    memmem(reply, (size_t)r, "\"state\":{", 9) != NULL) {
			if (i >= warmup)
				bytes += (size_t)r;
		} else if (memmem(reply, (size_t)r, "no state for key", 16) != NULL) {
			if (i >= warmup)
				missing++;
		} else {
			fprintf(stderr, "projbench: unexpected reply to %.*s: %.*s\n", n, req, r,
				reply);
			return 1;
		}
		nn_freemsg(reply);
		if (i == warmup)
			t_start = t0;
		if (i >= warmup)
			lat[done++] = dt * 1e6;
		if (while_pid > 0 && kill((pid_t)while_pid, 0) != 0 && errno == ESRCH)
			break;
	}
	if (done == 0)
		bench_die("the load ended before the first query%s", "");
	report(lat, done, missing, bytes);
	printf(" queries_s=%.3f\n", bench_now() - t_start);
	nn_close(sock);
	free(lat);
	return 0;
}

typedef struct got {
	size_t n, bytes;
} got;

static int
on_state(void *ud, const char *key, size_t klen, const char *json, size_t jlen)
{
	got *g = ud;

	(void)key;
	(void)klen;
	(void)json;
	g->n++;
	g->bytes += jlen;
	return 0;
}

static int
cmd_direct(const char *data, const char *name, long keys, long nreq, long warmup, uint64_t seed)
{
	double *lat = malloc(sizeof *lat * (size_t)nreq);
	tide_log *log = open_log(data);
	long missing = 0;
	size_t bytes = 0;
	char key[32];

	if (lat == NULL)
		bench_die("out of memory%s", "");
	for (long i = 0; i < warmup + nreq; i++) {
		got g = { 0, 0 };
		double t0, dt;
		int rc;

		snprintf(key, sizeof key, "acc-%05u", pick(&seed, keys));
		t0 = bench_now();
		rc = tide_log_query(log, name, key, NULL, 0, on_state, &g);
		dt = bench_now() - t0;
		if (rc == TIDE_OK && g.n == 1) {
			if (i >= warmup)
				bytes += g.bytes;
		} else if (rc == TIDE_ENOTFOUND) {
			if (i >= warmup)
				missing++;
		} else {
			fprintf(stderr, "projbench: query for %s failed: %s (%zu states)\n", key,
				tide_strerror(rc), g.n);
			return 1;
		}
		if (i >= warmup)
			lat[i - warmup] = dt * 1e6;
	}
	report(lat, nreq, missing, bytes);
	putchar('\n');
	tide_log_close(log);
	free(lat);
	return 0;
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = { { "url", required_argument, NULL, 'u' },
					      { "data", required_argument, NULL, 'd' },
					      { "name", required_argument, NULL, 'n' },
					      { "seq", required_argument, NULL, 's' },
					      { "t0", required_argument, NULL, 'T' },
					      { "pid", required_argument, NULL, 'p' },
					      { "timeout", required_argument, NULL, 't' },
					      { "keys", required_argument, NULL, 'K' },
					      { "requests", required_argument, NULL, 'q' },
					      { "warmup", required_argument, NULL, 'w' },
					      { "seed", required_argument, NULL, 'S' },
					      { "from", required_argument, NULL, 'f' },
					      { "cpu0", required_argument, NULL, 'C' },
					      { "while-pid", required_argument, NULL, 'W' },
					      { NULL, 0, NULL, 0 } };
	const char *mode, *url = NULL, *data = NULL, *name = NULL;
	long keys = BENCH_ACCOUNTS, nreq = 20000, warmup = 200, pid = 0, while_pid = 0;
	unsigned long long want = 0, seed = 1, base = 0;
	double t0 = 0, timeout = 600, cpu0 = 0;
	int c;

	if (argc < 2)
		bench_die("usage: projbench wait|rebuild|query|direct [options]%s", "");
	mode = argv[1];
	optind = 2;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'u': url = optarg; break;
		case 'd': data = optarg; break;
		case 'n': name = optarg; break;
		case 's': want = strtoull(optarg, NULL, 10); break;
		case 'T': t0 = atof(optarg); break;
		case 'p': pid = atol(optarg); break;
		case 't': timeout = atof(optarg); break;
		case 'K': keys = atol(optarg); break;
		case 'q': nreq = atol(optarg); break;
		case 'w': warmup = atol(optarg); break;
		case 'S': seed = strtoull(optarg, NULL, 10); break;
		case 'f': base = strtoull(optarg, NULL, 10); break;
		case 'C': cpu0 = atof(optarg); break;
		case 'W': while_pid = atol(optarg); break;
		default: bench_die("bad option%s", "");
		}
	}
	if (name == NULL)
		bench_die("--name is required%s", "");
	if (keys < 1 || nreq < 1 || warmup < 0)
		bench_die("--keys and --requests must be positive%s", "");
	if (strcmp(mode, "wait") == 0) {
		if (data == NULL || want <= base || t0 <= 0)
			bench_die("wait needs --data, --seq (above --from) and --t0%s", "");
		return cmd_wait(data, name, base, want, t0, pid, cpu0, timeout);
	}
	if (strcmp(mode, "rebuild") == 0) {
		if (data == NULL || url == NULL)
			bench_die("rebuild needs --url and --data%s", "");
		return cmd_rebuild(url, data, name, pid, timeout);
	}
	if (strcmp(mode, "query") == 0) {
		if (url == NULL)
			bench_die("query needs --url%s", "");
		return cmd_query(url, name, keys, nreq, warmup, seed, while_pid,
				 timeout == 600 ? 60 : timeout);
	}
	if (strcmp(mode, "direct") == 0) {
		if (data == NULL)
			bench_die("direct needs --data%s", "");
		return cmd_direct(data, name, keys, nreq, warmup, seed);
	}
	bench_die("unknown mode '%s'", mode);
	return 2;
}
