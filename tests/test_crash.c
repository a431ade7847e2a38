/*
 * test_crash.c - SIGKILL at random moments under acknowledged load: what
 * was acknowledged survives exactly once, every input gets exactly one
 * emitted child, checkpoints never move backwards.
 *
 * One data directory lives through many cycles.  A cycle starts one to
 * three `tide publish --acks` processes (producers must be separate
 * processes: nanomsg does not survive fork() without exec) against a
 * `tide run` that loads tests/lua/mirror.lua (one "out.x" per "in.x"),
 * waits a random 20..400 ms and kills the daemon with SIGKILL.  A publish
 * whose engine died exits 3 after its --timeout; the acknowledgements it
 * printed, one line per event in input order, are exactly the events the
 * engine acknowledged, so the k-th line belongs to the k-th input line.
 * Then the daemon is restarted (sometimes killed again at once, while its
 * consumer is still catching up, and restarted once more), a few
 * acknowledged ids are resent and must come back as duplicates with
 * their first seq, and once the consumer has caught up the whole log is
 * checked against a model of every id the test has sent:
 *
 *   - seqs are 1..last without a gap; stream versions count 1, 2, ...;
 *   - every acknowledged (source, id) is stored once, at its acked seq;
 *     no id is stored that was never sent, none twice;
 *   - every "in.x" has exactly one "out.x" child: causationid and
 *     correlationid = its id, id "<its seq>.1", a later seq; every
 *     "out.x" has such a parent;
 *   - the consumer's checkpoint equals the last seq and is never below
 *     any checkpoint (or last seq) observed earlier, including the values
 *     polled from the live log while the daemon was being killed.
 *
 * Producers behave as real at-least-once clients: ids sent but not
 * acknowledged ("in doubt") are retried in later cycles, mixed with
 * resends of acknowledged ids; a stored reply for an id acknowledged
 * before, or a duplicate reply for an id sent for the first time, is a
 * failure.  At the end every in-doubt id is retried without a kill: then
 * every id ever sent is acknowledged and the log holds each exactly once.
 *
 * TIDE_CRASH_SEED and TIDE_CRASH_CYCLES (default 20) override the seed
 * and the number of cycles; tests/soak/crash.sh runs many more.
 * TIDE_CRASH_VERBOSE=1 prints a line per cycle, 2 also each producer's
 * exit and each second kill.  A
 * failure names the seed and copies the data directory, the daemon's log
 * and the producers' files to $TMPDIR/tide-kept-crash-* first.  Timing
 * makes a run only roughly reproducible from its seed: the seed fixes the
 * delays, sizes and resends, not where the kill lands in the engine.
 */
#define _GNU_SOURCE
#include <check.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"
#include "tide.h"

enum {
	CYCLES = 20,         /* default kill/restart cycles */
	PRODUCERS = 3,       /* at most, per cycle */
	FRESH_MIN = 300,     /* new ids per producer per cycle */
	FRESH_MAX = 2500,    /* (the first producer also retries) */
	RETRY_MAX = 4000,    /* in-doubt ids retried per cycle */
	RESENDS = 20,        /* acknowledged ids mixed into a cycle */
	SYNC_RESENDS = 5,    /* acknowledged ids resent after each restart */
	KILL_MAX_MS = 400,   /* the kill lands 0..this after the first commit */
	EARLY_MAX_MS = 100,  /* or 0..this after the producers start */
	CATCHUP_MAX_MS = 30, /* the second kill, when nothing is behind */
	TURN_EVENTS = 200,   /* so that a turn cannot swallow everything */
	SUBJECTS = 13,
};

/* Where the test believes each id "e-<n>" to be. */
enum {
	ID_NEW,   /* never sent */
	ID_SENT,  /* sent for the first time in the running cycle */
	ID_DOUBT, /* sent, never acknowledged: maybe stored, maybe not */
	ID_ACKED, /* acknowledged (stored or duplicate) at acked[n] */
};

typedef struct crash {
	uint64_t seed, rng;
	int cycles, cycle;
	int verbose;     /* TIDE_CRASH_VERBOSE: a line per cycle */
	const char *dir; /* the test's directory: data, daemon log, producers' files */
	char data[600];
	th_daemon d;

	/* the model, one entry per id */
	size_t nids, cap;
	unsigned char *state;
	uint64_t *acked;     /* seq of the acknowledgement (ID_ACKED) */
	uint64_t *logged;    /* seq where the last scan found the id, or 0 */
	unsigned char *kids; /* children the last scan found */

	/* Floors: the highest checkpoint and last seq seen committed so far.
	 * A committed transaction survives SIGKILL, so neither may drop. */
	uint64_t cp_floor, last_floor;

	/* what happened, for the summary */
	long kills, catchup_kills, behind_kills, acks, retried, resent;
} crash;

typedef struct producer {
	char in[700], out[700], err[700];
	size_t *ids; /* id of each input line */
	size_t n;
	pid_t pid;
} producer;

/* ------------------------------------------------------------------------
 * Failing with evidence
 * ------------------------------------------------------------------------ */

/* Stop the daemon where it is, keep the evidence, fail with the seed. */
static void __attribute__((format(printf, 2, 3))) crash_fail(crash *c, const char *fmt, ...)
{
	char msg[2048];
	const char *kept;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	th_daemon_kill(&c->d);
	kept = th_keep(c->dir, "crash");
	ck_abort_msg("seed %llu, cycle %d of %d: %s (evidence: %s; replay with "
		     "TIDE_CRASH_SEED=%llu TIDE_CRASH_CYCLES=%d)",
		     (unsigned long long)c->seed, c->cycle, c->cycles, msg,
		     kept ? kept : "not kept", (unsigned long long)c->seed, c->cycles);
}

#define EXPECT(c, cond, ...) \
	do { \
		if (!(cond)) \
			crash_fail((c), __VA_ARGS__); \
	} while (0)

#define LLU(x) ((unsigned long long)(x))

/* ------------------------------------------------------------------------
 * The model
 * ------------------------------------------------------------------------ */

static size_t
new_id(crash *c)
{
	if (c->nids == c->cap) {
		size_t cap = c->cap * 2 + 65536;
		c->state = realloc(c->state, cap);
		c->acked = realloc(c->acked, cap * sizeof *c->acked);
		c->logged = realloc(c->logged, cap * sizeof *c->logged);
		c->kids = realloc(c->kids, cap);
		ck_assert(c->state && c->acked && c->logged && c->kids);
		c->cap = cap;
	}
	c->state[c->nids] = ID_NEW;
	c->acked[c->nids] = 0;
	return c->nids++;
}

/* Parse "e-<n>" for a known n; returns 0 or -1. */
static int
parse_id(const crash *c, const char *s, size_t *n)
{
	char *end;
	unsigned long long v;

	if (s == NULL || strncmp(s, "e-", 2) != 0 || s[2] < '0' || s[2] > '9')
		return -1;
	v = strtoull(s + 2, &end, 10);
	if (*end != '\0' || v >= c->nids)
		return -1;
	*n = (size_t)v;
	return 0;
}

/* ------------------------------------------------------------------------
 * The daemon and the floors
 * ------------------------------------------------------------------------ */

/* Read the live log (a read snapshot, safe while the daemon writes): the
 * checkpoint and the last seq may only have grown since last seen. */
static void
observe(crash *c)
{
	uint64_t last, cp;

	if (th_log_state(c->data, "mirror", NULL, &last, &cp) != 0)
		return; /* no log yet, before the first start */
	EXPECT(c, cp >= c->cp_floor, "checkpoint of 'mirror' moved backwards: %llu, was %llu",
	       LLU(cp), LLU(c->cp_floor));
	EXPECT(c, last >= c->last_floor, "last seq moved backwards: %llu, was %llu", LLU(last),
	       LLU(c->last_floor));
	c->cp_floor = cp;
	c->last_floor = last;
}

/* Let @p ms pass while watching the floors.  The wait is the point here
 * (it picks the moment of the kill), not a way to synchronise. */
static void
watch(crash *c, int ms)
{
	int64_t until = th_ms() + ms;

	do {
		observe(c);
		if (th_ms() >= until)
			break;
		th_pause();
	} while (th_ms() < until);
}

/* Start `tide run`, with the mirror script or (@p script = 0) without any
 * consumer, so that inputs pile up behind the consumer's checkpoint. */
/* Wait (deadline) until the consumer's checkpoint reaches @p target.  It
 * moves fast while catching up, so this polls every millisecond. */
static void
wait_checkpoint(crash *c, uint64_t target)
{
	int64_t deadline = th_ms() + 20000;
	struct timespec ms = { 0, 1000000 };

	do {
		observe(c);
		if (c->cp_floor >= target)
			return;
		nanosleep(&ms, NULL);
	} while (th_ms() < deadline);
	crash_fail(c, "the consumer did not reach seq %llu within 20 s", LLU(target));
}

/* Wait (deadline) until the log has grown past @p last: the producers are
 * getting through. */
static void
wait_growth(crash *c, uint64_t last)
{
	int64_t deadline = th_ms() + 20000;

	do {
		observe(c);
		if (c->last_floor > last)
			return;
		th_pause();
	} while (th_ms() < deadline);
	crash_fail(c, "the log did not grow past seq %llu within 20 s of starting the producers",
		   LLU(last));
}

static void
start(crash *c, int script)
{
	char extra[700] = "";

	if (script)
		snprintf(extra, sizeof extra, "--script '%s'", th_src("tests/lua/mirror.lua"));
	EXPECT(c,
	       th_daemon_spawn(&c->d, c->data, "--data '%s' %s --set turn_events=%d", c->data,
			       extra, TURN_EVENTS) == 0,
	       "tide run did not start again (see %s)", c->d.log);
	observe(c); /* what was committed before the kill is all there */
}

static void
sigkill(crash *c)
{
	th_daemon_kill(&c->d);
	c->kills++;
}

/* Kill the daemon again soon after its restart: at a random point of the
 * consumer's backlog if it has one, else within CATCHUP_MAX_MS; restart.
 * Returns 2 if the consumer was still behind at the kill, else 1. */
static int
second_kill(crash *c)
{
	uint64_t last, cp, target = 0;
	int behind;

	if (th_log_state(c->data, "mirror", NULL, &last, &cp) == 0 && cp < last) {
		target = th_rand_range(&c->rng, cp, last - 1);
		wait_checkpoint(c, target);
	} else {
		watch(c, (int)th_rand_range(&c->rng, 0, CATCHUP_MAX_MS));
	}
	behind = th_log_state(c->data, "mirror", NULL, &last, &cp) == 0 && cp < last;
	sigkill(c);
	c->catchup_kills++;
	c->behind_kills += behind;
	if (c->verbose > 1)
		fprintf(stderr, "crash: second kill: target %llu, checkpoint %llu of %llu\n",
			LLU(target), LLU(cp), LLU(last));
	start(c, 1);
	return 1 + behind;
}

/* ------------------------------------------------------------------------
 * Producers
 * ------------------------------------------------------------------------ */

static void
shuffle(crash *c, size_t *v, size_t n)
{
	for (size_t k = n; k > 1; k--) {
		size_t j = (size_t)th_rand_range(&c->rng, 0, k - 1), t = v[k - 1];
		v[k - 1] = v[j];
		v[j] = t;
	}
}

/* Write the producer's input and start `tide publish` on it. */
static void
producer_start(crash *c, producer *p, int which, const char *timeout)
{
	FILE *f;
	/* Vary the shape of the traffic: message sizes and requests in flight. */
	static const int batches[] = { 1, 7, 20, 20, 50 };
	int batch = batches[th_rand_range(&c->rng, 0, 4)];
	int window = (int)th_rand_range(&c->rng, 1, 4);

	snprintf(p->in, sizeof p->in, "%s/in-%d-%d.ndjson", c->dir, c->cycle, which);
	snprintf(p->out, sizeof p->out, "%s/acks-%d-%d", c->dir, c->cycle, which);
	snprintf(p->err, sizeof p->err, "%s/err-%d-%d", c->dir, c->cycle, which);
	f = fopen(p->in, "w");
	ck_assert_ptr_nonnull(f);
	for (size_t k = 0; k < p->n; k++) {
		size_t n = p->ids[k];
		fprintf(f,
			"{\"specversion\":\"1.0\",\"id\":\"e-%zu\",\"source\":\"/p\","
			"\"type\":\"in.x\",\"subject\":\"k%zu\",\"data\":{\"n\":%zu}}\n",
			n, n % SUBJECTS, n);
	}
	ck_assert_int_eq(fclose(f), 0);
	p->pid = th_bg_io(p->in, p->out, p->err,
			  "'%s' publish --data '%s' --acks -q --batch %d --window %d --timeout %s",
			  TIDE_BIN, c->data, batch, window, timeout);
	ck_assert_int_gt(p->pid, 0);
}

/* Account for one acknowledgement of id @p n at @p seq. */
static void
ack(crash *c, size_t n, int kind, uint64_t seq, const char *where)
{
	EXPECT(c, kind == TH_ACK_STORED || kind == TH_ACK_DUPLICATE, "%s (e-%zu): not an ack",
	       where, n);
	EXPECT(c, seq > 0, "%s (e-%zu): seq 0", where, n);
	switch (c->state[n]) {
	case ID_ACKED:
		EXPECT(c, kind == TH_ACK_DUPLICATE,
		       "%s: e-%zu stored again at seq %llu, first acknowledged at seq %llu", where,
		       n, LLU(seq), LLU(c->acked[n]));
		EXPECT(c, seq == c->acked[n],
		       "%s: e-%zu acknowledged as a duplicate of seq %llu, first at seq %llu",
		       where, n, LLU(seq), LLU(c->acked[n]));
		break;
	case ID_SENT:
		EXPECT(c, kind == TH_ACK_STORED,
		       "%s: e-%zu, sent for the first time, acknowledged as a duplicate (seq %llu)",
		       where, n, LLU(seq));
		/* fall through */
	case ID_DOUBT:
		c->state[n] = ID_ACKED;
		c->acked[n] = seq;
		c->acks++;
		break;
	default: crash_fail(c, "%s: e-%zu was never sent but is acknowledged", where, n);
	}
}

/* Wait for the producer and take its acknowledgements: the k-th line
 * answers the k-th input line, and nothing after the last line printed
 * is known.  With @p must_finish (no kill), every event must be answered. */
static void
producer_collect(crash *c, producer *p, int must_finish)
{
	int st = th_bg_wait(p->pid, 60000);
	char *s, *line, *next, where[1024];
	size_t k = 0;

	if (c->verbose > 1) {
		char *e = th_slurp(p->err);
		fprintf(stderr, "crash: %s: exit %d: %s", p->in, st, e ? e : "");
		free(e);
	}
	if (st != 0 && (st != 3 || must_finish)) {
		char *e = th_slurp(p->err);
		crash_fail(c, "tide publish < %s exited with %d: %.300s", p->in, st, e ? e : "");
	}
	s = th_slurp(p->out);
	EXPECT(c, s != NULL, "cannot read %s", p->out);
	for (line = s; *line != '\0'; line = next) {
		uint64_t seq;
		int kind;
		next = strchr(line, '\n');
		EXPECT(c, next != NULL, "%s: last line unterminated: %.200s", p->out, line);
		*next++ = '\0';
		EXPECT(c, k < p->n, "%s: more acknowledgements than the %zu events", p->out, p->n);
		kind = th_ack_parse(line, &seq);
		snprintf(where, sizeof where, "%s line %zu '%.100s'", p->out, k + 1, line);
		ack(c, p->ids[k], kind, seq, where);
		k++;
	}
	free(s);
	EXPECT(c, st != 0 || k == p->n, "%s: publish exited 0 after %zu of %zu acknowledgements",
	       p->out, k, p->n);
	free(p->ids);
	p->ids = NULL;
}

/* Up to @p max ids in state @p state, picked at random (for acknowledged
 * ids) or the oldest first (for retries). */
static size_t
pick(crash *c, int state, size_t max, size_t *out)
{
	size_t got = 0;

	if (state == ID_ACKED) {
		for (size_t tries = 0; got < max && tries < max * 20 && c->nids > 0; tries++) {
			size_t n = (size_t)th_rand_range(&c->rng, 0, c->nids - 1);
			if (c->state[n] == ID_ACKED)
				out[got++] = n;
		}
		return got;
	}
	for (size_t n = 0; n < c->nids && got < max; n++)
		if (c->state[n] == state)
			out[got++] = n;
	return got;
}

/* Start 1..PRODUCERS producers of fresh ids; the first also retries the
 * ids in doubt and resends acknowledged ones, in a shuffled order. */
static int
producers_start(crash *c, producer *ps)
{
	int np = (int)th_rand_range(&c->rng, 1, PRODUCERS);

	for (int i = 0; i < np; i++) {
		producer *p = &ps[i];
		size_t fresh = (size_t)th_rand_range(&c->rng, FRESH_MIN, FRESH_MAX);
		size_t extra = i == 0 ? RETRY_MAX + RESENDS : 0;

		memset(p, 0, sizeof *p);
		p->ids = malloc((fresh + extra) * sizeof *p->ids);
		ck_assert_ptr_nonnull(p->ids);
		if (i == 0) {
			size_t r = pick(c, ID_DOUBT, RETRY_MAX, p->ids);
			size_t a = pick(c, ID_ACKED, RESENDS, p->ids + r);
			c->retried += (long)r;
			c->resent += (long)a;
			p->n = r + a;
		}
		for (size_t k = 0; k < fresh; k++) {
			size_t n = new_id(c);
			c->state[n] = ID_SENT;
			p->ids[p->n++] = n;
		}
		if (i == 0)
			shuffle(c, p->ids, p->n);
	}
	for (int i = 0; i < np; i++)
		producer_start(c, &ps[i], i, "0.5");
	return np;
}

static void
producers_collect(crash *c, producer *ps, int np)
{
	for (int i = 0; i < np; i++)
		producer_collect(c, &ps[i], 0);
	/* Whatever was sent and not acknowledged is now in doubt. */
	for (size_t n = 0; n < c->nids; n++)
		if (c->state[n] == ID_SENT)
			c->state[n] = ID_DOUBT;
}

/* Resend a few acknowledged ids over REQ from the test process: each must
 * come back as a duplicate with its first seq. */
static void
resend_acked(crash *c)
{
	size_t ids[SYNC_RESENDS], n = pick(c, ID_ACKED, SYNC_RESENDS, ids);
	char msg[SYNC_RESENDS * 200], *reply = NULL, *msgp = msg, *line, *next;
	size_t len = 0, k = 0;

	if (n == 0)
		return;
	for (size_t j = 0; j < n; j++)
		len += (size_t)snprintf(msg + len, sizeof msg - len,
					"{\"specversion\":\"1.0\",\"id\":\"e-%zu\",\"source\":"
					"\"/p\",\"type\":\"in.x\",\"subject\":\"k%zu\"}\n",
					ids[j], ids[j] % SUBJECTS);
	EXPECT(c, th_req_many(c->d.rep, &msgp, 1, &reply, 1, 20000) == 1,
	       "no reply to %zu resent events", n);
	for (line = reply; line != NULL && *line != '\0' && k < n; line = next, k++) {
		uint64_t seq;
		int kind;
		char where[200];
		if ((next = strchr(line, '\n')) != NULL)
			*next++ = '\0';
		kind = th_ack_parse(line, &seq);
		snprintf(where, sizeof where, "resent after restart '%.100s'", line);
		EXPECT(c, kind == TH_ACK_DUPLICATE, "%s: e-%zu not a duplicate", where, ids[k]);
		ack(c, ids[k], kind, seq, where);
		c->resent++;
	}
	EXPECT(c, k == n, "%zu replies to %zu resent events", k, n);
	free(reply);
}

/* ------------------------------------------------------------------------
 * Checking the log
 * ------------------------------------------------------------------------ */

typedef struct scan {
	crash *c;
	uint64_t next;              /* the seq expected next */
	uint64_t version[SUBJECTS]; /* events seen per stream */
	size_t inputs, children;
} scan;

static int
scan_one(void *ud, const struct tide_event *ev)
{
	scan *s = ud;
	crash *c = s->c;
	uint64_t seq = tide_event_seq(ev), version = tide_event_version(ev);
	const char *id = tide_event_attr(ev, "id", NULL),
		   *source = tide_event_attr(ev, "source", NULL),
		   *type = tide_event_attr(ev, "type", NULL),
		   *subject = tide_event_attr(ev, "subject", NULL),
		   *cause = tide_event_attr(ev, "causationid", NULL),
		   *corr = tide_event_attr(ev, "correlationid", NULL);
	char want[64];
	size_t n;
	unsigned sub;

	EXPECT(c, seq == s->next, "seq %llu where %llu was due: a gap", LLU(seq), LLU(s->next));
	s->next++;
	EXPECT(c, id && source && type && subject, "seq %llu lacks an attribute", LLU(seq));
	EXPECT(c, sscanf(subject, "k%u", &sub) == 1 && sub < SUBJECTS,
	       "seq %llu: unexpected subject %s", LLU(seq), subject);
	EXPECT(c, version == ++s->version[sub],
	       "seq %llu: version %llu in stream %s, where %llu was due", LLU(seq), LLU(version),
	       subject, LLU(s->version[sub]));
	if (strcmp(type, "in.x") == 0) {
		EXPECT(c, strcmp(source, "/p") == 0 && parse_id(c, id, &n) == 0,
		       "seq %llu: input (%s, %s) was never sent", LLU(seq), source, id);
		EXPECT(c, c->state[n] != ID_NEW, "seq %llu: e-%zu was never sent", LLU(seq), n);
		EXPECT(c, c->logged[n] == 0, "(/p, e-%zu) stored twice: seqs %llu and %llu", n,
		       LLU(c->logged[n]), LLU(seq));
		EXPECT(c, sub == n % SUBJECTS, "seq %llu: e-%zu in stream %s", LLU(seq), n,
		       subject);
		c->logged[n] = seq;
		s->inputs++;
	} else if (strcmp(type, "out.x") == 0) {
		EXPECT(c, strcmp(source, "/tide/mirror") == 0, "seq %llu: child from %s", LLU(seq),
		       source);
		EXPECT(c, parse_id(c, cause, &n) == 0 && c->logged[n] != 0,
		       "child seq %llu: cause %s is not an earlier input", LLU(seq),
		       cause ? cause : "(none)");
		EXPECT(c, corr != NULL && strcmp(corr, cause) == 0,
		       "child seq %llu: correlationid %s, cause %s", LLU(seq),
		       corr ? corr : "(none)", cause);
		snprintf(want, sizeof want, "%llu.1", LLU(c->logged[n]));
		EXPECT(c, strcmp(id, want) == 0, "child seq %llu of e-%zu (seq %llu) has id %s",
		       LLU(seq), n, LLU(c->logged[n]), id);
		EXPECT(c, sub == n % SUBJECTS, "child seq %llu: e-%zu in stream %s", LLU(seq), n,
		       subject);
		EXPECT(c, c->kids[n] == 0, "input e-%zu (seq %llu) has a second child at seq %llu",
		       n, LLU(c->logged[n]), LLU(seq));
		c->kids[n]++;
		s->children++;
	} else {
		crash_fail(c, "seq %llu: unexpected type %s", LLU(seq), type);
	}
	return 0;
}

/* Wait for the consumer to catch up, then check the whole log against the
 * model.  Returns the number of inputs in the log. */
static size_t
check_log(crash *c)
{
	uint64_t events, last, cp;
	scan s;
	long got;

	EXPECT(c, th_wait_settled(c->data, "mirror", 0, 90000),
	       "the consumer did not catch up within 90 s");
	observe(c);
	EXPECT(c, th_log_state(c->data, "mirror", &events, &last, &cp) == 0, "log unreadable");
	EXPECT(c, cp == last && events == last,
	       "settled at checkpoint %llu, last %llu, %llu events", LLU(cp), LLU(last),
	       LLU(events));

	memset(&s, 0, sizeof s);
	s.c = c;
	s.next = 1;
	memset(c->logged, 0, c->nids * sizeof *c->logged);
	memset(c->kids, 0, c->nids);
	got = th_log_scan(c->data, 1, scan_one, &s);
	EXPECT(c, got >= 0, "cannot scan the log");
	/* Nothing is running but the idle daemon: the scan saw everything. */
	EXPECT(c, (uint64_t)got == last, "scanned %ld events, last seq %llu", got, LLU(last));

	for (size_t n = 0; n < c->nids; n++) {
		if (c->state[n] == ID_ACKED)
			EXPECT(c, c->logged[n] == c->acked[n],
			       "acknowledged e-%zu (seq %llu) is %s%llu", n, LLU(c->acked[n]),
			       c->logged[n] ? "stored at seq " : "missing", LLU(c->logged[n]));
		if (c->logged[n] != 0)
			EXPECT(c, c->kids[n] == 1, "input e-%zu (seq %llu) has no child", n,
			       LLU(c->logged[n]));
	}
	EXPECT(c, s.children == s.inputs, "%zu children for %zu inputs", s.children, s.inputs);
	return s.inputs;
}

/* ------------------------------------------------------------------------
 * The test
 * ------------------------------------------------------------------------ */

static uint64_t
default_seed(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ((uint64_t)ts.tv_sec * 1000003u) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
}

START_TEST(kill_restart_cycles)
{
	crash c;
	producer ps[PRODUCERS];
	int64_t t0 = th_ms();
	size_t inputs = 0, acked = 0;

	memset(&c, 0, sizeof c);
	c.seed = (uint64_t)th_env_ll("TIDE_CRASH_SEED", (long long)(default_seed() % 1000000007u));
	c.rng = c.seed;
	c.cycles = (int)th_env_ll("TIDE_CRASH_CYCLES", CYCLES);
	c.verbose = (int)th_env_ll("TIDE_CRASH_VERBOSE", 0);
	c.dir = th_tmpdir();
	snprintf(c.data, sizeof c.data, "%s/data", c.dir);
	fprintf(stderr, "crash: seed %llu, %d cycles\n", LLU(c.seed), c.cycles);

	start(&c, 1);
	for (c.cycle = 1; c.cycle <= c.cycles; c.cycle++) {
		int64_t t_load, t_collect, t_check;
		int np, delay, second = 0;
		/* One cycle in four takes its load without the script, so that
		 * the restart below finds a backlog for the consumer. */
		int ingest_only = th_rand_range(&c.rng, 0, 3) == 0;

		if (ingest_only) {
			EXPECT(&c, th_daemon_stop(&c.d) == 0, "SIGTERM: unclean exit (see %s)",
			       c.d.log);
			start(&c, 0);
		}
		np = producers_start(&c, ps);

		/* Kill at a random moment of the load: mostly once the load has
		 * reached the log (a publish needs tens of ms to start), and
		 * sometimes early, maybe before a producer connected. */
		if (th_rand_range(&c.rng, 0, 7) == 0) {
			delay = (int)th_rand_range(&c.rng, 0, EARLY_MAX_MS);
		} else {
			wait_growth(&c, c.last_floor);
			delay = (int)th_rand_range(&c.rng, 0, KILL_MAX_MS);
		}
		watch(&c, delay);
		sigkill(&c);
		t_load = th_ms();
		producers_collect(&c, ps, np);
		t_collect = th_ms();
		start(&c, 1);

		/* Kill again while the consumer catches up: always after an
		 * ingest-only load, else sometimes (right after the restart). */
		if (ingest_only || th_rand_range(&c.rng, 0, 2) == 0)
			second = second_kill(&c);
		resend_acked(&c);
		t_check = th_ms();
		check_log(&c);
		if (c.verbose)
			fprintf(stderr,
				"crash: cycle %d: %d producers%s, kill after %d ms, collected in "
				"%lld ms%s%s, checked in %lld ms; %zu ids acked, %llu events\n",
				c.cycle, np, ingest_only ? " (ingest only)" : "", delay,
				(long long)(t_collect - t_load), second ? ", second kill" : "",
				second > 1 ? " (consumer behind)" : "",
				(long long)(th_ms() - t_check), (size_t)c.acks, LLU(c.last_floor));
	}

	/* No more kills: retry everything in doubt until it is acknowledged.
	 * Then every id ever sent is in the log exactly once. */
	c.cycle = c.cycles + 1;
	{
		producer p;
		memset(&p, 0, sizeof p);
		p.ids = malloc((c.nids + 1) * sizeof *p.ids);
		ck_assert_ptr_nonnull(p.ids);
		p.n = pick(&c, ID_DOUBT, c.nids, p.ids);
		c.retried += (long)p.n;
		producer_start(&c, &p, 0, "30");
		producer_collect(&c, &p, 1);
	}
	inputs = check_log(&c);
	for (size_t n = 0; n < c.nids; n++) {
		EXPECT(&c, c.state[n] == ID_ACKED, "e-%zu was sent but never acknowledged", n);
		acked++;
	}
	EXPECT(&c, inputs == acked, "%zu inputs in the log, %zu ids acknowledged", inputs, acked);
	EXPECT(&c, th_daemon_stop(&c.d) == 0, "tide run did not stop cleanly (see %s)", c.d.log);

	fprintf(stderr,
		"crash: seed %llu: %d cycles, %ld kills (%ld right after a restart, %ld of them "
		"with the consumer catching up), %zu ids acknowledged, %ld retries, %ld resends, "
		"%llu events, %.1f s\n",
		LLU(c.seed), c.cycles, c.kills, c.catchup_kills, c.behind_kills, acked, c.retried,
		c.resent, LLU(c.last_floor), (double)(th_ms() - t0) / 1000.0);
	free(c.state);
	free(c.acked);
	free(c.logged);
	free(c.kids);
}
END_TEST

Suite *
crash_suite(void)
{
	Suite *s = suite_create("crash");
	TCase *tc = tcase_create("sigkill");
	long long cycles = th_env_ll("TIDE_CRASH_CYCLES", CYCLES);

	tcase_add_checked_fixture(tc, NULL, th_cleanup);
	/* About 1.5 s a cycle here, more under the sanitizers; generous. */
	tcase_set_timeout(tc, cycles > CYCLES ? (double)cycles * 12 : 240);
	tcase_add_test(tc, kill_restart_cycles);
	suite_add_tcase(s, tc);
	return s;
}
