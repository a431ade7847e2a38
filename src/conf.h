/*
 * conf.h - the configuration behind the opaque tide_config: the option
 * table, defaults, parsing of values, and loading of Lua config files.
 */
#ifndef TIDE_CONF_H
#define TIDE_CONF_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* Bounds of settings that make no sense beyond them: a script state
 * needs some memory to load, LMDB some map to open, and a build's threads
 * are a few per CPU at most. */
#define TIDEI_MIN_MEMORY ((uint64_t)1 << 20)
#define TIDEI_MIN_MAP ((uint64_t)64 << 10)
#define TIDEI_MAX_BUILD_THREADS 64

#define TIDEI_DURABILITY_SYNC 0
#define TIDEI_DURABILITY_RELAXED 1

/* When the consumers run on a thread of their own (cthread.h). */
#define TIDEI_CTHREAD_OFF 0
#define TIDEI_CTHREAD_BUSY 1   /* while producers keep the engine busy */
#define TIDEI_CTHREAD_ALWAYS 2 /* whenever there is something to handle */

struct tide_config {
	char *data;
	int durability;
	uint64_t sync_interval_ms;
	char *pull, *rep, *pub; /* NULL = default inside data, "" = off */
	char *http;             /* HTTP listen address; NULL or "" = off */
	char *http_token;       /* bearer token for POST /events; NULL = none */
	/* cluster mode over NATS JetStream (cluster.h): off unless cluster */
	char *cluster;        /* NATS URLs, comma-separated */
	char *cluster_node;   /* this node's name (default: the host's name) */
	char *cluster_stream; /* default "TIDE" */
	char *cluster_key;    /* partition key: "subject" or a path */
	uint64_t cluster_partitions;
	uint64_t cluster_replicas;
	uint64_t cluster_lease_ns;
	uint64_t map_size;
	uint64_t max_event_size;
	uint64_t max_message_size;
	uint64_t turn_events;
	uint64_t instruction_budget;
	uint64_t time_limit_ns; /* wall-clock time per handler call; 0 = none */
	uint64_t memory_limit;
	uint64_t max_emits;
	uint64_t max_emit_depth; /* 0: no bound (but 65535) */
	uint64_t build_threads;  /* 0: one per CPU (at most 8) */
	int consumer_thread;     /* TIDEI_CTHREAD_* */
	int log_level;
	char *lua_path;
	char **scripts;
	size_t nscripts;
	char **allow; /* NULL-terminated */
	size_t nallow;
	char **params; /* "NAME=VALUE", NULL-terminated: tide.param's overrides */
	size_t nparams;
	tide_log_fn *log;
	void *log_ud;
	char getbuf[32];
	char err[TIDEI_ERRLEN];
};

/** Deep copy (the engine keeps its own). */
int tidei_config_copy(tide_config **out, const tide_config *src);

/** Parse "64M", "1GiB", "4096" into bytes.  Returns 0 or -1. */
int tidei_parse_size(const char *s, uint64_t *out);

/** Parse a duration into ns: seconds as a number ("5", "0.25") or with a
 *  unit ("2s", "500ms", "250us", "100ns").  Returns 0 or -1. */
int tidei_parse_duration(const char *s, uint64_t *out);

#endif
