/*
 * json.c - JSON parsing (through yajl) into encoded values, and JSON
 * output from encoded values.
 *
 * Parsing is event-driven: yajl calls back for each token and tidei_jsonw
 * appends the encoded form, so no intermediate tree is allocated.  The
 * output side is a direct writer; it only ever formats values that were
 * validated on the way in.
 */
#include "config.h"

#include <errno.h>
#include <math.h>
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
	/* An exponent, many digits, or an integer beyond 64 bits. */
	if (n >= sizeof tmp) {
		copy = malloc(n + 1);
		if (copy == NULL) {
			*d = 0;
			return 0;
		}
	}
	memcpy(copy, s, n);
	copy[n] = '\0';
	*d = strtod(copy, NULL);
	if (copy != tmp)
		free(copy);
	return 0;
}

int
tidei_jsonw_number(tidei_jsonw *w, const char *s, size_t n)
{
	int64_t i;
	double d;

	count_value(w);
	if (tidei_json_number(s, n, &i, &d))
		tidei_val_int(w->out, i);
	else
		tidei_val_double(w->out, d);
	return 0;
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

static int
cb_null(void *ctx)
{
	return tidei_jsonw_null(ctx) == 0;
}

static int
cb_bool(void *ctx, int v)
{
	return tidei_jsonw_bool(ctx, v) == 0;
}

static int
cb_number(void *ctx, const char *s, size_t n)
{
	return tidei_jsonw_number(ctx, s, n) == 0;
}

static int
cb_string(void *ctx, const unsigned char *s, size_t n)
{
	return tidei_jsonw_string(ctx, (const char *)s, n) == 0;
}

static int
cb_key(void *ctx, const unsigned char *s, size_t n)
{
	return tidei_jsonw_key(ctx, (const char *)s, n) == 0;
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
	return tidei_jsonw_end(ctx) == 0;
}

static const yajl_callbacks decode_callbacks = {
	cb_null,      cb_bool, NULL,   NULL,           cb_number, cb_string,
	cb_start_map, cb_key,  cb_end, cb_start_array, cb_end,
};

int
tidei_json_decode(const char *text, size_t len, tidei_buf *out, char *err)
{
	tidei_jsonw w;
	yajl_handle h;
	yajl_status st;
	int rc = 0;

	tidei_jsonw_init(&w, out);
	h = yajl_alloc(&decode_callbacks, NULL, &w);
	if (h == NULL)
		return tidei_err(err, -1, "out of memory");
	st = yajl_parse(h, (const unsigned char *)text, len);
	if (st == yajl_status_ok)
		st = yajl_complete_parse(h);
	if (w.too_deep) {
		rc = tidei_err(err, -1, "JSON nested deeper than %d levels", TIDEI_JSON_MAXDEPTH);
	} else if (st != yajl_status_ok) {
		unsigned char *msg = yajl_get_error(h, 0, NULL, 0);
		rc = tidei_err(err, -1, "not valid JSON at byte %zu: %s",
			       yajl_get_bytes_consumed(h), (const char *)msg);
		yajl_free_error(h, msg);
	} else if (out->failed) {
		rc = tidei_err(err, -1, "out of memory");
	}
	yajl_free(h);
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

int
tidei_utf8_valid(const char *str, size_t n)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t k = 0;

	while (k < n) {
		unsigned char c = s[k];
		uint32_t cp;
		int more;

		if (c == 0)
			return 0;
		if (c < 0x80) {
			k++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			more = 1;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			more = 2;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			more = 3;
			cp = c & 0x07;
		} else {
			return 0;
		}
		if (n - k <= (size_t)more)
			return 0;
		for (int j = 1; j <= more; j++) {
			if ((s[k + j] & 0xc0) != 0x80)
				return 0;
			cp = cp << 6 | (s[k + j] & 0x3f);
		}
		/* overlong forms, surrogates and values past U+10FFFF */
		if ((more == 2 && cp < 0x800) || (more == 3 && cp < 0x10000) ||
		    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
			return 0;
		k += (size_t)more + 1;
	}
	return 1;
}
