/*
 * cli.c - helpers shared by the subcommands.  A running engine writes
 * DATA/endpoints (pull=, rep=, pub=, pid=) so that clients given only
 * --data find it; explicit --pull/--rep/--pub flags win.
 */
#include "config.h"

#include <errno.h>
#include <nanomsg/nn.h>
#include <nanomsg/reqrep.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
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
		else if (strcmp(line, "max_message") == 0)
			ep->max_message = strtoull(eq, NULL, 10);
	}
	fclose(f);
	return 0;
}

int
cli_try_help(const char *cmd)
{
	fprintf(stderr, "try 'tide %s --help' for the options\n", cmd);
	return CLI_USAGE;
}

int
cli_engine_state(const char *dir, long *pid)
{
	cli_endpoints ep;

	memset(&ep, 0, sizeof ep);
	*pid = 0;
	if (read_endpoints(dir, &ep) != 0)
		return -1;
	*pid = ep.pid;
	return !(ep.pid > 0 && kill((pid_t)ep.pid, 0) != 0 && errno == ESRCH);
}

int
cli_engine_running(const char *dir)
{
	long pid;

	return cli_engine_state(dir, &pid);
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

void
cli_gen_str(yajl_gen g, const char *s)
{
	yajl_gen_string(g, (const unsigned char *)s, strlen(s));
}

yajl_val
cli_ask(const char *cmd, const cli_client *c, const unsigned char *req, size_t len, int *status)
{
	cli_endpoints ep;
	char *reply = NULL, *text, errbuf[128];
	int s, n = -1, ms = (int)(c->timeout * 1000);
	yajl_val v, ok, error;

	*status = CLI_UNAVAILABLE;
	if (cli_resolve(cmd, c, "rep", &ep) != 0)
		return NULL;
	s = nn_socket(AF_SP, NN_REQ);
	if (s < 0 || nn_setsockopt(s, NN_SOL_SOCKET, NN_SNDTIMEO, &ms, sizeof ms) < 0 ||
	    nn_setsockopt(s, NN_SOL_SOCKET, NN_RCVTIMEO, &ms, sizeof ms) < 0 ||
	    nn_connect(s, ep.rep) < 0 || nn_send(s, req, len, 0) < 0 ||
	    (n = nn_recv(s, &reply, NN_MSG, 0)) < 0) {
		cli_error(cmd, "no answer from the engine at %s: %s", ep.rep,
			  nn_strerror(nn_errno()));
		if (s >= 0)
			nn_close(s);
		return NULL;
	}
	text = strndup(reply, (size_t)n);
	v = text ? yajl_tree_parse(text, errbuf, sizeof errbuf) : NULL;
	free(text);
	nn_freemsg(reply);
	nn_close(s);
	ok = yajl_tree_get(v, (const char *[]){ "ok", NULL }, yajl_t_any);
	if (ok != NULL && YAJL_IS_TRUE(ok))
		return v;
	error = yajl_tree_get(v, (const char *[]){ "error", NULL }, yajl_t_string);
	cli_error(cmd, "%s", error ? YAJL_GET_STRING(error) : "the engine refused");
	yajl_tree_free(v);
	*status = CLI_FAIL;
	return NULL;
}

int
cli_gen_value(yajl_gen g, yajl_val v)
{
	if (v == NULL || YAJL_IS_NULL(v))
		return yajl_gen_null(g) == yajl_gen_status_ok ? 0 : -1;
	if (YAJL_IS_TRUE(v) || YAJL_IS_FALSE(v))
		return yajl_gen_bool(g, YAJL_IS_TRUE(v)) == yajl_gen_status_ok ? 0 : -1;
	if (YAJL_IS_STRING(v))
		return yajl_gen_string(g, (const unsigned char *)v->u.string,
				       strlen(v->u.string)) == yajl_gen_status_ok
			       ? 0
			       : -1;
	if (YAJL_IS_NUMBER(v)) /* as it was written */
		return yajl_gen_number(g, v->u.number.r, strlen(v->u.number.r)) ==
				       yajl_gen_status_ok
			       ? 0
			       : -1;
	if (YAJL_IS_ARRAY(v)) {
		yajl_gen_array_open(g);
		for (size_t k = 0; k < YAJL_GET_ARRAY(v)->len; k++)
			if (cli_gen_value(g, YAJL_GET_ARRAY(v)->values[k]) != 0)
				return -1;
		return yajl_gen_array_close(g) == yajl_gen_status_ok ? 0 : -1;
	}
	yajl_gen_map_open(g);
	for (size_t k = 0; k < YAJL_GET_OBJECT(v)->len; k++) {
		const char *key = YAJL_GET_OBJECT(v)->keys[k];
		yajl_gen_string(g, (const unsigned char *)key, strlen(key));
		if (cli_gen_value(g, YAJL_GET_OBJECT(v)->values[k]) != 0)
			return -1;
	}
	return yajl_gen_map_close(g) == yajl_gen_status_ok ? 0 : -1;
}

int
cli_in_cluster(const char *data)
{
	char path[4200], line[4300];
	FILE *f;
	int yes = 0;

	snprintf(path, sizeof path, "%s/endpoints", data);
	if ((f = fopen(path, "r")) == NULL)
		return 0;
	while (!yes && fgets(line, sizeof line, f) != NULL)
		yes = strncmp(line, "cluster=", 8) == 0;
	fclose(f);
	return yes && cli_engine_running(data) == 1;
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
	cli_gen_str(g, "name");
	cli_gen_str(g, pi->name);
	cli_gen_str(g, "status");
	cli_gen_str(g, status);
	cli_gen_str(g, "seq");
	yajl_gen_integer(g, (long long)pi->live_seq);
	cli_gen_str(g, "lag");
	yajl_gen_integer(g, (long long)(last > pi->live_seq ? last - pi->live_seq : 0));
	if (pi->building) {
		cli_gen_str(g, "rebuilt_seq");
		yajl_gen_integer(g, (long long)pi->build_seq);
		cli_gen_str(g, "progress");
		snprintf(num, sizeof num, "%.1f",
			 last ? 100.0 * (double)pi->build_seq / (double)last : 100.0);
		yajl_gen_number(g, num, strlen(num));
		cli_gen_str(g, "serving");
		yajl_gen_bool(g, pi->serving);
	}
	if (pi->faulted) {
		cli_gen_str(g, "stopped_at");
		yajl_gen_integer(g, (long long)pi->fault_seq);
		cli_gen_str(g, "error");
		cli_gen_str(g, pi->error ? pi->error : "");
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

/* RFC 3339 to ns since the epoch; -1 if it is not one. */
int64_t
cli_time(const char *s)
{
	struct tm tm;
	int y, mo, d, h, mi, sec, n = 0, oh = 0, om = 0;
	double frac = 0;
	const char *p;
	int64_t t;

	memset(&tm, 0, sizeof tm);
	if (sscanf(s, "%4d-%2d-%2d%*1[Tt]%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6 ||
	    n != 19)
		return -1;
	p = s + n;
	if (*p == '.') {
		char *end;
		frac = strtod(p, &end);
		p = end;
	}
	if ((*p == 'Z' || *p == 'z') && p[1] == '\0') {
		oh = om = 0;
	} else if ((*p == '+' || *p == '-') && sscanf(p + 1, "%2d:%2d", &oh, &om) == 2 &&
		   strlen(p) == 6) {
		if (*p == '-') {
			oh = -oh;
			om = -om;
		}
	} else {
		return -1;
	}
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec;
	t = (int64_t)timegm(&tm) - (int64_t)oh * 3600 - (int64_t)om * 60;
	return t * 1000000000 + (int64_t)(frac * 1e9);
}

/* ------------------------------------------------------------------------
 * Script parameters
 * ------------------------------------------------------------------------ */

static int
params_push(const char *cmd, cli_params *p, const char *name, size_t nn, const char *val, size_t vn)
{
	char **v = realloc(p->v, (p->n + 2) * sizeof *v);
	char *kv = malloc(nn + vn + 2);

	if (v != NULL)
		p->v = v;
	if (v == NULL || kv == NULL) {
		free(kv);
		cli_error(cmd, "out of memory");
		return -1;
	}
	memcpy(kv, name, nn);
	kv[nn] = '=';
	memcpy(kv + nn + 1, val, vn);
	kv[nn + 1 + vn] = '\0';
	p->v[p->n++] = kv;
	p->v[p->n] = NULL;
	return 0;
}

int
cli_params_add(const char *cmd, const char *flag, cli_params *p, const char *kv)
{
	const char *eq = strchr(kv, '=');

	if (eq == NULL || eq == kv) {
		cli_error(cmd, "--%s takes NAME=VALUE, not '%s'", flag, kv);
		return -1;
	}
	return params_push(cmd, p, kv, (size_t)(eq - kv), eq + 1, strlen(eq + 1));
}

static const char *
trim(const char *s, const char *end, size_t *n)
{
	while (s < end && (*s == ' ' || *s == '\t'))
		s++;
	while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
		end--;
	*n = (size_t)(end - s);
	return s;
}

int
cli_params_file(const char *cmd, cli_params *p, const char *path)
{
	FILE *f = fopen(path, "r");
	char line[4096];
	unsigned no = 0;
	int rc = 0;

	if (f == NULL) {
		cli_error(cmd, "cannot read %s: %s", path, strerror(errno));
		return -1;
	}
	while (rc == 0 && fgets(line, sizeof line, f) != NULL) {
		size_t len = strlen(line), nn, vn;
		const char *eq, *name, *val;
		no++;
		if (len == sizeof line - 1 && line[len - 1] != '\n') {
			cli_error(cmd, "%s:%u: the line is longer than %zu bytes", path, no,
				  sizeof line - 2);
			rc = -1;
			break;
		}
		if (len > 0 && line[len - 1] == '\n')
			line[--len] = '\0';
		name = trim(line, line + len, &nn);
		if (nn == 0 || name[0] == '#')
			continue;
		if ((eq = memchr(name, '=', nn)) == NULL) {
			cli_error(cmd, "%s:%u: expected NAME = VALUE, not '%.*s'", path, no,
				  (int)nn, name);
			rc = -1;
			break;
		}
		val = trim(eq + 1, name + nn, &vn);
		name = trim(name, eq, &nn);
		if (nn == 0) {
			cli_error(cmd, "%s:%u: a parameter needs a name", path, no);
			rc = -1;
			break;
		}
		rc = params_push(cmd, p, name, nn, val, vn);
	}
	if (rc == 0 && ferror(f)) {
		cli_error(cmd, "cannot read %s: a read error", path);
		rc = -1;
	}
	fclose(f);
	return rc;
}

void
cli_params_free(cli_params *p)
{
	for (size_t k = 0; k < p->n; k++)
		free(p->v[k]);
	free(p->v);
	p->v = NULL;
	p->n = 0;
}
