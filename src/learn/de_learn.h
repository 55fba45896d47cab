/*
 * de_learn.h — the public interface of libdelearn: optimizers that step rows of a
 * de_table in place, with their state in the row's slots.
 *
 * de_optim_update(t, cfg, keys, n, grads, ...) sums the gradients of duplicate keys in
 * the batch, then applies one optimizer step to each distinct key's row under that row's
 * write protection (de_table_apply). Rows whose key is not in the batch are not touched
 * at all: no weight decay, no momentum, no moment decay, no step count. This is the
 * "sparse" (lazy) semantics of an embedding table, and it is what torch.optim computes
 * for one parameter per key stepped only when that key has a gradient; it is NOT what
 * torch.optim computes on a dense nn.Embedding weight (see Caveats).
 *
 * Formulas (per element; p = value, g = summed gradient, t = the key's step count after
 * this step, scalars like lr / bias corrections are computed in double and applied in
 * float, as torch 1.13's single-tensor CPU path does):
 *   SGD:       g += wd*p;  p -= lr*g
 *   MOMENTUM:  g += wd*p;  b = (t == 1) ? g : momentum*b + (1-dampening)*g;  p -= lr*b
 *   NESTEROV:  same b;  p -= lr*(g + momentum*b)            (torch: nesterov=True)
 *   ADAGRAD:   g += wd*p;  s = (t == 1 ? init_acc : s) + g^2;  p -= lr*g/(sqrt(s)+eps)
 *              (torch's lr_decay is not supported: it is 0)
 *   ADAM:      g += wd*p;  m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2  (m = v = 0 at t=1)
 *              p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)   (amsgrad unsupported)
 *   ADAMW:     p *= 1 - lr*wd;  then ADAM without the wd term
 *   RMSPROP:   g += wd*p;  s = alpha*s + (1-alpha)*g^2  (s = 0 at t=1);  p -= lr*g/(sqrt(s)+eps)
 *              (torch's momentum and centered variants are not supported)
 *   FTRL:      FTRL-Proximal (McMahan et al. 2013), as tf.keras.optimizers.Ftrl:
 *              n' = n + g^2  (n = init_acc at t=1, z = 0 at t=1)
 *              z += g - (n'^-lr_power - n^-lr_power)/lr * p;   n = n'
 *              p = |z| <= l1 ? 0 : (sign(z)*l1 - z) / (n^-lr_power/lr + ftrl_beta/lr + 2*l2)
 *              l2 follows TensorFlow's convention (penalty l2*|w|^2, so the paper's
 *              lambda2 is 2*l2); ftrl_beta is the paper's beta (Keras' `beta`). The row's
 *              value before the key's first step is used as the starting weight (TF does
 *              the same with a variable's initial value; the paper starts from 0).
 *
 * Slots (each dim floats, after the values): MOMENTUM/NESTEROV [b], ADAGRAD [s],
 * ADAM/ADAMW [m, v], RMSPROP [s], FTRL [n, z]. The optimizer initializes its slots itself
 * on a key's first step, so the table's slot_init does not matter.
 *
 * Per-key step count: meta->aux of each row counts the steps this module applied to it
 * (every optimizer keeps it; Adam/AdamW use it for bias correction, the others to know
 * when to initialize their slots). A row created by a lookup or assign has aux 0.
 *
 * Caveats (what this API does not promise):
 *   - Sparse semantics differ from torch.optim on a dense weight. A dense optimizer steps
 *     every row every step: rows with zero gradient still get weight decay (all kinds),
 *     momentum keeps moving them (MOMENTUM/NESTEROV), Adam/AdamW/RMSProp decay their
 *     moments and Adam/AdamW move them by m/(sqrt(v)+eps), and Adam's bias correction
 *     uses one global step count. Here untouched rows stay bit-identical and each key has
 *     its own step count. They coincide for SGD without weight decay and for Adagrad
 *     without weight decay. torch.optim.SparseAdam is also different: it keeps one step
 *     count for the whole weight.
 *   - Missing keys are created with the table's initializer and then stepped (the
 *     gradient was computed on the initializer's value, which a lookup returned).
 *   - The learning rate (and every other hyperparameter) is read from cfg at each call;
 *     a schedule changes it by passing another cfg. Changing the optimizer kind of a
 *     table that already has state is not detected.
 *   - A batch with a non-finite gradient is rejected whole (-EINVAL) before any row is
 *     touched. Other errors from the table (-ENOMEM creating rows, -EROFS) may come after
 *     some rows were stepped: *applied says how many distinct keys were.
 *   - Not atomic across rows: a concurrent reader may see some rows of a batch stepped and
 *     others not; each row is stepped atomically with respect to readers.
 */
#ifndef DE_LEARN_H
#define DE_LEARN_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "de_shm.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The wire's numbers (src/proto.h, enum de_wire_optim_kind): the daemon passes a kind
 * through as it is. NONE is "no optimizer": de_optim_check rejects it, de_optim_name
 * says "none", de_optim_slots 0. */
enum de_optimizer {
	DE_OPT_NONE = 0,
	DE_OPT_SGD = 1,
	DE_OPT_MOMENTUM = 2,
	DE_OPT_NESTEROV = 3,
	DE_OPT_ADAGRAD = 4,
	DE_OPT_ADAM = 5,
	DE_OPT_ADAMW = 6,
	DE_OPT_FTRL = 7,
	DE_OPT_RMSPROP = 8,
};

/* Hyperparameters. Names follow torch.optim (FTRL: tf.keras.optimizers.Ftrl). Fields an
 * optimizer does not use are ignored. de_optim_defaults fills the libraries' defaults. */
struct de_optim_config {
	enum de_optimizer kind;
	double lr;           /* all; FTRL needs lr > 0 */
	double weight_decay; /* SGD family, ADAGRAD, ADAM, RMSPROP: L2 (wd*p added to g);
	                        ADAMW: decoupled (p *= 1 - lr*wd); FTRL: must be 0 */
	double momentum;     /* MOMENTUM, NESTEROV (> 0); RMSPROP: must be 0 */
	double dampening;    /* MOMENTUM; NESTEROV: must be 0 (as torch) */
	double beta1, beta2; /* ADAM, ADAMW: in [0, 1) */
	double eps;          /* ADAGRAD, ADAM, ADAMW, RMSPROP */
	double initial_accumulator_value; /* ADAGRAD (torch default 0), FTRL (TF default 0.1) */
	double alpha;        /* RMSPROP smoothing constant, in [0, 1] */
	int centered;        /* RMSPROP: must be 0 */
	double l1, l2;       /* FTRL, TensorFlow's convention (see the top of this file) */
	double lr_power;     /* FTRL: <= 0, usually -0.5 */
	double ftrl_beta;    /* FTRL: the paper's beta, >= 0 (Keras default 0) */
	int hogwild;         /* 0 (default): each row is stepped under its write protection
	                        (de_table_apply); 1: lock-free Hogwild steps
	                        (de_table_apply_hogwild: concurrent steps of one row can be
	                        lost, readers can see torn rows). See BENCHMARKS.md, "learn". */
};

/* torch.optim's defaults for kind (SGD has none for lr: 0.01 here; FTRL: Keras' lr 0.001,
 * lr_power -0.5, initial_accumulator_value 0.1, l1 = l2 = beta = 0); NONE and unknown
 * kinds: all 0. The table is optim_defaults.h, which libdynemb uses too. */
void de_optim_defaults(enum de_optimizer kind, struct de_optim_config *out /* out */);

/* 0, or -EINVAL with the reason written to why (may be NULL, cap bytes). */
int de_optim_check(const struct de_optim_config *cfg, char *why, size_t cap);

/* Slots (of dim floats each) a table needs for kind; UINT32_MAX for an unknown kind. */
uint32_t de_optim_slots(enum de_optimizer kind);

const char *de_optim_name(enum de_optimizer kind); /* "adam", ...; "?" when unknown */

/*
 * One optimizer step: grads holds n * dim floats, row i for keys[i]. Duplicate keys are
 * summed (in batch order) and stepped once; key 0 is ignored. Missing keys are created
 * (table initializer) and stepped. step is stored as the rows' last_step.
 * applied (may be NULL): distinct keys stepped, also set on error.
 * Errors: -EINVAL for NULL arguments, a bad cfg, a table with fewer slots than the
 * optimizer needs, or a non-finite gradient; -ENOMEM; whatever de_table_apply returns.
 */
int de_optim_update(de_table *t, const struct de_optim_config *cfg, const uint64_t *keys,
		    size_t n, const float *grads, uint64_t step, size_t *applied /* out */);

/* ------------------------------------------------------------------------- */
/* Admission and eviction (admit.c, evict.c, tier.c)                          */
/* ------------------------------------------------------------------------- */

/*
 * Admission (admit.c). A key earns a row only after it was seen `threshold` times
 * (count-min sketch, DE_ADMIT_COUNT) or, per sighting, with probability p
 * (DE_ADMIT_PROB). The daemon calls de_admit_check on the keys a lookup did not find;
 * for keys not admitted it returns de_table_init_row (or zeros) without storing, and
 * drops their gradients (counting them with de_admit_drop_grads).
 *
 * Sketch: depth rows of width u16 counters, indexes from one seeded xxh3-64 of the key
 * (double hashing h1 + i*h2). Conservative update: a sighting raises only the counters
 * equal to the key's current minimum, to minimum + 1 (saturating at 65535). The estimate
 * is the minimum. Single-threaded it never under-counts, and with total sightings S it
 * over-counts by more than e*S/width with probability at most e^-depth (Cormode and
 * Muthukrishnan). Concurrent sightings of one key may merge (relaxed atomics, no CAS
 * loop): an under-count of at most the number of racing threads. Aging (TinyLFU
 * reset): after aging_period sightings every counter is halved (by the thread whose
 * sighting crossed the period; O(width * depth) once per period).
 * PROB: the draw of a sighting is xxh3(key, seed ^ n) for a global sighting counter n,
 * so a single-threaded replay admits the same keys.
 * Key 0 is always admitted and not counted.
 */
typedef struct de_admit de_admit;

/* The wire's numbers (src/proto.h, enum de_wire_admission_mode). */
enum de_admit_mode {
	DE_ADMIT_ALL = 0,   /* every key is admitted (statistics only) */
	DE_ADMIT_COUNT = 1, /* count-min sketch, threshold sightings */
	DE_ADMIT_PROB = 2,  /* probability per sighting */
};

struct de_admit_config {
	enum de_admit_mode mode;
	uint32_t threshold;    /* COUNT: 1..65535 sightings */
	uint32_t width;        /* COUNT: counters per row, a power of two in 64..2^28; 0 = 2^20 */
	uint32_t depth;        /* COUNT: rows, 1..8; 0 = 4 */
	uint64_t aging_period; /* COUNT: halve all counters every this many sightings; 0 = never */
	double probability;    /* PROB: in (0, 1] */
	uint64_t seed;
};

struct de_admit_stats {
	uint64_t admitted;      /* sightings that returned admit = 1 (key 0 excluded) */
	uint64_t filtered;      /* sightings that returned admit = 0 */
	uint64_t dropped_grads; /* gradients reported dropped with de_admit_drop_grads */
	uint64_t agings;        /* halvings done */
};

/* -EINVAL for a bad config, -ENOMEM. out: the admission filter (free with destroy). */
int de_admit_create(const struct de_admit_config *cfg, de_admit **out);
/* The bytes of process memory de_admit_create takes for a COUNT sketch of width x depth
 * counters (0 = the defaults): what a memory budget must count. 0 for a bad size. */
uint64_t de_admit_sketch_bytes(uint32_t width, uint32_t depth);
void de_admit_destroy(de_admit *a); /* NULL is fine */
/* Record one sighting per key and say whether it is admitted (admit_out[i] = 0 or 1).
 * Thread-safe. -EINVAL for NULL arguments (n == 0 is fine). */
int de_admit_check(de_admit *a, const uint64_t *keys, size_t n, uint8_t *admit_out /* out */);
/* COUNT: the sketch's current estimate of key's sightings (0 for other modes). */
uint32_t de_admit_estimate(const de_admit *a, uint64_t key);
/* Count n gradients dropped because their keys were not admitted. Thread-safe. */
void de_admit_drop_grads(de_admit *a, uint64_t n);
int de_admit_stats(const de_admit *a, struct de_admit_stats *out /* out */);
/* COUNT mode: write the sketch and the statistics to path atomically (path.tmp, fsync,
 * rename, directory fsync; 72 + 2 * width * depth + 8 bytes; admit.c has the layout), or
 * read them back into a sketch of the same width, depth, threshold and seed (before it
 * is used). Other modes: 0, nothing written or read. load: -ENOENT, -EBADMSG (damaged),
 * -EEXIST (another sketch's file), and the sketch is unchanged. */
int de_admit_save(const de_admit *a, const char *path);
int de_admit_load(de_admit *a, const char *path);

/*
 * Disk tier (tier.c): an unlinked file (O_TMPFILE, or created and unlinked) in a
 * directory, written and read with io_uring, holding evicted rows with their slots and
 * metadata; an in-memory index key -> offset. It is a cache: nothing survives close.
 * Record (little-endian, 48 + 4 * row_floats bytes):
 *   0 u32 magic "DETR", 4 u32 row_floats, 8 u64 key, 16 struct de_row_meta (32 bytes),
 *   48 f32[row_floats] values then slots.
 * A read record is checked (magic, row_floats, key) before it is returned: -EIO if not.
 * Putting a key that is already there supersedes the old record (dead space). When dead
 * space exceeds half the file (and 1 MiB), the next put compacts: live records are
 * copied to a new file, under the tier's lock (takes wait meanwhile).
 */
typedef struct de_tier de_tier;

struct de_tier_stats {
	uint64_t live;        /* keys held */
	uint64_t puts, takes; /* records written, records returned */
	uint64_t file_bytes, dead_bytes;
	uint64_t compactions;
	uint64_t io_errors;   /* failed reads/writes (the rows concerned are lost) */
	uint32_t row_floats;  /* the row size it was opened for */
};

/* dir: an existing writable directory. -EINVAL (row_floats 0 or > DE_MAX_DIM * (1 +
 * DE_MAX_SLOTS), NULL), or the errno of open / io_uring_queue_init. */
int de_tier_open(const char *dir, uint32_t row_floats, de_tier **out);
void de_tier_close(de_tier *tier); /* NULL is fine */
/* Append n rows (n * row_floats floats) with their metadata (metas[i].key is the key).
 * Thread-safe. On a write error the records of this call are not indexed. */
int de_tier_put(de_tier *tier, const float *rows, const struct de_row_meta *metas, size_t n);
/* Return key's row (row_floats floats) and metadata, and forget it: 0, -ENOENT, -EIO. */
int de_tier_take(de_tier *tier, uint64_t key, float *row /* out */,
		 struct de_row_meta *meta /* out */);
bool de_tier_contains(de_tier *tier, uint64_t key);
int de_tier_compact(de_tier *tier);
int de_tier_stats(de_tier *tier, struct de_tier_stats *out /* out */);

/*
 * Durable tier: the file at path (created, mode 0600, its directory fsync'ed), records as
 * above followed by an 8-byte trailer (u32 XXH32 of the record, u32 magic "DETE"), so 56
 * + 4 * row_floats bytes each. Open rebuilds the index by a scan (the later record of a
 * key wins) and truncates the file after the last intact record. A put returns once its
 * records are fdatasync'ed. Takes forget in memory only; a compaction first calls the
 * hook (non-zero: no compaction), then replaces the file atomically (path.tmp, fdatasync,
 * rename, directory fsync). -EEXIST: the file holds rows of another size.
 */
int de_tier_open_file(const char *path, uint32_t row_floats, de_tier **out);
void de_tier_set_compact_hook(de_tier *tier, int (*fn)(void *ctx), void *ctx);
/* Erase keys from the tier: forgotten; a durable tier first appends a tombstone for each
 * key (also one taken: its record may still be in the file) and fdatasyncs them (the scan at the next open forgets them too). 0, or the
 * write's error (then nothing is forgotten). */
int de_tier_erase(de_tier *tier, const uint64_t *keys, size_t n);
/* Forget every key drop(ctx, key) says (under the tier's lock: drop must not call the
 * tier). Returns how many. */
size_t de_tier_drop_if(de_tier *tier, bool (*drop)(void *ctx, uint64_t key), void *ctx);
#ifdef DE_FAULT_INJECTION
/* Test builds: make the tier's file descriptor invalid (closed), so every later I/O fails. */
void de_tier_break_fd(de_tier *tier);
#endif

/*
 * Eviction (evict.c): one evictor per host manages up to DE_EVICT_MAX_TABLES tables, each
 * with a byte budget, under an optional host budget.
 *
 * Resident bytes of a table (what budgets bound): the arena's used bytes minus the bytes
 * of row chunks, plus live keys * row_cost, where row_cost = de_table_bytes_per_row
 * (row_stride + 32 bytes of metadata, row_stride = dim * 4 * (1 + nslots) rounded up to
 * 64 bytes, to 16 below 64 bytes). So: header, chunk table, index segments and every
 * directory ever made, plus the rows of live keys (values, slots and metadata). The
 * arena never shrinks and reuses freed rows before growing, so keeping resident bytes
 * under the budget keeps the arena's used bytes under budget + (rows handed out but not
 * live: at most one row chunk, about 2 MiB, plus the rows inserted between checks).
 *
 * Watermarks: a table (or the host) whose resident bytes exceed budget * high is evicted
 * down to budget * low. The background thread (de_evict_start) does it every
 * interval_ms; de_evict_after_lookup does it inline, up to inline_max rows, when a lookup
 * created rows and the table is over DE_EVICT_INLINE_OVER (1.02) x its budget, and only
 * back down to that (so the budget holds within 2% when inserts outpace the thread, and
 * the request path does the least work: the thread makes the headroom, 64 rows per hold
 * of the table's lock); de_evict_step does one pass synchronously (tests, or a daemon
 * without the thread). Over the host budget, rows are taken from the table with the
 * highest resident / budget ratio (tables without a budget count host_budget / ntables).
 * Caveat: each table has its own arena, and rows freed in one are not reusable by
 * another, so under a host budget the arenas' used bytes are bounded by the sum of each
 * table's peak resident bytes (a table that grew early and was cut back to its share
 * keeps its peak), not by the host budget; per-table budgets bound each arena.
 *
 * Sampling (Redis' approximated LRU): each round peeks `samples` random row ids
 * (de_table_peek, no lock), scores them, merges them into a pool of the `pool` lowest
 * scores, and erases the lowest with de_table_erase_if, which re-scores the row under its
 * write protection: a row touched since it was sampled (a higher score) is kept. When
 * samples >= the table's row limit every row id is examined (exact, for tests).
 *
 * Scores (lowest evicted first); `now` is the evictor's step (de_evict_set_step) for
 * DE_CLOCK_STEP tables, its clock (seconds, injectable) for DE_CLOCK_TIME tables:
 *   LRU: last_step.   TTL: last_step (under budget pressure), and rows with
 *   now - last_step > ttl are expired by an incremental sweep of sweep_rows row ids per
 *   pass (every row is examined once per row_limit / sweep_rows passes).
 *   LFU: freq * 2^(-(now - last_step) / half_life) (half_life 0: freq): decay applied
 *   lazily, by idle time since the last access, without writing the row.
 *   L2: sum of the squares of the values.
 * Time clocks: last_step is the only per-row time (aux holds the optimizers' step count),
 * so a DE_CLOCK_TIME table must be looked up and updated with de_evict_now(ev, id) as the
 * step: last_step then holds seconds.
 *
 * Returning keys: de_evict_after_lookup, given a lookup's statuses, restores each
 * DE_CREATED key the table's tier holds (values, slots, meta freq and aux; last_step =
 * step) and writes its values into the lookup's output. Other DE_CREATED keys that a
 * "recently evicted" filter knows count as returned_fresh. The filter: two generations
 * of a 2^20-bit Bloom filter (2 bits per key) per table, the older cleared after 2^17
 * evictions: false positives of about (2^17 / 2^20 * 2)^2 ~ 6% at most just after a
 * rotation, and keys evicted more than 2 generations ago are forgotten.
 */
typedef struct de_evict de_evict;

#define DE_EVICT_MAX_TABLES 64u
#define DE_EVICT_INLINE_OVER 1.02 /* inline eviction starts above budget * this */
#define DE_EVICT_HOST UINT32_MAX /* the "table id" of the host totals */

/* The wire's numbers (src/proto.h, enum de_wire_eviction_policy and de_wire_time_unit).
 * NONE: no eviction; de_evict_add_table rejects it. */
enum de_evict_policy {
	DE_EVICT_NONE = 0, DE_EVICT_LRU = 1, DE_EVICT_LFU = 2, DE_EVICT_TTL = 3, DE_EVICT_L2 = 4,
};
enum de_evict_clock { DE_CLOCK_STEP = 0, DE_CLOCK_TIME = 1 };

struct de_evict_config {
	uint64_t host_budget_bytes; /* 0 = none */
	uint32_t samples;      /* row ids per round, 1..4096; 0 = 16 */
	uint32_t pool;         /* candidates kept, 1..256; 0 = 16 */
	double high, low;      /* watermarks, 0 < low <= high <= 1; 0 = 0.98 and 0.95 */
	uint32_t inline_max;   /* rows one de_evict_after_lookup may evict; 0 = 1024 */
	uint32_t interval_ms;  /* background period, 1..60000; 0 = 10 */
	uint32_t sweep_rows;   /* TTL rows examined per pass, 1..2^24; 0 = 4096 */
	uint64_t (*clock)(void *ctx); /* seconds; NULL = CLOCK_MONOTONIC seconds */
	void *clock_ctx;
	uint64_t seed;         /* sampling */
};

struct de_evict_table_config {
	uint64_t budget_bytes; /* 0 = none (only the host budget applies) */
	enum de_evict_policy policy;
	enum de_evict_clock clock; /* LRU, LFU, TTL */
	uint64_t ttl;          /* TTL: > 0, in steps or seconds */
	uint64_t half_life;    /* LFU: 0 = no decay */
	de_tier *tier;         /* NULL = evicted rows are dropped; not owned */
	/* Logged eviction (a durable table). on_evict (may be NULL) is called with the keys
	 * each pass erased, after their rows reached the tier (a durable tier: fdatasync'ed),
	 * before the pass lets go of the table. pass_lock (may be NULL): each pass holds it
	 * for writing, so the owner, holding it for reading across a write and the logging
	 * of that write, never sees its row evicted in between; with it set,
	 * de_evict_after_lookup does not evict (the owner calls de_evict_inline after it let
	 * go of its read lock). */
	void (*on_evict)(void *ctx, const uint64_t *keys, size_t n);
	void *evict_ctx;
	pthread_rwlock_t *pass_lock;
};

struct de_evict_stats {
	uint64_t resident_bytes;  /* now (computed) */
	uint64_t budget_bytes;
	uint64_t evicted;         /* rows erased by the evictor (expired included) */
	uint64_t expired;         /* TTL */
	uint64_t evicted_to_tier; /* written to the tier */
	uint64_t tier_errors;     /* evicted rows the tier failed to keep */
	uint64_t restored_from_tier;
	uint64_t returned_fresh;  /* created again without their old row (approximate) */
	uint64_t kept_touched;    /* candidates kept because they changed since sampling */
	uint64_t sweeps;          /* TTL: full sweeps completed */
};

/* -EINVAL for a bad config, -ENOMEM. */
int de_evict_create(const struct de_evict_config *cfg, de_evict **out);
/* Stops the thread if running. Tables and tiers are not closed. NULL is fine. */
void de_evict_destroy(de_evict *ev);
/* Register a table (and the arena it lives in), in a slot a removed table left or a new
 * one. Before de_evict_start only: -EBUSY
 * after (the daemon stops the thread, adds, and starts it again: other threads may call
 * de_evict_after_lookup / _stats on tables added earlier meanwhile, as the table count is
 * published with release/acquire); -ENOSPC past DE_EVICT_MAX_TABLES; -EINVAL for a bad config (TTL without ttl, a
 * tier whose row size differs from the table's). id: the table's index. */
int de_evict_add_table(de_evict *ev, de_table *t, de_arena *a,
		       const struct de_evict_table_config *cfg, uint32_t *id /* out */);
/* Forget table id (DROP of a table): waits for any pass over it (the thread's, a host
 * pass from another table's lookup) to end, flushes what it staged, frees its state; the
 * table, its arena and its tier are not touched afterwards and stay the caller's. The
 * thread may be running. The caller makes sure no other call names id meanwhile or
 * later (after_lookup, inline, table_step, stats, set_budget, now: -EINVAL once it is
 * gone); add may give id to a new table. Not with the table's pass_lock held.
 * -EINVAL: bad id. */
int de_evict_remove_table(de_evict *ev, uint32_t id);
/* Change table id's budget (or the host's: DE_EVICT_HOST) at any time. -EINVAL: bad id. */
int de_evict_set_budget(de_evict *ev, uint32_t id, uint64_t budget_bytes);
/* Resident bytes of table id now (or of all tables: DE_EVICT_HOST); 0 for a bad id. */
uint64_t de_evict_resident(de_evict *ev, uint32_t id);
/* The training step, for DE_CLOCK_STEP tables (kept as the maximum seen). */
void de_evict_set_step(de_evict *ev, uint64_t step);
/* "now" of table id's clock; UINT64_MAX for a bad id. */
uint64_t de_evict_now(de_evict *ev, uint32_t id);
/* Start / stop the background thread. start: -EALREADY if running; stop: 0 either way. */
int de_evict_start(de_evict *ev);
int de_evict_stop(de_evict *ev);
/* One synchronous pass: expire (TTL sweeps), then enforce table and host budgets,
 * erasing at most max_rows rows (0 = no limit). evicted (may be NULL): rows erased. */
int de_evict_step(de_evict *ev, size_t max_rows, size_t *evicted /* out */);
/* One synchronous pass over table id alone (an operator's "evict now"): a TTL sweep
 * round, then its budget from anywhere above the low watermark down to it (the thread
 * starts only above the high one), at most max_rows rows (0 = no limit). evicted (may be
 * NULL): rows erased. Not with the table's pass_lock held. */
int de_evict_table_step(de_evict *ev, uint32_t id, size_t max_rows, size_t *evicted /* out */);
/* After a lookup of n keys on table id with status from de_table_find_or_insert: restore
 * returning keys from the tier (out: n * dim values, updated for them; may be NULL),
 * count the fresh ones, and evict inline when over budget. restored (may be NULL). */
int de_evict_after_lookup(de_evict *ev, uint32_t id, const uint64_t *keys, size_t n,
			  const uint8_t *status, float *out, uint64_t step,
			  size_t *restored /* out */);
/* Statistics of table id, or of the host (DE_EVICT_HOST: sums, host budget). */
int de_evict_stats(de_evict *ev, uint32_t id, struct de_evict_stats *out /* out */);
/* The inline eviction de_evict_after_lookup leaves to the owner of a table with a
 * pass_lock: the table's own budget, then the host's. Not with pass_lock held. */
int de_evict_inline(de_evict *ev, uint32_t id);

/* ------------------------------------------------------------------------- */
/* Candidate sampling and top-k (sample.c, topk.c)                            */
/* ------------------------------------------------------------------------- */

/*
 * Candidate sampling (sample.c) for sampled softmax, with TensorFlow's definitions
 * (tf.random.log_uniform_candidate_sampler / fixed_unigram_candidate_sampler):
 *   UNIFORM:     P(k) = 1/L over the L live keys (L read from de_table_stats at each
 *                call). Drawn by rejection over row ids [0, de_table_row_limit) with
 *                de_table_peek: a free row is redrawn (at most DE_SAMPLE_MAX_REJECT times
 *                per draw, then -EAGAIN), so a static table has no bias.
 *   LOG_UNIFORM: keys ranked by observed frequency (meta.freq descending, ties by key
 *                ascending) at the last rebuild; rank r of R has
 *                P(r) = log((r+2)/(r+1)) / log(R+1)          (TF's LogUniformSampler).
 *   UNIGRAM:     P(k) = freq(k)^power / sum over keys of freq^power, at the last rebuild
 *                (Walker/Vose alias table; TF's `distortion` is `power`). Keys with weight
 *                0 (freq 0, power > 0) are never drawn.
 * LOG_UNIFORM and UNIGRAM sample from a snapshot of the table built by de_sampler_create,
 * by de_sampler_rebuild and by a background thread every rebuild_ms. Snapshots are double
 * buffered behind an atomic pointer: a sampling call pins the current one (a reference
 * count), never waits; a rebuild waits for the old one to be unpinned before reusing it.
 *
 * Expected counts (TF's ExpectedCountHelper): with T draws made to get n samples (T = n
 * without unique; with unique, T counts every draw including the duplicates rejected),
 *   expected(k) = n * P(k)               when T == n,
 *   expected(k) = 1 - (1 - P(k))^T       otherwise (computed as -expm1(T*log1p(-P))).
 * sampled_expected[i] is that for keys[i], true_expected[j] for positives[j].
 * A positive the sampler cannot draw gets a finite floor instead of 0 so the logit
 * correction log(expected) stays finite: LOG_UNIFORM uses the probability of rank R (one
 * past the last), UNIGRAM the smallest probability in the snapshot, UNIFORM always 1/L.
 * Key 0 (no feature) as a positive gets 0 and is never a hit.
 * is_positive[i] = 1 when keys[i] is one of the positives (an "accidental hit", which
 * tf.nn.sampled_softmax_loss removes with remove_accidental_hits=True).
 *
 * Randomness: each call draws from its own splitmix64 stream seeded by (cfg.seed, a call
 * counter), so any number of threads may call de_sample on one sampler at once; a
 * single-threaded sequence of calls is reproducible.
 *
 * Caveats:
 *   - Snapshot kinds may return a key erased since the last rebuild, and do not return
 *     keys inserted since; probabilities are those of the snapshot, not of the table now.
 *   - UNIFORM under concurrent writes is uniform over whatever rows were live when peeked
 *     (a returned key was live at some moment of the call); L is read once per call.
 *   - unique with n close to the population may need many draws: after
 *     DE_SAMPLE_MAX_TRIES(n) draws the call fails with -EAGAIN.
 *   - The table must outlive the sampler (de_sampler_destroy before de_table_close).
 */
typedef struct de_sampler de_sampler;

/* The wire's numbers (src/proto.h, enum de_wire_sampler). */
enum de_sampler_kind {
	DE_SAMPLER_UNIFORM = 0,
	DE_SAMPLER_LOG_UNIFORM = 1,
	DE_SAMPLER_UNIGRAM = 2,
};

#define DE_SAMPLE_MAX (1u << 20)      /* n per call; more is -E2BIG */
#define DE_SAMPLE_MAX_POSITIVES (1u << 20)
#define DE_SAMPLE_MAX_REJECT 4096u    /* UNIFORM: free rows redrawn per draw */
#define DE_SAMPLE_MAX_TRIES(n) ((uint64_t)(n) * 64u + (1u << 20)) /* unique: draws per call */
#define DE_SAMPLER_MAX_POWER 16.0

struct de_sampler_config {
	enum de_sampler_kind kind;
	double power;        /* UNIGRAM: exponent in [0, DE_SAMPLER_MAX_POWER] (0.75 for
	                        word2vec); must be 0 for the other kinds */
	int unique;          /* nonzero: the n keys of a call are distinct */
	uint64_t seed;
	uint32_t rebuild_ms; /* LOG_UNIFORM, UNIGRAM: background rebuild period in ms, 0 = no
	                        thread (de_sampler_rebuild only); UNIFORM: must be 0 */
};

/* What one de_sample call did. */
struct de_sample_info {
	uint64_t num_tries;  /* T above */
	uint64_t population; /* L (UNIFORM) or keys in the snapshot */
	uint64_t generation; /* snapshot generation used (0 for UNIFORM) */
	double weight;       /* what P(k) is normalized by: UNIFORM L; UNIGRAM the sum of
	                        freq^power over the snapshot; LOG_UNIFORM 0 (its ranks do
	                        not add up across tables) */
};

/* 0, or -EINVAL with the reason written to why (may be NULL, cap bytes). */
int de_sampler_check(const struct de_sampler_config *cfg, char *why, size_t cap);

/* Create a sampler over t; snapshot kinds build their first snapshot now (an empty table
 * gives an empty snapshot: de_sample says -ENOENT until a rebuild sees keys) and start
 * the background thread. Errors: -EINVAL (NULL, bad cfg), -ENOMEM, pthread errors. */
int de_sampler_create(de_table *t, const struct de_sampler_config *cfg, de_sampler **out);

/* Stop the background thread and free everything. NULL is fine. Not concurrent with
 * other calls on s. */
void de_sampler_destroy(de_sampler *s);

/* Rebuild the snapshot now (synchronous; serialized with the background thread).
 * 0 for UNIFORM (nothing to build); -ENOMEM. */
int de_sampler_rebuild(de_sampler *s);

/*
 * Draw n candidates. out: keys[n], sampled_expected[n] (may be NULL), is_positive[n]
 * (may be NULL), true_expected[npos] (may be NULL; positives may be NULL when npos is 0),
 * info (may be NULL). Thread-safe.
 * Errors: -EINVAL (NULL s/keys, n == 0, positives NULL with npos > 0); -E2BIG (n >
 * DE_SAMPLE_MAX or npos > DE_SAMPLE_MAX_POSITIVES); -ENOENT (no key to draw: empty table
 * or snapshot); -ERANGE (unique and n > population); -EAGAIN (draw limits above);
 * -ENOMEM.
 */
int de_sample(de_sampler *s, size_t n, const uint64_t *positives, size_t npos,
	      uint64_t *keys /* out */, float *sampled_expected /* out */,
	      uint8_t *is_positive /* out */, float *true_expected /* out */,
	      struct de_sample_info *info /* out */);

/* de_sample with this call's own unique flag and seed instead of the sampler's (the
 * daemon shares one sampler per table and kind among callers that each pass theirs):
 * the draw depends only on (seed, unique, n, the snapshot or, for UNIFORM, the table),
 * and equals the first de_sample call of a sampler created with that seed and unique. */
int de_sample_seeded(de_sampler *s, int unique, uint64_t seed, size_t n,
		     const uint64_t *positives, size_t npos, uint64_t *keys /* out */,
		     float *sampled_expected /* out */, uint8_t *is_positive /* out */,
		     float *true_expected /* out */, struct de_sample_info *info /* out */);

/* The sampler's probability P(k) of one draw for each key (the floors above for keys it
 * cannot draw, 0 for key 0), from the current snapshot (UNIFORM: 1/L, or 0 when L == 0). */
int de_sampler_prob(de_sampler *s, const uint64_t *keys, size_t n, double *prob /* out */);

/*
 * Top-k (topk.c): for each of nq queries (dim floats each, row-major), the k live keys
 * whose values score highest: DOT = <q, v>; COSINE = <q, v> / (|q| |v|), defined as 0
 * when |q| or |v| is 0. Exact (every live row is scored), not approximate.
 *
 * The table's row ids are split into nthreads ranges, each scanned with
 * de_table_iterate_range (consistent rows, not torn) and scored in blocks of rows x
 * queries with 8-float vector accumulators (AVX2+FMA when the CPU has it, else SSE via
 * GCC vector extensions; DE_TOPK_KERNEL=base in the environment forces the latter);
 * COSINE multiplies that float dot, in double, by 1/|q| and 1/|v| (norms in double).
 * Each thread keeps a heap per query, and the heaps are merged
 * with de_topk_merge. Every (query, row) score is computed by the same sequence of
 * operations whatever the block or thread, so results do not depend on nthreads.
 *
 * Output: keys[q*k + j], scores[q*k + j] for j < k, best first: score descending, ties by
 * key ascending (deterministic). When fewer than k live keys were scanned the tail
 * entries are key 0 with score -INFINITY; found (may be NULL) says how many entries each
 * query got (the same for every query: min(k, live keys scanned)). A NaN score (a row
 * holding NaN) ranks and is reported as -INFINITY. Keys are the table's uint64 keys:
 * for a string-keyed table they are de_key_from_string fingerprints, which the caller
 * maps back to its strings (key 0 never names a row, so it is safe as "empty").
 *
 * Errors: -EINVAL (NULL, nq == 0, k == 0, bad metric, a non-finite query value);
 * -E2BIG (k > DE_TOPK_MAX_K, nq > DE_TOPK_MAX_QUERIES, nq * k > DE_TOPK_MAX_RESULTS,
 * nthreads > DE_TOPK_MAX_THREADS);
 * -ENOMEM; pthread errors. nthreads 0 means 1.
 * Caveat: under concurrent writes the scan is weakly consistent (de_table_iterate_range):
 * a key inserted or erased meanwhile may or may not be scored, and one moved to another
 * row during the scan could be scored twice (the merge keeps it once, best score).
 */
enum de_topk_metric {
	DE_TOPK_DOT = 0,
	DE_TOPK_COSINE,
};

#define DE_TOPK_MAX_K 65536u
#define DE_TOPK_MAX_QUERIES 65536u
#define DE_TOPK_MAX_THREADS 64u
#define DE_TOPK_MAX_RESULTS (1u << 24) /* nq * k */

int de_topk(de_table *t, const float *queries, size_t nq, size_t k, enum de_topk_metric metric,
	    unsigned nthreads, uint64_t *keys /* out */, float *scores /* out */,
	    size_t *found /* out */);

/*
 * Merge per-shard top-k lists (e.g. local shards, or peers' answers: inputs untrusted,
 * never crash) into one: shard s gives keys[s][q*k_in + j] and scores[s][q*k_in + j] for
 * nq queries. Entries with key 0 are empty and skipped; a key given more than once keeps
 * its best score; NaN ranks as -INFINITY. Output layout, order and found as de_topk
 * (found: the most entries any query got). Errors: -EINVAL (NULL, nq/k/k_in == 0),
 * -E2BIG (k or k_in > DE_TOPK_MAX_K, nq > DE_TOPK_MAX_QUERIES, nq * k or nq * k_in >
 * DE_TOPK_MAX_RESULTS), -ENOMEM. nshards may be 0 (keys, scores then may be NULL).
 */
int de_topk_merge(size_t nshards, const uint64_t *const *keys, const float *const *scores,
		  size_t nq, size_t k_in, size_t k, uint64_t *out_keys /* out */,
		  float *out_scores /* out */, size_t *found /* out */);

#ifdef __cplusplus
}
#endif
#endif /* DE_LEARN_H */
