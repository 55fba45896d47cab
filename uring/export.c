/*
 * export.c — export / import of a whole table to / from one file, through io_uring.
 *
 * Owns: the export file format below, its writer (de_export), its readers (de_import,
 * de_export_check). CRC32C and the ring helpers are in util.c (uring_pvt.h).
 * Never: trusts a byte of the file (every size and count is bounded by the format's
 * limits and the file's size before it is used; the reader crashes on nothing); leaves a
 * partial file at the destination path (write path.tmp, fsync, rename, fsync the
 * directory); follows a symlink at path.tmp (created O_EXCL | O_NOFOLLOW) or at the
 * file it imports (O_NOFOLLOW: -ELOOP); writes into the table before a strict import
 * has verified the whole file.
 * Callers: the daemon's export/import jobs (src/server/persist_jobs.c); tests/test_export.c,
 * tests/fuzz/fuzz_export.c.
 *
 * ---- File format, version 1 (all little-endian) ---------------------------------------
 *
 * Header, 128 bytes at offset 0 (struct exp_hdr):
 *   0    u8[8] magic "DEEXPRT1"
 *   8    u32 version (1)                12   u32 header_bytes (128: offset of record 0)
 *   16   u32 dim (1..4096)              20   u32 nslots (0..8)
 *   24   u32 init (enum de_init)        28   f32 init_a
 *   32   f32 init_b                     36   f32 slot_init
 *   40   u64 seed                       48   u64 records (number of records)
 *   56   u32 row_floats = dim * (1 + nslots)
 *   60   u32 record_bytes = 40 + 4 * row_floats
 *   64   u32 seg_buckets (informational: import does not require it to match)
 *   68   u32 flags (0; a reader of version 1 refuses anything else)
 *   72   u8[52] reserved, zero
 *   124  u32 header_crc = CRC32C of bytes 0..123
 *   The config fields are the source table's normalized config (de_table_config_get) and
 *   must pass de_table_config_check.
 *
 * Records, `records` of them, record i at header_bytes + i * record_bytes (struct du_rec,
 * then the floats):
 *   0    u64 key (never 0)              8    u64 last_step
 *   16   u32 freq                       20   u32 flags (bit 0: live)
 *   24   u64 aux                        32   u32 crc
 *   36   u32 pad (0)
 *   40   f32[dim] values, then f32[nslots][dim] optimizer slots (slot-major)
 *   crc = CRC32C of: u64 i (the record's index, little-endian), bytes 0..31, bytes
 *   36..record_bytes-1. The index makes a record moved, duplicated or dropped inside the
 *   file fail its check. The floats start at a multiple of 8 and record_bytes is a
 *   multiple of 4; there is no other padding, so NumPy reads all records with one packed
 *   structured dtype (uring/README.md):
 *     [('key','<u8'), ('last_step','<u8'), ('freq','<u4'), ('flags','<u4'), ('aux','<u8'),
 *      ('crc','<u4'), ('pad','<u4'), ('values','<f4',(dim,)), ('slots','<f4',(nslots,dim))]
 *   (leave 'slots' out when nslots == 0), np.fromfile(path, dtype, count=records,
 *   offset=header_bytes).
 *
 * Trailer, 32 bytes right after the last record (struct exp_trl):
 *   0    u8[8] magic "DEEXEND1"         8    u64 records (equal to the header's)
 *   16   u32 records_crc = CRC32C of the records' crc fields, in order (4 bytes each)
 *   20   u32[2] reserved, zero          28   u32 trailer_crc = CRC32C of bytes 0..27
 * The file ends there: its size is exactly 128 + records * record_bytes + 32.
 *
 * CRC32C is the standard one (Castagnoli, reflected, init and xorout 0xffffffff; the
 * check value of "123456789" is 0xe3069283).
 *
 * ---- What a reader accepts ------------------------------------------------------------
 *
 * Order of header checks: the file has 128 bytes, magic, then version (another version
 * is -EPROTO before anything else is looked at: a later version may move the CRC), then
 * header_crc, then every field against the limits above (-EBADMSG for any of them).
 * "Intact" (strict import, de_export_check returning 0): header good, file size exact,
 * every record's crc, pad == 0 and key != 0 good, trailer good and agreeing.
 * "Correct prefix" (salvage): records 0..k-1, where record k is the first one that is
 * missing (truncated file) or fails its own check; each of those is exactly what the
 * writer wrote at that position (up to CRC32C's odds: every error burst of 32 bits or
 * less is detected, so every single-byte flip is). Damage to the trailer alone drops no
 * record. A bad header drops everything.
 *
 * ---- I/O -------------------------------------------------------------------------------
 *
 * One io_uring per call (8 entries). Writes (util.c's du_rec_write, shared with snapshot.c;
 * this file encodes the records, header and trailer): DU_NBUF chunk buffers of about 1 MiB
 * (whole records) in flight at once, short writes resubmitted; at the end the header
 * write and the trailer write, and once both completed an fsync, then rename and
 * an fsync of the directory (plain syscalls). Reads go through the same kind of ring: the
 * next chunk's read is in flight while the current one is checked and imported.
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

#include "de_uring.h"
#include "uring_pvt.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "export.c reads and writes its little-endian format with plain loads and stores"
#endif

#define EXP_MAGIC "DEEXPRT1"
#define EXP_END_MAGIC "DEEXEND1"
#define EXP_HDR_BYTES 128u
#define EXP_REC_META 40u
#define EXP_TRL_BYTES 32u
_Static_assert(EXP_HDR_BYTES == DU_HDR_BYTES && EXP_TRL_BYTES == DU_TRL_BYTES, "du_io buffers");

struct exp_hdr {
	char magic[8];
	uint32_t version, header_bytes;
	struct du_hdr_config c; /* dim, nslots, init, init_a, init_b, slot_init, seed */
	uint64_t records;
	uint32_t row_floats, record_bytes, seg_buckets, flags;
	uint8_t reserved[52];
	uint32_t crc;
};
_Static_assert(sizeof(struct exp_hdr) == EXP_HDR_BYTES, "header is 128 bytes");
_Static_assert(offsetof(struct exp_hdr, version) == 8, "spec");
_Static_assert(offsetof(struct exp_hdr, header_bytes) == 12, "spec");
_Static_assert(offsetof(struct exp_hdr, c.dim) == 16, "spec");
_Static_assert(offsetof(struct exp_hdr, c.nslots) == 20, "spec");
_Static_assert(offsetof(struct exp_hdr, c.init) == 24, "spec");
_Static_assert(offsetof(struct exp_hdr, c.init_a) == 28, "spec");
_Static_assert(offsetof(struct exp_hdr, c.init_b) == 32, "spec");
_Static_assert(offsetof(struct exp_hdr, c.slot_init) == 36, "spec");
_Static_assert(offsetof(struct exp_hdr, c.seed) == 40, "spec");
_Static_assert(offsetof(struct exp_hdr, records) == 48, "spec");
_Static_assert(offsetof(struct exp_hdr, row_floats) == 56, "spec");
_Static_assert(offsetof(struct exp_hdr, record_bytes) == 60, "spec");
_Static_assert(offsetof(struct exp_hdr, seg_buckets) == 64, "spec");
_Static_assert(offsetof(struct exp_hdr, flags) == 68, "spec");
_Static_assert(offsetof(struct exp_hdr, reserved) == 72, "spec");
_Static_assert(offsetof(struct exp_hdr, crc) == 124, "spec");

/* records: struct du_rec (uring_pvt.h, with its offsets asserted), shared with snapshot.c */
_Static_assert(EXP_REC_META == DU_REC_META, "record metadata is 40 bytes");

struct exp_trl {
	char magic[8];
	uint64_t records;
	uint32_t records_crc;
	uint32_t reserved[2];
	uint32_t crc;
};
_Static_assert(sizeof(struct exp_trl) == EXP_TRL_BYTES, "trailer is 32 bytes");
_Static_assert(offsetof(struct exp_trl, records) == 8, "spec");
_Static_assert(offsetof(struct exp_trl, records_crc) == 16, "spec");
_Static_assert(offsetof(struct exp_trl, reserved) == 20, "spec");
_Static_assert(offsetof(struct exp_trl, crc) == 28, "spec");
_Static_assert(sizeof(float) == 4, "f32");

/* ------------------------------------------------------------------------- */
/* Export                                                                     */
/* ------------------------------------------------------------------------- */

/* what the callbacks of de_export's du_rec_write know */
struct export_ctx {
	struct de_table_config cfg;
	uint32_t row_floats;
};

static void copy_out(void *ctx, unsigned char *r, const float *row, const struct de_row_meta *m)
{
	const struct export_ctx *f = ctx;
	struct du_rec h = { .key = m->key, .last_step = m->last_step, .freq = m->freq,
			    .flags = m->flags, .aux = m->aux };
	memcpy(r, &h, sizeof h);
	memcpy(r + EXP_REC_META, row, (size_t)f->row_floats * 4);
}

/* header and trailer of a file of n records */
static void finish(void *ctx, void *hdr, void *trl, uint64_t n, uint32_t records_crc)
{
	const struct export_ctx *f = ctx;
	const struct de_table_config *c = &f->cfg;
	struct exp_hdr *h = hdr;
	memset(h, 0, sizeof *h);
	memcpy(h->magic, EXP_MAGIC, 8);
	h->version = DE_EXPORT_VERSION;
	h->header_bytes = EXP_HDR_BYTES;
	du_hdr_config_put(&h->c, c);
	h->records = n;
	h->row_floats = f->row_floats;
	h->record_bytes = EXP_REC_META + 4 * h->row_floats;
	h->seg_buckets = c->seg_buckets;
	h->crc = de_crc32c(0, h, offsetof(struct exp_hdr, crc));
	struct exp_trl *tr = trl;
	memset(tr, 0, sizeof *tr);
	memcpy(tr->magic, EXP_END_MAGIC, 8);
	tr->records = n;
	tr->records_crc = records_crc;
	tr->crc = de_crc32c(0, tr, offsetof(struct exp_trl, crc));
}

int de_export(de_table *t, const char *path, de_progress_fn cb, void *ctx, uint64_t *records)
{
	if (!t || !path || !*path)
		return -EINVAL;
	if (records)
		*records = 0;
	struct export_ctx f;
	int err = de_table_config_get(t, &f.cfg);
	if (err)
		return err;
	f.row_floats = de_table_row_floats(t);
	const struct du_rec_writer w = { .all_keys = true, .row = copy_out, .finish = finish,
					 .ctx = &f };
	return du_rec_write(t, path, &w, cb, ctx, records);
}

/* ------------------------------------------------------------------------- */
/* Readers                                                                    */
/* ------------------------------------------------------------------------- */

/* Rows are read with de_table_apply's step DE_STEP_KEEP: apply leaves last_step as it
 * is, so the record has the row's own last_step and the row keeps it. */
#define EXPORT_APPLY_STEP DE_STEP_KEEP

struct reader {
	int fd;
	uint64_t size;
	struct exp_hdr h;
	struct de_table_config cfg;
	uint64_t avail; /* complete records the file's size leaves room for (<= h.records) */
	bool exact;     /* file size is exactly header + records + trailer */
};

/* Read the header with one io_uring read and check it (see "What a reader accepts"). */
static int read_header(struct reader *rd, struct du_io *io, const char **problem)
{
	struct du_iobuf *b = &io->b[DU_NBUF];
	b->len = EXP_HDR_BYTES;
	b->off = 0;
	int err = du_io_queue(io, DU_NBUF, 0);
	if (!err)
		err = du_io_submit(io);
	if (!err)
		err = du_io_drain(io);
	if (err)
		return err;
	if (b->done < EXP_HDR_BYTES) {
		*problem = "file shorter than the header";
		return -EBADMSG;
	}
	struct exp_hdr *h = &rd->h;
	memcpy(h, b->p, sizeof *h);
	if (memcmp(h->magic, EXP_MAGIC, 8)) {
		*problem = "not an export file (magic)";
		return -EBADMSG;
	}
	if (h->version != DE_EXPORT_VERSION) {
		*problem = "unsupported export version";
		return -EPROTO;
	}
	if (h->crc != de_crc32c(0, h, offsetof(struct exp_hdr, crc))) {
		*problem = "header checksum";
		return -EBADMSG;
	}
	bool zero = true;
	for (size_t i = 0; i < sizeof h->reserved; i++)
		zero &= !h->reserved[i];
	if (h->header_bytes != EXP_HDR_BYTES || h->flags || !zero || h->c.dim < 1 ||
	    h->c.dim > DE_MAX_DIM || h->c.nslots > DE_MAX_SLOTS ||
	    h->row_floats != h->c.dim * (1 + h->c.nslots) ||
	    h->record_bytes != EXP_REC_META + 4 * h->row_floats) {
		*problem = "header fields out of range";
		return -EBADMSG;
	}
	if (du_hdr_config_get(&h->c, h->seg_buckets, &rd->cfg)) {
		*problem = "header holds an invalid table config";
		return -EBADMSG;
	}
	uint64_t body = rd->size - EXP_HDR_BYTES; /* size >= header: we read it */
	uint64_t fit = body / h->record_bytes;
	rd->avail = h->records < fit ? h->records : fit;
	rd->exact = body >= EXP_TRL_BYTES && (body - EXP_TRL_BYTES) % h->record_bytes == 0 &&
		    (body - EXP_TRL_BYTES) / h->record_bytes == h->records;
	return 0;
}

struct put_ctx {
	const unsigned char *base;
	uint32_t record_bytes, row_floats;
};

static void put_in(void *ctx, size_t i, float *row, struct de_row_meta *m)
{
	struct put_ctx *c = ctx;
	const unsigned char *r = c->base + i * c->record_bytes;
	struct du_rec h;
	memcpy(&h, r, sizeof h);
	m->last_step = h.last_step;
	m->freq = h.freq;
	m->flags = h.flags;
	m->aux = h.aux;
	memcpy(row, r + EXP_REC_META, (size_t)c->row_floats * 4);
}

/*
 * Read records 0..rd->avail-1 in chunks (the next read in flight while one is checked),
 * stop at the first one that fails its check. With t, import each chunk's good records.
 * out: *good (the verified prefix), *records_crc (over those records' crc fields).
 * Returns 0 (damage is reported through *good < avail and *problem), or an I/O, table or
 * callback error.
 */
static int scan(struct reader *rd, struct du_io *io, size_t per, de_table *t, de_progress_fn cb,
		void *ctx, uint64_t *good, uint32_t *records_crc, const char **problem,
		uint64_t *keys)
{
	const uint32_t rb = rd->h.record_bytes;
	const uint64_t nchunks = (rd->avail + per - 1) / per;
	uint64_t ok = 0;
	uint32_t rc = 0;
	int err = 0;
	*good = 0;
	*records_crc = 0;
	/* two chunk buffers: chunk c in b[c % 2] */
	for (uint64_t c = 0; c < nchunks && c < 2; c++) {
		struct du_iobuf *b = &io->b[c % 2];
		uint64_t first = c * per, cnt = rd->avail - first < per ? rd->avail - first : per;
		b->len = cnt * rb;
		b->done = 0;
		b->eof = false;
		b->off = EXP_HDR_BYTES + first * rb;
		if ((err = du_io_queue(io, (unsigned)(c % 2), 0)))
			return err;
	}
	if ((err = du_io_submit(io)))
		return err;
	bool stop = false;
	for (uint64_t c = 0; c < nchunks && !stop; c++) {
		struct du_iobuf *b = &io->b[c % 2];
		while (b->busy && !io->err)
			if ((err = du_io_reap(io)))
				return err;
		if ((err = io->err))
			return err;
		uint64_t first = c * per;
		size_t cnt = b->done / rb; /* fewer than asked: the file shrank meanwhile */
		if (b->done < b->len) {
			*problem = "file ended early";
			stop = true;
		}
		size_t k = 0;
		for (; k < cnt; k++) {
			const unsigned char *r = b->p + k * rb;
			struct du_rec h;
			memcpy(&h, r, sizeof h);
			if (h.crc != du_record_crc(first + k, r, rb)) {
				*problem = "record checksum";
				break;
			}
			if (h.pad || !h.key) {
				*problem = h.pad ? "record padding not zero" : "record with key 0";
				break;
			}
			if (keys)
				keys[k] = h.key;
			rc = de_crc32c(rc, &h.crc, 4);
		}
		if (k < cnt || k < b->len / rb)
			stop = true;
		if (t && k) {
			struct put_ctx pc = { b->p, rb, rd->h.row_floats };
			if ((err = de_table_apply(t, keys, k, true, put_in, &pc, NULL,
						  EXPORT_APPLY_STEP)))
				return err;
		}
		ok += k;
		*good = ok;
		*records_crc = rc;
		if (cb && cb(ctx, ok, rd->h.records)) {
			err = -ECANCELED;
			break;
		}
		/* reuse this buffer for chunk c + 2 */
		uint64_t nc = c + 2;
		if (!stop && nc < nchunks) {
			uint64_t nfirst = nc * per;
			uint64_t ncnt = rd->avail - nfirst < per ? rd->avail - nfirst : per;
			b->len = ncnt * rb;
			b->done = 0;
			b->eof = false;
			b->off = EXP_HDR_BYTES + nfirst * rb;
			if ((err = du_io_queue(io, (unsigned)(c % 2), 0)) || (err = du_io_submit(io)))
				return err;
		}
	}
	/* a read may still be in flight past the damage: wait for it (its buffer is ours) */
	while (io->inflight) {
		int r = du_io_reap(io);
		if (r)
			return r;
	}
	if (stop || err)
		io->err = 0; /* errors of reads past the damage or the cancel do not matter */
	else if (io->err)
		return io->err;
	if (!err && !*problem && ok < rd->h.records)
		*problem = "file truncated (records missing)";
	return err;
}

/* Trailer: 0 when it is there, intact and agrees with the records (count and CRC). */
static int check_trailer(struct reader *rd, struct du_io *io, uint32_t records_crc,
			 const char **problem)
{
	if (!rd->exact) {
		*problem = rd->avail < rd->h.records ? "file truncated (records missing)"
						     : "file size does not match the header";
		return -EBADMSG;
	}
	struct du_iobuf *b = &io->b[DU_NBUF + 1];
	b->len = EXP_TRL_BYTES;
	b->done = 0;
	b->eof = false;
	b->off = EXP_HDR_BYTES + rd->h.records * rd->h.record_bytes;
	int err = du_io_queue(io, DU_NBUF + 1, 0);
	if (!err)
		err = du_io_submit(io);
	if (!err)
		err = du_io_drain(io);
	if (err)
		return err;
	struct exp_trl tr;
	if (b->done < EXP_TRL_BYTES) {
		*problem = "trailer missing";
		return -EBADMSG;
	}
	memcpy(&tr, b->p, sizeof tr);
	if (memcmp(tr.magic, EXP_END_MAGIC, 8) || tr.reserved[0] || tr.reserved[1] ||
	    tr.crc != de_crc32c(0, &tr, offsetof(struct exp_trl, crc))) {
		*problem = "trailer damaged";
		return -EBADMSG;
	}
	if (tr.records != rd->h.records || tr.records_crc != records_crc) {
		*problem = "trailer disagrees with the records";
		return -EBADMSG;
	}
	return 0;
}

/* records per read: about DU_CHUNK_BYTES bytes, at least 1, at most the records there are */
static size_t chunk_records(uint32_t record_bytes, uint64_t avail)
{
	size_t per = DU_CHUNK_BYTES / record_bytes ? DU_CHUNK_BYTES / record_bytes : 1;
	return avail < per ? (avail ? (size_t)avail : 1) : per;
}

/*
 * Open path for reading and verify its header: the reader, its io_uring and the header.
 * Whatever happens, the caller ends with du_io_close(io) and close(*fd), which are safe on
 * what was not opened (io is zeroed and *fd is -1 until they are).
 */
static int open_verified(const char *path, struct reader *rd, struct du_io *io, int *fd,
			 const char **problem)
{
	memset(io, 0, sizeof *io);
	memset(rd, 0, sizeof *rd);
	int err = du_open_regular(path, fd, &rd->size);
	if (err)
		return err;
	rd->fd = *fd;
	if ((err = du_io_open(io, *fd, false)))
		return err;
	if (rd->size < EXP_HDR_BYTES) {
		*problem = "file shorter than the header";
		return -EBADMSG;
	}
	return read_header(rd, io, problem);
}

int de_export_check(const char *path, struct de_export_info *out)
{
	if (!path)
		return -EINVAL;
	if (out)
		memset(out, 0, sizeof *out);
	struct reader rd;
	struct du_io io;
	const char *problem = NULL;
	int fd;
	int err = open_verified(path, &rd, &io, &fd, &problem);
	if (err)
		goto out;
	if (out) {
		out->version = rd.h.version;
		out->config = rd.cfg;
		out->records = rd.h.records;
		out->record_bytes = rd.h.record_bytes;
		out->header_bytes = rd.h.header_bytes;
	}
	uint64_t good;
	uint32_t rcrc;
	size_t per = chunk_records(rd.h.record_bytes, rd.avail);
	if ((err = du_io_bufs(&io, 2, per * rd.h.record_bytes)) ||
	    (err = scan(&rd, &io, per, NULL, NULL, NULL, &good, &rcrc, &problem, NULL)))
		goto out;
	if (out)
		out->valid_records = good;
	if (problem) {
		err = -EBADMSG;
		goto out;
	}
	err = check_trailer(&rd, &io, rcrc, &problem);
out:
	if (out) {
		out->file_bytes = rd.size;
		out->problem = problem;
		if (err == -EPROTO && out->version == 0)
			out->version = rd.h.version;
	}
	du_io_close(&io);
	close(fd);
	return err;
}

int de_export_header(const char *path, struct de_export_info *out)
{
	if (!path || !out)
		return -EINVAL;
	memset(out, 0, sizeof *out);
	struct reader rd;
	struct du_io io;
	const char *problem = NULL;
	int fd;
	int err = open_verified(path, &rd, &io, &fd, &problem);
	if (!err || err == -EPROTO)
		out->version = rd.h.version;
	if (!err) {
		out->config = rd.cfg;
		out->records = rd.h.records;
		out->record_bytes = rd.h.record_bytes;
		out->header_bytes = rd.h.header_bytes;
		if (!rd.exact)
			problem = "the file's size does not match its header's record count";
	}
	out->file_bytes = rd.size;
	out->problem = problem;
	du_io_close(&io);
	close(fd);
	return err;
}

int de_import(de_table *t, const char *path, unsigned flags, de_progress_fn cb, void *ctx,
	      struct de_import_report *rep)
{
	struct de_import_report dummy;
	if (!rep)
		rep = &dummy;
	memset(rep, 0, sizeof *rep);
	if (!t || !path || (flags & ~DE_IMPORT_SALVAGE))
		return -EINVAL;
	const bool salvage = flags & DE_IMPORT_SALVAGE;
	struct de_table_config tc;
	int err = de_table_config_get(t, &tc);
	if (err)
		return err;
	struct reader rd;
	struct du_io io;
	const char *problem = NULL;
	uint64_t *keys = NULL;
	int fd;
	if ((err = open_verified(path, &rd, &io, &fd, &problem)))
		goto out;
	rep->records = rd.h.records;
	if ((rep->mismatch = du_config_mismatch(&tc, &rd.cfg))) {
		err = -EEXIST;
		goto out;
	}
	const size_t per = chunk_records(rd.h.record_bytes, rd.avail);
	if ((err = du_io_bufs(&io, 2, per * rd.h.record_bytes)))
		goto out;
	if (!(keys = malloc(per * sizeof *keys))) {
		err = -ENOMEM;
		goto out;
	}
	uint64_t good;
	uint32_t rcrc;
	if (!salvage) { /* verify everything before the first write */
		if ((err = scan(&rd, &io, per, NULL, NULL, NULL, &good, &rcrc, &problem, keys)))
			goto out;
		if (problem || (err = check_trailer(&rd, &io, rcrc, &problem))) {
			err = err ? err : -EBADMSG;
			goto out;
		}
	}
	err = scan(&rd, &io, per, t, cb, ctx, &good, &rcrc, &problem, keys);
	rep->imported = good;
	if (err)
		goto out;
	if (!salvage && problem) { /* the file changed since it was verified */
		err = -EBADMSG;
		goto out;
	}
	if (!problem) /* salvage of a file whose records are all there: report the trailer */
		check_trailer(&rd, &io, rcrc, &problem);
	rep->dropped = rd.h.records - good;
out:
	rep->problem = problem;
	du_io_close(&io);
	close(fd);
	free(keys);
	return err;
}
