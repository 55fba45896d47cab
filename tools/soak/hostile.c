/*
 * hostile.c — the soak's hostile client: cheap attacks, one after another, while the
 * workers run. Each attack must fail cleanly: the daemon answers with an error (a
 * negative completion, an ERROR message, or closing this connection), stays up, and
 * keeps serving the workers (their every call is checked by worker.c). An attack that
 * the daemon accepts, or that gets no answer at all, is a violation.
 *
 * This is the one part of tools/ that speaks the wire protocol itself (src/proto.h) and
 * drives its own channel with libdeshm's client side (de_channel_attach / submit /
 * reap), because the public API cannot send a malformed message or descriptor. It never
 * writes its channel's data area, so its random descriptors only ever name key 0 and
 * cannot grow any table.
 *
 * Attacks (enum soak_attack):
 *   idle       8 connections that never send HELLO, held 3 s; counted when the daemon
 *              closes them itself (a HELLO deadline); with --require-hello-deadline
 *              held 5 s, and each must have been closed;
 *   garbage    a random packet before HELLO, and one (valid magic and version, random
 *              type, length and body) after HELLO: ERROR or close, within 5 s;
 *   big msg    a 16 KiB control packet (DE_MSG_MAX is 4 KiB): ERROR or close;
 *   random sqe 32 random descriptors on the channel of a connection that opened
 *              "soak_hostile": every one completes (any result), then a NOP completes 0;
 *   huge sqe   count 2^32-1, ranges past the data area, unknown op and table, a status
 *              range of 2^63: each completes with a negative result, then a NOP with 0;
 *   huge api   through libdynemb: top-k k = 65537 and sampling 2^21 are -E2BIG, dim 4097
 *              is -EINVAL, a 1 TiB data area is refused or clamped, and a read-only
 *              lookup of 100,000 keys that do not exist succeeds with every key missing.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "../mix.h"
#include "proto.h"
#include "soak.h"

#define ANSWER_MS 5000
#define HOSTILE_TABLE "soak_hostile"
#define HOSTILE_DATA (1u << 20)

struct hs {
	const struct soak_ctx *x;
	uint64_t seed;
};

static uint64_t rnd(struct hs *h) { return mix(h->seed++); }

static int raw_connect(const struct hs *h)
{
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	snprintf(a.sun_path, sizeof a.sun_path, "%s", h->x->sock);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a)) {
		close(fd);
		fd = -1;
	}
	return fd;
}

/* Wait for one reply. 1: an ERROR message (*err its code) or the connection closed;
 * 0: another message (type in *type, fds received closed); -ETIMEDOUT: nothing came. */
static int recv_reply(int fd, int ms, uint16_t *type, int32_t *err, int *chan_fd, void *body,
		      size_t body_len)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	if (poll(&p, 1, ms) <= 0)
		return -ETIMEDOUT;
	union {
		struct de_msg_hdr h;
		struct de_msg_error e;
		char b[DE_MSG_MAX];
	} m;
	union {
		struct cmsghdr align;
		char b[CMSG_SPACE(sizeof(int) * DE_FDS_PER_MSG)];
	} cm;
	struct iovec iov = { .iov_base = m.b, .iov_len = sizeof m.b };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b,
			     .msg_controllen = sizeof cm.b };
	ssize_t r = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); r > 0 && c; c = CMSG_NXTHDR(&mh, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
			size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			for (size_t i = 0; i < k; i++) {
				int f;
				memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof f);
				if (i == 0 && chan_fd && *chan_fd < 0)
					*chan_fd = f;
				else
					close(f);
			}
		}
	if (r <= 0) /* closed (0) or reset */
		return 1;
	if ((size_t)r >= sizeof m.h && m.h.type == DE_MSG_ERROR && (size_t)r >= sizeof m.e) {
		*err = m.e.err;
		return 1;
	}
	*type = (size_t)r >= sizeof m.h ? m.h.type : 0;
	if (body && (size_t)r >= body_len)
		memcpy(body, m.b, body_len);
	return 0;
}

static void hdr(struct de_msg_hdr *h, uint16_t type, uint32_t len, uint32_t seq)
{
	*h = (struct de_msg_hdr){ .magic = DE_MSG_MAGIC, .type = type,
				  .version = DE_PROTO_VERSION, .len = len, .seq = seq };
}

/* A raw HELLO; *chan_fd gets the channel. 0, or negative. */
static int raw_hello(const struct hs *h, int fd, int *chan_fd)
{
	struct de_msg_hello m = { .data_bytes = HOSTILE_DATA, .sq_entries = 64 };
	hdr(&m.h, DE_MSG_HELLO, sizeof m, 1);
	snprintf(m.name, sizeof m.name, "soak-hostile");
	if (send(fd, &m, sizeof m, MSG_NOSIGNAL) != (ssize_t)sizeof m)
		return -errno;
	uint16_t type = 0;
	int32_t err = 0;
	*chan_fd = -1;
	int r = recv_reply(fd, h->x->o.timeout_ms, &type, &err, chan_fd, NULL, 0);
	if (r == 0 && type == DE_MSG_HELLO_OK && *chan_fd >= 0)
		return 0;
	if (*chan_fd >= 0)
		close(*chan_fd);
	return r < 0 ? r : err ? err : -EPROTO;
}

/* A raw OPEN of soak_hostile (dim 8, zeros, seed 7, nothing learned); its id, or < 0. */
static int raw_open(const struct hs *h, int fd)
{
	struct de_msg_open m = { 0 };
	hdr(&m.h, DE_MSG_OPEN, sizeof m, 2);
	snprintf(m.name, sizeof m.name, HOSTILE_TABLE);
	m.cfg.dim = SOAK_DIM;
	m.cfg.seed = 7;
	struct de_msg_open_ok ok;
	uint16_t type = 0;
	int32_t err = 0;
	if (send(fd, &m, sizeof m, MSG_NOSIGNAL) != (ssize_t)sizeof m)
		return -errno;
	int r = recv_reply(fd, h->x->o.timeout_ms, &type, &err, NULL, &ok, sizeof ok);
	if (r == 0 && type == DE_MSG_OPEN_OK)
		return ok.table_id;
	return r < 0 ? r : err ? err : -EPROTO;
}

/* The daemon went away under us (the driver is killing it): stop counting. */
static bool daemon_down(const struct hs *h) { return atomic_load(&h->x->sh->down) != 0; }

static void tried(struct hs *h, enum soak_attack a, bool clean, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void tried(struct hs *h, enum soak_attack a, bool clean, const char *fmt, ...)
{
	if (daemon_down(h))
		return;
	atomic_fetch_add(&h->x->sh->attack_tries[a], 1);
	if (clean) {
		atomic_fetch_add(&h->x->sh->attack_clean[a], 1);
		return;
	}
	usleep(100000); /* a kill starting right now sets down first */
	if (daemon_down(h))
		return;
	char msg[200];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	soak_violation(h->x, "hostile (%s): %s", soak_attack_names[a], msg);
}

static void attack_idle(struct hs *h)
{
	int fds[8];
	unsigned n = 0, closed = 0;
	for (unsigned i = 0; i < 8; i++)
		if ((fds[n] = raw_connect(h)) >= 0)
			n++;
	atomic_fetch_add(&h->x->sh->idle_opened, n);
	bool require = h->x->o.hello_deadline;
	unsigned hold = require ? 5 : 3;
	uint64_t end = (uint64_t)time(NULL) + hold;
	bool gone[8] = { false };
	while ((uint64_t)time(NULL) < end) {
		for (unsigned i = 0; i < n; i++) {
			char b;
			if (!gone[i] && recv(fds[i], &b, 1, MSG_DONTWAIT) == 0) {
				gone[i] = true;
				closed++;
			}
		}
		usleep(100000);
	}
	for (unsigned i = 0; i < n; i++)
		close(fds[i]);
	atomic_fetch_add(&h->x->sh->idle_closed, closed);
	tried(h, A_IDLE, !require || closed == n, "%u of %u connections that sent no HELLO were"
		  " still open after %u s", n - closed, n, hold);
}

/* Send len bytes of buf on fd and demand an ERROR or a close within ANSWER_MS. */
static void expect_refusal(struct hs *h, enum soak_attack a, int fd, const void *buf, size_t len,
			   const char *what)
{
	ssize_t s = send(fd, buf, len, MSG_NOSIGNAL);
	if (s < 0) {
		/* the kernel refused it (EMSGSIZE) or the daemon closed first: clean */
		tried(h, a, errno == EMSGSIZE || errno == EPIPE || errno == ECONNRESET,
		      "%s: send: %s", what, strerror(errno));
		return;
	}
	uint16_t type = 0;
	int32_t err = 0;
	int r = recv_reply(fd, ANSWER_MS, &type, &err, NULL, NULL, 0);
	if (r == -ETIMEDOUT)
		tried(h, a, false, "%s (%zu bytes): no ERROR and no close within %d ms", what, len,
		      ANSWER_MS);
	else if (r == 0)
		tried(h, a, false, "%s (%zu bytes): the daemon answered with message type %u, not"
				   " ERROR", what, len, type);
	else
		tried(h, a, err <= 0, "%s: ERROR with a positive code %d", what, err);
}

static void attack_garbage(struct hs *h)
{
	unsigned char buf[512];
	size_t len = 1 + rnd(h) % sizeof buf;
	for (size_t i = 0; i < len; i++)
		buf[i] = (unsigned char)rnd(h);
	int fd = raw_connect(h);
	if (fd < 0)
		return;
	expect_refusal(h, A_GARBAGE, fd, buf, len, "random bytes before HELLO");
	close(fd);

	int chan = -1;
	if ((fd = raw_connect(h)) < 0)
		return;
	if (!raw_hello(h, fd, &chan)) {
		close(chan);
		len = sizeof(struct de_msg_hdr) + rnd(h) % (sizeof buf - sizeof(struct de_msg_hdr));
		for (size_t i = 0; i < len; i++)
			buf[i] = (unsigned char)rnd(h);
		struct de_msg_hdr m;
		/* BYE (8) is a valid goodbye: a close, which is fine, but pick a type that asks */
		uint16_t type = (uint16_t)(1 + rnd(h) % 20);
		hdr(&m, type == DE_MSG_BYE ? 99 : type, (uint32_t)len, 7);
		memcpy(buf, &m, sizeof m);
		expect_refusal(h, A_GARBAGE, fd, buf, len, "a random message after HELLO");
	}
	close(fd);
}

static void attack_big_msg(struct hs *h)
{
	static unsigned char buf[16384];
	int fd = raw_connect(h);
	if (fd < 0)
		return;
	int chan = -1;
	bool hello = rnd(h) % 2 && !raw_hello(h, fd, &chan);
	if (chan >= 0)
		close(chan);
	struct de_msg_hdr m;
	hdr(&m, DE_MSG_OPEN, sizeof buf, 3);
	memset(buf, 'A', sizeof buf);
	memcpy(buf, &m, sizeof m);
	expect_refusal(h, A_BIG_MSG, fd, buf, sizeof buf,
		       hello ? "a 16 KiB OPEN after HELLO" : "a 16 KiB OPEN before HELLO");
	close(fd);
}

/* A connection with its channel attached and soak_hostile open. 0 or negative. */
static int raw_session(struct hs *h, int *fd, de_channel **ch, int *table)
{
	int chan = -1, err;
	if ((*fd = raw_connect(h)) < 0)
		return -errno;
	if ((err = raw_hello(h, *fd, &chan)))
		goto fail;
	err = de_channel_attach(chan, ch);
	close(chan);
	if (err)
		goto fail;
	if ((*table = raw_open(h, *fd)) < 0) {
		err = *table;
		de_channel_destroy(*ch);
		goto fail;
	}
	return 0;
fail:
	close(*fd);
	return err;
}

/* Submit e, reap its completion: 0 with *res, or negative (no completion in time). */
static int submit_reap(struct hs *h, de_channel *ch, const struct de_sqe *e, int32_t *res)
{
	int err;
	for (int i = 0; (err = de_channel_submit(ch, e)) == -EAGAIN && i < 1000; i++)
		usleep(1000);
	if (err)
		return err;
	struct de_cqe c;
	if ((err = de_channel_reap(ch, &c, true, 20000, (int)h->x->o.timeout_ms)))
		return err;
	*res = c.res;
	return 0;
}

static void nop_after(struct hs *h, enum soak_attack a, de_channel *ch)
{
	struct de_sqe nop = { .op = DE_OP_NOP, .user_data = 1 };
	int32_t res = 0;
	int err = submit_reap(h, ch, &nop, &res);
	tried(h, a, !err && res == 0, "a NOP after the attack: %s, result %d",
	      err ? strerror(-err) : "completed", res);
}

static void attack_random_sqe(struct hs *h)
{
	int fd, table;
	de_channel *ch;
	if (raw_session(h, &fd, &ch, &table))
		return;
	uint64_t data = 0;
	de_channel_data(ch, &data);
	for (unsigned i = 0; i < 32; i++) {
		struct de_sqe e;
		uint64_t *w = (uint64_t *)(void *)&e;
		for (unsigned j = 0; j < sizeof e / 8; j++)
			w[j] = rnd(h);
		/* half of them look plausible: a known op, our table, ranges in the area */
		if (rnd(h) % 2) {
			e.op = (uint8_t)(rnd(h) % (DE_OP_MAX + 2));
			e.table = (uint16_t)(rnd(h) % 3 ? table : table + 1);
			e.count = (uint32_t)(rnd(h) % 300);
			e.keys_off = rnd(h) % data & ~7ull;
			e.keys_len = rnd(h) % 4096;
			e.vals_off = rnd(h) % data & ~7ull;
			e.vals_len = rnd(h) % 65536;
			e.status_off = rnd(h) % 2 ? 0 : rnd(h) % data;
		}
		int32_t res = 0;
		int err = submit_reap(h, ch, &e, &res);
		tried(h, A_BAD_SQE, !err, "descriptor op %u count %u: no completion (%s)", e.op,
		      e.count, strerror(-err));
		if (err)
			break;
	}
	nop_after(h, A_BAD_SQE, ch);
	de_channel_destroy(ch);
	close(fd);
}

static void attack_huge_sqe(struct hs *h)
{
	int fd, table;
	de_channel *ch;
	if (raw_session(h, &fd, &ch, &table))
		return;
	uint64_t data = 0;
	de_channel_data(ch, &data);
	uint16_t tb = (uint16_t)table;
	const struct de_sqe bad[] = {
		{ .op = DE_OP_LOOKUP, .table = tb, .count = UINT32_MAX, .keys_len = 8ull * UINT32_MAX,
		  .vals_len = 32ull * UINT32_MAX },
		{ .op = DE_OP_UPDATE, .table = tb, .count = 1, .keys_off = data - 8, .keys_len = 8,
		  .vals_off = data, .vals_len = 4 * SOAK_DIM },
		{ .op = DE_OP_LOOKUP, .table = tb, .count = 1, .keys_off = UINT64_MAX - 7,
		  .keys_len = 8, .vals_off = 0, .vals_len = 4 * SOAK_DIM },
		{ .op = DE_OP_LOOKUP, .table = tb, .count = 4, .keys_off = 0, .keys_len = 32,
		  .vals_off = 64, .vals_len = 4 * SOAK_DIM * 4, .flags = DE_SQE_STATUS,
		  .status_off = 1ull << 63 },
		{ .op = DE_OP_TOPK, .table = tb, .count = 1, .keys_len = 4 * SOAK_DIM,
		  .arg = UINT64_MAX, .vals_off = 4096, .vals_len = 12 },
		{ .op = 200, .table = tb },
		{ .op = DE_OP_STATS, .table = 9999, .vals_len = sizeof(struct de_wire_stats) },
	};
	for (unsigned i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		int32_t res = 0;
		int err = submit_reap(h, ch, &bad[i], &res);
		tried(h, A_HUGE_SQE, !err && res < 0, "descriptor %u (op %u, count %u): %s, result"
			  " %d", i, bad[i].op, bad[i].count, err ? strerror(-err) : "completed", res);
		if (err)
			break;
	}
	nop_after(h, A_HUGE_SQE, ch);
	de_channel_destroy(ch);
	close(fd);
}

static void attack_huge_api(struct hs *h)
{
	dynemb_client *c = NULL;
	struct dynemb_connect_opts co = { .name = "soak-hostile-big", .data_bytes = 1ull << 40,
					  .timeout_ms = (int)h->x->o.timeout_ms };
	int err = dynemb_connect(h->x->sock, &co, &c);
	tried(h, A_HUGE_API, err <= 0, "-"); /* refused or clamped: both fine */
	dynemb_close(c);
	c = NULL;
	if ((err = soak_connect(h->x, "soak-hostile", 4u << 20, &c)))
		return;
	struct dynemb_table_spec s = { .name = HOSTILE_TABLE, .dim = 4097, .seed = 7 };
	int t = -1;
	err = dynemb_open(c, &s, &t);
	tried(h, A_HUGE_API, err == -EINVAL, "dynemb_open with dim 4097: %s", dynemb_strerror(err));
	s.dim = SOAK_DIM;
	if ((err = dynemb_open(c, &s, &t))) {
		tried(h, A_HUGE_API, false, "dynemb_open(%s): %s", HOSTILE_TABLE, dynemb_strerror(err));
		goto out;
	}
	float q[SOAK_DIM] = { 1 }, score;
	uint64_t key;
	err = dynemb_topk(c, t, q, 1, 65537, DYNEMB_METRIC_DOT, &key, &score, NULL);
	tried(h, A_HUGE_API, err == -E2BIG, "dynemb_topk with k = 65537: %s (%d), not -E2BIG",
	      dynemb_strerror(err), err);
	struct dynemb_sample_spec ss = { .num_sampled = 1u << 21 };
	err = dynemb_sample(c, t, &ss, NULL, 0, &key, NULL, NULL, NULL);
	tried(h, A_HUGE_API, err == -E2BIG, "dynemb_sample of 2^21: %s (%d), not -E2BIG",
	      dynemb_strerror(err), err);
	size_t n = 100000;
	uint64_t *keys = malloc(n * sizeof *keys);
	float *vals = malloc(n * SOAK_DIM * sizeof *vals);
	uint8_t *st = malloc(n);
	if (keys && vals && st) {
		for (size_t i = 0; i < n; i++)
			keys[i] = rnd(h) | 1;
		err = dynemb_lookup(c, t, keys, n, vals, st, DYNEMB_READONLY, 0);
		size_t found = 0;
		for (size_t i = 0; !err && i < n; i++)
			found += st[i] != DYNEMB_ST_MISSING;
		tried(h, A_HUGE_API, !err && !found, "a read-only lookup of %zu absent keys: %s, %zu"
			  " found", n, dynemb_strerror(err), found);
	}
	free(keys);
	free(vals);
	free(st);
out:
	dynemb_close(c);
}

void soak_hostile(const struct soak_ctx *x, uint64_t seed)
{
	struct hs h = { .x = x, .seed = seed };
	void (*const attacks[SOAK_NATTACKS])(struct hs *) = {
		attack_idle, attack_garbage, attack_big_msg, attack_random_sqe, attack_huge_sqe,
		attack_huge_api,
	};
	for (unsigned i = 0;; i++) {
		attacks[i % SOAK_NATTACKS](&h);
		usleep((useconds_t)(100000 + rnd(&h) % 400000));
	}
}
