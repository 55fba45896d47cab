/*
 * test_persist_daemon.c — persistence end to end: the real dynembd (path in $DYNEMBD) on
 * a data dir of its own, driven through libdynemb, killed with SIGKILL and restarted.
 * Every expectation comes from a reference kept here (a map of acknowledged values; an
 * Adam written here from de_learn.h's formulas), never from the daemon's own output.
 *
 * Suites:
 *   config   [persistence] keys: bad values exit 2 naming the key; --print-config;
 *            durability async/sync refused at OPEN without data_dir.
 *   crash    sync: every acknowledged update survives SIGKILL; Adam steps continue after
 *            a crash exactly as an uninterrupted reference; async: the loss is a prefix
 *            bounded by the window; snapshot + WAL; durability none + snapshot.
 *   corrupt  a flipped byte in CATALOG, MANIFEST, a snapshot: exit 3 naming the file;
 *            in the WAL: the torn tail is truncated and logged, the daemon starts.
 *   faults   (-Dfault_injection=true) a failed fsync: the table goes read-only, the
 *            update waiting for it fails, later writes -EROFS, reads go on, stats say so;
 *            a full tmpfs (root only; SKIP otherwise): ENOSPC reaches the client and
 *            nothing unacknowledged... every acknowledged update survives.
 *   jobs     snapshot / export / import through the control plane with progress.
 *   tier     sync tables with eviction: every acknowledged value comes back (from the
 *            table or the disk tier) after SIGKILL and after SIGTERM; without a tier
 *            no evicted row comes back, the budget holds, a dropped key starts fresh.
 *   state    the strings of a string table and the admission sketch survive restarts.
 */
#ifdef DE_MINI_CRITERION
#include "mini_criterion.h" /* ThreadSanitizer build: see that header */
#else
#include <criterion/criterion.h>
#endif

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dynemb.h"
#include "daemon_util.h"

#define DIM 4

static pid_t d_pid = -1;
static char d_sock[108];
static char d_dir[256];
static char d_log[300];

/* fork + exec dynembd with the common flags, data dir d_dir, extra flags; stderr to d_log */
static pid_t spawn(const char *const *extra)
{
	const char *b = daemon_bin();
	static unsigned n;
	snprintf(d_sock, sizeof d_sock, "/tmp/de-pd-%d-%u.sock", (int)getpid(), n++);
	unlink(d_sock);
	const char *more[] = { "--data-dir", d_dir, NULL };
	const char *argv[40];
	daemon_argv(argv, 40, b, d_sock, "info", more, extra);
	return daemon_spawn(argv, SIGKILL, d_log);
}

static void start(const char *const *extra)
{
	d_pid = spawn(extra);
	daemon_wait_listen(d_pid, d_sock, 10, d_log);
}

/* Run the daemon expecting it to exit by itself within 10 s: its exit status. */
static int run_to_exit(const char *const *extra)
{
	pid_t pid = spawn(extra);
	double end = now_s() + 10;
	int st;
	while (waitpid(pid, &st, WNOHANG) == 0) {
		if (now_s() > end) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			cr_assert_fail("dynembd did not exit");
		}
		usleep(2000);
	}
	cr_assert(WIFEXITED(st), "dynembd died of a signal (%d)", WTERMSIG(st));
	return WEXITSTATUS(st);
}

static void crash(void)
{
	if (d_pid > 0) {
		kill(d_pid, SIGKILL);
		waitpid(d_pid, NULL, 0);
		d_pid = -1;
	}
	unlink(d_sock);
}

static void stop(void)
{
	if (d_pid > 0) {
		daemon_terminate(d_pid, 10);
		d_pid = -1;
	}
	unlink(d_sock);
}

static void rm_rf(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		char p[600];
		snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
		if (e->d_type == DT_DIR)
			rm_rf(p);
		else
			unlink(p);
	}
	closedir(d);
	rmdir(dir);
}

static void setup(void)
{
	static unsigned n;
	snprintf(d_dir, sizeof d_dir, "/tmp/de-pd-%d-%u", (int)getpid(), n++);
	rm_rf(d_dir);
	mkdir(d_dir, 0755);
	snprintf(d_log, sizeof d_log, "%s.log", d_dir);
	unlink(d_log);
}

static void teardown(void)
{
	stop();
	umount(d_dir); /* the tmpfs test; harmless otherwise */
	rm_rf(d_dir);
	unlink(d_log);
}

static bool log_has(const char *needle)
{
	FILE *f = fopen(d_log, "r");
	if (!f)
		return false;
	char line[1024];
	bool found = false;
	while (!found && fgets(line, sizeof line, f))
		found = strstr(line, needle) != NULL;
	fclose(f);
	return found;
}

static dynemb_client *conn(void)
{
	dynemb_client *c;
	struct dynemb_connect_opts o = { .name = "persist-test", .timeout_ms = 20000 };
	int err = dynemb_connect(d_sock, &o, &c);
	cr_assert_eq(err, 0, "connect: %s", dynemb_strerror(err));
	return c;
}

static struct dynemb_table_spec spec(const char *name, enum dynemb_durability_mode mode, uint32_t win)
{
	struct dynemb_table_spec s = { .name = name, .dim = DIM, .init = DYNEMB_CONSTANT, .init_a = 0.5f,
				   .seed = 7 };
	s.durability.mode = mode;
	s.durability.window_ms = win;
	return s;
}

static int open_t(dynemb_client *c, const struct dynemb_table_spec *s)
{
	int t, err = dynemb_open(c, s, &t);
	cr_assert_eq(err, 0, "open %s: %s", s->name, dynemb_strerror(err));
	return t;
}

static float val(uint64_t key, uint32_t version, unsigned j)
{
	return (float)key * 0.25f + (float)version + (float)j * 0.001f;
}

/* the table's rows of keys[0..n) as lookups without create see them: found[i] */
static void read_rows(dynemb_client *c, int t, const uint64_t *keys, size_t n, float *out,
		      uint8_t *st)
{
	int err = dynemb_lookup(c, t, keys, n, out, st, DYNEMB_READONLY, 0);
	cr_assert_eq(err, 0, "lookup: %s", dynemb_strerror(err));
}

/* ---- config ----------------------------------------------------------------------- */

TestSuite(config, .init = setup, .fini = teardown, .timeout = 60);

Test(config, bad_values_exit_2)
{
	static const char *bad[][2] = {
		{ "--data-dir", "relative/dir" },
		{ "--snapshot-interval-s", "-1" },
		{ "--snapshot-interval-s", "604801" },
		{ "--snapshot-interval-s", "1x" },
		{ "--wal-segment-bytes", "1K" },
		{ "--wal-segment-bytes", "2G" },
		{ "--wal-segment-bytes", "lots" },
		{ "--export-dir", "not/absolute" },
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		unlink(d_log);
		const char *extra[] = { bad[i][0], bad[i][1], NULL };
		cr_expect_eq(run_to_exit(extra), 2, "%s %s", bad[i][0], bad[i][1]);
		cr_expect(log_has(bad[i][0] + 2), "%s: the message names the flag", bad[i][0]);
	}
	/* the same keys in a file */
	char path[300];
	snprintf(path, sizeof path, "%s/bad.ini", d_dir);
	FILE *f = fopen(path, "w");
	fprintf(f, "[persistence]\nwal_segment_bytes = 12\n");
	fclose(f);
	unlink(d_log);
	const char *extra[] = { "--config", path, NULL };
	cr_expect_eq(run_to_exit(extra), 2);
	cr_expect(log_has("bad.ini:2: wal_segment_bytes"));
}

Test(config, print_config)
{
	char cmd[600];
	snprintf(cmd, sizeof cmd, "%s --data-dir %s --snapshot-interval-s 30 --wal-segment-bytes "
		 "128K --export-dir /tmp --print-config", daemon_bin(), d_dir);
	FILE *p = popen(cmd, "r");
	char buf[8192];
	size_t n = fread(buf, 1, sizeof buf - 1, p);
	buf[n] = 0;
	cr_assert_eq(pclose(p), 0);
	char want[400];
	snprintf(want, sizeof want, "[persistence]\ndata_dir = %s\nsnapshot_interval_s = 30\n"
		 "wal_segment_bytes = 131072\nexport_dir = /tmp\n", d_dir);
	cr_expect(strstr(buf, want), "got:\n%s", buf);
}

Test(config, durability_needs_data_dir)
{
	const char *b = daemon_bin();
	snprintf(d_sock, sizeof d_sock, "/tmp/de-pd-%d-nd.sock", (int)getpid());
	const char *argv[] = { b, "--foreground", "--socket", d_sock, "--pages", "small",
			       "--segment-bytes", "2M", "--reserve-bytes", "2G", "--allow-uid",
			       daemon_self_uid(), NULL };
	d_pid = daemon_spawn(argv, SIGKILL, "/dev/null");
	daemon_wait_listen(d_pid, d_sock, 10, NULL);
	dynemb_client *c = conn();
	struct dynemb_table_spec s = spec("sync_t", DYNEMB_DURABLE_SYNC, 0);
	int t, err = dynemb_open(c, &s, &t);
	cr_expect_eq(err, -EINVAL);
	cr_expect(strstr(dynemb_strerror(err), "data_dir"), "%s", dynemb_strerror(err));
	s = spec("async_t", DYNEMB_DURABLE_ASYNC, 5);
	cr_expect_eq(dynemb_open(c, &s, &t), -EINVAL);
	s = spec("none_t", DYNEMB_DURABLE_NONE, 0);
	cr_expect_eq(dynemb_open(c, &s, &t), 0, "durability none needs no data_dir");
	/* a refused open leaves no table behind: the name takes another config */
	s = spec("sync_t", DYNEMB_DURABLE_NONE, 0);
	err = dynemb_open(c, &s, &t);
	cr_expect_eq(err, 0, "the refused sync table stayed registered: %s", dynemb_strerror(err));
	struct dynemb_table_info ti[8];
	size_t nt = 0, total = 0;
	cr_assert_eq(dynemb_list_tables(c, 0, ti, 8, &nt, &total), 0);
	bool async_left = false;
	for (size_t i = 0; i < nt && i < 8; i++)
		async_left |= !strcmp(ti[i].name, "async_t");
	cr_expect_eq(total, 2, "tables: %zu (none_t and sync_t)", total);
	cr_expect(!async_left, "the refused async table is listed");
	cr_expect_eq(dynemb_snapshot(c, NULL, false, NULL, NULL, NULL), -EINVAL, "no data_dir");
	dynemb_close(c);
}

/* ---- crash ------------------------------------------------------------------------ */

TestSuite(crash, .init = setup, .fini = teardown, .timeout = 120);

#define NKEYS 200

Test(crash, sync_acked_updates_survive_sigkill)
{
	start(NULL);
	dynemb_client *c = conn();
	struct dynemb_table_spec s = spec("emb", DYNEMB_DURABLE_SYNC, 0);
	int t = open_t(c, &s);
	uint32_t ref[NKEYS + 1] = { 0 }; /* version of each key's acknowledged value; 0: none */
	uint64_t seed = 1;
	for (int round = 0; round < 300; round++) {
		uint64_t keys[8];
		float vals[8 * DIM];
		size_t n = 1 + round % 8;
		for (size_t i = 0; i < n; i++) {
			seed = seed * 6364136223846793005ull + 1442695040888963407ull;
			keys[i] = 1 + (seed >> 33) % NKEYS;
			for (size_t k = 0; k < i; k++)
				if (keys[k] == keys[i])
					keys[i] = 1 + (keys[i] % NKEYS);
		}
		if (round % 37 == 36) {
			cr_assert_eq(dynemb_erase(c, t, keys, 1, NULL), 0);
			ref[keys[0]] = 0;
			continue;
		}
		for (size_t i = 0; i < n; i++)
			for (unsigned j = 0; j < DIM; j++)
				vals[i * DIM + j] = val(keys[i], (uint32_t)round + 1, j);
		int err = dynemb_update(c, t, keys, n, vals, 0, NULL);
		cr_assert_eq(err, 0, "update: %s", dynemb_strerror(err));
		for (size_t i = 0; i < n; i++) /* duplicates: the last one wins */
			ref[keys[i]] = (uint32_t)round + 1;
	}
	struct dynemb_stats st;
	cr_assert_eq(dynemb_stats(c, t, &st), 0);
	cr_expect_geq(st.wal_lsn, 290, "one record per write");
	cr_expect_eq(st.durable_lsn, st.wal_lsn, "sync: everything acknowledged is durable");
	cr_expect_eq(st.read_only, 0);
	dynemb_close(c);
	crash();

	start(NULL);
	c = conn();
	t = open_t(c, &s);
	uint64_t keys[NKEYS];
	float out[NKEYS * DIM];
	uint8_t stt[NKEYS];
	for (unsigned i = 0; i < NKEYS; i++)
		keys[i] = i + 1;
	read_rows(c, t, keys, NKEYS, out, stt);
	unsigned present = 0;
	for (unsigned i = 0; i < NKEYS; i++) {
		uint64_t k = keys[i];
		if (!ref[k]) {
			cr_expect_eq(stt[i], DYNEMB_ST_MISSING, "key %lu: never written or erased", k);
			continue;
		}
		present++;
		cr_expect_eq(stt[i], DYNEMB_ST_FOUND, "key %lu acknowledged, lost", k);
		for (unsigned j = 0; j < DIM; j++)
			cr_expect_eq(out[i * DIM + j], val(k, ref[k], j), "key %lu col %u", k, j);
	}
	cr_expect_gt(present, 50);
	cr_expect(log_has("WAL records applied"));
	dynemb_close(c);
}

/* de_learn.h's Adam, per key (bias correction by the key's own step count) */
struct adam_ref {
	double p[DIM], m[DIM], v[DIM];
	unsigned t;
};

static void adam_step(struct adam_ref *r, const float *g, double lr)
{
	const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
	r->t++;
	for (unsigned j = 0; j < DIM; j++) {
		r->m[j] = b1 * r->m[j] + (1 - b1) * g[j];
		r->v[j] = b2 * r->v[j] + (1 - b2) * g[j] * g[j];
		double bc1 = 1 - pow(b1, r->t), bc2 = 1 - pow(b2, r->t);
		r->p[j] -= lr / bc1 * r->m[j] / (sqrt(r->v[j]) / sqrt(bc2) + eps);
	}
}

static float grad(uint64_t key, unsigned step, unsigned j)
{
	return (float)sin((double)(key * 31 + step * 7 + j)) * 0.5f;
}

Test(crash, adam_continues_after_sigkill)
{
	start(NULL);
	dynemb_client *c = conn();
	struct dynemb_table_spec s = spec("adam", DYNEMB_DURABLE_SYNC, 0);
	dynemb_optim_spec_defaults(DYNEMB_OPTIM_ADAM, &s.optim);
	s.optim.lr = 0.05;
	int t = open_t(c, &s);
	enum { K = 16, STEPS = 40, CRASH_AT = 23 };
	struct adam_ref ref[K + 1];
	for (unsigned k = 0; k <= K; k++) {
		memset(&ref[k], 0, sizeof ref[k]);
		for (unsigned j = 0; j < DIM; j++)
			ref[k].p[j] = 0.5;
	}
	for (unsigned step = 0; step < STEPS; step++) {
		if (step == CRASH_AT) {
			dynemb_close(c);
			crash();
			start(NULL);
			c = conn();
			t = open_t(c, &s);
		}
		uint64_t keys[K];
		float g[K * DIM];
		size_t n = 0;
		for (unsigned k = 1; k <= K; k++)
			if ((k + step) % 3) { /* each step touches 2 keys of 3: step counts differ */
				keys[n] = k;
				for (unsigned j = 0; j < DIM; j++)
					g[n * DIM + j] = grad(k, step, j);
				adam_step(&ref[k], &g[n * DIM], 0.05);
				n++;
			}
		int err = dynemb_apply_gradients(c, t, keys, n, g, step, 0, NULL);
		cr_assert_eq(err, 0, "step %u: %s", step, dynemb_strerror(err));
	}
	uint64_t keys[K];
	float out[K * DIM];
	uint8_t st[K];
	for (unsigned k = 0; k < K; k++)
		keys[k] = k + 1;
	read_rows(c, t, keys, K, out, st);
	for (unsigned k = 0; k < K; k++)
		for (unsigned j = 0; j < DIM; j++) {
			double want = ref[k + 1].p[j], got = out[k * DIM + j];
			cr_expect(fabs(got - want) <= 1e-4 * (1 + fabs(want)),
				  "key %u col %u: %.7f, reference %.7f (optimizer state lost?)", k + 1,
				  j, got, want);
		}
	dynemb_close(c);
}

Test(crash, async_loss_is_a_bounded_prefix)
{
	start(NULL);
	dynemb_client *c = conn();
	enum { WIN = 50, N = 400 };
	struct dynemb_table_spec s = spec("async", DYNEMB_DURABLE_ASYNC, WIN);
	int t = open_t(c, &s);
	double acked[N];
	/* update i writes key i + 1 with version i + 1, paced ~1 ms apart */
	for (unsigned i = 0; i < N; i++) {
		uint64_t k = i + 1;
		float v[DIM];
		for (unsigned j = 0; j < DIM; j++)
			v[j] = val(k, i + 1, j);
		cr_assert_eq(dynemb_update(c, t, &k, 1, v, 0, NULL), 0);
		acked[i] = now_s();
		usleep(1000);
	}
	double killed = now_s();
	crash();
	start(NULL);
	c = conn();
	t = open_t(c, &s);
	uint64_t keys[N];
	float out[N * DIM];
	uint8_t st[N];
	for (unsigned i = 0; i < N; i++)
		keys[i] = i + 1;
	read_rows(c, t, keys, N, out, st);
	unsigned kept = 0;
	while (kept < N && st[kept] == DYNEMB_ST_FOUND)
		kept++;
	for (unsigned i = kept; i < N; i++)
		cr_expect_eq(st[i], DYNEMB_ST_MISSING, "update %u survived after a lost one", i);
	for (unsigned i = 0; i < kept; i++)
		cr_expect_eq(out[i * DIM], val(i + 1, i + 1, 0));
	/* lost: acknowledged at most one window (+ a flush and scheduling slack) before the kill */
	double slack = 0.25;
	if (kept < N)
		cr_expect_geq(acked[kept], killed - (WIN / 1000.0 + slack),
			      "update %u acknowledged %.3f s before the kill was lost", kept,
			      killed - acked[kept]);
	cr_log_info("async: %u of %u updates survived; the first lost was acked %.1f ms before "
		    "the kill", kept, N, kept < N ? (killed - acked[kept]) * 1e3 : 0.0);
	dynemb_close(c);
}

Test(crash, snapshot_then_wal)
{
	start(NULL);
	dynemb_client *c = conn();
	struct dynemb_table_spec s = spec("sw", DYNEMB_DURABLE_SYNC, 0);
	int t = open_t(c, &s);
	uint64_t keys[100];
	float v[100 * DIM];
	for (unsigned i = 0; i < 100; i++) {
		keys[i] = i + 1;
		for (unsigned j = 0; j < DIM; j++)
			v[i * DIM + j] = val(i + 1, 1, j);
	}
	cr_assert_eq(dynemb_update(c, t, keys, 100, v, 0, NULL), 0);
	struct dynemb_snapshot_result r;
	int err = dynemb_snapshot(c, "sw", false, NULL, NULL, &r);
	cr_assert_eq(err, 0, "snapshot: %s", dynemb_strerror(err));
	cr_expect_eq(r.tables, 1);
	cr_expect_eq(r.rows, 100, "incremental: the 100 dirty keys");
	/* after the snapshot: keys 51..100 get version 2, key 1 erased */
	for (unsigned i = 50; i < 100; i++)
		for (unsigned j = 0; j < DIM; j++)
			v[i * DIM + j] = val(i + 1, 2, j);
	cr_assert_eq(dynemb_update(c, t, keys + 50, 50, v + 50 * DIM, 0, NULL), 0);
	cr_assert_eq(dynemb_erase(c, t, keys, 1, NULL), 0);
	struct dynemb_stats st;
	cr_assert_eq(dynemb_stats(c, t, &st), 0);
	cr_expect_eq(st.snapshots, 2, "the table's first (empty) one and this");
	cr_expect_eq(st.snapshot_lsn, r.lsn);
	dynemb_close(c);
	crash();
	start(NULL);
	c = conn();
	t = open_t(c, &s);
	float out[100 * DIM];
	uint8_t stt[100];
	read_rows(c, t, keys, 100, out, stt);
	cr_expect_eq(stt[0], DYNEMB_ST_MISSING, "erased after the snapshot");
	for (unsigned i = 1; i < 100; i++) {
		cr_expect_eq(stt[i], DYNEMB_ST_FOUND);
		cr_expect_eq(out[i * DIM + 3], val(i + 1, i < 50 ? 1 : 2, 3), "key %u", i + 1);
	}
	dynemb_close(c);
}

Test(crash, durability_none_keeps_the_snapshot)
{
	start(NULL);
	dynemb_client *c = conn();
	struct dynemb_table_spec s = spec("none", DYNEMB_DURABLE_NONE, 0);
	int t = open_t(c, &s);
	uint64_t keys[20];
	float v[20 * DIM];
	for (unsigned i = 0; i < 20; i++) {
		keys[i] = i + 1;
		for (unsigned j = 0; j < DIM; j++)
			v[i * DIM + j] = val(i + 1, 1, j);
	}
	cr_assert_eq(dynemb_update(c, t, keys, 10, v, 0, NULL), 0);
	cr_assert_eq(dynemb_snapshot(c, NULL, false, NULL, NULL, NULL), 0);
	for (unsigned i = 0; i < 20; i++)
		for (unsigned j = 0; j < DIM; j++)
			v[i * DIM + j] = val(i + 1, 2, j);
	cr_assert_eq(dynemb_update(c, t, keys, 20, v, 0, NULL), 0); /* after it: lost on a crash */
	struct dynemb_stats st;
	cr_assert_eq(dynemb_stats(c, t, &st), 0);
	cr_expect_eq(st.wal_lsn, 0, "none: no WAL");
	dynemb_close(c);
	crash();
	start(NULL);
	c = conn();
	t = open_t(c, &s);
	float out[20 * DIM];
	uint8_t stt[20];
	read_rows(c, t, keys, 20, out, stt);
	for (unsigned i = 0; i < 20; i++) {
		if (i < 10) {
			cr_expect_eq(stt[i], DYNEMB_ST_FOUND);
			cr_expect_eq(out[i * DIM], val(i + 1, 1, 0), "key %u: as of the snapshot", i + 1);
		} else {
			cr_expect_eq(stt[i], DYNEMB_ST_MISSING, "key %u: written after the snapshot", i + 1);
		}
	}
	/* a clean stop (SIGTERM) snapshots what changed */
	cr_assert_eq(dynemb_update(c, t, keys, 20, v, 0, NULL), 0);
	dynemb_close(c);
	stop();
	start(NULL);
	c = conn();
	t = open_t(c, &s);
	read_rows(c, t, keys, 20, out, stt);
	for (unsigned i = 0; i < 20; i++)
		cr_expect_eq(out[i * DIM], val(i + 1, 2, 0), "key %u after a clean stop", i + 1);
	dynemb_close(c);
}

/* ---- corrupt ---------------------------------------------------------------------- */

TestSuite(corrupt, .init = setup, .fini = teardown, .timeout = 120);

/* A data dir with two tables, a snapshot with rows and WAL records after it. */
static void populate(void)
{
	start(NULL);
	dynemb_client *c = conn();
	struct dynemb_table_spec s = spec("a", DYNEMB_DURABLE_SYNC, 0);
	int t = open_t(c, &s);
	struct dynemb_table_spec s2 = spec("b", DYNEMB_DURABLE_ASYNC, 5);
	open_t(c, &s2);
	uint64_t keys[30];
	float v[30 * DIM];
	for (unsigned i = 0; i < 30; i++) {
		keys[i] = i + 1;
		for (unsigned j = 0; j < DIM; j++)
			v[i * DIM + j] = val(i + 1, 1, j);
	}
	cr_assert_eq(dynemb_update(c, t, keys, 30, v, 0, NULL), 0);
	cr_assert_eq(dynemb_snapshot(c, "a", true, NULL, NULL, NULL), 0);
	cr_assert_eq(dynemb_update(c, t, keys, 10, v, 0, NULL), 0);
	dynemb_close(c);
	crash();
}

static void flip(const char *name, long off_from_end)
{
	char p[600];
	snprintf(p, sizeof p, "%s/%s", d_dir, name);
	int fd = open(p, O_RDWR);
	cr_assert_geq(fd, 0, "%s", p);
	struct stat st;
	fstat(fd, &st);
	off_t at = off_from_end >= 0 ? st.st_size - 1 - off_from_end : st.st_size / 2;
	unsigned char b;
	cr_assert_eq(pread(fd, &b, 1, at), 1);
	b ^= 0x10;
	cr_assert_eq(pwrite(fd, &b, 1, at), 1);
	close(fd);
}

/* the newest file whose name starts with prefix */
static void newest(const char *prefix, char *out, size_t cap)
{
	DIR *d = opendir(d_dir);
	struct dirent *e;
	out[0] = 0;
	while ((e = readdir(d)))
		if (!strncmp(e->d_name, prefix, strlen(prefix)) && strcmp(e->d_name, out) > 0 &&
		    !strstr(e->d_name, ".tmp"))
			snprintf(out, cap, "%s", e->d_name);
	closedir(d);
	cr_assert(out[0], "no %s* file in %s", prefix, d_dir);
}

static void expect_refused(const char *file)
{
	unlink(d_log);
	int status = run_to_exit(NULL);
	cr_expect_eq(status, 3, "a damaged %s: exit 3, got %d", file, status);
	cr_expect(log_has(file), "the message names %s", file);
}

Test(corrupt, catalog)
{
	populate();
	flip("CATALOG", -1);
	expect_refused("CATALOG");
}

Test(corrupt, manifest)
{
	populate();
	flip("MANIFEST", -1);
	expect_refused("MANIFEST");
}

Test(corrupt, snapshot)
{
	populate();
	char name[256];
	newest("snap-00000001-", name, sizeof name);
	flip(name, -1);
	expect_refused(name);
}

Test(corrupt, wal_tail_truncated)
{
	populate();
	char name[256];
	newest("wal-", name, sizeof name);
	flip(name, 8); /* inside the last record */
	unlink(d_log);
	start(NULL);
	cr_expect(log_has("torn tail"), "the truncation is logged");
	dynemb_client *c = conn();
	struct dynemb_table_spec s = spec("a", DYNEMB_DURABLE_SYNC, 0);
	int t = open_t(c, &s);
	uint64_t keys[30];
	float out[30 * DIM];
	uint8_t st[30];
	for (unsigned i = 0; i < 30; i++)
		keys[i] = i + 1;
	read_rows(c, t, keys, 30, out, st);
	for (unsigned i = 0; i < 30; i++)
		cr_expect_eq(st[i], DYNEMB_ST_FOUND, "key %u: in the snapshot", i + 1);
	dynemb_close(c);
}

/* ---- faults ----------------------------------------------------------------------- */

TestSuite(faults, .init = setup, .fini = teardown, .timeout = 120);

Test(faults, fsync_failure_makes_read_only)
{
#ifndef DE_FAULT_INJECTION
	cr_skip_test("needs -Dfault_injection=true");
#else
	/* the WAL's 3rd fsync fails: the table's first snapshot fsyncs none of the WAL's */
	setenv("DYNEMBD_TEST_WAL_FAULT", "fsync:3", 1);
	start(NULL);
	unsetenv("DYNEMBD_TEST_WAL_FAULT");
	dynemb_client *c = conn();
	struct dynemb_table_spec s = spec("ro", DYNEMB_DURABLE_SYNC, 0);
	int t = open_t(c, &s);
	uint64_t k;
	float v[DIM];
	int err = 0;
	unsigned ok = 0;
	for (k = 1; k <= 10 && !err; k++) {
		for (unsigned j = 0; j < DIM; j++)
			v[j] = val(k, 1, j);
		err = dynemb_update(c, t, &k, 1, v, 0, NULL);
		ok += !err;
	}
	cr_expect_eq(err, -EIO, "the update whose fsync failed is not acknowledged: %s",
		     dynemb_strerror(err));
	cr_expect_geq(ok, 1);
	uint64_t failed_key = k - 1;
	k = 100;
	cr_expect_eq(dynemb_update(c, t, &k, 1, v, 0, NULL), -EROFS, "later writes");
	float g[DIM] = { 1, 1, 1, 1 };
	(void)g;
	cr_expect_eq(dynemb_erase(c, t, &k, 1, NULL), -EROFS);
	struct dynemb_stats st;
	cr_assert_eq(dynemb_stats(c, t, &st), 0);
	cr_expect_eq(st.read_only, 1);
	cr_expect_lt(st.durable_lsn, st.wal_lsn + 1);
	/* reads go on: the acknowledged keys are there */
	uint64_t keys[16];
	float out[16 * DIM];
	uint8_t stt[16];
	for (unsigned i = 0; i < ok; i++)
		keys[i] = i + 1;
	read_rows(c, t, keys, ok, out, stt);
	for (unsigned i = 0; i < ok; i++)
		cr_expect_eq(out[i * DIM], val(i + 1, 1, 0));
	cr_expect(log_has("read-only"), "one log line says so");
	cr_expect_eq(dynemb_snapshot(c, "ro", false, NULL, NULL, NULL), -EROFS);
	dynemb_close(c);
	crash();
	/* after a restart the acknowledged updates are there; the failed one may or may not
	 * be (it was not acknowledged) */
	start(NULL);
	c = conn();
	t = open_t(c, &s);
	read_rows(c, t, keys, ok, out, stt);
	for (unsigned i = 0; i < ok; i++)
		cr_expect_eq(stt[i], DYNEMB_ST_FOUND, "acknowledged key %u", i + 1);
	struct dynemb_stats st2;
	cr_assert_eq(dynemb_stats(c, t, &st2), 0);
	cr_expect_eq(st2.read_only, 0, "a restart recovers");
	cr_log_info("fsync fault: %u acknowledged, key %lu failed", ok, (unsigned long)failed_key);
	dynemb_close(c);
#endif
}

Test(faults, enospc_on_tmpfs)
{
	if (mount("tmpfs", d_dir, "tmpfs", 0, "size=1m") != 0)
		cr_skip_test("cannot mount a tmpfs on %s (%s): needs root", d_dir, strerror(errno));
	const char *extra[] = { "--wal-segment-bytes", "64K", NULL };
	start(extra);
	dynemb_client *c = conn();
	struct dynemb_table_spec s = spec("full", DYNEMB_DURABLE_SYNC, 0);
	s.dim = 64;
	int t = open_t(c, &s);
	enum { MAXK = 20000 };
	static float v[64 * 16];
	uint64_t acked = 0;
	int err = 0;
	for (uint64_t k = 1; k <= MAXK && !err; k += 16) {
		uint64_t keys[16];
		for (unsigned i = 0; i < 16; i++) {
			keys[i] = k + i;
			for (unsigned j = 0; j < 64; j++)
				v[i * 64 + j] = val(k + i, 1, j);
		}
		err = dynemb_update(c, t, keys, 16, v, 0, NULL);
		if (!err)
			acked = k + 15;
	}
	cr_expect(err == -ENOSPC || err == -EROFS, "a full disk surfaces: %s", dynemb_strerror(err));
	cr_expect_gt(acked, 0);
	struct dynemb_stats st;
	cr_assert_eq(dynemb_stats(c, t, &st), 0);
	cr_expect_eq(st.read_only, 1);
	/* a new table whose catalog entry or first snapshot cannot be written is refused
	 * and leaves nothing registered */
	struct dynemb_table_spec s2 = spec("another", DYNEMB_DURABLE_SYNC, 0);
	int t2;
	err = dynemb_open(c, &s2, &t2);
	if (err) {
		struct dynemb_table_info ti[4];
		size_t n = 0, total = 0;
		cr_assert_eq(dynemb_list_tables(c, 0, ti, 4, &n, &total), 0);
		cr_expect_eq(total, 1, "a refused open left a table behind (%zu tables)", total);
	} else {
		cr_log_warn("the full tmpfs still took a new table's files");
	}
	dynemb_close(c);
	crash();
	/* make room (a bigger tmpfs over the same files is not possible: remount) */
	cr_assert_eq(mount("tmpfs", d_dir, "tmpfs", MS_REMOUNT, "size=64m"), 0);
	start(NULL);
	c = conn();
	s.dim = 64;
	t = open_t(c, &s);
	static float out[64 * 16];
	uint8_t stt[16];
	for (uint64_t k = 1; k <= acked; k += 16) {
		uint64_t keys[16];
		for (unsigned i = 0; i < 16; i++)
			keys[i] = k + i;
		read_rows(c, t, keys, 16, out, stt);
		for (unsigned i = 0; i < 16; i++) {
			cr_assert_eq(stt[i], DYNEMB_ST_FOUND, "acknowledged key %lu lost",
				     (unsigned long)(k + i));
			cr_assert_eq(out[i * 64 + 5], val(k + i, 1, 5));
		}
	}
	cr_log_info("tmpfs 1M: %lu keys acknowledged before ENOSPC", (unsigned long)acked);
	dynemb_close(c);
}

/* ---- jobs ------------------------------------------------------------------------- */

TestSuite(jobs, .init = setup, .fini = teardown, .timeout = 120);

struct seen {
	unsigned calls;
	uint64_t last_done, total;
	bool monotonic;
	unsigned phase;
	char table[64];
};

static int on_prog(void *ctx, const struct dynemb_progress *p)
{
	struct seen *s = ctx;
	if (s->calls && p->done < s->last_done && (unsigned)p->phase == s->phase)
		s->monotonic = false;
	s->calls++;
	s->last_done = p->done;
	s->total = p->total;
	s->phase = (unsigned)p->phase;
	snprintf(s->table, sizeof s->table, "%s", p->table);
	return 0;
}

Test(jobs, export_import_round_trip)
{
	char exp_dir[300];
	snprintf(exp_dir, sizeof exp_dir, "%s/exports", d_dir);
	mkdir(exp_dir, 0755);
	const char *extra[] = { "--export-dir", exp_dir, NULL };
	start(extra);
	dynemb_client *c = conn();
	/* a data_dir and an export_dir: the daemon says so */
	cr_assert_eq(dynemb_capabilities(c) & (DYNEMB_CAP_PERSISTENCE | DYNEMB_CAP_EXPORT_DIR),
		     DYNEMB_CAP_PERSISTENCE | DYNEMB_CAP_EXPORT_DIR);
	struct dynemb_table_spec s = spec("src", DYNEMB_DURABLE_ASYNC, 5);
	dynemb_optim_spec_defaults(DYNEMB_OPTIM_ADAGRAD, &s.optim);
	int t = open_t(c, &s);
	enum { N = 3000 };
	static uint64_t keys[N];
	static float v[N * DIM], out[N * DIM];
	static uint8_t st[N];
	for (unsigned i = 0; i < N; i++) {
		keys[i] = 1000 + i;
		for (unsigned j = 0; j < DIM; j++)
			v[i * DIM + j] = val(keys[i], 3, j);
	}
	cr_assert_eq(dynemb_update(c, t, keys, N, v, 0, NULL), 0);
	char path[400];
	snprintf(path, sizeof path, "%s/src.dexp", exp_dir);
	struct seen sp = { .monotonic = true };
	uint64_t records = 0, bytes = 0;
	int err = dynemb_export(c, "src", path, on_prog, &sp, &records, &bytes);
	cr_assert_eq(err, 0, "export: %s", dynemb_strerror(err));
	cr_expect_eq(records, N);
	struct stat fst;
	cr_assert_eq(stat(path, &fst), 0);
	cr_expect_eq(bytes, (uint64_t)fst.st_size);
	cr_expect_geq(sp.calls, 1, "progress arrives");
	cr_expect_eq(sp.last_done, N, "the last progress is the end");
	cr_expect(sp.monotonic);
	cr_expect_str_eq(sp.table, "src");

	/* a second table with the same config, durable: import, crash, it is still there */
	struct dynemb_table_spec s2 = s;
	s2.name = "dst";
	s2.durability.mode = DYNEMB_DURABLE_SYNC;
	s2.durability.window_ms = 0;
	int t2 = open_t(c, &s2);
	struct dynemb_import_result ir;
	struct seen ip = { .monotonic = true };
	err = dynemb_import(c, "dst", path, 0, on_prog, &ip, &ir);
	cr_assert_eq(err, 0, "import: %s", dynemb_strerror(err));
	cr_expect_eq(ir.imported, N);
	cr_expect_eq(ir.dropped, 0);
	cr_expect_geq(ip.calls, 1);
	(void)t2;
	/* refused paths */
	cr_expect_eq(dynemb_export(c, "src", "/etc/dynemb-test.dexp", NULL, NULL, NULL, NULL), -EPERM);
	cr_expect(strstr(dynemb_strerror(-EPERM), "export_dir"), "%s", dynemb_strerror(-EPERM));
	char dots[500];
	snprintf(dots, sizeof dots, "%s/../x.dexp", exp_dir);
	cr_expect_eq(dynemb_export(c, "src", dots, NULL, NULL, NULL, NULL), -EINVAL);
	cr_expect_eq(dynemb_export(c, "src", "relative.dexp", NULL, NULL, NULL, NULL), -EINVAL);
	cr_expect_eq(dynemb_export(c, "nosuch", path, NULL, NULL, NULL, NULL), -ENOENT);
	struct dynemb_table_spec s3 = spec("other", DYNEMB_DURABLE_NONE, 0); /* another config */
	open_t(c, &s3);
	cr_expect_eq(dynemb_import(c, "other", path, 0, NULL, NULL, NULL), -EEXIST);
	dynemb_close(c);
	crash();

	start(extra);
	c = conn();
	t2 = open_t(c, &s2);
	read_rows(c, t2, keys, N, out, st);
	for (unsigned i = 0; i < N; i++) {
		cr_assert_eq(st[i], DYNEMB_ST_FOUND, "imported key %lu lost in the crash",
			     (unsigned long)keys[i]);
		cr_assert_eq(out[i * DIM + 1], v[i * DIM + 1]);
	}
	dynemb_close(c);
}

Test(jobs, snapshot_every_table_with_progress)
{
	start(NULL);
	dynemb_client *c = conn();
	int ts[3];
	const char *names[3] = { "x", "y", "z" };
	enum { N = 5000 };
	static uint64_t keys[N];
	static float v[N * DIM];
	for (unsigned i = 0; i < N; i++) {
		keys[i] = i + 1;
		for (unsigned j = 0; j < DIM; j++)
			v[i * DIM + j] = 1;
	}
	for (unsigned i = 0; i < 3; i++) {
		struct dynemb_table_spec s = spec(names[i], i == 0 ? DYNEMB_DURABLE_NONE : DYNEMB_DURABLE_SYNC, 0);
		ts[i] = open_t(c, &s);
		cr_assert_eq(dynemb_update(c, ts[i], keys, N - i * 1000, v, 0, NULL), 0);
	}
	struct seen sp = { .monotonic = true };
	struct dynemb_snapshot_result r;
	int err = dynemb_snapshot(c, NULL, true, on_prog, &sp, &r);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	cr_expect_eq(r.tables, 3);
	cr_expect_eq(r.rows, 3ull * N - 3000);
	cr_expect_gt(r.bytes, r.rows * DIM * 4);
	cr_expect_geq(sp.calls, 3, "progress per table");
	cr_expect_eq(sp.phase, DYNEMB_PROGRESS_SNAPSHOT);
	cr_expect_eq(dynemb_snapshot(c, "nosuch", false, NULL, NULL, NULL), -ENOENT);
	dynemb_close(c);
}

/* Regression (found by tools/crashtest): rows WAL replay brought back are in no dirty
 * set; an incremental snapshot right after a restart must not move the table's WAL start
 * past them. */
Test(crash, snapshot_right_after_recovery_keeps_replayed_rows)
{
	start(NULL);
	dynemb_client *c = conn();
	struct dynemb_table_spec s = spec("rr", DYNEMB_DURABLE_SYNC, 0);
	int t = open_t(c, &s);
	uint64_t keys[50];
	float v[50 * DIM], out[50 * DIM];
	uint8_t st[50];
	for (unsigned i = 0; i < 50; i++) {
		keys[i] = i + 1;
		for (unsigned j = 0; j < DIM; j++)
			v[i * DIM + j] = val(i + 1, 9, j);
	}
	cr_assert_eq(dynemb_update(c, t, keys, 50, v, 0, NULL), 0);
	dynemb_close(c);
	crash();
	start(NULL); /* the 50 rows come back from the WAL only */
	c = conn();
	struct dynemb_snapshot_result r;
	cr_assert_eq(dynemb_snapshot(c, "rr", false, NULL, NULL, &r), 0); /* no writes since */
	cr_expect_eq(r.rows, 50, "the first snapshot after a start is full");
	dynemb_close(c);
	crash();
	start(NULL);
	c = conn();
	t = open_t(c, &s);
	read_rows(c, t, keys, 50, out, st);
	for (unsigned i = 0; i < 50; i++) {
		cr_expect_eq(st[i], DYNEMB_ST_FOUND, "key %u lost", i + 1);
		cr_expect_eq(out[i * DIM + 2], val(i + 1, 9, 2));
	}
	dynemb_close(c);
}

/* ---- tier: eviction of durable tables, with and without the disk tier --------------- */

TestSuite(tier, .init = setup, .fini = teardown, .timeout = 300);

#define TKEYS 20000
#define TBUDGET (640u << 10) /* the index and about 6000 rows of DIM 4: most keys are evicted */

static struct dynemb_table_spec evict_spec(const char *name, bool tier)
{
	struct dynemb_table_spec s = spec(name, DYNEMB_DURABLE_SYNC, 0);
	s.eviction.policy = DYNEMB_EVICTION_LRU;
	s.eviction.budget_bytes = TBUDGET;
	s.eviction.disk_tier = tier;
	return s;
}

/* TKEYS keys updated (acknowledged) in batches of 50 at steps 1.., then a third of them
 * updated again (most of them in the tier by then): ref[k] the acknowledged version */
static void write_evicting(dynemb_client *c, int t, uint32_t *ref)
{
	uint64_t keys[50];
	float v[50 * DIM];
	uint64_t step = 1;
	for (uint32_t pass = 1; pass <= 2; pass++)
		for (uint64_t k0 = 1; k0 <= TKEYS; k0 += 50 * pass, step++) {
			for (unsigned i = 0; i < 50; i++) {
				keys[i] = k0 + i * pass;
				for (unsigned j = 0; j < DIM; j++)
					v[i * DIM + j] = val(keys[i], pass, j);
			}
			int err = dynemb_update(c, t, keys, 50, v, step, NULL);
			cr_assert_eq(err, 0, "update: %s", dynemb_strerror(err));
			for (unsigned i = 0; i < 50; i++)
				if (keys[i] <= TKEYS)
					ref[keys[i]] = pass;
		}
}

/* every acknowledged value, read with create lookups (which bring rows back from the
 * tier): the number of keys that did not have it */
static unsigned check_all(dynemb_client *c, int t, const uint32_t *ref)
{
	unsigned bad = 0;
	for (uint64_t k0 = 1; k0 <= TKEYS; k0 += 50) {
		uint64_t keys[50];
		float out[50 * DIM];
		uint8_t st[50];
		for (unsigned i = 0; i < 50; i++)
			keys[i] = k0 + i;
		int err = dynemb_lookup(c, t, keys, 50, out, st, 0, 100000 + k0);
		cr_assert_eq(err, 0, "lookup: %s", dynemb_strerror(err));
		for (unsigned i = 0; i < 50; i++) {
			/* erased (ref 0): created again with the initializer */
			float want = ref[keys[i]] ? val(keys[i], ref[keys[i]], 1) : 0.5f;
			if (out[i * DIM + 1] != want) {
				if (bad < 5)
					cr_log_error("key %lu: %g, acknowledged %g (status %u)",
						     (unsigned long)keys[i], out[i * DIM + 1], want,
						     st[i]);
				bad++;
			}
		}
	}
	return bad;
}

static void tier_round_trip(bool clean)
{
	start(NULL);
	dynemb_client *c = conn();
	struct dynemb_table_spec s = evict_spec("tiered", true);
	int t = open_t(c, &s);
	static uint32_t ref[TKEYS + 1];
	memset(ref, 0, sizeof ref);
	write_evicting(c, t, ref);
	struct dynemb_stats st;
	cr_assert_eq(dynemb_stats(c, t, &st), 0);
	cr_assert_gt(st.evicted_to_tier, TKEYS / 2, "most rows went to the tier (%lu)",
		     (unsigned long)st.evicted_to_tier);
	cr_expect_eq(check_all(c, t, ref), 0, "before the restart");
	/* every 7th key brought back from the tier (a creating lookup), then erased: its
	 * tier record must not come back after a restart */
	for (uint64_t k = 7; k <= TKEYS; k += 7) {
		float out[DIM];
		uint8_t s1;
		cr_assert_eq(dynemb_lookup(c, t, &k, 1, out, &s1, 0, 50000 + k), 0);
		cr_assert_eq(dynemb_erase(c, t, &k, 1, NULL), 0);
		ref[k] = 0;
	}
	dynemb_close(c);
	if (clean)
		stop();
	else
		crash();
	for (int round = 0; round < 2; round++) { /* and once more: the reads moved rows */
		start(NULL);
		c = conn();
		t = open_t(c, &s);
		cr_expect_eq(check_all(c, t, ref), 0, "after %s %d", clean ? "SIGTERM" : "SIGKILL",
			     round + 1);
		dynemb_close(c);
		if (clean)
			stop();
		else
			crash();
	}
}

Test(tier, sync_tier_rows_survive_sigkill)
{
	tier_round_trip(false);
}

Test(tier, sync_tier_rows_survive_sigterm)
{
	tier_round_trip(true);
}

/* No tier: eviction is logged, so a restart brings back only rows that were resident
 * (never one the budget had dropped), and a dropped key starts fresh. */
Test(tier, sync_eviction_without_tier_is_logged)
{
	start(NULL);
	dynemb_client *c = conn();
	struct dynemb_table_spec s = evict_spec("dropping", false);
	int t = open_t(c, &s);
	static uint32_t ref[TKEYS + 1];
	memset(ref, 0, sizeof ref);
	write_evicting(c, t, ref);
	static uint64_t keys[TKEYS];
	static float before[TKEYS * DIM], after[TKEYS * DIM];
	static uint8_t stb[TKEYS], sta[TKEYS];
	for (unsigned i = 0; i < TKEYS; i++)
		keys[i] = i + 1;
	usleep(100 * 1000); /* the evictor's thread: done with its headroom */
	for (unsigned i = 0; i < TKEYS; i += 500)
		read_rows(c, t, keys + i, 500, before + i * DIM, stb + i);
	unsigned resident = 0;
	for (unsigned i = 0; i < TKEYS; i++)
		resident += stb[i] == DYNEMB_ST_FOUND;
	cr_assert_lt(resident, TKEYS / 2, "the budget dropped most keys (%u resident)", resident);
	dynemb_close(c);
	crash();

	start(NULL);
	c = conn();
	t = open_t(c, &s);
	for (unsigned i = 0; i < TKEYS; i += 500)
		read_rows(c, t, keys + i, 500, after + i * DIM, sta + i);
	unsigned back = 0, resurrected = 0;
	for (unsigned i = 0; i < TKEYS; i++) {
		if (sta[i] != DYNEMB_ST_FOUND)
			continue;
		back++;
		if (stb[i] != DYNEMB_ST_FOUND) {
			resurrected++;
			continue;
		}
		cr_expect_eq(after[i * DIM + 1], val(keys[i], ref[keys[i]], 1), "key %u", i + 1);
	}
	cr_expect_eq(resurrected, 0, "%u of %u rows back after the restart had been evicted",
		     resurrected, back);
	struct dynemb_stats st;
	cr_assert_eq(dynemb_stats(c, t, &st), 0);
	cr_expect_leq(st.resident_bytes, TBUDGET + TBUDGET / 10, "budget after recovery: %lu "
		      "(%u keys)", (unsigned long)st.resident_bytes, back);
	/* a dropped key comes back fresh: its initializer, as without the crash */
	for (unsigned i = 0; i < TKEYS; i++)
		if (stb[i] != DYNEMB_ST_FOUND) {
			float out[DIM];
			uint8_t s1;
			cr_assert_eq(dynemb_lookup(c, t, &keys[i], 1, out, &s1, 0, 999999), 0);
			cr_expect_eq(s1, DYNEMB_ST_CREATED);
			cr_expect_eq(out[1], 0.5f, "key %u starts fresh", i + 1);
			break;
		}
	dynemb_close(c);
}

/* ---- strings and admission state across restarts --------------------------------- */

TestSuite(state, .init = setup, .fini = teardown, .timeout = 120);

#define NSTR 300

/* the strings of a string table come back after SIGKILL (and after SIGTERM) */
Test(state, key_strings_survive_restarts)
{
	start(NULL);
	dynemb_client *c = conn();
	struct dynemb_table_spec s = spec("words", DYNEMB_DURABLE_SYNC, 0);
	s.keys = DYNEMB_STRING_KEYS;
	int t = open_t(c, &s);
	static char words[NSTR][32];
	const char *ptr[NSTR];
	uint64_t keys[NSTR];
	float out[NSTR * DIM];
	uint8_t st[NSTR];
	for (unsigned i = 0; i < NSTR; i++) {
		snprintf(words[i], sizeof words[i], "word-%u-%s", i * 7919u, i % 3 ? "x" : "long-tail");
		ptr[i] = words[i];
		cr_assert_eq(dynemb_string_key(c, t, words[i], strlen(words[i]), &keys[i]), 0);
	}
	cr_assert_eq(dynemb_lookup_str(c, t, ptr, NULL, NSTR, out, st, 0, 1), 0); /* creates */
	dynemb_close(c);
	for (int round = 0; round < 2; round++) {
		if (round)
			stop();
		else
			crash();
		start(NULL);
		c = conn();
		t = open_t(c, &s);
		static char buf[NSTR * 32];
		uint32_t lens[NSTR];
		int err = dynemb_key_strings(c, t, keys, NSTR, buf, sizeof buf, lens);
		cr_assert_eq(err, 0, "key_strings: %s", dynemb_strerror(err));
		size_t at = 0;
		for (unsigned i = 0; i < NSTR; i++) {
			cr_assert_neq(lens[i], UINT32_MAX, "after %s: the string of key %u is unknown",
				      round ? "SIGTERM" : "SIGKILL", i);
			cr_assert_eq(lens[i], strlen(words[i]));
			cr_assert(!memcmp(buf + at, words[i], lens[i]), "string %u", i);
			at += lens[i];
		}
		dynemb_close(c);
	}
}

static uint8_t sight(dynemb_client *c, int t, uint64_t key)
{
	float out[DIM];
	uint8_t st = 0xff;
	int err = dynemb_lookup(c, t, &key, 1, out, &st, 0, 1);
	cr_assert_eq(err, 0, "lookup: %s", dynemb_strerror(err));
	return st;
}

/* the admission sketch is saved with each checkpoint and at a clean stop: a key seen
 * min_count - 1 times before a restart is admitted at its next sighting */
Test(state, admission_sketch_survives_restarts)
{
	start(NULL);
	dynemb_client *c = conn();
	struct dynemb_table_spec s = spec("admitted", DYNEMB_DURABLE_SYNC, 0);
	s.admission.mode = DYNEMB_ADMISSION_COUNT;
	s.admission.min_count = 3;
	s.admission.sketch_width = 1u << 12;
	int t = open_t(c, &s);
	const uint64_t k1 = 1001, k2 = 2002, once = 3003;
	for (int i = 0; i < 2; i++)
		cr_assert_eq(sight(c, t, k1), DYNEMB_ST_MISSING, "not admitted before min_count");
	cr_assert_eq(sight(c, t, once), DYNEMB_ST_MISSING);
	struct dynemb_snapshot_result r;
	cr_assert_eq(dynemb_snapshot(c, "admitted", false, NULL, NULL, &r), 0);
	dynemb_close(c);
	crash();

	start(NULL);
	c = conn();
	t = open_t(c, &s);
	cr_expect_eq(sight(c, t, k1), DYNEMB_ST_CREATED, "k1's two sightings were forgotten");
	cr_expect_eq(sight(c, t, once), DYNEMB_ST_MISSING, "a key seen once is not admitted at "
		     "its second sighting");
	for (int i = 0; i < 2; i++)
		cr_assert_eq(sight(c, t, k2), DYNEMB_ST_MISSING);
	dynemb_close(c);
	stop();

	start(NULL);
	c = conn();
	t = open_t(c, &s);
	cr_expect_eq(sight(c, t, k2), DYNEMB_ST_CREATED, "k2's sightings were forgotten at SIGTERM");
	cr_expect_eq(sight(c, t, once), DYNEMB_ST_CREATED, "its third sighting");
	dynemb_close(c);
}

/* ---- LSNs never go back after a damaged WAL is recovered ---------------------------- */

/* flip bit 2 of the byte at offset off of d_dir/name */
static void flip_at(const char *name, long off)
{
	char p[600];
	snprintf(p, sizeof p, "%s/%s", d_dir, name);
	int fd = open(p, O_RDWR);
	cr_assert_geq(fd, 0, "%s", p);
	unsigned char b;
	cr_assert_eq(pread(fd, &b, 1, off), 1);
	b ^= 0x04;
	cr_assert_eq(pwrite(fd, &b, 1, off), 1);
	close(fd);
}

/* keys lo..hi hold version v (or are all missing when v is 0) */
static void expect_versions(dynemb_client *c, int t, uint64_t lo, uint64_t hi, uint32_t v)
{
	uint64_t keys[64];
	float out[64 * DIM];
	uint8_t st[64];
	size_t n = (size_t)(hi - lo + 1);
	cr_assert_leq(n, 64);
	for (size_t i = 0; i < n; i++)
		keys[i] = lo + i;
	read_rows(c, t, keys, n, out, st);
	for (size_t i = 0; i < n; i++) {
		if (!v) {
			cr_expect_eq(st[i], DYNEMB_ST_MISSING, "key %lu", (unsigned long)keys[i]);
			continue;
		}
		cr_expect_eq(st[i], DYNEMB_ST_FOUND, "key %lu acknowledged, lost",
			     (unsigned long)keys[i]);
		cr_expect_eq(out[i * DIM + 1], val(keys[i], v, 1), "key %lu: version %u wanted",
			     (unsigned long)keys[i], v);
	}
}

static void update_versions(dynemb_client *c, int t, uint64_t lo, uint64_t hi, uint32_t v)
{
	uint64_t keys[64];
	float vals[64 * DIM];
	size_t n = (size_t)(hi - lo + 1);
	for (size_t i = 0; i < n; i++) {
		keys[i] = lo + i;
		for (unsigned j = 0; j < DIM; j++)
			vals[i * DIM + j] = val(keys[i], v, j);
	}
	int err = dynemb_update(c, t, keys, n, vals, 0, NULL);
	cr_assert_eq(err, 0, "update: %s", dynemb_strerror(err));
}

/* snapshot after the first record; with after: more records after the snapshot; then
 * a bit flipped in the first WAL record (below the snapshot's LSN), a restart, a sync
 * update of key 100, SIGKILL, a restart: key 100 must be there */
static void damaged_old_record(bool after)
{
	start(NULL);
	dynemb_client *c = conn();
	struct dynemb_table_spec s = spec("m", DYNEMB_DURABLE_SYNC, 0);
	int t = open_t(c, &s);
	update_versions(c, t, 1, 30, 1);
	cr_assert_eq(dynemb_snapshot(c, "m", false, NULL, NULL, NULL), 0);
	if (after)
		update_versions(c, t, 1, 10, 2);
	dynemb_close(c);
	crash();
	flip_at("wal-0000000000000001.log", 64 + 40 + 8); /* record 1's first key */
	unlink(d_log);
	start(NULL);
	if (after)
		cr_expect(log_has("damage no table needs"), "the skipped damage is logged");
	else
		cr_expect(log_has("torn tail"), "the truncation is logged");
	c = conn();
	t = open_t(c, &s);
	expect_versions(c, t, 1, 10, after ? 2 : 1);
	expect_versions(c, t, 11, 30, 1);
	update_versions(c, t, 100, 100, 7);
	dynemb_close(c);
	crash();
	start(NULL);
	c = conn();
	t = open_t(c, &s);
	expect_versions(c, t, 100, 100, 7);
	expect_versions(c, t, 1, 10, after ? 2 : 1);
	expect_versions(c, t, 11, 30, 1);
	dynemb_close(c);
}

Test(crash, lsn_never_goes_back_after_a_damaged_old_record)
{
	damaged_old_record(false);
}

Test(crash, damaged_old_record_keeps_the_needed_records_after_it)
{
	damaged_old_record(true);
}

/* ---- a missing CATALOG or MANIFEST is damage; --recover-from-wal salvages --------- */

static void rm_file(const char *name)
{
	char p[600];
	snprintf(p, sizeof p, "%s/%s", d_dir, name);
	cr_assert_eq(unlink(p), 0, "%s", p);
}

Test(corrupt, missing_catalog)
{
	populate();
	rm_file("CATALOG");
	expect_refused("CATALOG");
}

Test(corrupt, missing_manifest)
{
	populate();
	rm_file("MANIFEST");
	expect_refused("MANIFEST");
}

Test(corrupt, recover_from_wal_salvages)
{
	populate();
	rm_file("MANIFEST");
	unlink(d_log);
	const char *salvage[] = { "--recover-from-wal", NULL };
	start(salvage);
	cr_expect(log_has("--recover-from-wal: "), "the salvage is logged");
	dynemb_client *c = conn();
	struct dynemb_table_spec s = spec("a", DYNEMB_DURABLE_SYNC, 0);
	int t = open_t(c, &s);
	expect_versions(c, t, 1, 30, 1); /* from the WAL: every record is still there */
	dynemb_close(c);
	crash();
	rm_file("CATALOG");
	unlink(d_log);
	start(salvage);
	cr_expect(log_has("CATALOG is missing"), "the salvage names CATALOG");
	c = conn();
	t = open_t(c, &s);
	expect_versions(c, t, 1, 30, 0); /* no catalog: no table came back */
	dynemb_close(c);
}
