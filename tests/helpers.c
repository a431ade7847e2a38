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
	for (int i = 0; i < ndirs; i++) {
		char cmd[300];
		snprintf(cmd, sizeof cmd, "rm -rf '%s'", dirs[i]);
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
	struct timespec ts = {0, 10 * 1000000};

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
