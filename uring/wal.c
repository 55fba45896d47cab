/*
 * wal.c — the write-ahead log: append-only segment files of CRC'd records, each carrying
 * keys and their full rows, written through io_uring by group commit; and its reader
 * (replay, torn-tail truncation).
 *
 * Owns: the WAL format below, the writer (de_wal_*), the reader (de_wal_replay) and
 * de_wal_record_apply. Callers: the daemon's update path and recovery (manifest.c).
 * Never: reports an LSN durable before the write that holds it and an fdatasync linked
 * behind that write (IOSQE_IO_LINK: an unlinked IORING_OP_FSYNC does not order against
 * earlier writes) have both completed; retries an fsync (the WAL fails instead: see
 * de_wal_failed); appends after a failed or torn write (a hole would hide every later
 * record from replay); trusts a byte it reads back.
 *
 * ---- Segment files, format version 1 (all little-endian) ------------------------------
 *
 * dir/wal-<first_lsn as 16 lowercase hex digits>.log. Segment header, 64 bytes:
 *   0    u8[8] magic "DEWALSG1"
 *   8    u32 version (1)             12   u32 header_bytes (64: offset of the first record)
 *   16   u64 first_lsn (the LSN of its first record; the same as the file name)
 *   24   u32 flags: bit 0 (GAP) the segment starts after a gap: the log before it ends at
 *        prev_lsn and LSNs prev_lsn + 1 .. first_lsn - 1 were never given out; other bits 0
 *   28   u32 reserved, zero          32   u64 prev_lsn (GAP; else 0)
 *   40   u8[20] reserved, zero
 *   60   u32 header_crc = CRC32C of bytes 0..59
 * (Readers before the GAP flag ignored bytes 24..59; they take a GAP segment for a log
 * that does not continue.)
 * Records follow back to back from offset 64; a record is a multiple of 8 bytes:
 *   0    u32 magic 0x52574544 ("DEWR")
 *   4    u32 length: bytes of the whole record, header, payload and padding;
 *        40 <= length <= DE_WAL_MAX_BUFFER, a multiple of 8
 *   8    u64 lsn: the segment's first_lsn for its first record, then +1 per record
 *   16   u32 table_id
 *   20   u16 type (1 PUT, 2 ERASE)  22   u16 reserved, zero
 *   24   u32 n (keys, >= 1)
 *   28   u32 row_floats (PUT: 1..DE_MAX_DIM * (1 + DE_MAX_SLOTS); ERASE: 0)
 *   32   u32 crc = CRC32C of bytes 0..31 and 36..length-1 (payload and padding included)
 *   36   u32 reserved, zero
 *   40   payload. PUT: n entries of 32 + 4 * row_floats bytes (not aligned):
 *          u64 key (!= 0), u64 last_step, u32 freq, u32 flags (bit 0: present; clear: the
 *          key was absent, replay erases it), u64 aux, f32[row_floats] (values, slots)
 *        ERASE: n u64 keys (!= 0).
 *        Then zeros up to length; length = 40 + payload rounded up to 8, exactly.
 *
 * ---- What the reader accepts ----------------------------------------------------------
 *
 * Segments are read in first_lsn order from the one holding the requested LSN; each must
 * start where the previous ended: first_lsn = last LSN + 1, or, with GAP, prev_lsn = last
 * LSN (LSNs never go back: after a recovery that cut the log below an LSN some durable
 * file names, the writer starts a GAP segment above it). Inside a segment LSNs are
 * consecutive. Damage is: a segment whose name, header or first_lsn is wrong, one that
 * does not continue the previous one, a record cut by the end of its file, or a record
 * with a bad magic, length, lsn, type, reserved field, count, row size, key 0 or CRC.
 * From damage the reader looks for where intact data resumes: the first 8-aligned offset
 * of that segment holding an intact record with an LSN at or above the damaged one, else
 * the next segment with an intact header. When every LSN lost in between lies below
 * from_lsn (no table needs them), the damage is skipped, reported (unneeded_*) and left
 * on disk for gc; the records after it are read. Otherwise (or when nothing intact
 * follows) the damaged record and everything after it (the rest of its segment and every
 * later segment) is the torn tail: replay stops there and, asked to, truncates the
 * segment at that offset (removes it if its header was the damage) and removes the later
 * segments. A flip anywhere is caught (CRC32C catches every burst of 32 bits or less).
 * lsn_floor is above every LSN the segments read name (names, headers, intact records,
 * those in the torn tail included): the writer never gives out an LSN below it.
 *
 * ---- Writer ---------------------------------------------------------------------------
 *
 * Two buffers registered with one io_uring (io_uring_register_buffers; plain writes if the
 * kernel refuses). Appends fill the open buffer under the append lock; a flush swaps the
 * buffers, submits write_fixed(buffer) with IOSQE_IO_LINK and IORING_OP_FSYNC (DATASYNC)
 * behind it, waits for both, and only then advances durable_lsn. One flush at a time; a
 * short write is continued with a new linked pair (the kernel cancels the fsync of a
 * broken link). Flushes are run by the group-commit thread on a fixed cadence (a tick
 * every window_ms of the clock, not window_ms after the last flush returned: one that
 * overran its tick is followed by the next at once; de_wal_next_tick), by
 * de_wal_flush / de_wal_sync, and by the appender that finds the open buffer full.
 * Every flush takes the whole open buffer, so a record appended while no flush is in
 * flight is written by the next one, which starts within window_ms; one appended while
 * a flush is in flight waits for that flush to land first. de_wal_ack_wait holds the
 * acknowledgement of such a record until it lands (back-pressure): so an acknowledged
 * record reaches the kernel within window_ms + one write of a buffer, however long a
 * late fdatasync takes (the window bounds a process crash; de_uring.h states the
 * power-loss bound). A
 * buffer never spans two segments: a roll starts a new buffer whose first bytes are the
 * new segment's header; its flush creates the file and fsyncs the directory before the
 * records in it count as durable. Any write or fsync error fails the WAL for good.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "uring_pvt.h"

#define SEG_MAGIC "DEWALSG1"
#define SEG_HDR 64u
#define REC_MAGIC 0x52574544u
#define REC_HDR 40u
#define ENTRY_META 32u
#define MAX_ROW_FLOATS (DE_MAX_DIM * (1u + DE_MAX_SLOTS))
#define SEG_NAME_LEN 24 /* "wal-" 16 hex ".log" */

struct seg_hdr {
	char magic[8];
	uint32_t version, header_bytes;
	uint64_t first_lsn;
	uint32_t flags, reserved0;
	uint64_t prev_lsn;
	uint8_t reserved[20];
	uint32_t crc;
};
_Static_assert(sizeof(struct seg_hdr) == SEG_HDR, "spec");
_Static_assert(offsetof(struct seg_hdr, first_lsn) == 16, "spec");
_Static_assert(offsetof(struct seg_hdr, flags) == 24, "spec");
_Static_assert(offsetof(struct seg_hdr, prev_lsn) == 32, "spec");
_Static_assert(offsetof(struct seg_hdr, crc) == 60, "spec");
#define SEG_GAP 1u
#define LSN_LIMIT (1ull << 62) /* de_wal_open refuses start_lsn at or above it */

struct rec_hdr {
	uint32_t magic, length;
	uint64_t lsn;
	uint32_t table_id;
	uint16_t type, reserved0;
	uint32_t n, row_floats;
	uint32_t crc, reserved1;
};
_Static_assert(sizeof(struct rec_hdr) == REC_HDR, "spec");
_Static_assert(offsetof(struct rec_hdr, lsn) == 8, "spec");
_Static_assert(offsetof(struct rec_hdr, table_id) == 16, "spec");
_Static_assert(offsetof(struct rec_hdr, type) == 20, "spec");
_Static_assert(offsetof(struct rec_hdr, n) == 24, "spec");
_Static_assert(offsetof(struct rec_hdr, row_floats) == 28, "spec");
_Static_assert(offsetof(struct rec_hdr, crc) == 32, "spec");

struct entry_meta {
	uint64_t key, last_step;
	uint32_t freq, flags;
	uint64_t aux;
};
_Static_assert(sizeof(struct entry_meta) == ENTRY_META, "spec");

static uint32_t rec_crc(const unsigned char *r, uint32_t length)
{
	uint32_t c = de_crc32c(0, r, 32);
	return de_crc32c(c, r + 36, length - 36);
}

/* record length for a type, n and row_floats; 0 when it overflows the format */
static uint64_t rec_length(uint32_t type, uint64_t n, uint32_t rf)
{
	uint64_t payload = type == DE_WAL_PUT ? n * (ENTRY_META + 4ull * rf) : n * 8ull;
	return (REC_HDR + payload + 7) & ~7ull;
}

static void seg_name(char *buf, uint64_t lsn)
{
	snprintf(buf, SEG_NAME_LEN + 1, "wal-%016" PRIx64 ".log", lsn);
}

static void default_log(void *ctx, const char *line)
{
	(void)ctx;
	fprintf(stderr, "dynemb wal: %s\n", line);
}

__attribute__((format(printf, 3, 4))) static void logf_(void (*log)(void *, const char *),
							 void *ctx, const char *fmt, ...)
{
	char line[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	(log ? log : default_log)(ctx, line);
}

/* ------------------------------------------------------------------------- */
/* Writer                                                                     */
/* ------------------------------------------------------------------------- */

struct wbuf {
	unsigned char *p;
	size_t len;         /* bytes filled */
	uint64_t last_lsn;  /* of the last record in it (0: none) */
	uint64_t file_off;  /* where p[0] goes in its segment */
	uint64_t seg_lsn;   /* its segment (first_lsn) */
	bool new_seg;       /* p starts with the header of a segment still to be created */
};

struct de_wal {
	char *dir;
	struct de_wal_options o;
	pthread_mutex_t mu;
	pthread_cond_t cv;       /* flush done (flushing cleared, durable_lsn or failed moved) */
	pthread_cond_t tick;     /* the group-commit thread: stop */
	struct wbuf buf[2];
	unsigned open;           /* appends go to buf[open] */
	bool flushing;
	uint64_t flight_last;    /* while flushing: the last LSN the flush in flight carries */
	uint64_t next_lsn, durable_lsn;
	uint64_t seg_lsn;        /* current segment (append side); 0: none yet */
	uint64_t seg_size;       /* its bytes, written or buffered */
	int failed;
	char why[200];
	/* flusher side (one flush at a time) */
	int fd;
	struct io_uring ring;
	bool ring_ok, registered;
	struct du_fault fault;
	unsigned delay_ms;       /* test builds: each flush lands this much later (de_wal_delay) */
	struct de_wal_stats st;
	pthread_t thread;
	bool thread_on, stop;
};

/* the WAL's own fault plan (its flushes may run on any thread) */
static bool wal_fault(de_wal *w, enum de_fault_kind k)
{
#ifdef DE_FAULT_INJECTION
	bool hit;
	pthread_mutex_lock(&w->mu);
	hit = du_fault_hit(&w->fault, k);
	pthread_mutex_unlock(&w->mu);
	return hit;
#else
	(void)w;
	(void)k;
	return false;
#endif
}

#ifdef DE_FAULT_INJECTION
long de_wal_fail(de_wal *w, enum de_fault_kind k, long nth)
{
	if (!w || (k != DE_FAULT_WRITE && k != DE_FAULT_FSYNC))
		return -EINVAL;
	pthread_mutex_lock(&w->mu);
	long prev = w->fault.left[k];
	w->fault.left[k] = nth > 0 ? nth : 0;
	pthread_mutex_unlock(&w->mu);
	return prev;
}
#endif

#ifdef DE_FAULT_INJECTION
int de_wal_delay(de_wal *w, unsigned ms)
{
	if (!w || ms > 60000)
		return -EINVAL;
	pthread_mutex_lock(&w->mu);
	w->delay_ms = ms;
	pthread_mutex_unlock(&w->mu);
	return 0;
}
#endif

/* A late flush (test builds, de_wal_delay): its write and fdatasync have completed, and
 * it lands delay_ms later, as one whose fdatasync took that long would. */
static void flush_delay(de_wal *w)
{
#ifdef DE_FAULT_INJECTION
	pthread_mutex_lock(&w->mu);
	unsigned ms = w->delay_ms;
	pthread_mutex_unlock(&w->mu);
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
	while (ms && nanosleep(&ts, &ts) && errno == EINTR)
		;
#else
	(void)w;
#endif
}

/* wait for n completions; out: res of the write (tag 0) and of the fsync (tag 1) */
static int reap(struct io_uring *ring, unsigned n, int *wres, int *fres)
{
	for (unsigned i = 0; i < n; i++) {
		struct io_uring_cqe *cqe;
		int r;
		do
			r = io_uring_wait_cqe(ring, &cqe);
		while (r == -EINTR);
		if (r < 0)
			return r;
		if (io_uring_cqe_get_data64(cqe) == 1)
			*fres = cqe->res;
		else
			*wres = cqe->res;
		io_uring_cqe_seen(ring, cqe);
	}
	return 0;
}

/* fsync the directory through the ring (a new segment's directory entry) */
static int sync_dir(de_wal *w)
{
	if (wal_fault(w, DE_FAULT_FSYNC))
		return -EIO;
	int dfd = open(w->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -errno;
	struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);
	io_uring_prep_fsync(sqe, dfd, 0);
	io_uring_sqe_set_data64(sqe, 1);
	int wres = 0, fres = -EIO;
	int r = io_uring_submit(&w->ring);
	if (r >= 0)
		r = reap(&w->ring, 1, &wres, &fres);
	if (r >= 0 && fres == 0)
		du_plog(DE_PLOG_DIRSYNC, -1, w->dir, NULL, 0, 0, 0, NULL, false);
	close(dfd);
	return r < 0 ? r : fres;
}

/* Write buffer b (index bi) and fdatasync it, linked. Called by the one flusher, unlocked.
 * *what: static text naming the step that failed. */
static int write_buffer(de_wal *w, struct wbuf *b, unsigned bi, const char **what)
{
	int err = 0;
	if (b->new_seg) {
		if (w->fd >= 0) /* the old segment's bytes were all fdatasync'ed by earlier flushes */
			close(w->fd);
		char name[SEG_NAME_LEN + 1];
		seg_name(name, b->seg_lsn);
		char *path = du_path(w->dir, name);
		if (!path) {
			*what = "allocation";
			return -ENOMEM;
		}
		w->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		err = w->fd < 0 ? -errno : 0;
		if (!err)
			du_plog(DE_PLOG_CREATE, -1, path, NULL, 0, 0, 0, NULL, false);
		free(path);
		if (err) {
			*what = "creating a segment";
			return err;
		}
		pthread_mutex_lock(&w->mu);
		w->st.segments++;
		pthread_mutex_unlock(&w->mu);
	}
	size_t done = 0;
	while (done < b->len) {
		if (wal_fault(w, DE_FAULT_WRITE)) {
			*what = "write";
			return -EIO;
		}
		bool fake_fsync_error = wal_fault(w, DE_FAULT_FSYNC);
		struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);
		unsigned n = (unsigned)(b->len - done);
		if (w->registered)
			io_uring_prep_write_fixed(sqe, w->fd, b->p + done, n, b->file_off + done,
						  (int)bi);
		else
			io_uring_prep_write(sqe, w->fd, b->p + done, n, b->file_off + done);
		io_uring_sqe_set_data64(sqe, 0);
		uint64_t pw = du_plog(DE_PLOG_WRITE, w->fd, NULL, NULL, 0, b->file_off + done, n,
				      b->p + done, !fake_fsync_error), pf = 0;
		unsigned nreq = 1;
		if (!fake_fsync_error) {
			sqe->flags |= IOSQE_IO_LINK; /* the fsync starts after the write completed */
			sqe = io_uring_get_sqe(&w->ring);
			pf = du_plog(DE_PLOG_FSYNC, w->fd, NULL, NULL, 0, 0, 0, NULL, false);
			io_uring_prep_fsync(sqe, w->fd, IORING_FSYNC_DATASYNC);
			io_uring_sqe_set_data64(sqe, 1);
			nreq = 2;
		}
		int wres = -EIO, fres = -EIO;
		int r = io_uring_submit(&w->ring);
		if (r >= 0)
			r = reap(&w->ring, nreq, &wres, &fres);
		if (r < 0) {
			*what = "io_uring";
			return r;
		}
		if (wres > 0)
			du_plog(DE_PLOG_WRITE_DONE, -1, NULL, NULL, pw, 0, (uint64_t)wres, NULL, false);
		if (pf && fres == 0)
			du_plog(DE_PLOG_FSYNC_DONE, -1, NULL, NULL, pf, 0, 0, NULL, false);
		pthread_mutex_lock(&w->mu);
		w->st.fsyncs++; /* submitted (or failed by injection): never again after an error */
		if (wres > 0)
			w->st.bytes_written += (uint64_t)wres;
		pthread_mutex_unlock(&w->mu);
		if (wres < 0) {
			*what = "write";
			return wres;
		}
		if (wres == 0) {
			*what = "write (no progress)";
			return -EIO;
		}
		done += (size_t)wres;
		if (done < b->len) /* short write: the kernel cancelled the linked fsync */
			continue;
		if (fake_fsync_error || fres < 0) {
			*what = "fdatasync";
			return fake_fsync_error ? -EIO : fres;
		}
	}
	flush_delay(w);
	if (b->new_seg && (err = sync_dir(w)))
		*what = "fsync of the directory";
	return err;
}

/* Flush the open buffer. Called and returns with mu held; drops it for the I/O. */
static int flush_locked(de_wal *w)
{
	while (w->flushing)
		pthread_cond_wait(&w->cv, &w->mu);
	if (w->failed)
		return w->failed;
	unsigned bi = w->open;
	struct wbuf *b = &w->buf[bi];
	if (!b->len)
		return 0;
	w->open ^= 1; /* the other buffer is empty: flushes complete in order */
	w->flushing = true;
	w->flight_last = b->last_lsn;
	pthread_mutex_unlock(&w->mu);
	const char *what = NULL;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int err = write_buffer(w, b, bi, &what);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	uint64_t took = (uint64_t)((t1.tv_sec - t0.tv_sec) * 1000000000ll + (t1.tv_nsec - t0.tv_nsec));
	pthread_mutex_lock(&w->mu);
	if (took > w->st.flush_ns_max)
		w->st.flush_ns_max = took;
	if (err) {
		if (!w->failed) {
			w->failed = err;
			snprintf(w->why, sizeof w->why,
				 "WAL failed: %s of segment %016" PRIx64 " failed (%s); records after "
				 "lsn %" PRIu64 " are not durable; read-only until reopened",
				 what, b->seg_lsn, strerror(-err), w->durable_lsn);
			logf_(w->o.log, w->o.log_ctx, "%s", w->why);
		}
	} else {
		w->durable_lsn = b->last_lsn;
		w->st.flushes++;
		w->st.flush_ns_sum += took;
		uint64_t q = took ? (took - 1) / 1000 : 0; /* bucket i: took <= 1000 << i */
		unsigned i = q ? 64u - (unsigned)__builtin_clzll(q) : 0;
		w->st.flush_le[i < DE_WAL_FLUSH_BUCKETS ? i : DE_WAL_FLUSH_BUCKETS]++;
	}
	b->len = 0;
	b->last_lsn = 0;
	b->new_seg = false;
	w->flushing = false;
	pthread_cond_broadcast(&w->cv);
	return err;
}

static void *commit_thread(void *arg)
{
	de_wal *w = arg;
	struct timespec tick;
	clock_gettime(CLOCK_MONOTONIC, &tick);
	pthread_mutex_lock(&w->mu);
	while (!w->stop) {
		de_wal_next_tick(&tick, w->o.window_ms);
		while (!w->stop && pthread_cond_timedwait(&w->tick, &w->mu, &tick) != ETIMEDOUT)
			;
		if (w->stop)
			break;
		if (!w->failed && w->buf[w->open].len)
			flush_locked(w);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

void de_wal_next_tick(struct timespec *tick, uint32_t window_ms)
{
	uint64_t ns = (uint64_t)tick->tv_nsec + (uint64_t)window_ms * 1000000ull;
	tick->tv_sec += (time_t)(ns / 1000000000ull);
	tick->tv_nsec = (long)(ns % 1000000000ull);
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (tick->tv_sec < now.tv_sec || (tick->tv_sec == now.tv_sec && tick->tv_nsec < now.tv_nsec))
		*tick = now; /* the flush overran its tick: the next one starts now */
}

int de_wal_ack_wait(de_wal *w)
{
	if (!w)
		return -EINVAL;
	pthread_mutex_lock(&w->mu);
	uint64_t last = w->next_lsn - 1;
	int err = 0;
	while (w->durable_lsn < last && !(err = w->failed) && w->flushing &&
	       w->flight_last < last)
		pthread_cond_wait(&w->cv, &w->mu);
	pthread_mutex_unlock(&w->mu);
	return err;
}

static void wal_free(de_wal *w)
{
	if (w->ring_ok) {
		if (w->registered)
			io_uring_unregister_buffers(&w->ring);
		du_ring_exit(&w->ring);
	}
	if (w->fd >= 0)
		close(w->fd);
	free(w->buf[0].p);
	free(w->buf[1].p);
	pthread_cond_destroy(&w->tick);
	pthread_cond_destroy(&w->cv);
	pthread_mutex_destroy(&w->mu);
	free(w->dir);
	free(w);
}

struct seg {
	uint64_t lsn;
	char name[SEG_NAME_LEN + 1];
};
static int list_segments(const char *dir, struct seg **segs, size_t *n);
static int read_seg_hdr(const char *dir, const struct seg *s, struct seg_hdr *sh,
			uint64_t *size);
static int replay(const char *dir, uint64_t from_lsn, unsigned flags, de_wal_record_fn cb,
		  void *ctx, void (*log)(void *, const char *), void *log_ctx, bool quiet_skips,
		  struct de_wal_replay_result *res);
static uint64_t max_u64(uint64_t a, uint64_t b);

/*
 * Where the first append goes, in a directory with segments (last_lsn: the last intact
 * record). The newest segment when it holds no record and starts at next_lsn: appended
 * to as it is (rewriting it would lose a GAP header). Else, when next_lsn leaves a gap
 * after last_lsn, a GAP segment created now (header, fdatasync, directory fsync), so that
 * the gap is on disk before any LSN above it is given out. Else nothing: the append path
 * creates the next segment.
 */
static int open_start(de_wal *w, uint64_t last_lsn)
{
	struct seg *segs;
	size_t n;
	int err = list_segments(w->dir, &segs, &n);
	if (err)
		return err;
	bool adopt = false;
	if (n && segs[n - 1].lsn == w->next_lsn) {
		struct seg_hdr sh;
		uint64_t size = 0;
		err = read_seg_hdr(w->dir, &segs[n - 1], &sh, &size);
		adopt = !err && size == SEG_HDR;
		err = err == -ENOMEM ? err : 0;
	}
	free(segs);
	if (err || (!adopt && w->next_lsn == last_lsn + 1))
		return err;
	char name[SEG_NAME_LEN + 1];
	seg_name(name, w->next_lsn);
	char *path = du_path(w->dir, name);
	if (!path)
		return -ENOMEM;
	int fd = open(path, adopt ? O_WRONLY | O_CLOEXEC : O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
		      0644);
	free(path);
	if (fd < 0)
		return -errno;
	if (!adopt) {
		struct seg_hdr h = { .version = 1, .header_bytes = SEG_HDR,
				     .first_lsn = w->next_lsn, .flags = SEG_GAP,
				     .prev_lsn = last_lsn };
		memcpy(h.magic, SEG_MAGIC, 8);
		h.crc = de_crc32c(0, &h, offsetof(struct seg_hdr, crc));
		ssize_t r = pwrite(fd, &h, sizeof h, 0);
		err = r == (ssize_t)sizeof h ? 0 : r < 0 ? -errno : -EIO;
		if (!err && fdatasync(fd))
			err = -errno;
		if (!err)
			err = du_fsync_dir(w->dir);
		if (err) {
			close(fd);
			return err;
		}
		w->st.segments++;
	}
	w->fd = fd;
	w->seg_lsn = w->next_lsn;
	w->seg_size = SEG_HDR;
	return 0;
}

int de_wal_open(const char *dir, const struct de_wal_options *o, de_wal **out)
{
	if (!dir || !*dir || !out)
		return -EINVAL;
	*out = NULL;
	struct de_wal_options opt = o ? *o : (struct de_wal_options){ 0 };
	if (!opt.segment_bytes)
		opt.segment_bytes = 64ull << 20;
	if (!opt.buffer_bytes)
		opt.buffer_bytes = 4u << 20;
	if (!opt.queue_depth)
		opt.queue_depth = 8;
	if (!opt.start_lsn)
		opt.start_lsn = 1;
	if (opt.segment_bytes < DE_WAL_MIN_SEGMENT || opt.segment_bytes > DE_WAL_MAX_SEGMENT ||
	    opt.buffer_bytes < 4096 || opt.buffer_bytes > DE_WAL_MAX_BUFFER ||
	    opt.queue_depth < 2 || opt.queue_depth > 4096 || opt.start_lsn >= (1ull << 62))
		return -EINVAL;
	opt.buffer_bytes = (opt.buffer_bytes + 4095u) & ~4095u;
	if (mkdir(dir, 0755)) {
		if (errno != EEXIST)
			return -errno;
	} else {
		du_plog(DE_PLOG_MKDIR, -1, dir, NULL, 0, 0, 0, NULL, false);
		/* the new directory's entry is durable before any segment in it counts */
		int err = du_fsync_dir_of(dir);
		if (err)
			return err;
	}

	/* find the end of the log: the newest segment, its torn tail truncated */
	struct de_wal_replay_result rr;
	int err = replay(dir, UINT64_MAX, DE_WAL_REPLAY_TRUNCATE, NULL, NULL, opt.log,
			 opt.log_ctx, true, &rr);
	if (err)
		return err;

	de_wal *w = du_calloc(1, sizeof *w);
	if (!w)
		return -ENOMEM;
	w->fd = -1;
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&w->tick, &ca);
	pthread_condattr_destroy(&ca);
	w->o = opt;
	/* never below an LSN the directory or the caller names; above the last record, the
	 * first segment declares the gap (open_start) */
	w->next_lsn = opt.start_lsn;
	if (rr.segments)
		w->next_lsn = max_u64(w->next_lsn, max_u64(rr.last_lsn + 1, rr.lsn_floor));
	w->durable_lsn = w->next_lsn - 1;
	if (!(w->dir = du_malloc(strlen(dir) + 1)) ||
	    !(w->buf[0].p = du_malloc(opt.buffer_bytes)) ||
	    !(w->buf[1].p = du_malloc(opt.buffer_bytes))) {
		err = -ENOMEM;
		goto fail;
	}
	strcpy(w->dir, dir);
	if ((err = du_ring_init(opt.queue_depth, &w->ring)) < 0)
		goto fail;
	w->ring_ok = true;
	struct iovec iov[2] = { { w->buf[0].p, opt.buffer_bytes }, { w->buf[1].p, opt.buffer_bytes } };
	w->registered = io_uring_register_buffers(&w->ring, iov, 2) == 0;
	w->st.registered = w->registered;
	if (rr.segments && (err = open_start(w, rr.last_lsn)))
		goto fail;
	if (opt.window_ms) {
		if ((err = -pthread_create(&w->thread, NULL, commit_thread, w)))
			goto fail;
		w->thread_on = true;
	}
	*out = w;
	return 0;
fail:
	wal_free(w);
	return err;
}

size_t de_wal_max_keys(const de_wal *w, uint32_t row_floats)
{
	if (!w || !row_floats || row_floats > MAX_ROW_FLOATS)
		return 0;
	uint64_t room = w->o.buffer_bytes - SEG_HDR - REC_HDR - 8;
	return (size_t)(room / (ENTRY_META + 4ull * row_floats));
}

struct fill_ctx {
	unsigned char *base; /* entry 0 */
	uint32_t entry, rf;
};

static void fill_row(void *ctx, size_t i, float *row, struct de_row_meta *m)
{
	struct fill_ctx *c = ctx;
	unsigned char *e = c->base + i * c->entry;
	struct entry_meta em = { .key = m->key, .last_step = m->last_step, .freq = m->freq,
				 .flags = m->flags | 1u, .aux = m->aux };
	memcpy(e, &em, sizeof em);
	memcpy(e + ENTRY_META, row, (size_t)c->rf * 4);
}

int de_wal_append(de_wal *w, const struct de_wal_batch *b, uint64_t *lsn)
{
	if (!w || !b || !b->keys || !b->n || b->n > UINT32_MAX ||
	    (b->type != DE_WAL_PUT && b->type != DE_WAL_ERASE))
		return -EINVAL;
	for (size_t i = 0; i < b->n; i++)
		if (!b->keys[i])
			return -EINVAL;
	uint32_t rf = 0;
	if (b->type == DE_WAL_PUT) {
		if (b->table)
			rf = de_table_row_floats(b->table);
		else if (b->rows && b->meta)
			rf = b->row_floats;
		if (!rf || rf > MAX_ROW_FLOATS)
			return -EINVAL;
	}
	uint64_t len = rec_length(b->type, b->n, rf);
	if (len > w->o.buffer_bytes - SEG_HDR)
		return -EMSGSIZE;
	uint8_t *status = NULL;
	if (b->type == DE_WAL_PUT && b->table && !(status = du_malloc(b->n)))
		return -ENOMEM;

	int err = 0;
	pthread_mutex_lock(&w->mu);
	struct wbuf *wb;
	for (;;) {
		if (w->failed) {
			err = -EROFS;
			goto out;
		}
		wb = &w->buf[w->open];
		bool roll = !w->seg_lsn ||
			    (w->seg_size > SEG_HDR && w->seg_size + len > w->o.segment_bytes);
		if (roll && !wb->len) { /* start the next segment in this empty buffer */
			struct seg_hdr h = { .version = 1, .header_bytes = SEG_HDR,
					     .first_lsn = w->next_lsn };
			memcpy(h.magic, SEG_MAGIC, 8);
			h.crc = de_crc32c(0, &h, offsetof(struct seg_hdr, crc));
			memcpy(wb->p, &h, sizeof h);
			wb->len = SEG_HDR;
			wb->file_off = 0;
			wb->seg_lsn = w->next_lsn;
			wb->new_seg = true;
			w->seg_lsn = w->next_lsn;
			w->seg_size = SEG_HDR;
			continue;
		}
		if (roll || wb->len + len > w->o.buffer_bytes) {
			flush_locked(w); /* a failure shows in w->failed */
			continue;
		}
		break;
	}
	if (b->dirty && (err = de_dirty_add(b->dirty, b->keys, b->n)))
		goto out;
	if (!wb->len) {
		wb->file_off = w->seg_size;
		wb->seg_lsn = w->seg_lsn;
	}
	unsigned char *r = wb->p + wb->len;
	memset(r, 0, len);
	struct rec_hdr h = { .magic = REC_MAGIC, .length = (uint32_t)len, .lsn = w->next_lsn,
			     .table_id = b->table_id, .type = (uint16_t)b->type,
			     .n = (uint32_t)b->n, .row_floats = rf };
	unsigned char *pl = r + REC_HDR;
	if (b->type == DE_WAL_ERASE) {
		memcpy(pl, b->keys, b->n * 8);
	} else {
		const uint32_t entry = ENTRY_META + 4 * rf;
		if (b->table) {
			struct fill_ctx fc = { pl, entry, rf };
			err = de_table_apply(b->table, b->keys, b->n, false, fill_row, &fc, status,
					     DE_STEP_KEEP);
			if (err)
				goto out;
			for (size_t i = 0; i < b->n; i++)
				if (status[i] == DE_MISSING) /* absent: key, zeros, flags 0 */
					memcpy(pl + i * entry, &b->keys[i], 8);
		} else {
			for (size_t i = 0; i < b->n; i++) {
				unsigned char *e = pl + i * entry;
				const struct de_row_meta *m = &b->meta[i];
				struct entry_meta em = { .key = b->keys[i], .last_step = m->last_step,
							 .freq = m->freq, .flags = m->flags,
							 .aux = m->aux };
				memcpy(e, &em, sizeof em);
				memcpy(e + ENTRY_META, b->rows + i * (size_t)rf, (size_t)rf * 4);
			}
		}
	}
	memcpy(r, &h, sizeof h);
	h.crc = rec_crc(r, (uint32_t)len);
	memcpy(r + offsetof(struct rec_hdr, crc), &h.crc, 4);
	wb->len += len;
	wb->last_lsn = w->next_lsn;
	w->seg_size += len;
	if (lsn)
		*lsn = w->next_lsn;
	w->next_lsn++;
out:
	pthread_mutex_unlock(&w->mu);
	free(status);
	return err;
}

int de_wal_flush(de_wal *w)
{
	if (!w)
		return -EINVAL;
	pthread_mutex_lock(&w->mu);
	uint64_t want = w->next_lsn - 1;
	int err = 0;
	while (!err && w->durable_lsn < want)
		err = w->failed ? w->failed : flush_locked(w);
	pthread_mutex_unlock(&w->mu);
	return err;
}

int de_wal_sync(de_wal *w, uint64_t lsn)
{
	if (!w)
		return -EINVAL;
	pthread_mutex_lock(&w->mu);
	int err = 0;
	if (lsn >= w->next_lsn)
		err = -EINVAL;
	while (!err && w->durable_lsn < lsn) {
		/* group commit: a flush in progress may carry lsn; wait for it and look again
		 * before starting another (which would take only later records) */
		if (w->flushing && !w->failed) {
			pthread_cond_wait(&w->cv, &w->mu);
			continue;
		}
		err = w->failed ? w->failed : flush_locked(w);
	}
	pthread_mutex_unlock(&w->mu);
	return err;
}

uint64_t de_wal_durable_lsn(de_wal *w)
{
	pthread_mutex_lock(&w->mu);
	uint64_t v = w->durable_lsn;
	pthread_mutex_unlock(&w->mu);
	return v;
}

uint64_t de_wal_next_lsn(de_wal *w)
{
	pthread_mutex_lock(&w->mu);
	uint64_t v = w->next_lsn;
	pthread_mutex_unlock(&w->mu);
	return v;
}

int de_wal_failed(de_wal *w, char *why, size_t cap)
{
	pthread_mutex_lock(&w->mu);
	int err = w->failed;
	if (why && cap)
		snprintf(why, cap, "%s", err ? w->why : "");
	pthread_mutex_unlock(&w->mu);
	return err;
}

int de_wal_cut(de_wal *w, de_dirty *d, uint64_t *start_lsn, uint64_t **keys, size_t *n)
{
	if (!w || !start_lsn || (d && (!keys || !n)))
		return -EINVAL;
	pthread_mutex_lock(&w->mu);
	int err = d ? de_dirty_take(d, keys, n) : 0;
	if (!err)
		*start_lsn = w->next_lsn;
	pthread_mutex_unlock(&w->mu);
	return err;
}

int de_wal_stats(de_wal *w, struct de_wal_stats *out)
{
	if (!w || !out)
		return -EINVAL;
	pthread_mutex_lock(&w->mu);
	*out = w->st;
	out->next_lsn = w->next_lsn;
	out->durable_lsn = w->durable_lsn;
	pthread_mutex_unlock(&w->mu);
	return 0;
}

int de_wal_close(de_wal *w)
{
	if (!w)
		return 0;
	if (w->thread_on) {
		pthread_mutex_lock(&w->mu);
		w->stop = true;
		pthread_cond_signal(&w->tick);
		pthread_mutex_unlock(&w->mu);
		pthread_join(w->thread, NULL);
	}
	int err = de_wal_flush(w);
	wal_free(w);
	return err;
}

/* ------------------------------------------------------------------------- */
/* Applying a record                                                          */
/* ------------------------------------------------------------------------- */

struct put_ctx {
	const struct de_wal_record *r;
	const size_t *idx; /* the record's index of each key applied */
};

static void put_row(void *ctx, size_t i, float *row, struct de_row_meta *m)
{
	struct put_ctx *c = ctx;
	size_t j = c->idx[i];
	const struct de_row_meta *s = &c->r->meta[j];
	m->last_step = s->last_step;
	m->freq = s->freq;
	m->flags = s->flags;
	m->aux = s->aux;
	memcpy(row, c->r->rows + j * (size_t)c->r->row_floats, (size_t)c->r->row_floats * 4);
}

int de_wal_record_apply(de_table *t, const struct de_wal_record *r)
{
	if (!t || !r)
		return -EINVAL;
	if (r->type == DE_WAL_ERASE)
		return de_table_erase(t, r->keys, r->n, NULL);
	if (r->type != DE_WAL_PUT)
		return -EINVAL;
	if (r->row_floats != de_table_row_floats(t))
		return -EEXIST;
	/* in record order: a key present, then absent in one record ends absent */
	uint64_t *keys = du_malloc((size_t)r->n * 8);
	size_t *idx = du_malloc((size_t)r->n * sizeof *idx);
	int err = 0;
	if (!keys || !idx) {
		err = -ENOMEM;
		goto out;
	}
	size_t i = 0;
	while (!err && i < r->n) {
		bool present = r->meta[i].flags & 1u;
		size_t k = 0;
		for (; i < r->n && (bool)(r->meta[i].flags & 1u) == present; i++, k++) {
			keys[k] = r->keys[i];
			idx[k] = i;
		}
		if (present) {
			struct put_ctx pc = { r, idx };
			err = de_table_apply(t, keys, k, true, put_row, &pc, NULL, DE_STEP_KEEP);
		} else {
			err = de_table_erase(t, keys, k, NULL);
		}
	}
out:
	free(keys);
	free(idx);
	return err;
}

/* ------------------------------------------------------------------------- */
/* Reader                                                                     */
/* ------------------------------------------------------------------------- */

static int seg_cmp(const void *a, const void *b)
{
	uint64_t x = ((const struct seg *)a)->lsn, y = ((const struct seg *)b)->lsn;
	return x < y ? -1 : x > y;
}

/* "wal-" + 16 lowercase hex + ".log" exactly */
static bool parse_seg_name(const char *s, uint64_t *lsn)
{
	if (strlen(s) != SEG_NAME_LEN || memcmp(s, "wal-", 4) || memcmp(s + 20, ".log", 4))
		return false;
	uint64_t v = 0;
	for (int i = 4; i < 20; i++) {
		char c = s[i];
		int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
		if (d < 0)
			return false;
		v = v << 4 | (uint64_t)d;
	}
	*lsn = v;
	return v != 0;
}

/* The segments of dir in LSN order. out: *segs (malloc'd), *n. */
static int list_segments(const char *dir, struct seg **segs, size_t *n)
{
	*segs = NULL;
	*n = 0;
	DIR *d = opendir(dir);
	if (!d)
		return errno == ENOENT ? 0 : -errno;
	size_t cap = 0, k = 0;
	struct seg *v = NULL;
	int err = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		uint64_t lsn;
		if (!parse_seg_name(de->d_name, &lsn))
			continue;
		if (k == cap) {
			size_t nc = cap ? cap * 2 : 16;
			struct seg *nv = du_malloc(nc * sizeof *nv);
			if (!nv) {
				err = -ENOMEM;
				break;
			}
			if (k)
				memcpy(nv, v, k * sizeof *v);
			free(v);
			v = nv;
			cap = nc;
		}
		v[k].lsn = lsn;
		memcpy(v[k].name, de->d_name, SEG_NAME_LEN + 1);
		k++;
	}
	closedir(d);
	if (err) {
		free(v);
		return err;
	}
	if (k)
		qsort(v, k, sizeof *v, seg_cmp);
	*segs = v;
	*n = k;
	return 0;
}

/* Check the record at r (avail bytes there) expecting lsn; NULL when intact. */
static const char *check_record(const unsigned char *r, uint64_t avail, uint64_t lsn,
				struct rec_hdr *h)
{
	if (avail < REC_HDR)
		return "record header cut by the end of the segment";
	memcpy(h, r, sizeof *h);
	if (h->magic != REC_MAGIC)
		return "record magic";
	if (h->length < REC_HDR || h->length % 8 || h->length > DE_WAL_MAX_BUFFER)
		return "record length out of range";
	if (h->length > avail)
		return "record cut by the end of the segment";
	if (h->lsn != lsn)
		return "record LSN out of sequence";
	if (h->crc != rec_crc(r, h->length))
		return "record checksum";
	if (h->reserved0 || h->reserved1 || !h->n)
		return "record fields out of range";
	if (h->type == DE_WAL_PUT) {
		if (!h->row_floats || h->row_floats > MAX_ROW_FLOATS)
			return "record row size out of range";
	} else if (h->type != DE_WAL_ERASE || h->row_floats) {
		return "record type";
	}
	if (rec_length(h->type, h->n, h->row_floats) != h->length)
		return "record length disagrees with its count";
	return NULL;
}

/* records that can be delimited in p[off..size) by their magic and length alone */
static uint64_t delimit(const unsigned char *p, uint64_t off, uint64_t size)
{
	uint64_t k = 0;
	while (size - off >= REC_HDR) {
		struct rec_hdr h;
		memcpy(&h, p + off, sizeof h);
		if (h.magic != REC_MAGIC || h.length < REC_HDR || h.length % 8 ||
		    h.length > size - off)
			break;
		k++;
		off += h.length;
	}
	return k;
}

struct scratch {
	uint64_t *keys;
	struct de_row_meta *meta;
	float *rows;
	size_t nk, nr; /* capacities: keys, floats */
};

static int decode(struct scratch *s, const unsigned char *r, const struct rec_hdr *h,
		  struct de_wal_record *out)
{
	if (s->nk < h->n) {
		free(s->keys);
		free(s->meta);
		s->keys = du_malloc((size_t)h->n * 8);
		s->meta = du_malloc((size_t)h->n * sizeof *s->meta);
		s->nk = s->keys && s->meta ? h->n : 0;
		if (!s->nk)
			return -ENOMEM;
	}
	const unsigned char *pl = r + REC_HDR;
	*out = (struct de_wal_record){ .lsn = h->lsn, .table_id = h->table_id, .type = h->type,
				       .n = h->n, .row_floats = h->row_floats, .keys = s->keys };
	if (h->type == DE_WAL_ERASE) {
		memcpy(s->keys, pl, (size_t)h->n * 8);
	} else {
		size_t nf = (size_t)h->n * h->row_floats;
		if (s->nr < nf) {
			free(s->rows);
			s->rows = du_malloc(nf * 4);
			s->nr = s->rows ? nf : 0;
			if (!s->rows)
				return -ENOMEM;
		}
		const size_t entry = ENTRY_META + 4ull * h->row_floats;
		for (uint32_t i = 0; i < h->n; i++) {
			const unsigned char *e = pl + i * entry;
			struct entry_meta em;
			memcpy(&em, e, sizeof em);
			s->keys[i] = em.key;
			s->meta[i] = (struct de_row_meta){ .key = em.key, .last_step = em.last_step,
							   .freq = em.freq, .flags = em.flags,
							   .aux = em.aux };
			memcpy(s->rows + (size_t)i * h->row_floats, e + ENTRY_META,
			       (size_t)h->row_floats * 4);
		}
		out->meta = s->meta;
		out->rows = s->rows;
	}
	for (uint32_t i = 0; i < h->n; i++)
		if (!s->keys[i])
			return -EBADMSG; /* key 0: treated as damage by the caller */
	return 0;
}

/* the power-loss log of a segment cut at off: the truncate, and its fsync */
static void cut_tail_plog(const char *path, uint64_t off)
{
	du_plog(DE_PLOG_TRUNCATE, -1, path, NULL, 0, 0, off, NULL, false);
	uint64_t id = du_plog(DE_PLOG_FSYNC, -1, path, NULL, 0, 0, 0, NULL, false);
	du_plog(DE_PLOG_FSYNC_DONE, -1, NULL, NULL, id, 0, 0, NULL, false);
}

static int cut_tail(const char *dir, const struct seg *segs, size_t n, size_t at,
		    uint64_t off)
{
	int err = 0;
	for (size_t i = at; i < n; i++) {
		char *path = du_path(dir, segs[i].name);
		if (!path)
			return -ENOMEM;
		if (i == at && off >= SEG_HDR) {
			int fd = open(path, O_WRONLY | O_CLOEXEC);
			if (fd < 0 || ftruncate(fd, (off_t)off) || fsync(fd))
				err = err ? err : -errno;
			else
				cut_tail_plog(path, off);
			if (fd >= 0)
				close(fd);
		} else if (unlink(path)) {
			if (errno != ENOENT)
				err = err ? err : -errno;
		} else {
			du_plog(DE_PLOG_UNLINK, -1, path, NULL, 0, 0, 0, NULL, false);
		}
		free(path);
	}
	int e = du_fsync_dir(dir);
	return err ? err : e;
}

#define MAX_SEG_FILE (DE_WAL_MAX_SEGMENT + DE_WAL_MAX_BUFFER)

static uint64_t max_u64(uint64_t a, uint64_t b)
{
	return a > b ? a : b;
}

/* The header of segment file p (size bytes) named lsn: NULL when intact, else the damage. */
static const char *check_seg_hdr(const unsigned char *p, size_t size, uint64_t lsn,
				 struct seg_hdr *sh)
{
	if (size < SEG_HDR)
		return "segment header cut";
	memcpy(sh, p, sizeof *sh);
	if (memcmp(sh->magic, SEG_MAGIC, 8) || sh->version != 1 || sh->header_bytes != SEG_HDR ||
	    sh->crc != de_crc32c(0, sh, offsetof(struct seg_hdr, crc)) || sh->first_lsn != lsn ||
	    (sh->flags & ~SEG_GAP) || sh->reserved0 ||
	    ((sh->flags & SEG_GAP) ? sh->prev_lsn >= lsn : sh->prev_lsn != 0))
		return "segment header";
	return NULL;
}

/* The header of segment s read from disk: 0 with *sh and the file's *size when intact,
 * -EBADMSG when damaged, or an I/O error. */
static int read_seg_hdr(const char *dir, const struct seg *s, struct seg_hdr *sh,
			uint64_t *size)
{
	char *path = du_path(dir, s->name);
	if (!path)
		return -ENOMEM;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	free(path);
	if (fd < 0)
		return -errno;
	unsigned char b[SEG_HDR];
	struct stat sb;
	ssize_t r = pread(fd, b, SEG_HDR, 0);
	int err = r < 0 || fstat(fd, &sb) ? -errno : 0;
	close(fd);
	if (err)
		return err;
	if (check_seg_hdr(b, (size_t)r, s->lsn, sh))
		return -EBADMSG;
	*size = (uint64_t)sb.st_size;
	return 0;
}

/* The record at r, intact at whatever LSN it names (below LSN_LIMIT): header in *h. */
static bool intact_any(const unsigned char *r, uint64_t avail, struct rec_hdr *h)
{
	uint32_t magic;
	uint64_t lsn;
	if (avail < REC_HDR)
		return false;
	memcpy(&magic, r, 4);
	memcpy(&lsn, r + offsetof(struct rec_hdr, lsn), 8);
	return magic == REC_MAGIC && lsn && lsn < LSN_LIMIT && !check_record(r, avail, lsn, h);
}

/* The first 8-aligned offset in p[from..size) holding an intact record with lsn >= min:
 * its offset (*lsn its LSN), or size when there is none. */
static uint64_t find_resume(const unsigned char *p, uint64_t from, uint64_t size, uint64_t min,
			    uint64_t *lsn)
{
	for (uint64_t q = from; q + REC_HDR <= size; q += 8) {
		struct rec_hdr h;
		if (intact_any(p + q, size - q, &h) && h.lsn >= min) {
			*lsn = h.lsn;
			return q;
		}
	}
	return size;
}

/* 1 + the highest LSN of an intact record in p[from..size) (0: none) */
static uint64_t intact_floor(const unsigned char *p, uint64_t from, uint64_t size)
{
	uint64_t f = 0;
	for (uint64_t q = from; q + REC_HDR <= size; q += 8) {
		struct rec_hdr h;
		if (intact_any(p + q, size - q, &h)) {
			f = max_u64(f, h.lsn + 1);
			q += h.length - 8;
		}
	}
	return f;
}

/* The torn tail from segment at, offset off, on: res->bytes_dropped, records_dropped
 * (records delimited by magic and length: a lower bound), and *floor raised above every
 * LSN it names (segment names, intact records). */
static int account_tail(const char *dir, const struct seg *segs, size_t n, size_t at,
			uint64_t off, struct de_wal_replay_result *res, uint64_t *floor)
{
	for (size_t i = at; i < n; i++) {
		uint64_t from = i == at ? off : 0;
		if (segs[i].lsn < LSN_LIMIT)
			*floor = max_u64(*floor, segs[i].lsn);
		char *path = du_path(dir, segs[i].name);
		if (!path)
			return -ENOMEM;
		unsigned char *p = NULL;
		size_t size = 0;
		int e = du_read_file(path, MAX_SEG_FILE, &p, &size);
		if (e == -EFBIG) {
			struct stat sb;
			if (!stat(path, &sb) && (uint64_t)sb.st_size > from)
				res->bytes_dropped += (uint64_t)sb.st_size - from;
			free(path);
			continue;
		}
		free(path);
		if (e)
			return e;
		if (size > from) {
			res->bytes_dropped += size - from;
			uint64_t k = delimit(p, i == at ? off : SEG_HDR, size);
			if (i == at && !k)
				k = 1; /* something was there: at least the torn one */
			res->records_dropped += k;
			*floor = max_u64(*floor, intact_floor(p, from > SEG_HDR ? from : SEG_HDR,
							      size));
		}
		free(p);
	}
	return 0;
}

struct skip_log {
	void (*log)(void *, const char *);
	void *log_ctx;
	bool on;
	uint64_t from_lsn;
};

/* Damage no table needs (LSNs lost_from .. lost_to - 1, all below from_lsn): skipped. */
static void note_unneeded(struct de_wal_replay_result *res, const struct skip_log *sl,
			  uint64_t lost_from, uint64_t lost_to, uint64_t bytes, const char *why,
			  const char *seg, uint64_t off)
{
	res->unneeded_bytes += bytes;
	res->unneeded_records += lost_to - lost_from;
	if (!res->unneeded_problem)
		res->unneeded_problem = why;
	if (sl->on)
		logf_(sl->log, sl->log_ctx,
		      "damage no table needs: %s at segment %s offset %" PRIu64 "; skipped %" PRIu64
		      " bytes, %" PRIu64 " records (lsn %" PRIu64 "..%" PRIu64 ", below lsn %" PRIu64
		      " where replay starts); the records after it are kept",
		      why, seg, off, bytes, lost_to - lost_from, lost_from, lost_to - 1, sl->from_lsn);
}

static int replay(const char *dir, uint64_t from_lsn, unsigned flags, de_wal_record_fn cb,
		  void *ctx, void (*log)(void *, const char *), void *log_ctx, bool quiet_skips,
		  struct de_wal_replay_result *res)
{
	memset(res, 0, sizeof *res);
	if (!dir || (flags & ~DE_WAL_REPLAY_TRUNCATE))
		return -EINVAL;
	struct seg *segs;
	size_t n;
	int err = list_segments(dir, &segs, &n);
	if (err || !n)
		return err;
	struct scratch sc = { 0 };
	unsigned char *p = NULL;
	size_t start = 0;
	const struct skip_log sl = { log, log_ctx, (flags & DE_WAL_REPLAY_TRUNCATE) && !quiet_skips,
				     from_lsn };
	while (start + 1 < n && segs[start + 1].lsn <= from_lsn)
		start++;
	if (from_lsn && from_lsn < segs[0].lsn) {
		/* fine only when the oldest segment says the LSNs before it were never used */
		struct seg_hdr sh;
		uint64_t sz;
		int e = read_seg_hdr(dir, &segs[0], &sh, &sz);
		if (e == -ENOMEM) {
			err = e;
			goto out;
		}
		if (e || !(sh.flags & SEG_GAP) || sh.prev_lsn >= from_lsn) {
			res->problem = "the log starts after the requested LSN (segments missing)";
			res->last_lsn = segs[0].lsn - 1;
			err = -EBADMSG;
			goto out;
		}
	}
	uint64_t expect = segs[start].lsn, floor = 0;
	bool first = true;
	/* damage whose resumption is still to be found: where it began */
	bool dmg = false;
	size_t dseg = 0;
	uint64_t doff = 0, dexpect = 0, dbytes = 0;
	const char *dwhy = NULL;
	size_t bad_seg = n;
	uint64_t bad_off = 0;
	for (size_t i = start; i < n && bad_seg == n; i++) {
		size_t size = 0;
		const char *why = NULL;
		char *path = du_path(dir, segs[i].name);
		if (!path) {
			err = -ENOMEM;
			goto out;
		}
		free(p);
		p = NULL;
		err = du_read_file(path, MAX_SEG_FILE, &p, &size);
		if (err == -EFBIG) {
			struct stat sb;
			why = "segment larger than the format allows";
			size = stat(path, &sb) ? 0 : (size_t)sb.st_size;
			err = 0;
		}
		free(path);
		if (err)
			goto out;
		res->segments++;
		if (segs[i].lsn < LSN_LIMIT)
			floor = max_u64(floor, segs[i].lsn);
		struct seg_hdr sh;
		if (!why)
			why = check_seg_hdr(p, size, segs[i].lsn, &sh);
		/* where the log before this segment ends, by its header */
		uint64_t cont = why ? 0 : (sh.flags & SEG_GAP) ? sh.prev_lsn + 1 : segs[i].lsn;
		if (!why && !first && !dmg && cont < expect)
			why = "segment does not continue the previous one";
		if (why || (dmg && cont < dexpect)) {
			if (!dmg) {
				dmg = true;
				dseg = i;
				doff = 0;
				dexpect = expect;
				dwhy = why;
				dbytes = 0;
			}
			dbytes += size;
			first = false;
			continue;
		}
		if (dmg) { /* intact data resumes here: LSNs dexpect .. cont - 1 are lost */
			if (cont > dexpect && cont > from_lsn) {
				bad_seg = dseg;
				bad_off = doff;
				res->problem = dwhy;
				break;
			}
			note_unneeded(res, &sl, dexpect, cont, dbytes, dwhy, segs[dseg].name, doff);
			dmg = false;
		} else if (!first && cont > expect) { /* the end of the previous segment is missing */
			const char *w = "segment does not continue the previous one";
			if (cont > from_lsn) {
				bad_seg = i;
				bad_off = 0;
				res->problem = w;
				break;
			}
			note_unneeded(res, &sl, expect, cont, 0, w, segs[i].name, 0);
		}
		first = false;
		expect = segs[i].lsn;
		uint64_t off = SEG_HDR;
		/* Where this segment's intact records end, and the unneeded damage skipped since
		 * then: a torn tail found right after such damage starts where the damage does
		 * (cutting at the torn record alone would leave the damage as the new tail). */
		uint64_t clean_end = SEG_HDR, adj_bytes = 0, adj_records = 0, clean_expect = expect;
		while (off < size) {
			struct rec_hdr h;
			why = check_record(p + off, size - off, expect, &h);
			struct de_wal_record rec;
			if (!why) {
				int d = decode(&sc, p + off, &h, &rec);
				if (d == -EBADMSG)
					why = "record with key 0";
				else if (d) {
					err = d;
					goto out;
				}
			}
			if (why) {
				uint64_t rl = 0, q = find_resume(p, off + 8, size, expect, &rl);
				if (q < size && (rl == expect || rl <= from_lsn)) {
					note_unneeded(res, &sl, expect, rl, q - off, why, segs[i].name, off);
					adj_bytes += q - off;
					adj_records += rl - expect;
					expect = rl;
					off = q;
					continue;
				}
				/* the damage just skipped belongs to the torn tail now: the log ends
				 * with the last intact record (account_tail raises the floor above
				 * every LSN the dropped bytes name, so none is used again) */
				res->unneeded_bytes -= adj_bytes;
				res->unneeded_records -= adj_records;
				floor = max_u64(floor, expect); /* rl of a skip: never used again */
				expect = clean_expect;
				if (q < size) {
					res->problem = why;
					bad_seg = i;
					bad_off = clean_end;
				} else { /* maybe the next segment resumes */
					dmg = true;
					dseg = i;
					doff = clean_end;
					dexpect = expect;
					dwhy = why;
					dbytes = size - clean_end;
				}
				break;
			}
			if (h.lsn >= from_lsn) {
				if (cb && (err = cb(ctx, &rec)))
					goto out;
				res->records++;
			} else {
				res->skipped++;
			}
			expect++;
			off += h.length;
			clean_end = off;
			clean_expect = expect;
			adj_bytes = adj_records = 0;
		}
	}
	if (dmg && bad_seg == n) { /* nothing intact after the damage: the torn tail */
		bad_seg = dseg;
		bad_off = doff;
		res->problem = dwhy;
	}
	res->last_lsn = expect - 1;
	floor = max_u64(floor, expect);
	if (bad_seg < n) {
		if ((err = account_tail(dir, segs, n, bad_seg, bad_off, res, &floor)))
			goto out;
		if (flags & DE_WAL_REPLAY_TRUNCATE) {
			logf_(log, log_ctx,
			      "torn tail: %s at segment %s offset %" PRIu64 "; dropped %" PRIu64
			      " bytes, %" PRIu64 " records; the log ends at lsn %" PRIu64,
			      res->problem, segs[bad_seg].name, bad_off, res->bytes_dropped,
			      res->records_dropped, res->last_lsn);
			err = cut_tail(dir, segs, n, bad_seg, bad_off);
		}
	}
	res->lsn_floor = floor;
out:
	free(p);
	free(sc.keys);
	free(sc.meta);
	free(sc.rows);
	free(segs);
	return err;
}

int de_wal_replay(const char *dir, uint64_t from_lsn, unsigned flags, de_wal_record_fn cb,
		  void *ctx, void (*log)(void *, const char *), void *log_ctx,
		  struct de_wal_replay_result *res)
{
	struct de_wal_replay_result dummy;
	return replay(dir, from_lsn, flags, cb, ctx, log, log_ctx, false, res ? res : &dummy);
}
