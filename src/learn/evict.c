/*
 * evict.c — eviction under memory budgets (public header: de_learn.h, "Eviction", which
 * defines resident bytes, the watermarks, the scores and the clocks).
 *
 * Owns: per table, a pool of eviction candidates (sampled LRU as in Redis' evict.c), a
 * random state, the TTL sweep cursor, a "recently evicted" Bloom filter and statistics;
 * the background thread.
 * Never: scans a whole table in one call (a pass examines at most `samples` row ids per
 * eviction and `sweep_rows` per TTL sweep); evicts a row without re-checking its score
 * under the row's write protection (de_table_erase_if); holds a table's lock while doing
 * tier I/O for another table. A table's eviction state is guarded by its mutex (taken by
 * the thread, de_evict_step and the inline path of de_evict_after_lookup).
 * Victims bound for the tier are staged (up to STAGE_ROWS) and written with one tier put;
 * every pass flushes its stage before it releases the table's lock, and a victim is put
 * in the Bloom filter before its erase, so a lookup that finds a recently evicted key gone
 * and not in the tier waits for the table's lock and looks again: a returning key never
 * misses its row because it was in flight to the tier.
 * Logged eviction (on_evict, pass_lock: de_learn.h): each pass collects the keys it erased
 * and hands them to on_evict in flush_stage, after the stage's tier put returned; a pass
 * takes the table's pass_lock (writing) before its mutex, always in that order.
 * Removal (de_evict_remove_table): tab[] may hold NULL slots (a table removed; add reuses
 * them). Every walk over tab[] (de_evict_step, host_pass, the host totals) holds tab_lock
 * for reading across its use of the tables it walks; removal and add hold it for writing
 * while they change a slot, so a removed table is freed only once no walk can see it.
 * Functions given one table id (after_lookup, inline, table_step, stats, set_budget, now)
 * take no tab_lock: their caller owns that id and never passes it once it removed it.
 * Lock order: tab_lock, then a table's pass_lock, then its mutex; no thread that holds
 * tab_lock asks for it again (the rwlock prefers writers: a second read could wait behind
 * a removal that waits for the first).
 * Callers: the daemon (after lookups, and its thread), tests/evict.
 */
#include "de_learn.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <xxhash.h>

#define LD(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define ADD(p, v) __atomic_fetch_add((p), (v), __ATOMIC_RELAXED)
/* Tables registered so far. acquire: pairs with the release in de_evict_add_table, so
 * tab[i] for every i below it is fully built (a lookup thread may run while the daemon
 * registers another table with the thread stopped). */
#define NTAB(ev) __atomic_load_n(&(ev)->ntab, __ATOMIC_ACQUIRE)

#define BLOOM_BITS (1u << 20)
#define BLOOM_GEN (1u << 17) /* evictions per generation */
#define STAGE_ROWS 64u       /* victims buffered before one tier put */
#define HOST_BATCH 64u       /* rows taken from one table per host decision */

struct cand {
	uint64_t key;
	double score;
};

struct etable {
	pthread_mutex_t lock; /* everything below except the atomics and the Bloom words */
	de_table *t;
	de_arena *a;
	struct de_evict_table_config cfg;
	uint32_t dim, row_floats;
	uint64_t row_cost;
	uint64_t rng;
	struct cand *pool;
	uint32_t npool;
	uint64_t cursor;      /* TTL sweep */
	float *vals;          /* dim floats for L2 peeks */
	/* victims staged for the tier */
	float *stage_rows;
	struct de_row_meta *stage_meta;
	uint32_t nstage;
	/* keys erased since the last on_evict call */
	uint64_t *erased;
	uint32_t nerased;
	/* "recently evicted": two generations, atomics (read by lookup threads) */
	uint64_t *bloom[2];
	uint32_t gen;         /* index of the current generation */
	uint64_t gen_count;   /* evictions into the current one */
	/* statistics (atomics) */
	uint64_t evicted, expired, to_tier, tier_errors, restored, fresh, kept, sweeps;
};

struct de_evict {
	struct de_evict_config cfg;
	struct etable *tab[DE_EVICT_MAX_TABLES]; /* NULL: a removed table's free slot */
	uint32_t ntab;            /* slots used so far (live or free) */
	pthread_rwlock_t tab_lock; /* walks read, add/remove write (top of the file) */
	uint64_t step;
	pthread_mutex_t run_lock; /* thread start/stop and the stop flag */
	pthread_cond_t run_cond;
	pthread_t thread;
	bool running, stop;
	pthread_mutex_t host_lock; /* one host-budget decision at a time */
};

static uint64_t mono_seconds(void *ctx)
{
	(void)ctx;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec;
}

int de_evict_create(const struct de_evict_config *cfg, de_evict **out)
{
	if (!cfg || !out)
		return -EINVAL;
	struct de_evict_config c = *cfg;
	if (!c.samples)
		c.samples = 16;
	if (!c.pool)
		c.pool = 16;
	if (c.high == 0 && c.low == 0) {
		c.high = 0.98;
		c.low = 0.95;
	}
	if (!c.inline_max)
		c.inline_max = 1024;
	if (!c.interval_ms)
		c.interval_ms = 10;
	if (!c.sweep_rows)
		c.sweep_rows = 4096;
	if (!c.clock)
		c.clock = mono_seconds;
	if (c.samples > 4096 || c.pool > 256 || !(c.low > 0 && c.low <= c.high && c.high <= 1) ||
	    c.interval_ms > 60000 || c.sweep_rows > (1u << 24))
		return -EINVAL;
	de_evict *ev = calloc(1, sizeof *ev);
	if (!ev)
		return -ENOMEM;
	ev->cfg = c;
	pthread_mutex_init(&ev->run_lock, NULL);
	pthread_cond_init(&ev->run_cond, NULL);
	pthread_mutex_init(&ev->host_lock, NULL);
	pthread_rwlockattr_t ra; /* writer preference: a removal is not starved by passes */
	pthread_rwlockattr_init(&ra);
	pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&ev->tab_lock, &ra);
	pthread_rwlockattr_destroy(&ra);
	*out = ev;
	return 0;
}

static void etable_free(struct etable *e)
{
	if (!e)
		return;
	pthread_mutex_destroy(&e->lock);
	free(e->pool);
	free(e->vals);
	free(e->stage_rows);
	free(e->stage_meta);
	free(e->erased);
	free(e->bloom[0]);
	free(e->bloom[1]);
	free(e);
}

static void flush_stage(struct etable *e);
static void table_lock(struct etable *e);
static void table_unlock(struct etable *e);
/* The table of a slot: its owner's id (acquire: pairs with the release in add). */
#define SLOT(ev, i) __atomic_load_n(&(ev)->tab[i], __ATOMIC_ACQUIRE)

void de_evict_destroy(de_evict *ev)
{
	if (!ev)
		return;
	de_evict_stop(ev);
	for (uint32_t i = 0; i < ev->ntab; i++) {
		if (!ev->tab[i])
			continue;
		pthread_mutex_lock(&ev->tab[i]->lock);
		flush_stage(ev->tab[i]);
		pthread_mutex_unlock(&ev->tab[i]->lock);
		etable_free(ev->tab[i]);
	}
	pthread_mutex_destroy(&ev->run_lock);
	pthread_cond_destroy(&ev->run_cond);
	pthread_mutex_destroy(&ev->host_lock);
	pthread_rwlock_destroy(&ev->tab_lock);
	free(ev);
}

int de_evict_add_table(de_evict *ev, de_table *t, de_arena *a,
		       const struct de_evict_table_config *cfg, uint32_t *id)
{
	if (!ev || !t || !a || !cfg || !id)
		return -EINVAL;
	if (cfg->policy == DE_EVICT_NONE || (unsigned)cfg->policy > DE_EVICT_L2 || (unsigned)cfg->clock > DE_CLOCK_TIME ||
	    (cfg->policy == DE_EVICT_TTL && !cfg->ttl))
		return -EINVAL;
	struct de_table_config tc;
	int err = de_table_config_get(t, &tc);
	if (err)
		return err;
	pthread_mutex_lock(&ev->run_lock);
	if (ev->running) {
		pthread_mutex_unlock(&ev->run_lock);
		return -EBUSY;
	}
	pthread_mutex_unlock(&ev->run_lock);
	uint32_t slot = 0;
	while (slot < ev->ntab && ev->tab[slot]) /* a removed table's slot first */
		slot++;
	if (slot >= DE_EVICT_MAX_TABLES)
		return -ENOSPC;
	struct etable *e = calloc(1, sizeof *e);
	if (!e)
		return -ENOMEM;
	pthread_mutex_init(&e->lock, NULL);
	e->t = t;
	e->a = a;
	e->cfg = *cfg;
	e->dim = tc.dim;
	e->row_floats = de_table_row_floats(t);
	e->row_cost = de_table_bytes_per_row(t);
	e->rng = (ev->cfg.seed ^ (0x9E3779B97F4A7C15ull * (slot + 1))) | 1;
	e->pool = calloc(ev->cfg.pool, sizeof *e->pool);
	e->vals = malloc(4ull * e->dim);
	e->stage_rows = malloc(4ull * e->row_floats * STAGE_ROWS);
	e->stage_meta = malloc(sizeof *e->stage_meta * STAGE_ROWS);
	e->erased = malloc(sizeof *e->erased * STAGE_ROWS);
	e->bloom[0] = calloc(BLOOM_BITS / 64, 8);
	e->bloom[1] = calloc(BLOOM_BITS / 64, 8);
	if (!e->pool || !e->vals || !e->stage_rows || !e->stage_meta || !e->erased || !e->bloom[0] ||
	    !e->bloom[1]) {
		etable_free(e);
		return -ENOMEM;
	}
	if (cfg->tier) { /* the tier must hold rows of this table's size */
		struct de_tier_stats ts;
		if ((err = de_tier_stats(cfg->tier, &ts)) || ts.row_floats != e->row_floats) {
			etable_free(e);
			return err ? err : -EINVAL;
		}
	}
	pthread_rwlock_wrlock(&ev->tab_lock);
	*id = slot;
	/* release (both): publish tab[slot] built; pair with NTAB's acquire and SLOT's */
	__atomic_store_n(&ev->tab[slot], e, __ATOMIC_RELEASE);
	if (slot == ev->ntab)
		__atomic_store_n(&ev->ntab, ev->ntab + 1, __ATOMIC_RELEASE);
	pthread_rwlock_unlock(&ev->tab_lock);
	return 0;
}

int de_evict_remove_table(de_evict *ev, uint32_t id)
{
	if (!ev || id >= NTAB(ev))
		return -EINVAL;
	pthread_rwlock_wrlock(&ev->tab_lock); /* no walk (thread, host pass) is inside e */
	struct etable *e = ev->tab[id];
	__atomic_store_n(&ev->tab[id], NULL, __ATOMIC_RELAXED);
	pthread_rwlock_unlock(&ev->tab_lock);
	if (!e)
		return -EINVAL;
	/* every pass flushed its stage before it let go of e; the caller runs none on id */
	table_lock(e);
	flush_stage(e);
	table_unlock(e);
	etable_free(e);
	return 0;
}

int de_evict_set_budget(de_evict *ev, uint32_t id, uint64_t budget_bytes)
{
	if (!ev || (id >= NTAB(ev) && id != DE_EVICT_HOST) || (id != DE_EVICT_HOST && !SLOT(ev, id)))
		return -EINVAL;
	uint64_t *p = id == DE_EVICT_HOST ? &ev->cfg.host_budget_bytes : &ev->tab[id]->cfg.budget_bytes;
	__atomic_store_n(p, budget_bytes, __ATOMIC_RELAXED);
	return 0;
}

static uint64_t resident(const struct etable *e);

uint64_t de_evict_resident(de_evict *ev, uint32_t id)
{
	uint32_t nt = ev ? NTAB(ev) : 0;
	if (!ev || (id >= nt && id != DE_EVICT_HOST))
		return 0;
	uint64_t sum = 0;
	pthread_rwlock_rdlock(&ev->tab_lock);
	for (uint32_t i = 0; i < nt; i++)
		if ((id == DE_EVICT_HOST || id == i) && ev->tab[i])
			sum += resident(ev->tab[i]);
	pthread_rwlock_unlock(&ev->tab_lock);
	return sum;
}

void de_evict_set_step(de_evict *ev, uint64_t step)
{
	if (!ev)
		return;
	uint64_t cur = LD(&ev->step);
	while (step > cur &&
	       !__atomic_compare_exchange_n(&ev->step, &cur, step, true, __ATOMIC_RELAXED,
					    __ATOMIC_RELAXED))
		;
}

static uint64_t now_of(de_evict *ev, const struct etable *e)
{
	return e->cfg.clock == DE_CLOCK_TIME ? ev->cfg.clock(ev->cfg.clock_ctx) : LD(&ev->step);
}

uint64_t de_evict_now(de_evict *ev, uint32_t id)
{
	if (!ev || id >= NTAB(ev) || !SLOT(ev, id))
		return UINT64_MAX;
	return now_of(ev, ev->tab[id]);
}

/* ---- accounting --------------------------------------------------------------------- */

static uint64_t resident(const struct etable *e)
{
	struct de_table_stats s;
	if (de_table_stats(e->t, &s))
		return 0;
	uint64_t used = de_arena_used_bytes(e->a);
	uint64_t fixed = used > s.row_bytes ? used - s.row_bytes : 0;
	return fixed + s.keys * e->row_cost;
}

/* ---- scores and the pool ------------------------------------------------------------- */

static double score(de_evict *ev, const struct etable *e, const struct de_row_meta *m,
		    const float *vals, uint64_t now)
{
	switch (e->cfg.policy) {
	case DE_EVICT_LFU: {
		if (!e->cfg.half_life)
			return m->freq;
		double idle = now > m->last_step ? (double)(now - m->last_step) : 0;
		return m->freq * exp2(-idle / (double)e->cfg.half_life);
	}
	case DE_EVICT_L2: {
		double s = 0;
		for (uint32_t i = 0; i < e->dim; i++)
			s += (double)vals[i] * vals[i];
		return s;
	}
	default: /* LRU, TTL */
		(void)ev;
		return (double)m->last_step;
	}
}

static uint64_t rnd(struct etable *e)
{
	uint64_t x = e->rng; /* xorshift64* */
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	e->rng = x;
	return x * 0x2545F4914F6CDD1Dull;
}

static void pool_add(de_evict *ev, struct etable *e, uint64_t key, double s)
{
	uint32_t cap = ev->cfg.pool, i;
	for (i = 0; i < e->npool; i++) {
		if (e->pool[i].key == key) { /* refresh: remove, re-insert below */
			memmove(&e->pool[i], &e->pool[i + 1], (e->npool - i - 1) * sizeof *e->pool);
			e->npool--;
			break;
		}
	}
	if (e->npool == cap && s >= e->pool[cap - 1].score)
		return;
	for (i = 0; i < e->npool && e->pool[i].score <= s; i++)
		;
	uint32_t n = e->npool < cap ? e->npool : cap - 1;
	memmove(&e->pool[i + 1], &e->pool[i], (n - i) * sizeof *e->pool);
	e->pool[i] = (struct cand){ key, s };
	if (e->npool < cap)
		e->npool++;
}

/* One round: peek `samples` row ids (every row id when the table is that small). */
static void sample_round(de_evict *ev, struct etable *e, uint64_t now)
{
	uint64_t lim = de_table_row_limit(e->t);
	if (!lim)
		return;
	bool all = ev->cfg.samples >= lim;
	uint64_t n = all ? lim : ev->cfg.samples;
	float *vals = e->cfg.policy == DE_EVICT_L2 ? e->vals : NULL;
	for (uint64_t i = 0; i < n; i++) {
		uint64_t r = all ? i : rnd(e) % lim;
		struct de_row_meta m;
		if (de_table_peek(e->t, r, &m, vals))
			continue;
		pool_add(ev, e, m.key, score(ev, e, &m, vals, now));
	}
}

/* ---- erasing ------------------------------------------------------------------------ */

static void bloom_add(struct etable *e, uint64_t key)
{
	uint64_t h = XXH3_64bits(&key, sizeof key);
	uint64_t *b = e->bloom[e->gen];
	for (int k = 0; k < 2; k++) {
		uint32_t bit = (uint32_t)(h >> (32 * k)) & (BLOOM_BITS - 1);
		__atomic_fetch_or(&b[bit / 64], 1ull << (bit % 64), __ATOMIC_RELAXED);
	}
	if (++e->gen_count >= BLOOM_GEN) { /* rotate: clear the older, make it current */
		uint32_t g = e->gen ^ 1;
		for (uint32_t i = 0; i < BLOOM_BITS / 64; i++)
			__atomic_store_n(&e->bloom[g][i], 0, __ATOMIC_RELAXED);
		e->gen = g;
		e->gen_count = 0;
	}
}

static bool bloom_has(const struct etable *e, uint64_t key)
{
	uint64_t h = XXH3_64bits(&key, sizeof key);
	for (int g = 0; g < 2; g++) {
		bool all = true;
		for (int k = 0; k < 2 && all; k++) {
			uint32_t bit = (uint32_t)(h >> (32 * k)) & (BLOOM_BITS - 1);
			all = LD(&e->bloom[g][bit / 64]) >> (bit % 64) & 1;
		}
		if (all)
			return true;
	}
	return false;
}

static void flush_stage(struct etable *e)
{
	if (e->nstage) {
		if (de_tier_put(e->cfg.tier, e->stage_rows, e->stage_meta, e->nstage))
			ADD(&e->tier_errors, e->nstage);
		else
			ADD(&e->to_tier, e->nstage);
		e->nstage = 0;
	}
	/* the erases after the rows are in the tier: a log replayed sees the row erased
	 * only once the tier holds it */
	if (e->nerased && e->cfg.on_evict)
		e->cfg.on_evict(e->cfg.evict_ctx, e->erased, e->nerased);
	e->nerased = 0;
}

/* A pass over e: its pass lock (writing), then its mutex. */
static void table_lock(struct etable *e)
{
	if (e->cfg.pass_lock)
		pthread_rwlock_wrlock(e->cfg.pass_lock);
	pthread_mutex_lock(&e->lock);
}

static void table_unlock(struct etable *e)
{
	pthread_mutex_unlock(&e->lock);
	if (e->cfg.pass_lock)
		pthread_rwlock_unlock(e->cfg.pass_lock);
}

struct erase_ctx {
	de_evict *ev;
	struct etable *e;
	uint64_t now;
	double limit;   /* budget eviction: evict when the score is still <= limit */
	bool expire;    /* TTL expiry: evict when still expired */
	bool touched;   /* out: kept because it changed */
};

/* Under the row's write protection: decide, and copy the victim for the tier. */
static bool erase_fn(void *ctx, size_t i, const float *row, const struct de_row_meta *m)
{
	(void)i;
	struct erase_ctx *c = ctx;
	struct etable *e = c->e;
	bool ok;
	if (c->expire)
		ok = c->now > m->last_step && c->now - m->last_step > e->cfg.ttl;
	else
		ok = score(c->ev, e, m, row, c->now) <= c->limit;
	if (!ok) {
		c->touched = true;
		return false;
	}
	if (e->cfg.tier) {
		memcpy(e->stage_rows + (size_t)e->nstage * e->row_floats, row,
		       4ull * e->row_floats);
		e->stage_meta[e->nstage++] = *m;
	}
	/* before the erase: a lookup that finds the key gone must find it in the filter
	 * (de_evict_after_lookup then waits for the stage to reach the tier) */
	bloom_add(e, m->key);
	return true;
}

/* Erase key if it still qualifies. 1 erased, 0 kept or gone, < 0 error. Locked. */
static int erase_one(struct erase_ctx *c, uint64_t key)
{
	struct etable *e = c->e;
	if (e->nstage == STAGE_ROWS || e->nerased == STAGE_ROWS)
		flush_stage(e);
	c->touched = false;
	size_t n = 0;
	int err = de_table_erase_if(e->t, &key, 1, erase_fn, c, &n);
	if (err)
		return err;
	if (c->touched)
		ADD(&e->kept, 1);
	if (!n)
		return 0;
	e->erased[e->nerased++] = key;
	ADD(&e->evicted, 1);
	if (c->expire)
		ADD(&e->expired, 1);
	return 1;
}

/* Evict up to `want` rows by policy. Locked. Returns rows erased or a negative errno. */
static long evict_rows(de_evict *ev, struct etable *e, uint64_t want)
{
	uint64_t now = now_of(ev, e);
	struct erase_ctx c = { ev, e, now, 0, false, false };
	uint64_t done = 0, idle = 0;
	while (done < want) {
		sample_round(ev, e, now);
		if (!e->npool) {
			if (++idle > 8)
				break; /* nothing live to sample */
			continue;
		}
		struct cand best = e->pool[0];
		memmove(&e->pool[0], &e->pool[1], (e->npool - 1) * sizeof *e->pool);
		e->npool--;
		c.limit = best.score;
		int r = erase_one(&c, best.key);
		if (r < 0)
			return r;
		done += (uint64_t)r;
		if (!r && ++idle > 64 * (uint64_t)want + 1024)
			break; /* every candidate keeps getting touched: give up this pass */
	}
	flush_stage(e);
	return (long)done;
}

/* TTL: examine the next sweep_rows row ids and erase the expired ones. Locked. */
static long sweep(de_evict *ev, struct etable *e, uint64_t limit)
{
	uint64_t lim = de_table_row_limit(e->t);
	struct erase_ctx c = { ev, e, now_of(ev, e), 0, true, false };
	long done = 0;
	for (uint32_t i = 0; i < ev->cfg.sweep_rows && (uint64_t)done < limit; i++) {
		if (e->cursor >= lim) {
			e->cursor = 0;
			ADD(&e->sweeps, 1);
			if (!lim)
				break;
		}
		struct de_row_meta m;
		if (de_table_peek(e->t, e->cursor++, &m, NULL))
			continue;
		if (!(c.now > m.last_step && c.now - m.last_step > e->cfg.ttl))
			continue;
		int r = erase_one(&c, m.key);
		if (r < 0)
			return r;
		done += r;
	}
	flush_stage(e);
	return done;
}

/* Rows to evict to bring table e from `res` bytes down to `to` x its budget, or 0 when it
 * is not above `start` x its budget: the thread goes from the high watermark to the low
 * one; the inline path only from over the budget back to it (the least work that keeps
 * the budget on the request path; the thread makes the headroom). */
static uint64_t rows_over(const struct etable *e, uint64_t res, double start, double to)
{
	uint64_t b = LD(&e->cfg.budget_bytes);
	if (!b || (double)res <= start * (double)b)
		return 0;
	double low = to * (double)b;
	return (uint64_t)ceil(((double)res - low) / (double)e->row_cost);
}

/* ---- passes --------------------------------------------------------------------------- */

#define STEP_CHUNK 64u

/* Host budget: take rows from the table with the highest resident / share. tab_lock
 * held for reading. */
static long host_pass(de_evict *ev, double start, uint64_t max_rows)
{
	uint64_t hb = LD(&ev->cfg.host_budget_bytes);
	uint32_t nt = NTAB(ev), live = 0;
	if (!hb || !nt)
		return 0;
	pthread_mutex_lock(&ev->host_lock);
	uint64_t res[DE_EVICT_MAX_TABLES], sum = 0;
	for (uint32_t i = 0; i < nt; i++) {
		res[i] = ev->tab[i] ? resident(ev->tab[i]) : 0;
		sum += res[i];
		live += ev->tab[i] != NULL;
	}
	long done = 0;
	if ((double)sum > start * (double)hb) {
		double low = ev->cfg.low * (double)hb;
		while ((double)sum > low && (uint64_t)done < max_rows) {
			uint32_t w = 0;
			double worst = -1;
			for (uint32_t i = 0; i < nt; i++) {
				if (!ev->tab[i])
					continue;
				uint64_t share = LD(&ev->tab[i]->cfg.budget_bytes) ? LD(&ev->tab[i]->cfg.budget_bytes)
									       : hb / live;
				double r = (double)res[i] / (double)(share ? share : 1);
				if (r > worst) {
					worst = r;
					w = i;
				}
			}
			struct etable *e = ev->tab[w];
			if (!e)
				break;
			uint64_t want = (uint64_t)ceil((sum - low) / (double)e->row_cost);
			if (want > HOST_BATCH)
				want = HOST_BATCH;
			if (want > max_rows - (uint64_t)done)
				want = max_rows - (uint64_t)done;
			table_lock(e);
			long r = evict_rows(ev, e, want);
			table_unlock(e);
			if (r <= 0) {
				if (r < 0)
					done = done ? done : r;
				break;
			}
			done += r;
			uint64_t freed = (uint64_t)r * e->row_cost;
			res[w] = res[w] > freed ? res[w] - freed : 0;
			sum = sum > freed ? sum - freed : 0;
		}
	}
	pthread_mutex_unlock(&ev->host_lock);
	return done;
}

/* want rows of e evicted, STEP_CHUNK per hold of its lock (a request's inline eviction
 * never waits for a whole pass), at most *left; *left and *total follow. The last
 * evict_rows result: < 0 an error, else >= 0. */
static long evict_down(de_evict *ev, struct etable *e, uint64_t want, uint64_t *left,
		       uint64_t *total)
{
	long r = 0;
	while (want && *left) {
		uint64_t chunk = want < STEP_CHUNK ? want : STEP_CHUNK;
		table_lock(e);
		r = evict_rows(ev, e, chunk < *left ? chunk : *left);
		table_unlock(e);
		if (r <= 0)
			break;
		*total += (uint64_t)r;
		*left -= (uint64_t)r;
		want = want > (uint64_t)r ? want - (uint64_t)r : 0;
	}
	return r;
}

int de_evict_step(de_evict *ev, size_t max_rows, size_t *evicted)
{
	if (!ev)
		return -EINVAL;
	uint64_t left = max_rows ? max_rows : UINT64_MAX;
	uint64_t total = 0;
	int err = 0;
	uint32_t nt = NTAB(ev);
	pthread_rwlock_rdlock(&ev->tab_lock); /* no table of the walk is removed meanwhile */
	for (uint32_t i = 0; i < nt && !err && left; i++) {
		struct etable *e = ev->tab[i];
		if (!e)
			continue;
		table_lock(e);
		long r = 0;
		if (e->cfg.policy == DE_EVICT_TTL)
			r = sweep(ev, e, left);
		if (r >= 0) {
			total += (uint64_t)r;
			left -= (uint64_t)r;
		}
		table_unlock(e);
		/* from the high watermark to the low one, STEP_CHUNK rows per hold of the
		 * table's lock: a request's inline eviction never waits for a whole pass */
		if (r >= 0)
			r = evict_down(ev, e, rows_over(e, resident(e), ev->cfg.high, ev->cfg.low),
				       &left, &total);
		if (r < 0)
			err = (int)r;
	}
	if (!err && left) {
		long r = host_pass(ev, ev->cfg.high, left);
		if (r < 0)
			err = (int)r;
		else
			total += (uint64_t)r;
	}
	pthread_rwlock_unlock(&ev->tab_lock);
	if (evicted)
		*evicted = total;
	return err;
}

int de_evict_table_step(de_evict *ev, uint32_t id, size_t max_rows, size_t *evicted)
{
	if (evicted)
		*evicted = 0;
	if (!ev || id >= NTAB(ev) || !SLOT(ev, id))
		return -EINVAL;
	struct etable *e = ev->tab[id];
	uint64_t left = max_rows ? max_rows : UINT64_MAX;
	uint64_t total = 0;
	table_lock(e);
	long r = e->cfg.policy == DE_EVICT_TTL ? sweep(ev, e, left) : 0;
	table_unlock(e);
	if (r > 0) {
		total += (uint64_t)r;
		left -= (uint64_t)r;
	}
	/* from anywhere above the low watermark down to it, STEP_CHUNK rows per hold */
	if (r >= 0)
		r = evict_down(ev, e, rows_over(e, resident(e), ev->cfg.low, ev->cfg.low), &left,
			       &total);
	if (evicted)
		*evicted = total;
	return r < 0 ? (int)r : 0;
}

static void *thread_main(void *arg)
{
	de_evict *ev = arg;
	pthread_mutex_lock(&ev->run_lock);
	while (!ev->stop) {
		pthread_mutex_unlock(&ev->run_lock);
		de_evict_step(ev, 0, NULL); /* errors: retried next period */
		pthread_mutex_lock(&ev->run_lock);
		if (ev->stop)
			break;
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		uint64_t ns = (uint64_t)ts.tv_nsec + (uint64_t)ev->cfg.interval_ms * 1000000ull;
		ts.tv_sec += (time_t)(ns / 1000000000ull);
		ts.tv_nsec = (long)(ns % 1000000000ull);
		pthread_cond_timedwait(&ev->run_cond, &ev->run_lock, &ts);
	}
	pthread_mutex_unlock(&ev->run_lock);
	return NULL;
}

int de_evict_start(de_evict *ev)
{
	if (!ev)
		return -EINVAL;
	pthread_mutex_lock(&ev->run_lock);
	int err = 0;
	if (ev->running) {
		err = -EALREADY;
	} else {
		ev->stop = false;
		err = -pthread_create(&ev->thread, NULL, thread_main, ev);
		ev->running = !err;
	}
	pthread_mutex_unlock(&ev->run_lock);
	return err;
}

int de_evict_stop(de_evict *ev)
{
	if (!ev)
		return -EINVAL;
	pthread_mutex_lock(&ev->run_lock);
	if (!ev->running) {
		pthread_mutex_unlock(&ev->run_lock);
		return 0;
	}
	ev->stop = true;
	pthread_cond_signal(&ev->run_cond);
	pthread_mutex_unlock(&ev->run_lock);
	pthread_join(ev->thread, NULL);
	pthread_mutex_lock(&ev->run_lock);
	ev->running = false;
	pthread_mutex_unlock(&ev->run_lock);
	return 0;
}

/* ---- the lookup path ----------------------------------------------------------------- */

struct restore_row {
	const float *row;
	const struct de_row_meta *meta;
	uint32_t row_floats;
	uint64_t step;
};

static void restore_row_fn(void *ctx, size_t i, float *row, struct de_row_meta *meta)
{
	(void)i;
	const struct restore_row *c = ctx;
	memcpy(row, c->row, 4ull * c->row_floats);
	meta->freq = c->meta->freq;
	meta->aux = c->meta->aux;
	meta->last_step = c->step;
}

int de_evict_after_lookup(de_evict *ev, uint32_t id, const uint64_t *keys, size_t n,
			  const uint8_t *status, float *out, uint64_t step, size_t *restored)
{
	if (restored)
		*restored = 0;
	if (!ev || id >= NTAB(ev) || !SLOT(ev, id) || (n && (!keys || !status)))
		return -EINVAL;
	struct etable *e = ev->tab[id];
	size_t created = 0, back = 0;
	float *row = NULL;
	int err = 0;
	for (size_t i = 0; i < n; i++) {
		if (status[i] != DE_CREATED)
			continue;
		created++;
		if (e->cfg.tier) {
			if (!row && !(row = malloc(4ull * e->row_floats))) {
				err = -ENOMEM;
				break;
			}
			struct de_row_meta m;
			int r = de_tier_take(e->cfg.tier, keys[i], row, &m);
			if (r == -ENOENT && bloom_has(e, keys[i])) {
				/* evicted lately: it may sit in the stage of a pass that holds the
				 * table's lock right now (erased, not yet in the tier); every pass
				 * flushes its stage before it unlocks, so wait for it and look again */
				pthread_mutex_lock(&e->lock);
				pthread_mutex_unlock(&e->lock);
				r = de_tier_take(e->cfg.tier, keys[i], row, &m);
			}
			if (!r) {
				struct restore_row c = { row, &m, e->row_floats, step };
				uint8_t st = DE_MISSING;
				r = de_table_apply(e->t, &keys[i], 1, false, restore_row_fn, &c, &st,
						   step);
				if (!r && st == DE_FOUND) {
					if (out)
						memcpy(out + i * e->dim, row, 4ull * e->dim);
					ADD(&e->restored, 1);
					back++;
					continue;
				}
				/* evicted again meanwhile (or an error): keep the record */
				m.key = keys[i];
				if (de_tier_put(e->cfg.tier, row, &m, 1))
					ADD(&e->tier_errors, 1);
				if (r) {
					err = r;
					break;
				}
				continue;
			}
			if (r != -ENOENT)
				ADD(&e->tier_errors, 1); /* unreadable record: the key starts fresh */
		}
		if (bloom_has(e, keys[i]))
			ADD(&e->fresh, 1);
	}
	free(row);
	if (restored)
		*restored = back;
	if (err || !created || e->cfg.pass_lock) /* pass_lock: the owner calls de_evict_inline */
		return err;
	return de_evict_inline(ev, id);
}

int de_evict_inline(de_evict *ev, uint32_t id)
{
	if (!ev || id >= NTAB(ev) || !SLOT(ev, id))
		return -EINVAL;
	struct etable *e = ev->tab[id];
	/* inline eviction: the budget holds even when inserts outpace the thread */
	if (LD(&e->cfg.budget_bytes)) {
		uint64_t want = rows_over(e, resident(e), DE_EVICT_INLINE_OVER, DE_EVICT_INLINE_OVER);
		if (want) {
			if (want > ev->cfg.inline_max)
				want = ev->cfg.inline_max;
			table_lock(e); /* the thread holds it for STEP_CHUNK rows at most */
			long r = evict_rows(ev, e, want);
			table_unlock(e);
			if (r < 0)
				return (int)r;
		}
	}
	if (LD(&ev->cfg.host_budget_bytes)) {
		pthread_rwlock_rdlock(&ev->tab_lock);
		long r = host_pass(ev, 1.0, ev->cfg.inline_max);
		pthread_rwlock_unlock(&ev->tab_lock);
		if (r < 0)
			return (int)r;
	}
	return 0;
}

int de_evict_stats(de_evict *ev, uint32_t id, struct de_evict_stats *out)
{
	uint32_t nt = ev ? NTAB(ev) : 0;
	if (!ev || !out || (id >= nt && id != DE_EVICT_HOST) || (id != DE_EVICT_HOST && !SLOT(ev, id)))
		return -EINVAL;
	memset(out, 0, sizeof *out);
	uint32_t lo = id == DE_EVICT_HOST ? 0 : id, hi = id == DE_EVICT_HOST ? nt : id + 1;
	pthread_rwlock_rdlock(&ev->tab_lock);
	for (uint32_t i = lo; i < hi; i++) {
		struct etable *e = ev->tab[i];
		if (!e)
			continue;
		out->resident_bytes += resident(e);
		out->budget_bytes += LD(&e->cfg.budget_bytes);
		out->evicted += LD(&e->evicted);
		out->expired += LD(&e->expired);
		out->evicted_to_tier += LD(&e->to_tier);
		out->tier_errors += LD(&e->tier_errors);
		out->restored_from_tier += LD(&e->restored);
		out->returned_fresh += LD(&e->fresh);
		out->kept_touched += LD(&e->kept);
		out->sweeps += LD(&e->sweeps);
	}
	pthread_rwlock_unlock(&ev->tab_lock);
	if (id == DE_EVICT_HOST)
		out->budget_bytes = LD(&ev->cfg.host_budget_bytes);
	return 0;
}
