/*
 * json.c - JSON parsing (through yajl) into encoded values, and JSON
 * output from encoded values.
 *
 * Parsing is event-driven: yajl calls back for each token and tidei_jsonw
 * appends the encoded form, so no intermediate tree is allocated.  The
 * output side is a direct writer; it only ever formats values that were
 * validated on the way in.
 *
 * yajl is lenient where Tide must not be (see "Strictness around yajl"
 * below); what it lets through would be stored, then fail or change when
 * written back, so every string and number is checked as yajl reports it.
 */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_parse.h>

#include "err.h"
#include "json.h"

/* ------------------------------------------------------------------------
 * Building encoded values from JSON tokens
 * ------------------------------------------------------------------------ */

void
tidei_jsonw_init(tidei_jsonw *w, tidei_buf *out)
{
	w->out = out;
	w->depth = 0;
	w->too_deep = 0;
}

/* Count a value in its parent array (map pairs are counted by their key). */
static void
count_value(tidei_jsonw *w)
{
	if (w->depth > 0 && !w->stack[w->depth - 1].is_map)
		w->stack[w->depth - 1].count++;
}

int
tidei_jsonw_null(tidei_jsonw *w)
{
	count_value(w);
	tidei_val_nil(w->out);
	return 0;
}

int
tidei_jsonw_bool(tidei_jsonw *w, int v)
{
	count_value(w);
	tidei_val_bool(w->out, v);
	return 0;
}

int
tidei_json_number(const char *s, size_t n, int64_t *i, double *d)
{
	char tmp[64];
	char *copy = tmp;
	size_t k = 0;
	int neg = 0;
	uint64_t acc = 0;

	if (n > 0 && s[0] == '-') {
		neg = 1;
		k = 1;
	}
	if (k < n && memchr(s, '.', n) == NULL && memchr(s, 'e', n) == NULL &&
	    memchr(s, 'E', n) == NULL) {
		int fits = 1;
		for (; k < n; k++) {
			unsigned digit = (unsigned)(s[k] - '0');
			if (digit > 9 || acc > (UINT64_MAX - digit) / 10) {
				fits = 0;
				break;
			}
			acc = acc * 10 + digit;
		}
		if (fits && !neg && acc <= (uint64_t)INT64_MAX) {
			*i = (int64_t)acc;
			return 1;
		}
		if (fits && neg && acc <= (uint64_t)INT64_MAX + 1) {
			*i = acc == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)acc;
			return 1;
		}
	}
	/* Clinger's fast path: up to 15 significant digits and a power of ten
	 * up to 22 are both exact doubles, so one division rounds correctly.
	 * It covers the usual "129.95" without strtod. */
	{
		static const double pow10[] = { 1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
						1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
						1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22 };
		uint64_t m = 0;
		int digits = 0, frac = 0, seen_dot = 0, ok = 1;
		for (k = neg; k < n && ok; k++) {
			char ch = s[k];
			if (ch >= '0' && ch <= '9') {
				if (m == 0 && ch == '0' && !seen_dot)
					continue;
				if (++digits > 15)
					ok = 0;
				m = m * 10 + (uint64_t)(ch - '0');
				frac += seen_dot;
			} else if (ch == '.' && !seen_dot) {
				seen_dot = 1;
			} else {
				ok = 0; /* an exponent: leave it to strtod */
			}
		}
		if (ok && frac <= 22) {
			double v = (double)m / pow10[frac];
			*d = neg ? -v : v;
			return 0;
		}
	}
	/* An exponent, many digits, or an integer beyond 64 bits.  strtod
	 * rounds to the nearest double; past the largest one that is an
	 * infinity, which JSON cannot carry back out, so it is refused.  An
	 * underflow to zero (or to a subnormal) is only rounding, and kept. */
	if (n >= sizeof tmp) {
		copy = malloc(n + 1);
		if (copy == NULL) {
			*d = 0;
			return -2;
		}
	}
	memcpy(copy, s, n);
	copy[n] = '\0';
	*d = strtod(copy, NULL);
	if (copy != tmp)
		free(copy);
	return isinf(*d) ? -1 : 0;
}

int
tidei_json_range_err(char *err, const char *s, size_t n)
{
	/* 1e400 in full; a number of hundreds of digits by its start */
	if (n > 40)
		return tidei_err(err, -1, "number %.32s... is out of range", s);
	return tidei_err(err, -1, "number %.*s is out of range", (int)n, s);
}

int
tidei_jsonw_number(tidei_jsonw *w, const char *s, size_t n)
{
	int64_t i;
	double d;

	count_value(w);
	switch (tidei_json_number(s, n, &i, &d)) {
	case 1: tidei_val_int(w->out, i); return 0;
	case 0: tidei_val_double(w->out, d); return 0;
	case -1: return -1;
	default: w->out->failed = 1; return 0;
	}
}

int
tidei_jsonw_string(tidei_jsonw *w, const char *s, size_t n)
{
	count_value(w);
	tidei_val_str(w->out, s, n);
	return 0;
}

int
tidei_jsonw_key(tidei_jsonw *w, const char *s, size_t n)
{
	if (w->depth > 0)
		w->stack[w->depth - 1].count++;
	tidei_val_str(w->out, s, n);
	return 0;
}

int
tidei_jsonw_start(tidei_jsonw *w, int is_map)
{
	if (w->depth >= TIDEI_JSON_MAXDEPTH) {
		w->too_deep = 1;
		return -1;
	}
	count_value(w);
	w->stack[w->depth].at = is_map ? tidei_val_open_map(w->out) : tidei_val_open_array(w->out);
	w->stack[w->depth].count = 0;
	w->stack[w->depth].is_map = is_map;
	w->depth++;
	return 0;
}

int
tidei_jsonw_end(tidei_jsonw *w)
{
	if (w->depth <= 0)
		return -1;
	w->depth--;
	tidei_val_close(w->out, w->stack[w->depth].at, w->stack[w->depth].count);
	return 0;
}

/* yajl adapters for whole-document decoding. */

typedef struct decoder {
	tidei_jsonw w;
	yajl_handle h;
	const char *text;
	size_t len;
	char *err;     /* the caller's, TIDEI_ERRLEN bytes */
	int failed;    /* a strict check failed; err says why */
	size_t end;    /* where the document ended, SIZE_MAX before */
	int finishing; /* in yajl_complete_parse(), past the text */
} decoder;

/* Note where the document ends when a value at the top completes: yajl
 * refuses a token after it, but not one cut off by the end of the text
 * (an unterminated string), which is then found by looking past it. */
static int
value_done(decoder *d)
{
	if (d->w.depth == 0 && d->end == SIZE_MAX)
		d->end = d->finishing ? d->len : yajl_get_bytes_consumed(d->h);
	return 1;
}

/* Offset of the first byte of @p s from @p at on that is not JSON
 * whitespace, or @p len. */
static size_t
after_space(const char *s, size_t at, size_t len)
{
	while (at < len && (s[at] == ' ' || s[at] == '\t' || s[at] == '\n' || s[at] == '\r'))
		at++;
	return at;
}

static int
cb_null(void *ctx)
{
	return tidei_jsonw_null(ctx) == 0 && value_done(ctx);
}

static int
cb_bool(void *ctx, int v)
{
	return tidei_jsonw_bool(ctx, v) == 0 && value_done(ctx);
}

static int
cb_number(void *ctx, const char *s, size_t n)
{
	decoder *d = ctx;

	if (tidei_jsonw_number(&d->w, s, n) == 0)
		return value_done(d);
	d->failed = 1;
	tidei_json_range_err(d->err, s, n);
	return 0;
}

/* A string or key that breaks the strict rules stops the parse. */
static int
check_str(decoder *d, const unsigned char *s, size_t n)
{
	char why[TIDEI_JSON_WHYLEN];
	size_t at;

	if (tidei_json_str_plain(d->text, d->len, s, n) ||
	    tidei_json_check_str(d->h, d->text, d->len, s, n, &at, why) == NULL)
		return 1;
	d->failed = 1;
	tidei_err(d->err, -1, "not valid JSON at byte %zu: %s", at + 1, why);
	return 0;
}

static int
cb_string(void *ctx, const unsigned char *s, size_t n)
{
	decoder *d = ctx;

	return check_str(d, s, n) && tidei_jsonw_string(&d->w, (const char *)s, n) == 0 &&
	       value_done(d);
}

static int
cb_key(void *ctx, const unsigned char *s, size_t n)
{
	decoder *d = ctx;

	return check_str(d, s, n) && tidei_jsonw_key(&d->w, (const char *)s, n) == 0;
}

static int
cb_start_map(void *ctx)
{
	return tidei_jsonw_start(ctx, 1) == 0;
}

static int
cb_start_array(void *ctx)
{
	return tidei_jsonw_start(ctx, 0) == 0;
}

static int
cb_end(void *ctx)
{
	return tidei_jsonw_end(ctx) == 0 && value_done(ctx);
}

static const yajl_callbacks decode_callbacks = {
	cb_null,      cb_bool, NULL,   NULL,           cb_number, cb_string,
	cb_start_map, cb_key,  cb_end, cb_start_array, cb_end,
};

int
tidei_json_decode(const char *text, size_t len, tidei_buf *out, char *err)
{
	/* the writer first: the callbacks that only build pass it on as is */
	_Static_assert(offsetof(decoder, w) == 0, "decoder starts with its writer");
	decoder d;
	yajl_status st;
	size_t bad;
	int rc = 0;

	tidei_jsonw_init(&d.w, out);
	d.text = text;
	d.len = len;
	d.err = err;
	d.failed = 0;
	d.end = SIZE_MAX;
	d.finishing = 0;
	d.h = yajl_alloc(&decode_callbacks, NULL, &d);
	if (d.h == NULL)
		return tidei_err(err, -1, "out of memory");
	st = yajl_parse(d.h, (const unsigned char *)text, len);
	if (st == yajl_status_ok) {
		d.finishing = 1;
		st = yajl_complete_parse(d.h);
	}
	if (d.failed) {
		rc = -1;
	} else if (d.w.too_deep) {
		rc = tidei_err(err, -1, "JSON nested deeper than %d levels", TIDEI_JSON_MAXDEPTH);
	} else if (st != yajl_status_ok) {
		unsigned char *msg = yajl_get_error(d.h, 0, NULL, 0);
		rc = tidei_err(err, -1, "not valid JSON at byte %zu: %s",
			       yajl_get_bytes_consumed(d.h), (const char *)msg);
		yajl_free_error(d.h, msg);
	} else if ((bad = tidei_json_badspace(text, 0, len)) < len) {
		/* the parse succeeded, so it was between tokens */
		rc = tidei_json_badspace_err(err, text[bad], bad + 1);
	} else if ((bad = after_space(text, d.end, len)) < len) {
		/* what yajl let through after the document: the start of a
		 * string it was still reading */
		rc = tidei_err(err, -1, "not valid JSON at byte %zu: text after the document",
			       bad + 1);
	} else if (out->failed) {
		rc = tidei_err(err, -1, "out of memory");
	}
	yajl_free(d.h);
	return rc;
}

/* ------------------------------------------------------------------------
 * Writing JSON
 * ------------------------------------------------------------------------ */

void
tidei_json_str(tidei_buf *out, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t run = 0;

	tidei_buf_putc(out, '"');
	for (size_t k = 0; k < n; k++) {
		unsigned char c = (unsigned char)s[k];
		const char *esc = NULL;
		char u[6];

		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		tidei_buf_put(out, s + run, k - run);
		run = k + 1;
		switch (c) {
		case '"': esc = "\\\""; break;
		case '\\': esc = "\\\\"; break;
		case '\n': esc = "\\n"; break;
		case '\r': esc = "\\r"; break;
		case '\t': esc = "\\t"; break;
		case '\b': esc = "\\b"; break;
		case '\f': esc = "\\f"; break;
		default:
			memcpy(u, "\\u00", 4);
			u[4] = hex[c >> 4];
			u[5] = hex[c & 15];
			tidei_buf_put(out, u, 6);
			continue;
		}
		tidei_buf_puts(out, esc);
	}
	tidei_buf_put(out, s + run, n - run);
	tidei_buf_putc(out, '"');
}

void
tidei_json_double(tidei_buf *out, double d)
{
	static const double pow10[] = { 1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6 };
	char tmp[40];
	int n;

	if (!isfinite(d)) {
		/* JSON has no infinities or NaN. */
		tidei_buf_puts(out, "null");
		return;
	}
	/* Fast path for the common decimal values (amounts, readings): the
	 * fewest fraction digits k <= 6 whose decimal reads back as exactly
	 * d is the shortest form, and it is checked with one division, the
	 * way the parser reads it (json_number's Clinger fast path). */
	if (fabs(d) < 1e15) {
		for (int k = 0; k <= 6; k++) {
			double m = nearbyint(d * pow10[k]);
			if (fabs(m) < 9007199254740992.0 && m / pow10[k] == d) {
				long long whole = (long long)fabs(m);
				char digits[24];
				int len = snprintf(digits, sizeof digits, "%lld", whole);
				char *p = tmp;
				if (signbit(d))
					*p++ = '-';
				if (len <= k) { /* 0.00ddd */
					*p++ = '0';
					*p++ = '.';
					for (int z = 0; z < k - len; z++)
						*p++ = '0';
					memcpy(p, digits, (size_t)len);
					p += len;
				} else {
					memcpy(p, digits, (size_t)(len - k));
					p += len - k;
					*p++ = '.';
					if (k == 0)
						*p++ = '0'; /* keep it a double: 2.0 */
					memcpy(p, digits + len - k, (size_t)k);
					p += k;
				}
				tidei_buf_put(out, tmp, (size_t)(p - tmp));
				return;
			}
		}
	}
	n = snprintf(tmp, sizeof tmp, "%.15g", d);
	if (strtod(tmp, NULL) != d)
		n = snprintf(tmp, sizeof tmp, "%.17g", d);
	tidei_buf_put(out, tmp, (size_t)n);
	if (strpbrk(tmp, ".e") == NULL)
		tidei_buf_put(out, ".0", 2);
}

static int
encode(tidei_buf *out, tidei_vreader *r, int depth)
{
	tidei_vitem it;
	char tmp[24];
	int n;

	if (depth > TIDEI_JSON_MAXDEPTH + 4 || tidei_val_next(r, &it) != 0)
		return -1;
	switch (it.type) {
	case TIDEI_V_NIL: tidei_buf_puts(out, "null"); return 0;
	case TIDEI_V_FALSE: tidei_buf_puts(out, "false"); return 0;
	case TIDEI_V_TRUE: tidei_buf_puts(out, "true"); return 0;
	case TIDEI_V_INT:
		n = snprintf(tmp, sizeof tmp, "%lld", (long long)it.u.i);
		tidei_buf_put(out, tmp, (size_t)n);
		return 0;
	case TIDEI_V_DOUBLE: tidei_json_double(out, it.u.d); return 0;
	case TIDEI_V_STR: tidei_json_str(out, it.u.s.p, it.u.s.n); return 0;
	case TIDEI_V_BIN:
		tidei_buf_putc(out, '"');
		tidei_base64_encode(out, (const uint8_t *)it.u.s.p, it.u.s.n);
		tidei_buf_putc(out, '"');
		return 0;
	case TIDEI_V_ARRAY:
		tidei_buf_putc(out, '[');
		for (uint32_t k = 0; k < it.u.count; k++) {
			if (k > 0)
				tidei_buf_putc(out, ',');
			if (encode(out, r, depth + 1) != 0)
				return -1;
		}
		tidei_buf_putc(out, ']');
		return 0;
	case TIDEI_V_MAP:
		tidei_buf_putc(out, '{');
		for (uint32_t k = 0; k < it.u.count; k++) {
			tidei_vitem key;
			if (k > 0)
				tidei_buf_putc(out, ',');
			if (tidei_val_next(r, &key) != 0 || key.type != TIDEI_V_STR)
				return -1;
			tidei_json_str(out, key.u.s.p, key.u.s.n);
			tidei_buf_putc(out, ':');
			if (encode(out, r, depth + 1) != 0)
				return -1;
		}
		tidei_buf_putc(out, '}');
		return 0;
	}
	return -1;
}

int
tidei_json_encode(tidei_buf *out, tidei_vreader *r)
{
	return encode(out, r, 0);
}

/* ------------------------------------------------------------------------
 * Base64 and UTF-8
 * ------------------------------------------------------------------------ */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void
tidei_base64_encode(tidei_buf *out, const uint8_t *p, size_t n)
{
	size_t k;

	if (tidei_buf_reserve(out, (n + 2) / 3 * 4) != 0)
		return;
	for (k = 0; k + 2 < n; k += 3) {
		uint32_t v = (uint32_t)p[k] << 16 | (uint32_t)p[k + 1] << 8 | p[k + 2];
		char q[4] = { b64[v >> 18], b64[(v >> 12) & 63], b64[(v >> 6) & 63], b64[v & 63] };
		tidei_buf_put(out, q, 4);
	}
	if (k < n) {
		uint32_t v = (uint32_t)p[k] << 16 | (k + 1 < n ? (uint32_t)p[k + 1] << 8 : 0);
		char q[4] = { b64[v >> 18], b64[(v >> 12) & 63],
			      k + 1 < n ? b64[(v >> 6) & 63] : '=', '=' };
		tidei_buf_put(out, q, 4);
	}
}

static int
b64val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

long
tidei_base64_decode(tidei_buf *out, const char *s, size_t n)
{
	size_t start = out->len;

	if (n % 4 != 0)
		return -1;
	for (size_t k = 0; k < n; k += 4) {
		int v[4];
		int pad = 0;
		for (int j = 0; j < 4; j++) {
			unsigned char c = (unsigned char)s[k + j];
			if (c == '=' && k + 4 == n && j >= 2) {
				v[j] = 0;
				pad++;
			} else if (pad > 0 || (v[j] = b64val(c)) < 0) {
				return -1;
			}
		}
		uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 |
			     (uint32_t)v[3];
		tidei_buf_putc(out, (uint8_t)(w >> 16));
		if (pad < 2)
			tidei_buf_putc(out, (uint8_t)(w >> 8));
		if (pad < 1)
			tidei_buf_putc(out, (uint8_t)w);
	}
	return (long)(out->len - start);
}

/* Why a string is not well-formed UTF-8. */
enum { U_OK, U_BAD, U_TRUNCATED, U_OVERLONG, U_SURROGATE, U_BEYOND };

static const char *const utf8_why[] = {
	[U_OK] = NULL,
	[U_BAD] = "invalid UTF-8 byte",
	[U_TRUNCATED] = "truncated UTF-8 sequence",
	[U_OVERLONG] = "overlong UTF-8 form",
	[U_SURROGATE] = "UTF-8 encoded surrogate (U+D800 to U+DFFF)",
	[U_BEYOND] = "UTF-8 sequence of a code point above U+10FFFF",
};

#define HIGHS 0x8080808080808080ull

/* RFC 3629 section 4, as a scan: U_OK, or why s[0..n) is not UTF-8 with
 * the offset of the sequence at fault in *at.  *four is set if there is a
 * four-byte sequence.  The ASCII before the first other byte goes eight
 * bytes at a time; after it, text is mixed and goes byte by byte. */
static int
utf8_scan(const unsigned char *s, size_t n, size_t *at, int *four)
{
	size_t k = 0;
	int why = U_OK;

	*four = 0;
	while (n - k >= 8) {
		uint64_t w;
		memcpy(&w, s + k, 8);
		if ((w & HIGHS) != 0)
			break;
		k += 8;
	}
	while (k < n) {
		unsigned c = s[k], more, j;
		if (c < 0x80) {
			k++;
			continue;
		}
		if (c < 0xc2) { /* a continuation byte, or C0 and C1 (overlong ASCII) */
			why = c < 0xc0 ? U_BAD : U_OVERLONG;
			break;
		}
		if (c > 0xf4) { /* F5 to F7 would lead past U+10FFFF; F8 to FF nothing */
			why = c < 0xf8 ? U_BEYOND : U_BAD;
			break;
		}
		more = c < 0xe0 ? 1 : c < 0xf0 ? 2 : 3;
		for (j = 1; j <= more; j++)
			if (k + j >= n || (s[k + j] & 0xc0) != 0x80)
				break;
		if (j <= more) {
			why = U_TRUNCATED;
			break;
		}
		/* the second byte's range is what tells the rest apart */
		if ((c == 0xe0 && s[k + 1] < 0xa0) || (c == 0xf0 && s[k + 1] < 0x90)) {
			why = U_OVERLONG;
			break;
		}
		if (c == 0xed && s[k + 1] >= 0xa0) {
			why = U_SURROGATE;
			break;
		}
		if (c == 0xf4 && s[k + 1] >= 0x90) {
			why = U_BEYOND;
			break;
		}
		*four |= more == 3;
		k += more + 1;
	}
	*at = k;
	return why;
}

size_t
tidei_utf8_cut(const char *s, size_t n, size_t max)
{
	if (n <= max)
		return n;
	/* s[max] is the first byte left out: back off while it continues a
	 * sequence */
	while (max > 0 && ((unsigned char)s[max] & 0xc0) == 0x80)
		max--;
	return max;
}

int
tidei_utf8_valid(const char *s, size_t n)
{
	size_t at;
	int four;

	return memchr(s, '\0', n) == NULL &&
	       utf8_scan((const unsigned char *)s, n, &at, &four) == U_OK;
}

const char *
tidei_utf8_check(const char *s, size_t n, size_t *at)
{
	size_t where = 0;
	int four, why = utf8_scan((const unsigned char *)s, n, &where, &four);

	if (at != NULL)
		*at = where;
	return utf8_why[why];
}

/* ------------------------------------------------------------------------
 * Strictness around yajl
 *
 * yajl checks only the shape of UTF-8 (a lead byte, then the right number
 * of continuation bytes), so it passes overlong forms, encoded surrogates
 * and sequences past U+10FFFF.  It decodes a \u escape of a high surrogate
 * that no \u escape follows to "?", pairs it with whatever \u escape does
 * follow, and writes a lone low surrogate as the three bytes of an encoded
 * surrogate.  It also takes vertical tab and form feed for whitespace.
 *
 * A string without escapes reaches the callback as a pointer into the
 * text, and its bytes are checked where they are.  One with escapes
 * arrives decoded into yajl's own buffer; when that may hide a surrogate
 * escape, its raw token, which ends just before the parser's offset, is
 * found again and read for its escapes.  Escapes are rare in events and
 * most strings are ASCII, so the common case costs a glance: a few word
 * loads in tidei_json_str_plain() (json.h, inline), or in the event
 * parser two comparisons with the offset of the message's first byte past
 * ASCII (tidei_json_ascii_end).
 * ------------------------------------------------------------------------ */

static unsigned
hex4(const char *p)
{
	unsigned v = 0;

	for (int k = 0; k < 4; k++) {
		unsigned char c = (unsigned char)p[k];
		v = v << 4 | (c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
	}
	return v;
}

/* The escapes and raw bytes of the token chunk[from..to), between its
 * quotes (yajl has checked the escapes' syntax).  NULL if they are fine. */
static const char *
check_escaped(const char *chunk, size_t from, size_t to, size_t *at, char *why)
{
	size_t k = from, run = from;
	int four;

	while (k < to) {
		const char *bs = memchr(chunk + k, '\\', to - k);
		unsigned cp, lo;
		int u;
		if (bs == NULL)
			break;
		k = (size_t)(bs - chunk);
		/* the raw bytes since the last escape */
		u = utf8_scan((const unsigned char *)chunk + run, k - run, at, &four);
		if (u != U_OK) {
			*at += run;
			snprintf(why, TIDEI_JSON_WHYLEN, "%s in a string", utf8_why[u]);
			return why;
		}
		if (chunk[k + 1] != 'u') {
			k += 2;
			run = k;
			continue;
		}
		cp = hex4(chunk + k + 2);
		*at = k;
		if (cp >= 0xdc00 && cp <= 0xdfff) {
			snprintf(why, TIDEI_JSON_WHYLEN,
				 "\\u%.4s in a string is a low surrogate with no high "
				 "surrogate before it",
				 chunk + k + 2);
			return why;
		}
		if (cp >= 0xd800 && cp <= 0xdbff) {
			if (to - k < 12 || chunk[k + 6] != '\\' || chunk[k + 7] != 'u' ||
			    (lo = hex4(chunk + k + 8)) < 0xdc00 || lo > 0xdfff) {
				snprintf(why, TIDEI_JSON_WHYLEN,
					 "\\u%.4s in a string is a high surrogate not followed "
					 "by a \\u escape of a low surrogate",
					 chunk + k + 2);
				return why;
			}
			k += 6;
		}
		k += 6;
		run = k;
	}
	{
		int u = utf8_scan((const unsigned char *)chunk + run, to - run, at, &four);
		if (u == U_OK)
			return NULL;
		*at += run;
		snprintf(why, TIDEI_JSON_WHYLEN, "%s in a string", utf8_why[u]);
		return why;
	}
}

const char *
tidei_json_check_str(yajl_handle h, const char *chunk, size_t chunk_len, const unsigned char *s,
		     size_t n, size_t *at, char *why)
{
	uintptr_t p = (uintptr_t)s, c = (uintptr_t)chunk;
	size_t open, end;
	int u, four;

	u = utf8_scan(s, n, at, &four);
	if (p >= c && p - c <= chunk_len) {
		/* no escapes: yajl passed the bytes between the quotes */
		if (u == U_OK)
			return NULL;
		*at += (size_t)(p - c);
		snprintf(why, TIDEI_JSON_WHYLEN, "%s in a string", utf8_why[u]);
		return why;
	}
	/* Escapes.  yajl decodes each escape other than a surrogate one to a
	 * whole sequence, so without those the decoded string is valid exactly
	 * when the raw bytes between the escapes are.  A surrogate escape
	 * leaves a trace: a "?" (a high one alone), an encoded surrogate (a
	 * low one alone) or a four-byte sequence (a pair, or a high one with
	 * any \u escape after it).  Only then is the raw token read. */
	if (u == U_OK && !four && memchr(s, '?', n) == NULL)
		return NULL;
	/* chunk[end - 1] is the closing quote; the opening one is the nearest
	 * quote before it with an even number of backslashes before it (an
	 * odd number escapes it). */
	end = yajl_get_bytes_consumed(h);
	if (end >= 2 && chunk[end - 1] == '"') {
		const char *q;
		for (open = end - 1; (q = memrchr(chunk, '"', open)) != NULL;) {
			size_t bs = 0;
			open = (size_t)(q - chunk);
			while (bs < open && chunk[open - 1 - bs] == '\\')
				bs++;
			if (bs % 2 == 0)
				return check_escaped(chunk, open + 1, end - 1, at, why);
		}
	}
	/* Not where it should be (yajl fed from a buffer of its own): judge
	 * what was decoded, which misses only the "?" of a lone high
	 * surrogate. */
	if (u == U_OK)
		return NULL;
	*at = end;
	snprintf(why, TIDEI_JSON_WHYLEN, "%s in a string", utf8_why[u]);
	return why;
}

size_t
tidei_json_ascii_end(const char *s, size_t from, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t k = from;

	/* 32 bytes a step, then 8: each message is read through once */
	while (len - k >= 32) {
		uint64_t w[4];
		memcpy(w, p + k, sizeof w);
		if (((w[0] | w[1] | w[2] | w[3]) & HIGHS) != 0)
			break;
		k += 32;
	}
	while (len - k >= 8) {
		uint64_t w;
		memcpy(&w, p + k, 8);
		if ((w & HIGHS) != 0)
			break;
		k += 8;
	}
	while (k < len && p[k] < 0x80)
		k++;
	return k;
}

size_t
tidei_json_badspace(const char *s, size_t from, size_t len)
{
	const char *ff, *vt;

	if (from >= len)
		return len;
	/* two memchr: each is a vector scan, faster than one loop for both */
	ff = memchr(s + from, '\f', len - from);
	vt = memchr(s + from, '\v', (size_t)((ff ? ff : s + len) - (s + from)));
	if (vt != NULL)
		return (size_t)(vt - s);
	return ff ? (size_t)(ff - s) : len;
}

int
tidei_json_badspace_err(char *err, char c, size_t pos)
{
	return tidei_err(err, -1, "not valid JSON at byte %zu: %s is not JSON whitespace", pos,
			 c == '\f' ? "a form feed" : "a vertical tab");
}
