/*
 * embed_test.c - libtide as a stranger uses it: only <tide.h>, linked
 * against the installed-style library.  Two engines share one process and
 * one caller-owned event_base; one publishes from C, a C consumer reacts,
 * and the log is read back through the public reader.
 */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <tide.h>

#define CHECK(cond) \
	do { \
		if (!(cond)) { \
			fprintf(stderr, "embed_test: %s:%d: %s failed\n", __FILE__, __LINE__, \
				#cond); \
			exit(1); \
		} \
	} while (0)

typedef struct counts {
	int results, stored, handled;
} counts;

/* When set, the consumer tries to reload its engine from inside the turn. */
static tide_engine *reload_me;
static int reload_rc = 1;
/* When set, the consumer tries to publish from inside the turn. */
static tide_engine *publish_me;
static int publish_rc = 1;
/* When set, the next result publishes this event (a chained publish). */
static tide_engine *chain_engine;
static const char *chain_event;
static int chain_rc = 1;
static tide_result chained; /* the chained event's own result */
static int chained_results;

static void
on_chained(void *ud, const tide_result *r)
{
	(void)ud;
	chained = *r;
	chained.error = NULL;
	chained_results++;
}

static void
on_result(void *ud, const tide_result *r)
{
	counts *c = ud;

	c->results++;
	c->stored += r->code == TIDE_OK && !r->duplicate;
	if (chain_event != NULL) {
		const char *json = chain_event;
		chain_event = NULL;
		chain_rc = tide_publish(chain_engine, json, strlen(json), on_chained, NULL);
	}
}

static const tide_consumer_opts th_from_beginning = { TIDE_FROM_BEGINNING, -1, -1, -1, -1 };

static int extensions_seen;

/* Two extension attributes read one after the other: each pointer stays
 * valid as long as the view (the first once read the second's value). */
static void
check_extensions(const tide_event *ev)
{
	size_t tn = 0, rn = 0;
	const char *tenant = tide_event_attr(ev, "tenant", &tn);
	const char *region = tide_event_attr(ev, "region", &rn);

	if (tenant == NULL)
		return;
	CHECK(region != NULL);
	CHECK(strcmp(tenant, "acme") == 0 && tn == 4);
	CHECK(strcmp(region, "eu-west") == 0 && rn == 7);
	CHECK(tide_event_attr(ev, "tier", NULL) == NULL); /* an integer */
	CHECK(strcmp(tide_event_attr(ev, "tenant", NULL), "acme") == 0);
	CHECK(strcmp(tenant, "acme") == 0);
	extensions_seen++;
}

/* The same read the other way round, on a view that has read none yet. */
static void
check_extensions_reversed(const tide_event *ev)
{
	const char *region = tide_event_attr(ev, "region", NULL);
	const char *tier = tide_event_attr(ev, "tier", NULL);
	const char *tenant = tide_event_attr(ev, "tenant", NULL);

	if (region == NULL)
		return;
	CHECK(tier == NULL && tenant != NULL);
	CHECK(strcmp(region, "eu-west") == 0 && strcmp(tenant, "acme") == 0);
	CHECK(strcmp(tide_event_attr(ev, "region", NULL), "eu-west") == 0);
	CHECK(strcmp(tenant, "acme") == 0 && strcmp(region, "eu-west") == 0);
	extensions_seen++;
}

static int
on_event(void *ud, const tide_event *ev)
{
	counts *c = ud;
	size_t n;
	const char *type = tide_event_attr(ev, "type", &n);

	CHECK(type != NULL && strcmp(type, "greeting") == 0 && n == 8);
	CHECK(tide_event_seq(ev) > 0);
	check_extensions(ev);
	if (reload_me != NULL)
		reload_rc = tide_engine_reload(reload_me);
	if (publish_me != NULL)
		publish_rc = tide_publish(publish_me, "{}", 2, NULL, NULL);
	c->handled++;
	return TIDE_OK;
}

static tide_engine *
engine_in(const char *dir, counts *c)
{
	tide_config *cfg;
	tide_engine *e;

	CHECK(tide_config_new(&cfg) == TIDE_OK);
	CHECK(tide_config_set(cfg, "data", dir) == TIDE_OK);
	CHECK(tide_config_set(cfg, "durability", "relaxed") == TIDE_OK);
	CHECK(tide_config_set(cfg, "nonsense", "1") == TIDE_ECONFIG);
	CHECK(strstr(tide_errmsg(), "unknown setting") != NULL);
	CHECK(tide_engine_new(&e, cfg) == TIDE_OK);
	tide_config_destroy(cfg); /* the engine keeps its own copy */
	CHECK(tide_consumer_add(e, "greeter", "greet*", &th_from_beginning, on_event, c) ==
	      TIDE_EINVAL); /* a bad pattern */
	CHECK(tide_consumer_add(e, "greeter", "greeting", &th_from_beginning, on_event, c) ==
	      TIDE_OK);
	return e;
}

int
main(void)
{
	char tmpl[] = "/tmp/tide-embed-XXXXXX", a[600], b[600], cmd[700];
	struct event_base *base = event_base_new();
	counts ca = { 0, 0, 0 }, cb = { 0, 0, 0 };
	tide_engine *ea, *eb;
	const char *ev = "{\"specversion\":\"1.0\",\"id\":\"g1\",\"source\":\"/embed\","
			 "\"type\":\"greeting\"}\n"
			 "{\"specversion\":\"1.0\",\"id\":\"g2\",\"source\":\"/embed\","
			 "\"type\":\"greeting\"}";
	const char *ev3 = "{\"specversion\":\"1.0\",\"id\":\"g3\",\"source\":\"/embed\","
			  "\"type\":\"greeting\"}";
	const char *ev4 = "{\"specversion\":\"1.0\",\"id\":\"g4\",\"source\":\"/embed\","
			  "\"type\":\"greeting\"}";
	tide_log *log;
	tide_cursor *cur;
	const tide_event *e;
	int n = 0;

	CHECK(base != NULL && mkdtemp(tmpl) != NULL);
	snprintf(a, sizeof a, "%s/a", tmpl);
	snprintf(b, sizeof b, "%s/b", tmpl);
	ea = engine_in(a, &ca);
	eb = engine_in(b, &cb);
	CHECK(tide_engine_open(ea, base) == TIDE_OK);
	CHECK(tide_engine_open(eb, base) == TIDE_OK);
	CHECK(tide_engine_base(ea) == base);
	CHECK(tide_publish(ea, ev, strlen(ev), on_result, &ca) == TIDE_OK);
	CHECK(tide_publish(eb, ev, 30, on_result, &cb) == TIDE_OK); /* cut short */
	for (int i = 0; i < 200 && (ca.handled < 2 || cb.results < 1); i++)
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	CHECK(ca.results == 2 && ca.stored == 2 && ca.handled == 2);
	CHECK(cb.results == 1 && cb.stored == 0 && cb.handled == 0);
	/* a reload keeps the consumers added in C, at their checkpoints */
	CHECK(tide_engine_reload(ea) == TIDE_OK);
	CHECK(tide_publish(ea, ev3, strlen(ev3), on_result, &ca) == TIDE_OK);
	for (int i = 0; i < 200 && ca.handled < 3; i++)
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	CHECK(ca.results == 3 && ca.stored == 3 && ca.handled == 3);
	/* not from inside a turn: the engine refuses and goes on */
	reload_me = ea;
	CHECK(tide_publish(ea, ev4, strlen(ev4), on_result, &ca) == TIDE_OK);
	for (int i = 0; i < 200 && ca.handled < 4; i++)
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	reload_me = NULL;
	CHECK(ca.handled == 4 && reload_rc == TIDE_ESTATE);
	CHECK(strstr(tide_errmsg(), "from inside a turn") != NULL);
	/* a publish chained from a completion callback is stored in the next
	 * turn and acknowledged with its own seq */
	{
		const char *ev5 = "{\"specversion\":\"1.0\",\"id\":\"g5\",\"source\":\"/embed\","
				  "\"type\":\"greeting\"}";
		const char *ev6 = "{\"specversion\":\"1.0\",\"id\":\"g6\",\"source\":\"/embed\","
				  "\"type\":\"greeting\"}";
		chain_engine = ea;
		chain_event = ev6;
		CHECK(tide_publish(ea, ev5, strlen(ev5), on_result, &ca) == TIDE_OK);
		for (int i = 0; i < 200 && (ca.handled < 6 || chained_results < 1); i++)
			event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		CHECK(chain_rc == TIDE_OK);
		CHECK(chained_results == 1);
		CHECK(chained.code == TIDE_OK && chained.seq == 6 && !chained.duplicate);
		CHECK(ca.handled == 6);
	}
	/* extension attributes read in a C consumer */
	{
		const char *ev8 = "{\"specversion\":\"1.0\",\"id\":\"g8\",\"source\":\"/embed\","
				  "\"type\":\"greeting\",\"tenant\":\"acme\",\"tier\":3,"
				  "\"region\":\"eu-west\"}";
		CHECK(tide_publish(ea, ev8, strlen(ev8), on_result, &ca) == TIDE_OK);
		for (int i = 0; i < 200 && ca.handled < 7; i++)
			event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		CHECK(ca.handled == 7 && extensions_seen == 1);
	}
	/* a C consumer cannot publish: the turn has taken its events */
	{
		const char *ev7 = "{\"specversion\":\"1.0\",\"id\":\"g7\",\"source\":\"/embed\","
				  "\"type\":\"greeting\"}";
		publish_me = ea;
		CHECK(tide_publish(ea, ev7, strlen(ev7), on_result, &ca) == TIDE_OK);
		for (int i = 0; i < 200 && ca.handled < 8; i++)
			event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		publish_me = NULL;
		CHECK(ca.handled == 8 && publish_rc == TIDE_ESTATE);
		CHECK(strstr(tide_errmsg(), "while a turn runs") != NULL);
	}
	/* a text of more than 10,000 invalid events is refused whole */
	{
		size_t len = 10001 * 3;
		char *junk = malloc(len + 1);
		CHECK(junk != NULL);
		for (size_t k = 0; k < len; k += 3)
			memcpy(junk + k, "{}\n", 3);
		junk[len] = '\0';
		CHECK(tide_publish(ea, junk, len, on_result, &ca) == TIDE_EEVENT);
		CHECK(strstr(tide_errmsg(), "more than 10000 of its events are invalid") != NULL);
		CHECK(ca.results == 7);
		free(junk);
	}
	tide_engine_destroy(ea);
	tide_engine_destroy(eb);

	CHECK(tide_log_open(&log, a) == TIDE_OK);
	CHECK(tide_cursor_open(log, NULL, &cur) == TIDE_OK);
	while (tide_cursor_next(cur, &e) == TIDE_OK) {
		const char *json;
		CHECK(tide_event_json(e, &json, NULL) == TIDE_OK);
		CHECK(strstr(json, "\"type\":\"greeting\"") != NULL);
		/* through a cursor too, read in the other order */
		check_extensions_reversed(e);
		n++;
	}
	CHECK(n == 8); /* g1..g8, the chained g6 among them */
	CHECK(extensions_seen == 2);
	tide_cursor_close(cur);
	tide_log_close(log);
	CHECK(tide_log_open(&log, b) == TIDE_OK);
	tide_log_close(log);
	CHECK(strcmp(tide_strerror(TIDE_EFULL), "log is full") == 0);

	event_base_free(base);
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpl);
	CHECK(system(cmd) == 0);
	printf("embed_test: two engines on one event_base: ok\n");
	return 0;
}
