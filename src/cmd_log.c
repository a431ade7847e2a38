/*
 * cmd_log.c - `tide log`: read the log directly (no engine needed, and
 * safe while one runs) and print events as NDJSON, one CloudEvent per
 * line with seq, version and recorded as top-level attributes.
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "tide.h"

static const char usage_text[] =
	"usage: tide log [options]\n"
	"\n"
	"Print events from the log as NDJSON, oldest first.\n"
	"\n"
	"options:\n"
	"  -f, --from SEQ          start at this seq (default 1)\n"
	"  -u, --until SEQ         stop after this seq\n"
	"  -n, --limit N           print at most N events\n"
	"  -s, --subject SUBJECT   only this stream, in version order\n"
	"  -t, --type TYPE         only this type, or a prefix like 'order.*'\n"
	"  -d, --data DIR          data directory (default ./tide-data)\n"
	"  -h, --help              show this help\n";

static int
parse_u64(const char *s, unsigned long long *out)
{
	char *end;

	*out = strtoull(s, &end, 10);
	return s[0] != '-' && end != s && *end == '\0' ? 0 : -1;
}

int
cmd_log(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "from", required_argument, NULL, 'f' },
		{ "until", required_argument, NULL, 'u' },
		{ "limit", required_argument, NULL, 'n' },
		{ "subject", required_argument, NULL, 's' },
		{ "type", required_argument, NULL, 't' },
		{ "data", required_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *data = "./tide-data";
	unsigned long long from = 0, until = 0, limit = 0, printed = 0;
	tide_filter f;
	tide_log *log = NULL;
	tide_cursor *cur = NULL;
	const tide_event *ev;
	int c, rc;

	memset(&f, 0, sizeof f);
	optind = 1;
	while ((c = getopt_long(argc, argv, "f:u:n:s:t:d:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'f':
		case 'u':
		case 'n':
			if (parse_u64(optarg, c == 'f' ? &from : c == 'u' ? &until : &limit) != 0) {
				cli_error("log", "'%s' is not a number", optarg);
				return CLI_USAGE;
			}
			break;
		case 's': f.subject = optarg; break;
		case 't': f.type = optarg; break;
		case 'd': data = optarg; break;
		case 'h': fputs(usage_text, stdout); return CLI_OK;
		default: return cli_try_help("log");
		}
	}
	if (optind < argc) {
		cli_error("log", "unexpected argument '%s'", argv[optind]);
		return CLI_USAGE;
	}
	f.from = from;
	f.until = until;
	if ((rc = tide_log_open(&log, data)) != TIDE_OK) {
		cli_error("log", "%s", tide_errmsg());
		return CLI_FAIL;
	}
	if ((rc = tide_cursor_open(log, &f, &cur)) != TIDE_OK) {
		cli_error("log", "cannot read %s: %s", data, tide_strerror(rc));
		tide_log_close(log);
		return CLI_FAIL;
	}
	while ((limit == 0 || printed < limit) && (rc = tide_cursor_next(cur, &ev)) == TIDE_OK) {
		const char *json;
		size_t len;
		if ((rc = tide_event_json(ev, &json, &len)) != TIDE_OK)
			break;
		fwrite(json, 1, len, stdout);
		fputc('\n', stdout);
		printed++;
		if (ferror(stdout))
			break;
	}
	tide_cursor_close(cur);
	tide_log_close(log);
	if (rc != TIDE_OK && rc != TIDE_ENOTFOUND) {
		cli_error("log", "reading %s: %s", data, tide_strerror(rc));
		return CLI_FAIL;
	}
	return fflush(stdout) == 0 && !ferror(stdout) ? CLI_OK : CLI_FAIL;
}
