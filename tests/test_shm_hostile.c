/*
 * test_shm_hostile.c — what a hostile client can do with the shared memory of a table.
 *
 *   client_fds:  the read-only segment fds a client gets (de_arena_segment_fd(.., true),
 *                what the daemon passes) give no write path: reopening /proc/self/fd/N
 *                O_RDWR, mmap(PROT_WRITE, MAP_SHARED), mprotect, pwrite, ftruncate and
 *                fchmod all fail, for a client of another uid (a forked child that drops
 *                to nobody when the test runs as root) and for the owner's uid or root
 *                (which may fchmod and reopen, and still cannot write: the seal); lookups
 *                through those fds keep working.
 *   scribbled:   the owner meets values it did not write in its own table's shared
 *                memory (the test scribbles them through the owner's writable mapping:
 *                defence in depth, in case anything else ever could): a free-list head
 *                or link out of range or naming a live row, a bucket row id out of range
 *                or naming another key's row, a segment whose depth or prefix lies, a
 *                next_row far ahead, a lock word nobody releases. Each gives an error
 *                (-EBADMSG, -EDEADLK), never a crash or a hang; untouched keys still read.
 *   flood:       keys built to share hash bits (xxh3 of an 8-byte key is inverted below:
 *                the seed is public) cost -ENOSPC for themselves, bounded index growth,
 *                and nothing for other keys.
 * The private layout poked here is the one documented at the top of shm/table.c.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "hostile_keys.h"

#include "de_shm.h"

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif

/* shm/table.c's layout: table header fields, segment header, bucket */
#define H_DIR 128
#define H_NEXT_ROW 192
#define H_FREE_LOCK 256
#define H_ROW_STRIDE 56
#define H_CHUNK_SHIFT 60
#define H_CHUNK_TAB 72
#define H_FREE_HEAD 260
#define H_NFREE 264
#define S_DEPTH_PREFIX 0
#define S_LOCK 8
#define B_ROW 40

static de_arena *mk_arena(uint64_t reserve)
{
	struct de_arena_config ac = { .reserve_bytes = reserve, .segment_bytes = 2 << 20,
				      .max_segment_bytes = 4 << 20, .pages = DE_PAGES_SMALL,
				      .numa_node = DE_NUMA_NONE };
	de_arena *a = NULL;
	cr_assert_eq(de_arena_create(&ac, &a), 0);
	return a;
}

static const struct de_table_config cfg8 = {
	.dim = 8, .nslots = 1, .init = DE_INIT_UNIFORM, .init_a = -1, .init_b = 1,
	.seed = 0x5eed5eed12345678ull, .seg_buckets = 64,
};

/* The values the test gives key k (never what the initializer would). */
static void vals_of(uint64_t k, float *v)
{
	for (int i = 0; i < 8; i++)
		v[i] = (float)(k % 100003) + (float)i * 0.25f;
}

static void put_keys(de_table *t, const uint64_t *keys, size_t n)
{
	float *v = malloc(n * 8 * sizeof *v);
	cr_assert_not_null(v);
	for (size_t i = 0; i < n; i++)
		vals_of(keys[i], v + i * 8);
	cr_assert_eq(de_table_assign(t, keys, n, v, NULL, 1), 0);
	free(v);
}

/* Every key reads back with its values (status FOUND). */
static void expect_keys(de_table *t, const uint64_t *keys, size_t n, const char *who)
{
	float *v = malloc(n * 8 * sizeof *v), w[8];
	uint8_t *st = malloc(n);
	cr_assert(v && st);
	cr_assert_eq(de_table_find(t, keys, n, v, st), 0);
	size_t bad = 0;
	for (size_t i = 0; i < n; i++) {
		vals_of(keys[i], w);
		if (st[i] != DE_FOUND || memcmp(w, v + i * 8, sizeof w))
			bad++;
	}
	cr_expect_eq(bad, 0, "%s: %zu of %zu keys do not read back (first status %u)", who, bad,
		     n, st[0]);
	free(v);
	free(st);
}

static uint64_t *uniform_keys(size_t n, uint64_t seed)
{
	uint64_t *k = malloc(n * sizeof *k);
	cr_assert_not_null(k);
	for (size_t i = 0; i < n; i++)
		while (!(k[i] = de_splitmix64_next(&seed)))
			;
	return k;
}

static char *hdr_of(de_arena *a) { return de_arena_at(a, de_arena_root(a)); }

static uint64_t u64_at(de_arena *a, uint64_t off) { return *(uint64_t *)de_arena_at(a, off); }

/* Offset of the segment directory entry 0 names. */
static uint64_t seg0_off(de_arena *a)
{
	uint64_t dw = *(uint64_t *)(hdr_of(a) + H_DIR);
	return u64_at(a, dw & ~63ull);
}

/* ---- the fds a client gets ------------------------------------------------------- */

/* Bits of what a write attempt achieved on fd (0: nothing could write). */
enum {
	W_REOPEN_RW = 1, W_MMAP_RW = 2, W_PWRITE = 4, W_FTRUNCATE = 8, W_FCHMOD = 16,
	W_MPROTECT = 32, W_REOPEN_WRITES = 64, W_NO_SEAL = 128, W_PRIVATE_LEAKS = 256,
};

/* Try every way to write through fd (a segment of `bytes`). reopen_may_open: an fd
 * reopened O_RDWR is only a failure when it then writes (the owner's uid after fchmod,
 * or root, can reopen; the seal must stop the writes). */
static unsigned try_writes(int fd, uint64_t bytes, bool reopen_may_open)
{
	unsigned got = 0;
	char path[64];
	int seals = fcntl(fd, F_GET_SEALS);
	if (seals < 0 || !(seals & F_SEAL_FUTURE_WRITE))
		got |= W_NO_SEAL;
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p != MAP_FAILED) {
		got |= W_MMAP_RW;
		munmap(p, bytes);
	}
	p = mmap(NULL, bytes, PROT_READ, MAP_SHARED, fd, 0);
	if (p != MAP_FAILED) {
		if (mprotect(p, 4096, PROT_READ | PROT_WRITE) == 0)
			got |= W_MPROTECT;
		munmap(p, bytes);
	}
	/* a private mapping may be written: the copy must stay private */
	p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	if (p != MAP_FAILED) {
		unsigned char before;
		if (pread(fd, &before, 1, 100) == 1) {
			((unsigned char *)p)[100] = (unsigned char)~before;
			unsigned char after;
			if (pread(fd, &after, 1, 100) != 1 || after != before)
				got |= W_PRIVATE_LEAKS;
		}
		munmap(p, 4096);
	}
	if (pwrite(fd, "x", 1, 100) == 1)
		got |= W_PWRITE;
	if (ftruncate(fd, (off_t)bytes * 2) == 0 || ftruncate(fd, 0) == 0)
		got |= W_FTRUNCATE;
	if (fchmod(fd, 0666) == 0)
		got |= W_FCHMOD;
	snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	int rw = open(path, O_RDWR | O_CLOEXEC);
	if (rw >= 0) {
		if (!reopen_may_open)
			got |= W_REOPEN_RW;
		void *q = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, rw, 0);
		if (q != MAP_FAILED) {
			got |= W_REOPEN_WRITES;
			munmap(q, bytes);
		}
		if (pwrite(rw, "x", 1, 100) == 1)
			got |= W_REOPEN_WRITES;
		if (ftruncate(rw, (off_t)bytes * 2) == 0 || ftruncate(rw, 0) == 0)
			got |= W_REOPEN_WRITES;
		close(rw);
	}
	return got;
}

/* In a child of another uid (nobody): what try_writes achieved, or ~0u when the child
 * could not get there, or 1u << 30 when /proc/self/fd does not work for it at all. */
static unsigned try_writes_as_nobody(int fd, uint64_t bytes)
{
	int pfd[2];
	cr_assert_eq(pipe(pfd), 0);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (!pid) {
		unsigned got = ~0u;
		close(pfd[0]);
		if (setgroups(0, NULL) == 0 && setresgid(65534, 65534, 65534) == 0 &&
		    setresuid(65534, 65534, 65534) == 0 && prctl(PR_SET_DUMPABLE, 1) == 0) {
			/* control: this process can reopen its own memfd through /proc */
			int own = memfd_create("control", MFD_CLOEXEC);
			char path[64];
			snprintf(path, sizeof path, "/proc/self/fd/%d", own);
			int again = own >= 0 ? open(path, O_RDWR | O_CLOEXEC) : -1;
			got = again >= 0 ? try_writes(fd, bytes, false) : 1u << 30;
		}
		if (write(pfd[1], &got, sizeof got) != sizeof got)
			_exit(2);
		_exit(0);
	}
	close(pfd[1]);
	unsigned got = ~0u;
	cr_assert_eq(read(pfd[0], &got, sizeof got), (ssize_t)sizeof got);
	close(pfd[0]);
	int wst;
	cr_assert_eq(waitpid(pid, &wst, 0), pid);
	return got;
}

Test(client_fds, every_write_path_fails_and_lookups_work)
{
	de_arena *a = mk_arena(0);
	de_table *t;
	cr_assert_eq(de_table_open(a, &cfg8, &t), 0);
	uint64_t *keys = uniform_keys(20000, 1); /* > 2 MiB of rows: several segments */
	put_keys(t, keys, 20000);
	unsigned nseg = de_arena_nsegments(a);
	cr_assert_geq(nseg, 2);

	int fds[DE_ARENA_MAX_SEGMENTS];
	for (unsigned i = 0; i < nseg; i++) {
		struct de_segment_info si;
		struct stat st;
		cr_assert_eq(de_arena_segment(a, i, &si), 0);
		cr_assert_geq(fds[i] = de_arena_segment_fd(a, i, true), 0);
		cr_assert_eq(fstat(fds[i], &st), 0);
		cr_expect_eq(st.st_mode & 07777, 0400, "segment %u has mode %o, not 0400", i,
			     st.st_mode & 07777);
		if (geteuid() == 0) {
			unsigned got = try_writes_as_nobody(fds[i], si.bytes);
			cr_expect_neq(got, 1u << 30, "the child cannot use /proc/self/fd");
			cr_expect_eq(got, 0, "segment %u: a client of another uid wrote (%#x: "
				     "1 reopen O_RDWR, 2 mmap shared writable, 4 pwrite, 8 ftruncate, "
				     "16 fchmod, 32 mprotect, 64 writes through the reopened fd, "
				     "128 no F_SEAL_FUTURE_WRITE, 256 a private write leaked)", i, got);
		}
		/* this process: the owner's uid (or root), the strongest client there is:
		 * fchmod and a reopen may work; no write may */
		unsigned got = try_writes(fds[i], si.bytes, true) & ~(unsigned)W_FCHMOD;
		cr_expect_eq(got, 0, "segment %u: the owner's uid wrote through a read-only fd "
			     "(%#x, bits as above)", i, got);
	}
	/* lookups through the same fds still work, and nothing changed */
	de_arena *ra = NULL;
	de_table *rt = NULL;
	cr_assert_eq(de_arena_attach_ro(fds, nseg, &ra), 0);
	cr_assert_eq(de_table_attach_ro(ra, &rt), 0);
	expect_keys(rt, keys, 20000, "read-only attach");
	expect_keys(t, keys, 20000, "owner");
	/* and the owner still writes through its own mapping */
	uint64_t more[2] = { 77, 78 };
	put_keys(t, more, 2);
	expect_keys(rt, more, 2, "read-only attach, after the owner wrote");
	for (unsigned i = 0; i < nseg; i++)
		close(fds[i]);
	de_table_close(rt);
	de_arena_destroy(ra);
	de_table_close(t);
	de_arena_destroy(a);
	free(keys);
}

Test(client_fds, owner_fd_cannot_write_either)
{
	de_arena *a = mk_arena(0);
	struct de_segment_info si;
	cr_assert_eq(de_arena_segment(a, 0, &si), 0);
	int fd = de_arena_segment_fd(a, 0, false);
	cr_assert_geq(fd, 0);
	cr_expect_eq(fcntl(fd, F_GETFL) & O_ACCMODE, O_RDWR);
	void *p = mmap(NULL, si.bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	cr_expect_eq(p, MAP_FAILED, "a new writable mapping of a sealed segment");
	cr_expect_eq(errno, EPERM);
	cr_expect_eq(pwrite(fd, "x", 1, 100000), -1);
	cr_expect_eq(errno, EPERM);
	close(fd);
	/* the arena's own mapping (made before the seal) still writes */
	uint64_t off;
	cr_assert_eq(de_arena_alloc(a, 64, 64, &off), 0);
	memset(de_arena_at(a, off), 0x5a, 64);
	cr_expect_eq(((unsigned char *)de_arena_at(a, off))[63], 0x5a);
	de_arena_destroy(a);
}

/* ---- scribbled shared memory ------------------------------------------------------- */

#define NK 3000

/* A table with NK keys of which the first 100 were erased (a free list of 100). */
static de_table *scribble_table(de_arena *a, uint64_t **keys)
{
	de_table *t;
	cr_assert_eq(de_table_open(a, &cfg8, &t), 0);
	*keys = uniform_keys(NK, 2);
	put_keys(t, *keys, NK);
	size_t erased;
	cr_assert_eq(de_table_erase(t, *keys, 100, &erased), 0);
	cr_assert_eq(erased, 100);
	return t;
}

/* Insert key with vals_of(key) (creating it: the path every insert takes, locate) */
static int insert_one(de_table *t, uint64_t key)
{
	float v[8];
	uint8_t st;
	vals_of(key, v);
	return de_table_assign(t, &key, 1, v, &st, 2);
}

Test(scribbled, free_head_out_of_range, .timeout = 60)
{
	de_arena *a = mk_arena(0);
	uint64_t *keys;
	de_table *t = scribble_table(a, &keys);
	uint32_t *fh = (uint32_t *)(hdr_of(a) + H_FREE_HEAD);
	uint32_t saved = *fh;
	*fh = 0x7ffffff0u; /* never handed out */
	cr_expect_eq(insert_one(t, 0xabcdef1), -EBADMSG);
	*fh = (uint32_t)de_table_row_limit(t) + 5; /* past next_row */
	cr_expect_eq(insert_one(t, 0xabcdef2), -EBADMSG);
	*fh = saved;
	cr_expect_eq(insert_one(t, 0xabcdef3), 0, "a repaired head works again");
	expect_keys(t, keys + 100, NK - 100, "untouched keys");
	de_table_close(t);
	de_arena_destroy(a);
	free(keys);
}

Test(scribbled, free_head_names_a_live_row, .timeout = 60)
{
	de_arena *a = mk_arena(0);
	uint64_t *keys;
	de_table *t = scribble_table(a, &keys);
	/* the row of a live key: a free list that hands it out would merge two keys */
	uint32_t live = UINT32_MAX;
	for (uint64_t r = 0; r < de_table_row_limit(t) && live == UINT32_MAX; r++) {
		struct de_row_meta m;
		if (de_table_peek(t, r, &m, NULL) == 0)
			live = (uint32_t)r;
	}
	cr_assert_neq(live, UINT32_MAX);
	*(uint32_t *)(hdr_of(a) + H_FREE_HEAD) = live;
	cr_expect_eq(insert_one(t, 0xabcdef4), -EBADMSG);
	expect_keys(t, keys + 100, NK - 100, "untouched keys");
	de_table_close(t);
	de_arena_destroy(a);
	free(keys);
}

/* The metadata of row r (struct de_row_meta), found through the header's chunk table. */
static struct de_row_meta *meta_of(de_arena *a, uint32_t r)
{
	char *h = hdr_of(a);
	uint32_t stride = *(uint32_t *)(h + H_ROW_STRIDE), shift = *(uint32_t *)(h + H_CHUNK_SHIFT);
	uint64_t *ctab = (uint64_t *)de_arena_at(a, *(uint64_t *)(h + H_CHUNK_TAB));
	char *chunk = de_arena_at(a, ctab[r >> shift]);
	return (struct de_row_meta *)(chunk + ((uint64_t)stride << shift) +
				      (uint64_t)(r & ((1u << shift) - 1)) * sizeof(struct de_row_meta));
}

/* What a lock-free reader that found a row just before it was erased does: it stores
 * last_step (and freq) into the row's metadata after the row went on the free list. The
 * step it stores may be any number, here a live row's id. The free list must not care. */
Test(scribbled, late_touch_of_a_freed_row, .timeout = 60)
{
	de_arena *a = mk_arena(0);
	uint64_t *keys;
	de_table *t = scribble_table(a, &keys);
	uint32_t live = UINT32_MAX;
	for (uint64_t r = 0; r < de_table_row_limit(t) && live == UINT32_MAX; r++) {
		struct de_row_meta m;
		if (de_table_peek(t, r, &m, NULL) == 0)
			live = (uint32_t)r;
	}
	cr_assert_neq(live, UINT32_MAX);
	uint32_t head = *(uint32_t *)(hdr_of(a) + H_FREE_HEAD);
	struct de_row_meta *m = meta_of(a, head);
	m->last_step = live; /* the late touch */
	m->freq += 1;
	m->aux = live;
	for (uint64_t k = 0; k < 100; k++)
		cr_assert_eq(insert_one(t, 0x1234500 + k), 0, "insert %llu into a freed row",
			     (unsigned long long)k);
	expect_keys(t, keys + 100, NK - 100, "untouched keys");
	uint64_t fresh[100];
	for (uint64_t k = 0; k < 100; k++)
		fresh[k] = 0x1234500 + k;
	expect_keys(t, fresh, 100, "the keys put in the freed rows");
	de_table_close(t);
	de_arena_destroy(a);
	free(keys);
}

Test(scribbled, bucket_row_out_of_range_or_another_keys, .timeout = 60)
{
	de_arena *a = mk_arena(0);
	de_table *t;
	cr_assert_eq(de_table_open(a, &cfg8, &t), 0);
	uint64_t k[2] = { 1001, 1002 };
	put_keys(t, k, 2);
	/* one segment (depth 0): find the slots of both keys */
	char *seg = de_arena_at(a, seg0_off(a));
	uint32_t *slot_row[2] = { NULL, NULL };
	for (int b = 0; b < 64; b++)
		for (int j = 0; j < 5; j++) {
			uint64_t key = *(uint64_t *)(seg + 64 + 64 * b + 8 * j);
			for (int i = 0; i < 2; i++)
				if (key == k[i])
					slot_row[i] = (uint32_t *)(seg + 64 + 64 * b + B_ROW + 4 * j);
		}
	cr_assert(slot_row[0] && slot_row[1]);
	uint32_t saved = *slot_row[0];
	*slot_row[0] = 0xfffffff0u;
	float v[8];
	uint8_t st = 0;
	cr_expect_eq(de_table_find_or_insert(t, &k[0], 1, v, &st, 3), -EBADMSG);
	cr_expect_eq(de_table_assign(t, &k[0], 1, v, NULL, 3), -EBADMSG);
	cr_expect_eq(de_table_erase(t, &k[0], 1, NULL), -EBADMSG);
	cr_expect_eq(de_table_find(t, &k[0], 1, v, &st), 0);
	cr_expect_neq(st, DE_FOUND, "a row id out of range read as found");
	/* the other key's row: writing k[0] would write k[1] */
	*slot_row[0] = *slot_row[1];
	vals_of(5, v);
	cr_expect_eq(de_table_assign(t, &k[0], 1, v, NULL, 3), -EBADMSG);
	*slot_row[0] = saved;
	expect_keys(t, k, 2, "both keys, repaired");
	de_table_close(t);
	de_arena_destroy(a);
}

Test(scribbled, segment_depth_and_prefix, .timeout = 60)
{
	de_arena *a = mk_arena(0);
	de_table *t;
	cr_assert_eq(de_table_open(a, &cfg8, &t), 0);
	uint64_t k = 4242;
	put_keys(t, &k, 1);
	uint64_t *dp = de_arena_at(a, seg0_off(a) + S_DEPTH_PREFIX);
	uint64_t saved = *dp;
	/* a segment that claims to cover one half only (the directory has one entry):
	 * every key of the other half would look its segment up forever */
	uint64_t keys[64];
	for (int i = 0; i < 64; i++)
		keys[i] = 100000 + (uint64_t)i;
	for (uint64_t bit = 0; bit < 2; bit++) {
		*dp = (bit << 8) | 1;
		int err = 0;
		for (int i = 0; i < 64 && !err; i++)
			err = insert_one(t, keys[i]);
		cr_expect_eq(err, -EBADMSG, "depth 1 prefix %lu: %d", (unsigned long)bit, err);
	}
	/* a depth beyond the directory's, and one beyond 64 bits */
	*dp = 40;
	cr_expect_eq(insert_one(t, 77777), -EBADMSG);
	*dp = 200;
	cr_expect_eq(insert_one(t, 77778), -EBADMSG);
	/* lock-free reads: a key in its bucket is found; a miss cannot be trusted */
	float v[8];
	uint8_t st = 0;
	uint64_t absent = 999999;
	cr_expect_eq(de_table_find(t, &absent, 1, v, &st), 0);
	cr_expect_eq(st, DE_RETRY, "a lying segment reads as retry (%u), not as missing", st);
	expect_keys(t, &k, 1, "the key in its bucket");
	*dp = saved;
	expect_keys(t, &k, 1, "repaired");
	de_table_close(t);
	de_arena_destroy(a);
}

Test(scribbled, next_row_far_ahead, .timeout = 60)
{
	de_arena *a = mk_arena(0);
	uint64_t *keys;
	de_table *t = scribble_table(a, &keys);
	*(uint64_t *)(hdr_of(a) + H_NFREE) = 0; /* skip the free list */
	*(uint64_t *)(hdr_of(a) + H_NEXT_ROW) = 0x7fffff00u;
	uint64_t used = de_arena_used_bytes(a);
	cr_expect_eq(insert_one(t, 0xabcdef5), -EBADMSG);
	cr_expect_lt(de_arena_used_bytes(a) - used, 64ull << 20,
		     "a scribbled next_row made the table allocate %llu bytes",
		     (unsigned long long)(de_arena_used_bytes(a) - used));
	expect_keys(t, keys + 100, NK - 100, "untouched keys");
	de_table_close(t);
	de_arena_destroy(a);
	free(keys);
}

Test(scribbled, lock_nobody_releases, .timeout = 120)
{
	de_arena *a = mk_arena(0);
	uint64_t *keys;
	de_table *t = scribble_table(a, &keys);
	/* a segment lock: writes to that segment give up; lock-free reads go on */
	uint32_t *sl = de_arena_at(a, seg0_off(a) + S_LOCK);
	uint64_t dw = *(uint64_t *)(hdr_of(a) + H_DIR);
	uint32_t g = (uint32_t)(dw & 63);
	/* a key that entry 0 covers */
	uint64_t key = 0;
	for (uint64_t c = 1; !key; c++) {
		uint64_t h = XXH3_64bits_withSeed(&c, 8, cfg8.seed);
		if (!g || !(h >> (64 - g)))
			key = c;
	}
	*sl = 1;
	cr_expect_eq(insert_one(t, key), -EDEADLK);
	*sl = 0;
	expect_keys(t, keys + 100, NK - 100, "untouched keys");
	/* the free-list lock */
	*(uint32_t *)(hdr_of(a) + H_FREE_LOCK) = 1;
	cr_expect_eq(insert_one(t, key), -EDEADLK);
	/* an erase under a free-list lock nobody releases: the key goes, its row is lost
	 * to the table (not handed out twice) */
	size_t erased = 0;
	uint64_t nfree = *(uint64_t *)(hdr_of(a) + H_NFREE);
	cr_expect_eq(de_table_erase(t, &keys[100], 1, &erased), 0);
	cr_expect_eq(erased, 1);
	cr_expect_eq(*(uint64_t *)(hdr_of(a) + H_NFREE), nfree, "the row went on the free list");
	float v[8];
	uint8_t st = 0;
	cr_expect_eq(de_table_find(t, &keys[100], 1, v, &st), 0);
	cr_expect_eq(st, DE_MISSING);
	*(uint32_t *)(hdr_of(a) + H_FREE_LOCK) = 0;
	cr_expect_eq(insert_one(t, key), 0, "released, the insert works");
	expect_keys(t, keys + 101, NK - 101, "untouched keys");
	de_table_close(t);
	de_arena_destroy(a);
	free(keys);
}

/* ---- hash flooding ---------------------------------------------------------------- */

static uint64_t hash_of(uint64_t key, uint64_t seed) { return XXH3_64bits_withSeed(&key, 8, seed); }

Test(flood, key_with_hash_inverts_xxh3)
{
	uint64_t s = 9;
	for (int i = 0; i < 1000; i++) {
		uint64_t h = de_splitmix64_next(&s), seed = de_splitmix64_next(&s);
		uint64_t k = key_with_hash(h, seed);
		cr_assert_eq(hash_of(k, seed), h, "xxh3 of %#lx is %#lx, not %#lx", (unsigned long)k,
			     (unsigned long)hash_of(k, seed), (unsigned long)h);
	}
}

static unsigned log2_ceil(uint64_t v)
{
	unsigned l = 0;
	while ((1ull << l) < v)
		l++;
	return l;
}

/* n keys whose hashes all share the top 32 bits and the 22 low bits (both bucket
 * indices at 64 buckets: bits 0..5 and 16..21), varying bits 22..31 only. */
static void colliding_keys(uint64_t *k, unsigned n, uint64_t seed, uint64_t base)
{
	for (unsigned i = 0; i < n; i++) {
		uint64_t h = (base & ~(0x3ffull << 22)) | ((uint64_t)(i + 1) << 22);
		k[i] = key_with_hash(h, seed);
		cr_assert_eq(hash_of(k[i], seed), h);
		cr_assert_neq(k[i], 0);
	}
}

/*
 * The attack of the report: keys sharing many hash bits, inserted one per call. Before
 * the growth rules each one split and doubled until the directory ran out (here the
 * 128 MiB reservation: -ENOMEM after ~22 doublings); now they cost -ENOSPC for
 * themselves, a bounded index, and nothing for other keys.
 */
Test(flood, colliding_keys_are_refused_and_others_insert, .timeout = 300)
{
	de_arena *a = mk_arena(128ull << 20);
	de_table *t;
	cr_assert_eq(de_table_open(a, &cfg8, &t), 0);
	uint64_t *victims = uniform_keys(4000, 3);
	put_keys(t, victims, 2000);
	struct de_table_stats s0, s1;
	cr_assert_eq(de_table_stats(t, &s0), 0);

	enum { NA = 64 };
	uint64_t att[NA];
	colliding_keys(att, NA, cfg8.seed, 0x1234567890abcdefull);
	unsigned created = 0, refused = 0, other = 0;
	for (unsigned i = 0; i < NA; i++) {
		int err = insert_one(t, att[i]);
		if (!err)
			created++;
		else if (err == -ENOSPC)
			refused++;
		else
			other++;
	}
	cr_assert_eq(de_table_stats(t, &s1), 0);
	cr_expect_eq(other, 0, "%u attacker inserts failed with something else than -ENOSPC", other);
	cr_expect_leq(created, 10, "%u colliding keys fit a bucket pair of 10 slots", created);
	cr_expect_geq(refused, NA - 10);
	cr_expect_eq(s1.index_refusals - s0.index_refusals, refused, "refusals counted: %lu, "
		     "returned: %u", (unsigned long)(s1.index_refusals - s0.index_refusals), refused);
	/* bounded growth: at most one split per insert, and only splits that freed a slot
	 * for the pair (at most its 10 keys), the directory within the depth cap */
	cr_expect_leq(s1.splits - s0.splits, 10, "%lu splits for %u colliding keys",
		      (unsigned long)(s1.splits - s0.splits), NA);
	cr_expect_leq(s1.global_depth, log2_ceil(s1.segments) + 6,
		      "directory depth %u for %lu segments", s1.global_depth,
		      (unsigned long)s1.segments);
	cr_expect_leq(s1.index_bytes - s0.index_bytes, 10 * (64 + 64 * 64) + (8ull << s1.global_depth) * 2,
		      "the index grew by %lu bytes", (unsigned long)(s1.index_bytes - s0.index_bytes));

	/* the victim: its keys read back, new ones insert */
	expect_keys(t, victims, 2000, "victim keys after the flood");
	put_keys(t, victims + 2000, 2000);
	expect_keys(t, victims, 4000, "victim keys inserted after the flood");
	/* and a zero-copy reader sees them too */
	int fds[DE_ARENA_MAX_SEGMENTS];
	unsigned n = de_arena_nsegments(a);
	for (unsigned i = 0; i < n; i++)
		cr_assert_geq(fds[i] = de_arena_segment_fd(a, i, true), 0);
	de_arena *ra;
	de_table *rt;
	cr_assert_eq(de_arena_attach_ro(fds, n, &ra), 0);
	cr_assert_eq(de_table_attach_ro(ra, &rt), 0);
	expect_keys(rt, victims, 4000, "read-only reader");
	for (unsigned i = 0; i < n; i++)
		close(fds[i]);
	de_table_close(rt);
	de_arena_destroy(ra);
	de_table_close(t);
	de_arena_destroy(a);
	free(victims);
}

/* A bucket pair full in a nearly empty table is made of chosen keys: the split that
 * would separate them (one differs in the top bit) is refused under 1/16 load, so no
 * one can buy a segment for a handful of keys. */
Test(flood, early_split_refused)
{
	de_arena *a = mk_arena(0);
	de_table *t;
	cr_assert_eq(de_table_open(a, &cfg8, &t), 0);
	uint64_t k[11];
	colliding_keys(k, 10, cfg8.seed, 0x0000000000abcdefull); /* top bit 0 */
	colliding_keys(k + 10, 1, cfg8.seed, 0x8000000000abcdefull); /* same pair, top bit 1 */
	for (int i = 0; i < 10; i++)
		cr_assert_eq(insert_one(t, k[i]), 0, "key %d of a pair of 10 slots", i);
	cr_expect_eq(insert_one(t, k[10]), -ENOSPC);
	struct de_table_stats s;
	cr_assert_eq(de_table_stats(t, &s), 0);
	cr_expect_eq(s.splits, 0);
	cr_expect_eq(s.index_refusals, 1);
	expect_keys(t, k, 10, "the ten that fit");
	/* with the table loaded, the same split is allowed: it frees a slot */
	uint64_t *u = uniform_keys(100, 4);
	put_keys(t, u, 100);
	cr_expect_eq(insert_one(t, k[10]), 0, "at %lu keys the split is allowed",
		     (unsigned long)(s.keys + 100));
	expect_keys(t, u, 100, "uniform keys");
	de_table_close(t);
	de_arena_destroy(a);
	free(u);
}

/*
 * Splits that each free a slot, one per insert, can still deepen the directory by one bit
 * per key: chain keys whose hashes start with j zero bits then a one, all in one bucket
 * pair, and 25 filler keys deep in the zero half that keep the deepest segment above the
 * minimum load. The directory stops DEPTH_SLACK (6) bits above log2 of the segment count;
 * the chain keys past that get -ENOSPC. (Without the cap the directory doubles once per
 * key until the 64 MiB reservation is gone.)
 */
Test(flood, depth_capped_by_segment_count, .timeout = 120)
{
	de_arena *a = mk_arena(64ull << 20);
	de_table *t;
	cr_assert_eq(de_table_open(a, &cfg8, &t), 0);
	uint64_t fill[25], s = 5;
	for (int i = 0; i < 25; i++) {
		uint64_t h = (de_splitmix64_next(&s) & 0xfffffull) | 1;
		if ((h & 63) == 0x2f || ((h >> 16) & 63) == 0x2b)
			h ^= 0x10; /* keep out of the chain's pair */
		fill[i] = key_with_hash(h, cfg8.seed);
		cr_assert_eq(hash_of(fill[i], cfg8.seed), h);
	}
	put_keys(t, fill, 25);
	enum { NC = 40 };
	unsigned refused = 0, other = 0;
	for (unsigned j = 0; j < NC; j++) {
		uint64_t h = (1ull << (63 - j)) | 0x2bcdefull;
		uint64_t k = key_with_hash(h, cfg8.seed);
		cr_assert_eq(hash_of(k, cfg8.seed), h);
		int err = insert_one(t, k);
		if (err == -ENOSPC)
			refused++;
		else if (err)
			other++;
	}
	struct de_table_stats st;
	cr_assert_eq(de_table_stats(t, &st), 0);
	cr_expect_eq(other, 0, "%u chain inserts failed with another error than -ENOSPC", other);
	cr_expect_gt(refused, 0);
	cr_expect_eq(st.index_refusals, refused);
	cr_expect_leq(st.global_depth, log2_ceil(st.segments) + 6, "depth %u for %lu segments",
		      st.global_depth, (unsigned long)st.segments);
	cr_expect_geq(st.global_depth, 8, "the chain did split (depth %u)", st.global_depth);
	expect_keys(t, fill, 25, "fillers");
	uint64_t *u = uniform_keys(500, 6);
	put_keys(t, u, 500);
	expect_keys(t, u, 500, "uniform keys after the chain");
	de_table_close(t);
	de_arena_destroy(a);
	free(u);
}
