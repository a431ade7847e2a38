/*
 * value.c - the public reader of an event's data and extension attributes
 * in their stored encoding (val.h): tide_value, dotted paths, iteration,
 * and the data alone as JSON text.
 *
 * Nothing here allocates or copies, except tide_event_data(), which
 * writes into the scratch buffer of the view's maker as
 * tide_event_json() does.  The bytes come from disk and are not trusted:
 * every read goes through the bounded reader of val.c, and a malformed
 * encoding is TIDE_EIO, never a read past the record.
 *
 * Invariant of a container tide_value: `at` is its first element's
 * encoding (its first key, for an object) and `end` is just past its
 * last element, found by skipping the whole container once when the
 * value is made.  That skip is also what checks the container is whole,
 * so iteration and lookups inside it cannot leave [at, end).
 *
 * This module reads struct tide_event (event.h) and the encoding; it
 * must not know about the log, cursors or consumers that make the views.
 */
#include "config.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "err.h"
#include "event.h"
#include "json.h"
#include "val.h"

/* Bytes of a path or member name quoted in a message. */
#define QUOTE_MAX 160

/* A container being walked: its kind and size, and a reader at its first
 * element (bounded by the container's end, or by the encoding around it). */
typedef struct node {
	int is_map;
	uint32_t count;
	tidei_vreader r;
} node;

/* The public type of an item of the encoding. */
static int
public_type(tidei_vtype t)
{
	switch (t) {
	case TIDEI_V_NIL: return TIDE_NULL;
	case TIDEI_V_FALSE:
	case TIDEI_V_TRUE: return TIDE_BOOL;
	case TIDEI_V_INT: return TIDE_INT;
	case TIDEI_V_DOUBLE: return TIDE_DOUBLE;
	case TIDEI_V_STR: return TIDE_STRING;
	case TIDEI_V_BIN: return TIDE_BINARY;
	case TIDEI_V_ARRAY: return TIDE_ARRAY;
	case TIDEI_V_MAP: return TIDE_OBJECT;
	}
	return TIDE_NULL;
}

static const char *
type_name(int type)
{
	switch (type) {
	case TIDE_NULL: return "null";
	case TIDE_BOOL: return "a boolean";
	case TIDE_INT: return "an integer";
	case TIDE_DOUBLE: return "a number";
	case TIDE_STRING: return "a string";
	case TIDE_BINARY: return "binary data";
	case TIDE_ARRAY: return "an array";
	case TIDE_OBJECT: return "an object";
	default: return "not a value";
	}
}

/* The part of @p path before segment @p seg, for a message: "data.items",
 * or "the value" when @p seg is the first segment of a relative path. */
static const char *
where(char *tmp, size_t cap, const char *path, const char *seg)
{
	size_t n;

	if (seg == path)
		return "the value";
	n = tidei_utf8_cut(path, (size_t)(seg - path - 1), cap - 1);
	memcpy(tmp, path, n);
	tmp[n] = '\0';
	return tmp;
}

/* A segment cut for quoting, as a length for "%.*s". */
static int
quote_len(const char *s, size_t n)
{
	return (int)tidei_utf8_cut(s, n, QUOTE_MAX);
}

/* (int64_t)d is undefined for NaN and out of range: clamp instead. */
static int64_t
trunc_i64(double d)
{
	if (isnan(d))
		return 0;
	if (d >= 9223372036854775808.0)
		return INT64_MAX;
	if (d < -9223372036854775808.0)
		return INT64_MIN;
	return (int64_t)d;
}

/* Make the value whose encoding @p r is at, and leave @p r past it.
 * Returns 0, or -1 when the encoding is malformed (*out is then as it
 * was). */
static int
make_value(tidei_vreader *r, tide_value *out)
{
	const uint8_t *start = r->p;
	tidei_vitem it;
	tide_value v;

	memset(&v, 0, sizeof v);
	if (tidei_val_next(r, &it) != 0)
		return -1;
	switch (it.type) {
	case TIDEI_V_NIL: v.type = TIDE_NULL; break;
	case TIDEI_V_FALSE:
	case TIDEI_V_TRUE:
		v.type = TIDE_BOOL;
		v.boolean = it.type == TIDEI_V_TRUE;
		break;
	case TIDEI_V_INT:
		v.type = TIDE_INT;
		v.i = it.u.i;
		v.d = (double)it.u.i;
		break;
	case TIDEI_V_DOUBLE:
		v.type = TIDE_DOUBLE;
		v.d = it.u.d;
		v.i = trunc_i64(it.u.d);
		break;
	case TIDEI_V_STR:
	case TIDEI_V_BIN:
		v.type = it.type == TIDEI_V_STR ? TIDE_STRING : TIDE_BINARY;
		v.s = it.u.s.p;
		v.len = it.u.s.n;
		break;
	case TIDEI_V_ARRAY:
	case TIDEI_V_MAP:
		v.type = it.type == TIDEI_V_MAP ? TIDE_OBJECT : TIDE_ARRAY;
		v.len = it.u.count;
		v.at = r->p;
		r->p = start;
		if (tidei_val_skip(r) != 0)
			return -1;
		v.end = r->p;
		*out = v;
		return 0;
	default: return -1;
	}
	v.at = start;
	v.end = r->p;
	*out = v;
	return 0;
}

static int
malformed(const char *path, size_t n)
{
	return tidei_fail(TIDE_EIO, "the stored value at '%.*s' is damaged", quote_len(path, n),
			  path);
}

/* Move @p c->r to the element of container @p c that segment @p seg
 * (@p n bytes, within @p path) names: a member name for an object, a
 * decimal index for an array.  Returns TIDE_OK or a failure (with its
 * message). */
static int
step(node *c, const char *path, const char *seg, size_t n)
{
	char tmp[QUOTE_MAX];
	tidei_vitem key;
	uint64_t idx = 0;

	if (c->is_map) {
		for (uint32_t k = 0; k < c->count; k++) {
			if (tidei_val_next(&c->r, &key) != 0 || key.type != TIDEI_V_STR)
				return malformed(path, (size_t)(seg - path) + n);
			if (key.u.s.n == n && memcmp(key.u.s.p, seg, n) == 0)
				return TIDE_OK;
			if (tidei_val_skip(&c->r) != 0)
				return malformed(path, (size_t)(seg - path) + n);
		}
		return tidei_fail(TIDE_ENOTFOUND, "no member '%.*s' in %s (an object)",
				  quote_len(seg, n), seg, where(tmp, sizeof tmp, path, seg));
	}
	for (size_t k = 0; k < n; k++) {
		if (seg[k] < '0' || seg[k] > '9')
			return tidei_fail(
				TIDE_ENOTFOUND, "'%.*s' is not an index into %s (an array)",
				quote_len(seg, n), seg, where(tmp, sizeof tmp, path, seg));
		if (idx <= UINT32_MAX) /* past any count: stop growing */
			idx = idx * 10 + (uint64_t)(seg[k] - '0');
	}
	if (idx >= c->count)
		return tidei_fail(TIDE_ENOTFOUND,
				  "index %.*s is past the end of %s (an array of %lu)",
				  quote_len(seg, n), seg, where(tmp, sizeof tmp, path, seg),
				  (unsigned long)c->count);
	for (uint64_t k = 0; k < idx; k++)
		if (tidei_val_skip(&c->r) != 0)
			return malformed(path, (size_t)(seg - path) + n);
	return TIDE_OK;
}

/* Look up the segments of @p rest (the tail of @p path, dotted, none
 * empty) from container @p c, and make the value found. */
static int
walk(node c, const char *path, const char *rest, tide_value *out)
{
	for (;;) {
		const char *dot = strchr(rest, '.');
		size_t n = dot != NULL ? (size_t)(dot - rest) : strlen(rest);
		char tmp[QUOTE_MAX];
		tidei_vitem it;
		int rc;

		if ((rc = step(&c, path, rest, n)) != TIDE_OK)
			return rc;
		if (dot == NULL)
			return make_value(&c.r, out) == 0 ? TIDE_OK : malformed(path, strlen(path));
		if (tidei_val_next(&c.r, &it) != 0)
			return malformed(path, (size_t)(dot - path));
		rest = dot + 1;
		if (it.type != TIDEI_V_ARRAY && it.type != TIDEI_V_MAP)
			return tidei_fail(TIDE_ENOTFOUND,
					  "cannot look up '%.*s' in %s: it is %s, not an array or "
					  "object",
					  quote_len(rest, strcspn(rest, ".")), rest,
					  where(tmp, sizeof tmp, path, rest),
					  type_name(public_type(it.type)));
		c.is_map = it.type == TIDEI_V_MAP;
		c.count = it.u.count;
	}
}

/* TIDE_OK if @p path is a dotted path without empty segments. */
static int
check_path(const char *path)
{
	const char *p;

	if (path == NULL || path[0] == '\0')
		return tidei_fail(TIDE_EINVAL, "the path is %s", path == NULL ? "NULL" : "empty");
	for (p = path; (p = strchr(p, '.')) != NULL; p++)
		if (p == path || p[1] == '\0' || p[1] == '.')
			return tidei_fail(TIDE_EINVAL, "empty segment in path '%.*s'",
					  quote_len(path, strlen(path)), path);
	return TIDE_OK;
}

/* The failure of looking further into a scalar found at the first
 * segment of @p path (@p n bytes), of type @p type. */
static int
scalar_fail(const char *path, size_t n, int type)
{
	const char *rest = path + n + 1;

	return tidei_fail(TIDE_ENOTFOUND,
			  "cannot look up '%.*s' in %.*s: it is %s, not an array or object",
			  quote_len(rest, strcspn(rest, ".")), rest, quote_len(path, n), path,
			  type_name(type));
}

/* The root named by the first segment of @p path (@p n bytes) when it is
 * a context attribute: 1 (and *out), 0 when @p path does not name one,
 * or a failure. */
static int
context_attr(const tide_event *ev, const char *path, size_t n, tide_value *out)
{
	const char *s = NULL;
	size_t len = 0;
	int a;

	for (a = 0; a < TIDEI_NATTR; a++)
		if (strlen(tidei_attr_names[a]) == n && memcmp(tidei_attr_names[a], path, n) == 0)
			break;
	if (a < TIDEI_NATTR) {
		s = ev->attr[a];
		len = ev->len[a];
	} else if (n == 11 && memcmp(path, "specversion", 11) == 0) {
		s = "1.0"; /* the only version stored; tide_event_attr() says the same */
		len = 3;
	} else {
		return 0;
	}
	if (s == NULL)
		return tidei_fail(TIDE_ENOTFOUND, "the event has no attribute '%.*s'",
				  quote_len(path, n), path);
	if (path[n] != '\0')
		return scalar_fail(path, n, TIDE_STRING);
	memset(out, 0, sizeof *out);
	out->type = TIDE_STRING;
	out->s = s;
	out->len = len;
	return 1;
}

TIDE_API int
tide_event_value(const tide_event *ev, const char *path, tide_value *out)
{
	size_t n;
	tidei_vreader r;
	tidei_vitem it;
	node c;
	int rc;

	if ((rc = check_path(path)) != TIDE_OK)
		return rc;
	if (ev == NULL || out == NULL)
		return tidei_fail(TIDE_EINVAL,
				  "tide_event_value() needs an event and an out value");
	n = strcspn(path, ".");
	if (n == 4 && memcmp(path, "data", 4) == 0) {
		if (ev->data == NULL)
			return tidei_fail(TIDE_ENOTFOUND, "the event has no data");
		r.p = ev->data;
		r.end = ev->data + ev->data_len;
	} else if ((rc = context_attr(ev, path, n, out)) != 0) {
		return rc > 0 ? TIDE_OK : rc;
	} else {
		/* an extension attribute: a member of the event's extension map */
		if (ev->ext == NULL)
			return tidei_fail(TIDE_ENOTFOUND, "the event has no attribute '%.*s'",
					  quote_len(path, n), path);
		r.p = ev->ext;
		r.end = ev->ext + ev->ext_len;
		if (tidei_val_next(&r, &it) != 0 || it.type != TIDEI_V_MAP)
			return tidei_fail(TIDE_EIO, "the event's extension attributes are damaged");
		c.is_map = 1;
		c.count = it.u.count;
		c.r = r;
		if ((rc = step(&c, path, path, n)) != TIDE_OK)
			return rc == TIDE_ENOTFOUND
				       ? tidei_fail(rc, "the event has no attribute '%.*s'",
						    quote_len(path, n), path)
				       : rc;
		r = c.r;
	}
	if (path[n] == '\0')
		return make_value(&r, out) == 0 ? TIDE_OK : malformed(path, n);
	if (tidei_val_next(&r, &it) != 0)
		return malformed(path, n);
	if (it.type != TIDEI_V_ARRAY && it.type != TIDEI_V_MAP)
		return scalar_fail(path, n, public_type(it.type));
	c.is_map = it.type == TIDEI_V_MAP;
	c.count = it.u.count;
	c.r = r;
	return walk(c, path, path + n + 1, out);
}

/* TIDE_OK if @p v is an array or object made by this module. */
static int
check_container(const tide_value *v, const char *fn)
{
	if (v == NULL)
		return tidei_fail(TIDE_EINVAL, "%s() of a NULL value", fn);
	if ((v->type != TIDE_ARRAY && v->type != TIDE_OBJECT) || v->at == NULL || v->end == NULL ||
	    (const uint8_t *)v->end < (const uint8_t *)v->at)
		return tidei_fail(TIDE_EINVAL, "%s() of %s, not an array or object", fn,
				  type_name(v->type));
	return TIDE_OK;
}

TIDE_API int
tide_value_get(const tide_value *v, const char *path, tide_value *out)
{
	node c;
	int rc;

	if ((rc = check_path(path)) != TIDE_OK)
		return rc;
	if (v == NULL || out == NULL)
		return tidei_fail(TIDE_EINVAL, "tide_value_get() needs a value and an out value");
	if (v->type != TIDE_ARRAY && v->type != TIDE_OBJECT)
		return tidei_fail(TIDE_ENOTFOUND,
				  "cannot look up '%.*s' in the value: it is %s, not an array or "
				  "object",
				  quote_len(path, strcspn(path, ".")), path, type_name(v->type));
	if ((rc = check_container(v, "tide_value_get")) != TIDE_OK)
		return rc;
	c.is_map = v->type == TIDE_OBJECT;
	c.count = (uint32_t)v->len;
	c.r.p = v->at;
	c.r.end = v->end;
	return walk(c, path, path, out);
}

/* Read the element of container @p v at @p r (its key first, for an
 * object) into @p name, @p nlen and @p out. */
static int
element(const tide_value *v, tidei_vreader *r, const char **name, size_t *nlen, tide_value *out)
{
	const char *kp = NULL;
	size_t kn = 0;
	tidei_vitem key;

	if (v->type == TIDE_OBJECT) {
		if (tidei_val_next(r, &key) != 0 || key.type != TIDEI_V_STR)
			return tidei_fail(TIDE_EIO, "a member name of the object is damaged");
		kp = key.u.s.p;
		kn = key.u.s.n;
	}
	if (make_value(r, out) != 0)
		return tidei_fail(TIDE_EIO, "an element of the %s is damaged",
				  v->type == TIDE_OBJECT ? "object" : "array");
	if (name != NULL)
		*name = kp;
	if (nlen != NULL)
		*nlen = kn;
	return TIDE_OK;
}

TIDE_API int
tide_value_at(const tide_value *v, size_t k, const char **name, size_t *nlen, tide_value *out)
{
	tidei_vreader r;
	int rc;

	if ((rc = check_container(v, "tide_value_at")) != TIDE_OK)
		return rc;
	if (out == NULL)
		return tidei_fail(TIDE_EINVAL, "tide_value_at() needs an out value");
	if (k >= v->len)
		return tidei_fail(TIDE_ENOTFOUND, "%zu is past the end of %s of %zu %s", k,
				  type_name(v->type), v->len,
				  v->type == TIDE_OBJECT ? "members" : "elements");
	r.p = v->at;
	r.end = v->end;
	/* an object's k-th member is preceded by k keys and k values */
	for (size_t skip = v->type == TIDE_OBJECT ? 2 * k : k; skip > 0; skip--)
		if (tidei_val_skip(&r) != 0)
			return tidei_fail(TIDE_EIO, "the %s is damaged before element %zu",
					  v->type == TIDE_OBJECT ? "object" : "array", k);
	return element(v, &r, name, nlen, out);
}

TIDE_API int
tide_value_next(const tide_value *v, size_t *it, const char **name, size_t *nlen, tide_value *out)
{
	const uint8_t *at;
	tidei_vreader r;
	int rc;

	if ((rc = check_container(v, "tide_value_next")) != TIDE_OK)
		return rc;
	if (it == NULL || out == NULL)
		return tidei_fail(TIDE_EINVAL,
				  "tide_value_next() needs an iterator and an out value");
	r.p = at = v->at; /* *out may be *v */
	r.end = v->end;
	if (*it > (size_t)(r.end - r.p))
		return tidei_fail(TIDE_EINVAL, "the iterator is past the end of the value");
	r.p += *it;
	if (r.p == r.end)
		return tidei_fail(TIDE_ENOTFOUND, "no more elements (the end of the walk)");
	if ((rc = element(v, &r, name, nlen, out)) != TIDE_OK)
		return rc;
	*it = (size_t)(r.p - at);
	return TIDE_OK;
}

TIDE_API int
tide_event_data(const tide_event *ev, const char **json, size_t *len)
{
	tidei_vreader r;
	tidei_buf *out;

	if (ev == NULL || json == NULL)
		return tidei_fail(TIDE_EINVAL, "tide_event_data() needs an event and a place for "
					       "the text");
	if (ev->data == NULL)
		return tidei_fail(TIDE_ENOTFOUND, "the event has no data");
	/* Views handed to Lua have no buffer for text (nor a way to reach
	 * here); say so rather than allocate behind the maker's back. */
	if ((out = ev->scratch) == NULL)
		return tidei_fail(TIDE_EINVAL,
				  "this view of the event has no buffer for JSON text");
	tidei_buf_reset(out);
	r.p = ev->data;
	r.end = ev->data + ev->data_len;
	if (tidei_json_encode(out, &r) != 0 && !out->failed)
		return tidei_fail(TIDE_EIO, "the event's data is damaged");
	tidei_buf_putc(out, '\0');
	if (out->failed)
		return tidei_fail(TIDE_ENOMEM, "no memory for the event's data as JSON");
	*json = (const char *)out->p;
	if (len != NULL)
		*len = out->len - 1;
	return TIDE_OK;
}
