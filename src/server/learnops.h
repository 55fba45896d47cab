/*
 * learnops.h — PRIVATE to dynembd: learning beyond the optimizer (learnops.c):
 * admission, eviction under memory budgets with the disk tier, sampling, top-k, and the
 * ops SAMPLE, TOPK, KEY_STRINGS. An operations layer: above the registry and the
 * validators, below the worker and the control plane; it never calls persistence.
 *
 * The worker's paths take a batch description (batch.h), never the worker. Control-plane
 * calls: srv_learn_host_create / _destroy, srv_learn_table_attach.
 */
#ifndef DE_SRV_LEARNOPS_H
#define DE_SRV_LEARNOPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "batch.h"
#include "config.h"
#include "proto.h"
#include "tables.h"

struct srv_learn_host;

/* What logs evictions of persisted tables (wired by the layer above persistence and
 * learning). evicted: keys a pass erased (their rows in the tier, when it has one);
 * flush: make every logged record durable (0 or a negative errno). */
struct srv_learn_log {
	void (*evicted)(void *ctx, struct srv_table *t, const uint64_t *keys, size_t n);
	int (*flush)(void *ctx);
	void *ctx;
};

/* The daemon's one evictor and the [memory]/[learn] settings. Control thread. */
int srv_learn_host_create(const struct srv_config *cfg, struct srv_learn_host **out);
/* Stop the evictor's thread, free it, then free the learning state of every table it
 * attached (t->rt = NULL): after the workers stopped, before the registry's tables are
 * freed. NULL is fine. */
void srv_learn_host_destroy(struct srv_learn_host *h);
/* Give a table srv_registry_open just created its admission filter, disk tier and
 * eviction (after a success nothing may fail: the evictor holds the table). h may be
 * NULL (nothing to do). 0, or a negative errno with msg and t->rt left NULL.
 * Control thread, before the table is published. */
int srv_learn_table_attach(struct srv_learn_host *h, struct srv_table *t, char *msg,
			   size_t msgcap);

/* DROP, control thread, once no connection's worker serves t any more. First
 * evict_leave: an evicting table leaves the evictor (de_evict_remove_table: it waits
 * for a pass over t to end), so that nothing of the evictor reads t, its tier or its
 * persistence state (the eviction log) afterwards; before persistence forgets t. A DROP
 * refused after it (the catalog write failed) registers t again with evict_rejoin (0, or
 * a negative errno with msg: t then keeps its rows, unevicted). Then detach frees the
 * learning state (samplers stopped, the sketch and its saved file in data_dir removed;
 * t->rt = NULL). h may be NULL. */
void srv_learn_table_evict_leave(struct srv_table *t);
int srv_learn_table_evict_rejoin(struct srv_table *t, char *msg, size_t msgcap);
void srv_learn_table_detach(struct srv_learn_host *h, struct srv_table *t);
/* An operator's "evict now" (EVICT, control thread): one pass of the evictor over t
 * alone, down to its low watermark (de_evict_table_step), at most EVICT_NOW_MAX_ROWS
 * rows; *evicted: rows erased. -EOPNOTSUPP: t has no eviction; -EAGAIN: still
 * recovering; msg says which. */
int srv_learn_evict_now(struct srv_table *t, uint64_t *evicted, char *msg, size_t msgcap);

/* Set (lg) or clear (NULL) the eviction log, with the evictor's thread stopped meanwhile:
 * after persistence started, before the workers; cleared before persistence stops.
 * 0 or the errno of restarting the thread. */
int srv_learn_host_set_log(struct srv_learn_host *h, const struct srv_learn_log *lg);
/* After recovery (with a data_dir the evictor does not run before): drop from each
 * durable tier the rows the recovered table holds, then start the evictor. */
void srv_learn_recovered(struct srv_learn_host *h);
/* Persisted tables with COUNT admission: save the sketch (data_dir/admit-<hash>.das; one
 * table after its checkpoints, all at shutdown). Any thread; errors are logged. */
void srv_learn_save_table(struct srv_table *t);
void srv_learn_save_all(struct srv_learn_host *h);
/* Worker, around a write on t and its logging: begin returns whether it took t's pass
 * lock; end (given that) lets it go and runs the inline eviction the write left. */
bool srv_learn_write_begin(struct srv_table *t);
void srv_learn_write_end(struct srv_table *t, bool held);
/* ERASE on a persisted table with a durable tier: the keys leave the tier too (a
 * tombstone, fdatasync'ed, before the table's erase is logged), so a crash cannot bring a
 * tier copy of an erased key back. 0 or the tier's error (then nothing was erased). */
int srv_learn_erase(struct srv_table *t, const uint64_t *keys, uint32_t n);
/* t's LOOKUPs that create keys must be logged (they may restore rows from its durable
 * tier); their completions need not wait for the WAL. */
bool srv_learn_logs_creates(const struct srv_table *t);

/* LOOKUP with DE_LOOKUP_CREATE: admission decides which missing keys are created;
 * b->vals gets every key's row, b->status its status. */
int srv_learn_lookup_create(struct srv_batch *b);
/* UPDATE: assign b->vals to the keys (with admission: only keys the table or its disk
 * tier holds; the others' values are dropped and counted). */
int srv_learn_update(struct srv_batch *b);
/* APPLY_GRADS before the optimizer (b->vals: the copied gradients): create (admitted)
 * missing keys, restore tier rows, keep strings; drops the gradients of keys not
 * admitted by compacting b->keys and b->vals. b->n: in, the keys; out, those to step.
 * b->step: out, the row time to use. *created: keys created. */
int srv_learn_grads_prepare(struct srv_batch *b, uint32_t *created /* out */);
/* SAMPLE, TOPK, KEY_STRINGS (descriptor checked by srv_check_sqe) on b->t, with b's
 * arrays as scratch (b->cap: the daemon's max_batch). Fills q's res, count, aux. */
void srv_learn_execute(struct srv_batch *b, char *data, const struct de_sqe *e,
		       struct de_cqe *q);
/* Admission and eviction counters into a STATS reply. */
void srv_learn_stats(struct srv_table *t, struct de_wire_stats *ws);

#endif /* DE_SRV_LEARNOPS_H */
