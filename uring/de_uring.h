/*
 * de_uring.h — the public interface of libdeuring: persistence of dynemb tables through
 * io_uring (liburing), ARCHITECTURE.md section 5:
 *   - export / import of a whole table to / from one file (export.c; NumPy reads it too,
 *     see uring/README.md);
 *   - the write-ahead log (wal.c), snapshots and dirty-key sets (snapshot.c), the manifest,
 *     recovery, garbage collection and checkpoints (manifest.c). Each file begins with the
 *     byte layout of its format; uring/README.md says how they fit together.
 *
 * Conventions as in de_shm.h: 0 or a negative errno; out-values through pointers marked
 * "out"; no global mutable state (each call makes its own ring).
 *
 * Errors of the export functions:
 *   -EBADMSG  the file is corrupt, truncated, or not an export (check / strict import)
 *   -EPROTO   an export of another format version
 *   -EEXIST   import: the table's config differs from the file's (rep->mismatch names the
 *             field)
 *   -ENOSPC, -EIO, ... the file system's own errors, surfaced as they come
 *   -ECANCELED the progress callback asked to stop
 *   -EINVAL   bad arguments
 *
 * Caveats (what this API does not promise):
 *   - Export is not a point-in-time snapshot: it iterates the table (weakly consistent,
 *     see de_shm.h) while writers may run. A key present and unchanged for the whole
 *     export is exported exactly once with its row; a key written meanwhile is exported
 *     with either value; one erased and re-inserted meanwhile may appear twice (import
 *     keeps the later record). Stop the writers for an exact copy.
 *   - Export reads rows through de_table_apply, which is a write: it must run in the
 *     process that owns the table (not on a read-only attach), and see last_step below.
 *   - last_step: export reads rows with de_table_apply's step DE_STEP_KEEP (de_shm.h),
 *     for which apply leaves a row's last_step as it is: the file has each row's
 *     last_step exactly, and the source row keeps it.
 *   - Import does not erase keys the table already holds; a key in both ends up with the
 *     file's row and metadata. Import into a table the file's keys would overflow fails
 *     with the table's error (-ENOMEM) after importing some records (rep says how many).
 *   - A strict import verifies the whole file before writing anything; a file changed
 *     between that check and the import pass gives -EBADMSG with some records imported.
 *   - The destination file of an export is replaced atomically (write path.tmp, fsync,
 *     rename, fsync the directory): readers see the old file or the complete new one.
 *     path.tmp is removed on failure; it is not locked against a concurrent export of
 *     the same path.
 */
#ifndef DE_URING_H
#define DE_URING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "de_shm.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Progress: called after each batch of records with the records done so far and the
 * expected total (export: the table's live keys when it started, an estimate; import:
 * the records the file holds). Return 0 to go on, anything else to stop (-ECANCELED). */
typedef int (*de_progress_fn)(void *ctx, uint64_t done, uint64_t total);

#define DE_EXPORT_VERSION 1u

/* What a file says about itself (de_export_check) and how far it is intact. */
struct de_export_info {
	uint32_t version;
	struct de_table_config config; /* dim, nslots, init, init_a, init_b, slot_init, seed,
	                                  seg_buckets (informational) */
	uint64_t records;       /* records the header announces */
	uint64_t valid_records; /* the verified prefix: records 0..valid_records-1 are intact */
	uint32_t record_bytes;  /* bytes per record (the NumPy dtype's itemsize) */
	uint32_t header_bytes;  /* offset of the first record */
	uint64_t file_bytes;
	const char *problem;    /* static text: the first damage found, or NULL when intact */
};

/*
 * Export every live key of t (values, optimizer slots, metadata) to path.
 * records (out, may be NULL): records written. On error no file is left at path.tmp and
 * path is unchanged.
 */
int de_export(de_table *t, const char *path, de_progress_fn cb, void *ctx,
	      uint64_t *records /* out */);

#define DE_IMPORT_SALVAGE 1u /* import the verified prefix of a damaged file */

struct de_import_report {
	uint64_t records;   /* records the file's header announces (0 if the header is bad) */
	uint64_t imported;  /* records written into the table */
	uint64_t dropped;   /* salvage: announced records not imported (records - imported) */
	const char *problem;  /* static text: the damage found, or NULL */
	const char *mismatch; /* -EEXIST: the config field that differs, else NULL */
};

/*
 * Import the file at path into t, whose config must match the file's (dim, nslots,
 * init, init_a, init_b, slot_init, seed; seg_buckets may differ): else -EEXIST and
 * rep->mismatch. Each record's key gets the record's values, slots, freq, last_step,
 * flags and aux (created when missing).
 *
 * Strict (flags 0): any damage anywhere (header, a record, the trailer, the file size)
 * gives -EBADMSG (-EPROTO for another version) and imports nothing.
 * DE_IMPORT_SALVAGE: with an intact header, imports records 0..k-1, the longest prefix of
 * records that each verify (own CRC32C, position, key != 0), and returns 0; rep says
 * imported and dropped, and problem names the damage (NULL when the file is intact). A
 * damaged header still gives -EBADMSG / -EPROTO: nothing in the file can be trusted then.
 * rep may be NULL.
 */
int de_import(de_table *t, const char *path, unsigned flags, de_progress_fn cb, void *ctx,
	      struct de_import_report *rep /* out */);

/* Validate a file without a table: 0 when intact, else -EBADMSG / -EPROTO / an I/O
 * error. out (may be NULL) is filled as far as the header could be read. */
int de_export_check(const char *path, struct de_export_info *out /* out */);
/* Only the header (one read): 0 with version, config, records, record_bytes,
 * header_bytes and file_bytes, and problem set (nothing else fails) when the file's size
 * does not match the records it announces; else -EBADMSG / -EPROTO / an I/O error with
 * problem naming it. valid_records stays 0: nothing past the header was read. */
int de_export_header(const char *path, struct de_export_info *out /* out */);

/* CRC32C (Castagnoli, reflected, init and xorout 0xffffffff), continuing from crc (0 to
 * start): de_crc32c(0, "123456789", 9) == 0xe3069283. */
uint32_t de_crc32c(uint32_t crc, const void *buf, size_t len);

/* mkdir -p whose result survives power loss: create path and each missing parent (mode),
 * and fsync the parent of every directory it created, from the top down, so that no
 * directory it made can vanish with its entry after the call returned (a directory that
 * existed is left as it is). 0, or the negative errno of the mkdir or fsync that failed
 * (-ENAMETOOLONG past PATH_MAX). A data directory is made with it. */
int de_mkdir_durable(const char *path, unsigned mode);

/* ========================================================================= */
/* Durable tables: WAL, snapshots, manifest, recovery                          */
/* ========================================================================= */
/*
 * One directory holds everything of one daemon: WAL segments (wal-<first lsn>.log),
 * snapshots (snap-<table>-<seq>.dsnp) and MANIFEST. There is ONE WAL per daemon and its
 * records carry a table id: a group commit is then one fdatasync for every table (one
 * per table would multiply the fsyncs by the number of tables), LSNs are one total order,
 * and recovery is one pass. Each table keeps its own start LSN in the manifest.
 *
 * How the daemon uses it (durability per table, enum de_durability):
 *   update:   apply to the table; then, for ASYNC and SYNC tables, de_wal_append with
 *             .table (the rows are read back from it) and .dirty; for SYNC tables also
 *             de_wal_sync(lsn) before acknowledging (batch many clients' appends, then
 *             one sync: group commit). NONE tables only de_dirty_add.
 *   snapshot: de_persist_checkpoint (full or incremental), any time, while updates go on.
 *   start:    de_persist_recover into the tables, then de_wal_open with
 *             start_lsn = report.next_lsn.
 *
 * Why a fuzzy snapshot is enough. de_wal_cut returns L, the LSN the next record will get,
 * and takes the dirty set, both under the WAL's append lock; an append marks its keys
 * dirty and reads their rows under the same lock. So every record with LSN < L was
 * applied to the table before the snapshot starts reading, and its keys are in the
 * taken set (incremental). The snapshot then reads each row once, under that row's lock,
 * while writers go on: each row it stores is the row after some prefix of that key's
 * updates, at least all those with LSN < L. Recovery loads the snapshot chain and
 * replays every record with LSN >= L in LSN order. Each record carries the key's whole
 * row (values, optimizer slots, last_step, freq, aux), read from the table under the
 * row lock when the record was appended, or the key's absence: replaying it SETS the row,
 * it does not add to it. So after replay a key written at or after L has the row of its
 * last durable record, and a key not written since L has the row it had at L, which the
 * snapshot holds exactly. Nothing depends on when the snapshot read a row.
 *
 * Caveats (durable tables):
 *   - gc protects only the tables the manifest lists: checkpoint a new durable table once
 *     when it is created (an empty table makes an empty snapshot), before the next gc.
 *   - A fuzzy snapshot may hold rows newer than the durable end of the WAL (updates
 *     applied in memory and never made durable before a crash): recovery then restores
 *     every durable update and possibly some later ones, never fewer.
 *   - de_wal_append reads rows and copies them under the WAL's append lock: appends are
 *     serialized (one memcpy-speed critical section per record); flushes are not under it.
 *   - A failed WAL stays failed; records appended but not durable are lost. Recover and
 *     open a new handle (the torn tail, if any, is cut then).
 *   - One process per directory: nothing locks the WAL against a second writer
 *     (checkpoints lock each other out with flock on the directory).
 */

enum de_durability {
	DE_DURABILITY_NONE = 0, /* snapshots only: updates since the last checkpoint are lost */
	DE_DURABILITY_ASYNC,    /* group commit every window_ms: at most that much is lost */
	DE_DURABILITY_SYNC,     /* acknowledged after its WAL record is fdatasync'ed */
};

/* ---- fault injection (test builds) --------------------------------------------------- */

enum de_fault_kind {
	DE_FAULT_WRITE = 0, /* a file write fails with -EIO (before it is submitted) */
	DE_FAULT_FSYNC = 1, /* an fsync / fdatasync fails with -EIO */
	DE_FAULT_ALLOC = 2, /* an allocation fails (-ENOMEM) */
	DE_FAULT_KINDS = 3,
};

/* ---- dirty-key sets ------------------------------------------------------------------ */

/* The keys written since the last snapshot (incremental snapshots). Thread-safe. */
typedef struct de_dirty de_dirty;

int de_dirty_create(de_dirty **out);
void de_dirty_destroy(de_dirty *d); /* NULL is fine */
/* Add keys (key 0 ignored, duplicates kept once). -ENOMEM: the keys before the failing
 * growth are in, the rest not. */
int de_dirty_add(de_dirty *d, const uint64_t *keys, size_t n);
size_t de_dirty_count(de_dirty *d);
/* Take every key and leave the set empty. out: *keys (malloc'd, caller frees; NULL when
 * empty), *n. On -ENOMEM the set is unchanged. */
int de_dirty_take(de_dirty *d, uint64_t **keys, size_t *n);

/* ---- the write-ahead log ------------------------------------------------------------- */

typedef struct de_wal de_wal;

#define DE_WAL_MIN_SEGMENT (64ull << 10)
#define DE_WAL_MAX_SEGMENT (1ull << 30)
#define DE_WAL_MAX_BUFFER (256u << 20)

struct de_wal_options {
	uint64_t segment_bytes; /* roll to a new segment past this; 0 = 64 MiB; 64 KiB..1 GiB */
	uint32_t buffer_bytes;  /* each of the 2 registered buffers, and the largest record;
	                           0 = 4 MiB; 4 KiB..256 MiB (rounded up to 4 KiB) */
	uint32_t window_ms;     /* group commit period of the WAL's own thread (async tables);
	                           0 = no thread: only de_wal_flush / de_wal_sync / a full
	                           buffer write */
	uint32_t queue_depth;   /* io_uring entries; 0 = 8; 2..4096 */
	uint64_t start_lsn;     /* the lowest next LSN (give it de_recover_report.next_lsn);
	                           0 = 1. With segments there, the log continues at the
	                           highest of it, last intact record + 1 and lsn_floor; above
	                           the last record a GAP segment is written at open. */
	void (*log)(void *ctx, const char *line); /* a line on failures and truncations;
	                                             NULL: stderr */
	void *log_ctx;
};

enum de_wal_type {
	DE_WAL_PUT = 1,   /* keys and their full rows (an absent key: erased) */
	DE_WAL_ERASE = 2, /* keys erased */
};

struct de_wal_batch {
	uint32_t table_id;
	uint32_t type;        /* enum de_wal_type */
	const uint64_t *keys; /* n keys; 0 is not a key and is refused (-EINVAL) */
	size_t n;
	/* PUT, one of: */
	de_table *table;      /* read each key's current row and meta from the table (under
	                         its row lock, DE_STEP_KEEP); a key the table no longer holds
	                         is logged as absent. The way the daemon logs. */
	const float *rows;    /* or: n rows of row_floats floats (values, then slots) */
	const struct de_row_meta *meta; /* and their meta (last_step, freq, flags, aux; key is
	                                   ignored); flags bit 0 clear: absent */
	uint32_t row_floats;  /* with rows: dim * (1 + nslots) of the table */
	de_dirty *dirty;      /* may be NULL: the keys are marked dirty before the LSN is
	                         assigned (see "fuzzy snapshot" above) */
};

/*
 * Open the log in dir (created if missing, mode 0755) for appending. The directory's
 * segments are scanned first and its torn tail truncated, as de_wal_replay with
 * DE_WAL_REPLAY_TRUNCATE does; appends then go to a new segment (or to the newest one
 * when it holds no record and starts at the next LSN). LSNs never go back: the next LSN
 * is at least start_lsn and above every LSN the segments name. Run
 * recovery BEFORE opening (recovery needs the records the open would not touch, and a
 * WAL opened on a directory it did not recover may find segments missing).
 * -EINVAL: bad options.
 */
int de_wal_open(const char *dir, const struct de_wal_options *o, de_wal **out);

/*
 * Append one record (one table, n keys). out: *lsn (may be NULL), the record's LSN; LSNs
 * are consecutive. The record is in memory: durable after de_wal_sync(lsn) or the group
 * commit. A full buffer is written (and fdatasync'ed) by the appender that fills it.
 * -EMSGSIZE: the record exceeds buffer_bytes (split the batch: de_wal_max_keys).
 * -EROFS: the WAL failed (de_wal_failed says why); nothing was appended.
 */
int de_wal_append(de_wal *w, const struct de_wal_batch *b, uint64_t *lsn /* out */);

/* Most keys of row_floats floats one PUT record can hold. */
size_t de_wal_max_keys(const de_wal *w, uint32_t row_floats);

/* Write and fdatasync everything appended so far. 0, or the WAL's failure. */
int de_wal_flush(de_wal *w);

/* Return once record lsn is durable (flushing when no one else is): 0, or the error
 * that failed the WAL (the record is NOT durable then). -EINVAL for an LSN not appended. */
int de_wal_sync(de_wal *w, uint64_t lsn);

/*
 * Before acknowledging, without waiting for its durability, what was appended so far
 * (async tables): return once no flush that leaves it behind is in flight, i.e. when the
 * flush in flight carries it, or none is in flight (the next, within window_ms on the
 * group-commit cadence, will), or it is durable. 0, or the WAL's failure (it will not be
 * written then). Blocks only while a flush is in flight, at most until it lands.
 * The bound this gives, with T the group-commit period (window_ms here, the daemon's
 * commit_ms): an update acknowledged at time a is in the kernel (and survives a crash of
 * the process) by a + T + W + d, W one buffer write into the page cache, d the
 * committer's scheduling delay. It is durable (survives power loss) only once the
 * fdatasync behind that write returns: by a + T + W + F + d, F that fdatasync's latency,
 * which the WAL does not bound (a failing disk may take seconds).
 */
int de_wal_ack_wait(de_wal *w);

/* The group-commit cadence: advance *tick (CLOCK_MONOTONIC) by window_ms; a tick already
 * past (the flush overran it) becomes now. Fixed to the clock: flush k starts at the
 * first tick + k * window_ms, not window_ms after flush k - 1 returned. */
void de_wal_next_tick(struct timespec *tick, uint32_t window_ms);

uint64_t de_wal_durable_lsn(de_wal *w); /* every record <= it is on disk (0: none) */
uint64_t de_wal_next_lsn(de_wal *w);    /* the LSN the next append gets */

/*
 * 0 while healthy; else the negative errno that failed the WAL (a write's -ENOSPC / -EIO,
 * an fsync's error) and why (may be NULL) gets a line saying what failed. A failed WAL
 * never retries: an fsync error is reported once by the kernel and the dirty pages it
 * concerned may be gone, so a retry that "succeeds" proves nothing. Every record after
 * de_wal_durable_lsn is lost; appends return -EROFS. Close it, recover, open again.
 */
int de_wal_failed(de_wal *w, char *why, size_t cap);

/* The snapshot cut: under the append lock, *start_lsn = the next LSN and (d != NULL) the
 * dirty set is taken (de_dirty_take). See "fuzzy snapshot" above. */
int de_wal_cut(de_wal *w, de_dirty *d, uint64_t *start_lsn, uint64_t **keys, size_t *n);

#define DE_WAL_FLUSH_BUCKETS 21u
#define DE_WAL_FLUSH_BOUND_NS(i) (1000ull << (i))
struct de_wal_stats {
	uint64_t next_lsn, durable_lsn;
	uint64_t flushes;       /* write + fdatasync rounds */
	uint64_t fsyncs;        /* fdatasyncs submitted (a failed WAL submits no more) */
	uint64_t bytes_written;
	uint64_t segments;      /* segments this handle created */
	uint64_t flush_ns_max;  /* longest flush, buffer taken to durable (write + fdatasync) */
	uint64_t flush_ns_sum;  /* every successful flush's time, added up */
	/* successful flushes by time: flush_le[i] took at most DE_WAL_FLUSH_BOUND_NS(i)
	 * (1 us * 2^i) and more than bound i - 1; the last one more than every bound */
	uint64_t flush_le[DE_WAL_FLUSH_BUCKETS + 1];
	bool registered;        /* the buffers are registered with the ring (else plain writes) */
};
int de_wal_stats(de_wal *w, struct de_wal_stats *out);

/* Flush (when healthy), stop the group-commit thread, close. Returns the flush's error
 * or the WAL's failure. NULL is fine. */
int de_wal_close(de_wal *w);

/* The power-loss log of test builds (uring/plog.c). Each operation that decides what a disk
 * keeps, reported in one total order across threads:
 *   WRITE       path (the fd's), off, len, data (valid during the call only), a new id;
 *               linked: queued with IOSQE_IO_LINK, the next request of its ring starts
 *               only after it completed. From now on any part of it may reach the disk.
 *   WRITE_DONE  id: that write completed (a short one is continued by a new WRITE).
 *   FSYNC       path, a new id: an fsync / fdatasync queued; it covers the writes of that
 *               file completed before it and those linked into it.
 *   FSYNC_DONE  id: it succeeded: what it covers is durable.
 *   DIRSYNC     path (a directory): its fsync succeeded: the entries created, renamed or
 *               removed in it before are durable.
 *   CREATE      path: opened with O_CREAT | O_TRUNC (a new empty file, or truncated).
 *   RENAME      path -> path2.   UNLINK path.   MKDIR path.
 *   TRUNCATE    path, len: ftruncate (durable with the file's next fsync).
 * de_persist_plog (test builds only) installs the hook, one at a time (NULL removes it);
 * it runs under a lock and must not call back into libdeuring. */
enum de_plog_op {
	DE_PLOG_WRITE = 1,
	DE_PLOG_WRITE_DONE,
	DE_PLOG_FSYNC,
	DE_PLOG_FSYNC_DONE,
	DE_PLOG_DIRSYNC,
	DE_PLOG_CREATE,
	DE_PLOG_RENAME,
	DE_PLOG_UNLINK,
	DE_PLOG_MKDIR,
	DE_PLOG_TRUNCATE,
};
struct de_plog_event {
	enum de_plog_op op;
	uint64_t id;
	const char *path, *path2;
	uint64_t off, len;
	const void *data;
	bool linked;
};
typedef void (*de_plog_fn)(void *ctx, const struct de_plog_event *e);

#ifdef DE_FAULT_INJECTION
/* Test builds: the WAL's nth write / fsync (any thread's flush) from now fails once;
 * DE_FAULT_ALLOC is refused (-EINVAL). Returns the previous countdown. */
long de_wal_fail(de_wal *w, enum de_fault_kind k, long nth);
/* Test builds: from now every flush of w lands ms later than its fdatasync returned (a
 * late fdatasync, as a loaded disk gives); 0 disarms. -EINVAL: ms > 60000. */
int de_wal_delay(de_wal *w, unsigned ms);
/* Test builds: the order of the calling thread's file writes and fsyncs through its
 * record-file and atomic-replace ring (snapshots, exports, MANIFEST, CATALOG; not the
 * WAL's flushes), as libdeuring queued them and as they completed. */
enum de_io_trace_kind {
	DE_IO_WRITE_QUEUED = 1, /* linked: queued with IOSQE_IO_LINK (the next waits for it) */
	DE_IO_WRITE_DONE = 2,   /* res: bytes, or a negative errno */
	DE_IO_FSYNC_QUEUED = 3,
	DE_IO_FSYNC_DONE = 4,
	DE_IO_DIR_FSYNC = 5,    /* an fsync of a directory: off = its inode, res its result */
};
struct de_io_trace_event {
	uint32_t kind;   /* enum de_io_trace_kind */
	uint32_t linked; /* DE_IO_WRITE_QUEUED */
	int fd, res;
	uint64_t off, len; /* writes: the range queued (a resubmitted short write: its rest) */
};
/* Record into buf[0..cap) from now (events past cap are counted, not kept); buf NULL
 * stops. Returns the events of the recording it ends (0 when none was on). */
size_t de_persist_trace(struct de_io_trace_event *buf, size_t cap);
/* Test builds: the calling thread's nth write / fsync / allocation in libdeuring (not the
 * WAL's flushes) fails once. Returns the previous countdown; 0 disarms. */
long de_persist_fail(enum de_fault_kind k, long nth);

void de_persist_plog(de_plog_fn fn, void *ctx);
/* Test builds: report an operation done outside libdeuring (the daemon's CATALOG) to the
 * installed hook; WRITE and FSYNC return their new id (0: no hook), which their *_DONE
 * pass back as id. */
uint64_t de_persist_plog_note(enum de_plog_op op, const char *path, const char *path2,
			      uint64_t id, uint64_t off, uint64_t len, const void *data);
/* Test builds: install a hook that appends each event to the file at path (created if
 * missing): u32 op, u32 linked, u64 id, u64 off, u64 len, u32 path bytes, u32 path2
 * bytes, then the two paths (no NUL) and, for a WRITE, its len bytes. For a daemon
 * under test (DYNEMBD_TEST_PLOG). */
int de_persist_plog_file(const char *path);
#endif

/* ---- replay -------------------------------------------------------------------------- */

/* One record as replay hands it out (pointers valid during the callback only). */
struct de_wal_record {
	uint64_t lsn;
	uint32_t table_id;
	uint32_t type;       /* enum de_wal_type */
	uint32_t n;          /* keys */
	uint32_t row_floats; /* PUT */
	const uint64_t *keys;
	const struct de_row_meta *meta; /* PUT: n entries (key filled; flags bit 0: present) */
	const float *rows;              /* PUT: n * row_floats */
};
typedef int (*de_wal_record_fn)(void *ctx, const struct de_wal_record *r);

/* Apply a record to t (PUT: rows set, absent keys erased; ERASE: erased). -EEXIST when
 * the record's row_floats is not the table's. */
int de_wal_record_apply(de_table *t, const struct de_wal_record *r);

struct de_wal_replay_result {
	uint64_t records;         /* records handed to the callback (lsn >= from_lsn) */
	uint64_t skipped;         /* intact records below from_lsn */
	uint64_t last_lsn;        /* last intact record (0: none); next LSN is last_lsn + 1 */
	uint64_t bytes_dropped;   /* bytes after the last intact record (the torn tail) */
	uint64_t records_dropped; /* records that could be delimited in them (a lower bound) */
	uint32_t segments;        /* segments read */
	const char *problem;      /* static text: why the log ends early (NULL: clean end) */
	uint64_t lsn_floor;       /* no LSN below it may be given out again: above every LSN
	                             the segments read name (the torn tail's included) */
	uint64_t unneeded_bytes;  /* damage skipped because every LSN it lost is below
	                             from_lsn (left on disk for gc; the records after it read) */
	uint64_t unneeded_records; /* the LSNs it lost */
	const char *unneeded_problem; /* static text: the first such damage (NULL: none) */
};

#define DE_WAL_REPLAY_TRUNCATE 1u /* cut the torn tail off (truncate that segment, remove
                                     the later ones), so that appends follow intact records */

/*
 * Read the log in dir in LSN order and call cb on each intact record with lsn >=
 * from_lsn, up to the first damage (bad magic, length, LSN sequence or CRC32C, a segment
 * that does not continue the previous one) that loses an LSN >= from_lsn: that record
 * and everything after it are the torn tail, reported in res and, with
 * DE_WAL_REPLAY_TRUNCATE, removed (and a line logged). Damage that loses only LSNs below
 * from_lsn is skipped when intact records follow it (unneeded_*; with
 * DE_WAL_REPLAY_TRUNCATE a line logged). A segment may start after a gap it declares
 * (de_wal_open leaves one when start_lsn is above the log). A directory without segments
 * replays nothing. -EBADMSG when records from_lsn.. are not in the log any more (the
 * oldest segment starts later). A callback's non-zero return stops the replay and is
 * returned. log (may be NULL: stderr) gets the truncation line. from_lsn 0: from the
 * oldest segment there, whatever its first LSN.
 */
int de_wal_replay(const char *dir, uint64_t from_lsn, unsigned flags, de_wal_record_fn cb,
		  void *ctx, void (*log)(void *, const char *), void *log_ctx,
		  struct de_wal_replay_result *res /* out */);

/* ---- snapshots ----------------------------------------------------------------------- */

enum de_snapshot_kind {
	DE_SNAPSHOT_FULL = 1,        /* every live row */
	DE_SNAPSHOT_INCREMENTAL = 2, /* the rows of the given keys; absent keys as tombstones */
};

struct de_snapshot_spec {
	uint32_t table_id;
	uint32_t kind;          /* enum de_snapshot_kind */
	uint64_t seq;           /* > 0; the file is dir/snap-<table_id %08x>-<seq %016x>.dsnp */
	uint64_t parent_seq;    /* incremental: seq of the previous snapshot of the chain */
	uint64_t start_lsn;     /* the cut (de_wal_cut); WAL replay starts there */
	const uint64_t *keys;   /* incremental: the dirty keys (key 0 skipped) */
	size_t nkeys;
};

struct de_snapshot_info {
	uint32_t table_id, kind;
	uint64_t seq, parent_seq, start_lsn;
	uint64_t records;       /* rows + tombstones */
	uint64_t tombstones;
	uint64_t file_bytes;
	struct de_table_config config;
	const char *problem;    /* static text: the damage found, or NULL */
};

/* The file name of a snapshot (cap >= 32). */
int de_snapshot_name(char *buf, size_t cap, uint32_t table_id, uint64_t seq);

/*
 * Write a snapshot of t, streamed through io_uring while t stays writable (fuzzy: see
 * above), to path.tmp, fsync, rename, fsync the directory. info (may be NULL) describes
 * what was written. On error nothing is left (no .tmp, the old file of that name, if any,
 * unchanged). -ECANCELED: cb asked to stop.
 */
int de_snapshot_write(const char *dir, de_table *t, const struct de_snapshot_spec *s,
		      de_progress_fn cb, void *ctx, struct de_snapshot_info *info /* out */);

/* Verify one snapshot file completely (header, every record, trailer, exact size): 0 or
 * -EBADMSG (-EPROTO: another version) with info->problem. */
int de_snapshot_check(const char *path, struct de_snapshot_info *info /* out */);

struct de_snapshot_load_report {
	uint32_t files;          /* files loaded */
	uint64_t rows, tombstones;
	uint64_t start_lsn;      /* of the last file: replay the WAL from there */
	uint64_t bad_seq;        /* the file at fault (0: none) */
	const char *problem;     /* static text, or NULL */
	const char *mismatch;    /* -EEXIST: the config field that differs */
};

/*
 * Load a chain into t: seqs[0] a full snapshot, then incrementals each naming the one
 * before as parent, all of table_id, start LSNs not decreasing, each file's config equal
 * to t's. Every file is verified completely before the first row is written: any damage
 * is -EBADMSG (-EPROTO, -EEXIST, -ENOENT for a missing file) with t untouched. (A file
 * changed between that check and the load pass: -EBADMSG with some rows loaded.)
 */
int de_snapshot_load(de_table *t, const char *dir, uint32_t table_id, const uint64_t *seqs,
		     unsigned n, struct de_snapshot_load_report *rep /* out */);

/* ---- manifest ------------------------------------------------------------------------ */

#define DE_MANIFEST_VERSION 1u
#define DE_MANIFEST_MAX_TABLES 256u
#define DE_MANIFEST_MAX_CHAIN 64u /* a full snapshot and up to 63 incrementals */

struct de_manifest_table {
	uint32_t table_id;
	uint32_t nsnaps;  /* 0: no snapshot yet (start from an empty table) */
	uint64_t wal_lsn; /* replay this table's records with lsn >= wal_lsn */
	uint64_t seqs[DE_MANIFEST_MAX_CHAIN]; /* the chain: full, then incrementals */
};

/* About 135 KiB: allocate it, do not put it on a small stack. */
struct de_manifest {
	uint64_t generation; /* grows by one per write */
	uint32_t ntables;    /* table ids strictly increasing */
	struct de_manifest_table tables[DE_MANIFEST_MAX_TABLES];
};

/* Read dir/MANIFEST: -ENOENT when there is none (a new directory), -EBADMSG / -EPROTO
 * with problem (static text, may be NULL) when it is damaged. */
int de_manifest_read(const char *dir, struct de_manifest *m /* out */, const char **problem);
/* The same on bytes in memory (what read does after reading the file). */
int de_manifest_decode(const void *buf, size_t len, struct de_manifest *m /* out */,
		       const char **problem);
/* Replace dir/MANIFEST atomically (write MANIFEST.tmp, fsync, rename, fsync dir).
 * -EINVAL: m breaks a rule above. On an error of the last step (the directory fsync)
 * the new manifest, complete and fsync'ed, may already be in place: a caller that treats
 * the write as failed stays safe (a checkpoint puts its dirty keys back). */
int de_manifest_write(const char *dir, const struct de_manifest *m);

/* ---- recovery, checkpoints, garbage collection --------------------------------------- */

struct de_recover_table {
	uint32_t table_id;
	de_table *table; /* empty, with the config the table was created with */
};

struct de_recover_report {
	bool manifest;             /* a manifest was there */
	uint64_t generation;
	uint32_t snapshots;        /* files loaded, all tables */
	uint64_t snapshot_rows;
	uint64_t wal_applied;      /* records applied */
	uint64_t wal_skipped;      /* intact records of other tables or below a table's LSN */
	uint64_t next_lsn;         /* give to de_wal_options.start_lsn: the highest of the
	                              WAL's lsn_floor and every table's manifest wal_lsn */
	struct de_wal_replay_result wal;
	char message[256];         /* what failed (file and reason), or a summary */
};

/*
 * The whole recovery: manifest -> each listed table's snapshot chain -> WAL replay from
 * the smallest wal_lsn (each table takes its records from its own wal_lsn on), up to the
 * first damage that loses a record at or above it; the torn tail is truncated and
 * logged (damage below every wal_lsn is skipped, logged, and the records after it
 * replayed). next_lsn never goes back (see its field). Tables not listed are left
 * alone (their records skipped); a listed table the manifest does not know starts empty
 * and takes every record of its id. A damaged manifest or snapshot is an error
 * (-EBADMSG, ...) with rep->message naming it; the tables may then hold part of a load:
 * throw them away.
 */
int de_persist_recover(const char *dir, const struct de_recover_table *tables, size_t n,
		       void (*log)(void *, const char *), void *log_ctx,
		       struct de_recover_report *rep /* out */);

#define DE_CHECKPOINT_FULL 1u /* a full snapshot even when an incremental would do */

/*
 * Snapshot one table and make it current: cut (de_wal_cut when w, else de_dirty_take),
 * write a full snapshot (flag, no chain yet, or a chain of DE_MANIFEST_MAX_CHAIN) or an
 * incremental of the dirty keys, flush w, replace the manifest (generation + 1, this
 * table's chain and wal_lsn), then de_persist_gc. Serialized against other checkpoints of
 * dir by flock on the directory. On failure the taken dirty keys are put back and the
 * manifest is unchanged. info (may be NULL): the snapshot written.
 */
int de_persist_checkpoint(const char *dir, de_wal *w, de_dirty *d, de_table *t,
			  uint32_t table_id, unsigned flags, de_progress_fn cb, void *ctx,
			  struct de_snapshot_info *info /* out */);

struct de_gc_report {
	uint32_t segments_removed, snapshots_removed;
	uint64_t bytes_freed;
};

/*
 * Delete what the manifest on disk (durable: it was fsync'ed before its rename) no longer
 * needs: WAL segments whose records all lie below every table's wal_lsn (never the
 * newest segment; nothing when the manifest lists no table), and snapshots of listed
 * tables older than their chain's last seq that the chain does not name (newer ones may
 * be a checkpoint in progress). Then fsync the directory. -ENOENT: no manifest.
 */
int de_persist_gc(const char *dir, struct de_gc_report *rep /* out, may be NULL */);

#ifdef __cplusplus
}
#endif
#endif /* DE_URING_H */
