/*
 * persist_recover.c — startup of persistence: srv_persist_open creates the state and,
 * with a data_dir, creates and locks it (flock on data_dir/LOCK: one daemon per data
 * directory) and reads its catalog; the control plane then opens each catalog table
 * (registry, learning) and hands it back with srv_persist_adopt; srv_persist_recover runs
 * libdeuring's recovery over them: manifest -> snapshots -> WAL replay up to the first
 * bad record (a torn tail is truncated with a log line that says how much was dropped).
 *
 * Exit statuses: 1 for an I/O or resource failure, SRV_EXIT_CORRUPT for a damaged
 * catalog, manifest or snapshot (the message names the file), and for a missing CATALOG
 * or MANIFEST where the files written after it are there (CATALOG is written before any
 * MANIFEST, snapshot or WAL segment; MANIFEST before any WAL segment and before a
 * snapshot of seq 2 and up: a table's seq 1 is its empty creation snapshot, which a crash
 * can leave without a manifest). --recover-from-wal (cfg->recover_from_wal) starts then
 * anyway, logged at WARN. Never: start over a damaged directory unasked, or open tables
 * itself (the registry is the control plane's).
 */
#include "persist_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static int corrupt_status(int err)
{
	return err == -EBADMSG || err == -EPROTO || err == -EEXIST || err == -ENOENT ||
	       err == -EINVAL ? SRV_EXIT_CORRUPT : 1;
}

/* What the data_dir holds besides CATALOG: a MANIFEST, WAL segments, snapshots (and of
 * those, files of seq 2 and up). */
struct dir_files {
	bool manifest;
	unsigned wal, snaps, later_snaps;
};

static int scan_dir(const char *dir, struct dir_files *f)
{
	memset(f, 0, sizeof *f);
	DIR *d = opendir(dir);
	if (!d)
		return -errno;
	struct dirent *e;
	while ((e = readdir(d))) {
		const char *s = e->d_name;
		size_t n = strlen(s);
		if (!strcmp(s, "MANIFEST")) {
			f->manifest = true;
		} else if (n == 24 && !strncmp(s, "wal-", 4) && !strcmp(s + 20, ".log")) {
			f->wal++;
		} else if (n == 35 && !strncmp(s, "snap-", 5) && !strcmp(s + 30, ".dsnp")) {
			f->snaps++;
			/* "snap-" table "-" seq (16 hex digits at 14): any seq but 1 */
			bool one = s[29] == '1';
			for (int i = 14; i < 29; i++)
				one &= s[i] == '0';
			f->later_snaps += !one;
		}
	}
	closedir(d);
	return 0;
}

/* A missing name (CATALOG or MANIFEST) beside the files described by what: SRV_EXIT_CORRUPT,
 * or 0 with a WARN line under --recover-from-wal. */
static int missing(const struct srv_persist *p, const char *name, const char *what,
		   const char *salvage)
{
	if (!p->cfg->recover_from_wal) {
		srv_logf(SRV_LOG_ERROR, SRV_KV(SRV_F_PATH(p->dir), SRV_F_STR("file", name)),
			"persistence: %s/%s is missing while the directory holds %s; "
			"not starting (restore the file, or start with --recover-from-wal to %s)",
			p->dir, name, what, salvage);
		return SRV_EXIT_CORRUPT;
	}
	srv_logf(SRV_LOG_WARN, SRV_KV(SRV_F_PATH(p->dir), SRV_F_STR("file", name)),
		"persistence: --recover-from-wal: %s/%s is missing while the "
		"directory holds %s; starting anyway: %s", p->dir, name, what, salvage);
	return 0;
}

/* Create and lock the data_dir, read its catalog into p->cat. */
static int begin(struct srv_persist *p)
{
	int err = de_mkdir_durable(p->dir, 0755); /* a new data_dir survives power loss */
	if (err) {
		srv_logf(SRV_LOG_ERROR, SRV_KV(SRV_F_PATH(p->dir), SRV_F_ERRNO(err)),
			 "persistence: cannot create data_dir %s: %s", p->dir, strerror(-err));
		return 1;
	}
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s/LOCK", p->dir);
	p->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (p->lock_fd < 0 || flock(p->lock_fd, LOCK_EX | LOCK_NB)) {
		int e = errno;
		srv_logf(SRV_LOG_ERROR, SRV_KV(SRV_F_PATH(path), SRV_F_ERRNO(e)),
			 "persistence: %s: %s", path,
			 e == EWOULDBLOCK ? "another dynembd uses this data_dir" : strerror(e));
		return 1;
	}
	const char *problem = NULL;
	err = persist_cat_read(p->dir, &p->cat, &p->ncat, &p->cat_next_id, &problem);
	if (err == -ENOENT) {
		p->cat = NULL;
		p->ncat = 0;
		struct dir_files f;
		if ((err = scan_dir(p->dir, &f))) {
			srv_logf(SRV_LOG_ERROR, SRV_KV(SRV_F_PATH(p->dir), SRV_F_ERRNO(err)),
				 "persistence: cannot list data_dir %s: %s", p->dir, strerror(-err));
			return 1;
		}
		if (f.manifest || f.wal || f.snaps) {
			char what[160];
			snprintf(what, sizeof what, "%s%u WAL segments and %u snapshots",
				 f.manifest ? "a MANIFEST, " : "", f.wal, f.snaps);
			int st = missing(p, "CATALOG", what,
					 "no table is recovered, and new tables reuse the ids (and "
					 "replace the files) of the lost ones");
			if (st)
				return st;
		}
	} else if (err) {
		srv_logf(SRV_LOG_ERROR, SRV_KV(SRV_F_PATH(p->dir), SRV_F_STR("file", "CATALOG"),
					      SRV_F_ERRNO(err)),
			 "persistence: %s/CATALOG is damaged: %s (%s); not starting",
			p->dir, problem ? problem : strerror(-err), strerror(-err));
		return err == -ENOMEM ? 1 : SRV_EXIT_CORRUPT;
	}
	p->next_id = p->cat_next_id ? (uint32_t)p->cat_next_id : 1; /* adopt raises it */
	return 0;
}

int srv_persist_open(const struct srv_config *cfg, struct srv_persist **out)
{
	struct srv_persist *p = calloc(1, sizeof *p);
	*out = p;
	if (!p)
		return 1;
	p->cfg = cfg;
	p->lock_fd = -1;
	pthread_mutex_init(&p->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&p->cv, &ca);
	pthread_cond_init(&p->sweep_cv, NULL);
	pthread_condattr_destroy(&ca);
	if (!cfg->data_dir[0]) {
		srv_log(SRV_LOG_INFO, "persistence: off (no data_dir): tables live in memory only");
		return 0;
	}
	p->on = true;
	snprintf(p->dir, sizeof p->dir, "%s", cfg->data_dir);
	return begin(p);
}

unsigned srv_persist_catalog(const struct srv_persist *p,
			     const struct srv_catalog_entry **entries)
{
	*entries = p->cat;
	return p->ncat;
}

int srv_persist_adopt(struct srv_persist *p, struct srv_table *t,
		      const struct srv_catalog_entry *e)
{
	int err = persist_tp_create(e->table_id, e->learn.durability.mode, &t->ps);
	if (err)
		return err;
	/* the rows WAL replay brings back are in no dirty set: an incremental snapshot
	 * would move the table's wal_lsn past them, so the first checkpoint after a start
	 * is full */
	t->ps->need_full = 1;
	pthread_mutex_lock(&p->mu);
	persist_table_add_locked(p, t);
	pthread_mutex_unlock(&p->mu);
	if (e->table_id >= p->next_id)
		p->next_id = e->table_id + 1;
	return 0;
}

int srv_persist_recover(struct srv_persist *p)
{
	if (!p->on)
		return 0;
	int status = 0;
	unsigned n = p->ntables;
	struct de_recover_table *rt = calloc(n ? n : 1, sizeof *rt);
	if (!rt)
		return 1;
	for (unsigned i = 0; i < n; i++)
		rt[i] = (struct de_recover_table){ .table_id = p->tables[i]->ps->id,
						   .table = p->tables[i]->t };
	char mpath[PATH_MAX];
	struct stat sb;
	snprintf(mpath, sizeof mpath, "%s/MANIFEST", p->dir);
	if (stat(mpath, &sb) && errno == ENOENT) {
		struct dir_files f;
		int e = scan_dir(p->dir, &f);
		if (e) {
			srv_logf(SRV_LOG_ERROR, SRV_KV(SRV_F_PATH(p->dir), SRV_F_ERRNO(e)),
				 "persistence: cannot list data_dir %s: %s", p->dir, strerror(-e));
			status = 1;
			goto out;
		}
		if (f.wal || f.later_snaps) {
			char what[160];
			snprintf(what, sizeof what, "%u WAL segments and %u snapshots", f.wal,
				 f.snaps);
			if ((status = missing(p, "MANIFEST", what,
					      "every table replays every WAL record still there; "
					      "rows only in snapshots or collected segments are lost")))
				goto out;
		}
	}
	struct de_recover_report rep;
	memset(&rep, 0, sizeof rep);
	int err = de_persist_recover(p->dir, rt, n, persist_wal_log, NULL, &rep);
	if (err) {
		srv_logf(SRV_LOG_ERROR, SRV_KV(SRV_F_PATH(p->dir), SRV_F_ERRNO(err)),
			 "persistence: recovery of %s failed: %s (%s); not starting",
			p->dir, rep.message[0] ? rep.message : "?", strerror(-err));
		status = corrupt_status(err);
		goto out;
	}
	srv_logf(SRV_LOG_INFO, SRV_KV(SRV_F_PATH(p->dir), SRV_F_UINT("tables", n),
				      SRV_F_UINT("snapshots", rep.snapshots),
				      SRV_F_UINT("wal_records", rep.wal_applied),
				      SRV_F_UINT("next_lsn", rep.next_lsn)),
		"persistence: recovered %u tables from %s: manifest %s "
		"(generation %" PRIu64 "), %u snapshots (%" PRIu64 " rows), %" PRIu64
		" WAL records applied, next LSN %" PRIu64, n, p->dir,
		rep.manifest ? "found" : "none", rep.generation, rep.snapshots, rep.snapshot_rows,
		rep.wal_applied, rep.next_lsn);
	if (rep.wal.unneeded_bytes || rep.wal.unneeded_records)
		srv_logf(SRV_LOG_WARN, SRV_KV(SRV_F_PATH(p->dir),
					     SRV_F_UINT("bytes", rep.wal.unneeded_bytes)),
			"persistence: WAL damage no table needs skipped: %" PRIu64
			" bytes (%" PRIu64 " records, all below every table's snapshot LSN) (%s); "
			"the records after it were replayed", rep.wal.unneeded_bytes,
			rep.wal.unneeded_records,
			rep.wal.unneeded_problem ? rep.wal.unneeded_problem : "damaged record");
	if (rep.wal.bytes_dropped)
		srv_logf(SRV_LOG_WARN, SRV_KV(SRV_F_PATH(p->dir),
					     SRV_F_UINT("bytes", rep.wal.bytes_dropped),
					     SRV_F_UINT("lsn", rep.wal.last_lsn)),
			"persistence: WAL torn tail truncated: %" PRIu64 " bytes (at "
			"least %" PRIu64 " records) after LSN %" PRIu64 " dropped (%s)",
			rep.wal.bytes_dropped, rep.wal.records_dropped, rep.wal.last_lsn,
			rep.wal.problem ? rep.wal.problem : "damaged record");
	/* the snapshot LSN of each table, for STATS */
	struct de_manifest *man = calloc(1, sizeof *man);
	if (man && de_manifest_read(p->dir, man, NULL) == 0)
		for (uint32_t i = 0; i < man->ntables; i++)
			for (unsigned k = 0; k < p->ntables; k++)
				if (p->tables[k]->ps->id == man->tables[i].table_id)
					p->tables[k]->ps->snapshot_lsn = man->tables[i].wal_lsn;
	free(man);
	p->next_lsn = rep.next_lsn;
	for (unsigned k = 0; k < p->ntables; k++) /* the strings of string tables */
		if ((err = persist_strings_open(p, p->tables[k]))) {
			srv_logf(SRV_LOG_ERROR, SRV_KV(SRV_F_TABLE(p->tables[k]->name),
						      SRV_F_PATH(p->dir), SRV_F_ERRNO(err)),
				 "persistence: the strings file of table '%s' in %s: %s",
				 p->tables[k]->name, p->dir, strerror(-err));
			status = 1;
			goto out;
		}
out:
	free(rt);
	free(p->cat);
	p->cat = NULL;
	p->ncat = 0;
	return status;
}
