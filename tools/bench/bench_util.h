/*
 * bench_util.h — helpers the data-plane benchmarks share (bench_channel.c,
 * bench_sidecar.c): a monotonic clock, CPU pinning, and p50/p99 of latency samples.
 */
#ifndef DE_BENCH_UTIL_H
#define DE_BENCH_UTIL_H

#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static inline uint64_t ns_now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static inline void pin(int cpu)
{
	cpu_set_t s;
	CPU_ZERO(&s);
	CPU_SET(cpu % (int)sysconf(_SC_NPROCESSORS_ONLN), &s);
	(void)sched_setaffinity(0, sizeof s, &s);
}

static inline int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static inline void pctl(uint64_t *v, unsigned n, double out[2])
{
	qsort(v, n, sizeof *v, cmp_u64);
	out[0] = (double)v[n / 2];
	out[1] = (double)v[(size_t)((double)n * 0.99)];
}

#endif
