/*
 * icount.c — the workloads of the instruction-count regression gate (tools/bench/icount.py).
 *
 * Wall-clock figures on a shared 2-core box move by 20-40% from run to run; instruction
 * counts under callgrind do not: the same binary on the same input executes the same
 * instructions. This program runs one small, fixed workload (fixed seed, fixed sizes, one
 * thread of its own) chosen by name, and brackets the part to be counted with callgrind's
 * client requests: the runner starts it with --collect-atstart=no, and each measured region
 * is CALLGRIND_TOGGLE_COLLECT on ... off followed by CALLGRIND_DUMP_STATS_AT("icount"), so
 * setup (arena, fills, the daemon's start) is never counted. Outside valgrind the requests
 * are no-ops and the workload just runs.
 *
 * Workloads (all dim 64, 4 KiB arena pages, no NUMA binding, so the machine's huge-page pool
 * or topology cannot change the path):
 *   table_find            de_table_find of 16 batches of 4096 keys of a 65536-key table
 *   table_find_or_insert  de_table_find_or_insert of 16 batches of 4096 new keys into an
 *                         empty table (its growth, the index splits, included)
 *   sgd_step, adam_step   de_optim_update of 16 batches of 1024 distinct keys (rows and the
 *                         optimizer's scratch exist: one uncounted step first)
 *   ring_lookup           dynemb_lookup's round trip through a real dynembd: submit of 256
 *                         existing keys (a creating lookup, so the daemon serves it rather
 *                         than the zero-copy mapping), completion, copy of the values;
 *                         32 batches, one dump each
 *
 * ring_lookup counts this (the client) process only. The daemon's worker busy-polls its
 * channels for poll_us and then sleeps, so how many instructions it runs depends on timing;
 * its per-descriptor code (pop, srv_check_sqe, de_table_find, post) is inlined into the
 * polling loop (serve) in the release build, so no --toggle-collect function isolates one
 * request. Its table work is what table_find counts. On the client side the one timing-
 * dependent part is the wait: the completion ring is busy-polled, then slept on. So each
 * batch is counted in two pieces around an uncounted pause (WAIT_US) that lets the daemon
 * post the completion first: the submit, then dynemb_complete (which then finds the
 * completion on its first look) and the copy. A batch where the daemon was late (a loaded
 * machine) spins and counts more; the runner takes the median of the batches, which such
 * stragglers do not move.
 *
 * Output: one line on stdout, "icount workload=NAME keys_per_dump=K dumps=D aggregate=sum|
 * median buildtype=TYPE compiler=NAME VERSION" that the runner parses with the dumps. Exit status: 0
 * done, 1 a failure (named on stderr), 2 bad usage.
 *
 * Ownership: each workload frees what it made; the daemon is SIGTERMed and reaped, its work
 * directory removed. No global mutable state.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <valgrind/callgrind.h>

#include "de_learn.h"
#include "de_shm.h"
#include "dynemb.h"

#include "../daemon_proc.h"

#define PROG "icount"
#define SEED 42ull
#define DIM 64u
#define TABLE_KEYS 65536u
#define BATCH 4096u
#define REPS 16u
#define OPT_KEYS 4096u
#define OPT_BATCH 1024u
#define RING_KEYS 4096u
#define RING_BATCH 256u
#define RING_REPS 32u
#define WAIT_US 5000u

#ifndef ICOUNT_BUILDTYPE
#define ICOUNT_BUILDTYPE "unknown"
#endif

/* Count what runs between on() and off(); off() also writes one dump. */
static void on(void) { CALLGRIND_TOGGLE_COLLECT; }
static void off(void)
{
	CALLGRIND_TOGGLE_COLLECT;
	CALLGRIND_DUMP_STATS_AT("icount");
}

static int fail(const char *what, int err)
{
	fprintf(stderr, PROG ": %s: %s\n", what, strerror(err < 0 ? -err : err));
	return 1;
}

/* n distinct non-zero keys from the fixed seed (splitmix64 is a bijection of its state). */
static uint64_t *make_keys(size_t n, uint64_t seed)
{
	uint64_t *k = malloc(n * sizeof *k);
	uint64_t s = seed;
	for (size_t i = 0; k && i < n; i++) {
		do
			k[i] = de_splitmix64_next(&s);
		while (k[i] == 0);
	}
	return k;
}

static void report(const char *name, unsigned keys_per_dump, unsigned dumps, const char *agg)
{
	printf("icount workload=%s keys_per_dump=%u dumps=%u aggregate=%s buildtype=%s"
	       " compiler=%s\n",
	       name, keys_per_dump, dumps, agg, ICOUNT_BUILDTYPE,
#if defined(__clang__)
	       "clang " __clang_version__
#else
	       "gcc " __VERSION__
#endif
	);
}

struct tbl {
	de_arena *a;
	de_table *t;
};

static int tbl_open(struct tbl *tb, uint32_t nslots)
{
	struct de_arena_config ac = { .reserve_bytes = 1ull << 30, .segment_bytes = 32ull << 20,
				      .pages = DE_PAGES_SMALL, .numa_node = DE_NUMA_NONE,
				      .name = "icount" };
	struct de_table_config tc = { .dim = DIM, .nslots = nslots, .init = DE_INIT_UNIFORM,
				      .init_a = -0.05f, .init_b = 0.05f, .seed = SEED };
	*tb = (struct tbl){ 0 };
	int err = de_arena_create_placed(&ac, DE_NUMA_NONE, NULL, &tb->a);
	if (!err)
		err = de_table_open(tb->a, &tc, &tb->t);
	if (err)
		de_arena_destroy(tb->a);
	return err;
}

static void tbl_close(struct tbl *tb)
{
	de_table_close(tb->t);
	de_arena_destroy(tb->a);
}

/* every status must be want for the workload to count as done */
static int check_status(const uint8_t *st, size_t n, uint8_t want, const char *what)
{
	for (size_t i = 0; i < n; i++)
		if (st[i] != want) {
			fprintf(stderr, PROG ": %s: key %zu has status %u, not %u\n", what, i,
				st[i], want);
			return 1;
		}
	return 0;
}

static int w_table(bool insert)
{
	const char *name = insert ? "table_find_or_insert" : "table_find";
	struct tbl tb;
	uint64_t *keys = make_keys(TABLE_KEYS, SEED);
	float *out = malloc((size_t)BATCH * DIM * sizeof *out);
	uint8_t *st = malloc(BATCH);
	uint64_t *q = malloc((size_t)REPS * BATCH * sizeof *q);
	int rc = 1, err;
	if (!keys || !out || !st || !q) {
		free(keys), free(out), free(st), free(q);
		return fail(name, -ENOMEM);
	}
	if ((err = tbl_open(&tb, 0))) {
		rc = fail("arena and table", err);
		goto out;
	}
	if (!insert) {
		for (size_t i = 0; i < TABLE_KEYS; i += BATCH)
			if ((err = de_table_find_or_insert(tb.t, keys + i, BATCH, out, st, 1))) {
				rc = fail("fill", err);
				goto close;
			}
	}
	/* find: existing keys in a scattered order (a few repeat); insert: each key once */
	uint64_t s = SEED ^ 0x5eedull;
	for (size_t i = 0; i < (size_t)REPS * BATCH; i++)
		q[i] = insert ? keys[i] : keys[de_splitmix64_next(&s) % TABLE_KEYS];
	on();
	for (unsigned r = 0; r < REPS && !err; r++)
		err = insert ? de_table_find_or_insert(tb.t, q + (size_t)r * BATCH, BATCH, out, st, 2)
			     : de_table_find(tb.t, q + (size_t)r * BATCH, BATCH, out, st);
	off();
	if (err) {
		rc = fail(name, err);
		goto close;
	}
	/* the last batch: found (find), or created (each key new) */
	if (check_status(st, BATCH, insert ? DE_CREATED : DE_FOUND, name))
		goto close;
	report(name, REPS * BATCH, 1, "sum");
	rc = 0;
close:
	tbl_close(&tb);
out:
	free(keys), free(out), free(st), free(q);
	return rc;
}

static int w_optim(enum de_optimizer kind)
{
	const char *name = kind == DE_OPT_SGD ? "sgd_step" : "adam_step";
	struct de_optim_config cfg;
	struct tbl tb;
	uint64_t *keys = make_keys(OPT_KEYS, SEED);
	float *grads = malloc((size_t)OPT_BATCH * DIM * sizeof *grads);
	int rc = 1, err;
	if (!keys || !grads) {
		free(keys), free(grads);
		return fail(name, -ENOMEM);
	}
	de_optim_defaults(kind, &cfg);
	uint64_t s = SEED ^ 0x9badull;
	for (size_t i = 0; i < (size_t)OPT_BATCH * DIM; i++) /* in [-0.5, 0.5) */
		grads[i] = (float)(de_splitmix64_next(&s) >> 40) / (float)(1u << 24) - 0.5f;
	if ((err = tbl_open(&tb, de_optim_slots(kind)))) {
		rc = fail("arena and table", err);
		goto out;
	}
	/* every key's first step (creates its row) and the scratch block, uncounted */
	size_t applied = 0;
	for (size_t i = 0; i < OPT_KEYS; i += OPT_BATCH)
		if ((err = de_optim_update(tb.t, &cfg, keys + i, OPT_BATCH, grads, 1, &applied))) {
			rc = fail("first step", err);
			goto close;
		}
	on();
	for (unsigned r = 0; r < REPS && !err; r++)
		err = de_optim_update(tb.t, &cfg, keys + (size_t)(r % (OPT_KEYS / OPT_BATCH)) * OPT_BATCH,
				      OPT_BATCH, grads, 2 + r, &applied);
	off();
	if (err) {
		rc = fail(name, err);
		goto close;
	}
	if (applied != OPT_BATCH) {
		fprintf(stderr, PROG ": %s: %zu keys stepped, not %u\n", name, applied, OPT_BATCH);
		goto close;
	}
	report(name, REPS * OPT_BATCH, 1, "sum");
	rc = 0;
close:
	tbl_close(&tb);
out:
	free(keys), free(grads);
	return rc;
}

static void pause_us(unsigned us)
{
	struct timespec ts = { .tv_sec = 0, .tv_nsec = (long)us * 1000 };
	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

static int ring_run(const char *sock)
{
	struct dynemb_connect_opts co = { .name = PROG };
	struct dynemb_table_spec spec = { .name = "icount", .dim = DIM, .init = DYNEMB_UNIFORM,
					  .init_a = -0.05f, .init_b = 0.05f, .seed = SEED };
	dynemb_client *c = NULL;
	uint64_t *keys = make_keys(RING_KEYS, SEED);
	float *vals = malloc((size_t)RING_KEYS * DIM * sizeof *vals);
	float *out = malloc((size_t)RING_BATCH * DIM * sizeof *out);
	int t, rc = 1, err;
	if (!keys || !vals || !out) {
		rc = fail("ring_lookup", -ENOMEM);
		goto out;
	}
	for (size_t i = 0; i < (size_t)RING_KEYS * DIM; i++)
		vals[i] = (float)(i % 977) / 977.0f;
	if ((err = dynemb_connect(sock, &co, &c)) || (err = dynemb_open(c, &spec, &t)) ||
	    (err = dynemb_update(c, t, keys, RING_KEYS, vals, 1, NULL))) {
		fprintf(stderr, PROG ": ring_lookup setup: %s\n", dynemb_strerror(err));
		goto out;
	}
	for (unsigned r = 0; r < RING_REPS; r++) {
		const uint64_t *k = keys + (size_t)(r % (RING_KEYS / RING_BATCH)) * RING_BATCH;
		uint64_t req, found = 0;
		on();
		err = dynemb_submit_lookup(c, t, k, RING_BATCH, 0, 2 + r, &req);
		CALLGRIND_TOGGLE_COLLECT;
		if (!err)
			pause_us(WAIT_US); /* the daemon posts meanwhile (the top of this file) */
		CALLGRIND_TOGGLE_COLLECT;
		if (!err)
			err = dynemb_complete(c, req, -1);
		const float *v = err ? NULL : dynemb_request_vals(c, req);
		if (v)
			memcpy(out, v, (size_t)RING_BATCH * DIM * sizeof *out);
		off();
		if (!err)
			err = dynemb_request_counts(c, req, &found, NULL);
		if (err) {
			fprintf(stderr, PROG ": ring_lookup: %s\n", dynemb_strerror(err));
			goto out;
		}
		if (!v || found != RING_BATCH) {
			fprintf(stderr, PROG ": ring_lookup: %" PRIu64 " of %u keys found\n", found,
				RING_BATCH);
			goto out;
		}
		size_t base = (size_t)(r % (RING_KEYS / RING_BATCH)) * RING_BATCH * DIM;
		if (memcmp(out, vals + base, (size_t)RING_BATCH * DIM * sizeof *out)) {
			fprintf(stderr, PROG ": ring_lookup: the values read differ from those"
					" written\n");
			goto out;
		}
	}
	report("ring_lookup", RING_BATCH, RING_REPS, "median");
	rc = 0;
out:
	dynemb_close(c);
	free(keys), free(vals), free(out);
	return rc;
}

static int w_ring(const char *argv0)
{
	char exe[PATH_MAX], dir[] = "/tmp/icount-XXXXXX", uid[16];
	struct dproc d = { .pid = -1 };
	if (!mkdtemp(dir))
		return fail("mkdtemp", -errno);
	d.exe = dproc_default_exe(exe, sizeof exe, argv0);
	snprintf(d.sock, sizeof d.sock, "%s/sock", dir);
	snprintf(d.logpath, sizeof d.logpath, "%s/dynembd.log", dir);
	snprintf(uid, sizeof uid, "%u", (unsigned)geteuid());
	/* one worker that busy-polls a whole second: it is on a CPU when a request comes */
	char *argv[] = { (char *)d.exe, "--foreground", "--socket", d.sock, "--poll-us", "1000000",
			 "--workers", "1", "--numa-node", "none", "--allow-uid", uid, NULL };
	int rc = 1;
	if (!d.exe)
		fprintf(stderr, PROG ": no dynembd (set DYNEMBD)\n");
	else if (dproc_start(&d, argv, 30) == 0) {
		rc = ring_run(d.sock);
		if (rc)
			dproc_log_tail(&d);
		if (dproc_stop(&d, 10) != 0)
			rc = 1;
	}
	dproc_rm_tree(dir, 0);
	return rc;
}

static const char usage[] =
	"usage: " PROG " WORKLOAD\n"
	"Runs one fixed workload of the instruction-count gate; run it under\n"
	"valgrind --tool=callgrind --collect-atstart=no (tools/bench/icount.py does).\n"
	"workloads: table_find table_find_or_insert ring_lookup sgd_step adam_step\n"
	"ring_lookup starts dynembd: $DYNEMBD, else the build tree's src/server/dynembd.\n";

int main(int argc, char **argv)
{
	if (argc != 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
		fputs(usage, argc == 2 ? stdout : stderr);
		return argc == 2 ? 0 : 2;
	}
	const char *w = argv[1];
	if (!strcmp(w, "table_find"))
		return w_table(false);
	if (!strcmp(w, "table_find_or_insert"))
		return w_table(true);
	if (!strcmp(w, "sgd_step"))
		return w_optim(DE_OPT_SGD);
	if (!strcmp(w, "adam_step"))
		return w_optim(DE_OPT_ADAM);
	if (!strcmp(w, "ring_lookup"))
		return w_ring(argv[0]);
	fprintf(stderr, PROG ": unknown workload '%s'\n%s", w, usage);
	return 2;
}
