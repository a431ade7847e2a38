/*
 * test_engine.c - integration: a real `tide run` process, driven over
 * real nanomsg sockets, its log read back with `tide log` or in-process
 * through tide.h (tide_log_open and cursors, safe while the daemon runs).
 *
 * Most tests load tests/lua/mirror.lua, whose consumer answers every
 * "in.x" event with exactly one "out.x" child.  check_children() then
 * proves the engine's central promises from the log alone: seqs gapless
 * from 1, every (source, id) stored once, every input handled exactly once
 * (one child, causationid = its id, correlationid set, later seq).
 *
 * Every wait has a deadline; nothing sleeps to synchronise.  Daemons are
 * started with th_daemon_spawn(), so they die with the test process even
 * when check kills a test that ran out of time.
 */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <nanomsg/nn.h>
#include <nanomsg/pipeline.h>
#include <nanomsg/pubsub.h>
#include <nanomsg/reqrep.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "helpers.h"
#include "ingest.h"
#include <event2/event.h>

/* ------------------------------------------------------------------------
 * Building messages and reading replies
 * ------------------------------------------------------------------------ */

/* One event as a line of NDJSON (no newline). */
static void
sb_event(sbuf *b, const char *id, const char *type, int n)
{
	sb_printf(b,
		  "{\"specversion\":\"1.0\",\"id\":\"%s\",\"source\":\"/test\",\"type\":\"%s\","
		  "\"subject\":\"k%d\",\"data\":{\"n\":%d}}",
		  id, type, n % 13, n);
}

/* An NDJSON message of events PREFIX-first .. PREFIX-(first+count-1). */
static char *
ndjson(const char *prefix, int first, int count, const char *type)
{
	sbuf b = { 0 };
	char id[64];

	for (int k = first; k < first + count; k++) {
		snprintf(id, sizeof id, "%s-%d", prefix, k);
		sb_event(&b, id, type, k);
		sb_printf(&b, "\n");
	}
	return sb_take(&b);
}

/* Reply lines, as a NULL-terminated array of strings pointing into @p s
 * (which is modified).  An empty reply has no lines. */
static char **
split_lines(char *s, size_t *n)
{
	size_t cap = 16, k = 0;
	char **v = malloc(cap * sizeof *v);

	ck_assert_ptr_nonnull(v);
	while (*s != '\0') {
		char *nl = strchr(s, '\n');
		if (k + 2 > cap) {
			v = realloc(v, (cap *= 2) * sizeof *v);
			ck_assert_ptr_nonnull(v);
		}
		v[k++] = s;
		if (nl == NULL)
			break;
		*nl = '\0';
		s = nl + 1;
	}
	v[k] = NULL;
	*n = k;
	return v;
}

enum { ACK_ERROR = 0, ACK_STORED = 1, ACK_DUPLICATE = 2, ACK_BAD = -1 };

/* Classify one reply line, insisting on the exact wire format. */
static int
ack_parse(const char *line, uint64_t *seq)
{
	unsigned long long v;
	char tail[8];

	*seq = 0;
	if (sscanf(line, "{\"ok\":true,\"seq\":%llu%7s", &v, tail) == 2 && strcmp(tail, "}") == 0) {
		*seq = v;
		return ACK_STORED;
	}
	if (sscanf(line, "{\"ok\":true,\"duplicate\":true,\"seq\":%llu%7s", &v, tail) == 2 &&
	    strcmp(tail, "}") == 0) {
		*seq = v;
		return ACK_DUPLICATE;
	}
	if (strncmp(line, "{\"ok\":false,\"error\":\"", 21) == 0 && line[strlen(line) - 1] == '}')
		return ACK_ERROR;
	return ACK_BAD;
}

/* Check that @p reply acknowledges @p count new events, and store their
 * seqs in seqs[0..count). */
static void
expect_stored(char *reply, size_t count, uint64_t *seqs)
{
	size_t n;
	char **lines;

	ck_assert_ptr_nonnull(reply);
	lines = split_lines(reply, &n);
	ck_assert_uint_eq(n, count);
	for (size_t k = 0; k < n; k++) {
		int kind = ack_parse(lines[k], &seqs[k]);
		ck_assert_msg(kind == ACK_STORED, "reply line %zu: %s", k + 1, lines[k]);
		ck_assert_uint_gt(seqs[k], 0);
	}
	free(lines);
}

/* Send events PREFIX-0 .. PREFIX-(total-1) over REQ in messages of
 * @p per events, @p window requests in flight; acked[k] gets each seq. */
static void
req_events(const char *url, const char *prefix, int first, int total, int per, int window,
	   uint64_t *acked)
{
	size_t nmsg = (size_t)((total + per - 1) / per);
	char **msgs = calloc(nmsg, sizeof *msgs), **replies = calloc(nmsg, sizeof *replies);

	ck_assert_ptr_nonnull(msgs);
	ck_assert_ptr_nonnull(replies);
	for (size_t m = 0; m < nmsg; m++) {
		int from = first + (int)m * per, count = per;
		if (from + count > first + total)
			count = first + total - from;
		msgs[m] = ndjson(prefix, from, count, "in.x");
	}
	ck_assert_uint_eq(th_req_many(url, msgs, nmsg, replies, window, 60000), nmsg);
	for (size_t m = 0; m < nmsg; m++) {
		int from = (int)m * per, count = per;
		if (from + count > total)
			count = total - from;
		expect_stored(replies[m], (size_t)count, acked + from);
		free(msgs[m]);
		free(replies[m]);
	}
	free(msgs);
	free(replies);
}

/* ------------------------------------------------------------------------
 * The log as evidence
 * ------------------------------------------------------------------------ */

typedef struct logview {
	th_rec *r;
	long n;
	th_rec **by_key; /* sorted by (source, id) */
} logview;

static int
cmp_key(const void *a, const void *b)
{
	const th_rec *x = *(th_rec *const *)a, *y = *(th_rec *const *)b;
	int c = strcmp(x->source, y->source);

	return c ? c : strcmp(x->id, y->id);
}

/* Load the log and check what must hold for any log: seqs are 1..n
 * without gaps and no (source, id) is stored twice. */
static void
lv_load(logview *lv, const char *dir)
{
	lv->n = th_log_read(dir, &lv->r);
	ck_assert_int_ge(lv->n, 0);
	lv->by_key = malloc(((size_t)lv->n + 1) * sizeof *lv->by_key);
	ck_assert_ptr_nonnull(lv->by_key);
	for (long k = 0; k < lv->n; k++) {
		ck_assert_msg(lv->r[k].seq == (uint64_t)k + 1, "position %ld holds seq %llu", k + 1,
			      (unsigned long long)lv->r[k].seq);
		ck_assert_ptr_nonnull(lv->r[k].id);
		ck_assert_ptr_nonnull(lv->r[k].source);
		ck_assert_ptr_nonnull(lv->r[k].type);
		lv->by_key[k] = &lv->r[k];
	}
	qsort(lv->by_key, (size_t)lv->n, sizeof *lv->by_key, cmp_key);
	for (long k = 1; k < lv->n; k++)
		ck_assert_msg(cmp_key(&lv->by_key[k - 1], &lv->by_key[k]) != 0,
			      "(%s, %s) stored twice: seqs %llu and %llu", lv->by_key[k]->source,
			      lv->by_key[k]->id, (unsigned long long)lv->by_key[k - 1]->seq,
			      (unsigned long long)lv->by_key[k]->seq);
}

static void
lv_free(logview *lv)
{
	th_recs_free(lv->r, lv->n);
	free(lv->by_key);
	memset(lv, 0, sizeof *lv);
}

static const th_rec *
lv_find(const logview *lv, const char *source, const char *id)
{
	th_rec key = { .source = (char *)source, .id = (char *)id }, *kp = &key, **hit;

	hit = bsearch(&kp, lv->by_key, (size_t)lv->n, sizeof *lv->by_key, cmp_key);
	return hit ? *hit : NULL;
}

static int
cmp_id(const void *a, const void *b)
{
	return strcmp((*(th_rec *const *)a)->id, (*(th_rec *const *)b)->id);
}

/* Every event of type @p in (ids unique among them) has exactly one child
 * of type @p out: causationid = its id, correlationid = its id (the inputs
 * carry none), a later seq; and every @p out event is such a child.
 * Returns the number of inputs. */
static long
check_children(const logview *lv, const char *in, const char *out)
{
	th_rec **inputs = malloc(((size_t)lv->n + 1) * sizeof *inputs);
	int *kids = calloc((size_t)lv->n + 1, sizeof *kids);
	long ni = 0, nc = 0;

	ck_assert_ptr_nonnull(inputs);
	ck_assert_ptr_nonnull(kids);
	for (long k = 0; k < lv->n; k++)
		if (strcmp(lv->r[k].type, in) == 0)
			inputs[ni++] = &lv->r[k];
	qsort(inputs, (size_t)ni, sizeof *inputs, cmp_id);
	for (long k = 1; k < ni; k++)
		ck_assert_msg(strcmp(inputs[k - 1]->id, inputs[k]->id) != 0, "input id %s twice",
			      inputs[k]->id);
	for (long k = 0; k < lv->n; k++) {
		const th_rec *c = &lv->r[k];
		th_rec key, *kp = &key, **cause;
		if (strcmp(c->type, out) != 0)
			continue;
		nc++;
		ck_assert_msg(c->causationid != NULL, "child seq %llu has no causationid",
			      (unsigned long long)c->seq);
		key.id = c->causationid;
		cause = bsearch(&kp, inputs, (size_t)ni, sizeof *inputs, cmp_id);
		ck_assert_msg(cause != NULL, "child seq %llu: cause %s is not an input",
			      (unsigned long long)c->seq, c->causationid);
		ck_assert_msg(c->seq > (*cause)->seq, "child seq %llu before its cause %llu",
			      (unsigned long long)c->seq, (unsigned long long)(*cause)->seq);
		ck_assert_msg(
			c->correlationid != NULL && strcmp(c->correlationid, (*cause)->id) == 0,
			"child seq %llu: correlationid %s, cause %s", (unsigned long long)c->seq,
			c->correlationid ? c->correlationid : "(none)", (*cause)->id);
		kids[cause - inputs]++;
	}
	for (long k = 0; k < ni; k++)
		ck_assert_msg(kids[k] == 1, "input %s (seq %llu) has %d children", inputs[k]->id,
			      (unsigned long long)inputs[k]->seq, kids[k]);
	ck_assert_int_eq(nc, ni);
	free(inputs);
	free(kids);
	return ni;
}

/* Check that PREFIX-k is stored at acked[k] for every k < count. */
static void
check_acked(const logview *lv, const char *prefix, int first, int count, const uint64_t *acked)
{
	char id[64];

	for (int k = 0; k < count; k++) {
		const th_rec *r;
		snprintf(id, sizeof id, "%s-%d", prefix, first + k);
		r = lv_find(lv, "/test", id);
		ck_assert_msg(r != NULL, "acknowledged event %s is not in the log", id);
		ck_assert_msg(r->seq == acked[k], "%s acknowledged at seq %llu, stored at %llu", id,
			      (unsigned long long)acked[k], (unsigned long long)r->seq);
	}
}

static const char *
mirror(void)
{
	return th_src("tests/lua/mirror.lua");
}

static const char *
subdir(const char *dir, const char *name)
{
	static char path[4][600];
	static int slot;
	char *p = path[slot++ & 3];

	snprintf(p, 600, "%s/%s", dir, name);
	return p;
}

static int
alive(const th_daemon *d)
{
	return d->pid > 0 && kill(d->pid, 0) == 0;
}

/* ------------------------------------------------------------------------
 * Tests
 * ------------------------------------------------------------------------ */

START_TEST(req_acknowledges_after_commit)
{
	const char *dir = th_tmpdir();
	char data[600], reply[4096];
	th_daemon d;

	snprintf(data, sizeof data, "%s/data", dir);
	ck_assert_int_eq(th_daemon_start(&d, data, ""), 0);
	ck_assert_int_gt(
		th_req(d.rep,
		       "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/t\",\"type\":\"x\"}",
		       reply, sizeof reply, 5000),
		0);
	ck_assert_str_eq(reply, "{\"ok\":true,\"seq\":1}");
	ck_assert_int_gt(
		th_req(d.rep,
		       "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/t\",\"type\":\"x\"}",
		       reply, sizeof reply, 5000),
		0);
	ck_assert_str_eq(reply, "{\"ok\":true,\"duplicate\":true,\"seq\":1}");
	ck_assert_int_eq(th_log_count(data, ""), 1);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
}
END_TEST

/* The headline: 10,000 events by REQ (with duplicates) and 10,000 by PUSH,
 * at the same time; each stored once, each handled once. */
enum { N_REQ = 10000, N_PUSH = 10000, REQ_PER = 500, PUSH_PER = 250, N_RESEND = 300 };

START_TEST(every_event_once_req_and_push)
{
	const char *data = subdir(th_tmpdir(), "data");
	uint64_t *acked = calloc(N_REQ, sizeof *acked), maxseq = 0, seq;
	th_daemon d;
	logview lv;
	sbuf b = { 0 };
	char *msg, *reply = NULL, id[64], **lines;
	size_t nl;
	int push, ms = 10000, fresh = 0;

	ck_assert_ptr_nonnull(acked);
	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s' --script '%s'", data, mirror()), 0);

	/* PUSH first, so that both streams interleave in the engine. */
	push = nn_socket(AF_SP, NN_PUSH);
	ck_assert_int_ge(push, 0);
	nn_setsockopt(push, NN_SOL_SOCKET, NN_SNDTIMEO, &ms, sizeof ms);
	ck_assert_int_ge(nn_connect(push, d.pull), 0);
	for (int m = 0; m < N_PUSH / PUSH_PER; m++) {
		msg = ndjson("p", m * PUSH_PER, PUSH_PER, "in.x");
		ck_assert_int_eq(nn_send(push, msg, strlen(msg), 0), (int)strlen(msg));
		free(msg);
	}

	/* REQ: 20 NDJSON messages of 500 events, 4 requests in flight. */
	req_events(d.rep, "r", 0, N_REQ, REQ_PER, 4, acked);
	for (int k = 0; k < N_REQ; k++)
		if (acked[k] > maxseq)
			maxseq = acked[k];

	/* Resend: old ids come back as duplicates with their original seq;
	 * new ids mixed in are stored after everything acknowledged so far;
	 * an id twice in one message is stored once, then a duplicate. */
	for (int j = 0; j < N_RESEND; j++) {
		if (j % 3 == 2)
			snprintf(id, sizeof id, "r-%d", N_REQ + fresh++);
		else
			snprintf(id, sizeof id, "r-%d", j * 33);
		sb_event(&b, id, "in.x", j);
		sb_printf(&b, "\n");
	}
	sb_event(&b, "r-twice", "in.x", 1);
	sb_printf(&b, "\n");
	sb_event(&b, "r-twice", "in.x", 2);
	msg = sb_take(&b);
	ck_assert_uint_eq(th_req_many(d.rep, &msg, 1, &reply, 1, 30000), 1);
	lines = split_lines(reply, &nl);
	ck_assert_uint_eq(nl, N_RESEND + 2);
	for (int j = 0; j < N_RESEND; j++) {
		int kind = ack_parse(lines[j], &seq);
		if (j % 3 == 2) {
			ck_assert_msg(kind == ACK_STORED, "new event, line %d: %s", j + 1,
				      lines[j]);
			ck_assert_uint_gt(seq, maxseq);
		} else {
			ck_assert_msg(kind == ACK_DUPLICATE, "resent event, line %d: %s", j + 1,
				      lines[j]);
			ck_assert_uint_eq(seq, acked[j * 33]);
		}
	}
	{
		uint64_t dup;
		ck_assert_int_eq(ack_parse(lines[N_RESEND], &seq), ACK_STORED);
		ck_assert_int_eq(ack_parse(lines[N_RESEND + 1], &dup), ACK_DUPLICATE);
		ck_assert_uint_eq(dup, seq);
	}
	free(lines);
	free(reply);
	free(msg);

	/* Everything arrives and is handled: 2 events per input. */
	ck_assert_msg(th_wait_settled(data, "mirror", 2 * (N_REQ + N_PUSH + fresh + 1), 90000),
		      "log did not settle");
	nn_close(push);
	lv_load(&lv, data);
	ck_assert_int_eq(lv.n, 2 * (N_REQ + N_PUSH + fresh + 1));
	ck_assert_int_eq(check_children(&lv, "in.x", "out.x"), N_REQ + N_PUSH + fresh + 1);
	check_acked(&lv, "r", 0, N_REQ, acked);
	for (int k = 0; k < N_PUSH; k++) {
		snprintf(id, sizeof id, "p-%d", k);
		ck_assert_msg(lv_find(&lv, "/test", id) != NULL, "pushed %s missing", id);
	}
	lv_free(&lv);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
	free(acked);
}
END_TEST

/* Stop (SIGTERM) while the consumer is behind, start again, send more:
 * the consumer resumes at its checkpoint, so no input is handled twice and
 * none is skipped; duplicates are still recognised across the restart. */
START_TEST(restart_after_sigterm_resumes)
{
	const char *data = subdir(th_tmpdir(), "data");
	uint64_t acked[6000], events, last, cp;
	th_daemon d;
	logview lv;
	char *msg, *reply = NULL, **lines;
	size_t nl;

	/* A small turn budget leaves the consumer behind ingest. */
	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s' --script '%s' --set turn_events=64",
					 data, mirror()),
			 0);
	req_events(d.rep, "r", 0, 3000, 500, 3, acked);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
	ck_assert_int_eq(th_log_state(data, "mirror", &events, &last, &cp), 0);
	ck_assert_uint_ge(events, 3000);
	ck_assert_uint_le(cp, last);

	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s' --script '%s' --set turn_events=64",
					 data, mirror()),
			 0);
	req_events(d.rep, "r", 3000, 3000, 500, 3, acked + 3000);
	/* one old id again: a duplicate with its first seq */
	msg = ndjson("r", 1234, 1, "in.x");
	ck_assert_uint_eq(th_req_many(d.rep, &msg, 1, &reply, 1, 10000), 1);
	lines = split_lines(reply, &nl);
	ck_assert_uint_eq(nl, 1);
	{
		uint64_t seq;
		ck_assert_int_eq(ack_parse(lines[0], &seq), ACK_DUPLICATE);
		ck_assert_uint_eq(seq, acked[1234]);
	}
	free(lines);
	free(reply);
	free(msg);
	ck_assert(th_wait_settled(data, "mirror", 12000, 60000));
	ck_assert_int_eq(th_daemon_stop(&d), 0);
	lv_load(&lv, data);
	ck_assert_int_eq(lv.n, 12000);
	ck_assert_int_eq(check_children(&lv, "in.x", "out.x"), 6000);
	check_acked(&lv, "r", 0, 6000, acked);
	lv_free(&lv);
}
END_TEST

/* kill -9 right after the acknowledgements: after a restart every
 * acknowledged event is there, and each still gets exactly one child. */
START_TEST(restart_after_sigkill_keeps_acknowledged)
{
	const char *data = subdir(th_tmpdir(), "data");
	uint64_t acked[5000];
	th_daemon d;
	logview lv;

	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s' --script '%s' --set turn_events=64",
					 data, mirror()),
			 0);
	req_events(d.rep, "r", 0, 4000, 250, 4, acked);
	th_daemon_kill(&d);

	/* Restart; the acknowledged events are there before anything else. */
	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s' --script '%s' --set turn_events=64",
					 data, mirror()),
			 0);
	lv_load(&lv, data);
	check_acked(&lv, "r", 0, 4000, acked);
	lv_free(&lv);

	req_events(d.rep, "r", 4000, 1000, 250, 2, acked + 4000);
	ck_assert(th_wait_settled(data, "mirror", 10000, 60000));
	/* kill again, mid-way or not, and come back once more */
	th_daemon_kill(&d);
	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s' --script '%s'", data, mirror()), 0);
	ck_assert(th_wait_settled(data, "mirror", 10000, 30000));
	ck_assert_int_eq(th_daemon_stop(&d), 0);
	lv_load(&lv, data);
	ck_assert_int_eq(lv.n, 10000);
	ck_assert_int_eq(check_children(&lv, "in.x", "out.x"), 5000);
	check_acked(&lv, "r", 0, 5000, acked);
	lv_free(&lv);
}
END_TEST

/* Send one request, return the reply (malloc'd) or fail the test. */
static char *
req1(const char *url, const char *msg)
{
	char *m = (char *)msg, *reply = NULL;

	ck_assert_msg(th_req_many(url, &m, 1, &reply, 1, 15000) == 1, "no reply to %.80s", msg);
	return reply;
}

/* Assert @p reply is one error line containing @p what. */
static void
expect_error(const char *what, char *reply)
{
	uint64_t seq;

	ck_assert_msg(strchr(reply, '\n') == NULL, "one line expected: %.300s", reply);
	ck_assert_msg(ack_parse(reply, &seq) == ACK_ERROR, "error expected: %.300s", reply);
	ck_assert_msg(strstr(reply, what) != NULL, "'%s' expected in %.300s", what, reply);
	free(reply);
}

#define EV(id) "{\"specversion\":\"1.0\",\"id\":\"" id "\",\"source\":\"/test\",\"type\":\"in.x\"}"

START_TEST(bad_input_over_req)
{
	const char *data = subdir(th_tmpdir(), "data");
	th_daemon d;
	logview lv;
	char *reply, **lines;
	size_t nl;
	uint64_t seq;

	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s' --script '%s'", data, mirror()), 0);

	expect_error("not valid JSON", req1(d.rep, "{\"specversion\":\"1.0\",\"id\":"));
	expect_error("not valid JSON", req1(d.rep, "this is not json"));
	expect_error("missing required attribute 'source'",
		     req1(d.rep, "{\"specversion\":\"1.0\",\"id\":\"m1\",\"type\":\"in.x\"}"));
	expect_error(
		"missing required attribute 'id'",
		req1(d.rep, "{\"specversion\":\"1.0\",\"source\":\"/test\",\"type\":\"in.x\"}"));
	expect_error("missing required attribute 'type'",
		     req1(d.rep, "{\"specversion\":\"1.0\",\"id\":\"m2\",\"source\":\"/test\"}"));
	expect_error("missing required attribute 'specversion'",
		     req1(d.rep, "{\"id\":\"m3\",\"source\":\"/test\",\"type\":\"in.x\"}"));
	expect_error("event must be a JSON object", req1(d.rep, "42"));
	expect_error("event must be a JSON object", req1(d.rep, "\"a string\""));

	/* An event over the 1 MiB limit. */
	{
		size_t big = (1u << 20) + 1000;
		sbuf b = { 0 };
		char *pad = malloc(big + 1);
		ck_assert_ptr_nonnull(pad);
		memset(pad, 'x', big);
		pad[big] = '\0';
		sb_printf(&b,
			  "{\"specversion\":\"1.0\",\"id\":\"huge\",\"source\":\"/test\","
			  "\"type\":\"in.x\",\"data\":\"%s\"}",
			  pad);
		free(pad);
		pad = sb_take(&b);
		expect_error("message larger than the 1 MiB limit", req1(d.rep, pad));
		free(pad);
	}

	/* An empty message gets an empty reply. */
	reply = req1(d.rep, "");
	ck_assert_str_eq(reply, "");
	free(reply);

	/* NDJSON mixing good and bad events: the good ones are stored and
	 * the replies come line by line, in order. */
	reply = req1(d.rep,
		     EV("g1") "\n"
			      "{\"specversion\":\"1.0\",\"id\":\"b1\",\"type\":\"in.x\"}\n" EV(
				      "g2") "\n"
					    "[]\n"
					    "{\"specversion\":\"2.0\",\"id\":\"b2\",\"source\":\"/"
					    "test\",\"type\":\"in.x\"}\n" EV("g3") "\n");
	lines = split_lines(reply, &nl);
	ck_assert_msg(nl == 5, "%zu reply lines: %s", nl, reply);
	ck_assert_int_eq(ack_parse(lines[0], &seq), ACK_STORED);
	ck_assert_int_eq(ack_parse(lines[1], &seq), ACK_ERROR);
	ck_assert_ptr_nonnull(strstr(lines[1], "'source'"));
	ck_assert_int_eq(ack_parse(lines[2], &seq), ACK_STORED);
	/* "[]" is an empty batch: no events, no line */
	ck_assert_int_eq(ack_parse(lines[3], &seq), ACK_ERROR);
	ck_assert_ptr_nonnull(strstr(lines[3], "specversion"));
	ck_assert_int_eq(ack_parse(lines[4], &seq), ACK_STORED);
	free(lines);
	free(reply);

	/* A JSON array batch (CloudEvents batch format). */
	reply = req1(d.rep, "[" EV("a1") "," EV("a2") ", 7, " EV("a3") "]");
	lines = split_lines(reply, &nl);
	ck_assert_uint_eq(nl, 4);
	ck_assert_int_eq(ack_parse(lines[0], &seq), ACK_STORED);
	ck_assert_int_eq(ack_parse(lines[1], &seq), ACK_STORED);
	ck_assert_int_eq(ack_parse(lines[2], &seq), ACK_ERROR);
	ck_assert_ptr_nonnull(strstr(lines[2], "event must be a JSON object"));
	ck_assert_int_eq(ack_parse(lines[3], &seq), ACK_STORED);
	free(lines);
	free(reply);

	/* Still up, still working. */
	ck_assert(alive(&d));
	reply = req1(d.rep, EV("after"));
	ck_assert_int_eq(ack_parse(reply, &seq), ACK_STORED);
	free(reply);

	ck_assert(th_wait_settled(data, "mirror", 14, 15000));
	lv_load(&lv, data);
	ck_assert_int_eq(lv.n, 14);
	ck_assert_int_eq(check_children(&lv, "in.x", "out.x"), 7);
	ck_assert_ptr_null(lv_find(&lv, "/test", "huge"));
	ck_assert_ptr_null(lv_find(&lv, "/test", "b2"));
	ck_assert_ptr_nonnull(lv_find(&lv, "/test", "g3"));
	ck_assert_ptr_nonnull(lv_find(&lv, "/test", "a3"));
	lv_free(&lv);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
}
END_TEST

/* NDJSON is line-delimited: a line that is not valid JSON costs only that
 * line; the next line is an event of its own and is stored, and every
 * non-empty line gets its reply line. */
START_TEST(ndjson_broken_line_costs_only_itself)
{
	const char *data = subdir(th_tmpdir(), "data");
	th_daemon d;
	char *reply, **lines;
	size_t nl;
	uint64_t seq;
	long n;

	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s'", data), 0);
	reply = req1(d.rep,
		     EV("n1") "\n"
			      "{\"specversion\":\"1.0\",\"id\":\n" EV("n2") "\n"
									    "42\n" EV("n3") "\n");
	{
		char *all = strdup(reply);
		lines = split_lines(reply, &nl);
		ck_assert_msg(nl == 5, "5 lines sent, %zu reply lines: %s", nl, all);
		free(all);
	}
	ck_assert_int_eq(ack_parse(lines[0], &seq), ACK_STORED);
	ck_assert_int_eq(ack_parse(lines[1], &seq), ACK_ERROR);
	ck_assert_int_eq(ack_parse(lines[2], &seq), ACK_STORED);
	ck_assert_int_eq(ack_parse(lines[3], &seq), ACK_ERROR);
	ck_assert_int_eq(ack_parse(lines[4], &seq), ACK_STORED);
	free(lines);
	free(reply);
	n = th_log_count(data, "");
	ck_assert_int_eq(n, 3);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
}
END_TEST

/* A message whose last event is cut short (premature end of input): the
 * events before it are answered once each and the cut one gets one error;
 * nothing is parsed or answered twice. */
START_TEST(truncated_last_event_answered_once)
{
	const char *data = subdir(th_tmpdir(), "data");
	th_daemon d;
	char *reply, **lines;
	size_t nl;
	uint64_t seq;

	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s'", data), 0);
	reply = req1(d.rep, EV("t1") "\n" EV("t2") "\n" EV("t3") "\n{\"specversion\":\"1.0\"");
	{
		char *all = strdup(reply);
		lines = split_lines(reply, &nl);
		ck_assert_msg(nl == 4, "4 events sent, %zu reply lines: %s", nl, all);
		free(all);
	}
	for (int k = 0; k < 3; k++) {
		ck_assert_int_eq(ack_parse(lines[k], &seq), ACK_STORED);
		ck_assert_uint_eq(seq, (uint64_t)k + 1);
	}
	ck_assert_int_eq(ack_parse(lines[3], &seq), ACK_ERROR);
	ck_assert_ptr_nonnull(strstr(lines[3], "not valid JSON"));
	free(lines);
	free(reply);
	/* the same with one line: one event, one reply */
	reply = req1(d.rep, EV("t4") " {\"specversion\":");
	lines = split_lines(reply, &nl);
	ck_assert_msg(nl == 2, "2 events sent, %zu reply lines: %s", nl, reply);
	free(lines);
	free(reply);
	ck_assert_int_eq(th_log_count(data, ""), 4);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
}
END_TEST

/* PULL acknowledges nothing: a rejected event is logged by the daemon,
 * which keeps going. */
START_TEST(bad_input_over_pull)
{
	const char *data = subdir(th_tmpdir(), "data");
	static const char *const bad[] = {
		"not json at all",
		"{\"specversion\":\"1.0\",\"id\":\"x\",\"type\":\"in.x\"}",
		"[1, 2]",
	};
	th_daemon d;
	logview lv;
	char *log;
	int push, ms = 5000;

	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s' --script '%s'", data, mirror()), 0);
	push = nn_socket(AF_SP, NN_PUSH);
	ck_assert_int_ge(push, 0);
	nn_setsockopt(push, NN_SOL_SOCKET, NN_SNDTIMEO, &ms, sizeof ms);
	ck_assert_int_ge(nn_connect(push, d.pull), 0);
	for (size_t k = 0; k < sizeof bad / sizeof *bad; k++)
		ck_assert_int_ge(nn_send(push, bad[k], strlen(bad[k]), 0), 0);
	ck_assert_int_ge(
		nn_send(push, EV("ok1") "\n" EV("ok2"), strlen(EV("ok1") "\n" EV("ok2")), 0), 0);
	ck_assert_msg(th_wait_file(d.log, "rejected event", 10000), "no 'rejected event' in %s",
		      d.log);
	ck_assert(th_wait_settled(data, "mirror", 4, 10000));
	ck_assert(alive(&d));
	log = th_slurp(d.log);
	ck_assert_ptr_nonnull(log);
	ck_assert_ptr_nonnull(strstr(log, "missing required attribute 'source'"));
	ck_assert_ptr_nonnull(strstr(log, "not valid JSON"));
	ck_assert_int_ge(th_count(log, "rejected event"), 4);
	free(log);
	nn_close(push);
	lv_load(&lv, data);
	ck_assert_int_eq(lv.n, 4);
	ck_assert_int_eq(check_children(&lv, "in.x", "out.x"), 2);
	lv_free(&lv);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
}
END_TEST

/* Publish an "out.probe" event (no consumer handles it) until @p ready
 * says a subscriber saw one: SUB connections are made in the background,
 * and this is the only way to know one is in place. */
static int
probe_until(const char *rep, int (*ready)(void *), void *ud)
{
	int64_t deadline = th_ms() + 15000;
	char ev[256], reply[256];

	for (int k = 0; th_ms() < deadline; k++) {
		snprintf(ev, sizeof ev,
			 "{\"specversion\":\"1.0\",\"id\":\"probe-%d\",\"source\":\"/probe\","
			 "\"type\":\"out.probe\"}",
			 k);
		if (th_req(rep, ev, reply, sizeof reply, 5000) <= 0)
			return 0;
		for (int w = 0; w < 10; w++) {
			if (ready(ud))
				return 1;
			th_pause();
		}
	}
	return 0;
}

static int
file_has_probe(void *path)
{
	char *s = th_slurp(path);
	int yes = s != NULL && strstr(s, "probe-") != NULL;

	free(s);
	return yes;
}

typedef struct sub {
	int s;
	char **msgs;
	int *lens;
	size_t n, cap;
} sub;

/* Drain a SUB socket without waiting; 1 once a probe has come. */
static int
sub_drain(void *ud)
{
	sub *su = ud;
	int got = 0;

	for (;;) {
		char *m = NULL;
		int n = nn_recv(su->s, &m, NN_MSG, NN_DONTWAIT);
		if (n < 0)
			break;
		if (su->n == su->cap) {
			su->cap = su->cap * 2 + 64;
			su->msgs = realloc(su->msgs, su->cap * sizeof *su->msgs);
			su->lens = realloc(su->lens, su->cap * sizeof *su->lens);
			ck_assert(su->msgs && su->lens);
		}
		su->msgs[su->n] = strndup(m, (size_t)n);
		su->lens[su->n++] = n;
		nn_freemsg(m);
	}
	for (size_t k = 0; k < su->n; k++)
		if (strstr(su->msgs[k], "probe-") != NULL)
			got = 1;
	return got;
}

/* nanocat, a REQ client nobody wrote for Tide, gets the documented reply;
 * a SUB (nanocat's and our own) sees "<type>\t<json>" for every committed
 * event whose type starts with its prefix, and nothing else. */
START_TEST(nanocat_and_pub_interop)
{
	const char *dir = th_tmpdir(), *data = subdir(dir, "data"), *out = subdir(dir, "sub.out");
	th_daemon d;
	sub su = { 0 };
	char reply[4096], *text, **lines, *msg, *r;
	size_t nl;
	pid_t cat;
	long outs = 0;

	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s' --script '%s'", data, mirror()), 0);

	ck_assert_int_eq(th_sh(reply, sizeof reply,
			       "timeout 10 nanocat --req --connect '%s' -D '%s' -A", d.rep,
			       EV("nc-1")),
			 0);
	ck_assert_str_eq(reply, "{\"ok\":true,\"seq\":1}\n");
	ck_assert_int_eq(th_sh(reply, sizeof reply,
			       "timeout 10 nanocat --req --connect '%s' -D '%s' -A", d.rep,
			       EV("nc-1")),
			 0);
	ck_assert_str_eq(reply, "{\"ok\":true,\"duplicate\":true,\"seq\":1}\n");

	/* Subscribers: nanocat, and a SUB socket of ours to see the bytes. */
	cat = th_bg(out, "nanocat --sub --connect '%s' --subscribe out. -A", d.pub);
	ck_assert_int_gt(cat, 0);
	su.s = nn_socket(AF_SP, NN_SUB);
	ck_assert_int_ge(su.s, 0);
	ck_assert_int_ge(nn_setsockopt(su.s, NN_SUB, NN_SUB_SUBSCRIBE, "out.", 4), 0);
	ck_assert_int_ge(nn_connect(su.s, d.pub), 0);
	ck_assert_msg(probe_until(d.rep, file_has_probe, (void *)out), "nanocat never subscribed");
	ck_assert_msg(probe_until(d.rep, sub_drain, &su), "SUB never subscribed");

	/* 50 inputs (each emits an out.x) and 20 events nobody subscribed to. */
	msg = ndjson("in", 0, 50, "in.x");
	r = req1(d.rep, msg);
	free(msg);
	free(r);
	msg = ndjson("z", 0, 20, "outside.y");
	r = req1(d.rep, msg);
	free(msg);
	free(r);
	{
		int64_t deadline = th_ms() + 15000;
		while (th_ms() < deadline) {
			text = th_slurp(out);
			outs = text ? th_count(text, "\"type\":\"out.x\"") : 0;
			free(text);
			sub_drain(&su);
			if (outs >= 50) {
				size_t seen = 0;
				for (size_t k = 0; k < su.n; k++)
					seen += strncmp(su.msgs[k], "out.x\t", 6) == 0;
				if (seen >= 50)
					break;
			}
			th_pause();
		}
	}
	ck_assert_int_eq(outs, 50);

	/* Our SUB: exactly "<type>\t<json>", only out.* types, each out.x once. */
	{
		size_t seen = 0;
		for (size_t k = 0; k < su.n; k++) {
			const char *m = su.msgs[k], *tab = strchr(m, '\t');
			ck_assert_msg(strncmp(m, "out.", 4) == 0, "unsubscribed type: %.80s", m);
			ck_assert_ptr_nonnull(tab);
			ck_assert_msg(strncmp(tab + 1, "{\"seq\":", 7) == 0,
				      "not <type>\\t<json>: %.80s", m);
			ck_assert_int_eq(m[su.lens[k] - 1], '}');
			{
				char type[64], want[80];
				snprintf(type, sizeof type, "%.*s", (int)(tab - m), m);
				snprintf(want, sizeof want, "\"type\":\"%s\"", type);
				ck_assert_msg(strstr(tab, want) != NULL, "topic %s, event %.120s",
					      type, tab);
			}
			seen += strncmp(m, "out.x\t", 6) == 0;
			free(su.msgs[k]);
		}
		ck_assert_uint_eq(seen, 50);
		free(su.msgs);
		free(su.lens);
		nn_close(su.s);
	}

	/* nanocat's view: one line per message, out.* only. */
	kill(cat, SIGTERM);
	th_bg_wait(cat, 5000);
	text = th_slurp(out);
	ck_assert_ptr_nonnull(text);
	lines = split_lines(text, &nl);
	for (size_t k = 0; k < nl; k++) {
		ck_assert_msg(strncmp(lines[k], "out.", 4) == 0, "line %zu: %.80s", k + 1,
			      lines[k]);
		ck_assert_ptr_null(strstr(lines[k], "\"type\":\"in.x\""));
		ck_assert_ptr_null(strstr(lines[k], "outside.y"));
	}
	free(lines);
	free(text);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
}
END_TEST

/* SIGTERM while a turn is busy with a request: that request still gets
 * its full reply, its events are committed, the daemon exits 0 and
 * removes its endpoints file.  Requests sent just before the signal are
 * answered if and only if they were stored. */
START_TEST(sigterm_with_request_in_flight)
{
	const char *data = subdir(th_tmpdir(), "data");
	enum { SLOW = 1500, LATE = 3 };
	th_daemon d;
	logview lv;
	sbuf b = { 0 };
	char *msg, id[64], *late[LATE], path[700];
	int s, late_s[LATE], ms = 30000, resend = 3600000;
	uint64_t *seqs = calloc(SLOW, sizeof *seqs);
	struct stat sb;

	ck_assert_ptr_nonnull(seqs);
	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s' --script '%s'", data,
					 th_src("tests/lua/slow.lua")),
			 0);
	for (int k = 0; k < SLOW; k++) {
		snprintf(id, sizeof id, "s-%d", k);
		sb_printf(&b,
			  "{\"specversion\":\"1.0\",\"id\":\"%s\",\"source\":\"/test\","
			  "\"type\":\"slow.x\",\"data\":{\"first\":%s}}\n",
			  id, k == 0 ? "true" : "false");
	}
	msg = sb_take(&b);
	s = nn_socket(AF_SP, NN_REQ);
	ck_assert_int_ge(s, 0);
	nn_setsockopt(s, NN_SOL_SOCKET, NN_RCVTIMEO, &ms, sizeof ms);
	nn_setsockopt(s, NN_REQ, NN_REQ_RESEND_IVL, &resend, sizeof resend);
	ck_assert_int_ge(nn_connect(s, d.rep), 0);
	ck_assert_int_eq(nn_send(s, msg, strlen(msg), 0), (int)strlen(msg));
	free(msg);

	/* The handler announces the batch from inside the turn. */
	ck_assert_msg(th_wait_file(d.log, "slow batch started", 15000),
		      "the slow turn never began");
	for (int k = 0; k < LATE; k++) {
		late_s[k] = nn_socket(AF_SP, NN_REQ);
		ck_assert_int_ge(late_s[k], 0);
		nn_setsockopt(late_s[k], NN_REQ, NN_REQ_RESEND_IVL, &resend, sizeof resend);
		ck_assert_int_ge(nn_connect(late_s[k], d.rep), 0);
		snprintf(id, sizeof id, "late-%d", k);
		sb_event(&b, id, "in.x", k);
		late[k] = sb_take(&b);
		ck_assert_int_ge(nn_send(late_s[k], late[k], strlen(late[k]), 0), 0);
	}
	ck_assert_int_eq(kill(d.pid, SIGTERM), 0);

	{
		char *reply = NULL;
		int n = nn_recv(s, &reply, NN_MSG, 0);
		ck_assert_msg(n >= 0, "no reply to the request in flight: %s",
			      nn_strerror(nn_errno()));
		msg = strndup(reply, (size_t)n);
		nn_freemsg(reply);
		expect_stored(msg, SLOW, seqs);
		free(msg);
	}
	ck_assert_int_eq(th_daemon_wait(&d, 30000), 0);
	snprintf(path, sizeof path, "%s/endpoints", data);
	ck_assert_msg(stat(path, &sb) != 0, "%s is left behind after a clean exit", path);

	lv_load(&lv, data);
	for (int k = 0; k < SLOW; k++) {
		const th_rec *r;
		snprintf(id, sizeof id, "s-%d", k);
		r = lv_find(&lv, "/test", id);
		ck_assert_msg(r != NULL && r->seq == seqs[k], "%s not at its acknowledged seq", id);
	}
	/* The daemon is gone: whatever it sent has arrived or never will. */
	for (int k = 0; k < LATE; k++) {
		char *reply = NULL;
		int n, t = 500;
		const th_rec *r;
		uint64_t seq;
		nn_setsockopt(late_s[k], NN_SOL_SOCKET, NN_RCVTIMEO, &t, sizeof t);
		n = nn_recv(late_s[k], &reply, NN_MSG, 0);
		snprintf(id, sizeof id, "late-%d", k);
		r = lv_find(&lv, "/test", id);
		if (n >= 0) {
			msg = strndup(reply, (size_t)n);
			nn_freemsg(reply);
			ck_assert_int_eq(ack_parse(msg, &seq), ACK_STORED);
			ck_assert_msg(r != NULL && r->seq == seq, "%s acknowledged but not stored",
				      id);
			free(msg);
		} else {
			ck_assert_msg(r == NULL, "%s stored (seq %llu) but never acknowledged", id,
				      (unsigned long long)r->seq);
		}
		nn_close(late_s[k]);
		free(late[k]);
	}
	lv_free(&lv);
	nn_close(s);
	free(seqs);
}
END_TEST

/* --durability relaxed: the same guarantees end to end, also across a
 * clean stop and a kill -9 (a process crash, not an OS crash).  A second
 * daemon on the same data directory is refused. */
START_TEST(relaxed_durability_and_exclusive_dir)
{
	const char *data = subdir(th_tmpdir(), "data");
	uint64_t acked[2000];
	th_daemon d;
	logview lv;
	char out[4096], *msg, *reply;
	int push, ms = 10000, st;

	ck_assert_int_eq(th_daemon_spawn(&d, data,
					 "--data '%s' --script '%s' --durability relaxed "
					 "--set sync_interval=50",
					 data, mirror()),
			 0);
	push = nn_socket(AF_SP, NN_PUSH);
	ck_assert_int_ge(push, 0);
	nn_setsockopt(push, NN_SOL_SOCKET, NN_SNDTIMEO, &ms, sizeof ms);
	ck_assert_int_ge(nn_connect(push, d.pull), 0);
	for (int m = 0; m < 4; m++) {
		msg = ndjson("p", m * 250, 250, "in.x");
		ck_assert_int_eq(nn_send(push, msg, strlen(msg), 0), (int)strlen(msg));
		free(msg);
	}
	req_events(d.rep, "r", 0, 1000, 200, 3, acked);

	/* A second engine on the same directory. */
	st = th_sh(out, sizeof out,
		   "timeout 10 '%s' run --data '%s' --pull '' --rep '' --pub '' 2>&1", TIDE_BIN,
		   data);
	ck_assert_msg(st != 0 && st != 124, "second daemon: status %d", st);
	ck_assert_msg(strstr(out, "in use by another tide process") != NULL, "%s", out);
	ck_assert(alive(&d));
	reply = req1(d.rep, EV("after-second"));
	ck_assert_ptr_nonnull(strstr(reply, "\"ok\":true"));
	free(reply);

	ck_assert(th_wait_settled(data, "mirror", 2 * 2001, 60000));
	nn_close(push);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
	lv_load(&lv, data);
	ck_assert_int_eq(lv.n, 2 * 2001);
	ck_assert_int_eq(check_children(&lv, "in.x", "out.x"), 2001);
	check_acked(&lv, "r", 0, 1000, acked);
	lv_free(&lv);

	/* Relaxed, then kill -9 right after the acknowledgements. */
	ck_assert_int_eq(th_daemon_spawn(&d, data,
					 "--data '%s' --script '%s' --durability relaxed "
					 "--set sync_interval=5000",
					 data, mirror()),
			 0);
	req_events(d.rep, "r", 1000, 1000, 250, 2, acked + 1000);
	th_daemon_kill(&d);
	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s' --script '%s'", data, mirror()), 0);
	ck_assert(th_wait_settled(data, "mirror", 2 * 3001, 30000));
	ck_assert_int_eq(th_daemon_stop(&d), 0);
	lv_load(&lv, data);
	ck_assert_int_eq(lv.n, 2 * 3001);
	ck_assert_int_eq(check_children(&lv, "in.x", "out.x"), 3001);
	check_acked(&lv, "r", 0, 2000, acked);
	lv_free(&lv);
}
END_TEST

/* tide run --config FILE: scripts and data relative to the file, tcp
 * endpoints on 127.0.0.1, flags override the file, unknown settings fail. */
START_TEST(config_file)
{
	const char *dir = th_tmpdir(), *conf = subdir(dir, "conf");
	char path[700], data[700], text[2048], want[128], out[4096], *script, *reply;
	int port[4];
	th_daemon d;
	uint64_t seq;
	int st;

	for (int k = 0; k < 4; k++) {
		port[k] = th_free_port();
		ck_assert_int_gt(port[k], 0);
		for (int j = 0; j < k; j++)
			if (port[j] == port[k])
				k--; /* the kernel gave the same one back; take another */
	}
	ck_assert_int_eq(mkdir(conf, 0700), 0);
	script = th_slurp(mirror());
	ck_assert_ptr_nonnull(script);
	th_write(conf, "handlers.lua", script);
	free(script);
	snprintf(text, sizeof text,
		 "-- test config\n"
		 "data = \"state\"\n"
		 "durability = \"sync\"\n"
		 "endpoints = { pull = \"tcp://127.0.0.1:%d\", rep = \"tcp://127.0.0.1:%d\",\n"
		 "              pub = \"tcp://127.0.0.1:%d\" }\n"
		 "scripts = { \"handlers.lua\" }\n"
		 "max_event_size = \"64K\"\n",
		 port[0], port[1], port[2]);
	snprintf(path, sizeof path, "%s", th_write(conf, "tide.lua", text));
	snprintf(data, sizeof data, "%s/state", conf);

	/* from another working directory: paths follow the file, not the cwd */
	ck_assert_int_eq(th_daemon_spawn(&d, data, "--config '%s'", path), 0);
	snprintf(want, sizeof want, "tcp://127.0.0.1:%d", port[1]);
	ck_assert_str_eq(d.rep, want);
	snprintf(want, sizeof want, "tcp://127.0.0.1:%d", port[0]);
	ck_assert_str_eq(d.pull, want);
	snprintf(want, sizeof want, "tcp://127.0.0.1:%d", port[2]);
	ck_assert_str_eq(d.pub, want);
	reply = req1(d.rep, EV("conf-1"));
	ck_assert_int_eq(ack_parse(reply, &seq), ACK_STORED);
	free(reply);
	ck_assert(th_wait_settled(data, "mirror", 2, 10000));
	ck_assert_int_eq(th_log_count(data, "--type out.x"), 1);
	/* max_event_size from the file */
	{
		char *big = malloc(70 * 1024), *ev = malloc(71 * 1024);
		ck_assert(big && ev);
		memset(big, 'y', 70 * 1024 - 1);
		big[70 * 1024 - 1] = '\0';
		snprintf(ev, 71 * 1024,
			 "{\"specversion\":\"1.0\",\"id\":\"b\",\"source\":\"/t\",\"type\":\"t\","
			 "\"data\":\"%s\"}",
			 big);
		expect_error("larger than the 64 KiB limit", req1(d.rep, ev));
		free(big);
		free(ev);
	}
	ck_assert_int_eq(th_daemon_stop(&d), 0);

	/* a flag overrides the file */
	ck_assert_int_eq(
		th_daemon_spawn(&d, data, "--config '%s' --rep tcp://127.0.0.1:%d", path, port[3]),
		0);
	snprintf(want, sizeof want, "tcp://127.0.0.1:%d", port[3]);
	ck_assert_str_eq(d.rep, want);
	reply = req1(d.rep, EV("conf-2"));
	ck_assert_int_eq(ack_parse(reply, &seq), ACK_STORED);
	ck_assert_uint_eq(seq, 3);
	free(reply);
	ck_assert_int_eq(th_daemon_stop(&d), 0);

	/* unknown settings are errors */
	th_write(conf, "bad.lua", "data = \"state2\"\nbogus_setting = 1\n");
	st = th_sh(out, sizeof out, "cd / && timeout 10 '%s' run --config '%s/bad.lua' 2>&1",
		   TIDE_BIN, conf);
	ck_assert_msg(st != 0 && st != 124, "status %d", st);
	ck_assert_msg(strstr(out, "unknown setting") != NULL &&
			      strstr(out, "bogus_setting") != NULL,
		      "%s", out);
	/* and so are bad values */
	th_write(conf, "bad2.lua", "durability = \"sometimes\"\n");
	st = th_sh(out, sizeof out, "timeout 10 '%s' run --config '%s/bad2.lua' 2>&1", TIDE_BIN,
		   conf);
	ck_assert_msg(st != 0 && st != 124, "status %d", st);
	ck_assert_msg(strstr(out, "durability") != NULL, "%s", out);
	/* params are names and plain values */
	th_write(conf, "bad3.lua", "params = { ['t.x'] = { 1 } }\n");
	st = th_sh(out, sizeof out, "timeout 10 '%s' run --config '%s/bad3.lua' 2>&1", TIDE_BIN,
		   conf);
	ck_assert_msg(st != 0 && st != 124, "status %d", st);
	ck_assert_msg(strstr(out, "params: each is a name") != NULL, "%s", out);
	th_write(conf, "bad4.lua", "params = 5\n");
	st = th_sh(out, sizeof out, "timeout 10 '%s' run --config '%s/bad4.lua' 2>&1", TIDE_BIN,
		   conf);
	ck_assert_msg(st != 0 && st != 124, "status %d", st);
	ck_assert_msg(strstr(out, "params must be a table") != NULL, "%s", out);
	/* settings out of their sense are refused, not met later (a state of
	 * one byte once ended the process loading the first script) */
	{
		static const char *const bad[][2] = {
			{ "memory_limit=1", "memory_limit must be 0 (no limit) or at least 1M" },
			{ "map_size=1", "map_size must be at least 64K" },
			{ "build_threads=100000", "build_threads must be at most 64" },
		};
		for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
			st = th_sh(out, sizeof out,
				   "timeout 10 '%s' run --data '%s/state3' --set %s 2>&1", TIDE_BIN,
				   conf, bad[k][0]);
			ck_assert_msg(st == 1, "%s: status %d", bad[k][0], st);
			ck_assert_msg(strstr(out, bad[k][1]) != NULL, "%s: %s", bad[k][0], out);
		}
	}
}
END_TEST

/* A map far too small for the load: the engine grows it and loses
 * nothing, acknowledged or emitted. */
START_TEST(map_grows_under_load)
{
	const char *data = subdir(th_tmpdir(), "data");
	uint64_t acked[6000];
	th_daemon d;
	logview lv;

	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s' --script '%s' --set map_size=256K",
					 data, mirror()),
			 0);
	req_events(d.rep, "r", 0, 6000, 500, 4, acked);
	ck_assert(th_wait_settled(data, "mirror", 12000, 60000));
	ck_assert(alive(&d));
	{
		char out[4096];
		const char *m;
		ck_assert_int_eq(
			th_sh(out, sizeof out, "'%s' stat --json --data '%s'", TIDE_BIN, data), 0);
		ck_assert_ptr_nonnull(m = strstr(out, "\"map_size\":"));
		ck_assert_msg(atoll(m + 11) > 256 * 1024, "the map never grew: %s", out);
	}
	ck_assert_int_eq(th_daemon_stop(&d), 0);
	lv_load(&lv, data);
	ck_assert_int_eq(lv.n, 12000);
	ck_assert_int_eq(check_children(&lv, "in.x", "out.x"), 6000);
	check_acked(&lv, "r", 0, 6000, acked);
	lv_free(&lv);
}
END_TEST

/* --log-file: SIGHUP reopens it, so log rotation by renaming works. */
START_TEST(sighup_reopens_log_file)
{
	const char *dir = th_tmpdir(), *data = subdir(dir, "data");
	char logf[600], rotated[620], text[8192];
	th_daemon d;
	int64_t deadline;

	snprintf(logf, sizeof logf, "%s/tide.log", dir);
	snprintf(rotated, sizeof rotated, "%s.1", logf);
	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s' --log-file '%s'", data, logf), 0);
	ck_assert_int_eq(rename(logf, rotated), 0);
	ck_assert_int_eq(kill(d.pid, SIGHUP), 0);
	/* an invalid event over PULL produces a log line: it must land in
	 * the new file once the engine has reopened it */
	deadline = th_ms() + 10000;
	text[0] = '\0';
	while (th_ms() < deadline && strstr(text, "rejected event") == NULL) {
		th_sh(NULL, 0, "printf '{\"broken' | '%s' publish -q --push --data '%s'", TIDE_BIN,
		      data);
		th_sh(text, sizeof text, "cat '%s' 2>/dev/null", logf);
		th_pause();
	}
	ck_assert_msg(strstr(text, "log file reopened (SIGHUP)") != NULL, "%s", text);
	ck_assert_msg(strstr(text, "rejected event from pull") != NULL, "%s", text);
	th_sh(text, sizeof text, "cat '%s'", rotated);
	ck_assert_msg(strstr(text, "ready:") != NULL, "%s", text);
	ck_assert_ptr_null(strstr(text, "rejected event"));
	ck_assert_int_eq(th_daemon_stop(&d), 0);
	/* a log file that cannot be opened is an error at start */
	ck_assert_int_eq(th_sh(text, sizeof text,
			       "'%s' run --data '%s' --log-file /nonexistent/x.log 2>&1", TIDE_BIN,
			       data),
			 1);
	ck_assert_ptr_nonnull(strstr(text, "cannot open log file /nonexistent/x.log"));
}
END_TEST

/* ------------------------------------------------------------------------
 * The ingest module on its own: a full batch does not hold back requests
 * ------------------------------------------------------------------------ */

typedef struct ing_host {
	int inputs, controls;
} ing_host;

static void
ih_input(void *ud)
{
	((ing_host *)ud)->inputs++;
}

static int
ih_control(void *ud, const char *msg, size_t len, tidei_buf *reply, void *ctl)
{
	(void)msg;
	(void)len;
	(void)ctl;
	((ing_host *)ud)->controls++;
	tidei_buf_puts(reply, "{\"ok\":true,\"control\":1}");
	return 0;
}

static void
ih_log(void *ud, int level, const char *fmt, ...)
{
	(void)ud;
	(void)level;
	(void)fmt;
}

static void
ih_tick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

/* Run the loop until @p req has a reply (1) or @p ms pass (0).  The loop
 * runs EVLOOP_ONCE (a 10 ms timer bounds its wait): EVLOOP_NONBLOCK would
 * spin on the PULL descriptor, readable while the full batch leaves
 * messages queued. */
static int
ih_reply(struct event_base *base, int req, char *out, size_t outlen, int ms)
{
	int64_t end = th_ms() + ms;

	while (th_ms() < end) {
		int n;
		event_base_loop(base, EVLOOP_ONCE);
		n = nn_recv(req, out, outlen - 1, NN_DONTWAIT);
		if (n >= 0) {
			out[n] = '\0';
			return 1;
		}
		th_pause();
	}
	return 0;
}

/* While PUSHed events keep the turn's batch full, queries and commands on
 * the REP socket are still answered; a publish read meanwhile waits for
 * the next turn and is then acknowledged. */
START_TEST(requests_pass_a_full_batch)
{
	const char *dir = th_tmpdir();
	char pull[600], rep[600], err[TIDEI_ERRLEN], out[256];
	const char ev[] = "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/t\",\"type\":\"x\"}";
	ing_host h = { 0, 0 };
	tidei_ingest_host host = { &h, ih_input, ih_control, ih_log };
	tidei_ingest_opts o;
	struct event_base *base = event_base_new();
	tidei_ingest *in;
	tidei_batch b;
	int push, req, timeout = 5000;
	int64_t end;
	struct event *tick;
	struct timeval tv = { 0, 10000 };

	snprintf(pull, sizeof pull, "ipc://%s/pull", dir);
	snprintf(rep, sizeof rep, "ipc://%s/rep", dir);
	memset(&o, 0, sizeof o);
	o.pull = pull;
	o.rep = rep;
	o.turn_events = 1;
	o.max_message = 1 << 20;
	tidei_batch_init(&b, 1 << 20);
	ck_assert_int_eq(tidei_ingest_open(&in, base, &o, &b, &host, err), TIDE_OK);
	tick = event_new(base, -1, EV_PERSIST, ih_tick, NULL);
	ck_assert_int_eq(event_add(tick, &tv), 0);
	push = nn_socket(AF_SP, NN_PUSH);
	req = nn_socket(AF_SP, NN_REQ);
	ck_assert_int_ge(nn_connect(push, pull), 0);
	ck_assert_int_ge(nn_connect(req, rep), 0);
	nn_setsockopt(push, NN_SOL_SOCKET, NN_SNDTIMEO, &timeout, sizeof timeout);
	nn_setsockopt(req, NN_SOL_SOCKET, NN_SNDTIMEO, &timeout, sizeof timeout);

	/* fill the batch; more PUSHed events queue behind it */
	for (int k = 0; k < 3; k++)
		ck_assert_int_eq(nn_send(push, ev, sizeof ev - 1, 0), (int)sizeof ev - 1);
	for (end = th_ms() + 5000; b.n < 1 && th_ms() < end; th_pause())
		event_base_loop(base, EVLOOP_ONCE);
	ck_assert_uint_eq(b.n, 1);

	/* a query is answered at once, the batch untouched */
	ck_assert_int_ge(nn_send(req, "{\"query\":\"p\"}", 11, 0), 0);
	ck_assert_int_eq(ih_reply(base, req, out, sizeof out, 5000), 1);
	ck_assert_str_eq(out, "{\"ok\":true,\"control\":1}");
	ck_assert_int_eq(h.controls, 1);
	ck_assert_uint_eq(b.n, 1);

	/* a publish is held back: no answer while the batch is full */
	ck_assert_int_ge(nn_send(req, ev, sizeof ev - 1, 0), 0);
	ck_assert_int_eq(ih_reply(base, req, out, sizeof out, 300), 0);
	ck_assert_uint_eq(b.n, 1);

	/* the turn commits: the held publish enters the next batch first */
	tidei_batch_finish(&b);
	tidei_ingest_drained(in);
	for (end = th_ms() + 5000; b.n < 1 && th_ms() < end; th_pause())
		event_base_loop(base, EVLOOP_ONCE);
	ck_assert_uint_eq(b.n, 1);
	ck_assert_uint_eq(b.nw, 1); /* it is the REQ's, waiting for its reply */
	b.items[0].seq = 7;
	tidei_batch_finish(&b);
	ck_assert_int_eq(ih_reply(base, req, out, sizeof out, 5000), 1);
	ck_assert_str_eq(out, "{\"ok\":true,\"seq\":7}");
	ck_assert_int_gt(h.inputs, 0);

	nn_close(push);
	nn_close(req);
	tidei_ingest_close(in);
	tidei_batch_free(&b);
	event_free(tick);
	event_base_free(base);
}
END_TEST

Suite *
engine_suite(void)
{
	Suite *s = suite_create("engine");
	TCase *tc = tcase_create("daemon");
	TCase *load = tcase_create("load");
	TCase *bad = tcase_create("bad_input");

	tcase_add_checked_fixture(tc, NULL, th_cleanup);
	tcase_add_test(tc, req_acknowledges_after_commit);
	tcase_add_test(tc, requests_pass_a_full_batch);
	tcase_add_test(tc, nanocat_and_pub_interop);
	tcase_add_test(tc, sigterm_with_request_in_flight);
	tcase_add_test(tc, config_file);
	tcase_add_test(tc, sighup_reopens_log_file);
	tcase_set_timeout(tc, 120);
	suite_add_tcase(s, tc);

	tcase_add_checked_fixture(bad, NULL, th_cleanup);
	tcase_add_test(bad, bad_input_over_req);
	tcase_add_test(bad, ndjson_broken_line_costs_only_itself);
	tcase_add_test(bad, truncated_last_event_answered_once);
	tcase_add_test(bad, bad_input_over_pull);
	tcase_set_timeout(bad, 60);
	suite_add_tcase(s, bad);

	tcase_add_checked_fixture(load, NULL, th_cleanup);
	tcase_add_test(load, every_event_once_req_and_push);
	tcase_add_test(load, restart_after_sigterm_resumes);
	tcase_add_test(load, restart_after_sigkill_keeps_acknowledged);
	tcase_add_test(load, relaxed_durability_and_exclusive_dir);
	tcase_add_test(load, map_grows_under_load);
	tcase_set_timeout(load, 180);
	suite_add_tcase(s, load);
	return s;
}
