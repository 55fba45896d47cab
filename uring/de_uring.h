/*
 * de_uring.h — the public interface of libdeuring: persistence of dynemb tables through
 * io_uring (liburing). So far: export / import of a whole table to / from one file, the
 * format specified byte by byte at the top of uring/export.c (NumPy reads it too; see
 * uring/README.md). WAL, snapshots and recovery (ARCHITECTURE.md section 5) come later.
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
 *   - last_step: de_table_apply overwrites a row's last_step with its step argument before
 *     the callback sees the row. Where de_shm.h defines DE_STEP_KEEP (a step value for
 *     which apply leaves last_step alone), export passes it and preserves last_step
 *     exactly. Without it, export passes DE_EXPORT_STEP (0): every exported last_step is 0,
 *     and so is the source row's afterwards. A known gap until de_shm.h has DE_STEP_KEEP.
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

#include <stdint.h>

#include "de_shm.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Progress: called after each batch of records with the records done so far and the
 * expected total (export: the table's live keys when it started, an estimate; import:
 * the records the file holds). Return 0 to go on, anything else to stop (-ECANCELED). */
typedef int (*de_progress_fn)(void *ctx, uint64_t done, uint64_t total);

#define DE_EXPORT_VERSION 1u
#define DE_EXPORT_STEP 0u /* the step de_export passes to de_table_apply (see Caveats) */

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

/* CRC32C (Castagnoli, reflected, init and xorout 0xffffffff), continuing from crc (0 to
 * start): de_crc32c(0, "123456789", 9) == 0xe3069283. */
uint32_t de_crc32c(uint32_t crc, const void *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif /* DE_URING_H */
