/*
 * topk.c — exact top-k by dot product or cosine over a table (public header: de_learn.h,
 * which states the ordering, the cosine convention and the limits).
 *
 * Owns: the scan (row-id ranges, one per thread, read with de_table_iterate_range so each
 * row is a consistent copy), the scoring kernel, the per-thread per-query heaps and the
 * merge of sorted per-shard lists (de_topk_merge, also used to merge the threads).
 * Never: writes to the table; keeps state between calls (several tables and threads use
 * this at once); lets the score of one (query, row) pair depend on where the row fell in
 * a block or which thread scanned it.
 * Callers: the daemon's top-k request, tests/sample/test_topk.c.
 *
 * Kernel: rows and queries are copied into buffers padded with zeros to a multiple of 8
 * floats (32-byte aligned), and every pair is scored as 8 lane accumulators acc += r * q
 * over the padded length, then summed in a fixed tree. A 4-row x 2-query micro-kernel
 * shares the loads; the 1 x 1 kernel for block remainders does the very same per-pair
 * operations, so results are bit-identical whatever the blocking. The body is compiled
 * twice, for the baseline ISA (GCC vector extensions: 2 x SSE per 8 lanes) and with
 * target("avx2,fma") (contraction gives FMAs), chosen once per call with
 * __builtin_cpu_supports. The padding adds +0 terms only (0 * 0), which change nothing.
 */
#include "de_learn.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define ROWS_PER_SCAN 256u /* rows fetched per de_table_iterate_range call */
#define QCHUNK 64u          /* queries scored per pass over a block of rows */

typedef float v8f __attribute__((vector_size(32), aligned(32)));
typedef int32_t v8si __attribute__((vector_size(32)));

/* ---- scoring kernel ---------------------------------------------------------------- */

static inline __attribute__((always_inline)) float hsum8(const v8f *pa)
{
	const v8f a = *pa;
	return ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
}

/* out[q * ld + r] = <rows[r], qs[q]> for r < nr, q < nq; vectors of dp floats (dp % 8 == 0,
 * 32-byte aligned). */
static inline __attribute__((always_inline)) void
score_block_body(const float *restrict rows, size_t nr, const float *restrict qs, size_t nq,
		 size_t dp, float *restrict out, size_t ld)
{
	const size_t nv = dp / 8;
	size_t r = 0;
	for (; r + 4 <= nr; r += 4) {
		const v8f *r0 = (const v8f *)(rows + r * dp), *r1 = r0 + nv, *r2 = r1 + nv,
			  *r3 = r2 + nv;
		size_t q = 0;
		for (; q + 2 <= nq; q += 2) {
			const v8f *q0 = (const v8f *)(qs + q * dp), *q1 = q0 + nv;
			v8f a00 = { 0 }, a01 = { 0 }, a10 = { 0 }, a11 = { 0 };
			v8f a20 = { 0 }, a21 = { 0 }, a30 = { 0 }, a31 = { 0 };
			for (size_t v = 0; v < nv; v++) {
				v8f x0 = q0[v], x1 = q1[v];
				v8f y0 = r0[v], y1 = r1[v], y2 = r2[v], y3 = r3[v];
				a00 += y0 * x0;
				a01 += y0 * x1;
				a10 += y1 * x0;
				a11 += y1 * x1;
				a20 += y2 * x0;
				a21 += y2 * x1;
				a30 += y3 * x0;
				a31 += y3 * x1;
			}
			float *o = out + q * ld + r;
			o[0] = hsum8(&a00);
			o[ld] = hsum8(&a01);
			o[1] = hsum8(&a10);
			o[ld + 1] = hsum8(&a11);
			o[2] = hsum8(&a20);
			o[ld + 2] = hsum8(&a21);
			o[3] = hsum8(&a30);
			o[ld + 3] = hsum8(&a31);
		}
		for (; q < nq; q++) {
			const v8f *q0 = (const v8f *)(qs + q * dp);
			for (size_t i = 0; i < 4; i++) {
				const v8f *ri = r0 + i * nv;
				v8f a = { 0 };
				for (size_t v = 0; v < nv; v++)
					a += ri[v] * q0[v];
				out[q * ld + r + i] = hsum8(&a);
			}
		}
	}
	for (; r < nr; r++) {
		const v8f *ri = (const v8f *)(rows + r * dp);
		for (size_t q = 0; q < nq; q++) {
			const v8f *q0 = (const v8f *)(qs + q * dp);
			v8f a = { 0 };
			for (size_t v = 0; v < nv; v++)
				a += ri[v] * q0[v];
			out[q * ld + r] = hsum8(&a);
		}
	}
}

typedef void (*score_fn)(const float *, size_t, const float *, size_t, size_t, float *, size_t);

static void score_block_base(const float *restrict rows, size_t nr, const float *restrict qs,
			     size_t nq, size_t dp, float *restrict out, size_t ld)
{
	score_block_body(rows, nr, qs, nq, dp, out, ld);
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2,fma"))) static void
score_block_avx2(const float *restrict rows, size_t nr, const float *restrict qs, size_t nq,
		 size_t dp, float *restrict out, size_t ld)
{
	score_block_body(rows, nr, qs, nq, dp, out, ld);
}
#endif

/* DE_TOPK_KERNEL=base in the environment forces the baseline kernel (tests run both). */
static score_fn pick_kernel(void)
{
	const char *force = getenv("DE_TOPK_KERNEL");
	if (force && !strcmp(force, "base"))
		return score_block_base;
#if defined(__x86_64__) && defined(__GNUC__)
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
		return score_block_avx2;
#endif
	return score_block_base;
}

/* ---- ordering and heaps -------------------------------------------------------------- */

struct ent {
	float score;
	uint64_t key;
};

/* a ranks before b: higher score, then smaller key */
static inline bool before(float as, uint64_t ak, float bs, uint64_t bk)
{
	return as > bs || (as == bs && ak < bk);
}

static inline float clean(float s) { return isnan(s) ? -INFINITY : s; }

/* Heap of the k best so far with the worst at h[0]. */
static void heap_push(struct ent *h, size_t *n, size_t k, float s, uint64_t key)
{
	size_t i;
	if (*n < k) {
		i = (*n)++;
		while (i) { /* sift up past parents that rank before it: the worst ends on top */
			size_t p = (i - 1) / 2;
			if (!before(h[p].score, h[p].key, s, key))
				break;
			h[i] = h[p];
			i = p;
		}
		h[i] = (struct ent){ s, key };
		return;
	}
	if (!before(s, key, h[0].score, h[0].key))
		return;
	i = 0; /* replace the worst, sift down */
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= *n)
			break;
		if (c + 1 < *n && before(h[c].score, h[c].key, h[c + 1].score, h[c + 1].key))
			c++; /* the worse child */
		if (!before(s, key, h[c].score, h[c].key))
			break; /* the new entry is worse than both children */
		h[i] = h[c];
		i = c;
	}
	h[i] = (struct ent){ s, key };
}

static int by_key_then_best(const void *a, const void *b)
{
	const struct ent *x = a, *y = b;
	if (x->key != y->key)
		return x->key < y->key ? -1 : 1;
	return x->score > y->score ? -1 : x->score < y->score ? 1 : 0;
}

static int by_rank(const void *a, const void *b)
{
	const struct ent *x = a, *y = b;
	if (before(x->score, x->key, y->score, y->key))
		return -1;
	return before(y->score, y->key, x->score, x->key) ? 1 : 0;
}

/* ---- merge ---------------------------------------------------------------------------- */

static bool merge_args_ok(size_t nq, size_t k_in, size_t k)
{
	return nq <= DE_TOPK_MAX_QUERIES && k <= DE_TOPK_MAX_K && k_in <= DE_TOPK_MAX_K &&
	       (uint64_t)nq * k <= DE_TOPK_MAX_RESULTS && (uint64_t)nq * k_in <= DE_TOPK_MAX_RESULTS;
}

int de_topk_merge(size_t nshards, const uint64_t *const *keys, const float *const *scores,
		  size_t nq, size_t k_in, size_t k, uint64_t *out_keys, float *out_scores,
		  size_t *found)
{
	if ((nshards && (!keys || !scores)) || !out_keys || !out_scores || !nq || !k || !k_in)
		return -EINVAL;
	if (!merge_args_ok(nq, k_in, k) || nshards > DE_TOPK_MAX_RESULTS / k_in)
		return -E2BIG;
	for (size_t s = 0; s < nshards; s++)
		if (!keys[s] || !scores[s])
			return -EINVAL;
	size_t cap = nshards * k_in;
	struct ent *c = malloc((cap ? cap : 1) * sizeof(*c));
	if (!c)
		return -ENOMEM;
	size_t most = 0;
	for (size_t q = 0; q < nq; q++) {
		size_t m = 0;
		for (size_t s = 0; s < nshards; s++)
			for (size_t j = 0; j < k_in; j++) {
				uint64_t key = keys[s][q * k_in + j];
				if (key)
					c[m++] = (struct ent){ clean(scores[s][q * k_in + j]), key };
			}
		/* one entry per key, its best score */
		qsort(c, m, sizeof(*c), by_key_then_best);
		size_t w = 0;
		for (size_t i = 0; i < m; i++)
			if (!w || c[i].key != c[w - 1].key)
				c[w++] = c[i];
		qsort(c, w, sizeof(*c), by_rank);
		size_t got = w < k ? w : k;
		for (size_t j = 0; j < k; j++) {
			out_keys[q * k + j] = j < got ? c[j].key : 0;
			out_scores[q * k + j] = j < got ? c[j].score : -INFINITY;
		}
		if (got > most)
			most = got;
	}
	free(c);
	if (found)
		*found = most;
	return 0;
}

/* ---- scan ------------------------------------------------------------------------------ */

struct ctx {
	de_table *t;
	const float *qs;  /* nq x dp, padded */
	const double *qinv; /* COSINE: 1 / |query|, 0 for a zero query */
	size_t nq, k, dim, dp;
	enum de_topk_metric metric;
	score_fn score;
};

struct job {
	const struct ctx *c;
	uint64_t lo, hi;
	struct ent *heap; /* nq x k */
	size_t *hn;       /* nq */
	uint64_t *okeys;  /* nq x k: sorted result of this job */
	float *oscores;
	int rc;
};

static void *run_job(void *arg)
{
	struct job *j = arg;
	const struct ctx *c = j->c;
	const size_t dp = c->dp, dim = c->dim, nq = c->nq;
	uint64_t *keys = malloc(ROWS_PER_SCAN * sizeof(uint64_t));
	float *vals = malloc(ROWS_PER_SCAN * dim * sizeof(float));
	float *rows = aligned_alloc(32, ROWS_PER_SCAN * dp * sizeof(float));
	float *sc = malloc(ROWS_PER_SCAN * QCHUNK * sizeof(float));
	double *rinv = malloc(ROWS_PER_SCAN * sizeof(double));
	if (!keys || !vals || !rows || !sc || !rinv) {
		j->rc = -ENOMEM;
		goto out;
	}
	memset(rows, 0, ROWS_PER_SCAN * dp * sizeof(float));
	uint64_t cursor = j->lo;
	for (;;) {
		size_t nr = 0;
		int rc = de_table_iterate_range(c->t, &cursor, j->hi, keys, vals, ROWS_PER_SCAN, &nr);
		if (rc) {
			j->rc = rc;
			goto out;
		}
		if (!nr)
			break;
		for (size_t r = 0; r < nr; r++) {
			memcpy(rows + r * dp, vals + r * dim, dim * sizeof(float));
			if (c->metric == DE_TOPK_COSINE) {
				double s = 0;
				for (size_t d = 0; d < dim; d++)
					s += (double)vals[r * dim + d] * vals[r * dim + d];
				rinv[r] = s > 0 ? 1.0 / sqrt(s) : 0.0;
			}
		}
		for (size_t q0 = 0; q0 < nq; q0 += QCHUNK) {
			size_t qc = nq - q0 < QCHUNK ? nq - q0 : QCHUNK;
			c->score(rows, nr, c->qs + q0 * dp, qc, dp, sc, ROWS_PER_SCAN);
			for (size_t q = 0; q < qc; q++) {
				struct ent *h = j->heap + (q0 + q) * c->k;
				size_t *hn = &j->hn[q0 + q];
				float *sq = sc + q * ROWS_PER_SCAN;
				if (c->metric == DE_TOPK_COSINE) {
					const double qi = c->qinv[q0 + q];
					for (size_t r = 0; r < nr; r++)
						sq[r] = (float)((double)sq[r] * qi * rinv[r]);
				}
				for (size_t r0 = 0; r0 < nr; r0 += 8) {
					size_t re = nr - r0 < 8 ? nr : r0 + 8;
					/* skip 8 scores at once when the heap is full and all are below
					 * its worst (NaN compares false, so it is looked at) */
					if (*hn == c->k && re == r0 + 8) {
						v8f v;
						memcpy(&v, sq + r0, sizeof(v));
						v8si lt = v < h[0].score;
						if (lt[0] & lt[1] & lt[2] & lt[3] & lt[4] & lt[5] & lt[6] & lt[7])
							continue;
					}
					for (size_t r = r0; r < re; r++) {
						float s = clean(sq[r]);
						if (*hn == c->k && !before(s, keys[r], h[0].score, h[0].key))
							continue;
						heap_push(h, hn, c->k, s, keys[r]);
					}
				}
			}
		}
	}
	/* sorted list with key-0 padding, the input format of de_topk_merge */
	for (size_t q = 0; q < nq; q++) {
		struct ent *h = j->heap + q * c->k;
		qsort(h, j->hn[q], sizeof(*h), by_rank);
		for (size_t i = 0; i < c->k; i++) {
			j->okeys[q * c->k + i] = i < j->hn[q] ? h[i].key : 0;
			j->oscores[q * c->k + i] = i < j->hn[q] ? h[i].score : -INFINITY;
		}
	}
out:
	free(keys);
	free(vals);
	free(rows);
	free(sc);
	free(rinv);
	return NULL;
}

int de_topk(de_table *t, const float *queries, size_t nq, size_t k, enum de_topk_metric metric,
	    unsigned nthreads, uint64_t *keys, float *scores, size_t *found)
{
	if (!t || !queries || !keys || !scores || !nq || !k ||
	    (metric != DE_TOPK_DOT && metric != DE_TOPK_COSINE))
		return -EINVAL;
	if (k > DE_TOPK_MAX_K || nq > DE_TOPK_MAX_QUERIES || (uint64_t)nq * k > DE_TOPK_MAX_RESULTS ||
	    nthreads > DE_TOPK_MAX_THREADS)
		return -E2BIG;
	const size_t dim = de_table_dim(t);
	if (!dim)
		return -EINVAL;
	for (size_t i = 0; i < nq * dim; i++)
		if (!isfinite(queries[i]))
			return -EINVAL;
	unsigned nt = nthreads ? nthreads : 1;
	uint64_t lim = de_table_row_limit(t);
	if (nt > 1 && lim < (uint64_t)nt * ROWS_PER_SCAN) /* not worth a thread */
		nt = (unsigned)(lim / ROWS_PER_SCAN) + 1;

	const size_t dp = (dim + 7) & ~(size_t)7;
	int rc = 0;
	struct ctx c = { .t = t, .nq = nq, .k = k, .dim = dim, .dp = dp, .metric = metric,
			 .score = pick_kernel() };
	float *qs = aligned_alloc(32, nq * dp * sizeof(float));
	double *qn = malloc(nq * sizeof(double));
	struct job *jobs = calloc(nt, sizeof(*jobs));
	pthread_t *tid = calloc(nt, sizeof(*tid));
	bool *started = calloc(nt, sizeof(*started));
	const uint64_t **lk = calloc(nt, sizeof(*lk));
	const float **ls = calloc(nt, sizeof(*ls));
	if (!qs || !qn || !jobs || !tid || !started || !lk || !ls) {
		rc = -ENOMEM;
		goto out;
	}
	memset(qs, 0, nq * dp * sizeof(float));
	for (size_t q = 0; q < nq; q++) {
		double s = 0;
		for (size_t d = 0; d < dim; d++) {
			qs[q * dp + d] = queries[q * dim + d];
			s += (double)queries[q * dim + d] * queries[q * dim + d];
		}
		qn[q] = s > 0 ? 1.0 / sqrt(s) : 0.0;
	}
	c.qs = qs;
	c.qinv = qn;
	for (unsigned i = 0; i < nt; i++) {
		struct job *j = &jobs[i];
		j->c = &c;
		j->lo = lim * i / nt;
		j->hi = i + 1 == nt ? UINT64_MAX : lim * (i + 1) / nt; /* the last takes growth */
		j->heap = malloc(nq * k * sizeof(struct ent));
		j->hn = calloc(nq, sizeof(size_t));
		j->okeys = malloc(nq * k * sizeof(uint64_t));
		j->oscores = malloc(nq * k * sizeof(float));
		if (!j->heap || !j->hn || !j->okeys || !j->oscores) {
			rc = -ENOMEM;
			goto out;
		}
		lk[i] = j->okeys;
		ls[i] = j->oscores;
	}
	for (unsigned i = 1; i < nt; i++) /* a thread that cannot start runs below, inline */
		started[i] = pthread_create(&tid[i], NULL, run_job, &jobs[i]) == 0;
	run_job(&jobs[0]);
	for (unsigned i = 1; i < nt; i++) {
		if (started[i])
			pthread_join(tid[i], NULL);
		else
			run_job(&jobs[i]);
	}
	for (unsigned i = 0; i < nt && !rc; i++)
		rc = jobs[i].rc;
	if (!rc)
		rc = de_topk_merge(nt, lk, ls, nq, k, k, keys, scores, found);
out:
	for (unsigned i = 0; jobs && i < nt; i++) {
		free(jobs[i].heap);
		free(jobs[i].hn);
		free(jobs[i].okeys);
		free(jobs[i].oscores);
	}
	free(qs);
	free(qn);
	free(jobs);
	free(tid);
	free(started);
	free(lk);
	free(ls);
	return rc;
}
