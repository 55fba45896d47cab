/*
 * client_query.c — libdynemb's calls of the operator's view (dynemb.h, DYNEMB_CAP_QUERY):
 * dynemb_status, dynemb_list_tables, dynemb_stats_by_name, dynemb_evict_table,
 * dynemb_set_log_level. Each is one control request (proto.h types 23..32) through
 * client.c's transport (de_priv_ctl_request: replies checked for magic, version, type,
 * exact length and seq; an ERROR's text kept for dynemb_strerror).
 *
 * Owns nothing beyond a call. Never trusts a reply: strings are NUL-terminated here,
 * counts are bounded by what one reply holds and by the caller's cap.
 */
#include <errno.h>
#include <string.h>

#include "client_priv.h"
#include "dynemb.h"
#include "proto.h"

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

static int put_name(char dst[DE_NAME_MAX], const char *name)
{
	size_t n = name ? strlen(name) : 0;
	if (!n || n >= DE_NAME_MAX)
		return de_priv_err(-EINVAL, "table name %s: a table name is 1 to %u bytes, "
				   "without control characters", n ? "too long" : "empty",
				   DE_NAME_MAX - 1);
	memcpy(dst, name, n);
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
	if (put_name(m.name, table_name))
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
	if (put_name(m.name, table_name))
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
