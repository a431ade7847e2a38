/*
 * rules_rig.h - rigs for the rule suites: a real `tide run` on a data
 * directory of its own (rig), or the consumer layer over a log turn by
 * turn as the engine runs it, so that a turn can be aborted or the log
 * made to fail (urig); events written as NDJSON, and what the log holds.
 */
#ifndef TIDE_TEST_RULES_RIG_H
#define TIDE_TEST_RULES_RIG_H

#include "consumer.h"
#include "helpers.h"
#include "log.h"

typedef struct rig {
	const char *dir;
	char data[600], script[600], events[600];
	th_daemon d;
	int running;
	const char *extra; /* more arguments for `tide run`, or NULL */
} rig;

typedef struct urig {
	const char *dir;
	char data[600], script[600];
	tidei_log *log;
	tidei_consumers *cs;
	tidei_buf path, rec;
	uint64_t map;
	int64_t write_ns; /* the consumers' write_ns (0: theirs); set before u_reopen */
} urig;

void rig_init(rig *r, const char *script);
void rig_start(rig *r);
void rig_stop(rig *r);
void rig_kill(rig *r);
void rig_publish(rig *r, char *text, const char *name);
void event(sbuf *b, int id, const char *type, const char *subject, int minute, const char *data);
char *emitted(const char *data, const char *type);
void u_open(urig *u, const char *script, uint64_t map);
void u_reopen(urig *u);
void u_close(urig *u);
void u_publish(urig *u, char *text);
void u_run(urig *u);
void u_abort_turn(urig *u);
char *log_emits(const char *data);
char *replay_emits(const rig *r);
void same_lines(const char *got, const char *want);
TCase *rules_tcase(Suite *s, const char *name);

#endif
