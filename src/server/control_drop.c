/*
 * control_drop.c — DROP (proto.h): a table nobody references goes, and its memory,
 * reservation, quota charge and files with it; with DE_DROP_FORCE, a table others hold.
 *
 * Order: may this caller drop that name (authz.h: the drop right, decided before and
 * whatever the table's existence; -EACCES) -> find the table -> nobody references
 * it (no connection has it open: t->refs, which counts connections until their worker
 * released them, so no worker can be serving it; when the only ones left are closed
 * connections not reaped yet, as right after a client's exit, the DROP waits for the
 * reap instead of failing: srv_control_drop_retry; else -EBUSY naming the holders) ->
 * an evicting table leaves the evictor (srv_learn_table_evict_leave: it waits for a pass
 * over it) -> persistence forgets it (the catalog, durably: the commit point;
 * persist_drop.c) -> learning state freed -> the registry frees it (tables.c: arenas,
 * reservation, quota charge). Every refusal before the commit point changes nothing
 * (a refused persistence drop puts the table back in the evictor).
 *
 * Forced (DE_DROP_FORCE), instead of the reference check: revoke every connection's
 * handle (worker.h "Revoked handles": the slot goes NULL and its ref with it, then the
 * workers are waited for at the top of a round, then TOPK / SAMPLE jobs of the slow pool
 * on the table), then cancel and join the persistence jobs that may use it; then the
 * same order as above. What was revoked stays revoked when a later step fails (-ETIMEDOUT
 * of a worker or job that did not let go, a catalog write error): the table stays, the
 * holders reopen it. Clients' read-only mappings of its memfds stay valid memory (the
 * pages live while a mapping does) after the free; nothing writes them any more.
 * Counted (srv_server's drop counters, /metrics) and logged with the client's fields.
 *
 * Rights: the drop right of the name (authz.c): by default the table's owner (the
 * creator, recorded in the CATALOG) and root; a [namespace] may grant it to others.
 *
 * Callers: control.c (on_message). Never: frees a table a worker, a slow-pool job or a
 * persistence job may still use, or replies before the catalog is durable.
 */
#include "control_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "authz.h"
#include "learnops.h"
#include "log.h"
#include "persist.h"
#include "reply.h"
#include "tables.h"
#include "util.h"

/* The whole wait of a forced DROP for the workers, the slow pool's jobs and the
 * persistence jobs to let go of the table: one deadline over the three, under libdynemb's
 * default control timeout (10 s), so that the client gets the daemon's answer (before,
 * each of the three waits had 10 s of its own: up to 30 s, and the client timed out
 * while the daemon went on). */
#define FORCE_WAIT_MS 8000u

/* FORCE_WAIT_MS; test builds: DYNEMBD_TEST_FORCE_WAIT_MS (1..60000) instead. */
static unsigned force_wait_ms(void)
{
#ifdef DE_FAULT_INJECTION
	const char *e = getenv("DYNEMBD_TEST_FORCE_WAIT_MS");
	long v = e ? strtol(e, NULL, 10) : 0;
	if (v > 0 && v <= 60000)
		return (unsigned)v;
#endif
	return FORCE_WAIT_MS;
}

/* References to t from connections already closed (their worker has not released
 * them yet: they go within a worker's round). */
unsigned srv_control_closing_refs(const struct srv_client *all, const struct srv_table *t)
{
	unsigned n = 0;
	for (const struct srv_client *k = all; k; k = k->next)
		if (k->sock < 0)
			for (uint32_t i = 0; i < k->ntables; i++)
				n += k->tables[i] == t;
	return n;
}

/* "client 3 'trainer' pid 10 uid 1000, ..." of the open connections that hold t, at most
 * into cap bytes. */
static void holders(const struct srv_client *all, const struct srv_table *t, char *buf,
		    size_t cap)
{
	size_t n = 0;
	buf[0] = 0;
	for (const struct srv_client *k = all; k && n + 1 < cap; k = k->next) {
		bool has = false;
		for (uint32_t i = 0; i < k->ntables && !has; i++)
			has = k->tables[i] == t;
		if (!has)
			continue;
		int r = snprintf(buf + n, cap - n, "%sclient %u '%s' pid %d uid %u%s", n ? ", " : "",
				 k->id, k->name, (int)k->pid, (unsigned)k->uid,
				 k->sock < 0 ? " (closing)" : "");
		if (r < 0)
			break;
		n += (size_t)r < cap - n ? (size_t)r : cap - n - 1;
	}
}

int srv_control_revoke(struct srv_server *s, struct srv_client *clients, struct srv_table *t,
		       unsigned wait_ms, unsigned *revoked)
{
	unsigned n = 0;
	for (struct srv_client *k = clients; k; k = k->next)
		for (uint32_t i = 0; i < k->ntables; i++)
			if (k->tables[i] == t) {
				/* relaxed: published by the revoke_gen bump (release) below */
				__atomic_store_n(&k->tables[i], NULL, __ATOMIC_RELAXED);
				t->refs--;
				n++;
			}
	*revoked = n;
	if (!n && !t->revoke_pending) /* pending: slots were cleared earlier, not waited for */
		return 0;
	t->revoke_pending = true;
	/* release: the NULL slots above; pairs with the acquire at a worker's round */
	uint64_t gen = __atomic_add_fetch(&s->revoke_gen, 1, __ATOMIC_RELEASE);
	uint64_t deadline = srv_mono_ns() + wait_ms * 1000000ull; /* for both waits */
	int err = srv_workers_quiesce(s, gen, wait_ms);
	while (!err && srv_workers_slow_on(clients, t)) {
		if (srv_mono_ns() > deadline)
			err = -ETIMEDOUT;
		else
			usleep(1000);
	}
	if (!err)
		t->revoke_pending = false;
	return err;
}

/* Forced DROP: every connection's handle to t revoked, then no worker, slow-pool job or
 * persistence job uses t any more. *revoked: handles revoked. 0 or a negative errno with
 * msg (the handles stay revoked). */
static int revoke_handles(struct srv_server *s, struct srv_client *clients, struct srv_table *t,
			  unsigned *revoked, char *msg, size_t cap)
{
	unsigned wait_ms = force_wait_ms();
	uint64_t end = srv_mono_ns() + wait_ms * 1000000ull; /* one deadline for all of it */
	int err = srv_control_revoke(s, clients, t, wait_ms, revoked);
	if (err) {
		snprintf(msg, cap, "table '%s' not dropped: %u handle%s revoked, but a worker "
			 "or a top-k / sampling job still used it after %u ms; force the drop "
			 "again", t->name, *revoked, *revoked == 1 ? "" : "s", wait_ms);
		return err;
	}
	uint64_t now = srv_mono_ns();
	unsigned left = now < end ? (unsigned)((end - now + 999999) / 1000000) : 1;
	return srv_persist_table_jobs_cancel(s->persist, t, left, msg, cap);
}

void srv_control_drop(struct srv_server *s, struct srv_client *clients, struct srv_client *c,
		      const struct de_msg_drop *m)
{
	char msg[480];
	bool force = m->flags & DE_DROP_FORCE;
	unsigned revoked = 0;
	const char *name = m->name;
	struct srv_table *t = srv_registry_find(&s->reg, name);
	if (!t && srv_serving_is_name(s, name)) {
		srv_serving_drop(s, clients, c, m); /* unload: rights on the name, as below */
		return;
	}
	/* rights first: a refusal must not depend on whether the table exists */
	unsigned rights = srv_authz_rights(&s->cfg, c->uid, c->gid, name, t != NULL,
					   t ? t->owner : 0);
	int err = srv_authz_need(&s->cfg, rights, SRV_RIGHT_DROP, c->uid, c->gid, name, msg,
				 sizeof msg);
	if (!err)
		err = srv_serving_drop_check(s, name, t, msg, sizeof msg);
	if (!err && !t) {
		snprintf(msg, sizeof msg, "no table '%s' in this daemon", name);
		err = -ENOENT;
	}
	if (!err && !force && t->revoke_pending) {
		snprintf(msg, sizeof msg, "table '%s': a forced drop of it gave up waiting for a "
			 "worker or a top-k / sampling job to let go; drop it with --force again",
			 name);
		err = -EBUSY;
	}
	if (!err && !force && t->refs && t->refs == srv_control_closing_refs(clients, t)) {
		c->drop_wait = true; /* a client that closed just before: answered at the reap */
		c->drop_seq = m->h.seq;
		memcpy(c->drop_name, m->name, DE_NAME_MAX);
		return;
	}
	if (!err && !force && t->refs) {
		char who[300];
		holders(clients, t, who, sizeof who);
		/* the holders last: the reply's text (240 bytes) may cut their list short */
		snprintf(msg, sizeof msg, "table '%s' is open on %u connection%s (this one counts "
			 "too): close them, or force the drop (dynembctl drop --force); held by %s",
			 name, t->refs, t->refs == 1 ? "" : "s", who);
		err = -EBUSY;
	}
	if (!err && force)
		err = revoke_handles(s, clients, t, &revoked, msg, sizeof msg);
	/* before the evictor lets go of it: a refusal for a job leaves its eviction alone */
	if (!err)
		err = srv_persist_table_drop_check(s->persist, t, msg, sizeof msg);
	/* /metrics reads t's layer state under the registry's lock: held from persistence's
	 * teardown to the free */
	srv_registry_lock(&s->reg);
	if (!err) /* before persistence's teardown: a pass logs its erases through t->ps */
		srv_learn_table_evict_leave(t);
	if (!err && (err = srv_persist_table_drop(s->persist, t, msg, sizeof msg))) {
		char m2[240];
		if (srv_learn_table_evict_rejoin(t, m2, sizeof m2))
			srv_logf(SRV_LOG_WARN, SRV_KV(SRV_F_TABLE(name)),
				 "table '%s' stays, without eviction: %s", name, m2);
	}
	if (err) {
		srv_registry_unlock(&s->reg);
		__atomic_fetch_add(&s->n_drops_refused, 1, __ATOMIC_RELAXED);
		srv_logf(SRV_LOG_INFO, SRV_KV(SRV_F_UINT("client", c->id), SRV_F_INT("pid", c->pid),
					      SRV_F_UINT("uid", c->uid), SRV_F_TABLE(name),
					      SRV_F_UINT("forced", force),
					      SRV_F_UINT("revoked", revoked), SRV_F_ERRNO(err)),
			 "client %u (uid %u): %sdrop '%s': %s", c->id, (unsigned)c->uid,
			 force ? "forced " : "", name, msg);
		srv_reply_error(c->sock, m->h.seq, err, 0, "%s", msg);
		return;
	}
	uint64_t bytes = t->quota ? srv_quota_acct_bytes(t->quota) : 0;
	srv_learn_table_detach(s->learn, t);
	de_table_retire(t->t); /* mappings that outlive it (clients', read-only) say so */
	srv_registry_drop(&s->reg, t); /* t is gone */
	srv_registry_unlock(&s->reg);
	__atomic_fetch_add(force ? &s->n_drops_forced : &s->n_drops, 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&s->n_handles_revoked, revoked, __ATOMIC_RELAXED);
	srv_logf(force ? SRV_LOG_WARN : SRV_LOG_INFO,
		 SRV_KV(SRV_F_UINT("client", c->id), SRV_F_INT("pid", c->pid),
			SRV_F_UINT("uid", c->uid), SRV_F_TABLE(name), SRV_F_UINT("bytes", bytes),
			SRV_F_UINT("forced", force), SRV_F_UINT("revoked", revoked)),
		 "client %u (uid %u) %sdropped table '%s': %" PRIu64 " MiB given back, %u "
		 "connection handle%s revoked", c->id, (unsigned)c->uid, force ? "force-" : "",
		 name, bytes >> 20, revoked, revoked == 1 ? "" : "s");
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
