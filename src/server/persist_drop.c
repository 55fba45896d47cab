/*
 * persist_drop.c — DROP of a persisted table (srv_persist_table_drop, persist.h): the
 * data_dir forgets it, durably, before the table's memory goes.
 *
 * Order (each step is safe to be the last one a crash lets happen):
 *   1. CATALOG without the table, with next_id kept (persist_catalog.c): the commit
 *      point. A restart from here on recreates every other table and not this one, and
 *      no new table takes its id, so its WAL records (and snapshot files still there)
 *      belong to no table: replay skips them.
 *   2. The table leaves p->tables; the drop waits for a checkpoint sweep that copied the
 *      list before (p->sweeping), so no thread checkpoints it any more.
 *   3. MANIFEST without the table's entry, under the directory's checkpoint lock (flock,
 *      as de_persist_checkpoint takes it); then its snapshot files go (gc keeps files of
 *      tables the manifest does not name) and de_persist_gc drops the WAL segments only
 *      it needed.
 *   4. Its strings file goes; its persistence state is freed (t->ps = NULL).
 * A failure in 1 leaves everything as it was (the error is the reply); failures after it
 * are logged and leave only files no table reads (the next gc, or a later drop of a table
 * of that id, which cannot happen, removes them).
 *
 * Callers: the control plane (control_drop.c), on the control thread, after it checked
 * that no connection has the table open. Never: drops while a job that may use the table
 * runs (one on it, or a snapshot of every table: -EBUSY; a forced DROP cancelled them
 * first, srv_persist_table_jobs_cancel), or holds p->mu across I/O other than the
 * catalog write.
 */
#include "persist_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "log.h"

/* The snapshot files of table id (gc keeps those of tables the manifest does not name:
 * a new table's first snapshot may be written before its manifest entry). */
static void remove_snapshots(const char *dir, uint32_t id)
{
	char prefix[24];
	snprintf(prefix, sizeof prefix, "snap-%08" PRIx32 "-", id);
	DIR *d = opendir(dir);
	if (!d)
		return;
	bool removed = false;
	struct dirent *e;
	while ((e = readdir(d))) {
		size_t n = strlen(e->d_name);
		if (n > 5 && !strncmp(e->d_name, prefix, strlen(prefix)) &&
		    !strcmp(e->d_name + n - 5, ".dsnp")) {
			if (unlinkat(dirfd(d), e->d_name, 0) == 0)
				removed = true;
			else
				srv_logf(SRV_LOG_WARN, SRV_KV(SRV_F_PATH(dir), SRV_F_STR("file", e->d_name),
							      SRV_F_ERRNO(errno)),
					 "persistence: cannot remove %s/%s: %s", dir, e->d_name,
					 strerror(errno));
		}
	}
	if (removed)
		fsync(dirfd(d));
	closedir(d);
}

/* Step 3: the manifest without table id, its snapshot files, then gc. */
static int manifest_forget(const char *dir, uint32_t id)
{
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -errno;
	while (flock(dfd, LOCK_EX)) /* de_persist_checkpoint's lock: one manifest writer */
		if (errno != EINTR) {
			int err = -errno;
			close(dfd);
			return err;
		}
	struct de_manifest *m = calloc(1, sizeof *m);
	int err = m ? de_manifest_read(dir, m, NULL) : -ENOMEM;
	if (err == -ENOENT) {
		err = 0;
	} else if (!err) {
		for (uint32_t i = 0; i < m->ntables; i++)
			if (m->tables[i].table_id == id) {
				memmove(&m->tables[i], &m->tables[i + 1],
					(m->ntables - i - 1) * sizeof m->tables[0]);
				m->ntables--;
				m->generation++;
				err = de_manifest_write(dir, m);
				break;
			}
	}
	if (!err) {
		remove_snapshots(dir, id);
		de_persist_gc(dir, NULL); /* WAL segments only the dropped table needed */
	}
	free(m);
	flock(dfd, LOCK_UN);
	close(dfd);
	return err;
}

int srv_persist_table_drop_check(struct srv_persist *p, const struct srv_table *t, char *msg,
				 size_t cap)
{
	/* a job holds its table without a reference: also without a data_dir (EXPORT) */
	unsigned nj = p ? persist_jobs_on(p, t) : 0;
	if (nj) {
		snprintf(msg, cap, "table '%s' cannot be dropped while a snapshot, export or import "
			 "that may use it runs (%u job%s); try again when it ends, or force the "
			 "drop", t->name, nj, nj == 1 ? "" : "s");
		return -EBUSY;
	}
	return 0;
}

int srv_persist_table_drop(struct srv_persist *p, struct srv_table *t, char *msg, size_t cap)
{
	if (!p)
		return 0;
	int err = srv_persist_table_drop_check(p, t, msg, cap);
	if (err)
		return err;
	if (!p->on || !t->ps)
		return 0;
	pthread_mutex_lock(&p->mu);
	unsigned k = 0, n = p->ntables;
	while (k < n && p->tables[k] != t)
		k++;
	if (k == n) { /* not a catalog table: nothing on disk but what it opened */
		pthread_mutex_unlock(&p->mu);
		goto files;
	}
	struct srv_table *rest[DE_MANIFEST_MAX_TABLES];
	memcpy(rest, p->tables, k * sizeof rest[0]);
	memcpy(rest + k, p->tables + k + 1, (n - k - 1) * sizeof rest[0]);
	err = persist_cat_write(p->dir, rest, n - 1, p->next_id);
	if (err) {
		pthread_mutex_unlock(&p->mu);
		snprintf(msg, cap, "table '%s' not dropped: cannot rewrite %s/CATALOG: %s", t->name,
			 p->dir, strerror(-err));
		srv_logf(SRV_LOG_ERROR, SRV_KV(SRV_F_TABLE(t->name), SRV_F_PATH(p->dir),
					      SRV_F_ERRNO(err)), "persistence: %s", msg);
		return err;
	}
	memcpy(p->tables, rest, (n - 1) * sizeof rest[0]);
	p->ntables = n - 1;
	while (p->sweeping) /* a sweep copied the list with t in it */
		pthread_cond_wait(&p->sweep_cv, &p->mu);
	pthread_mutex_unlock(&p->mu);
files:;
	uint32_t id = t->ps->id;
	err = manifest_forget(p->dir, id);
	if (err)
		srv_logf(SRV_LOG_WARN, SRV_KV(SRV_F_TABLE(t->name), SRV_F_UINT("table_id", id),
					     SRV_F_PATH(p->dir), SRV_F_ERRNO(err)),
			"persistence: dropped table '%s' (id %u) stays in %s/MANIFEST "
			"(%s): its snapshot files stay until a later gc", t->name, id, p->dir,
			strerror(-err));
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s/strings-%08" PRIx32 ".dks", p->dir, id);
	if (unlink(path) && errno != ENOENT)
		srv_logf(SRV_LOG_WARN, SRV_KV(SRV_F_TABLE(t->name), SRV_F_PATH(path),
					     SRV_F_ERRNO(errno)),
			 "persistence: cannot remove %s: %s", path, strerror(errno));
	persist_tp_free(t->ps);
	t->ps = NULL;
	srv_logf(SRV_LOG_INFO, SRV_KV(SRV_F_TABLE(t->name), SRV_F_UINT("table_id", id),
				      SRV_F_PATH(p->dir)),
		 "persistence: table '%s' (id %u) dropped from %s/CATALOG", t->name, id, p->dir);
	return 0;
}
