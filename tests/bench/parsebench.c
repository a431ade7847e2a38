/*
 * parsebench.c - the event parser alone: nanoseconds per event for the
 * benchmark's event (benchev.h), in messages of BATCH events as NDJSON,
 * through the fast path (jscan.c) and through yajl alone (the slow path
 * every message took before it).  No I/O: the messages are built first,
 * then each is parsed ROUNDS times, and the best of the rounds is kept
 * (the least disturbed by the machine's other work).
 *
 *   tests/bench/parsebench [--events N] [--batch B] [--rounds R] [--path fast|yajl]
 *
 * Prints one line per path:
 *   parse/fast ns_per_event=... events=... batch=...
 *   parse/yajl ns_per_event=...
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "benchev.h"
#include "event.h"

static size_t records;

static void
sink(void *ud, const uint8_t *rec, size_t len, const char *err)
{
	(void)ud;
	(void)rec;
	(void)len;
	if (err != NULL) {
		fprintf(stderr, "parsebench: refused: %s\n", err);
		exit(1);
	}
	records++;
}

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int
main(int argc, char **argv)
{
	size_t events = 200000, batch = 100, rounds = 5;
	int first = 0, last = 1;
	char **msg;
	size_t *len, nmsg;

	for (int k = 1; k + 1 < argc; k += 2) {
		if (strcmp(argv[k], "--events") == 0)
			events = strtoul(argv[k + 1], NULL, 10);
		else if (strcmp(argv[k], "--batch") == 0)
			batch = strtoul(argv[k + 1], NULL, 10);
		else if (strcmp(argv[k], "--rounds") == 0)
			rounds = strtoul(argv[k + 1], NULL, 10);
		else if (strcmp(argv[k], "--path") == 0 && strcmp(argv[k + 1], "fast") == 0)
			last = 0;
		else if (strcmp(argv[k], "--path") == 0 && strcmp(argv[k + 1], "yajl") == 0)
			first = 1;
		else {
			fprintf(stderr, "usage: parsebench [--events N] [--batch B] [--rounds R] "
					"[--path fast|yajl]\n");
			return 2;
		}
	}
	if (batch == 0 || events < batch || rounds == 0) {
		fprintf(stderr,
			"parsebench: need --batch >= 1, --events >= batch, --rounds >= 1\n");
		return 2;
	}
	nmsg = events / batch;
	msg = calloc(nmsg, sizeof *msg);
	len = calloc(nmsg, sizeof *len);
	if (msg == NULL || len == NULL)
		return 1;
	for (size_t m = 0; m < nmsg; m++) {
		size_t cap = batch * 400, at = 0;
		msg[m] = malloc(cap);
		if (msg[m] == NULL)
			return 1;
		for (size_t e = 0; e < batch; e++) {
			at += (size_t)bench_event(msg[m] + at, cap - at, "p", m * batch + e);
			msg[m][at++] = '\n';
		}
		len[m] = at;
	}
	for (int slow = first; slow <= last; slow++) {
		double best = 0;
		for (size_t r = 0; r < rounds; r++) {
			tidei_eparser p;
			double t0;
			tidei_eparser_init(&p, 1 << 20);
			p.slow_only = slow;
			records = 0;
			t0 = now();
			for (size_t m = 0; m < nmsg; m++)
				tidei_eparser_run(&p, msg[m], len[m], sink, NULL);
			t0 = now() - t0;
			tidei_eparser_free(&p);
			if (records != nmsg * batch) {
				fprintf(stderr, "parsebench: %zu records, not %zu\n", records,
					nmsg * batch);
				return 1;
			}
			if (r == 0 || t0 < best)
				best = t0;
		}
		printf("parse/%s ns_per_event=%.1f events=%zu batch=%zu rounds=%zu\n",
		       slow ? "yajl" : "fast", best * 1e9 / (double)(nmsg * batch), nmsg * batch,
		       batch, rounds);
	}
	return 0;
}
