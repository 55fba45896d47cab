/*
 * tf_standin.c — the stand-in for TensorFlow's C API described in tf_standin.h. Test
 * code only; it checks our kernels, not TensorFlow. Registries are global (one per
 * test process) and guarded by one mutex; tensors and statuses are plain heap objects.
 */
#include "tf_standin.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- status ---------------------------------------------------------------------------- */

struct TF_Status {
	TF_Code code;
	char msg[2048];
};

TF_Status *TF_NewStatus(void)
{
	return calloc(1, sizeof(TF_Status));
}
void TF_DeleteStatus(TF_Status *s)
{
	free(s);
}
void TF_SetStatus(TF_Status *s, TF_Code code, const char *msg)
{
	s->code = code;
	if (msg == s->msg && code != TF_OK)
		return;
	snprintf(s->msg, sizeof s->msg, "%s", code == TF_OK ? "" : msg ? msg : "");
}
TF_Code TF_GetCode(const TF_Status *s)
{
	return s->code;
}
const char *TF_Message(const TF_Status *s)
{
	return s->msg;
}

/* ---- tensors --------------------------------------------------------------------------- */

static atomic_ulong c_wrapped, c_dealloc, c_copied, c_live, c_okfail;

struct buf {
	atomic_int refs;
	void *data;
	size_t len;
	void (*dealloc)(void *, size_t, void *);
	void *arg;
};

struct TF_Tensor {
	TF_DataType dt;
	int nd;
	int64_t dims[32];
	struct buf *b;
};

static size_t dt_size(TF_DataType dt)
{
	switch (dt) {
	case TF_FLOAT: case TF_INT32: return 4;
	case TF_DOUBLE: case TF_INT64: case TF_UINT64: return 8;
	case TF_STRING: return sizeof(TF_TString);
	case TF_BOOL: case TF_UINT8: case TF_INT8: return 1;
	default: return 0;
	}
}

static TF_Tensor *tensor_of(TF_DataType dt, const int64_t *dims, int nd, struct buf *b)
{
	if (nd < 0 || nd > 32)
		return NULL;
	TF_Tensor *t = calloc(1, sizeof *t);
	if (!t)
		abort();
	t->dt = dt;
	t->nd = nd;
	if (nd)
		memcpy(t->dims, dims, (size_t)nd * sizeof *dims);
	t->b = b;
	atomic_fetch_add(&b->refs, 1);
	return t;
}

static struct buf *buf_alloc(size_t len)
{
	struct buf *b = calloc(1, sizeof *b);
	b->data = aligned_alloc(64, len ? (len + 63) / 64 * 64 : 64);
	if (!b || !b->data)
		abort();
	memset(b->data, 0xA5, len); /* never hand out zeros a kernel forgot to write */
	b->len = len;
	atomic_fetch_add(&c_live, 1);
	return b;
}

static void buf_unref(struct buf *b)
{
	if (atomic_fetch_sub(&b->refs, 1) != 1)
		return;
	if (b->dealloc) {
		atomic_fetch_add(&c_dealloc, 1);
		b->dealloc(b->data, b->len, b->arg);
	} else {
		free(b->data);
	}
	atomic_fetch_sub(&c_live, 1);
	free(b);
}

TF_Tensor *TF_NewTensor(TF_DataType dt, const int64_t *dims, int num_dims, void *data, size_t len,
			void (*deallocator)(void *data, size_t len, void *arg), void *deallocator_arg)
{
	struct buf *b;
	if (deallocator)
		atomic_fetch_add(&c_wrapped, 1);
	if ((uintptr_t)data % 64) {
		/* TensorFlow: copy into an aligned buffer and release the caller's at once */
		b = buf_alloc(len);
		memcpy(b->data, data, len);
		atomic_fetch_add(&c_copied, 1);
		if (deallocator) {
			atomic_fetch_add(&c_dealloc, 1);
			deallocator(data, len, deallocator_arg);
		}
	} else {
		b = calloc(1, sizeof *b);
		if (!b)
			abort();
		b->data = data;
		b->len = len;
		b->dealloc = deallocator;
		b->arg = deallocator_arg;
		atomic_fetch_add(&c_live, 1);
	}
	return tensor_of(dt, dims, num_dims, b);
}

void TF_DeleteTensor(TF_Tensor *t)
{
	if (!t)
		return;
	buf_unref(t->b);
	free(t);
}
TF_DataType TF_TensorType(const TF_Tensor *t) { return t->dt; }
int TF_NumDims(const TF_Tensor *t) { return t->nd; }
int64_t TF_Dim(const TF_Tensor *t, int i) { return i >= 0 && i < t->nd ? t->dims[i] : -1; }
size_t TF_TensorByteSize(const TF_Tensor *t) { return t->b->len; }
void *TF_TensorData(const TF_Tensor *t) { return t->b->data; }
int64_t TF_TensorElementCount(const TF_Tensor *t)
{
	int64_t n = 1;
	for (int i = 0; i < t->nd; i++)
		n *= t->dims[i];
	return n;
}

/* The stand-in's strings are always views (TensorFlow's own encoding differs). */
const char *TF_StringGetDataPointer(const TF_TString *s) { return s->u.view.ptr; }
size_t TF_StringGetSize(const TF_TString *s) { return s->u.view.size; }

TF_Tensor *si_tensor(TF_DataType dt, const int64_t *dims, int nd, const void *data)
{
	size_t n = 1;
	for (int i = 0; i < nd; i++)
		n *= (size_t)dims[i];
	size_t len = n * dt_size(dt);
	struct buf *b = buf_alloc(len);
	if (data)
		memcpy(b->data, data, len);
	return tensor_of(dt, dims, nd, b);
}

TF_Tensor *si_string_tensor(const int64_t *dims, int nd, const char *const *strs,
			    const size_t *lens)
{
	TF_Tensor *t = si_tensor(TF_STRING, dims, nd, NULL);
	TF_TString *s = t->b->data;
	for (int64_t i = 0; i < TF_TensorElementCount(t); i++) {
		memset(&s[i], 0, sizeof s[i]);
		s[i].u.view.ptr = strs[i];
		s[i].u.view.size = lens ? lens[i] : strlen(strs[i]);
	}
	return t;
}

void si_get_counts(struct si_counts *o)
{
	o->wrapped = atomic_load(&c_wrapped);
	o->dealloc_runs = atomic_load(&c_dealloc);
	o->copied = atomic_load(&c_copied);
	o->live_buffers = atomic_load(&c_live);
	o->ok_failures = atomic_load(&c_okfail);
}

/* ---- op and kernel registries ---------------------------------------------------------- */

#define MAXN 16
struct TF_OpDefinitionBuilder {
	char name[128];
	char *inputs[MAXN], *outputs[MAXN], *attrs[MAXN];
	int nin, nout, nattr;
	bool stateful, has_shape_fn;
};

struct TF_KernelBuilder {
	char op[128];
	void *(*create)(TF_OpKernelConstruction *);
	void (*compute)(void *, TF_OpKernelContext *);
	void (*del)(void *);
};

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static struct TF_OpDefinitionBuilder *ops[64];
static struct TF_KernelBuilder *kernels[64];
static int nops, nkernels;

TF_OpDefinitionBuilder *TF_NewOpDefinitionBuilder(const char *op_name)
{
	TF_OpDefinitionBuilder *b = calloc(1, sizeof *b);
	snprintf(b->name, sizeof b->name, "%s", op_name);
	return b;
}
static void add(char **arr, int *n, const char *spec)
{
	if (*n < MAXN)
		arr[(*n)++] = strdup(spec);
}
void TF_OpDefinitionBuilderAddAttr(TF_OpDefinitionBuilder *b, const char *s) { add(b->attrs, &b->nattr, s); }
void TF_OpDefinitionBuilderAddInput(TF_OpDefinitionBuilder *b, const char *s) { add(b->inputs, &b->nin, s); }
void TF_OpDefinitionBuilderAddOutput(TF_OpDefinitionBuilder *b, const char *s) { add(b->outputs, &b->nout, s); }
void TF_OpDefinitionBuilderSetIsStateful(TF_OpDefinitionBuilder *b, bool v) { b->stateful = v; }
void TF_OpDefinitionBuilderSetShapeInferenceFunction(
	TF_OpDefinitionBuilder *b, void (*fn)(TF_ShapeInferenceContext *, TF_Status *))
{
	b->has_shape_fn = fn != NULL;
}
void TF_ShapeInferenceContextSetUnknownShape(TF_ShapeInferenceContext *ctx, TF_Status *st)
{
	(void)ctx;
	TF_SetStatus(st, TF_OK, "");
}

static void opdef_free(TF_OpDefinitionBuilder *b)
{
	for (int i = 0; i < b->nin; i++)
		free(b->inputs[i]);
	for (int i = 0; i < b->nout; i++)
		free(b->outputs[i]);
	for (int i = 0; i < b->nattr; i++)
		free(b->attrs[i]);
	free(b);
}

static TF_OpDefinitionBuilder *find_op(const char *name) /* under reg_mu */
{
	for (int i = 0; i < nops; i++)
		if (!strcmp(ops[i]->name, name))
			return ops[i];
	return NULL;
}

void TF_RegisterOpDefinition(TF_OpDefinitionBuilder *b, TF_Status *st)
{
	pthread_mutex_lock(&reg_mu);
	TF_SetStatus(st, TF_OK, "");
	if (find_op(b->name)) {
		TF_SetStatus(st, TF_ALREADY_EXISTS, "op already registered");
		opdef_free(b);
	} else if (nops == 64) {
		TF_SetStatus(st, TF_RESOURCE_EXHAUSTED, "stand-in: too many ops");
		opdef_free(b);
	} else {
		ops[nops++] = b;
	}
	pthread_mutex_unlock(&reg_mu);
}

TF_KernelBuilder *TF_NewKernelBuilder(const char *op_name, const char *device_name,
				      void *(*create_func)(TF_OpKernelConstruction *),
				      void (*compute_func)(void *, TF_OpKernelContext *),
				      void (*delete_func)(void *))
{
	(void)device_name;
	TF_KernelBuilder *k = calloc(1, sizeof *k);
	snprintf(k->op, sizeof k->op, "%s", op_name);
	k->create = create_func;
	k->compute = compute_func;
	k->del = delete_func;
	return k;
}

void TF_RegisterKernelBuilder(const char *kernel_name, TF_KernelBuilder *b, TF_Status *st)
{
	(void)kernel_name;
	pthread_mutex_lock(&reg_mu);
	TF_SetStatus(st, TF_OK, "");
	if (!find_op(b->op) || nkernels == 64) {
		TF_SetStatus(st, TF_NOT_FOUND, "stand-in: kernel for an unregistered op");
		free(b);
	} else {
		kernels[nkernels++] = b;
	}
	pthread_mutex_unlock(&reg_mu);
}

int si_op_arity(const char *op, int *noutputs)
{
	pthread_mutex_lock(&reg_mu);
	TF_OpDefinitionBuilder *b = find_op(op);
	int n = b ? b->nin : -1;
	if (b && noutputs)
		*noutputs = b->nout;
	pthread_mutex_unlock(&reg_mu);
	return n;
}

/* ---- construction and attrs ------------------------------------------------------------- */

struct TF_OpKernelConstruction {
	TF_OpDefinitionBuilder *op;
	const struct si_attr *attrs;
	size_t nattrs;
	bool failed;
	TF_Status *st;
	char defbuf[256];
};

/* The attr: the caller's, else the op's default ("name: type = default"). */
static int find_attr(TF_OpKernelConstruction *c, const char *name, struct si_attr *out)
{
	for (size_t i = 0; i < c->nattrs; i++)
		if (!strcmp(c->attrs[i].name, name)) {
			*out = c->attrs[i];
			return 0;
		}
	size_t nl = strlen(name);
	for (int i = 0; i < c->op->nattr; i++) {
		const char *s = c->op->attrs[i];
		if (strncmp(s, name, nl) || s[nl] != ':')
			continue;
		const char *eq = strchr(s, '=');
		if (!eq)
			return -1; /* declared without a default: the caller must give it */
		eq++;
		while (*eq == ' ')
			eq++;
		memset(out, 0, sizeof *out);
		out->name = name;
		if (*eq == '\'') {
			snprintf(c->defbuf, sizeof c->defbuf, "%s", eq + 1);
			char *q = strchr(c->defbuf, '\'');
			if (q)
				*q = '\0';
			out->kind = SI_STR;
			out->s = c->defbuf;
		} else if (strstr(s, ": float")) {
			out->kind = SI_FLOAT;
			out->f = strtof(eq, NULL);
		} else {
			out->kind = SI_INT;
			out->i = strtoll(eq, NULL, 10);
		}
		return 0;
	}
	return -1;
}

static bool get_attr(TF_OpKernelConstruction *c, const char *name, enum si_attr_kind kind,
		     struct si_attr *a, TF_Status *st)
{
	if (find_attr(c, name, a) || a->kind != kind) {
		char m[256];
		snprintf(m, sizeof m, "stand-in: no attr '%s' of that type", name);
		TF_SetStatus(st, TF_INVALID_ARGUMENT, m);
		return false;
	}
	TF_SetStatus(st, TF_OK, "");
	return true;
}

void TF_OpKernelConstruction_GetAttrSize(TF_OpKernelConstruction *c, const char *name,
					 int32_t *list_size, int32_t *total_size, TF_Status *st)
{
	struct si_attr a;
	if (find_attr(c, name, &a)) {
		TF_SetStatus(st, TF_INVALID_ARGUMENT, "stand-in: no such attr");
		return;
	}
	TF_SetStatus(st, TF_OK, "");
	*list_size = -1;
	*total_size = a.kind == SI_STR ? (int32_t)strlen(a.s) : -1;
}

void TF_OpKernelConstruction_GetAttrInt64(TF_OpKernelConstruction *c, const char *name,
					  int64_t *val, TF_Status *st)
{
	struct si_attr a;
	if (get_attr(c, name, SI_INT, &a, st))
		*val = a.i;
}

void TF_OpKernelConstruction_GetAttrFloat(TF_OpKernelConstruction *c, const char *name,
					  float *val, TF_Status *st)
{
	struct si_attr a;
	if (get_attr(c, name, SI_FLOAT, &a, st))
		*val = a.f;
}

void TF_OpKernelConstruction_GetAttrString(TF_OpKernelConstruction *c, const char *name,
					   char *val, size_t max_length, TF_Status *st)
{
	struct si_attr a;
	if (!get_attr(c, name, SI_STR, &a, st))
		return;
	size_t n = strlen(a.s);
	memcpy(val, a.s, n < max_length ? n : max_length); /* as TensorFlow: no NUL added */
}

void TF_OpKernelConstruction_Failure(TF_OpKernelConstruction *c, TF_Status *st)
{
	if (TF_GetCode(st) == TF_OK)
		atomic_fetch_add(&c_okfail, 1);
	c->failed = true;
	TF_SetStatus(c->st, TF_GetCode(st), TF_Message(st));
}

/* ---- kernels and contexts --------------------------------------------------------------- */

struct si_kernel {
	TF_KernelBuilder *kb;
	TF_OpDefinitionBuilder *op;
	void *self;
};

si_kernel *si_kernel_new(const char *opname, const struct si_attr *attrs, size_t nattrs,
			 TF_Status *st)
{
	pthread_mutex_lock(&reg_mu);
	TF_KernelBuilder *kb = NULL;
	for (int i = 0; i < nkernels; i++)
		if (!strcmp(kernels[i]->op, opname))
			kb = kernels[i];
	TF_OpDefinitionBuilder *op = find_op(opname);
	pthread_mutex_unlock(&reg_mu);
	if (!kb || !op) {
		TF_SetStatus(st, TF_NOT_FOUND, "stand-in: no kernel for that op");
		return NULL;
	}
	TF_OpKernelConstruction c = { .op = op, .attrs = attrs, .nattrs = nattrs, .st = st };
	TF_SetStatus(st, TF_OK, "");
	void *self = kb->create ? kb->create(&c) : NULL;
	if (c.failed) {
		if (kb->del)
			kb->del(self); /* TensorFlow destroys the failed kernel too */
		return NULL;
	}
	si_kernel *k = calloc(1, sizeof *k);
	k->kb = kb;
	k->op = op;
	k->self = self;
	return k;
}

void si_kernel_free(si_kernel *k)
{
	if (!k)
		return;
	if (k->kb->del)
		k->kb->del(k->self);
	free(k);
}

struct TF_OpKernelContext {
	TF_Tensor *const *in;
	int nin, nout;
	TF_Tensor *out[MAXN];
	bool failed;
	TF_Status *st;
};

int TF_NumInputs(TF_OpKernelContext *c) { return c->nin; }
int TF_NumOutputs(TF_OpKernelContext *c) { return c->nout; }

void TF_GetInput(TF_OpKernelContext *c, int i, TF_Tensor **t, TF_Status *st)
{
	if (i < 0 || i >= c->nin) {
		TF_SetStatus(st, TF_OUT_OF_RANGE, "input index out of range");
		return;
	}
	TF_SetStatus(st, TF_OK, "");
	const TF_Tensor *src = c->in[i];
	*t = tensor_of(src->dt, src->dims, src->nd, src->b);
}

void TF_SetOutput(TF_OpKernelContext *c, int i, const TF_Tensor *t, TF_Status *st)
{
	if (i < 0 || i >= c->nout) {
		TF_SetStatus(st, TF_OUT_OF_RANGE, "output index out of range");
		return;
	}
	TF_SetStatus(st, TF_OK, "");
	TF_DeleteTensor(c->out[i]);
	c->out[i] = tensor_of(t->dt, t->dims, t->nd, t->b);
}

TF_Tensor *TF_AllocateOutput(TF_OpKernelContext *c, int i, TF_DataType dt, const int64_t *dims,
			     int nd, size_t len, TF_Status *st)
{
	size_t n = 1;
	for (int d = 0; d < nd; d++) {
		if (dims[d] < 0) {
			TF_SetStatus(st, TF_INVALID_ARGUMENT, "negative dimension");
			return NULL;
		}
		n *= (size_t)dims[d];
	}
	if (i < 0 || i >= c->nout || n * dt_size(dt) != len) {
		TF_SetStatus(st, TF_INVALID_ARGUMENT, "stand-in: bad output index or length");
		return NULL;
	}
	TF_SetStatus(st, TF_OK, "");
	struct buf *b = buf_alloc(len);
	TF_DeleteTensor(c->out[i]);
	c->out[i] = tensor_of(dt, dims, nd, b);
	return tensor_of(dt, dims, nd, b); /* like TensorFlow: a second reference */
}

void TF_OpKernelContext_Failure(TF_OpKernelContext *c, TF_Status *st)
{
	if (TF_GetCode(st) == TF_OK)
		atomic_fetch_add(&c_okfail, 1);
	c->failed = true;
	TF_SetStatus(c->st, TF_GetCode(st), TF_Message(st));
}

void si_compute(si_kernel *k, TF_Tensor *const *inputs, int nin, TF_Tensor **outputs, int nout,
		TF_Status *st)
{
	if (nin != k->op->nin || nout != k->op->nout || nout > MAXN) {
		TF_SetStatus(st, TF_INVALID_ARGUMENT, "stand-in: wrong number of inputs or outputs");
		return;
	}
	TF_OpKernelContext c = { .in = inputs, .nin = nin, .nout = nout, .st = st };
	TF_SetStatus(st, TF_OK, "");
	k->kb->compute(k->self, &c);
	bool missing = false;
	for (int i = 0; i < nout; i++)
		missing |= c.out[i] == NULL;
	if (!c.failed && missing)
		TF_SetStatus(st, TF_INTERNAL, "stand-in: the kernel left an output unset");
	for (int i = 0; i < nout; i++) {
		if (c.failed || missing) {
			TF_DeleteTensor(c.out[i]);
			outputs[i] = NULL;
		} else {
			outputs[i] = c.out[i];
		}
	}
}
