/*
 * flight.c - the flight recorder (see flight.h).
 *
 * One page of a file in the data directory, mapped shared: stores into it
 * reach the page cache at once and survive the process however it ends
 * (kill -9, a crash, _exit from a watchdog), without a system call per
 * event.  They do not survive the machine losing power, which is fine:
 * what is recorded only matters when the process died and the machine did
 * not.
 *
 * The engine's thread marks each handler call (enter/leave: a counter,
 * the seq, and the name when it changes).  A supervisor that ends a stuck
 * process, or a crash handler, adds why (postmortem: plain stores, safe in
 * a signal handler).  The next open reads the page: a process that died
 * in a handler leaves a suspect event, with a strike per death on it; one
 * that hung or crashed there, or died on it TIDEI_FLIGHT_STRIKES times,
 * gets the event set aside (the consumer dead-letters it, a projection
 * stops at it) instead of running it again forever.
 *
 * The page's layout is private to this file and versioned by its magic; a
 * page it does not recognise is started afresh (nothing is lost but the
 * history of one death).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "flight.h"

#define MAGIC 0x31464454u /* "TDF1" */
#define PAGE 4096
#define NAME 256

typedef struct suspect {
	uint64_t seq; /* 0: none */
	uint64_t idh; /* of its source and id */
	uint32_t kind, strikes, cause;
	int32_t sig;
	char name[NAME];
} suspect;

typedef struct page {
	uint32_t magic, size;
	/* the running process */
	atomic_uint running; /* 1 between open and a clean close */
	atomic_uint kind;    /* of the handler running */
	atomic_ullong seq;   /* the event it runs on; 0: none */
	atomic_ullong idh;   /* a hash of that event's source and id */
	atomic_ullong calls; /* handler calls so far */
	atomic_uint cause;   /* TIDEI_FLIGHT_*, set just before the end */
	atomic_int sig;      /* with TIDEI_FLIGHT_CRASHED */
	char name[NAME];     /* of the handler's consumer or projection */
	char build[NAME];    /* a projection built on threads now, or "" */
	atomic_uint away;    /* the consumers run on a thread of their own now */
	suspect sus;         /* kept across starts */
} page;

_Static_assert(sizeof(page) <= PAGE, "the flight page fits in one page");

struct tidei_flight {
	page *p;
	int fd;
	const char *last;     /* the name last copied into p->name */
	char build_sus[NAME]; /* the previous process died during this build */
	int away_sus;         /* ... or while the consumers were on their thread */
};

/* A fingerprint of @p n bytes, eight at a time: it runs at every handler
 * call, and only has to tell a re-sent event from another one that took
 * its seq after a restart, not to resist anyone. */
static uint64_t
mix(const char *s, size_t n, uint64_t h)
{
	uint64_t w;

	for (; n >= 8; s += 8, n -= 8) {
		memcpy(&w, s, 8);
		h = (h ^ w) * 0x9e3779b97f4a7c15ull;
		h ^= h >> 29;
	}
	w = 0;
	memcpy(&w, s, n);
	h = (h ^ w ^ (uint64_t)n << 56) * 0x9e3779b97f4a7c15ull;
	return h ^ h >> 32;
}

static uint64_t
id_hash(const struct tide_event *ev)
{
	return mix(ev->attr[TIDEI_A_ID], ev->len[TIDEI_A_ID],
		   mix(ev->attr[TIDEI_A_SOURCE], ev->len[TIDEI_A_SOURCE], TIDEI_FNV_SEED));
}

static const char *
kind_name(uint32_t kind)
{
	return kind == TIDEI_FLIGHT_PROJECTION ? "projection" : "consumer";
}

static void
describe(char *out, size_t n, uint32_t cause, int sig)
{
	if (cause == TIDEI_FLIGHT_HUNG)
		snprintf(out, n, "froze (it was ended after it did not stop when asked)");
	else if (cause == TIDEI_FLIGHT_CRASHED)
		snprintf(out, n, "crashed (signal %d)", sig);
	else
		snprintf(out, n, "was killed");
}

/* Take in what the previous process left in @p prev. */
static void
inherit(tidei_flight *f, const page *prev, char *note)
{
	page *p = f->p;
	suspect *s = &p->sus;
	char how[96];
	uint32_t cause = atomic_load(&prev->cause);
	int sig = atomic_load(&prev->sig);
	uint64_t seq = atomic_load(&prev->seq), idh = atomic_load(&prev->idh);
	uint32_t kind = atomic_load(&prev->kind);

	note[0] = '\0';
	if (!atomic_load(&prev->running))
		return; /* a clean stop */
	if (prev->build[0] != '\0')
		snprintf(f->build_sus, sizeof f->build_sus, "%.*s", NAME - 1, prev->build);
	f->away_sus = atomic_load(&prev->away) != 0;
	describe(how, sizeof how, cause, sig);
	if (seq == 0) {
		if (f->away_sus)
			snprintf(note, TIDEI_ERRLEN,
				 "the previous run %s while the consumers ran on a thread of their "
				 "own: this time they run on the engine's thread, where each event "
				 "is recorded",
				 how);
		else if (f->build_sus[0])
			snprintf(note, TIDEI_ERRLEN,
				 "the previous run %s while projection '%s' was built on threads: "
				 "this time it is built on the engine's thread",
				 how, f->build_sus);
		else if (cause != TIDEI_FLIGHT_KILLED)
			snprintf(note, TIDEI_ERRLEN, "the previous run %s outside any handler",
				 how);
		return;
	}
	if (s->seq == seq && s->idh == idh && s->kind == kind &&
	    strncmp(s->name, prev->name, NAME) == 0) {
		s->strikes++;
	} else {
		memset(s, 0, sizeof *s);
		s->seq = seq;
		s->idh = idh;
		s->kind = kind;
		snprintf(s->name, sizeof s->name, "%.*s", NAME - 1, prev->name);
		s->strikes = 1;
	}
	if (cause != TIDEI_FLIGHT_KILLED) {
		s->cause = cause;
		s->sig = sig;
	}
	snprintf(note, TIDEI_ERRLEN,
		 "the previous run %s while %s '%s' was handling event %llu (%u time%s on this "
		 "event)%s",
		 how, kind_name(kind), s->name, (unsigned long long)seq, s->strikes,
		 s->strikes == 1 ? "" : "s",
		 s->cause != TIDEI_FLIGHT_KILLED || s->strikes >= TIDEI_FLIGHT_STRIKES
			 ? ": it will be set aside, not run again"
			 : "");
}

int
tidei_flight_open(tidei_flight **out, const char *dir, char *note, char *err)
{
	char path[4200];
	tidei_flight *f;
	page prev;
	struct stat sb;
	void *m;
	int fresh;

	*out = NULL;
	note[0] = '\0';
	if ((f = calloc(1, sizeof *f)) == NULL)
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	snprintf(path, sizeof path, "%s/flight", dir);
	f->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (f->fd < 0 || fstat(f->fd, &sb) != 0 ||
	    (sb.st_size < PAGE && ftruncate(f->fd, PAGE) != 0)) {
		int e = errno;
		if (f->fd >= 0)
			close(f->fd);
		free(f);
		return tidei_err(err, TIDE_EIO, "cannot open %s: %s", path, strerror(e));
	}
	m = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, f->fd, 0);
	if (m == MAP_FAILED) {
		int e = errno;
		close(f->fd);
		free(f);
		return tidei_err(err, TIDE_EIO, "cannot map %s: %s", path, strerror(e));
	}
	f->p = m;
	fresh = f->p->magic != MAGIC || f->p->size != sizeof(page);
	if (fresh) {
		memset(f->p, 0, sizeof(page));
		f->p->magic = MAGIC;
		f->p->size = sizeof(page);
	} else {
		memcpy(&prev, f->p, sizeof prev);
		inherit(f, &prev, note);
	}
	atomic_store(&f->p->seq, 0);
	atomic_store(&f->p->cause, TIDEI_FLIGHT_KILLED);
	atomic_store(&f->p->sig, 0);
	f->p->name[0] = '\0';
	f->p->build[0] = '\0';
	atomic_store(&f->p->away, 0);
	atomic_store(&f->p->running, 1);
	*out = f;
	return TIDE_OK;
}

void
tidei_flight_close(tidei_flight *f)
{
	if (f == NULL)
		return;
	atomic_store(&f->p->seq, 0);
	f->p->build[0] = '\0';
	atomic_store(&f->p->running, 0);
	munmap(f->p, PAGE);
	close(f->fd);
	free(f);
}

void
tidei_flight_enter(tidei_flight *f, int kind, const char *name, const struct tide_event *ev)
{
	page *p;

	if (f == NULL)
		return;
	p = f->p;
	if (name != f->last) {
		snprintf(p->name, sizeof p->name, "%s", name);
		f->last = name;
	}
	atomic_store_explicit(&p->kind, (unsigned)kind, memory_order_relaxed);
	atomic_store_explicit(&p->idh, id_hash(ev), memory_order_relaxed);
	atomic_fetch_add_explicit(&p->calls, 1, memory_order_relaxed);
	atomic_store_explicit(&p->seq, ev->seq, memory_order_release);
}

void
tidei_flight_leave(tidei_flight *f)
{
	if (f != NULL)
		atomic_store_explicit(&f->p->seq, 0, memory_order_release);
}

int
tidei_flight_verdict(tidei_flight *f, int kind, const char *name, const struct tide_event *ev,
		     char *why)
{
	suspect *s;
	char how[96];

	if (f == NULL)
		return 0;
	s = &f->p->sus;
	if (s->seq != ev->seq || s->kind != (uint32_t)kind || strncmp(s->name, name, NAME) != 0 ||
	    s->idh != id_hash(ev))
		return 0;
	if (s->cause == TIDEI_FLIGHT_KILLED && s->strikes < TIDEI_FLIGHT_STRIKES)
		return 0;
	if (s->cause == TIDEI_FLIGHT_KILLED) {
		snprintf(why, TIDEI_ERRLEN,
			 "the engine died %u times while handling this event (killed or out of "
			 "memory); it was set aside instead of being run again",
			 s->strikes);
	} else {
		describe(how, sizeof how, s->cause, s->sig);
		snprintf(why, TIDEI_ERRLEN,
			 "the engine %s while handling this event; it was set aside instead of "
			 "being run again",
			 how);
	}
	memset(s, 0, sizeof *s);
	return 1;
}

void
tidei_flight_build(tidei_flight *f, const char *name)
{
	if (f == NULL)
		return;
	if (name == NULL)
		f->p->build[0] = '\0';
	else
		snprintf(f->p->build, sizeof f->p->build, "%s", name);
}

int
tidei_flight_solo(const tidei_flight *f, const char *name)
{
	const suspect *s;

	if (f == NULL)
		return 0;
	s = &f->p->sus;
	return strcmp(f->build_sus, name) == 0 ||
	       (s->seq != 0 && s->kind == TIDEI_FLIGHT_PROJECTION && strcmp(s->name, name) == 0);
}

int
tidei_flight_postmortem(tidei_flight *f, int cause, int sig)
{
	if (f == NULL)
		return 0;
	atomic_store(&f->p->sig, sig);
	atomic_store(&f->p->cause, (unsigned)cause);
	return atomic_load(&f->p->seq) != 0;
}

void
tidei_flight_away(tidei_flight *f, int away)
{
	if (f != NULL)
		atomic_store(&f->p->away, away ? 1u : 0u);
}

int
tidei_flight_home(const tidei_flight *f)
{
	return f != NULL &&
	       (f->away_sus || (f->p->sus.seq != 0 && f->p->sus.kind == TIDEI_FLIGHT_CONSUMER));
}
