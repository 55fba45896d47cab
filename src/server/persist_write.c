/*
 * persist_write.c — the workers' write path of persistence (persist.h): the check before
 * a write, the WAL record after it, the round's sync, STATS and what /metrics reads
 * (the WAL's counters, a table's last snapshot time).
 *
 * Write path (worker.c calls these). Before a write on an ASYNC/SYNC table:
 * srv_persist_write_check (-EROFS once the WAL failed). After it succeeded:
 * srv_persist_log appends a PUT record that carries each key's whole row read back from
 * the table under its row lock (values, optimizer slots, freq, last_step, aux), or an
 * ERASE record, and marks the keys dirty (incremental snapshots). NONE tables only mark
 * dirty. SYNC: the worker holds the round's completions and calls
 * srv_persist_sync, one de_wal_sync for the largest LSN (group commit; several
 * workers share the WAL, whose flushes are serialized inside libdeuring, so concurrent
 * syncs merge), then posts them: nothing is acknowledged before its record is on disk.
 * ASYNC: acknowledged without waiting for durability; the committer thread flushes the
 * WAL every min(window_ms) of the async tables, on a fixed cadence. While a flush that
 * does not carry the record is in flight, srv_persist_ack_hold holds the acknowledgement
 * until it lands (back-pressure), so an acknowledged update reaches the kernel within
 * the window plus one buffer write (a process crash loses no older one) however late an
 * fdatasync is; on power loss add that fdatasync's latency (de_uring.h,
 * de_wal_ack_wait).
 * LOOKUP with create is NOT logged: a created row holds the table's deterministic
 * initializer value (de_learn.h), so replay loses nothing a user wrote; its freq,
 * last_step and the admission sketch are not restored (a full snapshot has them).
 *
 * Eviction (srv_persist_evicted, called by the evictor's passes through learnops'
 * srv_learn_log once persistence started): an ERASE record of the evicted keys (NONE
 * tables: dirty only), appended after the rows reached the disk tier; flushed at once
 * for SYNC tables, by the committer for ASYNC ones. While it is not durable, recovery
 * finds the row in the table (and drops the tier's copy): never a lost row. srv_persist_flush: the tier's compaction makes the log durable first.
 *
 * Takes a batch description (batch.h), never the worker: srv_persist_log RETURNS the LSN
 * a SYNC batch must wait for, and the worker (which owns its round and its completions)
 * calls srv_persist_sync once for the largest. Never: block a worker on anything but
 * that sync and the ASYNC hold (at most one flush); log a key 0.
 */
#include "persist_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int srv_persist_write_check(struct srv_persist *p, const struct srv_table *t)
{
	if (!persist_durable(t))
		return 0;
	return __atomic_load_n(&p->failed, __ATOMIC_ACQUIRE) ? -EROFS : 0;
}

int srv_persist_log(struct srv_persist *p, const struct srv_batch *b, bool erase,
		    uint64_t *sync_lsn)
{
	struct srv_table *t = b->t;
	struct srv_table_persist *ps = t->ps;
	uint32_t n = b->n;
	*sync_lsn = 0;
	if (!ps || !n)
		return 0;
	if (ps->mode == DE_WDURABLE_NONE) {
		if (de_dirty_add(ps->dirty, b->keys, n))
			__atomic_store_n(&ps->need_full, 1, __ATOMIC_RELEASE); /* nothing lost */
		return 0;
	}
	/* key 0 is "no feature": never written, never logged */
	const uint64_t *keys = b->keys;
	uint64_t *nz = NULL;
	size_t m = n;
	for (uint32_t i = 0; i < n; i++)
		if (!b->keys[i]) {
			if (!(nz = malloc((size_t)n * sizeof *nz)))
				return -ENOMEM;
			m = 0;
			for (uint32_t k = 0; k < n; k++)
				if (b->keys[k])
					nz[m++] = b->keys[k];
			keys = nz;
			break;
		}
	uint32_t rf = (uint32_t)de_table_row_floats(t->t);
	size_t chunk = de_wal_max_keys(p->wal, erase ? 1 : rf);
	int err = chunk ? 0 : -EMSGSIZE;
	uint64_t lsn = 0;
	for (size_t at = 0; !err && at < m; at += chunk) {
		struct de_wal_batch wb = { .table_id = ps->id,
					   .type = erase ? DE_WAL_ERASE : DE_WAL_PUT,
					   .keys = keys + at, .n = m - at < chunk ? m - at : chunk,
					   .table = erase ? NULL : t->t, .dirty = ps->dirty };
		err = de_wal_append(p->wal, &wb, &lsn);
	}
	free(nz);
	if (err)
		return persist_note_failure(p, err);
	if (ps->mode == DE_WDURABLE_SYNC)
		*sync_lsn = lsn;
	return 0;
}

void srv_persist_evicted(struct srv_persist *p, struct srv_table *t, const uint64_t *keys,
			 size_t n)
{
	struct srv_table_persist *ps = t->ps;
	de_wal *wal = p ? __atomic_load_n(&p->wal, __ATOMIC_ACQUIRE) : NULL;
	if (!ps || !n)
		return;
	if (ps->mode == DE_WDURABLE_NONE || !wal) {
		if (de_dirty_add(ps->dirty, keys, n))
			__atomic_store_n(&ps->need_full, 1, __ATOMIC_RELEASE);
		return;
	}
	if (__atomic_load_n(&p->failed, __ATOMIC_ACQUIRE))
		return; /* read-only: nothing more reaches the log */
	size_t chunk = de_wal_max_keys(wal, 1);
	int err = chunk ? 0 : -EMSGSIZE;
	for (size_t at = 0; !err && at < n; at += chunk) {
		struct de_wal_batch wb = { .table_id = ps->id, .type = DE_WAL_ERASE,
					   .keys = keys + at, .n = n - at < chunk ? n - at : chunk,
					   .dirty = ps->dirty };
		err = de_wal_append(wal, &wb, NULL);
	}
	/* sync tables: durable before the pass ends (one fdatasync per call, up to 64 keys),
	 * so a crash never brings back a row the budget dropped; async: the committer's */
	if (!err && ps->mode == DE_WDURABLE_SYNC)
		err = de_wal_flush(wal);
	if (err)
		persist_note_failure(p, err);
}

int srv_persist_flush(struct srv_persist *p)
{
	de_wal *wal = p ? __atomic_load_n(&p->wal, __ATOMIC_ACQUIRE) : NULL;
	if (!wal)
		return 0;
	int err = de_wal_flush(wal);
	return err ? persist_note_failure(p, err) : 0;
}

int srv_persist_sync(struct srv_persist *p, uint64_t lsn)
{
	if (!lsn || !p || !p->wal)
		return 0;
	int err = de_wal_sync(p->wal, lsn);
	return err ? persist_note_failure(p, err) : 0;
}

int srv_persist_ack_hold(struct srv_persist *p, const struct srv_table *t)
{
	if (!p || !p->wal || !t->ps || t->ps->mode != DE_WDURABLE_ASYNC)
		return 0;
	int err = de_wal_ack_wait(p->wal);
	return err ? persist_note_failure(p, err) : 0;
}

int srv_persist_wal_state(struct srv_persist *p, uint64_t *last_lsn, uint64_t *durable_lsn,
			  char *why, size_t cap)
{
	*last_lsn = *durable_lsn = 0;
	if (cap)
		why[0] = 0;
	if (!p || !p->wal)
		return 1;
	*last_lsn = de_wal_next_lsn(p->wal) - 1;
	*durable_lsn = de_wal_durable_lsn(p->wal);
	int err = __atomic_load_n(&p->failed, __ATOMIC_ACQUIRE);
	if (!err)
		return 0;
	if (de_wal_failed(p->wal, why, cap) == 0 && cap)
		snprintf(why, cap, "%s", strerror(err < 0 ? -err : err));
	return err < 0 ? err : -err;
}

void srv_persist_stats(struct srv_persist *p, struct srv_table *t, struct de_wire_stats *ws)
{
	struct srv_table_persist *ps = t->ps;
	if (!p || !ps)
		return;
	if (ps->mode != DE_WDURABLE_NONE && p->wal) {
		ws->wal_lsn = de_wal_next_lsn(p->wal) - 1;
		ws->durable_lsn = de_wal_durable_lsn(p->wal);
		ws->read_only = __atomic_load_n(&p->failed, __ATOMIC_ACQUIRE) != 0;
	}
	ws->snapshots = __atomic_load_n(&ps->snapshots, __ATOMIC_RELAXED);
	ws->snapshot_lsn = __atomic_load_n(&ps->snapshot_lsn, __ATOMIC_RELAXED);
}

int srv_persist_wal_stats(struct srv_persist *p, struct de_wal_stats *out)
{
	if (!p || !p->wal)
		return -ENOENT;
	return de_wal_stats(p->wal, out);
}

uint64_t srv_persist_snapshot_mono_ns(const struct srv_table *t)
{
	const struct srv_table_persist *ps = t->ps;
	return ps ? __atomic_load_n(&ps->snapshot_ns, __ATOMIC_RELAXED) : 0;
}
