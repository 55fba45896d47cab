/*
 * test_peer_auth.c — libdepeer's shared secret, handshake and deadline I/O (src/peer/
 * auth.c, io.c), no daemon. The handshake runs over socketpair(AF_UNIX, SOCK_STREAM)
 * with the two sides in two threads; hostile peers are scripted here from the byte
 * layout at the top of auth.c, with a second HMAC of the spec (ref_mac, OpenSSL's
 * one-shot HMAC): a scripted initiator that knows the secret is accepted (the layout is
 * what the comment says), a replayed PROOF, a reflected nonce or MAC, garbage, a wrong
 * magic or version and a huge name length are refused. Timing bounds are generous (a
 * 200 ms timeout must end between 150 ms and 5 s).
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "de_peer.h"

#define MAGIC 0x41504544u /* "DEPA" */
#define T_MS 5000          /* a handshake that should finish: generous */

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct de_peer_secret secret(const char *s)
{
	struct de_peer_secret k = { .len = strlen(s) };
	memcpy(k.key, s, k.len);
	return k;
}

static void pair(int sv[2])
{
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
}

/* ---- one side of a handshake in a thread ------------------------------------------- */

struct side {
	int fd;
	struct de_peer_secret sec;
	bool init;
	const char *self, *expect;
	int timeout_ms;
	int rc;
	int64_t took_ms;
	char peer[DE_PEER_NAME_MAX];
	char msg[256];
};

static void *side_run(void *arg)
{
	struct side *s = arg;
	int64_t t0 = now_ms();
	s->rc = de_peer_auth(s->fd, &s->sec, s->init, s->self, s->expect, s->timeout_ms, s->peer,
			     sizeof s->peer, s->msg, sizeof s->msg);
	s->took_ms = now_ms() - t0;
	return NULL;
}

static void start(pthread_t *t, struct side *s)
{
	cr_assert_eq(pthread_create(t, NULL, side_run, s), 0);
}

/* Both sides, real, on a fresh socketpair. */
static void handshake(struct side *i, struct side *r)
{
	int sv[2];
	pair(sv);
	i->fd = sv[0], r->fd = sv[1];
	i->init = true, r->init = false;
	pthread_t ti, tr;
	start(&ti, i);
	start(&tr, r);
	pthread_join(ti, NULL);
	pthread_join(tr, NULL);
	close(sv[0]);
	close(sv[1]);
}

/* ---- the spec, written again: the scripted peers' messages ------------------------- */

static void put16(unsigned char *p, unsigned v) { p[0] = (unsigned char)v; p[1] = (unsigned char)(v >> 8); }
static void put32(unsigned char *p, uint32_t v) { put16(p, v & 0xffff); put16(p + 2, v >> 16); }

/* HMAC-SHA256(secret, label | a[32] | b[32] | u16 len n1 | n1 | u16 len n2 | n2). */
static void ref_mac(const char *sec, const char *label, const unsigned char *a,
		    const unsigned char *b, const char *n1, const char *n2, unsigned char *mac)
{
	unsigned char m[512];
	size_t at = 0;
	memcpy(m + at, label, strlen(label)), at += strlen(label);
	memcpy(m + at, a, 32), at += 32;
	memcpy(m + at, b, 32), at += 32;
	put16(m + at, (unsigned)strlen(n1)), at += 2;
	memcpy(m + at, n1, strlen(n1)), at += strlen(n1);
	put16(m + at, (unsigned)strlen(n2)), at += 2;
	memcpy(m + at, n2, strlen(n2)), at += strlen(n2);
	unsigned ml = 0;
	cr_assert_not_null(HMAC(EVP_sha256(), sec, (int)strlen(sec), m, at, mac, &ml));
	cr_assert_eq(ml, 32u);
}

static void put_all(int fd, const void *p, size_t n)
{
	struct iovec v = { (void *)p, n };
	cr_assert_eq(de_peer_write_full(fd, &v, 1, T_MS), 0);
}

static void get_all(int fd, void *p, size_t n)
{
	cr_assert_eq(de_peer_read_full(fd, p, n, T_MS), 0);
}

static size_t hello(unsigned char *b, const unsigned char *nonce, const char *name)
{
	put32(b, MAGIC);
	put16(b + 4, 1);
	put16(b + 6, (unsigned)strlen(name));
	memcpy(b + 8, nonce, 32);
	memcpy(b + 40, name, strlen(name));
	return 40 + strlen(name);
}

/* A CHALLENGE read by the scripted initiator: nonce_r, mac_r, the responder's name. */
struct challenge {
	unsigned char nr[32], mac[32];
	char name[64];
};

static void read_challenge(int fd, struct challenge *c)
{
	unsigned char h[72];
	get_all(fd, h, 72);
	cr_assert_eq(h[0] | h[1] << 8 | h[2] << 16 | (uint32_t)h[3] << 24, MAGIC);
	cr_assert_eq(h[4] | h[5] << 8, 1);
	unsigned nl = h[6] | h[7] << 8;
	cr_assert(nl >= 1 && nl <= 63);
	memcpy(c->nr, h + 8, 32);
	memcpy(c->mac, h + 40, 32);
	get_all(fd, c->name, nl);
	c->name[nl] = 0;
}

static void proof(unsigned char p[40], uint8_t ok, const unsigned char *mac)
{
	memset(p, 0, 40);
	put32(p, MAGIC);
	p[4] = ok;
	if (mac)
		memcpy(p + 8, mac, 32);
}

/* The real responder "r" (secret sec) in a thread on sv[1]; the test drives sv[0]. */
static void responder_on(struct side *r, pthread_t *t, int sv[2], const char *sec)
{
	pair(sv);
	*r = (struct side){ .fd = sv[1], .sec = secret(sec), .self = "r", .timeout_ms = T_MS };
	start(t, r);
}

static void initiator_on(struct side *i, pthread_t *t, int sv[2], const char *sec,
			 const char *expect)
{
	pair(sv);
	*i = (struct side){ .fd = sv[1], .sec = secret(sec), .init = true, .self = "i",
			    .expect = expect, .timeout_ms = T_MS };
	start(t, i);
}

static const char *SEC = "0123456789abcdef-the-shared-one";

/* ---- the handshake ----------------------------------------------------------------- */

Test(auth, right_secret_both_succeed_and_learn_the_names)
{
	struct side i = { .sec = secret(SEC), .self = "node-a", .expect = "node-b", .timeout_ms = T_MS };
	struct side r = { .sec = secret(SEC), .self = "node-b", .timeout_ms = T_MS };
	handshake(&i, &r);
	cr_assert_eq(i.rc, 0, "%s", i.msg);
	cr_assert_eq(r.rc, 0, "%s", r.msg);
	cr_assert_str_eq(i.peer, "node-b");
	cr_assert_str_eq(r.peer, "node-a");
	/* expect_peer NULL: any authenticated name */
	i.expect = NULL;
	handshake(&i, &r);
	cr_assert_eq(i.rc, 0, "%s", i.msg);
	cr_assert_eq(r.rc, 0, "%s", r.msg);
	cr_assert_str_eq(i.peer, "node-b");
}

Test(auth, wrong_secret_both_refuse)
{
	struct side i = { .sec = secret(SEC), .self = "node-a", .timeout_ms = T_MS };
	struct side r = { .sec = secret("0123456789abcdef-another-one"), .self = "node-b",
			  .timeout_ms = T_MS };
	handshake(&i, &r);
	cr_assert_eq(i.rc, -EACCES, "%d %s", i.rc, i.msg);
	cr_assert_eq(r.rc, -EACCES, "%d %s", r.rc, r.msg);
	cr_assert(strstr(i.msg, "peer node-b: authentication failed (wrong shared secret?)"),
		  "%s", i.msg);
	cr_assert(strstr(r.msg, "peer node-a: authentication failed (wrong shared secret?)"),
		  "%s", r.msg);
	cr_assert_str_eq(i.peer, "");
	cr_assert_str_eq(r.peer, "");
}

Test(auth, expected_peer_mismatch_refused)
{
	struct side i = { .sec = secret(SEC), .self = "node-a", .expect = "node-c", .timeout_ms = T_MS };
	struct side r = { .sec = secret(SEC), .self = "node-b", .timeout_ms = T_MS };
	handshake(&i, &r);
	cr_assert_eq(i.rc, -EACCES, "%d %s", i.rc, i.msg);
	cr_assert(strstr(i.msg, "'node-b'") && strstr(i.msg, "'node-c'"), "%s", i.msg);
	cr_assert_eq(r.rc, -EACCES, "%d %s", r.rc, r.msg);
	cr_assert(strstr(r.msg, "peer node-a: authentication failed") &&
		  strstr(r.msg, "another member than 'node-b'"), "%s", r.msg);
}

Test(auth, bad_arguments)
{
	int sv[2];
	pair(sv);
	char msg[256], peer[64];
	struct de_peer_secret s = secret(SEC), shortk = secret("too-short");
	cr_assert_eq(de_peer_auth(sv[0], &s, true, "bad name", NULL, 100, peer, sizeof peer, msg,
				  sizeof msg), -EINVAL);
	cr_assert(strstr(msg, "own name"), "%s", msg);
	cr_assert_eq(de_peer_auth(sv[0], &s, true, "", NULL, 100, peer, sizeof peer, msg,
				  sizeof msg), -EINVAL);
	cr_assert_eq(de_peer_auth(sv[0], &shortk, true, "a", NULL, 100, peer, sizeof peer, msg,
				  sizeof msg), -EINVAL);
	cr_assert(strstr(msg, "secret"), "%s", msg);
	s.len = DE_PEER_SECRET_MAX + 1;
	cr_assert_eq(de_peer_auth(sv[0], &s, true, "a", NULL, 100, peer, sizeof peer, msg,
				  sizeof msg), -EINVAL);
	close(sv[0]);
	close(sv[1]);
}

Test(auth, silent_peer_times_out_within_the_deadline)
{
	/* a responder whose initiator sends nothing, and an initiator whose responder reads
	 * HELLO and answers nothing */
	for (int as_init = 0; as_init < 2; as_init++) {
		int sv[2];
		pair(sv);
		struct side s = { .fd = sv[1], .sec = secret(SEC), .init = as_init, .self = "x",
				  .timeout_ms = 200 };
		pthread_t t;
		start(&t, &s);
		pthread_join(t, NULL);
		cr_assert_eq(s.rc, -ETIMEDOUT, "init %d: %d %s", as_init, s.rc, s.msg);
		cr_assert(s.took_ms >= 150 && s.took_ms <= 5000, "took %ld ms", (long)s.took_ms);
		cr_assert(strstr(s.msg, "within the timeout"), "%s", s.msg);
		close(sv[0]);
		close(sv[1]);
	}
}

Test(auth, peer_closing_midway_is_a_reset)
{
	struct side r;
	pthread_t t;
	int sv[2];
	responder_on(&r, &t, sv, SEC);
	unsigned char h[128], n[32] = { 7 };
	put_all(sv[0], h, hello(h, n, "i") - 3); /* a cut HELLO, then gone */
	close(sv[0]);
	pthread_join(t, NULL);
	cr_assert_eq(r.rc, -ECONNRESET, "%d %s", r.rc, r.msg);
	cr_assert(strstr(r.msg, "closed"), "%s", r.msg);
	close(sv[1]);

	struct side i;
	initiator_on(&i, &t, sv, SEC, NULL);
	get_all(sv[0], h, 41);
	close(sv[0]);
	pthread_join(t, NULL);
	cr_assert_eq(i.rc, -ECONNRESET, "%d %s", i.rc, i.msg);
	close(sv[1]);
}

/* A responder fed this first message returns -EPROTO with want in its msg. */
static void responder_refuses(const unsigned char *b, size_t n, const char *want)
{
	struct side r;
	pthread_t t;
	int sv[2];
	responder_on(&r, &t, sv, SEC);
	put_all(sv[0], b, n);
	pthread_join(t, NULL);
	cr_assert_eq(r.rc, -EPROTO, "%d %s", r.rc, r.msg);
	cr_assert(strstr(r.msg, want), "'%s' lacks '%s'", r.msg, want);
	cr_assert_str_eq(r.peer, "");
	close(sv[0]);
	close(sv[1]);
}

Test(auth, hostile_hello_refused)
{
	unsigned char b[256], n[32] = { 1, 2, 3 };
	for (size_t k = 0; k < sizeof b; k++)
		b[k] = (unsigned char)(k * 37 + 11); /* garbage */
	responder_refuses(b, 64, "not a dynemb peer");
	memcpy(b, "GET / HTTP/1.1\r\nHost: x\r\n\r\n0123456789abcdef", 42);
	responder_refuses(b, 42, "not a dynemb peer");
	size_t l = hello(b, n, "i");
	b[0] ^= 1; /* wrong magic */
	responder_refuses(b, l, "magic");
	l = hello(b, n, "i");
	put16(b + 4, 2); /* a version this side does not speak */
	responder_refuses(b, l, "version 2");
	hello(b, n, "i");
	put16(b + 6, 0xffff); /* a huge name length: refused before any read of it */
	responder_refuses(b, 40, "65535-byte name");
	put16(b + 6, 64);
	responder_refuses(b, 40, "64-byte name");
	put16(b + 6, 0);
	responder_refuses(b, 40, "0-byte name");
	l = hello(b, n, "bad/name");
	responder_refuses(b, l, "not a member name");
}

Test(auth, hostile_challenge_refused)
{
	/* the scripted responder answers a real initiator's HELLO with these */
	for (int c = 0; c < 4; c++) {
		struct side i;
		pthread_t t;
		int sv[2];
		initiator_on(&i, &t, sv, SEC, NULL);
		unsigned char h[128], ch[200] = { 0 };
		get_all(sv[0], h, 41);
		put32(ch, MAGIC);
		put16(ch + 4, 1);
		put16(ch + 6, 1);
		ch[72] = 'r';
		const char *want = NULL;
		if (c == 0)
			put32(ch, 0x12345678), want = "magic";
		else if (c == 1)
			put16(ch + 4, 9), want = "version 9";
		else if (c == 2)
			put16(ch + 6, 0xffff), want = "65535-byte name";
		else
			ch[72] = ' ', want = "not a member name";
		put_all(sv[0], ch, 73);
		pthread_join(t, NULL);
		cr_assert_eq(i.rc, -EPROTO, "case %d: %d %s", c, i.rc, i.msg);
		cr_assert(strstr(i.msg, want), "case %d: '%s' lacks '%s'", c, i.msg, want);
		close(sv[0]);
		close(sv[1]);
	}
}

Test(auth, scripted_initiator_from_the_spec_is_accepted)
{
	struct side r;
	pthread_t t;
	int sv[2];
	responder_on(&r, &t, sv, SEC);
	unsigned char h[128], ni[32], p[40], mac[32], v[8];
	for (int k = 0; k < 32; k++)
		ni[k] = (unsigned char)(k + 100);
	put_all(sv[0], h, hello(h, ni, "scripted"));
	struct challenge c;
	read_challenge(sv[0], &c);
	cr_assert_str_eq(c.name, "r");
	ref_mac(SEC, "dynemb peer v1 responder", ni, c.nr, "scripted", "r", mac);
	cr_assert_eq(memcmp(mac, c.mac, 32), 0, "mac_r is not the spec's");
	ref_mac(SEC, "dynemb peer v1 initiator", c.nr, ni, "r", "scripted", mac);
	proof(p, 1, mac);
	put_all(sv[0], p, 40);
	get_all(sv[0], v, 8);
	pthread_join(t, NULL);
	cr_assert_eq(r.rc, 0, "%s", r.msg);
	cr_assert_str_eq(r.peer, "scripted");
	const unsigned char ok[8] = { 0x44, 0x45, 0x50, 0x41, 1, 0, 0, 0 };
	cr_assert_eq(memcmp(v, ok, 8), 0, "VERDICT");
	close(sv[0]);
	close(sv[1]);
}

Test(auth, replayed_transcript_refused)
{
	/* record a good session's HELLO and PROOF, then replay both to a new responder */
	unsigned char h[128], ni[32] = { 9, 9, 9 }, p[40], mac[32], v[8];
	size_t hl = hello(h, ni, "victim");
	struct side r;
	pthread_t t;
	int sv[2];
	responder_on(&r, &t, sv, SEC);
	put_all(sv[0], h, hl);
	struct challenge c;
	read_challenge(sv[0], &c);
	ref_mac(SEC, "dynemb peer v1 initiator", c.nr, ni, "r", "victim", mac);
	proof(p, 1, mac);
	put_all(sv[0], p, 40);
	get_all(sv[0], v, 8);
	pthread_join(t, NULL);
	cr_assert_eq(r.rc, 0, "%s", r.msg);
	close(sv[0]);
	close(sv[1]);

	responder_on(&r, &t, sv, SEC);
	put_all(sv[0], h, hl);
	struct challenge c2;
	read_challenge(sv[0], &c2);
	cr_assert_neq(memcmp(c.nr, c2.nr, 32), 0, "a responder issued a nonce twice");
	put_all(sv[0], p, 40); /* the recorded PROOF */
	get_all(sv[0], v, 8);
	pthread_join(t, NULL);
	cr_assert_eq(v[4], 0, "the replay got an ok VERDICT");
	cr_assert_eq(r.rc, -EACCES, "%d %s", r.rc, r.msg);
	cr_assert(strstr(r.msg, "authentication failed"), "%s", r.msg);
	cr_assert_str_eq(r.peer, "");
	close(sv[0]);
	close(sv[1]);
}

Test(auth, reflections_refused)
{
	/* 1: an attacker without the secret echoes the responder's own MAC as its PROOF */
	unsigned char h[128], ni[32] = { 5 }, p[40], v[8];
	struct side r;
	pthread_t t;
	int sv[2];
	responder_on(&r, &t, sv, SEC);
	put_all(sv[0], h, hello(h, ni, "r")); /* and its own name, so the names agree */
	struct challenge c;
	read_challenge(sv[0], &c);
	proof(p, 1, c.mac);
	put_all(sv[0], p, 40);
	get_all(sv[0], v, 8);
	pthread_join(t, NULL);
	cr_assert_eq(v[4], 0);
	cr_assert_eq(r.rc, -EACCES, "%d %s", r.rc, r.msg);
	close(sv[0]);
	close(sv[1]);

	/* 2: the responder's nonce sent back to it as a nonce_i (to get it to compute the
	 * MAC an initiator would need): refused before any MAC is made */
	responder_on(&r, &t, sv, SEC);
	put_all(sv[0], h, hello(h, c.nr, "mallory"));
	pthread_join(t, NULL);
	cr_assert_eq(r.rc, -EACCES, "%d %s", r.rc, r.msg);
	cr_assert(strstr(r.msg, "reflection"), "%s", r.msg);
	close(sv[0]);
	close(sv[1]);

	/* 3: a responder that echoes the initiator's nonce (and its MAC slot) back */
	struct side i;
	initiator_on(&i, &t, sv, SEC, NULL);
	unsigned char hi[41], ch[73] = { 0 };
	get_all(sv[0], hi, 41);
	put32(ch, MAGIC);
	put16(ch + 4, 1);
	put16(ch + 6, 1);
	memcpy(ch + 8, hi + 8, 32);
	memcpy(ch + 40, hi + 8, 32);
	ch[72] = 'i';
	put_all(sv[0], ch, 73);
	get_all(sv[0], p, 40);
	pthread_join(t, NULL);
	cr_assert_eq(i.rc, -EACCES, "%d %s", i.rc, i.msg);
	cr_assert(strstr(i.msg, "reflection"), "%s", i.msg);
	cr_assert_eq(p[4], 0, "a refused PROOF says so");
	for (int k = 8; k < 40; k++)
		cr_assert_eq(p[k], 0, "a refused PROOF carries no MAC");
	close(sv[0]);
	close(sv[1]);
}

Test(auth, responders_never_repeat_a_nonce)
{
	unsigned char seen[200][32];
	for (int k = 0; k < 200; k++) {
		struct side r;
		pthread_t t;
		int sv[2];
		responder_on(&r, &t, sv, SEC);
		unsigned char h[128], ni[32] = { (unsigned char)k, 1 };
		put_all(sv[0], h, hello(h, ni, "i"));
		struct challenge c;
		read_challenge(sv[0], &c);
		memcpy(seen[k], c.nr, 32);
		close(sv[0]);
		pthread_join(t, NULL);
		cr_assert_eq(r.rc, -ECONNRESET, "%d %s", r.rc, r.msg);
		close(sv[1]);
		for (int j = 0; j < k; j++)
			cr_assert_neq(memcmp(seen[j], seen[k], 32), 0, "nonce %d = nonce %d", k, j);
	}
}

/* ---- the secret file --------------------------------------------------------------- */

static char dir[64];

static void mkdir_tmp(void)
{
	strcpy(dir, "/tmp/depeer-secret.XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
}

static void rm_tmp(void)
{
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (dir[0] && system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
}

/* A file name in dir holding n bytes of b, with this mode; its path in path. */
static void file_of(char *path, const char *name, const void *b, size_t n, mode_t mode)
{
	snprintf(path, 128, "%s/%s", dir, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	cr_assert_geq(fd, 0, "%s", path);
	cr_assert_eq(write(fd, b, n), (ssize_t)n);
	close(fd);
	cr_assert_eq(chmod(path, mode), 0);
}

static void load_bad(const char *path, int err, const char *want1, const char *want2)
{
	struct de_peer_secret s;
	char msg[512] = "";
	int got = de_peer_secret_load(path, &s, msg, sizeof msg);
	cr_assert_eq(got, err, "%s: got %d (%s), want %d", path, got, msg, err);
	cr_assert(strstr(msg, path), "'%s' does not name the path", msg);
	cr_assert(!want1 || strstr(msg, want1), "'%s' lacks '%s'", msg, want1);
	cr_assert(!want2 || strstr(msg, want2), "'%s' lacks '%s'", msg, want2);
	cr_assert_eq(s.len, 0u);
}

static size_t load_ok(const char *path, struct de_peer_secret *s)
{
	char msg[512] = "";
	int got = de_peer_secret_load(path, s, msg, sizeof msg);
	cr_assert_eq(got, 0, "%s: %d %s", path, got, msg);
	return s->len;
}

Test(secret, refusals_name_the_path_and_the_problem, .init = mkdir_tmp, .fini = rm_tmp)
{
	char path[128], big[DE_PEER_SECRET_MAX + 8];
	memset(big, 's', sizeof big);
	file_of(path, "open", big, 32, 0644);
	load_bad(path, -EPERM, "0644", "chmod 600");
	file_of(path, "group", big, 32, 0640);
	load_bad(path, -EPERM, "0640", "chmod 600");
	file_of(path, "other", big, 32, 0604);
	load_bad(path, -EPERM, "0604", NULL);
	file_of(path, "short", big, DE_PEER_SECRET_MIN - 1, 0600);
	load_bad(path, -EINVAL, "15 bytes", "at least 16");
	memcpy(big + DE_PEER_SECRET_MIN - 1, "\n", 1); /* 15 + a newline: still short */
	file_of(path, "short-nl", big, DE_PEER_SECRET_MIN, 0600);
	load_bad(path, -EINVAL, "15 bytes", NULL);
	memcpy(big + DE_PEER_SECRET_MIN - 2, "\r\n", 2);
	file_of(path, "short-crlf", big, DE_PEER_SECRET_MIN, 0600);
	load_bad(path, -EINVAL, "14 bytes", NULL);
	file_of(path, "empty", big, 0, 0600);
	load_bad(path, -EINVAL, "0 bytes", NULL);
	memset(big, 's', sizeof big);
	file_of(path, "long", big, DE_PEER_SECRET_MAX + 1, 0600);
	load_bad(path, -E2BIG, "longer than 1024", NULL);
	file_of(path, "longer", big, sizeof big, 0400);
	load_bad(path, -E2BIG, "longer than 1024", NULL);
	snprintf(path, sizeof path, "%s/missing", dir);
	load_bad(path, -ENOENT, "No such file", NULL);
	snprintf(path, sizeof path, "%s/adir", dir);
	cr_assert_eq(mkdir(path, 0700), 0);
	load_bad(path, -EINVAL, "not a regular file", NULL);
}

Test(secret, good_files_and_one_newline_stripped, .init = mkdir_tmp, .fini = rm_tmp)
{
	char path[128], link[160];
	struct de_peer_secret s;
	const char *k = "0123456789abcdef";
	file_of(path, "exact", k, 16, 0600);
	cr_assert_eq(load_ok(path, &s), 16u);
	cr_assert_eq(memcmp(s.key, k, 16), 0);
	file_of(path, "nl", "0123456789abcdef\n", 17, 0400);
	cr_assert_eq(load_ok(path, &s), 16u);
	cr_assert_eq(memcmp(s.key, k, 16), 0);
	file_of(path, "crlf", "0123456789abcdef\r\n", 18, 0600);
	cr_assert_eq(load_ok(path, &s), 16u);
	file_of(path, "two-nl", "0123456789abcdef\n\n", 18, 0600);
	cr_assert_eq(load_ok(path, &s), 17u, "only one newline is stripped");
	cr_assert_eq(s.key[16], '\n');
	file_of(path, "cr", "0123456789abcdef\r", 17, 0600);
	cr_assert_eq(load_ok(path, &s), 17u, "a lone CR is part of the secret");
	char big[DE_PEER_SECRET_MAX + 2];
	memset(big, 0xa5, sizeof big); /* binary bytes are fine */
	big[DE_PEER_SECRET_MAX] = '\r', big[DE_PEER_SECRET_MAX + 1] = '\n';
	file_of(path, "max", big, sizeof big, 0600);
	cr_assert_eq(load_ok(path, &s), DE_PEER_SECRET_MAX);
	cr_assert_eq(memcmp(s.key, big, DE_PEER_SECRET_MAX), 0);
	/* a symbolic link to a good file (a Kubernetes Secret volume is links) */
	snprintf(link, sizeof link, "%s/link", dir);
	cr_assert_eq(symlink(path, link), 0);
	cr_assert_eq(load_ok(link, &s), DE_PEER_SECRET_MAX);
	de_peer_secret_wipe(&s);
	cr_assert_eq(s.len, 0u);
	for (size_t j = 0; j < sizeof s.key; j++)
		cr_assert_eq(s.key[j], 0);
}

/* ---- deadline I/O ------------------------------------------------------------------ */

#define BIG (4u << 20)

struct slow {
	int fd;
	unsigned char *buf;
	size_t len, got;
	int delay_every; /* sleep 1 ms every this many reads */
};

/* A reader that takes odd-sized pieces, sleeping now and then, until EOF. */
static void *slow_reader(void *arg)
{
	struct slow *s = arg;
	size_t piece = 1;
	for (int k = 0;; k++) {
		ssize_t r = recv(s->fd, s->buf + s->got, piece < s->len - s->got ? piece : s->len - s->got + 1, 0);
		if (r <= 0)
			break;
		s->got += (size_t)r;
		piece = piece * 7 % 65521 + 1;
		if (k % s->delay_every == 0)
			usleep(1000);
	}
	return NULL;
}

static void fill(unsigned char *b, size_t n, unsigned seed)
{
	for (size_t j = 0; j < n; j++)
		b[j] = (unsigned char)((j * 2654435761u) >> 13 ^ seed);
}

Test(io, partial_writes_to_a_slow_reader)
{
	for (int nonblock = 0; nonblock < 2; nonblock++) {
		int sv[2];
		pair(sv);
		int small = 4096;
		setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
		setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
		if (nonblock)
			fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
		unsigned char *src = malloc(BIG), *dst = malloc(BIG + 1);
		cr_assert(src && dst);
		fill(src, BIG, 3);
		struct slow s = { .fd = sv[1], .buf = dst, .len = BIG, .delay_every = 64 };
		pthread_t t;
		cr_assert_eq(pthread_create(&t, NULL, slow_reader, &s), 0);
		/* uneven pieces, one empty */
		struct iovec v[5] = { { src, 1 }, { src + 1, 0 }, { src + 1, 100000 },
				      { src + 100001, 3 }, { src + 100004, BIG - 100004 } };
		cr_assert_eq(de_peer_write_full(sv[0], v, 5, 60000), 0);
		shutdown(sv[0], SHUT_WR);
		pthread_join(t, NULL);
		cr_assert_eq(s.got, (size_t)BIG, "nonblock %d: got %zu", nonblock, s.got);
		cr_assert_eq(memcmp(src, dst, BIG), 0);
		free(src);
		free(dst);
		close(sv[0]);
		close(sv[1]);
	}
}

struct dribble {
	int fd;
	const unsigned char *src;
	size_t len;
	bool close_early;
};

/* Writes src in growing pieces with pauses (the reader sees many partial reads). */
static void *dribbler(void *arg)
{
	struct dribble *d = arg;
	size_t at = 0, piece = 1;
	while (at < d->len) {
		size_t n = piece < d->len - at ? piece : d->len - at;
		ssize_t w = send(d->fd, d->src + at, n, MSG_NOSIGNAL);
		if (w <= 0)
			break;
		at += (size_t)w;
		piece = piece * 3 + 1;
		usleep(500);
	}
	if (d->close_early)
		close(d->fd);
	return NULL;
}

Test(io, partial_reads_and_eof)
{
	int sv[2];
	pair(sv);
	enum { N = 300000 };
	unsigned char *src = malloc(N), *dst = malloc(N);
	fill(src, N, 9);
	struct dribble d = { .fd = sv[1], .src = src, .len = N };
	pthread_t t;
	cr_assert_eq(pthread_create(&t, NULL, dribbler, &d), 0);
	cr_assert_eq(de_peer_read_full(sv[0], dst, N, 60000), 0);
	pthread_join(t, NULL);
	cr_assert_eq(memcmp(src, dst, N), 0);
	cr_assert_eq(de_peer_read_full(sv[0], dst, 0, 0), 0, "nothing to read is done at once");
	/* EOF before the whole buffer: -ECONNRESET (the bytes that came are in buf) */
	d = (struct dribble){ .fd = sv[1], .src = src, .len = 1000, .close_early = true };
	cr_assert_eq(pthread_create(&t, NULL, dribbler, &d), 0);
	cr_assert_eq(de_peer_read_full(sv[0], dst, 1001, 60000), -ECONNRESET);
	pthread_join(t, NULL);
	cr_assert_eq(memcmp(src, dst, 1000), 0);
	close(sv[0]);
	free(src);
	free(dst);
}

Test(io, deadlines_and_a_closed_peer)
{
	int sv[2];
	pair(sv);
	unsigned char b[64];
	/* nothing comes: -ETIMEDOUT after about the timeout */
	int64_t t0 = now_ms();
	cr_assert_eq(de_peer_read_full(sv[0], b, 8, 200), -ETIMEDOUT);
	int64_t took = now_ms() - t0;
	cr_assert(took >= 150 && took <= 5000, "took %ld ms", (long)took);
	/* the deadline is for the whole call: 4 of 8 bytes come, then nothing */
	cr_assert_eq(write(sv[1], "abcd", 4), 4);
	t0 = now_ms();
	cr_assert_eq(de_peer_read_full(sv[0], b, 8, 200), -ETIMEDOUT);
	took = now_ms() - t0;
	cr_assert(took >= 150 && took <= 5000, "took %ld ms", (long)took);
	/* timeout 0 takes what is there now */
	cr_assert_eq(write(sv[1], "efgh", 4), 4);
	cr_assert_eq(de_peer_read_full(sv[0], b, 4, 0), 0);
	cr_assert_eq(memcmp(b, "efgh", 4), 0);
	cr_assert_eq(de_peer_read_full(sv[0], b, 4, 0), -ETIMEDOUT);
	/* nobody reads: the write times out once the buffers are full */
	unsigned char *big = calloc(1, BIG);
	struct iovec v = { big, BIG };
	t0 = now_ms();
	cr_assert_eq(de_peer_write_full(sv[0], &v, 1, 200), -ETIMEDOUT);
	took = now_ms() - t0;
	cr_assert(took >= 150 && took <= 5000, "took %ld ms", (long)took);
	/* too many pieces */
	struct iovec many[17];
	for (int k = 0; k < 17; k++)
		many[k] = (struct iovec){ b, 1 };
	cr_assert_eq(de_peer_write_full(sv[0], many, 17, 100), -EINVAL);
	cr_assert_eq(de_peer_write_full(sv[0], many, -1, 100), -EINVAL);
	/* the peer is gone: -ECONNRESET, and no SIGPIPE kills us */
	close(sv[1]);
	cr_assert_eq(de_peer_write_full(sv[0], &v, 1, 1000), -ECONNRESET);
	cr_assert_eq(de_peer_read_full(sv[0], b, 1, 1000), -ECONNRESET);
	close(sv[0]);
	free(big);
}
