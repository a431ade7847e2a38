/*
 * rtimer.c - a rule's timers, stored and changed in memory (rtimer.h).
 *
 * The changes since the last write are a keymap of (key, timer) -> the
 * timer as it is now (set, or gone), and a binary heap of the set ones by
 * firing order.  A change replaced later leaves a stale heap entry behind
 * (told by its generation), skipped when it comes to the top.
 *
 * Stored timers do not change between writes, so a walk over them may
 * start where the last one found its first timer not overridden: those
 * before it were taken or replaced, and stay so until the write.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "keymap.h"
#include "rtimer.h"
#include "val.h"

/* The timer as the changes leave it: suffix = key-length key name, the
 * keymap's key of its slot. */
typedef struct change {
	int set; /* 0: cancelled or taken */
	uint32_t gen;
	int64_t due, every;
	size_t data_at, data_len; /* in t->data; data_len 0: nil */
} change;

typedef struct heap_ent {
	int64_t due;
	uint32_t slot, gen;
} heap_ent;

struct tidei_rtimers {
	char *consumer;
	size_t nlen;
	tidei_keymap keys; /* suffix -> slot of changes */
	change *ch;
	size_t chcap;
	heap_ent *heap;
	size_t nheap, heapcap;
	tidei_buf data;   /* the changes' data */
	size_t nchanges;  /* calls since the last write */
	tidei_buf resume; /* stored key to walk from (empty: the first) */
	tidei_buf kbuf, sbuf, vbuf;
};

/* ------------------------------------------------------------------------
 * Keys
 * ------------------------------------------------------------------------ */

static void
put_due(tidei_buf *b, int64_t due)
{
	uint64_t u = (uint64_t)due ^ (1ull << 63);
	uint8_t p[8];

	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(u >> (56 - 8 * i));
	tidei_buf_put(b, p, 8);
}

static int64_t
get_due(const uint8_t *p)
{
	uint64_t u = 0;

	for (int i = 0; i < 8; i++)
		u = u << 8 | p[i];
	return (int64_t)(u ^ (1ull << 63));
}

/* t->kbuf = tag name "\0" */
static void
key_start(tidei_rtimers *t, tidei_buf *b, char tag)
{
	tidei_buf_reset(b);
	tidei_buf_putc(b, (uint8_t)tag);
	tidei_buf_put(b, t->consumer, t->nlen);
	tidei_buf_putc(b, 0);
}

/* t->sbuf = key-length key name */
static int
suffix(tidei_rtimers *t, const char *key, size_t kn, const char *name, size_t nn)
{
	uint8_t l[2] = { (uint8_t)(kn >> 8), (uint8_t)kn };

	tidei_buf_reset(&t->sbuf);
	tidei_buf_put(&t->sbuf, l, 2);
	tidei_buf_put(&t->sbuf, key, kn);
	tidei_buf_put(&t->sbuf, name, nn);
	return t->sbuf.failed ? TIDE_ENOMEM : TIDE_OK;
}

static int
mdb_fail(tidei_log *log, int mrc, const char *what, char *err)
{
	int rc = tidei_log_txn_fail(log, mrc, what);

	return tidei_err(err, rc, "%s", log->err);
}

/* Firing order of (due, suffix) pairs. */
static int
order(int64_t da, const void *a, size_t an, int64_t db, const void *b, size_t bn)
{
	int c;

	if (da != db)
		return da < db ? -1 : 1;
	c = memcmp(a, b, an < bn ? an : bn);
	if (c != 0)
		return c;
	return an < bn ? -1 : an > bn;
}

/* ------------------------------------------------------------------------
 * Life
 * ------------------------------------------------------------------------ */

int
tidei_rtimers_new(tidei_rtimers **out, const char *consumer, size_t nlen)
{
	tidei_rtimers *t = calloc(1, sizeof *t);

	if (t == NULL || (t->consumer = malloc(nlen + 1)) == NULL) {
		free(t);
		return TIDE_ENOMEM;
	}
	memcpy(t->consumer, consumer, nlen);
	t->consumer[nlen] = '\0';
	t->nlen = nlen;
	tidei_keymap_init(&t->keys);
	*out = t;
	return TIDE_OK;
}

void
tidei_rtimers_free(tidei_rtimers *t)
{
	if (t == NULL)
		return;
	tidei_keymap_free(&t->keys);
	free(t->ch);
	free(t->heap);
	tidei_buf_free(&t->data);
	tidei_buf_free(&t->resume);
	tidei_buf_free(&t->kbuf);
	tidei_buf_free(&t->sbuf);
	tidei_buf_free(&t->vbuf);
	free(t->consumer);
	free(t);
}

void
tidei_rtimers_forget(tidei_rtimers *t)
{
	tidei_keymap_clear(&t->keys);
	t->nheap = 0;
	t->nchanges = 0;
	tidei_buf_reset(&t->data);
	tidei_buf_reset(&t->resume);
}

size_t
tidei_rtimers_changes(const tidei_rtimers *t)
{
	return t->nchanges;
}

/* ------------------------------------------------------------------------
 * The heap of set changes
 * ------------------------------------------------------------------------ */

static int
heap_less(const tidei_rtimers *t, const heap_ent *a, const heap_ent *b)
{
	size_t an, bn;
	const char *ak = tidei_keymap_key(&t->keys, a->slot, &an);
	const char *bk = tidei_keymap_key(&t->keys, b->slot, &bn);

	return order(a->due, ak, an, b->due, bk, bn) < 0;
}

static int
heap_push(tidei_rtimers *t, heap_ent e)
{
	size_t i;

	if (tidei_array_grow(&t->heap, &t->heapcap, t->nheap, sizeof *t->heap, 64) != 0)
		return TIDE_ENOMEM;
	i = t->nheap++;
	while (i > 0) {
		size_t up = (i - 1) / 2;
		if (!heap_less(t, &e, &t->heap[up]))
			break;
		t->heap[i] = t->heap[up];
		i = up;
	}
	t->heap[i] = e;
	return TIDE_OK;
}

static void
heap_pop(tidei_rtimers *t)
{
	heap_ent last = t->heap[--t->nheap];
	size_t i = 0, n = t->nheap;

	if (n == 0)
		return;
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= n)
			break;
		if (c + 1 < n && heap_less(t, &t->heap[c + 1], &t->heap[c]))
			c++;
		if (!heap_less(t, &t->heap[c], &last))
			break;
		t->heap[i] = t->heap[c];
		i = c;
	}
	t->heap[i] = last;
}

/* The first set change, stale entries dropped: its slot, or -1. */
static long
heap_first(tidei_rtimers *t)
{
	while (t->nheap > 0) {
		const heap_ent *e = &t->heap[0];
		const change *c = &t->ch[e->slot];
		if (c->set && c->gen == e->gen && c->due == e->due)
			return (long)e->slot;
		heap_pop(t);
	}
	return -1;
}

/* ------------------------------------------------------------------------
 * Changes
 * ------------------------------------------------------------------------ */

/* The change of the suffix in t->sbuf, added (as "gone") if new. */
static change *
change_of(tidei_rtimers *t, long *slot)
{
	int fresh = 0;
	long at;

	/* room first: a key in the keymap has its change */
	if (tidei_array_grow(&t->ch, &t->chcap, t->keys.n, sizeof *t->ch, 64) != 0 ||
	    (at = tidei_keymap_put(&t->keys, (const char *)t->sbuf.p, t->sbuf.len, &fresh)) < 0)
		return NULL;
	if (fresh)
		memset(&t->ch[at], 0, sizeof t->ch[at]);
	*slot = at;
	return &t->ch[at];
}

int
tidei_rtimers_set(tidei_rtimers *t, const char *key, size_t kn, const char *name, size_t nn,
		  int64_t due, int64_t every, const void *data, size_t dn)
{
	change *c;
	long at;
	size_t data_at = t->data.len;

	if (suffix(t, key, kn, name, nn) != TIDE_OK)
		return TIDE_ENOMEM;
	if (data != NULL && dn > 0) {
		tidei_buf_put(&t->data, data, dn);
		if (t->data.failed)
			return TIDE_ENOMEM;
	}
	if ((c = change_of(t, &at)) == NULL)
		return TIDE_ENOMEM;
	c->set = 1;
	c->gen++;
	c->due = due;
	c->every = every;
	c->data_at = data_at;
	c->data_len = data != NULL ? dn : 0;
	t->nchanges++;
	if (heap_push(t, (heap_ent){ due, (uint32_t)at, c->gen }) != TIDE_OK) {
		c->set = 0; /* not findable: better gone than lost silently */
		return TIDE_ENOMEM;
	}
	return TIDE_OK;
}

int
tidei_rtimers_cancel(tidei_rtimers *t, const char *key, size_t kn, const char *name, size_t nn)
{
	change *c;
	long at;

	if (suffix(t, key, kn, name, nn) != TIDE_OK || (c = change_of(t, &at)) == NULL)
		return TIDE_ENOMEM;
	c->set = 0;
	c->gen++;
	t->nchanges++;
	return TIDE_OK;
}

/* ------------------------------------------------------------------------
 * Reading: stored timers not overridden, and the changes
 * ------------------------------------------------------------------------ */

/* A stored timer found by stored_first(). */
typedef struct stored {
	int64_t due;
	const uint8_t *suf; /* key-length key name */
	size_t sn;
	MDB_val v;
} stored;

/* The first stored timer no change overrides: 1 with it in @p s (valid
 * while @p txn is not written to), 0 if none, or a negative code. */
static int
stored_first(tidei_rtimers *t, tidei_log *log, MDB_txn *txn, stored *s, char *err)
{
	MDB_cursor *cur;
	MDB_val k;
	size_t pre = 1 + t->nlen + 1;
	int mrc, found = 0;

	if (!log->has_rules)
		return 0;
	key_start(t, &t->kbuf, 'T');
	if (t->kbuf.failed)
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	if ((mrc = mdb_cursor_open(txn, log->rules, &cur)) != 0)
		return mdb_fail(log, mrc, "cannot read timers", err);
	if (t->resume.len > 0) {
		k.mv_size = t->resume.len;
		k.mv_data = t->resume.p;
	} else {
		k.mv_size = t->kbuf.len;
		k.mv_data = t->kbuf.p;
	}
	mrc = mdb_cursor_get(cur, &k, &s->v, MDB_SET_RANGE);
	while (mrc == 0) {
		const uint8_t *p = k.mv_data;
		if (k.mv_size < pre + 10 || memcmp(p, t->kbuf.p, pre) != 0)
			break; /* past this rule's timers */
		s->due = get_due(p + pre);
		s->suf = p + pre + 8;
		s->sn = k.mv_size - pre - 8;
		if (((size_t)s->suf[0] << 8 | s->suf[1]) > s->sn - 2) {
			mdb_cursor_close(cur);
			return mdb_fail(log, MDB_CORRUPTED, "cannot read timers", err);
		}
		if (tidei_keymap_get(&t->keys, (const char *)s->suf, s->sn) < 0) {
			found = 1;
			break;
		}
		mrc = mdb_cursor_get(cur, &k, &s->v, MDB_NEXT);
	}
	if (mrc != 0 && mrc != MDB_NOTFOUND) {
		mdb_cursor_close(cur);
		return mdb_fail(log, mrc, "cannot read timers", err);
	}
	/* the next walk starts here: what came before is overridden */
	tidei_buf_reset(&t->resume);
	if (found)
		tidei_buf_put(&t->resume, k.mv_data, k.mv_size);
	else
		tidei_buf_put(&t->resume, "\xff", 1); /* past every rule's timers */
	mdb_cursor_close(cur);
	if (t->resume.failed) {
		tidei_buf_reset(&t->resume);
		t->resume.failed = 0;
	}
	return found;
}

/* Which comes first: 1 the stored one, 0 the change at @p slot, -1 neither
 * (neither exists). */
static int
pick(const tidei_rtimers *t, int has_stored, const stored *s, long slot)
{
	size_t cn;
	const char *ck;

	if (slot < 0)
		return has_stored ? 1 : -1;
	if (!has_stored)
		return 0;
	ck = tidei_keymap_key(&t->keys, (size_t)slot, &cn);
	return order(s->due, s->suf, s->sn, t->ch[slot].due, ck, cn) < 0;
}

int
tidei_rtimers_first(tidei_rtimers *t, tidei_log *log, MDB_txn *txn, int64_t *due, char *err)
{
	stored s;
	int has = stored_first(t, log, txn, &s, err);
	long slot;

	if (has < 0)
		return has;
	slot = heap_first(t);
	switch (pick(t, has, &s, slot)) {
	case 1: *due = s.due; return 1;
	case 0: *due = t->ch[slot].due; return 1;
	default: return 0;
	}
}

/* The first period of @p due + k * @p every (k >= 1) after @p now, for a
 * recurring timer due at or before it; INT64_MAX past the end of time.  In
 * unsigned arithmetic: now - due and the products may not fit. */
static int64_t
next_period(int64_t due, int64_t every, int64_t now)
{
	uint64_t k = ((uint64_t)now - (uint64_t)due) / (uint64_t)every + 1;
	uint64_t room = (uint64_t)INT64_MAX - (uint64_t)due;

	if (k > room / (uint64_t)every)
		return INT64_MAX;
	return (int64_t)((uint64_t)due + k * (uint64_t)every);
}

/* Stored value [data, every] into @p out. */
static void
read_value(const MDB_val *v, tidei_rule_timer *out)
{
	tidei_vreader rd = { v->mv_data, (const uint8_t *)v->mv_data + v->mv_size };
	tidei_vitem it;

	out->every = 0;
	if (tidei_val_next(&rd, &it) == 0 && it.type == TIDEI_V_ARRAY && it.u.count == 2) {
		const uint8_t *d = rd.p;
		if (tidei_val_skip(&rd) == 0) {
			tidei_buf_put(&out->data, d, (size_t)(rd.p - d));
			if (tidei_val_next(&rd, &it) == 0 && it.type == TIDEI_V_INT)
				out->every = it.u.i;
		}
	}
}

int
tidei_rtimers_take(tidei_rtimers *t, tidei_log *log, MDB_txn *txn, int64_t now,
		   tidei_rule_timer *out, int64_t *next, char *err)
{
	stored s;
	int has = stored_first(t, log, txn, &s, err), which;
	long slot;
	const uint8_t *suf;
	size_t sn, kn;

	if (has < 0)
		return has;
	slot = heap_first(t);
	which = pick(t, has, &s, slot);
	*next = which < 0 ? INT64_MAX : which ? s.due : t->ch[slot].due;
	if (which < 0 || *next > now)
		return 0;
	tidei_buf_reset(&out->key);
	tidei_buf_reset(&out->name);
	tidei_buf_reset(&out->data);
	out->due = *next;
	if (which) {
		suf = s.suf;
		sn = s.sn;
		read_value(&s.v, out);
	} else {
		const change *c = &t->ch[slot];
		suf = (const uint8_t *)tidei_keymap_key(&t->keys, (size_t)slot, &sn);
		out->every = c->every;
		if (c->data_len > 0)
			tidei_buf_put(&out->data, t->data.p + c->data_at, c->data_len);
	}
	kn = (size_t)suf[0] << 8 | suf[1];
	tidei_buf_put(&out->key, suf + 2, kn);
	tidei_buf_put(&out->name, suf + 2 + kn, sn - 2 - kn);
	if (out->key.failed || out->name.failed || out->data.failed)
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	/* taken out now; a recurring one is due again, past now */
	if (tidei_rtimers_cancel(t, (const char *)out->key.p, out->key.len,
				 (const char *)out->name.p, out->name.len) != TIDE_OK ||
	    (out->every > 0 &&
	     tidei_rtimers_set(t, (const char *)out->key.p, out->key.len, (const char *)out->name.p,
			       out->name.len, next_period(out->due, out->every, now), out->every,
			       out->data.len ? out->data.p : NULL, out->data.len) != TIDE_OK))
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	return 1;
}

/* ------------------------------------------------------------------------
 * Writing
 * ------------------------------------------------------------------------ */

/* One change being written: its slot, and the due time of the timer it
 * replaces (had: there is one). */
typedef struct wr {
	uint32_t slot;
	int had;
	int64_t old, due; /* the due time the sort is by */
	const char *suf;
	size_t sn;
} wr;

static int
by_suffix(const void *a, const void *b)
{
	const wr *x = a, *y = b;
	int c = memcmp(x->suf, y->suf, x->sn < y->sn ? x->sn : y->sn);

	return c != 0 ? c : x->sn < y->sn ? -1 : x->sn > y->sn;
}

/* By the stored order of 'T' keys: due time, then suffix. */
static int
by_due(const void *a, const void *b)
{
	const wr *x = a, *y = b;

	if (x->due != y->due)
		return x->due < y->due ? -1 : 1;
	return by_suffix(a, b);
}

/* t->sbuf = the 'T' key of the timer @p w due at @p due. */
static void
due_key(tidei_rtimers *t, const wr *w, int64_t due)
{
	key_start(t, &t->sbuf, 'T');
	put_due(&t->sbuf, due);
	tidei_buf_put(&t->sbuf, w->suf, w->sn);
}

/* The 'N' records (key name -> due) of the changes, in key order through
 * @p cur: what each replaces is noted, the cancelled ones go. */
static int
write_names(tidei_rtimers *t, tidei_log *log, MDB_cursor *cur, wr *v, size_t n, char *err)
{
	qsort(v, n, sizeof *v, by_suffix);
	for (size_t i = 0; i < n; i++) {
		const change *c = &t->ch[v[i].slot];
		MDB_val k, d;
		int mrc;

		key_start(t, &t->kbuf, 'N');
		tidei_buf_put(&t->kbuf, v[i].suf, v[i].sn);
		if (t->kbuf.failed)
			return tidei_err(err, TIDE_ENOMEM, "out of memory");
		k.mv_size = t->kbuf.len;
		k.mv_data = t->kbuf.p;
		mrc = mdb_cursor_get(cur, &k, &d, MDB_SET_KEY);
		if (mrc != 0 && mrc != MDB_NOTFOUND)
			return mdb_fail(log, mrc, "cannot read a timer", err);
		if (mrc == 0) {
			if (d.mv_size != 8)
				return mdb_fail(log, MDB_CORRUPTED, "cannot read a timer", err);
			v[i].had = 1;
			v[i].old = get_due(d.mv_data);
			if (!c->set && (mrc = mdb_cursor_del(cur, 0)) != 0)
				return mdb_fail(log, mrc, "cannot delete a timer", err);
		}
		if (!c->set)
			continue;
		tidei_buf_reset(&t->vbuf);
		put_due(&t->vbuf, c->due);
		if (t->vbuf.failed)
			return tidei_err(err, TIDE_ENOMEM, "out of memory");
		k.mv_size = t->kbuf.len;
		k.mv_data = t->kbuf.p;
		d.mv_size = 8;
		d.mv_data = t->vbuf.p;
		if ((mrc = mdb_cursor_put(cur, &k, &d, 0)) != 0)
			return mdb_fail(log, mrc, "cannot store a timer", err);
	}
	return TIDE_OK;
}

/* The 'T' records (due key name -> [data, every]): the replaced ones
 * go, then the set ones come, each in stored order through @p cur. */
static int
write_dues(tidei_rtimers *t, tidei_log *log, MDB_cursor *cur, wr *v, size_t n, char *err)
{
	size_t m = 0;

	for (size_t i = 0; i < n; i++)
		if (v[i].had) {
			wr x = v[i];
			x.due = x.old;
			v[i] = v[m];
			v[m++] = x;
		}
	qsort(v, m, sizeof *v, by_due);
	for (size_t i = 0; i < m; i++) {
		MDB_val k;
		int mrc;
		due_key(t, &v[i], v[i].old);
		if (t->sbuf.failed)
			return tidei_err(err, TIDE_ENOMEM, "out of memory");
		k.mv_size = t->sbuf.len;
		k.mv_data = t->sbuf.p;
		mrc = mdb_cursor_get(cur, &k, NULL, MDB_SET);
		if (mrc == 0)
			mrc = mdb_cursor_del(cur, 0);
		if (mrc != 0 && mrc != MDB_NOTFOUND)
			return mdb_fail(log, mrc, "cannot delete a timer", err);
	}
	m = 0;
	for (size_t i = 0; i < n; i++)
		if (t->ch[v[i].slot].set) {
			wr x = v[i];
			x.due = t->ch[x.slot].due;
			v[i] = v[m];
			v[m++] = x;
		}
	qsort(v, m, sizeof *v, by_due);
	for (size_t i = 0; i < m; i++) {
		const change *c = &t->ch[v[i].slot];
		MDB_val k, d;
		int mrc;
		due_key(t, &v[i], c->due);
		tidei_buf_reset(&t->vbuf);
		tidei_val_array(&t->vbuf, 2);
		if (c->data_len > 0)
			tidei_buf_put(&t->vbuf, t->data.p + c->data_at, c->data_len);
		else
			tidei_val_nil(&t->vbuf);
		tidei_val_int(&t->vbuf, c->every);
		if (t->sbuf.failed || t->vbuf.failed)
			return tidei_err(err, TIDE_ENOMEM, "out of memory");
		k.mv_size = t->sbuf.len;
		k.mv_data = t->sbuf.p;
		d.mv_size = t->vbuf.len;
		d.mv_data = t->vbuf.p;
		if ((mrc = mdb_cursor_put(cur, &k, &d, 0)) != 0)
			return mdb_fail(log, mrc, "cannot store a timer", err);
	}
	return TIDE_OK;
}

/* The changes are written in the stored order of each kind of record,
 * through one cursor: a positioned cursor finds the next key on its
 * page, without a descent from the root. */
int
tidei_rtimers_write(tidei_rtimers *t, tidei_log *log, char *err)
{
	size_t n = t->keys.n;
	MDB_cursor *cur;
	wr *v;
	int rc, mrc;

	if (n == 0) {
		tidei_rtimers_forget(t);
		return TIDE_OK;
	}
	if ((v = calloc(n, sizeof *v)) == NULL)
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++) {
		v[i].slot = (uint32_t)i;
		v[i].suf = tidei_keymap_key(&t->keys, i, &v[i].sn);
	}
	if ((mrc = mdb_cursor_open(log->txn, log->rules, &cur)) != 0) {
		free(v);
		return mdb_fail(log, mrc, "cannot store a timer", err);
	}
	rc = write_names(t, log, cur, v, n, err);
	if (rc == TIDE_OK)
		rc = write_dues(t, log, cur, v, n, err);
	mdb_cursor_close(cur);
	free(v);
	if (rc == TIDE_OK)
		tidei_rtimers_forget(t);
	return rc;
}
