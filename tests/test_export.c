/*
 * test_export.c — export / import (uring/export.c): CRC32C against published vectors; a
 * round trip of a table with slots and metadata, checked against the source table (read
 * back through de_table_find / de_table_apply) and against the generator of the rows we
 * inserted; config mismatch; every single-byte flip and every truncation point of a small
 * export (strict: an error and nothing imported; salvage: exactly the expected prefix,
 * each record equal to the source); -ENOSPC on a tiny tmpfs leaving no partial file; the
 * NumPy snippet of uring/README.md run by /usr/bin/python3 on a real export.
 *
 * The expectations come from the contract in de_uring.h and the format spec at the top of
 * uring/export.c (the header is 128 bytes, record i at 128 + i * record_bytes).
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "de_shm.h"
#include "de_uring.h"
#include "test_util.h"

#ifndef DE_SRCDIR
#define DE_SRCDIR "."
#endif

/* reads keep each row's last_step (de_table_apply's DE_STEP_KEEP), as export does */
#define READ_STEP DE_STEP_KEEP

struct tab {
	de_arena *a;
	de_table *t;
};

static struct tab mk_table(struct de_table_config c)
{
	struct de_arena_config ac = { .reserve_bytes = 1ull << 30, .segment_bytes = 4 << 20,
				      .max_segment_bytes = 32 << 20, .pages = DE_PAGES_SMALL,
				      .numa_node = DE_NUMA_NONE };
	struct tab x = { 0 };
	cr_assert_eq(de_arena_create(&ac, &x.a), 0);
	cr_assert_eq(de_table_open(x.a, &c, &x.t), 0);
	return x;
}

static void rm_table(struct tab *x)
{
	de_table_close(x->t);
	de_arena_destroy(x->a);
}

/* ---- the rows we insert: a pure function of the key (the reference map) ---- */

static float gen_val(uint64_t key, uint32_t j)
{
	return (float)(int64_t)(mix64(key * 131 + j) % 20001) / 1000.0f - 10.0f;
}

static struct de_row_meta gen_meta(uint64_t key)
{
	struct de_row_meta m = { .key = key, .last_step = 5 + key % 777, .freq = 1 + key % 1000,
				 .flags = 1u | (uint32_t)((key & 3) << 4), .aux = key * 3 };
	return m;
}

struct gen_ctx {
	const uint64_t *keys;
	uint32_t rf;
};

static void gen_row(void *ctx, size_t i, float *row, struct de_row_meta *m)
{
	struct gen_ctx *g = ctx;
	for (uint32_t j = 0; j < g->rf; j++)
		row[j] = gen_val(g->keys[i], j);
	struct de_row_meta e = gen_meta(g->keys[i]);
	m->last_step = e.last_step;
	m->freq = e.freq;
	m->flags = e.flags;
	m->aux = e.aux;
}

static void fill(de_table *t, const uint64_t *keys, size_t n)
{
	struct gen_ctx g = { keys, de_table_row_floats(t) };
	cr_assert_eq(de_table_apply(t, keys, n, true, gen_row, &g, NULL, 1), 0);
}

/* ---- reading rows and metadata back ---- */

struct rd_ctx {
	float *rows;
	struct de_row_meta *metas;
	uint32_t rf;
};

static void rd_row(void *ctx, size_t i, float *row, struct de_row_meta *m)
{
	struct rd_ctx *r = ctx;
	memcpy(r->rows + i * r->rf, row, (size_t)r->rf * 4);
	r->metas[i] = *m;
}

/* rows: n * row_floats; status: n */
static void read_rows(de_table *t, const uint64_t *keys, size_t n, float *rows,
		      struct de_row_meta *metas, uint8_t *status)
{
	struct rd_ctx r = { rows, metas, de_table_row_floats(t) };
	cr_assert_eq(de_table_apply(t, keys, n, false, rd_row, &r, status, READ_STEP), 0);
}

static void assert_meta_eq(const struct de_row_meta *a, const struct de_row_meta *b, uint64_t key)
{
	cr_assert_eq(a->key, b->key, "key %lu", (unsigned long)key);
	cr_assert_eq(a->freq, b->freq, "freq of %lu", (unsigned long)key);
	cr_assert_eq(a->flags, b->flags, "flags of %lu", (unsigned long)key);
	cr_assert_eq(a->aux, b->aux, "aux of %lu", (unsigned long)key);
	cr_assert_eq(a->last_step, b->last_step, "last_step of %lu", (unsigned long)key);
}

/* ---- files ---- */

static char dir[64];

static void mkdir_tmp(void)
{
	strcpy(dir, "/tmp/de_export_XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
}

static void rm_tmp(void)
{
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	cr_assert_eq(system(cmd), 0);
}

static char *path_in(const char *name)
{
	static char p[4][128];
	static int k;
	char *s = p[k++ % 4];
	snprintf(s, 128, "%s/%s", dir, name);
	return s;
}

static unsigned char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	cr_assert_not_null(f, "%s", path);
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	unsigned char *b = malloc((size_t)n + 1);
	cr_assert_eq(fread(b, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	*len = (size_t)n;
	return b;
}

static void spit(const char *path, const void *b, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, b, len), (ssize_t)len);
	close(fd);
}

static uint64_t table_keys(de_table *t)
{
	struct de_table_stats st;
	cr_assert_eq(de_table_stats(t, &st), 0);
	return st.keys;
}

/* ------------------------------------------------------------------------- */

Test(crc32c, known_vectors)
{
	cr_assert_eq(de_crc32c(0, "123456789", 9), 0xe3069283u);
	unsigned char z[32] = { 0 }, f[32], inc[32];
	memset(f, 0xff, sizeof f);
	for (int i = 0; i < 32; i++)
		inc[i] = (unsigned char)i;
	/* RFC 3720 B.4 */
	cr_assert_eq(de_crc32c(0, z, 32), 0x8a9136aau);
	cr_assert_eq(de_crc32c(0, f, 32), 0x62a8ab43u);
	cr_assert_eq(de_crc32c(0, inc, 32), 0x46dd794eu);
	cr_assert_eq(de_crc32c(0, "", 0), 0u);
	/* continuation equals one pass, at every split of an odd-length buffer */
	unsigned char buf[1001];
	uint64_t s = 7;
	for (size_t i = 0; i < sizeof buf; i++)
		buf[i] = (unsigned char)rng_next(&s);
	uint32_t whole = de_crc32c(0, buf, sizeof buf);
	for (size_t cut = 0; cut <= sizeof buf; cut += 37)
		cr_assert_eq(de_crc32c(de_crc32c(0, buf, cut), buf + cut, sizeof buf - cut), whole);
}

static const struct de_table_config big_cfg = {
	.dim = 8, .nslots = 2, .init = DE_INIT_UNIFORM, .init_a = -0.5f, .init_b = 0.5f,
	.slot_init = 0.25f, .seed = 42, .seg_buckets = 64,
};

Test(export, round_trip_values_slots_meta)
{
	mkdir_tmp();
	struct tab src = mk_table(big_cfg);
	const size_t N = 5000;
	uint64_t *keys = xcalloc(N, 8);
	for (size_t i = 0; i < N; i++)
		keys[i] = mix64(i + 1); /* a bijection: distinct and nonzero */
	fill(src.t, keys, N);
	/* erase every 7th key: erased keys must not come back */
	size_t ne = 0, nlive = 0;
	uint64_t *gone = xcalloc(N, 8), *live = xcalloc(N, 8);
	for (size_t i = 0; i < N; i++)
		*(i % 7 == 3 ? &gone[ne++] : &live[nlive++]) = keys[i];
	size_t erased;
	cr_assert_eq(de_table_erase(src.t, gone, ne, &erased), 0);
	cr_assert_eq(erased, ne);

	uint64_t nrec = 0;
	char *p = path_in("t.dexp");
	cr_assert_eq(de_export(src.t, p, NULL, NULL, &nrec), 0);
	cr_assert_eq(nrec, nlive);
	struct stat sb;
	cr_assert_eq(stat(p, &sb), 0);
	uint32_t rb = 40 + 4 * 8 * 3;
	cr_assert_eq((uint64_t)sb.st_size, 128 + nlive * rb + 32);
	cr_assert_eq(access(path_in("t.dexp.tmp"), F_OK), -1, "no temp file left");
	struct de_export_info info;
	cr_assert_eq(de_export_check(p, &info), 0, "%s", info.problem ? info.problem : "");
	cr_assert_eq(info.records, nlive);
	cr_assert_eq(info.valid_records, nlive);
	cr_assert_eq(info.record_bytes, rb);
	cr_assert_eq(info.config.dim, 8);
	cr_assert_eq(info.config.nslots, 2);
	cr_assert_eq(info.config.seed, 42);
	cr_assert_null(info.problem);

	struct de_table_config dc = big_cfg;
	dc.seg_buckets = 1024; /* informational: may differ */
	struct tab dst = mk_table(dc);
	struct de_import_report rep;
	cr_assert_eq(de_import(dst.t, p, 0, NULL, NULL, &rep), 0);
	cr_assert_eq(rep.records, nlive);
	cr_assert_eq(rep.imported, nlive);
	cr_assert_eq(rep.dropped, 0);
	cr_assert_null(rep.problem);
	cr_assert_eq(table_keys(dst.t), nlive);

	const uint32_t rf = 24;
	float *rs = xcalloc(nlive * rf, 4), *rd = xcalloc(nlive * rf, 4);
	float *vs = xcalloc(nlive * 8, 4);
	struct de_row_meta *ms = xcalloc(nlive, sizeof *ms), *md = xcalloc(nlive, sizeof *md);
	uint8_t *st1 = xcalloc(nlive, 1), *st2 = xcalloc(nlive, 1), *st3 = xcalloc(nlive, 1);
	cr_assert_eq(de_table_find(src.t, live, nlive, vs, st3), 0);
	read_rows(src.t, live, nlive, rs, ms, st1);
	read_rows(dst.t, live, nlive, rd, md, st2);
	for (size_t i = 0; i < nlive; i++) {
		cr_assert_eq(st1[i], DE_FOUND);
		cr_assert_eq(st2[i], DE_FOUND, "key %zu imported", i);
		cr_assert_eq(st3[i], DE_FOUND);
		for (uint32_t j = 0; j < rf; j++) {
			float g = gen_val(live[i], j);
			cr_assert_eq(rd[i * rf + j], g, "key %zu float %u", i, j);
			cr_assert_eq(rs[i * rf + j], g);
			if (j < 8)
				cr_assert_eq(vs[i * 8 + j], g);
		}
		struct de_row_meta e = gen_meta(live[i]);
		assert_meta_eq(&md[i], &e, live[i]);
		assert_meta_eq(&md[i], &ms[i], live[i]);
	}
	float *vg = xcalloc(ne * 8, 4);
	uint8_t *sg = xcalloc(ne, 1);
	cr_assert_eq(de_table_find(dst.t, gone, ne, vg, sg), 0);
	for (size_t i = 0; i < ne; i++)
		cr_assert_eq(sg[i], DE_MISSING, "erased key came back");

	/* salvage of an intact file is the same import */
	struct tab dst2 = mk_table(big_cfg);
	cr_assert_eq(de_import(dst2.t, p, DE_IMPORT_SALVAGE, NULL, NULL, &rep), 0);
	cr_assert_eq(rep.imported, nlive);
	cr_assert_eq(rep.dropped, 0);
	cr_assert_null(rep.problem);
	cr_assert_eq(table_keys(dst2.t), nlive);

	free(vg), free(sg), free(rs), free(rd), free(vs), free(ms), free(md);
	free(st1), free(st2), free(st3), free(keys), free(gone), free(live);
	rm_table(&dst2);
	rm_table(&dst);
	rm_table(&src);
	rm_tmp();
}

Test(export, last_step_preserved)
{
	mkdir_tmp();
	struct tab src = mk_table(big_cfg), dst = mk_table(big_cfg);
	uint64_t keys[50];
	for (int i = 0; i < 50; i++)
		keys[i] = mix64((uint64_t)i + 77);
	fill(src.t, keys, 50);
	cr_assert_eq(de_export(src.t, path_in("l.dexp"), NULL, NULL, NULL), 0);
	cr_assert_eq(de_import(dst.t, path_in("l.dexp"), 0, NULL, NULL, NULL), 0);
	float rows[50 * 24];
	struct de_row_meta ms[50], md[50];
	read_rows(src.t, keys, 50, rows, ms, NULL);
	read_rows(dst.t, keys, 50, rows, md, NULL);
	for (int i = 0; i < 50; i++) {
		cr_assert_eq(ms[i].last_step, gen_meta(keys[i]).last_step, "export left the source alone");
		cr_assert_eq(md[i].last_step, gen_meta(keys[i]).last_step);
	}
	rm_table(&dst);
	rm_table(&src);
	rm_tmp();
}

Test(export, empty_table_and_bad_paths)
{
	mkdir_tmp();
	struct tab src = mk_table(big_cfg), dst = mk_table(big_cfg);
	uint64_t n = 99;
	cr_assert_eq(de_export(src.t, path_in("e.dexp"), NULL, NULL, &n), 0);
	cr_assert_eq(n, 0);
	struct de_export_info info;
	cr_assert_eq(de_export_check(path_in("e.dexp"), &info), 0);
	cr_assert_eq(info.records, 0);
	struct de_import_report rep;
	cr_assert_eq(de_import(dst.t, path_in("e.dexp"), 0, NULL, NULL, &rep), 0);
	cr_assert_eq(rep.imported, 0);

	cr_assert_eq(de_export_check(path_in("nope"), &info), -ENOENT);
	cr_assert_eq(de_import(dst.t, path_in("nope"), 0, NULL, NULL, &rep), -ENOENT);
	cr_assert_eq(de_export_check(dir, &info), -EISDIR);
	cr_assert_eq(de_export(src.t, path_in("no/such/dir"), NULL, NULL, NULL), -ENOENT);
	spit(path_in("junk"), "hello, not an export at all", 27);
	cr_assert_eq(de_export_check(path_in("junk"), &info), -EBADMSG);
	char big[300];
	memset(big, 'x', sizeof big);
	spit(path_in("junk"), big, sizeof big);
	cr_assert_eq(de_export_check(path_in("junk"), &info), -EBADMSG);
	cr_assert_eq(de_import(dst.t, path_in("junk"), DE_IMPORT_SALVAGE, NULL, NULL, &rep), -EBADMSG);
	cr_assert_eq(de_import(NULL, path_in("e.dexp"), 0, NULL, NULL, &rep), -EINVAL);
	cr_assert_eq(de_import(dst.t, path_in("e.dexp"), 8, NULL, NULL, &rep), -EINVAL);
	cr_assert_eq(de_export(NULL, path_in("e.dexp"), NULL, NULL, NULL), -EINVAL);
	rm_table(&dst);
	rm_table(&src);
	rm_tmp();
}

static int cancel_at_first(void *ctx, uint64_t done, uint64_t total)
{
	(void)total;
	*(uint64_t *)ctx = done;
	return 1;
}

Test(export, progress_cancel_leaves_nothing)
{
	mkdir_tmp();
	struct tab src = mk_table(big_cfg);
	uint64_t keys[100];
	for (int i = 0; i < 100; i++)
		keys[i] = (uint64_t)i + 1;
	fill(src.t, keys, 100);
	uint64_t seen = 0;
	cr_assert_eq(de_export(src.t, path_in("c.dexp"), cancel_at_first, &seen, NULL), -ECANCELED);
	cr_assert_eq(seen, 100);
	cr_assert_eq(access(path_in("c.dexp"), F_OK), -1);
	cr_assert_eq(access(path_in("c.dexp.tmp"), F_OK), -1);
	rm_table(&src);
	rm_tmp();
}

Test(export, config_mismatch_is_eexist)
{
	mkdir_tmp();
	struct tab src = mk_table(big_cfg);
	uint64_t keys[10];
	for (int i = 0; i < 10; i++)
		keys[i] = (uint64_t)i + 1;
	fill(src.t, keys, 10);
	char *p = path_in("m.dexp");
	cr_assert_eq(de_export(src.t, p, NULL, NULL, NULL), 0);
	struct {
		const char *field;
		struct de_table_config c;
	} cases[6];
	for (int i = 0; i < 6; i++)
		cases[i].c = big_cfg;
	cases[0].field = "dim", cases[0].c.dim = 4;
	cases[1].field = "nslots", cases[1].c.nslots = 1;
	cases[2].field = "init", cases[2].c.init = DE_INIT_ZEROS;
	cases[3].field = "init_b", cases[3].c.init_b = 0.75f;
	cases[4].field = "slot_init", cases[4].c.slot_init = 0.0f;
	cases[5].field = "seed", cases[5].c.seed = 43;
	for (int i = 0; i < 6; i++) {
		struct tab d = mk_table(cases[i].c);
		struct de_import_report rep;
		for (unsigned fl = 0; fl <= DE_IMPORT_SALVAGE; fl++) {
			cr_assert_eq(de_import(d.t, p, fl, NULL, NULL, &rep), -EEXIST, "%s", cases[i].field);
			cr_assert_str_eq(rep.mismatch, cases[i].field);
			cr_assert_eq(rep.imported, 0);
		}
		cr_assert_eq(table_keys(d.t), 0);
		rm_table(&d);
	}
	rm_table(&src);
	rm_tmp();
}

/* ---- corruption: every byte flip, every truncation ---- */

static const struct de_table_config small_cfg = {
	.dim = 4, .nslots = 1, .init = DE_INIT_CONSTANT, .init_a = 0.5f, .slot_init = 0.0f,
	.seed = 9, .seg_buckets = 64,
};

#define SN 200u
#define SRB (40u + 4u * 8u)

struct corpus {
	struct tab src, dst;
	unsigned char *img; /* the intact export */
	size_t len;
	uint64_t order[SN]; /* keys in file order */
	float rows[SN * 8]; /* the source's rows and metadata, in file order */
	struct de_row_meta metas[SN];
	char *path;
	int fd;
};

static struct corpus *corpus_make(void)
{
	struct corpus *c = xcalloc(1, sizeof *c);
	c->src = mk_table(small_cfg);
	c->dst = mk_table(small_cfg);
	uint64_t keys[SN];
	for (unsigned i = 0; i < SN; i++)
		keys[i] = mix64(i + 1000);
	fill(c->src.t, keys, SN);
	c->path = strdup(path_in("s.dexp"));
	uint64_t n;
	cr_assert_eq(de_export(c->src.t, c->path, NULL, NULL, &n), 0);
	cr_assert_eq(n, SN);
	c->img = slurp(c->path, &c->len);
	cr_assert_eq(c->len, 128 + SN * SRB + 32);
	for (unsigned i = 0; i < SN; i++)
		memcpy(&c->order[i], c->img + 128 + i * SRB, 8);
	uint8_t st[SN];
	read_rows(c->src.t, c->order, SN, c->rows, c->metas, st);
	for (unsigned i = 0; i < SN; i++)
		cr_assert_eq(st[i], DE_FOUND, "the file's keys are the source's");
	c->fd = open(c->path, O_RDWR);
	cr_assert_geq(c->fd, 0);
	return c;
}

static void corpus_free(struct corpus *c)
{
	close(c->fd);
	rm_table(&c->dst);
	rm_table(&c->src);
	free(c->img);
	free(c->path);
	free(c);
}

/* dst must hold exactly records 0..k-1 of the file, each equal to the source; then empty it */
static void check_prefix_and_clear(struct corpus *c, uint64_t k, const char *what, size_t at)
{
	cr_assert_eq(table_keys(c->dst.t), k, "%s at %zu", what, at);
	if (!k)
		return;
	float rows[SN * 8];
	struct de_row_meta metas[SN];
	uint8_t st[SN];
	read_rows(c->dst.t, c->order, k, rows, metas, st);
	for (uint64_t i = 0; i < k; i++) {
		cr_assert_eq(st[i], DE_FOUND, "%s at %zu: record %lu", what, at, (unsigned long)i);
		cr_assert_eq(memcmp(rows + i * 8, c->rows + i * 8, 32), 0,
			     "%s at %zu: record %lu differs", what, at, (unsigned long)i);
		assert_meta_eq(&metas[i], &c->metas[i], c->order[i]);
	}
	size_t erased;
	cr_assert_eq(de_table_erase(c->dst.t, c->order, k, &erased), 0);
	cr_assert_eq(erased, k);
}

static void expect_file(struct corpus *c, int want_err, uint64_t want_prefix, bool salvage_ok,
			const char *what, size_t at)
{
	struct de_export_info info;
	struct de_import_report rep;
	int r = de_export_check(c->path, &info);
	cr_assert_eq(r, want_err, "%s at %zu: check gave %d", what, at, r);
	cr_assert_not_null(info.problem, "%s at %zu: a problem is named", what, at);
	r = de_import(c->dst.t, c->path, 0, NULL, NULL, &rep);
	cr_assert_eq(r, want_err, "%s at %zu: strict gave %d", what, at, r);
	cr_assert_eq(rep.imported, 0);
	cr_assert_eq(table_keys(c->dst.t), 0, "%s at %zu: strict imported nothing", what, at);
	r = de_import(c->dst.t, c->path, DE_IMPORT_SALVAGE, NULL, NULL, &rep);
	if (!salvage_ok) {
		cr_assert_eq(r, want_err, "%s at %zu: salvage gave %d", what, at, r);
		cr_assert_eq(rep.imported, 0);
		cr_assert_eq(table_keys(c->dst.t), 0);
		return;
	}
	cr_assert_eq(r, 0, "%s at %zu: salvage gave %d", what, at, r);
	cr_assert_eq(rep.imported, want_prefix, "%s at %zu: salvage imported %lu", what, at,
		     (unsigned long)rep.imported);
	cr_assert_eq(rep.dropped, SN - want_prefix);
	cr_assert_not_null(rep.problem);
	cr_assert_eq(info.valid_records, want_prefix, "%s at %zu: check's prefix", what, at);
	check_prefix_and_clear(c, want_prefix, what, at);
}

Test(corruption, every_byte_flip, .timeout = 600)
{
	mkdir_tmp();
	struct corpus *c = corpus_make();
	const unsigned char pats[2] = { 0xff, 0x01 };
	size_t flips = 0;
	for (int pi = 0; pi < 2; pi++) {
		for (size_t at = 0; at < c->len; at++) {
			unsigned char b = c->img[at] ^ (pi ? (unsigned char)(1u << (at % 8)) : pats[0]);
			cr_assert_eq(pwrite(c->fd, &b, 1, (off_t)at), 1);
			if (at < 128)
				expect_file(c, at >= 8 && at < 12 ? -EPROTO : -EBADMSG, 0, false,
					    "header flip", at);
			else if (at < 128 + SN * SRB)
				expect_file(c, -EBADMSG, (at - 128) / SRB, true, "record flip", at);
			else
				expect_file(c, -EBADMSG, SN, true, "trailer flip", at);
			cr_assert_eq(pwrite(c->fd, &c->img[at], 1, (off_t)at), 1);
			flips++;
		}
	}
	cr_assert_eq(flips, 2 * c->len);
	cr_assert_eq(de_export_check(c->path, NULL), 0, "restored");
	corpus_free(c);
	rm_tmp();
}

Test(corruption, every_truncation_and_extension, .timeout = 600)
{
	mkdir_tmp();
	struct corpus *c = corpus_make();
	for (size_t len = 0; len < c->len; len++) {
		cr_assert_eq(ftruncate(c->fd, (off_t)len), 0);
		if (len < 128) {
			expect_file(c, -EBADMSG, 0, false, "truncation", len);
		} else {
			uint64_t k = (len - 128) / SRB;
			expect_file(c, -EBADMSG, k < SN ? k : SN, true, "truncation", len);
		}
		cr_assert_eq(pwrite(c->fd, c->img + len, 1, (off_t)len), 1); /* grow by one */
	}
	cr_assert_eq(de_export_check(c->path, NULL), 0, "rebuilt byte by byte");
	/* one byte too many: strict refuses, salvage keeps all records */
	cr_assert_eq(pwrite(c->fd, "x", 1, (off_t)c->len), 1);
	expect_file(c, -EBADMSG, SN, true, "extension", c->len);
	corpus_free(c);
	rm_tmp();
}

Test(corruption, moved_records_and_versions)
{
	mkdir_tmp();
	struct corpus *c = corpus_make();
	/* swap records 3 and 4: each has a good CRC for its old position only */
	unsigned char *m = malloc(c->len);
	memcpy(m, c->img, c->len);
	memcpy(m + 128 + 3 * SRB, c->img + 128 + 4 * SRB, SRB);
	memcpy(m + 128 + 4 * SRB, c->img + 128 + 3 * SRB, SRB);
	cr_assert_eq(pwrite(c->fd, m, c->len, 0), (ssize_t)c->len);
	expect_file(c, -EBADMSG, 3, true, "swap", 3);
	/* a later version with a good header CRC is -EPROTO, not corruption */
	memcpy(m, c->img, c->len);
	uint32_t v = 2;
	memcpy(m + 8, &v, 4);
	uint32_t crc = de_crc32c(0, m, 124);
	memcpy(m + 124, &crc, 4);
	cr_assert_eq(pwrite(c->fd, m, c->len, 0), (ssize_t)c->len);
	expect_file(c, -EPROTO, 0, false, "version 2", 8);
	/* a header that announces more records than the file has (CRC fixed up) */
	memcpy(m, c->img, c->len);
	uint64_t huge = UINT64_MAX / 3;
	memcpy(m + 48, &huge, 8);
	crc = de_crc32c(0, m, 124);
	memcpy(m + 124, &crc, 4);
	cr_assert_eq(pwrite(c->fd, m, c->len, 0), (ssize_t)c->len);
	struct de_import_report rep;
	cr_assert_eq(de_export_check(c->path, NULL), -EBADMSG);
	cr_assert_eq(de_import(c->dst.t, c->path, 0, NULL, NULL, &rep), -EBADMSG);
	cr_assert_eq(table_keys(c->dst.t), 0);
	cr_assert_eq(de_import(c->dst.t, c->path, DE_IMPORT_SALVAGE, NULL, NULL, &rep), 0);
	cr_assert_eq(rep.imported, SN, "the records that are there all verify");
	cr_assert_eq(rep.dropped, huge - SN);
	check_prefix_and_clear(c, SN, "huge count", 0);
	free(m);
	corpus_free(c);
	rm_tmp();
}

/* ---- ENOSPC on a tiny tmpfs ---- */

Test(export, enospc_leaves_no_partial_file)
{
	mkdir_tmp();
	char *mnt = path_in("mnt");
	cr_assert_eq(mkdir(mnt, 0755), 0);
	if (mount("tmpfs", mnt, "tmpfs", 0, "size=64k")) {
		int e = errno;
		rm_tmp();
		cr_skip_test("mount -t tmpfs -o size=64k: %s (needs root / CAP_SYS_ADMIN)", strerror(e));
	}
	char p[160];
	snprintf(p, sizeof p, "%s/x.dexp", mnt);
	struct de_table_config cfg = big_cfg;
	cfg.dim = 64, cfg.nslots = 0;
	/* first a small export that fits: it must survive the failed one */
	struct tab small = mk_table(cfg), big = mk_table(cfg);
	uint64_t keys[2000];
	for (int i = 0; i < 2000; i++)
		keys[i] = (uint64_t)i + 1;
	fill(small.t, keys, 10);
	fill(big.t, keys, 2000); /* 2000 * 296 bytes: far more than 64 KiB */
	cr_assert_eq(de_export(small.t, p, NULL, NULL, NULL), 0);
	size_t len0;
	unsigned char *before = slurp(p, &len0);
	uint64_t n = 7;
	int r = de_export(big.t, p, NULL, NULL, &n);
	cr_assert_eq(r, -ENOSPC, "export to a full file system gave %d", r);
	cr_assert_eq(n, 0);
	char tmp[170];
	snprintf(tmp, sizeof tmp, "%s.tmp", p);
	cr_assert_eq(access(tmp, F_OK), -1, "the temp file is gone");
	size_t len1;
	unsigned char *after = slurp(p, &len1);
	cr_assert_eq(len1, len0);
	cr_assert_eq(memcmp(before, after, len0), 0, "the old export is untouched");
	struct de_export_info info;
	cr_assert_eq(de_export_check(p, &info), 0);
	cr_assert_eq(info.records, 10);
	/* and with nothing there before, nothing is there after */
	cr_assert_eq(unlink(p), 0);
	cr_assert_eq(de_export(big.t, p, NULL, NULL, NULL), -ENOSPC);
	cr_assert_eq(access(p, F_OK), -1);
	cr_assert_eq(access(tmp, F_OK), -1);
	free(before), free(after);
	rm_table(&big);
	rm_table(&small);
	cr_assert_eq(umount2(mnt, MNT_DETACH), 0);
	rm_tmp();
}

/* ---- the NumPy snippet of uring/README.md ---- */

static char *readme_snippet(void)
{
	const char *root = getenv("DE_SRCDIR") ? getenv("DE_SRCDIR") : DE_SRCDIR;
	char p[512];
	snprintf(p, sizeof p, "%s/uring/README.md", root);
	size_t len;
	unsigned char *md = slurp(p, &len);
	md[len] = 0;
	char *b = strstr((char *)md, "<!-- numpy-snippet-begin -->");
	cr_assert_not_null(b, "snippet markers in %s", p);
	b = strstr(b, "```python\n");
	cr_assert_not_null(b);
	b += strlen("```python\n");
	char *e = strstr(b, "```");
	cr_assert_not_null(e);
	char *s = strndup(b, (size_t)(e - b));
	free(md);
	return s;
}

static void numpy_reads(struct de_table_config cfg)
{
	if (access("/usr/bin/python3", X_OK) ||
	    system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1"))
		cr_skip_test("needs /usr/bin/python3 with numpy (Debian python3-numpy)");
	mkdir_tmp();
	struct tab src = mk_table(cfg);
	const uint32_t rf = cfg.dim * (1 + cfg.nslots);
	uint64_t keys[300];
	for (int i = 0; i < 300; i++)
		keys[i] = mix64((uint64_t)i + 5);
	fill(src.t, keys, 300);
	char *exp = path_in("np.dexp");
	cr_assert_eq(de_export(src.t, exp, NULL, NULL, NULL), 0);
	char *snip = readme_snippet();
	char *py = path_in("read.py");
	FILE *f = fopen(py, "w");
	cr_assert_not_null(f);
	fprintf(f, "%s\n", snip);
	fprintf(f,
		"import sys\n"
		"recs, info = read_export(sys.argv[1])\n"
		"print(len(recs), info['dim'], info['nslots'])\n"
		"for r in recs:\n"
		"    fl = list(r['values']) + (list(r['slots'].ravel()) if info['nslots'] else [])\n"
		"    print(int(r['key']), int(r['last_step']), int(r['freq']), int(r['flags']),\n"
		"          int(r['aux']), ' '.join(float(x).hex() for x in fl))\n");
	fclose(f);
	free(snip);
	char cmd[512];
	snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s %s", py, exp);
	FILE *pp = popen(cmd, "r");
	cr_assert_not_null(pp);
	unsigned long cnt, d, ns;
	cr_assert_eq(fscanf(pp, "%lu %lu %lu", &cnt, &d, &ns), 3);
	cr_assert_eq(cnt, 300);
	cr_assert_eq(d, cfg.dim);
	cr_assert_eq(ns, cfg.nslots);
	float want[36];
	struct de_row_meta wm;
	uint8_t st;
	bool seen[300] = { false };
	for (unsigned long i = 0; i < cnt; i++) {
		unsigned long long key, ls, fr, fl, aux;
		cr_assert_eq(fscanf(pp, "%llu %llu %llu %llu %llu", &key, &ls, &fr, &fl, &aux), 5);
		uint64_t k = key;
		read_rows(src.t, &k, 1, want, &wm, &st);
		cr_assert_eq(st, DE_FOUND, "NumPy read key %llu, which the table lacks", key);
		for (int j = 0; j < 300; j++)
			if (keys[j] == k) {
				cr_assert(!seen[j], "key twice");
				seen[j] = true;
			}
		cr_assert_eq(fr, wm.freq);
		cr_assert_eq(fl, wm.flags);
		cr_assert_eq(aux, wm.aux);
		cr_assert_eq(ls, wm.last_step);
		for (uint32_t j = 0; j < rf; j++) {
			char tok[64];
			cr_assert_eq(fscanf(pp, "%63s", tok), 1);
			cr_assert_eq((float)strtod(tok, NULL), want[j], "key %llu float %u", key, j);
			cr_assert_eq(want[j], gen_val(k, j));
		}
	}
	cr_assert_eq(pclose(pp), 0);
	for (int j = 0; j < 300; j++)
		cr_assert(seen[j], "NumPy saw every key");
	rm_table(&src);
	rm_tmp();
}

Test(numpy, readme_snippet_with_slots)
{
	numpy_reads(small_cfg);
}

Test(numpy, readme_snippet_without_slots)
{
	struct de_table_config c = small_cfg;
	c.nslots = 0, c.dim = 3;
	numpy_reads(c);
}

/* Many 1 MiB chunks: every write buffer reused, reads double-buffered, a salvage that stops
 * in the middle of a later chunk. */
Test(export, many_chunks)
{
	mkdir_tmp();
	struct de_table_config c = big_cfg;
	c.dim = 32, c.nslots = 1; /* 296-byte records: 3542 per chunk */
	const size_t N = 40000;
	struct tab src = mk_table(c), dst = mk_table(c), dst2 = mk_table(c);
	uint64_t *keys = xcalloc(N, 8);
	for (size_t i = 0; i < N; i++)
		keys[i] = mix64(i + 99);
	fill(src.t, keys, N);
	char *p = path_in("big.dexp");
	uint64_t n;
	cr_assert_eq(de_export(src.t, p, NULL, NULL, &n), 0);
	cr_assert_eq(n, N);
	cr_assert_eq(de_export_check(p, NULL), 0);
	struct de_import_report rep;
	cr_assert_eq(de_import(dst.t, p, 0, NULL, NULL, &rep), 0);
	cr_assert_eq(rep.imported, N);
	const uint32_t rf = 64;
	float *ra = xcalloc(N * rf, 4), *rb = xcalloc(N * rf, 4);
	struct de_row_meta *ma = xcalloc(N, sizeof *ma), *mb = xcalloc(N, sizeof *mb);
	uint8_t *st = xcalloc(N, 1);
	read_rows(src.t, keys, N, ra, ma, st);
	read_rows(dst.t, keys, N, rb, mb, st);
	for (size_t i = 0; i < N; i++) {
		cr_assert_eq(st[i], DE_FOUND);
		assert_meta_eq(&ma[i], &mb[i], keys[i]);
	}
	cr_assert_eq(memcmp(ra, rb, N * rf * 4), 0);
	/* cut in the middle of record 20000 (chunk 5): salvage keeps exactly 20000 */
	cr_assert_eq(truncate(p, 128 + 20000 * 296 + 100), 0);
	cr_assert_eq(de_import(dst2.t, p, 0, NULL, NULL, &rep), -EBADMSG);
	cr_assert_eq(table_keys(dst2.t), 0);
	cr_assert_eq(de_import(dst2.t, p, DE_IMPORT_SALVAGE, NULL, NULL, &rep), 0);
	cr_assert_eq(rep.imported, 20000);
	cr_assert_eq(rep.dropped, N - 20000);
	cr_assert_eq(table_keys(dst2.t), 20000);
	free(ra), free(rb), free(ma), free(mb), free(st), free(keys);
	rm_table(&dst2);
	rm_table(&dst);
	rm_table(&src);
	rm_tmp();
}
