/*
 * de_tf.h — the plain-C half of the TensorFlow ops (tf_op/): everything kernels.c needs
 * that does not touch a TensorFlow type, so that it can be tested without TensorFlow.
 *
 *   - the table config: the `config` attribute of every op is a text "key=value;..."
 *     (written by dynemb.tensorflow's config mapping) parsed into a struct dynemb_table_spec;
 *   - a pool of libdynemb connections per (service address, timeout), shared by every
 *     kernel instance and thread: a Compute takes a connection for itself (a dynemb_client
 *     is not thread-safe), and gives it back when done — or, when the lookup's output
 *     wraps the connection's channel memory, when TensorFlow frees that output;
 *   - per connection, the table handles by (var_name, config);
 *   - shape checks.
 *
 * Every function returns 0 or a negative errno and, on error, a message in err (errlen
 * bytes, NUL-terminated) that names the op's argument and what was wrong.
 */
#ifndef DE_TF_H
#define DE_TF_H

#include <stddef.h>
#include <stdint.h>

#include "dynemb.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DE_TF_ERRLEN 512
#define DE_TF_MAX_RANK 16

/* Parse the config text into *spec (name = var_name, which must be 1..63 bytes).
 * Keys (each at most once; whitespace around keys and values is ignored):
 *   dim (required), nslots, init=zeros|constant|uniform|trunc_normal, init_a, init_b,
 *   slot_init, seed, keys=int64|string,
 *   optimizer=none|sgd|momentum|nesterov|adagrad|adam|adamw|ftrl|rmsprop (its defaults
 *   from dynemb_optim_spec_defaults, then) lr, weight_decay, momentum, dampening, beta1,
 *   beta2, eps, initial_accumulator_value, alpha, l1, l2, lr_power, ftrl_beta,
 *   admission=none|count|probability, admission_min_count, admission_probability,
 *   admission_sketch_width, admission_sketch_depth, admission_reject=init|zeros,
 *   eviction=none|lru|lfu|ttl|l2, eviction_budget_bytes, eviction_ttl,
 *   eviction_ttl_unit=steps|seconds, eviction_lru_clock=steps|seconds,
 *   eviction_lfu_decay, eviction_disk_tier=0|1, durability=none|async|sync,
 *   durability_window_ms.
 * Unset fields stay zero (dynemb_table_spec's meaning of zero). -EINVAL: unknown key,
 * repeated key, bad number or name, hyperparameters without an optimizer, no dim.
 * The daemon still validates the ranges (dynemb_open). */
int de_tf_parse_config(const char *text, const char *var_name, struct dynemb_table_spec *spec,
		       char *err, size_t errlen);

typedef struct de_tf_conn de_tf_conn;

/* Take a connection to the daemon at address ("" : libdynemb's default socket) for the
 * caller alone: an idle one from the pool, or a new one. timeout_ms <= 0: libdynemb's
 * default. Errors: those of dynemb_connect, with the address in err. */
int de_tf_acquire(const char *address, int timeout_ms, de_tf_conn **out, char *err,
		  size_t errlen);
/* Give it back. broken: the connection failed in a way that may leave it unusable (a
 * timeout, a lost daemon): close it instead of pooling it. Any thread may call this. */
void de_tf_release(de_tf_conn *conn, int broken);
dynemb_client *de_tf_client(de_tf_conn *conn);
/* The table handle for (var_name, config) on this connection, opened on first use. */
int de_tf_table(de_tf_conn *conn, const char *var_name, const char *config, int *table,
		char *err, size_t errlen);

/* May the caller keep conn reserved behind a wrapped output tensor? Counts it as held
 * when yes (then de_tf_release from the deallocator un-counts it). At most
 * DE_TF_MAX_HELD connections per pool are held at once: past that, outputs are copied,
 * so the connections (and their channel memory) stay bounded. */
#define DE_TF_MAX_HELD 8
int de_tf_try_hold(de_tf_conn *conn);
void de_tf_unhold(de_tf_conn *conn); /* undo de_tf_try_hold when wrapping did not happen */

/* Counters of one pool (tests): connections open, idle, held by outputs. -ENOENT: no
 * pool for that address yet. */
int de_tf_pool_counts(const char *address, int timeout_ms, unsigned *open, unsigned *idle,
		      unsigned *held);
/* Close every idle connection of every pool (tests, unloading). Busy connections close
 * when released. */
void de_tf_close_idle(void);

/* values must have shape keys_dims + [dim]. -EINVAL with the two shapes in err. */
int de_tf_check_rows_shape(const char *what, const int64_t *keys_dims, int keys_rank,
			   const int64_t *vals_dims, int vals_rank, uint32_t dim, char *err,
			   size_t errlen);

#ifdef __cplusplus
}
#endif
#endif /* DE_TF_H */
