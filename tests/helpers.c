/*
 * helpers.c - test plumbing; see helpers.h.
 */
#define _GNU_SOURCE
#include "helpers.h"

#include <errno.h>
#include <nanomsg/nn.h>
#include <nanomsg/reqrep.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAXDIRS 32
static char dirs[MAXDIRS][256];
static int ndirs;

const char *
th_tmpdir(void)
{
	const char *base = getenv("TMPDIR");
	char *d;

	ck_assert_int_lt(ndirs, MAXDIRS);
	d = dirs[ndirs];
	snprintf(d, 256, "%.200s/tide-test-XXXXXX", base && *base ? base : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(d));
	ndirs++;
	return d;
}

void
th_cleanup(void)
{
	if (getenv("TIDE_TEST_KEEP") != NULL) { /* for a post-mortem */
		for (int i = 0; i < ndirs; i++)
			fprintf(stderr, "kept %s\n", dirs[i]);
		ndirs = 0;
		return;
	}
	for (int i = 0; i < ndirs; i++) {
		char cmd[300];
		snprintf(cmd, sizeof cmd, "rm -rf '%.256s'", dirs[i]);
		if (system(cmd) != 0)
			fprintf(stderr, "cannot remove %s\n", dirs[i]);
	}
	ndirs = 0;
}

const char *
th_write(const char *dir, const char *name, const char *content)
{
	static char path[4][600];
	static int slot;
	char *p = path[slot++ & 3];
	FILE *f;

	snprintf(p, 600, "%s/%s", dir, name);
	f = fopen(p, "w");
	ck_assert_ptr_nonnull(f);
	fputs(content, f);
	fclose(f);
	return p;
}

const char *
th_src(const char *rel)
{
	static char path[4][600];
	static int slot;
	char *p = path[slot++ & 3];

	snprintf(p, 600, "%s/%s", TIDE_SRCDIR, rel);
	return p;
}

const char *
th_testdata(const char *rel)
{
	static char path[4][800];
	static int slot;
	const char *base = getenv("TIDE_TESTDATA");
	char *p = path[slot++ & 3];
	struct stat sb;

	if (base == NULL || *base == '\0')
		base = TIDE_SRCDIR "/../shared/testdata";
	snprintf(p, 800, "%s/%s", base, rel);
	return stat(p, &sb) == 0 ? p : NULL;
}

int64_t
th_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
th_pause(void)
{
	struct timespec ts = { 0, 10 * 1000000 };

	nanosleep(&ts, NULL);
}

int
th_sh(char *out, size_t outlen, const char *fmt, ...)
{
	char cmd[8192];
	va_list ap;
	FILE *p;
	size_t n = 0;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof cmd, fmt, ap);
	va_end(ap);
	p = popen(cmd, "r");
	if (p == NULL)
		return -1;
	if (out != NULL && outlen > 0) {
		size_t got;
		while (n < outlen - 1 && (got = fread(out + n, 1, outlen - 1 - n, p)) > 0)
			n += got;
		out[n] = '\0';
	}
	{
		char sink[4096];
		while (fread(sink, 1, sizeof sink, p) > 0)
			;
	}
	st = pclose(p);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int
read_endpoints(th_daemon *d)
{
	char path[600], line[800];
	FILE *f;
	int got = 0;

	snprintf(path, sizeof path, "%s/endpoints", d->dir);
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	while (fgets(line, sizeof line, f)) {
		line[strcspn(line, "\n")] = '\0';
		if (strncmp(line, "rep=", 4) == 0)
			snprintf(d->rep, sizeof d->rep, "%.690s", line + 4), got++;
		else if (strncmp(line, "pull=", 5) == 0)
			snprintf(d->pull, sizeof d->pull, "%.690s", line + 5), got++;
		else if (strncmp(line, "pub=", 4) == 0)
			snprintf(d->pub, sizeof d->pub, "%.690s", line + 4), got++;
		else if (strncmp(line, "pid=", 4) == 0 && atol(line + 4) == (long)d->pid)
			got++;
	}
	fclose(f);
	return got == 4 ? 0 : -1;
}

int
th_daemon_start(th_daemon *d, const char *dir, const char *extra)
{
	char cmd[4096];
	int64_t deadline = th_ms() + 10000;
	char path[600];

	memset(d, 0, sizeof *d);
	snprintf(d->dir, sizeof d->dir, "%s", dir);
	snprintf(d->log, sizeof d->log, "%s.log", dir);
	snprintf(path, sizeof path, "%s/endpoints", dir);
	unlink(path);
	snprintf(cmd, sizeof cmd, "exec '%s' run --data '%s' %s 2>>'%s' >>'%s'", TIDE_BIN, dir,
		 extra ? extra : "", d->log, d->log);
	d->pid = fork();
	if (d->pid == 0) {
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	if (d->pid < 0)
		return -1;
	while (th_ms() < deadline) {
		int st;
		if (waitpid(d->pid, &st, WNOHANG) == d->pid) {
			d->pid = 0;
			return -1;
		}
		if (read_endpoints(d) == 0)
			return 0;
		th_pause();
	}
	th_daemon_kill(d);
	return -1;
}

int
th_daemon_stop(th_daemon *d)
{
	int64_t deadline = th_ms() + 20000;
	int st;

	if (d->pid <= 0)
		return -1;
	kill(d->pid, SIGTERM);
	while (th_ms() < deadline) {
		pid_t r = waitpid(d->pid, &st, WNOHANG);
		if (r == d->pid) {
			d->pid = 0;
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		}
		th_pause();
	}
	th_daemon_kill(d);
	return -1;
}

void
th_daemon_kill(th_daemon *d)
{
	if (d->pid > 0) {
		kill(d->pid, SIGKILL);
		waitpid(d->pid, NULL, 0);
	}
	d->pid = 0;
}

int
th_req(const char *url, const char *msg, char *reply, size_t replylen, int ms)
{
	int s = nn_socket(AF_SP, NN_REQ);
	char *buf = NULL;
	int n;

	if (s < 0)
		return -1;
	nn_setsockopt(s, NN_SOL_SOCKET, NN_SNDTIMEO, &ms, sizeof ms);
	nn_setsockopt(s, NN_SOL_SOCKET, NN_RCVTIMEO, &ms, sizeof ms);
	if (nn_connect(s, url) < 0 || nn_send(s, msg, strlen(msg), 0) < 0) {
		nn_close(s);
		return -1;
	}
	n = nn_recv(s, &buf, NN_MSG, 0);
	if (n >= 0) {
		size_t c = (size_t)n < replylen - 1 ? (size_t)n : replylen - 1;
		memcpy(reply, buf, c);
		reply[c] = '\0';
		nn_freemsg(buf);
	}
	nn_close(s);
	return n;
}

long
th_log_count(const char *dir, const char *args)
{
	char out[64];

	if (th_sh(out, sizeof out, "'%s' log --data '%s' %s | wc -l", TIDE_BIN, dir, args) != 0)
		return -1;
	return atol(out);
}

long
th_wait_log(const char *dir, const char *args, long n, int ms)
{
	int64_t deadline = th_ms() + ms;
	long got = -1;

	while (th_ms() < deadline) {
		got = th_log_count(dir, args);
		if (got >= n)
			break;
		th_pause();
	}
	return got;
}

long
th_checkpoint(const char *dir, const char *name)
{
	char out[8192], key[300];
	const char *p;

	if (th_sh(out, sizeof out, "'%s' stat --json --data '%s'", TIDE_BIN, dir) != 0)
		return -1;
	snprintf(key, sizeof key, "\"name\":\"%s\",\"checkpoint\":", name);
	p = strstr(out, key);
	return p ? atol(p + strlen(key)) : -1;
}

const tide_consumer_opts th_from_beginning = { TIDE_FROM_BEGINNING, -1, -1, -1, -1 };

/* ------------------------------------------------------------------------
 * Added for the engine and command-line suites.
 * ------------------------------------------------------------------------ */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>

#include "tide.h"

/* fork() a shell running @p cmd; the child dies with its parent. */
static pid_t
spawn_sh(const char *cmd)
{
	pid_t parent = getpid(), pid = fork();

	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127); /* the parent is already gone */
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	return pid;
}

int
th_daemon_spawn(th_daemon *d, const char *dir, const char *fmt, ...)
{
	char args[4096], cmd[6144], path[600];
	int64_t deadline = th_ms() + 10000;
	va_list ap;

	memset(d, 0, sizeof *d);
	va_start(ap, fmt);
	vsnprintf(args, sizeof args, fmt, ap);
	va_end(ap);
	snprintf(d->dir, sizeof d->dir, "%s", dir);
	snprintf(d->log, sizeof d->log, "%s.log", dir);
	snprintf(path, sizeof path, "%s/endpoints", dir);
	unlink(path);
	snprintf(cmd, sizeof cmd, "exec '%s' run %s 2>>'%s' >>'%s'", TIDE_BIN, args, d->log,
		 d->log);
	if ((d->pid = spawn_sh(cmd)) < 0)
		return -1;
	while (th_ms() < deadline) {
		int st;
		if (waitpid(d->pid, &st, WNOHANG) == d->pid) {
			d->pid = 0;
			return -1;
		}
		if (read_endpoints(d) == 0)
			return 0;
		th_pause();
	}
	th_daemon_kill(d);
	return -1;
}

int
th_daemon_wait(th_daemon *d, int ms)
{
	int st = th_bg_wait(d->pid, ms);

	if (st >= 0)
		d->pid = 0;
	return st;
}

pid_t
th_bg(const char *out, const char *fmt, ...)
{
	char args[4096], cmd[5120];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(args, sizeof args, fmt, ap);
	va_end(ap);
	snprintf(cmd, sizeof cmd, "exec %s >'%s' 2>&1", args, out);
	return spawn_sh(cmd);
}

int
th_bg_wait(pid_t pid, int ms)
{
	int64_t deadline = th_ms() + ms;
	int st;

	if (pid <= 0)
		return -1;
	do {
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid)
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		if (r < 0)
			return -1;
		th_pause();
	} while (th_ms() < deadline);
	return -1;
}

char *
th_slurp(const char *path)
{
	return th_slurp_n(path, NULL);
}

char *
th_slurp_n(const char *path, size_t *n)
{
	FILE *f = fopen(path, "r");
	char *s = NULL;
	size_t len = 0, cap = 0, got;

	if (f == NULL)
		return NULL;
	do {
		if (cap - len < 4096) {
			char *p = realloc(s, cap = cap * 2 + 8192);
			if (p == NULL) {
				free(s);
				fclose(f);
				return NULL;
			}
			s = p;
		}
		got = fread(s + len, 1, cap - len - 1, f);
		len += got;
	} while (got > 0);
	s[len] = '\0';
	fclose(f);
	if (n != NULL)
		*n = len;
	return s;
}

int
th_wait_file(const char *path, const char *needle, int ms)
{
	int64_t deadline = th_ms() + ms;

	do {
		char *s = th_slurp(path);
		int found = s != NULL && strstr(s, needle) != NULL;
		free(s);
		if (found)
			return 1;
		th_pause();
	} while (th_ms() < deadline);
	return 0;
}

long
th_count(const char *s, const char *needle)
{
	long n = 0;
	size_t len = strlen(needle);

	while (len > 0 && (s = strstr(s, needle)) != NULL) {
		n++;
		s += len;
	}
	return n;
}

int
th_free_port(void)
{
	struct sockaddr_in a;
	socklen_t alen = sizeof a;
	int s = socket(AF_INET, SOCK_STREAM, 0), port = -1;

	if (s < 0)
		return -1;
	memset(&a, 0, sizeof a);
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(s, (struct sockaddr *)&a, sizeof a) == 0 &&
	    getsockname(s, (struct sockaddr *)&a, &alen) == 0)
		port = ntohs(a.sin_port);
	close(s);
	return port;
}

size_t
th_req_many(const char *url, char *const *msgs, size_t n, char **replies, int window, int ms)
{
	int64_t deadline = th_ms() + ms;
	int socks[64];
	long busy[64]; /* index of the message in flight, or -1 */
	size_t next = 0, got = 0, inflight = 0;
	int resend = 3600 * 1000, big = -1;

	if (window > 64)
		window = 64;
	for (size_t k = 0; k < n; k++)
		replies[k] = NULL;
	for (int i = 0; i < window; i++) {
		socks[i] = nn_socket(AF_SP, NN_REQ);
		busy[i] = -1;
		if (socks[i] < 0)
			return 0;
		/* A resent request would come back as a duplicate; never resend. */
		nn_setsockopt(socks[i], NN_REQ, NN_REQ_RESEND_IVL, &resend, sizeof resend);
		nn_setsockopt(socks[i], NN_SOL_SOCKET, NN_RCVMAXSIZE, &big, sizeof big);
		nn_setsockopt(socks[i], NN_SOL_SOCKET, NN_SNDTIMEO, &ms, sizeof ms);
		if (nn_connect(socks[i], url) < 0)
			return 0;
	}
	while ((next < n || inflight > 0) && th_ms() < deadline) {
		struct nn_pollfd pfd[64];
		int np = 0, map[64];

		for (int i = 0; i < window && next < n; i++)
			if (busy[i] < 0) {
				if (nn_send(socks[i], msgs[next], strlen(msgs[next]), 0) < 0)
					goto out;
				busy[i] = (long)next++;
				inflight++;
			}
		for (int i = 0; i < window; i++)
			if (busy[i] >= 0) {
				pfd[np].fd = socks[i];
				pfd[np].events = NN_POLLIN;
				pfd[np].revents = 0;
				map[np++] = i;
			}
		if (nn_poll(pfd, np, 100) < 0 && nn_errno() != EINTR)
			goto out;
		for (int j = 0; j < np; j++) {
			char *buf = NULL;
			int i = map[j], len;
			if (!(pfd[j].revents & NN_POLLIN))
				continue;
			len = nn_recv(socks[i], &buf, NN_MSG, NN_DONTWAIT);
			if (len < 0)
				continue;
			replies[busy[i]] = malloc((size_t)len + 1);
			if (replies[busy[i]] != NULL) {
				memcpy(replies[busy[i]], buf, (size_t)len);
				replies[busy[i]][len] = '\0';
				got++;
			}
			nn_freemsg(buf);
			busy[i] = -1;
			inflight--;
		}
	}
out:
	for (int i = 0; i < window; i++)
		nn_close(socks[i]);
	return got;
}

static char *
attr_dup(const tide_event *ev, const char *name)
{
	const char *s = tide_event_attr(ev, name, NULL);

	return s ? strdup(s) : NULL;
}

long
th_log_read(const char *dir, th_rec **out)
{
	tide_log *log;
	tide_cursor *cur;
	tide_filter f;
	const tide_event *ev;
	th_rec *v = NULL;
	long n = 0, cap = 0;

	*out = NULL;
	memset(&f, 0, sizeof f);
	if (tide_log_open(&log, dir) != TIDE_OK)
		return -1;
	if (tide_cursor_open(log, &f, &cur) != TIDE_OK) {
		tide_log_close(log);
		return -1;
	}
	while (tide_cursor_next(cur, &ev) == TIDE_OK) {
		const char *json;
		size_t len;
		th_rec *r;
		if (n == cap) {
			th_rec *p = realloc(v, (size_t)(cap = cap * 2 + 1024) * sizeof *v);
			ck_assert_ptr_nonnull(p);
			v = p;
		}
		r = &v[n++];
		r->seq = tide_event_seq(ev);
		r->version = tide_event_version(ev);
		r->id = attr_dup(ev, "id");
		r->source = attr_dup(ev, "source");
		r->type = attr_dup(ev, "type");
		r->subject = attr_dup(ev, "subject");
		r->causationid = attr_dup(ev, "causationid");
		r->correlationid = attr_dup(ev, "correlationid");
		r->json = tide_event_json(ev, &json, &len) == TIDE_OK ? strndup(json, len) : NULL;
	}
	tide_cursor_close(cur);
	tide_log_close(log);
	*out = v;
	return n;
}

void
th_recs_free(th_rec *v, long n)
{
	for (long k = 0; k < n; k++) {
		free(v[k].id);
		free(v[k].source);
		free(v[k].type);
		free(v[k].subject);
		free(v[k].causationid);
		free(v[k].correlationid);
		free(v[k].json);
	}
	free(v);
}

typedef struct cp_find {
	const char *name;
	uint64_t seq;
} cp_find;

static void
cp_cb(void *ud, const char *name, uint64_t seq)
{
	cp_find *c = ud;

	if (c->name != NULL && strcmp(name, c->name) == 0)
		c->seq = seq;
}

int
th_log_state(const char *dir, const char *name, uint64_t *events, uint64_t *last,
	     uint64_t *checkpoint)
{
	tide_log *log;
	tide_log_stat st;
	cp_find c = { name, 0 };
	int rc;

	if (tide_log_open(&log, dir) != TIDE_OK)
		return -1;
	rc = tide_log_stat_get(log, &st);
	if (rc == TIDE_OK && name != NULL)
		rc = tide_log_consumers(log, cp_cb, &c);
	tide_log_close(log);
	if (rc != TIDE_OK)
		return -1;
	if (events)
		*events = st.events;
	if (last)
		*last = st.last_seq;
	if (checkpoint)
		*checkpoint = c.seq;
	return 0;
}

int
th_wait_settled(const char *dir, const char *name, uint64_t events, int ms)
{
	int64_t deadline = th_ms() + ms;

	do {
		uint64_t ev, last, cp;
		if (th_log_state(dir, name, &ev, &last, &cp) == 0 && ev >= events &&
		    (name == NULL || cp == last))
			return 1;
		th_pause();
	} while (th_ms() < deadline);
	return 0;
}

/* ------------------------------------------------------------------------
 * Added for the crash suite.
 * ------------------------------------------------------------------------ */

pid_t
th_bg_io(const char *in, const char *out, const char *err, const char *fmt, ...)
{
	char args[4096], cmd[6144];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(args, sizeof args, fmt, ap);
	va_end(ap);
	snprintf(cmd, sizeof cmd, "exec %s <'%s' >'%s' 2>'%s'", args, in, out, err);
	return spawn_sh(cmd);
}

uint64_t
th_rand(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

uint64_t
th_rand_range(uint64_t *state, uint64_t lo, uint64_t hi)
{
	/* The modulo bias is irrelevant for the small ranges tests draw from. */
	return hi <= lo ? lo : lo + th_rand(state) % (hi - lo + 1);
}

long long
th_env_ll(const char *name, long long dflt)
{
	const char *s = getenv(name);
	char *end;
	long long v;

	if (s == NULL || *s == '\0')
		return dflt;
	errno = 0;
	v = strtoll(s, &end, 0);
	return errno != 0 || *end != '\0' ? dflt : v;
}

int
th_ack_parse(const char *line, uint64_t *seq)
{
	unsigned long long v;
	char tail[8];
	size_t len = strlen(line);

	*seq = 0;
	if (sscanf(line, "{\"ok\":true,\"seq\":%llu%7s", &v, tail) == 2 && strcmp(tail, "}") == 0) {
		*seq = v;
		return TH_ACK_STORED;
	}
	if (sscanf(line, "{\"ok\":true,\"duplicate\":true,\"seq\":%llu%7s", &v, tail) == 2 &&
	    strcmp(tail, "}") == 0) {
		*seq = v;
		return TH_ACK_DUPLICATE;
	}
	if (strncmp(line, "{\"ok\":false,\"error\":\"", 21) == 0 && len > 21 &&
	    line[len - 1] == '}')
		return TH_ACK_ERROR;
	return TH_ACK_BAD;
}

long
th_log_scan(const char *dir, uint64_t from, th_scan_fn *fn, void *ud)
{
	tide_log *log;
	tide_cursor *cur;
	tide_filter f;
	const tide_event *ev;
	long n = 0;
	int rc;

	memset(&f, 0, sizeof f);
	f.from = from;
	if (tide_log_open(&log, dir) != TIDE_OK)
		return -1;
	if (tide_cursor_open(log, &f, &cur) != TIDE_OK) {
		tide_log_close(log);
		return -1;
	}
	while ((rc = tide_cursor_next(cur, &ev)) == TIDE_OK) {
		n++;
		if (fn(ud, ev) != 0)
			break;
	}
	tide_cursor_close(cur);
	tide_log_close(log);
	return rc == TIDE_OK || rc == TIDE_ENOTFOUND ? n : -1;
}

const char *
th_keep(const char *path, const char *tag)
{
	static char kept[400];
	const char *base = getenv("TMPDIR");

	snprintf(kept, sizeof kept, "%.200s/tide-kept-%.40s-XXXXXX", base && *base ? base : "/tmp",
		 tag);
	if (mkdtemp(kept) == NULL)
		return NULL;
	if (th_sh(NULL, 0, "cp -a '%s' '%s/'", path, kept) != 0)
		return NULL;
	return kept;
}

void
sb_printf(sbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
		va_end(ap);
		ck_assert_int_ge(n, 0);
		if (b->p != NULL && (size_t)n < b->cap - b->len)
			break;
		b->cap = (b->cap + (size_t)n + 1) * 2;
		b->p = realloc(b->p, b->cap);
		ck_assert_ptr_nonnull(b->p);
	}
	b->len += (size_t)n;
}

char *
sb_take(sbuf *b)
{
	char *s = b->p ? b->p : strdup("");

	memset(b, 0, sizeof *b);
	return s;
}
