/*
 * json.h - JSON text to and from the value encoding of val.h, on top of
 * yajl.  Parsing keeps integer fidelity: a JSON number without a fraction
 * or exponent that fits in 64 bits becomes an integer, anything else a
 * double.
 *
 * Parsing is strict (RFC 8259, with RFC 3629 UTF-8), so that whatever is
 * stored can be written back and read again as it was: yajl is lenient in
 * a few places, and the checks below close them for every parser built on
 * it (tidei_json_decode here, the event parser in eparser.c).
 */
#ifndef TIDE_JSON_H
#define TIDE_JSON_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <yajl/yajl_parse.h>

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
/* Each returns 0, or -1 when the nesting limit is exceeded (too_deep is
 * then set) or, for a number, when it is out of range. */
int tidei_jsonw_null(tidei_jsonw *w);
int tidei_jsonw_bool(tidei_jsonw *w, int v);
int tidei_jsonw_number(tidei_jsonw *w, const char *s, size_t n);
int tidei_jsonw_string(tidei_jsonw *w, const char *s, size_t n);
int tidei_jsonw_key(tidei_jsonw *w, const char *s, size_t n);
int tidei_jsonw_start(tidei_jsonw *w, int is_map);
int tidei_jsonw_end(tidei_jsonw *w);

/** Classify a JSON number: returns 1 and sets *i for an integer that fits
 *  in 64 bits, 0 and sets *d otherwise (the nearest double: an integer
 *  beyond 64 bits loses digits, a number too small for a double becomes a
 *  zero of its sign).  Returns -1 for a number whose magnitude is too
 *  large for a double (1e400), -2 if memory ran out. */
int tidei_json_number(const char *s, size_t n, int64_t *i, double *d);
/** The message for a number tidei_json_number() found out of range, into
 *  @p err (TIDEI_ERRLEN bytes); returns -1. */
int tidei_json_range_err(char *err, const char *s, size_t n);

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

/** The length of @p s (@p n bytes of UTF-8) cut to at most @p max bytes
 *  at a character boundary: for quoting the start of a long name in a
 *  message that travels as JSON. */
size_t tidei_utf8_cut(const char *s, size_t n, size_t max);

/** 1 if @p s is well-formed UTF-8 without NUL bytes. */
int tidei_utf8_valid(const char *s, size_t n);
/** Check that @p s is well-formed UTF-8 (RFC 3629: no overlong forms, no
 *  surrogates, nothing past U+10FFFF).  NUL bytes are allowed: strings in
 *  values carry their length.  Returns NULL, or what is wrong (a static
 *  string) with the offset of the first bad byte in *at (if not NULL). */
const char *tidei_utf8_check(const char *s, size_t n, size_t *at);

/* ------------------------------------------------------------------------
 * Strictness around yajl, for parsers that use it directly
 * ------------------------------------------------------------------------ */

/** Room for what tidei_json_check_str() says is wrong. */
#define TIDEI_JSON_WHYLEN 96

/** 1 if s[0..n) is all ASCII.  Inline, a word at a time: it is the whole
 *  check for most strings tidei_json_decode() sees. */
static inline int
tidei_ascii(const unsigned char *s, size_t n)
{
	uint64_t acc = 0, w;
	uint32_t h;

	if (n >= 8) {
		for (size_t k = 0; k + 8 < n; k += 8) {
			memcpy(&w, s + k, 8);
			acc |= w;
		}
		memcpy(&w, s + n - 8, 8); /* the last eight, overlapping */
		acc |= w;
	} else if (n >= 4) {
		memcpy(&h, s, 4);
		acc = h;
		memcpy(&h, s + n - 4, 4);
		acc |= h;
	} else if (n > 0) {
		acc = (uint64_t)(s[0] | s[n / 2] | s[n - 1]);
	}
	return (acc & 0x8080808080808080ull) == 0;
}

/** 1 if a string or member name yajl reported to a callback needs no
 *  further check: yajl passed a pointer into @p chunk (the text given to
 *  yajl_parse(), @p chunk_len bytes), so it had no escapes, and it is all
 *  ASCII.  Otherwise call tidei_json_check_str(). */
static inline int
tidei_json_str_plain(const char *chunk, size_t chunk_len, const unsigned char *s, size_t n)
{
	uintptr_t p = (uintptr_t)s, c = (uintptr_t)chunk;

	return p >= c && p - c <= chunk_len && tidei_ascii(s, n);
}

/** Check a string or member name in the callback where yajl (@p h) reports
 *  it; @p chunk and @p chunk_len as for tidei_json_str_plain(), @p s and
 *  @p n what yajl passed.  The raw bytes must be RFC 3629 UTF-8, and a
 *  \u escape of a high surrogate must be followed by one of a low
 *  surrogate (yajl would turn a lone one into "?").  Returns NULL, or what
 *  is wrong (written into @p why, TIDEI_JSON_WHYLEN bytes) with the offset
 *  in @p chunk of the bad byte or escape in *at. */
const char *tidei_json_check_str(yajl_handle h, const char *chunk, size_t chunk_len,
				 const unsigned char *s, size_t n, size_t *at, char *why);

/** Offset of the first byte of @p s past ASCII from @p from on, or
 *  @p len: a parser that knows where the first one is can let the strings
 *  before it through without looking at them. */
size_t tidei_json_ascii_end(const char *s, size_t from, size_t len);

/** Offset of the first vertical tab or form feed in @p s from @p from on,
 *  or @p len: yajl takes them for whitespace, JSON does not (inside
 *  strings yajl refuses them itself). */
size_t tidei_json_badspace(const char *s, size_t from, size_t len);
/** The message for a bad whitespace character @p c found at byte @p pos
 *  (counted from 1), into @p err (TIDEI_ERRLEN bytes); returns -1. */
int tidei_json_badspace_err(char *err, char c, size_t pos);

#endif
