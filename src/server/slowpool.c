/*
 * slowpool.c — TOPK and SAMPLE off the data plane: a small pool of threads (one by
 * default) that runs them, so that a worker serving small lookups never waits behind a
 * scan of a whole table (one TOPK of a few queries over a large table takes a second).
 *
 * A worker that pops a TOPK or SAMPLE checks it (srv_check_sqe), refuses it when its cost
 * (srv_slow_cost) is over the config's topk_max_cost, else copies the descriptor into the client
 * (slow_e, slow_t), sets slow_busy and calls srv_slowpool_submit; from then on it serves
 * nothing else of that client (its completions stay in order) until the job is done.
 * The pool's threads take jobs in FIFO order (each client has at most one, so the queue
 * goes round the clients), run srv_learn_execute on a scratch batch of their own, store
 * the completion in slow_q, then slow_done (release: pairs with the worker's acquire
 * load) and kick the client's worker (srv_worker_kick, under the worker's kick_mu).
 *
 * The pool's threads run at nice SLOW_NICE: where the cores are fewer than the busy
 * threads, a scan gives way to the workers rather than taking a time slice from them.
 *
 * The forwarding pool (peers.h, [peers] threads of them) is the same machinery at nice
 * 0: its jobs are LOOKUP, UPDATE, APPLY_GRADS and ERASE of sharded tables with remote
 * keys, which a thread runs with srv_peer_forward on its own forwarding context.
 *
 * Never: touch a client after storing slow_done (the worker may release it at once), or
 * run a job whose client its worker released (it cannot: a worker releases no client
 * whose job is out).
 */
#include "slowpool.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "batch.h"
#include "learnops.h"
#include "log.h"
#include "peers.h"

#define SLOW_NICE 10 /* the pool's threads' nice value */

struct slow_thread {
	struct srv_slowpool *p;
	pthread_t thread;
	bool started;
	struct srv_peer_fwd *fwd;     /* the forwarding pool's threads: their connections */
	uint64_t *keys;
	uint8_t *status;
	uint32_t *slen;
	uint64_t *soff;
};

struct srv_slowpool {
	struct srv_server *srv;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct srv_client *head, *tail; /* queued jobs, through slow_next */
	bool stop;
	bool forward;                 /* the forwarding pool (peers.h), at nice 0 */
	unsigned n;
	struct slow_thread th[];
};

uint64_t srv_slow_cost(struct srv_table *t, const struct de_sqe *e)
{
	if (e->op == DE_OP_TOPK) {
		struct de_table_stats s;
		uint64_t rows = de_table_stats(t->t, &s) == 0 ? s.keys : 0;
		uint64_t dim = t->wcfg.dim ? t->wcfg.dim : 1;
		unsigned __int128 c = (unsigned __int128)e->count * rows * dim;
		return c > UINT64_MAX ? UINT64_MAX : (uint64_t)c;
	}
	return (uint64_t)e->count + 1; /* SAMPLE: the positives; draws are bounded by the
	                                 * validator (DE_SAMPLE_MAX) */
}

static void run_job(struct slow_thread *th, struct srv_client *c)
{
	struct srv_table *t = c->slow_t;
	const struct de_sqe *e = &c->slow_e;
	struct de_cqe q = { .user_data = e->user_data };
	uint64_t bytes;
	char *data = de_channel_data(c->ch, &bytes);
	if (th->fwd) {
		srv_peer_forward(th->fwd, t, data, e, &q);
	} else {
		struct srv_batch b = { .t = t, .n = e->count, .cap = th->p->srv->cfg.max_batch,
				       .keys = th->keys, .status = th->status, .step = e->arg,
				       .slen = th->slen, .soff = th->soff };
		srv_learn_execute(&b, data, e, &q);
	}
	c->slow_q = q;
	struct srv_worker *w = c->w;
	/* release: slow_q (and the job's writes into the data area) happen before; pairs with
	 * the acquire in worker.c's serve. c may be released right after: not touched again */
	__atomic_store_n(&c->slow_done, 1, __ATOMIC_RELEASE);
	srv_worker_kick(w);
}

static void *slow_main(void *arg)
{
	struct slow_thread *th = arg;
	struct srv_slowpool *p = th->p;
	/* below the workers: on a box with fewer cores than busy threads, a scan yields to
	 * the data plane at once (the top-k threads it starts inherit this) */
	if (!p->forward && setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), SLOW_NICE) != 0)
		srv_log(SRV_LOG_WARN, "top-k / sampling pool: setpriority: %s", strerror(errno));
	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (!p->head && !p->stop)
			pthread_cond_wait(&p->cv, &p->mu);
		if (!p->head)
			break; /* stop, and nothing queued */
		struct srv_client *c = p->head;
		p->head = c->slow_next;
		if (!p->head)
			p->tail = NULL;
		c->slow_next = NULL;
		pthread_mutex_unlock(&p->mu);
		run_job(th, c);
		pthread_mutex_lock(&p->mu);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

void srv_slowpool_submit(struct srv_slowpool *p, struct srv_client *c)
{
	pthread_mutex_lock(&p->mu);
	c->slow_next = NULL;
	if (p->tail)
		p->tail->slow_next = c;
	else
		p->head = c;
	p->tail = c;
	pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&p->mu);
}

void srv_slowpool_stop(struct srv_slowpool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	p->stop = true;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	for (unsigned i = 0; i < p->n; i++) {
		struct slow_thread *th = &p->th[i];
		if (th->started)
			pthread_join(th->thread, NULL);
		free(th->keys);
		free(th->status);
		free(th->slen);
		free(th->soff);
		srv_peer_fwd_free(th->fwd);
	}
	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->mu);
	free(p);
}

int srv_slowpool_start(struct srv_server *s, unsigned nthreads, bool forward,
		       struct srv_slowpool **out)
{
	*out = NULL;
	struct srv_slowpool *p = calloc(1, sizeof *p + nthreads * sizeof p->th[0]);
	if (!p)
		return -ENOMEM;
	p->srv = s;
	p->n = nthreads;
	p->forward = forward;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	uint32_t mb = s->cfg.max_batch;
	int err = 0;
	for (unsigned i = 0; i < nthreads && !err; i++) {
		struct slow_thread *th = &p->th[i];
		th->p = p;
		th->keys = calloc(mb, sizeof *th->keys);
		th->status = calloc(mb, 1);
		th->slen = calloc(mb, sizeof *th->slen);
		th->soff = calloc(mb, sizeof *th->soff);
		if (!th->keys || !th->status || !th->slen || !th->soff) {
			err = -ENOMEM;
			break;
		}
		if (forward && (err = srv_peer_fwd_create(s->peers, mb, &th->fwd)))
			break;
		err = -pthread_create(&th->thread, NULL, slow_main, th);
		th->started = !err;
	}
	if (err) {
		srv_log(SRV_LOG_ERROR, "%s pool: %s", forward ? "forwarding" : "top-k / sampling",
			strerror(-err));
		srv_slowpool_stop(p);
		return err;
	}
	*out = p;
	return 0;
}
