/*
 * test_admit.c — admission (src/learn/admit.c) against exact references written here:
 * count-min accuracy against an exact count array, admission after N sightings,
 * aging, the probability mode's rate against binomial bounds, statistics, bad configs.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "de_learn.h"
#include "../test_util.h"

static de_admit *mk(struct de_admit_config c)
{
	de_admit *a = NULL;
	int err = de_admit_create(&c, &a);
	cr_assert_eq(err, 0, "de_admit_create: %d", err);
	return a;
}

/* Zipf-like stream over nkeys keys; exact counts by index. */
Test(admit, count_min_accuracy)
{
	const uint32_t width = 1024, depth = 4, nkeys = 20000;
	const size_t S = 200000;
	de_admit *a = mk((struct de_admit_config){ .mode = DE_ADMIT_COUNT, .threshold = 65535,
						   .width = width, .depth = depth, .seed = 7 });
	uint32_t *exact = xcalloc(nkeys, 4);
	uint64_t s = 1;
	for (size_t i = 0; i < S; i++) {
		/* skewed: index = nkeys^u - 1 */
		double u = (double)(rng_next(&s) >> 11) * 0x1.0p-53;
		uint32_t k = (uint32_t)(pow((double)nkeys, u)) - 1;
		if (k >= nkeys)
			k = nkeys - 1;
		uint64_t key = mix64(k + 1);
		uint8_t ok;
		cr_assert_eq(de_admit_check(a, &key, 1, &ok), 0);
		exact[k]++;
		cr_assert_eq(ok, 0);
	}
	/* never under-counts; over-count > e*S/width with probability <= e^-depth */
	double bound = M_E * (double)S / width;
	uint32_t over = 0, seen = 0;
	for (uint32_t k = 0; k < nkeys; k++) {
		uint32_t est = de_admit_estimate(a, mix64(k + 1));
		cr_assert_geq(est, exact[k], "key %u: estimate %u < exact %u", k, est, exact[k]);
		if (exact[k])
			seen++;
		if (est - exact[k] > bound)
			over++;
	}
	double frac = (double)over / nkeys, p = exp(-(double)depth);
	/* binomial upper tail: mean p, 5 sigma */
	cr_assert_leq(frac, p + 5 * sqrt(p * (1 - p) / nkeys), "over-count fraction %g", frac);
	cr_log_info("count-min %ux%u, %zu sightings of %u keys: %.4f%% over e*S/w (bound %.2f%%)\n",
		    width, depth, S, seen, 100 * frac, 100 * p);
	free(exact);
	de_admit_destroy(a);
}

Test(admit, admitted_after_n_sightings_and_stats)
{
	const uint32_t N = 3;
	de_admit *a = mk((struct de_admit_config){ .mode = DE_ADMIT_COUNT, .threshold = N,
						   .width = 1u << 20, .depth = 4, .seed = 1 });
	/* batch of keys with duplicates and key 0; reference: per-key sighting count */
	uint64_t keys[600];
	uint32_t cnt[200] = { 0 };
	uint64_t s = 3, adm = 0, filt = 0;
	for (int round = 0; round < 5; round++) {
		for (int i = 0; i < 600; i++)
			keys[i] = (i % 50 == 0) ? 0 : mix64(rng_below(&s, 200) + 100);
		uint8_t ok[600];
		cr_assert_eq(de_admit_check(a, keys, 600, ok), 0);
		for (int i = 0; i < 600; i++) {
			if (!keys[i]) {
				cr_assert_eq(ok[i], 1);
				continue;
			}
			/* find its index (keys are mix64(j + 100)) */
			int j = -1;
			for (int q = 0; q < 200; q++)
				if (mix64((uint64_t)q + 100) == keys[i])
					j = q;
			cr_assert_geq(j, 0);
			cnt[j]++;
			bool want = cnt[j] >= N;
			cr_assert_eq(ok[i], want, "key %d sighting %u", j, cnt[j]);
			if (want)
				adm++;
			else
				filt++;
		}
	}
	de_admit_drop_grads(a, 17);
	de_admit_drop_grads(a, 5);
	struct de_admit_stats st;
	cr_assert_eq(de_admit_stats(a, &st), 0);
	cr_assert_eq(st.admitted, adm);
	cr_assert_eq(st.filtered, filt);
	cr_assert_eq(st.dropped_grads, 22);
	cr_assert_eq(st.agings, 0);
	de_admit_destroy(a);
}

Test(admit, aging_halves)
{
	de_admit *a = mk((struct de_admit_config){ .mode = DE_ADMIT_COUNT, .threshold = 100,
						   .width = 1u << 16, .depth = 3,
						   .aging_period = 40 });
	uint64_t k1 = 11, k2 = 22;
	uint8_t ok;
	for (int i = 0; i < 30; i++)
		de_admit_check(a, &k1, 1, &ok);
	cr_assert_eq(de_admit_estimate(a, k1), 30);
	for (int i = 0; i < 10; i++) /* the 40th sighting halves everything */
		de_admit_check(a, &k2, 1, &ok);
	cr_assert_eq(de_admit_estimate(a, k1), 15);
	cr_assert_eq(de_admit_estimate(a, k2), 5);
	struct de_admit_stats st;
	de_admit_stats(a, &st);
	cr_assert_eq(st.agings, 1);
	de_admit_destroy(a);
}

Test(admit, probability_rate_and_determinism)
{
	const double p = 0.25;
	const size_t n = 100000;
	de_admit *a = mk((struct de_admit_config){ .mode = DE_ADMIT_PROB, .probability = p,
						   .seed = 5 });
	de_admit *b = mk((struct de_admit_config){ .mode = DE_ADMIT_PROB, .probability = p,
						   .seed = 5 });
	uint64_t *keys = xcalloc(n, 8);
	uint8_t *o1 = xcalloc(n, 1), *o2 = xcalloc(n, 1);
	for (size_t i = 0; i < n; i++)
		keys[i] = mix64(i % 1000 + 1); /* repeated sightings draw anew */
	cr_assert_eq(de_admit_check(a, keys, n, o1), 0);
	cr_assert_eq(de_admit_check(b, keys, n, o2), 0);
	cr_assert_eq(memcmp(o1, o2, n), 0, "same seed and order, same draws");
	size_t yes = 0;
	for (size_t i = 0; i < n; i++)
		yes += o1[i];
	double sd = sqrt(n * p * (1 - p));
	cr_assert_lt(fabs((double)yes - n * p), 5 * sd, "admitted %zu of %zu", yes, n);
	struct de_admit_stats st;
	de_admit_stats(a, &st);
	cr_assert_eq(st.admitted, yes);
	cr_assert_eq(st.filtered, n - yes);
	/* p = 1 admits everything */
	de_admit *c = mk((struct de_admit_config){ .mode = DE_ADMIT_PROB, .probability = 1 });
	de_admit_check(c, keys, n, o1);
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(o1[i], 1);
	de_admit_destroy(a);
	de_admit_destroy(b);
	de_admit_destroy(c);
	free(keys);
	free(o1);
	free(o2);
}

Test(admit, all_mode)
{
	de_admit *a = mk((struct de_admit_config){ .mode = DE_ADMIT_ALL });
	uint64_t keys[3] = { 1, 2, 1 };
	uint8_t ok[3];
	cr_assert_eq(de_admit_check(a, keys, 3, ok), 0);
	cr_assert(ok[0] && ok[1] && ok[2]);
	cr_assert_eq(de_admit_estimate(a, 1), 0);
	de_admit_destroy(a);
}

Test(admit, bad_configs_and_args)
{
	de_admit *a = NULL;
	struct de_admit_config bad[] = {
		{ .mode = 7 },
		{ .mode = DE_ADMIT_COUNT, .threshold = 0 },
		{ .mode = DE_ADMIT_COUNT, .threshold = 65536 },
		{ .mode = DE_ADMIT_COUNT, .threshold = 2, .width = 1000 },
		{ .mode = DE_ADMIT_COUNT, .threshold = 2, .width = 32 },
		{ .mode = DE_ADMIT_COUNT, .threshold = 2, .width = 1u << 29 },
		{ .mode = DE_ADMIT_COUNT, .threshold = 2, .depth = 9 },
		{ .mode = DE_ADMIT_PROB, .probability = 0 },
		{ .mode = DE_ADMIT_PROB, .probability = 1.5 },
		{ .mode = DE_ADMIT_PROB, .probability = NAN },
		{ .mode = DE_ADMIT_PROB, .probability = -0.1 },
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		cr_assert_eq(de_admit_create(&bad[i], &a), -EINVAL, "config %zu", i);
	struct de_admit_config ok = { .mode = DE_ADMIT_COUNT, .threshold = 2 };
	cr_assert_eq(de_admit_create(NULL, &a), -EINVAL);
	cr_assert_eq(de_admit_create(&ok, NULL), -EINVAL);
	cr_assert_eq(de_admit_create(&ok, &a), 0);
	uint64_t k = 1;
	uint8_t o;
	cr_assert_eq(de_admit_check(NULL, &k, 1, &o), -EINVAL);
	cr_assert_eq(de_admit_check(a, NULL, 1, &o), -EINVAL);
	cr_assert_eq(de_admit_check(a, &k, 1, NULL), -EINVAL);
	cr_assert_eq(de_admit_check(a, NULL, 0, NULL), 0);
	struct de_admit_stats st;
	cr_assert_eq(de_admit_stats(NULL, &st), -EINVAL);
	cr_assert_eq(de_admit_stats(a, NULL), -EINVAL);
	cr_assert_eq(de_admit_estimate(NULL, 1), 0);
	de_admit_drop_grads(NULL, 1);
	de_admit_destroy(a);
	de_admit_destroy(NULL);
}
