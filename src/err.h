/*
 * err.h - error plumbing shared by every module: the per-handle detail
 * message and the one way to die on an impossible state.
 */
#ifndef TIDE_ERR_H
#define TIDE_ERR_H

#include <stdarg.h>
#include <stddef.h>

#include "tide.h"

/** Size of every detail-message buffer. */
#define TIDEI_ERRLEN 512

#if defined(__GNUC__)
#define TIDEI_PRINTF(f, a) __attribute__((format(printf, f, a)))
#define TIDEI_NORETURN __attribute__((noreturn))
#else
#define TIDEI_PRINTF(f, a)
#define TIDEI_NORETURN
#endif

/** Format a detail message into @p buf (TIDEI_ERRLEN bytes) and return
 *  @p code, so that "return tidei_err(buf, TIDE_EIO, ...)" reads as one
 *  statement. */
int tidei_err(char *buf, int code, const char *fmt, ...) TIDEI_PRINTF(3, 4);
int tidei_verr(char *buf, int code, const char *fmt, va_list ap) TIDEI_PRINTF(3, 0);

/** Leave the detail of a failing public call for tide_errmsg() (this
 *  thread's) and return @p code; a NULL or empty @p fmt leaves
 *  tide_strerror(code).  TIDE_OK leaves the last message alone. */
int tidei_fail(int code, const char *fmt, ...) TIDEI_PRINTF(2, 3);

/** The end of a public call that wrote its detail into @p detail:
 *  TIDE_OK as it is, or @p rc with the detail left for tide_errmsg(). */
int tidei_done(int rc, const char *detail);

/** Translate an LMDB return code into a Tide code (MDB_MAP_FULL becomes
 *  TIDE_EFULL, MDB_NOTFOUND TIDE_ENOTFOUND, version mismatches TIDE_EFORMAT). */
int tidei_err_mdb(int mdb_rc);

/** Abort with a message: for states that must be impossible. */
TIDEI_NORETURN void tidei_panic(const char *fmt, ...) TIDEI_PRINTF(1, 2);

#endif
