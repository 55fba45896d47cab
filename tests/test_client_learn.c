/*
 * test_client_learn.c — admission, eviction (budget, disk tier), candidate sampling, top-k
 * and key strings through libdynemb against the real daemon ($DYNEMBD).
 *
 * References are computed here: sighting counts per key (admission count), a binomial
 * bound (admission probability), SGD/Adam steps in double (tier restore keeps the Adam
 * step count), a Zipf stream with the budget from the stats and the arena (eviction),
 * brute-force dot/cosine (top-k), TF's expected-count formulas (sampling), the strings the
 * test wrote (key strings).
 */
#ifdef DE_MINI_CRITERION
#include "mini_criterion.h" /* ThreadSanitizer build: see that header */
#else
#include <criterion/criterion.h>
#endif

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dynemb.h"
#include "test_util.h"
#include "daemon_util.h"

#define TIMEOUT 120

static pid_t d_pid = -1;
static char d_sock[108];
static char d_tier[64];

static void daemon_start(const char *const *extra)
{
	const char *bin = daemon_bin();
	static unsigned n;
	snprintf(d_sock, sizeof d_sock, "/tmp/de-learn-%d-%u.sock", (int)getpid(), n);
	snprintf(d_tier, sizeof d_tier, "/tmp/de-learn-tier-%d-%u", (int)getpid(), n++);
	unlink(d_sock);
	const char *more[] = { "--tier-dir", d_tier, "--sampler-rebuild-ms", "50", NULL };
	const char *argv[40];
	daemon_argv(argv, 40, bin, d_sock, "warn", more, extra);
	d_pid = daemon_spawn(argv, SIGTERM, NULL);
	daemon_wait_listen(d_pid, d_sock, 10, NULL);
}

static void daemon_stop(void)
{
	if (d_pid > 0) {
		int st = daemon_terminate(d_pid, 5);
		d_pid = -1;
		cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "dynembd exit status %d", st);
	}
	unlink(d_sock);
	rmdir(d_tier);
}

static void start_default(void) { daemon_start(NULL); }

static dynemb_client *connect_ok(uint64_t data_bytes)
{
	dynemb_client *c = NULL;
	struct dynemb_connect_opts o = { .name = "test_learn", .timeout_ms = 20000,
				     .data_bytes = data_bytes };
	int err = dynemb_connect(d_sock, &o, &c);
	cr_assert_eq(err, 0, "dynemb_connect: %s", dynemb_strerror(err));
	return c;
}

static int open_spec(dynemb_client *c, struct dynemb_table_spec *s)
{
	int t = -1;
	int err = dynemb_open(c, s, &t);
	cr_assert_eq(err, 0, "dynemb_open(%s): %s", s->name, dynemb_strerror(err));
	return t;
}

static struct dynemb_stats stats(dynemb_client *c, int t)
{
	struct dynemb_stats s;
	int err = dynemb_stats(c, t, &s);
	cr_assert_eq(err, 0, "dynemb_stats: %s", dynemb_strerror(err));
	return s;
}

/* ---- admission ---------------------------------------------------------------------- */

TestSuite(admit, .init = start_default, .fini = daemon_stop, .timeout = TIMEOUT);

/* A stream with duplicates; reference: sightings counted per occurrence of a key the
 * table does not hold; the min_count-th creates it. */
static void count_stream(enum dynemb_reject_read reject)
{
	enum { DIM = 4, NK = 200, B = 16, ROUNDS = 300, MIN = 3 };
	dynemb_client *c = connect_ok(0);
	struct dynemb_table_spec s = { .name = reject ? "adm_zero" : "adm_init", .dim = DIM,
				   .init = DYNEMB_CONSTANT, .init_a = 0.5f, .seed = 7,
				   .admission = { .mode = DYNEMB_ADMISSION_COUNT, .min_count = MIN,
						  .sketch_width = 1u << 16, .reject_value = reject } };
	int t = open_spec(c, &s);
	uint32_t seen[NK] = { 0 };
	bool held[NK] = { false };
	uint64_t created = 0, filtered = 0, admitted = 0, rng = 99;
	for (int r = 0; r < ROUNDS; r++) {
		uint64_t keys[B];
		for (int i = 0; i < B; i++)
			keys[i] = 1 + rng_below(&rng, NK);
		float out[B * DIM];
		uint8_t st[B];
		int err = dynemb_lookup(c, t, keys, B, out, st, 0, (uint64_t)r);
		cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
		bool before[NK]; /* held when the batch started: those are no sightings */
		memcpy(before, held, sizeof before);
		for (int i = 0; i < B; i++) {
			uint64_t k = keys[i] - 1;
			uint8_t want;
			if (!before[k] && ++seen[k] >= MIN)
				admitted++; /* every admitting sighting counts, duplicates too */
			if (held[k]) {
				want = DYNEMB_ST_FOUND;
			} else if (seen[k] >= MIN) {
				held[k] = true;
				want = DYNEMB_ST_CREATED;
				created++;
			} else {
				want = DYNEMB_ST_MISSING;
				filtered++;
			}
			cr_assert_eq(st[i], want, "round %d key %lu: status %u, want %u (seen %u)", r,
				     (unsigned long)keys[i], st[i], want, seen[k]);
			float v = want == DYNEMB_ST_MISSING && reject == DYNEMB_REJECTED_READ_ZEROS ? 0.0f : 0.5f;
			for (int j = 0; j < DIM; j++)
				cr_assert_eq(out[i * DIM + j], v);
		}
	}
	struct dynemb_stats x = stats(c, t);
	cr_assert_eq(x.admitted, admitted);
	cr_assert_eq(x.filtered, filtered);
	cr_assert_eq(x.keys, created);
	/* read-only lookups are no sightings: a key seen MIN-1 times stays out */
	for (uint64_t k = 0; k < NK; k++) {
		if (held[k] || seen[k] != MIN - 1)
			continue;
		uint64_t key = k + 1;
		float out[DIM];
		uint8_t st;
		for (int i = 0; i < 3; i++)
			cr_assert_eq(dynemb_lookup(c, t, &key, 1, out, &st, DYNEMB_READONLY, 0), 0);
		cr_assert_eq(st, DYNEMB_ST_MISSING);
		cr_assert_eq(dynemb_lookup(c, t, &key, 1, out, &st, 0, 0), 0);
		cr_assert_eq(st, DYNEMB_ST_CREATED, "the MIN-th creating sighting admits");
		break;
	}
	dynemb_close(c);
}

Test(admit, count_reject_init) { count_stream(DYNEMB_REJECTED_READ_INIT); }
Test(admit, count_reject_zeros) { count_stream(DYNEMB_REJECTED_READ_ZEROS); }

Test(admit, probability_and_dropped_gradients)
{
	enum { DIM = 2, N = 4000 };
	const double p = 0.25, lr = 0.5;
	dynemb_client *c = connect_ok(0);
	struct dynemb_table_spec s = { .name = "adm_prob", .dim = DIM, .init = DYNEMB_CONSTANT,
				   .init_a = 0.5f, .seed = 3,
				   .admission = { .mode = DYNEMB_ADMISSION_PROBABILITY, .probability = p } };
	dynemb_optim_spec_defaults(DYNEMB_OPTIM_SGD, &s.optim);
	s.optim.lr = lr;
	int t = open_spec(c, &s);
	uint64_t *keys = calloc(N, 8);
	uint8_t *st = calloc(N, 1);
	float *out = calloc(N * DIM, 4), *g = calloc(N * DIM, 4);
	for (int i = 0; i < N; i++)
		keys[i] = 1000 + (uint64_t)i;
	cr_assert_eq(dynemb_lookup(c, t, keys, N, out, st, 0, 1), 0);
	size_t made = 0;
	for (int i = 0; i < N; i++)
		made += st[i] == DYNEMB_ST_CREATED;
	double mean = N * p, sd = sqrt(N * p * (1 - p));
	cr_assert(fabs((double)made - mean) < 5 * sd, "admitted %zu of %d, expected %.0f", made, N,
		  mean);
	/* gradients: rows that exist are stepped (SGD), the others dropped and counted */
	for (int i = 0; i < N * DIM; i++)
		g[i] = 1.0f;
	size_t applied = 0;
	cr_assert_eq(dynemb_apply_gradients(c, t, keys, N, g, 2, 0, &applied), 0);
	cr_assert_eq(applied, made);
	struct dynemb_stats x = stats(c, t);
	cr_assert_eq(x.grads_dropped, (uint64_t)(N - made));
	cr_assert_eq(x.keys, made, "dropped gradients create no key");
	uint8_t *st2 = calloc(N, 1);
	cr_assert_eq(dynemb_lookup(c, t, keys, N, out, st2, DYNEMB_READONLY, 0), 0);
	for (int i = 0; i < N; i++) {
		float want = st[i] == DYNEMB_ST_CREATED ? (float)(0.5 - lr * 1.0) : 0.0f;
		cr_assert_eq(st2[i], st[i] == DYNEMB_ST_CREATED ? DYNEMB_ST_FOUND : DYNEMB_ST_MISSING);
		cr_assert_eq(out[i * DIM], want, "key %d: %g want %g", i, out[i * DIM], want);
	}
	/* updates of keys not admitted are dropped too */
	size_t created = 99;
	cr_assert_eq(dynemb_update(c, t, keys, N, g, 3, &created), 0);
	cr_assert_eq(created, 0u);
	cr_assert_eq(stats(c, t).keys, made);
	free(keys), free(st), free(st2), free(out), free(g);
	dynemb_close(c);
}

/* ---- eviction ----------------------------------------------------------------------- */

TestSuite(evict, .init = start_default, .fini = daemon_stop, .timeout = TIMEOUT);

/* Zipf(1.0) over U keys by inversion of a precomputed CDF. */
struct zipf {
	double *cdf;
	uint64_t u;
};
static struct zipf zipf_make(uint64_t u)
{
	struct zipf z = { calloc(u, sizeof(double)), u };
	double s = 0;
	for (uint64_t i = 0; i < u; i++)
		z.cdf[i] = (s += 1.0 / (double)(i + 1));
	for (uint64_t i = 0; i < u; i++)
		z.cdf[i] /= s;
	return z;
}
static uint64_t zipf_draw(const struct zipf *z, uint64_t *rng)
{
	double x = (double)(rng_next(rng) >> 11) * 0x1p-53;
	uint64_t lo = 0, hi = z->u - 1;
	while (lo < hi) {
		uint64_t mid = (lo + hi) / 2;
		if (z->cdf[mid] < x)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

Test(evict, lru_budget_holds_under_a_zipf_stream)
{
	enum { DIM = 16, B = 1000, ROUNDS = 300 };
	const uint64_t budget = 6ull << 20;
	dynemb_client *c = connect_ok(0);
	struct dynemb_table_spec s = { .name = "ev_lru", .dim = DIM, .init = DYNEMB_CONSTANT, .init_a = 1,
				   .seed = 5, .eviction = { .policy = DYNEMB_EVICTION_LRU,
							    .budget_bytes = budget } };
	int t = open_spec(c, &s);
	struct zipf z = zipf_make(1u << 20);
	uint64_t rng = 17, keys[B], max_res = 0, max_arena = 0, hot_found = 0, hot_seen = 0;
	static float out[B * DIM];
	uint8_t st[B];
	for (int r = 0; r < ROUNDS; r++) {
		for (int i = 0; i < B; i++)
			keys[i] = 1 + zipf_draw(&z, &rng);
		cr_assert_eq(dynemb_lookup(c, t, keys, B, out, st, 0, (uint64_t)r + 1), 0);
		struct dynemb_stats x = stats(c, t);
		cr_assert_eq(x.budget_bytes, budget);
		if (x.resident_bytes > max_res)
			max_res = x.resident_bytes;
		if (x.arena_bytes > max_arena)
			max_arena = x.arena_bytes;
		/* inline eviction after each lookup brings the table back to its budget, unless
		 * the evictor's thread holds the table (then it is evicting it right now) */
		cr_assert_leq(x.resident_bytes, budget + budget / 50, "round %d: resident %lu",
			      r, (unsigned long)x.resident_bytes);
		if (r >= ROUNDS / 2)
			for (int i = 0; i < B; i++)
				if (keys[i] <= 10) {
					hot_seen++;
					hot_found += st[i] == DYNEMB_ST_FOUND;
				}
	}
	struct dynemb_stats x = stats(c, t);
	cr_log_info("LRU budget %lu: max resident %lu, max arena mapped %lu, keys %lu, evicted %lu, "
		    "returned fresh %lu, hot-10 found %lu/%lu", (unsigned long)budget,
		    (unsigned long)max_res, (unsigned long)max_arena, (unsigned long)x.keys,
		    (unsigned long)x.evicted, (unsigned long)x.returned_fresh,
		    (unsigned long)hot_found, (unsigned long)hot_seen);
	cr_assert_gt(x.evicted, 0u);
	cr_assert_gt(x.returned_fresh, 0u, "Zipf keys come back after eviction");
	cr_assert_eq(x.evicted_to_tier, 0u);
	/* the arena (mapped, measured by the table, not the evictor) stays near the budget */
	cr_assert_leq(max_arena, budget + (4ull << 20), "arena %lu", (unsigned long)max_arena);
	/* LRU keeps the hottest keys */
	cr_assert_eq(hot_found, hot_seen);
	free(z.cdf);
	dynemb_close(c);
}

/* Adam, per element, in double with the rounding to float of each stored value (the
 * reference: torch.optim.Adam's formulas for one parameter, as de_learn.h states). */
struct adam_ref {
	double p, m, v;
	int t;
};
static void adam_step(struct adam_ref *a, double g, double lr)
{
	const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
	a->t++;
	a->m = (float)(b1 * a->m + (1 - b1) * g);
	a->v = (float)(b2 * a->v + (1 - b2) * g * g);
	double bc1 = 1 - pow(b1, a->t), bc2 = 1 - pow(b2, a->t);
	a->p = (float)(a->p - lr / bc1 * a->m / (sqrt(a->v) / sqrt(bc2) + eps));
}

static void evict_key_by_pressure(dynemb_client *c, int t, uint64_t victim, uint64_t step0)
{
	/* new keys with later steps until the victim is gone (LRU) */
	enum { B = 512, DIM = 4 };
	static float out[B * DIM];
	uint64_t keys[B];
	for (int r = 0; r < 200; r++) {
		for (int i = 0; i < B; i++)
			keys[i] = 1000000 + (uint64_t)r * B + (uint64_t)i;
		cr_assert_eq(dynemb_lookup(c, t, keys, B, out, NULL, 0, step0 + (uint64_t)r), 0);
		float v[DIM];
		uint8_t st;
		cr_assert_eq(dynemb_lookup(c, t, &victim, 1, v, &st, DYNEMB_READONLY, 0), 0);
		if (st == DYNEMB_ST_MISSING)
			return;
	}
	cr_assert_fail("key %lu was never evicted", (unsigned long)victim);
}

Test(evict, disk_tier_restores_adam_state)
{
	enum { DIM = 4 };
	const double lr = 0.05;
	dynemb_client *c = connect_ok(0);
	struct dynemb_table_spec s = { .name = "ev_tier", .dim = DIM, .init = DYNEMB_CONSTANT,
				   .init_a = 0.5f, .seed = 9,
				   .eviction = { .policy = DYNEMB_EVICTION_LRU, .budget_bytes = 3ull << 20,
						 .disk_tier = true } };
	dynemb_optim_spec_defaults(DYNEMB_OPTIM_ADAM, &s.optim);
	s.optim.lr = lr;
	int t = open_spec(c, &s);
	uint64_t key = 42;
	float v[DIM], g[DIM];
	uint8_t st;
	cr_assert_eq(dynemb_lookup(c, t, &key, 1, v, &st, 0, 1), 0);
	cr_assert_eq(st, DYNEMB_ST_CREATED);
	struct adam_ref ref[DIM];
	const double gs[3][DIM] = { { 0.3, -1, 2, 0.01 }, { -0.2, 0.5, 1, -3 }, { 1, 1, -1, 0.7 } };
	for (int j = 0; j < DIM; j++)
		ref[j] = (struct adam_ref){ 0.5, 0, 0, 0 };
	for (int s2 = 0; s2 < 2; s2++) {
		for (int j = 0; j < DIM; j++) {
			g[j] = (float)gs[s2][j];
			adam_step(&ref[j], g[j], lr);
		}
		cr_assert_eq(dynemb_apply_gradients(c, t, &key, 1, g, 2 + (uint64_t)s2, 0, NULL), 0);
	}
	evict_key_by_pressure(c, t, key, 10);
	/* the key reads missing once the pass erased it; the pass counts its tier writes
	 * when it flushes them, a moment later (a loaded TSan box saw 0 here) */
	struct dynemb_stats x = stats(c, t);
	for (int i = 0; i < 500 && !x.evicted_to_tier; i++) {
		usleep(10000);
		x = stats(c, t);
	}
	cr_assert_gt(x.evicted_to_tier, 0u);
	/* it comes back with its values ... */
	cr_assert_eq(dynemb_lookup(c, t, &key, 1, v, &st, 0, 10000), 0);
	for (int j = 0; j < DIM; j++)
		cr_assert_float_eq(v[j], (float)ref[j].p, 1e-6, "restored value %d: %g vs %g", j, v[j],
				   ref[j].p);
	/* ... and its Adam moments and step count: the third step is t = 3 */
	for (int j = 0; j < DIM; j++) {
		g[j] = (float)gs[2][j];
		adam_step(&ref[j], g[j], lr);
	}
	cr_assert_eq(dynemb_apply_gradients(c, t, &key, 1, g, 10001, 0, NULL), 0);
	cr_assert_eq(dynemb_lookup(c, t, &key, 1, v, &st, DYNEMB_READONLY, 0), 0);
	for (int j = 0; j < DIM; j++)
		cr_assert_float_eq(v[j], (float)ref[j].p, 1e-6, "after step 3, %d: %g vs %g", j, v[j],
				   ref[j].p);
	x = stats(c, t);
	cr_assert_geq(x.restored_from_tier, 1u);

	/* gradients before any lookup bring an evicted row back too */
	uint64_t key2 = 43;
	cr_assert_eq(dynemb_lookup(c, t, &key2, 1, v, &st, 0, 20000), 0);
	struct adam_ref r2[DIM];
	for (int j = 0; j < DIM; j++) {
		r2[j] = (struct adam_ref){ 0.5, 0, 0, 0 };
		g[j] = (float)gs[0][j];
		adam_step(&r2[j], g[j], lr);
	}
	cr_assert_eq(dynemb_apply_gradients(c, t, &key2, 1, g, 20001, 0, NULL), 0);
	evict_key_by_pressure(c, t, key2, 30000);
	for (int j = 0; j < DIM; j++) {
		g[j] = (float)gs[1][j];
		adam_step(&r2[j], g[j], lr);
	}
	cr_assert_eq(dynemb_apply_gradients(c, t, &key2, 1, g, 40000, 0, NULL), 0);
	cr_assert_eq(dynemb_lookup(c, t, &key2, 1, v, &st, DYNEMB_READONLY, 0), 0);
	for (int j = 0; j < DIM; j++)
		cr_assert_float_eq(v[j], (float)r2[j].p, 1e-6, "grads-first restore %d", j);
	dynemb_close(c);
}

Test(evict, returned_fresh_without_tier)
{
	enum { DIM = 4 };
	dynemb_client *c = connect_ok(0);
	struct dynemb_table_spec s = { .name = "ev_fresh", .dim = DIM, .init = DYNEMB_CONSTANT,
				   .init_a = 0.5f, .seed = 9,
				   .eviction = { .policy = DYNEMB_EVICTION_LRU, .budget_bytes = 3ull << 20 } };
	int t = open_spec(c, &s);
	uint64_t key = 77;
	float v[DIM] = { 9, 9, 9, 9 };
	cr_assert_eq(dynemb_update(c, t, &key, 1, v, 1, NULL), 0);
	evict_key_by_pressure(c, t, key, 10);
	uint64_t before = stats(c, t).returned_fresh;
	uint8_t st;
	cr_assert_eq(dynemb_lookup(c, t, &key, 1, v, &st, 0, 100000), 0);
	cr_assert_eq(st, DYNEMB_ST_CREATED);
	for (int j = 0; j < DIM; j++)
		cr_assert_eq(v[j], 0.5f, "no tier: the key starts fresh");
	cr_assert_eq(stats(c, t).returned_fresh, before + 1);
	dynemb_close(c);
}

Test(notier, tier_needs_a_tier_dir, .fini = daemon_stop, .timeout = TIMEOUT)
{
	const char *extra[] = { "--tier-dir", "", NULL };
	daemon_start(extra);
	dynemb_client *c = connect_ok(0);
	struct dynemb_table_spec s = { .name = "ev_notier", .dim = 4, .seed = 1,
				   .eviction = { .policy = DYNEMB_EVICTION_LRU, .budget_bytes = 1 << 20,
						 .disk_tier = true } };
	int t;
	int err = dynemb_open(c, &s, &t);
	cr_assert_eq(err, -EINVAL);
	cr_assert(strstr(dynemb_strerror(err), "tier_dir"), "%s", dynemb_strerror(err));
	s.eviction.disk_tier = false; /* without a tier it opens */
	cr_assert_eq(dynemb_open(c, &s, &t), 0);
	dynemb_close(c);
}

/* Zero-copy readers while rows are evicted: each row read is the assigned value (found)
 * or zeros (missing), never anything else, and no call fails. */
struct writer_arg {
	int stop; /* atomic: set by the main thread */
	int err;
};
static void *writer(void *p)
{
	struct writer_arg *a = p;
	dynemb_client *c = NULL;
	struct dynemb_connect_opts o = { .timeout_ms = 20000 };
	if ((a->err = dynemb_connect(d_sock, &o, &c)))
		return NULL;
	struct dynemb_table_spec s = { .name = "ev_ro", .dim = 8, .init = DYNEMB_CONSTANT, .init_a = 1,
				   .seed = 2, .eviction = { .policy = DYNEMB_EVICTION_LRU,
							    .budget_bytes = 3ull << 20 } };
	int t;
	if ((a->err = dynemb_open(c, &s, &t)))
		goto out;
	static float out[512 * 8];
	uint64_t keys[512];
	for (uint64_t r = 0; !__atomic_load_n(&a->stop, __ATOMIC_ACQUIRE) && r < 4000; r++) {
		for (int i = 0; i < 512; i++)
			keys[i] = 1000000 + r * 512 + (uint64_t)i;
		if ((a->err = dynemb_lookup(c, t, keys, 512, out, NULL, 0, 1000 + r)))
			break;
	}
out:
	dynemb_close(c);
	return NULL;
}

Test(evict, readonly_zero_copy_readers_survive_eviction)
{
	enum { DIM = 8, N = 1000 };
	dynemb_client *c = connect_ok(0);
	struct dynemb_table_spec s = { .name = "ev_ro", .dim = DIM, .init = DYNEMB_CONSTANT, .init_a = 1,
				   .seed = 2, .eviction = { .policy = DYNEMB_EVICTION_LRU,
							    .budget_bytes = 3ull << 20 } };
	int t = open_spec(c, &s);
	uint64_t keys[N];
	static float vals[N * DIM], out[N * DIM];
	for (int i = 0; i < N; i++) {
		keys[i] = 1 + (uint64_t)i;
		for (int j = 0; j < DIM; j++)
			vals[i * DIM + j] = (float)(i * 16 + j + 1);
	}
	cr_assert_eq(dynemb_update(c, t, keys, N, vals, 1, NULL), 0);
	struct writer_arg wa = { 0 };
	pthread_t th;
	pthread_create(&th, NULL, writer, &wa);
	uint8_t st[N];
	size_t missing = 0, reads = 0;
	double end = now_s() + 30;
	while (now_s() < end) {
		int err = dynemb_lookup(c, t, keys, N, out, st, DYNEMB_READONLY, 0);
		cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
		reads++;
		size_t miss = 0;
		for (int i = 0; i < N; i++) {
			for (int j = 0; j < DIM; j++) {
				float want = st[i] == DYNEMB_ST_FOUND ? vals[i * DIM + j] : 0.0f;
				cr_assert_eq(out[i * DIM + j], want, "key %d status %u", i, st[i]);
			}
			miss += st[i] == DYNEMB_ST_MISSING;
		}
		missing = miss;
		if (missing == N)
			break; /* every assigned row evicted while we read */
	}
	__atomic_store_n(&wa.stop, 1, __ATOMIC_RELEASE);
	pthread_join(th, NULL);
	cr_assert_eq(wa.err, 0, "writer: %s", dynemb_strerror(wa.err));
	uint64_t local = 0, remote = 0;
	dynemb_zero_copy_counts(c, &local, &remote);
	cr_log_info("readonly reads %zu, missing at the end %zu, local keys %lu", reads, missing,
		    (unsigned long)local);
	cr_assert_eq(missing, (size_t)N, "the writer evicts every old row");
	cr_assert_gt(local, 0u);
	dynemb_close(c);
}

/* The host budget bounds all evicting tables together; the second table joins the
 * evictor while its thread runs (the daemon stops, adds, restarts it). */
static void start_host_budget(void)
{
	const char *extra[] = { "--host-budget-bytes", "8M", NULL };
	daemon_start(extra);
}

Test(host, two_tables_under_the_host_budget, .init = start_host_budget, .fini = daemon_stop,
     .timeout = TIMEOUT)
{
	enum { DIM = 16, B = 1000 };
	const uint64_t host = 8ull << 20, each = 6ull << 20;
	dynemb_client *c = connect_ok(0);
	struct dynemb_table_spec s = { .name = "h1", .dim = DIM, .seed = 1,
				   .eviction = { .policy = DYNEMB_EVICTION_LRU, .budget_bytes = each } };
	int t1 = open_spec(c, &s);
	static float out[B * DIM];
	uint64_t keys[B];
	for (int r = 0; r < 20; r++) { /* t1 alone: its thread is running */
		for (int i = 0; i < B; i++)
			keys[i] = 1 + (uint64_t)r * B + (uint64_t)i;
		cr_assert_eq(dynemb_lookup(c, t1, keys, B, out, NULL, 0, (uint64_t)r + 1), 0);
	}
	s.name = "h2";
	int t2 = open_spec(c, &s);
	uint64_t max_sum = 0;
	for (int r = 0; r < 200; r++) {
		for (int i = 0; i < B; i++)
			keys[i] = 1000000 + (uint64_t)r * B + (uint64_t)i;
		int t = r % 2 ? t1 : t2;
		cr_assert_eq(dynemb_lookup(c, t, keys, B, out, NULL, 0, 100 + (uint64_t)r), 0);
		struct dynemb_stats a = stats(c, t1), b = stats(c, t2);
		uint64_t sum = a.resident_bytes + b.resident_bytes;
		if (sum > max_sum)
			max_sum = sum;
		cr_assert_leq(a.resident_bytes, each + each / 50);
		cr_assert_leq(b.resident_bytes, each + each / 50);
		cr_assert_leq(sum, host + host / 50, "round %d: %lu + %lu over the host budget", r,
			      (unsigned long)a.resident_bytes, (unsigned long)b.resident_bytes);
	}
	cr_log_info("host budget %lu: max sum of resident %lu", (unsigned long)host,
		    (unsigned long)max_sum);
	cr_assert_gt(stats(c, t2).evicted, 0u, "the second table is evicted from too");
	dynemb_close(c);
}

/* TTL in steps: rows not touched for more than ttl steps go, by the background sweep. */
Test(evict, ttl_in_steps_expires_idle_rows)
{
	enum { DIM = 4, N = 100 };
	dynemb_client *c = connect_ok(0);
	struct dynemb_table_spec s = { .name = "ev_ttl", .dim = DIM, .init = DYNEMB_CONSTANT, .init_a = 1,
				   .seed = 1, .eviction = { .policy = DYNEMB_EVICTION_TTL, .ttl = 10 } };
	int t = open_spec(c, &s);
	uint64_t old[N], fresh[N];
	float out[N * DIM];
	for (int i = 0; i < N; i++) {
		old[i] = 1 + (uint64_t)i;
		fresh[i] = 1000 + (uint64_t)i;
	}
	cr_assert_eq(dynemb_lookup(c, t, old, N, out, NULL, 0, 5), 0);
	cr_assert_eq(dynemb_lookup(c, t, fresh, N, out, NULL, 0, 100), 0); /* now = 100 */
	double end = now_s() + 10;
	struct dynemb_stats x;
	do {
		usleep(20000);
		x = stats(c, t);
	} while (x.keys > N && now_s() < end);
	cr_assert_eq(x.keys, (uint64_t)N, "step 5 + ttl 10 < 100: the old rows expired");
	cr_assert_eq(x.evicted, (uint64_t)N);
	uint8_t st[N];
	cr_assert_eq(dynemb_lookup(c, t, fresh, N, out, st, DYNEMB_READONLY, 0), 0);
	for (int i = 0; i < N; i++)
		cr_assert_eq(st[i], DYNEMB_ST_FOUND, "rows of step 100 stay");
	cr_assert_eq(dynemb_lookup(c, t, old, N, out, st, DYNEMB_READONLY, 0), 0);
	for (int i = 0; i < N; i++)
		cr_assert_eq(st[i], DYNEMB_ST_MISSING);
	dynemb_close(c);
}

/* ---- top-k -------------------------------------------------------------------------- */

TestSuite(topk, .init = start_default, .fini = daemon_stop, .timeout = TIMEOUT);

static float rnd_val(uint64_t *rng) { return (float)((double)(rng_next(rng) >> 11) * 0x1p-52 - 1.0); }

/* Brute force over (keys, vals) in double; checks the daemon's answer: same keys in the
 * same order (ties and near-ties within tol may swap), scores within tol. */
static void check_topk(const uint64_t *keys, const float *vals, size_t n, uint32_t dim,
		       const float *q, uint32_t k, bool cosine, const uint64_t *got_k,
		       const float *got_s, uint32_t found)
{
	double *sc = calloc(n, sizeof(double));
	bool *used = calloc(n, 1);
	for (size_t i = 0; i < n; i++) {
		double d = 0, nq = 0, nv = 0;
		for (uint32_t j = 0; j < dim; j++) {
			d += (double)q[j] * vals[i * dim + j];
			nq += (double)q[j] * q[j];
			nv += (double)vals[i * dim + j] * vals[i * dim + j];
		}
		sc[i] = cosine ? (nq > 0 && nv > 0 ? d / sqrt(nq) / sqrt(nv) : 0) : d;
	}
	uint32_t want_found = n < k ? (uint32_t)n : k;
	cr_assert_eq(found, want_found);
	for (uint32_t r = 0; r < k; r++) {
		if (r >= want_found) {
			cr_assert_eq(got_k[r], 0u);
			cr_assert(isinf(got_s[r]) && got_s[r] < 0);
			continue;
		}
		size_t best = SIZE_MAX;
		for (size_t i = 0; i < n; i++)
			if (!used[i] && (best == SIZE_MAX || sc[i] > sc[best]))
				best = i;
		/* the daemon's key must score within tol of the best remaining one */
		size_t gi = SIZE_MAX;
		for (size_t i = 0; i < n; i++)
			if (keys[i] == got_k[r])
				gi = i;
		cr_assert_neq(gi, SIZE_MAX, "rank %u: key %lu is not in the table", r,
			      (unsigned long)got_k[r]);
		cr_assert(!used[gi], "rank %u: key repeated", r);
		cr_assert_leq(fabs(sc[gi] - sc[best]), 1e-5, "rank %u: %g vs best %g", r, sc[gi],
			      sc[best]);
		cr_assert_leq(fabs(got_s[r] - sc[gi]), 1e-5, "rank %u score %g vs %g", r, got_s[r],
			      sc[gi]);
		used[gi] = true;
	}
	free(sc);
	free(used);
}

static void topk_case(uint64_t data_bytes, size_t n, size_t nq, uint32_t k)
{
	enum { DIM = 8 };
	dynemb_client *c = connect_ok(data_bytes);
	char name[32];
	snprintf(name, sizeof name, "tk_%zu_%u", nq, k);
	struct dynemb_table_spec s = { .name = name, .dim = DIM, .seed = 1 };
	int t = open_spec(c, &s);
	uint64_t *keys = calloc(n, 8), rng = n * 31 + nq;
	float *vals = calloc(n * DIM, 4), *q = calloc(nq * DIM, 4);
	for (size_t i = 0; i < n; i++) {
		keys[i] = 10 + i * 7;
		for (int j = 0; j < DIM; j++)
			vals[i * DIM + j] = rnd_val(&rng);
	}
	if (n)
		cr_assert_eq(dynemb_update(c, t, keys, n, vals, 1, NULL), 0);
	for (size_t i = 0; i < nq * DIM; i++)
		q[i] = rnd_val(&rng);
	uint64_t *gk = calloc(nq * k, 8);
	float *gs = calloc(nq * k, 4);
	uint32_t *found = calloc(nq, 4);
	for (int m = 0; m < 2; m++) {
		int err = dynemb_topk(c, t, q, nq, k, m ? DYNEMB_METRIC_COSINE : DYNEMB_METRIC_DOT, gk, gs, found);
		cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
		for (size_t i = 0; i < nq; i += (nq > 50 ? 37 : 1))
			check_topk(keys, vals, n, DIM, q + i * DIM, k, m, gk + i * k, gs + i * k, found[i]);
	}
	free(keys), free(vals), free(q), free(gk), free(gs), free(found);
	dynemb_close(c);
}

Test(topk, dot_and_cosine_vs_brute_force) { topk_case(0, 500, 7, 10); }
Test(topk, fewer_keys_than_k) { topk_case(0, 5, 3, 8); }
/* 1 MiB of data area: 3000 queries x 64 results do not fit one request */
Test(topk, many_queries_split_into_chunks) { topk_case(1u << 20, 300, 3000, 64); }

Test(topk, errors)
{
	dynemb_client *c = connect_ok(0);
	struct dynemb_table_spec s = { .name = "tk_err", .dim = 4, .seed = 1 };
	int t = open_spec(c, &s);
	float q[4] = { 1, 2, 3, 4 }, sc[4];
	uint64_t k[4];
	uint32_t f;
	cr_assert_eq(dynemb_topk(c, t, q, 1, 0, DYNEMB_METRIC_DOT, k, sc, &f), -EINVAL);
	cr_assert_eq(dynemb_topk(c, t, q, 1, 65537, DYNEMB_METRIC_DOT, k, sc, &f), -E2BIG);
	cr_assert_eq(dynemb_topk(c, t, q, 1, 4, (enum dynemb_metric)2, k, sc, &f), -EINVAL);
	cr_assert_eq(dynemb_topk(c, 99, q, 1, 4, DYNEMB_METRIC_DOT, k, sc, &f), -EINVAL);
	q[2] = NAN;
	cr_assert_eq(dynemb_topk(c, t, q, 1, 4, DYNEMB_METRIC_DOT, k, sc, &f), -EINVAL, "daemon: NaN query");
	q[2] = 3;
	/* an empty table: nothing found */
	cr_assert_eq(dynemb_topk(c, t, q, 1, 4, DYNEMB_METRIC_DOT, k, sc, &f), 0);
	cr_assert_eq(f, 0u);
	dynemb_close(c);
}

/* ---- sampling ----------------------------------------------------------------------- */

TestSuite(sample, .init = start_default, .fini = daemon_stop, .timeout = TIMEOUT);

Test(sample, uniform_shapes_probabilities_and_replay)
{
	enum { N = 100, NS = 50, NP = 3 };
	dynemb_client *c = connect_ok(0);
	struct dynemb_table_spec s = { .name = "sm_u", .dim = 2, .seed = 1 };
	int t = open_spec(c, &s);
	struct dynemb_sample_spec sp = { .kind = DYNEMB_SAMPLER_UNIFORM, .num_sampled = NS, .seed = 5 };
	uint64_t out[NS], pos[NP] = { 3, 4, 999 };
	float se[NS], te[NP];
	uint8_t acc[NS];
	cr_assert_eq(dynemb_sample(c, t, &sp, pos, NP, out, se, te, acc), -ENOENT, "empty table");
	uint64_t keys[N];
	for (int i = 0; i < N; i++)
		keys[i] = 1 + (uint64_t)i;
	float v[N * 2];
	cr_assert_eq(dynemb_lookup(c, t, keys, N, v, NULL, 0, 1), 0);
	cr_assert_eq(dynemb_sample(c, t, &sp, pos, NP, out, se, te, acc), 0);
	for (int i = 0; i < NS; i++) {
		cr_assert(out[i] >= 1 && out[i] <= N, "sampled %lu is a live key", (unsigned long)out[i]);
		cr_assert_float_eq(se[i], (float)NS / N, 1e-6, "expected = n * 1/L");
		cr_assert_eq(acc[i], out[i] == 3 || out[i] == 4);
	}
	cr_assert_float_eq(te[0], (float)NS / N, 1e-6);
	cr_assert_float_eq(te[2], (float)NS / N, 1e-6, "uniform: 1/L for any key");
	uint64_t again[NS];
	cr_assert_eq(dynemb_sample(c, t, &sp, pos, NP, again, NULL, NULL, NULL), 0);
	cr_assert_arr_eq(out, again, sizeof out, "same seed, same table: same draw");
	sp.seed = 6;
	cr_assert_eq(dynemb_sample(c, t, &sp, pos, NP, again, NULL, NULL, NULL), 0);
	cr_assert(memcmp(out, again, sizeof out), "another seed, another draw");
	/* unique: distinct keys; expected = 1 - (1 - 1/L)^T with T >= n draws */
	sp.unique = 1;
	cr_assert_eq(dynemb_sample(c, t, &sp, pos, NP, out, se, te, acc), 0);
	for (int i = 0; i < NS; i++)
		for (int j = 0; j < i; j++)
			cr_assert_neq(out[i], out[j]);
	double tries = log1p(-(double)se[0]) / log1p(-1.0 / N);
	cr_assert_geq(tries, NS - 1e-3);
	cr_assert_float_eq(tries, round(tries), 1e-2, "T is a whole number of draws");
	sp.num_sampled = N + 1;
	cr_assert_eq(dynemb_sample(c, t, &sp, NULL, 0, out, NULL, NULL, NULL), -ERANGE);
	sp.num_sampled = 0;
	cr_assert_eq(dynemb_sample(c, t, &sp, NULL, 0, out, NULL, NULL, NULL), -EINVAL);
	sp.num_sampled = 70000; /* above the daemon's max batch (65536) */
	cr_assert_eq(dynemb_sample(c, t, &sp, NULL, 0, out, NULL, NULL, NULL), -E2BIG);
	sp.num_sampled = 4;
	sp.kind = (enum dynemb_sampler)3;
	cr_assert_eq(dynemb_sample(c, t, &sp, NULL, 0, out, NULL, NULL, NULL), -EINVAL);
	sp.kind = DYNEMB_SAMPLER_UNIGRAM;
	sp.power = -1;
	cr_assert_eq(dynemb_sample(c, t, &sp, NULL, 0, out, NULL, NULL, NULL), -EINVAL);
	dynemb_close(c);
}

Test(sample, log_uniform_ranks_by_frequency)
{
	enum { N = 20, NS = 4000 };
	dynemb_client *c = connect_ok(0);
	struct dynemb_table_spec s = { .name = "sm_lu", .dim = 2, .seed = 1 };
	int t = open_spec(c, &s);
	/* key 100 + i is looked up N - i times: rank i */
	float v[2];
	for (int i = 0; i < N; i++)
		for (int r = 0; r < N - i; r++) {
			uint64_t k = 100 + (uint64_t)i;
			cr_assert_eq(dynemb_lookup(c, t, &k, 1, v, NULL, 0, 1), 0);
		}
	usleep(200000); /* the snapshot is rebuilt every 50 ms here */
	struct dynemb_sample_spec sp = { .kind = DYNEMB_SAMPLER_LOG_UNIFORM, .num_sampled = NS, .seed = 1 };
	static uint64_t out[NS];
	static float se[NS];
	uint64_t pos[2] = { 100, 119 };
	float te[2];
	cr_assert_eq(dynemb_sample(c, t, &sp, pos, 2, out, se, te, NULL), 0);
	int count[N] = { 0 };
	for (int i = 0; i < NS; i++) {
		cr_assert(out[i] >= 100 && out[i] < 100 + N);
		int r = (int)(out[i] - 100);
		count[r]++;
		double p = log((r + 2.0) / (r + 1.0)) / log(N + 1.0);
		cr_assert_float_eq(se[i], (float)(NS * p), 1e-3 * NS * p, "rank %d", r);
	}
	cr_assert_float_eq(te[0], (float)(NS * log(2.0) / log(N + 1.0)), 1e-2, "rank 0");
	cr_assert_float_eq(te[1], (float)(NS * log((N + 1.0) / N) / log(N + 1.0)), 1e-2, "rank 19");
	for (int r = 0; r < N; r++) {
		double p = log((r + 2.0) / (r + 1.0)) / log(N + 1.0);
		cr_assert_lt(fabs(count[r] - NS * p), 5 * sqrt(NS * p * (1 - p)) + 1, "rank %d: %d vs %g",
			     r, count[r], NS * p);
	}
	dynemb_close(c);
}

/* ---- string tables: key strings ------------------------------------------------------- */

TestSuite(strings, .init = start_default, .fini = daemon_stop, .timeout = TIMEOUT);

Test(strings, topk_sample_and_key_strings)
{
	enum { N = 30, DIM = 4 };
	dynemb_client *c = connect_ok(0);
	struct dynemb_table_spec s = { .name = "st", .dim = DIM, .seed = 11, .keys = DYNEMB_STRING_KEYS };
	int t = open_spec(c, &s);
	char names[N][24];
	const char *ptr[N];
	float vals[N * DIM];
	for (int i = 0; i < N; i++) {
		snprintf(names[i], sizeof names[i], "word-%d%s", i, i % 3 ? "" : "-long-suffix");
		ptr[i] = names[i];
		for (int j = 0; j < DIM; j++)
			vals[i * DIM + j] = (float)(j == 0 ? i : 0);
	}
	cr_assert_eq(dynemb_update_str(c, t, ptr, NULL, N, vals, 1, NULL), 0);
	/* top-1 of (1,0,0,0) is the largest first coordinate: word-29 */
	float q[DIM] = { 1, 0, 0, 0 };
	uint64_t k[3];
	float sc[3];
	uint32_t f;
	cr_assert_eq(dynemb_topk(c, t, q, 1, 3, DYNEMB_METRIC_DOT, k, sc, &f), 0);
	cr_assert_eq(f, 3u);
	uint64_t fp;
	cr_assert_eq(dynemb_string_key(c, t, names[29], strlen(names[29]), &fp), 0);
	cr_assert_eq(k[0], fp);
	char buf[256];
	uint32_t lens[3];
	cr_assert_eq(dynemb_key_strings(c, t, k, 3, buf, sizeof buf, lens), 0);
	size_t off = 0;
	for (int i = 0; i < 3; i++) {
		const char *want = names[29 - i];
		cr_assert_eq(lens[i], strlen(want));
		cr_assert(!memcmp(buf + off, want, lens[i]), "string %d", i);
		off += lens[i];
	}
	/* too small: -ENOSPC with every length filled; unknown key: UINT32_MAX */
	uint64_t k4[4] = { k[0], 12345, k[1], 0 };
	uint32_t l4[4];
	cr_assert_eq(dynemb_key_strings(c, t, k4, 4, buf, 3, l4), -ENOSPC);
	cr_assert_eq(l4[0], strlen(names[29]));
	cr_assert_eq(l4[1], UINT32_MAX);
	cr_assert_eq(l4[2], strlen(names[28]));
	cr_assert_eq(l4[3], 0u, "key 0 is the empty string");
	/* sampling with string positives: accidental hits name the positive */
	struct dynemb_sample_spec sp = { .kind = DYNEMB_SAMPLER_UNIFORM, .num_sampled = N, .unique = 1,
				     .seed = 3 };
	uint64_t out[N];
	uint8_t acc[N];
	float te[1];
	const char *p1[1] = { names[5] };
	cr_assert_eq(dynemb_sample_str(c, t, &sp, p1, NULL, 1, out, NULL, te, acc), 0);
	uint64_t fp5;
	cr_assert_eq(dynemb_string_key(c, t, names[5], strlen(names[5]), &fp5), 0);
	int hits = 0;
	for (int i = 0; i < N; i++) {
		cr_assert_eq(acc[i], out[i] == fp5);
		hits += acc[i];
	}
	cr_assert_eq(hits, 1, "unique over all N keys draws the positive exactly once");
	/* int64 tables have no strings */
	struct dynemb_table_spec si = { .name = "st_int", .dim = DIM, .seed = 11 };
	int ti = open_spec(c, &si);
	cr_assert_eq(dynemb_key_strings(c, ti, k, 1, buf, sizeof buf, lens), -EINVAL);
	cr_assert_eq(dynemb_sample_str(c, ti, &sp, p1, NULL, 1, out, NULL, NULL, NULL), -EINVAL);
	dynemb_close(c);
}
