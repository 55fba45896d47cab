/*
 * channel.c — the data plane between one client thread and the daemon: a submission
 * ring (SQ), a completion ring (CQ) and a data area in one memfd, io_uring-style.
 *
 * Owns: the channel memfd and its mapping, the ring protocol, the need-wakeup flags and
 * the futex words. Does not interpret descriptors (the daemon's protocol does), and never
 * lets one side's bad indices make the other read or write outside the rings.
 * Callers: the daemon (create, pop, post, sleep) and libdynemb (attach, submit, reap).
 *
 * Layout of the region (little-endian; the header is one 4 KiB page):
 *   0    u64 magic "DECHAN01"     8   u32 version (1)     12  u32 hdr_bytes (4096)
 *   16   u32 sq_entries           20  u32 cq_entries
 *   24   u64 sq_off (4096)        32  u64 cq_off          40  u64 data_off
 *   48   u64 data_bytes           56  u64 total_bytes
 *   64   u32 sq_tail   client stores (release) after writing the entry; daemon loads (acquire)
 *   128  u32 sq_head   daemon stores (release) after copying the entry out; client loads
 *   192  u32 cq_tail   daemon stores (release) after writing the entry; client loads (acquire)
 *   256  u32 cq_head   client stores (release) after copying the entry out; daemon loads
 *   320  u32 sq_flags  bit 0 NEED_WAKEUP: set by a daemon worker going to sleep
 *   324  u32 sq_futex  bumped by the client (then FUTEX_WAKE) when NEED_WAKEUP is set
 *   384  u32 cq_flags  bit 0 NEED_WAKEUP: set by a client going to sleep
 *   388  u32 cq_futex  bumped by the daemon (then FUTEX_WAKE) when NEED_WAKEUP is set
 *   sq_off:   sq_entries * 64-byte struct de_sqe
 *   cq_off:   cq_entries * 32-byte struct de_cqe (right after the SQ)
 *   data_off: data_bytes, page aligned (after the CQ)
 * Each index lives on its own cache line: producer and consumer never share one.
 *
 * Indices are free-running u32 counters; an entry is at index & (entries - 1). Each side
 * keeps a private copy of the indices it produces and never reads them back from shared
 * memory. The other side's index is loaded once per call and checked: for a ring of E
 * entries, 0 <= tail - head <= E (unsigned), anything else breaks the channel.
 *
 * Sleep and wake-up (a Dekker handshake in seq_cst operations): the sleeper reads the
 * futex word, sets NEED_WAKEUP (seq_cst RMW), re-checks its ring (seq_cst load), and
 * only then sleeps on the word with the value it read; the producer publishes its tail
 * (seq_cst store), loads the flag (seq_cst), and if set bumps the word and wakes. Either the sleeper sees the new
 * tail or the producer sees the flag, and a bump between the read and the sleep makes
 * the sleep return at once.
 */
#include "de_shm.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define CHAN_MAGIC 0x31304e4148434544ull /* "DECHAN01" */
#define CHAN_VERSION 1u
#define CHAN_HDR 4096u
#define NEED_WAKEUP 1u

#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449
#endif
#ifndef FUTEX2_SIZE_U32
#define FUTEX2_SIZE_U32 0x02
#endif

struct chan_hdr {
	uint64_t magic;
	uint32_t version, hdr_bytes;
	uint32_t sq_entries, cq_entries;
	uint64_t sq_off, cq_off, data_off, data_bytes, total_bytes;
	uint32_t sq_tail, pad1[15];
	uint32_t sq_head, pad2[15];
	uint32_t cq_tail, pad3[15];
	uint32_t cq_head, pad4[15];
	uint32_t sq_flags, sq_futex, pad5[14];
	uint32_t cq_flags, cq_futex, pad6[14];
};

_Static_assert(sizeof(struct de_sqe) == 64, "a submission is 64 bytes");
_Static_assert(sizeof(struct de_cqe) == 32, "a completion is 32 bytes");
_Static_assert(offsetof(struct chan_hdr, sq_tail) == 64, "layout");
_Static_assert(offsetof(struct chan_hdr, sq_head) == 128, "layout");
_Static_assert(offsetof(struct chan_hdr, cq_tail) == 192, "layout");
_Static_assert(offsetof(struct chan_hdr, cq_head) == 256, "layout");
_Static_assert(offsetof(struct chan_hdr, sq_flags) == 320, "layout");
_Static_assert(offsetof(struct chan_hdr, cq_flags) == 384, "layout");
_Static_assert(sizeof(struct chan_hdr) <= CHAN_HDR, "header fits its page");

struct de_channel {
	int fd;
	bool daemon;           /* created here (daemon side) or attached (client side) */
	bool broken;
	char *map;
	struct chan_hdr *h;
	struct de_sqe *sq;
	struct de_cqe *cq;
	char *data;
	uint64_t data_bytes, total;
	uint32_t sq_mask, cq_mask, sq_n, cq_n;
	uint32_t sq_local;     /* daemon: its sq_head; client: its sq_tail */
	uint32_t cq_local;     /* daemon: its cq_tail; client: its cq_head */
	uint32_t sleep_val;    /* daemon: sq_futex value read by sleep_prepare */
};

#define LDA(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define LD(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define STR(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

static bool pow2(uint32_t v) { return v && !(v & (v - 1)); }

/* The layout for given sizes: what create writes and what attach must find. */
static int layout(uint32_t sq, uint32_t cq, uint64_t data, struct chan_hdr *h)
{
	if (!pow2(sq) || sq < 2 || sq > DE_CHANNEL_MAX_ENTRIES || !pow2(cq) || cq < sq ||
	    cq > 2 * DE_CHANNEL_MAX_ENTRIES || !data || data % 4096 || data > DE_CHANNEL_MAX_DATA)
		return -EINVAL;
	memset(h, 0, sizeof *h);
	h->magic = CHAN_MAGIC;
	h->version = CHAN_VERSION;
	h->hdr_bytes = CHAN_HDR;
	h->sq_entries = sq;
	h->cq_entries = cq;
	h->sq_off = CHAN_HDR;
	h->cq_off = h->sq_off + (uint64_t)sq * sizeof(struct de_sqe);
	h->data_off = (h->cq_off + (uint64_t)cq * sizeof(struct de_cqe) + 4095) & ~4095ull;
	h->data_bytes = data;
	h->total_bytes = h->data_off + data;
	return 0;
}

static int map_channel(struct de_channel *c, int fd, const struct chan_hdr *l, bool daemon)
{
	c->fd = fd;
	c->daemon = daemon;
	c->map = mmap(NULL, l->total_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (c->map == MAP_FAILED) {
		c->map = NULL;
		return -errno;
	}
	c->total = l->total_bytes;
	c->h = (struct chan_hdr *)c->map;
	c->sq = (struct de_sqe *)(c->map + l->sq_off);
	c->cq = (struct de_cqe *)(c->map + l->cq_off);
	c->data = c->map + l->data_off;
	c->data_bytes = l->data_bytes;
	c->sq_n = l->sq_entries;
	c->cq_n = l->cq_entries;
	c->sq_mask = l->sq_entries - 1;
	c->cq_mask = l->cq_entries - 1;
	return 0;
}

int de_channel_create(const struct de_channel_config *cfg, de_channel **out)
{
	if (!out)
		return -EINVAL;
	*out = NULL;
	struct de_channel_config k = cfg ? *cfg : (struct de_channel_config){ 0 };
	if (!k.sq_entries)
		k.sq_entries = 256;
	if (!k.cq_entries)
		k.cq_entries = 2 * k.sq_entries;
	if (!k.data_bytes)
		k.data_bytes = 64ull << 20;
	struct chan_hdr l;
	int err = layout(k.sq_entries, k.cq_entries, k.data_bytes, &l);
	if (err)
		return err;
	struct de_channel *c = calloc(1, sizeof *c);
	if (!c)
		return -ENOMEM;
	int fd = memfd_create("dynemb-channel", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0) {
		err = -errno;
		free(c);
		return err;
	}
	/* a memfd is born 0777: only its owner (and who it is passed to) may open it again
	 * through /proc/<pid>/fd */
	if (fchmod(fd, 0600)) {
		err = -errno;
		close(fd);
		free(c);
		return err;
	}
	if (ftruncate(fd, (off_t)l.total_bytes) || fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)) {
		err = -errno;
		close(fd);
		free(c);
		return err;
	}
	err = map_channel(c, fd, &l, true);
	if (err) {
		close(fd);
		free(c);
		return err;
	}
	memcpy(c->h, &l, offsetof(struct chan_hdr, sq_tail));
	*out = c;
	return 0;
}

int de_channel_attach(int fd, de_channel **out)
{
	if (!out)
		return -EINVAL;
	*out = NULL;
	if (fd < 0)
		return -EBADF;
	struct stat st;
	if (fstat(fd, &st))
		return -errno;
	struct chan_hdr h, l;
	const size_t fixed = offsetof(struct chan_hdr, sq_tail);
	if ((uint64_t)st.st_size < CHAN_HDR || pread(fd, &h, fixed, 0) != (ssize_t)fixed)
		return -EBADMSG;
	if (h.magic != CHAN_MAGIC)
		return -EBADMSG;
	if (h.version != CHAN_VERSION)
		return -EPROTO;
	/* Every field must be what the layout of these sizes gives, and fit the file. */
	if (layout(h.sq_entries, h.cq_entries, h.data_bytes, &l) || memcmp(&h, &l, fixed) ||
	    l.total_bytes != (uint64_t)st.st_size)
		return -EBADMSG;
	struct de_channel *c = calloc(1, sizeof *c);
	if (!c)
		return -ENOMEM;
	int dfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	int err = dfd < 0 ? -errno : map_channel(c, dfd, &l, false);
	if (err) {
		if (dfd >= 0)
			close(dfd);
		free(c);
		return err;
	}
	/* Start from the indices as they are (a client may re-attach). */
	c->sq_local = LD(&c->h->sq_tail);
	c->cq_local = LD(&c->h->cq_head);
	*out = c;
	return 0;
}

void de_channel_destroy(de_channel *c)
{
	if (!c)
		return;
	if (c->map)
		munmap(c->map, c->total);
	close(c->fd);
	free(c);
}

int de_channel_fd(const de_channel *c) { return c->fd; }
bool de_channel_broken(const de_channel *c) { return c->broken; }

void *de_channel_data(const de_channel *c, uint64_t *bytes)
{
	if (bytes)
		*bytes = c->data_bytes;
	return c->data;
}

bool de_channel_range_ok(const de_channel *c, uint64_t off, uint64_t len)
{
	return off <= c->data_bytes && len <= c->data_bytes - off;
}

static long futex(uint32_t *w, int op, uint32_t val, const struct timespec *ts)
{
	/* shared (not FUTEX_PRIVATE): the word lives in memory mapped by two processes */
	return syscall(SYS_futex, w, op, val, ts, NULL, 0);
}

static void wake(uint32_t *word)
{
	__atomic_fetch_add(word, 1, __ATOMIC_RELEASE);
	futex(word, FUTEX_WAKE, INT_MAX, NULL);
}

static int chan_broken(struct de_channel *c)
{
	c->broken = true;
	return -EBADMSG;
}

/* ---- client side ------------------------------------------------------------------ */

int de_channel_submit(de_channel *c, const struct de_sqe *e)
{
	if (!c || !e || c->daemon)
		return -EINVAL;
	if (c->broken)
		return -EBADMSG;
	uint32_t head = LDA(&c->h->sq_head); /* acquire: the daemon copied entries before it */
	uint32_t used = c->sq_local - head;
	if (used > c->sq_n)
		return chan_broken(c);
	if (used == c->sq_n)
		return -EAGAIN;
	memcpy(&c->sq[c->sq_local & c->sq_mask], e, sizeof *e);
	c->sq_local++;
	/* seq_cst store then seq_cst load (Dekker, against sleep_prepare's seq_cst RMW of
	 * the flag and load of the tail); the store also publishes the entry to pop */
	__atomic_store_n(&c->h->sq_tail, c->sq_local, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(&c->h->sq_flags, __ATOMIC_SEQ_CST) & NEED_WAKEUP)
		wake(&c->h->sq_futex);
	return 0;
}

/* 1: an entry was taken, 0: none, <0: broken. seq_cst: after the sleeper's flag RMW. */
static int reap_one(struct de_channel *c, struct de_cqe *out)
{
	uint32_t tail = __atomic_load_n(&c->h->cq_tail, __ATOMIC_SEQ_CST); /* pairs with post */
	uint32_t avail = tail - c->cq_local;
	if (avail > c->cq_n)
		return chan_broken(c);
	if (!avail)
		return 0;
	memcpy(out, &c->cq[c->cq_local & c->cq_mask], sizeof *out);
	c->cq_local++;
	STR(&c->h->cq_head, c->cq_local); /* release: the slot may be reused */
	return 1;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int de_channel_reap(de_channel *c, struct de_cqe *out, bool wait, uint64_t spin_ns, int timeout_ms)
{
	if (!c || !out || c->daemon)
		return -EINVAL;
	if (c->broken)
		return -EBADMSG;
	int r = reap_one(c, out);
	if (r)
		return r < 0 ? r : 0;
	if (!wait)
		return -EAGAIN;
	uint64_t start = now_ns();
	uint64_t deadline = timeout_ms < 0 ? UINT64_MAX : start + (uint64_t)timeout_ms * 1000000ull;
	uint64_t spin_end = spin_ns < deadline - start ? start + spin_ns : deadline;
	while (now_ns() < spin_end) {
		for (int i = 0; i < 64; i++) {
			if ((r = reap_one(c, out)))
				return r < 0 ? r : 0;
			__builtin_ia32_pause();
		}
	}
	for (;;) {
		uint32_t v = LDA(&c->h->cq_futex);
		__atomic_fetch_or(&c->h->cq_flags, NEED_WAKEUP, __ATOMIC_SEQ_CST);
		r = reap_one(c, out);
		if (r) {
			__atomic_fetch_and(&c->h->cq_flags, ~NEED_WAKEUP, __ATOMIC_RELAXED);
			return r < 0 ? r : 0;
		}
		uint64_t t = now_ns();
		if (t >= deadline) {
			__atomic_fetch_and(&c->h->cq_flags, ~NEED_WAKEUP, __ATOMIC_RELAXED);
			return -ETIMEDOUT;
		}
		struct timespec ts, *tp = NULL;
		if (deadline != UINT64_MAX) {
			uint64_t left = deadline - t;
			ts.tv_sec = (time_t)(left / 1000000000ull);
			ts.tv_nsec = (long)(left % 1000000000ull);
			tp = &ts;
		}
		futex(&c->h->cq_futex, FUTEX_WAIT, v, tp); /* EAGAIN/EINTR/ETIMEDOUT: re-check */
	}
}

/* ---- daemon side ------------------------------------------------------------------- */

int de_channel_pop(de_channel *c, struct de_sqe *out)
{
	if (!c || !out || !c->daemon)
		return -EINVAL;
	if (c->broken)
		return -EBADMSG;
	uint32_t tail = LDA(&c->h->sq_tail); /* acquire: pairs with the release in submit */
	uint32_t avail = tail - c->sq_local;
	if (avail > c->sq_n)
		return chan_broken(c); /* behind our head or more than a ring ahead */
	if (!avail)
		return -EAGAIN;
	/* Copy before looking: the client may rewrite the slot at any time. */
	memcpy(out, &c->sq[c->sq_local & c->sq_mask], sizeof *out);
	c->sq_local++;
	STR(&c->h->sq_head, c->sq_local); /* release: the copy is done, the slot is free */
	return 0;
}

int de_channel_post(de_channel *c, const struct de_cqe *e)
{
	if (!c || !e || !c->daemon)
		return -EINVAL;
	if (c->broken)
		return -EBADMSG;
	uint32_t head = LDA(&c->h->cq_head);
	uint32_t used = c->cq_local - head;
	if (used > c->cq_n)
		return chan_broken(c);
	if (used == c->cq_n)
		return -EAGAIN;
	memcpy(&c->cq[c->cq_local & c->cq_mask], e, sizeof *e);
	c->cq_local++;
	/* seq_cst store then seq_cst load: the Dekker half that pairs with reap's sleep */
	__atomic_store_n(&c->h->cq_tail, c->cq_local, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(&c->h->cq_flags, __ATOMIC_SEQ_CST) & NEED_WAKEUP)
		wake(&c->h->cq_futex);
	return 0;
}

int de_channel_sleep_prepare(de_channel *c)
{
	if (!c || !c->daemon)
		return -EINVAL;
	if (c->broken)
		return -EBADMSG;
	c->sleep_val = LDA(&c->h->sq_futex);
	__atomic_fetch_or(&c->h->sq_flags, NEED_WAKEUP, __ATOMIC_SEQ_CST);
	uint32_t avail = __atomic_load_n(&c->h->sq_tail, __ATOMIC_SEQ_CST) - c->sq_local;
	if (avail > c->sq_n)
		return chan_broken(c);
	return avail ? 1 : 0;
}

bool de_channel_woken(const de_channel *c)
{
	/* relaxed: a hint for the daemon's wake accounting, never for correctness (the
	 * client may write any value there) */
	return c && c->daemon && LD(&c->h->sq_futex) != c->sleep_val;
}

void de_channel_sleep_done(de_channel *c)
{
	if (c && c->daemon)
		__atomic_fetch_and(&c->h->sq_flags, ~NEED_WAKEUP, __ATOMIC_RELAXED);
}

struct waitv {  /* struct futex_waitv of linux/futex.h (Linux 5.16) */
	uint64_t val;
	uint64_t uaddr;
	uint32_t flags;
	uint32_t reserved;
};

int de_channels_wait(de_channel *const *chs, unsigned n, int timeout_ms)
{
	if (n > DE_CHANNELS_WAIT_MAX || (n && !chs))
		return -EINVAL;
	struct timespec ts, *tp = NULL;
	if (timeout_ms >= 0) {
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += timeout_ms / 1000;
		ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		tp = &ts;
	}
	if (!n) {
		if (tp)
			clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, tp, NULL);
		return -ETIMEDOUT;
	}
	struct waitv w[DE_CHANNELS_WAIT_MAX];
	for (unsigned i = 0; i < n; i++) {
		if (!chs[i] || !chs[i]->daemon)
			return -EINVAL;
		w[i] = (struct waitv){ .val = chs[i]->sleep_val,
				       .uaddr = (uint64_t)(uintptr_t)&chs[i]->h->sq_futex,
				       .flags = FUTEX2_SIZE_U32 };
	}
	long r = syscall(SYS_futex_waitv, w, n, 0, tp, CLOCK_MONOTONIC);
	if (r >= 0 || errno == EAGAIN || errno == EINTR)
		return 0; /* woken, or a word changed before we slept: re-check */
	if (errno == ETIMEDOUT)
		return -ETIMEDOUT;
	if (errno == ENOSYS && n == 1) { /* kernels before 5.16 */
		struct timespec rel = { 0, 0 }, *rp = NULL;
		if (tp) {
			struct timespec t0;
			clock_gettime(CLOCK_MONOTONIC, &t0);
			int64_t left = (int64_t)(tp->tv_sec - t0.tv_sec) * 1000000000LL + (tp->tv_nsec - t0.tv_nsec);
			if (left < 0)
				left = 0;
			rel.tv_sec = left / 1000000000LL;
			rel.tv_nsec = left % 1000000000LL;
			rp = &rel;
		}
		if (futex(&chs[0]->h->sq_futex, FUTEX_WAIT, chs[0]->sleep_val, rp) && errno == ETIMEDOUT)
			return -ETIMEDOUT;
		return 0;
	}
	return -errno;
}
