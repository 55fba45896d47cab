/*
 * test_serving.c — serving tables end to end (proto.h "Serving tables"): the real dynembd
 * (path in $DYNEMBD) with an export_dir, versions made by exporting a trainer table whose
 * rows encode their version (row of key k in version v: val(k, v, j)), so every value
 * read says which version it came from, independently of the daemon's bookkeeping.
 *
 *   serve/load_and_read     rows, missing keys (zeros, counted, never created; with
 *                           --miss-init the trainer's own initial row), -EROFS on every
 *                           write, OPEN of a serving name or of a version refused, a
 *                           version name an ordinary table took is skipped
 *   serve/swap_under_load   a reader thread verifies every batch is wholly one version
 *                           while versions 2..5 load; the superseded ones are freed once
 *                           it moved on
 *   serve/damaged_version   a flipped byte: the load fails naming the damage, the
 *                           current version serves on, unchanged
 *   serve/does_not_fit      under [quota] uid_bytes: a version whose rows cannot fit is
 *                           refused before anything is made; one that runs out while it
 *                           loads is discarded; the current version serves on
 *   serve/unload            DROP of a serving name: refused while a reader holds it,
 *                           forced revokes the reader (-ENOENT next) and frees every
 *                           version; the name loads anew; plain once nobody reads
 *   serve/dead_reader       a reader SIGKILLed while it reads does not pin its version
 *   serve/grace             an idle live reader is revoked after grace_ms; its next batch
 *                           moves to the current version by itself
 *   serve/raw_writes_refused  descriptors libdynemb would never send on a serving handle
 *                           (UPDATE small and large enough to be sliced, ERASE,
 *                           APPLY_GRADS, a creating LOOKUP), straight on the ring: each
 *                           -EROFS from the worker, the version's rows unchanged; a
 *                           read-only LOOKUP through the worker reads them
 */
#ifdef DE_MINI_CRITERION
#include "mini_criterion.h"
#else
#include <criterion/criterion.h>
#endif

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon_util.h"
#include "dynemb.h"
#include "raw_client.h"

#define DIM 8
#define NKEYS 4000u

static pid_t d_pid = -1;
static char d_sock[108], d_dir[64], d_log[80];

static float val(uint64_t k, uint64_t v, unsigned j)
{
	return (float)(v * 1000003u % 9973u) + (float)(k % 1000u) * 0.001f + (float)j * 0.0001f;
}

/* A daemon on d_sock with d_dir as its export_dir; fresh: d_dir emptied first. uid_bytes:
 * its [quota] uid_bytes (NULL: the default). */
static void start_with(const char *grace_ms, bool fresh, const char *uid_bytes)
{
	snprintf(d_dir, sizeof d_dir, "/tmp/de-serve-%d", (int)getpid());
	char cmd[400];
	snprintf(cmd, sizeof cmd, "%s%s && mkdir -p %s", fresh ? "rm -rf " : "true ",
		 fresh ? d_dir : "", d_dir);
	cr_assert_eq(system(cmd), 0);
	snprintf(d_sock, sizeof d_sock, "%s.sock", d_dir);
	snprintf(d_log, sizeof d_log, "%s.log", d_dir);
	unlink(d_log);
	const char *more[] = { "--export-dir", d_dir, "--serve-grace-ms", grace_ms,
			       "--workers", "2", "--segment-bytes", "2M",
			       uid_bytes ? "--uid-bytes" : NULL, uid_bytes, NULL };
	const char *argv[40];
	daemon_argv(argv, 40, daemon_bin(), d_sock, "info", more, NULL);
	d_pid = daemon_spawn(argv, SIGKILL, d_log);
	daemon_wait_listen(d_pid, d_sock, 10, d_log);
}

static void start(const char *grace_ms)
{
	start_with(grace_ms, true, NULL);
}

static void stop(void)
{
	if (d_pid > 0)
		daemon_terminate(d_pid, 10);
	d_pid = -1;
	char cmd[400];
	snprintf(cmd, sizeof cmd, "rm -rf %s %s %s", d_dir, d_sock, d_log);
	(void)!system(cmd);
}

static dynemb_client *conn(void)
{
	dynemb_client *c;
	struct dynemb_connect_opts o = { .name = "serve-test", .timeout_ms = 20000 };
	int err = dynemb_connect(d_sock, &o, &c);
	cr_assert_eq(err, 0, "connect: %s", dynemb_strerror(err));
	return c;
}

static struct dynemb_table_spec spec(void)
{
	struct dynemb_table_spec s;
	memset(&s, 0, sizeof s);
	s.name = "trainer";
	s.dim = DIM;
	s.init = DYNEMB_UNIFORM;
	s.init_a = -1;
	s.init_b = 1;
	s.seed = 77;
	return s;
}

/* Write version v's rows into the trainer table and export them to d_dir/v<v>.dexp. */
static void make_version(dynemb_client *c, int t, uint64_t v, char *path, size_t cap)
{
	static uint64_t keys[NKEYS];
	static float rows[NKEYS * DIM];
	for (unsigned i = 0; i < NKEYS; i++) {
		keys[i] = 1 + i * 7;
		for (unsigned j = 0; j < DIM; j++)
			rows[i * DIM + j] = val(keys[i], v, j);
	}
	int err = dynemb_update(c, t, keys, NKEYS, rows, 0, NULL);
	cr_assert_eq(err, 0, "update: %s", dynemb_strerror(err));
	snprintf(path, cap, "%s/v%llu.dexp", d_dir, (unsigned long long)v);
	err = dynemb_export(c, "trainer", path, NULL, NULL, NULL, NULL);
	cr_assert_eq(err, 0, "export: %s", dynemb_strerror(err));
}

/* Is there a table called name in the daemon? */
static bool listed(dynemb_client *c, const char *name)
{
	struct dynemb_table_info ti[64];
	size_t n = 0, total = 0;
	int err = dynemb_list_tables(c, 0, ti, 64, &n, &total);
	cr_assert_eq(err, 0, "list: %s", dynemb_strerror(err));
	for (size_t i = 0; i < n; i++)
		if (!strcmp(ti[i].name, name))
			return true;
	return false;
}

static bool gone_within(dynemb_client *c, const char *name, double secs)
{
	double end = now_s() + secs;
	while (listed(c, name)) {
		if (now_s() > end)
			return false;
		usleep(20000);
	}
	return true;
}

/* Does batch out (keys k[0..n)) hold exactly version v's rows? */
static bool is_version(const uint64_t *k, size_t n, const float *out, uint64_t v)
{
	for (size_t i = 0; i < n; i++)
		for (unsigned j = 0; j < DIM; j++)
			if (out[i * DIM + j] != val(k[i], v, j))
				return false;
	return true;
}

/* The trainer table, versions 1 and 2 exported to p1 and p2, "srv" serving version 1. */
static void two_versions(dynemb_client *c, char p1[300], char p2[300])
{
	struct dynemb_table_spec s = spec();
	int tt;
	cr_assert_eq(dynemb_open(c, &s, &tt), 0);
	make_version(c, tt, 1, p1, 300);
	make_version(c, tt, 2, p2, 300);
	cr_assert_eq(dynemb_serve_load(c, "srv", p1, 0, NULL, NULL, NULL), 0);
}

/* Keys 1, 8, 15 read through serving handle h of c: the batch is answered by version
 * want and holds its rows. */
static void expect_serves(dynemb_client *c, int h, uint64_t want, const char *who)
{
	uint64_t k[3] = { 1, 8, 15 };
	float out[3 * DIM];
	uint64_t v = 0;
	int err = dynemb_serve_lookup(c, h, k, 3, out, NULL, &v);
	cr_assert_eq(err, 0, "%s: %s", who, dynemb_strerror(err));
	cr_expect_eq(v, want, "%s: answered by version %llu", who, (unsigned long long)v);
	cr_expect(is_version(k, 3, out, want), "%s: the rows of version %llu", who,
		  (unsigned long long)want);
}

TestSuite(serve, .fini = stop, .timeout = 120);

Test(serve, load_and_read)
{
	start("30000");
	dynemb_client *c = conn();
	cr_assert(dynemb_capabilities(c) & DYNEMB_CAP_SERVING);
	struct dynemb_table_spec s = spec();
	int tt;
	cr_assert_eq(dynemb_open(c, &s, &tt), 0);
	char p1[300];
	make_version(c, tt, 1, p1, sizeof p1);
	int h;
	cr_assert_eq(dynemb_open_serving(c, "srv", &h), -ENOENT);
	struct dynemb_serve_result r;
	int err = dynemb_serve_load(c, "srv", p1, 0, NULL, NULL, &r);
	cr_assert_eq(err, 0, "serve_load: %s", dynemb_strerror(err));
	cr_expect_eq(r.version, 1);
	cr_expect_eq(r.previous, 0);
	cr_expect_eq(r.records, NKEYS);
	cr_assert_eq(dynemb_open_serving(c, "srv", &h), 0);
	cr_assert_eq(dynemb_table_dim(c, h), DIM);

	uint64_t k[5] = { 1, 8, 99999, 15, 99998 }; /* 99999, 99998: never written */
	float out[5 * DIM];
	uint8_t st[5];
	uint64_t v = 0;
	cr_assert_eq(dynemb_serve_lookup(c, h, k, 5, out, st, &v), 0);
	cr_expect_eq(v, 1);
	uint64_t kf[3] = { 1, 8, 15 };
	float of[3 * DIM];
	memcpy(of, out, 2 * DIM * sizeof(float));
	memcpy(of + 2 * DIM, out + 3 * DIM, DIM * sizeof(float));
	cr_expect(is_version(kf, 3, of, 1), "rows of version 1");
	cr_expect_eq(st[0], DYNEMB_ST_FOUND);
	cr_expect_eq(st[2], DYNEMB_ST_MISSING);
	for (unsigned j = 0; j < DIM; j++)
		cr_expect_eq(out[2 * DIM + j], 0.0f, "a missing key reads zeros");
	struct dynemb_serve_info info;
	cr_assert_eq(dynemb_serve_info(c, h, &info), 0);
	cr_expect_eq(info.version, 1);
	cr_expect_eq(info.found, 3);
	cr_expect_eq(info.missing, 2);
	/* dynemb_lookup without READONLY never creates on a serving handle */
	cr_assert_eq(dynemb_lookup(c, h, k, 5, out, st, 0, 0), 0);
	cr_expect_eq(st[2], DYNEMB_ST_MISSING);
	cr_expect_eq(dynemb_serve_lookup(c, h, k, 5, out, st, &v), 0);
	cr_expect_eq(st[2], DYNEMB_ST_MISSING, "still missing: nothing was created");

	/* writes: refused on the handle, and by the daemon on the version's own name */
	float g[DIM] = { 1 };
	cr_expect_eq(dynemb_update(c, h, k, 1, g, 0, NULL), -EROFS);
	cr_expect_eq(dynemb_erase(c, h, k, 1, NULL), -EROFS);
	cr_expect_eq(dynemb_apply_gradients(c, h, k, 1, g, 1, 0, NULL), -EROFS);
	struct dynemb_table_spec bad = spec();
	bad.name = "srv";
	int x;
	err = dynemb_open(c, &bad, &x);
	cr_expect_eq(err, -EEXIST, "OPEN of a serving name: %s", dynemb_strerror(err));
	cr_expect(strstr(dynemb_strerror(err), "serving table"), "%s", dynemb_strerror(err));
	bad.name = "srv@v1";
	err = dynemb_open(c, &bad, &x);
	cr_expect_eq(err, -EROFS, "OPEN of a version: %s", dynemb_strerror(err));
	cr_expect_eq(dynemb_import(c, "srv@v1", p1, 0, NULL, NULL, NULL), -EROFS);
	cr_expect_eq(dynemb_drop_table(c, "srv@v1", NULL), -EBUSY);
	/* a serving name over an ordinary table, and a load of a missing file */
	err = dynemb_serve_load(c, "trainer", p1, 0, NULL, NULL, NULL);
	cr_expect_eq(err, -EEXIST, "%s", dynemb_strerror(err));
	char nofile[320];
	snprintf(nofile, sizeof nofile, "%s/none.dexp", d_dir);
	cr_expect_eq(dynemb_serve_load(c, "srv", nofile, 0, NULL, NULL, NULL), -ENOENT);

	/* --miss-init: a missing key reads the row the trainer would create for it */
	err = dynemb_serve_load(c, "srv", p1, DYNEMB_SERVE_MISS_INIT, NULL, NULL, &r);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	cr_expect_eq(r.version, 2);
	cr_expect_eq(r.previous, 1);
	uint64_t km = 424242;
	float got[DIM], want[DIM];
	cr_assert_eq(dynemb_serve_lookup(c, h, &km, 1, got, st, &v), 0);
	cr_expect_eq(v, 2, "the handle moved to version 2 by itself");
	cr_expect_eq(st[0], DYNEMB_ST_MISSING);
	cr_assert_eq(dynemb_lookup(c, tt, &km, 1, want, st, 0, 1), 0); /* creates it */
	cr_expect_eq(st[0], DYNEMB_ST_CREATED);
	cr_expect_arr_eq(got, want, sizeof got, "the initializer's row");
	cr_expect(gone_within(c, "srv@v1", 10), "version 1 freed once its reader moved on");

	/* an ordinary table holding the next version's name is skipped, not a dead end */
	bad.name = "srv@v3";
	err = dynemb_open(c, &bad, &x);
	cr_assert_eq(err, 0, "an ordinary table called srv@v3: %s", dynemb_strerror(err));
	err = dynemb_serve_load(c, "srv", p1, 0, NULL, NULL, &r);
	cr_assert_eq(err, 0, "load past a taken version name: %s", dynemb_strerror(err));
	cr_expect_eq(r.version, 4, "version 3's name is taken: the load is version 4");
	cr_expect_eq(r.previous, 2);
	cr_assert_eq(dynemb_serve_lookup(c, h, kf, 3, of, st, &v), 0);
	cr_expect_eq(v, 4);
	cr_expect(is_version(kf, 3, of, 1), "version 4 holds the file's rows");
	dynemb_close(c);
}

struct reader {
	const char *sock;
	int stop;             /* atomic */
	uint64_t batches, mixed, errors, first_v, last_v, regress;
};

static void *reader_main(void *arg)
{
	struct reader *r = arg;
	dynemb_client *c;
	struct dynemb_connect_opts o = { .name = "reader", .timeout_ms = 20000 };
	if (dynemb_connect(r->sock, &o, &c)) {
		r->errors++;
		return NULL;
	}
	int h;
	if (dynemb_open_serving(c, "srv", &h)) {
		r->errors++;
		dynemb_close(c);
		return NULL;
	}
	uint64_t k[100];
	float out[100 * DIM];
	unsigned seed = 1;
	while (!__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE)) {
		for (unsigned i = 0; i < 100; i++)
			k[i] = 1 + (uint64_t)(rand_r(&seed) % NKEYS) * 7;
		uint64_t v = 0;
		if (dynemb_serve_lookup(c, h, k, 100, out, NULL, &v)) {
			r->errors++;
			continue;
		}
		if (!is_version(k, 100, out, v))
			r->mixed++;
		if (!r->batches)
			r->first_v = v;
		if (v < r->last_v)
			r->regress++;
		r->last_v = v;
		r->batches++;
	}
	dynemb_close(c);
	return NULL;
}

Test(serve, swap_under_load)
{
	start("30000");
	dynemb_client *c = conn();
	struct dynemb_table_spec s = spec();
	int tt;
	cr_assert_eq(dynemb_open(c, &s, &tt), 0);
	char p[6][300];
	for (uint64_t v = 1; v <= 5; v++)
		make_version(c, tt, v, p[v], sizeof p[v]);
	cr_assert_eq(dynemb_serve_load(c, "srv", p[1], 0, NULL, NULL, NULL), 0);
	struct reader r = { .sock = d_sock };
	pthread_t th;
	cr_assert_eq(pthread_create(&th, NULL, reader_main, &r), 0);
	usleep(100000);
	for (uint64_t v = 2; v <= 5; v++) {
		struct dynemb_serve_result res;
		int err = dynemb_serve_load(c, "srv", p[v], 0, NULL, NULL, &res);
		cr_assert_eq(err, 0, "load v%llu: %s", (unsigned long long)v, dynemb_strerror(err));
		cr_expect_eq(res.version, v);
		usleep(100000);
	}
	__atomic_store_n(&r.stop, 1, __ATOMIC_RELEASE);
	pthread_join(th, NULL);
	cr_expect_eq(r.errors, 0);
	cr_expect_eq(r.mixed, 0, "%llu of %llu batches mixed versions",
		     (unsigned long long)r.mixed, (unsigned long long)r.batches);
	cr_expect_eq(r.regress, 0, "a reader never goes back to an older version");
	cr_expect_gt(r.batches, 100);
	cr_expect_eq(r.first_v, 1);
	cr_expect_eq(r.last_v, 5, "the reader followed to version 5");
	for (int v = 1; v <= 4; v++) {
		char name[32];
		snprintf(name, sizeof name, "srv@v%d", v);
		cr_expect(gone_within(c, name, 10), "%s freed", name);
	}
	cr_expect(listed(c, "srv@v5"));
	dynemb_close(c);
}

Test(serve, damaged_version)
{
	start("30000");
	dynemb_client *c = conn();
	int h;
	char p1[300], p2[300];
	two_versions(c, p1, p2);
	cr_assert_eq(dynemb_open_serving(c, "srv", &h), 0);
	FILE *f = fopen(p2, "r+b");
	cr_assert(f);
	fseek(f, 4096 + 100, SEEK_SET); /* inside the records */
	int ch = fgetc(f);
	fseek(f, 4096 + 100, SEEK_SET);
	fputc(ch ^ 0x5a, f);
	fclose(f);
	int err = dynemb_serve_load(c, "srv", p2, 0, NULL, NULL, NULL);
	cr_expect_eq(err, -EBADMSG, "%s", dynemb_strerror(err));
	cr_expect(strstr(dynemb_strerror(err), "current version serves on"), "%s",
		  dynemb_strerror(err));
	expect_serves(c, h, 1, "after the damaged load");
	cr_expect(!listed(c, "srv@v2"), "the damaged version left nothing behind");
	/* a file that is no export at all: refused from its header */
	snprintf(p2, sizeof p2, "%s/junk.dexp", d_dir);
	f = fopen(p2, "wb");
	cr_assert(f);
	fputs("not an export file, not at all; long enough to be read as one though", f);
	fclose(f);
	err = dynemb_serve_load(c, "srv", p2, 0, NULL, NULL, NULL);
	cr_expect_eq(err, -EBADMSG, "%s", dynemb_strerror(err));
	expect_serves(c, h, 1, "after the junk file");
	dynemb_close(c);
}

/* An export of n keys at dim into d_dir/name.dexp, made by a table of that name. */
static void export_big(dynemb_client *c, const char *name, uint32_t dim, unsigned n,
		       char *path, size_t cap)
{
	struct dynemb_table_spec s = spec();
	s.name = name;
	s.dim = dim;
	int t;
	cr_assert_eq(dynemb_open(c, &s, &t), 0);
	uint64_t keys[256];
	float *rows = calloc(256, dim * sizeof(float));
	cr_assert(rows);
	for (unsigned i = 0; i < n; i += 256) {
		unsigned m = n - i < 256 ? n - i : 256;
		for (unsigned j = 0; j < m; j++)
			keys[j] = 1 + i + j;
		cr_assert_eq(dynemb_update(c, t, keys, m, rows, 0, NULL), 0);
	}
	free(rows);
	snprintf(path, cap, "%s/%s.dexp", d_dir, name);
	int err = dynemb_export(c, name, path, NULL, NULL, NULL, NULL);
	cr_assert_eq(err, 0, "export %s: %s", name, dynemb_strerror(err));
}

Test(serve, does_not_fit)
{
	/* the files, made by a daemon without a quota */
	start("30000");
	dynemb_client *c = conn();
	struct dynemb_table_spec s = spec();
	int tt;
	char p1[300], big[300], edge[300];
	cr_assert_eq(dynemb_open(c, &s, &tt), 0);
	make_version(c, tt, 1, p1, sizeof p1);
	export_big(c, "big", 1024, 20000, big, sizeof big);   /* 80 MiB of rows */
	export_big(c, "edge", 1024, 15000, edge, sizeof edge); /* 60 MiB of rows */
	dynemb_close(c);
	daemon_terminate(d_pid, 10);

	/* the serving daemon: 64 MiB for the loader's uid */
	start_with("30000", false, "64M");
	c = conn();
	struct dynemb_serve_result r;
	int err = dynemb_serve_load(c, "srv", p1, 0, NULL, NULL, &r);
	cr_assert_eq(err, 0, "the small version fits: %s", dynemb_strerror(err));
	int h;
	cr_assert_eq(dynemb_open_serving(c, "srv", &h), 0);
	err = dynemb_serve_load(c, "srv", big, 0, NULL, NULL, NULL);
	cr_expect_eq(err, -EDQUOT, "%s", dynemb_strerror(err));
	cr_expect(strstr(dynemb_strerror(err), "does not fit") &&
		  strstr(dynemb_strerror(err), "uid_bytes"), "%s", dynemb_strerror(err));
	cr_expect(!listed(c, "srv@v2"), "refused before a version was made");
	/* rows that fit but a version that does not: the load runs out and is discarded */
	err = dynemb_serve_load(c, "srv", edge, 0, NULL, NULL, NULL);
	cr_expect(err == -EDQUOT || err == -ENOSPC, "%s", dynemb_strerror(err));
	for (int v = 2; v <= 3; v++) {
		char name[32];
		snprintf(name, sizeof name, "srv@v%d", v);
		cr_expect(!listed(c, name), "%s discarded", name);
	}
	expect_serves(c, h, 1, "version 1 serves on");
	/* and a version that fits still loads afterwards */
	err = dynemb_serve_load(c, "srv", p1, 0, NULL, NULL, &r);
	cr_expect_eq(err, 0, "%s", dynemb_strerror(err));
	dynemb_close(c);
}

Test(serve, unload)
{
	start("30000");
	dynemb_client *c = conn();
	int h;
	char p1[300], p2[300];
	two_versions(c, p1, p2);
	cr_assert_eq(dynemb_serve_load(c, "srv", p2, 0, NULL, NULL, NULL), 0); /* v2 */
	dynemb_client *rd = conn();
	cr_assert_eq(dynemb_open_serving(rd, "srv", &h), 0);
	expect_serves(rd, h, 2, "before the unload");
	/* a reader holds it: a plain unload is refused and changes nothing */
	int err = dynemb_drop_table(c, "srv", NULL);
	cr_expect_eq(err, -EBUSY, "%s", dynemb_strerror(err));
	cr_expect(strstr(dynemb_strerror(err), "reader handle"), "%s", dynemb_strerror(err));
	expect_serves(rd, h, 2, "still serving version 2");
	uint64_t k[3] = { 1, 8, 15 };
	float out[3 * DIM];
	uint64_t v = 0;
	/* forced: gone at once, the reader's next lookup fails, every version is freed */
	uint64_t bytes = 0;
	err = dynemb_drop_table_flags(c, "srv", DYNEMB_DROP_FORCE, &bytes);
	cr_assert_eq(err, 0, "forced unload: %s", dynemb_strerror(err));
	cr_expect_gt(bytes, 0);
	err = dynemb_serve_lookup(rd, h, k, 3, out, NULL, &v);
	cr_expect_eq(err, -ENOENT, "a revoked reader: %s", dynemb_strerror(err));
	cr_expect(!listed(c, "srv@v1") && !listed(c, "srv@v2"), "its versions are freed");
	cr_expect_eq(dynemb_open_serving(c, "srv", &h), -ENOENT);
	cr_expect_eq(dynemb_drop_table(c, "srv", NULL), -ENOENT);
	dynemb_close(rd);
	/* the name can be loaded again; with no reader a plain unload frees it */
	struct dynemb_serve_result r;
	cr_assert_eq(dynemb_serve_load(c, "srv", p1, 0, NULL, NULL, &r), 0);
	cr_expect_eq(r.previous, 0, "a new name");
	cr_assert_eq(dynemb_open_serving(c, "srv", &h), 0);
	expect_serves(c, h, r.version, "the name loaded anew");
	dynemb_close(c);
	c = conn();
	err = dynemb_drop_table(c, "srv", &bytes);
	cr_expect_eq(err, 0, "plain unload: %s", dynemb_strerror(err));
	char name[32];
	snprintf(name, sizeof name, "srv@v%llu", (unsigned long long)r.version);
	cr_expect(!listed(c, name));
	dynemb_close(c);
}

Test(serve, dead_reader)
{
	start("600000"); /* a grace far longer than the test: only the death frees it */
	dynemb_client *c = conn();
	char p1[300], p2[300];
	two_versions(c, p1, p2);
	int pipefd[2];
	cr_assert_eq(pipe(pipefd), 0);
	pid_t kid = fork();
	cr_assert_geq(kid, 0);
	if (kid == 0) { /* reads version 1 in a loop until it is killed */
		dynemb_client *kc;
		struct dynemb_connect_opts o = { .name = "doomed", .timeout_ms = 20000 };
		int h;
		if (dynemb_connect(d_sock, &o, &kc) || dynemb_open_serving(kc, "srv", &h))
			_exit(1);
		(void)!write(pipefd[1], "x", 1);
		uint64_t k[100];
		float out[100 * DIM];
		for (unsigned i = 0; i < 100; i++)
			k[i] = 1 + i * 7;
		for (;;) /* never moves on: version 2 comes after it is dead */
			dynemb_serve_lookup(kc, h, k, 100, out, NULL, NULL);
	}
	char b;
	cr_assert_eq(read(pipefd[0], &b, 1), 1);
	usleep(50000);
	kill(kid, SIGKILL);
	waitpid(kid, NULL, 0);
	cr_assert_eq(dynemb_serve_load(c, "srv", p2, 0, NULL, NULL, NULL), 0);
	cr_expect(gone_within(c, "srv@v1", 10), "the dead reader does not pin version 1");
	dynemb_close(c);
}

Test(serve, grace)
{
	start("300");
	dynemb_client *c = conn();
	int h;
	char p1[300], p2[300];
	two_versions(c, p1, p2);
	dynemb_client *idle = conn();
	cr_assert_eq(dynemb_open_serving(idle, "srv", &h), 0);
	uint64_t k[3] = { 1, 8, 15 };
	float out[3 * DIM];
	uint64_t v = 0;
	cr_assert_eq(dynemb_serve_lookup(idle, h, k, 3, out, NULL, &v), 0);
	cr_expect_eq(v, 1);
	cr_assert_eq(dynemb_serve_load(c, "srv", p2, 0, NULL, NULL, NULL), 0);
	cr_expect(listed(c, "srv@v1"), "held by the idle reader within its grace");
	cr_expect(gone_within(c, "srv@v1", 10), "revoked and freed after grace_ms");
	cr_assert_eq(dynemb_serve_lookup(idle, h, k, 3, out, NULL, &v), 0);
	cr_expect_eq(v, 2, "the revoked reader moved to version 2 by itself");
	cr_expect(is_version(k, 3, out, 2));
	dynemb_close(idle);
	dynemb_close(c);
}

/* A write descriptor on a serving handle, sent raw: the worker's own -EROFS. */
static void expect_erofs(struct cli *rc, uint16_t h, uint32_t op, uint32_t n, uint32_t flags,
			 const char *what)
{
	struct de_sqe e = { .op = op, .table = h, .count = n, .flags = flags, .user_data = op,
			    .keys_off = 0, .keys_len = 8ull * n };
	if (op != DE_OP_ERASE) {
		e.vals_off = 1 << 20;
		e.vals_len = 4ull * DIM * n;
	}
	struct de_cqe q = cli_do(rc, &e);
	cr_expect_eq(q.res, -EROFS, "%s on a serving version: %d, not -EROFS", what, q.res);
}

Test(serve, raw_writes_refused)
{
	start("30000");
	dynemb_client *c = conn();
	struct dynemb_table_spec s = spec();
	int tt;
	cr_assert_eq(dynemb_open(c, &s, &tt), 0);
	char p1[300];
	make_version(c, tt, 1, p1, sizeof p1);
	struct dynemb_serve_result r;
	int err = dynemb_serve_load(c, "srv", p1, 0, NULL, NULL, &r);
	cr_assert_eq(err, 0, "serve_load: %s", dynemb_strerror(err));

	struct cli rc;
	cli_hello(&rc, d_sock, 64, 4 << 20);
	struct de_msg_serve_open m = { .release_id = DE_SERVE_NO_RELEASE };
	snprintf(m.name, sizeof m.name, "srv");
	char buf[DE_MSG_MAX];
	ssize_t n = cli_call(&rc, &m, DE_MSG_SERVE_OPEN, sizeof m, buf, sizeof buf);
	cr_assert_gt(n, 0);
	cr_assert_eq(((struct de_msg_hdr *)(void *)buf)->type, DE_MSG_OPEN_OK, "SERVE_OPEN");
	const struct de_msg_open_ok *ok = (const void *)buf;
	cr_assert(ok->flags & DE_OPEN_SERVING);
	uint16_t h = ok->table_id;

	/* keys 1 + 7i (the version's) and 1,000,000 + i (never written); rows of 3s */
	const uint32_t big = 1000; /* > 4096 / (DIM + 1): the worker slices such an UPDATE */
	for (uint32_t i = 0; i < big; i++) {
		uint64_t k = i % 2 ? 1 + 7ull * i : 1000000 + i;
		memcpy(rc.data + 8ull * i, &k, 8);
	}
	for (uint64_t i = 0; i < (uint64_t)big * DIM; i++)
		((float *)(void *)(rc.data + (1 << 20)))[i] = 3.0f;
	expect_erofs(&rc, h, DE_OP_UPDATE, 4, 0, "UPDATE");
	expect_erofs(&rc, h, DE_OP_UPDATE, big, 0, "an UPDATE served in slices");
	expect_erofs(&rc, h, DE_OP_ERASE, big, 0, "ERASE");
	expect_erofs(&rc, h, DE_OP_APPLY_GRADS, big, 0, "APPLY_GRADS");
	expect_erofs(&rc, h, DE_OP_LOOKUP, big, DE_LOOKUP_CREATE, "a creating LOOKUP");

	/* a read-only LOOKUP through the worker: version 1's rows, the new keys missing */
	struct de_sqe e = { .op = DE_OP_LOOKUP, .table = h, .count = big, .user_data = 9,
			    .flags = DE_SQE_STATUS, .status_off = 3 << 20, .keys_len = 8ull * big,
			    .vals_off = 1 << 20, .vals_len = 4ull * DIM * big };
	struct de_cqe q = cli_do(&rc, &e);
	cr_assert_eq(q.res, 0);
	cr_expect_eq(q.count, big / 2, "found: the version's keys");
	for (uint32_t i = 1; i < big; i += 2) {
		uint64_t k = 1 + 7ull * i;
		const float *row = (const float *)(void *)(rc.data + (1 << 20) + 4ull * DIM * i);
		cr_assert_eq(((uint8_t *)rc.data)[(3 << 20) + i], DE_FOUND);
		for (unsigned j = 0; j < DIM; j++)
			cr_assert_eq(row[j], val(k, 1, j), "key %llu float %u: version 1's",
				     (unsigned long long)k, j);
	}
	cli_close(&rc);
	int hs;
	cr_assert_eq(dynemb_open_serving(c, "srv", &hs), 0);
	expect_serves(c, hs, 1, "after the refused writes");
	uint64_t nk[2] = { 1000000, 1000002 }; /* the creating LOOKUP's and UPDATE's keys */
	float no[2 * DIM];
	uint8_t nst[2];
	cr_assert_eq(dynemb_serve_lookup(c, hs, nk, 2, no, nst, NULL), 0);
	cr_expect(nst[0] == DYNEMB_ST_MISSING && nst[1] == DYNEMB_ST_MISSING,
		  "no key was created");
	dynemb_close(c);
	stop();
}
