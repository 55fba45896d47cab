/*
 * persist_int.h — PRIVATE to the persistence files (persist*.c): the state they share
 * and the helpers one of them gives the others. The rest of the daemon sees persist.h
 * only.
 *
 * Files: persist.c (the state, per-table state, checkpoints, the failure rule, OPEN of
 * a table, stop/free), persist_catalog.c (the CATALOG file format), persist_write.c (the
 * workers' write path), persist_threads.c (group commit and periodic checkpoints),
 * persist_recover.c (startup: lock, catalog, recovery), persist_jobs.c (SNAPSHOT, EXPORT,
 * IMPORT job threads), persist_drop.c (DROP of a table).
 */
#ifndef DE_SRV_PERSIST_INT_H
#define DE_SRV_PERSIST_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "de_uring.h"
#include "persist.h"

struct srv_table_persist {
	uint32_t id;
	uint32_t mode;            /* enum de_wire_durability_mode */
	de_dirty *dirty;
	int need_full;            /* atomic: the dirty set lost keys (-ENOMEM): next is full */
	uint64_t snapshots;       /* atomic: checkpoints of this run */
	uint64_t snapshot_lsn;    /* atomic: the cut of the last one (recovered: the manifest's) */
	uint64_t snapshot_ns;     /* atomic: CLOCK_MONOTONIC of the last one of this run; 0 */
	pthread_mutex_t ckpt;     /* one checkpoint of this table at a time */
	int strings_fd;           /* string tables: strings-<id>.dks (persist_strings.c); -1 */
	pthread_mutex_t strings_mu;
};

struct srv_job; /* persist_jobs.c */

struct srv_persist {
	const struct srv_config *cfg;
	bool on;                  /* data_dir set */
	char dir[sizeof ((struct srv_config *)0)->data_dir];
	int lock_fd;
	de_wal *wal;
	int failed;               /* atomic: the WAL's error, 0 while healthy */
	int logged;               /* atomic: the read-only line was logged */
	pthread_mutex_t mu;       /* tables[], ntables, commit_ms, stop, jobs */
	pthread_cond_t cv;
	struct srv_table *tables[DE_MANIFEST_MAX_TABLES];
	unsigned ntables;
	uint32_t next_id;
	uint64_t next_lsn;        /* recovery's: the WAL starts there */
	struct srv_catalog_entry *cat; /* the catalog read at open, until recovery */
	uint32_t ncat;
	uint64_t cat_next_id;     /* the catalog's next_id (0: not recorded), until recovery */
	unsigned sweeping;        /* persist_checkpoint_dirty calls running (a DROP waits) */
	pthread_cond_t sweep_cv;  /* sweeping went to 0 */
	unsigned commit_ms;       /* min window_ms of the async tables; 0: none */
	bool stop;
	pthread_t committer, checkpointer;
	bool threads_on;
	struct srv_job *jobs;
	unsigned njobs;
	void (*checkpointed)(void *ctx, struct srv_table *t); /* srv_persist_set_checkpoint_hook */
	void *checkpointed_ctx;
};

/* ---- persist.c ---- */
/* The first failure makes the durable tables read-only; logged once. Returns the error
 * completions get (the WAL's own for -EROFS). */
int persist_note_failure(struct srv_persist *p, int err);
/* t has persistence state and durability async or sync. */
bool persist_durable(const struct srv_table *t);
int persist_tp_create(uint32_t id, uint32_t mode, struct srv_table_persist **out);
void persist_tp_free(struct srv_table_persist *ps);
/* Add t to p->tables (ids increasing); recompute the commit period. p->mu held. */
void persist_table_add_locked(struct srv_persist *p, struct srv_table *t);
/* One checkpoint of t (full, or incremental from its dirty set), with progress. */
int persist_checkpoint(struct srv_persist *p, struct srv_table *t, bool full, de_progress_fn cb,
		       void *ctx, struct de_snapshot_info *info);
/* libdeuring's log callback: one WARN line. */
void persist_wal_log(void *ctx, const char *line);

/* ---- persist_catalog.c ---- */
/* Read and check dir/CATALOG: 0 with *out (free it) and *count; -ENOENT (no catalog);
 * -EBADMSG / -EPROTO with *problem (static text); another negative errno. */
int persist_cat_read(const char *dir, struct srv_catalog_entry **out, uint32_t *count,
		     uint64_t *next_id /* out: 0 = not recorded */, const char **problem);
/* Replace dir/CATALOG with the entries of tables[0..n) (ids increasing; each has ps)
 * and next_id (above every id given so far). */
int persist_cat_write(const char *dir, struct srv_table *const *tables, unsigned n,
		      uint64_t next_id);

/* ---- persist_strings.c ---- */
/* A string table's strings file: load it into the table's string store, then append
 * every string kept from now on. 0 or a negative errno. */
int persist_strings_open(struct srv_persist *p, struct srv_table *t);
/* fdatasync the strings file (checkpoints). */
void persist_strings_sync(struct srv_table_persist *ps);
/* ---- persist_threads.c ---- */
/* Checkpoint every table with dirty keys (or one that needs a full snapshot). */
void persist_checkpoint_dirty(struct srv_persist *p, const char *why);

/* ---- persist_drop.c: srv_persist_table_drop (persist.h) ---- */

/* ---- persist_jobs.c ---- */
/* Join finished jobs (all: every job, waiting). Not under p->mu. */
void persist_jobs_reap(struct srv_persist *p, bool all);
/* Jobs not ended that may work on t (one on t, or a snapshot of every table). */
unsigned persist_jobs_on(struct srv_persist *p, const struct srv_table *t);

#endif /* DE_SRV_PERSIST_INT_H */
