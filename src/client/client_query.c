/*
 * client_query.c — libdynemb's calls of the operator's view (dynemb.h, DYNEMB_CAP_QUERY):
 * dynemb_status, dynemb_list_tables, dynemb_stats_by_name, dynemb_evict_table,
 * dynemb_set_log_level; and dynemb_op_stats (DYNEMB_CAP_OPSTATS), which pages OPSTATS
 * replies and checks each one whole before it copies anything out (opstats_check: the
 * counts against the reply's room, every entry's table index, op, order and histogram).
 * Each is one control request (proto.h types 23..34) through
 * client.c's transport (de_priv_ctl_request: replies checked for magic, version, type,
 * exact length and seq; an ERROR's text kept for dynemb_strerror).
 *
 * Owns nothing beyond a call. Never trusts a reply: strings are NUL-terminated here,
 * counts are bounded by what one reply holds and by the caller's cap.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "client_priv.h"
#include "dynemb.h"
#include "proto.h"

static bool all_zero(const void *p, size_t len)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < len; i++)
		if (b[i])
			return false;
	return true;
}

static int need_query(dynemb_client *c)
{
	if (!c)
		return de_priv_err(-EINVAL, "the client is NULL");
	if (!(dynemb_capabilities(c) & DE_CAP_QUERY))
		return de_priv_err(-EOPNOTSUPP, "this dynembd does not serve the operator's "
				   "queries (status, tables, stats by name, evict, log level): "
				   "it is older than this library");
	return 0;
}

int dynemb_status(dynemb_client *c, struct dynemb_status *out)
{
	int err = need_query(c);
	if (err)
		return err;
	if (!out)
		return de_priv_err(-EINVAL, "out is NULL");
	struct de_msg_hdr m;
	memset(&m, 0, sizeof m);
	m.type = DE_MSG_STATUS;
	struct de_msg_status_ok ok;
	err = de_priv_ctl_request(c, &m, sizeof m, DE_MSG_STATUS_OK, &ok, sizeof ok, NULL, NULL);
	if (err)
		return err;
	memset(out, 0, sizeof *out);
	memcpy(out->version, ok.version, sizeof out->version);
	out->version[sizeof out->version - 1] = 0;
	out->uptime_ms = ok.uptime_ms;
	out->pages_config = ok.pages_config;
	out->pages_got = ok.pages_got;
	out->numa_node = ok.numa_node < 0 ? -1 : ok.numa_node;
	out->clients = ok.clients;
	out->tables = ok.tables;
	out->workers = ok.workers;
	out->pid = ok.pid;
	out->peers = ok.peers;
	out->wal_state = ok.wal_state;
	out->wal_err = ok.wal_err;
	out->wal_last_lsn = ok.wal_last_lsn;
	out->wal_durable_lsn = ok.wal_durable_lsn;
	memcpy(out->wal_error, ok.wal_why, sizeof out->wal_error);
	out->wal_error[sizeof out->wal_error - 1] = 0;
	return 0;
}

int dynemb_list_tables(dynemb_client *c, size_t first, struct dynemb_table_info *out,
		       size_t cap, size_t *n, size_t *total)
{
	int err = need_query(c);
	if (err)
		return err;
	if (!n || (cap && !out))
		return de_priv_err(-EINVAL, "%s is NULL", !n ? "n" : "out");
	if (first > UINT32_MAX)
		return de_priv_err(-EINVAL, "first %zu: more than any daemon has tables", first);
	*n = 0;
	if (total)
		*total = 0;
	static __thread struct de_msg_tables_ok ok; /* 3.8 KiB, off the caller's stack */
	size_t have = 0;
	do {
		struct de_msg_tables m;
		memset(&m, 0, sizeof m);
		m.h.type = DE_MSG_TABLES;
		m.first = (uint32_t)(first + have);
		err = de_priv_ctl_request(c, &m, sizeof m, DE_MSG_TABLES_OK, &ok, sizeof ok, NULL,
					  NULL);
		if (err)
			return err;
		if (total)
			*total = ok.total;
		uint32_t cnt = ok.count < DE_TABLES_PER_MSG ? ok.count : DE_TABLES_PER_MSG;
		for (uint32_t i = 0; i < cnt && have < cap; i++) {
			const struct de_wire_table_info *w = &ok.t[i];
			struct dynemb_table_info *o = &out[have++];
			memset(o, 0, sizeof *o);
			memcpy(o->name, w->name, sizeof o->name);
			o->name[sizeof o->name - 1] = 0;
			o->key_kind = w->key_type;
			o->dim = w->dim;
			o->keys = w->keys;
			o->resident_bytes = w->resident_bytes;
			o->budget_bytes = w->budget_bytes;
			o->read_only = w->read_only;
			o->pages = w->pages;
			o->owner_uid = w->owner;
			o->eviction = w->eviction;
			o->durability = w->durability;
			o->open_connections = w->open_conns;
		}
		if (!cnt)
			break;
	} while (have < cap && first + have < ok.total);
	*n = have;
	return 0;
}

int dynemb_stats_by_name(dynemb_client *c, const char *table_name, struct dynemb_stats *out)
{
	int err = need_query(c);
	if (err)
		return err;
	if (!out)
		return de_priv_err(-EINVAL, "out is NULL");
	struct de_msg_by_name m;
	memset(&m, 0, sizeof m);
	m.h.type = DE_MSG_STATS_BY_NAME;
	if (de_priv_put_name(m.name, table_name))
		return -EINVAL;
	struct de_msg_stats_by_name_ok ok;
	err = de_priv_ctl_request(c, &m, sizeof m, DE_MSG_STATS_BY_NAME_OK, &ok, sizeof ok, NULL,
				  NULL);
	if (err)
		return err;
	de_priv_stats_from_wire(&ok.st, out);
	return 0;
}

int dynemb_evict_table(dynemb_client *c, const char *table_name, uint64_t *evicted)
{
	int err = need_query(c);
	if (err)
		return err;
	struct de_msg_by_name m;
	memset(&m, 0, sizeof m);
	m.h.type = DE_MSG_EVICT;
	if (de_priv_put_name(m.name, table_name))
		return -EINVAL;
	struct de_msg_evict_ok ok;
	err = de_priv_ctl_request(c, &m, sizeof m, DE_MSG_EVICT_OK, &ok, sizeof ok, NULL, NULL);
	if (!err && evicted)
		*evicted = ok.evicted;
	return err;
}

int dynemb_set_log_level(dynemb_client *c, const char *level)
{
	static const char *const names[] = { "error", "warn", "info", "debug" };
	int err = need_query(c);
	if (err)
		return err;
	uint32_t lv = 0;
	while (level && lv <= DE_LOG_LEVEL_MAX && strcmp(level, names[lv]))
		lv++;
	if (!level || lv > DE_LOG_LEVEL_MAX)
		return de_priv_err(-EINVAL, "log level '%s': one of error, warn, info, debug",
				   level ? level : "(null)");
	struct de_msg_log_level m;
	memset(&m, 0, sizeof m);
	m.h.type = DE_MSG_LOG_LEVEL;
	m.level = lv;
	struct de_msg_log_level ok;
	return de_priv_ctl_request(c, &m, sizeof m, DE_MSG_LOG_LEVEL_OK, &ok, sizeof ok, NULL,
				   NULL);
}

/* ---- OPSTATS ---------------------------------------------------------------------------- */

/* dynemb.h's DYNEMB_OP_*, DYNEMB_LAT_BUCKETS, DYNEMB_CAP_OPSTATS are the wire's: client.c
 * asserts it. */

static int bad_reply(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int bad_reply(const char *fmt, ...)
{
	char why[200];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof why, fmt, ap);
	va_end(ap);
	return de_priv_err(-EBADMSG, "dynembd sent a malformed OPSTATS reply: %s", why);
}

static int hist_check(const uint64_t *le, uint64_t total, const char *what, uint32_t i)
{
	for (unsigned b = 1; b <= DE_OPSTATS_BUCKETS; b++)
		if (le[b] < le[b - 1])
			return bad_reply("%s %u: bucket %u holds fewer than bucket %u (cumulative "
					 "buckets never go down)", what, i, b, b - 1);
	if (le[DE_OPSTATS_BUCKETS] != total)
		return bad_reply("%s %u: its last bucket (+Inf) is not its count", what, i);
	return 0;
}

/* The whole reply, before anything of it is used. first: what was asked. */
static int opstats_check(const struct de_msg_opstats_ok *ok, uint32_t first)
{
	if (ok->first != first)
		return bad_reply("it answers first %u, asked %u", ok->first, first);
	if (ok->ntables > DE_OPSTATS_TABLES || ok->count > DE_OPSTATS_ENTRIES)
		return bad_reply("%u tables and %u entries, more than one reply holds (%u, %u)",
				 ok->ntables, ok->count, DE_OPSTATS_TABLES, DE_OPSTATS_ENTRIES);
	if (first < ok->total && !ok->ntables)
		return bad_reply("no table from %u of %u", first, ok->total);
	if (ok->ntables > ok->total - (first < ok->total ? first : ok->total))
		return bad_reply("%u tables from %u of %u", ok->ntables, first, ok->total);
	for (uint32_t t = 0; t < ok->ntables; t++)
		if (!ok->names[t][0] || !memchr(ok->names[t], 0, DE_NAME_MAX))
			return bad_reply("table name %u is %s", t, ok->names[t][0] ? "not terminated"
											: "empty");
	for (uint32_t i = 0; i < ok->count; i++) {
		const struct de_wire_op_stat *e = &ok->op[i];
		if (e->table >= ok->ntables)
			return bad_reply("entry %u: table %u of %u", i, e->table, ok->ntables);
		if (e->op < 1 || e->op > DE_OP_MAX)
			return bad_reply("entry %u: op %u (1..%u)", i, e->op, DE_OP_MAX);
		if (i && (e->table < ok->op[i - 1].table ||
			  (e->table == ok->op[i - 1].table && e->op <= ok->op[i - 1].op)))
			return bad_reply("entry %u: out of order (table %u op %u after table %u op "
					 "%u)", i, e->table, e->op, ok->op[i - 1].table,
					 ok->op[i - 1].op);
		if (!e->requests || e->errors > e->requests)
			return bad_reply("entry %u: %llu requests, %llu errors", i,
					 (unsigned long long)e->requests,
					 (unsigned long long)e->errors);
		int err = hist_check(e->le, e->requests, "entry", i);
		if (err)
			return err;
	}
	if (ok->wal.present > 1)
		return bad_reply("WAL present %u", ok->wal.present);
	if (!ok->wal.present && !all_zero(&ok->wal, sizeof ok->wal))
		return bad_reply("WAL counters without a WAL");
	if (ok->wal.present) {
		if (ok->wal.durable_lsn > ok->wal.last_lsn)
			return bad_reply("WAL durable lsn %llu past the last, %llu",
					 (unsigned long long)ok->wal.durable_lsn,
					 (unsigned long long)ok->wal.last_lsn);
		return hist_check(ok->wal.flush_le, ok->wal.flush_le[DE_OPSTATS_BUCKETS], "WAL",
				  0);
	}
	return 0;
}

static void op_stat_from_wire(const struct de_msg_opstats_ok *ok, const struct de_wire_op_stat *e,
			      struct dynemb_op_stat *o)
{
	memset(o, 0, sizeof *o);
	memcpy(o->table, ok->names[e->table], sizeof o->table); /* terminated: checked */
	o->op = e->op;
	o->requests = e->requests;
	o->errors = e->errors;
	o->keys = e->keys;
	o->sum_ns = e->sum_ns;
	memcpy(o->le, e->le, sizeof o->le);
}

int dynemb_op_stats(dynemb_client *c, struct dynemb_op_stat *out, size_t cap, size_t *n,
		    struct dynemb_wal_stats *wal)
{
	if (!c)
		return de_priv_err(-EINVAL, "the client is NULL");
	if (!(dynemb_capabilities(c) & DE_CAP_OPSTATS))
		return de_priv_err(-EOPNOTSUPP, "this dynembd does not serve per-op statistics "
				   "(OPSTATS): it is older than this library");
	if (!n || (cap && !out))
		return de_priv_err(-EINVAL, "%s is NULL", !n ? "n" : "out");
	*n = 0;
	if (wal)
		memset(wal, 0, sizeof *wal);
	static __thread struct de_msg_opstats_ok ok; /* 3.7 KiB, off the caller's stack */
	size_t have = 0;
	uint32_t first = 0;
	for (unsigned pages = 0;; pages++) {
		struct de_msg_tables m;
		memset(&m, 0, sizeof m);
		m.h.type = DE_MSG_OPSTATS;
		m.first = first;
		int err = de_priv_ctl_request(c, &m, sizeof m, DE_MSG_OPSTATS_OK, &ok, sizeof ok,
					      NULL, NULL);
		if (err)
			return err;
		err = opstats_check(&ok, first);
		if (err)
			return err;
		if (!pages && wal) {
			wal->present = ok.wal.present;
			wal->last_lsn = ok.wal.last_lsn;
			wal->durable_lsn = ok.wal.durable_lsn;
			wal->bytes_written = ok.wal.bytes_written;
			wal->flushes = ok.wal.flushes;
			wal->fsyncs = ok.wal.fsyncs;
			wal->flush_ns_sum = ok.wal.flush_ns_sum;
			memcpy(wal->flush_le, ok.wal.flush_le, sizeof wal->flush_le);
		}
		for (uint32_t i = 0; i < ok.count; i++, have++)
			if (have < cap)
				op_stat_from_wire(&ok, &ok.op[i], &out[have]);
		if (first >= ok.total || ok.ntables >= ok.total - first)
			break;
		first += ok.ntables; /* >= 1 and < total: checked */
	}
	*n = have;
	if (have > cap)
		return de_priv_err(-ENOBUFS, "%zu per-op entries, room for %zu: call again with "
				   "room for %zu or more", have, cap, have);
	return 0;
}
