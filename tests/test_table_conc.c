/*
 * test_table_conc.c — the table under concurrent writers and lock-free readers.
 *
 * Every row a writer stores encodes its own key and version: row[0] = version (an
 * integer < 2^24, exact in fp32) and row[j] = cval(key, version, j) for j > 0. A reader
 * that gets DE_FOUND checks that the whole row agrees with row[0] for the key it asked
 * for: a torn row (halves of two writes), a row of another key (a recycled row id) or a
 * half-initialized row fails the test. The references are the writers' own records of
 * what they stored, never the table's output.
 *
 * Suite "threads": writers and readers as threads of one process (CI runs it under
 * ThreadSanitizer). Suite "process": a forked child attaches read-only to the same
 * memfds, receives the segments the parent adds through SCM_RIGHTS, and reads while the
 * parent grows the arena.
 *
 * Threads never call cr_assert: they record the first failure, and the main thread
 * asserts after joining them. All loops are bounded by a deadline and by counts.
 */
#ifdef DE_MINI_CRITERION
#include "mini_criterion.h" /* ThreadSanitizer build: see that header */
#else
#include <criterion/criterion.h>
#endif

#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "de_shm.h"
#include "test_util.h"

#define DIM 32u /* 128-byte rows: two cache lines, so a torn copy has room to happen */
#define VMAX ((1u << 24) - 1) /* versions stay exact in fp32 */
#define RUN_S 1.5

/* Key spaces: key(space, idx) = mix64((space << 40) + idx + 1), never 0. */
#define SP_WRITER(w) (1u + (w))
#define SP_SHARED 10u
#define SP_PINNED 20u
#define SP_NEVER 30u

/* ------------------------------------------------------------------------- */
/* Helpers                                                                    */
/* ------------------------------------------------------------------------- */

static uint64_t key_of(unsigned space, uint64_t idx)
{
	return mix64(((uint64_t)space << 40) + idx + 1);
}

/* Inverse of key_of: the index, and the space in *space. */
static uint64_t key_index(uint64_t key, unsigned *space)
{
	uint64_t x = unxorshift(key, 31);
	x *= inv_odd(0x94d049bb133111ebull);
	x = unxorshift(x, 27);
	x *= inv_odd(0xbf58476d1ce4e5b9ull);
	x = unxorshift(x, 30) - 1;
	*space = (unsigned)(x >> 40);
	return x & ((1ull << 40) - 1);
}

/* Value j (>= 1) of the row of key at version ver: 24 random bits, exact in fp32. */
static float cval(uint64_t key, uint32_t ver, uint32_t j)
{
	uint64_t h = mix64(key ^ mix64(((uint64_t)ver << 8 | j) + 0x5eedull));
	return (float)(uint32_t)((h >> 40) & 0xffffff) / 16777216.0f;
}

static void make_row(uint64_t key, uint32_t ver, float *row)
{
	row[0] = (float)ver;
	for (uint32_t j = 1; j < DIM; j++)
		row[j] = cval(key, ver, j);
}

/*
 * A row returned as DE_FOUND: consistent for key? init_ok: a row wholly equal to the
 * initializer constant (0.25, version "0") is also fine. out: *ver (0 for init rows).
 * Returns -1 when consistent, else the index of the first bad float.
 */
static int row_bad(uint64_t key, const float *row, bool init_ok, uint32_t *ver)
{
	if (init_ok && row[0] == 0.25f) {
		for (uint32_t j = 1; j < DIM; j++)
			if (row[j] != 0.25f)
				return (int)j;
		*ver = 0;
		return -1;
	}
	float f = row[0];
	if (!(f >= 1.0f && f <= (float)VMAX) || f != (float)(uint32_t)f)
		return 0;
	uint32_t v = (uint32_t)f;
	for (uint32_t j = 1; j < DIM; j++)
		if (row[j] != cval(key, v, j))
			return (int)j;
	*ver = v;
	return -1;
}

static bool row_zero(const float *row)
{
	for (uint32_t j = 0; j < DIM; j++)
		if (row[j] != 0.0f)
			return false;
	return true;
}

struct failure {
	atomic_int failed;
	char msg[512];
};

static void fail_set(struct failure *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail_set(struct failure *f, const char *fmt, ...)
{
	int exp = 0;
	if (!atomic_compare_exchange_strong(&f->failed, &exp, 1))
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(f->msg, sizeof f->msg, fmt, ap);
	va_end(ap);
}

static bool failed(struct failure *f)
{
	return atomic_load_explicit(&f->failed, memory_order_relaxed) != 0;
}

static de_arena *mk_arena(uint64_t segment_bytes, uint64_t max_segment_bytes, uint64_t reserve)
{
	struct de_arena_config ac = {
		.reserve_bytes = reserve,
		.segment_bytes = segment_bytes,
		.max_segment_bytes = max_segment_bytes,
		.pages = DE_PAGES_SMALL,
		.numa_node = DE_NUMA_NONE,
		.name = "test_table_conc",
	};
	de_arena *a = NULL;
	int rc = de_arena_create(&ac, &a);
	cr_assert_eq(rc, 0, "de_arena_create: %d (%s)", rc, strerror(-rc));
	return a;
}

static de_table *mk_table(de_arena *a, uint32_t nslots)
{
	struct de_table_config tc = {
		.dim = DIM,
		.nslots = nslots,
		.init = DE_INIT_CONSTANT,
		.init_a = 0.25f,
		.slot_init = 0.0f,
		.seed = 2024,
		.seg_buckets = 64,
	};
	de_table *t = NULL;
	int rc = de_table_open(a, &tc, &t);
	cr_assert_eq(rc, 0, "de_table_open: %d (%s)", rc, strerror(-rc));
	return t;
}

/* ------------------------------------------------------------------------- */
/* threads/partitioned_writers                                                */
/* ------------------------------------------------------------------------- */

#define MAXW 4
#define PCAP (1u << 19) /* keys per writer at most */
#define PHOT 32u        /* each writer's hot keys, re-assigned and read most often */
#define BATCH 64

struct pctx {
	de_table *t;
	int nwriters;
	double deadline;
	atomic_bool stop;
	struct failure f;
	_Alignas(64) atomic_uint_least64_t published[MAXW];
	/* results, written by each thread before it returns (read after join) */
	uint64_t inserted[MAXW];
	uint32_t *versions[MAXW];
	uint64_t w_reassigned[MAXW], w_selfreads[MAXW];
	uint64_t r_found[2], r_missing[2], r_must_found[2], r_never[2];
};

struct targ {
	void *c;
	int id;
};

static void *pwriter(void *arg)
{
	struct targ *ta = arg;
	struct pctx *c = ta->c;
	int w = ta->id;
	uint64_t rng = 1000 + (uint64_t)w;
	uint32_t *ver = c->versions[w];
	uint64_t ins = 0, reassigned = 0, selfreads = 0;
	uint64_t keys[BATCH], idx[BATCH];
	float rows[BATCH * DIM];
	uint8_t st[BATCH];
	for (uint64_t it = 0; it < 100000000 && !failed(&c->f); it++) {
		if ((it & 15) == 0 && now_s() > c->deadline)
			break;
		size_t n = 1 + rng_below(&rng, BATCH);
		if (ins < PCAP && (ins < 256 || rng_below(&rng, 2) == 0)) {
			if (n > PCAP - ins)
				n = PCAP - ins;
			for (size_t k = 0; k < n; k++) {
				idx[k] = ins + k;
				keys[k] = key_of(SP_WRITER(w), idx[k]);
				ver[idx[k]] = 1;
				make_row(keys[k], 1, rows + k * DIM);
			}
			int rc = de_table_assign(c->t, keys, n, rows, st, it);
			if (rc != 0) {
				fail_set(&c->f, "writer %d: assign (insert) returned %d", w, rc);
				break;
			}
			for (size_t k = 0; k < n; k++)
				if (st[k] != DE_CREATED) {
					fail_set(&c->f, "writer %d: new key idx %llu status %u", w,
						 (unsigned long long)idx[k], st[k]);
					break;
				}
			ins += n;
			/* release: the keys below ins are in the table; pairs with the
			 * readers' acquire */
			atomic_store_explicit(&c->published[w], ins, memory_order_release);
		} else {
			bool hot = rng_below(&rng, 2) == 0;
			for (size_t k = 0; k < n; k++) {
				idx[k] = rng_below(&rng, hot ? PHOT : ins);
				keys[k] = key_of(SP_WRITER(w), idx[k]);
				if (ver[idx[k]] < VMAX)
					ver[idx[k]]++;
				make_row(keys[k], ver[idx[k]], rows + k * DIM);
			}
			int rc = de_table_assign(c->t, keys, n, rows, st, it);
			if (rc != 0) {
				fail_set(&c->f, "writer %d: assign returned %d", w, rc);
				break;
			}
			for (size_t k = 0; k < n; k++)
				if (st[k] != DE_FOUND) {
					fail_set(&c->f, "writer %d: re-assign of idx %llu status %u", w,
						 (unsigned long long)idx[k], st[k]);
					break;
				}
			reassigned += n;
		}
		/* The writer reads its own writes back exactly. */
		if ((it & 7) == 0) {
			for (size_t k = 0; k < n; k++) {
				idx[k] = rng_below(&rng, ins);
				keys[k] = key_of(SP_WRITER(w), idx[k]);
			}
			int rc = de_table_find(c->t, keys, n, rows, st);
			if (rc != 0) {
				fail_set(&c->f, "writer %d: find returned %d", w, rc);
				break;
			}
			for (size_t k = 0; k < n; k++) {
				uint32_t v = 0;
				int bad = st[k] == DE_FOUND ? row_bad(keys[k], rows + k * DIM, false, &v) : -2;
				if (bad != -1 || v != ver[idx[k]]) {
					fail_set(&c->f, "writer %d: own key idx %llu: status %u, bad float %d, "
						 "version %u, expected %u", w, (unsigned long long)idx[k],
						 st[k], bad, v, ver[idx[k]]);
					break;
				}
			}
			selfreads += n;
		}
	}
	c->inserted[w] = ins;
	c->w_reassigned[w] = reassigned;
	c->w_selfreads[w] = selfreads;
	return NULL;
}

static void *preader(void *arg)
{
	struct targ *ta = arg;
	struct pctx *c = ta->c;
	int r = ta->id;
	uint64_t rng = 5000 + (uint64_t)r;
	uint32_t *last = xcalloc((size_t)c->nwriters * PCAP, sizeof(uint32_t));
	uint64_t found = 0, missing = 0, must = 0, never = 0;
	uint64_t keys[BATCH], idx[BATCH];
	int wof[BATCH];
	bool mustf[BATCH];
	float rows[BATCH * DIM];
	uint8_t st[BATCH];
	double hard_stop = c->deadline + 30.0;
	for (uint64_t it = 0; it < 100000000 && !failed(&c->f); it++) {
		if (atomic_load_explicit(&c->stop, memory_order_relaxed))
			break;
		if ((it & 63) == 0 && now_s() > hard_stop)
			break;
		size_t n = 1 + rng_below(&rng, BATCH);
		for (size_t k = 0; k < n; k++) {
			uint64_t p = rng_below(&rng, 10);
			if (p == 0) { /* a key nobody writes */
				wof[k] = -1;
				idx[k] = rng_next(&rng) & 0xffffff;
				keys[k] = key_of(SP_NEVER, idx[k]);
				mustf[k] = false;
				continue;
			}
			int w = (int)rng_below(&rng, (uint64_t)c->nwriters);
			uint64_t pub = atomic_load_explicit(&c->published[w], memory_order_acquire);
			wof[k] = w;
			idx[k] = p < 5 ? rng_below(&rng, PHOT) : rng_below(&rng, pub + 64);
			if (idx[k] >= PCAP)
				idx[k] = rng_below(&rng, PCAP);
			mustf[k] = idx[k] < pub;
			keys[k] = key_of(SP_WRITER(w), idx[k]);
		}
		int rc = de_table_find(c->t, keys, n, rows, st);
		if (rc != 0) {
			fail_set(&c->f, "reader %d: find returned %d", r, rc);
			break;
		}
		for (size_t k = 0; k < n; k++) {
			const float *row = rows + k * DIM;
			if (wof[k] < 0) {
				never++;
				if (st[k] != DE_MISSING || !row_zero(row))
					fail_set(&c->f, "reader %d: never-written key status %u", r, st[k]);
				continue;
			}
			if (st[k] == DE_FOUND) {
				uint32_t v = 0;
				int bad = row_bad(keys[k], row, false, &v);
				if (bad >= 0) {
					fail_set(&c->f, "reader %d: torn or foreign row for writer %d idx %llu: "
						 "float %d = %a (row[0] %a)", r, wof[k],
						 (unsigned long long)idx[k], bad, (double)row[bad], (double)row[0]);
					break;
				}
				uint32_t *l = &last[(size_t)wof[k] * PCAP + idx[k]];
				if (v < *l) {
					fail_set(&c->f, "reader %d: writer %d idx %llu went back from version "
						 "%u to %u", r, wof[k], (unsigned long long)idx[k], *l, v);
					break;
				}
				*l = v;
				found++;
				must += mustf[k];
			} else if (st[k] == DE_MISSING) {
				if (mustf[k]) {
					fail_set(&c->f, "reader %d: published key writer %d idx %llu missing",
						 r, wof[k], (unsigned long long)idx[k]);
					break;
				}
				if (!row_zero(row))
					fail_set(&c->f, "reader %d: missing key with nonzero row", r);
				missing++;
			} else {
				fail_set(&c->f, "reader %d: status %u from an owner-side find", r, st[k]);
				break;
			}
		}
	}
	free(last);
	c->r_found[r] = found;
	c->r_missing[r] = missing;
	c->r_must_found[r] = must;
	c->r_never[r] = never;
	return NULL;
}

Test(threads, partitioned_writers)
{
	de_arena *a = mk_arena(0, 0, 0);
	de_table *t = mk_table(a, 1);
	struct pctx *c = xcalloc(1, sizeof *c);
	c->t = t;
	c->nwriters = 3;
	for (int w = 0; w < c->nwriters; w++)
		c->versions[w] = xcalloc(PCAP, sizeof(uint32_t));
	c->deadline = now_s() + RUN_S;
	pthread_t wt[MAXW], rt[2];
	struct targ wa[MAXW], ra[2];
	for (int r = 0; r < 2; r++) {
		ra[r] = (struct targ){ c, r };
		cr_assert_eq(pthread_create(&rt[r], NULL, preader, &ra[r]), 0);
	}
	for (int w = 0; w < c->nwriters; w++) {
		wa[w] = (struct targ){ c, w };
		cr_assert_eq(pthread_create(&wt[w], NULL, pwriter, &wa[w]), 0);
	}
	for (int w = 0; w < c->nwriters; w++)
		pthread_join(wt[w], NULL);
	atomic_store(&c->stop, true);
	for (int r = 0; r < 2; r++)
		pthread_join(rt[r], NULL);
	cr_assert_eq(atomic_load(&c->f.failed), 0, "%s", c->f.msg);

	/* Final state: every key with exactly the version its writer stored last. */
	uint64_t total = 0, keys[BATCH];
	float rows[BATCH * DIM];
	uint8_t st[BATCH];
	for (int w = 0; w < c->nwriters; w++) {
		for (uint64_t i = 0; i < c->inserted[w]; i += BATCH) {
			size_t n = c->inserted[w] - i < BATCH ? c->inserted[w] - i : BATCH;
			for (size_t k = 0; k < n; k++)
				keys[k] = key_of(SP_WRITER(w), i + k);
			cr_assert_eq(de_table_find(t, keys, n, rows, st), 0);
			for (size_t k = 0; k < n; k++) {
				uint32_t v = 0;
				int bad = st[k] == DE_FOUND ? row_bad(keys[k], rows + k * DIM, false, &v) : -2;
				if (bad != -1 || v != c->versions[w][i + k])
					cr_assert_fail("final: writer %d idx %llu status %u bad %d version %u, "
						       "expected %u", w, (unsigned long long)(i + k), st[k],
						       bad, v, c->versions[w][i + k]);
			}
		}
		total += c->inserted[w];
	}
	struct de_table_stats s;
	cr_assert_eq(de_table_stats(t, &s), 0);
	cr_assert_eq(s.keys, total, "stats.keys %llu, writers inserted %llu",
		     (unsigned long long)s.keys, (unsigned long long)total);
	cr_assert_gt(s.splits, 0);
	uint64_t found = c->r_found[0] + c->r_found[1], must = c->r_must_found[0] + c->r_must_found[1];
	uint64_t reassigned = 0;
	for (int w = 0; w < c->nwriters; w++)
		reassigned += c->w_reassigned[w];
	cr_log_info("partitioned: inserted %llu (%llu splits, %llu doublings), re-assigned %llu; "
		    "readers found %llu (%llu published), missing %llu, never-written %llu",
		    (unsigned long long)total, (unsigned long long)s.splits,
		    (unsigned long long)s.dir_doublings, (unsigned long long)reassigned,
		    (unsigned long long)found, (unsigned long long)must,
		    (unsigned long long)(c->r_missing[0] + c->r_missing[1]),
		    (unsigned long long)(c->r_never[0] + c->r_never[1]));
	cr_assert_gt(total, 3000);
	cr_assert_gt(reassigned, 1000);
	cr_assert_gt(found, 1000);
	cr_assert_gt(must, 1000);
	cr_assert_gt(c->r_never[0] + c->r_never[1], 100);
	for (int w = 0; w < c->nwriters; w++)
		free(c->versions[w]);
	free(c);
	de_table_close(t);
	de_arena_destroy(a);
}

/* ------------------------------------------------------------------------- */
/* threads/overlapping_writers                                                */
/* ------------------------------------------------------------------------- */

#define OU 400000u /* shared key universe */
#define OHOT 512u

struct octx {
	de_table *t;
	int nwriters;
	double deadline;
	atomic_bool stop;
	struct failure f;
	atomic_uint_least64_t vctr;
	atomic_uchar *written; /* OU flags: set (release) after an assign of the key returned */
	uint64_t w_assigned[MAXW], w_created[MAXW];
	uint64_t r_found[2], r_must[2], r_missing[2];
};

static void *owriter(void *arg)
{
	struct targ *ta = arg;
	struct octx *c = ta->c;
	int w = ta->id;
	uint64_t rng = 77 + (uint64_t)w;
	uint64_t keys[BATCH], idx[BATCH], assigned = 0, created = 0;
	float rows[BATCH * DIM];
	uint8_t st[BATCH];
	for (uint64_t it = 0; it < 100000000 && !failed(&c->f); it++) {
		if ((it & 15) == 0 && now_s() > c->deadline)
			break;
		size_t n = 1 + rng_below(&rng, BATCH);
		for (size_t k = 0; k < n; k++) {
			idx[k] = rng_below(&rng, 2) ? rng_below(&rng, OHOT) : rng_below(&rng, OU);
			keys[k] = key_of(SP_SHARED, idx[k]);
			uint64_t v = atomic_fetch_add_explicit(&c->vctr, 1, memory_order_relaxed);
			make_row(keys[k], (uint32_t)(v % VMAX) + 1, rows + k * DIM);
		}
		int rc = de_table_assign(c->t, keys, n, rows, st, it);
		if (rc != 0) {
			fail_set(&c->f, "writer %d: assign returned %d", w, rc);
			break;
		}
		for (size_t k = 0; k < n; k++) {
			if (st[k] != DE_FOUND && st[k] != DE_CREATED) {
				fail_set(&c->f, "writer %d: assign status %u", w, st[k]);
				break;
			}
			/* A later duplicate in the batch may say CREATED too (contract
			 * ambiguity); count the first occurrence only. */
			bool dup = false;
			for (size_t q = 0; q < k; q++)
				dup |= idx[q] == idx[k];
			created += st[k] == DE_CREATED && !dup;
			atomic_store_explicit(&c->written[idx[k]], 1, memory_order_release);
		}
		assigned += n;
	}
	c->w_assigned[w] = assigned;
	c->w_created[w] = created;
	return NULL;
}

static void *oreader(void *arg)
{
	struct targ *ta = arg;
	struct octx *c = ta->c;
	int r = ta->id;
	uint64_t rng = 900 + (uint64_t)r;
	uint64_t keys[BATCH], idx[BATCH], found = 0, must = 0, missing = 0;
	bool mustf[BATCH], never[BATCH];
	float rows[BATCH * DIM];
	uint8_t st[BATCH];
	double hard_stop = c->deadline + 30.0;
	for (uint64_t it = 0; it < 100000000 && !failed(&c->f); it++) {
		if (atomic_load_explicit(&c->stop, memory_order_relaxed))
			break;
		if ((it & 63) == 0 && now_s() > hard_stop)
			break;
		size_t n = 1 + rng_below(&rng, BATCH);
		for (size_t k = 0; k < n; k++) {
			uint64_t p = rng_below(&rng, 20);
			never[k] = p == 0;
			idx[k] = p < 10 ? rng_below(&rng, OHOT) : rng_below(&rng, OU);
			keys[k] = never[k] ? key_of(SP_NEVER, idx[k]) : key_of(SP_SHARED, idx[k]);
			mustf[k] = !never[k] &&
				   atomic_load_explicit(&c->written[idx[k]], memory_order_acquire);
		}
		int rc = de_table_find(c->t, keys, n, rows, st);
		if (rc != 0) {
			fail_set(&c->f, "reader %d: find returned %d", r, rc);
			break;
		}
		for (size_t k = 0; k < n; k++) {
			const float *row = rows + k * DIM;
			if (st[k] == DE_FOUND && !never[k]) {
				uint32_t v;
				int bad = row_bad(keys[k], row, false, &v);
				if (bad >= 0) {
					fail_set(&c->f, "reader %d: torn row for idx %llu: float %d = %a "
						 "(row[0] %a)", r, (unsigned long long)idx[k], bad,
						 (double)row[bad], (double)row[0]);
					break;
				}
				found++;
				must += mustf[k];
			} else if (st[k] == DE_MISSING && !mustf[k] && row_zero(row)) {
				missing++;
			} else {
				fail_set(&c->f, "reader %d: idx %llu (never=%d, written=%d): status %u",
					 r, (unsigned long long)idx[k], never[k], mustf[k], st[k]);
				break;
			}
		}
	}
	c->r_found[r] = found;
	c->r_must[r] = must;
	c->r_missing[r] = missing;
	return NULL;
}

Test(threads, overlapping_writers)
{
	de_arena *a = mk_arena(0, 0, 0);
	de_table *t = mk_table(a, 0);
	struct octx *c = xcalloc(1, sizeof *c);
	c->t = t;
	c->nwriters = 3;
	c->written = xcalloc(OU, sizeof(atomic_uchar));
	c->deadline = now_s() + RUN_S;
	pthread_t wt[MAXW], rt[2];
	struct targ wa[MAXW], ra[2];
	for (int r = 0; r < 2; r++) {
		ra[r] = (struct targ){ c, r };
		cr_assert_eq(pthread_create(&rt[r], NULL, oreader, &ra[r]), 0);
	}
	for (int w = 0; w < c->nwriters; w++) {
		wa[w] = (struct targ){ c, w };
		cr_assert_eq(pthread_create(&wt[w], NULL, owriter, &wa[w]), 0);
	}
	for (int w = 0; w < c->nwriters; w++)
		pthread_join(wt[w], NULL);
	atomic_store(&c->stop, true);
	for (int r = 0; r < 2; r++)
		pthread_join(rt[r], NULL);
	cr_assert_eq(atomic_load(&c->f.failed), 0, "%s", c->f.msg);

	/* Final: a key is in the table iff some writer assigned it, and its row is whole. */
	uint64_t nwritten = 0, created = 0, assigned = 0, keys[BATCH];
	float rows[BATCH * DIM];
	uint8_t st[BATCH];
	for (uint64_t i = 0; i < OU; i += BATCH) {
		size_t n = OU - i < BATCH ? OU - i : BATCH;
		for (size_t k = 0; k < n; k++)
			keys[k] = key_of(SP_SHARED, i + k);
		cr_assert_eq(de_table_find(t, keys, n, rows, st), 0);
		for (size_t k = 0; k < n; k++) {
			bool wr = atomic_load(&c->written[i + k]);
			uint32_t v;
			nwritten += wr;
			if (wr && (st[k] != DE_FOUND || row_bad(keys[k], rows + k * DIM, false, &v) >= 0))
				cr_assert_fail("final: idx %llu status %u or row bad",
					       (unsigned long long)(i + k), st[k]);
			if (!wr && st[k] != DE_MISSING)
				cr_assert_fail("final: idx %llu never written, status %u",
					       (unsigned long long)(i + k), st[k]);
		}
	}
	for (int w = 0; w < c->nwriters; w++) {
		created += c->w_created[w];
		assigned += c->w_assigned[w];
	}
	struct de_table_stats s;
	cr_assert_eq(de_table_stats(t, &s), 0);
	cr_assert_eq(s.keys, nwritten, "stats.keys %llu, distinct keys written %llu",
		     (unsigned long long)s.keys, (unsigned long long)nwritten);
	cr_assert_eq(created, nwritten, "CREATED reported %llu times for %llu distinct keys",
		     (unsigned long long)created, (unsigned long long)nwritten);
	cr_log_info("overlapping: %llu assigns, %llu distinct keys, %llu splits; readers found "
		    "%llu (%llu known written), missing %llu", (unsigned long long)assigned,
		    (unsigned long long)nwritten, (unsigned long long)s.splits,
		    (unsigned long long)(c->r_found[0] + c->r_found[1]),
		    (unsigned long long)(c->r_must[0] + c->r_must[1]),
		    (unsigned long long)(c->r_missing[0] + c->r_missing[1]));
	cr_assert_gt(s.splits, 0);
	cr_assert_gt(assigned, 10000);
	cr_assert_gt(c->r_found[0] + c->r_found[1], 1000);
	cr_assert_gt(c->r_must[0] + c->r_must[1], 1000);
	cr_assert_gt(c->r_missing[0] + c->r_missing[1], 10);
	free(c->written);
	free(c);
	de_table_close(t);
	de_arena_destroy(a);
}

/* ------------------------------------------------------------------------- */
/* threads/erase_reinsert_churn                                               */
/* ------------------------------------------------------------------------- */

#define CK 8192u     /* keys per churn writer */
#define NPINNED 4096u

struct cctx {
	de_table *t;
	int nwriters;
	double deadline;
	atomic_bool stop;
	struct failure f;
	/* writer-private state, read by the main thread after join */
	uint8_t *present[MAXW];
	uint32_t *ver[MAXW];
	uint32_t pinned_ver[NPINNED]; /* written by writer 0 only */
	uint64_t w_ops[MAXW][5];
	uint64_t r_found[2], r_missing[2], r_scans[2], r_scan_keys[2];
};

struct apply_ctx {
	const uint64_t *keys;
	const uint32_t *newver; /* per i */
	uint32_t dim;
	size_t n, calls, bad;
};

/* apply's fn: writes a whole new (key, version) row in place. */
static void churn_apply_fn(void *ctx, size_t i, float *row, struct de_row_meta *meta)
{
	struct apply_ctx *ac = ctx;
	ac->calls++;
	if (i >= ac->n || meta->key != ac->keys[i]) {
		ac->bad++;
		return;
	}
	make_row(ac->keys[i], ac->newver[i], row);
}

static void *cwriter(void *arg)
{
	struct targ *ta = arg;
	struct cctx *c = ta->c;
	int w = ta->id;
	uint64_t rng = 4242 + (uint64_t)w;
	uint8_t *present = c->present[w];
	uint32_t *ver = c->ver[w];
	uint64_t keys[32], idx[32];
	uint32_t newver[32];
	float rows[32 * DIM];
	uint8_t st[32];
	for (uint64_t it = 0; it < 100000000 && !failed(&c->f); it++) {
		if ((it & 15) == 0 && now_s() > c->deadline)
			break;
		size_t n = 1 + rng_below(&rng, 32);
		bool hot = rng_below(&rng, 2) == 0;
		for (size_t k = 0; k < n; k++) {
			idx[k] = rng_below(&rng, hot ? PHOT : CK);
			keys[k] = key_of(SP_WRITER(w), idx[k]);
		}
		unsigned op = (unsigned)rng_below(&rng, 10);
		int rc = 0;
		if (op < 4) { /* assign: insert or overwrite */
			for (size_t k = 0; k < n; k++) {
				newver[k] = ver[idx[k]] < VMAX ? ver[idx[k]] + 1 : VMAX;
				ver[idx[k]] = newver[k];
				make_row(keys[k], newver[k], rows + k * DIM);
			}
			rc = de_table_assign(c->t, keys, n, rows, st, it);
			for (size_t k = 0; k < n && !rc; k++) {
				/* A duplicate's first occurrence may have created the key. */
				bool dup = false;
				for (size_t q = 0; q < k; q++)
					dup |= idx[q] == idx[k];
				uint8_t exp = present[idx[k]] ? DE_FOUND : DE_CREATED;
				if (st[k] != exp && !(dup && (st[k] == DE_FOUND || st[k] == DE_CREATED)))
					fail_set(&c->f, "writer %d: assign idx %llu status %u, expected %u",
						 w, (unsigned long long)idx[k], st[k], exp);
				present[idx[k]] = 1;
			}
			c->w_ops[w][0]++;
		} else if (op < 7) { /* erase */
			size_t erased = 0, exp = 0;
			rc = de_table_erase(c->t, keys, n, &erased);
			for (size_t k = 0; k < n; k++) {
				exp += present[idx[k]];
				present[idx[k]] = 0;
			}
			if (!rc && erased != exp)
				fail_set(&c->f, "writer %d: erased %zu, expected %zu", w, erased, exp);
			c->w_ops[w][1]++;
		} else if (op < 9) { /* find_or_insert: new keys get the initializer row */
			rc = de_table_find_or_insert(c->t, keys, n, rows, st, it);
			for (size_t k = 0; k < n && !rc; k++) {
				uint32_t v = 0;
				int bad = row_bad(keys[k], rows + k * DIM, true, &v);
				bool dup = false;
				for (size_t q = 0; q < k; q++)
					dup |= idx[q] == idx[k];
				if (!present[idx[k]]) {
					ver[idx[k]] = 0;
					present[idx[k]] = 1;
					if (st[k] != DE_CREATED || bad >= 0 || v != 0)
						fail_set(&c->f, "writer %d: find_or_insert of new idx %llu: "
							 "status %u bad %d", w, (unsigned long long)idx[k],
							 st[k], bad);
				} else if ((st[k] != DE_FOUND && !(dup && st[k] == DE_CREATED)) || bad >= 0 ||
					   v != ver[idx[k]]) {
					fail_set(&c->f, "writer %d: find_or_insert of idx %llu: status %u "
						 "bad %d version %u, expected %u", w,
						 (unsigned long long)idx[k], st[k], bad, v, ver[idx[k]]);
				}
			}
			c->w_ops[w][2]++;
		} else { /* apply without create: rewrite present rows in place */
			struct apply_ctx ac = { .keys = keys, .newver = newver, .dim = DIM, .n = n };
			size_t expcalls = 0;
			for (size_t k = 0; k < n; k++) {
				if (present[idx[k]]) {
					newver[k] = ver[idx[k]] < VMAX ? ver[idx[k]] + 1 : VMAX;
					ver[idx[k]] = newver[k];
					expcalls++;
				} else {
					newver[k] = 1;
				}
			}
			rc = de_table_apply(c->t, keys, n, false, churn_apply_fn, &ac, st, it);
			if (!rc && (ac.bad || ac.calls != expcalls))
				fail_set(&c->f, "writer %d: apply called fn %zu times (expected %zu), "
					 "%zu bad", w, ac.calls, expcalls, ac.bad);
			c->w_ops[w][3]++;
		}
		if (rc)
			fail_set(&c->f, "writer %d: op %u returned %d", w, op, rc);
		/* Writer 0 also keeps the pinned keys moving. */
		if (w == 0 && (it & 3) == 0) {
			for (size_t k = 0; k < 16; k++) {
				uint64_t p = rng_below(&rng, NPINNED);
				keys[k] = key_of(SP_PINNED, p);
				if (c->pinned_ver[p] < VMAX)
					c->pinned_ver[p]++;
				make_row(keys[k], c->pinned_ver[p], rows + k * DIM);
			}
			rc = de_table_assign(c->t, keys, 16, rows, NULL, it);
			if (rc)
				fail_set(&c->f, "writer 0: pinned assign returned %d", rc);
			c->w_ops[w][4]++;
		}
	}
	return NULL;
}

/* Reader 0: finds. Reader 1: finds and whole iterations with values. */
static void *creader(void *arg)
{
	struct targ *ta = arg;
	struct cctx *c = ta->c;
	int r = ta->id;
	uint64_t rng = 31337 + (uint64_t)r;
	uint64_t found = 0, missing = 0, scans = 0, scan_keys = 0;
	uint64_t keys[BATCH];
	unsigned space[BATCH];
	float rows[BATCH * DIM];
	uint8_t st[BATCH];
	uint8_t *seen = xcalloc(NPINNED, 1);
	double hard_stop = c->deadline + 30.0;
	for (uint64_t it = 0; it < 100000000 && !failed(&c->f); it++) {
		if (atomic_load_explicit(&c->stop, memory_order_relaxed))
			break;
		if ((it & 63) == 0 && now_s() > hard_stop)
			break;
		if (r == 1 && (it & 31) == 31) {
			/* Iterate while writers churn: every pinned key exactly once (they are
			 * never erased), every row whole, every key one some writer uses. */
			memset(seen, 0, NPINNED);
			uint64_t cursor = 0;
			bool done = false;
			for (unsigned calls = 0; calls < 1000000 && !failed(&c->f); calls++) {
				size_t n = 0;
				int rc = de_table_iterate(c->t, &cursor, keys, rows, BATCH, &n);
				if (rc != 0) {
					fail_set(&c->f, "iterate returned %d", rc);
					break;
				}
				if (n == 0) {
					done = true;
					break;
				}
				for (size_t k = 0; k < n; k++) {
					unsigned sp;
					uint64_t idx = key_index(keys[k], &sp);
					uint32_t v;
					bool known = sp == SP_PINNED ? idx < NPINNED
						   : sp >= SP_WRITER(0) && sp < SP_WRITER(c->nwriters) && idx < CK;
					if (!known) {
						fail_set(&c->f, "iterate: unknown key %#llx",
							 (unsigned long long)keys[k]);
						break;
					}
					int bad = row_bad(keys[k], rows + k * DIM, sp != SP_PINNED, &v);
					if (bad >= 0) {
						fail_set(&c->f, "iterate: torn row for key %#llx: float %d = %a",
							 (unsigned long long)keys[k], bad,
							 (double)rows[k * DIM + (unsigned)bad]);
						break;
					}
					if (sp == SP_PINNED) {
						if (seen[idx]) {
							fail_set(&c->f, "iterate: pinned key %llu returned twice",
								 (unsigned long long)idx);
							break;
						}
						seen[idx] = 1;
					}
				}
				scan_keys += n;
			}
			if (done) {
				size_t nseen = 0;
				for (size_t p = 0; p < NPINNED; p++)
					nseen += seen[p];
				if (nseen != NPINNED)
					fail_set(&c->f, "iterate: %zu of %u pinned keys returned", nseen,
						 NPINNED);
				scans++;
			}
			continue;
		}
		size_t n = 1 + rng_below(&rng, BATCH);
		for (size_t k = 0; k < n; k++) {
			uint64_t p = rng_below(&rng, 10);
			if (p < 2) {
				space[k] = SP_PINNED;
				keys[k] = key_of(SP_PINNED, rng_below(&rng, NPINNED));
			} else if (p < 3) {
				space[k] = SP_NEVER;
				keys[k] = key_of(SP_NEVER, rng_below(&rng, CK));
			} else {
				space[k] = SP_WRITER(rng_below(&rng, (uint64_t)c->nwriters));
				keys[k] = key_of(space[k], rng_below(&rng, p < 6 ? PHOT : CK));
			}
		}
		int rc = de_table_find(c->t, keys, n, rows, st);
		if (rc != 0) {
			fail_set(&c->f, "reader %d: find returned %d", r, rc);
			break;
		}
		for (size_t k = 0; k < n; k++) {
			const float *row = rows + k * DIM;
			if (st[k] == DE_FOUND && space[k] != SP_NEVER) {
				uint32_t v;
				int bad = row_bad(keys[k], row, space[k] != SP_PINNED, &v);
				if (bad >= 0) {
					fail_set(&c->f, "reader %d: torn or foreign row (space %u key %#llx): "
						 "float %d = %a, row[0] %a", r, space[k],
						 (unsigned long long)keys[k], bad, (double)row[bad],
						 (double)row[0]);
					break;
				}
				found++;
			} else if (st[k] == DE_MISSING && space[k] != SP_PINNED && row_zero(row)) {
				missing++;
			} else {
				fail_set(&c->f, "reader %d: space %u key %#llx: status %u", r, space[k],
					 (unsigned long long)keys[k], st[k]);
				break;
			}
		}
	}
	free(seen);
	c->r_found[r] = found;
	c->r_missing[r] = missing;
	c->r_scans[r] = scans;
	c->r_scan_keys[r] = scan_keys;
	return NULL;
}

Test(threads, erase_reinsert_churn)
{
	de_arena *a = mk_arena(0, 0, 0);
	de_table *t = mk_table(a, 2);
	struct cctx *c = xcalloc(1, sizeof *c);
	c->t = t;
	c->nwriters = 2;
	for (int w = 0; w < c->nwriters; w++) {
		c->present[w] = xcalloc(CK, 1);
		c->ver[w] = xcalloc(CK, sizeof(uint32_t));
	}
	uint64_t keys[BATCH];
	float rows[BATCH * DIM];
	uint8_t st[BATCH];
	for (uint32_t p = 0; p < NPINNED; p += BATCH) {
		for (size_t k = 0; k < BATCH; k++) {
			keys[k] = key_of(SP_PINNED, p + k);
			c->pinned_ver[p + k] = 1;
			make_row(keys[k], 1, rows + k * DIM);
		}
		cr_assert_eq(de_table_assign(t, keys, BATCH, rows, NULL, 0), 0);
	}
	c->deadline = now_s() + RUN_S;
	pthread_t wt[MAXW], rt[2];
	struct targ wa[MAXW], ra[2];
	for (int r = 0; r < 2; r++) {
		ra[r] = (struct targ){ c, r };
		cr_assert_eq(pthread_create(&rt[r], NULL, creader, &ra[r]), 0);
	}
	for (int w = 0; w < c->nwriters; w++) {
		wa[w] = (struct targ){ c, w };
		cr_assert_eq(pthread_create(&wt[w], NULL, cwriter, &wa[w]), 0);
	}
	for (int w = 0; w < c->nwriters; w++)
		pthread_join(wt[w], NULL);
	atomic_store(&c->stop, true);
	for (int r = 0; r < 2; r++)
		pthread_join(rt[r], NULL);
	cr_assert_eq(atomic_load(&c->f.failed), 0, "%s", c->f.msg);

	/* Final state against the writers' records. */
	uint64_t live = NPINNED;
	for (int w = 0; w < c->nwriters; w++) {
		for (uint32_t i = 0; i < CK; i += BATCH) {
			for (size_t k = 0; k < BATCH; k++)
				keys[k] = key_of(SP_WRITER(w), i + k);
			cr_assert_eq(de_table_find(t, keys, BATCH, rows, st), 0);
			for (size_t k = 0; k < BATCH; k++) {
				uint32_t v = 0;
				if (!c->present[w][i + k]) {
					if (st[k] != DE_MISSING)
						cr_assert_fail("final: erased writer %d idx %zu status %u", w,
							       i + k, st[k]);
					continue;
				}
				live++;
				int bad = st[k] == DE_FOUND ? row_bad(keys[k], rows + k * DIM, true, &v) : -2;
				if (bad != -1 || v != c->ver[w][i + k])
					cr_assert_fail("final: writer %d idx %zu status %u bad %d version %u, "
						       "expected %u", w, i + k, st[k], bad, v,
						       c->ver[w][i + k]);
			}
		}
	}
	for (uint32_t p = 0; p < NPINNED; p += BATCH) {
		for (size_t k = 0; k < BATCH; k++)
			keys[k] = key_of(SP_PINNED, p + k);
		cr_assert_eq(de_table_find(t, keys, BATCH, rows, st), 0);
		for (size_t k = 0; k < BATCH; k++) {
			uint32_t v = 0;
			int bad = st[k] == DE_FOUND ? row_bad(keys[k], rows + k * DIM, false, &v) : -2;
			if (bad != -1 || v != c->pinned_ver[p + k])
				cr_assert_fail("final: pinned %zu status %u bad %d version %u, expected %u",
					       p + k, st[k], bad, v, c->pinned_ver[p + k]);
		}
	}
	struct de_table_stats s;
	cr_assert_eq(de_table_stats(t, &s), 0);
	cr_assert_eq(s.keys, live, "stats.keys %llu, live %llu", (unsigned long long)s.keys,
		     (unsigned long long)live);
	cr_assert_eq(s.rows_allocated, s.keys + s.rows_free, "rows_allocated %llu, keys %llu, free %llu",
		     (unsigned long long)s.rows_allocated, (unsigned long long)s.keys,
		     (unsigned long long)s.rows_free);
	cr_log_info("churn: writer ops [assign erase foi apply pinned] w0 %llu %llu %llu %llu %llu, "
		    "w1 %llu %llu %llu %llu; readers found %llu, missing %llu; %llu full scans "
		    "(%llu keys); live %llu, rows allocated %llu",
		    (unsigned long long)c->w_ops[0][0], (unsigned long long)c->w_ops[0][1],
		    (unsigned long long)c->w_ops[0][2], (unsigned long long)c->w_ops[0][3],
		    (unsigned long long)c->w_ops[0][4], (unsigned long long)c->w_ops[1][0],
		    (unsigned long long)c->w_ops[1][1], (unsigned long long)c->w_ops[1][2],
		    (unsigned long long)c->w_ops[1][3],
		    (unsigned long long)(c->r_found[0] + c->r_found[1]),
		    (unsigned long long)(c->r_missing[0] + c->r_missing[1]),
		    (unsigned long long)c->r_scans[1], (unsigned long long)c->r_scan_keys[1],
		    (unsigned long long)live, (unsigned long long)s.rows_allocated);
	for (int w = 0; w < c->nwriters; w++)
		for (int k = 0; k < 4; k++)
			cr_assert_gt(c->w_ops[w][k], 10, "writer %d op %d ran %llu times", w, k,
				     (unsigned long long)c->w_ops[w][k]);
	cr_assert_gt(c->r_found[0] + c->r_found[1], 1000);
	cr_assert_gt(c->r_missing[0] + c->r_missing[1], 100);
	cr_assert_gt(c->r_scans[1], 0, "no full iteration finished during the churn");
	for (int w = 0; w < c->nwriters; w++) {
		free(c->present[w]);
		free(c->ver[w]);
	}
	free(c);
	de_table_close(t);
	de_arena_destroy(a);
}

/* ------------------------------------------------------------------------- */
/* suite process: a read-only reader in another process                      */
/* ------------------------------------------------------------------------- */

#define XCAP (2u << 20) /* keys the parent may insert */
#define XMAXSEG 250u    /* the parent stops inserting past this many arena segments */

/* Shared with the child (MAP_SHARED | MAP_ANONYMOUS before fork). */
struct xshared {
	atomic_uint_least64_t published; /* keys [0, published) are in the table */
	atomic_int parent_done;          /* release: versions[] final; the child's acquire */
	atomic_int child_ready;
	atomic_uint_least64_t found, missing, retry, checked, final_checked, fds_received;
	atomic_uint_least64_t phase_a_found, phase_a_retry;
	atomic_int rofs_ok;
	char msg[512];
	uint32_t versions[XCAP];
};

struct hookctx {
	int sock;
	unsigned sent, failed;
	int last_err;
};

static int send_fd(int sock, uint32_t tag, int fd)
{
	char cbuf[CMSG_SPACE(sizeof(int))];
	memset(cbuf, 0, sizeof cbuf);
	struct iovec iov = { .iov_base = &tag, .iov_len = sizeof tag };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
			      .msg_controllen = sizeof cbuf };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof fd);
	return sendmsg(sock, &msg, MSG_NOSIGNAL | MSG_DONTWAIT) == (ssize_t)sizeof tag ? 0 : -errno;
}

/* One fd and its tag; waits at most timeout_ms. Returns the fd or a negative errno. */
static int recv_fd(int sock, uint32_t *tag, int timeout_ms)
{
	struct pollfd pfd = { .fd = sock, .events = POLLIN };
	int pr = poll(&pfd, 1, timeout_ms);
	if (pr <= 0)
		return pr == 0 ? -ETIMEDOUT : -errno;
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { .iov_base = tag, .iov_len = sizeof *tag };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
			      .msg_controllen = sizeof cbuf };
	ssize_t r = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
	if (r != (ssize_t)sizeof *tag)
		return r < 0 ? -errno : -EBADMSG;
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
	if (!cm || cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS ||
	    cm->cmsg_len != CMSG_LEN(sizeof(int)))
		return -EBADMSG;
	int fd;
	memcpy(&fd, CMSG_DATA(cm), sizeof fd);
	return fd;
}

/* Owner side: runs under the arena's allocation lock, before the segment is used. */
static void grow_hook(void *ctx, de_arena *a, unsigned seg)
{
	struct hookctx *h = ctx;
	int fd = de_arena_segment_fd(a, seg, true);
	int err = fd < 0 ? fd : send_fd(h->sock, seg, fd);
	if (fd >= 0)
		close(fd);
	if (err) {
		h->failed++;
		h->last_err = err;
	} else {
		h->sent++;
	}
}

struct srcctx {
	int sock;
	int pending[DE_ARENA_MAX_SEGMENTS];
	uint64_t received;
};

/* Reader side fd source: the segment's fd from the socket (others are kept for later). */
static int fd_source(void *ctx, unsigned seg)
{
	struct srcctx *s = ctx;
	if (seg >= DE_ARENA_MAX_SEGMENTS)
		return -EINVAL;
	if (s->pending[seg] >= 0) {
		int fd = s->pending[seg];
		s->pending[seg] = -1;
		return fd;
	}
	/* The owner publishes a segment before its hook sends the fd: wait, boundedly. */
	double until = now_s() + 2.0;
	while (now_s() < until) {
		uint32_t tag = UINT32_MAX;
		int fd = recv_fd(s->sock, &tag, 100);
		if (fd == -ETIMEDOUT)
			continue;
		if (fd < 0)
			return fd;
		s->received++;
		if (tag == seg)
			return fd;
		if (tag < DE_ARENA_MAX_SEGMENTS && s->pending[tag] < 0)
			s->pending[tag] = fd;
		else
			close(fd);
	}
	return -EAGAIN;
}

#define XB 64

/* Reads until the deadline or until the parent is done; 0 or 1 (message in sh->msg). */
static int child_read(struct xshared *sh, de_table *t, uint32_t *last, double until,
		      bool stop_when_done, bool phase_a)
{
	uint64_t rng = phase_a ? 11 : 12;
	uint64_t keys[XB], idx[XB];
	bool mustf[XB], never[XB];
	float rows[XB * DIM];
	uint8_t st[XB];
	uint64_t found = 0, missing = 0, retry = 0;
	for (uint64_t it = 0; it < 100000000; it++) {
		if ((it & 15) == 0 && now_s() > until)
			break;
		if (stop_when_done && atomic_load_explicit(&sh->parent_done, memory_order_acquire))
			break;
		uint64_t pub = atomic_load_explicit(&sh->published, memory_order_acquire);
		size_t n = 1 + rng_below(&rng, XB);
		for (size_t k = 0; k < n; k++) {
			uint64_t p = rng_below(&rng, 10);
			never[k] = p == 0;
			idx[k] = p < 4 ? rng_below(&rng, PHOT) : rng_below(&rng, pub + 256);
			if (idx[k] >= XCAP)
				idx[k] = rng_below(&rng, XCAP);
			mustf[k] = !never[k] && idx[k] < pub;
			keys[k] = never[k] ? key_of(SP_NEVER, idx[k]) : key_of(SP_WRITER(0), idx[k]);
		}
		int rc = de_table_find(t, keys, n, rows, st);
		if (rc != 0) {
			snprintf(sh->msg, sizeof sh->msg, "child: find returned %d", rc);
			return 1;
		}
		for (size_t k = 0; k < n; k++) {
			const float *row = rows + k * DIM;
			if (st[k] == DE_RETRY) {
				retry++;
				continue;
			}
			if (st[k] == DE_FOUND && !never[k]) {
				uint32_t v = 0;
				int bad = row_bad(keys[k], row, false, &v);
				if (bad >= 0) {
					snprintf(sh->msg, sizeof sh->msg,
						 "child: torn row for idx %llu: float %d = %a (row[0] %a)",
						 (unsigned long long)idx[k], bad, (double)row[bad],
						 (double)row[0]);
					return 1;
				}
				if (v < last[idx[k]]) {
					snprintf(sh->msg, sizeof sh->msg,
						 "child: idx %llu went back from version %u to %u",
						 (unsigned long long)idx[k], last[idx[k]], v);
					return 1;
				}
				last[idx[k]] = v;
				found++;
			} else if (st[k] == DE_MISSING && !mustf[k] && row_zero(row)) {
				missing++;
			} else {
				snprintf(sh->msg, sizeof sh->msg,
					 "child: idx %llu (never=%d, published=%d): status %u",
					 (unsigned long long)idx[k], never[k], mustf[k], st[k]);
				return 1;
			}
		}
	}
	if (phase_a) {
		atomic_fetch_add(&sh->phase_a_found, found);
		atomic_fetch_add(&sh->phase_a_retry, retry);
	}
	atomic_fetch_add(&sh->found, found);
	atomic_fetch_add(&sh->missing, missing);
	atomic_fetch_add(&sh->retry, retry);
	atomic_fetch_add(&sh->checked, found + missing);
	return 0;
}

static int child_main(struct xshared *sh, int sock, const int *fds, unsigned nfds)
{
	de_arena *a = NULL;
	de_table *t = NULL;
	int rc = de_arena_attach_ro(fds, nfds, &a);
	if (rc) {
		snprintf(sh->msg, sizeof sh->msg, "child: de_arena_attach_ro: %d", rc);
		return 1;
	}
	for (unsigned i = 0; i < nfds; i++)
		close(fds[i]);
	rc = de_table_attach_ro(a, &t);
	if (rc) {
		snprintf(sh->msg, sizeof sh->msg, "child: de_table_attach_ro: %d", rc);
		return 1;
	}
	/* Writes through the read-only attach are refused. */
	uint64_t key = key_of(SP_WRITER(0), 0);
	float row[DIM];
	uint8_t st1;
	uint32_t st1_ver = 1;
	size_t erased = 0;
	make_row(key, 1000, row);
	int e1 = de_table_assign(t, &key, 1, row, &st1, 1);
	int e2 = de_table_find_or_insert(t, &key, 1, row, &st1, 1);
	int e3 = de_table_erase(t, &key, 1, &erased);
	struct apply_ctx dummy = { .keys = &key, .newver = &st1_ver, .dim = DIM, .n = 1 };
	int e4 = de_table_apply(t, &key, 1, true, churn_apply_fn, &dummy, &st1, 1);
	if (e1 != -EROFS || e2 != -EROFS || e3 != -EROFS || e4 != -EROFS) {
		snprintf(sh->msg, sizeof sh->msg,
			 "child: writes on a read-only table returned assign %d, find_or_insert %d, "
			 "erase %d, apply %d (expected -EROFS = %d)", e1, e2, e3, e4, -EROFS);
		return 1;
	}
	atomic_store(&sh->rofs_ok, 1);

	uint32_t *last = calloc(XCAP, sizeof(uint32_t));
	struct srcctx *src = calloc(1, sizeof *src);
	if (!last || !src) {
		snprintf(sh->msg, sizeof sh->msg, "child: out of memory");
		return 1;
	}
	src->sock = sock;
	for (unsigned i = 0; i < DE_ARENA_MAX_SEGMENTS; i++)
		src->pending[i] = -1;
	atomic_store_explicit(&sh->child_ready, 1, memory_order_release);

	/* Phase A: no fd source yet; keys in segments not mapped here read as DE_RETRY. */
	double t0 = now_s();
	if (child_read(sh, t, last, t0 + 0.4, false, true))
		return 1;
	/* Phase B: with the fd source, until the parent is done (bounded). */
	de_table_set_fd_source(t, fd_source, src);
	if (child_read(sh, t, last, t0 + 20.0, true, false))
		return 1;
	if (!atomic_load_explicit(&sh->parent_done, memory_order_acquire)) {
		snprintf(sh->msg, sizeof sh->msg, "child: parent not done after 20 s");
		return 1;
	}
	/* Phase C: no writer any more: every published key found, with its last version. */
	uint64_t pub = atomic_load_explicit(&sh->published, memory_order_acquire);
	uint64_t rng = 99, checked = 0;
	uint64_t keys[XB], idx[XB];
	float rows[XB * DIM];
	uint8_t st[XB];
	uint64_t want = pub < 300000 ? pub : 300000;
	for (uint64_t i = 0; i < want; i += XB) {
		size_t n = want - i < XB ? want - i : XB;
		for (size_t k = 0; k < n; k++) {
			idx[k] = pub <= 300000 ? i + k : rng_below(&rng, pub);
			keys[k] = key_of(SP_WRITER(0), idx[k]);
		}
		rc = de_table_find(t, keys, n, rows, st);
		if (rc) {
			snprintf(sh->msg, sizeof sh->msg, "child: final find returned %d", rc);
			return 1;
		}
		for (size_t k = 0; k < n; k++) {
			uint32_t v = 0;
			int bad = st[k] == DE_FOUND ? row_bad(keys[k], rows + k * DIM, false, &v) : -2;
			if (bad != -1 || v != sh->versions[idx[k]]) {
				snprintf(sh->msg, sizeof sh->msg,
					 "child: final idx %llu: status %u, bad float %d, version %u, "
					 "expected %u", (unsigned long long)idx[k], st[k], bad, v,
					 sh->versions[idx[k]]);
				return 1;
			}
		}
		checked += n;
	}
	atomic_store(&sh->final_checked, checked);
	atomic_store(&sh->fds_received, src->received);
	de_table_close(t);
	de_arena_destroy(a);
	for (unsigned i = 0; i < DE_ARENA_MAX_SEGMENTS; i++)
		if (src->pending[i] >= 0)
			close(src->pending[i]);
	free(src);
	free(last);
	return 0;
}

/* Parent: assign keys [0, n) of writer space 0 at the versions in sh, and publish. */
static void parent_insert(de_table *t, struct xshared *sh, uint64_t from, size_t n, uint64_t step)
{
	uint64_t keys[XB];
	float rows[XB * DIM];
	uint8_t st[XB];
	for (size_t k = 0; k < n; k++) {
		keys[k] = key_of(SP_WRITER(0), from + k);
		sh->versions[from + k] = 1;
		make_row(keys[k], 1, rows + k * DIM);
	}
	int rc = de_table_assign(t, keys, n, rows, st, step);
	if (rc != 0) {
		struct de_table_stats ts = { 0 };
		de_table_stats(t, &ts);
		cr_assert_fail("parent: assign returned %d (%s) at key %" PRIu64 " of this run; "
			       "%" PRIu64 " keys, %" PRIu64 " index refusals, %" PRIu64 " index bytes",
			       rc, strerror(-rc), from, ts.keys, ts.index_refusals, ts.index_bytes);
	}
	for (size_t k = 0; k < n; k++)
		if (st[k] != DE_CREATED)
			cr_assert_fail("parent: new key %llu status %u", (unsigned long long)(from + k),
				       st[k]);
	/* release: the keys are in the table; pairs with the child's acquire */
	atomic_store_explicit(&sh->published, from + n, memory_order_release);
}

Test(process, ro_reader_during_growth)
{
	struct xshared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
				  -1, 0);
	cr_assert_neq(sh, MAP_FAILED);
	int sv[2];
	cr_assert_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0, "socketpair: %s",
		     strerror(errno));
	int sndbuf = 8 << 20;
	(void)setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);

	de_arena *a = mk_arena(2u << 20, 4u << 20, 4ull << 30);
	de_table *t = mk_table(a, 0);
	uint64_t ins = 0;
	for (; ins < 20000; ins += XB)
		parent_insert(t, sh, ins, XB, 1);

	struct hookctx hc = { .sock = sv[0] };
	de_arena_set_grow_hook(a, grow_hook, &hc);
	unsigned nseg0 = de_arena_nsegments(a);
	int fds[DE_ARENA_MAX_SEGMENTS];
	for (unsigned i = 0; i < nseg0; i++) {
		fds[i] = de_arena_segment_fd(a, i, true);
		cr_assert_geq(fds[i], 0, "de_arena_segment_fd(%u): %d", i, fds[i]);
	}
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		close(sv[0]);
		int code = child_main(sh, sv[1], fds, nseg0);
		if (code)
			fprintf(stderr, "%s\n", sh->msg);
		_exit(code);
	}
	close(sv[1]);
	for (unsigned i = 0; i < nseg0; i++)
		close(fds[i]);

	/* Wait (boundedly) until the child is attached, then write while it reads. */
	double until = now_s() + 10.0;
	int status = 0;
	pid_t wr = 0;
	while (!atomic_load_explicit(&sh->child_ready, memory_order_acquire) && now_s() < until &&
	       (wr = waitpid(pid, &status, WNOHANG)) == 0) {
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
	}
	if (wr == pid)
		cr_assert_fail("child exited early (status %#x): %s", status, sh->msg);

	uint64_t rng = 5, reassigned = 0;
	double deadline = now_s() + RUN_S;
	for (uint64_t it = 2; it < 100000000; it++) {
		if ((it & 15) == 0 && now_s() > deadline)
			break;
		if (ins + XB <= XCAP && de_arena_nsegments(a) < XMAXSEG && rng_below(&rng, 4) != 0) {
			parent_insert(t, sh, ins, XB, it);
			ins += XB;
			continue;
		}
		uint64_t keys[XB], idx[XB];
		float rows[XB * DIM];
		bool hot = rng_below(&rng, 2) == 0;
		for (size_t k = 0; k < XB; k++) {
			idx[k] = rng_below(&rng, hot ? PHOT : ins);
			keys[k] = key_of(SP_WRITER(0), idx[k]);
			if (sh->versions[idx[k]] < VMAX)
				sh->versions[idx[k]]++;
			make_row(keys[k], sh->versions[idx[k]], rows + k * DIM);
		}
		int rc = de_table_assign(t, keys, XB, rows, NULL, it);
		if (rc != 0)
			cr_assert_fail("parent: re-assign returned %d", rc);
		reassigned += XB;
	}
	/* release: versions[] is final; pairs with the child's acquire */
	atomic_store_explicit(&sh->parent_done, 1, memory_order_release);

	until = now_s() + 60.0;
	while ((wr = waitpid(pid, &status, WNOHANG)) == 0 && now_s() < until) {
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
	}
	if (wr == 0) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		cr_assert_fail("child did not finish within 60 s after the parent");
	}
	unsigned nseg1 = de_arena_nsegments(a);
	cr_log_info("process: parent inserted %llu keys, re-assigned %llu; arena segments %u -> %u, "
		    "hook sent %u fds (%u failed); child: found %llu, missing %llu, retry %llu "
		    "(phase A without fd source: found %llu, retry %llu), fds received %llu, final "
		    "check %llu keys",
		    (unsigned long long)ins, (unsigned long long)reassigned, nseg0, nseg1, hc.sent,
		    hc.failed, (unsigned long long)atomic_load(&sh->found),
		    (unsigned long long)atomic_load(&sh->missing),
		    (unsigned long long)atomic_load(&sh->retry),
		    (unsigned long long)atomic_load(&sh->phase_a_found),
		    (unsigned long long)atomic_load(&sh->phase_a_retry),
		    (unsigned long long)atomic_load(&sh->fds_received),
		    (unsigned long long)atomic_load(&sh->final_checked));
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child failed (status %#x): %s",
		  status, sh->msg);
	cr_assert_eq(atomic_load(&sh->rofs_ok), 1, "the child did not check -EROFS");
	cr_assert_eq(hc.failed, 0, "grow hook: %u sends failed (last %d)", hc.failed, hc.last_err);
	cr_assert_eq(hc.sent, nseg1 - nseg0);
	cr_assert_gt(nseg1, nseg0 + 4, "the arena did not grow while the child read");
	cr_assert_gt(atomic_load(&sh->checked), 10000, "the child checked too few rows");
	cr_assert_gt(atomic_load(&sh->found), 5000);
	cr_assert_gt(atomic_load(&sh->final_checked), 10000);
	cr_assert_gt(atomic_load(&sh->fds_received), 0, "the child never used the fd source");

	close(sv[0]);
	de_table_close(t);
	de_arena_destroy(a);
	munmap(sh, sizeof *sh);
}

#define RO_N (64u * 782u)

/* In-process fd source: a read-only fd of the owner's segment. */
static int owner_fd_source(void *ctx, unsigned segment)
{
	return de_arena_segment_fd(ctx, segment, true);
}

/* Read-only attach in the same process: reads agree with the owner, writes are refused. */
Test(process, ro_attach_reads_and_refuses_writes)
{
	de_arena *a = mk_arena(2u << 20, 4u << 20, 1ull << 30);
	de_table *t = mk_table(a, 1);
	uint64_t keys[XB];
	float rows[XB * DIM], out[XB * DIM];
	uint8_t st[XB];
	for (uint64_t i = 0; i < RO_N; i += XB) {
		for (size_t k = 0; k < XB; k++) {
			keys[k] = key_of(SP_WRITER(1), i + k);
			make_row(keys[k], 7, rows + k * DIM);
		}
		cr_assert_eq(de_table_assign(t, keys, XB, rows, NULL, 1), 0);
	}
	unsigned nseg = de_arena_nsegments(a);
	cr_assert_gt(nseg, 1);
	int fds[DE_ARENA_MAX_SEGMENTS];
	for (unsigned i = 0; i < nseg; i++)
		fds[i] = de_arena_segment_fd(a, i, true);
	de_arena *ra = NULL;
	de_table *rt = NULL;
	cr_assert_eq(de_arena_attach_ro(fds, nseg, &ra), 0);
	for (unsigned i = 0; i < nseg; i++)
		close(fds[i]);
	cr_assert(de_arena_readonly(ra));
	cr_assert_eq(de_table_attach_ro(ra, &rt), 0);
	for (uint64_t i = 0; i < RO_N + 5056; i += XB) {
		for (size_t k = 0; k < XB; k++)
			keys[k] = key_of(SP_WRITER(1), i + k);
		cr_assert_eq(de_table_find(rt, keys, XB, out, st), 0);
		for (size_t k = 0; k < XB; k++) {
			uint32_t v = 0;
			if (i + k < RO_N) {
				if (st[k] != DE_FOUND || row_bad(keys[k], out + k * DIM, false, &v) >= 0 ||
				    v != 7)
					cr_assert_fail("ro find of idx %llu: status %u",
						       (unsigned long long)(i + k), st[k]);
			} else if (st[k] != DE_MISSING || !row_zero(out + k * DIM)) {
				cr_assert_fail("ro find of absent idx %llu: status %u",
					       (unsigned long long)(i + k), st[k]);
			}
		}
	}
	struct de_table_stats s;
	cr_assert_eq(de_table_stats(rt, &s), 0);
	cr_assert_eq(s.keys, RO_N);
	size_t erased = 0;
	make_row(keys[0], 9, rows);
	cr_assert_eq(de_table_assign(rt, keys, 1, rows, st, 2), -EROFS);
	cr_assert_eq(de_table_find_or_insert(rt, keys, 1, out, st, 2), -EROFS);
	cr_assert_eq(de_table_erase(rt, keys, 1, &erased), -EROFS);
	uint32_t nv = 1;
	struct apply_ctx dummy = { .keys = keys, .newver = &nv, .dim = DIM, .n = 1 };
	cr_assert_eq(de_table_apply(rt, keys, 1, false, churn_apply_fn, &dummy, st, 2), -EROFS);
	uint64_t k0 = 0;
	cr_assert_eq(de_arena_alloc(ra, 64, 64, &k0), -EROFS);

	/* The owner grows past what the reader mapped: without a fd source the new keys
	 * read as DE_RETRY (never DE_MISSING); with one, all are found. */
	const uint64_t more = 64u * 3000u;
	for (uint64_t i = RO_N; i < RO_N + more; i += XB) {
		for (size_t k = 0; k < XB; k++) {
			keys[k] = key_of(SP_WRITER(1), i + k);
			make_row(keys[k], 8, rows + k * DIM);
		}
		cr_assert_eq(de_table_assign(t, keys, XB, rows, NULL, 3), 0);
	}
	cr_assert_gt(de_arena_nsegments(a), nseg, "the owner's arena did not grow");
	uint64_t retry = 0, found = 0;
	for (int pass = 0; pass < 2; pass++) {
		if (pass == 1)
			de_table_set_fd_source(rt, owner_fd_source, a);
		for (uint64_t i = RO_N; i < RO_N + more; i += XB) {
			for (size_t k = 0; k < XB; k++)
				keys[k] = key_of(SP_WRITER(1), i + k);
			cr_assert_eq(de_table_find(rt, keys, XB, out, st), 0);
			for (size_t k = 0; k < XB; k++) {
				uint32_t v = 0;
				if (st[k] == DE_RETRY && pass == 0 && row_zero(out + k * DIM)) {
					retry++;
					continue;
				}
				if (st[k] != DE_FOUND || row_bad(keys[k], out + k * DIM, false, &v) >= 0 ||
				    v != 8)
					cr_assert_fail("pass %d: ro find of new idx %llu: status %u", pass,
						       (unsigned long long)(i + k), st[k]);
				found += pass == 1;
			}
		}
	}
	cr_assert_gt(retry, 0, "no DE_RETRY for keys in segments the reader had not mapped");
	cr_assert_eq(found, more);
	cr_assert_eq(de_arena_nsegments(ra), de_arena_nsegments(a));
	de_table_close(rt);
	de_arena_destroy(ra);
	de_table_close(t);
	de_arena_destroy(a);
}
