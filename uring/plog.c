/*
 * plog.c — the power-loss log of test builds (-Dfault_injection=true): a hook that sees,
 * in order, every operation of libdeuring that decides what a disk keeps after a power
 * loss: writes (with their bytes) as they are queued and as they complete, fsyncs and
 * fdatasyncs as they are queued and as they complete, directory fsyncs, file creation
 * (O_CREAT | O_TRUNC), rename, unlink, ftruncate and mkdir. tests/persist/test_powerloss.c
 * installs it (de_persist_plog), rebuilds the directory a disk could hold at each cut of
 * the log and runs recovery on it.
 *
 * Owns: the one installed hook (a process-wide pointer, test builds only), the event ids
 * and the file hook (de_persist_plog_file: each event appended to a file, for a daemon
 * under test; the format is struct plog_frec below). Callers: the file operations of
 * util.c, wal.c and manifest.c through du_plog (uring_pvt.h; a no-op in release builds
 * and while no hook is installed), and the daemon's CATALOG writer through
 * de_persist_plog_note.
 * Never: changes what the operation does, or fails it; calls the hook for reads.
 * Events of all threads go to the hook one at a time, under one lock, in the order they
 * are reported: the hook sees one total order.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "uring_pvt.h"

#ifdef DE_FAULT_INJECTION

static pthread_mutex_t plog_mu = PTHREAD_MUTEX_INITIALIZER;
static de_plog_fn plog_fn;   /* written under plog_mu; read without it first */
static void *plog_ctx;       /* under plog_mu */
static uint64_t plog_next_id = 1;

void de_persist_plog(de_plog_fn fn, void *ctx)
{
	pthread_mutex_lock(&plog_mu);
	plog_ctx = ctx;
	__atomic_store_n(&plog_fn, fn, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&plog_mu);
}

/* the path an open fd names now ("" when it cannot be read) */
static void fd_path(int fd, char *buf, size_t cap)
{
	char link[40];
	snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
	ssize_t n = readlink(link, buf, cap - 1);
	buf[n > 0 ? (size_t)n : 0] = 0;
}

uint64_t du_plog(enum de_plog_op op, int fd, const char *path, const char *path2, uint64_t id,
		 uint64_t off, uint64_t len, const void *data, bool linked)
{
	char buf[4096];
	/* relaxed: a hook installed or removed meanwhile is seen under the lock below */
	if (!__atomic_load_n(&plog_fn, __ATOMIC_RELAXED))
		return 0;
	pthread_mutex_lock(&plog_mu);
	if (!plog_fn) {
		pthread_mutex_unlock(&plog_mu);
		return 0;
	}
	if (op == DE_PLOG_WRITE || op == DE_PLOG_FSYNC)
		id = plog_next_id++;
	if (!path && fd >= 0) {
		fd_path(fd, buf, sizeof buf);
		path = buf;
	}
	struct de_plog_event e = { .op = op, .id = id, .path = path, .path2 = path2, .off = off,
				   .len = len, .data = data, .linked = linked };
	plog_fn(plog_ctx, &e);
	pthread_mutex_unlock(&plog_mu);
	return id;
}

uint64_t de_persist_plog_note(enum de_plog_op op, const char *path, const char *path2,
			      uint64_t id, uint64_t off, uint64_t len, const void *data)
{
	return du_plog(op, -1, path, path2, id, off, len, data, false);
}

/* ---- the file hook: a daemon under test logs into a file ---------------------------- */

/* One event in the file, then path, path2 (no NULs) and, for a WRITE, its len bytes. */
struct plog_frec {
	uint32_t op, linked;
	uint64_t id, off, len;
	uint32_t path_len, path2_len;
};

static void file_hook(void *ctx, const struct de_plog_event *e)
{
	int fd = (int)(intptr_t)ctx;
	struct plog_frec r = { .op = (uint32_t)e->op, .linked = e->linked, .id = e->id,
			       .off = e->off, .len = e->len,
			       .path_len = e->path ? (uint32_t)strlen(e->path) : 0,
			       .path2_len = e->path2 ? (uint32_t)strlen(e->path2) : 0 };
	struct iovec v[4] = { { &r, sizeof r }, { (void *)(e->path ? e->path : ""), r.path_len },
			      { (void *)(e->path2 ? e->path2 : ""), r.path2_len },
			      { (void *)e->data, e->op == DE_PLOG_WRITE ? e->len : 0 } };
	size_t want = 0;
	for (int i = 0; i < 4; i++)
		want += v[i].iov_len;
	/* O_APPEND: one writev per event; a short one (never on a local file) ends the log */
	if (writev(fd, v, 4) != (ssize_t)want)
		__atomic_store_n(&plog_fn, NULL, __ATOMIC_RELAXED);
}

int de_persist_plog_file(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	de_persist_plog(file_hook, (void *)(intptr_t)fd);
	return 0;
}

#endif
