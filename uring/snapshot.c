/*
 * snapshot.c — snapshots of one table (full, or incremental: the rows of the keys written
 * since the previous one) streamed through io_uring while the table stays writable, their
 * strict reader and chain loader; and the dirty-key set that feeds incrementals.
 *
 * Owns: the snapshot format below, de_snapshot_*, de_dirty_*.
 * Never: loads a row of a chain before every file of it verified completely (no silent
 * partial load); trusts a byte of a file; leaves a partial file under a snapshot's name
 * (write name.tmp, fsync, rename, fsync the directory).
 * Callers: de_persist_checkpoint and de_persist_recover (manifest.c), tests, fuzz_snapshot.
 * Why a fuzzy copy is enough: see "fuzzy snapshot" in de_uring.h.
 *
 * ---- File format, version 1 (all little-endian) ---------------------------------------
 *
 * dir/snap-<table_id as 8 hex>-<seq as 16 hex>.dsnp. Header, 128 bytes at offset 0:
 *   0    u8[8] magic "DESNAP01"
 *   8    u32 version (1)                12   u32 header_bytes (128)
 *   16   u32 dim (1..4096)              20   u32 nslots (0..8)
 *   24   u32 init (enum de_init)        28   f32 init_a
 *   32   f32 init_b                     36   f32 slot_init
 *   40   u64 seed                       48   u32 row_floats = dim * (1 + nslots)
 *   52   u32 record_bytes = 40 + 4 * row_floats
 *   56   u32 table_id                   60   u32 kind (1 full, 2 incremental)
 *   64   u64 seq (> 0)                  72   u64 parent_seq (full: 0; incremental: > 0,
 *                                                               < seq)
 *   80   u64 start_lsn (WAL replay for this table starts there)
 *   88   u32 seg_buckets (informational) 92  u32 flags (0)
 *   96   u64 records                    104  u8[20] reserved, zero
 *   124  u32 header_crc = CRC32C of bytes 0..123
 *   The config must pass de_table_config_check.
 * Records, record i at 128 + i * record_bytes, the 40-byte row record of the export
 * format (uring/export.c):
 *   0    u64 key (!= 0)                 8    u64 last_step
 *   16   u32 freq                       20   u32 flags: 1 = a row (live), 2 = a tombstone
 *                                            (incremental only: the key was erased;
 *                                            its floats are zero), nothing else
 *   24   u64 aux                        32   u32 crc = CRC32C of u64 i, bytes 0..31,
 *                                                      bytes 36..record_bytes-1
 *   36   u32 pad (0)                    40   f32[dim] values, f32[nslots][dim] slots
 * Trailer, 32 bytes right after the last record:
 *   0    u8[8] magic "DESNEND1"         8    u64 records (equal to the header's)
 *   16   u32 records_crc = CRC32C of the records' crc fields in order
 *   20   u32 tombstones                 24   u32 reserved, zero
 *   28   u32 trailer_crc = CRC32C of bytes 0..27
 * The file is exactly 128 + records * record_bytes + 32 bytes. A reader accepts a file
 * only when all of the above holds (strict: a snapshot is never salvaged; the WAL cannot
 * make up for a row it lost).
 *
 * ---- I/O --------------------------------------------------------------------------------
 *
 * Writes: the record file writer export uses too (util.c's du_rec_write): DU_NBUF buffers
 * of about 1 MiB in flight, then the header and the trailer, and once both completed an
 * fsync;
 * this file encodes the records, tombstones, header and trailer. Reads: one io_uring,
 * 1 MiB reads.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "uring_pvt.h"

#define SN_MAGIC "DESNAP01"
#define SN_END_MAGIC "DESNEND1"
#define SN_HDR 128u
#define SN_TRL 32u
#define SN_LIVE 1u
#define SN_TOMB 2u

struct sn_hdr {
	char magic[8];
	uint32_t version, header_bytes;
	struct du_hdr_config c; /* dim, nslots, init, init_a, init_b, slot_init, seed */
	uint32_t row_floats, record_bytes;
	uint32_t table_id, kind;
	uint64_t seq, parent_seq, start_lsn;
	uint32_t seg_buckets, flags;
	uint64_t records;
	uint8_t reserved[20];
	uint32_t crc;
};
_Static_assert(sizeof(struct sn_hdr) == SN_HDR && SN_HDR == DU_HDR_BYTES, "spec");
_Static_assert(offsetof(struct sn_hdr, c.seed) == 40, "spec");
_Static_assert(offsetof(struct sn_hdr, row_floats) == 48, "spec");
_Static_assert(offsetof(struct sn_hdr, table_id) == 56, "spec");
_Static_assert(offsetof(struct sn_hdr, seq) == 64, "spec");
_Static_assert(offsetof(struct sn_hdr, start_lsn) == 80, "spec");
_Static_assert(offsetof(struct sn_hdr, seg_buckets) == 88, "spec");
_Static_assert(offsetof(struct sn_hdr, records) == 96, "spec");
_Static_assert(offsetof(struct sn_hdr, crc) == 124, "spec");

/* records: struct du_rec (uring_pvt.h), as in export files */

struct sn_trl {
	char magic[8];
	uint64_t records;
	uint32_t records_crc, tombstones, reserved, crc;
};
_Static_assert(sizeof(struct sn_trl) == SN_TRL && SN_TRL == DU_TRL_BYTES, "spec");
_Static_assert(offsetof(struct sn_trl, tombstones) == 20, "spec");
_Static_assert(offsetof(struct sn_trl, crc) == 28, "spec");

/* ------------------------------------------------------------------------- */
/* Dirty-key set: open addressing, key 0 marks a free slot                    */
/* ------------------------------------------------------------------------- */

struct de_dirty {
	pthread_mutex_t mu;
	uint64_t *slot;
	size_t cap, n; /* cap: a power of two, 0 before the first add */
};

static inline size_t hash_key(uint64_t k, size_t mask)
{
	k ^= k >> 33;
	k *= 0xff51afd7ed558ccdull;
	k ^= k >> 33;
	return (size_t)k & mask;
}

static void put_key(uint64_t *slot, size_t cap, uint64_t k, size_t *n)
{
	size_t i = hash_key(k, cap - 1);
	while (slot[i] && slot[i] != k)
		i = (i + 1) & (cap - 1);
	if (!slot[i]) {
		slot[i] = k;
		(*n)++;
	}
}

int de_dirty_create(de_dirty **out)
{
	if (!out)
		return -EINVAL;
	de_dirty *d = du_calloc(1, sizeof *d);
	if (!d)
		return -ENOMEM;
	pthread_mutex_init(&d->mu, NULL);
	*out = d;
	return 0;
}

void de_dirty_destroy(de_dirty *d)
{
	if (!d)
		return;
	pthread_mutex_destroy(&d->mu);
	free(d->slot);
	free(d);
}

int de_dirty_add(de_dirty *d, const uint64_t *keys, size_t n)
{
	if (!d || (n && !keys))
		return -EINVAL;
	int err = 0;
	pthread_mutex_lock(&d->mu);
	for (size_t i = 0; i < n; i++) {
		if (!keys[i])
			continue;
		if ((d->n + 1) * 2 > d->cap) { /* keep the load at most 1/2 */
			size_t nc = d->cap ? d->cap * 2 : 64;
			uint64_t *ns = du_calloc(nc, sizeof *ns);
			if (!ns) {
				err = -ENOMEM;
				break;
			}
			size_t cnt = 0;
			for (size_t j = 0; j < d->cap; j++)
				if (d->slot[j])
					put_key(ns, nc, d->slot[j], &cnt);
			free(d->slot);
			d->slot = ns;
			d->cap = nc;
		}
		put_key(d->slot, d->cap, keys[i], &d->n);
	}
	pthread_mutex_unlock(&d->mu);
	return err;
}

size_t de_dirty_count(de_dirty *d)
{
	if (!d)
		return 0;
	pthread_mutex_lock(&d->mu);
	size_t n = d->n;
	pthread_mutex_unlock(&d->mu);
	return n;
}

int de_dirty_take(de_dirty *d, uint64_t **keys, size_t *n)
{
	if (!d || !keys || !n)
		return -EINVAL;
	*keys = NULL;
	*n = 0;
	pthread_mutex_lock(&d->mu);
	int err = 0;
	if (d->n) {
		uint64_t *v = du_malloc(d->n * sizeof *v);
		if (!v) {
			err = -ENOMEM;
		} else {
			size_t k = 0;
			for (size_t j = 0; j < d->cap; j++)
				if (d->slot[j])
					v[k++] = d->slot[j];
			memset(d->slot, 0, d->cap * sizeof *d->slot);
			d->n = 0;
			*keys = v;
			*n = k;
		}
	}
	pthread_mutex_unlock(&d->mu);
	return err;
}

/* ------------------------------------------------------------------------- */
/* Writer                                                                     */
/* ------------------------------------------------------------------------- */

int de_snapshot_name(char *buf, size_t cap, uint32_t table_id, uint64_t seq)
{
	if (!buf || cap < 32)
		return -EINVAL;
	snprintf(buf, cap, "snap-%08" PRIx32 "-%016" PRIx64 ".dsnp", table_id, seq);
	return 0;
}

/* what the callbacks of de_snapshot_write's du_rec_write know */
struct write_ctx {
	const struct de_table_config *cfg;
	const struct de_snapshot_spec *s;
	uint32_t rf;
	uint64_t tombs; /* tombstones written */
};

static void copy_out(void *ctx, unsigned char *r, const float *row, const struct de_row_meta *m)
{
	const struct write_ctx *c = ctx;
	struct du_rec h = { .key = m->key, .last_step = m->last_step, .freq = m->freq,
			    .flags = SN_LIVE, .aux = m->aux };
	memcpy(r, &h, sizeof h);
	memcpy(r + DU_REC_META, row, (size_t)c->rf * 4);
}

/* incremental: a dirty key the table no longer holds was erased, its record a tombstone
 * (a full snapshot leaves such keys out: the WAL has the erase) */
static void tombstone(void *ctx, unsigned char *r, uint64_t key)
{
	struct write_ctx *c = ctx;
	struct du_rec h = { .key = key, .flags = SN_TOMB };
	memcpy(r, &h, sizeof h);
	c->tombs++;
}

static void finish(void *ctx, void *hdr, void *trl, uint64_t n, uint32_t records_crc)
{
	const struct write_ctx *c = ctx;
	const struct de_table_config *cfg = c->cfg;
	const struct de_snapshot_spec *s = c->s;
	struct sn_hdr *h = hdr;
	memset(h, 0, sizeof *h);
	memcpy(h->magic, SN_MAGIC, 8);
	h->version = 1;
	h->header_bytes = SN_HDR;
	du_hdr_config_put(&h->c, cfg);
	h->row_floats = c->rf;
	h->record_bytes = DU_REC_META + 4 * c->rf;
	h->table_id = s->table_id;
	h->kind = s->kind;
	h->seq = s->seq;
	h->parent_seq = s->parent_seq;
	h->start_lsn = s->start_lsn;
	h->seg_buckets = cfg->seg_buckets;
	h->records = n;
	h->crc = de_crc32c(0, h, offsetof(struct sn_hdr, crc));
	struct sn_trl *tr = trl;
	memset(tr, 0, sizeof *tr);
	memcpy(tr->magic, SN_END_MAGIC, 8);
	tr->records = n;
	tr->records_crc = records_crc;
	tr->tombstones = (uint32_t)c->tombs;
	tr->crc = de_crc32c(0, tr, offsetof(struct sn_trl, crc));
}

int de_snapshot_write(const char *dir, de_table *t, const struct de_snapshot_spec *s,
		      de_progress_fn cb, void *ctx, struct de_snapshot_info *info)
{
	struct de_snapshot_info dummy;
	if (!info)
		info = &dummy;
	memset(info, 0, sizeof *info);
	if (!dir || !t || !s || !s->seq ||
	    (s->kind != DE_SNAPSHOT_FULL && s->kind != DE_SNAPSHOT_INCREMENTAL) ||
	    (s->kind == DE_SNAPSHOT_FULL && s->parent_seq) ||
	    (s->kind == DE_SNAPSHOT_INCREMENTAL &&
	     (!s->parent_seq || s->parent_seq >= s->seq || (s->nkeys && !s->keys))))
		return -EINVAL;
	struct de_table_config cfg;
	int err = de_table_config_get(t, &cfg);
	if (err)
		return err;
	const bool full = s->kind == DE_SNAPSHOT_FULL;
	struct write_ctx c = { &cfg, s, de_table_row_floats(t), 0 };
	const struct du_rec_writer w = {
		.all_keys = full,
		.keys = s->keys,
		.nkeys = s->nkeys,
		.row = copy_out,
		.missing = full ? NULL : tombstone,
		.finish = finish,
		.ctx = &c,
	};

	char name[40];
	de_snapshot_name(name, sizeof name, s->table_id, s->seq);
	char *path = du_path(dir, name);
	if (!path)
		return -ENOMEM;
	uint64_t n;
	err = du_rec_write(t, path, &w, cb, ctx, &n);
	free(path);
	if (err)
		return err;
	info->table_id = s->table_id;
	info->kind = s->kind;
	info->seq = s->seq;
	info->parent_seq = s->parent_seq;
	info->start_lsn = s->start_lsn;
	info->records = n;
	info->tombstones = c.tombs;
	info->file_bytes = SN_HDR + n * (DU_REC_META + 4ull * c.rf) + SN_TRL;
	info->config = cfg;
	return 0;
}

/* ------------------------------------------------------------------------- */
/* Reader                                                                     */
/* ------------------------------------------------------------------------- */

struct rd {
	int fd;
	uint64_t size;
	struct io_uring ring;
	bool ring_ok;
	struct sn_hdr h;
	struct de_table_config cfg;
	unsigned char *buf;
	size_t per; /* records per read */
	uint64_t *keys;
};

static void rd_close(struct rd *r)
{
	if (r->ring_ok)
		du_ring_exit(&r->ring);
	if (r->fd >= 0)
		close(r->fd);
	free(r->buf);
	free(r->keys);
}

/* open, read and check the header and the size. *problem on -EBADMSG / -EPROTO. */
static int rd_open(struct rd *r, const char *path, struct de_snapshot_info *info,
		   const char **problem)
{
	memset(r, 0, sizeof *r);
	int err = du_open_regular(path, &r->fd, &r->size);
	if (err)
		return err;
	info->file_bytes = r->size;
	if ((err = du_ring_init(2, &r->ring)) < 0)
		return err;
	r->ring_ok = true;
	size_t got;
	if ((err = du_ring_rw(&r->ring, r->fd, false, &r->h, SN_HDR, 0, &got)))
		return err;
	struct sn_hdr *h = &r->h;
	if (got < SN_HDR) {
		*problem = "file shorter than the header";
		return -EBADMSG;
	}
	if (memcmp(h->magic, SN_MAGIC, 8)) {
		*problem = "not a snapshot (magic)";
		return -EBADMSG;
	}
	if (h->version != 1) {
		*problem = "unsupported snapshot version";
		return -EPROTO;
	}
	if (h->crc != de_crc32c(0, h, offsetof(struct sn_hdr, crc))) {
		*problem = "header checksum";
		return -EBADMSG;
	}
	bool zero = true;
	for (size_t i = 0; i < sizeof h->reserved; i++)
		zero &= !h->reserved[i];
	if (h->header_bytes != SN_HDR || h->flags || !zero || h->c.dim < 1 ||
	    h->c.dim > DE_MAX_DIM || h->c.nslots > DE_MAX_SLOTS ||
	    h->row_floats != h->c.dim * (1 + h->c.nslots) ||
	    h->record_bytes != DU_REC_META + 4 * h->row_floats || !h->seq ||
	    (h->kind == DE_SNAPSHOT_FULL && h->parent_seq) ||
	    (h->kind == DE_SNAPSHOT_INCREMENTAL && (!h->parent_seq || h->parent_seq >= h->seq)) ||
	    (h->kind != DE_SNAPSHOT_FULL && h->kind != DE_SNAPSHOT_INCREMENTAL)) {
		*problem = "header fields out of range";
		return -EBADMSG;
	}
	if (du_hdr_config_get(&h->c, h->seg_buckets, &r->cfg)) {
		*problem = "header holds an invalid table config";
		return -EBADMSG;
	}
	info->table_id = h->table_id;
	info->kind = h->kind;
	info->seq = h->seq;
	info->parent_seq = h->parent_seq;
	info->start_lsn = h->start_lsn;
	info->records = h->records;
	info->config = r->cfg;
	uint64_t body = r->size - SN_HDR;
	if (body < SN_TRL || (body - SN_TRL) % h->record_bytes ||
	    (body - SN_TRL) / h->record_bytes != h->records) {
		*problem = "file size does not match the header";
		return -EBADMSG;
	}
	r->per = DU_CHUNK_BYTES / h->record_bytes ? DU_CHUNK_BYTES / h->record_bytes : 1;
	if (r->per > h->records)
		r->per = h->records ? (size_t)h->records : 1;
	if (!(r->buf = du_malloc(r->per * h->record_bytes)) ||
	    !(r->keys = du_malloc(r->per * sizeof *r->keys)))
		return -ENOMEM;
	return 0;
}

struct put_ctx {
	const unsigned char *base;
	uint32_t rb, rf;
	const size_t *idx;
};

static void put_in(void *ctx, size_t i, float *row, struct de_row_meta *m)
{
	struct put_ctx *c = ctx;
	const unsigned char *r = c->base + c->idx[i] * c->rb;
	struct du_rec h;
	memcpy(&h, r, sizeof h);
	m->last_step = h.last_step;
	m->freq = h.freq;
	m->flags = 1u;
	m->aux = h.aux;
	memcpy(row, r + DU_REC_META, (size_t)c->rf * 4);
}

/* Verify every record and the trailer; with t, also write them into t (rows, erases).
 * 0 or -EBADMSG with *problem, or an I/O / table error. */
static int rd_scan(struct rd *r, de_table *t, uint64_t *tombs_out, const char **problem)
{
	const struct sn_hdr *h = &r->h;
	const uint32_t rb = h->record_bytes;
	uint32_t rc = 0;
	uint64_t tombs = 0;
	size_t *idx = NULL;
	uint64_t *ekeys = NULL;
	int err = 0;
	if (t && (!(idx = du_malloc(r->per * sizeof *idx)) ||
		  !(ekeys = du_malloc(r->per * sizeof *ekeys)))) {
		err = -ENOMEM;
		goto out;
	}
	for (uint64_t first = 0; first < h->records;) {
		size_t cnt = h->records - first < r->per ? (size_t)(h->records - first) : r->per;
		size_t got;
		if ((err = du_ring_rw(&r->ring, r->fd, false, r->buf, cnt * rb,
				      SN_HDR + first * rb, &got)))
			goto out;
		if (got < cnt * rb) {
			*problem = "file ended early";
			err = -EBADMSG;
			goto out;
		}
		size_t nl = 0, ne = 0;
		for (size_t k = 0; k < cnt; k++) {
			const unsigned char *p = r->buf + k * rb;
			struct du_rec rec;
			memcpy(&rec, p, sizeof rec);
			if (rec.crc != du_record_crc(first + k, p, rb)) {
				*problem = "record checksum";
				err = -EBADMSG;
				goto out;
			}
			if (rec.pad || !rec.key ||
			    (rec.flags != SN_LIVE &&
			     (rec.flags != SN_TOMB || h->kind != DE_SNAPSHOT_INCREMENTAL))) {
				*problem = "record fields out of range";
				err = -EBADMSG;
				goto out;
			}
			rc = de_crc32c(rc, &rec.crc, 4);
			if (rec.flags == SN_TOMB) {
				tombs++;
				if (t)
					ekeys[ne++] = rec.key;
			} else if (t) {
				r->keys[nl] = rec.key;
				idx[nl++] = k;
			}
		}
		if (t) {
			/* rows first, then erases: a key is in a file once (the writer's dirty
			 * set has no duplicates); a crafted file repeating one gets some order */
			struct put_ctx pc = { r->buf, rb, h->row_floats, idx };
			if ((nl && (err = de_table_apply(t, r->keys, nl, true, put_in, &pc, NULL,
							  DE_STEP_KEEP))) ||
			    (ne && (err = de_table_erase(t, ekeys, ne, NULL))))
				goto out;
		}
		first += cnt;
	}
	struct sn_trl tr;
	size_t got;
	if ((err = du_ring_rw(&r->ring, r->fd, false, &tr, SN_TRL, SN_HDR + h->records * rb,
			      &got)))
		goto out;
	if (got < SN_TRL || memcmp(tr.magic, SN_END_MAGIC, 8) || tr.reserved ||
	    tr.crc != de_crc32c(0, &tr, offsetof(struct sn_trl, crc))) {
		*problem = "trailer damaged";
		err = -EBADMSG;
		goto out;
	}
	if (tr.records != h->records || tr.records_crc != rc || tr.tombstones != tombs) {
		*problem = "trailer disagrees with the records";
		err = -EBADMSG;
		goto out;
	}
	*tombs_out = tombs;
out:
	free(idx);
	free(ekeys);
	return err;
}

int de_snapshot_check(const char *path, struct de_snapshot_info *info)
{
	struct de_snapshot_info dummy;
	if (!info)
		info = &dummy;
	memset(info, 0, sizeof *info);
	if (!path)
		return -EINVAL;
	struct rd r;
	const char *problem = NULL;
	int err = rd_open(&r, path, info, &problem);
	if (!err)
		err = rd_scan(&r, NULL, &info->tombstones, &problem);
	info->problem = problem;
	rd_close(&r);
	return err;
}

int de_snapshot_load(de_table *t, const char *dir, uint32_t table_id, const uint64_t *seqs,
		     unsigned n, struct de_snapshot_load_report *rep)
{
	struct de_snapshot_load_report dummy;
	if (!rep)
		rep = &dummy;
	memset(rep, 0, sizeof *rep);
	if (!t || !dir || (n && !seqs) || n > DE_MANIFEST_MAX_CHAIN)
		return -EINVAL;
	struct de_table_config tc;
	int err = de_table_config_get(t, &tc);
	if (err)
		return err;
	/* pass 1: verify every file of the chain; pass 2: load */
	for (int pass = 0; pass < 2 && !err; pass++) {
		uint64_t prev_lsn = 0;
		for (unsigned i = 0; i < n && !err; i++) {
			char name[40];
			de_snapshot_name(name, sizeof name, table_id, seqs[i]);
			char *path = du_path(dir, name);
			if (!path)
				return -ENOMEM;
			struct rd r;
			struct de_snapshot_info info;
			memset(&info, 0, sizeof info);
			const char *problem = NULL;
			uint64_t tombs = 0;
			err = rd_open(&r, path, &info, &problem);
			free(path);
			if (!err) {
				if (info.table_id != table_id || info.seq != seqs[i]) {
					problem = "file is not the snapshot its name says";
					err = -EBADMSG;
				} else if (i == 0 ? info.kind != DE_SNAPSHOT_FULL
						  : info.kind != DE_SNAPSHOT_INCREMENTAL ||
							    info.parent_seq != seqs[i - 1]) {
					problem = "chain broken (kind or parent)";
					err = -EBADMSG;
				} else if (info.start_lsn < prev_lsn) {
					problem = "chain start LSNs go backwards";
					err = -EBADMSG;
				} else if ((rep->mismatch = du_config_mismatch(&tc, &r.cfg))) {
					problem = "table config differs from the snapshot's";
					err = -EEXIST;
				}
			}
			if (!err)
				err = rd_scan(&r, pass ? t : NULL, &tombs, &problem);
			rd_close(&r);
			prev_lsn = info.start_lsn;
			if (err) {
				rep->bad_seq = seqs[i];
				rep->problem = problem;
				if (pass && err == -EBADMSG && !problem)
					rep->problem = "file changed after it was verified";
				break;
			}
			if (pass) {
				rep->files++;
				rep->rows += info.records - tombs;
				rep->tombstones += tombs;
				rep->start_lsn = info.start_lsn;
			}
		}
	}
	return err;
}
