/*
 * learnops.c — dynembd's learning features beyond the optimizer: admission, eviction
 * under memory budgets with the disk tier, candidate sampling and top-k (libdelearn,
 * src/learn/de_learn.h), and the ops SAMPLE, TOPK, KEY_STRINGS (proto.h).
 *
 * Owns: the daemon's one evictor (struct srv_learn_host) and, per table, its admission
 * filter, its disk tier and its samplers (struct srv_table_learn, t->rt).
 *
 * Admission (a table with admission mode count or probability):
 *   - A SIGHTING is one occurrence of a missing key in a create-lookup (LOOKUP with
 *     DE_LOOKUP_CREATE): a key twice in one batch is seen twice. Read-only lookups,
 *     UPDATE and APPLY_GRADS are not sightings. Keys the table holds are not counted.
 *   - COUNT: the key is admitted at the sighting that brings its count-min estimate to
 *     min_count (the Nth sighting, or earlier on a sketch collision: the sketch never
 *     under-counts single-threaded). PROBABILITY: each sighting admits with p.
 *   - An admitted key is created by that lookup (status CREATED). A key not admitted is
 *     not stored: it reads as its initializer value (reject_value init, de_table_init_row)
 *     or zeros, with status MISSING.
 *   - UPDATE and APPLY_GRADS never create a key the table does not hold: its values or
 *     gradients are dropped and counted (stats grads_dropped). So a trainer's first
 *     gradients for a key not admitted yet are lost, as in the paper.
 *   - A key the disk tier holds was admitted before: it is restored, not filtered.
 *   - The sketch is seeded with the table seed: two daemons given the same single
 *     stream admit the same keys.
 *
 * Eviction (a table with an eviction policy): the table joins the daemon's evictor (one
 * per daemon, DE_EVICT_MAX_TABLES tables at most, -ENOSPC past that; a DROP takes it
 * out again, srv_learn_table_evict_leave, and its slot is reused) with its budget;
 * [memory] host_budget_bytes bounds all evicting tables together (tables without a
 * policy are not counted). The evictor's thread runs every 10 ms; after each lookup,
 * update or gradient push that created keys, de_evict_after_lookup restores returning
 * keys from the tier (values, optimizer slots, Adam's per-key step count) and evicts
 * inline when over budget. Clocks: policy ttl with ttl_unit seconds and policy lru with
 * lru_clock seconds run on CLOCK_MONOTONIC seconds, so every row time of such a table
 * (its last_step) is that clock, whatever step the client passes; other tables use the
 * request's step (the evictor's "now" is the largest step seen). lfu_decay (a half-life
 * in steps) is rounded to whole steps (at least 1 when > 0).
 * Read-only (zero-copy) clients keep working while rows go: a row erased under them
 * reads as missing or retries, per the table's seqlock protocol.
 *
 * Sampling: per table, one de_sampler per (kind, power) made on first use (at most
 * MAX_SAMPLERS, the oldest replaced), snapshot kinds rebuilt every [learn]
 * sampler_rebuild_ms by their thread, and at once when a snapshot is empty while the
 * table is not. Each call passes its own unique flag and seed (de_sample_seeded).
 * Top-k: de_topk with [learn] topk_threads threads inside the worker's call.
 *
 * Persisted tables (the daemon has a data_dir) with eviction: a pass of the evictor holds
 * the table's plock for writing and logs the keys it erased (srv_learn_log.evicted, an
 * erase record) after their rows reached the tier; the worker holds plock for reading
 * from a write to its WAL append (srv_learn_write_begin / _end), so what it logs is the
 * row it wrote, and runs the inline eviction after it let go. The tier is then a named
 * file in data_dir (tier-<hash of the name>.dt, de_tier_open_file): each row is in the
 * arena + WAL or in the tier; recovery rebuilds the tier's index from the file, and
 * srv_learn_recovered drops every tier row the recovered table holds (the table's is
 * newer: a row leaves the tier only into the table, and a restore is logged, see
 * srv_learn_logs_creates; the tier's compaction first makes the WAL durable).
 *
 * Callers: the worker (worker.c) with a batch description (batch.h) for the data-plane
 * paths; the control plane (control.c) for the host and for attaching a new table.
 * Never: trust a byte of the data area (descriptors are checked by srv_check_sqe and
 * srv_check_learn_sqe; argument blocks, keys and queries are copied out before use);
 * create a key admission rejected; read anything of the worker but the batch; call the
 * persistence layer (the worker logs what these paths wrote).
 */
#define SRV_LOG_COMPONENT "learn" /* log.h: the component of this file's lines */
#include "learnops.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "util.h"
#include "validate.h"

#define MAX_SAMPLERS 4u
#define EVICT_NOW_MAX_ROWS (1u << 22) /* EVICT: rows one pass may erase (the control thread waits for it) */

/* libdelearn's enums have the wire's numbers: values pass through as they are */
#define SAME(a, b) _Static_assert((int)(a) == (int)(b), #a " == " #b)
SAME(DE_ADMIT_ALL, DE_WADMIT_ALL);
SAME(DE_ADMIT_COUNT, DE_WADMIT_COUNT);
SAME(DE_ADMIT_PROB, DE_WADMIT_PROBABILITY);
SAME(DE_EVICT_NONE, DE_WEVICT_NONE);
SAME(DE_EVICT_LRU, DE_WEVICT_LRU);
SAME(DE_EVICT_LFU, DE_WEVICT_LFU);
SAME(DE_EVICT_TTL, DE_WEVICT_TTL);
SAME(DE_EVICT_L2, DE_WEVICT_L2);
SAME(DE_CLOCK_STEP, DE_WUNIT_STEPS);
SAME(DE_CLOCK_TIME, DE_WUNIT_SECONDS);
SAME(DE_SAMPLER_UNIFORM, DE_WSAMPLER_UNIFORM);
SAME(DE_SAMPLER_LOG_UNIFORM, DE_WSAMPLER_LOG_UNIFORM);
SAME(DE_SAMPLER_UNIGRAM, DE_WSAMPLER_UNIGRAM);
SAME(DE_TOPK_DOT, 0);
SAME(DE_TOPK_COSINE, DE_WTOPK_COSINE);
#undef SAME

struct srv_learn_host {
	de_evict *ev;
	uint64_t host_budget;
	char tier_dir[256];
	char data_dir[sizeof ((struct srv_config *)0)->data_dir]; /* "" = no persistence */
	struct srv_learn_log log;     /* set by srv_learn_host_set_log, evictor stopped */
	bool recovering;              /* data_dir: no eviction until srv_learn_recovered */
	unsigned topk_threads;
	unsigned rebuild_ms;
	uint32_t max_batch;
	unsigned ntables;             /* registered with ev */
	struct srv_table_learn *tables; /* every attached table's state, freed with h */
};

struct sampler_slot {
	int kind;
	double power;
	de_sampler *s;
	uint64_t used;                /* for replacing the oldest */
};

struct srv_table_learn {
	struct srv_learn_host *h;
	struct srv_table *t;
	struct srv_table_learn *next; /* h->tables */
	de_admit *admit;              /* NULL: every key is admitted */
	bool reject_zeros;
	bool evict;                   /* registered with h->ev as evict_id */
	uint32_t evict_id;
	struct de_evict_table_config ecfg; /* what it registered with (a DROP that fails after
	                                 srv_learn_table_evict_leave registers it again) */
	bool time_clock;
	de_tier *tier;                /* owned */
	bool tier_durable;            /* tier is data_dir's tier file (a DROP removes it) */
	bool logged;                  /* persisted: eviction logged, pass lock, durable tier */
	char *admit_path;             /* persisted COUNT admission: its saved sketch (malloc'd) */
	pthread_mutex_t save_mu;      /* one save of the sketch at a time */
	pthread_rwlock_t plock;       /* logged: workers read across a write and its log */
	pthread_rwlock_t slock;       /* samplers: read to use, write to add/replace */
	struct sampler_slot samplers[MAX_SAMPLERS];
	uint64_t sampler_clock;
};

/* ---- host ------------------------------------------------------------------------------ */

int srv_learn_host_create(const struct srv_config *cfg, struct srv_learn_host **out)
{
	struct srv_learn_host *h = calloc(1, sizeof *h);
	if (!h)
		return -ENOMEM;
	h->host_budget = cfg->host_budget_bytes;
	snprintf(h->tier_dir, sizeof h->tier_dir, "%s", cfg->tier_dir);
	snprintf(h->data_dir, sizeof h->data_dir, "%s", cfg->data_dir);
	/* a pass during WAL replay would put replayed (old) rows into a durable tier */
	h->recovering = cfg->data_dir[0] != 0;
	h->topk_threads = cfg->topk_threads;
	if (!h->topk_threads) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		h->topk_threads = n < 1 ? 1 : n > (long)DE_TOPK_MAX_THREADS ? DE_TOPK_MAX_THREADS
									  : (unsigned)n;
	}
	h->rebuild_ms = cfg->sampler_rebuild_ms;
	h->max_batch = cfg->max_batch;
	struct de_evict_config ec = { .host_budget_bytes = cfg->host_budget_bytes,
				      .seed = 0x64796e656d62ull };
	int err = de_evict_create(&ec, &h->ev);
	if (err) {
		free(h);
		return err;
	}
	*out = h;
	return 0;
}

/* Samplers, admission filter, tier of t: after the evictor let go of the table. */
static void learn_free(struct srv_table *t)
{
	struct srv_table_learn *L = t->rt;
	if (!L)
		return;
	for (unsigned i = 0; i < MAX_SAMPLERS; i++)
		de_sampler_destroy(L->samplers[i].s); /* stops its rebuild thread */
	pthread_rwlock_destroy(&L->slock);
	de_admit_destroy(L->admit);
	de_tier_close(L->tier);
	pthread_rwlock_destroy(&L->plock);
	pthread_mutex_destroy(&L->save_mu);
	free(L->admit_path);
	free(L);
	t->rt = NULL;
}

void srv_learn_host_destroy(struct srv_learn_host *h)
{
	if (!h)
		return;
	de_evict_destroy(h->ev); /* stops the thread; flushes staged victims to the tiers */
	for (struct srv_table_learn *L = h->tables, *n; L; L = n) {
		n = L->next;
		learn_free(L->t); /* samplers first: they read the table */
	}
	free(h);
}

/* ---- tables ---------------------------------------------------------------------------- */

static int attach(struct srv_learn_host *h, struct srv_table *t, struct srv_table_learn *L,
		  char *msg, size_t msgcap);

int srv_learn_table_attach(struct srv_learn_host *h, struct srv_table *t, char *msg,
			   size_t msgcap)
{
	if (!h)
		return 0;
	struct srv_table_learn *L = calloc(1, sizeof *L);
	if (!L)
		return -ENOMEM;
	L->h = h;
	L->t = t;
	pthread_rwlock_init(&L->slock, NULL);
	pthread_rwlockattr_t ra; /* writer preference: passes are not starved by workers */
	pthread_rwlockattr_init(&ra);
	pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&L->plock, &ra);
	pthread_rwlockattr_destroy(&ra);
	pthread_mutex_init(&L->save_mu, NULL);
	t->rt = L;
	int err = attach(h, t, L, msg, msgcap);
	if (err) {
		learn_free(t); /* the evictor does not hold it: attach failed before that */
		return err;
	}
	L->next = h->tables;
	h->tables = L;
	return 0;
}

static int evict_join(struct srv_learn_host *h, struct srv_table *t, struct srv_table_learn *L,
		      char *msg, size_t msgcap);
static void name_path(char *buf, size_t cap, const struct srv_learn_host *h,
		      const struct srv_table *t, const char *prefix, const char *suffix);

void srv_learn_table_evict_leave(struct srv_table *t)
{
	struct srv_table_learn *L = t->rt;
	if (!L || !L->evict)
		return;
	/* waits for a pass over it (the thread's, or a host pass of another table's lookup):
	 * after this nothing of the evictor reads t, its tier or its persistence state */
	de_evict_remove_table(L->h->ev, L->evict_id);
	L->evict = false;
	L->h->ntables--;
}

int srv_learn_table_evict_rejoin(struct srv_table *t, char *msg, size_t msgcap)
{
	struct srv_table_learn *L = t->rt;
	if (!L || L->evict || L->ecfg.policy == DE_EVICT_NONE)
		return 0;
	return evict_join(L->h, t, L, msg, msgcap);
}

int srv_learn_evict_now(struct srv_table *t, uint64_t *evicted, char *msg, size_t msgcap)
{
	*evicted = 0;
	struct srv_table_learn *L = t->rt;
	if (!L || !L->evict) {
		snprintf(msg, msgcap, "table '%s' has no eviction (its eviction policy is none): "
			 "nothing to evict", t->name);
		return -EOPNOTSUPP;
	}
	if (L->h->recovering) {
		snprintf(msg, msgcap, "table '%s': the daemon is still recovering; eviction starts "
			 "after it", t->name);
		return -EAGAIN;
	}
	size_t n = 0;
	int err = de_evict_table_step(L->h->ev, L->evict_id, EVICT_NOW_MAX_ROWS, &n);
	*evicted = n;
	if (err)
		snprintf(msg, msgcap, "table '%s': the eviction pass failed after %zu rows: %s",
			 t->name, n, strerror(-err));
	return err;
}

void srv_learn_table_detach(struct srv_learn_host *h, struct srv_table *t)
{
	struct srv_table_learn *L = t->rt;
	if (!L)
		return;
	if (h)
		for (struct srv_table_learn **p = &h->tables; *p; p = &(*p)->next)
			if (*p == L) {
				*p = L->next;
				break;
			}
	if (L->admit_path)
		unlink(L->admit_path); /* the saved sketch: a table of that name starts afresh */
	char tier[sizeof L->h->data_dir + 40];
	bool durable = L->tier_durable;
	if (durable)
		name_path(tier, sizeof tier, L->h, t, "tier", ".dt");
	learn_free(t); /* closes the tier */
	if (durable && unlink(tier) && errno != ENOENT) /* its evicted rows: none comes back */
		srv_logf(SRV_LOG_WARN, SRV_KV(SRV_F_TABLE(t->name), SRV_F_PATH(tier),
					     SRV_F_ERRNO(errno)),
			 "dropped table '%s': cannot remove its disk tier %s: %s", t->name, tier,
			 strerror(errno));
}

/* data_dir/<prefix>-<FNV-1a 64 of the table's name, 16 hex><suffix> */
static void name_path(char *buf, size_t cap, const struct srv_learn_host *h,
		      const struct srv_table *t, const char *prefix, const char *suffix)
{
	uint64_t x = 0xcbf29ce484222325ull;
	for (const char *c = t->name; *c; c++)
		x = (x ^ (unsigned char)*c) * 0x100000001b3ull;
	snprintf(buf, cap, "%s/%s-%016llx%s", h->data_dir, prefix, (unsigned long long)x, suffix);
}

/* Evicted rows of a logged table: to persistence (an erase record), after the tier put. */
static void on_evict(void *ctx, const uint64_t *keys, size_t n)
{
	struct srv_table_learn *L = ctx;
	struct srv_learn_log *lg = &L->h->log;
	if (lg->evicted)
		lg->evicted(lg->ctx, L->t, keys, n);
}

/* Before a compaction of the tier drops the records of taken rows: their logging durable. */
static int before_compact(void *ctx)
{
	struct srv_table_learn *L = ctx;
	struct srv_learn_log *lg = &L->h->log;
	return lg->flush ? lg->flush(lg->ctx) : 0;
}

/* The durable tier of a persisted table: data_dir/tier-<FNV-1a 64 of the name, 16 hex>.dt */
static int tier_open_durable(struct srv_learn_host *h, struct srv_table *t,
			     struct srv_table_learn *L)
{
	char path[sizeof h->data_dir + 40];
	name_path(path, sizeof path, h, t, "tier", ".dt");
	int err = srv_mkdir_p(h->data_dir, 0700);
	if (!err)
		err = de_tier_open_file(path, de_table_row_floats(t->t), &L->tier);
	if (!err) {
		de_tier_set_compact_hook(L->tier, before_compact, L);
		L->tier_durable = true;
	}
	return err;
}

/* A persisted table's admission sketch: data_dir/admit-<hash>.das, loaded when there. */
static void admit_restore(struct srv_learn_host *h, struct srv_table *t,
			  struct srv_table_learn *L)
{
	char path[sizeof h->data_dir + 40];
	name_path(path, sizeof path, h, t, "admit", ".das");
	if (!(L->admit_path = strdup(path)))
		return; /* the sketch is then not persisted: an estimate lost, nothing more */
	int err = de_admit_load(L->admit, path);
	if (!err)
		srv_logf(SRV_LOG_INFO, SRV_KV(SRV_F_TABLE(t->name), SRV_F_PATH(path)),
			 "table '%s': admission sketch loaded from %s", t->name, path);
	else if (err != -ENOENT)
		srv_logf(SRV_LOG_WARN, SRV_KV(SRV_F_TABLE(t->name), SRV_F_PATH(path),
					     SRV_F_ERRNO(err)),
			 "table '%s': admission sketch %s not loaded (%s): it starts empty",
			 t->name, path,
			 err == -EEXIST ? "another sketch configuration" : strerror(-err));
}

void srv_learn_save_table(struct srv_table *t)
{
	struct srv_table_learn *L = t->rt;
	if (!L || !L->admit_path)
		return;
	pthread_mutex_lock(&L->save_mu);
	int err = de_admit_save(L->admit, L->admit_path);
	pthread_mutex_unlock(&L->save_mu);
	if (err)
		srv_logf(SRV_LOG_WARN, SRV_KV(SRV_F_TABLE(t->name), SRV_F_PATH(L->admit_path),
					     SRV_F_ERRNO(err)),
			 "table '%s': saving the admission sketch to %s: %s", t->name,
			 L->admit_path, strerror(-err));
}

void srv_learn_save_all(struct srv_learn_host *h)
{
	for (struct srv_table_learn *L = h ? h->tables : NULL; L; L = L->next)
		srv_learn_save_table(L->t);
}

/* The admission filter, tier and eviction of t into L (t->rt). */
static int attach(struct srv_learn_host *h, struct srv_table *t, struct srv_table_learn *L,
		  char *msg, size_t msgcap)
{
	const struct de_wire_admission *a = &t->learn.admission;
	const struct de_wire_eviction *e = &t->learn.eviction;
	int err = 0;
	if (a->mode != DE_WADMIT_ALL) {
		struct de_admit_config ac = {
			.mode = (enum de_admit_mode)a->mode,
			.threshold = a->min_count, .width = a->sketch_width, .depth = a->sketch_depth,
			.probability = a->probability, .seed = t->wcfg.seed,
		};
		err = de_admit_create(&ac, &L->admit);
		if (err) {
			snprintf(msg, msgcap, "table '%s': admission filter: %s", t->name, strerror(-err));
			return err;
		}
		L->reject_zeros = a->reject_value == DE_WREJECT_ZEROS;
		if (h->data_dir[0] && a->mode == DE_WADMIT_COUNT)
			admit_restore(h, t, L);
	}
	if (e->policy == DE_WEVICT_NONE)
		return 0;
	L->logged = h->data_dir[0] != 0;
	if ((e->flags & DE_WEVICT_DISK_TIER) && L->logged) {
		err = tier_open_durable(h, t, L);
		if (err) {
			snprintf(msg, msgcap, "table '%s': disk tier in %s: %s", t->name, h->data_dir,
				 strerror(-err));
			return err;
		}
	} else if (e->flags & DE_WEVICT_DISK_TIER) {
		if (!h->tier_dir[0]) {
			snprintf(msg, msgcap, "table '%s' asks for a disk tier, but the daemon has none "
				 "([memory] tier_dir is empty)", t->name);
			return -EINVAL;
		}
		err = srv_mkdir_p(h->tier_dir, 0700);
		if (!err)
			err = de_tier_open(h->tier_dir, de_table_row_floats(t->t), &L->tier);
		if (err) {
			snprintf(msg, msgcap, "table '%s': disk tier in %s: %s", t->name, h->tier_dir,
				 strerror(-err));
			return err;
		}
	}
	struct de_evict_table_config tc = { .budget_bytes = e->budget_bytes, .tier = L->tier,
					    .policy = (enum de_evict_policy)e->policy };
	if (L->logged) {
		tc.on_evict = on_evict;
		tc.evict_ctx = L;
		tc.pass_lock = &L->plock;
	}
	switch (e->policy) {
	case DE_WEVICT_LRU:
		tc.clock = (enum de_evict_clock)e->lru_clock;
		break;
	case DE_WEVICT_LFU:
		tc.half_life = e->lfu_decay > 0 ? (uint64_t)fmax(1.0, llround(e->lfu_decay)) : 0;
		break;
	case DE_WEVICT_TTL:
		tc.clock = (enum de_evict_clock)e->ttl_unit;
		tc.ttl = e->ttl;
		break;
	default:
		break;
	}
	L->time_clock = tc.clock == DE_CLOCK_TIME;
	L->ecfg = tc;
	return evict_join(h, t, L, msg, msgcap);
}

/* Register t (its L->ecfg) with the evictor. */
static int evict_join(struct srv_learn_host *h, struct srv_table *t, struct srv_table_learn *L,
		      char *msg, size_t msgcap)
{
	/* the library registers tables with its thread stopped: stop, add, start. Workers
	 * may be inside de_evict_after_lookup for other tables meanwhile (evict.c publishes
	 * the table count with release/acquire). */
	de_evict_stop(h->ev);
	int err = de_evict_add_table(h->ev, t->t, t->arena, &L->ecfg, &L->evict_id);
	int serr = (h->ntables || !err) && !h->recovering ? de_evict_start(h->ev) : 0;
	if (err) {
		snprintf(msg, msgcap, "table '%s': eviction: %s%s", t->name, strerror(-err),
			 err == -ENOSPC ? " (the daemon evicts at most 64 tables)" : "");
		return err;
	}
	h->ntables++;
	L->evict = true;
	if (serr) /* the budget still holds inline, after each lookup */
		srv_logf(SRV_LOG_WARN, SRV_KV(SRV_F_TABLE(t->name), SRV_F_ERRNO(serr)),
			 "eviction thread: %s", strerror(-serr));
	return 0;
}

/* The row time of a request on t: seconds for time-clock tables, else the step (and the
 * evictor's step clock moves to it). */
static uint64_t row_time(struct srv_table *t, uint64_t step)
{
	struct srv_table_learn *L = t->rt;
	if (!L || !L->evict)
		return step;
	if (L->time_clock)
		return de_evict_now(L->h->ev, L->evict_id);
	de_evict_set_step(L->h->ev, step);
	return step;
}

static void after_create(struct srv_table *t, const uint64_t *keys, uint32_t n,
			 const uint8_t *status, float *vals, uint64_t step)
{
	struct srv_table_learn *L = t->rt;
	if (!L || !L->evict)
		return;
	int err = de_evict_after_lookup(L->h->ev, L->evict_id, keys, n, status, vals, step, NULL);
	static struct srv_log_limit lim; /* per request: at most a line a second */
	uint64_t quiet;
	if (err && srv_log_limit_due(&lim, &quiet))
		srv_logf(SRV_LOG_WARN, SRV_KV(SRV_F_TABLE(t->name), SRV_F_ERRNO(err),
					     SRV_F_UINT("suppressed", quiet)),
			 "table '%s': eviction after a lookup: %s", t->name, strerror(-err));
}

static bool tier_has(struct srv_table_learn *L, uint64_t key)
{
	return L->tier && de_tier_contains(L->tier, key);
}

/* ---- the worker's paths ------------------------------------------------------------------ */

int srv_learn_lookup_create(struct srv_batch *b)
{
	struct srv_table *t = b->t;
	uint32_t n = b->n;
	float *vals = b->vals;
	uint64_t step = b->step;
	struct srv_table_learn *L = t->rt;
	step = row_time(t, step);
	if (!L || !L->admit) {
		int err = de_table_find_or_insert(t->t, b->keys, n, vals, b->status, step);
		if (!err)
			after_create(t, b->keys, n, b->status, vals, step);
		return err;
	}
	uint32_t dim = t->wcfg.dim;
	int err = de_table_find(t->t, b->keys, n, vals, b->status);
	if (err)
		return err;
	/* sightings: the missing keys, in batch order */
	uint32_t nmiss = 0;
	for (uint32_t i = 0; i < n; i++)
		nmiss += b->status[i] == DE_MISSING;
	uint64_t *skeys = malloc((size_t)n * 8);
	uint64_t *mk = malloc((size_t)(nmiss ? nmiss : 1) * 8);
	uint32_t *pos = malloc((size_t)n * 4);
	uint8_t *ad = malloc((size_t)(nmiss ? nmiss : 1));
	uint8_t *st = malloc(n);
	float *sv = malloc((size_t)n * dim * 4);
	if (!skeys || !mk || !pos || !ad || !st || !sv) {
		err = -ENOMEM;
		goto out;
	}
	uint32_t m = 0;
	for (uint32_t i = 0; i < n; i++)
		if (b->status[i] == DE_MISSING && !tier_has(L, b->keys[i]))
			mk[m++] = b->keys[i];
	if (m && (err = de_admit_check(L->admit, mk, m, ad)))
		goto out;
	uint32_t k = 0, j = 0;
	for (uint32_t i = 0; i < n; i++) {
		bool keep = true;
		if (b->status[i] == DE_MISSING && !tier_has(L, b->keys[i]))
			keep = ad[j++] != 0;
		if (keep) {
			skeys[k] = b->keys[i];
			pos[k++] = i;
		} else {
			/* not admitted: not stored; reads as its initializer or zeros */
			if (L->reject_zeros)
				memset(vals + (size_t)i * dim, 0, 4ull * dim);
			else
				de_table_init_row(t->t, b->keys[i], vals + (size_t)i * dim);
			b->status[i] = DE_MISSING;
		}
	}
	/* string tables: a new key's string is kept before its row exists, so a row never
	 * lacks its string (tables.c); another string of the fingerprint is -EEXIST */
	for (uint32_t q = 0; b->sbuf && q < k; q++) {
		uint32_t i = pos[q];
		if (b->status[i] == DE_MISSING && b->keys[i] &&
		    srv_table_keep_string(t, b->keys[i], b->sbuf + b->soff[i], b->slen[i]) ==
			    -EEXIST) {
			b->bad = i;
			err = -EEXIST;
			goto out;
		}
	}
	if (k) {
		err = de_table_find_or_insert(t->t, skeys, k, sv, st, step);
		if (err)
			goto out;
		after_create(t, skeys, k, st, sv, step);
		for (uint32_t q = 0; q < k; q++) {
			memcpy(vals + (size_t)pos[q] * dim, sv + (size_t)q * dim, 4ull * dim);
			b->status[pos[q]] = st[q];
		}
	}
out:
	free(skeys);
	free(mk);
	free(pos);
	free(ad);
	free(st);
	free(sv);
	return err;
}

static void noop_row(void *ctx, size_t i, float *row, struct de_row_meta *meta)
{
	(void)ctx, (void)i, (void)row, (void)meta;
}

int srv_learn_update(struct srv_batch *b)
{
	struct srv_table *t = b->t;
	uint32_t n = b->n;
	const float *vals = b->vals;
	uint64_t step = b->step;
	struct srv_table_learn *L = t->rt;
	step = row_time(t, step);
	uint32_t dim = t->wcfg.dim;
	if (!L || !L->admit) {
		int err = de_table_assign(t->t, b->keys, n, vals, b->status, step);
		if (err || !L || !L->evict)
			return err;
		/* an assigned value wins over an evicted row the tier holds: drop the record */
		if (L->tier) {
			float *row = malloc(4ull * de_table_row_floats(t->t));
			if (!row)
				return -ENOMEM;
			for (uint32_t i = 0; i < n; i++) {
				struct de_row_meta m;
				if (b->status[i] == DE_CREATED)
					de_tier_take(L->tier, b->keys[i], row, &m);
			}
			free(row);
		}
		after_create(t, b->keys, n, b->status, NULL, step);
		return 0;
	}
	/* admission: only keys the table holds (or the tier) are written */
	int err = de_table_apply(t->t, b->keys, n, false, noop_row, NULL, b->status, DE_STEP_KEEP);
	if (err)
		return err;
	uint64_t *sk = malloc((size_t)n * 8);
	float *sv = malloc((size_t)n * dim * 4);
	uint32_t *pos = malloc((size_t)n * 4);
	uint8_t *st = malloc(n);
	if (!sk || !sv || !pos || !st) {
		err = -ENOMEM;
		goto out;
	}
	uint32_t k = 0, dropped = 0;
	for (uint32_t i = 0; i < n; i++) {
		if (b->keys[i] && b->status[i] == DE_MISSING && !tier_has(L, b->keys[i])) {
			dropped++;
			continue;
		}
		sk[k] = b->keys[i];
		memcpy(sv + (size_t)k * dim, vals + (size_t)i * dim, 4ull * dim);
		pos[k++] = i;
	}
	if (dropped)
		de_admit_drop_grads(L->admit, dropped);
	if (k) {
		/* tier-held keys: restore (slots, counts) first, then the assignment wins */
		err = de_table_apply(t->t, sk, k, true, noop_row, NULL, st, step);
		if (!err)
			after_create(t, sk, k, st, NULL, step);
		if (!err)
			err = de_table_assign(t->t, sk, k, sv, NULL, step);
		for (uint32_t q = 0; !err && q < k; q++)
			b->status[pos[q]] = st[q];
	}
out:
	free(sk);
	free(sv);
	free(pos);
	free(st);
	return err;
}

int srv_learn_grads_prepare(struct srv_batch *b, uint32_t *created)
{
	struct srv_table *t = b->t;
	struct srv_table_learn *L = t->rt;
	uint32_t n = b->n, dim = t->wcfg.dim;
	uint64_t *step = &b->step;
	*step = row_time(t, *step);
	*created = 0;
	bool admit = L && L->admit;
	int err = de_table_apply(t->t, b->keys, n, !admit, noop_row, NULL, b->status,
				 admit ? DE_STEP_KEEP : *step);
	if (err)
		return err;
	if (admit) {
		/* missing keys the tier holds come back; the others' gradients are dropped */
		uint64_t *tk = malloc((size_t)n * 8);
		uint32_t *tp = malloc((size_t)n * 4);
		uint8_t *ts = malloc(n);
		if (!tk || !tp || !ts) {
			free(tk), free(tp), free(ts);
			return -ENOMEM;
		}
		uint32_t m = 0;
		for (uint32_t i = 0; i < n; i++)
			if (b->keys[i] && b->status[i] == DE_MISSING && tier_has(L, b->keys[i])) {
				tk[m] = b->keys[i];
				tp[m++] = i;
			}
		if (m) {
			err = de_table_apply(t->t, tk, m, true, noop_row, NULL, ts, *step);
			for (uint32_t q = 0; !err && q < m; q++)
				b->status[tp[q]] = ts[q];
		}
		free(tk), free(tp), free(ts);
		if (err)
			return err;
	}
	for (uint32_t i = 0; i < n; i++)
		*created += b->status[i] == DE_CREATED;
	if (*created)
		srv_batch_keep_strings(b); /* string tables */
	if (*created)
		after_create(t, b->keys, n, b->status, NULL, *step);
	if (admit) {
		uint32_t k = 0, dropped = 0;
		for (uint32_t i = 0; i < n; i++) {
			if (b->keys[i] && b->status[i] == DE_MISSING) {
				dropped++;
				continue;
			}
			if (k != i) {
				b->keys[k] = b->keys[i];
				memmove(b->vals + (size_t)k * dim, b->vals + (size_t)i * dim, 4ull * dim);
			}
			k++;
		}
		if (dropped)
			de_admit_drop_grads(L->admit, dropped);
		b->n = k;
	}
	return 0;
}

/* ---- logged eviction ---------------------------------------------------------------------- */

int srv_learn_host_set_log(struct srv_learn_host *h, const struct srv_learn_log *lg)
{
	if (!h)
		return 0;
	de_evict_stop(h->ev);
	h->log = lg ? *lg : (struct srv_learn_log){ 0 };
	return h->ntables && lg ? de_evict_start(h->ev) : 0;
}

bool srv_learn_write_begin(struct srv_table *t)
{
	struct srv_table_learn *L = t->rt;
	if (!L || !L->logged || !L->evict)
		return false;
	pthread_rwlock_rdlock(&L->plock);
	return true;
}

void srv_learn_write_end(struct srv_table *t, bool held)
{
	if (!held)
		return;
	struct srv_table_learn *L = t->rt;
	pthread_rwlock_unlock(&L->plock);
	int err = de_evict_inline(L->h->ev, L->evict_id); /* the eviction after_create left */
	static struct srv_log_limit lim; /* per request: at most a line a second */
	uint64_t quiet;
	if (err && srv_log_limit_due(&lim, &quiet))
		srv_logf(SRV_LOG_WARN, SRV_KV(SRV_F_TABLE(t->name), SRV_F_ERRNO(err),
					     SRV_F_UINT("suppressed", quiet)),
			 "table '%s': eviction after a write: %s", t->name, strerror(-err));
}

int srv_learn_erase(struct srv_table *t, const uint64_t *keys, uint32_t n)
{
	struct srv_table_learn *L = t->rt;
	if (!L || !L->logged || !L->tier)
		return 0;
	return de_tier_erase(L->tier, keys, n);
}

bool srv_learn_logs_creates(const struct srv_table *t)
{
	const struct srv_table_learn *L = t->rt;
	return L && L->logged && L->tier;
}

struct in_table_ctx {
	de_table *t;
	float v[DE_MAX_DIM];
};

static bool in_table(void *ctx, uint64_t key)
{
	struct in_table_ctx *c = ctx;
	uint8_t st = DE_MISSING;
	return de_table_find(c->t, &key, 1, c->v, &st) == 0 && st == DE_FOUND;
}

void srv_learn_recovered(struct srv_learn_host *h)
{
	if (!h)
		return;
	de_evict_stop(h->ev); /* stopped since the first attach: recovery is done now */
	h->recovering = false;
	for (struct srv_table_learn *L = h->tables; L; L = L->next) {
		if (!L->tier || !L->logged)
			continue;
		struct in_table_ctx c = { .t = L->t->t };
		size_t n = de_tier_drop_if(L->tier, in_table, &c);
		if (n)
			srv_logf(SRV_LOG_INFO, SRV_KV(SRV_F_TABLE(L->t->name), SRV_F_UINT("rows", n)),
				 "table '%s': %zu rows of the disk tier are older than the "
				 "recovered table's and were dropped", L->t->name, n);
	}
	if (h->ntables)
		de_evict_start(h->ev);
}

/* ---- STATS ------------------------------------------------------------------------------ */

void srv_learn_stats(struct srv_table *t, struct de_wire_stats *ws)
{
	struct srv_table_learn *L = t->rt;
	if (!L)
		return;
	struct de_admit_stats as;
	if (L->admit && !de_admit_stats(L->admit, &as)) {
		ws->admitted = as.admitted;
		ws->filtered = as.filtered;
		ws->grads_dropped = as.dropped_grads;
	}
	struct de_evict_stats es;
	if (L->evict && !de_evict_stats(L->h->ev, L->evict_id, &es)) {
		ws->evicted = es.evicted;
		ws->evicted_to_tier = es.evicted_to_tier;
		ws->restored_from_tier = es.restored_from_tier;
		ws->returned_fresh = es.returned_fresh;
		ws->resident_bytes = es.resident_bytes;
		ws->budget_bytes = es.budget_bytes;
	}
}

/* ---- SAMPLE ----------------------------------------------------------------------------- */

/* The table's sampler for (kind, power), made on first use. Returns it with slock held
 * for reading (the caller unlocks), or NULL with *err. */
static de_sampler *sampler_get(struct srv_table *t, int kind, double power, int *err)
{
	struct srv_table_learn *L = t->rt;
	pthread_rwlock_rdlock(&L->slock);
	for (unsigned i = 0; i < MAX_SAMPLERS; i++) {
		struct sampler_slot *s = &L->samplers[i];
		if (s->s && s->kind == kind && s->power == power) {
			__atomic_store_n(&s->used, __atomic_add_fetch(&L->sampler_clock, 1,
								     __ATOMIC_RELAXED), __ATOMIC_RELAXED);
			return s->s;
		}
	}
	pthread_rwlock_unlock(&L->slock);
	pthread_rwlock_wrlock(&L->slock);
	struct sampler_slot *victim = NULL;
	for (unsigned i = 0; i < MAX_SAMPLERS; i++) {
		struct sampler_slot *s = &L->samplers[i];
		if (s->s && s->kind == kind && s->power == power) { /* made meanwhile */
			victim = s;
			break;
		}
		if (!victim || !s->s || (victim->s && s->used < victim->used))
			victim = s;
	}
	if (!(victim->s && victim->kind == kind && victim->power == power)) {
		de_sampler_destroy(victim->s); /* nobody uses it: we hold the write lock */
		victim->s = NULL;
		struct de_sampler_config sc = { .kind = (enum de_sampler_kind)kind,
						.power = kind == DE_SAMPLER_UNIGRAM ? power : 0,
						.seed = t->wcfg.seed,
						.rebuild_ms = kind == DE_SAMPLER_UNIFORM ? 0
											 : L->h->rebuild_ms };
		*err = de_sampler_create(t->t, &sc, &victim->s);
		if (*err) {
			pthread_rwlock_unlock(&L->slock);
			return NULL;
		}
		victim->kind = kind;
		victim->power = power;
	}
	victim->used = ++L->sampler_clock;
	pthread_rwlock_unlock(&L->slock);
	return sampler_get(t, kind, power, err); /* again, for reading (found this time) */
}

static uint64_t live_keys(struct srv_table *t)
{
	struct de_table_stats s;
	return de_table_stats(t->t, &s) ? 0 : s.keys;
}

static void do_sample(struct srv_batch *b, struct srv_table *t, char *data,
		      const struct de_sqe *e, struct de_cqe *q)
{
	struct de_wire_sample_args a;
	memcpy(&a, data + e->status_off, sizeof a); /* checked on the copy */
	q->res = srv_check_sample_args(&a, e, b->cap);
	if (q->res)
		return;
	uint32_t np = e->count, ns = a.num_sampled;
	if (e->flags & DE_SAMPLE_STR) {
		char *region = malloc(e->keys_len ? e->keys_len : 1);
		if (!region) {
			q->res = -ENOMEM;
			return;
		}
		memcpy(region, data + e->keys_off, e->keys_len);
		q->res = srv_check_string_keys(region, e->keys_len, np, b->slen, b->soff);
		for (uint32_t i = 0; !q->res && i < np; i++)
			b->keys[i] = de_key_from_string(t->wcfg.seed, region + b->soff[i], b->slen[i]);
		free(region);
		if (q->res)
			return;
	} else {
		memcpy(b->keys, data + e->keys_off, 8ull * np);
	}
	if (!t->rt) { /* a registry without srv_learn_host (unit tests) */
		q->res = -EOPNOTSUPP;
		return;
	}
	int err = 0;
	de_sampler *s = sampler_get(t, (int)a.kind, a.power, &err);
	if (!s) {
		q->res = err;
		return;
	}
	size_t bytes = (size_t)ns * 13 + (size_t)np * 4 + ((e->flags & DE_SAMPLE_WEIGHT) ? 8 : 0);
	char *out = malloc(bytes);
	if (!out) {
		pthread_rwlock_unlock(&t->rt->slock);
		q->res = -ENOMEM;
		return;
	}
	uint64_t *keys = (uint64_t *)(void *)out;
	float *sexp = (float *)(void *)(out + 8ull * ns);
	float *texp = sexp + ns;
	uint8_t *acc = (uint8_t *)(texp + np);
	struct de_sample_info info = { 0 };
	err = de_sample_seeded(s, (int)a.unique, a.seed, ns, b->keys, np, keys, sexp, acc, texp,
			       &info);
	if (err == -ENOENT && a.kind != DE_SAMPLER_UNIFORM && live_keys(t)) {
		/* an empty snapshot of a table that has keys now: rebuild at once */
		err = de_sampler_rebuild(s);
		if (!err)
			err = de_sample_seeded(s, (int)a.unique, a.seed, ns, b->keys, np, keys, sexp,
					       acc, texp, &info);
	}
	pthread_rwlock_unlock(&t->rt->slock);
	if (!err && (e->flags & DE_SAMPLE_WEIGHT))
		memcpy(out + bytes - 8, &info.weight, 8);
	if (!err) {
		memcpy(data + e->vals_off, out, bytes);
		q->count = ns;
		q->aux0 = info.num_tries;
		q->aux1 = info.population;
	}
	free(out);
	q->res = err;
}

/* ---- TOPK, KEY_STRINGS ------------------------------------------------------------------ */

static void do_topk(struct srv_table *t, char *data, const struct de_sqe *e, struct de_cqe *q)
{
	size_t nq = e->count, k = e->arg, nf = nq * t->wcfg.dim;
	float *qbuf = malloc(nf * 4);
	uint64_t *keys = malloc(nq * k * 8);
	float *scores = malloc(nq * k * 4);
	if (!qbuf || !keys || !scores) {
		q->res = -ENOMEM;
		goto out;
	}
	memcpy(qbuf, data + e->keys_off, nf * 4); /* the library checks them finite */
	size_t found = 0;
	unsigned nth = t->rt ? t->rt->h->topk_threads : 1;
	q->res = de_topk(t->t, qbuf, nq, k, (enum de_topk_metric)(e->flags & DE_WTOPK_COSINE),
			 nth, keys, scores, &found);
	if (!q->res) {
		memcpy(data + e->vals_off, keys, nq * k * 8);
		memcpy(data + e->vals_off + nq * k * 8, scores, nq * k * 4);
		q->count = (uint32_t)found;
	}
out:
	free(qbuf);
	free(keys);
	free(scores);
}

static void do_key_strings(struct srv_batch *b, struct srv_table *t, char *data,
			   const struct de_sqe *e, struct de_cqe *q)
{
	uint32_t n = e->count;
	memcpy(b->keys, data + e->keys_off, 8ull * n);
	char *lens = data + e->vals_off;
	char *p = lens + 4ull * n;
	uint64_t room = e->vals_len - 4ull * n, need = 0;
	uint32_t known = 0;
	bool full = false;
	for (uint32_t i = 0; i < n; i++) {
		uint32_t len = UINT32_MAX;
		int err = srv_table_key_string(t, b->keys[i], p, full ? 0 : room, &len);
		if (err == -ENOSPC) {
			full = true;
		} else if (err) {
			static struct srv_log_limit lim; /* per key: at most a line a second */
			uint64_t quiet;
			if (err != -ENOENT && srv_log_limit_due(&lim, &quiet))
				srv_logf(SRV_LOG_WARN, SRV_KV(SRV_F_TABLE(t->name), SRV_F_ERRNO(err),
							     SRV_F_UINT("suppressed", quiet)),
					 "table '%s': key string: %s", t->name, strerror(-err));
			len = UINT32_MAX;
		} else if (full && len) {
			/* cap 0 took a non-empty string: impossible; keep the rule anyway */
			full = true;
		} else {
			p += len;
			room -= len;
		}
		if (len != UINT32_MAX) {
			known++;
			need += len;
		}
		memcpy(lens + 4ull * i, &len, 4);
	}
	q->count = known;
	q->aux0 = need;
	q->res = full ? -ENOSPC : 0;
}

void srv_learn_execute(struct srv_batch *b, char *data, const struct de_sqe *e,
		       struct de_cqe *q)
{
	switch (e->op) {
	case DE_OP_SAMPLE:
		do_sample(b, b->t, data, e, q);
		break;
	case DE_OP_TOPK:
		do_topk(b->t, data, e, q);
		break;
	default:
		do_key_strings(b, b->t, data, e, q);
		break;
	}
}
