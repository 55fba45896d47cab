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

Test(capacity, full_arena_is_enospc_and_keeps_what_it_has)
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
	cr_assert_eq(err, -ENOSPC, "the arena's reservation fills up: %d", err);
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

/* ---- row-id access, conditional erase, ranged iteration (eviction and sampling) ---- */

#define ROWS_N 3000u

static de_table *rows_table(de_arena **a, uint64_t *keys)
{
	*a = mk_arena(0);
	de_table *t = NULL;
	cr_assert_eq(de_table_open(*a, &good, &t), 0);
	for (uint32_t i = 0; i < ROWS_N; i++)
		keys[i] = 0x9e3779b97f4a7c15ull * (i + 1);
	float *v = calloc((size_t)ROWS_N * good.dim, 4);
	cr_assert_eq(de_table_find_or_insert(t, keys, ROWS_N, v, NULL, 7), 0);
	free(v);
	return t;
}

static int key_index(const uint64_t *keys, uint64_t k)
{
	for (uint32_t i = 0; i < ROWS_N; i++)
		if (keys[i] == k)
			return (int)i;
	return -1;
}

Test(rows, peek_sees_exactly_the_live_keys)
{
	static uint64_t keys[ROWS_N];
	de_arena *a;
	de_table *t = rows_table(&a, keys);
	/* erase every third key: the reference is "i % 3 != 0" */
	static uint64_t gone[ROWS_N];
	size_t ng = 0, erased = 0;
	for (uint32_t i = 0; i < ROWS_N; i += 3)
		gone[ng++] = keys[i];
	cr_assert_eq(de_table_erase(t, gone, ng, &erased), 0);
	cr_assert_eq(erased, ng);

	uint64_t lim = de_table_row_limit(t);
	cr_assert_geq(lim, ROWS_N);
	static uint8_t seen[ROWS_N];
	memset(seen, 0, sizeof seen);
	size_t live = 0;
	float v[8], w[8];
	for (uint64_t r = 0; r < lim; r++) {
		struct de_row_meta m;
		int err = de_table_peek(t, r, &m, v);
		if (err) {
			cr_assert_eq(err, -ENOENT);
			continue;
		}
		int i = key_index(keys, m.key);
		cr_assert_geq(i, 0, "peek returned a key never inserted");
		cr_assert_neq(i % 3, 0, "peek returned an erased key");
		cr_assert_eq(seen[i], 0, "two rows for one key");
		seen[i] = 1;
		cr_assert_eq(m.last_step, 7);
		cr_assert_eq(m.freq, 1);
		uint8_t st;
		cr_assert_eq(de_table_find(t, &m.key, 1, w, &st), 0);
		cr_assert_eq(memcmp(v, w, sizeof v), 0);
		live++;
	}
	cr_assert_eq(live, ROWS_N - ng);
	struct de_row_meta m;
	cr_assert_eq(de_table_peek(t, lim, &m, NULL), -ERANGE);
	cr_assert_eq(de_table_peek(t, UINT64_MAX, &m, NULL), -ERANGE);
	cr_assert_eq(de_table_peek(t, 0, NULL, NULL), -EINVAL);
	cr_assert_eq(de_table_peek(NULL, 0, &m, NULL), -EINVAL);
	cr_assert_eq(de_table_row_limit(NULL), 0);
	de_table_close(t);
	de_arena_destroy(a);
}

Test(rows, init_row_is_what_a_create_stores)
{
	de_arena *a = mk_arena(0);
	de_table *t = NULL;
	cr_assert_eq(de_table_open(a, &good, &t), 0);
	float before[8], after[8];
	uint64_t k = 12345;
	cr_assert_eq(de_table_init_row(t, k, before), 0);
	struct de_table_stats s;
	cr_assert_eq(de_table_stats(t, &s), 0);
	cr_assert_eq(s.keys, 0, "init_row must not store");
	for (int i = 0; i < 8; i++)
		cr_assert(before[i] >= good.init_a && before[i] < good.init_b);
	cr_assert_eq(de_table_find_or_insert(t, &k, 1, after, NULL, 1), 0);
	cr_assert_eq(memcmp(before, after, sizeof before), 0);
	cr_assert_eq(de_table_init_row(t, 0, before), 0);
	for (int i = 0; i < 8; i++)
		cr_assert_eq(before[i], 0.0f);
	cr_assert_eq(de_table_init_row(t, 1, NULL), -EINVAL);
	cr_assert_eq(de_table_init_row(NULL, 1, before), -EINVAL);
	de_table_close(t);
	de_arena_destroy(a);
}

struct erase_pick {
	const uint64_t *keys;
	unsigned calls;
	bool bad_row;
};

static bool erase_odd(void *ctx, size_t i, const float *row, const struct de_row_meta *m)
{
	struct erase_pick *p = ctx;
	p->calls++;
	if (m->key != p->keys[i])
		p->bad_row = true;
	/* slots follow the values and hold slot_init */
	for (uint32_t j = 0; j < good.dim * good.nslots; j++)
		if (row[good.dim + j] != good.slot_init)
			p->bad_row = true;
	return i % 2 == 1;
}

Test(rows, erase_if_erases_what_fn_accepts)
{
	static uint64_t keys[ROWS_N];
	de_arena *a;
	de_table *t = rows_table(&a, keys);
	uint64_t ask[ROWS_N + 1];
	memcpy(ask, keys, sizeof keys);
	ask[ROWS_N] = 0; /* key 0 is skipped, never passed to fn */
	struct erase_pick p = { ask, 0, false };
	size_t erased = 0;
	cr_assert_eq(de_table_erase_if(t, ask, ROWS_N + 1, erase_odd, &p, &erased), 0);
	cr_assert_eq(p.calls, ROWS_N);
	cr_assert_not(p.bad_row);
	cr_assert_eq(erased, ROWS_N / 2);
	uint8_t *st = malloc(ROWS_N);
	float *v = malloc((size_t)ROWS_N * good.dim * 4);
	cr_assert_eq(de_table_find(t, keys, ROWS_N, v, st), 0);
	for (uint32_t i = 0; i < ROWS_N; i++)
		cr_assert_eq(st[i], i % 2 ? DE_MISSING : DE_FOUND, "key %u", i);
	/* a second pass finds only the survivors, and fn is not called for missing keys */
	p.calls = 0;
	cr_assert_eq(de_table_erase_if(t, keys, ROWS_N, erase_odd, &p, &erased), 0);
	cr_assert_eq(p.calls, ROWS_N / 2);
	cr_assert_eq(erased, 0); /* survivors sit at even i */
	free(st);
	free(v);
	de_table_close(t);
	de_arena_destroy(a);
}

Test(rows, iterate_ranges_partition_the_table)
{
	static uint64_t keys[ROWS_N];
	de_arena *a;
	de_table *t = rows_table(&a, keys);
	uint64_t lim = de_table_row_limit(t);
	uint64_t cut[4] = { 0, lim / 3, 2 * lim / 3, UINT64_MAX };
	static uint8_t seen[ROWS_N];
	memset(seen, 0, sizeof seen);
	size_t total = 0;
	for (int r = 0; r < 3; r++) {
		uint64_t cur = cut[r], got[64];
		float vals[64 * 8];
		size_t n;
		do {
			cr_assert_eq(de_table_iterate_range(t, &cur, cut[r + 1], got, vals, 64, &n), 0);
			cr_assert_leq(cur, cut[r + 1] < lim ? cut[r + 1] : lim);
			for (size_t i = 0; i < n; i++) {
				int k = key_index(keys, got[i]);
				cr_assert_geq(k, 0);
				cr_assert_eq(seen[k], 0, "key returned by two ranges");
				seen[k] = 1;
				total++;
			}
		} while (n);
	}
	cr_assert_eq(total, ROWS_N);
	de_table_close(t);
	de_arena_destroy(a);
}

/* Hogwild apply: single-threaded it must step rows exactly as the locked apply does
 * (a second table stepped with de_table_apply is the reference), create missing keys,
 * and skip key 0. */
static void add_i(void *ctx, size_t i, float *row, struct de_row_meta *m)
{
	const float *g = ctx;
	for (uint32_t j = 0; j < good.dim * (1 + good.nslots); j++)
		row[j] += g[i] + (float)j;
	m->aux++;
}

Test(rows, hogwild_single_thread_matches_locked_apply)
{
	de_arena *a1 = mk_arena(0), *a2 = mk_arena(0);
	de_table *t1 = NULL, *t2 = NULL;
	cr_assert_eq(de_table_open(a1, &good, &t1), 0);
	cr_assert_eq(de_table_open(a2, &good, &t2), 0);
	uint64_t keys[6] = { 5, 9, 0, 5, 11, 9 };
	float g[6] = { 1, 2, 3, 4, 5, 6 };
	uint8_t s1[6], s2[6];
	for (int round = 0; round < 3; round++) {
		cr_assert_eq(de_table_apply(t1, keys, 6, true, add_i, g, s1, 10 + round), 0);
		cr_assert_eq(de_table_apply_hogwild(t2, keys, 6, add_i, g, s2, 10 + round), 0);
		cr_assert_eq(memcmp(s1, s2, sizeof s1), 0, "round %d", round);
	}
	for (int i = 0; i < 6; i++) {
		if (!keys[i])
			continue;
		float r1[24], r2[24];
		struct de_row_meta m1, m2;
		cr_assert_eq(de_table_find(t1, &keys[i], 1, r1, NULL), 0);
		cr_assert_eq(de_table_find(t2, &keys[i], 1, r2, NULL), 0);
		cr_assert_eq(memcmp(r1, r2, good.dim * 4), 0, "key %lu", (unsigned long)keys[i]);
		uint64_t lim1 = de_table_row_limit(t1), lim2 = de_table_row_limit(t2);
		cr_assert_eq(lim1, lim2);
		for (uint64_t r = 0; r < lim1; r++) {
			cr_assert_eq(de_table_peek(t1, r, &m1, NULL), 0);
			cr_assert_eq(de_table_peek(t2, r, &m2, NULL), 0);
			cr_assert_eq(m1.key, m2.key);
			cr_assert_eq(m1.aux, m2.aux);
			cr_assert_eq(m1.aux, m1.key == 11 ? 3u : 6u); /* steps of duplicates */
			cr_assert_eq(m1.last_step, 12);
			cr_assert_eq(m2.last_step, 12);
		}
	}
	cr_assert_eq(de_table_apply_hogwild(t2, keys, 6, NULL, g, NULL, 1), -EINVAL);
	cr_assert_eq(de_table_apply_hogwild(NULL, keys, 6, add_i, g, NULL, 1), -EINVAL);
	de_table_close(t1);
	de_table_close(t2);
	de_arena_destroy(a1);
	de_arena_destroy(a2);
}
