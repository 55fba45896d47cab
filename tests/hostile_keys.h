/*
 * hostile_keys.h — tests only: the 8-byte key whose seeded xxh3 is a chosen hash, for the
 * hash-flooding tests (test_shm_hostile.c on the table, test_index_refusals.c through the
 * daemon). Needs <xxhash.h> included with XXH_INLINE_ALL first (its kSecret and helpers).
 */
#ifndef DYNEMB_TESTS_HOSTILE_KEYS_H
#define DYNEMB_TESTS_HOSTILE_KEYS_H

#include <stdint.h>

static uint64_t rotl64(uint64_t x, unsigned r) { r &= 63; return r ? x << r | x >> (64 - r) : x; }

/* The multiplicative inverse of odd c mod 2^64 (Newton's iteration). */
static uint64_t inv_mul(uint64_t c)
{
	uint64_t x = c;
	for (int i = 0; i < 6; i++)
		x *= 2 - c * x;
	return x;
}

/*
 * The 8-byte key whose XXH3_64bits_withSeed is h (xxh3 0.8's 4..8-byte path, undone
 * step by step). The mix x ^ rotl(x, 49) ^ rotl(x, 24) is the circulant 1 + z^49 + z^24
 * over GF(2)[z]/(z^64 + 1), where a^64 = a(1) = 1, so its inverse is a^63: the product
 * of a^(2^i) = a(z^(2^i)) for i = 0..5. Callers check the result against xxh3.
 */
static uint64_t key_with_hash(uint64_t h, uint64_t seed)
{
	const uint64_t m = 0x9FB21C651E98DF25ull, mi = inv_mul(m);
	uint64_t x = h ^ (h >> 28) ^ (h >> 56);  /* xorshift64(x, 28) */
	x *= mi;
	x ^= (x >> 35) + 8;                      /* h ^= (h >> 35) + len */
	x *= mi;
	for (unsigned i = 0; i < 6; i++)          /* h ^= rotl(h, 49) ^ rotl(h, 24) */
		x = x ^ rotl64(x, 49u << i) ^ rotl64(x, 24u << i);
	uint64_t s = seed ^ ((uint64_t)XXH_swap32((uint32_t)seed) << 32);
	uint64_t bitflip = (XXH_readLE64(XXH3_kSecret + 8) ^ XXH_readLE64(XXH3_kSecret + 16)) - s;
	return rotl64(x ^ bitflip, 32); /* input64 = (low word << 32) | high word */
}

#endif
