/*
 * control_drop.c — DROP (proto.h): a table nobody references goes, and its memory,
 * reservation, quota charge and files with it.
 *
 * Order: may this caller drop that name (authz.h: the drop right, decided before and
 * whatever the table's existence; -EACCES) -> find the table -> nobody references
 * it (no connection has it open: t->refs, which counts connections until their worker
 * released them, so no worker can be serving it; when the only ones left are closed
 * connections not reaped yet, as right after a client's exit, the DROP waits for the
 * reap instead of failing: srv_control_drop_retry) -> its learning state can go (not an
 * evicting table) -> persistence forgets it (the catalog, durably: the commit point;
 * persist_drop.c) -> learning state freed -> the registry frees it (tables.c: arenas,
 * reservation, quota charge). Every refusal comes before the commit point and changes
 * nothing.
 *
 * Rights: the drop right of the name (authz.c): by default the table's owner (the
 * creator, recorded in the CATALOG) and root; a [namespace] may grant it to others.
 *
 * Callers: control.c (on_message). Never: drops a table a connection has open, or
 * replies before the catalog is durable.
 */
#include "control_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "authz.h"
#include "learnops.h"
#include "log.h"
#include "persist.h"
#include "reply.h"
#include "tables.h"

/* References to t from connections already closed (their worker has not released
 * them yet: they go within a worker's round). */
static unsigned closing_refs(const struct srv_client *all, const struct srv_table *t)
{
	unsigned n = 0;
	for (const struct srv_client *k = all; k; k = k->next)
		if (k->sock < 0)
			for (uint32_t i = 0; i < k->ntables; i++)
				n += k->tables[i] == t;
	return n;
}

void srv_control_drop(struct srv_server *s, struct srv_client *clients, struct srv_client *c,
		      const struct de_msg_drop *m)
{
	char msg[240];
	const char *name = m->name;
	struct srv_table *t = srv_registry_find(&s->reg, name);
	/* rights first: a refusal must not depend on whether the table exists */
	unsigned rights = srv_authz_rights(&s->cfg, c->uid, c->gid, name, t != NULL,
					   t ? t->owner : 0);
	int err = srv_authz_need(&s->cfg, rights, SRV_RIGHT_DROP, c->uid, c->gid, name, msg,
				 sizeof msg);
	if (!err && !t) {
		snprintf(msg, sizeof msg, "no table '%s' in this daemon", name);
		err = -ENOENT;
	}
	if (!err && t->refs && t->refs == closing_refs(clients, t)) {
		c->drop_wait = true; /* a client that closed just before: answered at the reap */
		c->drop_seq = m->h.seq;
		memcpy(c->drop_name, m->name, DE_NAME_MAX);
		return;
	}
	if (!err && t->refs) {
		snprintf(msg, sizeof msg, "table '%s' is open on %u connection%s (this one counts "
			 "too): close them first", name, t->refs, t->refs == 1 ? "" : "s");
		err = -EBUSY;
	}
	if (!err)
		err = srv_learn_table_can_drop(t, msg, sizeof msg);
	/* /metrics reads t's layer state under the registry's lock: held from persistence's
	 * teardown to the free */
	srv_registry_lock(&s->reg);
	if (!err)
		err = srv_persist_table_drop(s->persist, t, msg, sizeof msg);
	if (err) {
		srv_registry_unlock(&s->reg);
		srv_logf(SRV_LOG_INFO, SRV_KV(SRV_F_UINT("client", c->id), SRV_F_UINT("uid", c->uid),
					      SRV_F_TABLE(name), SRV_F_ERRNO(err)),
			 "client %u (uid %u): drop '%s': %s", c->id, (unsigned)c->uid, name, msg);
		srv_reply_error(c->sock, m->h.seq, err, 0, "%s", msg);
		return;
	}
	uint64_t bytes = t->quota ? srv_quota_acct_bytes(t->quota) : 0;
	srv_learn_table_detach(s->learn, t);
	srv_registry_drop(&s->reg, t); /* t is gone */
	srv_registry_unlock(&s->reg);
	srv_logf(SRV_LOG_INFO, SRV_KV(SRV_F_UINT("client", c->id), SRV_F_UINT("uid", c->uid),
				      SRV_F_TABLE(name), SRV_F_UINT("bytes", bytes)),
		 "client %u (uid %u) dropped table '%s': %" PRIu64 " MiB given back", c->id,
		 (unsigned)c->uid, name, bytes >> 20);
	struct de_msg_drop_ok ok;
	memset(&ok, 0, sizeof ok);
	srv_reply_hdr(&ok.h, DE_MSG_DROP_OK, sizeof ok, m->h.seq);
	ok.bytes = bytes;
	srv_reply_send(c->sock, &ok, sizeof ok, NULL, 0, 0);
}

void srv_control_drop_retry(struct srv_server *s, struct srv_client *clients)
{
	for (struct srv_client *c = clients; c; c = c->next) {
		if (!c->drop_wait || c->sock < 0)
			continue;
		c->drop_wait = false;
		struct de_msg_drop m;
		memset(&m, 0, sizeof m);
		m.h = (struct de_msg_hdr){ .magic = DE_MSG_MAGIC, .type = DE_MSG_DROP,
					   .version = DE_PROTO_VERSION, .len = sizeof m,
					   .seq = c->drop_seq };
		memcpy(m.name, c->drop_name, DE_NAME_MAX);
		srv_control_drop(s, clients, c, &m); /* may wait again */
	}
}
