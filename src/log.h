/*
 * log.h - the LMDB log: the environment, its named databases, appends in
 * group-committed write transactions, and reads.
 */
#ifndef TIDE_LOG_H
#define TIDE_LOG_H

#include <lmdb.h>
#include <stdint.h>

#include "buf.h"
#include "err.h"
#include "event.h"

/** Version of the on-disk layout, stored in the meta database.  2: keys
 *  too long for LMDB are stored by a BLAKE2b hash (format 1 used FNV; the
 *  first writable open migrates such a log, see log.c). */
#define TIDEI_LOG_FORMAT 2

/** The marker file: written beside data.mdb when a log is created (or
 *  first opened for writing by a version that writes it), so that a
 *  data.mdb that later goes missing or empty is refused, not replaced by
 *  an empty log. */
#define TIDEI_LOG_MARKER "tide.created"

typedef struct tidei_log_opts {
	int readonly;      /* open for reading only (another process writes) */
	int nosync;        /* durability "relaxed": MDB_NOSYNC, the caller syncs */
	uint64_t map_size; /* initial map size in bytes; 0 for the default */
	/* tide_log_verify: open a data.mdb shorter than its last page (read
	 * only), recording the sizes in file_size and need_size instead of
	 * refusing; whoever reads it must expect SIGBUS. */
	int allow_short;
} tidei_log_opts;

/** One stream head changed in the open transaction. */
typedef struct tidei_head {
	uint64_t hash;
	uint32_t key_off, key_len; /* in tidei_log.head_keys */
	uint64_t version, last;
	uint32_t gen; /* valid when equal to tidei_log.head_gen */
} tidei_head;

typedef struct tidei_log {
	MDB_env *env;
	MDB_dbi events;      /* seq (native u64) -> record */
	MDB_dbi ids;         /* source "\0" id -> seq: duplicate detection */
	MDB_dbi streams;     /* subject -> {version, last seq}: stream heads */
	MDB_dbi consumers;   /* consumer name -> checkpoint seq */
	MDB_dbi pending;     /* consumer "\0" seq -> an event being retried or waiting */
	MDB_dbi dead;        /* consumer "\0" seq -> a dead letter */
	MDB_dbi once;        /* consumer "\0" key -> seq that first claimed it */
	MDB_dbi projections; /* projection name -> progress (generations, checkpoints) */
	MDB_dbi state;       /* projection "\0" generation key -> encoded state */
	MDB_dbi meta;        /* "format" -> TIDEI_LOG_FORMAT; "once-legacy" */
	MDB_dbi rules;       /* rules' states, timers and clocks (rule.c) */
	int has_rules;       /* 0: a log from before rules, opened read-only */
	uint32_t format;     /* the log's format: below TIDEI_LOG_FORMAT only if read-only */
	int once_legacy;     /* format 1 left long tide.once claims under its hash */
	MDB_txn *txn;        /* the open write transaction, if any */
	MDB_txn *rtxn;       /* a reusable read transaction (reset when idle) */
	unsigned pins;       /* snapshots of their own held open (cursors, listings) */
	/* Called before the map moves (it grows): other threads of this
	 * process must not be reading it then; and after, moved or not. */
	void (*before_remap)(void *ud);
	void (*after_remap)(void *ud);
	void *before_remap_ud;
	uint64_t head;      /* last seq, including uncommitted appends */
	uint64_t committed; /* last committed seq */
	int64_t last_recorded;
	uint64_t map_size;
	unsigned page_size;
	int readonly;
	int lock_fd;   /* flock held by the writing process */
	int disk_full; /* the last failure was a full disk (reset by tidei_log_begin) */
	uint64_t file_size, need_size; /* data.mdb at open, and what its last page needs */
	/* Stream heads touched by the open transaction, written back once
	 * at commit: a hot subject costs one B-tree update per turn, not one
	 * per event. */
	tidei_head *heads;
	size_t head_cap, head_count;
	uint32_t head_gen;
	tidei_buf head_keys;
	char dir[4096];
	char err[TIDEI_ERRLEN];
} tidei_log;

/** Outcome of one append. */
typedef struct tidei_append {
	uint64_t seq;     /* the new seq, or the original one for a duplicate */
	uint64_t version; /* stream version (0 without subject) */
	int duplicate;
} tidei_append;

/** Open (creating when writable) the log in directory @p dir.  A writable
 *  log takes an exclusive lock on the directory, which it creates (0700)
 *  when missing; the files it creates are 0600.  A data.mdb shorter than
 *  its last page, or missing or empty where the marker says a log was,
 *  is refused with TIDE_EIO.  Returns TIDE_OK or a code with the detail
 *  in @p err (TIDEI_ERRLEN bytes). */
int tidei_log_open(tidei_log **out, const char *dir, const tidei_log_opts *o, char *err);
void tidei_log_close(tidei_log *log);

/** Write the marker file into @p dir (0600, atomically).  Returns TIDE_OK
 *  or TIDE_EIO with the detail in @p err. */
int tidei_log_mark(const char *dir, char *err);

/** 1 if the failure @p rc (an errno) of a write in directory @p dir means
 *  the disk is full: ENOSPC, EDQUOT, or EIO (LMDB's word for a short
 *  write) with next to no room left; @p room then says how much is left
 *  ("0 bytes free"). */
int tidei_disk_full(const char *dir, int rc, char *room, size_t len);

/** Start the turn's write transaction, growing the map first when it is
 *  running out of room. */
int tidei_log_begin(tidei_log *log);
/** Append one record (stamped in place with version, prev and recorded).
 *  With @p expect >= 0 the subject's stream must be at that version:
 *  otherwise TIDE_ECONFLICT (res->version holds the current one) and
 *  nothing is written.  TIDE_EFULL means the transaction is dead: abort,
 *  grow, retry. */
int tidei_log_append(tidei_log *log, uint8_t *rec, size_t len, int64_t now, int64_t expect,
		     tidei_append *res);
/** Commit the turn.  A full disk (ENOSPC, EDQUOT, or LMDB's EIO for a
 *  short write on a filesystem with no room left) is TIDE_EFULL with
 *  log->disk_full set and a detail that says "disk full"; growing the map
 *  does not help then, freeing space does. */
int tidei_log_commit(tidei_log *log);
void tidei_log_abort(tidei_log *log);
/** Double the map (no transaction may be open). */
int tidei_log_grow(tidei_log *log);
/** Flush to disk (durability "relaxed"). */
int tidei_log_sync(tidei_log *log);

/** Read the event at @p seq in @p txn into @p ev.  TIDE_ENOTFOUND if none. */
int tidei_log_get(tidei_log *log, MDB_txn *txn, uint64_t seq, struct tide_event *ev);

/** A read transaction for the current snapshot, reused between calls;
 *  release it with tidei_log_read_end(). */
int tidei_log_read_begin(tidei_log *log, MDB_txn **txn);
void tidei_log_read_end(tidei_log *log);

/** A read snapshot of its own, for a reader that stays open (a cursor, a
 *  listing whose callback may use the handle): several may be held at
 *  once.  When another process has grown the map, it is mapped again
 *  only while no such snapshot is held (remapping would move the pages
 *  they point into); otherwise TIDE_EIO asks to close them first.
 *  Release with tidei_log_snapshot_end(). */
int tidei_log_snapshot_begin(tidei_log *log, MDB_txn **txn);
void tidei_log_snapshot_end(tidei_log *log, MDB_txn *txn);

/** Durable consumer checkpoints.  get works in any transaction; set needs
 *  the write transaction. */
int tidei_log_checkpoint_get(tidei_log *log, MDB_txn *txn, const char *name, uint64_t *seq,
			     int *found);
int tidei_log_checkpoint_set(tidei_log *log, const char *name, uint64_t seq);

/* ------------------------------------------------------------------------
 * Retries and dead letters, keyed by consumer name and seq
 * ------------------------------------------------------------------------ */

/** States of a pending event. */
enum { TIDEI_PENDING_RETRY = 1, TIDEI_PENDING_WAITING = 2 };

/** An event a consumer has not finished with. */
typedef struct tidei_pending_rec {
	uint8_t state;     /* TIDEI_PENDING_* */
	uint8_t from_dlq;  /* retried from the dead letters */
	uint32_t attempts; /* failed attempts so far */
	int64_t next_at;   /* ns; when to try again (RETRY) */
} tidei_pending_rec;

/** A dead letter as stored.  Strings point into the database. */
typedef struct tidei_dead_rec {
	uint32_t attempts;
	int64_t failed_at;
	const char *where; /* script:line, not NUL-terminated */
	size_t where_len;
	const char *error;
	size_t error_len;
} tidei_dead_rec;

int tidei_log_pending_put(tidei_log *log, const char *consumer, uint64_t seq,
			  const tidei_pending_rec *r);
int tidei_log_pending_del(tidei_log *log, const char *consumer, uint64_t seq);
/** Call @p fn for each pending event of @p consumer, in seq order. */
int tidei_log_pending_each(tidei_log *log, MDB_txn *txn, const char *consumer,
			   int (*fn)(void *ud, uint64_t seq, const tidei_pending_rec *r), void *ud);

int tidei_log_dead_put(tidei_log *log, const char *consumer, uint64_t seq, const tidei_dead_rec *r);
int tidei_log_dead_del(tidei_log *log, const char *consumer, uint64_t seq);
/** Read one dead letter; TIDE_ENOTFOUND if none. */
int tidei_log_dead_get(tidei_log *log, MDB_txn *txn, const char *consumer, uint64_t seq,
		       tidei_dead_rec *r);
/** Call @p fn for each dead letter, of @p consumer (NULL: all), in key
 *  order.  @p fn returns non-zero to stop. */
int tidei_log_dead_each(tidei_log *log, MDB_txn *txn, const char *consumer,
			int (*fn)(void *ud, const char *consumer, uint64_t seq,
				  const tidei_dead_rec *r),
			void *ud);

/** The same, from the first dead letter after (@p after, @p after_seq)
 *  when @p after is not NULL: a walk in slices picks up where it stopped. */
int tidei_log_dead_each_after(
	tidei_log *log, MDB_txn *txn, const char *consumer, const char *after, uint64_t after_seq,
	int (*fn)(void *ud, const char *consumer, uint64_t seq, const tidei_dead_rec *r), void *ud);

/** Claim @p key for @p consumer: *first is 1 if nobody had (then it is
 *  recorded with @p seq), 0 if it was claimed before.  Write transaction. */
int tidei_log_once(tidei_log *log, const char *consumer, const char *key, size_t n, uint64_t seq,
		   int *first);
/** Whether tide.once would grant @p key to @p consumer, as of @p txn
 *  (*@p first = 1: not claimed there), without claiming it. */
int tidei_log_once_get(tidei_log *log, MDB_txn *txn, const char *consumer, const char *key,
		       size_t n, int *first);

/** Query a projection's state as JSON (cursor.c; see tide_log_query). */
int tidei_log_query(tidei_log *log, const char *name, const char *key, const char *prefix,
		    size_t limit, tide_state_fn *fn, void *ud);

/** The internal log and scratch buffer behind a public tide_log (cursor.c). */
/** Leave the detail of a failed tidei_log_query for tide_errmsg(). */
int tidei_query_fail(tidei_log *log, int rc, const char *name, const char *key);
void tidei_log_reader(tide_log *l, tidei_log **log, tidei_buf **scratch);
/** A tide_log reading @p log, which stays its owner's: for readers in the
 *  same process (tide_log_close() frees the view only).  Its cursors must
 *  be used from the thread that owns @p log, between its transactions. */
int tidei_log_view(tidei_log *log, tide_log **out);

/** The key format of the log as @p txn sees it: log->format, or for a
 *  read-only log opened before the engine migrated it, the newer one. */
uint32_t tidei_log_key_format(tidei_log *log, MDB_txn *txn);

/** Current stream head of @p subject: version and seq of its last event. */
int tidei_log_stream_head(tidei_log *log, MDB_txn *txn, const char *subject, size_t n,
			  uint64_t *version, uint64_t *last);

/* ------------------------------------------------------------------------
 * Shared by log.c and logcons.c (the consumers' records)
 * ------------------------------------------------------------------------ */

/** LMDB's default MDB_MAXKEYSIZE: the longest key stored as it is. */
#define TIDEI_KEYMAX 511

/** Build the key of @p a ["\0" @p b] into @p key (TIDEI_KEYMAX bytes) as
 *  a log of format @p fmt stores it (a long one by its hash); returns
 *  its length.  The _v1 form is how format 1 stored a long key. */
size_t tidei_log_make_key(uint32_t fmt, uint8_t *key, const char *a, size_t an, const char *b,
			  size_t bn);
size_t tidei_log_make_key_v1(uint8_t *key, const char *a, size_t an, const char *b, size_t bn);

/** Count the keys of @p dbi that begin with the @p n bytes of @p prefix.
 *  Returns 0 or an LMDB error. */
int tidei_log_count_prefix(MDB_txn *txn, MDB_dbi dbi, const void *prefix, size_t n,
			   uint64_t *count);

/** Record why LMDB refused (@p rc) in log->err, and return the code it
 *  maps to (TIDE_EFULL for a full disk or map). */
int tidei_log_txn_fail(tidei_log *log, int rc, const char *what);

/* ------------------------------------------------------------------------
 * The stored layout, for checking a log (verify.c)
 * ------------------------------------------------------------------------ */

/** 1 if @p key (as stored in ids, streams or once by a log of @p log's
 *  format, read in @p txn) is the key of @p a ["\0" @p b]. */
int tidei_log_key_match(tidei_log *log, MDB_txn *txn, const void *key, size_t klen, const char *a,
			size_t an, const char *b, size_t bn);
/** Split a pending or dead key (consumer "\0" seq): 0 with the name's
 *  length and the seq, or -1 if it is not one. */
int tidei_log_seq_key_parse(const void *key, size_t klen, size_t *name_len, uint64_t *seq);
/** Decode a dead letter as stored: 0, or -1 if it is malformed. */
int tidei_log_dead_decode(const MDB_val *v, tidei_dead_rec *r);

/** 1 if event type @p type matches @p pat: exact, "prefix.*" or "*". */
int tidei_pattern_match(const char *pat, size_t plen, const char *type, size_t tlen);

/** Open the log in @p dir for writing (TIDE_EBUSY if an engine runs
 *  there; TIDE_ENOTFOUND if there is no log), run @p fn in one write
 *  transaction and commit it.  The error goes to @p err. */
int tidei_log_offline(const char *dir, int (*fn)(tidei_log *log, void *ud), void *ud, char *err,
		      size_t errlen);

/** Wall-clock time in ns since the epoch. */
int64_t tidei_now(void);

#endif
