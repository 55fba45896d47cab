/*
 * sample.c — candidate samplers over a table for sampled softmax (public header:
 * de_learn.h, which states the distributions and the expected-count formulas).
 *
 * Owns: the sampler object, its two snapshot buffers and its background rebuild thread.
 * A snapshot is what LOG_UNIFORM and UNIGRAM draw from: the keys seen by a scan of the
 * table's rows (de_table_peek, racy but only used to choose candidates), their exact
 * probabilities, an alias table (UNIGRAM) and an index key -> position (for the
 * probabilities of positives).
 * Never: writes to the table; makes a sampling call wait for a rebuild; keeps global
 * state (several samplers and tables live in one process).
 * Callers: the daemon's sample request, tests/sample/test_sample.c.
 *
 * Snapshot publication (double buffering; readers never wait):
 *   reader:  p = load(cur); refs(p)++; if (load(cur) != p) { refs(p)--; retry }
 *            ... use p ...; refs(p)--
 *   rebuild: (under build_lock) spare = the buffer that is not cur; wait for
 *            refs(spare) == 0; rewrite spare; store(cur, spare).
 * All these are seq_cst. Why a reader never uses a buffer being rewritten: the rebuild
 * rewrites spare only after it saw refs(spare) == 0 with cur != spare. A reader whose
 * increment comes after that check in the total order re-reads cur after the increment,
 * so it sees cur != spare (and lets go) unless the rebuild has already published spare,
 * complete. A reader whose increment came before the check holds the rebuild off until
 * it lets go. The buffers are freed only by de_sampler_destroy.
 */
#include "de_learn.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NOIDX UINT32_MAX

struct snap {
	_Atomic long refs;
	uint64_t gen;
	size_t n;          /* keys that can be drawn */
	size_t cap;        /* capacity of the arrays below */
	uint64_t *keys;    /* LOG_UNIFORM: by rank; UNIGRAM: any order */
	double *prob;      /* exact P(keys[i]) */
	double *thresh;    /* UNIGRAM alias table: keep column i when u < thresh[i] ... */
	uint32_t *alias;   /* ... else take alias[i] */
	uint32_t *index;   /* open addressing, key -> position; NOIDX = empty */
	size_t imask;
	double floor;      /* probability reported for positives not in the snapshot */
	double total;      /* UNIGRAM: the sum of the weights (freq^power) of the keys */
	double log_range;  /* LOG_UNIFORM: log(n + 1) */
};

struct de_sampler {
	de_table *t;
	struct de_sampler_config cfg;
	_Atomic uint64_t calls;
	struct snap buf[2];
	_Atomic(struct snap *) cur;
	pthread_mutex_t build_lock; /* serializes rebuilds */
	uint64_t gen;               /* under build_lock */
	/* background thread */
	pthread_t thr;
	bool thr_started;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stop;
	int last_error; /* of the background rebuild, under lock (kept for diagnosis) */
};

/* ---- randomness ------------------------------------------------------------------- */

static inline double rnd_unit(uint64_t *s) /* [0, 1), 53 bits */
{
	return (double)(de_splitmix64_next(s) >> 11) * 0x1p-53;
}

static inline uint64_t rnd_below(uint64_t *s, uint64_t n) /* [0, n), bias <= n / 2^64 */
{
	return (uint64_t)(((unsigned __int128)de_splitmix64_next(s) * n) >> 64);
}

/* ---- small hash sets (per call) ---------------------------------------------------- */

/* Open addressing over uint64 keys, 0 = empty (key 0 is never stored). */
struct kset {
	uint64_t *slot;
	size_t mask;
};

static int kset_init(struct kset *h, size_t n)
{
	size_t cap = 16;
	while (cap < 2 * n)
		cap <<= 1;
	h->slot = calloc(cap, sizeof(uint64_t));
	h->mask = cap - 1;
	return h->slot ? 0 : -ENOMEM;
}

/* true when key was added, false when it was there (or is 0) */
static bool kset_add(struct kset *h, uint64_t key)
{
	if (!key)
		return false;
	for (size_t i = de_mix64(key) & h->mask;; i = (i + 1) & h->mask) {
		if (h->slot[i] == key)
			return false;
		if (!h->slot[i]) {
			h->slot[i] = key;
			return true;
		}
	}
}

static bool kset_has(const struct kset *h, uint64_t key)
{
	if (!key)
		return false;
	for (size_t i = de_mix64(key) & h->mask;; i = (i + 1) & h->mask) {
		if (h->slot[i] == key)
			return true;
		if (!h->slot[i])
			return false;
	}
}

/* ---- configuration ---------------------------------------------------------------- */

static int why_fail(char *why, size_t cap, const char *msg)
{
	if (why && cap)
		snprintf(why, cap, "%s", msg);
	return -EINVAL;
}

int de_sampler_check(const struct de_sampler_config *cfg, char *why, size_t cap)
{
	if (!cfg)
		return why_fail(why, cap, "no config");
	switch (cfg->kind) {
	case DE_SAMPLER_UNIFORM:
	case DE_SAMPLER_LOG_UNIFORM:
		if (cfg->power != 0)
			return why_fail(why, cap, "power is only for the unigram sampler");
		break;
	case DE_SAMPLER_UNIGRAM:
		if (!(cfg->power >= 0 && cfg->power <= DE_SAMPLER_MAX_POWER))
			return why_fail(why, cap, "unigram power must be in [0, 16]");
		break;
	default:
		return why_fail(why, cap, "unknown sampler kind");
	}
	if (cfg->kind == DE_SAMPLER_UNIFORM && cfg->rebuild_ms)
		return why_fail(why, cap, "the uniform sampler has no snapshot to rebuild");
	return 0;
}

/* ---- snapshots -------------------------------------------------------------------- */

static void snap_free(struct snap *p)
{
	free(p->keys);
	free(p->prob);
	free(p->thresh);
	free(p->alias);
	free(p->index);
	memset(p, 0, sizeof(*p));
}

static int grow(void **pp, size_t n, size_t sz)
{
	void *q = realloc(*pp, n * sz);
	if (!q)
		return -ENOMEM;
	*pp = q;
	return 0;
}

static int snap_reserve(struct snap *p, size_t n)
{
	if (n <= p->cap && p->keys)
		return 0;
	size_t cap = n < 64 ? 64 : n + n / 4;
	if (grow((void **)&p->keys, cap, sizeof(uint64_t)) ||
	    grow((void **)&p->prob, cap, sizeof(double)) ||
	    grow((void **)&p->thresh, cap, sizeof(double)) ||
	    grow((void **)&p->alias, cap, sizeof(uint32_t)))
		return -ENOMEM;
	p->cap = cap;
	return 0;
}

static size_t snap_find(const struct snap *p, uint64_t key)
{
	if (!key || !p->n)
		return NOIDX;
	for (size_t i = de_mix64(key) & p->imask;; i = (i + 1) & p->imask) {
		uint32_t j = p->index[i];
		if (j == NOIDX)
			return NOIDX;
		if (p->keys[j] == key)
			return j;
	}
}

/* Build the index over keys[0, n), dropping duplicates (a key seen twice by a racy scan)
 * by compacting keys and freq. */
static int snap_index(struct snap *p, uint32_t *freq)
{
	size_t cap = 16;
	while (cap < 2 * p->n)
		cap <<= 1;
	uint32_t *idx = malloc(cap * sizeof(uint32_t));
	if (!idx)
		return -ENOMEM;
	memset(idx, 0xff, cap * sizeof(uint32_t));
	free(p->index);
	p->index = idx;
	p->imask = cap - 1;
	size_t w = 0;
	for (size_t r = 0; r < p->n; r++) {
		uint64_t key = p->keys[r];
		size_t i = de_mix64(key) & p->imask;
		bool dup = false;
		for (;; i = (i + 1) & p->imask) {
			if (idx[i] == NOIDX)
				break;
			if (p->keys[idx[i]] == key) {
				dup = true;
				break;
			}
		}
		if (dup)
			continue;
		p->keys[w] = key;
		freq[w] = freq[r];
		idx[i] = (uint32_t)w++;
	}
	p->n = w;
	return 0;
}

struct kf {
	uint64_t key;
	uint32_t freq;
};

static int by_rank(const void *a, const void *b)
{
	const struct kf *x = a, *y = b;
	if (x->freq != y->freq)
		return x->freq > y->freq ? -1 : 1;
	return (x->key > y->key) - (x->key < y->key);
}

/* Vose's alias method: column i keeps itself with probability thresh[i], else alias[i]. */
static int build_alias(struct snap *p)
{
	size_t n = p->n;
	uint32_t *small = malloc(n * sizeof(uint32_t)), *large = malloc(n * sizeof(uint32_t));
	double *sc = malloc(n * sizeof(double));
	if (!small || !large || !sc) {
		free(small);
		free(large);
		free(sc);
		return -ENOMEM;
	}
	size_t ns = 0, nl = 0;
	for (size_t i = 0; i < n; i++) {
		sc[i] = p->prob[i] * (double)n;
		if (sc[i] < 1.0)
			small[ns++] = (uint32_t)i;
		else
			large[nl++] = (uint32_t)i;
	}
	while (ns && nl) {
		uint32_t s = small[--ns], l = large[nl - 1];
		p->thresh[s] = sc[s];
		p->alias[s] = l;
		sc[l] = (sc[l] + sc[s]) - 1.0;
		if (sc[l] < 1.0) {
			nl--;
			small[ns++] = l;
		}
	}
	/* what is left is 1 up to rounding */
	while (nl) {
		uint32_t l = large[--nl];
		p->thresh[l] = 1.0;
		p->alias[l] = l;
	}
	while (ns) {
		uint32_t s = small[--ns];
		p->thresh[s] = 1.0;
		p->alias[s] = s;
	}
	free(small);
	free(large);
	free(sc);
	return 0;
}

/* Scan the table into p (no reader holds p). */
static int snap_build(de_sampler *s, struct snap *p)
{
	uint64_t lim = de_table_row_limit(s->t);
	struct kf *kv = NULL;
	uint32_t *freq = NULL;
	size_t n = 0, cap = 0;
	int rc = 0;
	for (uint64_t r = 0; r < lim; r++) {
		struct de_row_meta m;
		if (de_table_peek(s->t, r, &m, NULL) != 0 || !m.key)
			continue;
		if (n == cap) {
			cap = cap ? 2 * cap : 1024;
			if (grow((void **)&kv, cap, sizeof(*kv))) {
				rc = -ENOMEM;
				goto out;
			}
		}
		kv[n].key = m.key;
		kv[n].freq = m.freq;
		n++;
	}
	if (n && s->cfg.kind == DE_SAMPLER_LOG_UNIFORM)
		qsort(kv, n, sizeof(*kv), by_rank);
	if ((rc = snap_reserve(p, n)) || !(freq = malloc((n ? n : 1) * sizeof(uint32_t)))) {
		rc = rc ? rc : -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		p->keys[i] = kv[i].key;
		freq[i] = kv[i].freq;
	}
	p->n = n;
	if ((rc = snap_index(p, freq)))
		goto out;
	n = p->n;
	if (s->cfg.kind == DE_SAMPLER_LOG_UNIFORM) {
		p->log_range = log((double)n + 1.0);
		for (size_t i = 0; i < n; i++)
			p->prob[i] = log(((double)i + 2.0) / ((double)i + 1.0)) / p->log_range;
		p->floor = n ? log(((double)n + 2.0) / ((double)n + 1.0)) / p->log_range : 0;
	} else {
		/* weights; keys of weight 0 cannot be drawn and leave the snapshot */
		double total = 0;
		size_t w = 0;
		for (size_t i = 0; i < n; i++) {
			double wt = pow((double)freq[i], s->cfg.power);
			if (!(wt > 0) || !isfinite(wt))
				continue;
			p->keys[w] = p->keys[i];
			p->prob[w++] = wt;
			total += wt;
		}
		p->n = n = w;
		p->total = total;
		if ((rc = snap_index(p, freq))) /* rebuild the index over the kept keys */
			goto out;
		p->floor = 0;
		for (size_t i = 0; i < n; i++) {
			p->prob[i] /= total;
			if (!p->floor || p->prob[i] < p->floor)
				p->floor = p->prob[i];
		}
		if (n && (rc = build_alias(p)))
			goto out;
	}
out:
	if (rc)
		p->n = 0;
	free(kv);
	free(freq);
	return rc;
}

static struct snap *snap_pin(de_sampler *s)
{
	for (;;) {
		struct snap *p = atomic_load(&s->cur);
		atomic_fetch_add(&p->refs, 1);
		if (atomic_load(&s->cur) == p)
			return p;
		atomic_fetch_sub(&p->refs, 1);
	}
}

static void snap_unpin(struct snap *p)
{
	atomic_fetch_sub(&p->refs, 1);
}

int de_sampler_rebuild(de_sampler *s)
{
	if (!s)
		return -EINVAL;
	if (s->cfg.kind == DE_SAMPLER_UNIFORM)
		return 0;
	pthread_mutex_lock(&s->build_lock);
	struct snap *cur = atomic_load(&s->cur);
	struct snap *spare = cur == &s->buf[0] ? &s->buf[1] : &s->buf[0];
	/* wait for readers that pinned spare when it was current (they hold it briefly) */
	for (unsigned spins = 0; atomic_load(&spare->refs) != 0; spins++) {
		if (spins < 64)
			sched_yield();
		else
			nanosleep(&(struct timespec){ 0, 50000 }, NULL);
	}
	int rc = snap_build(s, spare);
	if (!rc) {
		spare->gen = ++s->gen;
		atomic_store(&s->cur, spare);
	}
	pthread_mutex_unlock(&s->build_lock);
	return rc;
}

static void *rebuild_thread(void *arg)
{
	de_sampler *s = arg;
	pthread_mutex_lock(&s->lock);
	while (!s->stop) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		uint64_t ns = (uint64_t)ts.tv_nsec + (uint64_t)s->cfg.rebuild_ms * 1000000ull;
		ts.tv_sec += (time_t)(ns / 1000000000ull);
		ts.tv_nsec = (long)(ns % 1000000000ull);
		while (!s->stop && pthread_cond_timedwait(&s->cond, &s->lock, &ts) != ETIMEDOUT)
			;
		if (s->stop)
			break;
		pthread_mutex_unlock(&s->lock);
		int rc = de_sampler_rebuild(s);
		pthread_mutex_lock(&s->lock);
		s->last_error = rc;
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

int de_sampler_create(de_table *t, const struct de_sampler_config *cfg, de_sampler **out)
{
	if (!t || !out)
		return -EINVAL;
	int rc = de_sampler_check(cfg, NULL, 0);
	if (rc)
		return rc;
	de_sampler *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->t = t;
	s->cfg = *cfg;
	atomic_init(&s->calls, 0);
	atomic_init(&s->buf[0].refs, 0);
	atomic_init(&s->buf[1].refs, 0);
	atomic_init(&s->cur, &s->buf[0]);
	pthread_mutex_init(&s->build_lock, NULL);
	pthread_mutex_init(&s->lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->cond, &ca);
	pthread_condattr_destroy(&ca);
	if (cfg->kind != DE_SAMPLER_UNIFORM) {
		if ((rc = de_sampler_rebuild(s)))
			goto fail;
		if (cfg->rebuild_ms) {
			if ((rc = -pthread_create(&s->thr, NULL, rebuild_thread, s)))
				goto fail;
			s->thr_started = true;
		}
	}
	*out = s;
	return 0;
fail:
	de_sampler_destroy(s);
	return rc;
}

void de_sampler_destroy(de_sampler *s)
{
	if (!s)
		return;
	if (s->thr_started) {
		pthread_mutex_lock(&s->lock);
		s->stop = true;
		pthread_cond_signal(&s->cond);
		pthread_mutex_unlock(&s->lock);
		pthread_join(s->thr, NULL);
	}
	snap_free(&s->buf[0]);
	snap_free(&s->buf[1]);
	pthread_cond_destroy(&s->cond);
	pthread_mutex_destroy(&s->lock);
	pthread_mutex_destroy(&s->build_lock);
	free(s);
}

/* ---- sampling --------------------------------------------------------------------- */

/* TF's ExpectedCountHelper */
static float expected_count(double p, uint64_t n, uint64_t tries)
{
	if (tries == n)
		return (float)(p * (double)n);
	if (p >= 1.0)
		return 1.0f;
	return (float)-expm1((double)tries * log1p(-p));
}

static uint64_t live_keys(de_table *t)
{
	struct de_table_stats st;
	return de_table_stats(t, &st) ? 0 : st.keys;
}

/* One UNIFORM draw: a live row's key, or 0 after DE_SAMPLE_MAX_REJECT free rows. */
static uint64_t draw_uniform(de_table *t, uint64_t lim, uint64_t *rng)
{
	for (unsigned i = 0; i < DE_SAMPLE_MAX_REJECT; i++) {
		struct de_row_meta m;
		if (de_table_peek(t, rnd_below(rng, lim), &m, NULL) == 0 && m.key)
			return m.key;
	}
	return 0;
}

static uint64_t draw_snap(const struct snap *p, enum de_sampler_kind kind, uint64_t *rng)
{
	if (kind == DE_SAMPLER_LOG_UNIFORM) {
		/* floor(exp(u log(n+1)) - 1) = r  iff  u in [log(r+1), log(r+2)) / log(n+1) */
		double v = floor(exp(rnd_unit(rng) * p->log_range) - 1.0);
		size_t r = v < 0 ? 0 : (size_t)v;
		return p->keys[r < p->n ? r : p->n - 1];
	}
	size_t i = rnd_below(rng, p->n);
	return p->keys[rnd_unit(rng) < p->thresh[i] ? i : p->alias[i]];
}

static double snap_prob(const struct snap *p, uint64_t key)
{
	if (!key)
		return 0;
	size_t i = snap_find(p, key);
	return i == NOIDX ? p->floor : p->prob[i];
}

/* de_sample's body, with the call's unique flag and its stream's start state rng0. */
static int sample_impl(de_sampler *s, bool unique, uint64_t rng0, size_t n,
		       const uint64_t *positives, size_t npos, uint64_t *keys,
		       float *sampled_expected, uint8_t *is_positive, float *true_expected,
		       struct de_sample_info *info)
{
	if (!s || !keys || !n || (npos && !positives))
		return -EINVAL;
	if (n > DE_SAMPLE_MAX || npos > DE_SAMPLE_MAX_POSITIVES)
		return -E2BIG;
	const bool uniform = s->cfg.kind == DE_SAMPLER_UNIFORM;
	struct snap *p = NULL;
	uint64_t pop, lim = 0;
	if (uniform) {
		pop = live_keys(s->t);
		lim = de_table_row_limit(s->t);
		if (!pop || !lim)
			return -ENOENT;
	} else {
		p = snap_pin(s);
		pop = p->n;
		if (!pop) {
			snap_unpin(p);
			return -ENOENT;
		}
	}
	int rc = 0;
	struct kset seen = { 0 }, pos = { 0 };
	if (unique && n > pop) {
		rc = -ERANGE;
		goto out;
	}
	if ((unique && (rc = kset_init(&seen, n))) ||
	    (is_positive && npos && (rc = kset_init(&pos, npos))))
		goto out;
	uint64_t rng = rng0;
	uint64_t tries = 0, max_tries = DE_SAMPLE_MAX_TRIES(n);
	for (size_t i = 0; i < n;) {
		if (tries >= max_tries) {
			rc = -EAGAIN;
			goto out;
		}
		uint64_t key = uniform ? draw_uniform(s->t, lim, &rng) : draw_snap(p, s->cfg.kind, &rng);
		if (!key) {
			rc = -EAGAIN; /* only UNIFORM: too many free rows in a row */
			goto out;
		}
		tries++;
		if (unique && !kset_add(&seen, key))
			continue;
		keys[i++] = key;
	}
	const double pu = 1.0 / (double)pop;
	if (sampled_expected)
		for (size_t i = 0; i < n; i++)
			sampled_expected[i] =
				expected_count(uniform ? pu : snap_prob(p, keys[i]), n, tries);
	if (true_expected)
		for (size_t j = 0; j < npos; j++) {
			double pr = !positives[j] ? 0 : uniform ? pu : snap_prob(p, positives[j]);
			true_expected[j] = expected_count(pr, n, tries);
		}
	if (is_positive) {
		for (size_t j = 0; j < npos; j++)
			kset_add(&pos, positives[j]);
		for (size_t i = 0; i < n; i++)
			is_positive[i] = npos && kset_has(&pos, keys[i]);
	}
	if (info) {
		info->num_tries = tries;
		info->population = pop;
		info->generation = p ? p->gen : 0;
		info->weight = uniform ? (double)pop
			       : s->cfg.kind == DE_SAMPLER_UNIGRAM ? p->total : 0;
	}
out:
	if (p)
		snap_unpin(p);
	free(seen.slot);
	free(pos.slot);
	return rc;
}

int de_sample(de_sampler *s, size_t n, const uint64_t *positives, size_t npos, uint64_t *keys,
	      float *sampled_expected, uint8_t *is_positive, float *true_expected,
	      struct de_sample_info *info)
{
	if (!s)
		return -EINVAL;
	uint64_t rng0 = de_mix64(s->cfg.seed ^ de_mix64(atomic_fetch_add(&s->calls, 1) + 1));
	return sample_impl(s, s->cfg.unique, rng0, n, positives, npos, keys, sampled_expected,
			   is_positive, true_expected, info);
}

/* The stream of a call with its own seed is the one the FIRST de_sample call of a
 * sampler created with cfg.seed = seed would use (call counter 1): replayable. */
int de_sample_seeded(de_sampler *s, int unique, uint64_t seed, size_t n,
		     const uint64_t *positives, size_t npos, uint64_t *keys,
		     float *sampled_expected, uint8_t *is_positive, float *true_expected,
		     struct de_sample_info *info)
{
	if (!s)
		return -EINVAL;
	return sample_impl(s, unique != 0, de_mix64(seed ^ de_mix64(1)), n, positives, npos, keys,
			   sampled_expected, is_positive, true_expected, info);
}

int de_sampler_prob(de_sampler *s, const uint64_t *keys, size_t n, double *prob)
{
	if (!s || (n && (!keys || !prob)))
		return -EINVAL;
	if (s->cfg.kind == DE_SAMPLER_UNIFORM) {
		uint64_t pop = live_keys(s->t);
		for (size_t i = 0; i < n; i++)
			prob[i] = pop && keys[i] ? 1.0 / (double)pop : 0;
		return 0;
	}
	struct snap *p = snap_pin(s);
	for (size_t i = 0; i < n; i++)
		prob[i] = p->n ? snap_prob(p, keys[i]) : 0;
	snap_unpin(p);
	return 0;
}
