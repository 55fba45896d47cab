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

/* ---- frames (wire.c) ------------------------------------------------------------- */

#endif /* DE_PEER_H */
