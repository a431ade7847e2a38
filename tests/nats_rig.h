/*
 * nats_rig.h - a real NATS JetStream cluster for the tests: one or three
 * `nats-server` processes on 127.0.0.1, with ports of their own, their
 * configs, stores and logs in a temporary directory, started and stopped,
 * killed and restarted, and the leader of a stream asked to step down.
 *
 * Careful (nats-server 2.9.10): killing the *leader* of a stream while
 * publishes are in flight can leave a replica corrupt once it restarts.
 * So the rig moves a leader with tn_stream_step_down() and kills only
 * followers (tn_server_kill() on a server that is not the leader).
 */
#ifndef TIDE_TEST_NATS_RIG_H
#define TIDE_TEST_NATS_RIG_H

#include <check.h>
#include <stddef.h>
#include <sys/types.h>

#include <nats/nats.h>

typedef struct tn_cluster {
	int n; /* servers: 1 or 3 */
	pid_t pid[3];
	int port[3];         /* client ports on 127.0.0.1 */
	int cport[3];        /* cluster (route) ports */
	char name[3][32];    /* server names, "n0", "n1", "n2" */
	char dir[512];       /* where configs, stores and logs live (under th_tmpdir()) */
	char urls[256];      /* "nats://127.0.0.1:P0,nats://127.0.0.1:P1,..." */
	unsigned partitions; /* for the server-side mapping below; 0 = none */
} tn_cluster;

/** Start @p n servers (1 or 3) with JetStream, clustered as "tide" when
 *  @p n is 3, on free ports of 127.0.0.1.  When @p partitions > 0 every
 *  server maps "tide.in.*" to "tide.p.{{partition(N,1)}}.{{wildcard(1)}}"
 *  with N = @p partitions.  Waits (20 s) until every server answers
 *  $JS.API.INFO and, for three, until an R3 stream can be made.  Returns 0,
 *  or -1 after saying why on stderr, with the tails of the servers' logs. */
int tn_cluster_start(tn_cluster *c, int n, unsigned partitions);
/** SIGTERM every server, wait, SIGKILL those still there after 5 s. */
void tn_cluster_stop(tn_cluster *c);
/** SIGKILL server @p i and reap it.  Only for followers (see above). */
void tn_server_kill(tn_cluster *c, int i);
/** Start server @p i again on its config and store; wait (20 s) until it
 *  answers $JS.API.INFO.  Returns 0 or -1. */
int tn_server_restart(tn_cluster *c, int i);
/** Name of the server leading stream @p stream into @p name.  0 or -1. */
int tn_stream_leader(tn_cluster *c, const char *stream, char *name, size_t n);
/** Ask the leader of @p stream to step down and wait (20 s) until another
 *  server leads it.  0 or -1. */
int tn_stream_step_down(tn_cluster *c, const char *stream);
/** Index of the server named @p name, or -1. */
/* Stop every server (SIGTERM) and start them all again on the same
 * stores; wait until JetStream serves again.  0 or -1. */
int tn_cluster_restart(tn_cluster *c);
int tn_server_index(const tn_cluster *c, const char *name);
/** A connection to the cluster (every URL), reconnecting when a server
 *  goes away, or NULL.  The caller destroys it. */
natsConnection *tn_connect(const tn_cluster *c);

/* The suite, for the runner. */
Suite *nats_suite(void);
Suite *cluster_suite(void); /* test_cluster.c */

#endif
