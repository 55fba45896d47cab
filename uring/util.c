/*
 * util.c — what the files of libdeuring share (declared in uring_pvt.h): CRC32C, the row
 * record CRC of the export and snapshot formats, one io_uring with a few buffers (and the
 * tmp-file commit on it), the writer loop of record files (du_rec_write: the records of
 * export and snapshot files streamed out of a table), file helpers (open a regular
 * file, whole-file read, atomic replace, directory fsync, the durable mkdir -p) and the
 * fault-injection counters (and the test builds' trace of writes and fsyncs). Formats live with their readers and writers (export.c, wal.c, snapshot.c,
 * manifest.c); nothing here knows one.
 * Never: keeps global mutable state, except the per-thread fault plan of test builds.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <liburing.h>

#ifdef DE_HAVE_ISAL
#include <isa-l/crc.h>
#endif

#include "uring_pvt.h"

#if defined(__SANITIZE_THREAD__)
#define DU_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define DU_TSAN 1
#endif
#endif
#ifdef DU_TSAN
#include <sanitizer/tsan_interface.h>
#endif

/* ------------------------------------------------------------------------- */
/* Fault injection                                                            */
/* ------------------------------------------------------------------------- */

#ifdef DE_FAULT_INJECTION
__thread struct du_fault du_tls_fault;

bool du_fault_hit(struct du_fault *f, enum de_fault_kind k)
{
	if (!f || (unsigned)k >= DE_FAULT_KINDS || f->left[k] <= 0)
		return false;
	return --f->left[k] == 0;
}

/* the calling thread's trace of its du_io writes and fsyncs (de_persist_trace) */
static __thread struct {
	struct de_io_trace_event *ev;
	size_t cap, n;
} io_trace;

size_t de_persist_trace(struct de_io_trace_event *buf, size_t cap)
{
	size_t n = io_trace.ev ? io_trace.n : 0;
	io_trace.ev = buf;
	io_trace.cap = buf ? cap : 0;
	io_trace.n = 0;
	return n;
}

static void trace_io(uint32_t kind, const struct du_io *io, const struct du_iobuf *b,
		     bool linked, int res)
{
	if (!io_trace.ev)
		return;
	if (io_trace.n < io_trace.cap)
		io_trace.ev[io_trace.n] = (struct de_io_trace_event){
			.kind = kind, .linked = linked, .fd = io->fd, .res = res,
			.off = b ? b->off + b->done : 0, .len = b ? b->len - b->done : 0 };
	io_trace.n++;
}
#else
#define trace_io(kind, io, b, linked, res) ((void)0)
#endif

#ifdef DE_FAULT_INJECTION
long de_persist_fail(enum de_fault_kind k, long nth)
{
	if ((unsigned)k >= DE_FAULT_KINDS)
		return -EINVAL;
	long prev = du_tls_fault.left[k];
	du_tls_fault.left[k] = nth > 0 ? nth : 0;
	return prev;
}
#endif

void *du_malloc(size_t n)
{
#ifdef DE_FAULT_INJECTION
	if (du_fault_hit(&du_tls_fault, DE_FAULT_ALLOC))
		return NULL;
#endif
	return malloc(n ? n : 1);
}

void *du_calloc(size_t n, size_t size)
{
#ifdef DE_FAULT_INJECTION
	if (du_fault_hit(&du_tls_fault, DE_FAULT_ALLOC))
		return NULL;
#endif
	return calloc(n ? n : 1, size ? size : 1);
}

/* ------------------------------------------------------------------------- */
/* CRC32C                                                                     */
/* ------------------------------------------------------------------------- */

/*
 * With libisal (meson finds pkg-config libisal and defines DE_HAVE_ISAL): isa-l's
 * crc32_iscsi, which picks the fastest kernel for the CPU at load time (PCLMUL folding,
 * about 3x the single crc32 instruction on long buffers). It neither pre- nor
 * post-inverts, so we do, and its length is an int, so long buffers go in pieces.
 * Without it: the SSE4.2 crc32 instruction where the CPU has it, else bitwise (slow, but
 * no mutable table: nothing here keeps global state).
 */
#ifdef DE_HAVE_ISAL
static uint32_t crc_raw(uint32_t crc, const unsigned char *p, size_t len)
{
	while (len) {
		size_t n = len > (1u << 30) ? (1u << 30) : len;
		crc = crc32_iscsi((unsigned char *)p, (int)n, crc);
		p += n;
		len -= n;
	}
	return crc;
}
#else
__attribute__((target("sse4.2"))) static uint32_t crc_sse42(uint32_t crc, const unsigned char *p,
							     size_t len)
{
	uint64_t c = crc;
	for (; len >= 8; p += 8, len -= 8) {
		uint64_t v;
		memcpy(&v, p, 8);
		c = __builtin_ia32_crc32di(c, v);
	}
	uint32_t c32 = (uint32_t)c;
	for (; len; p++, len--)
		c32 = __builtin_ia32_crc32qi(c32, *p);
	return c32;
}

static uint32_t crc_raw(uint32_t crc, const unsigned char *p, size_t len)
{
#if defined(__x86_64__) || defined(__i386__)
	if (__builtin_cpu_supports("sse4.2"))
		return crc_sse42(crc, p, len);
#endif
	for (; len; p++, len--) {
		crc ^= *p;
		for (int k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0x82f63b78u & (0u - (crc & 1u)));
	}
	return crc;
}
#endif

uint32_t de_crc32c(uint32_t crc, const void *buf, size_t len)
{
	return ~crc_raw(~crc, buf, len);
}

const char *du_config_mismatch(const struct de_table_config *a, const struct de_table_config *b)
{
	if (a->dim != b->dim)
		return "dim";
	if (a->nslots != b->nslots)
		return "nslots";
	if (a->init != b->init)
		return "init";
	if (a->init_a != b->init_a)
		return "init_a";
	if (a->init_b != b->init_b)
		return "init_b";
	if (a->slot_init != b->slot_init)
		return "slot_init";
	if (a->seed != b->seed)
		return "seed";
	return NULL;
}

void du_hdr_config_put(struct du_hdr_config *h, const struct de_table_config *c)
{
	h->dim = c->dim;
	h->nslots = c->nslots;
	h->init = (uint32_t)c->init;
	h->init_a = c->init_a;
	h->init_b = c->init_b;
	h->slot_init = c->slot_init;
	h->seed = c->seed;
}

int du_hdr_config_get(const struct du_hdr_config *h, uint32_t seg_buckets,
		      struct de_table_config *out)
{
	struct de_table_config c = { .dim = h->dim, .nslots = h->nslots,
				     .init = (enum de_init)h->init, .init_a = h->init_a,
				     .init_b = h->init_b, .slot_init = h->slot_init,
				     .seed = h->seed, .seg_buckets = seg_buckets };
	if (h->init > DE_INIT_TRUNC_NORMAL || de_table_config_check(&c, out, NULL, 0))
		return -EBADMSG;
	return 0;
}

uint32_t du_record_crc(uint64_t index, const unsigned char *rec, uint32_t record_bytes)
{
	uint32_t c = de_crc32c(0, &index, 8);
	c = de_crc32c(c, rec, 32);
	return de_crc32c(c, rec + 36, record_bytes - 36);
}

/* ------------------------------------------------------------------------- */
/* One ring, a few buffers: writes or reads with short transfers completed     */
/* ------------------------------------------------------------------------- */

struct io_uring_sqe *du_get_sqe(struct du_io *io)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&io->ring);
	if (!sqe) {
		io_uring_submit(&io->ring);
		sqe = io_uring_get_sqe(&io->ring);
	}
	return sqe; /* never NULL: at most DU_NBUF + 3 requests in a ring of 8 after a submit */
}

int du_io_queue(struct du_io *io, unsigned i, unsigned sqe_flags)
{
	struct du_iobuf *b = &io->b[i];
	if (io->write && du_fault_hit(io->fault, DE_FAULT_WRITE))
		return -EIO;
	struct io_uring_sqe *sqe = du_get_sqe(io);
	if (!sqe)
		return -EBUSY;
	if (io->write)
		b->plog_id = du_plog(DE_PLOG_WRITE, io->fd, NULL, NULL, 0, b->off + b->done,
				     b->len - b->done, b->p + b->done, sqe_flags & IOSQE_IO_LINK);
	if (io->write)
		io_uring_prep_write(sqe, io->fd, b->p + b->done, (unsigned)(b->len - b->done),
				    b->off + b->done);
	else
		io_uring_prep_read(sqe, io->fd, b->p + b->done, (unsigned)(b->len - b->done),
				   b->off + b->done);
	io_uring_sqe_set_data64(sqe, i);
	sqe->flags |= sqe_flags;
	if (io->write)
		trace_io(DE_IO_WRITE_QUEUED, io, b, sqe_flags & IOSQE_IO_LINK, 0);
	if (!b->busy) {
		b->busy = true;
		io->inflight++;
	}
	return 0;
}

int du_io_submit(struct du_io *io)
{
	int r = io_uring_submit(&io->ring);
	return r < 0 ? r : 0;
}

/* Wait for one completion and account for it; a short transfer is resubmitted. */
int du_io_reap(struct du_io *io)
{
	struct io_uring_cqe *cqe;
	int r;
	do
		r = io_uring_wait_cqe(&io->ring, &cqe);
	while (r == -EINTR);
	if (r < 0)
		return r;
	uint64_t tag = io_uring_cqe_get_data64(cqe);
	int res = cqe->res;
	io_uring_cqe_seen(&io->ring, cqe);
	io->inflight--;
	if (tag == DU_TAG_FSYNC) {
		trace_io(DE_IO_FSYNC_DONE, io, NULL, false, res);
		if (res == 0) {
			io->fsync_done = true;
			du_plog(DE_PLOG_FSYNC_DONE, -1, NULL, NULL, io->plog_fsync, 0, 0, NULL, false);
		} else if (res != -ECANCELED && !io->err)
			io->err = res;
		return 0;
	}
	if (tag >= DU_NBUF + 2)
		return -EIO;
	struct du_iobuf *b = &io->b[tag];
	b->busy = false;
	if (io->write)
		trace_io(DE_IO_WRITE_DONE, io, b, false, res);
	if (res < 0) {
		if (!io->err)
			io->err = res;
		return 0;
	}
	if (res == 0) {
		if (io->write) {
			if (!io->err)
				io->err = -EIO;
		} else {
			b->eof = true;
		}
		return 0;
	}
	if (io->write)
		du_plog(DE_PLOG_WRITE_DONE, -1, NULL, NULL, b->plog_id, 0, (uint64_t)res, NULL, false);
	b->done += (size_t)res;
	if (b->done < b->len && !io->err) {
		r = du_io_queue(io, (unsigned)tag, 0);
		if (!r)
			r = du_io_submit(io);
		if (r && !io->err)
			io->err = r;
	}
	return 0;
}

int du_io_drain(struct du_io *io)
{
	/* requests queued but not submitted (an error between queue and submit): submit
	 * them, or waiting for their completions would never end */
	if (io->inflight && io_uring_sq_ready(&io->ring)) {
		int r = io_uring_submit(&io->ring);
		if (r < 0)
			return r;
	}
	while (io->inflight) {
		int r = du_io_reap(io);
		if (r)
			return r; /* the ring itself failed: nothing more will complete */
	}
	return io->err;
}

/* The ring and the header and trailer buffers; chunk buffers come with io_bufs. */
int du_io_open(struct du_io *io, int fd, bool write)
{
	memset(io, 0, sizeof *io);
	io->fd = fd;
	io->write = write;
	int r = du_ring_init(DU_RING_ENTRIES, &io->ring);
	if (r < 0)
		return r;
	io->ring_ok = true;
#ifdef DE_FAULT_INJECTION
	io->fault = &du_tls_fault;
#endif
	if (!(io->b[DU_NBUF].p = calloc(1, DU_HDR_BYTES)) ||
	    !(io->b[DU_NBUF + 1].p = calloc(1, DU_TRL_BYTES)))
		return -ENOMEM;
	return 0;
}

/* nbuf chunk buffers of bytes each, sized to the file (a small file, small buffers) */
int du_io_bufs(struct du_io *io, unsigned nbuf, size_t bytes)
{
	for (unsigned i = 0; i < nbuf; i++)
		if (!(io->b[i].p = malloc(bytes)))
			return -ENOMEM;
	return 0;
}

void du_io_close(struct du_io *io)
{
	if (io->ring_ok) {
		du_io_drain(io); /* the kernel may still use a buffer */
		du_ring_exit(&io->ring);
	}
	for (unsigned i = 0; i < DU_NBUF + 2; i++)
		free(io->b[i].p);
}

/* Wait until chunk buffer b[i] is free: 0, or the first error of a completion. */
static int io_wait_free(struct du_io *io, unsigned i)
{
	int err;
	while (io->b[i].busy && !io->err)
		if ((err = du_io_reap(io)))
			return err;
	return io->err;
}

/* Seal the n records in b[i] (record rec0 + k at b[i].p + k * record_bytes gets its crc
 * field, pad zeroed; *records_crc is extended over those crc fields in order) and queue
 * and submit their write at file offset off. */
static int io_put_records(struct du_io *io, unsigned i, uint64_t rec0, size_t n,
			  uint32_t record_bytes, uint64_t off, uint32_t *records_crc)
{
	struct du_iobuf *b = &io->b[i];
	for (size_t k = 0; k < n; k++) {
		unsigned char *r = b->p + k * record_bytes;
		memset(r + 32, 0, 8);
		uint32_t c = du_record_crc(rec0 + k, r, record_bytes);
		memcpy(r + 32, &c, 4);
		*records_crc = de_crc32c(*records_crc, &c, 4);
	}
	b->len = n * record_bytes;
	b->done = 0;
	b->off = off;
	int err = du_io_queue(io, i, 0);
	return err ? err : du_io_submit(io);
}

int du_io_commit(struct du_io *io, unsigned first, unsigned n, int *fd, const char *tmp,
		 const char *path)
{
	/* Every write completes (short ones continued by du_io_reap) before the fsync is
	 * queued: an fsync covers the writes that completed before it started, and one
	 * linked behind the last write alone would not wait for the others (the header of a
	 * record file could miss it). One more wait on the ring; no more fsyncs. */
	int err = 0;
	for (unsigned i = first; i < first + n && !err; i++)
		err = du_io_queue(io, i, 0);
	if (err || (err = du_io_submit(io)) || (err = du_io_drain(io)) ||
	    (err = du_io_queue_fsync(io)) || (err = du_io_submit(io)) || (err = du_io_drain(io)))
		return err;
	if (!io->fsync_done)
		return -EIO;
	du_io_close(io);
	memset(io, 0, sizeof *io);
	int r = close(*fd);
	*fd = -1;
	if (r)
		return -errno;
	if (rename(tmp, path))
		return -errno;
	du_plog(DE_PLOG_RENAME, -1, tmp, path, 0, 0, 0, NULL, false);
	return 0;
}

int du_fsync_dir_of(const char *path)
{
	char *d = strdup(path);
	if (!d)
		return -ENOMEM;
	char *slash = strrchr(d, '/');
	const char *dir = !slash ? "." : slash == d ? "/" : (*slash = 0, d);
	int err = du_fsync_dir(dir);
	free(d);
	return err;
}
int du_io_queue_fsync(struct du_io *io)
{
	if (du_fault_hit(io->fault, DE_FAULT_FSYNC))
		return -EIO;
	struct io_uring_sqe *sqe = du_get_sqe(io);
	io->plog_fsync = du_plog(DE_PLOG_FSYNC, io->fd, NULL, NULL, 0, 0, 0, NULL, false);
	io_uring_prep_fsync(sqe, io->fd, 0);
	io_uring_sqe_set_data64(sqe, DU_TAG_FSYNC);
	io->inflight++;
	trace_io(DE_IO_FSYNC_QUEUED, io, NULL, false, 0);
	return 0;
}

int du_fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int err = 0;
#ifdef DE_FAULT_INJECTION
	if (du_fault_hit(&du_tls_fault, DE_FAULT_FSYNC))
		err = -EIO;
	else
#endif
	if (fsync(fd))
		err = -errno;
	else
		du_plog(DE_PLOG_DIRSYNC, -1, dir, NULL, 0, 0, 0, NULL, false);
#ifdef DE_FAULT_INJECTION
	struct stat sb;
	if (io_trace.ev && !fstat(fd, &sb)) {
		struct du_io dio = { .fd = fd };
		struct du_iobuf db = { .off = (uint64_t)sb.st_ino };
		trace_io(DE_IO_DIR_FSYNC, &dio, &db, false, err);
	}
#endif
	close(fd);
	return err;
}

int de_mkdir_durable(const char *path, unsigned mode)
{
	if (!path || !*path)
		return -EINVAL;
	char buf[PATH_MAX];
	if ((size_t)snprintf(buf, sizeof buf, "%s", path) >= sizeof buf)
		return -ENAMETOOLONG;
	size_t len = strlen(buf);
	while (len > 1 && buf[len - 1] == '/')
		buf[--len] = 0;
	/* create the missing ones from the top; each one created gets its parent fsynced
	 * (its entry durable) before a child is made in it */
	for (char *q = buf + 1;; q++) {
		if (*q && *q != '/')
			continue;
		char c = *q;
		*q = 0;
		if (!mkdir(buf, (mode_t)mode)) {
			int err = du_fsync_dir_of(buf);
			if (err)
				return err;
		} else if (errno != EEXIST) {
			return -errno;
		}
		if (!c)
			return 0;
		*q = '/';
	}
}

int du_open_regular(const char *path, int *fd, uint64_t *size)
{
	*fd = -1;
	*size = 0;
	/* O_NOFOLLOW: a symlink at path is -ELOOP, never followed; O_NONBLOCK: a FIFO
	 * planted there does not block the open (it is refused below, and the flag is
	 * cleared again for the regular file's io_uring reads) */
	int f = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (f < 0)
		return -errno;
	struct stat sb;
	int err = fstat(f, &sb) ? -errno : 0;
	if (!err && !S_ISREG(sb.st_mode))
		err = S_ISDIR(sb.st_mode) ? -EISDIR : -EINVAL;
	if (!err && fcntl(f, F_SETFL, 0))
		err = -errno;
	if (err) {
		close(f);
		return err;
	}
	*fd = f;
	*size = (uint64_t)sb.st_size;
	return 0;
}

char *du_path(const char *dir, const char *name)
{
	size_t a = strlen(dir), b = strlen(name);
	char *p = du_malloc(a + b + 2);
	if (!p)
		return NULL;
	memcpy(p, dir, a);
	p[a] = '/';
	memcpy(p + a + 1, name, b + 1);
	return p;
}

#ifdef DU_TSAN
/* every page of ring's three mappings (SQ ring, CQ ring, SQE array): see uring_pvt.h */
static void ring_pages_sync(struct io_uring *ring, bool release)
{
	struct {
		char *p;
		size_t n;
	} m[3] = {
		{ ring->sq.ring_ptr, ring->sq.ring_sz },
		{ ring->cq.ring_ptr, ring->cq.ring_sz },
		{ (char *)ring->sq.sqes, (size_t)ring->sq.ring_entries * sizeof *ring->sq.sqes },
	};
	for (int i = 0; i < 3; i++)
		for (size_t o = 0; m[i].p && o < m[i].n; o += 4096) {
			if (release)
				__tsan_release(m[i].p + o);
			else
				__tsan_acquire(m[i].p + o);
		}
}
#endif

int du_ring_init(unsigned entries, struct io_uring *ring)
{
	int r = io_uring_queue_init(entries, ring, 0);
#ifdef DU_TSAN
	if (r >= 0)
		ring_pages_sync(ring, false);
#endif
	return r;
}

void du_ring_exit(struct io_uring *ring)
{
#ifdef DU_TSAN
	ring_pages_sync(ring, true);
#endif
	io_uring_queue_exit(ring);
}

int du_ring_rw(struct io_uring *ring, int fd, bool write, void *buf, size_t len, uint64_t off,
	       size_t *done)
{
	size_t got = 0;
	int err = 0;
	while (got < len) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
		if (!sqe)
			return -EBUSY; /* the caller's ring has nothing else queued */
		size_t n = len - got > (1u << 30) ? (1u << 30) : len - got;
		if (write)
			io_uring_prep_write(sqe, fd, (char *)buf + got, (unsigned)n, off + got);
		else
			io_uring_prep_read(sqe, fd, (char *)buf + got, (unsigned)n, off + got);
		int r = io_uring_submit(ring);
		if (r < 0) {
			err = r;
			break;
		}
		struct io_uring_cqe *cqe;
		do
			r = io_uring_wait_cqe(ring, &cqe);
		while (r == -EINTR);
		if (r < 0) {
			err = r;
			break;
		}
		int res = cqe->res;
		io_uring_cqe_seen(ring, cqe);
		if (res < 0) {
			err = res;
			break;
		}
		if (res == 0) {
			if (write)
				err = -EIO;
			break;
		}
		got += (size_t)res;
	}
	if (done)
		*done = got;
	return err;
}

int du_read_file(const char *path, size_t max, unsigned char **buf, size_t *len)
{
	*buf = NULL;
	*len = 0;
	int fd;
	uint64_t size;
	int err = du_open_regular(path, &fd, &size);
	if (err)
		return err;
	unsigned char *p = NULL;
	struct io_uring ring;
	bool ring_ok = false;
	if (size > max) {
		err = -EFBIG;
		goto out;
	}
	size_t n = (size_t)size;
	if (!n)
		goto out;
	if (!(p = du_malloc(n))) {
		err = -ENOMEM;
		goto out;
	}
	if ((err = du_ring_init(2, &ring)) < 0)
		goto out;
	ring_ok = true;
	size_t got;
	if ((err = du_ring_rw(&ring, fd, false, p, n, 0, &got)))
		goto out;
	*buf = p;
	*len = got; /* the file may have shrunk meanwhile: the caller checks what it got */
	p = NULL;
out:
	if (ring_ok)
		du_ring_exit(&ring);
	free(p);
	close(fd);
	return err;
}

int du_write_file_atomic(const char *path, const void *buf, size_t len)
{
	size_t plen = strlen(path);
	char *tmp = du_malloc(plen + 5);
	if (!tmp)
		return -ENOMEM;
	memcpy(tmp, path, plen);
	memcpy(tmp + plen, ".tmp", 5);
	struct du_io io;
	memset(&io, 0, sizeof io);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	int err = fd < 0 ? -errno : 0;
	bool created = fd >= 0;
	if (created)
		du_plog(DE_PLOG_CREATE, -1, tmp, NULL, 0, 0, 0, NULL, false);
	if (err || (err = du_io_open(&io, fd, true)))
		goto out;
	/* the bytes go in b[0] (a copy: the ring owns its buffers) */
	if ((err = du_io_bufs(&io, 1, len)))
		goto out;
	memcpy(io.b[0].p, buf, len);
	io.b[0].len = len;
	io.b[0].off = 0;
	if ((err = du_io_commit(&io, 0, 1, &fd, tmp, path)))
		goto out;
	created = false;
	err = du_fsync_dir_of(path);
out:
	du_io_close(&io);
	if (fd >= 0)
		close(fd);
	if (created && err && !unlink(tmp))
		du_plog(DE_PLOG_UNLINK, -1, tmp, NULL, 0, 0, 0, NULL, false);
	free(tmp);
	return err;
}

/* ------------------------------------------------------------------------- */
/* Record files (export, snapshot)                                            */
/* ------------------------------------------------------------------------- */

struct rec_batch {
	const struct du_rec_writer *w;
	unsigned char *base; /* record 0 of the batch */
	uint32_t record_bytes;
};

static void rec_row(void *ctx, size_t i, float *row, struct de_row_meta *m)
{
	struct rec_batch *c = ctx;
	c->w->row(c->w->ctx, c->base + i * c->record_bytes, row, m);
}

/* Fill the chunk buffer at p with up to per records from the writer's keys (the table's
 * from *cursor, or w->keys from *kpos). out: *got; *done when the keys ran out. */
static int rec_fill(de_table *t, const struct du_rec_writer *w, unsigned char *p, size_t per,
		    uint32_t rb, uint64_t *keys, uint8_t *status, uint64_t *cursor,
		    size_t *kpos, size_t *got, bool *done)
{
	int err;
	*got = 0;
	while (*got < per) {
		size_t k = 0;
		if (w->all_keys) {
			if ((err = de_table_iterate(t, cursor, keys, NULL, per - *got, &k)))
				return err;
		} else {
			while (k < per - *got && *kpos < w->nkeys) {
				uint64_t key = w->keys[(*kpos)++];
				if (key)
					keys[k++] = key;
			}
		}
		if (!k) {
			*done = true;
			return 0;
		}
		size_t got0 = *got;
		struct rec_batch rc = { w, p + got0 * rb, rb };
		if ((err = de_table_apply(t, keys, k, false, rec_row, &rc, status, DE_STEP_KEEP)))
			return err;
		for (size_t i = 0; i < k; i++) { /* keys erased meanwhile: left out, or missing() */
			unsigned char *r = p + *got * rb;
			if (status[i] == DE_MISSING) {
				if (!w->missing)
					continue;
				memset(r, 0, rb);
				w->missing(w->ctx, r, keys[i]);
			} else if (*got != got0 + i) {
				memmove(r, rc.base + i * rb, rb);
			}
			(*got)++;
		}
	}
	return 0;
}

int du_rec_write(de_table *t, const char *path, const struct du_rec_writer *w,
		 de_progress_fn cb, void *cb_ctx, uint64_t *records)
{
	struct de_table_stats st;
	const uint64_t total = !w->all_keys ? w->nkeys : de_table_stats(t, &st) ? 0 : st.keys;
	const uint32_t rb = DU_REC_META + 4 * de_table_row_floats(t);
	size_t per = DU_CHUNK_BYTES / rb ? DU_CHUNK_BYTES / rb : 1;
	if (per > total + 64) /* small table, small buffers; it may grow meanwhile: fine */
		per = (size_t)total + 64;

	size_t plen = strlen(path);
	char *tmp = du_malloc(plen + 5);
	uint64_t *keys = du_malloc(per * sizeof *keys);
	uint8_t *status = du_malloc(per);
	struct du_io io;
	memset(&io, 0, sizeof io);
	int fd = -1, err = 0;
	bool created = false;
	if (!tmp || !keys || !status) {
		err = -ENOMEM;
		goto out;
	}
	memcpy(tmp, path, plen);
	memcpy(tmp + plen, ".tmp", 5);
	/* A new file, never one found at tmp: a leftover of a crash is removed first (an
	 * unlink removes a symlink itself, not what it points to), and O_EXCL | O_NOFOLLOW
	 * refuse whatever appears there meanwhile (-EEXIST) instead of following it. */
	if (!unlink(tmp))
		du_plog(DE_PLOG_UNLINK, -1, tmp, NULL, 0, 0, 0, NULL, false);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0) {
		err = -errno;
		goto out;
	}
	created = true;
	du_plog(DE_PLOG_CREATE, -1, tmp, NULL, 0, 0, 0, NULL, false);
	if ((err = du_io_open(&io, fd, true)) || (err = du_io_bufs(&io, DU_NBUF, per * rb)))
		goto out;

	uint64_t n = 0, cursor = 0;
	size_t kpos = 0;
	uint32_t records_crc = 0;
	unsigned next = 0;
	for (bool done = false; !done;) {
		/* a free chunk buffer (round robin keeps the writes in file order) */
		size_t got;
		if ((err = io_wait_free(&io, next)) ||
		    (err = rec_fill(t, w, io.b[next].p, per, rb, keys, status, &cursor, &kpos,
				    &got, &done)))
			goto out;
		if (!got)
			break;
		if ((err = io_put_records(&io, next, n, got, rb, DU_HDR_BYTES + n * rb,
					  &records_crc)))
			goto out;
		n += got;
		next = (next + 1) % DU_NBUF;
		if (cb && cb(cb_ctx, n, total > n ? total : n)) {
			err = -ECANCELED;
			goto out;
		}
	}
	if ((err = du_io_drain(&io)))
		goto out;

	/* header and trailer, then (both completed) the fsync */
	struct du_iobuf *hb = &io.b[DU_NBUF], *tb = &io.b[DU_NBUF + 1];
	w->finish(w->ctx, hb->p, tb->p, n, records_crc);
	hb->len = DU_HDR_BYTES;
	hb->off = 0;
	tb->len = DU_TRL_BYTES;
	tb->off = DU_HDR_BYTES + n * rb;
	if ((err = du_io_commit(&io, DU_NBUF, 2, &fd, tmp, path)))
		goto out;
	created = false;
	if ((err = du_fsync_dir_of(path)))
		goto out;
	if (records)
		*records = n;
out:
	du_io_close(&io);
	if (fd >= 0)
		close(fd);
	if (created && err && !unlink(tmp))
		du_plog(DE_PLOG_UNLINK, -1, tmp, NULL, 0, 0, 0, NULL, false);
	free(status);
	free(keys);
	free(tmp);
	return err;
}
