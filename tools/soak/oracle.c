/*
 * oracle.c — the soak's independent model of what each table must hold, and the checks
 * of a row read back against it (soak.h says who writes the model).
 *
 * Owns: the keys of each table, the expected rows, the table specs every soak process
 * opens, and the violation record. Shares no code with the daemon: a PUT table's row is
 * a pure function of (table, key index, version), written by dynemb_update; an SGD row
 * is what SGD with lr 1/2 from zeros makes of u units of a fixed per-key gradient,
 * computed here in closed form (every value a small multiple of 1/2, exact in float, and
 * independent of the order or grouping in which the units were applied, so a request
 * that died with its client leaves the row consistent with some u in [acked, sent]).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../mix.h"
#include "soak.h"

const char *const soak_table_names[SOAK_NTABLES] = { "soak_sync", "soak_sgd", "soak_async",
						      "soak_none", "soak_evict" };
const char *const soak_attack_names[SOAK_NATTACKS] = {
	"idle connections without HELLO", "garbage control packets",
	"oversized control packets", "random descriptors", "huge descriptors",
	"huge API requests",
};

uint64_t oracle_key(int t, uint32_t i)
{
	return mix(((uint64_t)(t + 1) << 40) + i + 0x50a4000000000000ull) | 1;
}

struct kidx {
	uint64_t key;
	uint32_t i;
};
static struct kidx *rev[SOAK_NTABLES];
static uint32_t rev_n;

static int kidx_cmp(const void *a, const void *b)
{
	uint64_t x = ((const struct kidx *)a)->key, y = ((const struct kidx *)b)->key;
	return x < y ? -1 : x > y;
}

int oracle_init(uint32_t keys)
{
	rev_n = keys;
	for (int t = 0; t < SOAK_NTABLES; t++) {
		rev[t] = malloc((size_t)keys * sizeof *rev[t]);
		if (!rev[t])
			return -ENOMEM;
		for (uint32_t i = 0; i < keys; i++)
			rev[t][i] = (struct kidx){ oracle_key(t, i), i };
		qsort(rev[t], keys, sizeof *rev[t], kidx_cmp);
		for (uint32_t i = 1; i < keys; i++)
			if (rev[t][i].key == rev[t][i - 1].key)
				return -EEXIST; /* two indices share a key: pick other salts */
	}
	return 0;
}

int64_t oracle_index(int t, uint64_t k)
{
	struct kidx want = { k, 0 };
	const struct kidx *f = bsearch(&want, rev[t], rev_n, sizeof *rev[t], kidx_cmp);
	return f ? (int64_t)f->i : -1;
}

void oracle_put_row(int t, uint32_t i, uint32_t v, float *out)
{
	out[0] = (float)v;
	out[1] = (float)i;
	for (uint32_t j = 2; j < SOAK_DIM; j++)
		out[j] = (float)(mix(((uint64_t)t << 56) ^ ((uint64_t)i << 32) ^ ((uint64_t)v << 8) ^ j) >>
				 41); /* 23 bits: exact */
}

void oracle_sgd_unit(uint32_t i, float *out)
{
	out[0] = -2.0f;
	for (uint32_t j = 1; j < SOAK_DIM; j++)
		out[j] = (float)((int)((i * 3u + j) % 7u) - 3);
}

void oracle_sgd_row(uint32_t i, uint32_t u, float *out)
{
	float unit[SOAK_DIM];
	oracle_sgd_unit(i, unit);
	for (uint32_t j = 0; j < SOAK_DIM; j++) /* w = 0 - lr * (u * unit): exact */
		out[j] = (float)(-SOAK_SGD_LR * (double)u * (double)unit[j]);
}

void soak_violation(const struct soak_ctx *x, const char *fmt, ...)
{
	char msg[SOAK_VIOL_LEN];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	uint64_t n = atomic_fetch_add(&x->sh->viol, 1);
	if (n < SOAK_VIOL_KEEP)
		memcpy(x->sh->viol_msg[n], msg, sizeof msg);
	if (n < 100)
		fprintf(stderr, "soak: VIOLATION: %s\n", msg);
	else if (n == 100)
		fprintf(stderr, "soak: more violations: counted, not printed\n");
}

int64_t oracle_check(const struct soak_ctx *x, const char *who, int t, uint32_t i, uint8_t st,
		     const float *row, uint32_t lo, uint32_t hi)
{
	const char *name = soak_table_names[t];
	bool zero = true;
	for (uint32_t j = 0; j < SOAK_DIM && zero; j++)
		zero = row[j] == 0.0f;
	int64_t v = 0;
	if (st != DYNEMB_ST_MISSING && st != DYNEMB_ST_FOUND && st != DYNEMB_ST_CREATED) {
		soak_violation(x, "%s: %s key %u: lookup status %u is none of the documented ones",
			       who, name, i, st);
		return -1;
	}
	if (st != DYNEMB_ST_MISSING && !zero) {
		float want[SOAK_DIM];
		double f0 = row[0];
		if (!(f0 >= 1.0 && f0 <= 16777216.0) || f0 != (double)(uint32_t)f0) {
			soak_violation(x, "%s: %s key %u: a row no one wrote (first value %g)", who,
				       name, i, f0);
			return -1;
		}
		v = (int64_t)f0;
		if (t == T_SGD)
			oracle_sgd_row(i, (uint32_t)v, want);
		else
			oracle_put_row(t, i, (uint32_t)v, want);
		for (uint32_t j = 0; j < SOAK_DIM; j++)
			if (row[j] != want[j]) {
				soak_violation(x, "%s: %s key %u: component %u is %.9g, the oracle says"
						  " %.9g for %s %" PRId64, who, name, i, j,
					       (double)row[j], (double)want[j],
					       t == T_SGD ? "gradient units" : "version", v);
				return -1;
			}
	}
	if (v < lo) {
		soak_violation(x, "%s: %s key %u: an acknowledged update is missing (the row holds"
				  " %s %" PRId64 ", %u were acknowledged)", who, name, i,
			       t == T_SGD ? "units" : "version", v, lo);
		return -1;
	}
	if (v > hi) {
		soak_violation(x, "%s: %s key %u: the row holds %s %" PRId64 ", but only %u were"
				  " ever sent", who, name, i, t == T_SGD ? "units" : "version", v, hi);
		return -1;
	}
	return v;
}

int soak_open(dynemb_client *c, int t, int *handle)
{
	struct dynemb_table_spec s = { .name = soak_table_names[t], .dim = SOAK_DIM,
				       .init = DYNEMB_ZEROS, .seed = 7, .keys = DYNEMB_INT64_KEYS };
	switch (t) {
	case T_SYNC:
		s.durability.mode = DYNEMB_DURABLE_SYNC;
		break;
	case T_SGD:
		dynemb_optim_spec_defaults(DYNEMB_OPTIM_SGD, &s.optim);
		s.optim.lr = SOAK_SGD_LR;
		s.durability.mode = DYNEMB_DURABLE_SYNC;
		break;
	case T_ASYNC:
		s.durability.mode = DYNEMB_DURABLE_ASYNC;
		s.durability.window_ms = 20;
		break;
	case T_EVICT:
		s.eviction.policy = DYNEMB_EVICTION_LRU;
		s.eviction.budget_bytes = SOAK_EVICT_BUDGET;
		break;
	default:
		break;
	}
	return dynemb_open(c, &s, handle);
}

int soak_connect(const struct soak_ctx *x, const char *name, uint64_t data_bytes,
		 dynemb_client **c)
{
	struct dynemb_connect_opts co = { .name = name, .data_bytes = data_bytes,
					  .timeout_ms = (int)x->o.timeout_ms };
	return dynemb_connect(x->sock, &co, c);
}
