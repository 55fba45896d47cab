/*
 * test_table_errors.c — bad input to the table gets a clear negative errno, never a
 * crash: invalid configs, config mismatch on reopen, foreign and corrupt tables (a
 * read-only reader handed a corrupted arena), writes through a read-only attach, key 0,
 * and a full arena. The expected values come from the contract in de_shm.h; the
 * corruption tests poke the private layout documented at the top of shm/table.c.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <math.h>
#include <string.h>

#include "de_shm.h"

static de_arena *mk_arena(uint64_t reserve)
{
	struct de_arena_config ac = { .reserve_bytes = reserve, .segment_bytes = 4 << 20,
				      .max_segment_bytes = 8 << 20, .pages = DE_PAGES_SMALL,
				      .numa_node = DE_NUMA_NONE };
	de_arena *a = NULL;
	cr_assert_eq(de_arena_create(&ac, &a), 0);
	return a;
}

static const struct de_table_config good = {
	.dim = 8, .nslots = 2, .init = DE_INIT_UNIFORM, .init_a = -0.5f, .init_b = 0.5f,
	.slot_init = 0.1f, .seed = 42, .seg_buckets = 64,
};

static int open_with(struct de_table_config c)
{
	de_arena *a = mk_arena(0);
	de_table *t = NULL;
	int err = de_table_open(a, &c, &t);
	if (!err)
		cr_assert_not_null(t);
	else
		cr_assert_null(t);
	de_table_close(t);
	de_arena_destroy(a);
	return err;
}

Test(config, rejects_bad_values)
{
	struct de_table_config c = good;
	cr_assert_eq(open_with(c), 0);
	c = good, c.dim = 0;
	cr_assert_eq(open_with(c), -EINVAL);
	c = good, c.dim = DE_MAX_DIM + 1;
	cr_assert_eq(open_with(c), -EINVAL);
	c = good, c.dim = DE_MAX_DIM, c.nslots = 0;
	cr_assert_eq(open_with(c), 0);
	c = good, c.nslots = DE_MAX_SLOTS + 1;
	cr_assert_eq(open_with(c), -EINVAL);
	c = good, c.seg_buckets = 63;
	cr_assert_eq(open_with(c), -EINVAL);
	c = good, c.seg_buckets = 32;
	cr_assert_eq(open_with(c), -EINVAL);
	c = good, c.seg_buckets = 100;
	cr_assert_eq(open_with(c), -EINVAL);
	c = good, c.seg_buckets = 131072;
	cr_assert_eq(open_with(c), -EINVAL);
	c = good, c.init_a = 1.0f, c.init_b = 1.0f;
	cr_assert_eq(open_with(c), -EINVAL, "uniform needs a < b");
	c = good, c.init = DE_INIT_TRUNC_NORMAL, c.init_b = 0;
	cr_assert_eq(open_with(c), -EINVAL, "truncated normal needs stddev > 0");
	c = good, c.init = DE_INIT_CONSTANT, c.init_a = NAN;
	cr_assert_eq(open_with(c), -EINVAL);
	c = good, c.slot_init = INFINITY;
	cr_assert_eq(open_with(c), -EINVAL);
	c = good, c.init = (enum de_init)17;
	cr_assert_eq(open_with(c), -EINVAL);
}

Test(config, null_arguments)
{
	de_arena *a = mk_arena(0);
	de_table *t;
	cr_assert_eq(de_table_open(NULL, &good, &t), -EINVAL);
	cr_assert_eq(de_table_open(a, NULL, &t), -EINVAL);
	cr_assert_eq(de_table_open(a, &good, NULL), -EINVAL);
	cr_assert_eq(de_table_open(a, &good, &t), 0);
	uint64_t k = 5;
	float v[8];
	cr_assert_eq(de_table_find(t, NULL, 1, v, NULL), -EINVAL);
	cr_assert_eq(de_table_find(t, &k, 1, NULL, NULL), -EINVAL);
	cr_assert_eq(de_table_find(t, NULL, 0, NULL, NULL), 0, "an empty batch is fine");
	cr_assert_eq(de_table_assign(t, &k, 1, NULL, NULL, 0), -EINVAL);
	cr_assert_eq(de_table_apply(t, &k, 1, true, NULL, NULL, NULL, 0), -EINVAL);
	uint64_t cur = 0;
	size_t n;
	cr_assert_eq(de_table_iterate(t, &cur, &k, NULL, 0, &n), -EINVAL);
	cr_assert_eq(de_table_stats(t, NULL), -EINVAL);
	de_table_close(t);
	de_arena_destroy(a);
}

Test(config, reopen_same_shares_different_is_eexist)
{
	de_arena *a = mk_arena(0);
	de_table *t1, *t2, *t3;
	cr_assert_eq(de_table_open(a, &good, &t1), 0);
	uint64_t keys[3] = { 11, 22, 33 };
	float vals[24];
	for (int i = 0; i < 24; i++)
		vals[i] = (float)i;
	cr_assert_eq(de_table_assign(t1, keys, 3, vals, NULL, 1), 0);
	cr_assert_eq(de_table_open(a, &good, &t2), 0, "same config attaches");
	float out[24];
	uint8_t st[3];
	cr_assert_eq(de_table_find(t2, keys, 3, out, st), 0);
	cr_assert_eq(memcmp(out, vals, sizeof vals), 0);
	struct de_table_config c = good;
	c.seed = 43;
	cr_assert_eq(de_table_open(a, &c, &t3), -EEXIST);
	c = good, c.dim = 9;
	cr_assert_eq(de_table_open(a, &c, &t3), -EEXIST);
	c = good, c.init_b = 0.25f;
	cr_assert_eq(de_table_open(a, &c, &t3), -EEXIST);
	c = good, c.nslots = 1;
	cr_assert_eq(de_table_open(a, &c, &t3), -EEXIST);
	c = good, c.seg_buckets = 0; /* the default, 1024, differs from 64 */
	cr_assert_eq(de_table_open(a, &c, &t3), -EEXIST);
	de_table_close(t2);
	de_table_close(t1);
	de_arena_destroy(a);
}

/* Read-only attach of every segment of a. */
static de_arena *ro_view(de_arena *a)
{
	int fds[DE_ARENA_MAX_SEGMENTS];
	unsigned n = de_arena_nsegments(a);
	for (unsigned i = 0; i < n; i++)
		cr_assert_geq(fds[i] = de_arena_segment_fd(a, i, true), 0);
	de_arena *ra = NULL;
	cr_assert_eq(de_arena_attach_ro(fds, n, &ra), 0);
	for (unsigned i = 0; i < n; i++)
		close(fds[i]);
	return ra;
}

Test(foreign, no_table_or_garbage_root)
{
	de_arena *a = mk_arena(0);
	de_arena *ra = ro_view(a);
	de_table *t;
	cr_assert_eq(de_table_attach_ro(ra, &t), -EBADMSG, "no table in the arena");
	cr_assert_eq(de_table_open(ra, &good, &t), -EBADMSG, "cannot create read-only");
	de_arena_destroy(ra);

	uint64_t off;
	cr_assert_eq(de_arena_alloc(a, 4096, 64, &off), 0);
	unsigned char *p = de_arena_at(a, off);
	for (int i = 0; i < 4096; i++)
		p[i] = (unsigned char)(i * 131 + 7);
	cr_assert_eq(de_arena_set_root(a, off), 0);
	cr_assert_eq(de_table_open(a, &good, &t), -EBADMSG, "garbage at the root");
	cr_assert_eq(de_arena_set_root(a, 1ull << 40), 0);
	cr_assert_eq(de_table_open(a, &good, &t), -EBADMSG, "root outside the arena");
	cr_assert_eq(de_arena_set_root(a, off + 3), 0);
	cr_assert_eq(de_table_open(a, &good, &t), -EBADMSG, "misaligned root");
	de_arena_destroy(a);
}

Test(foreign, version_and_fields)
{
	de_arena *a = mk_arena(0);
	de_table *t;
	cr_assert_eq(de_table_open(a, &good, &t), 0);
	de_table_close(t);
	unsigned char *h = de_arena_at(a, de_arena_root(a));
	unsigned char save[4096];
	memcpy(save, h, sizeof save);
	h[8] = 2; /* version */
	cr_assert_eq(de_table_open(a, &good, &t), -EPROTO);
	memcpy(h, save, sizeof save);
	h[16] = 0; /* dim = 0 */
	cr_assert_eq(de_table_open(a, &good, &t), -EBADMSG);
	memcpy(h, save, sizeof save);
	h[56] ^= 0x40; /* row_stride disagrees with dim */
	cr_assert_eq(de_table_open(a, &good, &t), -EBADMSG);
	memcpy(h, save, sizeof save);
	memset(h + 72, 0xff, 8); /* chunk table outside the arena */
	cr_assert_eq(de_table_open(a, &good, &t), -EBADMSG);
	memcpy(h, save, sizeof save);
	cr_assert_eq(de_table_open(a, &good, &t), 0, "restored header attaches again");
	de_table_close(t);
	de_arena_destroy(a);
}

/* A reader handed a corrupted index or row store reports DE_RETRY / -EBADMSG. */
Test(foreign, corrupt_shared_memory_never_crashes_a_reader)
{
	de_arena *a = mk_arena(0);
	de_table *t;
	cr_assert_eq(de_table_open(a, &good, &t), 0);
	enum { N = 2000 };
	static uint64_t keys[N];
	static float out[N * 8];
	static uint8_t st[N];
	for (int i = 0; i < N; i++)
		keys[i] = 1000 + (uint64_t)i * 7919;
	cr_assert_eq(de_table_find_or_insert(t, keys, N, out, NULL, 1), 0);
	de_arena *ra = ro_view(a);
	de_table *rt;
	cr_assert_eq(de_table_attach_ro(ra, &rt), 0);
	cr_assert_eq(de_table_find(rt, keys, N, out, st), 0);
	for (int i = 0; i < N; i++)
		cr_assert_eq(st[i], DE_FOUND);

	char *h = de_arena_at(a, de_arena_root(a));
	uint64_t *dirw = (uint64_t *)(h + 128), dsave = *dirw;
	uint64_t *ctab = (uint64_t *)de_arena_at(a, *(uint64_t *)(h + 72)), csave = ctab[0];
	struct de_table_stats s;

	*dirw = (1ull << 44) | (dsave & 63); /* directory outside the arena */
	cr_assert_eq(de_table_find(rt, keys, N, out, st), 0);
	for (int i = 0; i < N; i++)
		cr_assert_eq(st[i], DE_RETRY);
	cr_assert_eq(de_table_stats(rt, &s), -EBADMSG);
	*dirw = (dsave & ~63ull) | 60; /* depth beyond the maximum */
	cr_assert_eq(de_table_find(rt, keys, 16, out, st), 0);
	cr_assert_eq(st[0], DE_RETRY);
	cr_assert_eq(de_table_stats(rt, &s), -EBADMSG);
	*dirw = dsave;

	ctab[0] = (1ull << 45) + 64; /* first row chunk outside the arena */
	cr_assert_eq(de_table_find(rt, keys, N, out, st), 0);
	int retry = 0;
	for (int i = 0; i < N; i++)
		retry += st[i] == DE_RETRY;
	cr_assert_gt(retry, 0, "rows of the corrupt chunk cannot be read");
	ctab[0] = csave;

	/* a segment whose buckets are garbage: whatever is read must fail validation or
	 * read a real row; it must not crash */
	uint64_t *dir = (uint64_t *)de_arena_at(a, dsave & ~63ull);
	char *seg = de_arena_at(a, dir[0]);
	static char ssave[64 + 64 * 64];
	memcpy(ssave, seg, sizeof ssave);
	for (size_t i = 64; i < sizeof ssave; i++)
		seg[i] = (char)(i * 37);
	cr_assert_eq(de_table_find(rt, keys, N, out, st), 0);
	memcpy(seg, ssave, sizeof ssave);

	cr_assert_eq(de_table_find(rt, keys, N, out, st), 0);
	for (int i = 0; i < N; i++)
		cr_assert_eq(st[i], DE_FOUND, "restored memory reads again");
	de_table_close(rt);
	de_arena_destroy(ra);
	de_table_close(t);
	de_arena_destroy(a);
}

static void noop(void *ctx, size_t i, float *row, struct de_row_meta *m)
{
	(void)ctx, (void)i, (void)row, (void)m;
}

Test(readonly, writes_are_erofs)
{
	de_arena *a = mk_arena(0);
	de_table *t, *rt;
	cr_assert_eq(de_table_open(a, &good, &t), 0);
	de_arena *ra = ro_view(a);
	cr_assert_eq(de_table_attach_ro(ra, &rt), 0);
	uint64_t k = 9;
	float v[8] = { 0 };
	size_t n;
	cr_assert_eq(de_table_assign(rt, &k, 1, v, NULL, 0), -EROFS);
	cr_assert_eq(de_table_find_or_insert(rt, &k, 1, v, NULL, 0), -EROFS);
	cr_assert_eq(de_table_erase(rt, &k, 1, &n), -EROFS);
	cr_assert_eq(de_table_apply(rt, &k, 1, true, noop, NULL, NULL, 0), -EROFS);
	uint64_t off;
	cr_assert_eq(de_arena_alloc(ra, 64, 64, &off), -EROFS);
	de_table_close(rt);
	de_arena_destroy(ra);
	de_table_close(t);
	de_arena_destroy(a);
}

Test(keys, key_zero_is_no_feature)
{
	de_arena *a = mk_arena(0);
	de_table *t;
	cr_assert_eq(de_table_open(a, &good, &t), 0);
	uint64_t k[2] = { 0, 5 };
	float out[16], ones[16];
	uint8_t st[2];
	for (int i = 0; i < 16; i++)
		out[i] = 9, ones[i] = 1;
	cr_assert_eq(de_table_find_or_insert(t, k, 2, out, st, 1), 0);
	cr_assert_eq(st[0], DE_FOUND);
	cr_assert_eq(st[1], DE_CREATED);
	for (int i = 0; i < 8; i++)
		cr_assert_eq(out[i], 0.0f);
	cr_assert_eq(de_table_assign(t, k, 2, ones, NULL, 2), 0);
	cr_assert_eq(de_table_find(t, k, 1, out, st), 0);
	cr_assert_eq(st[0], DE_FOUND);
	for (int i = 0; i < 8; i++)
		cr_assert_eq(out[i], 0.0f, "key 0 stays zeros after an assign");
	size_t n = 99;
	cr_assert_eq(de_table_erase(t, k, 1, &n), 0);
	cr_assert_eq(n, 0);
	struct de_table_stats s;
	cr_assert_eq(de_table_stats(t, &s), 0);
	cr_assert_eq(s.keys, 1, "only key 5 is stored");
	cr_assert_eq(de_key_from_string(7, "", 0), 0);
	de_table_close(t);
	de_arena_destroy(a);
}

Test(capacity, full_arena_is_enomem_and_keeps_what_it_has)
{
	/* 16 MiB of virtual space: fills after some tens of thousands of dim-64 rows */
	de_arena *a = mk_arena(16 << 20);
	struct de_table_config c = good;
	c.dim = 64;
	c.nslots = 0;
	de_table *t;
	cr_assert_eq(de_table_open(a, &c, &t), 0);
	static uint64_t keys[1 << 17];
	static float out[256 * 64];
	uint8_t st[256];
	size_t done = 0;
	int err = 0;
	for (size_t i = 0; i < (1 << 17) && !err; i += 256) {
		for (size_t k = 0; k < 256; k++)
			keys[i + k] = i + k + 1;
		err = de_table_find_or_insert(t, keys + i, 256, out, st, 1);
		if (!err)
			done = i + 256;
	}
	cr_assert_eq(err, -ENOMEM, "the arena fills up: %d", err);
	cr_assert_gt(done, 1000);
	for (size_t i = 0; i < done; i += 256) {
		cr_assert_eq(de_table_find(t, keys + i, 256, out, st), 0);
		for (size_t k = 0; k < 256; k++)
			cr_assert_eq(st[k], DE_FOUND, "key %zu was acknowledged", i + k);
	}
	struct de_table_stats s;
	cr_assert_eq(de_table_stats(t, &s), 0);
	cr_assert_geq(s.keys, done);
	de_table_close(t);
	de_arena_destroy(a);
}

Test(config, check_gives_reasons_and_normalizes)
{
	char why[160] = "";
	struct de_table_config c = good, out;
	c.dim = 0;
	cr_assert_eq(de_table_config_check(&c, &out, why, sizeof why), -EINVAL);
	cr_assert_not_null(strstr(why, "dim 0"), "%s", why);
	c = good, c.init_a = 2, c.init_b = 1;
	cr_assert_eq(de_table_config_check(&c, &out, why, sizeof why), -EINVAL);
	cr_assert_not_null(strstr(why, "init_a < init_b"), "%s", why);
	cr_assert_eq(de_table_config_check(&c, &out, NULL, 0), -EINVAL, "why may be NULL");
	c = good, c.init = DE_INIT_CONSTANT, c.init_b = 7, c.seg_buckets = 0;
	cr_assert_eq(de_table_config_check(&c, &c, why, sizeof why), 0, "in place");
	cr_assert_eq(c.init_b, 0.0f, "an unused parameter is zeroed");
	cr_assert_eq(c.seg_buckets, 1024u, "the default is filled in");
}
