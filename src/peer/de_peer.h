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
 * Caveats:
 * - Membership is static (no DNS re-resolution yet); ownership moves when the member list
 *   changes, and nothing here moves rows (no rebalancing yet).
 * - Every member must parse the same list (names and weights; addresses may differ) to
 *   agree on owners. With unequal weights the owner goes through libm's log: hosts whose
 *   log differs in the last bit could disagree on a key whose two best scores are that
 *   close (within an ulp: vanishingly rare); equal weights use integers only and
 *   always agree.
 * - The handshake authenticates the connection; it does not encrypt or authenticate the
 *   frames after it (no TLS). Anyone who can read the link sees the rows.
 * - The responder's memory of the nonces it issued (to refuse reflections) is the last
 *   64, per process, shared by all threads (a mutex).
 * - The I/O calls take stream sockets only (recv/sendmsg), at most 16 iovecs.
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

/* Parses spec: entries `name=host:port` or `name=host:port*weight` separated by commas
 * and/or white space; host a DNS name, an IPv4 address or [IPv6] (stored without the
 * brackets); weight a finite number in (0, 1e6], 1 when absent. 0, or -EINVAL (empty
 * list; a name not 1..63 bytes of [A-Za-z0-9._-], twice, or hashing like another; no
 * '='; no, or a bad, port 1..65535; host empty or too long; bad weight) or -E2BIG (more
 * than DE_PEER_MAX_MEMBERS) with msg naming the entry. *out is written only on success,
 * in the list's order. spec NULL is the empty list. */
int de_peer_members_parse(const char *spec, struct de_peer_members *out /* out */, char *msg,
			  size_t msgcap);
/* The index of the member named name, or -ENOENT. */
int de_peer_members_find(const struct de_peer_members *m, const char *name);
/* The index in m of key's owner (m->n >= 1): weighted rendezvous hashing (members.c
 * has the formula). Depends only on key and the set of (name, weight): not on the
 * list's order nor on the addresses. Pure, thread-safe. */
unsigned de_peer_owner(const struct de_peer_members *m, uint64_t key);
/* de_peer_owner of each of keys[0..n) into owner[0..n) (the same answers; the path is
 * chosen once per call). */
void de_peer_owners(const struct de_peer_members *m, const uint64_t *keys, size_t n,
		    uint16_t *owner /* out: n */);

/* ---- the shared secret and the handshake (auth.c) -------------------------------- */

#define DE_PEER_SECRET_MIN 16u
#define DE_PEER_SECRET_MAX 1024u

struct de_peer_secret {
	size_t len;
	unsigned char key[DE_PEER_SECRET_MAX];
};

/* Reads the secret file at path (a symbolic link is followed; its target is checked):
 * its bytes, less one trailing "\n" or "\r\n", into *out. 0, or with msg naming path:
 * -ENOENT (or another open error), -EINVAL (not a regular file; under
 * DE_PEER_SECRET_MIN bytes), -EPERM (group or others have any access: the mode and
 * "chmod 600" said), -E2BIG (over DE_PEER_SECRET_MAX). *out is zeroed first; the
 * caller wipes it (de_peer_secret_wipe) when done. */
int de_peer_secret_load(const char *path, struct de_peer_secret *out /* out */, char *msg,
			size_t msgcap);
/* Zeroes *s in a way the compiler keeps (OPENSSL_cleanse). */
void de_peer_secret_wipe(struct de_peer_secret *s);
/* The mutual handshake on a connected stream socket fd (byte layout at the top of
 * auth.c), as the initiator (the side that connected) or the responder, all of it
 * within timeout_ms (< 0: no deadline). Both sides succeed or both fail. 0: the peer
 * proved it holds *s, and its name is in peer_name (may be NULL). Else: -EACCES (a wrong
 * secret: "peer X: authentication failed (wrong shared secret?)" on both sides; the
 * initiator's expect_peer, when not NULL, is not the responder's name: both named; a
 * reflected nonce), -EPROTO (not this protocol: garbage, a wrong magic or version, a
 * bad name length), -ECONNRESET (the peer closed), -ETIMEDOUT, -EINVAL (self_name not a
 * member name, s->len out of MIN..MAX), -EIO (libcrypto failed); msg says which. The fd
 * is left open either way (the caller closes it after a failure); it may be blocking or
 * not. */
int de_peer_auth(int fd, const struct de_peer_secret *s, bool initiator, const char *self_name,
		 const char *expect_peer, int timeout_ms, char *peer_name /* out */,
		 size_t peer_cap, char *msg, size_t msgcap);

/* ---- socket I/O under a deadline (io.c) ------------------------------------------ */

/* Writes all of iov[0..iovcnt) (iovcnt 0..16, else -EINVAL) within timeout_ms for the
 * whole call (< 0: no deadline; 0: what the socket takes at once), on a blocking or
 * non-blocking stream socket; partial writes and EINTR are retried, SIGPIPE is never
 * raised. 0, -ETIMEDOUT, -ECONNRESET (the peer is gone), or another -errno. After a
 * failure an unknown prefix was sent: the connection is unusable. */
int de_peer_write_full(int fd, const struct iovec *iov, int iovcnt, int timeout_ms);
/* Reads exactly len bytes into buf within timeout_ms for the whole call (as above).
 * 0, -ECONNRESET (EOF before len bytes), -ETIMEDOUT, or another -errno; after a failure
 * buf holds an unknown prefix. */
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
	DE_PEER_ERASE = 5, DE_PEER_PING = 6, DE_PEER_TOPK = 7, DE_PEER_SAMPLE = 8,
};
#define DE_PEER_SAMPLE_UNIFORM 0u  /* SAMPLE's kind (the samplers' wire numbers) */
#define DE_PEER_SAMPLE_UNIGRAM 2u
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
 * TOPK: n queries in vals (n * dim, finite), k in step, no keys. SAMPLE: the kind in
 * flags, the seed in step, n draws, the power in lr, npos positives in keys (NULL when
 * none). */
struct de_peer_batch {
	uint16_t type;
	uint32_t handle, flags, n, npos;
	uint64_t step;
	double lr;
	const uint64_t *keys;
	const float *vals;
};

/* A parsed reply. status < 0: the owner refused, msg is its reason (control characters
 * replaced). Else a, b: the counts (wire.c); LOOKUP: st[n] and rows[n * dim] point
 * into the payload; TOPK: tkeys[n * k] and tscores[n * k]; OPEN: handle, dim; SAMPLE:
 * population, weight, the draws in tkeys[n] with their probabilities in tscores[n], and
 * pprob[npos]. */
struct de_peer_reply {
	int32_t status;
	uint32_t a, b, handle, dim;
	uint64_t population;
	double weight;
	const float *pprob;
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
/* Bytes of a SAMPLE request's payload is 32 + 8 * npos; of its reply: */
uint64_t de_peer_sample_reply_bytes(uint32_t n, uint32_t npos);
/* Parsers of a payload of h->len bytes at p (h checked): 0 or -EPROTO with msg.
 * parse_batch takes the dim of the handle the request names (its caller looks it up;
 * an unknown handle is the caller's error). parse_reply checks a reply against the
 * request it answers (type, req_id, n keys at dim; TOPK: n queries, and k in dim;
 * SAMPLE: n draws, and npos in dim). */
int de_peer_parse_open(const struct de_peer_hdr *h, const void *p, struct de_peer_open *out,
		       char *msg, size_t cap);
int de_peer_parse_batch(const struct de_peer_hdr *h, const void *p, uint32_t dim,
			struct de_peer_batch *out, char *msg, size_t cap);
int de_peer_parse_reply(const struct de_peer_hdr *h, const void *p, uint16_t type,
			uint64_t req_id, uint32_t n, uint32_t dim, struct de_peer_reply *out,
			char *msg, size_t cap);

#endif /* DE_PEER_H */
