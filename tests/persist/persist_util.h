/*
 * persist_util.h — what the persistence tests share: tables in private arenas, temporary
 * directories, and the independent reference: a plain array indexed by key number
 * (key = mix64(i + 1)) holding whether the key is present and its full row and meta,
 * updated by the test next to every table write. Tables are checked against it.
 */
#ifndef DE_PERSIST_UTIL_H
#define DE_PERSIST_UTIL_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <inttypes.h>

#include "de_shm.h"
#include "de_uring.h"
#include "../test_util.h"

static const struct de_table_config pcfg = {
	.dim = 4, .nslots = 2, .init = DE_INIT_CONSTANT, .init_a = 0.5f, .slot_init = 0.25f,
	.seed = 7, .seg_buckets = 64,
};
#define RF 12u /* 4 * (1 + 2) */

struct tab {
	de_arena *a;
	de_table *t;
};

static inline struct tab mk_table(void)
{
	struct de_arena_config ac = { .reserve_bytes = 1ull << 30, .segment_bytes = 4 << 20,
				      .max_segment_bytes = 32 << 20, .pages = DE_PAGES_SMALL,
				      .numa_node = DE_NUMA_NONE };
	struct tab x = { 0 };
	cr_assert_eq(de_arena_create(&ac, &x.a), 0);
	cr_assert_eq(de_table_open(x.a, &pcfg, &x.t), 0);
	return x;
}

static inline void rm_table(struct tab *x)
{
	de_table_close(x->t);
	de_arena_destroy(x->a);
	x->t = NULL;
	x->a = NULL;
}

static inline void mk_dir(char *d, size_t cap)
{
	snprintf(d, cap, "/tmp/de_persist_XXXXXX");
	cr_assert_not_null(mkdtemp(d));
}

static inline void rm_dir(const char *d)
{
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
	cr_assert_eq(system(cmd), 0);
}

static inline void cp_dir(const char *from, const char *to)
{
	char cmd[400];
	snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -a '%s' '%s'", to, from, to);
	cr_assert_eq(system(cmd), 0);
}

/* ---- the reference ------------------------------------------------------------------- */

struct ref_row {
	bool present;
	float row[RF];
	uint64_t last_step, aux;
	uint32_t freq;
};

struct ref {
	size_t nkeys;
	struct ref_row *r;
};

static inline uint64_t key_of(size_t i) { return mix64(i + 1); }

static inline struct ref ref_new(size_t nkeys)
{
	struct ref x = { nkeys, xcalloc(nkeys, sizeof(struct ref_row)) };
	return x;
}

static inline struct ref ref_copy(const struct ref *a)
{
	struct ref x = ref_new(a->nkeys);
	memcpy(x.r, a->r, a->nkeys * sizeof *a->r);
	return x;
}

struct set_ctx {
	const struct ref_row *rows; /* one per key of the batch */
};

static inline void set_row(void *ctx, size_t i, float *row, struct de_row_meta *m)
{
	const struct ref_row *s = &((struct set_ctx *)ctx)->rows[i];
	memcpy(row, s->row, sizeof s->row);
	m->last_step = s->last_step;
	m->freq = s->freq;
	m->aux = s->aux;
}

/* a deterministic new row for key index i at step */
static inline struct ref_row gen_row(size_t i, uint64_t step)
{
	struct ref_row r = { .present = true, .last_step = step, .aux = step * 3 + i,
			     .freq = (uint32_t)(step + i) };
	for (unsigned j = 0; j < RF; j++)
		r.row[j] = (float)((key_of(i) >> (j * 3)) % 1000) / 8.0f + (float)step;
	return r;
}

/* write keys idx[0..n) with new rows at step into t and ref */
static inline void put_keys(de_table *t, struct ref *ref, const size_t *idx, size_t n,
			    uint64_t step, uint64_t *keys /* out, n */)
{
	struct ref_row rows[64];
	cr_assert(n <= 64);
	for (size_t k = 0; k < n; k++) {
		keys[k] = key_of(idx[k]);
		rows[k] = gen_row(idx[k], step);
	}
	struct set_ctx sc = { rows };
	cr_assert_eq(de_table_apply(t, keys, n, true, set_row, &sc, NULL, DE_STEP_KEEP), 0);
	for (size_t k = 0; k < n; k++)
		ref->r[idx[k]] = rows[k];
}

static inline void erase_keys(de_table *t, struct ref *ref, const size_t *idx, size_t n,
			      uint64_t *keys /* out */)
{
	for (size_t k = 0; k < n; k++) {
		keys[k] = key_of(idx[k]);
		ref->r[idx[k]].present = false;
	}
	cr_assert_eq(de_table_erase(t, keys, n, NULL), 0);
}

struct get_ctx {
	struct ref_row got;
};

static inline void get_row(void *ctx, size_t i, float *row, struct de_row_meta *m)
{
	(void)i;
	struct ref_row *g = &((struct get_ctx *)ctx)->got;
	memcpy(g->row, row, sizeof g->row);
	g->last_step = m->last_step;
	g->freq = m->freq;
	g->aux = m->aux;
	g->present = true;
}

/* 0 when t holds exactly what ref says; else the index of the first difference + 1 */
static inline size_t ref_diff(de_table *t, const struct ref *ref)
{
	size_t live = 0;
	for (size_t i = 0; i < ref->nkeys; i++) {
		uint64_t k = key_of(i);
		struct get_ctx g = { 0 };
		uint8_t st;
		cr_assert_eq(de_table_apply(t, &k, 1, false, get_row, &g, &st, DE_STEP_KEEP), 0);
		const struct ref_row *w = &ref->r[i];
		if (g.got.present != w->present)
			return i + 1;
		if (!w->present)
			continue;
		live++;
		if (memcmp(g.got.row, w->row, sizeof w->row) || g.got.last_step != w->last_step ||
		    g.got.freq != w->freq || g.got.aux != w->aux)
			return i + 1;
	}
	struct de_table_stats s;
	cr_assert_eq(de_table_stats(t, &s), 0);
	return s.keys == live ? 0 : ref->nkeys + 1;
}

static inline int apply_cb(void *ctx, const struct de_wal_record *r)
{
	return de_wal_record_apply((de_table *)ctx, r);
}

static inline void quiet_log(void *ctx, const char *line)
{
	(void)ctx;
	(void)line;
}

#endif
