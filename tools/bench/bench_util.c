/*
 * bench_util.c — the helpers the dynemb-bench sub-commands share (bench_util.h declares
 * them): percentiles, the 1-key / 64-key round-trip sampler, human formatting of figures,
 * JSON output, the machine description (/proc, /sys, uname) and the Zipf sampler.
 * Callers: bench_table.c, bench_channel.c, bench_sidecar.c, bench_learn.c, bench_persist.c.
 *
 * Never: keeps state between calls, allocates, or writes anywhere but the FILE or the
 * buffers it is given.
 */
#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "bench_util.h"

/* ------------------------------------------------------------------------- */
/* Percentiles and formatting                                                */
/* ------------------------------------------------------------------------- */

int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

void pctl(uint64_t *v, unsigned n, double out[2])
{
	qsort(v, n, sizeof *v, cmp_u64);
	out[0] = (double)v[n / 2];
	out[1] = (double)v[(size_t)((double)n * 0.99)];
}

int sample_rtt(const uint64_t *keys, uint64_t nkeys, unsigned iters, unsigned warm,
	       uint64_t *lat, rtt_call call, void *ctx, double out[2][2])
{
	int err = 0;
	for (int s = 0; s < 2 && !err; s++) {
		uint32_t n = s ? 64 : 1;
		uint64_t k[64];
		for (unsigned i = 0; i < warm + iters && !err; i++) {
			for (uint32_t j = 0; j < n; j++)
				k[j] = keys[key_of(i * 64 + j) % nkeys];
			uint64_t dt = 0;
			err = call(ctx, k, n, &dt);
			if (i >= warm)
				lat[i - warm] = dt;
		}
		if (!err)
			pctl(lat, iters, out[s]);
	}
	return err;
}

/* "12.34 M" style rate for the human output. */
const char *fmt_rate(char *buf, size_t len, double v)
{
	if (!isfinite(v))
		snprintf(buf, len, "n/a");
	else if (v >= 1e9)
		snprintf(buf, len, "%.2f G", v / 1e9);
	else if (v >= 1e6)
		snprintf(buf, len, "%.2f M", v / 1e6);
	else if (v >= 1e3)
		snprintf(buf, len, "%.2f k", v / 1e3);
	else
		snprintf(buf, len, "%.0f ", v);
	return buf;
}

const char *fmt_ratio(char *buf, size_t len, double v)
{
	if (isfinite(v))
		snprintf(buf, len, "%.2f", v);
	else
		snprintf(buf, len, "n/a");
	return buf;
}

const char *fmt_us(char *buf, size_t len, double us)
{
	if (us >= 1000.0)
		snprintf(buf, len, "%.2f ms", us / 1000.0);
	else
		snprintf(buf, len, "%.1f us", us);
	return buf;
}

int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Nearest-rank percentile of a sorted array (p in (0, 1]). */
double percentile(const double *sorted, size_t n, double p)
{
	size_t rank;

	if (n == 0)
		return NAN;
	rank = (size_t)ceil(p * (double)n);
	if (rank < 1)
		rank = 1;
	if (rank > n)
		rank = n;
	return sorted[rank - 1];
}

/* ------------------------------------------------------------------------- */
/* JSON output (strings escaped, non-finite numbers as null)                 */
/* ------------------------------------------------------------------------- */

void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else if (*p == '\n')
			fputs("\\n", f);
		else if (*p == '\t')
			fputs("\\t", f);
		else if (*p < 0x20)
			fprintf(f, "\\u%04x", *p);
		else
			fputc(*p, f);
	}
	fputc('"', f);
}

void json_num(FILE *f, double v, const char *fmt)
{
	if (isfinite(v))
		fprintf(f, fmt, v);
	else
		fputs("null", f);
}

/* ------------------------------------------------------------------------- */
/* Machine description                                                        */
/* ------------------------------------------------------------------------- */

/* Bracketed word of a sysfs choice file ("always [madvise] never" -> "madvise"). */
static void read_choice(const char *path, char *out, size_t len)
{
	char line[256];
	FILE *f = fopen(path, "r");
	char *a, *b;

	snprintf(out, len, "unknown");
	if (!f)
		return;
	if (fgets(line, sizeof(line), f) && (a = strchr(line, '[')) && (b = strchr(a, ']'))) {
		*b = '\0';
		snprintf(out, len, "%s", a + 1);
	}
	fclose(f);
}

/* Value in kB of a "Name:   123 kB" line of a /proc file, in bytes; -1 if absent. */
int64_t proc_kb(const char *path, const char *name)
{
	char line[256];
	size_t nlen = strlen(name);
	int64_t v = -1;
	FILE *f = fopen(path, "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, name, nlen) == 0 && line[nlen] == ':') {
			v = strtoll(line + nlen + 1, NULL, 10) * 1024;
			break;
		}
	}
	fclose(f);
	return v;
}

void machine_describe(struct machine *m)
{
	char line[512];
	struct utsname u;
	cpu_set_t set;
	FILE *f;
	int64_t v;

	memset(m, 0, sizeof(*m));
	snprintf(m->cpu_model, sizeof(m->cpu_model), "unknown cpu");
	f = fopen("/proc/cpuinfo", "r");
	if (f) {
		while (fgets(line, sizeof(line), f)) {
			char *colon = strchr(line, ':');

			if (strncmp(line, "model name", 10) != 0 || !colon)
				continue;
			colon++;
			while (*colon == ' ' || *colon == '\t')
				colon++;
			colon[strcspn(colon, "\n")] = '\0';
			snprintf(m->cpu_model, sizeof(m->cpu_model), "%s", colon);
			break;
		}
		fclose(f);
	}
	m->cpus_online = (unsigned)sysconf(_SC_NPROCESSORS_ONLN);
	m->cpus_allowed = m->cpus_online;
	if (sched_getaffinity(0, sizeof(set), &set) == 0)
		m->cpus_allowed = (unsigned)CPU_COUNT(&set);
	v = proc_kb("/proc/meminfo", "MemTotal");
	m->mem_total = v > 0 ? (uint64_t)v : 0;
	v = proc_kb("/proc/meminfo", "MemAvailable");
	m->mem_available = v > 0 ? (uint64_t)v : 0;
	if (uname(&u) == 0)
		snprintf(m->kernel, sizeof(m->kernel), "%s %s %s", u.sysname, u.release, u.machine);
	else
		snprintf(m->kernel, sizeof(m->kernel), "unknown");
	read_choice("/sys/kernel/mm/transparent_hugepage/enabled", m->thp_anon,
		    sizeof(m->thp_anon));
	read_choice("/sys/kernel/mm/transparent_hugepage/shmem_enabled", m->thp_shmem,
		    sizeof(m->thp_shmem));
	m->hugepages_free = -1;
	f = fopen("/proc/meminfo", "r");
	if (f) {
		while (fgets(line, sizeof(line), f))
			if (strncmp(line, "HugePages_Free:", 15) == 0)
				m->hugepages_free = strtol(line + 15, NULL, 10);
		fclose(f);
	}
}

void machine_json(FILE *f, const struct machine *m)
{
	fputs("{\"cpu_model\":", f);
	json_str(f, m->cpu_model);
	fprintf(f, ",\"cpus_online\":%u,\"cpus_allowed\":%u,\"mem_total_bytes\":%" PRIu64
		   ",\"mem_available_bytes\":%" PRIu64 ",\"kernel\":",
		m->cpus_online, m->cpus_allowed, m->mem_total, m->mem_available);
	json_str(f, m->kernel);
	fputs(",\"thp_enabled\":", f);
	json_str(f, m->thp_anon);
	fputs(",\"thp_shmem_enabled\":", f);
	json_str(f, m->thp_shmem);
	fprintf(f, ",\"hugepages_free\":%ld}", m->hugepages_free);
}

void bench_machine_print(FILE *f, bool json)
{
	struct machine m;
	machine_describe(&m);
	if (json) {
		machine_json(f, &m);
		return;
	}
	fprintf(f, "machine: %s, %u cpus (%u allowed), %.1f GiB, %s, hugepages free %ld\n",
		m.cpu_model, m.cpus_online, m.cpus_allowed, (double)m.mem_total / (1 << 30),
		m.kernel, m.hugepages_free);
}

/* ------------------------------------------------------------------------- */
/* Zipf sampler: rejection-inversion (Hörmann & Derflinger, 1996)             */
/* ------------------------------------------------------------------------- */

/*
 * P(k) proportional to k^-q over k = 1..n, O(1) expected time per draw with no table.
 * h(x) = x^-q; H(x) = integral of h = (x^(1-q) - 1) / (1-q), written with expm1/log1p
 * so that it stays exact as q -> 1; Hinv its inverse. Draw u uniformly between
 * H(n + 1/2) and H(3/2) - h(1), x = Hinv(u), k = round(x); accept k when x is close
 * enough to k (the squeeze) or when u lies under the bar of k.
 */
/* struct zipf is in bench_util.h. */

/* log1p(x) / x, and its series near 0. */
static double zipf_log1p_over(double x)
{
	return fabs(x) > 1e-8 ? log1p(x) / x : 1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x));
}

/* expm1(x) / x, and its series near 0. */
static double zipf_expm1_over(double x)
{
	return fabs(x) > 1e-8 ? expm1(x) / x : 1.0 + x * 0.5 * (1.0 + x / 3.0 * (1.0 + 0.25 * x));
}

static double zipf_h(const struct zipf *z, double x)
{
	return exp(-z->q * log(x));
}

static double zipf_H(const struct zipf *z, double x)
{
	double lx = log(x);

	return zipf_expm1_over((1.0 - z->q) * lx) * lx;
}

static double zipf_Hinv(const struct zipf *z, double y)
{
	double t = y * (1.0 - z->q);

	if (t < -1.0)
		t = -1.0; /* rounding at the lower end of the range */
	return exp(zipf_log1p_over(t) * y);
}

void zipf_init(struct zipf *z, uint64_t n, double q)
{
	z->q = q;
	z->n = n;
	z->h_x1 = zipf_H(z, 1.5) - 1.0;
	z->h_n = zipf_H(z, (double)n + 0.5);
	z->squeeze = 2.0 - zipf_Hinv(z, zipf_H(z, 2.5) - zipf_h(z, 2.0));
}

/* A rank in [0, n): 0 is the most frequent. */
uint64_t zipf_draw(const struct zipf *z, uint64_t *rng)
{
	for (;;) {
		double u = z->h_n + rand_unit(rng) * (z->h_x1 - z->h_n);
		double x = zipf_Hinv(z, u);
		double kd = floor(x + 0.5);

		if (kd < 1.0)
			kd = 1.0;
		else if (kd > (double)z->n)
			kd = (double)z->n;
		if (kd - x <= z->squeeze || u >= zipf_H(z, kd + 0.5) - zipf_h(z, kd))
			return (uint64_t)kd - 1;
	}
}
