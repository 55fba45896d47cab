/*
 * test_snapshot.c — snapshots, the manifest, checkpoints, gc and recovery (uring/
 * snapshot.c, manifest.c): full + incremental chains restored against the reference, a
 * fuzzy checkpoint while another thread writes (recovery must equal the reference), gc
 * after the manifest, every byte flip and truncation of a snapshot and of a manifest
 * (a clear error, the table untouched), injected write / fsync / allocation faults, and
 * (de_persist_trace) that no fsync of a record file is queued while one of its writes is
 * in flight unlinked, and that a new data directory is fsync'ed in its parent.
 */
#ifdef DE_MINI_CRITERION
#include "../mini_criterion.h" /* ThreadSanitizer build: see that header */
#else
#include <criterion/criterion.h>
#endif
#include <dirent.h>
#include <pthread.h>

#include "persist_util.h"

#define NK 400

static size_t count_files(const char *d, const char *prefix)
{
	DIR *x = opendir(d);
	cr_assert_not_null(x);
	size_t n = 0;
	struct dirent *e;
	while ((e = readdir(x)))
		n += !strncmp(e->d_name, prefix, strlen(prefix));
	closedir(x);
	return n;
}

static uint64_t table_keys(de_table *t)
{
	struct de_table_stats s;
	cr_assert_eq(de_table_stats(t, &s), 0);
	return s.keys;
}

/* n random updates of table t (id 1) through the WAL, marking keys dirty */
static void updates(de_wal *w, de_dirty *dirty, de_table *t, struct ref *r, size_t n,
		    uint64_t *seed, uint64_t *step)
{
	uint64_t keys[64];
	size_t idx[64];
	for (size_t rec = 0; rec < n; rec++) {
		size_t k = 1 + rng_below(seed, 16);
		for (size_t j = 0; j < k; j++)
			idx[j] = rng_below(seed, NK);
		struct de_wal_batch b = { .table_id = 1, .keys = keys, .n = k, .dirty = dirty };
		if (rng_below(seed, 6) == 0) {
			erase_keys(t, r, idx, k, keys);
			b.type = DE_WAL_ERASE;
		} else {
			put_keys(t, r, idx, k, ++*step, keys);
			b.type = DE_WAL_PUT;
			b.table = t;
		}
		if (w) {
			cr_assert_eq(de_wal_append(w, &b, NULL), 0);
		} else {
			cr_assert_eq(de_dirty_add(dirty, keys, k), 0);
		}
	}
}

static void recover_one(const char *d, de_table *t, struct de_recover_report *rep)
{
	struct de_recover_table rt = { 1, t };
	int err = de_persist_recover(d, &rt, 1, quiet_log, NULL, rep);
	cr_assert_eq(err, 0, "recover: %d %s", err, rep->message);
}

Test(snapshot, chain_full_incremental_gc_recover)
{
	char d[64];
	mk_dir(d, sizeof d);
	struct tab t = mk_table();
	struct ref r = ref_new(NK);
	de_dirty *dirty;
	cr_assert_eq(de_dirty_create(&dirty), 0);
	struct de_wal_options o = { .segment_bytes = 64 << 10, .buffer_bytes = 16 << 10 };
	de_wal *w;
	cr_assert_eq(de_wal_open(d, &o, &w), 0);
	uint64_t seed = 3, step = 0;
	struct ref at_cut[4];
	uint64_t seqs[4];
	struct de_snapshot_info info;
	for (int c = 0; c < 4; c++) {
		updates(w, dirty, t.t, &r, 150, &seed, &step);
		at_cut[c] = ref_copy(&r); /* single writer: the snapshot is exact */
		cr_assert_eq(de_persist_checkpoint(d, w, dirty, t.t, 1, 0, NULL, NULL, &info), 0);
		cr_assert_eq(info.kind, c == 0 ? DE_SNAPSHOT_FULL : DE_SNAPSHOT_INCREMENTAL);
		cr_assert_eq(info.start_lsn, de_wal_next_lsn(w));
		cr_assert_eq(de_dirty_count(dirty), 0);
		seqs[c] = info.seq;
		if (c)
			cr_assert_lt(info.records, NK, "an incremental holds only dirty keys");
	}
	updates(w, dirty, t.t, &r, 100, &seed, &step); /* only in the WAL */
	cr_assert_eq(de_wal_close(w), 0);

	struct de_manifest *m = xcalloc(1, sizeof *m);
	cr_assert_eq(de_manifest_read(d, m, NULL), 0);
	cr_assert_eq(m->ntables, 1);
	cr_assert_eq(m->generation, 4);
	cr_assert_eq(m->tables[0].nsnaps, 4);
	for (int c = 0; c < 4; c++) {
		cr_assert_eq(m->tables[0].seqs[c], seqs[c]);
		/* the chain up to c equals the reference at cut c */
		struct tab u = mk_table();
		struct de_snapshot_load_report lr;
		cr_assert_eq(de_snapshot_load(u.t, d, 1, seqs, (unsigned)c + 1, &lr), 0);
		cr_assert_eq(ref_diff(u.t, &at_cut[c]), 0, "chain of %d", c + 1);
		rm_table(&u);
	}
	/* gc ran after each manifest: old WAL segments are gone */
	cr_assert_lt(count_files(d, "wal-"), 6);
	struct tab u = mk_table();
	struct de_recover_report rep;
	recover_one(d, u.t, &rep);
	cr_assert_eq(ref_diff(u.t, &r), 0, "%s", rep.message);
	cr_assert_eq(rep.snapshots, 4);
	cr_assert_eq(rep.wal_applied, 100);
	cr_assert_eq(rep.next_lsn, 701);
	cr_log_info("%s", rep.message);

	/* a full checkpoint replaces the chain; gc removes the old snapshots */
	cr_assert_eq(de_wal_open(d, &(struct de_wal_options){ .start_lsn = rep.next_lsn }, &w), 0);
	cr_assert_eq(de_wal_next_lsn(w), 701);
	cr_assert_eq(de_persist_checkpoint(d, w, dirty, t.t, 1, DE_CHECKPOINT_FULL, NULL, NULL,
					   &info), 0);
	cr_assert_eq(info.kind, DE_SNAPSHOT_FULL);
	cr_assert_eq(info.seq, seqs[3] + 1);
	cr_assert_eq(count_files(d, "snap-"), 1);
	cr_assert_eq(count_files(d, "wal-"), 1, "every record is in the snapshot");
	cr_assert_eq(de_wal_close(w), 0);
	rm_table(&u);
	u = mk_table();
	recover_one(d, u.t, &rep);
	cr_assert_eq(ref_diff(u.t, &r), 0);
	cr_assert_eq(rep.wal_applied, 0);
	for (int c = 0; c < 4; c++)
		free(at_cut[c].r);
	free(m);
	free(r.r);
	de_dirty_destroy(dirty);
	rm_table(&t);
	rm_table(&u);
	rm_dir(d);
}

Test(snapshot, durability_none_no_wal)
{
	char d[64];
	mk_dir(d, sizeof d);
	struct tab t = mk_table();
	struct ref r = ref_new(NK);
	de_dirty *dirty;
	cr_assert_eq(de_dirty_create(&dirty), 0);
	uint64_t seed = 5, step = 0;
	updates(NULL, dirty, t.t, &r, 100, &seed, &step);
	cr_assert_eq(de_persist_checkpoint(d, NULL, dirty, t.t, 1, 0, NULL, NULL, NULL), 0);
	updates(NULL, dirty, t.t, &r, 50, &seed, &step);
	cr_assert_eq(de_persist_checkpoint(d, NULL, dirty, t.t, 1, 0, NULL, NULL, NULL), 0);
	struct tab u = mk_table();
	struct de_recover_report rep;
	recover_one(d, u.t, &rep);
	cr_assert_eq(ref_diff(u.t, &r), 0);
	cr_assert_eq(rep.snapshots, 2);
	free(r.r);
	de_dirty_destroy(dirty);
	rm_table(&t);
	rm_table(&u);
	rm_dir(d);
}

struct writer {
	de_wal *w;
	de_dirty *dirty;
	de_table *t;
	struct ref *r;
	int stop; /* atomic: set by the main thread */
	size_t done;
};

static void *writer_thread(void *arg)
{
	struct writer *x = arg;
	uint64_t seed = 11, step = 1000;
	while (!__atomic_load_n(&x->stop, __ATOMIC_ACQUIRE)) {
		updates(x->w, x->dirty, x->t, x->r, 1, &seed, &step);
		x->done++;
	}
	return NULL;
}

Test(snapshot, fuzzy_checkpoint_while_writing)
{
	char d[64];
	mk_dir(d, sizeof d);
	struct tab t = mk_table();
	struct ref r = ref_new(NK);
	de_dirty *dirty;
	cr_assert_eq(de_dirty_create(&dirty), 0);
	de_wal *w;
	cr_assert_eq(de_wal_open(d, &(struct de_wal_options){ .window_ms = 5 }, &w), 0);
	struct writer x = { w, dirty, t.t, &r, 0, 0 };
	pthread_t th;
	pthread_create(&th, NULL, writer_thread, &x);
	for (int c = 0; c < 6; c++) {
		usleep(20000);
		cr_assert_eq(de_persist_checkpoint(d, w, dirty, t.t, 1, c == 3 ? DE_CHECKPOINT_FULL : 0,
						   NULL, NULL, NULL), 0);
	}
	__atomic_store_n(&x.stop, 1, __ATOMIC_RELEASE);
	pthread_join(th, NULL);
	cr_assert_eq(de_wal_close(w), 0);
	cr_log_info("fuzzy: %zu writer records during 6 checkpoints", x.done);
	cr_assert_gt(x.done, 10);
	struct tab u = mk_table();
	struct de_recover_report rep;
	recover_one(d, u.t, &rep);
	cr_assert_eq(ref_diff(u.t, &r), 0, "%s", rep.message);
	free(r.r);
	de_dirty_destroy(dirty);
	rm_table(&t);
	rm_table(&u);
	rm_dir(d);
}

/* ---- damage: snapshot and manifest ---------------------------------------------------- */

static unsigned char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	cr_assert_not_null(f, "%s", path);
	fseek(f, 0, SEEK_END);
	*len = (size_t)ftell(f);
	fseek(f, 0, SEEK_SET);
	unsigned char *b = xcalloc(1, *len + 1);
	cr_assert_eq(fread(b, 1, *len, f), *len);
	fclose(f);
	return b;
}

static void spit(const char *path, const unsigned char *b, size_t len, long flip)
{
	FILE *f = fopen(path, "wb");
	cr_assert_not_null(f);
	cr_assert_eq(fwrite(b, 1, len, f), len);
	if (flip >= 0) {
		fseek(f, flip, SEEK_SET);
		fputc(b[flip] ^ 0xff, f);
	}
	fclose(f);
}

Test(snapshot, every_flip_and_truncation_is_a_clear_error)
{
	char d[64];
	mk_dir(d, sizeof d);
	struct tab t = mk_table();
	struct ref r = ref_new(6);
	size_t idx[6] = { 0, 1, 2, 3, 4, 5 };
	uint64_t keys[6];
	put_keys(t.t, &r, idx, 6, 9, keys);
	struct de_snapshot_spec s = { .table_id = 1, .kind = DE_SNAPSHOT_FULL, .seq = 1,
				      .start_lsn = 1 };
	cr_assert_eq(de_snapshot_write(d, t.t, &s, NULL, NULL, NULL), 0);
	/* an incremental with a tombstone */
	erase_keys(t.t, &r, idx + 2, 1, keys);
	size_t one = 4;
	put_keys(t.t, &r, &one, 1, 10, keys + 1);
	uint64_t dk[2] = { key_of(2), key_of(4) };
	s = (struct de_snapshot_spec){ .table_id = 1, .kind = DE_SNAPSHOT_INCREMENTAL, .seq = 2,
				       .parent_seq = 1, .start_lsn = 2, .keys = dk, .nkeys = 2 };
	struct de_snapshot_info info;
	cr_assert_eq(de_snapshot_write(d, t.t, &s, NULL, NULL, &info), 0);
	cr_assert_eq(info.tombstones, 1);
	uint64_t seqs[2] = { 1, 2 };
	struct tab u = mk_table();
	cr_assert_eq(de_snapshot_load(u.t, d, 1, seqs, 2, NULL), 0);
	cr_assert_eq(ref_diff(u.t, &r), 0);
	rm_table(&u);

	char name[40], path[2][128];
	for (int f = 0; f < 2; f++) {
		de_snapshot_name(name, sizeof name, 1, seqs[f]);
		snprintf(path[f], sizeof path[f], "%s/%s", d, name);
	}
	for (int f = 0; f < 2; f++) {
		size_t len;
		unsigned char *orig = slurp(path[f], &len);
		cr_assert_eq(len, 128 + (f ? 2 : 6) * (40 + 4 * RF) + 32, "the spec's size");
		for (size_t at = 0; at < 2 * len + 1; at++) {
			bool trunc = at >= len;
			size_t b = trunc ? at - len : at;
			if (trunc && b == len)
				break;
			spit(path[f], orig, trunc ? b : len, trunc ? -1 : (long)b);
			u = mk_table();
			struct de_snapshot_load_report lr;
			int err = de_snapshot_load(u.t, d, 1, seqs, 2, &lr);
			cr_assert(err == -EBADMSG || err == -EPROTO,
				  "file %d %s %zu: %d", f, trunc ? "cut" : "flip", b, err);
			cr_assert_not_null(lr.problem);
			cr_assert_eq(lr.bad_seq, seqs[f]);
			cr_assert_eq(table_keys(u.t), 0, "a damaged chain loads nothing");
			struct de_snapshot_info ci;
			int ce = de_snapshot_check(path[f], &ci);
			cr_assert(ce == -EBADMSG || ce == -EPROTO);
			rm_table(&u);
		}
		spit(path[f], orig, len, -1);
		free(orig);
	}
	/* recovery through a manifest naming the chain: a clear message naming the file */
	struct de_manifest *m = xcalloc(1, sizeof *m);
	m->ntables = 1;
	m->tables[0] = (struct de_manifest_table){ .table_id = 1, .nsnaps = 2, .wal_lsn = 2,
						   .seqs = { 1, 2 } };
	cr_assert_eq(de_manifest_write(d, m), 0);
	size_t len;
	unsigned char *orig = slurp(path[1], &len);
	spit(path[1], orig, len, 200);
	u = mk_table();
	struct de_recover_table rt = { 1, u.t };
	struct de_recover_report rep;
	cr_assert_eq(de_persist_recover(d, &rt, 1, quiet_log, NULL, &rep), -EBADMSG);
	cr_assert_not_null(strstr(rep.message, "snap-00000001-0000000000000002.dsnp"), "%s",
			   rep.message);
	/* a missing snapshot: -ENOENT, named */
	unlink(path[1]);
	rm_table(&u);
	u = mk_table();
	rt.table = u.t;
	cr_assert_eq(de_persist_recover(d, &rt, 1, quiet_log, NULL, &rep), -ENOENT);
	cr_assert_not_null(strstr(rep.message, "0000000000000002"), "%s", rep.message);
	/* another config: -EEXIST, and the field */
	spit(path[1], orig, len, -1);
	struct de_table_config c2 = pcfg;
	c2.seed = 8;
	struct de_arena_config ac = { .reserve_bytes = 1ull << 30, .segment_bytes = 4 << 20,
				      .pages = DE_PAGES_SMALL, .numa_node = DE_NUMA_NONE };
	de_arena *a2;
	de_table *t2;
	cr_assert_eq(de_arena_create(&ac, &a2), 0);
	cr_assert_eq(de_table_open(a2, &c2, &t2), 0);
	struct de_snapshot_load_report lr;
	cr_assert_eq(de_snapshot_load(t2, d, 1, seqs, 2, &lr), -EEXIST);
	cr_assert_str_eq(lr.mismatch, "seed");
	/* a chain in the wrong order */
	uint64_t rev[2] = { 2, 1 };
	cr_assert_eq(de_snapshot_load(u.t, d, 1, rev, 2, &lr), -EBADMSG);
	cr_assert_eq(table_keys(u.t), 0);
	de_table_close(t2);
	de_arena_destroy(a2);
	free(orig);
	free(m);
	free(r.r);
	rm_table(&t);
	rm_table(&u);
	rm_dir(d);
}

Test(snapshot, manifest_round_trip_flips_truncations)
{
	char d[64];
	mk_dir(d, sizeof d);
	struct de_manifest *m = xcalloc(1, sizeof *m), *g = xcalloc(1, sizeof *g);
	const char *problem;
	cr_assert_eq(de_manifest_read(d, g, &problem), -ENOENT);
	m->generation = 77;
	m->ntables = 3;
	m->tables[0] = (struct de_manifest_table){ .table_id = 1, .nsnaps = 2, .wal_lsn = 40,
						   .seqs = { 3, 5 } };
	m->tables[1] = (struct de_manifest_table){ .table_id = 4, .nsnaps = 0, .wal_lsn = 1 };
	m->tables[2] = (struct de_manifest_table){ .table_id = 9, .nsnaps = 1, .wal_lsn = 12,
						   .seqs = { 1 } };
	cr_assert_eq(de_manifest_write(d, m), 0);
	cr_assert_eq(de_manifest_read(d, g, &problem), 0);
	cr_assert_eq(memcmp(m, g, sizeof *m), 0, "round trip");
	/* invalid ones are refused on write */
	g->tables[1].table_id = 1;
	cr_assert_eq(de_manifest_write(d, g), -EINVAL, "ids must increase");
	*g = *m;
	g->tables[0].seqs[1] = 3;
	cr_assert_eq(de_manifest_write(d, g), -EINVAL, "seqs must increase");
	*g = *m;
	g->tables[0].wal_lsn = 0;
	cr_assert_eq(de_manifest_write(d, g), -EINVAL);

	char path[128];
	snprintf(path, sizeof path, "%s/MANIFEST", d);
	size_t len;
	unsigned char *orig = slurp(path, &len);
	cr_assert_eq(len, 32 + (16 + 16) + 16 + (16 + 8) + 4);
	struct tab u = mk_table();
	for (size_t at = 0; at < 2 * len; at++) {
		bool trunc = at >= len;
		size_t b = trunc ? at - len : at;
		spit(path, orig, trunc ? b : len, trunc ? -1 : (long)b);
		int err = de_manifest_read(d, g, &problem);
		cr_assert(err == -EBADMSG || err == -EPROTO, "%s %zu: %d", trunc ? "cut" : "flip",
			  b, err);
		cr_assert_not_null(problem);
		cr_assert_eq(de_manifest_decode(orig, trunc ? b : len, g, &problem),
			     trunc ? err : 0);
		if (at % 17 == 0) { /* recovery refuses it with a message naming MANIFEST */
			struct de_recover_table rt = { 1, u.t };
			struct de_recover_report rep;
			cr_assert_eq(de_persist_recover(d, &rt, 1, quiet_log, NULL, &rep), err);
			cr_assert_not_null(strstr(rep.message, "MANIFEST"), "%s", rep.message);
			cr_assert_eq(table_keys(u.t), 0);
		}
	}
	free(orig);
	free(m);
	free(g);
	rm_table(&u);
	rm_dir(d);
}

Test(snapshot, dirty_set)
{
	de_dirty *d;
	cr_assert_eq(de_dirty_create(&d), 0);
	uint64_t keys[1000];
	for (size_t i = 0; i < 1000; i++)
		keys[i] = i % 300; /* 0 is not a key; duplicates kept once */
	cr_assert_eq(de_dirty_add(d, keys, 1000), 0);
	cr_assert_eq(de_dirty_count(d), 299);
	uint64_t *got;
	size_t n;
	cr_assert_eq(de_dirty_take(d, &got, &n), 0);
	cr_assert_eq(n, 299);
	bool seen[300] = { 0 };
	for (size_t i = 0; i < n; i++) {
		cr_assert(got[i] > 0 && got[i] < 300 && !seen[got[i]]);
		seen[got[i]] = true;
	}
	free(got);
	cr_assert_eq(de_dirty_count(d), 0);
	cr_assert_eq(de_dirty_take(d, &got, &n), 0);
	cr_assert_null(got);
	cr_assert_eq(n, 0);
	de_dirty_destroy(d);
}

#ifdef DE_FAULT_INJECTION
static bool has_tmp(const char *d)
{
	DIR *x = opendir(d);
	struct dirent *e;
	bool found = false;
	while ((e = readdir(x)))
		found |= strstr(e->d_name, ".tmp") != NULL;
	closedir(x);
	return found;
}

/* Before each fsync is queued, every write queued earlier on that file has completed, or
 * (the only other order an fsync honours) is linked in an unbroken chain ending right at
 * it. Returns the fsyncs seen; fails the test on the first one that could overtake a
 * write (an unlinked IORING_OP_FSYNC runs alongside the writes in flight). */
static unsigned check_fsync_order(const struct de_io_trace_event *ev, size_t n, const char *what)
{
	unsigned fsyncs = 0;
	for (size_t j = 0; j < n; j++) {
		if (ev[j].kind != DE_IO_FSYNC_QUEUED)
			continue;
		fsyncs++;
		size_t pending = 0;
		for (size_t i = 0; i < j; i++)
			if (ev[i].fd == ev[j].fd && ev[i].kind == DE_IO_WRITE_QUEUED)
				pending++;
			else if (ev[i].fd == ev[j].fd && ev[i].kind == DE_IO_WRITE_DONE)
				pending--;
		cr_assert_leq(pending, j, "%s: trace out of order", what);
		for (size_t k = 1; k <= pending; k++) {
			const struct de_io_trace_event *e = &ev[j - k];
			cr_assert(e->kind == DE_IO_WRITE_QUEUED && e->fd == ev[j].fd && e->linked,
				  "%s: fsync %u (event %zu) was queued while the write of %" PRIu64
				  " bytes at offset %" PRIu64 " was in flight and not linked before it",
				  what, fsyncs, j, e->kind == DE_IO_WRITE_QUEUED ? e->len : 0,
				  e->kind == DE_IO_WRITE_QUEUED ? e->off : 0);
		}
	}
	return fsyncs;
}

Test(snapshot, record_files_are_written_before_their_fsync)
{
	char d[64];
	mk_dir(d, sizeof d);
	struct tab t = mk_table();
	struct ref r = ref_new(NK);
	de_dirty *dirty;
	cr_assert_eq(de_dirty_create(&dirty), 0);
	uint64_t seed = 5, step = 0;
	updates(NULL, dirty, t.t, &r, 50, &seed, &step);
	enum { CAP = 4096 };
	struct de_io_trace_event *ev = xcalloc(CAP, sizeof *ev);
	/* a full checkpoint: snapshot file (records, header, trailer), MANIFEST */
	de_persist_trace(ev, CAP);
	cr_assert_eq(de_persist_checkpoint(d, NULL, dirty, t.t, 1, 0, NULL, NULL, NULL), 0);
	size_t n = de_persist_trace(NULL, 0);
	cr_assert_leq(n, CAP);
	unsigned f = check_fsync_order(ev, n, "checkpoint");
	cr_assert_geq(f, 2, "a snapshot and a MANIFEST: %u fsyncs traced", f);
	/* an export */
	char path[96];
	snprintf(path, sizeof path, "%s/x.dexp", d);
	de_persist_trace(ev, CAP);
	cr_assert_eq(de_export(t.t, path, NULL, NULL, NULL), 0);
	n = de_persist_trace(NULL, 0);
	cr_assert_leq(n, CAP);
	cr_assert_geq(check_fsync_order(ev, n, "export"), 1);
	size_t writes = 0;
	for (size_t i = 0; i < n; i++)
		writes += ev[i].kind == DE_IO_WRITE_QUEUED;
	cr_assert_geq(writes, 3, "records, header and trailer: %zu writes traced", writes);
	free(ev);
	free(r.r);
	de_dirty_destroy(dirty);
	rm_table(&t);
	rm_dir(d);
}

static uint64_t ino_of(const char *path)
{
	struct stat sb;
	cr_assert_eq(stat(path, &sb), 0, "%s", path);
	return (uint64_t)sb.st_ino;
}

/* A new data directory and the parents made for it are each fsync'ed in their parent
 * (a power loss after the daemon started cannot take the directory away with the files
 * in it); one that exists is left alone. */
Test(snapshot, new_data_dir_is_fsynced_in_its_parent)
{
	char d[64], p1[96], p2[96], p3[96];
	mk_dir(d, sizeof d);
	snprintf(p1, sizeof p1, "%s/a", d);
	snprintf(p2, sizeof p2, "%s/a/b", d);
	snprintf(p3, sizeof p3, "%s/a/b/data/", d);
	struct de_io_trace_event ev[16];
	de_persist_trace(ev, 16);
	cr_assert_eq(de_mkdir_durable(p3, 0755), 0);
	size_t n = de_persist_trace(NULL, 0);
	const uint64_t want[3] = { ino_of(d), ino_of(p1), ino_of(p2) };
	size_t k = 0;
	for (size_t i = 0; i < n && i < 16; i++)
		if (ev[i].kind == DE_IO_DIR_FSYNC) {
			cr_assert_lt(k, 3, "more directory fsyncs than directories created");
			cr_assert_eq(ev[i].res, 0);
			cr_assert_eq(ev[i].off, want[k], "fsync %zu: inode %" PRIu64 ", want the "
				     "parent of the directory created %zu-th", k, ev[i].off, k);
			k++;
		}
	cr_assert_eq(k, 3, "3 directories created: %zu parents fsync'ed", k);
	struct stat sb;
	cr_assert_eq(stat(p3, &sb), 0);
	cr_assert(S_ISDIR(sb.st_mode));
	/* all there: nothing to make durable */
	de_persist_trace(ev, 16);
	cr_assert_eq(de_mkdir_durable(p3, 0755), 0);
	cr_assert_eq(de_persist_trace(NULL, 0), 0);
	/* a failed fsync is the call's error */
	snprintf(p3, sizeof p3, "%s/a/c", d);
	de_persist_fail(DE_FAULT_FSYNC, 1);
	cr_assert_eq(de_mkdir_durable(p3, 0755), -EIO);
	de_persist_fail(DE_FAULT_FSYNC, 0);
	rm_dir(d);
}

Test(snapshot, faults_write_fsync_alloc_leave_nothing)
{
	char d[64];
	mk_dir(d, sizeof d);
	struct tab t = mk_table();
	struct ref r = ref_new(NK);
	de_dirty *dirty;
	cr_assert_eq(de_dirty_create(&dirty), 0);
	uint64_t seed = 9, step = 0;
	updates(NULL, dirty, t.t, &r, 50, &seed, &step);
	cr_assert_eq(de_persist_checkpoint(d, NULL, dirty, t.t, 1, 0, NULL, NULL, NULL), 0);
	updates(NULL, dirty, t.t, &r, 30, &seed, &step);
	size_t ndirty = de_dirty_count(dirty);
	cr_assert_gt(ndirty, 0);
	struct de_manifest *m0 = xcalloc(1, sizeof *m0), *m1 = xcalloc(1, sizeof *m1);
	cr_assert_eq(de_manifest_read(d, m0, NULL), 0);
	const enum de_fault_kind kinds[3] = { DE_FAULT_WRITE, DE_FAULT_FSYNC, DE_FAULT_ALLOC };
	for (int k = 0; k < 3; k++) {
		int fired = 0;
		for (long nth = 1; nth < 60; nth++) {
			de_persist_fail(kinds[k], nth);
			int err = de_persist_checkpoint(d, NULL, dirty, t.t, 1, 0, NULL, NULL, NULL);
			long left = de_persist_fail(kinds[k], 0);
			if (left) { /* did not fire: it succeeded; undo it for the next round */
				cr_assert_eq(err, 0);
				cr_assert_eq(de_manifest_write(d, m0), 0);
				break;
			}
			fired++;
			cr_assert_eq(de_manifest_read(d, m1, NULL), 0);
			if (!err) { /* it hit the gc after the manifest: a success, gc retried later */
				cr_assert_eq(m1->generation, m0->generation + 1);
				cr_assert_eq(de_manifest_write(d, m0), 0);
				uint64_t all[NK];
				for (size_t i = 0; i < NK; i++)
					all[i] = key_of(i);
				cr_assert_eq(de_dirty_add(dirty, all, NK), 0);
				continue;
			}
			cr_assert(err == -EIO || err == -ENOMEM, "kind %d nth %ld: %d", k, nth, err);
			if (memcmp(m0, m1, sizeof *m0)) {
				/* only the last step, the directory fsync after the rename, may
				 * fail with the new (complete, fsync'ed) manifest in place */
				cr_assert_eq(k, 1, "kind %d nth %ld changed the manifest", k, nth);
				cr_assert_eq(m1->generation, m0->generation + 1);
				cr_assert_eq(de_manifest_write(d, m0), 0);
			}
			cr_assert_geq(de_dirty_count(dirty), ndirty, "dirty keys are put back");
			cr_assert(!has_tmp(d), "no .tmp left (kind %d nth %ld)", k, nth);
		}
		cr_assert_gt(fired, 0, "kind %d never fired", k);
		/* the retry that succeeded was undone: put the dirty keys of that one back */
		uint64_t all[NK];
		for (size_t i = 0; i < NK; i++)
			all[i] = key_of(i);
		cr_assert_eq(de_dirty_add(dirty, all, NK), 0);
	}
	/* and in the end: a checkpoint and recovery equal the reference */
	cr_assert_eq(de_persist_checkpoint(d, NULL, dirty, t.t, 1, 0, NULL, NULL, NULL), 0);
	struct tab u = mk_table();
	struct de_recover_report rep;
	recover_one(d, u.t, &rep);
	cr_assert_eq(ref_diff(u.t, &r), 0);
	/* recovery under allocation faults: an error, never a crash */
	for (long nth = 1; nth < 80; nth++) {
		struct tab v = mk_table();
		struct de_recover_table rt = { 1, v.t };
		de_persist_fail(DE_FAULT_ALLOC, nth);
		int err = de_persist_recover(d, &rt, 1, quiet_log, NULL, &rep);
		long left = de_persist_fail(DE_FAULT_ALLOC, 0);
		if (left) {
			cr_assert_eq(err, 0);
			cr_assert_eq(ref_diff(v.t, &r), 0);
			rm_table(&v);
			break;
		}
		cr_assert_eq(err, -ENOMEM, "nth %ld: %d %s", nth, err, rep.message);
		rm_table(&v);
	}
	free(m0);
	free(m1);
	free(r.r);
	de_dirty_destroy(dirty);
	rm_table(&t);
	rm_table(&u);
	rm_dir(d);
}
#endif
