/*
 * log.c - the LMDB log.
 *
 * Owns the environment and its named databases, one concern each:
 *   events     seq -> record (records are appended with MDB_APPEND)
 *   ids        source "\0" id -> seq, so a repeated event is recognised
 *   streams    subject -> {version, last seq}: the head of each stream;
 *              every record carries the seq of its predecessor in the
 *              stream, so a stream is read by walking back from its head
 *   consumers  consumer name -> checkpoint
 *   pending    consumer "\0" seq -> an event the consumer is retrying, or
 *              holding back behind a retry of the same subject
 *   dead       consumer "\0" seq -> a dead letter (attempts, error, where)
 *   once       consumer "\0" key -> the seq that claimed tide.once(key)
 *   projections  projection name -> its generations and checkpoints
 *   state      projection "\0" generation key -> the key's state
 *   meta       "format" -> layout version, checked on open (a log of
 *              format 1 is migrated by the first writable open);
 *              "once-legacy" when format 1 left long tide.once claims
 *
 * Keys of ids, streams and once longer than LMDB allows are stored by a
 * collision-resistant hash (make_key): a collision would make a new event
 * a duplicate, or merge two streams.
 *
 * Why stream heads rather than a (subject, version) index: an index keyed
 * by subject gets one random insert per event, which with many subjects
 * dirties (and fsyncs) one page per event; the heads table is small enough
 * that a turn touches few pages.  See tests/bench for the figures.
 *
 * Invariants: seqs are gapless from 1; a write transaction is open only
 * inside one loop turn; the writing process holds an exclusive flock on
 * the directory, so `head` can be cached.  Records come from event.c; this
 * file never looks inside one beyond the subject, id and source.
 *
 * Damaged files are refused at open rather than read: LMDB maps data.mdb,
 * so a page past the end of a truncated file is a SIGBUS in whatever
 * touches it, and a data.mdb that is missing or empty would silently
 * become a new, empty log.  The directory is private to its owner (0700,
 * files 0600).  A full disk is reported as such (TIDE_EFULL, "disk
 * full"), not as LMDB's EIO; the next turn simply tries again.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "keyhash.h"
#include "log.h"
#include "pstate.h"

#define DEFAULT_MAP_SIZE (256ull << 20)
/* Grow before a turn when less than this fraction of the map is free. */
#define HEADROOM_DIV 4
#define MIN_HEADROOM (32ull << 20)
/* An EIO from a write is a full disk when less than this is left: LMDB
 * reports a short write (the filesystem ran out mid-write) as EIO. */
#define DISK_LOW (16ull << 20)

int64_t
tidei_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int
tidei_pattern_match(const char *pat, size_t plen, const char *type, size_t tlen)
{
	if (plen == 1 && pat[0] == '*')
		return 1;
	if (plen >= 2 && pat[plen - 1] == '*' && pat[plen - 2] == '.')
		return tlen >= plen - 1 && memcmp(pat, type, plen - 1) == 0;
	return plen == tlen && memcmp(pat, type, tlen) == 0;
}

/* ------------------------------------------------------------------------
 * Keys
 * ------------------------------------------------------------------------ */

#define KEYMAX TIDEI_KEYMAX
/* Format 2 keeps keys of up to KEYMAX - 1 bytes as they are, and stores a
 * longer one in exactly KEYMAX bytes: its first KEYKEEP bytes, a zero byte
 * and the BLAKE2b hash of the whole key (keyhash.h).  Its length alone
 * tells it from a key kept as it is, whatever bytes either holds (a
 * tide.once key may hold any). */
#define KEYKEEP (KEYMAX - 1 - TIDEI_KEYHASH_LEN)
/* Format 1 kept keys of up to KEYMAX bytes, and a longer one as its first
 * V1_KEEP bytes, "\0\xff" and two seeded FNV-1a-64 hashes: not collision-
 * resistant.  Read-only opens of such a log still find keys that way; the
 * first writable open rewrites them (migrate_v1). */
#define V1_KEEP 477
#define V1_LEN (V1_KEEP + 18)

size_t
tidei_log_make_key_v1(uint8_t *key, const char *a, size_t an, const char *b, size_t bn)
{
	uint64_t h1, h2;

	h1 = tidei_fnv((const uint8_t *)a, an, 0xcbf29ce484222325ull);
	h2 = tidei_fnv((const uint8_t *)a, an, 0x84222325cbf29ce4ull);
	if (b) {
		h1 = tidei_fnv((const uint8_t *)"\0", 1, h1);
		h1 = tidei_fnv((const uint8_t *)b, bn, h1);
		h2 = tidei_fnv((const uint8_t *)"\0", 1, h2);
		h2 = tidei_fnv((const uint8_t *)b, bn, h2);
	}
	if (an >= V1_KEEP) {
		memcpy(key, a, V1_KEEP);
	} else {
		memcpy(key, a, an);
		key[an] = '\0';
		memcpy(key + an + 1, b, V1_KEEP - an - 1);
	}
	key[V1_KEEP] = '\0';
	key[V1_KEEP + 1] = 0xff;
	tidei_st64(key + V1_KEEP + 2, h1);
	tidei_st64(key + V1_KEEP + 10, h2);
	return V1_LEN;
}

/* Build the key for @p a ["\0" @p b] into @p key (KEYMAX bytes) as key
 * format @p fmt stores it.  Only a long key is hashed. */
size_t
tidei_log_make_key(uint32_t fmt, uint8_t *key, const char *a, size_t an, const char *b, size_t bn)
{
	size_t n = an + (b ? 1 + bn : 0);

	if (n < KEYMAX || (n == KEYMAX && fmt < 2)) {
		memcpy(key, a, an);
		if (b) {
			key[an] = '\0';
			memcpy(key + an + 1, b, bn);
		}
		return n;
	}
	if (fmt < 2)
		return tidei_log_make_key_v1(key, a, an, b, bn);
	if (an >= KEYKEEP) {
		memcpy(key, a, KEYKEEP);
	} else {
		memcpy(key, a, an);
		key[an] = '\0';
		memcpy(key + an + 1, b, KEYKEEP - an - 1);
	}
	key[KEYKEEP] = '\0';
	tidei_keyhash(key + KEYKEEP + 1, a, an, b, bn);
	return KEYMAX;
}

uint32_t
tidei_log_key_format(tidei_log *log, MDB_txn *txn)
{
	MDB_val k = { 6, "format" }, v;

	if (log->format >= TIDEI_LOG_FORMAT)
		return log->format;
	/* a reader of an older log: the engine may have migrated it since */
	if (mdb_get(txn, log->meta, &k, &v) == 0 && v.mv_size == 4)
		return tidei_ld32(v.mv_data);
	return log->format;
}

/* ------------------------------------------------------------------------
 * Opening
 * ------------------------------------------------------------------------ */

static int
lock_dir(tidei_log *log, char *err)
{
	char path[4200];
	char pid[32];
	int fd, n;

	snprintf(path, sizeof path, "%s/tide.lock", log->dir);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return tidei_err(err, TIDE_EIO, "cannot open %s: %s", path, strerror(errno));
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		n = (int)pread(fd, pid, sizeof pid - 1, 0);
		pid[n > 0 ? n : 0] = '\0';
		pid[strcspn(pid, "\n")] = '\0';
		close(fd);
		return tidei_err(err, TIDE_EBUSY, "%s is in use by another tide process%s%s%s",
				 log->dir, pid[0] ? " (pid " : "", pid, pid[0] ? ")" : "");
	}
	n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
		/* The pid is a courtesy for the error above; the lock is what counts. */
	}
	log->lock_fd = fd;
	return TIDE_OK;
}

static int
mdb_fail(char *err, int rc, const char *what, const char *dir)
{
	return tidei_err(err, tidei_err_mdb(rc), "%s %s: %s", what, dir, mdb_strerror(rc));
}

/* ------------------------------------------------------------------------
 * The format, and migrating a format-1 log
 * ------------------------------------------------------------------------ */

#define ONCE_LEGACY "once-legacy" /* meta: format 1 left long tide.once claims */

/* A key that format 1 stored as its long form, or kept as it was at
 * exactly KEYMAX bytes (which format 2 stores long). */
static int
v1_long(const MDB_val *k)
{
	const uint8_t *p = k->mv_data;

	return k->mv_size == KEYMAX ||
	       (k->mv_size == V1_LEN && p[V1_KEEP] == 0 && p[V1_KEEP + 1] == 0xff);
}

/* Entries to move, collected before any is moved (a cursor must not meet
 * the keys it writes): records of u16 key length, key, u8 value length,
 * value. */
static int
collect_long(MDB_txn *txn, MDB_dbi dbi, tidei_buf *out)
{
	MDB_cursor *cur;
	MDB_val k, v;
	int mrc;

	if ((mrc = mdb_cursor_open(txn, dbi, &cur)) != 0)
		return mrc;
	for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); mrc == 0;
	     mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		uint8_t kl[2] = { (uint8_t)(k.mv_size >> 8), (uint8_t)k.mv_size };
		uint8_t vl = (uint8_t)v.mv_size;
		if (!v1_long(&k) || v.mv_size > 16)
			continue;
		tidei_buf_put(out, kl, 2);
		tidei_buf_put(out, k.mv_data, k.mv_size);
		tidei_buf_put(out, &vl, 1);
		tidei_buf_put(out, v.mv_data, v.mv_size);
	}
	mdb_cursor_close(cur);
	if (out->failed)
		return ENOMEM;
	return mrc == MDB_NOTFOUND ? 0 : mrc;
}

/* The entry of collect_long()'s @p found at *@p at; *@p at moves past it. */
static void
next_long(const tidei_buf *found, size_t *at, MDB_val *k, MDB_val *v)
{
	const uint8_t *p = found->p + *at;

	k->mv_size = (size_t)p[0] << 8 | p[1];
	k->mv_data = (void *)(p + 2);
	v->mv_size = p[2 + k->mv_size];
	v->mv_data = (void *)(p + 3 + k->mv_size);
	*at += 3 + k->mv_size + v->mv_size;
}

/* Rewrite the long keys of `ids` (@p streams 0: source "\0" id, found
 * from the event each points at) or `streams` (1: the subject of its last
 * event) in format 2.  A key the event does not give in format 1 is left
 * alone: it was never one of these. */
static int
migrate_index(tidei_log *log, MDB_txn *txn, int streams, char *err)
{
	MDB_dbi dbi = streams ? log->streams : log->ids;
	const char *what = streams ? "streams" : "ids";
	tidei_buf found = { 0 };
	int mrc = collect_long(txn, dbi, &found), rc = TIDE_OK;

	for (size_t at = 0; mrc == 0 && rc == TIDE_OK && at < found.len;) {
		uint8_t was[KEYMAX + 1], now[KEYMAX + 1];
		MDB_val k, v;
		struct tide_event ev;
		uint64_t seq;
		size_t wn, nn;
		next_long(&found, &at, &k, &v);
		if (v.mv_size != (streams ? 16u : 8u))
			continue;
		if (streams)
			seq = tidei_ld64((const uint8_t *)v.mv_data + 8);
		else
			memcpy(&seq, v.mv_data, 8);
		if ((rc = tidei_log_get(log, txn, seq, &ev)) != TIDE_OK) {
			rc = tidei_err(err, TIDE_EIO,
				       "%s: cannot migrate the %s index: event %llu: %s", log->dir,
				       what, (unsigned long long)seq,
				       rc == TIDE_ENOTFOUND ? "missing" : "corrupt");
			break;
		}
		if (streams && ev.attr[TIDEI_A_SUBJECT] == NULL)
			continue;
		if (streams) {
			wn = tidei_log_make_key(1, was, ev.attr[TIDEI_A_SUBJECT],
						ev.len[TIDEI_A_SUBJECT], NULL, 0);
			nn = tidei_log_make_key(2, now, ev.attr[TIDEI_A_SUBJECT],
						ev.len[TIDEI_A_SUBJECT], NULL, 0);
		} else {
			wn = tidei_log_make_key(1, was, ev.attr[TIDEI_A_SOURCE],
						ev.len[TIDEI_A_SOURCE], ev.attr[TIDEI_A_ID],
						ev.len[TIDEI_A_ID]);
			nn = tidei_log_make_key(2, now, ev.attr[TIDEI_A_SOURCE],
						ev.len[TIDEI_A_SOURCE], ev.attr[TIDEI_A_ID],
						ev.len[TIDEI_A_ID]);
		}
		if (wn != k.mv_size || memcmp(was, k.mv_data, wn) != 0 ||
		    (nn == wn && memcmp(now, was, nn) == 0))
			continue;
		if ((mrc = mdb_del(txn, dbi, &k, NULL)) != 0)
			break;
		k.mv_size = nn;
		k.mv_data = now;
		if ((mrc = mdb_put(txn, dbi, &k, &v, 0)) != 0)
			break;
	}
	tidei_buf_free(&found);
	if (mrc != 0)
		return mdb_fail(err, mrc,
				streams ? "cannot migrate the streams index of"
					: "cannot migrate the ids index of",
				log->dir);
	return rc;
}

/* tide.once claims: a key kept as it was at KEYMAX bytes is the whole key,
 * so its format-2 form is made from it; a key format 1 hashed cannot be
 * (only its hash is stored), so it stays, and *@p legacy says claims must
 * look for it there. */
static int
migrate_once(tidei_log *log, MDB_txn *txn, int *legacy, char *err)
{
	tidei_buf found = { 0 };
	int mrc = collect_long(txn, log->once, &found);

	*legacy = 0;
	for (size_t at = 0; mrc == 0 && at < found.len;) {
		uint8_t now[KEYMAX + 1];
		MDB_val k, v;
		next_long(&found, &at, &k, &v);
		if (k.mv_size != KEYMAX) {
			*legacy = 1;
			continue;
		}
		if ((mrc = mdb_del(txn, log->once, &k, NULL)) != 0)
			break;
		k.mv_size = tidei_log_make_key(2, now, k.mv_data, k.mv_size, NULL, 0);
		k.mv_data = now;
		mrc = mdb_put(txn, log->once, &k, &v, 0);
	}
	tidei_buf_free(&found);
	return mrc ? mdb_fail(err, mrc, "cannot migrate the tide.once claims of", log->dir)
		   : TIDE_OK;
}

/* Format 1 to 2, inside the open's write transaction: all or nothing. */
static int
migrate_v1(tidei_log *log, MDB_txn *txn, char *err)
{
	MDB_val k = { sizeof ONCE_LEGACY - 1, ONCE_LEGACY }, v = { 1, "\1" };
	int rc, legacy, mrc;

	if ((rc = migrate_index(log, txn, 0, err)) != TIDE_OK ||
	    (rc = migrate_index(log, txn, 1, err)) != TIDE_OK ||
	    (rc = migrate_once(log, txn, &legacy, err)) != TIDE_OK)
		return rc;
	if ((mrc = tidei_pstate_upgrade(txn, log->state)) != 0)
		return mdb_fail(err, mrc, "cannot migrate the projection states of", log->dir);
	if (legacy && (mrc = mdb_put(txn, log->meta, &k, &v, 0)) != 0)
		return mdb_fail(err, mrc, "cannot migrate the tide.once claims of", log->dir);
	return TIDE_OK;
}

/* Read (or, when writable and new, write) the format version; migrate a
 * log of format 1 when writable. */
static int
check_format(tidei_log *log, MDB_txn *txn, char *err)
{
	MDB_val k = { 6, "format" }, v, lk = { sizeof ONCE_LEGACY - 1, ONCE_LEGACY };
	MDB_stat st;
	uint32_t fmt = TIDEI_LOG_FORMAT;
	uint8_t raw[4];
	int rc;

	log->format = TIDEI_LOG_FORMAT;
	rc = mdb_get(txn, log->meta, &k, &v);
	if (rc == MDB_NOTFOUND) {
		if (mdb_stat(txn, log->events, &st) == 0 && st.ms_entries > 0)
			return tidei_err(err, TIDE_EFORMAT,
					 "%s: log has events but no format version", log->dir);
		if (log->readonly)
			return TIDE_OK;
		tidei_st32(raw, fmt);
		v.mv_size = 4;
		v.mv_data = raw;
		rc = mdb_put(txn, log->meta, &k, &v, 0);
		return rc ? mdb_fail(err, rc, "cannot write format of", log->dir) : TIDE_OK;
	}
	if (rc != 0)
		return mdb_fail(err, rc, "cannot read", log->dir);
	if (v.mv_size != 4 || tidei_ld32(v.mv_data) < 1 || tidei_ld32(v.mv_data) > TIDEI_LOG_FORMAT)
		return tidei_err(err, TIDE_EFORMAT,
				 "%s: log format %u is not supported (this build reads format %d)",
				 log->dir, v.mv_size == 4 ? tidei_ld32(v.mv_data) : 0,
				 TIDEI_LOG_FORMAT);
	log->format = tidei_ld32(v.mv_data);
	if (log->format < TIDEI_LOG_FORMAT && !log->readonly) {
		if ((rc = migrate_v1(log, txn, err)) != TIDE_OK)
			return rc;
		tidei_st32(raw, fmt);
		v.mv_size = 4;
		v.mv_data = raw;
		if ((rc = mdb_put(txn, log->meta, &k, &v, 0)) != 0)
			return mdb_fail(err, rc, "cannot write format of", log->dir);
		log->format = fmt;
	}
	rc = mdb_get(txn, log->meta, &lk, &v);
	if (rc != 0 && rc != MDB_NOTFOUND)
		return mdb_fail(err, rc, "cannot read", log->dir);
	log->once_legacy = rc == 0;
	return TIDE_OK;
}

/* Load the last seq and recorded time. */
static int
load_head(tidei_log *log, MDB_txn *txn)
{
	MDB_cursor *c;
	MDB_val k, v;
	struct tide_event ev;
	int rc;

	log->head = 0;
	log->last_recorded = 0;
	rc = mdb_cursor_open(txn, log->events, &c);
	if (rc)
		return tidei_err_mdb(rc);
	rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
	if (rc == 0 && k.mv_size == 8) {
		memcpy(&log->head, k.mv_data, 8);
		if (tidei_event_decode(&ev, v.mv_data, v.mv_size) == 0)
			log->last_recorded = ev.recorded;
	}
	mdb_cursor_close(c);
	log->committed = log->head;
	return rc == 0 || rc == MDB_NOTFOUND ? TIDE_OK : tidei_err_mdb(rc);
}

/* 1 if @p dir holds the marker of a log. */
static int
marked(const char *dir)
{
	char path[4200];
	struct stat sb;

	snprintf(path, sizeof path, "%s/" TIDEI_LOG_MARKER, dir);
	return stat(path, &sb) == 0;
}

int
tidei_log_mark(const char *dir, char *err)
{
	char path[4200], tmp[4300], text[96];
	struct tm tm;
	time_t now = time(NULL);
	int fd, n, rc = TIDE_OK;

	snprintf(path, sizeof path, "%s/" TIDEI_LOG_MARKER, dir);
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	gmtime_r(&now, &tm);
	n = (int)strftime(text, sizeof text, "tide log marked %Y-%m-%dT%H:%M:%SZ\n", &tm);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || write(fd, text, (size_t)n) != n || fsync(fd) != 0)
		rc = tidei_err(err, TIDE_EIO, "cannot write %s: %s", tmp, strerror(errno));
	if (fd >= 0 && close(fd) != 0 && rc == TIDE_OK)
		rc = tidei_err(err, TIDE_EIO, "cannot write %s: %s", tmp, strerror(errno));
	if (rc == TIDE_OK && rename(tmp, path) != 0)
		rc = tidei_err(err, TIDE_EIO, "cannot create %s: %s", path, strerror(errno));
	if (rc != TIDE_OK) {
		unlink(tmp);
		return rc;
	}
	/* the rename itself must survive a crash */
	if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
		fsync(fd);
		close(fd);
	}
	return TIDE_OK;
}

/* Refuse a directory whose log has gone: data.mdb missing where the
 * marker says there was a log, or empty (LMDB would start a new log in
 * an empty file, and a reader would fail obscurely). */
static int
check_files(tidei_log *log, char *err)
{
	char data[4200];
	struct stat sb;
	int mark = marked(log->dir);

	snprintf(data, sizeof data, "%s/data.mdb", log->dir);
	if (stat(data, &sb) != 0) {
		if (errno != ENOENT)
			return tidei_err(err, TIDE_EIO, "cannot read %s: %s", data,
					 strerror(errno));
		if (mark)
			return tidei_err(
				err, TIDE_EIO,
				"%s is missing, but %s held a log (%s/" TIDEI_LOG_MARKER
				" says so): restore it from a copy made with 'tide backup' "
				"(point --data at the copy), or remove " TIDEI_LOG_MARKER
				" to start an empty log there",
				data, log->dir, log->dir);
		if (log->readonly)
			return tidei_err(err, TIDE_ENOTFOUND,
					 "no log in %s (is this a tide data directory?)", log->dir);
		return TIDE_OK; /* a new log */
	}
	/* An engine creating its log has an empty data.mdb for a moment
	 * (and no marker yet): a reader is told there is no log. */
	if (sb.st_size == 0 && log->readonly && !mark)
		return tidei_err(err, TIDE_ENOTFOUND, "no log in %s: data.mdb is empty", log->dir);
	if (sb.st_size == 0)
		return tidei_err(
			err, TIDE_EIO,
			"%s is empty (0 bytes): the log it held is lost; restore it from a "
			"copy made with 'tide backup' (point --data at the copy), or remove "
			"data.mdb%s to start an empty log there",
			data, mark ? " and " TIDEI_LOG_MARKER : "");
	return TIDE_OK;
}

/* Compare data.mdb with the pages its newest meta page says are in use
 * (LMDB writes a transaction's pages before the meta page that counts
 * them, so a shorter file has lost its end).  The meta is read before
 * the size: a writer may be extending the file meanwhile. */
static int
check_size(tidei_log *log, int enforce, char *err)
{
	MDB_envinfo info;
	MDB_stat st;
	mdb_filehandle_t fd;
	struct stat sb;

	if (mdb_env_info(log->env, &info) != 0 || mdb_env_stat(log->env, &st) != 0 ||
	    mdb_env_get_fd(log->env, &fd) != 0 || fstat(fd, &sb) != 0)
		return tidei_err(err, TIDE_EIO, "cannot find the size of %s/data.mdb", log->dir);
	log->file_size = (uint64_t)sb.st_size;
	log->need_size = ((uint64_t)info.me_last_pgno + 1) * st.ms_psize;
	if (!enforce || log->file_size >= log->need_size)
		return TIDE_OK;
	return tidei_err(err, TIDE_EIO,
			 "%s/data.mdb is truncated: %llu bytes, but the log in it needs %llu "
			 "(%llu pages of %u): its end is lost; restore it from a copy made with "
			 "'tide backup' (point --data at the copy), or see what is left with "
			 "'tide verify'",
			 log->dir, (unsigned long long)log->file_size,
			 (unsigned long long)log->need_size,
			 (unsigned long long)info.me_last_pgno + 1, st.ms_psize);
}

static void
refresh_map_info(tidei_log *log)
{
	MDB_envinfo info;
	MDB_stat st;

	if (mdb_env_info(log->env, &info) == 0)
		log->map_size = info.me_mapsize;
	if (mdb_env_stat(log->env, &st) == 0)
		log->page_size = st.ms_psize;
}

int
tidei_log_open(tidei_log **out, const char *dir, const tidei_log_opts *o, char *err)
{
	tidei_log *log;
	MDB_txn *txn = NULL;
	unsigned flags = MDB_NOTLS;
	unsigned dbflags;
	int rc;

	*out = NULL;
	log = calloc(1, sizeof *log);
	if (log == NULL)
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	log->lock_fd = -1;
	log->readonly = o->readonly;
	snprintf(log->dir, sizeof log->dir, "%s", dir);

	if (o->readonly) {
		flags |= MDB_RDONLY;
	} else {
		/* An existing directory keeps the mode it has (see README). */
		if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
			rc = tidei_err(err, TIDE_EIO, "cannot create %s: %s", dir, strerror(errno));
			goto fail;
		}
		if ((rc = lock_dir(log, err)) != TIDE_OK)
			goto fail;
		if (o->nosync)
			flags |= MDB_NOSYNC;
	}
	if ((rc = check_files(log, err)) != TIDE_OK)
		goto fail;

	if ((rc = mdb_env_create(&log->env)) != 0) {
		rc = mdb_fail(err, rc, "cannot create environment for", dir);
		goto fail;
	}
	mdb_env_set_maxdbs(log->env, 16);
	mdb_env_set_maxreaders(log->env, 256);
	if (!o->readonly)
		mdb_env_set_mapsize(log->env, o->map_size ? o->map_size : DEFAULT_MAP_SIZE);
	if ((rc = mdb_env_open(log->env, dir, flags, 0600)) != 0) {
		rc = mdb_fail(err, rc, "cannot open log in", dir);
		goto fail;
	}
	/* before the first transaction: it reads the pages */
	if ((rc = check_size(log, !o->allow_short, err)) != TIDE_OK)
		goto fail;
	/* Readers that died (kill -9, a walk of tide verify that crashed on
	 * a damaged page) leave their slots behind, holding old pages. */
	if (!o->readonly) {
		int dead;
		mdb_reader_check(log->env, &dead);
	}
	refresh_map_info(log);
	/* The environment may have been created larger by an earlier run. */
	if (!o->readonly && o->map_size && o->map_size > log->map_size) {
		mdb_env_set_mapsize(log->env, o->map_size);
		refresh_map_info(log);
	}

	if ((rc = mdb_txn_begin(log->env, NULL, o->readonly ? MDB_RDONLY : 0, &txn)) != 0) {
		rc = mdb_fail(err, rc, "cannot read", dir);
		goto fail;
	}
	dbflags = o->readonly ? 0 : MDB_CREATE;
	if ((rc = mdb_dbi_open(txn, "events", dbflags | MDB_INTEGERKEY, &log->events)) ||
	    (rc = mdb_dbi_open(txn, "ids", dbflags, &log->ids)) ||
	    (rc = mdb_dbi_open(txn, "streams", dbflags, &log->streams)) ||
	    (rc = mdb_dbi_open(txn, "consumers", dbflags, &log->consumers)) ||
	    (rc = mdb_dbi_open(txn, "pending", dbflags, &log->pending)) ||
	    (rc = mdb_dbi_open(txn, "dead", dbflags, &log->dead)) ||
	    (rc = mdb_dbi_open(txn, "once", dbflags, &log->once)) ||
	    (rc = mdb_dbi_open(txn, "projections", dbflags, &log->projections)) ||
	    (rc = mdb_dbi_open(txn, "state", dbflags, &log->state)) ||
	    (rc = mdb_dbi_open(txn, "meta", dbflags, &log->meta))) {
		rc = rc == MDB_NOTFOUND ? tidei_err(err, TIDE_EFORMAT,
						    "%s: not a tide log (missing databases)", dir)
					: mdb_fail(err, rc, "cannot open databases in", dir);
		goto fail;
	}
	rc = mdb_dbi_open(txn, "rules", dbflags, &log->rules);
	if (rc != 0 && !(rc == MDB_NOTFOUND && o->readonly)) {
		rc = mdb_fail(err, rc, "cannot open databases in", dir);
		goto fail;
	}
	log->has_rules = rc == 0;
	if ((rc = check_format(log, txn, err)) != TIDE_OK)
		goto fail;
	if ((rc = load_head(log, txn)) != TIDE_OK) {
		tidei_err(err, rc, "cannot read the end of the log in %s", dir);
		goto fail;
	}
	/* Committing (even a read-only transaction) keeps the DBI handles. */
	rc = mdb_txn_commit(txn);
	txn = NULL;
	if (rc != 0) {
		rc = mdb_fail(err, rc, "cannot initialise", dir);
		goto fail;
	}
	/* Mark the directory once the log in it is durable: a new log, or
	 * one created before the marker existed. */
	if (!o->readonly && !marked(dir) && (rc = tidei_log_mark(dir, err)) != TIDE_OK)
		goto fail;
	*out = log;
	return TIDE_OK;
fail:
	if (txn != NULL)
		mdb_txn_abort(txn);
	tidei_log_close(log);
	return rc;
}

void
tidei_log_close(tidei_log *log)
{
	if (log == NULL)
		return;
	if (log->txn != NULL)
		mdb_txn_abort(log->txn);
	if (log->rtxn != NULL)
		mdb_txn_abort(log->rtxn);
	if (log->env != NULL)
		mdb_env_close(log->env);
	if (log->lock_fd >= 0)
		close(log->lock_fd);
	free(log->heads);
	tidei_buf_free(&log->head_keys);
	free(log);
}

/* ------------------------------------------------------------------------
 * Writing
 * ------------------------------------------------------------------------ */

/* Free bytes on the filesystem of @p dir for this process (root may use
 * the blocks reserved for it), or -1 if unknown. */
static long long
disk_free(const char *dir)
{
	struct statvfs sv;

	if (statvfs(dir, &sv) != 0)
		return -1;
	return (long long)((geteuid() == 0 ? sv.f_bfree : sv.f_bavail) * sv.f_frsize);
}

int
tidei_disk_full(const char *dir, int rc, char *room, size_t len)
{
	long long avail;

	if (rc != ENOSPC && rc != EDQUOT && rc != EIO)
		return 0;
	avail = disk_free(dir);
	if (rc == EIO && (avail < 0 || (unsigned long long)avail >= DISK_LOW))
		return 0;
	if (avail < 0)
		snprintf(room, len, "no room left");
	else if (avail >= 1 << 20)
		snprintf(room, len, "%.1f MiB free", (double)avail / (1 << 20));
	else if (avail >= 1 << 10)
		snprintf(room, len, "%.1f KiB free", (double)avail / (1 << 10));
	else
		snprintf(room, len, "%lld bytes free", avail);
	if (rc == EDQUOT)
		snprintf(room + strlen(room), len - strlen(room), ", quota exceeded");
	return 1;
}

/* A failed write that means the disk is full: the detail says so, with
 * the directory and the room left, and log->disk_full is set. */
static int
disk_full(tidei_log *log, int rc, const char *what)
{
	char room[64];

	if (!tidei_disk_full(log->dir, rc, room, sizeof room))
		return 0;
	log->disk_full = 1;
	tidei_err(log->err, TIDE_EFULL, "disk full: %s %s (%s)", what, log->dir, room);
	return 1;
}

int
tidei_log_grow(tidei_log *log)
{
	uint64_t want = log->map_size * 2;
	int rc;

	if (log->txn != NULL)
		tidei_panic("map growth with an open write transaction");
	if (log->before_remap != NULL)
		log->before_remap(log->before_remap_ud);
	/* The reusable read transaction holds the old mapping. */
	if (log->rtxn != NULL) {
		mdb_txn_abort(log->rtxn);
		log->rtxn = NULL;
	}
	rc = mdb_env_set_mapsize(log->env, want);
	if (log->after_remap != NULL)
		log->after_remap(log->before_remap_ud);
	if (rc != 0 && disk_full(log, rc, "cannot grow the log map of"))
		return TIDE_EFULL;
	if (rc != 0)
		return tidei_err(log->err,
				 tidei_err_mdb(rc) == TIDE_EIO ? TIDE_EFULL : tidei_err_mdb(rc),
				 "cannot grow the log map to %llu bytes: %s",
				 (unsigned long long)want, mdb_strerror(rc));
	refresh_map_info(log);
	return TIDE_OK;
}

int
tidei_log_begin(tidei_log *log)
{
	MDB_envinfo info;
	uint64_t used, free_bytes, headroom;
	int rc;

	if (log->txn != NULL)
		tidei_panic("nested write transaction");
	log->disk_full = 0;
	if (mdb_env_info(log->env, &info) == 0) {
		used = (uint64_t)(info.me_last_pgno + 1) * log->page_size;
		free_bytes = log->map_size > used ? log->map_size - used : 0;
		headroom = log->map_size / HEADROOM_DIV;
		if (headroom < MIN_HEADROOM)
			headroom = MIN_HEADROOM;
		if (free_bytes < headroom && (rc = tidei_log_grow(log)) != TIDE_OK)
			return rc;
	}
	rc = mdb_txn_begin(log->env, NULL, 0, &log->txn);
	if (rc == MDB_PANIC) {
		/* LMDB gives up on an environment whose meta page could not be
		 * written (a full disk on a copy-on-write filesystem can do
		 * that); what was committed before is intact on disk. */
		log->txn = NULL;
		return tidei_err(log->err, TIDE_EIO,
				 "cannot write to the log in %s any more (a write of its meta page "
				 "failed): restart the engine",
				 log->dir);
	}
	if (rc != 0) {
		log->txn = NULL;
		return tidei_err(log->err, tidei_err_mdb(rc),
				 "cannot begin a write transaction: %s", mdb_strerror(rc));
	}
	log->head = log->committed;
	log->head_gen++;
	log->head_count = 0;
	tidei_buf_reset(&log->head_keys);
	return TIDE_OK;
}

int
tidei_log_count_prefix(MDB_txn *txn, MDB_dbi dbi, const void *prefix, size_t n, uint64_t *count)
{
	MDB_cursor *cur;
	MDB_val k = { n, (void *)prefix }, v;
	int mrc;

	*count = 0;
	if ((mrc = mdb_cursor_open(txn, dbi, &cur)) != 0)
		return mrc;
	for (mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); mrc == 0;
	     mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		if (k.mv_size < n || memcmp(k.mv_data, prefix, n) != 0)
			break;
		(*count)++;
	}
	mdb_cursor_close(cur);
	return mrc == MDB_NOTFOUND ? 0 : mrc;
}

int
tidei_log_txn_fail(tidei_log *log, int rc, const char *what)
{
	char where[160];

	snprintf(where, sizeof where, "%s to", what);
	if (disk_full(log, rc, where))
		return TIDE_EFULL;
	return tidei_err(log->err, tidei_err_mdb(rc), "%s: %s", what, mdb_strerror(rc));
}

/* Find (or make) the cache slot of stream key @p key; NULL if memory ran
 * out.  *fresh is set when the slot was just made. */
static tidei_head *
head_slot(tidei_log *log, const uint8_t *key, size_t n, int *fresh)
{
	uint64_t h = tidei_fnv(key, n, 0xcbf29ce484222325ull);
	size_t mask, i;

	if ((log->head_count + 1) * 2 > log->head_cap) {
		/* grow (rehashing the live slots of this generation) */
		size_t cap = log->head_cap ? log->head_cap * 2 : 1024;
		tidei_head *v = calloc(cap, sizeof *v), *old = log->heads;
		if (v == NULL)
			return NULL;
		for (size_t k = 0; k < log->head_cap; k++) {
			if (old[k].gen != log->head_gen)
				continue;
			for (i = old[k].hash & (cap - 1); v[i].gen == log->head_gen;
			     i = (i + 1) & (cap - 1))
				;
			v[i] = old[k];
		}
		free(old);
		log->heads = v;
		log->head_cap = cap;
	}
	mask = log->head_cap - 1;
	for (i = h & mask; log->heads[i].gen == log->head_gen; i = (i + 1) & mask) {
		tidei_head *e = &log->heads[i];
		if (e->hash == h && e->key_len == n &&
		    memcmp(log->head_keys.p + e->key_off, key, n) == 0) {
			*fresh = 0;
			return e;
		}
	}
	log->heads[i].gen = log->head_gen;
	log->heads[i].hash = h;
	log->heads[i].key_off = (uint32_t)log->head_keys.len;
	log->heads[i].key_len = (uint32_t)n;
	tidei_buf_put(&log->head_keys, key, n);
	if (log->head_keys.failed)
		return NULL;
	log->head_count++;
	*fresh = 1;
	return &log->heads[i];
}

/* Write the turn's stream heads back (before the commit). */
static int
flush_heads(tidei_log *log)
{
	for (size_t k = 0; k < log->head_cap; k++) {
		tidei_head *e = &log->heads[k];
		uint8_t raw[16];
		MDB_val key, val = { 16, raw };
		int rc;
		if (e->gen != log->head_gen)
			continue;
		key.mv_size = e->key_len;
		key.mv_data = log->head_keys.p + e->key_off;
		tidei_st64(raw, e->version);
		tidei_st64(raw + 8, e->last);
		if ((rc = mdb_put(log->txn, log->streams, &key, &val, 0)) != 0)
			return tidei_log_txn_fail(log, rc, "cannot update stream head");
	}
	return TIDE_OK;
}

int
tidei_log_append(tidei_log *log, uint8_t *rec, size_t len, int64_t now, int64_t expect,
		 tidei_append *res)
{
	struct tide_event ev;
	uint8_t key[KEYMAX + 1], skey[KEYMAX + 1];
	uint64_t seq = log->head + 1, version = 0, prev = 0;
	tidei_head *e = NULL;
	MDB_val k, v;
	int rc;

	if (tidei_event_decode(&ev, rec, len) != 0)
		return tidei_err(log->err, TIDE_EINVAL, "malformed record");
	res->duplicate = 0;
	res->version = 0;

	k.mv_size =
		tidei_log_make_key(log->format, key, ev.attr[TIDEI_A_SOURCE],
				   ev.len[TIDEI_A_SOURCE], ev.attr[TIDEI_A_ID], ev.len[TIDEI_A_ID]);
	k.mv_data = key;
	if (ev.attr[TIDEI_A_SUBJECT] != NULL) {
		size_t kn = tidei_log_make_key(log->format, skey, ev.attr[TIDEI_A_SUBJECT],
					       ev.len[TIDEI_A_SUBJECT], NULL, 0);
		int fresh;
		if ((e = head_slot(log, skey, kn, &fresh)) == NULL)
			return tidei_err(log->err, TIDE_ENOMEM, "out of memory");
		if (fresh) {
			MDB_val sk = { kn, skey }, sv;
			rc = mdb_get(log->txn, log->streams, &sk, &sv);
			if (rc == 0 && sv.mv_size == 16) {
				e->version = tidei_ld64(sv.mv_data);
				e->last = tidei_ld64((const uint8_t *)sv.mv_data + 8);
			} else if (rc == MDB_NOTFOUND) {
				e->version = e->last = 0;
			} else {
				return tidei_log_txn_fail(log, rc ? rc : MDB_CORRUPTED,
							  "cannot read stream head");
			}
		}
	}

	/* With an expectation, a repeat of an event already stored is still a
	 * duplicate (the producer retrying an append that succeeded), so the
	 * id is looked up before the version is compared. */
	if (expect >= 0) {
		rc = mdb_get(log->txn, log->ids, &k, &v);
		if (rc == 0) {
			res->duplicate = 1;
			memcpy(&res->seq, v.mv_data, 8);
			return TIDE_OK;
		}
		if (rc != MDB_NOTFOUND)
			return tidei_log_txn_fail(log, rc, "cannot look up event id");
		if (e == NULL || e->version != (uint64_t)expect) {
			res->version = e ? e->version : 0;
			return tidei_err(
				log->err, TIDE_ECONFLICT,
				"version conflict: stream '%.*s' is at version %llu, not %lld",
				(int)(ev.len[TIDEI_A_SUBJECT] > 200 ? 200
								    : ev.len[TIDEI_A_SUBJECT]),
				ev.attr[TIDEI_A_SUBJECT], (unsigned long long)res->version,
				(long long)expect);
		}
	}

	/* Duplicate detection and insertion in one B-tree descent. */
	v.mv_size = 8;
	v.mv_data = &seq;
	rc = mdb_put(log->txn, log->ids, &k, &v, MDB_NOOVERWRITE);
	if (rc == MDB_KEYEXIST) {
		res->duplicate = 1;
		memcpy(&res->seq, v.mv_data, 8);
		return TIDE_OK;
	}
	if (rc != 0)
		return tidei_log_txn_fail(log, rc, "cannot index event id");

	if (e != NULL) {
		version = e->version + 1;
		prev = e->last;
		e->version = version;
		e->last = seq;
	}

	/* recorded never goes backwards, even if the wall clock does. */
	if (now < log->last_recorded)
		now = log->last_recorded;
	log->last_recorded = now;
	tidei_event_stamp(rec, version, prev, now);

	k.mv_size = 8;
	k.mv_data = &seq;
	v.mv_size = len;
	v.mv_data = rec;
	if ((rc = mdb_put(log->txn, log->events, &k, &v, MDB_APPEND)) != 0)
		return tidei_log_txn_fail(log, rc, "cannot append event");
	log->head = seq;
	res->seq = seq;
	res->version = version;
	return TIDE_OK;
}

int
tidei_log_commit(tidei_log *log)
{
	int rc;

	if (log->txn == NULL)
		return TIDE_OK;
	if ((rc = flush_heads(log)) != TIDE_OK) {
		tidei_log_abort(log);
		return rc;
	}
	rc = mdb_txn_commit(log->txn);
	log->txn = NULL;
	if (rc != 0) {
		log->head = log->committed;
		return tidei_log_txn_fail(log, rc, "cannot commit");
	}
	log->committed = log->head;
	return TIDE_OK;
}

void
tidei_log_abort(tidei_log *log)
{
	if (log->txn != NULL)
		mdb_txn_abort(log->txn);
	log->txn = NULL;
	log->head = log->committed;
}

int
tidei_log_sync(tidei_log *log)
{
	int rc = mdb_env_sync(log->env, 1);

	return rc ? tidei_log_txn_fail(log, rc, "cannot sync the log") : TIDE_OK;
}

/* ------------------------------------------------------------------------
 * Reading
 * ------------------------------------------------------------------------ */

int
tidei_log_get(tidei_log *log, MDB_txn *txn, uint64_t seq, struct tide_event *ev)
{
	MDB_val k = { 8, &seq }, v;
	int rc = mdb_get(txn, log->events, &k, &v);

	if (rc != 0)
		return tidei_err_mdb(rc);
	if (tidei_event_decode(ev, v.mv_data, v.mv_size) != 0)
		return tidei_err(log->err, TIDE_EIO, "event %llu is corrupt",
				 (unsigned long long)seq);
	ev->seq = seq;
	return TIDE_OK;
}

/* Another process grew the map while this handle holds snapshots open. */
static int
remap_refused(tidei_log *log)
{
	return tidei_err(log->err, TIDE_EIO,
			 "the log's map grew (the engine wrote more) while cursors or listings "
			 "are open on this handle; close them and try again");
}

int
tidei_log_read_begin(tidei_log *log, MDB_txn **txn)
{
	int rc;

	for (int attempt = 0; attempt < 2; attempt++) {
		if (log->rtxn != NULL)
			rc = mdb_txn_renew(log->rtxn);
		else
			rc = mdb_txn_begin(log->env, NULL, MDB_RDONLY, &log->rtxn);
		if (rc == MDB_MAP_RESIZED && log->pins > 0)
			break;
		if (rc == MDB_MAP_RESIZED) {
			/* Another process grew the map: adopt its size and retry. */
			if (log->rtxn != NULL) {
				mdb_txn_abort(log->rtxn);
				log->rtxn = NULL;
			}
			mdb_env_set_mapsize(log->env, 0);
			refresh_map_info(log);
			continue;
		}
		if (rc != 0) {
			if (log->rtxn != NULL) {
				mdb_txn_abort(log->rtxn);
				log->rtxn = NULL;
			}
			return tidei_log_txn_fail(log, rc, "cannot begin a read transaction");
		}
		*txn = log->rtxn;
		return TIDE_OK;
	}
	return remap_refused(log);
}

int
tidei_log_snapshot_begin(tidei_log *log, MDB_txn **txn)
{
	int rc = mdb_txn_begin(log->env, NULL, MDB_RDONLY, txn);

	if (rc == MDB_MAP_RESIZED && log->pins == 0) {
		mdb_env_set_mapsize(log->env, 0);
		refresh_map_info(log);
		rc = mdb_txn_begin(log->env, NULL, MDB_RDONLY, txn);
	}
	if (rc == MDB_MAP_RESIZED)
		return remap_refused(log);
	if (rc != 0) {
		*txn = NULL;
		return tidei_log_txn_fail(log, rc, "cannot begin a read transaction");
	}
	log->pins++;
	return TIDE_OK;
}

void
tidei_log_snapshot_end(tidei_log *log, MDB_txn *txn)
{
	if (txn == NULL)
		return;
	mdb_txn_abort(txn);
	log->pins--;
}

void
tidei_log_read_end(tidei_log *log)
{
	if (log->rtxn != NULL)
		mdb_txn_reset(log->rtxn);
}

int
tidei_log_checkpoint_get(tidei_log *log, MDB_txn *txn, const char *name, uint64_t *seq, int *found)
{
	MDB_val k = { strlen(name), (void *)name }, v;
	int rc = mdb_get(txn, log->consumers, &k, &v);

	*found = 0;
	*seq = 0;
	if (rc == MDB_NOTFOUND)
		return TIDE_OK;
	if (rc != 0)
		return tidei_log_txn_fail(log, rc, "cannot read checkpoint");
	if (v.mv_size < 8)
		return tidei_err(log->err, TIDE_EIO, "checkpoint of '%s' is corrupt", name);
	*seq = tidei_ld64(v.mv_data);
	*found = 1;
	return TIDE_OK;
}

int
tidei_log_checkpoint_set(tidei_log *log, const char *name, uint64_t seq)
{
	uint8_t raw[8];
	MDB_val k = { strlen(name), (void *)name }, v = { 8, raw };
	int rc;

	tidei_st64(raw, seq);
	rc = mdb_put(log->txn, log->consumers, &k, &v, 0);
	return rc ? tidei_log_txn_fail(log, rc, "cannot write checkpoint") : TIDE_OK;
}

/* ------------------------------------------------------------------------
 * The stored layout, for checking a log (verify.c)
 * ------------------------------------------------------------------------ */

int
tidei_log_key_match(tidei_log *log, MDB_txn *txn, const void *key, size_t klen, const char *a,
		    size_t an, const char *b, size_t bn)
{
	uint8_t want[KEYMAX + 1];
	size_t n = tidei_log_make_key(tidei_log_key_format(log, txn), want, a, an, b, bn);

	/* a long key's hash is computed again: the whole key must be equal */
	return klen == n && memcmp(key, want, n) == 0;
}

/* ------------------------------------------------------------------------
 * Changes while no engine runs
 * ------------------------------------------------------------------------ */

int
tidei_log_offline(const char *dir, int (*fn)(tidei_log *log, void *ud), void *ud, char *err,
		  size_t errlen)
{
	char msg[TIDEI_ERRLEN];
	tidei_log_opts o = { 0 };
	tidei_log_opts ro = { 0 };
	tidei_log *log;
	int rc;

	msg[0] = '\0';
	/* Refuse to create a log where there is none. */
	ro.readonly = 1;
	if ((rc = tidei_log_open(&log, dir, &ro, msg)) != TIDE_OK)
		goto out;
	tidei_log_close(log);
	if ((rc = tidei_log_open(&log, dir, &o, msg)) != TIDE_OK)
		goto out;
	if ((rc = tidei_log_begin(log)) == TIDE_OK) {
		rc = fn(log, ud);
		if (rc == TIDE_OK)
			rc = tidei_log_commit(log);
		else
			tidei_log_abort(log);
	}
	if (rc != TIDE_OK)
		snprintf(msg, sizeof msg, "%s", log->err);
	tidei_log_close(log);
out:
	if (err != NULL && errlen > 0)
		snprintf(err, errlen, "%s", msg);
	return rc;
}
