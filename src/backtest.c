/*
 * backtest.c - tide_backtest(): scripts over past events, on a scratch
 * log, with the turns of a live engine; what they emitted, counted and
 * scored against labels; and sweeps, several values of the scripts'
 * parameters tried in one pass over the input.
 *
 * A driver reads the input (an NDJSON file, or a stretch of a stored
 * log) once, and gathers what it parsed into a batch.  Each variant (one
 * combination of the swept values; without sweeps, the only one) has a
 * scratch log, consumers and projections (a Lua state) of its own: when
 * the batch is full, each variant appends it to its scratch log
 * in a transaction of its own, and then its consumers and projections run
 * over it turn by turn exactly as in the engine (consumer.c,
 * projection.c): what a live engine would append, the backtest appends.
 * A variant's batches are those of a backtest of its values alone, so it
 * emits what that backtest emits, and only one batch of input is held,
 * however many variants there are.  Variants share nothing but the batch,
 * which they only read, so several take it at once, each on a thread of
 * its own (one per CPU by default), while the caller reads the next batch
 * into a second buffer; a batch's transactions begin and end on the
 * thread that takes it, and the items are reported afterwards, on the
 * caller's thread, variant after variant.  The scratch logs go away
 * at the end; the log read is only read.
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yajl/yajl_tree.h>

#include "consumer.h"
#include "keymap.h"
#include "nab.h"
#include "projection.h"
#include "rule.h"
#include "scratch.h"
#include "tide.h"

/* Input events appended per transaction, before the consumers run: each
 * commit writes every page it touched, so the larger the fewer. */
#define BATCH 65536
#define EMIT_SOURCE "/tide/"
/* Rejected input lines described on stderr; the rest are counted. */
#define MAX_SAID 20
/* Variants of one sweep at most: each has a scratch log and a Lua state. */
#define MAX_VARIANTS 64

typedef struct counter {
	char *consumer, *type;
	uint64_t n;
} counter;

/* One variant: its scripts' run and what came out of it. */
typedef struct bt {
	const tide_backtest_opts *o;
	tide_backtest_fn *fn;
	void *ud;
	char *variant;              /* "name=v1 other=v2", NULL when not sweeping */
	const char *const *params;  /* tide.param's overrides: the sets, then its own */
	char *own;                  /* the block its own "name=value" strings are in */
	const tidei_keymap *labels; /* ids of the positives, the driver's */
	tidei_log *scratch;
	char dir[4096];
	tidei_consumers *cs;
	tidei_projections *ps;
	tidei_buf json; /* tide_event_json() of an emitted event */
	tidei_buf rec;  /* the input event being appended: its own copy, stamped */
	uint64_t emitted;
	int rc; /* of the last batch it took */
	char err[TIDEI_ERRLEN];
	/* scoring */
	tidei_keymap ids; /* every event's id -> slot */
	uint32_t *root;   /* slot -> the input event's slot it descends from */
	uint8_t *pos;     /* input slot -> 1 if labelled positive */
	size_t rcap, pcap;
	uint8_t **flag; /* per consumer (0: any), input slot -> flagged */
	size_t nflag;
	int scoring; /* labels given: inputs are numbered and flagged */
	/* NAB: per input slot its series (slot in series) and time */
	tidei_keymap series;
	uint32_t *series_of;
	int64_t *time_at;
	size_t scap, tcap;
	counter *counts;
	size_t ncounts, ccap;
} bt;

/* The input, read once for every variant. */
typedef struct driver {
	const tide_backtest_opts *o;
	bt **v; /* the variants, in the order of their values */
	size_t n;
	tidei_keymap positives; /* ids from labels_file */
	tidei_eparser parser;
	/* the input events not yet appended, each record after [length,
	 * recorded] (8 bytes each): one batch filled while the variants take
	 * the other */
	tidei_buf batches[2];
	int filling;             /* the one being filled */
	size_t batched;          /* events in it */
	const tidei_buf *taking; /* the one the variants take, or NULL */
	pthread_t taker;         /* ... on this thread, when behind */
	int behind;
	size_t threads;     /* variants that take a batch at once */
	atomic_size_t next; /* the next variant to take the batch */
	uint64_t inputs, rejected;
	char err[TIDEI_ERRLEN];
} driver;

/* An item to the caller, with its variant. */
static void
say(const bt *b, tide_backtest_item *it)
{
	it->variant = b->variant;
	b->fn(b->ud, it);
}

/* The projections' news (building, live) is not the backtest's. */
static void
proj_log(void *ud, int level, const char *fmt, ...)
{
	va_list ap;

	(void)ud;
	if (level > TIDE_LOG_WARN)
		return;
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static int
host_projection(void *ud, lua_State *L, const char *name, int spec, const char *script,
		const char *where, char *err)
{
	bt *b = ud;

	return tidei_projections_define(b->ps, L, name, spec, script, where, err);
}

static int
host_query(void *ud, lua_State *L, tidei_log *log, const char *name, const char *key, size_t klen,
	   char *err)
{
	bt *b = ud;

	return tidei_projections_push_state(b->ps, L, log, name, key, klen, err);
}

/* ------------------------------------------------------------------------
 * Sweeps: "name=v1,v2,..." strings into variants
 * ------------------------------------------------------------------------ */

typedef struct sweep {
	const char *name; /* in the caller's string, up to its '=' */
	size_t nlen;
	const char *values; /* "v1,v2,..." */
	size_t nvalues;
} sweep;

/* Check @p sweeps (NULL-terminated, may be NULL) and describe them in
 * @p sw (room for all of them, or NULL): the number of variants they make
 * through @p variants (1 with no sweeps). */
static int
sweeps_parse(const char *const *sweeps, sweep *sw, size_t *variants, char *err)
{
	double total = 1;
	size_t k = 0;

	for (; sweeps != NULL && sweeps[k] != NULL; k++) {
		const char *s = sweeps[k], *eq = strchr(s, '='), *p;
		sweep one;

		if (eq == NULL || eq == s)
			return tidei_err(err, TIDE_EINVAL, "a sweep is NAME=V1,V2,..., not '%s'",
					 s);
		one.name = s;
		one.nlen = (size_t)(eq - s);
		one.values = eq + 1;
		one.nvalues = 1;
		if (*one.values == '\0')
			return tidei_err(err, TIDE_EINVAL, "the sweep of '%.*s' has no values",
					 (int)one.nlen, s);
		for (p = one.values; *p; p++)
			if (*p == ',' && (p == one.values || p[1] == ',' || p[1] == '\0'))
				return tidei_err(err, TIDE_EINVAL,
						 "the sweep of '%.*s' has an empty value: '%s'",
						 (int)one.nlen, s, s);
			else if (*p == ',')
				one.nvalues++;
		for (size_t j = 0; j < k; j++)
			if (strncmp(sweeps[j], s, one.nlen + 1) == 0)
				return tidei_err(err, TIDE_EINVAL, "'%.*s' is swept twice",
						 (int)one.nlen, s);
		total *= (double)one.nvalues;
		if (sw != NULL)
			sw[k] = one;
	}
	if (total > MAX_VARIANTS)
		return tidei_err(err, TIDE_EINVAL,
				 "the sweeps make %.0f combinations of values, %d at most", total,
				 MAX_VARIANTS);
	*variants = (size_t)total;
	return TIDE_OK;
}

/* Variant @p index of the sweeps @p sw (@p n of them; the last one's
 * values change fastest): its name into b->variant, and its parameters,
 * @p sets then its own values, into b->params. */
static int
variant_make(bt *b, const sweep *sw, size_t n, size_t index, const char *const *sets)
{
	size_t nsets = 0, len = 1, stride = 1;
	const char **params;
	char *own, *name;

	while (sets != NULL && sets[nsets] != NULL)
		nsets++;
	for (size_t k = 0; k < n; k++) {
		len += sw[k].nlen + 1 + strlen(sw[k].values) + 1;
		stride *= sw[k].nvalues;
	}
	if ((b->variant = malloc(len)) == NULL || (b->own = malloc(len)) == NULL ||
	    (params = calloc(nsets + n + 1, sizeof *params)) == NULL)
		return tidei_err(b->err, TIDE_ENOMEM, "out of memory");
	if (nsets > 0)
		memcpy(params, sets, nsets * sizeof *params);
	own = b->own;
	name = b->variant;
	for (size_t k = 0; k < n; k++) {
		const char *v = sw[k].values;
		size_t pick;
		stride /= sw[k].nvalues;
		pick = index / stride % sw[k].nvalues;
		while (pick-- > 0)
			v = strchr(v, ',') + 1;
		/* after the sets: tide.param takes the last value of a name */
		params[nsets + k] = own;
		own += sprintf(own, "%.*s=%.*s", (int)sw[k].nlen, sw[k].name, (int)strcspn(v, ","),
			       v) +
		       1;
		name += sprintf(name, "%s%s", k > 0 ? " " : "", params[nsets + k]);
	}
	b->params = params;
	return TIDE_OK;
}

TIDE_API int
tide_backtest_sweep_count(const char *const *sweeps, size_t *variants)
{
	char msg[TIDEI_ERRLEN] = "";
	size_t n = 0;
	int rc = sweeps_parse(sweeps, NULL, &n, msg);

	if (variants != NULL)
		*variants = n;
	return tidei_done(rc, msg);
}

/* ------------------------------------------------------------------------
 * Turns
 * ------------------------------------------------------------------------ */

/* Commit the input appended, then run consumers and projections until
 * they are done with it, as the engine's turns do. */
static int
run_turns(bt *b)
{
	int more = 1, growths = 0, rc;

	if (b->scratch->txn != NULL && (rc = tidei_log_commit(b->scratch)) != TIDE_OK)
		return tidei_err(b->err, rc, "%s", b->scratch->err);
	while (more) {
		int pmore = 0;
		if ((rc = tidei_log_begin(b->scratch)) != TIDE_OK)
			return tidei_err(b->err, rc, "%s", b->scratch->err);
		rc = tidei_consumers_run(b->cs, b->scratch, &more, b->err);
		if (rc == TIDE_OK && tidei_consumers_full(b->cs) == NULL)
			rc = tidei_projections_run(b->ps, b->scratch, &pmore, b->err);
		if (rc == TIDE_OK && (rc = tidei_log_commit(b->scratch)) != TIDE_OK)
			tidei_err(b->err, rc, "%s", b->scratch->err);
		else if (rc != TIDE_OK)
			tidei_log_abort(b->scratch);
		if (rc == TIDE_OK) {
			tidei_consumers_committed(b->cs);
			if (tidei_consumers_full(b->cs) != NULL)
				return tidei_err(b->err, TIDE_ENOMEM,
						 "%s: the scripts' memory is full",
						 tidei_consumers_full(b->cs));
			more |= pmore;
			continue;
		}
		tidei_consumers_reload(b->cs, b->scratch);
		tidei_projections_reload(b->ps, b->scratch);
		if (rc != TIDE_EFULL || growths++ >= 8)
			return rc;
		if ((rc = tidei_log_grow(b->scratch)) != TIDE_OK)
			return tidei_err(b->err, rc, "%s", b->scratch->err);
		more = 1;
	}
	return TIDE_OK;
}

/* Append the events of @p batch (see driver.batch) in a fresh
 * transaction; it is left open.  Appending stamps a record (its version
 * in its stream, the one before, its arrival) in place, and the versions
 * differ between variants (their emits have subjects too): each record is
 * copied to the variant's own buffer first, which leaves the batch for
 * the other variants to read at the same time. */
static int
append_batch(bt *b, const tidei_buf *batch)
{
	const uint8_t *p = batch->p, *end = p + batch->len;
	tidei_append res;
	int rc;

	if ((rc = tidei_log_begin(b->scratch)) != TIDE_OK)
		return rc;
	while (p < end && rc == TIDE_OK) {
		uint64_t len;
		int64_t at;
		memcpy(&len, p, 8);
		memcpy(&at, p + 8, 8);
		tidei_buf_reset(&b->rec);
		tidei_buf_put(&b->rec, p + 16, (size_t)len);
		if (b->rec.failed)
			return tidei_err(b->scratch->err, TIDE_ENOMEM, "out of memory");
		rc = tidei_log_append(b->scratch, b->rec.p, (size_t)len, at, -1, &res);
		p += 16 + len;
	}
	return rc;
}

/* A batch of input events into variant @p b, in one transaction (again
 * in a grown map if the map is full), then its turns over them. */
static int
take_batch(bt *b, const tidei_buf *batch)
{
	int rc = TIDE_OK, growths = 0;

	if (batch->len > 0)
		rc = append_batch(b, batch);
	while (rc == TIDE_EFULL && growths++ < 8) {
		tidei_log_abort(b->scratch);
		if ((rc = tidei_log_grow(b->scratch)) != TIDE_OK)
			break;
		rc = append_batch(b, batch);
	}
	if (rc != TIDE_OK) {
		tidei_err(b->err, rc, "%s", b->scratch->err);
		/* here: the thread that began it */
		if (b->scratch->txn != NULL)
			tidei_log_abort(b->scratch);
		return rc;
	}
	return run_turns(b);
}

/* A variant's failure as the driver's, named when sweeping. */
static int
variant_failed(driver *d, const bt *b, int rc)
{
	if (b->variant == NULL)
		return tidei_err(d->err, rc, "%s", b->err);
	return tidei_err(d->err, rc, "%s: %s", b->variant, b->err);
}

/* One thread's share of a flush: the variants not yet taken, one at a
 * time, until there are none. */
static void *
take_turn(void *ud)
{
	driver *d = ud;
	size_t k;

	while ((k = atomic_fetch_add(&d->next, 1)) < d->n)
		d->v[k]->rc = take_batch(d->v[k], d->taking);
	return NULL;
}

/* The batch d->taking into every variant, which then run their turns over
 * it: on d->threads threads, the calling one of them. */
static void *
take_all(void *ud)
{
	driver *d = ud;
	pthread_t t[MAX_VARIANTS];
	size_t started = 0;

	atomic_store(&d->next, 0);
	/* a thread that cannot start leaves its share to the others */
	while (started + 1 < d->threads && started + 1 < d->n &&
	       pthread_create(&t[started], NULL, take_turn, d) == 0)
		started++;
	take_turn(d);
	for (size_t k = 0; k < started; k++)
		pthread_join(t[k], NULL);
	return NULL;
}

/* Wait for the batch the variants are taking, if any: TIDE_OK, or the
 * first variant's failure. */
static int
flush_wait(driver *d)
{
	if (d->taking == NULL)
		return TIDE_OK;
	if (d->behind)
		pthread_join(d->taker, NULL);
	d->behind = 0;
	d->taking = NULL;
	for (size_t k = 0; k < d->n; k++)
		if (d->v[k]->rc != TIDE_OK)
			return variant_failed(d, d->v[k], d->v[k]->rc);
	return TIDE_OK;
}

/* The batch being filled to the variants.  They take it on threads of
 * their own while the caller reads the next one into the other buffer
 * (the batches are the same either way, so what comes out is too); with
 * @p last, or when no thread can start, the caller waits for them. */
static int
flush(driver *d, int last)
{
	int rc = flush_wait(d);

	if (rc != TIDE_OK)
		return rc;
	d->taking = &d->batches[d->filling];
	d->filling ^= 1;
	tidei_buf_reset(&d->batches[d->filling]);
	d->batched = 0;
	if (!last && pthread_create(&d->taker, NULL, take_all, d) == 0)
		d->behind = 1;
	else
		take_all(d);
	return last || !d->behind ? flush_wait(d) : TIDE_OK;
}

/* One input event (a record): to the batch, which goes to the variants
 * when it is full. */
static int
add(driver *d, const uint8_t *rec, size_t len, int64_t recorded)
{
	uint64_t n = len;
	tidei_buf *batch = &d->batches[d->filling];

	/* a copy: the input goes on (a line, a read transaction) */
	tidei_buf_put(batch, &n, 8);
	tidei_buf_put(batch, &recorded, 8);
	tidei_buf_put(batch, rec, len);
	if (batch->failed)
		return tidei_err(d->err, TIDE_ENOMEM, "out of memory");
	d->inputs++;
	if (++d->batched >= BATCH) {
		if (d->o->progress)
			d->o->progress(d->o->progress_ud, d->inputs);
		return flush(d, 0);
	}
	return TIDE_OK;
}

/* ------------------------------------------------------------------------
 * Input
 * ------------------------------------------------------------------------ */

/* An event's time (ns), or INT64_MIN. */
static int64_t
time_of(const struct tide_event *ev)
{
	int64_t t;

	if (ev->attr[TIDEI_A_TIME] != NULL &&
	    tidei_time_parse(ev->attr[TIDEI_A_TIME], ev->len[TIDEI_A_TIME], &t) == 0)
		return t;
	return INT64_MIN;
}

static int
in_bounds(const tide_backtest_opts *o, int64_t t)
{
	if (t == INT64_MIN)
		return o->from_time == 0;
	return (o->from_time == 0 || t >= o->from_time) &&
	       (o->until_time == 0 || t <= o->until_time);
}

typedef struct line_sink {
	driver *d;
	long line;
	int rc;
} line_sink;

static void
on_parsed(void *ud, const uint8_t *rec, size_t len, const char *err)
{
	line_sink *ls = ud;
	driver *d = ls->d;
	struct tide_event ev;
	int64_t t;

	if (ls->rc != TIDE_OK)
		return;
	if (err != NULL) {
		/* the first few said, all counted */
		if (d->rejected++ < MAX_SAID)
			fprintf(stderr, "tide backtest: line %ld: %s\n", ls->line, err);
		else if (d->rejected == MAX_SAID + 1)
			fprintf(stderr, "tide backtest: more lines rejected; the summary counts "
					"them\n");
		return;
	}
	if (tidei_event_decode(&ev, rec, len) != 0)
		return;
	t = time_of(&ev);
	if (!in_bounds(d->o, t))
		return;
	/* arrival in a backtest: when it happened, if it says */
	ls->rc = add(d, rec, len, t != INT64_MIN ? t : tidei_now());
}

static int
read_ndjson(driver *d)
{
	FILE *f = strcmp(d->o->input, "-") == 0 ? stdin : fopen(d->o->input, "r");
	line_sink ls = { d, 0, TIDE_OK };
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;

	if (f == NULL)
		return tidei_err(d->err, TIDE_ENOTFOUND, "cannot open %s: %s", d->o->input,
				 strerror(errno));
	tidei_eparser_init(&d->parser, 1 << 20);
	while (ls.rc == TIDE_OK && (n = getline(&line, &cap, f)) > 0) {
		ls.line++;
		if (n == 1 && line[0] == '\n')
			continue;
		tidei_eparser_run(&d->parser, line, (size_t)n, on_parsed, &ls);
	}
	free(line);
	tidei_eparser_free(&d->parser);
	if (f != stdin)
		fclose(f);
	return ls.rc;
}

static int
read_log(driver *d)
{
	tidei_log_opts lo = { 1, 0, 0, 0 };
	tidei_log *log = NULL;
	MDB_txn *txn;
	MDB_cursor *cur;
	MDB_val k, v;
	uint64_t seq = d->o->from_seq > 0 ? d->o->from_seq : 1;
	int rc, mrc;

	if ((rc = tidei_log_open(&log, d->o->data, &lo, d->err)) != TIDE_OK)
		return rc;
	if ((rc = tidei_log_read_begin(log, &txn)) != TIDE_OK) {
		tidei_log_close(log);
		return tidei_err(d->err, rc, "%s", log->err);
	}
	if ((mrc = mdb_cursor_open(txn, log->events, &cur)) != 0) {
		rc = tidei_err(d->err, tidei_err_mdb(mrc), "cannot read the log");
		goto out;
	}
	k.mv_size = 8;
	k.mv_data = &seq;
	for (mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); mrc == 0 && rc == TIDE_OK;
	     mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		struct tide_event ev;
		memcpy(&seq, k.mv_data, 8);
		if (d->o->until_seq > 0 && seq > d->o->until_seq)
			break;
		if (tidei_event_decode(&ev, v.mv_data, v.mv_size) != 0) {
			rc = tidei_err(d->err, TIDE_EIO, "event %llu is corrupt",
				       (unsigned long long)seq);
			break;
		}
		/* what the engine appended itself (emits, ticks) is made again */
		if (ev.attr[TIDEI_A_SOURCE] != NULL &&
		    strncmp(ev.attr[TIDEI_A_SOURCE], "/tide", 5) == 0 &&
		    (ev.attr[TIDEI_A_SOURCE][5] == '\0' || ev.attr[TIDEI_A_SOURCE][5] == '/'))
			continue;
		if (in_bounds(d->o, time_of(&ev)))
			rc = add(d, v.mv_data, v.mv_size, ev.recorded);
	}
	mdb_cursor_close(cur);
	if (rc == TIDE_OK && mrc != 0 && mrc != MDB_NOTFOUND)
		rc = tidei_err(d->err, tidei_err_mdb(mrc), "cannot read the log");
out:
	tidei_log_read_end(log);
	tidei_log_close(log);
	return rc;
}

/* ------------------------------------------------------------------------
 * What came out
 * ------------------------------------------------------------------------ */

static int
load_labels(driver *d)
{
	FILE *f;
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	int fresh;

	if (d->o->labels_file == NULL)
		return TIDE_OK;
	if ((f = fopen(d->o->labels_file, "r")) == NULL)
		return tidei_err(d->err, TIDE_ENOTFOUND, "cannot open %s: %s", d->o->labels_file,
				 strerror(errno));
	while ((n = getline(&line, &cap, f)) > 0) {
		while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' '))
			n--;
		if (n > 0 && tidei_keymap_put(&d->positives, line, (size_t)n, &fresh) < 0) {
			free(line);
			fclose(f);
			return tidei_err(d->err, TIDE_ENOMEM, "out of memory");
		}
	}
	free(line);
	fclose(f);
	return TIDE_OK;
}

static int
labelled(const bt *b, const struct tide_event *ev)
{
	tide_value v;

	if (b->o->labels_file != NULL && ev->attr[TIDEI_A_ID] != NULL &&
	    tidei_keymap_get(b->labels, ev->attr[TIDEI_A_ID], ev->len[TIDEI_A_ID]) >= 0)
		return 1;
	if (b->o->label == NULL || tide_event_value(ev, b->o->label, &v) != TIDE_OK)
		return 0;
	switch (v.type) {
	case TIDE_BOOL: return v.boolean;
	case TIDE_INT: return v.i != 0;
	case TIDE_DOUBLE: return v.d != 0;
	case TIDE_STRING:
		return (v.len == 1 && v.s[0] == '1') || (v.len == 4 && memcmp(v.s, "true", 4) == 0);
	default: return 0;
	}
}

/* Whether input event @p ev is in the stretch of time scored. */
static int
scored(const bt *b, const struct tide_event *ev)
{
	int64_t t;

	if (b->o->score_from == 0 && b->o->score_until == 0)
		return 1;
	t = time_of(ev);
	return t != INT64_MIN && (b->o->score_from == 0 || t >= b->o->score_from) &&
	       (b->o->score_until == 0 || t <= b->o->score_until);
}

/* The index of consumer @p name among the flags (1..), added if new. */
static long
flag_of(bt *b, const char *name, size_t n)
{
	for (size_t k = 0; k < tidei_consumers_count(b->cs); k++) {
		const tidei_consumer *c = tidei_consumers_at(b->cs, k);
		if (strlen(c->name) == n && memcmp(c->name, name, n) == 0)
			return (long)k + 1;
	}
	return -1;
}

static int
count(bt *b, const char *consumer, size_t cn, const char *type, size_t tn)
{
	for (size_t k = 0; k < b->ncounts; k++)
		if (strlen(b->counts[k].consumer) == cn &&
		    memcmp(b->counts[k].consumer, consumer, cn) == 0 &&
		    strlen(b->counts[k].type) == tn && memcmp(b->counts[k].type, type, tn) == 0) {
			b->counts[k].n++;
			return TIDE_OK;
		}
	if (tidei_array_grow(&b->counts, &b->ccap, b->ncounts, sizeof *b->counts, 16) != 0)
		return TIDE_ENOMEM;
	b->counts[b->ncounts].consumer = strndup(consumer, cn);
	b->counts[b->ncounts].type = strndup(type, tn);
	b->counts[b->ncounts].n = 1;
	if (b->counts[b->ncounts].consumer == NULL || b->counts[b->ncounts].type == NULL) {
		free(b->counts[b->ncounts].consumer);
		free(b->counts[b->ncounts].type);
		return TIDE_ENOMEM;
	}
	b->ncounts++;
	return TIDE_OK;
}

/* Emitted event @p ev: reported, counted, and (scoring) flagging the input
 * at @p slot's root when its cause is known (@p cause >= 0). */
static int
emit_seen(bt *b, struct tide_event *ev, const char *src, long cause, long slot)
{
	const char *who = src + sizeof EMIT_SOURCE - 1;
	size_t wn = ev->len[TIDEI_A_SOURCE] - (sizeof EMIT_SOURCE - 1);
	tide_backtest_item it;
	char name[256];
	long f;

	memset(&it, 0, sizeof it);
	it.kind = TIDE_BACKTEST_EMIT;
	it.ev = ev;

	b->emitted++;
	snprintf(name, sizeof name, "%.*s", (int)wn, who);
	it.consumer = name;
	say(b, &it);
	if (count(b, who, wn, ev->attr[TIDEI_A_TYPE], ev->len[TIDEI_A_TYPE]) != TIDE_OK)
		return tidei_err(b->err, TIDE_ENOMEM, "out of memory");
	if (cause < 0 || !tidei_pattern_match(b->o->alerts ? b->o->alerts : "*",
					      strlen(b->o->alerts ? b->o->alerts : "*"),
					      ev->attr[TIDEI_A_TYPE], ev->len[TIDEI_A_TYPE]))
		return TIDE_OK;
	f = flag_of(b, who, wn);
	b->flag[0][b->root[slot]] = 1;
	if (f > 0)
		b->flag[f][b->root[slot]] = 1;
	return TIDE_OK;
}

/* NAB: input event @p ev at @p slot belongs to its subject's series. */
static int
note_series(bt *b, const struct tide_event *ev, long slot)
{
	const char *subject = ev->attr[TIDEI_A_SUBJECT] ? ev->attr[TIDEI_A_SUBJECT] : "";
	size_t sn = ev->attr[TIDEI_A_SUBJECT] ? ev->len[TIDEI_A_SUBJECT] : 0;
	int fresh;
	long sv = tidei_keymap_put(&b->series, subject, sn, &fresh);

	if (sv < 0 ||
	    tidei_array_grow(&b->series_of, &b->scap, (size_t)slot, sizeof *b->series_of, 1024) !=
		    0 ||
	    tidei_array_grow(&b->time_at, &b->tcap, (size_t)slot, sizeof *b->time_at, 1024) != 0)
		return tidei_err(b->err, TIDE_ENOMEM, "out of memory");
	b->series_of[slot] = (uint32_t)sv;
	b->time_at[slot] = time_of(ev);
	return TIDE_OK;
}

/* One event of the scratch log, in order: an input is numbered (and its
 * label noted); an emitted event is reported, counted, and flags the input
 * it descends from. */
static int
look(bt *b, struct tide_event *ev)
{
	const char *src = ev->attr[TIDEI_A_SOURCE], *id = ev->attr[TIDEI_A_ID];
	int emitted = src != NULL && strncmp(src, EMIT_SOURCE, sizeof EMIT_SOURCE - 1) == 0;
	long slot, cause = -1;
	int fresh = 0, rc;

	if (src != NULL && strcmp(src, "/tide") == 0)
		return TIDE_OK; /* a tick */
	if (!b->scoring) {
		if (!emitted)
			return TIDE_OK;
		return emit_seen(b, ev, src, -1, 0);
	}
	if (emitted && ev->attr[TIDEI_A_CAUSATIONID] != NULL)
		cause = tidei_keymap_get(&b->ids, ev->attr[TIDEI_A_CAUSATIONID],
					 ev->len[TIDEI_A_CAUSATIONID]);
	if (id == NULL || (slot = tidei_keymap_put(&b->ids, id, ev->len[TIDEI_A_ID], &fresh)) < 0)
		return tidei_err(b->err, TIDE_ENOMEM, "out of memory");
	if (tidei_array_grow(&b->root, &b->rcap, (size_t)slot, sizeof *b->root, 1024) != 0 ||
	    tidei_array_grow(&b->pos, &b->pcap, (size_t)slot, 1, 1024) != 0)
		return tidei_err(b->err, TIDE_ENOMEM, "out of memory");
	if (fresh && b->o->nab_windows != NULL && !emitted &&
	    (rc = note_series(b, ev, slot)) != TIDE_OK)
		return rc;
	if (fresh) {
		b->root[slot] = cause >= 0 ? b->root[cause] : (uint32_t)slot;
		b->pos[slot] = !emitted && labelled(b, ev);
		if (!emitted && !scored(b, ev))
			b->pos[slot] = 2; /* outside the stretch scored */
	}
	if (!emitted)
		return TIDE_OK;
	return emit_seen(b, ev, src, cause, slot);
}

static void
score(bt *b, const char *who, const uint8_t *flag, size_t n)
{
	tide_backtest_item it;

	memset(&it, 0, sizeof it);
	it.kind = TIDE_BACKTEST_SCORE;
	it.consumer = who;
	it.precision = it.recall = it.f1 = NAN;

	for (size_t k = 0; k < n; k++) {
		if (b->root[k] != k || b->pos[k] == 2)
			continue; /* an emitted event, or one not scored */
		if (flag[k] && b->pos[k])
			it.tp++;
		else if (flag[k])
			it.fp++;
		else if (b->pos[k])
			it.fn++;
	}
	if (it.tp + it.fp > 0)
		it.precision = (double)it.tp / (double)(it.tp + it.fp);
	if (it.tp + it.fn > 0)
		it.recall = (double)it.tp / (double)(it.tp + it.fn);
	if (it.tp > 0)
		it.f1 = 2 * it.precision * it.recall / (it.precision + it.recall);
	else if (it.tp + it.fp + it.fn > 0)
		it.f1 = 0;
	say(b, &it);
}

/* A NAB window bound, "2014-02-19 10:50:00.000000", as ns; -1 if not one. */
static int64_t
nab_time(yajl_val v)
{
	const char *s;
	char ts[64];
	int64_t t;

	if (v == NULL || !YAJL_IS_STRING(v) || strlen(s = YAJL_GET_STRING(v)) < 19)
		return -1;
	snprintf(ts, sizeof ts, "%.10sT%.8sZ", s, s + 11);
	return tidei_time_parse(ts, strlen(ts), &t) == 0 ? t : -1;
}

/* One series' windows (@p w: [[start, end], ...]) into @p win. */
static int
nab_windows(yajl_val w, int64_t *win)
{
	for (size_t i = 0; i < w->u.array.len; i++) {
		yajl_val pair = w->u.array.values[i];
		if (!YAJL_IS_ARRAY(pair) || pair->u.array.len != 2 ||
		    (win[2 * i] = nab_time(pair->u.array.values[0])) < 0 ||
		    (win[2 * i + 1] = nab_time(pair->u.array.values[1])) < 0)
			return -1;
	}
	return 0;
}

static yajl_val
read_json(const char *path, char *err, size_t n)
{
	FILE *f = fopen(path, "r");
	char *text = NULL;
	long len;
	yajl_val v = NULL;

	if (f == NULL) {
		snprintf(err, n, "cannot open %s: %s", path, strerror(errno));
		return NULL;
	}
	if (fseek(f, 0, SEEK_END) == 0 && (len = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
	    (text = malloc((size_t)len + 1)) != NULL &&
	    fread(text, 1, (size_t)len, f) == (size_t)len) {
		text[len] = '\0';
		v = yajl_tree_parse(text, err, n);
	}
	fclose(f);
	free(text);
	return v;
}

/* One series: its readings' times and detections, scored against its
 * windows and reported. */
static int
nab_series(bt *b, yajl_val all, size_t sv, const uint8_t *flag, size_t n,
	   const tidei_nab_profile *p, tidei_nab_score *sc)
{
	size_t kn, m = 0;
	const char *name = tidei_keymap_key(&b->series, sv, &kn);
	char key[512];
	const char *path[] = { key, NULL };
	yajl_val w;
	int64_t *t = NULL, *win = NULL;
	uint8_t *det = NULL;
	tide_backtest_item it;
	int rc = TIDE_OK;

	snprintf(key, sizeof key, "%.*s", (int)kn, name);
	if ((w = yajl_tree_get(all, path, yajl_t_array)) == NULL)
		return tidei_err(b->err, TIDE_EINVAL, "series '%s' is not in %s", key,
				 b->o->nab_windows);
	if ((t = malloc((n + 1) * sizeof *t)) == NULL || (det = malloc(n + 1)) == NULL ||
	    (win = malloc((2 * w->u.array.len + 1) * sizeof *win)) == NULL) {
		rc = tidei_err(b->err, TIDE_ENOMEM, "out of memory");
		goto out;
	}
	for (size_t k = 0; k < n; k++)
		if (b->root[k] == k && b->pos[k] != 2 && b->series_of[k] == sv) {
			t[m] = b->time_at[k];
			det[m++] = flag[k];
		}
	if (nab_windows(w, win) != 0) {
		rc = tidei_err(b->err, TIDE_EINVAL, "a window of '%s' in %s is not two times", key,
			       b->o->nab_windows);
		goto out;
	}
	if (tidei_nab_score_series(t, det, m, win, w->u.array.len, p, sc) != 0) {
		rc = tidei_err(b->err, TIDE_EINVAL,
			       "the windows of '%s' do not fall on its readings' times", key);
		goto out;
	}
	memset(&it, 0, sizeof it);
	it.kind = TIDE_BACKTEST_NAB;
	it.type = key;
	it.score = sc->score;
	it.tp = sc->tp;
	it.fp = sc->fp;
	it.fn = sc->fn;
	say(b, &it);
out:
	free(t);
	free(det);
	free(win);
	return rc;
}

/* NAB's score of the flagged readings, series by series, against the
 * windows file: an item per series, then the total, normalised. */
static int
score_nab(bt *b, const uint8_t *flag, size_t n)
{
	const tidei_nab_profile *p = &tidei_nab_standard;
	const char *prof = b->o->nab_profile;
	char errbuf[256] = "";
	yajl_val all;
	double raw = 0, null_score = 0, perfect = 0;
	tide_backtest_item it;
	int rc = TIDE_OK;

	memset(&it, 0, sizeof it);
	if (prof != NULL && strcmp(prof, "standard") != 0) {
		if (strcmp(prof, "reward_low_FP_rate") == 0)
			p = &tidei_nab_low_fp;
		else if (strcmp(prof, "reward_low_FN_rate") == 0)
			p = &tidei_nab_low_fn;
		else
			return tidei_err(
				b->err, TIDE_EINVAL,
				"unknown NAB profile '%s': standard, reward_low_FP_rate or "
				"reward_low_FN_rate",
				prof);
	}
	if ((all = read_json(b->o->nab_windows, errbuf, sizeof errbuf)) == NULL ||
	    !YAJL_IS_OBJECT(all)) {
		yajl_tree_free(all);
		return tidei_err(b->err, TIDE_EINVAL, "%s is not a NAB windows file%s%s",
				 b->o->nab_windows, errbuf[0] ? ": " : "", errbuf);
	}
	for (size_t sv = 0; sv < b->series.n && rc == TIDE_OK; sv++) {
		tidei_nab_score sc;
		if ((rc = nab_series(b, all, sv, flag, n, p, &sc)) != TIDE_OK)
			break;
		raw += sc.score;
		null_score += sc.null_score;
		perfect += sc.perfect;
		it.tp += sc.tp;
		it.fp += sc.fp;
		it.fn += sc.fn;
	}
	yajl_tree_free(all);
	if (rc != TIDE_OK)
		return rc;
	it.kind = TIDE_BACKTEST_NAB;
	it.type = "";
	it.score = tidei_nab_normalised(raw, null_score, perfect);
	say(b, &it);
	return TIDE_OK;
}

typedef struct state_walk {
	bt *b;
	const char *owner; /* the projection or the rule */
	int kind;          /* TIDE_BACKTEST_STATE or TIDE_BACKTEST_RULE */
} state_walk;

/* One key's state, of a projection or a rule, to the caller. */
static int
on_state(void *ud, const char *key, size_t klen, const char *json, size_t jlen)
{
	state_walk *w = ud;
	tide_backtest_item it;
	char k[512];

	memset(&it, 0, sizeof it);
	it.kind = w->kind;
	it.consumer = w->owner;
	snprintf(k, sizeof k, "%.*s", (int)klen, key);
	it.type = k;
	it.json = json;
	it.len = jlen;
	say(w->b, &it);
	return 0;
}

/* Every rule's states at the end, once the consumers wrote them. */
static int
report_rules(bt *b)
{
	MDB_txn *txn;
	int rc;

	if ((rc = tidei_log_begin(b->scratch)) != TIDE_OK)
		return tidei_err(b->err, rc, "%s", b->scratch->err);
	if ((rc = tidei_consumers_write(b->cs, b->scratch, b->err)) != TIDE_OK) {
		tidei_log_abort(b->scratch);
		return rc;
	}
	if ((rc = tidei_log_commit(b->scratch)) != TIDE_OK)
		return tidei_err(b->err, rc, "%s", b->scratch->err);
	tidei_consumers_committed(b->cs);
	if ((rc = tidei_log_read_begin(b->scratch, &txn)) != TIDE_OK)
		return tidei_err(b->err, rc, "%s", b->scratch->err);
	for (size_t k = 0; k < tidei_consumers_count(b->cs) && rc == TIDE_OK; k++) {
		const tidei_consumer *c = tidei_consumers_at(b->cs, k);
		state_walk w = { b, c->name, TIDE_BACKTEST_RULE };
		if (c->rule == NULL)
			continue;
		rc = tidei_rule_states_read(b->scratch, txn, c->name, on_state, &w);
		if (rc != TIDE_OK)
			tidei_err(b->err, rc, "cannot read the states of rule %s", c->name);
	}
	tidei_log_read_end(b->scratch);
	return rc;
}

/* Every projection's states at the end, key by key, then the rules'. */
static int
report_states(bt *b)
{
	for (size_t k = 0; k < tidei_projections_count(b->ps); k++) {
		tidei_buf scratch = { 0 };
		const char *where;
		state_walk w = { b, tidei_projections_describe(b->ps, k, &where, &scratch),
				 TIDE_BACKTEST_STATE };
		int rc = tidei_log_query(b->scratch, w.owner, NULL, NULL, SIZE_MAX, on_state, &w);
		tidei_buf_free(&scratch);
		if (rc != TIDE_OK && rc != TIDE_ENOTFOUND)
			return tidei_err(b->err, rc, "cannot read projection %s: %s", w.owner,
					 b->scratch->err);
	}
	return report_rules(b);
}

/* Walk the scratch log: report and count what was emitted, then score;
 * the totals last (@p inputs read, @p rejected). */
static int
report(bt *b, uint64_t inputs, uint64_t rejected)
{
	MDB_txn *txn;
	MDB_cursor *cur;
	MDB_val k, v;
	size_t n, nc = tidei_consumers_count(b->cs);
	int rc, mrc;

	b->scoring = b->o->label != NULL || b->o->labels_file != NULL || b->o->nab_windows != NULL;
	b->nflag = b->scoring ? nc + 1 : 0;
	if (b->scoring && (b->flag = calloc(b->nflag, sizeof *b->flag)) == NULL)
		return tidei_err(b->err, TIDE_ENOMEM, "out of memory");
	for (size_t f = 0; f < b->nflag; f++)
		if ((b->flag[f] = calloc(b->scratch->head + 1, 1)) == NULL)
			return tidei_err(b->err, TIDE_ENOMEM, "out of memory");
	if ((rc = tidei_log_read_begin(b->scratch, &txn)) != TIDE_OK)
		return tidei_err(b->err, rc, "%s", b->scratch->err);
	if ((mrc = mdb_cursor_open(txn, b->scratch->events, &cur)) != 0) {
		tidei_log_read_end(b->scratch);
		return tidei_err(b->err, tidei_err_mdb(mrc), "cannot read the scratch log");
	}
	for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); mrc == 0 && rc == TIDE_OK;
	     mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		struct tide_event ev;
		memcpy(&ev.seq, k.mv_data, 8);
		if (tidei_event_decode(&ev, v.mv_data, v.mv_size) != 0) {
			rc = tidei_err(b->err, TIDE_EIO, "the scratch log is corrupt");
			break;
		}
		memcpy(&ev.seq, k.mv_data, 8);
		ev.scratch = &b->json;
		ev.attrs = NULL;
		rc = look(b, &ev);
	}
	mdb_cursor_close(cur);
	tidei_log_read_end(b->scratch);
	if (rc != TIDE_OK)
		return rc;
	for (size_t c = 0; c < b->ncounts; c++) {
		tide_backtest_item it;
		memset(&it, 0, sizeof it);
		it.kind = TIDE_BACKTEST_COUNT;
		it.consumer = b->counts[c].consumer;
		it.type = b->counts[c].type;
		it.count = b->counts[c].n;
		say(b, &it);
	}
	n = b->ids.n;
	if (b->o->nab_windows != NULL && (rc = score_nab(b, b->flag[0], n)) != TIDE_OK)
		return rc;
	if (b->o->label != NULL || b->o->labels_file != NULL) {
		score(b, "", b->flag[0], n);
		for (size_t c = 0; c < nc; c++)
			score(b, tidei_consumers_at(b->cs, c)->name, b->flag[c + 1], n);
	}
	if ((rc = report_states(b)) != TIDE_OK)
		return rc;
	{
		tide_backtest_item it;
		memset(&it, 0, sizeof it);
		it.kind = TIDE_BACKTEST_DONE;
		it.count = inputs;
		it.tp = rejected;
		it.fp = b->emitted;
		say(b, &it);
	}
	return TIDE_OK;
}

/* ------------------------------------------------------------------------
 * The call
 * ------------------------------------------------------------------------ */

static void
variant_free(bt *b)
{
	if (b == NULL)
		return;
	if (b->scratch != NULL && b->scratch->txn != NULL)
		tidei_log_abort(b->scratch);
	tidei_projections_destroy(b->ps);
	tidei_consumers_destroy(b->cs);
	tidei_scratch_close(b->dir, b->scratch);
	tidei_buf_free(&b->json);
	tidei_buf_free(&b->rec);
	tidei_keymap_free(&b->ids);
	tidei_keymap_free(&b->series);
	free(b->series_of);
	free(b->time_at);
	free(b->root);
	free(b->pos);
	for (size_t f = 0; b->flag != NULL && f < b->nflag; f++)
		free(b->flag[f]);
	free(b->flag);
	for (size_t c = 0; c < b->ncounts; c++) {
		free(b->counts[c].consumer);
		free(b->counts[c].type);
	}
	free(b->counts);
	if (b->params != b->o->sets)
		free((void *)b->params); /* made by variant_make() */
	free(b->own);
	free(b->variant);
	free(b);
}

/* Variant @p index of the sweeps @p sw (@p nsw of them): its scratch log,
 * its scripts loaded with its parameters, its consumers and projections
 * started. */
static int
variant_new(driver *d, tide_backtest_fn *fn, void *ud, const sweep *sw, size_t nsw, size_t index,
	    const char *lua_path, bt **out)
{
	const tide_backtest_opts *o = d->o;
	tidei_consumers_opts co;
	tidei_projections_opts po;
	bt *b = calloc(1, sizeof *b);
	int rc;

	if ((*out = b) == NULL)
		return tidei_err(d->err, TIDE_ENOMEM, "out of memory");
	b->o = o;
	b->fn = fn;
	b->ud = ud;
	b->labels = &d->positives;
	b->params = o->sets;
	tidei_keymap_init(&b->ids);
	tidei_keymap_init(&b->series);
	if (nsw > 0 && (rc = variant_make(b, sw, nsw, index, o->sets)) != TIDE_OK)
		goto out;
	if ((rc = tidei_scratch_open(b->dir, sizeof b->dir, "backtest", &b->scratch, b->err)) !=
	    TIDE_OK)
		goto out;
	tidei_consumers_opts_offline(&co, lua_path);
	co.script.memory_limit = (size_t)2 << 30;
	co.script.params = b->params;
	co.turn_budget = BATCH; /* a batch in few turns: fewer commits */
	co.projection = host_projection;
	co.projection_ud = b;
	co.query = host_query;
	if ((rc = tidei_consumers_new(&b->cs, &co, b->err)) != TIDE_OK)
		goto out;
	memset(&po, 0, sizeof po);
	po.script = tidei_consumers_script(b->cs);
	po.turn_budget = BATCH;
	po.log = proj_log;
	if ((rc = tidei_projections_new(&b->ps, &po, b->err)) != TIDE_OK)
		goto out;
	for (size_t k = 0; o->scripts[k] != NULL; k++)
		if ((rc = tidei_consumers_load(b->cs, o->scripts[k], b->err)) != TIDE_OK)
			goto out;
	tidei_projections_pin_scripts(b->ps);
	if ((rc = tidei_consumers_start(b->cs, b->scratch, 0, b->err)) == TIDE_OK &&
	    (rc = tidei_projections_start(b->ps, b->scratch, b->err)) == TIDE_OK)
		rc = run_turns(b); /* the projections go live, empty */
out:
	return rc == TIDE_OK ? rc : variant_failed(d, b, rc);
}

static int
backtest_impl(const tide_backtest_opts *o, tide_backtest_fn *fn, void *ud, char *err)
{
	tidei_buf path = { 0 };
	driver d;
	sweep *sw = NULL;
	size_t nscripts = 0, nsw = 0;
	int rc;

	if (o == NULL || fn == NULL || o->scripts == NULL || o->scripts[0] == NULL ||
	    (o->input == NULL && o->data == NULL))
		return tidei_err(err, TIDE_EINVAL,
				 "tide_backtest: scripts, a callback and an input or a log are "
				 "needed");
	memset(&d, 0, sizeof d);
	d.o = o;
	d.threads = o->threads;
	if (d.threads == 0) {
		long cpus = sysconf(_SC_NPROCESSORS_ONLN);
		d.threads = cpus > 0 ? (size_t)cpus : 1;
	}
	tidei_keymap_init(&d.positives);
	while (o->scripts[nscripts] != NULL)
		nscripts++;
	while (o->sweeps != NULL && o->sweeps[nsw] != NULL)
		nsw++;
	if (nsw > 0 && (sw = calloc(nsw, sizeof *sw)) == NULL) {
		rc = tidei_err(d.err, TIDE_ENOMEM, "out of memory");
		goto out;
	}
	if ((rc = sweeps_parse(o->sweeps, sw, &d.n, d.err)) != TIDE_OK ||
	    (rc = load_labels(&d)) != TIDE_OK)
		goto out;
	if ((d.v = calloc(d.n, sizeof *d.v)) == NULL) {
		rc = tidei_err(d.err, TIDE_ENOMEM, "out of memory");
		goto out;
	}
	tidei_lua_path(&path, NULL, o->scripts, nscripts);
	for (size_t k = 0; k < d.n; k++)
		if ((rc = variant_new(&d, fn, ud, sw, nsw, k,
				      path.failed ? NULL : (const char *)path.p, &d.v[k])) !=
		    TIDE_OK)
			goto out;
	rc = o->input != NULL ? read_ndjson(&d) : read_log(&d);
	if (rc == TIDE_OK)
		rc = flush(&d, 1); /* what is left, if anything, and the turns after it */
	if (rc == TIDE_OK && o->progress)
		o->progress(o->progress_ud, d.inputs);
	/* variant by variant, each let go once reported */
	for (size_t k = 0; k < d.n && rc == TIDE_OK; k++) {
		if ((rc = report(d.v[k], d.inputs, d.rejected)) != TIDE_OK)
			rc = variant_failed(&d, d.v[k], rc);
		variant_free(d.v[k]);
		d.v[k] = NULL;
	}
out:
	if (d.taking != NULL) {
		/* the reading failed while the variants took a batch */
		char why[TIDEI_ERRLEN];
		memcpy(why, d.err, sizeof why);
		flush_wait(&d);
		memcpy(d.err, why, sizeof why);
	}
	if (err != NULL)
		snprintf(err, TIDEI_ERRLEN, "%s", rc == TIDE_OK ? "" : d.err);
	for (size_t k = 0; d.v != NULL && k < d.n; k++)
		variant_free(d.v[k]);
	free(d.v);
	free(sw);
	tidei_buf_free(&path);
	tidei_buf_free(&d.batches[0]);
	tidei_buf_free(&d.batches[1]);
	tidei_keymap_free(&d.positives);
	return rc;
}

TIDE_API int
tide_backtest(const tide_backtest_opts *o, tide_backtest_fn *fn, void *ud)
{
	char msg[TIDEI_ERRLEN] = "";

	return tidei_done(backtest_impl(o, fn, ud, msg), msg);
}
