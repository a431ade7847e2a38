/*
 * tidebench.c - load generator for Tide's nanomsg endpoints.
 *
 *   tidebench push --url URL --data DIR [--events N] [--batch B]
 *                  [--consumer NAME] [--run ID] [--timeout SEC]
 *                  [--kind order|account|card|sensor] [--keys K] [--expect M]
 *                  [--own] [--start MS] [--span MS]
 *       Builds N events (benchev.h) into messages of B events each
 *       (NDJSON; B=1 sends one bare event per message) before the clock
 *       starts, connects a PUSH socket, waits for the connection, then
 *       sends everything and polls the engine's LMDB log read-only until
 *       it holds N events (and, with --consumer, until that consumer's
 *       checkpoint is at the log's last seq).  Elapsed time is from the
 *       first send to that moment.  --kind account sends the projection
 *       benchmark's account events over K keys (default 100000) instead
 *       of orders; --kind card the velocity rule's card transactions on K
 *       cards, --kind sensor the absence rule's readings of K devices
 *       (K consecutive events cover every device once).  Card and sensor
 *       events carry an event time: event n of N at START + (n-1)*SPAN/N
 *       ms after 2026-01-01T00:00Z (--start, default 0; --span, default
 *       30 days for cards, 10 minutes for sensors).  --expect waits for M
 *       events in the log instead of N (for a log that holds events
 *       already).  --own counts only this push's events (those with its
 *       kind's source) towards N or M, for a consumer that emits into the
 *       log: it reads each new event once, as it arrives.
 *
 *   tidebench req --url URL [--requests N] [--warmup W] [--run ID]
 *       Sequential REQ round trips, one event per request, each checked
 *       for {"ok":true...}; reports median, p99, p99.9, mean, max.
 *
 *   tidebench pushpull --url URL [--events N] [--batch B]
 *       Bare nanomsg, for comparison: a PULL socket bound at URL (as Tide
 *       binds its own, same buffer sizes) in one thread, the same PUSH
 *       sender as `push` in another; the receiver only counts messages.
 *       Elapsed time is from the first send until the last message is
 *       received.  Prints the same line as push (events=... rate=...).
 *
 *   tidebench pages --data DIR
 *       The pages of the log's data.mdb (read-only, also while the engine
 *       runs): the high-water mark (the file's used part), the pages of
 *       the B-trees (every database), the free ones, the page size.
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
#include <pthread.h>
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
	/* --own: the source's bytes as stored ("\0" source "\0", after the
	 * id), the events read so far and how many of them carry it */
	char own[64];
	size_t own_len;
	uint64_t scanned, owned;
} watcher;

static int
watcher_open(watcher *w, const char *dir, const char *consumer, const char *own)
{
	int rc;

	memset(w, 0, sizeof *w);
	w->consumer = consumer;
	if (own != NULL) {
		/* stored as NUL-terminated attributes: id, source, type, ... */
		w->own_len = strlen(own) + 2;
		if (w->own_len > sizeof w->own)
			return EINVAL;
		memcpy(w->own + 1, own, w->own_len - 2);
	}
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

/* Count the events after w->scanned that carry the source w->own. */
static int
watcher_scan(watcher *w)
{
	uint64_t from = w->scanned + 1;
	MDB_cursor *c;
	MDB_val k = { sizeof from, &from }, v;
	int rc;

	if ((rc = mdb_cursor_open(w->txn, w->events, &c)) != 0)
		return rc;
	for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
	     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		if (k.mv_size == 8)
			memcpy(&w->scanned, k.mv_data, 8);
		if (memmem(v.mv_data, v.mv_size, w->own, w->own_len) != NULL)
			w->owned++;
	}
	mdb_cursor_close(c);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

/* The seq of the last event in the log (0 if empty). */
static int
watcher_last(watcher *w, uint64_t *last)
{
	MDB_cursor *c;
	MDB_val k, v;
	int rc;

	*last = 0;
	if ((rc = mdb_cursor_open(w->txn, w->events, &c)) != 0)
		return rc;
	rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
	if (rc == 0 && k.mv_size == 8)
		memcpy(last, k.mv_data, 8);
	mdb_cursor_close(c);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Events in the log (with --own: this push's events in it), the seq of
 * the last one, and the consumer's checkpoint (0 if none yet). */
static int
watcher_poll(watcher *w, uint64_t *events, uint64_t *last, uint64_t *checkpoint)
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
	if (w->own_len) {
		if ((rc = watcher_scan(w)) != 0)
			goto out;
		*events = w->owned;
	}
	if ((rc = watcher_last(w, last)) != 0)
		goto out;
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

enum kind { K_ORDER, K_ACCOUNT, K_CARD, K_SENSOR };

typedef struct push_opts {
	enum kind kind;
	long keys, expect;
	int own;             /* count only this push's events (--own) */
	int64_t start, span; /* event time of cards and sensors, ms */
} push_opts;

/* Event n (from 1) of @p nevents of the chosen kind into buf. */
static int
push_event(char *buf, size_t cap, const char *run, uint64_t n, long nevents, const push_opts *o,
	   uint64_t stride)
{
	int64_t ms =
		o->start + (int64_t)((uint64_t)(n - 1) * (uint64_t)o->span / (uint64_t)nevents);

	switch (o->kind) {
	case K_ACCOUNT: return bench_account_event(buf, cap, run, n, (unsigned)o->keys);
	case K_CARD: return bench_card_event(buf, cap, run, n, (unsigned)o->keys, ms);
	case K_SENSOR: return bench_sensor_event(buf, cap, run, n, (unsigned)o->keys, stride, ms);
	default: return bench_event(buf, cap, run, n);
	}
}

/* Every message of a run, built before the clock starts: the generator
 * shares two cores with the engine, so it should cost as little as
 * possible while measuring.  Message m is buf[off[m] .. off[m + 1]). */
typedef struct msgs {
	char *buf;
	size_t *off, len;
	long n;
} msgs;

static void
msgs_build(msgs *ms, long nevents, long batch, const char *run, const push_opts *o)
{
	size_t cap = (size_t)nevents * 320 + 4096;
	uint64_t stride = o->kind == K_SENSOR ? bench_stride((uint64_t)o->keys) : 1;

	ms->n = (nevents + batch - 1) / batch;
	ms->len = 0;
	ms->buf = malloc(cap);
	ms->off = malloc(sizeof *ms->off * (size_t)(ms->n + 1));
	if (ms->buf == NULL || ms->off == NULL)
		bench_die("out of memory%s", "");
	for (long m = 0, n = 0; m < ms->n; m++) {
		ms->off[m] = ms->len;
		for (long k = 0; k < batch && n < nevents; k++, n++) {
			ms->len += (size_t)push_event(ms->buf + ms->len, cap - ms->len, run,
						      (uint64_t)n + 1, nevents, o, stride);
			if (batch > 1)
				ms->buf[ms->len++] = '\n';
		}
	}
	ms->off[ms->n] = ms->len;
}

/* Bytes per event, newlines between batched events left out. */
static double
msgs_event_bytes(const msgs *ms, long nevents, long batch)
{
	return (double)(ms->len - (batch > 1 ? (size_t)nevents : 0)) / nevents;
}

static void
msgs_send(const msgs *ms, int sock)
{
	for (long m = 0; m < ms->n; m++) {
		size_t n = ms->off[m + 1] - ms->off[m];
		while (nn_send(sock, ms->buf + ms->off[m], n, 0) < 0) {
			if (nn_errno() != EINTR)
				bench_die("send: %s", nn_strerror(nn_errno()));
		}
	}
}

static void
msgs_free(msgs *ms)
{
	free(ms->buf);
	free(ms->off);
}

/* Wait until @p sock has connected to @p url (the handshake is not timed). */
static void
wait_connected(int sock, const char *url)
{
	double deadline = bench_now() + 10;

	while (nn_get_statistic(sock, NN_STAT_CURRENT_CONNECTIONS) < 1) {
		if (bench_now() > deadline)
			bench_die("no connection to %s within 10 s", url);
		bench_sleep_ms(1);
	}
}

static int
cmd_push(const char *url, const char *data, long nevents, long batch, const char *consumer,
	 const char *run, double timeout, const push_opts *o)
{
	msgs ms;
	int sock, sndbuf = 4 << 20, rc;
	uint64_t events = 0, last = 0, ck = 0,
		 want = (uint64_t)(o->expect > 0 ? o->expect : nevents);
	const char *own = !o->own                ? NULL
			  : o->kind == K_CARD    ? BENCH_CARD_SOURCE
			  : o->kind == K_SENSOR  ? BENCH_SENSOR_SOURCE
			  : o->kind == K_ACCOUNT ? "/bench/bank"
						 : "/bench/shop";
	double t0, tsent, tdone, deadline;
	watcher w;

	msgs_build(&ms, nevents, batch, run, o);

	if ((rc = watcher_open(&w, data, consumer, own)) != 0)
		bench_die("cannot open the log: %s", mdb_strerror(rc));
	if ((sock = nn_socket(AF_SP, NN_PUSH)) < 0)
		bench_die("nn_socket: %s", nn_strerror(nn_errno()));
	nn_setsockopt(sock, NN_SOL_SOCKET, NN_SNDBUF, &sndbuf, sizeof sndbuf);
	if (nn_connect(sock, url) < 0)
		bench_die("cannot connect: %s", nn_strerror(nn_errno()));
	wait_connected(sock, url);

	t0 = bench_now();
	msgs_send(&ms, sock);
	tsent = bench_now();
	deadline = t0 + timeout;
	for (;;) {
		if ((rc = watcher_poll(&w, &events, &last, &ck)) != 0)
			bench_die("cannot read the log: %s", mdb_strerror(rc));
		/* with a consumer: it has handled everything in the log, what
		 * it emitted too */
		if (events >= want && (consumer == NULL || ck >= last))
			break;
		if (bench_now() > deadline) {
			fprintf(stderr,
				"tidebench: timeout after %.0f s: log holds %llu of %llu events%s, "
				"last seq %llu, checkpoint %llu\n",
				timeout, (unsigned long long)events, (unsigned long long)want,
				own ? " (of this push)" : "", (unsigned long long)last,
				(unsigned long long)ck);
			return 1;
		}
		bench_sleep_ms(2);
	}
	tdone = bench_now();
	printf("events=%ld batch=%ld messages=%ld avg_event_bytes=%.0f send_s=%.3f total_s=%.3f "
	       "last_seq=%llu rate=%.0f\n",
	       nevents, batch, ms.n, msgs_event_bytes(&ms, nevents, batch), tsent - t0, tdone - t0,
	       (unsigned long long)last, nevents / (tdone - t0));
	nn_close(sock);
	mdb_env_close(w.env);
	msgs_free(&ms);
	return 0;
}

/* ---- bare nanomsg ---- */

typedef struct sink_arg {
	int sock;
	long want;
	double tlast;
	int failed;
} sink_arg;

static void *
sink_main(void *ud)
{
	sink_arg *a = ud;

	for (long got = 0; got < a->want;) {
		void *msg = NULL;
		int n = nn_recv(a->sock, &msg, NN_MSG, 0);
		if (n < 0) {
			if (nn_errno() == EINTR)
				continue;
			a->failed = 1;
			return NULL;
		}
		nn_freemsg(msg);
		got++;
	}
	a->tlast = bench_now();
	return NULL;
}

static int
cmd_pushpull(const char *url, long nevents, long batch, const char *run)
{
	msgs ms;
	int push, rcvbuf = 4 << 20, sndbuf = 4 << 20, maxsz = -1, timeo = 60000;
	push_opts o = { K_ORDER, BENCH_ACCOUNTS, 0, 0, 0, -1 };
	sink_arg a = { -1, 0, 0, 0 };
	pthread_t th;
	double t0, tsent;

	msgs_build(&ms, nevents, batch, run, &o);
	a.want = ms.n;
	if ((a.sock = nn_socket(AF_SP, NN_PULL)) < 0 || (push = nn_socket(AF_SP, NN_PUSH)) < 0)
		bench_die("nn_socket: %s", nn_strerror(nn_errno()));
	nn_setsockopt(a.sock, NN_SOL_SOCKET, NN_RCVBUF, &rcvbuf, sizeof rcvbuf);
	nn_setsockopt(a.sock, NN_SOL_SOCKET, NN_RCVMAXSIZE, &maxsz, sizeof maxsz);
	nn_setsockopt(a.sock, NN_SOL_SOCKET, NN_RCVTIMEO, &timeo, sizeof timeo);
	nn_setsockopt(push, NN_SOL_SOCKET, NN_SNDBUF, &sndbuf, sizeof sndbuf);
	if (nn_bind(a.sock, url) < 0)
		bench_die("cannot bind: %s", nn_strerror(nn_errno()));
	if (nn_connect(push, url) < 0)
		bench_die("cannot connect: %s", nn_strerror(nn_errno()));
	wait_connected(push, url);
	if (pthread_create(&th, NULL, sink_main, &a) != 0)
		bench_die("cannot start the receiver%s", "");
	t0 = bench_now();
	msgs_send(&ms, push);
	tsent = bench_now();
	pthread_join(th, NULL);
	if (a.failed)
		bench_die("receive: %s", nn_strerror(nn_errno()));
	printf("events=%ld batch=%ld messages=%ld avg_event_bytes=%.0f send_s=%.3f total_s=%.3f "
	       "rate=%.0f\n",
	       nevents, batch, ms.n, msgs_event_bytes(&ms, nevents, batch), tsent - t0,
	       a.tlast - t0, nevents / (a.tlast - t0));
	nn_close(push);
	nn_close(a.sock);
	msgs_free(&ms);
	return 0;
}

/* ---- pages ---- */

static int
cmd_pages(const char *data)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_cursor *c;
	MDB_envinfo info;
	MDB_stat st;
	MDB_val k, v;
	MDB_dbi main_db;
	uint64_t live = 0, free_pages = 0, freelist = 0;
	int rc, ndb = 0;

	if ((rc = mdb_env_create(&env)) != 0 || (rc = mdb_env_set_maxdbs(env, 64)) != 0 ||
	    (rc = mdb_env_open(env, data, MDB_RDONLY | MDB_NOTLS, 0644)) != 0 ||
	    (rc = mdb_env_info(env, &info)) != 0 ||
	    (rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn)) != 0 ||
	    (rc = mdb_dbi_open(txn, NULL, 0, &main_db)) != 0 ||
	    (rc = mdb_stat(txn, main_db, &st)) != 0)
		bench_die("cannot read the log: %s", mdb_strerror(rc));
	live = st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages;
	/* every named database is a key of the main one */
	if ((rc = mdb_cursor_open(txn, main_db, &c)) != 0)
		bench_die("cannot read the log: %s", mdb_strerror(rc));
	while ((rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) == 0) {
		char name[256];
		MDB_dbi d;
		MDB_stat ds;
		if (k.mv_size == 0 || k.mv_size >= sizeof name)
			continue;
		memcpy(name, k.mv_data, k.mv_size);
		name[k.mv_size] = '\0';
		if (mdb_dbi_open(txn, name, 0, &d) != 0 || mdb_stat(txn, d, &ds) != 0)
			continue; /* not a database */
		live += ds.ms_branch_pages + ds.ms_leaf_pages + ds.ms_overflow_pages;
		ndb++;
	}
	mdb_cursor_close(c);
	/* the free list (database 0): each value is a count, then page numbers */
	if ((rc = mdb_stat(txn, 0, &st)) != 0 || (rc = mdb_cursor_open(txn, 0, &c)) != 0)
		bench_die("cannot read the free list: %s", mdb_strerror(rc));
	freelist = st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages;
	while ((rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) == 0) {
		size_t n = 0;
		if (v.mv_size >= sizeof n)
			memcpy(&n, v.mv_data, sizeof n);
		free_pages += n;
	}
	mdb_cursor_close(c);
	printf("page_size=%u pages_total=%llu pages_live=%llu pages_free=%llu "
	       "pages_freelist=%llu databases=%d bytes_total=%llu bytes_live=%llu\n",
	       st.ms_psize, (unsigned long long)info.me_last_pgno + 1, (unsigned long long)live,
	       (unsigned long long)free_pages, (unsigned long long)freelist, ndb,
	       (unsigned long long)(info.me_last_pgno + 1) * st.ms_psize,
	       (unsigned long long)live * st.ms_psize);
	mdb_txn_abort(txn);
	mdb_env_close(env);
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
					      { "own", no_argument, NULL, 'o' },
					      { "start", required_argument, NULL, 's' },
					      { "span", required_argument, NULL, 'S' },
					      { NULL, 0, NULL, 0 } };
	const char *mode, *url = NULL, *data = NULL, *consumer = NULL, *run = "0";
	long nevents = 1000000, batch = 500, nreq = 20000, warmup = 200;
	push_opts o = { K_ORDER, BENCH_ACCOUNTS, 0, 0, 0, -1 };
	double timeout = 600;
	int c;

	if (argc < 2)
		bench_die("usage: tidebench push|pushpull|req|pages [options]%s", "");
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
				o.kind = K_ACCOUNT;
			else if (strcmp(optarg, "card") == 0)
				o.kind = K_CARD;
			else if (strcmp(optarg, "sensor") == 0)
				o.kind = K_SENSOR;
			else if (strcmp(optarg, "order") == 0)
				o.kind = K_ORDER;
			else
				bench_die("--kind is order, account, card or sensor, not '%s'",
					  optarg);
			break;
		case 'K': o.keys = atol(optarg); break;
		case 'e': o.expect = atol(optarg); break;
		case 'o': o.own = 1; break;
		case 's': o.start = atoll(optarg); break;
		case 'S': o.span = atoll(optarg); break;
		default: bench_die("bad option%s", "");
		}
	}
	if (strcmp(mode, "pages") == 0) {
		if (data == NULL)
			bench_die("pages needs --data DIR%s", "");
		return cmd_pages(data);
	}
	if (url == NULL)
		bench_die("--url is required%s", "");
	if (strcmp(mode, "push") == 0) {
		if (data == NULL)
			bench_die("push needs --data DIR%s", "");
		if (nevents < 1 || batch < 1 || o.keys < 1)
			bench_die("--events, --batch and --keys must be positive%s", "");
		if (o.span < 0)
			o.span = o.kind == K_SENSOR ? 600000 : 30 * BENCH_DAY_MS;
		if (o.start < 0)
			bench_die("--start must not be negative%s", "");
		return cmd_push(url, data, nevents, batch, consumer, run, timeout, &o);
	}
	if (strcmp(mode, "pushpull") == 0) {
		if (nevents < 1 || batch < 1)
			bench_die("--events and --batch must be positive%s", "");
		return cmd_pushpull(url, nevents, batch, run);
	}
	if (strcmp(mode, "req") == 0) {
		if (nreq < 1 || warmup < 0)
			bench_die("--requests must be positive%s", "");
		return cmd_req(url, nreq, warmup, run);
	}
	bench_die("unknown mode '%s'", mode);
	return 2;
}
