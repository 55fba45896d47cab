/*
 * optim_defaults.h — PRIVATE: the one table of optimizer defaults (torch.optim's; FTRL:
 * tf.keras.optimizers.Ftrl's). Header-only, so that both users take the same numbers
 * without linking each other: libdelearn's de_optim_defaults (optim.c) and libdynemb's
 * dynemb_optim_spec_defaults (src/client/client.c, which reaches it as
 * "learn/optim_defaults.h"; de_optimizer's numbers are the wire's and dynemb.h's).
 * Not installed. Never: holds state, or a default that only one of the two users sees.
 */
#ifndef DE_OPTIM_DEFAULTS_H
#define DE_OPTIM_DEFAULTS_H

#include <string.h>

#include "de_learn.h"

/*
 * Fill out (every field) with kind's defaults. DE_OPT_NONE and unknown kinds: every
 * hyperparameter 0 (out->kind = kind). Known kinds share lr 0.01 (SGD has no torch
 * default), beta1 0.9, beta2 0.999, eps 1e-8, alpha 0.99, lr_power -0.5; then:
 * MOMENTUM / NESTEROV momentum 0.9; ADAGRAD eps 1e-10; ADAM lr 1e-3; ADAMW lr 1e-3,
 * weight_decay 1e-2; FTRL lr 1e-3, initial_accumulator_value 0.1. The rest are 0.
 */
static inline void de_optim_defaults_fill(enum de_optimizer kind,
					  struct de_optim_config *out /* out */)
{
	memset(out, 0, sizeof(*out));
	out->kind = kind;
	if (kind < DE_OPT_SGD || kind > DE_OPT_RMSPROP)
		return;
	out->lr = 0.01;
	out->beta1 = 0.9;
	out->beta2 = 0.999;
	out->eps = 1e-8;
	out->alpha = 0.99;
	out->lr_power = -0.5;
	switch (kind) {
	case DE_OPT_MOMENTUM:
	case DE_OPT_NESTEROV:
		out->momentum = 0.9;
		break;
	case DE_OPT_ADAGRAD:
		out->eps = 1e-10;
		break;
	case DE_OPT_ADAM:
		out->lr = 1e-3;
		break;
	case DE_OPT_ADAMW:
		out->lr = 1e-3;
		out->weight_decay = 1e-2;
		break;
	case DE_OPT_FTRL:
		out->lr = 1e-3;
		out->initial_accumulator_value = 0.1;
		break;
	default:
		break;
	}
}

#endif /* DE_OPTIM_DEFAULTS_H */
