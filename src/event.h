/*
 * event.h - THE event format: CloudEvents validation, the stored record,
 * and the JSON form.  Ingest, the log, the Lua bindings and the command
 * line all go through here, so there is one parser and one encoder.
 */
#ifndef TIDE_EVENT_H
#define TIDE_EVENT_H

#include <stddef.h>
#include <stdint.h>
#include <yajl/yajl_parse.h>

#include "buf.h"
#include "err.h"
#include "jscan.h"
#include "json.h"

/** Context attributes stored as strings in the record header, in record
 *  order.  Everything else (other extensions, data) is an encoded value. */
enum {
	TIDEI_A_ID,
	TIDEI_A_SOURCE,
	TIDEI_A_TYPE,
	TIDEI_A_SUBJECT,
	TIDEI_A_TIME,
	TIDEI_A_DATACONTENTTYPE,
	TIDEI_A_DATASCHEMA,
	TIDEI_A_CORRELATIONID,
	TIDEI_A_CAUSATIONID,
	TIDEI_NATTR
};

/** Attribute names, indexed by TIDEI_A_*. */
extern const char *const tidei_attr_names[TIDEI_NATTR];

/** A view of one event: pointers into a record (in LMDB memory or a
 *  buffer), valid as long as that record. */
struct tide_event {
	uint64_t seq;                  /* 0 until stored */
	uint64_t version;              /* position in the subject's stream, 0 without subject */
	uint64_t prev;                 /* seq of the previous event of the same subject, or 0 */
	int64_t recorded;              /* ns since the epoch */
	const char *attr[TIDEI_NATTR]; /* NUL-terminated, NULL when absent */
	uint32_t len[TIDEI_NATTR];
	const uint8_t *ext; /* encoded map of the other extensions */
	size_t ext_len;
	const uint8_t *data; /* encoded data value, NULL when there is none */
	size_t data_len;
	const uint8_t *rec; /* the whole record */
	size_t rec_len;
	tidei_buf *scratch; /* where tide_event_json() writes; owned by the view's maker */
	tidei_buf *attrs;   /* extension strings of tide_event_attr(); the maker's, or NULL */
	void *handling;     /* the consumers whose C handler has this event now, or NULL */
};

/* ------------------------------------------------------------------------
 * Records
 * ------------------------------------------------------------------------ */

/** Byte size of the fixed record header. */
#define TIDEI_REC_HEADER 68

/* Default of max_emit_depth: emits in a chain from a published event. */
#define TIDEI_DEFAULT_EMIT_DEPTH 64

/** How many emits separate @p ev from a published event: 0 for a published
 *  one, 1 for an event a handler emitted while handling it, and so on. */
unsigned tidei_event_depth(const struct tide_event *ev);

/** Fill @p ev from a record.  Returns 0, or -1 if the record is corrupt. */
int tidei_event_decode(struct tide_event *ev, const uint8_t *rec, size_t len);

/** Set the depth of a record (tidei_event_depth) in place: an emitted
 *  event that came back from a cluster's stream as JSON. */
void tidei_event_set_depth(uint8_t *rec, size_t len, unsigned depth);

/** Write the fields the log assigns into a record in place. */
void tidei_event_stamp(uint8_t *rec, uint64_t version, uint64_t prev, int64_t recorded);

/** Append @p ev as one line of JSON (no newline).  Returns 0 or -1 (the
 *  record is corrupt or memory ran out). */
int tidei_event_json(tidei_buf *out, const struct tide_event *ev);

/** Format a time in ns since the epoch as RFC 3339 UTC with microseconds
 *  into @p out (at least 32 bytes).  Returns the length. */
int tidei_time_format(char *out, int64_t ns);

/** 1 if @p s is an RFC 3339 date-time. */
int tidei_time_valid(const char *s, size_t n);

/** The instant an RFC 3339 date-time names, in ns since the epoch (UTC):
 *  any number of fraction digits (past nine dropped), any offset, a leap
 *  second as the last nanosecond of the minute before.  Returns 0, or -1
 *  when @p s is not such a date-time or falls outside what int64
 *  nanoseconds reach (1677-09-22 to 2262-04-10). */
int tidei_time_parse(const char *s, size_t n, int64_t *ns);

/* ------------------------------------------------------------------------
 * Building and validating one event
 * ------------------------------------------------------------------------ */

/* Extension attributes one event may carry.  Names are checked for
 * repeats by a scan of those already set, so the cap also bounds that
 * work: without it an event of 100,000 attributes cost seconds. */
#define TIDEI_MAX_EXTENSIONS 256

/* Bits of tidei_evb.seen beyond the string attributes (TIDEI_A_*). */
#define TIDEI_SEEN_SPECVERSION (1u << TIDEI_NATTR)
#define TIDEI_SEEN_DATA (1u << (TIDEI_NATTR + 1))
#define TIDEI_SEEN_DATA_BASE64 (1u << (TIDEI_NATTR + 2))

/** Collects the attributes of one event, validating each as it is set,
 *  and writes the record.  The first problem found is kept in err. */
typedef struct tidei_evb {
	tidei_buf strs;
	uint32_t off[TIDEI_NATTR];
	uint32_t len[TIDEI_NATTR];
	unsigned seen;  /* bit per TIDEI_A_*, plus the TIDEI_SEEN_* bits */
	tidei_buf ext;  /* extension pairs, encoded */
	uint32_t next;  /* pairs in ext */
	tidei_buf data; /* encoded data value */
	int has_data;
	int check_utf8; /* strings did not come through the JSON parser */
	int64_t expect; /* "expectedversion" of the subject's stream, -1 if none */
	uint16_t depth; /* emits between this event and a published one (0: published) */
	int invalid;
	char err[TIDEI_ERRLEN];
} tidei_evb;

void tidei_evb_reset(tidei_evb *b);
void tidei_evb_free(tidei_evb *b);

/* Set the attribute @p name (n bytes) to a value.  Each returns 0 or -1
 * when the event is now invalid (see b->err).  Null means "absent". */
int tidei_evb_string(tidei_evb *b, const char *name, size_t n, const char *s, size_t len);
int tidei_evb_int(tidei_evb *b, const char *name, size_t n, int64_t v);
int tidei_evb_bool(tidei_evb *b, const char *name, size_t n, int v);
int tidei_evb_null(tidei_evb *b, const char *name, size_t n);
/** A value of a type no attribute accepts here (@p what: "an object", ...). */
int tidei_evb_badtype(tidei_evb *b, const char *name, size_t n, const char *what);
/** Claim the data slot: afterwards the caller writes one encoded value into
 *  b->data.  Returns 0, or -1 for a duplicate. */
int tidei_evb_data(tidei_evb *b);
/** Record an error for the event (first one wins); returns -1. */
int tidei_evb_fail(tidei_evb *b, const char *fmt, ...) TIDEI_PRINTF(2, 3);

/** Name of the attribute a producer sets to append only if the subject's
 *  stream is at that version (optimistic concurrency).  It is a directive
 *  to the log, not part of the stored event. */
#define TIDEI_EXPECT_ATTR "expectedversion"

/** Check the required attributes and append the record to @p out.
 *  Returns 0, or -1 with b->err set. */
int tidei_evb_finish(tidei_evb *b, tidei_buf *out);

/* ------------------------------------------------------------------------
 * Parsing messages
 * ------------------------------------------------------------------------ */

/** Receives each event found in a message, in order: either a record
 *  (err == NULL) or the reason it was rejected.  Pointers are valid only
 *  during the call. */
typedef void tidei_event_sink(void *ud, const uint8_t *rec, size_t len, const char *err);

/** Parses messages holding one event, a JSON array of events (a
 *  CloudEvents batch), or several events one after another (NDJSON).  A
 *  syntax error costs only the value it is in: parsing resumes at the next
 *  line after the one where that value began, skipping indented lines and
 *  lines that only close a pretty-printed document.  What the strict
 *  checks of json.h refuse (bad UTF-8 or surrogate escapes in a string, a
 *  number out of range, a vertical tab or form feed between tokens) costs
 *  only the event it is in, and parsing goes on without a resync. */
typedef struct tidei_eparser {
	tidei_evb b;
	tidei_jsonw w;
	tidei_buf rec;
	tidei_buf key;    /* current attribute name */
	size_t max_event; /* bytes; larger events are rejected */
	/* state of the current parse */
	yajl_handle h;
	const char *msg;
	size_t len;           /* bytes in msg */
	size_t base;          /* offset of the current yajl chunk in msg */
	size_t badspace;      /* offset of the next vertical tab or form feed in msg, or len */
	size_t badspace_from; /* ...from this offset on */
	size_t ascii;         /* strings in msg before this offset are ASCII (unchecked: len) */
	size_t ascii_from;    /* ...from this offset on */
	int depth;            /* JSON nesting depth */
	int ev_depth;         /* depth of the current event object, 0 if none */
	int batch_depth;      /* depth of the enclosing batch array, 0 if none */
	int mode;             /* what the tokens at this depth belong to */
	int skip_depth;       /* depth at which skipping ends */
	size_t ev_start;      /* offset of the event's '{' */
	size_t val_start;     /* offset where the current top-level value began */
	tidei_event_sink *sink;
	void *ud;
	size_t count; /* events reported for the current message */
	/* When set, each complete event goes to take() unfinished instead of
	 * being written as a record: the sink then gets NULL and NULL for
	 * an event taken, or take's message. */
	int (*take)(void *ud, tidei_evb *b, char *err);
	void *take_ud;
	/* The fast path: most values are scanned by jscan.c and replayed
	 * through the same callbacks; yajl reads the rest. */
	tidei_jtape tape;
	size_t pos;     /* offset past the token being replayed */
	size_t top_end; /* past the last top-level value yajl read, or SIZE_MAX */
	int finishing;  /* in yajl_complete_parse() */
	int slow_only;  /* yajl for everything (the tests' reference) */
} tidei_eparser;

void tidei_eparser_init(tidei_eparser *p, size_t max_event);
void tidei_eparser_free(tidei_eparser *p);

/** Parse @p msg, reporting every event to @p sink.  Returns the number of
 *  events reported, or -1 if memory ran out. */
long tidei_eparser_run(tidei_eparser *p, const char *msg, size_t len, tidei_event_sink *sink,
		       void *ud);

/** Human form of a byte limit ("1 MiB", "64 KiB", "1000 bytes") in @p out. */
void tidei_fmt_size(char *out, size_t outlen, size_t bytes);

#endif
