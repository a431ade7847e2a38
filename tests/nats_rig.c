/*
 * nats_rig.c - a real NATS JetStream cluster on loopback (nats_rig.h).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"
#include "nats_rig.h"

#define TN_DEADLINE_MS 20000
/* Ports are picked in [TN_PORT_LO, TN_PORT_HI): below Linux's ephemeral
 * range (32768 and up), so that no outgoing connection takes one between
 * the test of a port and the server's bind. */
#define TN_PORT_LO 20000
#define TN_PORT_HI 32000

/* ------------------------------------------------------------------------
 * Files and logs
 * ------------------------------------------------------------------------ */

static void
path_of(const tn_cluster *c, int i, const char *ext, char *out, size_t n)
{
	snprintf(out, n, "%s/%s%s", c->dir, c->name[i], ext);
}

/* Print the last @p lines lines of every server's log to stderr. */
static void
print_logs(const tn_cluster *c, int lines)
{
	for (int i = 0; i < c->n; i++) {
		char path[600];
		char *s, *p;
		int k = 0;

		path_of(c, i, ".log", path, sizeof path);
		s = th_slurp(path);
		fprintf(stderr, "--- %s (last %d lines) ---\n", path, lines);
		if (s == NULL) {
			fprintf(stderr, "(no log)\n");
			continue;
		}
		p = s + strlen(s);
		while (p > s && k <= lines)
			if (*--p == '\n')
				k++;
		fputs(k > lines ? p + 1 : p, stderr);
		free(s);
	}
}

static void rig_fail(const tn_cluster *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void
rig_fail(const tn_cluster *c, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "nats rig: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	print_logs(c, 40);
}

/* ------------------------------------------------------------------------
 * Ports and configs
 * ------------------------------------------------------------------------ */

/* 1 if nothing listens on (or holds) @p port of 127.0.0.1. */
static int
port_free(int port)
{
	struct sockaddr_in a = { 0 };
	int s = socket(AF_INET, SOCK_STREAM, 0), ok;

	if (s < 0)
		return 0;
	a.sin_family = AF_INET;
	a.sin_port = htons((uint16_t)port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ok = bind(s, (struct sockaddr *)&a, sizeof a) == 0;
	close(s);
	return ok;
}

/* Pick 2 * n distinct free ports at random (tests may run in parallel). */
static int
pick_ports(tn_cluster *c, uint64_t *rnd)
{
	int got[6], ng = 0;

	for (int tries = 0; ng < 2 * c->n && tries < 1000; tries++) {
		int p = (int)th_rand_range(rnd, TN_PORT_LO, TN_PORT_HI - 1), dup = 0;
		for (int k = 0; k < ng; k++)
			dup |= got[k] == p;
		if (!dup && port_free(p))
			got[ng++] = p;
	}
	if (ng < 2 * c->n)
		return -1;
	for (int i = 0; i < c->n; i++) {
		c->port[i] = got[2 * i];
		c->cport[i] = got[2 * i + 1];
	}
	return 0;
}

/* Write the config of server @p i.  The routes carry a secret of this rig,
 * so that a cluster of another test that took a port cannot join ours. */
static int
write_config(const tn_cluster *c, int i, const char *secret)
{
	char path[600];
	FILE *f;

	path_of(c, i, ".conf", path, sizeof path);
	if ((f = fopen(path, "w")) == NULL)
		return -1;
	fprintf(f,
		"server_name: \"%s\"\n"
		"listen: \"127.0.0.1:%d\"\n"
		"jetstream {\n"
		"\tstore_dir: \"%s/%s\"\n"
		"\tmax_memory_store: 64MB\n"
		"\tmax_file_store: 256MB\n"
		"}\n",
		c->name[i], c->port[i], c->dir, c->name[i]);
	if (c->n > 1) {
		fprintf(f,
			"cluster {\n"
			"\tname: \"tide\"\n"
			"\tlisten: \"127.0.0.1:%d\"\n"
			"\tauthorization { user: \"tn\", password: \"%s\", timeout: 2 }\n"
			"\troutes: [\n",
			c->cport[i], secret);
		for (int k = 0; k < c->n; k++)
			if (k != i)
				fprintf(f, "\t\t\"nats-route://tn:%s@127.0.0.1:%d\"\n", secret,
					c->cport[k]);
		fprintf(f, "\t]\n}\n");
	}
	if (c->partitions > 0)
		fprintf(f,
			"mappings = {\n"
			"\t\"tide.in.*\": \"tide.p.{{partition(%u,1)}}.{{wildcard(1)}}\"\n"
			"}\n",
			c->partitions);
	return fclose(f) == 0 ? 0 : -1;
}

/* ------------------------------------------------------------------------
 * Processes
 * ------------------------------------------------------------------------ */

/* The nats-server binary: $TIDE_NATS_SERVER, else the first on $PATH, else
 * Debian's /usr/sbin/nats-server (not on a user's $PATH). */
static const char *
server_bin(void)
{
	static char bin[600];
	const char *env = getenv("TIDE_NATS_SERVER"), *path = getenv("PATH");

	if (env != NULL && *env)
		return env;
	while (path != NULL && *path) {
		size_t len = strcspn(path, ":");
		snprintf(bin, sizeof bin, "%.*s/nats-server", (int)len, path);
		if (len > 0 && access(bin, X_OK) == 0)
			return bin;
		path += len + (path[len] == ':');
	}
	return "/usr/sbin/nats-server";
}

/* Start server @p i, its output appended to its log; it dies with the
 * test process. */
static int
spawn(tn_cluster *c, int i)
{
	char conf[600], log[600];
	const char *bin = server_bin();
	pid_t parent = getpid(), pid;

	path_of(c, i, ".conf", conf, sizeof conf);
	path_of(c, i, ".log", log, sizeof log);
	if (access(bin, X_OK) != 0) {
		fprintf(stderr, "nats rig: no nats-server at %s (apt-get install nats-server)\n",
			bin);
		return -1;
	}
	/* Only async-signal-safe calls after fork(): libnats has threads. */
	if ((pid = fork()) == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent || fd < 0)
			_exit(127);
		dup2(fd, 1);
		dup2(fd, 2);
		close(fd);
		execl(bin, "nats-server", "-c", conf, (char *)NULL);
		_exit(127);
	}
	if (pid < 0)
		return -1;
	c->pid[i] = pid;
	return 0;
}

/* 1 if server @p i has exited (then it is reaped). */
static int
exited(tn_cluster *c, int i)
{
	int st;

	if (c->pid[i] <= 0)
		return 1;
	if (waitpid(c->pid[i], &st, WNOHANG) == c->pid[i]) {
		c->pid[i] = 0;
		return 1;
	}
	return 0;
}

/* ------------------------------------------------------------------------
 * Talking to the servers
 * ------------------------------------------------------------------------ */

/* A connection to @p url, a comma-separated list of URLs. */
static natsConnection *
connect_url(const char *url, int64_t timeout, int reconnect)
{
	char copy[256], *srv[3], *save = NULL;
	natsConnection *nc = NULL;
	natsOptions *o = NULL;
	natsStatus s = natsOptions_Create(&o);
	int n = 0;

	/* natsOptions_SetURL() takes one URL; the list goes to SetServers. */
	snprintf(copy, sizeof copy, "%s", url);
	for (char *u = strtok_r(copy, ",", &save); u != NULL && n < 3;
	     u = strtok_r(NULL, ",", &save))
		srv[n++] = u;
	if (s == NATS_OK)
		s = natsOptions_SetServers(o, (const char **)srv, n);
	if (s == NATS_OK)
		s = natsOptions_SetTimeout(o, timeout);
	if (s == NATS_OK)
		s = natsOptions_SetAllowReconnect(o, reconnect);
	if (s == NATS_OK && reconnect)
		s = natsOptions_SetMaxReconnect(o, 600);
	if (s == NATS_OK && reconnect)
		s = natsOptions_SetReconnectWait(o, 100);
	if (s == NATS_OK)
		s = natsConnection_Connect(&nc, o);
	natsOptions_Destroy(o);
	return s == NATS_OK ? nc : NULL;
}

natsConnection *
tn_connect(const tn_cluster *c)
{
	return connect_url(c->urls, 2000, 1);
}

/* Send an empty request to @p subj on @p nc; 0 if the reply says no
 * error.  @p why gets what went wrong otherwise. */
static int
request_ok(natsConnection *nc, const char *subj, int64_t timeout, char *why, size_t whylen)
{
	natsMsg *m = NULL;
	natsStatus s = natsConnection_Request(&m, nc, subj, NULL, 0, timeout);
	int rc = -1;

	if (s != NATS_OK) {
		snprintf(why, whylen, "%s: %s", subj, natsStatus_GetText(s));
		return -1;
	}
	if (natsMsg_GetData(m) == NULL || strstr(natsMsg_GetData(m), "\"error\"") != NULL)
		snprintf(why, whylen, "%s: %.300s", subj,
			 natsMsg_GetData(m) ? natsMsg_GetData(m) : "(empty)");
	else
		rc = 0;
	natsMsg_Destroy(m);
	return rc;
}

/* 0 if server @p i accepts a connection and JetStream there answers. */
static int
server_ready(const tn_cluster *c, int i, char *why, size_t whylen)
{
	char url[64];
	natsConnection *nc;
	int rc;

	snprintf(url, sizeof url, "nats://127.0.0.1:%d", c->port[i]);
	if ((nc = connect_url(url, 500, 0)) == NULL) {
		snprintf(why, whylen, "%s: no connection on port %d", c->name[i], c->port[i]);
		return -1;
	}
	rc = request_ok(nc, "$JS.API.INFO", 1000, why, whylen);
	natsConnection_Destroy(nc);
	return rc;
}

/* 0 if the meta group has a leader that places streams on three servers:
 * a throwaway R3 stream is made and deleted. */
static int
cluster_ready(const tn_cluster *c, char *why, size_t whylen)
{
	natsConnection *nc = tn_connect(c);
	const char *subj[1] = { "tn.ready" };
	jsStreamConfig cfg;
	jsOptions jo;
	jsErrCode je = 0;
	jsCtx *js = NULL;
	natsStatus s;

	if (nc == NULL) {
		snprintf(why, whylen, "no connection to %s", c->urls);
		return -1;
	}
	jsOptions_Init(&jo);
	jo.Wait = 2000;
	jsStreamConfig_Init(&cfg);
	cfg.Name = "tn_ready";
	cfg.Subjects = subj;
	cfg.SubjectsLen = 1;
	cfg.Storage = js_MemoryStorage;
	cfg.Replicas = 3;
	s = natsConnection_JetStream(&js, nc, &jo);
	if (s == NATS_OK)
		s = js_AddStream(NULL, js, &cfg, NULL, &je);
	if (s == NATS_OK)
		s = js_DeleteStream(js, "tn_ready", NULL, &je);
	if (s != NATS_OK)
		snprintf(why, whylen, "R3 stream: %s (%d) %s", natsStatus_GetText(s), (int)je,
			 nats_GetLastError(NULL));
	jsCtx_Destroy(js);
	natsConnection_Destroy(nc);
	return s == NATS_OK ? 0 : -1;
}

/* ------------------------------------------------------------------------
 * The cluster
 * ------------------------------------------------------------------------ */

/* One try at starting the cluster on fresh ports: 0, -1, or 1 when a port
 * was taken under us (worth another try). */
static int
start_once(tn_cluster *c, uint64_t *rnd)
{
	int64_t deadline = th_ms() + TN_DEADLINE_MS;
	char secret[32], why[512] = "not tried";
	size_t len = 0;

	if (pick_ports(c, rnd) < 0) {
		fprintf(stderr, "nats rig: no free ports in [%d, %d)\n", TN_PORT_LO, TN_PORT_HI);
		return -1;
	}
	snprintf(secret, sizeof secret, "s%016llx", (unsigned long long)th_rand(rnd));
	c->urls[0] = '\0';
	for (int i = 0; i < c->n; i++) {
		char log[600];
		path_of(c, i, ".log", log, sizeof log);
		unlink(log);
		if (write_config(c, i, secret) < 0) {
			fprintf(stderr, "nats rig: cannot write the config of %s\n", c->name[i]);
			return -1;
		}
		len += (size_t)snprintf(c->urls + len, sizeof c->urls - len,
					"%snats://127.0.0.1:%d", i ? "," : "", c->port[i]);
	}
	for (int i = 0; i < c->n; i++)
		if (spawn(c, i) < 0) {
			tn_cluster_stop(c);
			return -1;
		}
	while (th_ms() < deadline) {
		int ready = 0;
		for (int i = 0; i < c->n; i++) {
			if (exited(c, i)) {
				char log[600], *s;
				int taken;
				path_of(c, i, ".log", log, sizeof log);
				s = th_slurp(log);
				taken = s != NULL && strstr(s, "address already in use") != NULL;
				free(s);
				if (!taken)
					rig_fail(c, "server %s exited while starting", c->name[i]);
				tn_cluster_stop(c);
				return taken ? 1 : -1;
			}
			ready += server_ready(c, i, why, sizeof why) == 0;
		}
		if (ready == c->n && (c->n == 1 || cluster_ready(c, why, sizeof why) == 0))
			return 0;
		th_pause();
	}
	rig_fail(c, "JetStream not ready after %d ms: %s", TN_DEADLINE_MS, why);
	tn_cluster_stop(c);
	return -1;
}

int
tn_cluster_start(tn_cluster *c, int n, unsigned partitions)
{
	uint64_t rnd = (uint64_t)getpid() << 32 ^ (uint64_t)th_ms();
	int rc = -1;

	memset(c, 0, sizeof *c);
	if (n != 1 && n != 3) {
		fprintf(stderr, "nats rig: %d servers (1 or 3)\n", n);
		return -1;
	}
	c->n = n;
	c->partitions = partitions;
	snprintf(c->dir, sizeof c->dir, "%s", th_tmpdir());
	for (int i = 0; i < n; i++)
		snprintf(c->name[i], sizeof c->name[i], "n%d", i);
	for (int attempt = 0; attempt < 5; attempt++)
		if ((rc = start_once(c, &rnd)) <= 0)
			break;
	if (rc > 0)
		fprintf(stderr, "nats rig: ports kept being taken\n");
	return rc == 0 ? 0 : -1;
}

void
tn_cluster_stop(tn_cluster *c)
{
	int64_t deadline = th_ms() + 5000;
	int left;

	for (int i = 0; i < c->n; i++)
		if (c->pid[i] > 0)
			kill(c->pid[i], SIGTERM);
	do {
		left = 0;
		for (int i = 0; i < c->n; i++)
			left += !exited(c, i);
		if (left > 0)
			th_pause();
	} while (left > 0 && th_ms() < deadline);
	for (int i = 0; i < c->n; i++)
		if (!exited(c, i))
			tn_server_kill(c, i);
}

void
tn_server_kill(tn_cluster *c, int i)
{
	if (i < 0 || i >= c->n || c->pid[i] <= 0)
		return;
	kill(c->pid[i], SIGKILL);
	while (waitpid(c->pid[i], NULL, 0) < 0 && errno == EINTR)
		;
	c->pid[i] = 0;
}

int
tn_server_restart(tn_cluster *c, int i)
{
	int64_t deadline = th_ms() + TN_DEADLINE_MS;
	char why[512] = "not tried";

	if (i < 0 || i >= c->n)
		return -1;
	tn_server_kill(c, i);
	if (spawn(c, i) < 0)
		return -1;
	while (th_ms() < deadline) {
		if (exited(c, i)) {
			rig_fail(c, "server %s exited while restarting", c->name[i]);
			return -1;
		}
		if (server_ready(c, i, why, sizeof why) == 0)
			return 0;
		th_pause();
	}
	rig_fail(c, "%s not serving after %d ms: %s", c->name[i], TN_DEADLINE_MS, why);
	return -1;
}

int
tn_cluster_restart(tn_cluster *c)
{
	int64_t deadline;
	char why[512] = "not tried";

	for (int i = 0; i < c->n; i++)
		if (c->pid[i] > 0)
			kill(c->pid[i], SIGTERM);
	deadline = th_ms() + 5000;
	for (int i = 0; i < c->n; i++) {
		while (!exited(c, i) && th_ms() < deadline)
			th_pause();
		tn_server_kill(c, i); /* SIGKILL if SIGTERM was not enough */
	}
	for (int i = 0; i < c->n; i++)
		if (spawn(c, i) < 0)
			return -1;
	deadline = th_ms() + 3 * TN_DEADLINE_MS; /* three at once elect their leaders again */
	while (th_ms() < deadline) {
		int ready = 0;
		for (int i = 0; i < c->n; i++) {
			if (exited(c, i)) {
				rig_fail(c, "server %s exited while the cluster restarted",
					 c->name[i]);
				return -1;
			}
			ready += server_ready(c, i, why, sizeof why) == 0;
		}
		if (ready == c->n && (c->n == 1 || cluster_ready(c, why, sizeof why) == 0))
			return 0;
		th_pause();
	}
	rig_fail(c, "the cluster is not serving %d ms after its restart: %s", 3 * TN_DEADLINE_MS,
		 why);
	return -1;
}

int
tn_server_index(const tn_cluster *c, const char *name)
{
	for (int i = 0; i < c->n; i++)
		if (strcmp(c->name[i], name) == 0)
			return i;
	return -1;
}

/* The leader of @p stream as @p nc sees it (short timeout: it is polled). */
static int
leader_of(natsConnection *nc, const char *stream, char *name, size_t n)
{
	jsStreamInfo *si = NULL;
	jsOptions jo;
	jsCtx *js = NULL;
	natsStatus s;
	int rc = -1;

	jsOptions_Init(&jo);
	jo.Wait = 1000;
	s = natsConnection_JetStream(&js, nc, &jo);
	if (s == NATS_OK)
		s = js_GetStreamInfo(&si, js, stream, NULL, NULL);
	if (s == NATS_OK && si->Cluster != NULL && si->Cluster->Leader != NULL &&
	    si->Cluster->Leader[0] != '\0') {
		snprintf(name, n, "%s", si->Cluster->Leader);
		rc = 0;
	}
	jsStreamInfo_Destroy(si);
	jsCtx_Destroy(js);
	return rc;
}

int
tn_stream_leader(tn_cluster *c, const char *stream, char *name, size_t n)
{
	natsConnection *nc = tn_connect(c);
	int rc;

	if (nc == NULL)
		return -1;
	rc = leader_of(nc, stream, name, n);
	natsConnection_Destroy(nc);
	return rc;
}

int
tn_stream_step_down(tn_cluster *c, const char *stream)
{
	int64_t deadline = th_ms() + TN_DEADLINE_MS;
	char old[64], now[64] = "", subj[256], why[512];
	natsConnection *nc = tn_connect(c);
	int rc = -1;

	if (nc == NULL) {
		fprintf(stderr, "nats rig: no connection to %s\n", c->urls);
		return -1;
	}
	if (leader_of(nc, stream, old, sizeof old) < 0) {
		fprintf(stderr, "nats rig: stream %s has no leader\n", stream);
		goto out;
	}
	snprintf(subj, sizeof subj, "$JS.API.STREAM.LEADER.STEPDOWN.%s", stream);
	/* asked again every 2 s: a leader whose followers are not current
	 * yet (one just restarted) stays where it is */
	while (th_ms() < deadline) {
		int64_t again = th_ms() + 2000;
		if (request_ok(nc, subj, 5000, why, sizeof why) < 0)
			fprintf(stderr, "nats rig: step down: %s (asked again)\n", why);
		while (th_ms() < again && th_ms() < deadline) {
			if (leader_of(nc, stream, now, sizeof now) == 0 && now[0] != '\0' &&
			    strcmp(now, old) != 0) {
				rc = 0;
				goto out;
			}
			th_pause();
		}
	}
	fprintf(stderr, "nats rig: stream %s still led by %s after %d ms (now \"%s\")\n", stream,
		old, TN_DEADLINE_MS, now);
out:
	natsConnection_Destroy(nc);
	return rc;
}
