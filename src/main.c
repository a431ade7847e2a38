/*
 * main.c - the `tide` command: dispatch to a subcommand, git style.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "tide.h"

static const struct {
	const char *name;
	int (*fn)(int, char **);
	const char *what;
} commands[] = {
	{ "run", cmd_run, "run the engine: ingest, commit, run the scripts" },
	{ "publish", cmd_publish, "send events (from flags, or NDJSON on stdin)" },
	{ "tail", cmd_tail, "follow committed events live, as NDJSON" },
	{ "log", cmd_log, "read the log directly, as NDJSON" },
	{ "stat", cmd_stat, "log size, consumer positions and lag" },
	{ "dlq", cmd_dlq, "list, show, retry or drop dead letters" },
	{ "query", cmd_query, "the state of a projection, as JSON" },
	{ "projection", cmd_projection, "list projections, or rebuild one" },
	{ "replay", cmd_replay, "run scripts over stored history, without side effects" },
	{ "backtest", cmd_backtest, "run scripts over past events as live, scored on labels" },
	{ "test", cmd_test, "run scripts over fixtures and compare what they emit" },
	{ "check", cmd_check, "load scripts without running them: what they define, or errors" },
	{ "verify", cmd_verify, "check the log's files and report what is damaged" },
	{ "backup", cmd_backup, "copy the log, consistently, to a new data directory" },
};

static void
usage(FILE *out)
{
	fprintf(out, "usage: tide <command> [options]\n\n"
		     "Tide is a durable, Lua-scriptable event processing engine.\n\n"
		     "commands:\n");
	for (size_t k = 0; k < sizeof commands / sizeof commands[0]; k++)
		fprintf(out, "  %-10s  %s\n", commands[k].name, commands[k].what);
	fprintf(out, "  %-10s  %s\n", "version", "print the version");
	fprintf(out, "\n'tide <command> --help' describes a command.\n");
}

int
main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return CLI_USAGE;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		if (argc > 2 && strcmp(argv[1], "help") == 0) {
			char *sub[] = { argv[2], "--help", NULL };
			for (size_t k = 0; k < sizeof commands / sizeof commands[0]; k++)
				if (strcmp(argv[2], commands[k].name) == 0)
					return commands[k].fn(2, sub);
		}
		usage(stdout);
		return CLI_OK;
	}
	if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
		printf("tide %s\n", tide_version());
		return CLI_OK;
	}
	for (size_t k = 0; k < sizeof commands / sizeof commands[0]; k++)
		if (strcmp(argv[1], commands[k].name) == 0) {
			/* getopt names the program in its messages: "tide stat" */
			static char name[32];
			snprintf(name, sizeof name, "tide %s", commands[k].name);
			argv[1] = name;
			return commands[k].fn(argc - 1, argv + 1);
		}
	fprintf(stderr, "tide: '%s' is not a command\n\n", argv[1]);
	usage(stderr);
	return CLI_USAGE;
}
