/*
 * control_query.c — the operator's view of the daemon (proto.h, types 23..34): STATUS,
 * TABLES, STATS_BY_NAME, EVICT, LOG_LEVEL, OPSTATS, as dynembctl status / tables / stats
 * / health / evict / log-level / top use them.
 *
 * Rights (authz.h), decided before whether the table exists matters, in OPEN's order:
 *   STATUS       anyone connected (it names no table)
 *   TABLES       lists only the tables the caller has the open right on (root: all)
 *   OPSTATS      the same tables' per-op counters; its WAL part: anyone connected
 *   STATS_BY_NAME  the open right; EVICT the write right. A caller with neither open nor
 *                create on the name hears -EACCES whether or not the table exists; one
 *                with either may learn that it does not (-ENOENT), as OPEN tells it.
 *   LOG_LEVEL    root or the daemon's own uid (-EPERM)
 *
 * Lifetime: every handler runs on the control thread, which is also the only thread that
 * drops tables (control_drop.c) and adds them; a table found here stays until the
 * handler returns. srv_table_wire_stats may be called from any thread.
 * EVICT runs the pass on the control thread (learnops.h: srv_learn_evict_now, bounded):
 * other connections wait for it, as they wait for a DROP's catalog fsync.
 *
 * Callers: control.c (on_message). Never: names a table the caller may not open, or
 * changes a table but through the evictor.
 */
#include "control_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "authz.h"
#include "de_uring.h" /* struct de_wal_stats */
#include "learnops.h"
#include "log.h"
#include "persist.h"
#include "reply.h"
#include "tables.h"
#include "util.h"

static const char *const level_names[] = { "error", "warn", "info", "debug" };

static void on_status(struct srv_server *s, const struct srv_client *clients,
		      const struct srv_client *c, uint32_t seq)
{
	struct de_msg_status_ok ok;
	memset(&ok, 0, sizeof ok);
	srv_reply_hdr(&ok.h, DE_MSG_STATUS_OK, sizeof ok, seq);
	snprintf(ok.version, sizeof ok.version, "%s", DYNEMBD_VERSION);
	uint64_t now = srv_mono_ns();
	ok.uptime_ms = now > s->start_ns ? (now - s->start_ns) / 1000000u : 0;
	ok.pages_config = (uint32_t)s->reg.pages;
	for (const struct srv_table *t = s->reg.head; t; t = t->next) {
		ok.pages_got |= 1u << (unsigned)de_arena_pages(t->arena);
		ok.tables++;
	}
	ok.numa_node = s->reg.numa_node;
	for (const struct srv_client *k = clients; k; k = k->next)
		ok.clients += k->sock >= 0 && k->hello_done;
	char why[sizeof ok.wal_why];
	int st = srv_persist_wal_state(s->persist, &ok.wal_last_lsn, &ok.wal_durable_lsn, why,
				       sizeof why);
	ok.wal_state = st == 1 ? DE_WAL_NONE : st == 0 ? DE_WAL_OK : DE_WAL_FAILED;
	if (st < 0) {
		ok.wal_err = st;
		memcpy(ok.wal_why, why, sizeof ok.wal_why);
	}
	ok.peers = 0; /* src/peer does not exist yet */
	ok.pid = (uint32_t)getpid();
	ok.workers = s->nworkers;
	srv_reply_send(c->sock, &ok, sizeof ok, NULL, 0, 0);
}

static bool may_open(const struct srv_server *s, const struct srv_client *c,
		     const struct srv_table *t)
{
	return srv_authz_rights(&s->cfg, c->uid, c->gid, t->name, true, t->owner) &
	       SRV_RIGHT_BIT(SRV_RIGHT_OPEN);
}

static void table_info(struct srv_server *s, struct srv_table *t, struct de_wire_table_info *o)
{
	struct de_wire_stats ws;
	memset(&ws, 0, sizeof ws);
	srv_table_wire_stats(s, t, &ws); /* an error leaves zeros: the entry still lists it */
	memcpy(o->name, t->name, sizeof o->name);
	o->key_type = t->wcfg.key_type;
	o->dim = t->wcfg.dim;
	o->keys = ws.keys;
	o->budget_bytes = ws.budget_bytes;
	o->resident_bytes = t->learn.eviction.policy != DE_WEVICT_NONE ? ws.resident_bytes
									  : ws.arena_bytes;
	o->read_only = ws.read_only;
	o->pages = (uint32_t)de_arena_pages(t->arena);
	o->owner = (uint32_t)t->owner;
	o->eviction = t->learn.eviction.policy;
	o->durability = t->learn.durability.mode;
	o->open_conns = t->refs;
}

static void on_tables(struct srv_server *s, const struct srv_client *c,
		      const struct de_msg_tables *m)
{
	struct de_msg_tables_ok ok; /* 3.8 KiB: the control thread's stack has room */
	memset(&ok, 0, sizeof ok);
	srv_reply_hdr(&ok.h, DE_MSG_TABLES_OK, sizeof ok, m->h.seq);
	ok.first = m->first;
	for (struct srv_table *t = s->reg.head; t; t = t->next) {
		if (!may_open(s, c, t))
			continue;
		if (ok.total >= m->first && ok.count < DE_TABLES_PER_MSG)
			table_info(s, t, &ok.t[ok.count++]);
		ok.total++;
	}
	srv_reply_send(c->sock, &ok, sizeof ok, NULL, 0, 0);
}

/* The table called name for an operation needing `right`, or NULL with the ERROR sent:
 * -EACCES / -ENOENT in OPEN's order (see the top of this file). */
static struct srv_table *named(struct srv_server *s, const struct srv_client *c,
			       const char *name, enum srv_right right, const char *what,
			       uint32_t seq)
{
	char msg[240];
	struct srv_table *t = srv_registry_find(&s->reg, name);
	unsigned rights = srv_authz_rights(&s->cfg, c->uid, c->gid, name, t != NULL,
					   t ? t->owner : 0);
	int err = 0;
	if (!t && (rights & (SRV_RIGHT_BIT(SRV_RIGHT_CREATE) | SRV_RIGHT_BIT(SRV_RIGHT_OPEN))))
		err = -ENOENT;
	else
		err = srv_authz_need(&s->cfg, rights, right, c->uid, c->gid, name, msg, sizeof msg);
	if (!err && !t)
		err = -ENOENT;
	if (err == -ENOENT)
		snprintf(msg, sizeof msg, "no table '%s' in this daemon", name);
	if (!err)
		return t;
	srv_log(SRV_LOG_INFO, "client %u (uid %u): %s '%s': %s", c->id, (unsigned)c->uid, what,
		name, msg);
	srv_reply_error(c->sock, seq, err, 0, "%s", msg);
	return NULL;
}

static void on_stats(struct srv_server *s, const struct srv_client *c,
		     const struct de_msg_by_name *m)
{
	struct srv_table *t = named(s, c, m->name, SRV_RIGHT_OPEN, "stats", m->h.seq);
	if (!t)
		return;
	struct de_msg_stats_by_name_ok ok;
	memset(&ok, 0, sizeof ok);
	srv_reply_hdr(&ok.h, DE_MSG_STATS_BY_NAME_OK, sizeof ok, m->h.seq);
	int err = srv_table_wire_stats(s, t, &ok.st);
	if (err) {
		srv_reply_error(c->sock, m->h.seq, err, 0, "table '%s': its statistics could not "
				"be read: %s", m->name, strerror(-err));
		return;
	}
	srv_reply_send(c->sock, &ok, sizeof ok, NULL, 0, 0);
}

static void on_evict(struct srv_server *s, const struct srv_client *c,
		     const struct de_msg_by_name *m)
{
	struct srv_table *t = named(s, c, m->name, SRV_RIGHT_WRITE, "evict", m->h.seq);
	if (!t)
		return;
	char msg[240];
	uint64_t evicted = 0;
	int err = srv_learn_evict_now(t, &evicted, msg, sizeof msg);
	if (err) {
		srv_log(SRV_LOG_INFO, "client %u (uid %u): evict '%s': %s", c->id,
			(unsigned)c->uid, m->name, msg);
		srv_reply_error(c->sock, m->h.seq, err, 0, "%s", msg);
		return;
	}
	struct de_wire_stats ws;
	memset(&ws, 0, sizeof ws);
	srv_table_wire_stats(s, t, &ws);
	srv_log(SRV_LOG_INFO, "client %u (uid %u): evict '%s': %llu rows evicted", c->id,
		(unsigned)c->uid, m->name, (unsigned long long)evicted);
	struct de_msg_evict_ok ok;
	memset(&ok, 0, sizeof ok);
	srv_reply_hdr(&ok.h, DE_MSG_EVICT_OK, sizeof ok, m->h.seq);
	ok.evicted = evicted;
	ok.resident_bytes = ws.resident_bytes;
	ok.budget_bytes = ws.budget_bytes;
	srv_reply_send(c->sock, &ok, sizeof ok, NULL, 0, 0);
}

/* The daemon's WAL counters as OPSTATS carries them (present 0 without a data_dir). */
static void wal_opstats(struct srv_server *s, struct de_wire_wal_opstats *o)
{
	struct de_wal_stats w;
	memset(o, 0, sizeof *o);
	if (srv_persist_wal_stats(s->persist, &w) != 0)
		return;
	o->present = 1;
	o->last_lsn = w.next_lsn ? w.next_lsn - 1 : 0;
	o->durable_lsn = w.durable_lsn;
	o->bytes_written = w.bytes_written;
	o->flushes = w.flushes;
	o->fsyncs = w.fsyncs;
	o->flush_ns_sum = w.flush_ns_sum;
	uint64_t cum = 0;
	for (unsigned i = 0; i <= DE_OPSTATS_BUCKETS; i++)
		o->flush_le[i] = cum += w.flush_le[i];
}

/* t's ops that completed a request, as entries of table index ti into out: how many
 * (<= DE_OP_MAX). */
static unsigned table_opstats(const struct srv_table *t, uint32_t ti,
			      struct de_wire_op_stat out[DE_OP_MAX])
{
	unsigned n = 0;
	for (unsigned op = 1; op <= DE_OP_MAX; op++) {
		struct srv_op_counters k;
		srv_op_counters_read(t, op, &k);
		struct de_wire_op_stat *o = &out[n];
		memset(o, 0, sizeof *o);
		uint64_t cum = 0;
		for (unsigned i = 0; i <= DE_OPSTATS_BUCKETS; i++)
			o->le[i] = cum += k.le[i];
		if (!cum)
			continue;
		o->table = ti;
		o->op = op;
		o->requests = cum;
		o->errors = k.errors < cum ? k.errors : cum; /* it may lag: tables.h */
		o->keys = k.keys;
		o->sum_ns = k.sum_ns;
		n++;
	}
	return n;
}

static void on_opstats(struct srv_server *s, const struct srv_client *c,
		       const struct de_msg_tables *m)
{
	struct de_msg_opstats_ok ok; /* 3.7 KiB: the control thread's stack has room */
	memset(&ok, 0, sizeof ok);
	srv_reply_hdr(&ok.h, DE_MSG_OPSTATS_OK, sizeof ok, m->h.seq);
	ok.first = m->first;
	wal_opstats(s, &ok.wal);
	bool full = false;
	for (struct srv_table *t = s->reg.head; t; t = t->next) {
		if (!may_open(s, c, t))
			continue;
		if (ok.total++ < m->first || full)
			continue;
		/* whole tables only: one that does not fit goes first in the next reply */
		struct de_wire_op_stat e[DE_OP_MAX];
		unsigned n = table_opstats(t, ok.ntables, e);
		if (ok.ntables == DE_OPSTATS_TABLES || ok.count + n > DE_OPSTATS_ENTRIES) {
			full = true;
			continue;
		}
		memcpy(ok.names[ok.ntables], t->name, DE_NAME_MAX);
		ok.names[ok.ntables][DE_NAME_MAX - 1] = 0;
		memcpy(&ok.op[ok.count], e, n * sizeof e[0]);
		ok.count += n;
		ok.ntables++;
	}
	srv_reply_send(c->sock, &ok, sizeof ok, NULL, 0, 0);
}

static void on_log_level(const struct srv_client *c, const struct de_msg_log_level *m)
{
	if (c->uid != 0 && c->uid != geteuid()) {
		srv_log(SRV_LOG_INFO, "client %u (uid %u): log level refused", c->id,
			(unsigned)c->uid);
		srv_reply_error(c->sock, m->h.seq, -EPERM, 0, "uid %u may not set the log level: "
				"only root and the daemon's own uid (%u) may", (unsigned)c->uid,
				(unsigned)geteuid());
		return;
	}
	srv_log_set_level((int)m->level);
	/* at error level: the change itself is always in the log */
	srv_log(SRV_LOG_ERROR, "client %u (uid %u) set the log level to %s", c->id,
		(unsigned)c->uid, level_names[m->level]);
	struct de_msg_log_level ok;
	memset(&ok, 0, sizeof ok);
	srv_reply_hdr(&ok.h, DE_MSG_LOG_LEVEL_OK, sizeof ok, m->h.seq);
	ok.level = m->level;
	srv_reply_send(c->sock, &ok, sizeof ok, NULL, 0, 0);
}

void srv_control_query(struct srv_server *s, const struct srv_client *clients,
		       const struct srv_client *c, const union srv_msg *m)
{
	switch (m->h.type) {
	case DE_MSG_STATUS:
		on_status(s, clients, c, m->h.seq);
		break;
	case DE_MSG_TABLES:
		on_tables(s, c, &m->tables);
		break;
	case DE_MSG_STATS_BY_NAME:
		on_stats(s, c, &m->by_name);
		break;
	case DE_MSG_EVICT:
		on_evict(s, c, &m->by_name);
		break;
	case DE_MSG_LOG_LEVEL:
		on_log_level(c, &m->log_level);
		break;
	case DE_MSG_OPSTATS:
		on_opstats(s, c, &m->tables);
		break;
	default:
		break;
	}
}
