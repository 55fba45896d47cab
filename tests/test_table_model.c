/*
 * test_table_model.c — the table checked against independent references.
 *
 * What this file checks, and against what:
 *   - suite model: long randomized streams of batched operations (find, find_or_insert,
 *                assign, erase, apply with and without create, iterate) run against the
 *                table and, in lock step, against a small reference map written here
 *                (open addressing, uint64 key -> version). Every returned row, status and
 *                count is compared with what the reference says, never with the table's own
 *                earlier output. A row is either the initializer's constant (version 0) or a
 *                pattern this file computes from (key, version, j).
 *   - suite growth: growth from empty to 10M keys; the reference is the key generator itself
 *                (key = mix(i + K), invertible) plus one bit per key.
 *   - suite init:  initializer statistics computed from first principles (moments, histogram,
 *                the variance of a normal truncated at +-2 sigma), determinism per
 *                (seed, key), zeros, slot_init.
 *   - suite keys:  de_key_from_string against XXH3_64bits_withSeed, its documented definition.
 *
 * Hot loops use CHECK (assert only on failure) because Criterion reports every passing
 * cr_assert through its pipe, which would dominate the run time.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <xxhash.h>

#include "de_shm.h"
#include "test_util.h"

#define CHECK(cond, ...)                          \
	do {                                      \
		if (!(cond))                      \
			cr_assert_fail(__VA_ARGS__); \
	} while (0)

#define MAX_BATCH 512u
#define KEY_SALT 0x6a09e667f3bcc908ull /* keeps generated keys away from 0 */

/* ------------------------------------------------------------------------- */
/* Helpers: mixing, rng, patterns, arenas                                     */
/* ------------------------------------------------------------------------- */

static uint64_t unmix64(uint64_t x)
{
	x = unxorshift(x, 31);
	x *= inv_odd(0x94d049bb133111ebull);
	x = unxorshift(x, 27);
	x *= inv_odd(0xbf58476d1ce4e5b9ull);
	x = unxorshift(x, 30);
	return x;
}

/* Value j of a row assigned by this file at version ver (ver >= 1). Exact in fp32. */
static float pattern(uint64_t key, uint32_t ver, uint32_t j)
{
	uint64_t h = mix64(key ^ mix64(((uint64_t)ver << 32 | j) + 0x1234567ull));
	return (float)(int32_t)((h >> 40) & 0xffffff) / 16777216.0f - 0.5f;
}

static de_arena *mk_arena(uint64_t segment_bytes)
{
	struct de_arena_config ac = {
		.reserve_bytes = 0,
		.segment_bytes = segment_bytes,
		.max_segment_bytes = 0,
		.pages = DE_PAGES_SMALL,
		.numa_node = DE_NUMA_NONE,
		.name = "test_table_model",
	};
	de_arena *a = NULL;
	int rc = de_arena_create(&ac, &a);
	cr_assert_eq(rc, 0, "de_arena_create: %d (%s)", rc, strerror(-rc));
	cr_assert_not_null(a);
	return a;
}

static de_table *mk_table(de_arena *a, const struct de_table_config *tc)
{
	de_table *t = NULL;
	int rc = de_table_open(a, tc, &t);
	cr_assert_eq(rc, 0, "de_table_open: %d (%s)", rc, strerror(-rc));
	cr_assert_not_null(t);
	return t;
}

/* Index of the first float that differs bitwise, or -1. */
static long row_diff(const float *a, const float *b, size_t n)
{
	for (size_t j = 0; j < n; j++)
		if (memcmp(&a[j], &b[j], sizeof(float)) != 0)
			return (long)j;
	return -1;
}

/* ------------------------------------------------------------------------- */
/* Reference map: linear probing, backward-shift deletion, key 0 = empty      */
/* ------------------------------------------------------------------------- */

struct ref {
	uint64_t *key;
	uint32_t *ver;
	uint8_t *seen; /* scratch for iteration checks */
	size_t cap;    /* power of two */
	size_t count;
};

static void ref_init(struct ref *r, size_t cap)
{
	r->cap = cap;
	r->count = 0;
	r->key = xcalloc(cap, sizeof(*r->key));
	r->ver = xcalloc(cap, sizeof(*r->ver));
	r->seen = xcalloc(cap, 1);
}

static void ref_free(struct ref *r)
{
	free(r->key);
	free(r->ver);
	free(r->seen);
	memset(r, 0, sizeof(*r));
}

/* Slot holding key, or the empty slot where it would go. */
static size_t ref_slot(const struct ref *r, uint64_t key)
{
	size_t mask = r->cap - 1;
	size_t i = mix64(key ^ 0x51ed27ull) & mask;
	while (r->key[i] != 0 && r->key[i] != key)
		i = (i + 1) & mask;
	return i;
}

static bool ref_get(const struct ref *r, uint64_t key, uint32_t *ver)
{
	if (key == 0)
		return false;
	size_t i = ref_slot(r, key);
	if (r->key[i] == 0)
		return false;
	if (ver)
		*ver = r->ver[i];
	return true;
}

static void ref_put(struct ref *r, uint64_t key, uint32_t ver);

static void ref_grow(struct ref *r)
{
	struct ref old = *r;
	ref_init(r, old.cap * 2);
	for (size_t i = 0; i < old.cap; i++)
		if (old.key[i])
			ref_put(r, old.key[i], old.ver[i]);
	ref_free(&old);
}

static void ref_put(struct ref *r, uint64_t key, uint32_t ver)
{
	if ((r->count + 1) * 2 > r->cap)
		ref_grow(r);
	size_t i = ref_slot(r, key);
	if (r->key[i] == 0) {
		r->key[i] = key;
		r->count++;
	}
	r->ver[i] = ver;
}

static bool ref_del(struct ref *r, uint64_t key)
{
	if (key == 0)
		return false;
	size_t mask = r->cap - 1;
	size_t i = ref_slot(r, key);
	if (r->key[i] == 0)
		return false;
	/* Backward shift: move later entries of the run whose home is not in (i, j]. */
	size_t j = i;
	for (;;) {
		j = (j + 1) & mask;
		if (r->key[j] == 0)
			break;
		size_t home = mix64(r->key[j] ^ 0x51ed27ull) & mask;
		if (((j - home) & mask) >= ((j - i) & mask)) {
			r->key[i] = r->key[j];
			r->ver[i] = r->ver[j];
			i = j;
		}
	}
	r->key[i] = 0;
	r->ver[i] = 0;
	r->count--;
	return true;
}

/* Small set of keys created within the current batch. */
struct bset {
	uint64_t k[4 * MAX_BATCH];
};

static void bset_clear(struct bset *s)
{
	memset(s->k, 0, sizeof(s->k));
}

static bool bset_add(struct bset *s, uint64_t key) /* true if newly added */
{
	size_t mask = 4 * MAX_BATCH - 1;
	size_t i = mix64(key) & mask;
	while (s->k[i] != 0) {
		if (s->k[i] == key)
			return false;
		i = (i + 1) & mask;
	}
	s->k[i] = key;
	return true;
}

static bool bset_has(const struct bset *s, uint64_t key)
{
	size_t mask = 4 * MAX_BATCH - 1;
	size_t i = mix64(key) & mask;
	while (s->k[i] != 0) {
		if (s->k[i] == key)
			return true;
		i = (i + 1) & mask;
	}
	return false;
}

/* ------------------------------------------------------------------------- */
/* The model run                                                              */
/* ------------------------------------------------------------------------- */

struct model_cfg {
	uint64_t seed;
	uint32_t dim, nslots, seg_buckets;
	uint64_t universe;
	uint64_t min_ops; /* key operations */
	bool expect_splits;
};

enum op { OP_FIND, OP_FOI, OP_ASSIGN, OP_ERASE, OP_APPLY_C, OP_APPLY_NC, OP_N };

struct model {
	de_arena *a;
	de_table *t;
	uint32_t dim, nslots, row_floats;
	float init_a, slot_init;
	struct ref ref;
	struct bset bs;
	uint32_t next_ver;
	uint64_t rng;
	uint64_t universe, salt;
	uint64_t step;
	uint64_t batch_no;

	uint64_t keys[MAX_BATCH];
	float *out, *vals, *exp;
	uint8_t st[MAX_BATCH];
	uint8_t exp_st[MAX_BATCH];
	bool exp_alt[MAX_BATCH]; /* DE_FOUND or DE_CREATED both fine (dup of a key created in this batch) */
	bool exp_any[MAX_BATCH]; /* key 0 in apply: skipped, FOUND or MISSING both fine */
	unsigned exp_calls[MAX_BATCH];
	unsigned calls[MAX_BATCH];

	/* apply callback state */
	size_t cur_n;
	bool create;
	bool failed;
	char err[512];

	uint64_t counts[OP_N];
	uint64_t created, found, missing, iter_scans;
};

static uint64_t ukey(const struct model *m, uint64_t idx)
{
	switch (idx % 4) {
	case 0:
		return idx / 4 + 1; /* small sequential keys */
	case 1:
		return (idx / 4 + 1) << 32; /* only high bits */
	default:
		return mix64(idx + m->salt); /* never 0: idx + salt != 0 */
	}
}

/* Expected values of a row (dim floats). */
static void expect_row(const struct model *m, uint64_t key, bool present, uint32_t ver, float *dst)
{
	for (uint32_t j = 0; j < m->dim; j++) {
		if (key == 0 || !present)
			dst[j] = 0.0f;
		else if (ver == 0)
			dst[j] = m->init_a;
		else
			dst[j] = pattern(key, ver, j);
	}
}

static void check_row(const struct model *m, const char *what, size_t i, uint64_t key,
		      bool present, uint32_t ver, const float *got)
{
	float exp[16];
	expect_row(m, key, present, ver, exp);
	long d = row_diff(got, exp, m->dim);
	CHECK(d < 0,
	      "batch %llu %s: key %#llx (i=%zu, present=%d ver=%u) value[%ld] = %a, expected %a",
	      (unsigned long long)m->batch_no, what, (unsigned long long)key, i, present, ver, d,
	      (double)got[d], (double)exp[d]);
}

static void check_stats(struct model *m)
{
	struct de_table_stats s;
	int rc = de_table_stats(m->t, &s);
	CHECK(rc == 0, "de_table_stats: %d", rc);
	CHECK(s.keys == m->ref.count, "batch %llu: stats.keys %llu, reference %zu",
	      (unsigned long long)m->batch_no, (unsigned long long)s.keys, m->ref.count);
	CHECK(s.rows_allocated == s.keys + s.rows_free,
	      "batch %llu: rows_allocated %llu != keys %llu + rows_free %llu",
	      (unsigned long long)m->batch_no, (unsigned long long)s.rows_allocated,
	      (unsigned long long)s.keys, (unsigned long long)s.rows_free);
	CHECK(s.index_slots >= s.keys && s.index_slots > 0, "index_slots %llu < keys %llu",
	      (unsigned long long)s.index_slots, (unsigned long long)s.keys);
	double lf = (double)s.keys / (double)s.index_slots;
	CHECK(s.load_factor > lf - 1e-9 && s.load_factor < lf + 1e-9,
	      "load_factor %f, keys/index_slots %f", s.load_factor, lf);
}

/* find over m->keys[0..n); checks every row and status. */
static void op_find(struct model *m, size_t n)
{
	bool with_status = rng_below(&m->rng, 16) != 0;
	memset(m->out, 0x7f, n * m->dim * sizeof(float));
	memset(m->st, 0xee, n);
	int rc = de_table_find(m->t, m->keys, n, m->out, with_status ? m->st : NULL);
	CHECK(rc == 0, "de_table_find: %d", rc);
	for (size_t i = 0; i < n; i++) {
		uint64_t key = m->keys[i];
		uint32_t ver = 0;
		bool present = ref_get(&m->ref, key, &ver);
		uint8_t exp = (key == 0 || present) ? DE_FOUND : DE_MISSING;
		if (with_status)
			CHECK(m->st[i] == exp, "batch %llu find: key %#llx status %u, expected %u",
			      (unsigned long long)m->batch_no, (unsigned long long)key, m->st[i], exp);
		check_row(m, "find", i, key, present, ver, m->out + i * m->dim);
		if (key == 0)
			continue;
		if (present)
			m->found++;
		else
			m->missing++;
	}
}

static void op_find_or_insert(struct model *m, size_t n)
{
	bool with_status = rng_below(&m->rng, 16) != 0;
	memset(m->out, 0x7f, n * m->dim * sizeof(float));
	memset(m->st, 0xee, n);
	int rc = de_table_find_or_insert(m->t, m->keys, n, m->out, with_status ? m->st : NULL,
					 ++m->step);
	CHECK(rc == 0, "de_table_find_or_insert: %d", rc);
	bset_clear(&m->bs);
	for (size_t i = 0; i < n; i++) {
		uint64_t key = m->keys[i];
		uint32_t ver = 0;
		bool present = ref_get(&m->ref, key, &ver);
		uint8_t exp;
		bool alt = false;
		if (key == 0) {
			exp = DE_FOUND;
		} else if (present) {
			exp = DE_FOUND;
			alt = bset_has(&m->bs, key);
		} else {
			exp = DE_CREATED;
			ref_put(&m->ref, key, 0);
			bset_add(&m->bs, key);
			present = true;
			ver = 0;
			m->created++;
		}
		if (with_status)
			CHECK(m->st[i] == exp || (alt && m->st[i] == DE_CREATED),
			      "batch %llu find_or_insert: key %#llx (i=%zu) status %u, expected %u%s",
			      (unsigned long long)m->batch_no, (unsigned long long)key, i, m->st[i],
			      exp, alt ? " or CREATED" : "");
		check_row(m, "find_or_insert", i, key, present, ver, m->out + i * m->dim);
	}
}

static void op_assign(struct model *m, size_t n)
{
	bool with_status = rng_below(&m->rng, 16) != 0;
	uint32_t vers[MAX_BATCH];
	for (size_t i = 0; i < n; i++) {
		vers[i] = m->next_ver++;
		for (uint32_t j = 0; j < m->dim; j++)
			m->vals[i * m->dim + j] = pattern(m->keys[i], vers[i], j);
	}
	memset(m->st, 0xee, n);
	int rc = de_table_assign(m->t, m->keys, n, m->vals, with_status ? m->st : NULL, ++m->step);
	CHECK(rc == 0, "de_table_assign: %d", rc);
	bset_clear(&m->bs);
	for (size_t i = 0; i < n; i++) {
		uint64_t key = m->keys[i];
		bool present = ref_get(&m->ref, key, NULL);
		uint8_t exp;
		bool alt = false;
		if (key == 0) {
			exp = DE_FOUND;
		} else if (present) {
			exp = DE_FOUND;
			alt = bset_has(&m->bs, key);
			ref_put(&m->ref, key, vers[i]);
		} else {
			exp = DE_CREATED;
			ref_put(&m->ref, key, vers[i]);
			bset_add(&m->bs, key);
			m->created++;
		}
		if (with_status)
			CHECK(m->st[i] == exp || (alt && m->st[i] == DE_CREATED),
			      "batch %llu assign: key %#llx (i=%zu) status %u, expected %u%s",
			      (unsigned long long)m->batch_no, (unsigned long long)key, i, m->st[i],
			      exp, alt ? " or CREATED" : "");
	}
}

static void op_erase(struct model *m, size_t n)
{
	bool with_count = rng_below(&m->rng, 10) != 0;
	size_t erased = (size_t)-1;
	int rc = de_table_erase(m->t, m->keys, n, with_count ? &erased : NULL);
	CHECK(rc == 0, "de_table_erase: %d", rc);
	size_t exp = 0;
	for (size_t i = 0; i < n; i++)
		if (ref_del(&m->ref, m->keys[i]))
			exp++;
	if (with_count)
		CHECK(erased == exp, "batch %llu erase: erased %zu, reference %zu",
		      (unsigned long long)m->batch_no, erased, exp);
}

static void apply_fail(struct model *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void apply_fail(struct model *m, const char *fmt, ...)
{
	if (m->failed)
		return;
	m->failed = true;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(m->err, sizeof(m->err), fmt, ap);
	va_end(ap);
}

/*
 * apply's callback: checks the row (values against the reference, slots against
 * slot_init, meta->key) and sometimes writes a new version into the values. The
 * reference is updated here, so duplicates see their predecessors' writes whatever
 * order the table calls fn in.
 */
static void apply_cb(void *ctx, size_t i, float *row, struct de_row_meta *meta)
{
	struct model *m = ctx;
	if (m->failed)
		return;
	if (i >= m->cur_n) {
		apply_fail(m, "fn called with i=%zu >= n=%zu", i, m->cur_n);
		return;
	}
	m->calls[i]++;
	uint64_t key = m->keys[i];
	if (key == 0) {
		apply_fail(m, "fn called for key 0 (i=%zu)", i);
		return;
	}
	if (meta == NULL || meta->key != key) {
		apply_fail(m, "fn for key %#llx: meta->key %#llx", (unsigned long long)key,
			   meta ? (unsigned long long)meta->key : 0ull);
		return;
	}
	uint32_t ver = 0;
	if (!ref_get(&m->ref, key, &ver)) {
		if (!m->create) {
			apply_fail(m, "fn called for missing key %#llx without create",
				   (unsigned long long)key);
			return;
		}
		ref_put(&m->ref, key, 0);
		ver = 0;
	}
	float exp[16];
	expect_row(m, key, true, ver, exp);
	long d = row_diff(row, exp, m->dim);
	if (d >= 0) {
		apply_fail(m, "apply: key %#llx ver %u value[%ld] = %a, expected %a",
			   (unsigned long long)key, ver, d, (double)row[d], (double)exp[d]);
		return;
	}
	for (uint32_t j = m->dim; j < m->row_floats; j++) {
		if (memcmp(&row[j], &m->slot_init, sizeof(float)) != 0) {
			apply_fail(m, "apply: key %#llx slot float %u = %a, expected slot_init %a",
				   (unsigned long long)key, j - m->dim, (double)row[j],
				   (double)m->slot_init);
			return;
		}
	}
	if (rng_below(&m->rng, 2)) {
		uint32_t v = m->next_ver++;
		for (uint32_t j = 0; j < m->dim; j++)
			row[j] = pattern(key, v, j);
		ref_put(&m->ref, key, v);
	}
}

static void op_apply(struct model *m, size_t n, bool create)
{
	bool with_status = rng_below(&m->rng, 16) != 0;
	/* Expectations, computed sequentially before the call. */
	bset_clear(&m->bs);
	for (size_t i = 0; i < n; i++) {
		uint64_t key = m->keys[i];
		m->exp_alt[i] = false;
		m->exp_any[i] = false;
		if (key == 0) {
			m->exp_any[i] = true;
			m->exp_st[i] = DE_FOUND;
			m->exp_calls[i] = 0;
		} else if (ref_get(&m->ref, key, NULL)) {
			m->exp_st[i] = DE_FOUND;
			m->exp_calls[i] = 1;
		} else if (bset_has(&m->bs, key)) {
			m->exp_st[i] = DE_FOUND;
			m->exp_alt[i] = true;
			m->exp_calls[i] = 1;
		} else if (create) {
			m->exp_st[i] = DE_CREATED;
			m->exp_calls[i] = 1;
			bset_add(&m->bs, key);
			m->created++;
		} else {
			m->exp_st[i] = DE_MISSING;
			m->exp_calls[i] = 0;
		}
	}
	memset(m->calls, 0, n * sizeof(m->calls[0]));
	memset(m->st, 0xee, n);
	m->cur_n = n;
	m->create = create;
	m->failed = false;
	int rc = de_table_apply(m->t, m->keys, n, create, apply_cb, m,
				with_status ? m->st : NULL, ++m->step);
	CHECK(!m->failed, "batch %llu apply(create=%d): %s", (unsigned long long)m->batch_no,
	      create, m->err);
	CHECK(rc == 0, "de_table_apply: %d", rc);
	for (size_t i = 0; i < n; i++) {
		uint64_t key = m->keys[i];
		CHECK(m->calls[i] == m->exp_calls[i],
		      "batch %llu apply(create=%d): key %#llx (i=%zu) fn called %u times, expected %u",
		      (unsigned long long)m->batch_no, create, (unsigned long long)key, i,
		      m->calls[i], m->exp_calls[i]);
		if (!with_status)
			continue;
		uint8_t s = m->st[i];
		bool ok = s == m->exp_st[i] || (m->exp_alt[i] && s == DE_CREATED) ||
			  (m->exp_any[i] && (s == DE_FOUND || s == DE_MISSING));
		CHECK(ok, "batch %llu apply(create=%d): key %#llx (i=%zu) status %u, expected %u",
		      (unsigned long long)m->batch_no, create, (unsigned long long)key, i, s,
		      m->exp_st[i]);
	}
}

/* Full scan: every live key exactly once, values (when asked) as the reference says. */
static void iterate_check(struct model *m)
{
	enum { CAP = MAX_BATCH }; /* m->out holds MAX_BATCH rows */
	uint64_t keys[CAP];
	memset(m->ref.seen, 0, m->ref.cap);
	bool with_values = rng_below(&m->rng, 3) != 0;
	uint64_t cursor = 0;
	size_t total = 0;
	size_t calls = 0, max_calls = m->ref.count + 16;
	for (;;) {
		size_t cap = 1 + rng_below(&m->rng, CAP);
		size_t n = (size_t)-1;
		int rc = de_table_iterate(m->t, &cursor, keys, with_values ? m->out : NULL, cap, &n);
		CHECK(rc == 0, "de_table_iterate: %d", rc);
		CHECK(n <= cap, "de_table_iterate: n %zu > cap %zu", n, cap);
		if (n == 0)
			break;
		CHECK(++calls <= max_calls, "de_table_iterate does not end (%zu calls, %zu keys)",
		      calls, m->ref.count);
		for (size_t i = 0; i < n; i++) {
			uint64_t key = keys[i];
			CHECK(key != 0, "iterate returned key 0");
			size_t pos = ref_slot(&m->ref, key);
			CHECK(m->ref.key[pos] == key, "batch %llu iterate: key %#llx is not live",
			      (unsigned long long)m->batch_no, (unsigned long long)key);
			CHECK(!m->ref.seen[pos], "batch %llu iterate: key %#llx returned twice",
			      (unsigned long long)m->batch_no, (unsigned long long)key);
			m->ref.seen[pos] = 1;
			total++;
			if (with_values)
				check_row(m, "iterate", i, key, true, m->ref.ver[pos],
					  m->out + i * m->dim);
		}
	}
	CHECK(total == m->ref.count, "batch %llu iterate: %zu keys, reference %zu",
	      (unsigned long long)m->batch_no, total, m->ref.count);
	m->iter_scans++;
}

/* find every live key of the reference. */
static void verify_all(struct model *m)
{
	size_t n = 0;
	for (size_t p = 0; p < m->ref.cap; p++) {
		if (m->ref.key[p] == 0)
			continue;
		m->keys[n++] = m->ref.key[p];
		if (n == MAX_BATCH) {
			op_find(m, n);
			n = 0;
		}
	}
	if (n)
		op_find(m, n);
}

static size_t gen_batch(struct model *m, unsigned dup_pct, unsigned zero_pct)
{
	size_t n = 1 + rng_below(&m->rng, MAX_BATCH);
	/* A hot window makes keys recur across batches as well as within them. */
	uint64_t hot = rng_below(&m->rng, m->universe);
	for (size_t i = 0; i < n; i++) {
		uint64_t r = rng_below(&m->rng, 100);
		if (r < zero_pct)
			m->keys[i] = 0;
		else if (i > 0 && r < zero_pct + dup_pct)
			m->keys[i] = m->keys[rng_below(&m->rng, i)];
		else if (r < 40)
			m->keys[i] = ukey(m, (hot + rng_below(&m->rng, 256)) % m->universe);
		else
			m->keys[i] = ukey(m, rng_below(&m->rng, m->universe));
	}
	return n;
}

static void run_model(const struct model_cfg *mc)
{
	double t0 = now_s();
	struct model *m = xcalloc(1, sizeof(*m));
	m->dim = mc->dim;
	m->nslots = mc->nslots;
	m->row_floats = mc->dim * (1 + mc->nslots);
	m->init_a = 0.25f;
	m->slot_init = -1.5f;
	m->rng = mc->seed * 0x2545f4914f6cdd1dull + 17;
	m->universe = mc->universe;
	m->salt = KEY_SALT ^ (mc->seed << 48);
	m->next_ver = 1;
	ref_init(&m->ref, 1024);
	m->out = xcalloc(MAX_BATCH * 16, sizeof(float));
	m->vals = xcalloc(MAX_BATCH * 16, sizeof(float));
	m->exp = xcalloc(MAX_BATCH * 16, sizeof(float));
	cr_assert(mc->dim <= 16);

	m->a = mk_arena(2u << 20);
	struct de_table_config tc = {
		.dim = mc->dim,
		.nslots = mc->nslots,
		.init = DE_INIT_CONSTANT,
		.init_a = m->init_a,
		.init_b = 0.0f,
		.slot_init = m->slot_init,
		.seed = mc->seed,
		.seg_buckets = mc->seg_buckets,
	};
	m->t = mk_table(m->a, &tc);
	cr_assert_eq(de_table_dim(m->t), mc->dim);
	cr_assert_eq(de_table_row_floats(m->t), m->row_floats);

	/* Phases change the mix: balanced, growing, shrinking, read-mostly. */
	static const unsigned weights[4][OP_N] = {
		{ 25, 15, 15, 15, 15, 15 },
		{ 15, 30, 25, 5, 15, 10 },
		{ 20, 10, 10, 45, 5, 10 },
		{ 60, 10, 10, 10, 5, 5 },
	};
	unsigned phase = 1;
	uint64_t ops = 0;
	while (ops < mc->min_ops) {
		if (m->batch_no % 400 == 0 && m->batch_no > 0)
			phase = (unsigned)rng_below(&m->rng, 4);
		m->batch_no++;
		unsigned dup_pct = rng_below(&m->rng, 4) == 0 ? 30 : 2;
		unsigned zero_pct = rng_below(&m->rng, 4) == 0 ? 5 : 0;
		size_t n = gen_batch(m, dup_pct, zero_pct);
		ops += n;
		unsigned r = (unsigned)rng_below(&m->rng, 100), acc = 0;
		enum op op = OP_FIND;
		for (unsigned k = 0; k < OP_N; k++) {
			acc += weights[phase][k];
			if (r < acc) {
				op = (enum op)k;
				break;
			}
		}
		m->counts[op]++;
		switch (op) {
		case OP_FIND:
			op_find(m, n);
			break;
		case OP_FOI:
			op_find_or_insert(m, n);
			break;
		case OP_ASSIGN:
			op_assign(m, n);
			break;
		case OP_ERASE:
			op_erase(m, n);
			break;
		case OP_APPLY_C:
			op_apply(m, n, true);
			break;
		case OP_APPLY_NC:
			op_apply(m, n, false);
			break;
		default:
			break;
		}
		/* Read back what a write did, right away, some of the time. */
		if (op != OP_FIND && rng_below(&m->rng, 4) == 0)
			op_find(m, n);
		check_stats(m);
		if (m->batch_no % 50 == 0)
			iterate_check(m);
		if (m->batch_no % 1000 == 0)
			verify_all(m);
	}
	verify_all(m);
	iterate_check(m);

	struct de_table_stats s;
	cr_assert_eq(de_table_stats(m->t, &s), 0);
	cr_log_info("model seed %llu dim %u slots %u seg_buckets %u: %llu batches, %llu key ops, "
		    "created %llu, found %llu, missing %llu, %llu scans; keys %llu, splits %llu, "
		    "dir_doublings %llu, global_depth %u, arena_segments %llu, %.2f s",
		    (unsigned long long)mc->seed, mc->dim, mc->nslots, mc->seg_buckets,
		    (unsigned long long)m->batch_no, (unsigned long long)ops,
		    (unsigned long long)m->created, (unsigned long long)m->found,
		    (unsigned long long)m->missing, (unsigned long long)m->iter_scans,
		    (unsigned long long)s.keys, (unsigned long long)s.splits,
		    (unsigned long long)s.dir_doublings, s.global_depth,
		    (unsigned long long)s.arena_segments, now_s() - t0);
	/* The stream must have exercised every path, or the test proves little. */
	for (unsigned k = 0; k < OP_N; k++)
		cr_assert_gt(m->counts[k], 10, "op %u ran only %llu times", k,
			     (unsigned long long)m->counts[k]);
	cr_assert_gt(m->created, 1000);
	cr_assert_gt(m->found, 1000);
	cr_assert_gt(m->missing, 1000);
	if (mc->expect_splits) {
		cr_assert_gt(s.splits, 0, "no segment split happened");
		cr_assert_gt(s.dir_doublings, 0, "no directory doubling happened");
	}

	de_table_close(m->t);
	de_arena_destroy(m->a);
	ref_free(&m->ref);
	free(m->out);
	free(m->vals);
	free(m->exp);
	free(m);
}

Test(model, seed1_dim1_small_segments)
{
	struct model_cfg mc = { .seed = 1, .dim = 1, .nslots = 0, .seg_buckets = 64,
				.universe = 60000, .min_ops = 1000000, .expect_splits = true };
	run_model(&mc);
}

Test(model, seed2_dim3_small_segments)
{
	struct model_cfg mc = { .seed = 2, .dim = 3, .nslots = 1, .seg_buckets = 64,
				.universe = 150000, .min_ops = 1000000, .expect_splits = true };
	run_model(&mc);
}

Test(model, seed3_dim8_default_segments)
{
	struct model_cfg mc = { .seed = 3, .dim = 8, .nslots = 2, .seg_buckets = 0,
				.universe = 20000, .min_ops = 1000000, .expect_splits = false };
	run_model(&mc);
}

Test(model, seed4_dim16_dense_churn)
{
	struct model_cfg mc = { .seed = 4, .dim = 16, .nslots = 1, .seg_buckets = 64,
				.universe = 5000, .min_ops = 1000000, .expect_splits = true };
	run_model(&mc);
}

Test(model, seed5_dim8_segments128)
{
	struct model_cfg mc = { .seed = 0xdeadbeefcafeull, .dim = 8, .nslots = 0,
				.seg_buckets = 128, .universe = 300000, .min_ops = 1000000,
				.expect_splits = true };
	run_model(&mc);
}

Test(model, seed6_max_slots_big_segments)
{
	struct model_cfg mc = { .seed = 6, .dim = 3, .nslots = DE_MAX_SLOTS, .seg_buckets = 65536,
				.universe = 400000, .min_ops = 1000000, .expect_splits = false };
	run_model(&mc);
}

/*
 * Weak consistency of iteration: keys present for the whole scan come back exactly once
 * while other keys are inserted (forcing splits) and erased between the calls.
 */
Test(model, iterate_during_changes)
{
	de_arena *a = mk_arena(2u << 20);
	struct de_table_config tc = { .dim = 2, .init = DE_INIT_CONSTANT, .init_a = 0.25f,
				      .seed = 9, .seg_buckets = 64 };
	de_table *t = mk_table(a, &tc);
	enum { STABLE = 20000, CHURN = 200000, CAP = 257 };
	const uint64_t stable_base = 1ull << 40, churn_base = 2ull << 40;
	uint64_t *keys = xcalloc(4096, sizeof(uint64_t));
	float *vals = xcalloc(4096 * 2, sizeof(float));
	uint8_t *seen = xcalloc(STABLE, 1);

	/* Stable keys with values pattern(key, 1, j). */
	for (uint64_t i = 0; i < STABLE; i += 4096) {
		size_t n = STABLE - i < 4096 ? STABLE - i : 4096;
		for (size_t k = 0; k < n; k++) {
			keys[k] = mix64(stable_base + i + k);
			vals[2 * k] = pattern(keys[k], 1, 0);
			vals[2 * k + 1] = pattern(keys[k], 1, 1);
		}
		cr_assert_eq(de_table_assign(t, keys, n, vals, NULL, 1), 0);
	}
	struct de_table_stats s0, s1;
	cr_assert_eq(de_table_stats(t, &s0), 0);

	uint64_t rng = 99, next_churn = 0;
	uint64_t ikeys[CAP];
	float ivals[CAP * 2];
	for (int round = 0; round < 3; round++) {
		memset(seen, 0, STABLE);
		uint64_t cursor = 0;
		size_t calls = 0, other = 0;
		for (;;) {
			size_t n = 0;
			cr_assert_eq(de_table_iterate(t, &cursor, ikeys, ivals, CAP, &n), 0);
			if (n == 0)
				break;
			CHECK(++calls < 100000, "iteration does not end");
			for (size_t i = 0; i < n; i++) {
				uint64_t idx = unmix64(ikeys[i]);
				if (idx >= stable_base && idx < stable_base + STABLE) {
					idx -= stable_base;
					CHECK(!seen[idx], "round %d: stable key %#llx returned twice",
					      round, (unsigned long long)ikeys[i]);
					seen[idx] = 1;
					CHECK(ivals[2 * i] == pattern(ikeys[i], 1, 0) &&
						      ivals[2 * i + 1] == pattern(ikeys[i], 1, 1),
					      "round %d: stable key %#llx has wrong values", round,
					      (unsigned long long)ikeys[i]);
				} else {
					CHECK(idx >= churn_base && idx < churn_base + CHURN,
					      "round %d: iterate returned unknown key %#llx", round,
					      (unsigned long long)ikeys[i]);
					other++;
				}
			}
			/* Between calls: insert a batch of new keys, erase some older ones. */
			size_t m = 1 + rng_below(&rng, 128);
			for (size_t k = 0; k < m && next_churn < CHURN; k++)
				keys[k] = mix64(churn_base + next_churn++);
			uint8_t st[128];
			cr_assert_eq(de_table_find_or_insert(t, keys, m, vals, st, 2), 0);
			if (next_churn > 1000) {
				for (size_t k = 0; k < 64; k++)
					keys[k] = mix64(churn_base + rng_below(&rng, next_churn));
				cr_assert_eq(de_table_erase(t, keys, 64, NULL), 0);
			}
		}
		size_t missing = 0;
		for (size_t i = 0; i < STABLE; i++)
			missing += !seen[i];
		cr_assert_eq(missing, 0, "round %d: %zu stable keys never returned", round, missing);
		cr_log_info("iterate_during_changes round %d: %zu calls, %zu churn keys seen", round,
			    calls, other);
	}
	cr_assert_eq(de_table_stats(t, &s1), 0);
	cr_assert_gt(s1.splits, s0.splits, "no split happened during the iterations");

	free(keys);
	free(vals);
	free(seen);
	de_table_close(t);
	de_arena_destroy(a);
}

/* ------------------------------------------------------------------------- */
/* Growth to 10M keys                                                         */
/* ------------------------------------------------------------------------- */

#define GROW_BASE 0x100000000ull /* key i = mix64(GROW_BASE + i) */

static uint64_t gkey(uint64_t i)
{
	return mix64(GROW_BASE + i);
}

Test(growth, ten_million_keys)
{
	const uint64_t N = 10000000;
	const size_t B = 4096;
	const uint32_t dim = 4;
	double t0 = now_s();

	/* The inverse really inverts (the iteration check below depends on it). */
	for (uint64_t x = 0; x < 1000; x++)
		cr_assert_eq(unmix64(mix64(x * 0x9e3779b97f4a7c15ull)), x * 0x9e3779b97f4a7c15ull);

	de_arena *a = mk_arena(0);
	struct de_table_config tc = { .dim = dim, .nslots = 0, .init = DE_INIT_CONSTANT,
				      .init_a = 0.25f, .seed = 42, .seg_buckets = 0 };
	de_table *t = mk_table(a, &tc);
	uint64_t *keys = xcalloc(B, sizeof(uint64_t));
	float *vals = xcalloc(B * dim, sizeof(float));
	float *out = xcalloc(B * dim, sizeof(float));
	uint8_t *st = xcalloc(B, 1);

	/* 1. Insert all keys by find_or_insert (every one CREATED, initializer row), then
	 *    give each a distinct row with assign so that row mix-ups become visible. */
	for (uint64_t i = 0; i < N; i += B) {
		size_t n = N - i < B ? (size_t)(N - i) : B;
		for (size_t k = 0; k < n; k++)
			keys[k] = gkey(i + k);
		int rc = de_table_find_or_insert(t, keys, n, out, st, 1);
		CHECK(rc == 0, "find_or_insert: %d", rc);
		for (size_t k = 0; k < n; k++) {
			CHECK(st[k] == DE_CREATED, "key %llu: status %u, expected CREATED",
			      (unsigned long long)(i + k), st[k]);
			for (uint32_t j = 0; j < dim; j++)
				CHECK(out[k * dim + j] == 0.25f, "key %llu: new value %a",
				      (unsigned long long)(i + k), (double)out[k * dim + j]);
		}
		for (size_t k = 0; k < n; k++)
			for (uint32_t j = 0; j < dim; j++)
				vals[k * dim + j] = pattern(keys[k], 1, j);
		rc = de_table_assign(t, keys, n, vals, st, 2);
		CHECK(rc == 0, "assign: %d", rc);
		for (size_t k = 0; k < n; k++)
			CHECK(st[k] == DE_FOUND, "assign of key %llu: status %u, expected FOUND",
			      (unsigned long long)(i + k), st[k]);
	}
	double t_insert = now_s() - t0;

	struct de_table_stats s;
	cr_assert_eq(de_table_stats(t, &s), 0);
	cr_assert_eq(s.keys, N, "stats.keys %llu", (unsigned long long)s.keys);
	cr_assert(s.load_factor > 0.0 && s.load_factor <= 1.0, "load_factor %f", s.load_factor);
	cr_assert_gt(s.splits, 0);

	/* 2. A random sample of 1M lookups: i < N present with its row, i >= N missing. */
	uint64_t rng = 12345;
	uint64_t present_checked = 0, missing_checked = 0;
	for (size_t done = 0; done < 1000000; done += B) {
		uint64_t idx[4096];
		for (size_t k = 0; k < B; k++) {
			idx[k] = rng_below(&rng, N + N / 4);
			keys[k] = gkey(idx[k]);
		}
		cr_assert_eq(de_table_find(t, keys, B, out, st), 0);
		for (size_t k = 0; k < B; k++) {
			if (idx[k] < N) {
				CHECK(st[k] == DE_FOUND, "key %llu: status %u, expected FOUND",
				      (unsigned long long)idx[k], st[k]);
				for (uint32_t j = 0; j < dim; j++)
					CHECK(out[k * dim + j] == pattern(keys[k], 1, j),
					      "key %llu: value[%u] %a, expected %a",
					      (unsigned long long)idx[k], j, (double)out[k * dim + j],
					      (double)pattern(keys[k], 1, j));
				present_checked++;
			} else {
				CHECK(st[k] == DE_MISSING, "key %llu: status %u, expected MISSING",
				      (unsigned long long)idx[k], st[k]);
				for (uint32_t j = 0; j < dim; j++)
					CHECK(out[k * dim + j] == 0.0f, "missing key: nonzero value");
				missing_checked++;
			}
		}
	}
	cr_assert_gt(present_checked, 700000);
	cr_assert_gt(missing_checked, 100000);
	double t_verify = now_s() - t0 - t_insert;

	/* 3. Erase the even keys. */
	for (uint64_t i = 0; i < N; i += 2 * B) {
		size_t n = 0;
		for (uint64_t k = i; k < i + 2 * B && k < N; k += 2)
			keys[n++] = gkey(k);
		size_t erased = 0;
		cr_assert_eq(de_table_erase(t, keys, n, &erased), 0);
		CHECK(erased == n, "erase: %zu of %zu", erased, n);
	}
	cr_assert_eq(de_table_stats(t, &s), 0);
	cr_assert_eq(s.keys, N / 2, "stats.keys %llu after erasing half", (unsigned long long)s.keys);
	cr_assert_eq(s.rows_free, N / 2, "rows_free %llu", (unsigned long long)s.rows_free);

	for (size_t done = 0; done < 1000000; done += B) {
		uint64_t idx[4096];
		for (size_t k = 0; k < B; k++) {
			idx[k] = rng_below(&rng, N);
			keys[k] = gkey(idx[k]);
		}
		cr_assert_eq(de_table_find(t, keys, B, out, st), 0);
		for (size_t k = 0; k < B; k++) {
			bool odd = idx[k] & 1;
			CHECK(st[k] == (odd ? DE_FOUND : DE_MISSING),
			      "after erase: key %llu status %u", (unsigned long long)idx[k], st[k]);
			for (uint32_t j = 0; j < dim; j++)
				CHECK(out[k * dim + j] == (odd ? pattern(keys[k], 1, j) : 0.0f),
				      "after erase: key %llu value[%u] %a", (unsigned long long)idx[k], j,
				      (double)out[k * dim + j]);
		}
	}

	/* 4. Iterate what is left: every odd key exactly once (one bit per key). */
	uint64_t *bits = xcalloc(N / 64 + 1, sizeof(uint64_t));
	uint64_t cursor = 0, total = 0;
	for (size_t calls = 0;; calls++) {
		size_t n = 0;
		cr_assert_eq(de_table_iterate(t, &cursor, keys, NULL, B, &n), 0);
		if (n == 0)
			break;
		CHECK(calls < N, "iteration does not end");
		for (size_t k = 0; k < n; k++) {
			uint64_t i = unmix64(keys[k]) - GROW_BASE;
			CHECK(i < N && (i & 1), "iterate returned key %#llx (index %llu)",
			      (unsigned long long)keys[k], (unsigned long long)i);
			CHECK(!(bits[i / 64] >> (i % 64) & 1), "iterate returned key %llu twice",
			      (unsigned long long)i);
			bits[i / 64] |= 1ull << (i % 64);
			total++;
		}
	}
	cr_assert_eq(total, N / 2, "iterate returned %llu keys", (unsigned long long)total);
	free(bits);

	cr_log_info("growth: %llu keys inserted+assigned in %.2f s, 1M verified in %.2f s, total "
		    "%.2f s; splits %llu, dir_doublings %llu, segments %llu, arena segments %llu, "
		    "load %.3f, row_bytes %llu, index_bytes %llu",
		    (unsigned long long)N, t_insert, t_verify, now_s() - t0,
		    (unsigned long long)s.splits, (unsigned long long)s.dir_doublings,
		    (unsigned long long)s.segments, (unsigned long long)s.arena_segments,
		    s.load_factor, (unsigned long long)s.row_bytes, (unsigned long long)s.index_bytes);

	free(keys);
	free(vals);
	free(out);
	free(st);
	de_table_close(t);
	de_arena_destroy(a);
}

/* ------------------------------------------------------------------------- */
/* Initializers                                                               */
/* ------------------------------------------------------------------------- */

/* Rows of keys mix64(base + i), i < nkeys, created by find_or_insert. out: nkeys * dim. */
static void create_rows(de_table *t, uint64_t base, size_t nkeys, uint32_t dim, float *out,
			bool reverse)
{
	uint64_t keys[1000];
	uint8_t st[1000];
	for (size_t i = 0; i < nkeys;) {
		size_t n = nkeys - i < 1000 ? nkeys - i : 1000;
		if (reverse)
			n = n > 333 ? 333 : n; /* other batch boundaries as well as other order */
		for (size_t k = 0; k < n; k++) {
			size_t idx = reverse ? nkeys - 1 - (i + k) : i + k;
			keys[k] = mix64(base + idx);
		}
		float *tmp = xcalloc(n * dim, sizeof(float));
		cr_assert_eq(de_table_find_or_insert(t, keys, n, tmp, st, 1), 0);
		for (size_t k = 0; k < n; k++) {
			CHECK(st[k] == DE_CREATED, "status %u, expected CREATED", st[k]);
			size_t idx = reverse ? nkeys - 1 - (i + k) : i + k;
			memcpy(out + idx * dim, tmp + k * dim, dim * sizeof(float));
		}
		free(tmp);
		i += n;
	}
}

static de_table *init_table(de_arena *a, enum de_init init, float ia, float ib, uint64_t seed,
			    uint32_t dim, uint32_t nslots, float slot_init)
{
	struct de_table_config tc = { .dim = dim, .nslots = nslots, .init = init, .init_a = ia,
				      .init_b = ib, .slot_init = slot_init, .seed = seed };
	return mk_table(a, &tc);
}

Test(init, uniform_statistics)
{
	const float a0 = -0.5f, b0 = 1.5f;
	const uint32_t dim = 16;
	const size_t nkeys = 65536, nv = nkeys * dim;
	de_arena *a = mk_arena(0);
	de_table *t = init_table(a, DE_INIT_UNIFORM, a0, b0, 7, dim, 0, 0.0f);
	float *v = xcalloc(nv, sizeof(float));
	create_rows(t, 1000, nkeys, dim, v, false);

	double sum = 0, sum2 = 0, lag = 0, col[16] = { 0 };
	size_t bins[20] = { 0 };
	for (size_t i = 0; i < nv; i++) {
		float x = v[i];
		CHECK(x >= a0 && x < b0, "value %zu = %a outside [a, b)", i, (double)x);
		double c = (double)x - 0.5; /* centered on (a+b)/2 */
		sum += c;
		sum2 += c * c;
		col[i % dim] += c;
		size_t bin = (size_t)(((double)x - a0) / (b0 - a0) * 20.0);
		bins[bin < 20 ? bin : 19]++;
		if (i % dim != 0)
			lag += c * ((double)v[i - 1] - 0.5);
	}
	double mean = sum / (double)nv, var = sum2 / (double)nv - mean * mean;
	double exp_var = (double)(b0 - a0) * (b0 - a0) / 12.0; /* 1/3 */
	/* sd(mean) = 0.00056, sd(var) = 0.0003: tolerances are ~7 sd. */
	cr_assert(mean > -0.004 && mean < 0.004, "uniform mean %f, expected 0.5", mean + 0.5);
	cr_assert(var > exp_var - 0.003 && var < exp_var + 0.003, "uniform variance %f, expected %f",
		  var, exp_var);
	for (int k = 0; k < 20; k++) /* each bin 5%; sd 0.02% */
		cr_assert(bins[k] > nv / 20 - nv / 500 && bins[k] < nv / 20 + nv / 500,
			  "bin %d holds %zu of %zu values", k, bins[k], nv);
	for (uint32_t j = 0; j < dim; j++) { /* sd of a column mean: 0.0023 */
		double cm = col[j] / (double)nkeys;
		cr_assert(cm > -0.02 && cm < 0.02, "column %u mean %f", j, cm + 0.5);
	}
	double corr = lag / (double)(nkeys * (dim - 1)) / exp_var; /* sd 0.001 */
	cr_assert(corr > -0.01 && corr < 0.01, "correlation of neighbouring values %f", corr);
	/* Rows differ from each other. */
	size_t same = 0;
	for (size_t k = 1; k < nkeys; k++)
		same += memcmp(v + k * dim, v + (k - 1) * dim, dim * sizeof(float)) == 0;
	cr_assert_eq(same, 0, "%zu rows equal to their neighbour", same);
	cr_log_info("uniform: mean %f var %f (expected 0.5, %f), lag-1 corr %f", mean + 0.5, var,
		    exp_var, corr);
	free(v);
	de_table_close(t);
	de_arena_destroy(a);
}

Test(init, trunc_normal_statistics)
{
	const float mu = 0.1f, sigma = 0.5f;
	const uint32_t dim = 16;
	const size_t nkeys = 65536, nv = nkeys * dim;
	de_arena *a = mk_arena(0);
	de_table *t = init_table(a, DE_INIT_TRUNC_NORMAL, mu, sigma, 11, dim, 0, 0.0f);
	float *v = xcalloc(nv, sizeof(float));
	create_rows(t, 5000, nkeys, dim, v, false);

	const double lo = (double)mu - 2.0 * sigma, hi = (double)mu + 2.0 * sigma;
	double sum = 0, sum2 = 0;
	size_t within1 = 0, pos = 0;
	for (size_t i = 0; i < nv; i++) {
		double x = (double)v[i];
		CHECK(x >= lo - 1e-6 && x <= hi + 1e-6, "value %zu = %a outside a +- 2b", i, x);
		double c = x - (double)mu;
		sum += c;
		sum2 += c * c;
		within1 += c > -(double)sigma && c < (double)sigma;
		pos += c > 0;
	}
	double mean = sum / (double)nv, var = sum2 / (double)nv - mean * mean;
	/*
	 * Normal truncated at +-2 sigma: variance factor 1 - 2*2*phi(2)/(Phi(2) - Phi(-2)) =
	 * 1 - 4*0.0539910/0.9544997 = 0.773741 (stddev factor 0.87963); mass within
	 * +-1 sigma 0.6826895/0.9544997 = 0.715233.
	 */
	double exp_var = 0.773741 * (double)sigma * sigma; /* 0.193435 */
	cr_assert(mean > -0.003 && mean < 0.003, "trunc normal mean %f, expected %f",
		  mean + (double)mu, (double)mu);
	cr_assert(var > exp_var * 0.99 && var < exp_var * 1.01,
		  "trunc normal variance %f (stddev ratio %f), expected %f (0.8796)", var,
		  var / ((double)sigma * sigma), exp_var);
	double f1 = (double)within1 / (double)nv; /* sd 0.00045 */
	cr_assert(f1 > 0.715233 - 0.004 && f1 < 0.715233 + 0.004,
		  "fraction within 1 sigma %f, expected 0.7152", f1);
	double fp = (double)pos / (double)nv; /* symmetric: 0.5, sd 0.0005 */
	cr_assert(fp > 0.496 && fp < 0.504, "fraction above the mean %f", fp);
	cr_log_info("trunc normal: mean %f var %f (expected %f, %f), within 1 sigma %f",
		    mean + (double)mu, var, (double)mu, exp_var, f1);
	free(v);
	de_table_close(t);
	de_arena_destroy(a);
}

static void init_determinism(enum de_init init, float ia, float ib)
{
	const uint32_t dim = 8;
	const size_t nkeys = 20000;
	de_arena *a1 = mk_arena(0), *a2 = mk_arena(0), *a3 = mk_arena(0);
	de_table *t1 = init_table(a1, init, ia, ib, 77, dim, 1, 0.0f);
	de_table *t2 = init_table(a2, init, ia, ib, 77, dim, 1, 0.0f);
	de_table *t3 = init_table(a3, init, ia, ib, 78, dim, 1, 0.0f);
	float *v1 = xcalloc(nkeys * dim, sizeof(float));
	float *v2 = xcalloc(nkeys * dim, sizeof(float));
	float *v3 = xcalloc(nkeys * dim, sizeof(float));

	/* Same seed, other insertion order and batches, plus unrelated keys in between. */
	create_rows(t1, 300, nkeys, dim, v1, false);
	float *junk = xcalloc(5000 * dim, sizeof(float));
	create_rows(t2, 1u << 30, 5000, dim, junk, false);
	create_rows(t2, 300, nkeys, dim, v2, true);
	create_rows(t3, 300, nkeys, dim, v3, false);
	free(junk);

	cr_assert_eq(memcmp(v1, v2, nkeys * dim * sizeof(float)), 0,
		     "same seed, same keys: rows differ between tables");
	size_t same = 0;
	for (size_t k = 0; k < nkeys; k++)
		same += memcmp(v1 + k * dim, v3 + k * dim, dim * sizeof(float)) == 0;
	cr_assert_eq(same, 0, "different seeds: %zu of %zu rows identical", same, nkeys);

	/* Per (seed, key): an erased and re-created key gets the same row again. */
	uint64_t keys[100];
	float out[100 * 8];
	uint8_t st[100];
	for (size_t k = 0; k < 100; k++)
		keys[k] = mix64(300 + k * 7);
	size_t erased = 0;
	cr_assert_eq(de_table_erase(t1, keys, 100, &erased), 0);
	cr_assert_eq(erased, 100);
	cr_assert_eq(de_table_find_or_insert(t1, keys, 100, out, st, 5), 0);
	for (size_t k = 0; k < 100; k++) {
		cr_assert_eq(st[k], DE_CREATED);
		cr_assert_eq(memcmp(out + k * dim, v1 + k * 7 * dim, dim * sizeof(float)), 0,
			     "re-created key %zu got another row", k * 7);
	}

	free(v1);
	free(v2);
	free(v3);
	de_table_close(t1);
	de_table_close(t2);
	de_table_close(t3);
	de_arena_destroy(a1);
	de_arena_destroy(a2);
	de_arena_destroy(a3);
}

Test(init, determinism_uniform)
{
	init_determinism(DE_INIT_UNIFORM, -1.0f, 1.0f);
}

Test(init, determinism_trunc_normal)
{
	init_determinism(DE_INIT_TRUNC_NORMAL, 0.0f, 0.05f);
}

struct slot_ctx {
	uint32_t dim, row_floats;
	float slot_init;
	const float *values; /* expected values, n * dim */
	size_t calls, bad;
	char err[256];
};

static void slot_cb(void *ctx, size_t i, float *row, struct de_row_meta *meta)
{
	struct slot_ctx *c = ctx;
	(void)meta;
	c->calls++;
	for (uint32_t j = 0; j < c->dim; j++)
		if (memcmp(&row[j], &c->values[i * c->dim + j], sizeof(float)) != 0 && !c->bad++)
			snprintf(c->err, sizeof(c->err), "i=%zu value[%u] %a, find gave %a", i, j,
				 (double)row[j], (double)c->values[i * c->dim + j]);
	for (uint32_t j = c->dim; j < c->row_floats; j++)
		if (memcmp(&row[j], &c->slot_init, sizeof(float)) != 0 && !c->bad++)
			snprintf(c->err, sizeof(c->err), "i=%zu slot float %u = %a, expected %a", i,
				 j - c->dim, (double)row[j], (double)c->slot_init);
}

static void check_zeros_and_slots(enum de_init init, float ia, float ib, uint32_t nslots,
				  float slot_init)
{
	const uint32_t dim = 5;
	const size_t n = 3000;
	de_arena *a = mk_arena(0);
	de_table *t = init_table(a, init, ia, ib, 5, dim, nslots, slot_init);
	cr_assert_eq(de_table_row_floats(t), dim * (1 + nslots));
	float *v = xcalloc(n * dim, sizeof(float));
	create_rows(t, 77, n, dim, v, false);
	if (init == DE_INIT_ZEROS)
		for (size_t i = 0; i < n * dim; i++)
			CHECK(v[i] == 0.0f && !signbit(v[i]), "zeros initializer: value %zu = %a", i,
			      (double)v[i]);
	uint64_t *keys = xcalloc(n, sizeof(uint64_t));
	for (size_t i = 0; i < n; i++)
		keys[i] = mix64(77 + i);
	/* Rows created by assign start their slots at slot_init too. */
	uint64_t akeys[64];
	float avals[64 * 5];
	uint8_t st[64];
	for (size_t i = 0; i < 64; i++) {
		akeys[i] = mix64(900000 + i);
		for (uint32_t j = 0; j < dim; j++)
			avals[i * dim + j] = pattern(akeys[i], 3, j);
	}
	cr_assert_eq(de_table_assign(t, akeys, 64, avals, st, 2), 0);
	for (size_t i = 0; i < 64; i++)
		cr_assert_eq(st[i], DE_CREATED);

	struct slot_ctx c = { .dim = dim, .row_floats = dim * (1 + nslots), .slot_init = slot_init,
			      .values = v };
	cr_assert_eq(de_table_apply(t, keys, n, false, slot_cb, &c, NULL, 3), 0);
	cr_assert_eq(c.bad, 0, "%zu bad floats: %s", c.bad, c.err);
	cr_assert_eq(c.calls, n);
	c.values = avals;
	c.calls = 0;
	cr_assert_eq(de_table_apply(t, akeys, 64, false, slot_cb, &c, NULL, 3), 0);
	cr_assert_eq(c.bad, 0, "assign-created rows: %zu bad floats: %s", c.bad, c.err);
	cr_assert_eq(c.calls, 64);
	free(keys);
	free(v);
	de_table_close(t);
	de_arena_destroy(a);
}

Test(init, zeros_and_slot_init)
{
	check_zeros_and_slots(DE_INIT_ZEROS, 0.0f, 0.0f, 2, 0.125f);
}

Test(init, uniform_slot_init)
{
	check_zeros_and_slots(DE_INIT_UNIFORM, -1.0f, 1.0f, 3, -0.75f);
}

Test(init, trunc_normal_slot_init_max_slots)
{
	check_zeros_and_slots(DE_INIT_TRUNC_NORMAL, 0.0f, 1.0f, DE_MAX_SLOTS, 3.0f);
}

/* ------------------------------------------------------------------------- */
/* String keys                                                                */
/* ------------------------------------------------------------------------- */

Test(keys, from_string)
{
	const uint64_t seeds[] = { 0, 1, 0x9e3779b97f4a7c15ull };
	for (size_t s = 0; s < 3; s++)
		cr_assert_eq(de_key_from_string(seeds[s], "", 0), 0, "empty string must be key 0");
	cr_assert_eq(de_key_from_string(5, NULL, 0), 0, "empty string (NULL) must be key 0");

	char big[1000];
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (char)('a' + i % 26);
	const struct {
		const char *s;
		size_t len;
	} cases[] = {
		{ "a", 1 },
		{ "hello", 5 },
		{ "user:1234567", 12 },
		{ "0123456789abcdefX", 17 }, /* crosses xxh3's 16-byte path */
		{ "\0\1\2", 3 },             /* embedded NUL: length, not strlen */
		{ big, 129 },
		{ big, sizeof(big) },
	};
	for (size_t s = 0; s < 3; s++) {
		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
			uint64_t want = XXH3_64bits_withSeed(cases[i].s, cases[i].len, seeds[s]);
			if (want == 0)
				want = 1;
			uint64_t got = de_key_from_string(seeds[s], cases[i].s, cases[i].len);
			cr_assert_eq(got, want, "case %zu seed %llu: %#llx, xxh3 gives %#llx", i,
				     (unsigned long long)seeds[s], (unsigned long long)got,
				     (unsigned long long)want);
			cr_assert_neq(got, 0);
		}
	}
	/* Equal strings in different buffers give equal keys; different strings and
	 * different seeds give different keys. */
	char b1[] = "feature=42", b2[] = "feature=42";
	cr_assert_eq(de_key_from_string(3, b1, 10), de_key_from_string(3, b2, 10));
	cr_assert_neq(de_key_from_string(3, "feature=42", 10), de_key_from_string(3, "feature=43", 10));
	cr_assert_neq(de_key_from_string(3, "feature=42", 10), de_key_from_string(4, "feature=42", 10));
	cr_assert_neq(de_key_from_string(3, "ab", 2), de_key_from_string(3, "ab", 1));
}
