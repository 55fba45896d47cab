/*
 * server.h — PRIVATE to dynembd: struct srv_server, the one thing every top-layer file
 * of the daemon shares (the worker, the control plane, main.c). Lower layers never see
 * it: they take what they need (a table, a batch, the config) as arguments.
 *
 * Layers of the daemon (calls go down, never up; tests/check_layers.py enforces it on
 * the #include lines): the validators (validate.h) -> the log and util (log.h, util.h)
 * -> config and the reply encoder (config.h, reply.h) -> the table registry (tables.h, batch.h) -> learning (learnops.h) and
 * persistence (persist.h) on a batch description -> peers (peers.h, src/peer) -> the worker
 * (worker.h, this header) -> the control plane (control.h) and, beside it, the /metrics
 * endpoint (metrics.h) -> main.c.
 *
 * Threads (the whole concurrency story of the daemon): one control thread (control.c)
 * owns the listener, every client socket, the table registry and the client list; worker
 * threads (worker.c, whose header states the client hand-over) serve the channels; the
 * evictor and sampler threads (learnops.c), the persistence committer, checkpointer and
 * job threads (persist*.c), and libmicrohttpd's thread serving /metrics (metrics.c:
 * it reads tables under the registry's lock, tables.h). Tables live until the daemon exits or a DROP frees one
 * that no connection has open, or a forced DROP one whose handles it revoked
 * (control_drop.c).
 */
#ifndef DE_SRV_SERVER_H
#define DE_SRV_SERVER_H

#include "config.h"
#include "de_shm.h"
#include "tables.h"

struct srv_worker;
struct srv_persist;
struct srv_learn_host;
struct srv_slowpool;
struct srv_serving;

struct srv_server {
	struct srv_config cfg;
	struct srv_registry reg;
	struct srv_learn_host *learn; /* learnops.c: the evictor; NULL: tables learn nothing */
	struct srv_persist *persist;  /* persist*.c; always there once srv_persist_open ran */
	struct srv_worker *workers;
	unsigned nworkers;
	struct srv_slowpool *slow;  /* slowpool.c: TOPK and SAMPLE, off the workers */
	struct srv_peers *peers;    /* peers.c: NULL without [peers] members */
	struct srv_slowpool *fwd;   /* the forwarding pool (peers.h); NULL without peers */
	int release_fd;           /* eventfd: a worker released a client */
	hwloc_topology_t topo;    /* NULL when hwloc could not load one */
	uint64_t start_ns;        /* srv_mono_ns at startup (STATUS: uptime) */
	uint64_t revoke_gen;      /* forced DROP (worker.h "Revoked handles"): bumped by the
	                             control thread (release) after it cleared client slots */
	struct srv_serving *serving; /* control_serve.c: serving names; control thread only */
	int stopping;             /* atomic: the daemon is shutting down (load threads stop) */
	/* DROPs (control_drop.c; relaxed atomics, /metrics reads them) */
	uint64_t n_drops, n_drops_forced, n_drops_refused, n_handles_revoked;
};

#endif /* DE_SRV_SERVER_H */
