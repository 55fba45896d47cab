/*
 * worker.h — PRIVATE to dynembd: the data plane's worker threads (worker.c) and the
 * clients they serve. The top layer with the control plane (control.c), which calls down
 * into it (hand a client over, kick, stop); a worker never calls the control plane.
 *
 * Threads and ownership:
 *   - The control thread (control.c) allocates and frees struct srv_client.
 *   - Worker threads each serve up to SRV_MAX_CLIENTS_PER_WORKER channels. A client
 *     enters a worker through the worker's mailbox (mutex + a NOP on the worker's
 *     private control channel as the wake-up). From then on only that worker touches the
 *     client's channel, until it "releases" the client (store-release of c->released),
 *     after which it never touches it again, and tells the control thread through an
 *     eventfd. The control thread frees a client only after it saw released == 1.
 *   - The control thread asks a worker to drop a client by setting c->want_remove and
 *     kicking the worker; a worker drops a client on its own when the client broke its
 *     ring (c->broken).
 *   - A client's table list is append-only: the control thread writes the pointer and
 *     the client's rights on it, then publishes ntables (release); the worker reads
 *     ntables (acquire) before indexing. A write without the write right is -EACCES.
 *   - Revoked handles (a forced DROP, control_drop.c): the control thread stores NULL
 *     into the client's tables[i] (the slot stays: ntables never shrinks), then bumps
 *     srv_server.revoke_gen (release) and kicks every worker. At the top of each round,
 *     where it holds no table pointer, a worker loads revoke_gen (acquire) and publishes
 *     it in its revoke_seen (release); once every worker's revoke_seen reached the gen
 *     (srv_workers_quiesce), no worker holds or can find the table (a descriptor on a
 *     NULL slot completes -EIDRM) except a TOPK / SAMPLE job on the slow pool, which
 *     the control thread waits for (slow_busy with slow_t, srv_workers_slow_on).
 *   - A worker owns its batch (its copies of the keys, statuses, strings, gradients) and
 *     hands the operations layers (learnops.h, persist.h) a description of it (batch.h).
 *
 * Learning: APPLY_GRADS runs de_optim_update (src/learn) on the worker that serves the
 * channel; several workers may step the same table, even the same row, at once (row
 * exclusion is de_table_apply's, see proto.h "Concurrency of APPLY_GRADS").
 */
#ifndef DE_SRV_WORKER_H
#define DE_SRV_WORKER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "de_shm.h"
#include "proto.h"
#include "server.h"
#include "tables.h"

#define SRV_MAX_CLIENTS_PER_WORKER 127u /* + the worker's control channel = 128 futexes */
#define SRV_MAX_TABLES_PER_CLIENT 256u

struct srv_worker;

struct srv_client {
	/* control thread */
	unsigned id;
	int sock;                 /* -1 once closed */
	pid_t pid;
	uid_t uid;
	bool internal;            /* this daemon's own connection (SO_PEERCRED pid): the peer
	                             layer's (peers.h); set at accept, then read-only */
	gid_t gid;
	char name[DE_NAME_MAX];
	bool hello_done;
	int64_t accepted_ms;      /* monotonic: HELLO is due hello_timeout_ms after it */
	/* a DROP waiting for closed connections' workers to let the table go
	 * (control_drop.c): its seq and name */
	bool drop_wait;
	uint32_t drop_seq;
	char drop_name[DE_NAME_MAX];
	struct srv_client *next;
	/* shared with the worker (see the top of this file) */
	de_channel *ch;
	struct srv_worker *w;
	struct srv_table *tables[SRV_MAX_TABLES_PER_CLIENT]; /* NULL: revoked (atomics) */
	uint8_t rights[SRV_MAX_TABLES_PER_CLIENT]; /* SRV_RIGHT_BIT set (authz.h) of this
	                             client on tables[i]: written with tables[i] */
	uint32_t ntables;         /* release by control, acquire by worker */
	int want_remove;          /* control -> worker (atomic) */
	int released;             /* worker -> control (atomic, release) */
	int broken;               /* worker: it broke its ring (written before released) */
	/* worker only */
	bool has_pending;         /* npending > 0 */
	unsigned npending;
	struct de_cqe pending[32]; /* completions the full CQ did not take yet, in order
	                             (at most one round: worker.c's BUDGET) */
	/* worker only: a descriptor popped but not finished (worker.c "Fairness") */
	bool has_cur;             /* cur holds it; nothing else of c runs before it ends */
	bool cur_started;         /* checked, and cur_done keys of it served */
	struct de_sqe cur;
	uint32_t cur_done, cur_found, cur_created;
	uint32_t cur_dim;         /* its table's dim when it was checked: a slot given another
	                             table meanwhile (a forced DROP, SERVE_OPEN's release) with
	                             another dim ends it -EIDRM, never writes past its values */
	uint64_t cur_t0;          /* monotonic ns its first chunk started (metrics) */
	/* worker only: wake accounting (worker.c "Wake storms") */
	bool woke;                /* its futex word moved while the worker slept */
	uint32_t empty_wakes;     /* wakes in a row that brought no work */
	uint32_t backoff_ms;      /* the last interval its wakes were ignored for */
	uint64_t backoff_until;   /* monotonic ns; 0: in the wait set */
	/* TOPK / SAMPLE on the slow pool (slowpool.h): the worker sets slow_busy, queues
	 * the job and serves nothing else of c; the pool fills slow_q and stores slow_done
	 * (release); the worker posts slow_q after its acquire load of slow_done */
	bool slow_busy;           /* worker writes (atomic: cleared with release after its
	                             last use of slow_t), a forced DROP reads (acquire) */
	int slow_done;            /* pool -> worker (atomic) */
	struct de_sqe slow_e;     /* worker writes before queueing; the pool reads */
	struct srv_table *slow_t; /* atomic (a forced DROP reads it) */
	struct de_cqe slow_q;     /* pool writes, worker reads after slow_done */
	struct srv_client *slow_next; /* the pool's queue (under its lock) */
	uint64_t slow_t0;         /* worker only: monotonic ns it was queued (metrics) */
};

struct srv_worker {
	unsigned idx;
	struct srv_server *srv;
	pthread_t thread;
	bool started;
	hwloc_cpuset_t pin;       /* a PU near the memory, or NULL */
	de_channel *ctl;          /* daemon side: in the worker's wait set */
	de_channel *ctl_kick;     /* client side of the same memfd: the control thread's */
	pthread_mutex_t mu;
	struct srv_client *mail[SRV_MAX_CLIENTS_PER_WORKER]; /* clients to add */
	unsigned nmail;
	int stop;                 /* atomic: drain and exit */
	unsigned nclients;        /* control thread's count (assigned, not yet freed; written
	                             with atomics: /metrics reads it) */
	/* worker only */
	struct srv_client *active[SRV_MAX_CLIENTS_PER_WORKER];
	unsigned nactive;
	uint64_t *keys;           /* max_batch fingerprints copied out of the data area */
	uint8_t *status;          /* max_batch */
	uint32_t *slen;           /* max_batch string lengths */
	uint64_t *soff;           /* max_batch string offsets into sbuf */
	char *sbuf;               /* string keys region copied out */
	size_t sbuf_cap;
	float *gbuf;              /* APPLY_GRADS: gradients copied out (grown on demand) */
	size_t gbuf_cap;          /* floats */
	pthread_mutex_t kick_mu;  /* ctl_kick's one producer at a time: control, slow pool */
	/* counters, read by STATS of any worker (relaxed atomics) */
	uint64_t n_empty_wakes;   /* wakes of a client channel that brought no work */
	uint64_t n_backoffs;      /* times a channel's wakes were ignored for an interval */
	uint64_t n_chunks;        /* slices of large LOOKUPs / UPDATEs served (a pass each) */
	uint64_t n_forwarded;     /* descriptors handed to the forwarding pool (peers.h) */
	uint64_t last_storm_log;  /* monotonic ns of the last wake-storm warning */
	uint64_t last_refuse_log; /* ... of the last refused TOPK / SAMPLE */
	uint64_t revoke_seen;     /* worker -> control (atomic, release): the revoke_gen seen
	                             at the top of its latest round */
	/* group commit of the round's SYNC writes (srv_persist_log returns each one's LSN) */
	uint64_t sync_lsn;        /* largest LSN a SYNC write of this round appended; 0: none */
	bool sync_pending;        /* the descriptor just executed waits for sync_lsn */
};

int srv_workers_start(struct srv_server *s);
/* Ask every worker to drain its rings and exit, and join them. */
void srv_workers_stop(struct srv_server *s);
void srv_workers_free(struct srv_server *s);
/* Forced DROP (control thread, after it cleared the slots and bumped revoke_gen to gen):
 * kick every worker and wait until each saw gen at the top of a round (timeout_ms; then
 * -ETIMEDOUT). Afterwards no worker holds a cleared slot's table. */
int srv_workers_quiesce(struct srv_server *s, uint64_t gen, unsigned timeout_ms);
/* Whether some client's TOPK / SAMPLE job on the slow pool still works on t (control
 * thread, after srv_workers_quiesce: no new one can start). */
bool srv_workers_slow_on(const struct srv_client *clients, const struct srv_table *t);
/* Wake a worker to read its mailbox and flags, or a finished slow-pool job. Any thread
 * (kick_mu orders the producers of ctl_kick). */
void srv_worker_kick(struct srv_worker *w);
/* A table's statistics as STATS gives them (the table, its learning, its persistence, the
 * workers' wake counters): any thread; every counter is read with relaxed atomics or
 * under the lock of the layer that owns it. 0 or the table's negative errno. */
int srv_table_wire_stats(struct srv_server *srv, struct srv_table *t, struct de_wire_stats *ws);

#endif /* DE_SRV_WORKER_H */
