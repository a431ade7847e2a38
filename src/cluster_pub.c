/*
 * cluster_pub.c - publishing to a cluster's stream (cluster_int.h): the
 * producers' batches and the outbox's entries go out as flights, each
 * event with its source and id as Nats-Msg-Id; libnats answers each on
 * its own thread (tidei_cl_ack), and a flight is done when every event
 * has its answer.
 */
#include "config.h"

#include "cluster_int.h"

const char *
tidei_cl_why(natsStatus s)
{
	const char *last = nats_GetLastError(NULL);

	return last != NULL && last[0] != '\0' ? last : natsStatus_GetText(s);
}

/* ------------------------------------------------------------------------
 * Publishing
 * ------------------------------------------------------------------------ */

static size_t
slot_of(const flight *f, const natsMsg *m)
{
	uintptr_t h = (uintptr_t)m;

	h ^= h >> 17;
	h *= 0x9e3779b97f4a7c15ull;
	return (size_t)(h >> 7) & (f->cap - 1);
}

void
tidei_cl_flight_free(flight *f)
{
	if (f == NULL)
		return;
	for (size_t k = 0; f->why != NULL && k < f->nentries; k++)
		free(f->why[k]);
	free(f->why);
	free(f->oid);
	free(f->seq);
	free(f->dup);
	free(f->sent);
	tidei_batch_free(&f->b);
	free(f);
}

/* libnats, on its thread: the stream's answer to one event. */
void
tidei_cl_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
	tidei_cluster *cl = closure;
	int wake = 0;

	(void)js;
	pthread_mutex_lock(&cl->mu);
	for (flight *f = cl->flights; f != NULL; f = f->next) {
		size_t s = slot_of(f, msg);
		while (f->sent[s].msg != NULL && f->sent[s].msg != msg)
			s = (s + 1) & (f->cap - 1);
		if (f->sent[s].msg == NULL)
			continue;
		size_t it = f->sent[s].item;
		if (f->oid != NULL) /* an emitted event: out of the outbox, or again */
			tidei_cl_ids_push(pa != NULL ? &cl->acked : &cl->retry, f->oid[it]);
		if (pa != NULL) {
			f->seq[it] = pa->Sequence;
			f->dup[it] = pa->Duplicate;
		} else {
			char text[300];
			snprintf(text, sizeof text,
				 "not stored: the cluster did not acknowledge it (%s)",
				 pae != NULL && pae->ErrText != NULL ? pae->ErrText
				 : pae != NULL                       ? natsStatus_GetText(pae->Err)
								     : "no answer");
			free(f->why[it]);
			f->why[it] = strdup(text);
		}
		f->answered++;
		wake = f->sealed && f->answered == f->n;
		/* its pointer may come back for a new message: out of the table */
		f->sent[s].msg = SENT_GONE;
		break;
	}
	pthread_mutex_unlock(&cl->mu);
	natsMsg_Destroy(msg); /* ours to destroy, the handler's documentation says */
	if (wake)
		cl->host.wake(cl->host.ud);
}

int
tidei_cluster_can_publish(const tidei_cluster *cl)
{
	tidei_cluster *c = (tidei_cluster *)cl;
	size_t n;

	pthread_mutex_lock(&c->mu);
	n = c->nflights;
	pthread_mutex_unlock(&c->mu);
	return n < MAX_FLIGHTS;
}

uint32_t
tidei_cluster_partition_of(const tidei_cluster *cl, const uint8_t *rec, size_t len)
{
	struct tide_event ev;
	tide_value v;
	char num[40];
	const char *k = NULL;
	size_t n = 0;

	if (tidei_event_decode(&ev, rec, len) != 0)
		return 0;
	ev.seq = 0;
	ev.scratch = NULL;
	if (tide_event_value(&ev, cl->key, &v) == TIDE_OK) {
		if (v.type == TIDE_STRING) {
			k = v.s;
			n = v.len;
		} else if (v.type == TIDE_INT) {
			n = (size_t)snprintf(num, sizeof num, "%lld", (long long)v.i);
			k = num;
		} else if (v.type == TIDE_DOUBLE) {
			n = (size_t)snprintf(num, sizeof num, "%.14g", v.d);
			k = num;
		}
	}
	if (k == NULL) { /* no key: spread by id */
		k = ev.attr[TIDEI_A_ID];
		n = ev.len[TIDEI_A_ID];
	}
	return tidei_partition(k, n, cl->o.partitions);
}

/* The message that publishes record @p rec: its CloudEvents JSON on its
 * partition's subject, its source and id as Nats-Msg-Id (the log's dedupe
 * key), and for an emitted event its depth.  NULL with @p why set. */
static natsMsg *
event_msg(tidei_cluster *cl, const uint8_t *rec, size_t len, const char **why)
{
	struct tide_event ev;
	natsMsg *m = NULL;
	char subj[256], id[512], depth[16];
	unsigned d;

	if (tidei_event_decode(&ev, rec, len) != 0) {
		*why = "not stored: the event could not be read back";
		return NULL;
	}
	ev.seq = 0;
	ev.scratch = NULL;
	tidei_buf_reset(&cl->json);
	if (tidei_event_json(&cl->json, &ev) != 0 || cl->json.failed) {
		*why = "not stored: out of memory";
		return NULL;
	}
	snprintf(subj, sizeof subj, "%s.p.%" PRIu32 ".t", cl->prefix,
		 tidei_cluster_partition_of(cl, rec, len));
	snprintf(id, sizeof id, "%.*s %.*s", (int)ev.len[TIDEI_A_SOURCE], ev.attr[TIDEI_A_SOURCE],
		 (int)ev.len[TIDEI_A_ID], ev.attr[TIDEI_A_ID]);
	d = tidei_event_depth(&ev);
	snprintf(depth, sizeof depth, "%u", d);
	if (natsMsg_Create(&m, subj, NULL, (const char *)cl->json.p, (int)cl->json.len) !=
		    NATS_OK ||
	    natsMsgHeader_Set(m, "Nats-Msg-Id", id) != NATS_OK ||
	    natsMsgHeader_Set(m, "Content-Type", "application/cloudevents+json") != NATS_OK ||
	    (d > 0 && natsMsgHeader_Set(m, "Tide-Depth", depth) != NATS_OK)) {
		natsMsg_Destroy(m);
		*why = "not stored: out of memory";
		return NULL;
	}
	return m;
}

/* Publish record @p rec as entry @p i of flight @p f: 0, or -1 when it
 * could not be sent (f->why[i] says why; no answer will come for it). */
int
tidei_cl_send_rec(tidei_cluster *cl, flight *f, size_t i, const uint8_t *rec, size_t len)
{
	const char *why = NULL;
	natsMsg *m = event_msg(cl, rec, len, &why);
	jsPubOptions po;
	natsStatus s;
	size_t slot;

	if (m == NULL) {
		f->why[i] = strdup(why);
		return -1;
	}
	pthread_mutex_lock(&cl->mu);
	slot = slot_of(f, m);
	while (f->sent[slot].msg != NULL)
		slot = (slot + 1) & (f->cap - 1);
	f->sent[slot].msg = m;
	f->sent[slot].item = i;
	f->n++;
	pthread_mutex_unlock(&cl->mu);
	/* an acknowledgement lost in a failover must not leave the entry
	 * waiting for ever: after this long it is answered as an error */
	jsPubOptions_Init(&po);
	po.MaxWait = PUB_WAIT_MS;
	if ((s = js_PublishMsgAsync(cl->js, &m, &po)) != NATS_OK) {
		char text[300];
		snprintf(text, sizeof text, "not stored: the cluster cannot be reached (%s)",
			 tidei_cl_why(s));
		pthread_mutex_lock(&cl->mu);
		f->why[i] = strdup(text);
		f->answered++;
		f->sent[slot].msg = SENT_GONE;
		pthread_mutex_unlock(&cl->mu);
		natsMsg_Destroy(m);
		return -1;
	}
	return 0;
}

/* A flight of @p n entries (its batch, if any, is set by the caller),
 * appended to cl->flights. */
flight *
tidei_cl_flight_new(tidei_cluster *cl, size_t n)
{
	flight *f;
	size_t cap = 16;

	while (cap < 2 * (n + 1))
		cap <<= 1;
	if ((f = calloc(1, sizeof *f)) == NULL ||
	    (f->sent = calloc(cap, sizeof *f->sent)) == NULL ||
	    (f->seq = calloc(n + 1, sizeof *f->seq)) == NULL ||
	    (f->dup = calloc(n + 1, 1)) == NULL ||
	    (f->why = calloc(n + 1, sizeof *f->why)) == NULL) {
		tidei_cl_flight_free(f);
		return NULL;
	}
	f->cap = cap;
	f->nentries = n;
	pthread_mutex_lock(&cl->mu);
	{
		flight **tail = &cl->flights;
		while (*tail != NULL)
			tail = &(*tail)->next;
		*tail = f;
	}
	cl->nflights++;
	pthread_mutex_unlock(&cl->mu);
	return f;
}

/* Every entry of @p f is handed to libnats: it is done when all have
 * their answer. */
void
tidei_cl_flight_seal(tidei_cluster *cl, flight *f)
{
	int done;

	pthread_mutex_lock(&cl->mu);
	f->sealed = 1;
	done = f->answered == f->n;
	pthread_mutex_unlock(&cl->mu);
	if (done)
		cl->host.wake(cl->host.ud);
}

int
tidei_cluster_publish(tidei_cluster *cl, tidei_batch *b, char *err)
{
	flight *f;

	if ((f = tidei_cl_flight_new(cl, b->n)) == NULL)
		return tidei_err(err, TIDE_ENOMEM, "out of memory");
	/* the batch moves into the flight; the engine's starts afresh */
	f->b = *b;
	f->has_batch = 1;
	tidei_batch_init(b, cl->o.max_event);
	for (size_t i = 0; i < f->b.n; i++) {
		tidei_item *it = &f->b.items[i];
		if (it->len == 0)
			continue;
		if (it->expect >= 0) {
			f->why[i] = strdup("an expected version cannot be checked in a cluster "
					   "(the stream orders events, not subjects' versions)");
			continue;
		}
		tidei_cl_send_rec(cl, f, i, tidei_batch_rec(&f->b, it), it->len);
	}
	cl->published += f->n;
	tidei_cl_flight_seal(cl, f);
	return TIDE_OK;
}

/* The flights that are done, oldest first, out of the list. */
flight *
tidei_cl_take_done(tidei_cluster *cl)
{
	flight *done = NULL, **tail = &done;

	pthread_mutex_lock(&cl->mu);
	for (flight **pp = &cl->flights; *pp != NULL;) {
		flight *f = *pp;
		if (f->sealed && f->answered == f->n) {
			*pp = f->next;
			f->next = NULL;
			*tail = f;
			tail = &f->next;
			cl->nflights--;
		} else {
			pp = &f->next;
		}
	}
	pthread_mutex_unlock(&cl->mu);
	return done;
}

void
tidei_cl_hand_back(tidei_cluster *cl, flight *f)
{
	if (!f->has_batch)
		return; /* the outbox's: its answers are taken in ack() */
	for (size_t i = 0; i < f->b.n; i++) {
		tidei_item *it = &f->b.items[i];
		if (it->len == 0)
			continue;
		if (f->why[i] != NULL) {
			tidei_batch_fail(&f->b, it, it->expect >= 0 ? TIDE_EEVENT : TIDE_ESTATE,
					 f->why[i]);
			continue;
		}
		it->seq = f->seq[i];
		it->duplicate = f->dup[i];
	}
	cl->host.published(cl->host.ud, &f->b);
}
