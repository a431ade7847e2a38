/*
 * test_turns.c - rules in process, turn by turn as the engine runs them
 * (rules_rig.h's urig): aborted turns and a full map that take the rules
 * back to their last write, damaged records, the cache's bound, timers
 * that must not loop, and consumers that write their work only now and
 * then while busy.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rules_rig.h"

static const char seen_script[] =
	"local tide = require 'tide'\n"
	"tide.on('m.*', function(ev, st)\n"
	"  st.n = (st.n or 0) + 1\n"
	"  tide.emit{ type = 'out.seen', subject = ev.subject, data = { id = ev.id, n = st.n } }\n"
	"end, { name = 'seen', key = 'subject', from = 'beginning' })\n";

/* A rule's first turn aborted: its clock goes back to where the log has
 * it (nowhere yet), or the turn run again finds its events late. */
START_TEST(aborted_first_turn_resets_the_clock)
{
	urig u;
	sbuf b = { 0 };
	char *got;

	u_open(&u, seen_script, 0);
	for (int i = 1; i <= 4; i++)
		event(&b, i, "m.x", "k", i, "{}");
	u_publish(&u, sb_take(&b));
	u_abort_turn(&u);
	u_run(&u);
	u_close(&u);
	got = emitted(u.data, "out.seen");
	ck_assert_str_eq(got, "k {\"id\":\"e1\",\"n\":1}\n"
			      "k {\"id\":\"e2\",\"n\":2}\n"
			      "k {\"id\":\"e3\",\"n\":3}\n"
			      "k {\"id\":\"e4\",\"n\":4}\n");
	free(got);
}
END_TEST

/* Fill the map in the open write transaction until not one page is left
 * (through nested transactions, so that the one that fails leaves the
 * turn's intact): the next write of the turn finds the map full. */
static void
u_fill(urig *u)
{
	static char junk[16000];
	static const size_t sizes[] = { sizeof junk, 3000, 400, 40 };
	int n = 0;

	for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++)
		for (;;) {
			MDB_txn *child;
			char key[32];
			MDB_val kv, v = { sizes[k], junk };
			int rc;
			ck_assert_int_eq(mdb_txn_begin(u->log->env, u->log->txn, 0, &child), 0);
			kv.mv_size = (size_t)snprintf(key, sizeof key, "junk%08d", n++);
			kv.mv_data = key;
			if ((rc = mdb_put(child, u->log->meta, &kv, &v, 0)) != 0) {
				ck_assert_int_eq(rc, MDB_MAP_FULL);
				mdb_txn_abort(child);
				break;
			}
			ck_assert_int_eq(mdb_txn_commit(child), 0);
		}
}

/* A turn whose write transaction is full before the consumers run: they
 * must report the map full (TIDE_EFULL, so that the engine grows it and
 * runs the turn again), not a failure of a handler or of the log. */
static void
u_full_turn(urig *u)
{
	char err[TIDEI_ERRLEN] = "";
	int more, rc;

	ck_assert_int_eq(tidei_log_begin(u->log), TIDE_OK);
	u_fill(u);
	rc = tidei_consumers_run(u->cs, u->log, &more, err);
	tidei_log_abort(u->log);
	tidei_consumers_reload(u->cs, u->log);
	ck_assert_msg(rc == TIDE_EFULL, "the turn failed with %d: %s", rc, err);
}

/* What the rule counted as failed and what is parked or waiting: nothing
 * in these tests. */
static void
u_no_failures(urig *u, const char *name)
{
	const tidei_consumer *c = tidei_consumers_find(u->cs, name);
	tidei_rule_stat st;
	MDB_txn *txn;

	ck_assert_ptr_nonnull(c);
	ck_assert_uint_eq(c->failed, 0);
	ck_assert_uint_eq(c->npend, 0);
	ck_assert_int_eq(tidei_log_read_begin(u->log, &txn), TIDE_OK);
	ck_assert_int_eq(tidei_rule_stat_read(u->log, txn, name, &st, 0), TIDE_OK);
	tidei_log_read_end(u->log);
	ck_assert_uint_eq(st.failed, 0);
}

static const char full_script[] =
	"local tide = require 'tide'\n"
	"tide.on('m.*', function(ev, st)\n"
	"  if ev.type == 'm.start' then tide.timer.every('tick', '1m') end\n"
	"  if ev.type == 'm.later' then tide.timer.after('later', '1h', { id = ev.id }) end\n"
	"end, { name = 'full', key = 'subject', from = 'beginning',\n"
	"       timers = {\n"
	"         tick = function(key, data, st)\n"
	"           st.ticks = (st.ticks or 0) + 1\n"
	"           tide.emit{ type = 'out.tick', subject = key, data = { n = st.ticks } }\n"
	"         end,\n"
	"         later = function(key, data, st)\n"
	"           tide.emit{ type = 'out.later', subject = key, data = data }\n"
	"         end } })\n"
	"tide.on('o.*', function(ev)\n"
	"  local ok, first = pcall(tide.once, ev.id) -- caught, the turn fails all the same\n"
	"  if ok and first then tide.emit{ type = 'out.once', data = { id = ev.id } } end\n"
	"end, { name = 'once', from = 'beginning' })\n"
	"tide.on('w.*', function(ev, st) end,\n"
	"  { name = 'wins', key = 'subject', from = 'beginning',\n"
	"    windows = { t = { tumbling = '10m' } },\n"
	"    on_close = function(key, name, a, st)\n"
	"      tide.emit{ type = 'out.closed', subject = key, data = { n = a.count } }\n"
	"    end })\n";

/* The map fills up while a timer is taken out and set again, while a
 * handler's timer is stored, and while a window's is: each time the turn
 * is run again in a larger map, and everything happens once. */
START_TEST(full_map_in_timers_runs_the_turn_again)
{
	urig u;
	sbuf b = { 0 };
	char *got;

	u_open(&u, full_script, 1 << 20);
	event(&b, 1, "m.start", "k", 0, "{}");
	u_publish(&u, sb_take(&b));
	u_run(&u);
	/* the clock passes the tick: it is taken out and set again */
	event(&b, 2, "m.noise", "k", 5, "{}");
	u_publish(&u, sb_take(&b));
	u_full_turn(&u);
	u_run(&u);
	/* a handler sets a timer */
	event(&b, 3, "m.later", "k", 6, "{}");
	u_publish(&u, sb_take(&b));
	u_full_turn(&u);
	u_run(&u);
	/* a window opens: its timer is set inside the call */
	event(&b, 4, "w.x", "k", 7, "{}");
	u_publish(&u, sb_take(&b));
	u_full_turn(&u);
	u_run(&u);
	/* a handler claims a key with tide.once */
	event(&b, 7, "o.x", "k", 7, "{}");
	u_publish(&u, sb_take(&b));
	u_full_turn(&u);
	u_run(&u);
	event(&b, 5, "m.noise", "k", 80, "{}");
	event(&b, 6, "w.x", "k", 80, "{}");
	u_publish(&u, sb_take(&b));
	u_run(&u);
	u_no_failures(&u, "full");
	u_no_failures(&u, "wins");
	ck_assert_uint_eq(tidei_consumers_find(u.cs, "once")->failed, 0);
	u_close(&u);
	got = emitted(u.data, "out.tick");
	/* due at 1, 6 and 7: at 5, 6 and 80 */
	ck_assert_str_eq(got, "k {\"n\":1}\nk {\"n\":2}\nk {\"n\":3}\n");
	free(got);
	got = emitted(u.data, "out.later");
	ck_assert_str_eq(got, "k {\"id\":\"e3\"}\n");
	free(got);
	got = emitted(u.data, "out.closed");
	ck_assert_str_eq(got, "k {\"n\":1}\n");
	free(got);
	got = emitted(u.data, "out.once");
	ck_assert_str_eq(got, "- {\"id\":\"e7\"}\n");
	free(got);
}
END_TEST

/* An event kept by a handler that then fails expires all the same: read
 * later, it raises instead of reading memory that is gone. */
START_TEST(event_of_a_failed_call_expires)
{
	static const char script[] =
		"local tide = require 'tide'\n"
		"local kept = {}\n"
		"tide.on('m.first', function(ev, st)\n"
		"  kept.keyed = ev\n"
		"  error('fails')\n"
		"end, { name = 'keyed', key = 'subject', from = 'beginning', retries = 0 })\n"
		"tide.on('m.first', function(ev, st)\n"
		"  kept.keyless = ev\n"
		"  error('fails')\n"
		"end, { name = 'keyless', key = 'data.none', from = 'beginning', retries = 0 })\n"
		"tide.on('m.second', function(ev)\n"
		"  local a = pcall(function() return kept.keyed.id end)\n"
		"  local b = pcall(function() return kept.keyless.id end)\n"
		"  tide.emit{ type = 'out.read', data = { keyed = a, keyless = b } }\n"
		"end, { name = 'reader', from = 'beginning' })\n";
	urig u;
	sbuf b = { 0 };
	char *got;

	u_open(&u, script, 0);
	event(&b, 1, "m.first", "k", 1, "{}");
	u_publish(&u, sb_take(&b));
	u_run(&u);
	event(&b, 2, "m.second", "k", 2, "{}");
	u_publish(&u, sb_take(&b));
	u_run(&u);
	u_close(&u);
	got = emitted(u.data, "out.read");
	ck_assert_str_eq(got, "- {\"keyed\":false,\"keyless\":false}\n");
	free(got);
}
END_TEST

/* A timer's handler that sets a timer at or before the clock (to run "as
 * soon as possible") does not make the turn fire it again and again: it
 * falls due at the next event that moves the clock. */
START_TEST(timer_set_in_the_past_by_a_timer_waits)
{
	static const char script[] =
		"local tide = require 'tide'\n"
		"tide.on('m.*', function(ev, st)\n"
		"  if ev.type == 'm.start' then tide.timer.after('again', '1m') end\n"
		"end, { name = 'loop', key = 'subject', from = 'beginning',\n"
		"       timers = { again = function(key, data, st)\n"
		"         st.n = (st.n or 0) + 1\n"
		"         tide.emit{ type = 'out.again', subject = key,\n"
		"                    data = { n = st.n, at = tide.clock() // 60000000000 - "
		"29453760 } }\n"
		"         if st.n % 2 == 1 then tide.timer.after('again', 0)\n"
		"         else tide.timer.at('again', 0) end\n"
		"       end } })\n";
	urig u;
	sbuf b = { 0 };
	char *got;

	u_open(&u, script, 0);
	event(&b, 1, "m.start", "k", 0, "{}");
	event(&b, 2, "m.x", "k", 5, "{}");
	event(&b, 3, "m.x", "k", 5, "{}");
	event(&b, 4, "m.x", "k", 10, "{}");
	event(&b, 5, "m.x", "k", 20, "{}");
	u_publish(&u, sb_take(&b));
	u_run(&u);
	u_close(&u);
	got = emitted(u.data, "out.again");
	ck_assert_str_eq(got,
			 "k {\"at\":5,\"n\":1}\nk {\"at\":10,\"n\":2}\nk {\"at\":20,\"n\":3}\n");
	free(got);
}
END_TEST

/* Event times at the ends of what a time can be (1677 and 2262), with
 * lateness and a recurring timer whose period is near that span: due times
 * and watermarks saturate instead of wrapping around. */
START_TEST(extreme_times_do_not_wrap)
{
	static const char script[] =
		"local tide = require 'tide'\n"
		"tide.on('a', function(ev, st)\n"
		"  tide.emit{ type = 'out.a', data = { id = ev.id } }\n"
		"end, { name = 'late', key = 'subject', from = 'beginning', lateness = '1h' })\n"
		"tide.on('b', function(ev, st)\n"
		"  if ev.id == 'y1' then tide.timer.every('t', '14880w') end\n"
		"end, { name = 'every', key = 'subject', from = 'beginning',\n"
		"       timers = { t = function(key, data, st)\n"
		"         tide.emit{ type = 'out.t', data = { key = key } }\n"
		"       end } })\n";
	static const char *const lines[][3] = {
		{ "x1", "a", "1677-09-21T00:12:45Z" }, { "x2", "a", "2026-01-01T00:00:00Z" },
		{ "y1", "b", "1700-01-01T00:00:00Z" }, { "y2", "b", "2026-01-01T00:00:00Z" },
		{ "y3", "b", "2262-04-11T23:47:15Z" },
	};
	urig u;
	sbuf b = { 0 };
	char *got;

	for (size_t k = 0; k < sizeof lines / sizeof lines[0]; k++)
		sb_printf(&b,
			  "{\"specversion\":\"1.0\",\"id\":\"%s\",\"source\":\"/test\","
			  "\"type\":\"%s\",\"subject\":\"k\",\"time\":\"%s\"}\n",
			  lines[k][0], lines[k][1], lines[k][2]);
	u_open(&u, script, 0);
	u_publish(&u, sb_take(&b));
	u_run(&u);
	u_close(&u);
	got = emitted(u.data, "out.a");
	ck_assert_str_eq(got, "- {\"id\":\"x1\"}\n- {\"id\":\"x2\"}\n");
	free(got);
	got = emitted(u.data, "out.t"); /* due in 1985, then never */
	ck_assert_int_eq(th_count(got, "\n"), 1);
	free(got);
}
END_TEST

/* ttl forgets a key that kept only windows (its handler keeps no state),
 * windows and all, as it forgets one with a state. */
START_TEST(ttl_forgets_keys_with_only_windows)
{
	static const char script[] =
		"local tide = require 'tide'\n"
		"tide.on('m.*', function(ev, st) end,\n"
		"  { name = 'wins', key = 'subject', from = 'beginning', ttl = '1h',\n"
		"    windows = { s = { sliding = '30m' }, n = { last = 5 } } })\n";
	urig u;
	sbuf b = { 0 };
	tidei_rule_stat st;
	MDB_txn *txn;

	u_open(&u, script, 0);
	event(&b, 1, "m.x", "k1", 0, "{}");
	event(&b, 2, "m.x", "k2", 50, "{}");
	event(&b, 3, "m.x", "k3", 100, "{}");
	event(&b, 4, "m.x", "k2", 101, "{}");
	event(&b, 5, "m.x", "k3", 200, "{}");
	u_publish(&u, sb_take(&b));
	u_run(&u);
	ck_assert_int_eq(tidei_log_read_begin(u.log, &txn), TIDE_OK);
	ck_assert_int_eq(tidei_rule_stat_read(u.log, txn, "wins", &st, 1), TIDE_OK);
	tidei_log_read_end(u.log);
	u_close(&u);
	/* k1 expired at 60 and k2 at 161, k3 is left with its expiry */
	ck_assert_uint_eq(st.keys, 1);
	ck_assert_uint_eq(st.timers, 1);
}
END_TEST

/* A timer belongs to the key in hand: for an event without a key the
 * call says so instead of dropping the timer. */
START_TEST(timer_without_a_key_is_refused)
{
	static const char script[] =
		"local tide = require 'tide'\n"
		"tide.on('m.*', function(ev, st)\n"
		"  local ok, err = pcall(tide.timer.after, 't', '1m')\n"
		"  tide.emit{ type = 'out.timer', data = { ok = ok, err = err or 'none' } }\n"
		"end, { name = 'cards', key = 'data.card', from = 'beginning',\n"
		"       timers = { t = function() end } })\n";
	urig u;
	sbuf b = { 0 };
	char *got;

	u_open(&u, script, 0);
	event(&b, 1, "m.x", "k", 1, "{\"card\":\"c1\"}");
	event(&b, 2, "m.x", "k", 2, "{}");
	u_publish(&u, sb_take(&b));
	u_run(&u);
	u_close(&u);
	got = emitted(u.data, "out.timer");
	ck_assert_str_eq(got,
			 "- {\"err\":\"none\",\"ok\":true}\n"
			 "- {\"err\":\"tide.timer.after: this event has no key (option 'key'): "
			 "a timer belongs to a key\",\"ok\":false}\n");
	free(got);
}
END_TEST

/* A sequence whose steps' types are a type and one below it ("a.b" then
 * "a.b.c"): the rule listens to both. */
START_TEST(sequence_of_a_type_and_its_subtype)
{
	static const char script[] =
		"local pattern = require 'tide.pattern'\n"
		"pattern.sequence{ name = 'down', within = '10m', from = 'beginning',\n"
		"  steps = { { type = 'a.b' }, { type = 'a.b.c' } }, emit = 'out.down' }\n"
		"pattern.sequence{ name = 'up', within = '10m', from = 'beginning',\n"
		"  steps = { { type = 'a.b.c' }, { type = 'a.b' } }, emit = 'out.up' }\n";
	urig u;
	sbuf b = { 0 };
	char *got;

	u_open(&u, script, 0);
	event(&b, 1, "a.b", "k", 1, "{}");
	event(&b, 2, "a.b.c", "k", 2, "{}");
	event(&b, 3, "a.b", "k", 3, "{}");
	u_publish(&u, sb_take(&b));
	u_run(&u);
	u_close(&u);
	got = emitted(u.data, "out.down");
	ck_assert_str_eq(got, "k {\"events\":[\"e1\",\"e2\"],\"pattern\":\"down\"}\n");
	free(got);
	got = emitted(u.data, "out.up");
	ck_assert_str_eq(got, "k {\"events\":[\"e2\",\"e3\"],\"pattern\":\"up\"}\n");
	free(got);
}
END_TEST

/* Write @p n bytes of @p v under key @p k of the rules' database. */
static void
u_put_rules(urig *u, const char *k, size_t kn, const void *v, size_t n)
{
	MDB_val key = { kn, (void *)k }, val = { n, (void *)v };

	ck_assert_int_eq(tidei_log_begin(u->log), TIDE_OK);
	ck_assert_int_eq(mdb_put(u->log->txn, u->log->rules, &key, &val, 0), 0);
	ck_assert_int_eq(tidei_log_commit(u->log), TIDE_OK);
}

/* What the consumers cannot read back when they start is named in the
 * error. */
START_TEST(damaged_records_are_named_at_start)
{
	static const char script[] = "local tide = require 'tide'\n"
				     "local seen = tide.shared('seen', { n = 0 })\n"
				     "tide.on('m.*', function(ev, st) seen.n = seen.n + 1 end,\n"
				     "  { name = 'count', key = 'subject', from = 'beginning' })\n";
	urig u;
	char err[TIDEI_ERRLEN];

	u_open(&u, script, 0);
	u_put_rules(&u, "Gseen", 5, "\xff\xff", 2);
	ck_assert_int_ne(tidei_consumers_start(u.cs, u.log, u.log->committed, err), TIDE_OK);
	ck_assert_msg(strstr(err, "shared table 'seen' is damaged") != NULL, "%s", err);
	u_put_rules(&u, "Gseen", 5, "\x80", 1); /* an empty map */
	u_put_rules(&u, "Mcount", 6, "\x93\x01\x02\x03", 4);
	ck_assert_int_ne(tidei_consumers_start(u.cs, u.log, u.log->committed, err), TIDE_OK);
	ck_assert_msg(strstr(err, "cannot read the clock of rule 'count'") != NULL, "%s", err);
	u_close(&u);
}
END_TEST

/* An event held back behind a failing one of its subject, then released,
 * goes to the handler it is for, whatever the last event offered before
 * was (here a late one, held back too). */
START_TEST(released_event_goes_to_its_handler)
{
	static const char script[] =
		"local tide = require 'tide'\n"
		"local failed = false\n"
		"tide.on('m.*', function(ev, st)\n"
		"  if ev.id == 'e1' and not failed then failed = true; error('once') end\n"
		"  tide.emit{ type = 'out.main', data = { id = ev.id } }\n"
		"end, { name = 'r', key = 'subject', from = 'beginning', backoff = 0,\n"
		"       late = function(ev, st)\n"
		"         tide.emit{ type = 'out.late', data = { id = ev.id } }\n"
		"       end })\n";
	urig u;
	sbuf b = { 0 };
	char *got;

	u_open(&u, script, 0);
	event(&b, 1, "m.x", "a", 10, "{}"); /* fails once */
	event(&b, 2, "m.x", "a", 20, "{}"); /* waits behind e1 */
	event(&b, 3, "m.x", "a", 5, "{}");  /* late, waits too */
	u_publish(&u, sb_take(&b));
	u_run(&u);
	u_close(&u);
	/* e3 is not looked at: a late event tried again is not told apart */
	got = emitted(u.data, "out.main");
	ck_assert_msg(strstr(got, "e2") != NULL, "%s", got);
	free(got);
	got = emitted(u.data, "out.late");
	ck_assert_msg(strstr(got, "e2") == NULL, "%s", got);
	free(got);
}
END_TEST

/* More keys than a rule keeps decoded: the cache is emptied after a
 * commit and what it held is read back from the log. */
START_TEST(cache_trimmed_past_its_bound)
{
	static const char script[] =
		"local tide = require 'tide'\n"
		"tide.on('m.*', function(ev, st)\n"
		"  st.n = (st.n or 0) + 1\n"
		"  if st.n > 1 then tide.emit{ type = 'out.again', subject = ev.subject,\n"
		"                              data = { n = st.n } } end\n"
		"end, { name = 'many', key = 'subject', from = 'beginning' })\n";
	urig u;
	sbuf b = { 0 };
	char subject[32], *got;
	int n = TIDEI_RULE_CACHE + 100;

	u_open(&u, script, 0);
	for (int i = 0; i < n; i++) {
		snprintf(subject, sizeof subject, "k%d", i);
		event(&b, i, "m.x", subject, 1, "{}");
	}
	u_publish(&u, sb_take(&b));
	u_run(&u);
	event(&b, n, "m.x", "k1", 2, "{}");
	event(&b, n + 1, "m.x", "k1", 2, "{}");
	event(&b, n + 2, "m.x", "k49999", 2, "{}");
	u_publish(&u, sb_take(&b));
	u_run(&u);
	u_close(&u);
	got = emitted(u.data, "out.again");
	ck_assert_str_eq(got, "k1 {\"n\":2}\nk1 {\"n\":3}\nk49999 {\"n\":2}\n");
	free(got);
}
END_TEST

/* ------------------------------------------------------------------------
 * Busy consumers write their work now and then
 * ------------------------------------------------------------------------ */

/* Each event counts its key, feeds a window and (re)sets a timer that
 * reports what the key had when it went quiet. */
static const char busy_script[] =
	"local tide = require 'tide'\n"
	"tide.on('m.*', function(ev, st)\n"
	"  st.n = (st.n or 0) + 1\n"
	"  tide.emit{ type = 'out.seen', subject = ev.subject,\n"
	"             data = { id = ev.id, n = st.n, w = tide.window('w').sum } }\n"
	"  tide.timer.after('quiet', '3m', { n = st.n })\n"
	"end, { name = 'busy', key = 'subject', from = 'beginning',\n"
	"       windows = { w = { sliding = '10m', value = 'data.v', aggregates = { 'sum' } } },\n"
	"       timers = { quiet = function(key, data, st)\n"
	"         tide.emit{ type = 'out.quiet', subject = key,\n"
	"                    data = { n = data.n, now = st.n } }\n"
	"       end } })\n";

#define BUSY_EVENTS 3000

static char *
busy_events(void)
{
	sbuf b = { 0 };
	uint64_t seed = 7;

	for (int i = 0; i < BUSY_EVENTS; i++) {
		char subject[16], d[32];
		snprintf(subject, sizeof subject, "k%d", (int)th_rand_range(&seed, 0, 39));
		snprintf(d, sizeof d, "{\"v\":%d}", i % 7);
		event(&b, i, "m.x", subject, i / 8, d);
	}
	return sb_take(&b);
}

/* The checkpoint of @p name as stored (0 if none). */
static uint64_t
stored_checkpoint(urig *u, const char *name)
{
	MDB_txn *txn;
	uint64_t seq = 0;
	int found = 0;

	ck_assert_int_eq(tidei_log_read_begin(u->log, &txn), TIDE_OK);
	ck_assert_int_eq(tidei_log_checkpoint_get(u->log, txn, name, &seq, &found), TIDE_OK);
	tidei_log_read_end(u->log);
	return found ? seq : 0;
}

/* A busy turn appends its emits but leaves the rule's state, timers and
 * checkpoint in memory; the next quiet turn writes them.  Lost in a crash
 * before that write, the work is done again from the last write: the same
 * emits, none twice, the same timers firing. */
START_TEST(busy_turns_write_later_and_a_crash_goes_back)
{
	urig ref, u;
	char err[TIDEI_ERRLEN];
	char *want_seen, *want_quiet, *got;
	uint64_t head;
	int more = 0;

	u_open(&ref, busy_script, 0);
	u_publish(&ref, busy_events());
	u_run(&ref);
	ck_assert_uint_eq(stored_checkpoint(&ref, "busy"), ref.log->head);
	u_close(&ref);
	want_seen = emitted(ref.data, "out.seen");
	want_quiet = emitted(ref.data, "out.quiet");
	ck_assert_int_eq(th_count(want_seen, "\n"), BUSY_EVENTS);
	ck_assert_int_gt(th_count(want_quiet, "\n"), 50);

	u_open(&u, busy_script, 0);
	/* the busy turn must not find its 2 s up on a slow machine (the
	 * sanitizers, other work): its work waits in memory for a minute */
	u_close(&u);
	u.write_ns = 60000000000ll;
	u_reopen(&u);
	u_publish(&u, busy_events());
	ck_assert_int_eq(tidei_log_begin(u.log), TIDE_OK);
	ck_assert_msg(tidei_consumers_run(u.cs, u.log, &more, err) == TIDE_OK, "%s", err);
	head = u.log->head;
	ck_assert_int_eq(tidei_log_commit(u.log), TIDE_OK);
	tidei_consumers_committed(u.cs);
	ck_assert_int_eq(more, 1);
	ck_assert_uint_gt(head, BUSY_EVENTS + 256); /* its emits are in the log */
	ck_assert_uint_eq(stored_checkpoint(&u, "busy"), 0);
	u_close(&u); /* a crash: nothing more is written */

	u_reopen(&u);
	ck_assert_uint_eq(u.log->head, head);
	u_run(&u);
	ck_assert_uint_eq(stored_checkpoint(&u, "busy"), u.log->head);
	u_close(&u);
	got = emitted(u.data, "out.seen");
	same_lines(got, want_seen);
	free(got);
	got = emitted(u.data, "out.quiet");
	same_lines(got, want_quiet);
	free(got);
	free(want_seen);
	free(want_quiet);
}
END_TEST

static const char keys_script[] = "local tide = require 'tide'\n"
				  "tide.on('m.*', function(ev, st) st.n = (st.n or 0) + 1 end,\n"
				  "  { name = 'keys', key = 'subject', from = 'beginning' })\n";

/* @p n events of type m.x, ids from @p first, on @p keys subjects. */
static char *
keyed_events(int first, int n, int keys)
{
	sbuf b = { 0 };

	for (int i = 0; i < n; i++) {
		char subject[16];
		snprintf(subject, sizeof subject, "k%d", i % keys);
		event(&b, first + i, "m.x", subject, 0, "{}");
	}
	return sb_take(&b);
}

/* One turn of the consumers, as the engine runs it; *@p more as it says. */
static void
u_turn(urig *u, int *more)
{
	char err[TIDEI_ERRLEN];

	ck_assert_int_eq(tidei_log_begin(u->log), TIDE_OK);
	ck_assert_msg(tidei_consumers_run(u->cs, u->log, more, err) == TIDE_OK, "%s", err);
	ck_assert_int_eq(tidei_log_commit(u->log), TIDE_OK);
	tidei_consumers_committed(u->cs);
}

/* Past write_ns, a busy rule's write waits until it has handled 8 events
 * per record the write would store: 600 events on 600 keys wait, the
 * same on 3 keys are written; the 600 keys are written once 4,800 events
 * have been handled since the last write. */
START_TEST(busy_rule_over_many_keys_writes_after_enough_events)
{
	urig u;
	int more = 0, turns = 0;
	uint64_t stored;

	u_open(&u, keys_script, 0);
	u_close(&u);
	u.write_ns = 1000000; /* 1 ms: always past it below */
	u_reopen(&u);
	u_publish(&u, keyed_events(0, 600, 3));
	nanosleep(&(struct timespec){ 0, 5000000 }, NULL);
	u_turn(&u, &more);
	ck_assert_uint_eq(stored_checkpoint(&u, "keys"), 600);
	u_close(&u);

	u_open(&u, keys_script, 0);
	u_close(&u);
	u.write_ns = 1000000;
	u_reopen(&u);
	u_publish(&u, keyed_events(0, 600, 600));
	nanosleep(&(struct timespec){ 0, 5000000 }, NULL);
	u_turn(&u, &more);
	ck_assert_int_eq(more, 1);
	ck_assert_uint_eq(stored_checkpoint(&u, "keys"), 0);
	/* 4,200 more on the same keys: written once all are handled (the
	 * turns may end early on a slow machine, and write nothing before) */
	u_publish(&u, keyed_events(600, 4200, 600));
	do {
		u_turn(&u, &more);
		stored = stored_checkpoint(&u, "keys");
		ck_assert_msg(stored == 0 || stored == 4800, "written at %llu",
			      (unsigned long long)stored);
	} while (stored == 0 && ++turns < 200);
	ck_assert_uint_eq(stored, 4800);
	u_close(&u);
}
END_TEST

Suite *
turns_suite(void)
{
	Suite *s = suite_create("turns");
	TCase *tc;

	tc = rules_tcase(s, "turns");
	tcase_add_test(tc, aborted_first_turn_resets_the_clock);
	tcase_add_test(tc, full_map_in_timers_runs_the_turn_again);
	tcase_add_test(tc, event_of_a_failed_call_expires);
	tcase_add_test(tc, timer_without_a_key_is_refused);
	tcase_add_test(tc, damaged_records_are_named_at_start);
	tcase_add_test(tc, released_event_goes_to_its_handler);
	tcase_add_test(tc, cache_trimmed_past_its_bound);
	tcase_add_test(tc, sequence_of_a_type_and_its_subtype);
	tc = rules_tcase(s, "writes");
	tcase_add_test(tc, busy_turns_write_later_and_a_crash_goes_back);
	tcase_add_test(tc, busy_rule_over_many_keys_writes_after_enough_events);
	tc = rules_tcase(s, "loops");
	tcase_set_timeout(tc, 15); /* what failed here never ended */
	tcase_add_test(tc, timer_set_in_the_past_by_a_timer_waits);
	tcase_add_test(tc, extreme_times_do_not_wrap);
	tcase_add_test(tc, ttl_forgets_keys_with_only_windows);
	return s;
}
