/*
 * cmd_tail.c - `tide tail`: subscribe to the PUB endpoint and print each
 * committed event as one JSON line.  Messages are "<type>\t<json>", so a
 * type prefix is a nanomsg subscription and filtering costs nothing here.
 *
 * With --from SEQ it reads the log instead, from SEQ on, and again after
 * every message PUB sends (or every 200 ms): the log is where every
 * event is, so the history and what commits while it is printed come
 * out with no gap and no repeat, and a reader that falls behind only
 * lags (PUB drops messages for a subscriber that does not keep up).
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <nanomsg/nn.h>
#include <nanomsg/pubsub.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "tide.h"

/* How often --from looks at the log when PUB says nothing. */
#define POLL_MS 200

static const char usage_text[] =
	"usage: tide tail [options]\n"
	"\n"
	"Follow the events an engine commits, live, one JSON object per line.\n"
	"\n"
	"options:\n"
	"  -t, --type PREFIX       only types starting with PREFIX (repeatable;\n"
	"                          'order.' matches order.placed and order.paid)\n"
	"  -n, --count N           exit after N events\n"
	"      --from SEQ          first the events from SEQ on, read from the log,\n"
	"                          then the new ones as they commit (no gap between)\n"
	"      --timeout SEC       exit (status 1) if no event arrives for SEC seconds\n"
	"  -d, --data DIR          find the engine through DIR/endpoints (default ./tide-data)\n"
	"      --pub URL           PUB endpoint to subscribe to\n"
	"  -h, --help              show this help\n";

/* Whether type @p t starts with one of the prefixes (any, if none). */
static int
wanted(const char *t, size_t tn, const char **types, size_t ntypes)
{
	for (size_t k = 0; k < ntypes; k++) {
		size_t n = strlen(types[k]);
		if (n <= tn && memcmp(t, types[k], n) == 0)
			return 1;
	}
	return ntypes == 0;
}

/* --from: the log from @p from on, read again whenever PUB (socket @p s)
 * says something was committed, or every POLL_MS. */
static int
follow_log(int s, const cli_client *cl, const char **types, size_t ntypes, unsigned long long from,
	   unsigned long long count)
{
	int tty = isatty(STDOUT_FILENO), ms = POLL_MS, rc = CLI_OK;
	unsigned long long seen = 0, next = from;
	double quiet = 0;
	tide_log *log;

	if (tide_log_open(&log, cl->data) != TIDE_OK) {
		cli_error("tail", "%s", tide_errmsg());
		return CLI_FAIL;
	}
	nn_setsockopt(s, NN_SUB, NN_SUB_SUBSCRIBE, "", 0);
	nn_setsockopt(s, NN_SOL_SOCKET, NN_RCVTIMEO, &ms, sizeof ms);
	while (count == 0 || seen < count) {
		tide_filter f = { 0 };
		tide_cursor *c;
		const tide_event *ev;
		size_t got = 0;
		int crc;

		f.from = next;
		if (tide_cursor_open(log, &f, &c) != TIDE_OK) {
			cli_error("tail", "%s", tide_errmsg());
			rc = CLI_FAIL;
			break;
		}
		while ((count == 0 || seen < count) &&
		       (crc = tide_cursor_next(c, &ev)) == TIDE_OK) {
			size_t tn, len;
			const char *t = tide_event_attr(ev, "type", &tn), *json;
			next = tide_event_seq(ev) + 1;
			if (!wanted(t, tn, types, ntypes) ||
			    tide_event_json(ev, &json, &len) != TIDE_OK)
				continue;
			fwrite(json, 1, len, stdout);
			fputc('\n', stdout);
			seen++;
			got++;
		}
		tide_cursor_close(c);
		if (tty || count)
			fflush(stdout);
		if (ferror(stdout)) {
			rc = CLI_FAIL; /* the reader went away */
			break;
		}
		if (count != 0 && seen >= count)
			break;
		if (got > 0)
			quiet = 0;
		/* wait for a commit (any PUB message), or the poll */
		{
			char *msg = NULL;
			int n = nn_recv(s, &msg, NN_MSG, 0);
			if (n >= 0)
				nn_freemsg(msg);
			else if (nn_errno() == ETIMEDOUT)
				quiet += POLL_MS / 1000.0;
		}
		if (cl->timeout > 0 && quiet >= cl->timeout) {
			cli_error("tail", "no event for %g s", cl->timeout);
			rc = CLI_FAIL;
			break;
		}
	}
	fflush(stdout);
	tide_log_close(log);
	return rc;
}

int
cmd_tail(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "type", required_argument, NULL, 't' },
		{ "count", required_argument, NULL, 'n' },
		{ "from", required_argument, NULL, 'f' },
		{ "timeout", required_argument, NULL, 'o' },
		{ "data", required_argument, NULL, 'd' },
		{ "pub", required_argument, NULL, 'B' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	cli_client cl = { "./tide-data", NULL, NULL, NULL, 0 };
	cli_endpoints ep;
	const char **types = NULL;
	size_t ntypes = 0;
	unsigned long long count = 0, seen = 0, from = 0;
	int c, s, rc = CLI_OK, tty = isatty(STDOUT_FILENO);

	optind = 1;
	while ((c = getopt_long(argc, argv, "t:n:d:h", longopts, NULL)) != -1) {
		switch (c) {
		case 't': {
			const char **v = realloc(types, (ntypes + 1) * sizeof *v);
			if (v == NULL)
				return CLI_FAIL;
			types = v;
			types[ntypes++] = optarg;
			break;
		}
		case 'n': count = strtoull(optarg, NULL, 10); break;
		case 'f': {
			char *end;
			from = strtoull(optarg, &end, 10);
			if (*optarg == '\0' || *end != '\0' || *optarg == '-' || from == 0) {
				cli_error("tail", "--from: '%s' is not a seq (1 or more)", optarg);
				free(types);
				return CLI_USAGE;
			}
			break;
		}
		case 'o': cl.timeout = cli_seconds(optarg); break;
		case 'd': cl.data = optarg; break;
		case 'B': cl.pub = optarg; break;
		case 'h':
			fputs(usage_text, stdout);
			free(types);
			return CLI_OK;
		default:
			cli_try_help("tail");
			free(types);
			return CLI_USAGE;
		}
	}
	if (optind < argc || cl.timeout < 0) {
		cli_error("tail", optind < argc ? "unexpected argument '%s'" : "bad --timeout%s",
			  optind < argc ? argv[optind] : "");
		free(types);
		return CLI_USAGE;
	}
	if (cli_resolve("tail", &cl, "pub", &ep) != 0) {
		free(types);
		return CLI_UNAVAILABLE;
	}
	if ((s = nn_socket(AF_SP, NN_SUB)) < 0 || nn_connect(s, ep.pub) < 0) {
		cli_error("tail", "cannot subscribe to %s: %s", ep.pub, nn_strerror(nn_errno()));
		free(types);
		return CLI_UNAVAILABLE;
	}
	if (from > 0) {
		rc = follow_log(s, &cl, types, ntypes, from, count);
		nn_close(s);
		free(types);
		return rc;
	}
	for (size_t k = 0; k < ntypes; k++)
		nn_setsockopt(s, NN_SUB, NN_SUB_SUBSCRIBE, types[k], strlen(types[k]));
	if (ntypes == 0)
		nn_setsockopt(s, NN_SUB, NN_SUB_SUBSCRIBE, "", 0);
	if (cl.timeout > 0) {
		int ms = (int)(cl.timeout * 1000);
		nn_setsockopt(s, NN_SOL_SOCKET, NN_RCVTIMEO, &ms, sizeof ms);
	}
	signal(SIGPIPE, SIG_IGN);
	while (count == 0 || seen < count) {
		char *msg = NULL;
		int n = nn_recv(s, &msg, NN_MSG, 0);
		const char *tab;

		if (n < 0) {
			int e = nn_errno();
			if (e == EINTR)
				continue;
			if (e == ETIMEDOUT)
				cli_error("tail", "no event for %g s", cl.timeout);
			else
				cli_error("tail", "%s", nn_strerror(e));
			rc = CLI_FAIL;
			break;
		}
		tab = memchr(msg, '\t', (size_t)n);
		if (tab != NULL) {
			size_t off = (size_t)(tab - msg) + 1;
			fwrite(msg + off, 1, (size_t)n - off, stdout);
			fputc('\n', stdout);
			seen++;
		}
		nn_freemsg(msg);
		if (tty || count)
			fflush(stdout);
		if (ferror(stdout)) {
			rc = CLI_FAIL; /* the reader went away */
			break;
		}
	}
	fflush(stdout);
	nn_close(s);
	free(types);
	return rc;
}
