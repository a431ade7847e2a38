/*
 * jscan.c - a strict JSON scanner for the common case (see jscan.h).
 *
 * One pass over the text, with an explicit stack of open containers and
 * no callbacks: tokens go to a tape of fixed-size entries that is reused
 * from one value to the next, so a value costs no allocation once the
 * tape has grown to its size.  Strings are found eight bytes at a time
 * (a quote, a backslash, a control byte or a byte past ASCII stops the
 * word loop); one without escapes is left where it is in the input.
 *
 * Whatever is not plainly valid ends the scan with -1 and nothing else:
 * the caller's slow path (yajl, and the strictness checks around it in
 * json.c) then reads the same text and says what is wrong, as it did
 * before this scanner existed.  The scanner never has to explain itself.
 */
#include "config.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "jscan.h"
#include "json.h"

#define ONES 0x0101010101010101ull
#define HIGHS 0x8080808080808080ull

void
tidei_jtape_free(tidei_jtape *tp)
{
	free(tp->t);
	tidei_buf_free(&tp->strs);
	memset(tp, 0, sizeof *tp);
}

static inline tidei_jtok *
push(tidei_jtape *tp)
{
	if (tp->n == tp->cap && tidei_array_grow(&tp->t, &tp->cap, tp->n, sizeof *tp->t, 256) != 0)
		return NULL;
	return &tp->t[tp->n++];
}

/* Nonzero if a byte of @p w is a quote, a backslash, below 0x20 or past
 * ASCII: the bytes a string's word loop stops at. */
static inline uint64_t
special(uint64_t w)
{
	uint64_t q = w ^ (ONES * '"'), b = w ^ (ONES * '\\');

	return ((q - ONES) & ~q) | ((b - ONES) & ~b) | ((w - ONES * 0x20) & ~w) | w;
}

/* The offset of the first byte at or after @p k that a string's loop
 * must look at (a quote, a backslash, a control byte, a byte past
 * ASCII), or @p len.  Sixteen bytes a step where SSE2 is there (every
 * x86-64), eight otherwise. */
static inline size_t
plain_run(const unsigned char *s, size_t len, size_t k)
{
#if defined(__SSE2__)
	const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\'),
		      ctl = _mm_set1_epi8(0x1f);
	while (len - k >= 16) {
		__m128i v = _mm_loadu_si128((const __m128i *)(const void *)(s + k));
		__m128i hit = _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash));
		unsigned mask;
		/* max(v, 0x1f) == 0x1f: v at most 0x1f, unsigned */
		hit = _mm_or_si128(hit, _mm_cmpeq_epi8(_mm_max_epu8(v, ctl), ctl));
		mask = (unsigned)(_mm_movemask_epi8(hit) | _mm_movemask_epi8(v));
		if (mask != 0)
			return k + (size_t)__builtin_ctz(mask);
		k += 16;
	}
#endif
	while (len - k >= 8) {
		uint64_t w;
		memcpy(&w, s + k, 8);
		if ((special(w) & HIGHS) != 0)
			break;
		k += 8;
	}
	while (k < len && s[k] != '"' && s[k] != '\\' && s[k] >= 0x20 && s[k] < 0x80)
		k++;
	return k;
}

static inline int
hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c |= 0x20;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Decode the string whose bytes (between the quotes) are s[from..to),
 * with at least one escape, onto the end of @p out.  -1 for an escape
 * the scanner leaves to yajl: a bad one, or any surrogate.  yajl's
 * decoding is followed: \u0000 is one NUL byte, other code points their
 * shortest UTF-8 form. */
static int
unescape(tidei_buf *out, const unsigned char *s, size_t from, size_t to)
{
	size_t run = from, k = from;

	while (k < to) {
		unsigned char c;
		char u[4];
		size_t ul;
		int cp;
		if (s[k] != '\\') {
			k++;
			continue;
		}
		tidei_buf_put(out, s + run, k - run);
		if (k + 1 >= to)
			return -1;
		c = s[k + 1];
		k += 2;
		switch (c) {
		case '"': tidei_buf_putc(out, '"'); break;
		case '\\': tidei_buf_putc(out, '\\'); break;
		case '/': tidei_buf_putc(out, '/'); break;
		case 'b': tidei_buf_putc(out, '\b'); break;
		case 'f': tidei_buf_putc(out, '\f'); break;
		case 'n': tidei_buf_putc(out, '\n'); break;
		case 'r': tidei_buf_putc(out, '\r'); break;
		case 't': tidei_buf_putc(out, '\t'); break;
		case 'u':
			if (to - k < 4)
				return -1;
			cp = 0;
			for (int j = 0; j < 4; j++) {
				int h = hexval(s[k + j]);
				if (h < 0)
					return -1;
				cp = cp << 4 | h;
			}
			k += 4;
			if (cp >= 0xd800 && cp <= 0xdfff)
				return -1;
			if (cp < 0x80) {
				u[0] = (char)cp;
				ul = 1;
			} else if (cp < 0x800) {
				u[0] = (char)(0xc0 | cp >> 6);
				u[1] = (char)(0x80 | (cp & 0x3f));
				ul = 2;
			} else {
				u[0] = (char)(0xe0 | cp >> 12);
				u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
				u[2] = (char)(0x80 | (cp & 0x3f));
				ul = 3;
			}
			tidei_buf_put(out, u, ul);
			break;
		default: return -1;
		}
		run = k;
	}
	tidei_buf_put(out, s + run, to - run);
	return out->failed ? -1 : 0;
}

/* The string whose opening quote is s[at]: a token of @p kind.  Returns
 * the offset past the closing quote, or 0 to give up. */
static size_t
string(tidei_jtape *tp, const unsigned char *s, size_t len, size_t at, int kind)
{
	size_t k = at + 1, from = k;
	int escaped = 0, high = 0;
	tidei_jtok *t;

	for (;;) {
		k = plain_run(s, len, k);
		if (k >= len)
			return 0;
		if (s[k] == '"')
			break;
		if (s[k] == '\\') {
			/* the escaped byte is skipped here and judged by unescape() */
			escaped = 1;
			k += 2;
			if (k >= len)
				return 0;
			continue;
		}
		if (s[k] < 0x20)
			return 0; /* a control byte, or a NUL */
		high |= s[k] >= 0x80;
		k++;
	}
	if (high) {
		/* the raw bytes: escapes are ASCII, so they do not change the verdict */
		size_t bad;
		if (tidei_utf8_check((const char *)s + from, k - from, &bad) != NULL)
			return 0;
	}
	if ((t = push(tp)) == NULL)
		return 0;
	t->kind = (uint8_t)kind;
	t->end = k + 1;
	if (!escaped) {
		t->decoded = 0;
		t->off = from;
		t->len = (uint32_t)(k - from);
		return k - from > UINT32_MAX ? 0 : k + 1;
	}
	t->decoded = 1;
	t->off = tp->strs.len;
	if (unescape(&tp->strs, s, from, k) != 0)
		return 0;
	t->len = (uint32_t)(tp->strs.len - t->off);
	/* What the slow path's strictness checks read again from the raw text
	 * (json.c, tidei_json_check_str): a decoded string with a four-byte
	 * sequence or a '?' in it.  Left to it. */
	for (size_t j = t->off; j < tp->strs.len; j++)
		if (tp->strs.p[j] == '?' || tp->strs.p[j] >= 0xf0)
			return 0;
	return k + 1;
}

/* A number at s[at] as RFC 8259 writes it; the offset past it, or 0. */
static size_t
number(tidei_jtape *tp, const unsigned char *s, size_t len, size_t at)
{
	size_t k = at;
	tidei_jtok *t;

#define DIGIT(i) ((i) < len && s[i] >= '0' && s[i] <= '9')
	if (s[k] == '-')
		k++;
	if (k < len && s[k] == '0')
		k++;
	else if (DIGIT(k))
		while (DIGIT(k))
			k++;
	else
		return 0;
	if (k < len && s[k] == '.') {
		k++;
		if (!DIGIT(k))
			return 0;
		while (DIGIT(k))
			k++;
	}
	if (k < len && (s[k] == 'e' || s[k] == 'E')) {
		k++;
		if (k < len && (s[k] == '+' || s[k] == '-'))
			k++;
		if (!DIGIT(k))
			return 0;
		while (DIGIT(k))
			k++;
	}
#undef DIGIT
	/* yajl reads on while a number could go on; the end of the input
	 * leaves it waiting for more, and a letter is its error */
	if (k >= len || (s[k] != ',' && s[k] != '}' && s[k] != ']' && s[k] != ' ' && s[k] != '\n' &&
			 s[k] != '\r' && s[k] != '\t'))
		return 0;
	if (k - at > UINT32_MAX || (t = push(tp)) == NULL)
		return 0;
	t->kind = TIDEI_JT_NUMBER;
	t->decoded = 0;
	t->off = at;
	t->len = (uint32_t)(k - at);
	t->end = k;
	return k;
}

/* true, false or null at s[at]; the offset past it, or 0. */
static size_t
literal(tidei_jtape *tp, const unsigned char *s, size_t len, size_t at)
{
	static const struct {
		const char *text;
		size_t n;
		int kind;
	} lits[] = { { "null", 4, TIDEI_JT_NULL },
		     { "true", 4, TIDEI_JT_TRUE },
		     { "false", 5, TIDEI_JT_FALSE } };
	int i = s[at] == 'n' ? 0 : s[at] == 't' ? 1 : 2;
	size_t k = at + lits[i].n;
	tidei_jtok *t;

	if (len - at < lits[i].n || memcmp(s + at, lits[i].text, lits[i].n) != 0)
		return 0;
	/* a letter after it would make it another word to yajl */
	if (k < len && ((s[k] | 0x20) >= 'a' && (s[k] | 0x20) <= 'z'))
		return 0;
	if ((t = push(tp)) == NULL)
		return 0;
	t->kind = (uint8_t)lits[i].kind;
	t->decoded = 0;
	t->off = at;
	t->len = 0;
	t->end = k;
	return k;
}

static inline size_t
space(const unsigned char *s, size_t len, size_t k)
{
	while (k < len && (s[k] == ' ' || s[k] == '\n' || s[k] == '\r' || s[k] == '\t'))
		k++;
	return k;
}

/* A bracket token, opening or closing, that ends at @p end. */
static inline int
bracket(tidei_jtape *tp, int kind, size_t end)
{
	tidei_jtok *t = push(tp);

	if (t == NULL)
		return -1;
	t->kind = (uint8_t)kind;
	t->decoded = 0;
	t->off = end - 1;
	t->len = 0;
	t->end = end;
	return 0;
}

long
tidei_jscan(tidei_jtape *tp, const char *text, size_t len, size_t at)
{
	const unsigned char *s = (const unsigned char *)text;
	unsigned char is_map[TIDEI_JSCAN_DEPTH];
	int depth = 0;
	size_t k = at;

	tp->n = 0;
	tidei_buf_reset(&tp->strs);
	if (k >= len || (s[k] != '{' && s[k] != '['))
		return -1;
	if (len > (size_t)LONG_MAX)
		return -1;
	/* Each round reads one value where a value may stand (k is on its
	 * first byte), then what follows it up to the next value. */
	for (;;) {
		switch (s[k]) {
		case '{':
		case '[':
			if (depth == TIDEI_JSCAN_DEPTH)
				return -1;
			is_map[depth++] = s[k] == '{';
			if (bracket(tp, s[k] == '{' ? TIDEI_JT_MAP : TIDEI_JT_ARRAY, k + 1) != 0)
				return -1;
			k = space(s, len, k + 1);
			if (k >= len)
				return -1;
			if (s[k] == (is_map[depth - 1] ? '}' : ']'))
				goto close; /* empty */
			if (is_map[depth - 1])
				goto key;
			continue;
		case '"': k = string(tp, s, len, k, TIDEI_JT_STRING); break;
		case 't':
		case 'f':
		case 'n': k = literal(tp, s, len, k); break;
		default:
			if (s[k] == '-' || (s[k] >= '0' && s[k] <= '9'))
				k = number(tp, s, len, k);
			else
				k = 0;
			break;
		}
		if (k == 0)
			return -1;
	after:
		/* a value ended at k: what comes next in its container */
		k = space(s, len, k);
		if (k >= len)
			return -1;
		if (s[k] == ',') {
			k = space(s, len, k + 1);
			if (k >= len)
				return -1;
			if (is_map[depth - 1])
				goto key;
			continue;
		}
		if (s[k] != (is_map[depth - 1] ? '}' : ']'))
			return -1;
	close:
		/* s[k] closes the innermost container */
		if (bracket(tp, TIDEI_JT_END, k + 1) != 0)
			return -1;
		k++;
		if (--depth == 0)
			return (long)k;
		goto after;
	key:
		if (s[k] != '"' || (k = string(tp, s, len, k, TIDEI_JT_KEY)) == 0)
			return -1;
		k = space(s, len, k);
		if (k >= len || s[k] != ':')
			return -1;
		k = space(s, len, k + 1);
		if (k >= len)
			return -1;
	}
}
