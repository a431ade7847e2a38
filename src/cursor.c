/*
 * cursor.c - reading a log from outside the engine: tide_log handles
 * opened read-only (also by another process while the daemon writes),
 * cursors over a snapshot with seq, subject and type filters, and the
 * figures behind `tide stat`.
 *
 * A subject cursor walks the stream backwards from its head through the
 * `prev` link every record carries, then hands the events out oldest
 * first; the seqs are collected up front, 8 bytes per event of the stream.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "log.h"
#include "rule.h"
#include "pstate.h"

struct tide_log {
	tidei_log *log;
	tidei_buf scratch;
	int borrowed; /* a view of a log someone else closes */
};

struct tide_cursor {
	tide_log *owner;
	MDB_txn *txn;
	MDB_cursor *cur;
	uint64_t from, until;
	char *type;
	size_t tlen;
	uint64_t *seqs; /* subject cursors: the stream, oldest first */
	size_t nseqs, next;
	int started;
	struct tide_event ev;
	tidei_buf attrs; /* the view's extension strings (tide_event_attr) */
};

/* A reader call failed: its detail is what the log says, after @p what
 * (a short account of the call). */
static int
rfail(const tide_log *l, int rc, const char *what)
{
	if (l != NULL && l->log != NULL && l->log->err[0] != '\0')
		return tidei_fail(rc, "%s: %s", what, l->log->err);
	return tidei_fail(rc, "%s: %s", what, tide_strerror(rc));
}

/* Each reader call starts without a detail of the log's. */
static void
rstart(tide_log *l)
{
	l->log->err[0] = '\0';
}

TIDE_API int
tide_log_open(tide_log **out, const char *dir)
{
	tidei_log_opts o = { 0 };
	char msg[TIDEI_ERRLEN];
	tide_log *l;
	int rc;

	if (out == NULL || dir == NULL)
		return tidei_fail(TIDE_EINVAL, "tide_log_open: out and dir must not be NULL");
	*out = NULL;
	if ((l = calloc(1, sizeof *l)) == NULL)
		return tidei_fail(TIDE_ENOMEM, NULL);
	o.readonly = 1;
	msg[0] = '\0';
	if ((rc = tidei_log_open(&l->log, dir, &o, msg)) != TIDE_OK) {
		free(l);
		return tidei_fail(rc, "%s", msg);
	}
	*out = l;
	return TIDE_OK;
}

void
tidei_log_reader(tide_log *l, tidei_log **log, tidei_buf **scratch)
{
	*log = l->log;
	*scratch = &l->scratch;
}

int
tidei_log_view(tidei_log *log, tide_log **out)
{
	if ((*out = calloc(1, sizeof **out)) == NULL)
		return TIDE_ENOMEM;
	(*out)->log = log;
	(*out)->borrowed = 1;
	return TIDE_OK;
}

TIDE_API void
tide_log_close(tide_log *l)
{
	if (l == NULL)
		return;
	if (!l->borrowed)
		tidei_log_close(l->log);
	tidei_buf_free(&l->scratch);
	free(l);
}

/* Collect the seqs of a stream within [from, until], oldest first. */
static int
collect_stream(tide_cursor *c, const char *subject)
{
	uint64_t version, seq;
	size_t n = 0;
	int rc = tidei_log_stream_head(c->owner->log, c->txn, subject, strlen(subject), &version,
				       &seq);

	if (rc == TIDE_ENOTFOUND)
		return TIDE_OK;
	if (rc != TIDE_OK)
		return rc;
	if (version > SIZE_MAX / sizeof *c->seqs)
		return TIDE_ENOMEM;
	if ((c->seqs = malloc((size_t)(version ? version : 1) * sizeof *c->seqs)) == NULL)
		return TIDE_ENOMEM;
	while (seq != 0 && n < version) {
		struct tide_event ev;
		if ((rc = tidei_log_get(c->owner->log, c->txn, seq, &ev)) != TIDE_OK)
			return rc == TIDE_ENOTFOUND ? TIDE_EIO : rc;
		if (seq >= c->from && seq <= c->until)
			c->seqs[n++] = seq;
		if (seq < c->from)
			break;
		seq = ev.prev;
	}
	/* reverse into log order */
	for (size_t i = 0; i < n / 2; i++) {
		uint64_t t = c->seqs[i];
		c->seqs[i] = c->seqs[n - 1 - i];
		c->seqs[n - 1 - i] = t;
	}
	c->nseqs = n;
	return TIDE_OK;
}

TIDE_API int
tide_cursor_open(tide_log *l, const tide_filter *f, tide_cursor **out)
{
	tide_cursor *c;
	int rc;

	if (l == NULL || out == NULL)
		return tidei_fail(TIDE_EINVAL, "tide_cursor_open: log and out must not be NULL");
	*out = NULL;
	if ((c = calloc(1, sizeof *c)) == NULL)
		return tidei_fail(TIDE_ENOMEM, NULL);
	rstart(l);
	c->owner = l;
	c->from = f && f->from ? f->from : 1;
	c->until = f && f->until ? f->until : UINT64_MAX;
	if (f && f->type && *f->type) {
		if ((c->type = strdup(f->type)) == NULL) {
			free(c);
			return tidei_fail(TIDE_ENOMEM, NULL);
		}
		c->tlen = strlen(c->type);
	}
	/* A cursor has its own snapshot, so several can be open at once. */
	if ((rc = tidei_log_snapshot_begin(l->log, &c->txn)) != TIDE_OK) {
		c->txn = NULL;
		tide_cursor_close(c);
		return tidei_fail(rc, "%s", l->log->err);
	}
	if (f && f->subject && *f->subject) {
		if ((rc = collect_stream(c, f->subject)) != TIDE_OK) {
			tide_cursor_close(c);
			return rfail(l, rc, "cannot read the stream of the subject");
		}
	} else if ((rc = mdb_cursor_open(c->txn, l->log->events, &c->cur)) != 0) {
		tide_cursor_close(c);
		return tidei_fail(tidei_err_mdb(rc), "cannot open a cursor: %s", mdb_strerror(rc));
	}
	*out = c;
	return TIDE_OK;
}

/* Load the event at the cursor's position; 1 if it passes the filter. */
static int
accept(tide_cursor *c, uint64_t seq, const MDB_val *v, int *rc)
{
	if (tidei_event_decode(&c->ev, v->mv_data, v->mv_size) != 0) {
		*rc = TIDE_EIO;
		return 0;
	}
	c->ev.seq = seq;
	c->ev.scratch = &c->owner->scratch;
	c->ev.attrs = &c->attrs;
	return c->type == NULL || tidei_pattern_match(c->type, c->tlen, c->ev.attr[TIDEI_A_TYPE],
						      c->ev.len[TIDEI_A_TYPE]);
}

static int
cursor_next(tide_cursor *c, const tide_event **ev)
{
	MDB_val k, v;
	uint64_t seq;
	int rc = TIDE_OK, mrc;

	if (c->cur == NULL) {
		while (c->next < c->nseqs) {
			seq = c->seqs[c->next++];
			k.mv_size = 8;
			k.mv_data = &seq;
			if ((mrc = mdb_get(c->txn, c->owner->log->events, &k, &v)) != 0)
				return tidei_err_mdb(mrc) == TIDE_ENOTFOUND ? TIDE_EIO
									    : tidei_err_mdb(mrc);
			if (accept(c, seq, &v, &rc)) {
				*ev = &c->ev;
				return TIDE_OK;
			}
			if (rc != TIDE_OK)
				return rc;
		}
		return TIDE_ENOTFOUND;
	}
	for (;;) {
		if (!c->started) {
			seq = c->from;
			k.mv_size = 8;
			k.mv_data = &seq;
			mrc = mdb_cursor_get(c->cur, &k, &v, MDB_SET_RANGE);
			c->started = 1;
		} else {
			mrc = mdb_cursor_get(c->cur, &k, &v, MDB_NEXT);
		}
		if (mrc != 0)
			return tidei_err_mdb(mrc);
		memcpy(&seq, k.mv_data, 8);
		if (seq > c->until)
			return TIDE_ENOTFOUND;
		if (accept(c, seq, &v, &rc)) {
			*ev = &c->ev;
			return TIDE_OK;
		}
		if (rc != TIDE_OK)
			return rc;
	}
}

TIDE_API int
tide_cursor_next(tide_cursor *c, const tide_event **ev)
{
	int rc;

	if (c == NULL || ev == NULL)
		return tidei_fail(TIDE_EINVAL, "tide_cursor_next: cursor and ev must not be NULL");
	if ((rc = cursor_next(c, ev)) == TIDE_OK)
		return rc;
	if (rc == TIDE_ENOTFOUND)
		return tidei_fail(rc, "no more events (the end of the cursor)");
	if (rc == TIDE_EIO)
		return tidei_fail(rc,
				  "an event after seq %llu is damaged or missing (tide verify "
				  "tells more)",
				  (unsigned long long)c->ev.seq);
	return tidei_fail(rc, "cannot read the next event: %s", tide_strerror(rc));
}

TIDE_API void
tide_cursor_close(tide_cursor *c)
{
	if (c == NULL)
		return;
	if (c->cur != NULL)
		mdb_cursor_close(c->cur);
	tidei_log_snapshot_end(c->owner->log, c->txn);
	free(c->seqs);
	free(c->type);
	tidei_buf_free(&c->attrs);
	free(c);
}

TIDE_API int
tide_log_stat_get(tide_log *l, tide_log_stat *st)
{
	MDB_txn *txn;
	MDB_stat ms;
	MDB_envinfo info;
	MDB_cursor *cur;
	MDB_val k, v;
	int rc;

	if (l == NULL || st == NULL)
		return tidei_fail(TIDE_EINVAL, "tide_log_stat_get: log and st must not be NULL");
	memset(st, 0, sizeof *st);
	rstart(l);
	if ((rc = tidei_log_read_begin(l->log, &txn)) != TIDE_OK)
		return rfail(l, rc, "cannot read the log's figures");
	if ((rc = mdb_stat(txn, l->log->events, &ms)) == 0) {
		st->events = ms.ms_entries;
		rc = mdb_stat(txn, l->log->streams, &ms);
	}
	if (rc == 0) {
		st->streams = ms.ms_entries;
		rc = mdb_cursor_open(txn, l->log->events, &cur);
	}
	if (rc == 0) {
		if ((rc = mdb_cursor_get(cur, &k, &v, MDB_LAST)) == 0)
			memcpy(&st->last_seq, k.mv_data, 8);
		else if (rc == MDB_NOTFOUND)
			rc = 0; /* an empty log */
		mdb_cursor_close(cur);
	}
	if (rc == 0 && (rc = mdb_env_info(l->log->env, &info)) == 0 &&
	    (rc = mdb_env_stat(l->log->env, &ms)) == 0) {
		st->map_size = info.me_mapsize;
		st->size = (uint64_t)(info.me_last_pgno + 1) * ms.ms_psize;
	}
	tidei_log_read_end(l->log);
	if (rc != 0)
		return tidei_fail(tidei_err_mdb(rc), "cannot read the log's figures: %s",
				  mdb_strerror(rc));
	return TIDE_OK;
}

TIDE_API int
tide_log_consumers(tide_log *l, tide_checkpoint_fn *fn, void *ud)
{
	MDB_txn *txn;
	MDB_cursor *cur;
	MDB_val k, v;
	tidei_buf names = { 0 }; /* name "\0" seq(8), one after another */
	int rc, mrc;

	if (l == NULL || fn == NULL)
		return tidei_fail(TIDE_EINVAL, "tide_log_consumers: log and fn must not be NULL");
	rstart(l);
	if ((rc = tidei_log_read_begin(l->log, &txn)) != TIDE_OK)
		return rfail(l, rc, "cannot read the checkpoints");
	if ((mrc = mdb_cursor_open(txn, l->log->consumers, &cur)) != 0) {
		tidei_log_read_end(l->log);
		return tidei_fail(tidei_err_mdb(mrc), "cannot read the checkpoints: %s",
				  mdb_strerror(mrc));
	}
	for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); mrc == 0;
	     mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		if (v.mv_size < 8)
			continue;
		tidei_buf_put(&names, k.mv_data, k.mv_size);
		tidei_buf_putc(&names, '\0');
		tidei_buf_put(&names, v.mv_data, 8);
	}
	mdb_cursor_close(cur);
	tidei_log_read_end(l->log);
	if (mrc != MDB_NOTFOUND || names.failed) {
		tidei_buf_free(&names);
		return names.failed
			       ? tidei_fail(TIDE_ENOMEM, NULL)
			       : tidei_fail(tidei_err_mdb(mrc), "cannot read the checkpoints: %s",
					    mdb_strerror(mrc));
	}
	/* The callback runs after the read: it may read the log itself. */
	for (size_t at = 0; at < names.len;) {
		const char *name = (const char *)names.p + at;
		size_t n = strlen(name);
		fn(ud, name, tidei_ld64(names.p + at + n + 1));
		at += n + 9;
	}
	tidei_buf_free(&names);
	return TIDE_OK;
}

TIDE_API int
tide_log_consumer_backlog(tide_log *l, const char *name, uint64_t *pending, uint64_t *dead)
{
	MDB_txn *txn;
	int rc;

	if (l == NULL || name == NULL)
		return tidei_fail(TIDE_EINVAL,
				  "tide_log_consumer_backlog: log and name must not be NULL");
	rstart(l);
	if ((rc = tidei_log_read_begin(l->log, &txn)) != TIDE_OK)
		return rfail(l, rc, "cannot read the consumer's backlog");
	{
		uint64_t np = 0, nd = 0;
		size_t n = strlen(name) + 1;
		int mrc = tidei_log_count_prefix(txn, l->log->pending, name, n, &np);
		if (mrc == 0)
			mrc = tidei_log_count_prefix(txn, l->log->dead, name, n, &nd);
		tidei_log_read_end(l->log);
		if (mrc != 0)
			return tidei_fail(tidei_err_mdb(mrc),
					  "cannot read the consumer's backlog: %s",
					  mdb_strerror(mrc));
		if (pending != NULL)
			*pending = np;
		if (dead != NULL)
			*dead = nd;
	}
	return TIDE_OK;
}

TIDE_API int
tide_log_rule_info(tide_log *l, const char *consumer, tide_rule_info *out)
{
	tidei_rule_stat st;
	MDB_txn *txn;
	int rc;

	if (l == NULL || consumer == NULL || out == NULL)
		return tidei_fail(TIDE_EINVAL,
				  "tide_log_rule_info: log, consumer and out must not be NULL");
	rstart(l);
	if ((rc = tidei_log_read_begin(l->log, &txn)) != TIDE_OK)
		return rfail(l, rc, "cannot read the rule's state");
	rc = tidei_rule_stat_read(l->log, txn, consumer, &st, 1);
	tidei_log_read_end(l->log);
	if (rc == TIDE_ENOTFOUND)
		return tidei_fail(rc, "'%s' is not a rule (or has not run yet)", consumer);
	if (rc != TIDE_OK)
		return tidei_fail(rc, "cannot read the state of rule '%s'", consumer);
	memset(out, 0, sizeof *out);
	out->watermark = st.watermark;
	out->late = st.late;
	out->fired = st.fired;
	out->failed = st.failed;
	out->keys = st.keys;
	out->timers = st.timers;
	return TIDE_OK;
}

/* ------------------------------------------------------------------------
 * Projections
 * ------------------------------------------------------------------------ */

typedef struct query_ctx {
	tide_state_fn *fn;
	void *ud;
	tidei_buf json;
	int failed;
} query_ctx;

static int
query_one(void *ud, const char *key, size_t klen, const uint8_t *val, size_t vlen)
{
	query_ctx *q = ud;
	tidei_vreader r = { val, val + vlen };

	if (q->fn == NULL)
		return 1; /* only asked whether there is anything */
	tidei_buf_reset(&q->json);
	if (tidei_json_encode(&q->json, &r) != 0 || q->json.failed) {
		q->failed = 1;
		return 1;
	}
	tidei_buf_putc(&q->json, '\0');
	return q->fn(q->ud, key, klen, (const char *)q->json.p, q->json.len - 1);
}

int
tidei_log_query(tidei_log *log, const char *name, const char *key, const char *prefix, size_t limit,
		tide_state_fn *fn, void *ud)
{
	query_ctx q = { fn, ud, { 0 }, 0 };
	tidei_pstate_dbs db;
	MDB_txn *txn;
	int rc;

	if (log == NULL || name == NULL)
		return TIDE_EINVAL;
	if ((rc = tidei_log_read_begin(log, &txn)) != TIDE_OK)
		return rc;
	db.projections = log->projections;
	db.state = log->state;
	db.fmt = tidei_log_key_format(log, txn);
	rc = tidei_state_query(txn, &db, name, key, key ? strlen(key) : 0, prefix, limit, query_one,
			       &q);
	tidei_log_read_end(log);
	tidei_buf_free(&q.json);
	return rc == TIDE_OK && q.failed ? TIDE_EIO : rc;
}

int
tidei_query_fail(tidei_log *log, int rc, const char *name, const char *key)
{
	switch (rc) {
	case TIDE_ENOTFOUND:
		if (key != NULL &&
		    tidei_log_query(log, name, NULL, NULL, 1, NULL, NULL) != TIDE_ENOTFOUND)
			return tidei_fail(rc, "no state for key '%.300s%s' in projection '%.200s'",
					  key, strlen(key) > 300 ? "..." : "", name);
		return tidei_fail(rc, "no projection named '%.200s'", name);
	case TIDE_ESTATE:
		return tidei_fail(rc,
				  "projection '%.200s' is being built for the first time; "
				  "ask again when it is built",
				  name);
	default:
		return tidei_fail(rc, "cannot read projection '%.200s': %s", name,
				  log->err[0] ? log->err : tide_strerror(rc));
	}
}

TIDE_API int
tide_log_query(tide_log *l, const char *name, const char *key, const char *prefix, size_t limit,
	       tide_state_fn *fn, void *ud)
{
	int rc;

	if (l == NULL || name == NULL)
		return tidei_fail(TIDE_EINVAL, "tide_log_query: log and name must not be NULL");
	rstart(l);
	if ((rc = tidei_log_query(l->log, name, key, prefix, limit, fn, ud)) != TIDE_OK)
		return tidei_query_fail(l->log, rc, name, key);
	return TIDE_OK;
}

TIDE_API int
tide_log_projections(tide_log *l, tide_projection_fn *fn, void *ud)
{
	MDB_txn *txn;
	MDB_cursor *cur;
	MDB_val k, v;
	tidei_buf names = { 0 };
	int rc, mrc;

	if (l == NULL || fn == NULL)
		return tidei_fail(TIDE_EINVAL, "tide_log_projections: log and fn must not be NULL");
	rstart(l);
	if ((rc = tidei_log_read_begin(l->log, &txn)) != TIDE_OK)
		return rfail(l, rc, "cannot read the projections");
	if ((mrc = mdb_cursor_open(txn, l->log->projections, &cur)) != 0) {
		tidei_log_read_end(l->log);
		return tidei_fail(tidei_err_mdb(mrc), "cannot read the projections: %s",
				  mdb_strerror(mrc));
	}
	for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); mrc == 0;
	     mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		tidei_buf_put(&names, k.mv_data, k.mv_size);
		tidei_buf_putc(&names, '\0');
	}
	mdb_cursor_close(cur);
	/* read each one's progress in the same snapshot; report after the
	 * read, so that the callback may read the log itself */
	{
		size_t n = 0, cap = 0;
		tidei_proj_meta *metas = NULL;
		const char **which = NULL;
		for (size_t at = 0; at < names.len && !names.failed;) {
			const char *name = (const char *)names.p + at;
			at += strlen(name) + 1;
			if (n == cap) {
				size_t nc = cap ? cap * 2 : 16;
				void *a = realloc(metas, nc * sizeof *metas);
				void *b = a ? realloc(which, nc * sizeof *which) : NULL;
				if (a)
					metas = a;
				if (b)
					which = b;
				if (!a || !b) {
					names.failed = 1;
					break;
				}
				cap = nc;
			}
			if (tidei_proj_meta_get(txn, l->log->projections, name, &metas[n]) ==
			    TIDE_OK)
				which[n++] = name;
		}
		tidei_log_read_end(l->log);
		for (size_t i = 0; i < n && !names.failed; i++) {
			tide_projection_info pi;
			pi.name = which[i];
			pi.live_seq = metas[i].live_seq;
			pi.build_seq = metas[i].build_seq;
			pi.building = metas[i].build != metas[i].live;
			pi.serving = metas[i].live != 0;
			pi.faulted = metas[i].faulted;
			pi.fault_seq = metas[i].fault_seq;
			pi.error = metas[i].error;
			fn(ud, &pi);
		}
		free(metas);
		free(which);
	}
	rc = names.failed ? tidei_fail(TIDE_ENOMEM, NULL) : TIDE_OK;
	tidei_buf_free(&names);
	return rc;
}
