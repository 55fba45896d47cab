/*
 * persist.h — PRIVATE to dynembd: persistence (persist*.c), an operations layer beside
 * learning: above the registry and the validators, below the worker and the control
 * plane; it never calls the learning layer.
 *
 * One WAL per daemon in [persistence] data_dir, snapshots, manifest (uring/) and the
 * table catalog (persist_catalog.c states its format). The worker's write path takes a
 * batch description (batch.h) and RETURNS the LSN a SYNC batch must wait for; the worker
 * owns the round and asks for one sync of its largest LSN (group commit).
 *
 * Startup, run by the control plane (control.c, srv_control_recover):
 *   srv_persist_open (lock, read the catalog) -> for each srv_persist_catalog entry:
 *   registry open -> learning attach -> srv_persist_adopt -> srv_persist_recover
 *   (manifest -> snapshots -> WAL) -> (after detaching) srv_persist_start.
 * Exit statuses of srv_persist_open / srv_persist_recover: 0 fine, 1 an I/O or resource
 * failure, SRV_EXIT_CORRUPT damaged persistent state (the message names the file).
 */
#ifndef DE_SRV_PERSIST_H
#define DE_SRV_PERSIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "batch.h"
#include "config.h"
#include "util.h"
#include "proto.h"
#include "tables.h"
#include "validate.h"

#define SRV_EXIT_CORRUPT 3

struct srv_persist;
struct de_wal_stats; /* de_uring.h */

/* One table of the catalog (its on-disk entry: persist_catalog.c). */
struct srv_catalog_entry {
	uint32_t table_id;
	uint32_t owner;           /* the creator's uid (a version 1 catalog: the daemon's euid) */
	char name[DE_NAME_MAX];
	struct de_wire_table_config cfg;
	struct de_wire_learn_config learn;
	uint64_t reserved1;
};

/* Create the persistence state (*out; also without a data_dir; NULL only when out of
 * memory, status 1); with a data_dir: create it, lock it, read its catalog. Before the
 * socket is bound and before detaching, so that damage is a non-zero exit status of the
 * command that started the daemon. Returns the exit status (0, 1, SRV_EXIT_CORRUPT). */
int srv_persist_open(const struct srv_config *cfg, struct srv_persist **out);
/* The catalog srv_persist_open read (entries in increasing table_id), until
 * srv_persist_recover: *entries and the count. */
unsigned srv_persist_catalog(const struct srv_persist *p,
			     const struct srv_catalog_entry **entries /* out */);
/* Give t, just opened from catalog entry e, its persistence state (id, dirty set; its
 * first checkpoint will be full). 0 or -ENOMEM. */
int srv_persist_adopt(struct srv_persist *p, struct srv_table *t,
		      const struct srv_catalog_entry *e);
/* Recover every adopted table (manifest -> snapshots -> WAL replay) and drop the
 * catalog copy. Returns the exit status (0, 1, SRV_EXIT_CORRUPT). */
int srv_persist_recover(struct srv_persist *p);
/* Called after each successful checkpoint of a table (with its checkpoint lock held):
 * set before srv_persist_start, by the layer above (the admission sketch is saved). */
void srv_persist_set_checkpoint_hook(struct srv_persist *p,
				     void (*fn)(void *ctx, struct srv_table *t), void *ctx);
/* After detaching: open the WAL (at recovery's next LSN) and start the threads. 0 or 1. */
int srv_persist_start(struct srv_persist *p);
/* After the workers stopped: cancel and join control-plane jobs, checkpoint every dirty
 * table (clean shutdown), flush and close the WAL, stop the threads. NULL is fine. */
void srv_persist_stop(struct srv_persist *p);
/* Free everything (tables' persist state too, t->ps = NULL): before the registry's
 * tables are freed. NULL is fine. */
void srv_persist_free(struct srv_persist *p);

/* OPEN, control thread, before the table is published: refuse durability async/sync
 * without data_dir (-EINVAL + msg); give a new table its id, catalog entry and first
 * (empty) snapshot. Idempotent for a table that has them. */
int srv_persist_table_open(struct srv_persist *p, struct srv_table *t, char *msg, size_t cap);
/* Before a new table called name with durability mode (DE_WDURABLE_*) is created: would
 * srv_persist_table_open refuse it for its config (durability without data_dir:
 * -EINVAL; the most tables a data_dir persists: -ENOSPC)? 0, or the error with msg. */
int srv_persist_table_admit(struct srv_persist *p, const char *name, uint32_t mode, char *msg,
			    size_t cap);

/* DROP, control thread, once no connection has t open: the catalog forgets t durably
 * (its id is never given again), then its manifest entry, snapshots and strings file go
 * and t->ps is freed (NULL). 0 (also for a table without persistence), -EBUSY while a
 * job that may use t runs (one on t, or a snapshot of every table), or the catalog
 * write's error (then nothing changed); msg says which. */
int srv_persist_table_drop(struct srv_persist *p, struct srv_table *t, char *msg, size_t cap);
/* The -EBUSY of srv_persist_table_drop alone (a job that may use t runs), without
 * changing anything: the DROP asks it before its other steps (jobs start only on the
 * control thread, so the answer holds until the drop). 0 or -EBUSY with msg. */
int srv_persist_table_drop_check(struct srv_persist *p, const struct srv_table *t, char *msg,
				 size_t cap);
/* Forced DROP, control thread, before srv_persist_table_drop: cancel every job that may
 * use t (their progress callback says stop: they end -ECANCELED) and join them, within
 * timeout_ms (-ETIMEDOUT with msg). No job on t can start meanwhile (the control thread
 * starts them). 0 also when there are none. */
int srv_persist_table_jobs_cancel(struct srv_persist *p, const struct srv_table *t,
				  unsigned timeout_ms, char *msg, size_t cap);

/* Worker, before a write (UPDATE, ERASE, APPLY_GRADS) on t executes: -EROFS when the
 * table's WAL failed. */
int srv_persist_write_check(struct srv_persist *p, const struct srv_table *t);
/* Worker, after a write on b->keys[0..b->n) succeeded: log it (WAL record with the keys'
 * full rows, or ERASE), mark the keys dirty. *sync_lsn: the LSN the batch's completion
 * must wait for (SYNC tables), else 0. 0 or a negative errno (the WAL failed). */
int srv_persist_log(struct srv_persist *p, const struct srv_batch *b, bool erase,
		    uint64_t *sync_lsn /* out */);
/* The evictor (any thread; through learnops' srv_learn_log): keys a pass erased from t
 * are logged (ERASE record, dirty keys; NONE tables: dirty keys); SYNC tables: flushed
 * before it returns. */
void srv_persist_evicted(struct srv_persist *p, struct srv_table *t, const uint64_t *keys,
			 size_t n);
/* Make every record appended so far durable: 0 or the WAL's error. */
int srv_persist_flush(struct srv_persist *p);
/* Worker: make the WAL durable up to lsn (one fdatasync for a round: group commit).
 * 0, or the WAL's error: then no completion that waited for lsn may be acknowledged. */
int srv_persist_sync(struct srv_persist *p, uint64_t lsn);
/* Worker, after srv_persist_log of a write on table t and before posting its completion:
 * an ASYNC table's acknowledgement is held while a WAL flush that does not carry the
 * record is in flight, until it lands (de_wal_ack_wait: back-pressure that makes the
 * table's window_ms a bound on what a process crash loses). 0 at once for other
 * tables; else 0, or the WAL's error (the write must not be acknowledged then). */
int srv_persist_ack_hold(struct srv_persist *p, const struct srv_table *t);
/* STATS: wal_lsn, durable_lsn, snapshots, snapshot_lsn, read_only. */
void srv_persist_stats(struct srv_persist *p, struct srv_table *t, struct de_wire_stats *ws);
/* STATUS (any thread): the daemon's WAL. 1: no WAL (no data_dir, or not started);
 * 0: healthy; a negative errno: it failed (why: its reason). *last_lsn: the last LSN
 * given, *durable_lsn: every record up to it is on disk. */
int srv_persist_wal_state(struct srv_persist *p, uint64_t *last_lsn, uint64_t *durable_lsn,
			  char *why, size_t cap);
/* /metrics: the WAL's counters (de_wal_stats); -ENOENT without a WAL. Any thread. */
int srv_persist_wal_stats(struct srv_persist *p, struct de_wal_stats *out);
/* /metrics: CLOCK_MONOTONIC ns of t's last checkpoint in this run (0: none yet). Any
 * thread, under the registry's lock (tables.h: t's ps does not go meanwhile). */
uint64_t srv_persist_snapshot_mono_ns(const struct srv_table *t);

/* SNAPSHOT, EXPORT, IMPORT (checked by srv_check_msg; the caller checked the client's
 * right on the table) from connection `client` of uid/gid on socket sock: resolve the
 * table in reg, start a job thread that streams PROGRESS and ends with the OK reply or
 * ERROR (on a dup of sock); a refusal is an ERROR reply at once. The export and import
 * files are created and opened with the client's uid and gid (a root daemon; any other
 * daemon can only act as itself). Control thread. */
/* srv_fs_as_daemon (util.h) for a job thread that acted as its client, logging a failure. */
void srv_persist_fs_back(struct srv_fs_ids *ids);
/* May uid (gid) name path for EXPORT / IMPORT / SERVE_LOAD? path (checked: absolute, no
 * . or ..) must lie in [persistence] export_dir: its directory, resolved as the client,
 * is export_dir or below it (the file may not exist yet). 0, or -EPERM / an errno with
 * msg. Any thread. */
int srv_persist_path_allowed(const struct srv_config *cfg, uid_t uid, gid_t gid,
			     const char *path, char *msg, size_t cap);
void srv_persist_request(struct srv_persist *p, const struct srv_registry *reg,
			 unsigned client, uid_t uid, gid_t gid, int sock, const union srv_msg *m);

#endif /* DE_SRV_PERSIST_H */
