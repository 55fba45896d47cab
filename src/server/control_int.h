/*
 * control_int.h — PRIVATE to the control plane's files (control.c, control_drop.c): what
 * one of them gives the other. The rest of the daemon sees control.h only.
 */
#ifndef DE_SRV_CONTROL_INT_H
#define DE_SRV_CONTROL_INT_H

#include "server.h"
#include "worker.h"

/* DROP from connection c (m checked by srv_check_msg: the name is valid). Replies
 * DROP_OK or ERROR on c->sock. Control thread. */
void srv_control_drop(struct srv_server *s, struct srv_client *c, const struct de_msg_drop *m);

#endif /* DE_SRV_CONTROL_INT_H */
