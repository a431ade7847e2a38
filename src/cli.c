/*
 * cli.c - helpers shared by the subcommands.  A running engine writes
 * DATA/endpoints (pull=, rep=, pub=, pid=) so that clients given only
 * --data find it; explicit --pull/--rep/--pub flags win.
 */
#include "config.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_gen.h>

#include "cli.h"
#include "tide.h"

void
cli_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "tide %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

double
cli_seconds(const char *s)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (end == s || *end != '\0' || errno != 0 || v < 0)
		return -1;
	return v;
}

static int
read_endpoints(const char *dir, cli_endpoints *ep)
{
	char path[4200], line[4300];
	FILE *f;

	snprintf(path, sizeof path, "%s/endpoints", dir);
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	while (fgets(line, sizeof line, f) != NULL) {
		char *eq = strchr(line, '=');
		line[strcspn(line, "\n")] = '\0';
		if (eq == NULL)
			continue;
		*eq++ = '\0';
		if (strcmp(line, "pull") == 0)
			snprintf(ep->pull, sizeof ep->pull, "%s", eq);
		else if (strcmp(line, "rep") == 0)
			snprintf(ep->rep, sizeof ep->rep, "%s", eq);
		else if (strcmp(line, "pub") == 0)
			snprintf(ep->pub, sizeof ep->pub, "%s", eq);
		else if (strcmp(line, "pid") == 0)
			ep->pid = strtol(eq, NULL, 10);
	}
	fclose(f);
	return 0;
}

int
cli_engine_running(const char *dir)
{
	cli_endpoints ep;

	memset(&ep, 0, sizeof ep);
	if (read_endpoints(dir, &ep) != 0)
		return -1;
	return !(ep.pid > 0 && kill((pid_t)ep.pid, 0) != 0 && errno == ESRCH);
}

int
cli_resolve(const char *cmd, const cli_client *c, const char *need, cli_endpoints *ep)
{
	const char *flag = strcmp(need, "rep") == 0    ? c->rep
			   : strcmp(need, "pull") == 0 ? c->pull
						       : c->pub;
	char *slot = strcmp(need, "rep") == 0    ? ep->rep
		     : strcmp(need, "pull") == 0 ? ep->pull
						 : ep->pub;

	memset(ep, 0, sizeof *ep);
	if (flag != NULL) {
		snprintf(slot, sizeof ep->rep, "%s", flag);
		return 0;
	}
	if (read_endpoints(c->data, ep) != 0) {
		cli_error(cmd,
			  "no running engine found in %s (no %s/endpoints); start one with "
			  "'tide run --data %s' or give --%s URL",
			  c->data, c->data, c->data, need);
		return -1;
	}
	if (ep->pid > 0 && kill((pid_t)ep->pid, 0) != 0 && errno == ESRCH) {
		cli_error(cmd,
			  "the engine of %s (pid %ld) is not running; start it with 'tide run'",
			  c->data, ep->pid);
		return -1;
	}
	if (*slot == '\0') {
		cli_error(cmd, "the engine of %s has no %s endpoint", c->data, need);
		return -1;
	}
	return 0;
}

static void
gen_key(yajl_gen g, const char *k)
{
	yajl_gen_string(g, (const unsigned char *)k, strlen(k));
}

void
cli_projection_json(const tide_projection_info *pi, unsigned long long last)
{
	yajl_gen g = yajl_gen_alloc(NULL);
	const unsigned char *buf;
	const char *status = pi->faulted ? "stopped" : pi->building ? "building" : "live";
	char num[32];
	size_t len;

	if (g == NULL)
		return;
	yajl_gen_map_open(g);
	gen_key(g, "name");
	gen_key(g, pi->name);
	gen_key(g, "status");
	gen_key(g, status);
	gen_key(g, "seq");
	yajl_gen_integer(g, (long long)pi->live_seq);
	gen_key(g, "lag");
	yajl_gen_integer(g, (long long)(last > pi->live_seq ? last - pi->live_seq : 0));
	if (pi->building) {
		gen_key(g, "rebuilt_seq");
		yajl_gen_integer(g, (long long)pi->build_seq);
		gen_key(g, "progress");
		snprintf(num, sizeof num, "%.1f",
			 last ? 100.0 * (double)pi->build_seq / (double)last : 100.0);
		yajl_gen_number(g, num, strlen(num));
		gen_key(g, "serving");
		yajl_gen_bool(g, pi->serving);
	}
	if (pi->faulted) {
		gen_key(g, "stopped_at");
		yajl_gen_integer(g, (long long)pi->fault_seq);
		gen_key(g, "error");
		gen_key(g, pi->error ? pi->error : "");
	}
	yajl_gen_map_close(g);
	yajl_gen_get_buf(g, &buf, &len);
	fwrite(buf, 1, len, stdout);
	yajl_gen_free(g);
}

void
cli_json_string(const char *s)
{
	putchar('"');
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			printf("\\%c", *p);
		else if (*p < 0x20)
			printf("\\u%04x", *p);
		else
			putchar(*p);
	}
	putchar('"');
}
