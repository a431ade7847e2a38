/*
 * loop.h - libevent glue for an engine: its event_base (adopted or
 * owned), the deferred "turn" callback that runs once per loop iteration
 * after the I/O callbacks, a periodic timer, and a wake-up that is safe to
 * trigger from signal handlers and other threads.
 */
#ifndef TIDE_LOOP_H
#define TIDE_LOOP_H

#include <stdint.h>

#include "err.h"

struct event_base;
struct event;

typedef void tidei_loop_fn(void *ud);

typedef struct tidei_loop {
	struct event_base *base;
	int own;
	struct event *turn;
	struct event *timer;
	struct event *wake;
	struct event *later; /* one-shot: a turn at a set time */
	int wake_fd[2];
	int turn_pending;
	tidei_loop_fn *on_turn, *on_timer, *on_wake;
	void *ud;
} tidei_loop;

/** Attach to @p base (or create one when NULL).  @p timer_ms = 0 disables
 *  the periodic timer. */
int tidei_loop_open(tidei_loop *l, struct event_base *base, tidei_loop_fn *on_turn,
		    tidei_loop_fn *on_timer, uint64_t timer_ms, tidei_loop_fn *on_wake, void *ud,
		    char *err);
void tidei_loop_close(tidei_loop *l);

/** Run on_turn at the end of the current loop iteration (once). */
void tidei_loop_schedule(tidei_loop *l);
/** Run on_turn after @p ns nanoseconds (replacing an earlier request). */
void tidei_loop_schedule_in(tidei_loop *l, int64_t ns);
/** Run on_wake from the loop soon.  Async-signal-safe and thread-safe. */
void tidei_loop_wake(tidei_loop *l);

/** Run an owned base until tidei_loop_exit(). */
int tidei_loop_run(tidei_loop *l);
void tidei_loop_exit(tidei_loop *l);

#endif
