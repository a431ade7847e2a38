/*
 * loop.c - the engine's use of libevent.
 *
 * The group commit needs "once per loop iteration, after every ready
 * socket has been drained".  An event made active with event_active() is
 * queued behind the callbacks already active in this iteration, so the
 * turn runs after them and before the loop polls again.
 *
 * Stopping must work from a signal handler or another thread, where
 * libevent may not be touched without its threading support (a process
 * global we do not want to impose on embedders): a pipe carries the
 * request into the loop.
 */
#include "config.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "loop.h"

static void
turn_cb(evutil_socket_t fd, short what, void *arg)
{
	tidei_loop *l = arg;

	(void)fd;
	(void)what;
	l->turn_pending = 0;
	l->on_turn(l->ud);
}

static void
later_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	tidei_loop_schedule(arg);
}

static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
	tidei_loop *l = arg;

	(void)fd;
	(void)what;
	l->on_timer(l->ud);
}

static void
wake_cb(evutil_socket_t fd, short what, void *arg)
{
	tidei_loop *l = arg;
	char buf[64];

	(void)what;
	while (read(fd, buf, sizeof buf) > 0)
		;
	l->on_wake(l->ud);
}

int
tidei_loop_open(tidei_loop *l, struct event_base *base, tidei_loop_fn *on_turn,
		tidei_loop_fn *on_timer, uint64_t timer_ms, tidei_loop_fn *on_wake, void *ud,
		char *err)
{
	l->wake_fd[0] = l->wake_fd[1] = -1;
	l->on_turn = on_turn;
	l->on_timer = on_timer;
	l->on_wake = on_wake;
	l->ud = ud;
	l->own = base == NULL;
	l->base = base ? base : event_base_new();
	if (l->base == NULL)
		return tidei_err(err, TIDE_ENOMEM, "cannot create an event loop");
	if (pipe(l->wake_fd) != 0) {
		tidei_loop_close(l);
		return tidei_err(err, TIDE_EIO, "cannot create a pipe: %s", strerror(errno));
	}
	for (int i = 0; i < 2; i++) {
		fcntl(l->wake_fd[i], F_SETFL, fcntl(l->wake_fd[i], F_GETFL) | O_NONBLOCK);
		fcntl(l->wake_fd[i], F_SETFD, FD_CLOEXEC);
	}
	l->turn = event_new(l->base, -1, 0, turn_cb, l);
	l->wake = event_new(l->base, l->wake_fd[0], EV_READ | EV_PERSIST, wake_cb, l);
	l->later = evtimer_new(l->base, later_cb, l);
	if (timer_ms > 0 && on_timer != NULL) {
		struct timeval tv = { (time_t)(timer_ms / 1000),
				      (suseconds_t)(timer_ms % 1000) * 1000 };
		l->timer = event_new(l->base, -1, EV_PERSIST, timer_cb, l);
		if (l->timer == NULL || event_add(l->timer, &tv) != 0)
			goto fail;
	}
	if (l->turn == NULL || l->wake == NULL || l->later == NULL || event_add(l->wake, NULL) != 0)
		goto fail;
	return TIDE_OK;
fail:
	tidei_loop_close(l);
	return tidei_err(err, TIDE_ENOMEM, "cannot register events with the loop");
}

void
tidei_loop_close(tidei_loop *l)
{
	if (l->turn)
		event_free(l->turn);
	if (l->timer)
		event_free(l->timer);
	if (l->wake)
		event_free(l->wake);
	if (l->later)
		event_free(l->later);
	l->turn = l->timer = l->wake = l->later = NULL;
	for (int i = 0; i < 2; i++)
		if (l->wake_fd[i] >= 0)
			close(l->wake_fd[i]);
	l->wake_fd[0] = l->wake_fd[1] = -1;
	if (l->own && l->base)
		event_base_free(l->base);
	l->base = NULL;
}

void
tidei_loop_schedule(tidei_loop *l)
{
	if (!l->turn_pending && l->turn != NULL) {
		l->turn_pending = 1;
		event_active(l->turn, EV_TIMEOUT, 1);
	}
}

void
tidei_loop_schedule_in(tidei_loop *l, int64_t ns)
{
	struct timeval tv;

	if (l->later == NULL)
		return;
	if (ns < 0)
		ns = 0;
	tv.tv_sec = (time_t)(ns / 1000000000);
	tv.tv_usec = (suseconds_t)(ns % 1000000000 / 1000);
	evtimer_add(l->later, &tv);
}

void
tidei_loop_wake(tidei_loop *l)
{
	int saved = errno; /* may run in a signal handler */
	ssize_t n = write(l->wake_fd[1], "w", 1);

	(void)n; /* a full pipe already holds a wake-up */
	errno = saved;
}

int
tidei_loop_run(tidei_loop *l)
{
	return event_base_dispatch(l->base) < 0 ? TIDE_EIO : TIDE_OK;
}

void
tidei_loop_exit(tidei_loop *l)
{
	event_base_loopbreak(l->base);
}
