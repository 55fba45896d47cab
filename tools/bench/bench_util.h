/*
 * bench_util.h — what the sub-commands of dynemb-bench share: the program name and the
 * usage exit code, each sub-command's entry point, and the helpers more than one
 * benchmark uses (clocks, CPU pinning, seeded draws, the keys of the fills, percentiles,
 * the round-trip sampler, human formatting of rates / ratios / microseconds, JSON output,
 * the machine description, the Zipf sampler, the child servers a benchmark starts
 * (dynembd, redis-server) and a RESP client for Redis). Every bench_*.c and dynemb-bench.c
 * include it.
 *
 * The clocks and the draws are static inline: they run inside timed loops. The rest is
 * in bench_util.c, which keeps no state; only resp_open allocates (its buffer, freed by
 * resp_close).
 */
#ifndef DE_BENCH_UTIL_H
#define DE_BENCH_UTIL_H

#include <sched.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "de_shm.h"

#define PROG "dynemb-bench"
#define EXIT_USAGE 2

/* ---- the sub-commands (dynemb-bench.c dispatches to them) ---------------------------- */

/* dynemb-bench table: the table against a plain gather, and growth latency (bench_table.c). */
int cmd_table(int argc, char **argv, const char *command_line);

/* dynemb-bench channel: data-plane round trips and throughput (bench_channel.c). */
int cmd_channel(int argc, char **argv);

/* dynemb-bench sidecar: dynembd end to end vs in-process, a socket and Redis
 * (bench_sidecar.c). */
int cmd_sidecar(int argc, char **argv);

/* dynemb-bench learn: optimizer steps vs find, Hogwild vs per-row exclusion, eviction
 * overhead, top-k (bench_learn.c). */
int cmd_learn(int argc, char **argv, const char *command_line);

/* dynemb-bench persist: WAL async / sync, snapshot write, restore and restart against fio
 * on the same file system (bench_persist.c). */
int cmd_persist(int argc, char **argv, const char *command_line);

/* dynemb-bench fair: a victim client's latency alone and while another client floods the
 * daemon (bench_fair.c). */
int cmd_fair(int argc, char **argv, const char *command_line);

/* dynemb-bench peers: three dynembd members on loopback TCP, lookups of local / half /
 * remote keys, wire bytes per key, against a 3-node Redis Cluster (bench_peers.c). */
int cmd_peers(int argc, char **argv, const char *command_line);

/* dynemb-bench serve: an inference reader of a serving table without and during version
 * swaps, against an in-process hash map and HPS-style Redis (bench_serve.c). */
int cmd_serve(int argc, char **argv, const char *command_line);

/* ---- clocks and pinning ----------------------------------------------------------------- */

/* CLOCK_MONOTONIC in nanoseconds. */
static inline uint64_t ns_now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

/* CLOCK_MONOTONIC in seconds. */
static inline double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* CPU time of the calling thread: with now_s() it tells how much of a measurement the
 * thread actually ran (a busy machine steals it; the results then say so). */
static inline double thread_cpu_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Pins the calling thread to cpu (modulo the CPUs online); best effort. */
static inline void pin(int cpu)
{
	cpu_set_t s;
	CPU_ZERO(&s);
	CPU_SET(cpu % (int)sysconf(_SC_NPROCESSORS_ONLN), &s);
	(void)sched_setaffinity(0, sizeof s, &s);
}

/* ---- draws and keys ---------------------------------------------------------------------- */

/* Uniform double in [0, 1) from the top 53 bits. */
static inline double rand_unit(uint64_t *state)
{
	return (double)(de_splitmix64_next(state) >> 11) * 0x1.0p-53;
}

/* Uniform integer in [0, n): multiply-high (bias below 2^-32 for n < 2^32). */
static inline uint64_t rand_below(uint64_t *state, uint64_t n)
{
	return (uint64_t)(((unsigned __int128)de_splitmix64_next(state) * n) >> 64);
}

/* The key of index i, a scattered non-zero hash of it (key 0 is "no feature"); the
 * benchmarks also draw indexes with it. */
static inline uint64_t key_of(uint64_t i)
{
	return de_splitmix64(i) | 1;
}

/* ---- numbers ------------------------------------------------------------------------------ */

static inline uint64_t round_up(uint64_t v, uint64_t to)
{
	return (v + to - 1) / to * to;
}

static inline double gib(uint64_t bytes)
{
	return (double)bytes / (double)(1ull << 30);
}

/* qsort comparators. */
int cmp_u64(const void *a, const void *b);
int cmp_double(const void *a, const void *b);

/* Sorts v[0, n) and puts its p50 and p99 (v[n / 2], v[n * 0.99]) in out; n > 0. */
void pctl(uint64_t *v, unsigned n, double out[2]);

/* One timed request of the n keys k (n <= 64): *ns is the time of the request alone.
 * Returns 0 or a negative errno. */
typedef int (*rtt_call)(void *ctx, const uint64_t *k, uint32_t n, uint64_t *ns);

/* p50/p99 of 1-key (out[0]) and 64-key (out[1]) requests through call: warm untimed, then
 * iters timed ones of each size, request i asking for keys[key_of(i * 64 + j) % nkeys];
 * lat holds iters samples. Returns 0, or the first error of call (out is then partial). */
int sample_rtt(const uint64_t *keys, uint64_t nkeys, unsigned iters, unsigned warm,
	       uint64_t *lat, rtt_call call, void *ctx, double out[2][2]);

/* Nearest-rank percentile of a sorted array (p in (0, 1]); NAN when n is 0. */
double percentile(const double *sorted, size_t n, double p);

/* Human text into buf, which is returned: "12.34 M" style rate ("n/a" when not finite),
 * a ratio "0.83" ("n/a"), and "12.3 us" / "1.23 ms". */
const char *fmt_rate(char *buf, size_t len, double v);
const char *fmt_ratio(char *buf, size_t len, double v);
const char *fmt_us(char *buf, size_t len, double us);

/* ---- JSON output ------------------------------------------------------------------------ */

/* s as a JSON string, quotes included. */
void json_str(FILE *f, const char *s);

/* v with printf format fmt, or null when v is not finite. */
void json_num(FILE *f, double v, const char *fmt);

/* ---- the machine -------------------------------------------------------------------------- */

struct machine {
	char cpu_model[128];
	unsigned cpus_online;
	unsigned cpus_allowed;      /* this process's affinity mask (what nproc prints) */
	uint64_t mem_total;         /* bytes */
	uint64_t mem_available;     /* bytes, when the run started */
	char kernel[3 * 65 + 8]; /* sysname release machine */
	char thp_anon[32];          /* the bracketed choice of .../transparent_hugepage/enabled */
	char thp_shmem[32];         /* ... and of shmem_enabled */
	long hugepages_free;        /* 2 MiB pool, -1 unknown */
};

/* Value in kB of a "Name:   123 kB" line of a /proc file, in bytes; -1 if absent. */
int64_t proc_kb(const char *path, const char *name);

void machine_describe(struct machine *m);

/* m as one JSON object (no newline). */
void machine_json(FILE *f, const struct machine *m);

/* The machine, for the figures' header: one human line, or a JSON object (no newline). */
void bench_machine_print(FILE *f, bool json);

/* ---- rows of the daemon benchmarks (bench_sidecar.c, bench_peers.c) -------------------- */

/* The first float of every row those benchmarks write: each read checks it. */
static inline float row_tag(uint64_t key)
{
	return (float)(key & 0xffffff);
}

/* The row of key at dim (d / dim, the tag first), into v[0, dim). */
void bench_row(float *v, uint32_t dim, uint64_t key);

/* Fills table t of c (through dynemb_update) with the rows of keys[0, n) in batches of
 * batch keys; vals holds batch rows of dim. *rate: rows per second. 0 or the first error
 * of dynemb_update. */
struct dynemb_client;
int bench_fill(struct dynemb_client *c, int t, const uint64_t *keys, uint64_t n, float *vals,
	       uint32_t dim, uint32_t batch, double *rate);

/* "dynemb-bench CMD: " and the message, on one line of stderr. */
__attribute__((format(printf, 2, 3)))
void bench_fail(const char *cmd, const char *fmt, ...);

/* "met" or "NOT met", for the goals. */
const char *bench_met(bool ok);

/* ---- option parsing (the sub-commands with getopt_long) --------------------------------- */

/* After one option of sub-command cmd: a number option's strto* left end (NULL for other
 * options) must have taken all of optarg, without errno and without a sign. 0, or
 * EXIT_USAGE with the bad number said. */
int bench_check_number(const char *cmd, const char *optarg, const char *end);
/* After getopt_long: no operands left (0), else EXIT_USAGE with the first said and usage
 * printed to stderr. */
int bench_check_operands(const char *cmd, int argc, char **argv, int optind,
			 void (*usage)(FILE *));
/* A server option (--flag PATH|none) of cmd: "none" makes *path NULL and *none true; any
 * other value must be an executable file (else EXIT_USAGE, said). 0 when *path is NULL. */
int bench_server_opt(const char *cmd, const char *flag, const char **path, bool *none);
/* mkdtemp of "/tmp/<prefix>.XXXXXX" into dir (cap bytes): 0, or -errno with dir "". */
int bench_mkdtemp(char *dir, size_t cap, const char *prefix);

/* ---- child servers (bench_sidecar.c, bench_peers.c, bench_fair.c) ---------------------- */

#define BENCH_START_WAIT_MS 10000 /* a server's socket must answer within this */
#define BENCH_STOP_WAIT_MS 10000  /* SIGTERM, then SIGKILL after this */
#define BENCH_SOCK_TIMEOUT_S 10   /* SO_RCVTIMEO / SO_SNDTIMEO of the benchmarks' sockets */

/* Forks and execs argv[0] with argv, pinned to cpu (< 0: on every CPU online, whatever the
 * caller's own pinning), stdout and stderr to
 * the file log (created, mode 0600); the child gets SIGTERM when this process dies
 * (PR_SET_PDEATHSIG). The child's pid, or -1 with errno (fork failed). */
pid_t bench_spawn(char *const argv[], const char *log, int cpu);
/* SIGTERM to *pid, waits up to BENCH_STOP_WAIT_MS, then SIGKILL; *pid becomes 0. The
 * child's exit status, or -1 (killed by a signal, or SIGKILLed here); 0 when *pid <= 0. */
int bench_stop_child(pid_t *pid);
/* true when the child pid has exited (it is reaped). */
bool bench_child_gone(pid_t pid);
/* true when p is a regular file this process may execute. */
bool bench_executable(const char *p);
/* The dynembd binary into out: $DYNEMBD, else ../../src/server/dynembd from this binary's
 * directory. 0, -ENOENT (not an executable there; out holds the path tried) or
 * -ENAMETOOLONG. */
int bench_find_dynembd(char *out, size_t cap);
/* dynemb_connect to the daemon *pid listening on sock as client name, retrying every
 * 10 ms while the socket is not there yet, for BENCH_START_WAIT_MS. 0, -ECHILD (the
 * daemon exited: reaped, *pid becomes 0), -ETIMEDOUT or dynemb_connect's error. */
int bench_connect_daemon(const char *sock, const char *name, pid_t *pid,
			 struct dynemb_client **c /* out */);
/* The first executable name in $PATH into buf (cap bytes); buf, or NULL when none. */
char *bench_find_on_path(const char *name, char *buf, size_t cap);
/* Prints the last ~1500 bytes of the log at path to stderr, between marker lines. */
void bench_log_tail(const char *path);
/* rm -r of a directory this run made, depth levels of subdirectories below it (deeper
 * ones, and anything that cannot be removed, stay). */
void bench_rm_tree(const char *dir, int depth);
/* BENCH_SOCK_TIMEOUT_S as fd's send and receive timeouts. */
void bench_sock_timeouts(int fd);

/* ---- RESP (Redis's protocol), no hiredis ------------------------------------------------ */

/* A connection's reader: replies are parsed out of buf[pos, len). Owns buf and fd. */
struct resp {
	int fd;
	char *buf;
	size_t cap, len, pos;
};

/* r reading from fd (which it now owns) with a cap-byte buffer. 0 or -ENOMEM (fd is then
 * closed). */
int resp_open(struct resp *r, int fd, size_t cap);
/* Closes the fd and frees the buffer of an opened r; a zeroed or closed r is left alone. */
void resp_close(struct resp *r);
/* The next line, without its \r\n: *line points into r->buf until the next call. 0, or
 * -EPROTO (a bare \n, or no line within the buffer), -EPIPE (the server closed),
 * -ETIMEDOUT, -EMSGSIZE or another -errno. */
int resp_line(struct resp *r, const char **line, size_t *len);
/* Waits until n unread bytes are in the buffer (from r->buf + r->pos). */
int resp_need(struct resp *r, size_t n);
/* A header line: c followed by a decimal (possibly -1) into *v. A line of another type is
 * -EPROTO; an error line ("-MOVED ...") is printed to stderr first. */
int resp_header(struct resp *r, char c, long long *v);
/* A bulk string: *p points at its *n bytes in the buffer until the next call (a nil
 * is -ENOENT). */
int resp_bulk(struct resp *r, const char **p, size_t *n);
/* Connects a stream socket to the address a (AF_UNIX or AF_INET; TCP gets TCP_NODELAY)
 * and opens r on it with a cap-byte buffer, retrying every 10 ms until the server answers
 * PING, for BENCH_START_WAIT_MS. The socket gets bench_sock_timeouts. 0, -ECHILD (the
 * child server exited: it is reaped), -ETIMEDOUT, or another -errno. */
struct sockaddr;
int resp_connect(struct resp *r, const struct sockaddr *a, unsigned alen, pid_t server,
		 size_t cap);
/* n replies "+OK" (SET's): 0, -EPROTO (another reply) or the I/O error. */
int resp_ok(struct resp *r, uint64_t n);
/* PING, and +PONG back: 0, -EPROTO (another answer, e.g. -LOADING) or the I/O error. */
int resp_ping(struct resp *r);
/* Writes all n bytes of p to fd (each pass writes something or fails): 0, -ETIMEDOUT (the
 * socket's send timeout), -EPIPE or another -errno. */
int resp_write_all(int fd, const char *p, size_t n);
/* Encoders: each writes at p and returns the end. A command is put_array(argc) and argc
 * put_bulk. */
char *resp_put_uint(char *p, uint64_t v);
char *resp_put_bulk(char *p, const void *s, size_t n);
char *resp_put_array(char *p, size_t n);

/* ---- Zipf sampler -------------------------------------------------------------------------- */

/* P(rank k) proportional to (k+1)^-q over [0, n). */
struct zipf {
	double q;
	uint64_t n;
	double h_x1;   /* H(1.5) - h(1) */
	double h_n;    /* H(n + 0.5) */
	double squeeze;
};
void zipf_init(struct zipf *z, uint64_t n, double q);
uint64_t zipf_draw(const struct zipf *z, uint64_t *rng);

#endif
