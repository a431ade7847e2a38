/*
 * scratch.h - a log of one's own in a temporary directory, for work that
 * must leave the live log alone (tide replay, tide backtest).
 */
#ifndef TIDE_SCRATCH_H
#define TIDE_SCRATCH_H

#include <stddef.h>

#include "log.h"

/** Make a fresh directory under $TMPDIR named "tide-@p what-" and six
 *  random characters (its path into @p dir, @p n bytes) and open a log
 *  there without fsync.  On failure *dir is "". */
int tidei_scratch_open(char *dir, size_t n, const char *what, tidei_log **out, char *err);
/** Close @p log (may be NULL) and remove @p dir (if not "") with the
 *  files a log makes there. */
void tidei_scratch_close(const char *dir, tidei_log *log);

#endif
