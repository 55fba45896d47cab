/*
 * bench_serve.c — `dynemb-bench serve`: an inference process reading a serving table
 * (docs/serving.md) in batches of 100 keys at dim 64, without a swap and while a full new
 * version loads and switches, against an in-process hash map of the same rows (the
 * bound) and HPS-style serving from Redis (pipelined HMGET on a unix socket), in one run.
 *
 * The process tree. The bench process (pinned to CPU 0) is the reader. It forks and execs
 * dynembd (--foreground --workers 1 --numa-node none --export-dir DIR/exp, pinned to
 * CPU 1) and, unless --redis none, redis-server (pinned to CPU 1, a unix socket, no
 * persistence). Both get PR_SET_PDEATHSIG and are stopped with SIGTERM (SIGKILL after
 * 10 s) before cmd_serve returns; their logs and the export files live in a private
 * mkdtemp directory, removed at the end.
 *
 * The phases, in order:
 *   1. A trainer connection opens an ordinary table (dim 64), writes N rows of version 1
 *      (row of key k: bench_row, then float 1 = the version), exports it to v1.dexp,
 *      writes the rows of version 2, exports v2.dexp, closes; the table is dropped.
 *   2. dynemb_serve_load of v1.dexp; the reader opens the serving name.
 *   3. steady: batches of B uniform keys (from a pool drawn before timing) through
 *      dynemb_serve_lookup for S seconds after S/10 untimed; each batch is timed alone.
 *   4. swap: a loader thread (its own connection) loads v2.dexp, then v1.dexp, ... while
 *      the reader goes on as in 3; the window runs from the first load's start until the
 *      last one returned (at least one, and at least S seconds) plus 50 ms, so the first
 *      batches after the switch (which move the handle: one control round trip) count.
 *   5. deltas: live deltas are not built (docs/serving.md); their fields are null.
 *   6. dynembd is stopped. In-process: an open-addressing hash map (linear probing,
 *      capacity 2^k >= 2N) of the same rows, the batch copied out row by row.
 *   7. Redis: min(N, 1M) of the same rows as HPS lays them out: 8 hash partitions
 *      ("p0".."p7", key % 8), field = the 8 raw key bytes, value = the 256-byte row; a
 *      batch is one HMGET per partition it touches, all written in one write, then read.
 * Every batch of every path is checked after its timing: each row's tag (float 0) is its
 * key's, and on the serving table float 1 of every row is the version the call said
 * answered the batch (a batch with rows of two versions is counted in
 * mixed_version_batches; a call that fails or a key not found in failed_requests). The
 * exit status is 1 when either is non-zero, or when the reader never saw the swap.
 * --json prints one JSON object on stdout; the human table then goes to stderr.
 *
 * Bounded loops: every wait is bounded by a deadline (server start and stop 10 s, the
 * swap window by its loads, which the daemon bounds), every timed loop by its clock and
 * by the capacity of its latency array.
 *
 * Ownership: everything is created by cmd_serve (through struct run) and freed in
 * run_free, on success and on every error path.
 */
#include "bench_util.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "dynemb.h"

#define DIM 64
#define ROW_BYTES (DIM * 4)
#define FILL_BATCH 4096
#define POOL_KEYS (1u << 20)       /* keys drawn before timing; batches cycle through them */
#define MAX_SAMPLES (1u << 22)     /* latencies per phase; a phase ends when they are full */
#define REDIS_MAX_KEYS 1000000ull
#define REDIS_PARTS 8u             /* HPS-style hash partitions */
#define RBUF (4u << 20)
#define CLIENT_CPU 0
#define SERVER_CPU 1
#define SERVE_NAME "serve_bench"
#define GOAL_P99_NS 20000.0

#define fail(...) bench_fail("serve", __VA_ARGS__)

struct opts {
	uint64_t keys;
	unsigned batch;
	double seconds;
	bool json, shrt;
	const char *redis;
	bool redis_none;
};

/* One phase's latencies: p50, p99, p99.9 (ns) and its count. */
struct lat {
	double p[3];
	uint64_t n;
};

struct figures {
	struct lat steady, swap, inproc, redis;
	uint64_t failed, mixed;
	uint64_t swaps, versions_seen, switches, first_v, last_v;
	double load_s_max, load_rows_per_s, fill_rows_per_s, export_s;
	uint64_t version_bytes;
	bool have_redis;
	uint64_t redis_keys;
	char redis_note[160];
	struct machine machine;
	int64_t inproc_thp_kb;     /* AnonHugePages of this process with the map built */
	char daemon_pages[16];     /* the serving version's pages (dynembctl tables' pages) */
};

struct run {
	char dir[64], exp[96], dsock[128], dlog[128], rsock[128], rlog[128];
	char v1[160], v2[160];
	pid_t dpid, rpid;
	dynemb_client *c;          /* the reader */
	uint64_t *keys;            /* the N keys */
	uint64_t *pool;            /* POOL_KEYS draws of keys (a multiple of the batch) */
	float *vals, *out;
	uint8_t *st;
	uint64_t *lat;             /* MAX_SAMPLES */
	/* the in-process map (map_alloc'd) */
	struct mslot *mslots;
	float *mrows;
	size_t mslots_bytes, mrows_bytes;
	uint64_t mmask;
	uint64_t *mat;             /* FILL_BATCH slots / rows of the batch */
	struct resp rr;
	char *wbuf;
};

/* ---- percentiles -------------------------------------------------------------------- */

static void lat_of(uint64_t *v, uint64_t n, struct lat *l)
{
	static const double ps[3] = { 0.50, 0.99, 0.999 };
	qsort(v, n, sizeof *v, cmp_u64);
	l->n = n;
	for (int i = 0; i < 3; i++) {
		if (!n) {
			l->p[i] = NAN;
			continue;
		}
		uint64_t rank = (uint64_t)ceil(ps[i] * (double)n);
		l->p[i] = (double)v[(rank ? rank : 1) - 1];
	}
}

/* ---- the trainer: two versions exported ----------------------------------------------- */

static int write_version(dynemb_client *c, int t, struct run *r, uint64_t n, float v,
			 double *rate)
{
	uint64_t t0 = ns_now();
	int err = 0;
	for (uint64_t i = 0; i < n && !err; i += FILL_BATCH) {
		uint64_t m = n - i < FILL_BATCH ? n - i : FILL_BATCH;
		for (uint64_t j = 0; j < m; j++) {
			bench_row(r->vals + j * DIM, DIM, r->keys[i + j]);
			r->vals[j * DIM + 1] = v;
		}
		err = dynemb_update(c, t, r->keys + i, m, r->vals, 1, NULL);
	}
	*rate = (double)n / ((double)(ns_now() - t0) / 1e9);
	return err;
}

static int make_versions(struct run *r, const struct opts *o, struct figures *f)
{
	dynemb_client *tc = NULL;
	int err = bench_connect_daemon(r->dsock, "dynemb-bench serve trainer", &r->dpid, &tc);
	struct dynemb_table_spec spec = { .name = "serve_bench_trainer", .dim = DIM,
					  .init = DYNEMB_UNIFORM, .init_a = -1, .init_b = 1,
					  .seed = 1, .keys = DYNEMB_INT64_KEYS };
	int t = -1;
	const char *what = "open";
	if (!err)
		err = dynemb_open(tc, &spec, &t);
	double e0 = 0, e1 = 0;
	for (int v = 1; v <= 2 && !err; v++) {
		what = "fill";
		err = write_version(tc, t, r, o->keys, (float)v, &f->fill_rows_per_s);
		if (!err) {
			what = "export";
			e0 = now_s();
			err = dynemb_export(tc, spec.name, v == 1 ? r->v1 : r->v2, NULL, NULL, NULL,
					    NULL);
			e1 = now_s();
		}
	}
	f->export_s = e1 - e0;
	if (err)
		fail("trainer: %s: %s", what, dynemb_strerror(err));
	dynemb_close(tc);
	if (!err && (err = dynemb_drop_table(r->c, spec.name, NULL)))
		fail("trainer: drop: %s", dynemb_strerror(err));
	return err;
}

/* ---- the reader ------------------------------------------------------------------------ */

/* The file a serving version was loaded from says float 1 of its rows: version 1 is
 * v1.dexp, then the loader alternates v2.dexp (even versions) and v1.dexp (odd ones). */
static float file_tag(uint64_t version)
{
	return version & 1 ? 1.0f : 2.0f;
}

/* Checks batch k[0, n) in r->out / r->st against rows whose float 1 is tag: -EBADMSG for
 * a row of another version or key, -ENOENT for a key not found. */
static int check_serve(const struct run *r, const uint64_t *k, unsigned n, float tag)
{
	for (unsigned i = 0; i < n; i++) {
		const float *row = r->out + (size_t)i * DIM;
		if (r->st[i] != DYNEMB_ST_FOUND)
			return -ENOENT;
		if (row[0] != row_tag(k[i]) || row[1] != tag)
			return -EBADMSG;
	}
	return 0;
}

struct loader {
	struct run *r;
	const struct opts *o;
	int done;             /* atomic: the loads are over */
	int err;
	uint64_t swaps;
	double load_s_max, rows_per_s, min_s;
	uint64_t bytes;
};

static void *loader_main(void *arg)
{
	struct loader *l = arg;
	dynemb_client *c = NULL;
	pid_t pid = l->r->dpid;
	l->err = bench_connect_daemon(l->r->dsock, "dynemb-bench serve loader", &pid, &c);
	double t0 = now_s();
	for (uint64_t i = 0; !l->err && (i == 0 || now_s() - t0 < l->min_s); i++) {
		struct dynemb_serve_result res;
		double a = now_s();
		l->err = dynemb_serve_load(c, SERVE_NAME, i % 2 == 0 ? l->r->v2 : l->r->v1, 0, NULL,
					   NULL, &res);
		double s = now_s() - a;
		if (l->err) {
			fail("serve_load: %s", dynemb_strerror(l->err));
			break;
		}
		l->swaps++;
		l->bytes = res.bytes;
		if (s > l->load_s_max)
			l->load_s_max = s;
		l->rows_per_s = (double)res.records / s;
	}
	dynemb_close(c);
	__atomic_store_n(&l->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

/* Reads batches until `until` (ns) or, with stop, until *stop and 50 ms more: latencies
 * into r->lat (*n of them), failures and mixed batches into f. */
static int read_serving(struct run *r, const struct opts *o, int h, uint64_t until,
			const int *stop, uint64_t *n, bool timed, struct figures *f)
{
	const unsigned b = o->batch, nb = POOL_KEYS / b;
	uint64_t i = 0, end_after_stop = 0, seen = 0;
	*n = 0;
	for (;; i++) {
		uint64_t now = ns_now();
		if (stop) {
			if (!end_after_stop && __atomic_load_n(stop, __ATOMIC_ACQUIRE))
				end_after_stop = now + 50000000ull;
			if (end_after_stop && now >= end_after_stop)
				break;
		} else if (now >= until) {
			break;
		}
		if (*n == MAX_SAMPLES && !stop)
			break;
		const uint64_t *k = r->pool + (i % nb) * b;
		uint64_t v = 0;
		uint64_t a = ns_now();
		int err = dynemb_serve_lookup(r->c, h, k, b, r->out, r->st, &v);
		uint64_t d = ns_now() - a;
		if (!timed)
			continue;
		if (*n < MAX_SAMPLES)
			r->lat[(*n)++] = d;
		if (!err)
			err = check_serve(r, k, b, file_tag(v));
		if (err == -EBADMSG)
			f->mixed++;
		else if (err)
			f->failed++;
		if (!err && v != seen) {
			f->versions_seen++;
			seen = v;
			if (!f->first_v)
				f->first_v = v;
			f->last_v = v;
		}
	}
	return 0;
}

/* The pages the daemon's memory of table name got, into f->daemon_pages ("?" unknown). */
static void version_pages(struct run *r, const char *name, struct figures *f)
{
	static const char *pn[4] = { "auto", "hugetlb", "thp", "small" };
	struct dynemb_table_info ti[16];
	size_t n = 0;
	snprintf(f->daemon_pages, sizeof f->daemon_pages, "?");
	if (dynemb_list_tables(r->c, 0, ti, 16, &n, NULL))
		return;
	for (size_t i = 0; i < n; i++)
		if (!strcmp(ti[i].name, name) && ti[i].pages < 4)
			snprintf(f->daemon_pages, sizeof f->daemon_pages, "%s", pn[ti[i].pages]);
}

static int run_daemon(struct run *r, const char *path, const struct opts *o, struct figures *f)
{
	char uid[16];
	snprintf(uid, sizeof uid, "%u", (unsigned)geteuid());
	char *argv[] = { (char *)path, "--foreground", "--socket", r->dsock, "--workers", "1",
			 "--numa-node", "none", "--allow-uid", uid, "--export-dir", r->exp, NULL };
	r->dpid = bench_spawn(argv, r->dlog, SERVER_CPU);
	if (r->dpid < 0) {
		r->dpid = 0;
		return -errno;
	}
	int err = bench_connect_daemon(r->dsock, "dynemb-bench serve", &r->dpid, &r->c);
	if (err) {
		fail("dynembd (%s) did not come up on %s: %s", path, r->dsock, dynemb_strerror(err));
		bench_log_tail(r->dlog);
		return err;
	}
	FILE *hf = o->json ? stderr : stdout;
	if (!(dynemb_capabilities(r->c) & DYNEMB_CAP_SERVING)) {
		fail("this dynembd has no serving tables (DYNEMB_CAP_SERVING)");
		return -EOPNOTSUPP;
	}
	err = make_versions(r, o, f);
	if (!err) {
		fprintf(hf, "trainer: %" PRIu64 " rows written twice at %.2f M rows/s, each "
			"version exported in %.1f s\n", o->keys, f->fill_rows_per_s / 1e6,
			f->export_s);
		fflush(hf);
	}
	struct dynemb_serve_result res;
	int h = -1;
	if (!err && (err = dynemb_serve_load(r->c, SERVE_NAME, r->v1, 0, NULL, NULL, &res)))
		fail("serve_load of version 1: %s", dynemb_strerror(err));
	if (!err && (err = dynemb_open_serving(r->c, SERVE_NAME, &h)))
		fail("open_serving: %s", dynemb_strerror(err));
	if (!err)
		version_pages(r, SERVE_NAME "@v1", f);
	uint64_t n = 0;
	if (!err) {
		/* untimed: fault the version's mapping in, warm the caches */
		uint64_t warm = (uint64_t)(o->seconds * 1e8);
		read_serving(r, o, h, ns_now() + warm, NULL, &n, false, f);
		read_serving(r, o, h, ns_now() + (uint64_t)(o->seconds * 1e9), NULL, &n, true, f);
		lat_of(r->lat, n, &f->steady);
	}
	if (!err) {
		struct loader l = { .r = r, .o = o, .min_s = o->seconds };
		pthread_t th;
		uint64_t s0 = f->switches;
		if ((err = -pthread_create(&th, NULL, loader_main, &l))) {
			fail("loader thread: %s", strerror(-err));
		} else {
			read_serving(r, o, h, 0, &l.done, &n, true, f);
			pthread_join(th, NULL);
			err = l.err;
			lat_of(r->lat, n, &f->swap);
			f->swaps = l.swaps;
			f->load_s_max = l.load_s_max;
			f->load_rows_per_s = l.rows_per_s;
			f->version_bytes = l.bytes;
		}
		struct dynemb_serve_info si;
		if (!err && !dynemb_serve_info(r->c, h, &si))
			f->switches = si.switches - s0;
	}
	if (err)
		bench_log_tail(r->dlog);
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

/* ---- in-process: an open-addressing hash map ------------------------------------------- */

/* A slot of the map: a key (0: free) and its row's index, 16 bytes, so a probe is one
 * cache line. */
struct mslot {
	uint64_t key, row;
};

static inline uint64_t map_slot(uint64_t key, uint64_t mask)
{
	return (key * 0x9e3779b97f4a7c15ull >> 17) & mask;
}

/* bytes of anonymous memory with transparent huge pages asked for (MADV_HUGEPAGE: what
 * a user's in-process map would get on this kernel's "madvise" policy); NULL on failure. */
static void *map_alloc(size_t bytes)
{
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	(void)madvise(p, bytes, MADV_HUGEPAGE);
	return p;
}

/* One batch of the map, as a tuned in-process lookup would do it: every key's slot
 * prefetched, then probed (its row prefetched), then the rows copied out. */
static void map_batch(struct run *r, const uint64_t *k, unsigned n)
{
	uint64_t *at = r->mat;
	for (unsigned j = 0; j < n; j++) {
		at[j] = map_slot(k[j], r->mmask);
		__builtin_prefetch(&r->mslots[at[j]]);
	}
	for (unsigned j = 0; j < n; j++) {
		uint64_t s = at[j];
		while (r->mslots[s].key && r->mslots[s].key != k[j])
			s = (s + 1) & r->mmask;
		at[j] = r->mslots[s].key == k[j] ? r->mslots[s].row : UINT64_MAX;
		if (at[j] != UINT64_MAX) {
			const char *row = (const char *)(r->mrows + at[j] * DIM);
			for (unsigned o = 0; o < ROW_BYTES; o += 64)
				__builtin_prefetch(row + o);
		}
	}
	for (unsigned j = 0; j < n; j++) {
		bool found = at[j] != UINT64_MAX;
		r->st[j] = found ? DYNEMB_ST_FOUND : DYNEMB_ST_MISSING;
		if (found)
			memcpy(r->out + (size_t)j * DIM, r->mrows + at[j] * DIM, ROW_BYTES);
		else
			memset(r->out + (size_t)j * DIM, 0, ROW_BYTES);
	}
}

static int run_inproc(struct run *r, const struct opts *o, struct figures *f)
{
	uint64_t cap = 1;
	while (cap < 2 * o->keys)
		cap <<= 1;
	r->mmask = cap - 1;
	r->mslots_bytes = cap * sizeof *r->mslots;
	r->mrows_bytes = o->keys * ROW_BYTES;
	r->mslots = map_alloc(r->mslots_bytes);
	r->mrows = map_alloc(r->mrows_bytes);
	if (!r->mslots || !r->mrows) {
		fail("in-process map: %s", strerror(errno));
		return -ENOMEM;
	}
	for (uint64_t i = 0; i < o->keys; i++) { /* keys are non-zero: 0 marks a free slot */
		uint64_t s = map_slot(r->keys[i], r->mmask);
		while (r->mslots[s].key)
			s = (s + 1) & r->mmask;
		r->mslots[s] = (struct mslot){ r->keys[i], i };
		bench_row(r->mrows + i * DIM, DIM, r->keys[i]);
		r->mrows[i * DIM + 1] = 1.0f;
	}
	f->inproc_thp_kb = proc_kb("/proc/self/smaps_rollup", "AnonHugePages");
	const unsigned b = o->batch, nb = POOL_KEYS / b;
	uint64_t n = 0;
	for (int timed = 0; timed < 2; timed++) {
		uint64_t end = ns_now() + (uint64_t)(o->seconds * (timed ? 1e9 : 1e8));
		n = 0;
		for (uint64_t i = 0; n < MAX_SAMPLES && ns_now() < end; i++) {
			const uint64_t *k = r->pool + (i % nb) * b;
			uint64_t a = ns_now();
			map_batch(r, k, b);
			r->lat[n++] = ns_now() - a;
			int err = check_serve(r, k, b, 1.0f);
			if (err == -EBADMSG)
				f->mixed++;
			else if (err)
				f->failed++;
		}
	}
	lat_of(r->lat, n, &f->inproc);
	return 0;
}

/* ---- Redis, HPS-style: hash partitions, pipelined HMGET ----------------------------------- */

static int redis_load(struct run *r, uint64_t nkeys)
{
	float v[DIM];
	int err = 0;
	for (uint64_t i = 0; i < nkeys && !err; i += FILL_BATCH) {
		uint64_t n = nkeys - i < FILL_BATCH ? nkeys - i : FILL_BATCH;
		char *p = r->wbuf;
		for (uint64_t j = 0; j < n; j++) {
			uint64_t k = r->keys[i + j];
			char part[8];
			int pl = snprintf(part, sizeof part, "p%u", (unsigned)(k % REDIS_PARTS));
			bench_row(v, DIM, k);
			v[1] = 1.0f;
			p = resp_put_array(p, 4);
			p = resp_put_bulk(p, "HSET", 4);
			p = resp_put_bulk(p, part, (size_t)pl);
			p = resp_put_bulk(p, &k, 8);
			p = resp_put_bulk(p, v, ROW_BYTES);
		}
		err = resp_write_all(r->rr.fd, r->wbuf, (size_t)(p - r->wbuf));
		for (uint64_t j = 0; j < n && !err; j++) {
			long long added;
			err = resp_header(&r->rr, ':', &added);
		}
	}
	return err;
}

/* One batch k[0, n): an HMGET per partition it touches, written at once, then read. The
 * rows land in r->out in batch order; a nil is -ENOENT, a wrong row -EBADMSG. */
static int redis_batch(struct run *r, const uint64_t *k, unsigned n)
{
	unsigned cnt[REDIS_PARTS] = { 0 };
	for (unsigned j = 0; j < n; j++)
		cnt[k[j] % REDIS_PARTS]++;
	char *p = r->wbuf;
	for (unsigned q = 0; q < REDIS_PARTS; q++) {
		if (!cnt[q])
			continue;
		char part[8];
		int pl = snprintf(part, sizeof part, "p%u", q);
		p = resp_put_array(p, cnt[q] + 2);
		p = resp_put_bulk(p, "HMGET", 5);
		p = resp_put_bulk(p, part, (size_t)pl);
		for (unsigned j = 0; j < n; j++)
			if (k[j] % REDIS_PARTS == q)
				p = resp_put_bulk(p, &k[j], 8);
	}
	int err = resp_write_all(r->rr.fd, r->wbuf, (size_t)(p - r->wbuf));
	for (unsigned q = 0; q < REDIS_PARTS && !err; q++) {
		if (!cnt[q])
			continue;
		long long m;
		err = resp_header(&r->rr, '*', &m);
		if (!err && m != cnt[q])
			err = -EPROTO;
		for (unsigned j = 0; j < n && !err; j++) {
			if (k[j] % REDIS_PARTS != q)
				continue;
			const char *v;
			size_t len;
			err = resp_bulk(&r->rr, &v, &len);
			if (!err && len != ROW_BYTES)
				err = -EPROTO;
			if (!err) {
				memcpy(r->out + (size_t)j * DIM, v, ROW_BYTES);
				r->st[j] = DYNEMB_ST_FOUND;
			}
		}
	}
	return err;
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
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	memcpy(a.sun_path, r->rsock, strlen(r->rsock) + 1);
	int err = resp_connect(&r->rr, (struct sockaddr *)&a, sizeof a, r->rpid, RBUF);
	if (err == -ECHILD)
		r->rpid = 0;
	if (err) {
		fail("redis-server (%s) did not answer on %s: %s", o->redis, r->rsock,
		     strerror(-err));
		bench_log_tail(r->rlog);
		return err;
	}
	err = redis_load(r, f->redis_keys);
	/* the pool again, over the keys Redis holds */
	for (uint32_t i = 0; i < POOL_KEYS; i++)
		r->pool[i] = r->keys[key_of(i + 0x5e7e) % f->redis_keys];
	const unsigned b = o->batch, nb = POOL_KEYS / b;
	uint64_t n = 0;
	for (int timed = 0; timed < 2 && !err; timed++) {
		uint64_t end = ns_now() + (uint64_t)(o->seconds * (timed ? 1e9 : 1e8));
		n = 0;
		for (uint64_t i = 0; !err && n < MAX_SAMPLES && ns_now() < end; i++) {
			const uint64_t *k = r->pool + (i % nb) * b;
			uint64_t t0 = ns_now();
			err = redis_batch(r, k, b);
			r->lat[n++] = ns_now() - t0;
			int bad = err ? err : check_serve(r, k, b, 1.0f);
			if (bad == -EBADMSG)
				f->mixed++;
			else if (bad)
				f->failed++;
		}
	}
	if (err)
		fail("redis: %s", strerror(-err));
	else
		lat_of(r->lat, n, &f->redis), f->have_redis = true;
	resp_close(&r->rr);
	bench_stop_child(&r->rpid);
	return err;
}

/* ---- the report --------------------------------------------------------------------------- */

static void lat_json(FILE *f, const char *prefix, const struct lat *l, bool have)
{
	static const char *names[3] = { "p50_ns", "p99_ns", "p999_ns" };
	for (int i = 0; i < 3; i++) {
		fprintf(f, "\"%s%s\":", prefix, names[i]);
		json_num(f, have ? l->p[i] : NAN, "%.0f");
		fputc(',', f);
	}
}

static void lat_line(FILE *h, const char *what, const struct lat *l, double bound)
{
	char a[32], b[32], c[32];
	fprintf(h, "  %-34s p50 %10s  p99 %10s  p99.9 %10s  (%" PRIu64 " batches", what,
		fmt_us(a, sizeof a, l->p[0] / 1e3), fmt_us(b, sizeof b, l->p[1] / 1e3),
		fmt_us(c, sizeof c, l->p[2] / 1e3), l->n);
	if (bound > 0)
		fprintf(h, "; p99 %.2fx the in-process map's", l->p[1] / bound);
	fprintf(h, ")\n");
}

static void report(const struct opts *o, const struct figures *f, const char *cmdline)
{
	FILE *h = o->json ? stderr : stdout;
	double bound = f->inproc.p[1];
	fprintf(h, "lookups of %u uniform keys at dim %d, reader on cpu %d, dynembd on cpu %d:\n",
		o->batch, DIM, CLIENT_CPU, SERVER_CPU);
	lat_line(h, "serving table, no swap", &f->steady, bound);
	lat_line(h, "serving table, during swaps", &f->swap, bound);
	fprintf(h, "  %-34s not built (docs/serving.md)\n", "serving table, during deltas");
	lat_line(h, "in-process hash map (the bound)", &f->inproc, 0);
	if (f->have_redis) {
		char what[64];
		snprintf(what, sizeof what, "Redis HMGET x%u parts (%" PRIu64 "M)", REDIS_PARTS,
			 f->redis_keys / 1000000);
		lat_line(h, what, &f->redis, bound);
	} else {
		fprintf(h, "  Redis: %s\n", f->redis_note);
	}
	fprintf(h, "swaps: %" PRIu64 " full versions of %" PRIu64 " rows (%.2f GiB each) loaded "
		"and switched, the slowest load %.2f s (%.2f M rows/s); the reader switched %"
		PRIu64 " times, saw versions %" PRIu64 "..%" PRIu64 "\n", f->swaps, o->keys,
		gib(f->version_bytes), f->load_s_max, f->load_rows_per_s / 1e6, f->switches,
		f->first_v, f->last_v);
	fprintf(h, "pages: the serving version %s; the in-process map %.0f MiB of THP "
		"(MADV_HUGEPAGE)\n", f->daemon_pages, (double)f->inproc_thp_kb / 1048576.0);
	fprintf(h, "failed requests %" PRIu64 ", batches with rows of two versions %" PRIu64 "\n",
		f->failed, f->mixed);
	fprintf(h, "goal p99 < 20 us: no swap %s, during a swap %s, during deltas NOT met "
		"(not built)\n", bench_met(f->steady.p[1] < GOAL_P99_NS),
		bench_met(f->swap.p[1] < GOAL_P99_NS));
	if (!o->json)
		return;
	FILE *j = stdout;
	fprintf(j, "{\"bench\":\"serve\",\"command\":");
	json_str(j, cmdline);
	fprintf(j, ",\"machine\":");
	machine_json(j, &f->machine); /* described before the reader was pinned */
	fprintf(j, ",\"keys\":%" PRIu64 ",\"dim\":%d,\"batch\":%u,\"seconds\":%g,", o->keys, DIM,
		o->batch, o->seconds);
	lat_json(j, "", &f->steady, true);
	lat_json(j, "swap_", &f->swap, true);
	lat_json(j, "delta_", &f->swap, false);
	lat_json(j, "inproc_", &f->inproc, true);
	lat_json(j, "redis_", &f->redis, f->have_redis);
	fprintf(j, "\"batches\":%" PRIu64 ",\"swap_batches\":%" PRIu64 ",\"failed_requests\":%"
		PRIu64 ",\"mixed_version_batches\":%" PRIu64 ",\"delta_lag_p99_ms\":null,"
		"\"deltas\":\"not built\",\"swaps\":%" PRIu64 ",\"reader_switches\":%" PRIu64
		",\"load_s_max\":", f->steady.n, f->swap.n, f->failed, f->mixed, f->swaps,
		f->switches);
	json_num(j, f->load_s_max, "%.3f");
	fprintf(j, ",\"load_rows_per_s\":");
	json_num(j, f->load_rows_per_s, "%.0f");
	fprintf(j, ",\"version_pages\":");
	json_str(j, f->daemon_pages);
	fprintf(j, ",\"inproc_thp_bytes\":%" PRId64, f->inproc_thp_kb);
	fprintf(j, ",\"version_bytes\":%" PRIu64 ",\"redis_keys\":%" PRIu64 ",\"redis_note\":",
		f->version_bytes, f->have_redis ? f->redis_keys : 0);
	json_str(j, f->redis_note);
	fprintf(j, ",\"goal_p99_met\":%s,\"goal_swap_p99_met\":%s}\n",
		f->steady.p[1] < GOAL_P99_NS ? "true" : "false",
		f->swap.p[1] < GOAL_P99_NS ? "true" : "false");
}

/* ---- options, setup, teardown -------------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: " PROG " serve [--keys N] [--batch B] [--seconds S] [--short] [--json]\n"
		"                          [--redis PATH|none]\n"
		"  An inference reader of a serving table (dynemb_serve_lookup, zero-copy) on cpu 0,\n"
		"  dynembd on cpu 1: p50/p99/p99.9 of B-key batches at dim 64 without a swap and\n"
		"  while full new versions load and switch, against an in-process hash map of the\n"
		"  same rows and HPS-style Redis (HMGET per hash partition, pipelined, unix socket).\n"
		"  dynembd: $DYNEMBD, else ../../src/server/dynembd from this binary's directory.\n"
		"  --keys N      rows of each version (default 10000000; --short 1000000)\n"
		"  --batch B     keys per lookup (default 100)\n"
		"  --seconds S   per measurement, and the least length of the swap window\n"
		"                (default 3; --short 1)\n"
		"  --redis PATH  the redis-server binary (default: redis-server on $PATH, skipped\n"
		"                when absent); none: skip Redis. Redis gets min(N, 1000000) rows.\n"
		"  --json        one JSON object on stdout (the table goes to stderr)\n"
		"Exit status 1 also when a request failed, a batch mixed two versions, or the\n"
		"reader never saw a swap.\n");
}

static int parse(int argc, char **argv, struct opts *o)
{
	bool keys_set = false, secs_set = false;
	static const struct option lo[] = {
		{ "keys", required_argument, NULL, 'k' }, { "batch", required_argument, NULL, 'b' },
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
		case 'b': {
			unsigned long v = strtoul(optarg, &end, 10);
			o->batch = v > 100000 ? 100000 : (unsigned)v;
			break;
		}
		case 's': o->seconds = strtod(optarg, &end), secs_set = true; break;
		case 'S': o->shrt = true; break;
		case 'j': o->json = true; break;
		case 'r': o->redis = optarg; break;
		case 'h': usage(stdout); return 1;
		default: usage(stderr); return EXIT_USAGE;
		}
		if (bench_check_number("serve", optarg, end))
			return EXIT_USAGE;
	}
	if (bench_check_operands("serve", argc, argv, optind, usage))
		return EXIT_USAGE;
	if (o->shrt) {
		o->keys = keys_set ? o->keys : 1000000;
		o->seconds = secs_set ? o->seconds : 1;
	}
	if (o->keys < 1000 || o->keys > (1ull << 30) || o->batch < 1 || o->batch > 4096 ||
	    !(o->seconds >= 0.01 && o->seconds <= 600)) {
		fprintf(stderr, PROG " serve: --keys 1000..2^30, --batch 1..4096, "
			"--seconds 0.01..600\n");
		return EXIT_USAGE;
	}
	return bench_server_opt("serve", "--redis", &o->redis, &o->redis_none);
}

static void run_free(struct run *r)
{
	dynemb_close(r->c);
	resp_close(&r->rr);
	bench_stop_child(&r->dpid);
	bench_stop_child(&r->rpid);
	free(r->keys);
	free(r->pool);
	free(r->vals);
	free(r->out);
	free(r->st);
	free(r->lat);
	if (r->mslots)
		munmap(r->mslots, r->mslots_bytes);
	if (r->mrows)
		munmap(r->mrows, r->mrows_bytes);
	free(r->mat);
	free(r->wbuf);
	if (r->dir[0])
		bench_rm_tree(r->dir, 1);
}

int cmd_serve(int argc, char **argv, const char *command_line)
{
	struct opts o = { .keys = 10000000, .batch = 100, .seconds = 3 };
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
	if (o.redis_none)
		snprintf(f.redis_note, sizeof f.redis_note, "skipped: --redis none");
	else if (!o.redis && !(o.redis = bench_find_on_path("redis-server", redis_path,
							       sizeof redis_path)))
		snprintf(f.redis_note, sizeof f.redis_note,
			 "skipped: no redis-server on $PATH (apt-get install -y redis-server)");
	FILE *h = o.json ? stderr : stdout;

	struct run r = { .rr = { .fd = -1 } };
	int err = 0;
	const size_t wcap = (size_t)FILL_BATCH * (ROW_BYTES + 64) + 4096;
	r.keys = malloc(o.keys * 8);
	r.pool = malloc((size_t)POOL_KEYS * 8);
	r.vals = malloc((size_t)FILL_BATCH * ROW_BYTES);
	r.out = malloc((size_t)FILL_BATCH * ROW_BYTES);
	r.st = malloc(FILL_BATCH);
	r.mat = malloc(FILL_BATCH * sizeof *r.mat);
	r.lat = malloc((size_t)MAX_SAMPLES * sizeof *r.lat);
	r.wbuf = o.redis ? malloc(wcap) : NULL;
	if (!r.keys || !r.pool || !r.vals || !r.out || !r.st || !r.mat || !r.lat || (o.redis && !r.wbuf))
		err = -ENOMEM;
	if (!err)
		err = bench_mkdtemp(r.dir, sizeof r.dir, "dynemb-serve");
	if (!err) {
		snprintf(r.exp, sizeof r.exp, "%s/exp", r.dir);
		if (mkdir(r.exp, 0700))
			err = -errno;
	}
	if (err) {
		fail("setup: %s", strerror(-err));
		run_free(&r);
		return 1;
	}
	snprintf(r.dsock, sizeof r.dsock, "%s/d.sock", r.dir);
	snprintf(r.dlog, sizeof r.dlog, "%s/dynembd.log", r.dir);
	snprintf(r.rsock, sizeof r.rsock, "%s/r.sock", r.dir);
	snprintf(r.rlog, sizeof r.rlog, "%s/redis.log", r.dir);
	snprintf(r.v1, sizeof r.v1, "%s/v1.dexp", r.exp);
	snprintf(r.v2, sizeof r.v2, "%s/v2.dexp", r.exp);
	for (uint64_t i = 0; i < o.keys; i++)
		r.keys[i] = key_of(i + 0x5e7e0000);
	for (uint32_t i = 0; i < POOL_KEYS; i++)
		r.pool[i] = r.keys[key_of(i + 0x900d) % o.keys];
	fprintf(h, "%s serve: %" PRIu64 " rows, dim %d, batch %u, dynembd %s\n", PROG, o.keys,
		DIM, o.batch, dynembd);
	machine_describe(&f.machine);
	fprintf(h, "machine: %s, %u cpus (%u allowed), %.1f GiB, %s, hugepages free %ld\n",
		f.machine.cpu_model, f.machine.cpus_online, f.machine.cpus_allowed,
		gib(f.machine.mem_total), f.machine.kernel, f.machine.hugepages_free);
	fflush(h);
	pin(CLIENT_CPU);

	err = run_daemon(&r, dynembd, &o, &f);
	if (!err)
		err = run_inproc(&r, &o, &f);
	if (!err && o.redis)
		err = run_redis(&r, &o, &f);
	if (!err) {
		report(&o, &f, command_line);
		if (f.failed || f.mixed) {
			fail("%" PRIu64 " requests failed, %" PRIu64 " batches mixed versions",
			     f.failed, f.mixed);
			err = -EBADMSG;
		} else if (f.swaps == 0 || f.first_v == f.last_v) {
			fail("the reader never saw a swap (versions %" PRIu64 "..%" PRIu64 ")",
			     f.first_v, f.last_v);
			err = -EBADMSG;
		}
	}
	run_free(&r);
	return err ? 1 : 0;
}
