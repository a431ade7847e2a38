/*
 * rules_rig.c - the rigs the rule suites share (rules_rig.h).
 */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules_rig.h"
/* ------------------------------------------------------------------------
 * A small rig: a data directory, a script, events written as NDJSON
 * ------------------------------------------------------------------------ */

void
rig_init(rig *r, const char *script)
{
	memset(r, 0, sizeof *r);
	r->dir = th_tmpdir();
	snprintf(r->data, sizeof r->data, "%s/data", r->dir);
	snprintf(r->script, sizeof r->script, "%s", th_write(r->dir, "rule.lua", script));
	snprintf(r->events, sizeof r->events, "%s/events.ndjson", r->dir);
}

void
rig_start(rig *r)
{
	ck_assert_int_eq(th_daemon_spawn(&r->d, r->data, "--data '%s' --script '%s' %s", r->data,
					 r->script, r->extra ? r->extra : ""),
			 0);
	r->running = 1;
}

void
rig_stop(rig *r)
{
	ck_assert_int_eq(th_daemon_stop(&r->d), 0);
	r->running = 0;
}

void
rig_kill(rig *r)
{
	th_daemon_kill(&r->d);
	r->running = 0;
}

/* Publish the NDJSON text @p text (acknowledged; freed here) and wait
 * until consumer @p name has handled everything in the log. */
void
rig_publish(rig *r, char *text, const char *name)
{
	char out[4096];
	uint64_t ev, last, cp;
	int64_t deadline = th_ms() + 20000;
	FILE *f = fopen(r->events, "w");

	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	fclose(f);
	free(text);
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' publish -q --data '%s' < '%s'", TIDE_BIN,
			       r->data, r->events),
			 0);
	/* settled: the consumer is at the end and stays there for a moment */
	for (;;) {
		ck_assert_msg(th_ms() < deadline, "consumer %s did not catch up", name);
		if (th_log_state(r->data, name, &ev, &last, &cp) == 0 && cp == last) {
			th_pause();
			if (th_log_state(r->data, name, &ev, &last, &cp) == 0 && cp == last)
				break;
		}
		th_pause();
	}
}

/* An event line: type, subject, minute of 2026-01-01 (may pass 59), data. */
void
event(sbuf *b, int id, const char *type, const char *subject, int minute, const char *data)
{
	sb_printf(b,
		  "{\"specversion\":\"1.0\",\"id\":\"e%d\",\"source\":\"/test\",\"type\":\"%s\","
		  "\"subject\":\"%s\",\"time\":\"2026-01-01T%02d:%02d:00Z\",\"data\":%s}\n",
		  id, type, subject, minute / 60, minute % 60, data);
}

/* The events of type @p type in the log, as "subject data" lines. */
char *
emitted(const char *data, const char *type)
{
	th_rec *v;
	long n = th_log_read(data, &v);
	sbuf b = { 0 };

	ck_assert_int_ge(n, 0);
	for (long i = 0; i < n; i++) {
		const char *d;
		if (strcmp(v[i].type, type) != 0)
			continue;
		d = strstr(v[i].json, "\"data\":");
		/* data is the last member: drop the event's closing brace */
		sb_printf(&b, "%s %.*s\n", v[i].subject ? v[i].subject : "-",
			  d ? (int)strlen(d + 7) - 1 : 4, d ? d + 7 : "none");
	}
	th_recs_free(v, n);
	return sb_take(&b);
}

/* ------------------------------------------------------------------------
 * In process: the consumer layer over a log, turn by turn as the engine
 * runs it, so that a turn can be aborted or the log made to fail
 * ------------------------------------------------------------------------ */

static void
u_log(void *ud, int level, const char *fmt, ...)
{
	(void)ud;
	(void)level;
	(void)fmt;
}

/* A log (initial map @p map bytes, 0 for the default) and @p script
 * loaded and started on it. */
void
u_open(urig *u, const char *script, uint64_t map)
{
	memset(u, 0, sizeof *u);
	u->dir = th_tmpdir();
	snprintf(u->data, sizeof u->data, "%s/data", u->dir);
	snprintf(u->script, sizeof u->script, "%s", th_write(u->dir, "rule.lua", script));
	u->map = map;
	u_reopen(u);
}

/* The log of @p u and its script opened and started again (after
 * u_close(): as after a crash, what was not committed is gone). */
void
u_reopen(urig *u)
{
	tidei_log_opts lo = { 0 };
	tidei_consumers_opts co;
	char err[TIDEI_ERRLEN];
	const char *scripts[1];

	lo.map_size = u->map;
	ck_assert_msg(tidei_log_open(&u->log, u->data, &lo, err) == TIDE_OK, "%s", err);
	scripts[0] = u->script;
	tidei_buf_reset(&u->path);
	tidei_lua_path(&u->path, NULL, scripts, 1);
	memset(&co, 0, sizeof co);
	co.script.instruction_budget = TIDEI_DEFAULT_BUDGET;
	co.script.time_limit_ns = TIDEI_DEFAULT_TIME_NS;
	co.script.memory_limit = TIDEI_DEFAULT_MEMORY;
	co.script.lua_path = (const char *)u->path.p;
	co.max_event = 1 << 20;
	co.max_depth = TIDEI_DEFAULT_EMIT_DEPTH;
	co.log = u_log;
	co.write_ns = u->write_ns;
	ck_assert_msg(tidei_consumers_new(&u->cs, &co, err) == TIDE_OK, "%s", err);
	ck_assert_msg(tidei_consumers_load(u->cs, u->script, err) == TIDE_OK, "%s", err);
	ck_assert_msg(tidei_consumers_start(u->cs, u->log, u->log->committed, err) == TIDE_OK, "%s",
		      err);
}

void
u_close(urig *u)
{
	tidei_consumers_destroy(u->cs);
	tidei_log_close(u->log);
	tidei_buf_free(&u->path);
	tidei_buf_free(&u->rec);
	u->cs = NULL;
	u->log = NULL;
}

static void
u_append(void *ud, const uint8_t *rec, size_t len, const char *err)
{
	urig *u = ud;
	tidei_append res;

	ck_assert_msg(err == NULL, "%s", err);
	tidei_buf_reset(&u->rec);
	tidei_buf_put(&u->rec, rec, len);
	ck_assert_int_eq(tidei_log_append(u->log, u->rec.p, len, tidei_now(), -1, &res), TIDE_OK);
}

/* Append the NDJSON text @p text (freed here) in a transaction of its own,
 * without running the consumers. */
void
u_publish(urig *u, char *text)
{
	tidei_eparser p;

	tidei_eparser_init(&p, 1 << 20);
	ck_assert_int_eq(tidei_log_begin(u->log), TIDE_OK);
	ck_assert_int_gt(tidei_eparser_run(&p, text, strlen(text), u_append, u), 0);
	ck_assert_int_eq(tidei_log_commit(u->log), TIDE_OK);
	tidei_eparser_free(&p);
	free(text);
}

/* Turns as the engine makes them until the consumers are done: a turn
 * that fails is aborted and the consumers reloaded; a full map grows. */
void
u_run(urig *u)
{
	char err[TIDEI_ERRLEN];
	int more = 1, growths = 0, rc;

	for (int turns = 0; more; turns++) {
		ck_assert_int_lt(turns, 1000);
		ck_assert_int_eq(tidei_log_begin(u->log), TIDE_OK);
		rc = tidei_consumers_run(u->cs, u->log, &more, err);
		if (rc == TIDE_OK) {
			rc = tidei_log_commit(u->log);
			snprintf(err, sizeof err, "%s", u->log->err);
		} else {
			tidei_log_abort(u->log);
		}
		if (rc == TIDE_OK) {
			tidei_consumers_committed(u->cs);
			continue;
		}
		tidei_consumers_reload(u->cs, u->log);
		ck_assert_msg(rc == TIDE_EFULL && growths++ < 8, "turn failed (%d): %s", rc, err);
		ck_assert_int_eq(tidei_log_grow(u->log), TIDE_OK);
		more = 1;
	}
}

/* One turn that is then aborted, as when the map turns out too small. */
void
u_abort_turn(urig *u)
{
	char err[TIDEI_ERRLEN];
	int more;

	ck_assert_int_eq(tidei_log_begin(u->log), TIDE_OK);
	ck_assert_msg(tidei_consumers_run(u->cs, u->log, &more, err) == TIDE_OK, "%s", err);
	tidei_log_abort(u->log);
	tidei_consumers_reload(u->cs, u->log);
}

/* The log's emitted events (source /tide/...) without seq, version and
 * recorded, in log order, one per line. */
char *
log_emits(const char *data)
{
	th_rec *v;
	long n = th_log_read(data, &v);
	sbuf b = { 0 };

	ck_assert_int_ge(n, 0);
	for (long i = 0; i < n; i++)
		if (strncmp(v[i].source, "/tide/", 6) == 0)
			sb_printf(&b, "{%s\n", strstr(v[i].json, "\"specversion\""));
	th_recs_free(v, n);
	return sb_take(&b);
}

/* `tide replay`'s emits in the same form. */
char *
replay_emits(const rig *r)
{
	char path[700];
	char *out, *line;
	sbuf b = { 0 };

	snprintf(path, sizeof path, "%s/replay.out", r->dir);
	{
		char tmp[256];
		ck_assert_int_eq(th_sh(tmp, sizeof tmp,
				       "'%s' replay -q --data '%s' --script '%s' > '%s'", TIDE_BIN,
				       r->data, r->script, path),
				 0);
	}
	out = th_slurp(path);
	ck_assert_ptr_nonnull(out);
	for (line = strtok(out, "\n"); line != NULL; line = strtok(NULL, "\n")) {
		const char *e = strstr(line, "{\"emit\":");
		char *end;
		if (e != line)
			continue;
		end = strstr(line, "},\"consumer\":");
		ck_assert_ptr_nonnull(end);
		end[1] = '\0';
		sb_printf(&b, "%s\n", line + 8);
	}
	free(out);
	return sb_take(&b);
}

/* @p got and @p want are equal; if not, say where (the whole texts are
 * too long for a message). */
void
same_lines(const char *got, const char *want)
{
	size_t line = 1, at = 0;

	while (got[at] != '\0' && got[at] == want[at]) {
		if (got[at] == '\n')
			line++;
		at++;
	}
	if (got[at] == want[at])
		return;
	while (at > 0 && want[at - 1] != '\n')
		at--;
	ck_abort_msg("line %zu differs:\n got %.300s\nwant %.300s", line, got + at, want + at);
}

/* A test case of the rule suites: 120 s, a fresh temporary directory. */
TCase *
rules_tcase(Suite *s, const char *name)
{
	TCase *tc = tcase_create(name);

	tcase_set_timeout(tc, 120);
	tcase_add_checked_fixture(tc, NULL, th_cleanup);
	suite_add_tcase(s, tc);
	return tc;
}
