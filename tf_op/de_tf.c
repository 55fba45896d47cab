/*
 * de_tf.c — config parsing, the connection pool and the table cache behind the
 * TensorFlow kernels (contract: de_tf.h). No TensorFlow type appears here.
 *
 * Pools. One pool per (address, timeout_ms), in a global list under one mutex (`g`).
 * A pool owns its connections; each is idle (on the pool's idle stack) or taken by one
 * Compute, or taken and held behind a wrapped output tensor. Connections are created
 * outside the mutex (dynemb_connect may block) and counted in `open` first, so a burst of
 * Computes never opens more than it needs. The pools live until de_tf_close_idle
 * closes what is idle; a connection released after that closes or returns to its
 * (still existing) pool: pools are never freed while a connection points at them, and
 * we keep them for the process lifetime (TensorFlow never unloads op libraries).
 *
 * Never: call into libdynemb under `g`, or use a connection that another thread took.
 */
#include "de_tf.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- messages ------------------------------------------------------------------------ */

__attribute__((format(printf, 3, 4))) static int fail(char *err, size_t errlen, const char *fmt,
						       ...)
{
	if (err && errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

/* ---- config text ------------------------------------------------------------------- */

struct name_val {
	const char *name;
	int val;
};

static const struct name_val inits[] = { { "zeros", DYNEMB_ZEROS }, { "constant", DYNEMB_CONSTANT },
					 { "uniform", DYNEMB_UNIFORM },
					 { "trunc_normal", DYNEMB_TRUNC_NORMAL }, { 0, 0 } };
static const struct name_val key_kinds[] = { { "int64", DYNEMB_INT64_KEYS },
					     { "string", DYNEMB_STRING_KEYS }, { 0, 0 } };
static const struct name_val optims[] = {
	{ "none", DYNEMB_OPTIM_NONE }, { "sgd", DYNEMB_OPTIM_SGD }, { "momentum", DYNEMB_OPTIM_MOMENTUM },
	{ "nesterov", DYNEMB_OPTIM_NESTEROV }, { "adagrad", DYNEMB_OPTIM_ADAGRAD }, { "adam", DYNEMB_OPTIM_ADAM },
	{ "adamw", DYNEMB_OPTIM_ADAMW }, { "ftrl", DYNEMB_OPTIM_FTRL }, { "rmsprop", DYNEMB_OPTIM_RMSPROP },
	{ 0, 0 }
};
static const struct name_val admissions[] = { { "none", DYNEMB_ADMISSION_NONE },
					      { "count", DYNEMB_ADMISSION_COUNT },
					      { "probability", DYNEMB_ADMISSION_PROBABILITY }, { 0, 0 } };
static const struct name_val rejects[] = { { "init", DYNEMB_REJECTED_READ_INIT },
					   { "zeros", DYNEMB_REJECTED_READ_ZEROS }, { 0, 0 } };
static const struct name_val evictions[] = { { "none", DYNEMB_EVICTION_NONE }, { "lru", DYNEMB_EVICTION_LRU },
					     { "lfu", DYNEMB_EVICTION_LFU }, { "ttl", DYNEMB_EVICTION_TTL },
					     { "l2", DYNEMB_EVICTION_L2 }, { 0, 0 } };
static const struct name_val units[] = { { "steps", DYNEMB_TIME_STEPS }, { "seconds", DYNEMB_TIME_SECONDS },
					 { 0, 0 } };
static const struct name_val durabilities[] = { { "none", DYNEMB_DURABLE_NONE },
						{ "async", DYNEMB_DURABLE_ASYNC },
						{ "sync", DYNEMB_DURABLE_SYNC }, { 0, 0 } };

enum kind { K_U32, K_U64, K_F32, K_F64, K_BOOL, K_ENUM };

#define F(name, kind, field, names) { name, kind, offsetof(struct dynemb_table_spec, field), names }
static const struct field {
	const char *name;
	enum kind kind;
	size_t off;
	const struct name_val *names;
} fields[] = {
	F("dim", K_U32, dim, NULL),
	F("nslots", K_U32, nslots, NULL),
	F("init", K_ENUM, init, inits),
	F("init_a", K_F32, init_a, NULL),
	F("init_b", K_F32, init_b, NULL),
	F("slot_init", K_F32, slot_init, NULL),
	F("seed", K_U64, seed, NULL),
	F("keys", K_ENUM, keys, key_kinds),
	F("optimizer", K_ENUM, optim.kind, optims),
	F("lr", K_F64, optim.lr, NULL),
	F("weight_decay", K_F64, optim.weight_decay, NULL),
	F("momentum", K_F64, optim.momentum, NULL),
	F("dampening", K_F64, optim.dampening, NULL),
	F("beta1", K_F64, optim.beta1, NULL),
	F("beta2", K_F64, optim.beta2, NULL),
	F("eps", K_F64, optim.eps, NULL),
	F("initial_accumulator_value", K_F64, optim.initial_accumulator_value, NULL),
	F("alpha", K_F64, optim.alpha, NULL),
	F("l1", K_F64, optim.l1, NULL),
	F("l2", K_F64, optim.l2, NULL),
	F("lr_power", K_F64, optim.lr_power, NULL),
	F("ftrl_beta", K_F64, optim.ftrl_beta, NULL),
	F("admission", K_ENUM, admission.mode, admissions),
	F("admission_min_count", K_U32, admission.min_count, NULL),
	F("admission_probability", K_F64, admission.probability, NULL),
	F("admission_sketch_width", K_U32, admission.sketch_width, NULL),
	F("admission_sketch_depth", K_U32, admission.sketch_depth, NULL),
	F("admission_reject", K_ENUM, admission.reject_value, rejects),
	F("eviction", K_ENUM, eviction.policy, evictions),
	F("eviction_budget_bytes", K_U64, eviction.budget_bytes, NULL),
	F("eviction_ttl", K_U64, eviction.ttl, NULL),
	F("eviction_ttl_unit", K_ENUM, eviction.ttl_unit, units),
	F("eviction_lru_clock", K_ENUM, eviction.lru_clock, units),
	F("eviction_lfu_decay", K_F64, eviction.lfu_decay, NULL),
	F("eviction_disk_tier", K_BOOL, eviction.disk_tier, NULL),
	F("durability", K_ENUM, durability.mode, durabilities),
	F("durability_window_ms", K_U32, durability.window_ms, NULL),
};
#undef F
#define NFIELDS (sizeof fields / sizeof fields[0])
#define OPTIM_FIELD 8   /* fields[8] is "optimizer"; 9..21 its hyperparameters */
#define HP_FIRST 9
#define HP_LAST 21

static char *trim(char *s)
{
	while (*s == ' ' || *s == '\t' || *s == '\n')
		s++;
	size_t n = strlen(s);
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n'))
		s[--n] = '\0';
	return s;
}

/* Store the text value v into field f of spec. */
static int set_field(struct dynemb_table_spec *spec, const struct field *f, const char *v, char *err,
		     size_t errlen)
{
	char *p = (char *)spec + f->off;
	char *end = NULL;
	if (!*v)
		return fail(err, errlen, "config: '%s' has an empty value", f->name);
	errno = 0;
	switch (f->kind) {
	case K_U32:
	case K_U64: {
		if (*v == '-' || *v == '+')
			return fail(err, errlen, "config: '%s' must be a non-negative integer, not '%s'",
				    f->name, v);
		unsigned long long x = strtoull(v, &end, 10);
		if (errno || *end || (f->kind == K_U32 && x > UINT32_MAX))
			return fail(err, errlen, "config: '%s' must be an integer in [0, %s], not '%s'",
				    f->name, f->kind == K_U32 ? "2^32-1" : "2^64-1", v);
		if (f->kind == K_U32)
			*(uint32_t *)(void *)p = (uint32_t)x;
		else
			*(uint64_t *)(void *)p = x;
		return 0;
	}
	case K_F32:
	case K_F64: {
		double x = strtod(v, &end);
		if (errno || *end || !isfinite(x) || (f->kind == K_F32 && fabs(x) > 3.4e38))
			return fail(err, errlen, "config: '%s' must be a finite number, not '%s'", f->name,
				    v);
		if (f->kind == K_F32)
			*(float *)(void *)p = (float)x;
		else
			*(double *)(void *)p = x;
		return 0;
	}
	case K_BOOL:
		if (strcmp(v, "0") && strcmp(v, "1"))
			return fail(err, errlen, "config: '%s' must be 0 or 1, not '%s'", f->name, v);
		*(bool *)(void *)p = v[0] == '1';
		return 0;
	case K_ENUM:
		for (const struct name_val *nv = f->names; nv->name; nv++)
			if (!strcmp(nv->name, v)) {
				*(int *)(void *)p = nv->val; /* every enum of dynemb_table_spec is an int */
				return 0;
			}
		{
			char list[256] = "";
			for (const struct name_val *nv = f->names; nv->name; nv++)
				snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s",
					 nv == f->names ? "" : ", ", nv->name);
			return fail(err, errlen, "config: '%s' must be one of %s, not '%s'", f->name,
				    list, v);
		}
	}
	return fail(err, errlen, "config: internal error");
}

int de_tf_parse_config(const char *text, const char *var_name, struct dynemb_table_spec *spec,
		       char *err, size_t errlen)
{
	_Static_assert(sizeof(enum dynemb_optim_kind) == sizeof(int) &&
			       sizeof(enum dynemb_initializer) == sizeof(int),
		       "enums are stored as int");
	if (!text || !var_name || !spec)
		return fail(err, errlen, "config: NULL argument");
	size_t nl = strlen(var_name);
	if (nl == 0 || nl > 63)
		return fail(err, errlen, "var_name must be 1..63 bytes, not %zu", nl);
	size_t tl = strlen(text);
	if (tl > 8192)
		return fail(err, errlen, "config: text of %zu bytes is too long", tl);
	char *buf = strdup(text);
	if (!buf)
		return -ENOMEM;

	/* Split into key=value items first; the optimizer (which sets the defaults of the
	 * hyperparameters) is applied before every other field. */
	const char *vals[NFIELDS] = { 0 };
	int rc = 0;
	char *save = NULL;
	for (char *item = strtok_r(buf, ";", &save); item; item = strtok_r(NULL, ";", &save)) {
		item = trim(item);
		if (!*item)
			continue;
		char *eq = strchr(item, '=');
		if (!eq) {
			rc = fail(err, errlen, "config: '%s' is not key=value", item);
			goto out;
		}
		*eq = '\0';
		char *k = trim(item), *v = trim(eq + 1);
		size_t i = 0;
		while (i < NFIELDS && strcmp(fields[i].name, k))
			i++;
		if (i == NFIELDS) {
			rc = fail(err, errlen, "config: unknown key '%s'", k);
			goto out;
		}
		if (vals[i]) {
			rc = fail(err, errlen, "config: '%s' given twice", k);
			goto out;
		}
		vals[i] = v;
	}
	if (!vals[0]) {
		rc = fail(err, errlen, "config: 'dim' is required");
		goto out;
	}
	memset(spec, 0, sizeof *spec);
	if (vals[OPTIM_FIELD]) {
		rc = set_field(spec, &fields[OPTIM_FIELD], vals[OPTIM_FIELD], err, errlen);
		if (rc)
			goto out;
	}
	dynemb_optim_spec_defaults(spec->optim.kind, &spec->optim);
	for (size_t i = 0; i < NFIELDS; i++) {
		if (!vals[i] || i == OPTIM_FIELD)
			continue;
		if (i >= HP_FIRST && i <= HP_LAST && spec->optim.kind == DYNEMB_OPTIM_NONE) {
			rc = fail(err, errlen, "config: hyperparameter '%s' needs an optimizer",
				  fields[i].name);
			goto out;
		}
		rc = set_field(spec, &fields[i], vals[i], err, errlen);
		if (rc)
			goto out;
	}
	spec->name = var_name;
out:
	free(buf);
	return rc;
}

/* ---- the connection pool ------------------------------------------------------------- */

struct tcache {
	char *var_name, *config;
	int table;
};

struct pool;
struct de_tf_conn {
	struct pool *pool;
	dynemb_client *c;
	struct tcache *tables;
	size_t ntables, captables;
	bool held;
	struct de_tf_conn *next_idle;
};

struct pool {
	char *address;
	int timeout_ms;
	unsigned open, held;
	struct de_tf_conn *idle;
	struct pool *next;
};

static pthread_mutex_t g = PTHREAD_MUTEX_INITIALIZER;
static struct pool *pools;

static struct pool *find_pool(const char *address, int timeout_ms) /* under g */
{
	for (struct pool *p = pools; p; p = p->next)
		if (p->timeout_ms == timeout_ms && !strcmp(p->address, address))
			return p;
	return NULL;
}

static void conn_free(de_tf_conn *conn)
{
	dynemb_close(conn->c);
	for (size_t i = 0; i < conn->ntables; i++) {
		free(conn->tables[i].var_name);
		free(conn->tables[i].config);
	}
	free(conn->tables);
	free(conn);
}

int de_tf_acquire(const char *address, int timeout_ms, de_tf_conn **out, char *err,
		  size_t errlen)
{
	if (!address || !out)
		return fail(err, errlen, "service_address: NULL");
	if (timeout_ms < 0)
		timeout_ms = 0;
	pthread_mutex_lock(&g);
	struct pool *p = find_pool(address, timeout_ms);
	if (!p) {
		p = calloc(1, sizeof *p);
		if (!p || !(p->address = strdup(address))) {
			free(p);
			pthread_mutex_unlock(&g);
			return -ENOMEM;
		}
		p->timeout_ms = timeout_ms;
		p->next = pools;
		pools = p;
	}
	de_tf_conn *conn = p->idle;
	if (conn) {
		p->idle = conn->next_idle;
		conn->next_idle = NULL;
		pthread_mutex_unlock(&g);
		*out = conn;
		return 0;
	}
	p->open++;
	pthread_mutex_unlock(&g);

	int rc = -ENOMEM;
	conn = calloc(1, sizeof *conn);
	if (conn) {
		struct dynemb_connect_opts o = { .name = "dynemb.tensorflow", .timeout_ms = timeout_ms };
		rc = dynemb_connect(*address ? address : NULL, &o, &conn->c);
		if (rc) {
			snprintf(err, errlen, "cannot connect to dynembd at '%s': %s",
				 *address ? address : "/run/dynemb/dynemb.sock", dynemb_strerror(rc));
			free(conn);
			conn = NULL;
		}
	}
	if (!conn) {
		pthread_mutex_lock(&g);
		p->open--;
		pthread_mutex_unlock(&g);
		return rc;
	}
	conn->pool = p;
	*out = conn;
	return 0;
}

void de_tf_release(de_tf_conn *conn, int broken)
{
	if (!conn)
		return;
	struct pool *p = conn->pool;
	pthread_mutex_lock(&g);
	if (conn->held) {
		conn->held = false;
		p->held--;
	}
	if (!broken) {
		conn->next_idle = p->idle;
		p->idle = conn;
		pthread_mutex_unlock(&g);
		return;
	}
	p->open--;
	pthread_mutex_unlock(&g);
	conn_free(conn);
}

dynemb_client *de_tf_client(de_tf_conn *conn)
{
	return conn->c;
}

int de_tf_try_hold(de_tf_conn *conn)
{
	int ok = 0;
	pthread_mutex_lock(&g);
	if (!conn->held && conn->pool->held < DE_TF_MAX_HELD) {
		conn->held = true;
		conn->pool->held++;
		ok = 1;
	}
	pthread_mutex_unlock(&g);
	return ok;
}

void de_tf_unhold(de_tf_conn *conn)
{
	pthread_mutex_lock(&g);
	if (conn->held) {
		conn->held = false;
		conn->pool->held--;
	}
	pthread_mutex_unlock(&g);
}

int de_tf_table(de_tf_conn *conn, const char *var_name, const char *config, int *table,
		char *err, size_t errlen)
{
	for (size_t i = 0; i < conn->ntables; i++)
		if (!strcmp(conn->tables[i].var_name, var_name) &&
		    !strcmp(conn->tables[i].config, config)) {
			*table = conn->tables[i].table;
			return 0;
		}
	struct dynemb_table_spec spec;
	int rc = de_tf_parse_config(config, var_name, &spec, err, errlen);
	if (rc)
		return rc;
	if (conn->ntables == conn->captables) {
		size_t cap = conn->captables ? 2 * conn->captables : 4;
		struct tcache *t = realloc(conn->tables, cap * sizeof *t);
		if (!t)
			return -ENOMEM;
		conn->tables = t;
		conn->captables = cap;
	}
	int h;
	rc = dynemb_open(conn->c, &spec, &h);
	if (rc) {
		snprintf(err, errlen, "cannot open table '%s'%s: %s", var_name,
			 rc == -EEXIST ? " (the daemon has it with another config)" : "",
			 dynemb_strerror(rc));
		return rc;
	}
	struct tcache *t = &conn->tables[conn->ntables];
	t->var_name = strdup(var_name);
	t->config = strdup(config);
	if (!t->var_name || !t->config) {
		free(t->var_name);
		free(t->config);
		return -ENOMEM; /* the daemon-side handle stays with the connection */
	}
	t->table = h;
	conn->ntables++;
	*table = h;
	return 0;
}

int de_tf_pool_counts(const char *address, int timeout_ms, unsigned *open, unsigned *idle,
		      unsigned *held)
{
	if (timeout_ms < 0)
		timeout_ms = 0;
	pthread_mutex_lock(&g);
	struct pool *p = find_pool(address, timeout_ms);
	if (p) {
		unsigned n = 0;
		for (de_tf_conn *c = p->idle; c; c = c->next_idle)
			n++;
		*open = p->open;
		*idle = n;
		*held = p->held;
	}
	pthread_mutex_unlock(&g);
	return p ? 0 : -ENOENT;
}

void de_tf_close_idle(void)
{
	pthread_mutex_lock(&g);
	de_tf_conn *list = NULL;
	for (struct pool *p = pools; p; p = p->next) {
		while (p->idle) {
			de_tf_conn *c = p->idle;
			p->idle = c->next_idle;
			p->open--;
			c->next_idle = list;
			list = c;
		}
	}
	pthread_mutex_unlock(&g);
	while (list) {
		de_tf_conn *c = list;
		list = c->next_idle;
		conn_free(c);
	}
}

/* ---- shapes ---------------------------------------------------------------------------- */

static void fmt_shape(char *b, size_t cap, const int64_t *d, int rank)
{
	size_t n = (size_t)snprintf(b, cap, "[");
	for (int i = 0; i < rank && n < cap; i++)
		n += (size_t)snprintf(b + n, cap - n, "%s%lld", i ? ", " : "", (long long)d[i]);
	if (n < cap)
		snprintf(b + n, cap - n, "]");
}

int de_tf_check_rows_shape(const char *what, const int64_t *keys_dims, int keys_rank,
			   const int64_t *vals_dims, int vals_rank, uint32_t dim, char *err,
			   size_t errlen)
{
	bool ok = vals_rank == keys_rank + 1 && vals_dims[keys_rank] == (int64_t)dim;
	for (int i = 0; ok && i < keys_rank; i++)
		ok = keys_dims[i] == vals_dims[i];
	if (ok)
		return 0;
	char ks[160], vs[160];
	fmt_shape(ks, sizeof ks, keys_dims, keys_rank);
	fmt_shape(vs, sizeof vs, vals_dims, vals_rank);
	return fail(err, errlen, "%s must have shape keys.shape + [dim] = %s + [%u], not %s", what,
		    ks, dim, vs);
}
