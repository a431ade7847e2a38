/*
 * rule_int.h - what rule.c and rslot.c share: a rule's structure and the
 * slots of its key cache.  Not for embedders.
 */
#ifndef TIDE_RULE_INT_H
#define TIDE_RULE_INT_H

#include <lua.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "keymap.h"
#include "rule.h"

#define REC_FORMAT 1
#define TIMER_TTL ""
#define TIMER_WIN "\1w"

/* The windows a slot holds in itself; a rule with more has an array. */
#define SLOT_WINS 4

/* A key seen by the rule, in the cache. */
typedef struct tidei_rslot {
	/* what every call reads first, together */
	int loaded;                       /* its state is in the cache table (nil: it has none) */
	int known;                        /* enc is its record (empty: it has none) */
	int dirty;                        /* enc is to be written (or, empty, deleted) */
	int64_t last_seen;                /* largest event time of the key */
	int64_t ttl_due;                  /* its expiry timer, 0 if none */
	int64_t win_due;                  /* its windows' timer, 0 if none */
	union {                           /* its windows (rwin.h), if the rule has any: */
		tidei_win *in[SLOT_WINS]; /* up to SLOT_WINS, here */
		tidei_win **out;          /* more, in an array of their own */
	} w;
	tidei_buf enc; /* its state's last good encoding (empty: none) */
} tidei_rslot;

/* A timer set or cancelled by the call in progress. */
typedef struct timer_op {
	int op;
	int64_t due, every;
	size_t name_at, name_len, data_at, data_len; /* in r->opbuf */
} timer_op;

struct tidei_rule {
	char *consumer;
	size_t nlen;
	char *key_path; /* or NULL */
	int key_ref;    /* or LUA_NOREF; neither: one key, "" */
	int64_t ttl;    /* 0: keys never expire */
	int clock;
	int64_t lateness;
	int late;
	int late_ref, timers_ref, on_close_ref;
	tidei_rwins *wins; /* or NULL */
	/* the clock */
	int64_t maxtime, watermark;
	uint64_t nlate, fired, failed;
	uint64_t closed, expired; /* windows closed, keys expired: for the metrics, not stored */
	int meta_dirty;
	int64_t next_due; /* no timer is due before this (a hint) */
	tidei_rtimers *timers;
	/* the cache */
	tidei_keymap keys;
	tidei_rslot *slots;
	size_t scap;
	uint32_t *dirty; /* slots with dirty set, in the order they were marked */
	size_t ndirty, dcap;
	int dirty_all; /* the list ran out of memory: look at every tidei_rslot */
	int cache_ref; /* Lua table: slot + 1 -> state */
	/* the call in progress */
	tidei_log *log;
	long cur;        /* its key's slot, or -1 */
	int64_t cur_now; /* its time on the rule's clock */
	timer_op *ops;
	size_t nops, opcap;
	tidei_buf opbuf;
	const struct tide_event *ev;
	const tidei_rule_timer *timer;
	int ref, late_call;
	int again;     /* the event is being tried again (not added to windows) */
	int store_rc;  /* the log failed under the call: the turn's failure */
	int ttl_armed; /* the call armed its key's expiry */
	char *errbuf;
	tidei_buf kbuf;    /* record keys */
	tidei_buf rec;     /* a record being written */
	tidei_buf scratch; /* a state being encoded */
};

/* Slot @p s's windows; NULL if the rule has none.  Not kept in the slot:
 * the slots move when their array grows. */
static inline tidei_win **
tidei_rslot_wins(const tidei_rule *r, const tidei_rslot *s)
{
	if (r->wins == NULL)
		return NULL;
	return tidei_rwins_count(r->wins) <= SLOT_WINS ? (tidei_win **)s->w.in : s->w.out;
}

/* rslot.c */
/** Free every slot's encoding and windows (the keymap stays). */
void tidei_rslot_free_all(tidei_rule *r);
/** Slot @p s is to be written. */
void tidei_rslot_dirty(tidei_rule *r, tidei_rslot *s);
/** The slot of key @p k with its state pushed (nil if it has none),
 *  read from the log the first time.  [-0, +1, e] */
long tidei_rslot_load(lua_State *L, tidei_rule *r, const char *k, size_t kn);
/** After a failed call: the key goes back to its last good record. */
void tidei_rslot_rollback(tidei_rule *r, lua_State *L, long at);
/** Encode the state at @p idx as slot @p at's (nil: it has none;
 *  tide.delete: the key is forgotten, windows too).  [-0, +0, e] */
void tidei_rslot_encode(lua_State *L, tidei_rule *r, long at, int idx);
/** Encode the state at @p si as slot @p at's and keep it in the cache.
 *  [-0, +0, e] */
void tidei_rslot_settle(lua_State *L, tidei_rule *r, long at, int si);

#endif
