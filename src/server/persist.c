/*
 * persist.c — dynembd's persistence: durability per table (none / async / sync) on top
 * of libdeuring (uring/de_uring.h: one WAL per daemon, dirty sets, snapshots, manifest,
 * recovery), the table catalog, startup recovery, periodic and explicit checkpoints,
 * and the control-plane jobs SNAPSHOT / EXPORT / IMPORT (proto.h).
 *
 * Owns: struct srv_persist (the WAL, the data_dir lock, the catalog, the list of
 * persisted tables, the committer and checkpointer threads, job threads) and every
 * table's struct srv_table_persist (id, dirty set, counters).
 *
 * Write path (worker.c calls these). Before a write on an ASYNC/SYNC table:
 * srv_persist_write_check (-EROFS once the WAL failed). After it succeeded:
 * srv_persist_log appends a PUT record that carries each key's whole row read back from
 * the table under its row lock (values, optimizer slots, freq, last_step, aux), or an
 * ERASE record, and marks the keys dirty (incremental snapshots). NONE tables only mark
 * dirty. SYNC: the worker holds the round's completions and calls
 * srv_persist_sync_round, one de_wal_sync for the largest LSN (group commit; several
 * workers share the WAL, whose flushes are serialized inside libdeuring, so concurrent
 * syncs merge), then posts them: nothing is acknowledged before its record is on disk.
 * ASYNC: acknowledged at once; the committer thread flushes the WAL every min(window_ms)
 * of the async tables (the loss bound is that window plus one flush).
 * LOOKUP with create is NOT logged: a created row holds the table's deterministic
 * initializer value (de_learn.h), so replay loses nothing a user wrote; its freq,
 * last_step and the admission sketch are not restored (a full snapshot has them).
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
 * ---- CATALOG, format version 1 (all little-endian) ------------------------------------
 * data_dir/CATALOG, replaced atomically (CATALOG.tmp, fsync, rename, fsync dir):
 *   0    u8[8] magic "DECATLG1"
 *   8    u32 version (1)         12   u32 count (<= DE_MANIFEST_MAX_TABLES)
 *   16   u32 entry_bytes (400)   20   u32 reserved, zero
 *   24   u64 reserved, zero
 *   32   count entries of 400 bytes:
 *          0    u32 table_id (>= 1, strictly increasing)   4  u32 reserved, zero
 *          8    char name[64] (NUL-terminated, srv_name_check)
 *          72   struct de_wire_table_config (64 bytes, normalized)
 *          136  struct de_wire_learn_config (256 bytes, normalized)
 *          392  u64 reserved, zero
 *   32 + 400 * count: u32 CRC32C of every byte before it. The file is exactly that long.
 * A reader refuses any deviation (-EBADMSG; -EPROTO for another version).
 */
#include "server.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>

#include "de_uring.h"

#define SRV_MAX_JOBS 8u
#define CAT_MAGIC "DECATLG1"
#define CAT_VERSION 1u
#define CAT_HDR 32u
#define CAT_ENTRY 400u
#define PROGRESS_NS (50ull * 1000000ull)
#define FINAL_SEND_MS 5000

struct cat_entry {
	uint32_t table_id, reserved0;
	char name[DE_NAME_MAX];
	struct de_wire_table_config cfg;
	struct de_wire_learn_config learn;
	uint64_t reserved1;
};
_Static_assert(sizeof(struct cat_entry) == CAT_ENTRY, "spec");
_Static_assert(offsetof(struct cat_entry, cfg) == 72, "spec");
_Static_assert(offsetof(struct cat_entry, learn) == 136, "spec");

struct srv_table_persist {
	uint32_t id;
	uint32_t mode;            /* enum de_wire_durability_mode */
	de_dirty *dirty;
	int need_full;            /* atomic: the dirty set lost keys (-ENOMEM): next is full */
	uint64_t snapshots;       /* atomic: checkpoints of this run */
	uint64_t snapshot_lsn;    /* atomic: the cut of the last one (recovered: the manifest's) */
	pthread_mutex_t ckpt;     /* one checkpoint of this table at a time */
};

struct job {
	struct srv_persist *p;
	pthread_t thread;
	int sock;                 /* a dup of the client's socket */
	unsigned client;
	union srv_msg m;
	struct srv_table *t;      /* EXPORT / IMPORT */
	int done;                 /* atomic: the thread ended */
	int replying;             /* atomic: the final reply is being sent */
	uint64_t last_ns;
	uint32_t phase, index;
	const char *tname;
	struct job *next;
};

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
	unsigned commit_ms;       /* min window_ms of the async tables; 0: none */
	bool stop;
	pthread_t committer, checkpointer;
	bool threads_on;
	struct job *jobs;
	unsigned njobs;
};

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void wal_log(void *ctx, const char *line)
{
	(void)ctx;
	srv_log(SRV_LOG_WARN, "persistence: %s", line);
}

/* The first failure makes the durable tables read-only; logged once. */
static int note_failure(struct srv_persist *p, int err)
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
		srv_log(SRV_LOG_ERROR,
			"persistence: the WAL in %s failed (%s%s%s): every async/sync table is "
			"read-only from now on (writes complete with -EROFS; never retried; restart "
			"the daemon to recover)", p->dir, strerror(-err), why[0] ? ": " : "", why);
	}
	return err;
}

/* ------------------------------------------------------------------------- */
/* Catalog                                                                    */
/* ------------------------------------------------------------------------- */

static bool zero(const void *p, size_t n)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < n; i++)
		if (b[i])
			return false;
	return true;
}

/* Decode a catalog image. 0, -EBADMSG / -EPROTO with *problem (static text). */
static int cat_decode(const unsigned char *b, size_t len, struct cat_entry **out,
		      uint32_t *count, const char **problem)
{
	uint32_t v, n, eb, r32;
	*out = NULL;
	*count = 0;
	if (len < CAT_HDR + 4 || memcmp(b, CAT_MAGIC, 8)) {
		*problem = "not a dynemb catalog (magic)";
		return -EBADMSG;
	}
	memcpy(&v, b + 8, 4);
	memcpy(&n, b + 12, 4);
	memcpy(&eb, b + 16, 4);
	memcpy(&r32, b + 20, 4);
	if (v != CAT_VERSION) {
		*problem = "another catalog version";
		return -EPROTO;
	}
	if (eb != CAT_ENTRY || n > DE_MANIFEST_MAX_TABLES || r32 || !zero(b + 24, 8) ||
	    len != CAT_HDR + (size_t)n * CAT_ENTRY + 4) {
		*problem = "bad header or file size";
		return -EBADMSG;
	}
	uint32_t crc;
	memcpy(&crc, b + len - 4, 4);
	if (crc != de_crc32c(0, b, len - 4)) {
		*problem = "checksum mismatch";
		return -EBADMSG;
	}
	struct cat_entry *e = calloc(n ? n : 1, sizeof *e);
	if (!e)
		return -ENOMEM;
	memcpy(e, b + CAT_HDR, (size_t)n * CAT_ENTRY);
	for (uint32_t i = 0; i < n; i++) {
		char msg[240];
		struct de_wire_table_config c = e[i].cfg;
		struct de_wire_learn_config l = e[i].learn;
		if (!e[i].table_id || (i && e[i].table_id <= e[i - 1].table_id) ||
		    e[i].reserved0 || e[i].reserved1) {
			*problem = "bad table id or reserved field";
			goto bad;
		}
		if (srv_name_check(e[i].name, msg, sizeof msg) ||
		    srv_wire_config_normalize(&c, msg, sizeof msg) ||
		    srv_learn_config_normalize(&l, &c, msg, sizeof msg) ||
		    memcmp(&c, &e[i].cfg, sizeof c) || memcmp(&l, &e[i].learn, sizeof l)) {
			*problem = "bad table name or config";
			goto bad;
		}
		for (uint32_t j = 0; j < i; j++)
			if (!strcmp(e[j].name, e[i].name)) {
				*problem = "a table name twice";
				goto bad;
			}
	}
	*out = e;
	*count = n;
	return 0;
bad:
	free(e);
	return -EBADMSG;
}

static int cat_read(const char *dir, struct cat_entry **out, uint32_t *count,
		    const char **problem)
{
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s/CATALOG", dir);
	*problem = NULL;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat st;
	int err = 0;
	unsigned char *b = NULL;
	if (fstat(fd, &st)) {
		err = -errno;
		goto out;
	}
	if (st.st_size > (off_t)(CAT_HDR + DE_MANIFEST_MAX_TABLES * CAT_ENTRY + 4) ||
	    st.st_size < (off_t)(CAT_HDR + 4)) {
		*problem = "bad file size";
		err = -EBADMSG;
		goto out;
	}
	size_t len = (size_t)st.st_size;
	if (!(b = malloc(len))) {
		err = -ENOMEM;
		goto out;
	}
	size_t got = 0;
	while (got < len) {
		ssize_t r = pread(fd, b + got, len - got, (off_t)got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			err = r < 0 ? -errno : -EBADMSG;
			*problem = r < 0 ? NULL : "file shrank while read";
			goto out;
		}
		got += (size_t)r;
	}
	err = cat_decode(b, len, out, count, problem);
out:
	free(b);
	close(fd);
	return err;
}

static int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len) {
		ssize_t r = write(fd, p, len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		p += r;
		len -= (size_t)r;
	}
	return 0;
}

/* Write the catalog of tables[0..n) (ids increasing). p->mu held. */
static int cat_write(struct srv_persist *p, struct srv_table *const *tables, unsigned n)
{
	size_t len = CAT_HDR + (size_t)n * CAT_ENTRY + 4;
	unsigned char *b = calloc(1, len);
	if (!b)
		return -ENOMEM;
	memcpy(b, CAT_MAGIC, 8);
	uint32_t v = CAT_VERSION, eb = CAT_ENTRY, cnt = n;
	memcpy(b + 8, &v, 4);
	memcpy(b + 12, &cnt, 4);
	memcpy(b + 16, &eb, 4);
	for (unsigned i = 0; i < n; i++) {
		struct cat_entry e;
		memset(&e, 0, sizeof e);
		e.table_id = tables[i]->ps->id;
		memcpy(e.name, tables[i]->name, DE_NAME_MAX);
		e.cfg = tables[i]->wcfg;
		e.learn = tables[i]->learn;
		memcpy(b + CAT_HDR + (size_t)i * CAT_ENTRY, &e, sizeof e);
	}
	uint32_t crc = de_crc32c(0, b, len - 4);
	memcpy(b + len - 4, &crc, 4);
	char tmp[PATH_MAX], path[PATH_MAX];
	snprintf(tmp, sizeof tmp, "%s/CATALOG.tmp", p->dir);
	snprintf(path, sizeof path, "%s/CATALOG", p->dir);
	int err = 0;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		err = -errno;
	if (!err)
		err = write_all(fd, b, len);
	if (!err && fsync(fd))
		err = -errno;
	if (fd >= 0)
		close(fd);
	if (!err && rename(tmp, path))
		err = -errno;
	if (!err) {
		int dfd = open(p->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd < 0 || fsync(dfd))
			err = -errno;
		if (dfd >= 0)
			close(dfd);
	} else {
		unlink(tmp);
	}
	free(b);
	return err;
}

/* ------------------------------------------------------------------------- */
/* Tables                                                                     */
/* ------------------------------------------------------------------------- */

static int tp_create(uint32_t id, uint32_t mode, struct srv_table_persist **out)
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
	pthread_mutex_init(&ps->ckpt, NULL);
	*out = ps;
	return 0;
}

static void tp_free(struct srv_table_persist *ps)
{
	if (!ps)
		return;
	de_dirty_destroy(ps->dirty);
	pthread_mutex_destroy(&ps->ckpt);
	free(ps);
}

static bool durable(const struct srv_table *t)
{
	return t->ps && t->ps->mode != DE_WDURABLE_NONE;
}

/* Add t to tables[] (ids increasing); recompute the commit period. p->mu held. */
static void table_add_locked(struct srv_persist *p, struct srv_table *t)
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

/* Progress of a checkpoint / export / import. */
struct prog {
	struct job *j;
};

static int checkpoint(struct srv_persist *p, struct srv_table *t, bool full, de_progress_fn cb,
		      void *ctx, struct de_snapshot_info *info)
{
	struct srv_table_persist *ps = t->ps;
	struct de_snapshot_info local;
	if (!info)
		info = &local;
	pthread_mutex_lock(&ps->ckpt);
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
	} else if (f) {
		__atomic_store_n(&ps->need_full, 1, __ATOMIC_RELEASE);
	}
	if (err && w && de_wal_failed(w, NULL, 0))
		note_failure(p, de_wal_failed(w, NULL, 0));
	pthread_mutex_unlock(&ps->ckpt);
	return err;
}

int srv_persist_table_open(struct srv_persist *p, struct srv_table *t, char *msg, size_t cap)
{
	uint32_t mode = t->learn.durability.mode;
	if (!p || !p->on) {
		if (mode != DE_WDURABLE_NONE) {
			snprintf(msg, cap, "table '%s': durability %s needs the daemon's [persistence] "
				 "data_dir (dynembd --data-dir DIR)", t->name,
				 mode == DE_WDURABLE_SYNC ? "sync" : "async");
			return -EINVAL;
		}
		return 0;
	}
	if (t->ps)
		return 0;
	pthread_mutex_lock(&p->mu);
	int err = 0;
	if (p->ntables == DE_MANIFEST_MAX_TABLES) {
		snprintf(msg, cap, "a daemon with a data_dir persists at most %u tables",
			 DE_MANIFEST_MAX_TABLES);
		err = -ENOSPC;
		goto out;
	}
	struct srv_table_persist *ps;
	if ((err = tp_create(p->next_id, mode, &ps))) {
		snprintf(msg, cap, "table '%s': %s", t->name, strerror(-err));
		goto out;
	}
	t->ps = ps;
	struct srv_table *all[DE_MANIFEST_MAX_TABLES];
	memcpy(all, p->tables, p->ntables * sizeof all[0]);
	all[p->ntables] = t; /* the new id is the largest */
	err = cat_write(p, all, p->ntables + 1);
	if (!err)
		err = checkpoint(p, t, true, NULL, NULL, NULL);
	if (err) {
		snprintf(msg, cap, "table '%s': cannot persist it in %s: %s", t->name, p->dir,
			 strerror(-err));
		srv_log(SRV_LOG_ERROR, "persistence: %s", msg);
		t->ps = NULL;
		tp_free(ps);
		goto out;
	}
	p->next_id++;
	table_add_locked(p, t);
	srv_log(SRV_LOG_INFO, "persistence: table '%s' is id %u, durability %s", t->name, ps->id,
		mode == DE_WDURABLE_SYNC ? "sync" : mode == DE_WDURABLE_ASYNC ? "async" : "none");
out:
	pthread_mutex_unlock(&p->mu);
	return err;
}

/* ------------------------------------------------------------------------- */
/* Write path (workers)                                                       */
/* ------------------------------------------------------------------------- */

int srv_persist_write_check(struct srv_worker *w, struct srv_table *t)
{
	if (!durable(t))
		return 0;
	return __atomic_load_n(&w->srv->persist->failed, __ATOMIC_ACQUIRE) ? -EROFS : 0;
}

int srv_persist_log(struct srv_worker *w, struct srv_table *t, bool erase, uint32_t n)
{
	struct srv_table_persist *ps = t->ps;
	if (!ps || !n)
		return 0;
	struct srv_persist *p = w->srv->persist;
	if (ps->mode == DE_WDURABLE_NONE) {
		if (de_dirty_add(ps->dirty, w->keys, n))
			__atomic_store_n(&ps->need_full, 1, __ATOMIC_RELEASE); /* nothing lost */
		return 0;
	}
	/* key 0 is "no feature": never written, never logged */
	const uint64_t *keys = w->keys;
	uint64_t *nz = NULL;
	size_t m = n;
	for (uint32_t i = 0; i < n; i++)
		if (!w->keys[i]) {
			if (!(nz = malloc((size_t)n * sizeof *nz)))
				return -ENOMEM;
			m = 0;
			for (uint32_t k = 0; k < n; k++)
				if (w->keys[k])
					nz[m++] = w->keys[k];
			keys = nz;
			break;
		}
	uint32_t rf = (uint32_t)de_table_row_floats(t->t);
	size_t chunk = de_wal_max_keys(p->wal, erase ? 1 : rf);
	int err = chunk ? 0 : -EMSGSIZE;
	uint64_t lsn = 0;
	for (size_t at = 0; !err && at < m; at += chunk) {
		struct de_wal_batch b = { .table_id = ps->id,
					  .type = erase ? DE_WAL_ERASE : DE_WAL_PUT,
					  .keys = keys + at, .n = m - at < chunk ? m - at : chunk,
					  .table = erase ? NULL : t->t, .dirty = ps->dirty };
		err = de_wal_append(p->wal, &b, &lsn);
	}
	free(nz);
	if (err)
		return note_failure(p, err);
	if (ps->mode == DE_WDURABLE_SYNC && lsn) {
		if (lsn > w->sync_lsn)
			w->sync_lsn = lsn;
		w->sync_pending = true;
	}
	return 0;
}

void srv_persist_sync_round(struct srv_worker *w, struct de_cqe *q, const bool *wait,
			    unsigned n)
{
	struct srv_persist *p = w->srv->persist;
	uint64_t lsn = w->sync_lsn;
	w->sync_lsn = 0;
	if (!lsn || !p || !p->wal)
		return;
	int err = de_wal_sync(p->wal, lsn);
	if (!err)
		return;
	err = note_failure(p, err);
	for (unsigned i = 0; i < n; i++)
		if (wait[i] && q[i].res == 0)
			q[i].res = err; /* not durable: never acknowledged */
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

/* ------------------------------------------------------------------------- */
/* Threads: group commit (async tables) and periodic checkpoints              */
/* ------------------------------------------------------------------------- */

static void deadline_in(struct timespec *ts, uint64_t ns)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	uint64_t t = (uint64_t)ts->tv_nsec + ns;
	ts->tv_sec += (time_t)(t / 1000000000ull);
	ts->tv_nsec = (long)(t % 1000000000ull);
}

static void *committer_main(void *arg)
{
	struct srv_persist *p = arg;
	pthread_mutex_lock(&p->mu);
	while (!p->stop) {
		if (!p->commit_ms) {
			pthread_cond_wait(&p->cv, &p->mu);
			continue;
		}
		struct timespec ts;
		deadline_in(&ts, (uint64_t)p->commit_ms * 1000000ull);
		pthread_cond_timedwait(&p->cv, &p->mu, &ts);
		if (p->stop)
			break;
		pthread_mutex_unlock(&p->mu);
		if (!__atomic_load_n(&p->failed, __ATOMIC_ACQUIRE) &&
		    de_wal_durable_lsn(p->wal) + 1 < de_wal_next_lsn(p->wal)) {
			int err = de_wal_flush(p->wal);
			if (err)
				note_failure(p, err);
		}
		pthread_mutex_lock(&p->mu);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

/* Checkpoint every table with dirty keys (or one that needs a full snapshot). */
static void checkpoint_dirty(struct srv_persist *p, const char *why)
{
	struct srv_table *ts[DE_MANIFEST_MAX_TABLES];
	pthread_mutex_lock(&p->mu);
	unsigned n = p->ntables;
	memcpy(ts, p->tables, n * sizeof ts[0]);
	pthread_mutex_unlock(&p->mu);
	for (unsigned i = 0; i < n; i++) {
		struct srv_table_persist *ps = ts[i]->ps;
		if (!de_dirty_count(ps->dirty) && !__atomic_load_n(&ps->need_full, __ATOMIC_ACQUIRE))
			continue;
		if (ps->mode != DE_WDURABLE_NONE && __atomic_load_n(&p->failed, __ATOMIC_ACQUIRE))
			continue;
		struct de_snapshot_info info;
		int err = checkpoint(p, ts[i], false, NULL, NULL, &info);
		if (err)
			srv_log(SRV_LOG_WARN, "persistence: %s checkpoint of table '%s' failed: %s", why,
				ts[i]->name, strerror(-err));
		else
			srv_log(SRV_LOG_DEBUG, "persistence: %s checkpoint of '%s': %" PRIu64
				" records, lsn %" PRIu64, why, ts[i]->name, info.records, info.start_lsn);
	}
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
		checkpoint_dirty(p, "periodic");
		pthread_mutex_lock(&p->mu);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

/* ------------------------------------------------------------------------- */
/* Startup                                                                    */
/* ------------------------------------------------------------------------- */

int srv_mkdir_p(const char *path, mode_t mode)
{
	char buf[PATH_MAX];
	snprintf(buf, sizeof buf, "%s", path);
	for (char *q = buf + 1; *q; q++) {
		if (*q != '/')
			continue;
		*q = 0;
		if (mkdir(buf, mode) && errno != EEXIST)
			return -errno;
		*q = '/';
	}
	if (mkdir(buf, mode) && errno != EEXIST)
		return -errno;
	return 0;
}

static int corrupt_status(int err)
{
	return err == -EBADMSG || err == -EPROTO || err == -EEXIST || err == -ENOENT ||
	       err == -EINVAL ? SRV_EXIT_CORRUPT : 1;
}

static int persist_start(struct srv_server *s, struct srv_persist *p)
{
	int err = srv_mkdir_p(p->dir, 0755);
	if (err) {
		srv_log(SRV_LOG_ERROR, "persistence: cannot create data_dir %s: %s", p->dir,
			strerror(-err));
		return 1;
	}
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s/LOCK", p->dir);
	p->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (p->lock_fd < 0 || flock(p->lock_fd, LOCK_EX | LOCK_NB)) {
		srv_log(SRV_LOG_ERROR, "persistence: %s: %s", path,
			errno == EWOULDBLOCK ? "another dynembd uses this data_dir" : strerror(errno));
		return 1;
	}
	struct cat_entry *cat = NULL;
	uint32_t ncat = 0;
	const char *problem = NULL;
	err = cat_read(p->dir, &cat, &ncat, &problem);
	if (err == -ENOENT) {
		err = 0;
	} else if (err) {
		srv_log(SRV_LOG_ERROR, "persistence: %s/CATALOG is damaged: %s (%s); not starting",
			p->dir, problem ? problem : strerror(-err), strerror(-err));
		return err == -ENOMEM ? 1 : SRV_EXIT_CORRUPT;
	}
	int status = 0;
	struct de_recover_table *rt = calloc(ncat ? ncat : 1, sizeof *rt);
	if (!rt) {
		free(cat);
		return 1;
	}
	p->next_id = 1;
	for (uint32_t i = 0; i < ncat; i++) {
		char msg[240];
		struct srv_table *t;
		bool created;
		err = srv_registry_open(&s->reg, cat[i].name, &cat[i].cfg, &cat[i].learn, &t,
					&created, msg, sizeof msg);
		if (!err)
			err = tp_create(cat[i].table_id, cat[i].learn.durability.mode, &t->ps);
		if (err) {
			srv_log(SRV_LOG_ERROR, "persistence: cannot recreate table '%s' of %s/CATALOG: "
				"%s", cat[i].name, p->dir, err == -ENOMEM ? "out of memory" : msg);
			status = 1;
			goto out;
		}
		/* the rows WAL replay brings back are in no dirty set: an incremental
		 * snapshot would move the table's wal_lsn past them, so the first
		 * checkpoint after a start is full */
		t->ps->need_full = 1;
		table_add_locked(p, t);
		rt[i] = (struct de_recover_table){ .table_id = cat[i].table_id, .table = t->t };
		p->next_id = cat[i].table_id + 1;
	}
	struct de_recover_report rep;
	memset(&rep, 0, sizeof rep);
	err = de_persist_recover(p->dir, rt, ncat, wal_log, NULL, &rep);
	if (err) {
		srv_log(SRV_LOG_ERROR, "persistence: recovery of %s failed: %s (%s); not starting",
			p->dir, rep.message[0] ? rep.message : "?", strerror(-err));
		status = corrupt_status(err);
		goto out;
	}
	srv_log(SRV_LOG_INFO, "persistence: recovered %u tables from %s: manifest %s "
		"(generation %" PRIu64 "), %u snapshots (%" PRIu64 " rows), %" PRIu64
		" WAL records applied, next LSN %" PRIu64, ncat, p->dir,
		rep.manifest ? "found" : "none", rep.generation, rep.snapshots, rep.snapshot_rows,
		rep.wal_applied, rep.next_lsn);
	if (rep.wal.bytes_dropped)
		srv_log(SRV_LOG_WARN, "persistence: WAL torn tail truncated: %" PRIu64 " bytes (at "
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
out:
	free(rt);
	free(cat);
	return status;
}

/* After detaching (io_uring buffers and threads do not survive fork): the WAL, then the
 * group-commit and checkpoint threads. */
int srv_persist_start(struct srv_persist *p)
{
	if (!p || !p->on)
		return 0;
	struct de_wal_options wo = { .segment_bytes = p->cfg->wal_segment_bytes,
				     .start_lsn = p->next_lsn, .log = wal_log };
	int err = de_wal_open(p->dir, &wo, &p->wal);
	if (err) {
		srv_log(SRV_LOG_ERROR, "persistence: cannot open the WAL in %s: %s", p->dir,
			strerror(-err));
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

int srv_persist_open(struct srv_server *s)
{
	struct srv_persist *p = calloc(1, sizeof *p);
	if (!p)
		return 1;
	p->cfg = &s->cfg;
	p->lock_fd = -1;
	pthread_mutex_init(&p->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&p->cv, &ca);
	pthread_condattr_destroy(&ca);
	s->persist = p;
	if (!s->cfg.data_dir[0]) {
		srv_log(SRV_LOG_INFO, "persistence: off (no data_dir): tables live in memory only");
		return 0;
	}
	p->on = true;
	snprintf(p->dir, sizeof p->dir, "%s", s->cfg.data_dir);
	return persist_start(s, p);
}

static void jobs_reap(struct srv_persist *p, bool all);

void srv_persist_stop(struct srv_persist *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	p->stop = true;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	jobs_reap(p, true);
	if (p->threads_on) {
		pthread_join(p->committer, NULL);
		if (p->cfg->snapshot_interval_s)
			pthread_join(p->checkpointer, NULL);
		p->threads_on = false;
	}
	if (p->wal) {
		checkpoint_dirty(p, "shutdown");
		int err = de_wal_close(p->wal);
		p->wal = NULL;
		if (err && !p->failed)
			srv_log(SRV_LOG_ERROR, "persistence: closing the WAL: %s", strerror(-err));
	}
}

void srv_persist_free(struct srv_persist *p)
{
	if (!p)
		return;
	srv_persist_stop(p);
	for (unsigned i = 0; i < p->ntables; i++) {
		tp_free(p->tables[i]->ps);
		p->tables[i]->ps = NULL;
	}
	if (p->lock_fd >= 0)
		close(p->lock_fd);
	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->mu);
	free(p);
}

/* ------------------------------------------------------------------------- */
/* Control plane: SNAPSHOT, EXPORT, IMPORT                                    */
/* ------------------------------------------------------------------------- */

static bool nul_within(const char *s, size_t cap)
{
	return memchr(s, 0, cap) != NULL;
}

static int path_check(const char *path, char *msg, size_t cap)
{
	if (!nul_within(path, DE_PATH_MAX) || path[0] != '/') {
		snprintf(msg, cap, "the path must be absolute and NUL-terminated within %u bytes",
			 DE_PATH_MAX);
		return -EINVAL;
	}
	for (const char *q = path; *q;) {
		while (*q == '/')
			q++;
		size_t n = strcspn(q, "/");
		if ((n == 1 && q[0] == '.') || (n == 2 && q[0] == '.' && q[1] == '.')) {
			snprintf(msg, cap, "the path must not have '.' or '..' components");
			return -EINVAL;
		}
		q += n;
	}
	size_t len = strlen(path);
	if (path[len - 1] == '/') {
		snprintf(msg, cap, "the path names a directory, not a file");
		return -EINVAL;
	}
	return 0;
}

int srv_check_persist_msg(union srv_msg *m, char *msg, size_t cap)
{
	switch (m->h.type) {
	case DE_MSG_SNAPSHOT:
		if ((m->snapshot.flags & ~DE_SNAP_FULL) || m->snapshot.pad) {
			snprintf(msg, cap, "SNAPSHOT: unknown flags or a nonzero pad");
			return -EINVAL;
		}
		if (zero(m->snapshot.name, DE_NAME_MAX))
			return 0;
		return srv_name_check(m->snapshot.name, msg, cap);
	case DE_MSG_EXPORT: {
		int err = srv_name_check(m->exp.name, msg, cap);
		return err ? err : path_check(m->exp.path, msg, cap);
	}
	case DE_MSG_IMPORT: {
		if ((m->imp.flags & ~DE_WIMPORT_SALVAGE) || m->imp.pad) {
			snprintf(msg, cap, "IMPORT: unknown flags or a nonzero pad");
			return -EINVAL;
		}
		int err = srv_name_check(m->imp.name, msg, cap);
		return err ? err : path_check(m->imp.path, msg, cap);
	}
	default:
		return 0;
	}
}

static void hdr(struct de_msg_hdr *h, uint16_t type, uint32_t len, uint32_t seq)
{
	*h = (struct de_msg_hdr){ .magic = DE_MSG_MAGIC, .type = type,
				  .version = DE_PROTO_VERSION, .len = len, .seq = seq };
}

/* Send one packet; wait up to wait_ms for room (0: drop it when the socket is full). */
static int send_pkt(int sock, const void *buf, size_t len, int wait_ms)
{
	uint64_t end = mono_ns() + (uint64_t)wait_ms * 1000000ull;
	for (;;) {
		ssize_t r = send(sock, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (r == (ssize_t)len)
			return 0;
		if (r >= 0)
			return -EIO;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN || !wait_ms)
			return -errno;
		uint64_t now = mono_ns();
		if (now >= end)
			return -ETIMEDOUT;
		struct pollfd pf = { .fd = sock, .events = POLLOUT };
		poll(&pf, 1, (int)((end - now) / 1000000ull) + 1);
	}
}

__attribute__((format(printf, 5, 6)))
static void send_err(int sock, uint32_t seq, int err, int wait_ms, const char *fmt, ...)
{
	struct de_msg_error m;
	memset(&m, 0, sizeof m);
	hdr(&m.h, DE_MSG_ERROR, sizeof m, seq);
	m.err = err;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(m.msg, sizeof m.msg, fmt, ap);
	va_end(ap);
	send_pkt(sock, &m, sizeof m, wait_ms);
}

/* Before the final reply: the client may send its next request as soon as it has it,
 * and this job must not count as running then (srv_persist_request's -EBUSY). */
static void finishing(struct job *j)
{
	__atomic_store_n(&j->replying, 1, __ATOMIC_RELEASE);
}

static int job_progress(void *ctx, uint64_t done, uint64_t total)
{
	struct job *j = ctx;
	if (__atomic_load_n(&j->p->stop, __ATOMIC_ACQUIRE))
		return 1; /* the daemon is stopping: -ECANCELED */
	uint64_t now = mono_ns();
	if (now - j->last_ns < PROGRESS_NS && done != total)
		return 0;
	j->last_ns = now;
	struct de_msg_progress m;
	memset(&m, 0, sizeof m);
	hdr(&m.h, DE_MSG_PROGRESS, sizeof m, j->m.h.seq);
	m.done = done;
	m.total = total;
	m.phase = j->phase;
	m.table_index = j->index;
	snprintf(m.name, sizeof m.name, "%s", j->tname ? j->tname : "");
	send_pkt(j->sock, &m, sizeof m, 0); /* a client that does not read misses some */
	return 0;
}

static void job_snapshot(struct job *j)
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
	hdr(&ok.h, DE_MSG_SNAPSHOT_OK, sizeof ok, j->m.h.seq);
	j->phase = DE_PHASE_SNAPSHOT;
	for (unsigned i = 0; i < n; i++) {
		struct de_snapshot_info info;
		j->index = i;
		j->tname = ts[i]->name;
		j->last_ns = 0;
		int err = durable(ts[i]) && __atomic_load_n(&p->failed, __ATOMIC_ACQUIRE)
				  ? -EROFS
				  : checkpoint(p, ts[i], j->m.snapshot.flags & DE_SNAP_FULL,
					       job_progress, j, &info);
		if (err) {
			srv_log(SRV_LOG_WARN, "persistence: snapshot of table '%s' failed: %s",
				ts[i]->name, strerror(-err));
			finishing(j);
			send_err(j->sock, j->m.h.seq, err, FINAL_SEND_MS,
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
	srv_log(SRV_LOG_INFO, "persistence: snapshot of %u table(s): %" PRIu64 " rows, %" PRIu64
		" bytes, lsn %" PRIu64, ok.tables, ok.rows, ok.bytes, ok.lsn);
	finishing(j);
	send_pkt(j->sock, &ok, sizeof ok, FINAL_SEND_MS);
}

static void job_export(struct job *j)
{
	j->phase = DE_PHASE_EXPORT;
	j->tname = j->t->name;
	uint64_t records = 0;
	int err = de_export(j->t->t, j->m.exp.path, job_progress, j, &records);
	if (err) {
		srv_log(SRV_LOG_WARN, "export of table '%s' to %s failed: %s", j->t->name,
			j->m.exp.path, strerror(-err));
		finishing(j);
		send_err(j->sock, j->m.h.seq, err, FINAL_SEND_MS, "export of '%s' to %s: %s",
			 j->t->name, j->m.exp.path, strerror(-err));
		return;
	}
	struct de_msg_export_ok ok;
	memset(&ok, 0, sizeof ok);
	hdr(&ok.h, DE_MSG_EXPORT_OK, sizeof ok, j->m.h.seq);
	ok.records = records;
	struct stat st;
	if (stat(j->m.exp.path, &st) == 0)
		ok.bytes = (uint64_t)st.st_size;
	srv_log(SRV_LOG_INFO, "exported table '%s' to %s: %" PRIu64 " records", j->t->name,
		j->m.exp.path, records);
	finishing(j);
	send_pkt(j->sock, &ok, sizeof ok, FINAL_SEND_MS);
}

static void job_import(struct job *j)
{
	struct srv_persist *p = j->p;
	j->phase = DE_PHASE_IMPORT;
	j->tname = j->t->name;
	struct de_import_report rep;
	memset(&rep, 0, sizeof rep);
	unsigned flags = (j->m.imp.flags & DE_WIMPORT_SALVAGE) ? DE_IMPORT_SALVAGE : 0;
	int err = de_import(j->t->t, j->m.imp.path, flags, job_progress, j, &rep);
	if (err) {
		finishing(j);
		send_err(j->sock, j->m.h.seq, err, FINAL_SEND_MS, "import of %s into '%s': %s%s%s%s",
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
		err = checkpoint(p, j->t, true, job_progress, j, NULL);
		if (err) {
			finishing(j);
			send_err(j->sock, j->m.h.seq, err, FINAL_SEND_MS,
				 "import of %s into '%s': %" PRIu64 " records imported but the "
				 "snapshot that makes them durable failed: %s", j->m.imp.path,
				 j->t->name, rep.imported, strerror(-err));
			return;
		}
	}
	struct de_msg_import_ok ok;
	memset(&ok, 0, sizeof ok);
	hdr(&ok.h, DE_MSG_IMPORT_OK, sizeof ok, j->m.h.seq);
	ok.records = rep.records;
	ok.imported = rep.imported;
	ok.dropped = rep.dropped;
	if (rep.problem)
		snprintf(ok.problem, sizeof ok.problem, "%s", rep.problem);
	srv_log(SRV_LOG_INFO, "imported %s into table '%s': %" PRIu64 " of %" PRIu64 " records",
		j->m.imp.path, j->t->name, rep.imported, rep.records);
	finishing(j);
	send_pkt(j->sock, &ok, sizeof ok, FINAL_SEND_MS);
}

static void *job_main(void *arg)
{
	struct job *j = arg;
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

/* Join finished jobs (all: every job, waiting). Not under p->mu. */
static void jobs_reap(struct srv_persist *p, bool all)
{
	for (;;) {
		struct job *j = NULL;
		pthread_mutex_lock(&p->mu);
		for (struct job **pp = &p->jobs; *pp; pp = &(*pp)->next)
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

static struct srv_table *table_by_name(struct srv_server *s, const char *name)
{
	for (struct srv_table *t = s->reg.head; t; t = t->next)
		if (!strcmp(t->name, name))
			return t;
	return NULL;
}

/* Is path (checked: absolute, no . or ..) inside export_dir? Its directory must resolve
 * (realpath) to export_dir or below it; the file itself may not exist yet. */
static int path_allowed(const struct srv_config *cfg, const char *path, char *msg, size_t cap)
{
	if (!cfg->export_dir[0]) {
		snprintf(msg, cap, "export/import through the daemon is off: set [persistence] "
			 "export_dir (the daemon writes and reads files as its own user)");
		return -EPERM;
	}
	char dir[DE_PATH_MAX], real_dir[PATH_MAX], real_base[PATH_MAX];
	snprintf(dir, sizeof dir, "%s", path);
	*strrchr(dir, '/') = 0;
	if (!realpath(dir[0] ? dir : "/", real_dir)) {
		snprintf(msg, cap, "%.180s: %s", dir[0] ? dir : "/", strerror(errno));
		return -errno;
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

bool srv_persist_request(struct srv_server *s, struct srv_client *c, const union srv_msg *m)
{
	struct srv_persist *p = s->persist;
	char msg[240];
	int err = 0;
	const char *name = m->h.type == DE_MSG_SNAPSHOT ? m->snapshot.name
			   : m->h.type == DE_MSG_EXPORT ? m->exp.name : m->imp.name;
	struct srv_table *t = NULL;
	jobs_reap(p, false);
	if (name[0] && !(t = table_by_name(s, name))) {
		snprintf(msg, sizeof msg, "no table '%s' in this daemon", name);
		err = -ENOENT;
	} else if (m->h.type == DE_MSG_SNAPSHOT && !p->on) {
		snprintf(msg, sizeof msg, "snapshots need the daemon's [persistence] data_dir");
		err = -EINVAL;
	} else if (m->h.type == DE_MSG_SNAPSHOT && t && !t->ps) {
		snprintf(msg, sizeof msg, "table '%s' is not persisted", name);
		err = -EINVAL;
	} else if (m->h.type == DE_MSG_IMPORT && durable(t) &&
		   __atomic_load_n(&p->failed, __ATOMIC_ACQUIRE)) {
		snprintf(msg, sizeof msg, "table '%s' is read-only: its WAL failed", name);
		err = -EROFS;
	} else if (m->h.type != DE_MSG_SNAPSHOT) {
		err = path_allowed(&s->cfg, m->h.type == DE_MSG_EXPORT ? m->exp.path : m->imp.path,
				   msg, sizeof msg);
	}
	struct job *j = NULL;
	if (!err) {
		pthread_mutex_lock(&p->mu);
		for (struct job *q = p->jobs; q; q = q->next)
			if (q->client == c->id && !__atomic_load_n(&q->replying, __ATOMIC_ACQUIRE)) {
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
			j->client = c->id;
			j->m = *m;
			j->t = t;
			j->sock = fcntl(c->sock, F_DUPFD_CLOEXEC, 0);
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
		send_err(c->sock, m->h.seq, err, 0, "%s", msg);
		return true;
	}
	srv_log(SRV_LOG_INFO, "client %u: %s %s%s%s", c->id,
		m->h.type == DE_MSG_SNAPSHOT ? "snapshot" : m->h.type == DE_MSG_EXPORT ? "export"
											   : "import",
		name[0] ? name : "(every table)", m->h.type == DE_MSG_SNAPSHOT ? "" : " ",
		m->h.type == DE_MSG_EXPORT ? m->exp.path
		: m->h.type == DE_MSG_IMPORT ? m->imp.path : "");
	return true;
}
