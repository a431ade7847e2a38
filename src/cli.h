/*
 * cli.h - what the `tide` subcommands share: error reporting in the style
 * of Unix tools, endpoint discovery through a data directory, and the
 * common client options.
 */
#ifndef TIDE_CLI_H
#define TIDE_CLI_H

#include <stdint.h>
#include <stdio.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

/** Exit codes. */
enum { CLI_OK = 0, CLI_FAIL = 1, CLI_USAGE = 2, CLI_UNAVAILABLE = 3 };

/** Endpoints of a running engine. */
typedef struct cli_endpoints {
	char pull[4200];
	char rep[4200];
	char pub[4200];
	long pid;
	unsigned long long max_message; /* the engine's max_message_size; 0: not known */
} cli_endpoints;

/** Options every client subcommand takes. */
typedef struct cli_client {
	const char *data; /* --data DIR, default ./tide-data */
	const char *pull, *rep, *pub;
	double timeout; /* seconds */
} cli_client;

struct tide_projection_info;

/** Write a projection's progress as one JSON object (no newline) to
 *  stdout: name, status, seq, lag against @p last, and the rebuild's
 *  progress or where and why it stopped. */
void cli_projection_json(const struct tide_projection_info *pi, unsigned long long last);

/** Whether the engine of data directory @p dir runs: 1 yes, 0 no (its
 *  endpoints file names a process that is gone), -1 no endpoints file. */
int cli_engine_running(const char *dir);
/** The same, with the pid the endpoints file names (0 if none). */
int cli_engine_state(const char *dir, long *pid);

/** Write a parsed JSON value into @p g; 0 or -1. */
int cli_gen_value(yajl_gen g, yajl_val v);

/** 1 if the engine of @p dir runs as a node of a cluster (its endpoints
 *  file says so): then what it stores is its partitions' share only. */
int cli_in_cluster(const char *dir);

/** Send the request @p req (a JSON object of @p len bytes) to the engine's
 *  REP endpoint and wait for its reply.  Returns the reply when it says
 *  "ok":true (the caller frees it with yajl_tree_free), else NULL after
 *  reporting why as CMD, with *status CLI_UNAVAILABLE (no engine, no
 *  answer) or CLI_FAIL (the engine refused). */
yajl_val cli_ask(const char *cmd, const cli_client *c, const unsigned char *req, size_t len,
		 int *status);

/** yajl_gen_string() of a C string. */
void cli_gen_str(yajl_gen g, const char *s);

/** Write @p s to stdout as a JSON string literal, quotes included. */
void cli_json_string(const char *s);

/** Script parameters ("NAME=VALUE", what tide.param(NAME, default)
 *  gives), NULL-terminated, in the order given: a later one for a name
 *  wins. */
typedef struct cli_params {
	char **v;
	size_t n;
} cli_params;

/** Add @p kv, as option --@p flag gave it.  0, or -1 after saying why as
 *  CMD (not NAME=VALUE, out of memory). */
int cli_params_add(const char *cmd, const char *flag, cli_params *p, const char *kv);
/** Add every NAME=VALUE line of file @p path (blank lines and lines
 *  starting with # are skipped; spaces around NAME and VALUE are not part
 *  of them).  0, or -1 after saying why, with the file's line. */
int cli_params_file(const char *cmd, cli_params *p, const char *path);
void cli_params_free(cli_params *p);

/** Print "tide CMD: message" to stderr. */
/** After getopt's line about a wrong option: where to look.  Returns
 *  CLI_USAGE. */
int cli_try_help(const char *cmd);
void cli_error(const char *cmd, const char *fmt, ...)
#if defined(__GNUC__)
	__attribute__((format(printf, 2, 3)))
#endif
	;

/** Fill @p ep from flags, or from DATA/endpoints when a flag is absent.
 *  @p need names the endpoint the command uses ("rep", "pull", "pub").
 *  Returns 0, or prints why not and returns -1. */
int cli_resolve(const char *cmd, const cli_client *c, const char *need, cli_endpoints *ep);

/** Parse a number of seconds; returns -1 on error. */
double cli_seconds(const char *s);
/** An RFC 3339 time as ns since the epoch; -1 if it is not one. */
int64_t cli_time(const char *s);

/* Subcommands: argc/argv start at the subcommand name. */
int cmd_run(int argc, char **argv);
int cmd_publish(int argc, char **argv);
int cmd_tail(int argc, char **argv);
int cmd_log(int argc, char **argv);
int cmd_stat(int argc, char **argv);
int cmd_dlq(int argc, char **argv);
int cmd_query(int argc, char **argv);
int cmd_projection(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_backtest(int argc, char **argv);
int cmd_test(int argc, char **argv);
int cmd_replay(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_backup(int argc, char **argv);

#endif
