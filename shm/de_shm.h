/*
 * de_shm.h — the public interface of libdeshm: what lives in shared memory.
 *
 * Four parts, two static libraries (shm/meson.build): libdeshm_core (arena.c, table.c,
 * channel.c: what a client needs to map, probe and talk, with no hwloc or libnuma) and
 * libdeshm_place (numa.c: the NUMA choice and binding, and de_arena_create, which uses
 * them; the daemon's side). deshm_dep is both; libdynemb links the core alone.
 *   - arena:  memfd-backed memory that grows by adding segments and never moves;
 *             everything inside refers to other things by offset, never by pointer.
 *   - numa:   choosing a NUMA node from the hwloc topology and binding memory to it.
 *   - table:  a dynamic embedding table (uint64 key -> dim floats + optimizer slots +
 *             metadata) inside one arena, readable lock-free by other threads and by
 *             other processes through a read-only mapping of the same memfds.
 *   - channel: the data plane between a client and the daemon: a submission ring, a
 *             completion ring and a data area in one memfd, with futex wakeups.
 *
 * Conventions: every function that can fail returns 0 or a negative errno; out-values
 * go through pointers marked "out". Handles are opaque. Nothing here keeps global
 * mutable state: several arenas and tables live side by side in one process.
 *
 * Caveats (what this API does not promise):
 *   - Arena memory is never returned to the system while the arena lives; erased rows
 *     are reused by later inserts, index segments and old directories are not freed.
 *   - Writers (insert, assign, erase, apply) must all live in the process that created
 *     the arena; other processes may only read (de_table_attach_ro).
 *   - A read-only reader that cannot get a stable copy after a bounded number of retries
 *     reports DE_RETRY for that key instead of spinning; the caller asks the owner.
 *   - Iteration is weakly consistent: a key present for the whole iteration is returned
 *     exactly once; a key inserted or erased during it may or may not be, and one erased
 *     and re-inserted during it may come back twice (iteration goes by row id).
 *   - Key 0 is "no feature": every call reports it DE_FOUND with zeros and never stores it.
 *   - Within one batch, a key's first occurrence is DE_CREATED when it was missing; later
 *     duplicates of it in the same batch are DE_FOUND.
 *   - Row ids are 32-bit: at most 2^32 - 2 rows per table.
 *   - de_table_open and de_table_close are not thread-safe against another open of the
 *     same arena; every other table call is, for any number of threads.
 *   - A freed row's id is reused; arena memory is not. Dropping keys does not shrink the
 *     arena (eviction, src/learn/evict.c, bounds growth instead).
 */
#ifndef DE_SHM_H
#define DE_SHM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hwloc.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------- */
/* Mixing                                                                     */
/* ------------------------------------------------------------------------- */

/*
 * The one copy of each 64-bit mixer the libraries and the benchmarks use: splitmix64
 * (Steele, Lea, Flood 2014) for the table's initializer, the samplers' hashing and
 * generators; MurmurHash3's finalizer for hash table slots. Outputs are part of what
 * tests pin with fixed seeds, so none of these functions may change.
 */
#define DE_SPLITMIX64_GAMMA 0x9e3779b97f4a7c15ull

/* The finalizer: a bijection on 64-bit values. */
static inline uint64_t de_mix64(uint64_t x)
{
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* The generator's output for state x (the draw after x), as a stateless hash of x. */
static inline uint64_t de_splitmix64(uint64_t x) { return de_mix64(x + DE_SPLITMIX64_GAMMA); }

/* One step of the generator: advance *s and return its next output. */
static inline uint64_t de_splitmix64_next(uint64_t *s)
{
	*s += DE_SPLITMIX64_GAMMA;
	return de_mix64(*s);
}

/* MurmurHash3's 64-bit finalizer, the slot hash of src/learn's in-memory hash tables. */
static inline uint64_t de_fmix64(uint64_t x)
{
	x = (x ^ (x >> 33)) * 0xff51afd7ed558ccdull;
	x = (x ^ (x >> 33)) * 0xc4ceb9fe1a85ec53ull;
	return x ^ (x >> 33);
}

/* ------------------------------------------------------------------------- */
/* Arena                                                                      */
/* ------------------------------------------------------------------------- */

typedef struct de_arena de_arena;

/* Which pages back a segment. AUTO tries HUGETLB, then THP, then SMALL. */
enum de_pages {
	DE_PAGES_AUTO = 0,
	DE_PAGES_HUGETLB, /* memfd MFD_HUGETLB, 2 MiB pages from the reserved pool */
	DE_PAGES_THP,     /* shmem memfd + MADV_HUGEPAGE (needs shmem_enabled=advise|always) */
	DE_PAGES_SMALL,   /* shmem memfd, 4 KiB pages */
};

#define DE_NUMA_AUTO (-1) /* choose from the hwloc topology near the calling thread */
#define DE_NUMA_NONE (-2) /* no binding */

#define DE_ARENA_MAX_SEGMENTS 512u
#define DE_ARENA_ALIGN (2u << 20) /* segments are multiples of 2 MiB */

struct de_arena_config {
	uint64_t reserve_bytes; /* virtual space for all segments; 0 = 64 GiB */
	uint64_t segment_bytes; /* size of the first segment; 0 = 32 MiB; rounded up to 2 MiB */
	uint64_t max_segment_bytes; /* cap on one grown segment; 0 = 1 GiB */
	enum de_pages pages;    /* AUTO, or force one kind (forced HUGETLB fails with -ENOMEM
	                           when the pool is short; forced THP falls back to SMALL when
	                           the kernel disables shmem THP, and says so in the note) */
	int numa_node;          /* DE_NUMA_AUTO, DE_NUMA_NONE, or an OS node index */
	const char *name;       /* memfd name, for /proc/PID/fd and smaps; may be NULL */
};

struct de_segment_info {
	uint64_t offset;      /* first arena offset of the segment */
	uint64_t bytes;       /* its length */
	enum de_pages pages;  /* what it actually got */
	int numa_node;        /* node it is bound to, or DE_NUMA_NONE */
};

/* Create an arena with one segment, placed as cfg->numa_node says (libdeshm_place:
 * shm/numa.c, which links hwloc and libnuma). out: the arena. Segments are sealed
 * against every write but the owner's own mapping (F_SEAL_FUTURE_WRITE, mode 0400):
 * -ENOTSUP on a kernel that refuses that seal. */
int de_arena_create(const struct de_arena_config *cfg, de_arena **out);

/* Binds [addr, addr+len) to NUMA node `node` before its first touch (de_numa_bind). */
typedef int (*de_bind_fn)(void *addr, size_t len, int node);

/* de_arena_create without the NUMA choice (libdeshm_core): node is an OS node index or
 * DE_NUMA_NONE (cfg->numa_node is checked but not used); when node >= 0, bind (may be
 * NULL: no binding) is called on every new segment. */
int de_arena_create_placed(const struct de_arena_config *cfg, int node, de_bind_fn bind,
			   de_arena **out);

/*
 * Map an existing arena read-only from its segment fds (segment 0 first; fds may be
 * O_RDONLY). The header is untrusted: a foreign, truncated or inconsistent arena gives
 * -EBADMSG, an unknown layout version -EPROTO. The arena dups the fds it keeps. Fewer
 * fds than the owner has segments is fine (the owner may grow meanwhile): the first nfds
 * are mapped and de_arena_refresh maps the rest.
 */
int de_arena_attach_ro(const int *fds, unsigned nfds, de_arena **out);

/* Source of fds for segments a read-only arena has not mapped yet: returns a new fd
 * (the arena takes ownership) or a negative errno. */
typedef int (*de_fd_source)(void *ctx, unsigned segment);

/* Read-only arenas: map the segments the owner added since the last call.
 * Returns 0, or the error of src / -EBADMSG for an inconsistent header. */
int de_arena_refresh(de_arena *a, de_fd_source src, void *ctx);

/* Owner arenas: called (under the arena's allocation lock) after a segment is added
 * and before any of its memory is handed out. The segment is already in the shared
 * header, so a reader's fd source may be asked for it before the hook has delivered its
 * fd: fd sources should wait (boundedly) for it. */
typedef void (*de_grow_hook)(void *ctx, de_arena *a, unsigned segment);
void de_arena_set_grow_hook(de_arena *a, de_grow_hook fn, void *ctx);

/* Owner arenas: asked (under the arena's allocation lock) before a segment after the
 * first is mapped, with its size: 0 lets it be made, a negative errno (the daemon's
 * quotas: -ENOSPC, -EDQUOT) is what de_arena_alloc returns instead. When making the
 * segment fails after a 0, the hook is called again with give_back set and the same
 * bytes. The first segment is the creator's to account (de_arena_mapped_bytes). */
typedef int (*de_charge_hook)(void *ctx, uint64_t bytes, bool give_back);
void de_arena_set_charge_hook(de_arena *a, de_charge_hook fn, void *ctx);

/* Unmap and close. NULL is fine. */
void de_arena_destroy(de_arena *a);

/* Allocate bytes aligned to align (a power of two <= 2 MiB). Thread-safe.
 * -EROFS on a read-only arena; -ENOSPC when the reservation is full (reserve_bytes is
 * the arena's size limit: a caller sizes it from its budget); -ENOMEM when the system
 * refuses memory; the charge hook's error when it refuses a new segment. */
int de_arena_alloc(de_arena *a, uint64_t bytes, uint64_t align, uint64_t *off /* out */);

#ifdef DE_FAULT_INJECTION
/* Test builds only (meson -Dfault_injection=true): make the nth de_arena_alloc from now
 * on fail once with -ENOMEM (0 disarms). Returns the countdown left from the previous
 * arming: 0 when that fault fired (or none was armed). */
long de_arena_fail_alloc(de_arena *a, long nth);
/* Test builds only: the next segment's seals fail as on a kernel without
 * F_SEAL_FUTURE_WRITE (the segment is not added; the allocation gets -ENOTSUP). */
void de_arena_fail_seal(de_arena *a);
#endif

/* base + off. No check: use de_arena_valid on offsets read from shared memory. */
static inline void *de_arena_at_base(void *base, uint64_t off) { return (char *)base + off; }
void *de_arena_at(const de_arena *a, uint64_t off);
bool de_arena_valid(const de_arena *a, uint64_t off, uint64_t len);

bool de_arena_readonly(const de_arena *a);
uint64_t de_arena_reserve_bytes(const de_arena *a); /* virtual space reserved */
unsigned de_arena_nsegments(const de_arena *a); /* segments mapped here */
uint64_t de_arena_mapped_bytes(const de_arena *a);
uint64_t de_arena_used_bytes(const de_arena *a);
int de_arena_segment(const de_arena *a, unsigned i, struct de_segment_info *out);

/* A new fd for segment i (O_RDONLY when readonly, through /proc/self/fd), to pass to
 * another process. Caller closes it. Even the owner's non-readonly fd cannot write
 * (pwrite, a new writable shared mapping): the segments are sealed. */
int de_arena_segment_fd(const de_arena *a, unsigned i, bool readonly);

/* Page kind of the first segment, and a human-readable line on how it came to be (the
 * fallbacks taken); later segments report their kind through de_arena_segment. */
enum de_pages de_arena_pages(const de_arena *a);
const char *de_arena_pages_note(const de_arena *a);
const char *de_pages_name(enum de_pages p);

/* One offset the arena's user can store in the header (the table header lives there). */
int de_arena_set_root(de_arena *a, uint64_t off);
uint64_t de_arena_root(const de_arena *a);

/* ------------------------------------------------------------------------- */
/* NUMA                                                                       */
/* ------------------------------------------------------------------------- */

/*
 * Choose the NUMA node for memory used by the cpus in `cpus`: the node whose locality
 * overlaps those cpus most; ties go to the node with more local memory, then the lower
 * OS index. A NULL or empty cpuset means "the whole machine". -ENOENT if the topology
 * has no NUMA node. out: OS index of the node.
 */
int de_numa_choose(hwloc_topology_t topo, hwloc_const_cpuset_t cpus, int *node /* out */);

/* The same on this machine's topology for the calling thread's binding. */
int de_numa_choose_local(int *node /* out */);

/* Bind [addr, addr+len) to node with libnuma before first touch. -ENOSYS where the
 * kernel has no NUMA support, -EINVAL for a node that does not exist. */
int de_numa_bind(void *addr, size_t len, int node);

/* ------------------------------------------------------------------------- */
/* Table                                                                      */
/* ------------------------------------------------------------------------- */

typedef struct de_table de_table;

#define DE_MAX_DIM 4096u
#define DE_MAX_SLOTS 8u

enum de_init {
	DE_INIT_ZEROS = 0,
	DE_INIT_CONSTANT,     /* every value = a */
	DE_INIT_UNIFORM,      /* uniform in [a, b) */
	DE_INIT_TRUNC_NORMAL, /* normal(mean a, stddev b), redrawn outside a +- 2b */
};

struct de_table_config {
	uint32_t dim;         /* values per row, 1..DE_MAX_DIM */
	uint32_t nslots;      /* optimizer slots per row, each dim floats, 0..DE_MAX_SLOTS */
	enum de_init init;
	float init_a, init_b; /* see enum de_init */
	float slot_init;      /* initial value of every slot element */
	uint64_t seed;        /* seeds key hashing and the initializer */
	uint32_t seg_buckets; /* index buckets per segment: power of two in 64..65536; 0 = 1024 */
};

/* Per-row metadata (32 bytes in shared memory). freq and last_step are maintained by
 * find_or_insert, assign and apply; flags bit 0 means live (kept set by apply); aux
 * belongs to the caller of apply (the optimizers keep a per-key step count there). */
struct de_row_meta {
	uint64_t key;
	uint64_t last_step;
	uint32_t freq;
	uint32_t flags;
	uint64_t aux;
};

/* Per-key status of batch calls. */
enum de_status {
	DE_MISSING = 0, /* find: no such key; the output row is zeros */
	DE_FOUND = 1,   /* the row was there (key 0 always reads as found zeros) */
	DE_CREATED = 2, /* find_or_insert / assign / apply: the row was created by this call */
	DE_RETRY = 3,   /* read-only reader: no stable copy after the retry limit; ask the owner */
};

struct de_table_stats {
	uint64_t keys;           /* live keys */
	uint64_t rows_allocated; /* row ids handed out so far (live + free) */
	uint64_t rows_free;      /* erased rows waiting for reuse */
	uint64_t row_bytes;      /* bytes of row chunks (values, slots, metadata) */
	uint64_t index_bytes;    /* bytes of index segments and directories, the old
	                            directories a doubling left in place included */
	uint64_t arena_bytes;    /* bytes of arena mapped */
	uint64_t index_slots;    /* key slots in the index */
	double load_factor;      /* keys / index_slots */
	uint64_t segments;       /* index segments */
	uint32_t global_depth;   /* directory has 2^global_depth entries */
	uint64_t splits;         /* growth events: segment splits */
	uint64_t dir_doublings;  /* growth events: directory doublings */
	uint64_t arena_segments; /* growth events: arena segments (1 at start) */
	uint64_t chunks;         /* row chunks allocated */
	uint64_t index_refusals; /* inserts refused with -ENOSPC because the index would not
	                            grow for them: keys whose seeded hashes collide (a hash
	                            flood), shm/table.c "Flooding" */
};

/* Check a config and normalize it (seg_buckets 0 becomes 1024; initializer parameters
 * the initializer does not use become 0): 0, or -EINVAL with the reason written to why
 * (may be NULL). out may be in. de_table_open runs the same check. */
int de_table_config_check(const struct de_table_config *in, struct de_table_config *out,
			  char *why, size_t why_cap);

/*
 * Create the table in an empty arena, or attach to the table already in it.
 * Errors: -EINVAL for a bad config (dim 0 or > DE_MAX_DIM, too many slots, bad
 * initializer parameters, bad seg_buckets); -EEXIST when the arena holds a table with a
 * different config; -EBADMSG for a foreign or corrupt table; -EROFS on a read-only arena.
 */
int de_table_open(de_arena *a, const struct de_table_config *cfg, de_table **out);

/* Attach to the table of a read-only arena: find, iterate and stats work; writes
 * return -EROFS. The header is validated; -EBADMSG when it is foreign or corrupt. */
int de_table_attach_ro(de_arena *a, de_table **out);

/* Close the handle; the table stays in the arena. NULL is fine. */
void de_table_close(de_table *t);

int de_table_config_get(const de_table *t, struct de_table_config *out);
uint32_t de_table_dim(const de_table *t);
uint32_t de_table_row_floats(const de_table *t); /* dim * (1 + nslots) */
/* Arena bytes one row takes in its row chunk: its values and slots padded to the row
 * stride (row_floats * 4 rounded up to 64 bytes, to 16 below 64), plus its 32 bytes of
 * metadata. Rows come in chunks, so this is the cost of a live row, not of an insert. */
uint32_t de_table_bytes_per_row(const de_table *t);

/*
 * Batch reads. out: n * dim floats (values only, not slots). status: n entries, may be
 * NULL. Missing keys read as zeros. Read-only attaches take a missing segment mapping
 * as DE_RETRY unless a fd source was set with de_table_set_fd_source.
 */
int de_table_find(de_table *t, const uint64_t *keys, size_t n, float *out, uint8_t *status);

/* Like find, but missing keys are created with the table's initializer (slots =
 * slot_init); freq is incremented and last_step set to step for every key.
 * Errors of every inserting call (find_or_insert, assign, apply with create; the batch
 * stops at the key that failed): -ENOSPC when the table is out of row ids or its index
 * refuses to grow for the key (index_refusals counts those: keys whose seeded hashes
 * collide, which no split separates; other keys still insert), -ENOMEM when the arena
 * is full, -EBADMSG when the table's shared memory is corrupt (a row id, offset, depth
 * or free-list entry out of range), -EDEADLK when a lock in it was held for 2 s. */
int de_table_find_or_insert(de_table *t, const uint64_t *keys, size_t n, float *out,
			    uint8_t *status, uint64_t step);

/* Set the values (dim floats per key) of each key, creating missing keys (their slots
 * start at slot_init). Later duplicates in the batch win. status may be NULL. */
int de_table_assign(de_table *t, const uint64_t *keys, size_t n, const float *values,
		    uint8_t *status, uint64_t step);

/* Erase keys. erased (may be NULL): how many were present. */
int de_table_erase(de_table *t, const uint64_t *keys, size_t n, size_t *erased /* out */);

/*
 * Call fn on each key's row under that row's write protection: row points at
 * dim * (1 + nslots) floats (values, then slots), meta at its metadata. With create,
 * missing keys are created first (initializer); without, fn is not called for them and
 * their status is DE_MISSING. fn must not call back into the table. Key 0 is skipped.
 */
/* step DE_STEP_KEEP: apply leaves last_step as it is (read-only visits such as export) */
#define DE_STEP_KEEP UINT64_MAX
typedef void (*de_row_fn)(void *ctx, size_t i, float *row, struct de_row_meta *meta);
int de_table_apply(de_table *t, const uint64_t *keys, size_t n, bool create, de_row_fn fn,
		   void *ctx, uint8_t *status, uint64_t step);

/*
 * de_table_apply without per-row exclusion ("Hogwild", Recht et al. 2011): the row is
 * found without a lock, fn steps a private copy, and the copy is stored back with no lock
 * and no seqlock bracket. Concurrent writers of one row may lose each other's steps, and
 * a lock-free reader may copy a row that is half before, half after a step. Missing keys
 * are created through the locked path. Measured against de_table_apply by
 * `dynemb-bench learn` (BENCHMARKS.md); the daemon uses de_table_apply.
 */
int de_table_apply_hogwild(de_table *t, const uint64_t *keys, size_t n, de_row_fn fn,
			   void *ctx, uint8_t *status, uint64_t step);

/*
 * Iterate live keys. Start with *cursor = 0; each call fills up to cap keys (and their
 * values when values != NULL, cap * dim floats) and advances the cursor; *n = 0 means
 * done.
 */
int de_table_iterate(de_table *t, uint64_t *cursor, uint64_t *keys, float *values,
		     size_t cap, size_t *n /* out */);

/* The same over row ids [*cursor, end) only: threads can split a table by row id
 * (0..de_table_row_limit) and each iterate its own range. */
int de_table_iterate_range(de_table *t, uint64_t *cursor, uint64_t end, uint64_t *keys,
			   float *values, size_t cap, size_t *n /* out */);

/* Erase the keys whose rows fn accepts: fn sees each present key's full row (dim *
 * (1 + nslots) floats) and a copy of its metadata under the row's write protection, so
 * the row cannot change between the decision and the erase (an eviction can copy it to a
 * disk tier and be sure it is what was dropped). fn must not call back into the table.
 * Missing keys and key 0 are skipped. erased (may be NULL): how many were erased. */
typedef bool (*de_erase_fn)(void *ctx, size_t i, const float *row,
			    const struct de_row_meta *meta);
int de_table_erase_if(de_table *t, const uint64_t *keys, size_t n, de_erase_fn fn, void *ctx,
		      size_t *erased /* out */);

/*
 * Row-id access, for sampling (eviction candidates, uniform negatives): row ids of live
 * keys are below de_table_row_limit (free rows are reused before it grows). de_table_peek
 * copies row id `row`'s metadata (and its dim values when values != NULL) WITHOUT the
 * seqlock: the copy may be torn by a concurrent writer, so use it only to choose
 * candidates and re-read what matters by key. 0 when the row is live; -ENOENT for a free,
 * never-used or not-yet-mapped row; -ERANGE at or beyond the limit.
 */
uint64_t de_table_row_limit(de_table *t);
int de_table_peek(de_table *t, uint64_t row, struct de_row_meta *meta /* out */,
		  float *values /* out, may be NULL */);

/* The dim values a create of key would store (the initializer is deterministic in the
 * table seed and the key), without storing anything; key 0 gives zeros. For admission:
 * a key that has not earned a row yet reads as its future initial value. */
int de_table_init_row(const de_table *t, uint64_t key, float *out /* out: dim floats */);

int de_table_stats(de_table *t, struct de_table_stats *out);
/* Just index_refusals (one load: cheap enough to read around every write). */
uint64_t de_table_index_refusals(const de_table *t);
/* The owner (a writable attach) marks the table dropped, before it destroys it; any
 * mapping that outlives it (a reader's, read-only) then sees de_table_retired true. A
 * read-only reader checks it after a probe: what it read may be the last values. */
void de_table_retire(de_table *t);
bool de_table_retired(const de_table *t);
/* Serving tables (read-only versions of a name, src/server/control_serve.c): the owner
 * writes the version number before any reader maps the table, and marks a version
 * superseded once a newer one serves its name (never dropped after that: its readers
 * move on to the newer one, they were not cut off). Readers load both with acquire. */
void de_table_set_serve_version(de_table *t, uint64_t version);
uint64_t de_table_serve_version(const de_table *t); /* 0: not a serving table */
void de_table_supersede(de_table *t);
bool de_table_superseded(const de_table *t);

/* Read-only attaches: where to get fds for arena segments added after attaching. */
void de_table_set_fd_source(de_table *t, de_fd_source src, void *ctx);

/* Fingerprint of a string key: seeded xxh3-64; the empty string is key 0 and a
 * non-empty string that would hash to 0 maps to 1. Fault-injection builds only:
 * DE_FAULT_KEY_BITS=b in the environment keeps b low bits (collisions for tests). */
uint64_t de_key_from_string(uint64_t seed, const void *s, size_t len);


/* ------------------------------------------------------------------------- */
/* Channel: submission ring, completion ring and data area in one memfd        */
/* ------------------------------------------------------------------------- */

/*
 * One channel connects one client thread to the daemon, io_uring-style. The daemon
 * creates it (de_channel_create) and passes its fd; the client maps it read-write
 * (de_channel_attach). The client produces submissions (64-byte descriptors that name
 * ranges of the channel's own data area by offset) and consumes completions; the daemon
 * consumes submissions and produces completions. Neither side trusts the other's indices:
 * the consumer of a ring keeps its own head, reads the producer's tail once per pop and
 * rejects a tail that is behind its head or more than a ring ahead (the channel is then
 * "broken": -EBADMSG from every later call on that side). Descriptors are copied out of
 * shared memory before they are looked at.
 *
 * Sleeping: a daemon worker that finds no work sets NEED_WAKEUP in the channels it serves
 * (de_channel_sleep_prepare), re-checks, and sleeps in de_channels_wait (futex_waitv on
 * one word per channel). A client's submit bumps that word and wakes it only when the
 * flag is set, so a busy daemon costs clients no system call. Completions work the same
 * way in the other direction (de_channel_reap with wait).
 */
typedef struct de_channel de_channel;

#define DE_CHANNEL_MAX_ENTRIES 4096u
#define DE_CHANNEL_MAX_DATA (1ull << 32)
#define DE_CHANNELS_WAIT_MAX 128u /* futex_waitv limit */

struct de_sqe {           /* 64 bytes, little-endian, in the submission ring */
	uint8_t op;           /* operation (the daemon's protocol defines them) */
	uint8_t flags;
	uint16_t table;       /* table id within the channel */
	uint32_t count;       /* keys in this request */
	uint64_t user_data;   /* returned unchanged in the completion */
	uint64_t keys_off, keys_len;  /* data-area ranges: offsets into this channel's area */
	uint64_t vals_off, vals_len;
	uint64_t status_off;
	uint64_t arg;         /* op-specific (e.g. the training step) */
};

struct de_cqe {           /* 32 bytes, in the completion ring */
	uint64_t user_data;
	int32_t res;          /* 0 or a negative errno */
	uint32_t count;       /* op-specific (e.g. keys found) */
	uint64_t aux0, aux1;  /* op-specific */
};

struct de_channel_config {
	uint32_t sq_entries;  /* power of two, 2..DE_CHANNEL_MAX_ENTRIES; 0 = 256 */
	uint32_t cq_entries;  /* power of two, sq_entries..2 * DE_CHANNEL_MAX_ENTRIES; 0 = 2 * sq */
	uint64_t data_bytes;  /* data area, multiple of 4096, <= DE_CHANNEL_MAX_DATA; 0 = 64 MiB */
};

/*
 * Roles: the handle that created the channel is the daemon side (pop, post, sleep_*,
 * de_channels_wait); a handle made by de_channel_attach is the client side (submit,
 * reap). A call from the wrong side returns -EINVAL.
 *
 * Caveat: a client can bump its own futex word at will, which makes de_channels_wait
 * return at once for the worker serving it: that costs the worker CPU (it re-checks and
 * sleeps again), never correctness. Daemons should rate-limit such a channel.
 */

/* Daemon side: create a channel in a new memfd (4 KiB pages; sealed against shrinking). */
int de_channel_create(const struct de_channel_config *cfg, de_channel **out);
/* Client side: map a channel from the fd the daemon passed (the fd is dup'ed). The header
 * is validated: -EBADMSG for a foreign or inconsistent one, -EPROTO for another version. */
int de_channel_attach(int fd, de_channel **out);
void de_channel_destroy(de_channel *c); /* NULL is fine */
int de_channel_fd(const de_channel *c);  /* owned by the channel; dup it to pass it on */

/* The data area: base pointer and size; a range check for offsets from a descriptor. */
void *de_channel_data(const de_channel *c, uint64_t *bytes /* out, may be NULL */);
bool de_channel_range_ok(const de_channel *c, uint64_t off, uint64_t len);

/* Client: queue one submission and wake the daemon if it sleeps. -EAGAIN: ring full.
 * Not thread-safe: one thread per channel, or the caller's lock. */
int de_channel_submit(de_channel *c, const struct de_sqe *e);
/*
 * Client: take one completion. Without wait, -EAGAIN when there is none. With wait,
 * busy-polls for spin_ns, then sleeps on the channel's futex; timeout_ms (counted from
 * the call, the spin included) < 0 waits forever, else -ETIMEDOUT after it.
 */
int de_channel_reap(de_channel *c, struct de_cqe *out, bool wait, uint64_t spin_ns, int timeout_ms);

/* Daemon: copy the next submission out. -EAGAIN: none; -EBADMSG: the client broke its
 * ring (tail out of range), and the channel stays broken. */
int de_channel_pop(de_channel *c, struct de_sqe *out);
/* Daemon: post one completion and wake the client if it sleeps. -EAGAIN: the client does
 * not reap (ring full); -EBADMSG: the client broke its head index. */
int de_channel_post(de_channel *c, const struct de_cqe *e);
/* Daemon: before sleeping, set NEED_WAKEUP. Returns 1 if a submission is already there
 * (do not sleep), 0 if it may sleep, -EBADMSG if broken. Either way NEED_WAKEUP is now
 * set: call de_channel_sleep_done when the worker runs again. */
int de_channel_sleep_prepare(de_channel *c);
/* Daemon, after de_channels_wait: whether this channel's futex word moved since
 * de_channel_sleep_prepare (a client's submit, or a client bumping it for nothing: the
 * daemon counts the wakes that bring no work and backs such a channel off). */
bool de_channel_woken(const de_channel *c);
/* Daemon: clear NEED_WAKEUP after waking. */
void de_channel_sleep_done(de_channel *c);
/* Daemon: sleep until one of chs (after de_channel_sleep_prepare on each) gets a
 * submission, or timeout_ms (< 0: forever). Returns 0 when woken (possibly spuriously:
 * re-check the rings), -ETIMEDOUT, or -EINVAL for n > 128. With n == 0 it sleeps for
 * timeout_ms (not at all when negative) and returns -ETIMEDOUT. */
int de_channels_wait(de_channel *const *chs, unsigned n, int timeout_ms);
bool de_channel_broken(const de_channel *c);

#ifdef __cplusplus
}
#endif
#endif /* DE_SHM_H */
