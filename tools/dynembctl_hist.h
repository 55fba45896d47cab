/*
 * dynembctl_hist.h — PRIVATE to dynembctl (and its unit test, tests/test_top_hist.c):
 * percentiles from the daemon's latency histograms, header-only and pure (no I/O, no
 * state), so that the test compiles the very code dynembctl top runs.
 *
 * The histograms (dynemb.h, dynemb_op_stats): B = DYNEMB_LAT_BUCKETS cumulative buckets,
 * le[i] = observations of at most 1 us << i, and le[B] = every observation (+Inf).
 * dynembctl top takes two readings of a histogram and works on their difference (the
 * observations of the interval between them: top_hist_delta).
 *
 * The method (top_hist_quantile), the one Prometheus' histogram_quantile uses:
 *   rank = q * n, n the interval's observations; the bucket is the first i with
 *   le[i] >= rank; within it the observations are taken as spread evenly between its
 *   lower bound (bucket i - 1's bound; 0 for bucket 0) and its upper bound, so the
 *   estimate is lower + (upper - lower) * (rank - le[i-1]) / (le[i] - le[i-1]). q = 0:
 *   the lower bound of the first bucket with an observation.
 *   Its error: the estimate always lies in the bucket where the true q-quantile lies (up
 *   to one observation either side of the rank), i.e. within a factor of 2 of it for
 *   every bucket but the first; it is exact in the limit when the observations are
 *   uniform within their buckets.
 *   The +Inf bucket has no upper bound: a rank that lands there gives the last finite
 *   bound (~1.05 s) with *over set ("more than").
 * No observation: NaN.
 */
#ifndef DE_DYNEMBCTL_HIST_H
#define DE_DYNEMBCTL_HIST_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>

#include "dynemb.h"

#define TOP_HIST_BUCKETS DYNEMB_LAT_BUCKETS

/* The upper bound of bucket i < TOP_HIST_BUCKETS, in ns. */
static inline double top_hist_bound_ns(unsigned i)
{
	return 1000.0 * (double)(1ull << i);
}

/*
 * d = now - prev, bucket by bucket (TOP_HIST_BUCKETS + 1 of them). A counter that went
 * down (the daemon restarted, or the table was dropped and made again) cannot be
 * differenced: then d = now (everything since the counters began) and the return is
 * true. prev NULL: d = now.
 */
static inline bool top_hist_delta(const uint64_t *now, const uint64_t *prev, uint64_t *d)
{
	bool reset = false;
	for (unsigned i = 0; prev && i <= TOP_HIST_BUCKETS; i++)
		reset |= now[i] < prev[i];
	for (unsigned i = 0; i <= TOP_HIST_BUCKETS; i++)
		d[i] = now[i] - (prev && !reset ? prev[i] : 0);
	return reset;
}

/*
 * The q-quantile (0 <= q <= 1) in ns of cumulative buckets le[0..TOP_HIST_BUCKETS] (the
 * method at the top of this file). NaN when le[TOP_HIST_BUCKETS] is 0 or q is out of
 * range. *over (may be NULL): the rank fell in the +Inf bucket and the value returned
 * is its lower bound.
 */
static inline double top_hist_quantile(const uint64_t *le, double q, bool *over)
{
	if (over)
		*over = false;
	uint64_t n = le[TOP_HIST_BUCKETS];
	if (!n || !(q >= 0.0 && q <= 1.0))
		return NAN;
	double rank = q * (double)n;
	unsigned i = 0;
	if (rank <= 0.0) {
		while (le[i] == 0)
			i++; /* stops at TOP_HIST_BUCKETS at the latest: n > 0 */
	} else {
		while (i < TOP_HIST_BUCKETS && (double)le[i] < rank)
			i++;
	}
	if (i == TOP_HIST_BUCKETS) {
		if (over)
			*over = true;
		return top_hist_bound_ns(TOP_HIST_BUCKETS - 1);
	}
	double lo = i ? top_hist_bound_ns(i - 1) : 0.0, hi = top_hist_bound_ns(i);
	double below = i ? (double)le[i - 1] : 0.0, in = (double)le[i] - below;
	if (rank <= 0.0 || in <= 0.0)
		return lo;
	return lo + (hi - lo) * (rank - below) / in;
}

#endif /* DE_DYNEMBCTL_HIST_H */
