/*
 * cmd_backup.c - `tide backup DEST`: a consistent, compacted copy of the
 * log into a new data directory (works while the engine runs).  Restoring
 * is running the engine (or any command) with --data DEST.
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "tide.h"

static const char usage_text[] =
	"usage: tide backup [options] DEST\n"
	"\n"
	"Copy the log to DEST, a new (or empty) directory, as of one commit and\n"
	"without its free pages.  Safe while the engine runs.  DEST is then a data\n"
	"directory: to restore, stop the engine and start it with --data DEST (or\n"
	"move DEST into the place of the damaged directory).\n"
	"\n"
	"options:\n"
	"  -d, --data DIR          data directory to copy (default ./tide-data)\n"
	"  -h, --help              show this help\n";

static void
human(char *out, size_t len, unsigned long long bytes)
{
	if (bytes >= (1ull << 30))
		snprintf(out, len, "%.1f GiB", (double)bytes / (1ull << 30));
	else if (bytes >= (1ull << 20))
		snprintf(out, len, "%.1f MiB", (double)bytes / (1ull << 20));
	else
		snprintf(out, len, "%.1f KiB", (double)bytes / 1024);
}

int
cmd_backup(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "data", required_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *data = "./tide-data", *dest;
	tide_backup_info info;
	char size[32], from[32];
	int c, rc;

	optind = 1;
	while ((c = getopt_long(argc, argv, "d:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'd': data = optarg; break;
		case 'h': fputs(usage_text, stdout); return CLI_OK;
		default: return cli_try_help("backup");
		}
	}
	if (optind >= argc) {
		cli_error("backup", "where to? (tide backup DEST)");
		fputs(usage_text, stderr);
		return CLI_USAGE;
	}
	dest = argv[optind++];
	if (optind < argc) {
		cli_error("backup", "unexpected argument '%s'", argv[optind]);
		return CLI_USAGE;
	}
	if ((rc = tide_log_backup(data, dest, &info)) != TIDE_OK) {
		cli_error("backup", "%s", tide_errmsg());
		return CLI_FAIL;
	}
	human(size, sizeof size, info.size);
	human(from, sizeof from, info.source_size);
	printf("copied %s to %s: %llu events, last seq %llu, %s (the log takes %s)\n", data, dest,
	       (unsigned long long)info.events, (unsigned long long)info.last_seq, size, from);
	return fflush(stdout) == 0 && !ferror(stdout) ? CLI_OK : CLI_FAIL;
}
