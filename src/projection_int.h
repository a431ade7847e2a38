/*
 * projection_int.h - what the modules of projections share: the types of
 * a projection, applying events to its states and storing them
 * (papply.c), and sharing the work with the build's helper threads
 * (pshare.c); projection.c defines projections and runs them in the
 * engine's turns.  Not for other modules: they use projection.h.
 */
#ifndef TIDE_PROJECTION_INT_H
#define TIDE_PROJECTION_INT_H

#include <lua.h>
#include <stdatomic.h>
#include <stdint.h>

#include "keymap.h"
#include "pbuild.h"
#include "projection.h"
#include "pstate.h"

/* Encode and write the cached states when this many keys changed. */
#define CACHE_MAX 100000
/* A live projection keeps up to this many states decoded between writes,
 * so that the next event of a key does not read and decode it again. */
#define KEEP_MAX 200000
/* A rebuild writes its state only now and then (or when it catches up):
 * a key updated many times in the meantime is written once. */
#define REBUILD_KEYS 200000
#define REBUILD_FLUSH_NS 5000000000ll
/* A live projection under load does the same for a short while: a turn
 * that took at least LIVE_BUSY events keeps its states in memory until
 * LIVE_FLUSH_NS after the last write, or until a quieter turn (the next
 * one that finds nothing new, at the latest).  Each write of a state
 * copies its LMDB page, so writing once per turn at 100,000 keys costs a
 * page per event; queries see the last write, as the progress does. */
#define LIVE_BUSY 256
#define LIVE_FLUSH_NS 2000000000ll
/* A live projection under load (a turn of LIVE_BUSY of its events in the
 * last HOT_NS) goes to the build's helper threads, beside ingest, once
 * PAR_MIN_EVENTS events wait for it; it waits up to LIVE_WAIT_NS for them
 * before it runs in the turn again. */
#define HOT_NS 1000000000ll
#define LIVE_WAIT_NS 50000000ll
/* The helpers follow the log until they have caught up with it and
 * nothing new came for this long. */
#define LIVE_IDLE_NS 100000000ll
/* Their nice value is this much higher than the engine's thread: ingest,
 * which producers wait for, comes first, and they take the CPU time it
 * leaves (on two cores, 1,000,000 events until live: 198,000-202,000
 * events/s at the same priority, 216,000-230,000 at +10, 237,000 at +19). */
#define LIVE_NICE 10
/* Keys of stale generations deleted per turn. */
#define GC_PER_TURN 20000
/* Check the turn's clock every so many events. */
#define CLOCK_EVERY 16
/* A build shares its work among threads (pbuild.h) when at least this many
 * events are left; the engine looks at their progress this often. */
#define PAR_MIN_EVENTS 1000
#define PAR_POLL_NS 10000000ll
/* How long the helpers may take to pause for the map to grow. */
#define PAUSE_WAIT_MS 2000

typedef struct handler {
	char *pattern;
	size_t plen;
	int ref;
} handler;

typedef struct proj {
	char *name;
	char *where;
	uint64_t hash; /* of the definition: version and script file */
	int64_t version;
	int key_ref, filter_ref, init_ref;
	int parallel;   /* spec.parallel: its builds may be shared among threads */
	char *key_path; /* key = "data.account": found in C, no Lua call */
	int key_attr;   /* its attribute (TIDEI_A_*), TIDEI_NATTR for data, -1 for an extension */
	handler *h;     /* exact types first, then prefixes longest first, then "*" */
	size_t nh;
	tidei_proj_meta meta;
	int meta_changed;  /* by load(): a new definition starts a build */
	tidei_keymap keys; /* keys whose states are in the cache, each with a slot */
	uint8_t *dirty;    /* per slot: changed since the last write */
	size_t dirty_cap;
	size_t ndirty;       /* slots with dirty set */
	int cache_ref;       /* Lua table: slot + 1 -> that key's state */
	uint64_t done;       /* a rebuild's progress in memory, ahead of meta.build_seq */
	int64_t flushed_at;  /* when the states were last written */
	tidei_buf out;       /* encoded states, between encoding and writing */
	MDB_txn *txn;        /* where stored states are read */
	tidei_pbuild *par;   /* the build's helpers, while they run */
	uint64_t par_commit; /* a checkpoint of theirs, written in this turn */
	int par_off;         /* the helpers stopped: this build goes on alone */
	int64_t hot_at;      /* live: when a turn last had LIVE_BUSY of its events */
	int64_t wait_since;  /* live: waiting for events enough for the helpers since */
	/* the event being applied */
	const struct tide_event *ev;
	int handler_ref;
	const char *key; /* its key, when found beforehand (build helpers) */
	size_t klen;
	struct {
		MDB_cursor *cur;
		uint64_t seq, done;    /* the event being applied; the last one applied */
		uint64_t until;        /* the last event to apply */
		const tidei_keyed *kd; /* a build helper's keys of these events */
		tidei_buf *kbuf;       /* where a helper puts the keys it finds */
		size_t handled, seen, budget;
		int64_t deadline;
		int rebuilding;
		int timed;   /* a helper of a live projection: its calls are timed */
		int mrc;     /* the cursor's last status */
		int corrupt; /* the event at seq cannot be decoded */
	} run;
	tidei_histo took; /* live handler calls (not a rebuild's), for the metrics;
			   * a helper's, until handed over */
	tidei_log *log;
	struct tidei_projections *ps;
} proj;

struct tidei_projections {
	proj *v;
	size_t n, cap;
	tidei_projections_opts o;
	tidei_pbuild_env *build; /* how helpers load the scripts; NULL: no helpers */
	unsigned part, nparts;   /* in a helper: its part of the keys */
	const atomic_int *stop;  /* in a helper: set when it must stop */
	tidei_flight *flight;    /* the engine's flight recorder (not in helpers) */
	int64_t poll_at;         /* a turn is wanted then (helpers running), or -1 */
	char err[TIDEI_ERRLEN];
};

#define LOG(ps, level, ...) \
	do { \
		if ((ps)->o.log) \
			(ps)->o.log((ps)->o.log_ud, level, __VA_ARGS__); \
	} while (0)

/* Helper threads of one build, at most. */
#define PAR_MAX_THREADS 16

static inline lua_State *
tidei_proj_lua(tidei_projections *ps)
{
	return tidei_script_state(ps->o.script);
}

/* papply.c */

/* Write the progress record @p m of projection @p name (in the write
 * transaction); the error is in log->err. */
int tidei_proj_record(tidei_log *log, const char *name, const tidei_proj_meta *m);
/* Write encoded states to the generation being built. */
int tidei_proj_write_states(proj *p, const tidei_buf *const *out, size_t nout, char *err);
/* Whether the states stay decoded after they are written. */
int tidei_proj_keep_cache(tidei_projections *ps, const proj *p);
/* Encode the changed states into p->out, and keep them decoded or forget
 * them; TIDE_ESCRIPT when one cannot be encoded (then all are forgotten). */
int tidei_proj_encode(tidei_projections *ps, proj *p, char *err);
/* Write the changed states; TIDE_ESCRIPT when one cannot be encoded. */
int tidei_proj_flush(tidei_projections *ps, proj *p, char *err);
/* Stop the projection at event @p seq. */
void tidei_proj_fault(tidei_projections *ps, proj *p, uint64_t seq, const char *why);
/* Forget the states held in memory (and the progress held with them). */
void tidei_proj_new_cache(tidei_projections *ps, proj *p);
/* Protected calls with the proj as light userdata: apply p->run's
 * events, or find their keys (in a helper). */
int tidei_proj_l_run(lua_State *L);
int tidei_proj_l_keys(lua_State *L);
/* In a helper: whether it was told to stop. */
int tidei_proj_stopping(const tidei_projections *ps);
/* The handler of @p p for events of type @p type (a Lua reference), or
 * LUA_NOREF. */
int tidei_proj_match(const proj *p, const char *type, size_t tlen);
/* Apply p->ev with handler p->handler_ref (a protected call with the
 * proj as light userdata). */
int tidei_proj_l_apply(lua_State *L);

/* pshare.c */

void tidei_proj_stop_helpers(proj *p);
/* A rebuild shared with helpers: start them, write their checkpoints, or
 * see that they stopped; *@p busy while they have it. */
int tidei_proj_helpers(tidei_projections *ps, proj *p, tidei_log *log, int64_t now, int *more,
		       int *busy, char *err);
/* The same for a live projection under load; *@p busy while the helpers
 * have it or it waits for them. */
int tidei_proj_live_helpers(tidei_projections *ps, proj *p, tidei_log *log, int64_t now, int *more,
			    int *busy, char *err);
void tidei_proj_log_progress(tidei_projections *ps, const proj *p, uint64_t done, uint64_t head);

#endif
