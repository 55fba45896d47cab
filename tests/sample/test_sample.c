/*
 * test_sample.c — candidate samplers against exact probabilities computed here:
 *   uniform:     1/L over the keys the test knows are live;
 *   log-uniform: the test ranks its keys by the frequencies it gave them (descending,
 *                ties by key) and applies log((r+2)/(r+1)) / log(R+1);
 *   unigram:     freq^power / sum, from the test's own frequency counts.
 * Empirical distributions are checked with Pearson's chi-square at p = 1e-6 (critical
 * value from Wilson–Hilferty, sample_util.h) with fixed seeds; expected counts are
 * checked against TF's definitions recomputed here with pow() (not expm1/log1p).
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

/* ---- reference distributions --------------------------------------------------------- */

struct kfreq {
	uint64_t key;
	uint32_t freq;
};

static int rank_cmp(const void *a, const void *b)
{
	const struct kfreq *x = a, *y = b;
	if (x->freq != y->freq)
		return x->freq > y->freq ? -1 : 1;
	return (x->key > y->key) - (x->key < y->key);
}

/* keys[i] gets freq f(i) = 1 + (mix64(i * 31 + salt) % spread) */
static void fill_freqs(de_table *t, struct kfreq *kf, size_t n, uint32_t spread, uint64_t salt)
{
	for (size_t i = 0; i < n; i++) {
		kf[i].key = tkey(i + salt * 100000);
		kf[i].freq = 1 + (uint32_t)(mix64(i * 31 + salt) % spread);
		bump(t, kf[i].key, kf[i].freq);
	}
}

/* p[i] for kf[i] (kf is reordered by rank for log-uniform) */
static void ref_probs(enum de_sampler_kind kind, double power, struct kfreq *kf, size_t n,
		      double *p)
{
	if (kind == DE_SAMPLER_LOG_UNIFORM) {
		qsort(kf, n, sizeof(*kf), rank_cmp);
		for (size_t r = 0; r < n; r++)
			p[r] = (log((double)r + 2) - log((double)r + 1)) / log((double)n + 1);
	} else if (kind == DE_SAMPLER_UNIGRAM) {
		double tot = 0;
		for (size_t i = 0; i < n; i++)
			tot += p[i] = pow(kf[i].freq, power);
		for (size_t i = 0; i < n; i++)
			p[i] /= tot;
	} else {
		for (size_t i = 0; i < n; i++)
			p[i] = 1.0 / (double)n;
	}
}

static size_t find_key(const struct kfreq *kf, size_t n, uint64_t key)
{
	for (size_t i = 0; i < n; i++)
		if (kf[i].key == key)
			return i;
	return SIZE_MAX;
}

/* TF's expected count, written from its definition */
static double tf_expected(double p, uint64_t n, uint64_t tries)
{
	if (tries == n)
		return p * (double)n;
	return 1.0 - pow(1.0 - p, (double)tries);
}

static de_sampler *mk_sampler(de_table *t, enum de_sampler_kind kind, double power, int unique,
			      uint64_t seed, uint32_t rebuild_ms)
{
	struct de_sampler_config cfg = { .kind = kind, .power = power, .unique = unique,
					 .seed = seed, .rebuild_ms = rebuild_ms };
	de_sampler *s = NULL;
	int rc = de_sampler_create(t, &cfg, &s);
	cr_assert_eq(rc, 0, "de_sampler_create: %d", rc);
	return s;
}

/*
 * Draw `calls` batches of n (non-unique) and check the empirical distribution against p
 * over kf, every sampled_expected against n * p, and that nothing outside kf comes back.
 */
static void check_distribution(de_sampler *s, const struct kfreq *kf, const double *p,
			       size_t nkeys, size_t n, size_t calls, const char *what)
{
	uint64_t *obs = xcalloc(nkeys, sizeof(uint64_t));
	uint64_t *keys = xcalloc(n, sizeof(uint64_t));
	float *ex = xcalloc(n, sizeof(float));
	for (size_t c = 0; c < calls; c++) {
		struct de_sample_info info;
		int rc = de_sample(s, n, NULL, 0, keys, ex, NULL, NULL, &info);
		cr_assert_eq(rc, 0, "%s: de_sample: %d", what, rc);
		cr_assert_eq(info.num_tries, n);
		cr_assert_eq(info.population, nkeys, "%s: population %lu, want %zu", what,
			     (unsigned long)info.population, nkeys);
		for (size_t i = 0; i < n; i++) {
			size_t j = find_key(kf, nkeys, keys[i]);
			cr_assert(j != SIZE_MAX, "%s: sampled key %#lx is not a live key", what,
				  (unsigned long)keys[i]);
			obs[j]++;
			double want = p[j] * (double)n;
			cr_assert(fabs(ex[i] - want) <= 1e-6 * want + 1e-30,
				  "%s: expected count %.9g, want %.9g", what, ex[i], want);
		}
	}
	chi2_check(obs, p, nkeys, (uint64_t)n * calls, what);
	free(obs);
	free(keys);
	free(ex);
}

/* ---- distributions ------------------------------------------------------------------ */

Test(sample, uniform_distribution_skips_free_rows)
{
	struct fix f = fix_open(1, 0);
	enum { N = 300 };
	struct kfreq kf[N];
	fill_freqs(f.t, kf, N, 5, 1);
	/* erase every third key: their rows are free, rejection must skip them */
	struct kfreq live[N];
	size_t nl = 0;
	for (size_t i = 0; i < N; i++) {
		if (i % 3 == 0)
			cr_assert_eq(de_table_erase(f.t, &kf[i].key, 1, NULL), 0);
		else
			live[nl++] = kf[i];
	}
	double p[N];
	ref_probs(DE_SAMPLER_UNIFORM, 0, live, nl, p);
	de_sampler *s = mk_sampler(f.t, DE_SAMPLER_UNIFORM, 0, 0, 123, 0);
	check_distribution(s, live, p, nl, 1000, 200, "uniform");
	de_sampler_destroy(s);
	fix_close(&f);
}

Test(sample, log_uniform_distribution_by_frequency_rank)
{
	struct fix f = fix_open(1, 0);
	enum { N = 400 };
	struct kfreq kf[N];
	fill_freqs(f.t, kf, N, 60, 2); /* ties in freq: ranked by key */
	double p[N];
	ref_probs(DE_SAMPLER_LOG_UNIFORM, 0, kf, N, p);
	de_sampler *s = mk_sampler(f.t, DE_SAMPLER_LOG_UNIFORM, 0, 0, 7, 0);
	/* the sampler's own probabilities agree with the reference, key by key */
	for (size_t i = 0; i < N; i++) {
		double got;
		cr_assert_eq(de_sampler_prob(s, &kf[i].key, 1, &got), 0);
		cr_assert(fabs(got - p[i]) <= 1e-12 * p[i], "rank %zu: P %.15g, want %.15g", i,
			  got, p[i]);
	}
	check_distribution(s, kf, p, N, 1000, 300, "log-uniform");
	de_sampler_destroy(s);
	fix_close(&f);
}

Test(sample, unigram_distribution)
{
	const double powers[] = { 0.75, 1.0, 0.0 };
	for (int pi = 0; pi < 3; pi++) {
		struct fix f = fix_open(1, 0);
		enum { N = 250 };
		struct kfreq kf[N];
		fill_freqs(f.t, kf, N, 100, 3 + (uint64_t)pi);
		double p[N];
		ref_probs(DE_SAMPLER_UNIGRAM, powers[pi], kf, N, p);
		de_sampler *s = mk_sampler(f.t, DE_SAMPLER_UNIGRAM, powers[pi], 0, 99, 0);
		double got[N];
		uint64_t ks[N];
		for (size_t i = 0; i < N; i++)
			ks[i] = kf[i].key;
		cr_assert_eq(de_sampler_prob(s, ks, N, got), 0);
		for (size_t i = 0; i < N; i++)
			cr_assert(fabs(got[i] - p[i]) <= 1e-12, "P(%zu) %.15g, want %.15g", i,
				  got[i], p[i]);
		char what[32];
		snprintf(what, sizeof(what), "unigram power %.2f", powers[pi]);
		check_distribution(s, kf, p, N, 1000, 250, what);
		de_sampler_destroy(s);
		fix_close(&f);
	}
}

/* a chi-square test that cannot fail is no test: the wrong reference must be rejected */
Test(sample, chi_square_detects_a_wrong_distribution)
{
	struct fix f = fix_open(1, 0);
	enum { N = 100 };
	struct kfreq kf[N];
	fill_freqs(f.t, kf, N, 30, 4);
	double p[N];
	ref_probs(DE_SAMPLER_UNIGRAM, 0.5, kf, N, p); /* the sampler uses 0.75 */
	de_sampler *s = mk_sampler(f.t, DE_SAMPLER_UNIGRAM, 0.75, 0, 5, 0);
	uint64_t obs[N] = { 0 }, keys[1000];
	for (int c = 0; c < 200; c++) {
		cr_assert_eq(de_sample(s, 1000, NULL, 0, keys, NULL, NULL, NULL, NULL), 0);
		for (int i = 0; i < 1000; i++)
			obs[find_key(kf, N, keys[i])]++;
	}
	double stat = 0;
	for (size_t i = 0; i < N; i++) {
		double e = p[i] * 200000;
		stat += (obs[i] - e) * (obs[i] - e) / e;
	}
	cr_assert(stat > chi2_crit(N - 1, 1e-6), "power 0.5 vs 0.75 not detected: %.1f", stat);
	de_sampler_destroy(s);
	fix_close(&f);
}

/* the exact upper tail of chi-square with even df: a Poisson sum */
static double chi2_tail_even(int df, double x)
{
	double m = x / 2, term = exp(-m), sum = 0;
	for (int i = 0; i < df / 2; i++) {
		sum += term;
		term *= m / (i + 1);
	}
	return sum;
}

Test(sample, chi2_critical_value)
{
	cr_assert(fabs(z_upper(0.025) - 1.959963985) < 1e-6);
	/* Wilson–Hilferty is conservative here (its value is a little high): the exact tail at
	 * its critical value lies in [1e-7, 1e-6] */
	const int dfs[] = { 10, 40, 100, 400 };
	for (int i = 0; i < 4; i++) {
		double c = chi2_crit(dfs[i], 1e-6), tail = chi2_tail_even(dfs[i], c);
		cr_assert(tail <= 1e-6 && tail >= 1e-7, "df %d: critical %g has tail %g", dfs[i],
			  c, tail);
	}
}

/* ---- expected counts, unique, accidental hits --------------------------------------- */

Test(sample, expected_counts_non_unique)
{
	for (int kind = 0; kind < 3; kind++) {
		struct fix f = fix_open(1, 0);
		enum { N = 120 };
		struct kfreq kf[N];
		fill_freqs(f.t, kf, N, 40, 10 + (uint64_t)kind);
		double p[N];
		ref_probs((enum de_sampler_kind)kind, kind == 2 ? 0.75 : 0, kf, N, p);
		de_sampler *s = mk_sampler(f.t, (enum de_sampler_kind)kind, kind == 2 ? 0.75 : 0,
					   0, 1, 0);
		/* positives: 3 known keys, an unknown key and key 0 */
		uint64_t pos[5] = { kf[0].key, kf[N / 2].key, kf[N - 1].key, tkey(999999), 0 };
		uint64_t keys[64];
		float ex[64], tex[5];
		uint8_t hit[64];
		struct de_sample_info info;
		cr_assert_eq(de_sample(s, 64, pos, 5, keys, ex, hit, tex, &info), 0);
		cr_assert_eq(info.num_tries, 64);
		double want[5] = { 64 * p[0], 64 * p[N / 2], 64 * p[N - 1], 0, 0 };
		/* the floor for a key the sampler cannot draw */
		if (kind == DE_SAMPLER_UNIFORM)
			want[3] = 64.0 / N;
		else if (kind == DE_SAMPLER_LOG_UNIFORM)
			want[3] = 64 * (log(N + 2.0) - log(N + 1.0)) / log(N + 1.0);
		else {
			double mn = 1;
			for (size_t i = 0; i < N; i++)
				mn = p[i] < mn ? p[i] : mn;
			want[3] = 64 * mn;
		}
		for (int j = 0; j < 5; j++)
			cr_assert(fabs(tex[j] - want[j]) <= 1e-6 * want[j], "kind %d positive %d: "
				  "%.9g, want %.9g", kind, j, tex[j], want[j]);
		for (int i = 0; i < 64; i++) {
			size_t j = find_key(kf, N, keys[i]);
			cr_assert(j != SIZE_MAX);
			cr_assert(fabs(ex[i] - 64 * p[j]) <= 1e-6 * 64 * p[j]);
			bool is = keys[i] == pos[0] || keys[i] == pos[1] || keys[i] == pos[2];
			cr_assert_eq(hit[i], is, "kind %d: accidental hit flag of %d", kind, i);
		}
		de_sampler_destroy(s);
		fix_close(&f);
	}
}

Test(sample, unique_no_duplicates_and_tf_expected_counts)
{
	for (int kind = 0; kind < 3; kind++) {
		struct fix f = fix_open(1, 0);
		enum { N = 60, n = 40 };
		struct kfreq kf[N];
		fill_freqs(f.t, kf, N, 20, 20 + (uint64_t)kind);
		double p[N];
		ref_probs((enum de_sampler_kind)kind, kind == 2 ? 0.75 : 0, kf, N, p);
		de_sampler *s = mk_sampler(f.t, (enum de_sampler_kind)kind, kind == 2 ? 0.75 : 0,
					   1, 11, 0);
		uint64_t pos[2] = { kf[1].key, kf[N - 2].key };
		for (int round = 0; round < 20; round++) {
			uint64_t keys[n];
			float ex[n], tex[2];
			uint8_t hit[n];
			struct de_sample_info info;
			cr_assert_eq(de_sample(s, n, pos, 2, keys, ex, hit, tex, &info), 0);
			cr_assert(info.num_tries > n, "40 of 60 without a duplicate draw?");
			for (int i = 0; i < n; i++) {
				for (int j = 0; j < i; j++)
					cr_assert_neq(keys[i], keys[j], "duplicate with unique");
				size_t r = find_key(kf, N, keys[i]);
				cr_assert(r != SIZE_MAX);
				double want = tf_expected(p[r], n, info.num_tries);
				cr_assert(fabs(ex[i] - want) <= 2e-6 * want, "kind %d: %.9g, want %.9g",
					  kind, ex[i], want);
				cr_assert_eq(hit[i], keys[i] == pos[0] || keys[i] == pos[1]);
			}
			cr_assert(fabs(tex[0] - tf_expected(p[1], n, info.num_tries)) <= 2e-6);
			cr_assert(fabs(tex[1] - tf_expected(p[N - 2], n, info.num_tries)) <= 2e-6);
		}
		de_sampler_destroy(s);
		fix_close(&f);
	}
}

/* TF's quirk: unique, but no duplicate was drawn -> T == n -> n * p */
Test(sample, unique_without_rejection_is_n_times_p)
{
	struct fix f = fix_open(1, 0);
	enum { N = 5000 };
	struct kfreq kf[N];
	for (size_t i = 0; i < N; i++) {
		kf[i].key = tkey(i);
		cr_assert_eq(de_table_assign(f.t, &kf[i].key, 1, (float[1]){ 0 }, NULL, 1), 0);
	}
	de_sampler *s = mk_sampler(f.t, DE_SAMPLER_UNIFORM, 0, 1, 3, 0);
	int seen = 0;
	for (int round = 0; round < 50; round++) {
		uint64_t keys[3];
		float ex[3];
		struct de_sample_info info;
		cr_assert_eq(de_sample(s, 3, NULL, 0, keys, ex, NULL, NULL, &info), 0);
		double want = tf_expected(1.0 / N, 3, info.num_tries);
		if (info.num_tries == 3) {
			seen++;
			cr_assert(fabs(want - 3.0 / N) < 1e-15);
		}
		for (int i = 0; i < 3; i++)
			cr_assert(fabs(ex[i] - want) <= 1e-6 * want);
	}
	cr_assert(seen > 40, "no duplicate among 3 of 5000 should be the rule (%d)", seen);
	de_sampler_destroy(s);
	fix_close(&f);
}

Test(sample, unique_takes_whole_population)
{
	struct fix f = fix_open(1, 0);
	enum { N = 50 };
	struct kfreq kf[N];
	fill_freqs(f.t, kf, N, 3, 30);
	de_sampler *s = mk_sampler(f.t, DE_SAMPLER_UNIFORM, 0, 1, 3, 0);
	uint64_t keys[N];
	cr_assert_eq(de_sample(s, N, NULL, 0, keys, NULL, NULL, NULL, NULL), 0);
	for (size_t i = 0; i < N; i++)
		cr_assert(find_key(kf, N, keys[i]) != SIZE_MAX);
	for (size_t i = 0; i < N; i++)
		for (size_t j = 0; j < i; j++)
			cr_assert_neq(keys[i], keys[j]);
	uint64_t more[N + 1];
	cr_assert_eq(de_sample(s, N + 1, NULL, 0, more, NULL, NULL, NULL, NULL), -ERANGE);
	de_sampler_destroy(s);
	fix_close(&f);
}

Test(sample, seeds_reproducible)
{
	struct fix f = fix_open(1, 0);
	enum { N = 100 };
	struct kfreq kf[N];
	fill_freqs(f.t, kf, N, 9, 40);
	for (int kind = 0; kind < 3; kind++) {
		de_sampler *a = mk_sampler(f.t, (enum de_sampler_kind)kind, kind == 2 ? 1 : 0, 0, 8, 0);
		de_sampler *b = mk_sampler(f.t, (enum de_sampler_kind)kind, kind == 2 ? 1 : 0, 0, 8, 0);
		de_sampler *c = mk_sampler(f.t, (enum de_sampler_kind)kind, kind == 2 ? 1 : 0, 0, 9, 0);
		uint64_t ka[50], kb[50], kc[50];
		cr_assert_eq(de_sample(a, 50, NULL, 0, ka, NULL, NULL, NULL, NULL), 0);
		cr_assert_eq(de_sample(b, 50, NULL, 0, kb, NULL, NULL, NULL, NULL), 0);
		cr_assert_eq(de_sample(c, 50, NULL, 0, kc, NULL, NULL, NULL, NULL), 0);
		cr_assert(!memcmp(ka, kb, sizeof(ka)), "same seed, same draws");
		cr_assert(memcmp(ka, kc, sizeof(ka)), "another seed, other draws");
		de_sampler_destroy(a);
		de_sampler_destroy(b);
		de_sampler_destroy(c);
	}
	fix_close(&f);
}

/* ---- rebuilds ------------------------------------------------------------------------ */

Test(sample, sync_rebuild_follows_new_frequencies)
{
	struct fix f = fix_open(1, 0);
	enum { N = 200 };
	struct kfreq kf[N];
	fill_freqs(f.t, kf, N, 10, 50);
	de_sampler *s = mk_sampler(f.t, DE_SAMPLER_LOG_UNIFORM, 0, 0, 1, 0);
	/* the last 50 keys become the most frequent; 30 new keys arrive */
	struct kfreq all[N + 30];
	memcpy(all, kf, sizeof(kf));
	for (size_t i = N - 50; i < N; i++) {
		bump(f.t, all[i].key, 100 + (uint32_t)i);
		all[i].freq += 100 + (uint32_t)i;
	}
	for (size_t i = N; i < N + 30; i++) {
		all[i].key = tkey(777000 + i);
		all[i].freq = 5;
		bump(f.t, all[i].key, 5);
	}
	/* before the rebuild: the old snapshot (new keys never drawn) */
	uint64_t keys[1000];
	struct de_sample_info info;
	cr_assert_eq(de_sample(s, 1000, NULL, 0, keys, NULL, NULL, NULL, &info), 0);
	cr_assert_eq(info.population, N);
	for (int i = 0; i < 1000; i++)
		cr_assert(find_key(kf, N, keys[i]) != SIZE_MAX);
	uint64_t g0 = info.generation;
	cr_assert_eq(de_sampler_rebuild(s), 0);
	double p[N + 30];
	ref_probs(DE_SAMPLER_LOG_UNIFORM, 0, all, N + 30, p);
	cr_assert_eq(de_sample(s, 1, NULL, 0, keys, NULL, NULL, NULL, &info), 0);
	cr_assert_eq(info.generation, g0 + 1);
	check_distribution(s, all, p, N + 30, 1000, 200, "log-uniform after rebuild");
	de_sampler_destroy(s);
	fix_close(&f);
}

Test(sample, background_rebuild_follows_new_frequencies)
{
	struct fix f = fix_open(1, 0);
	enum { N = 150 };
	struct kfreq kf[N + 20];
	fill_freqs(f.t, kf, N, 10, 60);
	de_sampler *s = mk_sampler(f.t, DE_SAMPLER_UNIGRAM, 0.75, 0, 1, 10);
	uint64_t key;
	struct de_sample_info info;
	cr_assert_eq(de_sample(s, 1, NULL, 0, &key, NULL, NULL, NULL, &info), 0);
	for (size_t i = 0; i < 20; i++) {
		kf[N + i].key = tkey(888000 + i);
		kf[N + i].freq = 500;
		bump(f.t, kf[N + i].key, 500);
	}
	for (size_t i = 0; i < 10; i++) {
		bump(f.t, kf[i].key, 50);
		kf[i].freq += 50;
	}
	/* wait for a snapshot begun after the changes: two generations after one seen once
	 * they were made (the rebuild running then may have begun before them; the one after
	 * it began after it published; a generation read before the changes is not enough:
	 * under TSan the bumps outlast a whole rebuild) */
	cr_assert_eq(de_sample(s, 1, NULL, 0, &key, NULL, NULL, NULL, &info), 0);
	uint64_t g0 = info.generation;
	double end = now_s() + 10;
	do {
		struct timespec ts = { 0, 5000000 };
		nanosleep(&ts, NULL);
		cr_assert_eq(de_sample(s, 1, NULL, 0, &key, NULL, NULL, NULL, &info), 0);
	} while (info.generation < g0 + 2 && now_s() < end);
	cr_assert(info.generation >= g0 + 2, "no background rebuild in 10 s");
	double p[N + 20];
	ref_probs(DE_SAMPLER_UNIGRAM, 0.75, kf, N + 20, p);
	/* rebuilds keep coming (same content) while we sample */
	check_distribution(s, kf, p, N + 20, 1000, 200, "unigram after background rebuild");
	de_sampler_destroy(s);
	fix_close(&f);
}

/* ---- concurrent table changes -------------------------------------------------------- */

struct churn {
	de_table *t;
	atomic_bool stop;
	atomic_size_t inserted; /* keys tkey(1000000 + i) for i < inserted were inserted */
	atomic_bool failed;
};

static void *churn_main(void *arg)
{
	struct churn *c = arg;
	uint64_t rng = 31;
	float out[1];
	for (size_t i = 0; !atomic_load(&c->stop) && i < 200000; i++) {
		uint64_t key = tkey(1000000 + i);
		atomic_store(&c->inserted, i + 1); /* published before it can appear */
		if (de_table_find_or_insert(c->t, &key, 1, out, NULL, 1))
			atomic_store(&c->failed, true); /* threads never assert */
		uint64_t victim = tkey(1000000 + rng_below(&rng, i + 1));
		de_table_erase(c->t, &victim, 1, NULL);
	}
	return NULL;
}

struct reader {
	de_sampler *s;
	struct churn *c;
	atomic_bool *stop;
	int bad;      /* keys that were never live */
	long ok, errs;
};

static bool ever_inserted(struct churn *c, uint64_t key, size_t upto)
{
	for (size_t i = 0; i < 300; i++) /* the pre-filled keys */
		if (tkey(i) == key)
			return true;
	for (size_t i = 0; i < upto; i++)
		if (tkey(1000000 + i) == key)
			return true;
	(void)c;
	return false;
}

static void *reader_main(void *arg)
{
	struct reader *r = arg;
	uint64_t keys[32];
	float ex[32];
	while (!atomic_load(r->stop)) {
		int rc = de_sample(r->s, 32, NULL, 0, keys, ex, NULL, NULL, NULL);
		size_t upto = atomic_load(&r->c->inserted);
		if (rc) {
			r->errs += rc != -ENOENT && rc != -EAGAIN;
			continue;
		}
		r->ok++;
		for (int i = 0; i < 32; i++)
			if (!ever_inserted(r->c, keys[i], upto) || !(ex[i] > 0))
				r->bad++;
	}
	return NULL;
}

Test(sample, concurrent_table_changes, .timeout = 120)
{
	for (int kind = 0; kind < 3; kind++) {
		struct fix f = fix_open(1, 0);
		for (size_t i = 0; i < 300; i++)
			bump(f.t, tkey(i), 1 + (uint32_t)(i % 7));
		de_sampler *s = mk_sampler(f.t, (enum de_sampler_kind)kind, kind == 2 ? 0.75 : 0, 0,
					   kind, kind ? 2 : 0);
		struct churn c = { .t = f.t };
		atomic_init(&c.stop, false);
		atomic_init(&c.inserted, 0);
		atomic_init(&c.failed, false);
		atomic_bool stop;
		atomic_init(&stop, false);
		struct reader rd[2] = { { .s = s, .c = &c, .stop = &stop },
					{ .s = s, .c = &c, .stop = &stop } };
		pthread_t w, r0, r1;
		cr_assert_eq(pthread_create(&w, NULL, churn_main, &c), 0);
		cr_assert_eq(pthread_create(&r0, NULL, reader_main, &rd[0]), 0);
		cr_assert_eq(pthread_create(&r1, NULL, reader_main, &rd[1]), 0);
		double end = now_s() + 0.7;
		while (now_s() < end)
			if (kind)
				de_sampler_rebuild(s); /* sync rebuilds race the background one */
		atomic_store(&stop, true);
		atomic_store(&c.stop, true);
		pthread_join(r0, NULL);
		pthread_join(r1, NULL);
		pthread_join(w, NULL);
		cr_assert(!atomic_load(&c.failed), "kind %d: the writer failed", kind);
		for (int i = 0; i < 2; i++) {
			cr_assert_eq(rd[i].bad, 0, "kind %d: %d never-live keys or bad counts", kind,
				     rd[i].bad);
			cr_assert_eq(rd[i].errs, 0, "kind %d: unexpected errors", kind);
			cr_assert(rd[i].ok > 0, "kind %d: no successful call", kind);
		}
		de_sampler_destroy(s);
		fix_close(&f);
	}
}

/* ---- errors ----------------------------------------------------------------------------- */

Test(sample, config_errors)
{
	struct fix f = fix_open(1, 0);
	char why[128];
	struct de_sampler_config bad[] = {
		{ .kind = (enum de_sampler_kind)9 },
		{ .kind = DE_SAMPLER_UNIFORM, .power = 0.5 },
		{ .kind = DE_SAMPLER_LOG_UNIFORM, .power = 1 },
		{ .kind = DE_SAMPLER_UNIGRAM, .power = -0.1 },
		{ .kind = DE_SAMPLER_UNIGRAM, .power = NAN },
		{ .kind = DE_SAMPLER_UNIGRAM, .power = 17 },
		{ .kind = DE_SAMPLER_UNIFORM, .rebuild_ms = 10 },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		why[0] = 0;
		cr_assert_eq(de_sampler_check(&bad[i], why, sizeof(why)), -EINVAL, "config %zu", i);
		cr_assert(why[0], "config %zu: no reason", i);
		de_sampler *s = (de_sampler *)0x1;
		cr_assert_eq(de_sampler_create(f.t, &bad[i], &s), -EINVAL);
		cr_assert_eq(s, (de_sampler *)0x1, "out touched on error");
	}
	cr_assert_eq(de_sampler_check(NULL, NULL, 0), -EINVAL);
	struct de_sampler_config ok = { .kind = DE_SAMPLER_UNIGRAM, .power = 0.75 };
	cr_assert_eq(de_sampler_check(&ok, NULL, 0), 0);
	de_sampler *s;
	cr_assert_eq(de_sampler_create(NULL, &ok, &s), -EINVAL);
	cr_assert_eq(de_sampler_create(f.t, NULL, &s), -EINVAL);
	cr_assert_eq(de_sampler_create(f.t, &ok, NULL), -EINVAL);
	cr_assert_eq(de_sampler_rebuild(NULL), -EINVAL);
	de_sampler_destroy(NULL);
	fix_close(&f);
}

Test(sample, call_errors)
{
	struct fix f = fix_open(1, 0);
	enum { N = 20 };
	struct kfreq kf[N];
	fill_freqs(f.t, kf, N, 3, 70);
	de_sampler *s = mk_sampler(f.t, DE_SAMPLER_UNIGRAM, 0.75, 0, 1, 0);
	uint64_t keys[4], pos[1] = { kf[0].key };
	double p[1];
	cr_assert_eq(de_sample(NULL, 4, NULL, 0, keys, NULL, NULL, NULL, NULL), -EINVAL);
	cr_assert_eq(de_sample(s, 0, NULL, 0, keys, NULL, NULL, NULL, NULL), -EINVAL);
	cr_assert_eq(de_sample(s, 4, NULL, 0, NULL, NULL, NULL, NULL, NULL), -EINVAL);
	cr_assert_eq(de_sample(s, 4, NULL, 1, keys, NULL, NULL, NULL, NULL), -EINVAL);
	cr_assert_eq(de_sample(s, (size_t)DE_SAMPLE_MAX + 1, NULL, 0, keys, NULL, NULL, NULL, NULL),
		     -E2BIG);
	cr_assert_eq(de_sample(s, 4, pos, (size_t)DE_SAMPLE_MAX_POSITIVES + 1, keys, NULL, NULL,
			       NULL, NULL), -E2BIG);
	cr_assert_eq(de_sampler_prob(NULL, pos, 1, p), -EINVAL);
	cr_assert_eq(de_sampler_prob(s, NULL, 1, p), -EINVAL);
	cr_assert_eq(de_sampler_prob(s, pos, 1, NULL), -EINVAL);
	cr_assert_eq(de_sampler_prob(s, NULL, 0, NULL), 0);
	de_sampler_destroy(s);
	fix_close(&f);
}

Test(sample, empty_table_is_enoent)
{
	for (int kind = 0; kind < 3; kind++) {
		struct fix f = fix_open(1, 0);
		de_sampler *s = mk_sampler(f.t, (enum de_sampler_kind)kind, kind == 2 ? 0.75 : 0, 0, 1, 0);
		uint64_t keys[4];
		cr_assert_eq(de_sample(s, 4, NULL, 0, keys, NULL, NULL, NULL, NULL), -ENOENT);
		/* keys arrive, then leave again */
		uint64_t k = tkey(1);
		bump(f.t, k, 2);
		cr_assert_eq(de_sampler_rebuild(s), 0);
		cr_assert_eq(de_sample(s, 4, NULL, 0, keys, NULL, NULL, NULL, NULL), 0);
		for (int i = 0; i < 4; i++)
			cr_assert_eq(keys[i], k);
		cr_assert_eq(de_table_erase(f.t, &k, 1, NULL), 0);
		cr_assert_eq(de_sampler_rebuild(s), 0);
		cr_assert_eq(de_sample(s, 4, NULL, 0, keys, NULL, NULL, NULL, NULL), -ENOENT);
		de_sampler_destroy(s);
		fix_close(&f);
	}
}

/* unique where one needed key is (practically) never drawn: bounded, then -EAGAIN */
Test(sample, unique_gives_up_with_eagain)
{
	struct fix f = fix_open(1, 0);
	bump(f.t, tkey(1), 1000);
	bump(f.t, tkey(2), 1);
	de_sampler *s = mk_sampler(f.t, DE_SAMPLER_UNIGRAM, 16, 1, 1, 0); /* P(2) ~ 1e-48 */
	uint64_t keys[2];
	cr_assert_eq(de_sample(s, 2, NULL, 0, keys, NULL, NULL, NULL, NULL), -EAGAIN);
	cr_assert_eq(de_sample(s, 1, NULL, 0, keys, NULL, NULL, NULL, NULL), 0);
	cr_assert_eq(keys[0], tkey(1));
	de_sampler_destroy(s);
	fix_close(&f);
}

/* uniform over a table that is almost all free rows: bounded rejection, then -EAGAIN */
Test(sample, uniform_sparse_table_gives_up_with_eagain)
{
	struct fix f = fix_open(1, 0);
	enum { N = 100000 };
	uint64_t *ks = xcalloc(N, sizeof(uint64_t));
	float *z = xcalloc(N, sizeof(float));
	for (size_t i = 0; i < N; i++)
		ks[i] = tkey(i);
	cr_assert_eq(de_table_assign(f.t, ks, N, z, NULL, 1), 0);
	cr_assert_eq(de_table_erase(f.t, ks + 1, N - 1, NULL), 0); /* 1 live row of 100000 */
	de_sampler *s = mk_sampler(f.t, DE_SAMPLER_UNIFORM, 0, 0, 1, 0);
	uint64_t keys[64];
	cr_assert_eq(de_sample(s, 64, NULL, 0, keys, NULL, NULL, NULL, NULL), -EAGAIN);
	de_sampler_destroy(s);
	free(ks);
	free(z);
	fix_close(&f);
}
