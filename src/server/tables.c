/*
 * tables.c — dynembd's table registry and string-key store.
 *
 * Registry: tables by name, each in its own arena (pages and NUMA node from [pages]).
 * The same name with the same (normalized) config is the same table, shared by every
 * client that opens it; another config is -EEXIST. Only the control thread opens tables;
 * tables are never closed before the daemon exits, so workers may hold pointers freely.
 *
 * String keys: a string table maps each string to de_key_from_string(seed, s) and keeps
 * the string, for top-k, sampling and export to give it back:
 *   - the bytes go into the TABLE's arena (so a read-only client mapping sees them too),
 *     as   u32 len, then len bytes   at an offset from de_arena_alloc (4-aligned);
 *   - an index table `names` (dim 2, its own small arena) maps key -> that offset, the
 *     u64 bit-copied into the two floats. A row of zeros (offset 0, never a valid
 *     allocation: the arena header lives there) means "being stored".
 * The first de_table_find_or_insert on `names` that CREATES the key owns the store; any
 * other thread sees FOUND and does nothing. Strings are never freed (erasing a key keeps
 * its string for when it comes back; arena memory is never returned anyway).
 */
#include "server.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void srv_registry_init(struct srv_registry *r, enum de_pages pages, int numa_node,
		       uint64_t segment_bytes, uint64_t reserve_bytes)
{
	*r = (struct srv_registry){ .pages = pages, .numa_node = numa_node,
				    .segment_bytes = segment_bytes, .reserve_bytes = reserve_bytes };
}

static void table_free(struct srv_table *t)
{
	de_table_close(t->names);
	de_arena_destroy(t->names_arena);
	de_table_close(t->t);
	de_arena_destroy(t->arena);
	free(t);
}

void srv_registry_destroy(struct srv_registry *r)
{
	for (struct srv_table *t = r->head, *n; t; t = n) {
		n = t->next;
		table_free(t);
	}
	r->head = NULL;
	r->count = 0;
}

int srv_name_check(const char name[DE_NAME_MAX], char *msg, size_t msgcap)
{
	const char *end = memchr(name, 0, DE_NAME_MAX);
	if (!end) {
		snprintf(msg, msgcap, "table name is not NUL-terminated within %u bytes", DE_NAME_MAX);
		return -EINVAL;
	}
	if (end == name) {
		snprintf(msg, msgcap, "table name is empty");
		return -EINVAL;
	}
	for (const char *p = name; p < end; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f) {
			snprintf(msg, msgcap, "table name has a control character at byte %zu",
				 (size_t)(p - name));
			return -EINVAL;
		}
	return 0;
}

int srv_wire_config_normalize(struct de_wire_table_config *c, char *msg, size_t msgcap)
{
	for (unsigned i = 0; i < 6; i++)
		if (c->reserved[i]) {
			snprintf(msg, msgcap, "config reserved[%u] must be 0 (optimizer, admission, "
				 "eviction and durability are not supported yet)", i);
			return -EINVAL;
		}
	if (c->key_type != DE_KEYS_INT64 && c->key_type != DE_KEYS_STRING) {
		snprintf(msg, msgcap, "key_type %u is neither 0 (int64) nor 1 (string)", c->key_type);
		return -EINVAL;
	}
	/* the table's own rules, one copy of them (libdeshm) */
	struct de_table_config t = { .dim = c->dim, .nslots = c->nslots,
				     .init = (enum de_init)c->init, .init_a = c->init_a,
				     .init_b = c->init_b, .slot_init = c->slot_init,
				     .seed = c->seed, .seg_buckets = c->seg_buckets };
	int err = de_table_config_check(&t, &t, msg, msgcap);
	if (err)
		return err;
	c->seg_buckets = t.seg_buckets;
	c->init_a = t.init_a;
	c->init_b = t.init_b;
	return 0;
}

/* Name the first field where two normalized configs differ, or return false. */
static bool config_differs(const struct de_wire_table_config *a, const struct de_wire_table_config *b,
			   char *out, size_t cap)
{
#define U(f) if (a->f != b->f) { snprintf(out, cap, #f " %llu, not %llu", \
	(unsigned long long)a->f, (unsigned long long)b->f); return true; }
#define F(f) if (memcmp(&a->f, &b->f, sizeof a->f)) { snprintf(out, cap, #f " %g, not %g", \
	(double)a->f, (double)b->f); return true; }
	U(dim) U(key_type) U(nslots) U(init) F(init_a) F(init_b) F(slot_init) U(seed) U(seg_buckets)
#undef U
#undef F
	return false;
}

static int make_arena(const struct srv_registry *r, const char *memfd_name, uint64_t seg,
		      uint64_t reserve, de_arena **out)
{
	struct de_arena_config ac = { .reserve_bytes = reserve, .segment_bytes = seg,
				      .pages = r->pages, .numa_node = r->numa_node,
				      .name = memfd_name };
	int err = de_arena_create(&ac, out);
	if (err && r->numa_node >= 0) {
		srv_log(SRV_LOG_WARN, "arena '%s' on NUMA node %d failed (%s); trying unbound",
			memfd_name, r->numa_node, strerror(-err));
		ac.numa_node = DE_NUMA_NONE;
		err = de_arena_create(&ac, out);
	}
	return err;
}

static int table_create(struct srv_registry *r, const char *name,
			const struct de_wire_table_config *w, struct srv_table **out, char *msg,
			size_t msgcap)
{
	struct srv_table *t = calloc(1, sizeof *t);
	if (!t)
		return -ENOMEM;
	snprintf(t->name, sizeof t->name, "%s", name);
	t->wcfg = *w;
	char mname[96];
	snprintf(mname, sizeof mname, "dynemb:%s", name);
	int err = make_arena(r, mname, r->segment_bytes, r->reserve_bytes, &t->arena);
	if (err) {
		snprintf(msg, msgcap, "cannot create the arena of table '%s': %s", name, strerror(-err));
		goto fail;
	}
	struct de_table_config tc = { .dim = w->dim, .nslots = w->nslots, .init = (enum de_init)w->init,
				      .init_a = w->init_a, .init_b = w->init_b,
				      .slot_init = w->slot_init, .seed = w->seed,
				      .seg_buckets = w->seg_buckets };
	err = de_table_open(t->arena, &tc, &t->t);
	if (err) {
		snprintf(msg, msgcap, "cannot open table '%s': %s", name, strerror(-err));
		goto fail;
	}
	if (w->key_type == DE_KEYS_STRING) {
		snprintf(mname, sizeof mname, "dynemb:%s:names", name);
		err = make_arena(r, mname, DE_ARENA_ALIGN, 4ull << 30, &t->names_arena);
		if (err) {
			snprintf(msg, msgcap, "cannot create the string index of '%s': %s", name,
				 strerror(-err));
			goto fail;
		}
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

int srv_registry_open(struct srv_registry *r, const char *name,
		      const struct de_wire_table_config *cfg, struct srv_table **out,
		      bool *created, char *msg, size_t msgcap)
{
	*created = false;
	for (struct srv_table *t = r->head; t; t = t->next) {
		if (strcmp(t->name, name))
			continue;
		char d[160];
		if (config_differs(cfg, &t->wcfg, d, sizeof d)) {
			snprintf(msg, msgcap, "table '%s' exists with another config: asked %s", name, d);
			return -EEXIST;
		}
		*out = t;
		return 0;
	}
	struct srv_table *t;
	int err = table_create(r, name, cfg, &t, msg, msgcap);
	if (err)
		return err;
	t->next = r->head;
	r->head = t;
	r->count++;
	*created = true;
	*out = t;
	return 0;
}

/* ---- string keys --------------------------------------------------------------------- */

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
	if (st != DE_CREATED)
		return 0; /* someone else stores (or stored) it */
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
	return de_table_assign(t->names, &key, 1, row, NULL, 0);
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
	if (!de_arena_valid(t->arena, off, 4))
		return -EBADMSG;
	const char *p = de_arena_at(t->arena, off);
	uint32_t n;
	memcpy(&n, p, 4);
	if (n > DE_MAX_KEY_BYTES || !de_arena_valid(t->arena, off + 4, n))
		return -EBADMSG;
	*len = n;
	if (n > cap)
		return -ENOSPC;
	memcpy(buf, p + 4, n);
	return 0;
}
