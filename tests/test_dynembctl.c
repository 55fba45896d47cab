/*
 * test_dynembctl.c — the dynembctl CLI (tools/dynembctl.c) against the real daemon.
 *
 * Each test starts its own dynembd ($DYNEMBD) with a data directory and an export
 * directory under a fresh /var/tmp work directory, fills tables through libdynemb with
 * rows val(key, j) computed here, and runs the dynembctl binary ($DYNEMBCTL) as a child,
 * capturing its exit status, stdout and stderr. The references are this file's own: the
 * export file is read and verified with the byte layout documented at the top of
 * uring/export.c (header, CRC32C per record over its index, trailer, exact size) by a
 * bitwise CRC32C written here (libdeuring is not linked: the file is checked against
 * its spec, not by the code that wrote it); imported and recovered rows are compared
 * with val().
 *
 * Suites:
 *   ctl   snapshot of a durability-none table survives SIGKILL + restart; export file
 *         content; import into another table (and after a restart); strict import of a
 *         damaged file refused, --salvage keeps exactly the intact prefix.
 *   fail  usage errors exit 2 with a message; daemon errors exit 1 with the reason, word
 *         for word where dynembctl words it (no table, no FILE or directory, no socket,
 *         nothing listening), the daemon's reason otherwise (a path outside export_dir).
 */
#include <criterion/criterion.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dynemb.h"

#define TIMEOUT 60
#define DIM 4u
#define NKEYS 3000u
#define HDR 128u
#define REC (40u + 4u * DIM)
#define TRL 32u

/* CRC32C, bitwise (Castagnoli, reflected, init and xorout 0xffffffff) */
static uint32_t crc32c(uint32_t crc, const void *buf, size_t len)
{
	const unsigned char *p = buf;
	crc = ~crc;
	while (len--) {
		crc ^= *p++;
		for (int k = 0; k < 8; k++)
			crc = crc & 1 ? (crc >> 1) ^ 0x82f63b78u : crc >> 1;
	}
	return ~crc;
}

static pid_t d_pid = -1;
static char work[64], sock[108], data[128], expdir[128];

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static bool can_connect(const char *path)
{
	int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (s < 0)
		return false;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
	bool ok = connect(s, (struct sockaddr *)&sa, sizeof sa) == 0;
	close(s);
	return ok;
}

static void daemon_start(void)
{
	const char *bin = getenv("DYNEMBD");
	cr_assert(bin && access(bin, X_OK) == 0, "no daemon binary (set DYNEMBD)");
	unlink(sock);
	char tier[160];
	snprintf(tier, sizeof tier, "%s/tier", work);
	char uid[16];
	snprintf(uid, sizeof uid, "%u", (unsigned)geteuid()); /* dynembd allows listed uids only */
	const char *argv[] = { bin, "--foreground", "--socket", sock, "--log-level", "warn",
			       "--allow-uid", uid, "--pages", "small", "--segment-bytes", "2M", "--reserve-bytes", "2G",
			       "--data-dir", data, "--export-dir", expdir, "--tier-dir", tier,
			       NULL };
	pid_t parent = getpid();
	d_pid = fork();
	cr_assert_geq(d_pid, 0);
	if (d_pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(1);
		execv(bin, (char *const *)argv);
		_exit(127);
	}
	double end = now_s() + 10;
	while (!can_connect(sock)) {
		int st;
		cr_assert_eq(waitpid(d_pid, &st, WNOHANG), 0, "dynembd exited at startup");
		cr_assert_lt(now_s(), end, "dynembd did not listen within 10 s");
		usleep(2000);
	}
}

static void daemon_kill(void)
{
	if (d_pid > 0) {
		kill(d_pid, SIGKILL);
		waitpid(d_pid, NULL, 0);
		d_pid = -1;
	}
}

static void rm_rf(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	while (d && (e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		char p[512];
		snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
		struct stat st;
		if (!lstat(p, &st) && S_ISDIR(st.st_mode))
			rm_rf(p);
		else
			unlink(p);
	}
	if (d)
		closedir(d);
	rmdir(dir);
}

static void setup(void)
{
	snprintf(work, sizeof work, "/var/tmp/de-ctl-test.XXXXXX");
	cr_assert_not_null(mkdtemp(work));
	snprintf(sock, sizeof sock, "%s/d.sock", work);
	snprintf(data, sizeof data, "%s/data", work);
	snprintf(expdir, sizeof expdir, "%s/exp", work);
	cr_assert_eq(mkdir(data, 0755), 0);
	cr_assert_eq(mkdir(expdir, 0755), 0);
	daemon_start();
}

static void teardown(void)
{
	if (d_pid > 0) {
		kill(d_pid, SIGTERM);
		double end = now_s() + 5;
		while (waitpid(d_pid, NULL, WNOHANG) == 0 && now_s() < end)
			usleep(2000);
		daemon_kill();
	}
	rm_rf(work);
}

/* ---- running dynembctl ------------------------------------------------------------------ */

struct ctl_out {
	int status; /* exit status, or -1 when it did not exit normally */
	char out[4096], err[4096];
};

static void slurp(int fd, char *buf, size_t cap)
{
	size_t len = 0;
	for (;;) {
		ssize_t k = read(fd, buf + len, cap - 1 - len);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		len += (size_t)k;
		if (len == cap - 1) { /* drain the rest */
			char sink[512];
			while (read(fd, sink, sizeof sink) > 0)
				;
			break;
		}
	}
	buf[len] = 0;
}

/* Run dynembctl with args (NULL-terminated), --socket first unless no_socket. stdout and
 * stderr go to files (not a terminal: plain progress lines). */
static void ctl(struct ctl_out *o, bool with_socket, const char *const *args)
{
	const char *bin = getenv("DYNEMBCTL");
	cr_assert(bin && access(bin, X_OK) == 0, "no dynembctl binary (set DYNEMBCTL)");
	const char *argv[32];
	unsigned n = 0;
	argv[n++] = bin;
	if (with_socket) {
		argv[n++] = "--socket";
		argv[n++] = sock;
	}
	for (unsigned i = 0; args[i] && n < 31; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	char po[160], pe[160];
	snprintf(po, sizeof po, "%s/ctl.out", work);
	snprintf(pe, sizeof pe, "%s/ctl.err", work);
	pid_t p = fork();
	cr_assert_geq(p, 0);
	if (p == 0) {
		int fo = open(po, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		int fe = open(pe, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fo < 0 || fe < 0)
			_exit(126);
		dup2(fo, 1);
		dup2(fe, 2);
		unsetenv("DYNEMB_SOCKET");
		execv(bin, (char *const *)argv);
		_exit(127);
	}
	int st;
	cr_assert_eq(waitpid(p, &st, 0), p);
	o->status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
	int fo = open(po, O_RDONLY), fe = open(pe, O_RDONLY);
	cr_assert(fo >= 0 && fe >= 0);
	slurp(fo, o->out, sizeof o->out);
	slurp(fe, o->err, sizeof o->err);
	close(fo);
	close(fe);
}

#define CTL(o, ...) ctl((o), true, (const char *const[]){ __VA_ARGS__, NULL })

/* ---- tables and references ---------------------------------------------------------------- */

static uint64_t key_of(uint32_t i) { return 0x9e3779b97f4a7c15ull * (i + 1) | 1; }

static float val(uint64_t k, uint32_t j) { return (float)((k >> 40) % 1000) + 0.25f * (float)j; }

static dynemb_client *client(void)
{
	dynemb_client *c = NULL;
	struct dynemb_connect_opts o = { .name = "test_dynembctl", .timeout_ms = 10000 };
	int err = dynemb_connect(sock, &o, &c);
	cr_assert_eq(err, 0, "dynemb_connect: %s", dynemb_strerror(err));
	return c;
}

static int open_table(dynemb_client *c, const char *name, enum dynemb_durability_mode mode)
{
	struct dynemb_table_spec s = { .name = name, .dim = DIM, .init = DYNEMB_ZEROS, .seed = 5 };
	s.durability.mode = mode;
	int t = -1, err = dynemb_open(c, &s, &t);
	cr_assert_eq(err, 0, "dynemb_open(%s): %s", name, dynemb_strerror(err));
	return t;
}

static void fill(dynemb_client *c, int t, uint32_t n)
{
	uint64_t *k = malloc(n * sizeof *k);
	float *v = malloc((size_t)n * DIM * sizeof *v);
	cr_assert(k && v);
	for (uint32_t i = 0; i < n; i++) {
		k[i] = key_of(i);
		for (uint32_t j = 0; j < DIM; j++)
			v[(size_t)i * DIM + j] = val(k[i], j);
	}
	int err = dynemb_update(c, t, k, n, v, 1, NULL);
	cr_assert_eq(err, 0, "dynemb_update: %s", dynemb_strerror(err));
	free(k);
	free(v);
}

/* keys 0..n-1 hold val(); keys n..n+extra-1 are absent */
static void expect_rows(dynemb_client *c, int t, uint32_t n, uint32_t extra, const char *what)
{
	uint32_t m = n + extra;
	uint64_t *k = malloc(m * sizeof *k);
	float *v = malloc((size_t)m * DIM * sizeof *v);
	uint8_t *st = malloc(m);
	cr_assert(k && v && st);
	for (uint32_t i = 0; i < m; i++)
		k[i] = key_of(i);
	int err = dynemb_lookup(c, t, k, m, v, st, DYNEMB_READONLY, 0);
	cr_assert_eq(err, 0, "%s: dynemb_lookup: %s", what, dynemb_strerror(err));
	for (uint32_t i = 0; i < m; i++) {
		if (i >= n) {
			cr_assert_eq(st[i], DYNEMB_ST_MISSING, "%s: key %u should be absent", what, i);
			continue;
		}
		cr_assert_eq(st[i], DYNEMB_ST_FOUND, "%s: key %u missing", what, i);
		for (uint32_t j = 0; j < DIM; j++)
			cr_assert_eq(v[(size_t)i * DIM + j], val(k[i], j), "%s: key %u[%u]", what, i, j);
	}
	free(k);
	free(v);
	free(st);
}

/* Read an export file with the layout of uring/README.md and check every record against
 * val(): n records, keys 0..n-1 each once. */
static void check_export_file(const char *path, uint32_t n)
{
	cr_assert_eq(crc32c(0, "123456789", 9), 0xe3069283u); /* the reference itself */
	struct stat sb;
	cr_assert_eq(stat(path, &sb), 0, "%s: %s", path, strerror(errno));
	cr_assert_eq((uint64_t)sb.st_size, HDR + (uint64_t)n * REC + TRL, "file size");
	FILE *f = fopen(path, "rb");
	cr_assert_not_null(f);
	unsigned char h[128];
	cr_assert_eq(fread(h, 1, sizeof h, f), sizeof h);
	cr_assert_eq(memcmp(h, "DEEXPRT1", 8), 0);
	uint32_t hcrc;
	memcpy(&hcrc, h + 124, 4);
	cr_assert_eq(hcrc, crc32c(0, h, 124), "header crc");
	uint32_t hb, dim, nslots;
	uint64_t recs;
	memcpy(&hb, h + 12, 4);
	memcpy(&dim, h + 16, 4);
	memcpy(&nslots, h + 20, 4);
	memcpy(&recs, h + 48, 8);
	cr_assert_eq(dim, DIM);
	cr_assert_eq(nslots, 0);
	cr_assert_eq(recs, n);
	cr_assert_eq(hb, HDR);
	size_t rb = 40 + 4 * (size_t)dim * (1 + nslots);
	uint32_t all = 0; /* CRC of the records' crc fields */
	unsigned char *r = malloc(rb);
	bool *seen = calloc(n, 1);
	cr_assert(r && seen);
	cr_assert_eq(fseek(f, hb, SEEK_SET), 0);
	for (uint64_t i = 0; i < recs; i++) {
		cr_assert_eq(fread(r, 1, rb, f), rb, "record %lu cut", (unsigned long)i);
		uint64_t k;
		uint32_t rc, pad;
		memcpy(&k, r, 8);
		memcpy(&rc, r + 32, 4);
		memcpy(&pad, r + 36, 4);
		uint32_t want = crc32c(0, &i, 8); /* little-endian host */
		want = crc32c(want, r, 32);
		want = crc32c(want, r + 36, rb - 36);
		cr_assert_eq(rc, want, "record %lu crc", (unsigned long)i);
		cr_assert_eq(pad, 0);
		all = crc32c(all, &rc, 4);
		uint32_t idx = UINT32_MAX;
		for (uint32_t q = 0; q < n; q++) /* small n: a scan is the plainest reference */
			if (key_of(q) == k) {
				idx = q;
				break;
			}
		cr_assert_neq(idx, UINT32_MAX, "record %lu: a key never written", (unsigned long)i);
		cr_assert(!seen[idx], "key %u exported twice", idx);
		seen[idx] = true;
		for (uint32_t j = 0; j < DIM; j++) {
			float x;
			memcpy(&x, r + 40 + 4 * j, 4);
			cr_assert_eq(x, val(k, j), "record %lu value %u", (unsigned long)i, j);
		}
	}
	unsigned char t[TRL];
	cr_assert_eq(fread(t, 1, TRL, f), TRL, "trailer");
	cr_assert_eq(memcmp(t, "DEEXEND1", 8), 0);
	uint64_t trecs;
	uint32_t tall, tcrc;
	memcpy(&trecs, t + 8, 8);
	memcpy(&tall, t + 16, 4);
	memcpy(&tcrc, t + 28, 4);
	cr_assert_eq(trecs, n);
	cr_assert_eq(tall, all, "records_crc");
	cr_assert_eq(tcrc, crc32c(0, t, 28), "trailer crc");
	free(r);
	free(seen);
	fclose(f);
}

/* ---- ctl ------------------------------------------------------------------------------------ */

TestSuite(ctl, .init = setup, .fini = teardown, .timeout = TIMEOUT);

Test(ctl, snapshot_export_import)
{
	dynemb_client *c = client();
	int t = open_table(c, "t", DYNEMB_DURABLE_NONE);
	fill(c, t, NKEYS);
	dynemb_close(c);

	/* a none table survives a kill only through a snapshot: take one */
	struct ctl_out o;
	CTL(&o, "snapshot", "t", "--full");
	cr_assert_eq(o.status, 0, "snapshot: %d\n%s", o.status, o.err);
	cr_assert(strstr(o.out, "snapshot: 1 table,"), "stdout: %s", o.out);
	daemon_kill();
	daemon_start();
	c = client();
	t = open_table(c, "t", DYNEMB_DURABLE_NONE);
	expect_rows(c, t, NKEYS, 10, "after snapshot + SIGKILL");

	/* export: the file holds exactly the rows written */
	char path[256];
	snprintf(path, sizeof path, "%s/t.dexp", expdir);
	CTL(&o, "export", "t", path);
	cr_assert_eq(o.status, 0, "export: %d\n%s", o.status, o.err);
	cr_assert(strstr(o.out, "exported t: 3000 records"), "stdout: %s", o.out);
	check_export_file(path, NKEYS);

	/* import into another table of the same config, sync durability */
	int u = open_table(c, "u", DYNEMB_DURABLE_SYNC);
	expect_rows(c, u, 0, NKEYS, "u before the import");
	CTL(&o, "import", "u", path);
	cr_assert_eq(o.status, 0, "import: %d\n%s", o.status, o.err);
	cr_assert(strstr(o.out, "imported u: 3000 of 3000 records"), "stdout: %s", o.out);
	expect_rows(c, u, NKEYS, 10, "u after the import");
	dynemb_close(c);
	/* the import is durable (the daemon snapshots the table before answering) */
	daemon_kill();
	daemon_start();
	c = client();
	u = open_table(c, "u", DYNEMB_DURABLE_SYNC);
	expect_rows(c, u, NKEYS, 10, "u after the import and SIGKILL");
	dynemb_close(c);
}

Test(ctl, snapshot_all_and_relative_path)
{
	dynemb_client *c = client();
	int a = open_table(c, "a", DYNEMB_DURABLE_NONE), b = open_table(c, "b", DYNEMB_DURABLE_NONE);
	fill(c, a, 500);
	fill(c, b, 700);
	dynemb_close(c);
	struct ctl_out o;
	CTL(&o, "--quiet", "snapshot");
	cr_assert_eq(o.status, 0, "snapshot: %d\n%s", o.status, o.err);
	cr_assert(strstr(o.out, "snapshot: 2 tables,"), "stdout: %s", o.out);
	cr_assert_eq(o.err[0], 0, "--quiet printed: %s", o.err);
	daemon_kill();
	daemon_start();
	c = client();
	a = open_table(c, "a", DYNEMB_DURABLE_NONE);
	b = open_table(c, "b", DYNEMB_DURABLE_NONE);
	expect_rows(c, a, 500, 5, "a");
	expect_rows(c, b, 700, 5, "b");
	dynemb_close(c);

	/* a relative FILE is taken from the current directory */
	char cwd[512];
	cr_assert_not_null(getcwd(cwd, sizeof cwd));
	cr_assert_eq(chdir(expdir), 0);
	CTL(&o, "export", "b", "b.dexp");
	cr_assert_eq(chdir(cwd), 0);
	cr_assert_eq(o.status, 0, "export: %d\n%s", o.status, o.err);
	char path[256];
	snprintf(path, sizeof path, "%s/b.dexp", expdir);
	check_export_file(path, 700);
}

Test(ctl, damaged_import)
{
	dynemb_client *c = client();
	int t = open_table(c, "t", DYNEMB_DURABLE_NONE);
	fill(c, t, NKEYS);
	struct ctl_out o;
	char path[256], bad[256];
	snprintf(path, sizeof path, "%s/t.dexp", expdir);
	snprintf(bad, sizeof bad, "%s/bad.dexp", expdir);
	CTL(&o, "export", "t", path);
	cr_assert_eq(o.status, 0, "export: %s", o.err);

	/* flip one byte inside the values of record 1234 */
	check_export_file(path, NKEYS);
	const struct { uint32_t header_bytes, record_bytes; } info = { HDR, REC };
	FILE *in = fopen(path, "rb"), *out = fopen(bad, "wb");
	cr_assert(in && out);
	int ch;
	long pos = 0, flip = (long)info.header_bytes + 1234L * info.record_bytes + 44;
	while ((ch = fgetc(in)) != EOF)
		fputc(pos++ == flip ? ch ^ 0x10 : ch, out);
	fclose(in);
	cr_assert_eq(fclose(out), 0);

	int u = open_table(c, "u", DYNEMB_DURABLE_NONE);
	CTL(&o, "import", "u", bad);
	cr_assert_eq(o.status, 1, "strict import of a damaged file: %d\n%s", o.status, o.out);
	cr_assert(strstr(o.err, "dynembctl: import u:"), "stderr: %s", o.err);
	expect_rows(c, u, 0, NKEYS, "u after a refused import"); /* strict: nothing written */

	CTL(&o, "import", "u", bad, "--salvage");
	cr_assert_eq(o.status, 0, "salvage: %d\n%s", o.status, o.err);
	cr_assert(strstr(o.out, "imported u: 1234 of 3000 records"), "stdout: %s", o.out);
	cr_assert(strstr(o.out, "salvage: 1766 records dropped"), "stdout: %s", o.out);
	/* exactly the records before the damaged one: the export's first 1234 records */
	FILE *f = fopen(path, "rb");
	cr_assert_not_null(f);
	unsigned char *rec = malloc(info.record_bytes);
	uint64_t *keys = malloc(NKEYS * sizeof *keys);
	cr_assert(rec && keys);
	cr_assert_eq(fseek(f, info.header_bytes, SEEK_SET), 0);
	for (uint32_t i = 0; i < NKEYS; i++) {
		cr_assert_eq(fread(rec, 1, info.record_bytes, f), info.record_bytes);
		memcpy(&keys[i], rec, 8);
	}
	fclose(f);
	float *v = malloc((size_t)NKEYS * DIM * sizeof *v);
	uint8_t *st = malloc(NKEYS);
	cr_assert(v && st);
	cr_assert_eq(dynemb_lookup(c, u, keys, NKEYS, v, st, DYNEMB_READONLY, 0), 0);
	for (uint32_t i = 0; i < NKEYS; i++) {
		cr_assert_eq(st[i], i < 1234 ? DYNEMB_ST_FOUND : DYNEMB_ST_MISSING, "record %u", i);
		for (uint32_t j = 0; i < 1234 && j < DIM; j++)
			cr_assert_eq(v[(size_t)i * DIM + j], val(keys[i], j));
	}
	free(rec);
	free(keys);
	free(v);
	free(st);
	dynemb_close(c);
}

/* ---- fail ----------------------------------------------------------------------------------- */

TestSuite(fail, .init = setup, .fini = teardown, .timeout = TIMEOUT);

static void usage_error(const char *const *args, const char *needle)
{
	struct ctl_out o;
	ctl(&o, true, args);
	cr_assert_eq(o.status, 2, "%s...: status %d, want 2\n%s", args[0] ? args[0] : "",
		     o.status, o.err);
	cr_assert(strstr(o.err, needle), "stderr lacks '%s': %s", needle, o.err);
	cr_assert_eq(o.out[0], 0, "usage error printed on stdout: %s", o.out);
}

#define USAGE(needle, ...) usage_error((const char *const[]){ __VA_ARGS__, NULL }, needle)

Test(fail, usage)
{
	struct ctl_out o;
	ctl(&o, false, (const char *const[]){ NULL });
	cr_assert_eq(o.status, 2);
	cr_assert(strstr(o.err, "no command"), "%s", o.err);
	USAGE("unknown command 'frobnicate'", "frobnicate");
	USAGE("export takes TABLE FILE", "export", "t");
	USAGE("import takes TABLE FILE", "import", "t", "a", "b");
	USAGE("snapshot takes at most one TABLE", "snapshot", "a", "b");
	USAGE("unknown option '--full'", "import", "t", "/x", "--full");
	USAGE("unknown option '--salvage'", "snapshot", "--salvage");
	USAGE("unknown option '--bogus'", "--bogus", "snapshot");
	USAGE("--timeout-ms takes", "--timeout-ms", "soon", "snapshot");
	USAGE("1..63 bytes", "export",
	      "a_table_name_that_is_much_longer_than_the_sixty_three_bytes_allowed_x", "/f");
	ctl(&o, true, (const char *const[]){ "--help", NULL });
	cr_assert_eq(o.status, 0);
	cr_assert(strstr(o.out, "usage: dynembctl"), "%s", o.out);
}

/* stderr is exactly want */
#define ERR_IS(o, want) cr_assert_str_eq((o)->err, (want), "stderr: %s", (o)->err)

Test(fail, daemon_errors)
{
	dynemb_client *c = client();
	int t = open_table(c, "t", DYNEMB_DURABLE_NONE);
	fill(c, t, 100);
	dynemb_close(c);
	struct ctl_out o;
	char path[256], want[640];
	snprintf(path, sizeof path, "%s/x.dexp", expdir);
	CTL(&o, "export", "nosuch", path);
	cr_assert_eq(o.status, 1, "%d %s", o.status, o.err);
	ERR_IS(&o, "dynembctl: export nosuch: table 'nosuch' does not exist in this dynembd\n");
	CTL(&o, "snapshot", "NOSUCH");
	cr_assert_eq(o.status, 1, "%d %s", o.status, o.err);
	ERR_IS(&o, "dynembctl: snapshot NOSUCH: table 'NOSUCH' does not exist in this dynembd\n");
	CTL(&o, "import", "nosuch", path);
	cr_assert_eq(o.status, 1, "%d %s", o.status, o.err);
	snprintf(want, sizeof want, "dynembctl: import nosuch: %s does not exist\n", path);
	ERR_IS(&o, want);
	/* outside the export directory: the daemon refuses (-EPERM) */
	snprintf(path, sizeof path, "%s/outside.dexp", work);
	CTL(&o, "export", "t", path);
	cr_assert_eq(o.status, 1, "%d %s", o.status, o.err);
	cr_assert_eq(access(path, F_OK), -1, "a file was written outside export_dir");
	cr_assert(strstr(o.err, "is not under the daemon's export_dir"), "stderr: %s", o.err);
	/* a directory that does not exist */
	snprintf(path, sizeof path, "%s/nodir/x.dexp", expdir);
	CTL(&o, "export", "t", path);
	cr_assert_eq(o.status, 1, "%d %s", o.status, o.err);
	snprintf(want, sizeof want, "dynembctl: export t: the directory %s/nodir does not exist\n",
		 expdir);
	ERR_IS(&o, want);
	/* a missing file */
	snprintf(path, sizeof path, "%s/missing.dexp", expdir);
	CTL(&o, "import", "t", path);
	cr_assert_eq(o.status, 1, "%d %s", o.status, o.err);
	snprintf(want, sizeof want, "dynembctl: import t: %s does not exist\n", path);
	ERR_IS(&o, want);
	/* no daemon */
	char nosock[100];
	cr_assert_lt(snprintf(nosock, sizeof nosock, "%s/nothing.sock", work), (int)sizeof nosock);
	ctl(&o, false, (const char *const[]){ "--socket", nosock, "snapshot", NULL });
	cr_assert_eq(o.status, 1, "%d %s", o.status, o.err);
	snprintf(want, sizeof want, "dynembctl: cannot reach dynembd at %s: no such socket (is "
		 "dynembd running? --socket or DYNEMB_SOCKET names another one)\n", nosock);
	ERR_IS(&o, want);
	/* a socket file nothing listens on */
	int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", nosock);
	cr_assert(s >= 0 && bind(s, (struct sockaddr *)&sa, sizeof sa) == 0);
	close(s);
	ctl(&o, false, (const char *const[]){ "--socket", nosock, "snapshot", NULL });
	cr_assert_eq(o.status, 1, "%d %s", o.status, o.err);
	snprintf(want, sizeof want, "dynembctl: cannot reach dynembd at %s: nothing listens there "
		 "(is dynembd running?)\n", nosock);
	ERR_IS(&o, want);
	unlink(nosock);
}
