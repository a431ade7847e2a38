/*
 * cmd_query.c - `tide query`: a projection's state, read from the log
 * directly (with or without a running engine).
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

#include "cli.h"
#include "tide.h"

static const char usage_text[] =
	"usage: tide query NAME [KEY] [options]\n"
	"\n"
	"Print the state of projection NAME: of KEY, or of every key (starting with\n"
	"--prefix), one JSON object per line: {\"key\":..., \"state\":...}.\n"
	"On a running node of a cluster, a KEY is asked of the node that owns its\n"
	"partition; a listing shows this node's keys.\n"
	"\n"
	"options:\n"
	"  -p, --prefix P          only keys starting with P\n"
	"  -n, --limit N           at most N keys\n"
	"  -d, --data DIR          data directory (default ./tide-data)\n"
	"  -h, --help              show this help\n"
	"\n"
	"exit status: 0 found, 1 no such projection or key (or not built yet).\n";

static int
print_state(void *ud, const char *key, size_t klen, const char *json, size_t jlen)
{
	yajl_gen g = yajl_gen_alloc(NULL);
	const unsigned char *buf;
	size_t len;

	(*(unsigned long *)ud)++;
	if (g == NULL)
		return 1;
	yajl_gen_string(g, (const unsigned char *)key, klen);
	yajl_gen_get_buf(g, &buf, &len);
	printf("{\"key\":%.*s,\"state\":%.*s}\n", (int)len, buf, (int)jlen, json);
	yajl_gen_free(g);
	return ferror(stdout) ? 1 : 0;
}

/* A key, asked of the running node, which forwards it to the node that
 * owns the key's partition. */
static int
ask_cluster(const char *data, const char *name, const char *key)
{
	cli_client cl = { data, NULL, NULL, NULL, 5 };
	yajl_gen g = yajl_gen_alloc(NULL);
	const unsigned char *req;
	size_t len;
	yajl_val v, state;
	int rc;

	if (g == NULL)
		return CLI_FAIL;
	yajl_gen_map_open(g);
	cli_gen_str(g, "query");
	cli_gen_str(g, name);
	cli_gen_str(g, "key");
	cli_gen_str(g, key);
	yajl_gen_map_close(g);
	yajl_gen_get_buf(g, &req, &len);
	v = cli_ask("query", &cl, req, len, &rc);
	yajl_gen_free(g);
	if (v == NULL)
		return rc;
	state = yajl_tree_get(v, (const char *[]){ "state", NULL }, yajl_t_any);
	if (state == NULL) {
		yajl_tree_free(v);
		cli_error("query", "the engine's answer has no state");
		return CLI_FAIL;
	}
	if ((g = yajl_gen_alloc(NULL)) == NULL) {
		yajl_tree_free(v);
		return CLI_FAIL;
	}
	yajl_gen_map_open(g);
	cli_gen_str(g, "key");
	cli_gen_str(g, key);
	cli_gen_str(g, "state");
	rc = cli_gen_value(g, state);
	yajl_gen_map_close(g);
	yajl_gen_get_buf(g, &req, &len);
	if (rc == 0)
		printf("%.*s\n", (int)len, req);
	yajl_gen_free(g);
	yajl_tree_free(v);
	return rc == 0 && fflush(stdout) == 0 ? CLI_OK : CLI_FAIL;
}

int
cmd_query(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "prefix", required_argument, NULL, 'p' },
		{ "limit", required_argument, NULL, 'n' },
		{ "data", required_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *data = "./tide-data", *name, *key = NULL, *prefix = NULL;
	unsigned long limit = 0, found = 0;
	tide_log *log;
	int c, rc;

	optind = 1;
	while ((c = getopt_long(argc, argv, "p:n:d:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'p': prefix = optarg; break;
		case 'n': limit = strtoul(optarg, NULL, 10); break;
		case 'd': data = optarg; break;
		case 'h': fputs(usage_text, stdout); return CLI_OK;
		default: return cli_try_help("query");
		}
	}
	if (optind >= argc || argc - optind > 2 || (prefix && argc - optind == 2)) {
		fputs(usage_text, stderr);
		return CLI_USAGE;
	}
	name = argv[optind];
	if (argc - optind == 2)
		key = argv[optind + 1];
	if (key != NULL && cli_in_cluster(data))
		return ask_cluster(data, name, key);
	if (tide_log_open(&log, data) != TIDE_OK) {
		cli_error("query", "%s", tide_errmsg());
		return CLI_FAIL;
	}
	rc = tide_log_query(log, name, key, prefix, limit, print_state, &found);
	if (rc == TIDE_ENOTFOUND && key != NULL &&
	    tide_log_query(log, name, NULL, NULL, 1, NULL, NULL) == TIDE_ENOTFOUND)
		key = NULL; /* the projection itself is unknown */
	tide_log_close(log);
	if (rc == TIDE_ENOTFOUND) {
		if (key != NULL) /* keys may be of any length: quote the start of one */
			cli_error("query", "no state for key '%.300s%s' in projection '%s'", key,
				  strlen(key) > 300 ? "..." : "", name);
		else
			cli_error("query", "no projection named '%s' in %s", name, data);
		return CLI_FAIL;
	}
	if (rc == TIDE_ESTATE) {
		cli_error("query",
			  "projection '%s' is being built for the first time (see tide stat)",
			  name);
		return CLI_FAIL;
	}
	if (rc != TIDE_OK) {
		cli_error("query", "cannot read %s: %s", data, tide_strerror(rc));
		return CLI_FAIL;
	}
	return fflush(stdout) == 0 ? CLI_OK : CLI_FAIL;
}
