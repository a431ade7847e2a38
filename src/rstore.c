/*
 * rstore.c - what rules stored, read from outside them: the clock and
 * counters tide stat shows, and the states per key that tide test and
 * tide backtest report.  The records are rule.c's (see its header).
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "rule.h"
#include "val.h"

int
tidei_rule_stat_read(tidei_log *log, MDB_txn *txn, const char *name, tidei_rule_stat *st, int count)
{
	tidei_buf kb = { 0 };
	MDB_val k, v;
	tidei_vreader rd;
	tidei_vitem it;
	int64_t f[6];
	int mrc, n = 0;

	memset(st, 0, sizeof *st);
	st->watermark = INT64_MIN;
	if (!log->has_rules)
		return TIDE_ENOTFOUND;
	tidei_buf_putc(&kb, 'M');
	tidei_buf_put(&kb, name, strlen(name));
	if (kb.failed)
		return TIDE_ENOMEM;
	k.mv_size = kb.len;
	k.mv_data = kb.p;
	mrc = mdb_get(txn, log->rules, &k, &v);
	tidei_buf_free(&kb);
	if (mrc == MDB_NOTFOUND)
		return TIDE_ENOTFOUND;
	if (mrc != 0)
		return tidei_err_mdb(mrc);
	rd.p = v.mv_data;
	rd.end = rd.p + v.mv_size;
	if (tidei_val_next(&rd, &it) != 0 || it.type != TIDEI_V_ARRAY || it.u.count < 6)
		return TIDE_EIO;
	for (n = 0; n < 6; n++) {
		if (tidei_val_next(&rd, &it) != 0 || it.type != TIDEI_V_INT)
			return TIDE_EIO;
		f[n] = it.u.i;
	}
	st->watermark = f[2];
	st->late = (uint64_t)f[3];
	st->fired = (uint64_t)f[4];
	st->failed = (uint64_t)f[5];
	if (count) {
		size_t plen = strlen(name) + 2;
		char *pre = malloc(plen);
		if (pre == NULL)
			return TIDE_ENOMEM;
		memcpy(pre + 1, name, plen - 1);
		pre[0] = 'S';
		mrc = tidei_log_count_prefix(txn, log->rules, pre, plen, &st->keys);
		pre[0] = 'T';
		if (mrc == 0)
			mrc = tidei_log_count_prefix(txn, log->rules, pre, plen, &st->timers);
		free(pre);
		if (mrc != 0)
			return tidei_err_mdb(mrc);
	}
	return TIDE_OK;
}

int
tidei_rule_states_read(tidei_log *log, MDB_txn *txn, const char *name, tidei_rule_state_fn *fn,
		       void *ud)
{
	size_t plen = strlen(name) + 2;
	tidei_buf pre = { 0 }, json = { 0 };
	MDB_cursor *cur;
	MDB_val k, v;
	int mrc, rc = TIDE_OK;

	if (!log->has_rules)
		return TIDE_ENOTFOUND;
	tidei_buf_putc(&pre, 'S');
	tidei_buf_put(&pre, name, plen - 1); /* with its NUL */
	if (pre.failed)
		return TIDE_ENOMEM;
	if ((mrc = mdb_cursor_open(txn, log->rules, &cur)) != 0) {
		tidei_buf_free(&pre);
		return tidei_err_mdb(mrc);
	}
	k.mv_size = pre.len;
	k.mv_data = pre.p;
	for (mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
	     mrc == 0 && rc == TIDE_OK && k.mv_size >= pre.len &&
	     memcmp(k.mv_data, pre.p, pre.len) == 0;
	     mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		tidei_vreader rd = { v.mv_data, (const uint8_t *)v.mv_data + v.mv_size };
		tidei_vitem it;
		int i;
		if (tidei_val_next(&rd, &it) != 0 || it.type != TIDEI_V_ARRAY || it.u.count < 5) {
			rc = TIDE_EIO;
			break;
		}
		for (i = 0; i < 4 && tidei_val_next(&rd, &it) == 0 && it.type == TIDEI_V_INT; i++)
			;
		if (i < 4) {
			rc = TIDE_EIO;
			break;
		}
		if (rd.p < rd.end && *rd.p == 0xc0)
			continue; /* no state, only windows */
		tidei_buf_reset(&json);
		if (tidei_json_encode(&json, &rd) != 0 || json.failed) {
			rc = json.failed ? TIDE_ENOMEM : TIDE_EIO;
			break;
		}
		if (fn(ud, (const char *)k.mv_data + pre.len, k.mv_size - pre.len,
		       (const char *)json.p, json.len) != 0)
			break;
	}
	mdb_cursor_close(cur);
	tidei_buf_free(&pre);
	tidei_buf_free(&json);
	if (rc == TIDE_OK && mrc != 0 && mrc != MDB_NOTFOUND)
		rc = tidei_err_mdb(mrc);
	return rc;
}
