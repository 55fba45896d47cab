/*
 * client_priv.h — PRIVATE to libdynemb (src/client): what client.c lends to the other
 * files of the library (client_learn.c). Not installed, not exported (libdynemb.map).
 */
#ifndef DE_CLIENT_PRIV_H
#define DE_CLIENT_PRIV_H

#include <stddef.h>
#include <stdint.h>

#include "de_shm.h"
#include "dynemb.h"
#include "proto.h"

/* -EINVAL, with a message for dynemb_strerror naming what (a struct) and the index, when
 * one of r[0..n) is not 0: the reserved tail of a public struct. */
int de_priv_reserved(const uint64_t *r, size_t n, const char *what);
#define DE_PRIV_RESERVED(s, what) \
	de_priv_reserved((s)->reserved, sizeof((s)->reserved) / sizeof((s)->reserved[0]), what)

/* Keep fmt's message for dynemb_strerror(err) (this thread, until the next call) and
 * return err: every -EINVAL this library finds itself says which argument and why. */
__attribute__((format(printf, 2, 3))) int de_priv_err(int err, const char *fmt, ...);
/* The same, for a data-plane request the daemon refused (-EEXIST: a key conflict). */
__attribute__((format(printf, 2, 3))) int de_priv_data_err(int err, const char *fmt, ...);

/* A message's table name (dst zeroed by the caller): 1..DE_NAME_MAX - 1 bytes (the
 * daemon checks the characters), else -EINVAL naming the problem. */
int de_priv_put_name(char dst[DE_NAME_MAX], const char *name);

/* A table handle as the wire knows it, and the room one request may use now. */
struct de_priv_table {
	uint16_t wire_id;
	uint32_t dim, key_type;
	uint64_t seed;
	uint32_t max_batch;  /* the daemon's */
	uint64_t avail;      /* bytes the largest request region can take now (all parts,
	                        each rounded up to 64) */
};
/* -EINVAL for a bad handle; the connection's broken error. */
int de_priv_table(dynemb_client *c, int table, struct de_priv_table *out /* out */);

/*
 * One blocking request whose data region is [keys | vals | status] (each part 64-byte
 * aligned): keys_in (keys_len bytes) and status_in (status_len bytes, may be NULL with
 * 0) are copied in, vals_in (may be NULL) into the vals part of vals_len bytes. e: op,
 * flags, table (the wire id), count and arg set by the caller; the offsets and lengths
 * are filled here. After the completion the vals part is copied to vals_out (may be
 * NULL) when res is 0 or -ENOSPC. cqe: the completion. Returns 0 (the request ran: see
 * cqe->res) or a negative errno of the transport (-ENOBUFS: the region cannot fit).
 */
int de_priv_call(dynemb_client *c, struct de_sqe *e, const void *keys_in, uint64_t keys_len,
		 const void *vals_in, uint64_t vals_len, void *vals_out, const void *status_in,
		 uint64_t status_len, struct de_cqe *cqe /* out */);

/*
 * One control request with progress (client_persist.c): msg (len bytes, h.type set; the
 * rest of the header is filled here) is sent; every PROGRESS reply of it goes to
 * on_progress (may be NULL; a non-zero return makes the call return -ECANCELED once the
 * final reply came: the daemon's job is not stopped); the final reply must be of type
 * want and exactly reply_len bytes (copied to reply), or ERROR (its errno returned, its
 * text kept for dynemb_strerror). The reply timeout restarts with each message.
 */
int de_priv_ctl_request(dynemb_client *c, void *msg, size_t len, uint16_t want, void *reply,
			size_t reply_len, int (*on_progress)(void *ctx, const void *progress),
			void *ctx);
struct de_wire_stats;
/* A STATS reply's wire struct as the public struct (client.c; STATS and STATS_BY_NAME). */
void de_priv_stats_from_wire(const struct de_wire_stats *w, struct dynemb_stats *out);

#endif /* DE_CLIENT_PRIV_H */
