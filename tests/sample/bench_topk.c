/*
 * bench_topk.c — the top-k figure: queries/s of de_topk over a table of R rows (default
 * 1M, dim 64), batches of Q queries (64), k (10), T threads (2); and the scan rate in
 * rows/s against two in-process baselines over a contiguous malloc'd float array holding
 * the same rows, run with the same T threads splitting the rows:
 *   plain: for each row, for each query, `for (d) s += r[d] * q[d]` and an insertion into
 *          a sorted top-k array: what one writes without thinking about SIMD, at the
 *          same -O level (GCC does not vectorize the float reduction without
 *          -ffast-math, so this is a latency-bound scalar loop).
 * The table's own cost (de_table_iterate_range, i.e. a hash find per row) is what
 * separates de_topk from its kernel alone: see `perf record` on this program.
 * Usage: bench_topk [rows] [dim] [queries] [k] [threads] [reps]
 * Not a test: build it, run it, copy the lines it prints.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "de_learn.h"

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

struct plain_job {
	const float *rows, *qs;
	size_t lo, hi, dim, nq, k;
	float *best; /* nq x k, descending */
	uint64_t *bkey;
};

static void *plain_main(void *arg)
{
	struct plain_job *j = arg;
	for (size_t i = 0; i < j->nq * j->k; i++)
		j->best[i] = -1e30f;
	for (size_t r = j->lo; r < j->hi; r++) {
		const float *row = j->rows + r * j->dim;
		for (size_t q = 0; q < j->nq; q++) {
			const float *qq = j->qs + q * j->dim;
			float s = 0;
			for (size_t d = 0; d < j->dim; d++)
				s += row[d] * qq[d];
			float *b = j->best + q * j->k;
			uint64_t *bk = j->bkey + q * j->k;
			if (s <= b[j->k - 1])
				continue;
			size_t p = j->k - 1;
			while (p > 0 && b[p - 1] < s) {
				b[p] = b[p - 1];
				bk[p] = bk[p - 1];
				p--;
			}
			b[p] = s;
			bk[p] = r;
		}
	}
	return NULL;
}

int main(int argc, char **argv)
{
	size_t rows = argc > 1 ? strtoull(argv[1], NULL, 0) : 1000000;
	uint32_t dim = argc > 2 ? (uint32_t)strtoul(argv[2], NULL, 0) : 64;
	size_t nq = argc > 3 ? strtoull(argv[3], NULL, 0) : 64;
	size_t k = argc > 4 ? strtoull(argv[4], NULL, 0) : 10;
	unsigned nt = argc > 5 ? (unsigned)strtoul(argv[5], NULL, 0) : 2;
	int reps = argc > 6 ? atoi(argv[6]) : 5;

	struct de_arena_config ac = { .segment_bytes = 256u << 20, .pages = DE_PAGES_AUTO,
				      .numa_node = DE_NUMA_NONE, .name = "bench_topk" };
	de_arena *a;
	de_table *t;
	struct de_table_config tc = { .dim = dim, .seed = 1 };
	if (de_arena_create(&ac, &a) || de_table_open(a, &tc, &t)) {
		fprintf(stderr, "table setup failed\n");
		return 1;
	}
	float *vals = malloc(rows * dim * sizeof(float));
	float *qs = malloc(nq * dim * sizeof(float));
	uint64_t *keys = malloc(rows * sizeof(uint64_t));
	uint64_t *ok = malloc(nq * k * sizeof(uint64_t));
	float *os = malloc(nq * k * sizeof(float));
	if (!vals || !qs || !keys || !ok || !os)
		return 1;
	uint64_t s = 1;
	for (size_t i = 0; i < rows * dim; i++)
		vals[i] = (float)((double)(de_mix64(++s) >> 11) * 0x1p-53 - 0.5);
	for (size_t i = 0; i < nq * dim; i++)
		qs[i] = (float)((double)(de_mix64(++s) >> 11) * 0x1p-53 - 0.5);
	for (size_t i = 0; i < rows; i++)
		keys[i] = de_mix64(i + 1) | 1;
	for (size_t i = 0; i < rows; i += 65536) {
		size_t m = rows - i < 65536 ? rows - i : 65536;
		if (de_table_assign(t, keys + i, m, vals + i * dim, NULL, 1)) {
			fprintf(stderr, "assign failed\n");
			return 1;
		}
	}
	printf("top-k: %zu rows, dim %u, %zu queries per batch, k %zu, %u threads, pages %s\n",
	       rows, dim, nq, k, nt, de_pages_name(de_arena_pages(a)));
	for (int metric = 0; metric < 2; metric++) {
		double best = 1e30;
		for (int r = 0; r < reps; r++) {
			double t0 = now_s();
			int rc = de_topk(t, qs, nq, k, (enum de_topk_metric)metric, nt, ok, os, NULL);
			double dt = now_s() - t0;
			if (rc) {
				fprintf(stderr, "de_topk: %d\n", rc);
				return 1;
			}
			best = dt < best ? dt : best;
		}
		printf("de_topk %-6s: %.3f s per batch, %.0f queries/s, %.1f M rows/s, "
		       "%.2f G row-query pairs/s\n", metric ? "cosine" : "dot", best, nq / best,
		       rows / best / 1e6, rows * (double)nq / best / 1e9);
	}
	/* plain baseline */
	double best = 1e30;
	struct plain_job *jobs = calloc(nt, sizeof(*jobs));
	pthread_t *tid = calloc(nt, sizeof(*tid));
	for (int r = 0; r < reps; r++) {
		double t0 = now_s();
		for (unsigned i = 0; i < nt; i++) {
			jobs[i] = (struct plain_job){ vals, qs, rows * i / nt, rows * (i + 1) / nt, dim,
						      nq, k, malloc(nq * k * 4), malloc(nq * k * 8) };
			pthread_create(&tid[i], NULL, plain_main, &jobs[i]);
		}
		for (unsigned i = 0; i < nt; i++)
			pthread_join(tid[i], NULL);
		double dt = now_s() - t0;
		best = dt < best ? dt : best;
		for (unsigned i = 0; i < nt; i++) {
			free(jobs[i].best);
			free(jobs[i].bkey);
		}
	}
	printf("plain loop    : %.3f s per batch, %.0f queries/s, %.1f M rows/s\n", best,
	       nq / best, rows / best / 1e6);
	free(jobs);
	free(tid);
	free(vals);
	free(qs);
	free(keys);
	free(ok);
	free(os);
	de_table_close(t);
	de_arena_destroy(a);
	return 0;
}
