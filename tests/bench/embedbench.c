/*
 * embedbench.c - what embedding libtide costs: reading fields of stored
 * events, and publishing from C (links libtide, libevent, yajl, pthreads).
 *
 *   embedbench write --data DIR [--events N]
 *       Builds the log the reads walk: an engine ("relaxed", no
 *       endpoints) on its own base stores N card transactions (default
 *       1000000), published from its loop thread 1000 to a text (NDJSON).
 *
 *   embedbench read --data DIR
 *       Walks the whole log with a tide_log cursor five times, timing
 *       each walk:
 *         walk   the cursor alone (the baseline);
 *         value  + tide_event_value() of "data.merchant.country" and
 *                "data.amount" (read in place);
 *         json   + tide_event_json() alone (encoding the event);
 *         yajl   + tide_event_json(), yajl_tree_parse() of the text and
 *                yajl_tree_get() of the same two fields;
 *         data   + tide_event_data() (the data member only), parsed and
 *                looked up the same way.
 *       Every pass must see the same events and find the same values (the
 *       sum of the amounts, the count of "FR"), or the run fails.
 *
 *   embedbench publish --data DIR [--events N] [--durability sync|relaxed]
 *                      [--mode loop|mt] [--threads T] [--inflight K]
 *                      [--consumer]
 *       Stores N events in a new log at DIR, one event per call:
 *         loop  tide_publish() on the engine's loop thread, K in flight
 *               (default 1000): each completion callback publishes the next;
 *         mt    tide_publish_mt() from T producer threads (default 1), the
 *               engine running its loop on a thread of its own; a producer
 *               that meets TIDE_EFULL (the queue is full) sleeps 50 µs and
 *               tries again.
 *       With --consumer, a C consumer (tide_consumer_add, from the
 *       beginning) reads data.merchant.country of each event with
 *       tide_event_value().  The clock runs from the first call until every
 *       completion callback has arrived (and the consumer has seen every
 *       event); CPU is the whole process's (getrusage), over the same span.
 *       Afterwards the log is opened read-only to check it holds N events
 *       (and the consumer's checkpoint is at N).
 *
 * The events are card transactions of about 300 bytes, all built before the
 * clock starts:
 *
 *   {"specversion":"1.0","id":"card-0-42","source":"/bench","type":"card.tx",
 *    "subject":"card-0042","data":{"amount":123.45,"card":"c123",
 *    "merchant":{"id":"m7","country":"FR"},"items":[{"sku":"s-17","qty":1,
 *    "price":9.5},...three of them...]}}
 *
 * Output: one line of key=value pairs on stdout, for run.sh to parse.
 * Errors go to stderr with exit status 1.
 */
#define _GNU_SOURCE
#include <event2/event.h>
#include <getopt.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <yajl/yajl_tree.h>

#include "benchev.h"
#include "tide.h"

#define CARDS 10000
#define MERCHANTS 500

static const char *const countries[] = { "FR", "DE", "ES", "IT", "NL", "BE", "PT", "IE" };

/* CPU seconds (user + system) of the whole process, every thread. */
static double
cpu_now(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void
fail(const char *what, int rc)
{
	fprintf(stderr, "embedbench: %s: %s (%s)\n", what, tide_strerror(rc), tide_errmsg());
	exit(1);
}

/* Card transaction n (no newline); returns its length. */
static int
card_event(char *buf, size_t cap, uint64_t n)
{
	uint64_t h = bench_mix(n ^ 0xca7dull);
	unsigned card = (unsigned)(h % CARDS);
	unsigned merchant = (unsigned)((h >> 16) % MERCHANTS);
	unsigned cents = (unsigned)((h >> 32) % 100000) + 100;
	const char *country = countries[(h >> 52) % 8];
	unsigned sku = (unsigned)((h >> 8) % 1000);

	return snprintf(buf, cap,
			"{\"specversion\":\"1.0\",\"id\":\"card-0-%llu\",\"source\":\"/bench\","
			"\"type\":\"card.tx\",\"subject\":\"card-%04u\","
			"\"data\":{\"amount\":%u.%02u,\"card\":\"c%u\","
			"\"merchant\":{\"id\":\"m%u\",\"country\":\"%s\"},"
			"\"items\":[{\"sku\":\"s-%u\",\"qty\":1,\"price\":9.5},"
			"{\"sku\":\"s-%u\",\"qty\":2,\"price\":4.25},"
			"{\"sku\":\"s-%u\",\"qty\":1,\"price\":12}]}}",
			(unsigned long long)n, card, cents / 100, cents % 100, card, merchant,
			country, sku, (sku + 1) % 1000, (sku + 2) % 1000);
}

/* All N events, built before any clock starts: one arena of NDJSON, and
 * where each event begins in it. */
typedef struct events {
	char *text;
	size_t *at; /* event i is text[at[i]] .. text[at[i + 1] - 2], then '\n' */
	uint64_t n;
} events;

/* Events i .. end - 1 as one text (NDJSON when there are several). */
static const char *
events_text(const events *ev, uint64_t i, uint64_t end, size_t *len)
{
	*len = ev->at[end] - ev->at[i] - 1;
	return ev->text + ev->at[i];
}

static void
events_make(events *ev, uint64_t n)
{
	size_t cap = (size_t)n * 400, used = 0;

	ev->text = malloc(cap);
	ev->at = malloc(sizeof *ev->at * (size_t)(n + 1));
	ev->n = n;
	if (ev->text == NULL || ev->at == NULL)
		bench_die("out of memory%s", "");
	for (uint64_t i = 0; i < n; i++) {
		ev->at[i] = used;
		used += (size_t)card_event(ev->text + used, cap - used, i + 1);
		ev->text[used++] = '\n';
	}
	ev->at[n] = used;
}

static void
on_log(void *ud, int level, const char *msg)
{
	(void)ud;
	if (level <= TIDE_LOG_WARN)
		fprintf(stderr, "embedbench: tide: %s\n", msg);
}

static tide_engine *
engine_new(const char *data, const char *durability)
{
	tide_config *cfg;
	tide_engine *e;
	int rc;

	if ((rc = tide_config_new(&cfg)) != TIDE_OK)
		fail("config", rc);
	/* no nanomsg endpoints: everything comes in through the C API */
	if ((rc = tide_config_set(cfg, "data", data)) != TIDE_OK ||
	    (rc = tide_config_set(cfg, "durability", durability)) != TIDE_OK ||
	    (rc = tide_config_set(cfg, "pull", "")) != TIDE_OK ||
	    (rc = tide_config_set(cfg, "rep", "")) != TIDE_OK ||
	    (rc = tide_config_set(cfg, "pub", "")) != TIDE_OK)
		fail("config", rc);
	tide_config_set_log(cfg, on_log, NULL);
	if ((rc = tide_engine_new(&e, cfg)) != TIDE_OK)
		fail("engine", rc);
	tide_config_destroy(cfg);
	return e;
}

/* ------------------------------------------------------------------------
 * Publishing
 * ------------------------------------------------------------------------ */

typedef struct run {
	tide_engine *e;
	events ev;
	uint64_t next;     /* loop: the first event not yet published */
	uint64_t done;     /* completions so far (loop thread only) */
	uint64_t consumed; /* consumer calls so far (loop thread only) */
	uint64_t failed;   /* completions with an error, or duplicates */
	int consumer;      /* a consumer runs: the clock waits for it too */
	uint64_t batch;    /* loop: events per text (1, or 1000 to write the log) */
	uint64_t inflight; /* loop: texts in flight */
	double t0, cpu0, t1, cpu1;
	int finished;
} run;

/* Stop the clock (and the engine) once every completion has arrived and
 * the consumer, if any, has seen every event. */
static void
finish(run *r)
{
	if (r->finished || r->done < r->ev.n || (r->consumer && r->consumed < r->ev.n))
		return;
	r->finished = 1;
	r->t1 = bench_now();
	r->cpu1 = cpu_now();
	tide_engine_stop(r->e);
}

static void
on_finish(evutil_socket_t fd, short what, void *ud)
{
	(void)fd;
	(void)what;
	finish(ud);
}

static void
count_result(run *r, const tide_result *res)
{
	if ((res->code != TIDE_OK || res->duplicate) && r->failed++ == 0)
		fprintf(stderr, "embedbench: event refused: %s (%s)\n", tide_strerror(res->code),
			res->error ? res->error : "a duplicate");
	r->done++;
}

static void publish_next(run *r);

static void
on_result(void *ud, const tide_result *res)
{
	run *r = ud;

	count_result(r, res);
	/* a text's results come in order, so its last one frees its slot */
	if (r->done % r->batch == 0 && r->next < r->ev.n)
		publish_next(r);
	finish(r);
}

static void
on_result_mt(void *ud, const tide_result *res)
{
	run *r = ud;

	count_result(r, res);
	finish(r);
}

/* The next text of r->batch events through tide_publish() (loop thread). */
static void
publish_next(run *r)
{
	uint64_t i = r->next, end = i + r->batch;
	const char *text;
	size_t len;
	int rc;

	if (end > r->ev.n)
		end = r->ev.n;
	r->next = end;
	text = events_text(&r->ev, i, end, &len);
	if ((rc = tide_publish(r->e, text, len, on_result, r)) != TIDE_OK)
		fail("tide_publish", rc);
}

static void
on_start(evutil_socket_t fd, short what, void *ud)
{
	run *r = ud;

	(void)fd;
	(void)what;
	r->t0 = bench_now();
	r->cpu0 = cpu_now();
	for (uint64_t k = 0; k < r->inflight && r->next < r->ev.n; k++)
		publish_next(r);
}

/* The C consumer: one field read in place, as an embedder's handler would. */
static int
on_event(void *ud, const tide_event *ev)
{
	static const struct timeval now = { 0, 0 };
	run *r = ud;
	tide_value v;

	if (tide_event_value(ev, "data.merchant.country", &v) != TIDE_OK || v.type != TIDE_STRING ||
	    v.len != 2)
		return TIDE_EINVAL;
	r->consumed++;
	/* Normally the consumer runs in the turn, before the commit and so
	 * before the turn's completions.  Should it be behind, the clock stops
	 * when it catches up, from the loop (not from inside the consumer). */
	if (r->consumed == r->ev.n && r->done >= r->ev.n)
		event_base_once(tide_engine_base(r->e), -1, EV_TIMEOUT, on_finish, r, &now);
	return TIDE_OK;
}

static void
add_consumer(run *r)
{
	tide_consumer_opts opts = TIDE_CONSUMER_OPTS_INIT;
	int rc;

	opts.from = TIDE_FROM_BEGINNING;
	opts.retries = 0;
	if ((rc = tide_consumer_add(r->e, "bench", "card.tx", &opts, on_event, r)) != TIDE_OK)
		fail("tide_consumer_add", rc);
}

/* tide_publish() on the loop thread, which is this one. */
static void
run_loop(run *r)
{
	static const struct timeval now = { 0, 0 };
	int rc;

	if ((rc = tide_engine_open(r->e, NULL)) != TIDE_OK)
		fail("tide_engine_open", rc);
	if (event_base_once(tide_engine_base(r->e), -1, EV_TIMEOUT, on_start, r, &now) != 0)
		bench_die("event_base_once failed%s", "");
	if ((rc = tide_engine_run(r->e)) != TIDE_OK)
		fail("tide_engine_run", rc);
}

/* ---- tide_publish_mt() from producer threads ---- */

typedef struct host {
	run *r;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int opened; /* 0: not yet; 1: open; -1: failed */
} host;

/* The engine's thread: opens the engine, says so, runs its loop. */
static void *
engine_main(void *ud)
{
	host *h = ud;
	int rc = tide_engine_open(h->r->e, NULL);

	pthread_mutex_lock(&h->mu);
	h->opened = rc == TIDE_OK ? 1 : -1;
	pthread_cond_signal(&h->cv);
	pthread_mutex_unlock(&h->mu);
	if (rc != TIDE_OK)
		fail("tide_engine_open", rc);
	if ((rc = tide_engine_run(h->r->e)) != TIDE_OK)
		fail("tide_engine_run", rc);
	return NULL;
}

typedef struct producer {
	run *r;
	pthread_t th;
	pthread_barrier_t *gate;
	uint64_t first, end; /* events first .. end - 1 */
	uint64_t retries;    /* TIDE_EFULL answers */
} producer;

static void *
producer_main(void *ud)
{
	static const struct timespec pause = { 0, 50000 };
	producer *p = ud;
	int rc;

	pthread_barrier_wait(p->gate);
	for (uint64_t i = p->first; i < p->end; i++) {
		size_t len;
		const char *text = events_text(&p->r->ev, i, i + 1, &len);

		while ((rc = tide_publish_mt(p->r->e, text, len, on_result_mt, p->r)) ==
		       TIDE_EFULL) {
			p->retries++;
			nanosleep(&pause, NULL);
		}
		if (rc != TIDE_OK)
			fail("tide_publish_mt", rc);
	}
	return NULL;
}

static uint64_t
run_mt(run *r, int threads)
{
	host h = { .r = r, .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };
	producer *p = calloc((size_t)threads, sizeof *p);
	pthread_barrier_t gate;
	pthread_t engine;
	uint64_t retries = 0;

	if (p == NULL)
		bench_die("out of memory%s", "");
	pthread_barrier_init(&gate, NULL, (unsigned)threads + 1);
	if (pthread_create(&engine, NULL, engine_main, &h) != 0)
		bench_die("cannot start the engine's thread%s", "");
	pthread_mutex_lock(&h.mu);
	while (h.opened == 0)
		pthread_cond_wait(&h.cv, &h.mu);
	pthread_mutex_unlock(&h.mu);
	for (int k = 0; k < threads; k++) {
		p[k].r = r;
		p[k].gate = &gate;
		p[k].first = r->ev.n * (uint64_t)k / (uint64_t)threads;
		p[k].end = r->ev.n * (uint64_t)(k + 1) / (uint64_t)threads;
		if (pthread_create(&p[k].th, NULL, producer_main, &p[k]) != 0)
			bench_die("cannot start a producer%s", "");
	}
	r->t0 = bench_now();
	r->cpu0 = cpu_now();
	pthread_barrier_wait(&gate);
	for (int k = 0; k < threads; k++) {
		pthread_join(p[k].th, NULL);
		retries += p[k].retries;
	}
	pthread_join(engine, NULL);
	pthread_barrier_destroy(&gate);
	free(p);
	return retries;
}

typedef struct checkpoint {
	const char *name;
	uint64_t seq;
} checkpoint;

static void
on_checkpoint(void *ud, const char *name, uint64_t seq)
{
	checkpoint *c = ud;

	if (strcmp(name, c->name) == 0)
		c->seq = seq;
}

/* What the log holds afterwards: its event count, and the consumer's
 * checkpoint. */
static void
check_log(const char *data, uint64_t n, int consumer)
{
	checkpoint c = { "bench", 0 };
	tide_log_stat st;
	tide_log *log;
	int rc;

	if ((rc = tide_log_open(&log, data)) != TIDE_OK)
		fail("tide_log_open", rc);
	if ((rc = tide_log_stat_get(log, &st)) != TIDE_OK)
		fail("tide_log_stat_get", rc);
	if (consumer && (rc = tide_log_consumers(log, on_checkpoint, &c)) != TIDE_OK)
		fail("tide_log_consumers", rc);
	tide_log_close(log);
	if (st.events != n) {
		fprintf(stderr, "embedbench: the log holds %llu events, not %llu\n",
			(unsigned long long)st.events, (unsigned long long)n);
		exit(1);
	}
	if (consumer && c.seq != n) {
		fprintf(stderr, "embedbench: the consumer's checkpoint is %llu, not %llu\n",
			(unsigned long long)c.seq, (unsigned long long)n);
		exit(1);
	}
}

static int
cmd_publish(const char *data, uint64_t n, const char *durability, const char *mode, int threads,
	    uint64_t inflight, int consumer, int writing)
{
	run r = { .consumer = consumer, .batch = 1, .inflight = inflight };
	uint64_t retries = 0;
	double t, cpu;

	events_make(&r.ev, n);
	if (writing)
		r.batch = 1000;
	r.e = engine_new(data, durability);
	if (consumer)
		add_consumer(&r);
	if (strcmp(mode, "loop") == 0)
		run_loop(&r);
	else
		retries = run_mt(&r, threads);
	tide_engine_destroy(r.e);
	if (!r.finished) {
		fprintf(stderr, "embedbench: the engine stopped after %llu of %llu completions\n",
			(unsigned long long)r.done, (unsigned long long)n);
		return 1;
	}
	if (r.failed > 0) {
		fprintf(stderr, "embedbench: %llu events were refused\n",
			(unsigned long long)r.failed);
		return 1;
	}
	check_log(data, n, consumer);
	t = r.t1 - r.t0;
	cpu = r.cpu1 - r.cpu0;
	printf("events=%llu mode=%s threads=%d durability=%s consumer=%d", (unsigned long long)n,
	       mode, strcmp(mode, "loop") == 0 ? 1 : threads, durability, consumer);
	if (strcmp(mode, "loop") == 0)
		printf(" inflight=%llu batch=%llu", (unsigned long long)inflight,
		       (unsigned long long)r.batch);
	else
		printf(" efull_retries=%llu", (unsigned long long)retries);
	printf(" avg_event_bytes=%.0f elapsed_s=%.3f rate=%.0f cpu_s=%.2f "
	       "proc_cpu_us_per_event=%.2f\n",
	       (double)(r.ev.at[n] - n) / (double)n, t, (double)n / t, cpu, cpu * 1e6 / (double)n);
	free(r.ev.text);
	free(r.ev.at);
	return 0;
}

/* ------------------------------------------------------------------------
 * Reading
 * ------------------------------------------------------------------------ */

enum { WALK, VALUE, JSON, YAJL, DATA, PASSES };
static const char *const pass_name[PASSES] = { "walk", "value", "json", "yajl", "data" };

typedef struct tally {
	uint64_t n, fr;
	double amount;
	size_t bytes; /* of the JSON text, where there is one */
} tally;

/* yajl_tree_parse() wants a NUL-terminated text; tide_event_json() and
 * tide_event_data() give a length (the data's is NUL-terminated, the
 * event's is not promised to be), so the event's text is copied. */
typedef struct textbuf {
	char *p;
	size_t cap;
} textbuf;

static const char *
terminated(textbuf *b, const char *s, size_t len)
{
	if (len + 1 > b->cap) {
		b->cap = (len + 1) * 2;
		if ((b->p = realloc(b->p, b->cap)) == NULL)
			bench_die("out of memory%s", "");
	}
	memcpy(b->p, s, len);
	b->p[len] = '\0';
	return b->p;
}

static void
from_tree(tally *t, const char *text, const char **country, const char **amount)
{
	char err[256];
	yajl_val root = yajl_tree_parse(text, err, sizeof err), c, a;

	if (root == NULL)
		bench_die("yajl: %s", err);
	c = yajl_tree_get(root, country, yajl_t_string);
	a = yajl_tree_get(root, amount, yajl_t_number);
	if (!YAJL_IS_STRING(c) || !YAJL_IS_DOUBLE(a))
		bench_die("yajl: a field is missing in %s", text);
	t->fr += strcmp(c->u.string, "FR") == 0; /* c is a string: checked above */
	t->amount += YAJL_GET_DOUBLE(a);
	yajl_tree_free(root);
}

/* One walk of the whole log doing @p kind per event; returns seconds. */
static double
walk(tide_log *log, int kind, tally *t, textbuf *b)
{
	static const char *country[] = { "data", "merchant", "country", NULL };
	static const char *amount[] = { "data", "amount", NULL };
	static const char *dcountry[] = { "merchant", "country", NULL };
	static const char *damount[] = { "amount", NULL };
	tide_filter f = { 0 };
	const tide_event *ev;
	tide_cursor *cur;
	const char *json;
	tide_value v;
	size_t len;
	double t0 = bench_now();
	int rc;

	memset(t, 0, sizeof *t);
	if ((rc = tide_cursor_open(log, &f, &cur)) != TIDE_OK)
		fail("tide_cursor_open", rc);
	while ((rc = tide_cursor_next(cur, &ev)) == TIDE_OK) {
		t->n++;
		switch (kind) {
		case WALK: break;
		case VALUE:
			if ((rc = tide_event_value(ev, "data.merchant.country", &v)) != TIDE_OK)
				fail("tide_event_value", rc);
			t->fr += v.type == TIDE_STRING && v.len == 2 && memcmp(v.s, "FR", 2) == 0;
			if ((rc = tide_event_value(ev, "data.amount", &v)) != TIDE_OK)
				fail("tide_event_value", rc);
			t->amount += v.d;
			break;
		case JSON:
			if ((rc = tide_event_json(ev, &json, &len)) != TIDE_OK)
				fail("tide_event_json", rc);
			t->bytes += len;
			break;
		case YAJL:
			if ((rc = tide_event_json(ev, &json, &len)) != TIDE_OK)
				fail("tide_event_json", rc);
			t->bytes += len;
			from_tree(t, terminated(b, json, len), country, amount);
			break;
		case DATA:
			if ((rc = tide_event_data(ev, &json, &len)) != TIDE_OK)
				fail("tide_event_data", rc);
			t->bytes += len;
			from_tree(t, json, dcountry, damount);
			break;
		}
	}
	if (rc != TIDE_ENOTFOUND)
		fail("tide_cursor_next", rc);
	tide_cursor_close(cur);
	return bench_now() - t0;
}

static int
same(const tally *a, const tally *b)
{
	double d = a->amount - b->amount;

	return a->n == b->n && a->fr == b->fr && d < 1e-6 * a->amount && -d < 1e-6 * a->amount;
}

static int
cmd_read(const char *data)
{
	double secs[PASSES], cpu0, cpu;
	tally t[PASSES], warm;
	textbuf b = { NULL, 0 };
	tide_log *log;
	int rc;

	if ((rc = tide_log_open(&log, data)) != TIDE_OK)
		fail("tide_log_open", rc);
	walk(log, WALK, &warm, &b); /* the pages into the cache, not timed */
	if (warm.n == 0)
		bench_die("the log at %s is empty", data);
	cpu0 = cpu_now();
	for (int k = 0; k < PASSES; k++) {
		secs[k] = walk(log, k, &t[k], &b);
		if (t[k].n != warm.n)
			bench_die("the %s walk saw a different log", pass_name[k]);
	}
	cpu = cpu_now() - cpu0;
	if (!same(&t[VALUE], &t[YAJL]) || !same(&t[VALUE], &t[DATA]) || t[VALUE].fr == 0) {
		fprintf(stderr,
			"embedbench: the walks disagree: value %llu FR, %.2f; yajl %llu FR, "
			"%.2f; data %llu FR, %.2f\n",
			(unsigned long long)t[VALUE].fr, t[VALUE].amount,
			(unsigned long long)t[YAJL].fr, t[YAJL].amount,
			(unsigned long long)t[DATA].fr, t[DATA].amount);
		return 1;
	}
	printf("events=%llu", (unsigned long long)warm.n);
	for (int k = 0; k < PASSES; k++)
		printf(" %s_ns=%.1f", pass_name[k], secs[k] * 1e9 / (double)warm.n);
	printf(" value_extra_ns=%.1f yajl_extra_ns=%.1f ratio=%.2f ratio_extra=%.2f "
	       "avg_json_bytes=%.0f avg_data_bytes=%.0f fr=%llu amount=%.2f cpu_s=%.2f "
	       "wall_s=%.2f\n",
	       (secs[VALUE] - secs[WALK]) * 1e9 / (double)warm.n,
	       (secs[YAJL] - secs[WALK]) * 1e9 / (double)warm.n, secs[YAJL] / secs[VALUE],
	       (secs[YAJL] - secs[WALK]) / (secs[VALUE] - secs[WALK]),
	       (double)t[JSON].bytes / (double)warm.n, (double)t[DATA].bytes / (double)warm.n,
	       (unsigned long long)t[VALUE].fr, t[VALUE].amount, cpu,
	       secs[WALK] + secs[VALUE] + secs[JSON] + secs[YAJL] + secs[DATA]);
	tide_log_close(log);
	free(b.p);
	return 0;
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = { { "data", required_argument, NULL, 'd' },
					      { "events", required_argument, NULL, 'n' },
					      { "durability", required_argument, NULL, 'D' },
					      { "mode", required_argument, NULL, 'm' },
					      { "threads", required_argument, NULL, 't' },
					      { "inflight", required_argument, NULL, 'i' },
					      { "consumer", no_argument, NULL, 'c' },
					      { NULL, 0, NULL, 0 } };
	const char *cmd, *data = NULL, *durability = "relaxed", *mode = "loop";
	unsigned long long n = 1000000, inflight = 1000;
	int threads = 1, consumer = 0, c;

	if (argc < 2)
		bench_die("usage: embedbench write|read|publish [options]%s", "");
	cmd = argv[1];
	optind = 2;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'd': data = optarg; break;
		case 'n': n = strtoull(optarg, NULL, 10); break;
		case 'D': durability = optarg; break;
		case 'm': mode = optarg; break;
		case 't': threads = atoi(optarg); break;
		case 'i': inflight = strtoull(optarg, NULL, 10); break;
		case 'c': consumer = 1; break;
		default: bench_die("bad option%s", "");
		}
	}
	if (data == NULL)
		bench_die("--data is required%s", "");
	if (n < 1 || threads < 1 || inflight < 1)
		bench_die("--events, --threads and --inflight must be positive%s", "");
	if (strcmp(mode, "loop") != 0 && strcmp(mode, "mt") != 0)
		bench_die("unknown mode '%s'", mode);
	if (strcmp(cmd, "write") == 0)
		return cmd_publish(data, n, "relaxed", "loop", 1, 4, 0, 1);
	if (strcmp(cmd, "read") == 0)
		return cmd_read(data);
	if (strcmp(cmd, "publish") == 0)
		return cmd_publish(data, n, durability, mode, threads, inflight, consumer, 0);
	bench_die("unknown command '%s'", cmd);
	return 2;
}
