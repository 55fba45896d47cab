/*
 * learn_driver.c — runs a recorded stream of optimizer updates through de_optim_update,
 * for tests/learn/test_optim.py, which computes the same stream with torch.optim (and a
 * numpy FTRL written from the paper) and compares. Also a few direct checks of the API
 * (--selftest). No Criterion: exit 0 = pass, 1 = failure, 2 = usage or I/O error.
 *
 *   learn_driver STREAM OUT     apply STREAM to a fresh table, write OUT
 *   learn_driver --selftest
 *
 * ---- STREAM (written by test_optim.py; all little-endian, no padding) ----------------
 *   u32 magic 0x534c4544 ("DELS")   u32 version 1
 *   u32 dim   u32 nslots (0 = de_optim_slots(kind))   u32 kind (enum de_optimizer)
 *   u32 centered
 *   f64 lr, weight_decay, momentum, dampening, beta1, beta2, eps,
 *       initial_accumulator_value, alpha, l1, l2, lr_power, ftrl_beta   (13 x f64)
 *   f32 init_constant (the table's DE_INIT_CONSTANT value)   f32 slot_init
 *   u32 ninit, u64 keys[ninit], f32 values[ninit * dim]      (de_table_assign)
 *   u32 nsteps, then per step (step s = 1..nsteps):
 *       f64 lr (replaces cfg.lr from this step on), u32 n, u64 keys[n], f32 grads[n * dim]
 *   u32 nout, u64 keys[nout]
 *
 * ---- OUT -----------------------------------------------------------------------------
 *   u32 row_floats (dim * (1 + nslots)), then per output key:
 *       u64 aux (UINT64_MAX when the key is missing), f32 row[row_floats] (values, slots;
 *       zeros when missing)
 */
#include "de_learn.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STREAM_MAGIC 0x534c4544u

static int failures;

#define CHECK(cond)                                                                   \
	do {                                                                          \
		if (!(cond)) {                                                        \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
			failures++;                                                   \
		}                                                                     \
	} while (0)

/* ---- table helpers -------------------------------------------------------------------- */

struct fixture {
	de_arena *a;
	de_table *t;
};

static int fixture_open(struct fixture *f, uint32_t dim, uint32_t nslots, float init_constant,
			float slot_init)
{
	struct de_arena_config ac = { .reserve_bytes = 1ull << 30, .segment_bytes = 4u << 20,
				      .pages = DE_PAGES_SMALL, .numa_node = DE_NUMA_NONE,
				      .name = "learn_driver" };
	struct de_table_config tc = { .dim = dim, .nslots = nslots, .init = DE_INIT_CONSTANT,
				      .init_a = init_constant, .slot_init = slot_init, .seed = 1 };
	int err = de_arena_create(&ac, &f->a);
	if (err)
		return err;
	err = de_table_open(f->a, &tc, &f->t);
	if (err) {
		de_arena_destroy(f->a);
		return err;
	}
	return 0;
}

static void fixture_close(struct fixture *f)
{
	de_table_close(f->t);
	de_arena_destroy(f->a);
}

struct read_ctx {
	uint32_t row_floats;
	float *rows;
	uint64_t *aux;
};

static void read_row(void *ctx, size_t i, float *row, struct de_row_meta *meta)
{
	struct read_ctx *r = ctx;
	memcpy(r->rows + i * r->row_floats, row, r->row_floats * sizeof(float));
	r->aux[i] = meta->aux;
}

/* Whole rows (values and slots) and aux of keys; missing: zeros, aux UINT64_MAX. Uses
 * de_table_apply without create, which only rewrites last_step (to 0). */
static int read_rows(de_table *t, const uint64_t *keys, size_t n, float *rows, uint64_t *aux)
{
	struct read_ctx r = { de_table_row_floats(t), rows, aux };
	uint8_t *st = malloc(n ? n : 1);
	if (!st)
		return -ENOMEM;
	memset(rows, 0, n * r.row_floats * sizeof(float));
	for (size_t i = 0; i < n; i++)
		aux[i] = UINT64_MAX;
	int err = de_table_apply(t, keys, n, false, read_row, &r, st, 0);
	free(st);
	return err;
}

/* ---- stream mode ----------------------------------------------------------------------- */

struct reader {
	FILE *f;
	const char *path;
	bool bad;
};

static void rd(struct reader *r, void *p, size_t bytes)
{
	if (!r->bad && bytes && fread(p, 1, bytes, r->f) != bytes)
		r->bad = true;
	if (r->bad)
		memset(p, 0, bytes);
}

static uint32_t rd_u32(struct reader *r)
{
	uint32_t v;
	rd(r, &v, sizeof(v));
	return v;
}

static double rd_f64(struct reader *r)
{
	double v;
	rd(r, &v, sizeof(v));
	return v;
}

static float rd_f32(struct reader *r)
{
	float v;
	rd(r, &v, sizeof(v));
	return v;
}

/* keys[n] and floats[n * dim], freshly allocated (caller frees both) */
static int rd_batch(struct reader *r, uint32_t n, uint32_t dim, uint64_t **keys, float **vals)
{
	*keys = malloc((n ? n : 1) * sizeof(uint64_t));
	*vals = malloc((n ? (size_t)n * dim : 1) * sizeof(float));
	if (!*keys || !*vals)
		return -ENOMEM;
	rd(r, *keys, n * sizeof(uint64_t));
	rd(r, *vals, (size_t)n * dim * sizeof(float));
	return r->bad ? -EIO : 0;
}

static int run_stream(const char *in, const char *outp)
{
	struct reader r = { fopen(in, "rb"), in, false };
	if (!r.f) {
		perror(in);
		return 2;
	}
	int rc = 2;
	struct fixture fx = { 0 };
	uint64_t *keys = NULL;
	float *vals = NULL, *rows = NULL;
	uint64_t *aux = NULL;
	FILE *out = NULL;

	uint32_t magic = rd_u32(&r), version = rd_u32(&r);
	uint32_t dim = rd_u32(&r), nslots = rd_u32(&r);
	struct de_optim_config cfg = { .kind = (enum de_optimizer)rd_u32(&r) };
	cfg.centered = (int)rd_u32(&r);
	double *fields[] = { &cfg.lr, &cfg.weight_decay, &cfg.momentum, &cfg.dampening,
			     &cfg.beta1, &cfg.beta2, &cfg.eps, &cfg.initial_accumulator_value,
			     &cfg.alpha, &cfg.l1, &cfg.l2, &cfg.lr_power, &cfg.ftrl_beta };
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
		*fields[i] = rd_f64(&r);
	float init_constant = rd_f32(&r), slot_init = rd_f32(&r);
	if (r.bad || magic != STREAM_MAGIC || version != 1) {
		fprintf(stderr, "%s: not a version 1 stream\n", in);
		goto out;
	}
	char why[200];
	if (de_optim_check(&cfg, why, sizeof(why))) {
		fprintf(stderr, "%s: bad config: %s\n", in, why);
		goto out;
	}
	if (!nslots)
		nslots = de_optim_slots(cfg.kind);
	int err = fixture_open(&fx, dim, nslots, init_constant, slot_init);
	if (err) {
		fprintf(stderr, "table: %s\n", strerror(-err));
		goto out;
	}

	uint32_t ninit = rd_u32(&r);
	if ((err = rd_batch(&r, ninit, dim, &keys, &vals)) ||
	    (err = de_table_assign(fx.t, keys, ninit, vals, NULL, 0))) {
		fprintf(stderr, "init: %s\n", strerror(-err));
		goto out;
	}
	free(keys);
	free(vals);
	keys = NULL;
	vals = NULL;

	uint32_t nsteps = rd_u32(&r);
	for (uint32_t s = 1; s <= nsteps; s++) {
		cfg.lr = rd_f64(&r);
		uint32_t n = rd_u32(&r);
		size_t applied;
		if ((err = rd_batch(&r, n, dim, &keys, &vals)) ||
		    (err = de_optim_update(fx.t, &cfg, keys, n, vals, s, &applied))) {
			fprintf(stderr, "step %u: %s\n", s, strerror(-err));
			rc = 1;
			goto out;
		}
		/* applied = distinct nonzero keys of the batch */
		size_t distinct = 0;
		for (uint32_t i = 0; i < n; i++) {
			bool seen = !keys[i];
			for (uint32_t k = 0; k < i && !seen; k++)
				seen = keys[k] == keys[i];
			distinct += !seen;
		}
		if (applied != distinct) {
			fprintf(stderr, "step %u: applied %zu, expected %zu\n", s, applied, distinct);
			rc = 1;
			goto out;
		}
		free(keys);
		free(vals);
		keys = NULL;
		vals = NULL;
	}

	uint32_t nout = rd_u32(&r);
	keys = malloc((nout ? nout : 1) * sizeof(uint64_t));
	uint32_t rf = de_table_row_floats(fx.t);
	rows = malloc((nout ? (size_t)nout * rf : 1) * sizeof(float));
	aux = malloc((nout ? nout : 1) * sizeof(uint64_t));
	if (!keys || !rows || !aux)
		goto out;
	rd(&r, keys, nout * sizeof(uint64_t));
	if (r.bad) {
		fprintf(stderr, "%s: truncated\n", in);
		goto out;
	}
	if ((err = read_rows(fx.t, keys, nout, rows, aux))) {
		fprintf(stderr, "read rows: %s\n", strerror(-err));
		goto out;
	}
	out = fopen(outp, "wb");
	if (!out) {
		perror(outp);
		goto out;
	}
	bool ok = fwrite(&rf, sizeof(rf), 1, out) == 1;
	for (uint32_t i = 0; i < nout && ok; i++)
		ok = fwrite(&aux[i], sizeof(uint64_t), 1, out) == 1 &&
		     fwrite(rows + (size_t)i * rf, sizeof(float), rf, out) == rf;
	if (fclose(out) || !ok) {
		fprintf(stderr, "%s: write failed\n", outp);
		goto out;
	}
	rc = 0;
out:
	free(aux);
	free(rows);
	free(keys);
	free(vals);
	if (fx.t)
		fixture_close(&fx);
	fclose(r.f);
	return rc;
}

/* ---- self test --------------------------------------------------------------------------- */

static void test_config(void)
{
	static const uint32_t slots[] = { [DE_OPT_SGD] = 0, 1, 1, 1, 2, 2, 2, 1 };
	char why[200];
	for (int k = DE_OPT_SGD; k <= DE_OPT_RMSPROP; k++) {
		struct de_optim_config c;
		de_optim_defaults((enum de_optimizer)k, &c);
		CHECK(de_optim_slots((enum de_optimizer)k) == slots[k]);
		CHECK(de_optim_check(&c, why, sizeof(why)) == 0);
		CHECK(strcmp(de_optim_name((enum de_optimizer)k), "?") != 0);
	}
	CHECK(de_optim_slots((enum de_optimizer)99) == UINT32_MAX);
	CHECK(de_optim_check(NULL, NULL, 0) == -EINVAL);

	struct { enum de_optimizer k; size_t off; double v; } bad[] = {
		{ DE_OPT_SGD, offsetof(struct de_optim_config, lr), -1 },
		{ DE_OPT_SGD, offsetof(struct de_optim_config, lr), NAN },
		{ DE_OPT_SGD, offsetof(struct de_optim_config, weight_decay), -0.1 },
		{ DE_OPT_MOMENTUM, offsetof(struct de_optim_config, momentum), -0.5 },
		{ DE_OPT_NESTEROV, offsetof(struct de_optim_config, dampening), 0.1 },
		{ DE_OPT_NESTEROV, offsetof(struct de_optim_config, momentum), 0 },
		{ DE_OPT_ADAGRAD, offsetof(struct de_optim_config, initial_accumulator_value), -1 },
		{ DE_OPT_ADAM, offsetof(struct de_optim_config, beta1), 1.0 },
		{ DE_OPT_ADAMW, offsetof(struct de_optim_config, beta2), -0.1 },
		{ DE_OPT_ADAM, offsetof(struct de_optim_config, eps), -1e-8 },
		{ DE_OPT_RMSPROP, offsetof(struct de_optim_config, momentum), 0.9 },
		{ DE_OPT_RMSPROP, offsetof(struct de_optim_config, alpha), 1.5 },
		{ DE_OPT_FTRL, offsetof(struct de_optim_config, lr), 0 },
		{ DE_OPT_FTRL, offsetof(struct de_optim_config, lr_power), 0.5 },
		{ DE_OPT_FTRL, offsetof(struct de_optim_config, l1), -1 },
		{ DE_OPT_FTRL, offsetof(struct de_optim_config, weight_decay), 0.1 },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct de_optim_config c;
		de_optim_defaults(bad[i].k, &c);
		*(double *)((char *)&c + bad[i].off) = bad[i].v;
		why[0] = 0;
		CHECK(de_optim_check(&c, why, sizeof(why)) == -EINVAL);
		CHECK(why[0] != 0);
	}
	struct de_optim_config c;
	de_optim_defaults(DE_OPT_RMSPROP, &c);
	c.centered = 1;
	CHECK(de_optim_check(&c, NULL, 0) == -EINVAL);
	c.kind = (enum de_optimizer)-1;
	CHECK(de_optim_check(&c, NULL, 0) == -EINVAL);
}

static void test_update(void)
{
	struct fixture fx;
	enum { D = 4, RF = 4 * D }; /* 3 slots */
	if (fixture_open(&fx, D, 3, 0.5f, 7.0f)) {
		CHECK(!"fixture");
		return;
	}
	struct de_optim_config c;
	de_optim_defaults(DE_OPT_SGD, &c);
	c.lr = 1.0;
	size_t applied = 99;

	/* argument errors */
	float g1[D] = { 1, 2, 3, 4 };
	uint64_t k1 = 5;
	CHECK(de_optim_update(NULL, &c, &k1, 1, g1, 1, NULL) == -EINVAL);
	CHECK(de_optim_update(fx.t, NULL, &k1, 1, g1, 1, NULL) == -EINVAL);
	CHECK(de_optim_update(fx.t, &c, NULL, 1, g1, 1, NULL) == -EINVAL);
	CHECK(de_optim_update(fx.t, &c, &k1, 1, NULL, 1, NULL) == -EINVAL);
	CHECK(de_optim_update(fx.t, &c, NULL, 0, NULL, 1, &applied) == 0 && applied == 0);
	struct de_optim_config badc = c;
	badc.lr = -1;
	CHECK(de_optim_update(fx.t, &badc, &k1, 1, g1, 1, NULL) == -EINVAL);

	/* an untouched row: assigned, never in a batch */
	uint64_t k9 = 9;
	float v9[D] = { 0.1f, -0.2f, 0.3f, -0.4f };
	CHECK(de_table_assign(fx.t, &k9, 1, v9, NULL, 0) == 0);

	/* duplicates summed, key 0 ignored, missing keys created from the initializer (0.5) */
	uint64_t keys[] = { 5, 0, 5, 7, 5 };
	float g[5][D] = { { 1, 2, 3, 4 }, { 100, 100, 100, 100 }, { 0.5f, 0.5f, 0.5f, 0.5f },
			  { -1, -1, -1, -1 }, { 0.25f, 0, 0, 0 } };
	CHECK(de_optim_update(fx.t, &c, keys, 5, &g[0][0], 1, &applied) == 0);
	CHECK(applied == 2);
	uint64_t q[] = { 5, 7, 9, 0 };
	float rows[4 * RF];
	uint64_t aux[4];
	CHECK(read_rows(fx.t, q, 4, rows, aux) == 0);
	float want5[D] = { 0.5f - 1.75f, 0.5f - 2.5f, 0.5f - 3.5f, 0.5f - 4.5f };
	for (int j = 0; j < D; j++) {
		CHECK(rows[j] == want5[j]);
		CHECK(rows[RF + j] == 1.5f);
		CHECK(rows[2 * RF + j] == v9[j]); /* bit-identical */
	}
	CHECK(aux[0] == 1 && aux[1] == 1 && aux[2] == 0);
	struct de_table_stats st;
	CHECK(de_table_stats(fx.t, &st) == 0 && st.keys == 3); /* 5, 7, 9: key 0 not stored */

	/* the lr is read at each call */
	c.lr = 0.5;
	uint64_t k7 = 7;
	float g7[D] = { 1, 1, 1, 1 };
	CHECK(de_optim_update(fx.t, &c, &k7, 1, g7, 2, &applied) == 0 && applied == 1);
	CHECK(read_rows(fx.t, q, 3, rows, aux) == 0);
	CHECK(rows[RF] == 1.0f && aux[1] == 2);

	/* a non-finite gradient rejects the whole batch */
	uint64_t k2[] = { 5, 7 };
	float gn[2][D] = { { 1, 1, 1, 1 }, { 1, NAN, 1, 1 } };
	CHECK(de_optim_update(fx.t, &c, k2, 2, &gn[0][0], 3, &applied) == -EINVAL && applied == 0);
	gn[1][1] = INFINITY;
	CHECK(de_optim_update(fx.t, &c, k2, 2, &gn[0][0], 3, NULL) == -EINVAL);
	CHECK(read_rows(fx.t, q, 3, rows, aux) == 0);
	CHECK(rows[0] == want5[0] && rows[RF] == 1.0f && aux[0] == 1 && aux[1] == 2);

	/* too few slots: Adam needs 2, FTRL 2 (this table has 3, so both run; extra slots
	 * are left alone) */
	struct de_optim_config a;
	de_optim_defaults(DE_OPT_ADAM, &a);
	CHECK(de_optim_update(fx.t, &a, &k1, 1, g1, 4, NULL) == 0);
	fixture_close(&fx);

	if (fixture_open(&fx, D, 1, 0.0f, 0.0f)) {
		CHECK(!"fixture");
		return;
	}
	CHECK(de_optim_update(fx.t, &a, &k1, 1, g1, 1, NULL) == -EINVAL);
	de_optim_defaults(DE_OPT_FTRL, &a);
	CHECK(de_optim_update(fx.t, &a, &k1, 1, g1, 1, NULL) == -EINVAL);
	de_optim_defaults(DE_OPT_ADAGRAD, &a);
	CHECK(de_optim_update(fx.t, &a, &k1, 1, g1, 1, NULL) == 0);
	fixture_close(&fx);
}

/* slot_init (7 here) does not leak into optimizer state: momentum's first buffer is g,
 * Adam's per-key count drives its bias correction */
static void test_state_init(void)
{
	struct fixture fx;
	enum { D = 2 };
	if (fixture_open(&fx, D, 2, 1.0f, 7.0f)) {
		CHECK(!"fixture");
		return;
	}
	struct de_optim_config c;
	de_optim_defaults(DE_OPT_MOMENTUM, &c);
	c.lr = 0.1;
	c.momentum = 0.9;
	uint64_t k = 3;
	float g[D] = { 1, -2 };
	CHECK(de_optim_update(fx.t, &c, &k, 1, g, 1, NULL) == 0);
	float row[3 * D];
	uint64_t aux;
	CHECK(read_rows(fx.t, &k, 1, row, &aux) == 0);
	CHECK(row[D] == 1.0f && row[D + 1] == -2.0f && aux == 1);
	CHECK(fabsf(row[0] - 0.9f) < 1e-7f && fabsf(row[1] - 1.2f) < 1e-7f);

	/* Adam's first step moves every element by about lr (m/sqrt(v) = sign(g)) */
	uint64_t k2 = 4;
	de_optim_defaults(DE_OPT_ADAM, &c);
	c.lr = 0.01;
	for (int s = 1; s <= 3; s++) {
		CHECK(de_optim_update(fx.t, &c, &k2, 1, g, (uint64_t)s, NULL) == 0);
		CHECK(read_rows(fx.t, &k2, 1, row, &aux) == 0);
		CHECK(aux == (uint64_t)s);
		CHECK(fabsf(row[0] - (1.0f - 0.01f * (float)s)) < 1e-5f);
		CHECK(fabsf(row[1] - (1.0f + 0.01f * (float)s)) < 1e-5f);
	}
	fixture_close(&fx);
}

int main(int argc, char **argv)
{
	if (argc == 2 && !strcmp(argv[1], "--selftest")) {
		test_config();
		test_update();
		test_state_init();
		if (failures) {
			fprintf(stderr, "learn_driver selftest: %d failures\n", failures);
			return 1;
		}
		printf("learn_driver selftest: ok\n");
		return 0;
	}
	if (argc == 3)
		return run_stream(argv[1], argv[2]);
	fprintf(stderr, "usage: %s STREAM OUT | --selftest\n", argv[0]);
	return 2;
}
