/*
 * validate.h — PRIVATE to dynembd: the pure validators, the bottom layer of the daemon.
 *
 * Every check of bytes a client sends (control packets, data-plane descriptors, string-key
 * regions, argument blocks) and every normalization of a table name or a wire config.
 * Pure: no daemon state is read or written, nothing is logged, nothing is allocated;
 * the same input gives the same result. They depend on nothing of the daemon, only on
 * proto.h and the libdeshm/libdelearn rules they reuse (de_table_config_check,
 * de_optim_check). The libFuzzer targets of tests/fuzz/ link this layer alone (the
 * dynembd_validate library, src/server/meson.build).
 *
 * Files: validate_msg.c (control packets), validate_sqe.c (descriptors and what they
 * point at), validate_config.c (names and wire configs). Callers: control.c, worker.c,
 * learnops.c, the persistence catalog reader, the registry, tests/test_daemon_learn.c.
 */
#ifndef DE_SRV_VALIDATE_H
#define DE_SRV_VALIDATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "de_learn.h"
#include "proto.h"

/* The largest max_batch the daemon's config accepts (config.c); the descriptor checks
 * take any max_batch up to it. */
#define SRV_MAX_BATCH_LIMIT (1u << 20)

/* true when all n bytes at p are 0 (reserved fields, padding); validate_msg.c */
bool srv_all_zero(const void *p, size_t n);

/* ---- control packets (validate_msg.c) --------------------------------------------------- */

/* A control request, copied out of its packet. */
union srv_msg {
	struct de_msg_hdr h;
	struct de_msg_hello hello;
	struct de_msg_open open;
	struct de_msg_segments segments;
	struct de_msg_snapshot snapshot;
	struct de_msg_export exp;
	struct de_msg_import imp;
	struct de_msg_drop drop;
	struct de_msg_tables tables;   /* TABLES, OPSTATS */
	struct de_msg_by_name by_name; /* STATS_BY_NAME, EVICT */
	struct de_msg_log_level log_level;
	struct de_msg_serve_load serve_load;
	struct de_msg_serve_open serve_open;
};

/* The exact length of a request a client may send (HELLO, OPEN, SEGMENTS, BYE, SNAPSHOT,
 * EXPORT, IMPORT, DROP, STATUS, TABLES, STATS_BY_NAME, EVICT, LOG_LEVEL, OPSTATS,
 * SERVE_LOAD, SERVE_OPEN); 0 for any
 * other type. The one table srv_check_msg frames by. */
size_t srv_request_len(uint16_t type);

/*
 * Check one control packet of n bytes (control.c): trunc (MSG_TRUNC), size, magic, len,
 * a request type with its exact length (srv_request_len); then the order (hello_done:
 * this connection said HELLO already; HELLO must come first and only once); then the
 * version of any request but HELLO (a HELLO's version is checked after the allow-list, in
 * control.c); then an OPEN's name (srv_name_check) and config (srv_wire_config_normalize,
 * then srv_learn_config_normalize, in place in out->open.cfg and out->open.learn), and
 * the fields of SNAPSHOT, EXPORT, IMPORT (srv_check_persist_msg).
 * Always sets *out (out->h: the header, zeros when n < 16; the body once the framing and
 * order are good) and, on error, msg (the ERROR reply's text). Returns 0;
 * -EBADMSG: malformed (the daemon closes); -EPROTO: out of order or another version
 * (closes); -EINVAL: an OPEN, SNAPSHOT, EXPORT or IMPORT with bad fields (error reply,
 * stays open).
 */
int srv_check_msg(const void *buf, size_t n, bool trunc, bool hello_done, union srv_msg *out,
		  char *msg, size_t msgcap);
/* srv_check_msg's part for SNAPSHOT, EXPORT, IMPORT: names, flags, pads, paths
 * (NUL-terminated, absolute, no "." or ".." component). 0 or -EINVAL + msg. */
int srv_check_persist_msg(union srv_msg *m, char *msg, size_t cap);

/* ---- data-plane descriptors (validate_sqe.c) -------------------------------------------- */

/*
 * Check a data-plane descriptor (worker.c) before anything reads the data area: op;
 * table < ntables; for STATS no flags and an 8-aligned output of at least
 * sizeof(struct de_wire_stats); else count <= max_batch (-E2BIG), only the flags the op
 * allows, keys_off 8-aligned, vals_off 4-aligned and vals_len == count * dim * 4
 * (LOOKUP, UPDATE, APPLY_GRADS), status (DE_SQE_STATUS: count bytes; APPLY_GRADS instead:
 * with DE_GRAD_LR status_off is a finite lr > 0 as double bits, without it 0), every
 * range inside a data area of data_bytes, and keys_len == 8 * count (int64 keys) or >= 4 * count (string
 * keys; their lengths go through srv_check_string_keys on the copied region).
 * dim and key_type: those of table e->table (unused when it is not < ntables).
 * 0 (a NOP always), -EINVAL or -E2BIG.
 */
int srv_check_sqe(const struct de_sqe *e, uint32_t ntables, uint32_t dim, uint32_t key_type,
		  uint32_t max_batch, uint64_t data_bytes);
/*
 * Check a string-key region of len bytes (a copy: count u32 lengths, then the strings
 * back to back): len >= 4 * count, each length <= DE_MAX_KEY_BYTES, the strings fill the
 * region exactly. Writes slen[0..count) and soff[0..count) (offset of each string in the
 * region). 0 or -EINVAL.
 */
int srv_check_string_keys(const void *region, uint64_t len, uint32_t count, uint32_t *slen,
			  uint64_t *soff);
/* srv_check_sqe's part for SAMPLE, TOPK and KEY_STRINGS (proto.h states the rules).
 * 0, -EINVAL or -E2BIG. */
int srv_check_learn_sqe(const struct de_sqe *e, uint32_t dim, uint32_t key_type,
			uint32_t max_batch, uint64_t data_bytes);
/* SAMPLE's argument block (a copy), against the descriptor: kind, unique, power,
 * num_sampled in 1..min(max_batch, DE_SAMPLE_MAX), reserved, and vals_len == 13 * ns +
 * 4 * count. 0, -EINVAL or -E2BIG. */
int srv_check_sample_args(const struct de_wire_sample_args *a, const struct de_sqe *e,
			  uint32_t max_batch);

/* ---- names and wire configs (validate_config.c) ----------------------------------------- */

/* Check a table name from the wire: 1..63 bytes, NUL-terminated within DE_NAME_MAX,
 * printable. -EINVAL with a message. */
int srv_name_check(const char name[DE_NAME_MAX], char *msg, size_t msgcap);
/* Check and normalize a config from the wire (as libdeshm normalizes it). */
int srv_wire_config_normalize(struct de_wire_table_config *c, char *msg, size_t msgcap);
/*
 * Check and normalize a learning config from the wire (proto.h states every rule), with
 * its table config c (already normalized): reserved fields 0, modes known, fields a mode
 * does not use 0, ranges; the optimizer through de_optim_check. Fills the defaults of
 * "0 = default" fields, and c->nslots = de_optim_slots(kind) when c->nslots is 0;
 * c->nslots below what the optimizer needs is -EINVAL. Idempotent. 0 or -EINVAL + msg.
 */
int srv_learn_config_normalize(struct de_wire_learn_config *l, struct de_wire_table_config *c,
			       char *msg, size_t msgcap);
/*
 * Two normalized configs (a: the one asked for, b: the table's): false when they are the
 * same table; else true with out naming the first field that differs, as
 * "<field> <asked>, not <the table's>", enums by name (the optimizer before nslots,
 * whose 0 means "what the optimizer needs"), floats as written (the shortest text that
 * reads back to the same value). The table's seed is not echoed. For -EEXIST (tables.c).
 */
bool srv_config_differs(const struct de_wire_table_config *a, const struct de_wire_table_config *b,
			const struct de_wire_learn_config *la, const struct de_wire_learn_config *lb,
			char *out, size_t cap);
/* learn.optim (kind != NONE, checked) as struct de_optim_config. */
void srv_optim_from_wire(const struct de_wire_optim *w, struct de_optim_config *out /* out */);
/* The name of a wire optimizer kind ("none", "sgd", ... "rmsprop"; "?" past them). */
const char *srv_optim_wire_name(uint32_t kind);

#endif /* DE_SRV_VALIDATE_H */
