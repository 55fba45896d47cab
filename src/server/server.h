/*
 * server.h — PRIVATE to dynembd (src/server): the daemon's configuration, its table
 * registry, its clients and its worker threads. Nothing outside src/server includes this
 * header except tests/test_daemon.c, which links the registry (tables.c) to unit-test the
 * string-key store.
 *
 * Threads and ownership (the whole concurrency story of the daemon):
 *   - One control thread (control.c) owns the listener, every client socket, the table
 *     registry and the client list. It allocates and frees struct srv_client.
 *   - Worker threads (worker.c) each serve up to SRV_MAX_CLIENTS_PER_WORKER channels. A
 *     client enters a worker through the worker's mailbox (mutex + a NOP on the worker's
 *     private control channel as the wake-up). From then on only that worker touches the
 *     client's channel, until it "releases" the client (store-release of c->released),
 *     after which it never touches it again, and tells the control thread through an
 *     eventfd. The control thread frees a client only after it saw released == 1.
 *   - The control thread asks a worker to drop a client by setting c->want_remove and
 *     kicking the worker; a worker drops a client on its own when the client broke its
 *     ring (c->broken).
 *   - A client's table list is append-only: the control thread writes the pointer, then
 *     publishes ntables (release); the worker reads ntables (acquire) before indexing.
 *   - Tables live until the daemon exits (they are shared by name, as in the paper).
 *   - A table's config (wcfg, learn, optim) is written once by the control thread before
 *     the table is published to any client, and never changes: workers read it freely.
 *
 * Learning: APPLY_GRADS runs de_optim_update (src/learn) on the worker that serves the
 * channel; several workers may step the same table, even the same row, at once (row
 * exclusion is de_table_apply's, see proto.h "Concurrency of APPLY_GRADS"). Admission,
 * eviction (one evictor per daemon, its thread), samplers and top-k: learnops.c, which
 * states the rules; a table's learning state (t->rt) is built before the table is
 * published and freed after the evictor and the workers stopped.
 */
#ifndef DE_SERVER_H
#define DE_SERVER_H

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdint.h>
#include <sys/types.h>

#include "de_learn.h"
#include "de_shm.h"
#include "proto.h"

#define SRV_MAX_CLIENTS_PER_WORKER 127u /* + the worker's control channel = 128 futexes */
#define SRV_MAX_TABLES_PER_CLIENT 256u
#define SRV_MAX_IDS 64u                 /* entries in allow_uids / allow_gids */
#define SRV_MAX_WORKERS 64u
#define SRV_MAX_BATCH_LIMIT (1u << 20)

/* ---- logging (log.c) ---------------------------------------------------------------- */

enum srv_log_level { SRV_LOG_ERROR = 0, SRV_LOG_WARN, SRV_LOG_INFO, SRV_LOG_DEBUG };

/* The one process-wide setting: set once at startup, before any thread starts. */
void srv_log_set_level(int level);
/* One event per line on stderr, prefixed "dynembd: ", written with one write(2). */
__attribute__((format(printf, 2, 3))) void srv_log(int level, const char *fmt, ...);

/* ---- configuration (config.c) -------------------------------------------------------- */

struct srv_config {
	char socket[108];        /* sun_path */
	unsigned workers;
	unsigned poll_us;
	uint32_t max_batch;
	uint32_t sq_entries;     /* default for a HELLO that asks 0 */
	uint64_t data_bytes;     /* default channel data area */
	uint64_t max_data_bytes; /* most a HELLO may ask for */
	uid_t allow_uids[SRV_MAX_IDS];
	unsigned n_uids;
	gid_t allow_gids[SRV_MAX_IDS];
	unsigned n_gids;
	int log_level;
	enum de_pages pages;
	int numa_node;           /* DE_NUMA_AUTO, DE_NUMA_NONE or an OS index */
	uint64_t segment_bytes;  /* first arena segment of a table */
	uint64_t reserve_bytes;  /* virtual space of a table's arena; 0 = libdeshm default */
	uint64_t host_budget_bytes; /* [memory]: all evicting tables together; 0 = none */
	char tier_dir[256];      /* [memory]: disk tier directory; "" = no disk tier */
	unsigned topk_threads;   /* [learn]: threads of one top-k; 0 = online CPUs (<= 64) */
	unsigned sampler_rebuild_ms; /* [learn]: log-uniform/unigram snapshot period; 0 = none */
	char data_dir[200];      /* [persistence]: WAL, snapshots, manifest, catalog; "" = off */
	unsigned snapshot_interval_s; /* [persistence]: checkpoint dirty tables; 0 = never */
	uint64_t wal_segment_bytes;   /* [persistence]: WAL segment size (64K..1G) */
	char export_dir[200];    /* [persistence]: EXPORT/IMPORT paths must lie under it; "" = off */
	bool foreground;
	bool print_config;
};

/* Defaults (the embedded config), then the file, then the flags.
 * Returns 0, 1 when the caller should exit 0 (--help, --version), or 2 after printing
 * an error to stderr (the exit status for bad configuration). */
int srv_config_load(struct srv_config *cfg, int argc, char **argv);
void srv_config_print(const struct srv_config *cfg, FILE *f);

/* ---- tables (tables.c) ----------------------------------------------------------------- */

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
	struct srv_table_learn *rt;       /* admission/eviction/sampling state (learnops.c);
	                                     NULL when the table uses none of them */
	struct srv_table_persist *ps;     /* persist.c: WAL/snapshot state; NULL when the
	                                     daemon has no data_dir. Set before the table is
	                                     published to any client, then never changes */
	struct srv_table *next;
};

struct srv_registry {
	struct srv_table *head;
	unsigned count;
	enum de_pages pages;
	int numa_node;                    /* resolved: an OS index or DE_NUMA_NONE */
	uint64_t segment_bytes, reserve_bytes;
	struct srv_learn_host *learn;     /* learnops.c; NULL: tables get no learning state */
};

void srv_registry_init(struct srv_registry *r, enum de_pages pages, int numa_node,
		       uint64_t segment_bytes, uint64_t reserve_bytes);
void srv_registry_destroy(struct srv_registry *r);

/* Check a table name from the wire: 1..63 bytes, NUL-terminated within DE_NAME_MAX,
 * printable. -EINVAL with a message. */
int srv_name_check(const char name[DE_NAME_MAX], char *msg, size_t msgcap);
/* Check and normalize a config from the wire (as libdeshm normalizes it). */
int srv_wire_config_normalize(struct de_wire_table_config *c, char *msg, size_t msgcap);
/*
 * Check and normalize a learning config from the wire (proto.h states every rule), with
 * its table config c (already normalized): reserved fields 0, modes known, fields a mode
 * does not use 0, ranges; the optimizer through de_optim_check. Fills the defaults of
 * "0 = default" fields, and c->nslots = de_optim_slots(kind) when c->nslots is 0;
 * c->nslots below what the optimizer needs is -EINVAL. Idempotent. 0 or -EINVAL + msg.
 */
int srv_learn_config_normalize(struct de_wire_learn_config *l, struct de_wire_table_config *c,
			       char *msg, size_t msgcap);
/* learn.optim (kind != NONE, checked) as struct de_optim_config. */
void srv_optim_from_wire(const struct de_wire_optim *w, struct de_optim_config *out /* out */);

/*
 * Find or create table `name` (name and cfg already checked). Same config: the existing
 * table. Another config: -EEXIST with msg naming the first field that differs. New:
 * creates its arena(s) and opens it; *created tells which. Control thread only.
 */
int srv_registry_open(struct srv_registry *r, const char *name,
		      const struct de_wire_table_config *cfg,
		      const struct de_wire_learn_config *learn, struct srv_table **out,
		      bool *created, char *msg, size_t msgcap);

/* String tables: remember the string of a key just created (thread-safe; the first
 * caller for a key stores it, later ones do nothing). 0 or a negative errno. */
int srv_table_keep_string(struct srv_table *t, uint64_t key, const void *s, uint32_t len);
/*
 * The string of a key: copies up to cap bytes into buf (not NUL-terminated) and sets
 * *len to the full length. -ENOENT: not known (or being stored right now); -ENOSPC: cap
 * too small (*len says how much is needed); -EINVAL: not a string table; -EBADMSG:
 * an offset that does not point into the arena (never expected).
 */
int srv_table_key_string(struct srv_table *t, uint64_t key, void *buf, size_t cap,
			 uint32_t *len /* out */);

/* ---- learning: admission, eviction, sampling, top-k (learnops.c) ------------------------ */

struct srv_learn_host;
struct srv_table_learn;
struct srv_worker;

/* The daemon's one evictor and the [memory]/[learn] settings. Control thread. */
int srv_learn_host_create(const struct srv_config *cfg, struct srv_learn_host **out);
/* Stop the evictor's thread and free it: after the workers stopped, before the registry's
 * tables are freed. NULL is fine. */
void srv_learn_host_destroy(struct srv_learn_host *h);
/* Give a new table its admission filter, disk tier and eviction (the last step of
 * creating it: after a success nothing may fail, the evictor holds the table). h may be
 * NULL (nothing to do). 0 or a negative errno with msg. Control thread. */
int srv_learn_table_attach(struct srv_learn_host *h, struct srv_table *t, char *msg,
			   size_t msgcap);
/* Samplers, admission filter, tier: after srv_learn_host_destroy. */
void srv_learn_table_free(struct srv_table *t);

/* Worker paths (keys in w->keys, statuses into w->status). step: the request's arg. */
int srv_learn_lookup_create(struct srv_worker *w, struct srv_table *t, uint32_t n, float *vals,
			    uint64_t step);
int srv_learn_update(struct srv_worker *w, struct srv_table *t, uint32_t n, const float *vals,
		     uint64_t step);
/* APPLY_GRADS before the optimizer: create (admitted) missing keys, restore tier rows,
 * keep strings; drops the gradients of keys not admitted by compacting w->keys and
 * w->gbuf. *n: in, the keys; out, those to step. *step: the row time to use. */
int srv_learn_grads_prepare(struct srv_worker *w, struct srv_table *t, uint32_t *n,
			    uint64_t *step, uint32_t *created);
/* SAMPLE, TOPK, KEY_STRINGS (descriptor checked by srv_check_sqe). */
void srv_learn_execute(struct srv_worker *w, struct srv_table *t, char *data,
		       uint64_t data_bytes, const struct de_sqe *e, struct de_cqe *q);
/* Admission and eviction counters into a STATS reply. */
void srv_learn_stats(struct srv_table *t, struct de_wire_stats *ws);
/* worker.c: keep the strings of the keys w->status says were created (string tables). */
void srv_keep_strings(struct srv_worker *w, struct srv_table *t, uint32_t n);

/* ---- clients and workers ----------------------------------------------------------------- */

struct srv_worker;

struct srv_client {
	/* control thread */
	unsigned id;
	int sock;                 /* -1 once closed */
	pid_t pid;
	uid_t uid;
	gid_t gid;
	char name[DE_NAME_MAX];
	bool hello_done;
	struct srv_client *next;
	/* shared with the worker (see the top of this file) */
	de_channel *ch;
	struct srv_worker *w;
	struct srv_table *tables[SRV_MAX_TABLES_PER_CLIENT];
	uint32_t ntables;         /* release by control, acquire by worker */
	int want_remove;          /* control -> worker (atomic) */
	int released;             /* worker -> control (atomic, release) */
	int broken;               /* worker: it broke its ring (written before released) */
	/* worker only */
	bool has_pending;         /* npending > 0 */
	unsigned npending;
	struct de_cqe pending[32]; /* completions the full CQ did not take yet, in order
	                             (at most one round: worker.c's BUDGET) */
};

struct srv_server;

struct srv_worker {
	unsigned idx;
	struct srv_server *srv;
	pthread_t thread;
	bool started;
	hwloc_cpuset_t pin;       /* a PU near the memory, or NULL */
	de_channel *ctl;          /* daemon side: in the worker's wait set */
	de_channel *ctl_kick;     /* client side of the same memfd: the control thread's */
	pthread_mutex_t mu;
	struct srv_client *mail[SRV_MAX_CLIENTS_PER_WORKER]; /* clients to add */
	unsigned nmail;
	int stop;                 /* atomic: drain and exit */
	unsigned nclients;        /* control thread's count (assigned, not yet freed) */
	/* worker only */
	struct srv_client *active[SRV_MAX_CLIENTS_PER_WORKER];
	unsigned nactive;
	uint64_t *keys;           /* max_batch fingerprints copied out of the data area */
	uint8_t *status;          /* max_batch */
	uint32_t *slen;           /* max_batch string lengths */
	uint64_t *soff;           /* max_batch string offsets into sbuf */
	char *sbuf;               /* string keys region copied out */
	size_t sbuf_cap;
	float *gbuf;              /* APPLY_GRADS: gradients copied out (grown on demand) */
	size_t gbuf_cap;          /* floats */
	/* persistence (persist.c): group commit of the round's SYNC writes */
	uint64_t sync_lsn;        /* largest LSN a SYNC write of this round appended; 0: none */
	bool sync_pending;        /* the descriptor just executed waits for sync_lsn */
};

struct srv_server {
	struct srv_config cfg;
	struct srv_registry reg;
	struct srv_worker *workers;
	unsigned nworkers;
	int release_fd;           /* eventfd: a worker released a client */
	hwloc_topology_t topo;    /* NULL when hwloc could not load one */
	struct srv_persist *persist; /* persist.c; always there once srv_persist_open ran */
};

int srv_workers_start(struct srv_server *s);
/* Ask every worker to drain its rings and exit, and join them. */
void srv_workers_stop(struct srv_server *s);
void srv_workers_free(struct srv_server *s);
/* Wake a worker to read its mailbox and flags. Control thread only. */
void srv_worker_kick(struct srv_worker *w);

/* ---- checks of untrusted bytes (pure: no daemon state read or written) ------------------
 * The daemon runs these on everything a client sends; tests/fuzz/ drives them directly. */

/* A control request, copied out of its packet. */
union srv_msg {
	struct de_msg_hdr h;
	struct de_msg_hello hello;
	struct de_msg_open open;
	struct de_msg_segments segments;
	struct de_msg_snapshot snapshot;
	struct de_msg_export exp;
	struct de_msg_import imp;
};

/*
 * Check one control packet of n bytes (control.c): trunc (MSG_TRUNC), size, magic, len,
 * a request type (HELLO, OPEN, SEGMENTS, BYE) with its exact length; then the order
 * (hello_done: this connection said HELLO already; HELLO must come first and only once);
 * then the version of any request but HELLO (a HELLO's version is checked after the
 * allow-list, in on_hello); then an OPEN's name (srv_name_check) and config
 * (srv_wire_config_normalize, then srv_learn_config_normalize, in place in
 * out->open.cfg and out->open.learn).
 * Always sets *out (out->h: the header, zeros when n < 16; the body once the framing and
 * order are good) and, on error, msg (the ERROR reply's text). Returns 0;
 * -EBADMSG: malformed (the daemon closes); -EPROTO: out of order or another version
 * (closes); -EINVAL: an OPEN with a bad name or config (error reply, stays open).
 */
int srv_check_msg(const void *buf, size_t n, bool trunc, bool hello_done, union srv_msg *out,
		  char *msg, size_t msgcap);

/*
 * Check a data-plane descriptor (worker.c) before anything reads the data area: op;
 * table < ntables; for STATS no flags and an 8-aligned output of at least
 * sizeof(struct de_wire_stats); else count <= max_batch (-E2BIG), only the flags the op
 * allows, keys_off 8-aligned, vals_off 4-aligned and vals_len == count * dim * 4
 * (LOOKUP, UPDATE, APPLY_GRADS), status (DE_SQE_STATUS: count bytes; APPLY_GRADS instead:
 * with DE_GRAD_LR status_off is a finite lr > 0 as double bits, without it 0), every
 * range inside a data area of data_bytes, and keys_len == 8 * count (int64 keys) or >= 4 * count (string
 * keys; their lengths go through srv_check_string_keys on the copied region).
 * dim and key_type: those of table e->table (unused when it is not < ntables).
 * 0 (a NOP always), -EINVAL or -E2BIG.
 */
int srv_check_sqe(const struct de_sqe *e, uint32_t ntables, uint32_t dim, uint32_t key_type,
		  uint32_t max_batch, uint64_t data_bytes);
/*
 * Check a string-key region of len bytes (a copy: count u32 lengths, then the strings
 * back to back): len >= 4 * count, each length <= DE_MAX_KEY_BYTES, the strings fill the
 * region exactly. Writes slen[0..count) and soff[0..count) (offset of each string in the
 * region). 0 or -EINVAL.
 */
int srv_check_string_keys(const void *region, uint64_t len, uint32_t count, uint32_t *slen,
			  uint64_t *soff);
/* srv_check_sqe's part for SAMPLE, TOPK and KEY_STRINGS (learnops.c; proto.h states the
 * rules). 0, -EINVAL or -E2BIG. */
int srv_check_learn_sqe(const struct de_sqe *e, uint32_t dim, uint32_t key_type,
			uint32_t max_batch, uint64_t data_bytes);
/* SAMPLE's argument block (a copy), against the descriptor: kind, unique, power,
 * num_sampled in 1..min(max_batch, DE_SAMPLE_MAX), reserved, and vals_len == 13 * ns +
 * 4 * count. 0, -EINVAL or -E2BIG. */
int srv_check_sample_args(const struct de_wire_sample_args *a, const struct de_sqe *e,
			  uint32_t max_batch);

/* ---- persistence (persist.c) -------------------------------------------------------------
 * One WAL per daemon in [persistence] data_dir, snapshots, manifest (uring/) and the table
 * catalog (persist.c states its format). The exit statuses srv_persist_open returns:
 * 0 started, 1 an I/O or resource failure, 3 damaged persistent state (a corrupt
 * catalog, manifest or snapshot: the message names the file). */
struct srv_persist;
struct srv_table_persist;
#define SRV_EXIT_CORRUPT 3

/* Create the persistence state (s->persist, also without a data_dir); with one: lock it,
 * read the catalog, create its tables in s->reg and recover them (manifest -> snapshots
 * -> WAL). Before the socket is bound and before detaching, so that damage is a non-zero
 * exit status of the command that started the daemon. */
int srv_persist_open(struct srv_server *s);
/* After detaching: open the WAL (at recovery's next LSN) and start the threads. 0 or 1. */
int srv_persist_start(struct srv_persist *p);
/* After the workers stopped: cancel and join control-plane jobs, checkpoint every dirty
 * table (clean shutdown), flush and close the WAL, stop the threads. NULL is fine. */
void srv_persist_stop(struct srv_persist *p);
/* Free everything (tables' persist state too): before srv_registry_destroy. */
void srv_persist_free(struct srv_persist *p);
/* OPEN, control thread, before the table is published: refuse durability async/sync
 * without data_dir (-EINVAL + msg); give a new table its id, catalog entry and first
 * (empty) snapshot. Idempotent for a table that has them. */
int srv_persist_table_open(struct srv_persist *p, struct srv_table *t, char *msg, size_t cap);
/* Worker, before a write (UPDATE, ERASE, APPLY_GRADS) executes: -EROFS when the table's
 * WAL failed. */
int srv_persist_write_check(struct srv_worker *w, struct srv_table *t);
/* Worker, after a write succeeded on w->keys[0..n): log it (WAL record with the keys'
 * full rows, or ERASE), mark the keys dirty. SYNC tables set w->sync_pending and
 * w->sync_lsn: the worker posts the completion only after srv_persist_sync_round. */
int srv_persist_log(struct srv_worker *w, struct srv_table *t, bool erase, uint32_t n);
/* Worker: one fdatasync for the round (group commit); on failure every completion
 * wait[i] marks gets the WAL's error instead of 0. Clears w->sync_lsn. */
void srv_persist_sync_round(struct srv_worker *w, struct de_cqe *q, const bool *wait,
			    unsigned n);
/* STATS: wal_lsn, durable_lsn, snapshots, snapshot_lsn, read_only. */
void srv_persist_stats(struct srv_persist *p, struct srv_table *t, struct de_wire_stats *ws);
/* SNAPSHOT, EXPORT, IMPORT (checked by srv_check_msg): start a job thread that streams
 * PROGRESS and ends with the OK reply or ERROR. Control thread. false: close c. */
bool srv_persist_request(struct srv_server *s, struct srv_client *c, const union srv_msg *m);
/* srv_check_msg's part for SNAPSHOT, EXPORT, IMPORT (pure): names, flags, pads, paths
 * (NUL-terminated, absolute, no "." or ".." component). 0 or -EINVAL + msg. */
int srv_check_persist_msg(union srv_msg *m, char *msg, size_t cap);

/* The control plane: runs until SIGTERM/SIGINT. Returns the exit status. */
int srv_control_run(struct srv_server *s, int listen_fd, int sig_fd);
int srv_listen(const char *path, int *out_fd);

/* mkdir -p path (persist.c; also the listener's socket directory and the disk tier):
 * each missing directory created with mode. 0 or -errno. */
int srv_mkdir_p(const char *path, mode_t mode);

#endif /* DE_SERVER_H */
