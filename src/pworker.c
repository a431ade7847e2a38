/*
 * pworker.c - a projection build's helper (see pworker.h): loads the
 * scripts as the engine did, keeps only the projection being built, and
 * hands the work pbuild.c gives it to the projections' own functions.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "projection.h"
#include "pworker.h"

typedef struct worker {
	tidei_script *script;
	tidei_projections *ps;
	const char *name;    /* the projection being built */
	const char *loading; /* the script being loaded, or NULL */
	int loaded;
	void (*log)(void *ud, int level, const char *msg);
	void *log_ud;
} worker;

static int
host_on(void *ud, const tidei_on_opts *o, int ref, const char *where, char *err)
{
	(void)ud;
	(void)o;
	(void)ref;
	(void)where;
	(void)err;
	return TIDE_OK; /* consumers stay with the engine */
}

static int
host_once(void *ud, const char *key, size_t n, int *first, char *err)
{
	(void)ud;
	(void)key;
	(void)n;
	(void)first;
	/* as in the engine, where projections are not consumers */
	return tidei_err(err, TIDE_ESTATE, "tide.once can only be called from a handler");
}

static int
host_emit(void *ud, tidei_evb *b, char *err)
{
	(void)ud;
	(void)b;
	return tidei_err(err, TIDE_ESTATE, "tide.emit can only be called from a handler");
}

static int
host_projection(void *ud, lua_State *L, const char *name, int spec, const char *where, char *err)
{
	worker *w = ud;

	if (w->loading == NULL)
		return tidei_err(err, TIDE_ESTATE,
				 "tide.projection must be called while the script loads");
	if (strcmp(name, w->name) != 0)
		return TIDE_OK;
	return tidei_projections_define(w->ps, L, name, spec, w->loading, where, err);
}

static void
host_log(void *ud, int level, const char *msg)
{
	worker *w = ud;

	if (w->loaded) /* the engine printed what loading prints */
		w->log(w->log_ud, level, msg);
}

static void
w_close(void *p)
{
	worker *w = p;

	if (w == NULL)
		return;
	tidei_projections_destroy(w->ps);
	tidei_script_destroy(w->script);
	free(w);
}

static int
w_open(void **out, const tidei_pbuild_env *env, const char *name, uint64_t hash, unsigned part,
       unsigned nparts, const atomic_int *stop, void (*log)(void *ud, int level, const char *msg),
       void *log_ud, char *err)
{
	worker *w = calloc(1, sizeof *w);
	tidei_projections_opts po;
	tidei_host host;
	int rc;

	*out = NULL;
	if (w == NULL)
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	w->name = name;
	w->log = log;
	w->log_ud = log_ud;
	memset(&host, 0, sizeof host);
	host.ud = w;
	host.on = host_on;
	host.once = host_once;
	host.emit = host_emit;
	host.projection = host_projection;
	host.log = host_log;
	if ((rc = tidei_script_new(&w->script, &env->script, &host, err)) != TIDE_OK)
		goto fail;
	memset(&po, 0, sizeof po);
	po.script = w->script;
	if ((rc = tidei_projections_new(&w->ps, &po, err)) != TIDE_OK)
		goto fail;
	for (size_t k = 0; k < env->nscripts && rc == TIDE_OK; k++) {
		if (atomic_load(stop)) {
			rc = tidei_err(err, TIDE_ESTATE, "stopped");
			goto fail;
		}
		w->loading = env->scripts[k];
		rc = tidei_script_load(w->script, env->scripts[k], err);
	}
	w->loading = NULL;
	w->loaded = 1;
	if (rc != TIDE_OK)
		goto fail;
	if (tidei_projections_hash(w->ps, name) != hash) {
		rc = tidei_err(err, TIDE_ESTATE,
			       "the definition of '%s' differs from the engine's (was a script "
			       "changed on disk?)",
			       name);
		goto fail;
	}
	tidei_projections_part(w->ps, part, nparts, stop);
	*out = w;
	return TIDE_OK;
fail:
	w_close(w);
	return rc;
}

static int
w_find_keys(void *w, tidei_log *log, MDB_txn *txn, tidei_keyed *kd, uint64_t from, uint64_t to,
	    uint64_t *at, char *err)
{
	return tidei_projections_find_keys(((worker *)w)->ps, log, txn, kd, from, to, at, err);
}

static int
w_run_part(void *w, tidei_log *log, MDB_txn *txn, uint32_t gen, const tidei_keyed *kd,
	   uint64_t from, uint64_t to, int timed, uint64_t *at, char *err)
{
	return tidei_projections_run_part(((worker *)w)->ps, log, txn, gen, kd, from, to, timed, at,
					  err);
}

static int
w_take(void *w, tidei_buf *out, tidei_histo *took, char *err)
{
	return tidei_projections_take(((worker *)w)->ps, out, took, err);
}

static size_t
w_held(void *w)
{
	return tidei_projections_held(((worker *)w)->ps);
}

const tidei_pbuild_ops tidei_pworker_ops = {
	w_open, w_find_keys, w_run_part, w_take, w_held, w_close,
};
