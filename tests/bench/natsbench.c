/*
 * natsbench.c - NATS JetStream peer: publish N events to a file-backed
 * stream with js_PublishAsync and wait for every ack.
 *
 *   natsbench --url nats://127.0.0.1:PORT [--events N] [--pending P] [--run ID]
 *             [--replicas R] [--stream NAME] [--msgid 1]
 *
 * Creates stream BENCH (subjects "bench.>", file storage, one replica;
 * --replicas and --stream change them; --msgid 1 gives each message a
 * Nats-Msg-Id, as a Tide node does, so that the stream dedupes),
 * builds all N bodies (benchev.h, the same ~200-byte CloudEvents Tide gets)
 * before the clock starts, then times from the first js_PublishAsync until
 * js_PublishAsyncComplete returns, and checks the stream holds N messages.
 * Output: one line of key=value pairs.
 */
#define _GNU_SOURCE
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "benchev.h"

static long errors;

static void
on_err(jsCtx *js, jsPubAckErr *pae, void *closure)
{
	(void)js;
	(void)closure;
	if (errors++ < 5)
		fprintf(stderr, "natsbench: publish error: %s\n",
			pae->ErrText ? pae->ErrText : "?");
}

#define CHECK(what, s) \
	do { \
		natsStatus s_ = (s); \
		if (s_ != NATS_OK) { \
			fprintf(stderr, "natsbench: %s: %s\n", what, natsStatus_GetText(s_)); \
			nats_PrintLastErrorStack(stderr); \
			return 1; \
		} \
	} while (0)

int
main(int argc, char **argv)
{
	const char *url = "nats://127.0.0.1:4222", *run = "0", *stream = "BENCH";
	long n = 1000000, pending = 10000, replicas = 1, msgid = 0;
	char subject[128];
	natsConnection *nc = NULL;
	natsOptions *no = NULL;
	jsCtx *js = NULL;
	jsOptions jo;
	jsStreamConfig sc;
	jsStreamInfo *si = NULL;
	jsErrCode jerr = 0;
	jsPubOptions po;
	const char *subjects[1] = { subject };
	char *buf;
	size_t *off, len = 0;
	double t0, t1;
	uint64_t stored;

	for (int i = 1; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--url") == 0)
			url = argv[i + 1];
		else if (strcmp(argv[i], "--events") == 0)
			n = atol(argv[i + 1]);
		else if (strcmp(argv[i], "--pending") == 0)
			pending = atol(argv[i + 1]);
		else if (strcmp(argv[i], "--run") == 0)
			run = argv[i + 1];
		else if (strcmp(argv[i], "--replicas") == 0)
			replicas = atol(argv[i + 1]);
		else if (strcmp(argv[i], "--stream") == 0)
			stream = argv[i + 1];
		else if (strcmp(argv[i], "--msgid") == 0)
			msgid = atol(argv[i + 1]);
		else {
			fprintf(stderr, "natsbench: unknown option %s\n", argv[i]);
			return 2;
		}
	}
	snprintf(subject, sizeof subject, "%s.>", stream);
	buf = malloc((size_t)n * 320);
	off = malloc(sizeof *off * (size_t)(n + 1));
	if (buf == NULL || off == NULL)
		return 1;
	for (long i = 0; i < n; i++) {
		off[i] = len;
		len += (size_t)bench_event(buf + len, 320, run, (uint64_t)i + 1);
	}
	off[n] = len;

	CHECK("options", natsOptions_Create(&no));
	CHECK("url", natsOptions_SetURL(no, url));
	/* a big write buffer, as a throughput-minded client would use */
	CHECK("buffer", natsOptions_SetIOBufSize(no, 1 << 20));
	CHECK("connect", natsConnection_Connect(&nc, no));

	jsOptions_Init(&jo);
	jo.PublishAsync.MaxPending = pending;
	jo.PublishAsync.ErrHandler = on_err;
	jo.Wait = 30000;
	CHECK("jetstream", natsConnection_JetStream(&js, nc, &jo));

	jsStreamConfig_Init(&sc);
	sc.Name = stream;
	sc.Replicas = replicas;
	sc.Subjects = subjects;
	sc.SubjectsLen = 1;
	sc.Storage = js_FileStorage;
	CHECK("add stream", js_AddStream(&si, js, &sc, NULL, &jerr));
	jsStreamInfo_Destroy(si);
	si = NULL;

	snprintf(subject, sizeof subject, "%s.orders", stream);
	t0 = bench_now();
	for (long i = 0; i < n; i++) {
		if (msgid) {
			char id[64];
			snprintf(id, sizeof id, "%s-%ld", run, i);
			jsPubOptions_Init(&po);
			po.MsgId = id;
			CHECK("publish", js_PublishAsync(js, subject, buf + off[i],
							 (int)(off[i + 1] - off[i]), &po));
		} else {
			CHECK("publish", js_PublishAsync(js, subject, buf + off[i],
							 (int)(off[i + 1] - off[i]), NULL));
		}
	}
	jsPubOptions_Init(&po);
	po.MaxWait = 600000;
	CHECK("publish complete", js_PublishAsyncComplete(js, &po));
	t1 = bench_now();

	CHECK("stream info", js_GetStreamInfo(&si, js, stream, NULL, &jerr));
	stored = si->State.Msgs;
	printf("events=%ld pending=%ld avg_event_bytes=%.0f stored=%llu errors=%ld total_s=%.3f "
	       "rate=%.0f\n",
	       n, pending, (double)len / n, (unsigned long long)stored, errors, t1 - t0,
	       n / (t1 - t0));
	jsStreamInfo_Destroy(si);
	jsCtx_Destroy(js);
	natsConnection_Destroy(nc);
	natsOptions_Destroy(no);
	nats_Close();
	free(buf);
	free(off);
	return errors > 0 || stored != (uint64_t)n;
}
