/*
 * worker.c — the soak's well-behaved clients: the workers (mixed lookups, updates,
 * gradients, erases, sampling and top-k, every row read checked against the oracle) and
 * the snapshotter. Each runs in its own process until the driver SIGKILLs it.
 *
 * Worker `slot` owns the keys i with i % workers == slot in every table and is the only
 * writer of their oracle entries (soak.h: sent before the request, acked after the
 * acknowledgement); it reads any key. A call that fails while the driver says the daemon
 * is up (soak_shared.down == 0) is a violation; while it is down the process waits to be
 * killed.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../mix.h"
#include "soak.h"

#define CHANNEL_BYTES (2u << 20) /* data area per worker: enough for SOAK_MAX_BATCH */

struct wk {
	const struct soak_ctx *x;
	unsigned slot;
	uint64_t seed, step;
	dynemb_client *c;
	int h[SOAK_NTABLES];
	char who[32];
	uint64_t zc_local;
};

static uint64_t rnd(struct wk *w) { return mix(w->seed++); }

/* A failed call: expected while the daemon is being killed (wait for our own kill),
 * else a violation (and this process exits: the driver counts it and starts another). */
__attribute__((noreturn)) static void failed(struct wk *w, const char *what, int t, int err)
{
	if (!atomic_load(&w->x->sh->down)) {
		usleep(100000); /* a kill that is just starting sets down first: look again */
		if (!atomic_load(&w->x->sh->down)) {
			soak_violation(w->x, "%s: %s%s%s failed while dynembd ran: %s (%d)", w->who,
				       what, t >= 0 ? " on " : "", t >= 0 ? soak_table_names[t] : "",
				       dynemb_strerror(err), err);
			_exit(1);
		}
	}
	for (;;)
		pause();
}

/* n distinct keys owned by this worker (n <= what it owns) */
static uint32_t owned_batch(struct wk *w, uint32_t *idx, uint32_t n)
{
	uint32_t workers = w->x->o.workers, keys = w->x->o.keys;
	uint32_t mine = (keys - w->slot + workers - 1) / workers;
	if (n > mine)
		n = mine;
	for (uint32_t j = 0; j < n; j++) {
		bool dup;
		do {
			idx[j] = w->slot + (uint32_t)(rnd(w) % mine) * workers;
			dup = false;
			for (uint32_t q = 0; q < j; q++)
				dup |= idx[q] == idx[j];
		} while (dup);
	}
	return n;
}

static void put(struct wk *w, int t)
{
	uint32_t idx[SOAK_MAX_BATCH], ver[SOAK_MAX_BATCH];
	uint64_t keys[SOAK_MAX_BATCH];
	float vals[SOAK_MAX_BATCH * SOAK_DIM];
	uint32_t n = owned_batch(w, idx, 1 + (uint32_t)(rnd(w) % 16));
	for (uint32_t j = 0; j < n; j++) {
		struct soak_key *k = soak_key(w->x, t, idx[j]);
		ver[j] = atomic_load(&k->sent) + 1;
		atomic_store_explicit(&k->sent, ver[j], memory_order_release);
		keys[j] = oracle_key(t, idx[j]);
		oracle_put_row(t, idx[j], ver[j], vals + (size_t)j * SOAK_DIM);
	}
	int err = dynemb_update(w->c, w->h[t], keys, n, vals, ++w->step, NULL);
	if (err)
		failed(w, "dynemb_update", t, err);
	for (uint32_t j = 0; j < n; j++)
		atomic_store_explicit(&soak_key(w->x, t, idx[j])->acked, ver[j],
				      memory_order_release);
	soak_add(w->x, C_UPDATE_CALLS, 1);
	soak_add(w->x, C_UPDATE_KEYS, n);
}

static void grads(struct wk *w)
{
	uint32_t idx[SOAK_MAX_BATCH];
	uint64_t keys[SOAK_MAX_BATCH];
	float g[SOAK_MAX_BATCH * SOAK_DIM], unit[SOAK_DIM];
	uint32_t n = owned_batch(w, idx, 1 + (uint32_t)(rnd(w) % 16));
	uint32_t m = 1 + (uint32_t)(rnd(w) % 3); /* units in this step */
	for (uint32_t j = 0; j < n; j++) {
		struct soak_key *k = soak_key(w->x, T_SGD, idx[j]);
		atomic_store_explicit(&k->sent, atomic_load(&k->sent) + m, memory_order_release);
		keys[j] = oracle_key(T_SGD, idx[j]);
		oracle_sgd_unit(idx[j], unit);
		for (uint32_t d = 0; d < SOAK_DIM; d++)
			g[(size_t)j * SOAK_DIM + d] = (float)m * unit[d];
	}
	size_t applied = 0;
	int err = dynemb_apply_gradients(w->c, w->h[T_SGD], keys, n, g, ++w->step, 0.0, &applied);
	if (err)
		failed(w, "dynemb_apply_gradients", T_SGD, err);
	if (applied != n)
		soak_violation(w->x, "%s: dynemb_apply_gradients stepped %zu keys of %u distinct",
			       w->who, applied, n);
	for (uint32_t j = 0; j < n; j++) {
		struct soak_key *k = soak_key(w->x, T_SGD, idx[j]);
		atomic_store_explicit(&k->acked, atomic_load(&k->acked) + m, memory_order_release);
	}
	soak_add(w->x, C_GRAD_CALLS, 1);
	soak_add(w->x, C_GRAD_KEYS, n);
}

static bool may_create(int t) { return t == T_SGD || t == T_NONE || t == T_EVICT; }

static void lookups(struct wk *w)
{
	int t = (int)(rnd(w) % SOAK_NTABLES);
	uint32_t n = 1 + (uint32_t)(rnd(w) % SOAK_MAX_BATCH), idx[SOAK_MAX_BATCH];
	uint32_t lo[SOAK_MAX_BATCH];
	uint64_t keys[SOAK_MAX_BATCH];
	float vals[SOAK_MAX_BATCH * SOAK_DIM];
	uint8_t st[SOAK_MAX_BATCH];
	unsigned flags = may_create(t) && rnd(w) % 2 ? 0 : DYNEMB_READONLY;
	bool strict = t == T_SYNC || t == T_SGD; /* a lower bound holds across kills */
	for (uint32_t j = 0; j < n; j++) {
		idx[j] = (uint32_t)(rnd(w) % w->x->o.keys);
		keys[j] = oracle_key(t, idx[j]);
		struct soak_key *k = soak_key(w->x, t, idx[j]);
		lo[j] = strict ? atomic_load_explicit(&k->acked, memory_order_acquire) : 0;
		if (!flags)
			atomic_store(&k->touched, 1);
	}
	int err = dynemb_lookup(w->c, w->h[t], keys, n, vals, st, flags, ++w->step);
	if (err)
		failed(w, "dynemb_lookup", t, err);
	for (uint32_t j = 0; j < n; j++) {
		uint32_t hi = atomic_load_explicit(&soak_key(w->x, t, idx[j])->sent,
						   memory_order_acquire);
		if (flags && st[j] == DYNEMB_ST_CREATED)
			soak_violation(w->x, "%s: a read-only lookup of %s key %u created it", w->who,
				       soak_table_names[t], idx[j]);
		oracle_check(w->x, w->who, t, idx[j], st[j], vals + (size_t)j * SOAK_DIM, lo[j], hi);
	}
	uint64_t local, remote;
	dynemb_zero_copy_counts(w->c, &local, &remote);
	soak_add(w->x, C_ZERO_COPY_KEYS, local - w->zc_local);
	w->zc_local = local;
	soak_add(w->x, C_LOOKUP_CALLS, 1);
	soak_add(w->x, C_LOOKUP_KEYS, n);
	soak_add(w->x, C_ROWS_CHECKED, n);
}

static void erase(struct wk *w)
{
	uint32_t idx[SOAK_MAX_BATCH];
	uint64_t keys[SOAK_MAX_BATCH];
	uint32_t n = owned_batch(w, idx, 1 + (uint32_t)(rnd(w) % 4));
	for (uint32_t j = 0; j < n; j++)
		keys[j] = oracle_key(T_EVICT, idx[j]);
	size_t erased = 0;
	int err = dynemb_erase(w->c, w->h[T_EVICT], keys, n, &erased);
	if (err)
		failed(w, "dynemb_erase", T_EVICT, err);
	if (erased > n)
		soak_violation(w->x, "%s: dynemb_erase of %u keys erased %zu", w->who, n, erased);
	soak_add(w->x, C_ERASE_CALLS, 1);
}

static void sample(struct wk *w)
{
	static const int ts[] = { T_SYNC, T_SGD, T_NONE };
	int t = ts[rnd(w) % 3];
	struct dynemb_sample_spec s = { .kind = (enum dynemb_sampler)(rnd(w) % 3),
					.num_sampled = 1 + (uint32_t)(rnd(w) % 16),
					.seed = rnd(w) };
	uint64_t pos[2] = { oracle_key(t, (uint32_t)(rnd(w) % w->x->o.keys)),
			    oracle_key(t, (uint32_t)(rnd(w) % w->x->o.keys)) };
	uint64_t got[16];
	float se[16], te[2];
	int err = dynemb_sample(w->c, w->h[t], &s, pos, 2, got, se, te, NULL);
	if (err == -ENOENT) /* no live key yet (or none in the rebuilt snapshot) */
		return;
	if (err)
		failed(w, "dynemb_sample", t, err);
	for (uint32_t j = 0; j < s.num_sampled; j++) {
		if (oracle_index(t, got[j]) < 0)
			soak_violation(w->x, "%s: dynemb_sample on %s drew key %#" PRIx64 ", which no"
					     " one wrote", w->who, soak_table_names[t], got[j]);
		if (!(se[j] > 0.0f) || se[j] > (float)s.num_sampled * 1.0001f)
			soak_violation(w->x, "%s: dynemb_sample on %s: expected count %g of a drawn"
					     " key is outside (0, %u]", w->who, soak_table_names[t],
				       (double)se[j], s.num_sampled);
	}
	soak_add(w->x, C_SAMPLE_CALLS, 1);
}

static void topk(struct wk *w)
{
	float q[SOAK_DIM], scores[4];
	uint64_t keys[4];
	uint32_t found = 0;
	for (uint32_t d = 0; d < SOAK_DIM; d++)
		q[d] = (float)((int)(rnd(w) % 9) - 4);
	int err = dynemb_topk(w->c, w->h[T_SYNC], q, 1, 4, DYNEMB_METRIC_DOT, keys, scores, &found);
	if (err)
		failed(w, "dynemb_topk", T_SYNC, err);
	if (found > 4)
		soak_violation(w->x, "%s: dynemb_topk found %u of k = 4", w->who, found);
	for (uint32_t j = 0; j < found && j < 4; j++)
		if (oracle_index(T_SYNC, keys[j]) < 0)
			soak_violation(w->x, "%s: dynemb_topk on soak_sync gave key %#" PRIx64
					     ", which no one wrote", w->who, keys[j]);
	soak_add(w->x, C_TOPK_CALLS, 1);
}

void soak_worker(const struct soak_ctx *x, unsigned slot, uint64_t seed)
{
	struct wk w = { .x = x, .slot = slot, .seed = seed };
	snprintf(w.who, sizeof w.who, "worker %u", slot);
	soak_add(x, C_WORKER_STARTS, 1);
	int err = soak_connect(x, w.who, CHANNEL_BYTES, &w.c);
	if (err)
		failed(&w, "dynemb_connect", -1, err);
	for (int t = 0; t < SOAK_NTABLES; t++)
		if ((err = soak_open(w.c, t, &w.h[t])))
			failed(&w, "dynemb_open", t, err);
	for (;;) {
		unsigned r = (unsigned)(rnd(&w) % 100);
		if (r < 15)
			put(&w, T_SYNC);
		else if (r < 35)
			put(&w, (int)(T_ASYNC + rnd(&w) % 3)); /* async, none, evict */
		else if (r < 55)
			grads(&w);
		else if (r < 88)
			lookups(&w);
		else if (r < 92)
			erase(&w);
		else if (r < 97)
			sample(&w);
		else
			topk(&w);
		usleep(200); /* a soak, not a benchmark: leave the cores some air */
	}
}

void soak_snapshotter(const struct soak_ctx *x, uint64_t seed)
{
	struct wk w = { .x = x, .seed = seed };
	snprintf(w.who, sizeof w.who, "snapshotter");
	int err = soak_connect(x, w.who, 0, &w.c);
	if (err)
		failed(&w, "dynemb_connect", -1, err);
	for (;;) {
		usleep((useconds_t)(200000 + rnd(&w) % 1500000));
		struct dynemb_snapshot_result res;
		bool full = rnd(&w) % 2;
		err = dynemb_snapshot(w.c, NULL, full, NULL, NULL, &res);
		if (err)
			failed(&w, full ? "dynemb_snapshot (full)" : "dynemb_snapshot", -1, err);
		soak_add(x, C_SNAPSHOTS, 1);
	}
}
