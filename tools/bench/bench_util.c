/*
 * bench_util.c — the helpers the dynemb-bench sub-commands share (bench_util.h declares
 * them): percentiles, the 1-key / 64-key round-trip sampler, human formatting of figures,
 * JSON output, the machine description (/proc, /sys, uname), the Zipf sampler, the child
 * servers (fork + exec with a log, stop with SIGTERM then SIGKILL) and a RESP client.
 * Callers: bench_table.c, bench_channel.c, bench_sidecar.c, bench_learn.c, bench_persist.c,
 * bench_fair.c, bench_peers.c, bench_serve.c.
 *
 * Never: keeps state between calls, allocates (but resp_open's buffer, which resp_close
 * frees), or writes anywhere but the FILE, the buffers, the sockets or the log files it is
 * given.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_util.h"
#include "dynemb.h"

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

/* ------------------------------------------------------------------------- */
/* Rows of the daemon benchmarks                                             */
/* ------------------------------------------------------------------------- */

void bench_row(float *v, uint32_t dim, uint64_t key)
{
	for (uint32_t d = 0; d < dim; d++)
		v[d] = (float)d / (float)dim;
	v[0] = row_tag(key);
}

int bench_fill(struct dynemb_client *c, int t, const uint64_t *keys, uint64_t n, float *vals,
	       uint32_t dim, uint32_t batch, double *rate)
{
	uint64_t t0 = ns_now();
	int err = 0;
	for (uint64_t i = 0; i < n && !err; i += batch) {
		uint64_t m = n - i < batch ? n - i : batch;
		for (uint64_t j = 0; j < m; j++)
			bench_row(vals + j * dim, dim, keys[i + j]);
		err = dynemb_update(c, t, keys + i, m, vals, 1, NULL);
	}
	*rate = (double)n / ((double)(ns_now() - t0) / 1e9);
	return err;
}

void bench_fail(const char *cmd, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, PROG " %s: ", cmd);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

const char *bench_met(bool ok)
{
	return ok ? "met" : "NOT met";
}

/* ------------------------------------------------------------------------- */
/* Option parsing                                                            */
/* ------------------------------------------------------------------------- */

int bench_check_number(const char *cmd, const char *optarg, const char *end)
{
	if (end && (*end || end == optarg || errno || optarg[0] == '-')) {
		fprintf(stderr, PROG " %s: bad number '%s'\n", cmd, optarg);
		return EXIT_USAGE;
	}
	return 0;
}

int bench_check_operands(const char *cmd, int argc, char **argv, int optind,
			 void (*usage)(FILE *))
{
	if (optind >= argc)
		return 0;
	fprintf(stderr, PROG " %s: unexpected argument '%s'\n", cmd, argv[optind]);
	usage(stderr);
	return EXIT_USAGE;
}

int bench_server_opt(const char *cmd, const char *flag, const char **path, bool *none)
{
	if (*path && !strcmp(*path, "none")) {
		*path = NULL;
		*none = true;
	} else if (*path && !bench_executable(*path)) {
		fprintf(stderr, PROG " %s: %s %s: not an executable file (or 'none')\n", cmd, flag,
			*path);
		return EXIT_USAGE;
	}
	return 0;
}

int bench_mkdtemp(char *dir, size_t cap, const char *prefix)
{
	if (snprintf(dir, cap, "/tmp/%s.XXXXXX", prefix) >= (int)cap) {
		dir[0] = 0;
		return -ENAMETOOLONG;
	}
	if (!mkdtemp(dir)) {
		dir[0] = 0;
		return -errno;
	}
	return 0;
}

/* ------------------------------------------------------------------------- */
/* Child servers                                                             */
/* ------------------------------------------------------------------------- */

pid_t bench_spawn(char *const argv[], const char *log, int cpu)
{
	pid_t pid = fork();
	if (pid != 0)
		return pid; /* the parent, or -1 */
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	if (cpu >= 0) {
		pin(cpu);
	} else { /* not the parent's pinning: every CPU online */
		cpu_set_t all;
		CPU_ZERO(&all);
		for (long i = 0; i < sysconf(_SC_NPROCESSORS_ONLN) && i < CPU_SETSIZE; i++)
			CPU_SET((int)i, &all);
		(void)sched_setaffinity(0, sizeof all, &all);
	}
	int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd >= 0) {
		dup2(fd, 1);
		dup2(fd, 2);
		close(fd);
	}
	execv(argv[0], argv);
	fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
	_exit(127);
}

int bench_stop_child(pid_t *pid)
{
	int status = -1;
	if (*pid <= 0)
		return 0;
	kill(*pid, SIGTERM);
	for (int i = 0; i < BENCH_STOP_WAIT_MS / 10; i++) {
		if (waitpid(*pid, &status, WNOHANG) == *pid) {
			*pid = 0;
			return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
		}
		usleep(10000);
	}
	kill(*pid, SIGKILL);
	waitpid(*pid, &status, 0);
	*pid = 0;
	return -1;
}

bool bench_child_gone(pid_t pid)
{
	int status;
	return waitpid(pid, &status, WNOHANG) == pid;
}

bool bench_executable(const char *p)
{
	struct stat s;
	return stat(p, &s) == 0 && S_ISREG(s.st_mode) && access(p, X_OK) == 0;
}

int bench_find_dynembd(char *out, size_t cap)
{
	const char *env = getenv("DYNEMBD");
	if (env && *env) {
		snprintf(out, cap, "%s", env);
	} else {
		char exe[PATH_MAX];
		ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
		if (n <= 0)
			return -errno;
		exe[n] = 0;
		char *slash = strrchr(exe, '/');
		if (slash)
			*slash = 0;
		if (snprintf(out, cap, "%s/../../src/server/dynembd", exe) >= (int)cap)
			return -ENAMETOOLONG;
	}
	return bench_executable(out) ? 0 : -ENOENT;
}

int bench_connect_daemon(const char *sock, const char *name, pid_t *pid,
			 struct dynemb_client **c)
{
	struct dynemb_connect_opts co = { .name = name };
	int err = -ETIMEDOUT;
	for (int i = 0; i < BENCH_START_WAIT_MS / 10; i++) {
		if (bench_child_gone(*pid)) {
			*pid = 0;
			return -ECHILD;
		}
		err = dynemb_connect(sock, &co, c);
		if (err != -ENOENT && err != -ECONNREFUSED)
			break;
		usleep(10000);
	}
	return err;
}

char *bench_find_on_path(const char *name, char *buf, size_t cap)
{
	const char *path = getenv("PATH");
	if (!path)
		path = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin";
	for (int i = 0; i < 256 && *path; i++) {
		const char *colon = strchr(path, ':');
		size_t len = colon ? (size_t)(colon - path) : strlen(path);
		int w = snprintf(buf, cap, "%.*s/%s", (int)len, path, name);
		if (len && w > 0 && (size_t)w < cap && bench_executable(buf))
			return buf;
		if (!colon)
			break;
		path = colon + 1;
	}
	return NULL;
}

void bench_log_tail(const char *path)
{
	char buf[1536];
	FILE *f = fopen(path, "r");
	if (!f)
		return;
	long sz = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : 0;
	fseek(f, sz > (long)sizeof buf - 1 ? sz - (long)sizeof buf + 1 : 0, SEEK_SET);
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	buf[n] = 0;
	fclose(f);
	fprintf(stderr, "---- %s (tail) ----\n%s---- end ----\n", path, buf);
}

void bench_rm_tree(const char *dir, int depth)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	while (d && (e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		char p[PATH_MAX];
		if (snprintf(p, sizeof p, "%s/%s", dir, e->d_name) >= (int)sizeof p)
			continue;
		struct stat st;
		if (!lstat(p, &st) && S_ISDIR(st.st_mode) && depth > 0)
			bench_rm_tree(p, depth - 1);
		else
			unlink(p);
	}
	if (d)
		closedir(d);
	rmdir(dir);
}

void bench_sock_timeouts(int fd)
{
	struct timeval tv = { .tv_sec = BENCH_SOCK_TIMEOUT_S };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

/* ------------------------------------------------------------------------- */
/* RESP                                                                      */
/* ------------------------------------------------------------------------- */

int resp_open(struct resp *r, int fd, size_t cap)
{
	*r = (struct resp){ .fd = fd, .cap = cap, .buf = malloc(cap) };
	if (!r->buf) {
		close(fd);
		r->fd = -1;
		return -ENOMEM;
	}
	return 0;
}

void resp_close(struct resp *r)
{
	if (r->buf && r->fd >= 0) /* opened (a zeroed struct resp was not: its fd 0 stays) */
		close(r->fd);
	free(r->buf);
	*r = (struct resp){ .fd = -1 };
}

/* Reads more into the buffer (moving the unread bytes to its start first). */
static int resp_more(struct resp *r)
{
	if (r->pos) {
		memmove(r->buf, r->buf + r->pos, r->len - r->pos);
		r->len -= r->pos;
		r->pos = 0;
	}
	if (r->len == r->cap)
		return -EMSGSIZE;
	ssize_t n = read(r->fd, r->buf + r->len, r->cap - r->len);
	if (n == 0)
		return -EPIPE;
	if (n < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT : -errno;
	r->len += (size_t)n;
	return 0;
}

int resp_line(struct resp *r, const char **line, size_t *len)
{
	for (int i = 0; i < 1024; i++) { /* each pass reads more or fails */
		char *p = memchr(r->buf + r->pos, '\n', r->len - r->pos);
		if (p && p > r->buf + r->pos && p[-1] == '\r') {
			*line = r->buf + r->pos;
			*len = (size_t)(p - 1 - (r->buf + r->pos));
			r->pos = (size_t)(p + 1 - r->buf);
			return 0;
		}
		if (p)
			return -EPROTO;
		int err = resp_more(r);
		if (err)
			return err;
	}
	return -EPROTO;
}

int resp_need(struct resp *r, size_t n)
{
	for (int i = 0; i < 1 << 20 && r->len - r->pos < n; i++) {
		int err = resp_more(r);
		if (err)
			return err;
	}
	return r->len - r->pos >= n ? 0 : -EPROTO;
}

int resp_header(struct resp *r, char c, long long *v)
{
	const char *l;
	size_t n;
	int err = resp_line(r, &l, &n);
	if (err)
		return err;
	if (n < 2 || l[0] != c) {
		if (n && l[0] == '-')
			fprintf(stderr, PROG ": redis: %.*s\n", (int)(n < 200 ? n : 200), l);
		return -EPROTO;
	}
	long long x = 0;
	bool neg = l[1] == '-';
	for (size_t i = neg ? 2 : 1; i < n; i++) {
		if (l[i] < '0' || l[i] > '9' || x > (1ll << 40))
			return -EPROTO;
		x = x * 10 + (l[i] - '0');
	}
	*v = neg ? -x : x;
	return 0;
}

int resp_bulk(struct resp *r, const char **p, size_t *n)
{
	long long len;
	int err = resp_header(r, '$', &len);
	if (err)
		return err;
	if (len < 0)
		return -ENOENT;
	if ((unsigned long long)len + 2 > r->cap)
		return -EMSGSIZE;
	if ((err = resp_need(r, (size_t)len + 2)))
		return err;
	*p = r->buf + r->pos;
	*n = (size_t)len;
	r->pos += (size_t)len + 2;
	return 0;
}

int resp_connect(struct resp *r, const struct sockaddr *a, unsigned alen, pid_t server,
		 size_t cap)
{
	for (int i = 0; i < BENCH_START_WAIT_MS / 10; i++) {
		if (bench_child_gone(server))
			return -ECHILD;
		int fd = socket(a->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return -errno;
		if (connect(fd, a, alen) == 0) {
			int one = 1;
			if (a->sa_family == AF_INET)
				setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
			bench_sock_timeouts(fd);
			int err = resp_open(r, fd, cap);
			if (!err)
				err = resp_ping(r);
			if (!err)
				return 0;
			resp_close(r);
			if (err != -EPROTO) /* LOADING and the like: try again */
				return err;
		} else {
			close(fd);
		}
		usleep(10000);
	}
	return -ETIMEDOUT;
}

int resp_ok(struct resp *r, uint64_t n)
{
	int err = 0;
	for (uint64_t j = 0; j < n && !err; j++) {
		const char *l;
		size_t len;
		err = resp_line(r, &l, &len);
		if (!err && (len != 3 || memcmp(l, "+OK", 3)))
			err = -EPROTO;
	}
	return err;
}

int resp_ping(struct resp *r)
{
	static const char ping[] = "*1\r\n$4\r\nPING\r\n";
	const char *l;
	size_t n;
	int err = resp_write_all(r->fd, ping, sizeof ping - 1);
	if (!err)
		err = resp_line(r, &l, &n);
	if (!err && (n != 5 || memcmp(l, "+PONG", 5)))
		err = -EPROTO;
	return err;
}

int resp_write_all(int fd, const char *p, size_t n)
{
	for (int i = 0; n && i < 1 << 20; i++) { /* each pass writes something or fails */
		ssize_t w = write(fd, p, n);
		if (w <= 0)
			return w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? -ETIMEDOUT
			       : w < 0 ? -errno : -EPIPE;
		p += w;
		n -= (size_t)w;
	}
	return n ? -EIO : 0;
}

char *resp_put_uint(char *p, uint64_t v)
{
	char tmp[24];
	int n = 0;
	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v && n < 24);
	while (n)
		*p++ = tmp[--n];
	return p;
}

char *resp_put_bulk(char *p, const void *s, size_t n)
{
	*p++ = '$';
	p = resp_put_uint(p, n);
	*p++ = '\r';
	*p++ = '\n';
	memcpy(p, s, n);
	p += n;
	*p++ = '\r';
	*p++ = '\n';
	return p;
}

char *resp_put_array(char *p, size_t n)
{
	*p++ = '*';
	p = resp_put_uint(p, n);
	*p++ = '\r';
	*p++ = '\n';
	return p;
}
