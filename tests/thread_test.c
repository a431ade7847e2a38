/*
 * thread_test.c - tide_publish_mt() as a stranger uses it: only <tide.h>,
 * libevent and pthreads, linked against the library.  Worker threads
 * publish while the engine's loop runs on the main thread; the queue's
 * bound, a stop racing with producers and the refusals after it are
 * checked against what the callbacks and the log report.
 *
 * Run it under ThreadSanitizer with ./setup.sh tsan.
 */
#include <event2/event.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <tide.h>

#define CHECK(cond) \
	do { \
		if (!(cond)) { \
			fprintf(stderr, "thread_test: %s:%d: %s failed\n", __FILE__, __LINE__, \
				#cond); \
			exit(1); \
		} \
	} while (0)

#define PRODUCERS 4
#define PER_PRODUCER 5000

/* The thread running the engine's loop: every callback must run there. */
static pthread_t loop_thread;

/* What one published text was told; written by callbacks only. */
typedef struct slot {
	int calls;
	int code;
	int on_loop; /* the callback ran on loop_thread */
	uint64_t seq;
	char error[128];
} slot;

static void
on_result(void *ud, const tide_result *r)
{
	slot *s = ud;

	s->calls++;
	s->code = r->code;
	s->seq = r->seq;
	s->on_loop = pthread_equal(pthread_self(), loop_thread);
	snprintf(s->error, sizeof s->error, "%s", r->error ? r->error : "");
}

static int
event_json(char *out, size_t n, const char *who, int k, size_t pad)
{
	char data[2048];

	CHECK(pad < sizeof data);
	memset(data, 'x', pad);
	data[pad] = '\0';
	return snprintf(out, n,
			"{\"specversion\":\"1.0\",\"id\":\"%s-%d\",\"source\":\"/thread\","
			"\"type\":\"tick\",\"data\":\"%s\"}",
			who, k, data);
}

/* The tests' configuration: data in @p dir, relaxed, no sockets. */
static tide_config *
config_in(const char *dir)
{
	tide_config *cfg;

	CHECK(tide_config_new(&cfg) == TIDE_OK);
	CHECK(tide_config_set(cfg, "data", dir) == TIDE_OK);
	CHECK(tide_config_set(cfg, "durability", "relaxed") == TIDE_OK);
	CHECK(tide_config_set(cfg, "pull", "") == TIDE_OK);
	CHECK(tide_config_set(cfg, "rep", "") == TIDE_OK);
	CHECK(tide_config_set(cfg, "pub", "") == TIDE_OK);
	return cfg;
}

static tide_engine *
engine_in(const char *dir, const char *max_message)
{
	tide_config *cfg = config_in(dir);
	tide_engine *e;

	if (max_message != NULL) {
		CHECK(tide_config_set(cfg, "max_event_size", max_message) == TIDE_OK);
		CHECK(tide_config_set(cfg, "max_message_size", max_message) == TIDE_OK);
	}
	CHECK(tide_engine_new(&e, cfg) == TIDE_OK);
	tide_config_destroy(cfg);
	return e;
}

static uint64_t
events_in(const char *dir)
{
	tide_log *log;
	tide_log_stat st;

	CHECK(tide_log_open(&log, dir) == TIDE_OK);
	CHECK(tide_log_stat_get(log, &st) == TIDE_OK);
	tide_log_close(log);
	return st.events;
}

static int
cmp_seq(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* ------------------------------------------------------------------------
 * Many producers while the loop runs
 * ------------------------------------------------------------------------ */

typedef struct producer {
	pthread_t thread;
	tide_engine *e;
	int id;
	slot *slots; /* PER_PRODUCER, one per text */
	int full;    /* TIDE_EFULL answers, each retried */
} producer;

static void *
produce(void *arg)
{
	producer *p = arg;
	char who[16], json[512];

	snprintf(who, sizeof who, "p%d", p->id);
	for (int k = 0; k < PER_PRODUCER; k++) {
		int len = event_json(json, sizeof json, who, k, 16), rc;
		while ((rc = tide_publish_mt(p->e, json, (size_t)len, on_result, &p->slots[k])) ==
		       TIDE_EFULL) {
			p->full++;
			sched_yield();
		}
		CHECK(rc == TIDE_OK);
	}
	return NULL;
}

/* PRODUCERS threads publishing into @p e, whose loop runs on this one. */
static void
start_producers(tide_engine *e, producer *ps)
{
	loop_thread = pthread_self();
	for (int i = 0; i < PRODUCERS; i++) {
		ps[i].e = e;
		ps[i].id = i;
		ps[i].full = 0;
		CHECK((ps[i].slots = calloc(PER_PRODUCER, sizeof *ps[i].slots)) != NULL);
		CHECK(pthread_create(&ps[i].thread, NULL, produce, &ps[i]) == 0);
	}
}

typedef struct stopper {
	tide_engine *e;
	producer *ps;
} stopper;

/* Stops the engine from a thread of its own once every producer is done:
 * what they queued must still be stored by the stop's last turn. */
static void *
stop_after_producers(void *arg)
{
	stopper *s = arg;

	for (int i = 0; i < PRODUCERS; i++)
		CHECK(pthread_join(s->ps[i].thread, NULL) == 0);
	tide_engine_stop(s->e);
	return NULL;
}

static void
many_producers(const char *dir)
{
	tide_engine *e = engine_in(dir, NULL);
	producer ps[PRODUCERS];
	stopper st = { e, ps };
	pthread_t stop_thread;
	uint64_t *seqs = malloc(sizeof *seqs * PRODUCERS * PER_PRODUCER);
	size_t nseq = 0;
	int full = 0;

	CHECK(seqs != NULL);
	/* not open yet: refused, with a reason for this thread */
	CHECK(tide_publish_mt(e, "{}", 2, NULL, NULL) == TIDE_ESTATE);
	CHECK(strstr(tide_errmsg(), "not open") != NULL);
	CHECK(tide_engine_open(e, NULL) == TIDE_OK);
	start_producers(e, ps);
	CHECK(pthread_create(&stop_thread, NULL, stop_after_producers, &st) == 0);
	CHECK(tide_engine_run(e) == TIDE_OK);
	CHECK(pthread_join(stop_thread, NULL) == 0);

	for (int i = 0; i < PRODUCERS; i++) {
		for (int k = 0; k < PER_PRODUCER; k++) {
			slot *s = &ps[i].slots[k];
			CHECK(s->calls == 1);
			CHECK(s->code == TIDE_OK);
			CHECK(s->on_loop);
			CHECK(s->seq > 0);
			/* one thread's events are stored in the order it queued them */
			CHECK(k == 0 || s->seq > ps[i].slots[k - 1].seq);
			seqs[nseq++] = s->seq;
		}
		full += ps[i].full;
		free(ps[i].slots);
	}
	qsort(seqs, nseq, sizeof *seqs, cmp_seq);
	for (size_t k = 1; k < nseq; k++)
		CHECK(seqs[k] != seqs[k - 1]);
	free(seqs);

	/* stopped: refused at the call, and this thread is told why */
	CHECK(tide_publish_mt(e, "{}", 2, on_result, NULL) == TIDE_ESTATE);
	CHECK(strstr(tide_errmsg(), "stopp") != NULL);
	CHECK(tide_publish_mt(NULL, "{}", 2, NULL, NULL) == TIDE_EINVAL);
	CHECK(tide_publish_mt(e, NULL, 0, NULL, NULL) == TIDE_EINVAL);
	CHECK(tide_errmsg()[0] != '\0');
	tide_engine_destroy(e);

	CHECK(events_in(dir) == PRODUCERS * PER_PRODUCER);
	printf("thread_test: %d threads x %d events, each answered once on the loop thread "
	       "(%d waits for a full queue): ok\n",
	       PRODUCERS, PER_PRODUCER, full);
}

/* ------------------------------------------------------------------------
 * The queue's bound, refusals answered late, a destroy with texts queued
 * ------------------------------------------------------------------------ */

#define BOUND (64 * 1024)

static void
pump(struct event_base *base, const slot *s, int n)
{
	for (int i = 0; i < 1000; i++) {
		int done = 1;
		for (int k = 0; k < n && done; k++)
			done = s[k].calls > 0;
		if (done)
			return;
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	}
}

static void
bounded_queue(const char *dir)
{
	struct event_base *base = event_base_new();
	tide_engine *e = engine_in(dir, "64K");
	slot s[200], junk_slot = { 0 };
	char json[2048];
	size_t queued = 0, len;
	int n = 0, rc;
	uint64_t stored;

	memset(s, 0, sizeof s);
	CHECK(base != NULL);
	CHECK(tide_engine_open(e, base) == TIDE_OK);
	loop_thread = pthread_self();

	/* the loop does not run: the queue fills up to its bound */
	for (;;) {
		len = (size_t)event_json(json, sizeof json, "q", n, 1000);
		rc = tide_publish_mt(e, json, len, on_result, &s[n]);
		if (rc != TIDE_OK)
			break;
		queued += len;
		n++;
		CHECK(n < 200);
	}
	CHECK(rc == TIDE_EFULL);
	CHECK(strstr(tide_errmsg(), "max_message_size") != NULL);
	CHECK(queued <= BOUND && queued + len > BOUND);
	CHECK(s[n].calls == 0);
	/* once the loop has taken them, there is room again */
	pump(base, s, n);
	for (int k = 0; k < n; k++)
		CHECK(s[k].calls == 1 && s[k].code == TIDE_OK && s[k].on_loop);
	CHECK(tide_publish_mt(e, json, len, on_result, &s[n]) == TIDE_OK);
	pump(base, s, n + 1);
	CHECK(s[n].calls == 1 && s[n].code == TIDE_OK);
	n++;

	/* an empty queue takes a text larger than the bound (it could never
	 * be queued otherwise): 100 events of 1 KiB as NDJSON */
	{
		char *nd = malloc(100 * sizeof json);
		size_t off = 0;
		CHECK(nd != NULL);
		for (int k = 0; k < 100; k++) {
			off += (size_t)event_json(nd + off, sizeof json, "big", k, 1000);
			nd[off++] = '\n';
		}
		CHECK(off > BOUND);
		CHECK(tide_publish_mt(e, nd, off, NULL, NULL) == TIDE_OK);
		CHECK(tide_publish_mt(e, json, len, NULL, NULL) == TIDE_EFULL);
		free(nd);
	}

	/* what tide_publish() refuses at the call reaches the callback: a
	 * text of more than 10,000 invalid events, one result */
	{
		size_t jlen = 10001 * 3;
		char *junk = malloc(jlen);
		CHECK(junk != NULL);
		for (size_t k = 0; k < jlen; k += 3)
			memcpy(junk + k, "{}\n", 3);
		/* the loop takes the large text first */
		for (int i = 0; i < 1000 &&
				tide_publish_mt(e, junk, jlen, on_result, &junk_slot) == TIDE_EFULL;
		     i++)
			event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		pump(base, &junk_slot, 1);
		CHECK(junk_slot.calls == 1 && junk_slot.code == TIDE_EEVENT);
		CHECK(strstr(junk_slot.error, "more than 10000") != NULL);
		free(junk);
	}

	/* queued while the loop does not run, then destroyed: the stop's last
	 * turn stores them, and each is answered before destroy returns */
	{
		slot late[5];
		memset(late, 0, sizeof late);
		for (int k = 0; k < 5; k++) {
			len = (size_t)event_json(json, sizeof json, "late", k, 10);
			CHECK(tide_publish_mt(e, json, len, on_result, &late[k]) == TIDE_OK);
		}
		tide_engine_destroy(e);
		for (int k = 0; k < 5; k++)
			CHECK(late[k].calls == 1 && late[k].code == TIDE_OK && late[k].on_loop);
		CHECK(late[4].seq > late[0].seq);
	}
	stored = events_in(dir);
	CHECK(stored == (uint64_t)n + 100 + 5);
	event_base_free(base);
	printf("thread_test: a queue bound of %d bytes, refusals and a destroy with texts "
	       "queued: ok\n",
	       BOUND);
}

/* ------------------------------------------------------------------------
 * A stop racing with producers: every accepted text is answered once,
 * every later one refused at the call
 * ------------------------------------------------------------------------ */

#define RACERS 2

static atomic_int accepted_total;

typedef struct racer {
	pthread_t thread;
	tide_engine *e;
	int id;
	int accepted; /* texts queued: TIDE_OK */
	int refused;  /* TIDE_ESTATE: the last call */
	/* written by the callbacks, on the loop thread */
	int answered, wrong;
	uint64_t last_seq;
} racer;

static void
on_race_result(void *ud, const tide_result *res)
{
	racer *r = ud;

	r->answered++;
	/* stored, on the loop thread, after this racer's previous text */
	if (res->code != TIDE_OK || !pthread_equal(pthread_self(), loop_thread) ||
	    res->seq <= r->last_seq)
		r->wrong++;
	r->last_seq = res->seq;
}

/* Publishes until the engine refuses. */
static void *
race(void *arg)
{
	racer *r = arg;
	char who[16], json[512];
	int rc;

	snprintf(who, sizeof who, "r%d", r->id);
	for (int k = 0;; k++) {
		int len = event_json(json, sizeof json, who, k, 16);
		while ((rc = tide_publish_mt(r->e, json, (size_t)len, on_race_result, r)) ==
		       TIDE_EFULL)
			sched_yield();
		if (rc != TIDE_OK)
			break;
		r->accepted++;
		atomic_fetch_add(&accepted_total, 1);
	}
	CHECK(rc == TIDE_ESTATE);
	CHECK(strstr(tide_errmsg(), "stopp") != NULL);
	r->refused++;
	return NULL;
}

static void *
stop_soon(void *arg)
{
	tide_engine *e = arg;

	while (atomic_load(&accepted_total) < 2000)
		sched_yield();
	tide_engine_stop(e);
	return NULL;
}

static void
stop_during_producers(const char *dir)
{
	tide_engine *e = engine_in(dir, "1M"); /* producers outrun the loop at times */
	racer rs[RACERS];
	pthread_t stop_thread;
	int accepted = 0;

	memset(rs, 0, sizeof rs);
	CHECK(tide_engine_open(e, NULL) == TIDE_OK);
	loop_thread = pthread_self();
	for (int i = 0; i < RACERS; i++) {
		rs[i].e = e;
		rs[i].id = i;
		CHECK(pthread_create(&rs[i].thread, NULL, race, &rs[i]) == 0);
	}
	CHECK(pthread_create(&stop_thread, NULL, stop_soon, e) == 0);
	CHECK(tide_engine_run(e) == TIDE_OK);
	CHECK(pthread_join(stop_thread, NULL) == 0);
	for (int i = 0; i < RACERS; i++) {
		CHECK(pthread_join(rs[i].thread, NULL) == 0);
		CHECK(rs[i].refused == 1);
		CHECK(rs[i].answered == rs[i].accepted);
		CHECK(rs[i].wrong == 0);
		accepted += rs[i].accepted;
	}
	CHECK(accepted >= 2000);
	tide_engine_destroy(e);
	CHECK(events_in(dir) == (uint64_t)accepted);
	printf("thread_test: a stop during %d producers: %d texts accepted, each stored and "
	       "answered once, the rest refused: ok\n",
	       RACERS, accepted);
}

/* ------------------------------------------------------------------------
 * Consumers on a thread of their own while producers publish
 * ------------------------------------------------------------------------ */

static atomic_int away_lines;

/* The log callback: called from the engine's thread and the consumers'. */
static void
count_away(void *ud, int level, const char *msg)
{
	(void)ud;
	(void)level;
	if (strstr(msg, "a thread of their own") != NULL)
		atomic_fetch_add(&away_lines, 1);
}

/* Stops the engine once the producers are done and the consumer has had
 * a moment to catch up. */
static void *
stop_later(void *arg)
{
	stopper *s = arg;

	for (int i = 0; i < PRODUCERS; i++)
		CHECK(pthread_join(s->ps[i].thread, NULL) == 0);
	usleep(500000);
	tide_engine_stop(s->e);
	return NULL;
}

static void
consumers_away(const char *dir)
{
	static const char script[] =
		"local tide = require 'tide'\n"
		"local n = 0\n"
		"tide.on('tick', function(ev)\n"
		"  n = n + 1\n"
		"  if n % 10 == 0 then tide.emit{ type = 'tenth', data = { n = n } } end\n"
		"end, { name = 'count', from = 'beginning' })\n";
	char path[700];
	tide_config *cfg;
	tide_engine *e;
	producer ps[PRODUCERS];
	stopper st;
	pthread_t stop_thread;
	tide_log *log;
	tide_cursor *cur;
	const tide_event *ev;
	tide_filter f = { 0 };
	long want = 10, tenths = 0;
	FILE *fp;

	snprintf(path, sizeof path, "%s.lua", dir);
	CHECK((fp = fopen(path, "w")) != NULL);
	fputs(script, fp);
	fclose(fp);
	cfg = config_in(dir);
	CHECK(tide_config_set(cfg, "consumer_thread", "always") == TIDE_OK);
	CHECK(tide_config_set(cfg, "log_level", "debug") == TIDE_OK);
	tide_config_set_log(cfg, count_away, NULL);
	CHECK(tide_config_add_script(cfg, path) == TIDE_OK);
	CHECK(tide_engine_new(&e, cfg) == TIDE_OK);
	tide_config_destroy(cfg);
	CHECK(tide_engine_open(e, NULL) == TIDE_OK);
	start_producers(e, ps);
	st.e = e;
	st.ps = ps;
	CHECK(pthread_create(&stop_thread, NULL, stop_later, &st) == 0);
	CHECK(tide_engine_run(e) == TIDE_OK);
	CHECK(pthread_join(stop_thread, NULL) == 0);
	for (int i = 0; i < PRODUCERS; i++)
		free(ps[i].slots);
	tide_engine_destroy(e);
	CHECK(atomic_load(&away_lines) > 0);

	/* the emits are in the log once each, in the order they were made */
	CHECK(tide_log_open(&log, dir) == TIDE_OK);
	f.type = "tenth";
	CHECK(tide_cursor_open(log, &f, &cur) == TIDE_OK);
	while (tide_cursor_next(cur, &ev) == TIDE_OK) {
		tide_value v;
		CHECK(tide_event_value(ev, "data.n", &v) == TIDE_OK);
		CHECK((v.type == TIDE_INT || v.type == TIDE_DOUBLE) && v.i == want);
		want += 10;
		tenths++;
	}
	tide_cursor_close(cur);
	tide_log_close(log);
	CHECK(tenths > 0);
	printf("thread_test: a consumer on a thread of its own while %d threads publish: %ld "
	       "emits, in order, once each: ok\n",
	       PRODUCERS, tenths);
}

int
main(void)
{
	char tmpl[] = "/tmp/tide-thread-XXXXXX", a[600], b[600], c[600], d[600], cmd[700];

	alarm(300); /* a deadline: a lost wake-up must fail, not hang */
	CHECK(mkdtemp(tmpl) != NULL);
	snprintf(a, sizeof a, "%s/a", tmpl);
	snprintf(b, sizeof b, "%s/b", tmpl);
	snprintf(c, sizeof c, "%s/c", tmpl);
	many_producers(a);
	bounded_queue(b);
	stop_during_producers(c);
	snprintf(d, sizeof d, "%s/d", tmpl);
	consumers_away(d);
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpl);
	CHECK(system(cmd) == 0);
	return 0;
}
