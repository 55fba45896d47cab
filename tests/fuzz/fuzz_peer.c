/*
 * fuzz_peer.c — libFuzzer target for the peer frame parser (src/peer/wire.c): what one
 * dynembd reads from another after the handshake. It links libdepeer alone.
 *
 * Input: the 24-byte frame header (layout at the top of wire.c), 4 bytes of context,
 * then the payload (the rest; copied into a buffer of exactly its size, so ASan sees
 * any read past it). Context:
 *   byte 0  dim: of the handle a batch names, and of the request a reply answers (0..255;
 *           a TOPK reply's k, a SAMPLE reply's positives)
 *   byte 1-2  u16 n: the keys of the request a reply answers
 *   byte 3  bits 0-3: the request type a reply answers (1..8; else the header's own)
 *           bit 4: the reply answers another req_id (it must be refused)
 *           bit 7: the header's len is kept as given (only de_peer_hdr_check runs);
 *                  otherwise it is set to the payload's size, as a reader that read
 *                  exactly hdr.len bytes sees it
 * The target runs de_peer_hdr_check, then by type de_peer_parse_open, de_peer_parse_batch
 * or de_peer_parse_reply, and checks what a caller relies on: the result is 0 or -EPROTO
 * with a message; an accepted frame obeys every rule of the layout (re-derived here from
 * the bytes); keys, values, statuses and rows lie within the payload; values are finite;
 * a reply's counts agree with its statuses; the result is deterministic.
 * Seeds: tests/fuzz/corpus_peer/ (tests/fuzz/make_seeds.py). Build and run: tools/fuzz.sh.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "de_peer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#include "fuzz_check.h"

#define MAX_DIM 4096u /* DE_MAX_DIM (shm/de_shm.h) */

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
	return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

static void check_msg(const char *msg, size_t cap)
{
	CHECK(memchr(msg, 0, cap) && msg[0]);
}

/* p lies in [base, base + len] (an end pointer may equal base + len) */
static bool within(const void *p, const uint8_t *base, size_t len)
{
	return (const uint8_t *)p >= base && (const uint8_t *)p <= base + len;
}

static void fuzz_open(const struct de_peer_hdr *h, const uint8_t *p)
{
	struct de_peer_open o, o2;
	char msg[256], msg2[256];
	memset(msg, 0x5a, sizeof msg);
	int r = de_peer_parse_open(h, p, &o, msg, sizeof msg);
	CHECK(r == 0 || r == -EPROTO);
	if (r) {
		check_msg(msg, sizeof msg);
	} else {
		CHECK(h->len == DE_PEER_OPEN_BYTES);
		size_t nl = strnlen((const char *)p, 64);
		CHECK(nl >= 1 && nl < 64);
		for (size_t i = 0; i < nl; i++)
			CHECK(p[i] >= 0x20 && p[i] != 0x7f);
		for (size_t i = nl; i < 64; i++)
			CHECK(p[i] == 0);
		CHECK(memcmp(o.name, p, 64) == 0);
		CHECK(o.cfg == p + 64 && o.cfg_len == DE_PEER_OPEN_BYTES - 64);
	}
	CHECK(de_peer_parse_open(h, p, &o2, msg2, sizeof msg2) == r);
	if (r)
		CHECK(strcmp(msg, msg2) == 0);
}

/* A SAMPLE request (parse_batch's other layout). */
static void check_sample(const struct de_peer_hdr *h, const uint8_t *p,
			 const struct de_peer_batch *b)
{
	double power;
	memcpy(&power, p + 24, 8);
	CHECK(b->type == DE_PEER_SAMPLE && b->handle == le32(p) && b->flags == le32(p + 4) &&
	      b->step == le64(p + 8) && b->n == le32(p + 16) && b->npos == le32(p + 20) &&
	      !memcmp(&b->lr, &power, 8));
	CHECK(b->flags == DE_PEER_SAMPLE_UNIFORM || b->flags == DE_PEER_SAMPLE_UNIGRAM);
	if (b->flags == DE_PEER_SAMPLE_UNIGRAM)
		CHECK(power > 0 && power <= 16);
	else
		CHECK(power == 0 && !signbit(power));
	CHECK(b->n >= 1 && b->n <= DE_PEER_MAX_KEYS && b->npos <= DE_PEER_MAX_KEYS);
	CHECK(h->len == 32 + 8ull * b->npos);
	CHECK(b->npos ? (const uint8_t *)b->keys == p + 32 : b->keys == NULL);
	CHECK(b->vals == NULL);
}

static void fuzz_batch(const struct de_peer_hdr *h, const uint8_t *p, uint32_t dim)
{
	struct de_peer_batch b, b2;
	char msg[256], msg2[256];
	memset(msg, 0x5a, sizeof msg);
	int r = de_peer_parse_batch(h, p, dim, &b, msg, sizeof msg);
	CHECK(r == 0 || r == -EPROTO);
	uint16_t t = h->type;
	if (t == DE_PEER_SAMPLE) {
		if (r)
			check_msg(msg, sizeof msg);
		else
			check_sample(h, p, &b);
		CHECK(de_peer_parse_batch(h, p, dim, &b2, msg2, sizeof msg2) == r);
		return;
	}
	bool batch_type = t >= DE_PEER_LOOKUP && t <= DE_PEER_TOPK && t != DE_PEER_PING;
	if (!batch_type)
		CHECK(r == -EPROTO);
	if (r) {
		check_msg(msg, sizeof msg);
	} else {
		uint64_t fixed = t == DE_PEER_APPLY ? 32 : 24;
		bool topk = t == DE_PEER_TOPK;
		bool vals = t == DE_PEER_UPDATE || t == DE_PEER_APPLY || topk;
		uint64_t kb = topk ? 0 : 8ull * b.n;
		CHECK(b.type == t);
		CHECK(b.handle == le32(p) && b.flags == le32(p + 4) && b.step == le64(p + 8) &&
		      b.n == le32(p + 16) && le32(p + 20) == 0);
		CHECK(b.n >= 1 && b.n <= DE_PEER_MAX_KEYS);
		CHECK(dim >= 1 && dim <= MAX_DIM);
		uint32_t allowed = t == DE_PEER_LOOKUP ? DE_PEER_LOOKUP_CREATE
				 : t == DE_PEER_APPLY ? DE_PEER_APPLY_LR
				 : topk ? DE_PEER_TOPK_COSINE : 0;
		CHECK(!(b.flags & ~allowed));
		CHECK(h->len == fixed + kb + (vals ? 4ull * b.n * dim : 0));
		if (topk) {
			CHECK(b.keys == NULL);
			CHECK(b.step >= 1 && b.step <= DE_PEER_TOPK_MAX_K &&
			      b.step * b.n <= DE_PEER_TOPK_MAX_RESULTS);
		} else {
			CHECK((const uint8_t *)b.keys == p + fixed);
			CHECK(within(b.keys + b.n, p, h->len));
			for (uint32_t i = 0; i < b.n; i++)
				CHECK(b.keys[i] == le64(p + fixed + 8ull * i));
		}
		if (vals) {
			CHECK((const uint8_t *)b.vals == p + fixed + kb);
			CHECK((const uint8_t *)(b.vals + (uint64_t)b.n * dim) == p + h->len);
			for (uint64_t i = 0; i < (uint64_t)b.n * dim; i++)
				CHECK(isfinite(b.vals[i]));
		} else {
			CHECK(b.vals == NULL);
			CHECK((const uint8_t *)(b.keys + b.n) == p + h->len);
		}
		if (t == DE_PEER_APPLY) {
			double lr;
			memcpy(&lr, p + 24, 8);
			CHECK(memcmp(&lr, &b.lr, 8) == 0);
			if (b.flags & DE_PEER_APPLY_LR)
				CHECK(isfinite(b.lr) && b.lr > 0);
			else
				CHECK(b.lr == 0);
		} else {
			CHECK(b.lr == 0);
		}
	}
	CHECK(de_peer_parse_batch(h, p, dim, &b2, msg2, sizeof msg2) == r);
	if (r)
		CHECK(strcmp(msg, msg2) == 0);
	else /* field by field: padding bytes are not the parser's */
		CHECK(b.type == b2.type && b.handle == b2.handle && b.flags == b2.flags &&
		      b.n == b2.n && b.step == b2.step && !memcmp(&b.lr, &b2.lr, 8) &&
		      b.keys == b2.keys && b.vals == b2.vals);
}

static void fuzz_reply(const struct de_peer_hdr *h, const uint8_t *p, uint16_t type,
		       uint64_t req_id, uint32_t n, uint32_t dim)
{
	static struct de_peer_reply o, o2;
	char msg[256], msg2[256];
	memset(msg, 0x5a, sizeof msg);
	int r = de_peer_parse_reply(h, p, type, req_id, n, dim, &o, msg, sizeof msg);
	CHECK(r == 0 || r == -EPROTO);
	if (h->type != (type | DE_PEER_REPLY) || h->req_id != req_id)
		CHECK(r == -EPROTO);
	if (r) {
		check_msg(msg, sizeof msg);
	} else if (h->status < 0) {
		CHECK(o.status == h->status);
		size_t l = strnlen(o.msg, sizeof o.msg);
		CHECK(l < sizeof o.msg && l <= h->len && l <= DE_PEER_MSG_MAX);
		for (size_t i = 0; i < l; i++)
			CHECK((unsigned char)o.msg[i] >= 0x20 && o.msg[i] != 0x7f);
	} else {
		CHECK(o.status == 0);
		if (type == DE_PEER_PING) {
			CHECK(h->len == 0);
		} else if (type == DE_PEER_OPEN) {
			CHECK(h->len == 8 && o.handle == le32(p) && o.dim == le32(p + 4) &&
			      o.dim == dim);
		} else if (type == DE_PEER_SAMPLE) { /* dim is npos */
			CHECK(h->len == 24 + 12ull * n + 4ull * dim);
			CHECK(h->len == de_peer_sample_reply_bytes(n, dim));
			CHECK(le32(p) == n && le32(p + 4) == dim && o.a == n);
			CHECK(o.population == le64(p + 8) && o.population >= 1);
			CHECK(isfinite(o.weight) && o.weight > 0);
			CHECK((const uint8_t *)o.tkeys == p + 24);
			CHECK((const uint8_t *)o.tscores == p + 24 + 8ull * n);
			CHECK((const uint8_t *)(o.pprob + dim) == p + h->len);
			for (uint32_t i = 0; i < n; i++) {
				float pr;
				memcpy(&pr, p + 24 + 8ull * n + 4ull * i, 4);
				CHECK(le64(p + 24 + 8ull * i) != 0 && pr > 0 && pr <= 1);
			}
			for (uint32_t j = 0; j < dim; j++) {
				float pr;
				memcpy(&pr, p + 24 + 12ull * n + 4ull * j, 4);
				CHECK(pr >= 0 && pr <= 1);
			}
		} else if (type == DE_PEER_TOPK) { /* dim is k */
			CHECK(le32(p) == n && le32(p + 12) == 0);
			CHECK(o.a == le32(p + 4) && o.b == 0 && le32(p + 8) == 0 && o.a <= dim);
			CHECK(h->len == 16 + 12ull * n * dim);
			CHECK(h->len == de_peer_topk_reply_bytes(n, dim));
			CHECK((const uint8_t *)o.tkeys == p + 16);
			CHECK((const uint8_t *)o.tscores == p + 16 + 8ull * n * dim);
			CHECK((const uint8_t *)(o.tscores + (uint64_t)n * dim) == p + h->len);
			for (uint64_t i = 0; i < (uint64_t)n * dim; i++) {
				float sc;
				memcpy(&sc, p + 16 + 8ull * n * dim + 4 * i, 4);
				if (i % dim >= o.a)
					CHECK(le64(p + 16 + 8 * i) == 0 && isinf(sc) && sc < 0);
				else
					CHECK(!isnan(sc) && !(isinf(sc) && sc > 0));
			}
		} else {
			CHECK(type >= DE_PEER_LOOKUP && type <= DE_PEER_ERASE);
			CHECK(le32(p) == n && le32(p + 12) == 0);
			CHECK(o.a == le32(p + 4) && o.b == le32(p + 8));
			CHECK(o.a <= n && o.b <= n);
			if (type == DE_PEER_LOOKUP) {
				uint64_t pad = ((uint64_t)n + 7) / 8 * 8;
				CHECK(h->len == 16 + pad + 4ull * n * dim);
				CHECK(h->len == de_peer_lookup_reply_bytes(n, dim));
				CHECK(o.st == p + 16);
				CHECK((const uint8_t *)o.rows == p + 16 + pad);
				CHECK((const uint8_t *)(o.rows + (uint64_t)n * dim) == p + h->len);
				uint32_t found = 0, created = 0;
				for (uint32_t i = 0; i < n; i++) {
					CHECK(o.st[i] <= 2);
					found += o.st[i] == 1;
					created += o.st[i] == 2;
				}
				for (uint64_t i = n; i < pad; i++)
					CHECK(p[16 + i] == 0);
				CHECK(found == o.a && created == o.b);
			} else {
				CHECK(h->len == 16);
				if (type != DE_PEER_APPLY)
					CHECK(o.b == 0);
			}
		}
	}
	CHECK(de_peer_parse_reply(h, p, type, req_id, n, dim, &o2, msg2, sizeof msg2) == r);
	if (r)
		CHECK(strcmp(msg, msg2) == 0);
	else
		CHECK(o.status == o2.status && o.a == o2.a && o.b == o2.b &&
		      o.handle == o2.handle && o.dim == o2.dim && o.st == o2.st &&
		      o.rows == o2.rows && o.tkeys == o2.tkeys && o.tscores == o2.tscores &&
		      o.pprob == o2.pprob && o.population == o2.population &&
		      !memcmp(&o.weight, &o2.weight, 8) && !strcmp(o.msg, o2.msg));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < DE_PEER_HDR_BYTES + 4)
		return 0;
	struct de_peer_hdr h;
	memcpy(&h, data, sizeof h);
	const uint8_t *ctx = data + DE_PEER_HDR_BYTES;
	uint32_t dim = ctx[0], n = (uint32_t)ctx[1] | (uint32_t)ctx[2] << 8;
	size_t plen = size - DE_PEER_HDR_BYTES - 4;
	char msg[256];

	if (ctx[3] & 0x80) { /* the header alone, its len as given */
		memset(msg, 0x5a, sizeof msg);
		int r = de_peer_hdr_check(&h, msg, sizeof msg);
		CHECK(r == 0 || r == -EPROTO);
		if (r)
			check_msg(msg, sizeof msg);
		else
			CHECK(h.len <= DE_PEER_FRAME_MAX);
		return 0;
	}
	h.len = (uint32_t)plen;
	uint8_t *p = malloc(plen ? plen : 1);
	CHECK(p);
	memcpy(p, ctx + 4, plen);

	memset(msg, 0x5a, sizeof msg);
	int r = de_peer_hdr_check(&h, msg, sizeof msg);
	CHECK(r == 0 || r == -EPROTO);
	if (r) {
		check_msg(msg, sizeof msg);
	} else {
		unsigned base = h.type & ~DE_PEER_REPLY;
		CHECK(h.magic == DE_PEER_MAGIC && h.version == DE_PEER_VERSION);
		CHECK(h.type <= 0xff && base >= DE_PEER_OPEN && base <= DE_PEER_SAMPLE);
		CHECK(h.len <= DE_PEER_FRAME_MAX);
		if (!(h.type & DE_PEER_REPLY))
			CHECK(h.status == 0);
		else
			CHECK(h.status <= 0 && (h.status == 0 || h.len <= DE_PEER_MSG_MAX));
		if (!(h.type & DE_PEER_REPLY)) {
			if (h.type == DE_PEER_OPEN)
				fuzz_open(&h, p);
			fuzz_batch(&h, p, dim); /* non-batch types must be refused */
		} else {
			unsigned t = ctx[3] & 15;
			uint16_t type = (uint16_t)(t >= DE_PEER_OPEN && t <= DE_PEER_SAMPLE ? t : base);
			uint64_t req = h.req_id ^ (ctx[3] & 16 ? 1 : 0);
			fuzz_reply(&h, p, type, req, n, dim);
		}
	}
	free(p);
	return 0;
}
