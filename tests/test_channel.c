/*
 * test_channel.c — the channel API of de_shm.h: the submission and completion rings, the
 * data area, sleeping and waking, and a daemon side that survives an untrusted client.
 *
 * Written against the contract in de_shm.h ("Channel"). Roles: the handle from
 * de_channel_create is the daemon (pop, post, sleep_prepare, de_channels_wait); a handle
 * from de_channel_attach is the client (submit, reap). Every test uses one of each.
 *
 * Suites:
 *   basics     create/attach/destroy, sizes and bad configs, ring order, full rings,
 *              reap timeouts, de_channel_range_ok.
 *   untrusted  a client that scribbles over the shared header and rings (a raw mapping of
 *              the memfd, MAP_SHARED): the daemon side must not crash, must reject indices
 *              out of range with -EBADMSG and stay broken afterwards.
 *   attach     foreign, truncated, edited and mis-sized fds.
 *   threads    client and daemon threads, busy-polling and sleeping.
 *   process    a forked client (inherited fd) doing round trips through the data area, and
 *              a client killed with SIGKILL in the middle of submitting.
 *   wait       de_channels_wait over several channels, its limits and lost wake-ups.
 *
 * The "untrusted" and "attach" suites poke the PRIVATE layout specified in the comment at
 * the top of shm/channel.c (offsets L_* below: u32 version at 8, u32 sq/cq entries at
 * 16/20, u64 sq_off/cq_off at 24/32, u64 data_bytes at 48, u32 sq_tail at 64, sq_head at
 * 128, cq_tail at 192, cq_head at 256, header page 4096 bytes). If that layout changes,
 * update them; check_layout() fails loudly when they no longer match what the API does.
 *
 * Threads and forked children never call cr_assert: threads record the first failure and
 * the main thread asserts after joining; children report through their exit status. Every
 * loop is bounded by a count and a deadline (DEADLINE_NS; DUO_DEADLINE_NS for the two
 * 200,000-round-trip runs), and every test asserts that
 * the work it counted is > 0, so nothing passes vacuously.
 */
#ifdef DE_MINI_CRITERION
#include "mini_criterion.h" /* ThreadSanitizer build: see that header */
#else
#include <criterion/criterion.h>
#endif

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "de_shm.h"

#define MiB (1ull << 20)
#define MS 1000000ull
#define DEADLINE_NS (2500 * MS) /* every loop gives up (and fails) after this */
#define TIMEOUT 15              /* Criterion's guard against a hang, seconds */
#define DUO_DEADLINE_NS (30000 * MS) /* the 200,000-round-trip runs (run_duo) */
#define DUO_TIMEOUT 45

/* Private layout of shm/channel.c (see the top of that file). */
#define L_HDR 4096u
#define L_VERSION 8u
#define L_SQ_ENTRIES 16u
#define L_CQ_ENTRIES 20u
#define L_SQ_OFF 24u
#define L_CQ_OFF 32u
#define L_DATA_BYTES 48u
#define L_SQ_TAIL 64u
#define L_SQ_HEAD 128u
#define L_CQ_TAIL 192u
#define L_CQ_HEAD 256u

/* ------------------------------------------------------------------------- */
/* Helpers                                                                    */
/* ------------------------------------------------------------------------- */

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t rng_next(uint64_t *s) /* xorshift64*, fixed seeds: runs are repeatable */
{
	uint64_t x = *s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545f4914f6cdd1dull;
}

static void fill_random(void *p, size_t n, uint64_t *s)
{
	unsigned char *b = p;
	for (size_t i = 0; i < n; i++)
		b[i] = (unsigned char)(rng_next(s) >> 56);
}

/* Submission i: every field derived from i, so a lost, repeated or torn one shows. */
static struct de_sqe sqe_for(uint64_t i)
{
	return (struct de_sqe){
		.op = (uint8_t)(i * 7 + 1),
		.flags = (uint8_t)(i >> 3),
		.table = (uint16_t)(i * 3 + 5),
		.count = (uint32_t)(i ^ 0x5a5a5a5au),
		.user_data = i,
		.keys_off = i * 8,
		.keys_len = i * 16 + 1,
		.vals_off = ~i,
		.vals_len = i << 20,
		.status_off = i * 0x9e3779b97f4a7c15ull,
		.arg = i + 0x123456789ull,
	};
}

/* Completion for submission i, as the test daemons post it. */
static struct de_cqe cqe_for(uint64_t i)
{
	return (struct de_cqe){
		.user_data = i,
		.res = 0,
		.count = (uint32_t)(i & 0xffff),
		.aux0 = i * 3 + 1,
		.aux1 = ~i,
	};
}

/* Both structs have no padding (64 = 1+1+2+4+7*8, 32 = 8+4+4+2*8): memcmp is exact. */
static bool sqe_eq(const struct de_sqe *a, const struct de_sqe *b) { return !memcmp(a, b, sizeof *a); }
static bool cqe_eq(const struct de_cqe *a, const struct de_cqe *b) { return !memcmp(a, b, sizeof *a); }

static de_channel *create_or_die(uint32_t sq, uint32_t cq, uint64_t data)
{
	struct de_channel_config cfg = { .sq_entries = sq, .cq_entries = cq, .data_bytes = data };
	de_channel *c = NULL;
	int r = de_channel_create(&cfg, &c);

	cr_assert_eq(r, 0, "de_channel_create(%u, %u, %llu): %d (%s)", sq, cq,
		     (unsigned long long)data, r, strerror(-r));
	cr_assert_not_null(c);
	return c;
}

/* The client side of srv, attached in this process from a dup of its fd. */
static de_channel *attach_or_die(const de_channel *srv)
{
	int fd = dup(de_channel_fd(srv));
	de_channel *c = NULL;

	cr_assert_geq(fd, 0, "dup: %s", strerror(errno));
	int r = de_channel_attach(fd, &c);
	close(fd); /* attach dups what it keeps */
	cr_assert_eq(r, 0, "de_channel_attach: %d (%s)", r, strerror(-r));
	cr_assert_not_null(c);
	return c;
}

static size_t fd_size(int fd)
{
	struct stat st;
	cr_assert_eq(fstat(fd, &st), 0, "fstat: %s", strerror(errno));
	return (size_t)st.st_size;
}

/* The whole memfd of c, mapped read-write by the test itself (the "raw client"). */
static unsigned char *map_raw(const de_channel *c, size_t *len /* out */)
{
	*len = fd_size(de_channel_fd(c));
	void *p = mmap(NULL, *len, PROT_READ | PROT_WRITE, MAP_SHARED, de_channel_fd(c), 0);
	cr_assert_neq(p, MAP_FAILED, "mmap: %s", strerror(errno));
	return p;
}

static uint32_t rd32(const unsigned char *m, size_t off)
{
	return __atomic_load_n((const uint32_t *)(const void *)(m + off), __ATOMIC_ACQUIRE);
}

static void wr32(unsigned char *m, size_t off, uint32_t v)
{
	__atomic_store_n((uint32_t *)(void *)(m + off), v, __ATOMIC_RELEASE);
}

static uint64_t rd64(const unsigned char *m, size_t off)
{
	uint64_t v;
	memcpy(&v, m + off, sizeof v);
	return v;
}

/*
 * The private offsets still describe what the API does: a submission moves sq_tail by
 * one, a pop moves sq_head, a post cq_tail, a reap cq_head; the sizes are where we look.
 * Leaves the rings empty and the indices equal.
 */
static void check_layout(de_channel *srv, de_channel *cli, const unsigned char *m,
			 uint32_t sq, uint32_t cq)
{
	struct de_sqe s = sqe_for(1), so;
	struct de_cqe e = cqe_for(1), eo;

	cr_assert_eq(rd32(m, L_SQ_ENTRIES), sq, "layout: sq_entries not at %u", L_SQ_ENTRIES);
	cr_assert_eq(rd32(m, L_CQ_ENTRIES), cq, "layout: cq_entries not at %u", L_CQ_ENTRIES);
	uint32_t t = rd32(m, L_SQ_TAIL), h = rd32(m, L_SQ_HEAD);
	cr_assert_eq(de_channel_submit(cli, &s), 0);
	cr_assert_eq(rd32(m, L_SQ_TAIL), t + 1, "layout: sq_tail not at %u", L_SQ_TAIL);
	cr_assert(sqe_eq((const struct de_sqe *)(const void *)(m + rd64(m, L_SQ_OFF)) + (t & (sq - 1)), &s),
		  "layout: the SQ is not at sq_off");
	cr_assert_eq(de_channel_pop(srv, &so), 0);
	cr_assert_eq(rd32(m, L_SQ_HEAD), h + 1, "layout: sq_head not at %u", L_SQ_HEAD);
	t = rd32(m, L_CQ_TAIL);
	h = rd32(m, L_CQ_HEAD);
	cr_assert_eq(de_channel_post(srv, &e), 0);
	cr_assert_eq(rd32(m, L_CQ_TAIL), t + 1, "layout: cq_tail not at %u", L_CQ_TAIL);
	cr_assert(cqe_eq((const struct de_cqe *)(const void *)(m + rd64(m, L_CQ_OFF)) + (t & (cq - 1)), &e),
		  "layout: the CQ is not at cq_off");
	cr_assert_eq(de_channel_reap(cli, &eo, false, 0, 0), 0);
	cr_assert_eq(rd32(m, L_CQ_HEAD), h + 1, "layout: cq_head not at %u", L_CQ_HEAD);
}

/* A memfd holding len bytes: a copy of the first min(len, size) bytes of src_fd, or
 * random bytes when src_fd < 0. */
static int memfd_with(int src_fd, size_t len, uint64_t seed)
{
	int fd = memfd_create("test_channel", MFD_CLOEXEC);
	cr_assert_geq(fd, 0, "memfd_create: %s", strerror(errno));
	cr_assert_eq(ftruncate(fd, (off_t)len), 0, "ftruncate: %s", strerror(errno));
	if (!len)
		return fd;
	unsigned char *dst = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	cr_assert_neq(dst, MAP_FAILED);
	if (src_fd < 0) {
		fill_random(dst, len, &seed);
	} else {
		size_t n = fd_size(src_fd) < len ? fd_size(src_fd) : len;
		cr_assert_eq(pread(src_fd, dst, n, 0), (ssize_t)n);
	}
	munmap(dst, len);
	return fd;
}

/* First failure of a thread or a loop, asserted later by the main thread. */
struct failure {
	atomic_int failed;
	char msg[256];
};

__attribute__((format(printf, 2, 3))) static void fail_at(struct failure *f, const char *fmt, ...)
{
	int expected = 0;
	if (!atomic_compare_exchange_strong(&f->failed, &expected, 1))
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(f->msg, sizeof f->msg, fmt, ap);
	va_end(ap);
}

static void cpu_relax(void) { __builtin_ia32_pause(); }

/* ------------------------------------------------------------------------- */
/* basics                                                                     */
/* ------------------------------------------------------------------------- */

/* Submits sqe_for(base + k) until -EAGAIN; returns how many went in. */
static uint32_t submit_until_full(de_channel *cli, uint64_t base, uint32_t limit)
{
	uint32_t n = 0;
	int r;
	while (n < limit) {
		struct de_sqe s = sqe_for(base + n);
		if ((r = de_channel_submit(cli, &s)))
			break;
		n++;
	}
	cr_assert(n < limit, "ring never filled after %u submissions", n);
	cr_assert_eq(r, -EAGAIN, "submit on a full ring: %d, want -EAGAIN", r);
	return n;
}

static uint32_t post_until_full(de_channel *srv, uint64_t base, uint32_t limit)
{
	uint32_t n = 0;
	int r;
	while (n < limit) {
		struct de_cqe e = cqe_for(base + n);
		if ((r = de_channel_post(srv, &e)))
			break;
		n++;
	}
	cr_assert(n < limit, "CQ never filled after %u posts", n);
	cr_assert_eq(r, -EAGAIN, "post on a full CQ: %d, want -EAGAIN", r);
	return n;
}

static void pop_expect(de_channel *srv, uint64_t base, uint32_t n)
{
	for (uint32_t k = 0; k < n; k++) {
		struct de_sqe got, want = sqe_for(base + k);
		int r = de_channel_pop(srv, &got);
		cr_assert_eq(r, 0, "pop %u of %u: %d", k, n, r);
		cr_assert(sqe_eq(&got, &want), "pop %u: descriptor differs (user_data %llu, want %llu)",
			  k, (unsigned long long)got.user_data, (unsigned long long)want.user_data);
	}
	struct de_sqe s;
	cr_assert_eq(de_channel_pop(srv, &s), -EAGAIN, "pop on an empty SQ");
}

static void reap_expect(de_channel *cli, uint64_t base, uint32_t n)
{
	for (uint32_t k = 0; k < n; k++) {
		struct de_cqe got, want = cqe_for(base + k);
		int r = de_channel_reap(cli, &got, false, 0, 0);
		cr_assert_eq(r, 0, "reap %u of %u: %d", k, n, r);
		cr_assert(cqe_eq(&got, &want), "reap %u: completion differs (user_data %llu, want %llu)",
			  k, (unsigned long long)got.user_data, (unsigned long long)want.user_data);
	}
	struct de_cqe e;
	cr_assert_eq(de_channel_reap(cli, &e, false, 0, 0), -EAGAIN, "reap on an empty CQ");
}

/* Fill both rings to the brim and drain them; sizes as configured. */
static void check_sizes(de_channel *srv, de_channel *cli, uint32_t sq, uint32_t cq)
{
	cr_assert_eq(submit_until_full(cli, 100, 2 * DE_CHANNEL_MAX_ENTRIES + 1), sq);
	pop_expect(srv, 100, sq);
	cr_assert_eq(post_until_full(srv, 7, 4 * DE_CHANNEL_MAX_ENTRIES + 1), cq);
	reap_expect(cli, 7, cq);
}

Test(basics, create_with_defaults, .timeout = TIMEOUT)
{
	struct de_channel_config cfg = { 0 };
	de_channel *srv = NULL;
	uint64_t bytes = 0;

	cr_assert_eq(de_channel_create(&cfg, &srv), 0);
	cr_assert_not_null(srv);
	cr_assert_geq(de_channel_fd(srv), 0);
	cr_assert_not(de_channel_broken(srv));
	void *data = de_channel_data(srv, &bytes);
	cr_assert_not_null(data);
	cr_assert_eq(bytes, 64 * MiB, "default data area: %llu bytes", (unsigned long long)bytes);
	cr_assert_eq((uintptr_t)data % 4096, 0, "data area not page aligned");
	cr_assert_eq(de_channel_data(srv, NULL), data);
	memset(data, 0xa5, bytes); /* all of it is mapped and writable */

	de_channel *cli = attach_or_die(srv);
	check_sizes(srv, cli, 256, 512);
	de_channel_destroy(cli);
	de_channel_destroy(srv);
	de_channel_destroy(NULL);
}

Test(basics, create_with_explicit_sizes, .timeout = TIMEOUT)
{
	static const struct {
		uint32_t sq, cq;
		uint64_t data;
		uint32_t want_cq;
	} cases[] = {
		{ 2, 2, 4096, 2 },
		{ 2, 0, 4096, 4 },
		{ 8, 32, 8192, 32 },
		{ 64, 0, 3 * 4096, 128 },
		{ 512, 512, 1 * MiB, 512 },
		{ 4096, 4096, 4096, 4096 },
		{ 4096, 8192, 4096, 8192 },
	};
	unsigned checked = 0;

	for (unsigned i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		de_channel *srv = create_or_die(cases[i].sq, cases[i].cq, cases[i].data);
		uint64_t bytes = 0;
		unsigned char *d = de_channel_data(srv, &bytes);
		cr_assert_eq(bytes, cases[i].data, "case %u: %llu data bytes", i, (unsigned long long)bytes);
		d[0] = 1;
		d[bytes - 1] = 2;
		de_channel *cli = attach_or_die(srv);
		check_sizes(srv, cli, cases[i].sq, cases[i].want_cq);
		/* and again, so the indices wrap around the rings */
		check_sizes(srv, cli, cases[i].sq, cases[i].want_cq);
		de_channel_destroy(cli);
		de_channel_destroy(srv);
		checked++;
	}
	cr_assert_eq(checked, sizeof cases / sizeof cases[0]);
}

Test(basics, bad_configs, .timeout = TIMEOUT)
{
	static const struct de_channel_config bad[] = {
		{ .sq_entries = 1 },
		{ .sq_entries = 3 },
		{ .sq_entries = 100 },
		{ .sq_entries = 4097 },
		{ .sq_entries = 8192 },
		{ .sq_entries = 1u << 31 },
		{ .sq_entries = UINT32_MAX },
		{ .sq_entries = 64, .cq_entries = 32 },   /* cq < sq */
		{ .sq_entries = 64, .cq_entries = 2 },
		{ .sq_entries = 64, .cq_entries = 96 },   /* not a power of two */
		{ .sq_entries = 4096, .cq_entries = 2048 },
		{ .data_bytes = 1 },
		{ .data_bytes = 100 },
		{ .data_bytes = 4097 },
		{ .data_bytes = 3 * 4096 + 1 },
		{ .data_bytes = (1ull << 32) + 4096 },    /* > 4 GiB */
		{ .data_bytes = 1ull << 33 },
		{ .data_bytes = UINT64_MAX & ~4095ull },
	};
	unsigned n = 0;

	for (unsigned i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		de_channel *c = NULL;
		int r = de_channel_create(&bad[i], &c);
		cr_assert_eq(r, -EINVAL, "config %u (sq %u, cq %u, data %llu): %d, want -EINVAL", i,
			     bad[i].sq_entries, bad[i].cq_entries, (unsigned long long)bad[i].data_bytes, r);
		cr_assert_null(c, "config %u: a handle came back with an error", i);
		n++;
	}
	cr_assert_eq(n, sizeof bad / sizeof bad[0]);
}

Test(basics, attach_sees_the_same_data_area, .timeout = TIMEOUT)
{
	de_channel *srv = create_or_die(16, 32, 4 * 4096);
	de_channel *cli = attach_or_die(srv); /* from a dup, closed again */
	uint64_t sb = 0, cb = 0;
	unsigned char *sd = de_channel_data(srv, &sb);
	unsigned char *cd = de_channel_data(cli, &cb);

	cr_assert_eq(sb, 4 * 4096);
	cr_assert_eq(cb, sb, "client sees %llu data bytes, daemon %llu", (unsigned long long)cb,
		     (unsigned long long)sb);
	cr_assert_geq(de_channel_fd(cli), 0);
	cr_assert_neq(de_channel_fd(cli), de_channel_fd(srv));
	cr_assert_neq(fcntl(de_channel_fd(cli), F_GETFD), -1, "the client's own fd is open");
	cr_assert_not(de_channel_broken(cli));

	uint64_t seed = 42;
	fill_random(sd, sb, &seed);
	cr_assert(!memcmp(sd, cd, sb), "client does not see the daemon's bytes");
	for (uint64_t i = 0; i < cb; i += 97)
		cd[i] = (unsigned char)(i * 13);
	cr_assert(!memcmp(sd, cd, sb), "daemon does not see the client's bytes");
	cr_assert_eq(sd[97], (unsigned char)(97 * 13));

	/* a second client, attached straight from the daemon's fd, sees them too */
	de_channel *cli2 = NULL;
	cr_assert_eq(de_channel_attach(de_channel_fd(srv), &cli2), 0);
	cr_assert(!memcmp(de_channel_data(cli2, NULL), sd, sb));
	de_channel_destroy(cli2);
	cr_assert(!memcmp(cd, sd, sb), "destroying one client unmapped another's view");

	de_channel_destroy(cli);
	de_channel_destroy(srv);
}

/* The memfd is sealed against shrinking: a client cannot pull pages out from under the
 * daemon's mapping (which would turn its next access into SIGBUS). */
/* The memfd is born 0777; the channel makes it 0600 (owner only), and a receiver of the
 * fd sees that mode. */
Test(basics, memfd_is_owner_only, .timeout = TIMEOUT)
{
	de_channel *srv = create_or_die(8, 16, 4096);
	de_channel *cli = attach_or_die(srv);
	struct stat st;
	cr_assert_eq(fstat(de_channel_fd(srv), &st), 0);
	cr_expect_eq(st.st_mode & 07777, 0600, "daemon side: mode %#o", st.st_mode & 07777);
	cr_assert_eq(fstat(de_channel_fd(cli), &st), 0);
	cr_expect_eq(st.st_mode & 07777, 0600, "client side: mode %#o", st.st_mode & 07777);
	de_channel_destroy(cli);
	de_channel_destroy(srv);
}

Test(basics, sealed_against_shrinking, .timeout = TIMEOUT)
{
	de_channel *srv = create_or_die(8, 16, 4096);
	de_channel *cli = attach_or_die(srv);
	int fd = de_channel_fd(cli);
	size_t len = fd_size(fd);

	cr_assert_gt(fcntl(fd, F_GET_SEALS) & F_SEAL_SHRINK, 0, "no F_SEAL_SHRINK");
	cr_assert_eq(ftruncate(fd, 0), -1, "the client shrank the channel to 0");
	cr_assert_eq(errno, EPERM);
	cr_assert_eq(ftruncate(fd, (off_t)len - 4096), -1, "the client shrank the channel");
	cr_assert_eq(fd_size(de_channel_fd(srv)), len);
	check_sizes(srv, cli, 8, 16); /* and everything is still mapped */
	de_channel_destroy(cli);
	de_channel_destroy(srv);
}

Test(basics, submissions_pop_in_order_with_every_field, .timeout = TIMEOUT)
{
	de_channel *srv = create_or_die(16, 32, 4096);
	de_channel *cli = attach_or_die(srv);
	uint64_t seed = 7, next_sub = 0, next_pop = 0;

	cr_assert_eq(submit_until_full(cli, 0, 1000), 16, "submit until full: not exactly sq_entries");
	pop_expect(srv, 0, 16);
	next_sub = next_pop = 16;

	/* random bursts, many times around the ring */
	for (int round = 0; round < 2000; round++) {
		uint32_t k = (uint32_t)(rng_next(&seed) % 17);
		for (uint32_t j = 0; j < k; j++) {
			struct de_sqe s = sqe_for(next_sub);
			int r = de_channel_submit(cli, &s);
			if (next_sub - next_pop == 16) {
				cr_assert_eq(r, -EAGAIN, "submit with %llu queued",
					     (unsigned long long)(next_sub - next_pop));
				break;
			}
			cr_assert_eq(r, 0);
			next_sub++;
		}
		uint32_t p = (uint32_t)(rng_next(&seed) % 17);
		for (uint32_t j = 0; j < p; j++) {
			struct de_sqe got, want = sqe_for(next_pop);
			int r = de_channel_pop(srv, &got);
			if (next_pop == next_sub) {
				cr_assert_eq(r, -EAGAIN);
				break;
			}
			cr_assert_eq(r, 0);
			cr_assert(sqe_eq(&got, &want), "pop %llu differs", (unsigned long long)next_pop);
			next_pop++;
		}
	}
	cr_assert_gt(next_pop, 5000, "only %llu popped", (unsigned long long)next_pop);
	cr_assert_not(de_channel_broken(srv));
	cr_assert_not(de_channel_broken(cli));
	de_channel_destroy(cli);
	de_channel_destroy(srv);
}

Test(basics, completions_round_trip, .timeout = TIMEOUT)
{
	de_channel *srv = create_or_die(8, 16, 4096);
	de_channel *cli = attach_or_die(srv);
	struct de_cqe e;
	unsigned n = 0;

	cr_assert_eq(de_channel_reap(cli, &e, false, 0, 0), -EAGAIN, "reap on an empty CQ");
	for (uint64_t i = 0; i < 1000; i++) {
		struct de_sqe s = sqe_for(i), so;
		cr_assert_eq(de_channel_submit(cli, &s), 0);
		cr_assert_eq(de_channel_pop(srv, &so), 0);
		struct de_cqe c = { .user_data = so.user_data, .res = -(int32_t)(i % 200),
				    .count = so.count, .aux0 = so.arg, .aux1 = so.status_off };
		cr_assert_eq(de_channel_post(srv, &c), 0);
		cr_assert_eq(de_channel_reap(cli, &e, (i & 1) != 0, 0, 1000), 0);
		cr_assert(cqe_eq(&e, &c), "completion %llu differs", (unsigned long long)i);
		cr_assert_eq(e.user_data, i);
		n++;
	}
	cr_assert_eq(de_channel_reap(cli, &e, false, 0, 0), -EAGAIN);
	cr_assert_eq(post_until_full(srv, 0, 1000), 16, "post until full: not exactly cq_entries");
	reap_expect(cli, 0, 16);
	cr_assert_eq(n, 1000);
	de_channel_destroy(cli);
	de_channel_destroy(srv);
}

Test(basics, reap_with_wait_times_out, .timeout = TIMEOUT)
{
	de_channel *srv = create_or_die(8, 16, 4096);
	de_channel *cli = attach_or_die(srv);
	static const uint64_t spins[] = { 0, 10 * MS, 1000 * MS /* longer than the timeout */ };
	struct de_cqe e;

	for (unsigned i = 0; i < 3; i++) {
		uint64_t t0 = now_ns();
		int r = de_channel_reap(cli, &e, true, spins[i], 50);
		uint64_t dt = now_ns() - t0;
		cr_assert_eq(r, -ETIMEDOUT, "spin %llu ns: %d, want -ETIMEDOUT", (unsigned long long)spins[i], r);
		cr_assert_geq(dt, 40 * MS, "spin %llu ns: timed out after only %llu ns",
			      (unsigned long long)spins[i], (unsigned long long)dt);
		cr_assert_lt(dt, 2000 * MS, "spin %llu ns: 50 ms timeout took %llu ns",
			     (unsigned long long)spins[i], (unsigned long long)dt);
	}
	/* timeout 0 with wait: no completion, returns at once */
	uint64_t t0 = now_ns();
	cr_assert_eq(de_channel_reap(cli, &e, true, 0, 0), -ETIMEDOUT);
	cr_assert_lt(now_ns() - t0, 1000 * MS);
	/* a completion already there is returned, wait or not */
	struct de_cqe c = cqe_for(9);
	cr_assert_eq(de_channel_post(srv, &c), 0);
	cr_assert_eq(de_channel_reap(cli, &e, true, 0, 50), 0);
	cr_assert(cqe_eq(&e, &c));
	de_channel_destroy(cli);
	de_channel_destroy(srv);
}

struct delayed_post {
	de_channel *srv;
	unsigned delay_ms;
	struct failure f;
};

static void *post_later(void *arg)
{
	struct delayed_post *d = arg;
	usleep(d->delay_ms * 1000u);
	struct de_cqe e = cqe_for(77);
	int r = de_channel_post(d->srv, &e);
	if (r)
		fail_at(&d->f, "delayed post: %d", r);
	return NULL;
}

Test(basics, reap_with_wait_is_woken_by_post, .timeout = TIMEOUT)
{
	de_channel *srv = create_or_die(8, 16, 4096);
	de_channel *cli = attach_or_die(srv);
	struct delayed_post d = { .srv = srv, .delay_ms = 30 };
	pthread_t th;
	struct de_cqe e, want = cqe_for(77);

	cr_assert_eq(pthread_create(&th, NULL, post_later, &d), 0);
	uint64_t t0 = now_ns();
	int r = de_channel_reap(cli, &e, true, 0, 2000); /* sleeps on the futex */
	uint64_t dt = now_ns() - t0;
	pthread_join(th, NULL);
	cr_assert_not(d.f.failed, "%s", d.f.msg);
	cr_assert_eq(r, 0, "reap: %d", r);
	cr_assert(cqe_eq(&e, &want));
	cr_assert_lt(dt, 1000 * MS, "woken after %llu ns (timeout 2 s)", (unsigned long long)dt);
	de_channel_destroy(cli);
	de_channel_destroy(srv);
}

Test(basics, range_ok, .timeout = TIMEOUT)
{
	de_channel *srv = create_or_die(8, 16, 4 * 4096);
	de_channel *cli = attach_or_die(srv);
	const uint64_t b = 4 * 4096;
	de_channel *both[2] = { srv, cli };

	for (int i = 0; i < 2; i++) {
		de_channel *c = both[i];
		cr_assert(de_channel_range_ok(c, 0, b), "[0, bytes]");
		cr_assert(de_channel_range_ok(c, 0, 0));
		cr_assert(de_channel_range_ok(c, b, 0), "off == bytes, len 0");
		cr_assert(de_channel_range_ok(c, b - 8, 8));
		cr_assert(de_channel_range_ok(c, 4096, b - 4096));
		cr_assert_not(de_channel_range_ok(c, UINT64_MAX - 3, 8), "off + len overflows");
		cr_assert_not(de_channel_range_ok(c, 8, UINT64_MAX - 3), "off + len overflows");
		cr_assert_not(de_channel_range_ok(c, UINT64_MAX, 1));
		cr_assert_not(de_channel_range_ok(c, UINT64_MAX, 0));
		cr_assert_not(de_channel_range_ok(c, 0, b + 1), "len > bytes");
		cr_assert_not(de_channel_range_ok(c, 0, UINT64_MAX));
		cr_assert_not(de_channel_range_ok(c, b, 1));
		cr_assert_not(de_channel_range_ok(c, b + 1, 0));
		cr_assert_not(de_channel_range_ok(c, b - 8, 9));
		cr_assert_not(de_channel_range_ok(c, 1ull << 63, 1ull << 63));
	}
	de_channel_destroy(cli);
	de_channel_destroy(srv);
}

/* ------------------------------------------------------------------------- */
/* untrusted: a client that writes garbage over the shared indices and rings  */
/* ------------------------------------------------------------------------- */

/* The daemon side's broken state: every later call answers -EBADMSG. */
static void assert_stays_broken(de_channel *srv, const char *what)
{
	struct de_sqe s;
	struct de_cqe e = cqe_for(0);

	cr_assert(de_channel_broken(srv), "%s: -EBADMSG but not broken", what);
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(de_channel_pop(srv, &s), -EBADMSG, "%s: pop after broken", what);
		cr_assert_eq(de_channel_post(srv, &e), -EBADMSG, "%s: post after broken", what);
		cr_assert_eq(de_channel_sleep_prepare(srv), -EBADMSG, "%s: sleep_prepare after broken", what);
		de_channel_sleep_done(srv);
	}
}

struct victim {
	de_channel *srv, *cli;
	unsigned char *m; /* the raw client mapping */
	size_t len;
	uint32_t sq, cq;
	uint64_t sq_off, cq_off; /* read before any scribbling */
};

static struct victim victim_new(uint32_t sq, uint32_t cq)
{
	struct victim v = { .sq = sq, .cq = cq };
	v.srv = create_or_die(sq, cq, 4096);
	v.cli = attach_or_die(v.srv);
	v.m = map_raw(v.cli, &v.len);
	check_layout(v.srv, v.cli, v.m, sq, cq);
	v.sq_off = rd64(v.m, L_SQ_OFF);
	v.cq_off = rd64(v.m, L_CQ_OFF);
	cr_assert(v.sq_off >= L_HDR && v.sq_off + (uint64_t)sq * sizeof(struct de_sqe) <= v.len);
	cr_assert(v.cq_off >= L_HDR && v.cq_off + (uint64_t)cq * sizeof(struct de_cqe) <= v.len);
	return v;
}

static void victim_free(struct victim *v)
{
	munmap(v->m, v->len);
	de_channel_destroy(v->cli);
	de_channel_destroy(v->srv);
}

Test(untrusted, sq_tail_more_than_a_ring_ahead, .timeout = TIMEOUT)
{
	struct victim v = victim_new(8, 16);
	struct de_sqe s;

	/* move the daemon's head off zero: 5 real round trips */
	cr_assert_eq(submit_until_full(v.cli, 0, 100), 8);
	pop_expect(v.srv, 0, 8);
	uint32_t head = rd32(v.m, L_SQ_HEAD);
	cr_assert_eq(head, 9, "head after 1 + 8 pops"); /* check_layout did one */
	wr32(v.m, L_SQ_TAIL, head + v.sq + 1);
	cr_assert_eq(de_channel_pop(v.srv, &s), -EBADMSG, "tail = head + sq_entries + 1");
	assert_stays_broken(v.srv, "tail ahead");
	/* putting the tail back does not unbreak it */
	wr32(v.m, L_SQ_TAIL, head);
	assert_stays_broken(v.srv, "tail restored");
	victim_free(&v);

	/* far ahead: 2^31 */
	v = victim_new(8, 16);
	wr32(v.m, L_SQ_TAIL, rd32(v.m, L_SQ_HEAD) + 0x80000000u);
	cr_assert_eq(de_channel_sleep_prepare(v.srv), -EBADMSG, "sleep_prepare sees a bad tail");
	assert_stays_broken(v.srv, "tail 2^31 ahead");
	victim_free(&v);
}

Test(untrusted, sq_tail_behind_head, .timeout = TIMEOUT)
{
	struct victim v = victim_new(8, 16);
	struct de_sqe s;

	uint32_t head = rd32(v.m, L_SQ_HEAD);
	wr32(v.m, L_SQ_TAIL, head - 1);
	cr_assert_eq(de_channel_pop(v.srv, &s), -EBADMSG, "tail = head - 1");
	assert_stays_broken(v.srv, "tail behind");
	victim_free(&v);

	/* behind head 0: tail UINT32_MAX with a fresh daemon (check_layout left head at 1) */
	v = victim_new(8, 16);
	wr32(v.m, L_SQ_TAIL, 0);
	cr_assert_eq(de_channel_pop(v.srv, &s), -EBADMSG, "tail = 0 behind head 1");
	assert_stays_broken(v.srv, "tail 0 behind head 1");
	victim_free(&v);
}

Test(untrusted, sq_tail_exactly_a_ring_ahead_is_valid, .timeout = TIMEOUT)
{
	struct victim v = victim_new(8, 16);
	struct de_sqe s;
	int n = 0;

	uint32_t head = rd32(v.m, L_SQ_HEAD);
	wr32(v.m, L_SQ_TAIL, head + v.sq); /* a full ring of whatever the slots hold */
	cr_assert_eq(de_channel_sleep_prepare(v.srv), 1, "a full ring: do not sleep");
	de_channel_sleep_done(v.srv);
	while (de_channel_pop(v.srv, &s) == 0 && n < 100)
		n++;
	cr_assert_eq(n, 8, "popped %d of a full ring of 8", n);
	cr_assert_eq(de_channel_pop(v.srv, &s), -EAGAIN);
	cr_assert_not(de_channel_broken(v.srv));
	cr_assert_eq(de_channel_sleep_prepare(v.srv), 0);
	de_channel_sleep_done(v.srv);
	victim_free(&v);
}

Test(untrusted, daemon_keeps_its_own_sq_head, .timeout = TIMEOUT)
{
	struct victim v = victim_new(8, 16);
	uint64_t seed = 3;
	unsigned popped = 0;

	for (int round = 0; round < 50; round++) {
		for (uint64_t k = 0; k < 5; k++) {
			struct de_sqe s = sqe_for(round * 5 + k);
			cr_assert_eq(de_channel_submit(v.cli, &s), 0);
		}
		/* the shared copy of the daemon's head is the client's to scribble on */
		wr32(v.m, L_SQ_HEAD, (uint32_t)rng_next(&seed));
		for (uint64_t k = 0; k < 5; k++) {
			struct de_sqe got, want = sqe_for(round * 5 + k);
			cr_assert_eq(de_channel_pop(v.srv, &got), 0, "round %d pop %llu", round,
				     (unsigned long long)k);
			cr_assert(sqe_eq(&got, &want), "round %d: the daemon followed the shared head", round);
			popped++;
		}
		struct de_sqe s;
		cr_assert_eq(de_channel_pop(v.srv, &s), -EAGAIN);
	}
	cr_assert_eq(popped, 250);
	victim_free(&v);
}

Test(untrusted, cq_head_ahead_of_tail, .timeout = TIMEOUT)
{
	struct victim v = victim_new(8, 16);
	struct de_cqe e = cqe_for(1), got;

	for (int i = 0; i < 3; i++)
		cr_assert_eq(de_channel_post(v.srv, &e), 0);
	cr_assert_eq(de_channel_reap(v.cli, &got, false, 0, 0), 0);
	uint32_t tail = rd32(v.m, L_CQ_TAIL);
	wr32(v.m, L_CQ_HEAD, tail + 1);
	cr_assert_eq(de_channel_post(v.srv, &e), -EBADMSG, "cq head = tail + 1");
	assert_stays_broken(v.srv, "cq head ahead");
	victim_free(&v);

	/* more than a ring behind the tail */
	v = victim_new(8, 16);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(de_channel_post(v.srv, &e), 0);
	tail = rd32(v.m, L_CQ_TAIL);
	wr32(v.m, L_CQ_HEAD, tail - v.cq - 1);
	cr_assert_eq(de_channel_post(v.srv, &e), -EBADMSG, "cq head = tail - cq_entries - 1");
	assert_stays_broken(v.srv, "cq head a ring behind");
	victim_free(&v);

	/* exactly a ring behind: the CQ is full, not broken */
	v = victim_new(8, 16);
	tail = rd32(v.m, L_CQ_TAIL);
	wr32(v.m, L_CQ_HEAD, tail - v.cq);
	cr_assert_eq(de_channel_post(v.srv, &e), -EAGAIN, "cq head = tail - cq_entries: full");
	cr_assert_not(de_channel_broken(v.srv));
	wr32(v.m, L_CQ_HEAD, tail);
	cr_assert_eq(de_channel_post(v.srv, &e), 0);
	victim_free(&v);
}

/* Punching holes is allowed by the seals (only writes could forbid it): the pages read
 * back as zeros. Indices of 0 behind the daemon's (1 after check_layout) break it. */
Test(untrusted, punched_holes_read_as_zeros, .timeout = TIMEOUT)
{
	struct victim v = victim_new(8, 16);
	struct de_sqe s;
	int r = fallocate(de_channel_fd(v.cli), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, (off_t)v.len);

	if (r)
		cr_skip_test("fallocate(PUNCH_HOLE) on a memfd: %s", strerror(errno));
	cr_assert_eq(rd32(v.m, L_SQ_TAIL), 0);
	cr_assert_eq(de_channel_pop(v.srv, &s), -EBADMSG, "tail 0 behind head 1");
	assert_stays_broken(v.srv, "punched holes");
	victim_free(&v);

	/* the rings alone: the indices still agree, the slots are zeros */
	v = victim_new(8, 16);
	struct de_sqe one = sqe_for(3), zero = { 0 };
	cr_assert_eq(de_channel_submit(v.cli, &one), 0);
	cr_assert_eq(fallocate(de_channel_fd(v.cli), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			       L_HDR, (off_t)(v.len - L_HDR)), 0);
	cr_assert_eq(de_channel_pop(v.srv, &s), 0);
	cr_assert(sqe_eq(&s, &zero), "the slot should read back as zeros");
	cr_assert_eq(de_channel_pop(v.srv, &s), -EAGAIN);
	cr_assert_not(de_channel_broken(v.srv));
	victim_free(&v);
}

/*
 * 10,000 random scribbles (fixed seed). The test knows the daemon's private indices
 * exactly (its own count of successful pops and posts), so where a scribble sets one
 * index relative to them it predicts the answer; elsewhere it only requires an answer
 * from the allowed set. A canary fills the data area: no scribble may make the daemon
 * write there. A broken channel is checked, then replaced by a fresh one.
 */
Test(untrusted, random_scribbles, .timeout = TIMEOUT)
{
	enum { ITERS = 10000, SQ = 16, CQ = 32 };
	uint64_t seed = 0xc0ffee;
	unsigned n_pop_ok = 0, n_pop_again = 0, n_bad = 0, n_post_ok = 0, n_post_again = 0;
	unsigned n_predicted = 0, n_channels = 0;
	uint64_t t_end = now_ns() + 20 * DEADLINE_NS;
	struct victim v = { 0 };
	uint32_t heads = 0, tails = 0; /* the daemon's private sq head and cq tail */
	uint64_t dbytes = 0;
	unsigned char *data = NULL;

	for (unsigned it = 0; it < ITERS; it++) {
		cr_assert_lt(now_ns(), t_end, "random scribbles: too slow at %u", it);
		if (!v.srv) {
			v = victim_new(SQ, CQ);
			heads = 1; /* check_layout made one round trip */
			tails = 1;
			data = de_channel_data(v.srv, &dbytes);
			memset(data, 0x5c, dbytes);
			n_channels++;
		}
		unsigned kind = (unsigned)(rng_next(&seed) % 8);
		int want_pop = 99, want_post = 99; /* 99: no prediction */
		uint32_t d;
		switch (kind) {
		case 0: /* the whole header page */
			fill_random(v.m, L_HDR, &seed);
			break;
		case 1: /* one word anywhere in the header page */
			wr32(v.m, (size_t)(rng_next(&seed) % (L_HDR / 4)) * 4, (uint32_t)rng_next(&seed));
			break;
		case 2: /* one word among the indices and flags */
			wr32(v.m, (size_t)(rng_next(&seed) % 128) * 4, (uint32_t)rng_next(&seed));
			break;
		case 3: /* sq tail near the daemon's head: -2 .. SQ + 2 */
			d = (uint32_t)(rng_next(&seed) % (SQ + 5)) - 2;
			wr32(v.m, L_SQ_TAIL, heads + d);
			want_pop = d > SQ ? -EBADMSG : d == 0 ? -EAGAIN : 0;
			break;
		case 4: /* cq head near the daemon's tail: used = -2 .. CQ + 2 */
			d = (uint32_t)(rng_next(&seed) % (CQ + 5)) - 2;
			wr32(v.m, L_CQ_HEAD, tails - d);
			want_post = d > CQ ? -EBADMSG : d == CQ ? -EAGAIN : 0;
			break;
		case 5: /* the SQ slots */
			fill_random(v.m + v.sq_off, SQ * sizeof(struct de_sqe), &seed);
			break;
		case 6: /* the CQ slots */
			fill_random(v.m + v.cq_off, CQ * sizeof(struct de_cqe), &seed);
			break;
		case 7: { /* the client API, as a well-behaved client would use it */
			struct de_sqe s = sqe_for(it);
			int r = de_channel_submit(v.cli, &s);
			cr_assert(r == 0 || r == -EAGAIN || r == -EBADMSG, "client submit: %d", r);
			struct de_cqe e;
			r = de_channel_reap(v.cli, &e, false, 0, 0);
			cr_assert(r == 0 || r == -EAGAIN || r == -EBADMSG, "client reap: %d", r);
			break;
		}
		}

		bool broken = false;
		for (int k = 0; k < 4 && !broken; k++) {
			struct de_sqe s;
			int r = de_channel_pop(v.srv, &s);
			if (k == 0 && want_pop != 99) {
				cr_assert_eq(r, want_pop, "it %u: pop %d, want %d", it, r, want_pop);
				n_predicted++;
			}
			if (r == 0) {
				heads++;
				n_pop_ok++;
			} else if (r == -EAGAIN) {
				n_pop_again++;
			} else {
				cr_assert_eq(r, -EBADMSG, "it %u kind %u: pop %d", it, kind, r);
				broken = true;
			}
		}
		if (!broken) {
			struct de_cqe e = cqe_for(it);
			int r = de_channel_post(v.srv, &e);
			if (want_post != 99) {
				cr_assert_eq(r, want_post, "it %u: post %d, want %d", it, r, want_post);
				n_predicted++;
			}
			if (r == 0) {
				tails++;
				n_post_ok++;
			} else if (r == -EAGAIN) {
				n_post_again++;
			} else {
				cr_assert_eq(r, -EBADMSG, "it %u kind %u: post %d", it, kind, r);
				broken = true;
			}
		}
		if (!broken) {
			int r = de_channel_sleep_prepare(v.srv);
			cr_assert(r == 0 || r == 1 || r == -EBADMSG, "it %u: sleep_prepare %d", it, r);
			de_channel_sleep_done(v.srv);
			broken = r == -EBADMSG;
		}
		if (!broken) {
			cr_assert_not(de_channel_broken(v.srv), "it %u: broken without -EBADMSG", it);
			continue;
		}
		n_bad++;
		assert_stays_broken(v.srv, "random scribble");
		for (uint64_t i = 0; i < dbytes; i++)
			cr_assert_eq(data[i], 0x5c, "it %u: the data area changed at %llu", it,
				     (unsigned long long)i);
		victim_free(&v);
		v = (struct victim){ 0 };
	}
	if (v.srv)
		victim_free(&v);
	cr_log_info("random scribbles: %u pops, %u -EAGAIN, %u posts, %u full, %u broken, %u predicted, %u channels",
		    n_pop_ok, n_pop_again, n_post_ok, n_post_again, n_bad, n_predicted, n_channels);
	cr_assert_gt(n_pop_ok, 100);
	cr_assert_gt(n_pop_again, 100);
	cr_assert_gt(n_post_ok, 100);
	cr_assert_gt(n_post_again, 10);
	cr_assert_gt(n_bad, 100);
	cr_assert_gt(n_predicted, 1000);
}

/* ------------------------------------------------------------------------- */
/* attach: fds that are not (good) channels                                   */
/* ------------------------------------------------------------------------- */

static int attach_result(int fd)
{
	de_channel *c = NULL;
	int r = de_channel_attach(fd, &c);
	if (r)
		cr_assert_null(c, "attach failed (%d) but returned a handle", r);
	else
		de_channel_destroy(c);
	return r;
}

Test(attach, random_and_tiny_files, .timeout = TIMEOUT)
{
	unsigned n = 0;
	for (uint64_t seed = 1; seed <= 20; seed++) {
		int fd = memfd_with(-1, 64 * 1024, seed);
		cr_assert_eq(attach_result(fd), -EBADMSG, "64 KiB of random bytes (seed %llu)",
			     (unsigned long long)seed);
		close(fd);
		n++;
	}
	int fd = memfd_with(-1, 100, 5);
	cr_assert_eq(attach_result(fd), -EBADMSG, "100 random bytes");
	close(fd);
	fd = memfd_with(-1, 0, 5);
	cr_assert_eq(attach_result(fd), -EBADMSG, "an empty file");
	close(fd);

	/* the first 100 bytes of a real channel: a good magic, and nothing behind it */
	de_channel *srv = create_or_die(8, 16, 4096);
	fd = memfd_with(de_channel_fd(srv), 100, 0);
	cr_assert_eq(attach_result(fd), -EBADMSG, "100 bytes of a real header");
	close(fd);
	fd = memfd_with(de_channel_fd(srv), L_HDR, 0);
	cr_assert_eq(attach_result(fd), -EBADMSG, "the header page alone");
	close(fd);
	de_channel_destroy(srv);
	cr_assert_eq(n, 20);
}

Test(attach, bad_fds, .timeout = TIMEOUT)
{
	int r = attach_result(-1);
	cr_assert(r == -EBADF || r == -EINVAL, "attach(-1): %d", r);
	int fd = dup(0);
	cr_assert_geq(fd, 0);
	close(fd); /* a closed descriptor */
	r = attach_result(fd);
	cr_assert(r == -EBADF || r == -EINVAL, "attach(closed fd): %d", r);
	fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	cr_assert_geq(fd, 0);
	r = attach_result(fd);
	cr_assert(r == -EBADMSG || r == -EINVAL || r == -ENODEV, "attach(/dev/null): %d", r);
	close(fd);
	int p[2];
	cr_assert_eq(pipe(p), 0);
	r = attach_result(p[0]);
	cr_assert(r < 0, "attach(pipe): %d", r);
	close(p[0]);
	close(p[1]);
}

Test(attach, other_version_is_eproto, .timeout = TIMEOUT)
{
	de_channel *srv = create_or_die(8, 16, 4096);
	size_t len;
	unsigned char *m = map_raw(srv, &len);
	unsigned char old = m[L_VERSION];

	cr_assert_eq(attach_result(de_channel_fd(srv)), 0, "the unedited channel attaches");
	for (unsigned v = 0; v < 256; v += 37) {
		if (v == old)
			continue;
		m[L_VERSION] = (unsigned char)v;
		cr_assert_eq(attach_result(de_channel_fd(srv)), -EPROTO, "version byte %u (was %u)", v, old);
	}
	m[L_VERSION] = old;
	cr_assert_eq(attach_result(de_channel_fd(srv)), 0, "version restored");
	munmap(m, len);
	de_channel_destroy(srv);
}

Test(attach, sizes_beyond_the_file_are_ebadmsg, .timeout = TIMEOUT)
{
	de_channel *srv = create_or_die(8, 16, 4 * 4096);
	int sfd = de_channel_fd(srv);
	size_t len = fd_size(sfd);

	/* copies of the whole file attach; shorter copies do not */
	int fd = memfd_with(sfd, len, 0);
	cr_assert_eq(attach_result(fd), 0, "a full copy of the file");
	close(fd);
	fd = memfd_with(sfd, len - 4096, 0);
	cr_assert_eq(attach_result(fd), -EBADMSG, "the file is a page short of its sizes");
	close(fd);
	fd = memfd_with(sfd, len - 1, 0);
	cr_assert_eq(attach_result(fd), -EBADMSG, "the file is a byte short of its sizes");
	close(fd);

	/* the header's data_bytes claims more than the file holds */
	static const uint64_t claims[] = { 8 * 4096, 1ull << 32, (1ull << 32) + 4096, UINT64_MAX & ~4095ull };
	for (unsigned i = 0; i < 4; i++) {
		fd = memfd_with(sfd, len, 0);
		cr_assert_eq(pwrite(fd, &claims[i], 8, L_DATA_BYTES), 8);
		cr_assert_eq(attach_result(fd), -EBADMSG, "data_bytes %llu in a %zu-byte file",
			     (unsigned long long)claims[i], len);
		close(fd);
	}
	/* ring sizes that do not fit, or are not powers of two */
	static const uint32_t sqs[] = { 4096, 1u << 31, 7, 0, UINT32_MAX };
	for (unsigned i = 0; i < 5; i++) {
		fd = memfd_with(sfd, len, 0);
		cr_assert_eq(pwrite(fd, &sqs[i], 4, L_SQ_ENTRIES), 4);
		cr_assert_eq(attach_result(fd), -EBADMSG, "sq_entries %u", sqs[i]);
		close(fd);
		fd = memfd_with(sfd, len, 0);
		cr_assert_eq(pwrite(fd, &sqs[i], 4, L_CQ_ENTRIES), 4);
		cr_assert_eq(attach_result(fd), -EBADMSG, "cq_entries %u", sqs[i]);
		close(fd);
	}
	/* an sq_off pointing past the file */
	uint64_t off = len;
	fd = memfd_with(sfd, len, 0);
	cr_assert_eq(pwrite(fd, &off, 8, L_SQ_OFF), 8);
	cr_assert_eq(attach_result(fd), -EBADMSG, "sq_off at the end of the file");
	close(fd);
	de_channel_destroy(srv);
}

/* ------------------------------------------------------------------------- */
/* threads                                                                    */
/* ------------------------------------------------------------------------- */

struct duo {
	de_channel *srv, *cli;
	uint64_t n;
	bool sleeping;
	uint64_t t_end;
	struct failure f;
	atomic_bool stop;
	/* server's counts */
	uint64_t popped, posted, woken, timeouts, prepared_busy, post_full;
	/* client's counts */
	uint64_t submitted, reaped, reap_waits;
};

static void *server_thread(void *arg)
{
	struct duo *d = arg;
	unsigned idle = 0;

	while (d->popped < d->n && !atomic_load(&d->stop) && !d->f.failed) {
		if (now_ns() > d->t_end) {
			fail_at(&d->f, "server: deadline, %llu of %llu popped",
				(unsigned long long)d->popped, (unsigned long long)d->n);
			atomic_store(&d->stop, true);
			break;
		}
		struct de_sqe s, want = sqe_for(d->popped);
		int r = de_channel_pop(d->srv, &s);
		if (r == 0) {
			idle = 0;
			if (!sqe_eq(&s, &want)) {
				fail_at(&d->f, "server: pop %llu has user_data %llu or another field wrong",
					(unsigned long long)d->popped, (unsigned long long)s.user_data);
				break;
			}
			d->popped++;
			struct de_cqe e = cqe_for(s.user_data);
			while ((r = de_channel_post(d->srv, &e)) == -EAGAIN && now_ns() < d->t_end) {
				d->post_full++;
				sched_yield();
			}
			if (r) {
				fail_at(&d->f, "server: post %llu: %d", (unsigned long long)d->posted, r);
				break;
			}
			d->posted++;
			continue;
		}
		if (r != -EAGAIN) {
			fail_at(&d->f, "server: pop: %d", r);
			break;
		}
		if (!d->sleeping) {
			cpu_relax();
			if (++idle % 1024 == 0)
				sched_yield(); /* a busy poller on an oversubscribed machine */
			continue;
		}
		r = de_channel_sleep_prepare(d->srv);
		if (r == 0) {
			de_channel *chs[1] = { d->srv };
			int w = de_channels_wait(chs, 1, 100);
			if (w == 0)
				d->woken++;
			else if (w == -ETIMEDOUT)
				d->timeouts++;
			else
				fail_at(&d->f, "server: de_channels_wait: %d", w);
		} else if (r == 1) {
			d->prepared_busy++;
		} else {
			fail_at(&d->f, "server: sleep_prepare: %d", r);
		}
		de_channel_sleep_done(d->srv);
	}
	return NULL;
}

/* Milliseconds to the deadline, at most cap and at least 1: no wait outlives the test. */
static int ms_left(uint64_t t_end, int cap)
{
	uint64_t t = now_ns();
	uint64_t left = t < t_end ? (t_end - t) / MS : 0;
	return left < 1 ? 1 : left > (uint64_t)cap ? cap : (int)left;
}

static bool client_take(struct duo *d, const struct de_cqe *e)
{
	struct de_cqe want = cqe_for(d->reaped);
	if (!cqe_eq(e, &want)) {
		fail_at(&d->f, "client: completion %llu has user_data %llu or another field wrong",
			(unsigned long long)d->reaped, (unsigned long long)e->user_data);
		return false;
	}
	d->reaped++;
	return true;
}

static void *client_thread(void *arg)
{
	struct duo *d = arg;
	const uint64_t burst = 48;
	int r;

	while (d->reaped < d->n && !d->f.failed) {
		if (now_ns() > d->t_end) {
			fail_at(&d->f, "client: deadline, %llu submitted, %llu reaped",
				(unsigned long long)d->submitted, (unsigned long long)d->reaped);
			break;
		}
		/* submit: everything that fits (busy), or one burst (sleeping) */
		uint64_t stop = d->sleeping ? d->submitted + burst : d->n;
		while (d->submitted < d->n && d->submitted < stop) {
			struct de_sqe s = sqe_for(d->submitted);
			if ((r = de_channel_submit(d->cli, &s)) == -EAGAIN)
				break;
			if (r) {
				fail_at(&d->f, "client: submit: %d", r);
				goto out;
			}
			d->submitted++;
		}
		/* reap: wait for one, then take what is there; sleeping: the whole burst */
		struct de_cqe e;
		while (d->reaped < d->submitted) {
			if (atomic_load(&d->stop) || d->f.failed)
				goto out; /* the server failed */
			r = d->sleeping ? de_channel_reap(d->cli, &e, true, 0, ms_left(d->t_end, 1000))
					: de_channel_reap(d->cli, &e, true, 1000000000ull, ms_left(d->t_end, 2000));
			d->reap_waits++;
			if (r == -ETIMEDOUT && now_ns() < d->t_end)
				continue; /* a spurious early return is not a failure; the deadline is */
			if (r) {
				fail_at(&d->f, "client: reap %llu (wait): %d", (unsigned long long)d->reaped, r);
				goto out;
			}
			if (!client_take(d, &e))
				goto out;
			while ((r = de_channel_reap(d->cli, &e, false, 0, 0)) == 0)
				if (!client_take(d, &e))
					goto out;
			if (r != -EAGAIN) {
				fail_at(&d->f, "client: reap: %d", r);
				goto out;
			}
			if (!d->sleeping)
				break; /* refill the SQ */
		}
		if (d->sleeping)
			usleep(100); /* idle long enough for the server to sleep */
	}
out:
	atomic_store(&d->stop, true);
	return NULL;
}

static void run_duo(bool sleeping)
{
	struct duo d = { .n = 200000, .sleeping = sleeping };
	d.srv = create_or_die(256, 512, 4096); /* big batches survive an oversubscribed CPU */
	d.cli = attach_or_die(d.srv);
	pthread_t ts, tc;
	uint64_t t0 = now_ns();

	/* 200,000 round trips: a correctness run, not a speed test (dynemb-bench channel
	 * measures speed), so its deadline allows a slow, shared CPU and TSan's slowdown */
	d.t_end = t0 + DUO_DEADLINE_NS;
	cr_assert_eq(pthread_create(&ts, NULL, server_thread, &d), 0);
	cr_assert_eq(pthread_create(&tc, NULL, client_thread, &d), 0);
	pthread_join(tc, NULL);
	pthread_join(ts, NULL);
	uint64_t dt = now_ns() - t0;
	cr_log_info("%s: %llu round trips in %.3f s; server woken %llu, timed out %llu, "
		    "prepare found work %llu, CQ full %llu; client reap waits %llu",
		    sleeping ? "sleeping" : "busy", (unsigned long long)d.reaped, (double)dt * 1e-9,
		    (unsigned long long)d.woken, (unsigned long long)d.timeouts,
		    (unsigned long long)d.prepared_busy, (unsigned long long)d.post_full,
		    (unsigned long long)d.reap_waits);
	cr_assert_not(d.f.failed, "%s", d.f.msg);
	cr_assert_eq(d.popped, d.n);
	cr_assert_eq(d.posted, d.n);
	cr_assert_eq(d.submitted, d.n);
	cr_assert_eq(d.reaped, d.n);
	if (sleeping)
		cr_assert_geq(d.woken, 3, "the server slept and was woken only %llu times",
			      (unsigned long long)d.woken);
	cr_assert_not(de_channel_broken(d.srv));
	cr_assert_not(de_channel_broken(d.cli));
	struct de_sqe s;
	struct de_cqe e;
	cr_assert_eq(de_channel_pop(d.srv, &s), -EAGAIN);
	cr_assert_eq(de_channel_reap(d.cli, &e, false, 0, 0), -EAGAIN);
	de_channel_destroy(d.cli);
	de_channel_destroy(d.srv);
}

Test(threads, busy_polling, .timeout = DUO_TIMEOUT) { run_duo(false); }
Test(threads, sleeping_both_sides, .timeout = DUO_TIMEOUT) { run_duo(true); }

/* ------------------------------------------------------------------------- */
/* process                                                                    */
/* ------------------------------------------------------------------------- */

#define RT_N 100000u
#define RT_WINDOW 32u
#define RT_SLOT 256u /* bytes of data area per outstanding request: up to 32 keys */

static uint64_t rt_key(uint64_t i, uint32_t k)
{
	return (i << 8 | k) * 0x9e3779b97f4a7c15ull + 0x1234567;
}

/* Child exit codes, so a failure says where. */
enum { CH_OK = 0, CH_ATTACH = 10, CH_SUBMIT, CH_REAP, CH_WRONG, CH_DEADLINE, CH_SIZE };

/* The forked client: RT_N requests, at most RT_WINDOW in flight; request i writes its
 * keys into slot i % RT_WINDOW and expects their sum in aux0. */
static int child_round_trips(int fd)
{
	de_channel *c = NULL;
	uint64_t bytes;
	if (de_channel_attach(fd, &c))
		return CH_ATTACH;
	uint64_t *data = de_channel_data(c, &bytes);
	if (bytes < RT_WINDOW * RT_SLOT)
		return CH_SIZE;
	uint64_t sub = 0, got = 0, t_end = now_ns() + DEADLINE_NS;
	while (got < RT_N) {
		if (now_ns() > t_end) {
			fprintf(stderr, "child: deadline at %llu of %u\n", (unsigned long long)got, RT_N);
			return CH_DEADLINE;
		}
		while (sub < RT_N && sub - got < RT_WINDOW) {
			uint32_t count = 1 + (uint32_t)(sub % 32);
			uint64_t off = (sub % RT_WINDOW) * RT_SLOT;
			for (uint32_t k = 0; k < count; k++)
				data[off / 8 + k] = rt_key(sub, k);
			struct de_sqe s = { .op = 1, .count = count, .user_data = sub,
					    .keys_off = off, .keys_len = count * 8ull };
			int r = de_channel_submit(c, &s);
			if (r == -EAGAIN)
				break;
			if (r)
				return CH_SUBMIT;
			sub++;
		}
		struct de_cqe e;
		int r = de_channel_reap(c, &e, true, 0, 1000); /* sleeps: no spinning */
		if (r) {
			fprintf(stderr, "child: reap %llu: %d\n", (unsigned long long)got, r);
			return CH_REAP;
		}
		do {
			uint32_t count = 1 + (uint32_t)(got % 32);
			uint64_t sum = 0;
			for (uint32_t k = 0; k < count; k++)
				sum += rt_key(got, k);
			if (e.user_data != got || e.res != 0 || e.count != count || e.aux0 != sum ||
			    e.aux1 != ~got) {
				fprintf(stderr, "child: completion %llu wrong (user_data %llu res %d count %u)\n",
					(unsigned long long)got, (unsigned long long)e.user_data, e.res, e.count);
				return CH_WRONG;
			}
			got++;
		} while (de_channel_reap(c, &e, false, 0, 0) == 0);
	}
	de_channel_destroy(c);
	return CH_OK;
}

/* Waits for pid until deadline t_end; kills it past that. Returns the wait status. */
static int reap_child(pid_t pid, uint64_t t_end)
{
	int status = 0;
	pid_t w;
	while ((w = waitpid(pid, &status, WNOHANG)) == 0 && now_ns() < t_end)
		usleep(1000);
	if (w == 0) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		cr_assert_fail("child %d did not finish in time", (int)pid);
	}
	cr_assert_eq(w, pid, "waitpid: %s", strerror(errno));
	return status;
}

Test(process, forked_client_round_trips_through_the_data_area, .timeout = TIMEOUT)
{
	de_channel *srv = create_or_die(64, 128, 64 * 1024);
	uint64_t bytes;
	const unsigned char *data = de_channel_data(srv, &bytes);
	uint64_t t0 = now_ns(), t_end = t0 + DEADLINE_NS + 200 * MS;
	uint64_t served = 0, woken = 0, bad_ranges = 0;
	int status = 0;
	bool child_done = false;

	fflush(NULL);
	pid_t pid = fork();
	cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
	if (pid == 0)
		_exit(child_round_trips(de_channel_fd(srv))); /* the fd is inherited */

	while (served < RT_N && now_ns() < t_end) {
		struct de_sqe s;
		int r = de_channel_pop(srv, &s);
		if (r == 0) {
			struct de_cqe e = { .user_data = s.user_data, .count = s.count, .aux1 = ~s.user_data };
			/* validate as a daemon would: a copy, then the ranges */
			if (s.keys_len != s.count * 8ull || s.keys_off % 8 ||
			    !de_channel_range_ok(srv, s.keys_off, s.keys_len)) {
				e.res = -EINVAL;
				bad_ranges++;
			} else {
				const uint64_t *keys = (const uint64_t *)(const void *)(data + s.keys_off);
				for (uint32_t k = 0; k < s.count; k++)
					e.aux0 += keys[k];
			}
			while ((r = de_channel_post(srv, &e)) == -EAGAIN && now_ns() < t_end)
				sched_yield();
			cr_assert_eq(r, 0, "post %llu: %d", (unsigned long long)served, r);
			served++;
			continue;
		}
		cr_assert_eq(r, -EAGAIN, "pop: %d", r);
		if (!child_done && waitpid(pid, &status, WNOHANG) == pid) {
			child_done = true;
			break; /* it gave up (or finished): see its status below */
		}
		r = de_channel_sleep_prepare(srv);
		cr_assert(r == 0 || r == 1, "sleep_prepare: %d", r);
		if (r == 0) {
			de_channel *chs[1] = { srv };
			r = de_channels_wait(chs, 1, 100);
			cr_assert(r == 0 || r == -ETIMEDOUT, "wait: %d", r);
			woken += r == 0;
		}
		de_channel_sleep_done(srv);
	}
	if (!child_done)
		status = reap_child(pid, now_ns() + 2000 * MS);
	uint64_t dt = now_ns() - t0;
	cr_log_info("process: %llu round trips in %.3f s, daemon woken %llu times",
		    (unsigned long long)served, (double)dt * 1e-9, (unsigned long long)woken);
	cr_assert(WIFEXITED(status), "child died: signal %d", WIFSIGNALED(status) ? WTERMSIG(status) : 0);
	cr_assert_eq(WEXITSTATUS(status), CH_OK, "child failed with code %d", WEXITSTATUS(status));
	cr_assert_eq(served, RT_N);
	cr_assert_eq(bad_ranges, 0);
	cr_assert_gt(woken, 0, "the daemon never slept");
	de_channel_destroy(srv);
}

/* A child that submits without end and is killed (by itself, after `die_after`
 * submissions, or by the parent when die_after is 0). It never reaps. */
static void child_submitter(int fd, uint64_t die_after)
{
	de_channel *c = NULL;
	if (de_channel_attach(fd, &c))
		_exit(CH_ATTACH);
	uint64_t t_end = now_ns() + DEADLINE_NS;
	for (uint64_t i = 0; now_ns() < t_end;) {
		struct de_sqe s = sqe_for(i);
		int r = de_channel_submit(c, &s);
		if (r == -EAGAIN) {
			sched_yield();
			continue;
		}
		if (r)
			_exit(CH_SUBMIT);
		if (++i == die_after)
			raise(SIGKILL);
	}
	_exit(CH_DEADLINE);
}

static void run_killed_client(uint64_t die_after)
{
	enum { SQ = 64, CQ = 128 };
	de_channel *srv = create_or_die(SQ, CQ, 4096);
	uint64_t t_end = now_ns() + DEADLINE_NS;
	uint64_t popped = 0, posted = 0, full = 0;
	int status = 0;
	bool dead = false, killed_it = false;

	fflush(NULL);
	pid_t pid = fork();
	cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
	if (pid == 0)
		child_submitter(de_channel_fd(srv), die_after);

	/* serve until the child is dead and the SQ is empty; no call may block */
	for (;;) {
		cr_assert_lt(now_ns(), t_end, "killed client: deadline (%llu popped)", (unsigned long long)popped);
		struct de_sqe s, want = sqe_for(popped);
		int r = de_channel_pop(srv, &s);
		if (r == 0) {
			cr_assert(sqe_eq(&s, &want), "pop %llu differs", (unsigned long long)popped);
			popped++;
			struct de_cqe e = cqe_for(s.user_data);
			r = de_channel_post(srv, &e); /* nobody reaps: fills up, then -EAGAIN */
			cr_assert(r == 0 || r == -EAGAIN, "post: %d", r);
			if (r == 0)
				posted++;
			else
				full++;
			if (!die_after && !killed_it && popped >= 3000) {
				kill(pid, SIGKILL);
				killed_it = true;
			}
			continue;
		}
		cr_assert_eq(r, -EAGAIN, "pop: %d", r);
		if (dead)
			break;
		pid_t w = waitpid(pid, &status, WNOHANG);
		cr_assert_geq(w, 0);
		dead = w == pid; /* then one more pass over the SQ */
	}
	cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "child status %#x", status);
	if (die_after)
		cr_assert_eq(popped, die_after, "popped %llu of the %llu it submitted",
			     (unsigned long long)popped, (unsigned long long)die_after);
	else
		cr_assert_geq(popped, 3000);
	cr_assert_eq(posted, CQ, "posted %llu before the CQ filled", (unsigned long long)posted);
	cr_assert_gt(full, 0);

	/* the dead client's channel stays usable and never blocks */
	struct de_sqe s;
	struct de_cqe e = cqe_for(0);
	for (int i = 0; i < 10; i++) {
		cr_assert_eq(de_channel_pop(srv, &s), -EAGAIN);
		cr_assert_eq(de_channel_post(srv, &e), -EAGAIN);
	}
	cr_assert_eq(de_channel_sleep_prepare(srv), 0);
	de_channel *chs[1] = { srv };
	uint64_t t0 = now_ns();
	cr_assert_eq(de_channels_wait(chs, 1, 50), -ETIMEDOUT);
	cr_assert_lt(now_ns() - t0, 2000 * MS);
	de_channel_sleep_done(srv);
	cr_assert_not(de_channel_broken(srv));
	de_channel_destroy(srv);
}

Test(process, client_kills_itself_while_submitting, .timeout = TIMEOUT) { run_killed_client(5000); }
Test(process, client_killed_by_the_daemon_while_submitting, .timeout = TIMEOUT) { run_killed_client(0); }

/* ------------------------------------------------------------------------- */
/* wait: de_channels_wait                                                     */
/* ------------------------------------------------------------------------- */

struct late_submit {
	de_channel *cli;
	unsigned delay_ms;
	struct failure f;
};

static void *submit_later(void *arg)
{
	struct late_submit *l = arg;
	usleep(l->delay_ms * 1000u);
	struct de_sqe s = sqe_for(42);
	int r = de_channel_submit(l->cli, &s);
	if (r)
		fail_at(&l->f, "late submit: %d", r);
	return NULL;
}

Test(wait, a_submission_on_one_of_three_wakes_the_waiter, .timeout = TIMEOUT)
{
	de_channel *chs[3];
	for (int i = 0; i < 3; i++)
		chs[i] = create_or_die(8, 16, 4096);
	de_channel *cli = attach_or_die(chs[1]);
	struct late_submit l = { .cli = cli, .delay_ms = 50 };
	pthread_t th;

	for (int i = 0; i < 3; i++)
		cr_assert_eq(de_channel_sleep_prepare(chs[i]), 0);
	cr_assert_eq(pthread_create(&th, NULL, submit_later, &l), 0);
	uint64_t t0 = now_ns();
	int r = de_channels_wait(chs, 3, 2000);
	uint64_t dt = now_ns() - t0;
	pthread_join(th, NULL);
	for (int i = 0; i < 3; i++)
		de_channel_sleep_done(chs[i]);
	cr_assert_not(l.f.failed, "%s", l.f.msg);
	cr_assert_eq(r, 0, "wait: %d", r);
	cr_assert_lt(dt, 1000 * MS, "woken after %llu ns (timeout 2 s)", (unsigned long long)dt);
	cr_assert_geq(dt, 20 * MS, "returned after %llu ns, before the submission", (unsigned long long)dt);

	struct de_sqe s, want = sqe_for(42);
	cr_assert_eq(de_channel_pop(chs[0], &s), -EAGAIN);
	cr_assert_eq(de_channel_pop(chs[1], &s), 0);
	cr_assert(sqe_eq(&s, &want));
	cr_assert_eq(de_channel_pop(chs[2], &s), -EAGAIN);

	/* nothing submitted: the timeout */
	for (int i = 0; i < 3; i++)
		cr_assert_eq(de_channel_sleep_prepare(chs[i]), 0);
	t0 = now_ns();
	r = de_channels_wait(chs, 3, 50);
	dt = now_ns() - t0;
	cr_assert_eq(r, -ETIMEDOUT, "idle wait: %d", r);
	cr_assert_geq(dt, 40 * MS);
	cr_assert_lt(dt, 2000 * MS);
	for (int i = 0; i < 3; i++)
		de_channel_sleep_done(chs[i]);

	de_channel_destroy(cli);
	for (int i = 0; i < 3; i++)
		de_channel_destroy(chs[i]);
}

/* A submission between sleep_prepare and the wait must not be lost. */
Test(wait, no_lost_wakeup_between_prepare_and_wait, .timeout = TIMEOUT)
{
	de_channel *srv = create_or_die(8, 16, 4096);
	de_channel *cli = attach_or_die(srv);
	de_channel *chs[1] = { srv };
	unsigned rounds = 0;

	for (uint64_t i = 0; i < 200; i++) {
		cr_assert_eq(de_channel_sleep_prepare(srv), 0);
		struct de_sqe s = sqe_for(i), got;
		cr_assert_eq(de_channel_submit(cli, &s), 0);
		uint64_t t0 = now_ns();
		int r = de_channels_wait(chs, 1, 2000);
		cr_assert_eq(r, 0, "round %llu: wait %d", (unsigned long long)i, r);
		cr_assert_lt(now_ns() - t0, 500 * MS, "round %llu: the wake-up was lost", (unsigned long long)i);
		de_channel_sleep_done(srv);
		cr_assert_eq(de_channel_sleep_prepare(srv), 1, "round %llu: work waiting", (unsigned long long)i);
		de_channel_sleep_done(srv);
		cr_assert_eq(de_channel_pop(srv, &got), 0);
		cr_assert(sqe_eq(&got, &s));
		rounds++;
	}
	/* a submission already there: prepare says do not sleep */
	struct de_sqe s = sqe_for(1);
	cr_assert_eq(de_channel_submit(cli, &s), 0);
	cr_assert_eq(de_channel_sleep_prepare(srv), 1);
	de_channel_sleep_done(srv);
	cr_assert_eq(rounds, 200);
	de_channel_destroy(cli);
	de_channel_destroy(srv);
}

Test(wait, limits, .timeout = TIMEOUT)
{
	enum { N = DE_CHANNELS_WAIT_MAX };
	de_channel *chs[N + 1];
	for (unsigned i = 0; i < N; i++) {
		chs[i] = create_or_die(2, 2, 4096);
		cr_assert_eq(de_channel_sleep_prepare(chs[i]), 0);
	}
	chs[N] = chs[0];

	cr_assert_eq(de_channels_wait(chs, N + 1, 10), -EINVAL, "n = 129");
	cr_assert_eq(de_channels_wait(chs, UINT32_MAX, 10), -EINVAL, "n = UINT_MAX");

	/* n = 128 is allowed: an idle set times out */
	uint64_t t0 = now_ns();
	int r = de_channels_wait(chs, N, 10);
	cr_assert_eq(r, -ETIMEDOUT, "n = 128, idle: %d", r);
	cr_assert_lt(now_ns() - t0, 2000 * MS);

	/* and a submission on the last one wakes it */
	de_channel *cli = attach_or_die(chs[N - 1]);
	struct de_sqe s = sqe_for(5);
	cr_assert_eq(de_channel_submit(cli, &s), 0);
	t0 = now_ns();
	r = de_channels_wait(chs, N, 2000);
	cr_assert_eq(r, 0, "n = 128, last one submitted: %d", r);
	cr_assert_lt(now_ns() - t0, 1000 * MS);
	de_channel_destroy(cli);

	/*
	 * n = 0: nothing can wake it. The contract allows 0 or -ETIMEDOUT; it must not
	 * block past its timeout. (channel.c sleeps the timeout and says -ETIMEDOUT.)
	 */
	t0 = now_ns();
	r = de_channels_wait(NULL, 0, 10);
	uint64_t dt = now_ns() - t0;
	cr_assert(r == 0 || r == -ETIMEDOUT, "n = 0: %d", r);
	cr_assert_lt(dt, 2000 * MS, "n = 0 took %llu ns", (unsigned long long)dt);
	r = de_channels_wait(chs, 0, 10);
	cr_assert(r == 0 || r == -ETIMEDOUT, "n = 0 with an array: %d", r);

	for (unsigned i = 0; i < N; i++) {
		de_channel_sleep_done(chs[i]);
		de_channel_destroy(chs[i]);
	}
}
