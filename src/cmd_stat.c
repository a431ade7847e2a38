/*
 * cmd_stat.c - `tide stat`: size of the log and the position and lag of
 * every consumer, read from the log itself (works with or without a
 * running engine).
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <yajl/yajl_tree.h>

#include "cli.h"
#include "tide.h"

static const char usage_text[] =
	"usage: tide stat [options]\n"
	"\n"
	"Show whether the engine runs, the log's size, every consumer's checkpoint\n"
	"and lag (and for a rule its clock, keys, timers and late events) and\n"
	"every projection.  A running node of a cluster also says what it knows\n"
	"of the cluster: the nodes alive, and each partition's owner, stream\n"
	"position and lag.\n"
	"\n"
	"options:\n"
	"      --json              one JSON object instead of text\n"
	"  -d, --data DIR          data directory (default ./tide-data)\n"
	"  -h, --help              show this help\n";

typedef struct stat_ctx {
	int json;
	int n;
	uint64_t last;
	tide_log *log;
} stat_ctx;

static void
human(char *out, size_t len, uint64_t bytes)
{
	if (bytes >= (1ull << 30))
		snprintf(out, len, "%.1f GiB", (double)bytes / (1ull << 30));
	else if (bytes >= (1ull << 20))
		snprintf(out, len, "%.1f MiB", (double)bytes / (1ull << 20));
	else
		snprintf(out, len, "%.1f KiB", (double)bytes / 1024);
}

/* A rule's clock as RFC 3339 (UTC), or "-" before its first event. */
static void
clock_text(char *out, size_t len, int64_t ns)
{
	time_t t;
	struct tm tm;
	size_t n;

	if (ns == INT64_MIN) {
		snprintf(out, len, "-");
		return;
	}
	t = (time_t)(ns / 1000000000 - (ns % 1000000000 < 0));
	gmtime_r(&t, &tm);
	n = strftime(out, len, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + n, len - n, ".%03dZ",
		 (int)(((ns % 1000000000) + 1000000000) % 1000000000 / 1000000));
}

static void
print_consumer(void *ud, const char *name, uint64_t seq)
{
	stat_ctx *s = ud;
	uint64_t lag = s->last > seq ? s->last - seq : 0;
	uint64_t pending = 0, dead = 0;
	tide_rule_info ri;
	int rule = tide_log_rule_info(s->log, name, &ri) == TIDE_OK;
	char clock[64];

	tide_log_consumer_backlog(s->log, name, &pending, &dead);
	if (rule)
		clock_text(clock, sizeof clock, ri.watermark);
	if (s->json) {
		printf("%s{\"name\":", s->n ? "," : "");
		cli_json_string(name);
		printf(",\"checkpoint\":%llu,\"lag\":%llu,\"retrying\":%llu,\"dead\":%llu",
		       (unsigned long long)seq, (unsigned long long)lag,
		       (unsigned long long)pending, (unsigned long long)dead);
		if (rule)
			printf(",\"rule\":{\"clock\":%s%s%s,\"keys\":%llu,\"timers\":%llu,"
			       "\"late\":%llu,\"fired\":%llu,\"failed\":%llu}",
			       rule && ri.watermark != INT64_MIN ? "\"" : "",
			       ri.watermark != INT64_MIN ? clock : "null",
			       ri.watermark != INT64_MIN ? "\"" : "", (unsigned long long)ri.keys,
			       (unsigned long long)ri.timers, (unsigned long long)ri.late,
			       (unsigned long long)ri.fired, (unsigned long long)ri.failed);
		putchar('}');
	} else {
		printf("  %-24s checkpoint %-12llu lag %-10llu retrying %-6llu dead %llu\n", name,
		       (unsigned long long)seq, (unsigned long long)lag,
		       (unsigned long long)pending, (unsigned long long)dead);
		if (rule)
			printf("  %-24s clock %s  keys %llu  timers %llu  late %llu  fired %llu  "
			       "failed %llu\n",
			       "", clock, (unsigned long long)ri.keys,
			       (unsigned long long)ri.timers, (unsigned long long)ri.late,
			       (unsigned long long)ri.fired, (unsigned long long)ri.failed);
	}
	s->n++;
}

static void
print_projection(void *ud, const tide_projection_info *pi)
{
	stat_ctx *s = ud;
	uint64_t lag = s->last > pi->live_seq ? s->last - pi->live_seq : 0;
	double progress = s->last ? 100.0 * (double)pi->build_seq / (double)s->last : 100.0;

	if (s->json) {
		if (s->n)
			putchar(',');
		cli_projection_json(pi, s->last);
	} else if (pi->faulted) {
		printf("  %-24s stopped at %llu: %s\n", pi->name, (unsigned long long)pi->fault_seq,
		       pi->error);
	} else if (pi->building) {
		printf("  %-24s building %.1f%% (%llu of %llu)%s\n", pi->name, progress,
		       (unsigned long long)pi->build_seq, (unsigned long long)s->last,
		       pi->serving ? ", serving the previous state" : "");
	} else {
		printf("  %-24s live at %-12llu lag %llu\n", pi->name,
		       (unsigned long long)pi->live_seq, (unsigned long long)lag);
	}
	s->n++;
}

/* The running node's view of its cluster: printed as text, or as the
 * "cluster" member of the JSON; nothing when it is not in one. */
static void
print_cluster(const char *data, int json)
{
	cli_client cl = { data, NULL, NULL, NULL, 5 };
	const unsigned char *req = (const unsigned char *)"{\"command\":\"cluster\"}";
	yajl_val v, parts;
	int rc;

	if (!cli_in_cluster(data) ||
	    (v = cli_ask("stat", &cl, req, strlen((const char *)req), &rc)) == NULL)
		return;
	parts = yajl_tree_get(v, (const char *[]){ "partitions", NULL }, yajl_t_array);
	if (json) {
		yajl_val node = yajl_tree_get(v, (const char *[]){ "node", NULL }, yajl_t_string);
		yajl_val nodes = yajl_tree_get(v, (const char *[]){ "nodes", NULL }, yajl_t_number);
		yajl_val conn = yajl_tree_get(v, (const char *[]){ "connected", NULL }, yajl_t_any);
		printf("\"cluster\":{\"node\":");
		cli_json_string(node ? YAJL_GET_STRING(node) : "");
		printf(",\"connected\":%s,\"nodes\":%lld,\"partitions\":[",
		       conn && YAJL_IS_TRUE(conn) ? "true" : "false",
		       nodes ? YAJL_GET_INTEGER(nodes) : 0);
	} else {
		yajl_val node = yajl_tree_get(v, (const char *[]){ "node", NULL }, yajl_t_string);
		yajl_val nodes = yajl_tree_get(v, (const char *[]){ "nodes", NULL }, yajl_t_number);
		yajl_val conn = yajl_tree_get(v, (const char *[]){ "connected", NULL }, yajl_t_any);
		printf("cluster    node %s, %lld node%s alive, %s\n",
		       node ? YAJL_GET_STRING(node) : "?", nodes ? YAJL_GET_INTEGER(nodes) : 0,
		       nodes && YAJL_GET_INTEGER(nodes) == 1 ? "" : "s",
		       conn && YAJL_IS_TRUE(conn) ? "connected" : "NOT connected");
	}
	for (size_t k = 0; parts != NULL && k < YAJL_GET_ARRAY(parts)->len; k++) {
		yajl_val p = YAJL_GET_ARRAY(parts)->values[k];
		yajl_val owner = yajl_tree_get(p, (const char *[]){ "owner", NULL }, yajl_t_string);
		yajl_val here = yajl_tree_get(p, (const char *[]){ "here", NULL }, yajl_t_any);
		yajl_val pos =
			yajl_tree_get(p, (const char *[]){ "position", NULL }, yajl_t_number);
		yajl_val lag = yajl_tree_get(p, (const char *[]){ "lag", NULL }, yajl_t_number);
		const char *who = owner && YAJL_GET_STRING(owner)[0] ? YAJL_GET_STRING(owner) : "";
		int mine = here && YAJL_IS_TRUE(here);
		if (json) {
			printf("%s{\"partition\":%zu,\"owner\":", k ? "," : "", k);
			cli_json_string(who);
			printf(",\"here\":%s,\"position\":%lld", mine ? "true" : "false",
			       pos ? YAJL_GET_INTEGER(pos) : 0);
			if (lag != NULL)
				printf(",\"lag\":%lld", YAJL_GET_INTEGER(lag));
			printf("}");
		} else if (mine) {
			printf("  partition %-3zu here, position %lld, lag %lld\n", k,
			       pos ? YAJL_GET_INTEGER(pos) : 0, lag ? YAJL_GET_INTEGER(lag) : 0);
		} else if (who[0]) {
			printf("  partition %-3zu owned by %s, position %lld, lag %lld\n", k, who,
			       pos ? YAJL_GET_INTEGER(pos) : 0, lag ? YAJL_GET_INTEGER(lag) : 0);
		} else {
			printf("  partition %-3zu no owner yet\n", k);
		}
	}
	if (json)
		printf("]},");
	yajl_tree_free(v);
}

int
cmd_stat(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "data", required_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *data = "./tide-data";
	stat_ctx ctx = { 0, 0, 0, NULL };
	tide_log_stat st;
	tide_log *log;
	char size[32], map[32];
	int c, rc, running;
	long pid;

	optind = 1;
	while ((c = getopt_long(argc, argv, "d:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'j': ctx.json = 1; break;
		case 'd': data = optarg; break;
		case 'h': fputs(usage_text, stdout); return CLI_OK;
		default: return cli_try_help("stat");
		}
	}
	if (optind < argc) {
		cli_error("stat", "unexpected argument '%s'", argv[optind]);
		return CLI_USAGE;
	}
	if ((rc = tide_log_open(&log, data)) != TIDE_OK) {
		cli_error("stat", "%s", tide_errmsg());
		return CLI_FAIL;
	}
	if ((rc = tide_log_stat_get(log, &st)) != TIDE_OK) {
		cli_error("stat", "cannot read %s: %s", data, tide_strerror(rc));
		tide_log_close(log);
		return CLI_FAIL;
	}
	ctx.last = st.last_seq;
	ctx.log = log;
	running = cli_engine_state(data, &pid);
	if (ctx.json) {
		printf("{\"engine\":{\"running\":%s", running == 1 ? "true" : "false");
		if (pid > 0)
			printf(",\"pid\":%ld", pid);
		printf("},");
		if (running == 1)
			print_cluster(data, 1);
		printf("\"events\":%llu,\"last_seq\":%llu,\"streams\":%llu,\"size\":%llu,"
		       "\"map_size\":%llu,\"consumers\":[",
		       (unsigned long long)st.events, (unsigned long long)st.last_seq,
		       (unsigned long long)st.streams, (unsigned long long)st.size,
		       (unsigned long long)st.map_size);
	} else {
		human(size, sizeof size, st.size);
		human(map, sizeof map, st.map_size);
		if (running == 1)
			printf("engine     running (pid %ld)\n", pid);
		else if (running == 0)
			printf("engine     not running (pid %ld, named in %s/endpoints, is gone: "
			       "it "
			       "did not stop cleanly)\n",
			       pid, data);
		else
			printf("engine     not running\n");
		if (running == 1)
			print_cluster(data, 0);
		printf("events     %llu\nlast seq   %llu\nstreams    %llu\nsize       %s (map "
		       "%s)\n",
		       (unsigned long long)st.events, (unsigned long long)st.last_seq,
		       (unsigned long long)st.streams, size, map);
		printf("consumers\n");
	}
	rc = tide_log_consumers(log, print_consumer, &ctx);
	if (!ctx.json && ctx.n == 0)
		printf("  (none)\n");
	ctx.n = 0;
	printf(ctx.json ? "],\"projections\":[" : "projections\n");
	if (rc == TIDE_OK)
		rc = tide_log_projections(log, print_projection, &ctx);
	if (ctx.json)
		printf("]}\n");
	else if (ctx.n == 0)
		printf("  (none)\n");
	tide_log_close(log);
	if (rc != TIDE_OK) {
		cli_error("stat", "cannot read consumers: %s", tide_strerror(rc));
		return CLI_FAIL;
	}
	return CLI_OK;
}
