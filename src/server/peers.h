/*
 * peers.h — PRIVATE to dynembd: the peer layer (peers.c) between the operations and the
 * worker. With [peers] members set, every host runs a dynembd; each key of a sharded
 * table has one owning member (weighted rendezvous hashing over the members' names:
 * src/peer/de_peer.h), and a daemon forwards the keys it does not own to their owner.
 *
 * Two halves, both on threads of their own, never on a worker:
 *   - the owner's side: a TCP listener; each authenticated connection has a thread that
 *     executes the frames it reads through a client of this very daemon (libdynemb over
 *     its own socket, an "internal" connection: control.c lets it in whatever the
 *     allow-list, gives it every right and never forwards its requests), so a forwarded
 *     batch passes the same checks, admission, optimizer and WAL as a local one;
 *   - the forwarding side: srv_peer_forward, run by the forwarding pool (slowpool.c) for
 *     a descriptor some of whose keys are remote: it splits the batch by owner, sends
 *     each remote part as one frame, runs the local part through its internal client
 *     meanwhile, then reads the replies and merges them in the caller's order.
 * A worker never waits on the network: it hands such a descriptor to the pool as it
 * hands TOPK to the slow pool, and posts its completion when the pool is done.
 *
 * Ownership: main.c starts the layer after the workers (srv_peers_start) and stops it
 * before them (srv_peers_stop joins every thread it started). A forwarding context
 * (srv_peer_fwd) belongs to one pool thread.
 */
#ifndef DE_SRV_PEERS_H
#define DE_SRV_PEERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "proto.h"
#include "tables.h"

struct srv_peers;
struct srv_peer_fwd;

/* Load the shared secret, bind the listener and start its thread. *out NULL and 0 when
 * [peers] is off; else 0, or a negative errno with msg (the daemon does not start). */
int srv_peers_start(const struct srv_config *cfg, struct srv_peers **out, char *msg,
		    size_t cap);
/* Close the listener and every peer connection, join their threads, free. NULL is fine. */
void srv_peers_stop(struct srv_peers *p);

/* Is t sharded over the members (the config's [peers] sharded, int64 keys)? */
bool srv_peers_shards(const struct srv_peers *p, const struct srv_table *t);
/* Does any of keys[0..n) belong to another member? */
bool srv_peers_any_remote(const struct srv_peers *p, const uint64_t *keys, size_t n);

/* A forwarding context: the connections to every other member and an internal client.
 * One per pool thread; max_batch sizes its scratch. */
int srv_peer_fwd_create(struct srv_peers *p, uint32_t max_batch, struct srv_peer_fwd **out);
void srv_peer_fwd_free(struct srv_peer_fwd *f);
/* Run the checked LOOKUP, UPDATE, APPLY_GRADS, ERASE or TOPK e of an int64 table t whose
 * keys (TOPK: queries) lie in the channel data area data: fills q (res, count, aux0 as
 * the worker would) and writes LOOKUP's rows and statuses, TOPK's keys and scores (each
 * member's k best, merged: best first, ties by key), into data. A part that fails (a peer down, past
 * [peers] timeout_ms, or refusing) fails the descriptor with its errno; the other parts
 * may have been applied (as with a batch split over several requests). */
void srv_peer_forward(struct srv_peer_fwd *f, const struct srv_table *t, char *data,
		      const struct de_sqe *e, struct de_cqe *q);

#endif /* DE_SRV_PEERS_H */
