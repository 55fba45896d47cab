/*
 * validate_config.c — the pure checks and normalizations of table names and wire configs
 * (validate.h): srv_name_check, srv_wire_config_normalize (the table's own rules, from
 * libdeshm's de_table_config_check) and srv_learn_config_normalize (optimizer, admission,
 * eviction, durability: every rule is stated in proto.h); srv_config_differs, the text
 * of the -EEXIST a reopen with another config gets (enums by name, floats as written).
 *
 * Normalizing fills the "0 = default" fields and folds equal settings (-0.0 and 0.0) so
 * that two configs that mean the same compare equal field by field: the registry shares
 * a table by that comparison, and the persistence catalog reader refuses an entry that
 * is not already normalized. Callers: srv_check_msg (OPEN), the catalog reader, tests.
 * Never: keep state, log, or accept a field it does not know.
 */
#include "validate.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "de_shm.h"

/* the rule, as every message about a bad name states it (one %u: DE_NAME_MAX - 1) */
#define NAME_RULE "a table name is 1 to %u bytes, without control characters"

int srv_name_check(const char name[DE_NAME_MAX], char *msg, size_t msgcap)
{
	const char *end = memchr(name, 0, DE_NAME_MAX);
	if (!end) {
		snprintf(msg, msgcap, "table name is not NUL-terminated within %u bytes: " NAME_RULE,
			 DE_NAME_MAX, DE_NAME_MAX - 1);
		return -EINVAL;
	}
	if (end == name) {
		snprintf(msg, msgcap, "table name is empty: " NAME_RULE, DE_NAME_MAX - 1);
		return -EINVAL;
	}
	for (const char *p = name; p < end; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f) {
			snprintf(msg, msgcap, "table name has a control character at byte %zu: "
				 NAME_RULE, (size_t)(p - name), DE_NAME_MAX - 1);
			return -EINVAL;
		}
	return 0;
}

int srv_wire_config_normalize(struct de_wire_table_config *c, char *msg, size_t msgcap)
{
	for (unsigned i = 0; i < 6; i++)
		if (c->reserved[i]) {
			snprintf(msg, msgcap, "config reserved[%u] must be 0 (optimizer, admission, "
				 "eviction and durability are not supported yet)", i);
			return -EINVAL;
		}
	if (c->key_type != DE_KEYS_INT64 && c->key_type != DE_KEYS_STRING) {
		snprintf(msg, msgcap, "key_type %u is neither 0 (int64) nor 1 (string)", c->key_type);
		return -EINVAL;
	}
	/* the table's own rules, one copy of them (libdeshm) */
	struct de_table_config t = { .dim = c->dim, .nslots = c->nslots,
				     .init = (enum de_init)c->init, .init_a = c->init_a,
				     .init_b = c->init_b, .slot_init = c->slot_init,
				     .seed = c->seed, .seg_buckets = c->seg_buckets };
	int err = de_table_config_check(&t, &t, msg, msgcap);
	if (err)
		return err;
	c->seg_buckets = t.seg_buckets;
	c->init_a = t.init_a;
	c->init_b = t.init_b;
	return 0;
}

static const char *const optim_names[] = {
	"none", "sgd", "momentum", "nesterov", "adagrad", "adam", "adamw", "ftrl", "rmsprop",
};

const char *srv_optim_wire_name(uint32_t kind)
{
	return kind < sizeof optim_names / sizeof optim_names[0] ? optim_names[kind] : "?";
}

/* enum de_optimizer has the wire's numbers: a kind passes through as it is */
#define SAME(a, b) _Static_assert((int)(a) == (int)(b), #a " == " #b)
SAME(DE_OPT_NONE, DE_WOPT_NONE);
SAME(DE_OPT_SGD, DE_WOPT_SGD);
SAME(DE_OPT_MOMENTUM, DE_WOPT_MOMENTUM);
SAME(DE_OPT_NESTEROV, DE_WOPT_NESTEROV);
SAME(DE_OPT_ADAGRAD, DE_WOPT_ADAGRAD);
SAME(DE_OPT_ADAM, DE_WOPT_ADAM);
SAME(DE_OPT_ADAMW, DE_WOPT_ADAMW);
SAME(DE_OPT_FTRL, DE_WOPT_FTRL);
SAME(DE_OPT_RMSPROP, DE_WOPT_RMSPROP);
#undef SAME

void srv_optim_from_wire(const struct de_wire_optim *w, struct de_optim_config *o)
{
	*o = (struct de_optim_config){
		.kind = (enum de_optimizer)w->kind, .lr = w->lr,
		.weight_decay = w->weight_decay, .momentum = w->momentum,
		.dampening = w->dampening, .beta1 = w->beta1, .beta2 = w->beta2, .eps = w->eps,
		.initial_accumulator_value = w->initial_accumulator_value, .alpha = w->alpha,
		.centered = (int)w->centered, .l1 = w->l1, .l2 = w->l2, .lr_power = w->lr_power,
		.ftrl_beta = w->ftrl_beta,
	};
}

__attribute__((format(printf, 3, 4))) static int bad(char *msg, size_t cap, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, cap, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static int optim_normalize(struct de_wire_optim *o, struct de_wire_table_config *c, char *msg,
			   size_t cap)
{
	if (o->reserved[0] || o->reserved[1])
		return bad(msg, cap, "optimizer.reserved must be 0");
	if (o->kind == DE_WOPT_NONE) {
		if (!srv_all_zero(o, sizeof *o))
			return bad(msg, cap, "optimizer none: its hyperparameters must be 0");
		return 0;
	}
	if (o->kind > DE_WOPT_RMSPROP)
		return bad(msg, cap, "optimizer.kind %u is unknown (0 none .. 8 rmsprop)", o->kind);
	if (o->centered > 1)
		return bad(msg, cap, "optimizer.centered must be 0 or 1");
	struct de_optim_config oc;
	srv_optim_from_wire(o, &oc);
	char why[160];
	if (de_optim_check(&oc, why, sizeof why))
		return bad(msg, cap, "optimizer: %s", why);
	double *d[] = { &o->lr, &o->weight_decay, &o->momentum, &o->dampening, &o->beta1,
			&o->beta2, &o->eps, &o->initial_accumulator_value, &o->alpha, &o->l1,
			&o->l2, &o->lr_power, &o->ftrl_beta };
	for (size_t i = 0; i < sizeof d / sizeof d[0]; i++)
		if (*d[i] == 0)
			*d[i] = 0; /* -0.0 and 0.0 are the same setting: compare equal */
	uint32_t need = de_optim_slots(oc.kind);
	if (!c->nslots)
		c->nslots = need;
	else if (c->nslots < need)
		return bad(msg, cap, "optimizer %s needs %u slots; the table has nslots %u (0 = "
			   "derive from the optimizer)", srv_optim_wire_name(o->kind), need, c->nslots);
	return 0;
}

static int admission_normalize(struct de_wire_admission *a, char *msg, size_t cap)
{
	if (a->reserved)
		return bad(msg, cap, "admission.reserved must be 0");
	if (a->reject_value > DE_WREJECT_ZEROS)
		return bad(msg, cap, "admission.reject_value %u is neither 0 (init) nor 1 (zeros)",
			   a->reject_value);
	switch (a->mode) {
	case DE_WADMIT_ALL:
		if (!srv_all_zero(a, sizeof *a))
			return bad(msg, cap, "admission none: min_count, probability, sketch sizes "
				   "and reject_value must be 0");
		return 0;
	case DE_WADMIT_COUNT:
		if (a->min_count < 1)
			return bad(msg, cap, "admission count: min_count must be >= 1");
		if (a->probability != 0 || signbit(a->probability))
			return bad(msg, cap, "admission count: probability must be 0");
		if (!a->sketch_width)
			a->sketch_width = DE_SKETCH_WIDTH_DEFAULT;
		if (!a->sketch_depth)
			a->sketch_depth = DE_SKETCH_DEPTH_DEFAULT;
		if (a->sketch_width < DE_SKETCH_WIDTH_MIN || a->sketch_width > DE_SKETCH_WIDTH_MAX ||
		    (a->sketch_width & (a->sketch_width - 1)))
			return bad(msg, cap, "admission: sketch_width %u must be a power of two in "
				   "[%u, %u] (0 = %u)", a->sketch_width, DE_SKETCH_WIDTH_MIN,
				   DE_SKETCH_WIDTH_MAX, DE_SKETCH_WIDTH_DEFAULT);
		if (a->sketch_depth > DE_SKETCH_DEPTH_MAX)
			return bad(msg, cap, "admission: sketch_depth %u must be in 1..%u (0 = %u)",
				   a->sketch_depth, DE_SKETCH_DEPTH_MAX, DE_SKETCH_DEPTH_DEFAULT);
		return 0;
	case DE_WADMIT_PROBABILITY:
		if (!(a->probability > 0 && a->probability <= 1))
			return bad(msg, cap, "admission probability: p must be in (0, 1]");
		if (a->min_count || a->sketch_width || a->sketch_depth)
			return bad(msg, cap, "admission probability: min_count and sketch sizes "
				   "must be 0");
		return 0;
	default:
		return bad(msg, cap, "admission.mode %u is unknown (0 none, 1 count, 2 probability)",
			   a->mode);
	}
}

static int eviction_normalize(struct de_wire_eviction *e, char *msg, size_t cap)
{
	if (e->reserved)
		return bad(msg, cap, "eviction.reserved must be 0");
	if (e->policy == DE_WEVICT_NONE) {
		if (!srv_all_zero(e, sizeof *e))
			return bad(msg, cap, "eviction none: budget, ttl, clocks, lfu_decay and "
				   "disk_tier must be 0");
		return 0;
	}
	if (e->policy > DE_WEVICT_L2)
		return bad(msg, cap, "eviction.policy %u is unknown (0 none, 1 lru, 2 lfu, 3 ttl, "
			   "4 l2)", e->policy);
	if (e->flags & ~DE_WEVICT_DISK_TIER)
		return bad(msg, cap, "eviction.flags 0x%x: only 0x1 (disk_tier) is defined", e->flags);
	if (e->ttl_unit > DE_WUNIT_SECONDS || e->lru_clock > DE_WUNIT_SECONDS)
		return bad(msg, cap, "eviction: ttl_unit and lru_clock are 0 (steps) or 1 (seconds)");
	if (e->policy != DE_WEVICT_TTL && (e->ttl || e->ttl_unit))
		return bad(msg, cap, "eviction: ttl and ttl_unit are for policy ttl only");
	if (e->policy != DE_WEVICT_LRU && e->lru_clock)
		return bad(msg, cap, "eviction: lru_clock is for policy lru only");
	if (e->policy != DE_WEVICT_LFU && (e->lfu_decay != 0 || signbit(e->lfu_decay)))
		return bad(msg, cap, "eviction: lfu_decay is for policy lfu only");
	if (e->policy == DE_WEVICT_LFU && !(isfinite(e->lfu_decay) && e->lfu_decay >= 0))
		return bad(msg, cap, "eviction lfu: lfu_decay must be finite and >= 0");
	if (signbit(e->lfu_decay))
		e->lfu_decay = 0; /* -0.0 and 0.0 are the same setting */
	if (e->policy == DE_WEVICT_TTL) {
		if (!e->ttl)
			return bad(msg, cap, "eviction ttl: ttl must be > 0");
	} else if (!e->budget_bytes) {
		return bad(msg, cap, "eviction: policy %s needs budget_bytes > 0",
			   e->policy == DE_WEVICT_LRU ? "lru" : e->policy == DE_WEVICT_LFU ? "lfu" : "l2");
	}
	return 0;
}

static int durability_normalize(struct de_wire_durability *d, char *msg, size_t cap)
{
	if (d->reserved)
		return bad(msg, cap, "durability.reserved must be 0");
	switch (d->mode) {
	case DE_WDURABLE_NONE:
	case DE_WDURABLE_SYNC:
		if (d->window_ms)
			return bad(msg, cap, "durability: window_ms is for mode async only");
		return 0;
	case DE_WDURABLE_ASYNC:
		if (!d->window_ms)
			d->window_ms = DE_WINDOW_MS_DEFAULT;
		if (d->window_ms > DE_WINDOW_MS_MAX)
			return bad(msg, cap, "durability async: window_ms %u must be in 1..%u",
				   d->window_ms, DE_WINDOW_MS_MAX);
		return 0;
	default:
		return bad(msg, cap, "durability.mode %u is unknown (0 none, 1 async, 2 sync)",
			   d->mode);
	}
}

int srv_learn_config_normalize(struct de_wire_learn_config *l, struct de_wire_table_config *c,
			       char *msg, size_t msgcap)
{
	for (unsigned i = 0; i < 4; i++)
		if (l->reserved[i])
			return bad(msg, msgcap, "learn config reserved[%u] must be 0", i);
	int err = optim_normalize(&l->optim, c, msg, msgcap);
	if (!err)
		err = admission_normalize(&l->admission, msg, msgcap);
	if (!err)
		err = eviction_normalize(&l->eviction, msg, msgcap);
	if (!err)
		err = durability_normalize(&l->durability, msg, msgcap);
	return err;
}

/* ---- the -EEXIST message ----------------------------------------------------------------- */

/* x as written: the shortest %g that reads back to the same value (as a float when
 * is_float, else as a double). */
static const char *shortest(char *buf, size_t cap, double x, bool is_float)
{
	for (int p = 1; p <= 17; p++) {
		snprintf(buf, cap, "%.*g", p, x);
		if (is_float ? strtof(buf, NULL) == (float)x : strtod(buf, NULL) == x)
			return buf;
	}
	snprintf(buf, cap, "%.17g", x); /* NaN never compares equal; not expected here */
	return buf;
}

static const char *name_of(const char *const *names, size_t n, uint32_t v, char *buf, size_t cap)
{
	if (v < n && names[v])
		return names[v];
	snprintf(buf, cap, "%u", v);
	return buf;
}

/* the names dynemb.h and the Python package use, lower case */
static const char *const key_names[] = { "int64", "string" };
static const char *const init_names[] = { "zeros", "constant", "uniform", "trunc_normal" };
static const char *const admit_names[] = { "all", "count", "probability" };
static const char *const reject_names[] = { "init", "zeros" };
static const char *const evict_names[] = { "none", "lru", "lfu", "ttl", "l2" };
static const char *const unit_names[] = { "steps", "seconds" };
static const char *const durable_names[] = { "none", "async", "sync" };
static const char *const flag_names[] = { "none", "disk_tier" };

bool srv_config_differs(const struct de_wire_table_config *a, const struct de_wire_table_config *b,
			const struct de_wire_learn_config *la, const struct de_wire_learn_config *lb,
			char *out, size_t cap)
{
	char x[40], y[40];
#define NAMES(v) (sizeof(v) / sizeof(v)[0])
#define U(f) if (a->f != b->f) { snprintf(out, cap, #f " %llu, not %llu", \
	(unsigned long long)a->f, (unsigned long long)b->f); return true; }
#define E(f, names) if (a->f != b->f) { snprintf(out, cap, #f " %s, not %s", \
	name_of(names, NAMES(names), a->f, x, sizeof x), \
	name_of(names, NAMES(names), b->f, y, sizeof y)); return true; }
#define F(f) if (memcmp(&a->f, &b->f, sizeof a->f)) { snprintf(out, cap, #f " %s, not %s", \
	shortest(x, sizeof x, a->f, true), shortest(y, sizeof y, b->f, true)); return true; }
	E(key_type, key_names) U(dim)
	/* the optimizer before nslots: nslots 0 means "what the optimizer needs", so
	 * another optimizer shows first as another nslots */
	if (la->optim.kind != lb->optim.kind) {
		snprintf(out, cap, "optimizer.kind %s, not %s", srv_optim_wire_name(la->optim.kind),
			 srv_optim_wire_name(lb->optim.kind));
		return true;
	}
	U(nslots) E(init, init_names) F(init_a) F(init_b) F(slot_init)
	/* the table's seed is not echoed: it is another client's value */
	if (a->seed != b->seed) {
		snprintf(out, cap, "seed %llu, not the table's seed", (unsigned long long)a->seed);
		return true;
	}
	U(seg_buckets)
#undef U
#undef E
#undef F
#define U(s, f) if (la->s.f != lb->s.f) { snprintf(out, cap, #s "." #f " %llu, not %llu", \
	(unsigned long long)la->s.f, (unsigned long long)lb->s.f); return true; }
#define E(s, f, names) if (la->s.f != lb->s.f) { snprintf(out, cap, #s "." #f " %s, not %s", \
	name_of(names, NAMES(names), la->s.f, x, sizeof x), \
	name_of(names, NAMES(names), lb->s.f, y, sizeof y)); return true; }
#define F(s, f) if (memcmp(&la->s.f, &lb->s.f, sizeof la->s.f)) { snprintf(out, cap, \
	#s "." #f " %s, not %s", shortest(x, sizeof x, la->s.f, false), \
	shortest(y, sizeof y, lb->s.f, false)); return true; }
#define OF(f) if (memcmp(&la->optim.f, &lb->optim.f, sizeof la->optim.f)) { \
	snprintf(out, cap, "optimizer." #f " %s, not %s", \
		 shortest(x, sizeof x, (double)la->optim.f, false), \
		 shortest(y, sizeof y, (double)lb->optim.f, false)); return true; }
	OF(lr) OF(weight_decay) OF(momentum) OF(dampening) OF(beta1) OF(beta2) OF(eps)
	OF(initial_accumulator_value) OF(alpha) OF(centered) OF(l1) OF(l2) OF(lr_power)
	OF(ftrl_beta)
#undef OF
	E(admission, mode, admit_names) U(admission, min_count) F(admission, probability)
	U(admission, sketch_width) U(admission, sketch_depth)
	E(admission, reject_value, reject_names)
	E(eviction, policy, evict_names) E(eviction, flags, flag_names)
	U(eviction, budget_bytes) U(eviction, ttl) E(eviction, ttl_unit, unit_names)
	E(eviction, lru_clock, unit_names) F(eviction, lfu_decay)
	E(durability, mode, durable_names) U(durability, window_ms)
#undef U
#undef E
#undef F
#undef NAMES
	return false;
}
