/*
 * mix.h — splitmix64 for the client programs in tools/ (crashtest.c, demo_client.c).
 * They are built against the public dynemb.h alone, so they do not reach into libdeshm
 * for its de_splitmix64 (shm/de_shm.h); this is the same function, and the keys and
 * values these programs derive from it must not change.
 */
#ifndef DE_TOOLS_MIX_H
#define DE_TOOLS_MIX_H

#include <stdint.h>

/* splitmix64's output for state x: a bijection on 64-bit values */
static inline uint64_t mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

#endif
