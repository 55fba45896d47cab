/*
 * bench_sidecar.c — `dynemb-bench sidecar`: the whole sidecar measured end to end, the
 * daemon (dynembd) reached through libdynemb, against the in-process table, a unix socket
 * round trip and Redis, in one run and one process tree.
 *
 * The process tree. The bench process (pinned to CPU 0) is the one client thread. It
 * forks and execs dynembd (--foreground --workers 1 --poll-us 1000000 --numa-node none,
 * pinned to CPU 1; numa-node none keeps the daemon from re-pinning its worker with hwloc,
 * which would put it on CPU 0 next to the client) and, unless --redis none, redis-server
 * (pinned to CPU 1, on a unix socket, no persistence). Both children get
 * PR_SET_PDEATHSIG, so they die with the bench; both are stopped with SIGTERM (SIGKILL
 * after 10 s) before cmd_sidecar returns. Their stderr/stdout go to log files in a
 * private mkdtemp directory, which is removed at the end; a log's tail is printed when
 * its server fails.
 *
 * The phases, in order:
 *   1. dynembd: connect (retrying for 10 s while the socket appears), open a table
 *      (int64 keys, dim 64, uniform init), fill N keys with dynemb_update in batches of 4096
 *      (row k: first float = the key's low 24 bits, the tag checked by every phase).
 *   2. Round trips of 1 and 64 existing keys through the ring (dynemb_lookup without
 *      DYNEMB_READONLY): p50/p99 over K iterations after 1000 warm-up ones.
 *   3. Throughput, batch 4096, one client thread, uniform and Zipf(0.99) keys: through
 *      the ring, then zero-copy (dynemb_lookup with DYNEMB_READONLY;
 *      dynemb_zero_copy_counts must show every key served locally), measured after a
 *      1.2 s pause so that the worker's 1 s busy-poll window has run out (zero-copy does
 *      not use it; a worker spinning on the other vCPU of a 2-vCPU VM cost the client
 *      30-55% of its rate). Keys come from pools of 4M keys drawn before timing (the Zipf
 *      sampler is a CDF over the N ranks + binary search; rank r is key r of the fill,
 *      whose keys are hashes, so hot keys are scattered). Each measurement first runs one
 *      untimed pass over its pool (capped at S/2) to fault the mappings in.
 *   4. dynembd is stopped. Baseline round trip: the same request/response over a unix
 *      SOCK_SEQPACKET socket pair against an echo-lookup thread of this process (pinned
 *      to CPU 1): keys in, 64 floats per key out of a plain array (key % 65536).
 *   5. In-process: an arena + de_table in this process with the same N keys (the same
 *      page policy as the daemon: DE_PAGES_AUTO), de_table_find over the same pools.
 *   6. Redis: min(N, 1M) of the same keys (8 raw bytes each), each with a 256-byte value
 *      (the row as the table would return it), loaded with pipelined SETs; then MGET of
 *      4096 uniform keys, 4 MGETs written before their replies are read. RESP is encoded
 *      and decoded here (no hiredis); every value is copied out and its tag checked.
 * Figures: ratios against the in-process find and Redis, and the goals (met /
 * NOT met). --json prints one JSON object on stdout; the table then goes to stderr.
 *
 * Bounded loops: every wait is bounded by a deadline (server start 10 s, server stop
 * 10 s + SIGKILL), every timed loop by its clock, every socket by a 10 s SO_RCVTIMEO /
 * SO_SNDTIMEO, and every read loop makes progress or fails.
 *
 * Ownership: everything is created by cmd_sidecar (through struct run) and freed in
 * run_free, on success and on every error path.
 */
#include "bench_util.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "de_shm.h"
#include "dynemb.h"

#define DIM 64
#define ROW_BYTES (DIM * 4)
#define BATCH 4096
#define POOL (1u << 22)           /* keys drawn per distribution before timing */
#define ZIPF_S 0.99
#define ECHO_ROWS 65536u           /* rows of the echo server's plain array */
#define REDIS_MAX_KEYS 1000000ull
#define REDIS_DEPTH 4              /* MGETs written before their replies are read */
#define RBUF (4u << 20)            /* the RESP reader's buffer */
#define CLIENT_CPU 0
#define SERVER_CPU 1

enum { DIST_UNIFORM = 0, DIST_ZIPF = 1 };
enum { PATH_RING = 0, PATH_ZEROCOPY = 1, PATH_INPROC = 2 };

struct opts {
	uint64_t keys;
	unsigned iters;
	double seconds;
	bool json, shrt;
	const char *redis; /* redis-server binary; NULL: skip */
	bool redis_none;   /* --redis none */
};

struct figures {
	double rtt[2][2][2];  /* [ring, socket][1 key, 64 keys][p50, p99], ns */
	double thr[3][2];     /* [ring, zero-copy, in-process][uniform, zipf], rows/s */
	double fill_rows_per_s;
	uint64_t zc_local, zc_remote;
	bool have_redis;
	double redis_rows_per_s, redis_load_rows_per_s;
	uint64_t redis_keys;
	char inproc_pages[32];
	char redis_note[160];
};

/* Everything a run owns; run_free releases it all. */
struct run {
	char dir[64];
	char dsock[128], dlog[128], rsock[128], rlog[128];
	pid_t dpid, rpid;
	dynemb_client *c;
	uint64_t *keys;           /* the N keys of the fill */
	uint64_t *pool[2];        /* POOL keys per distribution */
	float *vals;              /* BATCH rows: dynemb_update's input and the echo's output */
	float *out;               /* BATCH rows of output */
	uint8_t *st;              /* BATCH statuses */
	uint64_t *lat;            /* iters latencies */
	de_arena *arena;
	de_table *table;
	struct resp rr;           /* the Redis connection and its reader */
	char *wbuf;
};

/* ---- small helpers ---------------------------------------------------------------- */

static double unit(uint64_t *rng)
{
	*rng += 1;
	return (double)(key_of(*rng * 0x2545f4914f6cdd1dull) >> 11) * 0x1.0p-53;
}

#define fail(...) bench_fail("sidecar", __VA_ARGS__)

/* ---- round trips ---------------------------------------------------------------------- */

/* The round trips are sampled by sample_rtt (bench_util.c), after 1000 untimed requests of
 * each size; each call below checks its answer (a wrong row is -EBADMSG). */
#define RTT_WARM 1000u

struct ring_call {
	struct run *r;
	int t;
};

static int ring_call(void *ctx, const uint64_t *k, uint32_t n, uint64_t *ns)
{
	struct ring_call *rc = ctx;
	struct run *r = rc->r;
	uint64_t t0 = ns_now();
	int err = dynemb_lookup(r->c, rc->t, k, n, r->out, r->st, 0, 1);
	*ns = ns_now() - t0;
	for (uint32_t j = 0; j < n && !err; j++)
		if (r->st[j] != DYNEMB_ST_FOUND || r->out[j * DIM] != row_tag(k[j]))
			err = -EBADMSG;
	return err;
}

static int rtt_ring(struct run *r, int t, const struct opts *o, double out[2][2])
{
	struct ring_call rc = { r, t };
	return sample_rtt(r->keys, o->keys, o->iters, RTT_WARM, r->lat, ring_call, &rc, out);
}

struct echo {
	int sk;
	const float *rows;
};

/* The baseline server: keys in, 64 floats per key out of a plain array. */
static void *echo_main(void *arg)
{
	struct echo *e = arg;
	static uint64_t keys[64];
	static float rows[64 * DIM];
	pin(SERVER_CPU);
	for (;;) { /* ends when the client shuts its end down, or after BENCH_SOCK_TIMEOUT_S idle */
		ssize_t n = recv(e->sk, keys, sizeof keys, 0);
		if (n <= 0 || n % 8)
			return NULL;
		size_t nk = (size_t)n / 8;
		for (size_t i = 0; i < nk; i++)
			memcpy(rows + i * DIM, e->rows + (keys[i] % ECHO_ROWS) * DIM, ROW_BYTES);
		if (send(e->sk, rows, nk * ROW_BYTES, 0) < 0)
			return NULL;
	}
}

/* The baseline request: keys over the socket, rows back. ctx: the client's socket. */
static int socket_call(void *ctx, const uint64_t *k, uint32_t n, uint64_t *ns)
{
	static float resp[64 * DIM];
	int sk = *(int *)ctx, err = 0;
	uint64_t t0 = ns_now();
	if (send(sk, k, n * 8, 0) != (ssize_t)(n * 8) ||
	    recv(sk, resp, sizeof resp, 0) != (ssize_t)(n * ROW_BYTES))
		err = errno ? -errno : -EIO;
	*ns = ns_now() - t0;
	for (uint32_t j = 0; j < n && !err; j++)
		if (resp[j * DIM] != (float)(k[j] % ECHO_ROWS))
			err = -EBADMSG;
	return err;
}

static int rtt_socket(struct run *r, const struct opts *o, double out[2][2])
{
	int sk[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sk))
		return -errno;
	bench_sock_timeouts(sk[0]);
	bench_sock_timeouts(sk[1]);
	/* the echo's array: the tag of row i is i */
	float *rows = malloc((size_t)ECHO_ROWS * ROW_BYTES);
	if (!rows) {
		close(sk[0]);
		close(sk[1]);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < ECHO_ROWS; i++) {
		for (uint32_t d = 0; d < DIM; d++)
			rows[(size_t)i * DIM + d] = (float)d / DIM;
		rows[(size_t)i * DIM] = (float)i;
	}
	struct echo e = { .sk = sk[1], .rows = rows };
	pthread_t th;
	int err = -pthread_create(&th, NULL, echo_main, &e);
	if (err) {
		close(sk[0]);
		close(sk[1]);
		free(rows);
		return err;
	}
	err = sample_rtt(r->keys, o->keys, o->iters, RTT_WARM, r->lat, socket_call, &sk[0], out);
	shutdown(sk[0], SHUT_WR); /* echo_main returns */
	pthread_join(th, NULL);
	close(sk[0]);
	close(sk[1]);
	free(rows);
	return err;
}

/* ---- throughput ------------------------------------------------------------------------ */

static int one_batch(struct run *r, int path, int t, const uint64_t *k)
{
	switch (path) {
	case PATH_RING:
		return dynemb_lookup(r->c, t, k, BATCH, r->out, r->st, 0, 1);
	case PATH_ZEROCOPY:
		return dynemb_lookup(r->c, t, k, BATCH, r->out, r->st, DYNEMB_READONLY, 1);
	default:
		return de_table_find(r->table, k, BATCH, r->out, r->st);
	}
}

/* Batches of BATCH keys from pool for secs seconds, after one untimed pass (<= secs/2). */
static double thr(struct run *r, int path, int t, const uint64_t *pool, double secs, int *err)
{
	const uint32_t nb = POOL / BATCH;
	uint64_t t0 = ns_now(), end = t0 + (uint64_t)(secs * 0.5e9);
	for (uint32_t b = 0; b < nb && !*err && ns_now() < end; b++)
		*err = one_batch(r, path, t, pool + (size_t)b * BATCH);
	uint64_t rows = 0, b = 0;
	t0 = ns_now();
	end = t0 + (uint64_t)(secs * 1e9);
	while (!*err && ns_now() < end) {
		*err = one_batch(r, path, t, pool + (b % nb) * BATCH);
		rows += BATCH;
		b++;
	}
	double rate = (double)rows / ((double)(ns_now() - t0) / 1e9);
	/* the last batch must be rows of existing keys with their tags */
	const uint64_t *k = pool + ((b + nb - 1) % nb) * BATCH;
	for (uint32_t j = 0; j < BATCH && !*err; j++)
		if (r->st[j] != DYNEMB_ST_FOUND || r->out[(size_t)j * DIM] != row_tag(k[j]))
			*err = -EBADMSG;
	return rate;
}

/* POOL keys: uniform over the N keys, or Zipf(ZIPF_S) over their ranks. */
static int make_pools(struct run *r, uint64_t n)
{
	uint64_t rng = 42;
	for (int d = 0; d < 2; d++)
		if (!(r->pool[d] = malloc((size_t)POOL * 8)))
			return -ENOMEM;
	for (uint32_t i = 0; i < POOL; i++)
		r->pool[DIST_UNIFORM][i] = r->keys[key_of(i + 0x5eed) % n];
	double *cdf = malloc(n * sizeof *cdf);
	if (!cdf)
		return -ENOMEM;
	double sum = 0;
	for (uint64_t i = 0; i < n; i++)
		cdf[i] = sum += pow((double)(i + 1), -ZIPF_S);
	for (uint64_t i = 0; i < n; i++)
		cdf[i] /= sum;
	for (uint32_t i = 0; i < POOL; i++) {
		double u = unit(&rng);
		uint64_t lo = 0, hi = n - 1; /* the first rank whose cdf > u */
		while (lo < hi) {        /* log2(n) steps */
			uint64_t mid = lo + (hi - lo) / 2;
			if (cdf[mid] > u)
				hi = mid;
			else
				lo = mid + 1;
		}
		r->pool[DIST_ZIPF][i] = r->keys[lo];
	}
	free(cdf);
	return 0;
}

/* ---- Redis over a unix socket (RESP: bench_util.c) ---------------------------------------------------------- */

/* Connect to redis at path, retrying until the server answers PING (BENCH_START_WAIT_MS). */
static int redis_connect(struct run *r)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	if (strlen(r->rsock) >= sizeof a.sun_path)
		return -ENAMETOOLONG;
	memcpy(a.sun_path, r->rsock, strlen(r->rsock) + 1);
	int err = resp_connect(&r->rr, (struct sockaddr *)&a, sizeof a, r->rpid, RBUF);
	if (err == -ECHILD)
		r->rpid = 0;
	return err;
}

static int redis_load(struct run *r, uint64_t nkeys, double *rate)
{
	uint64_t t0 = ns_now();
	float v[DIM];
	int err = 0;
	for (uint64_t i = 0; i < nkeys && !err; i += BATCH) {
		uint64_t n = nkeys - i < BATCH ? nkeys - i : BATCH;
		char *p = r->wbuf;
		for (uint64_t j = 0; j < n; j++) {
			bench_row(v, DIM, r->keys[i + j]); /* the row as the table returns it */
			p = resp_put_array(p, 3);
			p = resp_put_bulk(p, "SET", 3);
			p = resp_put_bulk(p, &r->keys[i + j], 8);
			p = resp_put_bulk(p, v, ROW_BYTES);
		}
		err = resp_write_all(r->rr.fd, r->wbuf, (size_t)(p - r->wbuf));
		if (!err)
			err = resp_ok(&r->rr, n);
	}
	*rate = (double)nkeys / ((double)(ns_now() - t0) / 1e9);
	return err;
}

/* Read one MGET reply of n values into r->out; check every tag against keys. */
static int redis_read_mget(struct run *r, const uint64_t *keys, uint32_t n)
{
	long long cnt;
	int err = resp_header(&r->rr, '*', &cnt);
	if (!err && cnt != n)
		err = -EPROTO;
	for (uint32_t j = 0; j < n && !err; j++) {
		const char *v;
		size_t len;
		err = resp_bulk(&r->rr, &v, &len); /* -ENOENT: a nil, the key is not there */
		if (!err && len != ROW_BYTES)
			err = -EPROTO;
		if (!err) {
			float *row = r->out + (size_t)j * DIM;
			memcpy(row, v, ROW_BYTES);
			if (row[0] != row_tag(keys[j]))
				err = -EBADMSG;
		}
	}
	return err;
}

static double redis_mget(struct run *r, uint64_t nkeys, double secs, int *err)
{
	/* uniform over the loaded keys: index i of the fill is key keys[i] */
	const uint32_t nb = POOL / BATCH;
	uint64_t *pool = r->pool[DIST_UNIFORM];
	for (uint32_t i = 0; i < POOL; i++)
		pool[i] = r->keys[key_of(i + 0x7ed15) % nkeys];
	uint64_t rows = 0, b = 0, t0 = 0, end = 0;
	for (int timed = 0; timed < 2 && !*err; timed++) {
		/* untimed: about a tenth of the time, to warm up both sides */
		t0 = ns_now();
		end = t0 + (uint64_t)(secs * (timed ? 1e9 : 1e8));
		rows = 0;
		while (!*err && ns_now() < end) {
			char *p = r->wbuf;
			for (uint32_t d = 0; d < REDIS_DEPTH; d++) {
				const uint64_t *k = pool + ((b + d) % nb) * BATCH;
				p = resp_put_array(p, BATCH + 1);
				p = resp_put_bulk(p, "MGET", 4);
				for (uint32_t j = 0; j < BATCH; j++)
					p = resp_put_bulk(p, &k[j], 8);
			}
			*err = resp_write_all(r->rr.fd, r->wbuf, (size_t)(p - r->wbuf));
			for (uint32_t d = 0; d < REDIS_DEPTH && !*err; d++) {
				*err = redis_read_mget(r, pool + ((b + d) % nb) * BATCH, BATCH);
				rows += BATCH;
			}
			b += REDIS_DEPTH;
		}
	}
	return (double)rows / ((double)(ns_now() - t0) / 1e9);
}

static int run_redis(struct run *r, const struct opts *o, struct figures *f)
{
	char *argv[] = { (char *)o->redis, "--port", "0", "--unixsocket", r->rsock,
			 "--unixsocketperm", "700", "--save", "", "--appendonly", "no",
			 "--daemonize", "no", "--loglevel", "warning", NULL };
	f->redis_keys = o->keys < REDIS_MAX_KEYS ? o->keys : REDIS_MAX_KEYS;
	r->rpid = bench_spawn(argv, r->rlog, SERVER_CPU);
	if (r->rpid < 0) {
		r->rpid = 0;
		return -errno;
	}
	int err = redis_connect(r);
	if (err) {
		fail("redis-server (%s) did not answer on %s: %s", o->redis, r->rsock,
		     strerror(-err));
		bench_log_tail(r->rlog);
		return err;
	}
	err = redis_load(r, f->redis_keys, &f->redis_load_rows_per_s);
	if (!err)
		f->redis_rows_per_s = redis_mget(r, f->redis_keys, o->seconds, &err);
	if (err)
		fail("redis: %s", strerror(-err));
	else
		f->have_redis = true;
	resp_close(&r->rr);
	bench_stop_child(&r->rpid);
	return err;
}

/* ---- the daemon ------------------------------------------------------------------------ */

static int start_daemon(struct run *r, const char *path)
{
	char uid[16];
	snprintf(uid, sizeof uid, "%u", (unsigned)geteuid()); /* dynembd allows listed uids only */
	char *argv[] = { (char *)path, "--foreground", "--socket", r->dsock, "--poll-us", "1000000",
			 "--workers", "1", "--numa-node", "none", "--allow-uid", uid, NULL };
	r->dpid = bench_spawn(argv, r->dlog, SERVER_CPU);
	if (r->dpid < 0) {
		r->dpid = 0;
		return -errno;
	}
	int err = bench_connect_daemon(r->dsock, "dynemb-bench sidecar", &r->dpid, &r->c);
	if (err) {
		fail("dynembd (%s) did not come up on %s: %s", path, r->dsock,
		     dynemb_strerror(err));
		bench_log_tail(r->dlog);
	}
	return err;
}

static int fill_daemon(struct run *r, int t, uint64_t n, double *rate)
{
	int err = bench_fill(r->c, t, r->keys, n, r->vals, DIM, BATCH, rate);
	struct dynemb_stats s;
	if (!err)
		err = dynemb_stats(r->c, t, &s);
	if (!err && s.keys != n) {
		fail("the daemon's table holds %" PRIu64 " keys after the fill, not %" PRIu64,
		     s.keys, n);
		err = -EBADMSG;
	}
	return err;
}

static int run_daemon(struct run *r, const char *path, const struct opts *o, struct figures *f)
{
	int err = start_daemon(r, path), t = -1;
	struct dynemb_table_spec spec = { .name = "sidecar_bench", .dim = DIM,
					  .init = DYNEMB_UNIFORM, .init_a = -1, .init_b = 1,
					  .seed = 1, .keys = DYNEMB_INT64_KEYS };
	const char *what = "open";
	if (!err)
		err = dynemb_open(r->c, &spec, &t);
	if (!err)
		what = "fill", err = fill_daemon(r, t, o->keys, &f->fill_rows_per_s);
	if (!err)
		what = "ring round trips", err = rtt_ring(r, t, o, f->rtt[0]);
	uint64_t l0 = 0, r0 = 0, l1 = 0, r1 = 0;
	for (int d = 0; d < 2 && !err; d++) {
		what = "ring throughput";
		f->thr[PATH_RING][d] = thr(r, PATH_RING, t, r->pool[d], o->seconds, &err);
	}
	dynemb_zero_copy_counts(r->c, &l0, &r0);
	/* Zero-copy does not use the worker: let its busy-poll window (1 s) run out first. On
	 * a 2-vCPU VM a spinning worker cost the client 30-55% of its zero-copy rate. */
	usleep(1200000);
	for (int d = 0; d < 2 && !err; d++) {
		what = "zero-copy throughput";
		f->thr[PATH_ZEROCOPY][d] = thr(r, PATH_ZEROCOPY, t, r->pool[d], o->seconds, &err);
	}
	dynemb_zero_copy_counts(r->c, &l1, &r1);
	f->zc_local = l1 - l0;
	f->zc_remote = r1 - r0;
	if (!err && (f->zc_local == 0 || f->zc_remote * 100 > f->zc_local)) {
		fail("zero-copy: %" PRIu64 " keys served locally, %" PRIu64 " by the daemon",
		     f->zc_local, f->zc_remote);
		err = -EBADMSG;
	}
	if (err && r->c) {
		fail("dynembd: %s: %s", what, dynemb_strerror(err));
		bench_log_tail(r->dlog);
	}
	dynemb_close(r->c);
	r->c = NULL;
	int st = bench_stop_child(&r->dpid);
	if (!err && st != 0) {
		fail("dynembd did not stop cleanly (status %d)", st);
		bench_log_tail(r->dlog);
		err = -EIO;
	}
	return err;
}

/* ---- in-process ------------------------------------------------------------------------- */

static int run_inproc(struct run *r, const struct opts *o, struct figures *f)
{
	struct de_arena_config ac = { .pages = DE_PAGES_AUTO, .numa_node = DE_NUMA_AUTO };
	struct de_table_config tc = { .dim = DIM, .init = DE_INIT_UNIFORM, .init_a = -1,
				      .init_b = 1, .seed = 1 };
	int err = de_arena_create(&ac, &r->arena);
	if (!err)
		err = de_table_open(r->arena, &tc, &r->table);
	for (uint64_t i = 0; !err && i < o->keys; i += BATCH) {
		uint64_t n = o->keys - i < BATCH ? o->keys - i : BATCH;
		for (uint64_t j = 0; j < n; j++) /* the same rows as the daemon's */
			bench_row(r->vals + j * DIM, DIM, r->keys[i + j]);
		err = de_table_assign(r->table, r->keys + i, n, r->vals, NULL, 1);
	}
	if (!err)
		snprintf(f->inproc_pages, sizeof f->inproc_pages, "%s",
			 de_pages_name(de_arena_pages(r->arena)));
	for (int d = 0; d < 2 && !err; d++)
		f->thr[PATH_INPROC][d] = thr(r, PATH_INPROC, -1, r->pool[d], o->seconds, &err);
	if (err)
		fail("in-process table: %s", strerror(-err));
	de_table_close(r->table);
	r->table = NULL;
	de_arena_destroy(r->arena);
	r->arena = NULL;
	return err;
}

/* ---- the report ------------------------------------------------------------------------- */

static void report(const struct opts *o, const struct figures *f)
{
	FILE *h = o->json ? stderr : stdout;
	static const char *dn[2] = { "uniform", "zipf(0.99)" };
	const double (*t)[2] = f->thr;
	fprintf(h, "round trips, dim %d, client on cpu %d, dynembd worker busy-polling on cpu %d (ns):\n",
		DIM, CLIENT_CPU, SERVER_CPU);
	fprintf(h, "  %-26s %12s %12s %12s %12s\n", "path", "1 key p50", "1 key p99", "64 keys p50",
		"64 keys p99");
	fprintf(h, "  %-26s %12.0f %12.0f %12.0f %12.0f\n", "dynembd ring (dynemb_lookup)",
		f->rtt[0][0][0], f->rtt[0][0][1], f->rtt[0][1][0], f->rtt[0][1][1]);
	fprintf(h, "  %-26s %12.0f %12.0f %12.0f %12.0f\n", "unix socket echo-lookup",
		f->rtt[1][0][0], f->rtt[1][0][1], f->rtt[1][1][0], f->rtt[1][1][1]);
	fprintf(h, "  1-key p50: the ring is %.1fx faster than the socket\n",
		f->rtt[1][0][0] / f->rtt[0][0][0]);
	fprintf(h, "lookup throughput, batch %d, one client thread, %" PRIu64 " keys (M rows/s):\n",
		BATCH, o->keys);
	fprintf(h, "  %-26s %12s %12s\n", "path", dn[0], dn[1]);
	fprintf(h, "  %-26s %12.2f %12.2f\n", "in-process de_table_find", t[PATH_INPROC][0] / 1e6,
		t[PATH_INPROC][1] / 1e6);
	fprintf(h, "  %-26s %12.2f %12.2f\n", "zero-copy (DYNEMB_READONLY)",
		t[PATH_ZEROCOPY][0] / 1e6, t[PATH_ZEROCOPY][1] / 1e6);
	fprintf(h, "  %-26s %12.2f %12.2f\n", "ring (dynemb_lookup)", t[PATH_RING][0] / 1e6,
		t[PATH_RING][1] / 1e6);
	if (f->have_redis)
		fprintf(h, "  %-26s %12.2f %12s   (%" PRIu64 " keys, MGET x%d pipelined)\n",
			"redis MGET", f->redis_rows_per_s / 1e6, "-", f->redis_keys, REDIS_DEPTH);
	else
		fprintf(h, "  %-26s %12s %12s   (%s)\n", "redis MGET", "-", "-", f->redis_note);
	fprintf(h, "  zero-copy keys: %" PRIu64 " served locally, %" PRIu64 " by the daemon; "
		   "in-process arena pages: %s\n", f->zc_local, f->zc_remote, f->inproc_pages);
	fprintf(h, "ratios (uniform; zipf in brackets):\n");
	fprintf(h, "  ring / in-process       %6.2f  (%.2f)\n", t[0][0] / t[2][0],
		t[0][1] / t[2][1]);
	fprintf(h, "  zero-copy / in-process  %6.2f  (%.2f)\n", t[1][0] / t[2][0],
		t[1][1] / t[2][1]);
	if (f->have_redis) {
		fprintf(h, "  ring / redis            %6.1f\n", t[0][0] / f->redis_rows_per_s);
		fprintf(h, "  zero-copy / redis       %6.1f\n", t[1][0] / f->redis_rows_per_s);
	}
	fprintf(h, "goals (uniform):\n");
	fprintf(h, "  ring >= 60%% of in-process           %-8s (%.2f)\n",
		bench_met(t[0][0] >= 0.6 * t[2][0]), t[0][0] / t[2][0]);
	fprintf(h, "  zero-copy >= 85%% of in-process      %-8s (%.2f)\n",
		bench_met(t[1][0] >= 0.85 * t[2][0]), t[1][0] / t[2][0]);
	if (f->have_redis) {
		fprintf(h, "  ring >= 20x redis                   %-8s (%.1fx)\n",
			bench_met(t[0][0] >= 20 * f->redis_rows_per_s), t[0][0] / f->redis_rows_per_s);
		fprintf(h, "  zero-copy >= 20x redis              %-8s (%.1fx)\n",
			bench_met(t[1][0] >= 20 * f->redis_rows_per_s), t[1][0] / f->redis_rows_per_s);
	} else {
		fprintf(h, "  ring, zero-copy >= 20x redis        n/a (%s)\n", f->redis_note);
	}
	fprintf(h, "  1-key ring round trip p50 < 1.5 us  %-8s (%.0f ns)\n",
		bench_met(f->rtt[0][0][0] < 1500), f->rtt[0][0][0]);
	fprintf(h, "  1-key ring round trip p99 < 5 us    %-8s (%.0f ns)\n",
		bench_met(f->rtt[0][0][1] < 5000), f->rtt[0][0][1]);
	if (!o->json)
		return;
	char redis[64] = "null", ring_x[32] = "null", zc_x[32] = "null";
	if (f->have_redis) {
		snprintf(redis, sizeof redis, "%.0f", f->redis_rows_per_s);
		snprintf(ring_x, sizeof ring_x, "%.2f", t[0][0] / f->redis_rows_per_s);
		snprintf(zc_x, sizeof zc_x, "%.2f", t[1][0] / f->redis_rows_per_s);
	}
	printf("{\"command\":\"sidecar\",\"keys\":%" PRIu64 ",\"dim\":%d,\"batch\":%d,"
	       "\"fill_rows_per_s\":%.0f,"
	       "\"rtt1_p50_ns\":%.0f,\"rtt1_p99_ns\":%.0f,\"rtt64_p50_ns\":%.0f,\"rtt64_p99_ns\":%.0f,"
	       "\"socket_rtt1_p50_ns\":%.0f,\"socket_rtt1_p99_ns\":%.0f,"
	       "\"socket_rtt64_p50_ns\":%.0f,\"socket_rtt64_p99_ns\":%.0f,"
	       "\"ring_rows_per_s\":%.0f,\"zerocopy_rows_per_s\":%.0f,\"inproc_rows_per_s\":%.0f,"
	       "\"ring_zipf_rows_per_s\":%.0f,\"zerocopy_zipf_rows_per_s\":%.0f,"
	       "\"inproc_zipf_rows_per_s\":%.0f,"
	       "\"zerocopy_local_keys\":%" PRIu64 ",\"zerocopy_remote_keys\":%" PRIu64 ","
	       "\"inproc_pages\":\"%s\",\"redis_keys\":%" PRIu64 ",\"redis_rows_per_s\":%s,"
	       "\"ring_over_inproc\":%.3f,\"zerocopy_over_inproc\":%.3f,"
	       "\"ring_zipf_over_inproc_zipf\":%.3f,\"zerocopy_zipf_over_inproc_zipf\":%.3f,"
	       "\"ring_over_redis\":%s,\"zerocopy_over_redis\":%s,"
	       "\"goal_ring_60pct\":%s,\"goal_zerocopy_85pct\":%s,\"goal_20x_redis\":%s,"
	       "\"goal_rtt1_p50\":%s,\"goal_rtt1_p99\":%s}\n",
	       o->keys, DIM, BATCH, f->fill_rows_per_s, f->rtt[0][0][0], f->rtt[0][0][1],
	       f->rtt[0][1][0], f->rtt[0][1][1], f->rtt[1][0][0], f->rtt[1][0][1], f->rtt[1][1][0],
	       f->rtt[1][1][1], t[0][0], t[1][0], t[2][0], t[0][1], t[1][1], t[2][1], f->zc_local,
	       f->zc_remote, f->inproc_pages, f->have_redis ? f->redis_keys : 0, redis,
	       t[0][0] / t[2][0], t[1][0] / t[2][0], t[0][1] / t[2][1], t[1][1] / t[2][1], ring_x,
	       zc_x, t[0][0] >= 0.6 * t[2][0] ? "true" : "false",
	       t[1][0] >= 0.85 * t[2][0] ? "true" : "false",
	       !f->have_redis ? "null"
	       : t[0][0] >= 20 * f->redis_rows_per_s && t[1][0] >= 20 * f->redis_rows_per_s ? "true"
											 : "false",
	       f->rtt[0][0][0] < 1500 ? "true" : "false",
	       f->rtt[0][0][1] < 5000 ? "true" : "false");
}

/* ---- options, setup, teardown ------------------------------------------------------------ */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: " PROG " sidecar [--keys N] [--iters K] [--seconds S] [--short] [--json]\n"
		"                            [--redis PATH|none]\n"
		"  The sidecar end to end: starts dynembd (busy-polling, one worker, on cpu 1) and\n"
		"  measures, from one client thread on cpu 0 through libdynemb, round trips of 1 and\n"
		"  64 keys through the ring (baseline: a unix socket echo-lookup thread) and lookup\n"
		"  throughput (batch 4096, dim 64, uniform and Zipf(0.99)) through the ring and the\n"
		"  zero-copy path, against an in-process de_table_find and Redis MGET.\n"
		"  dynembd: $DYNEMBD, else ../../src/server/dynembd from this binary's directory.\n"
		"  --keys N      keys in the table (default 10000000; --short 1000000)\n"
		"  --iters K     round trips per measured case (default 100000; --short 20000)\n"
		"  --seconds S   per throughput measurement (default 2; --short 0.5)\n"
		"  --redis PATH  the redis-server binary (default: redis-server on $PATH, skipped\n"
		"                when absent); none: skip Redis. Redis gets min(N, 1000000) keys.\n"
		"  --json        one JSON object on stdout (the table goes to stderr)\n");
}

static int parse(int argc, char **argv, struct opts *o)
{
	bool keys_set = false, iters_set = false, secs_set = false;
	static const struct option lo[] = {
		{ "keys", required_argument, NULL, 'k' }, { "iters", required_argument, NULL, 'i' },
		{ "seconds", required_argument, NULL, 's' }, { "short", no_argument, NULL, 'S' },
		{ "json", no_argument, NULL, 'j' }, { "redis", required_argument, NULL, 'r' },
		{ "help", no_argument, NULL, 'h' }, { 0 } };
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		char *end = NULL;
		errno = 0;
		switch (c) {
		case 'k': o->keys = strtoull(optarg, &end, 10), keys_set = true; break;
		case 'i': {
			unsigned long v = strtoul(optarg, &end, 10);
			o->iters = v > UINT_MAX ? UINT_MAX : (unsigned)v;
			iters_set = true;
			break;
		}
		case 's': o->seconds = strtod(optarg, &end), secs_set = true; break;
		case 'S': o->shrt = true; break;
		case 'j': o->json = true; break;
		case 'r': o->redis = optarg; break;
		case 'h': usage(stdout); return 1;
		default: usage(stderr); return EXIT_USAGE;
		}
		if (bench_check_number("sidecar", optarg, end))
			return EXIT_USAGE;
	}
	if (bench_check_operands("sidecar", argc, argv, optind, usage))
		return EXIT_USAGE;
	if (o->shrt) {
		o->keys = keys_set ? o->keys : 1000000;
		o->iters = iters_set ? o->iters : 20000;
		o->seconds = secs_set ? o->seconds : 0.5;
	}
	if (o->keys < BATCH || o->keys > (1ull << 31) || o->iters < 100 || o->iters > 10000000 ||
	    !(o->seconds >= 0.01 && o->seconds <= 600)) {
		fprintf(stderr,
			PROG " sidecar: --keys 4096..2^31, --iters 100..1e7, --seconds 0.01..600\n");
		return EXIT_USAGE;
	}
	return bench_server_opt("sidecar", "--redis", &o->redis, &o->redis_none);
}

static void run_free(struct run *r)
{
	dynemb_close(r->c);
	resp_close(&r->rr);
	bench_stop_child(&r->dpid);
	bench_stop_child(&r->rpid);
	de_table_close(r->table);
	de_arena_destroy(r->arena);
	free(r->keys);
	free(r->pool[0]);
	free(r->pool[1]);
	free(r->vals);
	free(r->out);
	free(r->st);
	free(r->lat);
	free(r->wbuf);
	if (r->dir[0]) {
		unlink(r->dsock);
		unlink(r->dlog);
		unlink(r->rsock);
		unlink(r->rlog);
		rmdir(r->dir);
	}
}

int cmd_sidecar(int argc, char **argv)
{
	struct opts o = { .keys = 10000000, .iters = 100000, .seconds = 2 };
	int pr = parse(argc, argv, &o);
	if (pr)
		return pr == 1 ? 0 : pr;
	char dynembd[PATH_MAX];
	if (bench_find_dynembd(dynembd, sizeof dynembd)) {
		fail("dynembd not found at %s: build it (ninja) or set DYNEMBD to its path",
		     dynembd);
		return 1;
	}
	struct figures f = { 0 };
	char redis_path[PATH_MAX];
	if (o.redis_none) {
		snprintf(f.redis_note, sizeof f.redis_note, "skipped: --redis none");
	} else if (!o.redis && !(o.redis = bench_find_on_path("redis-server", redis_path,
								     sizeof redis_path))) {
		snprintf(f.redis_note, sizeof f.redis_note,
			 "skipped: no redis-server on $PATH (apt-get install -y redis-server)");
	}
	FILE *h = o.json ? stderr : stdout;

	struct run r = { .rr = { .fd = -1 } };
	int err = 0;
	r.keys = malloc(o.keys * 8);
	r.vals = malloc((size_t)BATCH * ROW_BYTES);
	r.out = malloc((size_t)BATCH * ROW_BYTES);
	r.st = malloc(BATCH);
	r.lat = malloc(o.iters * sizeof *r.lat);
	if (o.redis) {
		/* REDIS_DEPTH MGETs of BATCH 8-byte keys, or BATCH SETs of 256-byte values */
		r.wbuf = malloc((size_t)BATCH * (ROW_BYTES + 64) +
				(size_t)REDIS_DEPTH * BATCH * 20 + 4096);
	}
	if (!r.keys || !r.vals || !r.out || !r.st || !r.lat || (o.redis && !r.wbuf))
		err = -ENOMEM;
	if (!err)
		err = bench_mkdtemp(r.dir, sizeof r.dir, "dynemb-sidecar");
	if (err) {
		fail("setup: %s", strerror(-err));
		run_free(&r);
		return 1;
	}
	snprintf(r.dsock, sizeof r.dsock, "%s/d.sock", r.dir);
	snprintf(r.dlog, sizeof r.dlog, "%s/dynembd.log", r.dir);
	snprintf(r.rsock, sizeof r.rsock, "%s/r.sock", r.dir);
	snprintf(r.rlog, sizeof r.rlog, "%s/redis.log", r.dir);
	pin(CLIENT_CPU);
	for (uint64_t i = 0; i < o.keys; i++)
		r.keys[i] = key_of(i + 0x1000);
	uint64_t t0 = ns_now();
	err = make_pools(&r, o.keys);
	if (err) {
		fail("key pools: %s", strerror(-err));
		run_free(&r);
		return 1;
	}
	char load[64] = "?";
	FILE *lf = fopen("/proc/loadavg", "r");
	if (lf) {
		if (!fgets(load, sizeof load, lf))
			strcpy(load, "?");
		load[strcspn(load, "\n")] = 0;
		fclose(lf);
	}
	fprintf(h, "%s sidecar: %" PRIu64 " keys, dim %d, dynembd %s (key pools drawn in %.1f s; "
		   "loadavg %s)\n", PROG, o.keys, DIM, dynembd,
		(double)(ns_now() - t0) / 1e9, load);
	fflush(h);

	err = run_daemon(&r, dynembd, &o, &f);
	if (!err) {
		fprintf(h, "dynembd: filled %" PRIu64
			   " keys with dynemb_update at %.2f M rows/s; stopped\n",
			o.keys, f.fill_rows_per_s / 1e6);
		fflush(h);
		err = rtt_socket(&r, &o, f.rtt[1]);
		if (err)
			fail("unix socket baseline: %s", strerror(-err));
	}
	if (!err)
		err = run_inproc(&r, &o, &f);
	if (!err && o.redis) {
		err = run_redis(&r, &o, &f);
		if (!err)
			fprintf(h, "redis: %" PRIu64 " keys (min(N, 1M)) of %d bytes loaded with pipelined "
				   "SET at %.2f M keys/s; stopped\n", f.redis_keys, ROW_BYTES,
				f.redis_load_rows_per_s / 1e6);
	}
	if (!err)
		report(&o, &f);
	run_free(&r);
	return err ? 1 : 0;
}
