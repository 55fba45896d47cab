/*
 * fuzz_sqe.c — libFuzzer target for srv_check_sqe and srv_check_string_keys
 * (src/server/validate_sqe.c): the checks of a data-plane descriptor, which a client writes
 * into its submission ring, before a worker touches the data area or the table.
 *
 * Input (see tests/fuzz/make_seeds.py, which writes the seeds in corpus_sqe/):
 *   struct de_sqe (64 bytes), then 16 bytes of limits:
 *     u8 ntables, u8 key_type (bit 0), u16 dim (1 + v % DE_MAX_DIM),
 *     u32 max_batch (1 + v % SRV_MAX_BATCH_LIMIT), u8 mode (bit 0: large area), 3 pad,
 *     u32 area: data area pages, 1 + v % 4 (small mode) or 1 + v % 2^20 (large mode:
 *     up to DE_CHANNEL_MAX_DATA, not allocated),
 *   then the first bytes of the data area (zeros after them).
 * Small mode allocates the data area exactly and, for an accepted descriptor, does what
 * a worker does with it (copies keys out, checks and fingerprints string keys, writes
 * values, status bytes, stats), so ASan reports any range the check let through that
 * leaves the area. Both modes also check the accepted descriptor against the rules
 * independently (128-bit arithmetic, no wrap-around), and srv_check_string_keys runs on
 * the trailing bytes directly as well. APPLY_GRADS: its gradients are read (copied, as
 * the worker does) and its lr override, when flagged, must be a finite lr > 0.
 * SAMPLE / TOPK / KEY_STRINGS (srv_check_learn_sqe): the accepted descriptor is checked
 * against proto.h's rules here too; in small mode SAMPLE's argument block is read from
 * the area and run through srv_check_sample_args, and every output region is written.
 * Build and run: tools/fuzz.sh.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "validate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#include "fuzz_check.h"

typedef unsigned __int128 u128;

static bool in_area(uint64_t off, uint64_t len, uint64_t bytes)
{
	return (u128)off + len <= bytes;
}

/* srv_check_string_keys on region (len bytes, its own allocation), checked by hand. */
static void string_keys(const uint8_t *region, uint64_t len, uint32_t count, uint64_t seed)
{
	uint32_t *slen = malloc(((size_t)count + 1) * sizeof *slen);
	uint64_t *soff = malloc(((size_t)count + 1) * sizeof *soff);
	CHECK(slen && soff);
	int r = srv_check_string_keys(region, len, count, slen, soff);
	CHECK(r == 0 || r == -EINVAL);
	if (r == 0) {
		uint64_t off = 4ull * count;
		CHECK(off <= len);
		for (uint32_t i = 0; i < count; i++) {
			uint32_t l;
			memcpy(&l, region + 4ull * i, sizeof l);
			CHECK(slen[i] == l && l <= DE_MAX_KEY_BYTES);
			CHECK(soff[i] == off && (u128)soff[i] + slen[i] <= len);
			/* what the worker does with each string */
			(void)de_key_from_string(seed, region + soff[i], slen[i]);
			off += slen[i];
		}
		CHECK(off == len);
	}
	free(slen);
	free(soff);
}

/* An accepted SAMPLE / TOPK / KEY_STRINGS descriptor: the rules of proto.h, then (small
 * area) what learnops.c does with it. */
static int learn_op(const struct de_sqe *e, uint32_t key_type, uint32_t dim, uint32_t max_batch,
		    uint64_t bytes, bool large, const uint8_t *rest, size_t nrest)
{
	CHECK(e->count <= max_batch && e->keys_off % 8 == 0);
	CHECK(in_area(e->keys_off, e->keys_len, bytes) && in_area(e->vals_off, e->vals_len, bytes));
	if (e->op == DE_OP_SAMPLE) {
		CHECK(!(e->flags & ~(DE_SAMPLE_STR | DE_SAMPLE_WEIGHT)) && e->arg == 0 &&
		      e->vals_off % 8 == 0);
		CHECK(e->status_off % 8 == 0 &&
		      in_area(e->status_off, sizeof(struct de_wire_sample_args), bytes));
		if (e->flags & DE_SAMPLE_STR)
			CHECK(key_type == DE_KEYS_STRING && (u128)e->keys_len >= (u128)4 * e->count);
		else
			CHECK((u128)e->keys_len == (u128)8 * e->count);
		CHECK((u128)e->vals_len >= (u128)4 * e->count + 13);
	} else if (e->op == DE_OP_TOPK) {
		CHECK(!(e->flags & ~DE_WTOPK_COSINE) && e->status_off == 0 && e->count > 0);
		CHECK(e->arg >= 1 && e->arg <= DE_WTOPK_MAX_K && e->count <= DE_WTOPK_MAX_QUERIES);
		CHECK((u128)e->count * e->arg <= DE_WTOPK_MAX_RESULTS);
		CHECK((u128)e->keys_len == (u128)4 * e->count * dim);
		CHECK((u128)e->vals_len == (u128)12 * e->count * e->arg && e->vals_off % 8 == 0);
	} else {
		CHECK(key_type == DE_KEYS_STRING && e->flags == 0 && e->arg == 0 && e->status_off == 0);
		CHECK((u128)e->keys_len == (u128)8 * e->count && e->vals_off % 4 == 0);
		CHECK((u128)e->vals_len >= (u128)4 * e->count);
	}
	if (large)
		return 0;
	uint8_t *area = calloc(1, bytes);
	CHECK(area);
	memcpy(area, rest, nrest < bytes ? nrest : bytes);
	uint8_t *keys = malloc(e->keys_len ? e->keys_len : 1);
	CHECK(keys);
	memcpy(keys, area + e->keys_off, e->keys_len); /* the worker's copy */
	if (e->op == DE_OP_SAMPLE) {
		struct de_wire_sample_args a;
		memcpy(&a, area + e->status_off, sizeof a);
		int r = srv_check_sample_args(&a, e, max_batch);
		CHECK(r == 0 || r == -EINVAL || r == -E2BIG);
		if (r == 0) {
			CHECK(a.kind <= 2 && a.unique <= 1 && a.num_sampled >= 1 &&
			      a.num_sampled <= max_batch && a.reserved == 0);
			CHECK((u128)e->vals_len == (u128)13 * a.num_sampled + (u128)4 * e->count +
						   ((e->flags & DE_SAMPLE_WEIGHT) ? 8 : 0));
			if (e->flags & DE_SAMPLE_STR)
				string_keys(keys, e->keys_len, e->count, a.seed);
		}
	}
	memset(area + e->vals_off, 0xA5, e->vals_len); /* every output the daemon writes */
	free(keys);
	free(area);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct de_sqe e;
	uint8_t lim[16];
	if (size < sizeof e + sizeof lim)
		return 0;
	memcpy(&e, data, sizeof e);
	memcpy(lim, data + sizeof e, sizeof lim);
	const uint8_t *rest = data + sizeof e + sizeof lim;
	size_t nrest = size - sizeof e - sizeof lim;

	uint16_t d16;
	uint32_t mb32, pages32;
	memcpy(&d16, lim + 2, 2);
	memcpy(&mb32, lim + 4, 4);
	memcpy(&pages32, lim + 12, 4);
	uint32_t ntables = lim[0];
	uint32_t key_type = lim[1] & 1;
	uint32_t dim = 1 + d16 % DE_MAX_DIM;
	uint32_t max_batch = 1 + mb32 % SRV_MAX_BATCH_LIMIT;
	bool large = lim[8] & 1;
	uint64_t pages = 1 + (uint64_t)pages32 % (large ? DE_CHANNEL_MAX_DATA / 4096 : 4);
	uint64_t bytes = pages * 4096;

	int r = srv_check_sqe(&e, ntables, dim, key_type, max_batch, bytes);
	CHECK(r == 0 || r == -EINVAL || r == -E2BIG);
	CHECK(srv_check_sqe(&e, ntables, dim, key_type, max_batch, bytes) == r);
	if (r == -E2BIG) /* TOPK also: k, nq or nq * k over the top-k limits */
		CHECK(e.count > max_batch ||
		      (e.op == DE_OP_TOPK && (e.arg > DE_WTOPK_MAX_K || e.count > DE_WTOPK_MAX_QUERIES ||
					      (u128)e.count * e.arg > DE_WTOPK_MAX_RESULTS)));

	/* the string-key check on its own, on whatever the input carries */
	string_keys(rest, nrest, e.count % 4097, e.arg);

	if (r || e.op == DE_OP_NOP)
		return 0;

	/* accepted: check it against the rules, independently of worker.c */
	CHECK(e.op <= DE_OP_KEY_STRINGS && e.table < ntables);
	if (e.op >= DE_OP_SAMPLE)
		return learn_op(&e, key_type, dim, max_batch, bytes, large, rest, nrest);
	if (e.op == DE_OP_STATS) {
		CHECK(e.flags == 0 && e.vals_off % 8 == 0);
		CHECK(e.vals_len >= sizeof(struct de_wire_stats) && in_area(e.vals_off, e.vals_len, bytes));
	} else {
		bool want_vals = e.op == DE_OP_LOOKUP || e.op == DE_OP_UPDATE ||
				 e.op == DE_OP_APPLY_GRADS;
		uint8_t allowed = e.op == DE_OP_LOOKUP ? DE_LOOKUP_CREATE | DE_SQE_STATUS
				: e.op == DE_OP_UPDATE ? DE_SQE_STATUS
				: e.op == DE_OP_APPLY_GRADS ? DE_GRAD_LR : 0;
		if (e.op == DE_OP_APPLY_GRADS) {
			double lr;
			memcpy(&lr, &e.status_off, sizeof lr);
			if (e.flags & DE_GRAD_LR)
				CHECK(isfinite(lr) && lr > 0);
			else
				CHECK(e.status_off == 0);
		}
		CHECK(e.count <= max_batch && !(e.flags & ~allowed));
		CHECK(e.keys_off % 8 == 0 && in_area(e.keys_off, e.keys_len, bytes));
		if (key_type == DE_KEYS_STRING)
			CHECK((u128)e.keys_len >= (u128)4 * e.count);
		else
			CHECK((u128)e.keys_len == (u128)8 * e.count);
		if (want_vals)
			CHECK(e.vals_off % 4 == 0 && (u128)e.vals_len == (u128)e.count * dim * 4 &&
			      in_area(e.vals_off, e.vals_len, bytes));
		if (e.flags & DE_SQE_STATUS)
			CHECK(in_area(e.status_off, e.count, bytes));
	}
	if (large)
		return 0;

	/* small area: use the descriptor the way a worker does */
	uint8_t *area = calloc(1, bytes);
	CHECK(area);
	memcpy(area, rest, nrest < bytes ? nrest : bytes);
	if (e.op == DE_OP_STATS) {
		struct de_wire_stats ws = { .dim = dim, .key_type = key_type };
		memcpy(area + e.vals_off, &ws, sizeof ws);
		free(area);
		return 0;
	}
	uint8_t *keys = malloc(e.keys_len ? e.keys_len : 1);
	CHECK(keys);
	memcpy(keys, area + e.keys_off, e.keys_len);
	if (key_type == DE_KEYS_STRING) {
		string_keys(keys, e.keys_len, e.count, e.arg);
	} else {
		uint64_t *k = malloc(((size_t)e.count + 1) * sizeof *k);
		CHECK(k);
		memcpy(k, keys, e.keys_len); /* w->keys holds max_batch >= count keys */
		free(k);
	}
	if (e.op == DE_OP_APPLY_GRADS) {
		float *g = malloc(e.vals_len ? e.vals_len : 1);
		CHECK(g);
		memcpy(g, area + e.vals_off, e.vals_len); /* the worker's gbuf copy */
		free(g);
	}
	if (e.op == DE_OP_LOOKUP || e.op == DE_OP_UPDATE) {
		float *vals = (float *)(void *)(area + e.vals_off); /* 4-aligned: checked */
		for (uint64_t i = 0; i < e.vals_len / 4; i++)
			vals[i] = (float)i;
	}
	if (e.flags & DE_SQE_STATUS)
		memset(area + e.status_off, DE_FOUND, e.count);
	free(keys);
	free(area);
	return 0;
}
