/*
 * capi_test.c - the C API on par with the Lua one, as an embedder uses it
 * (only <tide.h> and libevent): consumer options, emits and once keys from
 * a C consumer, the stop notice on a borrowed base and on the engine's own,
 * version macros, and where the detail of an error is found.
 */
#include <event2/event.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <tide.h>

#define CHECK(cond) \
	do { \
		if (!(cond)) { \
			fprintf(stderr, "capi_test: %s:%d: %s failed (last error: %s)\n", \
				__FILE__, __LINE__, #cond, tide_errmsg()); \
			exit(1); \
		} \
	} while (0)

#if TIDE_VERSION_NUM < 100 || !defined(TIDE_VERSION_MAJOR)
#error "the version macros are comparable numbers"
#endif

static char root[64];

static const char *
dir_of(const char *name)
{
	static char buf[8][200];
	static int at;

	at = (at + 1) % 8;
	snprintf(buf[at], sizeof buf[at], "%s/%s", root, name);
	return buf[at];
}

static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static tide_engine *
engine_at(const char *dir)
{
	tide_config *cfg;
	tide_engine *e;

	CHECK(tide_config_new(&cfg) == TIDE_OK);
	CHECK(tide_config_set(cfg, "data", dir) == TIDE_OK);
	CHECK(tide_config_set(cfg, "durability", "relaxed") == TIDE_OK);
	CHECK(tide_engine_new(&e, cfg) == TIDE_OK);
	tide_config_destroy(cfg);
	return e;
}

/* Run @p base until @p done says so, at most @p ms. */
static void
loop_until(struct event_base *base, int (*done)(void *), void *ud, int ms)
{
	int64_t end = now_ms() + ms;

	while (!done(ud) && now_ms() < end) {
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		usleep(1000);
	}
}

static void
publish(tide_engine *e, const char *json)
{
	CHECK(tide_publish(e, json, strlen(json), NULL, NULL) == TIDE_OK);
}

static int
count_type(const char *dir, const char *type)
{
	tide_filter f = { 0, 0, NULL, type };
	tide_log *log;
	tide_cursor *cur;
	const tide_event *ev;
	int n = 0;

	CHECK(tide_log_open(&log, dir) == TIDE_OK);
	CHECK(tide_cursor_open(log, &f, &cur) == TIDE_OK);
	while (tide_cursor_next(cur, &ev) == TIDE_OK)
		n++;
	tide_cursor_close(cur);
	tide_log_close(log);
	return n;
}

/* ------------------------------------------------------------------------
 * Versions and errors
 * ------------------------------------------------------------------------ */

static void
versions(void)
{
	char expect[32];

	CHECK(TIDE_VERSION_NUM ==
	      TIDE_VERSION_MAJOR * 10000 + TIDE_VERSION_MINOR * 100 + TIDE_VERSION_PATCH);
	CHECK(tide_version_num() == TIDE_VERSION_NUM);
	snprintf(expect, sizeof expect, "%d.%d.%d", TIDE_VERSION_MAJOR, TIDE_VERSION_MINOR,
		 TIDE_VERSION_PATCH);
	CHECK(strcmp(expect, TIDE_VERSION_STRING) == 0);
	CHECK(strcmp(tide_version(), TIDE_VERSION_STRING) == 0);
}

/* Every failure leaves its detail in one place: tide_errmsg(). */
static void
errors(void)
{
	tide_config *cfg;
	tide_log *log = (tide_log *)1;
	tide_cursor *cur;
	const tide_event *ev;
	tide_engine *e;

	CHECK(tide_log_open(&log, dir_of("nothing-here")) == TIDE_ENOTFOUND);
	CHECK(log == NULL);
	CHECK(strstr(tide_errmsg(), "nothing-here") != NULL);
	CHECK(tide_cursor_next(NULL, &ev) == TIDE_EINVAL);
	CHECK(strstr(tide_errmsg(), "tide_cursor_next") != NULL);
	CHECK(tide_config_new(&cfg) == TIDE_OK);
	CHECK(tide_config_set(cfg, "map_size", "lots") == TIDE_ECONFIG);
	CHECK(strstr(tide_errmsg(), "map_size") != NULL);
	CHECK(tide_config_get(cfg, NULL) == NULL);
	CHECK(tide_config_load(cfg, dir_of("missing.lua")) == TIDE_ECONFIG);
	CHECK(strstr(tide_errmsg(), "missing.lua") != NULL);
	tide_config_destroy(cfg);
	CHECK(tide_publish(NULL, "{}", 2, NULL, NULL) == TIDE_EINVAL);
	CHECK(strstr(tide_errmsg(), "tide_publish") != NULL);

	/* an engine: not open yet, then a log to read */
	e = engine_at(dir_of("errors"));
	CHECK(tide_publish(e, "{}", 2, NULL, NULL) == TIDE_ESTATE);
	CHECK(strstr(tide_errmsg(), "not running") != NULL);
	CHECK(tide_engine_run(e) == TIDE_ESTATE);
	CHECK(tide_engine_query(e, "p", NULL, NULL, 0, NULL, NULL) == TIDE_ESTATE);
	CHECK(tide_engine_open(e, NULL) == TIDE_OK);
	CHECK(tide_engine_open(e, NULL) == TIDE_ESTATE);
	CHECK(strstr(tide_errmsg(), "already open") != NULL);
	CHECK(tide_engine_query(e, "p", NULL, NULL, 0, NULL, NULL) == TIDE_ENOTFOUND);
	CHECK(strstr(tide_errmsg(), "no projection named 'p'") != NULL);
	tide_engine_destroy(e);
	CHECK(tide_log_open(&log, dir_of("errors")) == TIDE_OK);
	CHECK(tide_log_query(log, "nope", "k", NULL, 0, NULL, NULL) == TIDE_ENOTFOUND);
	CHECK(strstr(tide_errmsg(), "no projection named 'nope'") != NULL);
	CHECK(tide_cursor_open(log, NULL, &cur) == TIDE_OK);
	CHECK(tide_cursor_next(cur, &ev) == TIDE_ENOTFOUND); /* the end of an empty log */
	CHECK(strstr(tide_errmsg(), "no more events") != NULL);
	tide_cursor_close(cur);
	CHECK(tide_event_json(NULL, NULL, NULL) == TIDE_EINVAL);
	CHECK(strstr(tide_errmsg(), "tide_event_json") != NULL);
	CHECK(tide_log_dead_letters(log, NULL, 0, NULL, NULL) == TIDE_EINVAL);
	CHECK(strstr(tide_errmsg(), "tide_log_dead_letters") != NULL);
	CHECK(tide_log_stat_get(log, NULL) == TIDE_EINVAL);
	CHECK(strstr(tide_errmsg(), "tide_log_stat_get") != NULL);
	tide_log_close(log);
}

/* ------------------------------------------------------------------------
 * Consumer options
 * ------------------------------------------------------------------------ */

typedef struct trace {
	char seen[64]; /* ids handled, in order, a letter each */
	size_t n;
	int fail_a;   /* event "a" fails this many times */
	int failures; /* every event fails */
} trace;

static int
traced(void *ud, const tide_event *ev)
{
	trace *t = ud;
	const char *id = tide_event_attr(ev, "id", NULL);

	if (t->n + 1 < sizeof t->seen)
		t->seen[t->n++] = id[0];
	if (t->failures)
		return TIDE_EIO;
	if (id[0] == 'a' && t->fail_a > 0) {
		t->fail_a--;
		return TIDE_EIO;
	}
	return TIDE_OK;
}

static int
seen_3(void *ud)
{
	return ((trace *)ud)->n >= 3;
}

static const char *ab = "{\"specversion\":\"1.0\",\"id\":\"a\",\"source\":\"/t\",\"type\":\"t\","
			"\"subject\":\"s\"}\n"
			"{\"specversion\":\"1.0\",\"id\":\"b\",\"source\":\"/t\",\"type\":\"t\","
			"\"subject\":\"s\"}";

/* ordered = 1 keeps a subject's later event behind its retry; 0 lets it
 * pass; retries and backoff are the consumer's own. */
static void
ordering(int ordered, const char *expect)
{
	struct event_base *base = event_base_new();
	tide_consumer_opts o = TIDE_CONSUMER_OPTS_INIT;
	trace t = { "", 0, 1, 0 };
	tide_engine *e = engine_at(dir_of(ordered ? "ordered" : "unordered"));
	int64_t start;

	o.from = TIDE_FROM_BEGINNING;
	o.backoff_ms = 150;
	o.ordered = ordered;
	CHECK(tide_consumer_add(e, "c", "t", &o, traced, &t) == TIDE_OK);
	CHECK(tide_engine_open(e, base) == TIDE_OK);
	publish(e, ab);
	start = now_ms();
	loop_until(base, seen_3, &t, 5000);
	CHECK(t.n == 3);
	t.seen[t.n] = '\0';
	CHECK(strcmp(t.seen, expect) == 0);
	CHECK(now_ms() - start >= 140); /* the retry waited its backoff */
	tide_engine_destroy(e);
	event_base_free(base);
}

typedef struct dead {
	tide_log *log;
	uint32_t attempts;
	int n;
} dead;

static int
on_dead(void *ud, const tide_dead_letter *dl)
{
	dead *d = ud;
	tide_log_stat st;
	const char *json;

	d->attempts = dl->attempts;
	d->n++;
	/* other readers of the same handle, from inside the listing */
	CHECK(tide_log_stat_get(d->log, &st) == TIDE_OK && st.events == 1);
	CHECK(tide_event_json(dl->event, &json, NULL) == TIDE_OK);
	CHECK(strstr(json, "\"id\":\"x\"") != NULL);
	CHECK(strcmp(dl->consumer, "c") == 0 && dl->seq == 1);
	return 0;
}

static int
seen_2(void *ud)
{
	return ((trace *)ud)->n >= 2;
}

static void
retries(void)
{
	struct event_base *base = event_base_new();
	tide_consumer_opts o = TIDE_CONSUMER_OPTS_INIT;
	trace t = { "", 0, 0, 1 };
	const char *dir = dir_of("retries");
	tide_engine *e = engine_at(dir);
	dead d = { NULL, 0, 0 };
	tide_log *log;

	o.from = TIDE_FROM_BEGINNING;
	o.retries = 1001;
	CHECK(tide_consumer_add(e, "c", "t", &o, traced, &t) == TIDE_EINVAL);
	CHECK(strstr(tide_errmsg(), "retries") != NULL);
	o.retries = 1;
	o.backoff_ms = 10;
	o.backoff_max_ms = 10;
	o.from = 7;
	CHECK(tide_consumer_add(e, "c", "t", &o, traced, &t) == TIDE_EINVAL);
	o.from = TIDE_FROM_BEGINNING;
	CHECK(tide_consumer_add(e, "c", "t", &o, traced, &t) == TIDE_OK);
	CHECK(tide_engine_open(e, base) == TIDE_OK);
	publish(e, "{\"specversion\":\"1.0\",\"id\":\"x\",\"source\":\"/t\",\"type\":\"t\"}");
	loop_until(base, seen_2, &t, 3000);
	/* one more turn to record the dead letter */
	for (int i = 0; i < 50; i++) {
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		usleep(2000);
	}
	CHECK(t.n == 2); /* the first try and one retry, not the default three */
	tide_engine_destroy(e);
	event_base_free(base);
	CHECK(tide_log_open(&log, dir) == TIDE_OK);
	d.log = log;
	CHECK(tide_log_dead_letters(log, "c", 0, on_dead, &d) == TIDE_OK);
	CHECK(d.n == 1 && d.attempts == 2);
	tide_log_close(log);
}

/* A consumer without a checkpoint starts at the end unless told. */
static void
from_where(void)
{
	struct event_base *base = event_base_new();
	const char *dir = dir_of("from");
	tide_consumer_opts o = TIDE_CONSUMER_OPTS_INIT;
	trace late = { "", 0, 0, 0 }, all = { "", 0, 0, 0 };
	tide_engine *e = engine_at(dir);

	CHECK(tide_engine_open(e, base) == TIDE_OK);
	publish(e, ab);
	for (int i = 0; i < 20; i++)
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	tide_engine_destroy(e);

	e = engine_at(dir);
	CHECK(tide_consumer_add(e, "late", "t", NULL, traced, &late) == TIDE_OK);
	o.from = TIDE_FROM_BEGINNING;
	CHECK(tide_consumer_add(e, "all", "t", &o, traced, &all) == TIDE_OK);
	CHECK(tide_engine_open(e, base) == TIDE_OK);
	CHECK(tide_consumer_add(e, "later", "t", NULL, traced, &late) == TIDE_ESTATE);
	publish(e, "{\"specversion\":\"1.0\",\"id\":\"c\",\"source\":\"/t\",\"type\":\"t\"}");
	loop_until(base, seen_3, &all, 3000);
	all.seen[all.n] = late.seen[late.n] = '\0';
	CHECK(strcmp(all.seen, "abc") == 0);
	CHECK(strcmp(late.seen, "c") == 0);
	tide_engine_destroy(e);
	event_base_free(base);
}

/* ------------------------------------------------------------------------
 * Emits and once keys
 * ------------------------------------------------------------------------ */

typedef struct shop {
	int tries;      /* calls of the order handler */
	int fail_first; /* the first call emits, then fails */
	int acks;       /* acks seen by the second consumer */
	int firsts;     /* once keys claimed for the first time */
	int ack_first;  /* the acks consumer's claim of the same key */
	int timed;      /* orders that had an event time */
	int emit_rc_bad, emit_rc_half;
	char cause[64];
	char ack_source[64], ack_id[64];
} shop;

static int
on_order(void *ud, const tide_event *ev)
{
	shop *s = ud;
	const char *ack = "{\"type\":\"order.ack\",\"subject\":\"o1\",\"data\":{\"ok\":true}}";
	const char *half = "{\"type\":\"order.ack\"}\n{\"type\":\"\"}";
	int first = -1;

	s->tries++;
	{
		int64_t ns = 0;
		int rc = tide_event_time(ev, &ns);
		/* o1 carries a time (parsed in C, offset applied), o2 none */
		CHECK(rc == TIDE_OK ? ns == 1796245359000000000 : rc == TIDE_ENOTFOUND);
		s->timed += rc == TIDE_OK;
	}
	CHECK(tide_once(ev, "mail:o1", 7, &first) == TIDE_OK);
	CHECK(first == 0 || first == 1);
	s->firsts += first;
	/* nothing of an invalid text is emitted, whatever came before */
	s->emit_rc_bad = tide_emit(ev, "{\"type\":", 8);
	s->emit_rc_half = tide_emit(ev, half, strlen(half));
	CHECK(tide_emit(ev, ack, strlen(ack)) == TIDE_OK);
	snprintf(s->cause, sizeof s->cause, "%s", tide_event_attr(ev, "id", NULL));
	if (s->fail_first) {
		s->fail_first = 0;
		return TIDE_EIO; /* its emit is not kept */
	}
	return TIDE_OK;
}

static int
on_ack(void *ud, const tide_event *ev)
{
	shop *s = ud;
	int first;

	snprintf(s->ack_source, sizeof s->ack_source, "%s", tide_event_attr(ev, "source", NULL));
	snprintf(s->ack_id, sizeof s->ack_id, "%s", tide_event_attr(ev, "id", NULL));
	CHECK(strcmp(tide_event_attr(ev, "causationid", NULL), s->cause) == 0);
	CHECK(strcmp(tide_event_attr(ev, "correlationid", NULL), s->cause) == 0);
	/* once keys are per consumer */
	CHECK(tide_once(ev, "mail:o1", 7, &first) == TIDE_OK);
	s->ack_first = first;
	s->acks++;
	return TIDE_OK;
}

static int
acked(void *ud)
{
	return ((shop *)ud)->acks >= 1;
}

static tide_engine *
shop_engine(const char *dir, shop *s)
{
	tide_consumer_opts o = TIDE_CONSUMER_OPTS_INIT;
	tide_engine *e = engine_at(dir);

	o.from = TIDE_FROM_BEGINNING;
	o.backoff_ms = 10;
	CHECK(tide_consumer_add(e, "orders", "order.placed", &o, on_order, s) == TIDE_OK);
	CHECK(tide_consumer_add(e, "acks", "order.ack", &o, on_ack, s) == TIDE_OK);
	return e;
}

static void
emits(void)
{
	struct event_base *base = event_base_new();
	const char *dir = dir_of("shop");
	shop s;
	tide_engine *e;
	const tide_event *none = NULL;
	int first;

	memset(&s, 0, sizeof s);
	s.fail_first = 1;
	e = shop_engine(dir, &s);
	CHECK(tide_engine_open(e, base) == TIDE_OK);
	publish(e, "{\"specversion\":\"1.0\",\"id\":\"o1\",\"source\":\"/shop\","
		   "\"type\":\"order.placed\",\"subject\":\"o1\","
		   "\"time\":\"2026-12-02T22:02:39+01:00\"}");
	loop_until(base, acked, &s, 5000);
	CHECK(s.acks == 1);
	CHECK(s.tries == 2); /* failed once, then handled */
	CHECK(s.timed == 2);
	CHECK(s.firsts == 1); /* the claim of the failed try stayed */
	CHECK(s.emit_rc_bad == TIDE_EEVENT && s.emit_rc_half == TIDE_EEVENT);
	CHECK(strcmp(s.ack_source, "/tide/orders") == 0);
	CHECK(strcmp(s.ack_id, "1.1") == 0); /* the failed texts took no number */
	CHECK(s.ack_first == 1);             /* the orders consumer's claim is its own */
	/* outside a handler */
	CHECK(tide_emit(none, "{}", 2) == TIDE_EINVAL);
	tide_engine_destroy(e);
	event_base_free(base);
	CHECK(count_type(dir, "order.ack") == 1);

	/* after a restart: the key is still claimed, the order not handled again */
	base = event_base_new();
	memset(&s, 0, sizeof s);
	e = shop_engine(dir, &s);
	CHECK(tide_engine_open(e, base) == TIDE_OK);
	publish(e, "{\"specversion\":\"1.0\",\"id\":\"o2\",\"source\":\"/shop\","
		   "\"type\":\"order.placed\",\"subject\":\"o1\"}");
	loop_until(base, acked, &s, 5000);
	CHECK(s.tries == 1 && s.firsts == 0 && s.acks == 1 && s.ack_first == 0);
	CHECK(strcmp(s.ack_id, "3.1") == 0);
	CHECK(tide_once(NULL, "k", 1, &first) == TIDE_EINVAL);
	tide_engine_destroy(e);
	event_base_free(base);
	CHECK(count_type(dir, "order.ack") == 2);
}

/* A turn aborted and run again, because the map had to grow, runs the
 * handler again: a key it claimed the first time is not granted again
 * (its effect has happened), and its emits are stored once. */
typedef struct growth {
	int calls, effects;
	char *big; /* an event of about 700 KB */
} growth;

static int
on_big(void *ud, const tide_event *ev)
{
	growth *g = ud;
	int first;

	g->calls++;
	CHECK(tide_once(ev, "effect", 6, &first) == TIDE_OK);
	g->effects += first;
	for (int k = 0; k < 3; k++)
		CHECK(tide_emit(ev, g->big, strlen(g->big)) == TIDE_OK);
	return TIDE_OK;
}

static int
grown(void *ud)
{
	return ((growth *)ud)->calls >= 2;
}

static void
once_across_growth(void)
{
	struct event_base *base = event_base_new();
	const char *dir = dir_of("growth");
	tide_consumer_opts o = TIDE_CONSUMER_OPTS_INIT;
	growth g = { 0, 0, malloc(720000) };
	tide_config *cfg;
	tide_engine *e;
	size_t n;

	CHECK(g.big != NULL);
	n = (size_t)snprintf(g.big, 200, "{\"type\":\"big\",\"data\":\"");
	memset(g.big + n, 'x', 700000);
	memcpy(g.big + n + 700000, "\"}", 3);
	CHECK(tide_config_new(&cfg) == TIDE_OK);
	CHECK(tide_config_set(cfg, "data", dir) == TIDE_OK);
	CHECK(tide_config_set(cfg, "map_size", "1M") == TIDE_OK);
	CHECK(tide_engine_new(&e, cfg) == TIDE_OK);
	tide_config_destroy(cfg);
	o.from = TIDE_FROM_BEGINNING;
	CHECK(tide_consumer_add(e, "grower", "start", &o, on_big, &g) == TIDE_OK);
	CHECK(tide_engine_open(e, base) == TIDE_OK);
	publish(e, "{\"specversion\":\"1.0\",\"id\":\"g\",\"source\":\"/t\",\"type\":\"start\"}");
	loop_until(base, grown, &g, 10000);
	for (int i = 0; i < 20; i++)
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	CHECK(g.calls >= 2); /* the map grew under the first call's emits */
	CHECK(g.effects == 1);
	tide_engine_destroy(e);
	event_base_free(base);
	CHECK(count_type(dir, "big") == 3);
	free(g.big);
}

/* Texts refused whole give back the memory their events held against
 * memory_limit: a handler that tries and fails six times can still emit. */
typedef struct probe {
	char *text; /* three events of 900 KB and an invalid one */
	int refused, emitted;
} probe;

static int
on_probe(void *ud, const tide_event *ev)
{
	probe *p = ud;
	const char *nl = strchr(p->text, '\n'); /* the first event alone */

	for (int k = 0; k < 6; k++)
		p->refused += tide_emit(ev, p->text, strlen(p->text)) == TIDE_EEVENT;
	p->emitted += tide_emit(ev, p->text, (size_t)(nl - p->text)) == TIDE_OK;
	return TIDE_OK;
}

static int
probed(void *ud)
{
	return ((probe *)ud)->emitted + ((probe *)ud)->refused >= 7;
}

static void
refused_emits_free_memory(void)
{
	struct event_base *base = event_base_new();
	const char *dir = dir_of("probe");
	tide_consumer_opts o = TIDE_CONSUMER_OPTS_INIT;
	probe p = { malloc(3 * 900100 + 64), 0, 0 };
	tide_config *cfg;
	tide_engine *e;
	size_t at = 0;

	CHECK(p.text != NULL);
	for (int k = 0; k < 3; k++) {
		at += (size_t)sprintf(p.text + at, "{\"type\":\"probe\",\"data\":\"");
		memset(p.text + at, 'y', 900000);
		at += 900000;
		at += (size_t)sprintf(p.text + at, "\"}\n");
	}
	sprintf(p.text + at, "{\"type\":\"\"}");
	CHECK(tide_config_new(&cfg) == TIDE_OK);
	CHECK(tide_config_set(cfg, "data", dir) == TIDE_OK);
	CHECK(tide_config_set(cfg, "memory_limit", "16M") == TIDE_OK);
	CHECK(tide_engine_new(&e, cfg) == TIDE_OK);
	tide_config_destroy(cfg);
	o.from = TIDE_FROM_BEGINNING;
	o.retries = 0;
	CHECK(tide_consumer_add(e, "prober", "go", &o, on_probe, &p) == TIDE_OK);
	CHECK(tide_engine_open(e, base) == TIDE_OK);
	publish(e, "{\"specversion\":\"1.0\",\"id\":\"p\",\"source\":\"/t\",\"type\":\"go\"}");
	loop_until(base, probed, &p, 10000);
	CHECK(p.refused == 6 && p.emitted == 1);
	tide_engine_destroy(e);
	event_base_free(base);
	CHECK(count_type(dir, "probe") == 1);
	free(p.text);
}

/* A failed open leaves the process's descriptors alone (descriptor 0 was
 * once closed twice). */
static void
failed_open_keeps_stdin(void)
{
	tide_config *cfg;
	tide_engine *e;

	if (fcntl(0, F_GETFD) == -1)
		CHECK(open("/dev/null", O_RDONLY) == 0);
	CHECK(tide_config_new(&cfg) == TIDE_OK);
	CHECK(tide_config_set(cfg, "data", dir_of("badscript")) == TIDE_OK);
	CHECK(tide_config_add_script(cfg, dir_of("no-such-script.lua")) == TIDE_OK);
	CHECK(tide_engine_new(&e, cfg) == TIDE_OK);
	tide_config_destroy(cfg);
	CHECK(tide_engine_open(e, NULL) != TIDE_OK);
	CHECK(strstr(tide_errmsg(), "no-such-script.lua") != NULL);
	CHECK(tide_engine_open(e, NULL) != TIDE_OK); /* and again */
	tide_engine_destroy(e);
	CHECK(fcntl(0, F_GETFD) != -1);
}

/* ------------------------------------------------------------------------
 * The stop notice
 * ------------------------------------------------------------------------ */

typedef struct stopper {
	struct event_base *base;
	int notices;
	int results;
} stopper;

static void
on_stopped(void *ud, tide_engine *e)
{
	stopper *s = ud;

	s->notices++;
	tide_engine_destroy(e); /* allowed from the notice */
	if (s->base != NULL)
		event_base_loopexit(s->base, NULL);
}

static void
note_only(void *ud, tide_engine *e)
{
	(void)e;
	((stopper *)ud)->notices++;
}

static int
noticed(void *ud)
{
	return ((stopper *)ud)->notices > 0;
}

static void
counted(void *ud, const tide_result *r)
{
	stopper *s = ud;

	CHECK(r->code == TIDE_OK && r->seq > 0);
	s->results++;
}

static void
stop_notice(void)
{
	struct event_base *base = event_base_new();
	const char *dir = dir_of("stop");
	const char *ev = "{\"specversion\":\"1.0\",\"id\":\"s1\",\"source\":\"/t\",\"type\":\"t\"}";
	stopper s = { base, 0, 0 };
	tide_engine *e = engine_at(dir);

	/* on a borrowed base: what was published before the stop is stored
	 * and answered, then the notice comes, once, and may destroy */
	CHECK(tide_engine_on_stop(NULL, on_stopped, &s) == TIDE_EINVAL);
	CHECK(tide_engine_on_stop(e, on_stopped, &s) == TIDE_OK);
	CHECK(tide_engine_open(e, base) == TIDE_OK);
	CHECK(tide_publish(e, ev, strlen(ev), counted, &s) == TIDE_OK);
	tide_engine_stop(e);
	CHECK(event_base_dispatch(base) == 0);
	CHECK(s.notices == 1 && s.results == 1);
	event_base_free(base);
	CHECK(count_type(dir, "t") == 1);

	/* on the engine's own base: tide_engine_run returns after it */
	s.base = NULL;
	s.notices = s.results = 0;
	e = engine_at(dir);
	CHECK(tide_engine_on_stop(e, on_stopped, &s) == TIDE_OK);
	CHECK(tide_engine_open(e, NULL) == TIDE_OK);
	tide_engine_stop(e);
	CHECK(tide_engine_run(e) == TIDE_OK);
	CHECK(s.notices == 1);

	/* after the notice nothing runs: a consumer whose retry falls due is
	 * not called, though the loop goes on */
	{
		struct event_base *b2 = event_base_new();
		tide_consumer_opts o = TIDE_CONSUMER_OPTS_INIT;
		trace t = { "", 0, 0, 1 };
		stopper quiet = { NULL, 0, 0 };
		size_t calls;
		e = engine_at(dir_of("halt"));
		o.from = TIDE_FROM_BEGINNING;
		o.backoff_ms = 20;
		o.backoff_max_ms = 20;
		CHECK(tide_consumer_add(e, "failing", "t", &o, traced, &t) == TIDE_OK);
		CHECK(tide_engine_on_stop(e, note_only, &quiet) == TIDE_OK);
		CHECK(tide_engine_open(e, b2) == TIDE_OK);
		publish(e, ev);
		loop_until(b2, seen_2, &t, 3000);
		tide_engine_stop(e);
		loop_until(b2, noticed, &quiet, 3000);
		CHECK(quiet.notices == 1);
		calls = t.n;
		for (int64_t end = now_ms() + 300; now_ms() < end;) {
			event_base_loop(b2, EVLOOP_ONCE | EVLOOP_NONBLOCK);
			usleep(5000);
		}
		CHECK(t.n == calls);
		tide_engine_destroy(e);
		event_base_free(b2);
	}

	/* destroyed without a stop: no notice */
	s.notices = 0;
	e = engine_at(dir);
	CHECK(tide_engine_on_stop(e, on_stopped, &s) == TIDE_OK);
	CHECK(tide_engine_open(e, NULL) == TIDE_OK);
	tide_engine_destroy(e);
	CHECK(s.notices == 0);
}

/* ------------------------------------------------------------------------
 * Two engines, each chaining publishes from its completion callbacks
 * ------------------------------------------------------------------------ */

typedef struct chain {
	tide_engine *e;
	const char *name;
	int next;  /* the next event to publish */
	int acked; /* results received */
	uint64_t last_seq;
} chain;

#define CHAIN 20

static void
chained(void *ud, const tide_result *r)
{
	chain *c = ud;
	char ev[160];

	CHECK(r->code == TIDE_OK && !r->duplicate);
	CHECK(r->seq == c->last_seq + 1); /* stored, in order, one per turn */
	c->last_seq = r->seq;
	c->acked++;
	if (c->next < CHAIN) {
		snprintf(ev, sizeof ev,
			 "{\"specversion\":\"1.0\",\"id\":\"%s-%d\",\"source\":\"/chain\","
			 "\"type\":\"link\"}",
			 c->name, c->next++);
		CHECK(tide_publish(c->e, ev, strlen(ev), chained, c) == TIDE_OK);
	}
}

static int
chains_done(void *ud)
{
	chain *c = ud;

	return c[0].acked == CHAIN && c[1].acked == CHAIN;
}

static void
two_chains(void)
{
	struct event_base *base = event_base_new();
	chain c[2] = { { NULL, "a", 1, 0, 0 }, { NULL, "b", 1, 0, 0 } };
	const char *dirs[2] = { dir_of("chain-a"), dir_of("chain-b") };

	for (int k = 0; k < 2; k++) {
		char ev[160];
		c[k].e = engine_at(dirs[k]);
		CHECK(tide_engine_open(c[k].e, base) == TIDE_OK);
		snprintf(ev, sizeof ev,
			 "{\"specversion\":\"1.0\",\"id\":\"%s-0\",\"source\":\"/chain\","
			 "\"type\":\"link\"}",
			 c[k].name);
		CHECK(tide_publish(c[k].e, ev, strlen(ev), chained, &c[k]) == TIDE_OK);
	}
	loop_until(base, chains_done, c, 10000);
	CHECK(c[0].acked == CHAIN && c[1].acked == CHAIN);
	for (int k = 0; k < 2; k++) {
		tide_engine_destroy(c[k].e);
		CHECK(count_type(dirs[k], "link") == CHAIN);
	}
	event_base_free(base);
}

int
main(void)
{
	char cmd[128];

	snprintf(root, sizeof root, "/tmp/tide-capi-XXXXXX");
	CHECK(mkdtemp(root) != NULL);
	versions();
	errors();
	ordering(1, "aab");
	ordering(0, "aba");
	retries();
	from_where();
	emits();
	once_across_growth();
	refused_emits_free_memory();
	failed_open_keeps_stdin();
	stop_notice();
	two_chains();
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
	CHECK(system(cmd) == 0);
	printf("capi_test: consumer options, emits, once keys, stop notice, errors: ok\n");
	return 0;
}
