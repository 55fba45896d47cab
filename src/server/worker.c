/*
 * worker.c — dynembd's data plane: worker threads that serve channels.
 *
 * Each worker owns up to SRV_MAX_CLIENTS_PER_WORKER client channels plus one private
 * control channel (`ctl`, 2 entries, created here). The control thread holds the client
 * side of `ctl` (ctl_kick) and submits a NOP to it after it changed something the worker
 * must see (a client in the mailbox, a want_remove flag, stop). Because `ctl` is one
 * more channel in the worker's de_channels_wait set, a kick wakes a sleeping worker
 * through the same futex handshake as a client's submit: no timeout polling, and an
 * idle daemon uses no CPU. (The only timed sleep is while some client does not reap its
 * completions: then the worker retries every PENDING_RETRY_MS.)
 *
 * Per pass, for each channel: first post the completions a full CQ refused last time
 * (and pop nothing from that client until they go through: at most one round of
 * completions is ever pending per client, so a client that does not reap stalls only
 * itself), then pop up to BUDGET descriptors, validate and execute each, then (SYNC
 * tables: after one WAL sync for the round, persist.c) post their completions. After
 * poll_us without work, the worker sets NEED_WAKEUP on every channel and sleeps.
 *
 * A descriptor is copied out by de_channel_pop; keys are copied again out of the data
 * area before the table sees them (a client rewriting its keys mid-call must not make
 * the shared table index one key under another's hash). Values and status bytes are
 * written straight into the data area (zero-copy results); a client that races with
 * those writes only garbles its own results.
 *
 * APPLY_GRADS: keys and gradients are both copied out (gbuf) and the gradients checked
 * finite on the copy, so a client rewriting its area cannot slip a NaN past the check
 * into a shared row. Missing keys are created first by a no-op de_table_apply pass (its
 * status counts them and, for string tables, keeps their strings; with admission only
 * keys the table or its disk tier holds are kept: srv_learn_grads_prepare), then
 * de_optim_update steps each distinct key under its row's lock. Several workers may
 * step one row at once: de_table_apply serializes them (proto.h states the semantics).
 *
 * The worker owns its batch: the copies above live in struct srv_worker, and each
 * descriptor's keys go down to the operations layers (learnops.h, persist.h) as a batch
 * description (batch.h). Persistence returns the LSN a SYNC write waits for; the worker
 * keeps the round's largest and asks for one sync (srv_persist_sync) before posting.
 *
 * Rights: a descriptor that writes (UPDATE, ERASE, APPLY_GRADS, LOOKUP creating keys) on
 * a table the client opened without the write right (c->rights, set at OPEN: authz.h)
 * completes with -EACCES before it touches the table.
 *
 * Never: block on a client, touch a client after releasing it, or trust any field of a
 * descriptor before checking it (the validators, validate.h: srv_check_sqe and
 * srv_check_string_keys, side-effect free, so tests/fuzz/fuzz_sqe.c drives them).
 */
#include "worker.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "batch.h"
#include "learnops.h"
#include "log.h"
#include "persist.h"
#include "util.h"
#include "validate.h"

#define BUDGET 32              /* descriptors per channel per pass */
_Static_assert(BUDGET <= sizeof ((struct srv_client *)0)->pending / sizeof(struct de_cqe),
	       "a client's pending completions hold one round");
#define PENDING_RETRY_MS 5     /* sleep bound while a completion waits for CQ space */
#define DRAIN_DEADLINE_NS (5ull * 1000000000ull)

/* ---- descriptors ------------------------------------------------------------------ */

/* Copy int64 keys out of the data area into w->keys (keys_len checked: 8 * count). */
static void load_int_keys(struct srv_worker *w, const char *data, const struct de_sqe *e)
{
	memcpy(w->keys, data + e->keys_off, e->keys_len);
}

/* Copy a string-key region out, check its lengths, and fingerprint each string. */
static int load_string_keys(struct srv_worker *w, struct srv_table *t, const char *data,
			    const struct de_sqe *e)
{
	if (e->keys_len > w->sbuf_cap) {
		size_t cap = w->sbuf_cap ? w->sbuf_cap : 65536;
		while (cap < e->keys_len)
			cap *= 2;
		char *p = realloc(w->sbuf, cap);
		if (!p)
			return -ENOMEM;
		w->sbuf = p;
		w->sbuf_cap = cap;
	}
	memcpy(w->sbuf, data + e->keys_off, e->keys_len);
	/* checked on the copy: the client may rewrite its data area meanwhile */
	int err = srv_check_string_keys(w->sbuf, e->keys_len, e->count, w->slen, w->soff);
	if (err)
		return err;
	for (uint32_t i = 0; i < e->count; i++)
		w->keys[i] = de_key_from_string(t->wcfg.seed, w->sbuf + w->soff[i], w->slen[i]);
	return 0;
}

/* The batch of descriptor e on t: the worker's own arrays (keys already copied in). */
static struct srv_batch batch_of(struct srv_worker *w, struct srv_table *t,
				 const struct de_sqe *e, float *vals)
{
	bool str = t->wcfg.key_type == DE_KEYS_STRING;
	return (struct srv_batch){ .t = t, .n = e->count, .cap = w->srv->cfg.max_batch,
				   .keys = w->keys, .status = w->status, .vals = vals,
				   .step = e->arg, .sbuf = str ? w->sbuf : NULL,
				   .slen = w->slen, .soff = w->soff };
}

/* After a write: its WAL record (persistence); a SYNC one holds the completion until
 * the round's sync covers the LSN it returned, an ASYNC one waits here while a WAL
 * flush that does not carry it is in flight (srv_persist_ack_hold). */
static int log_write(struct srv_worker *w, const struct srv_batch *b, bool erase)
{
	uint64_t lsn = 0;
	int err = srv_persist_log(w->srv->persist, b, erase, &lsn);
	if (!err && lsn) {
		if (lsn > w->sync_lsn)
			w->sync_lsn = lsn;
		w->sync_pending = true;
	}
	if (!err && !lsn) /* ASYNC: held while a flush that leaves the record behind is late */
		err = srv_persist_ack_hold(w->srv->persist, b->t);
	return err;
}

/* A LOOKUP that created keys of a table with a durable tier: the rows it may have restored
 * from the tier are logged (recovery must find them once the tier's compaction dropped
 * their records: that compaction flushes the log first). Not waited for; a failure shows
 * in the WAL's state. */
static void log_restores(struct srv_worker *w, const struct srv_batch *b)
{
	uint32_t created = 0;
	for (uint32_t i = 0; i < b->n; i++)
		created += b->status[i] == DE_CREATED;
	uint64_t lsn;
	if (created)
		(void)srv_persist_log(w->srv->persist, b, false, &lsn);
}

static void wire_stats(struct srv_table *t, struct de_wire_stats *ws, const struct de_table_stats *s)
{
	*ws = (struct de_wire_stats){ .keys = s->keys, .rows_allocated = s->rows_allocated,
				      .rows_free = s->rows_free, .row_bytes = s->row_bytes,
				      .index_bytes = s->index_bytes, .arena_bytes = s->arena_bytes,
				      .segments = s->segments, .splits = s->splits,
				      .dir_doublings = s->dir_doublings,
				      .arena_segments = s->arena_segments,
				      .load_factor = s->load_factor, .dim = t->wcfg.dim,
				      .key_type = t->wcfg.key_type };
}

/*
 * APPLY_GRADS (descriptor checked, keys in w->keys): copy the gradients out and check
 * them, create missing keys (counting them), then one optimizer step per distinct key.
 */
static void apply_grads(struct srv_worker *w, struct srv_table *t, const char *data,
			const struct de_sqe *e, struct de_cqe *q)
{
	if (!t->has_optim) {
		q->res = -EOPNOTSUPP;
		return;
	}
	size_t nf = (size_t)e->count * t->wcfg.dim;
	if (nf > w->gbuf_cap) {
		size_t cap = w->gbuf_cap ? w->gbuf_cap : 4096;
		while (cap < nf)
			cap *= 2;
		float *p = realloc(w->gbuf, cap * sizeof *p);
		if (!p) {
			q->res = -ENOMEM;
			return;
		}
		w->gbuf = p;
		w->gbuf_cap = cap;
	}
	memcpy(w->gbuf, data + e->vals_off, nf * sizeof(float));
	for (size_t i = 0; i < nf; i++)
		if (!isfinite(w->gbuf[i])) {
			q->res = -EINVAL; /* rejected whole, before any row is touched */
			return;
		}
	struct de_optim_config oc = t->optim;
	if (e->flags & DE_GRAD_LR) {
		oc.lr = de_lr_from_wire(e->status_off);
		char why[160];
		if (de_optim_check(&oc, why, sizeof why)) {
			q->res = -EINVAL;
			return;
		}
	}
	/* create missing keys (admission and the disk tier decide: learnops.c) */
	uint32_t created = 0;
	struct srv_batch b = batch_of(w, t, e, w->gbuf);
	bool held = srv_learn_write_begin(t); /* no eviction between the step and its log */
	int err = srv_learn_grads_prepare(&b, &created);
	size_t applied = 0;
	if (!err && b.n)
		err = de_optim_update(t->t, &oc, b.keys, b.n, b.vals, b.step, &applied);
	if (!err) /* WAL record of the stepped rows */
		err = log_write(w, &b, false);
	srv_learn_write_end(t, held);
	q->res = err;
	q->count = (uint32_t)applied;
	q->aux0 = created;
}

/* Validate and execute one descriptor; fills res/count/aux0 of *q. */
static void execute(struct srv_worker *w, struct srv_client *c, const struct de_sqe *e,
		    struct de_cqe *q)
{
	const struct srv_config *cfg = &w->srv->cfg;
	*q = (struct de_cqe){ .user_data = e->user_data };
	if (e->op == DE_OP_NOP)
		return;
	/* acquire: pairs with the release in the control thread's OPEN */
	uint32_t nt = __atomic_load_n(&c->ntables, __ATOMIC_ACQUIRE);
	struct srv_table *t = e->table < nt ? c->tables[e->table] : NULL;
	uint64_t bytes;
	char *data = de_channel_data(c->ch, &bytes);
	q->res = srv_check_sqe(e, nt, t ? t->wcfg.dim : 0, t ? t->wcfg.key_type : 0,
			       cfg->max_batch, bytes);
	if (q->res)
		return;
	bool writes = e->op == DE_OP_UPDATE || e->op == DE_OP_ERASE ||
		      e->op == DE_OP_APPLY_GRADS ||
		      (e->op == DE_OP_LOOKUP && (e->flags & DE_LOOKUP_CREATE));
	if (writes && !(c->rights[e->table] & SRV_RIGHT_BIT(SRV_RIGHT_WRITE))) {
		q->res = -EACCES; /* opened without the write right (authz.h) */
		return;
	}

	if (e->op == DE_OP_STATS) {
		struct de_table_stats s;
		struct de_wire_stats ws;
		q->res = de_table_stats(t->t, &s);
		if (!q->res) {
			wire_stats(t, &ws, &s);
			srv_learn_stats(t, &ws);
			srv_persist_stats(w->srv->persist, t, &ws);
			memcpy(data + e->vals_off, &ws, sizeof ws);
		}
		return;
	}

	if (e->op >= DE_OP_SAMPLE) { /* the batch's arrays as scratch */
		struct srv_batch b = batch_of(w, t, e, NULL);
		srv_learn_execute(&b, data, e, q);
		return;
	}
	uint32_t n = e->count;
	bool str = t->wcfg.key_type == DE_KEYS_STRING;
	int err = 0;
	if (e->op != DE_OP_LOOKUP && (q->res = srv_persist_write_check(w->srv->persist, t)))
		return; /* the table's WAL failed: read-only */
	uint32_t bad = 0;
	if (str)
		err = load_string_keys(w, t, data, e);
	else
		load_int_keys(w, data, e);
	bool create = e->op == DE_OP_LOOKUP && (e->flags & DE_LOOKUP_CREATE);
	bool reads = e->op == DE_OP_LOOKUP && !create; /* checked after the read */
	if (str && !err && !reads) /* a fingerprint of another key's string: no row of its own */
		err = srv_table_check_strings(t, w->keys, w->sbuf, w->slen, w->soff, n,
					      e->op != DE_OP_ERASE, &bad);
	if (err) {
		q->res = err;
		q->count = err == -EEXIST ? bad : 0; /* which key (proto.h) */
		return;
	}
	if (e->op == DE_OP_APPLY_GRADS) {
		apply_grads(w, t, data, e, q);
		return;
	}
	float *vals = (float *)(void *)(data + e->vals_off);
	struct srv_batch b = batch_of(w, t, e, vals);
	size_t erased = 0;
	/* no eviction between a write and its log (persisted tables with eviction) */
	bool held = (e->op != DE_OP_LOOKUP || create) && srv_learn_write_begin(t);
	switch (e->op) {
	case DE_OP_LOOKUP:
		if (e->flags & DE_LOOKUP_CREATE) /* admission, eviction: learnops.c */
			err = srv_learn_lookup_create(&b);
		else
			err = de_table_find(t->t, w->keys, n, vals, w->status);
		break;
	case DE_OP_UPDATE:
		err = srv_learn_update(&b);
		break;
	default: /* DE_OP_ERASE (a durable tier's copies first: learnops.c) */
		err = srv_learn_erase(t, w->keys, n);
		if (!err)
			err = de_table_erase(t->t, w->keys, n, &erased);
		q->count = (uint32_t)erased;
		break;
	}
	if (!err && e->op != DE_OP_LOOKUP) /* WAL record, dirty keys (persistence) */
		err = log_write(w, &b, e->op == DE_OP_ERASE);
	else if (!err && create && srv_learn_logs_creates(t))
		log_restores(w, &b);
	srv_learn_write_end(t, held);
	if (!err && str && reads &&
	    (err = srv_table_check_strings(t, w->keys, w->sbuf, w->slen, w->soff, n, false, &bad)) ==
		    -EEXIST)
		q->count = bad; /* what it read is not delivered (proto.h) */
	else if (err == -EEXIST)
		q->count = b.bad; /* admission: a new key's string (learnops.c) */
	if (err) {
		q->res = err;
		return;
	}
	if (e->op == DE_OP_ERASE)
		return;
	uint32_t found = 0, created = 0;
	for (uint32_t i = 0; i < n; i++) {
		found += w->status[i] == DE_FOUND;
		created += w->status[i] == DE_CREATED;
	}
	if (str && created)
		srv_batch_keep_strings(&b);
	if (e->flags & DE_SQE_STATUS)
		memcpy(data + e->status_off, w->status, n);
	if (e->op == DE_OP_LOOKUP) {
		q->count = found;
		q->aux0 = created;
	} else {
		q->count = created;
	}
}

/* ---- clients ------------------------------------------------------------------------ */

/* Stop serving c and hand it back to the control thread. Never touch c afterwards. */
static void release(struct srv_worker *w, unsigned i, bool broken)
{
	struct srv_client *c = w->active[i];
	w->active[i] = w->active[--w->nactive];
	if (broken)
		c->broken = 1;
	/* release: the worker's last accesses to c and its channel happen before; pairs
	 * with the acquire in the control thread's reaper */
	__atomic_store_n(&c->released, 1, __ATOMIC_RELEASE);
	uint64_t one = 1;
	ssize_t r = write(w->srv->release_fd, &one, sizeof one);
	(void)r; /* an eventfd write fails only when the counter would overflow */
}

/* Take the mailbox and honour want_remove flags. */
static void take_mail(struct srv_worker *w)
{
	pthread_mutex_lock(&w->mu);
	for (unsigned i = 0; i < w->nmail; i++)
		w->active[w->nactive++] = w->mail[i];
	w->nmail = 0;
	pthread_mutex_unlock(&w->mu);
	for (unsigned i = w->nactive; i-- > 0;)
		if (__atomic_load_n(&w->active[i]->want_remove, __ATOMIC_ACQUIRE))
			release(w, i, false);
}

/*
 * Serve one client for a pass. Returns 1 if it did work, 0 if not, -EBADMSG if the
 * client broke its channel.
 */
static int serve(struct srv_worker *w, struct srv_client *c)
{
	int work = 0, r;
	while (c->has_pending) {
		r = de_channel_post(c->ch, &c->pending[0]);
		if (r == -EAGAIN)
			return work;
		if (r)
			return -EBADMSG;
		memmove(&c->pending[0], &c->pending[1], --c->npending * sizeof c->pending[0]);
		c->has_pending = c->npending != 0;
		work = 1;
	}
	/* Completions are posted as they come until the first SYNC write of the round;
	 * from it on they are held, then one WAL sync covers the round's SYNC writes (group
	 * commit), then they are posted in order: none goes out before its record is
	 * durable. Without SYNC tables at most one completion is ever pending. */
	struct de_cqe q[BUDGET];
	bool wait[BUDGET];
	unsigned nq = 0;
	bool bad = false;
	for (int i = 0; i < BUDGET; i++) {
		struct de_sqe e;
		r = de_channel_pop(c->ch, &e);
		if (r == -EAGAIN)
			break;
		if (r) {
			bad = true;
			break;
		}
		work = 1;
		w->sync_pending = false;
		execute(w, c, &e, &q[nq]);
		wait[nq] = w->sync_pending;
		if (nq || wait[nq]) {
			nq++; /* held behind a SYNC write */
			continue;
		}
		r = de_channel_post(c->ch, &q[0]);
		if (r == -EAGAIN) {
			c->pending[0] = q[0];
			c->npending = 1;
			c->has_pending = true;
			break;
		}
		if (r)
			return -EBADMSG;
	}
	if (w->sync_lsn) { /* one sync for the round; on failure none of its SYNC writes is
			    * acknowledged */
		int err = srv_persist_sync(w->srv->persist, w->sync_lsn);
		w->sync_lsn = 0;
		for (unsigned i = 0; err && i < nq; i++)
			if (wait[i] && q[i].res == 0)
				q[i].res = err;
	}
	if (bad)
		return -EBADMSG;
	for (unsigned i = 0; i < nq; i++) {
		r = de_channel_post(c->ch, &q[i]);
		if (r == -EAGAIN) { /* the client does not reap: keep the rest, in order */
			c->npending = nq - i;
			memcpy(c->pending, &q[i], c->npending * sizeof q[0]);
			c->has_pending = true;
			break;
		}
		if (r)
			return -EBADMSG;
	}
	return work;
}

/* One pass over every client. *pending: some client still has a completion waiting. */
static bool pass(struct srv_worker *w, bool *pending)
{
	bool work = false;
	*pending = false;
	for (unsigned i = w->nactive; i-- > 0;) {
		struct srv_client *c = w->active[i];
		int r = serve(w, c);
		if (r < 0) {
			srv_log(SRV_LOG_WARN, "client %u broke its channel: dropping it", c->id);
			release(w, i, true);
			continue;
		}
		work |= r > 0;
		*pending |= c->has_pending;
	}
	return work;
}

static bool drain_ctl(struct srv_worker *w)
{
	struct de_sqe e;
	bool any = false;
	while (de_channel_pop(w->ctl, &e) == 0)
		any = true;
	return any;
}

/* Set NEED_WAKEUP everywhere and sleep unless something arrived meanwhile. */
static void sleep_until_work(struct srv_worker *w, bool pending)
{
	de_channel *chs[DE_CHANNELS_WAIT_MAX];
	unsigned n = 0;
	bool ready = false;
	chs[n++] = w->ctl;
	if (de_channel_sleep_prepare(w->ctl) != 0)
		ready = true;
	for (unsigned i = w->nactive; i-- > 0 && !ready;) {
		struct srv_client *c = w->active[i];
		if (c->has_pending)
			continue; /* retried on the timeout below */
		int r = de_channel_sleep_prepare(c->ch);
		chs[n++] = c->ch;
		if (r)
			ready = true; /* a submission, or broken: the next pass sees it */
	}
	if (!ready) {
		int r = de_channels_wait(chs, n, pending ? PENDING_RETRY_MS : -1);
		if (r && r != -ETIMEDOUT) {
			static int warned;
			if (!__atomic_exchange_n(&warned, 1, __ATOMIC_RELAXED))
				srv_log(SRV_LOG_WARN, "de_channels_wait: %s; polling every 1 ms",
					strerror(-r));
			usleep(1000);
		}
	}
	for (unsigned i = 0; i < n; i++)
		de_channel_sleep_done(chs[i]);
}

/* SIGTERM: finish every descriptor already queued and post its completion. */
static void drain(struct srv_worker *w)
{
	uint64_t deadline = srv_mono_ns() + DRAIN_DEADLINE_NS;
	for (;;) {
		bool pending;
		bool work = pass(w, &pending);
		if (!work && !pending)
			break;
		if (srv_mono_ns() > deadline) {
			srv_log(SRV_LOG_WARN, "worker %u: clients did not reap their last completions",
				w->idx);
			break;
		}
		if (!work)
			usleep(1000); /* completions wait for CQ space */
	}
}

static void *worker_main(void *arg)
{
	struct srv_worker *w = arg;
	struct srv_server *s = w->srv;
	if (w->pin && s->topo) {
		if (hwloc_set_cpubind(s->topo, w->pin, HWLOC_CPUBIND_THREAD) != 0)
			srv_log(SRV_LOG_WARN, "worker %u: cannot pin to its cpu: %s", w->idx,
				strerror(errno));
	}
	uint64_t poll_ns = (uint64_t)s->cfg.poll_us * 1000;
	uint64_t last_work = srv_mono_ns();
	for (;;) {
		if (drain_ctl(w))
			take_mail(w);
		if (__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE)) {
			take_mail(w);
			drain(w);
			break;
		}
		bool pending;
		if (pass(w, &pending)) {
			last_work = srv_mono_ns();
			continue;
		}
		if (srv_mono_ns() - last_work < poll_ns) {
			__builtin_ia32_pause();
			continue;
		}
		sleep_until_work(w, pending);
		last_work = srv_mono_ns();
	}
	/* Hand every client back: the control thread frees them after the join. */
	while (w->nactive)
		release(w, w->nactive - 1, false);
	return NULL;
}

/* ---- lifecycle ---------------------------------------------------------------------- */

void srv_worker_kick(struct srv_worker *w)
{
	struct de_sqe nop = { .op = DE_OP_NOP };
	/* -EAGAIN: the ring is full of kicks the worker has not popped: it will wake */
	de_channel_submit(w->ctl_kick, &nop);
}

static hwloc_cpuset_t pick_pu(struct srv_server *s, unsigned idx)
{
	if (!s->topo || s->reg.numa_node < 0)
		return NULL;
	hwloc_obj_t node = hwloc_get_numanode_obj_by_os_index(s->topo, (unsigned)s->reg.numa_node);
	if (!node || !node->cpuset)
		return NULL;
	int npu = hwloc_get_nbobjs_inside_cpuset_by_type(s->topo, node->cpuset, HWLOC_OBJ_PU);
	if (npu <= 0)
		return NULL;
	hwloc_obj_t pu = hwloc_get_obj_inside_cpuset_by_type(s->topo, node->cpuset, HWLOC_OBJ_PU,
							     idx % (unsigned)npu);
	return pu && pu->cpuset ? hwloc_bitmap_dup(pu->cpuset) : NULL;
}

int srv_workers_start(struct srv_server *s)
{
	const struct srv_config *cfg = &s->cfg;
	s->workers = calloc(cfg->workers, sizeof *s->workers);
	if (!s->workers)
		return -ENOMEM;
	s->nworkers = cfg->workers;
	for (unsigned i = 0; i < s->nworkers; i++) {
		struct srv_worker *w = &s->workers[i];
		w->idx = i;
		w->srv = s;
		pthread_mutex_init(&w->mu, NULL);
		struct de_channel_config cc = { .sq_entries = 2, .cq_entries = 2, .data_bytes = 4096 };
		int err = de_channel_create(&cc, &w->ctl);
		if (!err)
			err = de_channel_attach(de_channel_fd(w->ctl), &w->ctl_kick);
		w->keys = calloc(cfg->max_batch, sizeof *w->keys);
		w->status = calloc(cfg->max_batch, 1);
		w->slen = calloc(cfg->max_batch, sizeof *w->slen);
		w->soff = calloc(cfg->max_batch, sizeof *w->soff);
		if (!err && (!w->keys || !w->status || !w->slen || !w->soff))
			err = -ENOMEM;
		if (err) {
			srv_log(SRV_LOG_ERROR, "worker %u: %s", i, strerror(-err));
			return err;
		}
		w->pin = pick_pu(s, i);
		err = pthread_create(&w->thread, NULL, worker_main, w);
		if (err) {
			srv_log(SRV_LOG_ERROR, "worker %u: pthread_create: %s", i, strerror(err));
			return -err;
		}
		w->started = true;
		if (w->pin) {
			char buf[64];
			hwloc_bitmap_list_snprintf(buf, sizeof buf, w->pin);
			srv_log(SRV_LOG_INFO, "worker %u started on cpu %s (NUMA node %d)", i, buf,
				s->reg.numa_node);
		} else {
			srv_log(SRV_LOG_INFO, "worker %u started (not pinned)", i);
		}
	}
	return 0;
}

void srv_workers_stop(struct srv_server *s)
{
	for (unsigned i = 0; i < s->nworkers; i++) {
		struct srv_worker *w = &s->workers[i];
		if (!w->started)
			continue;
		__atomic_store_n(&w->stop, 1, __ATOMIC_RELEASE);
		srv_worker_kick(w);
	}
	for (unsigned i = 0; i < s->nworkers; i++) {
		struct srv_worker *w = &s->workers[i];
		if (w->started)
			pthread_join(w->thread, NULL);
		w->started = false;
	}
}

void srv_workers_free(struct srv_server *s)
{
	for (unsigned i = 0; i < s->nworkers; i++) {
		struct srv_worker *w = &s->workers[i];
		de_channel_destroy(w->ctl_kick);
		de_channel_destroy(w->ctl);
		if (w->pin)
			hwloc_bitmap_free(w->pin);
		free(w->keys);
		free(w->status);
		free(w->slen);
		free(w->soff);
		free(w->sbuf);
		free(w->gbuf);
		pthread_mutex_destroy(&w->mu);
	}
	free(s->workers);
	s->workers = NULL;
	s->nworkers = 0;
}
