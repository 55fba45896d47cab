/*
 * batch.h — PRIVATE to dynembd: the batch description, what the operations layers
 * (learnops.h, persist.h, and peers later) take instead of the worker.
 *
 * A batch names one table and the keys of one request, copied out of the client's data
 * area by its owner (the worker, worker.c), with the owner's scratch: the operations read
 * and write only what the batch points at, never the owner's own state, so a layer
 * between the operations and the worker (forwarding to peers) can build batches of its
 * own. The owner allocates every array (cap entries each, cap = the daemon's max_batch)
 * and keeps them for its life; a batch is used by one thread at a time.
 */
#ifndef DE_SRV_BATCH_H
#define DE_SRV_BATCH_H

#include <stdint.h>

#include "tables.h"

struct srv_batch {
	struct srv_table *t;
	uint32_t n;           /* keys[0..n) */
	uint32_t cap;         /* entries keys, status, slen and soff hold */
	uint64_t *keys;       /* fingerprints (the batch's own copy; admission compacts it) */
	uint8_t *status;      /* per key: DE_FOUND / DE_CREATED / DE_MISSING */
	float *vals;          /* n * dim: LOOKUP's output and UPDATE's input (in the data
	                         area), APPLY_GRADS' gradients (a copy; compacted with keys) */
	uint64_t step;        /* the request's step (its arg) */
	/* string tables: the copied key region and each key's string in it (NULL else) */
	const char *sbuf;
	uint32_t *slen;
	uint64_t *soff;
	uint32_t bad;         /* out, string tables: the key an -EEXIST names (proto.h) */
};

/* String tables: keep the strings of the keys status[] says were created (the registry's
 * store, srv_table_keep_string; failures are logged). Nothing for int tables. */
void srv_batch_keep_strings(const struct srv_batch *b);

#endif /* DE_SRV_BATCH_H */
