/*
 * arena.c — memfd-backed shared memory that grows by segments and never moves.
 *
 * Owns: the virtual reservation, the segment memfds and their mappings, the arena
 * header (segment table + root offset), the bump allocator, the page-kind fallback
 * (hugetlb -> THP -> 4 KiB), and the call of its creator's bind function on each new
 * segment (de_arena_create in shm/numa.c passes de_numa_bind; this file itself links
 * neither hwloc nor libnuma, so that libdynemb, which only attaches, does not either).
 * Never: moves or frees bytes while the arena lives; trusts a header it did not write
 * (read-only attaches validate every field before mapping anything).
 * Callers: shm/table.c (row chunks, index segments), later the daemon, which passes the
 * segment fds to clients.
 *
 * Address space. The arena reserves reserve_bytes of virtual memory (PROT_NONE,
 * MAP_NORESERVE, 2 MiB aligned) once; segment i is a memfd mapped MAP_FIXED at
 * base + seg[i].offset. Offsets are contiguous: seg[i].offset = seg[i-1].offset +
 * seg[i-1].bytes, so offset -> pointer is base + off and offset checks are one compare
 * against the mapped end. A reader in another process makes its own reservation of the
 * same size and maps the same fds read-only: the base differs, the offsets do not.
 *
 * Header (at offset 0 of segment 0, little-endian, 16448 bytes):
 *   0   u64 magic        "DEARENA1" (0x31414e4552414544)
 *   8   u32 version      1
 *   12  u32 hdr_bytes    16448
 *   16  u64 reserve      bytes of virtual space every mapper reserves
 *   24  u32 nsegs        segments published; release-stored by the owner after the
 *                        entry is written, acquire-loaded by readers (refresh)
 *   28  u32 pad
 *   32  u64 used         bytes handed out (informational)
 *   40  u64 root         offset of the user's root object (the table header), 0 = none
 *   48  u64 pad[2]
 *   64  seg[512], 32 bytes each: u64 offset, u64 bytes, u32 pages (enum de_pages),
 *       i32 numa node, u64 pad
 * Allocation starts at DE_ARENA_HDR_SPAN (20480, page aligned).
 *
 * Sizing. reserve_bytes is the arena's limit, not only its address space: segments never
 * go past it (the last one is cut to what the allocation needs), and an allocation that
 * does not fit is -ENOSPC, so a caller that sizes the reservation from a memory budget
 * bounds what the arena can ever map. A charge hook (de_arena_set_charge_hook) may
 * refuse a segment before it is mapped (the daemon's per-uid and host quotas).
 *
 * Segment memfds are sealed F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE |
 * F_SEAL_SEAL once the owner's own writable mapping exists, and their mode is 0400:
 *   - nobody holding an fd, the owner included, can truncate one under a mapping (which
 *     would SIGBUS);
 *   - nobody can write through any fd or any new mapping: pwrite, mmap(PROT_WRITE,
 *     MAP_SHARED) and mprotect of a shared mapping to writable fail with EPERM, even on
 *     an fd reopened O_RDWR through /proc/self/fd (root can, the seal stops it there);
 *     only the mapping made before the seal writes, and it never leaves the owner;
 *   - a client of another uid cannot reopen or fchmod the fd (not its owner), and the
 *     owner's uid cannot reopen it O_RDWR (no write bit).
 * The seal is not optional: a kernel that refuses F_SEAL_FUTURE_WRITE (Linux < 5.1; the
 * daemon needs 5.16 for futex_waitv anyway) fails the segment (-ENOTSUP), hugetlb and
 * shmem alike (Linux accepts it on both: hugetlbfs checks it in its mmap and has no
 * write). Readers never write either: they map PROT_READ.
 */
#include "de_shm.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010 /* linux/fcntl.h, Linux 5.1 */
#endif
#define SEG_SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL)
#define SEG_MODE 0400 /* read for the owner's uid; the fds say who may do what */

#ifndef MFD_HUGE_2MB
#define MFD_HUGE_2MB (21u << 26) /* log2(2 MiB) << MFD_HUGE_SHIFT, from linux/memfd.h */
#endif

#define ARENA_MAGIC 0x31414e4552414544ull /* "DEARENA1" little-endian */
#define ARENA_VERSION 1u
#define ARENA_HDR_SPAN 20480u
#define ARENA_MAX_RESERVE (1ull << 46) /* 64 TiB */
#define ARENA_DEFAULT_RESERVE (64ull << 30)
#define ARENA_DEFAULT_SEGMENT (32ull << 20)
#define ARENA_DEFAULT_MAX_SEGMENT (1ull << 30)

struct arena_seg {
	uint64_t offset;
	uint64_t bytes;
	uint32_t pages;
	int32_t node;
	uint64_t pad;
};

struct arena_hdr {
	uint64_t magic;
	uint32_t version;
	uint32_t hdr_bytes;
	uint64_t reserve;
	uint32_t nsegs;
	uint32_t pad0;
	uint64_t used;
	uint64_t root;
	uint64_t pad1[2];
	struct arena_seg seg[DE_ARENA_MAX_SEGMENTS];
};

_Static_assert(sizeof(struct arena_seg) == 32, "segment entry is 32 bytes");
_Static_assert(offsetof(struct arena_hdr, nsegs) == 24, "layout");
_Static_assert(offsetof(struct arena_hdr, root) == 40, "layout");
_Static_assert(offsetof(struct arena_hdr, seg) == 64, "layout");
_Static_assert(sizeof(struct arena_hdr) == 16448, "header is 16448 bytes");
_Static_assert(sizeof(struct arena_hdr) <= ARENA_HDR_SPAN, "header fits its span");

struct de_arena {
	char *base;            /* start of the reservation (2 MiB aligned) */
	void *map;             /* what mmap returned for the reservation */
	uint64_t map_len;
	uint64_t reserve;
	bool ro;
	struct arena_hdr *hdr;
	unsigned nmapped;      /* segments mapped in this process */
	uint64_t mapped;       /* end offset of the last mapped segment; atomic */
	int fds[DE_ARENA_MAX_SEGMENTS];
	struct de_segment_info info[DE_ARENA_MAX_SEGMENTS];
	/* owner only */
	pthread_mutex_t lock;  /* allocation and growth */
	uint64_t used;
	struct de_arena_config cfg;
	int node;              /* resolved NUMA node or DE_NUMA_NONE */
	de_bind_fn bind;       /* binds each new segment to node (when node >= 0) */
	de_grow_hook hook;
	void *hook_ctx;
	de_charge_hook charge;
	void *charge_ctx;
	char note[320];
#ifdef DE_FAULT_INJECTION
	long fail_countdown;   /* > 0: allocations until the injected failure */
	bool fail_seal;        /* the next segment's F_ADD_SEALS fails as on an old kernel */
#endif
};

static uint64_t round_up(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }

const char *de_pages_name(enum de_pages p)
{
	switch (p) {
	case DE_PAGES_AUTO: return "auto";
	case DE_PAGES_HUGETLB: return "hugetlb-2MiB";
	case DE_PAGES_THP: return "thp";
	case DE_PAGES_SMALL: return "4KiB";
	}
	return "unknown";
}

/* The selected word of /sys/kernel/mm/transparent_hugepage/shmem_enabled, or "". */
static void shmem_thp_mode(char *out, size_t cap)
{
	char buf[256] = "";
	out[0] = '\0';
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/shmem_enabled", "re");
	if (!f)
		return;
	if (fgets(buf, sizeof buf, f)) {
		char *l = strchr(buf, '['), *r = l ? strchr(l, ']') : NULL;
		if (l && r && (size_t)(r - l - 1) < cap) {
			memcpy(out, l + 1, (size_t)(r - l - 1));
			out[r - l - 1] = '\0';
		}
	}
	fclose(f);
}

static bool shmem_thp_works(char *mode, size_t cap)
{
	shmem_thp_mode(mode, cap);
	return !strcmp(mode, "always") || !strcmp(mode, "within_size") ||
	       !strcmp(mode, "advise") || !strcmp(mode, "force");
}

/* Put the PROT_NONE reservation back over [p, p+len) after a failed MAP_FIXED. */
static void rereserve(void *p, uint64_t len)
{
	(void)mmap(p, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
}

/*
 * Create segment memory of `bytes` at base + off, trying the kinds `want` allows.
 * out: fd and the kind obtained. Appends what happened to a->note.
 */
static int seg_make(struct de_arena *a, uint64_t off, uint64_t bytes, enum de_pages want,
		    int *fd_out, enum de_pages *got, char *note, size_t note_cap)
{
	char *addr = a->base + off;
	char thp[32];
	size_t nl = strlen(note);
	int err = -ENOMEM;
	const char *name = a->cfg.name ? a->cfg.name : "dynemb-arena";

	if (want == DE_PAGES_AUTO || want == DE_PAGES_HUGETLB) {
		int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_HUGETLB | MFD_HUGE_2MB);
		if (fd >= 0) {
			if (ftruncate(fd, (off_t)bytes) == 0 &&
			    mmap(addr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) == addr) {
				*fd_out = fd;
				*got = DE_PAGES_HUGETLB;
				snprintf(note + nl, note_cap - nl, "%shugetlb: %" PRIu64 " MiB of 2 MiB pages",
					 nl ? "; " : "", bytes >> 20);
				return 0;
			}
			err = -errno;
			rereserve(addr, bytes);
			close(fd);
		} else {
			err = -errno;
		}
		if (want == DE_PAGES_HUGETLB) {
			snprintf(note + nl, note_cap - nl,
				 "%shugetlb: %" PRIu64 " MiB not available (%s)", nl ? "; " : "",
				 bytes >> 20, strerror(-err));
			return -ENOMEM;
		}
		snprintf(note + nl, note_cap - nl, "%shugetlb: %s", nl ? "; " : "",
			 strerror(-err));
		nl = strlen(note);
	}

	int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)bytes) != 0 ||
	    mmap(addr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) != addr) {
		err = -errno;
		rereserve(addr, bytes);
		close(fd);
		return err;
	}
	*fd_out = fd;
	*got = DE_PAGES_SMALL;
	if (want == DE_PAGES_SMALL) {
		snprintf(note + nl, note_cap - nl, "%s4KiB pages as asked", nl ? "; " : "");
		return 0;
	}
	if (shmem_thp_works(thp, sizeof thp) && madvise(addr, bytes, MADV_HUGEPAGE) == 0) {
		*got = DE_PAGES_THP;
		snprintf(note + nl, note_cap - nl, "%sthp: MADV_HUGEPAGE, shmem_enabled=%s",
			 nl ? "; " : "", thp);
	} else {
		snprintf(note + nl, note_cap - nl,
			 "%sthp: unavailable (shmem_enabled=%s), 4KiB pages", nl ? "; " : "",
			 thp[0] ? thp : "unknown");
	}
	return 0;
}

/* Add segment number a->nmapped of at least `need` bytes. Owner only, under lock. */
static int seg_add(struct de_arena *a, uint64_t need)
{
	unsigned i = a->nmapped;
	if (i >= DE_ARENA_MAX_SEGMENTS)
		return -ENOSPC;
	uint64_t off = a->mapped;
	uint64_t bytes;
	if (i == 0) {
		bytes = need;
	} else {
		bytes = off < a->cfg.max_segment_bytes ? off : a->cfg.max_segment_bytes;
		if (bytes < a->cfg.segment_bytes)
			bytes = a->cfg.segment_bytes;
		if (bytes < need)
			bytes = need;
	}
	bytes = round_up(bytes, DE_ARENA_ALIGN);
	if (off + bytes > a->reserve) {
		bytes = round_up(need, DE_ARENA_ALIGN);
		if (off + bytes > a->reserve)
			return -ENOSPC; /* the reservation is the arena's size limit */
	}
	if (i && a->charge) {
		int cerr = a->charge(a->charge_ctx, bytes, false);
		if (cerr)
			return cerr;
	}

	int fd = -1;
	enum de_pages got = DE_PAGES_SMALL;
	char later[sizeof a->note] = "";
	/* The note tells how the first segment came to be; later segments report their
	 * kind through de_arena_segment (the note is never rewritten: readers hold it). */
	int err = seg_make(a, off, bytes, a->cfg.pages, &fd, &got, i ? later : a->note,
			   sizeof a->note);
	if (err) {
		if (i && a->charge)
			a->charge(a->charge_ctx, bytes, true);
		return err;
	}
	/* after seg_make's writable mapping (the owner's, the only one there will be) */
	int sealed = fcntl(fd, F_ADD_SEALS, SEG_SEALS);
#ifdef DE_FAULT_INJECTION
	if (a->fail_seal) {
		a->fail_seal = false;
		sealed = -1;
		errno = EINVAL;
	}
#endif
	if (sealed != 0) {
		/* EINVAL: a kernel without F_SEAL_FUTURE_WRITE; clients could write */
		err = errno == EINVAL ? -ENOTSUP : -errno;
		goto fail;
	}
	if (fchmod(fd, SEG_MODE) != 0) {
		err = -errno;
		goto fail;
	}
	if (a->node >= 0 && a->bind) {
		err = a->bind(a->base + off, bytes, a->node);
		if (err)
			goto fail;
	}
	a->fds[i] = fd;
	a->info[i] = (struct de_segment_info){ .offset = off, .bytes = bytes, .pages = got,
					       .numa_node = a->node };
	if (i == 0) {
		a->hdr = (struct arena_hdr *)a->base;
		a->hdr->magic = ARENA_MAGIC;
		a->hdr->version = ARENA_VERSION;
		a->hdr->hdr_bytes = sizeof(struct arena_hdr);
		a->hdr->reserve = a->reserve;
	}
	a->hdr->seg[i] = (struct arena_seg){ .offset = off, .bytes = bytes, .pages = got,
					     .node = a->node };
	__atomic_store_n(&a->nmapped, i + 1, __ATOMIC_RELEASE);
	__atomic_store_n(&a->mapped, off + bytes, __ATOMIC_RELEASE);
	/* release: publishes seg[i]; pairs with the acquire in de_arena_refresh */
	__atomic_store_n(&a->hdr->nsegs, i + 1, __ATOMIC_RELEASE);
	if (a->hook)
		a->hook(a->hook_ctx, a, i);
	return 0;
fail:
	munmap(a->base + off, bytes);
	rereserve(a->base + off, bytes);
	close(fd);
	if (i && a->charge)
		a->charge(a->charge_ctx, bytes, true);
	return err;
}

static int reserve_va(struct de_arena *a, uint64_t reserve)
{
	uint64_t len = reserve + DE_ARENA_ALIGN;
	void *p = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return -errno;
	a->map = p;
	a->map_len = len;
	a->base = (char *)round_up((uintptr_t)p, DE_ARENA_ALIGN);
	a->reserve = reserve;
	return 0;
}

static struct de_arena *arena_new(void)
{
	struct de_arena *a = calloc(1, sizeof *a);
	if (!a)
		return NULL;
	for (unsigned i = 0; i < DE_ARENA_MAX_SEGMENTS; i++)
		a->fds[i] = -1;
	pthread_mutex_init(&a->lock, NULL);
	a->node = DE_NUMA_NONE;
	return a;
}

int de_arena_create_placed(const struct de_arena_config *cfg, int node, de_bind_fn bind,
			   de_arena **out)
{
	if (!cfg || !out || node < DE_NUMA_NONE || node == DE_NUMA_AUTO)
		return -EINVAL;
	*out = NULL;
	struct de_arena_config c = *cfg;
	if (c.pages > DE_PAGES_SMALL || c.numa_node < DE_NUMA_NONE)
		return -EINVAL;
	if (!c.reserve_bytes)
		c.reserve_bytes = ARENA_DEFAULT_RESERVE;
	if (!c.segment_bytes)
		c.segment_bytes = ARENA_DEFAULT_SEGMENT;
	if (!c.max_segment_bytes)
		c.max_segment_bytes = ARENA_DEFAULT_MAX_SEGMENT;
	c.reserve_bytes = round_up(c.reserve_bytes, DE_ARENA_ALIGN);
	c.segment_bytes = round_up(c.segment_bytes, DE_ARENA_ALIGN);
	c.max_segment_bytes = round_up(c.max_segment_bytes, DE_ARENA_ALIGN);
	if (c.reserve_bytes > ARENA_MAX_RESERVE || c.segment_bytes > c.reserve_bytes)
		return -EINVAL;
	c.name = NULL; /* not kept: the caller's string may not outlive us */

	struct de_arena *a = arena_new();
	if (!a)
		return -ENOMEM;
	a->cfg = c;
	int err = reserve_va(a, c.reserve_bytes);
	if (err)
		goto fail;
	a->node = node;
	a->bind = bind;
	a->cfg.name = cfg->name;
	err = seg_add(a, c.segment_bytes);
	a->cfg.name = NULL;
	if (err)
		goto fail;
	a->used = ARENA_HDR_SPAN;
	a->hdr->used = a->used;
	*out = a;
	return 0;
fail:
	de_arena_destroy(a);
	return err;
}

/* Check the published segment entries [from, n) against the reservation. */
static int check_entries(const struct arena_hdr *h, uint64_t reserve, unsigned from, unsigned n,
			 uint64_t prev_end)
{
	for (unsigned i = from; i < n; i++) {
		struct arena_seg s;
		memcpy(&s, (const void *)&h->seg[i], sizeof s); /* one copy, then check it */
		if (s.offset != prev_end || !s.bytes || s.bytes % DE_ARENA_ALIGN ||
		    s.bytes > reserve || s.offset > reserve - s.bytes ||
		    s.pages < DE_PAGES_HUGETLB || s.pages > DE_PAGES_SMALL)
			return -EBADMSG;
		prev_end = s.offset + s.bytes;
	}
	return 0;
}

/* Map fd read-only as segment i (whose entry was checked). Takes ownership of fd. */
static int map_ro(struct de_arena *a, unsigned i, int fd)
{
	struct arena_seg s;
	memcpy(&s, (const void *)&a->hdr->seg[i], sizeof s);
	struct stat st;
	if (fstat(fd, &st) != 0 || (uint64_t)st.st_size != s.bytes || s.offset != a->mapped) {
		close(fd);
		return -EBADMSG;
	}
	if (mmap(a->base + s.offset, s.bytes, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0) !=
	    a->base + s.offset) {
		int err = -errno;
		rereserve(a->base + s.offset, s.bytes);
		close(fd);
		return err;
	}
	a->fds[i] = fd;
	a->info[i] = (struct de_segment_info){ .offset = s.offset, .bytes = s.bytes,
					       .pages = (enum de_pages)s.pages, .numa_node = s.node };
	__atomic_store_n(&a->nmapped, i + 1, __ATOMIC_RELEASE);
	__atomic_store_n(&a->mapped, s.offset + s.bytes, __ATOMIC_RELEASE);
	return 0;
}

int de_arena_attach_ro(const int *fds, unsigned nfds, de_arena **out)
{
	if (!fds || !nfds || !out || nfds > DE_ARENA_MAX_SEGMENTS)
		return -EINVAL;
	*out = NULL;
	struct stat st;
	if (fstat(fds[0], &st) != 0)
		return -errno;
	if ((uint64_t)st.st_size < sizeof(struct arena_hdr))
		return -EBADMSG;

	/* Read the fixed part of the header to learn the reservation size (pread, not a
	 * mapping: a hugetlb fd cannot be mapped or unmapped in pieces under 2 MiB). */
	struct arena_hdr tmp;
	if (pread(fds[0], &tmp, offsetof(struct arena_hdr, seg), 0) !=
	    (ssize_t)offsetof(struct arena_hdr, seg))
		return -EBADMSG;
	uint64_t magic = tmp.magic, reserve = tmp.reserve;
	uint32_t version = tmp.version, hdr_bytes = tmp.hdr_bytes;
	if (magic != ARENA_MAGIC)
		return -EBADMSG;
	if (version != ARENA_VERSION)
		return -EPROTO;
	if (hdr_bytes != sizeof(struct arena_hdr) || !reserve || reserve % DE_ARENA_ALIGN ||
	    reserve > ARENA_MAX_RESERVE)
		return -EBADMSG;

	struct de_arena *a = arena_new();
	if (!a)
		return -ENOMEM;
	a->ro = true;
	int err = reserve_va(a, reserve);
	if (err)
		goto fail;
	/* Map segment 0 alone first: its header says what the others are. */
	a->hdr = (struct arena_hdr *)a->base;
	struct arena_seg s0 = { .offset = 0, .bytes = (uint64_t)st.st_size };
	if (s0.bytes % DE_ARENA_ALIGN || s0.bytes > reserve) {
		err = -EBADMSG;
		goto fail;
	}
	if (mmap(a->base, s0.bytes, PROT_READ, MAP_SHARED | MAP_FIXED, fds[0], 0) != a->base) {
		err = -errno;
		goto fail;
	}
	a->mapped = 0;
	unsigned n = __atomic_load_n(&a->hdr->nsegs, __ATOMIC_ACQUIRE);
	if (n < 1 || n > DE_ARENA_MAX_SEGMENTS || a->hdr->reserve != reserve) {
		err = -EBADMSG;
		goto fail;
	}
	if (n > nfds)
		n = nfds;
	err = check_entries(a->hdr, reserve, 0, n, 0);
	if (err)
		goto fail;
	for (unsigned i = 0; i < n; i++) {
		int fd = fcntl(fds[i], F_DUPFD_CLOEXEC, 0);
		if (fd < 0) {
			err = -errno;
			goto fail;
		}
		err = map_ro(a, i, fd);
		if (err)
			goto fail;
	}
	*out = a;
	return 0;
fail:
	de_arena_destroy(a);
	return err;
}

int de_arena_refresh(de_arena *a, de_fd_source src, void *ctx)
{
	if (!a || !a->ro || !src)
		return -EINVAL;
	/* acquire: pairs with the release of nsegs in seg_add; entries below it are written */
	unsigned n = __atomic_load_n(&a->hdr->nsegs, __ATOMIC_ACQUIRE);
	if (n > DE_ARENA_MAX_SEGMENTS || n < a->nmapped)
		return -EBADMSG;
	int err = check_entries(a->hdr, a->reserve, a->nmapped, n, a->mapped);
	if (err)
		return err;
	for (unsigned i = a->nmapped; i < n; i++) {
		int fd = src(ctx, i);
		if (fd < 0)
			return fd;
		err = map_ro(a, i, fd);
		if (err)
			return err;
	}
	return 0;
}

void de_arena_set_grow_hook(de_arena *a, de_grow_hook fn, void *ctx)
{
	pthread_mutex_lock(&a->lock);
	a->hook = fn;
	a->hook_ctx = ctx;
	pthread_mutex_unlock(&a->lock);
}

void de_arena_set_charge_hook(de_arena *a, de_charge_hook fn, void *ctx)
{
	pthread_mutex_lock(&a->lock);
	a->charge = fn;
	a->charge_ctx = ctx;
	pthread_mutex_unlock(&a->lock);
}

void de_arena_destroy(de_arena *a)
{
	if (!a)
		return;
	if (a->map)
		munmap(a->map, a->map_len);
	for (unsigned i = 0; i < DE_ARENA_MAX_SEGMENTS; i++)
		if (a->fds[i] >= 0)
			close(a->fds[i]);
	pthread_mutex_destroy(&a->lock);
	free(a);
}

int de_arena_alloc(de_arena *a, uint64_t bytes, uint64_t align, uint64_t *off)
{
	if (!a || !off || !bytes || !align || (align & (align - 1)) || align > DE_ARENA_ALIGN)
		return -EINVAL;
	if (a->ro)
		return -EROFS;
	if (bytes > a->reserve)
		return -ENOSPC;
	pthread_mutex_lock(&a->lock);
#ifdef DE_FAULT_INJECTION
	if (a->fail_countdown > 0 && --a->fail_countdown == 0) {
		pthread_mutex_unlock(&a->lock);
		return -ENOMEM;
	}
#endif
	uint64_t at = round_up(a->used, align);
	int err = 0;
	if (at + bytes > a->mapped) {
		uint64_t start = a->mapped;
		err = seg_add(a, bytes);
		at = start; /* segment starts are 2 MiB aligned */
	}
	if (!err) {
		a->used = at + bytes;
		__atomic_store_n(&a->hdr->used, a->used, __ATOMIC_RELAXED);
		*off = at;
	}
	pthread_mutex_unlock(&a->lock);
	return err;
}

#ifdef DE_FAULT_INJECTION
long de_arena_fail_alloc(de_arena *a, long nth)
{
	pthread_mutex_lock(&a->lock);
	long left = a->fail_countdown;
	a->fail_countdown = nth > 0 ? nth : 0;
	pthread_mutex_unlock(&a->lock);
	return left;
}

void de_arena_fail_seal(de_arena *a)
{
	pthread_mutex_lock(&a->lock);
	a->fail_seal = true;
	pthread_mutex_unlock(&a->lock);
}
#endif

void *de_arena_at(const de_arena *a, uint64_t off) { return a->base + off; }

bool de_arena_valid(const de_arena *a, uint64_t off, uint64_t len)
{
	uint64_t end = __atomic_load_n(&a->mapped, __ATOMIC_ACQUIRE);
	return off <= end && len <= end - off;
}

bool de_arena_readonly(const de_arena *a) { return a->ro; }
uint64_t de_arena_reserve_bytes(const de_arena *a) { return a->reserve; }
unsigned de_arena_nsegments(const de_arena *a) { return __atomic_load_n(&a->nmapped, __ATOMIC_ACQUIRE); }
uint64_t de_arena_mapped_bytes(const de_arena *a) { return __atomic_load_n(&a->mapped, __ATOMIC_ACQUIRE); }

uint64_t de_arena_used_bytes(const de_arena *a)
{
	return __atomic_load_n(&a->hdr->used, __ATOMIC_RELAXED);
}

int de_arena_segment(const de_arena *a, unsigned i, struct de_segment_info *out)
{
	if (!a || !out || i >= de_arena_nsegments(a))
		return -EINVAL;
	*out = a->info[i];
	return 0;
}

int de_arena_segment_fd(const de_arena *a, unsigned i, bool readonly)
{
	if (!a || i >= de_arena_nsegments(a))
		return -EINVAL;
	if (!readonly) {
		if (a->ro)
			return -EROFS;
		int fd = fcntl(a->fds[i], F_DUPFD_CLOEXEC, 0);
		return fd < 0 ? -errno : fd;
	}
	/* Reopening through /proc gives a new open file description with O_RDONLY: the
	 * receiver can map it PROT_READ only, and cannot ftruncate it. */
	char path[64];
	snprintf(path, sizeof path, "/proc/self/fd/%d", a->fds[i]);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

enum de_pages de_arena_pages(const de_arena *a) { return a->info[0].pages; }
const char *de_arena_pages_note(const de_arena *a) { return a->ro ? "read-only attach" : a->note; }

int de_arena_set_root(de_arena *a, uint64_t off)
{
	if (!a)
		return -EINVAL;
	if (a->ro)
		return -EROFS;
	/* release: the root object is written before it is published */
	__atomic_store_n(&a->hdr->root, off, __ATOMIC_RELEASE);
	return 0;
}

uint64_t de_arena_root(const de_arena *a) { return __atomic_load_n(&a->hdr->root, __ATOMIC_ACQUIRE); }
