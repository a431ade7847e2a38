/*
 * cmd_tail.c - `tide tail`: subscribe to the PUB endpoint and print each
 * committed event as one JSON line.  Messages are "<type>\t<json>", so a
 * type prefix is a nanomsg subscription and filtering costs nothing here.
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

static const char usage_text[] =
	"usage: tide tail [options]\n"
	"\n"
	"Follow the events an engine commits, live, one JSON object per line.\n"
	"\n"
	"options:\n"
	"  -t, --type PREFIX       only types starting with PREFIX (repeatable;\n"
	"                          'order.' matches order.placed and order.paid)\n"
	"  -n, --count N           exit after N events\n"
	"      --timeout SEC       exit (status 1) if no event arrives for SEC seconds\n"
	"  -d, --data DIR          find the engine through DIR/endpoints (default ./tide-data)\n"
	"      --pub URL           PUB endpoint to subscribe to\n"
	"  -h, --help              show this help\n";

int
cmd_tail(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "type", required_argument, NULL, 't' },
		{ "count", required_argument, NULL, 'n' },
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
	unsigned long long count = 0, seen = 0;
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
