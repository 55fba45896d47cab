/*
 * de_learn.h — the public interface of libdelearn: optimizers that step rows of a
 * de_table in place, with their state in the row's slots.
 *
 * de_optim_update(t, cfg, keys, n, grads, ...) sums the gradients of duplicate keys in
 * the batch, then applies one optimizer step to each distinct key's row under that row's
 * write protection (de_table_apply). Rows whose key is not in the batch are not touched
 * at all: no weight decay, no momentum, no moment decay, no step count. This is the
 * "sparse" (lazy) semantics of an embedding table, and it is what torch.optim computes
 * for one parameter per key stepped only when that key has a gradient; it is NOT what
 * torch.optim computes on a dense nn.Embedding weight (see Caveats).
 *
 * Formulas (per element; p = value, g = summed gradient, t = the key's step count after
 * this step, scalars like lr / bias corrections are computed in double and applied in
 * float, as torch 1.13's single-tensor CPU path does):
 *   SGD:       g += wd*p;  p -= lr*g
 *   MOMENTUM:  g += wd*p;  b = (t == 1) ? g : momentum*b + (1-dampening)*g;  p -= lr*b
 *   NESTEROV:  same b;  p -= lr*(g + momentum*b)            (torch: nesterov=True)
 *   ADAGRAD:   g += wd*p;  s = (t == 1 ? init_acc : s) + g^2;  p -= lr*g/(sqrt(s)+eps)
 *              (torch's lr_decay is not supported: it is 0)
 *   ADAM:      g += wd*p;  m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2  (m = v = 0 at t=1)
 *              p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)   (amsgrad unsupported)
 *   ADAMW:     p *= 1 - lr*wd;  then ADAM without the wd term
 *   RMSPROP:   g += wd*p;  s = alpha*s + (1-alpha)*g^2  (s = 0 at t=1);  p -= lr*g/(sqrt(s)+eps)
 *              (torch's momentum and centered variants are not supported)
 *   FTRL:      FTRL-Proximal (McMahan et al. 2013), as tf.keras.optimizers.Ftrl:
 *              n' = n + g^2  (n = init_acc at t=1, z = 0 at t=1)
 *              z += g - (n'^-lr_power - n^-lr_power)/lr * p;   n = n'
 *              p = |z| <= l1 ? 0 : (sign(z)*l1 - z) / (n^-lr_power/lr + ftrl_beta/lr + 2*l2)
 *              l2 follows TensorFlow's convention (penalty l2*|w|^2, so the paper's
 *              lambda2 is 2*l2); ftrl_beta is the paper's beta (Keras' `beta`). The row's
 *              value before the key's first step is used as the starting weight (TF does
 *              the same with a variable's initial value; the paper starts from 0).
 *
 * Slots (each dim floats, after the values): MOMENTUM/NESTEROV [b], ADAGRAD [s],
 * ADAM/ADAMW [m, v], RMSPROP [s], FTRL [n, z]. The optimizer initializes its slots itself
 * on a key's first step, so the table's slot_init does not matter.
 *
 * Per-key step count: meta->aux of each row counts the steps this module applied to it
 * (every optimizer keeps it; Adam/AdamW use it for bias correction, the others to know
 * when to initialize their slots). A row created by a lookup or assign has aux 0.
 *
 * Caveats (what this API does not promise):
 *   - Sparse semantics differ from torch.optim on a dense weight. A dense optimizer steps
 *     every row every step: rows with zero gradient still get weight decay (all kinds),
 *     momentum keeps moving them (MOMENTUM/NESTEROV), Adam/AdamW/RMSProp decay their
 *     moments and Adam/AdamW move them by m/(sqrt(v)+eps), and Adam's bias correction
 *     uses one global step count. Here untouched rows stay bit-identical and each key has
 *     its own step count. They coincide for SGD without weight decay and for Adagrad
 *     without weight decay. torch.optim.SparseAdam is also different: it keeps one step
 *     count for the whole weight.
 *   - Missing keys are created with the table's initializer and then stepped (the
 *     gradient was computed on the initializer's value, which a lookup returned).
 *   - The learning rate (and every other hyperparameter) is read from cfg at each call;
 *     a schedule changes it by passing another cfg. Changing the optimizer kind of a
 *     table that already has state is not detected.
 *   - A batch with a non-finite gradient is rejected whole (-EINVAL) before any row is
 *     touched. Other errors from the table (-ENOMEM creating rows, -EROFS) may come after
 *     some rows were stepped: *applied says how many distinct keys were.
 *   - Not atomic across rows: a concurrent reader may see some rows of a batch stepped and
 *     others not; each row is stepped atomically with respect to readers.
 */
#ifndef DE_LEARN_H
#define DE_LEARN_H

#include <stddef.h>
#include <stdint.h>

#include "de_shm.h"

#ifdef __cplusplus
extern "C" {
#endif

enum de_optimizer {
	DE_OPT_SGD = 0,
	DE_OPT_MOMENTUM,
	DE_OPT_NESTEROV,
	DE_OPT_ADAGRAD,
	DE_OPT_ADAM,
	DE_OPT_ADAMW,
	DE_OPT_FTRL,
	DE_OPT_RMSPROP,
};

/* Hyperparameters. Names follow torch.optim (FTRL: tf.keras.optimizers.Ftrl). Fields an
 * optimizer does not use are ignored. de_optim_defaults fills the libraries' defaults. */
struct de_optim_config {
	enum de_optimizer kind;
	double lr;           /* all; FTRL needs lr > 0 */
	double weight_decay; /* SGD family, ADAGRAD, ADAM, RMSPROP: L2 (wd*p added to g);
	                        ADAMW: decoupled (p *= 1 - lr*wd); FTRL: must be 0 */
	double momentum;     /* MOMENTUM, NESTEROV (> 0); RMSPROP: must be 0 */
	double dampening;    /* MOMENTUM; NESTEROV: must be 0 (as torch) */
	double beta1, beta2; /* ADAM, ADAMW: in [0, 1) */
	double eps;          /* ADAGRAD, ADAM, ADAMW, RMSPROP */
	double initial_accumulator_value; /* ADAGRAD (torch default 0), FTRL (TF default 0.1) */
	double alpha;        /* RMSPROP smoothing constant, in [0, 1] */
	int centered;        /* RMSPROP: must be 0 */
	double l1, l2;       /* FTRL, TensorFlow's convention (see the top of this file) */
	double lr_power;     /* FTRL: <= 0, usually -0.5 */
	double ftrl_beta;    /* FTRL: the paper's beta, >= 0 (Keras default 0) */
};

/* torch.optim's defaults for kind (SGD has none for lr: 0.01 here; FTRL: Keras' lr 0.001,
 * lr_power -0.5, initial_accumulator_value 0.1, l1 = l2 = beta = 0). */
void de_optim_defaults(enum de_optimizer kind, struct de_optim_config *out /* out */);

/* 0, or -EINVAL with the reason written to why (may be NULL, cap bytes). */
int de_optim_check(const struct de_optim_config *cfg, char *why, size_t cap);

/* Slots (of dim floats each) a table needs for kind; UINT32_MAX for an unknown kind. */
uint32_t de_optim_slots(enum de_optimizer kind);

const char *de_optim_name(enum de_optimizer kind); /* "adam", ...; "?" when unknown */

/*
 * One optimizer step: grads holds n * dim floats, row i for keys[i]. Duplicate keys are
 * summed (in batch order) and stepped once; key 0 is ignored. Missing keys are created
 * (table initializer) and stepped. step is stored as the rows' last_step.
 * applied (may be NULL): distinct keys stepped, also set on error.
 * Errors: -EINVAL for NULL arguments, a bad cfg, a table with fewer slots than the
 * optimizer needs, or a non-finite gradient; -ENOMEM; whatever de_table_apply returns.
 */
int de_optim_update(de_table *t, const struct de_optim_config *cfg, const uint64_t *keys,
		    size_t n, const float *grads, uint64_t step, size_t *applied /* out */);

#ifdef __cplusplus
}
#endif
#endif /* DE_LEARN_H */
