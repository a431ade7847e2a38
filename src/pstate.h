/*
 * pstate.h - how projection states are stored: their keys in the `state`
 * database, keys too long for LMDB, writing a batch of states, and reading
 * them back (a lookup, and the queries of tide_log_query).
 *
 * A state is stored under name "\0" generation (4 bytes, big-endian) key.
 * LMDB keys hold at most 511 bytes, so with a name of n bytes a key of up
 * to L = 505 - n bytes is stored as it is (and sorts as itself), and a
 * longer one in exactly L + 1 bytes: its first L - 32 bytes, a zero byte
 * and its BLAKE2b hash (keyhash.h).  Its length alone tells it from a key
 * stored as it is.  The value of a long key starts with the whole key (a
 * binary string of the value encoding, val.h), then the state, so that
 * listing and prefix queries give the real key and a lookup can check it.
 *
 * A long key sorts among the others by its first L - 32 bytes; past those,
 * prefix queries compare the whole key from the value, so they stay exact.
 *
 * Logs of format 1 stored keys of up to L + 1 bytes as they are and none
 * longer: readers of such a log read them that way, and the migration to
 * format 2 (tidei_pstate_upgrade) rewrites those of L + 1 bytes.
 */
#ifndef TIDE_PSTATE_H
#define TIDE_PSTATE_H

#include <lmdb.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "err.h"

/** The longest projection name (tide.projection refuses longer ones). */
#define TIDEI_PROJ_NAME_MAX 200

/** The longest projection key: lengths are 32-bit in the encodings that
 *  carry keys, and a long key's value holds the key and its state. */
#define TIDEI_PSTATE_KEY_MAX (1u << 30)

/** Progress of a projection as stored in the projections database. */
typedef struct tidei_proj_meta {
	uint32_t live;      /* generation that queries read; 0 before the first build */
	uint32_t build;     /* generation being written (== live when up to date) */
	uint64_t live_seq;  /* events applied to the live generation */
	uint64_t build_seq; /* events applied to the generation being built */
	uint64_t hash;      /* definition of the build generation */
	int64_t version;
	uint8_t faulted; /* a handler failed; stopped at fault_seq */
	uint8_t gc;      /* keys of other generations remain to be deleted */
	uint64_t fault_seq;
	char error[256];
} tidei_proj_meta;

/** Read the progress of projection @p name from database @p dbi:
 *  TIDE_OK, TIDE_ENOTFOUND, TIDE_EIO (malformed) or another code. */
int tidei_proj_meta_get(MDB_txn *txn, MDB_dbi dbi, const char *name, tidei_proj_meta *m);
/** Write it in the write transaction @p txn: 0 or an LMDB error. */
int tidei_proj_meta_put(MDB_txn *txn, MDB_dbi dbi, const char *name, const tidei_proj_meta *m);

/** Find the state of @p key (@p klen bytes) of projection @p name in
 *  generation @p gen, in a log of key format @p fmt: 0 with @p state at
 *  its encoded state (inside the database), MDB_NOTFOUND, MDB_CORRUPTED
 *  when a long key's value is malformed, or another LMDB error. */
int tidei_pstate_get(MDB_txn *txn, MDB_dbi dbi, const char *name, uint32_t gen, const char *key,
		     size_t klen, uint32_t fmt, MDB_val *state);

/** For checking a log (verify.c): @p k and @p v are an entry of the state
 *  database of a projection named by @p nl bytes, in key format @p fmt.
 *  0 with @p state at its encoded state, or -1 when a long key's value
 *  does not hold the key its stored form stands for. */
int tidei_pstate_check(const MDB_val *k, const MDB_val *v, size_t nl, uint32_t fmt, MDB_val *state);

/** Write encoded states of projection @p name in generation @p gen in the
 *  write transaction @p txn: @p nout buffers of records (u32 key length,
 *  key, u32 value length or UINT32_MAX for a deleted key, value), no key
 *  twice.  They are written in the order of their stored keys, appended
 *  when they all come after the last key of the database (a new
 *  generation).  TIDE_OK, or a code with the detail in @p err. */
int tidei_pstate_write(MDB_txn *txn, MDB_dbi dbi, const char *name, uint32_t gen, uint32_t fmt,
		       const tidei_buf *const *out, size_t nout, char *err);

/** Format 1 to 2: rewrite the keys of L + 1 bytes as long keys, in the
 *  write transaction @p txn.  0 or an LMDB error (ENOMEM). */
int tidei_pstate_upgrade(MDB_txn *txn, MDB_dbi dbi);

/** The databases a query reads, and the log's key format. */
typedef struct tidei_pstate_dbs {
	MDB_dbi projections, state;
	uint32_t fmt;
} tidei_pstate_dbs;

/** Call @p fn for the state of @p key, or for every key starting with
 *  @p prefix (NULL: all), at most @p limit (0: no limit), in the order of
 *  their stored keys.  @p val is the encoded state.  TIDE_ENOTFOUND: no
 *  such projection (or key); TIDE_ESTATE: not built yet; TIDE_EIO: a
 *  malformed entry. */
int tidei_state_query(MDB_txn *txn, const tidei_pstate_dbs *db, const char *name, const char *key,
		      size_t klen, const char *prefix, size_t limit,
		      int (*fn)(void *ud, const char *key, size_t klen, const uint8_t *val,
				size_t vlen),
		      void *ud);

#endif
