/*
 * eparser.c - the JSON form of events coming in: one message (one event,
 * a CloudEvents batch array, or NDJSON, pretty-printed or not) into
 * records, reported one by one to a sink, each event refused on its own.
 *
 * Values go through the fast path first (jscan.c scans them onto a tape,
 * replayed here through the callbacks below); what it gives up on goes
 * to yajl, which drives the same callbacks and says what is wrong.  The
 * attributes are checked, and records built, by event.c's builder
 * (tidei_evb); data values by json.c's writer.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
/* ------------------------------------------------------------------------
 * Parsing messages
 * ------------------------------------------------------------------------ */

/* What the tokens at the current position belong to. */
enum { M_TOP, M_ATTR, M_DATA, M_SKIP };

void
tidei_fmt_size(char *out, size_t outlen, size_t bytes)
{
	if (bytes >= 1024 * 1024 && bytes % (1024 * 1024) == 0)
		snprintf(out, outlen, "%zu MiB", bytes / (1024 * 1024));
	else if (bytes >= 1024 && bytes % 1024 == 0)
		snprintf(out, outlen, "%zu KiB", bytes / 1024);
	else
		snprintf(out, outlen, "%zu bytes", bytes);
}

/* Offset in the message of the end of the current token. */
static size_t
position(tidei_eparser *p)
{
	return p->h != NULL ? p->base + yajl_get_bytes_consumed(p->h) : p->pos;
}

static size_t
line_start(const char *msg, size_t at)
{
	while (at > 0 && msg[at - 1] != '\n')
		at--;
	return at;
}

static void
report(tidei_eparser *p, const uint8_t *rec, size_t len, const char *err)
{
	p->count++;
	p->sink(p->ud, rec, len, err);
}

/* Byte @p at of the message, counted from 1 at the start of the line
 * where the current top-level value began, as syntax errors count. */
static size_t
column(const tidei_eparser *p, size_t at)
{
	return at - line_start(p->msg, p->val_start <= at ? p->val_start : at) + 1;
}

/* The message for a vertical tab or form feed at @p at, which yajl took
 * for whitespace. */
static void
bad_space(const tidei_eparser *p, size_t at, char *msg)
{
	tidei_json_badspace_err(msg, p->msg[at], column(p, at));
}

static void
event_begin(tidei_eparser *p)
{
	tidei_evb_reset(&p->b);
	p->ev_depth = p->depth;
	p->ev_start = position(p) - 1;
	p->mode = M_ATTR;
}

static void
event_end(tidei_eparser *p)
{
	size_t end = position(p), size = end - p->ev_start;

	p->ev_depth = 0;
	p->mode = M_TOP;
	if (p->badspace < end) {
		/* Checked once per event rather than at every token: one
		 * inside the event costs it, and so does one between the
		 * previous event and this one. */
		char msg[TIDEI_ERRLEN];
		bad_space(p, p->badspace, msg);
		tidei_evb_fail(&p->b, "%s", msg);
		p->badspace = tidei_json_badspace(p->msg, end, p->len);
		p->badspace_from = end;
	}
	if (size > p->max_event) {
		char lim[32], msg[96];
		tidei_fmt_size(lim, sizeof lim, p->max_event);
		snprintf(msg, sizeof msg, "message larger than the %s limit (%zu bytes)", lim,
			 size);
		report(p, NULL, 0, msg);
		return;
	}
	if (p->take != NULL) {
		char msg[TIDEI_ERRLEN];
		report(p, NULL, 0, p->take(p->take_ud, &p->b, msg) != TIDE_OK ? msg : NULL);
		return;
	}
	tidei_buf_reset(&p->rec);
	if (tidei_evb_finish(&p->b, &p->rec) != 0)
		report(p, NULL, 0, p->b.err);
	else
		report(p, p->rec.p, p->rec.len, NULL);
}

static void
bad_string(tidei_eparser *p, const unsigned char *s, size_t n)
{
	uintptr_t at = (uintptr_t)s - (uintptr_t)p->msg;
	char why[TIDEI_JSON_WHYLEN];
	size_t bad;

	if (!p->b.invalid &&
	    tidei_json_check_str(p->h, p->msg + p->base, p->len - p->base, s, n, &bad, why) != NULL)
		tidei_evb_fail(&p->b, "not valid JSON at byte %zu: %s", column(p, p->base + bad),
			       why);
	/* the strings after this one are ASCII up to the next such byte */
	if ((uintptr_t)s >= (uintptr_t)p->msg && at + n <= p->len && at + n > p->ascii) {
		p->ascii = tidei_json_ascii_end(p->msg, at + n, p->len);
		p->ascii_from = at + n;
	}
}

/* Hold a string or member name yajl reported to the rules of
 * tidei_json_check_str().  Most are let through by two comparisons: yajl
 * passed a pointer into the message (there were no escapes) that ends
 * before the next byte past ASCII, found by one scan of the message.  A
 * failure costs the current event. */
static inline void
check_string(tidei_eparser *p, const unsigned char *s, size_t n)
{
	uintptr_t at = (uintptr_t)s - (uintptr_t)p->msg;

	if ((uintptr_t)s < (uintptr_t)p->msg || at + n > p->ascii)
		bad_string(p, s, n);
}

/* A scalar where an event was expected. */
static void
not_an_event(tidei_eparser *p)
{
	report(p, NULL, 0, "event must be a JSON object");
}

/* The name of the current member.  The buffer has no memory until a
 * name of one byte or more: an empty name ("") must not reach the
 * attribute code as NULL. */
static const char *
key_name(const tidei_eparser *p)
{
	return p->key.p != NULL ? (const char *)p->key.p : "";
}

static int
key_is_data(tidei_eparser *p)
{
	return p->key.len == 4 && memcmp(p->key.p, "data", 4) == 0;
}

/* Where a scalar token goes. */
enum { R_NONE, R_ATTR, R_DATA };

static int
route_scalar(tidei_eparser *p, int is_null)
{
	/* a number that ends the message ends when yajl is told so, its
	 * offsets then counting in a buffer of its own */
	if (p->depth == 0)
		p->top_end = p->finishing ? p->len : position(p);
	switch (p->mode) {
	case M_TOP: not_an_event(p); return R_NONE;
	case M_ATTR:
		if (!is_null && key_is_data(p)) {
			if (tidei_evb_data(&p->b) != 0)
				return R_NONE;
			tidei_jsonw_init(&p->w, &p->b.data);
			return R_DATA;
		}
		return R_ATTR;
	case M_DATA: return R_DATA;
	default: return R_NONE;
	}
}

static int
p_null(void *ctx)
{
	tidei_eparser *p = ctx;

	switch (route_scalar(p, 1)) {
	case R_ATTR: tidei_evb_null(&p->b, key_name(p), p->key.len); break;
	case R_DATA: tidei_jsonw_null(&p->w); break;
	}
	return 1;
}

static int
p_bool(void *ctx, int v)
{
	tidei_eparser *p = ctx;

	switch (route_scalar(p, 0)) {
	case R_ATTR: tidei_evb_bool(&p->b, key_name(p), p->key.len, v); break;
	case R_DATA: tidei_jsonw_bool(&p->w, v); break;
	}
	return 1;
}

static int
p_number(void *ctx, const char *s, size_t n)
{
	tidei_eparser *p = ctx;
	int64_t i;
	double d;

	switch (route_scalar(p, 0)) {
	case R_ATTR:
		/* an attribute takes integers only: 1e400 is refused as any
		 * other number with an exponent */
		if (tidei_json_number(s, n, &i, &d) == 1)
			tidei_evb_int(&p->b, key_name(p), p->key.len, i);
		else
			tidei_evb_badtype(&p->b, key_name(p), p->key.len,
					  "a number with a fraction or exponent");
		break;
	case R_DATA:
		if (tidei_jsonw_number(&p->w, s, n) != 0) {
			char msg[TIDEI_ERRLEN];
			tidei_json_range_err(msg, s, n);
			tidei_evb_fail(&p->b, "%s", msg);
		}
		break;
	}
	return 1;
}

static int
p_string(void *ctx, const unsigned char *s, size_t n)
{
	tidei_eparser *p = ctx;

	switch (route_scalar(p, 0)) {
	case R_ATTR:
		check_string(p, s, n);
		tidei_evb_string(&p->b, key_name(p), p->key.len, (const char *)s, n);
		break;
	case R_DATA:
		check_string(p, s, n);
		tidei_jsonw_string(&p->w, (const char *)s, n);
		break;
	}
	return 1;
}

static int
p_key(void *ctx, const unsigned char *s, size_t n)
{
	tidei_eparser *p = ctx;

	if (p->mode == M_ATTR || p->mode == M_DATA)
		check_string(p, s, n);
	if (p->mode == M_ATTR) {
		tidei_buf_reset(&p->key);
		tidei_buf_put(&p->key, s, n);
	} else if (p->mode == M_DATA) {
		tidei_jsonw_key(&p->w, (const char *)s, n);
	}
	return 1;
}

static void
container_start(tidei_eparser *p, int is_map)
{
	if (p->depth == 0)
		p->val_start = position(p) - 1;
	p->depth++;
	switch (p->mode) {
	case M_TOP:
		if (is_map) {
			event_begin(p);
		} else if (p->batch_depth == 0) {
			p->batch_depth = p->depth; /* a CloudEvents batch */
		} else {
			not_an_event(p);
			p->mode = M_SKIP;
			p->skip_depth = p->depth;
		}
		return;
	case M_ATTR:
		if (key_is_data(p) && tidei_evb_data(&p->b) == 0) {
			tidei_jsonw_init(&p->w, &p->b.data);
			p->mode = M_DATA;
			tidei_jsonw_start(&p->w, is_map);
			return;
		}
		tidei_evb_badtype(&p->b, key_name(p), p->key.len,
				  is_map ? "an object" : "an array");
		p->mode = M_SKIP;
		p->skip_depth = p->depth;
		return;
	case M_DATA:
		if (tidei_jsonw_start(&p->w, is_map) != 0) {
			tidei_evb_fail(&p->b, "data nested deeper than %d levels",
				       TIDEI_JSON_MAXDEPTH);
			p->mode = M_SKIP;
			p->skip_depth = p->ev_depth + 1;
		}
		return;
	}
}

static void
container_end(tidei_eparser *p)
{
	int closing = p->depth--;

	if (p->depth == 0)
		p->top_end = position(p);
	switch (p->mode) {
	case M_TOP:
		if (closing == p->batch_depth)
			p->batch_depth = 0;
		return;
	case M_ATTR:
		if (closing == p->ev_depth)
			event_end(p);
		return;
	case M_DATA:
		tidei_jsonw_end(&p->w);
		if (p->depth == p->ev_depth)
			p->mode = M_ATTR;
		return;
	case M_SKIP:
		if (closing == p->skip_depth)
			p->mode = p->ev_depth ? M_ATTR : M_TOP;
		return;
	}
}

static int
p_start_map(void *ctx)
{
	container_start(ctx, 1);
	return 1;
}

static int
p_start_array(void *ctx)
{
	container_start(ctx, 0);
	return 1;
}

static int
p_end(void *ctx)
{
	container_end(ctx);
	return 1;
}

static const yajl_callbacks parse_callbacks = {
	p_null,      p_bool, NULL,  NULL,          p_number, p_string,
	p_start_map, p_key,  p_end, p_start_array, p_end,
};

/* The value jscan.c put on the tape, token by token through the
 * callbacks yajl would have made, each at the offset yajl would have
 * been at.  Strings not on the tape are pointers into the message, as
 * yajl passes them. */
static void
replay_tape(tidei_eparser *p)
{
	const tidei_jtape *tp = &p->tape;

	p->h = NULL;
	p->base = 0;
	p->depth = p->ev_depth = p->batch_depth = 0;
	p->mode = M_TOP;
	for (size_t k = 0; k < tp->n; k++) {
		const tidei_jtok *t = &tp->t[k];
		const char *s = tidei_jtok_text(tp, p->msg, t);
		p->pos = t->end;
		switch (t->kind) {
		case TIDEI_JT_NULL: p_null(p); break;
		case TIDEI_JT_FALSE: p_bool(p, 0); break;
		case TIDEI_JT_TRUE: p_bool(p, 1); break;
		case TIDEI_JT_NUMBER: p_number(p, s, t->len); break;
		case TIDEI_JT_STRING: p_string(p, (const unsigned char *)s, t->len); break;
		case TIDEI_JT_KEY: p_key(p, (const unsigned char *)s, t->len); break;
		case TIDEI_JT_MAP: container_start(p, 1); break;
		case TIDEI_JT_ARRAY: container_start(p, 0); break;
		default: container_end(p); break;
		}
	}
}

/* 1 if msg[at..len) holds only what yajl takes for whitespace. */
static int
only_space(const char *msg, size_t at, size_t len)
{
	for (; at < len; at++)
		if (strchr(" \t\n\r\f\v", msg[at]) == NULL || msg[at] == '\0')
			return 0;
	return 1;
}

void
tidei_eparser_init(tidei_eparser *p, size_t max_event)
{
	memset(p, 0, sizeof *p);
	p->max_event = max_event;
}

void
tidei_eparser_free(tidei_eparser *p)
{
	tidei_evb_free(&p->b);
	tidei_buf_free(&p->rec);
	tidei_buf_free(&p->key);
	tidei_jtape_free(&p->tape);
}

/* Where to resume after a syntax error in a value that began at @p from:
 * the next line after that one, which in NDJSON is the next event.  Lines
 * that are indented or only close something belong to a pretty-printed
 * document and are skipped. */
static size_t
resync(const char *msg, size_t len, size_t from)
{
	for (;;) {
		const char *nl = memchr(msg + from, '\n', len - from);
		size_t k;
		if (nl == NULL)
			return len;
		k = (size_t)(nl - msg) + 1;
		if (k < len && strchr(" \t\r\n}],:", msg[k]) == NULL)
			return k;
		from = k;
		if (from >= len)
			return len;
	}
}

long
tidei_eparser_run(tidei_eparser *p, const char *msg, size_t len, tidei_event_sink *sink, void *ud)
{
	size_t at = 0;

	p->msg = msg;
	p->len = len;
	/* Until yajl reads a value, nothing needs these: the fast path
	 * passes no form feed or vertical tab, and only strings it has
	 * checked.  They are found from where yajl first starts. */
	p->badspace = p->ascii = SIZE_MAX;
	p->badspace_from = p->ascii_from = 0;
	p->sink = sink;
	p->ud = ud;
	p->count = 0;
	for (int after_fast = 0;;) {
		yajl_status st;
		size_t err_at, failed;

		while (at < len &&
		       (msg[at] == ' ' || msg[at] == '\t' || msg[at] == '\n' || msg[at] == '\r'))
			at++;
		if (at >= len)
			break;
		if (!p->slow_only && (msg[at] == '{' || msg[at] == '[')) {
			long end = tidei_jscan(&p->tape, msg, len, at);
			if (end > 0) {
				replay_tape(p);
				at = (size_t)end;
				after_fast = 1;
				continue;
			}
		}
		if (p->badspace == SIZE_MAX) {
			p->badspace = tidei_json_badspace(msg, at, len);
			p->ascii = tidei_json_ascii_end(msg, at, len);
			p->badspace_from = p->ascii_from = at;
		}
		if (after_fast && only_space(msg, at, len)) {
			/* yajl, had it read the values before, would end here
			 * content; a fresh one would find no value at all */
			p->h = NULL;
			if (p->badspace < len) {
				char why[TIDEI_ERRLEN];
				p->val_start = p->badspace;
				bad_space(p, p->badspace, why);
				report(p, NULL, 0, why);
			}
			break;
		}
		after_fast = 0;

		p->h = yajl_alloc(&parse_callbacks, NULL, p);
		if (p->h == NULL)
			return -1;
		yajl_config(p->h, yajl_allow_multiple_values, 1);
		p->base = at;
		p->top_end = SIZE_MAX;
		p->depth = p->ev_depth = p->batch_depth = 0;
		p->mode = M_TOP;
		st = yajl_parse(p->h, (const unsigned char *)msg + at, len - at);
		if (st == yajl_status_ok) {
			p->finishing = 1;
			st = yajl_complete_parse(p->h);
			p->finishing = 0;
			/* a value cut off by the end of the message */
			err_at = len;
		} else {
			err_at = position(p);
		}
		if (st == yajl_status_ok) {
			if (p->top_end != SIZE_MAX && !only_space(msg, p->top_end, len)) {
				/* A string opened after a value and never closed:
				 * yajl, having read a value, takes the end of the
				 * text inside it for the end of the input. */
				char why[TIDEI_ERRLEN];
				snprintf(why, sizeof why,
					 "not valid JSON at byte %zu: premature EOF",
					 len - line_start(msg, len - 1));
				report(p, NULL, 0, why);
			} else if (p->badspace < len) {
				/* after the last token, where no callback saw it */
				char why[TIDEI_ERRLEN];
				p->val_start = p->badspace;
				bad_space(p, p->badspace, why);
				report(p, NULL, 0, why);
			}
			yajl_free(p->h);
			break;
		}
		/* The failed value began at val_start if one was open, else the
		 * error is in stray text between values. */
		if (p->depth > 0) {
			failed = p->val_start;
		} else {
			/* the stray text starts past the last value read, if
			 * any; a token yajl did not take (a comment's slash)
			 * ends no further than it begins */
			size_t from = p->top_end != SIZE_MAX ? p->top_end : at;
			while (from < len && (msg[from] == ' ' || msg[from] == '\t' ||
					      msg[from] == '\n' || msg[from] == '\r'))
				from++;
			failed = err_at > from ? err_at - 1 : from;
		}
		{
			unsigned char *why = yajl_get_error(p->h, 0, NULL, 0);
			char msgbuf[160];
			const char *w = (const char *)why;
			size_t l;
			/* yajl prefixes its messages with the error class. */
			if (strncmp(w, "lexical error: ", 15) == 0)
				w += 15;
			else if (strncmp(w, "parse error: ", 13) == 0)
				w += 13;
			snprintf(msgbuf, sizeof msgbuf, "not valid JSON at byte %zu: %s",
				 (err_at > failed ? err_at : failed + 1) - line_start(msg, failed),
				 w);
			l = strlen(msgbuf);
			while (l > 0 && (msgbuf[l - 1] == '\n' || msgbuf[l - 1] == ' '))
				msgbuf[--l] = '\0';
			yajl_free_error(p->h, why);
			report(p, NULL, 0, msgbuf);
		}
		yajl_free(p->h);
		p->h = NULL;
		/* Parsing may go back to text it has read (the lines of a
		 * batch after the line where it began): a scan that began
		 * after that point starts again from there, or a string or an
		 * event refused the first time would pass the second. */
		at = resync(msg, len, failed);
		if (p->badspace < at || at < p->badspace_from) {
			p->badspace = tidei_json_badspace(msg, at, len);
			p->badspace_from = at;
		}
		if (at < p->ascii_from) {
			p->ascii = tidei_json_ascii_end(msg, at, len);
			p->ascii_from = at;
		}
	}
	p->h = NULL;
	return (long)p->count;
}
