/*
 * dynemb.h — libdynemb, the client library of the dynemb sidecar: what a trainer or an
 * inference server links to reach its embeddings through shared memory.
 *
 * A dynemb_client is one connection to dynembd (a unix socket for control, a
 * shared-memory channel for data). Open a table by (name, config): the same name and
 * config is shared with every other client of the daemon; the same name with another
 * config is -EEXIST. Lookups create missing keys (training) or not (serving,
 * DYNEMB_READONLY); read-only lookups of keys that exist are served zero-copy from the
 * table's memory mapped read-only in this process, and fall back to the daemon for the
 * rest.
 *
 * Training: open the table with an optimizer (struct dynemb_table_spec.optim) and push
 * gradients with dynemb_apply_gradients; the daemon runs the optimizer step on its rows.
 * The contract of the step: each optimizer is torch.optim's (FTRL:
 * tf.keras.optimizers.Ftrl's), applied "sparsely": only the rows of the keys in the call
 * are stepped, each with its own step count (bias corrections count that key's steps),
 * the optimizer state lives in the row's slots, and results agree with torch's to fp32
 * rounding (not bit for bit). Duplicate keys in one call are summed and stepped once.
 * docs/c-api.md ("Optimizer") lists each optimizer's hyperparameters, defaults and ranges.
 *
 * Concurrent trainers: several clients (threads, processes) may push gradients to the
 * same rows at once. Each row's step is atomic: two steps of one row are serialized in
 * the order they reach it (the daemon's per-row lock), none is lost, and no reader
 * (including a zero-copy lookup) sees a half-stepped row. There is no atomicity across
 * rows, and no ordering between two clients' calls beyond that.
 *
 * Every function returns 0 or a negative errno; dynemb_strerror explains any of them.
 *
 * Caveats:
 *   - No ABI promise before 1.0: the library has one symbol version (DYNEMB_0) and its
 *     structs may change between releases; rebuild against the new dynemb.h. Structs
 *     that may grow end in reserved[] fields: zero-initialize them (a non-zero reserved
 *     field of an input struct is -EINVAL, dynemb_strerror names it), and bindings that
 *     copy the structs compare their sizes with dynemb_struct_size.
 *   - A dynemb_client is not thread-safe: use one per thread (each has its own channel).
 *   - Results of the blocking calls are copied into the caller's arrays. The async calls
 *     (dynemb_submit_lookup / dynemb_complete) leave them in the channel's data area
 *     until the request is completed and the next request reuses the space;
 *     dynemb_request_vals gives that memory, so a framework can wrap it without a copy.
 *   - Batches larger than the daemon's max batch are split by the library.
 *   - String keys are addressed by a seeded 64-bit fingerprint (xxh3). The daemon keeps
 *     each key's string and compares it on every lookup, update, gradient and erase, so
 *     two different strings never share a row: a string whose fingerprint belongs to
 *     another key's string is -EEXIST (dynemb_strerror names the key) and gets no row
 *     of its own. Read-only lookups serve a string from the mapping only after the
 *     daemon served that row to the same string. The seed is readable, so such a string
 *     can be made on purpose; by chance, with n distinct strings in a table, some pair
 *     collides with probability about n^2 / 2^65 (3e-6 for 10 million, 2.7% for a
 *     billion). An erase of a string that collides with a key being created at that
 *     instant never erases the new key's row (it erases nothing, or is -EEXIST).
 */
#ifndef DYNEMB_H
#define DYNEMB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dynemb_client dynemb_client;

struct dynemb_connect_opts {
	const char *name;      /* shows in the daemon's log; may be NULL */
	uint32_t sq_entries;   /* 0: the daemon's default */
	uint64_t data_bytes;   /* 0: the daemon's default */
	int timeout_ms;        /* for each control request and blocking call; 0: 10000 */
	uint64_t reserved[8];  /* must be 0 (room for new fields) */
};

/* Connect to the daemon at socket_path (NULL: /run/dynemb/dynemb.sock). opts may be NULL.
 * -ENOENT/-ECONNREFUSED: no daemon; -EACCES: this uid/gid is not on its allow-list;
 * -EUSERS: this uid holds as many connections as the daemon allows one uid;
 * -EPROTO: a daemon speaking another protocol version.
 * A daemon that exits or is killed: the call waiting on it and every later call of c
 * fail within about 100 ms with -ECONNRESET (or -EPIPE), not after timeout_ms. */
int dynemb_connect(const char *socket_path, const struct dynemb_connect_opts *opts,
		   dynemb_client **out);
void dynemb_close(dynemb_client *c); /* NULL is fine */

/* What the daemon of c offers (its HELLO reply): DYNEMB_CAP_* bits; 0 for NULL. A bit
 * this header does not name may be set by a newer daemon. Operations: */
#define DYNEMB_CAP_APPLY_GRADS (1ull << 0)   /* optimizers, dynemb_apply_gradients */
#define DYNEMB_CAP_ADMISSION (1ull << 1)     /* dynemb_table_spec.admission */
#define DYNEMB_CAP_EVICTION (1ull << 2)      /* dynemb_table_spec.eviction */
#define DYNEMB_CAP_SAMPLE (1ull << 3)        /* dynemb_sample */
#define DYNEMB_CAP_TOPK (1ull << 4)          /* dynemb_topk */
#define DYNEMB_CAP_KEY_STRINGS (1ull << 5)   /* dynemb_key_strings */
#define DYNEMB_CAP_SNAPSHOT (1ull << 6)      /* dynemb_snapshot (needs CAP_PERSISTENCE) */
#define DYNEMB_CAP_EXPORT_IMPORT (1ull << 7) /* dynemb_export / import (need CAP_EXPORT_DIR) */
#define DYNEMB_CAP_DROP (1ull << 8)          /* dynemb_drop_table */
#define DYNEMB_CAP_QUERY (1ull << 9)         /* dynemb_status, dynemb_list_tables,
                                                dynemb_stats_by_name, dynemb_evict_table,
                                                dynemb_set_log_level */
#define DYNEMB_CAP_OPSTATS (1ull << 10)      /* dynemb_op_stats */
#define DYNEMB_CAP_DROP_FORCE (1ull << 11)   /* dynemb_drop_table_flags' DYNEMB_DROP_FORCE */
#define DYNEMB_CAP_SERVING (1ull << 12)      /* serving tables: dynemb_serve_load,
                                                dynemb_open_serving */
/* ... and the daemon's configuration: */
#define DYNEMB_CAP_PERSISTENCE (1ull << 32)  /* a data directory: snapshots, durability */
#define DYNEMB_CAP_EXPORT_DIR (1ull << 33)   /* an export directory for export / import */
#define DYNEMB_CAP_DISK_TIER (1ull << 34)    /* a tier directory: eviction.disk_tier */
uint64_t dynemb_capabilities(const dynemb_client *c);

/* Every constant below has a fixed number (the wire protocol's: the library passes the
 * values to the daemon as they are), so a binding may use the numbers. */
enum dynemb_key_kind { DYNEMB_INT64_KEYS = 0, DYNEMB_STRING_KEYS = 1 };
enum dynemb_initializer {
	DYNEMB_ZEROS = 0, DYNEMB_CONSTANT = 1, DYNEMB_UNIFORM = 2, DYNEMB_TRUNC_NORMAL = 3,
};

/* The server-side optimizer of a table: torch.optim's update of that name (FTRL:
 * FTRL-Proximal as tf.keras.optimizers.Ftrl), per key (see the top of this file). */
enum dynemb_optim_kind {
	DYNEMB_OPTIM_NONE = 0,  /* no optimizer: dynemb_apply_gradients fails with -EOPNOTSUPP */
	DYNEMB_OPTIM_SGD = 1, DYNEMB_OPTIM_MOMENTUM = 2, DYNEMB_OPTIM_NESTEROV = 3,
	DYNEMB_OPTIM_ADAGRAD = 4, DYNEMB_OPTIM_ADAM = 5, DYNEMB_OPTIM_ADAMW = 6,
	DYNEMB_OPTIM_FTRL = 7, DYNEMB_OPTIM_RMSPROP = 8,
};

/* Hyperparameters, taken literally (0 is a value, e.g. beta1 = 0): start from
 * dynemb_optim_spec_defaults(kind) and change what you need. Names and meanings follow
 * torch.optim (FTRL: tf.keras.optimizers.Ftrl; ftrl_beta is its `beta`, l1 / l2 its
 * l1_regularization_strength / l2_regularization_strength). Ranges the daemon checks
 * (else dynemb_open is -EINVAL and dynemb_strerror names the field): every value
 * finite; lr, weight_decay, eps, initial_accumulator_value, l1, l2, ftrl_beta >= 0;
 * FTRL: lr > 0, lr_power <= 0, weight_decay 0 (use l2); MOMENTUM: momentum >= 0;
 * NESTEROV: momentum > 0, dampening 0; ADAM / ADAMW: beta1, beta2 in [0, 1); RMSPROP:
 * alpha in [0, 1], momentum 0. Unused fields are still part of the table's config (compared on
 * open). */
struct dynemb_optim_spec {
	enum dynemb_optim_kind kind;
	double lr, weight_decay, momentum, dampening, beta1, beta2, eps;
	double initial_accumulator_value, alpha, l1, l2, lr_power, ftrl_beta;
	uint64_t reserved[4];         /* must be 0 */
};
/* torch.optim's defaults for kind (SGD: lr 0.01; FTRL: Keras' lr 0.001, lr_power -0.5,
 * initial_accumulator_value 0.1); every field 0 for DYNEMB_OPTIM_NONE. */
void dynemb_optim_spec_defaults(enum dynemb_optim_kind kind,
				struct dynemb_optim_spec *out /* out */);

/* Admission: a key earns a row on its min_count-th sighting (COUNT) or with probability
 * p per sighting (PROBABILITY). A sighting is one occurrence of a missing key in a
 * creating lookup; until admitted a key reads as reject_value (status DYNEMB_ST_MISSING) and
 * dynemb_update / dynemb_apply_gradients drop its values / gradients (stats grads_dropped). */
enum dynemb_admission_mode {
	DYNEMB_ADMISSION_NONE = 0,        /* every key gets a row */
	DYNEMB_ADMISSION_COUNT = 1,       /* after min_count sightings (count-min sketch) */
	DYNEMB_ADMISSION_PROBABILITY = 2, /* each sighting admits with probability p */
};
enum dynemb_reject_read { DYNEMB_REJECTED_READ_INIT = 0, DYNEMB_REJECTED_READ_ZEROS = 1 };
struct dynemb_admission_spec {
	enum dynemb_admission_mode mode;
	uint32_t min_count;           /* COUNT: >= 1 */
	double probability;           /* PROBABILITY: (0, 1] */
	uint32_t sketch_width;        /* COUNT: power of two in [64, 2^28]; 0 = 2^20 */
	uint32_t sketch_depth;        /* COUNT: 1..8; 0 = 4 */
	enum dynemb_reject_read reject_value; /* what a key not admitted yet reads as */
	uint64_t reserved[4];         /* must be 0 */
};

/* Eviction: the daemon keeps the table under budget_bytes (and all evicting tables under
 * its [memory] host_budget_bytes), evicting by policy; with disk_tier evicted rows (values
 * and optimizer state) go to disk and come back on their next lookup or gradient. */
enum dynemb_eviction_policy {
	DYNEMB_EVICTION_NONE = 0, DYNEMB_EVICTION_LRU = 1, DYNEMB_EVICTION_LFU = 2,
	DYNEMB_EVICTION_TTL = 3, DYNEMB_EVICTION_L2 = 4,
};
enum dynemb_time_unit { DYNEMB_TIME_STEPS = 0, DYNEMB_TIME_SECONDS = 1 };
struct dynemb_eviction_spec {
	enum dynemb_eviction_policy policy;
	uint64_t budget_bytes;        /* per table; 0 = unlimited (LRU, LFU, L2 need > 0) */
	uint64_t ttl;                 /* TTL: > 0, in ttl_unit */
	enum dynemb_time_unit ttl_unit;   /* TTL only */
	enum dynemb_time_unit lru_clock;  /* LRU only */
	double lfu_decay;             /* LFU only: half-life in steps, 0 = no decay */
	bool disk_tier;               /* evicted rows go to disk and come back on lookup */
	uint64_t reserved[4];         /* must be 0 */
};

/* Durability of acknowledged updates; ASYNC and SYNC need a daemon started with a data
 * directory ([persistence] data_dir), else dynemb_open fails with -EINVAL. NONE: snapshots
 * only (periodic, dynemb_snapshot, and at SIGTERM). ASYNC: group commit every window_ms;
 * acknowledgements are held while a late flush would leave them older than the window, so
 * a process crash loses at most window_ms (plus one buffer write and scheduling), a power
 * loss at most that plus one fdatasync's latency. SYNC: acknowledged after the WAL record
 * is fdatasync'ed. Other clients may read a row before it is durable (docs/persistence.md). */
enum dynemb_durability_mode {
	DYNEMB_DURABLE_NONE = 0, DYNEMB_DURABLE_ASYNC = 1, DYNEMB_DURABLE_SYNC = 2,
};
struct dynemb_durability_spec {
	enum dynemb_durability_mode mode;
	uint32_t window_ms;           /* ASYNC: group commit window, 1..60000; 0 = 10 */
	uint64_t reserved[4];         /* must be 0 */
};

/* Zero-initialize, then set what you need: all-zero learning settings mean no
 * optimizer, no admission filter, no eviction, no durability beyond snapshots. */
struct dynemb_table_spec {
	const char *name;        /* 1..63 bytes */
	uint32_t dim;            /* 1..4096 */
	uint32_t nslots;         /* optimizer slots, 0..8; 0 with an optimizer: what it needs */
	enum dynemb_initializer init;
	float init_a, init_b;    /* constant a; uniform [a, b); truncated normal mean a, stddev b */
	float slot_init;
	uint64_t seed;
	enum dynemb_key_kind keys;
	struct dynemb_optim_spec optim;
	struct dynemb_admission_spec admission;
	struct dynemb_eviction_spec eviction;
	struct dynemb_durability_spec durability;
	uint64_t reserved[8];    /* must be 0 */
};

/* Open (or share) a table. out: a small table handle for this client. -EEXIST: the name
 * is taken with a different config (every field above counts, the learning settings
 * too; dynemb_strerror names the field); -EINVAL: a bad spec (dynemb_strerror says why). */
int dynemb_open(dynemb_client *c, const struct dynemb_table_spec *spec, int *table /* out */);
uint32_t dynemb_table_dim(const dynemb_client *c, int table); /* 0 for a bad handle */

#define DYNEMB_READONLY 0x1u /* lookups: do not create missing keys (they read as zeros) */

/* Per-key status of lookups (same values as the table's): */
#define DYNEMB_ST_MISSING 0
#define DYNEMB_ST_FOUND 1
#define DYNEMB_ST_CREATED 2

/*
 * Look up n int64 keys of an int64 table: out gets n * dim floats. status (may be NULL)
 * gets one of DYNEMB_ST_* per key. Without DYNEMB_READONLY missing keys are created with the
 * table's initializer; step is the training step recorded with each key.
 */
int dynemb_lookup(dynemb_client *c, int table, const uint64_t *keys, size_t n, float *out,
		  uint8_t *status, unsigned flags, uint64_t step);
/* The same for a string table: keys[i] of lens[i] bytes (lens NULL: NUL-terminated), each
 * at most DYNEMB_MAX_KEY_BYTES (else -EINVAL naming the key). */
#define DYNEMB_MAX_KEY_BYTES 65535u
int dynemb_lookup_str(dynemb_client *c, int table, const char *const *keys, const size_t *lens,
		      size_t n, float *out, uint8_t *status, unsigned flags, uint64_t step);

/* Assign values (n * dim floats) to keys, creating missing ones. created (may be NULL):
 * how many were created. A NaN or infinite value is -EINVAL (dynemb_strerror names its
 * row and column) and nothing is assigned. */
int dynemb_update(dynemb_client *c, int table, const uint64_t *keys, size_t n, const float *values,
		  uint64_t step, size_t *created);
int dynemb_update_str(dynemb_client *c, int table, const char *const *keys, const size_t *lens,
		      size_t n, const float *values, uint64_t step, size_t *created);

int dynemb_erase(dynemb_client *c, int table, const uint64_t *keys, size_t n, size_t *erased);
int dynemb_erase_str(dynemb_client *c, int table, const char *const *keys, const size_t *lens,
		     size_t n, size_t *erased);

/*
 * Push gradients (n * dim floats, row i for keys[i]) to the table's optimizer: the daemon
 * sums the gradients of duplicate keys, creates missing keys (initializer) and steps each
 * distinct key once. step: the training step recorded with the rows. lr > 0: use this
 * learning rate for this call (a schedule); lr <= 0: the table's configured lr; NaN or
 * infinite: -EINVAL. applied (may be NULL): distinct keys stepped.
 * -EINVAL: a non-finite gradient (nothing is applied), a bad handle or key type;
 * -EOPNOTSUPP: the table has no optimizer. A batch larger than one request is
 * deduplicated here first, so a key is still stepped once per call; its parts are then
 * applied one after the other (a reader may see some parts applied and not others).
 */
int dynemb_apply_gradients(dynemb_client *c, int table, const uint64_t *keys, size_t n,
			   const float *grads, uint64_t step, double lr, size_t *applied);
/* The same for a string table (keys as in dynemb_lookup_str). */
int dynemb_apply_gradients_str(dynemb_client *c, int table, const char *const *keys,
			       const size_t *lens, size_t n, const float *grads, uint64_t step,
			       double lr, size_t *applied);

struct dynemb_stats {
	uint64_t keys, rows_allocated, rows_free, row_bytes, index_bytes, arena_bytes;
	uint64_t segments, splits, dir_doublings, arena_segments;
	double load_factor;
	uint32_t dim;
	uint32_t read_only;     /* 1: a failed fsync or write made the table read-only */
	/* admission: keys admitted / sightings filtered / gradients dropped for unadmitted keys */
	uint64_t admitted, filtered, grads_dropped;
	/* eviction: rows evicted (of which to the disk tier), rows brought back from the tier,
	 * keys that came back after eviction without their row (started fresh; approximate),
	 * bytes the table holds as the evictor counts them, and its budget (0 = none) */
	uint64_t evicted, evicted_to_tier, restored_from_tier, returned_fresh;
	uint64_t resident_bytes, budget_bytes;
	/* persistence: last WAL record, last durable one, snapshots taken, LSN of the last */
	uint64_t wal_lsn, durable_lsn, snapshots, snapshot_lsn;
	/* inserts the table's hash index refused (-ENOSPC): keys whose seeded hashes collide
	 * fill their bucket pair and no split separates them (a hash flood); other keys
	 * still insert */
	uint64_t index_refusals;
	uint64_t reserved[7];   /* 0 */
};
int dynemb_stats(dynemb_client *c, int table, struct dynemb_stats *out);

/*
 * Async: submit an int64 lookup without waiting; several may be in flight (up to the
 * channel's ring and data area). *req identifies it. dynemb_complete waits for that request
 * (timeout_ms < 0: the connection's timeout) and gives its result; then dynemb_request_vals
 * points at its n * dim floats in the channel's data area, valid until the next submit.
 */
int dynemb_submit_lookup(dynemb_client *c, int table, const uint64_t *keys, size_t n,
			 unsigned flags, uint64_t step, uint64_t *req /* out */);
int dynemb_complete(dynemb_client *c, uint64_t req, int timeout_ms);
const float *dynemb_request_vals(dynemb_client *c, uint64_t req);
/*
 * Async gradients: one request of n <= max batch keys (-E2BIG otherwise; no splitting),
 * grads copied into the channel at submit (the caller may reuse its array at once).
 * dynemb_complete gives the result; dynemb_request_counts then gives the counts.
 */
int dynemb_submit_apply_gradients(dynemb_client *c, int table, const uint64_t *keys, size_t n,
				  const float *grads, uint64_t step, double lr,
				  uint64_t *req /* out */);
/* After dynemb_complete returned 0 (until the next submit): lookups: count = keys found,
 * aux = keys created; gradients: count = distinct keys stepped, aux = keys created.
 * -ESRCH: not a completed request. */
int dynemb_request_counts(dynemb_client *c, uint64_t req, uint64_t *count /* out */,
			  uint64_t *aux /* out */);

/* ---- candidate sampling, top-k, key strings ----------------------------------------- */

enum dynemb_sampler {
	DYNEMB_SAMPLER_UNIFORM = 0, DYNEMB_SAMPLER_LOG_UNIFORM = 1, DYNEMB_SAMPLER_UNIGRAM = 2,
};
struct dynemb_sample_spec {
	enum dynemb_sampler kind;
	uint32_t num_sampled;   /* 1..the daemon's max batch (and 2^20) */
	int unique;             /* 1: no repeated candidates (TF's unique=True) */
	double power;           /* UNIGRAM: observed frequency ^ power; 0 = 0.75; other kinds:
	                           ignored */
	uint64_t seed;          /* the same seed and table state give the same draw */
	uint64_t reserved[8];   /* must be 0 */
};
/*
 * Draw num_sampled candidates from the table's live keys, server side. positives: npos
 * true classes (npos <= the daemon's max batch; key 0 is "no class": expected 0, never a
 * hit). sampled[num_sampled]: keys; sampled_expected[num_sampled], true_expected[npos]:
 * expected counts as TensorFlow's candidate samplers define them (for the logit
 * correction: logit - log(expected)); accidental[num_sampled] (may be NULL): 1 where
 * sampled[i] is one of the positives. sampled_expected / true_expected may be NULL too.
 * Distributions (TensorFlow's): UNIFORM over live keys; LOG_UNIFORM over keys ranked
 * by observed frequency (lookups count), rank r (0 = most frequent) of n drawn with
 * probability log((r + 2) / (r + 1)) / log(n + 1); UNIGRAM frequency^power. The last
 * two read a snapshot the daemon rebuilds every [learn] sampler_rebuild_ms (1 s by
 * default): keys created since are not drawn yet.
 * -ENOENT: the table has no live key; -ERANGE: unique and num_sampled > live keys;
 * -E2BIG: num_sampled or npos too large; -EINVAL: a bad spec or handle.
 */
int dynemb_sample(dynemb_client *c, int table, const struct dynemb_sample_spec *s,
		  const uint64_t *positives, size_t npos, uint64_t *sampled,
		  float *sampled_expected, float *true_expected, uint8_t *accidental);
/* What one draw was, for a caller that mixes draws from several tables (dynembd's
 * peer layer samples a sharded table this way): P(k) of every key is its weight over
 * `weight`, so a mixture of tables draws table i with probability weight_i / sum. */
struct dynemb_sample_info {
	uint64_t num_tries;   /* draws made (num_sampled unless unique) */
	uint64_t population;  /* keys the sampler draws from */
	double weight;        /* UNIFORM: population; UNIGRAM: the sum of frequency^power;
	                         LOG_UNIFORM: 0 (ranks do not mix across tables) */
	uint64_t reserved[5];
};
/* dynemb_sample with info (not NULL) filled in. */
int dynemb_sample_ex(dynemb_client *c, int table, const struct dynemb_sample_spec *s,
		     const uint64_t *positives, size_t npos, uint64_t *sampled,
		     float *sampled_expected, float *true_expected, uint8_t *accidental,
		     struct dynemb_sample_info *info);
/* The same with string positives (lens NULL: NUL-terminated) on a string table; sampled
 * keys are fingerprints: see dynemb_key_strings. */
int dynemb_sample_str(dynemb_client *c, int table, const struct dynemb_sample_spec *s,
		      const char *const *positives, const size_t *lens, size_t npos,
		      uint64_t *sampled, float *sampled_expected, float *true_expected,
		      uint8_t *accidental);

enum dynemb_metric { DYNEMB_METRIC_DOT = 0, DYNEMB_METRIC_COSINE = 1 };
/*
 * Exact top-k over the table for nq queries (nq * dim floats). keys/scores: nq * k,
 * best first, ties by key; found[nq] (may be NULL): how many of k are valid per query
 * (fewer when the table has fewer live keys; the rest are key 0, score -inf). COSINE is
 * 0 for a zero vector. k: 1..65536 (-EINVAL for 0, -E2BIG above). Any nq: queries are
 * split into requests that fit the daemon's limits and the channel's data area (each
 * request scans the table once, with the daemon's [learn] topk_threads threads).
 * -EINVAL: a non-finite query value, a bad metric or handle. A request over the daemon's
 * [learn] topk_max_cost (queries x rows x dim) is refused by it and sent again with fewer
 * queries; -E2BIG when one query alone is over it (dynemb_strerror names the cap).
 */
int dynemb_topk(dynemb_client *c, int table, const float *queries, size_t nq, uint32_t k,
		enum dynemb_metric metric, uint64_t *keys, float *scores, uint32_t *found);

/*
 * String tables: the strings behind fingerprints (from dynemb_topk, dynemb_sample, export).
 * The strings are written back to back into buf (cap bytes); lens[i] = length of key i's
 * string, or UINT32_MAX when the table has no string for it (key 0 is the empty string).
 * -ENOSPC when cap is too small (lens are still filled, so the caller can size buf and
 * retry). -EINVAL on an int64 table.
 */
int dynemb_key_strings(dynemb_client *c, int table, const uint64_t *keys, size_t n, char *buf,
		       size_t cap, uint32_t *lens);
/* The fingerprint a string key has in this table (the table's seed): computed here. */
int dynemb_string_key(dynemb_client *c, int table, const char *s, size_t len, uint64_t *key);

/* ---- persistence: snapshots, export, import ------------------------------------------
 *
 * Long jobs the daemon runs in its own thread; the call blocks until the job's final
 * reply and calls cb with progress on the way (at most every ~50 ms). Tables are named
 * (any table the daemon holds; no dynemb_open needed), so a CLI can use these directly.
 * The connection's timeout applies to the gap between two messages, not to the whole
 * job. cb returning non-zero makes the call return -ECANCELED after the job's reply (the
 * daemon finishes the job: a half-written snapshot or import is never left behind).
 *
 * Errors: -ENOENT no such table; -EINVAL bad arguments, or SNAPSHOT on a daemon without
 * [persistence] data_dir; -EPERM export/import path not under the daemon's
 * [persistence] export_dir (or export_dir not set); -EBUSY this connection runs a job
 * already (or the daemon runs 8); -EROFS the table's WAL failed; the file system's errors
 * (-ENOSPC, -EIO); import: -EBADMSG damaged file, -EEXIST the file's config differs
 * (dynemb_strerror names the field). dynemb_strerror(err) has the daemon's text.
 */
enum dynemb_progress_phase { DYNEMB_PROGRESS_SNAPSHOT = 1, DYNEMB_PROGRESS_EXPORT = 2,
			      DYNEMB_PROGRESS_IMPORT = 3, DYNEMB_PROGRESS_SERVE_LOAD = 4 };
struct dynemb_progress {
	uint64_t done, total;     /* rows so far and expected (total is an estimate) */
	enum dynemb_progress_phase phase; /* import then snapshots the table: SNAPSHOT */
	uint32_t table_index;     /* dynemb_snapshot of every table: which one, 0-based */
	const char *table;        /* the table's name (valid during the call) */
	uint64_t reserved[8];     /* 0 */
};
typedef int (*dynemb_progress_cb)(void *ctx, const struct dynemb_progress *p);

struct dynemb_snapshot_result {
	uint32_t tables;          /* tables snapshotted */
	uint64_t lsn;             /* the largest cut: recovery replays the WAL from there */
	uint64_t rows, bytes;     /* rows written (incremental: the dirty ones), file bytes */
	uint64_t reserved[8];     /* 0 */
};
/* Checkpoint one table (table_name) or every persisted table (NULL): a full snapshot
 * when full, else incremental where the table has a chain; the manifest then names it
 * and the WAL before it may be removed. out may be NULL. */
int dynemb_snapshot(dynemb_client *c, const char *table_name, bool full, dynemb_progress_cb cb,
		    void *ctx, struct dynemb_snapshot_result *out /* out */);

/* The daemon writes table_name to path (absolute, under its export_dir) in the export
 * format of uring/README.md, with the caller's uid and gid when the daemon runs as root
 * (else as the daemon's user); a symlink at path.tmp is never followed. Needs the export
 * right on the table (-EACCES, docs/security.md "Who may use a table"). records, bytes
 * (out, may be NULL). */
int dynemb_export(dynemb_client *c, const char *table_name, const char *path, dynemb_progress_cb cb,
		  void *ctx, uint64_t *records /* out */, uint64_t *bytes /* out */);

#define DYNEMB_IMPORT_SALVAGE_PREFIX 1u /* dynemb_import flags: keep the verified prefix */
struct dynemb_import_result {
	uint64_t records, imported, dropped;
	char problem[128];        /* the damage found (salvage), or "" */
	uint64_t reserved[8];     /* 0 */
};
/* The daemon reads path (absolute, under its export_dir) into table_name (its config
 * must match the file's); a persisted table then takes a full snapshot before the call
 * returns, so the import survives a crash. out may be NULL. */
int dynemb_import(dynemb_client *c, const char *table_name, const char *path, unsigned flags,
		  dynemb_progress_cb cb, void *ctx, struct dynemb_import_result *out /* out */);

/* Drop table_name from the daemon: its rows, memory, reservation and files go, its
 * memory is given back to its creator's quota (bytes, out, may be NULL: how much), and a
 * daemon with a data_dir forgets it durably before this returns (a restart does not
 * bring it back). Only a table no connection has open (dynemb_close first: this one
 * counts too), asked by a uid with the drop right on it (its creator, root, or what a
 * [namespace] grants). Tables with eviction drop like any other.
 * Errors: -EACCES no drop right (decided before whether the table exists); -ENOENT no
 * such table; -EBUSY a connection has it open (the text names the holders) or a
 * snapshot/export/import that may use it runs; -EOPNOTSUPP a daemon without DROP; the
 * catalog write's error (then nothing changed). dynemb_strerror(err) has the daemon's
 * text. The same as dynemb_drop_table_flags(c, table_name, 0, bytes). */
int dynemb_drop_table(dynemb_client *c, const char *table_name, uint64_t *bytes /* out */);

/* flags: DYNEMB_DROP_FORCE drops the table even while connections hold it (rights as
 * above). The daemon revokes every connection's handle to it first: their later calls on
 * that handle fail -EIDRM ("table 'NAME' was dropped ..."; read-only lookups too, once
 * they see the table's mapping retired), and their mappings of it stay readable memory
 * until they close the handle; it cancels and waits for snapshot, export and import jobs
 * that may use it (they fail -ECANCELED). Durable like a plain drop. -ETIMEDOUT: a worker
 * or a job did not let go within the daemon's wait (the handles stay revoked, the table
 * stays). -EOPNOTSUPP: a daemon without DYNEMB_CAP_DROP_FORCE (and flags != 0); -EINVAL:
 * unknown flags. */
#define DYNEMB_DROP_FORCE 0x1u
int dynemb_drop_table_flags(dynemb_client *c, const char *table_name, unsigned flags,
			    uint64_t *bytes /* out */);

/* ---- Serving tables (DYNEMB_CAP_SERVING; a daemon without it: -EOPNOTSUPP) ----------
 *
 * A serving table is a read-only name for inference, loaded from an export file
 * (dynemb_export's format) in versions: a new version loads beside the one that serves,
 * then the name switches to it atomically. Readers (dynemb_open_serving) are answered from
 * the table's memory, zero-copy, with no daemon round trip: a batch is read wholly from
 * one version (the one current when it started; dynemb_serve_lookup says which), and a
 * handle moves to a newer version between two batches by itself. Missing keys read as
 * the default (zeros, or with DYNEMB_SERVE_MISS_INIT the initializer of the file's
 * config) and are counted, never created; every write on a serving handle fails -EROFS.
 * The daemon frees a replaced version once no reader holds it any more, and at the
 * latest [serving] grace_ms after the switch. dynemb_drop_table(_flags) of a serving name
 * unloads it: every version freed (DYNEMB_DROP_FORCE: readers revoked, their next lookup
 * fails -ENOENT; without it -EBUSY while one reads). Serving tables have int64 keys and
 * are not persisted (the export file is the copy: load it again after a restart).
 */
#define DYNEMB_SERVE_MISS_INIT 0x1u /* dynemb_serve_load: missing keys read the initializer */

struct dynemb_serve_result {
	uint64_t version;   /* the version now serving */
	uint64_t records;   /* rows it holds */
	uint64_t bytes;     /* its memory (charged to the loader's quota) */
	uint64_t previous;  /* the version it replaced (0: the first) */
	uint64_t reserved[4];
};
/* Load path (absolute, under the daemon's [persistence] export_dir, read as the caller)
 * into a new version of serving table name (1..40 bytes; the first load creates it and
 * makes the caller its owner, later ones need the import right on it), then switch to
 * it. cb (may be NULL) sees the load's progress (phase DYNEMB_PROGRESS_SERVE_LOAD). Errors,
 * after which the current version serves on unchanged: -EBADMSG / -EPROTO (a damaged or
 * foreign file: nothing of it is used), -ENOSPC / -EDQUOT (the new version does not fit
 * beside the current one), -EEXIST (name is an ordinary table), -EBUSY (a load of name
 * runs), -EPERM (the path is not under export_dir); dynemb_strerror names the cause. */
int dynemb_serve_load(dynemb_client *c, const char *name, const char *path, unsigned flags,
		      dynemb_progress_cb cb, void *ctx, struct dynemb_serve_result *out /* out */);
/* Open serving table name for reading: a handle for dynemb_serve_lookup (and
 * dynemb_lookup, which reads it the same way whatever its flags). -ENOENT: no such
 * serving table; -EAGAIN: its first version is still loading. */
int dynemb_open_serving(dynemb_client *c, const char *name, int *table /* out */);
/* Read n keys of a serving handle into out (n * dim floats); status (may be NULL): per
 * key DYNEMB_ST_FOUND or DYNEMB_ST_MISSING (the default was written). version (out, may
 * be NULL): the version that answered the whole batch. -ESTALE: the name's new version
 * has another dim than this handle (open it again). */
int dynemb_serve_lookup(dynemb_client *c, int table, const uint64_t *keys, size_t n,
			float *out, uint8_t *status, uint64_t *version /* out */);
struct dynemb_serve_info {
	uint64_t version;   /* the version this handle reads now */
	uint64_t found;     /* keys answered from a row, by this handle */
	uint64_t missing;   /* keys answered with the default */
	uint64_t switches;  /* versions this handle moved to after its first */
	uint64_t reserved[4];
};
/* This handle's counts (-EINVAL: not a serving handle). */
int dynemb_serve_info(const dynemb_client *c, int table, struct dynemb_serve_info *out);

/* ---- The operator's view (DYNEMB_CAP_QUERY; a daemon without it: -EOPNOTSUPP) ---- */

enum dynemb_wal_state { DYNEMB_WAL_NONE = 0, DYNEMB_WAL_OK = 1, DYNEMB_WAL_FAILED = 2 };
enum dynemb_pages { DYNEMB_PAGES_AUTO = 0, DYNEMB_PAGES_HUGETLB = 1, DYNEMB_PAGES_THP = 2,
		    DYNEMB_PAGES_SMALL = 3 };

struct dynemb_status {
	char version[32];         /* the daemon's version */
	uint64_t uptime_ms;
	uint32_t pages_config;    /* enum dynemb_pages it was configured with */
	uint32_t pages_got;       /* bit 1 << enum dynemb_pages for each kind some table's
	                             memory got (0: no table) */
	int32_t numa_node;        /* the NUMA node tables are bound to; -1: not bound */
	uint32_t clients;         /* connections open (this one included) */
	uint32_t tables;          /* every table of the daemon, also those this caller may
	                             not open */
	uint32_t workers;
	uint32_t pid;
	uint32_t peers;           /* peer daemons configured (0: none) */
	uint32_t wal_state;       /* enum dynemb_wal_state: NONE without a data directory */
	int32_t wal_err;          /* WAL_FAILED: the negative errno */
	uint64_t wal_last_lsn;    /* the last WAL record */
	uint64_t wal_durable_lsn; /* every record up to it is on disk */
	char wal_error[128];      /* WAL_FAILED: the reason, else "" */
	uint64_t reserved[8];     /* 0 */
};
/* The daemon's state; anyone connected may ask. */
int dynemb_status(dynemb_client *c, struct dynemb_status *out /* out */);

struct dynemb_table_info {
	char name[64];
	uint32_t key_kind;        /* enum dynemb_key_kind */
	uint32_t dim;
	uint64_t keys;
	uint64_t resident_bytes;  /* what its eviction budget counts; without eviction the
	                             bytes of its memory */
	uint64_t budget_bytes;    /* 0: no eviction budget */
	uint32_t read_only;       /* 1: a failed WAL write made it read-only */
	uint32_t pages;           /* enum dynemb_pages its memory got */
	uint32_t owner_uid;       /* the uid that created it */
	uint32_t eviction;        /* enum dynemb_eviction_policy */
	uint32_t durability;      /* enum dynemb_durability_mode */
	uint32_t open_connections;
	uint64_t reserved[4];     /* 0 */
};
/* The tables this caller may open (the open right; root: all), from index first: up to
 * cap entries into out (*n of them), *total: how many there are (total may be NULL).
 * Page with first += *n while first < *total; several requests are made when cap is
 * larger than one reply holds. A table created or dropped meanwhile may shift pages. */
int dynemb_list_tables(dynemb_client *c, size_t first, struct dynemb_table_info *out,
		       size_t cap, size_t *n /* out */, size_t *total /* out */);
/* dynemb_stats of a table by name, without opening it (needs the open right). -ENOENT
 * no such table; -EACCES no right (said before whether the table exists, as
 * dynemb_open decides). */
int dynemb_stats_by_name(dynemb_client *c, const char *table_name,
			 struct dynemb_stats *out /* out */);
/* One eviction pass on the table now, down to its low watermark (needs the write
 * right). evicted (may be NULL): rows erased. -EOPNOTSUPP: the table has no eviction;
 * -ENOENT, -EACCES as dynemb_stats_by_name. */
int dynemb_evict_table(dynemb_client *c, const char *table_name, uint64_t *evicted /* out */);
/* The daemon's log level from now on: "error", "warn", "info" or "debug". Root or the
 * daemon's own uid only (-EPERM); another word is -EINVAL. */
int dynemb_set_log_level(dynemb_client *c, const char *level);

/*
 * Per-op counters (DYNEMB_CAP_OPSTATS): for every table this caller may open (as
 * dynemb_list_tables), one entry per operation that has completed at least one request
 * since the daemon started, with a latency histogram; and the daemon's WAL counters.
 * What dynembctl top shows; /metrics exports the same counters and buckets.
 *
 * Latency buckets, cumulative: le[i] (i < DYNEMB_LAT_BUCKETS) counts the requests that
 * took at most 1 us << i (1 us .. ~1.05 s); le[DYNEMB_LAT_BUCKETS] is every request
 * (== requests). A request's latency runs from a worker starting it to its completion
 * being ready (the queue before it and the client's side are not in it); the counters
 * are read while workers add to them, so errors and keys may lag requests a little.
 */
#define DYNEMB_LAT_BUCKETS 21u
enum dynemb_op { DYNEMB_OP_LOOKUP = 1, DYNEMB_OP_UPDATE = 2, DYNEMB_OP_ERASE = 3,
		 DYNEMB_OP_STATS = 4, DYNEMB_OP_APPLY_GRADS = 5, DYNEMB_OP_SAMPLE = 6,
		 DYNEMB_OP_TOPK = 7, DYNEMB_OP_KEY_STRINGS = 8 };
#define DYNEMB_OP_MAX DYNEMB_OP_KEY_STRINGS
struct dynemb_op_stat {
	char table[64];
	uint32_t op;              /* enum dynemb_op */
	uint32_t pad;             /* 0 */
	uint64_t requests;        /* requests completed (each call's part sent at once: one
	                             per max batch of keys) */
	uint64_t errors;          /* of them, completed with an error */
	uint64_t keys;            /* their keys added up (TOPK: queries; SAMPLE: positives) */
	uint64_t sum_ns;          /* their latencies added up */
	uint64_t le[DYNEMB_LAT_BUCKETS + 1]; /* cumulative (above) */
	uint64_t reserved[4];     /* 0 */
};
struct dynemb_wal_stats {
	uint32_t present;         /* 1: the daemon has a WAL (a data directory); 0: the rest 0 */
	uint32_t pad;             /* 0 */
	uint64_t last_lsn, durable_lsn; /* the last record; every record up to it is on disk */
	uint64_t bytes_written, flushes, fsyncs;
	uint64_t flush_ns_sum;    /* successful flushes (write + fdatasync), their time */
	uint64_t flush_le[DYNEMB_LAT_BUCKETS + 1]; /* flushes by time, cumulative as le[] */
	uint64_t reserved[4];     /* 0 */
};
/*
 * Up to cap entries into out, table by table (the daemon's order), ops ascending; *n:
 * how many. -ENOBUFS: there are more than cap (*n says how many; out holds the first
 * cap; call again with room for them, and some more: tables and ops may be added
 * meanwhile). wal (may be NULL): the WAL's counters. out may be NULL with cap 0 (to
 * count). A reply that breaks the protocol is -EBADMSG, its fault named.
 */
int dynemb_op_stats(dynemb_client *c, struct dynemb_op_stat *out, size_t cap,
		    size_t *n /* out */, struct dynemb_wal_stats *wal /* out */);

/* Zero-copy counters of this client: lookups served from the read-only mapping, and keys
 * that had to go to the daemon. */
void dynemb_zero_copy_counts(const dynemb_client *c, uint64_t *local_keys, uint64_t *remote_keys);

/* The text of err. While err is the last error of this thread's last call, the text
 * names the problem: the argument and the rule it broke (-EINVAL, found here), or the
 * daemon's own message (-EEXIST names the field that differs; -ENOENT what is missing);
 * for a string key whose fingerprint belongs to another key's string, "key conflict:"
 * and the key. Valid until the next call on this thread. */
const char *dynemb_strerror(int err);

/*
 * sizeof(struct NAME) in this build of the library, for bindings that copy the structs
 * (the Python package checks its copies at load): NAME without "struct ", one of
 * dynemb_connect_opts, dynemb_optim_spec, dynemb_admission_spec, dynemb_eviction_spec,
 * dynemb_durability_spec, dynemb_table_spec, dynemb_stats, dynemb_sample_spec,
 * dynemb_progress, dynemb_snapshot_result, dynemb_import_result, dynemb_status,
 * dynemb_table_info, dynemb_op_stat, dynemb_wal_stats. 0 for any other name.
 */
size_t dynemb_struct_size(const char *name);

#ifdef __cplusplus
}
#endif
#endif /* DYNEMB_H */
