/*
 * persist.c — dynembd's persistence (persist.h): durability per table (none / async /
 * sync) on top of libdeuring (uring/de_uring.h: one WAL per daemon, dirty sets,
 * snapshots, manifest, recovery). This file holds the state every persistence file
 * shares (persist_int.h), each table's persistence state, checkpoints, the failure rule,
 * a new table's OPEN, and the stop and free of it all.
 *
 * Owns: struct srv_persist (the WAL, the data_dir lock, the catalog, the list of
 * persisted tables, the committer and checkpointer threads, job threads) and every
 * table's struct srv_table_persist (id, dirty set, counters).
 *
 * Never: retries a failed fsync or write. The first failure (append, sync, flush) makes
 * every ASYNC/SYNC table read-only for good (one log line; stats read_only = 1); the
 * completions whose records were not durable get the WAL's error (-EIO, -ENOSPC), later
 * writes -EROFS. Reads go on. NONE tables keep taking writes (their snapshots do not
 * need the WAL).
 *
 * A new table: catalog entry (id, name, wire configs), then a full snapshot of the empty
 * table, which puts it into the manifest with wal_lsn = the WAL's next LSN, so WAL
 * garbage collection (which keeps only what the manifest's tables need) can never drop
 * its records; only then OPEN_OK.
 *
 * Callers: the control plane (control.c, main.c) and the worker (persist_write.c). Never:
 * call the learning layer, or read a worker's or a client's state.
 */
#include "persist_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

void persist_wal_log(void *ctx, const char *line)
{
	(void)ctx;
	srv_log(SRV_LOG_WARN, "persistence: %s", line);
}

/* The first failure makes the durable tables read-only; logged once. */
int persist_note_failure(struct srv_persist *p, int err)
{
	int expect = 0;
	if (err == -EROFS && p->wal) { /* the WAL failed earlier: fetch its own error */
		int e = de_wal_failed(p->wal, NULL, 0);
		if (e)
			err = e;
	}
	__atomic_compare_exchange_n(&p->failed, &expect, err, false, __ATOMIC_ACQ_REL,
				    __ATOMIC_ACQUIRE);
	if (!__atomic_exchange_n(&p->logged, 1, __ATOMIC_ACQ_REL)) {
		char why[200] = "";
		if (p->wal)
			de_wal_failed(p->wal, why, sizeof why);
		srv_logf(SRV_LOG_ERROR, SRV_KV(SRV_F_PATH(p->dir), SRV_F_ERRNO(err)),
			"persistence: the WAL in %s failed (%s%s%s): every async/sync table is "
			"read-only from now on (writes complete with -EROFS; never retried; restart "
			"the daemon to recover)", p->dir, strerror(-err), why[0] ? ": " : "", why);
	}
	return err;
}

int persist_tp_create(uint32_t id, uint32_t mode, struct srv_table_persist **out)
{
	struct srv_table_persist *ps = calloc(1, sizeof *ps);
	if (!ps)
		return -ENOMEM;
	int err = de_dirty_create(&ps->dirty);
	if (err) {
		free(ps);
		return err;
	}
	ps->id = id;
	ps->mode = mode;
	ps->strings_fd = -1;
	pthread_mutex_init(&ps->ckpt, NULL);
	pthread_mutex_init(&ps->strings_mu, NULL);
	*out = ps;
	return 0;
}

void persist_tp_free(struct srv_table_persist *ps)
{
	if (!ps)
		return;
	de_dirty_destroy(ps->dirty);
	pthread_mutex_destroy(&ps->ckpt);
	if (ps->strings_fd >= 0)
		close(ps->strings_fd);
	pthread_mutex_destroy(&ps->strings_mu);
	free(ps);
}

bool persist_durable(const struct srv_table *t)
{
	return t->ps && t->ps->mode != DE_WDURABLE_NONE;
}

void persist_table_add_locked(struct srv_persist *p, struct srv_table *t)
{
	unsigned at = p->ntables;
	while (at && p->tables[at - 1]->ps->id > t->ps->id)
		at--;
	memmove(&p->tables[at + 1], &p->tables[at], (p->ntables - at) * sizeof p->tables[0]);
	p->tables[at] = t;
	p->ntables++;
	if (t->ps->mode == DE_WDURABLE_ASYNC) {
		unsigned ms = t->learn.durability.window_ms;
		if (!p->commit_ms || ms < p->commit_ms)
			p->commit_ms = ms;
		pthread_cond_broadcast(&p->cv);
	}
}

int persist_checkpoint(struct srv_persist *p, struct srv_table *t, bool full, de_progress_fn cb,
		       void *ctx, struct de_snapshot_info *info)
{
	struct srv_table_persist *ps = t->ps;
	struct de_snapshot_info local;
	if (!info)
		info = &local;
	pthread_mutex_lock(&ps->ckpt);
	persist_strings_sync(ps);
	bool f = full || __atomic_exchange_n(&ps->need_full, 0, __ATOMIC_ACQ_REL);
	/* NONE tables have no records: they use the WAL only for its cut (which lets gc
	 * drop old segments), and not at all once it failed */
	de_wal *w = p->wal;
	if (ps->mode == DE_WDURABLE_NONE && __atomic_load_n(&p->failed, __ATOMIC_ACQUIRE))
		w = NULL;
	int err = de_persist_checkpoint(p->dir, w, ps->dirty, t->t, ps->id,
					f ? DE_CHECKPOINT_FULL : 0, cb, ctx, info);
	if (!err) {
		__atomic_add_fetch(&ps->snapshots, 1, __ATOMIC_RELAXED);
		__atomic_store_n(&ps->snapshot_lsn, info->start_lsn, __ATOMIC_RELAXED);
		__atomic_store_n(&ps->snapshot_ns, srv_mono_ns(), __ATOMIC_RELAXED);
		if (p->checkpointed) /* the learning state saved with it (admission sketch) */
			p->checkpointed(p->checkpointed_ctx, t);
	} else if (f) {
		__atomic_store_n(&ps->need_full, 1, __ATOMIC_RELEASE);
	}
	if (err && w && de_wal_failed(w, NULL, 0))
		persist_note_failure(p, de_wal_failed(w, NULL, 0));
	pthread_mutex_unlock(&ps->ckpt);
	return err;
}

void srv_persist_set_checkpoint_hook(struct srv_persist *p,
				     void (*fn)(void *ctx, struct srv_table *t), void *ctx)
{
	if (!p)
		return;
	p->checkpointed = fn;
	p->checkpointed_ctx = ctx;
}

static int table_admit(const struct srv_persist *p, const char *name, uint32_t mode,
		       char *msg, size_t cap)
{
	if (!p || !p->on) {
		if (mode != DE_WDURABLE_NONE) {
			snprintf(msg, cap, "table '%s': durability %s needs the daemon's [persistence] "
				 "data_dir (dynembd --data-dir DIR)", name,
				 mode == DE_WDURABLE_SYNC ? "sync" : "async");
			return -EINVAL;
		}
		return 0;
	}
	if (p->ntables >= DE_MANIFEST_MAX_TABLES) { /* p->mu held, or the control thread */
		snprintf(msg, cap, "table '%s': a daemon with a data_dir persists at most %u "
			 "tables", name, DE_MANIFEST_MAX_TABLES);
		return -ENOSPC;
	}
	return 0;
}

int srv_persist_table_admit(struct srv_persist *p, const char *name, uint32_t mode, char *msg,
			    size_t cap)
{
	if (p && p->on)
		pthread_mutex_lock(&p->mu);
	int err = table_admit(p, name, mode, msg, cap);
	if (p && p->on)
		pthread_mutex_unlock(&p->mu);
	return err;
}

int srv_persist_table_open(struct srv_persist *p, struct srv_table *t, char *msg, size_t cap)
{
	uint32_t mode = t->learn.durability.mode;
	if (!p || !p->on)
		return table_admit(p, t->name, mode, msg, cap);
	if (t->ps)
		return 0;
	pthread_mutex_lock(&p->mu);
	int err = table_admit(p, t->name, mode, msg, cap);
	if (err)
		goto out;
	struct srv_table_persist *ps;
	if ((err = persist_tp_create(p->next_id, mode, &ps))) {
		snprintf(msg, cap, "table '%s': %s", t->name, strerror(-err));
		goto out;
	}
	t->ps = ps;
	struct srv_table *all[DE_MANIFEST_MAX_TABLES];
	memcpy(all, p->tables, p->ntables * sizeof all[0]);
	all[p->ntables] = t; /* the new id is the largest */
	err = persist_cat_write(p->dir, all, p->ntables + 1, (uint64_t)p->next_id + 1);
	if (!err)
		err = persist_checkpoint(p, t, true, NULL, NULL, NULL);
	if (!err)
		err = persist_strings_open(p, t);
	if (err) {
		snprintf(msg, cap, "table '%s': cannot persist it in %s: %s", t->name, p->dir,
			 strerror(-err));
		srv_logf(SRV_LOG_ERROR, SRV_KV(SRV_F_TABLE(t->name), SRV_F_PATH(p->dir),
					      SRV_F_ERRNO(err)), "persistence: %s", msg);
		t->ps = NULL;
		persist_tp_free(ps);
		goto out;
	}
	p->next_id++;
	persist_table_add_locked(p, t);
	const char *dur = mode == DE_WDURABLE_SYNC ? "sync" : mode == DE_WDURABLE_ASYNC ? "async"
											: "none";
	srv_logf(SRV_LOG_INFO, SRV_KV(SRV_F_TABLE(t->name), SRV_F_UINT("table_id", ps->id),
				      SRV_F_STR("durability", dur)),
		 "persistence: table '%s' is id %u, durability %s", t->name, ps->id, dur);
out:
	pthread_mutex_unlock(&p->mu);
	return err;
}

void srv_persist_stop(struct srv_persist *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	p->stop = true;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	persist_jobs_reap(p, true);
	if (p->threads_on) {
		pthread_join(p->committer, NULL);
		if (p->cfg->snapshot_interval_s)
			pthread_join(p->checkpointer, NULL);
		p->threads_on = false;
	}
	if (p->wal) {
		persist_checkpoint_dirty(p, "shutdown");
		int err = de_wal_close(p->wal);
		p->wal = NULL;
		if (err && !p->failed)
			srv_logf(SRV_LOG_ERROR, SRV_KV(SRV_F_PATH(p->dir), SRV_F_ERRNO(err)),
				 "persistence: closing the WAL: %s", strerror(-err));
	}
}

void srv_persist_free(struct srv_persist *p)
{
	if (!p)
		return;
	srv_persist_stop(p);
	for (unsigned i = 0; i < p->ntables; i++) {
		persist_tp_free(p->tables[i]->ps);
		p->tables[i]->ps = NULL;
	}
	free(p->cat);
	if (p->lock_fd >= 0)
		close(p->lock_fd);
	pthread_cond_destroy(&p->cv);
	pthread_cond_destroy(&p->sweep_cv);
	pthread_mutex_destroy(&p->mu);
	free(p);
}
