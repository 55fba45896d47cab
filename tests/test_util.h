/*
 * test_util.h — small helpers the table tests share: a splitmix64 mixer and its
 * inverse parts (so a test can map keys back to their index), a seeded generator, a
 * clock, and a checked calloc. Include after the Criterion header (or its stand-in).
 * mix64 and rng_next are de_mix64 and de_splitmix64_next (shm/de_shm.h) again, because
 * the daemon tests that include this header are built against dynemb.h alone.
 */
#ifndef DE_TEST_UTIL_H
#define DE_TEST_UTIL_H

#include <stdint.h>
#include <stdlib.h>
#include <time.h>

/* splitmix64's finalizer: a bijection on 64-bit values */
static inline uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	x ^= x >> 31;
	return x;
}

/* inverse of an odd multiplier mod 2^64 */
static inline uint64_t inv_odd(uint64_t c)
{
	uint64_t x = c; /* Newton: each step doubles the correct low bits */
	for (int i = 0; i < 6; i++)
		x *= 2 - c * x;
	return x;
}

/* inverse of y = x ^ (x >> s) */
static inline uint64_t unxorshift(uint64_t y, unsigned s)
{
	uint64_t x = y;
	for (unsigned k = s; k < 64; k += s)
		x = y ^ (x >> s);
	return x;
}

static inline uint64_t rng_next(uint64_t *s)
{
	*s += 0x9e3779b97f4a7c15ull;
	return mix64(*s);
}

static inline uint64_t rng_below(uint64_t *s, uint64_t n)
{
	return n ? rng_next(s) % n : 0;
}

static inline double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline void *xcalloc(size_t n, size_t sz)
{
	void *p = calloc(n, sz);
	cr_assert_not_null(p, "calloc(%zu, %zu)", n, sz);
	return p;
}

#endif
