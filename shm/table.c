/*
 * table.c — the dynamic embedding table: uint64 key -> row (values, optimizer slots,
 * metadata), inside one arena, grown incrementally, read lock-free across processes.
 *
 * Owns: the table header, the index (extendible hashing: a directory of segments of
 * cache-line buckets), the row store (chunks of rows addressed by 32-bit row id), the
 * initializers, and the read and write protocols below.
 * Never: holds a lock on the read path; rebuilds more than one index segment in a call;
 * stores a pointer in shared memory; trusts an offset or row id read from shared memory
 * without a bounds check (a read-only reader in another process may be handed a corrupt
 * arena, and must report, not crash).
 * Callers: the daemon (src/server) owns and writes tables; clients attach read-only.
 *
 * ---- Byte layout (all little-endian, offsets are arena offsets) ----------------------
 *
 * Header (4096 bytes at the arena root), struct table_hdr:
 *   0    u64 magic "DETABLE1"          8   u32 version (1)      12  u32 hdr_bytes (4096)
 *   16   u32 dim, u32 nslots, u32 init, u32 seg_buckets
 *   32   f32 init_a, f32 init_b, f32 slot_init, u32 dtype (0 = f32)
 *   48   u64 seed
 *   56   u32 row_stride (bytes of values + slots, 16- or 64-byte multiple)
 *   60   u32 chunk_shift (a chunk holds 1 << chunk_shift rows)
 *   64   u64 chunk_bytes (rows * row_stride, then rows * 32 bytes of metadata)
 *   72   u64 chunk_tab (offset of u64[chunk_cap], the chunk offsets; 0 = not yet)
 *   80   u32 chunk_cap, u32 retired (0; 1 once the owner dropped the table: release-stored
 *        by de_table_retire before the owner lets go of the memory, acquire-loaded by
 *        de_table_retired: a read-only mapping that outlives the table says so; 2 once a
 *        newer version of its serving table replaced it: de_table_supersede, read by
 *        de_table_superseded; a superseded table is never marked dropped)
 *   88   u64 serve_version (0: not a serving table; else its version number, written by
 *        the owner before any reader maps it: de_table_set_serve_version)
 *   128  u64 dir      (own line) directory offset | global depth in the low 6 bits;
 *                    release-stored when the directory doubles, acquire-loaded by readers
 *   192  u64 next_row (own line) next never-used row id
 *   200  u32 nchunks  chunks published (release after chunk_tab[i] is written)
 *   204  u32 chunk_lock (spinlock; owner process only)
 *   256  u32 free_lock, u32 free_head (row id, ROW_NONE = empty), u64 nfree  (own line)
 *   320  u64 splits, u64 doublings, u32 dir_lock (spinlock), u32 pad,
 *        u64 refusals (inserts the growth rules refused), ...  (own line)
 *
 * Directory: u64[2^depth] segment offsets. Entry i covers hashes whose top `depth` bits
 * are i. Old directories are left in place after a doubling (readers may hold them).
 *
 * Segment: a 64-byte header, then seg_buckets buckets of 64 bytes.
 *   header: u64 depth_prefix (prefix << 8 | local depth; atomic), u32 lock (spinlock),
 *           u32 nkeys, pad to 64
 *   bucket: u64 key[5]  (0 = empty slot: key 0 is never stored)
 *           u32 row[5]  (row id of the slot's key)
 *           u32 seq     (even = stable, odd = being written)
 * A key k with hash h = xxh3(k, seed) lives in the segment the directory names for the
 * top bits of h, in bucket b1 = h mod B or, when b1 was full at insert time, in
 * b2 = (h >> 16) mod B (b1 ^ 1 if equal).
 *
 * Row chunk: rows * row_stride bytes of rows (values: dim f32, then nslots * dim f32),
 * then rows * 32 bytes of metadata (struct de_row_meta: key, last_step, freq, flags; a
 * free row's key is the free list's link, row_free).
 *
 * ---- Concurrency ---------------------------------------------------------------------
 *
 * Writers (any thread of the owner process) take the segment spinlock of the key's
 * segment. Under it, any change of a bucket's slots or of the row of a key in that
 * bucket is bracketed by the bucket's seq: store seq+1 (odd), release fence, the stores,
 * then store-release seq+2. No global lock: the directory lock is taken only when a
 * segment splits, the chunk lock only when a new row chunk is needed.
 *
 * Readers (any thread, any process, no lock): load the directory word, the segment
 * offset, then per bucket: s1 = load-acquire(seq) (odd: retry), read the slot and copy
 * the row, acquire fence, s2 = load(seq); s1 != s2: retry. This is the C11 seqlock of
 * Boehm ("Can seqlocks get along with programming language memory models?"): a reader
 * that saw any store of a write section also sees its odd seq. A row is only freed (and
 * then reused) after its slot was cleared under its bucket's seq, so a reader copying a
 * recycled row always fails its s2 check.
 *
 * Growth: a full bucket pair splits its segment only: the entries are rehashed into two
 * scratch segments by the next hash bit; then every bucket of the old segment goes odd,
 * its depth_prefix is updated, the directory entries for the new half point to the new
 * segment (doubling the directory first when needed), the old segment takes the first
 * half, and its buckets go even. A reader that looked up a stale directory entry and
 * missed checks that the segment still covers its hash (depth_prefix) and retries if not.
 * An insert never waits for more than two segments (seg_buckets * 5 keys each) to be
 * rehashed (see Flooding).
 *
 * Flooding. The seed is public (zero-copy readers hash on the client side) and xxh3 of an
 * 8-byte key is a bijection, so anyone can make keys that share as many hash bits as
 * they like. Splitting cannot separate keys that share the next bit, and before these
 * rules 12 such keys cost 27 doublings and a 1 GiB directory in one call. So an insert
 * that finds its bucket pair full (after a kick) gets -ENOSPC, and h->refusals counts it,
 * instead of growth, when:
 *   - it already split twice (at most two splits, each with at most one doubling, per
 *     insert);
 *   - on its second split, every key of the pair and the new one agree on the split bit
 *     (the split would leave the full pair on one side). Uniform keys do that once in
 *     about 2^10 splits (11 keys on one side), so the first split of an insert is let
 *     through whatever it separates; two in a row are about 2^-20 for uniform keys and
 *     certain for chosen ones;
 *   - the segment is less than 1/16 full (MIN_SPLIT_LOAD: uniform keys fill a pair at
 *     about 45% load; a pair full this early is made of chosen keys), which bounds index
 *     bytes per key;
 *   - the split needs a doubling past DEPTH_SLACK bits above log2 of the segment count
 *     (uniform keys stay within 1 bit; measured to 3 M keys at 64..65536 buckets).
 * Other keys are unaffected: they live in other pairs.
 *
 * Defence in depth. Only the owner writes the index, the row store and the locks (the
 * segment fds are sealed: shm/arena.c), but every offset, row id, depth and prefix the
 * owner follows is still checked before use (-EBADMSG, never a wild store), the free list
 * is checked (a row it hands out must be a published, non-live row), and every spinlock
 * gives up after SPIN_LIMIT_NS (-EDEADLK) instead of hanging a worker.
 *
 * Readers retry at most READ_RETRIES times; then the owner takes the segment lock and a
 * read-only reader reports DE_RETRY. seq is 32 bits: a reader preempted for 2^31 writes
 * of one bucket between its two loads could be fooled; we accept that.
 */
#include "de_shm.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#define TABLE_MAGIC 0x31454c4241544544ull /* "DETABLE1" */
#define TABLE_VERSION 1u
#define HDR_BYTES 4096u
#define SLOTS 5
#define ROW_NONE 0xffffffffu
#define MAX_ROWS 0xfffffffeu
#define MAX_DEPTH 48u
#define READ_RETRIES 64
#define LOCK_SEG_RETRIES 4096 /* directory changes between lookup and lock, per call */
#define SPIN_LIMIT_NS 2000000000ull /* a lock held this long is not held by a live writer */
#define DEPTH_SLACK 6u
#define MIN_SPLIT_LOAD 16u
#define CHUNK_AHEAD 1024u /* row chunks one allocation may add past the published ones */ /* splits of segments under 1/16 full are refused */
#define CHUNK_TARGET (2u << 20)
#define META_BYTES 32u
#define ROW_LIVE 1u
#ifndef PREFETCH_LINES
#define PREFETCH_LINES 8
#endif

#if defined(__SANITIZE_THREAD__)
#define DE_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define DE_TSAN 1
#endif
#endif

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

struct bucket {
	uint64_t key[SLOTS];
	uint32_t row[SLOTS];
	uint32_t seq;
};

struct seg {
	uint64_t depth_prefix;
	uint32_t lock;
	uint32_t nkeys;
	uint64_t pad[6];
	struct bucket b[];
};

struct table_hdr {
	uint64_t magic;
	uint32_t version, hdr_bytes;
	uint32_t dim, nslots, init, seg_buckets;
	float init_a, init_b, slot_init;
	uint32_t dtype;
	uint64_t seed;
	uint32_t row_stride, chunk_shift;
	uint64_t chunk_bytes;
	uint64_t chunk_tab;
	uint32_t chunk_cap, retired;
	uint64_t serve_version;
	uint64_t pad1[4];
	/* 128 */ uint64_t dir;
	uint64_t pad2[7];
	/* 192 */ uint64_t next_row;
	uint32_t nchunks, chunk_lock;
	uint64_t pad3[6];
	/* 256 */ uint32_t free_lock, free_head;
	uint64_t nfree;
	uint64_t pad4[6];
	/* 320 */ uint64_t splits, doublings;
	uint32_t dir_lock, pad5;
	uint64_t refusals;     /* inserts refused by the index's growth rules */
	uint64_t pad6[4];
};

_Static_assert(sizeof(struct bucket) == 64, "a bucket is one cache line");
_Static_assert(offsetof(struct bucket, row) == 40 && offsetof(struct bucket, seq) == 60, "layout");
_Static_assert(sizeof(struct seg) == 64, "segment header is one cache line");
_Static_assert(offsetof(struct table_hdr, seed) == 48, "layout");
_Static_assert(offsetof(struct table_hdr, chunk_tab) == 72, "layout");
_Static_assert(offsetof(struct table_hdr, retired) == 84, "layout");
_Static_assert(offsetof(struct table_hdr, serve_version) == 88, "layout");
_Static_assert(offsetof(struct table_hdr, dir) == 128, "layout");
_Static_assert(offsetof(struct table_hdr, next_row) == 192, "layout");
_Static_assert(offsetof(struct table_hdr, free_lock) == 256, "layout");
_Static_assert(offsetof(struct table_hdr, splits) == 320, "layout");
_Static_assert(offsetof(struct table_hdr, refusals) == 344, "layout");
_Static_assert(sizeof(struct table_hdr) <= HDR_BYTES, "header fits");
_Static_assert(sizeof(struct de_row_meta) == META_BYTES, "metadata is 32 bytes");

struct de_table {
	de_arena *arena;
	char *base;
	struct table_hdr *hdr;
	bool ro;
	struct de_table_config cfg;
	uint32_t dim, row_floats, row_stride, chunk_shift, chunk_cap;
	uint64_t chunk_mask, chunk_rows_bytes, chunk_bytes, seg_bytes, bmask;
	uint64_t lim;             /* arena bytes known mapped; reloaded on a miss */
	uint64_t *ctab;           /* chunk offsets (validated when the handle was made) */
	pthread_mutex_t ro_lock;  /* read-only: serializes arena refresh */
	de_fd_source src;
	void *src_ctx;
};

/* ---- small helpers ----------------------------------------------------------------- */

#define LDA(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define STR(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#ifndef DE_TSAN
#define LD(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define ST(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define FENCE_ACQ() __atomic_thread_fence(__ATOMIC_ACQUIRE)
#define FENCE_REL() __atomic_thread_fence(__ATOMIC_RELEASE)
#else
/* ThreadSanitizer does not model fences (gcc refuses them). In TSan builds every
 * relaxed access of shared memory is made acquire/release instead, which is strictly
 * stronger: a reader that loads any value of a write section synchronizes with its store
 * and so sees the odd seq stored before it. Same protocol, checkable by TSan. */
#define LD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define ST(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define FENCE_ACQ() __asm__ __volatile__("" ::: "memory")
#define FENCE_REL() __asm__ __volatile__("" ::: "memory")
#endif

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Take a spinlock in shared memory: 0, or -EDEADLK after SPIN_LIMIT_NS (a corrupt lock
 * word, or a holder that died: no live writer holds one that long). */
static int __attribute__((warn_unused_result)) spin_lock(uint32_t *l)
{
	uint64_t t0 = 0;
	for (unsigned n = 0;; n++) {
		if (!LD(l) && !__atomic_exchange_n(l, 1, __ATOMIC_ACQUIRE))
			return 0;
		if (n < 256) {
			__builtin_ia32_pause();
			continue;
		}
		sched_yield();
		if (n % 64)
			continue;
		uint64_t now = mono_ns();
		if (!t0)
			t0 = now;
		else if (now - t0 > SPIN_LIMIT_NS)
			return -EDEADLK;
	}
}

static void spin_unlock(uint32_t *l) { STR(l, 0); }

static inline uint64_t key_hash(const struct de_table *t, uint64_t key)
{
	return XXH3_64bits_withSeed(&key, sizeof key, t->cfg.seed);
}

/* Copies of rows that other threads or processes read under a seqlock. Under TSan the
 * copies are word-wise relaxed atomics so that the race the seqlock tolerates is not
 * reported; elsewhere memcpy. */
static inline void row_load(float *dst, const float *src, uint32_t n)
{
#ifdef DE_TSAN
	for (uint32_t i = 0; i < n; i++) {
		uint32_t w = LD((const uint32_t *)&src[i]);
		memcpy(&dst[i], &w, 4);
	}
#else
	memcpy(dst, src, (size_t)n * 4);
#endif
}

static inline void row_store(float *dst, const float *src, uint32_t n)
{
#ifdef DE_TSAN
	for (uint32_t i = 0; i < n; i++) {
		uint32_t w;
		memcpy(&w, &src[i], 4);
		ST((uint32_t *)&dst[i], w);
	}
#else
	memcpy(dst, src, (size_t)n * 4);
#endif
}

static inline void row_fill(float *dst, float v, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
#ifdef DE_TSAN
		uint32_t w;
		memcpy(&w, &v, 4);
		ST((uint32_t *)&dst[i], w);
#else
		dst[i] = v;
#endif
	}
}

static inline void seq_begin(struct bucket *b)
{
	ST(&b->seq, LD(&b->seq) + 1);
	/* release fence: the odd seq is visible before any store of this section; pairs
	 * with the reader's acquire fence before its second seq load */
	FENCE_REL();
}

static inline void seq_end(struct bucket *b)
{
	/* release: publishes the section's stores; pairs with the reader's load-acquire */
	STR(&b->seq, LD(&b->seq) + 1);
}

/* Is off..off+len inside what this process has mapped? Read-only attaches map new
 * arena segments on demand through the fd source. */
static bool __attribute__((noinline)) remap(struct de_table *t, uint64_t off, uint64_t len)
{
	if (off > UINT64_MAX - len)
		return false;
	uint64_t lim = de_arena_mapped_bytes(t->arena);
	if (off + len > lim && t->ro && t->src) {
		pthread_mutex_lock(&t->ro_lock);
		(void)de_arena_refresh(t->arena, t->src, t->src_ctx);
		pthread_mutex_unlock(&t->ro_lock);
		lim = de_arena_mapped_bytes(t->arena);
	}
	__atomic_store_n(&t->lim, lim, __ATOMIC_RELAXED);
	return off + len <= lim;
}

static inline bool in_map(struct de_table *t, uint64_t off, uint64_t len)
{
	if (likely(off + len <= LD(&t->lim) && off + len >= off))
		return true;
	return remap(t, off, len);
}

static inline struct seg *seg_at(struct de_table *t, uint64_t off)
{
	if (unlikely(!off || (off & 63) || !in_map(t, off, t->seg_bytes)))
		return NULL;
	return (struct seg *)(t->base + off);
}

/* The chunk holding row r, or NULL if r is not a published row of a mapped chunk. */
static inline char *chunk_of(struct de_table *t, uint32_t r)
{
	uint32_t c = r >> t->chunk_shift;
	if (unlikely(c >= t->chunk_cap))
		return NULL;
	/* an unpublished entry is 0; a published one was stored before the slot that
	 * names row r was released, and our caller acquired that slot's seq */
	uint64_t off = LD(&t->ctab[c]);
	if (unlikely(!off || (off & 63) || !in_map(t, off, t->chunk_bytes)))
		return NULL;
	return t->base + off;
}

static inline float *row_at(struct de_table *t, uint32_t r)
{
	char *c = chunk_of(t, r);
	return c ? (float *)(c + (uint64_t)(r & t->chunk_mask) * t->row_stride) : NULL;
}

static inline struct de_row_meta *meta_at(struct de_table *t, uint32_t r)
{
	char *c = chunk_of(t, r);
	return c ? (struct de_row_meta *)(c + t->chunk_rows_bytes +
					  (uint64_t)(r & t->chunk_mask) * META_BYTES)
		 : NULL;
}

static inline uint64_t b2_of(const struct de_table *t, uint64_t h)
{
	uint64_t b1 = h & t->bmask, b2 = (h >> 16) & t->bmask;
	return b2 == b1 ? b1 ^ 1 : b2;
}

static inline bool covers(uint64_t dp, uint64_t h)
{
	uint32_t d = (uint32_t)(dp & 0xff);
	if (unlikely(d > MAX_DEPTH))
		return false; /* corrupt: covers nothing */
	return d == 0 || (h >> (64 - d)) == (dp >> 8);
}

static inline int slot_of(const struct bucket *b, uint64_t key)
{
	for (int j = 0; j < SLOTS; j++)
		if (LD(&b->key[j]) == key)
			return j;
	return -1;
}

/* The segment the current directory names for h (no lock), or NULL if corrupt. */
static inline struct seg *seg_for(struct de_table *t, uint64_t h)
{
	uint64_t dw = LDA(&t->hdr->dir);
	uint32_t g = (uint32_t)(dw & 63);
	uint64_t doff = dw & ~63ull;
	if (unlikely(g > MAX_DEPTH || !in_map(t, doff, 8ull << g)))
		return NULL;
	uint64_t idx = g ? h >> (64 - g) : 0;
	return seg_at(t, LDA((uint64_t *)(t->base + doff) + idx));
}

/* ---- initializers -------------------------------------------------------------------- */

/* [0, 1) with 53 bits */
static inline double unif(uint64_t *s) { return (double)(de_splitmix64_next(s) >> 11) * 0x1p-53; }

/* Fill dim values for key: deterministic in (seed, key), independent of the host. */
static void init_values(const struct de_table_config *c, uint64_t key, float *v)
{
	uint64_t s = XXH3_64bits_withSeed(&key, sizeof key, c->seed ^ 0x5ee1d1a1c0ffee00ull);
	switch (c->init) {
	case DE_INIT_ZEROS:
		memset(v, 0, (size_t)c->dim * 4);
		break;
	case DE_INIT_CONSTANT:
		for (uint32_t i = 0; i < c->dim; i++)
			v[i] = c->init_a;
		break;
	case DE_INIT_UNIFORM:
		for (uint32_t i = 0; i < c->dim; i++) {
			float x = (float)(c->init_a + (c->init_b - (double)c->init_a) * unif(&s));
			v[i] = x < c->init_b ? x : nextafterf(c->init_b, c->init_a);
		}
		break;
	case DE_INIT_TRUNC_NORMAL:
		/* Box-Muller gives two normals per draw; each outside +-2 sigma (about 4.6%)
		 * is dropped and drawn again. */
		for (uint32_t i = 0; i < c->dim;) {
			double u1 = 1.0 - unif(&s), u2 = unif(&s);
			double r = sqrt(-2.0 * log(u1)), z[2] = { r * cos(2.0 * M_PI * u2),
								 r * sin(2.0 * M_PI * u2) };
			for (int k = 0; k < 2 && i < c->dim; k++)
				if (z[k] >= -2.0 && z[k] <= 2.0)
					v[i++] = (float)(c->init_a + c->init_b * z[k]);
		}
		break;
	}
}

/* ---- config and layout ------------------------------------------------------------- */

int de_table_config_check(const struct de_table_config *in, struct de_table_config *out,
			 char *why, size_t why_cap)
{
#define BAD(...)                                                                           \
	do {                                                                               \
		if (why && why_cap)                                                        \
			snprintf(why, why_cap, __VA_ARGS__);                               \
		return -EINVAL;                                                            \
	} while (0)
	if (!in || !out)
		BAD("no config");
	struct de_table_config c = *in;
	if (c.dim < 1 || c.dim > DE_MAX_DIM)
		BAD("dim %u is not in 1..%u", c.dim, DE_MAX_DIM);
	if (c.nslots > DE_MAX_SLOTS)
		BAD("nslots %u is above %u", c.nslots, DE_MAX_SLOTS);
	if (!c.seg_buckets)
		c.seg_buckets = 1024;
	if (c.seg_buckets < 64 || c.seg_buckets > 65536 || (c.seg_buckets & (c.seg_buckets - 1)))
		BAD("seg_buckets %u is not a power of two in 64..65536", c.seg_buckets);
	if (!isfinite(c.init_a) || !isfinite(c.init_b) || !isfinite(c.slot_init))
		BAD("init_a, init_b and slot_init must be finite");
	switch (c.init) {
	case DE_INIT_ZEROS:
		c.init_a = c.init_b = 0;
		break;
	case DE_INIT_CONSTANT:
		c.init_b = 0;
		break;
	case DE_INIT_UNIFORM:
		if (!(c.init_a < c.init_b))
			BAD("uniform init needs init_a < init_b");
		break;
	case DE_INIT_TRUNC_NORMAL:
		if (!(c.init_b > 0))
			BAD("truncated-normal init needs init_b (stddev) > 0");
		break;
	default:
		BAD("init %u is not 0..3", (unsigned)c.init);
	}
#undef BAD
	*out = c;
	return 0;
}

static int config_check(const struct de_table_config *in, struct de_table_config *c)
{
	return de_table_config_check(in, c, NULL, 0);
}

static bool config_equal(const struct de_table_config *a, const struct de_table_config *b)
{
	return a->dim == b->dim && a->nslots == b->nslots && a->init == b->init &&
	       !memcmp(&a->init_a, &b->init_a, 4) && !memcmp(&a->init_b, &b->init_b, 4) &&
	       !memcmp(&a->slot_init, &b->slot_init, 4) && a->seed == b->seed &&
	       a->seg_buckets == b->seg_buckets;
}

/* Derive the handle's layout fields from its config and the arena's reserve. */
static void layout(struct de_table *t, uint64_t reserve)
{
	uint32_t bytes = t->cfg.dim * 4 * (1 + t->cfg.nslots);
	t->dim = t->cfg.dim;
	t->row_floats = t->cfg.dim * (1 + t->cfg.nslots);
	t->row_stride = bytes >= 64 ? (bytes + 63) & ~63u : (bytes + 15) & ~15u;
	uint32_t shift = 0;
	while (shift < 20 && ((uint64_t)(t->row_stride + META_BYTES) << (shift + 1)) <= CHUNK_TARGET)
		shift++;
	t->chunk_shift = shift;
	t->chunk_mask = (1ull << shift) - 1;
	t->chunk_rows_bytes = (uint64_t)t->row_stride << shift;
	t->chunk_bytes = t->chunk_rows_bytes + ((uint64_t)META_BYTES << shift);
	uint64_t cap = ((uint64_t)MAX_ROWS >> shift) + 1, by_reserve = reserve / t->chunk_bytes + 1;
	t->chunk_cap = (uint32_t)(cap < by_reserve ? cap : by_reserve);
	t->seg_bytes = sizeof(struct seg) + (uint64_t)t->cfg.seg_buckets * sizeof(struct bucket);
	t->bmask = t->cfg.seg_buckets - 1;
}

static struct de_table *handle_new(de_arena *a)
{
	struct de_table *t = calloc(1, sizeof *t);
	if (!t)
		return NULL;
	t->arena = a;
	t->base = de_arena_at(a, 0);
	t->ro = de_arena_readonly(a);
	t->lim = de_arena_mapped_bytes(a);
	pthread_mutex_init(&t->ro_lock, NULL);
	return t;
}

static int table_create(struct de_table *t)
{
	struct table_hdr *h;
	uint64_t hoff, ctab, dir, seg;
	int err = de_arena_alloc(t->arena, HDR_BYTES, 64, &hoff);
	if (!err)
		err = de_arena_alloc(t->arena, (uint64_t)t->chunk_cap * 8, 64, &ctab);
	if (!err)
		err = de_arena_alloc(t->arena, 64, 64, &dir);
	if (!err)
		err = de_arena_alloc(t->arena, t->seg_bytes, 64, &seg);
	if (err)
		return err;
	/* Fresh arena memory is zero (new memfd pages, never reused). */
	h = (struct table_hdr *)(t->base + hoff);
	h->magic = TABLE_MAGIC;
	h->version = TABLE_VERSION;
	h->hdr_bytes = HDR_BYTES;
	h->dim = t->cfg.dim;
	h->nslots = t->cfg.nslots;
	h->init = (uint32_t)t->cfg.init;
	h->seg_buckets = t->cfg.seg_buckets;
	h->init_a = t->cfg.init_a;
	h->init_b = t->cfg.init_b;
	h->slot_init = t->cfg.slot_init;
	h->seed = t->cfg.seed;
	h->row_stride = t->row_stride;
	h->chunk_shift = t->chunk_shift;
	h->chunk_bytes = t->chunk_bytes;
	h->chunk_tab = ctab;
	h->chunk_cap = t->chunk_cap;
	h->free_head = ROW_NONE;
	t->ctab = (uint64_t *)(t->base + ctab);
	*(uint64_t *)(t->base + dir) = seg;
	h->dir = dir; /* depth 0 */
	t->hdr = h;
	return de_arena_set_root(t->arena, hoff);
}

/* Validate a header found in an arena (untrusted) and fill the handle from it. */
static int table_adopt(struct de_table *t, uint64_t hoff)
{
	if ((hoff & 63) || !de_arena_valid(t->arena, hoff, HDR_BYTES))
		return -EBADMSG;
	struct table_hdr h;
	memcpy(&h, t->base + hoff, sizeof h);
	if (h.magic != TABLE_MAGIC)
		return -EBADMSG;
	if (h.version != TABLE_VERSION)
		return -EPROTO;
	if (h.hdr_bytes != HDR_BYTES || h.dtype != 0)
		return -EBADMSG;
	struct de_table_config c = {
		.dim = h.dim, .nslots = h.nslots, .init = (enum de_init)h.init,
		.init_a = h.init_a, .init_b = h.init_b, .slot_init = h.slot_init,
		.seed = h.seed, .seg_buckets = h.seg_buckets,
	}, norm;
	if (h.init > DE_INIT_TRUNC_NORMAL || config_check(&c, &norm) || !config_equal(&c, &norm))
		return -EBADMSG;
	t->cfg = c;
	layout(t, UINT64_MAX);
	/* the chunk capacity depends on the creator's reserve: take it, bounded */
	if (h.row_stride != t->row_stride || h.chunk_shift != t->chunk_shift ||
	    h.chunk_bytes != t->chunk_bytes || !h.chunk_cap || h.chunk_cap > t->chunk_cap ||
	    (h.chunk_tab & 63) || !de_arena_valid(t->arena, h.chunk_tab, (uint64_t)h.chunk_cap * 8))
		return -EBADMSG;
	t->chunk_cap = h.chunk_cap;
	t->ctab = (uint64_t *)(t->base + h.chunk_tab);
	t->hdr = (struct table_hdr *)(t->base + hoff);
	return 0;
}

int de_table_open(de_arena *a, const struct de_table_config *cfg, de_table **out)
{
	if (!a || !cfg || !out)
		return -EINVAL;
	*out = NULL;
	struct de_table_config c;
	int err = config_check(cfg, &c);
	if (err)
		return err;
	struct de_table *t = handle_new(a);
	if (!t)
		return -ENOMEM;
	uint64_t root = de_arena_root(a);
	if (root) {
		err = table_adopt(t, root);
		if (!err && !config_equal(&t->cfg, &c))
			err = -EEXIST;
	} else if (t->ro) {
		err = -EBADMSG;
	} else {
		t->cfg = c;
		/* capacity of the chunk table: as many chunks as 2^32 rows or the
		 * arena's virtual reservation can hold */
		layout(t, de_arena_reserve_bytes(a));
		err = table_create(t);
	}
	if (err) {
		de_table_close(t);
		return err;
	}
	t->lim = de_arena_mapped_bytes(a);
	*out = t;
	return 0;
}

int de_table_attach_ro(de_arena *a, de_table **out)
{
	if (!a || !out)
		return -EINVAL;
	*out = NULL;
	uint64_t root = de_arena_root(a);
	if (!root)
		return -EBADMSG;
	struct de_table *t = handle_new(a);
	if (!t)
		return -ENOMEM;
	int err = table_adopt(t, root);
	if (err) {
		de_table_close(t);
		return err;
	}
	*out = t;
	return 0;
}

void de_table_close(de_table *t)
{
	if (!t)
		return;
	pthread_mutex_destroy(&t->ro_lock);
	free(t);
}

int de_table_config_get(const de_table *t, struct de_table_config *out)
{
	if (!t || !out)
		return -EINVAL;
	*out = t->cfg;
	return 0;
}

uint32_t de_table_dim(const de_table *t) { return t->dim; }
uint32_t de_table_row_floats(const de_table *t) { return t->row_floats; }
uint32_t de_table_bytes_per_row(const de_table *t) { return t->row_stride + META_BYTES; }

void de_table_set_fd_source(de_table *t, de_fd_source src, void *ctx)
{
	pthread_mutex_lock(&t->ro_lock);
	t->src = src;
	t->src_ctx = ctx;
	pthread_mutex_unlock(&t->ro_lock);
}

#ifdef DE_FAULT_INJECTION
/* Test builds: DE_FAULT_KEY_BITS=b (1..63) in the environment keeps the low b bits of
 * every string fingerprint, so that tests can find colliding strings. Read once. */
static uint64_t key_mask(void)
{
	static uint64_t mask; /* 0: not read yet */
	uint64_t m = __atomic_load_n(&mask, __ATOMIC_RELAXED);
	if (!m) {
		const char *e = getenv("DE_FAULT_KEY_BITS");
		long b = e ? strtol(e, NULL, 10) : 0;
		m = b > 0 && b < 64 ? (1ull << b) - 1 : ~0ull;
		__atomic_store_n(&mask, m, __ATOMIC_RELAXED);
	}
	return m;
}
#endif

uint64_t de_key_from_string(uint64_t seed, const void *s, size_t len)
{
	if (!len)
		return 0;
	uint64_t k = XXH3_64bits_withSeed(s, len, seed);
#ifdef DE_FAULT_INJECTION
	k &= key_mask();
#endif
	return k ? k : 1;
}

/* ---- reads ------------------------------------------------------------------------ */

enum { R_FOUND, R_MISSING, R_RETRY };

/*
 * One key, lock-free: copy its values to out. On R_FOUND, *row_out is its row id.
 * Retries on a torn or stale read, at most READ_RETRIES times.
 */
static int read_one(struct de_table *t, uint64_t key, uint64_t h, float *out, uint32_t *row_out)
{
	for (int attempt = 0; attempt < READ_RETRIES; attempt++) {
		struct seg *s = seg_for(t, h);
		if (unlikely(!s))
			return R_RETRY; /* corrupt or unmapped: nothing we can read */
		struct bucket *b[2] = { &s->b[h & t->bmask], &s->b[b2_of(t, h)] };
		uint32_t sq[2];
		int k, j = -1;
		for (k = 0; k < 2; k++) {
			sq[k] = LDA(&b[k]->seq);
			if ((sq[k] & 1) || (j = slot_of(b[k], key)) >= 0)
				break;
		}
		if (k < 2 && (sq[k] & 1))
			continue; /* a writer is inside */
		if (j >= 0) {
			uint32_t r = LD(&b[k]->row[j]);
			float *row = row_at(t, r);
			if (row)
				row_load(out, row, t->dim);
			/* acquire fence: the copy happens before the re-check; pairs with the
			 * release fence in seq_begin */
			FENCE_ACQ();
			if (LD(&b[k]->seq) != sq[k] || !row)
				continue;
			*row_out = r;
			return R_FOUND;
		}
		/* In neither bucket: a miss if neither changed meanwhile (a kick moves a key
		 * between its two buckets under both seqs) and this segment still owns h
		 * (it may have split after we read the directory). */
		FENCE_ACQ();
		if (LD(&b[0]->seq) != sq[0] || LD(&b[1]->seq) != sq[1])
			continue;
		if (covers(LDA(&s->depth_prefix), h))
			return R_MISSING;
	}
	return R_RETRY;
}

/* Lock the segment that owns h. out: the locked segment. -EBADMSG for a corrupt index
 * (a directory entry that names no valid segment, or none that covers h), -EDEADLK for a
 * lock nobody releases. */
static int lock_seg(struct de_table *t, uint64_t h, struct seg **out)
{
	for (unsigned n = 0; n < LOCK_SEG_RETRIES; n++) {
		struct seg *s = seg_for(t, h);
		if (unlikely(!s))
			return -EBADMSG; /* only the owner writes the index: a bug */
		int err = spin_lock(&s->lock);
		if (err)
			return err;
		if (covers(LD(&s->depth_prefix), h)) {
			*out = s;
			return 0;
		}
		spin_unlock(&s->lock); /* it split after we read the directory: look again */
	}
	return -EBADMSG;
}

/* Find key in a locked segment: bucket and slot, or NULL. */
static struct bucket *locked_find(struct de_table *t, struct seg *s, uint64_t key, uint64_t h, int *slot)
{
	struct bucket *b = &s->b[h & t->bmask];
	if ((*slot = slot_of(b, key)) >= 0)
		return b;
	b = &s->b[b2_of(t, h)];
	if ((*slot = slot_of(b, key)) >= 0)
		return b;
	return NULL;
}

static inline void meta_touch(struct de_table *t, uint32_t r, uint64_t step)
{
	struct de_row_meta *m = meta_at(t, r);
	if (m) { /* statistics: a lost increment under a race is acceptable, a lock is not */
		ST(&m->freq, LD(&m->freq) + 1);
		ST(&m->last_step, step);
	}
}

/* Owner's fallback after READ_RETRIES: read under the segment lock. */
static int read_locked(struct de_table *t, uint64_t key, uint64_t h, float *out, uint32_t *row_out)
{
	struct seg *s;
	if (lock_seg(t, h, &s))
		return R_RETRY;
	int j;
	struct bucket *b = locked_find(t, s, key, h, &j);
	int res = R_MISSING;
	float *row = b ? row_at(t, LD(&b->row[j])) : NULL;
	if (row) {
		*row_out = LD(&b->row[j]);
		row_load(out, row, t->dim);
		res = R_FOUND;
	}
	spin_unlock(&s->lock);
	return res;
}

static int read_slow(struct de_table *t, uint64_t key, uint64_t h, float *out, uint32_t *row)
{
	int r = read_one(t, key, h, out, row);
	if (r == R_RETRY && !t->ro && seg_for(t, h))
		r = read_locked(t, key, h, out, row);
	return r;
}

/*
 * Batch read as a software pipeline, PIPE_D keys between stages, so that DRAM misses of
 * about 3 * PIPE_D keys are in flight at once:
 *   A (key i):            hash, directory, prefetch the first bucket;
 *   B (key i - D):        probe it; a hit prefetches the row, otherwise the second bucket;
 *   C (key i - 2D):       probe the second bucket when needed, prefetch the row;
 *   E (key i - 3D):       copy the row and validate the bucket's seq (or the miss).
 * Torn or corrupt reads leave the pipeline for read_slow. With touch, found rows get
 * freq+1 and last_step = step (plain stores: the counters are statistics).
 */
#ifndef ROW_PREFETCH_LOCALITY
#define ROW_PREFETCH_LOCALITY 3
#endif
#ifndef PIPE_D
#define PIPE_D 8
#endif
#define PIPE_R 64 /* ring of per-key state, > 3 * PIPE_D */

struct pipe_slot {
	uint64_t h;
	struct seg *sg;
	struct bucket *b1, *b2, *bk; /* bk: the bucket the key was found in */
	float *rp;
	uint32_t s1, s2, sk, rid;
	uint8_t st;
};

enum { P_ZERO, P_B1, P_B2, P_HIT, P_MISS, P_SLOW };

static inline void pipe_found(struct de_table *t, struct pipe_slot *p, struct bucket *b,
			      uint32_t sq, int j, bool touch)
{
	p->rid = LD(&b->row[j]);
	p->rp = row_at(t, p->rid);
	if (unlikely(!p->rp)) {
		p->st = P_SLOW;
		return;
	}
	p->bk = b;
	p->sk = sq;
	p->st = P_HIT;
	uint64_t bytes = (uint64_t)t->dim * 4;
	for (uint64_t o = 0; o < bytes && o < PREFETCH_LINES * 64; o += 64)
		__builtin_prefetch((char *)p->rp + o, 0, ROW_PREFETCH_LOCALITY);
	if (touch)
		__builtin_prefetch(meta_at(t, p->rid), 1);
}

static int find_batch(struct de_table *t, const uint64_t *keys, size_t n, float *out,
		      uint8_t *status, bool touch, uint64_t step)
{
	struct pipe_slot ring[PIPE_R];
	const uint32_t dim = t->dim;
	const uint64_t row_bytes = (uint64_t)dim * 4;
	uint64_t dw = LDA(&t->hdr->dir);
	uint32_t gd = (uint32_t)(dw & 63);
	uint64_t *dir = NULL;
	if (likely(gd <= MAX_DEPTH && in_map(t, dw & ~63ull, 8ull << gd)))
		dir = (uint64_t *)(t->base + (dw & ~63ull));

	for (size_t i = 0; i < n + 3 * PIPE_D; i++) {
		if (i < n) { /* A */
			struct pipe_slot *p = &ring[i % PIPE_R];
			uint64_t key = keys[i];
			p->st = P_SLOW;
			if (!key) {
				p->st = P_ZERO;
			} else {
				p->h = key_hash(t, key);
				if (likely(dir) &&
				    likely((p->sg = seg_at(t, LDA(&dir[gd ? p->h >> (64 - gd) : 0]))))) {
					p->b1 = &p->sg->b[p->h & t->bmask];
					__builtin_prefetch(p->b1);
					p->st = P_B1;
				}
			}
		}
		if (i >= PIPE_D && i - PIPE_D < n) { /* B */
			size_t k = i - PIPE_D;
			struct pipe_slot *p = &ring[k % PIPE_R];
			if (p->st == P_B1) {
				uint32_t sq = LDA(&p->b1->seq);
				int j = slot_of(p->b1, keys[k]);
				p->s1 = sq;
				if (sq & 1) {
					p->st = P_SLOW; /* a writer is inside */
				} else if (j >= 0) {
					pipe_found(t, p, p->b1, sq, j, touch);
				} else {
					p->b2 = &p->sg->b[b2_of(t, p->h)];
					__builtin_prefetch(p->b2);
					p->st = P_B2;
				}
			}
		}
		if (i >= 2 * PIPE_D && i - 2 * PIPE_D < n) { /* C */
			size_t k = i - 2 * PIPE_D;
			struct pipe_slot *p = &ring[k % PIPE_R];
			if (p->st == P_B2) {
				uint32_t sq = LDA(&p->b2->seq);
				int j = slot_of(p->b2, keys[k]);
				p->s2 = sq;
				if (sq & 1)
					p->st = P_SLOW;
				else if (j >= 0)
					pipe_found(t, p, p->b2, sq, j, touch);
				else
					p->st = P_MISS;
			}
		}
		if (i >= 3 * PIPE_D) { /* E */
			size_t k = i - 3 * PIPE_D;
			struct pipe_slot *p = &ring[k % PIPE_R];
			float *o = out + k * dim;
			int res = R_RETRY;
			switch (p->st) {
			case P_ZERO:
				memset(o, 0, row_bytes);
				if (status)
					status[k] = DE_FOUND;
				continue;
			case P_HIT:
				row_load(o, p->rp, dim);
				FENCE_ACQ(); /* pairs with seq_begin */
				if (likely(LD(&p->bk->seq) == p->sk))
					res = R_FOUND;
				break;
			case P_MISS:
				/* neither bucket changed (a kick moves keys between them under both
				 * seqs) and the segment still owns h (it may have split) */
				FENCE_ACQ();
				if (LD(&p->b1->seq) == p->s1 && LD(&p->b2->seq) == p->s2 &&
				    covers(LDA(&p->sg->depth_prefix), p->h))
					res = R_MISSING;
				break;
			}
			if (res == R_RETRY)
				res = read_slow(t, keys[k], p->h, o, &p->rid);
			if (res == R_FOUND) {
				if (touch)
					meta_touch(t, p->rid, step);
			} else {
				memset(o, 0, row_bytes);
			}
			if (status)
				status[k] = res == R_FOUND ? DE_FOUND : res == R_MISSING ? DE_MISSING : DE_RETRY;
		}
	}
	return 0;
}

int de_table_find(de_table *t, const uint64_t *keys, size_t n, float *out, uint8_t *status)
{
	if (!t || (n && (!keys || !out)))
		return -EINVAL;
	return find_batch(t, keys, n, out, status, false, 0);
}

/* ---- row allocation -------------------------------------------------------------- */

static int chunk_add(struct de_table *t, uint32_t c)
{
	struct table_hdr *h = t->hdr;
	int err = spin_lock(&h->chunk_lock);
	if (err)
		return err;
	while (!err && LD(&h->nchunks) <= c) {
		uint32_t n = LD(&h->nchunks);
		uint64_t off;
		if (n >= t->chunk_cap) {
			err = -ENOSPC;
			break;
		}
		if (c - n > CHUNK_AHEAD) { /* next_row ran ahead of what was ever published */
			err = -EBADMSG;
			break;
		}
		err = de_arena_alloc(t->arena, t->chunk_bytes, 64, &off);
		if (err)
			break;
		ST(&t->ctab[n], off);
		/* release: chunk_tab[n] is written; pairs with the acquire in chunk_of */
		STR(&h->nchunks, n + 1);
	}
	spin_unlock(&h->chunk_lock);
	return err;
}

/* A row id from the free list or the shared header is one the table handed out: below
 * next_row, in a published chunk, with its row and metadata mapped. */
static bool row_ok(struct de_table *t, uint32_t r)
{
	return r < LD(&t->hdr->next_row) && row_at(t, r) && meta_at(t, r);
}

static int row_alloc(struct de_table *t, uint32_t *out)
{
	struct table_hdr *h = t->hdr;
	if (LD(&h->nfree)) {
		int err = spin_lock(&h->free_lock);
		if (err)
			return err;
		uint32_t r = LD(&h->free_head);
		if (r != ROW_NONE) {
			struct de_row_meta *m = row_ok(t, r) ? meta_at(t, r) : NULL;
			uint64_t next = m ? LD(&m->key) : 0; /* row_free: the link */
			/* a free row is not live, and links to a row id or to the end; a cycle
			 * hands out a live row again, and its flags catch it */
			if (!m || (LD(&m->flags) & ROW_LIVE) || (next != ROW_NONE && next >= MAX_ROWS)) {
				spin_unlock(&h->free_lock);
				return -EBADMSG;
			}
			ST(&h->free_head, (uint32_t)next);
			uint64_t nf = LD(&h->nfree);
			ST(&h->nfree, nf ? nf - 1 : 0);
			spin_unlock(&h->free_lock);
			*out = r;
			return 0;
		}
		spin_unlock(&h->free_lock);
	}
	uint64_t r = __atomic_fetch_add(&h->next_row, 1, __ATOMIC_RELAXED);
	if (r >= MAX_ROWS) {
		__atomic_fetch_sub(&h->next_row, 1, __ATOMIC_RELAXED);
		return -ENOSPC;
	}
	uint32_t c = (uint32_t)(r >> t->chunk_shift);
	if (c >= LDA(&h->nchunks)) {
		int err = chunk_add(t, c);
		if (err) {
			/* The id is lost to this table; that only happens when the arena
			 * is full, and the caller gets the error. */
			return err;
		}
	}
	if (!row_at(t, (uint32_t)r) || !meta_at(t, (uint32_t)r))
		return -EBADMSG; /* a chunk table entry that names no mapped chunk */
	*out = (uint32_t)r;
	return 0;
}

/* Put row r on the free list. A lock that times out leaks the row (a corrupt header:
 * losing one row id is the safe way out). The link to the next free row goes in the
 * row's key: lock-free writers never store a key. last_step, freq and aux are written
 * without a lock by readers that found the row just before it was erased (meta_touch,
 * the Hogwild step): a link there was overwritten by a step number, and the list then
 * handed out a live row (-EBADMSG on a later insert). */
static void row_free(struct de_table *t, uint32_t r)
{
	struct table_hdr *h = t->hdr;
	struct de_row_meta *m = meta_at(t, r);
	if (!m || spin_lock(&h->free_lock))
		return;
	ST(&m->flags, 0u);
	/* release: a reader that sees the link as the key also sees the row not live
	 * (de_table_peek's acquire), so a link is never taken for a key */
	STR(&m->key, (uint64_t)h->free_head);
	h->free_head = r;
	ST(&h->nfree, LD(&h->nfree) + 1);
	spin_unlock(&h->free_lock);
}

/* ---- growth ----------------------------------------------------------------------- */

/* Put (key, row) into a free slot of b: true if there was one. */
static bool bucket_put(struct bucket *b, uint64_t key, uint32_t row)
{
	for (int j = 0; j < SLOTS; j++)
		if (!b->key[j]) {
			b->key[j] = key;
			b->row[j] = row;
			return true;
		}
	return false;
}

/*
 * Insert (key, row) into a private bucket array (a split's scratch): first bucket,
 * second bucket, then a cuckoo random walk of at most 500 evictions. At the load a
 * split leaves (at most ~90% of one half, usually ~40%) the walk is almost never needed.
 */
static bool scratch_put(const struct de_table *t, struct bucket *bs, uint64_t key, uint64_t h,
			uint32_t row, uint64_t *rng)
{
	uint64_t b = h & t->bmask;
	if (bucket_put(&bs[b], key, row))
		return true;
	b = b2_of(t, h);
	for (int step = 0; step < 500; step++) {
		if (bucket_put(&bs[b], key, row))
			return true;
		int j = (int)(de_splitmix64_next(rng) % SLOTS);
		uint64_t vk = bs[b].key[j];
		uint32_t vr = bs[b].row[j];
		bs[b].key[j] = key;
		bs[b].row[j] = row;
		key = vk;
		row = vr;
		uint64_t vh = key_hash(t, key), v1 = vh & t->bmask;
		b = b == v1 ? b2_of(t, vh) : v1; /* the victim's other bucket */
	}
	return false;
}

/*
 * Make room in bucket pair (b1, b2) of a locked segment by moving one entry of either
 * bucket to its other bucket (a one-step cuckoo kick). The move is bracketed by both
 * buckets' seqs, so a reader that probed the two buckets one after the other sees a
 * changed seq and retries. Returns the bucket that now has a free slot, or NULL.
 */
static struct bucket *kick(struct de_table *t, struct seg *s, struct bucket *bb[2])
{
	for (int k = 0; k < 2; k++) {
		struct bucket *src = bb[k];
		uint64_t si = (uint64_t)(src - s->b);
		for (int j = 0; j < SLOTS; j++) {
			uint64_t vk = LD(&src->key[j]), vh = key_hash(t, vk);
			uint64_t v1 = vh & t->bmask, alt = si == v1 ? b2_of(t, vh) : v1;
			struct bucket *dst = &s->b[alt];
			int fj = slot_of(dst, 0);
			if (fj < 0)
				continue;
			seq_begin(src);
			seq_begin(dst);
			ST(&dst->row[fj], LD(&src->row[j]));
			ST(&dst->key[fj], vk);
			ST(&src->key[j], 0ull);
			ST(&src->row[j], 0u);
			seq_end(dst);
			seq_end(src);
			return src;
		}
	}
	return NULL;
}

/* The deepest directory the table may have now: DEPTH_SLACK bits above log2 of the
 * segments it will have after one more split. */
static uint32_t depth_cap(const struct de_table *t)
{
	uint64_t segs = LD(&t->hdr->splits) + 2;
	uint32_t l = 0;
	while (l < 64 && (1ull << l) < segs)
		l++;
	l += DEPTH_SLACK;
	return l < MAX_DEPTH ? l : MAX_DEPTH;
}

/* Double the directory (under dir_lock). -ENOSPC past depth_cap, -EBADMSG when the
 * current one is not where the header says. */
static int dir_double(struct de_table *t)
{
	struct table_hdr *h = t->hdr;
	uint64_t dw = LD(&h->dir);
	uint32_t g = (uint32_t)(dw & 63);
	if (g >= MAX_DEPTH || g + 1 > depth_cap(t))
		return -ENOSPC;
	if (!in_map(t, dw & ~63ull, 8ull << g))
		return -EBADMSG;
	uint64_t noff;
	int err = de_arena_alloc(t->arena, 8ull << (g + 1), 64, &noff);
	if (err)
		return err;
	const uint64_t *od = (const uint64_t *)(t->base + (dw & ~63ull));
	uint64_t *nd = (uint64_t *)(t->base + noff);
	for (uint64_t i = 0; i < (1ull << (g + 1)); i++)
		ST(&nd[i], LD(&od[i >> 1]));
	/* release: the new directory is filled; pairs with the acquire in seg_for */
	STR(&h->dir, noff | (g + 1));
	__atomic_fetch_add(&h->doublings, 1, __ATOMIC_RELAXED);
	return 0;
}

/*
 * Scratch space for splits: two segments' worth of buckets per thread, kept for the
 * thread's life (a split must not pay for malloc + page faults of 128 KiB each time).
 */
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static void scratch_key_init(void) { (void)pthread_key_create(&scratch_key, free); }

struct scratch {
	size_t n;
	struct bucket b[];
};

static struct bucket *scratch_get(size_t nbuckets)
{
	pthread_once(&scratch_once, scratch_key_init);
	struct scratch *sc = pthread_getspecific(scratch_key);
	if (!sc || sc->n < nbuckets) {
		free(sc);
		sc = malloc(sizeof *sc + nbuckets * sizeof(struct bucket));
		if (sc)
			sc->n = nbuckets;
		if (pthread_setspecific(scratch_key, sc)) {
			free(sc);
			return NULL;
		}
		if (!sc)
			return NULL;
	}
	memset(sc->b, 0, nbuckets * sizeof(struct bucket));
	return sc->b;
}

/*
 * When a segment splits before its bucket pairs fill up: at a load between 45% and 85%,
 * fixed per (prefix, depth) by a hash. With uniform keys every segment fills at the same
 * rate; without this spread they would all split within a few batches of each other
 * (measured: 13-16 splits in one batch of 4096 inserts instead of ~1.6).
 */
static inline uint32_t split_threshold(const struct de_table *t, uint64_t dp)
{
	uint64_t r = XXH3_64bits_withSeed(&dp, sizeof dp, t->cfg.seed ^ 0x5b117ull);
	uint64_t cap = (uint64_t)t->cfg.seg_buckets * SLOTS;
	return (uint32_t)(cap * 45 / 100 + (cap * 40 / 100) * (r >> 40) / (1ull << 24));
}

/* Would splitting s by its next hash bit free a slot in the full bucket pair of h? Not
 * when the pair's keys and h all agree on that bit. */
static bool split_frees_pair(const struct de_table *t, struct seg *s, uint64_t h, uint32_t d)
{
	unsigned bit = (unsigned)(h >> (63 - d)) & 1;
	const struct bucket *bb[2] = { &s->b[h & t->bmask], &s->b[b2_of(t, h)] };
	for (int k = 0; k < 2; k++)
		for (int j = 0; j < SLOTS; j++) {
			uint64_t key = LD(&bb[k]->key[j]);
			if (!key || ((unsigned)(key_hash(t, key) >> (63 - d)) & 1) != bit)
				return true;
		}
	return false;
}

/*
 * Split the locked segment s in two by the next hash bit. pair: the split is for key
 * hash h whose bucket pair is full, and the flooding rules (see "Flooding" above) apply:
 * -ENOSPC when the split would not free a slot there, when s is under 1/MIN_SPLIT_LOAD
 * full, or when it needs a doubling past depth_cap. Without pair (a split at the load
 * threshold) only the depth cap applies. -EBADMSG for a corrupt depth or prefix.
 */
static int seg_split(struct de_table *t, struct seg *s, uint64_t h, bool pair, bool second)
{
	uint64_t dp = LD(&s->depth_prefix);
	uint32_t d = (uint32_t)(dp & 0xff);
	uint64_t p = dp >> 8;
	uint32_t nb = t->cfg.seg_buckets;
	if (d >= MAX_DEPTH)
		return d > MAX_DEPTH ? -EBADMSG : -ENOSPC;
	uint64_t dw0 = LD(&t->hdr->dir);
	if ((d && (p >> d)) || (!d && p) || d > (uint32_t)(dw0 & 63))
		return -EBADMSG; /* the prefix has more bits than the depth, or the depth
				    is beyond the directory's */
	if (pair && ((second && !split_frees_pair(t, s, h, d)) ||
		     LD(&s->nkeys) < (uint64_t)nb * SLOTS / MIN_SPLIT_LOAD))
		return -ENOSPC;
	if (d == (uint32_t)(dw0 & 63) && d + 1 > depth_cap(t))
		return -ENOSPC; /* checked again under dir_lock; this spares a segment */
	struct bucket *sc = scratch_get(2 * (size_t)nb);
	if (!sc)
		return -ENOMEM;
	uint32_t cnt[2] = { 0, 0 };
	uint64_t rng = dp ^ LD(&t->hdr->splits);
	for (uint32_t i = 0; i < nb; i++)
		for (int j = 0; j < SLOTS; j++) {
			uint64_t key = LD(&s->b[i].key[j]);
			if (!key)
				continue;
			uint64_t kh = key_hash(t, key);
			unsigned bit = (unsigned)(kh >> (63 - d)) & 1;
			if (!scratch_put(t, sc + (size_t)bit * nb, key, kh, LD(&s->b[i].row[j]), &rng)) {
				/* the cuckoo walk failed on a half-empty segment: only a flood of
				 * keys with colliding seeded 64-bit hashes does that; refuse */
				return -ENOSPC;
			}
			cnt[bit]++;
		}

	uint64_t noff;
	int err = de_arena_alloc(t->arena, t->seg_bytes, 64, &noff);
	if (err)
		return err;
	struct seg *ns = (struct seg *)(t->base + noff);
	ns->depth_prefix = ((p << 1 | 1) << 8) | (d + 1);
	ns->nkeys = cnt[1];
	memcpy(ns->b, sc + nb, (size_t)nb * sizeof *sc);

	for (uint32_t i = 0; i < nb; i++)
		ST(&s->b[i].seq, LD(&s->b[i].seq) + 1);
	FENCE_REL(); /* odd seqs before anything below */
	STR(&s->depth_prefix, ((p << 1) << 8) | (d + 1));

	struct table_hdr *th = t->hdr;
	err = spin_lock(&th->dir_lock);
	if (!err) {
		if ((uint32_t)(LD(&th->dir) & 63) == d)
			err = dir_double(t);
		uint64_t dw = LD(&th->dir);
		uint32_t g = (uint32_t)(dw & 63);
		if (!err && (g <= d || g > MAX_DEPTH || !in_map(t, dw & ~63ull, 8ull << g)))
			err = -EBADMSG;
		if (!err) {
			uint64_t *dir = (uint64_t *)(t->base + (dw & ~63ull));
			uint64_t span = 1ull << (g - d - 1); /* entries per half */
			uint64_t first = ((p << 1) | 1) << (g - d - 1); /* < 2^g: p < 2^d */
			for (uint64_t i = 0; i < span; i++)
				STR(&dir[first + i], noff); /* pairs with the acquire in seg_for */
		}
		spin_unlock(&th->dir_lock);
	}
	if (err) {
		/* No directory room: undo (the old segment's contents never changed). */
		STR(&s->depth_prefix, dp);
		for (uint32_t i = 0; i < nb; i++)
			STR(&s->b[i].seq, LD(&s->b[i].seq) + 1);
		return err;
	}

	for (uint32_t i = 0; i < nb; i++) {
		for (int j = 0; j < SLOTS; j++) {
			ST(&s->b[i].key[j], sc[i].key[j]);
			ST(&s->b[i].row[j], sc[i].row[j]);
		}
		STR(&s->b[i].seq, LD(&s->b[i].seq) + 1); /* pairs with the reader's acquire */
	}
	ST(&s->nkeys, cnt[0]);
	__atomic_fetch_add(&th->splits, 1, __ATOMIC_RELAXED);
	return 0;
}

/* ---- writes -------------------------------------------------------------------- */

/*
 * Lock the key's segment and find its slot; if missing and create, make room and
 * insert a fresh row (values from `values` or the initializer, slots = slot_init).
 * Returns with the segment locked: bk and slot name the key's slot (bk NULL: missing).
 * out: *created.
 */
static int locate(struct de_table *t, uint64_t key, uint64_t h, bool create, const float *values,
		  uint64_t step, struct seg **sp, struct bucket **bk, int *slot, bool *created)
{
	*created = false;
	unsigned splits = 0; /* at most two splits (each with at most one doubling) per insert */
	for (;;) {
		struct seg *s;
		int err = lock_seg(t, h, &s);
		if (err)
			return err;
		*sp = s;
		if ((*bk = locked_find(t, s, key, h, slot))) {
			uint32_t r = LD(&(*bk)->row[*slot]);
			struct de_row_meta *m = row_ok(t, r) ? meta_at(t, r) : NULL;
			if (!m || LD(&m->key) != key) { /* a slot that names another key's row */
				spin_unlock(&s->lock);
				return -EBADMSG;
			}
			return 0;
		}
		if (!create)
			return 0;
		struct bucket *b = NULL, *bb[2] = { &s->b[h & t->bmask], &s->b[b2_of(t, h)] };
		int j = -1;
		for (int k = 0; k < 2 && j < 0; k++)
			if ((j = slot_of(bb[k], 0)) >= 0)
				b = bb[k];
		if (!b && (b = kick(t, s, bb)))
			j = slot_of(b, 0);
		if (!b) {
			err = splits >= 2 ? -ENOSPC : seg_split(t, s, h, true, splits == 1);
			spin_unlock(&s->lock);
			if (err == -ENOSPC)
				__atomic_fetch_add(&t->hdr->refusals, 1, __ATOMIC_RELAXED);
			if (err)
				return err;
			splits++;
			continue;
		}
		uint32_t r;
		err = row_alloc(t, &r);
		if (err) {
			spin_unlock(&s->lock);
			return err;
		}
		float *row = row_at(t, r);
		struct de_row_meta *m = meta_at(t, r);
		if (values) {
			row_store(row, values, t->dim);
		} else {
			float tmp[DE_MAX_DIM];
			init_values(&t->cfg, key, tmp);
			row_store(row, tmp, t->dim);
		}
		row_fill(row + t->dim, t->cfg.slot_init, t->row_floats - t->dim);
		ST(&m->key, key);
		ST(&m->last_step, step);
		ST(&m->freq, 0u);
		ST(&m->flags, ROW_LIVE);
		ST(&m->aux, 0ull);
		seq_begin(b);
		ST(&b->row[j], r);
		ST(&b->key[j], key);
		seq_end(b);
		uint32_t nk = LD(&s->nkeys) + 1;
		ST(&s->nkeys, nk);
		*bk = b;
		*slot = j;
		*created = true;
		if (!splits && nk > split_threshold(t, LD(&s->depth_prefix))) {
			/* Split now, while it is cheap to find the key again; a failure
			 * here only means the split happens at the next full bucket pair. */
			if (seg_split(t, s, h, false, false) == 0) {
				spin_unlock(&s->lock);
				err = lock_seg(t, h, &s);
				if (err)
					return err;
				*sp = s;
				*bk = locked_find(t, s, key, h, slot);
				if (!*bk) { /* only a corrupt index can lose the key */
					spin_unlock(&s->lock);
					return -EBADMSG;
				}
			}
		}
		return 0;
	}
}

int de_table_find_or_insert(de_table *t, const uint64_t *keys, size_t n, float *out,
			    uint8_t *status, uint64_t step)
{
	if (!t || (n && (!keys || !out)))
		return -EINVAL;
	if (t->ro)
		return -EROFS;
	uint8_t local[256];
	int err = 0;
	for (size_t base = 0; base < n && !err; base += sizeof local) {
		size_t g = n - base < sizeof local ? n - base : sizeof local;
		uint8_t *st = status ? status + base : local;
		find_batch(t, keys + base, g, out + base * t->dim, st, true, step);
		for (size_t k = 0; k < g; k++) {
			if (st[k] == DE_FOUND)
				continue;
			uint64_t key = keys[base + k], h = key_hash(t, key);
			struct seg *s;
			struct bucket *b;
			int j;
			bool created;
			err = locate(t, key, h, true, NULL, step, &s, &b, &j, &created);
			if (err)
				break;
			uint32_t r = LD(&b->row[j]);
			row_load(out + (base + k) * t->dim, row_at(t, r), t->dim);
			spin_unlock(&s->lock);
			meta_touch(t, r, step);
			st[k] = created ? DE_CREATED : DE_FOUND;
		}
	}
	return err;
}

/* Write access to one row under its bucket's seq: the caller's callback. */
#define WPF_D 6
#define WPF_R 16 /* > 2 * WPF_D */

static inline void wpf_bucket(struct de_table *t, uint64_t key, uint64_t *h)
{
	*h = key ? key_hash(t, key) : 0;
	if (!key)
		return;
	struct seg *s = seg_for(t, *h);
	if (s) {
		__builtin_prefetch(&s->lock, 1);
		__builtin_prefetch(&s->b[*h & t->bmask], 1);
	}
}

static inline void wpf_row(struct de_table *t, uint64_t key, uint64_t h)
{
	if (!key)
		return;
	struct seg *s = seg_for(t, h);
	if (!s)
		return;
	struct bucket *b = &s->b[h & t->bmask];
	int j = slot_of(b, key);
	if (j < 0) {
		__builtin_prefetch(&s->b[b2_of(t, h)], 1);
		return;
	}
	uint32_t r = LD(&b->row[j]);
	char *row = (char *)row_at(t, r);
	if (!row)
		return;
	for (uint32_t o = 0; o < t->row_floats * 4; o += 64)
		__builtin_prefetch(row + o, 1);
	__builtin_prefetch(meta_at(t, r), 1);
}

/* The pipeline's first keys: hashes and buckets of keys 0..2D-1, rows of keys 0..D-1;
 * hr[i % WPF_R] holds key i's hash. */
static inline void wpf_start(struct de_table *t, const uint64_t *keys, size_t n, uint64_t *hr)
{
	size_t pre = n < 2 * WPF_D ? n : 2 * WPF_D;
	for (size_t i = 0; i < pre; i++)
		wpf_bucket(t, keys[i], &hr[i % WPF_R]);
	for (size_t i = 0; i < n && i < WPF_D; i++)
		wpf_row(t, keys[i], hr[i % WPF_R]);
}

/* Before key i's step: the bucket of key i + 2D and the row of key i + D. */
static inline void wpf_next(struct de_table *t, const uint64_t *keys, size_t n, size_t i,
			    uint64_t *hr)
{
	if (i + 2 * WPF_D < n)
		wpf_bucket(t, keys[i + 2 * WPF_D], &hr[(i + 2 * WPF_D) % WPF_R]);
	if (i + WPF_D < n)
		wpf_row(t, keys[i + WPF_D], hr[(i + WPF_D) % WPF_R]);
}

typedef void (*row_writer)(struct de_table *t, void *ctx, size_t i, float *row,
			   struct de_row_meta *m, bool created);

static int write_batch(struct de_table *t, const uint64_t *keys, size_t n, bool create,
		       const float *values, row_writer w, void *ctx, uint8_t *status, uint64_t step)
{
	if (!t || (n && !keys))
		return -EINVAL;
	if (t->ro)
		return -EROFS;
	/* Prefetch pipeline (hints only; every key is still found under its lock): the
	 * bucket of key i + 2 * WPF_D, then, after a lock-free peek of that bucket, the row
	 * and metadata of key i + WPF_D, so the locked step of key i finds them in cache. */
	uint64_t hr[WPF_R];
	wpf_start(t, keys, n, hr);
	for (size_t i = 0; i < n; i++) {
		wpf_next(t, keys, n, i, hr);
		uint64_t key = keys[i];
		if (!key) {
			if (status)
				status[i] = DE_FOUND;
			continue;
		}
		uint64_t h = hr[i % WPF_R];
		struct seg *s;
		struct bucket *b;
		int j;
		bool created;
		int err = locate(t, key, h, create, values ? values + i * t->dim : NULL, step, &s,
				 &b, &j, &created);
		if (err)
			return err;
		if (!b) {
			spin_unlock(&s->lock);
			if (status)
				status[i] = DE_MISSING;
			continue;
		}
		uint32_t r = LD(&b->row[j]);
		seq_begin(b);
		w(t, ctx, i, row_at(t, r), meta_at(t, r), created);
		seq_end(b);
		spin_unlock(&s->lock);
		if (status)
			status[i] = created ? DE_CREATED : DE_FOUND;
	}
	return 0;
}

struct assign_ctx {
	const float *values;
	uint64_t step;
};

static void assign_row(struct de_table *t, void *ctx, size_t i, float *row, struct de_row_meta *m,
		       bool created)
{
	struct assign_ctx *a = ctx;
	if (!created) /* a created row already holds its values */
		row_store(row, a->values + i * t->dim, t->dim);
	ST(&m->last_step, a->step);
}

int de_table_assign(de_table *t, const uint64_t *keys, size_t n, const float *values,
		    uint8_t *status, uint64_t step)
{
	if (n && !values)
		return -EINVAL;
	struct assign_ctx a = { values, step };
	return write_batch(t, keys, n, true, values, assign_row, &a, status, step);
}

struct apply_ctx {
	de_row_fn fn;
	void *ctx;
	float *buf;
	uint64_t step;
};

/* The callback works on a private copy, stored back in one go: readers never see a
 * half-applied step longer than the store itself, and the callback's plain stores do not
 * race with lock-free readers. */
static void apply_row(struct de_table *t, void *ctx, size_t i, float *row, struct de_row_meta *m,
		      bool created)
{
	(void)created;
	struct apply_ctx *a = ctx;
	struct de_row_meta mc = { LD(&m->key), LD(&m->last_step), LD(&m->freq), LD(&m->flags),
				  LD(&m->aux) };
	row_load(a->buf, row, t->row_floats);
	if (a->step != DE_STEP_KEEP)
		mc.last_step = a->step;
	a->fn(a->ctx, i, a->buf, &mc);
	row_store(row, a->buf, t->row_floats);
	ST(&m->last_step, mc.last_step);
	ST(&m->freq, mc.freq);
	ST(&m->flags, mc.flags | ROW_LIVE);
	ST(&m->aux, mc.aux);
}

int de_table_apply(de_table *t, const uint64_t *keys, size_t n, bool create, de_row_fn fn,
		   void *ctx, uint8_t *status, uint64_t step)
{
	if (!t || !fn)
		return -EINVAL;
	struct apply_ctx a = { fn, ctx, malloc((size_t)t->row_floats * 4), step };
	if (!a.buf)
		return -ENOMEM;
	int err = write_batch(t, keys, n, create, NULL, apply_row, &a, status, step);
	free(a.buf);
	return err;
}

/* Hogwild: find the row without a lock, step a private copy, store it back without a
 * lock or a seq bracket. Two writers of one row can lose a step; a lock-free reader can
 * copy a row half old, half new (its seq never moves). Missing keys go through the locked
 * path, which creates them. */
struct hog_one {
	de_row_fn fn;
	void *ctx;
	size_t i;
};

static void hog_one_fn(void *ctx, size_t i, float *row, struct de_row_meta *meta)
{
	(void)i;
	struct hog_one *o = ctx;
	o->fn(o->ctx, o->i, row, meta);
}

int de_table_apply_hogwild(de_table *t, const uint64_t *keys, size_t n, de_row_fn fn, void *ctx,
			   uint8_t *status, uint64_t step)
{
	if (!t || !fn || (n && !keys))
		return -EINVAL;
	if (t->ro)
		return -EROFS;
	float *buf = malloc((size_t)t->row_floats * 4);
	if (!buf)
		return -ENOMEM;
	int err = 0;
	/* the same prefetch pipeline as the locked path (write_batch), so that the two
	 * differ only in the locking */
	uint64_t hr[WPF_R];
	wpf_start(t, keys, n, hr);
	for (size_t i = 0; i < n && !err; i++) {
		wpf_next(t, keys, n, i, hr);
		uint64_t key = keys[i];
		uint32_t r = ROW_NONE;
		if (key && read_one(t, key, hr[i % WPF_R], buf, &r) != R_FOUND)
			r = ROW_NONE;
		float *row = r != ROW_NONE ? row_at(t, r) : NULL;
		struct de_row_meta *m = r != ROW_NONE ? meta_at(t, r) : NULL;
		if (!key || !row || !m) {
			struct hog_one o = { fn, ctx, i };
			err = de_table_apply(t, &keys[i], 1, true, hog_one_fn, &o,
					     status ? &status[i] : NULL, step);
			continue;
		}
		struct de_row_meta mc = { LD(&m->key), LD(&m->last_step), LD(&m->freq),
					  LD(&m->flags), LD(&m->aux) };
		if (mc.key != key) { /* recycled under us: take the locked path */
			struct hog_one o = { fn, ctx, i };
			err = de_table_apply(t, &keys[i], 1, true, hog_one_fn, &o,
					     status ? &status[i] : NULL, step);
			continue;
		}
		row_load(buf, row, t->row_floats);
		if (step != DE_STEP_KEEP)
			mc.last_step = step;
		fn(ctx, i, buf, &mc);
		row_store(row, buf, t->row_floats);
		ST(&m->last_step, mc.last_step);
		ST(&m->aux, mc.aux);
		if (status)
			status[i] = DE_FOUND;
	}
	free(buf);
	return err;
}

int de_table_erase_if(de_table *t, const uint64_t *keys, size_t n, de_erase_fn fn, void *ctx,
		      size_t *erased)
{
	if (!t || (n && !keys))
		return -EINVAL;
	if (t->ro)
		return -EROFS;
	size_t cnt = 0;
	for (size_t i = 0; i < n; i++) {
		if (!keys[i])
			continue;
		uint64_t h = key_hash(t, keys[i]);
		struct seg *s;
		struct bucket *b;
		int j;
		bool created;
		int err = locate(t, keys[i], h, false, NULL, 0, &s, &b, &j, &created);
		if (err)
			return err;
		uint32_t r = ROW_NONE;
		if (b && fn) {
			/* the segment lock keeps the row stable: writers take it too */
			uint32_t rr = LD(&b->row[j]);
			struct de_row_meta *m = meta_at(t, rr);
			float *row = row_at(t, rr);
			struct de_row_meta mc = { LD(&m->key), LD(&m->last_step), LD(&m->freq),
						  LD(&m->flags), LD(&m->aux) };
			if (!fn(ctx, i, row, &mc))
				b = NULL;
		}
		if (b) {
			r = LD(&b->row[j]);
			seq_begin(b);
			ST(&b->key[j], 0ull);
			ST(&b->row[j], 0u);
			seq_end(b);
			ST(&s->nkeys, LD(&s->nkeys) - 1);
		}
		spin_unlock(&s->lock);
		if (r != ROW_NONE) {
			row_free(t, r); /* after the slot is gone: see "Concurrency" above */
			cnt++;
		}
	}
	if (erased)
		*erased = cnt;
	return 0;
}

int de_table_erase(de_table *t, const uint64_t *keys, size_t n, size_t *erased)
{
	return de_table_erase_if(t, keys, n, NULL, NULL, erased);
}

uint64_t de_table_row_limit(de_table *t)
{
	if (!t)
		return 0;
	uint64_t end = LD(&t->hdr->next_row);
	return end > MAX_ROWS ? MAX_ROWS : end;
}

int de_table_peek(de_table *t, uint64_t row, struct de_row_meta *meta, float *values)
{
	if (!t || !meta)
		return -EINVAL;
	if (row >= de_table_row_limit(t))
		return -ERANGE;
	struct de_row_meta *m = meta_at(t, (uint32_t)row);
	float *r = row_at(t, (uint32_t)row);
	if (!m || !r)
		return -ENOENT; /* chunk not published (or not mapped here yet) */
	/* acquire: pairs with row_free's release of the free list's link into key */
	struct de_row_meta mc = { LDA(&m->key), LD(&m->last_step), LD(&m->freq), LD(&m->flags),
				  LD(&m->aux) };
	if (!(mc.flags & ROW_LIVE) || !mc.key)
		return -ENOENT;
	*meta = mc;
	if (values)
		row_load(values, r, t->dim);
	return 0;
}

int de_table_init_row(const de_table *t, uint64_t key, float *out)
{
	if (!t || !out)
		return -EINVAL;
	if (!key)
		memset(out, 0, (size_t)t->dim * 4);
	else
		init_values(&t->cfg, key, out);
	return 0;
}

/* ---- iteration and statistics ----------------------------------------------------- */

int de_table_iterate(de_table *t, uint64_t *cursor, uint64_t *keys, float *values, size_t cap,
		     size_t *n)
{
	return de_table_iterate_range(t, cursor, UINT64_MAX, keys, values, cap, n);
}

int de_table_iterate_range(de_table *t, uint64_t *cursor, uint64_t end, uint64_t *keys,
			   float *values, size_t cap, size_t *n)
{
	if (!t || !cursor || !keys || !n || !cap)
		return -EINVAL;
	uint64_t lim = de_table_row_limit(t);
	if (end > lim)
		end = lim;
	uint64_t r = *cursor;
	size_t got = 0;
	uint8_t *st = values ? malloc(cap) : NULL;
	if (values && !st)
		return -ENOMEM;
	while (!got && r < end) {
		while (r < end && got < cap) {
			struct de_row_meta *m = meta_at(t, (uint32_t)r);
			r++;
			if (!m || !(LD(&m->flags) & ROW_LIVE))
				continue;
			uint64_t key = LD(&m->key);
			if (key)
				keys[got++] = key;
		}
		if (!values || !got)
			continue;
		find_batch(t, keys, got, values, st, false, 0);
		/* drop keys erased since we saw their rows */
		size_t w = 0;
		for (size_t i = 0; i < got; i++) {
			if (st[i] != DE_FOUND)
				continue;
			keys[w] = keys[i];
			if (w != i)
				memmove(values + w * t->dim, values + i * t->dim, (size_t)t->dim * 4);
			w++;
		}
		got = w;
	}
	free(st);
	*cursor = r;
	*n = got;
	return 0;
}

/* retired: 0 live, 1 dropped, 2 superseded (the header's comment) */
#define RETIRED_DROPPED 1u
#define RETIRED_SUPERSEDED 2u

void de_table_retire(de_table *t)
{
	/* release: pairs with the acquire in de_table_retired (another process's mapping);
	 * a superseded table stays superseded (its readers reopen the newer version) */
	uint32_t live = 0;
	if (t && !t->ro)
		__atomic_compare_exchange_n(&t->hdr->retired, &live, RETIRED_DROPPED, false,
					    __ATOMIC_RELEASE, __ATOMIC_RELAXED);
}

bool de_table_retired(const de_table *t)
{
	return t && __atomic_load_n(&t->hdr->retired, __ATOMIC_ACQUIRE) == RETIRED_DROPPED;
}

void de_table_supersede(de_table *t)
{
	if (t && !t->ro) /* release: as de_table_retire */
		__atomic_store_n(&t->hdr->retired, RETIRED_SUPERSEDED, __ATOMIC_RELEASE);
}

bool de_table_superseded(const de_table *t)
{
	return t && __atomic_load_n(&t->hdr->retired, __ATOMIC_ACQUIRE) == RETIRED_SUPERSEDED;
}

void de_table_set_serve_version(de_table *t, uint64_t version)
{
	if (t && !t->ro)
		__atomic_store_n(&t->hdr->serve_version, version, __ATOMIC_RELEASE);
}

uint64_t de_table_serve_version(const de_table *t)
{
	return t ? __atomic_load_n(&t->hdr->serve_version, __ATOMIC_ACQUIRE) : 0;
}

uint64_t de_table_index_refusals(const de_table *t)
{
	return LD(&t->hdr->refusals);
}

int de_table_stats(de_table *t, struct de_table_stats *out)
{
	if (!t || !out)
		return -EINVAL;
	memset(out, 0, sizeof *out);
	struct table_hdr *h = t->hdr;
	uint64_t dw = LDA(&h->dir);
	uint32_t g = (uint32_t)(dw & 63);
	if (g > MAX_DEPTH || !in_map(t, dw & ~63ull, 8ull << g))
		return -EBADMSG;
	const uint64_t *dir = (const uint64_t *)(t->base + (dw & ~63ull));
	for (uint64_t i = 0; i < (1ull << g);) {
		struct seg *s = seg_at(t, LDA(&dir[i]));
		if (!s)
			return -EBADMSG;
		uint32_t d = (uint32_t)(LDA(&s->depth_prefix) & 0xff);
		out->segments++;
		out->keys += LD(&s->nkeys);
		/* a segment of depth d fills 2^(g-d) consecutive entries (if it split while
		 * we walked, step one entry at a time) */
		i += d <= g ? 1ull << (g - d) : 1;
	}
	out->global_depth = g;
	out->index_slots = out->segments * t->cfg.seg_buckets * SLOTS;
	out->load_factor = out->index_slots ? (double)out->keys / (double)out->index_slots : 0;
	/* every directory ever made: 64 bytes at depth 0, then 8 << k for k = 1..g */
	out->index_bytes = out->segments * t->seg_bytes + 64 + (g ? (16ull << g) - 16 : 0);
	out->index_refusals = LD(&h->refusals);
	out->rows_allocated = LD(&h->next_row);
	out->rows_free = LD(&h->nfree);
	out->chunks = LDA(&h->nchunks);
	out->row_bytes = out->chunks * t->chunk_bytes;
	out->arena_bytes = de_arena_mapped_bytes(t->arena);
	out->splits = LD(&h->splits);
	out->dir_doublings = LD(&h->doublings);
	out->arena_segments = de_arena_nsegments(t->arena);
	return 0;
}
