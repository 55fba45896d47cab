/*
 * test_faults.c — every arena allocation the table makes can fail, and nothing that was
 * acknowledged is lost: for n = 1, 2, ... the nth allocation fails once (the hook
 * de_arena_fail_alloc, compiled only with -Dfault_injection=true). The failure lands in
 * table creation, a row chunk, a segment split, or a directory doubling in the middle of
 * a split (whose undo path runs). Either the call that hit it returns -ENOMEM, or the
 * table absorbs it (a split made early, at a load threshold, is simply retried later);
 * either way the table stays consistent and, once the allocation succeeds again, the same
 * work completes.
 * The reference is the test's own record of acknowledged keys and values.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "de_shm.h"

#define DIM 4
#define NKEYS 6000
#define BATCH 200

static uint64_t key_of(uint64_t i) { return i * 0x9e3779b97f4a7c15ull + 12345; }

static de_arena *arena(void)
{
	struct de_arena_config ac = { .segment_bytes = 2 << 20, .max_segment_bytes = 2 << 20,
				      .pages = DE_PAGES_SMALL, .numa_node = DE_NUMA_NONE };
	de_arena *a;
	cr_assert_eq(de_arena_create(&ac, &a), 0);
	return a;
}

/* seg_buckets 64: thousands of keys mean dozens of splits, doublings and chunks */
static const struct de_table_config cfg = { .dim = DIM, .nslots = 1, .init = DE_INIT_CONSTANT,
					    .init_a = 0.5f, .slot_init = -1, .seed = 9,
					    .seg_buckets = 64 };

/* Check every key below `upto` reads back as expected, and that the table holds between
 * upto and upto + extra keys (a failed batch may have inserted part of itself), each seen
 * once by iteration. */
static void verify(de_table *t, size_t upto, size_t extra, const uint32_t *ver)
{
	static float out[BATCH * DIM];
	static uint64_t keys[BATCH];
	uint8_t st[BATCH];
	for (size_t i = 0; i < upto; i += BATCH) {
		size_t n = upto - i < BATCH ? upto - i : BATCH;
		for (size_t k = 0; k < n; k++)
			keys[k] = key_of(i + k);
		cr_assert_eq(de_table_find(t, keys, n, out, st), 0);
		for (size_t k = 0; k < n; k++) {
			cr_assert_eq(st[k], DE_FOUND, "key %zu lost", i + k);
			float want = ver[i + k] ? (float)ver[i + k] : 0.5f;
			for (int j = 0; j < DIM; j++)
				cr_assert_eq(out[k * DIM + j], want, "key %zu value", i + k);
		}
	}
	struct de_table_stats s;
	cr_assert_eq(de_table_stats(t, &s), 0);
	cr_assert_geq(s.keys, upto);
	cr_assert_leq(s.keys, upto + extra);
	uint64_t cur = 0, seen = 0;
	size_t n;
	while (de_table_iterate(t, &cur, keys, NULL, BATCH, &n) == 0 && n)
		seen += n;
	cr_assert_eq(seen, s.keys, "iteration sees every key once");
}

Test(faults, every_allocation_can_fail_once)
{
	int hits = 0, in_open = 0, absorbed = 0;
	long total = 0;
	for (long nth = 1;; nth++) {
		de_arena *a = arena();
		de_table *t = NULL;
		de_arena_fail_alloc(a, nth);
		int err = de_table_open(a, &cfg, &t);
		if (err) {
			cr_assert_eq(err, -ENOMEM);
			in_open++;
			cr_assert_eq(de_table_open(a, &cfg, &t), 0, "open works once memory is back");
		}
		uint32_t *ver = calloc(NKEYS, sizeof *ver);
		static uint64_t keys[BATCH];
		static float vals[BATCH * DIM], out[BATCH * DIM];
		uint8_t st[BATCH];
		bool hit = err != 0;
		for (size_t i = 0; i < NKEYS; i += BATCH) {
			size_t n = NKEYS - i < BATCH ? NKEYS - i : BATCH;
			for (size_t k = 0; k < n; k++)
				keys[k] = key_of(i + k);
			/* odd batches create through assign, even ones through find_or_insert */
			bool assign = (i / BATCH) & 1;
			for (size_t k = 0; k < n; k++)
				for (int j = 0; j < DIM; j++)
					vals[k * DIM + j] = (float)(i + k + 7);
			int r = assign ? de_table_assign(t, keys, n, vals, st, 1)
				       : de_table_find_or_insert(t, keys, n, out, st, 1);
			if (r) {
				cr_assert_eq(r, -ENOMEM, "batch at %zu: %d", i, r);
				cr_assert_not(hit, "the fault fires once");
				hit = true;
				/* what was acknowledged before the failure is there; the batch
				 * completes when repeated */
				verify(t, i, n, ver);
				r = assign ? de_table_assign(t, keys, n, vals, st, 1)
					   : de_table_find_or_insert(t, keys, n, out, st, 1);
				cr_assert_eq(r, 0, "the repeated batch at %zu succeeds", i);
			}
			for (size_t k = 0; k < n; k++)
				ver[i + k] = assign ? (uint32_t)(i + k + 7) : 0;
		}
		verify(t, NKEYS, 0, ver);
		struct de_table_stats s;
		cr_assert_eq(de_table_stats(t, &s), 0);
		free(ver);
		bool fired = de_arena_fail_alloc(a, 0) == 0;
		de_table_close(t);
		de_arena_destroy(a);
		if (!fired) { /* nth is past the last allocation this workload makes */
			cr_assert_not(hit);
			total = nth - 1;
			cr_assert_gt(s.splits, 20);
			cr_assert_gt(s.dir_doublings, 3);
			break;
		}
		if (hit)
			hits++;
		else
			absorbed++;
	}
	cr_log_info("faults: %ld allocations, each failed once: %d returned -ENOMEM (%d in open), "
		    "%d absorbed", total, hits, in_open, absorbed);
	cr_assert_gt(total, 40, "the workload allocates often enough to matter");
	cr_assert_eq(hits + absorbed, total);
	cr_assert_gt(absorbed, 0, "early splits absorb a failed allocation");
	cr_assert_gt(hits, in_open, "failures inside batches surface as -ENOMEM");
	cr_assert_eq(in_open, 4, "header, chunk table, directory, first segment");
}

/* A kernel that refuses F_SEAL_FUTURE_WRITE would leave a segment clients could write
 * through their fds: the arena refuses the segment (-ENOTSUP) instead, adds nothing, and
 * grows normally once sealing works. */
Test(faults, segment_without_future_write_seal_is_refused)
{
	de_arena *a = arena();
	unsigned n0 = de_arena_nsegments(a);
	uint64_t used = de_arena_used_bytes(a), off;
	de_arena_fail_seal(a);
	cr_expect_eq(de_arena_alloc(a, 3 << 20, 64, &off), -ENOTSUP);
	cr_expect_eq(de_arena_nsegments(a), n0, "a segment without the seal was added");
	cr_expect_eq(de_arena_used_bytes(a), used);
	cr_assert_eq(de_arena_alloc(a, 3 << 20, 64, &off), 0, "the next segment seals");
	cr_expect_eq(de_arena_nsegments(a), n0 + 1);
	memset(de_arena_at(a, off), 1, 3 << 20);
	de_arena_destroy(a);
}
