/*
 * flight.h - the engine's flight recorder: which handler is running on
 * which event, kept in a small memory-mapped file of the data directory
 * so that it outlives the process.  After a crash, a freeze that had to be
 * ended, or repeated kills on the same event, the next start knows which
 * event did it and sets it aside instead of running it again forever.
 */
#ifndef TIDE_FLIGHT_H
#define TIDE_FLIGHT_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "event.h"

/** What runs user code on an event. */
enum { TIDEI_FLIGHT_CONSUMER = 1, TIDEI_FLIGHT_PROJECTION = 2 };

/** Why a process ended, as recorded by tidei_flight_postmortem(). */
enum { TIDEI_FLIGHT_KILLED = 0, TIDEI_FLIGHT_HUNG = 1, TIDEI_FLIGHT_CRASHED = 2 };

/** Times the engine may die on one event (killed, not known to have hung
 *  or crashed there) before the event is set aside. */
#define TIDEI_FLIGHT_STRIKES 3

typedef struct tidei_flight tidei_flight;

/** Open (creating, 0600) DIR/flight and read what the previous process
 *  left: if it died while a handler ran, that event becomes the suspect
 *  (one strike more if it already was).  A message for the log about it
 *  goes to @p note (TIDEI_ERRLEN bytes; "" if nothing happened).
 *  Returns TIDE_OK or TIDE_EIO with the reason in @p err. */
int tidei_flight_open(tidei_flight **out, const char *dir, char *note, char *err);
/** Close after a clean stop (nothing was running). */
void tidei_flight_close(tidei_flight *f);

/** A handler is about to run on @p ev (@p name stays valid until the
 *  matching leave), and has returned.  Engine thread only; a few stores
 *  and a hash of the event's source and id: an event appended in the turn
 *  that died was never committed, so its seq may go to another event
 *  after the restart. */
void tidei_flight_enter(tidei_flight *f, int kind, const char *name, const struct tide_event *ev);
void tidei_flight_leave(tidei_flight *f);

/** 1 if @p ev must not be run by @p name again: the engine died on it
 *  TIDEI_FLIGHT_STRIKES times, or hung or crashed on it once.  @p why
 *  (TIDEI_ERRLEN bytes) then says so, and the suspect is cleared: a
 *  later, deliberate retry runs it. */
int tidei_flight_verdict(tidei_flight *f, int kind, const char *name, const struct tide_event *ev,
			 char *why);

/** A projection's build is shared with threads now (@p name), or no
 *  longer (NULL); a process that dies meanwhile makes the next start build
 *  it on the engine's thread, where each event is recorded. */
void tidei_flight_build(tidei_flight *f, const char *name);
/** 1 if projection @p name must be built on the engine's thread, where
 *  each event is recorded: its shared build was running when the previous
 *  process died, or one of its events is a suspect. */
int tidei_flight_solo(const tidei_flight *f, const char *name);
/** The consumers run on a thread of their own now (1), where their calls
 *  are not recorded, or no longer (0); a process that dies meanwhile
 *  makes the next one keep them on the engine's thread. */
void tidei_flight_away(tidei_flight *f, int away);
/** 1 if the consumers must stay on the engine's thread, where each call
 *  is recorded: the previous process died while they were away, or one
 *  of their events is a suspect. */
int tidei_flight_home(const tidei_flight *f);

/** Record why the process is about to end (TIDEI_FLIGHT_HUNG, or
 *  TIDEI_FLIGHT_CRASHED with @p sig).  Async-signal-safe, any thread.
 *  Returns 1 if a handler was running. */
int tidei_flight_postmortem(tidei_flight *f, int cause, int sig);

#endif
