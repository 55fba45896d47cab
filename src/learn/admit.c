/*
 * admit.c — admission of new keys (public header: de_learn.h, "Admission"): a count-min
 * sketch with conservative update and TinyLFU-style aging, or a probability per sighting.
 *
 * Owns: the sketch (process memory, depth * width u16 counters: de_admit_sketch_bytes,
 * which the daemon counts in the table's memory budget) and the statistics.
 * Never: stores keys, touches a table, takes a lock (several daemon workers call
 * de_admit_check at once; counters are relaxed atomics: they are estimates, and a lost
 * increment under a race costs one sighting, never memory safety).
 * Callers: the daemon's lookup path, for keys the table does not hold yet.
 *
 * Saved state (de_admit_save / de_admit_load), COUNT mode only, little-endian:
 *   0 u8[8] "DEADMIT1"  8 u32 width  12 u32 depth  16 u32 threshold  20 u32 reserved 0
 *   24 u64 seed  32 u64 sightings  40 u64 admitted  48 u64 filtered  56 u64 dropped
 *   64 u64 agings  72 u16[depth * width] counters, then u64 XXH64 (seed 0) of all before.
 * Written to path.tmp, fsync'ed, renamed over path, directory fsync'ed. Counters are read
 * with relaxed loads while other threads count: a save is a fuzzy copy (an estimate, as
 * the sketch itself).
 */
#include "de_learn.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <xxhash.h>

#define LD(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define ST(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define ADD(p, v) __atomic_fetch_add((p), (v), __ATOMIC_RELAXED)

#define MAX_DEPTH 8u
#define CMAX 65535u

struct de_admit {
	struct de_admit_config cfg;
	uint16_t *c;         /* depth rows of width counters */
	uint64_t wmask;
	uint64_t sightings;  /* COUNT: since the last aging; PROB: draw counter */
	uint64_t admitted, filtered, dropped, agings;
	uint32_t aging_lock; /* 1 while one thread halves the counters */
};

uint64_t de_admit_sketch_bytes(uint32_t width, uint32_t depth)
{
	if (!width)
		width = 1u << 20;
	if (!depth)
		depth = 4;
	if (depth > MAX_DEPTH || width > (1u << 28))
		return 0;
	return (uint64_t)width * depth * sizeof(uint16_t) + sizeof(struct de_admit);
}

int de_admit_create(const struct de_admit_config *cfg, de_admit **out)
{
	if (!cfg || !out)
		return -EINVAL;
	struct de_admit_config c = *cfg;
	switch (c.mode) {
	case DE_ADMIT_ALL:
		break;
	case DE_ADMIT_COUNT:
		if (!c.width)
			c.width = 1u << 20;
		if (!c.depth)
			c.depth = 4;
		if (c.threshold < 1 || c.threshold > CMAX || c.depth > MAX_DEPTH || c.width < 64 ||
		    c.width > (1u << 28) || (c.width & (c.width - 1)))
			return -EINVAL;
		break;
	case DE_ADMIT_PROB:
		if (!(c.probability > 0.0 && c.probability <= 1.0)) /* rejects NaN too */
			return -EINVAL;
		break;
	default:
		return -EINVAL;
	}
	de_admit *a = calloc(1, sizeof *a);
	if (!a)
		return -ENOMEM;
	a->cfg = c;
	if (c.mode == DE_ADMIT_COUNT) {
		a->c = calloc((size_t)c.width * c.depth, sizeof(uint16_t));
		if (!a->c) {
			free(a);
			return -ENOMEM;
		}
		a->wmask = c.width - 1;
	}
	*out = a;
	return 0;
}

void de_admit_destroy(de_admit *a)
{
	if (!a)
		return;
	free(a->c);
	free(a);
}

/* Counter indexes of key: double hashing of one 128-bit xxh3 (Kirsch and Mitzenmacher). */
static void slots(const de_admit *a, uint64_t key, uint64_t idx[MAX_DEPTH])
{
	XXH128_hash_t h = XXH3_128bits_withSeed(&key, sizeof key, a->cfg.seed);
	uint64_t h2 = h.high64 | 1;
	for (uint32_t i = 0; i < a->cfg.depth; i++)
		idx[i] = (uint64_t)i * a->cfg.width + ((h.low64 + i * h2) & a->wmask);
}

static uint32_t estimate(const de_admit *a, const uint64_t idx[MAX_DEPTH])
{
	uint32_t m = CMAX;
	for (uint32_t i = 0; i < a->cfg.depth; i++) {
		uint32_t v = LD(&a->c[idx[i]]);
		if (v < m)
			m = v;
	}
	return m;
}

/* TinyLFU reset: halve every counter. One thread does it; others keep counting into
 * counters being halved (their increments may be halved too: an estimate). */
static __attribute__((cold)) void age(de_admit *a)
{
	uint32_t z = 0;
	if (!__atomic_compare_exchange_n(&a->aging_lock, &z, 1, false, __ATOMIC_ACQUIRE,
					 __ATOMIC_RELAXED))
		return;
	size_t n = (size_t)a->cfg.width * a->cfg.depth;
	for (size_t i = 0; i < n; i++)
		ST(&a->c[i], (uint16_t)(LD(&a->c[i]) >> 1));
	ADD(&a->agings, 1);
	__atomic_store_n(&a->aging_lock, 0, __ATOMIC_RELEASE);
}

static bool sight_count(de_admit *a, uint64_t key)
{
	uint64_t idx[MAX_DEPTH];
	slots(a, key, idx);
	uint32_t m = estimate(a, idx);
	if (m < CMAX) {
		/* conservative update: only the counters at the minimum go up */
		for (uint32_t i = 0; i < a->cfg.depth; i++)
			if (LD(&a->c[idx[i]]) == m)
				ST(&a->c[idx[i]], (uint16_t)(m + 1));
		m++;
	}
	if (a->cfg.aging_period) {
		uint64_t s = ADD(&a->sightings, 1) + 1;
		if (s >= a->cfg.aging_period) {
			ST(&a->sightings, 0);
			age(a);
		}
	}
	return m >= a->cfg.threshold;
}

static bool sight_prob(de_admit *a, uint64_t key)
{
	uint64_t n = ADD(&a->sightings, 1);
	uint64_t h = XXH3_64bits_withSeed(&key, sizeof key, a->cfg.seed ^ (n * 0x9E3779B97F4A7C15ull));
	/* 53 random bits as a uniform double in [0, 1) */
	return (double)(h >> 11) * 0x1.0p-53 < a->cfg.probability;
}

int de_admit_check(de_admit *a, const uint64_t *keys, size_t n, uint8_t *admit_out)
{
	if (!a || (n && (!keys || !admit_out)))
		return -EINVAL;
	uint64_t yes = 0, no = 0;
	for (size_t i = 0; i < n; i++) {
		bool ok;
		if (!keys[i]) {
			admit_out[i] = 1;
			continue;
		}
		switch (a->cfg.mode) {
		case DE_ADMIT_COUNT:
			ok = sight_count(a, keys[i]);
			break;
		case DE_ADMIT_PROB:
			ok = sight_prob(a, keys[i]);
			break;
		default:
			ok = true;
		}
		admit_out[i] = ok;
		if (ok)
			yes++;
		else
			no++;
	}
	ADD(&a->admitted, yes);
	ADD(&a->filtered, no);
	return 0;
}

uint32_t de_admit_estimate(const de_admit *a, uint64_t key)
{
	if (!a || a->cfg.mode != DE_ADMIT_COUNT || !key)
		return 0;
	uint64_t idx[MAX_DEPTH];
	slots(a, key, idx);
	return estimate(a, idx);
}

void de_admit_drop_grads(de_admit *a, uint64_t n)
{
	if (a)
		ADD(&a->dropped, n);
}

int de_admit_stats(const de_admit *a, struct de_admit_stats *out)
{
	if (!a || !out)
		return -EINVAL;
	out->admitted = LD(&a->admitted);
	out->filtered = LD(&a->filtered);
	out->dropped_grads = LD(&a->dropped);
	out->agings = LD(&a->agings);
	return 0;
}

#define SAVE_MAGIC "DEADMIT1"
#define SAVE_HDR 72u

struct save_hdr {
	char magic[8];
	uint32_t width, depth, threshold, reserved;
	uint64_t seed, sightings, admitted, filtered, dropped, agings;
};
_Static_assert(sizeof(struct save_hdr) == SAVE_HDR, "layout");

int de_admit_save(const de_admit *a, const char *path)
{
	if (!a || !path)
		return -EINVAL;
	if (a->cfg.mode != DE_ADMIT_COUNT)
		return 0; /* nothing but statistics to keep */
	size_t nc = (size_t)a->cfg.width * a->cfg.depth;
	size_t len = SAVE_HDR + nc * 2 + 8;
	char *buf = malloc(len), *tmp = malloc(strlen(path) + 5);
	int err = 0, fd = -1;
	if (!buf || !tmp) {
		err = -ENOMEM;
		goto out;
	}
	struct save_hdr h = { .width = a->cfg.width, .depth = a->cfg.depth,
			      .threshold = a->cfg.threshold, .seed = a->cfg.seed,
			      .sightings = LD(&a->sightings), .admitted = LD(&a->admitted),
			      .filtered = LD(&a->filtered), .dropped = LD(&a->dropped),
			      .agings = LD(&a->agings) };
	memcpy(h.magic, SAVE_MAGIC, 8);
	memcpy(buf, &h, SAVE_HDR);
	uint16_t *c = (uint16_t *)(void *)(buf + SAVE_HDR);
	for (size_t i = 0; i < nc; i++)
		c[i] = LD(&a->c[i]);
	uint64_t x = XXH64(buf, len - 8, 0);
	memcpy(buf + len - 8, &x, 8);
	sprintf(tmp, "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		err = -errno;
		goto out;
	}
	for (size_t done = 0; done < len;) {
		ssize_t w = write(fd, buf + done, len - done);
		if (w <= 0) {
			err = w < 0 ? -errno : -EIO;
			goto out;
		}
		done += (size_t)w;
	}
	if (fsync(fd) || rename(tmp, path)) {
		err = -errno;
		goto out;
	}
	char *slash = strrchr(tmp, '/');
	if (slash)
		*slash = 0;
	int dfd = open(slash ? tmp : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		(void)fsync(dfd);
		close(dfd);
	}
out:
	if (fd >= 0)
		close(fd);
	if (err && tmp)
		unlink(tmp);
	free(buf);
	free(tmp);
	return err;
}

int de_admit_load(de_admit *a, const char *path)
{
	if (!a || !path)
		return -EINVAL;
	if (a->cfg.mode != DE_ADMIT_COUNT)
		return 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	size_t nc = (size_t)a->cfg.width * a->cfg.depth;
	size_t len = SAVE_HDR + nc * 2 + 8;
	char *buf = malloc(len + 1);
	int err = buf ? 0 : -ENOMEM;
	ssize_t got = 0;
	while (!err && (size_t)got < len + 1) {
		ssize_t r = read(fd, buf + got, len + 1 - (size_t)got);
		if (r < 0)
			err = -errno;
		if (r <= 0)
			break;
		got += r;
	}
	close(fd);
	struct save_hdr h;
	uint64_t x;
	if (!err && (size_t)got != len)
		err = -EBADMSG;
	if (!err) {
		memcpy(&h, buf, SAVE_HDR);
		memcpy(&x, buf + len - 8, 8);
		if (memcmp(h.magic, SAVE_MAGIC, 8) || x != XXH64(buf, len - 8, 0))
			err = -EBADMSG;
		else if (h.width != a->cfg.width || h.depth != a->cfg.depth ||
			 h.threshold != a->cfg.threshold || h.seed != a->cfg.seed)
			err = -EEXIST; /* another sketch: start empty */
	}
	if (!err) {
		memcpy(a->c, buf + SAVE_HDR, nc * 2);
		a->sightings = h.sightings;
		a->admitted = h.admitted;
		a->filtered = h.filtered;
		a->dropped = h.dropped;
		a->agings = h.agings;
	}
	free(buf);
	return err;
}
