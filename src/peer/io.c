/*
 * io.c — whole-buffer reads and writes on a stream socket under one deadline: what the
 * handshake (auth.c) and the daemon's peer layer use for every byte they exchange.
 * Works on blocking and non-blocking fds alike (every call is MSG_DONTWAIT, and each
 * but the first waits in poll until the deadline), never raises SIGPIPE (MSG_NOSIGNAL),
 * and retries EINTR. The first try never waits, so a timeout of 0 moves what the socket
 * takes or holds at once; after it the deadline is strict.
 */
#include "de_peer.h"

#include <errno.h>
#include <stdbool.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait for ev on fd until deadline (-1: none): 0, -ETIMEDOUT or a negative errno. */
static int wait_fd(int fd, short ev, int64_t deadline)
{
	for (;;) {
		int t = -1;
		if (deadline >= 0) {
			int64_t left = deadline - now_ms();
			if (left <= 0)
				return -ETIMEDOUT;
			t = left > 1 << 30 ? 1 << 30 : (int)left;
		}
		struct pollfd p = { .fd = fd, .events = ev };
		int r = poll(&p, 1, t);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -ETIMEDOUT;
		return 0; /* readable, writable, or an error the call itself reports */
	}
}

int de_peer_write_full(int fd, const struct iovec *iov, int iovcnt, int timeout_ms)
{
	int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
	struct iovec v[16];
	if (iovcnt < 0 || iovcnt > 16)
		return -EINVAL;
	memcpy(v, iov, (size_t)iovcnt * sizeof *v);
	int i = 0;
	bool first = true; /* the first try does not wait: timeout 0 sends what fits now */
	while (i < iovcnt) {
		if (!v[i].iov_len) {
			i++;
			continue;
		}
		int err = first ? 0 : wait_fd(fd, POLLOUT, deadline);
		first = false;
		if (err)
			return err;
		struct msghdr m = { .msg_iov = v + i, .msg_iovlen = (size_t)(iovcnt - i) };
		ssize_t w = sendmsg(fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return errno == EPIPE ? -ECONNRESET : -errno;
		}
		size_t left = (size_t)w;
		while (i < iovcnt && left >= v[i].iov_len) {
			left -= v[i].iov_len;
			i++;
		}
		if (i < iovcnt) {
			v[i].iov_base = (char *)v[i].iov_base + left;
			v[i].iov_len -= left;
		}
	}
	return 0;
}

int de_peer_read_full(int fd, void *buf, size_t len, int timeout_ms)
{
	int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
	char *p = buf;
	bool first = true; /* the first try does not wait: timeout 0 takes what is there */
	while (len) {
		int err = first ? 0 : wait_fd(fd, POLLIN, deadline);
		first = false;
		if (err)
			return err;
		ssize_t r = recv(fd, p, len, MSG_DONTWAIT);
		if (r < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return -errno;
		}
		if (r == 0)
			return -ECONNRESET; /* the peer closed before the whole buffer came */
		p += r;
		len -= (size_t)r;
	}
	return 0;
}
