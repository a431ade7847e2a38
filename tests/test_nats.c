/*
 * test_nats.c - the NATS JetStream rig (nats_rig.h) against real servers:
 * a cluster of three that keeps a replicated stream through the loss of a
 * follower and a change of leader, without storing a duplicate; and the
 * server's `partition(n, token)` subject mapping, which must put every key
 * in the partition tidei_partition() gives it.
 */
#define _GNU_SOURCE
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "nats_rig.h"
#include "partition.h"

/* The cluster of the running test, stopped by the teardown. */
static tn_cluster cl;

static void
teardown(void)
{
	tn_cluster_stop(&cl);
	nats_CloseAndWait(5000);
	th_cleanup();
}

static jsCtx *
js_of(natsConnection *nc)
{
	jsOptions jo;
	jsCtx *js = NULL;

	jsOptions_Init(&jo);
	jo.Wait = 5000;
	ck_assert_int_eq(natsConnection_JetStream(&js, nc, &jo), NATS_OK);
	return js;
}

/* Publish @p data to @p subj with header Nats-Msg-Id @p id.  While the
 * cluster fails over, a publish may time out; it is sent again with the
 * same id (10 s at most), which is what the id is for.  *tries gets the
 * number of sends.  Returns the ack (jsPubAck_Destroy). */
static jsPubAck *
publish(jsCtx *js, const char *subj, const char *id, const char *data, int *tries)
{
	int64_t deadline = th_ms() + 10000;
	jsPubAck *pa = NULL;
	natsStatus s;
	jsErrCode je;

	*tries = 0;
	do {
		jsPubOptions po;
		natsMsg *m = NULL;
		jsPubOptions_Init(&po);
		po.MaxWait = 2000;
		ck_assert_int_eq(natsMsg_Create(&m, subj, NULL, data, (int)strlen(data)), NATS_OK);
		ck_assert_int_eq(natsMsgHeader_Set(m, "Nats-Msg-Id", id), NATS_OK);
		je = 0;
		s = js_PublishMsg(&pa, js, m, &po, &je);
		natsMsg_Destroy(m);
		(*tries)++;
	} while (s != NATS_OK && th_ms() < deadline);
	ck_assert_msg(s == NATS_OK, "publish %s to %s: %s (%d) %s", id, subj, natsStatus_GetText(s),
		      (int)je, nats_GetLastError(NULL));
	return pa;
}

/* Publish messages @p from to @p to - 1 to "t.<k>" with ids "m-<k>", none
 * of them seen before.  Returns the number that needed another send. */
static int
publish_new(jsCtx *js, int from, int to)
{
	int resent = 0;

	for (int k = from; k < to; k++) {
		char subj[32], id[32];
		jsPubAck *pa;
		int tries;
		snprintf(subj, sizeof subj, "t.%d", k);
		snprintf(id, sizeof id, "m-%d", k);
		pa = publish(js, subj, id, id, &tries);
		/* A resend may find the first send stored: then it is a duplicate. */
		ck_assert_msg(tries > 1 || !pa->Duplicate, "%s taken for a duplicate", id);
		resent += tries > 1;
		jsPubAck_Destroy(pa);
	}
	return resent;
}

/* Messages in stream @p name, its first and last sequence. */
static void
stream_state(jsCtx *js, const char *name, uint64_t *msgs, uint64_t *first, uint64_t *last)
{
	jsStreamInfo *si = NULL;
	jsErrCode je = 0;
	natsStatus s = js_GetStreamInfo(&si, js, name, NULL, &je);

	ck_assert_msg(s == NATS_OK, "stream info %s: %s (%d)", name, natsStatus_GetText(s),
		      (int)je);
	*msgs = si->State.Msgs;
	*first = si->State.FirstSeq;
	*last = si->State.LastSeq;
	jsStreamInfo_Destroy(si);
}

/* Wait (20 s) until server @p name is a current replica of @p stream. */
static void
wait_replica_current(jsCtx *js, const char *stream, const char *name)
{
	int64_t deadline = th_ms() + 20000;
	int current = 0;

	while (!current && th_ms() < deadline) {
		jsStreamInfo *si = NULL;
		if (js_GetStreamInfo(&si, js, stream, NULL, NULL) == NATS_OK &&
		    si->Cluster != NULL) {
			jsClusterInfo *ci = si->Cluster;
			if (ci->Leader != NULL && strcmp(ci->Leader, name) == 0)
				current = 1;
			for (int k = 0; k < ci->ReplicasLen; k++) {
				jsPeerInfo *p = ci->Replicas[k];
				if (strcmp(p->Name, name) == 0 && p->Current && !p->Offline &&
				    p->Lag == 0)
					current = 1;
			}
		}
		jsStreamInfo_Destroy(si);
		if (!current)
			th_pause();
	}
	ck_assert_msg(current, "%s did not catch up on stream %s in 20 s", name, stream);
}

/* ------------------------------------------------------------------------
 * A cluster of three
 * ------------------------------------------------------------------------ */

START_TEST(cluster_starts_and_replicates)
{
	const char *subj[1] = { "t.>" };
	char leader[64], again[64];
	uint64_t msgs, first, last;
	natsConnection *nc;
	jsStreamConfig cfg;
	jsErrCode je = 0;
	jsCtx *js;
	int f, resent;

	ck_assert_int_eq(tn_cluster_start(&cl, 3, 0), 0);
	ck_assert_ptr_nonnull(nc = tn_connect(&cl));
	js = js_of(nc);

	jsStreamConfig_Init(&cfg);
	cfg.Name = "T";
	cfg.Subjects = subj;
	cfg.SubjectsLen = 1;
	cfg.Replicas = 3;
	cfg.Duplicates = (int64_t)120 * 1000 * 1000 * 1000; /* 2 min, in ns */
	ck_assert_msg(js_AddStream(NULL, js, &cfg, NULL, &je) == NATS_OK, "stream T: %d %s",
		      (int)je, nats_GetLastError(NULL));

	/* 100 publishes; every fifth repeats the id of four before. */
	for (int k = 0; k < 100; k++) {
		char s[32], id[32];
		jsPubAck *pa;
		int tries, dup = k % 5 == 4;
		snprintf(s, sizeof s, "t.a.%d", k);
		snprintf(id, sizeof id, "a-%d", dup ? k - 4 : k);
		pa = publish(js, s, id, s, &tries);
		ck_assert_int_eq(tries, 1);
		ck_assert_msg(pa->Duplicate == dup, "publish %d: duplicate %d", k,
			      (int)pa->Duplicate);
		jsPubAck_Destroy(pa);
	}
	stream_state(js, "T", &msgs, &first, &last);
	ck_assert_uint_eq(msgs, 80);
	ck_assert_uint_eq(last, 80);

	/* Lose a follower: the other two still make a quorum. */
	ck_assert_int_eq(tn_stream_leader(&cl, "T", leader, sizeof leader), 0);
	ck_assert_int_ge(tn_server_index(&cl, leader), 0);
	f = (tn_server_index(&cl, leader) + 1) % 3;
	tn_server_kill(&cl, f);
	resent = publish_new(js, 0, 100);
	if (resent > 0)
		fprintf(stderr, "nats: %d publishes sent again after %s was killed\n", resent,
			cl.name[f]);
	stream_state(js, "T", &msgs, &first, &last);
	ck_assert_uint_eq(msgs, 180);
	ck_assert_uint_eq(last, 180);

	/* Bring it back, let it catch up, then move the leader. */
	ck_assert_int_eq(tn_server_restart(&cl, f), 0);
	wait_replica_current(js, "T", cl.name[f]);
	ck_assert_int_eq(tn_stream_step_down(&cl, "T"), 0);
	ck_assert_int_eq(tn_stream_leader(&cl, "T", again, sizeof again), 0);
	ck_assert_str_ne(again, leader);
	ck_assert_int_ge(tn_server_index(&cl, again), 0);

	publish_new(js, 100, 150);
	stream_state(js, "T", &msgs, &first, &last);
	ck_assert_uint_eq(msgs, 230);
	ck_assert_uint_eq(first, 1);
	ck_assert_uint_eq(last, 230);

	jsCtx_Destroy(js);
	natsConnection_Destroy(nc);
}
END_TEST

/* ------------------------------------------------------------------------
 * The server's partition mapping is tidei_partition()
 * ------------------------------------------------------------------------ */

START_TEST(partition_matches_server_mapping)
{
	static const char *odd[] = { "a", "\xc3\xa4" /* ä */, "x-y_z", "0", "KEY", "card-" };
	enum { NCARDS = 1000, NODD = sizeof odd / sizeof odd[0], NKEYS = NCARDS + NODD };
	const char *subj[1] = { "tide.p.>" };
	unsigned used[4] = { 0 };
	uint64_t seq[NKEYS];
	natsConnection *nc;
	jsStreamConfig cfg;
	jsErrCode je = 0;
	jsCtx *js;

	ck_assert_int_eq(tn_cluster_start(&cl, 1, 4), 0);
	ck_assert_ptr_nonnull(nc = tn_connect(&cl));
	js = js_of(nc);
	jsStreamConfig_Init(&cfg);
	cfg.Name = "P";
	cfg.Subjects = subj;
	cfg.SubjectsLen = 1;
	ck_assert_msg(js_AddStream(NULL, js, &cfg, NULL, &je) == NATS_OK, "stream P: %d %s",
		      (int)je, nats_GetLastError(NULL));

	for (int k = 0; k < NKEYS; k++) {
		char key[32], s[64];
		jsPubAck *pa = NULL;
		natsStatus st;
		if (k < NCARDS)
			snprintf(key, sizeof key, "card-%d", k);
		else
			snprintf(key, sizeof key, "%s", odd[k - NCARDS]);
		snprintf(s, sizeof s, "tide.in.%s", key);
		st = js_Publish(&pa, js, s, key, (int)strlen(key), NULL, &je);
		ck_assert_msg(st == NATS_OK, "publish %s: %s (%d)", s, natsStatus_GetText(st),
			      (int)je);
		ck_assert_str_eq(pa->Stream, "P");
		seq[k] = pa->Sequence;
		jsPubAck_Destroy(pa);
	}

	/* Read each back by its sequence: the subject it was stored under. */
	for (int k = 0; k < NKEYS; k++) {
		char want[64], key[32];
		natsMsg *m = NULL;
		uint32_t p;
		ck_assert_int_eq(js_GetMsg(&m, js, "P", seq[k], NULL, &je), NATS_OK);
		ck_assert_int_lt(natsMsg_GetDataLength(m), (int)sizeof key);
		memcpy(key, natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
		key[natsMsg_GetDataLength(m)] = '\0';
		p = tidei_partition(key, strlen(key), 4);
		snprintf(want, sizeof want, "tide.p.%u.%s", (unsigned)p, key);
		ck_assert_msg(strcmp(natsMsg_GetSubject(m), want) == 0,
			      "key \"%s\": stored on %s, tidei_partition says %s", key,
			      natsMsg_GetSubject(m), want);
		used[p]++;
		natsMsg_Destroy(m);
	}
	for (int p = 0; p < 4; p++)
		ck_assert_msg(used[p] > 0, "partition %d holds no key", p);

	jsCtx_Destroy(js);
	natsConnection_Destroy(nc);
}
END_TEST

Suite *
nats_suite(void)
{
	Suite *s = suite_create("nats");
	TCase *tc = tcase_create("nats");

	tcase_add_checked_fixture(tc, NULL, teardown);
	tcase_add_test(tc, cluster_starts_and_replicates);
	tcase_add_test(tc, partition_matches_server_mapping);
	tcase_set_timeout(tc, 120);
	suite_add_tcase(s, tc);
	return s;
}
