/*
 * auth.c — the shared secret and the mutual handshake that opens every peer connection.
 *
 * Both sides hold the same secret (a file of DE_PEER_SECRET_MIN..MAX bytes, mode 0600 or
 * stricter). Each proves it knows the secret with an HMAC-SHA256 (OpenSSL's libcrypto)
 * over both sides' fresh nonces and names; the secret never goes on the wire, a MAC is
 * compared in constant time (CRYPTO_memcmp), and a recorded handshake replays nowhere
 * (the other side's nonce is new each time). Byte layout, little endian:
 *
 *   HELLO, initiator -> responder, 40 + ni bytes
 *     0  u32 magic  0x41504544 ("DEPA")    4  u16 version 1    6  u16 ni (name bytes)
 *     8  u8 nonce_i[32]                   40  name_i[ni]        (1..63 bytes)
 *   CHALLENGE, responder -> initiator, 72 + nr bytes
 *     0  u32 magic   4  u16 version   6  u16 nr   8  u8 nonce_r[32]   40  u8 mac_r[32]
 *    72  name_r[nr]
 *     mac_r = HMAC(secret, "dynemb peer v1 responder" | nonce_i | nonce_r | L(name_i) |
 *                  L(name_r)), L(s) = u16 length then the bytes
 *   PROOF, initiator -> responder, 40 bytes
 *     0  u32 magic   4  u8 ok (1: mac_r held; 0: refused, mac_i zero)   5  3 zero bytes
 *     8  u8 mac_i[32] = HMAC(secret, "dynemb peer v1 initiator" | nonce_r | nonce_i |
 *                            L(name_r) | L(name_i))
 *   VERDICT, responder -> initiator, 8 bytes
 *     0  u32 magic   4  u8 ok   5  3 zero bytes
 *
 * The two labels differ, so a side's MAC is never the other's: a responder's MAC cannot
 * be reflected as an initiator's. An initiator refuses a nonce_r equal to its nonce_i; a
 * responder refuses a nonce_i equal to one it issued lately (a reflection of its own
 * CHALLENGE), and never issues the same nonce twice (RAND_bytes, checked against the
 * last NONCE_RING it issued). Every length is bounded before it is used; the whole
 * handshake runs under one deadline.
 */
#include "de_peer.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#define AUTH_MAGIC 0x41504544u
#define AUTH_VERSION 1u
#define NONCE 32u
#define MAC 32u
#define NONCE_RING 64u

static const char LABEL_R[] = "dynemb peer v1 responder";
static const char LABEL_I[] = "dynemb peer v1 initiator";

/* The nonces this process issued as a responder, lately (any thread). */
static pthread_mutex_t ring_mu = PTHREAD_MUTEX_INITIALIZER;
static unsigned char ring[NONCE_RING][NONCE];
static unsigned ring_n, ring_at;

__attribute__((format(printf, 4, 5)))
static int fail(int err, char *msg, size_t cap, const char *fmt, ...)
{
	if (msg && cap) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(msg, cap, fmt, ap);
		va_end(ap);
	}
	return err;
}

int de_peer_secret_load(const char *path, struct de_peer_secret *out, char *msg, size_t cap)
{
	memset(out, 0, sizeof *out);
	/* A symbolic link is followed (a Kubernetes Secret volume's files are links); the
	 * checks below are of the file it names (fstat). */
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return fail(-errno, msg, cap, "[peers] secret_file %s: %s", path, strerror(errno));
	struct stat st;
	int err = 0;
	if (fstat(fd, &st))
		err = fail(-errno, msg, cap, "[peers] secret_file %s: %s", path, strerror(errno));
	else if (!S_ISREG(st.st_mode))
		err = fail(-EINVAL, msg, cap, "[peers] secret_file %s is not a regular file", path);
	else if (st.st_mode & 077)
		err = fail(-EPERM, msg, cap, "[peers] secret_file %s has mode %04o: others may read "
			   "it; chmod 600 it", path, (unsigned)(st.st_mode & 07777));
	if (err) {
		close(fd);
		return err;
	}
	unsigned char buf[DE_PEER_SECRET_MAX + 3];
	size_t n = 0;
	for (;;) {
		ssize_t r = read(fd, buf + n, sizeof buf - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			err = fail(-errno, msg, cap, "[peers] secret_file %s: %s", path,
				   strerror(errno));
			break;
		}
		if (r == 0 || (n += (size_t)r) == sizeof buf)
			break;
	}
	close(fd);
	if (!err && n && buf[n - 1] == '\n') /* one trailing newline (echo > file) */
		n -= 1 + (n >= 2 && buf[n - 2] == '\r');
	if (!err && n > DE_PEER_SECRET_MAX)
		err = fail(-E2BIG, msg, cap, "[peers] secret_file %s is longer than %u bytes", path,
			   DE_PEER_SECRET_MAX);
	else if (!err && n < DE_PEER_SECRET_MIN)
		err = fail(-EINVAL, msg, cap, "[peers] secret_file %s holds %zu bytes: a secret is "
			   "at least %u", path, n, DE_PEER_SECRET_MIN);
	if (!err) {
		memcpy(out->key, buf, n);
		out->len = n;
	}
	OPENSSL_cleanse(buf, sizeof buf);
	return err;
}

void de_peer_secret_wipe(struct de_peer_secret *s)
{
	OPENSSL_cleanse(s, sizeof *s);
}

static bool good_name(const char *s, size_t n)
{
	if (n < 1 || n >= DE_PEER_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '.' && s[i] != '_' && s[i] != '-')
			return false;
	return true;
}

/* HMAC(secret, label | a | b | L(n1) | L(n2)) into mac. */
static int mac_of(const struct de_peer_secret *s, const char *label, const unsigned char *a,
		  const unsigned char *b, const char *n1, const char *n2, unsigned char *mac)
{
	unsigned char buf[sizeof LABEL_R + 2 * NONCE + 2 * (2 + DE_PEER_NAME_MAX)];
	size_t at = 0, l1 = strlen(n1), l2 = strlen(n2);
	memcpy(buf, label, strlen(label));
	at += strlen(label);
	memcpy(buf + at, a, NONCE);
	at += NONCE;
	memcpy(buf + at, b, NONCE);
	at += NONCE;
	buf[at++] = (unsigned char)l1;
	buf[at++] = (unsigned char)(l1 >> 8);
	memcpy(buf + at, n1, l1);
	at += l1;
	buf[at++] = (unsigned char)l2;
	buf[at++] = (unsigned char)(l2 >> 8);
	memcpy(buf + at, n2, l2);
	at += l2;
	unsigned int ml = 0;
	if (!HMAC(EVP_sha256(), s->key, (int)s->len, buf, at, mac, &ml) || ml != MAC)
		return -EIO;
	return 0;
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int left(int64_t deadline)
{
	if (deadline < 0)
		return -1;
	int64_t l = deadline - now_ms();
	return l <= 0 ? 0 : (int)l;
}

static void put16(unsigned char *p, uint16_t v) { p[0] = (unsigned char)v; p[1] = (unsigned char)(v >> 8); }
static void put32(unsigned char *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i)); }
static uint16_t get16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t get32(const unsigned char *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }

static int send_buf(int fd, const void *b, size_t n, int64_t deadline)
{
	struct iovec v = { (void *)b, n };
	return de_peer_write_full(fd, &v, 1, left(deadline));
}

/* I/O errors as the handshake reports them. */
static int io_fail(int err, const char *what, char *msg, size_t cap)
{
	if (err == -ETIMEDOUT)
		return fail(err, msg, cap, "peer handshake: no %s within the timeout", what);
	if (err == -ECONNRESET)
		return fail(err, msg, cap, "peer handshake: the peer closed the connection before "
			    "its %s", what);
	return fail(err, msg, cap, "peer handshake: %s: %s", what, strerror(-err));
}

static int fresh_nonce(unsigned char *n, bool remember)
{
	for (int tries = 0; tries < 8; tries++) {
		if (RAND_bytes(n, NONCE) != 1)
			return -EIO;
		if (!remember)
			return 0;
		pthread_mutex_lock(&ring_mu);
		bool seen = false;
		for (unsigned i = 0; i < ring_n && !seen; i++)
			seen = !memcmp(ring[i], n, NONCE);
		if (!seen) {
			memcpy(ring[ring_at], n, NONCE);
			ring_at = (ring_at + 1) % NONCE_RING;
			if (ring_n < NONCE_RING)
				ring_n++;
		}
		pthread_mutex_unlock(&ring_mu);
		if (!seen)
			return 0;
	}
	return -EIO;
}

static bool issued_lately(const unsigned char *n)
{
	pthread_mutex_lock(&ring_mu);
	bool seen = false;
	for (unsigned i = 0; i < ring_n && !seen; i++)
		seen = !memcmp(ring[i], n, NONCE);
	pthread_mutex_unlock(&ring_mu);
	return seen;
}

/* The fixed head of HELLO / CHALLENGE: magic, version, a name length in 1..63. */
static int check_head(const unsigned char *h, const char *what, uint16_t *nl, char *msg,
		      size_t cap)
{
	if (get32(h) != AUTH_MAGIC)
		return fail(-EPROTO, msg, cap, "peer handshake: %s with magic 0x%08x, not a dynemb "
			    "peer", what, get32(h));
	if (get16(h + 4) != AUTH_VERSION)
		return fail(-EPROTO, msg, cap, "peer handshake: %s of version %u, this side speaks %u",
			    what, get16(h + 4), AUTH_VERSION);
	*nl = get16(h + 6);
	if (*nl < 1 || *nl >= DE_PEER_NAME_MAX)
		return fail(-EPROTO, msg, cap, "peer handshake: %s with a %u-byte name (1..%u)",
			    what, *nl, DE_PEER_NAME_MAX - 1);
	return 0;
}

static int initiator(int fd, const struct de_peer_secret *s, const char *self,
		     const char *expect, int64_t dl, char *peer, size_t pcap, char *msg,
		     size_t cap)
{
	size_t sl = strlen(self);
	unsigned char hello[40 + DE_PEER_NAME_MAX], ni[NONCE];
	if (fresh_nonce(ni, false))
		return fail(-EIO, msg, cap, "peer handshake: no random bytes");
	put32(hello, AUTH_MAGIC);
	put16(hello + 4, AUTH_VERSION);
	put16(hello + 6, (uint16_t)sl);
	memcpy(hello + 8, ni, NONCE);
	memcpy(hello + 40, self, sl);
	int err = send_buf(fd, hello, 40 + sl, dl);
	if (err)
		return io_fail(err, "HELLO sent", msg, cap);
	unsigned char ch[72 + DE_PEER_NAME_MAX];
	if ((err = de_peer_read_full(fd, ch, 72, left(dl))))
		return io_fail(err, "CHALLENGE", msg, cap);
	uint16_t nl;
	if ((err = check_head(ch, "CHALLENGE", &nl, msg, cap)))
		return err;
	if ((err = de_peer_read_full(fd, ch + 72, nl, left(dl))))
		return io_fail(err, "CHALLENGE", msg, cap);
	char rname[DE_PEER_NAME_MAX];
	memcpy(rname, ch + 72, nl);
	rname[nl] = 0;
	if (!good_name(rname, nl))
		return fail(-EPROTO, msg, cap, "peer handshake: the responder's name is not a member "
			    "name");
	unsigned char want[MAC], proof[40] = { 0 };
	put32(proof, AUTH_MAGIC);
	int verdict = 0;
	if (!memcmp(ch + 8, ni, NONCE))
		verdict = fail(-EACCES, msg, cap, "peer %s: its nonce is ours (a reflection): "
			       "refused", rname);
	else if (mac_of(s, LABEL_R, ni, ch + 8, self, rname, want))
		verdict = fail(-EIO, msg, cap, "peer handshake: HMAC failed");
	else if (CRYPTO_memcmp(want, ch + 40, MAC))
		verdict = fail(-EACCES, msg, cap, "peer %s: authentication failed (wrong shared "
			       "secret?)", rname);
	else if (expect && strcmp(expect, rname))
		verdict = fail(-EACCES, msg, cap, "peer at this address answered as '%s', not '%s'",
			       rname, expect);
	if (!verdict) {
		proof[4] = 1;
		if (mac_of(s, LABEL_I, ch + 8, ni, rname, self, proof + 8))
			verdict = fail(-EIO, msg, cap, "peer handshake: HMAC failed");
	}
	if (verdict)
		proof[4] = 0, memset(proof + 8, 0, MAC);
	err = send_buf(fd, proof, sizeof proof, dl);
	OPENSSL_cleanse(want, sizeof want);
	if (verdict)
		return verdict;
	if (err)
		return io_fail(err, "PROOF sent", msg, cap);
	unsigned char v[8];
	if ((err = de_peer_read_full(fd, v, sizeof v, left(dl))))
		return io_fail(err, "VERDICT", msg, cap);
	if (get32(v) != AUTH_MAGIC || v[4] > 1 || v[5] || v[6] || v[7])
		return fail(-EPROTO, msg, cap, "peer %s: a malformed VERDICT", rname);
	if (v[4] != 1)
		return fail(-EACCES, msg, cap, "peer %s: authentication failed (wrong shared "
			    "secret?): it refused ours", rname);
	snprintf(peer, pcap, "%s", rname);
	return 0;
}

static int responder(int fd, const struct de_peer_secret *s, const char *self, int64_t dl,
		     char *peer, size_t pcap, char *msg, size_t cap)
{
	unsigned char hello[40 + DE_PEER_NAME_MAX];
	int err = de_peer_read_full(fd, hello, 40, left(dl));
	if (err)
		return io_fail(err, "HELLO", msg, cap);
	uint16_t nl;
	if ((err = check_head(hello, "HELLO", &nl, msg, cap)))
		return err;
	if ((err = de_peer_read_full(fd, hello + 40, nl, left(dl))))
		return io_fail(err, "HELLO", msg, cap);
	char iname[DE_PEER_NAME_MAX];
	memcpy(iname, hello + 40, nl);
	iname[nl] = 0;
	if (!good_name(iname, nl))
		return fail(-EPROTO, msg, cap, "peer handshake: the initiator's name is not a member "
			    "name");
	const unsigned char *ni = hello + 8;
	if (issued_lately(ni))
		return fail(-EACCES, msg, cap, "peer %s: its nonce is one this side issued (a "
			    "reflection): refused", iname);
	size_t sl = strlen(self);
	unsigned char ch[72 + DE_PEER_NAME_MAX], nr[NONCE];
	if (fresh_nonce(nr, true))
		return fail(-EIO, msg, cap, "peer handshake: no random bytes");
	put32(ch, AUTH_MAGIC);
	put16(ch + 4, AUTH_VERSION);
	put16(ch + 6, (uint16_t)sl);
	memcpy(ch + 8, nr, NONCE);
	if (mac_of(s, LABEL_R, ni, nr, iname, self, ch + 40))
		return fail(-EIO, msg, cap, "peer handshake: HMAC failed");
	memcpy(ch + 72, self, sl);
	if ((err = send_buf(fd, ch, 72 + sl, dl)))
		return io_fail(err, "CHALLENGE sent", msg, cap);
	unsigned char proof[40], want[MAC];
	if ((err = de_peer_read_full(fd, proof, sizeof proof, left(dl))))
		return io_fail(err, "PROOF", msg, cap);
	if (get32(proof) != AUTH_MAGIC || proof[4] > 1 || proof[5] || proof[6] || proof[7])
		return fail(-EPROTO, msg, cap, "peer %s: a malformed PROOF", iname);
	if (proof[4] != 1)
		return fail(-EACCES, msg, cap, "peer %s: authentication failed (wrong shared "
			    "secret?): it refused this side's proof, or it expected another member "
			    "than '%s' at this address", iname, self);
	if (mac_of(s, LABEL_I, nr, ni, self, iname, want))
		return fail(-EIO, msg, cap, "peer handshake: HMAC failed");
	bool ok = !CRYPTO_memcmp(want, proof + 8, MAC);
	OPENSSL_cleanse(want, sizeof want);
	unsigned char v[8] = { 0 };
	put32(v, AUTH_MAGIC);
	v[4] = ok;
	err = send_buf(fd, v, sizeof v, dl);
	if (!ok)
		return fail(-EACCES, msg, cap, "peer %s: authentication failed (wrong shared "
			    "secret?)", iname);
	if (err)
		return io_fail(err, "VERDICT sent", msg, cap);
	snprintf(peer, pcap, "%s", iname);
	return 0;
}

int de_peer_auth(int fd, const struct de_peer_secret *s, bool is_initiator, const char *self,
		 const char *expect_peer, int timeout_ms, char *peer_name, size_t peer_cap,
		 char *msg, size_t msgcap)
{
	if (!good_name(self, strlen(self)) || s->len < DE_PEER_SECRET_MIN ||
	    s->len > DE_PEER_SECRET_MAX)
		return fail(-EINVAL, msg, msgcap, "peer handshake: a bad own name or secret");
	int64_t dl = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
	if (peer_name && peer_cap)
		peer_name[0] = 0;
	char dummy[DE_PEER_NAME_MAX];
	if (!peer_name) {
		peer_name = dummy;
		peer_cap = sizeof dummy;
	}
	return is_initiator ? initiator(fd, s, self, expect_peer, dl, peer_name, peer_cap, msg, msgcap)
			    : responder(fd, s, self, dl, peer_name, peer_cap, msg, msgcap);
}
