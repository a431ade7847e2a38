/*
 * tidebench.c - load generator for Tide's nanomsg endpoints.
 *
 *   tidebench push --url URL --data DIR [--events N] [--batch B]
 *                  [--consumer NAME] [--run ID] [--timeout SEC]
 *                  [--kind order|account] [--keys K] [--expect M]
 *       Builds N events (benchev.h) into messages of B events each
 *       (NDJSON; B=1 sends one bare event per message) before the clock
 *       starts, connects a PUSH socket, waits for the connection, then
 *       sends everything and polls the engine's LMDB log read-only until
 *       it holds N events (and, with --consumer, until that consumer's
 *       checkpoint reaches the last seq).  Elapsed time is from the first
 *       send to that moment.  --kind account sends the projection
 *       benchmark's account events over K keys (default 100000) instead
 *       of orders; --expect waits for M events in the log instead of N
 *       (for a log that holds events already).
 *
 *   tidebench req --url URL [--requests N] [--warmup W] [--run ID]
 *       Sequential REQ round trips, one event per request, each checked
 *       for {"ok":true...}; reports median, p99, p99.9, mean, max.
 *
 * Output: one line of key=value pairs on stdout, for run.sh to parse.
 * Errors go to stderr with exit status 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <lmdb.h>
#include <nanomsg/nn.h>
#include <nanomsg/pipeline.h>
#include <nanomsg/reqrep.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "benchev.h"

/* ---- reading the log (read-only, while the engine writes) ---- */

typedef struct watcher {
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi events, consumers;
	const char *consumer;
} watcher;

static int
watcher_open(watcher *w, const char *dir, const char *consumer)
{
	int rc;

	memset(w, 0, sizeof *w);
	w->consumer = consumer;
	if ((rc = mdb_env_create(&w->env)) != 0)
		return rc;
	mdb_env_set_maxdbs(w->env, 8);
	mdb_env_set_maxreaders(w->env, 256);
	if ((rc = mdb_env_open(w->env, dir, MDB_RDONLY | MDB_NOTLS, 0644)) != 0)
		return rc;
	if ((rc = mdb_txn_begin(w->env, NULL, MDB_RDONLY, &w->txn)) != 0)
		return rc;
	if ((rc = mdb_dbi_open(w->txn, "events", MDB_INTEGERKEY, &w->events)) != 0 ||
	    (rc = mdb_dbi_open(w->txn, "consumers", 0, &w->consumers)) != 0)
		return rc;
	/* Commit, so the handles outlive this transaction; then keep one
	 * read transaction to renew at every poll. */
	if ((rc = mdb_txn_commit(w->txn)) != 0 ||
	    (rc = mdb_txn_begin(w->env, NULL, MDB_RDONLY, &w->txn)) != 0)
		return rc;
	mdb_txn_reset(w->txn);
	return 0;
}

/* Events in the log and the consumer's checkpoint (0 if none yet). */
static int
watcher_poll(watcher *w, uint64_t *events, uint64_t *checkpoint)
{
	MDB_stat st;
	int rc;

	for (;;) {
		rc = mdb_txn_renew(w->txn);
		if (rc == MDB_MAP_RESIZED) {
			/* the engine grew the map: adopt the new size */
			mdb_env_set_mapsize(w->env, 0);
			continue;
		}
		if (rc != 0)
			return rc;
		break;
	}
	if ((rc = mdb_stat(w->txn, w->events, &st)) != 0)
		goto out;
	*events = st.ms_entries;
	*checkpoint = 0;
	if (w->consumer) {
		MDB_val k = { strlen(w->consumer), (void *)w->consumer }, v;
		rc = mdb_get(w->txn, w->consumers, &k, &v);
		if (rc == 0 && v.mv_size >= 8) {
			const uint8_t *p = v.mv_data;
			uint64_t x = 0;
			for (int i = 7; i >= 0; i--) /* little-endian, as log.c stores it */
				x = (x << 8) | p[i];
			*checkpoint = x;
		}
		rc = 0;
	}
out:
	mdb_txn_reset(w->txn);
	return rc;
}

/* ---- push ---- */

static int
cmd_push(const char *url, const char *data, long nevents, long batch, const char *consumer,
	 const char *run, double timeout, int accounts, long keys, long expect)
{
	size_t cap = (size_t)nevents * 320 + 4096, len = 0;
	long nmsgs = (nevents + batch - 1) / batch;
	char *buf = malloc(cap);
	size_t *off = malloc(sizeof *off * (size_t)(nmsgs + 1));
	int sock, sndbuf = 4 << 20, rc;
	uint64_t events = 0, ck = 0, want = (uint64_t)(expect > 0 ? expect : nevents);
	double t0, tsent, tdone, deadline;
	watcher w;

	if (buf == NULL || off == NULL)
		bench_die("out of memory%s", "");
	/* Build every message before the clock starts: the generator shares
	 * two cores with the engine, so it should cost as little as possible
	 * while measuring. */
	for (long m = 0, n = 0; m < nmsgs; m++) {
		off[m] = len;
		for (long k = 0; k < batch && n < nevents; k++, n++) {
			len += (size_t)(accounts ? bench_account_event(buf + len, cap - len, run,
								       (uint64_t)n + 1,
								       (unsigned)keys)
						 : bench_event(buf + len, cap - len, run,
							       (uint64_t)n + 1));
			if (batch > 1)
				buf[len++] = '\n';
		}
	}
	off[nmsgs] = len;

	if ((rc = watcher_open(&w, data, consumer)) != 0)
		bench_die("cannot open the log: %s", mdb_strerror(rc));
	if ((sock = nn_socket(AF_SP, NN_PUSH)) < 0)
		bench_die("nn_socket: %s", nn_strerror(nn_errno()));
	nn_setsockopt(sock, NN_SOL_SOCKET, NN_SNDBUF, &sndbuf, sizeof sndbuf);
	if (nn_connect(sock, url) < 0)
		bench_die("cannot connect: %s", nn_strerror(nn_errno()));
	/* Do not time the connection handshake. */
	deadline = bench_now() + 10;
	while (nn_get_statistic(sock, NN_STAT_CURRENT_CONNECTIONS) < 1) {
		if (bench_now() > deadline)
			bench_die("no connection to %s within 10 s", url);
		bench_sleep_ms(1);
	}

	t0 = bench_now();
	for (long m = 0; m < nmsgs; m++) {
		size_t n = off[m + 1] - off[m];
		while (nn_send(sock, buf + off[m], n, 0) < 0) {
			if (nn_errno() != EINTR)
				bench_die("send: %s", nn_strerror(nn_errno()));
		}
	}
	tsent = bench_now();
	deadline = t0 + timeout;
	for (;;) {
		if ((rc = watcher_poll(&w, &events, &ck)) != 0)
			bench_die("cannot read the log: %s", mdb_strerror(rc));
		if (events >= want && (consumer == NULL || ck >= want))
			break;
		if (bench_now() > deadline) {
			fprintf(stderr,
				"tidebench: timeout after %.0f s: log holds %llu of %llu events, "
				"checkpoint %llu\n",
				timeout, (unsigned long long)events, (unsigned long long)want,
				(unsigned long long)ck);
			return 1;
		}
		bench_sleep_ms(2);
	}
	tdone = bench_now();
	printf("events=%ld batch=%ld messages=%ld avg_event_bytes=%.0f send_s=%.3f total_s=%.3f "
	       "rate=%.0f\n",
	       nevents, batch, nmsgs, (double)(len - (batch > 1 ? (size_t)nevents : 0)) / nevents,
	       tsent - t0, tdone - t0, nevents / (tdone - t0));
	nn_close(sock);
	mdb_env_close(w.env);
	free(buf);
	free(off);
	return 0;
}

/* ---- req ---- */

static int
cmd_req(const char *url, long nreq, long warmup, const char *run)
{
	double *lat = malloc(sizeof *lat * (size_t)nreq);
	int sock, tmo = 10000;
	char ev[512];

	if (lat == NULL)
		bench_die("out of memory%s", "");
	if ((sock = nn_socket(AF_SP, NN_REQ)) < 0)
		bench_die("nn_socket: %s", nn_strerror(nn_errno()));
	nn_setsockopt(sock, NN_SOL_SOCKET, NN_RCVTIMEO, &tmo, sizeof tmo);
	if (nn_connect(sock, url) < 0)
		bench_die("cannot connect: %s", nn_strerror(nn_errno()));
	for (long i = 0; i < warmup + nreq; i++) {
		int n = bench_event(ev, sizeof ev, run, (uint64_t)i + 1);
		char *reply = NULL;
		double t0 = bench_now(), dt;
		int r;

		if (nn_send(sock, ev, (size_t)n, 0) < 0)
			bench_die("send: %s", nn_strerror(nn_errno()));
		if ((r = nn_recv(sock, &reply, NN_MSG, 0)) < 0)
			bench_die("no reply: %s", nn_strerror(nn_errno()));
		dt = bench_now() - t0;
		if (r < 10 || memcmp(reply, "{\"ok\":true", 10) != 0 ||
		    memmem(reply, (size_t)r, "duplicate", 9) != NULL) {
			fprintf(stderr, "tidebench: unexpected reply: %.*s\n", r, reply);
			return 1;
		}
		nn_freemsg(reply);
		if (i >= warmup)
			lat[i - warmup] = dt * 1e6;
	}
	printf("requests=%ld", nreq);
	bench_print_latency(lat, nreq);
	putchar('\n');
	nn_close(sock);
	free(lat);
	return 0;
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = { { "url", required_argument, NULL, 'u' },
					      { "data", required_argument, NULL, 'd' },
					      { "events", required_argument, NULL, 'n' },
					      { "batch", required_argument, NULL, 'b' },
					      { "consumer", required_argument, NULL, 'c' },
					      { "run", required_argument, NULL, 'r' },
					      { "timeout", required_argument, NULL, 't' },
					      { "requests", required_argument, NULL, 'q' },
					      { "warmup", required_argument, NULL, 'w' },
					      { "kind", required_argument, NULL, 'k' },
					      { "keys", required_argument, NULL, 'K' },
					      { "expect", required_argument, NULL, 'e' },
					      { NULL, 0, NULL, 0 } };
	const char *mode, *url = NULL, *data = NULL, *consumer = NULL, *run = "0";
	long nevents = 1000000, batch = 500, nreq = 20000, warmup = 200, keys = BENCH_ACCOUNTS,
	     expect = 0;
	int accounts = 0;
	double timeout = 600;
	int c;

	if (argc < 2)
		bench_die("usage: tidebench push|req [options]%s", "");
	mode = argv[1];
	optind = 2;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'u': url = optarg; break;
		case 'd': data = optarg; break;
		case 'n': nevents = atol(optarg); break;
		case 'b': batch = atol(optarg); break;
		case 'c': consumer = optarg; break;
		case 'r': run = optarg; break;
		case 't': timeout = atof(optarg); break;
		case 'q': nreq = atol(optarg); break;
		case 'w': warmup = atol(optarg); break;
		case 'k':
			if (strcmp(optarg, "account") == 0)
				accounts = 1;
			else if (strcmp(optarg, "order") != 0)
				bench_die("--kind is order or account, not '%s'", optarg);
			break;
		case 'K': keys = atol(optarg); break;
		case 'e': expect = atol(optarg); break;
		default: bench_die("bad option%s", "");
		}
	}
	if (url == NULL)
		bench_die("--url is required%s", "");
	if (strcmp(mode, "push") == 0) {
		if (data == NULL)
			bench_die("push needs --data DIR%s", "");
		if (nevents < 1 || batch < 1 || keys < 1)
			bench_die("--events, --batch and --keys must be positive%s", "");
		return cmd_push(url, data, nevents, batch, consumer, run, timeout, accounts, keys,
				expect);
	}
	if (strcmp(mode, "req") == 0) {
		if (nreq < 1 || warmup < 0)
			bench_die("--requests must be positive%s", "");
		return cmd_req(url, nreq, warmup, run);
	}
	bench_die("unknown mode '%s'", mode);
	return 2;
}
