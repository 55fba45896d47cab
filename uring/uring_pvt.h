/*
 * uring_pvt.h — private to libdeuring (the .c files of uring/); not installed, not for other
 * components. What the export, WAL, snapshot and manifest code share: CRC32C, the
 * 40-byte row record of the export and snapshot formats, one io_uring with a few buffers
 * (short transfers resubmitted; the tmp-file commit: every write completed, then the
 * fsync), the writer loop of record files (du_rec_write: export and snapshot files
 * streamed out of a table, each format encoding its own records, header and trailer),
 * small file helpers (open a regular file, whole-file read, atomic replace, directory
 * fsync) and the fault-injection counters (compiled only with DE_FAULT_INJECTION).
 *
 * Ownership: a du_io owns its ring and the buffers in b[] (du_io_close frees them, after
 * waiting for every request in flight: the kernel may still be using a buffer).
 */
#ifndef DE_URING_PVT_H
#define DE_URING_PVT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <liburing.h>

#include "de_uring.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "libdeuring reads and writes its little-endian formats with plain loads and stores"
#endif

/* ---- fault injection ---------------------------------------------------------------- */

/* Countdowns: the nth operation of a kind from arming fails once (0: disarmed). */
struct du_fault {
	long left[DE_FAULT_KINDS];
};

#ifdef DE_FAULT_INJECTION
/* The calling thread's plan (de_persist_fail): every call but the WAL's own flushes. */
extern __thread struct du_fault du_tls_fault;
bool du_fault_hit(struct du_fault *f, enum de_fault_kind k);
#else
static inline bool du_fault_hit(struct du_fault *f, enum de_fault_kind k)
{
	(void)f;
	(void)k;
	return false;
}
#endif

/* The power-loss log (plog.c, de_persist_plog): report one operation to the hook, if one
 * is installed. fd >= 0 with path NULL: the fd's path. WRITE and FSYNC get a new id,
 * returned (0: no hook); the *_DONE events pass it back. */
#ifdef DE_FAULT_INJECTION
uint64_t du_plog(enum de_plog_op op, int fd, const char *path, const char *path2, uint64_t id,
		 uint64_t off, uint64_t len, const void *data, bool linked);
#else
static inline uint64_t du_plog(enum de_plog_op op, int fd, const char *path, const char *path2,
			       uint64_t id, uint64_t off, uint64_t len, const void *data,
			       bool linked)
{
	(void)op, (void)fd, (void)path, (void)path2, (void)id, (void)off, (void)len;
	(void)data, (void)linked;
	return 0;
}
#endif

/* malloc / calloc that fail on an armed DE_FAULT_ALLOC of the calling thread */
void *du_malloc(size_t n);
void *du_calloc(size_t n, size_t size);

/* ---- CRC and the 40-byte row record (export and snapshot files) ---------------------- */

#define DU_REC_META 40u

/* The record's first 40 bytes (layout in export.c's format comment); row_floats floats
 * follow. What flags may hold is each format's own. */
struct du_rec {
	uint64_t key, last_step;
	uint32_t freq, flags;
	uint64_t aux;
	uint32_t crc, pad;
};
_Static_assert(sizeof(struct du_rec) == DU_REC_META, "record metadata is 40 bytes");
_Static_assert(offsetof(struct du_rec, last_step) == 8, "spec");
_Static_assert(offsetof(struct du_rec, freq) == 16, "spec");
_Static_assert(offsetof(struct du_rec, flags) == 20, "spec");
_Static_assert(offsetof(struct du_rec, aux) == 24, "spec");
_Static_assert(offsetof(struct du_rec, crc) == 32, "spec");
_Static_assert(offsetof(struct du_rec, pad) == 36, "spec");

/* CRC32C of: u64 index, rec bytes 0..31, rec bytes 36..record_bytes-1 */
uint32_t du_record_crc(uint64_t index, const unsigned char *rec, uint32_t record_bytes);

/* Bytes 16..47 of the export and the snapshot header: the source table's normalized
 * config (de_table_config_get) but seg_buckets, which each header keeps elsewhere. */
struct du_hdr_config {
	uint32_t dim, nslots, init;
	float init_a, init_b, slot_init;
	uint64_t seed;
};
_Static_assert(sizeof(struct du_hdr_config) == 32, "spec");
_Static_assert(offsetof(struct du_hdr_config, init_a) == 12, "spec");
_Static_assert(offsetof(struct du_hdr_config, seed) == 24, "spec");

void du_hdr_config_put(struct du_hdr_config *h, const struct de_table_config *c);
/* The config a header holds, with its seg_buckets: 0, or -EBADMSG when it is not one
 * that de_table_config_check accepts (out: the normalized config). */
int du_hdr_config_get(const struct du_hdr_config *h, uint32_t seg_buckets,
		      struct de_table_config *out);

/* The first field (its name) in which a file's table config a differs from b's that an
 * import or a load requires to match (seg_buckets does not count); NULL when none. */
const char *du_config_mismatch(const struct de_table_config *a, const struct de_table_config *b);

/* ---- one ring, a few buffers -------------------------------------------------------- */

#define DU_NBUF 4u                /* chunk buffers */
#define DU_HDR_BYTES 128u         /* b[DU_NBUF]: the header buffer */
#define DU_TRL_BYTES 32u          /* b[DU_NBUF + 1]: the trailer buffer */
#define DU_TAG_FSYNC UINT64_MAX
#define DU_RING_ENTRIES 8u

struct du_iobuf {
	unsigned char *p;
	size_t len;    /* bytes to transfer */
	size_t done;   /* bytes transferred so far */
	uint64_t off;  /* file offset of p[0] */
	bool busy;     /* in flight */
	bool eof;      /* read: the file ended before len */
	uint64_t plog_id; /* the power-loss log's id of the write in flight (test builds) */
};

struct du_io {
	struct io_uring ring;
	bool ring_ok;
	int fd;
	bool write;
	unsigned inflight;
	int err;          /* first error of a completion */
	bool fsync_done;
	struct du_fault *fault; /* the calling thread's plan */
	uint64_t plog_fsync;    /* the power-loss log's id of the fsync in flight */
	struct du_iobuf b[DU_NBUF + 2]; /* DU_NBUF chunk buffers, then header and trailer */
};

struct io_uring_sqe *du_get_sqe(struct du_io *io);
int du_io_queue(struct du_io *io, unsigned i, unsigned sqe_flags); /* -EIO: injected */
int du_io_queue_fsync(struct du_io *io);                            /* -EIO: injected */
int du_io_submit(struct du_io *io);
int du_io_reap(struct du_io *io);
int du_io_drain(struct du_io *io);
int du_io_open(struct du_io *io, int fd, bool write);
int du_io_bufs(struct du_io *io, unsigned nbuf, size_t bytes);
void du_io_close(struct du_io *io);

/* The end of an atomic replace: write b[first..first+n-1] (len and off set), wait until
 * every one of them completed, then fsync (an fsync covers only writes that completed
 * before it started: one linked behind the last write does not wait for the others),
 * close the ring
 * (io zeroed), close *fd (-1 after), rename tmp over path. 0: path replaced; the caller
 * still fsyncs the directory. On error the caller unlinks tmp. */
int du_io_commit(struct du_io *io, unsigned first, unsigned n, int *fd, const char *tmp,
		 const char *path);

/* ---- record files: the writer export and snapshot share ---------------------------- */

#define DU_CHUNK_BYTES (1u << 20) /* bytes of records per read or write of a record file */

/*
 * A record file is a DU_HDR_BYTES header, records of DU_REC_META + 4 * row_floats bytes
 * (record i at DU_HDR_BYTES + i * record_bytes), a DU_TRL_BYTES trailer. du_rec_write
 * streams the records and seals them (crc, pad); the format's own callbacks encode them.
 */
struct du_rec_writer {
	bool all_keys;        /* every key of the table (de_table_iterate), else keys[] */
	const uint64_t *keys; /* the keys to write, in order (0s skipped) */
	size_t nkeys;
	/* Encode the record rec of a row the table holds (under its row lock). */
	void (*row)(void *ctx, unsigned char *rec, const float *row, const struct de_row_meta *m);
	/* A key the table does not hold: encode its record into rec (zeroed). NULL: such
	 * keys are left out. */
	void (*missing)(void *ctx, unsigned char *rec, uint64_t key);
	/* The header at hdr and the trailer at trl (buffers of DU_HDR_BYTES, DU_TRL_BYTES) of
	 * a file of n records whose crc fields, in order, have the CRC32C records_crc. */
	void (*finish)(void *ctx, void *hdr, void *trl, uint64_t n, uint32_t records_crc);
	void *ctx;
};

/*
 * Write the record file path from table t: path.tmp (a new file: a leftover is unlinked,
 * then O_CREAT | O_EXCL | O_NOFOLLOW, so a symlink planted there is never followed) through one io_uring, DU_NBUF chunk
 * buffers of about DU_CHUNK_BYTES in flight, then header and trailer, then (both
 * completed) an fsync, rename over path, fsync the directory. cb (may be NULL) sees the records
 * written after each chunk and the larger of that and the records expected (the table's
 * key count, or nkeys); nonzero cancels
 * (-ECANCELED). out: *records. On error path is unchanged and path.tmp removed.
 */
int du_rec_write(de_table *t, const char *path, const struct du_rec_writer *w,
		 de_progress_fn cb, void *cb_ctx, uint64_t *records);

/* ---- files -------------------------------------------------------------------------- */

/* fsync the directory that holds path / the directory dir */
int du_fsync_dir_of(const char *path);
int du_fsync_dir(const char *dir);

/* Open a regular file read-only. out: *fd (-1 on error), *size. -EISDIR for a directory,
 * -EINVAL for anything else that is not a regular file, -ELOOP for a symlink (never
 * followed). */
int du_open_regular(const char *path, int *fd, uint64_t *size);

/* malloc'd "dir/name" (NULL: out of memory) */
char *du_path(const char *dir, const char *name);

/* Read a whole regular file of at most max bytes through io_uring. out: *buf (malloc'd,
 * caller frees; NULL for an empty file), *len. -EFBIG when larger than max. */
int du_read_file(const char *path, size_t max, unsigned char **buf, size_t *len);

/* io_uring_queue_init (flags 0) / io_uring_queue_exit, which every ring of libdeuring goes
 * through. Under ThreadSanitizer they also tell TSan what it cannot see: liburing maps and
 * unmaps ring memory with raw syscalls, so TSan never learns that a closed ring's pages
 * were unmapped before a new ring (often in another thread) got the same addresses, and
 * reports the new ring's SQE writes as racing with the old one's. du_ring_exit releases
 * each page of the ring before the unmap, du_ring_init acquires each page after the map:
 * the order munmap and mmap give, and nothing more. */
int du_ring_init(unsigned entries, struct io_uring *ring);
void du_ring_exit(struct io_uring *ring);

/* Synchronous pread / pwrite of [off, off + len) through ring, short transfers continued.
 * out: *done (bytes; a read stops early at end of file). A write of 0 bytes is -EIO. */
int du_ring_rw(struct io_uring *ring, int fd, bool write, void *buf, size_t len, uint64_t off,
	       size_t *done);

/* Replace path atomically: write path.tmp (io_uring write, then fsync once it completed),
 * rename over path, fsync the directory. On error path is unchanged, path.tmp removed.
 * Faults: DE_FAULT_WRITE, DE_FAULT_FSYNC of the calling thread. */
int du_write_file_atomic(const char *path, const void *buf, size_t len);

#endif /* DE_URING_PVT_H */
