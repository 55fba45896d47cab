/*
 * test_top_hist.c — dynembctl top's percentiles from a latency histogram
 * (tools/dynembctl_hist.h: top_hist_quantile, top_hist_delta), the very header the CLI
 * compiles, against a reference computed here from the raw observations: numpy.percentile's
 * default ("linear": sort, position h = (n - 1) q, interpolate between the neighbours).
 *
 * Synthetic data from a seeded generator (test_util.h), binned exactly as the daemon bins
 * (bucket i: at most 1 us << i, the smallest such i; else +Inf). What must hold:
 *   - the estimate lies in the bucket of the reference (one observation either side of
 *     the rank allowed: the two conventions differ by less than one);
 *   - with observations uniform within their buckets, it is the reference to within 3%
 *     of the bucket's width (the interpolation's assumption holds);
 *   - the edges: no observation (NaN), q = 0 and q = 1, one bucket, everything in +Inf
 *     (the last bound, flagged), q out of range; a delta, and a counter that went down.
 */
#include <criterion/criterion.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dynembctl_hist.h"
#include "test_util.h"

#define NB TOP_HIST_BUCKETS

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* numpy.percentile(x, 100 q) of sorted x[0..n) (method "linear") */
static double np_percentile(const double *x, size_t n, double q)
{
	double h = (double)(n - 1) * q;
	size_t lo = (size_t)floor(h), hi = (size_t)ceil(h);
	return x[lo] + (h - (double)lo) * (x[hi] - x[lo]);
}

/* the daemon's bucket of ns (worker.c, count_op) */
static unsigned bucket_of(double ns)
{
	for (unsigned i = 0; i < NB; i++)
		if (ns <= top_hist_bound_ns(i))
			return i;
	return NB;
}

static void bin(const double *x, size_t n, uint64_t *le)
{
	uint64_t cnt[NB + 1] = { 0 };
	for (size_t i = 0; i < n; i++)
		cnt[bucket_of(x[i])]++;
	uint64_t cum = 0;
	for (unsigned i = 0; i <= NB; i++)
		le[i] = cum += cnt[i];
}

static double lower_of(unsigned b)
{
	return b ? top_hist_bound_ns(b - 1) : 0.0;
}

static double upper_of(unsigned b)
{
	return b < NB ? top_hist_bound_ns(b) : INFINITY;
}

static double unif(uint64_t *s)
{
	return (double)(rng_next(s) >> 11) / 9007199254740992.0; /* [0, 1) */
}

static const double QS[] = { 0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0 };

/* the estimate lies in the reference's bucket (one observation of slack either side) */
static void check_in_bucket(const double *x, size_t n, const uint64_t *le, const char *what)
{
	for (size_t k = 0; k < sizeof QS / sizeof QS[0]; k++) {
		double q = QS[k], h = (double)(n - 1) * q;
		size_t lo = (size_t)floor(h), hi = (size_t)ceil(h);
		lo = lo ? lo - 1 : 0;
		hi = hi + 1 < n ? hi + 1 : n - 1;
		bool over;
		double est = top_hist_quantile(le, q, &over);
		unsigned blo = bucket_of(x[lo]), bhi = bucket_of(x[hi]);
		cr_assert(!isnan(est), "%s q %.3f: NaN", what, q);
		cr_expect_geq(est, lower_of(blo), "%s q %.3f: %.1f below bucket %u of x[%zu] %.1f",
			      what, q, est, blo, lo, x[lo]);
		cr_expect(est <= upper_of(bhi) || (over && bhi == NB),
			  "%s q %.3f: %.1f above bucket %u of x[%zu] %.1f", what, q, est, bhi, hi,
			  x[hi]);
		cr_expect(!over || bhi == NB, "%s q %.3f: over, but no observation near the rank "
			  "is past the last bound", what, q);
		cr_expect(over || blo < NB, "%s q %.3f: the rank is past the last bound, not "
			  "flagged", what, q);
	}
}

Test(hist, log_uniform_latencies_land_in_the_reference_bucket)
{
	enum { N = 50000 };
	double *x = malloc(N * sizeof *x);
	cr_assert_not_null(x);
	uint64_t s = 12345;
	for (unsigned trial = 0; trial < 20; trial++) {
		/* 200 ns .. ~4 s, log-uniform, with a heavy tail in some trials */
		double lo = log(200.0), hi = log(trial % 3 ? 5e7 : 4e9);
		size_t n = 1 + (size_t)(rng_next(&s) % N);
		for (size_t i = 0; i < n; i++)
			x[i] = exp(lo + (hi - lo) * unif(&s));
		qsort(x, n, sizeof *x, cmp_d);
		uint64_t le[NB + 1];
		bin(x, n, le);
		cr_assert_eq(le[NB], n);
		char what[32];
		snprintf(what, sizeof what, "trial %u (n %zu)", trial, n);
		check_in_bucket(x, n, le, what);
	}
	free(x);
}

Test(hist, uniform_within_buckets_matches_numpy)
{
	enum { N = 200000 };
	double *x = malloc(N * sizeof *x);
	cr_assert_not_null(x);
	uint64_t s = 777;
	/* weights over buckets 0..12 like a latency profile: a mode at 4..8 us, a tail */
	static const double w[] = { 1, 2, 5, 30, 40, 20, 8, 4, 2, 1, 1, 0.5, 0.5 };
	double wsum = 0;
	for (size_t b = 0; b < sizeof w / sizeof w[0]; b++)
		wsum += w[b];
	for (size_t i = 0; i < N; i++) {
		double r = unif(&s) * wsum;
		size_t b = 0;
		while (b + 1 < sizeof w / sizeof w[0] && r >= w[b])
			r -= w[b++];
		double lo = lower_of((unsigned)b), hi = upper_of((unsigned)b);
		x[i] = lo + (hi - lo) * (1.0 - unif(&s)); /* (lo, hi] */
	}
	qsort(x, N, sizeof *x, cmp_d);
	uint64_t le[NB + 1];
	bin(x, N, le);
	check_in_bucket(x, N, le, "uniform in buckets");
	for (size_t k = 0; k < sizeof QS / sizeof QS[0]; k++) {
		double q = QS[k];
		if (q == 0.0 || q == 1.0)
			continue; /* the ends: the sample's min / max, not an interpolation */
		double ref = np_percentile(x, N, q), est = top_hist_quantile(le, q, NULL);
		unsigned b = bucket_of(ref);
		double width = upper_of(b) - lower_of(b);
		cr_expect_leq(fabs(est - ref), 0.03 * width,
			      "q %.3f: %.2f ns, numpy %.2f ns (bucket %u, width %.0f ns)", q, est,
			      ref, b, width);
	}
	free(x);
}

Test(hist, edges)
{
	uint64_t le[NB + 1];
	bool over = true;
	memset(le, 0, sizeof le);
	cr_expect(isnan(top_hist_quantile(le, 0.5, &over)), "no observation: NaN");
	cr_expect_eq(over, false);

	/* 10 observations in bucket 3 (4..8 us): linear within it */
	for (unsigned i = 3; i <= NB; i++)
		le[i] = 10;
	cr_expect_float_eq(top_hist_quantile(le, 0.5, NULL), 6000.0, 1e-6);
	cr_expect_float_eq(top_hist_quantile(le, 0.1, NULL), 4400.0, 1e-6);
	cr_expect_float_eq(top_hist_quantile(le, 1.0, NULL), 8000.0, 1e-6, "q 1: the bound");
	cr_expect_float_eq(top_hist_quantile(le, 0.0, NULL), 4000.0, 1e-6,
			   "q 0: the first observed bucket's lower bound");
	cr_expect(isnan(top_hist_quantile(le, -0.1, NULL)));
	cr_expect(isnan(top_hist_quantile(le, 1.5, NULL)));
	cr_expect(isnan(top_hist_quantile(le, NAN, NULL)));

	/* bucket 0 starts at 0 */
	memset(le, 0, sizeof le);
	for (unsigned i = 0; i <= NB; i++)
		le[i] = 4;
	cr_expect_float_eq(top_hist_quantile(le, 0.5, NULL), 500.0, 1e-6);

	/* everything slower than the last bound: the bound, flagged */
	memset(le, 0, sizeof le);
	le[NB] = 7;
	cr_expect_float_eq(top_hist_quantile(le, 0.99, &over), top_hist_bound_ns(NB - 1), 1e-6);
	cr_expect(over);
	cr_expect_float_eq(top_hist_bound_ns(NB - 1), 1048576000.0, 1e-6, "~1.05 s");

	/* 99 fast, 1 in +Inf: p50 fast, p99 at the boundary of the fast bucket, p999 over */
	memset(le, 0, sizeof le);
	for (unsigned i = 0; i < NB; i++)
		le[i] = 99;
	le[NB] = 100;
	cr_expect_float_eq(top_hist_quantile(le, 0.99, &over), 1000.0, 1e-6);
	cr_expect(!over);
	top_hist_quantile(le, 0.999, &over);
	cr_expect(over);
}

Test(hist, delta_and_reset)
{
	uint64_t a[NB + 1], b[NB + 1], d[NB + 1];
	for (unsigned i = 0; i <= NB; i++) {
		a[i] = 10 + i;
		b[i] = 30 + 2 * i;
	}
	cr_expect(!top_hist_delta(b, a, d));
	for (unsigned i = 0; i <= NB; i++)
		cr_expect_eq(d[i], 20 + i);
	cr_expect(top_hist_delta(a, b, d), "went down: a reset");
	for (unsigned i = 0; i <= NB; i++)
		cr_expect_eq(d[i], a[i], "a reset: everything since the counters began");
	cr_expect(!top_hist_delta(a, NULL, d));
	cr_expect_eq(d[NB], a[NB]);
}
