/*
 * test_cli.c - the `tide` command's contract: help on every subcommand,
 * exit codes (0 ok, 1 failure, 2 usage, 3 engine unreachable), errors on
 * stderr, machine-readable stdout.  Client commands run against a real
 * `tide run` started for the test.
 */
#define _GNU_SOURCE
#include <check.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"

static const char *const subcommands[] = { "run", "publish", "tail", "log", "stat" };
#define NSUB (sizeof subcommands / sizeof *subcommands)

static const char *
subdir(const char *dir, const char *name)
{
	static char path[4][600];
	static int slot;
	char *p = path[slot++ & 3];

	snprintf(p, 600, "%s/%s", dir, name);
	return p;
}

/* Split @p s into lines in place; returns how many (a final newline does
 * not start another). */
static size_t
lines_of(char *s, char **v, size_t max)
{
	size_t n = 0;

	while (*s != '\0' && n < max) {
		char *nl = strchr(s, '\n');
		v[n++] = s;
		if (nl == NULL)
			break;
		*nl = '\0';
		s = nl + 1;
	}
	return n;
}

/* A numeric attribute of one line of `tide log` output, or -1. */
static long long
num_attr(const char *line, const char *name)
{
	char key[64];
	const char *p;

	snprintf(key, sizeof key, "\"%s\":", name);
	p = strstr(line, key);
	return p ? atoll(p + strlen(key)) : -1;
}

/* A string attribute (copied into @p out), or "" if absent. */
static const char *
str_attr(const char *line, const char *name, char *out, size_t len)
{
	char key[64];
	const char *p, *end;

	snprintf(key, sizeof key, "\"%s\":\"", name);
	out[0] = '\0';
	if ((p = strstr(line, key)) != NULL && (end = strchr(p + strlen(key), '"')) != NULL)
		snprintf(out, len, "%.*s", (int)(end - p - strlen(key)), p + strlen(key));
	return out;
}

static int
dir_is_empty(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;
	int n = 0;

	ck_assert_ptr_nonnull(d);
	while ((e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			n++;
	closedir(d);
	return n == 0;
}

START_TEST(help_everywhere)
{
	static const char *const cmds[] = { "run", "publish", "tail", "log", "stat" };
	char out[8192];

	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' --help", TIDE_BIN), 0);
	ck_assert_ptr_nonnull(strstr(out, "usage: tide"));
	for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++) {
		ck_assert_int_eq(th_sh(out, sizeof out, "'%s' %s --help", TIDE_BIN, cmds[i]), 0);
		ck_assert_msg(strstr(out, "usage: tide ") != NULL, "%s --help", cmds[i]);
	}
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' nonsense 2>&1", TIDE_BIN), 2);
	ck_assert_ptr_nonnull(strstr(out, "'nonsense' is not a command"));
}
END_TEST

/* -h, `tide help CMD`, usage errors (exit 2, usage on stderr, nothing on
 * stdout), and no arguments at all. */
START_TEST(usage_errors_exit_2)
{
	char out[8192], want[128];

	for (size_t i = 0; i < NSUB; i++) {
		snprintf(want, sizeof want, "usage: tide %s", subcommands[i]);
		ck_assert_int_eq(th_sh(out, sizeof out, "'%s' %s -h", TIDE_BIN, subcommands[i]), 0);
		ck_assert_msg(strstr(out, want) != NULL, "%s -h: %s", subcommands[i], out);
		ck_assert_int_eq(th_sh(out, sizeof out, "'%s' help %s", TIDE_BIN, subcommands[i]),
				 0);
		ck_assert_msg(strstr(out, want) != NULL, "help %s: %s", subcommands[i], out);

		ck_assert_int_eq(th_sh(out, sizeof out, "'%s' %s --no-such-option 2>/dev/null",
				       TIDE_BIN, subcommands[i]),
				 2);
		ck_assert_msg(out[0] == '\0', "%s: usage error wrote to stdout: %s", subcommands[i],
			      out);
		ck_assert_int_eq(th_sh(out, sizeof out, "'%s' %s --no-such-option 2>&1", TIDE_BIN,
				       subcommands[i]),
				 2);
		/* a wrong flag: one line, and where to look, not the whole usage */
		snprintf(want, sizeof want, "tide %s: unrecognized option '--no-such-option'\n",
			 subcommands[i]);
		ck_assert_msg(strstr(out, want) == out, "%s: %s", subcommands[i], out);
		snprintf(want, sizeof want, "try 'tide %s --help' for the options\n",
			 subcommands[i]);
		ck_assert_msg(strstr(out, want) != NULL, "%s: %s", subcommands[i], out);
		ck_assert_msg(strstr(out, "usage:") == NULL, "%s: %s", subcommands[i], out);
		ck_assert_int_eq(th_count(out, "\n"), 2);
		ck_assert_int_eq(th_sh(out, sizeof out, "'%s' %s stray-argument 2>&1", TIDE_BIN,
				       subcommands[i]),
				 2);
		ck_assert_msg(strstr(out, "stray-argument") != NULL, "%s: %s", subcommands[i], out);
	}
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' 2>&1", TIDE_BIN), 2);
	ck_assert_ptr_nonnull(strstr(out, "usage: tide"));
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' version", TIDE_BIN), 0);
	ck_assert_int_eq(strncmp(out, "tide ", 5), 0);
	/* option values are checked */
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' log --from x 2>&1", TIDE_BIN), 2);
	ck_assert_ptr_nonnull(strstr(out, "'x' is not a number"));
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' log --limit -3 2>&1", TIDE_BIN), 2);
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' publish --batch 0 2>&1", TIDE_BIN), 2);
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' publish --subject s 2>&1", TIDE_BIN), 2);
	ck_assert_ptr_nonnull(strstr(out, "--type"));
	ck_assert_int_eq(
		th_sh(out, sizeof out, "'%s' publish --type t --ext novalue 2>&1", TIDE_BIN), 2);
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' run --set nokey 2>&1", TIDE_BIN), 2);
}
END_TEST

/* One event from flags, as stored. */
START_TEST(publish_from_flags)
{
	const char *dir = th_tmpdir(), *data = subdir(dir, "data");
	char out[8192], err[4096], buf[128];
	char *lines[8];
	th_daemon d;
	int y, mo, da, h, mi, s, us;
	char z;

	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s'", data), 0);
	ck_assert_int_eq(th_sh(err, sizeof err,
			       "'%s' publish --data '%s' --type order.placed --subject o-1 "
			       "--payload '{\"total\":12.5,\"items\":[1,2]}' --ext region=eu "
			       "-e tenant=acme --id my-1 --time now 2>&1",
			       TIDE_BIN, data),
			 0);
	ck_assert_msg(strstr(err, "1 stored, 0 duplicates, 0 rejected") != NULL, "%s", err);
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' log --data '%s'", TIDE_BIN, data), 0);
	ck_assert_uint_eq(lines_of(out, lines, 8), 1);
	ck_assert_str_eq(str_attr(lines[0], "id", buf, sizeof buf), "my-1");
	ck_assert_str_eq(str_attr(lines[0], "type", buf, sizeof buf), "order.placed");
	ck_assert_str_eq(str_attr(lines[0], "source", buf, sizeof buf), "tide-cli");
	ck_assert_str_eq(str_attr(lines[0], "subject", buf, sizeof buf), "o-1");
	ck_assert_str_eq(str_attr(lines[0], "region", buf, sizeof buf), "eu");
	ck_assert_str_eq(str_attr(lines[0], "tenant", buf, sizeof buf), "acme");
	ck_assert_str_eq(str_attr(lines[0], "specversion", buf, sizeof buf), "1.0");
	ck_assert_ptr_nonnull(strstr(lines[0], "\"data\":{\"total\":12.5,\"items\":[1,2]}"));
	ck_assert_int_eq(num_attr(lines[0], "seq"), 1);
	ck_assert_int_eq(num_attr(lines[0], "version"), 1);
	/* --time now: RFC 3339, UTC, microseconds */
	str_attr(lines[0], "time", buf, sizeof buf);
	ck_assert_msg(sscanf(buf, "%4d-%2d-%2dT%2d:%2d:%2d.%6d%c", &y, &mo, &da, &h, &mi, &s, &us,
			     &z) == 8 &&
			      z == 'Z' && y >= 2024 && mo >= 1 && mo <= 12 && strlen(buf) == 27,
		      "time: %s", buf);

	/* Again with the same id: a duplicate, acknowledged, exit 0; --acks. */
	ck_assert_int_eq(th_sh(out, sizeof out,
			       "'%s' publish --data '%s' --type order.placed --id my-1 --acks -q",
			       TIDE_BIN, data),
			 0);
	ck_assert_str_eq(out, "{\"ok\":true,\"duplicate\":true,\"seq\":1}\n");
	/* a random id each time without --id; an explicit --source */
	ck_assert_int_eq(th_sh(out, sizeof out,
			       "'%s' publish --data '%s' --type t --source /a --acks -q && "
			       "'%s' publish --data '%s' --type t --source /a --acks -q",
			       TIDE_BIN, data, TIDE_BIN, data),
			 0);
	ck_assert_str_eq(out, "{\"ok\":true,\"seq\":2}\n{\"ok\":true,\"seq\":3}\n");
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' log --data '%s' --from 2", TIDE_BIN, data),
			 0);
	ck_assert_uint_eq(lines_of(out, lines, 8), 2);
	ck_assert_str_eq(str_attr(lines[0], "source", buf, sizeof buf), "/a");
	{
		char id2[64];
		str_attr(lines[0], "id", buf, sizeof buf);
		str_attr(lines[1], "id", id2, sizeof id2);
		ck_assert_uint_eq(strlen(buf), 36);
		ck_assert_str_ne(buf, id2);
		/* UUIDv7: version 7, the RFC variant, and the later one sorts
		 * after the earlier (their first 48 bits are the time in ms) */
		ck_assert_msg(buf[14] == '7' && id2[14] == '7', "%s %s", buf, id2);
		ck_assert_msg(strchr("89ab", buf[19]) != NULL, "%s", buf);
		ck_assert_msg(strcmp(buf, id2) < 0, "%s then %s", buf, id2);
	}

	/* The engine judges --payload: bad JSON is rejected, exit 1. */
	ck_assert_int_eq(th_sh(err, sizeof err,
			       "'%s' publish --data '%s' --type t --payload '{oops' 2>&1", TIDE_BIN,
			       data),
			 1);
	ck_assert_msg(strstr(err, "not valid JSON") != NULL, "%s", err);
	ck_assert_int_eq(th_log_count(data, ""), 3);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
}
END_TEST

/* NDJSON on stdin: each rejected line is reported as "line N: <error>"
 * (blank lines count), the rest is stored, exit 1. */
START_TEST(publish_reports_bad_lines)
{
	const char *dir = th_tmpdir(), *data = subdir(dir, "data");
	char err[8192], out[8192], buf[64], *lines[16];
	const char *in;
	th_daemon d;

	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s'", data), 0);
	in = th_write(dir, "in.ndjson",
		      "{\"specversion\":\"1.0\",\"id\":\"q1\",\"source\":\"/c\",\"type\":\"t\"}\n"
		      "{\"specversion\":\"1.0\",\"id\":\"q2\",\"type\":\"t\"}\n"
		      "\n"
		      "{\"specversion\":\"1.0\",\"id\":\"q4\",\"source\":\"/c\",\"type\":\"t\"}\n"
		      "42\n"
		      "{\"specversion\":\"1.0\",\"id\":\"q6\",\"source\":\"/c\",\"type\":\"t\","
		      "\"data\":{\"x\":[1,2,{\"deep\":true}]}}\n"
		      "{\"specversion\":\"1.0\",\"id\":\"q7\",\"source\":\"/c\",\"type\":7}\n");
	ck_assert_int_eq(
		th_sh(err, sizeof err, "'%s' publish --data '%s' < '%s' 2>&1", TIDE_BIN, data, in),
		1);
	ck_assert_msg(strstr(err, "line 2: missing required attribute 'source'") != NULL, "%s",
		      err);
	ck_assert_msg(strstr(err, "line 5: event must be a JSON object") != NULL, "%s", err);
	ck_assert_msg(strstr(err, "line 7: ") != NULL && strstr(strstr(err, "line 7: "), "type"),
		      "%s", err);
	ck_assert_msg(strstr(err, "3 stored, 0 duplicates, 3 rejected") != NULL, "%s", err);
	ck_assert_int_eq(th_count(err, "line "), 3);
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' log --data '%s'", TIDE_BIN, data), 0);
	ck_assert_uint_eq(lines_of(out, lines, 16), 3);
	ck_assert_str_eq(str_attr(lines[0], "id", buf, sizeof buf), "q1");
	ck_assert_str_eq(str_attr(lines[1], "id", buf, sizeof buf), "q4");
	ck_assert_str_eq(str_attr(lines[2], "id", buf, sizeof buf), "q6");
	ck_assert_ptr_nonnull(strstr(lines[2], "\"data\":{\"x\":[1,2,{\"deep\":true}]}"));

	/* All good, in small batches with a window: exit 0. */
	{
		FILE *f = fopen(subdir(dir, "many.ndjson"), "w");
		ck_assert_ptr_nonnull(f);
		for (int k = 0; k < 1000; k++)
			fprintf(f,
				"{\"specversion\":\"1.0\",\"id\":\"m%d\",\"source\":\"/"
				"c\",\"type\":\"t\"}\n",
				k);
		fclose(f);
	}
	ck_assert_int_eq(th_sh(err, sizeof err,
			       "'%s' publish --data '%s' --batch 7 --window 3 < '%s' 2>&1",
			       TIDE_BIN, data, subdir(dir, "many.ndjson")),
			 0);
	ck_assert_msg(strstr(err, "1000 stored, 0 duplicates, 0 rejected") != NULL, "%s", err);
	/* and again: all duplicates, still success */
	ck_assert_int_eq(th_sh(err, sizeof err, "'%s' publish --data '%s' < '%s' 2>&1", TIDE_BIN,
			       data, subdir(dir, "many.ndjson")),
			 0);
	ck_assert_msg(strstr(err, "0 stored, 1000 duplicates, 0 rejected") != NULL, "%s", err);
	/* a JSON array on stdin */
	in = th_write(
		dir, "arr.json",
		"[\n {\"specversion\":\"1.0\",\"id\":\"a1\",\"source\":\"/c\",\"type\":\"t\"},\n"
		" {\"specversion\":\"1.0\",\"id\":\"a2\",\"source\":\"/c\",\"type\":\"t\"}\n]\n");
	ck_assert_int_eq(
		th_sh(err, sizeof err, "'%s' publish --data '%s' < '%s' 2>&1", TIDE_BIN, data, in),
		0);
	ck_assert_msg(strstr(err, "2 stored") != NULL, "%s", err);
	ck_assert_int_eq(th_log_count(data, ""), 1005);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
}
END_TEST

/* The same, with a syntactically broken line in the middle: the report
 * must still name the right lines and the next line must be stored. */
START_TEST(publish_line_numbers_after_broken_line)
{
	const char *dir = th_tmpdir(), *data = subdir(dir, "data");
	char err[8192];
	const char *in;
	th_daemon d;

	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s'", data), 0);
	in = th_write(dir, "in.ndjson",
		      "{\"specversion\":\"1.0\",\"id\":\"k1\",\"source\":\"/c\",\"type\":\"t\"}\n"
		      "{\"specversion\":\"1.0\",\"id\":\"k2\",\n"
		      "{\"specversion\":\"1.0\",\"id\":\"k3\",\"source\":\"/c\",\"type\":\"t\"}\n"
		      "{\"specversion\":\"1.0\",\"id\":\"k4\",\"type\":\"t\"}\n"
		      "{\"specversion\":\"1.0\",\"id\":\"k5\",\"source\":\"/c\",\"type\":\"t\"}\n");
	ck_assert_int_eq(
		th_sh(err, sizeof err, "'%s' publish --data '%s' < '%s' 2>&1", TIDE_BIN, data, in),
		1);
	ck_assert_msg(strstr(err, "line 2: not valid JSON") != NULL, "%s", err);
	ck_assert_msg(strstr(err, "line 4: missing required attribute 'source'") != NULL, "%s",
		      err);
	ck_assert_msg(strstr(err, "3 stored, 0 duplicates, 2 rejected") != NULL, "%s", err);
	ck_assert_int_eq(th_log_count(data, ""), 3);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
}
END_TEST

/* Exit 3 and a clear message when there is no engine to talk to. */
START_TEST(publish_without_engine)
{
	const char *dir = th_tmpdir();
	char err[4096];
	int64_t t0;

	ck_assert_int_eq(
		th_sh(err, sizeof err, "'%s' publish --data '%s' --type t 2>&1", TIDE_BIN, dir), 3);
	ck_assert_msg(strstr(err, "no running engine found in") != NULL, "%s", err);
	ck_assert_msg(strstr(err, "tide run") != NULL, "%s", err);
	ck_assert_int_eq(th_sh(err, sizeof err, "'%s' tail --data '%s' 2>&1", TIDE_BIN, dir), 3);
	ck_assert_msg(strstr(err, "no running engine found in") != NULL, "%s", err);

	/* an endpoints file left by an engine that is gone (pid beyond pid_max) */
	th_write(dir, "endpoints",
		 "pull=ipc:///nonexistent/pull.ipc\nrep=ipc:///nonexistent/rep.ipc\n"
		 "pub=ipc:///nonexistent/pub.ipc\npid=999999999\n");
	ck_assert_int_eq(
		th_sh(err, sizeof err, "'%s' publish --data '%s' --type t 2>&1", TIDE_BIN, dir), 3);
	ck_assert_msg(strstr(err, "is not running") != NULL, "%s", err);

	/* an endpoint nobody listens on: --timeout bounds the wait */
	t0 = th_ms();
	ck_assert_int_eq(th_sh(err, sizeof err,
			       "timeout 20 '%s' publish --rep 'ipc://%s/nobody.ipc' --timeout 1 "
			       "--type t 2>&1",
			       TIDE_BIN, dir),
			 3);
	ck_assert_msg(strstr(err, "nobody.ipc") != NULL, "%s", err);
	ck_assert_int_eq(th_sh(err, sizeof err,
			       "timeout 20 '%s' publish --push --pull 'ipc://%s/nobody.ipc' "
			       "--timeout 1 --type t 2>&1",
			       TIDE_BIN, dir),
			 3);
	ck_assert_msg(th_ms() - t0 < 15000, "--timeout 1 took %lld ms", (long long)(th_ms() - t0));
	ck_assert_int_eq(
		th_sh(err, sizeof err,
		      "timeout 20 '%s' tail --pub 'ipc://%s/nobody.ipc' --timeout 0.5 2>&1",
		      TIDE_BIN, dir),
		1);
	ck_assert_msg(strstr(err, "no event for") != NULL, "%s", err);
}
END_TEST

/* The events log_filters publishes: seq k+1 has type types[k % 6] and
 * subject s1 for even k, s2 for odd k. */
static const char *const types[] = { "a.one", "a.two", "b.one", "a.onex", "ab.c", "a.one.deep" };
enum { NLOG = 24 };

/* Run `tide log ARGS` and check it prints exactly the events for which
 * @p want(k) holds (k = seq - 1), in @p order (1: seq, 0: as given). */
static void
expect_log(const char *data, const char *args, int (*want)(int k, void *), void *ud)
{
	char out[65536], *lines[NLOG + 2], buf[64];
	size_t n, i = 0;

	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' log --data '%s' %s", TIDE_BIN, data, args),
			 0);
	n = lines_of(out, lines, NLOG + 2);
	for (int k = 0; k < NLOG; k++) {
		char id[32];
		if (!want(k, ud))
			continue;
		ck_assert_msg(i < n, "log %s: too few lines (%zu)", args, n);
		snprintf(id, sizeof id, "e%d", k);
		ck_assert_msg(num_attr(lines[i], "seq") == k + 1, "log %s: line %zu is %s", args,
			      i + 1, lines[i]);
		ck_assert_str_eq(str_attr(lines[i], "id", buf, sizeof buf), id);
		i++;
	}
	ck_assert_msg(i == n, "log %s: %zu lines, %zu expected", args, n, i);
}

static int
w_all(int k, void *ud)
{
	(void)k, (void)ud;
	return 1;
}

static int
w_range(int k, void *ud)
{
	const int *r = ud; /* from, until (seqs), limit */
	int seq = k + 1;

	return seq >= r[0] && (r[1] == 0 || seq <= r[1]) && (r[2] == 0 || seq < r[0] + r[2]);
}

static int
w_type(int k, void *ud)
{
	return strcmp(types[k % 6], ud) == 0;
}

static int
w_prefix_a(int k, void *ud)
{
	(void)ud;
	return strncmp(types[k % 6], "a.", 2) == 0;
}

static int
w_s1_aone(int k, void *ud)
{
	(void)ud;
	return k % 2 == 0 && strcmp(types[k % 6], "a.one") == 0;
}

START_TEST(log_filters)
{
	const char *dir = th_tmpdir(), *data = subdir(dir, "data");
	char out[65536], *lines[NLOG + 2], err[4096];
	FILE *f;
	th_daemon d;
	size_t n;

	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s'", data), 0);
	f = fopen(subdir(dir, "ev.ndjson"), "w");
	ck_assert_ptr_nonnull(f);
	for (int k = 0; k < NLOG; k++)
		fprintf(f,
			"{\"specversion\":\"1.0\",\"id\":\"e%d\",\"source\":\"/c\",\"type\":\"%s\","
			"\"subject\":\"s%d\",\"data\":{\"k\":%d}}\n",
			k, types[k % 6], 1 + k % 2, k);
	fclose(f);
	ck_assert_int_eq(th_sh(err, sizeof err, "'%s' publish --data '%s' < '%s' 2>&1", TIDE_BIN,
			       data, subdir(dir, "ev.ndjson")),
			 0);

	/* all of this while the daemon runs */
	expect_log(data, "", w_all, NULL);
	expect_log(data, "--from 3 --until 5", w_range, (int[]){ 3, 5, 0 });
	expect_log(data, "--from 20", w_range, (int[]){ 20, 0, 0 });
	expect_log(data, "-f 20 -u 1000", w_range, (int[]){ 20, 0, 0 });
	expect_log(data, "--until 4", w_range, (int[]){ 1, 4, 0 });
	expect_log(data, "--limit 2", w_range, (int[]){ 1, 0, 2 });
	expect_log(data, "--from 5 --limit 3", w_range, (int[]){ 5, 0, 3 });
	expect_log(data, "-n 100", w_all, NULL);
	expect_log(data, "--from 25", w_range, (int[]){ 25, 0, 0 });
	expect_log(data, "--type a.one", w_type, (void *)"a.one");
	expect_log(data, "--type ab.c", w_type, (void *)"ab.c");
	expect_log(data, "--type 'a.*'", w_prefix_a, NULL);
	expect_log(data, "--type no.such", w_type, (void *)"no.such");
	expect_log(data, "--subject s1 --type a.one", w_s1_aone, NULL);

	/* a stream: versions 1.. in order */
	ck_assert_int_eq(
		th_sh(out, sizeof out, "'%s' log --data '%s' --subject s2", TIDE_BIN, data), 0);
	n = lines_of(out, lines, NLOG + 2);
	ck_assert_uint_eq(n, NLOG / 2);
	for (size_t i = 0; i < n; i++) {
		ck_assert_int_eq(num_attr(lines[i], "version"), (long long)i + 1);
		ck_assert_int_eq(num_attr(lines[i], "seq"), 2 * (long long)i + 2);
		ck_assert_ptr_nonnull(strstr(lines[i], "\"subject\":\"s2\""));
	}
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' log --data '%s' --subject s2 --limit 3",
			       TIDE_BIN, data),
			 0);
	ck_assert_uint_eq(lines_of(out, lines, NLOG + 2), 3);
	ck_assert_int_eq(th_log_count(data, "--subject nobody"), 0);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
	/* and without it */
	expect_log(data, "--type 'a.*'", w_prefix_a, NULL);
}
END_TEST

START_TEST(log_and_stat_without_log)
{
	const char *dir = th_tmpdir();
	char err[4096];

	ck_assert_int_eq(th_sh(err, sizeof err, "'%s' log --data '%s' 2>&1", TIDE_BIN, dir), 1);
	ck_assert_msg(strstr(err, "no log in") != NULL, "%s", err);
	ck_assert_int_eq(th_sh(err, sizeof err, "'%s' stat --data '%s' 2>&1", TIDE_BIN, dir), 1);
	ck_assert_msg(strstr(err, "no log in") != NULL, "%s", err);
	ck_assert_int_eq(th_sh(err, sizeof err, "'%s' log --data '%s/missing' 2>&1", TIDE_BIN, dir),
			 1);
	ck_assert_msg(strstr(err, "no log in") != NULL, "%s", err);
	/* reading creates nothing */
	ck_assert(dir_is_empty(dir));
}
END_TEST

START_TEST(stat_positions_and_lag)
{
	const char *dir = th_tmpdir(), *data = subdir(dir, "data");
	char out[8192], err[4096];
	th_daemon d;

	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s' --script '%s'", data,
					 th_src("tests/lua/mirror.lua")),
			 0);
	ck_assert_int_eq(th_sh(err, sizeof err,
			       "for i in 1 2 3 4 5; do '%s' publish -q --data '%s' --type in.x "
			       "--subject s$i || exit 1; done",
			       TIDE_BIN, data),
			 0);
	ck_assert(th_wait_settled(data, "mirror", 10, 10000));
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' stat --data '%s' --json", TIDE_BIN, data), 0);
	ck_assert_msg(strstr(out, "{\"engine\":{\"running\":true,\"pid\":") == out, "%s", out);
	ck_assert_msg(strstr(out, "},\"events\":10,\"last_seq\":10,\"streams\":5,") != NULL, "%s",
		      out);
	ck_assert_msg(strstr(out, "\"consumers\":[{\"name\":\"mirror\",\"checkpoint\":10,\"lag\":0,"
				  "\"retrying\":0,\"dead\":0}],\"projections\":[]}\n") != NULL,
		      "%s", out);
	ck_assert_int_eq(th_count(out, "\n"), 1);
	ck_assert_int_eq(th_checkpoint(data, "mirror"), 10);
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' stat --data '%s'", TIDE_BIN, data), 0);
	ck_assert_msg(strncmp(out, "engine     running (pid ", 24) == 0, "%s", out);
	ck_assert_msg(strstr(out, "events") && strstr(out, "10") && strstr(out, "consumers") &&
			      strstr(out, "mirror") && strstr(out, "checkpoint 10") &&
			      strstr(out, "lag 0"),
		      "%s", out);
	ck_assert_int_eq(th_daemon_stop(&d), 0);

	/* Without the script the consumer stands still: its lag grows. */
	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s'", data), 0);
	ck_assert_int_eq(th_sh(err, sizeof err,
			       "'%s' publish -q --data '%s' --type in.x && "
			       "'%s' publish -q --data '%s' --type other && "
			       "'%s' publish -q --data '%s' --type in.x",
			       TIDE_BIN, data, TIDE_BIN, data, TIDE_BIN, data),
			 0);
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' stat --data '%s' --json", TIDE_BIN, data), 0);
	ck_assert_msg(strstr(out, "\"events\":13,\"last_seq\":13,") != NULL, "%s", out);
	ck_assert_msg(strstr(out, "{\"name\":\"mirror\",\"checkpoint\":10,\"lag\":3,") != NULL,
		      "%s", out);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
	/* works without an engine, too, and says so */
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' stat --data '%s'", TIDE_BIN, data), 0);
	ck_assert_msg(strstr(out, "lag 3") != NULL, "%s", out);
	ck_assert_msg(strncmp(out, "engine     not running\n", 23) == 0, "%s", out);
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' stat --data '%s' --json", TIDE_BIN, data), 0);
	ck_assert_msg(strstr(out, "{\"engine\":{\"running\":false},\"events\":13,") == out, "%s",
		      out);

	/* back with the script: it catches up */
	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s' --script '%s'", data,
					 th_src("tests/lua/mirror.lua")),
			 0);
	ck_assert(th_wait_settled(data, "mirror", 15, 10000));
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' stat --data '%s' --json", TIDE_BIN, data), 0);
	ck_assert_msg(strstr(out, "{\"name\":\"mirror\",\"checkpoint\":15,\"lag\":0,") != NULL,
		      "%s", out);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
}
END_TEST

/* tide publish --wait returns once every consumer and projection has
 * handled the events, and what a consumer emitted for them: a chain of
 * two consumers and a projection is done when it returns. */
START_TEST(publish_wait_returns_when_handled)
{
	static const char script[] =
		"local tide = require 'tide'\n"
		"tide.on('in.*', function(ev)\n"
		"  local x = 0\n"
		"  for i = 1, 2000 do x = x + i end\n"
		"  tide.emit{ type = 'mid.x', subject = ev.subject, data = { x = x } }\n"
		"end, { name = 'first', from = 'beginning' })\n"
		"tide.on('mid.*', function(ev)\n"
		"  tide.emit{ type = 'out.x', subject = ev.subject }\n"
		"end, { name = 'second', from = 'beginning' })\n"
		"tide.projection('outs', { version = 1, key = function(ev) return 'all' end,\n"
		"  init = function() return { n = 0 } end,\n"
		"  on = { ['out.x'] = function(s, ev) s.n = s.n + 1 end } })\n";
	const char *dir = th_tmpdir(), *data = subdir(dir, "data");
	const char *path = th_write(dir, "chain.lua", script);
	char out[8192], err[4096], cmd[1200];
	uint64_t events, last, cp;
	th_daemon d;
	FILE *f;

	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s' --script '%s'", data, path), 0);
	snprintf(cmd, sizeof cmd, "%s/in.ndjson", dir);
	f = fopen(cmd, "w");
	ck_assert_ptr_nonnull(f);
	for (int i = 0; i < 3000; i++)
		fprintf(f,
			"{\"specversion\":\"1.0\",\"id\":\"w%d\",\"source\":\"/t\","
			"\"type\":\"in.x\",\"subject\":\"s%d\"}\n",
			i, i % 50);
	fclose(f);
	ck_assert_int_eq(th_sh(err, sizeof err, "'%s' publish --wait --data '%s' < '%s' 2>&1",
			       TIDE_BIN, data, cmd),
			 0);
	ck_assert_msg(strstr(err, "3000 stored") != NULL, "%s", err);
	ck_assert_msg(strstr(err, "handled by every consumer and projection") != NULL, "%s", err);
	/* no waiting here: it is all done already */
	ck_assert_int_eq(th_log_state(data, "second", &events, &last, &cp), 0);
	ck_assert_uint_eq(events, 9000);
	ck_assert_uint_eq(cp, last);
	ck_assert_int_eq(th_log_state(data, "first", &events, &last, &cp), 0);
	ck_assert_uint_eq(cp, last);
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' query --data '%s' outs all", TIDE_BIN, data),
			 0);
	ck_assert_msg(strstr(out, "\"n\":3000") != NULL, "%s", out);
	/* not with --push, which has no acknowledgements to wait from */
	ck_assert_int_eq(th_sh(err, sizeof err,
			       "'%s' publish --push --wait --data '%s' < '%s' 2>&1", TIDE_BIN, data,
			       cmd),
			 2);
	ck_assert_msg(strstr(err, "--wait needs acknowledgements") != NULL, "%s", err);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
}
END_TEST

/* tide tail --count N prints N matching events and exits 0. */
/* On a terminal, tide publish shows a count that moves; in a pipe, only
 * the summary. */
START_TEST(publish_progress_on_a_terminal)
{
	const char *dir = th_tmpdir(), *data = subdir(dir, "data");
	const char *big = subdir(dir, "big.ndjson"), *out = subdir(dir, "tty.out");
	char res[4096], *text;
	th_daemon d;

	ck_assert_int_eq(th_sh(NULL, 0,
			       "awk 'BEGIN { for (i = 1; i <= 200000; i++) printf "
			       "\"{\\\"specversion\\\":\\\"1.0\\\",\\\"id\\\":\\\"p%%d\\\","
			       "\\\"source\\\":\\\"/x\\\",\\\"type\\\":\\\"t\\\"}\\n\", i }' >'%s'",
			       big),
			 0);
	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s'", data), 0);
	/* script(1) gives it a terminal */
	ck_assert_int_eq(
		th_sh(res, sizeof res,
		      "script -qec \"'%s' publish --data '%s' --batch 10 < '%s'\" /dev/null "
		      ">'%s' 2>&1",
		      TIDE_BIN, data, big, out),
		0);
	text = th_slurp(out);
	ck_assert_ptr_nonnull(text);
	ck_assert_msg(
		strstr(text, "\rtide publish: ") && strstr(text, " sent, ") &&
			strstr(text,
			       "\r\033[Ktide publish: 200000 stored, 0 duplicates, 0 rejected"),
		"%.500s", text);
	free(text);
	/* not a terminal: the summary alone */
	ck_assert_int_eq(
		th_sh(res, sizeof res, "'%s' publish --data '%s' < '%s' 2>&1", TIDE_BIN, data, big),
		0);
	ck_assert_str_eq(res, "tide publish: 0 stored, 200000 duplicates, 0 rejected\n");
	ck_assert_int_eq(th_daemon_stop(&d), 0);
}
END_TEST

/* tail --from: the history from the log, then what commits meanwhile, in
 * seq order with no gap or repeat (every event of the chosen types). */
START_TEST(tail_from_history_then_live)
{
	const char *dir = th_tmpdir(), *data = subdir(dir, "data"), *out = subdir(dir, "tail.out");
	char ev[256], reply[256], *text, *lines[64], buf[64];
	th_daemon d;
	pid_t tail;
	int st;

	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s'", data), 0);
	for (int k = 1; k <= 10; k++) {
		snprintf(ev, sizeof ev,
			 "{\"specversion\":\"1.0\",\"id\":\"h%d\",\"source\":\"/"
			 "c\",\"type\":\"%s\"}",
			 k, k % 3 ? "in.a" : "other.b");
		ck_assert_int_gt(th_req(d.rep, ev, reply, sizeof reply, 5000), 0);
	}
	/* from seq 4: in.a at 4 5 7 8 10 (5 of them), then 8 more live */
	tail = th_bg(out, "'%s' tail --data '%s' --from 4 --type in. --count 13", TIDE_BIN, data);
	ck_assert_int_gt(tail, 0);
	for (int k = 11; k <= 22; k++) {
		snprintf(ev, sizeof ev,
			 "{\"specversion\":\"1.0\",\"id\":\"h%d\",\"source\":\"/"
			 "c\",\"type\":\"%s\"}",
			 k, k % 3 ? "in.a" : "other.b");
		ck_assert_int_gt(th_req(d.rep, ev, reply, sizeof reply, 5000), 0);
	}
	st = th_bg_wait(tail, 15000);
	if (st < 0)
		kill(tail, SIGKILL);
	ck_assert_int_eq(st, 0);
	text = th_slurp(out);
	ck_assert_ptr_nonnull(text);
	ck_assert_uint_eq(lines_of(text, lines, 64), 13);
	for (int i = 0, want = 4; i < 13; i++, want++) {
		while (want % 3 == 0)
			want++;
		ck_assert_str_eq(str_attr(lines[i], "type", buf, sizeof buf), "in.a");
		ck_assert_int_eq(num_attr(lines[i], "seq"), want);
	}
	free(text);
	ck_assert_int_eq(
		th_sh(NULL, 0, "'%s' tail --data '%s' --from 0 2>/dev/null", TIDE_BIN, data), 2);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
}
END_TEST

/* --log-format json: one JSON object per line, quotes and controls in
 * a message escaped. */
START_TEST(log_format_json)
{
	const char *dir = th_tmpdir(), *data = subdir(dir, "data");
	const char *script = th_write(dir, "say.lua", "print('say \"hi\" \\\\ \\t there')\n");
	char *log, *line, *save = NULL;
	th_daemon d;
	int n = 0, said = 0;

	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s' --log-format json --script '%s'",
					 data, script),
			 0);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
	log = th_slurp(d.log);
	ck_assert_ptr_nonnull(log);
	for (line = strtok_r(log, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
		if (strncmp(line, "tide run:", 9) == 0)
			continue; /* the command's own notes, not the log */
		ck_assert_msg(strncmp(line, "{\"time\":\"", 9) == 0 &&
				      line[strlen(line) - 1] == '}' &&
				      strstr(line, "\"level\":\"") && strstr(line, "\"msg\":\""),
			      "not a JSON log line: %s", line);
		said += strstr(line, "say \\\"hi\\\" \\\\ \\u0009 there") != NULL;
		n++;
	}
	ck_assert_int_ge(n, 2);
	ck_assert_msg(said == 1, "%s", th_slurp(d.log));
	free(log);
	ck_assert_int_eq(th_sh(NULL, 0, "'%s' run --log-format xml 2>/dev/null", TIDE_BIN), 2);
}
END_TEST

START_TEST(tail_count_exits)
{
	const char *dir = th_tmpdir(), *data = subdir(dir, "data"), *out = subdir(dir, "tail.out");
	char ev[256], reply[256], *text, *lines[16], buf[64];
	int64_t deadline;
	th_daemon d;
	pid_t tail;
	int st = -1;

	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s'", data), 0);
	tail = th_bg(out, "'%s' tail --data '%s' --type out. --count 3", TIDE_BIN, data);
	ck_assert_int_gt(tail, 0);
	/* SUB connects in the background: publish until tail has had its 3,
	 * with events of another type in between that it must not print. */
	deadline = th_ms() + 20000;
	for (int k = 0; th_ms() < deadline; k++) {
		snprintf(ev, sizeof ev,
			 "{\"specversion\":\"1.0\",\"id\":\"t%d\",\"source\":\"/"
			 "c\",\"type\":\"%s\"}",
			 k, k % 2 ? "other.z" : "out.t");
		ck_assert_int_gt(th_req(d.rep, ev, reply, sizeof reply, 5000), 0);
		if ((st = th_bg_wait(tail, 50)) >= 0)
			break;
	}
	if (st < 0)
		kill(tail, SIGKILL);
	ck_assert_int_eq(st, 0);
	text = th_slurp(out);
	ck_assert_ptr_nonnull(text);
	ck_assert_uint_eq(lines_of(text, lines, 16), 3);
	for (int i = 0; i < 3; i++) {
		ck_assert_str_eq(str_attr(lines[i], "type", buf, sizeof buf), "out.t");
		ck_assert_int_eq(lines[i][0], '{');
		ck_assert_int_eq(lines[i][strlen(lines[i]) - 1], '}');
		if (i > 0)
			ck_assert_int_gt(num_attr(lines[i], "seq"), num_attr(lines[i - 1], "seq"));
	}
	free(text);
	ck_assert_int_eq(th_daemon_stop(&d), 0);
}
END_TEST

/* publish --expect-version: optimistic concurrency from the command line
 * and the REP reply that says the current version. */
START_TEST(publish_expect_version)
{
	const char *dir = th_tmpdir(), *data = subdir(dir, "data");
	char out[4096], err[4096];
	th_daemon d;

	ck_assert_int_eq(th_daemon_spawn(&d, data, "--data '%s'", data), 0);
	ck_assert_int_eq(th_sh(out, sizeof out,
			       "'%s' publish --acks --data '%s' --type acct.opened --subject a1 "
			       "--expect-version 0",
			       TIDE_BIN, data),
			 0);
	ck_assert_str_eq(out, "{\"ok\":true,\"seq\":1}\n");
	ck_assert_int_eq(th_sh(out, sizeof out,
			       "'%s' publish --acks --data '%s' --type acct.credited --subject a1 "
			       "--expect-version 0 2>/dev/null",
			       TIDE_BIN, data),
			 1);
	ck_assert_str_eq(out, "{\"ok\":false,\"error\":\"version conflict: stream 'a1' is at "
			      "version 1, not 0\",\"conflict\":true,\"version\":1}\n");
	ck_assert_int_eq(th_sh(out, sizeof out,
			       "'%s' publish --acks --data '%s' --type acct.credited --subject a1 "
			       "--expect-version 1",
			       TIDE_BIN, data),
			 0);
	ck_assert_str_eq(out, "{\"ok\":true,\"seq\":2}\n");
	ck_assert_int_eq(th_log_count(data, "--subject a1"), 2);
	/* the expectation is not stored with the event */
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' log --data '%s'", TIDE_BIN, data), 0);
	ck_assert_ptr_null(strstr(out, "expectedversion"));
	ck_assert_int_eq(th_sh(err, sizeof err,
			       "'%s' publish --data '%s' --type x --expect-version 1 2>&1",
			       TIDE_BIN, data),
			 2);
	ck_assert_ptr_nonnull(strstr(err, "--expect-version needs --type and --subject"));
	ck_assert_int_eq(th_daemon_stop(&d), 0);
}
END_TEST

/* The README's first command runs examples/orders/run.sh: it must show
 * the alerts, the declined order and the projections. */
START_TEST(bundled_example_runs)
{
	static char out[65536];
	const char *dir = th_tmpdir();

	ck_assert_int_eq(th_sh(out, sizeof out,
			       "TMPDIR='%s' TIDE='%s' '%s/examples/orders/run.sh' 2>&1", dir,
			       TIDE_BIN, TIDE_SRCDIR),
			 0);
	ck_assert_int_eq(th_count(out, "ALERT "), 2);
	ck_assert_msg(strstr(out, "payment declined for order-0007: over card limit"), "%.3000s",
		      out);
	ck_assert_msg(strstr(out, "{\"key\":\"order-0007\",\"state\":{\"reason\":\"over card "
				  "limit\",\"status\":\"cancelled\""),
		      "%.3000s", out);
	ck_assert_int_eq(th_count(out, "\"status\":\"shipping\""), 11);
	ck_assert_msg(strstr(out, "{\"key\":\"linus\",\"state\":{\"orders\":2,"), "%.3000s", out);
	ck_assert_msg(strstr(out, "order_status             live at 62"), "%.3000s", out);
}
END_TEST

/* Publish the events of file @p ev to the engine of @p data, wait until
 * they are handled, and put the alerts in the log in @p out. */
static void
publish_then_alerts(const char *data, const char *ev, char *out, size_t n)
{
	ck_assert_int_eq(th_sh(NULL, 0, "'%s' publish --wait --data '%s' < '%s' 2>/dev/null",
			       TIDE_BIN, data, ev),
			 0);
	ck_assert_int_eq(th_sh(out, n, "'%s' log --data '%s' --type alert", TIDE_BIN, data), 0);
}

/* Script parameters: --param and --params FILE for tide run, the config
 * file's params table, and the same file for tide backtest and tide test;
 * a later value wins, and a bad file is refused with its line. */
START_TEST(params_reach_the_scripts)
{
	static const char script[] =
		"local tide = require 'tide'\n"
		"local LIMIT, TAG = tide.param('t.limit', 100), tide.param('t.tag', 'none')\n"
		"tide.on('tx', function(ev)\n"
		"  if ev.data.amount > LIMIT then\n"
		"    tide.emit{ type = 'alert', subject = ev.subject,\n"
		"               data = { limit = LIMIT, tag = TAG } }\n"
		"  end\n"
		"end, { name = 'big', from = 'beginning' })\n";
	static const char events[] =
		"{\"specversion\":\"1.0\",\"id\":\"a\",\"source\":\"/t\",\"type\":\"tx\","
		"\"subject\":\"s\",\"data\":{\"amount\":60}}\n"
		"{\"specversion\":\"1.0\",\"id\":\"b\",\"source\":\"/t\",\"type\":\"tx\","
		"\"subject\":\"s\",\"data\":{\"amount\":160}}\n";
	const char *dir = th_tmpdir(), *data = subdir(dir, "data"), *data2 = subdir(dir, "data2");
	char path[700], ev[700], params[700], out[8192], conf[1400];
	th_daemon d;

	/* (th_write's paths are reused after four calls: these are copied) */
	snprintf(path, sizeof path, "%s", th_write(dir, "r.lua", script));
	snprintf(ev, sizeof ev, "%s", th_write(dir, "ev.ndjson", events));
	snprintf(params, sizeof params, "%s",
		 th_write(dir, "p.params",
			  "# tuned on last month\n t.limit = 50 \n\nt.tag= from file\n"));

	/* live: the file, then --param over it */
	ck_assert_int_eq(th_daemon_spawn(&d, data,
					 "--data '%s' -s '%s' --params '%s' --param "
					 "t.limit=55",
					 data, path, params),
			 0);
	publish_then_alerts(data, ev, out, sizeof out);
	ck_assert_int_eq(th_count(out, "\"data\":{\"limit\":55,\"tag\":\"from file\"}"), 2);
	ck_assert_int_eq(th_daemon_stop(&d), 0);

	/* a config file's params table */
	snprintf(conf, sizeof conf,
		 "data = '%s'\nscripts = { '%s' }\n"
		 "params = { ['t.limit'] = 70, ['t.tag'] = 'conf' }\n",
		 data2, path);
	ck_assert_int_eq(th_daemon_spawn(&d, data2, "-c '%s'", th_write(dir, "c.lua", conf)), 0);
	publish_then_alerts(data2, ev, out, sizeof out);
	ck_assert_int_eq(th_count(out, "\"data\":{\"limit\":70,\"tag\":\"conf\"}"), 1);
	ck_assert_int_eq(th_daemon_stop(&d), 0);

	/* a backtest: the defaults, the file, the file and --set over it */
	ck_assert_int_eq(
		th_sh(out, sizeof out, "'%s' backtest -q -s '%s' --emits '%s'", TIDE_BIN, path, ev),
		0);
	ck_assert_int_eq(th_count(out, "\"data\":{\"limit\":100,\"tag\":\"none\"}"), 1);
	ck_assert_int_eq(th_sh(out, sizeof out,
			       "'%s' backtest -q -s '%s' --params '%s' --emits '%s'", TIDE_BIN,
			       path, params, ev),
			 0);
	ck_assert_int_eq(th_count(out, "\"data\":{\"limit\":50,\"tag\":\"from file\"}"), 2);
	ck_assert_int_eq(
		th_sh(out, sizeof out,
		      "'%s' backtest -q -s '%s' --params '%s' --set t.limit=150 --emits '%s'",
		      TIDE_BIN, path, params, ev),
		0);
	ck_assert_int_eq(th_count(out, "\"data\":{\"limit\":150,\"tag\":\"from file\"}"), 1);

	/* tide test: the case expects the file's limit */
	ck_assert_int_eq(
		th_sh(NULL, 0, "mkdir '%s/cases' && cp '%s' '%s/cases/one.ndjson'", dir, ev, dir),
		0);
	th_write(dir, "cases/one.expected.ndjson",
		 "{\"type\":\"alert\",\"data\":{\"limit\":50,\"tag\":\"from file\"}}\n"
		 "{\"type\":\"alert\",\"data\":{\"limit\":50,\"tag\":\"from file\"}}\n");
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' test -s '%s' --params '%s' '%s/cases' 2>&1",
			       TIDE_BIN, path, params, dir),
			 0);
	ck_assert_msg(strstr(out, "1 passed, 0 failed") != NULL, "%s", out);
	ck_assert_int_eq(
		th_sh(out, sizeof out, "'%s' test -s '%s' '%s/cases' 2>&1", TIDE_BIN, path, dir),
		1);

	/* a line that is not NAME = VALUE, a missing file, a bad --param */
	th_write(dir, "bad.params", "t.limit = 5\n# fine\noops\n");
	ck_assert_int_eq(th_sh(out, sizeof out,
			       "'%s' backtest -s '%s' --params '%s/bad.params' '%s' 2>&1", TIDE_BIN,
			       path, dir, ev),
			 1);
	ck_assert_msg(strstr(out, "bad.params:3: expected NAME = VALUE, not 'oops'") != NULL, "%s",
		      out);
	ck_assert_int_eq(th_sh(out, sizeof out,
			       "'%s' run --data '%s' -s '%s' --params '%s/none' 2>&1", TIDE_BIN,
			       data, path, dir),
			 1);
	ck_assert_msg(strstr(out, "cannot read") != NULL, "%s", out);
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' run --data '%s' -s '%s' --param oops 2>&1",
			       TIDE_BIN, data, path),
			 2);
	ck_assert_msg(strstr(out, "--param takes NAME=VALUE, not 'oops'") != NULL, "%s", out);
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' test -s '%s' --param oops '%s/cases' 2>&1",
			       TIDE_BIN, path, dir),
			 2);
	ck_assert_msg(strstr(out, "tide test: --param takes NAME=VALUE, not 'oops'") != NULL, "%s",
		      out);
}
END_TEST

Suite *
cli_suite(void)
{
	Suite *s = suite_create("cli");
	TCase *tc = tcase_create("contract");
	TCase *live = tcase_create("with_engine");

	tcase_add_checked_fixture(tc, NULL, th_cleanup);
	tcase_add_test(tc, help_everywhere);
	tcase_add_test(tc, usage_errors_exit_2);
	tcase_add_test(tc, publish_without_engine);
	tcase_add_test(tc, log_and_stat_without_log);
	tcase_set_timeout(tc, 60);
	suite_add_tcase(s, tc);

	tcase_add_checked_fixture(live, NULL, th_cleanup);
	tcase_add_test(live, publish_from_flags);
	tcase_add_test(live, publish_reports_bad_lines);
	tcase_add_test(live, publish_line_numbers_after_broken_line);
	tcase_add_test(live, log_filters);
	tcase_add_test(live, stat_positions_and_lag);
	tcase_add_test(live, publish_expect_version);
	tcase_add_test(live, publish_wait_returns_when_handled);
	tcase_add_test(live, tail_count_exits);
	tcase_add_test(live, log_format_json);
	tcase_add_test(live, tail_from_history_then_live);
	tcase_add_test(live, publish_progress_on_a_terminal);
	tcase_add_test(live, bundled_example_runs);
	tcase_add_test(live, params_reach_the_scripts);
	tcase_set_timeout(live, 60);
	suite_add_tcase(s, live);
	return s;
}
