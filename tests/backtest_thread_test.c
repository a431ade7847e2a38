/*
 * backtest_thread_test.c - tide_backtest() on threads, as a stranger
 * calls it (only <tide.h>): the variants of a sweep take each batch on
 * threads of their own while the next batch is read.  Whatever the
 * threads, every variant must report what it reports on one thread.
 *
 * Run it under ThreadSanitizer with ./setup.sh tsan.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <tide.h>

#define CHECK(cond) \
	do { \
		if (!(cond)) { \
			fprintf(stderr, "backtest_thread_test: %s:%d: %s failed\n", __FILE__, \
				__LINE__, #cond); \
			exit(1); \
		} \
	} while (0)

/* More than one batch (65,536 events), so that a batch is read while the
 * one before is taken. */
#define EVENTS 140000
#define VARIANTS 3

/* What one run reported, per variant (in the order of the sweep). */
typedef struct seen {
	uint64_t emitted[VARIANTS];
	uint64_t sum[VARIANTS]; /* of the emitted events' seqs: their places */
	uint64_t inputs[VARIANTS];
	double f1[VARIANTS];
	int variants;
} seen;

static int
variant_of(const char *v)
{
	static const char *const names[VARIANTS] = { "limit=100", "limit=300", "limit=450" };

	for (int k = 0; v != NULL && k < VARIANTS; k++)
		if (strcmp(v, names[k]) == 0)
			return k;
	return -1;
}

static void
on_item(void *ud, const tide_backtest_item *it)
{
	seen *s = ud;
	int k = variant_of(it->variant);

	CHECK(k >= 0);
	switch (it->kind) {
	case TIDE_BACKTEST_EMIT:
		s->emitted[k]++;
		s->sum[k] += tide_event_seq(it->ev);
		break;
	case TIDE_BACKTEST_SCORE:
		if (it->consumer[0] == '\0')
			s->f1[k] = it->f1;
		break;
	case TIDE_BACKTEST_DONE:
		s->inputs[k] = it->count;
		s->variants++;
		break;
	default: break;
	}
}

/* The same, with no sweep: no variant named, all counted as the first. */
static void
on_single(void *ud, const tide_backtest_item *it)
{
	seen *s = ud;

	CHECK(it->variant == NULL);
	if (it->kind == TIDE_BACKTEST_EMIT) {
		s->emitted[0]++;
		s->sum[0] += tide_event_seq(it->ev);
	} else if (it->kind == TIDE_BACKTEST_DONE) {
		s->inputs[0] = it->count;
	}
}

static void
run(const char *script, const char *input, unsigned threads, seen *s)
{
	const char *scripts[] = { script, NULL };
	const char *sweeps[] = { "limit=100,300,450", NULL };
	tide_backtest_opts o;

	memset(&o, 0, sizeof o);
	memset(s, 0, sizeof *s);
	o.scripts = scripts;
	o.input = input;
	o.sweeps = sweeps;
	o.threads = threads;
	o.label = "data.is_fraud";
	o.alerts = "alert.*";
	if (tide_backtest(&o, on_item, s) != TIDE_OK) {
		fprintf(stderr, "backtest_thread_test: %s\n", tide_errmsg());
		exit(1);
	}
	CHECK(s->variants == VARIANTS);
}

int
main(void)
{
	char dir[] = "/tmp/tide-btt-XXXXXX", script[128], input[128];
	seen one, two, single;
	FILE *f;

	/* mkdtemp() replaces the six X */
	CHECK(mkdtemp(dir) != NULL);
	snprintf(script, sizeof script, "%s/r.lua", dir);
	snprintf(input, sizeof input, "%s/in.ndjson", dir);
	CHECK((f = fopen(script, "w")) != NULL);
	fputs("local tide = require 'tide'\n"
	      "local LIMIT = tide.param('limit', 450)\n"
	      "tide.on('tx', function(ev)\n"
	      "  if ev.data.amount > LIMIT then\n"
	      "    tide.emit{ type = 'alert.big', subject = ev.subject, data = { a = "
	      "ev.data.amount "
	      "} }\n"
	      "  end\n"
	      "end, { name = 'big' })\n",
	      f);
	CHECK(fclose(f) == 0);
	CHECK((f = fopen(input, "w")) != NULL);
	for (int i = 0; i < EVENTS; i++)
		fprintf(f,
			"{\"specversion\":\"1.0\",\"id\":\"t%d\",\"source\":\"/g\",\"type\":\"tx\","
			"\"subject\":\"c%d\",\"data\":{\"amount\":%d,\"is_fraud\":%s}}\n",
			i, i % 1000, (i * 7919) % 500, (i * 7919) % 500 > 400 ? "true" : "false");
	CHECK(fclose(f) == 0);

	run(script, input, 1, &one);
	run(script, input, 2, &two);
	for (int k = 0; k < VARIANTS; k++) {
		CHECK(one.inputs[k] == EVENTS);
		CHECK(one.emitted[k] > 0);
		CHECK(two.inputs[k] == one.inputs[k]);
		CHECK(two.emitted[k] == one.emitted[k]);
		CHECK(two.sum[k] == one.sum[k]);
		CHECK(two.f1[k] == one.f1[k]);
	}
	CHECK(one.emitted[0] > one.emitted[1] && one.emitted[1] > one.emitted[2]);

	/* no sweep: one variant, taking each batch while the next is read */
	{
		const char *scripts[] = { script, NULL };
		const char *sets[] = { "limit=300", NULL };
		tide_backtest_opts o;
		memset(&o, 0, sizeof o);
		memset(&single, 0, sizeof single);
		o.scripts = scripts;
		o.input = input;
		o.sets = sets;
		CHECK(tide_backtest(&o, on_single, &single) == TIDE_OK);
		CHECK(single.emitted[0] == one.emitted[1]);
		CHECK(single.sum[0] == one.sum[1]);
		CHECK(single.inputs[0] == EVENTS);
	}
	unlink(script);
	unlink(input);
	rmdir(dir);
	puts("backtest_thread_test: ok");
	return 0;
}
