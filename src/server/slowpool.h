/*
 * slowpool.h — PRIVATE to dynembd: the small thread pool that runs TOPK and SAMPLE
 * (slowpool.c), so that a scan of a whole table never holds a data-plane worker.
 * Part of the worker module (worker.h states the layers): a worker queues a job and
 * the pool calls back down into learning (learnops.h) only.
 *
 * Ownership: srv_workers_start creates the pool, srv_workers_stop destroys it after the
 * workers were joined (they wait for their clients' jobs first: a job touches a client's
 * channel, so its worker releases no client with a job in the pool). A job is a client
 * (struct srv_client, its slow_* fields: worker.h); the client has at most one job.
 */
#ifndef DE_SRV_SLOWPOOL_H
#define DE_SRV_SLOWPOOL_H

#include <stdbool.h>
#include <stdint.h>

#include "worker.h"

/* The cost cap of one TOPK (queries x rows x dim) or SAMPLE (draws) is the config's
 * topk_max_cost (default 2^34): over it the worker refuses the request (-E2BIG, cqe
 * aux0 = its cost, aux1 = the cap) without running it. */

struct srv_slowpool;

/* nthreads >= 1 threads; max_batch sizes each thread's scratch batch. forward: the
 * forwarding pool (s->peers set): its threads run srv_peer_forward, at the workers'
 * priority. */
int srv_slowpool_start(struct srv_server *s, unsigned nthreads, bool forward,
		       struct srv_slowpool **out);
/* Run c's job (c->slow_e on c->slow_t, after srv_check_sqe passed): the pool fills
 * c->slow_q, stores c->slow_done (release) and kicks c->w. Worker of c only. */
void srv_slowpool_submit(struct srv_slowpool *p, struct srv_client *c);
/* The cost of a checked TOPK or SAMPLE descriptor e on t, in the cap's units. */
uint64_t srv_slow_cost(struct srv_table *t, const struct de_sqe *e);
/* Finish the queued jobs, join the threads, free. NULL is fine. */
void srv_slowpool_stop(struct srv_slowpool *p);

#endif /* DE_SRV_SLOWPOOL_H */
