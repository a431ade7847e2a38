/*
 * test_cluster.c - Tide nodes sharing a stream's partitions over a real
 * NATS JetStream cluster (three nats-server processes, nats_rig.h): the
 * events producers had acknowledged are each stored exactly once, by the
 * node that owns their partition, and each owner's projection holds what
 * a model of the acknowledged events says (asked of any node: the others
 * forward the query to the owner), and so does a projection of what a rule
 * emitted for keys of other partitions (emits go through the stream to
 * the owner of their own key, once each), through a node killed with
 * SIGKILL (its partitions move to the others), its restart (they share
 * again), a NATS follower killed and restarted, and the stream's leader
 * stepping down.
 *
 * The stream's leader is moved with the step-down API, never killed:
 * nats-server 2.9.10 can leave a restarted replica with another sequence
 * to message map when its leader is killed with publishes in flight (see
 * nats_rig.h).
 */
#define _GNU_SOURCE
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"
#include "nats_rig.h"
#include "partition.h"

#define PARTS 6
#define KEYS 40
#define NODES 3
#define MAX_EVENTS 400000

static tn_cluster nats;

static void
teardown(void)
{
	tn_cluster_stop(&nats);
	th_cleanup();
}

static const char script[] =
	"local tide = require 'tide'\n"
	"tide.projection('count', { key = 'subject',\n"
	"  init = function() return { n = 0 } end,\n"
	"  on = { ['t.*'] = function(s) s.n = s.n + 1 end } })\n"
	"tide.projection('alerts', { key = 'subject',\n"
	"  init = function() return { n = 0 } end,\n"
	"  on = { ['alert.*'] = function(s) s.n = s.n + 1 end } })\n"
	"tide.on('t.*', function(ev, st)\n"
	"  st.n = (st.n or 0) + 1\n"
	"  local n = tonumber(ev.id:sub(2))\n"
	"  if n % 10 == 0 then\n"
	"    tide.emit({ type = 'alert.x', subject = 'k' .. ((n // 10) % 40) })\n"
	"  end\n"
	"end, { name = 'per_key', key = 'subject', from = 'beginning' })\n";

/* What producers were told: the events acknowledged, by number, and the
 * projection's model (events per key). */
typedef struct model {
	unsigned char acked[MAX_EVENTS + 1];
	long count[KEYS];
	long alerts[KEYS]; /* emitted for every tenth event, to another key */
	long total;
} model;

static void
start_node(th_daemon *d, const char *dir, int i, const char *scriptfile)
{
	char args[1024];

	/* node 0 also serves HTTP (its metrics) */
	snprintf(args, sizeof args,
		 "--cluster '%s' --node t%d --set cluster_partitions=%d --set cluster_replicas=3 "
		 "--set cluster_lease=2s --script '%s'%s",
		 nats.urls, i, PARTS, scriptfile, i == 0 ? " --http 127.0.0.1:0" : "");
	ck_assert_int_eq(th_daemon_start(d, dir, args), 0);
}

/* Node @p d's view: which partitions it owns (mine[p]) and their lag.
 * Returns 0, or -1 when it does not answer. */
static int
view(const th_daemon *d, int mine[PARTS], long lag[PARTS])
{
	char reply[8192], pat[64];

	if (th_req(d->rep, "{\"command\":\"cluster\"}", reply, sizeof reply, 3000) < 0 ||
	    strstr(reply, "\"ok\":true") == NULL)
		return -1;
	for (int p = 0; p < PARTS; p++) {
		const char *at, *end;
		snprintf(pat, sizeof pat, "{\"partition\":%d,", p);
		mine[p] = 0;
		lag[p] = 0;
		if ((at = strstr(reply, pat)) == NULL || (end = strchr(at, '}')) == NULL)
			return -1;
		if (memmem(at, (size_t)(end - at), "\"here\":true", 11) != NULL) {
			const char *l = memmem(at, (size_t)(end - at), "\"lag\":", 6);
			mine[p] = 1;
			lag[p] = l ? atol(l + 6) : 0;
		}
	}
	return 0;
}

/* Wait until the @p n nodes in @p alive own every partition once, none
 * more than its share, all caught up.  1 when they do. */
static int
wait_shared(th_daemon *const *alive, int n, int ms)
{
	int64_t deadline = th_ms() + ms;
	int share = (PARTS + n - 1) / n;

	while (th_ms() < deadline) {
		int owners[PARTS] = { 0 }, ok = 1;
		for (int i = 0; i < n && ok; i++) {
			int mine[PARTS], count = 0;
			long lag[PARTS];
			if (view(alive[i], mine, lag) != 0) {
				ok = 0;
				break;
			}
			for (int p = 0; p < PARTS; p++) {
				owners[p] += mine[p];
				count += mine[p];
				if (mine[p] && lag[p] != 0)
					ok = 0;
			}
			if (count > share)
				ok = 0;
		}
		for (int p = 0; p < PARTS && ok; p++)
			ok = owners[p] == 1;
		if (ok)
			return 1;
		usleep(100000);
	}
	return 0;
}

/* Publish events @p from to @p to to node @p d in one REP message; the
 * acknowledged ones go into the model.  Returns how many were. */
static long
publish(th_daemon *d, model *m, int from, int to)
{
	size_t cap = (size_t)(to - from + 1) * 160 + 1;
	char *msg = malloc(cap), *reply = malloc(cap * 2);
	size_t len = 0;
	const char *line;
	long acked = 0;
	int i = from;

	ck_assert_ptr_nonnull(msg);
	ck_assert_ptr_nonnull(reply);
	for (int k = from; k <= to; k++)
		len += (size_t)snprintf(msg + len, cap - len,
					"{\"specversion\":\"1.0\",\"id\":\"e%d\",\"source\":\"/c\","
					"\"type\":\"t.a\",\"subject\":\"k%d\"}\n",
					k, k % KEYS);
	if (th_req(d->rep, msg, reply, cap * 2, 20000) < 0) {
		free(msg);
		free(reply);
		return 0; /* no answer: none counts as acknowledged */
	}
	/* one line per event, in order */
	for (line = reply; line != NULL && i <= to; i++) {
		if (strncmp(line, "{\"ok\":true", 10) == 0 && !m->acked[i]) {
			m->acked[i] = 1;
			m->count[i % KEYS]++;
			if (i % 10 == 0)
				m->alerts[(i / 10) % KEYS]++;
			m->total++;
			acked++;
		}
		line = strchr(line, '\n');
		if (line != NULL)
			line++;
	}
	free(msg);
	free(reply);
	return acked;
}

/* The partition of event number @p i (its subject is its key). */
static uint32_t
part_of(int i)
{
	char key[16];
	int n = snprintf(key, sizeof key, "k%d", i % KEYS);

	return tidei_partition(key, (size_t)n, PARTS);
}

/* Every acknowledged event of each partition is in its owner's log once,
 * and each key's count in its owner's projection is the model's. */
static void
check_owners(th_daemon *const *alive, int n, const model *m)
{
	int owner[PARTS];

	for (int p = 0; p < PARTS; p++)
		owner[p] = -1;
	for (int i = 0; i < n; i++) {
		int mine[PARTS];
		long lag[PARTS];
		ck_assert_int_eq(view(alive[i], mine, lag), 0);
		for (int p = 0; p < PARTS; p++)
			if (mine[p])
				owner[p] = i;
	}
	for (int i = 0; i < n; i++) {
		static unsigned char seen[MAX_EVENTS + 1];
		int64_t deadline = th_ms() + 30000;
		int missing;
		/* the owner may still be catching up (a consumer moved to
		 * another server after a failover): wait for it */
		do {
			th_rec *v;
			long got = th_log_read(alive[i]->dir, &v);
			ck_assert_int_ge(got, 0);
			memset(seen, 0, sizeof seen);
			for (long k = 0; k < got; k++) {
				int e;
				if (strcmp(v[k].source, "/c") != 0)
					continue; /* an emitted alert */
				e = atoi(v[k].id + 1);
				ck_assert(e > 0 && e <= MAX_EVENTS);
				ck_assert_msg(!seen[e], "node %d stored event %d twice", i, e);
				seen[e] = 1;
			}
			th_recs_free(v, got);
			missing = 0;
			for (int e = 1; e <= MAX_EVENTS; e++)
				if (m->acked[e] && owner[part_of(e)] == i && !seen[e])
					missing = e;
			if (missing)
				usleep(100000);
		} while (missing && th_ms() < deadline);
		ck_assert_msg(!missing,
			      "event %d was acknowledged, but node %d, which owns its partition "
			      "%u, does not have it",
			      missing, i, missing ? part_of(missing) : 0);
	}
	for (int k = 0; k < 2 * KEYS; k++) {
		char key[16], q[128], reply[1024] = "", want[64];
		int64_t deadline = th_ms() + 20000;
		const char *proj = k < KEYS ? "count" : "alerts";
		long expect = k < KEYS ? m->count[k] : m->alerts[k - KEYS];
		/* asked of any node: one that does not own the key forwards it */
		th_daemon *d = alive[k % n];
		snprintf(key, sizeof key, "k%d", k % KEYS);
		snprintf(q, sizeof q, "{\"query\":\"%s\",\"key\":\"%s\"}", proj, key);
		snprintf(want, sizeof want, "\"n\":%ld}", expect);
		do {
			if (th_req(d->rep, q, reply, sizeof reply, 3000) >= 0 &&
			    strstr(reply, want) != NULL)
				break;
			usleep(50000);
		} while (th_ms() < deadline);
		if (strstr(reply, want) == NULL)
			for (int i = 0; i < n; i++)
				th_sh(NULL, 0, "grep -v debug '%s' | tail -15 >&2", alive[i]->log);
		ck_assert_msg(strstr(reply, want) != NULL, "%s of key %s: %s, the model says %ld",
			      proj, key, reply, expect);
	}
}

/* Three nodes share six partitions; one is killed (SIGKILL) in the middle
 * of the publishing, its partitions move to the other two, which rebuild
 * them from the stream (or go on from what they stored when they owned
 * them before); it comes back and they share again. */
START_TEST(node_killed_and_back)
{
	th_daemon d[NODES];
	th_daemon *alive[NODES];
	const char *dirs[NODES], *scriptfile;
	const char *ec = getenv("TIDE_CLUSTER_CYCLES"), *es = getenv("TIDE_CLUSTER_SEED");
	int cycles = ec ? atoi(ec) : 1;
	unsigned seed0 = es ? (unsigned)strtoul(es, NULL, 10) : (unsigned)getpid(), seed = seed0;
	static model m;
	int next = 1;

	memset(&m, 0, sizeof m);
	ck_assert_int_eq(tn_cluster_start(&nats, 3, 0), 0);
	scriptfile = th_write(th_tmpdir(), "c.lua", script);
	for (int i = 0; i < NODES; i++) {
		dirs[i] = strdup(th_tmpdir());
		start_node(&d[i], dirs[i], i, scriptfile);
		alive[i] = &d[i];
	}
	ck_assert_msg(wait_shared(alive, 3, 30000), "the partitions were not shared out");
	/* every node takes events, whichever partition they belong to */
	for (int b = 0; b < 15; b++, next += 100)
		ck_assert_int_eq(publish(&d[b % NODES], &m, next, next + 99), 100);
	ck_assert(wait_shared(alive, 3, 30000));
	check_owners(alive, 3, &m);

	/* a node dies in the middle of it, and comes back: as many times as
	 * TIDE_CLUSTER_CYCLES says (tests/soak/cluster.sh), each time another
	 * node, chosen by TIDE_CLUSTER_SEED */
	for (int c = 0; c < cycles; c++) {
		int v = c == 0 ? 2 : (int)(rand_r(&seed) % NODES), k = 0;
		th_daemon *rest[NODES - 1];
		for (int i = 0; i < NODES; i++)
			if (i != v)
				rest[k++] = &d[i];
		for (int b = 0; b < 10; b++, next += 100) {
			if (b == 3)
				th_daemon_kill(&d[v]);
			publish(b < 3 ? &d[(v + 1 + b % 2) % NODES] : rest[b % 2], &m, next,
				next + 99);
		}
		ck_assert_msg(wait_shared(rest, 2, 30000), "node %d's partitions did not move", v);
		check_owners(rest, 2, &m);
		/* it comes back: the partitions are shared again, and it goes
		 * on from what it had stored */
		start_node(&d[v], dirs[v], v, scriptfile);
		ck_assert_msg(wait_shared(alive, 3, 30000), "the partitions were not shared again");
		for (int b = 0; b < 6; b++, next += 100)
			ck_assert_int_eq(publish(&d[b % NODES], &m, next, next + 99), 100);
		ck_assert(wait_shared(alive, 3, 30000));
		check_owners(alive, 3, &m);
		ck_assert_int_lt(next + 1600, MAX_EVENTS);
	}
	fprintf(stderr,
		"cluster: %ld events acknowledged by 3 nodes, %d killed (SIGKILL) and back "
		"(seed %u)\n",
		m.total, cycles, seed0);
	for (int i = 0; i < NODES; i++) {
		ck_assert_int_eq(th_daemon_stop(&d[i]), 0);
		free((char *)dirs[i]);
	}
}
END_TEST

/* The NATS side fails under the nodes: a follower of the stream is killed
 * and restarted, then the leader steps down, while events flow; producers
 * send again what was not acknowledged (the same ids).  Nothing
 * acknowledged is lost and nothing is stored twice. */
START_TEST(nats_failover)
{
	th_daemon d[2];
	th_daemon *alive[2] = { &d[0], &d[1] };
	const char *scriptfile;
	static model m;
	char leader[64];
	int next = 1;

	memset(&m, 0, sizeof m);
	ck_assert_int_eq(tn_cluster_start(&nats, 3, 0), 0);
	scriptfile = th_write(th_tmpdir(), "c.lua", script);
	for (int i = 0; i < 2; i++)
		start_node(&d[i], th_tmpdir(), i, scriptfile);
	ck_assert(wait_shared(alive, 2, 30000));
	for (int b = 0; b < 5; b++, next += 100)
		publish(&d[b % 2], &m, next, next + 99);
	/* a follower of the stream goes, and comes back */
	ck_assert_int_eq(tn_stream_leader(&nats, "TIDE", leader, sizeof leader), 0);
	{
		int l = tn_server_index(&nats, leader), f = (l + 1) % 3;
		ck_assert_int_ge(l, 0);
		tn_server_kill(&nats, f);
		for (int b = 0; b < 5; b++, next += 100) {
			/* what was not acknowledged is sent again, as a producer would */
			int again = 0;
			while (publish(&d[b % 2], &m, next, next + 99) < 100 && again++ < 20)
				usleep(200000);
		}
		ck_assert_int_eq(tn_server_restart(&nats, f), 0);
	}
	/* the leader steps down */
	ck_assert_int_eq(tn_stream_step_down(&nats, "TIDE"), 0);
	for (int b = 0; b < 5; b++, next += 100) {
		int again = 0;
		while (publish(&d[b % 2], &m, next, next + 99) < 100 && again++ < 50)
			usleep(200000);
	}
	ck_assert_int_ge(m.total, 1000);
	ck_assert(wait_shared(alive, 2, 30000));
	check_owners(alive, 2, &m);
	fprintf(stderr,
		"cluster: %ld events acknowledged through a NATS follower's loss and a "
		"leader's step-down\n",
		m.total);
	for (int i = 0; i < 2; i++)
		ck_assert_int_eq(th_daemon_stop(&d[i]), 0);
}
END_TEST

/* Events published straight to NATS, as any client may; the cluster seen
 * from the command line (tide stat, tide query on a node that does not
 * own the key); then everything restarts, NATS servers and nodes, and
 * goes on where it was. */
START_TEST(everything_restarts)
{
	th_daemon d[2];
	th_daemon *alive[2] = { &d[0], &d[1] };
	const char *dirs[2], *scriptfile;
	static model m;
	char out[8192];
	int next = 1;

	memset(&m, 0, sizeof m);
	ck_assert_int_eq(tn_cluster_start(&nats, 3, 0), 0);
	scriptfile = th_write(th_tmpdir(), "c.lua", script);
	for (int i = 0; i < 2; i++) {
		dirs[i] = strdup(th_tmpdir());
		start_node(&d[i], dirs[i], i, scriptfile);
	}
	ck_assert(wait_shared(alive, 2, 30000));
	for (int b = 0; b < 5; b++, next += 100)
		ck_assert_int_eq(publish(&d[b % 2], &m, next, next + 99), 100);
	/* straight to the stream, on the events' partition subjects */
	{
		natsConnection *nc = tn_connect(&nats);
		jsCtx *js = NULL;
		ck_assert_ptr_nonnull(nc);
		ck_assert_int_eq(natsConnection_JetStream(&js, nc, NULL), NATS_OK);
		for (int i = next; i < next + 100; i++) {
			char subj[64], body[256], id[64];
			natsMsg *msg = NULL;
			jsPubAck *pa = NULL;
			snprintf(subj, sizeof subj, "tide.p.%u.direct", part_of(i));
			snprintf(body, sizeof body,
				 "{\"specversion\":\"1.0\",\"id\":\"e%d\",\"source\":\"/c\","
				 "\"type\":\"t.a\",\"subject\":\"k%d\"}",
				 i, i % KEYS);
			snprintf(id, sizeof id, "/c e%d", i);
			ck_assert_int_eq(natsMsg_Create(&msg, subj, NULL, body, (int)strlen(body)),
					 NATS_OK);
			natsMsgHeader_Set(msg, "Nats-Msg-Id", id);
			if (js_PublishMsg(&pa, js, msg, NULL, NULL) == NATS_OK) {
				m.acked[i] = 1;
				m.count[i % KEYS]++;
				if (i % 10 == 0)
					m.alerts[(i / 10) % KEYS]++;
				m.total++;
			}
			jsPubAck_Destroy(pa);
			natsMsg_Destroy(msg);
		}
		next += 100;
		jsCtx_Destroy(js);
		natsConnection_Destroy(nc);
	}
	ck_assert(wait_shared(alive, 2, 30000));
	check_owners(alive, 2, &m);

	/* the cluster from the command line (the other node's partitions as
	 * its leases say, read once per round of the keeper) */
	{
		int64_t deadline = th_ms() + 15000;
		int ok = 0;
		while (!ok && th_ms() < deadline) {
			ck_assert_int_eq(
				th_sh(out, sizeof out, "'%s' stat --data '%s'", TIDE_BIN, dirs[0]),
				0);
			ok = strstr(out, "cluster    node t0, 2 nodes alive, connected") != NULL &&
			     th_count(out, " here, position ") == PARTS / 2 &&
			     th_count(out, " owned by t1, position ") == PARTS / 2 &&
			     th_count(out, ", lag 0\n") == PARTS;
			if (!ok)
				usleep(200000);
		}
		if (!ok)
			th_sh(NULL, 0, "tail -30 '%s' >&2", d[0].log);
		ck_assert_msg(ok, "%s", out);
	}
	for (int k = 0; k < KEYS; k++) {
		char key[16], want[64];
		int kl = snprintf(key, sizeof key, "k%d", k), mine[PARTS], other;
		long lag[PARTS];
		ck_assert_int_eq(view(&d[0], mine, lag), 0);
		other = mine[tidei_partition(key, (size_t)kl, PARTS)] ? 1 : 0; /* not the owner */
		ck_assert_int_eq(th_sh(out, sizeof out, "'%s' query count %s --data '%s'", TIDE_BIN,
				       key, dirs[other]),
				 0);
		snprintf(want, sizeof want, "{\"key\":\"%s\",\"state\":{\"n\":%ld}}", key,
			 m.count[k]);
		ck_assert_msg(strstr(out, want) != NULL, "tide query on t%d: %s, not %s", other,
			      out, want);
	}

	/* the cluster in node 0's metrics, as Prometheus reads them */
	{
		static char mout[1 << 17];
		char path[700], addr[128] = "", *ep;
		const char *h;
		snprintf(path, sizeof path, "%s/endpoints", dirs[0]);
		ep = th_slurp(path);
		ck_assert_ptr_nonnull(ep);
		ck_assert_ptr_nonnull(h = strstr(ep, "http="));
		sscanf(h + 5, "%127s", addr);
		free(ep);
		ck_assert_int_eq(th_sh(mout, sizeof mout,
				       "curl -sS --max-time 10 'http://%s/metrics'", addr),
				 0);
		ck_assert_msg(strstr(mout, "\ntide_cluster_nodes 2\n") &&
				      strstr(mout, "\ntide_cluster_partitions 6\n") &&
				      strstr(mout, "\ntide_cluster_partitions_owned 3\n") &&
				      th_count(mout, "\ntide_cluster_partition_lag{partition=") ==
					      PARTS,
			      "%.4000s",
			      strstr(mout, "tide_cluster") ? strstr(mout, "tide_cluster") : mout);
		ck_assert_int_eq(
			th_sh(out, sizeof out,
			      "curl -sS --max-time 10 'http://%s/metrics' | promtool check "
			      "metrics 2>&1",
			      addr),
			0);
		/* over HTTP too: an event posted to node 0 is answered after the
		 * stream has it, and a key node 1 owns is asked of node 1 */
		{
			char key[16] = "", want[64];
			int i = next++, mine[PARTS];
			long lag[PARTS];
			ck_assert_int_eq(
				th_sh(out, sizeof out,
				      "curl -sS --max-time 10 -H 'Content-Type: "
				      "application/cloudevents+json' -d "
				      "'{\"specversion\":\"1.0\",\"id\":\"e%d\",\"source\":\"/c\","
				      "\"type\":\"t.a\",\"subject\":\"k%d\"}' 'http://%s/events'",
				      i, i % KEYS, addr),
				0);
			ck_assert_msg(strstr(out, "{\"ok\":true,\"seq\":") != NULL, "%s", out);
			m.acked[i] = 1;
			m.count[i % KEYS]++;
			if (i % 10 == 0)
				m.alerts[(i / 10) % KEYS]++;
			m.total++;
			ck_assert_int_eq(view(&d[0], mine, lag), 0);
			for (int k = 0; k < KEYS; k++) {
				int kl = snprintf(key, sizeof key, "k%d", k);
				if (!mine[tidei_partition(key, (size_t)kl, PARTS)] && k != i % KEYS)
					break;
			}
			snprintf(want, sizeof want, "\"key\":\"%s\",\"state\":{\"n\":%ld}", key,
				 m.count[atoi(key + 1)]);
			ck_assert_int_eq(
				th_sh(out, sizeof out,
				      "curl -sS --max-time 10 'http://%s/projections/count/%s'",
				      addr, key),
				0);
			ck_assert_msg(strstr(out, want) != NULL, "%s, not %s", out, want);
		}
	}

	/* everything stops and starts again */
	for (int i = 0; i < 2; i++)
		ck_assert_int_eq(th_daemon_stop(&d[i]), 0);
	ck_assert_int_eq(tn_cluster_restart(&nats), 0);
	{
		/* the stream has a leader again before the nodes come */
		char leader[64];
		int64_t deadline = th_ms() + 60000;
		while (tn_stream_leader(&nats, "TIDE", leader, sizeof leader) != 0 &&
		       th_ms() < deadline)
			usleep(200000);
	}
	for (int i = 0; i < 2; i++)
		start_node(&d[i], dirs[i], i, scriptfile);
	ck_assert_msg(wait_shared(alive, 2, 60000),
		      "the partitions were not shared after a restart");
	for (int b = 0; b < 5; b++, next += 100) {
		int again = 0;
		while (publish(&d[b % 2], &m, next, next + 99) < 100 && again++ < 50)
			usleep(200000);
	}
	ck_assert(wait_shared(alive, 2, 30000));
	check_owners(alive, 2, &m);
	fprintf(stderr,
		"cluster: %ld events acknowledged (100 straight to NATS) through a restart of "
		"every server and node\n",
		m.total);
	for (int i = 0; i < 2; i++) {
		ck_assert_int_eq(th_daemon_stop(&d[i]), 0);
		free((char *)dirs[i]);
	}
}
END_TEST

Suite *
cluster_suite(void)
{
	Suite *s = suite_create("cluster");
	TCase *tc = tcase_create("cluster");

	tcase_add_checked_fixture(tc, NULL, teardown);
	tcase_add_test(tc, node_killed_and_back);
	tcase_add_test(tc, nats_failover);
	tcase_add_test(tc, everything_restarts);
	tcase_set_timeout(tc, 240);
	suite_add_tcase(s, tc);
	return s;
}
