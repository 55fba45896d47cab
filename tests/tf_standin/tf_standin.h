/*
 * tf_standin.h — a small stand-in for the part of TensorFlow's C API that tf_op/ uses
 * (declared in tf_op/tf_c_api.h), for testing our kernels on machines without
 * TensorFlow. It is NOT TensorFlow: it implements just enough — statuses, tensors with
 * shared reference-counted buffers and deallocators, TF_TString views, op and kernel
 * registration, attributes with the op definition's defaults, and a kernel context — to
 * register the dynemb kernels, build inputs, call Compute and read outputs. It mirrors
 * the TensorFlow behaviours our code depends on (TF_GetInput / TF_AllocateOutput hand
 * out a new reference that the kernel deletes; TF_SetOutput shares the buffer;
 * TF_NewTensor copies data not aligned to 64 bytes and runs the deallocator at once;
 * TF_OpKernelConstruction_GetAttrString does not NUL-terminate). Passing tests here
 * show our kernels are correct against this model of the API, not that they load into
 * a real TensorFlow.
 *
 * Test-side functions (si_ prefix):
 */
#ifndef TF_STANDIN_H
#define TF_STANDIN_H

#include "tf_c_api.h"

enum si_attr_kind { SI_STR, SI_INT, SI_FLOAT };
struct si_attr {
	const char *name;
	enum si_attr_kind kind;
	const char *s;
	int64_t i;
	float f;
};

typedef struct si_kernel si_kernel;

/* Instantiate the kernel registered for op with these attrs (others from the op's
 * defaults). NULL with *st set when the op is unknown or construction failed. */
si_kernel *si_kernel_new(const char *op, const struct si_attr *attrs, size_t nattrs,
			 TF_Status *st);
void si_kernel_free(si_kernel *k);
/* Run Compute with nin inputs (borrowed). On success outputs[0..nout) are new
 * references (the caller deletes them); on failure *st has the kernel's status and no
 * output is returned. nout must equal the op's output count. */
void si_compute(si_kernel *k, TF_Tensor *const *inputs, int nin, TF_Tensor **outputs, int nout,
		TF_Status *st);

/* Number of inputs / outputs of a registered op; -1 if it is not registered. */
int si_op_arity(const char *op, int *noutputs);

/* Tensors for tests (copies of the data). */
TF_Tensor *si_tensor(TF_DataType dt, const int64_t *dims, int nd, const void *data);
/* A TF_STRING tensor whose elements are views of strs[i] (lens[i] bytes): the strings
 * must outlive the tensor. */
TF_Tensor *si_string_tensor(const int64_t *dims, int nd, const char *const *strs,
			    const size_t *lens);

struct si_counts {
	unsigned long wrapped;       /* TF_NewTensor calls with a deallocator */
	unsigned long dealloc_runs;  /* deallocators run */
	unsigned long copied;        /* TF_NewTensor data copied for alignment */
	unsigned long live_buffers;  /* buffers not yet freed */
	unsigned long ok_failures;   /* Failure calls with an OK status (a kernel bug) */
};
void si_get_counts(struct si_counts *out);

#endif /* TF_STANDIN_H */
