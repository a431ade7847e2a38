/*
 * fuzz_event.c - libFuzzer target for the event parser (eparser.c).
 *
 * Feeds: the input, as it is, as one message to tidei_eparser_run(), the
 * way ingest hands it a nanomsg message: one event, a batch array, NDJSON,
 * or anything else.  The event limit is 2 KiB, below libFuzzer's default
 * input size (4 KiB), so that refusing a large event is reached too.
 *
 * Asserts, beyond no crash, leak or undefined behaviour:
 *  - the count returned is the number of reports made;
 *  - the fast path (jscan.c) changes nothing: with it turned off
 *    (slow_only, yajl for everything) the reports are the same records,
 *    byte for byte, and the same messages, in the same order;
 *  - every rejection carries a message, non-empty and valid UTF-8 (it is
 *    sent back to the producer inside JSON);
 *  - every record it reports decodes (tidei_event_decode), is written as
 *    JSON (tidei_event_json), and that JSON parsed again gives exactly one
 *    record, byte for byte the first: what is stored can be read back and
 *    sent again as it was.  The second parse has no size limit that
 *    matters, since the JSON form may be longer than what was sent ("1e2"
 *    comes back as "100.0").
 */
#include "config.h"

#include <string.h>

#include "event.h"
#include "fuzz.h"
#include "json.h"

#define MAX_EVENT 2048

/* What the second parse of one record's JSON found. */
typedef struct again {
	int reports;
	int ok;
	char err[TIDEI_ERRLEN];
	tidei_buf rec;
} again;

static void
again_sink(void *ud, const uint8_t *rec, size_t len, const char *err)
{
	again *a = ud;

	a->reports++;
	if (err != NULL) {
		snprintf(a->err, sizeof a->err, "%s", err);
		return;
	}
	a->ok = 1;
	tidei_buf_reset(&a->rec);
	tidei_buf_put(&a->rec, rec, len);
}

/* State for one input. */
typedef struct run {
	size_t reports;
	tidei_buf seen; /* every report, for the comparison of the two paths */
	tidei_buf json;
	again a;
} run;

static void
check_record(run *r, const uint8_t *rec, size_t len)
{
	struct tide_event ev;
	tidei_eparser p;
	long n;

	memset(&ev, 0, sizeof ev);
	FUZZ_CHECK(tidei_event_decode(&ev, rec, len) == 0, "a record of %zu bytes", len);
	tidei_buf_reset(&r->json);
	FUZZ_CHECK(tidei_event_json(&r->json, &ev) == 0, "a record of %zu bytes", len);

	r->a.reports = 0;
	r->a.ok = 0;
	r->a.err[0] = '\0';
	tidei_eparser_init(&p, SIZE_MAX);
	n = tidei_eparser_run(&p, (const char *)r->json.p, r->json.len, again_sink, &r->a);
	tidei_eparser_free(&p);
	FUZZ_CHECK(n == 1 && r->a.reports == 1, "%ld records from %.*s", n, (int)r->json.len,
		   (const char *)r->json.p);
	FUZZ_CHECK(r->a.ok, "%.*s refused: %s", (int)r->json.len, (const char *)r->json.p,
		   r->a.err);
	FUZZ_CHECK(r->a.rec.len == len && memcmp(r->a.rec.p, rec, len) == 0,
		   "%.*s read back as another record", (int)r->json.len, (const char *)r->json.p);
}

/* One report, as bytes: a tag, the length, the record or the message. */
static void
note(tidei_buf *b, const uint8_t *rec, size_t len, const char *err)
{
	if (err != NULL) {
		len = strlen(err);
		rec = (const uint8_t *)err;
	}
	tidei_buf_putc(b, err != NULL ? 'E' : 'R');
	tidei_buf_put(b, &len, sizeof len);
	tidei_buf_put(b, rec, len);
}

static void
note_sink(void *ud, const uint8_t *rec, size_t len, const char *err)
{
	note(ud, rec, len, err);
}

static void
sink(void *ud, const uint8_t *rec, size_t len, const char *err)
{
	run *r = ud;

	r->reports++;
	note(&r->seen, rec, len, err);
	if (err != NULL) {
		FUZZ_CHECK(err[0] != '\0', "an empty message");
		FUZZ_CHECK(tidei_utf8_check(err, strlen(err), NULL) == NULL,
			   "message not UTF-8: %s", err);
		return;
	}
	FUZZ_CHECK(rec != NULL && len >= TIDEI_REC_HEADER, "a record of %zu bytes", len);
	check_record(r, rec, len);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	tidei_eparser p;
	run r;
	long n;

	memset(&r, 0, sizeof r);
	tidei_eparser_init(&p, MAX_EVENT);
	n = tidei_eparser_run(&p, (const char *)data, size, sink, &r);
	FUZZ_CHECK(n >= 0, "out of memory on %zu bytes", size);
	FUZZ_CHECK((size_t)n == r.reports, "returned %ld for %zu reports", n, r.reports);
	tidei_eparser_free(&p);
	{
		tidei_buf slow = { 0 };
		long ns;
		tidei_eparser_init(&p, MAX_EVENT);
		p.slow_only = 1;
		ns = tidei_eparser_run(&p, (const char *)data, size, note_sink, &slow);
		tidei_eparser_free(&p);
		FUZZ_CHECK(!slow.failed && !r.seen.failed, "out of memory on %zu bytes", size);
		FUZZ_CHECK(ns == n && slow.len == r.seen.len &&
				   (slow.len == 0 || memcmp(slow.p, r.seen.p, slow.len) == 0),
			   "the fast path reports otherwise than yajl alone (%ld against %ld "
			   "reports) on %zu bytes",
			   n, ns, size);
		tidei_buf_free(&slow);
	}
	tidei_buf_free(&r.seen);
	tidei_buf_free(&r.json);
	tidei_buf_free(&r.a.rec);
	return 0;
}
