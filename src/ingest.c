/*
 * ingest.c - nanomsg sockets joined to the event loop.
 *
 * Each receiving socket's NN_RCVFD is watched by libevent; the callback
 * drains the socket with NN_DONTWAIT until it is empty or the turn's batch
 * is full, parses every message into the batch, and tells the engine.
 * nanomsg's notification descriptor stays readable while messages remain,
 * so stopping early loses nothing: the next loop turn comes back.
 *
 * The REP socket is raw (AF_SP_RAW): requests from many clients are read
 * in one turn and each is answered after the group commit, with the
 * routing header nanomsg handed over on receipt.
 *
 * Sizes: a message larger than max_message is refused, with an answer on
 * REP and a log line for PULL, as long as nanomsg lets it through: its own
 * limit is twice ours, beyond which it closes the sender's connection
 * without a word (and holds at most that much per connection while a
 * message arrives).  A turn stops draining once its batch holds
 * max_message bytes, so the input held by the engine is bounded by the
 * configuration, not by how many producers send at once.
 *
 * This module owns the sockets and the wire format of replies; it does
 * not look inside events (batch.c, eparser.c) or touch the log.
 */
#include "config.h"

#include <errno.h>
#include <event2/event.h>
#include <nanomsg/nn.h>
#include <nanomsg/pipeline.h>
#include <nanomsg/pubsub.h>
#include <nanomsg/reqrep.h>
#include <stdlib.h>
#include <string.h>

#include "ingest.h"
#include "request.h"

/* Bigger receive buffers let more messages queue up while the loop is in
 * a commit's fsync, so the next turn commits a bigger batch. */
#define RCVBUF (4 << 20)
#define SNDBUF (4 << 20)
/* Report at most this many rejected PULL events per second. */
#define REJECT_LOG_PER_SEC 10

struct tidei_ingest {
	int pull, rep, pub;
	struct event *pull_ev, *rep_ev;
	tidei_batch *batch;
	tidei_ingest_host host;
	size_t turn_events;
	size_t max_message;
	int paused;
	tidei_buf reply;
	tidei_ingest_stats stats;
	time_t reject_sec;
	int reject_logged;
	void *held, *held_ctl; /* a REP publish read while the batch was full */
	size_t held_len;
};

static int
nn_fail(char *err, const char *what, const char *url)
{
	int e = nn_errno(); /* save it before anything else can overwrite it */

	return tidei_err(err, TIDE_ESOCKET, "cannot %s %s: %s", what, url, nn_strerror(e));
}

static int
open_socket(int *out, int domain, int proto, const char *url, size_t max_message, char *err)
{
	int s = nn_socket(domain, proto);
	int rcvbuf = RCVBUF, sndbuf = SNDBUF, linger = 0;
	/* nanomsg's limit is twice ours, so that most oversized messages reach
	 * us and get a clear refusal */
	int maxsz = max_message > INT32_MAX / 2 ? INT32_MAX : (int)max_message * 2;

	if (s < 0)
		return nn_fail(err, "create a socket for", url);
	nn_setsockopt(s, NN_SOL_SOCKET, NN_RCVBUF, &rcvbuf, sizeof rcvbuf);
	nn_setsockopt(s, NN_SOL_SOCKET, NN_SNDBUF, &sndbuf, sizeof sndbuf);
	nn_setsockopt(s, NN_SOL_SOCKET, NN_RCVMAXSIZE, &maxsz, sizeof maxsz);
	nn_setsockopt(s, NN_SOL_SOCKET, NN_LINGER, &linger, sizeof linger);
	if (nn_bind(s, url) < 0) {
		int rc = nn_fail(err, "bind", url);
		nn_close(s);
		return rc;
	}
	*out = s;
	return TIDE_OK;
}

/* 1 if @p url can only be reached from this machine: ipc:// and inproc://,
 * or tcp:// (and ws://) bound to a loopback address.  nanomsg writes a
 * bound tcp address as [interface;]host:port, with "*" for every
 * interface. */
int
tidei_ingest_local(const char *url)
{
	const char *host = strstr(url, "://"), *semi, *end;
	size_t n;

	if (strncmp(url, "tcp://", 6) != 0 && strncmp(url, "ws://", 5) != 0)
		return 1;
	host += 3;
	if ((semi = strchr(host, ';')) != NULL)
		host = semi + 1;
	if (*host == '[') { /* [v6]:port */
		end = strchr(host, ']');
		return end != NULL && (size_t)(end - host) == 4 && memcmp(host, "[::1", 4) == 0;
	}
	end = strrchr(host, ':');
	n = end ? (size_t)(end - host) : strlen(host);
	if (n == 9 && memcmp(host, "localhost", 9) == 0)
		return 1;
	if (n < 4 || memcmp(host, "127.", 4) != 0)
		return 0;
	return strspn(host, "0123456789.") == n; /* 127.x.y.z, not a name */
}

void
tidei_ingest_tick(tidei_ingest *in)
{
	/* A flood of bad events is summarised, not logged line by line. */
	if (in->reject_logged > REJECT_LOG_PER_SEC)
		in->host.log(in->host.ud, TIDE_LOG_WARN,
			     "%d more rejected events were not logged (%llu rejected since start)",
			     in->reject_logged - REJECT_LOG_PER_SEC,
			     (unsigned long long)in->stats.rejected);
	in->reject_logged = 0;
}

static void
log_rejects(tidei_ingest *in, size_t first, const char *origin)
{
	const tidei_batch *b = in->batch;
	time_t now = time(NULL);

	for (size_t k = first; k < b->n; k++) {
		const char *e = tidei_batch_error(b, &b->items[k]);
		if (e == NULL)
			continue;
		in->stats.rejected++;
		if (now != in->reject_sec) {
			tidei_ingest_tick(in);
			in->reject_sec = now;
		}
		if (in->reject_logged++ < REJECT_LOG_PER_SEC)
			in->host.log(in->host.ud, TIDE_LOG_WARN, "rejected event from %s: %s",
				     origin, e);
	}
}

/* The turn's batch has taken what it may: the rest waits in nanomsg. */
static int
batch_full(const tidei_ingest *in)
{
	return in->batch->n >= in->turn_events || in->batch->arena.len >= in->max_message;
}

/* A message with too many invalid events is refused whole. */
static void
refuse_invalid(tidei_ingest *in, const char *origin, size_t n)
{
	in->stats.rejected += in->batch->refused;
	in->host.log(in->host.ud, TIDE_LOG_WARN,
		     "%s: a message of %zu bytes was refused whole: more than %d of its events "
		     "are invalid; nothing of it was stored",
		     origin, n, TIDEI_MAX_REFUSED);
}

static void
refuse_size(tidei_ingest *in, const char *origin, size_t n)
{
	char got[32], lim[32];

	tidei_fmt_size(got, sizeof got, n);
	tidei_fmt_size(lim, sizeof lim, in->max_message);
	in->stats.rejected++;
	in->stats.too_large++;
	in->host.log(in->host.ud, TIDE_LOG_WARN,
		     "%s: a message of %s was refused: over the max_message_size limit of %s "
		     "(nothing in it was stored)",
		     origin, got, lim);
}

static void
on_pull(evutil_socket_t fd, short what, void *arg)
{
	tidei_ingest *in = arg;
	int got = 0;

	(void)fd;
	(void)what;
	while (!in->paused && !batch_full(in)) {
		void *msg = NULL;
		int n = nn_recv(in->pull, &msg, NN_MSG, NN_DONTWAIT);
		size_t first = in->batch->n;
		long added;

		if (n < 0) {
			int e = nn_errno();
			if (e == EINTR)
				continue;
			if (e != EAGAIN)
				in->host.log(in->host.ud, TIDE_LOG_ERROR, "pull: %s",
					     nn_strerror(e));
			break;
		}
		in->stats.messages++;
		in->stats.pull++;
		if ((size_t)n > in->max_message)
			refuse_size(in, "pull", (size_t)n);
		else if ((added = tidei_batch_add(in->batch, msg, (size_t)n)) ==
			 TIDEI_BATCH_REFUSED)
			refuse_invalid(in, "pull", (size_t)n);
		else if (added < 0)
			in->host.log(in->host.ud, TIDE_LOG_ERROR,
				     "pull: out of memory, a message of %d bytes was dropped", n);
		else
			log_rejects(in, first, "pull");
		nn_freemsg(msg);
		got = 1;
	}
	if (got)
		in->host.input(in->host.ud);
}

/* Send a reply to the requester identified by @p ctl (a raw REP header,
 * whose ownership passes to nanomsg). */
static void
send_reply(tidei_ingest *in, void *ctl, const tidei_buf *b)
{
	struct nn_iovec iov;
	struct nn_msghdr hdr;

	iov.iov_base = b->p ? (void *)b->p : (void *)"";
	iov.iov_len = b->len;
	memset(&hdr, 0, sizeof hdr);
	hdr.msg_iov = &iov;
	hdr.msg_iovlen = 1;
	hdr.msg_control = &ctl;
	hdr.msg_controllen = NN_MSG;
	/* A raw REP socket does not block: a reply to a client that went away
	 * is dropped by nanomsg. */
	if (nn_sendmsg(in->rep, &hdr, NN_DONTWAIT) < 0) {
		int e = nn_errno();
		nn_freemsg(ctl);
		in->host.log(in->host.ud, TIDE_LOG_WARN, "rep: cannot send a reply: %s",
			     nn_strerror(e));
	}
}

void
tidei_ingest_reply(tidei_ingest *in, void *ctl, const tidei_buf *reply)
{
	send_reply(in, ctl, reply);
}

/* After the commit: answer one request, one JSON line per event. */
static void
reply(void *ud, void *ctx, const tidei_batch *b, size_t first, size_t count)
{
	tidei_ingest *in = ud;
	void *ctl = ctx;

	tidei_buf_reset(&in->reply);
	tidei_batch_reply(b, first, count, &in->reply);
	if (in->reply.failed) {
		tidei_buf_reset(&in->reply);
		tidei_buf_puts(&in->reply, "{\"ok\":false,\"error\":\"out of memory\"}");
	}
	send_reply(in, ctl, &in->reply);
}

/* Parse one REP publish into the batch; its reply waits for the commit. */
static int
take_request(tidei_ingest *in, void *body, size_t n, void *ctl)
{
	size_t first = in->batch->n;
	long added = tidei_batch_add(in->batch, body, n);

	nn_freemsg(body);
	if (added == TIDEI_BATCH_REFUSED) {
		refuse_invalid(in, "rep", n);
		tidei_buf_reset(&in->reply);
		tidei_buf_puts(&in->reply, TIDEI_REFUSED_REPLY);
		send_reply(in, ctl, &in->reply);
		return 0;
	}
	if (added < 0 || tidei_batch_wait(in->batch, first, (size_t)added, reply, in, ctl) != 0) {
		/* Answer at once rather than leave the client waiting. */
		tidei_buf_reset(&in->reply);
		tidei_buf_puts(&in->reply, "{\"ok\":false,\"error\":\"out of memory\"}");
		send_reply(in, ctl, &in->reply);
		tidei_batch_truncate(in->batch, first); /* drop what was parsed */
		return 0;
	}
	return 1;
}

/* Requests to the engine are answered even while the batch is full (a
 * stream of PUSHed events must not starve queries); the first publish
 * found then waits in in->held for the next turn. */
static void
on_rep(evutil_socket_t fd, short what, void *arg)
{
	tidei_ingest *in = arg;
	int got = 0;

	(void)fd;
	(void)what;
	if (in->held != NULL) {
		if (in->paused || batch_full(in))
			return;
		got = take_request(in, in->held, in->held_len, in->held_ctl);
		in->held = in->held_ctl = NULL;
	}
	for (;;) {
		void *body = NULL, *ctl = NULL;
		struct nn_iovec iov = { &body, NN_MSG };
		struct nn_msghdr hdr;
		int n;

		memset(&hdr, 0, sizeof hdr);
		hdr.msg_iov = &iov;
		hdr.msg_iovlen = 1;
		hdr.msg_control = &ctl;
		hdr.msg_controllen = NN_MSG;
		n = nn_recvmsg(in->rep, &hdr, NN_DONTWAIT);
		if (n < 0) {
			int e = nn_errno();
			if (e == EINTR)
				continue;
			if (e != EAGAIN)
				in->host.log(in->host.ud, TIDE_LOG_ERROR, "rep: %s",
					     nn_strerror(e));
			break;
		}
		in->stats.messages++;
		in->stats.rep++;
		if (in->host.control != NULL && tidei_request_is(body, (size_t)n)) {
			int kept;
			in->stats.requests++;
			tidei_buf_reset(&in->reply);
			kept = in->host.control(in->host.ud, body, (size_t)n, &in->reply, ctl);
			nn_freemsg(body);
			if (!kept)
				send_reply(in, ctl, &in->reply);
			continue;
		}
		if ((size_t)n > in->max_message) {
			char size[32], lim[32];
			refuse_size(in, "rep", (size_t)n);
			tidei_fmt_size(size, sizeof size, (size_t)n);
			tidei_fmt_size(lim, sizeof lim, in->max_message);
			nn_freemsg(body);
			tidei_buf_reset(&in->reply);
			tidei_buf_printf(
				&in->reply,
				"{\"ok\":false,\"error\":\"message of %s is over the "
				"max_message_size limit of %s; nothing in it was stored\"}",
				size, lim);
			send_reply(in, ctl, &in->reply);
			continue;
		}
		if (in->paused || batch_full(in)) {
			in->held = body;
			in->held_len = (size_t)n;
			in->held_ctl = ctl;
			break;
		}
		got |= take_request(in, body, (size_t)n, ctl);
	}
	if (got)
		in->host.input(in->host.ud);
}

static int
watch(tidei_ingest *in, struct event_base *base, int s, event_callback_fn cb, struct event **ev,
      char *err)
{
	int fd;
	size_t sz = sizeof fd;

	if (nn_getsockopt(s, NN_SOL_SOCKET, NN_RCVFD, &fd, &sz) < 0)
		return nn_fail(err, "watch", "a socket");
	*ev = event_new(base, fd, EV_READ | EV_PERSIST, cb, in);
	if (*ev == NULL || event_add(*ev, NULL) != 0)
		return tidei_err(err, TIDE_ENOMEM, "cannot register a socket with the event loop");
	return TIDE_OK;
}

int
tidei_ingest_open(tidei_ingest **out, struct event_base *base, const tidei_ingest_opts *o,
		  tidei_batch *batch, const tidei_ingest_host *host, char *err)
{
	tidei_ingest *in = calloc(1, sizeof *in);
	int rc = TIDE_OK;

	*out = NULL;
	if (in == NULL)
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	in->pull = in->rep = in->pub = -1;
	in->batch = batch;
	in->host = *host;
	in->turn_events = o->turn_events;
	in->max_message = o->max_message;
	if (o->pull && *o->pull &&
	    ((rc = open_socket(&in->pull, AF_SP, NN_PULL, o->pull, o->max_message, err)) ||
	     (rc = watch(in, base, in->pull, on_pull, &in->pull_ev, err))))
		goto fail;
	if (o->rep && *o->rep &&
	    ((rc = open_socket(&in->rep, AF_SP_RAW, NN_REP, o->rep, o->max_message, err)) ||
	     (rc = watch(in, base, in->rep, on_rep, &in->rep_ev, err))))
		goto fail;
	if (o->pub && *o->pub &&
	    (rc = open_socket(&in->pub, AF_SP, NN_PUB, o->pub, o->max_message, err)))
		goto fail;
	*out = in;
	return TIDE_OK;
fail:
	tidei_ingest_close(in);
	return rc;
}

void
tidei_ingest_close(tidei_ingest *in)
{
	if (in == NULL)
		return;
	if (in->pull_ev)
		event_free(in->pull_ev);
	if (in->rep_ev)
		event_free(in->rep_ev);
	if (in->pull >= 0)
		nn_close(in->pull);
	if (in->held != NULL) {
		nn_freemsg(in->held);
		nn_freemsg(in->held_ctl);
	}
	if (in->rep >= 0)
		nn_close(in->rep);
	if (in->pub >= 0)
		nn_close(in->pub);
	tidei_buf_free(&in->reply);
	free(in);
}

void
tidei_ingest_pause(tidei_ingest *in, int paused)
{
	in->paused = paused;
	if (!paused) {
		/* Messages may have arrived meanwhile; the descriptors are level
		 * triggered, so re-arming is enough. */
		if (in->pull_ev)
			event_active(in->pull_ev, EV_READ, 0);
		if (in->rep_ev)
			event_active(in->rep_ev, EV_READ, 0);
	}
}

void
tidei_ingest_drained(tidei_ingest *in)
{
	/* the socket may have nothing more to read, so it would not wake us */
	if (in->held != NULL && in->rep_ev != NULL)
		event_active(in->rep_ev, EV_READ, 0);
}

int
tidei_ingest_has_subscribers(tidei_ingest *in)
{
	return in->pub >= 0 && nn_get_statistic(in->pub, NN_STAT_CURRENT_CONNECTIONS) > 0;
}

void
tidei_ingest_publish(tidei_ingest *in, const char *type, size_t tlen, const char *json, size_t jlen)
{
	struct nn_iovec iov[3] = { { (void *)type, tlen },
				   { (void *)"\t", 1 },
				   { (void *)json, jlen } };
	struct nn_msghdr hdr;

	memset(&hdr, 0, sizeof hdr);
	hdr.msg_iov = iov;
	hdr.msg_iovlen = 3;
	/* PUB never blocks; a slow subscriber misses messages. */
	nn_sendmsg(in->pub, &hdr, NN_DONTWAIT);
}

void
tidei_ingest_stats_get(const tidei_ingest *in, tidei_ingest_stats *st)
{
	*st = in->stats;
}
