/*
 * pbuild.h - a projection's build shared among threads.
 *
 * A projection keeps one state per key, and a key's state depends only on
 * that key's events.  A build from the log can therefore be split by key:
 * each of N helper threads loads the scripts into a Lua state of its own,
 * reads the log through a read transaction of its own, and applies only
 * the events whose key falls in its part (a hash of the key, modulo N).
 * The engine's thread keeps ingesting and answering queries meanwhile.
 *
 * Helpers never write.  Now and then (when the engine asks, and at the
 * end) every helper stops at the same seq and hands over its states,
 * encoded; the engine writes them all with the build's progress in one
 * commit, which is exactly what a build on the engine's thread does, so a
 * crash resumes from the last such checkpoint either way.  After an
 * intermediate checkpoint the helpers wait until it has committed: their
 * next reads of stored states must see it.
 *
 * Anything unexpected (a handler failing, a state that cannot be encoded,
 * the script changed on disk) stops the helpers: the engine goes on from
 * the last checkpoint on its own thread, where the failure is met again
 * and handled as usual.
 */
#ifndef TIDE_PBUILD_H
#define TIDE_PBUILD_H

#include <lmdb.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "histo.h"
#include "log.h"
#include "script.h"

/* The keys of a stretch of events, found by the helpers together: each
 * finds those of a share of the events, then applies those of its part. */
typedef struct tidei_keyed_ev {
	uint32_t off; /* of its key in keys[who] */
	uint32_t len;
	int8_t part; /* the helper that applies the event; -1 for none */
	uint8_t who; /* the helper that found its key */
} tidei_keyed_ev;

typedef struct tidei_keyed {
	uint64_t first; /* event seq is at e[(seq - first) % n] */
	size_t n;
	tidei_keyed_ev *e;
	tidei_buf *keys; /* one per helper */
} tidei_keyed;

/** The entry of event @p seq. */
static inline tidei_keyed_ev *
tidei_keyed_at(const tidei_keyed *kd, uint64_t seq)
{
	return &kd->e[(seq - kd->first) % kd->n];
}

struct tidei_pbuild_env;

/* What a helper does with the projection: load the scripts and apply
 * events.  The module of projections provides it (pworker.c); this one
 * only shares the work out. */
typedef struct tidei_pbuild_ops {
	/** Load the scripts of @p env in a state of the helper's own, with
	 *  only projection @p name defined, which must hash to @p hash; apply
	 *  the keys of part @p part of @p nparts, stopping between events once
	 *  *@p stop is set.  Lines the handlers print once loaded go to
	 *  @p log.  TIDE_OK with *@p w, or an error in @p err. */
	int (*open)(void **w, const struct tidei_pbuild_env *env, const char *name, uint64_t hash,
		    unsigned part, unsigned nparts, const atomic_int *stop,
		    void (*log)(void *ud, int level, const char *msg), void *log_ud, char *err);
	/** Fill kd->e for the events @p from to @p to (the keys go to
	 *  kd->keys[part]); TIDE_ESCRIPT when a filter or the key function
	 *  failed (*@p at is the event). */
	int (*find_keys)(void *w, tidei_log *log, MDB_txn *txn, tidei_keyed *kd, uint64_t from,
			 uint64_t to, uint64_t *at, char *err);
	/** Apply the events @p from to @p to of @p kd that fall in this part,
	 *  for generation @p gen, timing each handler call if @p timed (a
	 *  live projection's); TIDE_ESCRIPT when a handler failed. */
	int (*run_part)(void *w, tidei_log *log, MDB_txn *txn, uint32_t gen, const tidei_keyed *kd,
			uint64_t from, uint64_t to, int timed, uint64_t *at, char *err);
	/** Encode the states changed since the last take into @p out (and
	 *  forget them, or keep them for the next events); add the times of
	 *  the calls timed since then to *@p took. */
	int (*take)(void *w, tidei_buf *out, tidei_histo *took, char *err);
	/** Keys whose states are to be written. */
	size_t (*held)(void *w);
	void (*close)(void *w);
} tidei_pbuild_ops;

/* What helpers need to load the scripts as the engine did (copied). */
typedef struct tidei_pbuild_env {
	const tidei_pbuild_ops *ops;
	tidei_script_opts script; /* lua_path and allow are copied too */
	const char *const *scripts;
	size_t nscripts;
	unsigned threads;      /* helpers per build; below 2 builds stay on the engine's thread */
	uint64_t scripts_hash; /* of the scripts as the engine loaded them; 0: not known */
} tidei_pbuild_env;

/** A hash of the text of every script of @p env (as on disk now). */
uint64_t tidei_pbuild_scripts_hash(const tidei_pbuild_env *env);

typedef struct tidei_pbuild tidei_pbuild;

typedef struct tidei_pbuild_opts {
	const tidei_pbuild_env *env;
	tidei_log *log;   /* read through transactions of their own */
	const char *name; /* the projection */
	uint64_t hash;    /* its definition as the engine loaded it */
	uint32_t gen;     /* the generation being built */
	uint64_t after;   /* the build's progress: events up to here are applied */
	uint64_t until;   /* the last event to apply (committed) */
	unsigned threads;
	int follow; /* until grows (extend()) until finish() */
	int nice;   /* added to the helpers' nice value: they give way */
} tidei_pbuild_opts;

/** A deep copy of @p src into @p dst (NULL on failure: out of memory). */
tidei_pbuild_env *tidei_pbuild_env_copy(const tidei_pbuild_env *src);
void tidei_pbuild_env_free(tidei_pbuild_env *env);

/** Start the helpers.  TIDE_OK, or an error (then nothing runs). */
int tidei_pbuild_start(tidei_pbuild **out, const tidei_pbuild_opts *o, char *err);

/** Stop the helpers (if still running) and free everything.  NULL is fine. */
void tidei_pbuild_destroy(tidei_pbuild *b);

/** 1 when every helper has handed over its states at the same seq (in
 *  *@p seq; the states are tidei_pbuild_states()), 0 when not yet, -1 when
 *  a helper stopped (tidei_pbuild_error() says why). */
int tidei_pbuild_poll(tidei_pbuild *b, uint64_t *seq);

/** Helper @p k's states of the checkpoint that poll() reported: records
 *  of u32 key length, key, u32 value length (UINT32_MAX: deleted), value. */
const tidei_buf *tidei_pbuild_states(tidei_pbuild *b, unsigned k);
/** Helper @p k's handler times of that checkpoint: the calls it timed
 *  since its previous one (a build that follows the log times them). */
const tidei_histo *tidei_pbuild_took(tidei_pbuild *b, unsigned k);
unsigned tidei_pbuild_parts(const tidei_pbuild *b);
/** The last event the helpers apply (so far, if the build follows the
 *  log). */
uint64_t tidei_pbuild_until(const tidei_pbuild *b);
/** Whether until is the end (always, unless the build follows the log and
 *  finish() was not called). */
int tidei_pbuild_final(const tidei_pbuild *b);
/** A build that follows the log: events up to @p until are committed. */
void tidei_pbuild_extend(tidei_pbuild *b, uint64_t until);
/** A build that follows the log ends at until: the helpers hand over there
 *  and stop. */
void tidei_pbuild_finish(tidei_pbuild *b);
/** Park the helpers with no read transaction open (the log's map is to
 *  move): 0 once they all are, -1 if one did not within @p wait_ms (they
 *  should then be stopped).  They go on after unpause(). */
int tidei_pbuild_pause(tidei_pbuild *b, int64_t wait_ms);
void tidei_pbuild_unpause(tidei_pbuild *b);
/** Events up to here are applied by every helper. */
uint64_t tidei_pbuild_pos(tidei_pbuild *b);

/** The checkpoint's states are written: free them.  Helpers stay waiting
 *  until tidei_pbuild_resume(). */
void tidei_pbuild_release(tidei_pbuild *b);

/** The checkpoint at @p seq has committed: helpers go on. */
void tidei_pbuild_resume(tidei_pbuild *b, uint64_t seq);

/** Ask for a checkpoint soon (a no-op if one is pending or the end is near). */
void tidei_pbuild_checkpoint(tidei_pbuild *b);

/** Keys the helpers hold in memory, together. */
size_t tidei_pbuild_held(tidei_pbuild *b);

/** Why a helper stopped (after poll() returned -1), and at which event (0
 *  when not at an event). */
const char *tidei_pbuild_error(tidei_pbuild *b, uint64_t *seq);

/** Lines printed by handlers in the helpers since the last call, for the
 *  engine's log: @p fn is called for each; returns how many were dropped
 *  because too many were waiting. */
size_t tidei_pbuild_drain_log(tidei_pbuild *b, void (*fn)(void *ud, int level, const char *msg),
			      void *ud);

#endif
