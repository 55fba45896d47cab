/*
 * test_powerloss.c — power loss at every write boundary of libdeuring (WAL, snapshots,
 * manifest, gc, recovery's own truncation), in the manner of CrashMonkey, ALICE and
 * SQLite's crash tests. Needs -Dfault_injection=true (SKIP otherwise).
 *
 * 1. Record. A workload runs in this process against uring/ (two durable tables: puts and
 *    erases appended through de_wal_append, de_wal_sync on about half of them, periodic
 *    full and incremental checkpoints with their gc, 64 KiB segments that roll, one
 *    clean restart through de_persist_recover and de_wal_open) while de_persist_plog
 *    logs every write (with a copy of its bytes), write completion, fsync and its
 *    completion, directory fsync, create, rename, unlink, ftruncate and mkdir, in order.
 *    The oracle is the test's own: for each key, every value it was given (row and meta
 *    follow from (key, step): gen_row) with the log position at which it was applied and
 *    the position at which a de_wal_sync covering it returned (acknowledged).
 *
 * 2. Replay (this file's own code; it shares nothing with uring/). A cut c keeps events
 *    0..c-1. The disk model, per file (inode) and per directory:
 *    - a write is durable when an fsync of its file completed before c and covers it: the
 *      write completed before that fsync was queued, or it is in the fsync's link chain
 *      (the WRITEs queued with IOSQE_IO_LINK right before the FSYNC). A ftruncate (and
 *      O_TRUNC of an existing file) is durable with the file's next completed fsync.
 *    - every other write queued before c may have reached the disk or not, or in part:
 *      any subset of its 512-byte sectors (torn). Applied in issue order; a file is as
 *      long as the writes applied to it make it; unwritten gaps read zero.
 *    - the entries of a directory (create, rename, unlink, mkdir) are durable up to its
 *      last completed directory fsync; after it, any prefix of the later entry operations
 *      (a journaling file system commits them in order; rename is atomic).
 *    For each cut, several states: the least the disk keeps (nothing optional), the most
 *    (everything issued), and random ones (each optional write kept, dropped or torn;
 *    a random prefix of the entry operations). Each state is written into a fresh
 *    directory with plain pwrite.
 *
 * 3. Check, on each state: de_persist_recover into fresh tables must succeed, and every
 *    key must hold a value the oracle allows: one of the values given at or after its last
 *    value acknowledged before c and applied before c (absent is a value: never given,
 *    or erased) — so every acknowledged sync write is there, and a row is never one that
 *    was not written (the whole row and meta are compared). Then the life goes on:
 *    de_wal_open on the recovered directory, one more sync put, close, recover again:
 *    the tables must be exactly the first recovery's plus that put (this catches LSNs
 *    that go back after a truncating recovery: the put would be skipped).
 *    A refusal to recover is never accepted here: every state of the model is one that a
 *    real disk can hold after a power loss, and none alters a byte that was durable, so
 *    the protocol (write, fsync, rename, fsync the directory; a torn WAL tail is cut) has
 *    to recover each. Damage to durable bytes (bit rot, a lying disk), where refusing
 *    (exit status 3 in the daemon) is right, is not in the model.
 *
 * Sizes: DE_POWERLOSS_CUTS (cut points tried, spread evenly over the log; default 200,
 * "all" = every event boundary), DE_POWERLOSS_STATES (states per cut; default 3: least,
 * most, one random), DE_POWERLOSS_OPS (workload records; default 400), DE_POWERLOSS_SEED,
 * DE_POWERLOSS_WINDOW_MS (a group-commit thread: flushes concurrent with checkpoints).
 * Figures go to stderr; DE_POWERLOSS_DUMP=1 prints the log (each event with the position
 * that makes it durable). The model is the strict one everywhere (see wal_and_checkpoints);
 * DE_POWERLOSS_LENIENT=1 makes the daemon test use the lenient one.
 */
#ifdef DE_MINI_CRITERION
#include "../mini_criterion.h"
#else
#include <criterion/criterion.h>
#endif
#include <fcntl.h>
#include <stdarg.h>

#include "persist_util.h"
#ifdef DE_POWERLOSS_DAEMON
#include "dynemb.h"
#include "../daemon_util.h"
#endif

#ifdef DE_FAULT_INJECTION

#define NKEYS 48   /* keys per table */
#define NTAB 2     /* table ids 1 and 2 */
#define SECTOR 512u
#define STEP_AFTER 1000000u /* the step of the put made after a recovery */

/* ---- the log ------------------------------------------------------------------------- */

struct ev {
	enum de_plog_op op;
	uint64_t id;
	char *path, *path2; /* relative to the base directory ("" for the base itself) */
	uint64_t off, len;
	unsigned char *data;
	bool linked;
};

struct plog {
	const char *base; /* absolute; events outside it are ignored */
	size_t blen;
	struct ev *v;
	size_t n, cap;
};

static char *rel(struct plog *l, const char *p)
{
	if (!p)
		return NULL;
	if (strncmp(p, l->base, l->blen) || (p[l->blen] && p[l->blen] != '/'))
		return NULL;
	p += l->blen;
	return strdup(*p == '/' ? p + 1 : p);
}

static void plog_hook(void *ctx, const struct de_plog_event *e)
{
	struct plog *l = ctx;
	struct ev x = { .op = e->op, .id = e->id, .off = e->off, .len = e->len,
			.linked = e->linked };
	bool done = e->op == DE_PLOG_WRITE_DONE || e->op == DE_PLOG_FSYNC_DONE;
	x.path = rel(l, e->path);
	x.path2 = rel(l, e->path2);
	if (!done && !x.path) {
		free(x.path2);
		return; /* not ours */
	}
	if (e->op == DE_PLOG_WRITE) {
		x.data = xcalloc(1, e->len ? e->len : 1);
		memcpy(x.data, e->data, e->len);
	}
	if (l->n == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 1024;
		l->v = realloc(l->v, l->cap * sizeof *l->v);
		cr_assert_not_null(l->v);
	}
	l->v[l->n] = x;
	__atomic_store_n(&l->n, l->n + 1, __ATOMIC_RELEASE); /* read by the workload's thread */
}

static void plog_free(struct plog *l)
{
	for (size_t i = 0; i < l->n; i++) {
		free(l->v[i].path);
		free(l->v[i].path2);
		free(l->v[i].data);
	}
	free(l->v);
	memset(l, 0, sizeof *l);
}

/* ---- the oracle ---------------------------------------------------------------------- */

/* One value given to a key: step 0 = erased (absent). */
struct val {
	uint64_t step;
	size_t applied; /* log position when it was in the table */
	size_t acked;   /* log position when a sync covering it returned; SIZE_MAX: never */
	uint64_t lsn;
};

struct hist {
	struct val *v;
	size_t n, cap;
};

struct oracle {
	struct hist h[NTAB][NKEYS];
};

static size_t env_size(const char *name, size_t dflt)
{
	const char *s = getenv(name);
	if (!s || !*s)
		return dflt;
	if (!strcmp(s, "all"))
		return SIZE_MAX;
	return (size_t)strtoull(s, NULL, 10);
}

#ifndef DE_POWERLOSS_DAEMON
/* ---- the workload (recorded) --------------------------------------------------------- */

/* the log's length now (the hook may run on the WAL's own thread meanwhile) */
static size_t plog_now(const struct plog *l)
{
	return __atomic_load_n(&l->n, __ATOMIC_ACQUIRE);
}

static void hist_add(struct hist *h, struct val v)
{
	if (h->n == h->cap) {
		h->cap = h->cap ? 2 * h->cap : 8;
		h->v = realloc(h->v, h->cap * sizeof *h->v);
		cr_assert_not_null(h->v);
	}
	h->v[h->n++] = v;
}

static void oracle_ack(struct oracle *o, uint64_t lsn, size_t at)
{
	for (int t = 0; t < NTAB; t++)
		for (int k = 0; k < NKEYS; k++)
			for (size_t j = 0; j < o->h[t][k].n; j++) {
				struct val *v = &o->h[t][k].v[j];
				if (v->lsn <= lsn && v->acked == SIZE_MAX)
					v->acked = at;
			}
}

/* What a table holds for key index i: step (0: absent) and whether row and meta are
 * exactly gen_row(i, step). */
static uint64_t read_key(de_table *t, size_t i, bool *exact)
{
	uint64_t k = key_of(i);
	struct get_ctx g = { 0 };
	uint8_t st;
	cr_assert_eq(de_table_apply(t, &k, 1, false, get_row, &g, &st, DE_STEP_KEEP), 0);
	*exact = true;
	if (!g.got.present)
		return 0;
	struct ref_row w = gen_row(i, g.got.last_step);
	*exact = g.got.last_step != 0 && !memcmp(g.got.row, w.row, sizeof w.row) &&
		 g.got.freq == w.freq && g.got.aux == w.aux;
	return g.got.last_step;
}


struct life {
	char dir[300];
	struct tab t[NTAB];
	de_dirty *d[NTAB];
	bool need_full[NTAB]; /* the rows replay brought back are in no dirty set */
	de_wal *w;
};

/* window_ms (DE_POWERLOSS_WINDOW_MS, default 0): with a group-commit thread, its flushes
 * run concurrently with the checkpoints and syncs of the workload */
static struct de_wal_options wopt = { .segment_bytes = DE_WAL_MIN_SEGMENT,
				      .buffer_bytes = 4096, .log = quiet_log };

static void life_start(struct life *L)
{
	struct de_recover_table rt[NTAB];
	for (int t = 0; t < NTAB; t++) {
		L->t[t] = mk_table();
		cr_assert_eq(de_dirty_create(&L->d[t]), 0);
		L->need_full[t] = true;
		rt[t] = (struct de_recover_table){ (uint32_t)t + 1, L->t[t].t };
	}
	struct de_recover_report rep;
	int err = de_persist_recover(L->dir, rt, NTAB, quiet_log, NULL, &rep);
	cr_assert_eq(err, 0, "recover: %s", rep.message);
	struct de_wal_options o = wopt;
	o.start_lsn = rep.next_lsn;
	cr_assert_eq(de_wal_open(L->dir, &o, &L->w), 0);
}

static void life_stop(struct life *L)
{
	cr_assert_eq(de_wal_close(L->w), 0);
	for (int t = 0; t < NTAB; t++) {
		rm_table(&L->t[t]);
		de_dirty_destroy(L->d[t]);
	}
}

/* Run the workload in base/data (made before recording when !fresh_dir), logging into l. */
static void record(struct plog *l, struct oracle *o, const char *base, bool fresh_dir,
		   size_t nops, uint64_t seed)
{
	struct life L;
	snprintf(L.dir, sizeof L.dir, "%s/data", base);
	if (!fresh_dir)
		cr_assert_eq(mkdir(L.dir, 0755), 0);
	l->base = base;
	l->blen = strlen(base);
	de_persist_plog(plog_hook, l);
	life_start(&L);
	uint64_t step = 1, keys[8];
	size_t idx[8];
	for (size_t op = 0; op < nops; op++) {
		int t = (int)rng_below(&seed, NTAB);
		size_t n = 1 + rng_below(&seed, 8);
		for (size_t k = 0; k < n; k++) {
			idx[k] = rng_below(&seed, NKEYS);
			for (size_t j = 0; j < k; j++)
				if (idx[j] == idx[k])
					idx[k] = (idx[k] + 1) % NKEYS, j = (size_t)-1;
		}
		struct de_wal_batch b = { .table_id = (uint32_t)t + 1, .keys = keys, .n = n,
					  .dirty = L.d[t] };
		struct ref scratch = ref_new(NKEYS);
		bool erase = rng_below(&seed, 5) == 0;
		uint64_t s = step++;
		if (erase) {
			erase_keys(L.t[t].t, &scratch, idx, n, keys);
			b.type = DE_WAL_ERASE;
		} else {
			put_keys(L.t[t].t, &scratch, idx, n, s, keys);
			b.type = DE_WAL_PUT;
			b.table = L.t[t].t;
		}
		free(scratch.r);
		uint64_t lsn;
		size_t applied = plog_now(l);
		cr_assert_eq(de_wal_append(L.w, &b, &lsn), 0);
		for (size_t k = 0; k < n; k++)
			hist_add(&o->h[t][idx[k]], (struct val){ erase ? 0 : s, applied, SIZE_MAX,
								  lsn });
		if (rng_below(&seed, 2)) {
			cr_assert_eq(de_wal_sync(L.w, lsn), 0);
			oracle_ack(o, lsn, plog_now(l));
		}
		if (op % 50 == 49) {
			int ct = (int)rng_below(&seed, NTAB);
			unsigned fl = rng_below(&seed, 3) == 0 || L.need_full[ct] ?
				      DE_CHECKPOINT_FULL : 0;
			L.need_full[ct] = false;
			cr_assert_eq(de_persist_checkpoint(L.dir, L.w, L.d[ct], L.t[ct].t,
							   (uint32_t)ct + 1, fl, NULL, NULL, NULL), 0);
		}
		if (op == nops / 2) { /* a clean restart: recovery and open are recorded too */
			life_stop(&L);
			life_start(&L);
		}
	}
	cr_assert_eq(de_wal_sync(L.w, de_wal_next_lsn(L.w) - 1), 0);
	oracle_ack(o, de_wal_next_lsn(L.w) - 1, plog_now(l));
	de_persist_plog(NULL, NULL);
	life_stop(&L);
}

#endif /* !DE_POWERLOSS_DAEMON */

/* ---- the replayer -------------------------------------------------------------------- */

struct model {
	const struct plog *l;
	bool lenient;   /* a write completed before its fsync COMPLETED counts as covered */
	size_t *cover;  /* per event: WRITE / TRUNCATE: position of the FSYNC_DONE that first
			   makes it durable (SIZE_MAX: none); namespace ops: of the DIRSYNC */
	uint32_t *ino;  /* per event: the inode it acts on (data ops; 0: none) */
	uint32_t nino;
};

/* Event i creates, renames or removes a directory entry. */
static bool is_entry_op(const struct model *m, size_t i);

/* A directory entry operation's directory: "" (base) for "data", else "data". */
static bool in_dir(const char *path, const char *dir)
{
	const char *s = strrchr(path, '/');
	size_t n = s ? (size_t)(s - path) : 0;
	return strlen(dir) == n && !strncmp(path, dir, n);
}

struct nsent {
	char *name;
	uint32_t ino;
};

struct ns {
	struct nsent e[512];
	size_t n;
};

static struct nsent *ns_find(struct ns *s, const char *name)
{
	for (size_t i = 0; i < s->n; i++)
		if (!strcmp(s->e[i].name, name))
			return &s->e[i];
	return NULL;
}

static void ns_del(struct ns *s, const char *name)
{
	struct nsent *e = ns_find(s, name);
	if (e) {
		free(e->name);
		*e = s->e[--s->n];
	}
}

static void ns_put(struct ns *s, const char *name, uint32_t ino)
{
	struct nsent *e = ns_find(s, name);
	if (e) {
		e->ino = ino;
		return;
	}
	cr_assert_lt(s->n, 512);
	s->e[s->n++] = (struct nsent){ strdup(name), ino };
}

static void ns_clear(struct ns *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->e[i].name);
	s->n = 0;
}

static bool is_ns_op(enum de_plog_op op)
{
	return op == DE_PLOG_RENAME || op == DE_PLOG_UNLINK || op == DE_PLOG_MKDIR;
}

/* the directory an entry operation changes: 0 the base (the data directory's own entry),
 * 1 the data directory */
static int entry_dir(const struct ev *e)
{
	return in_dir(e->path, "") ? 0 : 1;
}

/* The position of the event with id among pos[0..n) (ids grow with the position). */
static size_t find_id(const struct plog *l, const size_t *pos, size_t n, uint64_t id)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (l->v[pos[mid]].id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < n && l->v[pos[lo]].id == id ? pos[lo] : SIZE_MAX;
}

/* The position of the FSYNC_DONE of the FSYNC at f (SIZE_MAX: it never completed). */
static size_t find_done(const struct plog *l, size_t f)
{
	for (size_t j = f + 1; j < l->n; j++)
		if (l->v[j].op == DE_PLOG_FSYNC_DONE && l->v[j].id == l->v[f].id)
			return j;
	return SIZE_MAX;
}

/* Which inode each data op acts on, which CREATE makes a new entry, and when each op
 * becomes durable. */
static void model_build(struct model *m, const struct plog *l, bool lenient)
{
	m->l = l;
	m->lenient = lenient;
	m->cover = xcalloc(l->n + 1, sizeof *m->cover);
	m->ino = xcalloc(l->n + 1, sizeof *m->ino);
	struct ns cur = { .n = 0 };
	m->nino = 1;
	size_t *wr = xcalloc(l->n + 1, sizeof *wr), *fs = xcalloc(l->n + 1, sizeof *fs);
	size_t nwr = 0, nfs = 0;
	for (size_t i = 0; i < l->n; i++) {
		const struct ev *e = &l->v[i];
		m->cover[i] = SIZE_MAX;
		switch (e->op) {
		case DE_PLOG_CREATE: {
			struct nsent *x = ns_find(&cur, e->path);
			if (x) {
				m->ino[i] = x->ino; /* O_TRUNC of an existing file: a data op */
			} else {
				m->ino[i] = m->nino++;
				ns_put(&cur, e->path, m->ino[i]);
				m->ino[i] |= 0x80000000u; /* a new entry: a namespace op too */
			}
			break;
		}
		case DE_PLOG_RENAME: {
			struct nsent *x = ns_find(&cur, e->path);
			cr_assert_not_null(x, "rename of unknown %s", e->path);
			uint32_t ino = x->ino;
			ns_del(&cur, e->path);
			ns_put(&cur, e->path2, ino);
			break;
		}
		case DE_PLOG_UNLINK:
			ns_del(&cur, e->path);
			break;
		case DE_PLOG_WRITE:
		case DE_PLOG_TRUNCATE:
		case DE_PLOG_FSYNC: {
			struct nsent *x = ns_find(&cur, e->path);
			cr_assert_not_null(x, "op %d on unknown %s", e->op, e->path);
			m->ino[i] = x->ino;
			if (e->op == DE_PLOG_WRITE)
				wr[nwr++] = i;
			if (e->op == DE_PLOG_FSYNC)
				fs[nfs++] = i;
			break;
		}
		default:
			break;
		}
	}
	ns_clear(&cur);
	/* durability of data ops. A write is covered by the first fsync of its file that
	 * completed and was queued after the write completed (lenient: that completed after
	 * it), or whose link chain holds it; a truncate by the first completed fsync of its
	 * file queued after it. */
	for (size_t i = 0; i < l->n; i++) {
		const struct ev *e = &l->v[i];
		if (e->op == DE_PLOG_FSYNC_DONE) {
			size_t f = find_id(l, fs, nfs, e->id);
			cr_assert_neq(f, SIZE_MAX);
			for (size_t j = f; j-- > 0 && l->v[j].op == DE_PLOG_WRITE && l->v[j].linked &&
					   m->ino[j] == m->ino[f];)
				if (m->cover[j] > i)
					m->cover[j] = i;
			continue;
		}
		size_t w = i; /* the op whose cover is sought, from position i on */
		if (e->op == DE_PLOG_WRITE_DONE)
			w = find_id(l, wr, nwr, e->id);
		else if (!(e->op == DE_PLOG_TRUNCATE || (e->op == DE_PLOG_CREATE && !(m->ino[i] >> 31))))
			continue;
		cr_assert_neq(w, SIZE_MAX);
		uint32_t ino = m->ino[w] & 0x7fffffffu;
		for (size_t j = i + 1; j < l->n; j++) {
			const struct ev *x = &l->v[j];
			size_t done = SIZE_MAX;
			bool late = lenient && e->op == DE_PLOG_WRITE_DONE;
			if (x->op == DE_PLOG_FSYNC && m->ino[j] == ino && !late) {
				done = find_done(l, j);
			} else if (x->op == DE_PLOG_FSYNC_DONE && late) {
				size_t f = find_id(l, fs, nfs, x->id);
				if (f != SIZE_MAX && m->ino[f] == ino)
					done = j;
			}
			if (done != SIZE_MAX) {
				if (m->cover[w] > done)
					m->cover[w] = done;
				break;
			}
		}
	}
	/* durability of entry ops: the next DIRSYNC of their directory */
	for (size_t i = 0; i < l->n; i++) {
		const struct ev *e = &l->v[i];
		bool nsop = is_ns_op(e->op) || (e->op == DE_PLOG_CREATE && (m->ino[i] >> 31));
		if (!nsop)
			continue;
		const char *p = e->op == DE_PLOG_RENAME ? e->path2 : e->path;
		for (size_t j = i + 1; j < l->n; j++)
			if (l->v[j].op == DE_PLOG_DIRSYNC && in_dir(p, l->v[j].path)) {
				m->cover[i] = j;
				break;
			}
	}
	free(wr);
	free(fs);
}

static bool is_entry_op(const struct model *m, size_t i)
{
	enum de_plog_op op = m->l->v[i].op;
	return is_ns_op(op) || (op == DE_PLOG_CREATE && (m->ino[i] >> 31));
}

static void model_free(struct model *m)
{
	free(m->cover);
	free(m->ino);
}

struct file {
	unsigned char *p;
	size_t len, cap;
};

static void file_write(struct file *f, uint64_t off, const unsigned char *d, uint64_t len,
		       uint64_t *rng, bool torn)
{
	if (off + len > f->cap) {
		size_t c = (size_t)(off + len) * 2;
		f->p = realloc(f->p, c);
		cr_assert_not_null(f->p);
		memset(f->p + f->cap, 0, c - f->cap);
		f->cap = c;
	}
	uint64_t end = off;
	for (uint64_t s = off; s < off + len;) {
		uint64_t e = (s / SECTOR + 1) * SECTOR;
		if (e > off + len)
			e = off + len;
		if (!torn || rng_below(rng, 2)) {
			memcpy(f->p + s, d + (s - off), (size_t)(e - s));
			end = e;
		}
		s = e;
	}
	if (end > f->len)
		f->len = (size_t)end;
}

static void file_truncate(struct file *f, uint64_t len)
{
	if (len < f->len) {
		memset(f->p + len, 0, f->len - (size_t)len);
		f->len = (size_t)len;
	} else if (len > f->len) {
		file_write(f, len, NULL, 0, NULL, false);
		f->len = (size_t)len;
	}
}

enum mode { LEAST, MOST, RANDOM };

/* Write the state of cut c (mode, rng) into dst (the base directory's copy). out: a
 * line describing what optional operations it kept. */
static void model_state(const struct model *m, size_t c, enum mode mode, uint64_t *rng,
			const char *dst, size_t *kept, size_t *optional)
{
	const struct plog *l = m->l;
	struct file *files = xcalloc(m->nino + 1, sizeof *files);
	*kept = *optional = 0;
	/* data */
	for (size_t i = 0; i < c; i++) {
		const struct ev *e = &l->v[i];
		uint32_t ino = m->ino[i] & 0x7fffffffu;
		bool data = e->op == DE_PLOG_WRITE || e->op == DE_PLOG_TRUNCATE ||
			    (e->op == DE_PLOG_CREATE && !(m->ino[i] >> 31));
		if (!data)
			continue;
		bool durable = m->cover[i] < c, keep = durable, torn = false;
		if (!durable) {
			++*optional;
			if (mode == MOST) {
				keep = true;
			} else if (mode == RANDOM) {
				uint64_t r = rng_below(rng, 4);
				keep = r >= 1;
				torn = r == 1 && e->op == DE_PLOG_WRITE;
			}
			*kept += keep;
		}
		if (!keep)
			continue;
		if (e->op == DE_PLOG_WRITE)
			file_write(&files[ino], e->off, e->data, e->len, rng, torn);
		else
			file_truncate(&files[ino], e->op == DE_PLOG_CREATE ? 0 : e->len);
	}
	/* entries: an operation is durable when a DIRSYNC of its directory followed it
	 * before c; of the others, each directory keeps a prefix (its first k_d) */
	size_t nd[2] = { 0, 0 }, kd[2];
	for (size_t i = 0; i < c; i++)
		if (is_entry_op(m, i) && m->cover[i] >= c)
			nd[entry_dir(&l->v[i])]++;
	for (int d = 0; d < 2; d++) {
		kd[d] = mode == LEAST ? 0 : mode == MOST ? nd[d] : rng_below(rng, nd[d] + 1);
		*optional += nd[d];
		*kept += kd[d];
	}
	struct ns s = { .n = 0 };
	ns_put(&s, "data", 0); /* the data directory: made before recording when no MKDIR */
	bool mkdir_logged = false;
	for (size_t i = 0; i < l->n; i++)
		mkdir_logged |= l->v[i].op == DE_PLOG_MKDIR && !strcmp(l->v[i].path, "data");
	if (mkdir_logged)
		ns_del(&s, "data");
	size_t seen[2] = { 0, 0 };
	for (size_t i = 0; i < c; i++) {
		const struct ev *e = &l->v[i];
		if (!is_entry_op(m, i))
			continue;
		if (m->cover[i] >= c && seen[entry_dir(e)]++ >= kd[entry_dir(e)])
			continue;
		if (e->op == DE_PLOG_CREATE) {
			ns_put(&s, e->path, m->ino[i] & 0x7fffffffu);
		} else if (e->op == DE_PLOG_MKDIR) {
			ns_put(&s, e->path, 0);
		} else if (e->op == DE_PLOG_RENAME) {
			struct nsent *x = ns_find(&s, e->path);
			if (x) {
				uint32_t ino = x->ino;
				ns_del(&s, e->path);
				ns_put(&s, e->path2, ino);
			}
		} else if (e->op == DE_PLOG_UNLINK) {
			ns_del(&s, e->path);
		}
	}
	char cmd[400];
	snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", dst, dst);
	cr_assert_eq(system(cmd), 0);
	char p[600];
	if (ns_find(&s, "data")) {
		snprintf(p, sizeof p, "%s/data", dst);
		cr_assert_eq(mkdir(p, 0755), 0);
	}
	for (size_t i = 0; i < s.n; i++) {
		if (!strcmp(s.e[i].name, "data"))
			continue;
		if (!in_dir(s.e[i].name, "data") || !ns_find(&s, "data"))
			continue;
		snprintf(p, sizeof p, "%s/%s", dst, s.e[i].name);
		int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		cr_assert_geq(fd, 0, "%s", p);
		struct file *f = &files[s.e[i].ino];
		cr_assert_eq(pwrite(fd, f->p, f->len, 0), (ssize_t)f->len);
		close(fd);
	}
	ns_clear(&s);
	for (uint32_t i = 0; i <= m->nino; i++)
		free(files[i].p);
	free(files);
}

/* ---- the check ----------------------------------------------------------------------- */

static const char *op_name(enum de_plog_op op)
{
	static const char *const n[] = { "?", "write", "write-done", "fsync", "fsync-done",
					 "dirsync", "create", "rename", "unlink", "mkdir",
					 "truncate" };
	return (unsigned)op < sizeof n / sizeof n[0] ? n[op] : "?";
}

struct figures {
	size_t cuts, states, violations, refusals, lost, wrong, after;
	size_t first_cut; /* of the first violation */
	char first[400];
};

static void violation(struct figures *fg, size_t c, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void violation(struct figures *fg, size_t c, const char *fmt, ...)
{
	if (getenv("DE_POWERLOSS_VERBOSE")) {
		va_list ap;
		va_start(ap, fmt);
		vfprintf(stderr, fmt, ap);
		va_end(ap);
		fputc('\n', stderr);
	}
	if (!fg->violations++) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(fg->first, sizeof fg->first, fmt, ap);
		va_end(ap);
		fg->first_cut = c;
	}
}

#ifndef DE_POWERLOSS_DAEMON
static bool recover_into(const char *dir, struct tab *t, struct de_recover_report *rep)
{
	struct de_recover_table rt[NTAB];
	for (int i = 0; i < NTAB; i++) {
		t[i] = mk_table();
		rt[i] = (struct de_recover_table){ (uint32_t)i + 1, t[i].t };
	}
	return de_persist_recover(dir, rt, NTAB, quiet_log, NULL, rep) == 0;
}

/* Check one state of cut c, written under dst. */
static void check_state(const struct plog *l, const struct oracle *o, size_t c,
			const char *dst, const char *what, struct figures *fg)
{
	char dir[400];
	snprintf(dir, sizeof dir, "%s/data", dst);
	const char *at = c ? op_name(l->v[c - 1].op) : "start";
	const char *atp = c && l->v[c - 1].path ? l->v[c - 1].path : "";
	struct tab t[NTAB];
	struct de_recover_report rep;
	fg->states++;
	if (!recover_into(dir, t, &rep)) {
		fg->refusals++;
		violation(fg, c, "cut %zu (after %s %s), %s state: recovery refused: %s", c, at,
			  atp, what, rep.message);
		goto out;
	}
	uint64_t got[NTAB][NKEYS];
	bool bad = false;
	for (int ti = 0; ti < NTAB && !bad; ti++)
		for (size_t k = 0; k < NKEYS && !bad; k++) {
			bool exact;
			uint64_t s = read_key(t[ti].t, k, &exact);
			got[ti][k] = s;
			const struct hist *h = &o->h[ti][k];
			size_t from = 0; /* the last value acknowledged before c */
			bool any_acked = false;
			for (size_t j = 0; j < h->n; j++)
				if (h->v[j].acked <= c) {
					from = j;
					any_acked = true;
				}
			bool ok = !any_acked && s == 0;
			for (size_t j = from; j < h->n && !ok; j++)
				ok = h->v[j].applied < c && h->v[j].step == s;
			if (!exact || !ok) {
				if (!exact)
					fg->wrong++;
				else
					fg->lost++;
				violation(fg, c,
					  "cut %zu (after %s %s), %s state: table %d key %zu holds "
					  "step %" PRIu64 "%s; acknowledged before the cut: %s step %"
					  PRIu64 " (step 0: absent)", c, at, atp, what, ti + 1, k, s,
					  exact ? "" : " with a row that was never written",
					  !any_acked ? "nothing," : h->v[from].step ? "" : "an erase,",
					  any_acked ? h->v[from].step : 0);
				bad = true;
			}
		}
	if (bad)
		goto out;
	/* life goes on: one more sync put after the recovery, then recover again */
	de_wal *w;
	struct de_wal_options wo = wopt;
	wo.start_lsn = rep.next_lsn;
	int err = de_wal_open(dir, &wo, &w);
	if (err) {
		fg->after++;
		violation(fg, c, "cut %zu, %s state: de_wal_open after recovery: %d", c, what, err);
		goto out;
	}
	for (int ti = 0; ti < NTAB; ti++) { /* key 0 of each table */
		size_t idx = 0;
		uint64_t key, lsn;
		struct ref scratch = ref_new(NKEYS);
		put_keys(t[ti].t, &scratch, &idx, 1, STEP_AFTER, &key);
		free(scratch.r);
		struct de_wal_batch b = { .table_id = (uint32_t)ti + 1, .type = DE_WAL_PUT,
					  .keys = &key, .n = 1, .table = t[ti].t };
		cr_assert_eq(de_wal_append(w, &b, &lsn), 0);
		cr_assert_eq(de_wal_sync(w, lsn), 0);
		got[ti][0] = STEP_AFTER;
	}
	cr_assert_eq(de_wal_close(w), 0);
	struct tab t2[NTAB];
	struct de_recover_report rep2;
	if (!recover_into(dir, t2, &rep2)) {
		fg->after++;
		violation(fg, c, "cut %zu, %s state: the second recovery refused: %s", c, what,
			  rep2.message);
	} else {
		for (int ti = 0; ti < NTAB && !bad; ti++)
			for (size_t k = 0; k < NKEYS && !bad; k++) {
				bool exact;
				uint64_t s = read_key(t2[ti].t, k, &exact);
				if (s != got[ti][k] || !exact) {
					fg->after++;
					violation(fg, c,
						  "cut %zu (after %s %s), %s state: after recovery, a "
						  "sync put and a second recovery, table %d key %zu holds "
						  "step %" PRIu64 ", expected %" PRIu64, c, at, atp, what,
						  ti + 1, k, s, got[ti][k]);
					bad = true;
				}
			}
	}
	for (int i = 0; i < NTAB; i++)
		rm_table(&t2[i]);
out:
	for (int i = 0; i < NTAB; i++)
		rm_table(&t[i]);
}

/* The log holds every kind of operation the workload must cause, and acknowledged values:
 * a hook that logs nothing would make every state pass. */
static void log_sane(const struct plog *l, const struct oracle *o, bool fresh_dir)
{
	size_t kinds[DE_PLOG_TRUNCATE + 1] = { 0 }, acked = 0;
	for (size_t i = 0; i < l->n; i++)
		kinds[l->v[i].op]++;
	for (enum de_plog_op k = DE_PLOG_WRITE; k <= DE_PLOG_UNLINK; k++)
		cr_assert_gt(kinds[k], 0, "no %s in the log", op_name(k));
	cr_assert(!fresh_dir || kinds[DE_PLOG_MKDIR] == 1, "the data directory's mkdir");
	for (int t = 0; t < NTAB; t++)
		for (int k = 0; k < NKEYS; k++)
			for (size_t j = 0; j < o->h[t][k].n; j++)
				acked += o->h[t][k].v[j].acked != SIZE_MAX;
	cr_assert_gt(acked, 100, "acknowledged values: %zu", acked);
}

/* Record one workload and check its cuts; the figures go to stderr. */
static struct figures run(const char *name, bool fresh_dir, bool lenient)
{
	size_t ncuts = env_size("DE_POWERLOSS_CUTS", 200);
	size_t nstates = env_size("DE_POWERLOSS_STATES", 3);
	size_t nops = env_size("DE_POWERLOSS_OPS", 400);
	wopt.window_ms = (uint32_t)env_size("DE_POWERLOSS_WINDOW_MS", 0);
	uint64_t seed = env_size("DE_POWERLOSS_SEED", 11), rng = seed * 7919 + 1;
	char base[64], dst[80];
	mk_dir(base, sizeof base);
	/* the states: in memory where there is a tmpfs (thousands of recoveries, each with
	 * its fsyncs) */
	snprintf(dst, sizeof dst, "/dev/shm/de_powerloss_XXXXXX");
	if (!mkdtemp(dst))
		snprintf(dst, sizeof dst, "%s-state", base);
	struct plog l = { 0 };
	struct oracle *o = xcalloc(1, sizeof *o);
	double t0 = now_s();
	record(&l, o, base, fresh_dir, nops, seed);
	log_sane(&l, o, fresh_dir);
	struct model m;
	model_build(&m, &l, lenient);
	struct figures fg = { 0 };
	size_t events = l.n;
	if (getenv("DE_POWERLOSS_DUMP"))
		for (size_t i = 0; i < l.n; i++)
			fprintf(stderr, "%zu %s id %" PRIu64 " %s %s off %" PRIu64 " len %" PRIu64
				"%s cover %zu\n", i, op_name(l.v[i].op), l.v[i].id,
				l.v[i].path ? l.v[i].path : "", l.v[i].path2 ? l.v[i].path2 : "",
				l.v[i].off, l.v[i].len, l.v[i].linked ? " linked" : "",
				m.cover[i] == SIZE_MAX ? (size_t)0 : m.cover[i]);
	size_t stride = ncuts >= events + 1 ? 1 : (events + 1) / ncuts;
	size_t kept_total = 0, optional_total = 0;
	for (size_t c = 0; c <= events; c = c < events && c + stride > events ? events : c + stride) {
		fg.cuts++;
		for (size_t s = 0; s < nstates; s++) {
			enum mode md = s == 0 ? LEAST : s == 1 ? MOST : RANDOM;
			size_t kept, optional;
			model_state(&m, c, md, &rng, dst, &kept, &optional);
			kept_total += kept;
			optional_total += optional;
			check_state(&l, o, c, dst, md == LEAST ? "least" : md == MOST ? "most" :
				    "random", &fg);
		}
	}
	fprintf(stderr,
		"powerloss %s: seed %" PRIu64 ", window %u ms, %zu ops, %zu events logged, %zu cut points, "
		"%zu states checked (%zu optional operations, %zu of them kept), %.1f s: "
		"%zu violations (%zu refused, %zu lost or stale, %zu wrong rows, %zu after "
		"the next recovery)%s%s\n",
		name, seed, wopt.window_ms, nops, events, fg.cuts, fg.states, optional_total, kept_total,
		now_s() - t0, fg.violations, fg.refusals, fg.lost, fg.wrong, fg.after,
		fg.violations ? "; first: " : "", fg.violations ? fg.first : "");
	model_free(&m);
	plog_free(&l);
	for (int t = 0; t < NTAB; t++)
		for (int k = 0; k < NKEYS; k++)
			free(o->h[t][k].v);
	free(o);
	rm_dir(dst);
	rm_dir(base);
	return fg;
}

/* The checker catches a disk that loses a durable write: at the last cut, drop the last
 * fsync'ed WAL write that holds an acknowledged record. */
Test(powerloss, self_check, .timeout = 300)
{
	char base[64], dst[80];
	mk_dir(base, sizeof base);
	snprintf(dst, sizeof dst, "%s-state", base);
	struct plog l = { 0 };
	struct oracle *o = xcalloc(1, sizeof *o);
	record(&l, o, base, false, 120, 5);
	log_sane(&l, o, false);
	struct model m;
	model_build(&m, &l, false);
	size_t c = l.n, victim = SIZE_MAX;
	for (size_t i = 0; i < l.n; i++)
		if (l.v[i].op == DE_PLOG_WRITE && strstr(l.v[i].path, "/wal-") &&
		    l.v[i].len > 64 && m.cover[i] < c)
			victim = i;
	cr_assert_neq(victim, SIZE_MAX);
	uint64_t rng = 1;
	size_t kept, optional;
	struct figures fg = { 0 };
	model_state(&m, c, LEAST, &rng, dst, &kept, &optional);
	check_state(&l, o, c, dst, "least", &fg);
	cr_assert_eq(fg.violations, 0, "the real state: %s", fg.first);
	m.cover[victim] = SIZE_MAX; /* the disk forgets it */
	model_state(&m, c, LEAST, &rng, dst, &kept, &optional);
	check_state(&l, o, c, dst, "least, a durable write lost", &fg);
	cr_assert_eq(fg.violations, 1, "the checker missed a lost durable write");
	cr_assert_eq(fg.lost, 1);
	fprintf(stderr, "powerloss self_check: caught: %s\n", fg.first);
	model_free(&m);
	plog_free(&l);
	for (int t = 0; t < NTAB; t++)
		for (int k = 0; k < NKEYS; k++)
			free(o->h[t][k].v);
	free(o);
	rm_dir(dst);
	rm_dir(base);
}

/* WAL, checkpoints, gc and a restart in a data directory made (durably) before the
 * run, on the strict model: a write counts as covered by an fsync only if it completed
 * before the fsync was queued (or is linked before it). It found the snapshot header that
 * was not linked to its fsync (uring/util.c, du_io_commit: a refused start at cuts after
 * the MANIFEST named the snapshot); du_io_commit now completes header and trailer first. */
Test(powerloss, wal_and_checkpoints, .timeout = 600)
{
	struct figures fg = run("wal_and_checkpoints", false, false);
	cr_assert_eq(fg.violations, 0, "%zu violations; first: %s", fg.violations, fg.first);
}

/* The data directory made by de_wal_open itself: its entry must be durable (the parent
 * fsync'ed after the mkdir) before a record in it counts; without that a power loss takes
 * the whole directory, every acknowledged write with it (368 violations before). */
Test(powerloss, new_data_dir, .timeout = 600)
{
	struct figures fg = run("new_data_dir", true, false);
	cr_assert_eq(fg.violations, 0, "%zu violations; first: %s", fg.violations, fg.first);
}

#endif /* !DE_POWERLOSS_DAEMON */

#ifdef DE_POWERLOSS_DAEMON
/* ---- the daemon ------------------------------------------------------------------------
 * The same model, driven through the real daemon (CATALOG, the daemon's recovery, its
 * checkpoint and commit threads): dynembd logs into a file (DYNEMBD_TEST_PLOG, the file
 * hook of de_persist_plog_file), the test writes sync tables through the client, opens a
 * second table half way (a new CATALOG) and asks for snapshots, then SIGKILLs it. Each
 * state of a cut is then served by a fresh dynembd: it must start (a refusal, exit
 * status 3, is a violation: see the top of this file) and every key must read a value
 * the oracle allows. The log's byte offset when a call started and when it returned
 * stands for the position of its write and of its acknowledgement. */

#define DDIM 4

struct dlife {
	char base[64], data[100], plogf[100], sock[108], dlog[120];
	pid_t pid;
};

static float dval(uint64_t key, uint64_t version, unsigned j)
{
	return (float)key * 0.25f + (float)version + (float)j * 0.001f;
}

static size_t file_bytes(const char *path)
{
	struct stat sb;
	return stat(path, &sb) ? 0 : (size_t)sb.st_size;
}

/* start dynembd on data; false when it exited (out: its wait status) */
static bool dstart(struct dlife *d, const char *data, int *status)
{
	static unsigned n;
	snprintf(d->sock, sizeof d->sock, "/tmp/de-pl-%d-%u.sock", (int)getpid(), n++);
	unlink(d->sock);
	const char *more[] = { "--data-dir", data, NULL };
	const char *argv[40];
	daemon_argv(argv, 40, daemon_bin(), d->sock, "warn", more, NULL);
	d->pid = daemon_spawn(argv, SIGKILL, d->dlog);
	double end = now_s() + 20;
	while (!daemon_can_connect(d->sock)) {
		if (waitpid(d->pid, status, WNOHANG) == d->pid) {
			d->pid = -1;
			return false;
		}
		cr_assert_lt(now_s(), end, "dynembd did not listen within 20 s");
		usleep(2000);
	}
	return true;
}

static void dstop(struct dlife *d, bool kill9)
{
	if (d->pid > 0) {
		if (kill9) {
			kill(d->pid, SIGKILL);
			waitpid(d->pid, NULL, 0);
		} else {
			daemon_terminate(d->pid, 10);
		}
	}
	d->pid = -1;
	unlink(d->sock);
}

static dynemb_client *dconn(struct dlife *d)
{
	dynemb_client *c;
	struct dynemb_connect_opts o = { .name = "powerloss", .timeout_ms = 20000 };
	int err = dynemb_connect(d->sock, &o, &c);
	cr_assert_eq(err, 0, "connect: %s", dynemb_strerror(err));
	return c;
}

static int dopen(dynemb_client *c, const char *name)
{
	struct dynemb_table_spec sp = { .name = name, .dim = DDIM, .init = DYNEMB_CONSTANT,
				       .init_a = 0.5f, .seed = 7 };
	sp.durability.mode = DYNEMB_DURABLE_SYNC;
	int t, err = dynemb_open(c, &sp, &t);
	cr_assert_eq(err, 0, "open %s: %s", name, dynemb_strerror(err));
	return t;
}

/* The log file into l (paths relative to base); out: start[i], the byte offset of event
 * i (start[l->n] = the file's size). */
static size_t *dread_log(struct plog *l, const char *file)
{
	unsigned char *b;
	size_t len;
	FILE *f = fopen(file, "rb");
	cr_assert_not_null(f);
	fseek(f, 0, SEEK_END);
	len = (size_t)ftell(f);
	fseek(f, 0, SEEK_SET);
	b = xcalloc(1, len + 1);
	cr_assert_eq(fread(b, 1, len, f), len);
	fclose(f);
	size_t *start = xcalloc(len / 40 + 2, sizeof *start), at = 0;
	for (size_t o = 0; o + 40 <= len;) {
		uint32_t op, linked, pl, p2l;
		uint64_t id, off, n;
		memcpy(&op, b + o, 4);
		memcpy(&linked, b + o + 4, 4);
		memcpy(&id, b + o + 8, 8);
		memcpy(&off, b + o + 16, 8);
		memcpy(&n, b + o + 24, 8);
		memcpy(&pl, b + o + 32, 4);
		memcpy(&p2l, b + o + 36, 4);
		size_t dl = op == DE_PLOG_WRITE ? (size_t)n : 0, next = o + 40 + pl + p2l + dl;
		if (next > len)
			break; /* the daemon was killed in the middle of an event */
		char *p = strndup((char *)b + o + 40, pl), *p2 = strndup((char *)b + o + 40 + pl, p2l);
		struct de_plog_event e = { .op = (enum de_plog_op)op, .id = id,
					   .path = pl ? p : NULL, .path2 = p2l ? p2 : NULL,
					   .off = off, .len = n, .data = b + o + 40 + pl + p2l,
					   .linked = linked };
		size_t before = l->n;
		plog_hook(l, &e);
		if (l->n > before)
			start[at++] = o;
		free(p);
		free(p2);
		o = next;
	}
	start[at] = len;
	free(b);
	return start;
}

/* the number of events that began before byte offset off */
static size_t events_before(const size_t *start, size_t n, size_t off)
{
	size_t k = 0;
	while (k < n && start[k] < off)
		k++;
	return k;
}

#define DKEYS 40

struct dhist {
	struct val v[64];
	size_t n;
};

Test(powerloss, daemon, .timeout = 600)
{
	size_t ncuts = env_size("DE_POWERLOSS_DAEMON_CUTS", 40);
	size_t nstates = env_size("DE_POWERLOSS_STATES", 2);
	size_t nops = env_size("DE_POWERLOSS_OPS", 160);
	const uint64_t seed0 = env_size("DE_POWERLOSS_SEED", 11);
	uint64_t seed = seed0, rng = seed * 7919 + 3;
	if (nops > 600)
		nops = 600; /* 64 values per key at most */
	struct dlife d = { .pid = -1 };
	mk_dir(d.base, sizeof d.base);
	snprintf(d.data, sizeof d.data, "%s/data", d.base);
	snprintf(d.plogf, sizeof d.plogf, "%s.plog", d.base);
	snprintf(d.dlog, sizeof d.dlog, "%s.log", d.base);
	cr_assert_eq(mkdir(d.data, 0755), 0);
	unlink(d.plogf);
	setenv("DYNEMBD_TEST_PLOG", d.plogf, 1);
	int st;
	cr_assert(dstart(&d, d.data, &st), "dynembd exited at startup, log %s", d.dlog);
	unsetenv("DYNEMBD_TEST_PLOG");
	/* the oracle: per table and key, the values with the log offsets of their call's
	 * start (applied) and return (acked), converted to event positions below */
	static struct dhist h[2][DKEYS + 1];
	memset(h, 0, sizeof h);
	dynemb_client *c = dconn(&d);
	int t[2] = { dopen(c, "a"), -1 };
	for (size_t op = 0; op < nops; op++) {
		if (op == nops / 3)
			t[1] = dopen(c, "b"); /* the CATALOG is rewritten */
		int ti = t[1] >= 0 && rng_below(&seed, 2) ? 1 : 0;
		uint64_t keys[4];
		float vals[4 * DDIM];
		size_t n = 1 + rng_below(&seed, 4);
		for (size_t i = 0; i < n; i++) {
			keys[i] = 1 + rng_below(&seed, DKEYS);
			for (size_t k = 0; k < i; k++)
				if (keys[k] == keys[i])
					keys[i] = 1 + keys[i] % DKEYS, k = (size_t)-1;
			for (unsigned j = 0; j < DDIM; j++)
				vals[i * DDIM + j] = dval(keys[i], op + 1, j);
		}
		size_t before = file_bytes(d.plogf);
		int err = dynemb_update(c, t[ti], keys, n, vals, 0, NULL);
		cr_assert_eq(err, 0, "update: %s", dynemb_strerror(err));
		size_t after = file_bytes(d.plogf);
		for (size_t i = 0; i < n; i++) {
			struct dhist *x = &h[ti][keys[i]];
			if (x->n < 64)
				x->v[x->n++] = (struct val){ op + 1, before, after, 0 };
		}
		if (op % 40 == 39) {
			struct dynemb_snapshot_result sr;
			err = dynemb_snapshot(c, NULL, rng_below(&seed, 3) == 0, NULL, NULL, &sr);
			cr_assert_eq(err, 0, "snapshot: %s", dynemb_strerror(err));
		}
	}
	dynemb_close(c);
	dstop(&d, true);

	struct plog l = { 0 };
	l.base = d.base;
	l.blen = strlen(d.base);
	size_t *start = dread_log(&l, d.plogf);
	for (int ti = 0; ti < 2; ti++)
		for (size_t k = 1; k <= DKEYS; k++)
			for (size_t j = 0; j < h[ti][k].n; j++) {
				struct val *v = &h[ti][k].v[j];
				v->applied = events_before(start, l.n, v->applied);
				v->acked = events_before(start, l.n, v->acked);
			}
	bool catalog = false;
	for (size_t i = 0; i < l.n; i++)
		catalog |= l.v[i].op == DE_PLOG_RENAME && !strcmp(l.v[i].path2, "data/CATALOG");
	cr_assert(catalog, "the log holds the CATALOG's replace");
	/* the strict model (see wal_and_checkpoints); DE_POWERLOSS_LENIENT=1 the lenient one */
	bool lenient = env_size("DE_POWERLOSS_LENIENT", 0);
	struct model m;
	model_build(&m, &l, lenient);
	/* self-check (DE_POWERLOSS_DAEMON_SELF_CHECK=1): the disk forgets the last fsync'ed
	 * WAL write; the last cut must then show a violation */
	bool self_check = env_size("DE_POWERLOSS_DAEMON_SELF_CHECK", 0);
	for (size_t i = l.n; self_check && i-- > 0;)
		if (l.v[i].op == DE_PLOG_WRITE && strstr(l.v[i].path, "/wal-") && m.cover[i] < l.n) {
			m.cover[i] = SIZE_MAX;
			break;
		}
	size_t found = 0;
	char dst[80];
	snprintf(dst, sizeof dst, "%s-state", d.base);
	struct figures fg = { 0 };
	size_t stride = ncuts >= l.n + 1 ? 1 : (l.n + 1) / ncuts;
	double t0 = now_s();
	for (size_t cpt = 0; cpt <= l.n; cpt = cpt < l.n && cpt + stride > l.n ? l.n : cpt + stride) {
		fg.cuts++;
		for (size_t sidx = 0; sidx < nstates; sidx++) {
			enum mode md = sidx == 0 ? LEAST : sidx == 1 ? RANDOM : MOST;
			const char *what = md == LEAST ? "least" : md == MOST ? "most" : "random";
			size_t kept, optional;
			model_state(&m, cpt, md, &rng, dst, &kept, &optional);
			char sdata[120];
			snprintf(sdata, sizeof sdata, "%s/data", dst);
			fg.states++;
			struct dlife e = { .pid = -1 };
			snprintf(e.dlog, sizeof e.dlog, "%s.log", dst);
			unlink(e.dlog);
			if (!dstart(&e, sdata, &st)) {
				char last[300] = "", line[300];
				FILE *lf = fopen(e.dlog, "r");
				while (lf && fgets(line, sizeof line, lf))
					if (line[0] != '\n')
						memcpy(last, line, sizeof last);
				if (lf)
					fclose(lf);
				last[strcspn(last, "\n")] = 0;
				fg.refusals++;
				violation(&fg, cpt, "cut %zu (after %s %s), %s state: dynembd refused to "
					  "start (exit status %d): %s", cpt,
					  cpt ? op_name(l.v[cpt - 1].op) : "start",
					  cpt && l.v[cpt - 1].path ? l.v[cpt - 1].path : "", what,
					  WIFEXITED(st) ? WEXITSTATUS(st) : -1, last);
				unlink(e.dlog);
				continue;
			}
			dynemb_client *rc = dconn(&e);
			for (int ti = 0; ti < 2; ti++) {
				int tt = dopen(rc, ti ? "b" : "a");
				uint64_t keys[DKEYS];
				float out[DKEYS * DDIM];
				uint8_t sts[DKEYS];
				for (size_t k = 0; k < DKEYS; k++)
					keys[k] = k + 1;
				int err = dynemb_lookup(rc, tt, keys, DKEYS, out, sts, DYNEMB_READONLY, 0);
				cr_assert_eq(err, 0, "lookup: %s", dynemb_strerror(err));
				for (size_t k = 0; k < DKEYS; k++) {
					const struct dhist *x = &h[ti][k + 1];
					size_t from = 0;
					bool any = false;
					for (size_t j = 0; j < x->n; j++)
						if (x->v[j].acked <= cpt)
							from = j, any = true;
					bool ok = !any && sts[k] != DYNEMB_ST_FOUND, written = false;
					for (size_t j = 0; j < x->n && !ok; j++) {
						bool eq = sts[k] == DYNEMB_ST_FOUND;
						for (unsigned q = 0; q < DDIM && eq; q++)
							eq = out[k * DDIM + q] == dval(k + 1, x->v[j].step, q);
						written |= eq;
						ok = eq && j >= from && x->v[j].applied < cpt;
					}
					found += sts[k] == DYNEMB_ST_FOUND;
					if (!ok) {
						if (written || sts[k] != DYNEMB_ST_FOUND)
							fg.lost++;
						else
							fg.wrong++;
						violation(&fg, cpt, "cut %zu (after %s %s), %s state: table %s "
							  "key %zu: %s; acknowledged before the cut: %s %" PRIu64,
							  cpt, cpt ? op_name(l.v[cpt - 1].op) : "start",
							  cpt && l.v[cpt - 1].path ? l.v[cpt - 1].path : "",
							  what, ti ? "b" : "a", k + 1,
							  sts[k] != DYNEMB_ST_FOUND ? "missing" :
							  written ? "an older or unissued value" :
							  "a value never written",
							  any ? "version" : "nothing, version",
							  any ? x->v[from].step : 0);
					}
				}
			}
			dynemb_close(rc);
			dstop(&e, false);
			unlink(e.dlog);
		}
	}
	fprintf(stderr,
		"powerloss daemon%s: seed %" PRIu64 ", %zu ops, %zu events logged, %zu cut points, "
		"%zu states checked, %.1f s: %zu violations (%zu refused, %zu lost or stale, %zu "
		"wrong rows), %zu keys found%s%s\n", lenient ? " (lenient)" : "", seed0, nops, l.n, fg.cuts, fg.states, now_s() - t0,
		fg.violations, fg.refusals, fg.lost, fg.wrong, found, fg.violations ? "; first: " : "",
		fg.violations ? fg.first : "");
	if (self_check)
		cr_assert_gt(fg.violations, 0, "the checker missed a lost durable write");
	else
		cr_assert_eq(fg.violations, 0, "%zu violations; first: %s", fg.violations, fg.first);
	cr_assert_gt(found, DKEYS, "the states hold rows");
	model_free(&m);
	plog_free(&l);
	free(start);
	rm_dir(dst);
	rm_dir(d.base);
	unlink(d.plogf);
	unlink(d.dlog);
}
#endif

#else

Test(powerloss, needs_fault_injection)
{
	cr_skip_test("needs -Dfault_injection=true (the power-loss log)");
}

#endif
