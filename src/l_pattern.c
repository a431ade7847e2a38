/*
 * l_pattern.c - Lua 5.4's patterns for string.find, string.match,
 * string.gmatch and string.gsub, with every step of the matcher paid for.
 *
 * Lua's matcher backtracks: ("a*"):rep(40) .. "b" against forty a's tries
 * an exponential number of ways, all inside one C call that the count
 * hook never sees.  This one implements the same language (the manual's
 * section 6.4.1: classes, sets, the four repetitions, anchors, captures
 * and position captures, %b, %f, back-references, gsub's replacements)
 * with the same results, the same errors and the same limits (32
 * captures; "pattern too complex" past 200 nested attempts), and counts
 * its steps: every attempt at a pattern item and every few bytes scanned.
 * The count is charged to the running call through tidei_lstate_charge()
 * a chunk at a time, so a runaway pattern meets the instruction budget
 * (or the time limit) like a runaway loop.  tests/test_sandbox.c checks
 * it against Lua's own library on fixed and random patterns.
 *
 * A pattern is translated once per call into items (one per pattern
 * element, sets as 256-bit maps, so testing a byte against [%w_.-] is one
 * lookup), and the matcher walks the items.  Lua reports a malformed
 * pattern only when matching reaches the bad element (("x["):find finds
 * nothing in "abc", without an error), so translation stops at the first
 * malformed element with an item that raises its error when reached.
 * Which attempts nest (and so count towards "pattern too complex")
 * follows Lua: a capture while it is open, and each repetition being
 * tried.
 *
 * Character classes are those of the C locale, whatever the process's
 * locale: a script matches the same bytes on every machine.
 */
#include "config.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdint.h>
#include <string.h>

#include "l_pattern.h"
#include "lstate.h"

#define MAX_CAPTURES 32 /* LUA_MAXCAPTURES */
#define MAX_DEPTH 200   /* Lua's limit on nested attempts */
#define CAP_OPEN (-1)   /* a capture's length while it is open */
#define CAP_POSITION (-2)
/* Steps are charged at least this many at a time. */
#define STEP_CHUNK 1024
/* Bytes scanned (by memchr, memcmp or a repetition) per step. */
#define SCAN_BYTES 8
/* Patterns up to this long are translated into buffers on the C stack. */
#define SMALL_PATTERN 64

/* ------------------------------------------------------------------------
 * Translation
 * ------------------------------------------------------------------------ */

typedef struct cset {
	uint32_t w[8];
} cset;

static int
in_set(const cset *cs, unsigned char c)
{
	return (cs->w[c >> 5] >> (c & 31)) & 1;
}

/* %a %c %d %g %l %p %s %u %w %x and the deprecated %z, in the C locale */
static const char class_letters[] = "acdglpsuwxz";
static const cset classes[] = {
	{ { 0x00000000, 0x00000000, 0x07fffffe, 0x07fffffe, 0, 0, 0, 0 } }, /* %a */
	{ { 0xffffffff, 0x00000000, 0x00000000, 0x80000000, 0, 0, 0, 0 } }, /* %c */
	{ { 0x00000000, 0x03ff0000, 0x00000000, 0x00000000, 0, 0, 0, 0 } }, /* %d */
	{ { 0x00000000, 0xfffffffe, 0xffffffff, 0x7fffffff, 0, 0, 0, 0 } }, /* %g */
	{ { 0x00000000, 0x00000000, 0x00000000, 0x07fffffe, 0, 0, 0, 0 } }, /* %l */
	{ { 0x00000000, 0xfc00fffe, 0xf8000001, 0x78000001, 0, 0, 0, 0 } }, /* %p */
	{ { 0x00003e00, 0x00000001, 0x00000000, 0x00000000, 0, 0, 0, 0 } }, /* %s */
	{ { 0x00000000, 0x00000000, 0x07fffffe, 0x00000000, 0, 0, 0, 0 } }, /* %u */
	{ { 0x00000000, 0x03ff0000, 0x07fffffe, 0x07fffffe, 0, 0, 0, 0 } }, /* %w */
	{ { 0x00000000, 0x03ff0000, 0x0000007e, 0x0000007e, 0, 0, 0, 0 } }, /* %x */
	{ { 0x00000001, 0x00000000, 0x00000000, 0x00000000, 0, 0, 0, 0 } }, /* %z */
};

/* Add what "%<cl>" matches to @p cs.  An upper-case class letter is the
 * complement; any other character stands for itself. */
static void
add_class(cset *cs, unsigned char cl)
{
	unsigned char lower = cl >= 'A' && cl <= 'Z' ? (unsigned char)(cl + 32) : cl;
	const char *k = lower != 0 ? strchr(class_letters, lower) : NULL;

	if (k == NULL) {
		cs->w[cl >> 5] |= 1u << (cl & 31);
		return;
	}
	for (int i = 0; i < 8; i++)
		cs->w[i] |= lower == cl ? classes[k - class_letters].w[i]
					: ~classes[k - class_letters].w[i];
}

static void
add_range(cset *cs, unsigned char lo, unsigned char hi)
{
	for (unsigned c = lo; c <= hi; c++)
		cs->w[c >> 5] |= 1u << (c & 31);
}

enum op {
	P_END,      /* the pattern ends: a match */
	P_ANY,      /* . */
	P_CHAR,     /* a byte: a */
	P_SET,      /* a class or [set]: sets[set] */
	P_OPEN,     /* ( */
	P_POSITION, /* () */
	P_CLOSE,    /* ) */
	P_EOS,      /* $ at the end of the pattern */
	P_BALANCE,  /* %b with a and b */
	P_FRONTIER, /* %f[set] */
	P_BACKREF,  /* %0-%9: the digit in a */
	P_ERROR,    /* malformed from here: message a */
};

enum {
	E_ENDS_WITH_ESCAPE,
	E_MISSING_BRACKET,
	E_BALANCE_ARGUMENTS,
	E_FRONTIER_BRACKET,
};

static const char *const pattern_errors[] = {
	"malformed pattern (ends with '%')",
	"malformed pattern (missing ']')",
	"malformed pattern (missing arguments to '%b')",
	"missing '[' after '%f' in pattern",
};

typedef struct pitem {
	uint8_t op;  /* enum op */
	uint8_t rep; /* P_ANY, P_CHAR, P_SET: 0, '*', '+', '-' or '?' */
	uint8_t a, b;
	uint32_t set; /* P_SET, P_FRONTIER */
} pitem;

/* Items and sets for a pattern of @p lp bytes: every item but P_END takes
 * at least one byte of the pattern, every set at least two. */
#define ITEMS_FOR(lp) ((lp) + 1)
#define SETS_FOR(lp) ((lp) / 2 + 1)

/* The ']' that closes the set starting at @p p ('['), or NULL.  The first
 * byte of a set (after '^') is always a member, so "[]]" is the set of
 * ']'; '%' escapes the byte after it. */
static const char *
set_end(const char *p, const char *end)
{
	p++;
	if (p < end && *p == '^')
		p++;
	do {
		if (p == end)
			return NULL;
		if (*p++ == '%' && p < end)
			p++;
	} while (p == end || *p != ']');
	return p;
}

/* The set from '[' at @p p to its ']' at @p close. */
static void
make_set(cset *cs, const char *p, const char *close)
{
	int negate = p[1] == '^';
	const char *q = p + 1 + negate;

	memset(cs, 0, sizeof *cs);
	for (; q < close; q++) {
		if (*q == '%') {
			q++;
			add_class(cs, (unsigned char)*q);
		} else if (q[1] == '-' && q + 2 < close) {
			add_range(cs, (unsigned char)q[0], (unsigned char)q[2]);
			q += 2;
		} else {
			cs->w[(unsigned char)*q >> 5] |= 1u << ((unsigned char)*q & 31);
		}
	}
	if (negate)
		for (int i = 0; i < 8; i++)
			cs->w[i] = ~cs->w[i];
}

/* Translate the @p lp bytes at @p p into @p items and @p sets (room for
 * ITEMS_FOR and SETS_FOR). */
static void
translate(const char *p, size_t lp, pitem *items, cset *sets)
{
	const char *end = p + lp, *q;
	pitem *it = items;
	uint32_t nsets = 0;

	for (; p < end; it++) {
		memset(it, 0, sizeof *it);
		switch (*p) {
		case '(':
			it->op = p + 1 < end && p[1] == ')' ? P_POSITION : P_OPEN;
			p += it->op == P_POSITION ? 2 : 1;
			continue;
		case ')':
			it->op = P_CLOSE;
			p++;
			continue;
		case '$':
			if (p + 1 == end) {
				it->op = P_EOS;
				p++;
				continue;
			}
			break; /* elsewhere a plain '$' */
		case '%':
			if (p + 1 == end)
				break; /* malformed, below */
			if (p[1] == 'b') {
				if (p + 3 >= end) {
					it->op = P_ERROR;
					it->a = E_BALANCE_ARGUMENTS;
					goto done;
				}
				it->op = P_BALANCE;
				it->a = (uint8_t)p[2];
				it->b = (uint8_t)p[3];
				p += 4;
				continue;
			}
			if (p[1] == 'f') {
				p += 2;
				if (p == end || *p != '[') {
					it->op = P_ERROR;
					it->a = E_FRONTIER_BRACKET;
					goto done;
				}
				if ((q = set_end(p, end)) == NULL) {
					it->op = P_ERROR;
					it->a = E_MISSING_BRACKET;
					goto done;
				}
				it->op = P_FRONTIER;
				it->set = nsets;
				make_set(&sets[nsets++], p, q);
				p = q + 1;
				continue;
			}
			if (p[1] >= '0' && p[1] <= '9') {
				it->op = P_BACKREF;
				it->a = (uint8_t)p[1];
				p += 2;
				continue;
			}
			break;
		}
		/* one byte's worth: '.', a class, a set or a byte, and maybe a
		 * repetition after it */
		switch (*p) {
		case '.':
			it->op = P_ANY;
			q = p + 1;
			break;
		case '%':
			if (p + 1 == end) {
				it->op = P_ERROR;
				it->a = E_ENDS_WITH_ESCAPE;
				goto done;
			}
			it->op = P_SET;
			it->set = nsets;
			memset(&sets[nsets], 0, sizeof sets[nsets]);
			add_class(&sets[nsets++], (unsigned char)p[1]);
			q = p + 2;
			break;
		case '[':
			if ((q = set_end(p, end)) == NULL) {
				it->op = P_ERROR;
				it->a = E_MISSING_BRACKET;
				goto done;
			}
			it->op = P_SET;
			it->set = nsets;
			make_set(&sets[nsets++], p, q);
			q++;
			break;
		default:
			it->op = P_CHAR;
			it->a = (uint8_t)*p;
			q = p + 1;
			break;
		}
		if (q < end && (*q == '*' || *q == '+' || *q == '-' || *q == '?'))
			it->rep = (uint8_t)*q++;
		p = q;
	}
	memset(it, 0, sizeof *it);
	it->op = P_END;
done:
	return;
}

/* A translated pattern. */
typedef struct program {
	pitem *items;
	cset *sets;
} program;

/* Room on the C stack for a short pattern's program. */
typedef struct small_program {
	pitem items[ITEMS_FOR(SMALL_PATTERN)];
	cset sets[SETS_FOR(SMALL_PATTERN)];
} small_program;

/* Translate into @p small when the pattern is short, else into a userdata
 * left on the stack.  [-0, +(0|1), m] */
static void
compile(lua_State *L, program *pg, small_program *small, const char *p, size_t lp)
{
	if (lp <= SMALL_PATTERN) {
		pg->items = small->items;
		pg->sets = small->sets;
	} else {
		pg->items = lua_newuserdatauv(
			L, ITEMS_FOR(lp) * sizeof(pitem) + SETS_FOR(lp) * sizeof(cset), 0);
		pg->sets = (cset *)(pg->items + ITEMS_FOR(lp));
	}
	if (lp >= SCAN_BYTES)
		tidei_lstate_charge(L, lp / SCAN_BYTES);
	translate(p, lp, pg->items, pg->sets);
}

/* ------------------------------------------------------------------------
 * Matching
 * ------------------------------------------------------------------------ */

typedef struct mstate {
	const char *src, *end; /* the subject */
	const pitem *items;
	const cset *sets;
	lua_State *L;
	int depth; /* nested attempts left */
	int level; /* captures begun */
	uint64_t steps, charged, due;
	struct {
		const char *init;
		ptrdiff_t len; /* or CAP_OPEN, CAP_POSITION */
	} cap[MAX_CAPTURES];
} mstate;

static void
charge_steps(mstate *ms)
{
	uint64_t units = ms->steps - ms->charged;

	ms->charged = ms->steps;
	ms->due = ms->steps + STEP_CHUNK;
	if (units > 0)
		tidei_lstate_charge(ms->L, units);
}

static inline void
step(mstate *ms, uint64_t n)
{
	if ((ms->steps += n) >= ms->due)
		charge_steps(ms);
}

static void
ms_init(mstate *ms, lua_State *L, const char *s, size_t ls, const program *pg)
{
	ms->src = s;
	ms->end = s + ls;
	ms->items = pg->items;
	ms->sets = pg->sets;
	ms->L = L;
	ms->steps = ms->charged = 0;
	ms->due = STEP_CHUNK;
}

static inline int
single(const mstate *ms, const pitem *it, unsigned char c)
{
	switch (it->op) {
	case P_ANY: return 1;
	case P_CHAR: return c == it->a;
	default: return in_set(&ms->sets[it->set], c);
	}
}

/* How many bytes from @p s on the single-byte item matches. */
static ptrdiff_t
span(mstate *ms, const char *s, const pitem *it)
{
	const char *p = s;

	switch (it->op) {
	case P_ANY: p = ms->end; break;
	case P_CHAR:
		while (p < ms->end && (unsigned char)*p == it->a)
			p++;
		break;
	default:
		while (p < ms->end && in_set(&ms->sets[it->set], (unsigned char)*p))
			p++;
		break;
	}
	step(ms, (uint64_t)(p - s) / SCAN_BYTES);
	return p - s;
}

static const char *do_match(mstate *ms, const char *s, const pitem *it);

/* An attempt at the items after a repetition can be skipped where it is
 * bound to fail at once: when they begin with a byte that must be there.
 * (Only once an attempt at this depth is known not to be "too complex":
 * the first one Lua makes would be.) */
static int
must_start_with(mstate *ms, const pitem *next, unsigned char *c)
{
	if (next->op != P_CHAR || (next->rep != 0 && next->rep != '+'))
		return 0;
	if (ms->depth == 0)
		luaL_error(ms->L, "pattern too complex");
	*c = next->a;
	return 1;
}

/* The longest run of the item first, then shorter ones. */
static const char *
max_expand(mstate *ms, const char *s, const pitem *it)
{
	ptrdiff_t i = span(ms, s, it);
	unsigned char c;
	const char *r;

	if (must_start_with(ms, it + 1, &c)) {
		for (; i >= 0; i--) {
			if (s + i < ms->end && (unsigned char)s[i] == c &&
			    (r = do_match(ms, s + i, it + 1)) != NULL)
				return r;
			step(ms, 1);
		}
		return NULL;
	}
	for (; i >= 0; i--)
		if ((r = do_match(ms, s + i, it + 1)) != NULL)
			return r;
	return NULL;
}

/* The shortest run first, then longer ones. */
static const char *
min_expand(mstate *ms, const char *s, const pitem *it)
{
	unsigned char c;
	int skip = must_start_with(ms, it + 1, &c);
	const char *r;

	for (;;) {
		if (!skip || (s < ms->end && (unsigned char)*s == c)) {
			if ((r = do_match(ms, s, it + 1)) != NULL)
				return r;
		} else {
			step(ms, 1);
		}
		if (s < ms->end && single(ms, it, (unsigned char)*s))
			s++;
		else
			return NULL;
	}
}

static const char *
start_capture(mstate *ms, const char *s, const pitem *next, ptrdiff_t what)
{
	const char *r;

	if (ms->level >= MAX_CAPTURES)
		luaL_error(ms->L, "too many captures");
	ms->cap[ms->level].init = s;
	ms->cap[ms->level].len = what;
	ms->level++;
	if ((r = do_match(ms, s, next)) == NULL)
		ms->level--;
	return r;
}

static const char *
end_capture(mstate *ms, const char *s, const pitem *next)
{
	int l = ms->level - 1;
	const char *r;

	while (l >= 0 && ms->cap[l].len != CAP_OPEN)
		l--;
	if (l < 0)
		luaL_error(ms->L, "invalid pattern capture");
	ms->cap[l].len = s - ms->cap[l].init;
	if ((r = do_match(ms, s, next)) == NULL)
		ms->cap[l].len = CAP_OPEN;
	return r;
}

/* %1-%9: the text of a closed capture again (a position never matches). */
static const char *
backref(mstate *ms, const char *s, int digit)
{
	int l = digit - '1';
	size_t len;

	if (l < 0 || l >= ms->level || ms->cap[l].len == CAP_OPEN)
		luaL_error(ms->L, "invalid capture index %%%d", l + 1);
	if (ms->cap[l].len == CAP_POSITION ||
	    (size_t)(ms->end - s) < (len = (size_t)ms->cap[l].len))
		return NULL;
	step(ms, len / SCAN_BYTES);
	return memcmp(ms->cap[l].init, s, len) == 0 ? s + len : NULL;
}

/* %bxy: from an x to the y that balances it. */
static const char *
balance(mstate *ms, const char *s, const pitem *it)
{
	const char *from = s;
	int open = 1;

	if (s >= ms->end || (unsigned char)*s != it->a)
		return NULL;
	while (++s < ms->end) {
		if ((unsigned char)*s == it->b) {
			if (--open == 0) {
				step(ms, (uint64_t)(s - from) / SCAN_BYTES);
				return s + 1;
			}
		} else if ((unsigned char)*s == it->a) {
			open++;
		}
	}
	step(ms, (uint64_t)(s - from) / SCAN_BYTES);
	return NULL;
}

/* Match the items from @p it at @p s: the end of the match, or NULL. */
static const char *
do_match(mstate *ms, const char *s, const pitem *it)
{
	const char *r;
	int m;

	if (ms->depth-- == 0)
		luaL_error(ms->L, "pattern too complex");
	for (;;) {
		step(ms, 1);
		switch (it->op) {
		case P_END: goto out;
		case P_OPEN: s = start_capture(ms, s, it + 1, CAP_OPEN); goto out;
		case P_POSITION: s = start_capture(ms, s, it + 1, CAP_POSITION); goto out;
		case P_CLOSE: s = end_capture(ms, s, it + 1); goto out;
		case P_EOS:
			if (s != ms->end)
				s = NULL;
			goto out;
		case P_BALANCE:
			if ((s = balance(ms, s, it)) == NULL)
				goto out;
			it++;
			continue;
		case P_FRONTIER: {
			unsigned char before = s == ms->src ? 0 : (unsigned char)s[-1];
			unsigned char here = s < ms->end ? (unsigned char)*s : 0;
			const cset *cs = &ms->sets[it->set];
			if (in_set(cs, before) || !in_set(cs, here)) {
				s = NULL;
				goto out;
			}
			it++;
			continue;
		}
		case P_BACKREF:
			if ((s = backref(ms, s, it->a)) == NULL)
				goto out;
			it++;
			continue;
		case P_ERROR: luaL_error(ms->L, "%s", pattern_errors[it->a]); break;
		default: break;
		}
		/* a single-byte item and its repetition */
		m = s < ms->end && single(ms, it, (unsigned char)*s);
		switch (it->rep) {
		case 0:
			if (!m) {
				s = NULL;
				goto out;
			}
			s++;
			it++;
			continue;
		case '?':
			if (m && (r = do_match(ms, s + 1, it + 1)) != NULL) {
				s = r;
				goto out;
			}
			it++;
			continue;
		case '+':
			if (!m) {
				s = NULL;
				goto out;
			}
			s = max_expand(ms, s + 1, it);
			goto out;
		case '*':
			if (!m) {
				it++;
				continue;
			}
			s = max_expand(ms, s, it);
			goto out;
		default: /* '-' */
			if (!m) {
				it++;
				continue;
			}
			s = min_expand(ms, s, it);
			goto out;
		}
	}
out:
	ms->depth++;
	return s;
}

/* One attempt at @p s from the first item. */
static const char *
attempt(mstate *ms, const char *s)
{
	ms->level = 0;
	ms->depth = MAX_DEPTH;
	return do_match(ms, s, ms->items);
}

/* Where an unanchored search may start, from @p s on: the next place
 * where the first item can match when it is a byte that must be there
 * (an attempt anywhere else fails at once); @p s otherwise.  NULL: none. */
static const char *
next_start(mstate *ms, const char *s)
{
	const pitem *first = ms->items;
	const char *at;

	if (first->op != P_CHAR || (first->rep != 0 && first->rep != '+'))
		return s;
	if (s >= ms->end)
		return NULL;
	at = memchr(s, first->a, (size_t)(ms->end - s));
	step(ms, (uint64_t)((at ? at : ms->end) - s) / SCAN_BYTES);
	return at;
}

/* ------------------------------------------------------------------------
 * Captures
 * ------------------------------------------------------------------------ */

/* Capture @p i of the match @p s..@p e: its text in *cap and length, or
 * CAP_POSITION with the position pushed.  Without captures, capture 0 is
 * the whole match.  [-0, +(0|1), e] */
static ptrdiff_t
get_capture(mstate *ms, int i, const char *s, const char *e, const char **cap)
{
	if (i >= ms->level) {
		if (i != 0)
			luaL_error(ms->L, "invalid capture index %%%d", i + 1);
		*cap = s;
		return e - s;
	}
	*cap = ms->cap[i].init;
	if (ms->cap[i].len == CAP_OPEN)
		luaL_error(ms->L, "unfinished capture");
	if (ms->cap[i].len == CAP_POSITION)
		lua_pushinteger(ms->L, (ms->cap[i].init - ms->src) + 1);
	return ms->cap[i].len;
}

static void
push_capture(mstate *ms, int i, const char *s, const char *e)
{
	const char *cap;
	ptrdiff_t len = get_capture(ms, i, s, e, &cap);

	if (len != CAP_POSITION)
		lua_pushlstring(ms->L, cap, (size_t)len);
}

/* The captures of a match, or the whole match (@p s non-NULL) when the
 * pattern has none.  [-0, +n, e] */
static int
push_captures(mstate *ms, const char *s, const char *e)
{
	int n = ms->level == 0 && s != NULL ? 1 : ms->level;

	luaL_checkstack(ms->L, n, "too many captures");
	for (int i = 0; i < n; i++)
		push_capture(ms, i, s, e);
	return n;
}

/* ------------------------------------------------------------------------
 * The functions
 * ------------------------------------------------------------------------ */

/* The start position for find, match and gmatch: negative counts from the
 * end, and anything before the start is the start.  1-based. */
static size_t
start_pos(lua_Integer pos, size_t len)
{
	if (pos > 0)
		return (size_t)pos;
	if (pos == 0 || pos < -(lua_Integer)len)
		return 1;
	return len + (size_t)pos + 1;
}

static int
has_specials(const char *p, size_t lp)
{
	for (size_t k = 0; k < lp; k++)
		switch (p[k]) {
		case '^':
		case '$':
		case '*':
		case '+':
		case '?':
		case '.':
		case '(':
		case '[':
		case '%':
		case '-': return 1;
		}
	return 0;
}

/* The first @p p (@p lp bytes) in @p s (@p n bytes), or NULL.  A short
 * subject is searched directly: memmem's set-up costs more than the
 * search; a long one with memmem, which is linear where the direct search
 * is not. */
static const char *
plain_find(const char *s, size_t n, const char *p, size_t lp)
{
	const char *end = s + n, *at;

	if (lp == 0)
		return s;
	if (lp > n)
		return NULL;
	if (n > 256)
		return memmem(s, n, p, lp);
	for (end -= lp - 1; (at = memchr(s, *p, (size_t)(end - s))) != NULL; s = at + 1)
		if (memcmp(at + 1, p + 1, lp - 1) == 0)
			return at;
	return NULL;
}

/* string.find(s, p [, init [, plain]]) and string.match(s, p [, init]).
 * [-(2..4), +n, e] */
static int
find(lua_State *L, int is_find)
{
	size_t ls, lp, init;
	const char *s = luaL_checklstring(L, 1, &ls);
	const char *p = luaL_checklstring(L, 2, &lp);
	const char *at, *e;
	int anchored;
	program pg;
	small_program small;
	mstate ms;

	init = start_pos(luaL_optinteger(L, 3, 1), ls) - 1;
	if (init > ls) {
		luaL_pushfail(L);
		return 1;
	}
	if (is_find && (lua_toboolean(L, 4) || !has_specials(p, lp))) {
		const char *hit = plain_find(s + init, ls - init, p, lp);
		size_t units = ((hit ? (size_t)(hit - s) + lp : ls) - init + lp) / SCAN_BYTES;
		if (units > 0)
			tidei_lstate_charge(L, units);
		if (hit == NULL) {
			luaL_pushfail(L);
			return 1;
		}
		lua_pushinteger(L, (hit - s) + 1);
		lua_pushinteger(L, (lua_Integer)((size_t)(hit - s) + lp));
		return 2;
	}
	anchored = lp > 0 && *p == '^';
	compile(L, &pg, &small, p + anchored, lp - (size_t)anchored);
	ms_init(&ms, L, s, ls, &pg);
	at = s + init;
	do {
		if (!anchored && (at = next_start(&ms, at)) == NULL)
			break;
		step(&ms, 1);
		if ((e = attempt(&ms, at)) != NULL) {
			charge_steps(&ms);
			if (!is_find)
				return push_captures(&ms, at, e);
			lua_pushinteger(L, (at - s) + 1);
			lua_pushinteger(L, e - s);
			return push_captures(&ms, NULL, NULL) + 2;
		}
	} while (at++ < ms.end && !anchored);
	charge_steps(&ms);
	luaL_pushfail(L);
	return 1;
}

static int
l_find(lua_State *L)
{
	return find(L, 1);
}

static int
l_match(lua_State *L)
{
	return find(L, 0);
}

/* What a gmatch iterator keeps, followed by its pattern's items and sets. */
typedef struct gmatch_state {
	const char *next;      /* where the next search starts */
	const char *lastmatch; /* end of the last match: no empty match there */
	mstate ms;
	program pg; /* its items and sets point after this struct */
} gmatch_state;

/* The iterator: upvalues s, p, the state.  [-0, +n, e] */
static int
gmatch_step(lua_State *L)
{
	gmatch_state *g = lua_touserdata(L, lua_upvalueindex(3));
	mstate *ms = &g->ms;
	const char *at, *e;

	ms->L = L; /* the thread that calls, which may not be the one that made it */
	for (at = g->next; at <= ms->end; at++) {
		step(ms, 1);
		if ((e = attempt(ms, at)) != NULL && e != g->lastmatch) {
			g->next = g->lastmatch = e;
			charge_steps(ms);
			return push_captures(ms, at, e);
		}
	}
	charge_steps(ms);
	return 0;
}

/* string.gmatch(s, p [, init]) -> iterator.  A leading '^' is an ordinary
 * byte here, as in Lua.  [-(2|3), +1, e] */
static int
l_gmatch(lua_State *L)
{
	size_t ls, lp, init;
	const char *s = luaL_checklstring(L, 1, &ls);
	const char *p = luaL_checklstring(L, 2, &lp);
	gmatch_state *g;

	init = start_pos(luaL_optinteger(L, 3, 1), ls) - 1;
	if (init > ls)
		init = ls + 1; /* past the end: nothing to find */
	/* the strings stay alive as upvalues */
	lua_settop(L, 2);
	g = lua_newuserdatauv(
		L, sizeof *g + ITEMS_FOR(lp) * sizeof(pitem) + SETS_FOR(lp) * sizeof(cset), 0);
	g->pg.items = (pitem *)(g + 1);
	g->pg.sets = (cset *)(g->pg.items + ITEMS_FOR(lp));
	if (lp >= SCAN_BYTES)
		tidei_lstate_charge(L, lp / SCAN_BYTES);
	translate(p, lp, g->pg.items, g->pg.sets);
	ms_init(&g->ms, L, s, ls, &g->pg);
	g->next = s + init;
	g->lastmatch = NULL;
	lua_pushcclosure(L, gmatch_step, 3);
	return 1;
}

/* Add gsub's replacement string (argument 3) for the match @p s..@p e:
 * %0 is the match, %1-%9 captures, %% a '%'.  [-0, +0, e] */
static void
add_string(mstate *ms, luaL_Buffer *b, const char *s, const char *e)
{
	lua_State *L = ms->L;
	size_t l;
	const char *r = lua_tolstring(L, 3, &l), *pc, *cap;
	ptrdiff_t len;

	step(ms, l / SCAN_BYTES + 1);
	while ((pc = memchr(r, '%', l)) != NULL) {
		luaL_addlstring(b, r, (size_t)(pc - r));
		pc++;
		if (pc == r + l) {
			luaL_error(L, "invalid use of '%c' in replacement string", '%');
		} else if (*pc == '%') {
			luaL_addchar(b, '%');
		} else if (*pc == '0') {
			luaL_addlstring(b, s, (size_t)(e - s));
		} else if (*pc >= '1' && *pc <= '9') {
			len = get_capture(ms, *pc - '1', s, e, &cap);
			if (len == CAP_POSITION)
				luaL_addvalue(b); /* the position pushed */
			else
				luaL_addlstring(b, cap, (size_t)len);
		} else {
			luaL_error(L, "invalid use of '%c' in replacement string", '%');
		}
		l -= (size_t)(pc + 1 - r);
		r = pc + 1;
	}
	luaL_addlstring(b, r, l);
}

/* Add the replacement for the match @p s..@p e; 1 if it changed the text
 * (a function or table giving nil or false keeps the match).  [-0, +0, e] */
static int
add_value(mstate *ms, luaL_Buffer *b, const char *s, const char *e, int type)
{
	lua_State *L = ms->L;

	switch (type) {
	case LUA_TFUNCTION:
		lua_pushvalue(L, 3);
		lua_call(L, push_captures(ms, s, e), 1);
		break;
	case LUA_TTABLE:
		push_capture(ms, 0, s, e);
		lua_gettable(L, 3);
		break;
	default: add_string(ms, b, s, e); return 1;
	}
	if (!lua_toboolean(L, -1)) {
		lua_pop(L, 1);
		luaL_addlstring(b, s, (size_t)(e - s));
		return 0;
	}
	if (!lua_isstring(L, -1))
		return luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
	luaL_addvalue(b);
	return 1;
}

/* string.gsub(s, p, repl [, n]) -> string, count  [-(3|4), +2, e] */
static int
l_gsub(lua_State *L)
{
	size_t ls, lp;
	const char *src = luaL_checklstring(L, 1, &ls);
	const char *p = luaL_checklstring(L, 2, &lp);
	const char *lastmatch = NULL, *e;
	int type = lua_type(L, 3);
	lua_Integer max = luaL_optinteger(L, 4, (lua_Integer)ls + 1), n = 0;
	int anchored = lp > 0 && *p == '^', changed = 0;
	program pg;
	small_program small;
	mstate ms;
	luaL_Buffer b;

	luaL_argexpected(L,
			 type == LUA_TNUMBER || type == LUA_TSTRING || type == LUA_TFUNCTION ||
				 type == LUA_TTABLE,
			 3, "string/function/table");
	compile(L, &pg, &small, p + anchored, lp - (size_t)anchored); /* below the buffer */
	luaL_buffinit(L, &b);
	ms_init(&ms, L, src, ls, &pg);
	while (n < max) {
		step(&ms, 1);
		if ((e = attempt(&ms, src)) != NULL && e != lastmatch) {
			n++;
			changed = add_value(&ms, &b, src, e, type) | changed;
			src = lastmatch = e;
		} else if (src < ms.end) {
			luaL_addchar(&b, *src++);
		} else {
			break;
		}
		if (anchored)
			break;
	}
	charge_steps(&ms);
	if (!changed) {
		lua_pushvalue(L, 1);
	} else {
		luaL_addlstring(&b, src, (size_t)(ms.end - src));
		luaL_pushresult(&b);
	}
	lua_pushinteger(L, n);
	return 2;
}

void
tidei_lua_open_pattern(lua_State *L)
{
	static const luaL_Reg funcs[] = {
		{ "find", l_find }, { "match", l_match }, { "gmatch", l_gmatch },
		{ "gsub", l_gsub }, { NULL, NULL },
	};

	if (lua_getglobal(L, LUA_STRLIBNAME) == LUA_TTABLE)
		luaL_setfuncs(L, funcs, 0);
	lua_pop(L, 1);
}
