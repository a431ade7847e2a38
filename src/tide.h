/*
 * tide.h - the public interface of libtide, a durable, Lua-scriptable
 * event processing engine.
 *
 * Tide appends CloudEvents to an LMDB log in group-committed write
 * transactions, hands them to consumers (Lua scripts or C callbacks) that
 * read the log from durable checkpoints, and publishes every committed event.
 * An engine runs on one libevent event_base: its own, or the caller's.
 *
 * Conventions, as in lmdb.h:
 *  - Functions return TIDE_OK (0) or a negative TIDE_E* code;
 *    tide_strerror() names a code.
 *  - Error detail has one home: after any function returned an error
 *    (TIDE_ENOTFOUND at the end of a walk included), tide_errmsg() says
 *    why, for the calling thread, until that thread's next failing call.  No function takes an
 * error buffer and no handle keeps a message of its own.
 *  - Constructors hand the new object back through an out-parameter and
 *    destructors accept NULL.
 *  - "Borrowed" pointers stay owned by the caller and are only read during
 *    the call; "valid until X" pointers are owned by Tide.
 *  - Threading: an engine and everything it hands out belong to the thread
 *    that runs its event_base.  Two calls are the exceptions:
 *    tide_engine_stop() may be called from a signal handler or any thread,
 *    and tide_publish_mt() from any thread.
 *  - Callbacks run on the loop's thread.  A C consumer runs inside the
 *    engine's write transaction (see tide_consumer_fn): it must not block.
 *  - The library keeps no writable global state (beyond one error message
 *    per thread), installs no signal
 *    handlers and never writes to stdout or stderr: diagnostics go to the
 *    log callback of the configuration.
 */
#ifndef TIDE_H
#define TIDE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(TIDE_BUILDING) && defined(__GNUC__)
#define TIDE_API __attribute__((visibility("default")))
#else
#define TIDE_API
#endif

struct event_base;

/** Version of this header.  TIDE_VERSION_NUM orders versions as numbers
 *  (0.1.0 is 100, 1.2.3 is 10203); tide_version_num() is the library's,
 *  which may differ from the header a program was built with. */
#define TIDE_VERSION_MAJOR 0
#define TIDE_VERSION_MINOR 1
#define TIDE_VERSION_PATCH 0
#define TIDE_VERSION_NUM \
	(TIDE_VERSION_MAJOR * 10000 + TIDE_VERSION_MINOR * 100 + TIDE_VERSION_PATCH)
#define TIDE_VERSION_STRING "0.1.0"

/** @defgroup errors Error codes
 * Every fallible function returns one of these.  The table behind
 * tide_strerror() is the only place the messages are written down. @{ */
enum {
	TIDE_OK = 0,
	TIDE_EINVAL = -1,     /**< invalid argument or API misuse */
	TIDE_ENOMEM = -2,     /**< out of memory */
	TIDE_EIO = -3,        /**< storage error (LMDB or the filesystem) */
	TIDE_EFORMAT = -4,    /**< log written by an incompatible version */
	TIDE_ENOTFOUND = -5,  /**< no such event, consumer or key */
	TIDE_EFULL = -6,      /**< the log's map cannot grow, or the disk is full */
	TIDE_ESOCKET = -7,    /**< nanomsg endpoint error */
	TIDE_ESCRIPT = -8,    /**< a Lua script failed to load or run */
	TIDE_EEVENT = -9,     /**< an event was rejected as invalid */
	TIDE_ECONFIG = -10,   /**< invalid configuration */
	TIDE_EBUSY = -11,     /**< the data directory is in use by another engine */
	TIDE_ESTATE = -12,    /**< the engine is not in a state that allows this */
	TIDE_ECONFLICT = -13, /**< the subject's stream is not at the expected version */
};
/** @} */

/** Static, human-readable name of an error code; never NULL. */
TIDE_API const char *tide_strerror(int code);

/** Why the calling thread's last failing call failed: a sentence naming
 *  what was wrong, or tide_strerror() of the code when there is no more to
 *  say; "" before any failure.  Never NULL.  Valid until the thread's next
 *  failing call. */
TIDE_API const char *tide_errmsg(void);

/** The library's version, as TIDE_VERSION_STRING and TIDE_VERSION_NUM. */
TIDE_API const char *tide_version(void);
TIDE_API int tide_version_num(void);

/* ------------------------------------------------------------------------
 * Configuration
 * ------------------------------------------------------------------------ */

typedef struct tide_config tide_config;

/** Severity of a diagnostic passed to the log callback. */
enum { TIDE_LOG_ERROR = 0, TIDE_LOG_WARN = 1, TIDE_LOG_INFO = 2, TIDE_LOG_DEBUG = 3 };

/** Receives the engine's diagnostics.  @p msg is valid only during the call. */
typedef void tide_log_fn(void *ud, int level, const char *msg);

/** Create a configuration holding the defaults:
 *  data "./tide-data", durability "sync", sync_interval 1000 ms, ipc
 *  endpoints inside the data directory, no scripts, a 1 MiB event limit.
 *  @return TIDE_OK, TIDE_EINVAL (@p out NULL) or TIDE_ENOMEM. */
TIDE_API int tide_config_new(tide_config **out);

/** Free a configuration.  Accepts NULL. */
TIDE_API void tide_config_destroy(tide_config *cfg);

/** Set one option by name, exactly as the config file and the command line
 *  name it: "data", "durability" ("sync" or "relaxed"), "sync_interval"
 *  (ms), "pull", "rep", "pub" (nanomsg URLs, "" to disable), "http" (an
 *  HTTP listen address, "PORT" or "HOST:PORT"; off by default) and
 *  "http_token" (a bearer token POST /events must carry), "map_size"
 *  (bytes, or with a K/M/G suffix), "max_event_size", "max_message_size"
 *  (largest nanomsg message, default 16M: a larger one is refused with an
 *  answer up to twice the size; beyond that nanomsg closes the sender's
 *  connection), "turn_events"
 *  (events per group commit), "instruction_budget" (Lua instructions, and
 *  the work of library functions, per handler call; default 10 million;
 *  0 = none), "time_limit" (wall-clock time per handler call: seconds, like
 *  "5" or "0.5", or "2s", "500ms"; default 5 s; 0 = none), "memory_limit"
 *  (bytes for the scripts' Lua state; default 256M; 0 = none), "max_emits",
 *  "max_emit_depth" (emits in a chain from a published event, each emitted
 *  while handling the one before; default 64; 0 = 65535),
 *  "build_threads" (threads of a projection build; 0, the default, is one
 *  per CPU, at most 8; never more than 64; 1 keeps builds on the engine's
 *  thread), "consumer_thread" ("off", the default here; "busy", the
 *  default of `tide run`: while producers keep the engine busy, the
 *  consumers run on a thread of their own beside ingest; "always": as
 *  soon as they have anything to handle; never with projections,
 *  consumers added in C or a cluster, which keep them on the engine's
 *  thread; the log callback may then be called from that thread too),
 *  "log_level"; cluster mode over NATS JetStream (when built
 *  with libnats): "cluster" (NATS URLs, comma-separated; off by default),
 *  "cluster_node" (this node's name; default the host's), "cluster_stream"
 *  (default "TIDE"), "cluster_key" (partition key, default "subject", or a
 *  path like "data.card"), "cluster_partitions" (default 8),
 *  "cluster_replicas" (default 1) and "cluster_lease" (default 6 s);
 *  "param" ("NAME=VALUE": what tide.param(NAME, default) gives the
 *  scripts; each call adds one, and of several for a name the last wins).
 *  @p key and @p value are borrowed.
 *  @return TIDE_OK, TIDE_EINVAL (@p cfg, @p key or @p value NULL),
 *  TIDE_ECONFIG (unknown key or bad value) or TIDE_ENOMEM. */
TIDE_API int tide_config_set(tide_config *cfg, const char *key, const char *value);

/** Add a Lua script to load.  @p path is borrowed.  The order is kept.
 *  @return TIDE_OK, TIDE_EINVAL or TIDE_ENOMEM. */
TIDE_API int tide_config_add_script(tide_config *cfg, const char *path);

/** Read a Lua configuration file: globals named like tide_config_set() keys,
 *  plus `scripts = { ... }` and `endpoints = { pull=, rep=, pub= }`.
 *  Relative paths in it are resolved against the file's directory.  The
 *  file runs sandboxed like a script, under the default limits (10 million
 *  instructions, 5 seconds, 256 MiB) whatever it sets: code that loops or
 *  runs out of memory is a TIDE_ECONFIG error.
 *  @return TIDE_OK, TIDE_EINVAL (@p cfg or @p path NULL, or an empty
 *  script path in the file), TIDE_ENOMEM, or TIDE_ECONFIG (the file is
 *  unreadable, does not compile, fails, or sets something wrong). */
TIDE_API int tide_config_load(tide_config *cfg, const char *path);

/** Route diagnostics to @p fn (NULL silences them). */
TIDE_API void tide_config_set_log(tide_config *cfg, tide_log_fn *fn, void *ud);

/** Read back an option as text; valid until the next change to @p cfg. */
TIDE_API const char *tide_config_get(const tide_config *cfg, const char *key);

/* ------------------------------------------------------------------------
 * Events
 *
 * A tide_event is a read-only view of one CloudEvent, either stored in the
 * log (then seq > 0) or being handled.  It is always borrowed: valid only
 * for the duration of the callback or until the next step of the cursor
 * that produced it.
 * ------------------------------------------------------------------------ */

typedef struct tide_event tide_event;

/** Global log position, from 1 (0 for an event not yet stored). */
TIDE_API uint64_t tide_event_seq(const tide_event *ev);
/** Position in the subject's stream, from 1 (0 when there is no subject). */
TIDE_API uint64_t tide_event_version(const tide_event *ev);
/** Commit time, nanoseconds since the Unix epoch. */
TIDE_API int64_t tide_event_recorded(const tide_event *ev);
/** Event time: the instant the "time" attribute names (RFC 3339, any
 *  precision and offset), in nanoseconds since the Unix epoch, UTC.
 *  @return TIDE_OK, TIDE_ENOTFOUND (no time attribute), TIDE_EINVAL
 *  (@p ev or @p ns NULL, or a time before 1677 or after 2262, which
 *  int64 nanoseconds do not reach). */
TIDE_API int tide_event_time(const tide_event *ev, int64_t *ns);

/** A string attribute by name: "id", "source", "type", "subject", "time",
 *  "datacontenttype", "dataschema", "correlationid", "causationid", or an
 *  extension holding a string.  Returns NULL when absent; the result is
 *  NUL-terminated, valid as long as @p ev, and its length goes to @p len if
 *  not NULL. */
TIDE_API const char *tide_event_attr(const tide_event *ev, const char *name, size_t *len);

/** Encode @p ev as one line of JSON (no newline) with seq, version and
 *  recorded as top-level attributes.  The result is valid until the next
 *  call on the same engine or log handle, or until @p ev expires.
 *  @return TIDE_OK, TIDE_EINVAL (@p ev or @p json NULL, or a view the C
 *  API did not hand out), TIDE_EIO (the stored event is damaged) or
 *  TIDE_ENOMEM. */
TIDE_API int tide_event_json(const tide_event *ev, const char **json, size_t *len);

/* ------------------------------------------------------------------------
 * Engine
 * ------------------------------------------------------------------------ */

typedef struct tide_engine tide_engine;

/** Create an engine from @p cfg, which is copied (it may be destroyed
 *  afterwards).  Nothing is opened yet.
 *  @return TIDE_OK, TIDE_EINVAL or TIDE_ENOMEM. */
TIDE_API int tide_engine_new(tide_engine **out, const tide_config *cfg);

/** Open the log, load the scripts and bind the endpoints, attaching to
 *  @p base (borrowed; it must outlive the engine) or to a base of the
 *  engine's own when NULL.  A missing data directory is created 0700 and
 *  the files the engine creates in it are 0600 (an existing directory
 *  keeps its mode).  A damaged log (data.mdb truncated, or missing or
 *  empty where a log was) is refused with TIDE_EIO; tide_errmsg() says
 *  what to do.
 *  @return TIDE_OK or TIDE_EINVAL (@p e NULL), TIDE_ESTATE (already
 *  open), TIDE_EIO, TIDE_EFORMAT, TIDE_EFULL (the disk or the map is full
 *  while the log is prepared), TIDE_EBUSY, TIDE_ESOCKET, TIDE_ESCRIPT,
 *  TIDE_ECONFIG, TIDE_ENOMEM; tide_errmsg() tells why. */
TIDE_API int tide_engine_open(tide_engine *e, struct event_base *base);

/** Run the engine's own event_base until tide_engine_stop().  Only for an
 *  engine opened with a NULL base.  @return TIDE_OK, TIDE_EINVAL (@p e
 *  NULL), TIDE_ESTATE (not open, or on a borrowed base) or TIDE_EIO (the
 *  event loop failed). */
TIDE_API int tide_engine_run(tide_engine *e);

/** Ask the engine to stop: the current loop turn finishes and commits,
 *  pending replies are sent, then the stop notice (tide_engine_on_stop())
 *  is given and tide_engine_run() returns.  Safe to call from a signal
 *  handler of the loop's thread or from another thread. */
TIDE_API void tide_engine_stop(tide_engine *e);

/** Load the configured scripts again, in a fresh Lua state, and switch to
 *  it.  Call it from the event loop between turns (e.g. a signal event),
 *  not from a handler or the log callback (TIDE_ESTATE).  The new scripts
 *  go on from the committed checkpoints: no event is lost or handled
 *  twice.  A projection whose definition changed (its version, or the
 *  text of the script file that defines it; bump the version when only a
 *  required module changed) is rebuilt while its old state is served.  If
 *  a script fails to load, the running ones stay.
 *  @return TIDE_OK, or TIDE_EINVAL (@p e NULL), TIDE_ESCRIPT, TIDE_ESTATE,
 *  TIDE_ENOMEM, TIDE_EIO, TIDE_EFULL (no room for a rebuilt projection)
 *  with tide_errmsg() telling why. */
TIDE_API int tide_engine_reload(tide_engine *e);

/** Close sockets and the log and free the engine (a stop that was not
 *  asked for first is done now, without a notice).  Accepts NULL.  May be
 *  called from the stop notice; never from a handler, a publish
 *  completion callback or the log callback. */
TIDE_API void tide_engine_destroy(tide_engine *e);

/** For whoever ends a process whose engine is stuck or crashing (a
 *  watchdog thread after a stop request went unanswered, a SIGSEGV
 *  handler): record in the data directory why the process ends.  An event
 *  whose handler was running then is set aside at the next start (sent to
 *  the dead letters with that reason, or its projection stops there)
 *  instead of being run again; an event the engine merely died on three
 *  times in a row (kill -9 during its handler) is set aside too.  @p sig is
 *  0 when the engine hung, else the signal it crashed with.
 *  Async-signal-safe; may be called from any thread.
 *  @return 1 if a handler was running, else 0. */
TIDE_API int tide_engine_postmortem(tide_engine *e, int sig);

/** The event_base the engine runs on (its own or the adopted one). */
TIDE_API struct event_base *tide_engine_base(tide_engine *e);

/** Outcome of one published event (tide_publish_mt() may also answer
 *  TIDE_ENOMEM in code). */
typedef struct tide_result {
	int code;      /**< TIDE_OK, TIDE_EEVENT (invalid), TIDE_ECONFLICT, TIDE_EFULL, TIDE_EIO */
	int duplicate; /**< 1 when (source, id) was already in the log */
	uint64_t seq;  /**< the event's position (the original one for duplicates) */
	uint64_t version;  /**< its stream version; for TIDE_ECONFLICT the current one */
	const char *error; /**< what is wrong when code != TIDE_OK; valid during the callback */
} tide_result;

/** Called once per event after the turn's commit (after fsync in "sync"). */
typedef void tide_publish_fn(void *ud, const tide_result *res);

/** Publish events from C: @p json holds one CloudEvent, a JSON array of
 *  them, or NDJSON.  The text is copied.  They commit with the current loop
 *  turn; @p fn (may be NULL) then receives one result per event, in order.
 *  May be called from a completion callback (the events go in the next
 *  turn), not from a C consumer: the turn has taken its events by then,
 *  so that is refused with TIDE_ESTATE (a consumer emits with tide_emit()).
 *  @return TIDE_OK (results follow), TIDE_EINVAL (@p e or @p json NULL),
 *  TIDE_ESTATE (not open, stopping, or inside a C consumer), TIDE_ENOMEM,
 *  or TIDE_EEVENT when more than 10,000 of the events are invalid: the
 *  text is then refused whole and nothing of it is stored. */
TIDE_API int tide_publish(tide_engine *e, const char *json, size_t len, tide_publish_fn *fn,
			  void *ud);

/** tide_publish() for any thread: the text is copied into a queue that
 *  the engine's loop drains (it is woken through a pipe, so the event_base
 *  needs no libevent threading support).  @p fn runs later on the loop's
 *  thread, exactly as for tide_publish(); events queued from one thread
 *  are stored in the order queued.  What tide_publish() would refuse at
 *  the call reaches @p fn instead, as one result: TIDE_EEVENT for a text
 *  of more than 10,000 invalid events, or TIDE_ENOMEM.  A stop stores what
 *  is queued in its last turn and refuses every later call: nothing is
 *  dropped without an answer.  Call it only once tide_engine_open() has
 *  returned, and join the threads that call it before
 *  tide_engine_destroy() (also when the stop notice destroys the engine):
 *  a call may not overlap the destroy.
 *  A failure leaves its detail for tide_errmsg() on the calling
 *  thread.
 *  @return TIDE_OK (results follow), TIDE_EINVAL, TIDE_ESTATE (not open or
 *  stopping), TIDE_ENOMEM, or TIDE_EFULL when the text would take the
 *  bytes queued and not yet taken by the loop past max_message_size (an
 *  empty queue takes any text): try again later. */
TIDE_API int tide_publish_mt(tide_engine *e, const char *json, size_t len, tide_publish_fn *fn,
			     void *ud);

/** Called once, on the loop's thread, when a stop asked for with
 *  tide_engine_stop() has finished: the last turn committed and every
 *  waiting producer was answered; after it the engine writes nothing
 *  more.  For an engine on a borrowed base this is the moment to
 *  tide_engine_destroy() it (which may be done from the callback) and,
 *  for example, to leave the loop.  An engine on its own base gives the
 *  notice from tide_engine_run(), just before it returns (so not when the
 *  embedder runs that base itself).  A stop asked for before
 *  tide_engine_open() returned is ignored. */
typedef void tide_stop_fn(void *ud, tide_engine *e);

/** Set (or with NULL clear) the stop notice of @p e.
 *  @return TIDE_OK or TIDE_EINVAL. */
TIDE_API int tide_engine_on_stop(tide_engine *e, tide_stop_fn *fn, void *ud);

/** C consumer: called for each matching event, in log order.
 *
 *  When: during the engine's turn, inside its LMDB write transaction,
 *  after the turn's events were appended and before the commit; that is
 *  what makes a consumer's effects exactly-once: its checkpoint, its
 *  tide_emit() events and its tide_once() claims commit together, or not
 *  at all (a crash before the commit hands it the same events again).
 *  Effects outside the log (a socket write, a file) may therefore happen
 *  again after a crash; make them idempotent (the event's id is a key
 *  for that), and guard them with tide_once() against retries.
 *
 *  Return TIDE_OK to move the checkpoint past the event; anything else is
 *  a failure, retried with backoff and finally sent to the dead letters
 *  (tide_consumer_opts).
 *
 *  Inside the callback, do not: block or wait for I/O (the write
 *  transaction, and every producer, waits for it); call tide_publish(),
 *  tide_engine_reload(), tide_engine_query() or tide_engine_destroy()
 *  (refused with TIDE_ESTATE, or undefined for destroy); open the same
 *  log with tide_log_open() and write to it; keep @p ev or pointers taken
 *  from it after returning.  Reading, computing, tide_emit(), tide_once()
 *  and tide_event_*() are what it is for. */
typedef int tide_consumer_fn(void *ud, const tide_event *ev);

/** Where a new consumer starts when it has no checkpoint yet. */
enum { TIDE_FROM_END = 0, TIDE_FROM_BEGINNING = 1 };

/** A consumer's options, as tide.on's.  Start from TIDE_CONSUMER_OPTS_INIT
 *  (or pass NULL): -1 means the default. */
typedef struct tide_consumer_opts {
	int from;               /**< TIDE_FROM_END (default) or TIDE_FROM_BEGINNING */
	int retries;            /**< tries after the first failure: 0 to 1000 (default 3) */
	int64_t backoff_ms;     /**< wait before the first retry, doubling (default 500) */
	int64_t backoff_max_ms; /**< the longest wait (default 60000) */
	int ordered; /**< 1 (default): a subject's later events wait behind its retry; 0: no */
} tide_consumer_opts;

#define TIDE_CONSUMER_OPTS_INIT \
	{ \
		TIDE_FROM_END, -1, -1, -1, -1 \
	}

/** Register a C consumer named @p name (its durable checkpoint key) for
 *  event types matching @p pattern ("order.placed", "order.*" or "*"),
 *  with options @p opts (NULL: the defaults; copied).  Call between
 *  tide_engine_new() and tide_engine_open().  Strings are copied.
 *  @return TIDE_OK, TIDE_EINVAL (a bad name, pattern or option, or a name
 *  already taken), TIDE_ESTATE (the engine is open) or TIDE_ENOMEM. */
TIDE_API int tide_consumer_add(tide_engine *e, const char *name, const char *pattern,
			       const tide_consumer_opts *opts, tide_consumer_fn *fn, void *ud);

/** From a C consumer, emit one event (@p json: one CloudEvent, or a JSON
 *  array or NDJSON of several) caused by @p ev, the event being handled.
 *  As tide.emit: the events are appended only if the consumer returns
 *  TIDE_OK, in the same transaction as its checkpoint, so each is stored
 *  exactly once; source defaults to "/tide/<consumer>", id to
 *  "<seq>.<n>", causationid and correlationid to @p ev's.  The same limits
 *  apply (max_emits per call, max_emit_depth, max_event_size).
 *  @return TIDE_OK, TIDE_EINVAL, TIDE_ESTATE (@p ev is not an event a C
 *  consumer is handling now), TIDE_EEVENT (invalid, too large, too many or
 *  too deep: nothing of @p json is kept), TIDE_ENOMEM. */
TIDE_API int tide_emit(const tide_event *ev, const char *json, size_t len);

/** From a C consumer: claim @p key (@p len bytes, any bytes) for the
 *  consumer handling @p ev.  *first is 1 the first time the key is ever
 *  claimed by this consumer, else 0.  The claim is written at once: it
 *  stays when the consumer then fails, and a turn the engine runs again
 *  (the map had to grow) does not grant it twice, so an effect guarded by
 *  it is not repeated by retries.  It commits with the turn: only a crash
 *  between the effect and that commit can repeat the effect.
 *  @return TIDE_OK, TIDE_EINVAL, TIDE_ESTATE (as for tide_emit()),
 *  TIDE_EFULL, TIDE_EIO. */
TIDE_API int tide_once(const tide_event *ev, const void *key, size_t len, int *first);

/* ------------------------------------------------------------------------
 * Reading an event's data and extensions without parsing JSON
 *
 * Data is stored in a compact binary form; these read it in place.
 * ------------------------------------------------------------------------ */

/** Types of a tide_value. */
enum {
	TIDE_NULL = 0,
	TIDE_BOOL = 1,
	TIDE_INT = 2,    /**< 64-bit integer (JSON numbers without fraction or exponent) */
	TIDE_DOUBLE = 3, /**< other numbers */
	TIDE_STRING = 4,
	TIDE_BINARY = 5, /**< data_base64 */
	TIDE_ARRAY = 6,
	TIDE_OBJECT = 7,
};

/** A value read in place (nothing is copied): valid as long as the event
 *  it came from. */
typedef struct tide_value {
	int type;             /**< TIDE_NULL ... TIDE_OBJECT */
	int boolean;          /**< TIDE_BOOL: 0 or 1 */
	int64_t i;            /**< TIDE_INT; also set for TIDE_DOUBLE, truncated toward
			       *   zero (clamped to INT64_MIN..INT64_MAX, 0 for NaN) */
	double d;             /**< TIDE_DOUBLE; also set for TIDE_INT */
	const char *s;        /**< TIDE_STRING, TIDE_BINARY: the bytes, not NUL-terminated
			       *   (a string may hold NUL bytes) */
	size_t len;           /**< bytes of s; elements (ARRAY) or members (OBJECT) */
	const void *at, *end; /**< internal: for an ARRAY or OBJECT, the encoding of its
			       *   elements, first to last, which lookups and iteration
			       *   never leave */
} tide_value;

/** The value at @p path in @p ev.  A path is segments joined by '.', none
 *  of them empty.  The first names a root: "data" (the event's data),
 *  a context attribute ("subject", "type", "specversion", ...) as a
 *  TIDE_STRING, or an extension attribute ("tenant") with its own type.
 *  Each further segment names a member of an object, or, in decimal, an
 *  element of an array (from 0): "data.amount", "data.items.0.sku".
 *  A member whose name holds a '.' is reached with tide_value_next().
 *  On failure *out is left as it was.
 *  @return TIDE_OK, TIDE_ENOTFOUND (a step is missing, is past the end of
 *  an array, or looks inside what is not an array or object; the event
 *  has no data), TIDE_EINVAL (@p path NULL, empty or with an empty
 *  segment; @p ev or @p out NULL), TIDE_EIO (the record is damaged). */
TIDE_API int tide_event_value(const tide_event *ev, const char *path, tide_value *out);

/** Member @p path (dotted, as above but relative: "items.0.sku") of
 *  object or array @p v.  @p out may be @p v.
 *  @return as tide_event_value(); TIDE_ENOTFOUND when @p v is a scalar. */
TIDE_API int tide_value_get(const tide_value *v, const char *path, tide_value *out);

/** The @p k-th element (from 0) of array @p v, or the @p k-th member of
 *  object @p v with its name in *name and *nlen (each may be NULL; the
 *  name is not NUL-terminated; for an array *name is NULL and *nlen 0).
 *  O(k); tide_value_next() walks them all in O(n).  @p out may be @p v.
 *  @return TIDE_OK, TIDE_ENOTFOUND (k is past the end), TIDE_EINVAL (not a
 *  container), TIDE_EIO. */
TIDE_API int tide_value_at(const tide_value *v, size_t k, const char **name, size_t *nlen,
			   tide_value *out);

/** Iterate array or object @p v in stored order: start with *it = 0; each
 *  call gives the next element (and member name, as tide_value_at())
 *  and advances *it, an opaque position.  Keep @p v as it was for the
 *  next call (@p out must not be @p v to go on).
 *  @return TIDE_OK, TIDE_ENOTFOUND at the end, TIDE_EINVAL (not a
 *  container, or *it not from a walk of @p v), TIDE_EIO. */
TIDE_API int tide_value_next(const tide_value *v, size_t *it, const char **name, size_t *nlen,
			     tide_value *out);

/** @p ev's data as JSON text, NUL-terminated (base64 in a JSON string for
 *  binary data), encoded from the stored form, not parsed: the same text
 *  tide_event_json() writes as "data" or "data_base64".  Valid until the
 *  next tide_event_data() or tide_event_json() on an event from the same
 *  source (the consumer callback, the cursor), or until @p ev expires.
 *  @p len may be NULL.
 *  @return TIDE_OK, TIDE_ENOTFOUND (the event has no data), TIDE_EINVAL,
 *  TIDE_ENOMEM, TIDE_EIO. */
TIDE_API int tide_event_data(const tide_event *ev, const char **json, size_t *len);

/* ------------------------------------------------------------------------
 * Reading the log directly (also from another process while the daemon
 * writes).
 * ------------------------------------------------------------------------ */

typedef struct tide_log tide_log;
typedef struct tide_cursor tide_cursor;

/** Open the log in data directory @p dir read-only.
 *  @return TIDE_OK, TIDE_EINVAL (@p out or @p dir NULL), TIDE_ENOMEM,
 *  TIDE_ENOTFOUND (no log there), TIDE_EFORMAT, TIDE_EIO
 *  (among others: data.mdb is shorter than the pages it uses, or is
 *  missing or empty where the directory's marker says a log was; nothing
 *  of such a file is read).
 *  On failure *out is NULL. */
TIDE_API int tide_log_open(tide_log **out, const char *dir);

/** Close a log handle.  Accepts NULL. */
TIDE_API void tide_log_close(tide_log *log);

/** What a cursor returns.  Zero fields mean "no constraint". */
typedef struct tide_filter {
	uint64_t from;       /**< first seq (default 1) */
	uint64_t until;      /**< last seq, inclusive (default: the end) */
	const char *subject; /**< only this stream, in version order */
	const char *type;    /**< exact type or "prefix.*" */
} tide_filter;

/** Open a cursor over a snapshot of the log.  @p f is copied.
 *  @return TIDE_OK, TIDE_EINVAL (@p log or @p out NULL), TIDE_EIO or
 *  TIDE_ENOMEM. */
TIDE_API int tide_cursor_open(tide_log *log, const tide_filter *f, tide_cursor **out);

/** Step to the next matching event; *ev is valid until the next step or
 *  tide_cursor_close().  @return TIDE_OK, TIDE_ENOTFOUND at the end,
 *  TIDE_EINVAL (@p cur or @p ev NULL), TIDE_EIO (a damaged event). */
TIDE_API int tide_cursor_next(tide_cursor *cur, const tide_event **ev);

/** Close a cursor.  Accepts NULL. */
TIDE_API void tide_cursor_close(tide_cursor *cur);

/** Size and positions of a log. */
typedef struct tide_log_stat {
	uint64_t events;   /**< events stored */
	uint64_t last_seq; /**< highest seq */
	uint64_t size;     /**< bytes in use by the log's pages */
	uint64_t map_size; /**< current map size in bytes */
	uint64_t streams;  /**< distinct subjects */
} tide_log_stat;

/** Fill @p st.  @return TIDE_OK, TIDE_EINVAL (@p log or @p st NULL) or
 *  TIDE_EIO. */
TIDE_API int tide_log_stat_get(tide_log *log, tide_log_stat *st);

/** What a rule (a consumer with a key, a clock, windows or timers) keeps. */
typedef struct tide_rule_info {
	int64_t watermark; /**< its clock, ns since the epoch (INT64_MIN before an event) */
	uint64_t late;     /**< events older than the watermark when they came */
	uint64_t fired;    /**< timers that fired */
	uint64_t failed;   /**< handler and timer calls that failed */
	uint64_t keys;     /**< keys with a state */
	uint64_t timers;   /**< timers waiting, its own (expiry, windows) included */
} tide_rule_info;

/** The clock and counters of rule @p consumer.
 *  @return TIDE_OK, TIDE_ENOTFOUND (not a rule, or it has not run yet),
 *  TIDE_EINVAL (an argument NULL), TIDE_ENOMEM or TIDE_EIO. */
TIDE_API int tide_log_rule_info(tide_log *log, const char *consumer, tide_rule_info *out);

/** Called once per consumer checkpoint by tide_log_consumers(). */
typedef void tide_checkpoint_fn(void *ud, const char *name, uint64_t seq);

/** List the durable consumer checkpoints.  @return TIDE_OK, TIDE_EINVAL
 *  (@p log or @p fn NULL), TIDE_ENOMEM or TIDE_EIO. */
TIDE_API int tide_log_consumers(tide_log *log, tide_checkpoint_fn *fn, void *ud);

/** How many events consumer @p name is retrying or holding back behind a
 *  retry (*pending), and how many it gave up on (*dead).
 *  @return TIDE_OK, TIDE_EINVAL (@p log or @p name NULL) or TIDE_EIO. */
TIDE_API int tide_log_consumer_backlog(tide_log *log, const char *name, uint64_t *pending,
				       uint64_t *dead);

/* ------------------------------------------------------------------------
 * Projections: state per key folded from the log (tide.projection)
 * ------------------------------------------------------------------------ */

/** Receives one key and its state as JSON (both valid during the call);
 *  return non-zero to stop. */
typedef int tide_state_fn(void *ud, const char *key, size_t klen, const char *json, size_t jlen);

/** Query projection @p name: the state of @p key, or (with @p key NULL)
 *  of every key starting with @p prefix (NULL: every key), at most
 *  @p limit of them (0: no limit), in key order.  Reads a snapshot: never
 *  waits for the engine.  @p fn may be NULL: then only the result says
 *  whether the projection (or the key) exists.
 *  @return TIDE_OK, TIDE_EINVAL (@p log or @p name NULL), TIDE_ENOTFOUND
 *  (no such projection, or no state for @p key), TIDE_ESTATE (still being
 *  built for the first time), TIDE_EIO. */
TIDE_API int tide_log_query(tide_log *log, const char *name, const char *key, const char *prefix,
			    size_t limit, tide_state_fn *fn, void *ud);

/** The same on a running engine's log, from the engine's thread but not
 *  from a C consumer.  @return as tide_log_query(), and TIDE_ESTATE when
 *  the engine is not open or a turn runs. */
TIDE_API int tide_engine_query(tide_engine *e, const char *name, const char *key,
			       const char *prefix, size_t limit, tide_state_fn *fn, void *ud);

/** Progress of one projection.  Strings are valid during the callback. */
typedef struct tide_projection_info {
	const char *name;
	uint64_t live_seq;  /**< events applied to the state queries read */
	uint64_t build_seq; /**< events applied to the state being rebuilt */
	int building;       /**< a rebuild is under way (queries read the old state) */
	int serving;        /**< there is a state to query (0 before the first build) */
	int faulted;        /**< stopped: a handler failed at fault_seq */
	uint64_t fault_seq;
	const char *error;
} tide_projection_info;

typedef void tide_projection_fn(void *ud, const tide_projection_info *pi);

/** List the projections recorded in the log.  @return TIDE_OK, TIDE_EINVAL
 *  (@p log or @p fn NULL), TIDE_ENOMEM or TIDE_EIO. */
TIDE_API int tide_log_projections(tide_log *log, tide_projection_fn *fn, void *ud);

/** Rebuild projection @p name from the log the next time an engine runs
 *  in @p dir (no engine may run there now: TIDE_EBUSY; a running engine
 *  takes {"command":"projection","op":"rebuild","name":NAME} on REP).
 *  @return TIDE_OK, TIDE_EINVAL (@p dir or @p name NULL), TIDE_ENOTFOUND
 *  (no log, or no such projection), TIDE_EBUSY, TIDE_EFORMAT, TIDE_EFULL,
 *  TIDE_ENOMEM, TIDE_EIO. */
TIDE_API int tide_projection_rebuild(const char *dir, const char *name);

/* ------------------------------------------------------------------------
 * Replay: run scripts over stored history without side effects
 * ------------------------------------------------------------------------ */

/** What a replay reports. */
enum {
	TIDE_REPLAY_STATE = 1, /**< a projection's state for one key, at the end */
	TIDE_REPLAY_EMIT = 2,  /**< an event a consumer would have emitted */
	TIDE_REPLAY_ERROR = 3, /**< a handler failed on an event */
};

typedef struct tide_replay_item {
	int kind;         /**< TIDE_REPLAY_* */
	const char *name; /**< the projection (STATE) or consumer (EMIT, ERROR) */
	const char *key;  /**< STATE: the key */
	size_t klen;
	const char *json; /**< STATE: the state; EMIT: the event; ERROR: the message */
	size_t len;
	uint64_t seq; /**< EMIT, ERROR: the event handled */
} tide_replay_item;

/** Receives each item (valid during the call); non-zero stops the replay. */
typedef int tide_replay_fn(void *ud, const tide_replay_item *it);

typedef struct tide_replay_opts {
	const char *data;           /**< data directory of the log */
	const char *const *scripts; /**< scripts to run, NULL-terminated */
	uint64_t until;             /**< last seq to replay (0: the end of the log) */
	int64_t until_time;         /**< or: last event recorded at or before this (ns; 0: none) */
	const char *projection;     /**< only this projection (NULL: every one) */
	/** Called now and then with the events done and the total (may be NULL). */
	void (*progress)(void *ud, uint64_t done, uint64_t total);
	void *progress_ud;
} tide_replay_opts;

/** Run the scripts' consumers and projections over the log from seq 1 to
 *  the chosen point, entirely in memory: the log, the live state and the
 *  checkpoints are only read.  Projections report their state per key at
 *  the end (in key order); consumers report what they would emit.
 *  @return TIDE_OK, TIDE_EINVAL (no options, data directory or scripts),
 *  TIDE_ENOTFOUND (no log), TIDE_EFORMAT, TIDE_ESCRIPT, TIDE_ENOMEM,
 *  TIDE_EIO. */
TIDE_API int tide_replay(const tide_replay_opts *o, tide_replay_fn *fn, void *ud);

/* ------------------------------------------------------------------------
 * Backtests: scripts over past events, as live, on a log of their own
 * ------------------------------------------------------------------------ */

typedef struct tide_backtest_opts {
	const char *const *scripts;    /**< scripts to run, NULL-terminated */
	const char *input;             /**< NDJSON events ("-": stdin), or NULL for the log */
	const char *data;              /**< the log to read when @p input is NULL */
	uint64_t from_seq, until_seq;  /**< of the stored log (0: its start, its end) */
	int64_t from_time, until_time; /**< event time bounds, ns (0: none) */
	/** Scoring: a path to a label in each input event ("data.is_fraud": true,
	 *  1 or "1" is positive), and/or a file of the ids of the positive
	 *  events, one per line; NULL for none.  An event is flagged when an
	 *  emitted event of type @p alerts (a pattern; NULL: "*") descends from
	 *  it. */
	const char *label;
	const char *labels_file;
	const char *alerts;
	/** Score only the input events of this stretch of event time (ns; 0:
	 *  unbounded): the rules run over everything, history included. */
	int64_t score_from, score_until;
	/** NAB scoring: NAB's windows file (labels/combined_windows.json); each
	 *  input subject is a series named as in it (e.g.
	 *  "realKnownCause/nyc_taxi.csv"), and a flagged reading is a
	 *  detection.  @p nab_profile: "standard" (NULL), "reward_low_FP_rate"
	 *  or "reward_low_FN_rate". */
	const char *nab_windows;
	const char *nab_profile;
	/** "name=value" overrides of the scripts' tide.param(name, default),
	 *  NULL-terminated; may be NULL. */
	const char *const *sets;
	/** Called now and then with the input events done (may be NULL). */
	void (*progress)(void *ud, uint64_t done);
	void *progress_ud;
	/** Sweeps: "name=v1,v2,..." strings, NULL-terminated; may be NULL.
	 *  Each combination of one value of every sweep is a variant, run with
	 *  @p sets and then its own values (which win over a set of the same
	 *  name), on a scratch log, consumers and projections of its own; the
	 *  input is read once for all of them.  A variant emits and scores
	 *  what a backtest with its values given in @p sets would.  The last
	 *  sweep's values change fastest; 64 variants at most. */
	const char *const *sweeps;
	/** Variants that run at once, each on a thread (0: one per CPU; 1: one
	 *  after the other, on the calling thread).  What they report is the
	 *  same either way. */
	unsigned threads;
} tide_backtest_opts;

/** What tide_backtest() reports. */
enum {
	TIDE_BACKTEST_EMIT,  /**< an emitted event (ev, consumer), in log order */
	TIDE_BACKTEST_COUNT, /**< emitted events of one type by one consumer (count) */
	TIDE_BACKTEST_SCORE, /**< scores: overall (consumer "") then per consumer */
	TIDE_BACKTEST_DONE,  /**< the totals: count = input events, tp = rejected
				  ones, fp = emitted events */
	TIDE_BACKTEST_STATE, /**< a projection's state at the end: consumer = the
				  projection, type = the key, json */
	TIDE_BACKTEST_NAB,   /**< NAB: a series (type = its name) with its raw
				  score, then the total (type "") with NAB's
				  normalised score; tp = windows detected, fp =
				  false detections, fn = windows missed */
	TIDE_BACKTEST_RULE,  /**< a rule's state at the end: consumer = the rule,
				  type = the key, json (keys with no state are
				  left out) */
};

/** One item.  Everything is valid only during the callback. */
typedef struct tide_backtest_item {
	int kind;
	const tide_event *ev;         /**< EMIT */
	const char *consumer;         /**< who emitted (EMIT, COUNT), whose score (SCORE) */
	const char *type;             /**< COUNT */
	uint64_t count;               /**< COUNT; DONE: input events */
	uint64_t tp, fp, fn;          /**< SCORE: flagged positives, flagged negatives,
					   positives not flagged; DONE: see above */
	double precision, recall, f1; /**< SCORE (NAN when undefined) */
	const char *json;             /**< STATE, RULE: the state as JSON, @p len bytes */
	size_t len;
	double score; /**< NAB: raw (a series) or normalised (the total) */
	/** Sweeping: the variant the item is of, its values as "name=v1
	 *  other=v2" (in the order of the sweeps); NULL otherwise.  A variant's
	 *  items all come before the next variant's, each with its own DONE. */
	const char *variant;
} tide_backtest_item;

typedef void tide_backtest_fn(void *ud, const tide_backtest_item *it);

/** Run the scripts over past events on a scratch log of their own: the
 *  input is appended in batches and the consumers and projections run
 *  over it turn by turn with the code of a live engine (emits reach
 *  projections and other consumers, timers and windows follow event
 *  time), so what they emit is what they would emit live.  Nothing is
 *  written to the log read.  With sweeps, each variant is reported in
 *  turn once the input is done (EMIT items included).  It runs on the
 *  calling thread, @p fn and progress too; @p o and what it points to are
 *  borrowed for the call.
 *  @return TIDE_OK, TIDE_EINVAL (missing options, or sweeps that are not
 *  NAME=V1,V2,..., have an empty value, sweep a name twice or make more
 *  than 64 variants), TIDE_ENOTFOUND (no log, or no input file),
 *  TIDE_ESCRIPT (a script did not load), TIDE_ENOMEM, TIDE_EIO. */
TIDE_API int tide_backtest(const tide_backtest_opts *o, tide_backtest_fn *fn, void *ud);

/** Check @p sweeps as tide_backtest() would (NULL-terminated
 *  "name=v1,v2,..." strings; NULL for none) without running anything,
 *  and the number of variants they make through @p variants (1 for no
 *  sweeps; may be NULL).  @return TIDE_OK or TIDE_EINVAL, with
 *  tide_errmsg() saying what is wrong.  Any thread. */
TIDE_API int tide_backtest_sweep_count(const char *const *sweeps, size_t *variants);

/* ------------------------------------------------------------------------
 * Checking scripts without running them
 * ------------------------------------------------------------------------ */

/** What tide_check() reports, in this order for each script: the script,
 *  then its errors or what it defines. */
enum {
	TIDE_CHECK_SCRIPT,     /**< a script: name is its path */
	TIDE_CHECK_ERROR,      /**< an error: detail, with file:line where known */
	TIDE_CHECK_CONSUMER,   /**< a consumer: name; detail its types (and, for a
				    rule, its key, ttl and clock) */
	TIDE_CHECK_WINDOW,     /**< a rule's window: owner the rule, name, detail */
	TIDE_CHECK_TIMER,      /**< a rule's timer handler: owner the rule, name */
	TIDE_CHECK_PROJECTION, /**< a projection: name; detail its version, key and
				    the types it handles */
};

/** One item.  Everything is valid only during the callback. */
typedef struct tide_check_item {
	int kind;           /**< TIDE_CHECK_* */
	const char *script; /**< the script it is about */
	const char *name;   /**< NULL for an error */
	const char *owner;  /**< windows and timers: their rule; else NULL */
	const char *detail; /**< see the kinds; NULL for a script or a timer */
	const char *where;  /**< file:line of a definition, or NULL */
} tide_check_item;

/** Called for each item. */
typedef void tide_check_fn(void *ud, const tide_check_item *it);

/** Load @p scripts (NULL-terminated) in order into one sandbox, as
 *  `tide run` does, without a log or an engine, and report each script's
 *  errors (all scripts are loaded, whatever failed before) or what it
 *  defines.  @return TIDE_OK when every script loaded, TIDE_ESCRIPT when
 *  some did not (the errors were reported), TIDE_EINVAL (no scripts or no
 *  @p fn) or TIDE_ENOMEM. */
TIDE_API int tide_check(const char *const *scripts, tide_check_fn *fn, void *ud);

/* ------------------------------------------------------------------------
 * Test files in Lua: cases that send events and check what came out
 * ------------------------------------------------------------------------ */

typedef struct tide_test_opts {
	const char *const *scripts; /**< scripts under test, NULL-terminated */
	const char *const *sets;    /**< "name=value" for tide.param, or NULL */
	const char *file;           /**< the test file (Lua) */
} tide_test_opts;

/** One case of a test file.  Valid only during the callback. */
typedef struct tide_test_result {
	const char *name;    /**< as test(name, ...) gave it */
	int passed;          /**< 1 passed, 0 failed */
	const char *message; /**< why it failed (file:line: ...), or NULL */
	uint64_t emitted;    /**< events the scripts emitted in its last run */
} tide_test_result;

typedef void tide_test_fn(void *ud, const tide_test_result *r);

/** Run the test file @p o->file: each `test(name, function(t) ... end)`
 *  it declares is a case, which sends events with `t:send{...}` and
 *  checks what the scripts emit and the projections' and rules' states
 *  (`t:emitted()`, `t:state()`, `t:rule()`, `t:eq()`, `t:expect()`), the
 *  scripts running over the events sent as tide_backtest() runs them.
 *  @p fn is called once per case.  @return TIDE_OK (whatever the cases
 *  gave), TIDE_ESCRIPT (the file did not load: see tide_errmsg()),
 *  TIDE_EINVAL, TIDE_ENOMEM. */
TIDE_API int tide_test_lua(const tide_test_opts *o, tide_test_fn *fn, void *ud);

/* ------------------------------------------------------------------------
 * Dead letters: events a consumer gave up on after its retries
 * ------------------------------------------------------------------------ */

/** One dead letter.  Everything is valid only during the callback. */
typedef struct tide_dead_letter {
	const char *consumer;
	uint64_t seq;
	uint32_t attempts;       /**< tries so far */
	int64_t failed_at;       /**< last failure, ns since the epoch */
	const char *where;       /**< script:line of the failure, or "" */
	const char *error;       /**< the error message */
	const tide_event *event; /**< the event itself (NULL if unreadable) */
	int retrying;            /**< a retry is requested and not yet resolved */
} tide_dead_letter;

/** Return non-zero to stop the listing. */
typedef int tide_dead_letter_fn(void *ud, const tide_dead_letter *dl);

/** List dead letters of @p consumer (NULL: every consumer), only at @p seq
 *  unless it is 0.  The callback may call other readers of @p log.
 *  @return TIDE_OK, TIDE_EINVAL (@p log or @p fn NULL), TIDE_ENOMEM or
 *  TIDE_EIO. */
TIDE_API int tide_log_dead_letters(tide_log *log, const char *consumer, uint64_t seq,
				   tide_dead_letter_fn *fn, void *ud);

/** What to do with dead letters. */
enum { TIDE_DLQ_RETRY = 1, TIDE_DLQ_DROP = 2 };

/** Retry (hand back to the consumer, which handles them when it runs; they
 *  leave the store only when a retry succeeds) or drop the dead letters of
 *  @p consumer (NULL: all) at @p seq (0: all), in data directory @p dir
 *  while no engine runs there.  A running engine takes the same request
 *  on its REP endpoint: {"command":"dlq","op":"retry"|"drop",
 *  "consumer":NAME,"seq":N}.
 *  @return TIDE_OK (*count tells how many), TIDE_EINVAL (@p dir NULL, or
 *  a bad @p op or @p consumer), TIDE_EBUSY (an engine runs: ask it),
 *  TIDE_ENOTFOUND (no log), TIDE_EFORMAT, TIDE_EFULL, TIDE_ENOMEM,
 *  TIDE_EIO. */
TIDE_API int tide_dlq_apply(const char *dir, int op, const char *consumer, uint64_t seq,
			    uint64_t *count);

/* ------------------------------------------------------------------------
 * Checking and copying a log (both also while an engine runs)
 * ------------------------------------------------------------------------ */

/** What tide_log_verify() reports. */
enum {
	TIDE_VERIFY_PROBLEM = 1,  /**< something is wrong with one record */
	TIDE_VERIFY_DATABASE = 2, /**< the tally of one database, after the walk */
};

/** One item of a verification.  Strings are valid during the callback. */
typedef struct tide_verify_item {
	int kind;       /**< TIDE_VERIFY_* */
	const char *db; /**< "file" (data.mdb itself), "meta", "events", "ids", "streams",
			     "consumers", "pending", "dead", "once", "projections", "state",
			     or "free" (LMDB's list of free pages) */
	/* PROBLEM */
	const char *key;  /**< the record's key, printable (other bytes as \xNN), or "" */
	uint64_t seq;     /**< the seq the problem is about, or 0 */
	const char *what; /**< what is wrong */
	/* DATABASE */
	uint64_t entries;  /**< records read (for "file": the pages in use) */
	uint64_t problems; /**< problems reported for it */
	int complete;      /**< 0 if the walk stopped early (unreadable or crashed) */
} tide_verify_item;

/** Return non-zero to stop the verification. */
typedef int tide_verify_fn(void *ud, const tide_verify_item *it);

/** Check the log in data directory @p dir: walk every database and report
 *  each problem found (an event that does not decode, a gap in the seqs,
 *  an index entry naming a missing or different event, a stream head at
 *  the wrong version, a checkpoint beyond the end, a truncated file, ...),
 *  then one TIDE_VERIFY_DATABASE item per database.  The walk reads one
 *  snapshot, so it may run while an engine writes.
 *
 *  It runs in a child process (fork()), because LMDB may crash on a
 *  damaged page: a crash is reported as a problem of the database being
 *  read, with the last key read, and the walk goes on with the next
 *  database.  @p fn is called in the calling process, from the calling
 *  thread; call this from a process that can fork (in a threaded program,
 *  the child uses only this library, LMDB and malloc).
 *  @p dir is borrowed.
 *  @return TIDE_OK when the walk was done (*problems, if not NULL, counts
 *  the problems; 0 means none found), or TIDE_ENOTFOUND (no log),
 *  TIDE_EFORMAT, TIDE_EIO (the log cannot be opened: missing or empty
 *  data.mdb where a log was, or no process could be started), TIDE_EINVAL,
 *  TIDE_ENOMEM. */
TIDE_API int tide_log_verify(const char *dir, tide_verify_fn *fn, void *ud, uint64_t *problems);

/** What tide_log_backup() copied. */
typedef struct tide_backup_info {
	uint64_t size;        /**< bytes of the copy's data.mdb */
	uint64_t source_size; /**< bytes the source log's pages take (free ones too) */
	uint64_t events;      /**< events in the copy */
	uint64_t last_seq;    /**< the last seq in the copy */
} tide_backup_info;

/** Copy the log in data directory @p dir to @p dest, consistently (one
 *  read snapshot, so also while an engine writes) and compacted (free
 *  pages left out).  @p dest must not exist, or be an empty directory;
 *  it becomes a data directory ready to run (a new one is created 0700;
 *  its data.mdb is 0600): restoring is pointing --data at it.  The copy
 *  is written to a temporary file, flushed and renamed into place, then
 *  opened to fill @p info (may be NULL).  Strings are borrowed.
 *  @return TIDE_OK, TIDE_ENOTFOUND (no log in @p dir), TIDE_EINVAL
 *  (@p dir or @p dest NULL, or @p dest holds files or is not a
 *  directory), TIDE_EFULL (the disk of @p dest is full), TIDE_EIO,
 *  TIDE_EFORMAT, TIDE_ENOMEM. */
TIDE_API int tide_log_backup(const char *dir, const char *dest, tide_backup_info *info);

#ifdef __cplusplus
}
#endif
#endif /* TIDE_H */
