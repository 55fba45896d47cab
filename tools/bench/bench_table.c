/*
 * bench_table.c — dynemb-bench table: the embedding table of libdeshm measured against
 * the bound that matters for it, a plain in-process gather of the same rows out of a
 * malloc'd float array. Owns the `table` sub-command (cmd_table, called by the dispatcher
 * in dynemb-bench.c) and the pinned thread runner it measures with; the clocks, draws,
 * formatting, JSON, machine description and Zipf sampler are bench_util.c's.
 *
 * What it runs:
 *   1. per dim: create an arena and a table, fill it with N random non-zero keys by
 *      find_or_insert batches (one thread), timing every batch while the table grows
 *      (growth latency: p50, p99, p999, max; growth_p999_over_p50 is the headline);
 *   2. T pinned threads, for --seconds each, run batches of keys drawn uniformly or
 *      Zipf(0.99) (ranks scattered over the keys by a fixed random permutation) through
 *      de_table_find, de_table_find_or_insert (every key exists: the hit path plus the
 *      metadata update), the gather bound (memcpy of row i from rows[N][dim]: one random
 *      access per key) and the two-access bound gather2 (row idx[i] of the same array,
 *      idx a random permutation of the row numbers: two dependent random accesses per
 *      key, the shape of a lookup — index, then row — without hashing or probing).
 *
 * Query index arrays are generated before any timing, by the pinned threads themselves,
 * and are reused unchanged for the four operations, so the four see the same keys.
 * The gather array and gather2's index array get the page kind the arena got (THP for
 * hugetlb/thp, 4 KiB for small) unless --gather-pages says otherwise, so the ratios
 * compare data structures, not pages.
 *
 * A shared machine skews every figure: each measurement also records the CPU time its
 * threads got (CLOCK_THREAD_CPUTIME_ID); below 90% of the wall time the line is flagged
 * and the rows per thread CPU second are printed under it, and the growth batches are
 * also timed in thread CPU time (preemption shows in wall time only).
 *
 * Output: human text (stdout), or with --json one JSON object on stdout and the human text
 * on stderr. Exit status: 0 done, 1 a run-time failure (allocation, table error, wrong
 * result), 2 bad usage.
 *
 * Ownership: cmd_table owns everything it allocates; per-dim memory (arena, table, gather
 * and index arrays, output buffers) is freed before the next dim starts, the keys, the
 * permutation and the query arrays live for the whole run. This file keeps no mutable global state.
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "de_shm.h"

#include "bench_util.h"

#define MAX_DIMS 16
#define MAX_THREADS 256
#define QUERY_SAMPLES (1u << 21) /* per thread and distribution, rounded to whole batches */
#define ZIPF_EXPONENT 0.99
#define GOAL_FIND_OVER_GATHER 0.70  /* of the one-access gather */
#define GOAL_FIND_OVER_GATHER2 0.90 /* of the two-access gather */
#define GOAL_GROWTH_P999_OVER_P50 3.0
#define GOAL_DIM 64u
#define GOAL_THREADS 2u
#define HUGE_2M (2ull << 20)
#define CPU_SHARE_WARN 0.90 /* below this share of CPU time, a measurement is flagged */

/* ------------------------------------------------------------------------- */
/* Pinned worker threads                                                      */
/* ------------------------------------------------------------------------- */

struct worker;
typedef void (*worker_fn)(struct worker *w);

/* Runs fn on n workers, one thread each, worker i pinned to ws[i].cpu when it is >= 0.
 * The threads pin themselves, then wait at a gate until all n exist, so they start fn
 * together. Returns 0, or the negative errno of a failed pthread_create: the threads
 * already started are released without running fn, and joined. */
static int run_threads(struct worker *ws, unsigned n, worker_fn fn);

/* ------------------------------------------------------------------------- */
/* table: options                                                             */
/* ------------------------------------------------------------------------- */

enum op { OP_FIND = 0, OP_FIND_OR_INSERT, OP_GATHER, OP_GATHER2, OP_COUNT };
enum dist { DIST_UNIFORM = 0, DIST_ZIPF, DIST_COUNT };

static const char *const op_names[OP_COUNT] = {"find", "find_or_insert", "gather",
						  "gather2"};
static const char *const dist_names[DIST_COUNT] = {"uniform", "zipf"};

enum gather_pages { GATHER_MATCH = 0, GATHER_SMALL, GATHER_THP };

struct table_opts {
	uint64_t keys;
	uint32_t dims[MAX_DIMS];
	unsigned ndims;
	uint64_t batch;
	unsigned threads;
	double seconds;
	enum de_pages pages;
	enum gather_pages gather_pages;
	uint32_t slots;
	uint64_t seed;
	bool short_mode, json;
	unsigned ops;               /* bit (1 << op) for each op to measure */
	unsigned repeat;            /* measurement rounds; each op keeps its best */
	bool set_keys, set_dims, set_seconds;
};

static const char table_usage[] =
	"usage: " PROG " table [options]\n"
	"\n"
	"Measures the dynemb embedding table (libdeshm) against two bounds: a plain in-process\n"
	"gather (memcpy of row i out of a malloc'd float array rows[N][dim], one random access\n"
	"per key) and gather2 (row idx[i] of the same array, idx a random permutation of the\n"
	"rows: two dependent random accesses per key, like a lookup's index then row).\n"
	"\n"
	"For each dim: create an arena and a table (uniform initializer), fill it with N random\n"
	"non-zero keys in find_or_insert batches on one thread, timing every batch while the\n"
	"table grows; then T pinned threads run batches of existing keys, drawn uniformly or\n"
	"Zipf(0.99) (hot keys scattered by a fixed random permutation), through de_table_find,\n"
	"de_table_find_or_insert (hit path with metadata update) and the two bounds, for\n"
	"--seconds each. Query arrays are generated before timing.\n"
	"\n"
	"Goals: find >= 90% of gather2 and >= 70% of gather at dim 64, uniform, 2 threads;\n"
	"       growth_p999_over_p50 (worst batch latency while growing over the median) < 3.\n"
	"\n"
	"options:\n"
	"  --keys N           keys in the table (default 10000000; suffixes k, M, G = 10^3,6,9)\n"
	"  --dims D1,D2,...   dims to run, 1..4096, at most 16 (default 16,64,128)\n"
	"  --batch B          keys per batch, 1..1048576 (default 4096)\n"
	"  --threads T        reader threads, 1..256, each pinned to its own CPU when there\n"
	"                     are enough CPUs (default 2)\n"
	"  --seconds S        seconds per measurement, > 0 (default 2; 0.5 with --short)\n"
	"  --pages P          arena pages: auto|hugetlb|thp|small (default auto: hugetlb, then\n"
	"                     thp, then small)\n"
	"  --gather-pages G   pages of the gather and index arrays: match|thp|small (default\n"
	"                     match: THP when the arena got huge pages, 4 KiB pages when it\n"
	"                     got small ones)\n"
	"  --slots K          optimizer slots per row, 0..8 (default 0)\n"
	"  --seed S           seed of the keys, queries and table (default 42)\n"
	"  --ops LIST         what to measure after the fill, for profiling one path alone:\n"
	"                     find,find_or_insert,gather,gather2 (default all four)\n"
	"  --repeat N         rounds of the measurements, 1..100, interleaved; each op reports\n"
	"                     its best round (default 1)\n"
	"  --short            quick run: 1000000 keys, dim 64, 0.5 s per measurement\n"
	"                     (--keys, --dims, --seconds given explicitly still win)\n"
	"  --json             one JSON object on stdout; the human text goes to stderr\n"
	"  -h, --help         this text\n"
	"\n"
	"Memory: the table (~N * (4 * dim * (1 + slots) + 40) bytes), the gather array\n"
	"(N * dim * 4 bytes) and the index array (N * 4 bytes) exist together, one dim at a\n"
	"time: at N = 10M and dim 128 about 11 GB.\n";

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2), cold));
static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, PROG " table: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\ntry '" PROG " table --help'\n");
	return -EINVAL;
}

/* Unsigned integer with an optional k/M/G (decimal) suffix, in [min, max]. */
static int parse_u64(const char *opt, const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	unsigned long long v;
	uint64_t mult = 1;
	char *end;

	if (!s || !*s || !isdigit((unsigned char)*s))
		return usage_error("%s: '%s' is not a number", opt, s ? s : "");
	errno = 0;
	v = strtoull(s, &end, 10);
	if (*end == 'k' || *end == 'K')
		mult = 1000, end++;
	else if (*end == 'M' || *end == 'm')
		mult = 1000000, end++;
	else if (*end == 'G' || *end == 'g')
		mult = 1000000000, end++;
	if (*end != '\0')
		return usage_error("%s: '%s' is not a number", opt, s);
	if (errno == ERANGE || v > UINT64_MAX / mult)
		return usage_error("%s: '%s' is too large", opt, s);
	v *= mult;
	if (v < min || v > max)
		return usage_error("%s: %s is out of range [%" PRIu64 ", %" PRIu64 "]", opt, s, min,
				   max);
	*out = v;
	return 0;
}

static int parse_seconds(const char *s, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = s && *s ? strtod(s, &end) : NAN;
	if (!s || !*s || *end != '\0' || errno == ERANGE || !isfinite(v))
		return usage_error("--seconds: '%s' is not a number", s ? s : "");
	if (v <= 0.0 || v > 3600.0)
		return usage_error("--seconds: %s is out of range (0, 3600]", s);
	*out = v;
	return 0;
}

static int parse_dims(const char *s, struct table_opts *o)
{
	char buf[256], *save = NULL, *tok;
	unsigned n = 0;

	if (!s || !*s || strlen(s) >= sizeof(buf))
		return usage_error("--dims: '%s' is not a comma-separated list of dims",
				   s ? s : "");
	snprintf(buf, sizeof(buf), "%s", s);
	if (buf[0] == ',' || buf[strlen(buf) - 1] == ',' || strstr(buf, ",,"))
		return usage_error("--dims: '%s' has an empty entry", s);
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		uint64_t d;
		int rc;

		if (n == MAX_DIMS)
			return usage_error("--dims: at most %d dims", MAX_DIMS);
		rc = parse_u64("--dims", tok, 1, DE_MAX_DIM, &d);
		if (rc)
			return rc;
		o->dims[n++] = (uint32_t)d;
	}
	o->ndims = n;
	return 0;
}

static int parse_pages(const char *s, enum de_pages *out)
{
	static const struct {
		const char *name;
		enum de_pages p;
	} names[] = {
		{"auto", DE_PAGES_AUTO},
		{"hugetlb", DE_PAGES_HUGETLB},
		{"thp", DE_PAGES_THP},
		{"small", DE_PAGES_SMALL},
	};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(s, names[i].name) == 0) {
			*out = names[i].p;
			return 0;
		}
	return usage_error("--pages: '%s' is not one of auto, hugetlb, thp, small", s);
}

static int parse_gather_pages(const char *s, enum gather_pages *out)
{
	if (strcmp(s, "match") == 0)
		*out = GATHER_MATCH;
	else if (strcmp(s, "small") == 0)
		*out = GATHER_SMALL;
	else if (strcmp(s, "thp") == 0)
		*out = GATHER_THP;
	else
		return usage_error("--gather-pages: '%s' is not one of match, thp, small", s);
	return 0;
}

static int parse_ops(const char *s, unsigned *out)
{
	char buf[128], *save = NULL, *tok;
	unsigned mask = 0;

	if (!s || !*s || strlen(s) >= sizeof(buf))
		return usage_error("--ops: '%s' is not a list of find, find_or_insert, gather,"
				   " gather2",
				   s ? s : "");
	snprintf(buf, sizeof(buf), "%s", s);
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		int op;

		for (op = 0; op < OP_COUNT; op++)
			if (strcmp(tok, op_names[op]) == 0)
				break;
		if (op == OP_COUNT)
			return usage_error("--ops: '%s' is not one of find, find_or_insert, gather,"
					   " gather2",
					   tok);
		mask |= 1u << op;
	}
	if (!mask)
		return usage_error("--ops: '%s' names no operation", s);
	*out = mask;
	return 0;
}

/* Returns 0, 1 when --help was printed, or -EINVAL after printing the error. */
static int table_parse(int argc, char **argv, struct table_opts *o)
{
	enum { O_KEYS = 256, O_DIMS, O_BATCH, O_THREADS, O_SECONDS, O_PAGES, O_GPAGES, O_SLOTS,
	       O_SEED, O_OPS, O_REPEAT, O_SHORT, O_JSON };
	static const struct option longopts[] = {
		{"keys", required_argument, NULL, O_KEYS},
		{"dims", required_argument, NULL, O_DIMS},
		{"batch", required_argument, NULL, O_BATCH},
		{"threads", required_argument, NULL, O_THREADS},
		{"seconds", required_argument, NULL, O_SECONDS},
		{"pages", required_argument, NULL, O_PAGES},
		{"gather-pages", required_argument, NULL, O_GPAGES},
		{"slots", required_argument, NULL, O_SLOTS},
		{"seed", required_argument, NULL, O_SEED},
		{"ops", required_argument, NULL, O_OPS},
		{"repeat", required_argument, NULL, O_REPEAT},
		{"short", no_argument, NULL, O_SHORT},
		{"json", no_argument, NULL, O_JSON},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	uint64_t v;
	int c, rc = 0;

	memset(o, 0, sizeof(*o));
	o->keys = 10000000;
	o->dims[0] = 16, o->dims[1] = 64, o->dims[2] = 128, o->ndims = 3;
	o->batch = 4096;
	o->threads = 2;
	o->seconds = 2.0;
	o->pages = DE_PAGES_AUTO;
	o->seed = 42;
	o->ops = (1u << OP_COUNT) - 1;
	o->repeat = 1;

	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
		switch (c) {
		case O_KEYS:
			/* row ids are 32-bit, and so are the query indexes */
			rc = parse_u64("--keys", optarg, 1, UINT32_MAX - 2, &o->keys);
			o->set_keys = true;
			break;
		case O_DIMS:
			rc = parse_dims(optarg, o);
			o->set_dims = true;
			break;
		case O_BATCH:
			rc = parse_u64("--batch", optarg, 1, 1u << 20, &o->batch);
			break;
		case O_THREADS:
			rc = parse_u64("--threads", optarg, 1, MAX_THREADS, &v);
			o->threads = (unsigned)v;
			break;
		case O_SECONDS:
			rc = parse_seconds(optarg, &o->seconds);
			o->set_seconds = true;
			break;
		case O_PAGES:
			rc = parse_pages(optarg, &o->pages);
			break;
		case O_GPAGES:
			rc = parse_gather_pages(optarg, &o->gather_pages);
			break;
		case O_SLOTS:
			rc = parse_u64("--slots", optarg, 0, DE_MAX_SLOTS, &v);
			o->slots = (uint32_t)v;
			break;
		case O_OPS:
			rc = parse_ops(optarg, &o->ops);
			break;
		case O_REPEAT:
			rc = parse_u64("--repeat", optarg, 1, 100, &v);
			o->repeat = (unsigned)v;
			break;
		case O_SEED:
			rc = parse_u64("--seed", optarg, 0, UINT64_MAX, &o->seed);
			break;
		case O_SHORT:
			o->short_mode = true;
			break;
		case O_JSON:
			o->json = true;
			break;
		case 'h':
			fputs(table_usage, stdout);
			return 1;
		case ':':
			return usage_error("option '%s' needs a value", argv[optind - 1]);
		default:
			if (optopt >= O_KEYS) /* a known flag given a value: --short=1 */
				return usage_error("option '%s' takes no value", argv[optind - 1]);
			return usage_error("unknown option '%s'", argv[optind - 1]);
		}
		if (rc)
			return rc;
	}
	if (optind < argc)
		return usage_error("unexpected argument '%s'", argv[optind]);
	if (o->short_mode) {
		if (!o->set_keys)
			o->keys = 1000000;
		if (!o->set_dims)
			o->dims[0] = 64, o->ndims = 1;
		if (!o->set_seconds)
			o->seconds = 0.5;
	}
	return 0;
}

/* ------------------------------------------------------------------------- */
/* table: workers                                                             */
/* ------------------------------------------------------------------------- */

/* What every worker of one measurement shares; read-only while the threads run. */
struct run {
	de_table *table;
	float *rows;            /* the gather array, N * dim floats */
	uint32_t *idx;          /* gather2: key index -> row, a random permutation of [0, N) */
	const uint64_t *keys;   /* the N keys */
	const uint32_t *perm;   /* Zipf rank -> key index */
	uint64_t nkeys;
	uint32_t dim;
	size_t batch;
	unsigned nthreads;
	double seconds;
	enum op op;
	enum dist dist;
	uint64_t seed;
};

/* Start gate of run_threads: open = 1 runs fn, -1 aborts (a pthread_create failed). */
struct gate {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int open;
};

struct worker {
	struct run *run;
	unsigned id;
	int cpu;                     /* pin to this CPU, or -1 */
	/* per thread, for the whole run: query arrays, generated by the worker itself */
	uint64_t *qkeys[DIST_COUNT];
	uint32_t *qidx[DIST_COUNT];
	size_t nq;                   /* entries in each, a multiple of batch */
	uint64_t zipf_hot;           /* zipf draws that fell in the top 0.1% of ranks */
	/* per dim */
	float *out;                  /* batch * dim floats */
	uint8_t *status;             /* batch */
	/* results of the last call */
	uint64_t rows;
	double secs;
	double cpu_secs;             /* thread CPU time during secs */
	uint64_t not_found;          /* table statuses other than DE_FOUND: must stay 0 */
	float sink;                  /* keeps the gather copies observable */
	int err;
	worker_fn fn;
	struct gate *gate;
	pthread_t thread;
};

static void *thread_main(void *arg)
{
	struct worker *w = arg;
	int open;

	if (w->cpu >= 0) {
		cpu_set_t set;

		CPU_ZERO(&set);
		CPU_SET(w->cpu, &set);
		/* best effort: an unpinned thread still measures, just noisier */
		(void)pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
	}
	pthread_mutex_lock(&w->gate->mu);
	while (w->gate->open == 0)
		pthread_cond_wait(&w->gate->cv, &w->gate->mu);
	open = w->gate->open;
	pthread_mutex_unlock(&w->gate->mu);
	if (open > 0)
		w->fn(w);
	return NULL;
}

static int run_threads(struct worker *ws, unsigned n, worker_fn fn)
{
	struct gate gate = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
	unsigned started = 0;
	int rc = 0;

	for (; started < n; started++) {
		int e;

		ws[started].fn = fn;
		ws[started].gate = &gate;
		e = pthread_create(&ws[started].thread, NULL, thread_main, &ws[started]);
		if (e) {
			rc = -e;
			break;
		}
	}
	pthread_mutex_lock(&gate.mu);
	gate.open = rc ? -1 : 1;
	pthread_cond_broadcast(&gate.cv);
	pthread_mutex_unlock(&gate.mu);
	for (unsigned i = 0; i < started; i++) {
		pthread_join(ws[i].thread, NULL);
		ws[i].gate = NULL;
	}
	return rc;
}

/* Allocates and fills this worker's query arrays (first touch on its own CPU). */
static void worker_gen_queries(struct worker *w)
{
	const struct run *r = w->run;
	uint64_t hot_ranks = r->nkeys / 1000 ? r->nkeys / 1000 : 1;
	struct zipf z;

	zipf_init(&z, r->nkeys, ZIPF_EXPONENT);
	for (int d = 0; d < DIST_COUNT; d++) {
		uint64_t rng = r->seed ^ (0x5851f42d4c957f2dull * (w->id + 1)) ^
			       ((uint64_t)d << 56);

		w->qkeys[d] = malloc(w->nq * sizeof(uint64_t));
		w->qidx[d] = malloc(w->nq * sizeof(uint32_t));
		if (!w->qkeys[d] || !w->qidx[d]) {
			w->err = -ENOMEM;
			return;
		}
		for (size_t i = 0; i < w->nq; i++) {
			uint64_t idx;

			if (d == DIST_UNIFORM) {
				idx = rand_below(&rng, r->nkeys);
			} else {
				uint64_t rank = zipf_draw(&z, &rng);

				w->zipf_hot += rank < hot_ranks;
				idx = r->perm[rank];
			}
			w->qidx[d][i] = (uint32_t)idx;
			w->qkeys[d][i] = r->keys[idx];
		}
	}
}

/* Allocates the per-dim buffers and first-touches this worker's stripe of the gather
 * array: rows [id * N / T, (id + 1) * N / T). */
static void worker_prepare_dim(struct worker *w)
{
	const struct run *r = w->run;
	uint64_t lo = r->nkeys * w->id / r->nthreads, hi = r->nkeys * (w->id + 1) / r->nthreads;

	w->out = aligned_alloc(64, round_up(r->batch * r->dim * sizeof(float), 64));
	w->status = malloc(r->batch);
	if (!w->out || !w->status) {
		w->err = -ENOMEM;
		return;
	}
	memset(w->out, 0, r->batch * r->dim * sizeof(float));
	memset(w->status, 0, r->batch);
	for (uint64_t i = lo; r->rows && i < hi; i++) {
		float *row = r->rows + i * r->dim;

		for (uint32_t j = 0; j < r->dim; j++)
			row[j] = (float)i + (float)j * 0.001f;
	}
}

/* One timed measurement: batches of the worker's queries through r->op until
 * r->seconds have passed on this thread's clock. */
static void worker_timed(struct worker *w)
{
	const struct run *r = w->run;
	const uint64_t *qk = w->qkeys[r->dist];
	const uint32_t *qi = w->qidx[r->dist];
	const size_t b = r->batch, dim = r->dim, rowbytes = dim * sizeof(float);
	uint64_t rows = 0, step = 1, not_found = 0;
	size_t pos = 0;
	float sink = 0.0f;
	double t0, t, deadline, cpu0;
	int rc = 0;

	cpu0 = thread_cpu_s();
	t0 = now_s();
	deadline = t0 + r->seconds;
	do {
		switch (r->op) {
		case OP_FIND:
			rc = de_table_find(r->table, qk + pos, b, w->out, w->status);
			break;
		case OP_FIND_OR_INSERT:
			rc = de_table_find_or_insert(r->table, qk + pos, b, w->out, w->status,
						     step++);
			break;
		case OP_GATHER:
			for (size_t j = 0; j < b; j++)
				memcpy(w->out + j * dim, r->rows + (size_t)qi[pos + j] * dim,
				       rowbytes);
			break;
		case OP_GATHER2:
			/* two dependent random accesses: the index entry, then its row */
			for (size_t j = 0; j < b; j++)
				memcpy(w->out + j * dim, r->rows + (size_t)r->idx[qi[pos + j]] * dim,
				       rowbytes);
			break;
		default:
			rc = -EINVAL;
		}
		if (rc)
			break;
		if (r->op == OP_FIND || r->op == OP_FIND_OR_INSERT)
			for (size_t j = 0; j < b; j++)
				not_found += w->status[j] != DE_FOUND;
		sink += w->out[(b - 1) * dim];
		rows += b;
		pos += b;
		if (pos == w->nq)
			pos = 0;
		t = now_s();
	} while (t < deadline);
	t = now_s();
	w->cpu_secs = thread_cpu_s() - cpu0;
	w->rows = rows;
	w->secs = t - t0;
	w->not_found = not_found;
	w->sink = sink;
	w->err = rc;
}

static void worker_free_dim(struct worker *w)
{
	free(w->out);
	free(w->status);
	w->out = NULL;
	w->status = NULL;
}

/* ------------------------------------------------------------------------- */
/* table: the benchmark                                                       */
/* ------------------------------------------------------------------------- */

struct dist_result {
	double rate[OP_COUNT];      /* rows/s, summed over threads */
	double rate_cpu[OP_COUNT];  /* rows per thread CPU second, summed over threads */
	double cpu_share[OP_COUNT]; /* thread CPU time / wall time, summed over threads / T */
};

/* One fill batch, and the growth events the table counted during it. */
struct batch_event {
	size_t batch;        /* index of the batch in the fill */
	uint64_t keys_before; /* keys in the table when it started */
	double us, cpu_us;   /* wall and thread CPU time */
	double t0;           /* CLOCK_MONOTONIC at its start (for perf --clockid monotonic) */
	uint64_t splits, doublings, arena_segments, chunks;
};

#define SLOWEST 3 /* slowest fill batches kept per dim */

/* Batch latency percentiles, microseconds. */
struct lat_stats {
	double p50, p99, p999, max;
};

struct dim_result {
	uint32_t dim;
	enum de_pages pages;
	char pages_note[256];
	int numa_node;
	uint64_t page_bytes[4];      /* arena bytes per enum de_pages, over all segments */
	const char *gather_pages;    /* what the gather array asked for */
	double gather_thp_share;     /* fraction of the gather array in THP, -1 unknown */
	struct de_table_stats stats;
	uint64_t created, found_during_fill;
	double fill_s, insert_rps;
	double fill_cpu_share;       /* CPU time / wall time of the filling thread */
	size_t nbatches;             /* full batches timed */
	struct lat_stats wall;       /* the figures: wall-clock time per batch */
	struct lat_stats cpu;        /* thread CPU time per batch (no preemption in it) */
	struct batch_event slowest[SLOWEST]; /* by wall time, slowest first */
	unsigned nslowest;
	struct dist_result dist[DIST_COUNT];
};

struct table_ctx {
	const struct table_opts *o;
	FILE *h; /* human text */
	struct machine m;
	char command[1024];
	uint64_t *keys;
	uint32_t *perm;
	struct worker *ws;
	int cpus[MAX_THREADS];
	bool pinned;
	enum de_pages probe_pages;
	char probe_note[256];
	struct dim_result res[MAX_DIMS];
	unsigned nres;
};

static __attribute__((cold)) int fail(struct table_ctx *c, const char *what, int rc)
{
	fflush(c->h);
	fprintf(stderr, PROG " table: %s: %s\n", what, strerror(rc < 0 ? -rc : rc));
	return rc < 0 ? rc : -rc;
}

static void arena_config(const struct table_opts *o, uint32_t dim, struct de_arena_config *cfg)
{
	uint64_t per_row = 4ull * dim * (1 + o->slots) + 64;
	uint64_t need = o->keys * per_row * 2 + (1ull << 30);

	memset(cfg, 0, sizeof(*cfg));
	cfg->reserve_bytes = need > (64ull << 30) ? round_up(need, 1ull << 30) : 0;
	cfg->pages = o->pages;
	cfg->numa_node = DE_NUMA_AUTO;
	cfg->name = "dynemb-bench";
}

/* Which pages the arena gets, learnt from a small arena before the first dim. */
static int probe_pages(struct table_ctx *c)
{
	struct de_arena_config cfg;
	de_arena *a = NULL;
	int rc;

	arena_config(c->o, 1, &cfg);
	cfg.reserve_bytes = 64ull << 20;
	cfg.segment_bytes = HUGE_2M;
	rc = de_arena_create(&cfg, &a);
	if (rc)
		return rc;
	c->probe_pages = de_arena_pages(a);
	snprintf(c->probe_note, sizeof(c->probe_note), "%s", de_arena_pages_note(a));
	de_arena_destroy(a);
	return 0;
}

/* Sorts v and takes its percentiles. */
static void lat_summary(double *v, size_t n, struct lat_stats *out)
{
	qsort(v, n, sizeof(double), cmp_double);
	out->p50 = percentile(v, n, 0.50);
	out->p99 = percentile(v, n, 0.99);
	out->p999 = percentile(v, n, 0.999);
	out->max = n ? v[n - 1] : NAN;
}

/* Keeps the SLOWEST slowest batches, slowest first. */
static void keep_slowest(struct dim_result *dr, const struct batch_event *ev)
{
	unsigned i = dr->nslowest < SLOWEST ? dr->nslowest++ : SLOWEST;

	if (i == SLOWEST && ev->us <= dr->slowest[SLOWEST - 1].us)
		return;
	if (i == SLOWEST)
		i = SLOWEST - 1;
	while (i > 0 && dr->slowest[i - 1].us < ev->us) {
		dr->slowest[i] = dr->slowest[i - 1];
		i--;
	}
	dr->slowest[i] = *ev;
}

/* Fill the table with the N keys, timing each batch (wall clock and thread CPU time). */
static int fill_table(struct table_ctx *c, de_table *t, struct dim_result *dr)
{
	const struct table_opts *o = c->o;
	size_t nb = (size_t)((o->keys + o->batch - 1) / o->batch);
	double *lat = calloc(nb, sizeof(double));
	double *lat_cpu = calloc(nb, sizeof(double));
	float *out = malloc(o->batch * dr->dim * sizeof(float));
	uint8_t *st = malloc(o->batch);
	size_t nfull = 0;
	double total = 0.0, cpu0 = thread_cpu_s(), wall0 = now_s();
	struct de_table_stats before, after;
	int rc = 0;

	if (!lat || !lat_cpu || !out || !st) {
		rc = -ENOMEM;
		goto out;
	}
	memset(out, 0, o->batch * dr->dim * sizeof(float));
	de_table_stats(t, &before);
	for (uint64_t i = 0; i < o->keys; i += o->batch) {
		size_t m = (size_t)(o->keys - i < o->batch ? o->keys - i : o->batch);
		double c0 = thread_cpu_s(), t0 = now_s(), dt, dc;

		rc = de_table_find_or_insert(t, c->keys + i, m, out, st, 1);
		dt = now_s() - t0;
		dc = thread_cpu_s() - c0;
		if (rc)
			goto out;
		total += dt;
		/* what grew in this batch (stats walk the directory: outside the timing) */
		de_table_stats(t, &after);
		if (m == o->batch) {
			struct batch_event ev = {
				.batch = (size_t)(i / o->batch),
				.keys_before = before.keys,
				.us = dt * 1e6,
				.cpu_us = dc * 1e6,
				.t0 = t0,
				.splits = after.splits - before.splits,
				.doublings = after.dir_doublings - before.dir_doublings,
				.arena_segments = after.arena_segments - before.arena_segments,
				.chunks = after.chunks - before.chunks,
			};

			keep_slowest(dr, &ev);
			lat_cpu[nfull] = dc * 1e6;
			lat[nfull++] = dt * 1e6;
		}
		before = after;
		for (size_t j = 0; j < m; j++) {
			dr->created += st[j] == DE_CREATED;
			dr->found_during_fill += st[j] == DE_FOUND;
		}
	}
	dr->fill_cpu_share = (thread_cpu_s() - cpu0) / (now_s() - wall0);
	dr->fill_s = total;
	dr->insert_rps = (double)o->keys / total;
	dr->nbatches = nfull;
	lat_summary(lat, nfull, &dr->wall);
	lat_summary(lat_cpu, nfull, &dr->cpu);
out:
	free(lat);
	free(lat_cpu);
	free(out);
	free(st);
	return rc;
}

/* A run of one op on one distribution across the workers; rows/s summed over threads. */
static int measure(struct table_ctx *c, struct run *r, enum op op, enum dist dist,
		   struct dist_result *res)
{
	double cpu = 0.0, wall = 0.0;
	uint64_t bad = 0;
	int rc;

	r->op = op;
	r->dist = dist;
	rc = run_threads(c->ws, r->nthreads, worker_timed);
	if (rc)
		return rc;
	res->rate[op] = res->rate_cpu[op] = 0.0;
	for (unsigned i = 0; i < r->nthreads; i++) {
		if (c->ws[i].err)
			return c->ws[i].err;
		bad += c->ws[i].not_found;
		res->rate[op] += (double)c->ws[i].rows / c->ws[i].secs;
		res->rate_cpu[op] += (double)c->ws[i].rows / c->ws[i].cpu_secs;
		cpu += c->ws[i].cpu_secs;
		wall += c->ws[i].secs;
	}
	res->cpu_share[op] = cpu / wall;
	if (bad) {
		fflush(c->h);
		fprintf(stderr, PROG " table: %s (%s, dim %u): %" PRIu64
				" existing keys were not found\n",
			op_names[op], dist_names[dist], r->dim, bad);
		return -EIO;
	}
	return 0;
}

/* Share of [p, p + len) backed by THP, from /proc/self/smaps; -1 when unknown. */
static double thp_share(const void *p, size_t len)
{
	char line[256];
	uintptr_t lo = (uintptr_t)p, hi = lo + len, a = 0, b = 0;
	uint64_t huge = 0;
	bool in = false;
	FILE *f = fopen("/proc/self/smaps", "r");

	if (!f)
		return -1.0;
	while (fgets(line, sizeof(line), f)) {
		unsigned long x, y;

		if (sscanf(line, "%lx-%lx ", &x, &y) == 2 &&
		    strchr(line, '-') < strchr(line, ' ')) {
			a = x, b = y;
			in = b > lo && a < hi;
		} else if (in && strncmp(line, "AnonHugePages:", 14) == 0) {
			huge += strtoull(line + 14, NULL, 10) * 1024;
		}
	}
	fclose(f);
	return len ? (double)huge / (double)len : -1.0;
}

static void print_result_header(FILE *h)
{
	fprintf(h, "  %4s  %-8s %14s %22s %16s %16s %12s %13s %6s\n", "dim", "dist",
		"find rows/s", "find_or_insert rows/s", "gather rows/s", "gather2 rows/s",
		"find/gather", "find/gather2", "cpu");
}

static double min_cpu_share(const struct dist_result *r)
{
	double m = r->cpu_share[0];

	for (int op = 1; op < OP_COUNT; op++)
		m = fmin(m, r->cpu_share[op]);
	return m;
}

static void print_result(FILE *h, uint32_t dim, enum dist d, const struct dist_result *r)
{
	char a[32], b[32], g[32], g2[32], q[32], q2[32];
	double share = min_cpu_share(r);

	fprintf(h, "  %4u  %-8s %14s %22s %16s %16s %12s %13s %5.0f%%%s\n", dim, dist_names[d],
		fmt_rate(a, sizeof(a), r->rate[OP_FIND]),
		fmt_rate(b, sizeof(b), r->rate[OP_FIND_OR_INSERT]),
		fmt_rate(g, sizeof(g), r->rate[OP_GATHER]),
		fmt_rate(g2, sizeof(g2), r->rate[OP_GATHER2]),
		fmt_ratio(q, sizeof(q), r->rate[OP_FIND] / r->rate[OP_GATHER]),
		fmt_ratio(q2, sizeof(q2), r->rate[OP_FIND] / r->rate[OP_GATHER2]), share * 100.0,
		share < CPU_SHARE_WARN ? "  <- busy machine" : "");
	if (share >= CPU_SHARE_WARN)
		return;
	/* the same rows over the CPU time the threads got: closer to a quiet machine, though
	 * the other processes still share the caches and the memory bus */
	fprintf(h, "  %4s  %-8s %14s %22s %16s %16s %12s %13s   (per thread CPU second)\n",
		"", "", fmt_rate(a, sizeof(a), r->rate_cpu[OP_FIND]),
		fmt_rate(b, sizeof(b), r->rate_cpu[OP_FIND_OR_INSERT]),
		fmt_rate(g, sizeof(g), r->rate_cpu[OP_GATHER]),
		fmt_rate(g2, sizeof(g2), r->rate_cpu[OP_GATHER2]),
		fmt_ratio(q, sizeof(q), r->rate_cpu[OP_FIND] / r->rate_cpu[OP_GATHER]),
		fmt_ratio(q2, sizeof(q2), r->rate_cpu[OP_FIND] / r->rate_cpu[OP_GATHER2]));
}

static void print_lat(FILE *h, const struct lat_stats *l)
{
	char p50[32], p99[32], p999[32], mx[32];

	fprintf(h, "p50 %s  p99 %s  p999 %s  max %s; p999/p50 %.2f",
		fmt_us(p50, sizeof(p50), l->p50), fmt_us(p99, sizeof(p99), l->p99),
		fmt_us(p999, sizeof(p999), l->p999), fmt_us(mx, sizeof(mx), l->max),
		l->p999 / l->p50);
}

static void print_growth(FILE *h, const struct dim_result *d)
{
	char ins[32];

	fprintf(h, "  growth dim %u: %zu batches of new keys: ", d->dim, d->nbatches);
	print_lat(h, &d->wall);
	fprintf(h, "; insert %srows/s; cpu %.0f%%%s\n", fmt_rate(ins, sizeof(ins), d->insert_rps),
		d->fill_cpu_share * 100.0,
		d->fill_cpu_share < CPU_SHARE_WARN ? "  <- busy machine" : "");
	fprintf(h, "    by thread CPU time (no preemption): ");
	print_lat(h, &d->cpu);
	fputc('\n', h);
	for (unsigned i = 0; i < d->nslowest; i++) {
		const struct batch_event *e = &d->slowest[i];
		char w[32], cu[32];

		fprintf(h,
			"    slowest #%u: batch %zu (at %" PRIu64 " keys, t=%.3f) %s wall, %s cpu;"
			   " %" PRIu64 " splits, %" PRIu64 " dir doublings, %" PRIu64
			   " new arena segments, %" PRIu64 " new row chunks\n",
			i + 1, e->batch, e->keys_before, e->t0, fmt_us(w, sizeof(w), e->us),
			fmt_us(cu, sizeof(cu), e->cpu_us), e->splits, e->doublings,
			e->arena_segments, e->chunks);
	}
}

/* gather2's index: idx[i] = a random permutation of [0, n) (Fisher-Yates), so that key
 * index i finds its row at a random place, independent of the Zipf permutation. */
static void make_index(uint32_t *idx, uint64_t n, uint64_t seed)
{
	uint64_t rng = seed;

	for (uint64_t i = 0; i < n; i++)
		idx[i] = (uint32_t)i;
	for (uint64_t i = n - 1; i > 0; i--) {
		uint64_t j = rand_below(&rng, i + 1);
		uint32_t tmp = idx[i];

		idx[i] = idx[j];
		idx[j] = tmp;
	}
}

/* Everything for one dim: arena, table, fill, gather and index arrays, the eight
 * measurements. */
static int run_dim(struct table_ctx *c, uint32_t dim, struct dim_result *dr)
{
	const struct table_opts *o = c->o;
	struct de_arena_config acfg;
	struct de_table_config tcfg = {0};
	struct de_segment_info seg;
	de_arena *arena = NULL;
	de_table *table = NULL;
	struct run r = {0};
	size_t gbytes = (size_t)o->keys * dim * sizeof(float);
	size_t galloc = round_up(gbytes, HUGE_2M);
	size_t ialloc = round_up((size_t)o->keys * sizeof(uint32_t), HUGE_2M);
	bool want_thp;
	int rc;

	memset(dr, 0, sizeof(*dr));
	dr->dim = dim;
	dr->numa_node = DE_NUMA_NONE;
	arena_config(o, dim, &acfg);
	rc = de_arena_create(&acfg, &arena);
	if (rc)
		return fail(c, "de_arena_create", rc);
	dr->pages = de_arena_pages(arena);
	snprintf(dr->pages_note, sizeof(dr->pages_note), "%s", de_arena_pages_note(arena));
	if (de_arena_segment(arena, 0, &seg) == 0)
		dr->numa_node = seg.numa_node;

	tcfg.dim = dim;
	tcfg.nslots = o->slots;
	tcfg.init = DE_INIT_UNIFORM;
	tcfg.init_a = -0.05f;
	tcfg.init_b = 0.05f;
	tcfg.slot_init = 0.0f;
	tcfg.seed = o->seed;
	rc = de_table_open(arena, &tcfg, &table);
	if (rc) {
		rc = fail(c, "de_table_open", rc);
		goto out;
	}

	fprintf(c->h, "\ndim %u: arena pages %s (%s), numa node %d; filling %" PRIu64
		      " keys in batches of %" PRIu64 "...\n",
		dim, de_pages_name(dr->pages), dr->pages_note, dr->numa_node, o->keys, o->batch);
	fflush(c->h);
	rc = fill_table(c, table, dr);
	if (rc) {
		rc = fail(c, "de_table_find_or_insert (fill)", rc);
		goto out;
	}
	if (dr->created + dr->found_during_fill != o->keys || dr->created == 0) {
		fflush(c->h);
		fprintf(stderr, PROG " table: fill: %" PRIu64 " created + %" PRIu64
				" found != %" PRIu64 " keys\n",
			dr->created, dr->found_during_fill, o->keys);
		rc = -EIO;
		goto out;
	}
	de_table_stats(table, &dr->stats);
	fprintf(c->h, "  table: %" PRIu64 " keys, %.2f GiB rows + %.2f GiB index, %.2f GiB arena"
		      " (%" PRIu64 " segments), load %.2f, %" PRIu64 " splits, %" PRIu64
		      " directory doublings\n",
		dr->stats.keys, gib(dr->stats.row_bytes), gib(dr->stats.index_bytes),
		gib(dr->stats.arena_bytes), dr->stats.arena_segments, dr->stats.load_factor,
		dr->stats.splits, dr->stats.dir_doublings);
	/* the first segment's kind is not the whole story: a short huge page pool makes
	 * later segments fall back */
	for (unsigned i = 0; i < de_arena_nsegments(arena); i++)
		if (de_arena_segment(arena, i, &seg) == 0 && (unsigned)seg.pages < 4)
			dr->page_bytes[seg.pages] += seg.bytes;
	fprintf(c->h, "  arena pages by segment:");
	for (int p = 0; p < 4; p++)
		if (dr->page_bytes[p])
			fprintf(c->h, " %s %.2f GiB", de_pages_name((enum de_pages)p),
				gib(dr->page_bytes[p]));
	fputc('\n', c->h);

	/* the bound: rows[N][dim], first touched by the pinned threads; "match" follows
	 * the kind that backs most of the arena */
	if (o->gather_pages == GATHER_MATCH)
		want_thp = dr->page_bytes[DE_PAGES_HUGETLB] + dr->page_bytes[DE_PAGES_THP] >
			   dr->page_bytes[DE_PAGES_SMALL] + dr->page_bytes[DE_PAGES_AUTO];
	else
		want_thp = o->gather_pages == GATHER_THP;
	dr->gather_pages = want_thp ? "thp" : "small";
	if (o->ops & (1u << OP_GATHER | 1u << OP_GATHER2)) {
		r.rows = aligned_alloc(HUGE_2M, galloc);
		if (!r.rows) {
			rc = fail(c, "gather array", -ENOMEM);
			goto out;
		}
		(void)madvise(r.rows, galloc, want_thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
	}
	if (o->ops & (1u << OP_GATHER2)) {
		r.idx = aligned_alloc(HUGE_2M, ialloc);
		if (!r.idx) {
			rc = fail(c, "gather2 index array", -ENOMEM);
			goto out;
		}
		(void)madvise(r.idx, ialloc, want_thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
		make_index(r.idx, o->keys, o->seed ^ 0x9e3779b97f4a7c15ull * dim);
	}
	r.table = table;
	r.keys = c->keys;
	r.perm = c->perm;
	r.nkeys = o->keys;
	r.dim = dim;
	r.batch = o->batch;
	r.nthreads = o->threads;
	r.seconds = o->seconds;
	r.seed = o->seed;
	for (unsigned i = 0; i < o->threads; i++)
		c->ws[i].run = &r;
	rc = run_threads(c->ws, o->threads, worker_prepare_dim);
	for (unsigned i = 0; !rc && i < o->threads; i++)
		rc = c->ws[i].err;
	if (rc) {
		rc = fail(c, "per-dim buffers", rc);
		goto out;
	}
	dr->gather_thp_share = -1.0;
	if (r.rows) {
		dr->gather_thp_share = thp_share(r.rows, galloc);
		fprintf(c->h, "  gather array: %.2f GiB, %s pages (%.0f%% in THP)\n", gib(gbytes),
			dr->gather_pages, dr->gather_thp_share * 100.0);
	}
	if (r.idx)
		fprintf(c->h, "  gather2 index array: %.2f GiB, %s pages (%.0f%% in THP)\n",
			gib(o->keys * sizeof(uint32_t)), dr->gather_pages,
			thp_share(r.idx, ialloc) * 100.0);

	/* --repeat rounds, each running every op once (interleaved, so that a burst of load
	 * from other processes hits all of them alike); each op keeps its best round */
	for (unsigned rep = 0; rep < o->repeat; rep++) {
		for (int d = 0; d < DIST_COUNT; d++) {
			for (int op = 0; op < OP_COUNT; op++) {
				struct dist_result one;

				if (!(o->ops & (1u << op))) {
					dr->dist[d].rate[op] = dr->dist[d].rate_cpu[op] = NAN;
					dr->dist[d].cpu_share[op] = NAN;
					continue;
				}
				rc = measure(c, &r, (enum op)op, (enum dist)d, &one);
				if (rc) {
					rc = fail(c, op_names[op], rc);
					goto out;
				}
				if (rep == 0 || one.rate[op] > dr->dist[d].rate[op]) {
					dr->dist[d].rate[op] = one.rate[op];
					dr->dist[d].rate_cpu[op] = one.rate_cpu[op];
					dr->dist[d].cpu_share[op] = one.cpu_share[op];
				}
			}
		}
	}
	print_result_header(c->h);
	for (int d = 0; d < DIST_COUNT; d++)
		print_result(c->h, dim, (enum dist)d, &dr->dist[d]);
	print_growth(c->h, dr);
	fflush(c->h);
out:
	for (unsigned i = 0; i < o->threads; i++) {
		worker_free_dim(&c->ws[i]);
		c->ws[i].run = NULL;
	}
	free(r.rows);
	free(r.idx);
	de_table_close(table);
	de_arena_destroy(arena);
	return rc;
}

/* The N keys (random, non-zero) and the Zipf rank -> key index permutation. */
static int make_keys(struct table_ctx *c)
{
	const struct table_opts *o = c->o;
	uint64_t rng = o->seed;

	c->keys = malloc(o->keys * sizeof(uint64_t));
	c->perm = malloc(o->keys * sizeof(uint32_t));
	if (!c->keys || !c->perm)
		return -ENOMEM;
	for (uint64_t i = 0; i < o->keys; i++) {
		uint64_t k;

		do
			k = de_splitmix64_next(&rng);
		while (k == 0);
		c->keys[i] = k;
		c->perm[i] = (uint32_t)i;
	}
	for (uint64_t i = o->keys - 1; i > 0; i--) { /* Fisher-Yates */
		uint64_t j = rand_below(&rng, i + 1);
		uint32_t tmp = c->perm[i];

		c->perm[i] = c->perm[j];
		c->perm[j] = tmp;
	}
	return 0;
}

static void pick_cpus(struct table_ctx *c)
{
	cpu_set_t set;
	unsigned n = 0;

	for (unsigned i = 0; i < c->o->threads; i++)
		c->cpus[i] = -1;
	c->pinned = false;
	if (sched_getaffinity(0, sizeof(set), &set) != 0)
		return;
	if ((unsigned)CPU_COUNT(&set) < c->o->threads)
		return; /* not enough CPUs for one each: leave the scheduler to it */
	for (int cpu = 0; cpu < CPU_SETSIZE && n < c->o->threads; cpu++)
		if (CPU_ISSET(cpu, &set))
			c->cpus[n++] = cpu;
	c->pinned = true;
}

static void print_intro(struct table_ctx *c)
{
	const struct table_opts *o = c->o;
	const struct machine *m = &c->m;
	char dims[128] = "";
	size_t used = 0;

	for (unsigned i = 0; i < o->ndims; i++)
		used += (size_t)snprintf(dims + used, sizeof(dims) - used, "%s%u", i ? "," : "",
					 o->dims[i]);
	fprintf(c->h, "%s\n", c->command);
	fprintf(c->h, "machine: %s, %u cpus (%u online), %.1f GiB memory (%.1f available), %s;"
		      " THP %s, shmem THP %s, %ld free 2 MiB huge pages; arena pages: %s (%s)\n",
		m->cpu_model, m->cpus_allowed, m->cpus_online, gib(m->mem_total),
		gib(m->mem_available), m->kernel, m->thp_anon, m->thp_shmem, m->hugepages_free,
		de_pages_name(c->probe_pages), c->probe_note);
	fprintf(c->h,
		"\nWhat this measures%s:\n"
		"  - the dynemb table (libdeshm) filled with %" PRIu64 " random keys, dims %s,"
		" %u optimizer slots;\n"
		"  - growth: every find_or_insert batch of %" PRIu64 " new keys is timed while the"
		" table grows from empty;\n"
		"  - reads: %u thread%s (%s), %.2g s per measurement (best of %u), batches of %"
		PRIu64 " existing keys,\n"
		"    uniform and Zipf(%.2f), through de_table_find and de_table_find_or_insert;\n"
		"  - the bounds: gather, a plain memcpy of the same rows from a malloc'd"
		" rows[N][dim] array\n"
		"    (one random access per key), and gather2, row idx[i] of that array with idx"
		" a random\n"
		"    permutation (two dependent random accesses per key, like index then row);\n"
		"  - rates are rows/s summed over the threads; find/gather and find/gather2 are"
		" the shares\n"
		"    of the bounds reached; cpu is the least CPU time the threads got in those"
		" four\n"
		"    measurements (< 90%%: the machine is busy).\n"
		"Goals: find >= %.0f%% of gather2 and >= %.0f%% of gather at dim %u, uniform, %u"
		" threads;\n"
		"       growth p999/p50 < %.0f.\n",
		o->short_mode ? " (short run)" : "", o->keys, dims, o->slots, o->batch, o->threads,
		o->threads == 1 ? "" : "s", c->pinned ? "pinned, one CPU each" : "not pinned",
		o->seconds, o->repeat, o->batch, ZIPF_EXPONENT, GOAL_FIND_OVER_GATHER2 * 100.0,
		GOAL_FIND_OVER_GATHER * 100.0, GOAL_DIM, GOAL_THREADS, GOAL_GROWTH_P999_OVER_P50);
}

/* The dim the headline figures come from: 64 when it ran, else the first. */
static const struct dim_result *headline(const struct table_ctx *c)
{
	for (unsigned i = 0; i < c->nres; i++)
		if (c->res[i].dim == GOAL_DIM)
			return &c->res[i];
	return c->nres ? &c->res[0] : NULL;
}

static void print_summary(struct table_ctx *c)
{
	const struct dim_result *hd = headline(c);
	double ratio, ratio2, growth;
	bool comparable;

	if (!hd)
		return;
	ratio = hd->dist[DIST_UNIFORM].rate[OP_FIND] / hd->dist[DIST_UNIFORM].rate[OP_GATHER];
	ratio2 = hd->dist[DIST_UNIFORM].rate[OP_FIND] / hd->dist[DIST_UNIFORM].rate[OP_GATHER2];
	growth = hd->wall.p999 / hd->wall.p50;
	comparable = hd->dim == GOAL_DIM && c->o->threads == GOAL_THREADS;
	fprintf(c->h, "\nSummary (dim %u, uniform, %u threads):\n", hd->dim, c->o->threads);
	if (!isfinite(ratio))
		fprintf(c->h,
			"  find / gather bound   = n/a    (find and gather were not both run)\n");
	else
		fprintf(c->h, "  find / gather bound   = %.2f   goal >= %.2f   %s\n", ratio,
			GOAL_FIND_OVER_GATHER,
			!comparable ? "(goal is defined at dim 64, 2 threads)"
			: ratio >= GOAL_FIND_OVER_GATHER ? "met" : "NOT met");
	if (!isfinite(ratio2))
		fprintf(c->h,
			"  find / gather2 bound  = n/a    (find and gather2 were not both run)\n");
	else
		fprintf(c->h, "  find / gather2 bound  = %.2f   goal >= %.2f   %s\n", ratio2,
			GOAL_FIND_OVER_GATHER2,
			!comparable ? "(goal is defined at dim 64, 2 threads)"
			: ratio2 >= GOAL_FIND_OVER_GATHER2 ? "met" : "NOT met");
	if (min_cpu_share(&hd->dist[DIST_UNIFORM]) < CPU_SHARE_WARN)
		fprintf(c->h, "  warning: the threads got %.0f%% of the CPU time; other processes"
			      " were running, rerun on a quiet machine\n",
			min_cpu_share(&hd->dist[DIST_UNIFORM]) * 100.0);
	if (hd->nbatches == 0) {
		fprintf(c->h, "  growth p999 / p50     = n/a    (fewer keys than one batch)\n");
		return;
	}
	fprintf(c->h, "  growth p999 / p50     = %.2f   goal <  %.2f   %s\n", growth,
		GOAL_GROWTH_P999_OVER_P50, growth < GOAL_GROWTH_P999_OVER_P50 ? "met" : "NOT met");
	if (hd->nbatches < 1000)
		fprintf(c->h, "  (only %zu growth batches: p999 is the largest one or two;"
			      " a full run has more)\n",
			hd->nbatches);
}

/* "p50_us":..,"p99_us":..,"p999_us":..,"max_us":..,"growth_p999_over_p50":.. */
static void json_lat(FILE *f, const struct lat_stats *l)
{
	fputs("\"p50_us\":", f);
	json_num(f, l->p50, "%.3f");
	fputs(",\"p99_us\":", f);
	json_num(f, l->p99, "%.3f");
	fputs(",\"p999_us\":", f);
	json_num(f, l->p999, "%.3f");
	fputs(",\"max_us\":", f);
	json_num(f, l->max, "%.3f");
	fputs(",\"growth_p999_over_p50\":", f);
	json_num(f, l->p999 / l->p50, "%.4f");
}

static void print_json(struct table_ctx *c)
{
	const struct dim_result *hd = headline(c);
	FILE *f = stdout;

	fputs("{\"command\":", f);
	json_str(f, c->command);
	fputs(",\"pages\":", f);
	json_str(f, de_pages_name(hd ? hd->pages : c->probe_pages));
	fputs(",\"pages_note\":", f);
	json_str(f, hd ? hd->pages_note : c->probe_note);
	fprintf(f, ",\"keys\":%" PRIu64 ",\"batch\":%" PRIu64 ",\"threads\":%u,\"pinned\":%s,"
		   "\"seconds\":%g,\"repeat\":%u,\"slots\":%u,\"seed\":%" PRIu64
		   ",\"zipf_exponent\":%g",
		c->o->keys, c->o->batch, c->o->threads, c->pinned ? "true" : "false", c->o->seconds,
		c->o->repeat, c->o->slots, c->o->seed, ZIPF_EXPONENT);
	if (hd) {
		const struct dist_result *u = &hd->dist[DIST_UNIFORM];

		fprintf(f, ",\"headline\":{\"dim\":%u,\"dist\":\"uniform\"}", hd->dim);
		fputs(",\"find_rows_per_s\":", f);
		json_num(f, u->rate[OP_FIND], "%.0f");
		fputs(",\"gather_rows_per_s\":", f);
		json_num(f, u->rate[OP_GATHER], "%.0f");
		fputs(",\"gather2_rows_per_s\":", f);
		json_num(f, u->rate[OP_GATHER2], "%.0f");
		fputs(",\"find_over_gather\":", f);
		json_num(f, u->rate[OP_FIND] / u->rate[OP_GATHER], "%.4f");
		fputs(",\"find_over_gather2\":", f);
		json_num(f, u->rate[OP_FIND] / u->rate[OP_GATHER2], "%.4f");
		fputs(",\"growth_p999_over_p50\":", f);
		json_num(f, hd->wall.p999 / hd->wall.p50, "%.4f");
	}
	fputs(",\"results\":[", f);
	for (unsigned i = 0; i < c->nres; i++) {
		for (int d = 0; d < DIST_COUNT; d++) {
			const struct dist_result *r = &c->res[i].dist[d];

			fprintf(f, "%s{\"dim\":%u,\"dist\":\"%s\",\"find_rows_per_s\":",
				i || d ? "," : "", c->res[i].dim, dist_names[d]);
			json_num(f, r->rate[OP_FIND], "%.0f");
			fputs(",\"find_or_insert_rows_per_s\":", f);
			json_num(f, r->rate[OP_FIND_OR_INSERT], "%.0f");
			fputs(",\"gather_rows_per_s\":", f);
			json_num(f, r->rate[OP_GATHER], "%.0f");
			fputs(",\"gather2_rows_per_s\":", f);
			json_num(f, r->rate[OP_GATHER2], "%.0f");
			fputs(",\"find_over_gather\":", f);
			json_num(f, r->rate[OP_FIND] / r->rate[OP_GATHER], "%.4f");
			fputs(",\"find_over_gather2\":", f);
			json_num(f, r->rate[OP_FIND] / r->rate[OP_GATHER2], "%.4f");
			fputs(",\"cpu_share_min\":", f);
			json_num(f, min_cpu_share(r), "%.3f");
			fputs(",\"per_thread_cpu_s\":{\"find_rows\":", f);
			json_num(f, r->rate_cpu[OP_FIND], "%.0f");
			fputs(",\"find_or_insert_rows\":", f);
			json_num(f, r->rate_cpu[OP_FIND_OR_INSERT], "%.0f");
			fputs(",\"gather_rows\":", f);
			json_num(f, r->rate_cpu[OP_GATHER], "%.0f");
			fputs(",\"gather2_rows\":", f);
			json_num(f, r->rate_cpu[OP_GATHER2], "%.0f");
			fputc('}', f);
			fputc('}', f);
		}
	}
	fputs("]", f);
	for (int all = 0; all < 2; all++) {
		fputs(all ? ",\"growth_all\":[" : ",\"growth\":", f);
		for (unsigned i = 0; i < c->nres; i++) {
			const struct dim_result *d = &c->res[i];

			if (!all && d != hd)
				continue;
			fprintf(f, "%s{\"dim\":%u,\"batches\":%zu,", all && i ? "," : "", d->dim,
				d->nbatches);
			json_lat(f, &d->wall);
			fputs(",\"thread_cpu_time\":{", f);
			json_lat(f, &d->cpu);
			fputs("},\"slowest\":[", f);
			for (unsigned k = 0; k < d->nslowest; k++) {
				const struct batch_event *e = &d->slowest[k];

				fprintf(f, "%s{\"batch\":%zu,\"keys_before\":%" PRIu64 ",\"t0\":%.6f,\"us\":%.3f,"
					   "\"cpu_us\":%.3f,\"splits\":%" PRIu64 ",\"dir_doublings\":%" PRIu64
					   ",\"arena_segments\":%" PRIu64 ",\"chunks\":%" PRIu64 "}",
					k ? "," : "", e->batch, e->keys_before, e->t0, e->us,
					e->cpu_us, e->splits, e->doublings, e->arena_segments,
					e->chunks);
			}
			fputs("],\"insert_rows_per_s\":", f);
			json_num(f, d->insert_rps, "%.0f");
			fputs(",\"cpu_share\":", f);
			json_num(f, d->fill_cpu_share, "%.3f");
			fputc('}', f);
		}
		if (all)
			fputc(']', f);
		else if (!hd)
			fputs("null", f);
	}
	fputs(",\"tables\":[", f);
	for (unsigned i = 0; i < c->nres; i++) {
		const struct dim_result *d = &c->res[i];

		fprintf(f,
			"%s{\"dim\":%u,\"pages\":\"%s\",\"numa_node\":%d,\"gather_pages\":\"%s\","
			   "\"gather_thp_share\":",
			i ? "," : "", d->dim, de_pages_name(d->pages), d->numa_node,
			d->gather_pages);
		json_num(f, d->gather_thp_share, "%.3f");
		fputs(",\"arena_page_bytes\":{", f);
		for (int p = 1; p < 4; p++)
			fprintf(f, "%s\"%s\":%" PRIu64, p > 1 ? "," : "",
				de_pages_name((enum de_pages)p), d->page_bytes[p]);
		fputc('}', f);
		fprintf(f,
			",\"keys\":%" PRIu64 ",\"row_bytes\":%" PRIu64 ",\"index_bytes\":%" PRIu64
			   ",\"arena_bytes\":%" PRIu64 ",\"load_factor\":",
			d->stats.keys, d->stats.row_bytes, d->stats.index_bytes,
			d->stats.arena_bytes);
		json_num(f, d->stats.load_factor, "%.4f");
		fprintf(f, ",\"splits\":%" PRIu64 ",\"dir_doublings\":%" PRIu64
			   ",\"arena_segments\":%" PRIu64 "}",
			d->stats.splits, d->stats.dir_doublings, d->stats.arena_segments);
	}
	fputs("],\"machine\":", f);
	machine_json(f, &c->m);
	fputs("}\n", f);
	fflush(f);
}

int cmd_table(int argc, char **argv, const char *command)
{
	struct table_opts o;
	struct table_ctx *c;
	uint64_t hot = 0;
	size_t nq;
	int rc;

	rc = table_parse(argc, argv, &o);
	if (rc == 1)
		return 0;
	if (rc)
		return EXIT_USAGE;

	c = calloc(1, sizeof(*c));
	if (!c) {
		fprintf(stderr, PROG " table: out of memory\n");
		return 1;
	}
	c->o = &o;
	c->h = o.json ? stderr : stdout;
	snprintf(c->command, sizeof(c->command), "%s", command);
	machine_describe(&c->m);
	pick_cpus(c);
	rc = probe_pages(c);
	if (rc) {
		rc = fail(c, "de_arena_create (probe)", rc);
		if (rc == -ENOMEM && o.pages == DE_PAGES_HUGETLB)
			fprintf(stderr, "  (%ld free 2 MiB huge pages: reserve some in"
					" /proc/sys/vm/nr_hugepages, or use --pages auto)\n",
				c->m.hugepages_free);
		goto out;
	}
	print_intro(c);

	/* estimate: table rows + metadata + index, and the gather array, one dim at a time */
	for (unsigned i = 0; i < o.ndims; i++) {
		uint64_t need = o.keys * (4ull * o.dims[i] * (2 + o.slots) + 44);

		if (c->m.mem_available && need > c->m.mem_available)
			fprintf(c->h, "warning: dim %u needs about %.1f GiB, %.1f GiB available\n",
				o.dims[i], gib(need), gib(c->m.mem_available));
	}

	fprintf(c->h, "\npreparing %" PRIu64 " keys and per-thread query arrays...\n", o.keys);
	fflush(c->h);
	rc = make_keys(c);
	if (rc) {
		rc = fail(c, "keys", rc);
		goto out;
	}
	c->ws = calloc(o.threads, sizeof(*c->ws));
	if (!c->ws) {
		rc = fail(c, "workers", -ENOMEM);
		goto out;
	}
	nq = QUERY_SAMPLES / o.batch * o.batch;
	if (nq == 0)
		nq = o.batch;
	{
		struct run r0 = {0};

		r0.keys = c->keys;
		r0.perm = c->perm;
		r0.nkeys = o.keys;
		r0.seed = o.seed;
		for (unsigned i = 0; i < o.threads; i++) {
			c->ws[i].run = &r0;
			c->ws[i].id = i;
			c->ws[i].cpu = c->cpus[i];
			c->ws[i].nq = nq;
		}
		rc = run_threads(c->ws, o.threads, worker_gen_queries);
		for (unsigned i = 0; !rc && i < o.threads; i++) {
			rc = c->ws[i].err;
			hot += c->ws[i].zipf_hot;
			c->ws[i].run = NULL;
		}
		if (rc) {
			rc = fail(c, "query arrays", rc);
			goto out;
		}
	}
	fprintf(c->h, "  %zu queries per thread and distribution; Zipf: the hottest 0.1%% of keys"
		      " get %.1f%% of the queries\n",
		nq, 100.0 * (double)hot / (double)(nq * o.threads));

	for (unsigned i = 0; i < o.ndims; i++) {
		rc = run_dim(c, o.dims[i], &c->res[c->nres]);
		if (rc)
			goto out;
		c->nres++;
	}

	if (c->nres > 1) {
		fprintf(c->h, "\nAll results (rows/s summed over %u threads):\n", o.threads);
		print_result_header(c->h);
		for (unsigned i = 0; i < c->nres; i++)
			for (int d = 0; d < DIST_COUNT; d++)
				print_result(c->h, c->res[i].dim, (enum dist)d, &c->res[i].dist[d]);
		for (unsigned i = 0; i < c->nres; i++)
			print_growth(c->h, &c->res[i]);
	}
	print_summary(c);
	fflush(c->h);
	if (o.json)
		print_json(c);
out:
	if (c->ws)
		for (unsigned i = 0; i < o.threads; i++)
			for (int d = 0; d < DIST_COUNT; d++) {
				free(c->ws[i].qkeys[d]);
				free(c->ws[i].qidx[d]);
			}
	free(c->ws);
	free(c->keys);
	free(c->perm);
	free(c);
	return rc ? 1 : 0;
}
