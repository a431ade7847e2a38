/*
 * check.c - tide_check(): load scripts as `tide run` would, without a log,
 * and say what each defines or why it does not load.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consumer.h"
#include "projection.h"
#include "rule.h"
#include "tide.h"

typedef struct check {
	tidei_projections *ps;
	tide_check_fn *fn;
	void *ud;
	const char *script; /* the one loading */
	tidei_buf detail;
	char **timers; /* a rule's timer names, sorted for the report */
	size_t ntimers, tcap;
} check;

static int
host_projection(void *ud, lua_State *L, const char *name, int spec, const char *script,
		const char *where, char *err)
{
	check *c = ud;

	return tidei_projections_define(c->ps, L, name, spec, script, where, err);
}

static void
report(check *c, int kind, const char *name, const char *owner, const char *detail,
       const char *where)
{
	tide_check_item it = { kind, c->script, name, owner, detail, where };

	c->fn(c->ud, &it);
}

static void
add_timer(void *ud, const char *name)
{
	check *c = ud;
	char *copy = strdup(name);

	if (copy == NULL ||
	    tidei_array_grow(&c->timers, &c->tcap, c->ntimers, sizeof *c->timers, 8) != 0) {
		free(copy);
		return;
	}
	c->timers[c->ntimers++] = copy;
}

static int
by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Report consumer @p k: its types, what it is as a rule, its windows and
 * timers. */
static void
report_consumer(check *c, tidei_consumers *cs, size_t k)
{
	const tidei_consumer *cn = tidei_consumers_at(cs, k);
	const tidei_rwins *w;

	tidei_buf_reset(&c->detail);
	tidei_buf_printf(&c->detail, "on %s", cn->pattern);
	if (cn->rule != NULL) {
		tidei_buf_printf(&c->detail, "; rule: ");
		tidei_rule_describe(cn->rule, &c->detail);
	}
	tidei_buf_putc(&c->detail, 0);
	report(c, TIDE_CHECK_CONSUMER, cn->name, NULL,
	       c->detail.failed ? "" : (const char *)c->detail.p, cn->where);
	if (cn->rule == NULL)
		return;
	w = tidei_rule_windows(cn->rule);
	for (size_t i = 0; i < tidei_rwins_count(w); i++) {
		const char *name;
		tidei_buf_reset(&c->detail);
		name = tidei_rwins_describe(w, i, &c->detail);
		tidei_buf_putc(&c->detail, 0);
		report(c, TIDE_CHECK_WINDOW, name, cn->name,
		       c->detail.failed ? "" : (const char *)c->detail.p, NULL);
	}
	c->ntimers = 0;
	tidei_rule_timer_names(cn->rule, tidei_script_state(tidei_consumers_script(cs)), add_timer,
			       c);
	if (c->ntimers > 1)
		qsort(c->timers, c->ntimers, sizeof *c->timers, by_name);
	for (size_t i = 0; i < c->ntimers; i++) {
		report(c, TIDE_CHECK_TIMER, c->timers[i], cn->name, NULL, NULL);
		free(c->timers[i]);
	}
	c->ntimers = 0;
}

static void
report_projection(check *c, size_t k)
{
	const char *where, *name;

	tidei_buf_reset(&c->detail);
	name = tidei_projections_describe(c->ps, k, &where, &c->detail);
	tidei_buf_putc(&c->detail, 0);
	report(c, TIDE_CHECK_PROJECTION, name, NULL,
	       c->detail.failed ? "" : (const char *)c->detail.p, where);
}

static int
check_impl(const char *const *scripts, tide_check_fn *fn, void *ud, char *err)
{
	tidei_consumers_opts co;
	tidei_projections_opts po;
	tidei_consumers *cs = NULL;
	tidei_buf path = { 0 };
	check c;
	size_t n = 0, ncons = 0, nproj = 0;
	int rc, failed = 0;

	if (scripts == NULL || scripts[0] == NULL || fn == NULL)
		return tidei_err(err, TIDE_EINVAL, "tide_check: no scripts, or no callback");
	memset(&c, 0, sizeof c);
	c.fn = fn;
	c.ud = ud;
	while (scripts[n] != NULL)
		n++;
	tidei_lua_path(&path, NULL, scripts, n);
	tidei_consumers_opts_offline(&co, path.failed ? NULL : (const char *)path.p);
	co.projection = host_projection;
	co.projection_ud = &c;
	if ((rc = tidei_consumers_new(&cs, &co, err)) != TIDE_OK)
		goto out;
	memset(&po, 0, sizeof po);
	po.script = tidei_consumers_script(cs);
	po.memory_only = 1;
	if ((rc = tidei_projections_new(&c.ps, &po, err)) != TIDE_OK)
		goto out;
	for (size_t k = 0; k < n; k++) {
		char why[TIDEI_ERRLEN];
		c.script = scripts[k];
		report(&c, TIDE_CHECK_SCRIPT, scripts[k], NULL, NULL, NULL);
		if (tidei_consumers_load(cs, scripts[k], why) != TIDE_OK) {
			report(&c, TIDE_CHECK_ERROR, NULL, NULL, why, NULL);
			failed = 1;
		}
		/* what it defined (up to its error, if it failed) */
		for (; ncons < tidei_consumers_count(cs); ncons++)
			report_consumer(&c, cs, ncons);
		for (; nproj < tidei_projections_count(c.ps); nproj++)
			report_projection(&c, nproj);
	}
	rc = failed ? tidei_err(err, TIDE_ESCRIPT, "a script did not load") : TIDE_OK;
out:
	tidei_projections_destroy(c.ps);
	tidei_consumers_destroy(cs);
	tidei_buf_free(&path);
	tidei_buf_free(&c.detail);
	free(c.timers);
	return rc;
}

TIDE_API int
tide_check(const char *const *scripts, tide_check_fn *fn, void *ud)
{
	char msg[TIDEI_ERRLEN] = "";

	return tidei_done(check_impl(scripts, fn, ud, msg), msg);
}
