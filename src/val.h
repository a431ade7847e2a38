/*
 * val.h - the compact binary encoding of structured values (event data,
 * extension values, and later projection state).
 *
 * The encoding is a subset of MessagePack: nil, booleans, 64-bit integers,
 * doubles, UTF-8 strings, binary strings, arrays and maps with string keys.
 * Integers keep all 64 bits and doubles stay doubles, so values cross the
 * C/Lua/JSON boundaries without losing fidelity.
 */
#ifndef TIDE_VAL_H
#define TIDE_VAL_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

typedef enum tidei_vtype {
	TIDEI_V_NIL,
	TIDEI_V_FALSE,
	TIDEI_V_TRUE,
	TIDEI_V_INT,
	TIDEI_V_DOUBLE,
	TIDEI_V_STR,
	TIDEI_V_BIN,
	TIDEI_V_ARRAY,
	TIDEI_V_MAP,
} tidei_vtype;

/** One decoded item.  Strings point into the encoded bytes; containers
 *  give their element count (a map counts pairs) and are followed by their
 *  elements. */
typedef struct tidei_vitem {
	tidei_vtype type;
	union {
		int64_t i;
		double d;
		struct {
			const char *p;
			uint32_t n;
		} s;
		uint32_t count;
	} u;
} tidei_vitem;

/** A bounded reader over encoded bytes. */
typedef struct tidei_vreader {
	const uint8_t *p;
	const uint8_t *end;
} tidei_vreader;

/* Writers.  They append to @p b; failures are sticky in b->failed. */
void tidei_val_nil(tidei_buf *b);
void tidei_val_bool(tidei_buf *b, int v);
void tidei_val_int(tidei_buf *b, int64_t v);
void tidei_val_double(tidei_buf *b, double v);
void tidei_val_str(tidei_buf *b, const char *s, size_t n);
void tidei_val_bin(tidei_buf *b, const void *s, size_t n);
/** Containers of known size. */
void tidei_val_array(tidei_buf *b, uint32_t count);
void tidei_val_map(tidei_buf *b, uint32_t count);
/** Containers whose size is known only at the end: open returns the
 *  position to pass to tidei_val_close() with the final count. */
size_t tidei_val_open_array(tidei_buf *b);
size_t tidei_val_open_map(tidei_buf *b);
void tidei_val_close(tidei_buf *b, size_t at, uint32_t count);

/** Read the next item.  Returns 0, or -1 when the bytes are truncated or
 *  not a value of this encoding. */
int tidei_val_next(tidei_vreader *r, tidei_vitem *it);
/** Skip one complete value (containers with their elements). */
int tidei_val_skip(tidei_vreader *r);

/** With @p r at a map, find its member @p name (@p n bytes): returns 1 and
 *  leaves @p r at the member's value, or 0 (not a map, no such member, or
 *  malformed). */
int tidei_val_find(tidei_vreader *r, const char *name, size_t n);

#endif
