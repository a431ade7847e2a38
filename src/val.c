/*
 * val.c - encoder and reader for the MessagePack subset described in
 * val.h.  The reader never allocates and checks every length against the
 * end of its input, because encoded values come back from disk and must
 * not be trusted blindly.  Writers pick the shortest form for scalars;
 * containers opened before their size is known use the 32-bit count form,
 * which can be patched in place.
 *
 * Why not libmsgpack: the hot path decodes straight onto a Lua stack and
 * encodes straight from JSON callbacks; msgpack-c's unpacker builds a
 * zone-allocated object tree first, which is the allocation we avoid.
 */
#include "config.h"

#include <string.h>

#include "val.h"

static void
put_be(tidei_buf *b, uint8_t tag, uint64_t v, int bytes)
{
	uint8_t tmp[9];

	tmp[0] = tag;
	for (int i = 0; i < bytes; i++)
		tmp[1 + i] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
	tidei_buf_put(b, tmp, (size_t)bytes + 1);
}

static uint64_t
get_be(const uint8_t *p, int bytes)
{
	uint64_t v = 0;

	for (int i = 0; i < bytes; i++)
		v = (v << 8) | p[i];
	return v;
}

void
tidei_val_nil(tidei_buf *b)
{
	tidei_buf_putc(b, 0xc0);
}

void
tidei_val_bool(tidei_buf *b, int v)
{
	tidei_buf_putc(b, v ? 0xc3 : 0xc2);
}

void
tidei_val_int(tidei_buf *b, int64_t v)
{
	if (v >= 0 && v <= 127)
		tidei_buf_putc(b, (uint8_t)v);
	else if (v < 0 && v >= -32)
		tidei_buf_putc(b, (uint8_t)(0xe0 | (v + 32)));
	else if (v >= INT8_MIN && v <= INT8_MAX)
		put_be(b, 0xd0, (uint64_t)v, 1);
	else if (v >= INT16_MIN && v <= INT16_MAX)
		put_be(b, 0xd1, (uint64_t)v, 2);
	else if (v >= INT32_MIN && v <= INT32_MAX)
		put_be(b, 0xd2, (uint64_t)v, 4);
	else
		put_be(b, 0xd3, (uint64_t)v, 8);
}

void
tidei_val_double(tidei_buf *b, double v)
{
	uint64_t bits;

	memcpy(&bits, &v, sizeof bits);
	put_be(b, 0xcb, bits, 8);
}

static void
put_len(tidei_buf *b, uint8_t fix, uint8_t fixmax, uint8_t t8, uint8_t t16, uint8_t t32, size_t n)
{
	if (fix && n <= fixmax)
		tidei_buf_putc(b, (uint8_t)(fix | n));
	else if (t8 && n <= 0xff)
		put_be(b, t8, n, 1);
	else if (n <= 0xffff)
		put_be(b, t16, n, 2);
	else
		put_be(b, t32, n, 4);
}

void
tidei_val_str(tidei_buf *b, const char *s, size_t n)
{
	put_len(b, 0xa0, 31, 0xd9, 0xda, 0xdb, n);
	tidei_buf_put(b, s, n);
}

void
tidei_val_bin(tidei_buf *b, const void *s, size_t n)
{
	put_len(b, 0, 0, 0xc4, 0xc5, 0xc6, n);
	tidei_buf_put(b, s, n);
}

void
tidei_val_array(tidei_buf *b, uint32_t count)
{
	put_len(b, 0x90, 15, 0, 0xdc, 0xdd, count);
}

void
tidei_val_map(tidei_buf *b, uint32_t count)
{
	put_len(b, 0x80, 15, 0, 0xde, 0xdf, count);
}

size_t
tidei_val_open_array(tidei_buf *b)
{
	size_t at = b->len;

	put_be(b, 0xdd, 0, 4);
	return at;
}

size_t
tidei_val_open_map(tidei_buf *b)
{
	size_t at = b->len;

	put_be(b, 0xdf, 0, 4);
	return at;
}

void
tidei_val_close(tidei_buf *b, size_t at, uint32_t count)
{
	if (b->failed || at + 5 > b->len)
		return;
	for (int i = 0; i < 4; i++)
		b->p[at + 1 + i] = (uint8_t)(count >> (8 * (3 - i)));
}

/* Reader ----------------------------------------------------------------- */

#define NEED(r, n) \
	do { \
		if ((size_t)((r)->end - (r)->p) < (size_t)(n)) \
			return -1; \
	} while (0)

static int
read_bytes(tidei_vreader *r, tidei_vitem *it, tidei_vtype type, int lenbytes)
{
	uint64_t n;

	NEED(r, lenbytes);
	n = get_be(r->p, lenbytes);
	r->p += lenbytes;
	NEED(r, n);
	it->type = type;
	it->u.s.p = (const char *)r->p;
	it->u.s.n = (uint32_t)n;
	r->p += n;
	return 0;
}

static int
read_count(tidei_vreader *r, tidei_vitem *it, tidei_vtype type, int lenbytes)
{
	NEED(r, lenbytes);
	it->type = type;
	it->u.count = (uint32_t)get_be(r->p, lenbytes);
	r->p += lenbytes;
	return 0;
}

static int
read_int(tidei_vreader *r, tidei_vitem *it, int bytes, int is_signed)
{
	uint64_t v;

	NEED(r, bytes);
	v = get_be(r->p, bytes);
	r->p += bytes;
	it->type = TIDEI_V_INT;
	if (is_signed) {
		int shift = 64 - 8 * bytes;
		/* sign-extend through an arithmetic shift of the unsigned bits */
		it->u.i = shift ? (int64_t)(v << shift) >> shift : (int64_t)v;
	} else if (v > INT64_MAX) {
		it->type = TIDEI_V_DOUBLE;
		it->u.d = (double)v;
	} else {
		it->u.i = (int64_t)v;
	}
	return 0;
}

int
tidei_val_next(tidei_vreader *r, tidei_vitem *it)
{
	uint8_t c;

	NEED(r, 1);
	c = *r->p++;
	if (c <= 0x7f) {
		it->type = TIDEI_V_INT;
		it->u.i = c;
		return 0;
	}
	if (c >= 0xe0) {
		it->type = TIDEI_V_INT;
		it->u.i = (int64_t)c - 256;
		return 0;
	}
	if ((c & 0xe0) == 0xa0) {
		size_t n = c & 0x1f;
		NEED(r, n);
		it->type = TIDEI_V_STR;
		it->u.s.p = (const char *)r->p;
		it->u.s.n = (uint32_t)n;
		r->p += n;
		return 0;
	}
	if ((c & 0xf0) == 0x90) {
		it->type = TIDEI_V_ARRAY;
		it->u.count = c & 0x0f;
		return 0;
	}
	if ((c & 0xf0) == 0x80) {
		it->type = TIDEI_V_MAP;
		it->u.count = c & 0x0f;
		return 0;
	}
	switch (c) {
	case 0xc0: it->type = TIDEI_V_NIL; return 0;
	case 0xc2: it->type = TIDEI_V_FALSE; return 0;
	case 0xc3: it->type = TIDEI_V_TRUE; return 0;
	case 0xc4: return read_bytes(r, it, TIDEI_V_BIN, 1);
	case 0xc5: return read_bytes(r, it, TIDEI_V_BIN, 2);
	case 0xc6: return read_bytes(r, it, TIDEI_V_BIN, 4);
	case 0xca: {
		float f;
		uint32_t bits;
		NEED(r, 4);
		bits = (uint32_t)get_be(r->p, 4);
		memcpy(&f, &bits, 4);
		r->p += 4;
		it->type = TIDEI_V_DOUBLE;
		it->u.d = f;
		return 0;
	}
	case 0xcb: {
		uint64_t bits;
		NEED(r, 8);
		bits = get_be(r->p, 8);
		memcpy(&it->u.d, &bits, 8);
		r->p += 8;
		it->type = TIDEI_V_DOUBLE;
		return 0;
	}
	case 0xcc: return read_int(r, it, 1, 0);
	case 0xcd: return read_int(r, it, 2, 0);
	case 0xce: return read_int(r, it, 4, 0);
	case 0xcf: return read_int(r, it, 8, 0);
	case 0xd0: return read_int(r, it, 1, 1);
	case 0xd1: return read_int(r, it, 2, 1);
	case 0xd2: return read_int(r, it, 4, 1);
	case 0xd3: return read_int(r, it, 8, 1);
	case 0xd9: return read_bytes(r, it, TIDEI_V_STR, 1);
	case 0xda: return read_bytes(r, it, TIDEI_V_STR, 2);
	case 0xdb: return read_bytes(r, it, TIDEI_V_STR, 4);
	case 0xdc: return read_count(r, it, TIDEI_V_ARRAY, 2);
	case 0xdd: return read_count(r, it, TIDEI_V_ARRAY, 4);
	case 0xde: return read_count(r, it, TIDEI_V_MAP, 2);
	case 0xdf: return read_count(r, it, TIDEI_V_MAP, 4);
	default: return -1;
	}
}

int
tidei_val_skip(tidei_vreader *r)
{
	/* Iterative: count the values still to skip instead of recursing, so
	 * a hostile nesting depth cannot overflow the C stack. */
	uint64_t pending = 1;
	tidei_vitem it;

	while (pending > 0) {
		if (tidei_val_next(r, &it) != 0)
			return -1;
		pending--;
		if (it.type == TIDEI_V_ARRAY)
			pending += it.u.count;
		else if (it.type == TIDEI_V_MAP)
			pending += 2 * (uint64_t)it.u.count;
	}
	return 0;
}

int
tidei_val_find(tidei_vreader *r, const char *name, size_t n)
{
	tidei_vitem map, key;

	if (tidei_val_next(r, &map) != 0 || map.type != TIDEI_V_MAP)
		return 0;
	for (uint32_t k = 0; k < map.u.count; k++) {
		if (tidei_val_next(r, &key) != 0 || key.type != TIDEI_V_STR)
			return 0;
		if (key.u.s.n == n && memcmp(key.u.s.p, name, n) == 0)
			return 1;
		if (tidei_val_skip(r) != 0)
			return 0;
	}
	return 0;
}
