/*
 * test_quota.c — memory reservations, quotas and DROP, end to end: the real dynembd as a
 * child process (tests/daemon_util.h), driven through libdynemb as its users would.
 *
 *   defaults       a loop of OPENs stops at the default 256 tables per uid, with the
 *                  address space they reserve bounded (16 GiB each)
 *   uid_tables     one uid's OPENs stop at [quota] uid_tables with -EDQUOT and a message
 *                  naming the quota, while another uid (65534, root needed) still opens
 *   host_tables    the host's count: -ENOSPC naming host_tables
 *   growth         a table without a budget stops growing at [quota] table_bytes with
 *                  -ENOSPC (its rows still there), and the daemon's resident memory stays
 *                  bounded; a table charged past [quota] uid_bytes stops with -EDQUOT
 *   sketch         an admission sketch larger than the table's budget is refused at OPEN
 *                  (-EINVAL naming the sketch and the budget); one that fits is accepted
 *   drop           DROP gives memory back (the table's memfds leave the daemon's maps,
 *                  its quota count returns), is refused while open (-EBUSY naming the
 *                  holders), for a name not there (-ENOENT), to another uid (-EACCES: the
 *                  drop right); an evicting table drops (plain, and forced while the
 *                  evictor works on it); with a data_dir a restart does not bring the
 *                  table back and a new table never takes its id (its WAL records are not
 *                  replayed into it); dynembctl drop does the same from the command line
 *   forced drop    DYNEMB_DROP_FORCE drops a table another connection holds: the holder's
 *                  lookups and updates on the old handle fail -EIDRM naming the table, its
 *                  zero-copy reads of the old mapping return -EIDRM without a crash, a
 *                  table of that name opened again starts empty, a crash right after
 *                  does not bring it back; a forced drop still needs the drop right;
 *                  it cancels an export running on the table (-ECANCELED) and waits
 *                  for it; dynembctl drop --force
 *   recovered      a table brought back at startup counts against its creator's quota
 *                  (never refused itself, even when the limits shrank)
 *   timed out      a forced drop that gave up waiting for a top-k job keeps the table,
 *                  and no plain drop frees it under the job; a plain drop refused for a
 *                  running job leaves the table's eviction alone
 * Every bound is generous (CI is a loaded 2-core box under ASan): the assertions are on
 * error codes, messages and counts, and on memory only with a wide margin.
 */
#include <criterion/criterion.h>

#include <dirent.h>
#include <pthread.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon_util.h"
#include "dynemb.h"

#define MiB (1ull << 20)

struct dmn {
	pid_t pid;
	char dir[64], sock[128], log[128], data[128];
};

/* Start dynembd (small pages and segments: daemon_argv) with extra flags; data_dir set
 * when with_data. The directory is reused by a restart. */
static void dmn_dirs(struct dmn *d)
{
	if (!d->dir[0]) {
		strcpy(d->dir, "/tmp/dynembd-quota.XXXXXX");
		cr_assert_not_null(mkdtemp(d->dir));
		chmod(d->dir, 0755); /* uid 65534 connects */
		snprintf(d->sock, sizeof d->sock, "%s/d.sock", d->dir);
		snprintf(d->log, sizeof d->log, "%s/log", d->dir);
		snprintf(d->data, sizeof d->data, "%s/data", d->dir);
	}
}

static void dmn_start(struct dmn *d, bool with_data, const char *const *extra)
{
	dmn_dirs(d);
	const char *more[] = { "--data-dir", d->data, NULL };
	const char *argv[48];
	daemon_argv(argv, 48, daemon_bin(), d->sock, "info", with_data ? more : NULL, extra);
	d->pid = daemon_spawn(argv, SIGKILL, d->log);
	int st = 0, r = daemon_await_listen(d->pid, d->sock, 10, &st);
	if (r)
		daemon_show_log(d->log);
	cr_assert_eq(r, 0, "the daemon did not come up (%d, status %d)", r, st);
}

static void dmn_stop(struct dmn *d)
{
	int st = daemon_terminate(d->pid, 8);
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		daemon_show_log(d->log);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the daemon stopped uncleanly");
	d->pid = -1;
}

static void dmn_cleanup(struct dmn *d)
{
	daemon_show_log_if_asked(d->log);
	char cmd[200];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", d->dir);
	cr_expect_eq(system(cmd), 0);
}

static dynemb_client *conn(const struct dmn *d)
{
	dynemb_client *c = NULL;
	struct dynemb_connect_opts o = { .name = "test_quota", .timeout_ms = 10000,
					 .data_bytes = 8 * MiB };
	int err = dynemb_connect(d->sock, &o, &c);
	cr_assert_eq(err, 0, "connect: %s", dynemb_strerror(err));
	return c;
}

static dynemb_client *conn_named(const struct dmn *d, const char *name)
{
	dynemb_client *c = NULL;
	struct dynemb_connect_opts o = { .name = name, .timeout_ms = 20000,
					 .data_bytes = 8 * MiB };
	int err = dynemb_connect(d->sock, &o, &c);
	cr_assert_eq(err, 0, "connect: %s", dynemb_strerror(err));
	return c;
}

static struct dynemb_table_spec spec(const char *name, uint32_t dim)
{
	return (struct dynemb_table_spec){ .name = name, .dim = dim, .seed = 7 };
}

static int open_as(dynemb_client *c, const char *name, uint32_t dim, int *t)
{
	struct dynemb_table_spec s = spec(name, dim);
	return dynemb_open(c, &s, t);
}

/* A line of /proc/pid/status ("VmRSS:", ...) in KiB, or 0. */
static uint64_t status_kib(pid_t pid, const char *key)
{
	char path[64], line[256];
	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	uint64_t v = 0;
	while (f && fgets(line, sizeof line, f))
		if (!strncmp(line, key, strlen(key)))
			v = strtoull(line + strlen(key), NULL, 10);
	if (f)
		fclose(f);
	return v;
}

/* Mappings of the daemon whose line names needle (its memfds: "dynemb:NAME"). */
static unsigned maps_with(pid_t pid, const char *needle)
{
	char path[64], line[512];
	snprintf(path, sizeof path, "/proc/%d/maps", (int)pid);
	FILE *f = fopen(path, "r");
	unsigned n = 0;
	while (f && fgets(line, sizeof line, f))
		n += strstr(line, needle) != NULL;
	if (f)
		fclose(f);
	return n;
}

/* Run fn in a child as uid/gid 65534; its exit status (0 = passed). */
static int as_nobody(int (*fn)(const struct dmn *), const struct dmn *d)
{
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		if (setresgid(65534, 65534, 65534) || setresuid(65534, 65534, 65534))
			_exit(90);
		_exit(fn(d));
	}
	int st = 0;
	waitpid(pid, &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 100 + WTERMSIG(st);
}

static dynemb_client *conn_quiet(const struct dmn *d)
{
	dynemb_client *c = NULL;
	struct dynemb_connect_opts o = { .name = "nobody", .timeout_ms = 10000,
					 .data_bytes = 8 * MiB };
	return dynemb_connect(d->sock, &o, &c) ? NULL : c;
}

/* ---- table count quotas --------------------------------------------------------------- */

static int nobody_opens(const struct dmn *d)
{
	dynemb_client *c = conn_quiet(d);
	if (!c)
		return 10;
	int t;
	int err = open_as(c, "nobody-table", 4, &t);
	dynemb_close(c);
	return err ? 11 : 0;
}

Test(quota, uid_tables_named_error_other_uid_still_opens, .timeout = 60)
{
	if (geteuid() != 0)
		cr_skip_test("needs root to open tables as a second uid (65534)");
	struct dmn d = { 0 };
	dmn_start(&d, false, (const char *const[]){ "--uid-tables", "8", "--allow-uid", "0,65534",
						    NULL });
	dynemb_client *c = conn(&d);
	char name[32];
	int t, err = 0, opened = 0;
	for (int i = 0; i < 64 && !err; i++) { /* an attacker's loop of OPENs */
		snprintf(name, sizeof name, "t%d", i);
		err = open_as(c, name, 4, &t);
		opened += !err;
	}
	cr_expect_eq(opened, 8, "uid 0 opened %d tables; its quota is 8", opened);
	cr_assert_eq(err, -EDQUOT, "the 9th table: %d (%s)", err, dynemb_strerror(err));
	const char *m = dynemb_strerror(err);
	cr_expect(strstr(m, "uid 0") && strstr(m, "uid_tables") && strstr(m, "t8"),
		  "the message names the uid, the quota and the table: %s", m);
	/* reopening one it has is no new table: fine */
	cr_expect_eq(open_as(c, "t3", 4, &t), 0);
	/* another uid is not locked out */
	cr_expect_eq(as_nobody(nobody_opens, &d), 0, "uid 65534 could not open a table");
	dynemb_close(c);
	dmn_stop(&d);
	dmn_cleanup(&d);
}

/* The attack with the daemon's default limits and reservation sizes: a loop of OPENs
 * from one uid stops at 256 tables, and the address space they hold stays bounded
 * (16 GiB each; 64 GiB each before reservations were sized, which ran out of address
 * space after about 2,000 tables). */
Test(quota, default_limits_stop_an_open_loop, .timeout = 120)
{
	struct dmn d = { 0 };
	dmn_start(&d, false, (const char *const[]){ "--reserve-bytes", "0", NULL });
	dynemb_client *c[2] = { conn(&d), conn(&d) }; /* a connection opens at most 256 */
	uint64_t vm0 = status_kib(d.pid, "VmSize:"); /* a sanitizer's shadow is in it */
	char name[32];
	int t, err = 0, opened = 0;
	for (int i = 0; i < 300 && !err; i++) {
		snprintf(name, sizeof name, "loop%d", i);
		err = open_as(c[i & 1], name, 4, &t);
		opened += !err;
	}
	cr_expect_eq(opened, 256, "opened %d tables", opened);
	cr_expect_eq(err, -EDQUOT, "%d (%s)", err, dynemb_strerror(err));
	uint64_t vm = status_kib(d.pid, "VmSize:") - vm0;
	cr_expect_lt(vm, (256ull * 17) << 20, "the tables' address space: %llu KiB",
		     (unsigned long long)vm);
	dynemb_close(c[0]);
	dynemb_close(c[1]);
	dmn_stop(&d);
	dmn_cleanup(&d);
}

Test(quota, host_tables_named_error, .timeout = 60)
{
	struct dmn d = { 0 };
	dmn_start(&d, false, (const char *const[]){ "--host-tables", "3", NULL });
	dynemb_client *c = conn(&d);
	int t;
	cr_assert_eq(open_as(c, "a", 4, &t), 0);
	cr_assert_eq(open_as(c, "b", 4, &t), 0);
	cr_assert_eq(open_as(c, "c", 4, &t), 0);
	int err = open_as(c, "d", 4, &t);
	cr_assert_eq(err, -ENOSPC, "%d (%s)", err, dynemb_strerror(err));
	cr_expect(strstr(dynemb_strerror(err), "host_tables"), "%s", dynemb_strerror(err));
	dynemb_close(c);
	dmn_stop(&d);
	dmn_cleanup(&d);
}

/* ---- growth ------------------------------------------------------------------------------ */

/* Insert batches of 4096 dim-64 rows until an error or `most` rows; the error. */
static int fill(dynemb_client *c, int t, uint64_t most, uint64_t *done)
{
	enum { B = 4096, DIM = 64 };
	static uint64_t keys[B];
	static float vals[B * DIM];
	*done = 0;
	for (uint64_t k = 1; *done < most; ) {
		for (unsigned i = 0; i < B; i++)
			keys[i] = k++;
		for (unsigned i = 0; i < B * DIM; i++)
			vals[i] = (float)(keys[i / DIM] % 1000);
		int err = dynemb_update(c, t, keys, B, vals, 1, NULL);
		if (err)
			return err;
		*done += B;
	}
	return 0;
}

Test(quota, growth_past_table_bytes_is_enospc_and_rss_bounded, .timeout = 120)
{
	struct dmn d = { 0 };
	dmn_start(&d, false, (const char *const[]){ "--table-bytes", "64M", NULL });
	dynemb_client *c = conn(&d);
	int t;
	cr_assert_eq(open_as(c, "big", 64, &t), 0);
	uint64_t done;
	/* 3M rows of 256 bytes: 768 MiB of values, twelve times what the table may hold */
	int err = fill(c, t, 3u << 20, &done);
	cr_assert_eq(err, -ENOSPC, "growth past table_bytes: %d (%s) after %llu rows", err,
		     dynemb_strerror(err), (unsigned long long)done);
	cr_expect_gt(done, 50000, "the table took %llu rows before it was full",
		     (unsigned long long)done);
	/* what was acknowledged is still there */
	static float out[4096 * 64];
	uint64_t keys[4096];
	uint8_t st[4096];
	for (unsigned i = 0; i < 4096; i++)
		keys[i] = i + 1;
	cr_assert_eq(dynemb_lookup(c, t, keys, 4096, out, st, DYNEMB_READONLY, 0), 0);
	for (unsigned i = 0; i < 4096; i++)
		cr_assert(st[i] == DYNEMB_ST_FOUND && out[i * 64] == (float)(keys[i] % 1000));
	/* the daemon's memory: the table's 64 MiB and the channel's 8 MiB plus the daemon
	 * itself; 384 MiB leaves room for a sanitizer's own */
	uint64_t rss = status_kib(d.pid, "VmRSS:");
	cr_expect_lt(rss, 384 * 1024, "the daemon's RSS is %llu KiB", (unsigned long long)rss);
	/* another table is not affected */
	int t2;
	cr_assert_eq(open_as(c, "small", 64, &t2), 0);
	cr_expect_eq(fill(c, t2, 8192, &done), 0);
	dynemb_close(c);
	dmn_stop(&d);
	dmn_cleanup(&d);
}

Test(quota, growth_past_uid_bytes_is_edquot, .timeout = 120)
{
	struct dmn d = { 0 };
	dmn_start(&d, false, (const char *const[]){ "--uid-bytes", "64M", "--table-bytes", "1G",
						    NULL });
	dynemb_client *c = conn(&d);
	int t;
	cr_assert_eq(open_as(c, "big", 64, &t), 0);
	uint64_t done;
	int err = fill(c, t, 3u << 20, &done);
	cr_assert_eq(err, -EDQUOT, "growth past uid_bytes: %d (%s)", err, dynemb_strerror(err));
	dynemb_close(c);
	dmn_stop(&d);
	/* the daemon said which quota */
	FILE *f = fopen(d.log, "r");
	char line[600];
	bool named = false;
	while (f && fgets(line, sizeof line, f))
		named |= strstr(line, "cannot grow") && strstr(line, "uid_bytes");
	if (f)
		fclose(f);
	cr_expect(named, "the log names the quota ([quota] uid_bytes)");
	dmn_cleanup(&d);
}

/* ---- sketch -------------------------------------------------------------------------------- */

Test(quota, sketch_larger_than_budget_is_refused, .timeout = 60)
{
	struct dmn d = { 0 };
	dmn_start(&d, false, (const char *const[]){ "--table-bytes", "1G", NULL });
	dynemb_client *c = conn(&d);
	struct dynemb_table_spec s = spec("sk", 8);
	s.admission = (struct dynemb_admission_spec){ .mode = DYNEMB_ADMISSION_COUNT,
						      .min_count = 2, .sketch_width = 1u << 28,
						      .sketch_depth = 8 };
	int t;
	int err = dynemb_open(c, &s, &t);
	cr_assert_eq(err, -EINVAL, "a 2^28 x 8 sketch (4 GiB) in a 1 GiB table: %d", err);
	const char *m = dynemb_strerror(err);
	cr_expect(strstr(m, "sketch") && strstr(m, "4096 MiB") && strstr(m, "table_bytes"),
		  "the message names the sketch, its size and the budget: %s", m);
	/* the same in an evicting table: its budget counts */
	s.eviction = (struct dynemb_eviction_spec){ .policy = DYNEMB_EVICTION_LRU,
						    .budget_bytes = 64 * MiB };
	s.admission.sketch_width = 1u << 24; /* 256 MiB */
	err = dynemb_open(c, &s, &t);
	cr_assert_eq(err, -EINVAL);
	cr_expect(strstr(dynemb_strerror(err), "eviction.budget_bytes"), "%s",
		  dynemb_strerror(err));
	/* one that fits is fine */
	s.admission.sketch_width = 1u << 16;
	err = dynemb_open(c, &s, &t);
	cr_expect_eq(err, 0, "%s", dynemb_strerror(err));
	dynemb_close(c);
	dmn_stop(&d);
	dmn_cleanup(&d);
}

/* ---- drop -------------------------------------------------------------------------------- */

static int nobody_drops(const struct dmn *d)
{
	dynemb_client *c = conn_quiet(d);
	if (!c)
		return 10;
	int err = dynemb_drop_table(c, "mine", NULL);
	bool named = strstr(dynemb_strerror(err), "has no 'drop' right on table 'mine'") != NULL;
	dynemb_close(c);
	return err == -EACCES && named ? 0 : 11;
}

Test(quota, drop_returns_memory_and_refuses_what_it_must, .timeout = 60)
{
	struct dmn d = { 0 };
	bool root = geteuid() == 0;
	dmn_start(&d, false, root ? (const char *const[]){ "--uid-tables", "2", "--allow-uid",
							   "0,65534", NULL }
				  : (const char *const[]){ "--uid-tables", "2", NULL });
	dynemb_client *c = conn(&d);
	int t;
	cr_assert_eq(open_as(c, "mine", 64, &t), 0);
	uint64_t done;
	cr_assert_eq(fill(c, t, 65536, &done), 0);
	cr_assert_eq(open_as(c, "other", 4, &t), 0);
	cr_assert_gt(maps_with(d.pid, "dynemb:mine"), 0, "the table's memfds are mapped");
	/* the quota is full: a third table is refused until one is dropped */
	cr_assert_eq(open_as(c, "third", 4, &t), -EDQUOT);
	/* refused: open (this connection counts), not there, another uid */
	int err = dynemb_drop_table(c, "mine", NULL);
	cr_expect_eq(err, -EBUSY, "drop of an open table: %d", err);
	cr_expect(strstr(dynemb_strerror(err), "open on 1 connection"), "%s",
		  dynemb_strerror(err));
	dynemb_close(c);
	c = conn(&d);
	err = dynemb_drop_table(c, "nosuch", NULL);
	cr_expect_eq(err, -ENOENT);
	cr_expect(strstr(dynemb_strerror(err), "no table 'nosuch'"), "%s", dynemb_strerror(err));
	if (root)
		cr_expect_eq(as_nobody(nobody_drops, &d), 0, "uid 65534 dropped uid 0's table");
	/* dropped: memory back, count back */
	uint64_t bytes = 0;
	err = dynemb_drop_table(c, "mine", &bytes);
	cr_assert_eq(err, 0, "drop: %s", dynemb_strerror(err));
	cr_expect_geq(bytes, 2 * MiB, "%llu bytes given back", (unsigned long long)bytes);
	cr_expect_eq(maps_with(d.pid, "dynemb:mine"), 0, "the table's memfds left the daemon");
	cr_expect_eq(dynemb_drop_table(c, "mine", NULL), -ENOENT, "dropped twice");
	cr_expect_eq(open_as(c, "third", 4, &t), 0, "the dropped table's count came back");
	/* the name is free: a new table of it starts empty */
	cr_assert_eq(open_as(c, "mine", 64, &t), -EDQUOT); /* two tables again */
	dynemb_close(c);
	dmn_stop(&d);
	dmn_cleanup(&d);
}

static bool has_file(const char *dir, const char *prefix);

/* An evicting table: dim 64, LRU, a budget of a few MiB (what 65536 rows overrun). */
static struct dynemb_table_spec evict_spec(const char *name, bool tier)
{
	struct dynemb_table_spec s = spec(name, 64);
	s.eviction = (struct dynemb_eviction_spec){ .policy = DYNEMB_EVICTION_LRU,
						    .budget_bytes = 4 * MiB, .disk_tier = tier };
	return s;
}

Test(quota, drop_of_an_evicting_table, .timeout = 120)
{
	struct dmn d = { 0 };
	dmn_start(&d, true, NULL); /* a data_dir: eviction is logged, the tier is a file */
	dynemb_client *c = conn(&d);
	struct dynemb_table_spec s = evict_spec("ev", true);
	int t;
	cr_assert_eq(dynemb_open(c, &s, &t), 0);
	uint64_t done;
	cr_assert_eq(fill(c, t, 65536, &done), 0);
	struct dynemb_stats st;
	cr_assert_eq(dynemb_stats(c, t, &st), 0);
	cr_expect_gt(st.evicted, 0, "the evictor worked on the table");
	dynemb_close(c);
	c = conn(&d);
	uint64_t bytes = 0;
	int err = dynemb_drop_table(c, "ev", &bytes);
	cr_expect_eq(err, 0, "drop of an evicting table: %s", dynemb_strerror(err));
	cr_expect(!has_file(d.data, "tier-"), "the dropped table's disk tier file went");
	/* the evictor forgot it: a new table of the name (and more) evicts as before */
	cr_assert_eq(dynemb_open(c, &s, &t), 0);
	cr_assert_eq(fill(c, t, 65536, &done), 0);
	cr_assert_eq(dynemb_stats(c, t, &st), 0);
	cr_expect_gt(st.evicted, 0, "the new table evicts");
	cr_expect_eq(st.restored_from_tier, 0, "nothing of the old table's tier came back");
	dynemb_close(c);
	dmn_stop(&d);
	dmn_cleanup(&d);
}

static bool has_file(const char *dir, const char *prefix)
{
	DIR *dd = opendir(dir);
	bool found = false;
	struct dirent *e;
	while (dd && (e = readdir(dd)))
		found |= !strncmp(e->d_name, prefix, strlen(prefix));
	if (dd)
		closedir(dd);
	return found;
}

static struct dynemb_table_spec sync_spec(const char *name)
{
	struct dynemb_table_spec s = spec(name, 4);
	s.durability.mode = DYNEMB_DURABLE_SYNC;
	return s;
}

/* Keys 1..n of table name read back: how many are there. */
static unsigned present(dynemb_client *c, const char *name, unsigned n)
{
	struct dynemb_table_spec s = sync_spec(name);
	int t;
	int err = dynemb_open(c, &s, &t);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	uint64_t keys[64];
	float out[64 * 4];
	uint8_t st[64];
	for (unsigned i = 0; i < n; i++)
		keys[i] = i + 1;
	cr_assert_eq(dynemb_lookup(c, t, keys, n, out, st, DYNEMB_READONLY, 0), 0);
	unsigned k = 0;
	for (unsigned i = 0; i < n; i++)
		k += st[i] == DYNEMB_ST_FOUND;
	return k;
}

Test(quota, drop_is_durable_and_ids_are_not_reused, .timeout = 120)
{
	struct dmn d = { 0 };
	dmn_start(&d, true, NULL);
	dynemb_client *c = conn(&d);
	struct dynemb_table_spec s = sync_spec("gone");
	int t;
	int err = dynemb_open(c, &s, &t);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	uint64_t keys[64];
	float vals[64 * 4];
	for (unsigned i = 0; i < 64; i++) {
		keys[i] = i + 1;
		for (unsigned j = 0; j < 4; j++)
			vals[i * 4 + j] = (float)i;
	}
	cr_assert_eq(dynemb_update(c, t, keys, 64, vals, 1, NULL), 0);
	dynemb_close(c);
	cr_assert(has_file(d.data, "snap-00000001-"), "table id 1 has its snapshot");
	c = conn(&d);
	err = dynemb_drop_table(c, "gone", NULL);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	dynemb_close(c);
	cr_expect(!has_file(d.data, "snap-00000001-"), "the dropped table's snapshots went");
	dmn_stop(&d);

	/* a restart does not bring it back; a new table gets a new id */
	dmn_start(&d, true, NULL);
	c = conn(&d);
	cr_expect_eq(dynemb_drop_table(c, "gone", NULL), -ENOENT, "the drop did not last");
	cr_expect_eq(present(c, "again", 64), 0, "a new table starts empty");
	dynemb_close(c);
	cr_expect(!has_file(d.data, "snap-00000001-"), "id 1 is not given again");
	cr_expect(has_file(d.data, "snap-00000002-"), "the new table is id 2");
	dmn_stop(&d);

	/* and replay never puts the dropped table's WAL records into it */
	dmn_start(&d, true, NULL);
	c = conn(&d);
	cr_expect_eq(present(c, "again", 64), 0, "the dropped table's rows came back");
	dynemb_close(c);
	dmn_stop(&d);
	dmn_cleanup(&d);
}

/* A table recovered at startup is charged to its creator (the catalog records it), so a
 * restart is no way around [quota] uid_tables; it comes back even when the limits shrank
 * below what its creator holds, and dropping it gives the count back. */
Test(quota, recovered_tables_count_against_their_creator, .timeout = 120)
{
	struct dmn d = { 0 };
	const char *const two[] = { "--uid-tables", "2", NULL };
	const char *const one[] = { "--uid-tables", "1", NULL };
	dmn_start(&d, true, two);
	dynemb_client *c = conn(&d);
	struct dynemb_table_spec s = sync_spec("r1");
	int t, err;
	cr_assert_eq(present(c, "r1", 1), 0);
	cr_assert_eq(present(c, "r2", 1), 0);
	uint64_t key = 1;
	float row[4] = { 1, 2, 3, 4 };
	cr_assert_eq(dynemb_open(c, &s, &t), 0);
	cr_assert_eq(dynemb_update(c, t, &key, 1, row, 1, NULL), 0);
	dynemb_close(c);
	dmn_stop(&d);

	dmn_start(&d, true, two);
	c = conn(&d);
	err = open_as(c, "r3", 4, &t);
	cr_expect_eq(err, -EDQUOT, "after a restart uid 0 opened a 3rd table (%d: %s)", err,
		     dynemb_strerror(err));
	cr_expect(strstr(dynemb_strerror(err), "uid_tables"), "%s", dynemb_strerror(err));
	dynemb_close(c);
	dmn_stop(&d);

	dmn_start(&d, true, one); /* uid 0 holds 2 of 1 now: both still come back */
	c = conn(&d);
	cr_expect_eq(present(c, "r1", 1), 1, "the recovered table lost its row");
	cr_expect_eq(open_as(c, "r3", 4, &t), -EDQUOT);
	dynemb_close(c);
	dmn_stop(&d);

	dmn_start(&d, true, two);
	c = conn(&d);
	err = dynemb_drop_table(c, "r2", NULL);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	err = open_as(c, "r3", 4, &t);
	cr_expect_eq(err, 0, "the dropped recovered table did not give its count back: %s",
		     dynemb_strerror(err));
	dynemb_close(c);
	dmn_stop(&d);
	dmn_cleanup(&d);
}

Test(quota, dynembctl_drop, .timeout = 60)
{
	const char *ctl = getenv("DYNEMBCTL");
	if (!ctl)
		cr_skip_test("DYNEMBCTL is not set (meson sets it)");
	struct dmn d = { 0 };
	dmn_start(&d, false, NULL);
	dynemb_client *c = conn(&d);
	int t;
	cr_assert_eq(open_as(c, "cli", 4, &t), 0);
	dynemb_close(c);
	char cmd[400], out[256] = "";
	snprintf(cmd, sizeof cmd, "'%s' --socket '%s' drop cli 2>&1", ctl, d.sock);
	FILE *p = popen(cmd, "r");
	cr_assert_not_null(p);
	size_t n = fread(out, 1, sizeof out - 1, p);
	out[n] = 0;
	int st = pclose(p);
	cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "dynembctl drop: %s", out);
	cr_expect(strstr(out, "dropped cli"), "%s", out);
	p = popen(cmd, "r");
	n = fread(out, 1, sizeof out - 1, p);
	out[n] = 0;
	st = pclose(p);
	cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 1, "a second drop fails: %s", out);
	cr_expect(strstr(out, "no table 'cli'"), "%s", out);
	dmn_stop(&d);
	dmn_cleanup(&d);
}

/* ---- forced drop ------------------------------------------------------------------------ */

/* Keys 1..n with value i + 0.5 in every column (dim 4). */
static void put4(dynemb_client *c, int t, unsigned n)
{
	uint64_t keys[64];
	float vals[64 * 4];
	for (unsigned i = 0; i < n; i++) {
		keys[i] = i + 1;
		for (unsigned j = 0; j < 4; j++)
			vals[i * 4 + j] = (float)i + 0.5f;
	}
	int err = dynemb_update(c, t, keys, n, vals, 1, NULL);
	cr_assert_eq(err, 0, "update: %s", dynemb_strerror(err));
}

static bool dropped_named(int err, const char *table)
{
	char want[96];
	snprintf(want, sizeof want, "table '%s' was dropped", table);
	return err == -EIDRM && strstr(dynemb_strerror(err), want) != NULL;
}

static int nobody_forces(const struct dmn *d)
{
	dynemb_client *c = conn_quiet(d);
	if (!c)
		return 10;
	int err = dynemb_drop_table_flags(c, "held", DYNEMB_DROP_FORCE, NULL);
	bool named = strstr(dynemb_strerror(err), "has no 'drop' right on table 'held'") != NULL;
	dynemb_close(c);
	return err == -EACCES && named ? 0 : 11;
}

Test(quota, forced_drop_revokes_holders_and_lasts, .timeout = 120)
{
	struct dmn d = { 0 };
	bool root = geteuid() == 0;
	dmn_start(&d, true, root ? (const char *const[]){ "--allow-uid", "0,65534", NULL } : NULL);
	dynemb_client *b = conn_named(&d, "holder-b");
	struct dynemb_table_spec s = sync_spec("held");
	int tb;
	cr_assert_eq(dynemb_open(b, &s, &tb), 0);
	put4(b, tb, 64);
	uint64_t keys[64];
	float out[64 * 4];
	uint8_t st[64];
	for (unsigned i = 0; i < 64; i++)
		keys[i] = i + 1;
	/* B reads through its mapping (zero-copy): all found there, nothing asked remotely */
	cr_assert_eq(dynemb_lookup(b, tb, keys, 64, out, st, DYNEMB_READONLY, 0), 0);
	uint64_t local = 0, remote = 0;
	dynemb_zero_copy_counts(b, &local, &remote);
	cr_expect_eq(local, 64, "served from the mapping: %llu", (unsigned long long)local);
	cr_expect_eq(out[63 * 4], 63.5f);

	/* A: a plain drop is refused and names the holder */
	dynemb_client *a = conn_named(&d, "dropper-a");
	int err = dynemb_drop_table(a, "held", NULL);
	cr_expect_eq(err, -EBUSY, "plain drop of a held table: %d", err);
	cr_expect(strstr(dynemb_strerror(err), "open on 1 connection") &&
		  strstr(dynemb_strerror(err), "'holder-b'"), "%s", dynemb_strerror(err));
	cr_expect(strstr(dynemb_strerror(err), "--force"), "%s", dynemb_strerror(err));
	if (root) /* the force does not replace the drop right */
		cr_expect_eq(as_nobody(nobody_forces, &d), 0, "uid 65534 force-dropped uid 0's table");
	cr_expect_eq(dynemb_drop_table_flags(a, "held", 0x80, NULL), -EINVAL, "unknown flag");
	cr_expect_eq(dynemb_drop_table_flags(a, "nosuch", DYNEMB_DROP_FORCE, NULL), -ENOENT);

	/* A: forced */
	uint64_t bytes = 0;
	err = dynemb_drop_table_flags(a, "held", DYNEMB_DROP_FORCE, &bytes);
	cr_assert_eq(err, 0, "forced drop: %s", dynemb_strerror(err));
	cr_expect_gt(bytes, 0);
	cr_expect_eq(maps_with(d.pid, "dynemb:held"), 0, "the table's memfds left the daemon");

	/* B's old handle: every call fails -EIDRM naming the table; nothing crashes. First a
	 * zero-copy read: it walks the old mapping (still valid memory: the memfd keeps its
	 * pages while B maps them), finds every key there, and sees the table retired */
	memset(out, 0, sizeof out);
	err = dynemb_lookup(b, tb, keys, 64, out, st, DYNEMB_READONLY, 0);
	cr_expect(dropped_named(err, "held"), "read-only lookup: %d %s", err, dynemb_strerror(err));
	cr_expect_eq(out[63 * 4], 63.5f, "the old mapping still reads");
	err = dynemb_lookup(b, tb, keys, 64, out, st, 0, 2);
	cr_expect(dropped_named(err, "held"), "lookup on a revoked handle: %d %s", err,
		  dynemb_strerror(err));
	err = dynemb_update(b, tb, keys, 64, out, 2, NULL);
	cr_expect(dropped_named(err, "held"), "update: %d %s", err, dynemb_strerror(err));
	struct dynemb_stats ss;
	cr_expect_eq(dynemb_stats(b, tb, &ss), -EIDRM);
	/* B's connection still works: the name opens again as a new, empty table */
	int tb2;
	err = dynemb_open(b, &s, &tb2);
	cr_assert_eq(err, 0, "reopen: %s", dynemb_strerror(err));
	cr_expect_neq(tb2, tb, "a new handle");
	cr_assert_eq(dynemb_lookup(b, tb2, keys, 64, out, st, DYNEMB_READONLY, 0), 0);
	unsigned found = 0;
	for (unsigned i = 0; i < 64; i++)
		found += st[i] == DYNEMB_ST_FOUND;
	cr_expect_eq(found, 0, "the new table starts empty (%u found)", found);
	put4(b, tb2, 8); /* the new one works */
	dynemb_close(b);
	/* and it drops plainly once nobody holds it */
	cr_expect_eq(dynemb_drop_table(a, "held", NULL), 0, "%s", dynemb_strerror(-EBUSY));
	/* a forced drop again, right before a crash: the catalog write was the commit point */
	b = conn_named(&d, "holder-b2");
	cr_assert_eq(dynemb_open(b, &s, &tb), 0);
	put4(b, tb, 64);
	cr_assert_eq(dynemb_drop_table_flags(a, "held", DYNEMB_DROP_FORCE, NULL), 0);
	dynemb_close(a);
	kill(d.pid, SIGKILL);
	waitpid(d.pid, NULL, 0);
	dynemb_close(b);

	dmn_start(&d, true, NULL);
	a = conn(&d);
	cr_expect_eq(dynemb_drop_table(a, "held", NULL), -ENOENT, "the forced drop did not last");
	cr_expect_eq(present(a, "held", 64), 0, "a table of that name starts empty");
	dynemb_close(a);
	dmn_stop(&d);
	dmn_cleanup(&d);
}

struct churn {
	dynemb_client *c;
	int t;
	int err;          /* the first error */
	bool named;       /* its text (thread-local) names the dropped table */
	uint64_t rounds;
	int started;      /* atomic */
};

/* Insert fresh keys until a call fails: keeps the evictor busy on the table. */
static void *churn_main(void *arg)
{
	struct churn *ch = arg;
	enum { B = 1024, DIM = 64 };
	static uint64_t keys[B];
	static float out[B * DIM];
	for (uint64_t k = 1; !ch->err; ch->rounds++) {
		for (unsigned i = 0; i < B; i++)
			keys[i] = k++;
		ch->err = dynemb_lookup(ch->c, ch->t, keys, B, out, NULL, 0, ch->rounds + 1);
		if (ch->rounds == 64)
			__atomic_store_n(&ch->started, 1, __ATOMIC_RELEASE);
	}
	ch->named = dropped_named(ch->err, "hot");
	return NULL;
}

Test(quota, forced_drop_of_an_evicting_table_while_it_evicts, .timeout = 180)
{
	struct dmn d = { 0 };
	dmn_start(&d, true, NULL);
	struct dynemb_table_spec s = evict_spec("hot", true);
	struct churn ch = { .c = conn_named(&d, "churner") };
	cr_assert_eq(dynemb_open(ch.c, &s, &ch.t), 0);
	pthread_t th;
	cr_assert_eq(pthread_create(&th, NULL, churn_main, &ch), 0);
	while (!__atomic_load_n(&ch.started, __ATOMIC_ACQUIRE))
		usleep(1000);
	dynemb_client *a = conn_named(&d, "dropper");
	struct dynemb_stats st;
	cr_assert_eq(dynemb_stats_by_name(a, "hot", &st), 0);
	cr_expect_gt(st.evicted, 0, "the evictor is at work on the table");
	int err = dynemb_drop_table_flags(a, "hot", DYNEMB_DROP_FORCE, NULL);
	cr_assert_eq(err, 0, "forced drop while evicting: %s", dynemb_strerror(err));
	pthread_join(th, NULL);
	cr_expect(ch.err == -EIDRM && ch.named, "the churner's error: %d (named: %d)", ch.err,
		  ch.named);
	cr_expect(!has_file(d.data, "tier-"), "the dropped table's disk tier file went");
	dynemb_close(ch.c);
	/* the name again: empty, nothing restored from the old tier, and it evicts */
	int t;
	cr_assert_eq(dynemb_open(a, &s, &t), 0);
	uint64_t done;
	cr_assert_eq(fill(a, t, 65536, &done), 0);
	cr_assert_eq(dynemb_stats(a, t, &st), 0);
	cr_expect_eq(st.restored_from_tier, 0);
	cr_expect_gt(st.evicted, 0);
	dynemb_close(a);
	dmn_stop(&d);
	dmn_cleanup(&d);
}

Test(quota, dynembctl_drop_force, .timeout = 60)
{
	const char *ctl = getenv("DYNEMBCTL");
	if (!ctl)
		cr_skip_test("DYNEMBCTL is not set (meson sets it)");
	struct dmn d = { 0 };
	dmn_start(&d, false, NULL);
	dynemb_client *c = conn_named(&d, "cli-holder");
	int t;
	cr_assert_eq(open_as(c, "cli", 4, &t), 0);
	char cmd[400], out[512] = "";
	snprintf(cmd, sizeof cmd, "'%s' --socket '%s' drop cli 2>&1", ctl, d.sock);
	FILE *p = popen(cmd, "r");
	cr_assert_not_null(p);
	size_t n = fread(out, 1, sizeof out - 1, p);
	out[n] = 0;
	int st = pclose(p);
	cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 1, "a held table: %s", out);
	cr_expect(strstr(out, "cli-holder"), "the holder is named: %s", out);
	snprintf(cmd, sizeof cmd, "'%s' --socket '%s' --json drop --force cli 2>&1", ctl, d.sock);
	p = popen(cmd, "r");
	n = fread(out, 1, sizeof out - 1, p);
	out[n] = 0;
	st = pclose(p);
	cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "dynembctl drop --force: %s", out);
	cr_expect(strstr(out, "\"forced\": true"), "%s", out);
	uint64_t k = 1, req = 0;
	float v[4];
	int err = dynemb_submit_lookup(c, t, &k, 1, DYNEMB_READONLY, 0, &req);
	cr_expect(dropped_named(err, "cli"), "async read-only: %d %s", err, dynemb_strerror(err));
	err = dynemb_lookup(c, t, &k, 1, v, NULL, 0, 0);
	cr_expect(dropped_named(err, "cli"), "%d %s", err, dynemb_strerror(err));
	dynemb_close(c);
	dmn_stop(&d);
	dmn_cleanup(&d);
}

/* dmn_start without a data_dir, with an export directory exp (cap bytes) in d's. */
static void dmn_start_exports(struct dmn *d, char *exp, size_t cap)
{
	dmn_dirs(d);
	snprintf(exp, cap, "%s/exp", d->dir);
	cr_assert_eq(mkdir(exp, 0777), 0);
	dmn_start(d, false, (const char *const[]){ "--export-dir", exp, NULL });
}

struct exporter {
	const struct dmn *d;
	char path[200];
	int err;
	int progressed;   /* atomic: the first PROGRESS came */
};

static int export_progress(void *ctx, const struct dynemb_progress *p)
{
	(void)p;
	__atomic_store_n(&((struct exporter *)ctx)->progressed, 1, __ATOMIC_RELEASE);
	return 0;
}

static void *export_main(void *arg)
{
	struct exporter *x = arg;
	dynemb_client *c = conn_named(x->d, "exporter");
	x->err = dynemb_export(c, "big", x->path, export_progress, x, NULL, NULL);
	dynemb_close(c);
	return NULL;
}

/* An export of the table runs when a forced drop comes: the drop cancels it (or, when it
 * was just ending, waits for it) and then frees the table; nothing crashes (ASan). */
Test(quota, forced_drop_cancels_a_job_on_the_table, .timeout = 180)
{
	struct dmn d = { 0 };
	char exp[160];
	dmn_start_exports(&d, exp, sizeof exp);
	dynemb_client *b = conn_named(&d, "holder");
	int t;
	cr_assert_eq(open_as(b, "big", 64, &t), 0);
	uint64_t done;
	cr_assert_eq(fill(b, t, 1 << 18, &done), 0);
	struct exporter x = { .d = &d };
	snprintf(x.path, sizeof x.path, "%s/big.dexp", exp);
	pthread_t th;
	cr_assert_eq(pthread_create(&th, NULL, export_main, &x), 0);
	while (!__atomic_load_n(&x.progressed, __ATOMIC_ACQUIRE))
		usleep(200);
	dynemb_client *a = conn_named(&d, "dropper");
	int err = dynemb_drop_table(a, "big", NULL);
	cr_expect_eq(err, -EBUSY, "a plain drop: %d", err);
	err = dynemb_drop_table_flags(a, "big", DYNEMB_DROP_FORCE, NULL);
	cr_assert_eq(err, 0, "forced drop during an export: %s", dynemb_strerror(err));
	pthread_join(th, NULL);
	cr_expect(x.err == -ECANCELED || x.err == 0, "the export: %d", x.err);
	cr_log_info("the export ended %d (%s)\n", x.err,
		    x.err == -ECANCELED ? "cancelled by the drop" : "before the drop's cancel");
	cr_expect_eq(dynemb_drop_table(a, "big", NULL), -ENOENT);
	dynemb_close(a);
	dynemb_close(b);
	dmn_stop(&d);
	dmn_cleanup(&d);
}

#ifdef DE_FAULT_INJECTION /* the test below needs DYNEMBD_TEST_FORCE_WAIT_MS */
struct topker {
	const struct dmn *d;
	int started, err;
};

/* Top-k queries over "slow" that take the slow pool a while (its own connection). */
static void *topk_main(void *arg)
{
	struct topker *x = arg;
	enum { NQ = 256, DIM = 64, K = 4 };
	static float q[NQ * DIM];
	static uint64_t keys[NQ * K];
	static float scores[NQ * K];
	static uint32_t found[NQ];
	for (unsigned i = 0; i < NQ * DIM; i++)
		q[i] = (float)(i % 7) - 3.0f;
	dynemb_client *c = NULL;
	struct dynemb_connect_opts o = { .name = "topk", .timeout_ms = 60000 };
	x->err = dynemb_connect(x->d->sock, &o, &c);
	int t = -1;
	if (!x->err)
		x->err = open_as(c, "slow", DIM, &t);
	__atomic_store_n(&x->started, 1, __ATOMIC_RELEASE);
	for (int r = 0; r < 4 && !x->err; r++)
		x->err = dynemb_topk(c, t, q, NQ, K, DYNEMB_METRIC_DOT, keys, scores, found);
	if (c)
		dynemb_close(c);
	return NULL;
}

/* A forced drop that gave up waiting for a top-k job (the daemon's wait cut to 1 ms in
 * this test build) keeps the table; neither a plain drop nor another forced one frees it
 * while the job still runs (the revoked handles took the table's refs to 0, which used to
 * let a plain drop free it under the job: a use after free), and a forced drop after the
 * job ended drops it. */
#endif

Test(quota, a_forced_drop_that_timed_out_is_not_undone_by_a_plain_one, .timeout = 180)
{
#ifndef DE_FAULT_INJECTION
	cr_skip_test("needs a fault-injection build (DYNEMBD_TEST_FORCE_WAIT_MS)");
#else
	struct dmn d = { 0 };
	setenv("DYNEMBD_TEST_FORCE_WAIT_MS", "1", 1);
	dmn_start(&d, false, NULL);
	unsetenv("DYNEMBD_TEST_FORCE_WAIT_MS");
	dynemb_client *a = conn_named(&d, "dropper");
	int t;
	cr_assert_eq(open_as(a, "slow", 64, &t), 0);
	uint64_t done;
	cr_assert_eq(fill(a, t, 1 << 18, &done), 0);
	dynemb_close(a);
	struct topker x = { .d = &d };
	pthread_t th;
	cr_assert_eq(pthread_create(&th, NULL, topk_main, &x), 0);
	while (!__atomic_load_n(&x.started, __ATOMIC_ACQUIRE))
		usleep(200);
	usleep(100000); /* its first request is on the slow pool now */
	a = conn_named(&d, "dropper");
	int err = dynemb_drop_table_flags(a, "slow", DYNEMB_DROP_FORCE, NULL);
	bool timed_out = err == -ETIMEDOUT;
	if (timed_out) {
		err = dynemb_drop_table(a, "slow", NULL);
		cr_expect_eq(err, -EBUSY, "a plain drop after a forced one gave up: %d (%s)", err,
			     dynemb_strerror(err));
		cr_expect(strstr(dynemb_strerror(err), "--force again"), "%s",
			  dynemb_strerror(err));
	} else {
		cr_log_warn("the top-k job ended before the forced drop: %d", err);
	}
	pthread_join(th, NULL);
	cr_expect(x.err == -EIDRM || x.err == 0, "the top-k client: %d", x.err);
	if (timed_out) {
		err = dynemb_drop_table_flags(a, "slow", DYNEMB_DROP_FORCE, NULL);
		cr_expect_eq(err, 0, "the forced drop once the job ended: %s", dynemb_strerror(err));
	}
	cr_expect_eq(dynemb_drop_table(a, "slow", NULL), -ENOENT);
	dynemb_close(a);
	dmn_stop(&d);
	dmn_cleanup(&d);
#endif
}

/* A plain drop refused because a job may use the table leaves the table's eviction as it
 * was: it used to take the table out of the evictor and put it back (a new evictor entry:
 * its counters started again from 0) before it found the job. */
Test(quota, a_drop_refused_for_a_job_keeps_the_eviction_state, .timeout = 180)
{
	struct dmn d = { 0 };
	char exp[160];
	dmn_start_exports(&d, exp, sizeof exp);
	dynemb_client *c = conn(&d);
	struct dynemb_table_spec s = evict_spec("big", false);
	s.eviction.budget_bytes = 48 * MiB;
	int t;
	cr_assert_eq(dynemb_open(c, &s, &t), 0);
	uint64_t done;
	cr_assert_eq(fill(c, t, 1 << 18, &done), 0);
	struct dynemb_stats before, after;
	cr_assert_eq(dynemb_stats(c, t, &before), 0);
	cr_assert_gt(before.evicted, 0, "the evictor worked on the table");
	dynemb_close(c);
	struct exporter x = { .d = &d };
	snprintf(x.path, sizeof x.path, "%s/big.dexp", exp);
	pthread_t th;
	cr_assert_eq(pthread_create(&th, NULL, export_main, &x), 0);
	while (!__atomic_load_n(&x.progressed, __ATOMIC_ACQUIRE))
		usleep(200);
	c = conn(&d);
	int err = dynemb_drop_table(c, "big", NULL);
	pthread_join(th, NULL);
	if (err == 0) {
		cr_log_warn("the export ended before the drop came: nothing to check");
	} else {
		cr_expect_eq(err, -EBUSY, "%s", dynemb_strerror(err));
		cr_assert_eq(dynemb_open(c, &s, &t), 0);
		cr_assert_eq(dynemb_stats(c, t, &after), 0);
		cr_expect_geq(after.evicted, before.evicted,
			      "the evictor's count went back from %llu to %llu: the table left and "
			      "rejoined it", (unsigned long long)before.evicted,
			      (unsigned long long)after.evicted);
	}
	dynemb_close(c);
	dmn_stop(&d);
	dmn_cleanup(&d);
}
