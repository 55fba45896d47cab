/*
 * raw_client.h — a client of dynembd that speaks the raw protocol of src/proto.h, for
 * tests that must send what libdynemb never would (a write on a read-only handle, a
 * flood of max-size descriptors): the SEQPACKET control messages by hand, the channel
 * through de_channel_attach (shm/de_shm.h). Every wait is bounded (RAW_TIMEOUT_MS), and
 * every failure is a Criterion assertion. Header-only, static inline: a test includes it
 * after criterion.h (or mini_criterion.h) and links deshm.
 */
#ifndef DE_TESTS_RAW_CLIENT_H
#define DE_TESTS_RAW_CLIENT_H

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "daemon_util.h"
#include "de_shm.h"
#include "proto.h"

#define RAW_TIMEOUT_MS 10000

struct cli {
	int sock;
	de_channel *ch;
	char *data;
	uint64_t data_bytes;
	uint32_t seq;
};

static inline void raw_hdr(struct de_msg_hdr *h, uint16_t type, uint32_t len, uint32_t seq)
{
	*h = (struct de_msg_hdr){ .magic = DE_MSG_MAGIC, .type = type,
				  .version = DE_PROTO_VERSION, .len = len, .seq = seq };
}

/* One packet (bounded wait); fds received are closed except the first, in *fd. */
static inline ssize_t raw_recv(int sock, void *buf, size_t cap, int *fd)
{
	if (fd)
		*fd = -1;
	struct pollfd p = { .fd = sock, .events = POLLIN };
	if (poll(&p, 1, RAW_TIMEOUT_MS) != 1)
		return -ETIMEDOUT;
	union {
		char b[CMSG_SPACE(sizeof(int) * 253)];
		struct cmsghdr a;
	} u;
	struct iovec iov = { .iov_base = buf, .iov_len = cap };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b,
			     .msg_controllen = sizeof u.b };
	ssize_t r = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
	if (r < 0)
		return -errno;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
		unsigned k = (unsigned)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		for (unsigned j = 0; j < k; j++) {
			int f;
			memcpy(&f, CMSG_DATA(cm) + j * sizeof(int), sizeof f);
			if (fd && *fd < 0)
				*fd = f;
			else
				close(f);
		}
	}
	return r;
}

/* Connect to path, HELLO with a ring of sq entries and a data area of data bytes. */
static inline void cli_hello(struct cli *c, const char *path, uint32_t sq, uint64_t data)
{
	memset(c, 0, sizeof *c);
	c->sock = daemon_connect(path);
	cr_assert_geq(c->sock, 0, "connect: %s", strerror(-c->sock));
	struct de_msg_hello h = { .sq_entries = sq, .data_bytes = data };
	raw_hdr(&h.h, DE_MSG_HELLO, sizeof h, ++c->seq);
	strcpy(h.name, "raw");
	cr_assert_eq(send(c->sock, &h, sizeof h, MSG_NOSIGNAL), (ssize_t)sizeof h);
	char buf[DE_MSG_MAX];
	int fd;
	ssize_t r = raw_recv(c->sock, buf, sizeof buf, &fd);
	cr_assert_eq(r, (ssize_t)sizeof(struct de_msg_hello_ok), "HELLO_OK (got %zd bytes)", r);
	cr_assert_eq(((struct de_msg_hdr *)(void *)buf)->type, DE_MSG_HELLO_OK);
	cr_assert_geq(fd, 0, "HELLO_OK passes the channel");
	cr_assert_eq(de_channel_attach(fd, &c->ch), 0);
	close(fd);
	c->data = de_channel_data(c->ch, &c->data_bytes);
}

/* Send message m (len bytes, its header filled here with type) and take the reply into
 * reply (cap bytes): the reply's length. The fds a reply carries are closed. */
static inline ssize_t cli_call(struct cli *c, void *m, uint16_t type, uint32_t len,
			       void *reply, size_t cap)
{
	raw_hdr(m, type, len, ++c->seq);
	cr_assert_eq(send(c->sock, m, len, MSG_NOSIGNAL), (ssize_t)len);
	int fd;
	ssize_t r = raw_recv(c->sock, reply, cap, &fd);
	if (fd >= 0)
		close(fd);
	return r;
}

static inline void cli_close(struct cli *c)
{
	de_channel_destroy(c->ch);
	close(c->sock);
}

/* Submit e and wait for its completion (which must answer it). */
static inline struct de_cqe cli_do(struct cli *c, const struct de_sqe *e)
{
	cr_assert_eq(de_channel_submit(c->ch, e), 0);
	struct de_cqe q;
	cr_assert_eq(de_channel_reap(c->ch, &q, true, 1000000, RAW_TIMEOUT_MS), 0,
		     "no completion");
	cr_assert_eq(q.user_data, e->user_data);
	return q;
}

#endif
