/*
 * test_tenant.c — one client cannot read, write, export or import another's tables, and
 * the daemon's file work is the client's: the real dynembd (run as root, as CI runs the
 * suite) and clients forked with setresuid to other uids.
 *
 *   default    outside every [namespace] a table is its creator's: another uid gets
 *              -EACCES for open, export, snapshot, the same text whether or not the
 *              table exists (root: -ENOENT for a missing one)
 *   namespace  the rules of [namespace] sections: read-only sharing (writes -EACCES and
 *              the rows unchanged), a private prefix (open and create refused alike, no
 *              config echoed), a group's right
 *   files      a symlink planted at the export's path.tmp is never followed (the target
 *              unchanged), the export file is owned by the client, a directory only root
 *              may write is refused, an import of a root-only file or of a symlink is
 *              refused
 *   restart    the owner is in the catalog: after a restart the creator still has its
 *              rights and another uid still has none; a version 1 catalog (no owners)
 *              loads with the daemon (root) owning its tables, one with a non-zero
 *              reserved field is refused (exit 3)
 * Every test SKIPs when not run as root (it needs setresuid and a root daemon).
 * Each child reports what it saw through a pipe; only the parent asserts.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dynemb.h"
#include "daemon_util.h"

#define UID_A 60001u
#define UID_B 60002u
#define UID_C 60003u
#define GID_TEAM 60010u
#define DIM 4u

static pid_t d_pid = -1;
static char d_sock[108], d_dir[64], d_log[128], d_cfg[128], d_exp[128], d_data[128];

static void need_root(void)
{
	if (geteuid() != 0)
		cr_skip_test("needs root: it runs clients as other uids and the daemon as root");
}

static void write_config(void)
{
	FILE *f = fopen(d_cfg, "w");
	cr_assert_not_null(f);
	fprintf(f, "[namespace shared]\nprefix = shared/\nopen = *\nwrite = owner\n"
		   "export = owner\nimport = owner\n"
		   "[namespace tenant-a]\nprefix = tenant-a/\nopen = %u, @%u\nwrite = %u\n"
		   "export = %u\nimport = %u\nsnapshot = %u\ncreate = %u\n"
		   "[persistence]\nexport_dir = %s\ndata_dir = %s\n",
		UID_A, GID_TEAM, UID_A, UID_A, UID_A, UID_A, UID_A, d_exp, d_data);
	fclose(f);
}

static void start(void)
{
	char allow[64];
	snprintf(allow, sizeof allow, "%u,%u,%u,%u", (unsigned)geteuid(), UID_A, UID_B, UID_C);
	const char *extra[] = { "--config", d_cfg, "--allow-uid", allow, NULL };
	const char *argv[40];
	daemon_argv(argv, 40, daemon_bin(), d_sock, "info", NULL, extra);
	d_pid = daemon_spawn(argv, SIGKILL, d_log);
	daemon_wait_listen(d_pid, d_sock, 10, d_log);
}

static void stop(void)
{
	if (d_pid > 0)
		daemon_terminate(d_pid, 10);
	d_pid = -1;
}

static void setup(void)
{
	need_root();
	snprintf(d_dir, sizeof d_dir, "/tmp/de-tenant-XXXXXX");
	cr_assert_not_null(mkdtemp(d_dir));
	chmod(d_dir, 0755);
	snprintf(d_sock, sizeof d_sock, "%s/sock", d_dir);
	snprintf(d_log, sizeof d_log, "%s/log", d_dir);
	snprintf(d_cfg, sizeof d_cfg, "%s/dynembd.ini", d_dir);
	snprintf(d_exp, sizeof d_exp, "%s/exp", d_dir);
	snprintf(d_data, sizeof d_data, "%s/data", d_dir);
	cr_assert_eq(mkdir(d_exp, 0755), 0);
	chmod(d_exp, 01777); /* like /tmp: every client may create files there */
	write_config();
	start();
}

static void teardown(void)
{
	if (geteuid() != 0)
		return;
	stop();
	daemon_show_log_if_asked(d_log);
	char cmd[200];
	snprintf(cmd, sizeof cmd, "rm -rf %s", d_dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", d_dir);
}

/* ---- clients as other users ------------------------------------------------------- */

#define MAXR 24
struct seen {
	int n;
	int err[MAXR];
	char msg[MAXR][600];
	float vals[16];
};

static void note(struct seen *s, int err)
{
	if (s->n == MAXR)
		return;
	s->err[s->n] = err;
	snprintf(s->msg[s->n], sizeof s->msg[0], "%s", dynemb_strerror(err));
	s->n++;
}

struct job {
	const char *name;    /* table */
	uint64_t seed;
	const char *path;    /* export / import */
	const char *link;    /* symlink to plant first (at link, pointing to path2) */
	const char *path2;
};

typedef void (*child_fn)(struct seen *s, dynemb_client *c, const struct job *j);

/* Run fn as uid/gid (no supplementary groups) in a child connected to the daemon. */
static struct seen as_user(uid_t uid, gid_t gid, child_fn fn, const struct job *j)
{
	int p[2];
	cr_assert_eq(pipe(p), 0);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		close(p[0]);
		static struct seen s;
		memset(&s, 0, sizeof s);
		if (setgroups(0, NULL) || setresgid(gid, gid, gid) || setresuid(uid, uid, uid))
			_exit(3);
		dynemb_client *c = NULL;
		struct dynemb_connect_opts o = { .name = "tenant", .timeout_ms = 10000 };
		int err = dynemb_connect(d_sock, &o, &c);
		if (err) {
			note(&s, err);
		} else {
			fn(&s, c, j);
			dynemb_close(c);
		}
		const char *b = (const char *)&s;
		for (size_t off = 0; off < sizeof s;) {
			ssize_t w = write(p[1], b + off, sizeof s - off);
			if (w <= 0)
				_exit(4);
			off += (size_t)w;
		}
		_exit(0);
	}
	close(p[1]);
	static struct seen s;
	memset(&s, 0, sizeof s);
	size_t got = 0;
	while (got < sizeof s) {
		ssize_t r = read(p[0], (char *)&s + got, sizeof s - got);
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	close(p[0]);
	int st;
	waitpid(pid, &st, 0);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0 && got == sizeof s,
		  "the client as uid %u failed (status %d)", (unsigned)uid, st);
	return s;
}

static struct dynemb_table_spec spec(const char *name, uint64_t seed)
{
	return (struct dynemb_table_spec){ .name = name, .dim = DIM, .init = DYNEMB_ZEROS,
					   .seed = seed };
}

static const uint64_t KEYS[4] = { 11, 22, 33, 44 };

static float val(size_t i, uint32_t j)
{
	return (float)(i * 10 + j) + 0.5f;
}

/* open (create) j->name and write KEYS */
static void c_create_write(struct seen *s, dynemb_client *c, const struct job *j)
{
	struct dynemb_table_spec sp = spec(j->name, j->seed);
	int t = -1;
	int err = dynemb_open(c, &sp, &t);
	note(s, err);
	if (err)
		return;
	float v[4 * DIM];
	for (size_t i = 0; i < 4; i++)
		for (uint32_t d = 0; d < DIM; d++)
			v[i * DIM + d] = val(i, d);
	note(s, dynemb_update(c, t, KEYS, 4, v, 1, NULL));
}

static void c_open(struct seen *s, dynemb_client *c, const struct job *j)
{
	struct dynemb_table_spec sp = spec(j->name, j->seed);
	int t = -1;
	note(s, dynemb_open(c, &sp, &t));
}

/* open j->name, read KEYS (read-only lookup), then try every kind of write */
static void c_read_then_write(struct seen *s, dynemb_client *c, const struct job *j)
{
	struct dynemb_table_spec sp = spec(j->name, j->seed);
	int t = -1;
	int err = dynemb_open(c, &sp, &t);
	note(s, err);
	if (err)
		return;
	note(s, dynemb_lookup(c, t, KEYS, 4, s->vals, NULL, DYNEMB_READONLY, 0));
	float v[4 * DIM];
	for (size_t i = 0; i < 4 * DIM; i++)
		v[i] = -7.0f;
	note(s, dynemb_update(c, t, KEYS, 4, v, 2, NULL));       /* 2 */
	size_t erased = 0;
	note(s, dynemb_erase(c, t, KEYS, 4, &erased));          /* 3 */
	const uint64_t fresh = 999;
	float out[DIM];
	note(s, dynemb_lookup(c, t, &fresh, 1, out, NULL, 0, 0)); /* 4: creating */
}

static void c_export(struct seen *s, dynemb_client *c, const struct job *j)
{
	if (j->link && symlink(j->path2, j->link))
		note(s, -errno);
	note(s, dynemb_export(c, j->name, j->path, NULL, NULL, NULL, NULL));
}

static void c_import(struct seen *s, dynemb_client *c, const struct job *j)
{
	if (j->link && symlink(j->path2, j->link))
		note(s, -errno);
	note(s, dynemb_import(c, j->name, j->path, 0, NULL, NULL, NULL));
}

static void c_snapshot(struct seen *s, dynemb_client *c, const struct job *j)
{
	note(s, dynemb_snapshot(c, j->name && *j->name ? j->name : NULL, false, NULL, NULL, NULL));
}

static void c_plant(struct seen *s, dynemb_client *c, const struct job *j)
{
	(void)c;
	note(s, symlink(j->path2, j->link) ? -errno : 0);
}

/* The refusal text with the table name cut out: the same for two names means the text
 * says nothing about which one exists. */
static void without_name(char *out, size_t cap, const char *msg, const char *name)
{
	const char *at = strstr(msg, name);
	if (!at) {
		snprintf(out, cap, "%s", msg);
		return;
	}
	snprintf(out, cap, "%.*s<name>%s", (int)(at - msg), msg, at + strlen(name));
}

static void root_values(const char *name, float *out)
{
	dynemb_client *c = NULL;
	struct dynemb_connect_opts o = { .name = "root", .timeout_ms = 10000 };
	cr_assert_eq(dynemb_connect(d_sock, &o, &c), 0);
	struct dynemb_table_spec sp = spec(name, 7);
	int t;
	cr_assert_eq(dynemb_open(c, &sp, &t), 0, "%s", dynemb_strerror(-1));
	cr_assert_eq(dynemb_lookup(c, t, KEYS, 4, out, NULL, DYNEMB_READONLY, 0), 0);
	dynemb_close(c);
}

/* ---- default: a table is its creator's ---------------------------------------------- */

TestSuite(tenant, .init = setup, .fini = teardown, .timeout = 60);

Test(tenant, default_is_owner_only)
{
	struct job j = { .name = "plain", .seed = 7 };
	struct seen s = as_user(UID_A, UID_A, c_create_write, &j);
	cr_assert_eq(s.err[0], 0, "A creates: %s", s.msg[0]);
	cr_assert_eq(s.err[1], 0, "A writes: %s", s.msg[1]);

	s = as_user(UID_B, UID_B, c_open, &j);
	cr_expect_eq(s.err[0], -EACCES, "B opens A's table: %s", s.msg[0]);
	cr_expect(strstr(s.msg[0], "uid 60002 has no 'open' right on table 'plain'"), "%s",
		  s.msg[0]);

	/* export and snapshot: the same refusal for A's table and for no table at all */
	char exp_path[200];
	snprintf(exp_path, sizeof exp_path, "%s/b.dexp", d_exp);
	struct job e1 = { .name = "plain", .path = exp_path };
	struct job e2 = { .name = "plain-nosuch", .path = exp_path };
	struct seen x1 = as_user(UID_B, UID_B, c_export, &e1);
	struct seen x2 = as_user(UID_B, UID_B, c_export, &e2);
	cr_expect_eq(x1.err[0], -EACCES, "B exports A's table: %s", x1.msg[0]);
	cr_expect_eq(x2.err[0], -EACCES, "B exports a missing table: %s", x2.msg[0]);
	char m1[600], m2[600];
	without_name(m1, sizeof m1, x1.msg[0], "plain");
	without_name(m2, sizeof m2, x2.msg[0], "plain-nosuch");
	cr_expect_str_eq(m1, m2, "the refusal tells which table exists:\n%s\n%s", x1.msg[0], x2.msg[0]);
	cr_expect(strstr(x1.msg[0], "no 'export' right"), "%s", x1.msg[0]);
	cr_expect_eq(access(exp_path, F_OK), -1, "nothing was exported");
	s = as_user(UID_B, UID_B, c_snapshot, &e1);
	cr_expect_eq(s.err[0], -EACCES, "B snapshots A's table: %s", s.msg[0]);
	s = as_user(UID_B, UID_B, c_snapshot, &(struct job){ .name = "" });
	cr_expect_eq(s.err[0], -EACCES, "B snapshots every table: %s", s.msg[0]);
	cr_expect(strstr(s.msg[0], "name the table") && !strstr(s.msg[0], "plain"), "%s",
		  s.msg[0]);

	/* the owner keeps its rights; root sees that a table is missing */
	s = as_user(UID_A, UID_A, c_snapshot, &e1);
	cr_expect_eq(s.err[0], 0, "A snapshots its table: %s", s.msg[0]);
	dynemb_client *c = NULL;
	cr_assert_eq(dynemb_connect(d_sock, NULL, &c), 0);
	cr_expect_eq(dynemb_export(c, "plain-nosuch", exp_path, NULL, NULL, NULL, NULL), -ENOENT);
	dynemb_close(c);
}

/* ---- namespaces ------------------------------------------------------------------- */

Test(tenant, shared_namespace_reads_but_never_writes)
{
	struct job j = { .name = "shared/emb", .seed = 7 };
	struct seen s = as_user(UID_A, UID_A, c_create_write, &j);
	cr_assert_eq(s.err[0], 0, "%s", s.msg[0]);
	cr_assert_eq(s.err[1], 0, "%s", s.msg[1]);

	s = as_user(UID_B, UID_B, c_read_then_write, &j);
	cr_assert_eq(s.err[0], 0, "open = * lets B open: %s", s.msg[0]);
	cr_assert_eq(s.err[1], 0, "B reads: %s", s.msg[1]);
	for (size_t i = 0; i < 4; i++)
		for (uint32_t d = 0; d < DIM; d++)
			cr_expect_eq(s.vals[i * DIM + d], val(i, d), "B reads A's row %zu", i);
	cr_expect_eq(s.err[2], -EACCES, "B's update: %s", s.msg[2]);
	cr_expect_eq(s.err[3], -EACCES, "B's erase: %s", s.msg[3]);
	cr_expect_eq(s.err[4], -EACCES, "B's creating lookup: %s", s.msg[4]);
	cr_expect(strstr(s.msg[2], "lacks the right"), "%s", s.msg[2]);

	float now[4 * DIM];
	root_values("shared/emb", now);
	for (size_t i = 0; i < 4; i++)
		for (uint32_t d = 0; d < DIM; d++)
			cr_expect_eq(now[i * DIM + d], val(i, d), "A's row %zu after B's writes", i);

	char path[200];
	snprintf(path, sizeof path, "%s/shared.dexp", d_exp);
	s = as_user(UID_B, UID_B, c_export, &(struct job){ .name = "shared/emb", .path = path });
	cr_expect_eq(s.err[0], -EACCES, "export = owner: %s", s.msg[0]);
	cr_expect(strstr(s.msg[0], "[namespace shared] (prefix 'shared/')"), "%s", s.msg[0]);
	s = as_user(UID_A, UID_A, c_export, &(struct job){ .name = "shared/emb", .path = path });
	cr_expect_eq(s.err[0], 0, "the owner exports: %s", s.msg[0]);
}

Test(tenant, private_namespace_hides_its_tables)
{
	struct job j = { .name = "tenant-a/x", .seed = 123456789 };
	struct seen s = as_user(UID_A, UID_A, c_create_write, &j);
	cr_assert_eq(s.err[0], 0, "%s", s.msg[0]);

	/* B: refused alike for a table that exists (asked with another seed: no config in
	 * the text) and for one that does not (B may not create it either) */
	struct seen x1 = as_user(UID_B, UID_B, c_open, &(struct job){ .name = "tenant-a/x", .seed = 5 });
	struct seen x2 = as_user(UID_B, UID_B, c_open, &(struct job){ .name = "tenant-a/y", .seed = 5 });
	cr_expect_eq(x1.err[0], -EACCES, "%s", x1.msg[0]);
	cr_expect_eq(x2.err[0], -EACCES, "%s", x2.msg[0]);
	cr_expect(!strstr(x1.msg[0], "seed") && !strstr(x1.msg[0], "123456789"), "%s", x1.msg[0]);
	char m1[600], m2[600];
	without_name(m1, sizeof m1, x1.msg[0], "tenant-a/x");
	without_name(m2, sizeof m2, x2.msg[0], "tenant-a/y");
	cr_expect_str_eq(m1, m2, "the refusal tells which table exists:\n%s\n%s", x1.msg[0], x2.msg[0]);

	/* a member of @GID_TEAM may open (read) but not write */
	s = as_user(UID_C, GID_TEAM, c_read_then_write, &(struct job){ .name = "tenant-a/x",
									.seed = 123456789 });
	cr_expect_eq(s.err[0], 0, "open = @%u: %s", GID_TEAM, s.msg[0]);
	cr_expect_eq(s.err[2], -EACCES, "write = A only: %s", s.msg[2]);
	s = as_user(UID_C, UID_C, c_open, &(struct job){ .name = "tenant-a/x", .seed = 123456789 });
	cr_expect_eq(s.err[0], -EACCES, "not in the group: %s", s.msg[0]);

	/* A asks with another config: A has the right, so it is told what differs */
	s = as_user(UID_A, UID_A, c_open, &(struct job){ .name = "tenant-a/x", .seed = 5 });
	cr_expect_eq(s.err[0], -EEXIST, "%s", s.msg[0]);
}

/* ---- files the daemon writes and reads ----------------------------------------------- */

static void write_secret(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, "root secret\n", 12), 12);
	close(fd);
}

static void expect_secret(const char *path)
{
	char b[64] = { 0 };
	int fd = open(path, O_RDONLY);
	cr_assert_geq(fd, 0);
	ssize_t n = read(fd, b, sizeof b - 1);
	close(fd);
	struct stat st;
	cr_assert_eq(stat(path, &st), 0);
	cr_expect(n == 12 && !memcmp(b, "root secret\n", 12), "the symlink's target was written");
	cr_expect(st.st_uid == 0 && (st.st_mode & 07777) == 0600, "its owner or mode changed");
}

Test(tenant, export_never_follows_a_planted_symlink)
{
	char secret[200], out[240], tmp[256], out2[240], tmp2[256];
	snprintf(secret, sizeof secret, "%s/secret", d_dir); /* in a 0755 root directory */
	write_secret(secret);
	struct job j = { .name = "a-exp", .seed = 7 };
	struct seen s = as_user(UID_A, UID_A, c_create_write, &j);
	cr_assert_eq(s.err[0], 0, "%s", s.msg[0]);

	/* A plants the symlink itself in its own directory (no sticky bit, so no
	 * protected_symlinks to stop a root daemon from following it), then exports there */
	char adir[160];
	snprintf(adir, sizeof adir, "%s/a", d_exp);
	cr_assert_eq(mkdir(adir, 0755), 0);
	cr_assert_eq(chown(adir, UID_A, UID_A), 0);
	snprintf(out, sizeof out, "%s/out.dexp", adir);
	snprintf(tmp, sizeof tmp, "%s.tmp", out);
	s = as_user(UID_A, UID_A, c_export,
		    &(struct job){ .name = "a-exp", .path = out, .link = tmp, .path2 = secret });
	cr_assert_eq(s.n, 1, "planting failed: %s", s.msg[0]);
	expect_secret(secret);
	struct stat st;
	cr_expect_eq(lstat(out, &st), 0);
	cr_expect(S_ISREG(st.st_mode), "the export is a regular file");

	/* C plants it in the sticky directory, where A cannot remove it: A's export fails */
	snprintf(out2, sizeof out2, "%s/out2.dexp", d_exp);
	snprintf(tmp2, sizeof tmp2, "%s.tmp", out2);
	s = as_user(UID_C, UID_C, c_plant, &(struct job){ .link = tmp2, .path2 = secret });
	cr_assert_eq(s.err[0], 0, "%s", s.msg[0]);
	s = as_user(UID_A, UID_A, c_export, &(struct job){ .name = "a-exp", .path = out2 });
	cr_expect_neq(s.err[0], 0, "export over another user's symlink");
	expect_secret(secret);
	cr_expect_eq(lstat(tmp2, &st), 0);
	cr_expect(S_ISLNK(st.st_mode), "C's symlink is left alone");
}

Test(tenant, export_and_import_run_as_the_client)
{
	struct job j = { .name = "a-files", .seed = 7 };
	struct seen s = as_user(UID_A, UID_A, c_create_write, &j);
	cr_assert_eq(s.err[0], 0, "%s", s.msg[0]);
	char mine[200], rootdir[200], inroot[240], rootfile[200], link[200];
	snprintf(mine, sizeof mine, "%s/mine.dexp", d_exp);
	s = as_user(UID_A, UID_A, c_export, &(struct job){ .name = "a-files", .path = mine });
	cr_assert_eq(s.err[0], 0, "%s", s.msg[0]);
	struct stat st;
	cr_assert_eq(stat(mine, &st), 0);
	cr_expect_eq(st.st_uid, UID_A, "the export file belongs to the client, not uid %u",
		     (unsigned)st.st_uid);
	cr_expect_eq(st.st_gid, UID_A);

	/* a directory under export_dir that only root may write */
	snprintf(rootdir, sizeof rootdir, "%s/rootonly", d_exp);
	cr_assert_eq(mkdir(rootdir, 0755), 0);
	snprintf(inroot, sizeof inroot, "%s/x.dexp", rootdir);
	s = as_user(UID_A, UID_A, c_export, &(struct job){ .name = "a-files", .path = inroot });
	cr_expect_eq(s.err[0], -EACCES, "export into root's directory: %s", s.msg[0]);
	cr_expect_eq(access(inroot, F_OK), -1);

	/* a root-only export file: A may not read it, directly or through a symlink */
	snprintf(rootfile, sizeof rootfile, "%s/root.dexp", d_exp);
	dynemb_client *c = NULL;
	cr_assert_eq(dynemb_connect(d_sock, NULL, &c), 0);
	cr_assert_eq(dynemb_export(c, "a-files", rootfile, NULL, NULL, NULL, NULL), 0);
	dynemb_close(c);
	cr_assert_eq(chmod(rootfile, 0600), 0);
	cr_assert_eq(stat(rootfile, &st), 0);
	cr_assert_eq(st.st_uid, 0);
	s = as_user(UID_A, UID_A, c_import, &(struct job){ .name = "a-files", .path = rootfile });
	cr_expect_eq(s.err[0], -EACCES, "import of root's 0600 file: %s", s.msg[0]);
	snprintf(link, sizeof link, "%s/link.dexp", d_exp);
	s = as_user(UID_A, UID_A, c_import, &(struct job){ .name = "a-files", .path = link,
							   .link = link, .path2 = rootfile });
	cr_assert_eq(s.n, 1, "planting failed: %s", s.msg[0]);
	cr_expect_eq(s.err[0], -ELOOP, "import through a symlink: %s", s.msg[0]);
	/* its own file imports */
	s = as_user(UID_A, UID_A, c_import, &(struct job){ .name = "a-files", .path = mine });
	cr_expect_eq(s.err[0], 0, "%s", s.msg[0]);
}

/* ---- the owner survives a restart ---------------------------------------------------- */

Test(tenant, owner_is_in_the_catalog)
{
	struct job j = { .name = "kept", .seed = 7 };
	struct seen s = as_user(UID_A, UID_A, c_create_write, &j);
	cr_assert_eq(s.err[0], 0, "%s", s.msg[0]);
	stop();
	start();
	s = as_user(UID_B, UID_B, c_open, &j);
	cr_expect_eq(s.err[0], -EACCES, "B after the restart: %s", s.msg[0]);
	s = as_user(UID_A, UID_A, c_read_then_write, &j);
	cr_expect_eq(s.err[0], 0, "A after the restart: %s", s.msg[0]);
	cr_expect_eq(s.err[2], 0, "A still writes: %s", s.msg[2]);
}

/* CRC32C (Castagnoli, reflected), bit by bit: the reference for rewriting a CATALOG */
static uint32_t crc32c(const unsigned char *b, size_t n)
{
	uint32_t c = 0xffffffffu;
	for (size_t i = 0; i < n; i++) {
		c ^= b[i];
		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ (0x82f63b78u & (0u - (c & 1u)));
	}
	return c ^ 0xffffffffu;
}

/* Rewrite data_dir/CATALOG (any version) as format version `version`: every owner field
 * (offset 4 of each 400-byte entry) zero, then owner_field in the first entry's. */
static void catalog_as(uint32_t version, uint32_t owner_field)
{
	char path[200];
	snprintf(path, sizeof path, "%s/CATALOG", d_data);
	FILE *f = fopen(path, "rb");
	cr_assert_not_null(f);
	static unsigned char b[32 + 400 * 8 + 4];
	size_t n = fread(b, 1, sizeof b, f);
	fclose(f);
	uint32_t v, count;
	memcpy(&v, b + 8, 4);
	memcpy(&count, b + 12, 4);
	static bool first = true;
	cr_assert(!first || v == 2, "the daemon writes CATALOG version 2, not %u", v);
	cr_assert_eq(n, 32 + 400 * (size_t)count + 4);
	uint32_t owner;
	memcpy(&owner, b + 32 + 4, 4);
	if (first)
		cr_assert_eq(owner, UID_A, "the first entry's owner is its creator");
	first = false;
	v = version;
	memcpy(b + 8, &v, 4);
	if (version == 1)
		memset(b + 24, 0, 8); /* version 1 has no next_id */
	for (uint32_t i = 0; i < count; i++)
		memset(b + 32 + 400 * i + 4, 0, 4);
	memcpy(b + 32 + 4, &owner_field, 4);
	uint32_t crc = crc32c(b, n - 4);
	memcpy(b + n - 4, &crc, 4);
	f = fopen(path, "wb");
	cr_assert_not_null(f);
	cr_assert_eq(fwrite(b, 1, n, f), n);
	fclose(f);
}

Test(tenant, old_catalog_tables_belong_to_the_daemon)
{
	struct job j = { .name = "legacy", .seed = 7 };
	struct seen s = as_user(UID_A, UID_A, c_create_write, &j);
	cr_assert_eq(s.err[0], 0, "%s", s.msg[0]);
	stop();
	catalog_as(1, 0);
	start();
	s = as_user(UID_A, UID_A, c_open, &j);
	cr_expect_eq(s.err[0], -EACCES, "a version 1 table is the daemon's (root's): %s", s.msg[0]);
	root_values("legacy", (float[4 * DIM]){ 0 });
	stop();
	/* damage, refused (exit 3): version 1 with something at the reserved offset, and
	 * version 2 with the owner -1 (no uid) */
	const uint32_t bad[2][2] = { { 1, UID_A }, { 2, UINT32_MAX } };
	for (int i = 0; i < 2; i++) {
		catalog_as(bad[i][0], bad[i][1]);
		const char *extra[] = { "--config", d_cfg, NULL };
		const char *argv[40];
		daemon_argv(argv, 40, daemon_bin(), d_sock, "info", NULL, extra);
		pid_t pid = daemon_spawn(argv, SIGKILL, d_log);
		int st = 0;
		cr_assert_eq(waitpid(pid, &st, 0), pid);
		cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 3, "version %u owner %u: exit status %d",
			  bad[i][0], bad[i][1], st);
	}
}

Test(tenant, export_paths_are_resolved_as_the_client)
{
	struct job j = { .name = "a-paths", .seed = 7 };
	struct seen s = as_user(UID_A, UID_A, c_create_write, &j);
	cr_assert_eq(s.err[0], 0, "%s", s.msg[0]);
	/* root's 0700 directory under export_dir, one directory in it: A learns nothing of
	 * what is in there (the same error for a directory that exists and one that does not) */
	char priv[200], there[240], yes[300], no[300];
	snprintf(priv, sizeof priv, "%s/private", d_exp);
	cr_assert_eq(mkdir(priv, 0700), 0);
	snprintf(there, sizeof there, "%s/there", priv);
	cr_assert_eq(mkdir(there, 0755), 0);
	snprintf(yes, sizeof yes, "%s/x.dexp", there);
	snprintf(no, sizeof no, "%s/nothere/x.dexp", priv);
	struct seen a = as_user(UID_A, UID_A, c_export, &(struct job){ .name = "a-paths", .path = yes });
	struct seen b = as_user(UID_A, UID_A, c_export, &(struct job){ .name = "a-paths", .path = no });
	cr_expect_eq(a.err[0], -EACCES, "%s", a.msg[0]);
	cr_expect_eq(b.err[0], -EACCES, "%s", b.msg[0]);
	cr_expect(strstr(a.msg[0], "Permission denied"), "%s", a.msg[0]);
	cr_expect_eq(access(yes, F_OK), -1);
}
