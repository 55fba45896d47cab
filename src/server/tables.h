/*
 * tables.h — PRIVATE to dynembd: the table registry and the string-key store (tables.c),
 * the layer just above the validators.
 *
 * Tables by name, each in its own arena; the same name with the same normalized config
 * is the same table, shared by every client that opens it (as in the paper). Only the
 * control thread opens tables; tables live until the daemon exits, a table no client saw
 * yet until srv_registry_discard, a dropped one until srv_registry_drop (only once no
 * connection has it open: a worker serves a table only to connections that opened it,
 * so workers hold pointers freely; a forced DROP first revokes the connections' slots
 * and waits for the workers, worker.h "Revoked handles"). A table's config
 * (wcfg, learn, optim) is written once before the table is published to any client and
 * never changes: workers read it freely.
 *
 * The registry creates tables and nothing more: it never calls the learning or the
 * persistence layer. The control plane runs open -> learning attach (learnops.h) ->
 * persistence open (persist.h) itself; those layers keep their per-table state behind
 * the two opaque pointers below, which the registry never reads.
 */
#ifndef DE_SRV_TABLES_H
#define DE_SRV_TABLES_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "de_learn.h"
#include "de_shm.h"
#include "proto.h"
#include "quota.h"

struct srv_table_learn;   /* learnops.c */
struct srv_table_persist; /* persist_*.c */

/*
 * Per-op counters of a table, for /metrics (metrics.c): one set per enum de_op, added to
 * by the worker that completes a descriptor (relaxed atomics, once per descriptor, never
 * per key) and read by the scrape thread and the control thread's OPSTATS
 * (srv_op_counters_read). A descriptor's latency runs from the worker
 * starting it to its completion being ready (a chunked LOOKUP: first chunk to last; TOPK
 * and SAMPLE: queued to the slow pool until the worker takes their completion back). It
 * lands in the first bucket i whose bound SRV_LAT_BOUND_NS(i) (1 us * 2^i, i <
 * SRV_LAT_BUCKETS: up to ~1.05 s) it does not exceed, else in le[SRV_LAT_BUCKETS]; the
 * buckets are not cumulative (the scrape sums them).
 */
#define SRV_OP_SLOTS (DE_OP_MAX + 1)
#define SRV_LAT_BUCKETS 21u
#define SRV_LAT_BOUND_NS(i) (1000ull << (i))
struct srv_op_counters {
	uint64_t le[SRV_LAT_BUCKETS + 1]; /* their sum is the op's request count */
	uint64_t errors, sum_ns;          /* completions with res < 0; latencies' sum */
	uint64_t keys;                    /* the descriptors' counts, added up */
};
_Static_assert(SRV_LAT_BUCKETS == DE_OPSTATS_BUCKETS, "OPSTATS carries these buckets");

struct srv_table {
	char name[DE_NAME_MAX];
	struct de_wire_table_config wcfg; /* normalized (see srv_wire_config_normalize) */
	/* The whole per-table learning/persistence config as the client asked for it,
	 * normalized by srv_learn_config_normalize: optimizer (used by APPLY_GRADS),
	 * admission, eviction and durability (read these to implement them). */
	struct de_wire_learn_config learn;
	bool has_optim;                   /* learn.optim.kind != DE_WOPT_NONE */
	struct de_optim_config optim;     /* learn.optim as libdelearn takes it */
	de_arena *arena;                  /* its segments go to clients read-only */
	de_table *t;
	de_arena *names_arena;            /* string tables: key -> string offset index */
	de_table *names;
	uid_t owner;                      /* the uid that created it (authz.h): set by the
	                                     control plane before the table is published or
	                                     persisted (the catalog keeps it), then never
	                                     changes */
	struct srv_table_learn *rt;       /* learnops.c: admission/eviction/sampling state;
	                                     NULL when the table uses none of them. Set by
	                                     srv_learn_table_attach, freed by
	                                     srv_learn_host_destroy */
	struct srv_table_persist *ps;     /* persist_*.c: WAL/snapshot state; NULL when the
	                                     daemon has no data_dir. Set before the table is
	                                     published to any client, then never changes */
	/* string tables: called by srv_table_keep_string after it stored a new string (the
	 * persistence layer sets it, release-stored, with string_ctx before) */
	void (*string_kept)(void *ctx, struct srv_table *t, uint64_t key, const void *s,
			    uint32_t len);
	void *string_ctx;
	/* memory (quota.h): the creator's charge for the arenas' segments and the sketch;
	 * grown by the arenas' charge hook (any thread), ended by the table's free */
	struct srv_quota_acct *quota;
	uid_t quota_uid;                  /* who is charged: the creator */
	uint64_t sketch_bytes;            /* admission COUNT: de_admit_sketch_bytes */
	int growth_logged;                /* atomic: the first refused growth was logged */
	/* control thread only: connections that have the table open (a DROP needs 0; a
	 * forced one takes them away as it revokes their slots) */
	unsigned refs;
	/* control thread only: a forced DROP revoked handles but a worker or slow-pool job
	 * had not let go when it gave up (-ETIMEDOUT), so refs 0 does not mean unused: any
	 * later DROP waits for them again (a plain one is refused) */
	bool revoke_pending;
	/* a version of a serving table (control_serve.c): its number (0: an ordinary table)
	 * and the serving name; set before any client sees it, then never changes. Every
	 * descriptor that writes is refused on it (-EROFS, worker.c) */
	uint64_t serve_version;
	char serve_name[DE_NAME_MAX];
	int shard;                        /* atomic, worker.c's cache: 0 not looked up, 1
	                                     sharded over [peers] members, 2 host-local */
	struct srv_table *next;
	struct srv_op_counters ops[SRV_OP_SLOTS]; /* workers add, /metrics, OPSTATS read */
};

/*
 * Other threads than the control thread (the /metrics scrape, metrics.c) walk the list
 * and read each listed table's layer state (rt, ps: srv_table_wire_stats) under mu. The
 * control thread holds mu while it changes either (srv_registry_lock): a new table from
 * srv_registry_open until its last layer is attached (or it is discarded), a DROP from
 * its persistence teardown until srv_registry_drop freed it. It reads without it. No
 * worker ever takes mu, so a slow scrape delays only the control thread.
 */
struct srv_registry {
	pthread_mutex_t mu;
	struct srv_table *head;
	unsigned count;
	enum de_pages pages;
	int numa_node;                    /* resolved: an OS index or DE_NUMA_NONE */
	uint64_t segment_bytes, reserve_bytes; /* reserve_bytes: a cap, 0 = none (quota.h) */
	struct srv_quota *quota;          /* NULL: no quotas (tests) */
	uint64_t table_bytes;             /* [quota] table_bytes; 0 = 16 GiB */
};

void srv_registry_init(struct srv_registry *r, enum de_pages pages, int numa_node,
		       uint64_t segment_bytes, uint64_t reserve_bytes);
/* Charge tables to q ([quota], quota.h) and size a table without a budget at
 * table_bytes (0 = 16 GiB). Before the first open. */
void srv_registry_set_quota(struct srv_registry *r, struct srv_quota *q, uint64_t table_bytes);
/* Free every table: after the layers above freed their per-table state (rt, ps). */
void srv_registry_destroy(struct srv_registry *r);

/*
 * Find or create table `name` (name and cfg already checked by the validators) for uid
 * (recovered: a table of uid's brought back from the catalog at startup, charged to uid
 * but never refused by a quota: quota.h). Same config: the existing table.
 * Another config: -EEXIST with msg naming the first field that differs. New: sizes its
 * reservation from its budget (quota.h), refuses an admission sketch larger than the
 * table's budget (-EINVAL), charges uid's quota (-EDQUOT / -ENOSPC naming the quota),
 * creates its arena(s) and opens it; *created tells which. Control thread only.
 */
int srv_registry_open(struct srv_registry *r, uid_t uid, bool recovered, const char *name,
		      const struct de_wire_table_config *cfg,
		      const struct de_wire_learn_config *learn, struct srv_table **out,
		      bool *created, char *msg, size_t msgcap);
/* Undo the srv_registry_open that created t, before any client saw it (its rt and ps
 * must be NULL). Control thread only. */
void srv_registry_discard(struct srv_registry *r, struct srv_table *t);
/* DROP: unlink t and free it (memory, reservation and quota charge return). The
 * caller made sure nothing references it: no connection (refs 0), no job, and the
 * layers above let go of their state (rt and ps NULL). Control thread only. */
void srv_registry_drop(struct srv_registry *r, struct srv_table *t);
/* mu above: the control thread around changes, other threads around reads. */
void srv_registry_lock(struct srv_registry *r);
void srv_registry_unlock(struct srv_registry *r);
/* The table called name, or NULL. Control thread (tables are only added there). */
struct srv_table *srv_registry_find(const struct srv_registry *r, const char *name);

/* A copy of t's counters of op (< SRV_OP_SLOTS), each read once with a relaxed load
 * (/metrics and OPSTATS): the buckets are what the request count is made of; errors
 * and keys may lag them by the requests completing meanwhile. Any thread that keeps t
 * alive (the registry's lock, or the control thread). */
void srv_op_counters_read(const struct srv_table *t, unsigned op,
			  struct srv_op_counters *out /* out */);

/* String tables: remember the string of a key just created (thread-safe; the first
 * caller for a key stores it, later ones compare: -EEXIST when the fingerprint's kept
 * string is another one). 0 or a negative errno. */
int srv_table_keep_string(struct srv_table *t, uint64_t key, const void *s, uint32_t len);
/*
 * String tables: compare each key's string (sbuf + soff[i], slen[i] bytes; keys[i] its
 * fingerprint) with the string kept for that fingerprint and with the request's other
 * strings. creating (UPDATE, APPLY_GRADS, LOOKUP with create; called before the request
 * touches rows): on a table without admission a key with no string kept has its string
 * kept now. Else (LOOKUP without create: after it read, before its completion) such a
 * key passes. A string being stored right now is waited for.
 * -EEXIST with *bad = i: key i's fingerprint belongs to another string, so key i has no
 * row of its own and the request must not serve or write that row. 0, -EEXIST, or a
 * negative errno of the index.
 */
int srv_table_check_strings(struct srv_table *t, const uint64_t *keys, const char *sbuf,
			    const uint32_t *slen, const uint64_t *soff, uint32_t n, bool creating,
			    uint32_t *bad /* out */);
/*
 * The same for an ERASE, before it erases: a key whose fingerprint has no string kept
 * and no row has absent[i] = 1 (nothing to erase: the caller leaves it out, so a row a
 * colliding string creates meanwhile is never erased); one with a row (its string was
 * not kept) is claimed for the erase's string first. absent: n bytes. 0, -EEXIST with
 * *bad, or a negative errno.
 */
int srv_table_check_erase_strings(struct srv_table *t, const uint64_t *keys, const char *sbuf,
				  const uint32_t *slen, const uint64_t *soff, uint32_t n,
				  uint8_t *absent /* out */, uint32_t *bad /* out */);
/*
 * The string of a key: copies up to cap bytes into buf (not NUL-terminated) and sets
 * *len to the full length. -ENOENT: not known (or being stored right now); -ENOSPC: cap
 * too small (*len says how much is needed); -EINVAL: not a string table; -EBADMSG:
 * an offset that does not point into the arena (never expected).
 */
int srv_table_key_string(struct srv_table *t, uint64_t key, void *buf, size_t cap,
			 uint32_t *len /* out */);

#endif /* DE_SRV_TABLES_H */
