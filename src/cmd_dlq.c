/*
 * cmd_dlq.c - `tide dlq`: the dead letters, events a consumer gave up on.
 *
 *   tide dlq list  [--consumer NAME]          one JSON object per line
 *   tide dlq show  SEQ [--consumer NAME]      the same, with the event
 *   tide dlq retry (SEQ | --all) [--consumer NAME]
 *   tide dlq drop  (SEQ | --all) [--consumer NAME]
 *
 * Listing reads the log directly.  Retry and drop change it: directly when
 * no engine runs on the data directory, otherwise by asking the engine on
 * its REP endpoint, so that its consumers see the change at once.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

#include "cli.h"
#include "tide.h"

static const char usage_text[] =
	"usage: tide dlq list [--consumer NAME]\n"
	"       tide dlq show SEQ [--consumer NAME]\n"
	"       tide dlq retry (SEQ | --all) [--consumer NAME]\n"
	"       tide dlq drop (SEQ | --all) [--consumer NAME]\n"
	"\n"
	"Dead letters are events a consumer gave up on after its retries, kept\n"
	"with the error, the script:line that raised it, and the attempts.\n"
	"\n"
	"  list    one JSON object per dead letter (NDJSON)\n"
	"  show    the same, with the whole event\n"
	"  retry   hand them back to their consumer; a dead letter leaves the store\n"
	"          only when its handler succeeds (if no engine runs, at its next start)\n"
	"  drop    delete them\n"
	"\n"
	"options:\n"
	"  -c, --consumer NAME     only this consumer's dead letters\n"
	"      --all               retry or drop every one that matches\n"
	"  -d, --data DIR          data directory (default ./tide-data)\n"
	"      --rep URL           the engine's REP endpoint, if not in DIR/endpoints\n"
	"      --timeout SEC       wait for the engine's answer (default 10)\n"
	"  -h, --help              show this help\n";

typedef struct out_ctx {
	int with_event;
	unsigned long n;
} out_ctx;

static int
print_one(void *ud, const tide_dead_letter *dl)
{
	out_ctx *o = ud;
	yajl_gen g = yajl_gen_alloc(NULL);
	const unsigned char *buf;
	size_t len;
	char when[40];
	time_t sec = (time_t)(dl->failed_at / 1000000000);
	struct tm tm;

	if (g == NULL)
		return 1;
	gmtime_r(&sec, &tm);
	strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
	yajl_gen_map_open(g);
	cli_gen_str(g, "consumer");
	cli_gen_str(g, dl->consumer);
	cli_gen_str(g, "seq");
	yajl_gen_integer(g, (long long)dl->seq);
	if (dl->event != NULL) {
		static const char *const attrs[] = { "type", "id", "source", "subject" };
		for (size_t k = 0; k < sizeof attrs / sizeof *attrs; k++) {
			const char *v = tide_event_attr(dl->event, attrs[k], NULL);
			if (v != NULL) {
				cli_gen_str(g, attrs[k]);
				cli_gen_str(g, v);
			}
		}
	}
	cli_gen_str(g, "attempts");
	yajl_gen_integer(g, dl->attempts);
	cli_gen_str(g, "failed_at");
	cli_gen_str(g, when);
	cli_gen_str(g, "where");
	cli_gen_str(g, dl->where);
	cli_gen_str(g, "error");
	cli_gen_str(g, dl->error);
	cli_gen_str(g, "retrying");
	yajl_gen_bool(g, dl->retrying);
	yajl_gen_map_close(g);
	yajl_gen_get_buf(g, &buf, &len);
	if (o->with_event && dl->event != NULL) {
		const char *json;
		size_t jlen;
		/* splice the event in before the closing brace */
		if (tide_event_json(dl->event, &json, &jlen) == TIDE_OK) {
			fwrite(buf, 1, len - 1, stdout);
			fputs(",\"event\":", stdout);
			fwrite(json, 1, jlen, stdout);
			fputs("}\n", stdout);
		}
	} else {
		fwrite(buf, 1, len, stdout);
		fputc('\n', stdout);
	}
	yajl_gen_free(g);
	o->n++;
	return ferror(stdout) ? 1 : 0;
}

/* Ask the running engine; returns the exit status. */
static int
ask_engine(const cli_client *cl, const char *op, const char *consumer, unsigned long long seq)
{
	yajl_gen g;
	const unsigned char *req;
	size_t len;
	yajl_val v, count;
	int rc;

	if ((g = yajl_gen_alloc(NULL)) == NULL)
		return CLI_FAIL;
	yajl_gen_map_open(g);
	cli_gen_str(g, "command");
	cli_gen_str(g, "dlq");
	cli_gen_str(g, "op");
	cli_gen_str(g, op);
	if (consumer != NULL) {
		cli_gen_str(g, "consumer");
		cli_gen_str(g, consumer);
	}
	if (seq > 0) {
		cli_gen_str(g, "seq");
		yajl_gen_integer(g, (long long)seq);
	}
	yajl_gen_map_close(g);
	yajl_gen_get_buf(g, &req, &len);
	v = cli_ask("dlq", cl, req, len, &rc);
	yajl_gen_free(g);
	if (v == NULL)
		return rc;
	count = yajl_tree_get(v, (const char *[]){ "count", NULL }, yajl_t_number);
	if (count != NULL) {
		long long c = YAJL_GET_INTEGER(count);
		fprintf(stderr, "tide dlq: %s %lld dead letter%s\n",
			strcmp(op, "retry") == 0 ? "retrying" : "dropped", c, c == 1 ? "" : "s");
		rc = c > 0 ? CLI_OK : CLI_FAIL;
		if (c == 0)
			cli_error("dlq", "no dead letters match");
	} else {
		cli_error("dlq", "the engine refused");
		rc = CLI_FAIL;
	}
	yajl_tree_free(v);
	return rc;
}

int
cmd_dlq(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "consumer", required_argument, NULL, 'c' },
		{ "all", no_argument, NULL, 'a' },
		{ "data", required_argument, NULL, 'd' },
		{ "rep", required_argument, NULL, 'R' },
		{ "timeout", required_argument, NULL, 'o' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	cli_client cl = { "./tide-data", NULL, NULL, NULL, 10 };
	const char *consumer = NULL, *action;
	unsigned long long seq = 0;
	int c, all = 0, rc;

	optind = 1;
	while ((c = getopt_long(argc, argv, "c:d:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'c': consumer = optarg; break;
		case 'a': all = 1; break;
		case 'd': cl.data = optarg; break;
		case 'R': cl.rep = optarg; break;
		case 'o': cl.timeout = cli_seconds(optarg); break;
		case 'h': fputs(usage_text, stdout); return CLI_OK;
		default: return cli_try_help("dlq");
		}
	}
	if (optind >= argc) {
		fputs(usage_text, stderr);
		return CLI_USAGE;
	}
	action = argv[optind++];
	if (optind < argc) {
		char *end;
		seq = strtoull(argv[optind], &end, 10);
		if (*end != '\0' || seq == 0 || argv[optind][0] == '-') {
			cli_error("dlq", "'%s' is not an event seq", argv[optind]);
			return CLI_USAGE;
		}
		optind++;
	}
	if (optind < argc || cl.timeout < 0) {
		cli_error("dlq", "unexpected argument '%s'", optind < argc ? argv[optind] : "");
		return CLI_USAGE;
	}

	if (strcmp(action, "list") == 0 || strcmp(action, "show") == 0) {
		out_ctx o = { strcmp(action, "show") == 0, 0 };
		tide_log *log;
		if (o.with_event && seq == 0) {
			cli_error("dlq", "show needs the seq of a dead letter");
			return CLI_USAGE;
		}
		if (tide_log_open(&log, cl.data) != TIDE_OK) {
			cli_error("dlq", "%s", tide_errmsg());
			return CLI_FAIL;
		}
		rc = tide_log_dead_letters(log, consumer, seq, print_one, &o);
		tide_log_close(log);
		if (rc != TIDE_OK) {
			cli_error("dlq", "cannot read %s: %s", cl.data, tide_strerror(rc));
			return CLI_FAIL;
		}
		if (o.with_event && o.n == 0) {
			cli_error("dlq", "no dead letter at seq %llu", seq);
			return CLI_FAIL;
		}
		return fflush(stdout) == 0 ? CLI_OK : CLI_FAIL;
	}
	if (strcmp(action, "retry") == 0 || strcmp(action, "drop") == 0) {
		int op = strcmp(action, "retry") == 0 ? TIDE_DLQ_RETRY : TIDE_DLQ_DROP;
		uint64_t count = 0;
		if ((seq == 0) == !all) {
			cli_error("dlq", "%s takes a seq or --all", action);
			return CLI_USAGE;
		}
		rc = tide_dlq_apply(cl.data, op, consumer, seq, &count);
		if (rc == TIDE_EBUSY) /* an engine runs there: ask it */
			return ask_engine(&cl, action, consumer, seq);
		if (rc != TIDE_OK) {
			cli_error("dlq", "%s", tide_errmsg());
			return CLI_FAIL;
		}
		if (count == 0) {
			cli_error("dlq", "no dead letters match");
			return CLI_FAIL;
		}
		fprintf(stderr, "tide dlq: %s %llu dead letter%s%s\n",
			op == TIDE_DLQ_RETRY ? "retrying" : "dropped", (unsigned long long)count,
			count == 1 ? "" : "s",
			op == TIDE_DLQ_RETRY ? " when the engine next runs" : "");
		return CLI_OK;
	}
	cli_error("dlq", "'%s' is not a dlq action (list, show, retry, drop)", action);
	return CLI_USAGE;
}
