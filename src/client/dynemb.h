/*
 * dynemb.h — libdynemb, the client library of the dynemb sidecar: what a trainer or an
 * inference server links to reach its embeddings through shared memory.
 *
 * A de_client is one connection to dynembd (a unix socket for control, a shared-memory
 * channel for data). Open a table by (name, config): the same name and config is shared
 * with every other client of the daemon; the same name with another config is -EEXIST.
 * Lookups create missing keys (training) or not (serving, DE_READONLY); read-only lookups
 * of keys that exist are served zero-copy from the table's memory mapped read-only in
 * this process, and fall back to the daemon for the rest.
 *
 * Every function returns 0 or a negative errno; de_strerror explains any of them.
 *
 * Caveats:
 *   - A de_client is not thread-safe: use one per thread (each has its own channel).
 *   - Results of the blocking calls are copied into the caller's arrays. The async calls
 *     (de_submit / de_complete) leave them in the channel's data area until the request
 *     is completed and the next request reuses the space; de_request_vals gives that
 *     memory, so a framework can wrap it without a copy.
 *   - Batches larger than the daemon's max batch are split by the library.
 *   - String keys are addressed by a seeded 64-bit fingerprint (xxh3): two different
 *     strings share a row only if their fingerprints collide. With n distinct strings in
 *     a table the chance of any collision is about n^2 / 2^65: 3e-6 for 10 million,
 *     3e-4 for 100 million, 2.7% for a billion. The daemon keeps each key's string.
 */
#ifndef DYNEMB_H
#define DYNEMB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct de_client de_client;

struct de_connect_opts {
	const char *name;      /* shows in the daemon's log; may be NULL */
	uint32_t sq_entries;   /* 0: the daemon's default */
	uint64_t data_bytes;   /* 0: the daemon's default */
	int timeout_ms;        /* for each control request and blocking call; 0: 10000 */
};

/* Connect to the daemon at socket_path (NULL: /run/dynemb/dynemb.sock). opts may be NULL.
 * -ENOENT/-ECONNREFUSED: no daemon; -EACCES: this uid/gid is not on its allow-list;
 * -EPROTO: a daemon speaking another protocol version. */
int de_connect(const char *socket_path, const struct de_connect_opts *opts, de_client **out);
void de_close(de_client *c); /* NULL is fine */

enum de_key_kind { DE_INT64_KEYS = 0, DE_STRING_KEYS = 1 };
enum de_initializer { DE_ZEROS = 0, DE_CONSTANT, DE_UNIFORM, DE_TRUNC_NORMAL };

struct de_table_spec {
	const char *name;        /* 1..63 bytes */
	uint32_t dim;            /* 1..4096 */
	uint32_t nslots;         /* optimizer slots, 0..8 */
	enum de_initializer init;
	float init_a, init_b;    /* constant a; uniform [a, b); truncated normal mean a, stddev b */
	float slot_init;
	uint64_t seed;
	enum de_key_kind keys;
};

/* Open (or share) a table. out: a small table handle for this client. -EEXIST: the name
 * is taken with a different config; -EINVAL: a bad spec. */
int de_open(de_client *c, const struct de_table_spec *spec, int *table /* out */);
uint32_t de_table_dim_of(const de_client *c, int table); /* 0 for a bad handle */

#define DE_READONLY 0x1u /* lookups: do not create missing keys (they read as zeros) */

/* Per-key status of lookups (same values as the table's): */
#define DE_ST_MISSING 0
#define DE_ST_FOUND 1
#define DE_ST_CREATED 2

/*
 * Look up n int64 keys of an int64 table: out gets n * dim floats. status (may be NULL)
 * gets one of DE_ST_* per key. Without DE_READONLY missing keys are created with the
 * table's initializer; step is the training step recorded with each key.
 */
int de_lookup(de_client *c, int table, const uint64_t *keys, size_t n, float *out,
	      uint8_t *status, unsigned flags, uint64_t step);
/* The same for a string table: keys[i] of lens[i] bytes (lens NULL: NUL-terminated). */
int de_lookup_str(de_client *c, int table, const char *const *keys, const size_t *lens, size_t n,
		  float *out, uint8_t *status, unsigned flags, uint64_t step);

/* Assign values (n * dim floats) to keys, creating missing ones. created (may be NULL):
 * how many were created. */
int de_update(de_client *c, int table, const uint64_t *keys, size_t n, const float *values,
	      uint64_t step, size_t *created);
int de_update_str(de_client *c, int table, const char *const *keys, const size_t *lens, size_t n,
		  const float *values, uint64_t step, size_t *created);

int de_erase(de_client *c, int table, const uint64_t *keys, size_t n, size_t *erased);
int de_erase_str(de_client *c, int table, const char *const *keys, const size_t *lens, size_t n,
		 size_t *erased);

struct de_stats {
	uint64_t keys, rows_allocated, rows_free, row_bytes, index_bytes, arena_bytes;
	uint64_t segments, splits, dir_doublings, arena_segments;
	double load_factor;
	uint32_t dim;
};
int de_stats(de_client *c, int table, struct de_stats *out);

/*
 * Async: submit an int64 lookup without waiting; several may be in flight (up to the
 * channel's ring and data area). *req identifies it. de_complete waits for that request
 * (timeout_ms < 0: the connection's timeout) and gives its result; then de_request_vals
 * points at its n * dim floats in the channel's data area, valid until the next submit.
 */
int de_submit_lookup(de_client *c, int table, const uint64_t *keys, size_t n, unsigned flags,
		     uint64_t step, uint64_t *req /* out */);
int de_complete(de_client *c, uint64_t req, int timeout_ms);
const float *de_request_vals(de_client *c, uint64_t req);

/* Zero-copy counters of this client: lookups served from the read-only mapping, and keys
 * that had to go to the daemon. */
void de_zero_copy_counts(const de_client *c, uint64_t *local_keys, uint64_t *remote_keys);

const char *de_strerror(int err);

#ifdef __cplusplus
}
#endif
#endif /* DYNEMB_H */
