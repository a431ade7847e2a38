/*
 * shared.h - tide.shared(name [, init]): tables that several handlers of
 * the scripts share, made durable.
 */
#ifndef TIDE_SHARED_H
#define TIDE_SHARED_H

#include <lua.h>

#include "log.h"
#include "script.h"

/** Longest name of a shared table. */
#define TIDEI_SHARED_NAME_MAX 200

/** Tables that several handlers of the scripts share, made durable:
 *  tide.shared(name [, init]).  They are read back from the log when the
 *  consumers start (and after an aborted turn), and written with each
 *  turn when they changed.  A handler that fails may leave changes in
 *  them: unlike a key's state they are not rolled back. */
typedef struct tidei_shared tidei_shared;
int tidei_shared_new(tidei_shared **out);
void tidei_shared_free(tidei_shared *sh, lua_State *L);
/** Register the table at @p idx of @p L as shared table @p name. */
int tidei_shared_define(tidei_shared *sh, lua_State *L, const char *name, int idx, char *err);
int tidei_shared_load(tidei_shared *sh, tidei_script *s, tidei_log *log, MDB_txn *txn, char *err);
int tidei_shared_flush(tidei_shared *sh, tidei_script *s, tidei_log *log, char *err);

#endif
