/*
 * test_evict.c — eviction (src/learn/evict.c) and the disk tier (tier.c) at the library
 * level, against references written here: an exact LRU and an exact LFU simulation of a
 * Zipf(1.0) stream, a sort for the L2 policy, a model of which rows a TTL keeps, the
 * arena's used bytes for memory (measured independently of the evictor's accounting),
 * and snapshots of full rows (values, slots, metadata) for the tier round trip.
 */
#ifdef DE_MINI_CRITERION
#include "../mini_criterion.h" /* ThreadSanitizer build: see that header */
#else
#include <criterion/criterion.h>
#endif

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "de_learn.h"
#include "../test_util.h"

struct tab {
	de_arena *a;
	de_table *t;
};

static struct tab mk_table(uint32_t dim, uint32_t nslots)
{
	struct de_arena_config ac = { .reserve_bytes = 1ull << 30, .segment_bytes = 8 << 20,
				      .max_segment_bytes = 32 << 20, .pages = DE_PAGES_SMALL,
				      .numa_node = DE_NUMA_NONE };
	struct tab x;
	cr_assert_eq(de_arena_create(&ac, &x.a), 0);
	struct de_table_config tc = { .dim = dim, .nslots = nslots, .init = DE_INIT_UNIFORM,
				      .init_a = -1, .init_b = 1, .seed = 42 };
	cr_assert_eq(de_table_open(x.a, &tc, &x.t), 0);
	return x;
}

static void rm_table(struct tab x)
{
	de_table_close(x.t);
	de_arena_destroy(x.a);
}

static uint64_t live_keys(de_table *t)
{
	struct de_table_stats s;
	cr_assert_eq(de_table_stats(t, &s), 0);
	return s.keys;
}

static de_evict *mk_ev(struct de_evict_config c)
{
	de_evict *ev = NULL;
	int err = de_evict_create(&c, &ev);
	cr_assert_eq(err, 0, "de_evict_create %d", err);
	return ev;
}

static uint32_t add(de_evict *ev, struct tab x, struct de_evict_table_config c)
{
	uint32_t id;
	int err = de_evict_add_table(ev, x.t, x.a, &c, &id);
	cr_assert_eq(err, 0, "de_evict_add_table %d", err);
	return id;
}

/* ---- exact reference caches ---------------------------------------------------------- */

/* LRU: a doubly linked list over key ranks (0..U-1), most recent at the head. */
struct lru {
	uint32_t *prev, *next;
	uint8_t *in;
	uint32_t head, tail, n, cap;
};
#define NIL UINT32_MAX

static void lru_init(struct lru *l, uint32_t U, uint32_t cap)
{
	l->prev = xcalloc(U, 4);
	l->next = xcalloc(U, 4);
	l->in = xcalloc(U, 1);
	l->head = l->tail = NIL;
	l->n = 0;
	l->cap = cap;
}

static void lru_unlink(struct lru *l, uint32_t k)
{
	if (l->prev[k] != NIL) l->next[l->prev[k]] = l->next[k]; else l->head = l->next[k];
	if (l->next[k] != NIL) l->prev[l->next[k]] = l->prev[k]; else l->tail = l->prev[k];
}

static bool lru_access(struct lru *l, uint32_t k)
{
	bool hit = l->in[k];
	if (hit) {
		lru_unlink(l, k);
	} else {
		if (l->n == l->cap) {
			uint32_t v = l->tail;
			lru_unlink(l, v);
			l->in[v] = 0;
			l->n--;
		}
		l->in[k] = 1;
		l->n++;
	}
	l->prev[k] = NIL;
	l->next[k] = l->head;
	if (l->head != NIL) l->prev[l->head] = k;
	l->head = k;
	if (l->tail == NIL) l->tail = k;
	return hit;
}

static void lru_free(struct lru *l)
{
	free(l->prev);
	free(l->next);
	free(l->in);
}

/* LFU: min-heap on (count since insertion, last access), positions per rank. */
struct lfu {
	uint32_t *heap, *pos, *cnt;
	uint64_t *last;
	uint32_t n, cap;
	uint64_t clock;
};

static bool lfu_less(const struct lfu *f, uint32_t a, uint32_t b)
{
	return f->cnt[a] != f->cnt[b] ? f->cnt[a] < f->cnt[b] : f->last[a] < f->last[b];
}

static void lfu_swap(struct lfu *f, uint32_t i, uint32_t j)
{
	uint32_t t = f->heap[i];
	f->heap[i] = f->heap[j];
	f->heap[j] = t;
	f->pos[f->heap[i]] = i;
	f->pos[f->heap[j]] = j;
}

static void lfu_down(struct lfu *f, uint32_t i)
{
	for (;;) {
		uint32_t l = 2 * i + 1, r = l + 1, m = i;
		if (l < f->n && lfu_less(f, f->heap[l], f->heap[m])) m = l;
		if (r < f->n && lfu_less(f, f->heap[r], f->heap[m])) m = r;
		if (m == i) return;
		lfu_swap(f, i, m);
		i = m;
	}
}

static void lfu_up(struct lfu *f, uint32_t i)
{
	while (i && lfu_less(f, f->heap[i], f->heap[(i - 1) / 2])) {
		lfu_swap(f, i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
}

static void lfu_init(struct lfu *f, uint32_t U, uint32_t cap)
{
	f->heap = xcalloc(cap, 4);
	f->pos = xcalloc(U, 4);
	f->cnt = xcalloc(U, 4);
	f->last = xcalloc(U, 8);
	for (uint32_t i = 0; i < U; i++) f->pos[i] = NIL;
	f->n = 0;
	f->cap = cap;
	f->clock = 0;
}

static bool lfu_access(struct lfu *f, uint32_t k)
{
	f->last[k] = ++f->clock;
	if (f->pos[k] != NIL) {
		f->cnt[k]++;
		lfu_down(f, f->pos[k]);
		return true;
	}
	if (f->n == f->cap) { /* evict the minimum */
		uint32_t v = f->heap[0];
		f->pos[v] = NIL;
		f->heap[0] = f->heap[--f->n];
		f->pos[f->heap[0]] = 0;
		lfu_down(f, 0);
	}
	f->cnt[k] = 0; /* the table's freq starts at 0 when a row is created */
	f->heap[f->n] = k;
	f->pos[k] = f->n++;
	lfu_up(f, f->pos[k]);
	return false;
}

static void lfu_free(struct lfu *f)
{
	free(f->heap);
	free(f->pos);
	free(f->cnt);
	free(f->last);
}

/* ---- the Zipf budget test ------------------------------------------------------------ */

/* Ranks 0..U-1 with P(r) ~ 1/(r+1): inverse CDF by binary search. */
static uint32_t *zipf_stream(uint32_t U, size_t len, uint64_t seed)
{
	double *cdf = xcalloc(U, sizeof(double));
	double acc = 0;
	for (uint32_t r = 0; r < U; r++)
		cdf[r] = acc += 1.0 / (r + 1);
	uint32_t *out = xcalloc(len, 4);
	for (size_t i = 0; i < len; i++) {
		double u = (double)(rng_next(&seed) >> 11) * 0x1.0p-53 * acc;
		uint32_t lo = 0, hi = U - 1;
		while (lo < hi) {
			uint32_t mid = (lo + hi) / 2;
			if (cdf[mid] < u) lo = mid + 1; else hi = mid;
		}
		out[i] = lo;
	}
	free(cdf);
	return out;
}

static void zipf_budget(enum de_evict_policy pol)
{
	const uint32_t dim = 32, nslots = 2, B = 64, HOT = 1000;
	const uint64_t budget = 48ull << 20, row_cost = 4 * dim * (1 + nslots) + 32;
	const uint32_t U = (uint32_t)(10 * budget / row_cost); /* 10x the rows the budget holds */
	const size_t len = 39063 * 64; /* whole batches of B */
	struct tab x = mk_table(dim, nslots);
	de_evict *ev = mk_ev((struct de_evict_config){ .seed = 9 });
	uint32_t id = add(ev, x, (struct de_evict_table_config){ .budget_bytes = budget,
								 .policy = pol });
	uint32_t *ranks = zipf_stream(U, len, 1234);
	uint64_t keys[64];
	uint8_t st[64];
	float *out = xcalloc(B * dim, 4);
	uint64_t max_used = 0, hot_n = 0, hot_hit = 0, all_hit = 0, live_sum = 0, live_n = 0;
	bool evicting = false;
	for (size_t i = 0; i < len; i += B) {
		uint64_t step = i / B + 1;
		for (uint32_t j = 0; j < B; j++)
			keys[j] = mix64((uint64_t)ranks[i + j] + 1);
		cr_assert_eq(de_table_find_or_insert(x.t, keys, B, out, st, step), 0);
		de_evict_set_step(ev, step);
		cr_assert_eq(de_evict_after_lookup(ev, id, keys, B, st, out, step, NULL), 0);
		if (i >= len / 2) {
			for (uint32_t j = 0; j < B; j++) {
				bool hit = st[j] == DE_FOUND;
				all_hit += hit;
				if (ranks[i + j] < HOT) {
					hot_n++;
					hot_hit += hit;
				}
			}
			if (step % 16 == 0) {
				live_sum += live_keys(x.t);
				live_n++;
			}
		}
		if (!evicting) {
			struct de_evict_stats es;
			de_evict_stats(ev, id, &es);
			evicting = es.evicted > 0;
		}
		if (evicting && step % 64 == 0) {
			uint64_t used = de_arena_used_bytes(x.a);
			if (used > max_used)
				max_used = used;
		}
	}
	uint64_t used = de_arena_used_bytes(x.a);
	if (used > max_used)
		max_used = used;
	cr_assert(evicting);
	cr_assert_leq((double)max_used, 1.05 * (double)budget,
		      "arena used %lu > budget %lu + 5%%", max_used, budget);
	/* exact simulation with the table's mean occupancy as its capacity */
	uint32_t cap = (uint32_t)(live_sum / live_n);
	uint64_t ref_hot = 0, ref_all = 0;
	struct lru l = { 0 };
	struct lfu f;
	if (pol == DE_EVICT_LRU)
		lru_init(&l, U, cap);
	else
		lfu_init(&f, U, cap);
	for (size_t i = 0; i < len; i++) {
		bool hit = pol == DE_EVICT_LRU ? lru_access(&l, ranks[i]) : lfu_access(&f, ranks[i]);
		if (i >= len / 2) {
			ref_all += hit;
			if (ranks[i] < HOT)
				ref_hot += hit;
		}
	}
	double h = (double)hot_hit / hot_n, rh = (double)ref_hot / hot_n;
	double ha = (double)all_hit / (len / 2), ra = (double)ref_all / (len / 2);
	struct de_evict_stats es;
	de_evict_stats(ev, id, &es);
	cr_log_info("%s: U=%u keys, budget %lu B, arena max %lu B (%.2f%%), mean live %u; hot-%u hit "
		    "%.4f vs exact %.4f; all hit %.4f vs exact %.4f; evicted %lu, kept touched %lu\n",
		    pol == DE_EVICT_LRU ? "LRU" : "LFU", U, budget, max_used,
		    100.0 * max_used / budget, cap, HOT, h, rh, ha, ra, es.evicted, es.kept_touched);
	cr_assert_leq(fabs(h - rh), 0.05 * rh, "hot hit rate %.4f vs exact %.4f", h, rh);
	cr_assert_leq(fabs(ha - ra), 0.05 * ra, "hit rate %.4f vs exact %.4f", ha, ra);
	cr_assert_leq(es.resident_bytes, DE_EVICT_INLINE_OVER * budget);
	if (pol == DE_EVICT_LRU)
		lru_free(&l);
	else
		lfu_free(&f);
	free(ranks);
	free(out);
	de_evict_destroy(ev);
	rm_table(x);
}

Test(evict, zipf_lru_budget_and_hit_rate, .timeout = 600) { zipf_budget(DE_EVICT_LRU); }
Test(evict, zipf_lfu_budget_and_hit_rate, .timeout = 600) { zipf_budget(DE_EVICT_LFU); }

/* ---- TTL --------------------------------------------------------------------------- */

static uint64_t fake_now;
static uint64_t fake_clock(void *ctx)
{
	return *(uint64_t *)ctx;
}

static void ttl_case(enum de_evict_clock clk)
{
	const uint32_t N = 5000, dim = 4;
	const uint64_t ttl = 1000;
	struct tab x = mk_table(dim, 0);
	fake_now = 100000;
	de_evict *ev = mk_ev((struct de_evict_config){ .sweep_rows = 700, .clock = fake_clock,
						       .clock_ctx = &fake_now });
	uint32_t id = add(ev, x, (struct de_evict_table_config){ .policy = DE_EVICT_TTL,
								 .clock = clk, .ttl = ttl });
	/* key i last touched at t0 + i; then some old keys touched again at the end */
	const uint64_t t0 = 100000;
	uint64_t *last = xcalloc(N, 8);
	float out[4];
	uint8_t st;
	for (uint32_t i = 0; i < N; i++) {
		uint64_t k = i + 1, now = t0 + i;
		if (clk == DE_CLOCK_STEP)
			de_evict_set_step(ev, now);
		else
			fake_now = now;
		cr_assert_eq(de_evict_now(ev, id), now);
		cr_assert_eq(de_table_find_or_insert(x.t, &k, 1, out, &st, de_evict_now(ev, id)), 0);
		last[i] = now;
	}
	uint64_t end = t0 + N;
	for (uint32_t i = 0; i < N; i += 7) { /* re-touched: must survive */
		uint64_t k = i + 1;
		de_table_find_or_insert(x.t, &k, 1, out, &st, end);
		last[i] = end;
	}
	if (clk == DE_CLOCK_STEP)
		de_evict_set_step(ev, end);
	else
		fake_now = end;
	struct de_evict_stats es;
	for (int pass = 0; pass < 100; pass++) {
		cr_assert_eq(de_evict_step(ev, 0, NULL), 0);
		de_evict_stats(ev, id, &es);
		if (es.sweeps >= 2)
			break;
	}
	cr_assert_geq(es.sweeps, 2);
	uint64_t expect_gone = 0;
	for (uint32_t i = 0; i < N; i++) {
		uint64_t k = i + 1;
		de_table_find(x.t, &k, 1, out, &st);
		bool want = end - last[i] <= ttl;
		cr_assert_eq(st == DE_FOUND, want, "key %u last %lu now %lu", i, last[i], end);
		expect_gone += !want;
	}
	cr_assert_eq(es.expired, expect_gone);
	cr_assert_eq(es.evicted, expect_gone);
	free(last);
	de_evict_destroy(ev);
	rm_table(x);
}

Test(evict, ttl_steps) { ttl_case(DE_CLOCK_STEP); }
Test(evict, ttl_seconds_injected_clock) { ttl_case(DE_CLOCK_TIME); }

/* ---- L2 ------------------------------------------------------------------------------ */

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static void l2_case(uint32_t samples, double min_overlap)
{
	const uint32_t N = 2000, dim = 8, EV = 400;
	struct tab x = mk_table(dim, 0);
	de_evict *ev = mk_ev((struct de_evict_config){ .samples = samples, .pool = 32, .seed = 3 });
	uint64_t s = 77;
	double *norm = xcalloc(N, sizeof(double)), *sorted = xcalloc(N, sizeof(double));
	for (uint32_t i = 0; i < N; i++) {
		float v[8];
		double n2 = 0;
		for (uint32_t d = 0; d < dim; d++) {
			v[d] = (float)((double)(rng_next(&s) >> 11) * 0x1.0p-53 * 4 - 2);
			n2 += (double)v[d] * v[d];
		}
		uint64_t k = i + 1;
		cr_assert_eq(de_table_assign(x.t, &k, 1, v, NULL, 1), 0);
		norm[i] = sorted[i] = n2;
	}
	/* budget: the current resident bytes less EV rows (dim 8: 32 B of values, a 32 B
	 * stride below 64 B, + 32 B meta), low = high = 1: exactly EV rows go */
	de_evict_destroy(ev);
	ev = mk_ev((struct de_evict_config){ .samples = samples, .pool = 32, .seed = 3, .high = 1,
					     .low = 1 });
	uint32_t id = add(ev, x, (struct de_evict_table_config){ .policy = DE_EVICT_L2 });
	cr_assert_eq(de_evict_set_budget(ev, id, de_evict_resident(ev, id) - EV * 64ull), 0);
	size_t n = 0;
	cr_assert_eq(de_evict_step(ev, 0, &n), 0);
	cr_assert_eq(n, EV);
	qsort(sorted, N, sizeof(double), cmp_d);
	double cut = sorted[EV - 1];
	uint32_t in_smallest = 0, gone = 0;
	for (uint32_t i = 0; i < N; i++) {
		uint64_t k = i + 1;
		float out[8];
		uint8_t st;
		de_table_find(x.t, &k, 1, out, &st);
		if (st == DE_MISSING) {
			gone++;
			in_smallest += norm[i] <= cut;
		}
	}
	cr_assert_eq(gone, EV);
	cr_log_info("L2 samples=%u: %u of %u evicted rows are among the %u smallest norms\n",
		    samples, in_smallest, gone, EV);
	cr_assert_geq((double)in_smallest / EV, min_overlap);
	free(norm);
	free(sorted);
	de_evict_destroy(ev);
	rm_table(x);
}

/* samples >= rows: every row id is examined each round, so exactly the smallest go */
Test(evict, l2_exact_smallest_first) { l2_case(4096, 1.0); }
/* sampled: 16 random rows per round, pool 32 (the overlap a sampled policy reaches) */
Test(evict, l2_sampled_mostly_smallest) { l2_case(16, 0.8); }

/* ---- background thread, concurrent inserts ----------------------------------------- */

struct ins_arg {
	struct tab x;
	de_evict *ev;
	uint32_t id;
	uint64_t seed;
	bool inline_evict;
	int err;
};

static void *inserter(void *p)
{
	struct ins_arg *a = p;
	uint64_t keys[128];
	uint8_t st[128];
	float *out = malloc(128 * 16 * 4);
	for (int b = 0; b < 1500 && !a->err; b++) {
		for (int j = 0; j < 128; j++)
			keys[j] = mix64(rng_next(&a->seed) % 2000000 + 1);
		a->err = de_table_find_or_insert(a->x.t, keys, 128, out, st, (uint64_t)b);
		de_evict_set_step(a->ev, (uint64_t)b);
		if (!a->err && a->inline_evict)
			a->err = de_evict_after_lookup(a->ev, a->id, keys, 128, st, out, (uint64_t)b,
						       NULL);
	}
	free(out);
	return NULL;
}

Test(evict, background_thread_two_inserters, .timeout = 300)
{
	const uint64_t budget = 40ull << 20;
	struct tab x = mk_table(16, 1);
	de_evict *ev = mk_ev((struct de_evict_config){ .interval_ms = 1, .seed = 4 });
	uint32_t id = add(ev, x, (struct de_evict_table_config){ .budget_bytes = budget,
								 .policy = DE_EVICT_LRU });
	cr_assert_eq(de_evict_start(ev), 0);
	cr_assert_eq(de_evict_start(ev), -EALREADY);
	uint32_t id2;
	cr_assert_eq(de_evict_add_table(ev, x.t, x.a, &(struct de_evict_table_config){ .policy = DE_EVICT_LRU }, &id2),
		     -EBUSY);
	pthread_t th[2];
	struct ins_arg args[2] = { { x, ev, id, 1, true, 0 }, { x, ev, id, 2, true, 0 } };
	for (int i = 0; i < 2; i++)
		pthread_create(&th[i], NULL, inserter, &args[i]);
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	cr_assert_eq(args[0].err, 0);
	cr_assert_eq(args[1].err, 0);
	cr_assert_eq(de_evict_stop(ev), 0);
	cr_assert_eq(de_evict_stop(ev), 0);
	uint64_t used = de_arena_used_bytes(x.a);
	struct de_evict_stats es;
	de_evict_stats(ev, id, &es);
	cr_log_info("2 inserters + thread: 384000 lookups, arena used %lu of budget %lu (%.2f%%), "
		    "evicted %lu\n", used, budget, 100.0 * used / budget, es.evicted);
	cr_assert_gt(es.evicted, 0);
	cr_assert_leq((double)used, 1.05 * budget);
	cr_assert_leq(es.resident_bytes, DE_EVICT_INLINE_OVER * budget);
	de_evict_destroy(ev);
	rm_table(x);
}

/* The thread alone (no inline eviction) brings an over-budget table under its high mark. */
Test(evict, background_thread_alone, .timeout = 120)
{
	const uint64_t budget = 16ull << 20;
	struct tab x = mk_table(16, 1);
	de_evict *ev = mk_ev((struct de_evict_config){ .interval_ms = 1 });
	uint32_t id = add(ev, x, (struct de_evict_table_config){ .budget_bytes = budget,
								 .policy = DE_EVICT_LRU });
	struct ins_arg a = { x, ev, id, 5, false, 0 };
	inserter(&a);
	cr_assert_eq(a.err, 0);
	struct de_evict_stats es;
	de_evict_stats(ev, id, &es);
	cr_assert_gt(es.resident_bytes, budget);
	cr_assert_eq(de_evict_start(ev), 0);
	double t0 = now_s();
	do {
		usleep(2000);
		de_evict_stats(ev, id, &es);
	} while (es.resident_bytes > 0.98 * budget && now_s() - t0 < 60);
	cr_assert_leq(es.resident_bytes, 0.98 * budget);
	de_evict_destroy(ev); /* stops the thread */
	rm_table(x);
}

/* ---- host budget ----------------------------------------------------------------- */

Test(evict, host_budget_two_tables)
{
	const uint64_t host = 24ull << 20;
	struct tab x = mk_table(16, 0), y = mk_table(16, 2);
	de_evict *ev = mk_ev((struct de_evict_config){ .host_budget_bytes = host });
	uint32_t ix = add(ev, x, (struct de_evict_table_config){ .policy = DE_EVICT_LRU });
	uint32_t iy = add(ev, y, (struct de_evict_table_config){ .policy = DE_EVICT_LFU });
	uint64_t keys[256];
	uint8_t st[256];
	float *out = xcalloc(256 * 16, 4);
	uint64_t s = 8;
	for (int b = 0; b < 800; b++) {
		for (int j = 0; j < 256; j++)
			keys[j] = mix64(rng_next(&s) % 1000000 + 1);
		struct tab *t = b % 2 ? &y : &x;
		uint32_t id = b % 2 ? iy : ix;
		cr_assert_eq(de_table_find_or_insert(t->t, keys, 256, out, st, (uint64_t)b), 0);
		cr_assert_eq(de_evict_after_lookup(ev, id, keys, 256, st, out, (uint64_t)b, NULL), 0);
	}
	struct de_evict_stats h, sx, sy;
	de_evict_stats(ev, DE_EVICT_HOST, &h);
	de_evict_stats(ev, ix, &sx);
	de_evict_stats(ev, iy, &sy);
	uint64_t used = de_arena_used_bytes(x.a) + de_arena_used_bytes(y.a);
	cr_log_info("host budget %lu: arenas %lu (%.2f%%), resident x %lu y %lu, evicted x %lu y %lu\n",
		    host, used, 100.0 * used / host, sx.resident_bytes, sy.resident_bytes,
		    sx.evicted, sy.evicted);
	cr_assert_eq(h.budget_bytes, host);
	cr_assert_eq(h.resident_bytes, sx.resident_bytes + sy.resident_bytes);
	cr_assert_leq(h.resident_bytes, host);
	cr_assert_gt(sy.evicted, 0);
	/* each arena keeps its own peak (rows freed in one table are not reusable by the
	 * other), so the arenas' sum is bounded by the sum of the tables' peaks, not by the
	 * host budget: here x grew while y was cut back to its share (see de_learn.h) */
	cr_assert_leq((double)used, 1.3 * host);
	/* equal shares: neither table holds more than ~60% of the host budget */
	cr_assert_leq(sx.resident_bytes, 0.6 * host);
	cr_assert_leq(sy.resident_bytes, 0.6 * host);
	free(out);
	de_evict_destroy(ev);
	rm_table(x);
	rm_table(y);
}

/* ---- removing a table ------------------------------------------------------------- */

/* A table leaves while the thread evicts it and another table's lookups run host passes
 * over both: afterwards its memory is freed at once (ASan: nothing of the evictor reads
 * it again), its id is refused, the host totals count only the live table, and a new
 * table takes the free slot and is evicted. */
Test(evict, remove_table_while_passes_run, .timeout = 300)
{
	const uint64_t budget = 8ull << 20;
	struct tab x = mk_table(16, 1), y = mk_table(16, 1);
	de_evict *ev = mk_ev((struct de_evict_config){ .interval_ms = 1, .seed = 9,
						       .host_budget_bytes = 3 * budget });
	uint32_t ix = add(ev, x, (struct de_evict_table_config){ .budget_bytes = budget,
								 .policy = DE_EVICT_LRU });
	uint32_t iy = add(ev, y, (struct de_evict_table_config){ .budget_bytes = budget,
								 .policy = DE_EVICT_LFU });
	/* x over its budget before the thread starts: the thread has work on it at once */
	struct ins_arg ax = { x, ev, ix, 3, false, 0 };
	inserter(&ax);
	cr_assert_eq(ax.err, 0);
	cr_assert_eq(de_evict_start(ev), 0);
	pthread_t th;
	struct ins_arg ay = { y, ev, iy, 4, true, 0 }; /* inline: host passes over x and y */
	pthread_create(&th, NULL, inserter, &ay);
	struct de_evict_stats es;
	double t0 = now_s();
	do {
		usleep(500);
		cr_assert_eq(de_evict_stats(ev, ix, &es), 0);
	} while (!es.evicted && now_s() - t0 < 60);
	cr_assert_gt(es.evicted, 0, "the thread works on x");
	cr_assert_eq(de_evict_remove_table(ev, ix), 0);
	rm_table(x); /* freed while the thread and y's host passes go on */
	cr_expect_eq(de_evict_remove_table(ev, ix), -EINVAL, "removed twice");
	cr_expect_eq(de_evict_stats(ev, ix, &es), -EINVAL);
	cr_expect_eq(de_evict_set_budget(ev, ix, 1), -EINVAL);
	cr_expect_eq(de_evict_now(ev, ix), UINT64_MAX);
	cr_expect_eq(de_evict_inline(ev, ix), -EINVAL);
	cr_expect_eq(de_evict_table_step(ev, ix, 0, NULL), -EINVAL);
	pthread_join(th, NULL);
	cr_assert_eq(ay.err, 0, "y's lookups and inline passes: %s", strerror(-ay.err));
	struct de_evict_stats h, sy;
	cr_assert_eq(de_evict_stop(ev), 0);
	cr_assert_eq(de_evict_stats(ev, DE_EVICT_HOST, &h), 0);
	cr_assert_eq(de_evict_stats(ev, iy, &sy), 0);
	cr_expect_eq(h.resident_bytes, sy.resident_bytes, "the host counts the live table only");
	cr_expect_eq(h.evicted, sy.evicted);
	/* a new table takes the slot, and the evictor works on it */
	struct tab z = mk_table(16, 1);
	uint32_t iz = add(ev, z, (struct de_evict_table_config){ .budget_bytes = budget,
								 .policy = DE_EVICT_LRU });
	cr_expect_eq(iz, ix, "the free slot is reused");
	cr_assert_eq(de_evict_start(ev), 0);
	struct ins_arg az = { z, ev, iz, 5, true, 0 };
	inserter(&az);
	cr_assert_eq(az.err, 0);
	cr_assert_eq(de_evict_stats(ev, iz, &es), 0);
	cr_expect_gt(es.evicted, 0);
	cr_expect_leq(es.resident_bytes, DE_EVICT_INLINE_OVER * budget);
	de_evict_destroy(ev);
	rm_table(y);
	rm_table(z);
}

/* ---- the disk tier --------------------------------------------------------------------- */

struct snap {
	float *rows;
	struct de_row_meta *meta;
	uint32_t rf;
};

static void snap_fn(void *ctx, size_t i, float *row, struct de_row_meta *m)
{
	struct snap *s = ctx;
	memcpy(s->rows + i * s->rf, row, 4ull * s->rf);
	s->meta[i] = *m;
}

static char tmpdir[64];
static void mk_tmpdir(void)
{
	strcpy(tmpdir, "/tmp/de_evict_XXXXXX");
	cr_assert_not_null(mkdtemp(tmpdir));
}

/* Adam-trained rows go to the tier and come back bit-identical (values, slots, aux, freq);
 * without a tier they come back fresh (the initializer) and the statistics say so. */
static void tier_roundtrip(bool with_tier)
{
	const uint32_t dim = 8, N = 3000, EV = 2000, rf = dim * 3;
	const uint64_t cost = ((4 * rf + 63) & ~63ull) + 32; /* 96 B -> 128 B stride + meta */
	struct tab x = mk_table(dim, 2);
	mk_tmpdir();
	de_tier *tier = NULL;
	if (with_tier)
		cr_assert_eq(de_tier_open(tmpdir, rf, &tier), 0);
	struct de_optim_config oc;
	de_optim_defaults(DE_OPT_ADAM, &oc);
	uint64_t *keys = xcalloc(N, 8), *ks = xcalloc(N, 8);
	float *grads = xcalloc((size_t)N * dim, 4);
	uint64_t s = 5;
	for (uint32_t i = 0; i < N; i++)
		keys[i] = mix64(i + 1);
	for (uint32_t stp = 1; stp <= 3; stp++) { /* key i gets i % 3 + 1 steps: aux differs */
		for (size_t j = 0; j < (size_t)N * dim; j++)
			grads[j] = (float)((double)(rng_next(&s) >> 11) * 0x1.0p-53 - 0.5);
		size_t m = 0;
		for (uint32_t i = 0; i < N; i++)
			if (i % 3 + 1 >= stp)
				ks[m++] = keys[i];
		cr_assert_eq(de_optim_update(x.t, &oc, ks, m, grads, stp, NULL), 0);
	}
	struct snap before = { xcalloc((size_t)N * rf, 4), xcalloc(N, sizeof(struct de_row_meta)), rf };
	cr_assert_eq(de_table_apply(x.t, keys, N, false, snap_fn, &before, NULL, DE_STEP_KEEP), 0);
	de_evict *ev = mk_ev((struct de_evict_config){ .high = 1, .low = 1 });
	uint32_t id = add(ev, x, (struct de_evict_table_config){ .policy = DE_EVICT_LRU, .tier = tier });
	de_evict_set_budget(ev, id, de_evict_resident(ev, id) - EV * cost);
	size_t n = 0;
	cr_assert_eq(de_evict_step(ev, 0, &n), 0);
	cr_assert_eq(n, EV);
	cr_assert_eq(live_keys(x.t), N - EV);
	struct de_evict_stats es;
	de_evict_stats(ev, id, &es);
	cr_assert_eq(es.evicted, EV);
	cr_assert_eq(es.evicted_to_tier, with_tier ? EV : 0);
	if (tier) {
		struct de_tier_stats ts;
		de_tier_stats(tier, &ts);
		cr_assert_eq(ts.live, EV);
	}
	/* lift the budget, look every key up again (as the daemon: find_or_insert, then
	 * de_evict_after_lookup with the statuses) */
	de_evict_set_budget(ev, id, 0);
	uint8_t *st = xcalloc(N, 1);
	float *out = xcalloc((size_t)N * dim, 4);
	cr_assert_eq(de_table_find_or_insert(x.t, keys, N, out, st, 10), 0);
	size_t restored = 0, created = 0;
	cr_assert_eq(de_evict_after_lookup(ev, id, keys, N, st, out, 10, &restored), 0);
	struct snap after = { xcalloc((size_t)N * rf, 4), xcalloc(N, sizeof(struct de_row_meta)), rf };
	cr_assert_eq(de_table_apply(x.t, keys, N, false, snap_fn, &after, NULL, DE_STEP_KEEP), 0);
	float init[8];
	for (uint32_t i = 0; i < N; i++) {
		const float *b = before.rows + (size_t)i * rf, *a = after.rows + (size_t)i * rf;
		if (st[i] != DE_CREATED) {
			cr_assert_eq(memcmp(a, b, 4ull * rf), 0);
			continue;
		}
		created++;
		if (with_tier) {
			cr_assert_eq(memcmp(a, b, 4ull * rf), 0, "key %u: row differs after restore", i);
			cr_assert_eq(memcmp(out + (size_t)i * dim, b, 4ull * dim), 0);
			cr_assert_eq(after.meta[i].aux, before.meta[i].aux);
			cr_assert_eq(after.meta[i].aux, i % 3 + 1);
			cr_assert_eq(after.meta[i].freq, before.meta[i].freq);
			cr_assert_eq(after.meta[i].last_step, 10);
		} else {
			de_table_init_row(x.t, keys[i], init);
			cr_assert_eq(memcmp(a, init, 4ull * dim), 0, "key %u: not fresh", i);
			cr_assert_eq(memcmp(out + (size_t)i * dim, init, 4ull * dim), 0);
			cr_assert_eq(after.meta[i].aux, 0);
		}
	}
	cr_assert_eq(created, EV);
	cr_assert_eq(restored, with_tier ? EV : 0);
	de_evict_stats(ev, id, &es);
	cr_assert_eq(es.restored_from_tier, with_tier ? EV : 0);
	/* Bloom filter: false positives are possible, none expected at this size */
	cr_assert_eq(es.returned_fresh, with_tier ? 0 : EV);
	/* brand-new keys do not count as returning */
	uint64_t fresh_keys[100];
	uint8_t st2[100];
	for (int i = 0; i < 100; i++)
		fresh_keys[i] = mix64(1000000 + i);
	de_table_find_or_insert(x.t, fresh_keys, 100, out, st2, 11);
	cr_assert_eq(de_evict_after_lookup(ev, id, fresh_keys, 100, st2, out, 11, NULL), 0);
	struct de_evict_stats es2;
	de_evict_stats(ev, id, &es2);
	cr_assert_leq(es2.returned_fresh - es.returned_fresh, 1);
	if (tier) {
		struct de_tier_stats ts;
		de_tier_stats(tier, &ts);
		cr_assert_eq(ts.live, 0);
		cr_assert_eq(ts.takes, EV);
	}
	free(after.rows);
	free(after.meta);
	free(before.rows);
	free(before.meta);
	free(st);
	free(out);
	free(keys);
	free(ks);
	free(grads);
	de_evict_destroy(ev);
	de_tier_close(tier);
	rm_table(x);
	rmdir(tmpdir);
}

Test(tier, roundtrip_bit_identical) { tier_roundtrip(true); }
Test(tier, no_tier_returns_fresh) { tier_roundtrip(false); }

Test(tier, put_take_supersede_compact)
{
	const uint32_t rf = 64, N = 6000;
	mk_tmpdir();
	de_tier *t;
	cr_assert_eq(de_tier_open(tmpdir, rf, &t), 0);
	float *rows = xcalloc((size_t)N * rf, 4), row[64];
	struct de_row_meta *m = xcalloc(N, sizeof *m), mo;
	for (uint32_t i = 0; i < N; i++) {
		for (uint32_t j = 0; j < rf; j++)
			rows[(size_t)i * rf + j] = (float)i + j * 0.5f;
		m[i] = (struct de_row_meta){ i + 1, i, i * 2, 1, i * 3 };
	}
	cr_assert_eq(de_tier_put(t, rows, m, N), 0);
	cr_assert(de_tier_contains(t, 5));
	cr_assert_not(de_tier_contains(t, N + 1));
	cr_assert_eq(de_tier_take(t, N + 1, row, &mo), -ENOENT);
	cr_assert_eq(de_tier_take(t, 0, row, &mo), -ENOENT);
	/* supersede key 1 with row 2's values */
	struct de_row_meta m1 = m[0];
	m1.aux = 999;
	cr_assert_eq(de_tier_put(t, rows + rf, &m1, 1), 0);
	cr_assert_eq(de_tier_take(t, 1, row, &mo), 0);
	cr_assert_eq(memcmp(row, rows + rf, 4 * rf), 0);
	cr_assert_eq(mo.aux, 999);
	cr_assert_eq(de_tier_take(t, 1, row, &mo), -ENOENT, "taken means forgotten");
	/* take 90%: dead space > half the file (> 1 MiB) -> the next put compacts */
	for (uint32_t i = 1; i < N; i++)
		if (i % 10)
			cr_assert_eq(de_tier_take(t, i + 1, row, &mo), 0);
	struct de_tier_stats ts;
	de_tier_stats(t, &ts);
	cr_assert_eq(ts.compactions, 0);
	cr_assert_eq(de_tier_put(t, rows, &m[0], 1), 0);
	de_tier_stats(t, &ts);
	cr_assert_eq(ts.compactions, 1);
	cr_assert_eq(ts.dead_bytes, 0);
	cr_assert_eq(ts.live, N / 10); /* keys i + 1 with i % 10 == 0, key 1 put back */
	cr_assert_eq(ts.file_bytes, ts.live * (48 + 4ull * rf));
	for (uint32_t i = 0; i < N; i += 10) {
		cr_assert_eq(de_tier_take(t, i + 1, row, &mo), 0, "key %u after compaction", i + 1);
		cr_assert_eq(memcmp(row, rows + (size_t)i * rf, 4 * rf), 0);
		cr_assert_eq(mo.key, i + 1);
		cr_assert_eq(mo.aux, (uint64_t)i * 3);
	}
	de_tier_close(t);
	free(rows);
	free(m);
	rmdir(tmpdir);
}

Test(tier, errors)
{
	de_tier *t = NULL;
	float row[4];
	struct de_row_meta m = { 7, 0, 0, 1, 0 };
	cr_assert_eq(de_tier_open(NULL, 4, &t), -EINVAL);
	cr_assert_eq(de_tier_open("/tmp", 0, &t), -EINVAL);
	cr_assert_eq(de_tier_open("/tmp", DE_MAX_DIM * (1 + DE_MAX_SLOTS) + 1, &t), -EINVAL);
	cr_assert_eq(de_tier_open("/tmp", 4, NULL), -EINVAL);
	cr_assert_eq(de_tier_open("/nonexistent/dir", 4, &t), -ENOENT);
	mk_tmpdir();
	/* a read-only directory (root ignores the mode: then only the others are checked) */
	chmod(tmpdir, 0500);
	if (access(tmpdir, W_OK) != 0)
		cr_assert_eq(de_tier_open(tmpdir, 4, &t), -EACCES);
	chmod(tmpdir, 0700);
	cr_assert_eq(de_tier_open(tmpdir, 4, &t), 0);
	cr_assert_eq(de_tier_put(NULL, row, &m, 1), -EINVAL);
	cr_assert_eq(de_tier_put(t, NULL, &m, 1), -EINVAL);
	cr_assert_eq(de_tier_put(t, row, NULL, 1), -EINVAL);
	cr_assert_eq(de_tier_put(t, NULL, NULL, 0), 0);
	cr_assert_eq(de_tier_take(NULL, 7, row, &m), -EINVAL);
	cr_assert_eq(de_tier_take(t, 7, NULL, &m), -EINVAL);
	cr_assert_eq(de_tier_take(t, 7, row, NULL), -EINVAL);
	cr_assert_eq(de_tier_stats(NULL, NULL), -EINVAL);
	cr_assert_eq(de_tier_compact(NULL), -EINVAL);
	cr_assert_not(de_tier_contains(NULL, 7));
	memset(row, 0, sizeof row);
	cr_assert_eq(de_tier_put(t, row, &m, 1), 0);
	cr_assert_eq(de_tier_compact(t), 0);
	cr_assert_eq(de_tier_take(t, 7, row, &m), 0);
#ifdef DE_FAULT_INJECTION
	/* a broken fd: writes fail (nothing indexed), reads fail with -EIO */
	m.key = 8;
	cr_assert_eq(de_tier_put(t, row, &m, 1), 0);
	m.key = 10;
	cr_assert_eq(de_tier_put(t, row, &m, 1), 0);
	de_tier_break_fd(t);
	m.key = 9;
	cr_assert_lt(de_tier_put(t, row, &m, 1), 0);
	cr_assert_not(de_tier_contains(t, 9));
	cr_assert_eq(de_tier_take(t, 8, row, &m), -EIO);
	cr_assert_not(de_tier_contains(t, 8));
	struct de_tier_stats ts;
	de_tier_stats(t, &ts);
	cr_assert_eq(ts.io_errors, 2);
	cr_assert_eq(de_tier_compact(t), -EIO); /* key 10 cannot be read back */
	cr_assert(de_tier_contains(t, 10), "a failed compaction keeps the old index");
#endif
	de_tier_close(t);
	de_tier_close(NULL);
	rmdir(tmpdir);
}

#ifdef DE_FAULT_INJECTION
/* The evictor with a tier whose writes fail: the rows are evicted (the budget wins),
 * counted as tier errors, and the returning keys start fresh. */
Test(tier, evictor_with_failing_tier)
{
	struct tab x = mk_table(4, 0);
	mk_tmpdir();
	de_tier *tier;
	cr_assert_eq(de_tier_open(tmpdir, 4, &tier), 0);
	uint64_t keys[500];
	uint8_t st[500];
	float out[500 * 4];
	for (int i = 0; i < 500; i++)
		keys[i] = i + 1;
	de_table_find_or_insert(x.t, keys, 500, out, st, 1);
	de_evict *ev = mk_ev((struct de_evict_config){ .high = 1, .low = 1 });
	uint32_t id = add(ev, x, (struct de_evict_table_config){ .policy = DE_EVICT_LRU, .tier = tier });
	de_evict_set_budget(ev, id, de_evict_resident(ev, id) - 100 * 48);
	de_tier_break_fd(tier);
	size_t n;
	cr_assert_eq(de_evict_step(ev, 0, &n), 0);
	cr_assert_eq(n, 100);
	struct de_evict_stats es;
	de_evict_stats(ev, id, &es);
	cr_assert_eq(es.tier_errors, 100);
	cr_assert_eq(es.evicted_to_tier, 0);
	de_evict_set_budget(ev, id, 0);
	de_table_find_or_insert(x.t, keys, 500, out, st, 2);
	size_t restored;
	cr_assert_eq(de_evict_after_lookup(ev, id, keys, 500, st, out, 2, &restored), 0);
	cr_assert_eq(restored, 0);
	de_evict_stats(ev, id, &es);
	cr_assert_eq(es.returned_fresh, 100);
	de_evict_destroy(ev);
	de_tier_close(tier);
	rm_table(x);
	rmdir(tmpdir);
}
#endif

Test(evict, bad_configs_and_args)
{
	de_evict *ev = NULL;
	struct de_evict_config bad[] = {
		{ .samples = 4097 }, { .pool = 257 }, { .high = 0.9, .low = 0.95 },
		{ .high = 1.5, .low = 0.9 }, { .high = 0.9, .low = 0 }, { .high = NAN, .low = 0.5 },
		{ .interval_ms = 60001 }, { .sweep_rows = (1u << 24) + 1 },
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		cr_assert_eq(de_evict_create(&bad[i], &ev), -EINVAL, "config %zu", i);
	cr_assert_eq(de_evict_create(NULL, &ev), -EINVAL);
	ev = mk_ev((struct de_evict_config){ 0 });
	struct tab x = mk_table(4, 1);
	uint32_t id;
	struct de_evict_table_config tc = { .policy = DE_EVICT_LRU };
	cr_assert_eq(de_evict_add_table(NULL, x.t, x.a, &tc, &id), -EINVAL);
	cr_assert_eq(de_evict_add_table(ev, NULL, x.a, &tc, &id), -EINVAL);
	cr_assert_eq(de_evict_add_table(ev, x.t, NULL, &tc, &id), -EINVAL);
	cr_assert_eq(de_evict_add_table(ev, x.t, x.a, NULL, &id), -EINVAL);
	cr_assert_eq(de_evict_add_table(ev, x.t, x.a, &tc, NULL), -EINVAL);
	tc.policy = 9;
	cr_assert_eq(de_evict_add_table(ev, x.t, x.a, &tc, &id), -EINVAL);
	tc.policy = DE_EVICT_NONE;
	cr_assert_eq(de_evict_add_table(ev, x.t, x.a, &tc, &id), -EINVAL, "policy none");
	tc = (struct de_evict_table_config){ .policy = DE_EVICT_LRU, .clock = 5 };
	cr_assert_eq(de_evict_add_table(ev, x.t, x.a, &tc, &id), -EINVAL);
	tc = (struct de_evict_table_config){ .policy = DE_EVICT_TTL };
	cr_assert_eq(de_evict_add_table(ev, x.t, x.a, &tc, &id), -EINVAL, "TTL without ttl");
	mk_tmpdir();
	de_tier *tier;
	cr_assert_eq(de_tier_open(tmpdir, 4, &tier), 0); /* table rows are 8 floats */
	tc = (struct de_evict_table_config){ .policy = DE_EVICT_LRU, .tier = tier };
	cr_assert_eq(de_evict_add_table(ev, x.t, x.a, &tc, &id), -EINVAL, "tier row size");
	tc = (struct de_evict_table_config){ .policy = DE_EVICT_LRU };
	for (uint32_t i = 0; i < DE_EVICT_MAX_TABLES; i++)
		cr_assert_eq(de_evict_add_table(ev, x.t, x.a, &tc, &id), 0);
	cr_assert_eq(de_evict_add_table(ev, x.t, x.a, &tc, &id), -ENOSPC);
	struct de_evict_stats es;
	cr_assert_eq(de_evict_stats(ev, DE_EVICT_MAX_TABLES, &es), -EINVAL);
	cr_assert_eq(de_evict_stats(ev, 0, NULL), -EINVAL);
	cr_assert_eq(de_evict_stats(NULL, 0, &es), -EINVAL);
	cr_assert_eq(de_evict_set_budget(ev, DE_EVICT_MAX_TABLES, 1), -EINVAL);
	cr_assert_eq(de_evict_set_budget(NULL, 0, 1), -EINVAL);
	cr_assert_eq(de_evict_resident(ev, DE_EVICT_MAX_TABLES), 0);
	cr_assert_eq(de_evict_now(ev, DE_EVICT_MAX_TABLES), UINT64_MAX);
	cr_assert_eq(de_evict_now(NULL, 0), UINT64_MAX);
	uint64_t k = 1;
	uint8_t s = DE_CREATED;
	cr_assert_eq(de_evict_after_lookup(ev, DE_EVICT_MAX_TABLES, &k, 1, &s, NULL, 0, NULL), -EINVAL);
	cr_assert_eq(de_evict_after_lookup(ev, 0, NULL, 1, &s, NULL, 0, NULL), -EINVAL);
	cr_assert_eq(de_evict_after_lookup(ev, 0, &k, 1, NULL, NULL, 0, NULL), -EINVAL);
	cr_assert_eq(de_evict_after_lookup(NULL, 0, &k, 1, &s, NULL, 0, NULL), -EINVAL);
	cr_assert_eq(de_evict_step(NULL, 0, NULL), -EINVAL);
	cr_assert_eq(de_evict_start(NULL), -EINVAL);
	cr_assert_eq(de_evict_stop(NULL), -EINVAL);
	de_evict_set_step(NULL, 1);
	de_evict_destroy(NULL);
	/* an empty table: a step with an impossible budget evicts nothing and returns */
	de_evict_set_budget(ev, 0, 1);
	size_t n = 7;
	cr_assert_eq(de_evict_step(ev, 0, &n), 0);
	cr_assert_eq(n, 0);
	de_evict_destroy(ev);
	de_tier_close(tier);
	rm_table(x);
	rmdir(tmpdir);
}
