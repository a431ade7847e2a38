/*
 * request.h - requests to the engine on its REP endpoint (a JSON object
 * whose first member is "query" or "command"), parsed and checked before
 * anything acts on them.
 */
#ifndef TIDE_REQUEST_H
#define TIDE_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "err.h"

/** What a request asks for. */
enum {
	TIDEI_REQ_QUERY = 1,   /* {"query":NAME, "key":K} or "prefix"/"limit" */
	TIDEI_REQ_DLQ = 2,     /* {"command":"dlq","op":"retry"|"drop",...} */
	TIDEI_REQ_REBUILD = 3, /* {"command":"projection","op":"rebuild","name":N} */
	TIDEI_REQ_CLUSTER = 4, /* {"command":"cluster"}: the node's view of its cluster */
};

/** Longest consumer or projection name a request may carry. */
#define TIDEI_REQ_NAME 256

/** A checked request.  Strings are NUL-terminated; key and prefix point
 *  into the buffer given to tidei_request_parse() (they may be long and
 *  may hold any UTF-8, so they are not copied). */
typedef struct tidei_request {
	int kind;                  /* TIDEI_REQ_* */
	char name[TIDEI_REQ_NAME]; /* projection (query, rebuild) */
	const char *key, *prefix;  /* query: at most one of them; NULL if absent */
	size_t klen, plen;
	uint64_t limit;                /* query: at most this many states; 0 = no limit */
	int op;                        /* dlq: TIDE_DLQ_RETRY or TIDE_DLQ_DROP */
	char consumer[TIDEI_REQ_NAME]; /* dlq: "" = every consumer */
	uint64_t seq;                  /* dlq: 0 = every dead letter */
} tidei_request;

/** 1 if the message @p msg looks like a request rather than events: a JSON
 *  object whose first member is "command" or "query". */
int tidei_request_is(const char *msg, size_t len);

/** Parse and check the request @p msg, decoding it into @p scratch (which
 *  must outlive @p r).  Anything malformed (an unknown or repeated member,
 *  a member of the wrong type or out of range) is refused: a request
 *  never does more than it says.  Returns TIDE_OK, or TIDE_EINVAL with
 *  the reason in @p err (TIDEI_ERRLEN bytes). */
int tidei_request_parse(tidei_request *r, const char *msg, size_t len, tidei_buf *scratch,
			char *err);

#endif
