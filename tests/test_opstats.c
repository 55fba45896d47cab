/*
 * test_opstats.c — per-op statistics: the OPSTATS message through libdynemb
 * (dynemb_op_stats) and dynembctl top over it, against the real daemon ($DYNEMBD) and
 * the real CLI ($DYNEMBCTL).
 *
 * References are this file's own: the calls it made (how many of each op, how many keys
 * each, which ones failed), the time each call took on this side (a request's latency
 * in the daemon lies within its call, so each histogram bucket holds at least the calls
 * that took at most its bound here), the tables it created, the WAL writes it asked.
 *
 * Suites:
 *   opstats    the values, paging over several replies, -ENOBUFS, the WAL part
 *   untrusted  a proxy between the library and the daemon that spoils one field of a
 *              real OPSTATS reply at a time: each is -EBADMSG, its fault named; and the
 *              daemon's own check of the request (a nonzero pad)
 *   top        dynembctl top --json / text: frames, counts, exits and usage
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon_util.h"
#include "dynemb.h"
#include "proto.h"

#define B DYNEMB_LAT_BUCKETS
#define NKEYS 64u

static pid_t d_pid = -1;
static char work[64], sock[128], d_log[128], data[128];

static void start(bool with_data)
{
	snprintf(work, sizeof work, "/tmp/dynemb-opst-XXXXXX");
	cr_assert_not_null(mkdtemp(work));
	snprintf(sock, sizeof sock, "%s/s", work);
	snprintf(d_log, sizeof d_log, "%s/log", work);
	snprintf(data, sizeof data, "%s/data", work);
	const char *extra[] = { with_data ? "--data-dir" : NULL, data, NULL };
	const char *argv[40];
	daemon_argv(argv, 40, daemon_bin(), sock, "info", NULL, extra);
	d_pid = daemon_spawn(argv, SIGKILL, d_log);
	daemon_wait_listen(d_pid, sock, 20, d_log);
}

static void setup(void)
{
	start(false);
}

static void setup_data(void)
{
	start(true);
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

static dynemb_client *conn_at(const char *path)
{
	dynemb_client *c = NULL;
	struct dynemb_connect_opts o = { .name = "opstats", .timeout_ms = 20000 };
	int err = dynemb_connect(path, &o, &c);
	cr_assert_eq(err, 0, "connect: %s", dynemb_strerror(err));
	return c;
}

static int open_t(dynemb_client *c, const char *name, uint32_t dim, bool sync)
{
	struct dynemb_table_spec s = { .name = name, .dim = dim, .init = DYNEMB_CONSTANT,
				       .init_a = 0.5f, .seed = 7 };
	if (sync)
		s.durability.mode = DYNEMB_DURABLE_SYNC;
	int t, err = dynemb_open(c, &s, &t);
	cr_assert_eq(err, 0, "open %s: %s", name, dynemb_strerror(err));
	return t;
}

/* What this side saw of its calls of one op: how many, how many failed, their keys, and
 * how many took at most each bucket's bound. */
struct seen {
	uint64_t calls, failed, keys;
	uint64_t within[B];       /* calls that took <= 1 us << i here */
	double total_ns;
};

static void saw(struct seen *s, double t0, int err, size_t keys)
{
	double ns = (now_s() - t0) * 1e9;
	s->calls++;
	s->failed += err < 0;
	s->keys += keys;
	s->total_ns += ns;
	for (unsigned i = 0; i < B; i++)
		s->within[i] += ns <= 1000.0 * (double)(1ull << i);
}

/* nl lookups and nu updates of NKEYS keys on t, and ne gradient pushes (which fail: the
 * table has no optimizer) */
static void work_on(dynemb_client *c, int t, uint32_t dim, unsigned nl, unsigned nu,
		    unsigned ng, struct seen *sl, struct seen *su, struct seen *sg)
{
	uint64_t k[NKEYS];
	float *v = calloc((size_t)NKEYS * dim, sizeof *v);
	cr_assert_not_null(v);
	for (unsigned i = 0; i < NKEYS; i++)
		k[i] = 1000 + i;
	for (unsigned i = 0; i < nu; i++) {
		double t0 = now_s();
		int err = dynemb_update(c, t, k, NKEYS, v, 0, NULL);
		saw(su, t0, err, NKEYS);
		cr_assert_eq(err, 0, "update: %s", dynemb_strerror(err));
	}
	for (unsigned i = 0; i < nl; i++) {
		double t0 = now_s();
		int err = dynemb_lookup(c, t, k, NKEYS, v, NULL, 0, 0);
		saw(sl, t0, err, NKEYS);
		cr_assert_eq(err, 0, "lookup: %s", dynemb_strerror(err));
	}
	for (unsigned i = 0; sg && i < ng; i++) {
		double t0 = now_s();
		int err = dynemb_apply_gradients(c, t, k, NKEYS, v, 0, 0, NULL);
		saw(sg, t0, err, NKEYS);
		cr_assert_eq(err, -EOPNOTSUPP, "apply_gradients: %s", dynemb_strerror(err));
	}
	free(v);
}

static const struct dynemb_op_stat *find(const struct dynemb_op_stat *e, size_t n,
					 const char *table, uint32_t op)
{
	for (size_t i = 0; i < n; i++)
		if (e[i].op == op && !strcmp(e[i].table, table))
			return &e[i];
	return NULL;
}

static void expect_matches(const struct dynemb_op_stat *e, const struct seen *s,
			   const char *what)
{
	cr_assert_not_null(e, "%s: no entry", what);
	cr_expect_eq(e->requests, s->calls, "%s: %llu requests, %llu calls made", what,
		     (unsigned long long)e->requests, (unsigned long long)s->calls);
	cr_expect_eq(e->errors, s->failed, "%s errors", what);
	cr_expect_eq(e->keys, s->keys, "%s keys", what);
	cr_expect_eq(e->le[B], e->requests, "%s: +Inf is every request", what);
	cr_expect_leq((double)e->sum_ns, s->total_ns, "%s: the daemon's part of the calls", what);
	for (unsigned i = 0; i < B; i++) {
		if (i)
			cr_expect_geq(e->le[i], e->le[i - 1], "%s: cumulative", what);
		cr_expect_geq(e->le[i], s->within[i], "%s bucket %u: %llu requests within 1us<<%u, "
			      "but %llu calls took no longer here", what, i,
			      (unsigned long long)e->le[i], i, (unsigned long long)s->within[i]);
	}
	for (unsigned i = 0; i < 4; i++)
		cr_expect_eq(e->reserved[i], 0);
}

/* ---- opstats ------------------------------------------------------------------------------ */

TestSuite(opstats, .init = setup, .fini = teardown, .timeout = 120);

Test(opstats, counts_match_the_calls_made)
{
	dynemb_client *c = conn_at(sock);
	struct dynemb_op_stat e[32];
	size_t n = 99;
	struct dynemb_wal_stats w;
	memset(&w, 0xa5, sizeof w);
	int err = dynemb_op_stats(c, e, 32, &n, &w);
	cr_assert_eq(err, 0, "op stats: %s", dynemb_strerror(err));
	cr_expect_eq(n, 0, "no table yet: no entry");
	cr_expect_eq(w.present, 0, "no data_dir: no WAL");
	cr_expect_eq(w.bytes_written, 0);

	int ta = open_t(c, "alpha", 4, false), tb = open_t(c, "beta", 16, false);
	struct seen la = { 0 }, ua = { 0 }, ga = { 0 }, lb = { 0 }, ub = { 0 };
	work_on(c, ta, 4, 37, 11, 5, &la, &ua, &ga);
	work_on(c, tb, 16, 3, 2, 0, &lb, &ub, NULL);
	err = dynemb_op_stats(c, e, 32, &n, &w);
	cr_assert_eq(err, 0, "op stats: %s", dynemb_strerror(err));
	cr_assert_eq(n, 5, "alpha: lookup, update, apply_grads; beta: lookup, update (%zu)", n);
	expect_matches(find(e, n, "alpha", DYNEMB_OP_LOOKUP), &la, "alpha lookup");
	expect_matches(find(e, n, "alpha", DYNEMB_OP_UPDATE), &ua, "alpha update");
	expect_matches(find(e, n, "alpha", DYNEMB_OP_APPLY_GRADS), &ga, "alpha apply_grads");
	expect_matches(find(e, n, "beta", DYNEMB_OP_LOOKUP), &lb, "beta lookup");
	expect_matches(find(e, n, "beta", DYNEMB_OP_UPDATE), &ub, "beta update");
	cr_expect_null(find(e, n, "alpha", DYNEMB_OP_ERASE), "an op never asked: no entry");
	/* table by table in the registry's order (dynemb_list_tables'), ops ascending */
	struct dynemb_table_info ti[4];
	size_t nt = 0, total = 0;
	cr_assert_eq(dynemb_list_tables(c, 0, ti, 4, &nt, &total), 0);
	cr_assert_eq(nt, 2);
	cr_expect_str_eq(e[0].table, ti[0].name);
	cr_expect_str_eq(e[n - 1].table, ti[1].name);
	for (size_t i = 1; i < n; i++)
		if (!strcmp(e[i].table, e[i - 1].table))
			cr_expect_gt(e[i].op, e[i - 1].op);

	/* -ENOBUFS: the first cap entries, *n says how many there are, the text says so */
	struct dynemb_op_stat small[2];
	err = dynemb_op_stats(c, small, 2, &n, NULL);
	cr_expect_eq(err, -ENOBUFS);
	cr_expect_eq(n, 5, "how many there are");
	cr_expect_str_eq(small[0].table, e[0].table);
	cr_expect_eq(small[1].op, e[1].op);
	cr_expect(strstr(dynemb_strerror(err), "5 per-op entries, room for 2"), "%s",
		  dynemb_strerror(err));
	err = dynemb_op_stats(c, NULL, 0, &n, NULL);
	cr_expect_eq(err, -ENOBUFS, "cap 0 counts");
	cr_expect_eq(n, 5);
	cr_expect_eq(dynemb_op_stats(c, e, 2, NULL, NULL), -EINVAL);
	cr_expect(strstr(dynemb_strerror(-EINVAL), "n is NULL"), "%s", dynemb_strerror(-EINVAL));
	cr_expect_eq(dynemb_op_stats(c, NULL, 2, &n, NULL), -EINVAL);
	cr_expect_eq(dynemb_op_stats(NULL, e, 2, &n, NULL), -EINVAL);
	cr_expect(dynemb_capabilities(c) & DYNEMB_CAP_OPSTATS);
	cr_expect_eq(dynemb_struct_size("dynemb_op_stat"), sizeof(struct dynemb_op_stat));
	cr_expect_eq(dynemb_struct_size("dynemb_wal_stats"), sizeof(struct dynemb_wal_stats));
	dynemb_close(c);
}

Test(opstats, pages_over_several_replies)
{
	/* 11 tables with 2 ops each: at most 4 tables (15 entries) per reply, so 3 replies */
	enum { NT = 11 };
	dynemb_client *c = conn_at(sock);
	struct seen l[NT], u[NT];
	memset(l, 0, sizeof l);
	memset(u, 0, sizeof u);
	char names[NT][16];
	for (unsigned i = 0; i < NT; i++) {
		snprintf(names[i], sizeof names[i], "p%02u", i);
		int t = open_t(c, names[i], 2, false);
		work_on(c, t, 2, 1 + i, 1 + i % 3, 0, &l[i], &u[i], NULL);
	}
	/* a table with no request yet: listed by TABLES, absent here */
	open_t(c, "idle", 2, false);
	struct dynemb_op_stat e[64];
	size_t n = 0;
	int err = dynemb_op_stats(c, e, 64, &n, NULL);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	cr_assert_eq(n, 2 * NT, "%zu entries", n);
	for (unsigned i = 0; i < NT; i++) {
		char what[200];
		snprintf(what, sizeof what, "%s lookup", names[i]);
		expect_matches(find(e, n, names[i], DYNEMB_OP_LOOKUP), &l[i], what);
		snprintf(what, sizeof what, "%s update", names[i]);
		expect_matches(find(e, n, names[i], DYNEMB_OP_UPDATE), &u[i], what);
	}
	cr_expect_null(find(e, n, "idle", DYNEMB_OP_LOOKUP));
	for (size_t i = 0; i < n; i++) /* each (table, op) once */
		for (size_t j = i + 1; j < n; j++)
			cr_expect(e[i].op != e[j].op || strcmp(e[i].table, e[j].table),
				  "%s op %u twice", e[i].table, e[i].op);
	dynemb_close(c);
}

TestSuite(opstats_wal, .init = setup_data, .fini = teardown, .timeout = 120);

Test(opstats_wal, sync_writes_show_in_the_wal_part)
{
	dynemb_client *c = conn_at(sock);
	int t = open_t(c, "durable", 4, true);
	struct seen l = { 0 }, u = { 0 };
	work_on(c, t, 4, 2, 9, 0, &l, &u, NULL);
	struct dynemb_op_stat e[8];
	size_t n = 0;
	struct dynemb_wal_stats w;
	int err = dynemb_op_stats(c, e, 8, &n, &w);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	struct dynemb_status st;
	cr_assert_eq(dynemb_status(c, &st), 0);
	cr_expect_eq(w.present, 1);
	cr_expect_geq(w.last_lsn, 9, "9 sync updates logged: lsn %llu",
		      (unsigned long long)w.last_lsn);
	cr_expect_eq(w.durable_lsn, w.last_lsn, "sync: every acknowledged record is durable");
	cr_expect_leq(w.last_lsn, st.wal_last_lsn, "STATUS later");
	cr_expect_gt(w.bytes_written, 9ull * NKEYS * 4 * 4, "9 x 64 rows of 4 floats");
	cr_expect_geq(w.flushes, 9, "a sync write waits for its own flush");
	cr_expect_geq(w.fsyncs, 9);
	cr_expect_gt(w.flush_le[B], 0);
	cr_expect_leq(w.flush_le[B], w.flushes, "successful flushes");
	for (unsigned i = 1; i <= B; i++)
		cr_expect_geq(w.flush_le[i], w.flush_le[i - 1], "cumulative");
	expect_matches(find(e, n, "durable", DYNEMB_OP_UPDATE), &u, "durable update");
	dynemb_close(c);
}

/* ---- untrusted: a proxy that spoils the daemon's OPSTATS replies ------------------------ */

struct proxy {
	char path[108];
	int lfd;
	void (*spoil)(struct de_msg_opstats_ok *ok);
	pthread_t th;
};

/* One packet from `from` to `to`, fds and all; OPSTATS_OK spoiled on the way. 0 on EOF. */
static ssize_t relay(struct proxy *p, int from, int to)
{
	union {
		uint64_t align;
		char b[DE_MSG_MAX];
	} buf;
	union {
		struct cmsghdr a;
		char b[CMSG_SPACE(8 * sizeof(int))];
	} cb;
	struct iovec iov = { .iov_base = buf.b, .iov_len = sizeof buf.b };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cb.b,
			     .msg_controllen = sizeof cb.b };
	ssize_t r = recvmsg(from, &mh, MSG_CMSG_CLOEXEC);
	if (r <= 0)
		return r;
	int fds[8], nfds = 0;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
			int k = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
			for (int i = 0; i < k && nfds < 8; i++)
				memcpy(&fds[nfds++], CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
		}
	struct de_msg_hdr h;
	memcpy(&h, buf.b, sizeof h);
	if (p->spoil && h.type == DE_MSG_OPSTATS_OK && r == sizeof(struct de_msg_opstats_ok))
		p->spoil((struct de_msg_opstats_ok *)(void *)buf.b);
	iov.iov_len = (size_t)r;
	struct msghdr out = { .msg_iov = &iov, .msg_iovlen = 1 };
	if (nfds) {
		out.msg_control = cb.b;
		out.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
		struct cmsghdr *cm = CMSG_FIRSTHDR(&out);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(nfds * sizeof(int));
		memcpy(CMSG_DATA(cm), fds, nfds * sizeof(int));
	}
	ssize_t s = sendmsg(to, &out, MSG_NOSIGNAL);
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	return s < 0 ? 0 : r;
}

static void *proxy_main(void *arg)
{
	struct proxy *p = arg;
	int cl = accept4(p->lfd, NULL, NULL, SOCK_CLOEXEC);
	if (cl < 0)
		return NULL;
	int d = daemon_connect(sock);
	if (d < 0) {
		close(cl);
		return NULL;
	}
	for (;;) {
		struct pollfd pf[2] = { { .fd = cl, .events = POLLIN },
					{ .fd = d, .events = POLLIN } };
		if (poll(pf, 2, 20000) <= 0)
			break;
		if ((pf[0].revents & (POLLIN | POLLHUP)) && relay(p, cl, d) <= 0)
			break;
		if ((pf[1].revents & (POLLIN | POLLHUP)) && relay(p, d, cl) <= 0)
			break;
	}
	close(cl);
	close(d);
	return NULL;
}

static void proxy_start(struct proxy *p)
{
	static unsigned seq;
	snprintf(p->path, sizeof p->path, "%s/proxy.%u", work, seq++);
	p->lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	cr_assert_geq(p->lfd, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", p->path);
	cr_assert_eq(bind(p->lfd, (struct sockaddr *)&sa, sizeof sa), 0);
	cr_assert_eq(listen(p->lfd, 2), 0);
	cr_assert_eq(pthread_create(&p->th, NULL, proxy_main, p), 0);
}

static void proxy_stop(struct proxy *p)
{
	pthread_join(p->th, NULL);
	close(p->lfd);
	unlink(p->path);
}

/* dynemb_op_stats through a proxy that spoils the reply with fn: its result, and its
 * text in why. */
static int spoiled(void (*fn)(struct de_msg_opstats_ok *), char *why, size_t cap)
{
	struct proxy p = { .spoil = fn };
	proxy_start(&p);
	dynemb_client *c = conn_at(p.path);
	struct dynemb_op_stat e[16];
	size_t n = 0;
	struct dynemb_wal_stats w;
	int err = dynemb_op_stats(c, e, 16, &n, &w);
	snprintf(why, cap, "%s", dynemb_strerror(err));
	if (!err)
		cr_expect_eq(n, 4, "the unspoiled reply: 2 tables x 2 ops");
	dynemb_close(c);
	proxy_stop(&p);
	return err;
}

static void sp_count(struct de_msg_opstats_ok *o) { o->count = DE_OPSTATS_ENTRIES + 1; }
static void sp_ntables(struct de_msg_opstats_ok *o) { o->ntables = DE_OPSTATS_TABLES + 1; }
static void sp_no_table(struct de_msg_opstats_ok *o) { o->ntables = 0; }
static void sp_past_total(struct de_msg_opstats_ok *o) { o->ntables = 3; }
static void sp_table_index(struct de_msg_opstats_ok *o) { o->op[1].table = o->ntables; }
static void sp_op0(struct de_msg_opstats_ok *o) { o->op[0].op = 0; }
static void sp_op_big(struct de_msg_opstats_ok *o) { o->op[0].op = DE_OP_MAX + 1; }
static void sp_order(struct de_msg_opstats_ok *o)
{
	struct de_wire_op_stat t = o->op[0];
	o->op[0] = o->op[1];
	o->op[1] = t;
}
static void sp_bucket_down(struct de_msg_opstats_ok *o) { o->op[0].le[0] = o->op[0].requests + 1; }
static void sp_inf(struct de_msg_opstats_ok *o) { o->op[0].requests++; }
static void sp_errors(struct de_msg_opstats_ok *o) { o->op[0].errors = o->op[0].requests + 1; }
static void sp_zero_requests(struct de_msg_opstats_ok *o)
{
	memset(o->op[3].le, 0, sizeof o->op[3].le);
	o->op[3].requests = 0;
}
static void sp_name_open(struct de_msg_opstats_ok *o) { memset(o->names[0], 'x', DE_NAME_MAX); }
static void sp_name_empty(struct de_msg_opstats_ok *o) { o->names[1][0] = 0; }
static void sp_first(struct de_msg_opstats_ok *o) { o->first = 1; }
static void sp_wal_present(struct de_msg_opstats_ok *o) { o->wal.present = 2; }
static void sp_wal_ghost(struct de_msg_opstats_ok *o) { o->wal.bytes_written = 5; }
static void sp_wal_lsn(struct de_msg_opstats_ok *o)
{
	o->wal.present = 1;
	o->wal.durable_lsn = 1;
}
static void sp_wal_hist(struct de_msg_opstats_ok *o)
{
	o->wal.present = 1;
	o->wal.flush_le[0] = 1;
}

TestSuite(untrusted, .init = setup, .fini = teardown, .timeout = 120);

Test(untrusted, every_spoiled_field_is_refused_and_named)
{
	dynemb_client *c = conn_at(sock);
	struct seen s[4];
	memset(s, 0, sizeof s);
	work_on(c, open_t(c, "u1", 2, false), 2, 2, 1, 0, &s[0], &s[1], NULL);
	work_on(c, open_t(c, "u2", 2, false), 2, 1, 1, 0, &s[2], &s[3], NULL);
	dynemb_close(c);

	char why[512];
	cr_assert_eq(spoiled(NULL, why, sizeof why), 0, "through the proxy unspoiled: %s", why);
	static const struct {
		void (*fn)(struct de_msg_opstats_ok *);
		const char *text;
	} cases[] = {
		{ sp_count, "16 entries, more than one reply holds" },
		{ sp_ntables, "5 tables and" },
		{ sp_no_table, "no table from 0 of 2" },
		{ sp_past_total, "3 tables from 0 of 2" },
		{ sp_table_index, "entry 1: table 2 of 2" },
		{ sp_op0, "entry 0: op 0 (1..8)" },
		{ sp_op_big, "entry 0: op 9 (1..8)" },
		{ sp_order, "entry 1: out of order" },
		{ sp_bucket_down, "entry 0: bucket 1 holds fewer than bucket 0" },
		{ sp_inf, "entry 0: its last bucket (+Inf) is not its count" },
		{ sp_errors, "errors" },
		{ sp_zero_requests, "entry 3: 0 requests" },
		{ sp_name_open, "table name 0 is not terminated" },
		{ sp_name_empty, "table name 1 is empty" },
		{ sp_first, "it answers first 1, asked 0" },
		{ sp_wal_present, "WAL present 2" },
		{ sp_wal_ghost, "WAL counters without a WAL" },
		{ sp_wal_lsn, "WAL durable lsn 1 past the last, 0" },
		{ sp_wal_hist, "WAL 0: bucket 1 holds fewer than bucket 0" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		int err = spoiled(cases[i].fn, why, sizeof why);
		cr_expect_eq(err, -EBADMSG, "case %zu (%s): %d", i, cases[i].text, err);
		cr_expect(strstr(why, "malformed OPSTATS reply") && strstr(why, cases[i].text),
			  "case %zu: wanted '%s' in: %s", i, cases[i].text, why);
	}
}

Test(untrusted, daemon_refuses_a_nonzero_pad)
{
	int fd = daemon_connect(sock);
	cr_assert_geq(fd, 0);
	struct de_msg_hello hello;
	memset(&hello, 0, sizeof hello);
	hello.h = (struct de_msg_hdr){ .magic = DE_MSG_MAGIC, .type = DE_MSG_HELLO,
				       .version = DE_PROTO_VERSION, .len = sizeof hello, .seq = 1 };
	cr_assert_eq(send(fd, &hello, sizeof hello, MSG_NOSIGNAL), (ssize_t)sizeof hello);
	char buf[DE_MSG_MAX];
	union {
		struct cmsghdr a;
		char b[CMSG_SPACE(4 * sizeof(int))];
	} cb;
	struct iovec iov = { .iov_base = buf, .iov_len = sizeof buf };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cb.b,
			     .msg_controllen = sizeof cb.b };
	cr_assert_eq(recvmsg(fd, &mh, MSG_CMSG_CLOEXEC), (ssize_t)sizeof(struct de_msg_hello_ok));
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
	if (cm) {
		int k;
		memcpy(&k, CMSG_DATA(cm), sizeof k);
		close(k);
	}
	struct de_msg_tables m;
	memset(&m, 0, sizeof m);
	m.h = (struct de_msg_hdr){ .magic = DE_MSG_MAGIC, .type = DE_MSG_OPSTATS,
				   .version = DE_PROTO_VERSION, .len = sizeof m, .seq = 2 };
	m.pad = 1;
	cr_assert_eq(send(fd, &m, sizeof m, MSG_NOSIGNAL), (ssize_t)sizeof m);
	struct de_msg_error e;
	memset(&e, 0, sizeof e);
	cr_assert_eq(recv(fd, &e, sizeof e, 0), (ssize_t)sizeof e);
	cr_expect_eq(e.h.type, DE_MSG_ERROR);
	cr_expect_eq(e.err, -EINVAL);
	e.msg[sizeof e.msg - 1] = 0;
	cr_expect(strstr(e.msg, "OPSTATS: a nonzero pad"), "%s", e.msg);
	/* still served */
	m.pad = 0;
	m.h.seq = 3;
	cr_assert_eq(send(fd, &m, sizeof m, MSG_NOSIGNAL), (ssize_t)sizeof m);
	struct de_msg_opstats_ok ok;
	cr_assert_eq(recv(fd, &ok, sizeof ok, 0), (ssize_t)sizeof ok);
	cr_expect_eq(ok.h.type, DE_MSG_OPSTATS_OK);
	cr_expect_eq(ok.total, 0);
	cr_expect_eq(ok.count, 0);
	close(fd);
}

/* ---- top ------------------------------------------------------------------------------------ */

struct out {
	int status;
	char out[65536], err[4096];
	char out_path[160];
	double secs;
};

/* $DYNEMBCTL --socket sock ARGS... with stdout and stderr to files (daemon_util.h). */
static void ctl_run(struct out *o, const char *const *args)
{
	double t0 = now_s();
	o->status = daemon_ctl_run(sock, work, args, o->out, sizeof o->out, o->err,
				   sizeof o->err, o->out_path, sizeof o->out_path);
	o->secs = now_s() - t0;
	cr_assert_geq(o->status, 0, "DYNEMBCTL names the dynembctl binary, which could run");
}
#define CTL(o, ...) ctl_run((o), (const char *const[]){ __VA_ARGS__, NULL })

/* Python checks every line of the file as JSON: expr (over frames, the list; v the
 * argument) holds. */
static bool frames_hold(const char *path, const char *expr, const char *v)
{
	const char *py = getenv("PYTHON");
	if (!py || !*py)
		py = "python3";
	char prog[4096];
	snprintf(prog, sizeof prog,
		 "import json, sys\n"
		 "frames = [json.loads(l) for l in open(sys.argv[1], encoding='utf-8')]\n"
		 "v = sys.argv[2]\n"
		 "def op(f, t, o):\n"
		 "    return [x for x in [y for y in f['tables'] if y['name'] == t][0]['ops']"
		 " if x['op'] == o][0]\n"
		 "ok = (%s)\n"
		 "sys.exit(0 if ok else (print(frames, file=sys.stderr) or 1))\n", expr);
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

TestSuite(top, .init = setup, .fini = teardown, .timeout = 120);

Test(top, json_frames_count_the_calls_made)
{
	dynemb_client *c = conn_at(sock);
	int t = open_t(c, "tt", 4, false);
	struct seen l = { 0 }, u = { 0 }, g = { 0 };
	work_on(c, t, 4, 23, 7, 3, &l, &u, &g);
	struct out o;
	CTL(&o, "top", "--json", "--iterations", "2", "--interval", "200");
	cr_assert_eq(o.status, 0, "%s", o.err);
	cr_expect_geq(o.secs, 0.4, "two intervals of 200 ms: %.3f s", o.secs);
	cr_expect_lt(o.secs, 10.0);
	/* no work during top: totals are the calls made, the intervals saw none */
	cr_expect(frames_hold(o.out_path,
			      "len(frames) == 2 and [f['frame'] for f in frames] == [1, 2] and "
			      "all(f['ok'] and f['command'] == 'top' and "
			      "0.15 <= f['interval_s'] <= 1.0 and "
			      "f['peers'] == 'none' and f['wal'] is None and "
			      "op(f, 'tt', 'lookup')['requests'] == 23 and "
			      "op(f, 'tt', 'lookup')['keys'] == 23 * 64 and "
			      "op(f, 'tt', 'update')['requests'] == 7 and "
			      "op(f, 'tt', 'apply_grads')['requests'] == 3 and "
			      "op(f, 'tt', 'apply_grads')['errors'] == 3 and "
			      "op(f, 'tt', 'lookup')['delta_requests'] == 0 and "
			      "op(f, 'tt', 'lookup')['requests_per_s'] == 0 and "
			      "op(f, 'tt', 'lookup')['p99_us'] is None and "
			      "op(f, 'tt', 'lookup')['le'][-1] == 23 and "
			      "[x for x in f['tables'] if x['name'] == 'tt'][0]['rows'] == 64 "
			      "for f in frames) and "
			      "frames[1]['prev_poll_end_ns'] == frames[0]['poll_end_ns']", NULL),
		  "%s", o.out);
	dynemb_close(c);
}

Test(top, text_frame_and_exits)
{
	dynemb_client *c = conn_at(sock);
	int t = open_t(c, "shown", 4, false);
	struct seen l = { 0 }, u = { 0 };
	work_on(c, t, 4, 5, 1, 0, &l, &u, NULL);
	struct out o;
	/* not a terminal, no --iterations: one frame, then exit */
	CTL(&o, "top", "--interval", "100");
	cr_assert_eq(o.status, 0, "%s", o.err);
	cr_expect_lt(o.secs, 10.0);
	cr_expect(strstr(o.out, "frame 1, interval"), "%s", o.out);
	cr_expect_null(strstr(o.out, "frame 2"), "one frame: %s", o.out);
	cr_expect_null(strstr(o.out, "\033["), "no ANSI codes off a terminal");
	cr_expect(strstr(o.out, "shown"), "%s", o.out);
	cr_expect(strstr(o.out, "lookup"), "%s", o.out);
	cr_expect(strstr(o.out, "peers  none"), "%s", o.out);
	cr_expect(strstr(o.out, "wal    none (no data directory)"), "%s", o.out);
	CTL(&o, "top", "--iterations", "3", "--interval", "50");
	cr_assert_eq(o.status, 0, "%s", o.err);
	cr_expect(strstr(o.out, "frame 3, interval") && !strstr(o.out, "frame 4"), "%s", o.out);

	/* usage */
	CTL(&o, "top", "--interval", "0");
	cr_expect_eq(o.status, 2);
	cr_expect(strstr(o.err, "--interval takes 10..3600000"), "%s", o.err);
	CTL(&o, "top", "--iterations", "x");
	cr_expect_eq(o.status, 2);
	CTL(&o, "top", "--iterations");
	cr_expect_eq(o.status, 2);
	cr_expect(strstr(o.err, "needs a value"), "%s", o.err);
	CTL(&o, "top", "extra");
	cr_expect_eq(o.status, 2);
	CTL(&o, "status", "--interval", "5");
	cr_expect_eq(o.status, 2, "--interval is top's");
	dynemb_close(c);

	/* a daemon that goes away: exit 1 with the reason, JSON too */
	daemon_terminate(d_pid, 10);
	d_pid = -1;
	CTL(&o, "top", "--json");
	cr_expect_eq(o.status, 1);
	cr_expect(strstr(o.out, "\"ok\": false") && strstr(o.out, "\"command\": \"top\""), "%s",
		  o.out);
}
