/*
 * persist_threads.c — the background threads of persistence: the committer (group
 * commit of ASYNC tables: one WAL flush every min(window_ms) of them on a fixed
 * cadence; with the workers' acknowledgement hold that window bounds the loss at a
 * process crash, persist.h) and the checkpointer
 * ([persistence] snapshot_interval_s: every dirty table gets a checkpoint), and
 * srv_persist_start, which opens the WAL and starts both after the daemon detached
 * (io_uring buffers and threads do not survive fork).
 *
 * Both sleep on p->cv under p->mu and end when p->stop is set (srv_persist_stop joins
 * them). Never: hold p->mu across I/O.
 */
#include "persist_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

static void deadline_in(struct timespec *ts, uint64_t ns)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	uint64_t t = (uint64_t)ts->tv_nsec + ns;
	ts->tv_sec += (time_t)(t / 1000000000ull);
	ts->tv_nsec = (long)(t % 1000000000ull);
}

/* Flushes on a fixed cadence (de_wal_next_tick): a tick every commit_ms of the clock,
 * the next at once when a flush overran its tick. With the workers' de_wal_ack_wait
 * (srv_persist_ack_hold) this makes commit_ms a bound: persist.h. */
static void *committer_main(void *arg)
{
	struct srv_persist *p = arg;
	struct timespec tick;
	clock_gettime(CLOCK_MONOTONIC, &tick);
	pthread_mutex_lock(&p->mu);
	while (!p->stop) {
		if (!p->commit_ms) {
			pthread_cond_wait(&p->cv, &p->mu);
			clock_gettime(CLOCK_MONOTONIC, &tick);
			continue;
		}
		unsigned ms = p->commit_ms;
		de_wal_next_tick(&tick, ms);
		int r = 0;
		while (!p->stop && p->commit_ms == ms && r != ETIMEDOUT)
			r = pthread_cond_timedwait(&p->cv, &p->mu, &tick);
		if (p->stop)
			break;
		if (r != ETIMEDOUT) { /* a table changed the period: the cadence restarts now */
			clock_gettime(CLOCK_MONOTONIC, &tick);
			continue;
		}
		pthread_mutex_unlock(&p->mu);
		if (!__atomic_load_n(&p->failed, __ATOMIC_ACQUIRE) &&
		    de_wal_durable_lsn(p->wal) + 1 < de_wal_next_lsn(p->wal)) {
			int err = de_wal_flush(p->wal);
			if (err)
				persist_note_failure(p, err);
		}
		pthread_mutex_lock(&p->mu);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

void persist_checkpoint_dirty(struct srv_persist *p, const char *why)
{
	struct srv_table *ts[DE_MANIFEST_MAX_TABLES];
	pthread_mutex_lock(&p->mu);
	unsigned n = p->ntables;
	memcpy(ts, p->tables, n * sizeof ts[0]);
	p->sweeping++; /* a DROP waits until this sweep no longer holds its table */
	pthread_mutex_unlock(&p->mu);
	for (unsigned i = 0; i < n; i++) {
		struct srv_table_persist *ps = ts[i]->ps;
		if (!de_dirty_count(ps->dirty) && !__atomic_load_n(&ps->need_full, __ATOMIC_ACQUIRE))
			continue;
		if (ps->mode != DE_WDURABLE_NONE && __atomic_load_n(&p->failed, __ATOMIC_ACQUIRE))
			continue;
		struct de_snapshot_info info;
		int err = persist_checkpoint(p, ts[i], false, NULL, NULL, &info);
		if (err)
			srv_logf(SRV_LOG_WARN, SRV_KV(SRV_F_TABLE(ts[i]->name), SRV_F_STR("why", why),
						      SRV_F_ERRNO(err)),
				 "persistence: %s checkpoint of table '%s' failed: %s", why,
				 ts[i]->name, strerror(-err));
		else
			srv_logf(SRV_LOG_DEBUG, SRV_KV(SRV_F_TABLE(ts[i]->name), SRV_F_STR("why", why),
						       SRV_F_UINT("records", info.records),
						       SRV_F_UINT("lsn", info.start_lsn)),
				 "persistence: %s checkpoint of '%s': %" PRIu64 " records, lsn %" PRIu64,
				 why, ts[i]->name, info.records, info.start_lsn);
	}
	pthread_mutex_lock(&p->mu);
	if (!--p->sweeping)
		pthread_cond_broadcast(&p->sweep_cv);
	pthread_mutex_unlock(&p->mu);
}

static void *checkpointer_main(void *arg)
{
	struct srv_persist *p = arg;
	pthread_mutex_lock(&p->mu);
	while (!p->stop) {
		struct timespec ts;
		deadline_in(&ts, (uint64_t)p->cfg->snapshot_interval_s * 1000000000ull);
		int r = 0;
		while (!p->stop && r != ETIMEDOUT)
			r = pthread_cond_timedwait(&p->cv, &p->mu, &ts);
		if (p->stop)
			break;
		pthread_mutex_unlock(&p->mu);
		persist_checkpoint_dirty(p, "periodic");
		pthread_mutex_lock(&p->mu);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

int srv_persist_start(struct srv_persist *p)
{
	if (!p || !p->on)
		return 0;
	struct de_wal_options wo = { .segment_bytes = p->cfg->wal_segment_bytes,
				     .start_lsn = p->next_lsn, .log = persist_wal_log };
#ifdef DE_FAULT_INJECTION
	/* test builds: DYNEMBD_TEST_PLOG=file logs every file operation of the persistence
	 * (the power-loss log, de_persist_plog_file) from here on */
	const char *pl = getenv("DYNEMBD_TEST_PLOG");
	if (pl && *pl && de_persist_plog_file(pl))
		srv_log(SRV_LOG_WARN, "persistence: TEST cannot open the power-loss log %s", pl);
#endif
	int err = de_wal_open(p->dir, &wo, &p->wal);
	if (err) {
		srv_logf(SRV_LOG_ERROR, SRV_KV(SRV_F_PATH(p->dir), SRV_F_ERRNO(err)),
			 "persistence: cannot open the WAL in %s: %s", p->dir, strerror(-err));
		return 1;
	}
#ifdef DE_FAULT_INJECTION
	/* test builds: DYNEMBD_TEST_WAL_FAULT=fsync:N | write:N fails the WAL's Nth one */
	const char *f = getenv("DYNEMBD_TEST_WAL_FAULT");
	if (f) {
		long nth = strtol(strchr(f, ':') ? strchr(f, ':') + 1 : "1", NULL, 10);
		enum de_fault_kind k = !strncmp(f, "write", 5) ? DE_FAULT_WRITE : DE_FAULT_FSYNC;
		de_wal_fail(p->wal, k, nth > 0 ? nth : 1);
		srv_log(SRV_LOG_WARN, "persistence: TEST fault armed: the WAL's %s #%ld fails",
			k == DE_FAULT_WRITE ? "write" : "fsync", nth);
	}
	/* test builds: DYNEMBD_TEST_WAL_DELAY_MS=N lands every WAL flush N ms late */
	const char *late = getenv("DYNEMBD_TEST_WAL_DELAY_MS");
	if (late && !de_wal_delay(p->wal, (unsigned)strtoul(late, NULL, 10)))
		srv_log(SRV_LOG_WARN, "persistence: TEST every WAL flush lands %s ms late", late);
#endif
	if (pthread_create(&p->committer, NULL, committer_main, p)) {
		srv_log(SRV_LOG_ERROR, "persistence: cannot start the group-commit thread");
		return 1;
	}
	if (p->cfg->snapshot_interval_s &&
	    pthread_create(&p->checkpointer, NULL, checkpointer_main, p)) {
		srv_log(SRV_LOG_ERROR, "persistence: cannot start the checkpoint thread");
		pthread_mutex_lock(&p->mu);
		p->stop = true;
		pthread_cond_broadcast(&p->cv);
		pthread_mutex_unlock(&p->mu);
		pthread_join(p->committer, NULL);
		return 1;
	}
	p->threads_on = true;
	return 0;
}
