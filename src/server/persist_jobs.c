/*
 * persist_jobs.c — the control-plane jobs of persistence: SNAPSHOT (a checkpoint of one
 * table or of all), EXPORT (de_export of a table to a file under [persistence]
 * export_dir) and IMPORT (de_import, then a full snapshot that makes the imported rows
 * durable before OK). Each runs on its own thread with a dup of the client's socket,
 * streams PROGRESS (at most every 50 ms; a client that does not read misses some) and
 * ends with the OK reply or ERROR, through the daemon's reply encoder (reply.h).
 *
 * At most SRV_MAX_JOBS at once and one per connection (a job counts until its final reply
 * is being sent: the client may ask again as soon as it has it). srv_persist_stop cancels
 * them (the progress callback says stop: -ECANCELED) and joins them. Never: touch the
 * client's state (the control plane passes its id, uid, gid and socket), or block the
 * control thread (a refusal is sent without waiting).
 *
 * Files a client names (EXPORT, IMPORT) are touched with the client's identity: a root
 * daemon sets the job thread's fsuid and fsgid to the client's uid and primary gid and
 * drops the thread's supplementary groups (all three are per thread in the kernel; the
 * raw syscalls change this thread only) around de_export / de_import, so the kernel's
 * permission checks are the client's: it can only write, replace or read what it could
 * itself. The import's snapshot (into the data_dir) runs as the daemon again. The files
 * themselves are created O_EXCL | O_NOFOLLOW and opened O_NOFOLLOW (uring/util.c): a
 * symlink at the path or at path.tmp is refused (-ELOOP / -EEXIST), never followed.
 */
#include "persist_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "log.h"
#include "reply.h"
#include "util.h"

#define SRV_MAX_JOBS 8u
#define PROGRESS_NS (50ull * 1000000ull)
#define FINAL_SEND_MS 5000

struct srv_job {
	struct srv_persist *p;
	pthread_t thread;
	int sock;                 /* a dup of the client's socket */
	unsigned client;
	uid_t uid;                /* the client's (SO_PEERCRED) */
	gid_t gid;
	union srv_msg m;
	struct srv_table *t;      /* EXPORT / IMPORT */
	int done;                 /* atomic: the thread ended */
	int cancel;               /* atomic: a forced DROP of its table: stop (-ECANCELED) */
	int replying;             /* atomic: the final reply is being sent */
	uint64_t last_ns;
	uint32_t phase, index;
	const char *tname;
	struct srv_job *next;
};

/* Before the final reply: the client may send its next request as soon as it has it,
 * and this job must not count as running then (srv_persist_request's -EBUSY). */
static void finishing(struct srv_job *j)
{
	__atomic_store_n(&j->replying, 1, __ATOMIC_RELEASE);
}

static int job_progress(void *ctx, uint64_t done, uint64_t total)
{
	struct srv_job *j = ctx;
	if (__atomic_load_n(&j->p->stop, __ATOMIC_ACQUIRE) ||
	    __atomic_load_n(&j->cancel, __ATOMIC_ACQUIRE))
		return 1; /* the daemon is stopping, or a forced DROP: -ECANCELED */
	uint64_t now = srv_mono_ns();
	if (now - j->last_ns < PROGRESS_NS && done != total)
		return 0;
	j->last_ns = now;
	struct de_msg_progress m;
	memset(&m, 0, sizeof m);
	srv_reply_hdr(&m.h, DE_MSG_PROGRESS, sizeof m, j->m.h.seq);
	m.done = done;
	m.total = total;
	m.phase = j->phase;
	m.table_index = j->index;
	snprintf(m.name, sizeof m.name, "%s", j->tname ? j->tname : "");
	srv_reply_send(j->sock, &m, sizeof m, NULL, 0, 0); /* a client that does not read misses some */
	return 0;
}

static void job_snapshot(struct srv_job *j)
{
	struct srv_persist *p = j->p;
	struct srv_table *ts[DE_MANIFEST_MAX_TABLES];
	unsigned n = 0;
	if (j->t) {
		ts[n++] = j->t;
	} else {
		pthread_mutex_lock(&p->mu);
		n = p->ntables;
		memcpy(ts, p->tables, n * sizeof ts[0]);
		pthread_mutex_unlock(&p->mu);
	}
	struct de_msg_snapshot_ok ok;
	memset(&ok, 0, sizeof ok);
	srv_reply_hdr(&ok.h, DE_MSG_SNAPSHOT_OK, sizeof ok, j->m.h.seq);
	j->phase = DE_PHASE_SNAPSHOT;
	for (unsigned i = 0; i < n; i++) {
		struct de_snapshot_info info;
		j->index = i;
		j->tname = ts[i]->name;
		j->last_ns = 0;
		int err = persist_durable(ts[i]) && __atomic_load_n(&p->failed, __ATOMIC_ACQUIRE)
				  ? -EROFS
				  : persist_checkpoint(p, ts[i], j->m.snapshot.flags & DE_SNAP_FULL,
					       job_progress, j, &info);
		if (err) {
			srv_logf(SRV_LOG_WARN, SRV_KV(SRV_F_TABLE(ts[i]->name), SRV_F_UINT("uid", j->uid),
						      SRV_F_ERRNO(err)),
				 "persistence: snapshot of table '%s' failed: %s", ts[i]->name,
				 strerror(-err));
			finishing(j);
			srv_reply_error(j->sock, j->m.h.seq, err, FINAL_SEND_MS,
				 "snapshot of table '%s' failed: %s%s (%u of %u tables done)",
				 ts[i]->name, strerror(-err),
				 err == -EROFS ? " (the WAL failed: the table is read-only)" : "", i, n);
			return;
		}
		ok.tables++;
		ok.rows += info.records - info.tombstones;
		ok.bytes += info.file_bytes;
		if (info.start_lsn > ok.lsn)
			ok.lsn = info.start_lsn;
	}
	srv_logf(SRV_LOG_INFO, SRV_KV(SRV_F_UINT("tables", ok.tables), SRV_F_UINT("rows", ok.rows),
				      SRV_F_UINT("bytes", ok.bytes), SRV_F_UINT("lsn", ok.lsn)),
		 "persistence: snapshot of %u table(s): %" PRIu64 " rows, %" PRIu64
		 " bytes, lsn %" PRIu64, ok.tables, ok.rows, ok.bytes, ok.lsn);
	finishing(j);
	srv_reply_send(j->sock, &ok, sizeof ok, NULL, 0, FINAL_SEND_MS);
}

void srv_persist_fs_back(struct srv_fs_ids *ids)
{
	int err = srv_fs_as_daemon(ids);
	if (err)
		srv_logf(SRV_LOG_WARN, SRV_KV(SRV_F_ERRNO(err)),
			 "job: cannot restore the supplementary groups: %s", strerror(-err));
}

static void job_export(struct srv_job *j)
{
	j->phase = DE_PHASE_EXPORT;
	j->tname = j->t->name;
	uint64_t records = 0;
	struct srv_fs_ids ids;
	int err = srv_fs_as_client(&ids, j->uid, j->gid);
	if (!err)
		err = de_export(j->t->t, j->m.exp.path, job_progress, j, &records);
	struct stat st;
	bool have_st = !err && stat(j->m.exp.path, &st) == 0;
	srv_persist_fs_back(&ids);
	if (err) {
		srv_logf(SRV_LOG_WARN, SRV_KV(SRV_F_TABLE(j->t->name), SRV_F_PATH(j->m.exp.path),
					     SRV_F_UINT("uid", j->uid), SRV_F_ERRNO(err)),
			 "export of table '%s' to %s failed: %s", j->t->name, j->m.exp.path,
			 strerror(-err));
		finishing(j);
		srv_reply_error(j->sock, j->m.h.seq, err, FINAL_SEND_MS, "export of '%s' to %s: %s",
			 j->t->name, j->m.exp.path, strerror(-err));
		return;
	}
	struct de_msg_export_ok ok;
	memset(&ok, 0, sizeof ok);
	srv_reply_hdr(&ok.h, DE_MSG_EXPORT_OK, sizeof ok, j->m.h.seq);
	ok.records = records;
	if (have_st)
		ok.bytes = (uint64_t)st.st_size;
	srv_logf(SRV_LOG_INFO, SRV_KV(SRV_F_TABLE(j->t->name), SRV_F_PATH(j->m.exp.path),
				      SRV_F_UINT("uid", j->uid), SRV_F_UINT("records", records)),
		 "exported table '%s' to %s: %" PRIu64 " records", j->t->name, j->m.exp.path,
		 records);
	finishing(j);
	srv_reply_send(j->sock, &ok, sizeof ok, NULL, 0, FINAL_SEND_MS);
}

static void job_import(struct srv_job *j)
{
	struct srv_persist *p = j->p;
	j->phase = DE_PHASE_IMPORT;
	j->tname = j->t->name;
	struct de_import_report rep;
	memset(&rep, 0, sizeof rep);
	unsigned flags = (j->m.imp.flags & DE_WIMPORT_SALVAGE) ? DE_IMPORT_SALVAGE : 0;
	struct srv_fs_ids ids;
	int err = srv_fs_as_client(&ids, j->uid, j->gid);
	if (!err)
		err = de_import(j->t->t, j->m.imp.path, flags, job_progress, j, &rep);
	srv_persist_fs_back(&ids);
	if (err) {
		srv_logf(SRV_LOG_WARN, SRV_KV(SRV_F_TABLE(j->t->name), SRV_F_PATH(j->m.imp.path),
					     SRV_F_UINT("uid", j->uid), SRV_F_ERRNO(err)),
			 "import of %s into table '%s' failed: %s", j->m.imp.path, j->t->name,
			 strerror(-err));
		finishing(j);
		srv_reply_error(j->sock, j->m.h.seq, err, FINAL_SEND_MS, "import of %s into '%s': %s%s%s%s",
			 j->m.imp.path, j->t->name, strerror(-err),
			 rep.mismatch || rep.problem ? " (" : "",
			 rep.mismatch ? rep.mismatch : rep.problem ? rep.problem : "",
			 rep.mismatch || rep.problem ? ")" : "");
		return;
	}
	/* imported rows are in no WAL record and no dirty set: a full snapshot makes them
	 * durable before the client hears OK */
	if (j->t->ps) {
		j->phase = DE_PHASE_SNAPSHOT;
		j->last_ns = 0;
		err = persist_checkpoint(p, j->t, true, job_progress, j, NULL);
		if (err) {
			srv_logf(SRV_LOG_WARN, SRV_KV(SRV_F_TABLE(j->t->name),
						      SRV_F_PATH(j->m.imp.path), SRV_F_ERRNO(err)),
				 "import into table '%s': the snapshot that makes it durable "
				 "failed: %s", j->t->name, strerror(-err));
			finishing(j);
			srv_reply_error(j->sock, j->m.h.seq, err, FINAL_SEND_MS,
				 "import of %s into '%s': %" PRIu64 " records imported but the "
				 "snapshot that makes them durable failed: %s", j->m.imp.path,
				 j->t->name, rep.imported, strerror(-err));
			return;
		}
	}
	struct de_msg_import_ok ok;
	memset(&ok, 0, sizeof ok);
	srv_reply_hdr(&ok.h, DE_MSG_IMPORT_OK, sizeof ok, j->m.h.seq);
	ok.records = rep.records;
	ok.imported = rep.imported;
	ok.dropped = rep.dropped;
	if (rep.problem)
		snprintf(ok.problem, sizeof ok.problem, "%s", rep.problem);
	srv_logf(SRV_LOG_INFO, SRV_KV(SRV_F_TABLE(j->t->name), SRV_F_PATH(j->m.imp.path),
				      SRV_F_UINT("uid", j->uid), SRV_F_UINT("records", rep.records),
				      SRV_F_UINT("imported", rep.imported)),
		 "imported %s into table '%s': %" PRIu64 " of %" PRIu64 " records",
		 j->m.imp.path, j->t->name, rep.imported, rep.records);
	finishing(j);
	srv_reply_send(j->sock, &ok, sizeof ok, NULL, 0, FINAL_SEND_MS);
}

static void *job_main(void *arg)
{
	struct srv_job *j = arg;
	switch (j->m.h.type) {
	case DE_MSG_SNAPSHOT: job_snapshot(j); break;
	case DE_MSG_EXPORT: job_export(j); break;
	default: job_import(j); break;
	}
	close(j->sock);
	j->sock = -1;
	__atomic_store_n(&j->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

void persist_jobs_reap(struct srv_persist *p, bool all)
{
	for (;;) {
		struct srv_job *j = NULL;
		pthread_mutex_lock(&p->mu);
		for (struct srv_job **pp = &p->jobs; *pp; pp = &(*pp)->next)
			if (all || __atomic_load_n(&(*pp)->done, __ATOMIC_ACQUIRE)) {
				j = *pp;
				*pp = j->next;
				p->njobs--;
				break;
			}
		pthread_mutex_unlock(&p->mu);
		if (!j)
			return;
		pthread_join(j->thread, NULL);
		free(j);
	}
}

/* Jobs that may work on t (EXPORT, IMPORT, SNAPSHOT of t, or a SNAPSHOT of every table,
 * whose copy of the list may hold t) and have not ended; cancel: tell them to stop. */
static unsigned jobs_on(struct srv_persist *p, const struct srv_table *t, bool cancel)
{
	unsigned n = 0;
	pthread_mutex_lock(&p->mu);
	for (struct srv_job *j = p->jobs; j; j = j->next)
		if ((j->t == t || !j->t) && !__atomic_load_n(&j->done, __ATOMIC_ACQUIRE)) {
			n++;
			if (cancel)
				__atomic_store_n(&j->cancel, 1, __ATOMIC_RELEASE);
		}
	pthread_mutex_unlock(&p->mu);
	return n;
}

unsigned persist_jobs_on(struct srv_persist *p, const struct srv_table *t)
{
	persist_jobs_reap(p, false);
	return jobs_on(p, t, false);
}

int srv_persist_table_jobs_cancel(struct srv_persist *p, const struct srv_table *t,
				  unsigned timeout_ms, char *msg, size_t cap)
{
	if (!p)
		return 0;
	unsigned n = jobs_on(p, t, true);
	if (!n)
		return 0;
	srv_logf(SRV_LOG_INFO, SRV_KV(SRV_F_TABLE(t->name), SRV_F_UINT("jobs", n)),
		 "persistence: forced drop of table '%s' cancels %u job(s) that may use it",
		 t->name, n);
	uint64_t deadline = srv_mono_ns() + (uint64_t)timeout_ms * 1000000ull;
	while ((n = jobs_on(p, t, false))) {
		if (srv_mono_ns() > deadline) {
			snprintf(msg, cap, "table '%s' not dropped: %u snapshot, export or import "
				 "job(s) on it did not stop within %u ms", t->name, n, timeout_ms);
			return -ETIMEDOUT;
		}
		usleep(1000);
	}
	persist_jobs_reap(p, false); /* joined: no job thread reads t any more */
	return 0;
}

/* Is path (checked: absolute, no . or ..) inside export_dir? Its directory must resolve
 * (realpath, as the client: what it cannot search it does not learn about) to export_dir
 * or below it; the file itself may not exist yet. */
int srv_persist_path_allowed(const struct srv_config *cfg, uid_t uid, gid_t gid, const char *path,
			char *msg, size_t cap)
{
	if (!cfg->export_dir[0]) {
		snprintf(msg, cap, "export/import through the daemon is off: set [persistence] "
			 "export_dir (a daemon run as root reads and writes them as the client)");
		return -EPERM;
	}
	char dir[DE_PATH_MAX], real_dir[PATH_MAX], real_base[PATH_MAX];
	snprintf(dir, sizeof dir, "%s", path);
	*strrchr(dir, '/') = 0;
	struct srv_fs_ids ids;
	int err = srv_fs_as_client(&ids, uid, gid);
	const char *real = err ? NULL : realpath(dir[0] ? dir : "/", real_dir);
	if (!err && !real)
		err = -errno;
	srv_persist_fs_back(&ids);
	if (err) {
		snprintf(msg, cap, "%.180s: %s", dir[0] ? dir : "/", strerror(-err));
		return err;
	}
	if (!realpath(cfg->export_dir, real_base)) {
		snprintf(msg, cap, "export_dir %s: %s", cfg->export_dir, strerror(errno));
		return -EPERM;
	}
	size_t n = strlen(real_base);
	if (strncmp(real_dir, real_base, n) ||
	    (real_dir[n] && real_dir[n] != '/' && strcmp(real_base, "/"))) {
		snprintf(msg, cap, "%s is not under the daemon's export_dir %s", path,
			 cfg->export_dir);
		return -EPERM;
	}
	return 0;
}

void srv_persist_request(struct srv_persist *p, const struct srv_registry *reg,
			 unsigned client, uid_t uid, gid_t gid, int sock, const union srv_msg *m)
{
	char msg[240];
	int err = 0;
	const char *name = m->h.type == DE_MSG_SNAPSHOT ? m->snapshot.name
			   : m->h.type == DE_MSG_EXPORT ? m->exp.name : m->imp.name;
	struct srv_table *t = NULL;
	persist_jobs_reap(p, false);
	if (name[0] && !(t = srv_registry_find(reg, name))) {
		snprintf(msg, sizeof msg, "no table '%s' in this daemon", name);
		err = -ENOENT;
	} else if (m->h.type == DE_MSG_SNAPSHOT && !p->on) {
		snprintf(msg, sizeof msg, "snapshots need the daemon's [persistence] data_dir");
		err = -EINVAL;
	} else if (m->h.type == DE_MSG_SNAPSHOT && t && !t->ps) {
		snprintf(msg, sizeof msg, "table '%s' is not persisted", name);
		err = -EINVAL;
	} else if (m->h.type == DE_MSG_IMPORT && persist_durable(t) &&
		   __atomic_load_n(&p->failed, __ATOMIC_ACQUIRE)) {
		snprintf(msg, sizeof msg, "table '%s' is read-only: its WAL failed", name);
		err = -EROFS;
	} else if (m->h.type != DE_MSG_SNAPSHOT) {
		err = srv_persist_path_allowed(p->cfg, uid, gid,
				   m->h.type == DE_MSG_EXPORT ? m->exp.path : m->imp.path, msg,
				   sizeof msg);
	}
	struct srv_job *j = NULL;
	if (!err) {
		pthread_mutex_lock(&p->mu);
		for (struct srv_job *q = p->jobs; q; q = q->next)
			if (q->client == client && !__atomic_load_n(&q->replying, __ATOMIC_ACQUIRE)) {
				snprintf(msg, sizeof msg, "this connection runs a job already");
				err = -EBUSY;
			}
		if (!err && p->njobs >= SRV_MAX_JOBS) {
			snprintf(msg, sizeof msg, "the daemon runs %u jobs already", SRV_MAX_JOBS);
			err = -EBUSY;
		}
		if (!err && !(j = calloc(1, sizeof *j))) {
			snprintf(msg, sizeof msg, "out of memory");
			err = -ENOMEM;
		}
		if (!err) {
			j->p = p;
			j->client = client;
			j->uid = uid;
			j->gid = gid;
			j->m = *m;
			j->t = t;
			j->sock = fcntl(sock, F_DUPFD_CLOEXEC, 0);
			if (j->sock < 0) {
				err = -errno;
				snprintf(msg, sizeof msg, "dup: %s", strerror(-err));
			} else if ((err = -pthread_create(&j->thread, NULL, job_main, j))) {
				close(j->sock);
				snprintf(msg, sizeof msg, "cannot start a job thread");
			}
			if (err) {
				free(j);
			} else {
				j->next = p->jobs;
				p->jobs = j;
				p->njobs++;
			}
		}
		pthread_mutex_unlock(&p->mu);
	}
	if (err) {
		srv_reply_error(sock, m->h.seq, err, 0, "%s", msg);
		return;
	}
	const char *op = m->h.type == DE_MSG_SNAPSHOT ? "snapshot"
			 : m->h.type == DE_MSG_EXPORT ? "export" : "import";
	const char *jpath = m->h.type == DE_MSG_EXPORT ? m->exp.path
			    : m->h.type == DE_MSG_IMPORT ? m->imp.path : "";
	srv_logf(SRV_LOG_INFO, SRV_KV(SRV_F_UINT("client", client), SRV_F_UINT("uid", uid),
				      SRV_F_STR("op", op), SRV_F_TABLE(name), SRV_F_PATH(jpath)),
		 "client %u: %s %s%s%s", client, op, name[0] ? name : "(every table)",
		 jpath[0] ? " " : "", jpath);
}
