/*
 * test_tf_kernels.c — the dynemb TensorFlow kernels (tf_op/kernels.c, de_tf.c) run
 * through tests/tf_standin/, a stand-in of TensorFlow's C API, against a real dynembd.
 *
 * What this shows: our kernels, driven the way TensorFlow drives C-API kernels (as
 * modelled by the stand-in), give the values libdynemb gives, push the gradients a
 * reference SGD step computed here predicts, reject bad inputs with a status, and keep
 * the channel memory behind a wrapped output alive exactly until its deallocator runs
 * (once). What it does not show: that the library loads into a real TensorFlow — no
 * TensorFlow on these machines.
 *
 * Each test starts its own dynembd (binary from $DYNEMBD) on a private socket, as
 * tests/test_client.c does.
 *
 * Suites: config (the config text), lookup, strings, update, grads, errors, wrap,
 * threads, topk and sampled (when libdynemb has dynemb_topk / dynemb_sample).
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "de_tf.h"
#include "dynemb.h"
#include "tf_standin.h"
#include "../daemon_util.h"

void de_tf_register_all(TF_Status *status);

#define TIMEOUT 30

/* ---- the daemon (tests/daemon_util.h) --------------------------------------------------- */

static pid_t d_pid = -1;
static char d_sock[108];

static TF_Status *st;

static void setup(void)
{
	const char *bin = daemon_bin();
	snprintf(d_sock, sizeof d_sock, "/tmp/de-tf-%d.sock", (int)getpid());
	unlink(d_sock);
	const char *more[] = { "--max-batch", "256", "--data-bytes", "1M", NULL };
	const char *argv[24];
	daemon_argv(argv, 24, bin, d_sock, "error", more, NULL);
	d_pid = daemon_spawn(argv, SIGTERM, NULL);
	daemon_wait_listen(d_pid, d_sock, 5, NULL);
	st = TF_NewStatus();
	de_tf_register_all(st);
	cr_assert_eq(TF_GetCode(st), TF_OK, "register: %s", TF_Message(st));
}

static void teardown(void)
{
	de_tf_close_idle();
	if (d_pid > 0) {
		daemon_terminate(d_pid, 3);
		d_pid = -1;
	}
	unlink(d_sock);
	TF_DeleteStatus(st);
	st = NULL;
}

/* ---- helpers ----------------------------------------------------------------------------- */

static dynemb_client *ref_client(void)
{
	dynemb_client *c = NULL;
	struct dynemb_connect_opts o = { .name = "test_tf_ref", .timeout_ms = 5000 };
	int rc = dynemb_connect(d_sock, &o, &c);
	cr_assert_eq(rc, 0, "dynemb_connect: %s", dynemb_strerror(rc));
	return c;
}

static int ref_open(dynemb_client *c, const char *name, const char *config)
{
	struct dynemb_table_spec spec;
	char err[DE_TF_ERRLEN];
	cr_assert_eq(de_tf_parse_config(config, name, &spec, err, sizeof err), 0, "%s", err);
	int t, rc = dynemb_open(c, &spec, &t);
	cr_assert_eq(rc, 0, "dynemb_open: %s", dynemb_strerror(rc));
	return t;
}

static si_kernel *kernel(const char *op, const char *var, const char *config,
			 const struct si_attr *extra, size_t nextra)
{
	struct si_attr a[12] = {
		{ .name = "var_name", .kind = SI_STR, .s = var },
		{ .name = "config", .kind = SI_STR, .s = config },
		{ .name = "service_address", .kind = SI_STR, .s = d_sock },
		{ .name = "timeout_ms", .kind = SI_INT, .i = 5000 },
	};
	for (size_t i = 0; i < nextra; i++)
		a[4 + i] = extra[i];
	si_kernel *k = si_kernel_new(op, a, 4 + nextra, st);
	cr_assert_not_null(k, "%s: %s", op, TF_Message(st));
	return k;
}

static TF_Tensor *f32_scalar(float v) { return si_tensor(TF_FLOAT, NULL, 0, &v); }
static TF_Tensor *i64_scalar(int64_t v) { return si_tensor(TF_INT64, NULL, 0, &v); }

/* Run a lookup kernel: keys tensor -> values tensor (new reference) */
static TF_Tensor *run_lookup(si_kernel *k, TF_Tensor *keys)
{
	TF_Tensor *trig = f32_scalar(0), *in[2] = { keys, trig }, *out = NULL;
	si_compute(k, in, 2, &out, 1, st);
	TF_DeleteTensor(trig);
	cr_assert_eq(TF_GetCode(st), TF_OK, "lookup: %s", TF_Message(st));
	return out;
}

/* Run an update kernel; returns the count output, or -1 with st set */
static int64_t run_update(si_kernel *k, TF_Tensor *keys, TF_Tensor *vals, float lr, int64_t step)
{
	TF_Tensor *l = f32_scalar(lr), *s = i64_scalar(step), *in[4] = { keys, vals, l, s };
	TF_Tensor *out = NULL;
	si_compute(k, in, 4, &out, 1, st);
	TF_DeleteTensor(l);
	TF_DeleteTensor(s);
	if (TF_GetCode(st) != TF_OK)
		return -1;
	cr_assert_eq(TF_NumDims(out), 0);
	int64_t n = *(int64_t *)TF_TensorData(out);
	TF_DeleteTensor(out);
	return n;
}

static float val(uint64_t key, unsigned j) { return (float)key * 0.25f + (float)j * 0.5f - 3.0f; }

#define CFG_U8 "dim=8; init=uniform; init_a=-1; init_b=1; seed=7"

/* ---- config ------------------------------------------------------------------------------ */

Test(config, parses_every_kind_of_field)
{
	struct dynemb_table_spec s;
	char err[DE_TF_ERRLEN];
	int rc = de_tf_parse_config(
		" dim = 16 ;keys=string; init=trunc_normal; init_a=0.5; init_b=0.125; seed=42;"
		"optimizer=adam; lr=0.5; admission=count; admission_min_count=3;"
		"eviction=ttl; eviction_ttl=100; eviction_ttl_unit=seconds; eviction_disk_tier=1;"
		"durability=async; durability_window_ms=20; nslots=2; slot_init=0.25",
		"emb", &s, err, sizeof err);
	cr_assert_eq(rc, 0, "%s", err);
	cr_expect_str_eq(s.name, "emb");
	cr_expect_eq(s.dim, 16);
	cr_expect_eq(s.keys, DYNEMB_STRING_KEYS);
	cr_expect_eq(s.init, DYNEMB_TRUNC_NORMAL);
	cr_expect_eq(s.init_a, 0.5f);
	cr_expect_eq(s.init_b, 0.125f);
	cr_expect_eq(s.seed, 42);
	cr_expect_eq(s.nslots, 2);
	cr_expect_eq(s.slot_init, 0.25f);
	cr_expect_eq(s.optim.kind, DYNEMB_OPTIM_ADAM);
	cr_expect_eq(s.optim.lr, 0.5);
	/* torch.optim.Adam's defaults for the fields not given */
	cr_expect_eq(s.optim.beta1, 0.9);
	cr_expect_eq(s.optim.beta2, 0.999);
	cr_expect_eq(s.optim.eps, 1e-8);
	cr_expect_eq(s.admission.mode, DYNEMB_ADMISSION_COUNT);
	cr_expect_eq(s.admission.min_count, 3);
	cr_expect_eq(s.eviction.policy, DYNEMB_EVICTION_TTL);
	cr_expect_eq(s.eviction.ttl, 100);
	cr_expect_eq(s.eviction.ttl_unit, DYNEMB_TIME_SECONDS);
	cr_expect(s.eviction.disk_tier);
	cr_expect_eq(s.durability.mode, DYNEMB_DURABLE_ASYNC);
	cr_expect_eq(s.durability.window_ms, 20);

	/* the text dynemb.tensorflow.config_text writes (tf_op/python/tests/test_tf_config.py) */
	rc = de_tf_parse_config("dim=16;keys=int64;init=uniform;init_a=-0.05;init_b=0.05;seed=0;"
				"nslots=0;slot_init=0.0;optimizer=adam;lr=0.5;beta1=0.8;beta2=0.95",
				"py", &s, err, sizeof err);
	cr_assert_eq(rc, 0, "%s", err);
	cr_expect_eq(s.init, DYNEMB_UNIFORM);
	cr_expect_eq(s.init_a, -0.05f);
	cr_expect_eq(s.init_b, 0.05f);
	cr_expect_eq(s.optim.kind, DYNEMB_OPTIM_ADAM);
	cr_expect_eq(s.optim.beta1, 0.8);
	cr_expect_eq(s.optim.beta2, 0.95);
	cr_expect_eq(s.optim.eps, 1e-8);

	rc = de_tf_parse_config("dim=4", "x", &s, err, sizeof err);
	cr_assert_eq(rc, 0, "%s", err);
	cr_expect_eq(s.init, DYNEMB_ZEROS);
	cr_expect_eq(s.optim.kind, DYNEMB_OPTIM_NONE);
	cr_expect_eq(s.keys, DYNEMB_INT64_KEYS);
}

Test(config, rejects_bad_text)
{
	static const struct {
		const char *text, *var, *msg;
	} bad[] = {
		{ "init=zeros", "x", "'dim' is required" },
		{ "dim=4; colour=red", "x", "unknown key 'colour'" },
		{ "dim=4; dim=5", "x", "given twice" },
		{ "dim=-4", "x", "non-negative integer" },
		{ "dim=4x", "x", "integer" },
		{ "dim=99999999999", "x", "integer" },
		{ "dim=4; init=gaussian", "x", "one of zeros, constant, uniform, trunc_normal" },
		{ "dim=4; init_a=nan", "x", "finite" },
		{ "dim=4; lr=0.1", "x", "needs an optimizer" },
		{ "dim=4; optimizer=sgd; lr=", "x", "empty value" },
		{ "dim=4; eviction_disk_tier=yes", "x", "0 or 1" },
		{ "dim 4", "x", "not key=value" },
		{ "dim=4", "", "var_name" },
		{ "dim=4", "0123456789012345678901234567890123456789012345678901234567890123",
		  "var_name" },
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct dynemb_table_spec s;
		char err[DE_TF_ERRLEN] = "";
		int rc = de_tf_parse_config(bad[i].text, bad[i].var, &s, err, sizeof err);
		cr_expect_eq(rc, -EINVAL, "'%s' accepted", bad[i].text);
		cr_expect(strstr(err, bad[i].msg), "'%s': message '%s' lacks '%s'", bad[i].text, err,
			  bad[i].msg);
	}
}

/* ---- lookup ------------------------------------------------------------------------------ */

Test(lookup, equals_de_lookup_and_assigned_rows, .init = setup, .fini = teardown,
     .timeout = TIMEOUT)
{
	dynemb_client *c = ref_client();
	int t = ref_open(c, "emb", CFG_U8);
	/* rows 1..4 assigned here; 100..107 created by the kernel (initializer) */
	uint64_t ak[4] = { 1, 2, 3, 4 };
	float av[4 * 8];
	for (int i = 0; i < 4; i++)
		for (unsigned j = 0; j < 8; j++)
			av[i * 8 + j] = val(ak[i], j);
	cr_assert_eq(dynemb_update(c, t, ak, 4, av, 0, NULL), 0);

	si_kernel *k = kernel("DynamicEmbeddingLookup", "emb", CFG_U8, NULL, 0);
	int64_t keys[3][4] = { { 1, 100, 2, 101 }, { 3, 3, 102, 4 }, { 103, 104, 1, 105 } };
	int64_t kd[2] = { 3, 4 };
	TF_Tensor *kt = si_tensor(TF_INT64, kd, 2, keys);
	TF_Tensor *out = run_lookup(k, kt);
	cr_assert_eq(TF_TensorType(out), TF_FLOAT);
	cr_assert_eq(TF_NumDims(out), 3);
	cr_assert_eq(TF_Dim(out, 0), 3);
	cr_assert_eq(TF_Dim(out, 1), 4);
	cr_assert_eq(TF_Dim(out, 2), 8);
	const float *v = TF_TensorData(out);
	float ref[12 * 8];
	cr_assert_eq(dynemb_lookup(c, t, (const uint64_t *)keys, 12, ref, NULL, DYNEMB_READONLY, 0), 0);
	for (int i = 0; i < 12; i++) {
		uint64_t key = ((uint64_t *)keys)[i];
		for (unsigned j = 0; j < 8; j++) {
			cr_expect_eq(v[i * 8 + j], ref[i * 8 + j], "key %llu col %u",
				     (unsigned long long)key, j);
			if (key <= 4)
				cr_expect_eq(v[i * 8 + j], val(key, j));
			else
				cr_expect(v[i * 8 + j] >= -1 && v[i * 8 + j] < 1);
		}
	}
	/* created keys are not all equal (the uniform initializer ran) */
	cr_expect_neq(v[1 * 8], v[3 * 8]);
	TF_DeleteTensor(out);

	/* an empty batch: shape [0, 8] */
	int64_t ed[2] = { 0, 8 };
	TF_Tensor *et = si_tensor(TF_INT64, ed, 1, NULL);
	out = run_lookup(k, et);
	cr_expect_eq(TF_NumDims(out), 2);
	cr_expect_eq(TF_Dim(out, 0), 0);
	cr_expect_eq(TF_Dim(out, 1), 8);
	TF_DeleteTensor(out);
	TF_DeleteTensor(et);

	/* readonly: a missing key reads as zeros and is not created */
	struct si_attr ro = { .name = "readonly", .kind = SI_INT, .i = 1 };
	si_kernel *kro = kernel("DynamicEmbeddingLookup", "emb", CFG_U8, &ro, 1);
	int64_t miss[2] = { 5000, 1 };
	int64_t md[1] = { 2 };
	TF_Tensor *mt = si_tensor(TF_INT64, md, 1, miss);
	out = run_lookup(kro, mt);
	v = TF_TensorData(out);
	for (unsigned j = 0; j < 8; j++) {
		cr_expect_eq(v[j], 0.0f);
		cr_expect_eq(v[8 + j], val(1, j));
	}
	uint8_t status;
	float tmp[8];
	cr_assert_eq(dynemb_lookup(c, t, (uint64_t *)&miss[0], 1, tmp, &status, DYNEMB_READONLY, 0), 0);
	cr_expect_eq(status, DYNEMB_ST_MISSING, "a readonly kernel lookup created the key");
	TF_DeleteTensor(out);
	TF_DeleteTensor(mt);
	si_kernel_free(kro);

	TF_DeleteTensor(kt);
	si_kernel_free(k);
	dynemb_close(c);
	struct si_counts n;
	si_get_counts(&n);
	cr_expect_eq(n.ok_failures, 0);
}

Test(lookup, batch_larger_than_one_request_is_copied, .init = setup, .fini = teardown,
     .timeout = TIMEOUT)
{
	/* --max-batch 256: 1000 keys cannot be one async request; the kernel falls back to
	 * the blocking (splitting) lookup and copies */
	dynemb_client *c = ref_client();
	int t = ref_open(c, "big", "dim=4; init=uniform; init_a=-1; init_b=1; seed=3");
	si_kernel *k = kernel("DynamicEmbeddingLookup", "big",
			      "dim=4; init=uniform; init_a=-1; init_b=1; seed=3", NULL, 0);
	int64_t keys[1000];
	for (int i = 0; i < 1000; i++)
		keys[i] = 1 + (i * 7919) % 1200;
	int64_t d[1] = { 1000 };
	TF_Tensor *kt = si_tensor(TF_INT64, d, 1, keys);
	struct si_counts before, after;
	si_get_counts(&before);
	TF_Tensor *out = run_lookup(k, kt);
	si_get_counts(&after);
	cr_expect_eq(after.wrapped, before.wrapped, "a batch over max-batch was wrapped");
	float *ref = malloc(1000 * 4 * sizeof *ref);
	cr_assert_eq(dynemb_lookup(c, t, (uint64_t *)keys, 1000, ref, NULL, DYNEMB_READONLY, 0), 0);
	cr_expect_eq(memcmp(ref, TF_TensorData(out), 1000 * 4 * sizeof *ref), 0);
	free(ref);
	TF_DeleteTensor(out);
	TF_DeleteTensor(kt);
	si_kernel_free(k);
	dynemb_close(c);
}

/* ---- strings ------------------------------------------------------------------------------ */

#define CFG_STR "dim=4; keys=string; init=constant; init_a=0.5; optimizer=sgd; lr=0.5"

Test(strings, update_then_lookup, .init = setup, .fini = teardown, .timeout = TIMEOUT)
{
	si_kernel *ku = kernel("DynamicEmbeddingUpdate", "words", CFG_STR, NULL, 0);
	si_kernel *kl = kernel("DynamicEmbeddingLookup", "words", CFG_STR, NULL, 0);
	const char *words[3] = { "apple", "banana with a long name past the small size", "" };
	int64_t d[1] = { 3 }, vd[2] = { 3, 4 };
	float vals[12];
	for (int i = 0; i < 12; i++)
		vals[i] = (float)i - 5.5f;
	TF_Tensor *kt = si_string_tensor(d, 1, words, NULL);
	TF_Tensor *vt = si_tensor(TF_FLOAT, vd, 2, vals);
	int64_t created = run_update(ku, kt, vt, -1, 0);
	cr_assert_eq(TF_GetCode(st), TF_OK, "%s", TF_Message(st));
	cr_expect_eq(created, 2, "two new strings (\"\" is the reserved empty key)");

	/* lookup in another order, with a new word (initializer 0.5) */
	const char *q[4] = { "cherry", "", "banana with a long name past the small size", "apple" };
	int64_t qd[2] = { 2, 2 };
	TF_Tensor *qt = si_string_tensor(qd, 2, q, NULL);
	TF_Tensor *out = run_lookup(kl, qt);
	cr_assert_eq(TF_NumDims(out), 3);
	const float *v = TF_TensorData(out);
	for (int j = 0; j < 4; j++) {
		cr_expect_eq(v[0 * 4 + j], 0.5f);
		cr_expect_eq(v[1 * 4 + j], 0.0f, "\"\" reads as zeros");
		cr_expect_eq(v[2 * 4 + j], vals[4 + j]);
		cr_expect_eq(v[3 * 4 + j], vals[0 + j]);
	}
	/* and libdynemb agrees */
	dynemb_client *c = ref_client();
	int t = ref_open(c, "words", CFG_STR);
	float ref[16];
	cr_assert_eq(dynemb_lookup_str(c, t, q, NULL, 4, ref, NULL, DYNEMB_READONLY, 0), 0);
	cr_expect_eq(memcmp(ref, v, sizeof ref), 0);

	/* gradients with string keys: "apple" twice, summed */
	const char *gk[3] = { "apple", "cherry", "apple" };
	float g[12];
	for (int i = 0; i < 12; i++)
		g[i] = 0.125f * (float)(i + 1);
	TF_Tensor *gkt = si_string_tensor(d, 1, gk, NULL);
	TF_Tensor *gt = si_tensor(TF_FLOAT, vd, 2, g);
	struct si_attr ga = { .name = "gradients", .kind = SI_INT, .i = 1 };
	si_kernel *kg = kernel("DynamicEmbeddingUpdate", "words", CFG_STR, &ga, 1);
	cr_expect_eq(run_update(kg, gkt, gt, -1, 1), 2);
	cr_assert_eq(TF_GetCode(st), TF_OK, "%s", TF_Message(st));
	float after[8];
	const char *two[2] = { "apple", "cherry" };
	cr_assert_eq(dynemb_lookup_str(c, t, two, NULL, 2, after, NULL, DYNEMB_READONLY, 0), 0);
	for (int j = 0; j < 4; j++) {
		cr_expect_float_eq(after[j], vals[j] - 0.5f * (g[j] + g[8 + j]), 1e-6);
		cr_expect_float_eq(after[4 + j], 0.5f - 0.5f * g[4 + j], 1e-6);
	}
	dynemb_close(c);
	TF_DeleteTensor(gkt);
	TF_DeleteTensor(gt);
	si_kernel_free(kg);
	TF_DeleteTensor(out);
	TF_DeleteTensor(qt);
	TF_DeleteTensor(kt);
	TF_DeleteTensor(vt);
	si_kernel_free(ku);
	si_kernel_free(kl);
}

/* ---- update and gradients ------------------------------------------------------------------ */

#define CFG_SGD "dim=3; init=constant; init_a=0.5; optimizer=sgd; lr=0.1"

Test(update, assigns_rows, .init = setup, .fini = teardown, .timeout = TIMEOUT)
{
	si_kernel *ku = kernel("DynamicEmbeddingUpdate", "u", CFG_SGD, NULL, 0);
	int64_t keys[2][2] = { { 10, 11 }, { 12, 10 } };
	int64_t kd[2] = { 2, 2 }, vd[3] = { 2, 2, 3 };
	float vals[12];
	for (int i = 0; i < 12; i++)
		vals[i] = (float)i;
	TF_Tensor *kt = si_tensor(TF_INT64, kd, 2, keys), *vt = si_tensor(TF_FLOAT, vd, 3, vals);
	cr_expect_eq(run_update(ku, kt, vt, -1, 3), 3, "%s", TF_Message(st));
	dynemb_client *c = ref_client();
	int t = ref_open(c, "u", CFG_SGD);
	float got[9];
	uint64_t q[3] = { 10, 11, 12 };
	cr_assert_eq(dynemb_lookup(c, t, q, 3, got, NULL, DYNEMB_READONLY, 0), 0);
	/* key 10 appears twice: the last assignment (row 3) wins */
	for (int j = 0; j < 3; j++) {
		cr_expect_eq(got[j], vals[9 + j]);
		cr_expect_eq(got[3 + j], vals[3 + j]);
		cr_expect_eq(got[6 + j], vals[6 + j]);
	}
	dynemb_close(c);
	TF_DeleteTensor(kt);
	TF_DeleteTensor(vt);
	si_kernel_free(ku);
}

Test(grads, sgd_step_with_summed_duplicates, .init = setup, .fini = teardown, .timeout = TIMEOUT)
{
	struct si_attr ga = { .name = "gradients", .kind = SI_INT, .i = 1 };
	si_kernel *kg = kernel("DynamicEmbeddingUpdate", "g", CFG_SGD, &ga, 1);
	/* keys 5, 7, 5, 9 (9 is new: created at 0.5 then stepped) */
	int64_t keys[4] = { 5, 7, 5, 9 };
	float g[12];
	for (int i = 0; i < 12; i++)
		g[i] = 0.25f * (float)(i % 5) - 0.3f;
	int64_t kd[1] = { 4 }, gd[2] = { 4, 3 };
	TF_Tensor *kt = si_tensor(TF_INT64, kd, 1, keys), *gt = si_tensor(TF_FLOAT, gd, 2, g);

	/* reference rows: 5 and 7 start at 0.5 (created by a lookup) */
	dynemb_client *c = ref_client();
	int t = ref_open(c, "g", CFG_SGD);
	float w[3 * 3];
	uint64_t uk[3] = { 5, 7, 9 };
	cr_assert_eq(dynemb_lookup(c, t, uk, 2, w, NULL, 0, 0), 0);
	w[6] = w[7] = w[8] = 0.5f;

	cr_expect_eq(run_update(kg, kt, gt, -1, 1), 3, "%s", TF_Message(st)); /* lr 0.1 */
	for (int j = 0; j < 3; j++) {
		w[0 + j] -= 0.1f * (g[0 + j] + g[6 + j]);
		w[3 + j] -= 0.1f * g[3 + j];
		w[6 + j] -= 0.1f * g[9 + j];
	}
	cr_expect_eq(run_update(kg, kt, gt, 0.5f, 2), 3, "%s", TF_Message(st)); /* lr override */
	for (int j = 0; j < 3; j++) {
		w[0 + j] -= 0.5f * (g[0 + j] + g[6 + j]);
		w[3 + j] -= 0.5f * g[3 + j];
		w[6 + j] -= 0.5f * g[9 + j];
	}
	float got[9];
	cr_assert_eq(dynemb_lookup(c, t, uk, 3, got, NULL, DYNEMB_READONLY, 0), 0);
	for (int i = 0; i < 9; i++)
		cr_expect_float_eq(got[i], w[i], 1e-6, "row %d col %d: %g vs %g", i / 3, i % 3,
				   (double)got[i], (double)w[i]);
	dynemb_close(c);
	TF_DeleteTensor(kt);
	TF_DeleteTensor(gt);
	si_kernel_free(kg);
}

/* ---- errors --------------------------------------------------------------------------- */

static void expect_fail(TF_Code code, const char *part)
{
	cr_expect_eq(TF_GetCode(st), code, "code %d, want %d (%s)", TF_GetCode(st), code,
		     TF_Message(st));
	cr_expect(strstr(TF_Message(st), part), "message '%s' lacks '%s'", TF_Message(st), part);
}

Test(errors, bad_inputs_set_a_status, .init = setup, .fini = teardown, .timeout = TIMEOUT)
{
	si_kernel *kl = kernel("DynamicEmbeddingLookup", "e", CFG_SGD, NULL, 0);
	TF_Tensor *out = NULL, *trig = f32_scalar(0);

	/* wrong dtype: float keys; string keys for an int64 table */
	float fk[2] = { 1, 2 };
	int64_t d2[1] = { 2 };
	TF_Tensor *ft = si_tensor(TF_FLOAT, d2, 1, fk);
	TF_Tensor *in[2] = { ft, trig };
	si_compute(kl, in, 2, &out, 1, st);
	expect_fail(TF_INVALID_ARGUMENT, "keys must be a tf.int64 tensor");
	cr_expect_null(out);
	const char *sk[2] = { "a", "b" };
	TF_Tensor *stt = si_string_tensor(d2, 1, sk, NULL);
	in[0] = stt;
	si_compute(kl, in, 2, &out, 1, st);
	expect_fail(TF_INVALID_ARGUMENT, "table 'e' has int64 keys");

	/* wrong rank: keys of rank 16 (output would be rank 17) */
	int64_t d16[16];
	for (int i = 0; i < 16; i++)
		d16[i] = 1;
	int64_t one = 1;
	TF_Tensor *r16 = si_tensor(TF_INT64, d16, 16, &one);
	in[0] = r16;
	si_compute(kl, in, 2, &out, 1, st);
	expect_fail(TF_INVALID_ARGUMENT, "rank 16");

	/* keys / values shape mismatch, in both kinds of update */
	for (int grads = 0; grads < 2; grads++) {
		struct si_attr ga = { .name = "gradients", .kind = SI_INT, .i = grads };
		si_kernel *ku = kernel("DynamicEmbeddingUpdate", "e", CFG_SGD, &ga, 1);
		int64_t keys[2] = { 1, 2 };
		int64_t vd_bad[3][3] = { { 2, 4, 0 }, { 3, 3, 0 }, { 2, 3, 1 } };
		int vr[3] = { 2, 2, 3 };
		float vals[24] = { 0 };
		TF_Tensor *kt = si_tensor(TF_INT64, d2, 1, keys);
		for (int b = 0; b < 3; b++) {
			TF_Tensor *vt = si_tensor(TF_FLOAT, vd_bad[b], vr[b], vals);
			cr_expect_eq(run_update(ku, kt, vt, -1, 0), -1);
			expect_fail(TF_INVALID_ARGUMENT, grads ? "gradients must have shape"
							       : "values must have shape");
			TF_DeleteTensor(vt);
		}
		/* int64 values; a non-scalar lr; a negative step */
		int64_t vd[2] = { 2, 3 };
		TF_Tensor *vi = si_tensor(TF_INT64, vd, 2, vals);
		cr_expect_eq(run_update(ku, kt, vi, -1, 0), -1);
		expect_fail(TF_INVALID_ARGUMENT, "values must be float32");
		TF_DeleteTensor(vi);
		TF_Tensor *vt = si_tensor(TF_FLOAT, vd, 2, vals);
		TF_Tensor *lr2 = si_tensor(TF_FLOAT, d2, 1, fk), *s0 = i64_scalar(0);
		TF_Tensor *uin[4] = { kt, vt, lr2, s0 }, *uo = NULL;
		si_compute(ku, uin, 4, &uo, 1, st);
		expect_fail(TF_INVALID_ARGUMENT, "lr must be a float32 scalar");
		cr_expect_eq(run_update(ku, kt, vt, -1, -5), -1);
		expect_fail(TF_INVALID_ARGUMENT, "step must be >= 0");
		/* a non-finite gradient: the daemon refuses, nothing applied */
		if (grads) {
			float nanv[6] = { 0, NAN, 0, 0, 0, 0 };
			TF_Tensor *nt = si_tensor(TF_FLOAT, vd, 2, nanv);
			cr_expect_eq(run_update(ku, kt, nt, -1, 0), -1);
			expect_fail(TF_INVALID_ARGUMENT, "DynamicEmbeddingUpdate");
			TF_DeleteTensor(nt);
		}
		TF_DeleteTensor(lr2);
		TF_DeleteTensor(s0);
		TF_DeleteTensor(vt);
		TF_DeleteTensor(kt);
		si_kernel_free(ku);
	}

	/* gradients to a table without optimizer */
	struct si_attr ga = { .name = "gradients", .kind = SI_INT, .i = 1 };
	si_kernel *kn = kernel("DynamicEmbeddingUpdate", "plain", "dim=2", &ga, 1);
	int64_t k1[1] = { 3 }, d1[1] = { 1 }, vd1[2] = { 1, 2 };
	float g1[2] = { 1, 1 };
	TF_Tensor *kt1 = si_tensor(TF_INT64, d1, 1, k1), *gt1 = si_tensor(TF_FLOAT, vd1, 2, g1);
	cr_expect_eq(run_update(kn, kt1, gt1, -1, 0), -1);
	expect_fail(TF_FAILED_PRECONDITION, "has no optimizer");
	si_kernel_free(kn);

	/* table config mismatch: "e" exists with dim 3 */
	si_kernel *km = kernel("DynamicEmbeddingLookup", "e", "dim=4", NULL, 0);
	in[0] = kt1;
	si_compute(km, in, 2, &out, 1, st);
	expect_fail(TF_INVALID_ARGUMENT, "another config");
	si_kernel_free(km);

	/* unknown service address */
	struct si_attr a[4] = {
		{ .name = "var_name", .kind = SI_STR, .s = "e" },
		{ .name = "config", .kind = SI_STR, .s = CFG_SGD },
		{ .name = "service_address", .kind = SI_STR, .s = "/tmp/no-such-dynemb.sock" },
	};
	si_kernel *kx = si_kernel_new("DynamicEmbeddingLookup", a, 3, st);
	cr_assert_not_null(kx);
	si_compute(kx, in, 2, &out, 1, st);
	expect_fail(TF_UNAVAILABLE, "/tmp/no-such-dynemb.sock");
	si_kernel_free(kx);

	/* bad config / attrs at construction */
	a[2].s = d_sock;
	a[1].s = "dim=4; optimiser=sgd";
	cr_expect_null(si_kernel_new("DynamicEmbeddingLookup", a, 3, st));
	expect_fail(TF_INVALID_ARGUMENT, "unknown key 'optimiser'");
	a[1].s = "dim=4";
	a[0].s = "";
	cr_expect_null(si_kernel_new("DynamicEmbeddingUpdate", a, 3, st));
	expect_fail(TF_INVALID_ARGUMENT, "var_name must be 1..63 bytes");
	cr_expect_null(si_kernel_new("DynamicEmbeddingLookup", a, 1, st)); /* no config attr */
	cr_expect_neq(TF_GetCode(st), TF_OK);

	/* the pool still works after all that */
	int64_t good[1] = { 42 };
	TF_Tensor *gk = si_tensor(TF_INT64, d1, 1, good);
	out = run_lookup(kl, gk);
	cr_expect_eq(((float *)TF_TensorData(out))[0], 0.5f);
	TF_DeleteTensor(out);
	TF_DeleteTensor(gk);

	TF_DeleteTensor(kt1);
	TF_DeleteTensor(gt1);
	TF_DeleteTensor(r16);
	TF_DeleteTensor(stt);
	TF_DeleteTensor(ft);
	TF_DeleteTensor(trig);
	si_kernel_free(kl);
	struct si_counts n;
	si_get_counts(&n);
	cr_expect_eq(n.ok_failures, 0, "a kernel reported a failure with an OK status");
}

/* ---- wrapped outputs -------------------------------------------------------------------- */

Test(wrap, channel_memory_lives_until_the_deallocator_runs_once, .init = setup,
     .fini = teardown, .timeout = TIMEOUT)
{
	dynemb_client *c = ref_client();
	int t = ref_open(c, "w", "dim=4");
	enum { N = DE_TF_MAX_HELD + 3, K = 5 };
	uint64_t keys[N][K];
	float vals[N][K * 4];
	for (int r = 0; r < N; r++)
		for (int i = 0; i < K; i++) {
			keys[r][i] = 1000 + (uint64_t)(r * K + i);
			for (unsigned j = 0; j < 4; j++)
				vals[r][i * 4 + j] = val(keys[r][i], j);
		}
	cr_assert_eq(dynemb_update(c, t, &keys[0][0], N * K, &vals[0][0], 0, NULL), 0);

	si_kernel *k = kernel("DynamicEmbeddingLookup", "w", "dim=4", NULL, 0);
	struct si_counts c0, c1, c2;
	si_get_counts(&c0);
	TF_Tensor *outs[N];
	int64_t kd[1] = { K };
	for (int r = 0; r < N; r++) {
		TF_Tensor *kt = si_tensor(TF_INT64, kd, 1, keys[r]);
		outs[r] = run_lookup(k, kt);
		TF_DeleteTensor(kt);
	}
	si_get_counts(&c1);
	/* the first MAX_HELD outputs wrap channel memory, the rest are copies */
	cr_expect_eq(c1.wrapped - c0.wrapped, DE_TF_MAX_HELD);
	cr_expect_eq(c1.copied, c0.copied, "channel memory is 64-byte aligned: no copy by TF");
	cr_expect_eq(c1.dealloc_runs, c0.dealloc_runs, "a deallocator ran while its tensor lives");
	unsigned open, idle, held;
	cr_assert_eq(de_tf_pool_counts(d_sock, 5000, &open, &idle, &held), 0);
	cr_expect_eq(held, DE_TF_MAX_HELD);
	cr_expect_eq(open, DE_TF_MAX_HELD + 1);
	/* every output still has its own values although later lookups ran */
	for (int r = 0; r < N; r++)
		cr_expect_eq(memcmp(TF_TensorData(outs[r]), vals[r], sizeof vals[r]), 0,
			     "output %d changed under a later lookup", r);
	/* an output shared by a second reference (TF_SetOutput copies) lives on */
	TF_Tensor *extra = NULL;
	{
		TF_Tensor *trig = f32_scalar(0), *kt = si_tensor(TF_INT64, kd, 1, keys[0]);
		de_tf_close_idle();
		TF_DeleteTensor(outs[N - 1]); /* frees a copy: no deallocator */
		si_get_counts(&c2);
		cr_expect_eq(c2.dealloc_runs, c0.dealloc_runs);
		TF_DeleteTensor(outs[0]);     /* gives one connection back */
		si_get_counts(&c2);
		cr_expect_eq(c2.dealloc_runs - c0.dealloc_runs, 1);
		TF_Tensor *in[2] = { kt, trig };
		si_compute(k, in, 2, &extra, 1, st);
		cr_assert_eq(TF_GetCode(st), TF_OK, "%s", TF_Message(st));
		TF_DeleteTensor(kt);
		TF_DeleteTensor(trig);
		outs[0] = extra;
		outs[N - 1] = NULL;
	}
	for (int r = 0; r < N; r++)
		TF_DeleteTensor(outs[r]);
	si_get_counts(&c2);
	cr_expect_eq(c2.dealloc_runs - c0.dealloc_runs, c2.wrapped - c0.wrapped,
		     "every wrapped output's deallocator ran exactly once");
	cr_assert_eq(de_tf_pool_counts(d_sock, 5000, &open, &idle, &held), 0);
	cr_expect_eq(held, 0);
	cr_expect_eq(idle, open);
	si_kernel_free(k);
	dynemb_close(c);
}

/* ---- threads ------------------------------------------------------------------------------ */

static si_kernel *thr_kernel;
static void *thr(void *arg)
{
	uintptr_t id = (uintptr_t)arg;
	int bad = 0;
	for (int it = 0; it < 50; it++) {
		int64_t keys[16];
		for (int i = 0; i < 16; i++)
			keys[i] = (int64_t)(id * 100000 + (uint64_t)it * 16 + (uint64_t)i + 1);
		int64_t d[1] = { 16 };
		TF_Status *s = TF_NewStatus();
		TF_Tensor *kt = si_tensor(TF_INT64, d, 1, keys), *trig = f32_scalar(0), *out = NULL;
		TF_Tensor *in[2] = { kt, trig };
		si_compute(thr_kernel, in, 2, &out, 1, s);
		if (TF_GetCode(s) != TF_OK)
			bad++;
		else
			for (int i = 0; i < 16 * 2; i++)
				bad += ((float *)TF_TensorData(out))[i] != 0.25f;
		TF_DeleteTensor(out);
		TF_DeleteTensor(kt);
		TF_DeleteTensor(trig);
		TF_DeleteStatus(s);
	}
	return (void *)(uintptr_t)bad;
}

Test(threads, concurrent_computes_share_the_pool, .init = setup, .fini = teardown,
     .timeout = TIMEOUT)
{
	thr_kernel = kernel("DynamicEmbeddingLookup", "th", "dim=2; init=constant; init_a=0.25",
			    NULL, 0);
	pthread_t th[4];
	for (uintptr_t i = 0; i < 4; i++)
		pthread_create(&th[i], NULL, thr, (void *)i);
	for (int i = 0; i < 4; i++) {
		void *r;
		pthread_join(th[i], &r);
		cr_expect_eq((uintptr_t)r, 0, "thread %d saw wrong values or errors", i);
	}
	unsigned open, idle, held;
	cr_assert_eq(de_tf_pool_counts(d_sock, 5000, &open, &idle, &held), 0);
	cr_expect_leq(open, 4, "more connections than concurrent computes");
	cr_expect_eq(held, 0);
	si_kernel_free(thr_kernel);
}

/* ---- top-k and sampled logits ------------------------------------------------------------ */

/* Reference top-k: every key's score, best first, ties by key. */
struct scored {
	uint64_t key;
	float score;
};
static int by_score(const void *a, const void *b)
{
	const struct scored *x = a, *y = b;
	if (x->score != y->score)
		return x->score > y->score ? -1 : 1;
	return x->key < y->key ? -1 : x->key > y->key;
}

Test(topk, matches_brute_force_and_de_topk, .init = setup, .fini = teardown, .timeout = TIMEOUT)
{
	dynemb_client *c = ref_client();
	int t = ref_open(c, "tk", "dim=4");
	enum { NK = 20 };
	uint64_t keys[NK];
	float rows[NK * 4];
	for (int i = 0; i < NK; i++) {
		keys[i] = 100 + (uint64_t)i * 3;
		for (unsigned j = 0; j < 4; j++)
			rows[i * 4 + j] = sinf((float)(i * 4 + j)) * (1.0f + (float)i / 10);
	}
	cr_assert_eq(dynemb_update(c, t, keys, NK, rows, 0, NULL), 0);
	float q[2 * 4] = { 1, -0.5f, 0.25f, 2, -1, 0, 1, 0.5f };
	int64_t qd[2] = { 2, 4 };
	for (int metric = 0; metric < 2; metric++)
		for (int kk = 5; kk <= 30; kk += 25) {
			struct si_attr a[2] = { { .name = "k", .kind = SI_INT, .i = kk },
						{ .name = "metric", .kind = SI_STR,
						  .s = metric ? "cosine" : "dot" } };
			si_kernel *k = kernel("DynamicEmbeddingTopK", "tk", "dim=4", a, 2);
			TF_Tensor *qt = si_tensor(TF_FLOAT, qd, 2, q), *out[3];
			si_compute(k, &qt, 1, out, 3, st);
			cr_assert_eq(TF_GetCode(st), TF_OK, "%s", TF_Message(st));
			cr_assert_eq(TF_Dim(out[0], 0), 2);
			cr_assert_eq(TF_Dim(out[0], 1), kk);
			const uint64_t *ok = TF_TensorData(out[0]);
			const float *os = TF_TensorData(out[1]);
			const int32_t *of = TF_TensorData(out[2]);
			uint64_t rk[2 * 30];
			float rs[2 * 30];
			uint32_t rf[2];
			cr_assert_eq(dynemb_topk(c, t, q, 2, (uint32_t)kk,
					     metric ? DYNEMB_METRIC_COSINE : DYNEMB_METRIC_DOT, rk, rs, rf), 0);
			for (int qi = 0; qi < 2; qi++) {
				struct scored all[NK];
				float qn = 0;
				for (unsigned j = 0; j < 4; j++)
					qn += q[qi * 4 + j] * q[qi * 4 + j];
				for (int i = 0; i < NK; i++) {
					float dot = 0, rn = 0;
					for (unsigned j = 0; j < 4; j++) {
						dot += q[qi * 4 + j] * rows[i * 4 + j];
						rn += rows[i * 4 + j] * rows[i * 4 + j];
					}
					all[i].key = keys[i];
					all[i].score = metric ? dot / sqrtf(qn * rn) : dot;
				}
				qsort(all, NK, sizeof all[0], by_score);
				int want = kk < NK ? kk : NK;
				cr_expect_eq(of[qi], want);
				cr_expect_eq((uint32_t)of[qi], rf[qi]);
				for (int r = 0; r < kk; r++) {
					size_t o = (size_t)qi * (size_t)kk + (size_t)r;
					cr_expect_eq(ok[o], rk[o]);
					if (r < want) {
						cr_expect_eq(ok[o], all[r].key, "q %d rank %d", qi, r);
						cr_expect_float_eq(os[o], all[r].score, 1e-4);
					} else {
						cr_expect_eq(ok[o], 0);
						cr_expect(isinf(os[o]) && os[o] < 0);
					}
				}
			}
			for (int i = 0; i < 3; i++)
				TF_DeleteTensor(out[i]);
			TF_DeleteTensor(qt);
			si_kernel_free(k);
		}
	/* queries of the wrong width */
	struct si_attr a = { .name = "k", .kind = SI_INT, .i = 2 };
	si_kernel *k = kernel("DynamicEmbeddingTopK", "tk", "dim=4", &a, 1);
	int64_t bd[2] = { 2, 3 };
	TF_Tensor *bt = si_tensor(TF_FLOAT, bd, 2, q), *out[3];
	si_compute(k, &bt, 1, out, 3, st);
	expect_fail(TF_INVALID_ARGUMENT, "queries must have shape [nq, 4]");
	TF_DeleteTensor(bt);
	si_kernel_free(k);
	dynemb_close(c);
}

Test(sampled, logits_match_de_sample_and_brute_force, .init = setup, .fini = teardown,
     .timeout = TIMEOUT)
{
	dynemb_client *c = ref_client();
	int t = ref_open(c, "sm", "dim=4");
	enum { NK = 50, B = 3, S = 40 }; /* S large: accidental hits are all but certain */
	uint64_t keys[NK];
	float rows[NK * 4];
	for (int i = 0; i < NK; i++) {
		keys[i] = (uint64_t)i + 1;
		for (unsigned j = 0; j < 4; j++)
			rows[i * 4 + j] = val(keys[i], j) / 10;
	}
	cr_assert_eq(dynemb_update(c, t, keys, NK, rows, 0, NULL), 0);
	struct si_attr a[4] = { { .name = "num_sampled", .kind = SI_INT, .i = S },
				{ .name = "sampler", .kind = SI_STR, .s = "uniform" },
				{ .name = "seed", .kind = SI_INT, .i = 5 } };
	si_kernel *k = kernel("DynamicEmbeddingSampledLogits", "sm", "dim=4", a, 3);
	float x[B * 4] = { 1, 0, -1, 0.5f, 0.25f, 0.25f, 2, -1, 0, 1, 0, 1 };
	int64_t lab[B] = { 2, 7, 2 };
	int64_t xd[2] = { B, 4 }, ld[2] = { B, 1 };
	TF_Tensor *in[2] = { si_tensor(TF_FLOAT, xd, 2, x), si_tensor(TF_INT64, ld, 2, lab) };
	TF_Tensor *out[4];
	si_compute(k, in, 2, out, 4, st);
	cr_assert_eq(TF_GetCode(st), TF_OK, "%s", TF_Message(st));
	struct dynemb_sample_spec spec = { .kind = DYNEMB_SAMPLER_UNIFORM, .num_sampled = S, .unique = 1,
				       .power = 0.75, .seed = 5 };
	uint64_t smp[S];
	float sexp[S], texp[B];
	cr_assert_eq(dynemb_sample(c, t, &spec, (uint64_t *)lab, B, smp, sexp, texp, NULL), 0);
	const uint64_t *ks = TF_TensorData(out[2]);
	const float *lg = TF_TensorData(out[0]), *lb = TF_TensorData(out[1]);
	const float *w = TF_TensorData(out[3]);
	cr_assert_eq(TF_Dim(out[0], 1), 1 + S);
	cr_assert_eq(TF_Dim(out[3], 0), B + S);
	int hits = 0;
	for (int s = 0; s < S; s++)
		cr_expect_eq(ks[s], smp[s], "the same seed and table give the same draw");
	for (int b = 0; b < B; b++)
		for (int j = 0; j < 1 + S; j++) {
			uint64_t key = j == 0 ? (uint64_t)lab[b] : smp[j - 1];
			const float *row = &rows[(key - 1) * 4];
			const float *wr = j == 0 ? &w[b * 4] : &w[(B + j - 1) * 4];
			float dot = 0;
			for (unsigned d = 0; d < 4; d++) {
				dot += x[b * 4 + d] * row[d];
				cr_expect_eq(wr[d], row[d]);
			}
			float want = dot - logf(j == 0 ? texp[b] : sexp[j - 1]);
			if (j > 0 && key == (uint64_t)lab[b]) {
				hits++;
				cr_expect(lg[b * (1 + S) + j] < -1e37f, "accidental hit not removed");
			}
			else
				cr_expect_float_eq(lg[b * (1 + S) + j], want, 1e-4, "b %d j %d", b, j);
			cr_expect_eq(lb[b * (1 + S) + j], j == 0 ? 1.0f : 0.0f);
		}
	cr_expect_gt(hits, 0, "this draw has no accidental hit: the check above did not run");
	for (int i = 0; i < 4; i++)
		TF_DeleteTensor(out[i]);
	/* labels whose batch differs from inputs' */
	int64_t ld2[2] = { 2, 1 };
	TF_Tensor *l2 = si_tensor(TF_INT64, ld2, 2, lab), *in2[2] = { in[0], l2 };
	si_compute(k, in2, 2, out, 4, st);
	expect_fail(TF_INVALID_ARGUMENT, "labels must have shape [batch, num_true]");
	TF_DeleteTensor(l2);
	TF_DeleteTensor(in[0]);
	TF_DeleteTensor(in[1]);
	si_kernel_free(k);
	dynemb_close(c);
}
