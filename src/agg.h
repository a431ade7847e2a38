/*
 * agg.h - keyed windows and their aggregates, for the rule engine.
 *
 * One tidei_win holds the state of ONE window definition (a
 * tidei_win_spec) for ONE key.  The caller keeps one per (consumer, key,
 * window), stores it between turns with tidei_win_encode() and drives it
 * with event times and a watermark, all int64 nanoseconds since the
 * epoch.  The watermark promises that no event earlier than it will be
 * added any more; windows that end at or before it close.
 *
 * Kinds:
 *  - TUMBLING, size S: aligned windows [k*S, (k+1)*S).  Several may be
 *    open at once; each closes when the watermark reaches its end.
 *  - HOPPING, size S every hop H (S a multiple of H, S/H <= 1000):
 *    windows [k*H, k*H + S), kept as panes of width H that are merged
 *    when a window closes or is read.
 *  - SLIDING, size S: (t_latest - S, t_latest], t_latest being the
 *    largest time added; entries with t <= max(t_latest, watermark) - S
 *    are evicted.  Exact: the entries are kept (at most
 *    TIDEI_WIN_MAX_ENTRIES).  No close callback.
 *  - COUNT, N: the last N entries added.  No close callback.
 *  - SESSION, gap G: events less than G apart belong to one session; it
 *    closes when the watermark reaches its last event's time + G.  An
 *    out-of-order event within G of two sessions merges them.
 *
 * Aggregates (a bitmask; the count is always kept):
 *  - SUM is compensated (Neumaier); MEAN and VARIANCE use Welford's
 *    update and Chan's merge (sliding and count windows: see below).
 *    VARIANCE and STDDEV are the SAMPLE ones (divided by n - 1), 0 while
 *    n < 2.
 *  - DISTINCT counts distinct 64-bit tokens the caller passes with each
 *    event (a hash of a field, say): exact in sliding and count windows;
 *    elsewhere exact up to 40 tokens, then a HyperLogLog estimate with a
 *    standard error of about 4.6% (320 bytes per window or pane).
 *  - QUANTILE q (one per spec) is estimated within 1% of the exact value
 *    of rank floor(q * (n - 1)) (sketch.h); past 2048 buckets of
 *    logarithmic width the lowest are merged, which degrades only the low
 *    quantiles of data spanning more than ~18 decades.
 *
 * Everything is deterministic: the same calls in the same order give
 * bit-identical aggregates and encodings, also across an encode/decode.
 * Sliding and count windows keep compensated sums of v and of
 * (v - shift)^2 that an eviction takes back exactly enough not to drift
 * (a huge value passing through leaves no trace), recomputed from the
 * entries after as many adds and evictions as there are entries (at
 * least 1024), and re-centred sooner when the mean moved far from the
 * shift.
 *
 * Event times must lie within TIDEI_WIN_TMIN..TIDEI_WIN_TMAX (1823 to
 * 2116), which keeps every bound computed from them within int64.
 *
 * Threading: a tidei_win is used by one thread at a time; the functions
 * share no state.
 *
 * Memory: a tumbling, hopping or session window takes 32 bytes, plus 88
 * per open window, pane or session, plus what its sketches hold (DISTINCT
 * up to 328 bytes, QUANTILE 8 per bucket in use).  A sliding or count
 * window takes about 210 bytes, plus 24 per entry, 16 per entry for each
 * of MIN and MAX, and 16 to 32 per distinct token; arrays shrink as
 * entries leave.
 */
#ifndef TIDE_AGG_H
#define TIDE_AGG_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

enum {
	TIDEI_WIN_TUMBLING,
	TIDEI_WIN_HOPPING,
	TIDEI_WIN_SLIDING,
	TIDEI_WIN_COUNT,
	TIDEI_WIN_SESSION,
};

#define TIDEI_AGG_COUNT 0x001
#define TIDEI_AGG_SUM 0x002
#define TIDEI_AGG_MIN 0x004
#define TIDEI_AGG_MAX 0x008
#define TIDEI_AGG_MEAN 0x010
#define TIDEI_AGG_VARIANCE 0x020
#define TIDEI_AGG_STDDEV 0x040
#define TIDEI_AGG_DISTINCT 0x080
#define TIDEI_AGG_QUANTILE 0x100
#define TIDEI_AGG_ALL 0x1ff

/** Most entries a sliding window holds, and the largest count N. */
#define TIDEI_WIN_MAX_ENTRIES 1000000
/** Most windows, panes or sessions open at once for one key. */
#define TIDEI_WIN_MAX_OPEN 65536
/** Largest size, hop or gap: 2^60 ns, about 36 years. */
#define TIDEI_WIN_MAX_SPAN ((int64_t)1 << 60)
/** The range of event times: +-2^62 ns around the epoch. */
#define TIDEI_WIN_TMAX ((int64_t)1 << 62)
#define TIDEI_WIN_TMIN (-TIDEI_WIN_TMAX)
/** Watermarks are clamped to +-TIDEI_WIN_WM_LIMIT, beyond every time
 *  and window end events can make, so that subtracting a size from one
 *  cannot overflow; TIDEI_WIN_NONE (its lower end) is "none yet". */
#define TIDEI_WIN_WM_LIMIT (TIDEI_WIN_TMAX + ((int64_t)1 << 61))
#define TIDEI_WIN_NONE (-TIDEI_WIN_WM_LIMIT)
/** Hopping windows: most windows a pane belongs to (size / hop). */
#define TIDEI_WIN_MAX_PANES 1000

/** tidei_win_add(): the event belongs only to windows already closed
 *  (a positive code: not an error of the window, the caller decides). */
#define TIDEI_WIN_LATE 1

/** A window definition, filled by the caller.  Only the fields of its
 *  kind are read (size_ns for TUMBLING, HOPPING and SLIDING, hop_ns for
 *  HOPPING, gap_ns for SESSION, count for COUNT; q with QUANTILE). */
typedef struct tidei_win_spec {
	int kind;        /* TIDEI_WIN_* */
	int64_t size_ns; /* window length */
	int64_t hop_ns;  /* HOPPING: distance between window starts */
	int64_t gap_ns;  /* SESSION: the inactivity that ends a session */
	uint32_t count;  /* COUNT: entries kept */
	uint32_t aggs;   /* TIDEI_AGG_* bits */
	double q;        /* QUANTILE: 0..1 */
} tidei_win_spec;

/** The aggregates of one window.  Fields not asked for in the spec are
 *  NAN.  An empty window has count 0, sum 0 (when asked) and NAN for the
 *  rest.  start/end are the window's bounds: [start, end) for tumbling
 *  and hopping; the oldest and latest entry times for sliding; the times
 *  of the oldest and newest entries added for count; the first and last
 *  event times for a session (which closes at end + gap).  When empty
 *  they are the bounds of the window asked for (tumbling, hopping) or 0. */
typedef struct tidei_agg {
	uint64_t count;
	double sum, min, max, mean, variance, stddev, distinct, quantile;
	int64_t start, end;
} tidei_agg;

/** Called by tidei_win_advance() for each window that closes, in the
 *  order they end.  @p a is borrowed for the call; the callback must not
 *  use the window being advanced. */
typedef void tidei_win_close_fn(void *ud, const tidei_agg *a);

typedef struct tidei_win tidei_win;

/** Check a spec: TIDE_OK, or TIDE_EINVAL with a message in @p err
 *  (TIDEI_ERRLEN bytes) such as "hop must divide size". */
int tidei_win_spec_check(const tidei_win_spec *s, char *err);

/** Parse a duration: a non-negative decimal number (at most 9 decimals)
 *  followed by a unit, one of ns, us, ms, s, m, h, d, w ("500ms", "1.5s",
 *  "15m", "2w"), or a bare number of seconds.  @p s is @p n bytes, not
 *  necessarily NUL-terminated.  TIDE_OK with *@p ns, or TIDE_EINVAL with
 *  a message in @p err (*@p ns = -1). */
int tidei_duration_parse(const char *s, size_t n, int64_t *ns, char *err);

/** @p ns as the largest unit that divides it ("30d", "15m", "1500ms");
 *  into @p out (at least 32 bytes). */
void tidei_duration_format(char *out, size_t n, int64_t ns);
/** @p s in words, as a window's options would say it: "sliding 1h",
 *  "hopping 1h every 5m", "session gap 30m", "last 100", then the
 *  aggregates ("count, sum, p95"); appended to @p out. */
void tidei_win_spec_describe(const tidei_win_spec *s, tidei_buf *out);

/** Parse an aggregate's name: count, sum, min, max, mean, variance,
 *  stddev, distinct, median, or a percentile "p95", "p99.9" (0 to 100).
 *  TIDE_OK with *@p bit (TIDEI_AGG_*) and, for quantiles, *@p q (0..1;
 *  untouched otherwise), or TIDE_EINVAL with a message in @p err. */
int tidei_agg_parse(const char *name, uint32_t *bit, double *q, char *err);

/** A new, empty window state for @p s, which must have passed
 *  tidei_win_spec_check().  NULL when out of memory.  Free it with
 *  tidei_win_free(). */
tidei_win *tidei_win_new(const tidei_win_spec *s);
/** Free @p w (NULL is fine). */
void tidei_win_free(tidei_win *w);

/** Add an event at time @p t with value @p v and distinct token
 *  @p token (each read only when the spec asks for aggregates that use
 *  it).  @p s must be the spec @p w was made or decoded with.  Returns:
 *  - TIDE_OK;
 *  - TIDEI_WIN_LATE: every window @p t belongs to has closed (a tumbling
 *    or hopping window that ended at or before the watermark, a sliding
 *    window's t <= max(t_latest, watermark) - size, a session that would
 *    start with t + gap <= watermark and joins no open one); nothing
 *    changed.  Count windows are never late;
 *  - TIDE_EINVAL with a message in @p err (TIDEI_ERRLEN bytes, or NULL
 *    for none): @p t out of TIDEI_WIN_TMIN..TIDEI_WIN_TMAX, @p v not
 *    finite (NAN, infinite) while values are aggregated,
 *    TIDEI_WIN_MAX_ENTRIES or TIDEI_WIN_MAX_OPEN reached, or @p s of
 *    another kind; nothing changed;
 *  - TIDE_ENOMEM (message in @p err); nothing changed. */
int tidei_win_add(tidei_win *w, const tidei_win_spec *s, int64_t t, double v, uint64_t token,
		  char *err);

/** Move the watermark to @p watermark (a lower one than seen before
 *  changes nothing): close, in end order, every tumbling or hopping
 *  window that ends at or before it and every session whose last event
 *  + gap is at or before it, calling @p fn (may be NULL) with each one's
 *  aggregates before freeing it; evict sliding entries.  Only windows
 *  that hold events close: a hopping window with no event in any of its
 *  panes is skipped.  Returns TIDE_OK, TIDE_EINVAL (@p s of another
 *  kind) or TIDE_ENOMEM (merging panes): then the windows closed so far
 *  stay closed, the rest stay open, and a later call goes on. */
int tidei_win_advance(tidei_win *w, const tidei_win_spec *s, int64_t watermark,
		      tidei_win_close_fn *fn, void *ud);

/** The aggregates a handler sees now for an event at @p t, into *@p out:
 *  - tumbling: the window containing t;
 *  - hopping: of the open windows containing t, the one that started
 *    first (the one with the most history before t, and the next to
 *    close); if all have closed, the last of them;
 *  - session: the session whose first..last event times contain t;
 *  - sliding and count: the current window (t is not used).
 *  Returns TIDE_OK, TIDE_EINVAL (@p s of another kind) or TIDE_ENOMEM
 *  (merging a hopping window's panes). */
int tidei_win_read(const tidei_win *w, const tidei_win_spec *s, int64_t t, tidei_agg *out);

/** The watermark at which the next window closes (tidei_win_advance()
 *  with it calls the close callback), or INT64_MAX when none will: no
 *  window open, or a sliding or count window. */
int64_t tidei_win_next_close(const tidei_win *w, const tidei_win_spec *s);

/** Whether @p w holds nothing (no open window, no entry): the caller may
 *  free it and start afresh.  A sliding window forgets its latest time
 *  (and so which old events are late) that way. */
int tidei_win_empty(const tidei_win *w);
/** Ask for @p w's memory ahead of its use (a hint; no effect on results):
 *  at @p depth 0 the window itself, at 1 its ring of entries, at 2 the
 *  ring's oldest and newest entries.  Each depth reads what the one before
 *  brought. */
void tidei_win_prefetch(const tidei_win *w, int depth);

/** Append @p w's stored form to @p out (a format byte, a fingerprint of
 *  @p s, then the state; failures are sticky in out->failed).  Equal
 *  states give equal bytes. */
void tidei_win_encode(const tidei_win *w, const tidei_win_spec *s, tidei_buf *out);

/** Make a window state from @p n bytes at @p p written by
 *  tidei_win_encode() (bytes from disk: nothing in them is trusted, and
 *  what they make is bounded by their length).  Returns TIDE_OK with
 *  *@p out (free it with tidei_win_free()), or with *@p out NULL and a
 *  message in @p err:
 *  - TIDE_EINVAL: another format version, or written for another spec
 *    (the script changed the window): start afresh;
 *  - TIDE_EIO: the bytes are damaged;
 *  - TIDE_ENOMEM. */
int tidei_win_decode(tidei_win **out, const tidei_win_spec *s, const uint8_t *p, size_t n,
		     char *err);

/** Bytes of memory @p w holds, with its sketches. */
size_t tidei_win_memory(const tidei_win *w);

#endif
