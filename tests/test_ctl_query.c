/*
 * test_ctl_query.c — the operator's view of the daemon: the STATUS, TABLES, STATS_BY_NAME,
 * EVICT and LOG_LEVEL messages through libdynemb (dynemb_status, dynemb_list_tables,
 * dynemb_stats_by_name, dynemb_evict_table, dynemb_set_log_level) and the dynembctl
 * commands over them (status, tables, stats, health, evict, log-level), against the real
 * daemon ($DYNEMBD) and the real CLI ($DYNEMBCTL).
 *
 * References are this file's own: the tables it created (names, dims, the keys it
 * inserted, a budget it set), the daemon's pid it forked, meson's project version
 * (DYNEMB_PROJECT_VERSION, from the build), the connections it holds. JSON output is
 * parsed back by Python's json module ($PYTHON) and its fields checked there against
 * values passed from here.
 *
 * Suites:
 *   query  the client calls: values, paging, rights of another uid (a child with
 *          setresuid; SKIP when not root), every error, and the daemon's own checks of
 *          the raw messages (what the library never sends)
 *   cli    the dynembctl commands: text and JSON, exit statuses, health up / down /
 *          degraded (a WAL fsync fault: -Dfault_injection=true)
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon_util.h"
#include "dynemb.h"
#include "proto.h"

#ifndef DYNEMB_PROJECT_VERSION
#error "the build passes meson's project version"
#endif

#define NOBODY 65534u
#define NTAB 31u /* more than one TABLES reply holds (28) */

static pid_t d_pid = -1;
static char work[64], sock[128], d_log[128], data[128];

static void mkwork(void)
{
	snprintf(work, sizeof work, "/tmp/dynemb-ctlq-XXXXXX");
	cr_assert_not_null(mkdtemp(work));
	chmod(work, 0755); /* another uid reaches the socket */
	snprintf(sock, sizeof sock, "%s/s", work);
	snprintf(d_log, sizeof d_log, "%s/log", work);
	snprintf(data, sizeof data, "%s/data", work);
}

static void start(bool with_data)
{
	char allow[32];
	snprintf(allow, sizeof allow, "%u,%u", (unsigned)geteuid(), NOBODY);
	const char *extra[] = { "--allow-uid", allow, with_data ? "--data-dir" : NULL, data,
				NULL };
	const char *argv[40];
	daemon_argv(argv, 40, daemon_bin(), sock, "info", NULL, extra);
	d_pid = daemon_spawn(argv, SIGKILL, d_log);
	daemon_wait_listen(d_pid, sock, 20, d_log);
}

static void setup(void)
{
	mkwork();
	start(false);
}

static void teardown(void)
{
	if (d_pid > 0) {
		daemon_terminate(d_pid, 10);
		d_pid = -1;
	}
	daemon_show_log_if_asked(d_log);
	char cmd[160];
	snprintf(cmd, sizeof cmd, "rm -rf %s", work);
	if (system(cmd)) {
	}
}

static dynemb_client *conn(void)
{
	dynemb_client *c = NULL;
	struct dynemb_connect_opts o = { .name = "ctlq", .timeout_ms = 20000 };
	int err = dynemb_connect(sock, &o, &c);
	cr_assert_eq(err, 0, "connect: %s", dynemb_strerror(err));
	return c;
}

static struct dynemb_table_spec spec(const char *name, uint32_t dim)
{
	struct dynemb_table_spec s = { .name = name, .dim = dim, .init = DYNEMB_CONSTANT,
				       .init_a = 0.25f, .seed = 3 };
	return s;
}

static int open_t(dynemb_client *c, const struct dynemb_table_spec *s)
{
	int t, err = dynemb_open(c, s, &t);
	cr_assert_eq(err, 0, "open %s: %s", s->name, dynemb_strerror(err));
	return t;
}

/* keys first..first+n-1 into table t (dim floats each) */
static void fill(dynemb_client *c, int t, uint32_t dim, uint64_t first, size_t n)
{
	enum { B = 512 };
	uint64_t k[B];
	float *v = calloc((size_t)B * dim, sizeof *v);
	cr_assert_not_null(v);
	for (size_t done = 0; done < n;) {
		size_t m = n - done < B ? n - done : B;
		for (size_t i = 0; i < m; i++)
			k[i] = first + done + i;
		int err = dynemb_update(c, t, k, m, v, 0, NULL);
		cr_assert_eq(err, 0, "update: %s", dynemb_strerror(err));
		done += m;
	}
	free(v);
}

/* ---- query ----------------------------------------------------------------------------- */

TestSuite(query, .init = setup, .fini = teardown, .timeout = 120);

Test(query, status_values)
{
	dynemb_client *c = conn();
	struct dynemb_status st;
	memset(&st, 0xa5, sizeof st);
	int err = dynemb_status(c, &st);
	cr_assert_eq(err, 0, "status: %s", dynemb_strerror(err));
	cr_expect_str_eq(st.version, DYNEMB_PROJECT_VERSION);
	cr_expect_eq(st.pid, (uint32_t)d_pid);
	cr_expect_eq(st.tables, 0);
	cr_expect_eq(st.pages_got, 0, "no table: no arena");
	cr_expect_eq(st.pages_config, DYNEMB_PAGES_SMALL, "--pages small");
	cr_expect_eq(st.clients, 1, "this connection");
	cr_expect_eq(st.peers, 0);
	cr_expect_eq(st.wal_state, DYNEMB_WAL_NONE, "no data_dir");
	cr_expect_eq(st.wal_error[0], 0);
	cr_expect_lt(st.uptime_ms, 600000u);
	cr_expect_geq(st.workers, 1);
	for (size_t i = 0; i < sizeof st.reserved / sizeof st.reserved[0]; i++)
		cr_expect_eq(st.reserved[i], 0);

	dynemb_client *c2 = conn();
	struct dynemb_table_spec s1 = spec("a", 4), s2 = spec("b", 8);
	open_t(c2, &s1);
	open_t(c2, &s2);
	usleep(200000);
	struct dynemb_status st2;
	cr_assert_eq(dynemb_status(c, &st2), 0);
	cr_expect_eq(st2.tables, 2);
	cr_expect_eq(st2.clients, 2);
	cr_expect_eq(st2.pages_got, 1u << DYNEMB_PAGES_SMALL, "small pages: got 0x%x",
		     st2.pages_got);
	cr_expect_geq(st2.uptime_ms, st.uptime_ms + 150, "uptime moves");
	dynemb_close(c2);
	dynemb_close(c);
}

Test(query, tables_paging_and_values)
{
	dynemb_client *c = conn();
	char names[NTAB][16];
	for (unsigned i = 0; i < NTAB; i++) {
		snprintf(names[i], sizeof names[i], "t%02u", i);
		struct dynemb_table_spec s = spec(names[i], 1 + i % 8);
		if (i == 5) {
			s.eviction.policy = DYNEMB_EVICTION_LRU;
			s.eviction.budget_bytes = 64ull << 20;
		}
		int t = open_t(c, &s);
		fill(c, t, s.dim, 1000 * i + 1, i + 1);
	}
	struct dynemb_table_info all[64];
	size_t n = 0, total = 0;
	int err = dynemb_list_tables(c, 0, all, 64, &n, &total);
	cr_assert_eq(err, 0, "list: %s", dynemb_strerror(err));
	cr_assert_eq(total, NTAB);
	cr_assert_eq(n, NTAB, "every table over two replies: %zu", n);
	unsigned seen[NTAB] = { 0 };
	for (size_t j = 0; j < n; j++) {
		unsigned i;
		cr_assert_eq(sscanf(all[j].name, "t%02u", &i), 1, "name %s", all[j].name);
		cr_assert_lt(i, NTAB);
		seen[i]++;
		cr_expect_eq(all[j].keys, i + 1, "%s keys", all[j].name);
		cr_expect_eq(all[j].dim, 1 + i % 8);
		cr_expect_eq(all[j].key_kind, DYNEMB_INT64_KEYS);
		cr_expect_eq(all[j].read_only, 0);
		cr_expect_eq(all[j].owner_uid, (uint32_t)geteuid());
		cr_expect_eq(all[j].open_connections, 1);
		cr_expect_eq(all[j].pages, DYNEMB_PAGES_SMALL);
		cr_expect_gt(all[j].resident_bytes, 0);
		cr_expect_eq(all[j].budget_bytes, i == 5 ? 64ull << 20 : 0);
		cr_expect_eq(all[j].eviction, i == 5 ? DYNEMB_EVICTION_LRU : DYNEMB_EVICTION_NONE);
	}
	for (unsigned i = 0; i < NTAB; i++)
		cr_expect_eq(seen[i], 1, "t%02u listed %u times", i, seen[i]);

	/* pages of 5: the same tables in the same order */
	struct dynemb_table_info page[5];
	size_t at = 0;
	while (at < total) {
		err = dynemb_list_tables(c, at, page, 5, &n, &total);
		cr_assert_eq(err, 0);
		cr_assert_gt(n, 0);
		cr_assert_leq(n, 5);
		for (size_t j = 0; j < n; j++)
			cr_expect_str_eq(page[j].name, all[at + j].name);
		at += n;
	}
	cr_expect_eq(at, NTAB);
	err = dynemb_list_tables(c, NTAB, page, 5, &n, &total);
	cr_expect_eq(err, 0);
	cr_expect_eq(n, 0, "past the end: nothing");
	cr_expect_eq(total, NTAB);
	err = dynemb_list_tables(c, 0, NULL, 0, &n, &total);
	cr_expect_eq(err, 0, "cap 0: the total only");
	cr_expect_eq(total, NTAB);
	cr_expect_eq(dynemb_list_tables(c, 0, page, 5, NULL, &total), -EINVAL);
	cr_expect(strstr(dynemb_strerror(-EINVAL), "n is NULL"), "%s", dynemb_strerror(-EINVAL));
	dynemb_close(c);
}

Test(query, stats_by_name_matches_open_handle)
{
	dynemb_client *c = conn();
	struct dynemb_table_spec s = spec("named", 6);
	int t = open_t(c, &s);
	fill(c, t, 6, 1, 777);
	struct dynemb_stats a, b;
	cr_assert_eq(dynemb_stats(c, t, &a), 0);
	int err = dynemb_stats_by_name(c, "named", &b);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	cr_expect_eq(b.keys, 777);
	cr_expect_eq(b.dim, 6);
	cr_expect_eq(b.arena_bytes, a.arena_bytes);
	cr_expect_eq(b.rows_allocated, a.rows_allocated);
	cr_expect_eq(b.index_bytes, a.index_bytes);
	/* without any connection having it open */
	dynemb_close(c);
	c = conn();
	cr_assert_eq(dynemb_stats_by_name(c, "named", &b), 0);
	cr_expect_eq(b.keys, 777);
	dynemb_close(c);
}

Test(query, errors_name_the_problem)
{
	dynemb_client *c = conn();
	struct dynemb_stats st;
	int err = dynemb_stats_by_name(c, "missing", &st);
	cr_expect_eq(err, -ENOENT);
	cr_expect(strstr(dynemb_strerror(err), "no table 'missing'"), "%s", dynemb_strerror(err));
	err = dynemb_evict_table(c, "missing", NULL);
	cr_expect_eq(err, -ENOENT);
	cr_expect(strstr(dynemb_strerror(err), "no table 'missing'"), "%s", dynemb_strerror(err));
	struct dynemb_table_spec s = spec("plain", 4);
	open_t(c, &s);
	uint64_t ev = 99;
	err = dynemb_evict_table(c, "plain", &ev);
	cr_expect_eq(err, -EOPNOTSUPP);
	cr_expect(strstr(dynemb_strerror(err), "table 'plain' has no eviction"), "%s",
		  dynemb_strerror(err));
	cr_expect_eq(ev, 99, "untouched on failure");
	err = dynemb_set_log_level(c, "loud");
	cr_expect_eq(err, -EINVAL);
	cr_expect(strstr(dynemb_strerror(err), "log level 'loud'"), "%s", dynemb_strerror(err));
	cr_expect_eq(dynemb_set_log_level(c, NULL), -EINVAL);
	cr_expect_eq(dynemb_stats_by_name(c, "", &st), -EINVAL);
	cr_expect(strstr(dynemb_strerror(-EINVAL), "empty"), "%s", dynemb_strerror(-EINVAL));
	cr_expect_eq(dynemb_status(c, NULL), -EINVAL);
	cr_expect_eq(dynemb_status(NULL, NULL), -EINVAL);
	/* the connection still serves */
	struct dynemb_status ds;
	cr_expect_eq(dynemb_status(c, &ds), 0);
	dynemb_close(c);
}

Test(query, evict_pass_keeps_the_budget)
{
	dynemb_client *c = conn();
	struct dynemb_table_spec s = spec("lru", 32);
	s.eviction.policy = DYNEMB_EVICTION_LRU;
	s.eviction.budget_bytes = 4ull << 20;
	int t = open_t(c, &s);
	fill(c, t, 32, 1, 60000); /* ~10 MiB of rows: over the budget */
	struct dynemb_stats before, after;
	cr_assert_eq(dynemb_stats_by_name(c, "lru", &before), 0);
	cr_assert_gt(before.evicted, 0, "the budget is enforced at all");
	uint64_t ev = UINT64_MAX;
	int err = dynemb_evict_table(c, "lru", &ev);
	cr_assert_eq(err, 0, "evict: %s", dynemb_strerror(err));
	cr_assert_eq(dynemb_stats_by_name(c, "lru", &after), 0);
	cr_expect_neq(ev, UINT64_MAX);
	cr_expect_leq(before.evicted + ev, after.evicted, "the pass's rows are counted");
	/* a pass ends at the low watermark (95% of the budget) */
	cr_expect_leq(after.resident_bytes, after.budget_bytes, "%llu > %llu",
		      (unsigned long long)after.resident_bytes,
		      (unsigned long long)after.budget_bytes);
	cr_expect_gt(after.keys, 0);

	/* Between the watermarks only EVICT evicts: the evictor's thread starts above the
	 * high one (98%), the inline path above 102%; the pass left the table at or under
	 * the low one (95%): new rows, 10 at a time, until it is just over it. */
	struct dynemb_stats mid, end;
	uint64_t next = 1000000;
	do {
		fill(c, t, 32, next, 10);
		next += 10;
		cr_assert_eq(dynemb_stats_by_name(c, "lru", &mid), 0);
	} while ((double)mid.resident_bytes <= 0.955 * (double)mid.budget_bytes &&
		 next < 1000000 + 40000);
	cr_log_info("resident %llu of %llu after %llu new rows",
		    (unsigned long long)mid.resident_bytes, (unsigned long long)mid.budget_bytes,
		    (unsigned long long)(next - 1000000));
	cr_assert_lt((double)mid.resident_bytes, 0.98 * (double)mid.budget_bytes,
		     "still under the high watermark");
	cr_assert_gt((double)mid.resident_bytes, 0.95 * (double)mid.budget_bytes,
		     "over the low watermark");
	err = dynemb_evict_table(c, "lru", &ev);
	cr_assert_eq(err, 0, "evict: %s", dynemb_strerror(err));
	cr_assert_eq(dynemb_stats_by_name(c, "lru", &end), 0);
	cr_expect_geq(ev, 1, "the pass evicted what was over the low watermark");
	cr_expect_leq((double)ev * 32 * 4, 0.04 * (double)mid.budget_bytes,
		      "and not much more: %llu rows", (unsigned long long)ev);
	cr_expect_eq(end.evicted, mid.evicted + ev, "nothing else evicted meanwhile");
	cr_expect_leq((double)end.resident_bytes, 0.95 * (double)end.budget_bytes);
	dynemb_close(c);
}

Test(query, log_level_is_logged)
{
	dynemb_client *c = conn();
	int err = dynemb_set_log_level(c, "debug");
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	cr_assert_eq(dynemb_set_log_level(c, "warn"), 0);
	dynemb_close(c);
	usleep(100000);
	FILE *f = fopen(d_log, "r");
	cr_assert_not_null(f);
	char line[512];
	bool dbg = false, warn = false;
	while (fgets(line, sizeof line, f)) {
		dbg |= strstr(line, "set the log level to debug") != NULL;
		warn |= strstr(line, "set the log level to warn") != NULL;
	}
	fclose(f);
	cr_expect(dbg && warn, "the log says who set which level");
}

/* ---- the wire, without the library's own checks ---- */

static void raw_send(int fd, void *m, uint16_t type, uint32_t len)
{
	struct de_msg_hdr *h = m;
	h->magic = DE_MSG_MAGIC;
	h->type = type;
	h->version = DE_PROTO_VERSION;
	h->len = len;
	h->seq = 9;
	cr_assert_eq(send(fd, m, len, 0), (ssize_t)len);
}

/* One reply into buf (cap bytes); its fds closed. The length, 0 at EOF. */
static ssize_t raw_recv(int fd, void *buf, size_t cap)
{
	union {
		char b[CMSG_SPACE(sizeof(int) * 4)];
		struct cmsghdr align;
	} cb;
	struct iovec iov = { .iov_base = buf, .iov_len = cap };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cb.b,
			     .msg_controllen = sizeof cb.b };
	ssize_t r = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
			int k;
			memcpy(&k, CMSG_DATA(cm), sizeof k);
			close(k);
		}
	return r;
}

static void raw_expect_error(int fd, int err, const char *text)
{
	struct de_msg_error e;
	memset(&e, 0, sizeof e);
	ssize_t r = raw_recv(fd, &e, sizeof e);
	cr_assert_eq(r, (ssize_t)sizeof e, "an ERROR reply: %zd bytes", r);
	cr_assert_eq(e.h.type, DE_MSG_ERROR);
	cr_expect_eq(e.err, err, "errno %d", e.err);
	e.msg[sizeof e.msg - 1] = 0;
	cr_expect(strstr(e.msg, text), "%s", e.msg);
}

Test(query, daemon_checks_the_wire)
{
	int fd = daemon_connect(sock);
	cr_assert_geq(fd, 0);
	struct de_msg_hello hello;
	memset(&hello, 0, sizeof hello);
	raw_send(fd, &hello, DE_MSG_HELLO, sizeof hello);
	char buf[DE_MSG_MAX];
	cr_assert_eq(raw_recv(fd, buf, sizeof buf), (ssize_t)sizeof(struct de_msg_hello_ok));

	struct de_msg_log_level lv;
	memset(&lv, 0, sizeof lv);
	lv.level = 4;
	raw_send(fd, &lv, DE_MSG_LOG_LEVEL, sizeof lv);
	raw_expect_error(fd, -EINVAL, "log level 4");
	struct de_msg_tables tb;
	memset(&tb, 0, sizeof tb);
	tb.pad = 1;
	raw_send(fd, &tb, DE_MSG_TABLES, sizeof tb);
	raw_expect_error(fd, -EINVAL, "TABLES: a nonzero pad");
	struct de_msg_by_name bn;
	memset(&bn, 0, sizeof bn);
	raw_send(fd, &bn, DE_MSG_STATS_BY_NAME, sizeof bn);
	raw_expect_error(fd, -EINVAL, "table name is empty");
	/* still served: a good request after the refusals */
	tb.pad = 0;
	raw_send(fd, &tb, DE_MSG_TABLES, sizeof tb);
	struct de_msg_tables_ok ok;
	cr_assert_eq(raw_recv(fd, &ok, sizeof ok), (ssize_t)sizeof ok);
	cr_expect_eq(ok.h.type, DE_MSG_TABLES_OK);
	cr_expect_eq(ok.total, 0);
	/* a STATUS with a body is malformed: ERROR -EBADMSG, closed */
	char st[24];
	memset(st, 0, sizeof st);
	raw_send(fd, st, DE_MSG_STATUS, sizeof st);
	raw_expect_error(fd, -EBADMSG, "malformed");
	cr_expect_eq(raw_recv(fd, buf, sizeof buf), 0, "closed");
	close(fd);
}

/* What a child of another uid saw. */
struct seen {
	int connect, status, status_tables, list, list_total, stats_private, stats_missing,
		evict_private, log_level;
	char stats_msg[256], log_msg[256];
};

static void as_nobody(struct seen *s)
{
	if (setgroups(0, NULL) || setresgid(NOBODY, NOBODY, NOBODY) ||
	    setresuid(NOBODY, NOBODY, NOBODY))
		_exit(3);
	dynemb_client *c = NULL;
	struct dynemb_connect_opts o = { .name = "nobody", .timeout_ms = 10000 };
	s->connect = dynemb_connect(sock, &o, &c);
	if (s->connect)
		return;
	struct dynemb_status st;
	s->status = dynemb_status(c, &st);
	s->status_tables = (int)st.tables;
	struct dynemb_table_info ti[4];
	size_t n = 0, total = 99;
	s->list = dynemb_list_tables(c, 0, ti, 4, &n, &total);
	s->list_total = (int)total;
	struct dynemb_stats ds;
	s->stats_private = dynemb_stats_by_name(c, "private", &ds);
	snprintf(s->stats_msg, sizeof s->stats_msg, "%s", dynemb_strerror(s->stats_private));
	s->stats_missing = dynemb_stats_by_name(c, "missing", &ds);
	s->evict_private = dynemb_evict_table(c, "private", NULL);
	s->log_level = dynemb_set_log_level(c, "debug");
	snprintf(s->log_msg, sizeof s->log_msg, "%s", dynemb_strerror(s->log_level));
	dynemb_close(c);
}

Test(query, another_uid_sees_only_its_rights)
{
	if (geteuid() != 0)
		cr_skip_test("needs root (setresuid to %u)", NOBODY);
	dynemb_client *c = conn();
	struct dynemb_table_spec s = spec("private", 4);
	s.eviction.policy = DYNEMB_EVICTION_LRU;
	s.eviction.budget_bytes = 8ull << 20;
	open_t(c, &s);
	int p[2];
	cr_assert_eq(pipe(p), 0);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		close(p[0]);
		static struct seen s0;
		as_nobody(&s0);
		_exit(write(p[1], &s0, sizeof s0) == (ssize_t)sizeof s0 ? 0 : 4);
	}
	close(p[1]);
	struct seen r;
	memset(&r, 0, sizeof r);
	ssize_t got = read(p[0], &r, sizeof r);
	close(p[0]);
	int wst = 0;
	waitpid(pid, &wst, 0);
	cr_assert_eq(got, (ssize_t)sizeof r, "child exit %d", WEXITSTATUS(wst));
	cr_assert_eq(r.connect, 0, "nobody connects: %d", r.connect);
	cr_expect_eq(r.status, 0, "anyone may read STATUS");
	cr_expect_eq(r.status_tables, 1);
	cr_expect_eq(r.list, 0);
	cr_expect_eq(r.list_total, 0, "root's table is not listed to nobody");
	cr_expect_eq(r.stats_private, -EACCES, "%s", r.stats_msg);
	cr_expect(strstr(r.stats_msg, "private"), "names the table: %s", r.stats_msg);
	cr_expect_eq(r.stats_missing, -ENOENT, "a name free to create: as OPEN tells it");
	cr_expect_eq(r.evict_private, -EACCES);
	cr_expect_eq(r.log_level, -EPERM);
	cr_expect(strstr(r.log_msg, "may not set the log level"), "%s", r.log_msg);
	dynemb_close(c);
}

/* ---- cli -------------------------------------------------------------------------------- */

struct out {
	int status;
	char out[16384], err[4096];
	char out_path[160];
};

/* $DYNEMBCTL --socket sock ARGS... with stdout and stderr to files (daemon_util.h). */
static void ctl_run(struct out *o, const char *const *args)
{
	o->status = daemon_ctl_run(sock, work, args, o->out, sizeof o->out, o->err,
				   sizeof o->err, o->out_path, sizeof o->out_path);
	cr_assert_geq(o->status, 0, "DYNEMBCTL names the dynembctl binary, which could run");
}
#define CTL(o, ...) ctl_run((o), (const char *const[]){ __VA_ARGS__, NULL })

/* Python's json parses the file, and expr (over d, the object; v, the argument) holds. */
static bool json_holds(const char *path, const char *expr, const char *v)
{
	const char *py = getenv("PYTHON");
	if (!py || !*py)
		py = "python3";
	char prog[2048];
	snprintf(prog, sizeof prog,
		 "import json, sys\n"
		 "txt = open(sys.argv[1], encoding='utf-8').read()\n"
		 "d = json.loads(txt)\n"
		 "v = sys.argv[2]\n"
		 "assert txt.count('\\n') == 1 and txt.endswith('\\n'), 'one line'\n"
		 "ok = (%s)\n"
		 "sys.exit(0 if ok else (print(d, file=sys.stderr) or 1))\n", expr);
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		execlp(py, py, "-c", prog, path, v ? v : "", (char *)NULL);
		_exit(127);
	}
	int st = 0;
	waitpid(pid, &st, 0);
	cr_assert(!(WIFEXITED(st) && WEXITSTATUS(st) == 127), "no python at %s (PYTHON)", py);
	return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

TestSuite(cli, .init = setup, .fini = teardown, .timeout = 120);

Test(cli, status_text_and_json)
{
	dynemb_client *c = conn();
	struct dynemb_table_spec s = spec("one", 4);
	open_t(c, &s);
	struct out o;
	CTL(&o, "status");
	cr_assert_eq(o.status, 0, "%s", o.err);
	char want[64];
	snprintf(want, sizeof want, "dynembd %s (pid %d)", DYNEMB_PROJECT_VERSION, (int)d_pid);
	cr_expect(strstr(o.out, want), "%s", o.out);
	cr_expect(strstr(o.out, "peers      none configured"), "%s", o.out);
	cr_expect(strstr(o.out, "wal        none"), "%s", o.out);
	cr_expect(strstr(o.out, "tables     1\n"), "%s", o.out);
	CTL(&o, "--json", "status");
	cr_assert_eq(o.status, 0, "%s", o.err);
	char pid[16];
	snprintf(pid, sizeof pid, "%d", (int)d_pid);
	cr_expect(json_holds(o.out_path, "d['ok'] is True and d['version'] == '" DYNEMB_PROJECT_VERSION
			     "' and d['pid'] == int(v) and d['tables'] == 1 and d['clients'] == 2 "
			     "and d['peers'] == 0 and d['wal']['state'] == 'none' and "
			     "d['pages'] == '4k'", pid), "%s", o.out);
	dynemb_close(c);
}

Test(cli, tables_and_stats_json_escape_names)
{
	dynemb_client *c = conn();
	const char *odd = "we\"ird\\na\xc3\xa9me"; /* a quote, a backslash, U+00E9 */
	struct dynemb_table_spec s1 = spec(odd, 3), s2 = spec("plain", 5);
	s2.eviction.policy = DYNEMB_EVICTION_LRU;
	s2.eviction.budget_bytes = 32ull << 20;
	int t1 = open_t(c, &s1), t2 = open_t(c, &s2);
	fill(c, t1, 3, 1, 41);
	fill(c, t2, 5, 1, 1234);
	struct out o;
	CTL(&o, "tables", "--json");
	cr_assert_eq(o.status, 0, "%s", o.err);
	cr_expect(json_holds(o.out_path,
			     "d['ok'] and d['count'] == 2 and "
			     "{t['name']: (t['keys'], t['dim'], t['budget_bytes'], t['eviction']) "
			     "for t in d['tables']} == {v: (41, 3, 0, 'none'), "
			     "'plain': (1234, 5, 32 << 20, 'lru')}",
			     odd), "%s", o.out);
	CTL(&o, "tables");
	cr_assert_eq(o.status, 0, "%s", o.err);
	/* aligned: every line has KEYS' column end at the same place */
	char *hdr = o.out, *nl = strchr(hdr, '\n');
	cr_assert_not_null(nl);
	cr_expect_eq(strncmp(hdr, "NAME", 4), 0, "%s", o.out);
	cr_expect(strstr(o.out, "32.0 MiB"), "human budget: %s", o.out);
	cr_expect(strstr(o.out, "\nplain "), "%s", o.out);
	CTL(&o, "stats", "plain", "--json");
	cr_assert_eq(o.status, 0, "%s", o.err);
	cr_expect(json_holds(o.out_path, "d['table'] == 'plain' and d['keys'] == 1234 and "
			     "d['dim'] == 5 and d['budget_bytes'] == 32 << 20 and "
			     "d['read_only'] is False", NULL), "%s", o.out);
	CTL(&o, "stats", odd, "--json");
	cr_assert_eq(o.status, 0, "%s", o.err);
	cr_expect(json_holds(o.out_path, "d['table'] == v and d['keys'] == 41", odd), "%s",
		  o.out);
	CTL(&o, "stats", "plain");
	cr_assert_eq(o.status, 0, "%s", o.err);
	cr_expect(strstr(o.out, "keys                 1234\n"), "%s", o.out);
	dynemb_close(c);
}

Test(cli, errors_exit_1_with_the_reason)
{
	dynemb_client *c = conn();
	struct dynemb_table_spec s = spec("plain", 4);
	open_t(c, &s);
	struct out o;
	CTL(&o, "stats", "missing");
	cr_expect_eq(o.status, 1);
	cr_expect(strstr(o.err, "no table 'missing'"), "%s", o.err);
	CTL(&o, "--json", "stats", "missing");
	cr_expect_eq(o.status, 1);
	cr_expect(json_holds(o.out_path, "d['ok'] is False and d['errno'] == -2 and "
			     "\"no table 'missing'\" in d['error']", NULL), "%s", o.out);
	CTL(&o, "evict", "plain");
	cr_expect_eq(o.status, 1);
	cr_expect(strstr(o.err, "table 'plain' has no eviction"), "%s", o.err);
	CTL(&o, "log-level", "loud");
	cr_expect_eq(o.status, 1);
	cr_expect(strstr(o.err, "one of error, warn, info, debug"), "%s", o.err);
	CTL(&o, "stats");
	cr_expect_eq(o.status, 2, "usage: %s", o.err);
	cr_expect(strstr(o.err, "stats takes TABLE"), "%s", o.err);
	CTL(&o, "status", "extra");
	cr_expect_eq(o.status, 2);
	CTL(&o, "log-level", "debug");
	cr_expect_eq(o.status, 0, "%s", o.err);
	cr_expect_str_eq(o.out, "log level: debug\n");
	dynemb_close(c);
}

Test(cli, evict_reports_rows)
{
	dynemb_client *c = conn();
	struct dynemb_table_spec s = spec("lru", 32);
	s.eviction.policy = DYNEMB_EVICTION_LRU;
	s.eviction.budget_bytes = 4ull << 20;
	int t = open_t(c, &s);
	fill(c, t, 32, 1, 40000);
	struct out o;
	CTL(&o, "--json", "evict", "lru");
	cr_assert_eq(o.status, 0, "%s", o.err);
	cr_expect(json_holds(o.out_path, "d['ok'] and d['table'] == 'lru' and "
			     "isinstance(d['evicted'], int) and d['evicted'] >= 0", NULL), "%s", o.out);
	CTL(&o, "evict", "lru");
	cr_assert_eq(o.status, 0, "%s", o.err);
	cr_expect_eq(strncmp(o.out, "evicted lru: ", 13), 0, "%s", o.out);
	dynemb_close(c);
}

Test(cli, health_up_and_down)
{
	struct out o;
	CTL(&o, "health");
	cr_expect_eq(o.status, 0, "%s%s", o.out, o.err);
	cr_expect_str_eq(o.out, "ok\n");
	CTL(&o, "--quiet", "health");
	cr_expect_eq(o.status, 0);
	cr_expect_str_eq(o.out, "");
	CTL(&o, "health", "--json");
	cr_expect(json_holds(o.out_path, "d['state'] == 'ok' and d['exit'] == 0", NULL), "%s",
		  o.out);
	daemon_terminate(d_pid, 10);
	d_pid = -1;
	CTL(&o, "health");
	cr_expect_eq(o.status, 2, "down: %s", o.out);
	cr_expect_eq(strncmp(o.out, "down: cannot reach dynembd", 26), 0, "%s", o.out);
	CTL(&o, "--quiet", "health");
	cr_expect_eq(o.status, 2);
	cr_expect_str_eq(o.out, "");
	cr_expect_str_eq(o.err, "");
	CTL(&o, "--json", "health");
	cr_expect_eq(o.status, 2);
	cr_expect(json_holds(o.out_path, "d['state'] == 'down' and d['ok'] is False", NULL), "%s",
		  o.out);
	CTL(&o, "status");
	cr_expect_eq(o.status, 1, "status of a daemon that is down");
	cr_expect(strstr(o.err, "cannot reach dynembd"), "%s", o.err);
}

Test(cli, health_degraded_after_a_wal_failure, .init = mkwork)
{
#ifndef DE_FAULT_INJECTION
	cr_skip_test("needs -Dfault_injection=true");
#else
	/* the WAL's 3rd fsync fails (as test_persist_daemon's faults suite) */
	setenv("DYNEMBD_TEST_WAL_FAULT", "fsync:3", 1);
	start(true);
	unsetenv("DYNEMBD_TEST_WAL_FAULT");
	dynemb_client *c = conn();
	struct out o;
	CTL(&o, "health");
	cr_expect_eq(o.status, 0, "healthy first: %s", o.out);
	struct dynemb_table_spec s = spec("ro", 4);
	s.durability.mode = DYNEMB_DURABLE_SYNC;
	int t = open_t(c, &s);
	float v[4] = { 1, 2, 3, 4 };
	int err = 0;
	for (uint64_t k = 1; k <= 10 && !err; k++)
		err = dynemb_update(c, t, &k, 1, v, 0, NULL);
	cr_assert_neq(err, 0, "the fsync fault hit");
	CTL(&o, "health");
	cr_expect_eq(o.status, 1, "degraded: %s%s", o.out, o.err);
	cr_expect(strstr(o.out, "degraded: the WAL failed"), "%s", o.out);
	cr_expect(strstr(o.out, "read-only table(s): 'ro'"), "%s", o.out);
	CTL(&o, "--json", "status");
	cr_expect(json_holds(o.out_path, "d['wal']['state'] == 'failed' and d['wal']['errno'] < 0 "
			     "and d['wal']['error'] != ''", NULL), "%s", o.out);
	struct dynemb_status st;
	cr_assert_eq(dynemb_status(c, &st), 0);
	cr_expect_eq(st.wal_state, DYNEMB_WAL_FAILED);
	cr_expect_leq(st.wal_durable_lsn, st.wal_last_lsn);
	dynemb_close(c);
#endif
}
