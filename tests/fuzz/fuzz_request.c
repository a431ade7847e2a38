/*
 * fuzz_request.c - libFuzzer target for the REP request parser
 * (request.c).
 *
 * Feeds: the input as one REP message to tidei_request_is() and
 * tidei_request_parse(), parsed whatever the first says (the engine parses
 * only what looks like a request, but the parser must stand on its own).
 *
 * Asserts, beyond no crash, leak or undefined behaviour:
 *  - a refusal is TIDE_EINVAL (or TIDE_ENOMEM) with a message, non-empty
 *    and valid UTF-8 (it goes back to the client inside JSON);
 *  - an accepted request is consistent: its kind is set, its names are
 *    NUL-terminated, 1 to 200 bytes and free of control characters where
 *    it needs them and empty where it does not; key and prefix point into
 *    the scratch buffer, are NUL-terminated with klen and plen their
 *    strlen; a query has no key together with a prefix or a limit; a dlq
 *    command has op retry or drop and nothing of a query; a rebuild names
 *    its projection and has nothing else.
 */
#include "config.h"

#include <string.h>

#include "fuzz.h"
#include "json.h"
#include "request.h"

/* A name field: NUL-terminated inside its array; if @p needed, 1 to 200
 * bytes with no control character, else empty. */
static void
check_name(const char *s, int needed, const char *what)
{
	size_t n = strnlen(s, TIDEI_REQ_NAME);

	FUZZ_CHECK(n < TIDEI_REQ_NAME, "%s not NUL-terminated", what);
	if (!needed) {
		FUZZ_CHECK(n == 0, "%s set where it does not belong", what);
		return;
	}
	FUZZ_CHECK(n >= 1 && n <= 200, "%s of %zu bytes", what, n);
	for (size_t k = 0; k < n; k++)
		FUZZ_CHECK((unsigned char)s[k] >= 0x20 && s[k] != 0x7f,
			   "%s with a control character", what);
}

/* @p s (@p n bytes and a NUL) lies inside @p scratch. */
static void
check_text(const tidei_buf *scratch, const char *s, size_t n, const char *what)
{
	const char *lo = (const char *)scratch->p, *hi = lo + scratch->len;

	FUZZ_CHECK(s >= lo && s <= hi && (size_t)(hi - s) >= n + 1, "%s outside the scratch", what);
	FUZZ_CHECK(s[n] == '\0' && strlen(s) == n, "%s of length %zu is not %zu bytes", what,
		   strlen(s), n);
}

static void
check_request(const tidei_request *r, const tidei_buf *scratch)
{
	int query = r->kind == TIDEI_REQ_QUERY;

	FUZZ_CHECK(r->kind == TIDEI_REQ_QUERY || r->kind == TIDEI_REQ_DLQ ||
			   r->kind == TIDEI_REQ_REBUILD,
		   "kind %d", r->kind);
	check_name(r->name, r->kind != TIDEI_REQ_DLQ, "name");
	/* "" is every consumer, and only a dlq command names one */
	check_name(r->consumer, r->kind == TIDEI_REQ_DLQ && r->consumer[0] != '\0', "consumer");
	if (r->key != NULL) {
		FUZZ_CHECK(query, "a key in a request of kind %d", r->kind);
		FUZZ_CHECK(r->prefix == NULL && r->limit == 0, "a key with a prefix or a limit");
		check_text(scratch, r->key, r->klen, "key");
	} else {
		FUZZ_CHECK(r->klen == 0, "klen %zu without a key", r->klen);
	}
	if (r->prefix != NULL) {
		FUZZ_CHECK(query, "a prefix in a request of kind %d", r->kind);
		check_text(scratch, r->prefix, r->plen, "prefix");
	} else {
		FUZZ_CHECK(r->plen == 0, "plen %zu without a prefix", r->plen);
	}
	FUZZ_CHECK(query || r->limit == 0, "a limit in a request of kind %d", r->kind);
	FUZZ_CHECK(r->limit <= INT64_MAX, "limit %llu", (unsigned long long)r->limit);
	switch (r->kind) {
	case TIDEI_REQ_QUERY:
		FUZZ_CHECK(r->op == 0 && r->seq == 0, "op %d, seq %llu in a query", r->op,
			   (unsigned long long)r->seq);
		break;
	case TIDEI_REQ_DLQ:
		FUZZ_CHECK(r->op == TIDE_DLQ_RETRY || r->op == TIDE_DLQ_DROP, "dlq op %d", r->op);
		FUZZ_CHECK(r->seq <= INT64_MAX, "seq %llu", (unsigned long long)r->seq);
		break;
	case TIDEI_REQ_REBUILD:
		FUZZ_CHECK(r->op == 0 && r->seq == 0, "op %d, seq %llu in a rebuild", r->op,
			   (unsigned long long)r->seq);
		break;
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *msg = (const char *)data;
	char err[TIDEI_ERRLEN];
	tidei_buf scratch = { 0 };
	tidei_request r;
	int rc, looks;

	looks = tidei_request_is(msg, size);
	FUZZ_CHECK(looks == 0 || looks == 1, "tidei_request_is gave %d", looks);
	err[0] = '\0';
	rc = tidei_request_parse(&r, msg, size, &scratch, err);
	if (rc != TIDE_OK) {
		FUZZ_CHECK(rc == TIDE_EINVAL || rc == TIDE_ENOMEM, "code %d", rc);
		FUZZ_CHECK(err[0] != '\0', "an empty message for code %d", rc);
		FUZZ_CHECK(tidei_utf8_check(err, strlen(err), NULL) == NULL,
			   "message not UTF-8: %s", err);
	} else {
		check_request(&r, &scratch);
	}
	tidei_buf_free(&scratch);
	return 0;
}
