/*
 * reply.h — PRIVATE to dynembd: the one encoder of control-socket replies (reply.c), used
 * by the control plane (control.c) and by the persistence jobs' threads (persist_jobs.c).
 */
#ifndef DE_SRV_REPLY_H
#define DE_SRV_REPLY_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "proto.h"

/* Fill a reply header: magic, type, this daemon's protocol version, len, the request's seq. */
void srv_reply_hdr(struct de_msg_hdr *h, uint16_t type, uint32_t len, uint32_t seq);
/*
 * Send one packet with nfds (<= DE_FDS_PER_MSG) fds over SCM_RIGHTS. wait_ms 0: never
 * blocks (a full socket is -EAGAIN); else waits up to wait_ms for room (-ETIMEDOUT).
 * 0, -EIO for a short send, or a negative errno.
 */
int srv_reply_send(int sock, const void *msg, size_t len, const int *fds, unsigned nfds,
		   int wait_ms);
/* An ERROR reply (err, the formatted text) for request seq; as srv_reply_send. */
__attribute__((format(printf, 5, 6)))
int srv_reply_error(int sock, uint32_t seq, int err, int wait_ms, const char *fmt, ...);
__attribute__((format(printf, 5, 0)))
int srv_reply_verror(int sock, uint32_t seq, int err, int wait_ms, const char *fmt, va_list ap);

#endif /* DE_SRV_REPLY_H */
