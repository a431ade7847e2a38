/*
 * pending.c - a consumer's set of pending events (pending.h): kept in seq
 * order, with a count per subject of the unresolved ones, so that a new
 * event asks "is my subject held back?" in constant time however many
 * events are pending.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "consumer.h"
#include "pending.h"

uint64_t
tidei_subject_hash(const struct tide_event *ev)
{
	uint64_t h = 0xcbf29ce484222325ull;

	if (ev->attr[TIDEI_A_SUBJECT] == NULL)
		return 0;
	for (uint32_t k = 0; k < ev->len[TIDEI_A_SUBJECT]; k++) {
		h ^= (uint8_t)ev->attr[TIDEI_A_SUBJECT][k];
		h *= 0x100000001b3ull;
	}
	return h | 1; /* 0 means "no subject" */
}

/* The counter slot of subject hash @p h (never 0), or NULL when absent
 * and @p add is 0 (or memory ran out). */
static struct tidei_subj *
subj_slot(tidei_consumer *c, uint64_t h, int add)
{
	size_t mask, i;

	if (add && (c->subj_used + 1) * 2 > c->subj_cap) {
		/* grow, keeping only the subjects still held back */
		size_t cap = c->subj_cap ? c->subj_cap * 2 : 64, used = 0;
		struct tidei_subj *v = calloc(cap, sizeof *v);
		if (v == NULL)
			return NULL;
		for (size_t k = 0; k < c->subj_cap; k++) {
			if (c->subj[k].n == 0)
				continue;
			for (i = c->subj[k].h & (cap - 1); v[i].h != 0; i = (i + 1) & (cap - 1))
				;
			v[i] = c->subj[k];
			used++;
		}
		free(c->subj);
		c->subj = v;
		c->subj_cap = cap;
		c->subj_used = used;
	}
	if (c->subj_cap == 0)
		return NULL;
	mask = c->subj_cap - 1;
	for (i = h & mask; c->subj[i].h != 0; i = (i + 1) & mask)
		if (c->subj[i].h == h)
			return &c->subj[i];
	if (!add)
		return NULL;
	c->subj[i].h = h;
	c->subj_used++;
	return &c->subj[i];
}

/* Pending entry @p k is resolved: it no longer holds its subject back. */
void
tidei_pend_done(tidei_consumer *c, size_t k)
{
	struct tidei_subj *sl;

	if (c->pend[k].done)
		return;
	c->pend[k].done = 1;
	if (c->pend[k].subject != 0 && (sl = subj_slot(c, c->pend[k].subject, 0)) != NULL &&
	    sl->n > 0)
		sl->n--;
}

void
tidei_pend_clear(tidei_consumer *c)
{
	c->npend = 0;
	c->subj_used = 0;
	if (c->subj != NULL)
		memset(c->subj, 0, c->subj_cap * sizeof *c->subj);
}

/* Add an entry (seqs only grow, except for dead letters retried by hand,
 * which are inserted in order). */
int
tidei_pend_add(tidei_consumer *c, uint64_t seq, uint64_t subject, const tidei_pending_rec *r)
{
	size_t at = c->npend;
	struct tidei_subj *sl = NULL;

	if (r->from_dlq)
		subject = 0; /* a dead letter retried by hand holds nothing back */
	if (tidei_array_grow(&c->pend, &c->pcap, c->npend, sizeof *c->pend, 16) != 0 ||
	    (subject != 0 && (sl = subj_slot(c, subject, 1)) == NULL))
		return TIDE_ENOMEM;
	while (at > 0 && c->pend[at - 1].seq > seq)
		at--;
	memmove(c->pend + at + 1, c->pend + at, (c->npend - at) * sizeof *c->pend);
	c->pend[at].seq = seq;
	c->pend[at].subject = subject;
	c->pend[at].r = *r;
	c->pend[at].done = 0;
	c->npend++;
	if (sl != NULL)
		sl->n++;
	return TIDE_OK;
}

/* Is a new event of @p subject held back by an unresolved one? */
int
tidei_pend_blocked(tidei_consumer *c, uint64_t subject)
{
	struct tidei_subj *sl;

	if (subject == 0 || !c->ordered)
		return 0;
	sl = subj_slot(c, subject, 0);
	return sl != NULL && sl->n > 0;
}

/* The pending entry of @p seq, or NULL. */
tidei_pending *
tidei_pend_find(tidei_consumer *c, uint64_t seq, size_t *at)
{
	size_t lo = 0, hi = c->npend;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (c->pend[mid].seq < seq)
			lo = mid + 1;
		else
			hi = mid;
	}
	*at = lo;
	return lo < c->npend && c->pend[lo].seq == seq ? &c->pend[lo] : NULL;
}

/* ------------------------------------------------------------------------
 * Retries: when, and what the log keeps
 * ------------------------------------------------------------------------ */

int64_t
tidei_pend_backoff(const tidei_consumer *c, uint32_t attempts)
{
	int64_t d = c->backoff_ns;

	for (uint32_t k = 1; k < attempts && d < c->backoff_max_ns; k++)
		d *= 2;
	return d < c->backoff_max_ns ? d : c->backoff_max_ns;
}

int
tidei_pend_persist(tidei_consumer *c, tidei_log *log, const tidei_pending *p, char *err)
{
	int rc = p->done ? tidei_log_pending_del(log, c->name, p->seq)
			 : tidei_log_pending_put(log, c->name, p->seq, &p->r);

	return rc == TIDE_OK ? TIDE_OK : tidei_err(err, rc, "%s", log->err);
}

/* The event at @p i is resolved: let the next waiting event of its
 * subject go, due now. */
int
tidei_pend_release(tidei_consumer *c, tidei_log *log, size_t i, char *err)
{
	uint64_t subject = c->pend[i].subject;

	if (subject == 0)
		return TIDE_OK;
	for (size_t k = i + 1; k < c->npend; k++) {
		tidei_pending *p = &c->pend[k];
		if (p->done || p->subject != subject)
			continue;
		if (p->r.state == TIDEI_PENDING_WAITING) {
			p->r.state = TIDEI_PENDING_RETRY;
			p->r.attempts = 0;
			p->r.next_at = 0;
			return tidei_pend_persist(c, log, p, err);
		}
		return TIDE_OK;
	}
	return TIDE_OK;
}
