/*
 * test_arena.c — the arena API of de_shm.h: allocation and growth without moving, seals,
 * read-only fds and attaches (same process and a forked one), refresh after growth,
 * untrusted input, and the page-kind fallbacks (THP, hugetlb).
 *
 * Written against the contract in de_shm.h. Two tests edit a copy of a real header and
 * so depend on the private layout specified at the top of shm/arena.c: u64 magic at
 * offset 0, u32 layout version at offset 8 (HDR_MAGIC_OFF, HDR_VERSION_OFF below).
 *
 * Tests that need something the machine lacks (free 2 MiB huge pages, NUMA support)
 * skip with the reason; every test destroys what it created (ASan/LSan builds run it).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <numa.h>

#include "de_shm.h"

#define MiB (1ull << 20)
#define HDR_MAGIC_OFF 0
#define HDR_VERSION_OFF 8

/* ---- helpers ----------------------------------------------------------- */

/* A small arena that grows quickly: 2 MiB first segment, grown segments <= 4 MiB. */
static struct de_arena_config small_cfg(enum de_pages pages)
{
	return (struct de_arena_config){
		.reserve_bytes = 256 * MiB,
		.segment_bytes = 2 * MiB,
		.max_segment_bytes = 4 * MiB,
		.pages = pages,
		.numa_node = DE_NUMA_NONE,
		.name = "test_arena",
	};
}

static de_arena *create_or_die(const struct de_arena_config *cfg)
{
	de_arena *a = NULL;
	int r = de_arena_create(cfg, &a);

	cr_assert_eq(r, 0, "de_arena_create: %d (%s)", r, strerror(-r));
	cr_assert_not_null(a);
	return a;
}

/* Byte pattern for offset off: depends on the offset so moved bytes are caught. */
static uint8_t pat(uint64_t off, uint8_t salt)
{
	return (uint8_t)((off * 2654435761u) >> 13) ^ salt;
}

static void fill(de_arena *a, uint64_t off, uint64_t len, uint8_t salt)
{
	uint8_t *p = de_arena_at(a, off);

	for (uint64_t i = 0; i < len; i++)
		p[i] = pat(off + i, salt);
}

/* First offset in [off, off+len) whose byte is not the pattern, or UINT64_MAX. */
static uint64_t check(const de_arena *a, uint64_t off, uint64_t len, uint8_t salt)
{
	const uint8_t *p = de_arena_at(a, off);

	for (uint64_t i = 0; i < len; i++)
		if (p[i] != pat(off + i, salt))
			return off + i;
	return UINT64_MAX;
}

/* Allocate until the arena has at least nsegs segments; returns the last offset. */
static uint64_t grow_to(de_arena *a, unsigned nsegs, uint64_t chunk)
{
	uint64_t off = 0;

	for (int guard = 0; de_arena_nsegments(a) < nsegs; guard++) {
		cr_assert_lt(guard, 100000, "arena never grew to %u segments", nsegs);
		cr_assert_eq(de_arena_alloc(a, chunk, 64, &off), 0);
	}
	return off;
}

/* Read-only fds of every segment of a. out: fds[] (caller closes), returns count. */
static unsigned ro_fds(const de_arena *a, int *fds, unsigned cap)
{
	unsigned n = de_arena_nsegments(a);

	cr_assert_leq(n, cap);
	for (unsigned i = 0; i < n; i++) {
		fds[i] = de_arena_segment_fd(a, i, true);
		cr_assert_geq(fds[i], 0, "segment_fd(%u, ro) = %d", i, fds[i]);
	}
	return n;
}

static void close_all(int *fds, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		close(fds[i]);
}

static int fd_source(void *ctx, unsigned seg)
{
	return de_arena_segment_fd((const de_arena *)ctx, seg, true);
}

static int failing_source(void *ctx, unsigned seg)
{
	(void)ctx;
	(void)seg;
	return -EIO;
}

/* A memfd holding len bytes from src (len may exceed src_len: the rest is zeros). */
static int memfd_with(const void *src, size_t src_len, size_t len)
{
	int fd = memfd_create("test_arena_copy", MFD_CLOEXEC);
	size_t n = src_len < len ? src_len : len;

	cr_assert_geq(fd, 0);
	cr_assert_eq(ftruncate(fd, (off_t)len), 0);
	cr_assert_eq(pwrite(fd, src, n, 0), (ssize_t)n);
	return fd;
}

/* Huge pages that can still be handed out: HugePages_Free - HugePages_Rsvd. */
static long hugepages_available(void)
{
	FILE *f = fopen("/proc/meminfo", "re");
	char line[256];
	long free_pages = -1, rsvd = 0, size_kb = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		sscanf(line, "HugePages_Free: %ld", &free_pages);
		sscanf(line, "HugePages_Rsvd: %ld", &rsvd);
		sscanf(line, "Hugepagesize: %ld", &size_kb);
	}
	fclose(f);
	if (free_pages < 0 || size_kb != 2048)
		return 0; /* MFD_HUGE_2MB needs the 2 MiB pool; another default size: none */
	return free_pages - rsvd;
}

static void skip_without_hugepages(void)
{
	if (hugepages_available() < 16)
		cr_skip_test("no free 2 MiB huge pages reserved (need 16 in HugePages_Free)");
}

/* The selected word of shmem_enabled ("never", "advise", ...), or "" if unreadable. */
static void shmem_thp_mode(char *out, size_t cap)
{
	char buf[256] = "", *l, *r;
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/shmem_enabled", "re");

	out[0] = '\0';
	if (!f)
		return;
	if (fgets(buf, sizeof(buf), f) && (l = strchr(buf, '[')) && (r = strchr(l, ']')) &&
	    (size_t)(r - l) < cap) {
		memcpy(out, l + 1, (size_t)(r - l - 1));
		out[r - l - 1] = '\0';
	}
	fclose(f);
}

/* ---- create, allocate, grow -------------------------------------------- */

Test(arena, small_pages_grow_without_moving)
{
	struct de_arena_config cfg = small_cfg(DE_PAGES_SMALL);
	de_arena *a = create_or_die(&cfg);
	struct de_segment_info si;
	uint64_t off1, off2, first_end;
	void *p1;

	cr_expect_eq(de_arena_pages(a), DE_PAGES_SMALL);
	cr_assert_not_null(de_arena_pages_note(a));
	cr_expect_gt(strlen(de_arena_pages_note(a)), 0);
	cr_expect_str_eq(de_pages_name(DE_PAGES_SMALL), de_pages_name(de_arena_pages(a)));
	cr_expect_not(de_arena_readonly(a));
	cr_expect_eq(de_arena_nsegments(a), 1);
	cr_expect_eq(de_arena_mapped_bytes(a), 2 * MiB);
	cr_expect_eq(de_arena_reserve_bytes(a), 256 * MiB);
	cr_assert_eq(de_arena_segment(a, 0, &si), 0);
	cr_expect_eq(si.offset, 0);
	cr_expect_eq(si.bytes, 2 * MiB);
	cr_expect_eq(si.pages, DE_PAGES_SMALL);
	cr_expect_eq(si.numa_node, DE_NUMA_NONE);

	/* Two allocations in the first segment, with their alignment. */
	cr_assert_eq(de_arena_alloc(a, 1000, 64, &off1), 0);
	cr_expect_eq(off1 % 64, 0);
	cr_assert_eq(de_arena_alloc(a, 3000, 4096, &off2), 0);
	cr_expect_eq(off2 % 4096, 0);
	cr_expect_geq(off2, off1 + 1000, "allocations overlap");
	cr_expect(de_arena_valid(a, off1, 1000));
	cr_expect_geq(de_arena_used_bytes(a), off2 + 3000);
	p1 = de_arena_at(a, off1);
	fill(a, off1, 1000, 1);
	fill(a, off2, 3000, 2);
	first_end = de_arena_mapped_bytes(a);

	/* Grow through several segments; fill every chunk. */
	uint64_t offs[64], lens[64];
	unsigned n = 0;
	while (de_arena_nsegments(a) < 5) {
		cr_assert_lt(n, 64u, "no growth after 64 allocations of 700 KiB");
		lens[n] = 700 * 1024 + n;
		cr_assert_eq(de_arena_alloc(a, lens[n], 128, &offs[n]), 0);
		cr_expect_eq(offs[n] % 128, 0);
		cr_expect(de_arena_valid(a, offs[n], lens[n]));
		fill(a, offs[n], lens[n], (uint8_t)(10 + n));
		n++;
	}
	cr_expect_gt(de_arena_mapped_bytes(a), first_end);

	/* Nothing moved, nothing was overwritten. */
	cr_expect_eq(de_arena_at(a, off1), p1, "pointer of an old offset changed");
	cr_expect_eq(check(a, off1, 1000, 1), UINT64_MAX);
	cr_expect_eq(check(a, off2, 3000, 2), UINT64_MAX);
	for (unsigned i = 0; i < n; i++) {
		cr_expect_eq(check(a, offs[i], lens[i], (uint8_t)(10 + i)), UINT64_MAX,
			     "chunk %u damaged", i);
		if (i)
			cr_expect_geq(offs[i], offs[i - 1] + lens[i - 1], "chunks overlap");
	}

	/* Segments: contiguous from 0, 2 MiB multiples, max_segment respected, sum = mapped. */
	uint64_t end = 0;
	for (unsigned i = 0; i < de_arena_nsegments(a); i++) {
		cr_assert_eq(de_arena_segment(a, i, &si), 0);
		cr_expect_eq(si.offset, end, "segment %u not contiguous", i);
		cr_expect_gt(si.bytes, 0);
		cr_expect_eq(si.bytes % DE_ARENA_ALIGN, 0);
		if (i)
			cr_expect_leq(si.bytes, 4 * MiB, "segment %u exceeds max_segment_bytes", i);
		cr_expect_eq(si.pages, DE_PAGES_SMALL);
		end = si.offset + si.bytes;
	}
	cr_expect_eq(end, de_arena_mapped_bytes(a));
	cr_expect_eq(de_arena_segment(a, de_arena_nsegments(a), &si), -EINVAL);
	cr_expect_not(de_arena_valid(a, end, 1));
	cr_expect_not(de_arena_valid(a, end - 1, 2));
	cr_expect(de_arena_valid(a, end - 1, 1));
	de_arena_destroy(a);
}

Test(arena, alignment_and_big_allocations)
{
	struct de_arena_config cfg = small_cfg(DE_PAGES_SMALL);
	de_arena *a = create_or_die(&cfg);
	uint64_t off, off_big;

	for (uint64_t al = 1; al <= DE_ARENA_ALIGN; al <<= 1) {
		cr_assert_eq(de_arena_alloc(a, 24, al, &off), 0, "align %lu", (unsigned long)al);
		cr_expect_eq(off % al, 0, "offset %lu not aligned to %lu", (unsigned long)off,
			     (unsigned long)al);
		cr_expect(de_arena_valid(a, off, 24));
	}
	/* A chunk larger than max_segment_bytes still fits (in a segment of its own). */
	cr_assert_eq(de_arena_alloc(a, 9 * MiB, 64, &off_big), 0);
	cr_expect(de_arena_valid(a, off_big, 9 * MiB));
	fill(a, off_big, 9 * MiB, 7);
	cr_expect_eq(check(a, off_big, 9 * MiB, 7), UINT64_MAX);
	de_arena_destroy(a);
}

Test(arena, bad_arguments)
{
	struct de_arena_config cfg = small_cfg(DE_PAGES_SMALL);
	de_arena *a = create_or_die(&cfg);
	uint64_t off = 12345;

	cr_expect_eq(de_arena_alloc(a, 64, 3, &off), -EINVAL);
	cr_expect_eq(de_arena_alloc(a, 64, 48, &off), -EINVAL);
	cr_expect_eq(de_arena_alloc(a, 64, 0, &off), -EINVAL);
	cr_expect_eq(de_arena_alloc(a, 64, 4 * MiB, &off), -EINVAL);
	cr_expect_eq(de_arena_alloc(a, 64, DE_ARENA_ALIGN + 1, &off), -EINVAL);
	cr_expect_eq(de_arena_alloc(a, 64, 1ull << 63, &off), -EINVAL);
	cr_expect_eq(off, 12345, "out-value written on error");
	cr_expect_eq(de_arena_create(NULL, &a), -EINVAL);
	cr_expect_eq(de_arena_create(&cfg, NULL), -EINVAL);
	de_arena_destroy(a);
	de_arena_destroy(NULL); /* NULL is fine */
}

Test(arena, reserve_exhaustion)
{
	struct de_arena_config cfg = small_cfg(DE_PAGES_SMALL);
	de_arena *a;
	uint64_t off, keep;
	int r = 0;

	cfg.reserve_bytes = 8 * MiB;
	a = create_or_die(&cfg);
	cr_assert_eq(de_arena_alloc(a, 100, 8, &keep), 0);
	fill(a, keep, 100, 3);
	/* 8 MiB of reservation: 1 MiB chunks run out after fewer than 9. */
	for (int i = 0; i < 16 && r == 0; i++)
		r = de_arena_alloc(a, MiB, 64, &off);
	cr_expect_eq(r, -ENOSPC, "a full reservation is -ENOSPC (the arena's limit), not -ENOMEM");
	cr_expect_leq(de_arena_mapped_bytes(a), 8 * MiB);
	/* Far more than the reservation at once. */
	cr_expect_eq(de_arena_alloc(a, 1ull << 40, 64, &off), -ENOSPC);
	cr_expect_eq(de_arena_alloc(a, UINT64_MAX - 4096, 64, &off), -ENOSPC);
	/* The arena still works for what fits, and kept its bytes. */
	cr_expect_eq(check(a, keep, 100, 3), UINT64_MAX);
	de_arena_destroy(a);
}

Test(arena, root_offset)
{
	struct de_arena_config cfg = small_cfg(DE_PAGES_SMALL);
	de_arena *a = create_or_die(&cfg), *r = NULL;
	int fds[DE_ARENA_MAX_SEGMENTS];
	uint64_t off;
	unsigned n;

	cr_expect_eq(de_arena_root(a), 0);
	cr_assert_eq(de_arena_alloc(a, 256, 64, &off), 0);
	cr_assert_eq(de_arena_set_root(a, off), 0);
	cr_expect_eq(de_arena_root(a), off);
	n = ro_fds(a, fds, DE_ARENA_MAX_SEGMENTS);
	cr_assert_eq(de_arena_attach_ro(fds, n, &r), 0);
	cr_expect_eq(de_arena_root(r), off);
	cr_expect_eq(de_arena_set_root(r, 0), -EROFS);
	de_arena_destroy(r);
	close_all(fds, n);
	de_arena_destroy(a);
}

Test(arena, numa_node_recorded)
{
	struct de_arena_config cfg = small_cfg(DE_PAGES_SMALL);
	struct de_segment_info si;
	de_arena *a;
	uint64_t off;

	if (numa_available() < 0)
		cr_skip_test("libnuma: numa_available() < 0 (kernel without NUMA support)");
	cfg.numa_node = 0;
	a = create_or_die(&cfg);
	grow_to(a, 2, 512 * 1024);
	for (unsigned i = 0; i < de_arena_nsegments(a); i++) {
		cr_assert_eq(de_arena_segment(a, i, &si), 0);
		cr_expect_eq(si.numa_node, 0, "segment %u node %d", i, si.numa_node);
	}
	cr_assert_eq(de_arena_alloc(a, 4096, 4096, &off), 0);
	memset(de_arena_at(a, off), 1, 4096);
	de_arena_destroy(a);

	/* DE_NUMA_AUTO resolves to a real node or to DE_NUMA_NONE, never to -1. */
	cfg.numa_node = DE_NUMA_AUTO;
	a = create_or_die(&cfg);
	cr_assert_eq(de_arena_segment(a, 0, &si), 0);
	cr_expect(si.numa_node >= 0 || si.numa_node == DE_NUMA_NONE, "node %d", si.numa_node);
	de_arena_destroy(a);
}

struct hook_log {
	unsigned calls;
	unsigned last;
	bool ok; /* every call saw its segment mapped and described */
};

static void grow_hook(void *ctx, de_arena *a, unsigned seg)
{
	struct hook_log *log = ctx;
	struct de_segment_info si;

	log->calls++;
	log->last = seg;
	if (de_arena_nsegments(a) != seg + 1 || de_arena_segment(a, seg, &si) != 0 ||
	    !de_arena_valid(a, si.offset, si.bytes))
		log->ok = false;
}

Test(arena, grow_hook_sees_each_new_segment)
{
	struct de_arena_config cfg = small_cfg(DE_PAGES_SMALL);
	de_arena *a = create_or_die(&cfg);
	struct hook_log log = { .ok = true };

	de_arena_set_grow_hook(a, grow_hook, &log);
	grow_to(a, 4, 700 * 1024);
	cr_expect_eq(log.calls, 3, "hook calls %u for segments 1..3", log.calls);
	cr_expect_eq(log.last, 3);
	cr_expect(log.ok, "a hook call saw its segment unmapped or undescribed");
	de_arena_set_grow_hook(a, NULL, NULL);
	grow_to(a, 5, 700 * 1024);
	cr_expect_eq(log.calls, 3, "hook called after it was removed");
	de_arena_destroy(a);
}

#define CONC_ALLOCS 3000

struct conc_arg {
	de_arena *a;
	uint8_t salt;
	uint64_t off[CONC_ALLOCS], len[CONC_ALLOCS];
	int err;
};

static void *conc_worker(void *p)
{
	struct conc_arg *c = p;
	uint32_t s = 12345u + c->salt;

	for (int i = 0; i < CONC_ALLOCS; i++) {
		s = s * 1103515245u + 12345u;
		c->len[i] = 1 + (s >> 8) % 3000;
		c->err = de_arena_alloc(c->a, c->len[i], 16, &c->off[i]);
		if (c->err)
			return NULL;
		fill(c->a, c->off[i], c->len[i], c->salt);
	}
	return NULL;
}

static int cmp_range(const void *x, const void *y)
{
	const uint64_t *a = x, *b = y;

	return a[0] < b[0] ? -1 : a[0] > b[0];
}

Test(arena, concurrent_allocs_do_not_overlap)
{
	struct de_arena_config cfg = small_cfg(DE_PAGES_SMALL);
	de_arena *a = create_or_die(&cfg);
	static struct conc_arg args[2];
	static uint64_t ranges[2 * CONC_ALLOCS][2];
	pthread_t th[2];
	unsigned n = 0;

	for (int t = 0; t < 2; t++) {
		args[t] = (struct conc_arg){ .a = a, .salt = (uint8_t)(90 + t) };
		cr_assert_eq(pthread_create(&th[t], NULL, conc_worker, &args[t]), 0);
	}
	for (int t = 0; t < 2; t++)
		pthread_join(th[t], NULL);
	cr_assert_eq(args[0].err, 0);
	cr_assert_eq(args[1].err, 0);
	cr_expect_gt(de_arena_nsegments(a), 1, "no growth under concurrency");
	for (int t = 0; t < 2; t++)
		for (int i = 0; i < CONC_ALLOCS; i++) {
			cr_expect_eq(args[t].off[i] % 16, 0);
			cr_expect_eq(check(a, args[t].off[i], args[t].len[i], args[t].salt),
				     UINT64_MAX, "thread %d chunk %d overwritten", t, i);
			ranges[n][0] = args[t].off[i];
			ranges[n][1] = args[t].len[i];
			n++;
		}
	qsort(ranges, n, sizeof(ranges[0]), cmp_range);
	for (unsigned i = 1; i < n; i++)
		cr_expect_geq(ranges[i][0], ranges[i - 1][0] + ranges[i - 1][1],
			      "chunks at %lu and %lu overlap", (unsigned long)ranges[i - 1][0],
			      (unsigned long)ranges[i][0]);
	de_arena_destroy(a);
}

/* ---- seals and read-only fds ------------------------------------------- */

Test(arena, seals_forbid_shrinking)
{
	struct de_arena_config cfg = small_cfg(DE_PAGES_SMALL);
	de_arena *a = create_or_die(&cfg);
	struct de_segment_info si;
	struct stat st;

	grow_to(a, 3, 512 * 1024);
	for (unsigned i = 0; i < de_arena_nsegments(a); i++) {
		int fd = de_arena_segment_fd(a, i, false), seals;

		cr_assert_geq(fd, 0);
		cr_assert_eq(de_arena_segment(a, i, &si), 0);
		seals = fcntl(fd, F_GET_SEALS);
		cr_assert_geq(seals, 0, "F_GET_SEALS: %s", strerror(errno));
		cr_expect(seals & F_SEAL_SHRINK, "segment %u seals %#x lack F_SEAL_SHRINK", i, seals);
		errno = 0;
		cr_expect_eq(ftruncate(fd, (off_t)(si.bytes - 4096)), -1);
		cr_expect_eq(errno, EPERM);
		cr_expect_eq(ftruncate(fd, 0), -1);
		cr_expect_eq(errno, EPERM);
		cr_assert_eq(fstat(fd, &st), 0);
		cr_expect_eq((uint64_t)st.st_size, si.bytes);
		close(fd);
	}
	de_arena_destroy(a);
}

Test(arena, readonly_fds_cannot_write)
{
	struct de_arena_config cfg = small_cfg(DE_PAGES_SMALL);
	de_arena *a = create_or_die(&cfg);
	struct de_segment_info si;
	struct stat st;
	uint64_t off;

	cr_assert_eq(de_arena_alloc(a, 4096, 64, &off), 0);
	fill(a, off, 4096, 5);
	grow_to(a, 2, 512 * 1024);
	for (unsigned i = 0; i < de_arena_nsegments(a); i++) {
		int fd = de_arena_segment_fd(a, i, true);
		void *p;

		cr_assert_geq(fd, 0);
		cr_assert_eq(de_arena_segment(a, i, &si), 0);
		cr_expect_eq(fcntl(fd, F_GETFL) & O_ACCMODE, O_RDONLY);
		errno = 0;
		p = mmap(NULL, si.bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		cr_expect_eq(p, MAP_FAILED, "read-only fd mapped writable");
		cr_expect_eq(errno, EACCES);
		if (p != MAP_FAILED)
			munmap(p, si.bytes);
		cr_expect_eq(ftruncate(fd, (off_t)si.bytes * 2), -1);
		cr_expect_eq(ftruncate(fd, 0), -1);
		cr_assert_eq(fstat(fd, &st), 0);
		cr_expect_eq((uint64_t)st.st_size, si.bytes);
		/* ... but it maps read-only and shows the owner's bytes. */
		p = mmap(NULL, si.bytes, PROT_READ, MAP_SHARED, fd, 0);
		cr_assert_neq(p, MAP_FAILED);
		if (i == 0)
			cr_expect_eq(memcmp((char *)p + off, de_arena_at(a, off), 4096), 0);
		/* and mprotect cannot upgrade the mapping. */
		cr_expect_eq(mprotect(p, 4096, PROT_READ | PROT_WRITE), -1);
		cr_expect_eq(errno, EACCES);
		munmap(p, si.bytes);
		close(fd);
	}
	de_arena_destroy(a);
}

/* ---- read-only attach and refresh -------------------------------------- */

Test(arena, attach_ro_sees_same_bytes_and_refreshes)
{
	struct de_arena_config cfg = small_cfg(DE_PAGES_SMALL);
	de_arena *a = create_or_die(&cfg), *r = NULL;
	int fds[DE_ARENA_MAX_SEGMENTS];
	struct de_segment_info sa, sr;
	uint64_t off[3], late, x;
	unsigned n, nseg_before;

	cr_assert_eq(de_arena_alloc(a, 5000, 64, &off[0]), 0);
	fill(a, off[0], 5000, 21);
	grow_to(a, 3, 600 * 1024);
	cr_assert_eq(de_arena_alloc(a, 70000, 4096, &off[1]), 0);
	fill(a, off[1], 70000, 22);

	n = ro_fds(a, fds, DE_ARENA_MAX_SEGMENTS);
	cr_assert_eq(de_arena_attach_ro(fds, n, &r), 0);
	close_all(fds, n); /* the arena dups what it keeps */
	cr_expect(de_arena_readonly(r));
	cr_expect_eq(de_arena_nsegments(r), n);
	cr_expect_eq(de_arena_mapped_bytes(r), de_arena_mapped_bytes(a));
	cr_expect_eq(de_arena_reserve_bytes(r), de_arena_reserve_bytes(a));
	for (unsigned i = 0; i < n; i++) {
		cr_assert_eq(de_arena_segment(a, i, &sa), 0);
		cr_assert_eq(de_arena_segment(r, i, &sr), 0);
		cr_expect_eq(sr.offset, sa.offset);
		cr_expect_eq(sr.bytes, sa.bytes);
		cr_expect_eq(sr.pages, sa.pages);
	}
	cr_expect_eq(check(r, off[0], 5000, 21), UINT64_MAX);
	cr_expect_eq(check(r, off[1], 70000, 22), UINT64_MAX);
	/* Later writes by the owner are visible (same pages). */
	fill(a, off[0], 5000, 23);
	cr_expect_eq(check(r, off[0], 5000, 23), UINT64_MAX);

	/* Read-only: no allocation, no writable fd. */
	cr_expect_eq(de_arena_alloc(r, 64, 64, &x), -EROFS);
	cr_expect_lt(de_arena_segment_fd(r, 0, false), 0);

	/* The owner grows; the reader sees the new segments only after refresh. */
	nseg_before = de_arena_nsegments(a);
	grow_to(a, nseg_before + 2, 600 * 1024);
	cr_assert_eq(de_arena_alloc(a, 3 * MiB, 64, &late), 0);
	fill(a, late, 3 * MiB, 24);
	cr_expect_eq(de_arena_nsegments(r), n);
	cr_expect_not(de_arena_valid(r, late, 3 * MiB));
	cr_expect_eq(de_arena_refresh(r, failing_source, NULL), -EIO);
	cr_assert_eq(de_arena_refresh(r, fd_source, a), 0);
	cr_expect_eq(de_arena_nsegments(r), de_arena_nsegments(a));
	cr_expect_eq(de_arena_mapped_bytes(r), de_arena_mapped_bytes(a));
	cr_expect(de_arena_valid(r, late, 3 * MiB));
	cr_expect_eq(check(r, late, 3 * MiB, 24), UINT64_MAX);
	cr_expect_eq(check(r, off[1], 70000, 22), UINT64_MAX);
	/* Nothing new: refresh is a no-op. */
	cr_expect_eq(de_arena_refresh(r, fd_source, a), 0);
	cr_expect_eq(de_arena_nsegments(r), de_arena_nsegments(a));

	/* A prefix of the fds is fine too: refresh fetches the rest. (It has to be: a
	 * client that got N fds may attach after the owner published segment N+1.) */
	de_arena_destroy(r);
	r = NULL;
	fds[0] = de_arena_segment_fd(a, 0, true);
	cr_assert_geq(fds[0], 0);
	cr_assert_eq(de_arena_attach_ro(fds, 1, &r), 0);
	close(fds[0]);
	cr_expect_eq(de_arena_nsegments(r), 1);
	cr_assert_eq(de_arena_refresh(r, fd_source, a), 0);
	cr_expect_eq(de_arena_nsegments(r), de_arena_nsegments(a));
	cr_expect_eq(check(r, late, 3 * MiB, 24), UINT64_MAX);
	de_arena_destroy(r);
	de_arena_destroy(a);
}

/* ---- a second process -------------------------------------------------- */

static sigjmp_buf segv_jmp;

static void on_segv(int sig)
{
	(void)sig;
	siglongjmp(segv_jmp, 1);
}

/* Try one write through p: 1 when it faulted (SIGSEGV or SIGBUS), 0 when it went
 * through, -1 when the handlers could not be set. */
static int write_faults(volatile uint8_t *p)
{
	struct sigaction sa = {0};

	sa.sa_handler = on_segv;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGSEGV, &sa, NULL) != 0 || sigaction(SIGBUS, &sa, NULL) != 0)
		return -1;
	if (sigsetjmp(segv_jmp, 1) != 0)
		return 1;
	p[0] = (uint8_t)(p[0] + 1);
	return 0;
}

/* Child: attach from the fds, check the bytes, try to write. Exit codes:
 * 0 ok, 10 attach failed, 11 bytes differ, 12 mprotect allowed writing,
 * 13 a write went through, 14 alloc did not say EROFS, 20 sigaction failed. */
static int child_reader(const int *fds, unsigned n, uint64_t off, uint64_t len)
{
	de_arena *r = NULL;
	uint8_t *p;
	uint64_t x;
	int code = 0, w;

	if (de_arena_attach_ro(fds, n, &r) != 0)
		return 10;
	p = de_arena_at(r, off);
	if (check(r, off, len, 31) != UINT64_MAX)
		code = 11;
	else if (de_arena_alloc(r, 64, 64, &x) != -EROFS)
		code = 14;
	/* mprotect needs a page-aligned start: the page holding p. */
	else if (mprotect((void *)((uintptr_t)p & ~(uintptr_t)4095), 4096,
			  PROT_READ | PROT_WRITE) == 0)
		code = 12;
	else if ((w = write_faults(p)) != 1)
		code = w < 0 ? 20 : 13;
	de_arena_destroy(r);
	return code;
}

Test(arena, forked_reader_reads_but_cannot_write)
{
	struct de_arena_config cfg = small_cfg(DE_PAGES_SMALL);
	de_arena *a = create_or_die(&cfg);
	int fds[DE_ARENA_MAX_SEGMENTS], status = 0;
	uint64_t off;
	unsigned n;
	pid_t pid;

	grow_to(a, 2, 700 * 1024);
	cr_assert_eq(de_arena_alloc(a, 100000, 64, &off), 0);
	fill(a, off, 100000, 31);
	n = ro_fds(a, fds, DE_ARENA_MAX_SEGMENTS);

	fflush(NULL);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0)
		_exit(child_reader(fds, n, off, 100000));
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_expect(WIFEXITED(status), "child died (signal %d)",
		  WIFSIGNALED(status) ? WTERMSIG(status) : 0);
	cr_expect_eq(WEXITSTATUS(status), 0,
		     "child code %d (10 attach, 11 bytes, 12 mprotect, 13 write, 14 alloc)",
		     WEXITSTATUS(status));
	/* The child's attempt left the bytes as they were. */
	cr_expect_eq(check(a, off, 100000, 31), UINT64_MAX);
	close_all(fds, n);
	de_arena_destroy(a);
}

/* ---- untrusted input --------------------------------------------------- */

static void expect_attach_fails(int fd, int want, const char *what)
{
	de_arena *r = (de_arena *)0x1;
	int got = de_arena_attach_ro(&fd, 1, &r);

	cr_expect_eq(got, want, "%s: attach_ro = %d (%s), want %d", what, got, strerror(-got),
		     want);
	if (got == 0)
		de_arena_destroy(r);
}

Test(arena, attach_ro_rejects_random_bytes)
{
	static uint8_t buf[4 * MiB];
	uint64_t s = 0x9e3779b97f4a7c15ull;
	int fd;

	for (size_t i = 0; i < sizeof(buf); i += 8) {
		s ^= s << 13, s ^= s >> 7, s ^= s << 17;
		memcpy(buf + i, &s, 8);
	}
	fd = memfd_with(buf, sizeof(buf), sizeof(buf));
	expect_attach_fails(fd, -EBADMSG, "4 MiB of random bytes");
	close(fd);
	fd = memfd_with(buf, 100, 100);
	expect_attach_fails(fd, -EBADMSG, "100 random bytes");
	close(fd);
	fd = memfd_with(buf, 0, 0);
	expect_attach_fails(fd, -EBADMSG, "empty memfd");
	close(fd);
	fd = memfd_with(buf, 0, 2 * MiB);
	expect_attach_fails(fd, -EBADMSG, "2 MiB of zeros");
	close(fd);
}

Test(arena, attach_ro_rejects_edited_headers)
{
	struct de_arena_config cfg = small_cfg(DE_PAGES_SMALL);
	de_arena *a, *r = NULL;
	struct de_segment_info si;
	uint8_t *copy;
	uint32_t v;
	uint64_t off;
	int fd;

	cfg.segment_bytes = 4 * MiB;
	a = create_or_die(&cfg);
	cr_assert_eq(de_arena_alloc(a, 4096, 64, &off), 0);
	fill(a, off, 4096, 41);
	cr_assert_eq(de_arena_segment(a, 0, &si), 0);
	cr_assert_eq(si.bytes, 4 * MiB);
	copy = malloc(si.bytes);
	cr_assert_not_null(copy);
	memcpy(copy, de_arena_at(a, 0), si.bytes);

	/* Control: an unmodified copy attaches and shows the bytes. */
	fd = memfd_with(copy, si.bytes, si.bytes);
	cr_assert_eq(de_arena_attach_ro(&fd, 1, &r), 0, "an exact copy must attach");
	cr_expect_eq(check(r, off, 4096, 41), UINT64_MAX);
	de_arena_destroy(r);
	close(fd);

	/* Magic changed. */
	copy[HDR_MAGIC_OFF] ^= 0x20;
	fd = memfd_with(copy, si.bytes, si.bytes);
	expect_attach_fails(fd, -EBADMSG, "magic changed");
	close(fd);
	copy[HDR_MAGIC_OFF] ^= 0x20;

	/* Layout version changed (to the next one and to garbage). */
	memcpy(&v, copy + HDR_VERSION_OFF, 4);
	v += 1;
	memcpy(copy + HDR_VERSION_OFF, &v, 4);
	fd = memfd_with(copy, si.bytes, si.bytes);
	expect_attach_fails(fd, -EPROTO, "version + 1");
	close(fd);
	v = 0xdeadbeef;
	memcpy(copy + HDR_VERSION_OFF, &v, 4);
	fd = memfd_with(copy, si.bytes, si.bytes);
	expect_attach_fails(fd, -EPROTO, "version garbage");
	close(fd);
	memcpy(copy + HDR_VERSION_OFF, de_arena_at(a, HDR_VERSION_OFF), 4);

	/* Segment 0 shorter than the header says: 2 MiB, 3 MiB, one page. */
	fd = memfd_with(copy, si.bytes, 2 * MiB);
	expect_attach_fails(fd, -EBADMSG, "segment 0 truncated to 2 MiB");
	close(fd);
	fd = memfd_with(copy, si.bytes, 3 * MiB);
	expect_attach_fails(fd, -EBADMSG, "segment 0 truncated to 3 MiB");
	close(fd);
	fd = memfd_with(copy, si.bytes, 4096);
	expect_attach_fails(fd, -EBADMSG, "segment 0 truncated to 4 KiB");
	close(fd);
	/* ... or longer. */
	fd = memfd_with(copy, si.bytes, 6 * MiB);
	expect_attach_fails(fd, -EBADMSG, "segment 0 longer than its header says");
	close(fd);

	/* Bytes of the first 4 KiB flipped one at a time (only the header region is copied,
	 * the rest of the memfd stays sparse): never a crash, and an attach that succeeds
	 * maps no more than the segment. */
	for (unsigned i = 0; i < 4096; i += 7) {
		de_arena *rr = NULL;
		int ret;

		copy[i] ^= 0xff;
		fd = memfd_with(copy, 64 * 1024, si.bytes);
		ret = de_arena_attach_ro(&fd, 1, &rr);
		if (ret == 0) {
			cr_expect_geq(de_arena_nsegments(rr), 1);
			cr_expect_leq(de_arena_mapped_bytes(rr), si.bytes);
			de_arena_destroy(rr);
		} else {
			cr_expect(ret == -EBADMSG || ret == -EPROTO, "byte %u: %d", i, ret);
		}
		close(fd);
		copy[i] ^= 0xff;
	}
	free(copy);
	de_arena_destroy(a);
}

Test(arena, attach_ro_rejects_mismatched_segments)
{
	struct de_arena_config cfg = small_cfg(DE_PAGES_SMALL);
	de_arena *a = create_or_die(&cfg), *r = (de_arena *)0x1;
	int fds[DE_ARENA_MAX_SEGMENTS], tmp, ret;
	unsigned n;

	grow_to(a, 3, 700 * 1024);
	n = ro_fds(a, fds, DE_ARENA_MAX_SEGMENTS);
	cr_assert_geq(n, 3);
	/* Segments 1 and 2 swapped: their sizes or offsets disagree with the header. */
	struct de_segment_info s1, s2;
	cr_assert_eq(de_arena_segment(a, 1, &s1), 0);
	cr_assert_eq(de_arena_segment(a, 2, &s2), 0);
	tmp = fds[1], fds[1] = fds[2], fds[2] = tmp;
	ret = de_arena_attach_ro(fds, n, &r);
	if (s1.bytes != s2.bytes)
		cr_expect_eq(ret, -EBADMSG, "swapped segments of different sizes: %d", ret);
	if (ret == 0)
		de_arena_destroy(r);
	tmp = fds[1], fds[1] = fds[2], fds[2] = tmp;
	/* Segment 0 given twice. */
	tmp = fds[1];
	fds[1] = fds[0];
	r = (de_arena *)0x1;
	ret = de_arena_attach_ro(fds, n, &r);
	if (s1.bytes != cfg.segment_bytes)
		cr_expect_eq(ret, -EBADMSG, "segment 0 as segment 1: %d", ret);
	if (ret == 0)
		de_arena_destroy(r);
	fds[1] = tmp;
	close_all(fds, n);
	de_arena_destroy(a);
}

Test(arena, attach_ro_bad_arguments)
{
	de_arena *r = NULL;
	int fd = -1;

	cr_expect_eq(de_arena_attach_ro(NULL, 1, &r), -EINVAL);
	cr_expect_eq(de_arena_attach_ro(&fd, 0, &r), -EINVAL);
	cr_expect_null(r);
	cr_expect_lt(de_arena_attach_ro(&fd, 1, &r), 0); /* a closed fd: an error, no crash */
	cr_expect_null(r);
}

/* ---- page kinds -------------------------------------------------------- */

Test(arena, forced_thp)
{
	struct de_arena_config cfg = small_cfg(DE_PAGES_THP);
	char mode[32];
	de_arena *a;
	uint64_t off;
	const char *note;

	shmem_thp_mode(mode, sizeof(mode));
	a = create_or_die(&cfg);
	note = de_arena_pages_note(a);
	cr_assert_not_null(note);
	if (!strcmp(mode, "never") || !strcmp(mode, "deny")) {
		cr_expect_eq(de_arena_pages(a), DE_PAGES_SMALL,
			     "shmem_enabled=[%s] but arena reports %s", mode,
			     de_pages_name(de_arena_pages(a)));
		cr_expect_not_null(strcasestr(note, "thp"), "note does not mention THP: '%s'", note);
	} else {
		cr_expect_eq(de_arena_pages(a), DE_PAGES_THP, "shmem_enabled=[%s], arena: %s (%s)",
			     mode, de_pages_name(de_arena_pages(a)), note);
	}
	/* Works either way, through growth. */
	cr_assert_eq(de_arena_alloc(a, MiB, 4096, &off), 0);
	fill(a, off, MiB, 51);
	grow_to(a, 3, 700 * 1024);
	cr_expect_eq(check(a, off, MiB, 51), UINT64_MAX);
	de_arena_destroy(a);
}

Test(arena, auto_without_hugepages)
{
	struct de_arena_config cfg = small_cfg(DE_PAGES_AUTO);
	struct de_segment_info si;
	de_arena *a;
	uint64_t off;

	if (hugepages_available() > 0)
		cr_skip_test("2 MiB huge pages are free here: AUTO would rightly take them");
	a = create_or_die(&cfg);
	cr_expect(de_arena_pages(a) == DE_PAGES_THP || de_arena_pages(a) == DE_PAGES_SMALL,
		  "AUTO without huge pages reported %s", de_pages_name(de_arena_pages(a)));
	cr_expect_gt(strlen(de_arena_pages_note(a)), 0);
	cr_assert_eq(de_arena_alloc(a, MiB, 64, &off), 0);
	fill(a, off, MiB, 61);
	grow_to(a, 3, 700 * 1024);
	for (unsigned i = 0; i < de_arena_nsegments(a); i++) {
		cr_assert_eq(de_arena_segment(a, i, &si), 0);
		cr_expect_neq(si.pages, DE_PAGES_HUGETLB, "segment %u", i);
		cr_expect_neq(si.pages, DE_PAGES_AUTO, "segment %u reports AUTO", i);
	}
	cr_expect_eq(check(a, off, MiB, 61), UINT64_MAX);
	de_arena_destroy(a);
}

/* A charge hook's ledger: what it let through, and a limit. */
struct ledger {
	uint64_t charged, limit;
	unsigned asked, given_back;
};

static int charge(void *ctx, uint64_t bytes, bool give_back)
{
	struct ledger *l = ctx;
	if (give_back) {
		l->given_back++;
		l->charged -= bytes;
		return 0;
	}
	l->asked++;
	if (l->charged + bytes > l->limit)
		return -EDQUOT;
	l->charged += bytes;
	return 0;
}

Test(arena, charge_hook_refuses_growth)
{
	struct de_arena_config cfg = small_cfg(DE_PAGES_SMALL);
	de_arena *a = create_or_die(&cfg);
	struct ledger l = { .limit = 6 * MiB };
	de_arena_set_charge_hook(a, charge, &l);
	uint64_t off, first = de_arena_mapped_bytes(a);
	int r = 0;
	for (int i = 0; i < 64 && r == 0; i++)
		r = de_arena_alloc(a, MiB, 64, &off);
	cr_expect_eq(r, -EDQUOT, "the hook's error is the allocation's");
	cr_expect_gt(l.asked, 1, "asked for every new segment");
	cr_expect_leq(l.charged, l.limit);
	/* the mapped bytes past the first segment are exactly what the hook let through */
	cr_expect_eq(de_arena_mapped_bytes(a) - first, l.charged);
	cr_expect_eq(l.given_back, 0);
	/* once the hook lets it, the arena grows again */
	l.limit = 64 * MiB;
	cr_expect_eq(de_arena_alloc(a, MiB, 64, &off), 0);
	cr_expect_eq(de_arena_mapped_bytes(a) - first, l.charged);
	de_arena_destroy(a);
}

Test(arena, forced_hugetlb_without_pool)
{
	struct de_arena_config cfg = small_cfg(DE_PAGES_HUGETLB);
	de_arena *a = (de_arena *)0x1;
	long avail = hugepages_available();

	/* A first segment larger than the free pool (and one when there is no pool). */
	cfg.segment_bytes = (uint64_t)(avail + 1) * 2 * MiB;
	cfg.reserve_bytes = cfg.segment_bytes + 64 * MiB;
	cr_expect_eq(de_arena_create(&cfg, &a), -ENOMEM);
	cr_expect_null(a);
}

Test(arena, forced_hugetlb)
{
	struct de_arena_config cfg = small_cfg(DE_PAGES_HUGETLB);
	struct de_segment_info si;
	de_arena *a;
	uint64_t off;

	skip_without_hugepages();
	a = create_or_die(&cfg);
	cr_expect_eq(de_arena_pages(a), DE_PAGES_HUGETLB, "note: %s", de_arena_pages_note(a));
	cr_assert_eq(de_arena_segment(a, 0, &si), 0);
	cr_expect_eq(si.pages, DE_PAGES_HUGETLB);
	cr_assert_eq(de_arena_alloc(a, MiB, 64, &off), 0);
	fill(a, off, MiB, 71);
	grow_to(a, 2, 700 * 1024); /* 2 + 2 MiB: fits in 16 free pages */
	cr_assert_eq(de_arena_segment(a, 1, &si), 0);
	cr_expect_eq(si.pages, DE_PAGES_HUGETLB);
	cr_expect_eq(check(a, off, MiB, 71), UINT64_MAX);
	de_arena_destroy(a);
}

Test(arena, auto_growth_past_the_pool_falls_back)
{
	struct de_arena_config cfg = small_cfg(DE_PAGES_AUTO);
	struct de_segment_info s0, s1;
	de_arena *a;
	uint64_t off, keep, big;
	long avail;

	skip_without_hugepages();
	avail = hugepages_available();
	big = (uint64_t)(avail + 4) * 2 * MiB; /* more than the whole free pool */
	cfg.reserve_bytes = big + 256 * MiB;
	a = create_or_die(&cfg);
	cr_assert_eq(de_arena_segment(a, 0, &s0), 0);
	cr_assert_eq(s0.pages, DE_PAGES_HUGETLB, "AUTO with %ld free huge pages: %s", avail,
		     de_arena_pages_note(a));
	cr_assert_eq(de_arena_alloc(a, 4096, 64, &keep), 0);
	fill(a, keep, 4096, 81);
	cr_assert_eq(de_arena_alloc(a, big, 64, &off), 0);
	cr_assert_geq(de_arena_nsegments(a), 2);
	cr_assert_eq(de_arena_segment(a, de_arena_nsegments(a) - 1, &s1), 0);
	cr_expect(s1.pages == DE_PAGES_THP || s1.pages == DE_PAGES_SMALL,
		  "segment beyond the pool reports %s", de_pages_name(s1.pages));
	cr_assert_eq(de_arena_segment(a, 0, &s0), 0);
	cr_expect_eq(s0.pages, DE_PAGES_HUGETLB, "the old segment changed kind");
	cr_expect_eq(de_arena_pages(a), DE_PAGES_HUGETLB);
	/* Touch a little of the big chunk (not all of it: it may be gigabytes). */
	memset(de_arena_at(a, off), 0x5a, MiB);
	memset((char *)de_arena_at(a, off) + big - MiB, 0x5a, MiB);
	cr_expect_eq(check(a, keep, 4096, 81), UINT64_MAX);
	de_arena_destroy(a);
}
