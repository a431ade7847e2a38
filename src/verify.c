/*
 * verify.c - tide_log_verify(): walk every database of a log and check
 * what can be checked, reporting each problem with where it is.
 *
 * What is checked (the layout is described at the top of log.c):
 *   file         data.mdb holds every page its meta page counts
 *   meta         the format version is there and is this build's
 *   events       8-byte keys, gapless from 1; each record decodes (its
 *                extensions and data too); a stream's records link to
 *                their predecessor with the version before theirs;
 *                `recorded` never goes backwards
 *   ids          each entry names an existing event with that source and
 *                id (long keys: the part kept in clear), one per event
 *   streams      each head names an existing event of that subject, at
 *                the head's version
 *   consumers, once        seqs within the log
 *   pending, dead          well-formed keys and values, for events that exist
 *   projections  progress records decode, with seqs within the log
 *   state        keys of a known projection and generation; values decode
 *   free         LMDB's free list names pages inside the file
 *
 * The walk runs in a child process.  LMDB follows page numbers it reads
 * from the file, so a damaged page can send it outside the map (SIGSEGV)
 * or past the end of a truncated file (SIGBUS); the child may die, the
 * caller must not.  The child sends each problem to the parent as a line
 * on a pipe and keeps its position (database, last key read, any lookup
 * in progress) in a shared page; when it dies, the parent reports the
 * crash there and starts another child at the next database (and, at the
 * end, one that clears the reader slots the dead ones left).  The
 * children open the log themselves: an LMDB environment must not cross a
 * fork(), and this process opens none (the caller may have the log open,
 * and an environment opened twice in a process loses its locks).
 *
 * One read transaction covers the walk, so it is a consistent snapshot
 * also while an engine writes.  After LMDB reports an error the
 * transaction is replaced (a later snapshot), and a seq beyond the end
 * seen first is accepted if the event is there.
 */
#include "config.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "pstate.h"
#include "val.h"

enum {
	DB_FILE,
	DB_META,
	DB_EVENTS,
	DB_IDS,
	DB_STREAMS,
	DB_CONSUMERS,
	DB_PENDING,
	DB_DEAD,
	DB_ONCE,
	DB_PROJECTIONS,
	DB_STATE,
	DB_FREE,
	NDB
};

static const char *const db_names[NDB] = {
	"file",    "meta", "events", "ids",         "streams", "consumers",
	"pending", "dead", "once",   "projections", "state",   "free",
};

#define KEY_KEEP 192 /* bytes of the last key kept for a crash report */
#define KEY_SHOWN 64 /* bytes of a key shown in a problem */
#define PROBLEM_MAX 1024
/* A damaged page read as records yields garbage by the thousand: past
 * this many problems, the walk of a database stops. */
#define DB_PROBLEMS_MAX 1000
#define TOO_MANY (-1)     /* step(): the walk stops */
#define CLEANUP (NDB + 1) /* a child that only clears stale reader slots */

/* Shared between the walking child and the parent (MAP_SHARED): written
 * by the child only, read by the parent after the child has ended. */
typedef struct progress {
	int db;      /* database being walked; -1 while opening the log */
	int looking; /* database of a lookup in progress, or -1 */
	uint64_t looking_seq;
	uint64_t entries[NDB];
	int done[NDB]; /* the walk of the database reached its end */
	uint64_t last; /* the last seq, once known */
	int have_last;
	int snapshot_changed; /* a transaction was replaced after an error */
	size_t klen;          /* the last key read in `db` (cut at KEY_KEEP) */
	size_t kfull;
	unsigned char key[KEY_KEEP];
} progress;

/* The child's side of the walk. */
typedef struct walk {
	tidei_log *log;
	MDB_txn *txn;
	int bad_txn; /* LMDB reported an error: replace the transaction */
	int db;      /* the database being walked */
	uint64_t db_problems;
	progress *pg;
	int out;        /* the pipe to the parent */
	uint64_t pages; /* pages the meta counts */
	/* state: the projection of the previous key */
	char proj[512];
	int proj_found;
	tidei_proj_meta meta;
} walk;

/* ------------------------------------------------------------------------
 * The child: reporting
 * ------------------------------------------------------------------------ */

/* Print @p key (@p n bytes) into @p out: printable ASCII as is, anything
 * else as \xNN; long keys are cut. */
static void
escape_key(char *out, size_t len, const unsigned char *key, size_t n, size_t full)
{
	size_t o = 0;

	for (size_t i = 0; i < n && o + 8 < len; i++) {
		unsigned char c = key[i];
		if (c >= 0x20 && c < 0x7f && c != '\\')
			out[o++] = (char)c;
		else
			o += (size_t)snprintf(out + o, len - o, "\\x%02x", c);
	}
	if (full > n && o + 4 < len)
		o += (size_t)snprintf(out + o, len - o, "...");
	out[o] = '\0';
}

static void
send_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			_exit(3); /* the parent has gone */
		p += w;
		n -= (size_t)w;
	}
}

/* Report one problem of database @p db about @p key (NULL: none) or
 * @p seq (0: none). */
static void problem(walk *w, int db, const void *key, size_t klen, uint64_t seq, const char *fmt,
		    ...) TIDEI_PRINTF(6, 7);

static void
problem(walk *w, int db, const void *key, size_t klen, uint64_t seq, const char *fmt, ...)
{
	char what[PROBLEM_MAX], shown[PROBLEM_MAX], line[3 * PROBLEM_MAX];
	va_list ap;
	int n;

	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	what[strcspn(what, "\t\n")] = '\0';
	shown[0] = '\0';
	if (key != NULL)
		escape_key(shown, sizeof shown, key, klen < KEY_SHOWN ? klen : KEY_SHOWN, klen);
	n = snprintf(line, sizeof line, "P\t%d\t%llu\t%s\t%s\n", db, (unsigned long long)seq, shown,
		     what);
	if (n > 0)
		send_all(w->out, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
	if (db == w->db)
		w->db_problems++;
}

/* Remember the key just read, for a crash report. */
static void
at_key(walk *w, const MDB_val *k)
{
	progress *pg = w->pg;

	pg->kfull = k->mv_size;
	pg->klen = k->mv_size < KEY_KEEP ? k->mv_size : KEY_KEEP;
	memcpy(pg->key, k->mv_data, pg->klen);
	pg->entries[pg->db]++;
}

/* An LMDB error while walking @p db: reported, and the transaction is
 * replaced before the next database. */
static void
mdb_problem(walk *w, int db, const MDB_val *after, int rc, const char *doing)
{
	w->bad_txn = 1;
	if (after != NULL)
		problem(w, db, after->mv_data, after->mv_size, 0, "%s after this key: %s", doing,
			mdb_strerror(rc));
	else
		problem(w, db, NULL, 0, 0, "%s: %s", doing, mdb_strerror(rc));
}

/* Replace the read transaction (after LMDB reported an error in it). */
static int
begin(walk *w)
{
	if (w->txn != NULL) {
		mdb_txn_abort(w->txn);
		w->txn = NULL;
		w->pg->snapshot_changed = 1;
	}
	w->bad_txn = 0;
	for (int attempt = 0; attempt < 2; attempt++) {
		int rc = mdb_txn_begin(w->log->env, NULL, MDB_RDONLY, &w->txn);
		if (rc == 0)
			return 0;
		w->txn = NULL;
		if (rc != MDB_MAP_RESIZED)
			break;
		mdb_env_set_mapsize(w->log->env, 0); /* the engine grew the map */
	}
	return -1;
}

static MDB_dbi dbi_of(const walk *w, int db);

/* A cursor over one database that survives a replaced transaction: it
 * goes on after the last key read, in the new snapshot. */
typedef struct iter {
	MDB_cursor *c;
	int started;
	size_t klen;
	uint8_t key[512];
} iter;

/* The next record: 0, MDB_NOTFOUND at the end, TOO_MANY, or an LMDB
 * error. */
static int
step(walk *w, iter *it, MDB_val *k, MDB_val *v)
{
	int rc;

	if (w->db_problems >= DB_PROBLEMS_MAX)
		return TOO_MANY;
	if (w->bad_txn) {
		MDB_val at = { it->klen, it->key };
		mdb_cursor_close(it->c);
		it->c = NULL;
		if (begin(w) != 0 || mdb_cursor_open(w->txn, dbi_of(w, w->db), &it->c) != 0) {
			it->c = NULL;
			return MDB_BAD_TXN;
		}
		rc = mdb_cursor_get(it->c, &at, v, it->started ? MDB_SET_RANGE : MDB_FIRST);
		if (rc == 0 && it->started && at.mv_size == it->klen &&
		    memcmp(at.mv_data, it->key, it->klen) == 0)
			rc = mdb_cursor_get(it->c, k, v, MDB_NEXT);
		else if (rc == 0)
			*k = at;
	} else {
		rc = mdb_cursor_get(it->c, k, v, it->started ? MDB_NEXT : MDB_FIRST);
	}
	it->started = 1;
	if (rc != 0)
		return rc;
	/* keys longer than LMDB allows are garbage: resuming after them is
	 * approximate */
	it->klen = k->mv_size < sizeof it->key ? k->mv_size : sizeof it->key;
	memcpy(it->key, k->mv_data, it->klen);
	at_key(w, k);
	return 0;
}

/* ------------------------------------------------------------------------
 * The child: lookups across databases
 * ------------------------------------------------------------------------ */

/* Read the event at @p seq into @p ev: 0, or 1 if missing, 2 if it does
 * not decode, 3 on an LMDB error (*rc). */
static int
get_event(walk *w, uint64_t seq, struct tide_event *ev, int *rc)
{
	MDB_val k = { 8, &seq }, v;
	int found;

	w->pg->looking = DB_EVENTS;
	w->pg->looking_seq = seq;
	*rc = mdb_get(w->txn, w->log->events, &k, &v);
	w->pg->looking = -1;
	if (*rc == MDB_NOTFOUND)
		return 1;
	if (*rc != 0) {
		w->bad_txn = 1;
		return 3;
	}
	found = tidei_event_decode(ev, v.mv_data, v.mv_size) == 0;
	return found ? 0 : 2;
}

/* Check that a record of @p db (key @p k) refers to an event that exists;
 * @p what names the reference ("points at", "is a retry of", ...). */
static int
want_event(walk *w, int db, const MDB_val *k, uint64_t seq, const char *what, struct tide_event *ev)
{
	int rc, got;

	if (seq == 0) {
		problem(w, db, k->mv_data, k->mv_size, 0, "%s seq 0", what);
		return -1;
	}
	got = get_event(w, seq, ev, &rc);
	if (got == 1)
		problem(w, db, k->mv_data, k->mv_size, seq, "%s seq %llu, which is not in the log",
			what, (unsigned long long)seq);
	else if (got == 2)
		problem(w, db, k->mv_data, k->mv_size, seq,
			"%s seq %llu, whose record does not decode", what, (unsigned long long)seq);
	else if (got == 3)
		problem(w, db, k->mv_data, k->mv_size, seq, "%s seq %llu, which cannot be read: %s",
			what, (unsigned long long)seq, mdb_strerror(rc));
	return got == 0 ? 0 : -1;
}

/* A seq that must not be beyond the end of the log (a checkpoint): past
 * the end seen first, it is accepted if a later snapshot holds it. */
static void
want_within(walk *w, int db, const MDB_val *k, uint64_t seq, const char *what)
{
	struct tide_event ev;
	int rc;

	if (!w->pg->have_last || seq <= w->pg->last)
		return;
	if (w->pg->snapshot_changed && get_event(w, seq, &ev, &rc) == 0)
		return;
	problem(w, db, k->mv_data, k->mv_size, seq, "%s %llu is beyond the end of the log (%llu)",
		what, (unsigned long long)seq, (unsigned long long)w->pg->last);
}

/* 1 if @p p[0..n) is exactly one encoded value. */
static int
one_value(const uint8_t *p, size_t n)
{
	tidei_vreader r = { p, p + n };

	return tidei_val_skip(&r) == 0 && r.p == r.end;
}

/* ------------------------------------------------------------------------
 * The child: one database at a time
 * ------------------------------------------------------------------------ */

/* The event record itself, and its link to its stream predecessor. */
static void
check_event(walk *w, const MDB_val *k, uint64_t seq, const struct tide_event *ev)
{
	struct tide_event pv;
	int rc, got;

	if (ev->attr[TIDEI_A_ID] == NULL || ev->attr[TIDEI_A_SOURCE] == NULL ||
	    ev->attr[TIDEI_A_TYPE] == NULL)
		problem(w, DB_EVENTS, NULL, 0, seq, "record lacks its id, source or type");
	if (ev->ext != NULL && !one_value(ev->ext, ev->ext_len))
		problem(w, DB_EVENTS, NULL, 0, seq, "the record's extensions do not decode");
	if (ev->data != NULL && !one_value(ev->data, ev->data_len))
		problem(w, DB_EVENTS, NULL, 0, seq, "the record's data does not decode");
	if (ev->attr[TIDEI_A_SUBJECT] == NULL) {
		if (ev->version != 0 || ev->prev != 0)
			problem(w, DB_EVENTS, NULL, 0, seq,
				"no subject, yet stream version %llu and predecessor %llu",
				(unsigned long long)ev->version, (unsigned long long)ev->prev);
		return;
	}
	if (ev->version == 0 || (ev->version == 1) != (ev->prev == 0) || ev->prev >= seq) {
		problem(w, DB_EVENTS, NULL, 0, seq,
			"stream version %llu does not fit its predecessor %llu",
			(unsigned long long)ev->version, (unsigned long long)ev->prev);
		return;
	}
	if (ev->prev == 0)
		return;
	got = get_event(w, ev->prev, &pv, &rc);
	if (got == 1 || got == 2)
		problem(w, DB_EVENTS, NULL, 0, seq, "its stream predecessor %llu %s",
			(unsigned long long)ev->prev,
			got == 1 ? "is not in the log" : "does not decode");
	else if (got == 3)
		problem(w, DB_EVENTS, NULL, 0, seq,
			"its stream predecessor %llu cannot be read: %s",
			(unsigned long long)ev->prev, mdb_strerror(rc));
	else if (pv.attr[TIDEI_A_SUBJECT] == NULL ||
		 pv.len[TIDEI_A_SUBJECT] != ev->len[TIDEI_A_SUBJECT] ||
		 memcmp(pv.attr[TIDEI_A_SUBJECT], ev->attr[TIDEI_A_SUBJECT],
			ev->len[TIDEI_A_SUBJECT]) != 0)
		problem(w, DB_EVENTS, NULL, 0, seq,
			"its stream predecessor %llu has another subject",
			(unsigned long long)ev->prev);
	else if (pv.version + 1 != ev->version)
		problem(w, DB_EVENTS, NULL, 0, seq,
			"stream version %llu follows version %llu (seq %llu)",
			(unsigned long long)ev->version, (unsigned long long)pv.version,
			(unsigned long long)ev->prev);
	(void)k;
}

static int
walk_events(walk *w, iter *it)
{
	MDB_val k, v;
	uint64_t expect = 1, seq;
	int64_t recorded = INT64_MIN;
	int rc;

	while ((rc = step(w, it, &k, &v)) == 0) {
		struct tide_event ev;
		if (k.mv_size != 8) {
			problem(w, DB_EVENTS, k.mv_data, k.mv_size, 0,
				"key of %zu bytes, not an 8-byte seq", k.mv_size);
			continue;
		}
		memcpy(&seq, k.mv_data, 8);
		if (seq > expect)
			problem(w, DB_EVENTS, NULL, 0, expect,
				seq == expect + 1 ? "seq %llu is missing"
						  : "seqs %llu to %llu are missing",
				(unsigned long long)expect, (unsigned long long)(seq - 1));
		else if (seq < expect)
			problem(w, DB_EVENTS, NULL, 0, seq, "seq out of order (after %llu)",
				(unsigned long long)(expect - 1));
		expect = seq + 1;
		if (tidei_event_decode(&ev, v.mv_data, v.mv_size) != 0) {
			problem(w, DB_EVENTS, NULL, 0, seq, "record of %zu bytes does not decode",
				v.mv_size);
			continue;
		}
		if (ev.recorded < recorded)
			problem(w, DB_EVENTS, NULL, 0, seq,
				"recorded before the event preceding it");
		recorded = ev.recorded;
		check_event(w, &k, seq, &ev);
	}
	if (rc == MDB_NOTFOUND) {
		w->pg->last = expect - 1;
		w->pg->have_last = 1;
	}
	return rc;
}

static int
walk_ids(walk *w, iter *it)
{
	MDB_val k, v;
	int rc;

	while ((rc = step(w, it, &k, &v)) == 0) {
		struct tide_event ev;
		uint64_t seq;
		if (v.mv_size != 8) {
			problem(w, DB_IDS, k.mv_data, k.mv_size, 0, "value of %zu bytes, not a seq",
				v.mv_size);
			continue;
		}
		memcpy(&seq, v.mv_data, 8);
		if (want_event(w, DB_IDS, &k, seq, "points at", &ev) != 0)
			continue;
		if (!tidei_log_key_match(w->log, w->txn, k.mv_data, k.mv_size,
					 ev.attr[TIDEI_A_SOURCE], ev.len[TIDEI_A_SOURCE],
					 ev.attr[TIDEI_A_ID], ev.len[TIDEI_A_ID]))
			problem(w, DB_IDS, k.mv_data, k.mv_size, seq,
				"points at seq %llu, an event with another source or id",
				(unsigned long long)seq);
	}
	return rc;
}

static int
walk_streams(walk *w, iter *it)
{
	MDB_val k, v;
	int rc;

	while ((rc = step(w, it, &k, &v)) == 0) {
		struct tide_event ev;
		uint64_t version, last;
		if (v.mv_size != 16) {
			problem(w, DB_STREAMS, k.mv_data, k.mv_size, 0,
				"value of %zu bytes, not a stream head", v.mv_size);
			continue;
		}
		version = tidei_ld64(v.mv_data);
		last = tidei_ld64((const uint8_t *)v.mv_data + 8);
		if (want_event(w, DB_STREAMS, &k, last, "head points at", &ev) != 0)
			continue;
		if (ev.attr[TIDEI_A_SUBJECT] == NULL ||
		    !tidei_log_key_match(w->log, w->txn, k.mv_data, k.mv_size,
					 ev.attr[TIDEI_A_SUBJECT], ev.len[TIDEI_A_SUBJECT], NULL,
					 0))
			problem(w, DB_STREAMS, k.mv_data, k.mv_size, last,
				"head points at seq %llu, an event of another subject",
				(unsigned long long)last);
		else if (ev.version != version)
			problem(w, DB_STREAMS, k.mv_data, k.mv_size, last,
				"head at version %llu, but its last event (seq %llu) is version "
				"%llu",
				(unsigned long long)version, (unsigned long long)last,
				(unsigned long long)ev.version);
	}
	return rc;
}

/* consumers (name -> checkpoint) and once (consumer "\0" key -> seq) */
static int
walk_seqs(walk *w, iter *it, int db)
{
	MDB_val k, v;
	int rc;

	while ((rc = step(w, it, &k, &v)) == 0) {
		if (db == DB_CONSUMERS ? v.mv_size < 8 : v.mv_size != 8) {
			problem(w, db, k.mv_data, k.mv_size, 0, "value of %zu bytes, not a seq",
				v.mv_size);
			continue;
		}
		if (db == DB_ONCE && memchr(k.mv_data, '\0', k.mv_size) == NULL)
			problem(w, db, k.mv_data, k.mv_size, 0, "key names no consumer");
		want_within(w, db, &k, tidei_ld64(v.mv_data),
			    db == DB_CONSUMERS ? "checkpoint" : "claimed at seq");
	}
	return rc;
}

/* pending and dead: consumer "\0" seq (big-endian) */
static int
walk_retries(walk *w, iter *it, int db)
{
	MDB_val k, v;
	int rc;

	while ((rc = step(w, it, &k, &v)) == 0) {
		struct tide_event ev;
		tidei_dead_rec dr;
		MDB_val name;
		size_t nl;
		uint64_t seq;
		if (tidei_log_seq_key_parse(k.mv_data, k.mv_size, &nl, &seq) != 0 || nl == 0) {
			problem(w, db, k.mv_data, k.mv_size, 0,
				"key is not a consumer name and a seq");
			continue;
		}
		name.mv_size = nl;
		name.mv_data = k.mv_data;
		if (db == DB_PENDING &&
		    (v.mv_size < 16 || (((const uint8_t *)v.mv_data)[0] != TIDEI_PENDING_RETRY &&
					((const uint8_t *)v.mv_data)[0] != TIDEI_PENDING_WAITING)))
			problem(w, db, k.mv_data, nl, seq, "retry record does not decode");
		if (db == DB_DEAD && tidei_log_dead_decode(&v, &dr) != 0)
			problem(w, db, k.mv_data, nl, seq, "dead letter does not decode");
		want_event(w, db, &name, seq,
			   db == DB_PENDING ? "is a retry of" : "is a dead letter of", &ev);
	}
	return rc;
}

static int
walk_projections(walk *w, iter *it)
{
	MDB_val k, v;
	char name[512];
	int rc;

	while ((rc = step(w, it, &k, &v)) == 0) {
		tidei_proj_meta m;
		int mrc;
		if (k.mv_size == 0 || k.mv_size >= sizeof name ||
		    memchr(k.mv_data, '\0', k.mv_size) != NULL) {
			problem(w, DB_PROJECTIONS, k.mv_data, k.mv_size, 0,
				"key is not a projection name");
			continue;
		}
		memcpy(name, k.mv_data, k.mv_size);
		name[k.mv_size] = '\0';
		if ((mrc = tidei_proj_meta_get(w->txn, w->log->projections, name, &m)) != TIDE_OK) {
			problem(w, DB_PROJECTIONS, k.mv_data, k.mv_size, 0,
				"progress record of %zu bytes does not decode", v.mv_size);
			continue;
		}
		if (m.live > m.build)
			problem(w, DB_PROJECTIONS, k.mv_data, k.mv_size, 0,
				"serves generation %u, newer than the one it builds (%u)", m.live,
				m.build);
		want_within(w, DB_PROJECTIONS, &k, m.live_seq, "position");
		want_within(w, DB_PROJECTIONS, &k, m.build_seq, "rebuild position");
		if (m.faulted)
			want_within(w, DB_PROJECTIONS, &k, m.fault_seq, "stopped at seq");
	}
	return rc;
}

static int
walk_state(walk *w, iter *it)
{
	MDB_val k, v, st;
	int rc;

	w->proj[0] = '\0';
	w->proj_found = 0;
	while ((rc = step(w, it, &k, &v)) == 0) {
		const uint8_t *p = k.mv_data, *nul = memchr(p, '\0', k.mv_size);
		size_t nl = nul ? (size_t)(nul - p) : 0;
		uint32_t gen, top;
		if (nul == NULL || nl == 0 || nl >= sizeof w->proj || k.mv_size < nl + 5) {
			problem(w, DB_STATE, k.mv_data, k.mv_size, 0,
				"key is not a projection, a generation and a key");
			continue;
		}
		gen = (uint32_t)p[nl + 1] << 24 | (uint32_t)p[nl + 2] << 16 |
		      (uint32_t)p[nl + 3] << 8 | p[nl + 4];
		if (strlen(w->proj) != nl || memcmp(w->proj, p, nl) != 0) {
			memcpy(w->proj, p, nl);
			w->proj[nl] = '\0';
			w->pg->looking = DB_PROJECTIONS;
			w->proj_found = tidei_proj_meta_get(w->txn, w->log->projections, w->proj,
							    &w->meta) == TIDE_OK;
			w->pg->looking = -1;
		}
		top = w->meta.live > w->meta.build ? w->meta.live : w->meta.build;
		if (!w->proj_found)
			problem(w, DB_STATE, k.mv_data, k.mv_size, 0,
				"belongs to no projection (or its progress record is damaged)");
		else if (gen == 0 || gen > top)
			problem(w, DB_STATE, k.mv_data, k.mv_size, 0,
				"generation %u, but the projection is at generation %u", gen, top);
		if (tidei_pstate_check(&k, &v, nl, tidei_log_key_format(w->log, w->txn), &st) != 0)
			problem(w, DB_STATE, k.mv_data, k.mv_size, 0,
				"a long key whose value does not hold that key");
		else if (!one_value(st.mv_data, st.mv_size))
			problem(w, DB_STATE, k.mv_data, k.mv_size, 0,
				"state of %zu bytes does not decode", st.mv_size);
	}
	return rc;
}

/* LMDB's free list: transaction id -> the pages it freed (a count, then
 * the page numbers, as size_t). */
static int
walk_free(walk *w, iter *it)
{
	MDB_val k, v;
	int rc;

	while ((rc = step(w, it, &k, &v)) == 0) {
		const unsigned char *p = v.mv_data;
		size_t n, pg;
		if (k.mv_size != sizeof(size_t) || v.mv_size < sizeof(size_t) ||
		    v.mv_size % sizeof(size_t) != 0) {
			problem(w, DB_FREE, k.mv_data, k.mv_size, 0, "malformed free-list record");
			continue;
		}
		memcpy(&n, p, sizeof n);
		if (n != v.mv_size / sizeof(size_t) - 1) {
			problem(w, DB_FREE, k.mv_data, k.mv_size, 0,
				"free-list record counts %zu pages in room for %zu", n,
				v.mv_size / sizeof(size_t) - 1);
			continue;
		}
		for (size_t i = 1; i <= n; i++) {
			memcpy(&pg, p + i * sizeof pg, sizeof pg);
			if (pg < 2 || pg >= w->pages) {
				problem(w, DB_FREE, k.mv_data, k.mv_size, 0,
					"frees page %zu, outside the %llu pages in use", pg,
					(unsigned long long)w->pages);
				break;
			}
		}
	}
	return rc;
}

static void
check_meta(walk *w)
{
	MDB_val k = { 6, "format" }, v;
	MDB_cursor *c;
	int rc = mdb_get(w->txn, w->log->meta, &k, &v);

	if (rc == MDB_NOTFOUND)
		problem(w, DB_META, k.mv_data, k.mv_size, 0, "the format version is missing");
	else if (rc != 0)
		mdb_problem(w, DB_META, NULL, rc, "cannot read the format version");
	else if (v.mv_size != 4 || tidei_ld32(v.mv_data) != TIDEI_LOG_FORMAT)
		problem(w, DB_META, k.mv_data, k.mv_size, 0,
			"format %u, this build reads format %d",
			v.mv_size == 4 ? tidei_ld32(v.mv_data) : 0, TIDEI_LOG_FORMAT);
	if (rc != 0 && rc != MDB_NOTFOUND)
		return;
	if ((rc = mdb_cursor_open(w->txn, w->log->meta, &c)) != 0) {
		mdb_problem(w, DB_META, NULL, rc, "cannot read");
		return;
	}
	for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT))
		at_key(w, &k);
	mdb_cursor_close(c);
	if (rc != MDB_NOTFOUND)
		mdb_problem(w, DB_META, NULL, rc, "cannot read further");
	else
		w->pg->done[DB_META] = 1;
}

static MDB_dbi
dbi_of(const walk *w, int db)
{
	switch (db) {
	case DB_EVENTS: return w->log->events;
	case DB_IDS: return w->log->ids;
	case DB_STREAMS: return w->log->streams;
	case DB_CONSUMERS: return w->log->consumers;
	case DB_PENDING: return w->log->pending;
	case DB_DEAD: return w->log->dead;
	case DB_ONCE: return w->log->once;
	case DB_PROJECTIONS: return w->log->projections;
	case DB_STATE: return w->log->state;
	default: return 0; /* DB_FREE: LMDB's own free list */
	}
}

static void
walk_db(walk *w, int db)
{
	progress *pg = w->pg;
	iter it;
	MDB_val last;
	int rc;

	w->db = db;
	w->db_problems = 0;
	if (db == DB_META) {
		check_meta(w);
		return;
	}
	memset(&it, 0, sizeof it);
	if ((rc = mdb_cursor_open(w->txn, dbi_of(w, db), &it.c)) != 0) {
		mdb_problem(w, db, NULL, rc, "cannot read");
		return;
	}
	switch (db) {
	case DB_EVENTS: rc = walk_events(w, &it); break;
	case DB_IDS: rc = walk_ids(w, &it); break;
	case DB_STREAMS: rc = walk_streams(w, &it); break;
	case DB_CONSUMERS:
	case DB_ONCE: rc = walk_seqs(w, &it, db); break;
	case DB_PENDING:
	case DB_DEAD: rc = walk_retries(w, &it, db); break;
	case DB_PROJECTIONS: rc = walk_projections(w, &it); break;
	case DB_STATE: rc = walk_state(w, &it); break;
	default: rc = walk_free(w, &it); break;
	}
	if (it.c != NULL)
		mdb_cursor_close(it.c);
	if (rc == MDB_NOTFOUND) {
		pg->done[db] = 1;
	} else if (rc == TOO_MANY) {
		problem(w, db, NULL, 0, 0,
			"walk stopped after %d problems (a damaged page read as records?)",
			DB_PROBLEMS_MAX);
	} else {
		last.mv_size = pg->klen;
		last.mv_data = pg->key;
		mdb_problem(w, db, pg->entries[db] ? &last : NULL, rc, "cannot read further");
	}
}

/* "file": data.mdb against the pages its meta page counts.  LMDB reads
 * the meta pages with read(), so this touches no page that may be gone;
 * a file that does not open is left to tidei_log_open(), which says why.
 * With @p cleanup, only clear the reader slots of walks that crashed. */
static void
check_file(walk *w, const char *dir, int cleanup)
{
	MDB_envinfo info;
	MDB_stat st;
	MDB_env *env;
	mdb_filehandle_t fd;
	struct stat sb;
	uint64_t need;
	int dead;

	if (mdb_env_create(&env) != 0)
		return;
	mdb_env_set_maxdbs(env, 16);
	if (mdb_env_open(env, dir, MDB_RDONLY | MDB_NOTLS, 0600) != 0) {
		mdb_env_close(env);
		return;
	}
	if (cleanup) {
		mdb_reader_check(env, &dead);
	} else if (mdb_env_info(env, &info) == 0 && mdb_env_stat(env, &st) == 0 &&
		   mdb_env_get_fd(env, &fd) == 0 && fstat(fd, &sb) == 0) {
		w->pg->entries[DB_FILE] = (uint64_t)info.me_last_pgno + 1;
		w->pg->done[DB_FILE] = 1;
		need = w->pg->entries[DB_FILE] * st.ms_psize;
		if ((uint64_t)sb.st_size < need)
			problem(w, DB_FILE, "data.mdb", 8, 0,
				"truncated: %llu bytes, but the log needs %llu (%llu pages of %u); "
				"the pages past the end are lost",
				(unsigned long long)sb.st_size, (unsigned long long)need,
				(unsigned long long)w->pg->entries[DB_FILE], st.ms_psize);
	}
	mdb_env_close(env);
}

/* The child: open the log, walk from database @p start to the end. */
static void
child(const char *dir, int start, progress *pg, int out)
{
	tidei_log_opts o = { 0 };
	char err[TIDEI_ERRLEN], line[TIDEI_ERRLEN + 32];
	MDB_envinfo info;
	walk w;
	int rc, n;

	memset(&w, 0, sizeof w);
	w.pg = pg;
	w.out = out;
	pg->looking = -1;
	if (start == CLEANUP) {
		check_file(&w, dir, 1);
		send_all(out, "E\n", 2);
		_exit(0);
	}
	if (start == DB_FILE) {
		pg->db = w.db = DB_FILE;
		check_file(&w, dir, 0);
		start = DB_META;
	}
	pg->db = -1;
	o.readonly = 1;
	o.allow_short = 1;
	err[0] = '\0';
	if ((rc = tidei_log_open(&w.log, dir, &o, err)) != TIDE_OK) {
		err[strcspn(err, "\t\n")] = '\0';
		n = snprintf(line, sizeof line, "F\t%d\t%s\n", rc, err);
		send_all(out, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
		_exit(0);
	}
	if (mdb_env_info(w.log->env, &info) == 0)
		w.pages = (uint64_t)info.me_last_pgno + 1;
	mdb_reader_check(w.log->env, &n); /* slots of walks that crashed before */
	if (begin(&w) != 0) {
		send_all(out, "F\t-3\tcannot begin a read transaction\n", 37);
		_exit(0);
	}
	for (int db = start; db < NDB; db++) {
		if (w.bad_txn && begin(&w) != 0) {
			problem(&w, db, NULL, 0, 0, "cannot begin a read transaction");
			break;
		}
		pg->db = db;
		pg->klen = pg->kfull = 0;
		walk_db(&w, db);
		/* one id per event (both walks in one snapshot) */
		if (db == DB_IDS && pg->done[DB_EVENTS] && pg->done[DB_IDS] &&
		    !pg->snapshot_changed && pg->entries[DB_IDS] != pg->entries[DB_EVENTS])
			problem(&w, DB_IDS, NULL, 0, 0, "%llu ids for %llu events",
				(unsigned long long)pg->entries[DB_IDS],
				(unsigned long long)pg->entries[DB_EVENTS]);
	}
	pg->db = NDB;
	send_all(out, "E\n", 2);
	_exit(0);
}

/* ------------------------------------------------------------------------
 * The parent
 * ------------------------------------------------------------------------ */

typedef struct parent {
	tide_verify_fn *fn;
	void *ud;
	int stop;
	char said[256]; /* the first thing the child wrote to stderr (an assertion of LMDB's) */
	uint64_t problems[NDB];
	int fatal; /* the log could not be opened: code below */
	char err[TIDEI_ERRLEN];
} parent;

static void
report(parent *p, int db, const char *key, uint64_t seq, const char *what)
{
	tide_verify_item it;

	memset(&it, 0, sizeof it);
	p->problems[db]++;
	if (p->stop)
		return;
	it.kind = TIDE_VERIFY_PROBLEM;
	it.db = db_names[db];
	it.key = key;
	it.seq = seq;
	it.what = what;
	p->stop = p->fn(p->ud, &it) != 0;
}

/* One line from the child. */
static void
on_line(parent *p, char *line, int *ended)
{
	char *f[5];
	int n = 0;

	line[strcspn(line, "\n")] = '\0';
	for (char *s = line; n < 5; n++) {
		f[n] = s;
		if ((s = strchr(s, '\t')) == NULL) {
			n++;
			break;
		}
		*s++ = '\0';
	}
	if (n == 5 && strcmp(f[0], "P") == 0) {
		int db = atoi(f[1]);
		if (db >= 0 && db < NDB)
			report(p, db, f[3], strtoull(f[2], NULL, 10), f[4]);
	} else if (n == 3 && strcmp(f[0], "F") == 0) {
		p->fatal = atoi(f[1]);
		snprintf(p->err, sizeof p->err, "%s", f[2]);
	} else if (n == 1 && strcmp(f[0], "E") == 0) {
		*ended = 1;
	} else if (p->said[0] == '\0') {
		/* the child's stderr comes down the same pipe */
		for (int i = 1; i < n; i++)
			f[i][-1] = ' ';
		snprintf(p->said, sizeof p->said, "%s", line);
	}
}

static const char *
signame(int sig)
{
	switch (sig) {
	case SIGSEGV: return "SIGSEGV";
	case SIGBUS: return "SIGBUS";
	case SIGABRT: return "SIGABRT";
	case SIGFPE: return "SIGFPE";
	case SIGILL: return "SIGILL";
	case SIGKILL: return "SIGKILL";
	default: return "killed by a signal";
	}
}

/* Report where a child died. */
static void
report_crash(parent *p, const progress *pg, int status)
{
	char how[320], key[4 * KEY_KEEP + 8], what[PROBLEM_MAX];
	int db = pg->db < 0 ? DB_FILE : pg->db >= NDB ? NDB - 1 : pg->db;
	uint64_t seq = 0;

	if (WIFSIGNALED(status))
		snprintf(how, sizeof how, "%s", signame(WTERMSIG(status)));
	else
		snprintf(how, sizeof how, "exit status %d", WEXITSTATUS(status));
	key[0] = '\0';
	if (db == DB_EVENTS && pg->klen == 8)
		memcpy(&seq, pg->key, 8);
	else if (pg->klen > 0)
		escape_key(key, sizeof key, pg->key, pg->klen, pg->kfull);
	if (p->said[0] != '\0') {
		size_t n = strlen(how);
		snprintf(how + n, sizeof how - n, ": %s", p->said);
	}
	if (pg->db < 0)
		snprintf(what, sizeof what,
			 "opening the log crashed (%s): the pages LMDB reads first are damaged "
			 "or past the end of the file",
			 how);
	else if (pg->looking >= 0)
		snprintf(what, sizeof what,
			 "reading crashed (%s) while looking up seq %llu in %s%s: a page there "
			 "is damaged",
			 how, (unsigned long long)pg->looking_seq, db_names[pg->looking],
			 pg->entries[db] ? " for this entry" : "");
	else
		snprintf(what, sizeof what, "reading crashed (%s) %s: a page of %s is damaged", how,
			 pg->entries[db] ? "after this entry" : "at its first entry", db_names[db]);
	report(p, db, key, seq, what);
}

/* Run one child from database @p start; returns the database it died in
 * (to go on after it), NDB when it finished, or -1 to give up. */
static int
run_child(parent *p, const char *dir, int start, progress *pg)
{
	int fds[2], status = 0, ended = 0;
	char *line = NULL;
	size_t cap = 0;
	FILE *in;
	pid_t pid;

	if (pipe(fds) != 0) {
		p->fatal = tidei_err(p->err, TIDE_EIO, "cannot create a pipe: %s", strerror(errno));
		return -1;
	}
	/* the child leaves by _exit(): nothing buffered here is written twice */
	if ((pid = fork()) < 0) {
		p->fatal = tidei_err(p->err, TIDE_EIO, "cannot fork: %s", strerror(errno));
		close(fds[0]);
		close(fds[1]);
		return -1;
	}
	if (pid == 0) {
		close(fds[0]);
		/* what LMDB says as it dies (a failed assertion) goes into the
		 * report, not onto the caller's stderr */
		dup2(fds[1], 2);
		child(dir, start, pg, fds[1]);
		_exit(0);
	}
	close(fds[1]);
	p->said[0] = '\0';
	if ((in = fdopen(fds[0], "r")) == NULL) {
		close(fds[0]);
		kill(pid, SIGKILL);
	} else {
		while (!p->stop && getline(&line, &cap, in) > 0)
			on_line(p, line, &ended);
		if (p->stop)
			kill(pid, SIGKILL);
		fclose(in);
	}
	free(line);
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR) { /* reaped elsewhere (SIGCHLD ignored) */
			status = ended ? 0 : SIGKILL;
			break;
		}
	}
	if (p->stop || p->fatal)
		return -1;
	if (ended && WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return NDB;
	if (start == CLEANUP)
		return -1;
	report_crash(p, pg, status);
	return pg->db < 0 ? -1 : pg->db;
}

static int
log_verify_impl(const char *dir, tide_verify_fn *fn, void *ud, uint64_t *problems, char *err,
		size_t errlen)
{
	parent p;
	progress *pg;
	int start = 0, crashed = 0, rc = TIDE_OK;

	if (problems != NULL)
		*problems = 0;
	if (dir == NULL || fn == NULL)
		return TIDE_EINVAL;
	memset(&p, 0, sizeof p);
	p.fn = fn;
	p.ud = ud;
	pg = mmap(NULL, sizeof *pg, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (pg == MAP_FAILED) {
		snprintf(p.err, sizeof p.err, "cannot map memory: %s", strerror(errno));
		rc = TIDE_ENOMEM;
		goto out;
	}
	memset(pg, 0, sizeof *pg);
	while (start < NDB) {
		int at = run_child(&p, dir, start, pg);
		if (at < 0 || at >= NDB)
			break;
		crashed = 1;
		start = at + 1; /* that database is reported; go on with the next */
		pg->snapshot_changed = 1;
	}
	/* A child that died left its reader slot in the lock file.  This
	 * process opens no environment itself: one open twice in a process
	 * (the caller may have this log open) loses its locks on close. */
	if (crashed && !p.stop && !p.fatal)
		run_child(&p, dir, CLEANUP, pg);
	if (p.fatal) {
		rc = p.fatal;
		goto out;
	}
	for (int db = 0; db < NDB && !p.stop; db++) {
		tide_verify_item it;
		memset(&it, 0, sizeof it);
		it.kind = TIDE_VERIFY_DATABASE;
		it.db = db_names[db];
		it.entries = pg->entries[db];
		it.problems = p.problems[db];
		it.complete = pg->done[db];
		p.stop = fn(ud, &it) != 0;
	}
	if (problems != NULL)
		for (int db = 0; db < NDB; db++)
			*problems += p.problems[db];
out:
	if (pg != MAP_FAILED)
		munmap(pg, sizeof *pg);
	if (err != NULL && errlen > 0)
		snprintf(err, errlen, "%s", rc == TIDE_OK ? "" : p.err);
	return rc;
}

TIDE_API int
tide_log_verify(const char *dir, tide_verify_fn *fn, void *ud, uint64_t *problems)
{
	char msg[TIDEI_ERRLEN] = "";

	return tidei_done(log_verify_impl(dir, fn, ud, problems, msg, sizeof msg), msg);
}
