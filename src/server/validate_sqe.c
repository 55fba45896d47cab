/*
 * validate_sqe.c — the pure checks of the data plane (validate.h): a descriptor copied
 * out of a client's submission ring (srv_check_sqe, and srv_check_learn_sqe for SAMPLE,
 * TOPK, KEY_STRINGS), a copied string-key region (srv_check_string_keys) and SAMPLE's
 * copied argument block (srv_check_sample_args).
 *
 * Every offset and length is checked against the channel's own data area with one test,
 * range_ok (the same test as de_channel_range_ok, on a size instead of a channel), in
 * arithmetic that cannot wrap. Callers: worker.c before anything reads the data area,
 * learnops.c on the argument block, tests/fuzz/fuzz_sqe.c. Never: read the data area
 * itself (a client may rewrite it: the callers check copies).
 */
#include "validate.h"

#include <errno.h>
#include <math.h>
#include <string.h>

_Static_assert(DE_WSAMPLE_MAX == DE_SAMPLE_MAX, "proto.h and de_learn.h agree");
_Static_assert(DE_WTOPK_MAX_K == DE_TOPK_MAX_K, "proto.h and de_learn.h agree");
_Static_assert(DE_WTOPK_MAX_QUERIES == DE_TOPK_MAX_QUERIES, "proto.h and de_learn.h agree");
_Static_assert(DE_WTOPK_MAX_RESULTS == DE_TOPK_MAX_RESULTS, "proto.h and de_learn.h agree");
_Static_assert((int)DE_WSAMPLE_MAX_POWER == (int)DE_SAMPLER_MAX_POWER, "proto.h and de_learn.h agree");

/* off + len inside a data area of data_bytes, without overflow. */
static bool range_ok(uint64_t data_bytes, uint64_t off, uint64_t len)
{
	return off <= data_bytes && len <= data_bytes - off;
}

int srv_check_sqe(const struct de_sqe *e, uint32_t ntables, uint32_t dim, uint32_t key_type,
		  uint32_t max_batch, uint64_t data_bytes)
{
	if (e->op == DE_OP_NOP)
		return 0;
	if (e->op > DE_OP_MAX || e->table >= ntables)
		return -EINVAL;
	if (e->op >= DE_OP_SAMPLE) /* SAMPLE, TOPK, KEY_STRINGS */
		return srv_check_learn_sqe(e, dim, key_type, max_batch, data_bytes);
	if (e->op == DE_OP_STATS) {
		if (e->flags || e->vals_off % 8 || e->vals_len < sizeof(struct de_wire_stats) ||
		    !range_ok(data_bytes, e->vals_off, e->vals_len))
			return -EINVAL;
		return 0;
	}
	if (e->count > max_batch)
		return -E2BIG;
	uint8_t allowed = e->op == DE_OP_LOOKUP ? DE_LOOKUP_CREATE | DE_SQE_STATUS
			: e->op == DE_OP_UPDATE ? DE_SQE_STATUS
			: e->op == DE_OP_APPLY_GRADS ? DE_GRAD_LR : 0;
	uint32_t n = e->count;
	uint64_t vbytes = (uint64_t)n * dim * 4;
	bool want_vals = e->op == DE_OP_LOOKUP || e->op == DE_OP_UPDATE ||
			 e->op == DE_OP_APPLY_GRADS;
	if (e->op == DE_OP_APPLY_GRADS) {
		/* status_off carries the lr override (flag) or nothing */
		double lr = de_lr_from_wire(e->status_off);
		if ((e->flags & DE_GRAD_LR) ? !(isfinite(lr) && lr > 0) : e->status_off != 0)
			return -EINVAL;
	}
	if ((e->flags & ~allowed) || e->keys_off % 8 ||
	    !range_ok(data_bytes, e->keys_off, e->keys_len) ||
	    (want_vals && (e->vals_off % 4 || e->vals_len != vbytes ||
			   !range_ok(data_bytes, e->vals_off, e->vals_len))) ||
	    ((e->flags & DE_SQE_STATUS) && !range_ok(data_bytes, e->status_off, n)))
		return -EINVAL;
	if (key_type == DE_KEYS_STRING ? e->keys_len < 4ull * n : e->keys_len != 8ull * n)
		return -EINVAL;
	return 0;
}

int srv_check_string_keys(const void *region, uint64_t len, uint32_t count, uint32_t *slen,
			  uint64_t *soff)
{
	uint64_t hdr = 4ull * count;
	if (len < hdr)
		return -EINVAL;
	memcpy(slen, region, hdr);
	uint64_t off = hdr;
	for (uint32_t i = 0; i < count; i++) {
		uint32_t n = slen[i];
		if (n > DE_MAX_KEY_BYTES || n > len - off)
			return -EINVAL;
		soff[i] = off;
		off += n;
	}
	return off == len ? 0 : -EINVAL;
}


int srv_check_learn_sqe(const struct de_sqe *e, uint32_t dim, uint32_t key_type,
			uint32_t max_batch, uint64_t data_bytes)
{
	uint64_t n = e->count;
	if (n > max_batch)
		return -E2BIG;
	if (e->keys_off % 8 || !range_ok(data_bytes, e->keys_off, e->keys_len) ||
	    !range_ok(data_bytes, e->vals_off, e->vals_len))
		return -EINVAL;
	switch (e->op) {
	case DE_OP_SAMPLE:
		if ((e->flags & ~(DE_SAMPLE_STR | DE_SAMPLE_WEIGHT)) || e->arg || e->vals_off % 8 ||
		    e->status_off % 8 ||
		    !range_ok(data_bytes, e->status_off, sizeof(struct de_wire_sample_args)))
			return -EINVAL;
		if ((e->flags & DE_SAMPLE_STR) ? key_type != DE_KEYS_STRING || e->keys_len < 4 * n
					       : e->keys_len != 8 * n)
			return -EINVAL;
		/* at least one sample: 13 bytes past the true_expected counts */
		if (e->vals_len < 4 * n + 13)
			return -EINVAL;
		return 0;
	case DE_OP_TOPK:
		if ((e->flags & ~DE_WTOPK_COSINE) || e->status_off || !n || e->vals_off % 8 ||
		    e->keys_off % 4 || e->keys_len != 4 * n * dim)
			return -EINVAL;
		if (!e->arg || e->arg > DE_TOPK_MAX_K)
			return e->arg ? -E2BIG : -EINVAL;
		if (n > DE_TOPK_MAX_QUERIES || n * e->arg > DE_TOPK_MAX_RESULTS)
			return -E2BIG;
		if (e->vals_len != 12 * n * e->arg)
			return -EINVAL;
		return 0;
	case DE_OP_KEY_STRINGS:
		if (e->flags || e->arg || e->status_off || key_type != DE_KEYS_STRING ||
		    e->keys_len != 8 * n || e->vals_off % 4 || e->vals_len < 4 * n)
			return -EINVAL;
		return 0;
	default:
		return -EINVAL;
	}
}

int srv_check_sample_args(const struct de_wire_sample_args *a, const struct de_sqe *e,
			  uint32_t max_batch)
{
	if (a->kind > DE_SAMPLER_UNIGRAM || a->unique > 1 || a->reserved)
		return -EINVAL;
	if (a->kind == DE_SAMPLER_UNIGRAM ? !(a->power > 0 && a->power <= DE_WSAMPLE_MAX_POWER)
					  : (a->power != 0 || signbit(a->power)))
		return -EINVAL;
	uint32_t lim = max_batch < DE_SAMPLE_MAX ? max_batch : DE_SAMPLE_MAX;
	if (!a->num_sampled)
		return -EINVAL;
	if (a->num_sampled > lim)
		return -E2BIG;
	if (e->vals_len != 13ull * a->num_sampled + 4ull * e->count +
			   ((e->flags & DE_SAMPLE_WEIGHT) ? 8 : 0))
		return -EINVAL;
	return 0;
}
