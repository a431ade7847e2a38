/*
 * event.c - THE event format.
 *
 * Owns three things and nothing else:
 *  1. CloudEvents 1.0 validation (tidei_evb): every attribute is checked as
 *     it is set, so the JSON parser and the Lua emit path share one set of
 *     rules and one set of error messages.
 *  2. The stored record: a fixed little-endian header (version, prev,
 *     recorded, the lengths of the string attributes), the string
 *     attributes NUL-terminated, the other extensions as an encoded map,
 *     then the data as an encoded value.  Views (struct tide_event) point
 *     into it without copying.
 *  3. The JSON form out: writing records back as one JSON line.  Parsing
 *     messages in is eparser.c's, through the builder above.
 *
 * It must not know about LMDB, sockets or Lua: the log stamps records
 * through tidei_event_stamp(), the Lua bindings build them through
 * tidei_evb.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "event.h"

const char *const tidei_attr_names[TIDEI_NATTR] = {
	"id",         "source",        "type",        "subject", "time", "datacontenttype",
	"dataschema", "correlationid", "causationid",
};

#define SEEN_SPECVERSION TIDEI_SEEN_SPECVERSION
#define SEEN_DATA TIDEI_SEEN_DATA
#define SEEN_DATA_BASE64 TIDEI_SEEN_DATA_BASE64

#define ABSENT UINT32_MAX

/* Record header layout. */
#define OFF_FORMAT 0
#define OFF_FLAGS 1
#define OFF_DEPTH 2 /* u16, tidei_event_depth(); 0 in records from before it */
#define OFF_EXTLEN 4
#define OFF_VERSION 8
#define OFF_PREV 16
#define OFF_RECORDED 24
#define OFF_LENS 32
#define REC_FORMAT 1
#define FLAG_DATA 1

_Static_assert(OFF_LENS + 4 * TIDEI_NATTR == TIDEI_REC_HEADER, "record header size");

/* ------------------------------------------------------------------------
 * Records
 * ------------------------------------------------------------------------ */

unsigned
tidei_event_depth(const struct tide_event *ev)
{
	if (ev->rec == NULL || ev->rec_len < TIDEI_REC_HEADER)
		return 0;
	return (unsigned)ev->rec[OFF_DEPTH] | (unsigned)ev->rec[OFF_DEPTH + 1] << 8;
}

void
tidei_event_set_depth(uint8_t *rec, size_t len, unsigned depth)
{
	if (len < TIDEI_REC_HEADER || depth > UINT16_MAX)
		return;
	rec[OFF_DEPTH] = (uint8_t)(depth & 0xff);
	rec[OFF_DEPTH + 1] = (uint8_t)(depth >> 8);
}

int
tidei_event_decode(struct tide_event *ev, const uint8_t *rec, size_t len)
{
	size_t pos = TIDEI_REC_HEADER;
	uint32_t ext_len;

	if (len < TIDEI_REC_HEADER || rec[OFF_FORMAT] != REC_FORMAT)
		return -1;
	ev->version = tidei_ld64(rec + OFF_VERSION);
	ev->prev = tidei_ld64(rec + OFF_PREV);
	ev->recorded = (int64_t)tidei_ld64(rec + OFF_RECORDED);
	for (int a = 0; a < TIDEI_NATTR; a++) {
		uint32_t n = tidei_ld32(rec + OFF_LENS + 4 * a);
		if (n == ABSENT) {
			ev->attr[a] = NULL;
			ev->len[a] = 0;
			continue;
		}
		if (len - pos < (size_t)n + 1 || rec[pos + n] != '\0')
			return -1;
		ev->attr[a] = (const char *)rec + pos;
		ev->len[a] = n;
		pos += (size_t)n + 1;
	}
	ext_len = tidei_ld32(rec + OFF_EXTLEN);
	if (len - pos < ext_len)
		return -1;
	ev->ext = ext_len ? rec + pos : NULL;
	ev->ext_len = ext_len;
	pos += ext_len;
	if (rec[OFF_FLAGS] & FLAG_DATA) {
		/* an encoded value is one byte or more, and readers of the
		 * data look at its first byte */
		if (pos == len)
			return -1;
		ev->data = rec + pos;
		ev->data_len = len - pos;
	} else {
		ev->data = NULL;
		ev->data_len = 0;
	}
	ev->rec = rec;
	ev->rec_len = len;
	ev->attrs = NULL; /* the view's maker may give it a buffer */
	ev->handling = NULL;
	return 0;
}

void
tidei_event_stamp(uint8_t *rec, uint64_t version, uint64_t prev, int64_t recorded)
{
	tidei_st64(rec + OFF_VERSION, version);
	tidei_st64(rec + OFF_PREV, prev);
	tidei_st64(rec + OFF_RECORDED, (uint64_t)recorded);
}

int
tidei_time_format(char *out, int64_t ns)
{
	time_t sec = (time_t)(ns / 1000000000);
	long frac = (long)(ns % 1000000000);
	struct tm tm;

	if (frac < 0) {
		frac += 1000000000;
		sec--;
	}
	gmtime_r(&sec, &tm);
	return snprintf(out, 32, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ", tm.tm_year + 1900,
			tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac / 1000);
}

static void
json_key(tidei_buf *out, const char *k, int first)
{
	if (!first)
		tidei_buf_putc(out, ',');
	tidei_buf_putc(out, '"');
	tidei_buf_puts(out, k);
	tidei_buf_put(out, "\":", 2);
}

int
tidei_event_json(tidei_buf *out, const struct tide_event *ev)
{
	char tmp[40];
	int n;

	tidei_buf_putc(out, '{');
	if (ev->seq > 0) {
		n = snprintf(tmp, sizeof tmp, "{\"seq\":%llu", (unsigned long long)ev->seq);
		tidei_buf_put(out, tmp + 1, (size_t)n - 1);
		if (ev->version > 0) {
			n = snprintf(tmp, sizeof tmp, ",\"version\":%llu",
				     (unsigned long long)ev->version);
			tidei_buf_put(out, tmp, (size_t)n);
		}
		json_key(out, "recorded", 0);
		tmp[0] = '"';
		n = tidei_time_format(tmp + 1, ev->recorded);
		tmp[n + 1] = '"';
		tidei_buf_put(out, tmp, (size_t)n + 2);
		tidei_buf_putc(out, ',');
	}
	tidei_buf_puts(out, "\"specversion\":\"1.0\"");
	for (int a = 0; a < TIDEI_NATTR; a++) {
		if (ev->attr[a] == NULL)
			continue;
		json_key(out, tidei_attr_names[a], 0);
		tidei_json_str(out, ev->attr[a], ev->len[a]);
	}
	if (ev->ext != NULL) {
		tidei_vreader r = { ev->ext, ev->ext + ev->ext_len };
		tidei_vitem map, key;
		if (tidei_val_next(&r, &map) != 0 || map.type != TIDEI_V_MAP)
			return -1;
		for (uint32_t k = 0; k < map.u.count; k++) {
			if (tidei_val_next(&r, &key) != 0 || key.type != TIDEI_V_STR)
				return -1;
			tidei_buf_putc(out, ',');
			tidei_json_str(out, key.u.s.p, key.u.s.n);
			tidei_buf_putc(out, ':');
			if (tidei_json_encode(out, &r) != 0)
				return -1;
		}
	}
	if (ev->data != NULL) {
		tidei_vreader r = { ev->data, ev->data + ev->data_len };
		/* Binary data travels as data_base64 (CloudEvents JSON format 3.1). */
		json_key(out,
			 ev->data_len > 0 && (ev->data[0] == 0xc4 || ev->data[0] == 0xc5 ||
					      ev->data[0] == 0xc6)
				 ? "data_base64"
				 : "data",
			 0);
		if (tidei_json_encode(out, &r) != 0)
			return -1;
	}
	tidei_buf_putc(out, '}');
	return out->failed ? -1 : 0;
}

TIDE_API uint64_t
tide_event_seq(const tide_event *ev)
{
	return ev->seq;
}

TIDE_API uint64_t
tide_event_version(const tide_event *ev)
{
	return ev->version;
}

TIDE_API int64_t
tide_event_recorded(const tide_event *ev)
{
	return ev->recorded;
}

TIDE_API int
tide_event_time(const tide_event *ev, int64_t *ns)
{
	if (ev == NULL || ns == NULL)
		return tidei_fail(TIDE_EINVAL, "tide_event_time: ev and ns must not be NULL");
	if (ev->attr[TIDEI_A_TIME] == NULL)
		return tidei_fail(TIDE_ENOTFOUND, "the event has no time attribute");
	if (tidei_time_parse(ev->attr[TIDEI_A_TIME], ev->len[TIDEI_A_TIME], ns) != 0)
		return tidei_fail(TIDE_EINVAL,
				  "the event's time %.64s is outside what nanoseconds since 1970 "
				  "reach (1677 to 2262)",
				  ev->attr[TIDEI_A_TIME]);
	return TIDE_OK;
}

/* Whose extension strings ev->attrs holds: they stay put while the view
 * does, however many are asked for. */
typedef struct attrs_tag {
	const uint8_t *rec;
	size_t rec_len;
	uint64_t seq;
} attrs_tag;

/* Walk the extension map of @p ev: with @p out, copy every string value
 * with a NUL after it; with @p name, find its string's offset among them.
 * Returns the offset (from 0), or -1 when not found or not a string. */
static long
ext_walk(const tide_event *ev, tidei_buf *out, const char *name, size_t n, size_t *len)
{
	tidei_vreader r = { ev->ext, ev->ext + ev->ext_len };
	tidei_vitem map, key, val;
	size_t off = 0;

	if (tidei_val_next(&r, &map) != 0 || map.type != TIDEI_V_MAP)
		return -1;
	for (uint32_t k = 0; k < map.u.count; k++) {
		int match;
		if (tidei_val_next(&r, &key) != 0 || key.type != TIDEI_V_STR ||
		    tidei_val_next(&r, &val) != 0 || val.type == TIDEI_V_MAP ||
		    val.type == TIDEI_V_ARRAY) /* extensions are scalars */
			return -1;
		match = name != NULL && key.u.s.n == n && memcmp(key.u.s.p, name, n) == 0;
		if (val.type != TIDEI_V_STR) {
			if (match)
				return -1;
			continue;
		}
		if (match) {
			*len = val.u.s.n;
			return (long)off;
		}
		if (out != NULL) {
			tidei_buf_put(out, val.u.s.p, val.u.s.n);
			tidei_buf_putc(out, '\0');
		}
		off += val.u.s.n + 1;
	}
	return -1;
}

/* Extension @p name of @p ev, when a string.  Extension strings are not
 * NUL-terminated in the record: the first call for a view copies all of
 * them, each with a NUL, into ev->attrs (room for all is made first, and
 * nothing is written there again while the view is the same), so every
 * pointer handed out stays valid as long as the view. */
static const char *
ext_string(const tide_event *ev, const char *name, size_t n, size_t *len)
{
	tidei_buf *b = ev->attrs;
	attrs_tag tag = { ev->rec, ev->rec_len, ev->seq };
	size_t got = 0;
	long off;

	if (b->len < sizeof tag || memcmp(b->p, &tag, sizeof tag) != 0) {
		tidei_buf_reset(b);
		/* each string is shorter than its encoding plus its NUL */
		if (tidei_buf_grow(b, sizeof tag + ev->ext_len + 1) != 0)
			return NULL;
		tidei_buf_put(b, &tag, sizeof tag);
		ext_walk(ev, b, NULL, 0, NULL);
		if (b->failed) {
			tidei_buf_reset(b);
			return NULL;
		}
	}
	if ((off = ext_walk(ev, NULL, name, n, &got)) < 0)
		return NULL;
	if (len != NULL)
		*len = got;
	return (const char *)b->p + sizeof tag + (size_t)off;
}

TIDE_API const char *
tide_event_attr(const tide_event *ev, const char *name, size_t *len)
{
	size_t n = strlen(name);
	tidei_vreader r;
	tidei_vitem val;

	for (int a = 0; a < TIDEI_NATTR; a++) {
		if (strcmp(name, tidei_attr_names[a]) == 0) {
			if (len != NULL)
				*len = ev->len[a];
			return ev->attr[a];
		}
	}
	if (strcmp(name, "specversion") == 0) {
		if (len != NULL)
			*len = 3;
		return "1.0";
	}
	if (ev->ext == NULL || (ev->scratch == NULL && ev->attrs == NULL))
		return NULL;
	if (ev->attrs != NULL)
		return ext_string(ev, name, n, len);
	r.p = ev->ext;
	r.end = ev->ext + ev->ext_len;
	if (!tidei_val_find(&r, name, n) || tidei_val_next(&r, &val) != 0 ||
	    val.type != TIDEI_V_STR)
		return NULL;
	tidei_buf_reset(ev->scratch);
	tidei_buf_put(ev->scratch, val.u.s.p, val.u.s.n);
	tidei_buf_putc(ev->scratch, '\0');
	if (ev->scratch->failed)
		return NULL;
	if (len != NULL)
		*len = val.u.s.n;
	return (const char *)ev->scratch->p;
}

TIDE_API int
tide_event_json(const tide_event *ev, const char **json, size_t *len)
{
	if (ev == NULL || json == NULL)
		return tidei_fail(TIDE_EINVAL, "tide_event_json: ev and json must not be NULL");
	if (ev->scratch == NULL)
		return tidei_fail(TIDE_EINVAL, "tide_event_json: this view of an event has no "
					       "buffer (it is not one the C API handed out)");
	tidei_buf_reset(ev->scratch);
	if (tidei_event_json(ev->scratch, ev) != 0)
		return ev->scratch->failed ? tidei_fail(TIDE_ENOMEM, NULL)
					   : tidei_fail(TIDE_EIO, "event %llu is damaged",
							(unsigned long long)ev->seq);
	tidei_buf_putc(ev->scratch, '\0');
	if (ev->scratch->failed)
		return tidei_fail(TIDE_ENOMEM, NULL);
	*json = (const char *)ev->scratch->p;
	if (len != NULL)
		*len = ev->scratch->len - 1;
	return TIDE_OK;
}

/* ------------------------------------------------------------------------
 * Attribute syntax (CloudEvents 1.0 section 3.1 and the referenced RFCs)
 * ------------------------------------------------------------------------ */

static int
digits(const char *s, int n, int *out)
{
	int v = 0;

	for (int k = 0; k < n; k++) {
		if (s[k] < '0' || s[k] > '9')
			return 0;
		v = v * 10 + (s[k] - '0');
	}
	*out = v;
	return 1;
}

/* The fields of an RFC 3339 date-time. */
typedef struct time_fields {
	int y, mo, d, h, mi, se;
	int64_t frac;   /* nanoseconds (digits past the ninth dropped) */
	int64_t offset; /* seconds east of UTC */
} time_fields;

/* Check @p s as a date-time (RFC 3339 5.6: full-date "T" partial-time
 * time-offset) and, when @p f is not NULL, fill @p f.  1 if valid. */
static int
time_split(const char *s, size_t n, time_fields *f)
{
	static const int mdays[] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	int y, mo, d, h, mi, se, oh, om, scale = 0;
	int64_t frac = 0;
	size_t k = 19;

	if (n < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') ||
	    s[13] != ':' || s[16] != ':')
		return 0;
	if (!digits(s, 4, &y) || !digits(s + 5, 2, &mo) || !digits(s + 8, 2, &d) ||
	    !digits(s + 11, 2, &h) || !digits(s + 14, 2, &mi) || !digits(s + 17, 2, &se))
		return 0;
	if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 || se > 60)
		return 0;
	if (mo == 2 && d == 29 && !(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)))
		return 0;
	if (s[k] == '.') {
		size_t start = ++k;
		/* digits past the ninth are dropped, not rounded, so that a
		 * time never moves into the next second */
		for (; k < n && s[k] >= '0' && s[k] <= '9'; k++)
			if (scale < 9) {
				frac = frac * 10 + (s[k] - '0');
				scale++;
			}
		if (k == start)
			return 0;
	}
	if (k + 1 == n && (s[k] == 'Z' || s[k] == 'z')) {
		oh = om = 0;
	} else {
		if (k + 6 != n || (s[k] != '+' && s[k] != '-') || s[k + 3] != ':')
			return 0;
		if (!digits(s + k + 1, 2, &oh) || !digits(s + k + 4, 2, &om) || oh > 23 || om > 59)
			return 0;
	}
	if (f != NULL) {
		for (; scale < 9; scale++)
			frac *= 10;
		*f = (time_fields){ y,    mo,
				    d,    h,
				    mi,   se,
				    frac, (int64_t)(oh * 60 + om) * 60 * (s[k] == '-' ? -1 : 1) };
	}
	return 1;
}

int
tidei_time_valid(const char *s, size_t n)
{
	return time_split(s, n, NULL);
}

/* Days from 1970-01-01 to the proleptic Gregorian date y-m-d. */
static int64_t
days_since_epoch(int64_t y, int m, int d)
{
	/* count from March, so that the leap day ends the year */
	int64_t era, yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

int
tidei_time_parse(const char *s, size_t n, int64_t *ns)
{
	time_fields f;
	int64_t secs;

	if (!time_split(s, n, &f))
		return -1;
	/* a leap second (:60) is the last instant of its minute's :59 */
	if (f.se == 60) {
		f.se = 59;
		f.frac = 999999999;
	}
	secs = days_since_epoch(f.y, f.mo, f.d) * 86400 + f.h * 3600 + f.mi * 60 + f.se - f.offset;
	/* int64 nanoseconds reach from 1677-09-21 to 2262-04-11 */
	if (secs < INT64_MIN / 1000000000 + 1 || secs > INT64_MAX / 1000000000 - 1)
		return -1;
	*ns = secs * 1000000000 + f.frac;
	return 0;
}

/* A token character of RFC 2045 section 5.1. */
static int
token_char(unsigned char c)
{
	return c > 0x20 && c < 0x7f && strchr("()<>@,;:\\\"/[]?=", c) == NULL;
}

/* type "/" subtype *(";" parameter), per RFC 2046 / RFC 2045. */
static int
media_type_valid(const char *s, size_t n)
{
	size_t k = 0, start;

	while (k < n && token_char((unsigned char)s[k]))
		k++;
	if (k == 0 || k >= n || s[k] != '/')
		return 0;
	start = ++k;
	while (k < n && token_char((unsigned char)s[k]))
		k++;
	if (k == start)
		return 0;
	while (k < n && (s[k] == ' ' || s[k] == '\t'))
		k++;
	return k == n || s[k] == ';';
}

static int
has_space_or_ctl(const char *s, size_t n)
{
	for (size_t k = 0; k < n; k++) {
		unsigned char c = (unsigned char)s[k];
		if (c <= 0x20 || c == 0x7f)
			return 1;
	}
	return 0;
}

/* scheme ":" hier-part, per RFC 3986 section 3 */
static int
absolute_uri_valid(const char *s, size_t n)
{
	size_t k = 0;

	if (n == 0 || !((s[0] | 0x20) >= 'a' && (s[0] | 0x20) <= 'z'))
		return 0;
	while (k < n && s[k] != ':') {
		char c = s[k];
		if (!((c | 0x20) >= 'a' && (c | 0x20) <= 'z') && !(c >= '0' && c <= '9') &&
		    c != '+' && c != '-' && c != '.')
			return 0;
		k++;
	}
	return k < n && !has_space_or_ctl(s, n);
}

static int
extension_name_valid(const char *s, size_t n)
{
	if (n == 0)
		return 0;
	for (size_t k = 0; k < n; k++)
		if (!((s[k] >= 'a' && s[k] <= 'z') || (s[k] >= '0' && s[k] <= '9')))
			return 0;
	return 1;
}

/* ------------------------------------------------------------------------
 * Building one event
 * ------------------------------------------------------------------------ */

void
tidei_evb_reset(tidei_evb *b)
{
	tidei_buf_reset(&b->strs);
	tidei_buf_reset(&b->ext);
	tidei_buf_reset(&b->data);
	b->seen = 0;
	b->next = 0;
	b->has_data = 0;
	b->invalid = 0;
	b->expect = -1;
	b->depth = 0;
	b->err[0] = '\0';
}

void
tidei_evb_free(tidei_evb *b)
{
	tidei_buf_free(&b->strs);
	tidei_buf_free(&b->ext);
	tidei_buf_free(&b->data);
}

int
tidei_evb_fail(tidei_evb *b, const char *fmt, ...)
{
	va_list ap;

	if (b->invalid)
		return -1;
	b->invalid = 1;
	va_start(ap, fmt);
	vsnprintf(b->err, sizeof b->err, fmt, ap);
	va_end(ap);
	return -1;
}

/* What a name refers to. */
enum {
	K_EXT = -1,
	K_SPECVERSION = -2,
	K_DATA = -3,
	K_DATA_BASE64 = -4,
	K_TIDE = -5,
	K_EXPECT = -6,
};

static int
classify(const char *name, size_t n)
{
	/* Short switch on the first byte keeps this off the profile. */
	switch (name[0]) {
	case 'c':
		if (n == 13 && memcmp(name, "correlationid", 13) == 0)
			return TIDEI_A_CORRELATIONID;
		if (n == 11 && memcmp(name, "causationid", 11) == 0)
			return TIDEI_A_CAUSATIONID;
		break;
	case 'd':
		if (n == 4 && memcmp(name, "data", 4) == 0)
			return K_DATA;
		if (n == 11 && memcmp(name, "data_base64", 11) == 0)
			return K_DATA_BASE64;
		if (n == 15 && memcmp(name, "datacontenttype", 15) == 0)
			return TIDEI_A_DATACONTENTTYPE;
		if (n == 10 && memcmp(name, "dataschema", 10) == 0)
			return TIDEI_A_DATASCHEMA;
		break;
	case 'e':
		if (n == 15 && memcmp(name, TIDEI_EXPECT_ATTR, 15) == 0)
			return K_EXPECT;
		break;
	case 'i':
		if (n == 2 && name[1] == 'd')
			return TIDEI_A_ID;
		break;
	case 'r':
		if (n == 8 && memcmp(name, "recorded", 8) == 0)
			return K_TIDE;
		break;
	case 's':
		if (n == 6 && memcmp(name, "source", 6) == 0)
			return TIDEI_A_SOURCE;
		if (n == 7 && memcmp(name, "subject", 7) == 0)
			return TIDEI_A_SUBJECT;
		if (n == 11 && memcmp(name, "specversion", 11) == 0)
			return K_SPECVERSION;
		if (n == 3 && memcmp(name, "seq", 3) == 0)
			return K_TIDE;
		break;
	case 't':
		if (n == 4 && memcmp(name, "type", 4) == 0)
			return TIDEI_A_TYPE;
		if (n == 4 && memcmp(name, "time", 4) == 0)
			return TIDEI_A_TIME;
		break;
	case 'v':
		if (n == 7 && memcmp(name, "version", 7) == 0)
			return K_TIDE;
		break;
	}
	return K_EXT;
}

/* Mark @p bit seen, failing on a repeat. */
static int
see(tidei_evb *b, unsigned bit, const char *name, size_t n)
{
	if (b->seen & bit)
		return tidei_evb_fail(b, "duplicate attribute '%.*s'", (int)n, name);
	b->seen |= bit;
	return 0;
}

/* Check an extension name and that it is new; the ext map is scanned
 * linearly, which TIDEI_MAX_EXTENSIONS keeps short. */
static int
ext_begin(tidei_evb *b, const char *name, size_t n)
{
	/* no arithmetic on the buffer before its first extension: it may
	 * have no memory yet, and NULL + 0 is undefined */
	tidei_vreader r = { b->ext.p, b->next > 0 ? b->ext.p + b->ext.len : b->ext.p };
	tidei_vitem key;

	if (!extension_name_valid(name, n))
		return tidei_evb_fail(b,
				      "extension attribute name '%.*s' must use only "
				      "lowercase letters and digits",
				      (int)tidei_utf8_cut(name, n, 64), name);
	if (b->next >= TIDEI_MAX_EXTENSIONS)
		return tidei_evb_fail(b, "more than %d extension attributes", TIDEI_MAX_EXTENSIONS);
	for (uint32_t k = 0; k < b->next; k++) {
		if (tidei_val_next(&r, &key) != 0)
			break;
		if (key.u.s.n == n && memcmp(key.u.s.p, name, n) == 0)
			return tidei_evb_fail(b, "duplicate attribute '%.*s'", (int)n, name);
		tidei_val_skip(&r);
	}
	tidei_val_str(&b->ext, name, n);
	b->next++;
	return 0;
}

static const char *
shown(const char *s, size_t n, char *tmp, size_t tmplen)
{
	/* Quote a value in an error message, shortened if long (at a UTF-8
	 * character boundary: the message travels as JSON). */
	if (n > 40)
		snprintf(tmp, tmplen, "\"%.*s...\"", (int)tidei_utf8_cut(s, n, 37), s);
	else
		snprintf(tmp, tmplen, "\"%.*s\"", (int)n, s);
	return tmp;
}

int
tidei_evb_string(tidei_evb *b, const char *name, size_t n, const char *s, size_t len)
{
	int a = classify(name, n);
	char tmp[64];

	if (b->invalid)
		return -1;
	/* NUL passes here, for the message about it below */
	if (b->check_utf8 && tidei_utf8_check(s, len, NULL) != NULL)
		return tidei_evb_fail(b, "attribute '%.*s' is not valid UTF-8", (int)n, name);
	switch (a) {
	case K_SPECVERSION:
		if (see(b, SEEN_SPECVERSION, name, n) != 0)
			return -1;
		if (len != 3 || memcmp(s, "1.0", 3) != 0)
			return tidei_evb_fail(b, "specversion must be \"1.0\", not %s",
					      shown(s, len, tmp, sizeof tmp));
		return 0;
	case K_DATA:
		if (tidei_evb_data(b) != 0)
			return -1;
		tidei_val_str(&b->data, s, len);
		return 0;
	case K_DATA_BASE64:
		if (see(b, SEEN_DATA_BASE64, name, n) != 0)
			return -1;
		if (b->seen & SEEN_DATA)
			return tidei_evb_fail(b, "data and data_base64 are mutually exclusive");
		{
			/* Stored decoded, as a binary value; the bin header is
			 * written first, the length patched after decoding. */
			tidei_buf raw = { 0 };
			long got = tidei_base64_decode(&raw, s, len);
			if (got < 0) {
				tidei_buf_free(&raw);
				return tidei_evb_fail(b, "data_base64 is not valid base64");
			}
			tidei_val_bin(&b->data, raw.p, (size_t)got);
			tidei_buf_free(&raw);
		}
		b->has_data = 1;
		return 0;
	case K_TIDE:
		/* seq, version and recorded are assigned by the log. */
		return 0;
	case K_EXPECT: return tidei_evb_badtype(b, name, n, "a string");
	case K_EXT:
		if (ext_begin(b, name, n) != 0)
			return -1;
		if (memchr(s, '\0', len) != NULL)
			return tidei_evb_fail(b, "attribute '%.*s' contains a NUL character",
					      (int)n, name);
		tidei_val_str(&b->ext, s, len);
		return 0;
	}
	if (see(b, 1u << a, name, n) != 0)
		return -1;
	if (len == 0)
		return tidei_evb_fail(b, "attribute '%s' must not be empty", tidei_attr_names[a]);
	if (memchr(s, '\0', len) != NULL)
		return tidei_evb_fail(b, "attribute '%s' contains a NUL character",
				      tidei_attr_names[a]);
	switch (a) {
	case TIDEI_A_SOURCE:
		if (has_space_or_ctl(s, len))
			return tidei_evb_fail(b, "attribute 'source' is not a URI-reference: %s",
					      shown(s, len, tmp, sizeof tmp));
		break;
	case TIDEI_A_TYPE:
		for (size_t k = 0; k < len; k++)
			if ((unsigned char)s[k] < 0x20)
				return tidei_evb_fail(
					b, "attribute 'type' contains a control character");
		break;
	case TIDEI_A_TIME:
		if (!tidei_time_valid(s, len))
			return tidei_evb_fail(b,
					      "attribute 'time' is not an RFC 3339 timestamp: %s",
					      shown(s, len, tmp, sizeof tmp));
		break;
	case TIDEI_A_DATACONTENTTYPE:
		if (!media_type_valid(s, len))
			return tidei_evb_fail(b,
					      "attribute 'datacontenttype' is not a media type "
					      "(RFC 2046): %s",
					      shown(s, len, tmp, sizeof tmp));
		break;
	case TIDEI_A_DATASCHEMA:
		if (!absolute_uri_valid(s, len))
			return tidei_evb_fail(b,
					      "attribute 'dataschema' is not an absolute URI: %s",
					      shown(s, len, tmp, sizeof tmp));
		break;
	}
	b->off[a] = (uint32_t)b->strs.len;
	b->len[a] = (uint32_t)len;
	tidei_buf_put(&b->strs, s, len);
	tidei_buf_putc(&b->strs, '\0');
	return 0;
}

/* Extensions take integers in the CloudEvents Integer range (32 bits). */
int
tidei_evb_int(tidei_evb *b, const char *name, size_t n, int64_t v)
{
	int a = classify(name, n);

	if (b->invalid)
		return -1;
	if (a == K_TIDE)
		return 0;
	if (a == K_EXPECT) {
		if (b->expect >= 0)
			return tidei_evb_fail(b, "duplicate attribute '%s'", TIDEI_EXPECT_ATTR);
		if (v < 0)
			return tidei_evb_fail(b, "%s must be a version (0 for a new stream)",
					      TIDEI_EXPECT_ATTR);
		b->expect = v;
		return 0;
	}
	if (a == K_DATA) {
		if (tidei_evb_data(b) == 0)
			tidei_val_int(&b->data, v);
		return b->invalid ? -1 : 0;
	}
	if (a != K_EXT)
		return tidei_evb_badtype(b, name, n, "a number");
	if (ext_begin(b, name, n) != 0)
		return -1;
	if (v < INT32_MIN || v > INT32_MAX)
		return tidei_evb_fail(b,
				      "extension '%.*s' is outside the 32-bit integer range "
				      "of CloudEvents",
				      (int)n, name);
	tidei_val_int(&b->ext, v);
	return 0;
}

int
tidei_evb_bool(tidei_evb *b, const char *name, size_t n, int v)
{
	int a = classify(name, n);

	if (b->invalid)
		return -1;
	if (a == K_TIDE)
		return 0;
	if (a == K_EXPECT)
		return tidei_evb_badtype(b, name, n, "a boolean");
	if (a == K_DATA) {
		if (tidei_evb_data(b) == 0)
			tidei_val_bool(&b->data, v);
		return b->invalid ? -1 : 0;
	}
	if (a != K_EXT)
		return tidei_evb_badtype(b, name, n, "a boolean");
	if (ext_begin(b, name, n) != 0)
		return -1;
	tidei_val_bool(&b->ext, v);
	return 0;
}

int
tidei_evb_null(tidei_evb *b, const char *name, size_t n)
{
	int a = classify(name, n);

	if (b->invalid)
		return -1;
	/* A null attribute is an absent one (JSON format 3.1), but it still
	 * counts for duplicate detection. */
	switch (a) {
	case K_SPECVERSION:
		return see(b, SEEN_SPECVERSION, name, n) == 0
			       ? tidei_evb_fail(b, "specversion must be \"1.0\", not null")
			       : -1;
	case K_DATA:
		/* "data": null is a null payload, not a missing one (JSON format
		 * 3.1.1) */
		if (tidei_evb_data(b) != 0)
			return -1;
		tidei_val_nil(&b->data);
		return 0;
	case K_DATA_BASE64: return see(b, SEEN_DATA_BASE64, name, n);
	case K_TIDE: return 0;
	case K_EXPECT: return 0; /* null: no expectation */
	case K_EXT:
		if (!extension_name_valid(name, n))
			return ext_begin(b, name, n);
		return 0;
	}
	if (see(b, 1u << a, name, n) != 0)
		return -1;
	b->len[a] = ABSENT;
	if (a == TIDEI_A_ID || a == TIDEI_A_SOURCE || a == TIDEI_A_TYPE)
		return tidei_evb_fail(b, "attribute '%s' must be a non-empty string, not null",
				      tidei_attr_names[a]);
	return 0;
}

int
tidei_evb_badtype(tidei_evb *b, const char *name, size_t n, const char *what)
{
	int a = classify(name, n);

	if (b->invalid)
		return -1;
	if (a == K_TIDE)
		return 0;
	if (a == K_EXT) {
		if (ext_begin(b, name, n) != 0)
			return -1;
		return tidei_evb_fail(b,
				      "extension '%.*s' must be a string, boolean or integer, "
				      "not %s",
				      (int)n, name, what);
	}
	if (a == K_SPECVERSION)
		return tidei_evb_fail(b, "specversion must be \"1.0\", not %s", what);
	if (a == K_DATA_BASE64)
		return tidei_evb_fail(b, "data_base64 must be a base64 string, not %s", what);
	if (a == K_DATA)
		return tidei_evb_fail(b, "data cannot be %s here", what);
	if (a == K_EXPECT)
		return tidei_evb_fail(b, "%s must be an integer version, not %s", TIDEI_EXPECT_ATTR,
				      what);
	return tidei_evb_fail(b, "attribute '%s' must be a string, not %s", tidei_attr_names[a],
			      what);
}

int
tidei_evb_data(tidei_evb *b)
{
	if (b->invalid)
		return -1;
	if (see(b, SEEN_DATA, "data", 4) != 0)
		return -1;
	if (b->seen & SEEN_DATA_BASE64)
		return tidei_evb_fail(b, "data and data_base64 are mutually exclusive");
	b->has_data = 1;
	return 0;
}

int
tidei_evb_finish(tidei_evb *b, tidei_buf *out)
{
	uint8_t hdr[TIDEI_REC_HEADER];
	uint8_t maphdr[8];
	tidei_buf mh = { maphdr, 0, sizeof maphdr, 0, 0, 0 };

	if (b->invalid)
		return -1;
	if (!(b->seen & SEEN_SPECVERSION))
		return tidei_evb_fail(b, "missing required attribute 'specversion'");
	for (int a = TIDEI_A_ID; a <= TIDEI_A_TYPE; a++)
		if (!(b->seen & (1u << a)))
			return tidei_evb_fail(b, "missing required attribute '%s'",
					      tidei_attr_names[a]);
	if (b->expect >= 0 &&
	    !(b->seen & (1u << TIDEI_A_SUBJECT) && b->len[TIDEI_A_SUBJECT] != ABSENT))
		return tidei_evb_fail(
			b, "%s needs a subject: it is the version of the subject's stream",
			TIDEI_EXPECT_ATTR);
	if (b->strs.failed || b->ext.failed || b->data.failed)
		return tidei_evb_fail(b, "out of memory");
	if (b->next > 0)
		tidei_val_map(&mh, b->next);

	memset(hdr, 0, sizeof hdr);
	hdr[OFF_FORMAT] = REC_FORMAT;
	hdr[OFF_FLAGS] = b->has_data ? FLAG_DATA : 0;
	hdr[OFF_DEPTH] = (uint8_t)(b->depth & 0xff);
	hdr[OFF_DEPTH + 1] = (uint8_t)(b->depth >> 8);
	tidei_st32(hdr + OFF_EXTLEN, b->next > 0 ? (uint32_t)(mh.len + b->ext.len) : 0);
	for (int a = 0; a < TIDEI_NATTR; a++)
		tidei_st32(hdr + OFF_LENS + 4 * a,
			   (b->seen & (1u << a)) && b->len[a] != ABSENT ? b->len[a] : ABSENT);
	tidei_buf_put(out, hdr, sizeof hdr);
	for (int a = 0; a < TIDEI_NATTR; a++)
		if (b->seen & (1u << a) && b->len[a] != ABSENT)
			tidei_buf_put(out, b->strs.p + b->off[a], (size_t)b->len[a] + 1);
	if (b->next > 0) {
		tidei_buf_put(out, maphdr, mh.len);
		tidei_buf_put(out, b->ext.p, b->ext.len);
	}
	if (b->has_data)
		tidei_buf_put(out, b->data.p, b->data.len);
	if (out->failed)
		return tidei_evb_fail(b, "out of memory");
	return 0;
}
