/*
 * projection.h - read models: tide.projection folds events into state per
 * key, kept in LMDB with the projection's checkpoint, rebuilt from the log
 * in the background when its definition changes, and queried while the
 * engine runs or from another process.
 */
#ifndef TIDE_PROJECTION_H
#define TIDE_PROJECTION_H

#include <lua.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "flight.h"
#include "histo.h"
#include "log.h"
#include "pbuild.h"
#include "pstate.h"
#include "script.h"

typedef struct tidei_projections tidei_projections;

typedef struct tidei_projections_opts {
	tidei_script *script;          /* the Lua state of the scripts (not owned) */
	size_t turn_budget;            /* events a live projection takes per turn */
	int64_t rebuild_ns;            /* time a projection may take per turn */
	int memory_only;               /* replay: state lives in Lua only, nothing is written */
	const tidei_pbuild_env *build; /* builds shared among threads (copied); NULL: none */
	void (*log)(void *ud, int level, const char *fmt, ...) TIDEI_PRINTF(3, 4);
	void *log_ud;
} tidei_projections_opts;

int tidei_projections_new(tidei_projections **out, const tidei_projections_opts *o, char *err);
void tidei_projections_destroy(tidei_projections *ps);

/** tide.projection(name, spec): the spec table is at @p spec in @p L;
 *  @p script is the file that defines it (its contents are part of the
 *  definition's hash). */
int tidei_projections_define(tidei_projections *ps, lua_State *L, const char *name, int spec,
			     const char *script, const char *where, char *err);

/** Read each projection's progress and decide what must be (re)built. */
int tidei_projections_start(tidei_projections *ps, tidei_log *log, char *err);

/** Advance every projection inside the open write transaction, each for
 *  up to rebuild_ns (live ones also by at most the turn budget).  *more
 *  is set while work remains.  TIDE_EFULL: abort, grow, run again. */
int tidei_projections_run(tidei_projections *ps, tidei_log *log, int *more, char *err);

/** Record each handler call on the engine's thread in @p f (may be NULL),
 *  stop at events the engine died on, and build on the engine's thread a
 *  projection whose shared build was running when it died. */
void tidei_projections_set_flight(tidei_projections *ps, tidei_flight *f);

/** The scripts are loaded: remember their text's hash, so that a build's
 *  threads, which load them again, can tell if one changed since. */
void tidei_projections_pin_scripts(tidei_projections *ps);

/** Stop the helper threads of every build (they may be started again by
 *  the next run); before the log's map changes or closes. */
/** Park the build helpers while the log's map moves (those that do not
 *  park in time are stopped); unpause() lets them go on. */
void tidei_projections_pause(tidei_projections *ps);
void tidei_projections_unpause(tidei_projections *ps);
void tidei_projections_stop(tidei_projections *ps);

/** After an aborted turn: forget unwritten state, reload progress. */
int tidei_projections_reload(tidei_projections *ps, tidei_log *log);

/** Start a rebuild of @p name in the open write transaction (a forced
 *  one, or after the definition changed).  TIDE_ENOTFOUND if unknown. */
int tidei_projections_rebuild(tidei_projections *ps, tidei_log *log, const char *name);

size_t tidei_projections_count(const tidei_projections *ps);
/** Projection @p k's name and where it was defined (*@p where), and in
 *  @p out what it is ("version 1, key data.account; on order.placed,
 *  order.*"). */
const char *tidei_projections_describe(const tidei_projections *ps, size_t k, const char **where,
				       tidei_buf *out);

/** Projection @p k's name (*@p name) and live handler calls: how long
 *  each took (a rebuild's are not counted). */
const tidei_histo *tidei_projections_took(const tidei_projections *ps, size_t k, const char **name);

/** The definition hash of @p name (0 if there is no such projection). */
uint64_t tidei_projections_hash(const tidei_projections *ps, const char *name);

/** When the engine should run a turn even if nothing arrives (a build's
 *  helper threads are running, or a live projection waits for them), or
 *  -1. */
int64_t tidei_projections_next_poll(const tidei_projections *ps);

/* In a build helper (pbuild.c), whose projections hold just the one being
 * built: */

/** Apply only the keys of part @p part of @p nparts (by a hash of the key);
 *  stop between two events once *@p stop is set (then TIDE_ESTATE). */
void tidei_projections_part(tidei_projections *ps, unsigned part, unsigned nparts,
			    const atomic_int *stop);

/** Fill kd->e for the events @p from to @p to, reading through @p txn; the
 *  keys go to kd->keys[part].  TIDE_ESCRIPT when a filter or the key
 *  function failed (*@p at is the event), or another error. */
int tidei_projections_find_keys(tidei_projections *ps, tidei_log *log, MDB_txn *txn,
				tidei_keyed *kd, uint64_t from, uint64_t to, uint64_t *at,
				char *err);

/** Apply the events @p from to @p to of @p kd that fall in this helper's part, for
 *  generation @p gen, reading events and stored states through @p txn;
 *  each handler call is timed if @p timed.  TIDE_ESCRIPT when a handler
 *  failed (*@p at is the event). */
int tidei_projections_run_part(tidei_projections *ps, tidei_log *log, MDB_txn *txn, uint32_t gen,
			       const tidei_keyed *kd, uint64_t from, uint64_t to, int timed,
			       uint64_t *at, char *err);

/** Encode the states changed since the last take() into @p out; keep
 *  them decoded while they are few enough, else forget them.  The calls
 *  timed since then are added to *@p took.  TIDE_ESCRIPT when a state
 *  cannot be encoded. */
int tidei_projections_take(tidei_projections *ps, tidei_buf *out, tidei_histo *took, char *err);

/** Keys whose states changed since the last take(). */
size_t tidei_projections_held(const tidei_projections *ps);

/** Replay: apply one event to every projection, in memory. */
int tidei_projections_apply(tidei_projections *ps, const struct tide_event *ev, char *err);

/** Replay: each key and state (as JSON) of @p name, in no set order;
 *  @p fn returns non-zero to stop. */
int tidei_projections_each_state(tidei_projections *ps, const char *name,
				 int (*fn)(void *ud, const char *proj, const char *key, size_t klen,
					   const char *json, size_t jlen),
				 void *ud);

/** Push a copy of projection @p name's state for @p key (nil if none) for
 *  a consumer that reads it (tide.query): the newest applied, from the
 *  projection's memory or the live generation in @p log's open write
 *  transaction.  TIDE_ENOTFOUND: no such projection.  May raise (a
 *  state that cannot be copied). */
int tidei_projections_push_state(tidei_projections *ps, lua_State *L, tidei_log *log,
				 const char *name, const char *key, size_t klen, char *err);

#endif
