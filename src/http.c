/*
 * http.c - the engine's HTTP endpoint (http.h).
 *
 * POST /events takes CloudEvents in the three modes of the HTTP protocol
 * binding: structured (Content-Type application/cloudevents+json, one
 * event), batched (application/cloudevents-batch+json, a JSON array) and
 * binary (the attributes in ce-* headers, the body as the data).  A
 * binary event is rewritten as the JSON event it stands for, so every
 * mode meets the same parser, checks and errors as the nanomsg endpoints.
 * The events join the turn's batch and the request is answered after the
 * group commit, with the event's seq or the reason it was not stored.
 *
 * Everything runs on the engine's loop: evhttp reads a request whole
 * (bounded by max_message and the timeout) before the callback sees it.
 * A request whose client went away before the commit is answered into
 * the void: evhttp frees it then.
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include "http.h"
#include "json.h"

/* The live page (page.c, made from dist/page.html). */
extern const char tidei_page_html[];
extern const size_t tidei_page_html_len;

/* Seconds a client is told to wait when the engine is busy or stopping. */
#define RETRY_AFTER "1"

enum { MODE_ONE, MODE_BATCH };

/* A stream sends at most this many bytes ahead of what its client took;
 * beyond that it waits, and reads the log again when the client drains
 * them: a slow client costs no memory, only a lag. */
#define STREAM_AHEAD (256u << 10)
/* Events sent, and seqs looked at, per step of a stream: a filter that
 * passes few events does not hold the loop over a long log. */
#define STREAM_STEP 512
#define STREAM_SCAN 50000
/* A comment line this often keeps idle streams and proxies alive. */
#define STREAM_BEAT_S 10

/* GET /events/stream: a catch-up subscription. */
typedef struct stream {
	struct tidei_http *h;
	struct evhttp_request *req;
	uint64_t next;       /* the first seq not sent yet */
	char *type;          /* a type pattern, or NULL */
	int sending;         /* a chunk is on its way: wait for its callback */
	struct event *again; /* the next step, when one sent nothing */
	struct stream *prev, *next_s;
} stream;

/* Where a request went, for the counts by resource and status. */
enum { R_PAGE, R_HEALTHZ, R_READYZ, R_METRICS, R_STREAM, R_EVENTS, R_PROJECTIONS, R_OTHER, R_N };
static const char *const route_name[R_N] = {
	"/",       "/healthz",      "/readyz", "/metrics", "/events/stream",
	"/events", "/projections/", "other",
};
enum { M_GET, M_HEAD, M_POST, M_OTHER, M_N };
static const char *const method_name[M_N] = { "GET", "HEAD", "POST", "other" };

/* What a request's completion is told: its resource and method. */
typedef struct route {
	struct tidei_http *h;
	uint8_t r, m;
} route;

struct tidei_http {
	struct evhttp *http;
	route routes[R_N][M_N];
	tidei_batch *batch;
	tide_log *log;
	tidei_http_host host;
	char *token;
	size_t turn_events, max_message;
	int paused;
	int local;
	uint64_t end; /* the log's last committed seq, as last told */
	stream *streams;
	struct event *beat;
	char address[80];
	tidei_buf body, reply;
	tidei_http_stats stats;
};

/* A request waiting for the commit. */
typedef struct pending {
	tidei_http *h;
	struct evhttp_request *req;
	int mode;
} pending;

/* ------------------------------------------------------------------------
 * Replies
 * ------------------------------------------------------------------------ */

static void
send_json(struct evhttp_request *req, int code, const char *reason, const tidei_buf *b)
{
	struct evbuffer *out = evhttp_request_get_output_buffer(req);

	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
			  "application/json");
	if (b->len > 0)
		evbuffer_add(out, b->p, b->len);
	evbuffer_add(out, "\n", 1);
	evhttp_send_reply(req, code, reason, NULL);
}

/* {"ok":false,"error":MSG} with @p code, at once. */
static void
refuse(tidei_http *h, struct evhttp_request *req, int code, const char *reason, const char *msg)
{
	h->stats.refused++;
	tidei_buf_reset(&h->reply);
	tidei_buf_puts(&h->reply, "{\"ok\":false,\"error\":");
	tidei_json_str(&h->reply, msg, strlen(msg));
	tidei_buf_putc(&h->reply, '}');
	if (code == 503)
		evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After",
				  RETRY_AFTER);
	send_json(req, code, reason, &h->reply);
}

/* The HTTP status of an event that was not stored. */
static int
status_of(int code, const char **reason)
{
	switch (code) {
	case TIDE_ECONFLICT: *reason = "Conflict"; return 409;
	case TIDE_EEVENT: *reason = "Bad Request"; return 400;
	case TIDE_EFULL:
	case TIDE_ESTATE: *reason = "Service Unavailable"; return 503;
	default: *reason = "Internal Server Error"; return 500;
	}
}

/* After the commit: one event's result, or an array of a batch's. */
static void
committed(void *ud, void *ctx, const tidei_batch *b, size_t first, size_t count)
{
	pending *p = ctx;
	tidei_http *h = ud;
	const char *reason = "OK";
	size_t stored = 0;
	int code = 200, worst = 0;

	tidei_buf_reset(&h->reply);
	if (p->mode == MODE_BATCH)
		tidei_buf_putc(&h->reply, '[');
	for (size_t k = first; k < first + count; k++) {
		const tidei_item *it = &b->items[k];
		if (k > first)
			tidei_buf_putc(&h->reply, ',');
		tidei_batch_reply(b, k, 1, &h->reply);
		if (tidei_batch_error(b, it) == NULL)
			stored++;
		else if (worst == 0 || it->code != TIDE_EEVENT)
			worst = it->code;
	}
	if (p->mode == MODE_BATCH)
		tidei_buf_putc(&h->reply, ']');
	if (stored < count) {
		if (p->mode == MODE_ONE || stored == 0) {
			code = status_of(worst, &reason);
		} else {
			code = 207; /* some stored, some not: each says which */
			reason = "Multi-Status";
		}
		if (code == 503)
			evhttp_add_header(evhttp_request_get_output_headers(p->req), "Retry-After",
					  RETRY_AFTER);
	}
	if (h->reply.failed) {
		tidei_buf_reset(&h->reply);
		tidei_buf_puts(&h->reply, "{\"ok\":false,\"error\":\"out of memory\"}");
		code = 500;
		reason = "Internal Server Error";
	}
	send_json(p->req, code, reason, &h->reply);
	free(p);
}

/* ------------------------------------------------------------------------
 * Binary mode
 * ------------------------------------------------------------------------ */

static int
hexval(int c)
{
	return c >= '0' && c <= '9'   ? c - '0'
	       : c >= 'a' && c <= 'f' ? c - 'a' + 10
	       : c >= 'A' && c <= 'F' ? c - 'A' + 10
				      : -1;
}

/* A ce-* header's value, percent-decoded (the binding encodes what a
 * header cannot carry), as a JSON string. */
static void
put_decoded(tidei_buf *out, const char *v)
{
	tidei_buf d = { 0 };

	for (const char *s = v; *s != '\0'; s++) {
		int hi, lo;
		if (*s == '%' && (hi = hexval(s[1])) >= 0 && (lo = hexval(s[2])) >= 0) {
			tidei_buf_putc(&d, (uint8_t)(hi << 4 | lo));
			s += 2;
		} else {
			tidei_buf_putc(&d, (uint8_t)*s);
		}
	}
	tidei_json_str(out, d.p ? (const char *)d.p : "", d.len);
	out->failed |= d.failed;
	tidei_buf_free(&d);
}

/* Whether media type @p ct is JSON: application/json or any +json. */
static int
is_json(const char *ct)
{
	size_t n = strcspn(ct, ";");

	while (n > 0 && isspace((unsigned char)ct[n - 1]))
		n--;
	return (n == 16 && strncasecmp(ct, "application/json", 16) == 0) ||
	       (n > 5 && strncasecmp(ct + n - 5, "+json", 5) == 0);
}

/* The event of a binary-mode request, as JSON in h->body: its ce-*
 * headers as attributes, Content-Type as datacontenttype, and the body as
 * data: JSON as it is, text as a string, anything else in base64. */
static int
binary_event(tidei_http *h, struct evhttp_request *req, const uint8_t *body, size_t n,
	     const char **why)
{
	struct evkeyvalq *hd = evhttp_request_get_input_headers(req);
	const char *ct = evhttp_find_header(hd, "Content-Type");
	struct evkeyval *kv;
	int first = 1;

	tidei_buf_reset(&h->body);
	tidei_buf_putc(&h->body, '{');
	for (kv = hd->tqh_first; kv != NULL; kv = kv->next.tqe_next) {
		size_t kn = strlen(kv->key);
		if (kn <= 3 || strncasecmp(kv->key, "ce-", 3) != 0)
			continue;
		if (!first)
			tidei_buf_putc(&h->body, ',');
		first = 0;
		tidei_buf_putc(&h->body, '"');
		for (size_t i = 3; i < kn; i++)
			tidei_buf_putc(&h->body, (uint8_t)tolower((unsigned char)kv->key[i]));
		tidei_buf_puts(&h->body, "\":");
		put_decoded(&h->body, kv->value);
	}
	if (ct != NULL) {
		tidei_buf_puts(&h->body, ",\"datacontenttype\":");
		tidei_json_str(&h->body, ct, strlen(ct));
	}
	if (n > 0) {
		if (ct == NULL || is_json(ct)) {
			tidei_buf_puts(&h->body, ",\"data\":");
			tidei_buf_put(&h->body, body, n);
		} else if (strncasecmp(ct, "text/", 5) == 0 &&
			   tidei_utf8_valid((const char *)body, n)) {
			tidei_buf_puts(&h->body, ",\"data\":");
			tidei_json_str(&h->body, (const char *)body, n);
		} else {
			tidei_buf_puts(&h->body, ",\"data_base64\":\"");
			tidei_base64_encode(&h->body, body, n);
			tidei_buf_putc(&h->body, '"');
		}
	}
	tidei_buf_putc(&h->body, '}');
	if (h->body.failed) {
		*why = "out of memory";
		return -1;
	}
	return 0;
}

/* ------------------------------------------------------------------------
 * Requests
 * ------------------------------------------------------------------------ */

/* Whether @p ct names media type @p want (parameters after ';' aside). */
static int
media_is(const char *ct, const char *want)
{
	size_t n = strlen(want);

	while (*ct == ' ')
		ct++;
	return strncasecmp(ct, want, n) == 0 && (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

/* The first byte that is not JSON white space, or 0. */
static int
first_char(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != ' ' && p[i] != '\t' && p[i] != '\n' && p[i] != '\r')
			return p[i];
	return 0;
}

/* A bearer token in constant time: the comparison takes as long whatever
 * matches. */
static int
authorized(const tidei_http *h, struct evhttp_request *req)
{
	const char *a;
	size_t n, t;
	unsigned diff;

	if (h->token == NULL)
		return 1;
	a = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
	if (a == NULL || strncasecmp(a, "Bearer ", 7) != 0)
		return 0;
	a += 7;
	n = strlen(a);
	t = strlen(h->token);
	diff = n != t;
	for (size_t i = 0; i < t; i++)
		diff |= (unsigned)(uint8_t)h->token[i] ^ (unsigned)(uint8_t)(i < n ? a[i] : 0);
	return diff == 0;
}

static int
batch_full(const tidei_http *h)
{
	return h->batch->n >= h->turn_events || h->batch->arena.len >= h->max_message;
}

static void
post_events(tidei_http *h, struct evhttp_request *req)
{
	struct evkeyvalq *hd = evhttp_request_get_input_headers(req);
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	const char *ct = evhttp_find_header(hd, "Content-Type"), *why = NULL;
	size_t n = evbuffer_get_length(in), first = h->batch->n;
	const uint8_t *body = n ? evbuffer_pullup(in, -1) : (const uint8_t *)"";
	const char *msg;
	size_t len;
	pending *p;
	long added;
	int mode;

	if (h->paused) {
		refuse(h, req, 503, "Service Unavailable", "the engine is stopping");
		return;
	}
	if (batch_full(h)) {
		refuse(h, req, 503, "Service Unavailable",
		       "the engine is busy: send again after Retry-After");
		return;
	}
	if (n > h->max_message) {
		refuse(h, req, 413, "Payload Too Large",
		       "the request is over the max_message_size limit");
		return;
	}
	if (ct != NULL && media_is(ct, "application/cloudevents-batch+json")) {
		mode = MODE_BATCH;
		if (first_char(body, n) != '[') {
			refuse(h, req, 400, "Bad Request",
			       "a batch (application/cloudevents-batch+json) is a JSON array "
			       "of events");
			return;
		}
		msg = (const char *)body;
		len = n;
	} else if (ct != NULL && media_is(ct, "application/cloudevents+json")) {
		mode = MODE_ONE;
		if (first_char(body, n) != '{') {
			refuse(h, req, 400, "Bad Request",
			       "structured mode (application/cloudevents+json) carries one event, "
			       "a JSON object");
			return;
		}
		msg = (const char *)body;
		len = n;
	} else if (evhttp_find_header(hd, "ce-specversion") != NULL) {
		mode = MODE_ONE;
		if (binary_event(h, req, body, n, &why) != 0) {
			refuse(h, req, 500, "Internal Server Error", why);
			return;
		}
		msg = (const char *)h->body.p;
		len = h->body.len;
	} else {
		refuse(h, req, 415, "Unsupported Media Type",
		       "send a CloudEvent: application/cloudevents+json, "
		       "application/cloudevents-batch+json, or binary mode (ce-specversion "
		       "and the other attributes as ce-* headers)");
		return;
	}
	added = tidei_batch_add(h->batch, msg, len);
	if (added == TIDEI_BATCH_REFUSED) {
		h->stats.refused++;
		tidei_buf_reset(&h->reply);
		tidei_buf_puts(&h->reply, TIDEI_REFUSED_REPLY);
		send_json(req, 400, "Bad Request", &h->reply);
		return;
	}
	if (added < 0) {
		refuse(h, req, 500, "Internal Server Error", "out of memory");
		return;
	}
	if (mode == MODE_ONE && added != 1) {
		tidei_batch_truncate(h->batch, first);
		refuse(h, req, 400, "Bad Request", "a request in this mode carries one event");
		return;
	}
	if (added == 0) { /* an empty batch */
		tidei_buf_reset(&h->reply);
		tidei_buf_puts(&h->reply, "[]");
		send_json(req, 200, "OK", &h->reply);
		return;
	}
	if ((p = malloc(sizeof *p)) == NULL ||
	    tidei_batch_wait(h->batch, first, (size_t)added, committed, h, p) != 0) {
		free(p);
		tidei_batch_truncate(h->batch, first);
		refuse(h, req, 500, "Internal Server Error", "out of memory");
		return;
	}
	*p = (pending){ h, req, mode };
	h->stats.events += (uint64_t)added;
	h->host.input(h->host.ud);
}

/* ------------------------------------------------------------------------
 * Reading: the log and projections
 * ------------------------------------------------------------------------ */

/* Most events one GET /events answers with. */
#define EVENTS_MAX 10000
#define EVENTS_DEFAULT 100

/* A query parameter as a count in [lo, hi]: 0, or -1 (refused, with the
 * reason in @p why). */
static int
count_param(struct evkeyvalq *q, const char *name, uint64_t lo, uint64_t hi, uint64_t *out,
	    char *why, size_t n)
{
	const char *v = evhttp_find_header(q, name);
	char *end;
	unsigned long long x;

	if (v == NULL)
		return 0;
	x = strtoull(v, &end, 10);
	if (*v == '\0' || *end != '\0' || *v == '-' || x < lo || x > hi) {
		snprintf(why, n, "'%s' must be a whole number from %llu to %llu, not '%.100s'",
			 name, (unsigned long long)lo, (unsigned long long)hi, v);
		return -1;
	}
	*out = x;
	return 0;
}

/* GET /events?from=SEQ&limit=N&type=P&subject=S: NDJSON, oldest first;
 * Tide-Next-From names the seq to ask from for the rest. */
static void
get_events(tidei_http *h, struct evhttp_request *req, const struct evhttp_uri *uri)
{
	struct evkeyvalq q;
	tide_filter f = { 0 };
	uint64_t from = 1, limit = EVENTS_DEFAULT, n = 0, last = 0;
	struct evbuffer *out;
	tide_cursor *c = NULL;
	const tide_event *ev;
	char why[300];
	int rc;

	TAILQ_INIT(&q);
	if (h->log == NULL) {
		refuse(h, req, 404, "Not Found", "no log to read here");
		return;
	}
	if (uri != NULL && evhttp_uri_get_query(uri) != NULL &&
	    evhttp_parse_query_str(evhttp_uri_get_query(uri), &q) != 0) {
		refuse(h, req, 400, "Bad Request", "the query string is malformed");
		return;
	}
	if (count_param(&q, "from", 1, UINT64_MAX, &from, why, sizeof why) != 0 ||
	    count_param(&q, "limit", 1, EVENTS_MAX, &limit, why, sizeof why) != 0) {
		evhttp_clear_headers(&q);
		refuse(h, req, 400, "Bad Request", why);
		return;
	}
	f.from = from;
	f.type = evhttp_find_header(&q, "type");
	f.subject = evhttp_find_header(&q, "subject");
	if ((rc = tide_cursor_open(h->log, &f, &c)) != TIDE_OK) {
		evhttp_clear_headers(&q);
		refuse(h, req, 500, "Internal Server Error", tide_errmsg());
		return;
	}
	out = evhttp_request_get_output_buffer(req);
	while (n < limit && evbuffer_get_length(out) < h->max_message &&
	       (rc = tide_cursor_next(c, &ev)) == TIDE_OK) {
		const char *json;
		size_t len;
		if (tide_event_json(ev, &json, &len) != TIDE_OK)
			break;
		evbuffer_add(out, json, len);
		evbuffer_add(out, "\n", 1);
		last = tide_event_seq(ev);
		n++;
	}
	tide_cursor_close(c);
	evhttp_clear_headers(&q);
	if (rc != TIDE_OK && rc != TIDE_ENOTFOUND) {
		evbuffer_drain(out, evbuffer_get_length(out));
		refuse(h, req, 500, "Internal Server Error", tide_errmsg());
		return;
	}
	snprintf(why, sizeof why, "%llu", (unsigned long long)(last ? last + 1 : from));
	evhttp_add_header(evhttp_request_get_output_headers(req), "Tide-Next-From", why);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
			  "application/x-ndjson");
	evhttp_send_reply(req, 200, "OK", NULL);
}

/* GET /projections/NAME/KEY (the key may hold '/', percent-encoded or
 * not), or GET /projections/NAME?prefix=P&limit=N for a listing. */
static void
get_projection(tidei_http *h, struct evhttp_request *req, const struct evhttp_uri *uri,
	       const char *rest)
{
	const char *slash = strchr(rest, '/');
	char *name, *key = NULL, why[300];
	size_t nlen = slash ? (size_t)(slash - rest) : strlen(rest), klen = 0;
	struct evkeyvalq q;
	uint64_t limit = EVENTS_DEFAULT;
	int code;

	TAILQ_INIT(&q);
	if (h->host.query == NULL) {
		refuse(h, req, 404, "Not Found", "no projections here");
		return;
	}
	{
		char *raw = strndup(rest, nlen);
		name = raw ? evhttp_uridecode(raw, 0, NULL) : NULL;
		free(raw);
	}
	if (slash != NULL && slash[1] != '\0')
		key = evhttp_uridecode(slash + 1, 0, &klen);
	if (name == NULL || (slash != NULL && slash[1] != '\0' && key == NULL)) {
		free(name);
		free(key);
		refuse(h, req, 500, "Internal Server Error", "out of memory");
		return;
	}
	if (name[0] == '\0') {
		refuse(h, req, 404, "Not Found", "name a projection: /projections/NAME/KEY");
	} else if (uri != NULL && evhttp_uri_get_query(uri) != NULL &&
		   evhttp_parse_query_str(evhttp_uri_get_query(uri), &q) != 0) {
		refuse(h, req, 400, "Bad Request", "the query string is malformed");
	} else if (count_param(&q, "limit", 1, EVENTS_MAX, &limit, why, sizeof why) != 0) {
		refuse(h, req, 400, "Bad Request", why);
	} else {
		const char *prefix = evhttp_find_header(&q, "prefix");
		tidei_buf_reset(&h->reply);
		if (key != NULL)
			code = h->host.query(h->host.ud, name, key, klen, NULL, 1, &h->reply);
		else
			code = h->host.query(h->host.ud, name, NULL, 0, prefix ? prefix : "",
					     (size_t)limit, &h->reply);
		send_json(req, code,
			  code == 200   ? "OK"
			  : code == 404 ? "Not Found"
			  : code == 503 ? "Service Unavailable"
					: "Error",
			  &h->reply);
	}
	evhttp_clear_headers(&q);
	free(name);
	free(key);
}

/* ------------------------------------------------------------------------
 * Event streams (Server-Sent Events)
 *
 * A stream reads the log from its position, at most STREAM_STEP events
 * at a time, and sends them as "id: SEQ\nevent: TYPE\ndata: JSON\n\n".
 * History and live events are the same path: after a commit each stream
 * that is not waiting for its client reads on from where it was, so the
 * switch from the one to the other has no gap and no repeat, and an
 * EventSource that reconnects with Last-Event-ID resumes after that seq.
 * ------------------------------------------------------------------------ */

static void stream_pump(stream *s);

static void
stream_free(stream *s)
{
	tidei_http *h = s->h;

	if (s->prev != NULL)
		s->prev->next_s = s->next_s;
	else
		h->streams = s->next_s;
	if (s->next_s != NULL)
		s->next_s->prev = s->prev;
	h->stats.streams--;
	if (s->again != NULL)
		event_free(s->again);
	free(s->type);
	free(s);
}

/* The client went away.  evhttp has let go of a request whose reply was
 * under way: ending it frees it. */
static void
stream_closed(struct evhttp_connection *evcon, void *arg)
{
	stream *s = arg;
	struct evhttp_request *req = s->req;

	(void)evcon;
	stream_free(s);
	if (evhttp_request_get_connection(req) == NULL)
		evhttp_send_reply_end(req);
}

/* The last chunk reached the socket: read on. */
static void
stream_sent(struct evhttp_connection *evcon, void *arg)
{
	stream *s = arg;

	(void)evcon;
	s->sending = 0;
	stream_pump(s);
}

static int
stream_room(const stream *s)
{
	struct evhttp_connection *c = evhttp_request_get_connection(s->req);
	struct bufferevent *bev = c ? evhttp_connection_get_bufferevent(c) : NULL;

	return bev == NULL || evbuffer_get_length(bufferevent_get_output(bev)) < STREAM_AHEAD;
}

/* Send what the log holds after s->next, a step at a time, while the
 * client keeps up. */
static void
stream_pump(stream *s)
{
	tidei_http *h = s->h;
	tide_filter f = { 0 };
	tide_cursor *c = NULL;
	const tide_event *ev;
	struct evbuffer *out;
	unsigned n = 0;
	int rc;

	if (s->sending || s->next > h->end || !stream_room(s))
		return;
	if ((out = evbuffer_new()) == NULL)
		return;
	f.from = s->next;
	f.until = h->end - s->next < STREAM_SCAN ? h->end : s->next + STREAM_SCAN - 1;
	f.type = s->type;
	if (tide_cursor_open(h->log, &f, &c) != TIDE_OK) {
		evbuffer_free(out);
		return;
	}
	while (n < STREAM_STEP && (rc = tide_cursor_next(c, &ev)) == TIDE_OK) {
		const char *json, *type;
		size_t len, tlen;
		uint64_t seq = tide_event_seq(ev);
		if (tide_event_json(ev, &json, &len) != TIDE_OK)
			break;
		type = tide_event_attr(ev, "type", &tlen);
		evbuffer_add_printf(out, "id: %llu\nevent: %.*s\ndata: ", (unsigned long long)seq,
				    (int)tlen, type);
		evbuffer_add(out, json, len);
		evbuffer_add(out, "\n\n", 2);
		s->next = seq + 1;
		n++;
	}
	if (n < STREAM_STEP)
		s->next = f.until + 1; /* the filter passed over the rest */
	tide_cursor_close(c);
	if (evbuffer_get_length(out) > 0) {
		s->sending = 1;
		evhttp_send_reply_chunk_with_cb(s->req, out, stream_sent, s);
	} else if (s->next <= h->end) {
		event_active(s->again, EV_TIMEOUT, 0); /* more to look at, next loop */
	}
	evbuffer_free(out);
}

static void
stream_again(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	stream_pump(arg);
}

static void
beat(evutil_socket_t fd, short what, void *arg)
{
	tidei_http *h = arg;
	struct evbuffer *b;

	(void)fd;
	(void)what;
	if ((b = evbuffer_new()) == NULL)
		return;
	for (stream *s = h->streams; s != NULL; s = s->next_s)
		if (!s->sending) {
			evbuffer_add(b, ":\n\n", 3);
			evhttp_send_reply_chunk(s->req, b);
		}
	evbuffer_free(b);
}

/* GET /events/stream?from=SEQ&type=P, or with Last-Event-ID: SEQ. */
static void
get_stream(tidei_http *h, struct evhttp_request *req, const struct evhttp_uri *uri)
{
	const char *last =
		evhttp_find_header(evhttp_request_get_input_headers(req), "Last-Event-ID");
	struct evkeyvalq q;
	uint64_t from = h->end + 1, id;
	struct evkeyvalq *out = evhttp_request_get_output_headers(req);
	char why[300];
	stream *s;

	TAILQ_INIT(&q);
	if (h->log == NULL || h->paused) {
		refuse(h, req, 503, "Service Unavailable", "the engine is stopping");
		return;
	}
	if (uri != NULL && evhttp_uri_get_query(uri) != NULL &&
	    evhttp_parse_query_str(evhttp_uri_get_query(uri), &q) != 0) {
		refuse(h, req, 400, "Bad Request", "the query string is malformed");
		return;
	}
	if (count_param(&q, "from", 1, UINT64_MAX - 1, &from, why, sizeof why) != 0) {
		evhttp_clear_headers(&q);
		refuse(h, req, 400, "Bad Request", why);
		return;
	}
	if (last != NULL) { /* a reconnection: after the last event it had */
		char *end;
		id = strtoull(last, &end, 10);
		if (*last == '\0' || *end != '\0' || *last == '-' || id == UINT64_MAX) {
			evhttp_clear_headers(&q);
			refuse(h, req, 400, "Bad Request", "Last-Event-ID must be a seq");
			return;
		}
		from = id + 1;
	}
	if ((s = calloc(1, sizeof *s)) == NULL ||
	    (s->again = event_new(evhttp_connection_get_base(evhttp_request_get_connection(req)),
				  -1, 0, stream_again, s)) == NULL ||
	    (evhttp_find_header(&q, "type") != NULL &&
	     (s->type = strdup(evhttp_find_header(&q, "type"))) == NULL)) {
		if (s != NULL && s->again != NULL)
			event_free(s->again);
		free(s);
		evhttp_clear_headers(&q);
		refuse(h, req, 500, "Internal Server Error", "out of memory");
		return;
	}
	evhttp_clear_headers(&q);
	s->h = h;
	s->req = req;
	s->next = from;
	s->next_s = h->streams;
	if (h->streams != NULL)
		h->streams->prev = s;
	h->streams = s;
	h->stats.streams++;
	evhttp_add_header(out, "Content-Type", "text/event-stream");
	evhttp_add_header(out, "Cache-Control", "no-cache");
	evhttp_send_reply_start(req, 200, "OK");
	evhttp_connection_set_closecb(evhttp_request_get_connection(req), stream_closed, s);
	stream_pump(s);
}

void
tidei_http_committed(tidei_http *h, uint64_t seq)
{
	if (h == NULL || seq <= h->end)
		return;
	h->end = seq;
	for (stream *s = h->streams, *next; s != NULL; s = next) {
		next = s->next_s;
		stream_pump(s);
	}
}

static void
plain(struct evhttp_request *req, int code, const char *reason, const char *text)
{
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
			  "text/plain; charset=utf-8");
	evbuffer_add_printf(evhttp_request_get_output_buffer(req), "%s\n", text);
	evhttp_send_reply(req, code, reason, NULL);
}

/* The token check of a guarded path: 1, or 0 with the 401 sent. */
static int
let_in(tidei_http *h, struct evhttp_request *req)
{
	if (authorized(h, req))
		return 1;
	evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate", "Bearer");
	refuse(h, req, 401, "Unauthorized",
	       "a bearer token is required (Authorization: Bearer TOKEN)");
	return 0;
}

/* A reply was sent in full: counted by resource, method and status.  A
 * client gone before its answer is counted in requests only. */
static void
answered(struct evhttp_request *req, void *arg)
{
	const route *rt = arg;
	tidei_http_stats *st = &rt->h->stats;
	const char *hn = route_name[rt->r], *mn = method_name[rt->m];
	int code = evhttp_request_get_response_code(req);
	size_t k;

	for (k = 0; k < st->nanswered; k++)
		if (st->answered[k].handler == hn && st->answered[k].method == mn &&
		    st->answered[k].code == code)
			break;
	if (k == st->nanswered) {
		if (k == TIDEI_HTTP_COUNTS)
			k--; /* past the table: added to its last row (not seen yet) */
		else
			st->answered[st->nanswered++] = (tidei_http_count){ hn, mn, code, 0 };
	}
	st->answered[k].n++;
}

static int
route_of(const char *path)
{
	if (strcmp(path, "/") == 0)
		return R_PAGE;
	if (strcmp(path, "/healthz") == 0)
		return R_HEALTHZ;
	if (strcmp(path, "/readyz") == 0)
		return R_READYZ;
	if (strcmp(path, "/metrics") == 0)
		return R_METRICS;
	if (strcmp(path, "/events/stream") == 0)
		return R_STREAM;
	if (strcmp(path, "/events") == 0)
		return R_EVENTS;
	if (strncmp(path, "/projections/", 13) == 0)
		return R_PROJECTIONS;
	return R_OTHER;
}

static void
on_request(struct evhttp_request *req, void *arg)
{
	tidei_http *h = arg;
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	int get = cmd == EVHTTP_REQ_GET || cmd == EVHTTP_REQ_HEAD;
	char why[256];

	h->stats.requests++;
	if (path == NULL || *path == '\0')
		path = "/";
	evhttp_request_set_on_complete_cb(
		req, answered,
		&h->routes[route_of(path)][cmd == EVHTTP_REQ_GET    ? M_GET
					   : cmd == EVHTTP_REQ_HEAD ? M_HEAD
					   : cmd == EVHTTP_REQ_POST ? M_POST
								    : M_OTHER]);
	if (strcmp(path, "/healthz") == 0 || strcmp(path, "/readyz") == 0) {
		if (!get) {
			evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
					  "GET, HEAD");
			refuse(h, req, 405, "Method Not Allowed", "use GET");
		} else if (path[1] == 'h') {
			plain(req, 200, "OK", "alive");
		} else if (h->paused) {
			plain(req, 503, "Service Unavailable", "not ready: the engine is stopping");
		} else if (h->host.ready != NULL && !h->host.ready(h->host.ud, why, sizeof why)) {
			char text[300];
			snprintf(text, sizeof text, "not ready: %s", why);
			plain(req, 503, "Service Unavailable", text);
		} else {
			plain(req, 200, "OK", "ready");
		}
		return;
	}
	if (strcmp(path, "/") == 0) {
		if (!get) {
			evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
					  "GET, HEAD");
			refuse(h, req, 405, "Method Not Allowed", "use GET");
			return;
		}
		/* self-contained: its script reads /metrics, nothing else */
		evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
				  "text/html; charset=utf-8");
		evhttp_add_header(evhttp_request_get_output_headers(req), "Cache-Control",
				  "no-cache");
		evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Security-Policy",
				  "default-src 'none'; script-src 'unsafe-inline'; style-src "
				  "'unsafe-inline'; connect-src 'self'; img-src 'self'");
		evbuffer_add_reference(evhttp_request_get_output_buffer(req), tidei_page_html,
				       tidei_page_html_len, NULL, NULL);
		evhttp_send_reply(req, 200, "OK", NULL);
		return;
	}
	if (strcmp(path, "/metrics") == 0) {
		if (!get) {
			evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
					  "GET, HEAD");
			refuse(h, req, 405, "Method Not Allowed", "use GET");
		} else if (!let_in(h, req)) {
		} else if (h->host.metrics == NULL) {
			refuse(h, req, 404, "Not Found", "no metrics here");
		} else {
			tidei_buf_reset(&h->reply);
			h->host.metrics(h->host.ud, &h->reply);
			evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
					  "text/plain; version=0.0.4; charset=utf-8");
			evbuffer_add(evhttp_request_get_output_buffer(req), h->reply.p,
				     h->reply.len);
			evhttp_send_reply(req, 200, "OK", NULL);
		}
		return;
	}
	if (strcmp(path, "/events/stream") == 0) {
		if (!get) {
			evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
					  "GET, HEAD");
			refuse(h, req, 405, "Method Not Allowed", "use GET");
		} else if (!let_in(h, req)) {
		} else {
			get_stream(h, req, uri);
		}
		return;
	}
	if (strcmp(path, "/events") == 0 || strncmp(path, "/projections/", 13) == 0) {
		int events = path[1] == 'e';
		if (events ? cmd != EVHTTP_REQ_POST && !get : !get) {
			evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
					  events ? "GET, HEAD, POST" : "GET, HEAD");
			refuse(h, req, 405, "Method Not Allowed",
			       events ? "events are sent with POST and read with GET"
				      : "projections are read with GET");
		} else if (!let_in(h, req)) {
		} else if (!events) {
			get_projection(h, req, uri, path + 13);
		} else if (cmd == EVHTTP_REQ_POST) {
			post_events(h, req);
		} else {
			get_events(h, req, uri);
		}
		return;
	}
	snprintf(why, sizeof why, "no such resource: %.200s", path);
	refuse(h, req, 404, "Not Found", why);
}

/* ------------------------------------------------------------------------
 * Opening
 * ------------------------------------------------------------------------ */

/* @p s as host and port: "PORT" and ":PORT" are 127.0.0.1. */
static int
split_listen(const char *s, char *host, size_t hn, int *port, char *err)
{
	const char *colon = strrchr(s, ':');
	const char *p = colon ? colon + 1 : s;
	char *end;
	long v;

	v = strtol(p, &end, 10);
	if (*p == '\0' || *end != '\0' || v < 0 || v > 65535)
		return tidei_err(err, TIDE_ECONFIG,
				 "http: '%s' is not PORT, :PORT or HOST:PORT (a port 0 to 65535)",
				 s);
	*port = (int)v;
	if (colon == NULL || colon == s) {
		snprintf(host, hn, "127.0.0.1");
	} else if (s[0] == '[' && colon > s + 1 && colon[-1] == ']') {
		snprintf(host, hn, "%.*s", (int)(colon - s - 2), s + 1);
	} else {
		snprintf(host, hn, "%.*s", (int)(colon - s), s);
	}
	return TIDE_OK;
}

/* Where the socket is bound, into h->address; whether it is loopback. */
static void
bound_address(tidei_http *h, struct evhttp_bound_socket *bs)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	char ip[INET6_ADDRSTRLEN] = "?";
	int port = 0;

	if (getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&ss, &sl) != 0)
		return;
	if (ss.ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
		inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
		port = ntohs(a->sin_port);
		h->local = (ntohl(a->sin_addr.s_addr) >> 24) == 127;
		snprintf(h->address, sizeof h->address, "%s:%d", ip, port);
	} else if (ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
		inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
		port = ntohs(a->sin6_port);
		h->local = IN6_IS_ADDR_LOOPBACK(&a->sin6_addr);
		snprintf(h->address, sizeof h->address, "[%s]:%d", ip, port);
	}
}

int
tidei_http_open(tidei_http **out, struct event_base *base, const tidei_http_opts *o,
		tidei_batch *batch, tide_log *log, const tidei_http_host *host, char *err)
{
	struct evhttp_bound_socket *bs;
	char addr[64];
	int port = 0, rc;
	tidei_http *h;

	*out = NULL;
	if ((rc = split_listen(o->listen, addr, sizeof addr, &port, err)) != TIDE_OK)
		return rc;
	if ((h = calloc(1, sizeof *h)) == NULL)
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	for (uint8_t r = 0; r < R_N; r++)
		for (uint8_t m = 0; m < M_N; m++)
			h->routes[r][m] = (route){ h, r, m };
	h->batch = batch;
	h->log = log;
	h->host = *host;
	h->turn_events = o->turn_events;
	h->max_message = o->max_message;
	if (o->token != NULL && o->token[0] != '\0' && (h->token = strdup(o->token)) == NULL) {
		free(h);
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	}
	if ((h->http = evhttp_new(base)) == NULL) {
		tidei_http_close(h);
		return tidei_err(err, TIDE_ENOMEM, "cannot create the HTTP server");
	}
	/* headers of a few KiB; the body as large as a message may be */
	evhttp_set_max_headers_size(h->http, 64 << 10);
	evhttp_set_max_body_size(h->http, (ev_ssize_t)o->max_message);
	evhttp_set_timeout(h->http, o->timeout_s > 0 ? o->timeout_s : 30);
	evhttp_set_allowed_methods(h->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
						    EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
						    EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
	evhttp_set_gencb(h->http, on_request, h);
	if ((bs = evhttp_bind_socket_with_handle(h->http, addr, (ev_uint16_t)port)) == NULL) {
		tidei_http_close(h);
		return tidei_err(err, TIDE_ESOCKET, "http: cannot listen on %s port %d", addr,
				 port);
	}
	snprintf(h->address, sizeof h->address, "%s:%d", addr, port);
	bound_address(h, bs);
	{
		struct timeval every = { STREAM_BEAT_S, 0 };
		if ((h->beat = event_new(base, -1, EV_PERSIST, beat, h)) == NULL ||
		    event_add(h->beat, &every) != 0) {
			tidei_http_close(h);
			return tidei_err(err, TIDE_ENOMEM,
					 "cannot register an event with the loop");
		}
	}
	if (log != NULL) {
		tide_log_stat st;
		if (tide_log_stat_get(log, &st) == TIDE_OK)
			h->end = st.last_seq;
	}
	*out = h;
	return TIDE_OK;
}

void
tidei_http_close(tidei_http *h)
{
	if (h == NULL)
		return;
	/* streams end cleanly: their clients see the end, not an error */
	while (h->streams != NULL) {
		stream *s = h->streams;
		struct evhttp_connection *c = evhttp_request_get_connection(s->req);
		if (c != NULL)
			evhttp_connection_set_closecb(c, NULL, NULL);
		evhttp_send_reply_end(s->req);
		stream_free(s);
	}
	if (h->beat != NULL)
		event_free(h->beat);
	if (h->http != NULL)
		evhttp_free(h->http);
	free(h->token);
	tidei_buf_free(&h->body);
	tidei_buf_free(&h->reply);
	free(h);
}

void
tidei_http_pause(tidei_http *h, int paused)
{
	if (h != NULL)
		h->paused = paused;
}

const char *
tidei_http_address(const tidei_http *h)
{
	return h->address;
}

int
tidei_http_local(const tidei_http *h)
{
	return h->local;
}

void
tidei_http_stats_get(const tidei_http *h, tidei_http_stats *st)
{
	*st = h->stats;
}
