/*
 * json.h - JSON text to and from the value encoding of val.h, on top of
 * yajl.  Parsing keeps integer fidelity: a JSON number without a fraction
 * or exponent that fits in 64 bits becomes an integer, anything else a
 * double.
 */
#ifndef TIDE_JSON_H
#define TIDE_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "val.h"

/** Deepest nesting accepted in event data and emitted values. */
#define TIDEI_JSON_MAXDEPTH 64

/** Builds encoded values from a stream of JSON callbacks, counting the
 *  elements of each open container. */
typedef struct tidei_jsonw {
	tidei_buf *out;
	int depth;
	int too_deep;
	struct {
		size_t at;
		uint32_t count;
		int is_map;
	} stack[TIDEI_JSON_MAXDEPTH];
} tidei_jsonw;

void tidei_jsonw_init(tidei_jsonw *w, tidei_buf *out);
/* Each returns 0, or -1 when the nesting limit is exceeded. */
int tidei_jsonw_null(tidei_jsonw *w);
int tidei_jsonw_bool(tidei_jsonw *w, int v);
int tidei_jsonw_number(tidei_jsonw *w, const char *s, size_t n);
int tidei_jsonw_string(tidei_jsonw *w, const char *s, size_t n);
int tidei_jsonw_key(tidei_jsonw *w, const char *s, size_t n);
int tidei_jsonw_start(tidei_jsonw *w, int is_map);
int tidei_jsonw_end(tidei_jsonw *w);

/** Classify a JSON number: returns 1 and sets *i for an integer that fits
 *  in 64 bits, 0 and sets *d otherwise. */
int tidei_json_number(const char *s, size_t n, int64_t *i, double *d);

/** Parse one JSON document into an encoded value.  Returns 0, or -1 with a
 *  message in @p err (TIDEI_ERRLEN bytes). */
int tidei_json_decode(const char *text, size_t len, tidei_buf *out, char *err);

/** Append one encoded value as JSON.  Binary strings become base64 text.
 *  Returns 0, or -1 if the value is malformed or too deeply nested. */
int tidei_json_encode(tidei_buf *out, tidei_vreader *r);

/** Append a quoted, escaped JSON string. */
void tidei_json_str(tidei_buf *out, const char *s, size_t n);
/** Append a double in the shortest form that reads back to the same value
 *  (always with a fraction or exponent, so it stays a double). */
void tidei_json_double(tidei_buf *out, double d);

/** Base64 (RFC 4648, padded).  Decoding rejects anything else: returns the
 *  decoded length, or -1. */
void tidei_base64_encode(tidei_buf *out, const uint8_t *p, size_t n);
long tidei_base64_decode(tidei_buf *out, const char *s, size_t n);

/** 1 if @p s is well-formed UTF-8 without NUL bytes. */
int tidei_utf8_valid(const char *s, size_t n);

#endif
