/*
 * tf_c_api.h — the part of TensorFlow's stable C API that the dynemb ops use, in one place.
 *
 * Where TensorFlow's own headers are available (the meson option `tensorflow` found an
 * installed TensorFlow, which defines DE_TF_HAVE_TF_HEADERS), this header includes them
 * and declares nothing itself. Elsewhere it declares exactly the typedefs and functions
 * below, copied from TensorFlow's public headers (tensorflow/c/tf_datatype.h,
 * tf_status.h, tf_tensor.h, tf_tstring.h with the layout from
 * tensorflow/core/platform/ctstring_internal.h, kernels.h, ops.h), so that kernels.c
 * compiles here and its test can link it against tests/tf_standin/ — a small stand-in
 * that implements these functions to exercise our kernels. The stand-in checks our code,
 * not TensorFlow: it is not TensorFlow and does not prove compatibility with it.
 *
 * Rule: add a declaration here only when kernels.c starts using it, and copy it
 * verbatim (the names, argument order and types are TensorFlow's ABI).
 */
#ifndef DE_TF_C_API_H
#define DE_TF_C_API_H

#ifdef DE_TF_HAVE_TF_HEADERS

#include "tensorflow/c/kernels.h"
/* ops.h declares these as bare structs (valid C++ only); C needs the typedefs first. */
typedef struct TF_DimensionHandle TF_DimensionHandle;
typedef struct TF_OpDefinitionBuilder TF_OpDefinitionBuilder;
typedef struct TF_ShapeHandle TF_ShapeHandle;
typedef struct TF_ShapeInferenceContext TF_ShapeInferenceContext;
#include "tensorflow/c/ops.h"
#include "tensorflow/c/tf_datatype.h"
#include "tensorflow/c/tf_status.h"
#include "tensorflow/c/tf_tensor.h"
#include "tensorflow/c/tf_tstring.h"

/* The kernel API lives in libtensorflow_framework.so.2 (the one library the op library
 * links), which does not export TF_StringGetDataPointer / TF_StringGetSize (only
 * libtensorflow_cc.so.2 does): read a TF_TString with the header-only accessors of
 * tsl/platform/ctstring_internal.h instead, the same layout. */
#define de_tf_string_data TF_TString_GetDataPointer
#define de_tf_string_size TF_TString_GetSize

#else /* declarations copied from TensorFlow's C API headers */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifndef TF_CAPI_EXPORT
#define TF_CAPI_EXPORT __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* tensorflow/c/tf_datatype.h (the values we use; the enum's numbering is TF's) */
typedef enum TF_DataType {
	TF_FLOAT = 1,
	TF_DOUBLE = 2,
	TF_INT32 = 3,
	TF_UINT8 = 4,
	TF_INT16 = 5,
	TF_INT8 = 6,
	TF_STRING = 7,
	TF_COMPLEX64 = 8,
	TF_INT64 = 9,
	TF_BOOL = 10,
	TF_UINT64 = 23,
} TF_DataType;

/* tensorflow/c/tf_status.h */
typedef struct TF_Status TF_Status;
typedef enum TF_Code {
	TF_OK = 0,
	TF_CANCELLED = 1,
	TF_UNKNOWN = 2,
	TF_INVALID_ARGUMENT = 3,
	TF_DEADLINE_EXCEEDED = 4,
	TF_NOT_FOUND = 5,
	TF_ALREADY_EXISTS = 6,
	TF_PERMISSION_DENIED = 7,
	TF_UNAUTHENTICATED = 16,
	TF_RESOURCE_EXHAUSTED = 8,
	TF_FAILED_PRECONDITION = 9,
	TF_ABORTED = 10,
	TF_OUT_OF_RANGE = 11,
	TF_UNIMPLEMENTED = 12,
	TF_INTERNAL = 13,
	TF_UNAVAILABLE = 14,
	TF_DATA_LOSS = 15,
} TF_Code;
TF_CAPI_EXPORT extern TF_Status *TF_NewStatus(void);
TF_CAPI_EXPORT extern void TF_DeleteStatus(TF_Status *);
TF_CAPI_EXPORT extern void TF_SetStatus(TF_Status *s, TF_Code code, const char *msg);
TF_CAPI_EXPORT extern TF_Code TF_GetCode(const TF_Status *s);
TF_CAPI_EXPORT extern const char *TF_Message(const TF_Status *s);

/* tensorflow/c/tf_tensor.h */
typedef struct TF_Tensor TF_Tensor;
TF_CAPI_EXPORT extern TF_Tensor *TF_NewTensor(TF_DataType, const int64_t *dims, int num_dims,
					      void *data, size_t len,
					      void (*deallocator)(void *data, size_t len, void *arg),
					      void *deallocator_arg);
TF_CAPI_EXPORT extern void TF_DeleteTensor(TF_Tensor *);
TF_CAPI_EXPORT extern TF_DataType TF_TensorType(const TF_Tensor *);
TF_CAPI_EXPORT extern int TF_NumDims(const TF_Tensor *);
TF_CAPI_EXPORT extern int64_t TF_Dim(const TF_Tensor *tensor, int dim_index);
TF_CAPI_EXPORT extern size_t TF_TensorByteSize(const TF_Tensor *);
TF_CAPI_EXPORT extern void *TF_TensorData(const TF_Tensor *);
TF_CAPI_EXPORT extern int64_t TF_TensorElementCount(const TF_Tensor *tensor);

/* tensorflow/core/platform/ctstring_internal.h: the element type of TF_STRING tensors
 * (24 bytes); we only use its size and the accessors of tf_tstring.h. */
typedef struct TF_TString_Large {
	size_t size;
	size_t cap;
	char *ptr;
} TF_TString_Large;
typedef struct TF_TString_Offset {
	uint32_t size;
	uint32_t offset;
	uint32_t count;
} TF_TString_Offset;
typedef struct TF_TString_View {
	size_t size;
	const char *ptr;
} TF_TString_View;
typedef struct TF_TString_Raw {
	uint8_t raw[24];
} TF_TString_Raw;
typedef union TF_TString_Union {
	TF_TString_Large large;
	TF_TString_Offset offset;
	TF_TString_View view;
	TF_TString_Raw raw;
} TF_TString_Union;
enum {
	TF_TString_SmallCapacity =
		(sizeof(TF_TString_Union) - sizeof(/* null delim */ char) -
		 sizeof(/* uint8_t size */ uint8_t)),
};
typedef struct TF_TString_Small {
	uint8_t size;
	char str[TF_TString_SmallCapacity + sizeof(/* null delim */ char)];
} TF_TString_Small;
typedef struct {
	union {
		TF_TString_Small smll;
		TF_TString_Large large;
		TF_TString_Offset offset;
		TF_TString_View view;
		TF_TString_Raw raw;
	} u;
} TF_TString;

/* tensorflow/c/tf_tstring.h */
TF_CAPI_EXPORT extern const char *TF_StringGetDataPointer(const TF_TString *tstr);
TF_CAPI_EXPORT extern size_t TF_StringGetSize(const TF_TString *tstr);

/* tensorflow/c/kernels.h */
typedef struct TF_KernelBuilder TF_KernelBuilder;
typedef struct TF_OpKernelConstruction TF_OpKernelConstruction;
typedef struct TF_OpKernelContext TF_OpKernelContext;
TF_CAPI_EXPORT extern TF_KernelBuilder *TF_NewKernelBuilder(
	const char *op_name, const char *device_name,
	void *(*create_func)(TF_OpKernelConstruction *),
	void (*compute_func)(void *, TF_OpKernelContext *), void (*delete_func)(void *));
TF_CAPI_EXPORT extern void TF_RegisterKernelBuilder(const char *kernel_name,
						    TF_KernelBuilder *builder, TF_Status *status);
TF_CAPI_EXPORT extern int TF_NumInputs(TF_OpKernelContext *ctx);
TF_CAPI_EXPORT extern int TF_NumOutputs(TF_OpKernelContext *ctx);
TF_CAPI_EXPORT extern void TF_GetInput(TF_OpKernelContext *ctx, int i, TF_Tensor **tensor,
				       TF_Status *status);
TF_CAPI_EXPORT extern void TF_SetOutput(TF_OpKernelContext *ctx, int i, const TF_Tensor *tensor,
					TF_Status *status);
TF_CAPI_EXPORT extern void TF_OpKernelConstruction_Failure(TF_OpKernelConstruction *ctx,
							   TF_Status *status);
TF_CAPI_EXPORT extern void TF_OpKernelContext_Failure(TF_OpKernelContext *ctx, TF_Status *status);
TF_CAPI_EXPORT extern void TF_OpKernelConstruction_GetAttrSize(TF_OpKernelConstruction *ctx,
							       const char *attr_name,
							       int32_t *list_size,
							       int32_t *total_size,
							       TF_Status *status);
TF_CAPI_EXPORT extern void TF_OpKernelConstruction_GetAttrInt64(TF_OpKernelConstruction *ctx,
								const char *attr_name, int64_t *val,
								TF_Status *status);
TF_CAPI_EXPORT extern void TF_OpKernelConstruction_GetAttrFloat(TF_OpKernelConstruction *ctx,
								const char *attr_name, float *val,
								TF_Status *status);
TF_CAPI_EXPORT extern void TF_OpKernelConstruction_GetAttrString(TF_OpKernelConstruction *ctx,
								 const char *attr_name, char *val,
								 size_t max_length,
								 TF_Status *status);
TF_CAPI_EXPORT TF_Tensor *TF_AllocateOutput(TF_OpKernelContext *context, int index,
					    TF_DataType dtype, const int64_t *dims, int num_dims,
					    size_t len, TF_Status *status);

/* tensorflow/c/ops.h */
typedef struct TF_OpDefinitionBuilder TF_OpDefinitionBuilder;
typedef struct TF_ShapeInferenceContext TF_ShapeInferenceContext;
TF_CAPI_EXPORT extern TF_OpDefinitionBuilder *TF_NewOpDefinitionBuilder(const char *op_name);
TF_CAPI_EXPORT extern void TF_RegisterOpDefinition(TF_OpDefinitionBuilder *builder,
						   TF_Status *status);
TF_CAPI_EXPORT extern void TF_OpDefinitionBuilderAddAttr(TF_OpDefinitionBuilder *builder,
							 const char *attr_spec);
TF_CAPI_EXPORT extern void TF_OpDefinitionBuilderAddInput(TF_OpDefinitionBuilder *builder,
							  const char *input_spec);
TF_CAPI_EXPORT extern void TF_OpDefinitionBuilderAddOutput(TF_OpDefinitionBuilder *builder,
							   const char *output_spec);
TF_CAPI_EXPORT extern void TF_OpDefinitionBuilderSetIsStateful(TF_OpDefinitionBuilder *builder,
							       bool is_stateful);
TF_CAPI_EXPORT extern void TF_OpDefinitionBuilderSetShapeInferenceFunction(
	TF_OpDefinitionBuilder *builder,
	void (*shape_inference_func)(TF_ShapeInferenceContext *ctx, TF_Status *status));
TF_CAPI_EXPORT extern void TF_ShapeInferenceContextSetUnknownShape(TF_ShapeInferenceContext *ctx,
								   TF_Status *status);

#ifdef __cplusplus
}
#endif

#define de_tf_string_data TF_StringGetDataPointer
#define de_tf_string_size TF_StringGetSize

#endif /* DE_TF_HAVE_TF_HEADERS */
#endif /* DE_TF_C_API_H */
