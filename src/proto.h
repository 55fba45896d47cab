/*
 * proto.h — the wire protocol between libdynemb (src/client) and dynembd (src/server).
 * Private to those two: applications use src/client/dynemb.h.
 *
 * Control plane: a unix SOCK_SEQPACKET socket (default /run/dynemb/dynemb.sock). Every
 * message is one packet of at most DE_MSG_MAX bytes that starts with struct de_msg_hdr;
 * file descriptors travel with SCM_RIGHTS on the reply that names them. All integers are
 * little-endian (both ends are on one host), structs are packed by layout (static asserts
 * below), and every field from the other side is validated before use.
 *
 *   client                                   daemon
 *   HELLO {proto, sq_entries, data_bytes, name}  ->  checks SO_PEERCRED against the allow-list
 *                                            <-  HELLO_OK {client_id, sizes, capabilities}
 *                                                + [channel fd]
 *                                                or ERROR {-EACCES | -EPROTO | ...}
 *   OPEN {name, config, learn}               ->  same name + same config: shared table;
 *                                                same name + other config: ERROR -EEXIST
 *                                                naming the first field that differs
 *                                            <-  OPEN_OK {table_id, dim, key_type, seed,
 *                                                nsegments} + [read-only fds of the table's
 *                                                arena segments, at most DE_FDS_PER_MSG]
 *   SEGMENTS {table_id, first}               ->  (the zero-copy path found a new segment)
 *                                            <-  SEGMENTS_OK {table_id, first, count} + [fds]
 *   DROP {name, flags}                       ->  (below: a table no connection has open,
 *                                                or with DE_DROP_FORCE one it revokes)
 *                                            <-  DROP_OK {bytes} or ERROR
 *   BYE                                      ->  (or just close the socket)
 * A reply carries the seq of its request. One request at a time per connection.
 *
 * Data plane: the channel (shm/de_shm.h, "Channel"): struct de_sqe in, struct de_cqe out.
 * All offsets are into the channel's own data area; the daemon copies each descriptor
 * out, then checks op, table id, count <= max batch, every range against the data area,
 * alignment, and lengths against count and dim. A bad descriptor completes with
 * -EINVAL (or -E2BIG for count) and touches nothing else.
 *
 *   op          sqe fields                                     cqe
 *   LOOKUP      keys (count keys), vals out (count * dim f32),   res, count = found,
 *               status out if flags & DE_SQE_STATUS (count u8),  aux0 = created
 *               flags & DE_LOOKUP_CREATE: create missing keys;
 *               arg = training step
 *   UPDATE      keys, vals in (count * dim f32): assign values,  res, count = created
 *               creating missing keys; arg = step
 *   ERASE       keys                                              res, count = erased
 *   APPLY_GRADS keys, vals in = gradients (count * dim f32),     res, count = distinct
 *               arg = step; flags & DE_GRAD_LR: status_off holds   keys stepped,
 *               an lr (IEEE double bits, finite, > 0) used for    aux0 = created
 *               this request instead of the table's (without the
 *               flag status_off must be 0). The table's optimizer
 *               (learn.optim) steps each distinct key once with the
 *               sum of its gradients (de_learn.h); missing keys are
 *               created first. A non-finite gradient: -EINVAL, no
 *               row touched. A table without an optimizer:
 *               -EOPNOTSUPP. DE_SQE_STATUS is not allowed.
 *   STATS       vals out: struct de_wire_stats                    res
 *   NOP         -                                                 res = 0
 *   SAMPLE      count = npos positives at keys (u64 keys; with    res, count = num_sampled,
 *               DE_SAMPLE_STR a string table's string encoding);  aux0 = draws made (T),
 *               status_off: struct de_wire_sample_args (32 bytes, aux1 = population
 *               8-aligned, copied out and checked); vals out,
 *               back to back: u64 sampled[ns], f32 sampled_expected[ns],
 *               f32 true_expected[count], u8 accidental[ns]:
 *               vals_len == 13 * ns + 4 * count (+ 8 with DE_SAMPLE_WEIGHT: the
 *               f64 weight last), vals_off 8-aligned. ns (num_sampled)
 *               1..min(max_batch, DE_SAMPLE_MAX). -ENOENT: no live key; -ERANGE: unique
 *               and ns > population; -EAGAIN: draw limit.
 *   TOPK        count = nq queries at keys (nq * dim f32, keys_len  res, count = found
 *               == 4 * nq * dim, 4-aligned); arg = k (1..           (per query, the same
 *               DE_TOPK_MAX_K); flags DE_WTOPK_COSINE (else dot);  for every query)
 *               vals out: u64 keys[nq * k] then f32 scores[nq * k]
 *               (vals_len == 12 * nq * k, 8-aligned), best first;
 *               nq <= max_batch, nq * k <= DE_TOPK_MAX_RESULTS;
 *               status_off 0. A non-finite query: -EINVAL.
 *   KEY_STRINGS string tables only: count u64 fingerprints at keys  res (-ENOSPC: the
 *               (keys_len == 8 * count); vals out: u32 lens[count]  strings did not fit;
 *               (UINT32_MAX: no string known) then the strings      lens are complete),
 *               back to back (vals_len >= 4 * count, 4-aligned);    count = strings known,
 *               arg and status_off 0. Once one string does not fit  aux0 = bytes the
 *               no later string is written (lens still are).        strings need
 *
 * A batch is not atomic: a write that fails midway keeps the keys it applied before the
 * failure, and other readers see its rows change one by one. An int64 LOOKUP or UPDATE
 * larger than a worker's slice (about 4,096 / (dim + 1) keys) is served in slices over
 * several passes (server/worker.c, "Fairness"), so meanwhile a prefix of it is visible
 * (and, for UPDATE, in the WAL: a crash before its completion may keep a prefix of an
 * unacknowledged UPDATE, never a part of an acknowledged one).
 *
 * A LOOKUP (create), UPDATE or APPLY_GRADS that fails -ENOSPC because the table's hash
 * index refused a key (shm/de_shm.h: its seeded hashes collide with keys that fill its
 * bucket pair) completes with aux1 = the table's index_refusals (> 0); 0 otherwise.
 *
 * Keys: an int64 table takes count u64 at keys_off (keys_len = 8 * count). A string
 * table takes count u32 lengths followed by the bytes of all strings back to back
 * (keys_len = 4 * count + sum of lengths, each length <= DE_MAX_KEY_BYTES); the daemon
 * maps each to de_key_from_string(table seed, ...) and keeps the string (for top-k,
 * sampling and export to give it back). The empty string is key 0: it reads as zeros.
 * In LOOKUP, UPDATE, ERASE and APPLY_GRADS each string is compared with the one kept
 * for its fingerprint, and with the other strings of the request: a fingerprint that
 * belongs to another string completes the request with -EEXIST and count = the index
 * of one such key in the request; no row is written (the check runs first) and nothing
 * read is delivered (a lookup without create is checked after it read; its vals and
 * status are not to be used).
 *
 * Concurrency of APPLY_GRADS (the semantics we promise; no Hogwild): each row's step is
 * atomic. Trainers on different channels (served by different workers) may push to the
 * same row at once; de_table_apply excludes writers per row (the segment's lock) and
 * readers retry on the row's seqlock, so two steps of one row are serialized in the
 * order their requests reach the row, none is lost, and no reader sees a half-stepped
 * row. Across rows there is no atomicity: a reader may see some rows of a batch stepped
 * and others not yet.
 *
 * Learning and persistence config (struct de_wire_learn_config, in OPEN): every field is
 * validated by the daemon; fields a mode does not use must be 0, so that two configs
 * that mean the same thing compare equal. Defaults (the 0 of a "0 = default" field) are
 * filled in by the daemon before the comparison (DE_*_DEFAULT below). The optimizer,
 * admission and eviction are enforced (src/server/learnops.c states how); durability by
 * the WAL and snapshots (src/server/persist.c over uring/).
 */
#ifndef DE_PROTO_H
#define DE_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "de_shm.h"

/* 2: OPEN carries de_wire_learn_config; APPLY_GRADS; SAMPLE, TOPK, KEY_STRINGS; the
 *    persistence messages. 3: HELLO_OK carries capabilities. A daemon serves one
 *    version: HELLO of another is ERROR -EPROTO. */
#define DE_PROTO_VERSION 3u
#define DE_MSG_MAGIC 0x314d4544u /* "DEM1" */
#define DE_MSG_MAX 4096u
#define DE_NAME_MAX 64u          /* bytes, NUL-terminated within */
#define DE_FDS_PER_MSG 250u      /* below the kernel's SCM_MAX_FD (253) */
#define DE_MAX_KEY_BYTES 65535u
#define DE_DEFAULT_SOCKET "/run/dynemb/dynemb.sock"

enum de_msg_type {
	DE_MSG_HELLO = 1,
	DE_MSG_HELLO_OK = 2,
	DE_MSG_OPEN = 3,
	DE_MSG_OPEN_OK = 4,
	DE_MSG_SEGMENTS = 5,
	DE_MSG_SEGMENTS_OK = 6,
	DE_MSG_ERROR = 7,
	DE_MSG_BYE = 8,
	/* 9..20: persistence (src/server/persist_jobs.c, src/client/client_persist.c) */
	DE_MSG_SNAPSHOT = 9,
	DE_MSG_SNAPSHOT_OK = 10,
	DE_MSG_EXPORT = 11,
	DE_MSG_EXPORT_OK = 12,
	DE_MSG_IMPORT = 13,
	DE_MSG_IMPORT_OK = 14,
	DE_MSG_PROGRESS = 15,
	/* 16..20 reserved for persistence */
	DE_MSG_DROP = 21,
	DE_MSG_DROP_OK = 22,
	/* 23..32: the operator's queries (src/server/control_query.c) */
	DE_MSG_STATUS = 23,
	DE_MSG_STATUS_OK = 24,
	DE_MSG_TABLES = 25,
	DE_MSG_TABLES_OK = 26,
	DE_MSG_STATS_BY_NAME = 27,
	DE_MSG_STATS_BY_NAME_OK = 28,
	DE_MSG_EVICT = 29,
	DE_MSG_EVICT_OK = 30,
	DE_MSG_LOG_LEVEL = 31,
	DE_MSG_LOG_LEVEL_OK = 32,
	DE_MSG_OPSTATS = 33,
	DE_MSG_OPSTATS_OK = 34,
	/* 35..40: serving tables (src/server/control_serve.c) */
	DE_MSG_SERVE_LOAD = 35,
	DE_MSG_SERVE_LOAD_OK = 36,
	DE_MSG_SERVE_OPEN = 37, /* answered by OPEN_OK */
};

struct de_msg_hdr {
	uint32_t magic;   /* DE_MSG_MAGIC */
	uint16_t type;    /* enum de_msg_type */
	uint16_t version; /* DE_PROTO_VERSION */
	uint32_t len;     /* bytes of the whole message, header included */
	uint32_t seq;     /* the client's request number; a reply repeats it */
};

struct de_msg_hello {
	struct de_msg_hdr h;
	uint32_t sq_entries;  /* wanted; 0 = the daemon's default; the daemon may clamp */
	uint32_t pad;
	uint64_t data_bytes;  /* wanted data area; 0 = default */
	char name[DE_NAME_MAX]; /* for logs */
};

/*
 * 48 bytes:
 *   0  hdr (16)          16 u32 client_id       20 u32 sq_entries   24 u32 cq_entries
 *   28 u32 max_batch     32 u64 data_bytes      40 u64 capabilities (DE_CAP_*)
 * capabilities: what this daemon does and how it is configured. A client uses a feature
 * only when its bit is set, so a daemon may leave out what it does not offer; bits it
 * does not know it leaves 0. Bits 0..31: operations and messages this daemon serves;
 * bits 32..63: its configuration.
 */
struct de_msg_hello_ok {
	struct de_msg_hdr h;
	uint32_t client_id;
	uint32_t sq_entries, cq_entries;
	uint32_t max_batch;   /* most keys in one descriptor */
	uint64_t data_bytes;
	uint64_t capabilities;
	/* SCM_RIGHTS: the channel memfd, read-write */
};
#define DE_CAP_APPLY_GRADS (1ull << 0)   /* server-side optimizers: OPEN's learn.optim, APPLY_GRADS */
#define DE_CAP_ADMISSION (1ull << 1)     /* OPEN's learn.admission */
#define DE_CAP_EVICTION (1ull << 2)      /* OPEN's learn.eviction (disk tier: DE_CAP_DISK_TIER) */
#define DE_CAP_SAMPLE (1ull << 3)        /* op SAMPLE */
#define DE_CAP_TOPK (1ull << 4)          /* op TOPK */
#define DE_CAP_KEY_STRINGS (1ull << 5)   /* op KEY_STRINGS */
#define DE_CAP_SNAPSHOT (1ull << 6)      /* message SNAPSHOT (needs DE_CAP_PERSISTENCE) */
#define DE_CAP_EXPORT_IMPORT (1ull << 7) /* messages EXPORT, IMPORT (need DE_CAP_EXPORT_DIR) */
#define DE_CAP_DROP (1ull << 8)          /* message DROP */
#define DE_CAP_QUERY (1ull << 9)         /* messages STATUS, TABLES, STATS_BY_NAME, EVICT,
                                            LOG_LEVEL */
#define DE_CAP_OPSTATS (1ull << 10)      /* message OPSTATS */
#define DE_CAP_DROP_FORCE (1ull << 11)   /* DROP's flags (DE_DROP_FORCE); without it a DROP
                                            is 80 bytes, name only */
#define DE_CAP_SERVING (1ull << 12)     /* messages SERVE_LOAD, SERVE_OPEN (serving tables;
                                            loading needs DE_CAP_EXPORT_DIR) */
#define DE_CAP_PERSISTENCE (1ull << 32)  /* [persistence] data_dir set: WAL, snapshots,
                                           durability ASYNC / SYNC */
#define DE_CAP_EXPORT_DIR (1ull << 33)   /* [persistence] export_dir set */
#define DE_CAP_DISK_TIER (1ull << 34)    /* [memory] tier_dir set: eviction.disk_tier */

enum de_key_type { DE_KEYS_INT64 = 0, DE_KEYS_STRING = 1 };

/* A table's config as it travels; the same name with a different config is -EEXIST. */
struct de_wire_table_config {
	uint32_t dim, nslots, init, seg_buckets;
	float init_a, init_b, slot_init;
	uint32_t key_type;    /* enum de_key_type */
	uint64_t seed;
	uint32_t reserved[6]; /* must be 0 (learning config: struct de_wire_learn_config) */
};

/* ---- learning and persistence config (OPEN, since protocol 2) ----------------------- */

/* Optimizer kinds on the wire. The definition of these numbers: dynemb.h's
 * DYNEMB_OPTIM_* and src/learn's enum de_optimizer carry the same ones (static asserts in
 * src/client/client.c and src/server/tables.c), and no side translates them. The same
 * holds for every enum of this file and its dynemb.h / de_learn.h counterpart. */
enum de_wire_optim_kind {
	DE_WOPT_NONE = 0,     /* no server optimizer: APPLY_GRADS completes -EOPNOTSUPP */
	DE_WOPT_SGD = 1,
	DE_WOPT_MOMENTUM = 2,
	DE_WOPT_NESTEROV = 3,
	DE_WOPT_ADAGRAD = 4,
	DE_WOPT_ADAM = 5,
	DE_WOPT_ADAMW = 6,
	DE_WOPT_FTRL = 7,
	DE_WOPT_RMSPROP = 8,
};

/*
 * 128 bytes. The hyperparameters of struct de_optim_config (de_learn.h states each one's
 * meaning, range and formulas), as doubles, taken literally: there is no "0 = default"
 * here (0 is a meaningful beta1 or weight_decay); the client library fills torch's
 * defaults for the caller. kind NONE: every other field must be 0. Otherwise
 * de_optim_check must accept them. The table's nslots must be >= de_optim_slots(kind);
 * nslots 0 in the table config means "what the optimizer needs" (the daemon sets it).
 */
struct de_wire_optim {
	uint32_t kind;        /* enum de_wire_optim_kind */
	uint32_t centered;    /* RMSProp centered variant: must be 0 (unsupported) */
	double lr;            /* all: the table's learning rate (APPLY_GRADS may override) */
	double weight_decay;  /* L2 (ADAMW: decoupled); FTRL: must be 0 */
	double momentum;      /* MOMENTUM, NESTEROV */
	double dampening;     /* MOMENTUM */
	double beta1, beta2;  /* ADAM, ADAMW */
	double eps;           /* ADAGRAD, ADAM, ADAMW, RMSPROP */
	double initial_accumulator_value; /* ADAGRAD, FTRL */
	double alpha;         /* RMSPROP */
	double l1, l2;        /* FTRL (TensorFlow's convention) */
	double lr_power;      /* FTRL, <= 0 */
	double ftrl_beta;     /* FTRL */
	uint64_t reserved[2]; /* must be 0 */
};

/* Admission: which keys earn a row (enforced by the daemon: src/server/learnops.c). */
enum de_wire_admission_mode {
	DE_WADMIT_ALL = 0,         /* none: every key gets a row at once */
	DE_WADMIT_COUNT = 1,       /* after min_count sightings (count-min sketch) */
	DE_WADMIT_PROBABILITY = 2, /* each sighting admits with probability p */
};
enum de_wire_reject_value {
	DE_WREJECT_INIT = 0,       /* a key not admitted yet reads as its initializer value */
	DE_WREJECT_ZEROS = 1,      /* ... reads as zeros */
};
#define DE_SKETCH_WIDTH_DEFAULT (1u << 20) /* counters per row of the count-min sketch */
#define DE_SKETCH_WIDTH_MIN 64u
#define DE_SKETCH_WIDTH_MAX (1u << 28)     /* power of two in [MIN, MAX] */
#define DE_SKETCH_DEPTH_DEFAULT 4u
#define DE_SKETCH_DEPTH_MAX 8u             /* rows (hash functions), 1..MAX */

/* 32 bytes. Gradients of a key not admitted yet are dropped. mode ALL: every other field
 * must be 0. COUNT: min_count >= 1, probability 0, sketch sizes as above (0 = default),
 * reject_value. PROBABILITY: probability in (0, 1], min_count 0 and sketch sizes 0,
 * reject_value. */
struct de_wire_admission {
	uint32_t mode;          /* enum de_wire_admission_mode */
	uint32_t min_count;     /* COUNT: sightings needed, >= 1 */
	double probability;     /* PROBABILITY: in (0, 1] */
	uint32_t sketch_width;  /* COUNT: 0 = DE_SKETCH_WIDTH_DEFAULT */
	uint32_t sketch_depth;  /* COUNT: 0 = DE_SKETCH_DEPTH_DEFAULT */
	uint32_t reject_value;  /* enum de_wire_reject_value */
	uint32_t reserved;      /* must be 0 */
};

/* Eviction: what to drop when the table is over its budget (src/server/learnops.c). */
enum de_wire_eviction_policy {
	DE_WEVICT_NONE = 0,
	DE_WEVICT_LRU = 1,         /* least recently used (clock: lru_clock) */
	DE_WEVICT_LFU = 2,         /* least frequently used, counts halved every lfu_decay steps */
	DE_WEVICT_TTL = 3,         /* not touched for ttl (ttl_unit); also under budget if set */
	DE_WEVICT_L2 = 4,          /* smallest L2 norm of the value row */
};
enum de_wire_time_unit { DE_WUNIT_STEPS = 0, DE_WUNIT_SECONDS = 1 };
#define DE_WEVICT_DISK_TIER 0x1u /* de_wire_eviction.flags: evicted rows go to a disk tier
                                   and come back on their next lookup */

/* 48 bytes. NONE: every field must be 0. LRU, LFU, L2: budget_bytes > 0 (what they keep
 * the table under). TTL: ttl > 0; budget_bytes may be 0 (time alone). ttl and ttl_unit:
 * TTL only (else 0); lru_clock: LRU only; lfu_decay: LFU only, finite, >= 0 (0 = counts
 * never decay). flags: DE_WEVICT_DISK_TIER only, with a policy. */
struct de_wire_eviction {
	uint32_t policy;        /* enum de_wire_eviction_policy */
	uint32_t flags;         /* DE_WEVICT_DISK_TIER */
	uint64_t budget_bytes;  /* per table (rows + index); 0 = unlimited */
	uint64_t ttl;           /* TTL: in ttl_unit */
	uint32_t ttl_unit;      /* enum de_wire_time_unit */
	uint32_t lru_clock;     /* enum de_wire_time_unit: what "recent" counts in */
	double lfu_decay;       /* LFU: half-life in steps; 0 = none */
	uint64_t reserved;      /* must be 0 */
};

/* Durability of acknowledged updates: the daemon's WAL and snapshots (uring/), needing
 * [persistence] data_dir for ASYNC and SYNC. */
enum de_wire_durability_mode {
	DE_WDURABLE_NONE = 0,    /* snapshots only */
	DE_WDURABLE_ASYNC = 1,   /* group commit every window_ms: at most that much is lost */
	DE_WDURABLE_SYNC = 2,    /* a completion is posted after fdatasync */
};
#define DE_WINDOW_MS_DEFAULT 10u
#define DE_WINDOW_MS_MAX 60000u

/* 16 bytes. ASYNC: window_ms 1..DE_WINDOW_MS_MAX (0 = DE_WINDOW_MS_DEFAULT); NONE and
 * SYNC: window_ms 0. */
struct de_wire_durability {
	uint32_t mode;          /* enum de_wire_durability_mode */
	uint32_t window_ms;
	uint64_t reserved;      /* must be 0 */
};

/* 256 bytes: the table's whole learning/persistence config. */
struct de_wire_learn_config {
	struct de_wire_optim optim;
	struct de_wire_admission admission;
	struct de_wire_eviction eviction;
	struct de_wire_durability durability;
	uint64_t reserved[4];   /* must be 0 */
};

struct de_msg_open {
	struct de_msg_hdr h;
	char name[DE_NAME_MAX];
	struct de_wire_table_config cfg;
	struct de_wire_learn_config learn;
};

struct de_msg_open_ok {
	struct de_msg_hdr h;
	uint16_t table_id;    /* per connection */
	uint16_t flags;       /* DE_OPEN_* (0 from daemons before peers) */
	uint32_t dim;
	uint32_t key_type;
	uint32_t nsegments;   /* fds attached: the first min(nsegments, DE_FDS_PER_MSG) */
	uint64_t seed;
	/* SCM_RIGHTS: read-only fds of the table's arena segments 0.. */
};

/* de_msg_open_ok.flags: the table is sharded over [peers] members, so a key missing from
 * the local mapping may live on another host: a zero-copy reader asks the daemon about
 * every key it does not find (DE_MISSING read as DE_RETRY). */
#define DE_OPEN_MISS_REMOTE 0x1u
/* de_msg_open_ok.flags of SERVE_OPEN's reply: a serving table's current version (read-only;
 * a zero-copy reader never asks the daemon about a miss: it reads the default), and with
 * DE_OPEN_MISS_INIT that default is the table's initializer (de_table_init_row), else
 * zeros. */
#define DE_OPEN_SERVING 0x2u
#define DE_OPEN_MISS_INIT 0x4u

struct de_msg_segments {
	struct de_msg_hdr h;
	uint16_t table_id;
	uint16_t pad;
	uint32_t first;       /* first segment wanted */
};

struct de_msg_segments_ok {
	struct de_msg_hdr h;
	uint16_t table_id;
	uint16_t pad;
	uint32_t first, count; /* fds attached for segments first..first+count-1 */
};

struct de_msg_error {
	struct de_msg_hdr h;
	int32_t err;          /* negative errno */
	uint32_t pad;
	char msg[240];        /* NUL-terminated: what was wrong, for the user */
};

/*
 * ---- Persistence control messages (since protocol 2; types 9..15) ----------------------
 *
 *   SNAPSHOT {name, flags}     ->  name all zero: every table of the daemon; flags
 *                                  DE_SNAP_FULL: full snapshots (else incremental where
 *                                  a chain exists). Needs [persistence] data_dir.
 *                              <-  PROGRESS* then SNAPSHOT_OK {tables, lsn (largest
 *                                  cut: WAL replay starts there), rows, bytes} or ERROR
 *   EXPORT {name, path}        ->  the daemon writes the table to path (uring/ export
 *                                  format) as ITS OWN uid: path must be absolute and lie
 *                                  under [persistence] export_dir (else -EPERM)
 *                              <-  PROGRESS* then EXPORT_OK {records, bytes} or ERROR
 *   IMPORT {name, flags, path} ->  reads path (same rule) into the table (DE_IMPORT_SALVAGE:
 *                                  keep the verified prefix of a damaged file); a
 *                                  persisted table then takes a full snapshot, so the
 *                                  import is durable when IMPORT_OK comes
 *                              <-  PROGRESS* then IMPORT_OK {records, imported, dropped,
 *                                  problem} or ERROR
 * The table is named (it must exist in the daemon), not a per-connection id: dynembctl
 * needs no OPEN. PROGRESS {done, total, phase, table index, table name} comes at most
 * every ~50 ms per job with the request's seq (a client resets its reply timeout on
 * each); several may be dropped when the client does not read. One job per connection
 * at a time (another: ERROR -EBUSY), at most SRV_MAX_JOBS in the daemon.
 */
#define DE_PATH_MAX 1024u         /* bytes, NUL-terminated within */
#define DE_SNAP_FULL 0x1u          /* de_msg_snapshot.flags */
#define DE_WIMPORT_SALVAGE 0x1u    /* de_msg_import.flags (uring's DE_IMPORT_SALVAGE) */

enum de_progress_phase { DE_PHASE_SNAPSHOT = 1, DE_PHASE_EXPORT = 2, DE_PHASE_IMPORT = 3,
			 DE_PHASE_SERVE_LOAD = 4 };

struct de_msg_snapshot {
	struct de_msg_hdr h;
	char name[DE_NAME_MAX];  /* all zero: every table */
	uint32_t flags;          /* DE_SNAP_FULL */
	uint32_t pad;            /* 0 */
};

struct de_msg_snapshot_ok {
	struct de_msg_hdr h;
	uint32_t tables, pad;
	uint64_t lsn, rows, bytes;
};

struct de_msg_export {
	struct de_msg_hdr h;
	char name[DE_NAME_MAX];
	char path[DE_PATH_MAX];
};

struct de_msg_export_ok {
	struct de_msg_hdr h;
	uint64_t records, bytes;
};

struct de_msg_import {
	struct de_msg_hdr h;
	char name[DE_NAME_MAX];
	uint32_t flags;          /* DE_WIMPORT_SALVAGE */
	uint32_t pad;            /* 0 */
	char path[DE_PATH_MAX];
};

struct de_msg_import_ok {
	struct de_msg_hdr h;
	uint64_t records, imported, dropped;
	char problem[128];       /* NUL-terminated; empty: the file was intact */
};

struct de_msg_progress {
	struct de_msg_hdr h;
	uint64_t done, total;    /* records (rows) so far and expected */
	uint32_t phase;          /* enum de_progress_phase */
	uint32_t table_index;    /* SNAPSHOT of every table: which one (0-based) */
	char name[DE_NAME_MAX];  /* the table being worked on */
};

/*
 * ---- DROP (types 21, 22) -----------------------------------------------------------------
 *
 *   DROP {name}                ->  the table goes: its memory, its reservation, its quota
 *                                  charge and its files (snapshots, strings, sketch) are
 *                                  given back; with a data_dir the catalog forgets it
 *                                  (fsync'ed) before DROP_OK, so a restart does not bring
 *                                  it back, and its id is never given again (its WAL
 *                                  records are skipped by replay until gc drops them)
 *                              <-  DROP_OK {bytes: the quota charge given back} or ERROR:
 *                                  -ENOENT no such table; -EACCES the caller lacks the
 *                                  drop right (checked first, whether or not the table
 *                                  exists); -EBUSY a connection has it open (this one
 *                                  included: dynemb_close first; the message counts the
 *                                  holders and names their clients), or a snapshot,
 *                                  export or import job runs
 *   flags DE_DROP_FORCE: dropped even while connections hold it. Every connection's handle
 *                                  to it is revoked first (a later descriptor on it
 *                                  completes -EIDRM, SEGMENTS of it is ERROR -EIDRM; the
 *                                  memfds mapped read-only stay valid memory until the
 *                                  client unmaps them, but nothing updates them), jobs
 *                                  on it (export, import, snapshots) are cancelled and
 *                                  waited for, then the drop goes on as above (the
 *                                  catalog write is the commit point). -ETIMEDOUT: the
 *                                  workers or jobs did not let go in time (the handles
 *                                  stay revoked, the table stays). Other flag bits:
 *                                  -EINVAL.
 * A DROP of 80 bytes (no flags: a client older than DE_CAP_DROP_FORCE) is flags 0.
 */
#define DE_DROP_FORCE 0x1u

struct de_msg_drop {
	struct de_msg_hdr h;
	char name[DE_NAME_MAX];
	uint32_t flags;          /* DE_DROP_* */
	uint32_t pad;            /* 0 */
};
#define DE_MSG_DROP_V0_LEN (sizeof(struct de_msg_hdr) + DE_NAME_MAX) /* no flags */

struct de_msg_drop_ok {
	struct de_msg_hdr h;
	uint64_t bytes;
};

/* Data plane. */
enum de_op { DE_OP_NOP = 0, DE_OP_LOOKUP = 1, DE_OP_UPDATE = 2, DE_OP_ERASE = 3, DE_OP_STATS = 4,
	     DE_OP_APPLY_GRADS = 5, DE_OP_SAMPLE = 6, DE_OP_TOPK = 7, DE_OP_KEY_STRINGS = 8 };
#define DE_OP_MAX DE_OP_KEY_STRINGS

#define DE_LOOKUP_CREATE 0x01u /* sqe.flags: create missing keys */
#define DE_SQE_STATUS 0x02u    /* sqe.flags: write count status bytes at status_off */
#define DE_GRAD_LR 0x04u       /* sqe.flags, APPLY_GRADS: status_off carries an lr */
#define DE_SAMPLE_STR 0x01u    /* sqe.flags, SAMPLE: positives are strings (string table) */
#define DE_SAMPLE_WEIGHT 0x02u /* sqe.flags, SAMPLE: vals end with the f64 weight the
                                  probabilities are normalized by (de_sample_info.weight;
                                  8 more bytes, not aligned) */
#define DE_WTOPK_COSINE 0x01u  /* sqe.flags, TOPK: cosine similarity instead of dot (the
                                  flags are the metric: 0 dot, 1 cosine, as de_learn.h's
                                  enum de_topk_metric) */

/* SAMPLE's arguments (at status_off). kind: enum de_wire_sampler (de_learn.h's
 * de_sampler_kind has the same numbers); unique 0 or 1; power: UNIGRAM only, finite, in
 * (0, 16] (the client sends 0.75 for "default"), else 0; reserved 0. */
enum de_wire_sampler {
	DE_WSAMPLER_UNIFORM = 0,
	DE_WSAMPLER_LOG_UNIFORM = 1,
	DE_WSAMPLER_UNIGRAM = 2,
};
struct de_wire_sample_args {
	uint32_t kind;
	uint32_t num_sampled;
	uint32_t unique;
	uint32_t reserved;
	double power;
	uint64_t seed;          /* the same seed and table state give the same draw */
};
#define DE_WSAMPLE_MAX_POWER 16.0
#define DE_WSAMPLE_MAX (1u << 20)      /* num_sampled (de_learn.h's DE_SAMPLE_MAX) */
#define DE_WTOPK_MAX_K 65536u          /* de_learn.h's DE_TOPK_MAX_K */
#define DE_WTOPK_MAX_QUERIES 65536u    /* per request (DE_TOPK_MAX_QUERIES) */
#define DE_WTOPK_MAX_RESULTS (1u << 24) /* nq * k per request (DE_TOPK_MAX_RESULTS) */

/* APPLY_GRADS' lr override travels as the bits of a double in sqe.status_off. */
static inline uint64_t de_lr_to_wire(double lr)
{
	uint64_t u;
	__builtin_memcpy(&u, &lr, sizeof u);
	return u;
}
static inline double de_lr_from_wire(uint64_t u)
{
	double lr;
	__builtin_memcpy(&lr, &u, sizeof lr);
	return lr;
}

struct de_wire_stats {     /* STATS writes this at vals_off */
	uint64_t keys, rows_allocated, rows_free, row_bytes, index_bytes, arena_bytes;
	uint64_t segments, splits, dir_doublings, arena_segments;
	double load_factor;
	uint32_t dim, key_type;
	/* admission (0 when the table admits every key) */
	uint64_t admitted, filtered, grads_dropped;
	/* eviction (0 when the table has no eviction) */
	uint64_t evicted, evicted_to_tier, restored_from_tier, returned_fresh;
	uint64_t resident_bytes, budget_bytes;
	/* persistence (0 for durability none without snapshots) */
	uint64_t wal_lsn, durable_lsn, snapshots, snapshot_lsn;
	uint32_t read_only;   /* 1: a failed fsync or write made the table read-only */
	uint32_t pad;
	/* the data plane, daemon-wide (every worker's counts): wakes of a client channel that
	 * brought no work, and times such a channel's wakes were then ignored for a while */
	uint64_t dp_empty_wakes, dp_wake_backoffs;
	/* inserts the table's hash index refused (-ENOSPC): keys whose seeded hashes collide */
	uint64_t index_refusals;
	uint64_t reserved[5]; /* 0 */
};

/*
 * ---- The operator's queries (types 23..32; src/server/control_query.c) ----------------
 *
 *   STATUS {}                  ->  anyone connected
 *                              <-  STATUS_OK {version, uptime, pages, NUMA node, clients,
 *                                  tables, WAL state and LSNs, peers}
 *   TABLES {first}             ->  the tables this caller may open (the open right;
 *                                  root: all), in the registry's order, from index first
 *                              <-  TABLES_OK {total, first, count, DE_TABLES_PER_MSG
 *                                  entries (count used, the rest zero)}: a client pages
 *                                  with first += count until first >= total (a table
 *                                  created or dropped meanwhile may shift the pages)
 *   STATS_BY_NAME {name}       ->  a table's STATS without opening it: needs the open
 *                                  right (-EACCES before -ENOENT, as OPEN decides)
 *                              <-  STATS_BY_NAME_OK {struct de_wire_stats}
 *   EVICT {name}               ->  one eviction pass on the table now, down to its low
 *                                  watermark: needs the write right; -EOPNOTSUPP for a
 *                                  table without eviction
 *                              <-  EVICT_OK {evicted rows, resident and budget bytes after}
 *   LOG_LEVEL {level}          ->  the daemon's log level from now on (0 error .. 3
 *                                  debug): root or the daemon's own uid (-EPERM)
 *                              <-  LOG_LEVEL_OK {level}
 */
#define DE_TABLES_PER_MSG 28u
#define DE_VERSION_MAX 32u

enum de_wal_state { DE_WAL_NONE = 0, DE_WAL_OK = 1, DE_WAL_FAILED = 2 };

struct de_msg_status_ok {
	struct de_msg_hdr h;
	char version[DE_VERSION_MAX]; /* the daemon's version (meson's project version) */
	uint64_t uptime_ms;
	uint32_t pages_config;   /* enum de_pages the daemon was told ([memory] pages) */
	uint32_t pages_got;      /* bit (1 << enum de_pages) for each kind some table's
	                            arena got; 0: no table */
	int32_t numa_node;       /* the node tables are bound to; -2 (DE_NUMA_NONE): none */
	uint32_t clients;        /* connections that said HELLO and are open */
	uint32_t tables;         /* every table of the daemon */
	uint32_t wal_state;      /* enum de_wal_state */
	int32_t wal_err;         /* DE_WAL_FAILED: the negative errno */
	uint32_t peers;          /* peer daemons configured (0: none) */
	uint64_t wal_last_lsn;   /* the last LSN given */
	uint64_t wal_durable_lsn; /* every record up to it is on disk */
	uint32_t pid;
	uint32_t workers;
	char wal_why[128];       /* DE_WAL_FAILED: the WAL's reason, NUL-terminated */
	uint64_t reserved[4];    /* 0 */
};

struct de_msg_tables {
	struct de_msg_hdr h;
	uint32_t first;          /* index of the first table wanted */
	uint32_t pad;            /* 0 */
};

struct de_wire_table_info {
	char name[DE_NAME_MAX];
	uint32_t key_type;       /* enum de_key_type */
	uint32_t dim;
	uint64_t keys;
	uint64_t resident_bytes; /* what its eviction budget counts (0 without eviction:
	                            then arena_bytes of its STATS) */
	uint64_t budget_bytes;   /* 0: no eviction budget */
	uint32_t read_only;      /* 1: its WAL failed */
	uint32_t pages;          /* enum de_pages its arena got */
	uint32_t owner;          /* the uid that created it */
	uint32_t eviction;       /* enum de_wire_eviction_policy */
	uint32_t durability;     /* enum de_wire_durability_mode */
	uint32_t open_conns;     /* connections that have it open */
	uint64_t reserved[2];    /* 0 */
};

struct de_msg_tables_ok {
	struct de_msg_hdr h;
	uint32_t total;          /* tables this caller may open */
	uint32_t first;
	uint32_t count;          /* entries used, <= DE_TABLES_PER_MSG */
	uint32_t pad;
	struct de_wire_table_info t[DE_TABLES_PER_MSG];
};

struct de_msg_by_name {      /* STATS_BY_NAME and EVICT */
	struct de_msg_hdr h;
	char name[DE_NAME_MAX];
};

struct de_msg_stats_by_name_ok {
	struct de_msg_hdr h;
	struct de_wire_stats st;
};

struct de_msg_evict_ok {
	struct de_msg_hdr h;
	uint64_t evicted;        /* rows this pass erased */
	uint64_t resident_bytes, budget_bytes; /* after it */
};

#define DE_LOG_LEVEL_MAX 3u  /* 0 error, 1 warn, 2 info, 3 debug */
struct de_msg_log_level {    /* LOG_LEVEL and LOG_LEVEL_OK */
	struct de_msg_hdr h;
	uint32_t level;
	uint32_t pad;            /* 0 */
};

/*
 * ---- OPSTATS (types 33, 34; src/server/control_query.c) ---------------------------------
 *
 *   OPSTATS {first, pad 0}     ->  (struct de_msg_tables) the per-op counters of the
 *                                  tables this caller may open (as TABLES decides), in
 *                                  the registry's order, from table index first; and the
 *                                  daemon's WAL counters (anyone connected)
 *                              <-  OPSTATS_OK: 3,760 bytes, always whole:
 *   0    hdr (16)
 *   16   u32 total          tables this caller may open
 *   20   u32 first          as asked
 *   24   u32 ntables        tables this reply covers: first .. first + ntables - 1 (their
 *                           names in names[0..ntables)); 0 only when first >= total.
 *                           A client pages with first += ntables until first >= total.
 *   28   u32 count          entries used in op[], <= DE_OPSTATS_ENTRIES (the rest zero)
 *   32   wal (struct de_wire_wal_opstats, 232 bytes)
 *   264  names[DE_OPSTATS_TABLES][DE_NAME_MAX]   NUL-terminated, non-empty
 *   520  op[DE_OPSTATS_ENTRIES] (struct de_wire_op_stat, 216 bytes each)
 * Entries: one per (table, op) that has completed at least one request (ops never seen
 * are left out, as /metrics leaves out their histograms), table by table in names[]
 * order, ops ascending. A table goes whole into one reply: every one of its ops fits
 * (DE_OP_MAX <= DE_OPSTATS_ENTRIES), so each reply covers at least one table.
 * Latency buckets (request and WAL flush alike) are cumulative, as /metrics exports
 * them: le[i] counts the requests that took at most 1 us << i (i < DE_OPSTATS_BUCKETS,
 * up to ~1.05 s); le[DE_OPSTATS_BUCKETS] is every request (+Inf), == requests. What a
 * request's latency is: src/server/tables.h (struct srv_op_counters). Counters are read
 * with relaxed atomics while workers add to them: one entry is a consistent histogram
 * (requests is the sum of the buckets read) but errors may lag it; it is clamped to
 * requests. keys: the count of every request (keys; TOPK queries; SAMPLE positives).
 */
#define DE_OPSTATS_TABLES 4u
#define DE_OPSTATS_ENTRIES 15u
#define DE_OPSTATS_BUCKETS 21u /* tables.h's SRV_LAT_BUCKETS, de_uring.h's DE_WAL_FLUSH_BUCKETS */

struct de_wire_op_stat {
	uint32_t table;          /* index into names[] of its reply, < ntables */
	uint32_t op;             /* enum de_op, 1..DE_OP_MAX */
	uint64_t requests, errors, keys;
	uint64_t sum_ns;         /* the latencies, added up */
	uint64_t le[DE_OPSTATS_BUCKETS + 1]; /* cumulative (above) */
};

struct de_wire_wal_opstats {
	uint32_t present;        /* 1: the daemon has a WAL (a data_dir); 0: the rest is 0 */
	uint32_t pad;
	uint64_t last_lsn, durable_lsn; /* the last LSN given; every record up to it on disk */
	uint64_t bytes_written, flushes, fsyncs;
	uint64_t flush_ns_sum;   /* successful flushes (write + fdatasync), their time */
	uint64_t flush_le[DE_OPSTATS_BUCKETS + 1]; /* cumulative, as le[] above */
};

struct de_msg_opstats_ok {
	struct de_msg_hdr h;
	uint32_t total, first, ntables, count;
	struct de_wire_wal_opstats wal;
	char names[DE_OPSTATS_TABLES][DE_NAME_MAX];
	struct de_wire_op_stat op[DE_OPSTATS_ENTRIES];
};

/*
 * ---- Serving tables (types 35..37; src/server/control_serve.c) --------------------------
 *
 * A serving table is a name whose rows come from an export file, read-only, in versions:
 *   SERVE_LOAD {name, flags, path} ->  loads path (the export format of uring/README.md,
 *                                  read as the client, under [persistence] export_dir as
 *                                  for IMPORT) into a new version of the serving table
 *                                  `name` (created by the first load, owned by the loading
 *                                  uid; later loads need the import right on it) beside the
 *                                  current one, then switches the name to it atomically
 *                              <-  PROGRESS* (phase DE_PHASE_SERVE_LOAD) then
 *                                  SERVE_LOAD_OK {version, records, bytes (the version's
 *                                  memory), previous (the version it replaced, 0: none)}
 *                                  or ERROR: the file's damage or config (-EBADMSG,
 *                                  -EPROTO), memory (-ENOSPC / -EDQUOT: the version did
 *                                  not fit beside the current one), -EEXIST (the name is
 *                                  an ordinary table), -EBUSY (a load of it runs). On any
 *                                  error the current version keeps serving, unchanged.
 *                                  flags DE_SERVE_MISS_INIT: missing keys read the
 *                                  initializer of the file's config (else zeros), from
 *                                  this version on.
 *   SERVE_OPEN {name, release_id}  ->  the current version, as OPEN_OK (flags
 *                                  DE_OPEN_SERVING [| DE_OPEN_MISS_INIT], the version's
 *                                  read-only segment fds). release_id (DE_SERVE_NO_RELEASE:
 *                                  none) is this connection's handle of an older version
 *                                  of the same name: its slot is given the current version
 *                                  (the same table_id comes back), so a client that
 *                                  follows versions never runs out of slots.
 * A version's shared table header holds its number (de_table_serve_version); the daemon
 * marks the one it replaced superseded (de_table_superseded) before SERVE_LOAD_OK, so a
 * reader checks that word before each batch and reopens, and a batch is read wholly from
 * one version. A superseded version is freed once no connection holds it, or
 * [serving] grace_ms after the switch (then its holders' handles are revoked; their
 * mapping stays readable memory and still says superseded, so they reopen too).
 */
#define DE_SERVE_MISS_INIT 0x1u
#define DE_SERVE_NO_RELEASE 0xffffu
#define DE_SERVE_NAME_MAX 40u /* bytes of a serving name (its versions are "name@vN") */

struct de_msg_serve_load {
	struct de_msg_hdr h;
	char name[DE_NAME_MAX];
	uint32_t flags;          /* DE_SERVE_MISS_INIT */
	uint32_t pad;            /* 0 */
	char path[DE_PATH_MAX];
};

struct de_msg_serve_load_ok {
	struct de_msg_hdr h;
	uint64_t version, records, bytes, previous;
};

struct de_msg_serve_open {
	struct de_msg_hdr h;
	char name[DE_NAME_MAX];
	uint16_t release_id;     /* DE_SERVE_NO_RELEASE or a table_id of this connection */
	uint16_t pad[3];         /* 0 */
};

_Static_assert(sizeof(struct de_msg_hdr) == 16, "layout");
_Static_assert(sizeof(struct de_msg_serve_load) == 16 + 64 + 8 + DE_PATH_MAX, "layout");
_Static_assert(sizeof(struct de_msg_serve_load_ok) == 48, "layout");
_Static_assert(sizeof(struct de_msg_serve_open) == 88, "layout");
_Static_assert(sizeof(struct de_msg_hello) == 96, "layout");
_Static_assert(sizeof(struct de_msg_hello_ok) == 48, "layout");
_Static_assert(offsetof(struct de_msg_hello_ok, data_bytes) == 32, "layout");
_Static_assert(offsetof(struct de_msg_hello_ok, capabilities) == 40, "layout");
_Static_assert(sizeof(struct de_wire_table_config) == 64, "layout");
_Static_assert(sizeof(struct de_wire_optim) == 128, "layout");
_Static_assert(sizeof(struct de_wire_admission) == 32, "layout");
_Static_assert(sizeof(struct de_wire_eviction) == 48, "layout");
_Static_assert(sizeof(struct de_wire_durability) == 16, "layout");
_Static_assert(sizeof(struct de_wire_learn_config) == 256, "layout");
_Static_assert(offsetof(struct de_wire_learn_config, admission) == 128, "layout");
_Static_assert(offsetof(struct de_wire_learn_config, eviction) == 160, "layout");
_Static_assert(offsetof(struct de_wire_learn_config, durability) == 208, "layout");
_Static_assert(offsetof(struct de_msg_open, learn) == 144, "layout");
_Static_assert(sizeof(struct de_msg_open) == 400, "layout");
_Static_assert(sizeof(struct de_msg_open_ok) == 40, "layout");
_Static_assert(sizeof(struct de_msg_segments) == 24, "layout");
_Static_assert(sizeof(struct de_msg_segments_ok) == 28, "layout");
_Static_assert(sizeof(struct de_msg_error) == 264, "layout");
_Static_assert(sizeof(struct de_wire_stats) == 272, "layout");
_Static_assert(sizeof(struct de_wire_sample_args) == 32, "layout");
_Static_assert(sizeof(struct de_msg_snapshot) == 88, "layout");
_Static_assert(sizeof(struct de_msg_snapshot_ok) == 48, "layout");
_Static_assert(sizeof(struct de_msg_export) == 1104, "layout");
_Static_assert(sizeof(struct de_msg_export_ok) == 32, "layout");
_Static_assert(sizeof(struct de_msg_import) == 1112, "layout");
_Static_assert(sizeof(struct de_msg_import_ok) == 168, "layout");
_Static_assert(sizeof(struct de_msg_progress) == 104, "layout");
_Static_assert(sizeof(struct de_msg_drop) == 88, "layout");
_Static_assert(offsetof(struct de_msg_drop, flags) == DE_MSG_DROP_V0_LEN, "layout");
_Static_assert(sizeof(struct de_msg_drop_ok) == 24, "layout");

_Static_assert(sizeof(struct de_msg_status_ok) == 272, "layout");
_Static_assert(sizeof(struct de_msg_tables) == 24, "layout");
_Static_assert(sizeof(struct de_wire_table_info) == 136, "layout");
_Static_assert(sizeof(struct de_msg_tables_ok) == 32 + 136 * DE_TABLES_PER_MSG, "layout");
_Static_assert(sizeof(struct de_msg_tables_ok) <= DE_MSG_MAX, "one packet");
_Static_assert(sizeof(struct de_msg_by_name) == 80, "layout");
_Static_assert(sizeof(struct de_msg_stats_by_name_ok) == 288, "layout");
_Static_assert(sizeof(struct de_msg_evict_ok) == 40, "layout");
_Static_assert(sizeof(struct de_msg_log_level) == 24, "layout");
_Static_assert(sizeof(struct de_wire_op_stat) == 216, "layout");
_Static_assert(sizeof(struct de_wire_wal_opstats) == 232, "layout");
_Static_assert(offsetof(struct de_msg_opstats_ok, wal) == 32, "layout");
_Static_assert(offsetof(struct de_msg_opstats_ok, names) == 264, "layout");
_Static_assert(offsetof(struct de_msg_opstats_ok, op) == 520, "layout");
_Static_assert(sizeof(struct de_msg_opstats_ok) == 520 + 216 * DE_OPSTATS_ENTRIES, "layout");
_Static_assert(sizeof(struct de_msg_opstats_ok) <= DE_MSG_MAX, "one packet");
_Static_assert(DE_OP_MAX <= DE_OPSTATS_ENTRIES, "a table's every op fits one reply");

#endif /* DE_PROTO_H */
