/*
 * wire.c — the peer frames: what one dynembd sends another after the handshake
 * (auth.c), and the one parser of everything that comes back from the network. Pure:
 * no I/O, no allocation; the daemon's glue (src/server/peers.c) reads and writes, the
 * fuzz target (tests/fuzz/fuzz_peer.c) drives the parser alone.
 *
 * Byte layout (version 1). Every integer little endian; a frame is a header and a
 * payload of hdr.len bytes:
 *
 *   header, 24 bytes
 *     0  u32 magic     0x52504544 ("DEPR")
 *     4  u16 version   1
 *     6  u16 type      a request (1..8) or its reply (request | 0x80)
 *     8  u64 req_id    chosen by the requester, echoed by the reply
 *    16  u32 len       payload bytes that follow, <= DE_PEER_FRAME_MAX
 *    20  i32 status    a request: 0; a reply: 0, or a negative errno (then the payload
 *                      is a message of at most DE_PEER_MSG_MAX bytes, not NUL-terminated)
 *
 *   OPEN (1): the table a connection's later requests name by handle
 *     0  char name[64]           NUL-terminated, NUL-padded, 1..63 bytes
 *    64  de_wire_table_config    (src/proto.h, 64 bytes)
 *   128  de_wire_learn_config    (src/proto.h, 256 bytes)
 *     reply: u32 handle, u32 dim
 *
 *   LOOKUP (2), UPDATE (3), APPLY (4), ERASE (5): a batch on a handle
 *     0  u32 handle
 *     4  u32 flags     LOOKUP: bit 0 create missing keys; APPLY: bit 0 lr given; else 0
 *     8  u64 step
 *    16  u32 n         keys, 1..DE_PEER_MAX_KEYS
 *    20  u32 reserved  0
 *    24  f64 lr        APPLY only (then keys start at 32): > 0 and finite when bit 0
 *     .  u64 keys[n]
 *     .  f32 values[n * dim]   UPDATE (the rows) and APPLY (the gradients, finite) only
 *     replies, 16 bytes, then for LOOKUP the rows:
 *     0  u32 n         as asked
 *     4  u32 a         LOOKUP: found; UPDATE: created; APPLY: applied; ERASE: erased
 *     8  u32 b         LOOKUP: created; APPLY: created; else 0
 *    12  u32 reserved  0
 *    16  u8 status[n], zero-padded to a multiple of 8 (LOOKUP only, each 0..2)
 *     .  f32 rows[n * dim]     (LOOKUP only)
 *
 *   PING (6): no payload; reply: no payload.
 *
 *   TOPK (7): the batch layout above with n = queries (1..DE_PEER_MAX_KEYS), step = k
 *     (1..DE_PEER_TOPK_MAX_K, n * k <= DE_PEER_TOPK_MAX_RESULTS), flags bit 0 cosine
 *     (else dot), no keys, then f32 queries[n * dim] (finite)
 *     reply: the 16 bytes (n, a = found per query <= k, 0, 0), then u64 keys[n * k] and
 *     f32 scores[n * k], each query's best first; past `found` a key is 0 and its score
 *     -inf; a score is finite or -inf
 *
 *   SAMPLE (8): draws with replacement from the owner's sampler of a table (the
 *     requester mixes the members' draws by their weights: src/server/peers.c)
 *     0  u32 handle
 *     4  u32 kind      0 UNIFORM, 2 UNIGRAM (LOG_UNIFORM's ranks do not mix)
 *     8  u64 seed
 *    16  u32 n         draws, 1..DE_PEER_MAX_KEYS
 *    20  u32 npos      positives, 0..DE_PEER_MAX_KEYS
 *    24  f64 power     UNIGRAM: in (0, 16]; UNIFORM: 0
 *    32  u64 positives[npos]   (0: no class)
 *     reply: u32 n, u32 npos (as asked), u64 population (>= 1), f64 weight (finite,
 *     > 0: what the owner's probabilities are normalized by), u64 keys[n] (not 0),
 *     f32 prob[n] (in (0, 1]: P(keys[i]) on the owner), f32 pos_prob[npos] (in [0, 1]).
 *     An owner with no key to draw answers -ENOENT.
 *
 * A frame that breaks any rule above is refused with -EPROTO (and a message that names
 * the field): the connection it came on is closed by the caller, nothing else.
 * The lengths are exact: a payload longer or shorter than its type says is refused.
 */
#include "de_peer.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "proto.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the frames are little endian");
_Static_assert(sizeof(struct de_peer_hdr) == DE_PEER_HDR_BYTES, "header layout");
_Static_assert(sizeof(struct de_wire_table_config) == 64 &&
	       sizeof(struct de_wire_learn_config) == 256, "OPEN layout");
_Static_assert(DE_PEER_OPEN_BYTES == DE_NAME_MAX + sizeof(struct de_wire_table_config) +
				    sizeof(struct de_wire_learn_config), "OPEN layout");

__attribute__((format(printf, 3, 4)))
static int bad(char *msg, size_t cap, const char *fmt, ...)
{
	if (msg && cap) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(msg, cap, fmt, ap);
		va_end(ap);
	}
	return -EPROTO;
}

void de_peer_hdr_init(struct de_peer_hdr *h, uint16_t type, uint64_t req_id, uint32_t len,
		      int32_t status)
{
	*h = (struct de_peer_hdr){ .magic = DE_PEER_MAGIC, .version = DE_PEER_VERSION,
				   .type = type, .req_id = req_id, .len = len,
				   .status = status };
}

int de_peer_hdr_check(const struct de_peer_hdr *h, char *msg, size_t cap)
{
	if (h->magic != DE_PEER_MAGIC)
		return bad(msg, cap, "frame magic 0x%08x, not 0x%08x", h->magic, DE_PEER_MAGIC);
	if (h->version != DE_PEER_VERSION)
		return bad(msg, cap, "frame version %u, this side speaks %u", h->version,
			   DE_PEER_VERSION);
	unsigned base = h->type & ~DE_PEER_REPLY;
	if (base < DE_PEER_OPEN || base > DE_PEER_SAMPLE || (h->type & ~(DE_PEER_REPLY | 0x7f)))
		return bad(msg, cap, "frame type %u is not a peer frame", h->type);
	if (h->len > DE_PEER_FRAME_MAX)
		return bad(msg, cap, "frame of type %u: length %u over the most a frame carries "
			   "(%u)", h->type, h->len, DE_PEER_FRAME_MAX);
	if (!(h->type & DE_PEER_REPLY) && h->status)
		return bad(msg, cap, "request of type %u with status %d (requests carry 0)",
			   h->type, h->status);
	if ((h->type & DE_PEER_REPLY) && h->status > 0)
		return bad(msg, cap, "reply of type %u with status %d (0 or a negative errno)",
			   h->type & ~DE_PEER_REPLY, h->status);
	if ((h->type & DE_PEER_REPLY) && h->status < 0 && h->len > DE_PEER_MSG_MAX)
		return bad(msg, cap, "error reply with a %u-byte message (at most %u)", h->len,
			   DE_PEER_MSG_MAX);
	return 0;
}

uint64_t de_peer_batch_fixed(uint16_t type)
{
	return type == DE_PEER_APPLY ? 32 : 24;
}

uint64_t de_peer_topk_reply_bytes(uint32_t n, uint32_t k)
{
	return 16 + 12ull * n * k;
}

uint64_t de_peer_lookup_reply_bytes(uint32_t n, uint32_t dim)
{
	return 16 + (((uint64_t)n + 7) & ~7ull) + 4ull * n * dim;
}

uint64_t de_peer_sample_reply_bytes(uint32_t n, uint32_t npos)
{
	return 24 + 12ull * n + 4ull * npos;
}

static int parse_sample(const struct de_peer_hdr *h, const unsigned char *b,
			struct de_peer_batch *out, char *msg, size_t cap)
{
	if (h->len < 32)
		return bad(msg, cap, "SAMPLE of %u bytes: shorter than its 32 fixed bytes", h->len);
	struct de_peer_batch x = { .type = DE_PEER_SAMPLE };
	memcpy(&x.handle, b, 4);
	memcpy(&x.flags, b + 4, 4);
	memcpy(&x.step, b + 8, 8);
	memcpy(&x.n, b + 16, 4);
	memcpy(&x.npos, b + 20, 4);
	memcpy(&x.lr, b + 24, 8);
	if (x.flags != DE_PEER_SAMPLE_UNIFORM && x.flags != DE_PEER_SAMPLE_UNIGRAM)
		return bad(msg, cap, "SAMPLE: sampler kind %u (0 uniform or 2 unigram)", x.flags);
	if (x.flags == DE_PEER_SAMPLE_UNIGRAM ? !(x.lr > 0 && x.lr <= 16.0)
					      : (x.lr != 0 || signbit(x.lr)))
		return bad(msg, cap, "SAMPLE: power %g for sampler kind %u (unigram: (0, 16]; "
			   "uniform: 0)", x.lr, x.flags);
	if (x.n < 1 || x.n > DE_PEER_MAX_KEYS)
		return bad(msg, cap, "SAMPLE of %u draws: 1..%u", x.n, DE_PEER_MAX_KEYS);
	if (x.npos > DE_PEER_MAX_KEYS)
		return bad(msg, cap, "SAMPLE with %u positives: at most %u", x.npos,
			   DE_PEER_MAX_KEYS);
	if (h->len != 32 + 8ull * x.npos)
		return bad(msg, cap, "SAMPLE with %u positives is %llu bytes, not %u", x.npos,
			   32 + 8ull * x.npos, h->len);
	x.keys = x.npos ? (const uint64_t *)(const void *)(b + 32) : NULL;
	*out = x;
	return 0;
}

static int parse_sample_reply(const struct de_peer_hdr *h, const unsigned char *b, uint32_t n,
			      uint32_t npos, struct de_peer_reply *out, char *msg, size_t cap)
{
	uint64_t want = de_peer_sample_reply_bytes(n, npos);
	if (h->len != want)
		return bad(msg, cap, "SAMPLE reply of %u bytes for %u draws and %u positives, not "
			   "%llu", h->len, n, npos, (unsigned long long)want);
	uint32_t rn, rp;
	memcpy(&rn, b, 4);
	memcpy(&rp, b + 4, 4);
	memcpy(&out->population, b + 8, 8);
	memcpy(&out->weight, b + 16, 8);
	if (rn != n || rp != npos)
		return bad(msg, cap, "SAMPLE reply for %u draws and %u positives, the request had "
			   "%u and %u", rn, rp, n, npos);
	if (!out->population || !(isfinite(out->weight) && out->weight > 0))
		return bad(msg, cap, "SAMPLE reply: population %llu, weight %g (both must be > 0)",
			   (unsigned long long)out->population, out->weight);
	out->a = n;
	out->tkeys = (const uint64_t *)(const void *)(b + 24);
	out->tscores = (const float *)(const void *)(b + 24 + 8ull * n);
	out->pprob = out->tscores + n;
	for (uint32_t i = 0; i < n; i++)
		if (!out->tkeys[i] || !(out->tscores[i] > 0 && out->tscores[i] <= 1))
			return bad(msg, cap, "SAMPLE reply: draw %u (key %llu, probability %g) breaks "
				   "the rules", i, (unsigned long long)out->tkeys[i], out->tscores[i]);
	for (uint32_t j = 0; j < npos; j++)
		if (!(out->pprob[j] >= 0 && out->pprob[j] <= 1))
			return bad(msg, cap, "SAMPLE reply: positive %u has probability %g", j,
				   out->pprob[j]);
	return 0;
}

int de_peer_parse_open(const struct de_peer_hdr *h, const void *p, struct de_peer_open *out,
		       char *msg, size_t cap)
{
	if (h->len != DE_PEER_OPEN_BYTES)
		return bad(msg, cap, "OPEN of %u bytes, not %u", h->len, DE_PEER_OPEN_BYTES);
	const char *name = p;
	size_t nl = strnlen(name, DE_NAME_MAX);
	if (nl == 0 || nl == DE_NAME_MAX)
		return bad(msg, cap, "OPEN: the table name is %s", nl ? "not NUL-terminated"
								      : "empty");
	for (size_t i = nl; i < DE_NAME_MAX; i++)
		if (name[i])
			return bad(msg, cap, "OPEN: byte %zu after the table name is not 0", i);
	for (size_t i = 0; i < nl; i++)
		if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f)
			return bad(msg, cap, "OPEN: the table name has a control character at "
				   "byte %zu", i);
	memcpy(out->name, name, DE_NAME_MAX);
	out->cfg = (const char *)p + DE_NAME_MAX;
	out->cfg_len = DE_PEER_OPEN_BYTES - DE_NAME_MAX;
	return 0;
}

int de_peer_parse_batch(const struct de_peer_hdr *h, const void *p, uint32_t dim,
			struct de_peer_batch *out, char *msg, size_t cap)
{
	static const char *const names[] = { "", "OPEN", "LOOKUP", "UPDATE", "APPLY", "ERASE",
					     "PING", "TOPK" };
	uint16_t type = h->type;
	if (type == DE_PEER_SAMPLE)
		return parse_sample(h, p, out, msg, cap);
	if (type < DE_PEER_LOOKUP || type > DE_PEER_TOPK || type == DE_PEER_PING)
		return bad(msg, cap, "frame type %u is not a batch", type);
	const char *what = names[type];
	uint64_t fixed = de_peer_batch_fixed(type);
	if (h->len < fixed)
		return bad(msg, cap, "%s of %u bytes: shorter than its %llu fixed bytes", what,
			   h->len, (unsigned long long)fixed);
	const unsigned char *b = p;
	struct de_peer_batch x = { .type = type };
	memcpy(&x.handle, b, 4);
	memcpy(&x.flags, b + 4, 4);
	memcpy(&x.step, b + 8, 8);
	memcpy(&x.n, b + 16, 4);
	uint32_t res;
	memcpy(&res, b + 20, 4);
	if (res)
		return bad(msg, cap, "%s: reserved field at byte 20 is %u, not 0", what, res);
	unsigned allowed = type == DE_PEER_LOOKUP ? DE_PEER_LOOKUP_CREATE
			 : type == DE_PEER_APPLY ? DE_PEER_APPLY_LR
			 : type == DE_PEER_TOPK ? DE_PEER_TOPK_COSINE : 0;
	if (x.flags & ~allowed)
		return bad(msg, cap, "%s: flags 0x%x (only 0x%x are defined)", what, x.flags,
			   allowed);
	if (x.n < 1 || x.n > DE_PEER_MAX_KEYS)
		return bad(msg, cap, "%s of %u keys: a batch has 1..%u", what, x.n,
			   DE_PEER_MAX_KEYS);
	if (dim < 1 || dim > DE_MAX_DIM)
		return bad(msg, cap, "%s: handle %u has dim %u", what, x.handle, dim);
	if (type == DE_PEER_APPLY) {
		memcpy(&x.lr, b + 24, 8);
		if ((x.flags & DE_PEER_APPLY_LR) && !(isfinite(x.lr) && x.lr > 0))
			return bad(msg, cap, "APPLY: learning rate %g (it must be finite and > 0)",
				   x.lr);
		if (!(x.flags & DE_PEER_APPLY_LR) && x.lr != 0)
			return bad(msg, cap, "APPLY: learning rate %g without its flag", x.lr);
	}
	bool topk = type == DE_PEER_TOPK;
	if (topk && (x.step < 1 || x.step > DE_PEER_TOPK_MAX_K ||
		     x.step * x.n > DE_PEER_TOPK_MAX_RESULTS))
		return bad(msg, cap, "TOPK: k %llu for %u queries (k 1..%u, queries x k at most %u)",
			   (unsigned long long)x.step, x.n, DE_PEER_TOPK_MAX_K,
			   DE_PEER_TOPK_MAX_RESULTS);
	bool vals = type == DE_PEER_UPDATE || type == DE_PEER_APPLY || topk;
	uint64_t kb = topk ? 0 : 8ull * x.n;
	uint64_t want = fixed + kb + (vals ? 4ull * x.n * dim : 0);
	if (h->len != want)
		return bad(msg, cap, "%s of %u keys at dim %u is %llu bytes, not %u", what, x.n,
			   dim, (unsigned long long)want, h->len);
	x.keys = topk ? NULL : (const uint64_t *)(const void *)(b + fixed);
	if (vals) {
		x.vals = (const float *)(const void *)(b + fixed + kb);
		for (uint64_t i = 0; i < (uint64_t)x.n * dim; i++)
			if (!isfinite(x.vals[i]))
				return bad(msg, cap, "%s: value %llu (key %llu, column %llu) is not "
					   "finite", what, (unsigned long long)i,
					   (unsigned long long)(i / dim),
					   (unsigned long long)(i % dim));
	}
	*out = x;
	return 0;
}

int de_peer_parse_reply(const struct de_peer_hdr *h, const void *p, uint16_t type,
			uint64_t req_id, uint32_t n, uint32_t dim, struct de_peer_reply *out,
			char *msg, size_t cap)
{
	if (h->type != (type | DE_PEER_REPLY))
		return bad(msg, cap, "reply of type %u to a request of type %u",
			   h->type & ~DE_PEER_REPLY, type);
	if (h->req_id != req_id)
		return bad(msg, cap, "reply to request %llu, expected %llu",
			   (unsigned long long)h->req_id, (unsigned long long)req_id);
	*out = (struct de_peer_reply){ .status = h->status };
	if (h->status < 0) { /* the owner's refusal: its message */
		size_t l = h->len < sizeof out->msg - 1 ? h->len : sizeof out->msg - 1;
		memcpy(out->msg, p, l);
		out->msg[l] = 0;
		for (size_t i = 0; i < l; i++) /* for a log line: no control characters */
			if ((unsigned char)out->msg[i] < 0x20 || out->msg[i] == 0x7f)
				out->msg[i] = '?';
		return 0;
	}
	const unsigned char *b = p;
	if (type == DE_PEER_PING)
		return h->len ? bad(msg, cap, "PING reply with %u bytes", h->len) : 0;
	if (type == DE_PEER_SAMPLE) /* dim is npos here */
		return parse_sample_reply(h, b, n, dim, out, msg, cap);
	if (type == DE_PEER_OPEN) {
		if (h->len != 8)
			return bad(msg, cap, "OPEN reply of %u bytes, not 8", h->len);
		memcpy(&out->handle, b, 4);
		memcpy(&out->dim, b + 4, 4);
		if (out->dim != dim)
			return bad(msg, cap, "OPEN reply: dim %u, the table has %u", out->dim, dim);
		return 0;
	}
	uint64_t want = type == DE_PEER_LOOKUP ? de_peer_lookup_reply_bytes(n, dim)
		      : type == DE_PEER_TOPK ? de_peer_topk_reply_bytes(n, dim) : 16;
	if (h->len != want)
		return bad(msg, cap, "reply of %u bytes to a batch of %u keys, not %llu", h->len, n,
			   (unsigned long long)want);
	uint32_t rn, res;
	memcpy(&rn, b, 4);
	memcpy(&out->a, b + 4, 4);
	memcpy(&out->b, b + 8, 4);
	memcpy(&res, b + 12, 4);
	if (rn != n || res)
		return bad(msg, cap, "reply for %u keys (reserved %u), the request had %u", rn, res,
			   n);
	if (type == DE_PEER_TOPK) { /* dim is k here */
		if (out->a > dim || out->b)
			return bad(msg, cap, "TOPK reply: %u found of k %u, second count %u", out->a,
				   dim, out->b);
		out->tkeys = (const uint64_t *)(const void *)(b + 16);
		out->tscores = (const float *)(const void *)(b + 16 + 8ull * n * dim);
		for (uint64_t i = 0; i < (uint64_t)n * dim; i++) {
			float sc = out->tscores[i];
			bool past = i % dim >= out->a;
			if (past ? (out->tkeys[i] || !(isinf(sc) && sc < 0))
				 : !(isfinite(sc) || (isinf(sc) && sc < 0)))
				return bad(msg, cap, "TOPK reply: result %llu (key %llu, score %g) "
					   "breaks the rules", (unsigned long long)i,
					   (unsigned long long)out->tkeys[i], sc);
		}
		return 0;
	}
	if (out->a > n || out->b > n)
		return bad(msg, cap, "reply counts %u and %u for %u keys", out->a, out->b, n);
	if (type == DE_PEER_LOOKUP) {
		out->st = b + 16;
		uint32_t found = 0, created = 0;
		for (uint32_t i = 0; i < n; i++) {
			if (out->st[i] > DE_CREATED)
				return bad(msg, cap, "reply: status %u of key %u is not a status",
					   out->st[i], i);
			found += out->st[i] == DE_FOUND;
			created += out->st[i] == DE_CREATED;
		}
		for (uint64_t i = n; i < (((uint64_t)n + 7) & ~7ull); i++)
			if (b[16 + i])
				return bad(msg, cap, "reply: padding byte %llu is not 0",
					   (unsigned long long)i);
		if (found != out->a || created != out->b)
			return bad(msg, cap, "reply: counts %u found / %u created, its statuses say "
				   "%u / %u", out->a, out->b, found, created);
		out->rows = (const float *)(const void *)(b + 16 + ((n + 7ull) & ~7ull));
	} else if (type != DE_PEER_APPLY && out->b) {
		return bad(msg, cap, "reply: second count %u is not 0", out->b);
	}
	return 0;
}
