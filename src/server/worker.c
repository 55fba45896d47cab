/*
 * worker.c — dynembd's data plane: worker threads that serve channels.
 *
 * Each worker owns up to SRV_MAX_CLIENTS_PER_WORKER client channels plus one private
 * control channel (`ctl`, 2 entries, created here). The control thread holds the client
 * side of `ctl` (ctl_kick) and submits a NOP to it after it changed something the worker
 * must see (a client in the mailbox, a want_remove flag, stop). Because `ctl` is one
 * more channel in the worker's de_channels_wait set, a kick wakes a sleeping worker
 * through the same futex handshake as a client's submit: no timeout polling, and an
 * idle daemon uses no CPU. (Timed sleeps: while some client does not reap its completions
 * or has a job on the slow pool, the worker retries every PENDING_RETRY_MS; while a
 * channel is backed off for a wake storm, it is polled every SLOW_POLL_MS.)
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
 * Fairness: a pass serves every client in turn, and each client for at most PASS_WORK
 * units of work (keys x (dim + 1): the rows copied and the keys hashed) and BUDGET
 * descriptors, so one client's backlog costs another at most a slice of the pass. A
 * descriptor that does not fit what is left of a client's slice waits for the next pass
 * (c->cur, not started), where it starts with a whole slice. An int64 LOOKUP or UPDATE
 * larger than a slice is served in slices (chunks of keys, resumed pass after pass:
 * c->cur, cur_done) and completed when its last chunk is done; nothing else of that
 * client runs meanwhile, so its completions stay in order. An UPDATE's chunk is a WAL
 * record of its own; only the last one's is synced or held before the completion
 * (log_write_part), so a SYNC UPDATE still costs one fdatasync, and a crash midway
 * leaves a prefix of an unacknowledged UPDATE, as a failure midway does (proto.h).
 * Other large requests run whole once they start a pass: APPLY_GRADS sums a key's
 * gradients over the whole request before one optimizer step (a slice would step a key
 * twice), and string keys are parsed and checked as one region.
 * Peers ([peers], peers.h): a LOOKUP, UPDATE, APPLY_GRADS or ERASE of a sharded table
 * with a key another member owns goes to the forwarding pool the way TOPK goes to the
 * slow pool (c->slow_*), whole (a sharded LOOKUP is never served in slices), and its
 * completion is posted when the pool is done; the worker never waits on the network.
 * The forwarding pool's own requests to this daemon (its local parts, and the owner's
 * side of other members' requests) come on internal connections (c->internal), which
 * are never forwarded.
 * TOPK and SAMPLE run on the slow pool (slowpool.c), never on a worker; one whose cost is
 * over the config's topk_max_cost is refused (-E2BIG, aux0 = its cost, aux1 = the cap,
 * logged).
 *
 * Wake storms: a client can bump its futex word without submitting anything, and every
 * bump wakes the sleeping worker. After a wake, the worker busy-polls only if the pass
 * found work. A channel whose wakes bring no work EMPTY_WAKES_MAX times in a row is left
 * out of the wait set for a growing interval (BACKOFF_MIN_MS doubling to BACKOFF_MAX_MS;
 * work halves it again) and is polled every SLOW_POLL_MS meanwhile; wakes without work
 * and back-offs are counted (STATS: dp_empty_wakes, dp_wake_backoffs) and logged at most
 * once per STORM_LOG_NS per worker.
 *
 * Metrics: each descriptor completed on a table adds to that table's per-op counters
 * (tables.h: a latency bucket, the latency sum, an error), relaxed atomics with one
 * clock read pair per descriptor, never per key and never logged; /metrics (metrics.c)
 * sums them at a scrape.
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
#include "peers.h"
#include "persist.h"
#include "slowpool.h"
#include "util.h"
#include "validate.h"

#define BUDGET 32              /* descriptors per channel per pass */
_Static_assert(BUDGET <= sizeof ((struct srv_client *)0)->pending / sizeof(struct de_cqe),
	       "a client's pending completions hold one round");
#define PASS_WORK (1 << 12)    /* work units (keys x (dim + 1)) per client per pass */
#define PENDING_RETRY_MS 5     /* sleep bound while a completion waits for CQ space */
#define EMPTY_WAKES_MAX 64     /* wakes in a row without work before a back-off */
#define BACKOFF_MIN_MS 8u
#define BACKOFF_MAX_MS 1024u
#define SLOW_POLL_MS 10        /* a backed-off channel is polled this often */
#define STORM_LOG_NS (10ull * 1000000000ull)
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

#ifdef DE_FAULT_INJECTION
/* Test builds: DYNEMBD_TEST_ERASE_DELAY_MS=n sleeps n ms between a string ERASE's check
 * and its erase (test_strcollide: a colliding create lands in between). Read once. */
static void test_erase_delay(void)
{
	static long ms = -1;
	long v = __atomic_load_n(&ms, __ATOMIC_RELAXED);
	if (v < 0) {
		const char *e = getenv("DYNEMBD_TEST_ERASE_DELAY_MS");
		v = e ? strtol(e, NULL, 10) : 0;
		v = v > 0 && v < 10000 ? v : 0;
		__atomic_store_n(&ms, v, __ATOMIC_RELAXED);
	}
	if (v)
		nanosleep(&(struct timespec){ v / 1000, (v % 1000) * 1000000L }, NULL);
}
#endif

/* After a write: its WAL record (persistence); a SYNC one holds the completion until
 * the round's sync covers the LSN it returned, an ASYNC one waits here while a WAL
 * flush that does not carry it is in flight (srv_persist_ack_hold). A chunk of an
 * UPDATE served in slices that is not its last (!last) does neither: nothing is
 * acknowledged yet, and the last chunk's record comes after it in the table's WAL, so
 * the sync or hold of the last covers it (no fdatasync per slice). */
static int log_write_part(struct srv_worker *w, const struct srv_batch *b, bool erase,
			  bool last)
{
	uint64_t lsn = 0;
	int err = srv_persist_log(w->srv->persist, b, erase, &lsn);
	if (!last)
		return err;
	if (!err && lsn) {
		if (lsn > w->sync_lsn)
			w->sync_lsn = lsn;
		w->sync_pending = true;
	}
	if (!err && !lsn) /* ASYNC: held while a flush that leaves the record behind is late */
		err = srv_persist_ack_hold(w->srv->persist, b->t);
	return err;
}

static int log_write(struct srv_worker *w, const struct srv_batch *b, bool erase)
{
	return log_write_part(w, b, erase, true);
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

/*
 * An int64 LOOKUP (descriptor checked) on keys [off, off + n) of e: copy them out, find
 * (or create) them, write their values and statuses at their places in the data area.
 * *found / *created: its counts.
 */
static int lookup_range(struct srv_worker *w, struct srv_table *t, char *data,
			const struct de_sqe *e, uint32_t off, uint32_t n, uint32_t *found,
			uint32_t *created)
{
	uint64_t dim = t->wcfg.dim;
	memcpy(w->keys, data + e->keys_off + 8ull * off, 8ull * n);
	float *vals = (float *)(void *)(data + e->vals_off + 4ull * dim * off);
	struct srv_batch b = batch_of(w, t, e, vals);
	b.n = n;
	bool create = e->flags & DE_LOOKUP_CREATE;
	bool held = create && srv_learn_write_begin(t); /* no eviction between create and log */
	int err = create ? srv_learn_lookup_create(&b) /* admission, eviction: learnops.c */
			 : de_table_find(t->t, w->keys, n, vals, w->status);
	if (!err && create && srv_learn_logs_creates(t))
		log_restores(w, &b);
	srv_learn_write_end(t, held);
	if (err)
		return err;
	*found = *created = 0;
	for (uint32_t i = 0; i < n; i++) {
		*found += w->status[i] == DE_FOUND;
		*created += w->status[i] == DE_CREATED;
	}
	if (e->flags & DE_SQE_STATUS)
		memcpy(data + e->status_off + off, w->status, n);
	return 0;
}

/*
 * An int64 UPDATE (descriptor checked) on keys [off, off + n) of e, served in slices:
 * copy the keys out, assign their rows from the data area, log the chunk (last: it ends
 * the request), write the statuses at their places. *created: its count. The table's
 * WAL is checked per chunk: one that failed meanwhile fails the rest (the chunks already
 * applied stay, as the keys before a failing one do in a whole UPDATE).
 */
static int update_range(struct srv_worker *w, struct srv_table *t, char *data,
			const struct de_sqe *e, uint32_t off, uint32_t n, bool last,
			uint32_t *created)
{
	int err = srv_persist_write_check(w->srv->persist, t);
	if (err)
		return err; /* the table's WAL failed: read-only */
	uint64_t dim = t->wcfg.dim;
	memcpy(w->keys, data + e->keys_off + 8ull * off, 8ull * n);
	float *vals = (float *)(void *)(data + e->vals_off + 4ull * dim * off);
	struct srv_batch b = batch_of(w, t, e, vals);
	b.n = n;
	bool held = srv_learn_write_begin(t); /* no eviction between a write and its log */
	err = srv_learn_update(&b);
	if (!err)
		err = log_write_part(w, &b, false, last);
	srv_learn_write_end(t, held);
	if (err)
		return err;
	*created = 0;
	for (uint32_t i = 0; i < n; i++)
		*created += w->status[i] == DE_CREATED;
	if (e->flags & DE_SQE_STATUS)
		memcpy(data + e->status_off + off, w->status, n);
	return 0;
}

/* One completed descriptor of op on t in the table's per-op counters (tables.h): its
 * latency bucket, the sum, an error, its count of keys. Relaxed atomics: /metrics and
 * OPSTATS read them (srv_op_counters_read). */
static void count_op(struct srv_table *t, uint32_t op, uint32_t keys, int32_t res, uint64_t t0)
{
	if (op == DE_OP_NOP || op > DE_OP_MAX)
		return;
	uint64_t ns = srv_mono_ns() - t0;
	uint64_t q = ns ? (ns - 1) / 1000 : 0; /* bucket i: ns <= 1000 << i */
	unsigned i = q ? 64u - (unsigned)__builtin_clzll(q) : 0;
	if (i > SRV_LAT_BUCKETS)
		i = SRV_LAT_BUCKETS;
	struct srv_op_counters *k = &t->ops[op];
	__atomic_fetch_add(&k->le[i], 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&k->sum_ns, ns, __ATOMIC_RELAXED);
	__atomic_fetch_add(&k->keys, keys, __ATOMIC_RELAXED);
	if (res < 0)
		__atomic_fetch_add(&k->errors, 1, __ATOMIC_RELAXED);
}

/* Work units of a descriptor on t (NULL: not a table of the client): keys x (dim + 1)
 * for the ops that move rows; the keys for ERASE and KEY_STRINGS; 1 otherwise. */
static uint64_t cost_of(const struct de_sqe *e, const struct srv_table *t)
{
	uint64_t per = t ? (uint64_t)t->wcfg.dim + 1 : 1;
	switch (e->op) {
	case DE_OP_LOOKUP:
	case DE_OP_UPDATE:
	case DE_OP_APPLY_GRADS:
		return (uint64_t)e->count * per;
	case DE_OP_ERASE:
	case DE_OP_KEY_STRINGS:
		return e->count ? e->count : 1;
	default:
		return 1;
	}
}

static bool log_due(uint64_t *last)
{
	uint64_t now = srv_mono_ns();
	if (*last && now - *last < STORM_LOG_NS)
		return false;
	*last = now;
	return true;
}

static void wire_stats(struct srv_table *t, struct de_wire_stats *ws, const struct de_table_stats *s)
{
	*ws = (struct de_wire_stats){ .keys = s->keys, .rows_allocated = s->rows_allocated,
				      .rows_free = s->rows_free, .row_bytes = s->row_bytes,
				      .index_bytes = s->index_bytes, .arena_bytes = s->arena_bytes,
				      .segments = s->segments, .splits = s->splits,
				      .dir_doublings = s->dir_doublings,
				      .arena_segments = s->arena_segments,
				      .index_refusals = s->index_refusals,
				      .load_factor = s->load_factor, .dim = t->wcfg.dim,
				      .key_type = t->wcfg.key_type };
}

int srv_table_wire_stats(struct srv_server *srv, struct srv_table *t, struct de_wire_stats *ws)
{
	struct de_table_stats s;
	int err = de_table_stats(t->t, &s);
	if (err)
		return err;
	wire_stats(t, ws, &s);
	srv_learn_stats(t, ws);
	srv_persist_stats(srv->persist, t, ws);
	for (unsigned i = 0; i < srv->nworkers; i++) {
		struct srv_worker *x = &srv->workers[i];
		ws->dp_empty_wakes += __atomic_load_n(&x->n_empty_wakes, __ATOMIC_RELAXED);
		ws->dp_wake_backoffs += __atomic_load_n(&x->n_backoffs, __ATOMIC_RELAXED);
	}
	return 0;
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

static bool sharded(struct srv_worker *w, struct srv_table *t);
static int forward_op(struct srv_worker *w, struct srv_client *c, struct srv_table *t,
		      const struct de_sqe *e);

/* TOPK or SAMPLE (checked): refused over the cap, else queued on the slow pool (of a
 * sharded table: on the forwarding pool, which asks every member for its k best, or
 * mixes the members' draws).
 * 0: *q is its completion; 2: a pool has it (c->slow_busy). */
static int slow_op(struct srv_worker *w, struct srv_client *c, struct srv_table *t,
		   char *data, const struct de_sqe *e, struct de_cqe *q)
{
	uint64_t cost = srv_slow_cost(t, e);
	uint64_t cap = w->srv->cfg.topk_max_cost ? w->srv->cfg.topk_max_cost : 1ull << 34;
	if (cost > cap) {
		q->res = -E2BIG;
		q->aux0 = cost;
		q->aux1 = cap;
		if (log_due(&w->last_refuse_log))
			srv_log(SRV_LOG_WARN,
				"client %u: %s of cost %" PRIu64 " refused: over topk_max_cost %"
				PRIu64 " (queries x rows x dim)", c->id,
				e->op == DE_OP_TOPK ? "TOPK" : "SAMPLE", cost, cap);
		return 0;
	}
	if (w->srv->peers && !c->internal && sharded(w, t)) /* TOPK, SAMPLE over the members */
		return forward_op(w, c, t, e);
	if (!w->srv->slow) { /* no pool (it could not start): on the worker */
		struct srv_batch b = batch_of(w, t, e, NULL);
		srv_learn_execute(&b, data, e, q);
		return 0;
	}
	c->slow_e = *e;
	__atomic_store_n(&c->slow_t, t, __ATOMIC_RELAXED);
	__atomic_store_n(&c->slow_done, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&c->slow_busy, true, __ATOMIC_RELAXED);
	srv_slowpool_submit(w->srv->slow, c);
	return 2;
}

/* Is t sharded over [peers] members (cached in t->shard: 1 yes, 2 no)? */
static bool sharded(struct srv_worker *w, struct srv_table *t)
{
	int v = __atomic_load_n(&t->shard, __ATOMIC_RELAXED);
	if (!v) {
		v = srv_peers_shards(w->srv->peers, t) ? 1 : 2;
		__atomic_store_n(&t->shard, v, __ATOMIC_RELAXED);
	}
	return v == 1;
}

/* Does checked e go to the forwarding pool: a LOOKUP, UPDATE, APPLY_GRADS or ERASE of a
 * sharded table, from a client that is not this daemon's own, with a remote key? (A
 * client rewriting its keys after this look only misplaces its own rows: the pool copies
 * them again.) Leaves the keys in w->keys. */
static bool forwarded(struct srv_worker *w, const struct srv_client *c, struct srv_table *t,
		      const char *data, const struct de_sqe *e)
{
	if (!w->srv->peers || c->internal || !sharded(w, t))
		return false;
	if (e->op != DE_OP_LOOKUP && e->op != DE_OP_UPDATE && e->op != DE_OP_APPLY_GRADS &&
	    e->op != DE_OP_ERASE)
		return false;
	load_int_keys(w, data, e);
	return srv_peers_any_remote(w->srv->peers, w->keys, e->count);
}

/* Queue checked e on the forwarding pool (as slow_op does on the slow pool): 2. */
static int forward_op(struct srv_worker *w, struct srv_client *c, struct srv_table *t,
		      const struct de_sqe *e)
{
	c->slow_e = *e;
	__atomic_store_n(&c->slow_t, t, __ATOMIC_RELAXED);
	__atomic_store_n(&c->slow_done, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&c->slow_busy, true, __ATOMIC_RELAXED);
	__atomic_fetch_add(&w->n_forwarded, 1, __ATOMIC_RELAXED);
	srv_slowpool_submit(w->srv->fwd, c);
	return 2;
}

/* c's table in slot i (of nt published), or NULL: no such slot, or revoked (worker.h). */
static struct srv_table *slot_table(const struct srv_client *c, uint32_t i, uint32_t nt)
{
	return i < nt ? __atomic_load_n(&c->tables[i], __ATOMIC_RELAXED) : NULL;
}

/* For a descriptor that writes (a creating LOOKUP included): -EROFS on a version of a
 * serving table (read-only: control_serve.c), -EACCES on a table c opened without the
 * write right (c->rights, set at OPEN: authz.h); else 0. e is checked. */
static int write_right(const struct srv_client *c, const struct srv_table *t,
		       const struct de_sqe *e)
{
	bool writes = e->op == DE_OP_UPDATE || e->op == DE_OP_ERASE ||
		      e->op == DE_OP_APPLY_GRADS ||
		      (e->op == DE_OP_LOOKUP && (e->flags & DE_LOOKUP_CREATE));
	if (writes && t->serve_version)
		return -EROFS;
	return writes && !(c->rights[e->table] & SRV_RIGHT_BIT(SRV_RIGHT_WRITE)) ? -EACCES : 0;
}

/* Validate and execute one descriptor; fills res/count/aux0 of *q and returns 0, or
 * returns 2 when the slow pool took it (its completion comes later: c->slow_q). */
static int execute(struct srv_worker *w, struct srv_client *c, const struct de_sqe *e,
		   struct de_cqe *q)
{
	const struct srv_config *cfg = &w->srv->cfg;
	*q = (struct de_cqe){ .user_data = e->user_data };
	if (e->op == DE_OP_NOP)
		return 0;
	/* acquire: pairs with the release in the control thread's OPEN */
	uint32_t nt = __atomic_load_n(&c->ntables, __ATOMIC_ACQUIRE);
	struct srv_table *t = slot_table(c, e->table, nt);
	uint64_t bytes;
	char *data = de_channel_data(c->ch, &bytes);
	if (e->table < nt && !t) {
		q->res = -EIDRM; /* its table was dropped (forced) */
		return 0;
	}
	q->res = srv_check_sqe(e, nt, t ? t->wcfg.dim : 0, t ? t->wcfg.key_type : 0,
			       cfg->max_batch, bytes);
	if (q->res)
		return 0;
	if ((q->res = write_right(c, t, e)))
		return 0;

	if (e->op == DE_OP_STATS) {
		struct de_wire_stats ws;
		q->res = srv_table_wire_stats(w->srv, t, &ws);
		if (!q->res)
			memcpy(data + e->vals_off, &ws, sizeof ws);
		return 0;
	}

	if (e->op == DE_OP_SAMPLE || e->op == DE_OP_TOPK)
		return slow_op(w, c, t, data, e, q);
	if (e->op == DE_OP_KEY_STRINGS) { /* the batch's arrays as scratch */
		struct srv_batch b = batch_of(w, t, e, NULL);
		srv_learn_execute(&b, data, e, q);
		return 0;
	}
	uint32_t n = e->count;
	bool str = t->wcfg.key_type == DE_KEYS_STRING;
	int err = 0;
	if (forwarded(w, c, t, data, e)) {
		if (e->op == DE_OP_APPLY_GRADS && !t->has_optim) {
			q->res = -EOPNOTSUPP;
			return 0;
		}
		return forward_op(w, c, t, e);
	}
	if (e->op == DE_OP_LOOKUP && !str) {
		uint32_t found = 0, created = 0;
		q->res = lookup_range(w, t, data, e, 0, n, &found, &created);
		q->count = found;
		q->aux0 = created;
		return 0;
	}
	if (e->op != DE_OP_LOOKUP && (q->res = srv_persist_write_check(w->srv->persist, t)))
		return 0; /* the table's WAL failed: read-only */
	uint32_t bad = 0;
	if (str)
		err = load_string_keys(w, t, data, e);
	else
		load_int_keys(w, data, e);
	bool create = e->op == DE_OP_LOOKUP && (e->flags & DE_LOOKUP_CREATE);
	bool reads = e->op == DE_OP_LOOKUP && !create; /* checked after the read */
	/* a fingerprint of another key's string: no row of its own */
	if (str && !err && e->op == DE_OP_ERASE) {
		err = srv_table_check_erase_strings(t, w->keys, w->sbuf, w->slen, w->soff, n,
						    w->status, &bad);
		uint32_t m = 0; /* leave out the keys with nothing to erase */
		for (uint32_t i = 0; !err && i < n; i++)
			if (!w->status[i])
				w->keys[m++] = w->keys[i];
		n = m;
#ifdef DE_FAULT_INJECTION
		test_erase_delay(); /* widens the gap a create could race into */
#endif
	} else if (str && !err && !reads) {
		err = srv_table_check_strings(t, w->keys, w->sbuf, w->slen, w->soff, n, true,
					      &bad);
	}
	if (err) {
		q->res = err;
		q->count = err == -EEXIST ? bad : 0; /* which key (proto.h) */
		return 0;
	}
	if (e->op == DE_OP_APPLY_GRADS) {
		apply_grads(w, t, data, e, q);
		return 0;
	}
	float *vals = (float *)(void *)(data + e->vals_off);
	struct srv_batch b = batch_of(w, t, e, vals);
	b.n = n; /* an ERASE of strings: the keys left */
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
		return 0;
	}
	if (e->op == DE_OP_ERASE)
		return 0;
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
	return 0;
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
		if (__atomic_load_n(&w->active[i]->want_remove, __ATOMIC_ACQUIRE) &&
		    !w->active[i]->slow_busy) /* else once its job is done (the pool kicks) */
			release(w, i, false);
}

/* The next chunk of c->cur (an int64 LOOKUP or UPDATE larger than a slice, started) on
 * t: as many keys as *left allows (at least one). 1: keys remain; 0: done, *q is its
 * completion. */
static int chunk_run(struct srv_worker *w, struct srv_client *c, struct srv_table *t,
		     struct de_cqe *q, int64_t *left)
{
	const struct de_sqe *e = &c->cur;
	uint64_t per = (uint64_t)t->wcfg.dim + 1;
	uint64_t fit = *left > 0 ? (uint64_t)*left / per : 0;
	uint32_t n = e->count - c->cur_done;
	if (fit < 1)
		fit = 1;
	if (n > fit)
		n = (uint32_t)fit;
	uint32_t found = 0, created = 0;
	char *data = de_channel_data(c->ch, NULL);
	int err = e->op == DE_OP_UPDATE
			  ? update_range(w, t, data, e, c->cur_done, n,
					 c->cur_done + n == e->count, &created)
			  : lookup_range(w, t, data, e, c->cur_done, n, &found, &created);
	__atomic_fetch_add(&w->n_chunks, 1, __ATOMIC_RELAXED);
	*left -= (int64_t)(n * per);
	c->cur_done += n;
	c->cur_found += found;
	c->cur_created += created;
	if (!err && c->cur_done < e->count)
		return 1;
	c->has_cur = false;
	*q = (struct de_cqe){ .user_data = e->user_data, .res = err };
	if (!err && e->op == DE_OP_UPDATE)
		q->count = c->cur_created; /* as a whole UPDATE completes */
	else if (!err)
		*q = (struct de_cqe){ .user_data = e->user_data, .count = c->cur_found,
				      .aux0 = c->cur_created };
	return 0;
}

/*
 * Run e (popped, or c->cur) within what is left of c's slice: a large int64 LOOKUP or
 * UPDATE starts or continues in chunks, anything else runs whole. 0: done, *q is its
 * completion; 1: a chunked one goes on next pass (c->cur); 2: on the slow pool.
 */
static int step_run(struct srv_worker *w, struct srv_client *c, struct srv_table *t,
		    uint32_t nt, const struct de_sqe *e, struct de_cqe *q, int64_t *left);

/*
 * A write that failed -ENOSPC while the table's index refused an insert completes with
 * aux1 = the table's index_refusals (proto.h), so that the client can name the cause (a
 * refusal of another worker at the same moment may be taken for this one's).
 */
static int step(struct srv_worker *w, struct srv_client *c, const struct de_sqe *e,
		struct de_cqe *q, int64_t *left)
{
	/* acquire: pairs with the release in the control thread's OPEN */
	uint32_t nt = __atomic_load_n(&c->ntables, __ATOMIC_ACQUIRE);
	struct srv_table *t = slot_table(c, e->table, nt);
	uint64_t r0 = t ? de_table_index_refusals(t->t) : 0;
	bool cont = c->has_cur && c->cur_started; /* a chunked LOOKUP / UPDATE going on */
	uint64_t t0 = srv_mono_ns();
	int st = step_run(w, c, t, nt, e, q, left);
	if (!st && t && q->res == -ENOSPC && e->op != DE_OP_KEY_STRINGS) {
		uint64_t r1 = de_table_index_refusals(t->t);
		if (r1 > r0)
			q->aux1 = r1;
	}
	if (t && !st)
		count_op(t, e->op, e->count, q->res, cont ? c->cur_t0 : t0);
	else if (st == 1 && !cont)
		c->cur_t0 = t0;
	else if (st == 2)
		c->slow_t0 = t0;
	return st;
}

static int step_run(struct srv_worker *w, struct srv_client *c, struct srv_table *t,
		    uint32_t nt, const struct de_sqe *e, struct de_cqe *q, int64_t *left)
{
	if (c->has_cur && c->cur_started && (!t || t->wcfg.dim != c->cur_dim)) {
		/* its table was dropped (forced) meanwhile, or its slot holds another version */
		c->has_cur = false;
		*q = (struct de_cqe){ .user_data = e->user_data, .res = -EIDRM };
		return 0;
	}
	if (c->has_cur && c->cur_started)
		return chunk_run(w, c, t, q, left); /* checked when it started */
	c->has_cur = false;
	uint64_t cost = cost_of(e, t);
	if ((e->op == DE_OP_LOOKUP || e->op == DE_OP_UPDATE) && t &&
	    t->wcfg.key_type == DE_KEYS_INT64 && cost > (uint64_t)*left &&
	    !(w->srv->peers && !c->internal && sharded(w, t))) {
		uint64_t bytes;
		de_channel_data(c->ch, &bytes);
		*q = (struct de_cqe){ .user_data = e->user_data };
		q->res = srv_check_sqe(e, nt, t->wcfg.dim, t->wcfg.key_type,
				       w->srv->cfg.max_batch, bytes);
		if (q->res || (q->res = write_right(c, t, e)))
			return 0;
		c->cur = *e;
		c->has_cur = c->cur_started = true;
		c->cur_dim = t->wcfg.dim;
		c->cur_done = c->cur_found = c->cur_created = 0;
		return chunk_run(w, c, t, q, left);
	}
	*left -= cost > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)cost;
	return execute(w, c, e, q);
}

/*
 * Serve one client for a pass. Returns 1 if it did work, 0 if not, -EBADMSG if the
 * client broke its channel.
 */
static int serve(struct srv_worker *w, struct srv_client *c)
{
	int work = 0, r;
	if (c->slow_busy) {
		/* acquire: pairs with the release in slowpool.c's run_job (slow_q, the data) */
		if (!__atomic_load_n(&c->slow_done, __ATOMIC_ACQUIRE))
			return 0; /* nothing else of c runs while its job is out */
		count_op(c->slow_t, c->slow_e.op, c->slow_e.count, c->slow_q.res,
			 c->slow_t0);
		/* release: the last use of slow_t above happens before; pairs with the acquire
		 * in srv_workers_slow_on (a forced DROP frees the table after it) */
		__atomic_store_n(&c->slow_busy, false, __ATOMIC_RELEASE);
		/* after the completions held before it (at most BUDGET - 1 of them) */
		c->pending[c->npending++] = c->slow_q;
		c->has_pending = true;
	}
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
	int64_t left = PASS_WORK; /* c's slice of this pass ("Fairness" at the top) */
	for (int i = 0; i < BUDGET && left > 0; i++) {
		struct de_sqe e;
		if (c->has_cur) {
			e = c->cur;
		} else {
			r = de_channel_pop(c->ch, &e);
			if (r == -EAGAIN)
				break;
			if (r) {
				bad = true;
				break;
			}
			if (i > 0) { /* too large for what is left: first thing next pass */
				uint32_t nt = __atomic_load_n(&c->ntables, __ATOMIC_ACQUIRE);
				if (cost_of(&e, slot_table(c, e.table, nt)) >
				    (uint64_t)left) {
					c->cur = e;
					c->has_cur = true;
					c->cur_started = false;
					work = 1;
					break;
				}
			}
		}
		work = 1;
		w->sync_pending = false;
		int st = step(w, c, &e, &q[nq], &left);
		if (st)
			break; /* c->cur goes on next pass, or the slow pool has it */
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

/* A wake of c's channel that brought no work ("Wake storms" at the top). */
static void empty_wake(struct srv_worker *w, struct srv_client *c)
{
	__atomic_fetch_add(&w->n_empty_wakes, 1, __ATOMIC_RELAXED);
	if (++c->empty_wakes < EMPTY_WAKES_MAX)
		return;
	c->empty_wakes = 0;
	c->backoff_ms = c->backoff_ms ? 2 * c->backoff_ms : BACKOFF_MIN_MS;
	if (c->backoff_ms > BACKOFF_MAX_MS)
		c->backoff_ms = BACKOFF_MAX_MS;
	c->backoff_until = srv_mono_ns() + (uint64_t)c->backoff_ms * 1000000ull;
	uint64_t n = __atomic_add_fetch(&w->n_backoffs, 1, __ATOMIC_RELAXED);
	if (log_due(&w->last_storm_log))
		srv_log(SRV_LOG_WARN,
			"client %u (pid %d, '%s'): %u wakes in a row brought no work: its wakes "
			"are ignored for %u ms, its channel polled every %d ms meanwhile (%" PRIu64
			" back-offs on worker %u so far)", c->id, (int)c->pid, c->name,
			EMPTY_WAKES_MAX, c->backoff_ms, SLOW_POLL_MS, n, w->idx);
}

/* One pass over every client. *pending: some client still has a completion waiting, or
 * a job on the slow pool. */
static bool pass(struct srv_worker *w, bool *pending)
{
	bool work = false;
	*pending = false;
	for (unsigned i = w->nactive; i-- > 0;) {
		struct srv_client *c = w->active[i];
		int r = serve(w, c);
		if (c->woke) {
			c->woke = false;
			if (r > 0) {
				c->empty_wakes = 0;
				c->backoff_ms /= 2;
			} else if (r == 0) {
				empty_wake(w, c);
			}
		}
		if (r < 0) {
			srv_log(SRV_LOG_WARN, "client %u broke its channel: dropping it", c->id);
			release(w, i, true);
			continue;
		}
		work |= r > 0;
		*pending |= c->has_pending || c->slow_busy;
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
/* Set NEED_WAKEUP everywhere and sleep unless something arrived meanwhile. A client
 * with completions waiting is retried every PENDING_RETRY_MS; one with a job on the slow
 * pool is left out (the pool kicks the worker); a backed-off one is polled every
 * SLOW_POLL_MS. A client channel whose word moved is marked woke (the next pass tells
 * whether the wake brought work). */
static void sleep_until_work(struct srv_worker *w, bool pending)
{
	de_channel *chs[DE_CHANNELS_WAIT_MAX];
	struct srv_client *who[DE_CHANNELS_WAIT_MAX];
	unsigned n = 0;
	bool ready = false;
	int timeout = -1;
	uint64_t now = srv_mono_ns();
	who[n] = NULL;
	chs[n++] = w->ctl;
	if (de_channel_sleep_prepare(w->ctl) != 0)
		ready = true;
	for (unsigned i = w->nactive; i-- > 0 && !ready;) {
		struct srv_client *c = w->active[i];
		if (c->has_pending) {
			timeout = PENDING_RETRY_MS;
			continue; /* retried on the timeout below */
		}
		if (c->slow_busy)
			continue;
		if (c->backoff_until && now < c->backoff_until) {
			if (timeout < 0 || timeout > SLOW_POLL_MS)
				timeout = SLOW_POLL_MS;
			continue;
		}
		c->backoff_until = 0;
		int r = de_channel_sleep_prepare(c->ch);
		who[n] = c;
		chs[n++] = c->ch;
		if (r)
			ready = true; /* a submission, or broken: the next pass sees it */
	}
	if (pending && (timeout < 0 || timeout > PENDING_RETRY_MS))
		timeout = PENDING_RETRY_MS;
	if (!ready) {
		int r = de_channels_wait(chs, n, timeout);
		for (unsigned i = 1; r == 0 && i < n; i++)
			if (de_channel_woken(chs[i]))
				who[i]->woke = true;
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
		/* the top of a round: no table pointer held (worker.h "Revoked handles");
		 * acquire pairs with the release in the forced DROP's bump, release with the
		 * acquire in srv_workers_quiesce */
		uint64_t g = __atomic_load_n(&s->revoke_gen, __ATOMIC_ACQUIRE);
		if (g != __atomic_load_n(&w->revoke_seen, __ATOMIC_RELAXED))
			__atomic_store_n(&w->revoke_seen, g, __ATOMIC_RELEASE);
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
		/* busy-poll again only once a pass finds work: a wake that brought none (a
		 * client bumping its word) costs one pass, not poll_us of spinning */
		last_work = srv_mono_ns() - poll_ns;
	}
	/* Hand every client back (the control thread frees them after the join), once the
	 * slow pool is done with their jobs: a job writes into its client's channel. */
	for (unsigned i = 0; i < w->nactive; i++)
		while (w->active[i]->slow_busy &&
		       !__atomic_load_n(&w->active[i]->slow_done, __ATOMIC_ACQUIRE))
			usleep(1000);
	while (w->nactive)
		release(w, w->nactive - 1, false);
	return NULL;
}

/* ---- lifecycle ---------------------------------------------------------------------- */

int srv_workers_quiesce(struct srv_server *s, uint64_t gen, unsigned timeout_ms)
{
	for (unsigned i = 0; i < s->nworkers; i++)
		if (s->workers[i].started)
			srv_worker_kick(&s->workers[i]);
	uint64_t deadline = srv_mono_ns() + (uint64_t)timeout_ms * 1000000ull;
	for (unsigned i = 0; i < s->nworkers; i++) {
		struct srv_worker *w = &s->workers[i];
		/* acquire: pairs with the worker's release at the top of its round */
		while (w->started && __atomic_load_n(&w->revoke_seen, __ATOMIC_ACQUIRE) < gen) {
			if (srv_mono_ns() > deadline)
				return -ETIMEDOUT;
			srv_worker_kick(w); /* a kick it drained before the bump */
			usleep(200);
		}
	}
	return 0;
}

bool srv_workers_slow_on(const struct srv_client *clients, const struct srv_table *t)
{
	for (const struct srv_client *k = clients; k; k = k->next)
		/* acquire: pairs with the worker's release once it is done with slow_t */
		if (__atomic_load_n(&k->slow_busy, __ATOMIC_ACQUIRE) &&
		    __atomic_load_n(&k->slow_t, __ATOMIC_RELAXED) == t)
			return true;
	return false;
}

void srv_worker_kick(struct srv_worker *w)
{
	struct de_sqe nop = { .op = DE_OP_NOP };
	pthread_mutex_lock(&w->kick_mu);
	/* -EAGAIN: the ring is full of kicks the worker has not popped: it will wake */
	de_channel_submit(w->ctl_kick, &nop);
	pthread_mutex_unlock(&w->kick_mu);
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
		pthread_mutex_init(&s->workers[i].mu, NULL);
		pthread_mutex_init(&s->workers[i].kick_mu, NULL);
	}
	/* one thread: TOPK and SAMPLE queue behind each other, never behind a lookup */
	int perr = srv_slowpool_start(s, 1, false, &s->slow);
	if (perr)
		srv_log(SRV_LOG_WARN, "no top-k / sampling pool (%s): the workers run them",
			strerror(-perr));
	/* [peers]: the descriptors with remote keys go to the forwarding pool */
	if (s->peers && (perr = srv_slowpool_start(s, cfg->peer_threads, true, &s->fwd)))
		return perr; /* logged */
	for (unsigned i = 0; i < s->nworkers; i++) {
		struct srv_worker *w = &s->workers[i];
		w->idx = i;
		w->srv = s;
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
	srv_slowpool_stop(s->slow); /* after the workers: they waited for their jobs */
	s->slow = NULL;
	srv_slowpool_stop(s->fwd);
	s->fwd = NULL;
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
		pthread_mutex_destroy(&w->kick_mu);
	}
	srv_slowpool_stop(s->slow);
	s->slow = NULL;
	srv_slowpool_stop(s->fwd);
	s->fwd = NULL;
	free(s->workers);
	s->workers = NULL;
	s->nworkers = 0;
}
