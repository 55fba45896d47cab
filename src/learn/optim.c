/*
 * optim.c — optimizers that step table rows in place (public header: de_learn.h, which
 * states the formulas and the sparse semantics).
 *
 * Owns: the per-call deduplication of keys (an open-addressing map from key to its first
 * position in the batch, so duplicates are summed in batch order), and the per-row step
 * functions, called by de_table_apply under the row's write protection on a private copy
 * of the row.
 * Never: keeps state outside the table across calls (several tables and threads use this
 * at once; a call's buffers live in a per-thread scratch block that only grows, so a
 * steady stream of batches allocates nothing); calls back into the table from a step
 * function; touches a row whose key is not in the batch.
 * Callers: the daemon's update path, tests/learn/learn_driver.c.
 *
 * Numerics follow torch 1.13's single-tensor CPU path: scalar factors (lr, 1 - beta,
 * bias corrections) are computed in double and rounded to float once, the element
 * arithmetic is float, in torch's order of operations. Results agree with torch to fp32
 * rounding, not bit for bit (torch's vectorized kernels use fused multiply-adds).
 */
#include "de_learn.h"
#include "optim_defaults.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- configuration -------------------------------------------------------------- */

static const char *const names[] = {
	[DE_OPT_NONE] = "none",
	[DE_OPT_SGD] = "sgd",         [DE_OPT_MOMENTUM] = "momentum", [DE_OPT_NESTEROV] = "nesterov",
	[DE_OPT_ADAGRAD] = "adagrad", [DE_OPT_ADAM] = "adam",         [DE_OPT_ADAMW] = "adamw",
	[DE_OPT_FTRL] = "ftrl",       [DE_OPT_RMSPROP] = "rmsprop",
};

static const uint32_t nslots[] = {
	[DE_OPT_NONE] = 0,
	[DE_OPT_SGD] = 0,     [DE_OPT_MOMENTUM] = 1, [DE_OPT_NESTEROV] = 1, [DE_OPT_ADAGRAD] = 1,
	[DE_OPT_ADAM] = 2,    [DE_OPT_ADAMW] = 2,    [DE_OPT_FTRL] = 2,     [DE_OPT_RMSPROP] = 1,
};

#define NKINDS (sizeof(nslots) / sizeof(nslots[0]))

/* a kind that steps (NONE does not) */
static bool kind_ok(enum de_optimizer k) { return k >= DE_OPT_SGD && (unsigned)k < NKINDS; }

uint32_t de_optim_slots(enum de_optimizer kind)
{
	return (unsigned)kind < NKINDS ? nslots[kind] : UINT32_MAX;
}

const char *de_optim_name(enum de_optimizer kind)
{
	return (unsigned)kind < NKINDS ? names[kind] : "?";
}

void de_optim_defaults(enum de_optimizer kind, struct de_optim_config *out)
{
	de_optim_defaults_fill(kind, out); /* the table libdynemb uses too */
}

__attribute__((format(printf, 3, 4))) static int bad(char *why, size_t cap, const char *fmt, ...)
{
	if (why && cap) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(why, cap, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

/* finite and >= 0 */
static bool nonneg(double x) { return isfinite(x) && x >= 0; }

int de_optim_check(const struct de_optim_config *c, char *why, size_t cap)
{
	if (!c)
		return bad(why, cap, "no config");
	if (!kind_ok(c->kind))
		return bad(why, cap, "unknown optimizer %d", (int)c->kind);
	const char *nm = names[c->kind];
	if (!nonneg(c->lr))
		return bad(why, cap, "%s: lr must be finite and >= 0", nm);
	if (!nonneg(c->weight_decay))
		return bad(why, cap, "%s: weight_decay must be finite and >= 0", nm);
	if (c->hogwild != 0 && c->hogwild != 1)
		return bad(why, cap, "%s: hogwild must be 0 or 1", nm);
	switch (c->kind) {
	case DE_OPT_NONE: /* rejected by kind_ok above */
	case DE_OPT_SGD:
		break;
	case DE_OPT_MOMENTUM:
	case DE_OPT_NESTEROV:
		if (!nonneg(c->momentum))
			return bad(why, cap, "%s: momentum must be finite and >= 0", nm);
		if (!isfinite(c->dampening))
			return bad(why, cap, "%s: dampening must be finite", nm);
		if (c->kind == DE_OPT_NESTEROV && (c->momentum <= 0 || c->dampening != 0))
			return bad(why, cap, "nesterov: needs momentum > 0 and dampening 0");
		break;
	case DE_OPT_ADAGRAD:
		if (!nonneg(c->eps))
			return bad(why, cap, "adagrad: eps must be finite and >= 0");
		if (!nonneg(c->initial_accumulator_value))
			return bad(why, cap, "adagrad: initial_accumulator_value must be finite and >= 0");
		break;
	case DE_OPT_ADAM:
	case DE_OPT_ADAMW:
		if (!nonneg(c->eps))
			return bad(why, cap, "%s: eps must be finite and >= 0", nm);
		if (!nonneg(c->beta1) || c->beta1 >= 1 || !nonneg(c->beta2) || c->beta2 >= 1)
			return bad(why, cap, "%s: betas must be in [0, 1)", nm);
		break;
	case DE_OPT_RMSPROP:
		if (!nonneg(c->eps))
			return bad(why, cap, "rmsprop: eps must be finite and >= 0");
		if (!nonneg(c->alpha) || c->alpha > 1)
			return bad(why, cap, "rmsprop: alpha must be in [0, 1]");
		if (c->momentum != 0 || c->centered)
			return bad(why, cap, "rmsprop: momentum and centered are not supported");
		break;
	case DE_OPT_FTRL:
		if (!(c->lr > 0))
			return bad(why, cap, "ftrl: lr must be > 0");
		if (!nonneg(c->l1) || !nonneg(c->l2) || !nonneg(c->ftrl_beta))
			return bad(why, cap, "ftrl: l1, l2 and beta must be finite and >= 0");
		if (!isfinite(c->lr_power) || c->lr_power > 0)
			return bad(why, cap, "ftrl: lr_power must be <= 0");
		if (!nonneg(c->initial_accumulator_value))
			return bad(why, cap, "ftrl: initial_accumulator_value must be finite and >= 0");
		if (c->weight_decay != 0)
			return bad(why, cap, "ftrl: weight_decay is not supported (use l2)");
		break;
	}
	return 0;
}

/* ---- the per-row steps ------------------------------------------------------------ */

struct step_ctx {
	const struct de_optim_config *cfg;
	uint32_t dim;
	const float *const *gp; /* per distinct key: its (summed) gradient, dim floats */
	float *tmp;      /* dim floats of scratch */
	size_t applied;
	/* scalars, rounded to float once per call as torch does */
	float lr, neg_lr, wd, mom, one_m_damp, b1, one_m_b1, b2, one_m_b2, eps, alpha,
		one_m_alpha, decay;
	double ln_b1, ln_b2; /* ADAM/ADAMW: log(beta), 0 when beta is 0 */
};

/* g' = g + wd*p (torch: grad.add(param, alpha=weight_decay)), into tmp */
static const float *with_l2(struct step_ctx *c, const float *g, const float *p)
{
	if (c->wd == 0)
		return g;
	for (uint32_t j = 0; j < c->dim; j++)
		c->tmp[j] = g[j] + c->wd * p[j];
	return c->tmp;
}

static void step_sgd(struct step_ctx *c, const float *g, float *p)
{
	g = with_l2(c, g, p);
	for (uint32_t j = 0; j < c->dim; j++)
		p[j] = p[j] + c->neg_lr * g[j];
}

static void step_momentum(struct step_ctx *c, const float *g, float *p, bool first, bool nesterov)
{
	float *b = p + c->dim;
	g = with_l2(c, g, p);
	for (uint32_t j = 0; j < c->dim; j++) {
		b[j] = first ? g[j] : b[j] * c->mom + c->one_m_damp * g[j];
		float d = nesterov ? g[j] + c->mom * b[j] : b[j];
		p[j] = p[j] + c->neg_lr * d;
	}
}

static void step_adagrad(struct step_ctx *c, const float *g, float *p, bool first)
{
	float *s = p + c->dim;
	float init = (float)c->cfg->initial_accumulator_value;
	g = with_l2(c, g, p);
	for (uint32_t j = 0; j < c->dim; j++) {
		float sj = (first ? init : s[j]) + g[j] * g[j];
		s[j] = sj;
		p[j] = p[j] + c->neg_lr * (g[j] / (sqrtf(sj) + c->eps));
	}
}

static void step_adam(struct step_ctx *c, const float *g, float *p, uint64_t t, bool decoupled)
{
	float *m = p + c->dim, *v = p + 2 * (size_t)c->dim;
	if (decoupled) {
		if (c->decay != 1.0f)
			for (uint32_t j = 0; j < c->dim; j++)
				p[j] = p[j] * c->decay;
	} else {
		g = with_l2(c, g, p);
	}
	/* 1 - beta^t as -expm1(t * ln beta): one expm1 with the log hoisted out of the batch
	 * instead of a pow per row (the step's costliest scalar work); it agrees with torch's
	 * 1 - beta ** t to about an ulp of double, far below the float rounding after it */
	double bc1 = c->cfg->beta1 > 0 ? -expm1((double)t * c->ln_b1) : 1.0;
	double bc2 = c->cfg->beta2 > 0 ? -expm1((double)t * c->ln_b2) : 1.0;
	float neg_step = (float)(-(c->cfg->lr / bc1));
	float bc2_sqrt = (float)sqrt(bc2);
	for (uint32_t j = 0; j < c->dim; j++) {
		float mj = t == 1 ? 0.0f : m[j], vj = t == 1 ? 0.0f : v[j];
		mj = mj * c->b1 + c->one_m_b1 * g[j];
		vj = vj * c->b2 + c->one_m_b2 * g[j] * g[j];
		m[j] = mj;
		v[j] = vj;
		float denom = sqrtf(vj) / bc2_sqrt + c->eps;
		p[j] = p[j] + neg_step * (mj / denom);
	}
}

static void step_rmsprop(struct step_ctx *c, const float *g, float *p, bool first)
{
	float *s = p + c->dim;
	g = with_l2(c, g, p);
	for (uint32_t j = 0; j < c->dim; j++) {
		float sj = (first ? 0.0f : s[j]) * c->alpha + c->one_m_alpha * g[j] * g[j];
		s[j] = sj;
		p[j] = p[j] + c->neg_lr * (g[j] / (sqrtf(sj) + c->eps));
	}
}

/* x^-lr_power, with the common case exact */
static float acc_pow(float x, float neg_power)
{
	return neg_power == 0.5f ? sqrtf(x) : powf(x, neg_power);
}

static void step_ftrl(struct step_ctx *c, const float *g, float *p, bool first)
{
	float *n = p + c->dim, *z = p + 2 * (size_t)c->dim;
	const struct de_optim_config *k = c->cfg;
	float np = (float)-k->lr_power, init = (float)k->initial_accumulator_value;
	float l1 = (float)k->l1, l2x2 = (float)(2.0 * k->l2), beta_lr = (float)(k->ftrl_beta / k->lr);
	for (uint32_t j = 0; j < c->dim; j++) {
		float nj = first ? init : n[j], zj = first ? 0.0f : z[j];
		float nn = nj + g[j] * g[j];
		float sigma = (acc_pow(nn, np) - acc_pow(nj, np)) / c->lr;
		zj = zj + (g[j] - sigma * p[j]);
		n[j] = nn;
		z[j] = zj;
		if (fabsf(zj) > l1) {
			float quad = acc_pow(nn, np) / c->lr + beta_lr + l2x2;
			p[j] = (copysignf(l1, zj) - zj) / quad;
		} else {
			p[j] = 0.0f;
		}
	}
}

/* de_table_apply callback: i is the distinct key's index, row its private copy */
static void step_row(void *ctx, size_t i, float *row, struct de_row_meta *meta)
{
	struct step_ctx *c = ctx;
	const float *g = c->gp[i];
	uint64_t t = meta->aux + 1; /* this key's step count, after this step */
	bool first = t == 1;
	switch (c->cfg->kind) {
	case DE_OPT_SGD:
		step_sgd(c, g, row);
		break;
	case DE_OPT_MOMENTUM:
		step_momentum(c, g, row, first, false);
		break;
	case DE_OPT_NESTEROV:
		step_momentum(c, g, row, first, true);
		break;
	case DE_OPT_ADAGRAD:
		step_adagrad(c, g, row, first);
		break;
	case DE_OPT_ADAM:
		step_adam(c, g, row, t, false);
		break;
	case DE_OPT_ADAMW:
		step_adam(c, g, row, t, true);
		break;
	case DE_OPT_FTRL:
		step_ftrl(c, g, row, first);
		break;
	case DE_OPT_RMSPROP:
		step_rmsprop(c, g, row, first);
		break;
	case DE_OPT_NONE: /* de_optim_check rejected it */
		break;
	}
	meta->aux = t;
	c->applied++;
}

/* ---- deduplication ------------------------------------------------------------------ */

/*
 * Distinct nonzero keys of keys[0..n) in order of first occurrence into ukeys, and where
 * their gradients are into gp: a key seen once points at its row of grads (no copy); a
 * duplicated key gets a row of sums (batch order), taken from sums as needed. Returns the
 * number of distinct keys, or -EINVAL for a non-finite gradient. map: cap entries (a power
 * of two >= 2n) of u32 index + 1.
 */
static long dedup(const uint64_t *keys, size_t n, const float *grads, uint32_t dim,
		  uint32_t *map, size_t cap, uint64_t *ukeys, const float **gp, float *sums)
{
	size_t nu = 0, nsum = 0;
	for (size_t i = 0; i < n; i++) {
		const float *gi = grads + i * dim;
		for (uint32_t j = 0; j < dim; j++)
			if (!isfinite(gi[j]))
				return -EINVAL;
		if (!keys[i])
			continue;
		size_t h = de_fmix64(keys[i]) & (cap - 1);
		while (map[h] && ukeys[map[h] - 1] != keys[i])
			h = (h + 1) & (cap - 1);
		if (map[h]) {
			size_t u = map[h] - 1;
			float *acc;
			if (gp[u] >= sums && gp[u] < sums + n * (size_t)dim) {
				acc = (float *)gp[u];
			} else {
				acc = sums + nsum++ * dim;
				memcpy(acc, gp[u], (size_t)dim * sizeof(float));
				gp[u] = acc;
			}
			for (uint32_t j = 0; j < dim; j++)
				acc[j] += gi[j];
		} else {
			map[h] = (uint32_t)(nu + 1);
			ukeys[nu] = keys[i];
			gp[nu] = gi;
			nu++;
		}
	}
	return (long)nu;
}

/* ---- the update --------------------------------------------------------------------- */

/* Per-thread scratch, grown on demand and freed when the thread exits. */
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static __thread struct {
	void *p;
	size_t cap;
} scr;

static void scratch_free(void *p) { free(p); }
static void scratch_init(void) { (void)pthread_key_create(&scratch_key, scratch_free); }

static void *scratch(size_t bytes)
{
	if (bytes <= scr.cap)
		return scr.p;
	(void)pthread_once(&scratch_once, scratch_init);
	void *p = malloc(bytes);
	if (!p)
		return NULL;
	free(scr.p);
	scr.p = p;
	scr.cap = bytes;
	(void)pthread_setspecific(scratch_key, p);
	return p;
}

int de_optim_update(de_table *t, const struct de_optim_config *cfg, const uint64_t *keys,
		    size_t n, const float *grads, uint64_t step, size_t *applied)
{
	if (applied)
		*applied = 0;
	if (!t || !cfg || (n && (!keys || !grads)))
		return -EINVAL;
	int err = de_optim_check(cfg, NULL, 0);
	if (err)
		return err;
	struct de_table_config tc;
	err = de_table_config_get(t, &tc);
	if (err)
		return err;
	if (tc.nslots < nslots[cfg->kind])
		return -EINVAL;
	if (!n)
		return 0;
	if (n > UINT32_MAX - 1)
		return -EINVAL; /* the map stores u32 indexes */

	uint32_t dim = tc.dim;
	size_t cap = 16;
	while (cap < 2 * n)
		cap <<= 1;
	/* one per-thread scratch block, kept between calls: a fresh malloc of a batch's
	 * gradients (1 MiB at batch 4096, dim 64) is an mmap and 256 page faults per call */
	size_t bytes = n * 8 + n * sizeof(float *) + n * (size_t)dim * 4 + (size_t)dim * 4 +
		       cap * 4 + 64;
	char *blk = scratch(bytes);
	if (!blk)
		return -ENOMEM;
	uint64_t *ukeys = (uint64_t *)blk;
	const float **gp = (const float **)(blk + n * 8);
	float *sums = (float *)(blk + n * 8 + n * sizeof(float *)); /* touched for duplicates only */
	float *tmp = sums + n * (size_t)dim;
	uint32_t *map = (uint32_t *)(tmp + dim);
	memset(map, 0, cap * 4);

	long nu = dedup(keys, n, grads, dim, map, cap, ukeys, gp, sums);
	if (nu < 0)
		return (int)nu;
	struct step_ctx c = {
		.cfg = cfg, .dim = dim, .gp = gp, .tmp = tmp,
		.lr = (float)cfg->lr, .neg_lr = (float)-cfg->lr, .wd = (float)cfg->weight_decay,
		.mom = (float)cfg->momentum, .one_m_damp = (float)(1.0 - cfg->dampening),
		.b1 = (float)cfg->beta1, .one_m_b1 = (float)(1.0 - cfg->beta1),
		.b2 = (float)cfg->beta2, .one_m_b2 = (float)(1.0 - cfg->beta2),
		.eps = (float)cfg->eps, .alpha = (float)cfg->alpha,
		.one_m_alpha = (float)(1.0 - cfg->alpha),
		.decay = (float)(1.0 - cfg->lr * cfg->weight_decay),
		.ln_b1 = cfg->beta1 > 0 ? log(cfg->beta1) : 0,
		.ln_b2 = cfg->beta2 > 0 ? log(cfg->beta2) : 0,
	};
	err = cfg->hogwild ? de_table_apply_hogwild(t, ukeys, (size_t)nu, step_row, &c, NULL, step)
			   : de_table_apply(t, ukeys, (size_t)nu, true, step_row, &c, NULL, step);
	if (applied)
		*applied = c.applied;
	return err;
}
