/*
 * manifest.c — the manifest (which snapshot chain and which WAL start LSN make up each
 * table's durable state), recovery, garbage collection and checkpoints.
 *
 * Owns: the MANIFEST format below, de_manifest_*, de_persist_recover, de_persist_gc,
 * de_persist_checkpoint.
 * Never: deletes a WAL segment or a snapshot that the manifest on disk still needs (gc
 * reads the manifest back from disk, after its write fsync'ed it and the directory);
 * replaces MANIFEST other than by write MANIFEST.tmp, fsync, rename, fsync of the
 * directory; trusts a byte of it.
 * Callers: the daemon (startup, snapshot commands and timers), tests, fuzz_manifest.
 *
 * ---- MANIFEST, format version 1 (all little-endian) ----------------------------------
 *
 *   0    u8[8] magic "DEMANIF1"
 *   8    u32 version (1)                12   u32 file_bytes (the whole file, exactly)
 *   16   u64 generation                 24   u32 ntables (0..DE_MANIFEST_MAX_TABLES)
 *   28   u32 reserved, zero
 *   32   ntables entries, table ids strictly increasing, each 16 + 8 * nsnaps bytes:
 *          u32 table_id, u32 nsnaps (0..DE_MANIFEST_MAX_CHAIN), u64 wal_lsn (>= 1),
 *          u64 seqs[nsnaps] (strictly increasing, > 0: the full snapshot, then the
 *          incrementals in order)
 *   then u32 crc = CRC32C of every byte before it (file_bytes = that offset + 4).
 * The reader checks magic, version (-EPROTO), size against file_bytes (at most 1 MiB),
 * CRC, then every field; any failure is -EBADMSG with a static problem text.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "uring_pvt.h"

#define MF_MAGIC "DEMANIF1"
#define MF_HDR 32u
#define MF_MAX_BYTES (1u << 20)
#define MF_NAME "MANIFEST"

struct mf_hdr {
	char magic[8];
	uint32_t version, file_bytes;
	uint64_t generation;
	uint32_t ntables, reserved;
};
_Static_assert(sizeof(struct mf_hdr) == MF_HDR, "spec");
_Static_assert(offsetof(struct mf_hdr, generation) == 16, "spec");
_Static_assert(offsetof(struct mf_hdr, ntables) == 24, "spec");

static bool valid_table(const struct de_manifest_table *t)
{
	if (t->nsnaps > DE_MANIFEST_MAX_CHAIN || !t->wal_lsn)
		return false;
	for (uint32_t j = 0; j < t->nsnaps; j++)
		if (!t->seqs[j] || (j && t->seqs[j] <= t->seqs[j - 1]))
			return false;
	return true;
}

int de_manifest_decode(const void *buf, size_t len, struct de_manifest *m,
		       const char **problem)
{
	const char *dummy;
	if (!problem)
		problem = &dummy;
	*problem = NULL;
	if (!m || (len && !buf))
		return -EINVAL;
	memset(m, 0, sizeof *m);
	const unsigned char *p = buf;
	struct mf_hdr h;
	if (len < MF_HDR + 4) {
		*problem = "manifest shorter than its header";
		return -EBADMSG;
	}
	memcpy(&h, p, sizeof h);
	if (memcmp(h.magic, MF_MAGIC, 8)) {
		*problem = "not a manifest (magic)";
		return -EBADMSG;
	}
	if (h.version != DE_MANIFEST_VERSION) {
		*problem = "unsupported manifest version";
		return -EPROTO;
	}
	if (h.file_bytes != len || len > MF_MAX_BYTES) {
		*problem = "manifest size does not match its header";
		return -EBADMSG;
	}
	uint32_t crc;
	memcpy(&crc, p + len - 4, 4);
	if (crc != de_crc32c(0, p, len - 4)) {
		*problem = "manifest checksum";
		return -EBADMSG;
	}
	if (h.reserved || h.ntables > DE_MANIFEST_MAX_TABLES) {
		*problem = "manifest header fields out of range";
		return -EBADMSG;
	}
	size_t off = MF_HDR, end = len - 4;
	for (uint32_t i = 0; i < h.ntables; i++) {
		struct de_manifest_table *t = &m->tables[i];
		if (end - off < 16) {
			*problem = "manifest entries overrun the file";
			return -EBADMSG;
		}
		memcpy(&t->table_id, p + off, 4);
		memcpy(&t->nsnaps, p + off + 4, 4);
		memcpy(&t->wal_lsn, p + off + 8, 8);
		off += 16;
		if (t->nsnaps > DE_MANIFEST_MAX_CHAIN || (end - off) / 8 < t->nsnaps) {
			*problem = "manifest entries overrun the file";
			return -EBADMSG;
		}
		memcpy(t->seqs, p + off, (size_t)t->nsnaps * 8);
		off += (size_t)t->nsnaps * 8;
		if (!valid_table(t) || (i && t->table_id <= m->tables[i - 1].table_id)) {
			*problem = "manifest entry fields out of range";
			return -EBADMSG;
		}
	}
	if (off != end) {
		*problem = "manifest has bytes after its entries";
		return -EBADMSG;
	}
	m->generation = h.generation;
	m->ntables = h.ntables;
	return 0;
}

int de_manifest_read(const char *dir, struct de_manifest *m, const char **problem)
{
	const char *dummy;
	if (!problem)
		problem = &dummy;
	*problem = NULL;
	if (!dir || !m)
		return -EINVAL;
	memset(m, 0, sizeof *m);
	char *path = du_path(dir, MF_NAME);
	if (!path)
		return -ENOMEM;
	unsigned char *buf;
	size_t len;
	int err = du_read_file(path, MF_MAX_BYTES, &buf, &len);
	free(path);
	if (err == -EFBIG) {
		*problem = "manifest larger than the format allows";
		return -EBADMSG;
	}
	if (err)
		return err;
	err = de_manifest_decode(buf, len, m, problem);
	free(buf);
	return err;
}

int de_manifest_write(const char *dir, const struct de_manifest *m)
{
	if (!dir || !m || m->ntables > DE_MANIFEST_MAX_TABLES)
		return -EINVAL;
	size_t len = MF_HDR + 4;
	for (uint32_t i = 0; i < m->ntables; i++) {
		const struct de_manifest_table *t = &m->tables[i];
		if (!valid_table(t) || (i && t->table_id <= m->tables[i - 1].table_id))
			return -EINVAL;
		len += 16 + (size_t)t->nsnaps * 8;
	}
	unsigned char *p = du_calloc(1, len);
	if (!p)
		return -ENOMEM;
	struct mf_hdr h = { .version = DE_MANIFEST_VERSION, .file_bytes = (uint32_t)len,
			    .generation = m->generation, .ntables = m->ntables };
	memcpy(h.magic, MF_MAGIC, 8);
	memcpy(p, &h, sizeof h);
	size_t off = MF_HDR;
	for (uint32_t i = 0; i < m->ntables; i++) {
		const struct de_manifest_table *t = &m->tables[i];
		memcpy(p + off, &t->table_id, 4);
		memcpy(p + off + 4, &t->nsnaps, 4);
		memcpy(p + off + 8, &t->wal_lsn, 8);
		memcpy(p + off + 16, t->seqs, (size_t)t->nsnaps * 8);
		off += 16 + (size_t)t->nsnaps * 8;
	}
	uint32_t crc = de_crc32c(0, p, off);
	memcpy(p + off, &crc, 4);
	char *path = du_path(dir, MF_NAME);
	int err = path ? du_write_file_atomic(path, p, len) : -ENOMEM;
	free(path);
	free(p);
	return err;
}

static struct de_manifest_table *find_table(struct de_manifest *m, uint32_t id)
{
	for (uint32_t i = 0; i < m->ntables; i++)
		if (m->tables[i].table_id == id)
			return &m->tables[i];
	return NULL;
}

/* ------------------------------------------------------------------------- */
/* Recovery                                                                   */
/* ------------------------------------------------------------------------- */

struct rec_ctx {
	const struct de_recover_table *tables;
	const uint64_t *from; /* per table: first LSN it takes (0: every record) */
	size_t n;
	struct de_recover_report *rep;
	uint32_t bad_table;
};

static int replay_one(void *ctx, const struct de_wal_record *r)
{
	struct rec_ctx *c = ctx;
	for (size_t i = 0; i < c->n; i++) {
		if (c->tables[i].table_id != r->table_id)
			continue;
		if (r->lsn < c->from[i])
			break;
		int err = de_wal_record_apply(c->tables[i].table, r);
		if (err) {
			c->bad_table = r->table_id;
			return err;
		}
		c->rep->wal_applied++;
		return 0;
	}
	c->rep->wal_skipped++;
	return 0;
}

int de_persist_recover(const char *dir, const struct de_recover_table *tables, size_t n,
		       void (*log)(void *, const char *), void *log_ctx,
		       struct de_recover_report *rep)
{
	struct de_recover_report dummy;
	if (!rep)
		rep = &dummy;
	memset(rep, 0, sizeof *rep);
	if (!dir || (n && !tables))
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < i; j++)
			if (!tables[i].table || tables[i].table_id == tables[j].table_id)
				return -EINVAL;
	if (n && !tables[0].table)
		return -EINVAL;
	struct de_manifest *m = du_calloc(1, sizeof *m);
	uint64_t *from = du_calloc(n ? n : 1, sizeof *from);
	int err = 0;
	if (!m || !from) {
		err = -ENOMEM;
		goto out;
	}
	const char *problem = NULL;
	err = de_manifest_read(dir, m, &problem);
	if (err == -ENOENT) {
		err = 0;
	} else if (err) {
		snprintf(rep->message, sizeof rep->message, "%s/MANIFEST: %s (%s)", dir,
			 problem ? problem : "cannot be read", strerror(-err));
		goto out;
	} else {
		rep->manifest = true;
		rep->generation = m->generation;
	}
	uint64_t wal_from = UINT64_MAX, max_lsn = 1;
	for (uint32_t i = 0; i < m->ntables; i++)
		if (m->tables[i].wal_lsn > max_lsn)
			max_lsn = m->tables[i].wal_lsn;
	for (size_t i = 0; i < n; i++) {
		struct de_manifest_table *e = find_table(m, tables[i].table_id);
		if (!e) {
			from[i] = 0; /* unknown: every record of its id that is still there */
			continue;
		}
		from[i] = e->wal_lsn;
		if (e->wal_lsn < wal_from)
			wal_from = e->wal_lsn;
		if (!e->nsnaps)
			continue;
		struct de_snapshot_load_report lr;
		err = de_snapshot_load(tables[i].table, dir, e->table_id, e->seqs, e->nsnaps, &lr);
		if (err) {
			char name[40];
			de_snapshot_name(name, sizeof name, e->table_id,
					 lr.bad_seq ? lr.bad_seq : e->seqs[0]);
			snprintf(rep->message, sizeof rep->message, "%s/%s: %s%s%s (%s)", dir, name,
				 lr.problem ? lr.problem : "cannot be loaded",
				 lr.mismatch ? ": " : "", lr.mismatch ? lr.mismatch : "",
				 strerror(-err));
			goto out;
		}
		rep->snapshots += lr.files;
		rep->snapshot_rows += lr.rows;
	}
	bool unknown = false;
	for (size_t i = 0; i < n; i++)
		unknown |= from[i] == 0;
	if (unknown || wal_from == UINT64_MAX)
		wal_from = 0; /* from the oldest segment there */
	struct rec_ctx rc = { tables, from, n, rep, 0 };
	err = de_wal_replay(dir, wal_from, DE_WAL_REPLAY_TRUNCATE, replay_one, &rc, log, log_ctx,
			    &rep->wal);
	if (err) {
		if (err == -EEXIST)
			snprintf(rep->message, sizeof rep->message,
				 "WAL record of table %" PRIu32 " has another row size than the table",
				 rc.bad_table);
		else
			snprintf(rep->message, sizeof rep->message, "WAL in %s: %s (%s)", dir,
				 rep->wal.problem ? rep->wal.problem : "cannot be replayed",
				 strerror(-err));
		goto out;
	}
	/* LSNs never go back: above every LSN the WAL names and every table's wal_lsn (a cut
	 * of the log below a table's wal_lsn would otherwise hand out LSNs replay skips) */
	rep->next_lsn = max_lsn;
	if (rep->wal.segments && rep->wal.lsn_floor > rep->next_lsn)
		rep->next_lsn = rep->wal.lsn_floor;
	snprintf(rep->message, sizeof rep->message,
		 "recovered: %s, %" PRIu32 " snapshot files (%" PRIu64 " rows), WAL %" PRIu64
		 " records applied, %" PRIu64 " skipped, next lsn %" PRIu64 "%s%s",
		 rep->manifest ? "manifest" : "no manifest", rep->snapshots, rep->snapshot_rows,
		 rep->wal_applied, rep->wal_skipped, rep->next_lsn,
		 rep->wal.problem ? "; torn tail: " : "", rep->wal.problem ? rep->wal.problem : "");
out:
	free(m);
	free(from);
	return err;
}

/* ------------------------------------------------------------------------- */
/* Garbage collection                                                         */
/* ------------------------------------------------------------------------- */

static bool parse_hex(const char *s, int len, uint64_t *v)
{
	uint64_t x = 0;
	for (int i = 0; i < len; i++) {
		char c = s[i];
		int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
		if (d < 0)
			return false;
		x = x << 4 | (uint64_t)d;
	}
	*v = x;
	return true;
}

/* "snap-" 8 hex "-" 16 hex ".dsnp" */
static bool parse_snap_name(const char *s, uint32_t *table, uint64_t *seq)
{
	uint64_t t;
	if (strlen(s) != 35 || memcmp(s, "snap-", 5) || s[13] != '-' || memcmp(s + 30, ".dsnp", 5) ||
	    !parse_hex(s + 5, 8, &t) || !parse_hex(s + 14, 16, seq))
		return false;
	*table = (uint32_t)t;
	return true;
}

static int remove_file(const char *dir, const char *name, uint64_t *bytes)
{
	char *path = du_path(dir, name);
	if (!path)
		return -ENOMEM;
	struct stat sb;
	int err = 0;
	if (!stat(path, &sb))
		*bytes += (uint64_t)sb.st_size;
	if (unlink(path)) {
		if (errno != ENOENT)
			err = -errno;
	} else {
		du_plog(DE_PLOG_UNLINK, -1, path, NULL, 0, 0, 0, NULL, false);
	}
	free(path);
	return err;
}

int de_persist_gc(const char *dir, struct de_gc_report *rep)
{
	struct de_gc_report dummy;
	if (!rep)
		rep = &dummy;
	memset(rep, 0, sizeof *rep);
	if (!dir)
		return -EINVAL;
	struct de_manifest *m = du_calloc(1, sizeof *m);
	if (!m)
		return -ENOMEM;
	int err = de_manifest_read(dir, m, NULL);
	if (err)
		goto out;
	uint64_t min_lsn = UINT64_MAX;
	for (uint32_t i = 0; i < m->ntables; i++)
		if (m->tables[i].wal_lsn < min_lsn)
			min_lsn = m->tables[i].wal_lsn;
	DIR *d = opendir(dir);
	if (!d) {
		err = -errno;
		goto out;
	}
	/* the WAL segment names, sorted, to know where each one ends */
	size_t nseg = 0, cap = 0;
	uint64_t *segs = NULL;
	struct dirent *de;
	while ((de = readdir(d))) {
		const char *s = de->d_name;
		uint64_t lsn, seq;
		uint32_t tid;
		if (strlen(s) == 24 && !memcmp(s, "wal-", 4) && !memcmp(s + 20, ".log", 4) &&
		    parse_hex(s + 4, 16, &lsn)) {
			if (nseg == cap) {
				cap = cap ? cap * 2 : 16;
				uint64_t *ns = du_malloc(cap * sizeof *ns);
				if (!ns) {
					err = -ENOMEM;
					break;
				}
				if (nseg)
					memcpy(ns, segs, nseg * sizeof *ns);
				free(segs);
				segs = ns;
			}
			segs[nseg++] = lsn;
		} else if (parse_snap_name(s, &tid, &seq)) {
			struct de_manifest_table *t = find_table(m, tid);
			if (!t || !t->nsnaps || seq >= t->seqs[t->nsnaps - 1])
				continue;
			bool named = false;
			for (uint32_t j = 0; j < t->nsnaps; j++)
				named |= t->seqs[j] == seq;
			if (named)
				continue;
			if ((err = remove_file(dir, s, &rep->bytes_freed)))
				break;
			rep->snapshots_removed++;
		}
	}
	closedir(d);
	if (!err && m->ntables && nseg > 1) {
		/* insertion sort: a handful of segments */
		for (size_t i = 1; i < nseg; i++)
			for (size_t j = i; j && segs[j - 1] > segs[j]; j--) {
				uint64_t x = segs[j];
				segs[j] = segs[j - 1];
				segs[j - 1] = x;
			}
		for (size_t i = 0; i + 1 < nseg && segs[i + 1] <= min_lsn; i++) {
			char name[32];
			snprintf(name, sizeof name, "wal-%016" PRIx64 ".log", segs[i]);
			if ((err = remove_file(dir, name, &rep->bytes_freed)))
				break;
			rep->segments_removed++;
		}
	}
	free(segs);
	if (rep->segments_removed || rep->snapshots_removed) {
		int e = du_fsync_dir(dir);
		err = err ? err : e;
	}
out:
	free(m);
	return err;
}

/* ------------------------------------------------------------------------- */
/* Checkpoint                                                                 */
/* ------------------------------------------------------------------------- */

int de_persist_checkpoint(const char *dir, de_wal *w, de_dirty *d, de_table *t,
			  uint32_t table_id, unsigned flags, de_progress_fn cb, void *ctx,
			  struct de_snapshot_info *info)
{
	if (!dir || !t || (flags & ~DE_CHECKPOINT_FULL))
		return -EINVAL;
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -errno;
	int err = 0;
	uint64_t *keys = NULL;
	size_t nk = 0;
	struct de_manifest *m = NULL;
	while (flock(dfd, LOCK_EX)) /* other checkpoints of dir: one manifest writer */
		if (errno != EINTR) {
			err = -errno;
			goto out;
		}
	if (!(m = du_calloc(1, sizeof *m))) {
		err = -ENOMEM;
		goto out;
	}
	err = de_manifest_read(dir, m, NULL);
	if (err == -ENOENT)
		err = 0;
	if (err)
		goto out;
	struct de_manifest_table *e = find_table(m, table_id);
	if (!e) {
		if (m->ntables == DE_MANIFEST_MAX_TABLES) {
			err = -ENOSPC;
			goto out;
		}
		uint32_t at = 0;
		while (at < m->ntables && m->tables[at].table_id < table_id)
			at++;
		memmove(&m->tables[at + 1], &m->tables[at],
			(m->ntables - at) * sizeof m->tables[0]);
		m->ntables++;
		e = &m->tables[at];
		memset(e, 0, sizeof *e);
		e->table_id = table_id;
		e->wal_lsn = 1;
	}
	bool full = (flags & DE_CHECKPOINT_FULL) || !d || !e->nsnaps ||
		    e->nsnaps >= DE_MANIFEST_MAX_CHAIN;
	uint64_t start_lsn = e->wal_lsn;
	if (w)
		err = de_wal_cut(w, d, &start_lsn, &keys, &nk);
	else if (d)
		err = de_dirty_take(d, &keys, &nk);
	if (err)
		goto out;
	uint64_t seq = e->nsnaps ? e->seqs[e->nsnaps - 1] + 1 : 1;
	struct de_snapshot_spec spec = {
		.table_id = table_id, .kind = full ? DE_SNAPSHOT_FULL : DE_SNAPSHOT_INCREMENTAL,
		.seq = seq, .parent_seq = full ? 0 : e->seqs[e->nsnaps - 1],
		.start_lsn = start_lsn, .keys = full ? NULL : keys, .nkeys = full ? 0 : nk,
	};
	if ((err = de_snapshot_write(dir, t, &spec, cb, ctx, info)))
		goto out;
	/* the log holds every record before the cut on disk: it continues without a gap */
	if (w && (err = de_wal_flush(w)))
		goto out;
	if (full)
		e->nsnaps = 0;
	e->seqs[e->nsnaps++] = seq;
	e->wal_lsn = start_lsn ? start_lsn : 1;
	m->generation++;
	if ((err = de_manifest_write(dir, m)))
		goto out;
	free(keys); /* in the snapshot now */
	keys = NULL;
	nk = 0;
	de_persist_gc(dir, NULL); /* what it leaves, the next checkpoint's gc removes */
out:
	if (err && d && nk)
		de_dirty_add(d, keys, nk); /* the next snapshot still needs these keys */
	free(keys);
	free(m);
	flock(dfd, LOCK_UN);
	close(dfd);
	return err;
}
