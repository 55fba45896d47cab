/*
 * tables.c — dynembd's table registry and string-key store.
 *
 * Registry: tables by name, each in its own arena (pages and NUMA node from [pages]).
 * The same name with the same (normalized) config is the same table, shared by every
 * client that opens it; another config is -EEXIST. Only the control thread opens tables;
 * a table is freed only when the daemon exits or when it is dropped, which the control
 * plane allows only once no connection has it open, so workers may hold pointers freely.
 *
 * Configs arrive checked and normalized by the validators (validate_config.c), so two
 * configs that mean the same compare equal field by field; srv_config_differs
 * (validate_config.c) names the first field that differs (-EEXIST). The registry keeps
 * the normalized learning block in struct srv_table.learn for the admission, eviction
 * and durability layers to read, and the optimizer as a struct de_optim_config for the
 * workers' APPLY_GRADS.
 *
 * Memory (quota.h): a new table's reservation is sized from its budget
 * (srv_quota_table_reserve), so that its arena can never map more; the first segments
 * and the admission sketch are charged to the creator's quota before anything is
 * mapped, and every later segment through the arenas' charge hook (table_charge, any
 * thread: a refused growth is the write's -EDQUOT / -ENOSPC, logged once per table).
 * A table is freed (its charge given back) by discard or drop.
 *
 * Never: call the learning or persistence layers (the control plane attaches them after
 * srv_registry_open), or read t->rt / t->ps.
 *
 * String keys: a string table maps each string to de_key_from_string(seed, s) and keeps
 * the string, for top-k, sampling and export to give it back:
 *   - the bytes go into the TABLE's arena (so a read-only client mapping sees them too),
 *     as   u32 len, then len bytes   at an offset from de_arena_alloc (4-aligned);
 *   - an index table `names` (dim 2, its own small arena) maps key -> that offset, the
 *     u64 bit-copied into the two floats. A row of zeros (offset 0, never a valid
 *     allocation: the arena header lives there) means "being stored".
 * The first de_table_find_or_insert on `names` that CREATES the key owns the store; any
 * other thread sees FOUND and compares its string. Strings are never freed (erasing a key
 * keeps its string for when it comes back; arena memory is never returned anyway).
 *
 * Collisions: a fingerprint's kept string never changes, so srv_table_check_strings
 * compares every request's strings with it before any row is touched (and the request's
 * strings among themselves): another string of a kept fingerprint is -EEXIST, never a
 * merge. Its order closes the races: a row never exists before its string is kept
 * (a creating request on a table without admission keeps its new strings before it
 * creates rows; with admission, the lookup keeps the strings of the keys admitted just
 * before it creates them: learnops.c), so the first request of a fingerprint owns it;
 * writes are checked before they write, and a lookup without create AFTER it read (a
 * row it found had its string kept by then, or being stored: waited for). An ERASE of a
 * fingerprint with no string kept reads the row after the names: no row, nothing to
 * erase (the erase comes first); a row, the erase claims the fingerprint for its own
 * string before erasing (a creator that kept another string first refuses it).
 */
#include "tables.h"
#include "batch.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "validate.h"

void srv_registry_init(struct srv_registry *r, enum de_pages pages, int numa_node,
		       uint64_t segment_bytes, uint64_t reserve_bytes)
{
	*r = (struct srv_registry){ .pages = pages, .numa_node = numa_node,
				    .segment_bytes = segment_bytes, .reserve_bytes = reserve_bytes };
	pthread_mutex_init(&r->mu, NULL);
}

void srv_registry_lock(struct srv_registry *r)
{
	pthread_mutex_lock(&r->mu);
}

void srv_registry_unlock(struct srv_registry *r)
{
	pthread_mutex_unlock(&r->mu);
}

void srv_registry_set_quota(struct srv_registry *r, struct srv_quota *q, uint64_t table_bytes)
{
	r->quota = q;
	r->table_bytes = table_bytes;
}

static void table_free(struct srv_table *t)
{
	de_table_close(t->names);
	de_arena_destroy(t->names_arena);
	de_table_close(t->t);
	de_arena_destroy(t->arena);
	srv_quota_table_end(t->quota);
	free(t);
}

/* The arenas' charge hook: a new segment of a table's arena (or its name index). */
static int table_charge(void *ctx, uint64_t bytes, bool give_back)
{
	struct srv_table *t = ctx;
	if (give_back) {
		srv_quota_give_back(t->quota, bytes);
		return 0;
	}
	char msg[240];
	int err = srv_quota_charge(t->quota, bytes, msg, sizeof msg);
	if (err && !__atomic_exchange_n(&t->growth_logged, 1, __ATOMIC_RELAXED))
		srv_logf(SRV_LOG_WARN, SRV_KV(SRV_F_TABLE(t->name), SRV_F_UINT("bytes", bytes),
					     SRV_F_ERRNO(err)),
			 "table '%s' cannot grow: %s; writes that create rows fail "
			 "with %s until memory is given back (drop a table)", t->name, msg,
			 err == -EDQUOT ? "-EDQUOT" : "-ENOSPC");
	return err;
}

void srv_registry_destroy(struct srv_registry *r)
{
	for (struct srv_table *t = r->head, *n; t; t = n) {
		n = t->next;
		table_free(t);
	}
	r->head = NULL;
	r->count = 0;
	pthread_mutex_destroy(&r->mu);
}

static int make_arena(const struct srv_registry *r, const char *memfd_name, uint64_t seg,
		      uint64_t reserve, de_arena **out)
{
	struct de_arena_config ac = { .reserve_bytes = reserve, .segment_bytes = seg,
				      .pages = r->pages, .numa_node = r->numa_node,
				      .name = memfd_name };
	int err = de_arena_create(&ac, out);
	if (err && r->numa_node >= 0) {
		srv_logf(SRV_LOG_WARN, SRV_KV(SRV_F_STR("arena", memfd_name),
					     SRV_F_INT("numa_node", r->numa_node), SRV_F_ERRNO(err)),
			 "arena '%s' on NUMA node %d failed (%s); trying unbound", memfd_name,
			 r->numa_node, strerror(-err));
		ac.numa_node = DE_NUMA_NONE;
		err = de_arena_create(&ac, out);
	}
	return err;
}

static int table_create(struct srv_registry *r, uid_t uid, bool recovered, const char *name,
			const struct de_wire_table_config *w,
			const struct de_wire_learn_config *learn, struct srv_table **out, char *msg,
			size_t msgcap)
{
	struct srv_table *t = calloc(1, sizeof *t);
	if (!t)
		return -ENOMEM;
	snprintf(t->name, sizeof t->name, "%s", name);
	t->wcfg = *w;
	t->learn = *learn;
	t->has_optim = learn->optim.kind != DE_WOPT_NONE;
	if (t->has_optim)
		srv_optim_from_wire(&learn->optim, &t->optim);
	/* memory: the reservation from the budget, the sketch inside the budget, the first
	 * segments charged before they are mapped */
	uint64_t budget = learn->eviction.budget_bytes;
	uint64_t tbytes = r->table_bytes ? r->table_bytes : 16ull << 30;
	uint64_t reserve = srv_quota_table_reserve(budget, tbytes, r->reserve_bytes);
	uint64_t seg = r->segment_bytes < reserve ? r->segment_bytes : reserve;
	uint64_t names_reserve = srv_quota_names_reserve(reserve);
	bool strings = w->key_type == DE_KEYS_STRING;
	int err;
	if (learn->admission.mode == DE_WADMIT_COUNT) {
		uint64_t limit = budget ? budget : tbytes;
		t->sketch_bytes = de_admit_sketch_bytes(learn->admission.sketch_width,
							learn->admission.sketch_depth);
		if (!t->sketch_bytes || t->sketch_bytes > limit) {
			snprintf(msg, msgcap, "table '%s': the admission sketch of %u x %u counters "
				 "needs %llu MiB, more than the table's budget of %llu MiB (%s); ask "
				 "for a smaller admission.sketch_width or sketch_depth", name,
				 learn->admission.sketch_width, learn->admission.sketch_depth,
				 (unsigned long long)(t->sketch_bytes >> 20),
				 (unsigned long long)(limit >> 20),
				 budget ? "eviction.budget_bytes" : "the daemon's [quota] table_bytes");
			err = -EINVAL;
			goto fail;
		}
	}
	t->quota_uid = uid;
	if (r->quota) {
		uint64_t first = seg + (strings ? DE_ARENA_ALIGN : 0) + t->sketch_bytes;
		err = srv_quota_table_begin(r->quota, uid, name, first, recovered, &t->quota, msg,
					    msgcap);
		if (err)
			goto fail;
	}
	char mname[96];
	snprintf(mname, sizeof mname, "dynemb:%s", name);
	err = make_arena(r, mname, seg, reserve, &t->arena);
	if (err) {
		snprintf(msg, msgcap, "cannot create the arena of table '%s': %s", name, strerror(-err));
		goto fail;
	}
	if (t->quota)
		de_arena_set_charge_hook(t->arena, table_charge, t);
	struct de_table_config tc = { .dim = w->dim, .nslots = w->nslots, .init = (enum de_init)w->init,
				      .init_a = w->init_a, .init_b = w->init_b,
				      .slot_init = w->slot_init, .seed = w->seed,
				      .seg_buckets = w->seg_buckets };
	err = de_table_open(t->arena, &tc, &t->t);
	if (err) {
		snprintf(msg, msgcap, "cannot open table '%s': %s", name, strerror(-err));
		goto fail;
	}
	if (strings) {
		snprintf(mname, sizeof mname, "dynemb:%s:names", name);
		err = make_arena(r, mname, DE_ARENA_ALIGN, names_reserve, &t->names_arena);
		if (err) {
			snprintf(msg, msgcap, "cannot create the string index of '%s': %s", name,
				 strerror(-err));
			goto fail;
		}
		if (t->quota)
			de_arena_set_charge_hook(t->names_arena, table_charge, t);
		struct de_table_config nc = { .dim = 2, .seed = w->seed };
		err = de_table_open(t->names_arena, &nc, &t->names);
		if (err) {
			snprintf(msg, msgcap, "cannot open the string index of '%s': %s", name,
				 strerror(-err));
			goto fail;
		}
	}
	*out = t;
	return 0;
fail:
	table_free(t);
	return err;
}

int srv_registry_open(struct srv_registry *r, uid_t uid, bool recovered, const char *name,
		      const struct de_wire_table_config *cfg,
		      const struct de_wire_learn_config *learn, struct srv_table **out,
		      bool *created, char *msg, size_t msgcap)
{
	*created = false;
	for (struct srv_table *t = r->head; t; t = t->next) {
		if (strcmp(t->name, name))
			continue;
		char d[160];
		if (srv_config_differs(cfg, &t->wcfg, learn, &t->learn, d, sizeof d)) {
			snprintf(msg, msgcap, "table '%s' exists with another config: asked %s", name, d);
			return -EEXIST;
		}
		*out = t;
		return 0;
	}
	struct srv_table *t;
	int err = table_create(r, uid, recovered, name, cfg, learn, &t, msg, msgcap);
	if (err)
		return err;
	t->next = r->head;
	r->head = t;
	r->count++;
	*created = true;
	*out = t;
	return 0;
}

void srv_registry_discard(struct srv_registry *r, struct srv_table *t)
{
	for (struct srv_table **p = &r->head; *p; p = &(*p)->next)
		if (*p == t) {
			*p = t->next;
			r->count--;
			table_free(t);
			return;
		}
}

void srv_registry_drop(struct srv_registry *r, struct srv_table *t)
{
	srv_registry_discard(r, t);
}

struct srv_table *srv_registry_find(const struct srv_registry *r, const char *name)
{
	for (struct srv_table *t = r->head; t; t = t->next)
		if (!strcmp(t->name, name))
			return t;
	return NULL;
}

/* ---- string keys --------------------------------------------------------------------- */

/* The string a names row points at (off from the row): 0 with *p, *n; -EBADMSG for an
 * offset or length that does not lie in the arena. */
static int stored_at(struct srv_table *t, uint64_t off, const char **p, uint32_t *n)
{
	if (!de_arena_valid(t->arena, off, 4))
		return -EBADMSG;
	const char *q = de_arena_at(t->arena, off);
	uint32_t len;
	memcpy(&len, q, 4);
	if (len > DE_MAX_KEY_BYTES || !de_arena_valid(t->arena, off + 4, len))
		return -EBADMSG;
	*p = q + 4;
	*n = len;
	return 0;
}

/* How long a reader waits for a string another thread is storing (between its names
 * insert and its assign: a few microseconds) before it takes the key as unknown. */
#define STORING_SPINS 10000

/* The names row of key, waiting while it reads "being stored": *off 0 when unknown. */
static int names_offset(struct srv_table *t, uint64_t key, uint64_t *off)
{
	for (int i = 0;; i++) {
		float row[2];
		uint8_t st;
		int err = de_table_find(t->names, &key, 1, row, &st);
		if (err)
			return err;
		memcpy(off, row, sizeof *off);
		if (st != DE_FOUND || *off || i == STORING_SPINS)
			return 0;
		sched_yield();
	}
}

/* 0 when key's kept string is s (or none is kept), -EEXIST when it is another one. */
static int same_string(struct srv_table *t, uint64_t off, const void *s, uint32_t len)
{
	const char *p;
	uint32_t n;
	int err = stored_at(t, off, &p, &n);
	if (err)
		return err;
	return n == len && !memcmp(p, s, len) ? 0 : -EEXIST;
}

static int by_key(const void *a, const void *b, void *keys)
{
	const uint64_t *k = keys;
	uint64_t x = k[*(const uint32_t *)a], y = k[*(const uint32_t *)b];
	return x < y ? -1 : x > y;
}

/* Two keys of one request with one fingerprint and different strings: -EEXIST, *bad the
 * later one. */
static int batch_collision(const uint64_t *keys, const char *sbuf, const uint32_t *slen,
			   const uint64_t *soff, uint32_t n, uint32_t *bad)
{
	uint32_t *ix = malloc((size_t)n * sizeof *ix);
	if (!ix)
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++)
		ix[i] = i;
	qsort_r(ix, n, sizeof *ix, by_key, (void *)keys);
	int err = 0;
	for (uint32_t j = 1; j < n && !err; j++) {
		uint32_t a = ix[j - 1], b = ix[j];
		if (keys[a] != keys[b] || !keys[a])
			continue;
		if (slen[a] != slen[b] || memcmp(sbuf + soff[a], sbuf + soff[b], slen[a])) {
			*bad = a > b ? a : b;
			err = -EEXIST;
		}
	}
	free(ix);
	return err;
}

/* An ERASE's key i whose fingerprint has no string kept: a row of it now can only be
 * one whose string was not kept (a keep that failed after the create: learnops.c), or
 * one created since the names were read, whose creator kept its string first. No row:
 * nothing to erase (*absent). A row: the erase claims the fingerprint for its string
 * (-EEXIST when the row's creator kept another one first), then erases it. *vbuf: a
 * row's values, allocated on first use (the caller frees it). */
static int erase_unkept(struct srv_table *t, uint64_t key, const char *s, uint32_t len,
			float **vbuf, uint8_t *absent)
{
	if (!*vbuf && !(*vbuf = malloc(4ull * (t->wcfg.dim ? t->wcfg.dim : 1))))
		return -ENOMEM;
	uint8_t st;
	int err = de_table_find(t->t, &key, 1, *vbuf, &st);
	if (err)
		return err;
	*absent = st != DE_FOUND;
	return *absent ? 0 : srv_table_keep_string(t, key, s, len);
}

enum check_how { CHECK_READ, CHECK_CREATE, CHECK_ERASE };

static int check_strings(struct srv_table *t, const uint64_t *keys, const char *sbuf,
			 const uint32_t *slen, const uint64_t *soff, uint32_t n,
			 enum check_how how, uint8_t *absent, uint32_t *bad)
{
	if (!t->names)
		return -EINVAL;
	/* without admission a creating request creates every key: keeping its strings
	 * first costs nothing more, and makes the first request of a fingerprint own it */
	bool claim = how == CHECK_CREATE && t->learn.admission.mode == DE_WADMIT_ALL;
	if (absent)
		memset(absent, 0, n);
	if (n > 1) {
		int err = batch_collision(keys, sbuf, slen, soff, n, bad);
		if (err)
			return err;
	}
	enum { CHUNK = 256 };
	float rows[2 * CHUNK];
	uint8_t st[CHUNK];
	float *vbuf = NULL;
	int err = 0;
	for (uint32_t base = 0; base < n && !err; base += CHUNK) {
		uint32_t m = n - base < CHUNK ? n - base : CHUNK;
		err = de_table_find(t->names, keys + base, m, rows, st);
		for (uint32_t j = 0; j < m && !err; j++) {
			uint32_t i = base + j;
			if (!keys[i])
				continue; /* the empty string */
			if (st[j] != DE_FOUND && how == CHECK_ERASE) {
				err = erase_unkept(t, keys[i], sbuf + soff[i], slen[i], &vbuf, &absent[i]);
				if (err == -EEXIST)
					*bad = i;
				continue;
			}
			if (st[j] != DE_FOUND) { /* no string kept: the first creator keeps its own */
				err = claim ? srv_table_keep_string(t, keys[i], sbuf + soff[i], slen[i])
					    : 0;
				if (err == -EEXIST) /* kept by another request meanwhile */
					*bad = i;
				else /* another error: kept after the create, as without claim */
					err = 0;
				continue;
			}
			uint64_t off;
			memcpy(&off, rows + 2 * j, sizeof off);
			if (!off && (err = names_offset(t, keys[i], &off)))
				break;
			if (!off)
				continue;
			err = same_string(t, off, sbuf + soff[i], slen[i]);
			if (err)
				*bad = i;
		}
	}
	free(vbuf);
	return err;
}

int srv_table_check_strings(struct srv_table *t, const uint64_t *keys, const char *sbuf,
			    const uint32_t *slen, const uint64_t *soff, uint32_t n, bool creating,
			    uint32_t *bad)
{
	return check_strings(t, keys, sbuf, slen, soff, n, creating ? CHECK_CREATE : CHECK_READ,
			     NULL, bad);
}

int srv_table_check_erase_strings(struct srv_table *t, const uint64_t *keys, const char *sbuf,
				  const uint32_t *slen, const uint64_t *soff, uint32_t n,
				  uint8_t *absent, uint32_t *bad)
{
	return check_strings(t, keys, sbuf, slen, soff, n, CHECK_ERASE, absent, bad);
}

int srv_table_keep_string(struct srv_table *t, uint64_t key, const void *s, uint32_t len)
{
	if (!t->names)
		return -EINVAL;
	if (!key || len > DE_MAX_KEY_BYTES)
		return key ? -EINVAL : 0; /* the empty string is key 0: nothing to keep */
	float row[2];
	uint8_t st;
	int err = de_table_find_or_insert(t->names, &key, 1, row, &st, 0);
	if (err)
		return err;
	if (st != DE_CREATED) { /* someone else stores (or stored) it: the same string? */
		uint64_t off;
		memcpy(&off, row, sizeof off);
		if (!off && (err = names_offset(t, key, &off)))
			return err;
		return off ? same_string(t, off, s, len) : 0;
	}
	uint64_t off;
	err = de_arena_alloc(t->arena, 4ull + len, 4, &off);
	if (err) {
		size_t n;
		de_table_erase(t->names, &key, 1, &n); /* let a later creation try again */
		return err;
	}
	char *p = de_arena_at(t->arena, off);
	memcpy(p, &len, 4);
	memcpy(p + 4, s, len);
	memcpy(row, &off, sizeof off); /* the offset bit-copied into the two floats */
	/* assign publishes the row under the table's row protection; a reader that finds
	 * the key sees either zeros (being stored) or the complete offset */
	err = de_table_assign(t->names, &key, 1, row, NULL, 0);
	void (*kept)(void *, struct srv_table *, uint64_t, const void *, uint32_t) =
		__atomic_load_n(&t->string_kept, __ATOMIC_ACQUIRE);
	if (!err && kept) /* persistence: the strings file */
		kept(t->string_ctx, t, key, s, len);
	return err;
}

int srv_table_key_string(struct srv_table *t, uint64_t key, void *buf, size_t cap, uint32_t *len)
{
	if (!t->names)
		return -EINVAL;
	if (!key) {
		*len = 0;
		return 0;
	}
	float row[2];
	uint8_t st;
	int err = de_table_find(t->names, &key, 1, row, &st);
	if (err)
		return err;
	uint64_t off;
	memcpy(&off, row, sizeof off);
	if (st != DE_FOUND || !off)
		return -ENOENT;
	const char *p;
	uint32_t n;
	if ((err = stored_at(t, off, &p, &n)))
		return err;
	*len = n;
	if (n > cap)
		return -ENOSPC;
	memcpy(buf, p, n);
	return 0;
}

void srv_batch_keep_strings(const struct srv_batch *b)
{
	struct srv_table *t = b->t;
	if (t->wcfg.key_type != DE_KEYS_STRING)
		return;
	for (uint32_t i = 0; i < b->n; i++) {
		if (b->status[i] != DE_CREATED)
			continue;
		int err = srv_table_keep_string(t, b->keys[i], b->sbuf + b->soff[i], b->slen[i]);
		static struct srv_log_limit lim; /* per key: at most a line a second */
		uint64_t quiet;
		if (!err || !srv_log_limit_due(&lim, &quiet))
			continue;
		if (err == -EEXIST) /* not expected: strings are kept before their rows exist */
			srv_logf(SRV_LOG_WARN, SRV_KV(SRV_F_TABLE(t->name),
						     SRV_F_UINT("suppressed", quiet)),
				 "table '%s': a new key's string has the fingerprint "
				 "%016llx of another key's string, kept while this request ran",
				 t->name, (unsigned long long)b->keys[i]);
		else
			srv_logf(SRV_LOG_WARN, SRV_KV(SRV_F_TABLE(t->name), SRV_F_ERRNO(err),
						     SRV_F_UINT("suppressed", quiet)),
				 "table '%s': cannot keep a key string: %s", t->name, strerror(-err));
	}
}
