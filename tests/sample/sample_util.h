/*
 * sample_util.h — helpers shared by the sampling and top-k tests: a table in a small
 * private arena, bulk inserts with a chosen frequency, and statistics (a chi-square
 * critical value from the Wilson–Hilferty approximation, the normal quantile by
 * bisection on erfc). Include after the Criterion header.
 */
#ifndef DE_SAMPLE_UTIL_H
#define DE_SAMPLE_UTIL_H

#include <errno.h>
#include <math.h>
#include <string.h>

#include "de_learn.h"
#include "../test_util.h"

struct fix {
	de_arena *a;
	de_table *t;
	uint32_t dim;
};

static inline struct fix fix_open(uint32_t dim, uint64_t seg_bytes)
{
	struct fix f = { .dim = dim };
	struct de_arena_config ac = {
		.segment_bytes = seg_bytes,
		.pages = DE_PAGES_SMALL,
		.numa_node = DE_NUMA_NONE,
		.name = "test_sample",
	};
	int rc = de_arena_create(&ac, &f.a);
	cr_assert_eq(rc, 0, "de_arena_create: %d", rc);
	struct de_table_config tc = { .dim = dim, .init = DE_INIT_ZEROS, .seed = 42 };
	rc = de_table_open(f.a, &tc, &f.t);
	cr_assert_eq(rc, 0, "de_table_open: %d", rc);
	return f;
}

static inline void fix_close(struct fix *f)
{
	de_table_close(f->t);
	de_arena_destroy(f->a);
}

/* key i of a test: distinct, never 0 */
static inline uint64_t tkey(uint64_t i) { return mix64(i + 0x5151) | 1; }

/* Raise key's freq by `times` (each find_or_insert of a key counts once per occurrence). */
static inline void bump(de_table *t, uint64_t key, uint32_t times)
{
	enum { B = 4096 };
	static __thread uint64_t ks[B];
	static __thread float out[B * 8];
	cr_assert(de_table_dim(t) <= 8);
	for (uint32_t i = 0; i < B; i++)
		ks[i] = key;
	while (times) {
		uint32_t m = times < B ? times : B;
		cr_assert_eq(de_table_find_or_insert(t, ks, m, out, NULL, 1), 0);
		times -= m;
	}
}

/* upper-tail standard normal quantile: z with P(Z > z) = p, by bisection */
static inline double z_upper(double p)
{
	double lo = 0, hi = 40;
	for (int i = 0; i < 200; i++) {
		double mid = 0.5 * (lo + hi);
		if (0.5 * erfc(mid / sqrt(2.0)) > p)
			lo = mid;
		else
			hi = mid;
	}
	return 0.5 * (lo + hi);
}

/* chi-square critical value with df degrees of freedom at upper-tail p (Wilson–Hilferty) */
static inline double chi2_crit(double df, double p)
{
	double z = z_upper(p), h = 2.0 / (9.0 * df);
	double c = 1.0 - h + z * sqrt(h);
	return df * c * c * c;
}

/*
 * Pearson's chi-square of observed counts obs[i] against probabilities p[i] (sum 1) over
 * total draws; cells with expected count < 5 are pooled into one. Fails the test when the
 * statistic exceeds the critical value at p = 1e-6. Returns the statistic.
 */
static inline double chi2_check(const uint64_t *obs, const double *p, size_t m, uint64_t total,
				const char *what)
{
	double stat = 0, pool_e = 0, pool_o = 0, psum = 0;
	size_t cells = 0;
	for (size_t i = 0; i < m; i++) {
		double e = p[i] * (double)total;
		psum += p[i];
		if (e < 5) {
			pool_e += e;
			pool_o += (double)obs[i];
			continue;
		}
		stat += ((double)obs[i] - e) * ((double)obs[i] - e) / e;
		cells++;
	}
	cr_assert(fabs(psum - 1.0) < 1e-9, "%s: reference probabilities sum to %.12f", what, psum);
	if (pool_e >= 5) {
		stat += (pool_o - pool_e) * (pool_o - pool_e) / pool_e;
		cells++;
	} else {
		cr_assert(pool_o <= 30, "%s: %.0f draws of (pooled) near-impossible keys", what,
			  pool_o);
	}
	cr_assert(cells >= 2, "%s: too few cells", what);
	double crit = chi2_crit((double)(cells - 1), 1e-6);
	cr_assert(stat <= crit, "%s: chi-square %.1f > critical %.1f (df %zu, p = 1e-6)", what,
		  stat, crit, cells - 1);
	return stat;
}

#endif
