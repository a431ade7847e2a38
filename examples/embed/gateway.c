/*
 * gateway.c - a sensor gateway that embeds Tide: an example of the
 * engine inside a daemon of one's own.
 *
 * Sensors connect over TCP and send lines "device,metric,value".  Each
 * line becomes a CloudEvent (type sensor.reading, subject the device,
 * data {"metric": ..., "value": ...}) published with tide_publish(), and
 * the sensor is answered "ok SEQ" once the event is stored, or
 * "error WHY".  The rule in rules.lua turns a reading over its metric's
 * limit into a sensor.alert event; a C consumer prints each alert once
 * and records that it did with a sensor.alert.notified event.
 *
 * The program owns the event_base: the engine, the listener, the
 * connections and the signal events all run on it, on one thread.
 * SIGINT or SIGTERM asks the engine to stop; once it has (its last turn
 * committed, every sensor answered), its stop notice destroys it and
 * leaves the loop.  SIGHUP reloads the rules.
 *
 * usage: gateway [-d DATA] [-r RULES] [-v] PORT    (PORT 0: any free port)
 */
#define _POSIX_C_SOURCE 200809L

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <tide.h>

#define MAX_LINE 1024  /* longest line a sensor may send */
#define MAX_BATCH 1000 /* lines published with one tide_publish() */

typedef struct conn conn;

typedef struct gateway {
	struct event_base *base;
	tide_engine *engine; /* NULL once the stop notice destroyed it */
	struct evconnlistener *listener;
	struct event *signals[3]; /* SIGINT, SIGTERM, SIGHUP */
	conn *conns;              /* open connections */
	char run[32];             /* this run's start time: event ids differ across runs */
	uint64_t readings;        /* readings published in this run */
	int verbose;
	int stopping; /* a stop was asked for */
	int stopped;  /* the stop notice came */
} gateway;

/* One sensor connection.  What it sends is published in batches: all the
 * complete lines at hand, as one NDJSON text.  While a batch waits for
 * its results, reading stops (the kernel keeps what arrives), so the
 * answers go out in the order of the lines. */
struct conn {
	gateway *gw;
	struct bufferevent *bev; /* NULL once the sensor is gone */
	conn *prev, *next;
	/* The batch: per line, NULL (published, its result to come) or why
	 * it was refused before publishing.  Answered up to slots[answered]. */
	const char *slots[MAX_BATCH];
	size_t nslots, answered;
	size_t waiting; /* results still to come */
	int eof;        /* the sensor shut down its side: answer, then close */
};

static void read_lines(conn *c);

/* ------------------------------------------------------------------------
 * Connections
 * ------------------------------------------------------------------------ */

static void
conn_free(conn *c)
{
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		c->gw->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	if (c->bev != NULL)
		bufferevent_free(c->bev);
	free(c);
}

static void
on_written(struct bufferevent *bev, void *arg)
{
	(void)bev;
	conn_free(arg);
}

static void on_conn_event(struct bufferevent *bev, short what, void *arg);

/* Close once the answers already queued have been written. */
static void
conn_close_when_written(conn *c)
{
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
		conn_free(c);
		return;
	}
	bufferevent_disable(c->bev, EV_READ);
	bufferevent_setcb(c->bev, NULL, on_written, on_conn_event, c);
}

static void
answer(conn *c, const char *fmt, ...)
{
	va_list ap;

	if (c->bev == NULL)
		return;
	va_start(ap, fmt);
	evbuffer_add_vprintf(bufferevent_get_output(c->bev), fmt, ap);
	va_end(ap);
}

/* Answer the refused lines from slots[answered] up to the next one that
 * waits for its result. */
static void
answer_refused(conn *c)
{
	while (c->answered < c->nslots && c->slots[c->answered] != NULL)
		answer(c, "error %s\n", c->slots[c->answered++]);
}

/* Every line of the batch is answered: read on, or close. */
static void
batch_done(conn *c)
{
	c->nslots = c->answered = 0;
	if (c->bev == NULL) {
		conn_free(c);
		return;
	}
	if (!c->eof)
		bufferevent_enable(c->bev, EV_READ);
	read_lines(c);
}

/* The result of one published reading, after the turn's commit. */
static void
on_result(void *ud, const tide_result *res)
{
	conn *c = ud;

	answer_refused(c);
	if (res->code == TIDE_OK)
		answer(c, "ok %" PRIu64 "\n", res->seq);
	else
		answer(c, "error %s\n", res->error != NULL ? res->error : tide_strerror(res->code));
	c->answered++;
	answer_refused(c);
	if (--c->waiting == 0)
		batch_done(c);
}

/* ------------------------------------------------------------------------
 * Readings
 * ------------------------------------------------------------------------ */

/* @p s as a JSON string.  Bytes above 0x7f pass as they are: Tide
 * refuses text that is not UTF-8, and the sensor is told why. */
static void
json_string(struct evbuffer *out, const char *s, size_t n)
{
	evbuffer_add(out, "\"", 1);
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch == '"' || ch == '\\')
			evbuffer_add_printf(out, "\\%c", ch);
		else if (ch < 0x20)
			evbuffer_add_printf(out, "\\u%04x", ch);
		else
			evbuffer_add(out, &s[i], 1);
	}
	evbuffer_add(out, "\"", 1);
}

/* @p v as a JSON number: an integer when it is one (Tide then stores a
 * 64-bit integer), else the shortest text that reads back as @p v. */
static void
json_number(struct evbuffer *out, double v)
{
	char text[40];

	if (v > -9007199254740992.0 && v < 9007199254740992.0 && v == (double)(long long)v) {
		evbuffer_add_printf(out, "%.0f", v);
		return;
	}
	for (int digits = 15; digits <= 17; digits++) {
		snprintf(text, sizeof text, "%.*g", digits, v);
		if (strtod(text, NULL) == v)
			break;
	}
	evbuffer_add(out, text, strlen(text));
}

/* Whether @p n bytes at @p s are all printable (no control characters,
 * which would let a sensor break the gateway's output lines). */
static int
printable(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return 0;
	return 1;
}

/* Append the event for @p line ("device,metric,value", @p n bytes) to
 * @p text, or say why there is none. */
static const char *
reading_event(gateway *gw, struct evbuffer *text, const char *line, size_t n)
{
	const char *metric, *value, *end = line + n;
	char *stop;
	double v;

	if (n > MAX_LINE)
		return "line too long";
	if (strlen(line) != n)
		return "line holds a NUL byte";
	metric = memchr(line, ',', n);
	value = metric != NULL ? memchr(metric + 1, ',', (size_t)(end - metric - 1)) : NULL;
	if (value == NULL || memchr(value + 1, ',', (size_t)(end - value - 1)) != NULL)
		return "expected device,metric,value";
	metric++;
	value++;
	if (metric - 1 == line || value - 1 == metric)
		return "device and metric must not be empty";
	if (!printable(line, (size_t)(value - 1 - line)))
		return "device and metric must be printable";
	v = strtod(value, &stop);
	if (stop == value || stop != end)
		return "value is not a number";
	if (!isfinite(v))
		return "value is out of range";

	evbuffer_add_printf(text,
			    "{\"specversion\":\"1.0\",\"id\":\"%s-%" PRIu64 "\","
			    "\"source\":\"/gateway\",\"type\":\"sensor.reading\",\"subject\":",
			    gw->run, ++gw->readings);
	json_string(text, line, (size_t)(metric - 1 - line));
	evbuffer_add_printf(text, ",\"data\":{\"metric\":");
	json_string(text, metric, (size_t)(value - 1 - metric));
	evbuffer_add_printf(text, ",\"value\":");
	json_number(text, v);
	evbuffer_add_printf(text, "}}\n");
	return NULL;
}

/* The next complete line of @p in (malloc'd, NUL-terminated, its length
 * in *n), or NULL; once the sensor has shut down its side, what is left
 * is a last line without its end of line. */
static char *
next_line(conn *c, struct evbuffer *in, size_t *n)
{
	char *line = evbuffer_readln(in, n, EVBUFFER_EOL_CRLF);

	if (line == NULL && c->eof && (*n = evbuffer_get_length(in)) > 0) {
		line = malloc(*n + 1);
		if (line == NULL)
			return NULL;
		evbuffer_remove(in, line, *n);
		line[*n] = '\0';
	}
	return line;
}

/* Publish the complete lines at hand as one batch, unless one is under
 * way.  Lines refused here are answered in their place among the
 * results. */
static void
read_lines(conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	struct evbuffer *text;
	char *line;
	size_t n;
	int rc;

	if (c->waiting > 0)
		return;
	text = evbuffer_new();
	if (text == NULL) {
		conn_free(c);
		return;
	}
	for (;;) {
		while (c->nslots < MAX_BATCH && (line = next_line(c, in, &n)) != NULL) {
			const char *why = reading_event(c->gw, text, line, n);
			free(line);
			c->slots[c->nslots++] = why;
			c->waiting += why == NULL;
		}
		if (c->nslots == 0)
			break;
		if (c->waiting > 0) {
			bufferevent_disable(c->bev, EV_READ);
			rc = tide_publish(c->gw->engine, (const char *)evbuffer_pullup(text, -1),
					  evbuffer_get_length(text), on_result, c);
			if (rc == TIDE_OK)
				break; /* batch_done() reads on */
			/* Refused whole (the engine is stopping, say): every
			 * line is answered now. */
			while (c->answered < c->nslots) {
				const char *why = c->slots[c->answered++];
				answer(c, "error %s\n", why != NULL ? why : tide_errmsg());
			}
			c->waiting = 0;
			if (!c->eof)
				bufferevent_enable(c->bev, EV_READ);
			evbuffer_drain(text, evbuffer_get_length(text));
		}
		answer_refused(c);
		c->nslots = c->answered = 0;
	}
	evbuffer_free(text);

	if (c->waiting > 0)
		return;
	if (evbuffer_get_length(in) > MAX_LINE) {
		answer(c, "error line too long\n");
		conn_close_when_written(c);
	} else if (c->eof) {
		conn_close_when_written(c);
	}
}

static void
on_read(struct bufferevent *bev, void *arg)
{
	(void)bev;
	read_lines(arg);
}

static void
on_conn_event(struct bufferevent *bev, short what, void *arg)
{
	conn *c = arg;

	(void)bev;
	if (what & BEV_EVENT_ERROR) {
		/* Gone: a batch under way frees the connection when done. */
		bufferevent_free(c->bev);
		c->bev = NULL;
		if (c->waiting == 0)
			conn_free(c);
	} else if (what & BEV_EVENT_EOF) {
		/* The sensor has sent all it will: answer it, then close. */
		c->eof = 1;
		if (c->waiting == 0)
			read_lines(c);
	}
}

static void
on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
	gateway *gw = arg;
	conn *c = calloc(1, sizeof *c);

	(void)l;
	(void)sa;
	(void)salen;
	if (c == NULL) {
		evutil_closesocket(fd);
		return;
	}
	c->bev = bufferevent_socket_new(gw->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (c->bev == NULL) {
		evutil_closesocket(fd);
		free(c);
		return;
	}
	c->gw = gw;
	c->next = gw->conns;
	if (gw->conns != NULL)
		gw->conns->prev = c;
	gw->conns = c;
	bufferevent_setcb(c->bev, on_read, NULL, on_conn_event, c);
	bufferevent_enable(c->bev, EV_READ);
}

/* ------------------------------------------------------------------------
 * Alerts: a C consumer
 * ------------------------------------------------------------------------ */

/* Called for each sensor.alert, inside the engine's turn (its write
 * transaction: keep it short, as every producer waits for the commit).
 * The print is an effect outside the log, so it is guarded by a claim on
 * the alert's id: were the consumer to fail after it (say the emit below
 * failed) and run again, or the turn to be run again because the log had
 * to grow, the alert is not printed twice.  Only a crash between the print
 * and the commit would print it again.  The notified event commits with
 * the consumer's checkpoint, exactly once. */
static int
on_alert(void *ud, const tide_event *ev)
{
	tide_value value, metric, limit;
	const char *device, *id;
	struct evbuffer *json;
	size_t idlen, dlen;
	int first, rc;

	(void)ud;
	id = tide_event_attr(ev, "id", &idlen);
	if (id == NULL)
		return TIDE_EINVAL;
	device = tide_event_attr(ev, "subject", &dlen);
	if (device == NULL) {
		device = "";
		dlen = 0;
	}
	/* Read in place from the stored event: no JSON is parsed. */
	rc = tide_event_value(ev, "data.value", &value);
	if (rc == TIDE_OK && value.type != TIDE_INT && value.type != TIDE_DOUBLE)
		rc = TIDE_EINVAL; /* a failure: retried, then a dead letter */
	if (rc != TIDE_OK)
		return rc;
	if (tide_event_value(ev, "data.metric", &metric) != TIDE_OK || metric.type != TIDE_STRING) {
		metric.s = "?";
		metric.len = 1;
	}
	if (tide_event_value(ev, "data.limit", &limit) != TIDE_OK ||
	    (limit.type != TIDE_INT && limit.type != TIDE_DOUBLE))
		limit.d = NAN;

	rc = tide_once(ev, id, idlen, &first);
	if (rc != TIDE_OK)
		return rc;
	if (first) {
		printf("alert: %s %.*s %g over %g (seq %" PRIu64 ")\n", device, (int)metric.len,
		       metric.s, value.d, limit.d, tide_event_seq(ev));
		fflush(stdout);
	}

	json = evbuffer_new();
	if (json == NULL)
		return TIDE_ENOMEM;
	evbuffer_add_printf(json, "{\"specversion\":\"1.0\",\"type\":\"sensor.alert.notified\","
				  "\"subject\":");
	json_string(json, device, dlen);
	evbuffer_add_printf(json, ",\"data\":{\"alert\":");
	json_string(json, id, idlen);
	evbuffer_add_printf(json, "}}");
	rc = tide_emit(ev, (const char *)evbuffer_pullup(json, -1), evbuffer_get_length(json));
	evbuffer_free(json);
	return rc;
}

/* ------------------------------------------------------------------------
 * Signals, stopping, the engine's log
 * ------------------------------------------------------------------------ */

/* The engine has stopped: its last turn committed and every sensor was
 * answered.  Destroy it and leave the loop; main() closes the rest. */
static void
on_stop(void *ud, tide_engine *e)
{
	gateway *gw = ud;

	tide_engine_destroy(e);
	gw->engine = NULL;
	gw->stopped = 1;
	event_base_loopbreak(gw->base);
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
	gateway *gw = arg;

	(void)what;
	if (sig == SIGHUP) {
		if (gw->stopping)
			return;
		if (tide_engine_reload(gw->engine) == TIDE_OK)
			fprintf(stderr, "gateway: rules reloaded\n");
		else
			fprintf(stderr, "gateway: rules not reloaded: %s\n", tide_errmsg());
		return;
	}
	if (gw->stopping)
		return; /* the stop is under way */
	gw->stopping = 1;
	fprintf(stderr, "gateway: stopping\n");
	evconnlistener_disable(gw->listener);
	tide_engine_stop(gw->engine);
}

static void
on_log(void *ud, int level, const char *msg)
{
	gateway *gw = ud;

	if (level <= TIDE_LOG_WARN || gw->verbose)
		fprintf(stderr, "tide: %s\n", msg);
}

/* ------------------------------------------------------------------------
 * main
 * ------------------------------------------------------------------------ */

static int
open_engine(gateway *gw, const char *data, const char *rules)
{
	tide_consumer_opts opts = TIDE_CONSUMER_OPTS_INIT;
	tide_config *cfg = NULL;
	tide_engine *e = NULL;
	const char *what;
	int rc;

	what = "configuration";
	rc = tide_config_new(&cfg);
	if (rc == TIDE_OK)
		rc = tide_config_set(cfg, "data", data);
	if (rc == TIDE_OK)
		rc = tide_config_add_script(cfg, rules);
	if (rc != TIDE_OK)
		goto out;
	tide_config_set_log(cfg, on_log, gw);
	what = "engine";
	rc = tide_engine_new(&e, cfg);
	if (rc == TIDE_OK)
		rc = tide_engine_on_stop(e, on_stop, gw);
	if (rc != TIDE_OK)
		goto out;

	/* Alerts raised before the gateway first ran still count: a new
	 * consumer starts at the beginning of the log. */
	what = "consumer";
	opts.from = TIDE_FROM_BEGINNING;
	opts.retries = 5;
	opts.backoff_ms = 200;
	rc = tide_consumer_add(e, "notifier", "sensor.alert", &opts, on_alert, gw);
	if (rc != TIDE_OK)
		goto out;
	what = data;
	rc = tide_engine_open(e, gw->base);
	if (rc != TIDE_OK)
		goto out;
	gw->engine = e;
	e = NULL;
out:
	if (rc != TIDE_OK)
		fprintf(stderr, "gateway: %s: %s\n", what, tide_errmsg());
	tide_engine_destroy(e);
	tide_config_destroy(cfg);
	return rc;
}

static int
listen_on(gateway *gw, long port)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof sin;

	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = htons((uint16_t)port);
	gw->listener = evconnlistener_new_bind(gw->base, on_accept, gw,
					       LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, -1,
					       (struct sockaddr *)&sin, sizeof sin);
	if (gw->listener == NULL) {
		fprintf(stderr, "gateway: cannot listen on 127.0.0.1:%ld: %s\n", port,
			evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
		return -1;
	}
	if (getsockname(evconnlistener_get_fd(gw->listener), (struct sockaddr *)&sin, &len) != 0)
		return -1;
	fprintf(stderr, "gateway: listening on 127.0.0.1:%u\n", (unsigned)ntohs(sin.sin_port));
	return 0;
}

static void
usage(void)
{
	fprintf(stderr,
		"usage: gateway [-d DATA] [-r RULES] [-v] PORT    (PORT 0: any free port)\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	static const int sigs[3] = { SIGINT, SIGTERM, SIGHUP };
	const char *data = "./gateway-data", *rules = "rules.lua";
	gateway gw;
	struct timespec now;
	char *end;
	long port;
	int opt, status = 1;

	memset(&gw, 0, sizeof gw);
	while ((opt = getopt(argc, argv, "d:r:v")) != -1) {
		switch (opt) {
		case 'd': data = optarg; break;
		case 'r': rules = optarg; break;
		case 'v': gw.verbose = 1; break;
		default: usage();
		}
	}
	if (optind != argc - 1)
		usage();
	port = strtol(argv[optind], &end, 10);
	if (*argv[optind] == '\0' || *end != '\0' || port < 0 || port > 65535)
		usage();

	/* A sensor that hangs up before its answer must not end the process. */
	signal(SIGPIPE, SIG_IGN);
	clock_gettime(CLOCK_REALTIME, &now);
	snprintf(gw.run, sizeof gw.run, "%lld%09ld", (long long)now.tv_sec, now.tv_nsec);

	gw.base = event_base_new();
	if (gw.base == NULL) {
		fprintf(stderr, "gateway: cannot create an event_base\n");
		goto out;
	}
	if (open_engine(&gw, data, rules) != TIDE_OK)
		goto out;
	if (listen_on(&gw, port) != 0)
		goto out;
	for (int i = 0; i < 3; i++) {
		gw.signals[i] = evsignal_new(gw.base, sigs[i], on_signal, &gw);
		if (gw.signals[i] == NULL || evsignal_add(gw.signals[i], NULL) != 0) {
			fprintf(stderr, "gateway: cannot watch signal %d\n", sigs[i]);
			goto out;
		}
	}

	event_base_dispatch(gw.base);
	if (gw.stopped) {
		fprintf(stderr, "gateway: stopped\n");
		status = 0;
	}
out:
	/* An engine the stop notice did not destroy (the loop ended for
	 * another reason) goes first: its last results still reach their
	 * connections.  Then connections still open get what is queued for
	 * them, as far as their sockets take it without waiting. */
	tide_engine_destroy(gw.engine);
	gw.engine = NULL;
	while (gw.conns != NULL) {
		if (gw.conns->bev != NULL)
			evbuffer_write(bufferevent_get_output(gw.conns->bev),
				       bufferevent_getfd(gw.conns->bev));
		conn_free(gw.conns);
	}
	for (int i = 0; i < 3; i++)
		if (gw.signals[i] != NULL)
			event_free(gw.signals[i]);
	if (gw.listener != NULL)
		evconnlistener_free(gw.listener);
	if (gw.base != NULL)
		event_base_free(gw.base);
	return status;
}
