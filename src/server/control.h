/*
 * control.h — PRIVATE to dynembd: the control plane (control.c), the top layer with the
 * worker; main.c is its only caller. It calls down into every layer: the validators on
 * each packet, the registry, learning and persistence to open a table (open -> learning
 * attach -> persistence open, also for the catalog's tables at startup), the workers to
 * hand clients over and to stop them.
 */
#ifndef DE_SRV_CONTROL_H
#define DE_SRV_CONTROL_H

#include "server.h"

/* Startup, after srv_persist_open and before the socket is bound: open every table of
 * the persistence catalog (registry, learning, srv_persist_adopt), then recover them.
 * Returns the exit status (0, 1, SRV_EXIT_CORRUPT). */
int srv_control_recover(struct srv_server *s);
/* Bind and listen on the unix socket path (its directory created). 0 or a negative errno. */
int srv_listen(const char *path, int *out_fd);
/* The control plane: runs until SIGTERM/SIGINT. Returns the exit status. */
int srv_control_run(struct srv_server *s, int listen_fd, int sig_fd);

#endif /* DE_SRV_CONTROL_H */
