/*
 * test_cthread.c - consumers on a thread of their own (cthread.c): the
 * same events give the same emits, dead letters and claims as on the
 * engine's thread, across a kill, while the log's map grows, and the
 * engine's thread keeps them home after a death while they were away.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules_rig.h"

/* A rule with state, a shared table and timers; a consumer that fails on
 * some events (a retry, then the dead letters), holds later events of
 * their subject back, and claims keys with tide.once; and one that reacts
 * to the rule's emits. */
static const char mixed_script[] =
	"local tide = require 'tide'\n"
	"local seen = tide.shared('seen', { n = 0 })\n"
	"tide.on('tx', function(ev, st)\n"
	"  st.n = (st.n or 0) + 1\n"
	"  seen.n = seen.n + 1\n"
	"  if st.n % 4 == 0 then\n"
	"    tide.emit{ type = 'alert', subject = ev.subject, data = { n = st.n } }\n"
	"  end\n"
	"  tide.timer.after('quiet', '30m', { n = st.n })\n"
	"end, { name = 'count', key = 'subject', from = 'beginning',\n"
	"       timers = { quiet = function(key, data, st)\n"
	"         tide.emit{ type = 'quiet', subject = key, data = { n = data.n } }\n"
	"       end } })\n"
	"tide.on('tx', function(ev)\n"
	"  if ev.data.v % 37 == 0 then error('thirty-seven') end\n"
	"  if tide.once('k' .. (ev.data.v % 50)) then\n"
	"    tide.emit{ type = 'first', subject = ev.subject, data = { v = ev.data.v } }\n"
	"  end\n"
	"end, { name = 'picky', from = 'beginning', retries = 1, backoff = 0.05,\n"
	"       ordered = true })\n"
	"tide.on('alert', function(ev)\n"
	"  tide.emit{ type = 'echo', subject = ev.subject, data = { n = ev.data.n } }\n"
	"end, { name = 'echo', from = 'beginning' })\n";

static const char *const mixed_names[] = { "count", "picky", "echo" };

/* Wait until every consumer of @p names (@p n) is at the end of the log
 * and has been written there. */
static void
settle(rig *r, const char *const *names, size_t n)
{
	int64_t deadline = th_ms() + 30000;

	for (size_t k = 0; k < n; k++) {
		uint64_t ev, last, cp;
		for (;;) {
			ck_assert_msg(th_ms() < deadline, "consumer %s did not catch up", names[k]);
			if (th_log_state(r->data, names[k], &ev, &last, &cp) == 0 && cp == last)
				break;
			th_pause();
		}
	}
}

static int
by_line(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Lines of @p text sorted (it is modified and freed; the result is new). */
static char *
sorted(char *text)
{
	char **v = NULL;
	size_t n = 0, cap = 0;
	sbuf b = { 0 };

	for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
		if (n == cap) {
			cap = cap ? 2 * cap : 64;
			v = realloc(v, cap * sizeof *v);
			ck_assert_ptr_nonnull(v);
		}
		v[n++] = line;
	}
	qsort(v, n, sizeof *v, by_line);
	for (size_t k = 0; k < n; k++)
		sb_printf(&b, "%s\n", v[k]);
	free(v);
	free(text);
	return sb_take(&b);
}

/* The dead letters of @p data as "consumer seq" lines, sorted. */
static char *
dead_letters(const char *data)
{
	static char out[65536];
	sbuf b = { 0 };

	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' dlq list --data '%s'", TIDE_BIN, data), 0);
	for (char *line = strtok(out, "\n"); line != NULL; line = strtok(NULL, "\n")) {
		const char *c = strstr(line, "\"consumer\":\""), *s = strstr(line, "\"seq\":");
		ck_assert_msg(c != NULL && s != NULL, "%s", line);
		sb_printf(&b, "%.*s %ld\n", (int)strcspn(c + 12, "\""), c + 12,
			  strtol(s + 6, NULL, 10));
	}
	return sorted(sb_take(&b));
}

/* The same events, in the same batches, with a kill after the second. */
static void
feed_mixed(rig *r)
{
	uint64_t seed = 20261204;
	int id = 0, minute = 0;

	rig_start(r);
	for (int batch = 0; batch < 5; batch++) {
		sbuf b = { 0 };
		int n = 150 + 40 * batch;
		for (int i = 0; i < n; i++) {
			char subject[16], data[32];
			snprintf(subject, sizeof subject, "s%d", (int)th_rand_range(&seed, 0, 30));
			snprintf(data, sizeof data, "{\"v\":%d}", id);
			minute += (int)th_rand_range(&seed, 0, 2);
			event(&b, ++id, "tx", subject, minute, data);
		}
		rig_publish(r, sb_take(&b), "count");
		settle(r, mixed_names, 3);
		if (batch == 1) {
			rig_kill(r);
			rig_start(r);
		}
	}
	settle(r, mixed_names, 3);
	rig_stop(r);
}

START_TEST(thread_and_engine_thread_agree)
{
	rig on, off;
	char *a, *b, *log;

	rig_init(&off, mixed_script);
	off.extra = "--set consumer_thread=off";
	feed_mixed(&off);
	rig_init(&on, mixed_script);
	on.extra = "--set consumer_thread=always -v";
	feed_mixed(&on);

	log = th_slurp(on.d.log);
	ck_assert_ptr_nonnull(log);
	ck_assert_msg(strstr(log, "the consumers run on a thread of their own") != NULL, "%s", log);
	free(log);
	log = th_slurp(off.d.log);
	ck_assert_ptr_null(strstr(log, "a thread of their own"));
	free(log);

	a = sorted(log_emits(off.data));
	b = sorted(log_emits(on.data));
	ck_assert_int_gt(th_count(a, "\"alert\""), 50);
	ck_assert_int_gt(th_count(a, "\"echo\""), 50);
	ck_assert_int_gt(th_count(a, "\"quiet\""), 20);
	ck_assert_int_eq(th_count(a, "\"first\""), 50);
	same_lines(b, a);
	free(a);
	free(b);
	a = dead_letters(off.data);
	b = dead_letters(on.data);
	ck_assert_int_gt(th_count(a, "picky"), 10);
	same_lines(b, a);
	free(a);
	free(b);
}
END_TEST

/* A map of 1 MiB grows many times while the consumers read on their
 * thread: each growth waits for them to stop, and none is lost. */
START_TEST(map_grows_while_they_read)
{
	static const char script[] =
		"local tide = require 'tide'\n"
		"tide.on('tx', function(ev, st)\n"
		"  st.n = (st.n or 0) + 1\n"
		"  if st.n % 10 == 0 then\n"
		"    tide.emit{ type = 'tenth', subject = ev.subject, data = { n = st.n } }\n"
		"  end\n"
		"end, { name = 'count', key = 'subject', from = 'beginning' })\n";
	static const char *const names[] = { "count" };
	rig r;
	static char out[8192];
	const char *map;
	int id = 0;

	rig_init(&r, script);
	r.extra = "--set consumer_thread=always --set map_size=1M";
	rig_start(&r);
	for (int batch = 0; batch < 6; batch++) {
		sbuf b = { 0 };
		for (int i = 0; i < 2000; i++) {
			char subject[16], data[600];
			snprintf(subject, sizeof subject, "k%d", i % 100);
			snprintf(data, sizeof data, "{\"pad\":\"%0500d\"}", i);
			event(&b, ++id, "tx", subject, batch * 20 + i / 100, data);
		}
		rig_publish(&r, sb_take(&b), "count");
	}
	settle(&r, names, 1);
	rig_stop(&r);
	/* grown from 1 MiB, proactively, in the turns' beginnings */
	ck_assert_int_eq(th_sh(out, sizeof out, "'%s' stat --data '%s'", TIDE_BIN, r.data), 0);
	map = strstr(out, "(map ");
	ck_assert_msg(map != NULL && strtod(map + 5, NULL) >= 8 && strstr(map, "MiB") != NULL, "%s",
		      out);
	/* 12,000 events on 100 keys: 120 each, a tenth at every 10th */
	ck_assert_int_eq(th_log_count(r.data, "--type tenth"), 1200);
}
END_TEST

Suite *
cthread_suite(void)
{
	Suite *s = suite_create("cthread");
	TCase *tc = rules_tcase(s, "thread");

	tcase_set_timeout(tc, 180);
	tcase_add_test(tc, thread_and_engine_thread_agree);
	tcase_add_test(tc, map_grows_while_they_read);
	return s;
}
