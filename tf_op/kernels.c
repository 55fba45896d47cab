/*
 * kernels.c — the dynemb TensorFlow ops, written against TensorFlow's stable C API
 * (tf_c_api.h): op definitions, CPU kernels and their registration. A thin layer over
 * libdynemb: the logic that does not touch TensorFlow types is in de_tf.c.
 *
 * Ops (all stateful: they read or change the daemon's tables; every op has the attrs
 * var_name, config, service_address and timeout_ms, see de_tf.h for config):
 *
 *   DynamicEmbeddingLookup(keys: Tkeys, trigger: float) -> values: float
 *       keys of any shape (int64, or string for keys=string tables); values
 *       keys.shape + [dim]. attr readonly (int): 1 = do not create missing keys. trigger
 *       is ignored here: it is the float input the registered gradient (Python) hangs the
 *       gradient push on.
 *   DynamicEmbeddingUpdate(keys: Tkeys, values: float, lr: float, step: int64) -> count: int64
 *       gradients=0: assign values (dynemb_update; count = keys created); gradients=1: push
 *       them as gradients to the table's optimizer (dynemb_apply_gradients, duplicates summed;
 *       lr > 0 overrides the table's lr; count = distinct keys stepped).
 *   DynamicEmbeddingTopK(queries: float [nq, dim]) -> keys: int64 [nq, k],
 *       scores: float [nq, k], found: int32 [nq]            (dynemb_topk; attrs k, metric)
 *   DynamicEmbeddingSampledLogits(inputs: float [B, dim], labels: Tkeys [B, T]) ->
 *       logits: float [B, T + S], out_labels: float [B, T + S], sampled: int64 [S],
 *       weights: float [B*T + S, dim]
 *       TensorFlow's _compute_sampled_logits with the candidates drawn by the daemon
 *       (dynemb_sample): logits = inputs . w (true classes first, then the S sampled ones),
 *       minus log(expected count) when subtract_log_q, -FLT_MAX added where a sampled
 *       candidate is one of the row's labels when remove_accidental_hits; out_labels =
 *       1/T on the true columns. weights are the rows used (labels row-major, then the
 *       sampled keys), for the gradient (Python).
 *
 * Output memory. Lookup of int64 keys wraps the channel's result memory
 * (dynemb_request_vals) in the output tensor without a copy: that memory stays valid only
 * until the connection's next request, so the connection is *held* (de_tf_try_hold)
 * and used by nobody until TensorFlow frees the tensor: the deallocator gives it back
 * to the pool. At most DE_TF_MAX_HELD connections per pool are held; past that, and for
 * string keys (libdynemb has no async string lookup), batches that do not fit one
 * request, and every other op, outputs are allocated by TensorFlow and filled by a
 * blocking call (one copy, out of the channel). TensorFlow itself copies data given to
 * TF_NewTensor that is not aligned for Eigen and calls the deallocator at once.
 *
 * Never: touch a connection after handing it to TF_NewTensor (the deallocator may have
 * run already), or crash on any input: every problem sets the status.
 */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "de_tf.h"
#include "dynemb.h"
#include "tf_c_api.h"

void de_tf_register_all(TF_Status *status); /* also called by the stand-in tests */

enum op { OP_LOOKUP, OP_UPDATE, OP_TOPK, OP_SAMPLED };

struct kern {
	enum op op;
	char var_name[64];
	char *config, *address;
	int timeout_ms;
	uint32_t dim;
	enum dynemb_key_kind keys;
	int64_t readonly, gradients, k, num_sampled, unique, seed, remove_hits, subtract_log_q;
	int metric, sampler;
	float power;
};

/* ---- status helpers ------------------------------------------------------------------- */

static TF_Code code_of(int err)
{
	switch (-err) {
	/* EEXIST: the table exists with another config, i.e. the op's config attribute
	 * disagrees with the daemon's table (tf.errors.InvalidArgumentError). */
	case EINVAL: case ERANGE: case EDOM: case EEXIST: return TF_INVALID_ARGUMENT;
	case EOPNOTSUPP: return TF_FAILED_PRECONDITION;
	/* no daemon, or none answering within timeout_ms: tf.errors.UnavailableError (the
	 * retryable code; the message says which) */
	case ENOENT: case ECONNREFUSED: case EPIPE: case ECONNRESET: case ENOTCONN:
	case ESHUTDOWN: case ETIMEDOUT: return TF_UNAVAILABLE;
	case ENOMEM: case ENOSPC: case ENOBUFS: case E2BIG: case EAGAIN: return TF_RESOURCE_EXHAUSTED;
	case EACCES: case EPERM: return TF_PERMISSION_DENIED;
	default: return TF_INTERNAL;
	}
}

/* An error after which the connection may be out of step with the daemon. */
static int is_broken(int err)
{
	switch (-err) {
	case EINVAL: case EEXIST: case EOPNOTSUPP: case ENOENT: case E2BIG: case ENOBUFS:
	case ENOMEM: case ERANGE: case ENOSPC:
		return 0;
	default:
		return 1;
	}
}

/* Set status to (code of err, "Op: msg") and fail the context. */
static void fail_ctx(TF_OpKernelContext *ctx, TF_Status *st, const char *op, int err,
		     const char *msg)
{
	char m[DE_TF_ERRLEN + 64];
	snprintf(m, sizeof m, "%s: %s", op, msg && *msg ? msg : dynemb_strerror(err));
	TF_SetStatus(st, code_of(err), m);
	TF_OpKernelContext_Failure(ctx, st);
}

static const char *op_name(enum op op)
{
	static const char *names[] = { "DynamicEmbeddingLookup", "DynamicEmbeddingUpdate",
				       "DynamicEmbeddingTopK", "DynamicEmbeddingSampledLogits" };
	return names[op];
}

/* ---- construction ----------------------------------------------------------------------- */

static char *attr_string(TF_OpKernelConstruction *ctx, const char *name, TF_Status *st)
{
	int32_t list_size = 0, total = 0;
	TF_OpKernelConstruction_GetAttrSize(ctx, name, &list_size, &total, st);
	if (TF_GetCode(st) != TF_OK)
		return NULL;
	if (total < 0 || total > (1 << 20)) {
		TF_SetStatus(st, TF_INVALID_ARGUMENT, "string attribute of a bad size");
		return NULL;
	}
	char *s = calloc(1, (size_t)total + 1);
	if (!s) {
		TF_SetStatus(st, TF_RESOURCE_EXHAUSTED, "out of memory");
		return NULL;
	}
	TF_OpKernelConstruction_GetAttrString(ctx, name, s, (size_t)total, st);
	if (TF_GetCode(st) != TF_OK) {
		free(s);
		return NULL;
	}
	if (strlen(s) != (size_t)total) {
		TF_SetStatus(st, TF_INVALID_ARGUMENT, "a string attribute holds a NUL byte");
		free(s);
		return NULL;
	}
	return s;
}

static int64_t attr_int(TF_OpKernelConstruction *ctx, const char *name, TF_Status *st)
{
	int64_t v = 0;
	if (TF_GetCode(st) == TF_OK)
		TF_OpKernelConstruction_GetAttrInt64(ctx, name, &v, st);
	return v;
}

static void kern_free(void *p)
{
	struct kern *k = p;
	if (k) {
		free(k->config);
		free(k->address);
		free(k);
	}
}

static void *create(TF_OpKernelConstruction *ctx, enum op op)
{
	TF_Status *st = TF_NewStatus();
	struct kern *k = calloc(1, sizeof *k);
	char *var_name = NULL, *s = NULL;
	char err[DE_TF_ERRLEN] = "";
	if (!k) {
		TF_SetStatus(st, TF_RESOURCE_EXHAUSTED, "out of memory");
		goto fail;
	}
	k->op = op;
	if (!(var_name = attr_string(ctx, "var_name", st)) ||
	    !(k->config = attr_string(ctx, "config", st)) ||
	    !(k->address = attr_string(ctx, "service_address", st)))
		goto fail;
	int64_t t = attr_int(ctx, "timeout_ms", st);
	if (TF_GetCode(st) != TF_OK)
		goto fail;
	k->timeout_ms = t < 0 || t > INT32_MAX ? 0 : (int)t;

	struct dynemb_table_spec spec;
	int rc = de_tf_parse_config(k->config, var_name, &spec, err, sizeof err);
	if (rc) {
		TF_SetStatus(st, code_of(rc), err);
		goto fail;
	}
	snprintf(k->var_name, sizeof k->var_name, "%s", var_name);
	k->dim = spec.dim;
	k->keys = spec.keys;

	switch (op) {
	case OP_LOOKUP:
		k->readonly = attr_int(ctx, "readonly", st);
		break;
	case OP_UPDATE:
		k->gradients = attr_int(ctx, "gradients", st);
		break;
	case OP_TOPK:
		k->k = attr_int(ctx, "k", st);
		if (TF_GetCode(st) == TF_OK && (k->k < 1 || k->k > (1 << 20)))
			TF_SetStatus(st, TF_INVALID_ARGUMENT, "k must be in [1, 2^20]");
		if (TF_GetCode(st) == TF_OK && (s = attr_string(ctx, "metric", st))) {
			if (!strcmp(s, "dot"))
				k->metric = 0;
			else if (!strcmp(s, "cosine"))
				k->metric = 1;
			else
				TF_SetStatus(st, TF_INVALID_ARGUMENT, "metric must be dot or cosine");
		}
		break;
	case OP_SAMPLED:
		k->num_sampled = attr_int(ctx, "num_sampled", st);
		k->unique = attr_int(ctx, "unique", st);
		k->seed = attr_int(ctx, "seed", st);
		k->remove_hits = attr_int(ctx, "remove_accidental_hits", st);
		k->subtract_log_q = attr_int(ctx, "subtract_log_q", st);
		if (TF_GetCode(st) == TF_OK)
			TF_OpKernelConstruction_GetAttrFloat(ctx, "power", &k->power, st);
		if (TF_GetCode(st) == TF_OK && (k->num_sampled < 1 || k->num_sampled > (1 << 24)))
			TF_SetStatus(st, TF_INVALID_ARGUMENT, "num_sampled must be in [1, 2^24]");
		if (TF_GetCode(st) == TF_OK && (s = attr_string(ctx, "sampler", st))) {
			if (!strcmp(s, "uniform"))
				k->sampler = 0;
			else if (!strcmp(s, "log_uniform"))
				k->sampler = 1;
			else if (!strcmp(s, "unigram"))
				k->sampler = 2;
			else
				TF_SetStatus(st, TF_INVALID_ARGUMENT,
					     "sampler must be uniform, log_uniform or unigram");
		}
		break;
	}
	if (TF_GetCode(st) != TF_OK)
		goto fail;
	free(s);
	free(var_name);
	TF_DeleteStatus(st);
	return k;
fail:
	if (TF_GetCode(st) != TF_OK) {
		char m[DE_TF_ERRLEN + 64];
		snprintf(m, sizeof m, "%s: %s", op_name(op), TF_Message(st));
		TF_SetStatus(st, TF_GetCode(st), m);
	}
	TF_OpKernelConstruction_Failure(ctx, st);
	free(s);
	free(var_name);
	kern_free(k);
	TF_DeleteStatus(st);
	return NULL;
}

static void *create_lookup(TF_OpKernelConstruction *c) { return create(c, OP_LOOKUP); }
static void *create_update(TF_OpKernelConstruction *c) { return create(c, OP_UPDATE); }
static void *create_topk(TF_OpKernelConstruction *c) { return create(c, OP_TOPK); }
static void *create_sampled(TF_OpKernelConstruction *c) { return create(c, OP_SAMPLED); }

/* ---- inputs --------------------------------------------------------------------------- */

/* Keys of either kind, flattened. For string tensors ptrs/lens point into the tensor. */
struct keys {
	size_t n;
	int rank;
	int64_t dims[DE_TF_MAX_RANK];
	const uint64_t *ints;
	const char **ptrs;
	size_t *lens;
};

static void keys_free(struct keys *k)
{
	free(k->ptrs);
	free(k->lens);
}

/* Read a tensor's shape, rank <= max_rank; n = its element count. */
static int shape_of(const TF_Tensor *t, int max_rank, int64_t *dims, int *rank, size_t *n,
		    const char *what, char *err, size_t errlen)
{
	int r = TF_NumDims(t);
	if (r < 0 || r > max_rank) {
		snprintf(err, errlen, "%s has rank %d; at most %d is supported", what, r, max_rank);
		return -EINVAL;
	}
	size_t cnt = 1;
	for (int i = 0; i < r; i++) {
		dims[i] = TF_Dim(t, i);
		if (dims[i] < 0 || (dims[i] && cnt > SIZE_MAX / 64 / (size_t)dims[i])) {
			snprintf(err, errlen, "%s has a bad or too large shape", what);
			return -EINVAL;
		}
		cnt *= (size_t)dims[i];
	}
	*rank = r;
	*n = cnt;
	return 0;
}

/* A float32 tensor of rank <= max_rank: shape_of, after the dtype check. */
static int float_shape_of(const TF_Tensor *t, int max_rank, int64_t *dims, int *rank, size_t *n,
			  const char *what, char *err, size_t errlen)
{
	if (TF_TensorType(t) != TF_FLOAT) {
		snprintf(err, errlen, "%s must be float32, not dtype %d", what, (int)TF_TensorType(t));
		return -EINVAL;
	}
	return shape_of(t, max_rank, dims, rank, n, what, err, errlen);
}

static int get_keys(TF_Tensor *t, const struct kern *k, struct keys *out, char *err,
		    size_t errlen)
{
	memset(out, 0, sizeof *out);
	TF_DataType dt = TF_TensorType(t);
	TF_DataType want = k->keys == DYNEMB_STRING_KEYS ? TF_STRING : TF_INT64;
	if (dt != want) {
		snprintf(err, errlen, "table '%s' has %s keys: keys must be a %s tensor, not dtype %d",
			 k->var_name, k->keys == DYNEMB_STRING_KEYS ? "string" : "int64",
			 k->keys == DYNEMB_STRING_KEYS ? "tf.string" : "tf.int64", (int)dt);
		return -EINVAL;
	}
	int rc = shape_of(t, DE_TF_MAX_RANK - 1, out->dims, &out->rank, &out->n, "keys", err,
			  errlen);
	if (rc)
		return rc;
	size_t esz = dt == TF_STRING ? sizeof(TF_TString) : sizeof(uint64_t);
	if (TF_TensorByteSize(t) < out->n * esz || (out->n && !TF_TensorData(t))) {
		snprintf(err, errlen, "keys: the tensor's buffer is smaller than its shape");
		return -EINVAL;
	}
	if (dt == TF_INT64) {
		out->ints = TF_TensorData(t);
		return 0;
	}
	const TF_TString *s = TF_TensorData(t);
	out->ptrs = malloc((out->n ? out->n : 1) * sizeof *out->ptrs);
	out->lens = malloc((out->n ? out->n : 1) * sizeof *out->lens);
	if (!out->ptrs || !out->lens) {
		keys_free(out);
		return -ENOMEM;
	}
	for (size_t i = 0; i < out->n; i++) {
		out->ptrs[i] = de_tf_string_data(&s[i]);
		out->lens[i] = de_tf_string_size(&s[i]);
		if (!out->ptrs[i] && out->lens[i]) {
			keys_free(out);
			snprintf(err, errlen, "keys: string %zu has no data", i);
			return -EINVAL;
		}
	}
	return 0;
}

static TF_Tensor *input(TF_OpKernelContext *ctx, int i, TF_Status *st)
{
	TF_Tensor *t = NULL;
	if (i >= TF_NumInputs(ctx)) {
		TF_SetStatus(st, TF_INVALID_ARGUMENT, "missing input");
		return NULL;
	}
	TF_GetInput(ctx, i, &t, st);
	return TF_GetCode(st) == TF_OK ? t : NULL;
}

/* A connection and the table handle. */
static int conn_table(const struct kern *k, de_tf_conn **conn, int *table, char *err,
		      size_t errlen)
{
	int rc = de_tf_acquire(k->address, k->timeout_ms, conn, err, errlen);
	if (rc)
		return rc;
	rc = de_tf_table(*conn, k->var_name, k->config, table, err, errlen);
	if (rc) {
		de_tf_release(*conn, is_broken(rc));
		*conn = NULL;
	}
	return rc;
}

/* ---- lookup --------------------------------------------------------------------------- */

static void give_back(void *data, size_t len, void *arg)
{
	(void)data;
	(void)len;
	de_tf_release(arg, 0);
}

static void compute_lookup(void *p, TF_OpKernelContext *ctx)
{
	const struct kern *k = p;
	const char *op = op_name(k->op);
	TF_Status *st = TF_NewStatus();
	char err[DE_TF_ERRLEN] = "";
	struct keys ks = { 0 };
	de_tf_conn *conn = NULL;
	TF_Tensor *kt = input(ctx, 0, st), *out = NULL;
	int rc = 0;
	if (!kt) {
		fail_ctx(ctx, st, op, -EINVAL, TF_Message(st));
		goto done;
	}
	if ((rc = get_keys(kt, k, &ks, err, sizeof err)))
		goto fail;
	int64_t odims[DE_TF_MAX_RANK];
	memcpy(odims, ks.dims, (size_t)ks.rank * sizeof *odims);
	odims[ks.rank] = k->dim;
	size_t bytes = ks.n * k->dim * sizeof(float);
	int table;
	if ((rc = conn_table(k, &conn, &table, err, sizeof err)))
		goto fail;
	dynemb_client *c = de_tf_client(conn);
	unsigned flags = k->readonly ? DYNEMB_READONLY : 0;

	if (ks.ints && ks.n && de_tf_try_hold(conn)) {
		uint64_t req;
		rc = dynemb_submit_lookup(c, table, ks.ints, ks.n, flags, 0, &req);
		if (!rc) {
			rc = dynemb_complete(c, req, -1);
			const float *vals = rc ? NULL : dynemb_request_vals(c, req);
			if (rc || !vals) {
				rc = rc ? rc : -EPROTO;
				goto fail;
			}
			/* From here on conn belongs to the tensor (give_back frees it). */
			out = TF_NewTensor(TF_FLOAT, odims, ks.rank + 1, (void *)vals, bytes,
					   give_back, conn);
			conn = NULL;
			if (!out) {
				snprintf(err, sizeof err, "TF_NewTensor failed");
				rc = -ENOMEM;
				goto fail;
			}
			TF_SetOutput(ctx, 0, out, st);
			if (TF_GetCode(st) != TF_OK)
				fail_ctx(ctx, st, op, -EINVAL, TF_Message(st));
			goto done;
		}
		de_tf_unhold(conn);
		if (rc != -E2BIG && rc != -ENOBUFS && rc != -EAGAIN)
			goto fail;
		/* too big for one request: the blocking call splits it */
	}
	out = TF_AllocateOutput(ctx, 0, TF_FLOAT, odims, ks.rank + 1, bytes, st);
	if (!out) {
		fail_ctx(ctx, st, op, -ENOMEM, TF_Message(st));
		goto done;
	}
	if (ks.ints)
		rc = dynemb_lookup(c, table, ks.ints, ks.n, TF_TensorData(out), NULL, flags, 0);
	else
		rc = dynemb_lookup_str(c, table, ks.ptrs, ks.lens, ks.n, TF_TensorData(out), NULL, flags,
				   0);
	if (rc)
		goto fail;
	goto done;
fail:
	fail_ctx(ctx, st, op, rc, err);
done:
	if (conn)
		de_tf_release(conn, rc && is_broken(rc));
	keys_free(&ks);
	TF_DeleteTensor(out);
	TF_DeleteTensor(kt);
	TF_DeleteStatus(st);
}

/* ---- update / gradients ----------------------------------------------------------------- */

static void compute_update(void *p, TF_OpKernelContext *ctx)
{
	const struct kern *k = p;
	const char *op = op_name(k->op);
	TF_Status *st = TF_NewStatus();
	char err[DE_TF_ERRLEN] = "";
	struct keys ks = { 0 };
	de_tf_conn *conn = NULL;
	TF_Tensor *kt = input(ctx, 0, st), *vt = kt ? input(ctx, 1, st) : NULL;
	TF_Tensor *lt = vt ? input(ctx, 2, st) : NULL, *stt = lt ? input(ctx, 3, st) : NULL;
	TF_Tensor *out = NULL;
	int rc = 0;
	if (!stt) {
		fail_ctx(ctx, st, op, -EINVAL, TF_Message(st));
		goto done;
	}
	if ((rc = get_keys(kt, k, &ks, err, sizeof err)))
		goto fail;
	int64_t vdims[DE_TF_MAX_RANK];
	int vrank;
	size_t vn;
	if ((rc = float_shape_of(vt, DE_TF_MAX_RANK, vdims, &vrank, &vn, "values", err,
				 sizeof err)) ||
	    (rc = de_tf_check_rows_shape(k->gradients ? "gradients" : "values", ks.dims, ks.rank,
					 vdims, vrank, k->dim, err, sizeof err)))
		goto fail;
	rc = -EINVAL;
	if (TF_TensorByteSize(vt) < vn * sizeof(float)) {
		snprintf(err, sizeof err, "values: the tensor's buffer is smaller than its shape");
		goto fail;
	}
	if (TF_TensorType(lt) != TF_FLOAT || TF_TensorElementCount(lt) != 1 ||
	    TF_TensorByteSize(lt) < sizeof(float)) {
		snprintf(err, sizeof err, "lr must be a float32 scalar");
		goto fail;
	}
	if (TF_TensorType(stt) != TF_INT64 || TF_TensorElementCount(stt) != 1 ||
	    TF_TensorByteSize(stt) < sizeof(int64_t)) {
		snprintf(err, sizeof err, "step must be an int64 scalar");
		goto fail;
	}
	float lr = *(const float *)TF_TensorData(lt);
	int64_t step = *(const int64_t *)TF_TensorData(stt);
	if (step < 0) {
		snprintf(err, sizeof err, "step must be >= 0, not %lld", (long long)step);
		goto fail;
	}
	int table;
	if ((rc = conn_table(k, &conn, &table, err, sizeof err)))
		goto fail;
	dynemb_client *c = de_tf_client(conn);
	const float *v = TF_TensorData(vt);
	size_t count = 0;
	if (k->gradients && ks.ints)
		rc = dynemb_apply_gradients(c, table, ks.ints, ks.n, v, (uint64_t)step, lr, &count);
	else if (k->gradients)
		rc = dynemb_apply_gradients_str(c, table, ks.ptrs, ks.lens, ks.n, v, (uint64_t)step, lr,
					    &count);
	else if (ks.ints)
		rc = dynemb_update(c, table, ks.ints, ks.n, v, (uint64_t)step, &count);
	else
		rc = dynemb_update_str(c, table, ks.ptrs, ks.lens, ks.n, v, (uint64_t)step, &count);
	if (rc) {
		if (rc == -EOPNOTSUPP)
			snprintf(err, sizeof err, "table '%s' has no optimizer (config optimizer=...)",
				 k->var_name);
		goto fail;
	}
	out = TF_AllocateOutput(ctx, 0, TF_INT64, NULL, 0, sizeof(int64_t), st);
	if (!out) {
		fail_ctx(ctx, st, op, -ENOMEM, TF_Message(st));
		goto done;
	}
	*(int64_t *)TF_TensorData(out) = (int64_t)count;
	goto done;
fail:
	fail_ctx(ctx, st, op, rc, err);
done:
	if (conn)
		de_tf_release(conn, rc && is_broken(rc));
	keys_free(&ks);
	TF_DeleteTensor(out);
	TF_DeleteTensor(kt);
	TF_DeleteTensor(vt);
	TF_DeleteTensor(lt);
	TF_DeleteTensor(stt);
	TF_DeleteStatus(st);
}

/* ---- top-k and sampled logits ------------------------------------------------------- */

static void compute_topk(void *p, TF_OpKernelContext *ctx)
{
	const struct kern *k = p;
	const char *op = op_name(k->op);
	TF_Status *st = TF_NewStatus();
	char err[DE_TF_ERRLEN] = "";
	de_tf_conn *conn = NULL;
	TF_Tensor *qt = input(ctx, 0, st), *ok = NULL, *os = NULL, *of = NULL;
	int rc = 0;
	if (!qt) {
		fail_ctx(ctx, st, op, -EINVAL, TF_Message(st));
		goto done;
	}
	int64_t qd[2];
	int qr;
	size_t qn;
	if ((rc = float_shape_of(qt, 2, qd, &qr, &qn, "queries", err, sizeof err)))
		goto fail;
	rc = -EINVAL;
	if (qr != 2 || qd[1] != (int64_t)k->dim) {
		snprintf(err, sizeof err, "queries must have shape [nq, %u] (the table's dim)", k->dim);
		goto fail;
	}
	if (TF_TensorByteSize(qt) < qn * sizeof(float)) {
		snprintf(err, sizeof err, "queries: the tensor's buffer is smaller than its shape");
		goto fail;
	}
	size_t nq = (size_t)qd[0], kk = (size_t)k->k;
	if (nq && kk > SIZE_MAX / 16 / nq) {
		snprintf(err, sizeof err, "nq * k is too large");
		goto fail;
	}
	int64_t kd[2] = { qd[0], k->k };
	ok = TF_AllocateOutput(ctx, 0, TF_INT64, kd, 2, nq * kk * sizeof(int64_t), st);
	if (ok)
		os = TF_AllocateOutput(ctx, 1, TF_FLOAT, kd, 2, nq * kk * sizeof(float), st);
	if (os)
		of = TF_AllocateOutput(ctx, 2, TF_INT32, kd, 1, nq * sizeof(int32_t), st);
	if (!of) {
		fail_ctx(ctx, st, op, -ENOMEM, TF_Message(st));
		goto done;
	}
	if (!nq)
		goto done;
	int table;
	if ((rc = conn_table(k, &conn, &table, err, sizeof err)))
		goto fail;
	/* found: dynemb_topk's uint32 counts are <= k <= 2^20, so int32 holds them bit for bit */
	rc = dynemb_topk(de_tf_client(conn), table, TF_TensorData(qt), nq, (uint32_t)kk,
		     k->metric ? DYNEMB_METRIC_COSINE : DYNEMB_METRIC_DOT, TF_TensorData(ok),
		     TF_TensorData(os), TF_TensorData(of));
	if (rc)
		goto fail;
	goto done;
fail:
	fail_ctx(ctx, st, op, rc, err);
done:
	if (conn)
		de_tf_release(conn, rc && is_broken(rc));
	TF_DeleteTensor(ok);
	TF_DeleteTensor(os);
	TF_DeleteTensor(of);
	TF_DeleteTensor(qt);
	TF_DeleteStatus(st);
}

/* Look up the rows of sampled keys (fingerprints) of a string table: their strings first. */
static int lookup_sampled_str(dynemb_client *c, int table, const uint64_t *keys, size_t n, float *out,
			      char *err, size_t errlen)
{
	uint32_t *lens = malloc(n * sizeof *lens);
	size_t *szs = malloc(n * sizeof *szs);
	const char **ptrs = malloc(n * sizeof *ptrs);
	size_t cap = n * 32;
	char *buf = malloc(cap);
	int rc = -ENOMEM;
	if (!lens || !szs || !ptrs || !buf)
		goto out;
	rc = dynemb_key_strings(c, table, keys, n, buf, cap, lens);
	if (rc == -ENOSPC) {
		cap = 0;
		for (size_t i = 0; i < n; i++)
			cap += lens[i] == UINT32_MAX ? 0 : lens[i];
		free(buf);
		buf = malloc(cap ? cap : 1);
		rc = buf ? dynemb_key_strings(c, table, keys, n, buf, cap, lens) : -ENOMEM;
	}
	if (rc)
		goto out;
	size_t off = 0;
	for (size_t i = 0; i < n; i++) {
		if (lens[i] == UINT32_MAX || lens[i] > cap - off) {
			snprintf(err, errlen, "the daemon has no string for sampled key %#llx",
				 (unsigned long long)keys[i]);
			rc = -EPROTO;
			goto out;
		}
		ptrs[i] = buf + off;
		szs[i] = lens[i];
		off += lens[i];
	}
	rc = dynemb_lookup_str(c, table, ptrs, szs, n, out, NULL, 0, 0);
out:
	free(lens);
	free(szs);
	free(ptrs);
	free(buf);
	return rc;
}

static void compute_sampled(void *p, TF_OpKernelContext *ctx)
{
	const struct kern *k = p;
	const char *op = op_name(k->op);
	TF_Status *st = TF_NewStatus();
	char err[DE_TF_ERRLEN] = "";
	struct keys ks = { 0 };
	de_tf_conn *conn = NULL;
	TF_Tensor *it = input(ctx, 0, st), *lt = it ? input(ctx, 1, st) : NULL;
	TF_Tensor *o_log = NULL, *o_lab = NULL, *o_smp = NULL, *o_w = NULL;
	float *sexp = NULL, *texp = NULL;
	uint64_t *lkeys = NULL;
	int rc = 0;
	if (!lt) {
		fail_ctx(ctx, st, op, -EINVAL, TF_Message(st));
		goto done;
	}
	int64_t idims[2];
	int irank;
	size_t in_n;
	if ((rc = float_shape_of(it, 2, idims, &irank, &in_n, "inputs", err, sizeof err)))
		goto fail;
	rc = -EINVAL;
	if (irank != 2 || idims[1] != (int64_t)k->dim || TF_TensorByteSize(it) < in_n * 4) {
		snprintf(err, sizeof err, "inputs must have shape [batch, %u] (the table's dim)",
			 k->dim);
		goto fail;
	}
	if ((rc = get_keys(lt, k, &ks, err, sizeof err)))
		goto fail;
	rc = -EINVAL;
	if (ks.rank != 2 || ks.dims[0] != idims[0] || ks.dims[1] < 1) {
		snprintf(err, sizeof err, "labels must have shape [batch, num_true] = [%lld, >= 1]",
			 (long long)idims[0]);
		goto fail;
	}
	size_t B = (size_t)idims[0], T = (size_t)ks.dims[1], S = (size_t)k->num_sampled;
	size_t D = k->dim, C = T + S;
	if (B > SIZE_MAX / 16 / C || B * T + S > SIZE_MAX / 16 / D) {
		snprintf(err, sizeof err, "batch * (num_true + num_sampled) is too large");
		goto fail;
	}
	int64_t ld[2] = { (int64_t)B, (int64_t)C }, sd[1] = { (int64_t)S },
		wd[2] = { (int64_t)(B * T + S), (int64_t)D };
	o_log = TF_AllocateOutput(ctx, 0, TF_FLOAT, ld, 2, B * C * sizeof(float), st);
	if (o_log)
		o_lab = TF_AllocateOutput(ctx, 1, TF_FLOAT, ld, 2, B * C * sizeof(float), st);
	if (o_lab)
		o_smp = TF_AllocateOutput(ctx, 2, TF_INT64, sd, 1, S * sizeof(int64_t), st);
	if (o_smp)
		o_w = TF_AllocateOutput(ctx, 3, TF_FLOAT, wd, 2, (B * T + S) * D * sizeof(float), st);
	sexp = malloc(S * sizeof *sexp);
	size_t BT1 = B * T > 0 ? B * T : 1;
	texp = malloc(BT1 * sizeof *texp);
	lkeys = malloc(BT1 * sizeof *lkeys);
	if (!o_w || !sexp || !texp || !lkeys) {
		fail_ctx(ctx, st, op, -ENOMEM, TF_GetCode(st) != TF_OK ? TF_Message(st) : NULL);
		goto done;
	}
	int table;
	if ((rc = conn_table(k, &conn, &table, err, sizeof err)))
		goto fail;
	dynemb_client *c = de_tf_client(conn);
	struct dynemb_sample_spec spec = { .kind = (enum dynemb_sampler)k->sampler,
				       .num_sampled = (uint32_t)S, .unique = k->unique != 0,
				       .power = k->power, .seed = (uint64_t)k->seed };
	uint64_t *sampled = TF_TensorData(o_smp);
	float *w = TF_TensorData(o_w);
	/* sample first: the lookup of the labels below may create keys */
	if (ks.ints)
		rc = dynemb_sample(c, table, &spec, ks.ints, B * T, sampled, sexp, texp, NULL);
	else
		rc = dynemb_sample_str(c, table, &spec, ks.ptrs, ks.lens, B * T, sampled, sexp, texp,
				   NULL);
	if (rc) {
		if (rc == -ENOENT)
			snprintf(err, sizeof err, "table '%s' has no live key to sample", k->var_name);
		goto fail;
	}
	if (ks.ints) {
		memcpy(lkeys, ks.ints, B * T * sizeof *lkeys);
		rc = dynemb_lookup(c, table, ks.ints, B * T, w, NULL, 0, 0);
		if (!rc)
			rc = dynemb_lookup(c, table, sampled, S, w + B * T * D, NULL, 0, 0);
	} else {
		for (size_t i = 0; i < B * T && !rc; i++)
			rc = dynemb_string_key(c, table, ks.ptrs[i], ks.lens[i], &lkeys[i]);
		if (!rc)
			rc = dynemb_lookup_str(c, table, ks.ptrs, ks.lens, B * T, w, NULL, 0, 0);
		if (!rc)
			rc = lookup_sampled_str(c, table, sampled, S, w + B * T * D, err, sizeof err);
	}
	if (rc)
		goto fail;

	const float *x = TF_TensorData(it);
	float *logits = TF_TensorData(o_log), *labels = TF_TensorData(o_lab);
	for (size_t b = 0; b < B; b++) {
		const float *xb = x + b * D;
		for (size_t j = 0; j < C; j++) {
			const float *wj = j < T ? w + (b * T + j) * D : w + (B * T + j - T) * D;
			float dot = 0;
			for (size_t d = 0; d < D; d++)
				dot += xb[d] * wj[d];
			if (j >= T && k->remove_hits) {
				for (size_t t = 0; t < T; t++)
					if (sampled[j - T] == lkeys[b * T + t]) {
						dot += -FLT_MAX;
						break;
					}
			}
			if (k->subtract_log_q)
				dot -= logf(j < T ? texp[b * T + j] : sexp[j - T]);
			logits[b * C + j] = dot;
			labels[b * C + j] = j < T ? 1.0f / (float)T : 0.0f;
		}
	}
	goto done;
fail:
	fail_ctx(ctx, st, op, rc, err);
done:
	if (conn)
		de_tf_release(conn, rc && is_broken(rc));
	keys_free(&ks);
	free(sexp);
	free(texp);
	free(lkeys);
	TF_DeleteTensor(o_log);
	TF_DeleteTensor(o_lab);
	TF_DeleteTensor(o_smp);
	TF_DeleteTensor(o_w);
	TF_DeleteTensor(it);
	TF_DeleteTensor(lt);
	TF_DeleteStatus(st);
}

/* ---- registration -------------------------------------------------------------------- */

static void unknown_shape(TF_ShapeInferenceContext *ctx, TF_Status *st)
{
	/* Output shapes are set by the Python wrappers (they know dim from the config). */
	TF_ShapeInferenceContextSetUnknownShape(ctx, st);
}

#define COMMON_ATTRS "var_name: string", "config: string", "service_address: string = ''", \
		     "timeout_ms: int = -1"

static const struct opdef {
	const char *name;
	const char *inputs[5], *outputs[5], *attrs[12];
	void *(*create)(TF_OpKernelConstruction *);
	void (*compute)(void *, TF_OpKernelContext *);
} opdefs[] = {
	{ "DynamicEmbeddingLookup", { "keys: Tkeys", "trigger: float" }, { "values: float" },
	  { "Tkeys: {int64, string}", COMMON_ATTRS, "readonly: int = 0" }, create_lookup,
	  compute_lookup },
	{ "DynamicEmbeddingUpdate", { "keys: Tkeys", "values: float", "lr: float", "step: int64" },
	  { "count: int64" }, { "Tkeys: {int64, string}", COMMON_ATTRS, "gradients: int = 0" },
	  create_update, compute_update },
	{ "DynamicEmbeddingTopK", { "queries: float" },
	  { "keys: int64", "scores: float", "found: int32" },
	  { COMMON_ATTRS, "k: int >= 1", "metric: {'dot', 'cosine'} = 'dot'" }, create_topk,
	  compute_topk },
	{ "DynamicEmbeddingSampledLogits", { "inputs: float", "labels: Tkeys" },
	  { "logits: float", "out_labels: float", "sampled: int64", "weights: float" },
	  { "Tkeys: {int64, string}", COMMON_ATTRS, "num_sampled: int >= 1",
	    "sampler: {'uniform', 'log_uniform', 'unigram'} = 'log_uniform'", "unique: int = 1",
	    "power: float = 0.75", "seed: int = 0", "remove_accidental_hits: int = 1",
	    "subtract_log_q: int = 1" },
	  create_sampled, compute_sampled },
};

void de_tf_register_all(TF_Status *st)
{
	for (size_t i = 0; i < sizeof opdefs / sizeof opdefs[0]; i++) {
		const struct opdef *d = &opdefs[i];
		TF_OpDefinitionBuilder *b = TF_NewOpDefinitionBuilder(d->name);
		for (int j = 0; j < 5 && d->inputs[j]; j++)
			TF_OpDefinitionBuilderAddInput(b, d->inputs[j]);
		for (int j = 0; j < 5 && d->outputs[j]; j++)
			TF_OpDefinitionBuilderAddOutput(b, d->outputs[j]);
		for (int j = 0; j < 12 && d->attrs[j]; j++)
			TF_OpDefinitionBuilderAddAttr(b, d->attrs[j]);
		TF_OpDefinitionBuilderSetIsStateful(b, true);
		TF_OpDefinitionBuilderSetShapeInferenceFunction(b, unknown_shape);
		TF_RegisterOpDefinition(b, st);
		if (TF_GetCode(st) != TF_OK)
			return;
		TF_KernelBuilder *kb =
			TF_NewKernelBuilder(d->name, "CPU", d->create, d->compute, kern_free);
		TF_RegisterKernelBuilder(d->name, kb, st);
		if (TF_GetCode(st) != TF_OK)
			return;
	}
}

#ifdef DE_TF_HAVE_TF_HEADERS
/* tf.load_op_library: register when the library is loaded (as TensorFlow's own C-API
 * kernels do with a static initializer). */
__attribute__((constructor)) static void register_at_load(void)
{
	TF_Status *st = TF_NewStatus();
	de_tf_register_all(st);
	if (TF_GetCode(st) != TF_OK)
		fprintf(stderr, "dynemb: registering the TensorFlow ops failed: %s\n", TF_Message(st));
	TF_DeleteStatus(st);
}
#endif
