/*
 * tables.c — dynembd's table registry and string-key store.
 *
 * Registry: tables by name, each in its own arena (pages and NUMA node from [pages]).
 * The same name with the same (normalized) config is the same table, shared by every
 * client that opens it; another config is -EEXIST. Only the control thread opens tables;
 * tables are never closed before the daemon exits, so workers may hold pointers freely.
 *
 * Learning config: srv_learn_config_normalize checks the OPEN's de_wire_learn_config
 * (every rule is stated in proto.h) and fills its defaults, so that two configs that
 * mean the same compare equal field by field; config_differs names the first field that
 * differs (-EEXIST). The registry keeps the normalized block in struct srv_table.learn
 * for the admission, eviction and durability code to read, and the optimizer as a
 * struct de_optim_config for the workers' APPLY_GRADS.
 *
 * String keys: a string table maps each string to de_key_from_string(seed, s) and keeps
 * the string, for top-k, sampling and export to give it back:
 *   - the bytes go into the TABLE's arena (so a read-only client mapping sees them too),
 *     as   u32 len, then len bytes   at an offset from de_arena_alloc (4-aligned);
 *   - an index table `names` (dim 2, its own small arena) maps key -> that offset, the
 *     u64 bit-copied into the two floats. A row of zeros (offset 0, never a valid
 *     allocation: the arena header lives there) means "being stored".
 * The first de_table_find_or_insert on `names` that CREATES the key owns the store; any
 * other thread sees FOUND and does nothing. Strings are never freed (erasing a key keeps
 * its string for when it comes back; arena memory is never returned anyway).
 */
#include "server.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void srv_registry_init(struct srv_registry *r, enum de_pages pages, int numa_node,
		       uint64_t segment_bytes, uint64_t reserve_bytes)
{
	*r = (struct srv_registry){ .pages = pages, .numa_node = numa_node,
				    .segment_bytes = segment_bytes, .reserve_bytes = reserve_bytes };
}

static void table_free(struct srv_table *t)
{
	srv_learn_table_free(t); /* samplers first: they read the table */
	de_table_close(t->names);
	de_arena_destroy(t->names_arena);
	de_table_close(t->t);
	de_arena_destroy(t->arena);
	free(t);
}

void srv_registry_destroy(struct srv_registry *r)
{
	for (struct srv_table *t = r->head, *n; t; t = n) {
		n = t->next;
		table_free(t);
	}
	r->head = NULL;
	r->count = 0;
}

int srv_name_check(const char name[DE_NAME_MAX], char *msg, size_t msgcap)
{
	const char *end = memchr(name, 0, DE_NAME_MAX);
	if (!end) {
		snprintf(msg, msgcap, "table name is not NUL-terminated within %u bytes", DE_NAME_MAX);
		return -EINVAL;
	}
	if (end == name) {
		snprintf(msg, msgcap, "table name is empty");
		return -EINVAL;
	}
	for (const char *p = name; p < end; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f) {
			snprintf(msg, msgcap, "table name has a control character at byte %zu",
				 (size_t)(p - name));
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

static bool all_zero(const void *p, size_t n)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < n; i++)
		if (b[i])
			return false;
	return true;
}

static int optim_normalize(struct de_wire_optim *o, struct de_wire_table_config *c, char *msg,
			   size_t cap)
{
	if (o->reserved[0] || o->reserved[1])
		return bad(msg, cap, "optimizer.reserved must be 0");
	if (o->kind == DE_WOPT_NONE) {
		if (!all_zero(o, sizeof *o))
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
			   "derive from the optimizer)", optim_names[o->kind], need, c->nslots);
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
		if (!all_zero(a, sizeof *a))
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
		if (!all_zero(e, sizeof *e))
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

/* Name the first field where two normalized configs differ, or return false. */
static bool config_differs(const struct de_wire_table_config *a, const struct de_wire_table_config *b,
			   const struct de_wire_learn_config *la, const struct de_wire_learn_config *lb,
			   char *out, size_t cap)
{
#define U(f) if (a->f != b->f) { snprintf(out, cap, #f " %llu, not %llu", \
	(unsigned long long)a->f, (unsigned long long)b->f); return true; }
#define F(f) if (memcmp(&a->f, &b->f, sizeof a->f)) { snprintf(out, cap, #f " %g, not %g", \
	(double)a->f, (double)b->f); return true; }
	U(dim) U(key_type) U(nslots) U(init) F(init_a) F(init_b) F(slot_init) U(seed) U(seg_buckets)
#undef U
#undef F
#define U(s, f) if (la->s.f != lb->s.f) { snprintf(out, cap, #s "." #f " %llu, not %llu", \
	(unsigned long long)la->s.f, (unsigned long long)lb->s.f); return true; }
#define F(s, f) if (memcmp(&la->s.f, &lb->s.f, sizeof la->s.f)) { snprintf(out, cap, \
	#s "." #f " %.17g, not %.17g", (double)la->s.f, (double)lb->s.f); return true; }
	if (la->optim.kind != lb->optim.kind) {
		snprintf(out, cap, "optimizer.kind %s, not %s", optim_names[la->optim.kind],
			 optim_names[lb->optim.kind]);
		return true;
	}
#define OF(f) if (memcmp(&la->optim.f, &lb->optim.f, sizeof la->optim.f)) { snprintf(out, cap, \
	"optimizer." #f " %.17g, not %.17g", (double)la->optim.f, (double)lb->optim.f); return true; }
	OF(lr) OF(weight_decay) OF(momentum) OF(dampening) OF(beta1) OF(beta2) OF(eps)
	OF(initial_accumulator_value) OF(alpha) OF(centered) OF(l1) OF(l2) OF(lr_power)
	OF(ftrl_beta)
#undef OF
	U(admission, mode) U(admission, min_count) F(admission, probability)
	U(admission, sketch_width) U(admission, sketch_depth) U(admission, reject_value)
	U(eviction, policy) U(eviction, flags) U(eviction, budget_bytes) U(eviction, ttl)
	U(eviction, ttl_unit) U(eviction, lru_clock) F(eviction, lfu_decay)
	U(durability, mode) U(durability, window_ms)
#undef U
#undef F
	return false;
}

static int make_arena(const struct srv_registry *r, const char *memfd_name, uint64_t seg,
		      uint64_t reserve, de_arena **out)
{
	struct de_arena_config ac = { .reserve_bytes = reserve, .segment_bytes = seg,
				      .pages = r->pages, .numa_node = r->numa_node,
				      .name = memfd_name };
	int err = de_arena_create(&ac, out);
	if (err && r->numa_node >= 0) {
		srv_log(SRV_LOG_WARN, "arena '%s' on NUMA node %d failed (%s); trying unbound",
			memfd_name, r->numa_node, strerror(-err));
		ac.numa_node = DE_NUMA_NONE;
		err = de_arena_create(&ac, out);
	}
	return err;
}

static int table_create(struct srv_registry *r, const char *name,
			const struct de_wire_table_config *w,
			const struct de_wire_learn_config *learn, struct srv_table **out, char *msg,
			size_t msgcap)
{
	struct srv_table *t = calloc(1, sizeof *t);
	if (!t)
		return -ENOMEM;
	snprintf(t->name, sizeof t->name, "%s", name);
	t->wcfg = *w;
	t->learn = *learn;
	t->has_optim = learn->optim.kind != DE_WOPT_NONE;
	if (t->has_optim)
		srv_optim_from_wire(&learn->optim, &t->optim);
	char mname[96];
	snprintf(mname, sizeof mname, "dynemb:%s", name);
	int err = make_arena(r, mname, r->segment_bytes, r->reserve_bytes, &t->arena);
	if (err) {
		snprintf(msg, msgcap, "cannot create the arena of table '%s': %s", name, strerror(-err));
		goto fail;
	}
	struct de_table_config tc = { .dim = w->dim, .nslots = w->nslots, .init = (enum de_init)w->init,
				      .init_a = w->init_a, .init_b = w->init_b,
				      .slot_init = w->slot_init, .seed = w->seed,
				      .seg_buckets = w->seg_buckets };
	err = de_table_open(t->arena, &tc, &t->t);
	if (err) {
		snprintf(msg, msgcap, "cannot open table '%s': %s", name, strerror(-err));
		goto fail;
	}
	if (w->key_type == DE_KEYS_STRING) {
		snprintf(mname, sizeof mname, "dynemb:%s:names", name);
		err = make_arena(r, mname, DE_ARENA_ALIGN, 4ull << 30, &t->names_arena);
		if (err) {
			snprintf(msg, msgcap, "cannot create the string index of '%s': %s", name,
				 strerror(-err));
			goto fail;
		}
		struct de_table_config nc = { .dim = 2, .seed = w->seed };
		err = de_table_open(t->names_arena, &nc, &t->names);
		if (err) {
			snprintf(msg, msgcap, "cannot open the string index of '%s': %s", name,
				 strerror(-err));
			goto fail;
		}
	}
	/* last: once the evictor holds the table nothing may fail */
	err = srv_learn_table_attach(r->learn, t, msg, msgcap);
	if (err)
		goto fail;
	*out = t;
	return 0;
fail:
	table_free(t);
	return err;
}

int srv_registry_open(struct srv_registry *r, const char *name,
		      const struct de_wire_table_config *cfg,
		      const struct de_wire_learn_config *learn, struct srv_table **out,
		      bool *created, char *msg, size_t msgcap)
{
	*created = false;
	for (struct srv_table *t = r->head; t; t = t->next) {
		if (strcmp(t->name, name))
			continue;
		char d[160];
		if (config_differs(cfg, &t->wcfg, learn, &t->learn, d, sizeof d)) {
			snprintf(msg, msgcap, "table '%s' exists with another config: asked %s", name, d);
			return -EEXIST;
		}
		*out = t;
		return 0;
	}
	struct srv_table *t;
	int err = table_create(r, name, cfg, learn, &t, msg, msgcap);
	if (err)
		return err;
	t->next = r->head;
	r->head = t;
	r->count++;
	*created = true;
	*out = t;
	return 0;
}

/* ---- string keys --------------------------------------------------------------------- */

int srv_table_keep_string(struct srv_table *t, uint64_t key, const void *s, uint32_t len)
{
	if (!t->names)
		return -EINVAL;
	if (!key || len > DE_MAX_KEY_BYTES)
		return key ? -EINVAL : 0; /* the empty string is key 0: nothing to keep */
	float row[2];
	uint8_t st;
	int err = de_table_find_or_insert(t->names, &key, 1, row, &st, 0);
	if (err)
		return err;
	if (st != DE_CREATED)
		return 0; /* someone else stores (or stored) it */
	uint64_t off;
	err = de_arena_alloc(t->arena, 4ull + len, 4, &off);
	if (err) {
		size_t n;
		de_table_erase(t->names, &key, 1, &n); /* let a later creation try again */
		return err;
	}
	char *p = de_arena_at(t->arena, off);
	memcpy(p, &len, 4);
	memcpy(p + 4, s, len);
	memcpy(row, &off, sizeof off); /* the offset bit-copied into the two floats */
	/* assign publishes the row under the table's row protection; a reader that finds
	 * the key sees either zeros (being stored) or the complete offset */
	return de_table_assign(t->names, &key, 1, row, NULL, 0);
}

int srv_table_key_string(struct srv_table *t, uint64_t key, void *buf, size_t cap, uint32_t *len)
{
	if (!t->names)
		return -EINVAL;
	if (!key) {
		*len = 0;
		return 0;
	}
	float row[2];
	uint8_t st;
	int err = de_table_find(t->names, &key, 1, row, &st);
	if (err)
		return err;
	uint64_t off;
	memcpy(&off, row, sizeof off);
	if (st != DE_FOUND || !off)
		return -ENOENT;
	if (!de_arena_valid(t->arena, off, 4))
		return -EBADMSG;
	const char *p = de_arena_at(t->arena, off);
	uint32_t n;
	memcpy(&n, p, 4);
	if (n > DE_MAX_KEY_BYTES || !de_arena_valid(t->arena, off + 4, n))
		return -EBADMSG;
	*len = n;
	if (n > cap)
		return -ENOSPC;
	memcpy(buf, p + 4, n);
	return 0;
}
