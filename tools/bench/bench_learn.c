/*
 * bench_learn.c — dynemb-bench learn: what learning on the server costs.
 *
 * Owns the `learn` sub-command:
 *   1. optimizer steps against lookups, in one run on one table: a plain de_table_find of
 *      batches of keys, then de_optim_update of the same batches for every optimizer
 *      (rows/s each, and the cost of a step in lookups: find rate / update rate);
 *   2. per-row exclusion (the default: de_table_apply under the row's write protection)
 *      against lock-free Hogwild steps (de_table_apply_hogwild), with writer threads on a
 *      Zipf(1.0) stream so that hot rows are contended: throughput of both, and the steps
 *      Hogwild lost (SGD with lr 1 and gradient -1 counts steps exactly in a row's value);
 *   3. eviction's cost on lookups: p99 of a batch lookup (find_or_insert + the eviction
 *      hook) on a Zipf(1.0) stream over twice as many keys as the budget holds, with the
 *      background evictor working, vs the same stream on a table that holds every key;
 *   4. top-k queries per second over the table.
 * Never: compares against figures from another run; every ratio is measured here.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "de_learn.h"
#include "de_shm.h"

#define FILL_BATCH 4096u /* keys per lookup when a case fills a table */

struct learn_opts {
	uint64_t keys;
	uint32_t dim, batch, threads;
	double seconds;
	bool json;
};

#define NBATCH 64u

struct learn_env {
	struct learn_opts o;
	de_arena *a;
	de_table *t;
	uint64_t *bkeys; /* NBATCH * batch keys, uniform over the table */
	float *grads;    /* batch * dim */
	float *out;      /* max(batch, FILL_BATCH) * dim */
};

static int env_open(struct learn_env *e, uint64_t keys, uint32_t nslots, enum de_init init)
{
	struct de_arena_config ac = { .pages = DE_PAGES_AUTO, .numa_node = DE_NUMA_AUTO };
	struct de_table_config tc = { .dim = e->o.dim, .nslots = nslots, .init = init,
				      .init_a = -0.05f, .init_b = 0.05f, .seed = 7 };
	int err = de_arena_create(&ac, &e->a);
	if (!err)
		err = de_table_open(e->a, &tc, &e->t);
	uint64_t *k = malloc((size_t)e->o.batch * 8);
	float *v = malloc((size_t)e->o.batch * e->o.dim * 4);
	if (!k || !v)
		err = err ? err : -ENOMEM;
	for (uint64_t i = 0; !err && i < keys; i += e->o.batch) {
		uint64_t n = keys - i < e->o.batch ? keys - i : e->o.batch;
		for (uint64_t j = 0; j < n; j++)
			k[j] = key_of(i + j);
		err = de_table_find_or_insert(e->t, k, n, v, NULL, 1);
	}
	free(k);
	free(v);
	return err;
}

static void env_close(struct learn_env *e)
{
	de_table_close(e->t);
	de_arena_destroy(e->a);
	e->t = NULL;
	e->a = NULL;
}

/* rows/s of fn over the pre-drawn batches for about `seconds` */
typedef int (*batch_fn)(struct learn_env *e, const uint64_t *keys, const void *arg);

static double rate(struct learn_env *e, batch_fn fn, const void *arg, int *err)
{
	uint64_t t0 = ns_now(), rows = 0, deadline = t0 + (uint64_t)(e->o.seconds * 1e9);
	for (unsigned b = 0;; b = (b + 1) % NBATCH) {
		int rc = fn(e, e->bkeys + (size_t)b * e->o.batch, arg);
		if (rc) {
			*err = rc;
			return 0;
		}
		rows += e->o.batch;
		if ((rows / e->o.batch) % 8 == 0 && ns_now() >= deadline)
			break;
	}
	return (double)rows / ((double)(ns_now() - t0) / 1e9);
}

static int do_find(struct learn_env *e, const uint64_t *keys, const void *arg)
{
	(void)arg;
	return de_table_find(e->t, keys, e->o.batch, e->out, NULL);
}

static int do_update(struct learn_env *e, const uint64_t *keys, const void *arg)
{
	return de_optim_update(e->t, arg, keys, e->o.batch, e->grads, 2, NULL);
}

/* ---- 2: Hogwild vs per-row exclusion ------------------------------------------------ */

struct hog_thread {
	pthread_t tid;
	de_table *t;
	const struct de_optim_config *cfg;
	const uint64_t *keys; /* this thread's stream: n batches */
	const float *grads;
	uint32_t batch;
	unsigned nbatches;
	int cpu, err;
	uint64_t ns;
};

static void *hog_run(void *arg)
{
	struct hog_thread *h = arg;
	pin(h->cpu);
	uint64_t t0 = ns_now();
	for (unsigned b = 0; b < h->nbatches && !h->err; b++)
		h->err = de_optim_update(h->t, h->cfg, h->keys + (size_t)b * h->batch, h->batch,
					 h->grads, 3, NULL);
	h->ns = ns_now() - t0;
	return NULL;
}

struct hog_result {
	double rows_per_s;
	double lost_fraction; /* SGD counting run only */
};

/* nth writer threads, each nb batches of Zipf keys over nkeys; returns rows/s (all
 * threads) and, for the counting config, the fraction of steps lost. */
static int hog_case(struct learn_env *e, const struct de_optim_config *cfg, bool counting,
		    const uint64_t *zkeys, unsigned nb, struct hog_result *r)
{
	unsigned nth = e->o.threads;
	struct hog_thread th[16];
	float *g = malloc((size_t)e->o.batch * e->o.dim * 4);
	if (!g)
		return -ENOMEM;
	for (size_t i = 0; i < (size_t)e->o.batch * e->o.dim; i++)
		g[i] = counting ? -1.0f : e->grads[i];
	int err = 0;
	unsigned started = 0;
	for (unsigned i = 0; i < nth; i++) {
		th[i] = (struct hog_thread){ .t = e->t, .cfg = cfg,
					     .keys = zkeys + (size_t)i * nb * e->o.batch,
					     .grads = g, .batch = e->o.batch, .nbatches = nb,
					     .cpu = (int)i };
		if (pthread_create(&th[i].tid, NULL, hog_run, &th[i])) {
			err = -EAGAIN;
			break;
		}
		started++;
	}
	uint64_t maxns = 1;
	for (unsigned i = 0; i < started; i++) {
		pthread_join(th[i].tid, NULL);
		if (th[i].err)
			err = th[i].err;
		if (th[i].ns > maxns)
			maxns = th[i].ns;
	}
	r->rows_per_s = (double)nth * nb * e->o.batch / ((double)maxns / 1e9);
	r->lost_fraction = 0;
	if (!err && counting) {
		/* duplicates in a batch are summed: each occurrence of a key adds exactly 1 to
		 * its values (lr 1, gradient -1), so the expected total is the stream's length */
		double expect = (double)nth * nb * e->o.batch, got = 0;
		uint64_t *seen = calloc(e->o.keys, 8);
		float *v = malloc((size_t)e->o.dim * 4);
		if (!seen || !v)
			err = -ENOMEM;
		for (size_t j = 0; !err && j < (size_t)nth * nb * e->o.batch; j++)
			seen[zkeys[j] >> 32] = 1; /* the stream keeps the index in the high bits */
		for (uint64_t i = 0; !err && i < e->o.keys; i++) {
			if (!seen[i])
				continue;
			uint64_t k = (i << 32) | 1;
			err = de_table_find(e->t, &k, 1, v, NULL);
			got += v[0];
		}
		r->lost_fraction = expect > 0 ? (expect - got) / expect : 0;
		free(seen);
		free(v);
	}
	free(g);
	return err;
}

/* Zipf(1.0) batches: key = (index << 32) | 1, so the counting check can find the index */
static uint64_t *zipf_stream(uint64_t nkeys, size_t n, uint64_t seed)
{
	uint64_t *k = malloc(n * 8);
	if (!k)
		return NULL;
	struct zipf z;
	zipf_init(&z, nkeys, 1.0);
	uint64_t rng = seed;
	for (size_t i = 0; i < n; i++) {
		/* scatter ranks over indexes so hot keys do not share a segment */
		uint64_t rank = zipf_draw(&z, &rng);
		uint64_t idx = (rank * 0x9e3779b1ull) % nkeys;
		k[i] = (idx << 32) | 1;
	}
	return k;
}

/* ---- 3: eviction overhead on lookups -------------------------------------------------- */

#define EV_BATCH 512u /* <= FILL_BATCH */
#define EV_BATCHES 4000u

struct evict_result {
	uint64_t universe, budget_rows, evicted, resident, budget;
	double base[2], with[2]; /* p50, p99 ns */
};

/* p50/p99 of find_or_insert (+ the eviction hook) over a Zipf stream */
static int evict_run(struct learn_env *e, de_evict *ev, uint32_t id, const uint64_t *zk,
		     double out[2])
{
	uint64_t *lat = malloc(EV_BATCHES * 8);
	uint8_t *st = malloc(EV_BATCH);
	int err = lat && st ? 0 : -ENOMEM;
	for (unsigned b = 0; b < EV_BATCHES && !err; b++) {
		const uint64_t *k = zk + (size_t)b * EV_BATCH;
		uint64_t t0 = ns_now();
		err = de_table_find_or_insert(e->t, k, EV_BATCH, e->out, st, 10 + b);
		if (!err && ev)
			err = de_evict_after_lookup(ev, id, k, EV_BATCH, st, e->out, 10 + b, NULL);
		lat[b] = ns_now() - t0;
		if (ev)
			de_evict_set_step(ev, 10 + b);
	}
	if (!err)
		pctl(lat, EV_BATCHES, out);
	free(lat);
	free(st);
	return err;
}

static int evict_case(struct learn_env *e, struct evict_result *r)
{
	uint64_t universe = e->o.keys;
	size_t zn = (size_t)EV_BATCHES * EV_BATCH;
	uint64_t *zk = zipf_stream(universe, zn, 7);
	uint8_t *seen = calloc(universe, 1);
	if (!zk || !seen) {
		free(zk);
		free(seen);
		return -ENOMEM;
	}
	/* the budget holds half of the keys the stream actually touches */
	uint64_t distinct = 0;
	for (size_t i = 0; i < zn; i++)
		if (!seen[zk[i] >> 32]) {
			seen[zk[i] >> 32] = 1;
			distinct++;
		}
	free(seen);
	r->universe = distinct;
	/* base: every key of the universe already resident, no eviction */
	int err = env_open(e, 0, 0, DE_INIT_UNIFORM);
	uint64_t *kk = malloc(FILL_BATCH * 8);
	if (!kk)
		err = -ENOMEM;
	for (uint64_t i = 0; !err && i < universe; i += FILL_BATCH) {
		uint64_t n = universe - i < FILL_BATCH ? universe - i : FILL_BATCH;
		for (uint64_t j = 0; j < n; j++)
			kk[j] = ((i + j) << 32) | 1;
		err = de_table_find_or_insert(e->t, kk, n, e->out, NULL, 1);
	}
	free(kk);
	if (!err)
		err = evict_run(e, NULL, 0, zk, r->base);
	env_close(e);
	/* with eviction: LRU by step, a budget of half the universe, background thread on */
	de_evict *ev = NULL;
	uint32_t id = 0;
	if (!err)
		err = env_open(e, 0, 0, DE_INIT_UNIFORM);
	struct de_evict_config ec = { .seed = 3 };
	if (!err)
		err = de_evict_create(&ec, &ev);
	if (!err) {
		/* the arena's fixed part (header, first index segments) plus the rows */
		uint64_t row_bytes = (uint64_t)e->o.dim * 4 + 32;
		r->budget_rows = distinct / 2;
		r->budget = de_arena_used_bytes(e->a) + r->budget_rows * row_bytes * 5 / 4;
		struct de_evict_table_config tc = { .budget_bytes = r->budget,
						    .policy = DE_EVICT_LRU,
						    .clock = DE_CLOCK_STEP };
		err = de_evict_add_table(ev, e->t, e->a, &tc, &id);
	}
	/* the evictor thread inherits its creator's cpu: start it from cpu 1 and run the
	 * lookups on cpu 0, as a daemon keeps its background threads off the worker cores */
	pin(1);
	if (!err)
		err = de_evict_start(ev);
	pin(0);
	if (!err)
		err = evict_run(e, ev, id, zk, r->with);
	if (ev) {
		de_evict_stop(ev);
		struct de_evict_stats es;
		if (!err && !de_evict_stats(ev, id, &es)) {
			r->evicted = es.evicted;
			r->resident = es.resident_bytes;
		}
		de_evict_destroy(ev);
	}
	env_close(e);
	free(zk);
	return err;
}

/* ---- 4: top-k ------------------------------------------------------------------------ */

#define TK_K 10u
#define TK_NQ 64u

struct topk_result {
	double qps, qps_cos, plain_qps;
};

/* a plain loop: one query over n contiguous rows, scalar dot, insertion top-k */
static float plain_topk(const float *rows, uint64_t n, uint32_t dim, const float *q)
{
	float best[TK_K];
	for (unsigned j = 0; j < TK_K; j++)
		best[j] = -INFINITY;
	for (uint64_t i = 0; i < n; i++) {
		const float *rr = rows + i * dim;
		float s = 0;
		for (uint32_t d = 0; d < dim; d++)
			s += rr[d] * q[d];
		if (s <= best[TK_K - 1])
			continue;
		unsigned j = TK_K - 1;
		while (j > 0 && best[j - 1] < s) {
			best[j] = best[j - 1];
			j--;
		}
		best[j] = s;
	}
	return best[0];
}

static int topk_case(struct learn_env *e, struct topk_result *r)
{
	uint32_t dim = e->o.dim;
	float *q = malloc((size_t)TK_NQ * dim * 4);
	uint64_t *keys = malloc((size_t)TK_NQ * TK_K * 8);
	float *sc = malloc((size_t)TK_NQ * TK_K * 4);
	float *rows = NULL;
	int err = q && keys && sc ? 0 : -ENOMEM;
	uint64_t rng = 77;
	for (size_t i = 0; !err && i < (size_t)TK_NQ * dim; i++)
		q[i] = (float)((double)(de_splitmix64(rng++) >> 11) * 0x1p-53 - 0.5);
	if (!err)
		err = env_open(e, e->o.keys, 0, DE_INIT_UNIFORM);
	for (int m = 0; m < 2 && !err; m++) {
		size_t found;
		uint64_t t0 = ns_now(), calls = 0;
		do {
			err = de_topk(e->t, q, TK_NQ, TK_K, m ? DE_TOPK_COSINE : DE_TOPK_DOT,
				      e->o.threads, keys, sc, &found);
			calls++;
		} while (!err && ns_now() - t0 < (uint64_t)(e->o.seconds * 1e9));
		double qps = (double)calls * TK_NQ / ((double)(ns_now() - t0) / 1e9);
		if (m)
			r->qps_cos = qps;
		else
			r->qps = qps;
	}
	/* baseline: the same rows copied to a contiguous array */
	uint64_t n = 0;
	if (!err) {
		rows = malloc((size_t)e->o.keys * dim * 4);
		uint64_t *kk = malloc(4096 * 8), cur = 0;
		size_t got = 0;
		err = rows && kk ? 0 : -ENOMEM;
		while (!err) {
			err = de_table_iterate(e->t, &cur, kk, rows + n * dim, 4096, &got);
			if (err || !got)
				break;
			n += got;
		}
		free(kk);
	}
	if (!err) {
		unsigned nq = 0;
		volatile float sink = 0;
		uint64_t t0 = ns_now();
		do {
			sink += plain_topk(rows, n, dim, q + (size_t)(nq % TK_NQ) * dim);
			nq++;
		} while (ns_now() - t0 < (uint64_t)(e->o.seconds * 1e9));
		r->plain_qps = (double)nq / ((double)(ns_now() - t0) / 1e9);
		(void)sink;
	}
	env_close(e);
	free(rows);
	free(q);
	free(keys);
	free(sc);
	return err;
}

/* ---- the command ------------------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f, "usage: " PROG " learn [--keys N] [--dim D] [--batch B] [--threads T]\n"
		   "                          [--seconds S] [--short] [--json]\n"
		   "  --keys     rows in the table (default 1000000)\n"
		   "  --dim      values per row (default 64)\n"
		   "  --batch    keys per update / lookup (default 4096)\n"
		   "  --threads  writer threads for Hogwild vs exclusion (default 2)\n"
		   "  --seconds  time per measured case (default 2)\n"
		   "  --short    100000 keys, 0.5 s per case\n"
		   "  --json     one JSON object on stdout (the human tables go to stderr)\n");
}

int cmd_learn(int argc, char **argv, const char *command_line)
{
	struct learn_opts o = { .keys = 1000000, .dim = 64, .batch = 4096, .threads = 2,
				.seconds = 2 };
	for (int i = 1; i < argc; i++) {
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(argv[i], "--json"))
			o.json = true;
		else if (!strcmp(argv[i], "--short"))
			o.keys = 100000, o.seconds = 0.5;
		else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			usage(stdout);
			return 0;
		} else if (v && !strcmp(argv[i], "--keys"))
			o.keys = strtoull(v, NULL, 0), i++;
		else if (v && !strcmp(argv[i], "--dim"))
			o.dim = (uint32_t)strtoul(v, NULL, 0), i++;
		else if (v && !strcmp(argv[i], "--batch"))
			o.batch = (uint32_t)strtoul(v, NULL, 0), i++;
		else if (v && !strcmp(argv[i], "--threads"))
			o.threads = (uint32_t)strtoul(v, NULL, 0), i++;
		else if (v && !strcmp(argv[i], "--seconds"))
			o.seconds = strtod(v, NULL), i++;
		else {
			fprintf(stderr, PROG " learn: unknown or incomplete option '%s'\n",
				argv[i]);
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (o.keys < 10000 || o.keys > (1ull << 31) || !o.dim || o.dim > DE_MAX_DIM ||
	    o.batch < 16 || o.batch > (1u << 20) || !o.threads || o.threads > 16 ||
	    !(o.seconds > 0 && o.seconds <= 600)) {
		fprintf(stderr, PROG " learn: --keys 1e4..2^31, --dim 1..4096, --batch 16..2^20, "
				"--threads 1..16, --seconds (0, 600]\n");
		return EXIT_USAGE;
	}
	FILE *hu = o.json ? stderr : stdout;
	char *mjson = NULL;
	struct learn_env e = { .o = o };
	e.bkeys = malloc((size_t)NBATCH * o.batch * 8);
	e.grads = malloc((size_t)o.batch * o.dim * 4);
	/* the fills and the eviction case look up 4096 and EV_BATCH keys at a time */
	e.out = malloc((size_t)(o.batch > FILL_BATCH ? o.batch : FILL_BATCH) * o.dim * 4);
	int err = e.bkeys && e.grads && e.out ? 0 : -ENOMEM;
	uint64_t rng = 12345;
	for (size_t i = 0; !err && i < (size_t)NBATCH * o.batch; i++)
		e.bkeys[i] = key_of(de_splitmix64(rng++) % o.keys);
	for (size_t i = 0; !err && i < (size_t)o.batch * o.dim; i++)
		e.grads[i] = (float)((double)(de_splitmix64(rng++) >> 11) * 0x1p-53 - 0.5) * 0.01f;
	if (err) {
		fprintf(stderr, PROG " learn: setup: %s\n", strerror(-err));
		goto out;
	}
	fprintf(hu, "%s\n", command_line);
	bench_machine_print(hu, false);
	/* the machine as JSON now, before pinning narrows cpus_allowed */
	size_t mlen = 0;
	FILE *mf = open_memstream(&mjson, &mlen);
	if (mf) {
		bench_machine_print(mf, true);
		fclose(mf);
	}
	pin(0);

	/* 1: per optimizer, a table with the slots it needs (as a user would make it): a
	 * plain find of the batches, then the optimizer on the same batches */
	double find[DE_OPT_RMSPROP + 1] = { 0 }, upd[DE_OPT_RMSPROP + 1] = { 0 };
	fprintf(hu, "%" PRIu64 " keys, dim %u, batch %u, uniform keys; one table per optimizer "
		    "with its slots:\n", o.keys, o.dim, o.batch);
	fprintf(hu, "  %-9s %5s %14s %16s %14s\n", "optimizer", "slots", "find rows/s",
		"update rows/s", "step/lookup");
	for (int k = DE_OPT_SGD; !err && k <= DE_OPT_RMSPROP; k++) {
		struct de_optim_config c;
		de_optim_defaults((enum de_optimizer)k, &c);
		if (k == DE_OPT_MOMENTUM || k == DE_OPT_NESTEROV)
			c.momentum = 0.9;
		c.lr = 0.01;
		uint32_t ns = de_optim_slots((enum de_optimizer)k);
		err = env_open(&e, o.keys, ns, DE_INIT_UNIFORM);
		if (!err)
			find[k] = rate(&e, do_find, NULL, &err);
		if (!err)
			upd[k] = rate(&e, do_update, &c, &err);
		if (!err)
			fprintf(hu, "  %-9s %5u %12.2f M %14.2f M %14.2f   (%s pages)\n",
				de_optim_name((enum de_optimizer)k), ns, find[k] / 1e6,
				upd[k] / 1e6, find[k] / upd[k], de_pages_name(de_arena_pages(e.a)));
		env_close(&e);
	}
	if (err) {
		fprintf(stderr, PROG " learn: optimizer case: %s\n", strerror(-err));
		goto out;
	}

	/* 2: Hogwild vs exclusion, Zipf(1.0) writers */
	unsigned nb = 64;
	size_t zn = (size_t)o.threads * nb * o.batch;
	uint64_t *zk = zipf_stream(o.keys, zn, 99);
	struct hog_result hr[2][2]; /* [hogwild][sgd counting, adam] */
	memset(hr, 0, sizeof hr);
	err = zk ? 0 : -ENOMEM;
	for (int hog = 0; !err && hog < 2; hog++)
		for (int adam = 0; !err && adam < 2; adam++) {
			/* a fresh table of zeros per case: the counting check starts from 0 */
			err = env_open(&e, 0, 2, DE_INIT_ZEROS);
			struct de_optim_config c;
			de_optim_defaults(adam ? DE_OPT_ADAM : DE_OPT_SGD, &c);
			c.lr = adam ? 0.01 : 1.0;
			c.hogwild = hog;
			if (!err)
				err = hog_case(&e, &c, !adam, zk, nb, &hr[hog][adam]);
			env_close(&e);
		}
	free(zk);
	if (err) {
		fprintf(stderr, PROG " learn: hogwild case: %s\n", strerror(-err));
		goto out;
	}
	fprintf(hu, "%u writer threads, Zipf(1.0) keys, batch %u (rows/s, all threads):\n",
		o.threads, o.batch);
	fprintf(hu, "  %-26s %10s %10s %12s\n", "", "sgd", "adam", "sgd lost");
	fprintf(hu, "  %-26s %9.2fM %9.2fM %11.4f%%\n", "per-row exclusion (default)",
		hr[0][0].rows_per_s / 1e6, hr[0][1].rows_per_s / 1e6, 100 * hr[0][0].lost_fraction);
	fprintf(hu, "  %-26s %9.2fM %9.2fM %11.4f%%\n", "hogwild", hr[1][0].rows_per_s / 1e6,
		hr[1][1].rows_per_s / 1e6, 100 * hr[1][0].lost_fraction);

	/* 3: eviction's cost on lookup latency */
	struct evict_result ev = { 0 };
	err = evict_case(&e, &ev);
	if (err) {
		fprintf(stderr, PROG " learn: eviction case: %s\n", strerror(-err));
		goto out;
	}
	fprintf(hu, "lookup latency, batch %u, Zipf(1.0) over %" PRIu64 " keys, %" PRIu64
		    " of them seen (2x the budget of %" PRIu64 " rows):\n",
		EV_BATCH, o.keys, ev.universe, ev.budget_rows);
	fprintf(hu, "  %-34s p50 %8.1f us   p99 %8.1f us\n", "no eviction (all keys resident)",
		ev.base[0] / 1e3, ev.base[1] / 1e3);
	fprintf(hu, "  %-34s p50 %8.1f us   p99 %8.1f us   (%.2fx p99)\n",
		"LRU eviction, background + inline", ev.with[0] / 1e3, ev.with[1] / 1e3,
		ev.with[1] / ev.base[1]);
	fprintf(hu, "  evicted %" PRIu64 " rows; resident %.1f MiB of a %.1f MiB budget\n",
		ev.evicted, ev.resident / 1048576.0, ev.budget / 1048576.0);

	/* 4: top-k */
	struct topk_result tk = { 0 };
	err = topk_case(&e, &tk);
	if (err) {
		fprintf(stderr, PROG " learn: top-k case: %s\n", strerror(-err));
		goto out;
	}
	fprintf(hu, "top-%u over %" PRIu64 " rows, dim %u, %u queries per call, %u threads:\n",
		TK_K, o.keys, o.dim, TK_NQ, o.threads);
	fprintf(hu, "  de_topk dot     %10.1f queries/s\n", tk.qps);
	fprintf(hu, "  de_topk cosine  %10.1f queries/s\n", tk.qps_cos);
	fprintf(hu, "  plain loop      %10.1f queries/s (contiguous copy of the rows, scalar dot,\n"
		    "                  1 thread, insertion top-k): de_topk is %.1fx\n",
		tk.plain_qps, tk.qps / tk.plain_qps);

	if (o.json) {
		printf("{\"command\":\"learn\",\"keys\":%" PRIu64 ",\"dim\":%u,\"batch\":%u,"
		       "\"threads\":%u,\"find_rows_per_s\":%.0f",
		       o.keys, o.dim, o.batch, o.threads, find[DE_OPT_SGD]);
		for (int k = DE_OPT_SGD; k <= DE_OPT_RMSPROP; k++)
			printf(",\"update_%s_rows_per_s\":%.0f,\"find_%s_table_rows_per_s\":%.0f"
			       ",\"%s_step_over_find\":%.3f",
			       de_optim_name((enum de_optimizer)k), upd[k],
			       de_optim_name((enum de_optimizer)k), find[k],
			       de_optim_name((enum de_optimizer)k), find[k] / upd[k]);
		printf(",\"locked_sgd_rows_per_s\":%.0f,\"locked_adam_rows_per_s\":%.0f"
		       ",\"hogwild_sgd_rows_per_s\":%.0f,\"hogwild_adam_rows_per_s\":%.0f"
		       ",\"locked_sgd_lost_fraction\":%.6f,\"hogwild_sgd_lost_fraction\":%.6f",
		       hr[0][0].rows_per_s, hr[0][1].rows_per_s, hr[1][0].rows_per_s,
		       hr[1][1].rows_per_s, hr[0][0].lost_fraction, hr[1][0].lost_fraction);
		printf(",\"evict_base_p50_ns\":%.0f,\"evict_base_p99_ns\":%.0f"
		       ",\"evict_p50_ns\":%.0f,\"evict_p99_ns\":%.0f,\"evict_p99_over_base_p99\":%.3f"
		       ",\"evicted_rows\":%" PRIu64 ",\"evict_resident_bytes\":%" PRIu64
		       ",\"evict_budget_bytes\":%" PRIu64,
		       ev.base[0], ev.base[1], ev.with[0], ev.with[1], ev.with[1] / ev.base[1],
		       ev.evicted, ev.resident, ev.budget);
		printf(",\"topk_queries_per_s\":%.1f,\"topk_cosine_queries_per_s\":%.1f"
		       ",\"topk_plain_loop_queries_per_s\":%.1f,\"topk_k\":%u,\"topk_batch\":%u",
		       tk.qps, tk.qps_cos, tk.plain_qps, TK_K, TK_NQ);
		printf(",\"machine\":%s}\n", mjson ? mjson : "null");
	}
out:
	free(mjson);
	env_close(&e);
	free(e.bkeys);
	free(e.grads);
	free(e.out);
	return err ? 1 : 0;
}
