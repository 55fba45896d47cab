/*
 * test_topk.c — de_topk and de_topk_merge against a brute-force reference written here:
 * every live row scored in double precision, then a full sort (score descending, key
 * ascending). The test keeps its own model of what it stored (keys, values, erased).
 *
 * DOT tests use values that are multiples of 1/8 in [-1, 1], so every float dot product
 * of up to 130 terms is exact and the comparison is exact, ties (there are many) included:
 * the tie order by key is checked too. COSINE scores go through a division, so they are
 * compared rank by rank within 2e-6, and each returned key's own reference score must
 * agree with the score returned for it.
 */
#ifdef DE_MINI_CRITERION
#include "../mini_criterion.h" /* ThreadSanitizer build: see that header */
#else
#include <criterion/criterion.h>
#endif

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "sample_util.h"

/* ---- model and reference ------------------------------------------------------------ */

struct model {
	size_t n, dim;
	uint64_t *keys;
	float *vals;
	bool *live;
};

static float small_val(uint64_t *rng) { return (float)((int)rng_below(rng, 17) - 8) / 8.0f; }

/* n rows with small values; row `zero_row` (if < n) all zeros */
static struct model model_fill(de_table *t, size_t n, size_t dim, uint64_t seed, size_t zero_row)
{
	struct model m = { .n = n, .dim = dim };
	m.keys = xcalloc(n, sizeof(uint64_t));
	m.vals = xcalloc(n * dim, sizeof(float));
	m.live = xcalloc(n, sizeof(bool));
	uint64_t rng = seed;
	for (size_t i = 0; i < n; i++) {
		m.keys[i] = tkey(i + seed * 1000003);
		m.live[i] = true;
		for (size_t d = 0; d < dim; d++)
			m.vals[i * dim + d] = i == zero_row ? 0.0f : small_val(&rng);
	}
	cr_assert_eq(de_table_assign(t, m.keys, n, m.vals, NULL, 1), 0);
	return m;
}

static void model_erase_every(de_table *t, struct model *m, size_t every)
{
	for (size_t i = 0; i < m->n; i += every) {
		size_t e = 0;
		cr_assert_eq(de_table_erase(t, &m->keys[i], 1, &e), 0);
		cr_assert_eq(e, 1);
		m->live[i] = false;
	}
}

static void model_free(struct model *m)
{
	free(m->keys);
	free(m->vals);
	free(m->live);
}

struct rent {
	double score;
	uint64_t key;
};

static int rent_cmp(const void *a, const void *b)
{
	const struct rent *x = a, *y = b;
	if (x->score != y->score)
		return x->score > y->score ? -1 : 1;
	return (x->key > y->key) - (x->key < y->key);
}

static double ref_score(const float *q, const float *r, size_t dim, enum de_topk_metric metric)
{
	double dot = 0, nq = 0, nr = 0;
	for (size_t d = 0; d < dim; d++) {
		dot += (double)q[d] * r[d];
		nq += (double)q[d] * q[d];
		nr += (double)r[d] * r[d];
	}
	if (metric == DE_TOPK_DOT)
		return dot;
	return nq == 0 || nr == 0 ? 0 : dot / (sqrt(nq) * sqrt(nr));
}

/* the full sorted list of live rows for query q; returns how many */
static size_t ref_rank(const struct model *m, const float *q, enum de_topk_metric metric,
		       struct rent *out)
{
	size_t w = 0;
	for (size_t i = 0; i < m->n; i++)
		if (m->live[i])
			out[w++] = (struct rent){ ref_score(q, &m->vals[i * m->dim], m->dim, metric),
						  m->keys[i] };
	qsort(out, w, sizeof(*out), rent_cmp);
	return w;
}

static size_t model_index(const struct model *m, uint64_t key)
{
	for (size_t i = 0; i < m->n; i++)
		if (m->keys[i] == key)
			return i;
	return SIZE_MAX;
}

/* de_topk's answer vs the reference, for all queries */
static void check_topk(const struct model *m, const float *qs, size_t nq, size_t k,
		       enum de_topk_metric metric, const uint64_t *keys, const float *scores,
		       size_t found, const char *what)
{
	struct rent *ref = xcalloc(m->n + 1, sizeof(*ref));
	for (size_t q = 0; q < nq; q++) {
		size_t live = ref_rank(m, qs + q * m->dim, metric, ref);
		size_t want = live < k ? live : k;
		cr_assert_eq(found, want, "%s: found %zu, want %zu", what, found, want);
		for (size_t j = 0; j < k; j++) {
			uint64_t key = keys[q * k + j];
			float s = scores[q * k + j];
			if (j >= want) {
				cr_assert_eq(key, 0, "%s: q %zu entry %zu past found is not empty", what,
					     q, j);
				cr_assert(isinf(s) && s < 0, "%s: empty entry score %g", what, s);
				continue;
			}
			size_t i = model_index(m, key);
			cr_assert(i != SIZE_MAX && m->live[i], "%s: q %zu rank %zu: key %#lx not live",
				  what, q, j, (unsigned long)key);
			for (size_t jj = 0; jj < j; jj++)
				cr_assert_neq(keys[q * k + jj], key, "%s: duplicate key", what);
			if (metric == DE_TOPK_DOT) {
				cr_assert_eq(key, ref[j].key, "%s: q %zu rank %zu: key %#lx, want %#lx "
					     "(scores %g / %g)", what, q, j, (unsigned long)key,
					     (unsigned long)ref[j].key, s, ref[j].score);
				cr_assert_eq((double)s, ref[j].score, "%s: q %zu rank %zu score", what,
					     q, j);
			} else {
				double own = ref_score(qs + q * m->dim, &m->vals[i * m->dim], m->dim,
						       metric);
				cr_assert(fabs(s - ref[j].score) <= 2e-6, "%s: q %zu rank %zu: score "
					  "%.9g, reference %.9g", what, q, j, s, ref[j].score);
				cr_assert(fabs(s - own) <= 2e-6, "%s: q %zu rank %zu: key's own score "
					  "%.9g, returned %.9g", what, q, j, own, s);
			}
		}
	}
	free(ref);
}

static float *mk_queries(size_t nq, size_t dim, uint64_t seed, bool first_zero)
{
	float *qs = xcalloc(nq * dim, sizeof(float));
	uint64_t rng = seed;
	for (size_t i = (first_zero ? 1 : 0) * dim; i < nq * dim; i++)
		qs[i] = small_val(&rng);
	return qs;
}

/* ---- exactness against the reference ------------------------------------------------- */

static void run_case(uint32_t dim, size_t n, size_t k, enum de_topk_metric metric,
		     unsigned nthreads, size_t erase_every)
{
	struct fix f = fix_open(dim, 0);
	struct model m = model_fill(f.t, n, dim, dim * 7 + n, n / 2);
	if (erase_every)
		model_erase_every(f.t, &m, erase_every);
	const size_t nq = 5;
	float *qs = mk_queries(nq, dim, 99 + dim, true);
	uint64_t *keys = xcalloc(nq * k, sizeof(uint64_t));
	float *scores = xcalloc(nq * k, sizeof(float));
	size_t found = 12345;
	int rc = de_topk(f.t, qs, nq, k, metric, nthreads, keys, scores, &found);
	cr_assert_eq(rc, 0, "de_topk: %d", rc);
	char what[96];
	snprintf(what, sizeof(what), "dim %u n %zu k %zu %s threads %u erase/%zu", dim, n, k,
		 metric == DE_TOPK_DOT ? "dot" : "cosine", nthreads, erase_every);
	check_topk(&m, qs, nq, k, metric, keys, scores, found, what);
	free(qs);
	free(keys);
	free(scores);
	model_free(&m);
	fix_close(&f);
}

Test(topk, dot_matches_reference)
{
	const uint32_t dims[] = { 1, 7, 64, 130 };
	const size_t ks[] = { 1, 10 };
	for (size_t d = 0; d < 4; d++)
		for (size_t j = 0; j < 2; j++)
			run_case(dims[d], 1500, ks[j], DE_TOPK_DOT, 1, 0);
}

Test(topk, cosine_matches_reference)
{
	const uint32_t dims[] = { 1, 7, 64, 130 };
	const size_t ks[] = { 1, 10 };
	for (size_t d = 0; d < 4; d++)
		for (size_t j = 0; j < 2; j++)
			run_case(dims[d], 1500, ks[j], DE_TOPK_COSINE, 1, 0);
}

Test(topk, k_more_than_live_keys)
{
	run_case(7, 40, 64, DE_TOPK_DOT, 1, 0);
	run_case(7, 40, 64, DE_TOPK_COSINE, 2, 0);
	run_case(130, 12, 13, DE_TOPK_DOT, 3, 3); /* 8 live of 12 */
}

Test(topk, erased_keys_never_returned)
{
	/* k covers every live key: an erased one would have to show up */
	run_case(7, 600, 600, DE_TOPK_DOT, 2, 3);
	run_case(64, 1500, 10, DE_TOPK_DOT, 2, 2);
	run_case(64, 1500, 10, DE_TOPK_COSINE, 1, 2);
}

Test(topk, empty_table)
{
	struct fix f = fix_open(4, 0);
	float q[4] = { 1, 2, 3, 4 };
	uint64_t keys[3] = { 7, 7, 7 };
	float sc[3];
	size_t found = 9;
	cr_assert_eq(de_topk(f.t, q, 1, 3, DE_TOPK_DOT, 2, keys, sc, &found), 0);
	cr_assert_eq(found, 0);
	for (int i = 0; i < 3; i++)
		cr_assert(keys[i] == 0 && isinf(sc[i]) && sc[i] < 0);
	fix_close(&f);
}

/* bit-identical results whatever the thread count (the blocking changes with it) */
Test(topk, threads_identical)
{
	for (int metric = 0; metric < 2; metric++) {
		for (uint32_t dim = 7; dim <= 64; dim += 57) {
			struct fix f = fix_open(dim, 0);
			uint64_t rng = 5;
			size_t n = 5003;
			uint64_t *ks = xcalloc(n, sizeof(uint64_t));
			float *v = xcalloc(n * dim, sizeof(float));
			for (size_t i = 0; i < n; i++) {
				ks[i] = tkey(i);
				for (size_t d = 0; d < dim; d++) /* full-precision values */
					v[i * dim + d] = (float)((double)rng_next(&rng) / 1.8446744e19 - 0.5);
			}
			cr_assert_eq(de_table_assign(f.t, ks, n, v, NULL, 1), 0);
			cr_assert_eq(de_table_erase(f.t, ks, n / 7, NULL), 0);
			const size_t nq = 67, k = 25; /* nq odd: the 2-query kernel's remainder */
			float *qs = xcalloc(nq * dim, sizeof(float));
			for (size_t i = 0; i < nq * dim; i++)
				qs[i] = (float)((double)rng_next(&rng) / 1.8446744e19 - 0.5);
			uint64_t *k1 = xcalloc(nq * k, 8), *kt = xcalloc(nq * k, 8);
			float *s1 = xcalloc(nq * k, 4), *st = xcalloc(nq * k, 4);
			size_t f1, ft;
			cr_assert_eq(de_topk(f.t, qs, nq, k, (enum de_topk_metric)metric, 1, k1, s1, &f1), 0);
			cr_assert_eq(f1, k);
			const unsigned nts[] = { 2, 3, 7, 16 };
			for (int i = 0; i < 4; i++) {
				cr_assert_eq(de_topk(f.t, qs, nq, k, (enum de_topk_metric)metric, nts[i],
						     kt, st, &ft), 0);
				cr_assert_eq(ft, f1);
				cr_assert(!memcmp(k1, kt, nq * k * 8), "metric %d dim %u: keys differ "
					  "with %u threads", metric, dim, nts[i]);
				cr_assert(!memcmp(s1, st, nq * k * 4), "metric %d dim %u: scores differ "
					  "with %u threads", metric, dim, nts[i]);
			}
			/* and the answer itself is right (near ties: tolerance on scores) */
			struct model m = { .n = n, .dim = dim, .keys = ks, .vals = v };
			m.live = xcalloc(n, sizeof(bool));
			for (size_t i = n / 7; i < n; i++)
				m.live[i] = true;
			if (metric == DE_TOPK_COSINE)
				check_topk(&m, qs, nq, k, DE_TOPK_COSINE, k1, s1, f1, "threads cosine");
			else {
				struct rent *ref = xcalloc(n, sizeof(*ref));
				for (size_t q = 0; q < nq; q++) {
					ref_rank(&m, qs + q * dim, DE_TOPK_DOT, ref);
					for (size_t j = 0; j < k; j++)
						cr_assert(fabs(s1[q * k + j] - ref[j].score) <= 1e-5,
							  "dot rank %zu: %g vs %g", j, s1[q * k + j],
							  ref[j].score);
				}
				free(ref);
			}
			free(m.live);
			free(ks);
			free(v);
			free(qs);
			free(k1);
			free(kt);
			free(s1);
			free(st);
			fix_close(&f);
		}
	}
}

Test(topk, nan_row_ranks_last)
{
	struct fix f = fix_open(2, 0);
	uint64_t ks[3] = { 11, 22, 33 };
	float v[6] = { 1, 0, NAN, 1, -5, -5 };
	cr_assert_eq(de_table_assign(f.t, ks, 3, v, NULL, 1), 0);
	float q[2] = { 1, 1 };
	uint64_t out[4];
	float sc[4];
	size_t found;
	cr_assert_eq(de_topk(f.t, q, 1, 4, DE_TOPK_DOT, 1, out, sc, &found), 0);
	cr_assert_eq(found, 3);
	cr_assert(out[0] == 11 && sc[0] == 1.0f);
	cr_assert(out[1] == 33 && sc[1] == -10.0f);
	cr_assert(out[2] == 22 && isinf(sc[2]) && sc[2] < 0, "NaN row: key %lu score %g",
		  (unsigned long)out[2], sc[2]);
	cr_assert(out[3] == 0);
	fix_close(&f);
}

/* string-keyed table: the daemon maps the returned fingerprints back to its strings */
Test(topk, string_keys_map_back)
{
	struct fix f = fix_open(3, 0);
	enum { N = 200 };
	char names[N][16];
	uint64_t ks[N];
	float v[N * 3];
	uint64_t rng = 3;
	for (int i = 0; i < N; i++) {
		snprintf(names[i], sizeof(names[i]), "word%d", i);
		ks[i] = de_key_from_string(42, names[i], strlen(names[i]));
		for (int d = 0; d < 3; d++)
			v[i * 3 + d] = small_val(&rng);
	}
	cr_assert_eq(de_table_assign(f.t, ks, N, v, NULL, 1), 0);
	float q[3] = { 0.5f, -1, 0.25f };
	uint64_t out[5];
	float sc[5];
	cr_assert_eq(de_topk(f.t, q, 1, 5, DE_TOPK_DOT, 1, out, sc, NULL), 0);
	/* reference over the strings: best score, then smallest fingerprint */
	struct rent ref[N];
	for (int i = 0; i < N; i++)
		ref[i] = (struct rent){ ref_score(q, &v[i * 3], 3, DE_TOPK_DOT), ks[i] };
	qsort(ref, N, sizeof(ref[0]), rent_cmp);
	for (int j = 0; j < 5; j++) {
		int who = -1;
		for (int i = 0; i < N; i++)
			if (ks[i] == out[j])
				who = i;
		cr_assert(who >= 0, "rank %d: unknown fingerprint", j);
		cr_assert_eq(out[j], ref[j].key, "rank %d: got \"%s\"", j, names[who]);
	}
	fix_close(&f);
}

/* ---- merging shards ------------------------------------------------------------------ */

Test(topk, merge_of_shards_equals_whole)
{
	const uint32_t dim = 64;
	const size_t n = 3000, nq = 9, k = 10;
	struct fix whole = fix_open(dim, 0);
	struct model m = model_fill(whole.t, n, dim, 17, 5);
	struct fix sh[3] = { fix_open(dim, 0), fix_open(dim, 0), fix_open(dim, 0) };
	for (size_t i = 0; i < n; i++) /* shard by key, as the daemon would */
		cr_assert_eq(de_table_assign(sh[m.keys[i] % 3].t, &m.keys[i], 1,
					     &m.vals[i * dim], NULL, 1), 0);
	float *qs = mk_queries(nq, dim, 4, false);
	for (int metric = 0; metric < 2; metric++) {
		uint64_t *sk[3];
		float *ss[3];
		for (int s = 0; s < 3; s++) {
			sk[s] = xcalloc(nq * k, 8);
			ss[s] = xcalloc(nq * k, 4);
			cr_assert_eq(de_topk(sh[s].t, qs, nq, k, (enum de_topk_metric)metric, 2, sk[s],
					     ss[s], NULL), 0);
		}
		uint64_t mk[nq * k], wk[nq * k];
		float ms[nq * k], ws[nq * k];
		size_t mf, wf;
		cr_assert_eq(de_topk_merge(3, (const uint64_t *const *)sk, (const float *const *)ss,
					   nq, k, k, mk, ms, &mf), 0);
		cr_assert_eq(de_topk(whole.t, qs, nq, k, (enum de_topk_metric)metric, 1, wk, ws, &wf), 0);
		check_topk(&m, qs, nq, k, (enum de_topk_metric)metric, mk, ms, mf, "merged shards");
		cr_assert_eq(mf, wf);
		cr_assert(!memcmp(mk, wk, sizeof(mk)) && !memcmp(ms, ws, sizeof(ms)),
			  "merged shards differ from the whole table");
		for (int s = 0; s < 3; s++) {
			free(sk[s]);
			free(ss[s]);
		}
	}
	free(qs);
	model_free(&m);
	for (int s = 0; s < 3; s++)
		fix_close(&sh[s]);
	fix_close(&whole);
}

/* peers' answers are untrusted: duplicates, NaN, empty slots, unsorted input */
Test(topk, merge_untrusted_input)
{
	const uint64_t a[2 * 4] = { 5, 0, 9, 7,   /* query 0 */
				    1, 2, 3, 4 }; /* query 1 */
	const float as[2 * 4] = { 1.0f, 100.0f, NAN, 2.0f,  4, 3, 2, 1 };
	const uint64_t b[2 * 4] = { 7, 5, 8, 8,  0, 0, 0, 0 };
	const float bs[2 * 4] = { 0.5f, 3.0f, 2.0f, 2.5f,  9, 9, 9, 9 };
	const uint64_t *ks[2] = { a, b };
	const float *ss[2] = { as, bs };
	uint64_t out[2 * 3];
	float os[2 * 3];
	size_t found;
	cr_assert_eq(de_topk_merge(2, ks, ss, 2, 4, 3, out, os, &found), 0);
	/* query 0: 5 -> best 3.0, 7 -> 2.0, 8 -> 2.5, 9 -> NaN = -inf; ties none */
	cr_assert(out[0] == 5 && os[0] == 3.0f);
	cr_assert(out[1] == 8 && os[1] == 2.5f);
	cr_assert(out[2] == 7 && os[2] == 2.0f);
	cr_assert(out[3] == 1 && out[4] == 2 && out[5] == 3);
	cr_assert_eq(found, 3);
	/* k larger than what is there: padding; ties by key */
	const uint64_t c[3] = { 30, 10, 20 };
	const float cs[3] = { 1, 1, 1 };
	const uint64_t *ck[1] = { c };
	const float *cf[1] = { cs };
	uint64_t o2[5];
	float s2[5];
	cr_assert_eq(de_topk_merge(1, ck, cf, 1, 3, 5, o2, s2, &found), 0);
	cr_assert_eq(found, 3);
	cr_assert(o2[0] == 10 && o2[1] == 20 && o2[2] == 30 && o2[3] == 0 && o2[4] == 0);
	cr_assert(isinf(s2[4]) && s2[4] < 0);
	/* no shards at all */
	cr_assert_eq(de_topk_merge(0, NULL, NULL, 1, 3, 2, o2, s2, &found), 0);
	cr_assert(found == 0 && o2[0] == 0 && o2[1] == 0);
}

/* ---- errors ------------------------------------------------------------------------------ */

Test(topk, errors)
{
	struct fix f = fix_open(4, 0);
	float q[8] = { 1, 2, 3, 4, 1, 1, 1, 1 };
	uint64_t k[8];
	float s[8];
	cr_assert_eq(de_topk(NULL, q, 1, 1, DE_TOPK_DOT, 1, k, s, NULL), -EINVAL);
	cr_assert_eq(de_topk(f.t, NULL, 1, 1, DE_TOPK_DOT, 1, k, s, NULL), -EINVAL);
	cr_assert_eq(de_topk(f.t, q, 1, 1, DE_TOPK_DOT, 1, NULL, s, NULL), -EINVAL);
	cr_assert_eq(de_topk(f.t, q, 1, 1, DE_TOPK_DOT, 1, k, NULL, NULL), -EINVAL);
	cr_assert_eq(de_topk(f.t, q, 0, 1, DE_TOPK_DOT, 1, k, s, NULL), -EINVAL);
	cr_assert_eq(de_topk(f.t, q, 1, 0, DE_TOPK_DOT, 1, k, s, NULL), -EINVAL);
	cr_assert_eq(de_topk(f.t, q, 1, 1, (enum de_topk_metric)7, 1, k, s, NULL), -EINVAL);
	float bad[4] = { 1, NAN, 0, 0 };
	cr_assert_eq(de_topk(f.t, bad, 1, 1, DE_TOPK_DOT, 1, k, s, NULL), -EINVAL);
	bad[1] = INFINITY;
	cr_assert_eq(de_topk(f.t, bad, 1, 1, DE_TOPK_COSINE, 1, k, s, NULL), -EINVAL);
	cr_assert_eq(de_topk(f.t, q, 1, DE_TOPK_MAX_K + 1, DE_TOPK_DOT, 1, k, s, NULL), -E2BIG);
	cr_assert_eq(de_topk(f.t, q, DE_TOPK_MAX_QUERIES + 1, 1, DE_TOPK_DOT, 1, k, s, NULL), -E2BIG);
	cr_assert_eq(de_topk(f.t, q, 4096, 4097, DE_TOPK_DOT, 1, k, s, NULL), -E2BIG);
	cr_assert_eq(de_topk(f.t, q, 1, 1, DE_TOPK_DOT, DE_TOPK_MAX_THREADS + 1, k, s, NULL), -E2BIG);

	const uint64_t *ks[1] = { k };
	const float *ss[1] = { s };
	const uint64_t *nk[1] = { NULL };
	cr_assert_eq(de_topk_merge(1, NULL, ss, 1, 1, 1, k, s, NULL), -EINVAL);
	cr_assert_eq(de_topk_merge(1, ks, NULL, 1, 1, 1, k, s, NULL), -EINVAL);
	cr_assert_eq(de_topk_merge(1, nk, ss, 1, 1, 1, k, s, NULL), -EINVAL);
	cr_assert_eq(de_topk_merge(1, ks, ss, 1, 1, 1, NULL, s, NULL), -EINVAL);
	cr_assert_eq(de_topk_merge(1, ks, ss, 1, 1, 1, k, NULL, NULL), -EINVAL);
	cr_assert_eq(de_topk_merge(1, ks, ss, 0, 1, 1, k, s, NULL), -EINVAL);
	cr_assert_eq(de_topk_merge(1, ks, ss, 1, 0, 1, k, s, NULL), -EINVAL);
	cr_assert_eq(de_topk_merge(1, ks, ss, 1, 1, 0, k, s, NULL), -EINVAL);
	cr_assert_eq(de_topk_merge(1, ks, ss, 1, DE_TOPK_MAX_K + 1, 1, k, s, NULL), -E2BIG);
	cr_assert_eq(de_topk_merge(1, ks, ss, 1, 1, DE_TOPK_MAX_K + 1, k, s, NULL), -E2BIG);
	cr_assert_eq(de_topk_merge(1, ks, ss, DE_TOPK_MAX_QUERIES + 1, 1, 1, k, s, NULL), -E2BIG);
	/* too many shards is refused before any shard pointer is read */
	cr_assert_eq(de_topk_merge(SIZE_MAX / 2, ks, ss, 1, 64, 1, k, s, NULL), -E2BIG);
	fix_close(&f);
}

/* ---- concurrency ----------------------------------------------------------------------- */

struct churn {
	de_table *t;
	atomic_bool stop;
	size_t universe;
};

static void *churn_main(void *arg)
{
	struct churn *c = arg;
	uint64_t rng = 77;
	float v[4];
	while (!atomic_load(&c->stop)) {
		uint64_t key = tkey(rng_below(&rng, c->universe));
		if (rng_below(&rng, 2)) {
			for (int d = 0; d < 4; d++)
				v[d] = (float)(key & 0xff) / 256.0f * (d + 1);
			de_table_assign(c->t, &key, 1, v, NULL, 2);
		} else {
			de_table_erase(c->t, &key, 1, NULL);
		}
	}
	return NULL;
}

/* top-k during inserts and erases: never crashes, returns only keys of the universe with
 * the values their writer gives them (a row is never torn or another key's) */
Test(topk, concurrent_writers)
{
	struct fix f = fix_open(4, 0);
	struct churn c = { .t = f.t, .universe = 4000 };
	atomic_init(&c.stop, false);
	for (size_t i = 0; i < c.universe; i += 2) {
		uint64_t key = tkey(i);
		float v[4];
		for (int d = 0; d < 4; d++)
			v[d] = (float)(key & 0xff) / 256.0f * (d + 1);
		cr_assert_eq(de_table_assign(f.t, &key, 1, v, NULL, 1), 0);
	}
	pthread_t th;
	cr_assert_eq(pthread_create(&th, NULL, churn_main, &c), 0);
	float q[4] = { 1, 1, 1, 1 };
	uint64_t ks[20];
	float sc[20];
	double end = now_s() + 1.0;
	int calls = 0;
	bool bad = false;
	while (now_s() < end && !bad) {
		size_t found;
		int rc = de_topk(f.t, q, 1, 20, DE_TOPK_DOT, 2, ks, sc, &found);
		if (rc || found == 0) {
			bad = true;
			break;
		}
		for (size_t j = 0; j < found; j++) {
			uint64_t key = ks[j];
			double want = 0;
			for (int d = 0; d < 4; d++)
				want += (float)(key & 0xff) / 256.0f * (d + 1);
			bool known = false;
			for (size_t i = 0; i < c.universe && !known; i++)
				known = tkey(i) == key;
			if (!known || fabs(sc[j] - want) > 1e-5)
				bad = true;
		}
		calls++;
	}
	atomic_store(&c.stop, true);
	pthread_join(th, NULL);
	cr_assert(!bad, "bad top-k under concurrent writes (after %d calls)", calls);
	cr_assert(calls > 0);
	fix_close(&f);
}
