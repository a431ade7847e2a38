/*
 * request.c - parsing and checking requests to the engine on REP.
 *
 * A request names what it acts on, and acting on too much is the worst
 * way a request can go wrong: a "seq" sent as a string once dropped every
 * dead letter, because a member that did not read as a number was taken
 * as absent, and absent means "all".  So this parser is strict where the
 * event parser is forgiving: every member must be known, appear once and
 * have the right type and range; anything else refuses the whole request
 * with a message naming the member.  Only a member that is really absent
 * widens a request.
 *
 * It owns the wire form of requests and nothing else: engine.c decides
 * what they do.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "json.h"
#include "request.h"
#include "val.h"

/* Bits for the members seen, to refuse repeats and mixtures. */
enum {
	M_QUERY = 1 << 0,
	M_COMMAND = 1 << 1,
	M_KEY = 1 << 2,
	M_PREFIX = 1 << 3,
	M_LIMIT = 1 << 4,
	M_OP = 1 << 5,
	M_CONSUMER = 1 << 6,
	M_SEQ = 1 << 7,
	M_NAME = 1 << 8,
};

static const struct {
	const char *name;
	unsigned bit;
} members[] = {
	{ "query", M_QUERY },       { "command", M_COMMAND }, { "key", M_KEY },
	{ "prefix", M_PREFIX },     { "limit", M_LIMIT },     { "op", M_OP },
	{ "consumer", M_CONSUMER }, { "seq", M_SEQ },         { "name", M_NAME },
};

/* Members each kind of request may carry besides the one naming it. */
#define QUERY_MEMBERS (M_QUERY | M_KEY | M_PREFIX | M_LIMIT)
#define DLQ_MEMBERS (M_COMMAND | M_OP | M_CONSUMER | M_SEQ)
#define REBUILD_MEMBERS (M_COMMAND | M_OP | M_NAME)
#define CLUSTER_MEMBERS M_COMMAND

static int
skip_space(const char *m, size_t n, size_t k)
{
	while (k < n && (m[k] == ' ' || m[k] == '\t' || m[k] == '\r' || m[k] == '\n'))
		k++;
	return (int)k;
}

int
tidei_request_is(const char *m, size_t n)
{
	size_t k = (size_t)skip_space(m, n, 0);

	if (k >= n || m[k++] != '{')
		return 0;
	k = (size_t)skip_space(m, n, k);
	return (n - k >= 9 && memcmp(m + k, "\"command\"", 9) == 0) ||
	       (n - k >= 7 && memcmp(m + k, "\"query\"", 7) == 0);
}

static int
is(const tidei_vitem *s, const char *lit)
{
	size_t n = strlen(lit);

	return s->type == TIDEI_V_STR && s->u.s.n == n && memcmp(s->u.s.p, lit, n) == 0;
}

/* A name (projection or consumer) as the engine accepts them: 1 to 200
 * bytes, printable, no spaces.  Copied into @p out. */
static int
take_name(const tidei_vitem *v, const char *what, char *out, char *err)
{
	if (v->type != TIDEI_V_STR)
		return tidei_err(err, TIDE_EINVAL, "\"%s\" must be a string", what);
	if (v->u.s.n == 0 || v->u.s.n > 200)
		return tidei_err(err, TIDE_EINVAL, "\"%s\" must be 1 to 200 bytes long", what);
	for (uint32_t k = 0; k < v->u.s.n; k++)
		if ((unsigned char)v->u.s.p[k] < 0x20 || v->u.s.p[k] == 0x7f)
			return tidei_err(err, TIDE_EINVAL,
					 "\"%s\" must not contain control characters", what);
	memcpy(out, v->u.s.p, v->u.s.n);
	out[v->u.s.n] = '\0';
	return TIDE_OK;
}

/* A key or prefix: any string without NUL (the query API takes C strings).
 * The encoding does not end strings with NUL, so it is copied, ended, to
 * the end of @p scratch. */
static int
take_text(tidei_buf *scratch, size_t *at, const tidei_vitem *v, const char *what, char *err)
{
	if (v->type != TIDEI_V_STR)
		return tidei_err(err, TIDE_EINVAL, "\"%s\" must be a string", what);
	if (memchr(v->u.s.p, '\0', v->u.s.n) != NULL)
		return tidei_err(err, TIDE_EINVAL, "\"%s\" must not contain NUL", what);
	/* the string lies in @p scratch itself: make room first, then copy
	 * from where it is after a move */
	size_t off = (size_t)((const uint8_t *)v->u.s.p - scratch->p), n = v->u.s.n;

	if (tidei_buf_reserve(scratch, n + 1) != 0)
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	*at = scratch->len;
	memmove(scratch->p + scratch->len, scratch->p + off, n);
	scratch->p[scratch->len + n] = '\0';
	scratch->len += n + 1;
	return TIDE_OK;
}

/* A positive integer (a seq, a limit). */
static int
take_count(const tidei_vitem *v, const char *what, const char *meaning, uint64_t *out, char *err)
{
	if (v->type != TIDEI_V_INT || v->u.i < 1)
		return tidei_err(err, TIDE_EINVAL, "\"%s\" must be a positive integer (%s)", what,
				 meaning);
	*out = (uint64_t)v->u.i;
	return TIDE_OK;
}

int
tidei_request_parse(tidei_request *r, const char *msg, size_t len, tidei_buf *scratch, char *err)
{
	tidei_vreader rd;
	tidei_vitem map, key, val;
	size_t key_at = 0, prefix_at = 0, decoded;
	unsigned seen = 0, allowed;
	int rc;

	memset(r, 0, sizeof *r);
	tidei_buf_reset(scratch);
	if (tidei_json_decode(msg, len, scratch, err) != 0)
		return TIDE_EINVAL;
	decoded = scratch->len;
	/* strings copied for the caller go after the decoded value; the reader
	 * works on offsets, as copying may move the buffer */
	rd.p = scratch->p;
	rd.end = scratch->p + decoded;
	if (tidei_val_next(&rd, &map) != 0 || map.type != TIDEI_V_MAP)
		return tidei_err(err, TIDE_EINVAL, "a request is a JSON object");
	for (uint32_t k = 0; k < map.u.count; k++) {
		unsigned bit = 0;
		size_t vpos;
		if (tidei_val_next(&rd, &key) != 0 || key.type != TIDEI_V_STR)
			return tidei_err(err, TIDE_EINVAL, "malformed request");
		for (size_t m = 0; m < sizeof members / sizeof *members && bit == 0; m++)
			if (is(&key, members[m].name))
				bit = members[m].bit;
		if (bit == 0)
			return tidei_err(err, TIDE_EINVAL, "unknown member \"%.*s\" in a request",
					 (int)tidei_utf8_cut(key.u.s.p, key.u.s.n, 64), key.u.s.p);
		if (seen & bit)
			return tidei_err(err, TIDE_EINVAL, "member \"%.*s\" is given twice",
					 (int)key.u.s.n, key.u.s.p);
		if (k == 0 && bit != M_QUERY && bit != M_COMMAND)
			return tidei_err(err, TIDE_EINVAL,
					 "a request begins with \"query\" or \"command\"");
		seen |= bit;
		vpos = (size_t)(rd.p - scratch->p);
		if (tidei_val_next(&rd, &val) != 0)
			return tidei_err(err, TIDE_EINVAL, "malformed request");
		if (val.type == TIDEI_V_ARRAY || val.type == TIDEI_V_MAP)
			return tidei_err(err, TIDE_EINVAL, "\"%.*s\" must not be %s",
					 (int)key.u.s.n, key.u.s.p,
					 val.type == TIDEI_V_MAP ? "an object" : "an array");
		switch (bit) {
		case M_QUERY:
			r->kind = TIDEI_REQ_QUERY;
			rc = take_name(&val, "query", r->name, err);
			break;
		case M_COMMAND:
			if (is(&val, "dlq"))
				r->kind = TIDEI_REQ_DLQ;
			else if (is(&val, "projection"))
				r->kind = TIDEI_REQ_REBUILD;
			else if (is(&val, "cluster"))
				r->kind = TIDEI_REQ_CLUSTER;
			else if (val.type == TIDEI_V_STR)
				return tidei_err(
					err, TIDE_EINVAL,
					"unknown command \"%.*s\" (dlq, projection or cluster)",
					(int)tidei_utf8_cut(val.u.s.p, val.u.s.n, 64), val.u.s.p);
			else
				return tidei_err(err, TIDE_EINVAL,
						 "\"command\" must be \"dlq\", \"projection\" or "
						 "\"cluster\"");
			rc = TIDE_OK;
			break;
		case M_KEY: rc = take_text(scratch, &key_at, &val, "key", err); break;
		case M_PREFIX: rc = take_text(scratch, &prefix_at, &val, "prefix", err); break;
		case M_LIMIT:
			rc = take_count(&val, "limit", "leave it out for no limit", &r->limit, err);
			break;
		case M_OP:
			if (is(&val, "retry"))
				r->op = TIDE_DLQ_RETRY;
			else if (is(&val, "drop"))
				r->op = TIDE_DLQ_DROP;
			else if (is(&val, "rebuild"))
				r->op = -1;
			else
				r->op = 0;
			rc = TIDE_OK;
			break;
		case M_CONSUMER: rc = take_name(&val, "consumer", r->consumer, err); break;
		case M_SEQ:
			rc = take_count(&val, "seq",
					"the seq of one dead letter; leave it out to mean all",
					&r->seq, err);
			break;
		case M_NAME: rc = take_name(&val, "name", r->name, err); break;
		default: rc = TIDE_EINVAL;
		}
		if (rc != TIDE_OK)
			return rc;
		/* copies may have moved the buffer */
		rd.p = scratch->p + vpos;
		rd.end = scratch->p + decoded;
		if (tidei_val_skip(&rd) != 0)
			return tidei_err(err, TIDE_EINVAL, "malformed request");
	}
	if (r->kind == 0) /* {} */
		return tidei_err(err, TIDE_EINVAL,
				 "a request begins with \"query\" or \"command\"");
	allowed = r->kind == TIDEI_REQ_QUERY     ? QUERY_MEMBERS
		  : r->kind == TIDEI_REQ_DLQ     ? DLQ_MEMBERS
		  : r->kind == TIDEI_REQ_CLUSTER ? CLUSTER_MEMBERS
						 : REBUILD_MEMBERS;
	if (seen & ~allowed) {
		for (size_t m = 0; m < sizeof members / sizeof *members; m++)
			if (seen & ~allowed & members[m].bit)
				return tidei_err(err, TIDE_EINVAL,
						 "\"%s\" does not belong in a %s request",
						 members[m].name,
						 r->kind == TIDEI_REQ_QUERY     ? "query"
						 : r->kind == TIDEI_REQ_DLQ     ? "dlq"
						 : r->kind == TIDEI_REQ_CLUSTER ? "cluster"
										: "projection");
	}
	switch (r->kind) {
	case TIDEI_REQ_QUERY:
		if ((seen & M_KEY) && (seen & (M_PREFIX | M_LIMIT)))
			return tidei_err(
				err, TIDE_EINVAL,
				"a query takes a \"key\", or a \"prefix\" and a \"limit\", "
				"not both");
		break;
	case TIDEI_REQ_DLQ:
		if (!(seen & M_OP) || (r->op != TIDE_DLQ_RETRY && r->op != TIDE_DLQ_DROP))
			return tidei_err(err, TIDE_EINVAL,
					 "dlq: \"op\" must be \"retry\" or \"drop\"");
		break;
	case TIDEI_REQ_REBUILD:
		if (!(seen & M_OP) || r->op != -1)
			return tidei_err(err, TIDE_EINVAL,
					 "projection: \"op\" must be \"rebuild\"");
		if (!(seen & M_NAME))
			return tidei_err(err, TIDE_EINVAL, "projection: give its \"name\"");
		r->op = 0;
		break;
	}
	if (seen & M_KEY) {
		r->key = (const char *)scratch->p + key_at;
		r->klen = strlen(r->key);
	}
	if (seen & M_PREFIX) {
		r->prefix = (const char *)scratch->p + prefix_at;
		r->plen = strlen(r->prefix);
	}
	return TIDE_OK;
}
