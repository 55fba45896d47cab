/*
 * de_peer.h — libdepeer: what one dynembd needs to work with the dynembd of other hosts,
 * with nothing of the daemon in it (the daemon's glue is src/server/peers.c):
 *
 *   members.c  the membership (a static list of name=host:port[*weight]) and the owner of
 *              a key: weighted rendezvous (highest-random-weight) hashing
 *   auth.c     the shared secret (a file) and the mutual HMAC-SHA256 challenge-response
 *              that opens every peer connection (OpenSSL's libcrypto)
 *   io.c       whole-buffer reads and writes on a socket under a deadline
 *   wire.c     the peer frames after authentication (byte layout at the top of wire.c)
 *
 * Errors: 0 or a negative errno; where a msg buffer is taken, it names the problem.
 *
 * Caveats: membership is static (no DNS re-resolution yet); ownership moves when the
 * member list changes, and nothing here moves rows (no rebalancing yet).
 */
#ifndef DE_PEER_H
#define DE_PEER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* ---- membership and ownership (members.c) ---------------------------------------- */

#define DE_PEER_MAX_MEMBERS 64u
#define DE_PEER_NAME_MAX 64u   /* with its NUL: names are 1..63 bytes of [A-Za-z0-9._-] */
#define DE_PEER_HOST_MAX 256u

struct de_peer_member {
	char name[DE_PEER_NAME_MAX];  /* its identity: stable across restarts and addresses */
	char host[DE_PEER_HOST_MAX];  /* a name or a numeric address */
	uint16_t port;
	double weight;                /* > 0, finite; 1 unless given */
	uint64_t name_hash;           /* what the owner hash mixes with the key */
};

struct de_peer_members {
	unsigned n;
	struct de_peer_member m[DE_PEER_MAX_MEMBERS];
};

int de_peer_members_parse(const char *spec, struct de_peer_members *out /* out */, char *msg,
			  size_t msgcap);
int de_peer_members_find(const struct de_peer_members *m, const char *name);
unsigned de_peer_owner(const struct de_peer_members *m, uint64_t key);
void de_peer_owners(const struct de_peer_members *m, const uint64_t *keys, size_t n,
		    uint16_t *owner /* out: n */);

/* ---- the shared secret and the handshake (auth.c) -------------------------------- */

#define DE_PEER_SECRET_MIN 16u
#define DE_PEER_SECRET_MAX 1024u

struct de_peer_secret {
	size_t len;
	unsigned char key[DE_PEER_SECRET_MAX];
};

int de_peer_secret_load(const char *path, struct de_peer_secret *out /* out */, char *msg,
			size_t msgcap);
void de_peer_secret_wipe(struct de_peer_secret *s);
int de_peer_auth(int fd, const struct de_peer_secret *s, bool initiator, const char *self_name,
		 const char *expect_peer, int timeout_ms, char *peer_name /* out */,
		 size_t peer_cap, char *msg, size_t msgcap);

/* ---- socket I/O under a deadline (io.c) ------------------------------------------ */

int de_peer_write_full(int fd, const struct iovec *iov, int iovcnt, int timeout_ms);
int de_peer_read_full(int fd, void *buf, size_t len, int timeout_ms);

/* ---- frames (wire.c: the byte layout) -------------------------------------------- */

#define DE_PEER_MAGIC 0x52504544u   /* "DEPR" */
#define DE_PEER_VERSION 1u
#define DE_PEER_HDR_BYTES 24u
#define DE_PEER_FRAME_MAX (64u << 20) /* payload bytes of one frame */
#define DE_PEER_MSG_MAX 512u          /* an error reply's message */
#define DE_PEER_MAX_KEYS 65536u       /* keys of one batch frame */
#define DE_PEER_OPEN_BYTES 384u       /* name[64] + table config + learning config */
#define DE_PEER_REPLY 0x80u

enum de_peer_type {
	DE_PEER_OPEN = 1, DE_PEER_LOOKUP = 2, DE_PEER_UPDATE = 3, DE_PEER_APPLY = 4,
	DE_PEER_ERASE = 5, DE_PEER_PING = 6, DE_PEER_TOPK = 7,
};
#define DE_PEER_LOOKUP_CREATE 0x1u
#define DE_PEER_APPLY_LR 0x1u
#define DE_PEER_TOPK_COSINE 0x1u
#define DE_PEER_TOPK_MAX_K 65536u
#define DE_PEER_TOPK_MAX_RESULTS (1u << 24) /* nq * k of one TOPK */

struct de_peer_hdr {
	uint32_t magic;
	uint16_t version, type;
	uint64_t req_id;
	uint32_t len;
	int32_t status;
};

/* A parsed OPEN: the name (NUL-padded) and the config bytes (pointing into the payload:
 * struct de_wire_table_config then struct de_wire_learn_config, unchecked here). */
struct de_peer_open {
	char name[64];
	const void *cfg;
	size_t cfg_len;
};

/* A parsed batch request; keys and vals point into the payload (8- and 4-aligned when
 * the payload is 8-aligned). vals: UPDATE's rows or APPLY's gradients (all finite).
 * TOPK: n queries in vals (n * dim, finite), k in step, no keys. */
struct de_peer_batch {
	uint16_t type;
	uint32_t handle, flags, n;
	uint64_t step;
	double lr;
	const uint64_t *keys;
	const float *vals;
};

/* A parsed reply. status < 0: the owner refused, msg is its reason (control characters
 * replaced). Else a, b: the counts (wire.c); LOOKUP: st[n] and rows[n * dim] point
 * into the payload; TOPK: tkeys[n * k] and tscores[n * k]; OPEN: handle, dim. */
struct de_peer_reply {
	int32_t status;
	uint32_t a, b, handle, dim;
	const uint8_t *st;      /* LOOKUP: n statuses */
	const float *rows;
	const uint64_t *tkeys;
	const float *tscores;
	char msg[DE_PEER_MSG_MAX + 1];
};

void de_peer_hdr_init(struct de_peer_hdr *h, uint16_t type, uint64_t req_id, uint32_t len,
		      int32_t status);
/* The header's own rules (magic, version, type, length bound, status sign): 0 or -EPROTO
 * with msg. Before the payload is read. */
int de_peer_hdr_check(const struct de_peer_hdr *h, char *msg, size_t cap);
/* Bytes before the keys of a batch request of type (24; APPLY 32). */
uint64_t de_peer_batch_fixed(uint16_t type);
/* Bytes of a LOOKUP reply's payload for n keys at dim; of a TOPK reply's for n queries
 * and k. */
uint64_t de_peer_topk_reply_bytes(uint32_t n, uint32_t k);
uint64_t de_peer_lookup_reply_bytes(uint32_t n, uint32_t dim);
/* Parsers of a payload of h->len bytes at p (h checked): 0 or -EPROTO with msg.
 * parse_batch takes the dim of the handle the request names (its caller looks it up;
 * an unknown handle is the caller's error). parse_reply checks a reply against the
 * request it answers (type, req_id, n keys at dim; TOPK: n queries, and k in dim). */
int de_peer_parse_open(const struct de_peer_hdr *h, const void *p, struct de_peer_open *out,
		       char *msg, size_t cap);
int de_peer_parse_batch(const struct de_peer_hdr *h, const void *p, uint32_t dim,
			struct de_peer_batch *out, char *msg, size_t cap);
int de_peer_parse_reply(const struct de_peer_hdr *h, const void *p, uint16_t type,
			uint64_t req_id, uint32_t n, uint32_t dim, struct de_peer_reply *out,
			char *msg, size_t cap);

#endif /* DE_PEER_H */
