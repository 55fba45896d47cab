/*
 * proto.h — the wire protocol between libdynemb (src/client) and dynembd (src/server).
 * Private to those two: applications use src/client/dynemb.h.
 *
 * Control plane: a unix SOCK_SEQPACKET socket (default /run/dynemb/dynemb.sock). Every
 * message is one packet of at most DE_MSG_MAX bytes that starts with struct de_msg_hdr;
 * file descriptors travel with SCM_RIGHTS on the reply that names them. All integers are
 * little-endian (both ends are on one host), structs are packed by layout (static asserts
 * below), and every field from the other side is validated before use.
 *
 *   client                                   daemon
 *   HELLO {proto, sq_entries, data_bytes, name}  ->  checks SO_PEERCRED against the allow-list
 *                                            <-  HELLO_OK {client_id, sizes} + [channel fd]
 *                                                or ERROR {-EACCES | -EPROTO | ...}
 *   OPEN {name, config}                      ->  same name + same config: shared table;
 *                                                same name + other config: ERROR -EEXIST
 *                                            <-  OPEN_OK {table_id, dim, key_type, seed,
 *                                                nsegments} + [read-only fds of the table's
 *                                                arena segments, at most DE_FDS_PER_MSG]
 *   SEGMENTS {table_id, first}               ->  (the zero-copy path found a new segment)
 *                                            <-  SEGMENTS_OK {table_id, first, count} + [fds]
 *   BYE                                      ->  (or just close the socket)
 * A reply carries the seq of its request. One request at a time per connection.
 *
 * Data plane: the channel (shm/de_shm.h, "Channel"): struct de_sqe in, struct de_cqe out.
 * All offsets are into the channel's own data area; the daemon copies each descriptor
 * out, then checks op, table id, count <= max batch, every range against the data area,
 * alignment, and lengths against count and dim. A bad descriptor completes with
 * -EINVAL (or -E2BIG for count) and touches nothing else.
 *
 *   op          sqe fields                                     cqe
 *   LOOKUP      keys (count keys), vals out (count * dim f32),   res, count = found,
 *               status out if flags & DE_SQE_STATUS (count u8),  aux0 = created
 *               flags & DE_LOOKUP_CREATE: create missing keys;
 *               arg = training step
 *   UPDATE      keys, vals in (count * dim f32): assign values,  res, count = created
 *               creating missing keys; arg = step
 *   ERASE       keys                                              res, count = erased
 *   STATS       vals out: struct de_wire_stats                    res
 *   NOP         -                                                 res = 0
 *
 * Keys: an int64 table takes count u64 at keys_off (keys_len = 8 * count). A string
 * table takes count u32 lengths followed by the bytes of all strings back to back
 * (keys_len = 4 * count + sum of lengths, each length <= DE_MAX_KEY_BYTES); the daemon
 * maps each to de_key_from_string(table seed, ...) and keeps the string (for top-k,
 * sampling and export to give it back). The empty string is key 0: it reads as zeros.
 */
#ifndef DE_PROTO_H
#define DE_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "de_shm.h"

#define DE_PROTO_VERSION 1u
#define DE_MSG_MAGIC 0x314d4544u /* "DEM1" */
#define DE_MSG_MAX 4096u
#define DE_NAME_MAX 64u          /* bytes, NUL-terminated within */
#define DE_FDS_PER_MSG 250u      /* below the kernel's SCM_MAX_FD (253) */
#define DE_MAX_KEY_BYTES 65535u
#define DE_DEFAULT_SOCKET "/run/dynemb/dynemb.sock"

enum de_msg_type {
	DE_MSG_HELLO = 1,
	DE_MSG_HELLO_OK = 2,
	DE_MSG_OPEN = 3,
	DE_MSG_OPEN_OK = 4,
	DE_MSG_SEGMENTS = 5,
	DE_MSG_SEGMENTS_OK = 6,
	DE_MSG_ERROR = 7,
	DE_MSG_BYE = 8,
};

struct de_msg_hdr {
	uint32_t magic;   /* DE_MSG_MAGIC */
	uint16_t type;    /* enum de_msg_type */
	uint16_t version; /* DE_PROTO_VERSION */
	uint32_t len;     /* bytes of the whole message, header included */
	uint32_t seq;     /* the client's request number; a reply repeats it */
};

struct de_msg_hello {
	struct de_msg_hdr h;
	uint32_t sq_entries;  /* wanted; 0 = the daemon's default; the daemon may clamp */
	uint32_t pad;
	uint64_t data_bytes;  /* wanted data area; 0 = default */
	char name[DE_NAME_MAX]; /* for logs */
};

struct de_msg_hello_ok {
	struct de_msg_hdr h;
	uint32_t client_id;
	uint32_t sq_entries, cq_entries;
	uint32_t max_batch;   /* most keys in one descriptor */
	uint64_t data_bytes;
	/* SCM_RIGHTS: the channel memfd, read-write */
};

enum de_key_type { DE_KEYS_INT64 = 0, DE_KEYS_STRING = 1 };

/* A table's config as it travels; the same name with a different config is -EEXIST. */
struct de_wire_table_config {
	uint32_t dim, nslots, init, seg_buckets;
	float init_a, init_b, slot_init;
	uint32_t key_type;    /* enum de_key_type */
	uint64_t seed;
	uint32_t reserved[6]; /* optimizer, admission, eviction, durability: must be 0 today */
};

struct de_msg_open {
	struct de_msg_hdr h;
	char name[DE_NAME_MAX];
	struct de_wire_table_config cfg;
};

struct de_msg_open_ok {
	struct de_msg_hdr h;
	uint16_t table_id;    /* per connection */
	uint16_t pad;
	uint32_t dim;
	uint32_t key_type;
	uint32_t nsegments;   /* fds attached: the first min(nsegments, DE_FDS_PER_MSG) */
	uint64_t seed;
	/* SCM_RIGHTS: read-only fds of the table's arena segments 0.. */
};

struct de_msg_segments {
	struct de_msg_hdr h;
	uint16_t table_id;
	uint16_t pad;
	uint32_t first;       /* first segment wanted */
};

struct de_msg_segments_ok {
	struct de_msg_hdr h;
	uint16_t table_id;
	uint16_t pad;
	uint32_t first, count; /* fds attached for segments first..first+count-1 */
};

struct de_msg_error {
	struct de_msg_hdr h;
	int32_t err;          /* negative errno */
	uint32_t pad;
	char msg[240];        /* NUL-terminated: what was wrong, for the user */
};

/* Data plane. */
enum de_op { DE_OP_NOP = 0, DE_OP_LOOKUP = 1, DE_OP_UPDATE = 2, DE_OP_ERASE = 3, DE_OP_STATS = 4 };

#define DE_LOOKUP_CREATE 0x01u /* sqe.flags: create missing keys */
#define DE_SQE_STATUS 0x02u    /* sqe.flags: write count status bytes at status_off */

struct de_wire_stats {     /* STATS writes this at vals_off */
	uint64_t keys, rows_allocated, rows_free, row_bytes, index_bytes, arena_bytes;
	uint64_t segments, splits, dir_doublings, arena_segments;
	double load_factor;
	uint32_t dim, key_type;
	uint64_t reserved[4];
};

_Static_assert(sizeof(struct de_msg_hdr) == 16, "layout");
_Static_assert(sizeof(struct de_msg_hello) == 96, "layout");
_Static_assert(sizeof(struct de_msg_hello_ok) == 40, "layout");
_Static_assert(sizeof(struct de_wire_table_config) == 64, "layout");
_Static_assert(sizeof(struct de_msg_open) == 144, "layout");
_Static_assert(sizeof(struct de_msg_open_ok) == 40, "layout");
_Static_assert(sizeof(struct de_msg_segments) == 24, "layout");
_Static_assert(sizeof(struct de_msg_segments_ok) == 28, "layout");
_Static_assert(sizeof(struct de_msg_error) == 264, "layout");
_Static_assert(sizeof(struct de_wire_stats) == 128, "layout");

#endif /* DE_PROTO_H */
