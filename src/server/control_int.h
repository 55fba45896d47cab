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

#endif /* DE_SRV_CONTROL_INT_H */
