/*
 * cmd_publish.c - `tide publish`: send events to a running engine.
 *
 * One event from flags, or many from stdin (NDJSON, a JSON array, or one
 * JSON document).  Events travel in batches of up to --batch per message.
 * By default the socket is a raw REQ socket, so up to --window batches are
 * in flight at once and each reply (one JSON line per event, sent after
 * the commit) is matched to its batch by request id; rejected events are
 * reported with their input line.  --push sends through PULL without
 * waiting for anything.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <nanomsg/nn.h>
#include <nanomsg/pipeline.h>
#include <nanomsg/reqrep.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

#include "cli.h"
#include "tide.h"

static const char usage_text[] =
	"usage: tide publish [options]                  (events as NDJSON on stdin)\n"
	"       tide publish --type TYPE [options]      (one event from flags)\n"
	"\n"
	"Send events to a running engine.  Stdin may hold NDJSON (one event per\n"
	"line), a JSON array of events, or one JSON document.  Each event is\n"
	"acknowledged after its commit; a summary goes to stderr.\n"
	"\n"
	"one event from flags:\n"
	"  -t, --type TYPE         event type (required in this form)\n"
	"      --source SRC        source (default tide-cli)\n"
	"      --id ID             id (default: a UUIDv7, which sorts by time)\n"
	"  -s, --subject SUBJECT   subject, the stream key\n"
	"      --time TIME         RFC 3339 time, or 'now'\n"
	"      --payload JSON      the event's data, as JSON text\n"
	"  -e, --ext NAME=VALUE    a string extension attribute (repeatable)\n"
	"      --expect-version N  append only if the subject's stream is at version N\n"
	"                          (0: the stream must not exist yet); otherwise the\n"
	"                          event is refused with the current version\n"
	"\n"
	"sending:\n"
	"      --push              fire and forget through the PULL endpoint\n"
	"      --batch N           events per message (default 1000)\n"
	"      --window N          acknowledged messages in flight (default 8)\n"
	"      --timeout SEC       wait this long for an acknowledgement (default 30)\n"
	"      --acks              print every acknowledgement (one JSON line) to stdout\n"
	"      --wait              then wait until every consumer and projection has\n"
	"                          handled the events, and what the consumers emitted\n"
	"                          meanwhile (read from the data directory)\n"
	"      --wait-timeout SEC  give up waiting after SEC seconds (default 60)\n"
	"  -q, --quiet             no summary on stderr\n"
	"\n"
	"endpoints:\n"
	"  -d, --data DIR          find the engine through DIR/endpoints (default ./tide-data)\n"
	"      --rep URL           REP endpoint (acknowledged)\n"
	"      --pull URL          PULL endpoint (--push)\n"
	"  -h, --help              show this help\n"
	"\n"
	"exit status: 0 all events stored (or duplicates), 1 some were rejected (or\n"
	"--wait gave up, or found a projection stopped by a failing handler),\n"
	"2 usage error, 3 the engine could not be reached.\n";

#define MAX_MESSAGE (1u << 20)

/* A batch in flight. */
typedef struct request {
	uint32_t id;
	long *lines; /* input line of each event */
	size_t n;
	int used;
} request;

typedef struct pub {
	int sock;
	int push;
	int acks, quiet;
	size_t batch, window;
	double timeout;
	const char *url;
	request *reqs;
	size_t inflight;
	uint32_t next_id;
	/* the message being built */
	char *msg;
	size_t mlen, mcap;
	long *mlines;
	size_t mn;
	unsigned long long max_message; /* the engine's limit, 0 if not known */
	/* totals */
	unsigned long long stored, duplicates, rejected, sent;
	uint64_t max_seq; /* the largest seq acknowledged */
	int unreachable;
	int progress;       /* stderr is a terminal: a line that counts */
	double progress_at; /* when it was last written */
} pub;

/* Every half second on a terminal, where large inputs are: the counts so
 * far, on one line that the summary replaces. */
static void
show_progress(pub *p, int last)
{
	struct timespec ts;
	double now;

	if (!p->progress)
		return;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	now = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
	if (last) {
		if (p->progress_at > 0)
			fputs("\r\033[K", stderr);
		return;
	}
	if (now - p->progress_at < 0.5)
		return;
	p->progress_at = now;
	if (p->push)
		fprintf(stderr, "\rtide publish: %llu sent\033[K", p->sent);
	else
		fprintf(stderr,
			"\rtide publish: %llu sent, %llu stored, %llu duplicates, %llu "
			"rejected\033[K",
			p->sent, p->stored, p->duplicates, p->rejected);
	fflush(stderr);
}

/* Bytes this process has written to sockets that the peers have not read
 * (Unix sockets) or acknowledged (TCP) yet. */
static long
unsent_bytes(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	long total = 0;

	if (d == NULL)
		return 0;
	while ((de = readdir(d)) != NULL) {
		int fd = atoi(de->d_name), n = 0;
		struct stat sb;
		if (fd <= 2 || fstat(fd, &sb) != 0 || !S_ISSOCK(sb.st_mode))
			continue;
		if (ioctl(fd, SIOCOUTQ, &n) == 0 && n > 0)
			total += n;
	}
	closedir(d);
	return total;
}

/* nanomsg drops a PUSH connection's queued messages when the socket
 * closes (NN_LINGER has no effect in nanomsg 1.1), so wait until the
 * kernel has handed everything to the engine before closing.  The queue
 * can look empty for an instant before nanomsg's I/O thread writes the
 * next message, so it must stay empty for a while. */
static void
drain(double timeout)
{
	struct timespec tick = { 0, 5 * 1000000 };
	double waited = 0, empty = 0;

	while (empty < 0.2 && waited < timeout) {
		empty = unsent_bytes() > 0 ? 0 : empty + 0.005;
		nanosleep(&tick, NULL);
		waited += 0.005;
	}
}

static int
msg_add(pub *p, const char *line, size_t n, long lineno)
{
	if (p->mlen + n + 1 > p->mcap) {
		size_t cap = (p->mlen + n + 1) * 2;
		char *m = realloc(p->msg, cap);
		if (m == NULL)
			return -1;
		p->msg = m;
		p->mcap = cap;
	}
	memcpy(p->msg + p->mlen, line, n);
	p->mlen += n;
	p->msg[p->mlen++] = '\n';
	p->mlines[p->mn++] = lineno;
	return 0;
}

static void
put_hdr(unsigned char *data, uint32_t id)
{
	/* nanomsg's SP header in a control message: a size_t length, then the
	 * 32-bit request id, big-endian, with the top bit set. */
	size_t four = 4;

	memcpy(data, &four, sizeof four);
	data += sizeof four;
	id |= 0x80000000u;
	data[0] = (unsigned char)(id >> 24);
	data[1] = (unsigned char)(id >> 16);
	data[2] = (unsigned char)(id >> 8);
	data[3] = (unsigned char)id;
}

static uint32_t
get_hdr(const unsigned char *data)
{
	data += sizeof(size_t);
	return ((uint32_t)data[0] << 24 | (uint32_t)data[1] << 16 | (uint32_t)data[2] << 8 |
		data[3]) &
	       0x7fffffffu;
}

/* A message refused whole (too many invalid events) is answered with one
 * line for all its events: 1 if @p reply is that. */
static int
refused_whole(pub *p, const char *reply, size_t len, const request *r)
{
	char buf[4096], errbuf[128];
	yajl_val v, ok, err;
	int whole = 0;

	if (r->n < 2 || len == 0 || memchr(reply, '\n', len) != NULL || len >= sizeof buf)
		return 0;
	snprintf(buf, sizeof buf, "%.*s", (int)len, reply);
	v = yajl_tree_parse(buf, errbuf, sizeof errbuf);
	ok = yajl_tree_get(v, (const char *[]){ "ok", NULL }, yajl_t_any);
	err = yajl_tree_get(v, (const char *[]){ "error", NULL }, yajl_t_string);
	if (ok != NULL && YAJL_IS_FALSE(ok) && err != NULL) {
		whole = 1;
		p->rejected += r->n;
		if (p->acks)
			printf("%s\n", buf);
		fprintf(stderr, "tide publish: lines %ld to %ld: %s\n", r->lines[0],
			r->lines[r->n - 1], YAJL_GET_STRING(err));
	}
	yajl_tree_free(v);
	return whole;
}

static void
report(pub *p, const char *reply, size_t len, const request *r)
{
	size_t start = 0, k = 0;

	if (refused_whole(p, reply, len, r))
		return;

	while (start < len || (len == 0 && k < r->n)) {
		const char *nl = memchr(reply + start, '\n', len - start);
		size_t end = nl ? (size_t)(nl - reply) : len;
		char buf[4096], errbuf[128];
		yajl_val v, ok, dup, err;
		long line = k < r->n ? r->lines[k] : -1;

		if (len == 0)
			break;
		if (p->acks)
			printf("%.*s\n", (int)(end - start), reply + start);
		snprintf(buf, sizeof buf, "%.*s", (int)(end - start), reply + start);
		v = yajl_tree_parse(buf, errbuf, sizeof errbuf);
		ok = yajl_tree_get(v, (const char *[]){ "ok", NULL }, yajl_t_any);
		dup = yajl_tree_get(v, (const char *[]){ "duplicate", NULL }, yajl_t_any);
		err = yajl_tree_get(v, (const char *[]){ "error", NULL }, yajl_t_string);
		if (ok != NULL && YAJL_IS_TRUE(ok)) {
			yajl_val seq =
				yajl_tree_get(v, (const char *[]){ "seq", NULL }, yajl_t_number);
			if (seq != NULL && YAJL_IS_INTEGER(seq) && YAJL_GET_INTEGER(seq) > 0 &&
			    (uint64_t)YAJL_GET_INTEGER(seq) > p->max_seq)
				p->max_seq = (uint64_t)YAJL_GET_INTEGER(seq);
			if (dup != NULL && YAJL_IS_TRUE(dup))
				p->duplicates++;
			else
				p->stored++;
		} else {
			p->rejected++;
			if (!p->quiet || !p->acks) {
				if (line > 0)
					fprintf(stderr, "tide publish: line %ld: %s\n", line,
						err ? YAJL_GET_STRING(err) : buf);
				else
					fprintf(stderr, "tide publish: %s\n",
						err ? YAJL_GET_STRING(err) : buf);
			}
		}
		yajl_tree_free(v);
		k++;
		start = end + 1;
		if (nl == NULL)
			break;
	}
}

/* Wait for one reply and account for it. */
static int
recv_one(pub *p)
{
	void *body = NULL, *ctl = NULL;
	struct nn_iovec iov = { &body, NN_MSG };
	struct nn_msghdr hdr;
	struct nn_cmsghdr *cm;
	uint32_t id;
	int n;

	memset(&hdr, 0, sizeof hdr);
	hdr.msg_iov = &iov;
	hdr.msg_iovlen = 1;
	hdr.msg_control = &ctl;
	hdr.msg_controllen = NN_MSG;
	n = nn_recvmsg(p->sock, &hdr, 0);
	if (n < 0) {
		int e = nn_errno();
		if (e == ETIMEDOUT)
			cli_error("publish",
				  "no acknowledgement from %s within %g s (is 'tide run' running?)",
				  p->url, p->timeout);
		else
			cli_error("publish", "receiving from %s: %s", p->url, nn_strerror(e));
		p->unreachable = 1;
		return -1;
	}
	cm = NN_CMSG_FIRSTHDR(&hdr);
	id = cm ? get_hdr(NN_CMSG_DATA(cm)) : 0;
	for (size_t k = 0; k < p->window; k++) {
		request *r = &p->reqs[k];
		if (r->used && r->id == id) {
			report(p, body, (size_t)n, r);
			r->used = 0;
			p->inflight--;
			show_progress(p, 0);
			break;
		}
	}
	nn_freemsg(body);
	nn_freemsg(ctl);
	return 0;
}

static int
flush_msg(pub *p)
{
	struct nn_iovec iov;
	struct nn_msghdr hdr;
	unsigned char ctl[64];
	struct nn_cmsghdr *cm;
	request *r = NULL;

	if (p->mn == 0)
		return 0;
	iov.iov_base = p->msg;
	iov.iov_len = p->mlen;
	memset(&hdr, 0, sizeof hdr);
	hdr.msg_iov = &iov;
	hdr.msg_iovlen = 1;
	if (p->push) {
		if (nn_send(p->sock, p->msg, p->mlen, 0) < 0) {
			cli_error("publish", "sending to %s: %s", p->url, nn_strerror(nn_errno()));
			p->unreachable = 1;
			return -1;
		}
		p->sent += p->mn;
		p->mn = p->mlen = 0;
		show_progress(p, 0);
		return 0;
	}
	while (p->inflight >= p->window)
		if (recv_one(p) != 0)
			return -1;
	for (size_t k = 0; k < p->window; k++)
		if (!p->reqs[k].used) {
			r = &p->reqs[k];
			break;
		}
	memset(ctl, 0, sizeof ctl);
	hdr.msg_control = ctl;
	hdr.msg_controllen = NN_CMSG_SPACE(sizeof(size_t) + 4);
	cm = NN_CMSG_FIRSTHDR(&hdr);
	cm->cmsg_level = PROTO_SP;
	cm->cmsg_type = SP_HDR;
	cm->cmsg_len = NN_CMSG_LEN(sizeof(size_t) + 4);
	r->id = p->next_id++ & 0x7fffffffu;
	put_hdr(NN_CMSG_DATA(cm), r->id);
	if (nn_sendmsg(p->sock, &hdr, 0) < 0) {
		int e = nn_errno();
		cli_error("publish", "cannot reach %s: %s", p->url,
			  e == ETIMEDOUT ? "timed out (is 'tide run' running?)" : nn_strerror(e));
		p->unreachable = 1;
		return -1;
	}
	memcpy(r->lines, p->mlines, p->mn * sizeof *p->mlines);
	r->n = p->mn;
	r->used = 1;
	p->inflight++;
	p->sent += p->mn;
	p->mn = p->mlen = 0;
	return 0;
}

static int
add_event(pub *p, const char *text, size_t n, long lineno)
{
	/* the engine would refuse the whole message, or beyond twice its limit
	 * not even answer: say so here, and send the rest */
	if (p->max_message > 0 && n > p->max_message) {
		p->rejected++;
		fprintf(stderr,
			"tide publish: line %ld: an event of %zu bytes is over the engine's "
			"max_message_size of %llu bytes; not sent\n",
			lineno, n, p->max_message);
		return 0;
	}
	if (p->mn > 0 && (p->mn >= p->batch || p->mlen + n + 1 > MAX_MESSAGE))
		if (flush_msg(p) != 0)
			return -1;
	if (msg_add(p, text, n, lineno) != 0) {
		cli_error("publish", "out of memory");
		return -1;
	}
	return 0;
}

/* Stdin: NDJSON line by line, unless it is one document or an array. */
static int
from_stdin(pub *p)
{
	char *line = NULL, *doc = NULL;
	size_t cap = 0, dlen = 0;
	ssize_t n;
	long lineno = 0, first = 0;
	int whole = -1, rc = 0;

	while ((n = getline(&line, &cap, stdin)) >= 0) {
		size_t len = (size_t)n, s = 0;
		lineno++;
		while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			len--;
		while (s < len && (line[s] == ' ' || line[s] == '\t'))
			s++;
		if (s == len)
			continue;
		if (whole < 0) {
			/* An array, or an object that does not close on its own line,
			 * is sent whole: the engine parses documents of any shape. */
			whole = line[s] == '[' || line[len - 1] != '}';
			first = lineno;
		}
		if (whole) {
			char *d = realloc(doc, dlen + len + 2);
			if (d == NULL) {
				cli_error("publish", "out of memory");
				rc = -1;
				break;
			}
			doc = d;
			memcpy(doc + dlen, line, len);
			dlen += len;
			doc[dlen++] = '\n';
			continue;
		}
		if ((rc = add_event(p, line + s, len - s, lineno)) != 0)
			break;
	}
	if (rc == 0 && whole > 0 && dlen > 0) {
		/* One message; replies are per event, not per line. */
		if (flush_msg(p) != 0 || msg_add(p, doc, dlen - 1, -first) != 0)
			rc = -1;
	}
	if (rc == 0)
		rc = flush_msg(p);
	free(line);
	free(doc);
	return rc;
}

/* A UUIDv7 (RFC 9562): the Unix time in ms, then random bits, so that
 * the ids of events published one after the other sort in that order,
 * which keeps the log's duplicate index cheap. */
static void
uuid7(char out[37])
{
	unsigned char b[16];
	struct timespec ts;
	uint64_t ms;
	ssize_t got = getrandom(b, sizeof b, 0);

	clock_gettime(CLOCK_REALTIME, &ts);
	if (got != (ssize_t)sizeof b) {
		/* getrandom cannot fail for 16 bytes after boot; be safe anyway */
		for (int i = 0; i < 16; i++)
			b[i] = (unsigned char)((ts.tv_nsec >> (i % 8)) ^ (getpid() >> (i % 4)) ^ i);
	}
	ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
	for (int i = 0; i < 6; i++)
		b[i] = (unsigned char)(ms >> (40 - 8 * i));
	b[6] = (b[6] & 0x0f) | 0x70;
	b[8] = (b[8] & 0x3f) | 0x80;
	snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12],
		 b[13], b[14], b[15]);
}

/* Build one event from flags with yajl's generator (correct escaping). */
static int
from_flags(pub *p, const char *type, const char *source, const char *id, const char *subject,
	   const char *when, const char *data, char **ext, size_t next, long long expect)
{
	yajl_gen g = yajl_gen_alloc(NULL);
	const unsigned char *out;
	size_t len;
	char uuid[37], now[40];
	int rc;

#define KV(k, v) \
	do { \
		yajl_gen_string(g, (const unsigned char *)(k), strlen(k)); \
		yajl_gen_string(g, (const unsigned char *)(v), strlen(v)); \
	} while (0)
	if (g == NULL)
		return -1;
	if (id == NULL) {
		uuid7(uuid);
		id = uuid;
	}
	if (when != NULL && strcmp(when, "now") == 0) {
		struct timespec ts;
		struct tm tm;
		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		strftime(now, 24, "%Y-%m-%dT%H:%M:%S", &tm);
		snprintf(now + 19, sizeof now - 19, ".%06ldZ", ts.tv_nsec / 1000);
		when = now;
	}
	yajl_gen_map_open(g);
	KV("specversion", "1.0");
	KV("id", id);
	KV("source", source);
	KV("type", type);
	if (subject)
		KV("subject", subject);
	if (when)
		KV("time", when);
	if (expect >= 0) {
		yajl_gen_string(g, (const unsigned char *)"expectedversion", 15);
		yajl_gen_integer(g, expect);
	}
	for (size_t k = 0; k < next; k++) {
		char *eq = strchr(ext[k], '=');
		yajl_gen_string(g, (const unsigned char *)ext[k], (size_t)(eq - ext[k]));
		yajl_gen_string(g, (const unsigned char *)eq + 1, strlen(eq + 1));
	}
	yajl_gen_map_close(g);
	yajl_gen_get_buf(g, &out, &len);
	/* --payload is spliced in as given: the engine validates it */
	if (data != NULL) {
		char *ev = malloc(len + strlen(data) + 16);
		if (ev == NULL) {
			yajl_gen_free(g);
			return -1;
		}
		snprintf(ev, len + strlen(data) + 16, "%.*s,\"data\":%s}", (int)len - 1, out, data);
		rc = add_event(p, ev, strlen(ev), 0);
		free(ev);
	} else {
		rc = add_event(p, (const char *)out, len, 0);
	}
	yajl_gen_free(g);
#undef KV
	return rc != 0 ? -1 : flush_msg(p);
}

/* ------------------------------------------------------------------------
 * --wait: until the consumers and projections have passed what was sent
 * ------------------------------------------------------------------------ */

typedef struct progress {
	uint64_t low;      /* the lowest position seen */
	char who[160];     /* whose it is */
	char faulted[512]; /* a projection stopped by a failing handler */
} progress;

static void
on_checkpoint(void *ud, const char *name, uint64_t seq)
{
	progress *pr = ud;

	if (seq < pr->low) {
		pr->low = seq;
		snprintf(pr->who, sizeof pr->who, "consumer %s", name);
	}
}

static void
on_projection(void *ud, const tide_projection_info *pi)
{
	progress *pr = ud;

	if (pi->faulted) {
		snprintf(pr->faulted, sizeof pr->faulted, "projection %s stopped at event %llu: %s",
			 pi->name, (unsigned long long)pi->fault_seq, pi->error ? pi->error : "");
		return;
	}
	if (pi->live_seq < pr->low) {
		pr->low = pi->live_seq;
		snprintf(pr->who, sizeof pr->who, "projection %s", pi->name);
	}
}

/* Wait until every consumer and projection of the log in @p dir is at
 * @p target or past it; then, since what they emitted meanwhile may
 * concern the others, at the log's end as it was then, until it stops
 * moving.  CLI_OK, or CLI_FAIL with the reason on stderr. */
static int
wait_settled(const char *dir, uint64_t target, double timeout, int quiet)
{
	struct timespec tick = { 0, 20 * 1000000 };
	double waited = 0;
	tide_log *log;
	int rc;

	if ((rc = tide_log_open(&log, dir)) != TIDE_OK) {
		cli_error("publish", "--wait cannot read %s: %s", dir, tide_errmsg());
		return CLI_FAIL;
	}
	for (;;) {
		progress pr = { UINT64_MAX, "", "" };
		tide_log_stat st;
		if (tide_log_consumers(log, on_checkpoint, &pr) != TIDE_OK ||
		    tide_log_projections(log, on_projection, &pr) != TIDE_OK ||
		    tide_log_stat_get(log, &st) != TIDE_OK) {
			cli_error("publish", "--wait cannot read %s: %s", dir, tide_errmsg());
			rc = CLI_FAIL;
			break;
		}
		if (pr.faulted[0]) {
			cli_error("publish", "--wait: %s", pr.faulted);
			rc = CLI_FAIL;
			break;
		}
		if (pr.low >= target) {
			if (st.last_seq <= target) {
				rc = CLI_OK;
				break;
			}
			target = st.last_seq; /* what they emitted meanwhile */
			continue;
		}
		if (waited >= timeout) {
			cli_error("publish",
				  "--wait gave up after %.0f s: %s is at event %llu, not yet at "
				  "%llu",
				  timeout, pr.who, (unsigned long long)pr.low,
				  (unsigned long long)target);
			rc = CLI_FAIL;
			break;
		}
		nanosleep(&tick, NULL);
		waited += 0.02;
	}
	tide_log_close(log);
	if (rc == CLI_OK && !quiet)
		fprintf(stderr, "tide publish: handled by every consumer and projection\n");
	return rc;
}

int
cmd_publish(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "type", required_argument, NULL, 't' },
		{ "source", required_argument, NULL, 'S' },
		{ "id", required_argument, NULL, 'I' },
		{ "subject", required_argument, NULL, 's' },
		{ "time", required_argument, NULL, 'T' },
		{ "payload", required_argument, NULL, 'D' },
		{ "ext", required_argument, NULL, 'e' },
		{ "expect-version", required_argument, NULL, 'V' },
		{ "push", no_argument, NULL, 'p' },
		{ "batch", required_argument, NULL, 'b' },
		{ "window", required_argument, NULL, 'w' },
		{ "timeout", required_argument, NULL, 'o' },
		{ "acks", no_argument, NULL, 'a' },
		{ "wait", no_argument, NULL, 'W' },
		{ "wait-timeout", required_argument, NULL, 'X' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "data", required_argument, NULL, 'd' },
		{ "rep", required_argument, NULL, 'R' },
		{ "pull", required_argument, NULL, 'P' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	cli_client cl = { "./tide-data", NULL, NULL, NULL, 30 };
	cli_endpoints ep;
	long long expect = -1;
	const char *type = NULL, *source = "tide-cli", *id = NULL, *subject = NULL, *when = NULL,
		   *data = NULL;
	char **ext = NULL;
	size_t next = 0;
	pub p;
	int c, ms, rc = CLI_FAIL, wait = 0;
	double wait_timeout = 60;

	memset(&p, 0, sizeof p);
	p.batch = 1000;
	p.window = 8;
	optind = 1;
	while ((c = getopt_long(argc, argv, "t:s:e:d:qh", longopts, NULL)) != -1) {
		switch (c) {
		case 't': type = optarg; break;
		case 'S': source = optarg; break;
		case 'I': id = optarg; break;
		case 's': subject = optarg; break;
		case 'T': when = optarg; break;
		case 'D': data = optarg; break;
		case 'e': {
			char **v;
			if (strchr(optarg, '=') == NULL || optarg[0] == '=') {
				cli_error("publish", "--ext takes NAME=VALUE, not '%s'", optarg);
				free(ext);
				return CLI_USAGE;
			}
			if ((v = realloc(ext, (next + 1) * sizeof *v)) == NULL) {
				free(ext);
				return CLI_FAIL;
			}
			ext = v;
			ext[next++] = optarg;
			break;
		}
		case 'V': {
			char *end;
			expect = strtoll(optarg, &end, 10);
			if (*end != '\0' || expect < 0 || optarg[0] == '\0') {
				cli_error("publish",
					  "--expect-version takes a version (0 or more), not '%s'",
					  optarg);
				free(ext);
				return CLI_USAGE;
			}
			break;
		}
		case 'p': p.push = 1; break;
		case 'b': p.batch = strtoul(optarg, NULL, 10); break;
		case 'w': p.window = strtoul(optarg, NULL, 10); break;
		case 'o': cl.timeout = cli_seconds(optarg); break;
		case 'a': p.acks = 1; break;
		case 'W': wait = 1; break;
		case 'X': wait_timeout = cli_seconds(optarg); break;
		case 'q': p.quiet = 1; break;
		case 'd': cl.data = optarg; break;
		case 'R': cl.rep = optarg; break;
		case 'P': cl.pull = optarg; break;
		case 'h':
			fputs(usage_text, stdout);
			free(ext);
			return CLI_OK;
		default:
			cli_try_help("publish");
			free(ext);
			return CLI_USAGE;
		}
	}
	if (p.batch == 0 || p.batch > 100000 || p.window == 0 || p.window > 1024 ||
	    cl.timeout < 0) {
		cli_error("publish", "--batch must be 1..100000, --window 1..1024, --timeout >= 0");
		free(ext);
		return CLI_USAGE;
	}
	if (wait && (p.push || wait_timeout < 0)) {
		cli_error("publish", p.push ? "--wait needs acknowledgements: not with --push"
					    : "--wait-timeout must be a number of seconds");
		free(ext);
		return CLI_USAGE;
	}
	if (expect >= 0 && subject == NULL) {
		cli_error("publish", "--expect-version needs --type and --subject");
		free(ext);
		return CLI_USAGE;
	}
	if (optind < argc || (type == NULL && (subject || id || data || when || next))) {
		cli_error("publish",
			  optind < argc ? "unexpected argument '%s'"
					: "event attributes need --type%s",
			  optind < argc ? argv[optind] : "");
		free(ext);
		return CLI_USAGE;
	}
	if (cli_resolve("publish", &cl, p.push ? "pull" : "rep", &ep) != 0) {
		free(ext);
		return CLI_UNAVAILABLE;
	}
	p.url = p.push ? ep.pull : ep.rep;
	p.timeout = cl.timeout;
	p.max_message = ep.max_message;
	p.reqs = calloc(p.window, sizeof *p.reqs);
	p.mlines = calloc(p.batch, sizeof *p.mlines);
	for (size_t k = 0; p.reqs && k < p.window; k++)
		if ((p.reqs[k].lines = calloc(p.batch, sizeof(long))) == NULL)
			p.reqs = NULL;
	p.sock = p.push ? nn_socket(AF_SP, NN_PUSH) : nn_socket(AF_SP_RAW, NN_REQ);
	if (p.reqs == NULL || p.mlines == NULL || p.sock < 0) {
		cli_error("publish", "cannot set up: %s",
			  p.sock < 0 ? nn_strerror(nn_errno()) : "out of memory");
		goto out;
	}
	ms = (int)(cl.timeout * 1000);
	nn_setsockopt(p.sock, NN_SOL_SOCKET, NN_SNDTIMEO, &ms, sizeof ms);
	nn_setsockopt(p.sock, NN_SOL_SOCKET, NN_RCVTIMEO, &ms, sizeof ms);
	{
		int big = 16 << 20;
		nn_setsockopt(p.sock, NN_SOL_SOCKET, NN_RCVMAXSIZE, &big, sizeof big);
	}
	if (nn_connect(p.sock, p.url) < 0) {
		cli_error("publish", "cannot connect to %s: %s", p.url, nn_strerror(nn_errno()));
		rc = CLI_UNAVAILABLE;
		goto out;
	}
	if (type != NULL)
		rc = from_flags(&p, type, source, id, subject, when, data, ext, next, expect);
	else {
		/* on a terminal a count that moves; in a pipe or a log, only the
		 * summary */
		p.progress = !p.quiet && isatty(STDERR_FILENO);
		rc = from_stdin(&p);
	}
	while (rc == 0 && p.inflight > 0)
		rc = recv_one(&p);
	if (p.push)
		drain(cl.timeout);
	show_progress(&p, 1);
	if (!p.quiet) {
		if (p.push)
			fprintf(stderr,
				"tide publish: sent %llu events (not acknowledged: --push)\n",
				p.sent);
		else
			fprintf(stderr,
				"tide publish: %llu stored, %llu duplicates, %llu rejected\n",
				p.stored, p.duplicates, p.rejected);
	}
	if (p.unreachable)
		rc = CLI_UNAVAILABLE;
	else if (rc != 0)
		rc = CLI_FAIL;
	else
		rc = p.rejected ? CLI_FAIL : CLI_OK;
	if (wait && !p.unreachable && p.max_seq > 0 &&
	    wait_settled(cl.data, p.max_seq, wait_timeout, p.quiet) != CLI_OK)
		rc = CLI_FAIL;
out:
	if (p.sock >= 0)
		nn_close(p.sock);
	for (size_t k = 0; p.reqs && k < p.window; k++)
		free(p.reqs[k].lines);
	free(p.reqs);
	free(p.mlines);
	free(p.msg);
	free(ext);
	return rc;
}
