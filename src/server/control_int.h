/*
 * control_int.h — PRIVATE to the control plane's files (control.c, control_drop.c,
 * control_query.c): what
 * one of them gives the other. The rest of the daemon sees control.h only.
 */
#ifndef DE_SRV_CONTROL_INT_H
#define DE_SRV_CONTROL_INT_H

#include "server.h"
#include "validate.h"
#include "worker.h"

/* DROP from connection c (m checked by srv_check_msg: the name is valid; clients: every
 * connection). Replies DROP_OK or ERROR on c->sock, or, when the only references left
 * are connections already closed whose workers have not let go yet, waits for them:
 * srv_control_drop_retry after each reap answers it. Control thread. */
void srv_control_drop(struct srv_server *s, struct srv_client *clients, struct srv_client *c,
		      const struct de_msg_drop *m);
void srv_control_drop_retry(struct srv_server *s, struct srv_client *clients);

/* STATUS, TABLES, STATS_BY_NAME, EVICT, LOG_LEVEL from connection c (m checked by
 * srv_check_msg; clients: every connection): control_query.c replies on c->sock.
 * Control thread. */
void srv_control_query(struct srv_server *s, const struct srv_client *clients,
		       const struct srv_client *c, const union srv_msg *m);

/* Revoke every connection's handle to t (worker.h "Revoked handles": the slots go NULL
 * and their refs with them; *revoked counts them) and, when any was cleared now or before
 * (t->revoke_pending), wait up to wait_ms (both waits together) for every worker to pass
 * the top of a round and for the slow pool's TOPK / SAMPLE jobs on t. 0: no worker or slow-pool job uses t any
 * more; -ETIMEDOUT (t stays revoke_pending). control_drop.c. */
int srv_control_revoke(struct srv_server *s, struct srv_client *clients, struct srv_table *t,
		       unsigned wait_ms, unsigned *revoked);

/* Reply msg (len bytes) on c->sock with read-only fds of t's arena segments
 * first..first+count-1 (count <= DE_FDS_PER_MSG): 0, or the send's error (then c is
 * closed by the caller). control.c. */
int srv_control_send_segments(struct srv_client *c, struct srv_table *t, const void *msg,
			      size_t len, uint32_t first, uint32_t count);

/* ---- serving tables (control_serve.c; control thread) ---------------------------------- */

/* OPEN of name (t: the registry's table of that name, or NULL): -EROFS for a version of a
 * serving table, -EEXIST for a serving name, with msg; else 0. */
int srv_serving_open_check(const struct srv_server *s, const char *name,
			   const struct srv_table *t, char *msg, size_t cap);
/* DROP of name (t as above): -EBUSY for a version (the daemon frees those), with msg;
 * else 0. */
int srv_serving_drop_check(const struct srv_server *s, const char *name,
			   const struct srv_table *t, char *msg, size_t cap);
/* References to t from connections already closed whose worker has not released them yet
 * (control_drop.c): a DROP that only they block waits for the reap (c->drop_wait). */
unsigned srv_control_closing_refs(const struct srv_client *all, const struct srv_table *t);
/* Is name a serving name (one srv_serving_drop unloads)? */
bool srv_serving_is_name(const struct srv_server *s, const char *name);
/* DROP of serving name m->name from c (srv_serving_is_name): the drop right on it, no load
 * running (-EBUSY), no reader handle unless DE_DROP_FORCE (-EBUSY; forced: revoked, their
 * next lookup fails -ENOENT); then the name is gone and its versions are freed: DROP_OK
 * with the bytes, or -ETIMEDOUT when a version was still used (freed later). */
void srv_serving_drop(struct srv_server *s, struct srv_client *clients, struct srv_client *c,
		      const struct de_msg_drop *m);
/* SERVE_LOAD from c (m checked by srv_check_msg): refused at once with ERROR, or a load
 * thread runs and srv_serving_poll replies when it ended. */
void srv_serving_load(struct srv_server *s, struct srv_client *c,
		      const struct de_msg_serve_load *m);
/* SERVE_OPEN from c: OPEN_OK or ERROR. false: the reply could not be sent (close c). */
bool srv_serving_open(struct srv_server *s, struct srv_client *c,
		      const struct de_msg_serve_open *m);
/* Every control-loop turn: switch to (or discard) versions whose load ended, free
 * superseded versions nobody holds or whose grace is over. */
void srv_serving_poll(struct srv_server *s, struct srv_client *clients);
/* Milliseconds until the next grace ends (0: now), or -1 when none is pending. */
int srv_serving_next_ms(const struct srv_server *s);
/* At shutdown, after s->stopping was set: join the loads, forget the names (the
 * registry frees the version tables). */
void srv_serving_stop(struct srv_server *s);

#endif /* DE_SRV_CONTROL_INT_H */
