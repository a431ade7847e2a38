/*
 * test_crash.c - SIGKILL at random moments under acknowledged load, with a
 * consumer, two projections and live reloads: what was acknowledged
 * survives exactly once, every input gets exactly one emitted child, each
 * projection's state is what the log says up to its stored position, and
 * no checkpoint or position moves backwards.
 *
 * One data directory lives through many cycles.  A cycle starts one to
 * three `tide publish --acks` processes (producers must be separate
 * processes: nanomsg does not survive fork() without exec) against a
 * `tide run` that loads a copy of tests/lua/mirror.lua (the consumer: one
 * "out.x" per "in.x") and tests/lua/soak.lua (the projections: by_subject,
 * keyed by the subject, and by_group, keyed by the field path data.g),
 * waits a random 20..400 ms and kills the daemon with SIGKILL.  A publish
 * whose engine died exits 3 after its --timeout; the acknowledgements it
 * printed, one line per event in input order, are exactly the events the
 * engine acknowledged, so the k-th line belongs to the k-th input line.
 * Then the daemon is restarted (sometimes killed again at once, while its
 * consumer is still catching up, and restarted once more), a few
 * acknowledged ids are resent and must come back as duplicates with
 * their first seq, and once the consumer and the projections have caught
 * up the whole log is checked against a model of every id the test has
 * sent:
 *
 *   - seqs are 1..last without a gap; stream versions count 1, 2, ...;
 *   - every acknowledged (source, id) is stored once, at its acked seq;
 *     no id is stored that was never sent, none twice;
 *   - every "in.x" has exactly one "out.x" child: causationid and
 *     correlationid = its id, id "<its seq>.1", a later seq; every
 *     "out.x" has such a parent;
 *   - the consumer's checkpoint equals the last seq and is never below
 *     any checkpoint (or last seq) observed earlier, including the values
 *     polled from the live log while the daemon was being killed;
 *   - no dead letter: the consumer never fails, and random kills cannot
 *     land three times in a row on the same event in the same handler,
 *     which is what makes the flight recorder set an event aside.
 *
 * The projections are checked after every kill (the log is still then)
 * and once they have caught up: each key's state must be what the events
 * of the log up to the projection's stored position add up to (counts,
 * a sum, the stream's version, the highest seq), so an event applied
 * twice shows as a count above the model's and a lost one as a count
 * below it.  A stored position never moves backwards, nor does a
 * rebuild's progress, and no projection stops or rebuilds unasked.
 *
 * Reloads: in half the cycles the test sends SIGHUP while the producers
 * publish, either one to three times, each time waiting until the daemon
 * logs the reload, or once just before the SIGKILL; the second kill after
 * a restart may also come right after a SIGHUP, or after a reload in the
 * middle of the consumer's catch-up.  Before half the SIGHUPs the
 * consumer's script is rewritten (renamed over) to its other version,
 * which differs by a harmless line; soak.lua never changes, as its text is
 * part of the projections' definition.  Now and then the test asks over
 * REP for a projection to be rebuilt instead: the kills then land in the
 * rebuild too, and the rebuilt state must equal the model.
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
 * exit, each second kill and each reload.  A failure names the seed and
 * copies the data directory, the daemon's log and the producers' files to
 * $TMPDIR/tide-kept-crash-* first.  Timing makes a run only roughly
 * reproducible from its seed: the seed fixes the delays, sizes, resends,
 * reloads and rebuilds, not where the kill lands in the engine.
 */
#define _GNU_SOURCE
#include <check.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
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
	HUP_KILL_MAX_MS = 3, /* the kill 0..this after a SIGHUP, when it follows one */
	RELOAD_MS = 20000,   /* deadline for a reload to be logged */
	REBUILD_ONE_IN = 10, /* cycles that ask for a rebuild, one in this many */
	SETTLE_MS = 90000,   /* deadline for the consumer and projections to catch up */
	TURN_EVENTS = 200,   /* so that a turn cannot swallow everything */
	SUBJECTS = 13,       /* "k0".."k12": e-<n> goes to k<n % SUBJECTS> */
	GROUPS = 7,          /* data.g = n % GROUPS, across the subjects */
	NPROJ = 2,           /* the projections of tests/lua/soak.lua */
};

static const char *const proj_names[NPROJ] = { "by_subject", "by_group" };

/* Where the test believes each id "e-<n>" to be. */
enum {
	ID_NEW,   /* never sent */
	ID_SENT,  /* sent for the first time in the running cycle */
	ID_DOUBT, /* sent, never acknowledged: maybe stored, maybe not */
	ID_ACKED, /* acknowledged (stored or duplicate) at acked[n] */
};

/* What a seq holds, in the map of the log (crash.at). */
enum { AT_IN = 1, AT_OUT = 2 };

/* One projection's progress as stored, read with tide_log_projections(). */
typedef struct pinfo {
	int found;
	uint64_t live, build; /* live_seq, build_seq */
	int building, serving, faulted;
	uint64_t fault_seq;
	char error[256];
} pinfo;

/* What the test has seen of one projection.  Committed progress survives
 * SIGKILL, so neither floor may drop. */
typedef struct pfloor {
	int seen;       /* recorded in the log: it must stay there */
	uint64_t live;  /* highest live_seq seen */
	uint64_t build; /* highest build_seq seen since the last rebuild request */
	int asked;      /* a rebuild was requested since the last settled check */
} pfloor;

typedef struct crash {
	uint64_t seed, rng;
	int cycles, cycle;
	int verbose;     /* TIDE_CRASH_VERBOSE: a line per cycle */
	const char *dir; /* the test's directory: data, daemon log, producers' files */
	char data[600];
	th_daemon d;
	int scripts;      /* the running daemon loaded the scripts */
	int ready;        /* it has answered on REP since its start */
	char script[700]; /* the consumer's script, rewritten for reloads */
	char *mirror;     /* tests/lua/mirror.lua, the text it starts from */
	int version;      /* which of its two versions is in place */

	/* the model, one entry per id */
	size_t nids, cap;
	unsigned char *state;
	uint64_t *acked;     /* seq of the acknowledgement (ID_ACKED) */
	uint64_t *logged;    /* seq where the last scan found the id, or 0 */
	unsigned char *kids; /* children the last scan found */

	/* The map of the log: at[seq - 1] = n << 2 | AT_IN for input e-<n>,
	 * n << 2 | AT_OUT for its child.  Committed events never change, so
	 * it only grows between two full scans. */
	uint64_t *at;
	uint64_t nat, atcap;

	/* Floors: the highest checkpoint and last seq seen committed so far.
	 * A committed transaction survives SIGKILL, so neither may drop. */
	uint64_t cp_floor, last_floor;
	pfloor pf[NPROJ];

	/* what happened, for the summary */
	long kills, catchup_kills, behind_kills, hup_kills, acks, retried, resent;
	long reloads, changed, rebuilds, proj_checks;
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

/* Enter the next seq of the log in the map: @p kind AT_IN or AT_OUT of
 * id e-<n>. */
static void
map_seq(crash *c, int kind, size_t n)
{
	if (c->nat == c->atcap) {
		uint64_t cap = c->atcap * 2 + 65536;
		c->at = realloc(c->at, cap * sizeof *c->at);
		ck_assert_ptr_nonnull(c->at);
		c->atcap = cap;
	}
	c->at[c->nat++] = (uint64_t)n << 2 | (uint64_t)kind;
}

/* ------------------------------------------------------------------------
 * Checking the projections
 * ------------------------------------------------------------------------ */

/* What the projections must hold after the events 1..upto of the log. */
typedef struct pmodel {
	uint64_t upto;
	/* by_subject */
	long long ins[SUBJECTS], outs[SUBJECTS], top[SUBJECTS];
	/* by_group */
	long long count[GROUPS], sum[GROUPS], gtop[GROUPS];
} pmodel;

static void
model_at(const crash *c, uint64_t upto, pmodel *m)
{
	memset(m, 0, sizeof *m);
	m->upto = upto;
	for (uint64_t seq = 1; seq <= upto; seq++) {
		uint64_t v = c->at[seq - 1], n = v >> 2;
		unsigned sub = (unsigned)(n % SUBJECTS), g = (unsigned)(n % GROUPS);

		if ((v & 3) == AT_IN) {
			m->ins[sub]++;
			m->count[g]++;
			m->sum[g] += (long long)n;
			m->gtop[g] = (long long)seq;
		} else {
			m->outs[sub]++;
		}
		m->top[sub] = (long long)seq;
	}
}

/* Extend the map with the log's events after the last one mapped. */
static int
map_one(void *ud, const struct tide_event *ev)
{
	crash *c = ud;
	uint64_t seq = tide_event_seq(ev);
	const char *type = tide_event_attr(ev, "type", NULL);
	size_t n;

	EXPECT(c, seq == c->nat + 1, "seq %llu where %llu was due: a gap", LLU(seq),
	       LLU(c->nat + 1));
	if (type != NULL && strcmp(type, "in.x") == 0 &&
	    parse_id(c, tide_event_attr(ev, "id", NULL), &n) == 0)
		map_seq(c, AT_IN, n);
	else if (type != NULL && strcmp(type, "out.x") == 0 &&
		 parse_id(c, tide_event_attr(ev, "causationid", NULL), &n) == 0)
		map_seq(c, AT_OUT, n);
	else
		crash_fail(c, "seq %llu: neither an input that was sent nor its child (type %s)",
			   LLU(seq), type ? type : "(none)");
	return 0;
}

static void
map_until(crash *c, uint64_t seq)
{
	if (c->nat < seq)
		EXPECT(c, th_log_scan(c->data, c->nat + 1, map_one, c) >= 0, "cannot scan the log");
	EXPECT(c, c->nat >= seq, "the log ends at seq %llu, before a projection's position %llu",
	       LLU(c->nat), LLU(seq));
}

static void
pinfo_cb(void *ud, const tide_projection_info *pi)
{
	pinfo *v = ud;

	for (int k = 0; k < NPROJ; k++) {
		if (strcmp(pi->name, proj_names[k]) != 0)
			continue;
		v[k].found = 1;
		v[k].live = pi->live_seq;
		v[k].build = pi->build_seq;
		v[k].building = pi->building;
		v[k].serving = pi->serving;
		v[k].faulted = pi->faulted;
		v[k].fault_seq = pi->fault_seq;
		snprintf(v[k].error, sizeof v[k].error, "%s", pi->error ? pi->error : "");
	}
}

/* Read every projection's progress, then (so that the last seq is at
 * least every position read) the log's size. */
static int
read_progress(tide_log *log, pinfo *v, uint64_t *last)
{
	tide_log_stat st;

	memset(v, 0, NPROJ * sizeof *v);
	if (tide_log_projections(log, pinfo_cb, v) != TIDE_OK ||
	    tide_log_stat_get(log, &st) != TIDE_OK)
		return -1;
	*last = st.last_seq;
	return 0;
}

/* Hold one projection's progress against what was seen before. */
static void
check_progress(crash *c, int k, const pinfo *p, uint64_t last)
{
	pfloor *f = &c->pf[k];
	const char *name = proj_names[k];

	if (!p->found) {
		EXPECT(c, !f->seen, "projection %s has vanished from the log", name);
		return;
	}
	f->seen = 1;
	EXPECT(c, !p->faulted, "projection %s stopped at seq %llu: %s", name, LLU(p->fault_seq),
	       p->error);
	EXPECT(c, p->live <= last && p->build <= last,
	       "projection %s is at seq %llu (building: %llu), past the last seq %llu", name,
	       LLU(p->live), LLU(p->build), LLU(last));
	EXPECT(c, p->live >= f->live, "projection %s moved backwards: at seq %llu, was %llu", name,
	       LLU(p->live), LLU(f->live));
	f->live = p->live;
	if (!p->building)
		return;
	/* The first build is one; any other is one the test asked for, as
	 * the definition never changes. */
	EXPECT(c, !p->serving || f->asked,
	       "projection %s is being rebuilt (at seq %llu) though nothing asked for it", name,
	       LLU(p->build));
	EXPECT(c, p->build >= f->build,
	       "the rebuild of projection %s moved backwards: at seq %llu, was %llu", name,
	       LLU(p->build), LLU(f->build));
	f->build = p->build;
}

/* One projection's states as read by tide_log_query(). */
typedef struct pstates {
	int which;
	long long v[SUBJECTS][4]; /* the fields below, per key */
	unsigned char have[SUBJECTS];
	char odd[160]; /* the first key or state that makes no sense */
} pstates;

static const char *const fields[NPROJ][4] = {
	{ "ins", "outs", "ver", "top" },
	{ "count", "sum", "top", NULL },
};

/* The integer member @p name of a flat JSON object, or -1. */
static long long
member(const char *json, size_t len, const char *name)
{
	char pat[40], *copy = strndup(json, len);
	const char *p;
	long long v = -1;

	ck_assert_ptr_nonnull(copy);
	snprintf(pat, sizeof pat, "\"%s\":", name);
	if ((p = strstr(copy, pat)) != NULL)
		v = strtoll(p + strlen(pat), NULL, 10);
	free(copy);
	return v;
}

static int
state_cb(void *ud, const char *key, size_t klen, const char *json, size_t jlen)
{
	pstates *s = ud;
	char k[40], *end = k;
	unsigned long i = SUBJECTS;

	snprintf(k, sizeof k, "%.*s", (int)(klen < 39 ? klen : 39), key);
	if (s->which == 0 && k[0] == 'k' && k[1] >= '0' && k[1] <= '9')
		i = strtoul(k + 1, &end, 10);
	else if (s->which == 1 && k[0] >= '0' && k[0] <= '9')
		i = strtoul(k, &end, 10);
	if (i >= (s->which == 0 ? SUBJECTS : GROUPS) || *end != '\0' || klen >= 39 || s->have[i]) {
		if (s->odd[0] == '\0')
			snprintf(s->odd, sizeof s->odd, "key '%s' (%.*s)", k,
				 (int)(jlen < 100 ? jlen : 100), json);
		return 0;
	}
	s->have[i] = 1;
	for (int f = 0; f < 4 && fields[s->which][f]; f++)
		if ((s->v[i][f] = member(json, jlen, fields[s->which][f])) < 0 && s->odd[0] == '\0')
			snprintf(s->odd, sizeof s->odd, "key '%s' lacks '%s': %.*s", k,
				 fields[s->which][f], (int)(jlen < 100 ? jlen : 100), json);
	return 0;
}

/* Compare @p s, read at position @p m->upto, with the model. */
static void
compare_states(crash *c, const pstates *s, const pmodel *m)
{
	const char *name = proj_names[s->which];
	int nkeys = s->which == 0 ? SUBJECTS : GROUPS;

	EXPECT(c, s->odd[0] == '\0', "projection %s at seq %llu: %s", name, LLU(m->upto), s->odd);
	for (int i = 0; i < nkeys; i++) {
		/* the model's values, in the order of fields[] */
		long long want[4];
		char key[16];

		if (s->which == 0) {
			want[0] = m->ins[i];
			want[1] = m->outs[i];
			want[2] = m->ins[i] + m->outs[i];
			want[3] = m->top[i];
			snprintf(key, sizeof key, "k%d", i);
		} else {
			want[0] = m->count[i];
			want[1] = m->sum[i];
			want[2] = m->gtop[i];
			want[3] = 0;
			snprintf(key, sizeof key, "%d", i);
		}
		if (!s->have[i]) {
			EXPECT(c, want[0] == 0 && (s->which == 1 || want[1] == 0),
			       "projection %s at seq %llu has no state for key %s, where the log "
			       "has %lld events for it: lost",
			       name, LLU(m->upto), key, want[0] + (s->which == 0 ? want[1] : 0));
			continue;
		}
		for (int f = 0; f < 4 && fields[s->which][f]; f++)
			EXPECT(c, s->v[i][f] == want[f],
			       "projection %s at seq %llu, key %s: %s = %lld where the log up to "
			       "there says %lld%s",
			       name, LLU(m->upto), key, fields[s->which][f], s->v[i][f], want[f],
			       f == 0 || (s->which == 0 && f == 1)
				       ? (s->v[i][f] > want[f] ? " (an event applied twice)"
							       : " (an event lost)")
				       : "");
	}
}

/* Check both projections' states against the log up to their stored
 * positions.  With @p live (the daemon runs, idle or nearly), the states
 * are read between two reads of the positions, and again until these
 * agree: a state is written in the same commit as its position. */
static void
check_projections(crash *c, int live)
{
	pinfo before[NPROJ], after[NPROJ];
	pstates got[NPROJ];
	uint64_t last;
	int tries = 0;

	for (;;) {
		tide_log *log;
		int same = 1, rc = TIDE_OK;

		EXPECT(c, tide_log_open(&log, c->data) == TIDE_OK, "cannot open the log");
		if (read_progress(log, before, &last) != 0) {
			tide_log_close(log);
			crash_fail(c, "cannot read the projections' progress");
		}
		memset(got, 0, sizeof got);
		for (int k = 0; k < NPROJ && rc == TIDE_OK; k++) {
			got[k].which = k;
			if (before[k].found && before[k].serving)
				rc = tide_log_query(log, proj_names[k], NULL, NULL, 0, state_cb,
						    &got[k]);
		}
		if (rc == TIDE_OK && live && read_progress(log, after, &last) != 0)
			rc = TIDE_EIO;
		tide_log_close(log);
		EXPECT(c, rc == TIDE_OK, "cannot query the projections: %s", tide_strerror(rc));
		for (int k = 0; k < NPROJ && live; k++)
			same &= after[k].live == before[k].live &&
				after[k].serving == before[k].serving;
		if (same)
			break;
		EXPECT(c, ++tries < 100, "the projections never held still for a query");
	}
	for (int k = 0; k < NPROJ; k++) {
		pmodel m;

		check_progress(c, k, &before[k], last);
		EXPECT(c, before[k].found, "projection %s is not in the log", proj_names[k]);
		if (!before[k].serving)
			continue;
		map_until(c, before[k].live);
		model_at(c, before[k].live, &m);
		compare_states(c, &got[k], &m);
	}
	if (c->verbose > 1)
		fprintf(stderr,
			"crash: %s projections: %s at seq %llu%s, %s at seq %llu%s, of %llu\n",
			live ? "live" : "killed", proj_names[0], LLU(before[0].live),
			before[0].building ? " (rebuilding)" : "", proj_names[1],
			LLU(before[1].live), before[1].building ? " (rebuilding)" : "", LLU(last));
	c->proj_checks++;
}

/* ------------------------------------------------------------------------
 * The daemon and the floors
 * ------------------------------------------------------------------------ */

static void
cp_cb(void *ud, const char *name, uint64_t seq)
{
	if (strcmp(name, "mirror") == 0)
		*(uint64_t *)ud = seq;
}

/* Read the live log (read snapshots, safe while the daemon writes): the
 * checkpoint, the last seq and the projections' positions may only have
 * grown since last seen. */
static void
observe(crash *c)
{
	tide_log *log;
	pinfo p[NPROJ];
	uint64_t last, cp = 0, plast;
	tide_log_stat st;
	int rc;

	if (tide_log_open(&log, c->data) != TIDE_OK)
		return; /* no log yet, before the first start */
	/* positions first, then the checkpoint, then the end of the log,
	 * so that each is read no later than the one bounding it */
	rc = read_progress(log, p, &plast);
	if (rc == 0 && tide_log_consumers(log, cp_cb, &cp) != TIDE_OK)
		rc = -1;
	if (rc == 0 && tide_log_stat_get(log, &st) != TIDE_OK)
		rc = -1;
	tide_log_close(log);
	EXPECT(c, rc == 0, "cannot read the live log");
	last = st.last_seq;
	EXPECT(c, cp >= c->cp_floor, "checkpoint of 'mirror' moved backwards: %llu, was %llu",
	       LLU(cp), LLU(c->cp_floor));
	EXPECT(c, last >= c->last_floor, "last seq moved backwards: %llu, was %llu", LLU(last),
	       LLU(c->last_floor));
	EXPECT(c, cp <= last, "checkpoint of 'mirror' at %llu, past the last seq %llu", LLU(cp),
	       LLU(last));
	c->cp_floor = cp;
	c->last_floor = last;
	for (int k = 0; k < NPROJ; k++)
		check_progress(c, k, &p[k], plast);
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

/* Put version @p version of the consumer's script in place: mirror.lua as
 * it is (0) or with one harmless line more (1).  Written beside it and
 * renamed over it, so that a reload never reads half a file. */
static void
write_script(crash *c, int version)
{
	char tmp[720];
	FILE *f;

	snprintf(tmp, sizeof tmp, "%s.new", c->script);
	f = fopen(tmp, "w");
	ck_assert_ptr_nonnull(f);
	fputs(c->mirror, f);
	if (version)
		fputs("-- the other version: this line and the next are all that differ\n"
		      "local reloaded = true\n",
		      f);
	ck_assert_int_eq(fclose(f), 0);
	ck_assert_int_eq(rename(tmp, c->script), 0);
	c->version = version;
}

/* Start `tide run` with the consumer and the projections or (@p script =
 * 0) without any script, so that inputs pile up behind their positions. */
static void
start(crash *c, int script)
{
	char extra[1500] = "";

	if (script)
		snprintf(extra, sizeof extra, "--script '%s' --script '%s'", c->script,
			 th_src("tests/lua/soak.lua"));
	EXPECT(c,
	       th_daemon_spawn(&c->d, c->data, "--data '%s' %s --set turn_events=%d", c->data,
			       extra, TURN_EVENTS) == 0,
	       "tide run did not start again (see %s)", c->d.log);
	c->scripts = script;
	c->ready = 0;
	observe(c); /* what was committed before the kill is all there */
}

/* Make sure that the daemon's loop runs: `tide run` writes its endpoints
 * before it handles SIGHUP, and an answer on REP comes from the loop. */
static void
ready(crash *c)
{
	char reply[1024];

	if (c->ready)
		return;
	EXPECT(c,
	       th_req(c->d.rep, "{\"query\":\"by_subject\",\"key\":\"k0\"}", reply, sizeof reply,
		      20000) > 0,
	       "no answer on REP within 20 s (see %s)", c->d.log);
	c->ready = 1;
}

/* SIGKILL, after making sure the daemon had not died by itself; then,
 * while nothing writes, the projections against the log. */
static void
sigkill(crash *c)
{
	int st;

	if (waitpid(c->d.pid, &st, WNOHANG) == c->d.pid) {
		c->d.pid = 0;
		crash_fail(c, "tide run ended before the kill: %s %d (see %s)",
			   WIFSIGNALED(st) ? "signal" : "exit status",
			   WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st), c->d.log);
	}
	th_daemon_kill(&c->d);
	c->kills++;
	check_projections(c, 0);
}

/* ------------------------------------------------------------------------
 * Reloads and rebuilds
 * ------------------------------------------------------------------------ */

static long
log_size(const crash *c)
{
	struct stat st;

	return stat(c->d.log, &st) == 0 ? (long)st.st_size : 0;
}

/* What the daemon logged after offset @p from: 1 a reload, -1 a failed
 * one, 0 neither yet. */
static int
reload_logged(const crash *c, long from)
{
	FILE *f = fopen(c->d.log, "r");
	char line[2048];
	int r = 0;

	if (f == NULL)
		return 0;
	if (fseek(f, from, SEEK_SET) == 0)
		while (r == 0 && fgets(line, sizeof line, f) != NULL) {
			if (strstr(line, "scripts reloaded: ") != NULL)
				r = 1;
			else if (strstr(line, "reload failed") != NULL)
				r = -1;
		}
	fclose(f);
	return r;
}

/* Send SIGHUP, half the time after putting the other version of the
 * consumer's script in place.  Returns where the daemon's log stood. */
static long
hup(crash *c)
{
	int change = c->scripts && th_rand_range(&c->rng, 0, 1);
	long from;

	ready(c);
	if (change)
		write_script(c, !c->version);
	from = log_size(c);
	EXPECT(c, kill(c->d.pid, SIGHUP) == 0, "cannot send SIGHUP");
	c->reloads++;
	c->changed += change;
	if (c->verbose > 1)
		fprintf(stderr, "crash: SIGHUP%s\n", change ? " (script changed)" : "");
	return from;
}

/* Wait (deadline) until the daemon logs the reload that SIGHUP asked for
 * when its log stood at @p from. */
static void
wait_reload(crash *c, long from)
{
	int64_t deadline = th_ms() + RELOAD_MS;
	int r;

	do {
		observe(c);
		if ((r = reload_logged(c, from)) != 0)
			break;
		th_pause();
	} while (th_ms() < deadline);
	EXPECT(c, r != 0, "no reload logged within %d s of SIGHUP (see %s)", RELOAD_MS / 1000,
	       c->d.log);
	EXPECT(c, r > 0, "the reload failed (see %s)", c->d.log);
}

/* Ask the running daemon over REP to rebuild projection @p k. */
static void
rebuild(crash *c, int k)
{
	char msg[200], reply[1024];

	snprintf(msg, sizeof msg, "{\"command\":\"projection\",\"op\":\"rebuild\",\"name\":\"%s\"}",
		 proj_names[k]);
	/* Its progress starts again from 0 at the request's commit. */
	c->pf[k].asked = 1;
	c->pf[k].build = 0;
	EXPECT(c, th_req(c->d.rep, msg, reply, sizeof reply, 20000) > 0,
	       "no answer to a rebuild of %s within 20 s", proj_names[k]);
	EXPECT(c, strcmp(reply, "{\"ok\":true}") == 0, "rebuild of %s: %s", proj_names[k], reply);
	c->ready = 1;
	c->rebuilds++;
}

/* Kill the daemon again soon after its restart: at a random point of the
 * consumer's backlog if it has one, else within CATCHUP_MAX_MS; restart.
 * A third of the time a reload runs during the catch-up first, another
 * third the kill follows a SIGHUP at once.  Returns 2 if the consumer was
 * still behind at the kill, else 1. */
static int
second_kill(crash *c)
{
	uint64_t last, cp, target = 0;
	int behind, how = (int)th_rand_range(&c->rng, 0, 2);

	if (how == 1)
		wait_reload(c, hup(c));
	if (th_log_state(c->data, "mirror", NULL, &last, &cp) == 0 && cp < last) {
		target = th_rand_range(&c->rng, cp, last - 1);
		wait_checkpoint(c, target);
	} else {
		watch(c, (int)th_rand_range(&c->rng, 0, CATCHUP_MAX_MS));
	}
	behind = th_log_state(c->data, "mirror", NULL, &last, &cp) == 0 && cp < last;
	if (how == 2) {
		hup(c);
		c->hup_kills++;
	}
	sigkill(c);
	c->catchup_kills++;
	c->behind_kills += behind;
	if (c->verbose > 1)
		fprintf(stderr, "crash: second kill%s: target %llu, checkpoint %llu of %llu\n",
			how == 1   ? " after a reload"
			: how == 2 ? " right after SIGHUP"
				   : "",
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

/* Write the producer's input and start `tide publish` on it, @p batch
 * events a message (0: a random shape of traffic). */
static void
producer_start(crash *c, producer *p, int which, const char *timeout, int batch)
{
	FILE *f;
	/* Vary the shape of the traffic: message sizes and requests in flight. */
	static const int batches[] = { 1, 7, 20, 20, 50 };
	int window = (int)th_rand_range(&c->rng, 1, 4);

	if (batch == 0)
		batch = batches[th_rand_range(&c->rng, 0, 4)];
	else
		window = 4;

	snprintf(p->in, sizeof p->in, "%s/in-%d-%d.ndjson", c->dir, c->cycle, which);
	snprintf(p->out, sizeof p->out, "%s/acks-%d-%d", c->dir, c->cycle, which);
	snprintf(p->err, sizeof p->err, "%s/err-%d-%d", c->dir, c->cycle, which);
	f = fopen(p->in, "w");
	ck_assert_ptr_nonnull(f);
	for (size_t k = 0; k < p->n; k++) {
		size_t n = p->ids[k];
		fprintf(f,
			"{\"specversion\":\"1.0\",\"id\":\"e-%zu\",\"source\":\"/p\","
			"\"type\":\"in.x\",\"subject\":\"k%zu\",\"data\":{\"n\":%zu,\"g\":%zu}}\n",
			n, n % SUBJECTS, n, n % GROUPS);
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
		producer_start(c, &ps[i], i, "0.5", 0);
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
		map_seq(c, AT_IN, n);
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
		map_seq(c, AT_OUT, n);
		s->children++;
	} else {
		crash_fail(c, "seq %llu: unexpected type %s", LLU(seq), type);
	}
	return 0;
}

/* Wait (deadline) until both projections are live at the last seq @p last
 * with no rebuild under way. */
static void
wait_projections(crash *c, uint64_t last)
{
	int64_t deadline = th_ms() + SETTLE_MS;
	pinfo p[NPROJ];
	uint64_t plast = 0;

	do {
		tide_log *log;
		int done = 0, rc = -1;

		observe(c);
		if (tide_log_open(&log, c->data) == TIDE_OK) {
			rc = read_progress(log, p, &plast);
			tide_log_close(log);
		}
		EXPECT(c, rc == 0, "cannot read the projections' progress");
		for (int k = 0; k < NPROJ; k++)
			done += p[k].found && p[k].serving && !p[k].building && p[k].live == last;
		if (done == NPROJ)
			return;
		th_pause();
	} while (th_ms() < deadline);
	crash_fail(c,
		   "the projections did not catch up with seq %llu within %d s: %s at %llu%s, "
		   "%s at %llu%s",
		   LLU(last), SETTLE_MS / 1000, proj_names[0], LLU(p[0].live),
		   p[0].building ? " (rebuilding)" : "", proj_names[1], LLU(p[1].live),
		   p[1].building ? " (rebuilding)" : "");
}

typedef struct dead {
	long n;
	char first[600];
} dead;

static int
dead_cb(void *ud, const tide_dead_letter *dl)
{
	dead *d = ud;

	if (d->n++ == 0)
		snprintf(d->first, sizeof d->first, "consumer %s, seq %llu, %u attempts: %s%s%s",
			 dl->consumer, LLU(dl->seq), dl->attempts, dl->where,
			 dl->where[0] ? ": " : "", dl->error);
	return 0;
}

/* No dead letters: nothing in mirror.lua fails, so one would have been set
 * aside by the flight recorder, which random kills should never make do. */
static void
check_dead(crash *c)
{
	tide_log *log;
	dead d = { 0, "" };
	int rc;

	EXPECT(c, tide_log_open(&log, c->data) == TIDE_OK, "cannot open the log");
	rc = tide_log_dead_letters(log, NULL, 0, dead_cb, &d);
	tide_log_close(log);
	EXPECT(c, rc == TIDE_OK, "cannot read the dead letters: %s", tide_strerror(rc));
	EXPECT(c, d.n == 0, "%ld dead letters, the first: %s", d.n, d.first);
}

/* Wait for the consumer and the projections to catch up, then check the
 * whole log and the projections against the model.  Returns the number
 * of inputs in the log. */
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
	/* The consumer emits nothing more; the projections follow it. */
	wait_projections(c, last);

	memset(&s, 0, sizeof s);
	s.c = c;
	s.next = 1;
	memset(c->logged, 0, c->nids * sizeof *c->logged);
	memset(c->kids, 0, c->nids);
	c->nat = 0; /* the map is drawn again */
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

	check_projections(c, 1);
	/* every rebuild asked for has ended, or was never recorded */
	for (int k = 0; k < NPROJ; k++)
		c->pf[k].asked = 0;
	check_dead(c);
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

/* Let the load run for @p ms, then SIGKILL.  Half the time with reloads:
 * one to three SIGHUPs, each waited for, at random points of the load, or
 * one SIGHUP at the end, right before the kill.  Returns the number of
 * SIGHUPs, negative when the kill followed one at once. */
static int
load_and_kill(crash *c, int ms)
{
	int how = (int)th_rand_range(&c->rng, 0, 3), hups = 0;

	if (how == 2) {
		hups = (int)th_rand_range(&c->rng, 1, 3);
		for (int i = 0; i < hups; i++) {
			watch(c, (int)th_rand_range(&c->rng, 0, (uint64_t)ms / (uint64_t)hups));
			wait_reload(c, hup(c));
		}
	} else {
		watch(c, ms);
	}
	if (how == 3) {
		hup(c);
		watch(c, (int)th_rand_range(&c->rng, 0, HUP_KILL_MAX_MS));
		c->hup_kills++;
		hups = -1;
	}
	sigkill(c);
	return hups;
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
	snprintf(c.script, sizeof c.script, "%s/mirror.lua", c.dir);
	c.mirror = th_slurp(th_src("tests/lua/mirror.lua"));
	ck_assert_ptr_nonnull(c.mirror);
	write_script(&c, 0);
	fprintf(stderr, "crash: seed %llu, %d cycles\n", LLU(c.seed), c.cycles);

	start(&c, 1);
	for (c.cycle = 1; c.cycle <= c.cycles; c.cycle++) {
		int64_t t_load, t_collect, t_check;
		int np, delay, hups, second = 0, rebuilt = -1;
		long reloads = c.reloads;
		/* One cycle in four takes its load without the scripts, so that
		 * the restart below finds a backlog for the consumer and the
		 * projections. */
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
		/* Now and then a projection is rebuilt under the load. */
		if (!ingest_only && th_rand_range(&c.rng, 0, REBUILD_ONE_IN - 1) == 0)
			rebuild(&c, rebuilt = (int)th_rand_range(&c.rng, 0, NPROJ - 1));
		hups = load_and_kill(&c, delay);
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
				"crash: cycle %d: %d producers%s%s%s, %s%d ms, %ld reloads%s, "
				"collected in %lld ms%s%s, checked in %lld ms; %zu ids acked, "
				"%llu events\n",
				c.cycle, np, ingest_only ? " (ingest only)" : "",
				rebuilt >= 0 ? ", rebuild of " : "",
				rebuilt >= 0 ? proj_names[rebuilt] : "",
				hups < 0 ? "SIGHUP and kill after " : "kill after ", delay,
				c.reloads - reloads, hups > 0 ? " during the load" : "",
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
		/* large messages: tens of thousands of ids may be in doubt, and
		 * one event a message at fsync speed would take minutes */
		producer_start(&c, &p, 0, "30", 200);
		producer_collect(&c, &p, 1);
	}
	inputs = check_log(&c);
	for (size_t n = 0; n < c.nids; n++) {
		EXPECT(&c, c.state[n] == ID_ACKED, "e-%zu was sent but never acknowledged", n);
		acked++;
	}
	EXPECT(&c, inputs == acked, "%zu inputs in the log, %zu ids acknowledged", inputs, acked);
	EXPECT(&c, th_daemon_stop(&c.d) == 0, "tide run did not stop cleanly (see %s)", c.d.log);

	/* One line that tests/soak/crash.sh adds up over its runs. */
	fprintf(stderr,
		"crash: seed %llu: %d cycles, %ld kills (%ld right after a restart, %ld of them "
		"with the consumer catching up, %ld right after a SIGHUP), %ld reloads (%ld with "
		"a changed script), %ld rebuilds, %ld projection checks, %zu ids acknowledged, "
		"%ld retries, %ld resends, %llu events, %.1f s\n",
		LLU(c.seed), c.cycles, c.kills, c.catchup_kills, c.behind_kills, c.hup_kills,
		c.reloads, c.changed, c.rebuilds, c.proj_checks, acked, c.retried, c.resent,
		LLU(c.last_floor), (double)(th_ms() - t0) / 1000.0);
	free(c.state);
	free(c.acked);
	free(c.logged);
	free(c.kids);
	free(c.at);
	free(c.mirror);
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
