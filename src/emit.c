/*
 * emit.c - what an emitted event gets from its cause (consumer.h's
 * tidei_emit_prepare): a default source and id, the cause's ids for
 * causation and correlation, its time, and the depth of the chain.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "consumer.h"

static int
set_default(tidei_evb *b, int attr, const char *val, size_t n)
{
	if (b->seen & (1u << attr))
		return 0;
	return tidei_evb_string(b, tidei_attr_names[attr], strlen(tidei_attr_names[attr]), val, n);
}

int
tidei_emit_prepare(tidei_evb *b, const char *consumer, const struct tide_event *cause, size_t k,
		   unsigned max_depth, char *err)
{
	return tidei_emit_prepare_tagged(b, consumer, cause, "", k, INT64_MIN, max_depth, 0, err);
}

int
tidei_emit_prepare_tagged(tidei_evb *b, const char *consumer, const struct tide_event *cause,
			  const char *tag, size_t k, int64_t at, unsigned max_depth, int stable,
			  char *err)
{
	unsigned depth = tidei_event_depth(cause) + 1;
	char tmp[256];
	int n;

	if (b->expect >= 0)
		return tidei_err(err, TIDE_EINVAL, "%s is for producers, not for emitted events",
				 TIDEI_EXPECT_ATTR);
	/* Handlers that emit what they (or others) react to make a loop that
	 * would fill the disk: it ends at the bound, with a dead letter. */
	if ((max_depth && depth > max_depth) || depth > UINT16_MAX)
		return tidei_err(err, TIDE_EINVAL,
				 "this event would be the %u%s emit in a chain from a published "
				 "event (at most %u: max_emit_depth); do handlers emit what they "
				 "react to?",
				 depth,
				 depth % 10 == 1 && depth % 100 != 11   ? "st"
				 : depth % 10 == 2 && depth % 100 != 12 ? "nd"
				 : depth % 10 == 3 && depth % 100 != 13 ? "rd"
									: "th",
				 max_depth ? max_depth : UINT16_MAX);
	b->depth = (uint16_t)depth;
	n = snprintf(tmp, sizeof tmp, "/tide/%s", consumer);
	set_default(b, TIDEI_A_SOURCE, tmp, (size_t)n);
	if (stable) {
		/* the same on every node that handles the cause (a cluster's
		 * partitions move): from the cause's source and id, not its seq */
		uint64_t h = 14695981039346656037ull;
		for (int a = 0; a < 2; a++) {
			int at_ = a ? TIDEI_A_ID : TIDEI_A_SOURCE;
			for (size_t i = 0; i < cause->len[at_]; i++) {
				h ^= (uint8_t)cause->attr[at_][i];
				h *= 1099511628211ull;
			}
			h ^= 0xff; /* between the two */
			h *= 1099511628211ull;
		}
		n = snprintf(tmp, sizeof tmp, "%016llx.%s%zu", (unsigned long long)h, tag, k);
	} else {
		n = snprintf(tmp, sizeof tmp, "%llu.%s%zu", (unsigned long long)cause->seq, tag, k);
	}
	set_default(b, TIDEI_A_ID, tmp, (size_t)n);
	set_default(b, TIDEI_A_CAUSATIONID, cause->attr[TIDEI_A_ID], cause->len[TIDEI_A_ID]);
	/* it happened when its cause did (or when the timer fell due): rules
	 * that react to it see it at that point of event time */
	if (at != INT64_MIN) {
		n = (int)tidei_time_format(tmp, at);
		set_default(b, TIDEI_A_TIME, tmp, (size_t)n);
	} else if (cause->attr[TIDEI_A_TIME] != NULL) {
		set_default(b, TIDEI_A_TIME, cause->attr[TIDEI_A_TIME], cause->len[TIDEI_A_TIME]);
	}
	if (cause->attr[TIDEI_A_CORRELATIONID] != NULL)
		set_default(b, TIDEI_A_CORRELATIONID, cause->attr[TIDEI_A_CORRELATIONID],
			    cause->len[TIDEI_A_CORRELATIONID]);
	else
		set_default(b, TIDEI_A_CORRELATIONID, cause->attr[TIDEI_A_ID],
			    cause->len[TIDEI_A_ID]);
	return b->invalid ? tidei_err(err, TIDE_EEVENT, "%s", b->err) : TIDE_OK;
}
