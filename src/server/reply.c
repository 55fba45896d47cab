/*
 * reply.c — dynembd's reply encoder (reply.h): the header every reply carries, one
 * sendmsg per packet (SOCK_SEQPACKET: a packet goes whole or not at all) with any fds,
 * and the ERROR reply. The control thread sends with wait_ms 0 (it never blocks: a
 * client whose socket is full is closed by the caller); a job thread may wait a bounded
 * time for room before its final reply. Owns nothing; never logs.
 */
#include "reply.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "util.h"

void srv_reply_hdr(struct de_msg_hdr *h, uint16_t type, uint32_t len, uint32_t seq)
{
	*h = (struct de_msg_hdr){ .magic = DE_MSG_MAGIC, .type = type,
				  .version = DE_PROTO_VERSION, .len = len, .seq = seq };
}

int srv_reply_send(int sock, const void *msg, size_t len, const int *fds, unsigned nfds,
		   int wait_ms)
{
	struct iovec iov = { .iov_base = (void *)msg, .iov_len = len };
	union {
		char buf[CMSG_SPACE(sizeof(int) * DE_FDS_PER_MSG)];
		struct cmsghdr align;
	} u;
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	if (nfds > DE_FDS_PER_MSG)
		return -EINVAL;
	if (nfds) {
		memset(u.buf, 0, sizeof u.buf);
		mh.msg_control = u.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
	}
	uint64_t end = srv_mono_ns() + (uint64_t)wait_ms * 1000000ull;
	for (;;) {
		ssize_t r = sendmsg(sock, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (r == (ssize_t)len)
			return 0;
		if (r >= 0)
			return -EIO;
		if (errno == EINTR && wait_ms)
			continue;
		if (errno != EAGAIN || !wait_ms)
			return -errno;
		uint64_t now = srv_mono_ns();
		if (now >= end)
			return -ETIMEDOUT;
		struct pollfd pf = { .fd = sock, .events = POLLOUT };
		poll(&pf, 1, (int)((end - now) / 1000000ull) + 1);
	}
}

int srv_reply_verror(int sock, uint32_t seq, int err, int wait_ms, const char *fmt, va_list ap)
{
	struct de_msg_error m;
	memset(&m, 0, sizeof m);
	srv_reply_hdr(&m.h, DE_MSG_ERROR, sizeof m, seq);
	m.err = err;
	vsnprintf(m.msg, sizeof m.msg, fmt, ap);
	return srv_reply_send(sock, &m, sizeof m, NULL, 0, wait_ms);
}

int srv_reply_error(int sock, uint32_t seq, int err, int wait_ms, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = srv_reply_verror(sock, seq, err, wait_ms, fmt, ap);
	va_end(ap);
	return r;
}
