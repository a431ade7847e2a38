/*
 * ring.h - the state of a sliding or count window (agg.c's second shape
 * of state): its entries, kept exactly, with what makes adding and
 * evicting them cheap.  agg.c checks the spec and the event before
 * calling here, and owns the watermark.
 */
#ifndef TIDE_RING_H
#define TIDE_RING_H

#include <stddef.h>
#include <stdint.h>

#include "agg.h"
#include "buf.h"
#include "sketch.h"

typedef struct tidei_ring tidei_ring;

/** The bytes a ring takes, for one placed inside another allocation
 *  (tidei_ring_init); a multiple of 8. */
size_t tidei_ring_size(void);
/** Make the tidei_ring_size() bytes at @p r (8-aligned) an empty ring. */
tidei_ring *tidei_ring_init(void *r);
/** Free what ring @p r holds, not @p r itself. */
void tidei_ring_fini(tidei_ring *r);

/** Add an event at @p t with finite value @p v and mixed token @p h;
 *  @p wm is the window's watermark.  TIDE_OK, TIDEI_WIN_LATE (sliding: t
 *  at or before max(latest, wm) - size), TIDE_EINVAL (TIDEI_WIN_MAX_ENTRIES
 *  would stay) or TIDE_ENOMEM, with a message in @p err; on any but
 *  TIDE_OK nothing changed. */
int tidei_ring_add(tidei_ring *r, const tidei_win_spec *s, int64_t wm, int64_t t, double v,
		   uint64_t h, char *err);
/** Evict what watermark @p wm pushes out of a sliding window. */
void tidei_ring_advance(tidei_ring *r, const tidei_win_spec *s, int64_t wm);
/** The aggregates of the current entries. */
/** Ask for @p r's memory ahead (a hint): at @p depth 0 the ring, at 1
 *  its oldest and newest entries, where an add evicts and appends. */
void tidei_ring_prefetch(const tidei_ring *r, int depth);
void tidei_ring_read(const tidei_ring *r, const tidei_win_spec *s, tidei_agg *o);
/** Whether it holds no entry. */
int tidei_ring_empty(const tidei_ring *r);
/** Bytes held, beside the ring itself (tidei_ring_size()). */
size_t tidei_ring_memory(const tidei_ring *r);

/** Append the stored form. */
void tidei_ring_encode(const tidei_ring *r, const tidei_win_spec *s, tidei_buf *b);
/** Read a stored form into @p r (new and empty); @p wm is the window's
 *  watermark, read before.  TIDE_OK, TIDE_EIO or TIDE_ENOMEM; on failure
 *  @p r is the caller's to free. */
int tidei_ring_decode(tidei_ring *r, const tidei_win_spec *s, int64_t wm, tidei_rd *rd);

#endif
