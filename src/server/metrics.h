/*
 * metrics.h — PRIVATE to dynembd: the Prometheus /metrics endpoint (metrics.c), on its
 * own thread (libmicrohttpd's), never on a worker. A module of the control layer (7,
 * tests/check_layers.py) beside control.c: main.c calls it, it calls down into the
 * worker (srv_table_wire_stats), persistence and the registry, and neither it nor the
 * control plane calls the other.
 *
 * Life: srv_metrics_bind before the daemon detaches (a bad or busy address is an error
 * naming it: the daemon refuses to start, as node_exporter does), srv_metrics_start once
 * the workers run, srv_metrics_free before the workers and the registry go.
 */
#ifndef DE_SRV_METRICS_H
#define DE_SRV_METRICS_H

#include "config.h"
#include "server.h"

struct srv_metrics;

/* Bind and listen on cfg's [metrics] listen address. *out NULL (and 0) when metrics are
 * off; else 0, or a negative errno after logging a line that names the address. */
int srv_metrics_bind(const struct srv_config *cfg, struct srv_metrics **out /* out */);
/* Serve GET /metrics of s from libmicrohttpd's polling thread. 0 or a negative errno
 * (logged); NULL m: nothing to do. s must outlive srv_metrics_free. */
int srv_metrics_start(struct srv_metrics *m, struct srv_server *s);
/* Stop serving (joins the thread), close the socket, free. NULL is fine. */
void srv_metrics_free(struct srv_metrics *m);

/* The exposition text of s (format 0.0.4), malloc'd into *out (free it), *len its bytes.
 * Any thread: takes the registry's lock (tables.h) while it copies the tables' counters.
 * 0 or -ENOMEM. */
int srv_metrics_render(struct srv_server *s, uint64_t start_mono_ns, double start_unix_s,
		       char **out /* out */, size_t *len /* out */);

#endif /* DE_SRV_METRICS_H */
