/*
 * jscan.h - a strict JSON scanner for the common case, in front of yajl.
 *
 * tidei_jscan() reads one JSON object or array and writes its tokens to a
 * tape, which the caller then walks as it would take yajl's callbacks.  It
 * accepts a subset of what yajl accepts: RFC 8259 JSON with only the four
 * whitespace characters, well-formed UTF-8 (RFC 3629) and escapes other
 * than surrogates.  Anything else (a syntax error, a surrogate escape,
 * bad UTF-8, a form feed between tokens, nesting past TIDEI_JSCAN_DEPTH)
 * makes it give up with nothing reported: the caller hands the same text
 * to yajl, which reports what it always reported.  So the tape, when
 * there is one, is exactly the sequence of callbacks yajl would make, and
 * every rejection still comes from the one slow path.
 */
#ifndef TIDE_JSCAN_H
#define TIDE_JSCAN_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/** Deepest nesting the scanner takes; deeper text goes to yajl. */
#define TIDEI_JSCAN_DEPTH 256

enum {
	TIDEI_JT_NULL,
	TIDEI_JT_FALSE,
	TIDEI_JT_TRUE,
	TIDEI_JT_NUMBER, /* text: the number as written */
	TIDEI_JT_STRING, /* text: the string's bytes, escapes decoded */
	TIDEI_JT_KEY,    /* text: the member name, escapes decoded */
	TIDEI_JT_MAP,    /* '{' */
	TIDEI_JT_ARRAY,  /* '[' */
	TIDEI_JT_END,    /* '}' or ']' */
};

typedef struct tidei_jtok {
	uint8_t kind;
	uint8_t decoded; /* text is in the tape's strs buffer, not the input */
	uint32_t len;    /* of the text */
	size_t off;      /* of the text, in the input or in strs */
	size_t end;      /* offset in the input just past the token */
} tidei_jtok;

typedef struct tidei_jtape {
	tidei_jtok *t;
	size_t n, cap;
	tidei_buf strs; /* strings with escapes, decoded */
} tidei_jtape;

void tidei_jtape_free(tidei_jtape *tp);

/** Scan the object or array that starts at @p s[at] into @p tp (emptied
 *  first).  Returns the offset just past its last byte, or -1 to give up
 *  (the text is not in the subset above, or memory ran out). */
long tidei_jscan(tidei_jtape *tp, const char *s, size_t len, size_t at);

/** The text of token @p k: a pointer into @p s or into the tape. */
static inline const char *
tidei_jtok_text(const tidei_jtape *tp, const char *s, const tidei_jtok *k)
{
	return k->decoded ? (const char *)tp->strs.p + k->off : s + k->off;
}

#endif
