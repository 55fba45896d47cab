/*
 * test_daemon.c — dynembd end to end: the real daemon binary runs as a child process on a
 * socket in a private temporary directory, and the tests speak the raw protocol of
 * src/proto.h (their own SEQPACKET + SCM_RIGHTS helpers, de_channel_attach on the channel
 * fd, the segments attached read-only through libdeshm), checking results against values
 * computed here. No code of the daemon is linked: it is reached only through its socket
 * (worker.h is included for SRV_MAX_CLIENTS_PER_WORKER alone).
 *
 * The suite "daemon": HELLO/OPEN/SEGMENTS and the data-plane ops, string keys, tables
 * shared between processes and connections, permissions, every malformed control packet
 * and descriptor, a client killed mid-batch, a scribbled ring, an idle daemon's CPU, the
 * SIGTERM drain, a client that never reaps, a full worker.
 * The suite "gate": the connection gate at accept: idle connections of one uid capped
 * (-EUSERS) and closed after hello_timeout_ms, another uid's flood (as uid 65534, root
 * only) locking nobody out, a uid not on the allow-list closed at accept (-EACCES), the
 * daemon's own uid refused unless listed, and the daemon not dumpable (its /proc/PID/fd
 * closed to its own uid).
 * The suite "learn" checks the learning config of OPEN (every validation failure, the
 * -EEXIST rules, nslots derived from the optimizer) and APPLY_GRADS (results against an
 * SGD and an Adagrad computed here; every rejected descriptor).
 * The daemon's string-key store as a unit: test_keystore.c; the daemon's descriptor and
 * config checks linked directly: test_daemon_learn.c.
 *
 * The daemon is started through tests/daemon_util.h (the binary from $DYNEMBD, which meson
 * sets to the built path; the daemon's own page and segment defaults; log level info; its
 * stderr to a log file in the test's directory). PR_SET_PDEATHSIG means a failed
 * assertion (which ends the test process) never leaves a daemon behind. Every wait is
 * bounded (TIMEOUT_MS per reply). A daemon that exits at start or stops uncleanly has
 * its log printed; DYNEMBD_TEST_SHOW_LOGS=1 prints each daemon's log when its test ends.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon_util.h"
#include "de_shm.h"
#include "proto.h"
#include "worker.h" /* SRV_MAX_CLIENTS_PER_WORKER: its header only, nothing linked */

#define TIMEOUT_MS 3000
#define MiB (1ull << 20)
#define DATA (8 * MiB)  /* data area the tests ask for */
#define KOFF 0ull
#define VOFF (1 * MiB)
#define SOFF (7 * MiB)

/* ---- the daemon as a child process (tests/daemon_util.h) ------------------------------ */

/* One test's daemon: its pid and its private directory, which holds the log and run/,
 * where the daemon creates its socket. */
struct dmn {
	pid_t pid;
	char dir[64], sock[128], log[128];
};

/* Start dynembd with extra flags (NULL-terminated) and wait until it accepts; a daemon
 * that exits first fails the test with its log shown. */
static void dmn_start(struct dmn *d, const char *const *extra)
{
	const char *bin = daemon_bin();
	strcpy(d->dir, "/tmp/dynembd-test.XXXXXX");
	cr_assert_not_null(mkdtemp(d->dir));
	chmod(d->dir, 0755); /* the permission test connects as another user */
	snprintf(d->sock, sizeof d->sock, "%s/run/d.sock", d->dir); /* run/: the daemon creates it */
	snprintf(d->log, sizeof d->log, "%s/log", d->dir);
	const char *argv[32];
	daemon_argv_defaults(argv, 32, bin, d->sock, "info", extra);
	d->pid = daemon_spawn(argv, SIGKILL, d->log);
	/* 10 s, generous: a sanitizer build starts slowly */
	int st = 0, r = daemon_await_listen(d->pid, d->sock, 10, &st);
	if (r == -ECHILD) {
		daemon_show_log(d->log);
		cr_assert_fail("the daemon exited at start (status %d)", st);
	}
	cr_assert_eq(r, 0, "the daemon did not come up");
}

/* SIGTERM, wait (SIGKILL after 8 s): 0 after exit 0; else, with the log shown, the exit
 * code or 128 + the signal (137: it had to be killed). */
static int dmn_stop(struct dmn *d)
{
	int st = daemon_terminate(d->pid, 8);
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
		return 0;
	daemon_show_log(d->log);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void dmn_cleanup(struct dmn *d)
{
	char p[160];
	daemon_show_log_if_asked(d->log);
	unlink(d->log);
	snprintf(p, sizeof p, "%s/run", d->dir);
	rmdir(p);
	rmdir(d->dir);
}

/* ---- raw protocol --------------------------------------------------------------------- */

static void hdr(struct de_msg_hdr *h, uint16_t type, uint32_t len, uint32_t seq)
{
	*h = (struct de_msg_hdr){ .magic = DE_MSG_MAGIC, .type = type,
				  .version = DE_PROTO_VERSION, .len = len, .seq = seq };
}

static int send_raw(int fd, const void *m, size_t n, int passfd)
{
	struct iovec iov = { .iov_base = (void *)m, .iov_len = n };
	union {
		char b[CMSG_SPACE(sizeof(int))];
		struct cmsghdr a;
	} u;
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	if (passfd >= 0) {
		memset(&u, 0, sizeof u);
		mh.msg_control = u.b;
		mh.msg_controllen = sizeof u.b;
		struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &passfd, sizeof(int));
	}
	return sendmsg(fd, &mh, MSG_NOSIGNAL) == (ssize_t)n ? 0 : -errno;
}

/* One packet (bounded wait): bytes, 0 at EOF, -ETIMEDOUT. fds received go to fds. */
static ssize_t recv_raw(int fd, void *buf, size_t cap, int *fds, unsigned *nfds)
{
	if (nfds)
		*nfds = 0;
	struct pollfd p = { .fd = fd, .events = POLLIN };
	if (poll(&p, 1, TIMEOUT_MS) != 1)
		return -ETIMEDOUT;
	union {
		char b[CMSG_SPACE(sizeof(int) * 253)];
		struct cmsghdr a;
	} u;
	struct iovec iov = { .iov_base = buf, .iov_len = cap };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b,
			     .msg_controllen = sizeof u.b };
	ssize_t r = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
	if (r < 0)
		return -errno;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
		unsigned k = (unsigned)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		for (unsigned j = 0; j < k; j++) {
			int f;
			memcpy(&f, CMSG_DATA(cm) + j * sizeof(int), sizeof f);
			if (fds && nfds && *nfds < 256)
				fds[(*nfds)++] = f;
			else
				close(f);
		}
	}
	return r;
}

struct cli {
	int sock;
	de_channel *ch;
	char *data;
	uint64_t data_bytes;
	uint32_t max_batch, seq;
	int32_t err;           /* the last ERROR's code */
	char msg[240];         /* and its message */
};

/* Connect and HELLO: 0, or the daemon's negative error. */
static int cli_hello(struct cli *c, const char *path)
{
	memset(c, 0, sizeof *c);
	c->sock = daemon_connect(path);
	if (c->sock < 0)
		return c->sock;
	struct de_msg_hello h = { .sq_entries = 256, .data_bytes = DATA };
	hdr(&h.h, DE_MSG_HELLO, sizeof h, ++c->seq);
	strcpy(h.name, "test");
	/* a daemon that refused the connection at accept may have closed it already: its
	 * ERROR is still there to read */
	int sent = send_raw(c->sock, &h, sizeof h, -1);
	if (sent && sent != -EPIPE && sent != -ECONNRESET)
		return -EIO;
	char buf[DE_MSG_MAX];
	int fds[256];
	unsigned nfds;
	ssize_t r = recv_raw(c->sock, buf, sizeof buf, fds, &nfds);
	if (r <= 0)
		return r ? (int)r : -ECONNRESET;
	struct de_msg_hdr *rh = (void *)buf;
	if (rh->type == DE_MSG_ERROR) {
		struct de_msg_error *e = (void *)buf;
		c->err = e->err;
		memcpy(c->msg, e->msg, sizeof c->msg);
		return e->err;
	}
	if (rh->type != DE_MSG_HELLO_OK || r != sizeof(struct de_msg_hello_ok) || nfds != 1)
		return -EBADMSG;
	struct de_msg_hello_ok *ok = (void *)buf;
	c->max_batch = ok->max_batch;
	int err = de_channel_attach(fds[0], &c->ch);
	close(fds[0]);
	if (err)
		return err;
	c->data = de_channel_data(c->ch, &c->data_bytes);
	return 0;
}

static void cli_close(struct cli *c)
{
	de_channel_destroy(c->ch);
	c->ch = NULL;
	if (c->sock >= 0)
		close(c->sock);
	c->sock = -1;
}

static struct de_wire_table_config int_cfg(uint32_t dim, float init)
{
	return (struct de_wire_table_config){ .dim = dim, .init = DE_INIT_CONSTANT, .init_a = init,
					      .seed = 42, .key_type = DE_KEYS_INT64 };
}

/* OPEN with a learning config (NULL: all zeros): the table id (>= 0) or the daemon's
 * negative error. fds: segment fds (closed unless the caller passes somewhere to keep
 * them). */
static int cli_open_learn(struct cli *c, const char *name, const struct de_wire_table_config *cfg,
			  const struct de_wire_learn_config *learn, int *fds, unsigned *nfds)
{
	struct de_msg_open m;
	memset(&m, 0, sizeof m);
	hdr(&m.h, DE_MSG_OPEN, sizeof m, ++c->seq);
	snprintf(m.name, sizeof m.name, "%s", name);
	m.cfg = *cfg;
	if (learn)
		m.learn = *learn;
	if (send_raw(c->sock, &m, sizeof m, -1))
		return -EIO;
	char buf[DE_MSG_MAX];
	int f[256];
	unsigned nf;
	ssize_t r = recv_raw(c->sock, buf, sizeof buf, f, &nf);
	if (r <= 0)
		return r ? (int)r : -ECONNRESET;
	struct de_msg_hdr *rh = (void *)buf;
	cr_assert_eq(rh->seq, c->seq, "a reply carries its request's seq");
	if (fds && nfds) {
		memcpy(fds, f, nf * sizeof(int));
		*nfds = nf;
	} else {
		for (unsigned i = 0; i < nf; i++)
			close(f[i]);
	}
	if (rh->type == DE_MSG_ERROR) {
		struct de_msg_error *e = (void *)buf;
		c->err = e->err;
		memcpy(c->msg, e->msg, sizeof c->msg);
		return e->err;
	}
	cr_assert_eq(rh->type, DE_MSG_OPEN_OK);
	struct de_msg_open_ok *ok = (void *)buf;
	cr_assert_eq(ok->dim, cfg->dim);
	cr_assert_eq(ok->nsegments, nf ? nf : ok->nsegments);
	return ok->table_id;
}

static int cli_open(struct cli *c, const char *name, const struct de_wire_table_config *cfg,
		    int *fds, unsigned *nfds)
{
	return cli_open_learn(c, name, cfg, NULL, fds, nfds);
}

/* Submit one descriptor and wait for its completion. */
static struct de_cqe cli_do(struct cli *c, const struct de_sqe *e)
{
	cr_assert_eq(de_channel_submit(c->ch, e), 0);
	struct de_cqe q;
	cr_assert_eq(de_channel_reap(c->ch, &q, true, 20000, TIMEOUT_MS), 0, "no completion");
	cr_assert_eq(q.user_data, e->user_data);
	return q;
}

static struct de_sqe int_sqe(uint8_t op, uint8_t flags, uint16_t table, uint32_t n, uint32_t dim)
{
	return (struct de_sqe){ .op = op, .flags = flags, .table = table, .count = n,
				.user_data = 0x1234, .keys_off = KOFF, .keys_len = 8ull * n,
				.vals_off = VOFF, .vals_len = 4ull * n * dim, .status_off = SOFF,
				.arg = 7 };
}

static void put_keys(struct cli *c, const uint64_t *k, uint32_t n)
{
	memcpy(c->data + KOFF, k, 8ull * n);
}

static float *vals(struct cli *c) { return (float *)(void *)(c->data + VOFF); }

/* A NOP round trip: the channel still works. */
static void nop_ok(struct cli *c)
{
	struct de_sqe e = { .op = DE_OP_NOP, .user_data = 99 };
	struct de_cqe q = cli_do(c, &e);
	cr_assert_eq(q.res, 0);
}

/* ---- tests ------------------------------------------------------------------------------ */

Test(daemon, round_trips, .timeout = 20)
{
	struct dmn d;
	dmn_start(&d, NULL);
	struct cli c;
	cr_assert_eq(cli_hello(&c, d.sock), 0);
	cr_assert_eq(c.data_bytes, DATA);
	cr_assert_eq(c.max_batch, 65536u);
	enum { DIM = 8, N = 100 };
	struct de_wire_table_config cfg = int_cfg(DIM, 0.5f);
	int fds[256];
	unsigned nfds;
	int t = cli_open(&c, "emb", &cfg, fds, &nfds);
	cr_assert_eq(t, 0);
	cr_assert_geq(nfds, 1u);
	nop_ok(&c);

	uint64_t keys[N];
	for (int i = 0; i < N; i++)
		keys[i] = 1000 + (uint64_t)i;
	put_keys(&c, keys, N);
	memset(vals(&c), 0xAB, 4ull * N * DIM);
	struct de_sqe e = int_sqe(DE_OP_LOOKUP, DE_SQE_STATUS, (uint16_t)t, N, DIM);
	struct de_cqe q = cli_do(&c, &e);
	cr_assert_eq(q.res, 0);
	cr_assert_eq(q.count, 0u, "nothing found yet");
	for (int i = 0; i < N * DIM; i++)
		cr_assert_eq(vals(&c)[i], 0.0f, "missing keys read as zeros");
	for (int i = 0; i < N; i++)
		cr_assert_eq((uint8_t)c.data[SOFF + i], DE_MISSING);

	e.flags = DE_LOOKUP_CREATE | DE_SQE_STATUS;
	q = cli_do(&c, &e);
	cr_assert_eq(q.res, 0);
	cr_assert_eq(q.count, 0u);
	cr_assert_eq(q.aux0, (uint64_t)N, "all created");
	for (int i = 0; i < N * DIM; i++)
		cr_assert_eq(vals(&c)[i], 0.5f, "constant initializer");
	for (int i = 0; i < N; i++)
		cr_assert_eq((uint8_t)c.data[SOFF + i], DE_CREATED);

	/* UPDATE keys 1050..1109: 50 exist, 10 are new; value = key * 10 + j */
	uint64_t uk[60];
	for (int i = 0; i < 60; i++)
		uk[i] = 1050 + (uint64_t)i;
	put_keys(&c, uk, 60);
	for (int i = 0; i < 60; i++)
		for (int j = 0; j < DIM; j++)
			vals(&c)[i * DIM + j] = (float)(uk[i] * 10 + (uint64_t)j);
	e = int_sqe(DE_OP_UPDATE, 0, (uint16_t)t, 60, DIM);
	q = cli_do(&c, &e);
	cr_assert_eq(q.res, 0);
	cr_assert_eq(q.count, 10u, "created by the update");

	/* ERASE 1000..1009 and one absent key */
	uint64_t ek[11];
	for (int i = 0; i < 10; i++)
		ek[i] = 1000 + (uint64_t)i;
	ek[10] = 777777;
	put_keys(&c, ek, 11);
	e = int_sqe(DE_OP_ERASE, 0, (uint16_t)t, 11, DIM);
	q = cli_do(&c, &e);
	cr_assert_eq(q.res, 0);
	cr_assert_eq(q.count, 10u);

	/* LOOKUP 1000..1109 against the reference */
	uint64_t lk[110];
	for (int i = 0; i < 110; i++)
		lk[i] = 1000 + (uint64_t)i;
	put_keys(&c, lk, 110);
	e = int_sqe(DE_OP_LOOKUP, 0, (uint16_t)t, 110, DIM);
	q = cli_do(&c, &e);
	cr_assert_eq(q.res, 0);
	cr_assert_eq(q.count, 100u, "110 asked, 10 erased");
	for (int i = 0; i < 110; i++)
		for (int j = 0; j < DIM; j++) {
			float want = i < 10 ? 0.0f : i < 50 ? 0.5f : (float)(lk[i] * 10 + (uint64_t)j);
			cr_assert_eq(vals(&c)[i * DIM + j], want, "key %d elem %d", i, j);
		}

	/* STATS */
	e = (struct de_sqe){ .op = DE_OP_STATS, .table = (uint16_t)t, .user_data = 5,
			     .vals_off = VOFF, .vals_len = sizeof(struct de_wire_stats) };
	q = cli_do(&c, &e);
	cr_assert_eq(q.res, 0);
	struct de_wire_stats ws;
	memcpy(&ws, c.data + VOFF, sizeof ws);
	cr_assert_eq(ws.keys, 100u);
	cr_assert_eq(ws.dim, (uint32_t)DIM);
	cr_assert_eq(ws.key_type, (uint32_t)DE_KEYS_INT64);

	/* The zero-copy path: the segments are readable (and only readable) here. */
	de_arena *a;
	cr_assert_eq(de_arena_attach_ro(fds, nfds, &a), 0);
	for (unsigned i = 0; i < nfds; i++) {
		cr_assert_eq(fcntl(fds[i], F_GETFL) & O_ACCMODE, O_RDONLY);
		close(fds[i]);
	}
	de_table *ro;
	cr_assert_eq(de_table_attach_ro(a, &ro), 0);
	uint64_t k = 1060;
	float row[DIM];
	uint8_t st;
	cr_assert_eq(de_table_find(ro, &k, 1, row, &st), 0);
	cr_assert_eq(st, DE_FOUND);
	cr_assert_eq(row[3], (float)(1060 * 10 + 3));
	de_table_close(ro);
	de_arena_destroy(a);

	/* The same table opened twice on one connection: the same id. */
	cr_assert_eq(cli_open(&c, "emb", &cfg, NULL, NULL), t);
	/* SEGMENTS from 0 */
	struct de_msg_segments sm = { .table_id = (uint16_t)t, .first = 0 };
	hdr(&sm.h, DE_MSG_SEGMENTS, sizeof sm, ++c.seq);
	cr_assert_eq(send_raw(c.sock, &sm, sizeof sm, -1), 0);
	char buf[DE_MSG_MAX];
	ssize_t r = recv_raw(c.sock, buf, sizeof buf, fds, &nfds);
	cr_assert_eq(r, (ssize_t)sizeof(struct de_msg_segments_ok));
	struct de_msg_segments_ok *so = (void *)buf;
	cr_assert_eq(so->h.type, DE_MSG_SEGMENTS_OK);
	cr_assert_eq(so->count, nfds);
	cr_assert_geq(nfds, 1u);
	for (unsigned i = 0; i < nfds; i++)
		close(fds[i]);

	cli_close(&c);
	cr_assert_eq(dmn_stop(&d), 0);
	cr_assert_neq(access(d.sock, F_OK), 0, "the socket file is removed");
	dmn_cleanup(&d);
}

/* String keys: u32 lengths, then the bytes. */
static uint64_t put_strings(struct cli *c, const char *const *s, uint32_t n)
{
	uint64_t off = 4ull * n;
	for (uint32_t i = 0; i < n; i++) {
		uint32_t len = (uint32_t)strlen(s[i]);
		memcpy(c->data + KOFF + 4ull * i, &len, 4);
		memcpy(c->data + KOFF + off, s[i], len);
		off += len;
	}
	return off;
}

Test(daemon, string_keys, .timeout = 20)
{
	struct dmn d;
	dmn_start(&d, NULL);
	struct cli c;
	cr_assert_eq(cli_hello(&c, d.sock), 0);
	struct de_wire_table_config cfg = int_cfg(4, 0.25f);
	cfg.key_type = DE_KEYS_STRING;
	int fds[256];
	unsigned nfds;
	int t = cli_open(&c, "words", &cfg, fds, &nfds);
	cr_assert_geq(t, 0);
	const char *words[] = { "apple", "banana", "", "cherry", "apple" };
	uint64_t klen = put_strings(&c, words, 5);
	for (int i = 0; i < 5; i++)
		for (int j = 0; j < 4; j++)
			vals(&c)[i * 4 + j] = (float)(i * 100 + j);
	struct de_sqe e = int_sqe(DE_OP_UPDATE, 0, (uint16_t)t, 5, 4);
	e.keys_len = klen;
	struct de_cqe q = cli_do(&c, &e);
	cr_assert_eq(q.res, 0);
	cr_assert_eq(q.count, 3u, "apple, banana, cherry created; '' is key 0");

	e.op = DE_OP_LOOKUP;
	e.flags = DE_SQE_STATUS;
	q = cli_do(&c, &e);
	cr_assert_eq(q.res, 0);
	cr_assert_eq(q.count, 5u);
	float want[5] = { 400, 100, 0, 300, 400 }; /* later duplicates win */
	for (int i = 0; i < 5; i++)
		for (int j = 0; j < 4; j++)
			cr_assert_eq(vals(&c)[i * 4 + j], i == 2 ? 0.0f : want[i] + (float)j);

	/* the fingerprints are de_key_from_string(seed, ...): check through the ro mapping */
	de_arena *a;
	cr_assert_eq(de_arena_attach_ro(fds, nfds, &a), 0);
	for (unsigned i = 0; i < nfds; i++)
		close(fds[i]);
	de_table *ro;
	cr_assert_eq(de_table_attach_ro(a, &ro), 0);
	uint64_t k = de_key_from_string(42, "banana", 6);
	float row[4];
	uint8_t st;
	cr_assert_eq(de_table_find(ro, &k, 1, row, &st), 0);
	cr_assert_eq(st, DE_FOUND);
	cr_assert_eq(row[1], 101.0f);
	de_table_close(ro);
	de_arena_destroy(a);

	cli_close(&c);
	cr_assert_eq(dmn_stop(&d), 0);
	dmn_cleanup(&d);
}

/* A forked client: writes or reads table "shared"; exit 0 on success. */
static int shared_client(const char *path, bool writer)
{
	struct cli c;
	if (cli_hello(&c, path))
		return 1;
	struct de_wire_table_config cfg = int_cfg(16, 0);
	int t = cli_open(&c, "shared", &cfg, NULL, NULL);
	if (t < 0)
		return 2;
	enum { N = 500 };
	for (uint32_t i = 0; i < N; i++) {
		uint64_t k = 5000 + i;
		memcpy(c.data + KOFF + 8 * i, &k, 8);
		for (int j = 0; j < 16; j++)
			vals(&c)[i * 16 + j] = writer ? (float)(k + (uint64_t)j) : -1.0f;
	}
	struct de_sqe e = int_sqe(writer ? DE_OP_UPDATE : DE_OP_LOOKUP, 0, (uint16_t)t, N, 16);
	if (de_channel_submit(c.ch, &e))
		return 3;
	struct de_cqe q;
	if (de_channel_reap(c.ch, &q, true, 0, TIMEOUT_MS) || q.res)
		return 4;
	if (q.count != N)
		return 5;
	if (!writer)
		for (uint32_t i = 0; i < N; i++)
			for (int j = 0; j < 16; j++)
				if (vals(&c)[i * 16 + j] != (float)(5000 + i + (uint32_t)j))
					return 6;
	cli_close(&c);
	return 0;
}

static int run_child(int (*fn)(const char *, bool), const char *path, bool arg)
{
	pid_t p = fork();
	cr_assert_geq(p, 0);
	if (p == 0)
		_exit(fn(path, arg));
	int st;
	cr_assert_eq(waitpid(p, &st, 0), p);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 100 + WTERMSIG(st);
}

Test(daemon, shared_between_processes, .timeout = 20)
{
	struct dmn d;
	dmn_start(&d, (const char *const[]){ "--workers", "2", NULL });
	cr_assert_eq(run_child(shared_client, d.sock, true), 0, "writer");
	cr_assert_eq(run_child(shared_client, d.sock, false), 0, "reader");
	cr_assert_eq(dmn_stop(&d), 0);
	dmn_cleanup(&d);
}

Test(daemon, same_name_other_config, .timeout = 20)
{
	struct dmn d;
	dmn_start(&d, NULL);
	struct cli a, b;
	cr_assert_eq(cli_hello(&a, d.sock), 0);
	cr_assert_eq(cli_hello(&b, d.sock), 0);
	struct de_wire_table_config c8 = int_cfg(8, 0), c16 = int_cfg(16, 0);
	cr_assert_eq(cli_open(&a, "t", &c8, NULL, NULL), 0);
	cr_assert_eq(cli_open(&b, "t", &c16, NULL, NULL), -EEXIST);
	cr_assert_not_null(strstr(b.msg, "dim"), "message names the field: %s", b.msg);
	cr_assert_eq(cli_open(&b, "t", &c8, NULL, NULL), 0, "same config: shared");
	/* bad names and configs are -EINVAL, and the connection stays */
	struct de_wire_table_config bad = c8;
	bad.reserved[2] = 1;
	cr_assert_eq(cli_open(&b, "u", &bad, NULL, NULL), -EINVAL);
	bad = c8;
	bad.dim = 5000;
	cr_assert_eq(cli_open(&b, "u", &bad, NULL, NULL), -EINVAL);
	cr_assert_eq(cli_open(&b, "", &c8, NULL, NULL), -EINVAL);
	cr_expect_str_eq(b.msg, "table name is empty: a table name is 1 to 63 bytes, without "
			 "control characters");
	cr_assert_eq(cli_open(&b, "a\x7f", &c8, NULL, NULL), -EINVAL);
	cr_expect_str_eq(b.msg, "table name has a control character at byte 1: a table name is "
			 "1 to 63 bytes, without control characters");
	struct de_msg_open m;
	memset(&m, 'x', sizeof m); /* name without NUL */
	hdr(&m.h, DE_MSG_OPEN, sizeof m, 77);
	m.cfg = c8;
	cr_assert_eq(send_raw(b.sock, &m, sizeof m, -1), 0);
	char buf[DE_MSG_MAX];
	cr_assert_eq(recv_raw(b.sock, buf, sizeof buf, NULL, NULL), (ssize_t)sizeof(struct de_msg_error));
	cr_assert_eq(((struct de_msg_error *)(void *)buf)->err, -EINVAL);
	nop_ok(&b);
	cli_close(&a);
	cli_close(&b);
	cr_assert_eq(dmn_stop(&d), 0);
	dmn_cleanup(&d);
}

static int denied_child(const char *path, bool unused)
{
	(void)unused;
	if (setresgid(65534, 65534, 65534) || setresuid(65534, 65534, 65534))
		return 10;
	struct cli c;
	int r = cli_hello(&c, path);
	if (r != -EACCES)
		return 11;
	if (!strstr(c.msg, "65534"))
		return 12;
	char b[64];
	if (recv_raw(c.sock, b, sizeof b, NULL, NULL) != 0)
		return 13; /* closed after the error */
	return 0;
}

Test(daemon, permission_denied, .timeout = 20)
{
	if (geteuid() != 0)
		cr_skip_test("needs root to switch to uid 65534");
	struct dmn d;
	dmn_start(&d, (const char *const[]){ "--allow-uid", "0", NULL });
	cr_assert_eq(run_child(denied_child, d.sock, false), 0);
	struct cli c; /* root still gets in */
	cr_assert_eq(cli_hello(&c, d.sock), 0);
	nop_ok(&c);
	cli_close(&c);
	cr_assert_eq(dmn_stop(&d), 0);
	dmn_cleanup(&d);
}

/* Send a raw packet on a fresh connection (after HELLO when `after_hello`); expect an
 * ERROR with err and then the connection closed. */
static void expect_rejected(const char *path, bool after_hello, const void *m, size_t n,
			    int32_t err, int passfd)
{
	int fd;
	struct cli c;
	if (after_hello) {
		cr_assert_eq(cli_hello(&c, path), 0);
		fd = c.sock;
	} else {
		fd = daemon_connect(path);
		cr_assert_geq(fd, 0);
	}
	cr_assert_eq(send_raw(fd, m, n, passfd), 0);
	char buf[DE_MSG_MAX];
	ssize_t r = recv_raw(fd, buf, sizeof buf, NULL, NULL);
	cr_assert_eq(r, (ssize_t)sizeof(struct de_msg_error), "an ERROR for a %zu-byte message", n);
	struct de_msg_error *e = (void *)buf;
	cr_assert_eq(e->h.type, DE_MSG_ERROR);
	cr_assert_eq(e->err, err, "got %d (%s), want %d", e->err, e->msg, err);
	cr_assert_eq(recv_raw(fd, buf, sizeof buf, NULL, NULL), 0, "then the connection closes");
	if (after_hello)
		cli_close(&c);
	else
		close(fd);
}

Test(daemon, malformed_control, .timeout = 20)
{
	struct dmn d;
	dmn_start(&d, NULL);
	struct cli good;
	cr_assert_eq(cli_hello(&good, d.sock), 0);

	struct de_msg_hello h = { 0 };
	hdr(&h.h, DE_MSG_HELLO, sizeof h, 1);
	struct de_msg_hello m = h;
	m.h.magic = 0xdeadbeef;
	expect_rejected(d.sock, false, &m, sizeof m, -EBADMSG, -1);       /* bad magic */
	expect_rejected(d.sock, false, &h, 8, -EBADMSG, -1);               /* short */
	m = h;
	m.h.len = 1u << 30;
	expect_rejected(d.sock, false, &m, sizeof m, -EBADMSG, -1);       /* huge len */
	m = h;
	m.h.len = sizeof m - 8;
	expect_rejected(d.sock, false, &m, sizeof m - 8, -EBADMSG, -1);   /* wrong length for type */
	static char big[DE_MSG_MAX + 512];
	memcpy(big, &h, sizeof h);
	((struct de_msg_hdr *)(void *)big)->len = sizeof big;
	expect_rejected(d.sock, false, big, sizeof big, -EBADMSG, -1);    /* over DE_MSG_MAX */
	struct de_msg_open o;
	memset(&o, 0, sizeof o);
	hdr(&o.h, DE_MSG_OPEN, sizeof o, 2);
	strcpy(o.name, "x");
	o.cfg = int_cfg(4, 0);
	expect_rejected(d.sock, false, &o, sizeof o, -EPROTO, -1);        /* OPEN first */
	m = h;
	m.h.version = 9;
	expect_rejected(d.sock, false, &m, sizeof m, -EPROTO, -1);        /* version */
	struct de_msg_hdr u;
	hdr(&u, 99, sizeof u, 3);
	expect_rejected(d.sock, true, &u, sizeof u, -EBADMSG, -1);        /* unknown type */
	hdr(&u, DE_MSG_OPEN_OK, sizeof u, 3);
	expect_rejected(d.sock, true, &u, sizeof u, -EBADMSG, -1);        /* a reply type */
	expect_rejected(d.sock, true, &h, sizeof h, -EPROTO, -1);         /* HELLO twice */
	int pfd[2];
	cr_assert_eq(pipe(pfd), 0);
	m = h;
	m.h.magic = 1;
	expect_rejected(d.sock, false, &m, sizeof m, -EBADMSG, pfd[0]);   /* with an fd */
	close(pfd[0]);
	close(pfd[1]);

	nop_ok(&good); /* the daemon still serves others */
	struct cli c2;
	cr_assert_eq(cli_hello(&c2, d.sock), 0);
	nop_ok(&c2);
	cli_close(&c2);
	cli_close(&good);
	cr_assert_eq(dmn_stop(&d), 0);
	dmn_cleanup(&d);
}

Test(daemon, malformed_descriptors, .timeout = 20)
{
	struct dmn d;
	dmn_start(&d, (const char *const[]){ "--max-batch", "1024", NULL });
	struct cli c, other;
	cr_assert_eq(cli_hello(&c, d.sock), 0);
	cr_assert_eq(cli_hello(&other, d.sock), 0);
	cr_assert_eq(c.max_batch, 1024u);
	enum { DIM = 4, N = 16 };
	struct de_wire_table_config cfg = int_cfg(DIM, 1.0f), scfg = cfg;
	scfg.key_type = DE_KEYS_STRING;
	int t = cli_open(&c, "m", &cfg, NULL, NULL);
	int st = cli_open(&c, "ms", &scfg, NULL, NULL);
	cr_assert_eq(t, 0);
	cr_assert_eq(st, 1);
	cr_assert_eq(cli_open(&other, "m", &cfg, NULL, NULL), 0);
	uint64_t keys[N];
	for (int i = 0; i < N; i++)
		keys[i] = 1 + (uint64_t)i;

	struct { const char *what; struct de_sqe e; int32_t res; } cases[32];
	int n = 0;
	struct de_sqe ok = int_sqe(DE_OP_LOOKUP, DE_LOOKUP_CREATE | DE_SQE_STATUS, (uint16_t)t, N, DIM);
	uint64_t D = c.data_bytes;
#define CASE(w, r, ...) do { cases[n].what = w; cases[n].e = ok; \
	{ struct de_sqe *e = &cases[n].e; (void)e; __VA_ARGS__; } cases[n++].res = r; } while (0)
	CASE("bad op", -EINVAL, e->op = 9);
	CASE("bad table id", -EINVAL, e->table = 2);
	CASE("table id far out", -EINVAL, e->table = 65535);
	CASE("count over max_batch", -E2BIG, e->count = 1025; e->keys_len = 8 * 1025;
	     e->vals_len = 4ull * 1025 * DIM);
	CASE("keys out of the data area", -EINVAL, e->keys_off = D - 64);
	CASE("keys offset huge", -EINVAL, e->keys_off = UINT64_MAX - 7);
	CASE("vals length overflow", -EINVAL, e->vals_len = UINT64_MAX - 3);
	CASE("vals out of the area", -EINVAL, e->vals_off = D - 4);
	CASE("keys misaligned", -EINVAL, e->keys_off = 4);
	CASE("vals misaligned", -EINVAL, e->vals_off = VOFF + 2);
	CASE("keys_len != 8 * count", -EINVAL, e->keys_len = 8 * N + 8);
	CASE("vals_len != count * dim * 4", -EINVAL, e->vals_len = 4 * N * DIM - 4);
	CASE("status out of the area", -EINVAL, e->status_off = D - 2);
	CASE("unknown flag", -EINVAL, e->flags |= 0x80);
	CASE("erase with flags", -EINVAL, e->op = DE_OP_ERASE);
	CASE("stats too short", -EINVAL, e->op = DE_OP_STATS; e->flags = 0; e->vals_len = 16);
	CASE("stats misaligned", -EINVAL, e->op = DE_OP_STATS; e->flags = 0; e->vals_off = VOFF + 4);
	/* string table: lengths that do not add up */
	CASE("string keys_len < 4 * count", -EINVAL, e->table = (uint16_t)st; e->keys_len = 4 * N - 4);
	CASE("string lengths sum short", -EINVAL, e->table = (uint16_t)st; e->keys_len = 4 * N + 3);
	CASE("string lengths sum long", -EINVAL, e->table = (uint16_t)st; e->keys_len = 4 * N + 200);
#undef CASE
	float *v = vals(&c);
	for (int i = 0; i < n; i++) {
		/* string keys: each of N strings "ab" (2 bytes): sum 2N */
		if (cases[i].e.table == (uint16_t)st) {
			for (int k = 0; k < N; k++) {
				uint32_t len = 2;
				memcpy(c.data + KOFF + 4 * k, &len, 4);
				memcpy(c.data + KOFF + 4 * N + 2 * k, "ab", 2);
			}
		} else {
			put_keys(&c, keys, N);
		}
		memset(v, 0x5a, 4 * N * DIM);
		memset(c.data + SOFF, 0x5a, N);
		cases[i].e.user_data = 1000 + (uint64_t)i;
		struct de_cqe q = cli_do(&c, &cases[i].e);
		cr_assert_eq(q.res, cases[i].res, "%s: res %d", cases[i].what, q.res);
		for (int k = 0; k < 4 * N * DIM; k++)
			cr_assert_eq(((uint8_t *)v)[k], 0x5a, "%s: values untouched", cases[i].what);
		for (int k = 0; k < N; k++)
			cr_assert_eq((uint8_t)c.data[SOFF + k], 0x5a, "%s: status untouched", cases[i].what);
	}
	/* nothing was created by any of them */
	struct de_sqe s = { .op = DE_OP_STATS, .table = (uint16_t)t, .vals_off = VOFF,
			    .vals_len = sizeof(struct de_wire_stats), .user_data = 1 };
	cr_assert_eq(cli_do(&c, &s).res, 0);
	cr_assert_eq(((struct de_wire_stats *)(void *)(c.data + VOFF))->keys, 0u);
	s.table = (uint16_t)st;
	cr_assert_eq(cli_do(&c, &s).res, 0);
	cr_assert_eq(((struct de_wire_stats *)(void *)(c.data + VOFF))->keys, 0u);
	/* a string over DE_MAX_KEY_BYTES */
	{
		uint32_t len = DE_MAX_KEY_BYTES + 1;
		memcpy(c.data + KOFF, &len, 4);
		struct de_sqe e = int_sqe(DE_OP_LOOKUP, 0, (uint16_t)st, 1, DIM);
		e.keys_len = 4ull + len;
		cr_assert_eq(cli_do(&c, &e).res, -EINVAL);
	}
	/* and good requests still work, here and on the other client */
	put_keys(&c, keys, N);
	struct de_cqe q = cli_do(&c, &ok);
	cr_assert_eq(q.res, 0);
	cr_assert_eq(q.aux0, (uint64_t)N);
	cr_assert_eq(v[5], 1.0f);
	put_keys(&other, keys, N);
	struct de_sqe oe = int_sqe(DE_OP_LOOKUP, 0, 0, N, DIM);
	q = cli_do(&other, &oe);
	cr_assert_eq(q.res, 0);
	cr_assert_eq(q.count, (uint32_t)N, "the other client sees the keys");
	cli_close(&c);
	cli_close(&other);
	cr_assert_eq(dmn_stop(&d), 0);
	dmn_cleanup(&d);
}

/* A client that submits big batches and is SIGKILLed while doing it. */
static int busy_child(const char *path, bool unused)
{
	(void)unused;
	struct cli c;
	if (cli_hello(&c, path))
		return 1;
	struct de_wire_table_config cfg = int_cfg(64, 0.0f);
	int t = cli_open(&c, "kill", &cfg, NULL, NULL);
	if (t < 0)
		return 2;
	for (uint32_t i = 0; i < 16384; i++) {
		uint64_t k = i + 1;
		memcpy(c.data + KOFF + 8ull * i, &k, 8);
	}
	struct de_sqe e = int_sqe(DE_OP_LOOKUP, DE_LOOKUP_CREATE, (uint16_t)t, 16384, 64);
	for (;;) { /* submit and reap forever, until killed */
		if (de_channel_submit(c.ch, &e) == 0)
			continue;
		struct de_cqe q;
		de_channel_reap(c.ch, &q, true, 0, 100);
	}
}

Test(daemon, client_killed_mid_batch, .timeout = 20)
{
	struct dmn d;
	dmn_start(&d, NULL);
	struct cli c;
	cr_assert_eq(cli_hello(&c, d.sock), 0);
	struct de_wire_table_config cfg = int_cfg(64, 0.0f);
	cr_assert_eq(cli_open(&c, "kill", &cfg, NULL, NULL), 0);
	for (int round = 0; round < 3; round++) {
		pid_t p = fork();
		cr_assert_geq(p, 0);
		if (p == 0)
			_exit(busy_child(d.sock, false));
		usleep(150000 + 50000 * (useconds_t)round);
		kill(p, SIGKILL);
		int st;
		waitpid(p, &st, 0);
		cr_assert(WIFSIGNALED(st), "the child was busy until killed (status %d)", st);
		/* the survivor is unaffected */
		uint64_t k = 3;
		put_keys(&c, &k, 1);
		struct de_sqe e = int_sqe(DE_OP_LOOKUP, 0, 0, 1, 64);
		struct de_cqe q = cli_do(&c, &e);
		cr_assert_eq(q.res, 0);
	}
	/* the daemon still accepts new clients */
	struct cli c2;
	cr_assert_eq(cli_hello(&c2, d.sock), 0);
	nop_ok(&c2);
	cli_close(&c2);
	cli_close(&c);
	cr_assert_eq(dmn_stop(&d), 0);
	dmn_cleanup(&d);
}

Test(daemon, scribbled_ring, .timeout = 20)
{
	struct dmn d;
	dmn_start(&d, NULL);
	struct cli bad, good;
	cr_assert_eq(cli_hello(&bad, d.sock), 0);
	cr_assert_eq(cli_hello(&good, d.sock), 0);
	nop_ok(&bad);
	/* map the channel raw and put the SQ tail far ahead of the head (layout: see the top
	 * of shm/channel.c: u32 sq_tail at 64, u32 sq_futex at 324), then wake the worker */
	int fd = de_channel_fd(bad.ch);
	char *raw = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	cr_assert_neq(raw, MAP_FAILED);
	uint32_t garbage = 0x7fffffffu;
	memcpy(raw + 64, &garbage, 4);
	__atomic_fetch_add((uint32_t *)(void *)(raw + 324), 1, __ATOMIC_SEQ_CST);
	syscall(SYS_futex, raw + 324, FUTEX_WAKE, 1 << 30, NULL, NULL, 0);
	char buf[64];
	cr_assert_eq(recv_raw(bad.sock, buf, sizeof buf, NULL, NULL), 0, "the scribbler is dropped");
	munmap(raw, 4096);
	nop_ok(&good);
	struct cli c3;
	cr_assert_eq(cli_hello(&c3, d.sock), 0);
	nop_ok(&c3);
	cli_close(&c3);
	cli_close(&bad);
	cli_close(&good);
	cr_assert_eq(dmn_stop(&d), 0);
	dmn_cleanup(&d);
}

static unsigned long long cpu_ticks(pid_t pid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "r");
	cr_assert_not_null(f);
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = 0;
	char *p = strrchr(buf, ')'); /* fields after the command name */
	cr_assert_not_null(p);
	unsigned long long ut, st;
	/* ") S ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime" */
	cr_assert_eq(sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st), 2);
	return ut + st;
}

Test(daemon, idle_uses_no_cpu, .timeout = 20)
{
	struct dmn d;
	dmn_start(&d, (const char *const[]){ "--workers", "2", NULL });
	struct cli a, b;
	cr_assert_eq(cli_hello(&a, d.sock), 0);
	cr_assert_eq(cli_hello(&b, d.sock), 0);
	nop_ok(&a);
	nop_ok(&b);
	usleep(200000);
	unsigned long long t0 = cpu_ticks(d.pid);
	usleep(1000000);
	unsigned long long t1 = cpu_ticks(d.pid);
	cr_log_info("idle daemon: %llu ticks in 1 s", t1 - t0);
	cr_assert_lt(t1 - t0, 2ull, "idle daemon used %llu ticks in 1 s", t1 - t0);
	nop_ok(&a);
	cli_close(&a);
	cli_close(&b);
	cr_assert_eq(dmn_stop(&d), 0);
	dmn_cleanup(&d);
}

Test(daemon, sigterm_drains, .timeout = 20)
{
	struct dmn d;
	dmn_start(&d, NULL);
	struct cli c;
	cr_assert_eq(cli_hello(&c, d.sock), 0);
	/* REQ requests that each create N new keys (distinct key ranges at KEYS2), queued at
	 * once (SQ 256, CQ 512), then SIGTERM: every one must complete, and have done its work */
	enum { DIM = 32, N = 4096, REQ = 64 };
	const uint64_t KEYS2 = 4 * MiB;
	struct de_wire_table_config cfg = int_cfg(DIM, 2.0f);
	int t = cli_open(&c, "drain", &cfg, NULL, NULL);
	cr_assert_eq(t, 0);
	for (uint32_t i = 0; i < N * REQ; i++) {
		uint64_t k = 1 + i;
		memcpy(c.data + KEYS2 + 8ull * i, &k, 8);
	}
	for (int i = 0; i < REQ; i++) {
		struct de_sqe e = int_sqe(DE_OP_LOOKUP, DE_LOOKUP_CREATE, (uint16_t)t, N, DIM);
		e.keys_off = KEYS2 + 8ull * N * (uint64_t)i;
		e.user_data = (uint64_t)i;
		cr_assert_eq(de_channel_submit(c.ch, &e), 0);
	}
	kill(d.pid, SIGTERM);
	bool seen[REQ] = { 0 };
	uint64_t created = 0;
	for (int i = 0; i < REQ; i++) {
		struct de_cqe q;
		cr_assert_eq(de_channel_reap(c.ch, &q, true, 0, 5000), 0, "completion %d of %d", i, REQ);
		cr_assert_eq(q.res, 0);
		cr_assert_lt(q.user_data, (uint64_t)REQ);
		cr_assert_not(seen[q.user_data]);
		seen[q.user_data] = true;
		created += q.aux0;
	}
	cr_assert_eq(created, (uint64_t)N * REQ, "every request created its keys");
	cr_assert_eq(vals(&c)[7], 2.0f);
	cr_assert_eq(dmn_stop(&d), 0, "exit 0 after draining");
	cr_assert_neq(access(d.sock, F_OK), 0, "the socket file is removed");
	cli_close(&c);
	dmn_cleanup(&d);
}

/* A client that never reaps: its completions wait, it stalls only itself. */
Test(daemon, client_not_reaping, .timeout = 20)
{
	struct dmn d;
	dmn_start(&d, NULL);
	struct cli slow, fast;
	cr_assert_eq(cli_hello(&slow, d.sock), 0);
	cr_assert_eq(cli_hello(&fast, d.sock), 0);
	/* SQ 256, CQ 512: submit until the SQ stays full (the CQ is full and one completion
	 * is pending in the daemon) */
	uint64_t submitted = 0;
	double end = now_s() + 5;
	int full_for = 0;
	while (full_for < 20) {
		struct de_sqe e = { .op = DE_OP_NOP, .user_data = submitted };
		if (de_channel_submit(slow.ch, &e) == 0) {
			submitted++;
			full_for = 0;
		} else {
			full_for++;
			usleep(2000);
		}
		cr_assert(now_s() < end, "the SQ never stayed full");
	}
	cr_assert_eq(submitted, 256u + 512u + 1u, "SQ + CQ + one pending");
	for (int i = 0; i < 100; i++)
		nop_ok(&fast);
	/* now reap them all, in order */
	for (uint64_t i = 0; i < submitted; i++) {
		struct de_cqe q;
		cr_assert_eq(de_channel_reap(slow.ch, &q, true, 0, TIMEOUT_MS), 0, "completion %lu",
			     (unsigned long)i);
		cr_assert_eq(q.user_data, i);
	}
	nop_ok(&slow);
	cli_close(&slow);
	cli_close(&fast);
	cr_assert_eq(dmn_stop(&d), 0);
	dmn_cleanup(&d);
}

/* 127 channels per worker; the 128th is -EBUSY until one goes away. */
Test(daemon, worker_full, .timeout = 20)
{
	struct dmn d;
	dmn_start(&d, (const char *const[]){ "--workers", "1", "--max-connections-per-uid", "256",
					     NULL });
	static struct cli c[SRV_MAX_CLIENTS_PER_WORKER + 1];
	for (unsigned i = 0; i < SRV_MAX_CLIENTS_PER_WORKER; i++)
		cr_assert_eq(cli_hello(&c[i], d.sock), 0, "client %u", i);
	cr_assert_eq(cli_hello(&c[SRV_MAX_CLIENTS_PER_WORKER], d.sock), -EBUSY);
	close(c[SRV_MAX_CLIENTS_PER_WORKER].sock);
	nop_ok(&c[0]);
	nop_ok(&c[SRV_MAX_CLIENTS_PER_WORKER - 1]);
	cli_close(&c[5]);
	/* the slot frees once the worker released the channel: bounded retry */
	double end = now_s() + 3;
	struct cli x;
	int r;
	while ((r = cli_hello(&x, d.sock)) == -EBUSY) {
		close(x.sock);
		cr_assert(now_s() < end, "the slot never came back");
		usleep(5000);
	}
	cr_assert_eq(r, 0);
	nop_ok(&x);
	cli_close(&x);
	for (unsigned i = 0; i < SRV_MAX_CLIENTS_PER_WORKER; i++)
		if (i != 5)
			cli_close(&c[i]);
	cr_assert_eq(dmn_stop(&d), 0);
	dmn_cleanup(&d);
}

/* ---- the connection gate ------------------------------------------------------------ */

/* What a raw connection that sends nothing gets within ms: the first packet's ERROR code
 * (its text to msg, 240 bytes), 1 for EOF with no ERROR, 2 for nothing, 3 for a packet
 * that is no ERROR. */
static int first_packet(int fd, int ms, char *msg)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	if (poll(&p, 1, ms) != 1)
		return 2;
	char buf[DE_MSG_MAX];
	ssize_t r = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
	if (r <= 0)
		return 1;
	struct de_msg_error *e = (void *)buf;
	if (r != (ssize_t)sizeof *e || e->h.type != DE_MSG_ERROR)
		return 3;
	if (msg)
		memcpy(msg, e->msg, sizeof e->msg);
	return e->err;
}

/* The connection is closed (EOF) within ms. */
static bool closed_within(int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	char b[64];
	return poll(&p, 1, ms) == 1 && recv(fd, b, sizeof b, MSG_DONTWAIT) == 0;
}

/* Nothing came and the connection is open: no packet, no hang-up (does not wait). */
static bool still_open(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN | POLLRDHUP };
	return poll(&p, 1, 0) == 0;
}

TestSuite(gate, .timeout = 60);

Test(gate, idle_connections_of_one_uid)
{
	struct dmn d;
	dmn_start(&d, (const char *const[]){ "--max-connections-per-uid", "8", NULL });
	/* One connection that works, with two control round trips: by the second reply the
	 * daemon has handled the hang-up of dmn_start's probe connection (it came before
	 * this one's HELLO), so the uid holds exactly this one and the 7 idle ones. */
	struct cli a;
	cr_assert_eq(cli_hello(&a, d.sock), 0, "%s", a.msg);
	struct de_wire_table_config c8 = int_cfg(8, 0);
	cr_assert_eq(cli_open(&a, "t", &c8, NULL, NULL), 0);
	int idle[7];
	for (int i = 0; i < 7; i++)
		cr_assert_geq(idle[i] = daemon_connect(d.sock), 0);
	char want[240], msg[240];
	snprintf(want, sizeof want, "uid %u holds 8 connections, the most one uid may "
		 "(max_connections_per_uid = 8)", (unsigned)geteuid());
	for (int i = 0; i < 20; i++) { /* the 9th on: refused at once, with the cap named */
		int fd = daemon_connect(d.sock);
		cr_assert_geq(fd, 0);
		int r = first_packet(fd, TIMEOUT_MS, msg);
		cr_assert_eq(r, -EUSERS, "connection %d: %d", 9 + i, r);
		cr_assert_str_eq(msg, want);
		cr_assert(closed_within(fd, TIMEOUT_MS), "then closed");
		close(fd);
	}
	struct cli c; /* HELLO itself is refused the same way */
	cr_assert_eq(cli_hello(&c, d.sock), -EUSERS);
	cr_assert_str_eq(c.msg, want);
	close(c.sock);
	for (int i = 0; i < 7; i++)
		cr_assert(still_open(idle[i]), "idle connection %d closed early", i);
	nop_ok(&a);
	/* the idle ones are closed once hello_timeout_ms (2 s) passed: generous bound */
	for (int i = 0; i < 7; i++) {
		cr_assert_eq(first_packet(idle[i], 15000, msg), -ETIMEDOUT, "idle connection %d", i);
		cr_assert_str_eq(msg, "no HELLO within 2000 ms (hello_timeout_ms): closed");
		cr_assert(closed_within(idle[i], TIMEOUT_MS));
		close(idle[i]);
	}
	/* the one that said HELLO stays; and another well-behaved client gets in and works */
	nop_ok(&a);
	cr_assert_eq(cli_hello(&c, d.sock), 0, "%s", c.msg);
	nop_ok(&c);
	cli_close(&c);
	cli_close(&a);
	cr_assert_eq(dmn_stop(&d), 0);
	dmn_cleanup(&d);
}

#define FLOOD 300 /* connections the other uid opens */

/* As uid 65534: open FLOOD connections, say so on ready (a byte), wait for go, then
 * check each one: -EUSERS at once beyond the cap of 64, -ETIMEDOUT for the 64 held after
 * the HELLO deadline (or -EACCES for all when `denied`), then EOF. Exit 0 when so. */
static int flood_child(const char *path, bool denied, int ready, int go)
{
	struct rlimit rl = { FLOOD + 64, FLOOD + 64 };
	if (setrlimit(RLIMIT_NOFILE, &rl) || setresgid(65534, 65534, 65534) ||
	    setresuid(65534, 65534, 65534))
		return 10;
	static int fd[FLOOD];
	for (int i = 0; i < FLOOD; i++)
		if ((fd[i] = daemon_connect(path)) < 0)
			return 11;
	char b = 1, msg[240];
	if (write(ready, &b, 1) != 1 || read(go, &b, 1) != 1)
		return 12;
	unsigned eusers = 0, etimedout = 0;
	for (int i = 0; i < FLOOD; i++) {
		int r = first_packet(fd[i], 15000, msg);
		if (denied && (r != -EACCES || strcmp(msg, "uid 65534 gid 65534 is not allowed to "
						      "use dynembd (allow_uids / allow_gids)")))
			return 13;
		eusers += r == -EUSERS;
		etimedout += r == -ETIMEDOUT;
		if (!closed_within(fd[i], TIMEOUT_MS))
			return 14;
		close(fd[i]);
	}
	if (!denied && (eusers != FLOOD - 64 || etimedout != 64))
		return 15;
	return 0;
}

/* Another uid floods the daemon (held or refused); root's client still gets in at once
 * and works; the flood is answered as flood_child checks. */
static void flood_from_other_uid(struct dmn *d, bool denied)
{
	int ready[2], go[2];
	cr_assert_eq(pipe(ready), 0);
	cr_assert_eq(pipe(go), 0);
	pid_t p = fork();
	cr_assert_geq(p, 0);
	if (p == 0)
		_exit(flood_child(d->sock, denied, ready[1], go[0]));
	char b;
	cr_assert_eq(read(ready[0], &b, 1), 1, "the flooding child failed");
	struct cli c;
	cr_assert_eq(cli_hello(&c, d->sock), 0, "root locked out: %s", c.msg);
	nop_ok(&c);
	cr_assert_eq(write(go[1], &b, 1), 1);
	int st;
	cr_assert_eq(waitpid(p, &st, 0), p);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the flood was not answered as it "
		  "should (child status %d)", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	nop_ok(&c);
	cli_close(&c);
	close(ready[0]);
	close(ready[1]);
	close(go[0]);
	close(go[1]);
}

Test(gate, other_uid_cannot_lock_out)
{
	if (geteuid() != 0)
		cr_skip_test("needs root to switch to uid 65534");
	struct dmn d;
	dmn_start(&d, (const char *const[]){ "--allow-uid", "0,65534", NULL });
	flood_from_other_uid(&d, false);
	cr_assert_eq(dmn_stop(&d), 0);
	dmn_cleanup(&d);
}

Test(gate, disallowed_uid_closed_at_accept)
{
	if (geteuid() != 0)
		cr_skip_test("needs root to switch to uid 65534");
	struct dmn d;
	dmn_start(&d, NULL); /* root only */
	flood_from_other_uid(&d, true);
	cr_assert_eq(dmn_stop(&d), 0);
	dmn_cleanup(&d);
}

Test(gate, own_uid_refused_unless_listed)
{
	struct dmn d;
	dmn_start(&d, (const char *const[]){ "--allow-uid", "12345", NULL });
	struct cli c;
	int r = cli_hello(&c, d.sock);
	cr_assert_eq(r, -EACCES, "the daemon's own uid unlisted: %d, not -EACCES", r);
	char want[240];
	snprintf(want, sizeof want, "uid %u gid %u is not allowed to use dynembd (allow_uids / "
		 "allow_gids)", (unsigned)geteuid(), (unsigned)getegid());
	cr_assert_str_eq(c.msg, want);
	close(c.sock);
	cr_assert_eq(dmn_stop(&d), 0);
	dmn_cleanup(&d);
	/* listed by its group: in */
	char gid[16];
	snprintf(gid, sizeof gid, "%u", (unsigned)getegid());
	dmn_start(&d, (const char *const[]){ "--allow-uid", "12345", "--allow-gid", gid, NULL });
	cr_assert_eq(cli_hello(&c, d.sock), 0, "%s", c.msg);
	nop_ok(&c);
	cli_close(&c);
	cr_assert_eq(dmn_stop(&d), 0);
	dmn_cleanup(&d);
}

/* As uid (when root: switched to it): /proc/pid/fd of the daemon cannot be listed nor
 * its entries opened. Exit 0 when so. */
static int probe_child(pid_t pid, uid_t uid)
{
	if (geteuid() == 0 && (setresgid(uid, uid, uid) || setresuid(uid, uid, uid)))
		return 10;
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
	DIR *dir = opendir(path);
	if (dir) {
		closedir(dir);
		return 11;
	}
	if (errno != EACCES)
		return 12;
	snprintf(path, sizeof path, "/proc/%d/fd/0", (int)pid);
	int fd = open(path, O_RDONLY);
	if (fd >= 0) {
		close(fd);
		return 13;
	}
	return 0;
}

Test(gate, daemon_is_not_dumpable)
{
	/* the daemon runs as uid u, not root (root may read any /proc/PID/fd) */
	uid_t u = geteuid() == 0 ? 65534 : geteuid();
	struct dmn d;
	strcpy(d.dir, "/tmp/dynembd-test.XXXXXX");
	cr_assert_not_null(mkdtemp(d.dir));
	chmod(d.dir, 0777); /* uid u creates run/ in it */
	snprintf(d.sock, sizeof d.sock, "%s/run/d.sock", d.dir);
	snprintf(d.log, sizeof d.log, "%s/log", d.dir);
	char us[16];
	snprintf(us, sizeof us, "%u", (unsigned)u);
	const char *argv[32];
	daemon_argv_defaults(argv, 32, daemon_bin(), d.sock, "info",
			     (const char *const[]){ "--allow-uid", us, "--tier-dir", "", NULL });
	pid_t parent = getpid();
	d.pid = fork();
	cr_assert_geq(d.pid, 0);
	if (d.pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(1);
		int fd = open(d.log, O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (fd >= 0)
			dup2(fd, 2);
		if (geteuid() == 0 && (setresgid(u, u, u) || setresuid(u, u, u)))
			_exit(126);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	int st = 0, r = daemon_await_listen(d.pid, d.sock, 10, &st);
	if (r == -ECHILD)
		daemon_show_log(d.log);
	cr_assert_eq(r, 0, "the daemon as uid %u did not come up (status %d)", (unsigned)u, st);
	pid_t p = fork();
	cr_assert_geq(p, 0);
	if (p == 0)
		_exit(probe_child(d.pid, u));
	cr_assert_eq(waitpid(p, &st, 0), p);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "uid %u reached the daemon's fds "
		  "(probe status %d)", (unsigned)u, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	cr_assert_eq(dmn_stop(&d), 0);
	dmn_cleanup(&d);
}

/* ---- learning config and APPLY_GRADS ------------------------------------------------ */

/* torch's Adam defaults, written here (not taken from the library under test). */
static struct de_wire_learn_config adam_cfg(double lr)
{
	return (struct de_wire_learn_config){ .optim = { .kind = DE_WOPT_ADAM, .lr = lr,
		.beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8 } };
}

static struct de_wire_learn_config sgd_cfg(double lr)
{
	return (struct de_wire_learn_config){ .optim = { .kind = DE_WOPT_SGD, .lr = lr } };
}

/* OPEN with learn must fail with -EINVAL and a message containing want; the connection
 * stays usable. */
static void open_bad(struct cli *c, const struct de_wire_table_config *cfg,
		     const struct de_wire_learn_config *l, const char *want)
{
	c->msg[0] = 0;
	int r = cli_open_learn(c, "bad", cfg, l, NULL, NULL);
	cr_assert_eq(r, -EINVAL, "expected -EINVAL (%s), got %d: %s", want, r, c->msg);
	cr_assert_not_null(strstr(c->msg, want), "message '%s' should name '%s'", c->msg, want);
}

Test(learn, config_validation, .timeout = 20)
{
	struct dmn d;
	char data[64]; /* durability async/sync needs a data dir */
	snprintf(data, sizeof data, "/tmp/dynembd-test-data-%d", (int)getpid());
	const char *const extra[] = { "--data-dir", data, NULL };
	dmn_start(&d, extra);
	struct cli c;
	cr_assert_eq(cli_hello(&c, d.sock), 0);
	struct de_wire_table_config tc = int_cfg(4, 0);
	struct de_wire_learn_config l;

	/* optimizer */
	l = adam_cfg(0.01); l.optim.kind = 9;                 open_bad(&c, &tc, &l, "optimizer.kind");
	l = adam_cfg(0.01); l.optim.kind = 0xffffffffu;       open_bad(&c, &tc, &l, "optimizer.kind");
	l = adam_cfg(-0.1);                                   open_bad(&c, &tc, &l, "lr");
	l = adam_cfg(NAN);                                    open_bad(&c, &tc, &l, "lr");
	l = adam_cfg(0.01); l.optim.beta1 = 1.0;              open_bad(&c, &tc, &l, "betas");
	l = adam_cfg(0.01); l.optim.beta2 = -0.5;             open_bad(&c, &tc, &l, "betas");
	l = adam_cfg(0.01); l.optim.eps = INFINITY;           open_bad(&c, &tc, &l, "eps");
	l = adam_cfg(0.01); l.optim.weight_decay = -1;        open_bad(&c, &tc, &l, "weight_decay");
	l = adam_cfg(0.01); l.optim.centered = 2;             open_bad(&c, &tc, &l, "centered");
	l = adam_cfg(0.01); l.optim.reserved[1] = 1;          open_bad(&c, &tc, &l, "optimizer.reserved");
	l = (struct de_wire_learn_config){ .optim = { .kind = DE_WOPT_NESTEROV, .lr = 0.1 } };
	open_bad(&c, &tc, &l, "nesterov");                    /* momentum 0 */
	l = (struct de_wire_learn_config){ .optim = { .kind = DE_WOPT_FTRL, .lr = 0 } };
	open_bad(&c, &tc, &l, "ftrl");                        /* FTRL needs lr > 0 */
	l = (struct de_wire_learn_config){ .optim = { .lr = 0.1 } };
	open_bad(&c, &tc, &l, "optimizer none");              /* hyperparameters without kind */
	/* too few slots: Adam needs 2 */
	struct de_wire_table_config t1 = tc;
	t1.nslots = 1;
	l = adam_cfg(0.01);                                   open_bad(&c, &t1, &l, "needs 2 slots");
	/* admission */
	l = sgd_cfg(0.1); l.admission.mode = 3;               open_bad(&c, &tc, &l, "admission.mode");
	l = sgd_cfg(0.1); l.admission.mode = DE_WADMIT_COUNT;  open_bad(&c, &tc, &l, "min_count");
	l = sgd_cfg(0.1); l.admission = (struct de_wire_admission){ .mode = DE_WADMIT_COUNT,
		.min_count = 3, .sketch_width = 1000 };       open_bad(&c, &tc, &l, "sketch_width");
	l = sgd_cfg(0.1); l.admission = (struct de_wire_admission){ .mode = DE_WADMIT_COUNT,
		.min_count = 3, .sketch_width = 1u << 29 };   open_bad(&c, &tc, &l, "sketch_width");
	l = sgd_cfg(0.1); l.admission = (struct de_wire_admission){ .mode = DE_WADMIT_COUNT,
		.min_count = 3, .sketch_depth = 17 };         open_bad(&c, &tc, &l, "sketch_depth");
	l = sgd_cfg(0.1); l.admission = (struct de_wire_admission){ .mode = DE_WADMIT_COUNT,
		.min_count = 3, .probability = 0.5 };         open_bad(&c, &tc, &l, "probability");
	l = sgd_cfg(0.1); l.admission = (struct de_wire_admission){ .mode = DE_WADMIT_PROBABILITY,
		.probability = 0 };                           open_bad(&c, &tc, &l, "(0, 1]");
	l = sgd_cfg(0.1); l.admission = (struct de_wire_admission){ .mode = DE_WADMIT_PROBABILITY,
		.probability = 1.5 };                         open_bad(&c, &tc, &l, "(0, 1]");
	l = sgd_cfg(0.1); l.admission = (struct de_wire_admission){ .mode = DE_WADMIT_PROBABILITY,
		.probability = NAN };                         open_bad(&c, &tc, &l, "(0, 1]");
	l = sgd_cfg(0.1); l.admission = (struct de_wire_admission){ .mode = DE_WADMIT_PROBABILITY,
		.probability = 0.5, .min_count = 2 };         open_bad(&c, &tc, &l, "min_count");
	l = sgd_cfg(0.1); l.admission = (struct de_wire_admission){ .mode = DE_WADMIT_COUNT,
		.min_count = 2, .reject_value = 2 };          open_bad(&c, &tc, &l, "reject_value");
	l = sgd_cfg(0.1); l.admission.reject_value = 1;      open_bad(&c, &tc, &l, "admission none");
	/* eviction */
	l = sgd_cfg(0.1); l.eviction.policy = 5;              open_bad(&c, &tc, &l, "eviction.policy");
	l = sgd_cfg(0.1); l.eviction.budget_bytes = 1 << 20;  open_bad(&c, &tc, &l, "eviction none");
	l = sgd_cfg(0.1); l.eviction.policy = DE_WEVICT_LRU;   open_bad(&c, &tc, &l, "budget_bytes");
	l = sgd_cfg(0.1); l.eviction = (struct de_wire_eviction){ .policy = DE_WEVICT_TTL };
	open_bad(&c, &tc, &l, "ttl must be > 0");
	l = sgd_cfg(0.1); l.eviction = (struct de_wire_eviction){ .policy = DE_WEVICT_LRU,
		.budget_bytes = 1 << 20, .ttl = 5 };          open_bad(&c, &tc, &l, "policy ttl only");
	l = sgd_cfg(0.1); l.eviction = (struct de_wire_eviction){ .policy = DE_WEVICT_TTL,
		.ttl = 5, .ttl_unit = 2 };                    open_bad(&c, &tc, &l, "ttl_unit");
	l = sgd_cfg(0.1); l.eviction = (struct de_wire_eviction){ .policy = DE_WEVICT_TTL,
		.ttl = 5, .lru_clock = 1 };                   open_bad(&c, &tc, &l, "lru_clock");
	l = sgd_cfg(0.1); l.eviction = (struct de_wire_eviction){ .policy = DE_WEVICT_LFU,
		.budget_bytes = 1 << 20, .lfu_decay = -1 };   open_bad(&c, &tc, &l, "lfu_decay");
	l = sgd_cfg(0.1); l.eviction = (struct de_wire_eviction){ .policy = DE_WEVICT_LFU,
		.budget_bytes = 1 << 20, .lfu_decay = INFINITY }; open_bad(&c, &tc, &l, "lfu_decay");
	l = sgd_cfg(0.1); l.eviction = (struct de_wire_eviction){ .policy = DE_WEVICT_L2,
		.budget_bytes = 1 << 20, .lfu_decay = 3 };    open_bad(&c, &tc, &l, "lfu_decay");
	l = sgd_cfg(0.1); l.eviction = (struct de_wire_eviction){ .policy = DE_WEVICT_L2,
		.budget_bytes = 1 << 20, .flags = 2 };        open_bad(&c, &tc, &l, "flags");
	l = sgd_cfg(0.1); l.eviction = (struct de_wire_eviction){ .policy = DE_WEVICT_L2,
		.budget_bytes = 1 << 20, .reserved = 1 };     open_bad(&c, &tc, &l, "eviction.reserved");
	/* durability */
	l = sgd_cfg(0.1); l.durability.mode = 3;              open_bad(&c, &tc, &l, "durability.mode");
	l = sgd_cfg(0.1); l.durability.window_ms = 5;         open_bad(&c, &tc, &l, "async only");
	l = sgd_cfg(0.1); l.durability = (struct de_wire_durability){ .mode = DE_WDURABLE_SYNC,
		.window_ms = 5 };                             open_bad(&c, &tc, &l, "async only");
	l = sgd_cfg(0.1); l.durability = (struct de_wire_durability){ .mode = DE_WDURABLE_ASYNC,
		.window_ms = 60001 };                         open_bad(&c, &tc, &l, "window_ms");
	l = sgd_cfg(0.1); l.reserved[3] = 1;                  open_bad(&c, &tc, &l, "reserved[3]");

	/* every valid combination of the defined modes opens */
	l = (struct de_wire_learn_config){
		.optim = { .kind = DE_WOPT_FTRL, .lr = 0.05, .lr_power = -0.5,
			   .initial_accumulator_value = 0.1, .l1 = 0.01 },
		.admission = { .mode = DE_WADMIT_COUNT, .min_count = 3, .reject_value = DE_WREJECT_ZEROS },
		.eviction = { .policy = DE_WEVICT_TTL, .ttl = 3600, .ttl_unit = DE_WUNIT_SECONDS,
			      .flags = DE_WEVICT_DISK_TIER },
		.durability = { .mode = DE_WDURABLE_ASYNC, .window_ms = 20 } };
	cr_assert_geq(cli_open_learn(&c, "good", &tc, &l, NULL, NULL), 0, "%s", c.msg);
	nop_ok(&c);
	cli_close(&c);
	cr_assert_eq(dmn_stop(&d), 0);
	dmn_cleanup(&d);
	char cmd[96];
	snprintf(cmd, sizeof cmd, "rm -rf %s", data);
	cr_expect_eq(system(cmd), 0);
}

Test(learn, config_sharing, .timeout = 20)
{
	struct dmn d;
	char data[64]; /* durability async/sync needs a data dir */
	snprintf(data, sizeof data, "/tmp/dynembd-test-data-%d", (int)getpid());
	const char *const extra[] = { "--data-dir", data, NULL };
	dmn_start(&d, extra);
	struct cli a, b;
	cr_assert_eq(cli_hello(&a, d.sock), 0);
	cr_assert_eq(cli_hello(&b, d.sock), 0);
	struct de_wire_table_config tc = int_cfg(4, 0); /* nslots 0: derived (Adam: 2) */
	struct de_wire_learn_config l = adam_cfg(0.01);
	l.admission = (struct de_wire_admission){ .mode = DE_WADMIT_COUNT, .min_count = 2 };
	l.durability.mode = DE_WDURABLE_ASYNC;
	int ta = cli_open_learn(&a, "t", &tc, &l, NULL, NULL);
	cr_assert_geq(ta, 0, "%s", a.msg);
	/* the defaults spelled out, and nslots 2 spelled out: the same config */
	struct de_wire_learn_config l2 = l;
	l2.admission.sketch_width = DE_SKETCH_WIDTH_DEFAULT;
	l2.admission.sketch_depth = DE_SKETCH_DEPTH_DEFAULT;
	l2.durability.window_ms = DE_WINDOW_MS_DEFAULT;
	struct de_wire_table_config tc2 = tc;
	tc2.nslots = 2;
	cr_assert_geq(cli_open_learn(&b, "t", &tc2, &l2, NULL, NULL), 0, "%s", b.msg);
	/* each differing field is named */
	struct { const char *field; void (*edit)(struct de_wire_learn_config *); } cases[] = {
		{ "optimizer.lr", NULL }, { "optimizer.kind", NULL }, { "optimizer.beta2", NULL },
		{ "admission.min_count", NULL }, { "admission.sketch_depth", NULL },
		{ "eviction.policy", NULL }, { "durability.mode", NULL },
		{ "durability.window_ms", NULL },
	};
	for (unsigned i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct de_wire_learn_config x = l;
		struct de_wire_table_config xt = tc;
		switch (i) {
		case 0: x.optim.lr = 0.02; break;
		case 1: x.optim.kind = DE_WOPT_ADAMW; break;
		case 2: x.optim.beta2 = 0.99; break;
		case 3: x.admission.min_count = 3; break;
		case 4: x.admission.sketch_depth = 2; break;
		case 5: x.eviction = (struct de_wire_eviction){ .policy = DE_WEVICT_L2,
							       .budget_bytes = 1 << 30 }; break;
		case 6: x.durability = (struct de_wire_durability){ .mode = DE_WDURABLE_SYNC }; break;
		default: x.durability.window_ms = 11; break;
		}
		b.msg[0] = 0;
		cr_assert_eq(cli_open_learn(&b, "t", &xt, &x, NULL, NULL), -EEXIST, "%s", cases[i].field);
		cr_assert_not_null(strstr(b.msg, cases[i].field), "'%s' names %s", b.msg, cases[i].field);
	}
	/* more slots than Adam needs: another table config (nslots) */
	tc2.nslots = 3;
	cr_assert_eq(cli_open_learn(&b, "t", &tc2, &l, NULL, NULL), -EEXIST);
	cr_assert_not_null(strstr(b.msg, "nslots"), "%s", b.msg);
	/* a table without an optimizer (same nslots) is another config too */
	tc2.nslots = 2;
	cr_assert_eq(cli_open(&b, "t", &tc2, NULL, NULL), -EEXIST);
	cr_assert_not_null(strstr(b.msg, "optimizer.kind"), "%s", b.msg);
	cli_close(&a);
	cli_close(&b);
	cr_assert_eq(dmn_stop(&d), 0);
	dmn_cleanup(&d);
	char cmd[96];
	snprintf(cmd, sizeof cmd, "rm -rf %s", data);
	cr_expect_eq(system(cmd), 0);
}

static struct de_sqe grad_sqe(uint16_t table, uint32_t n, uint32_t dim, uint64_t step)
{
	struct de_sqe e = int_sqe(DE_OP_APPLY_GRADS, 0, table, n, dim);
	e.status_off = 0;
	e.arg = step;
	return e;
}

/* Read n rows (dim 4) without creating. */
static void read_rows(struct cli *c, int t, const uint64_t *k, uint32_t n, float *out)
{
	put_keys(c, k, n);
	struct de_sqe e = int_sqe(DE_OP_LOOKUP, 0, (uint16_t)t, n, 4);
	struct de_cqe q = cli_do(c, &e);
	cr_assert_eq(q.res, 0);
	memcpy(out, vals(c), 16ull * n);
}

Test(learn, apply_grads_sgd_and_adagrad, .timeout = 20)
{
	struct dmn d;
	dmn_start(&d, NULL);
	struct cli c;
	cr_assert_eq(cli_hello(&c, d.sock), 0);
	/* SGD lr 0.5 on constant 1.0 rows: p -= lr * (sum of the key's gradients) */
	struct de_wire_table_config tc = int_cfg(4, 1.0f);
	struct de_wire_learn_config l = sgd_cfg(0.5);
	int t = cli_open_learn(&c, "sgd", &tc, &l, NULL, NULL);
	cr_assert_geq(t, 0, "%s", c.msg);
	uint64_t keys[5] = { 10, 11, 10, 0, 12 };
	float g[5 * 4];
	for (int i = 0; i < 20; i++)
		g[i] = (float)(i % 7) - 3.0f;
	double ref[3][4];
	for (int j = 0; j < 4; j++) {
		ref[0][j] = 1.0 - 0.5 * ((double)g[j] + g[8 + j]); /* key 10 twice */
		ref[1][j] = 1.0 - 0.5 * g[4 + j];
		ref[2][j] = 1.0 - 0.5 * g[16 + j];                 /* key 0 is ignored */
	}
	put_keys(&c, keys, 5);
	memcpy(vals(&c), g, sizeof g);
	struct de_sqe e = grad_sqe((uint16_t)t, 5, 4, 3);
	struct de_cqe q = cli_do(&c, &e);
	cr_assert_eq(q.res, 0);
	cr_assert_eq(q.count, 3u, "distinct keys stepped");
	cr_assert_eq(q.aux0, 3u, "created");
	uint64_t u[3] = { 10, 11, 12 };
	float got[12];
	read_rows(&c, t, u, 3, got);
	for (int i = 0; i < 3; i++)
		for (int j = 0; j < 4; j++)
			cr_assert_float_eq(got[i * 4 + j], ref[i][j], 1e-6, "row %d col %d", i, j);
	/* an lr override (0.25) for one request: nothing created this time */
	put_keys(&c, u, 3);
	for (int i = 0; i < 12; i++)
		vals(&c)[i] = 1.0f;
	e = grad_sqe((uint16_t)t, 3, 4, 4);
	e.flags = DE_GRAD_LR;
	e.status_off = de_lr_to_wire(0.25);
	q = cli_do(&c, &e);
	cr_assert_eq(q.res, 0);
	cr_assert_eq(q.count, 3u);
	cr_assert_eq(q.aux0, 0u);
	read_rows(&c, t, u, 3, got);
	for (int i = 0; i < 3; i++)
		for (int j = 0; j < 4; j++)
			cr_assert_float_eq(got[i * 4 + j], ref[i][j] - 0.25, 1e-6);

	/* Adagrad (torch: s += g^2; p -= lr * g / (sqrt(s) + eps)), 3 steps of one key */
	struct de_wire_learn_config la = { .optim = { .kind = DE_WOPT_ADAGRAD, .lr = 0.1,
						      .eps = 1e-10 } };
	int ta = cli_open_learn(&c, "adagrad", &tc, &la, NULL, NULL);
	cr_assert_geq(ta, 0, "%s", c.msg);
	double p[4] = { 1, 1, 1, 1 }, s[4] = { 0 };
	uint64_t k = 77;
	for (int st = 0; st < 3; st++) {
		float gg[4];
		for (int j = 0; j < 4; j++) {
			gg[j] = (float)(0.5 * (j + 1) * (st % 2 ? -1 : 1));
			s[j] += (double)gg[j] * gg[j];
			p[j] -= 0.1 * gg[j] / (sqrt(s[j]) + 1e-10);
		}
		put_keys(&c, &k, 1);
		memcpy(vals(&c), gg, sizeof gg);
		e = grad_sqe((uint16_t)ta, 1, 4, (uint64_t)st);
		q = cli_do(&c, &e);
		cr_assert_eq(q.res, 0);
	}
	read_rows(&c, ta, &k, 1, got);
	for (int j = 0; j < 4; j++)
		cr_assert_float_eq(got[j], p[j], 1e-5, "adagrad col %d: %g vs %g", j, got[j], p[j]);
	cli_close(&c);
	cr_assert_eq(dmn_stop(&d), 0);
	dmn_cleanup(&d);
}

Test(learn, apply_grads_rejects, .timeout = 20)
{
	struct dmn d;
	dmn_start(&d, NULL);
	struct cli c;
	cr_assert_eq(cli_hello(&c, d.sock), 0);
	struct de_wire_table_config tc = int_cfg(4, 1.0f);
	struct de_wire_learn_config l = sgd_cfg(0.5);
	int t = cli_open_learn(&c, "sgd", &tc, &l, NULL, NULL);
	cr_assert_geq(t, 0, "%s", c.msg);
	int tn = cli_open(&c, "plain", &tc, NULL, NULL);
	cr_assert_geq(tn, 0);
	uint64_t keys[2] = { 5, 6 };
	float g[8] = { 1, 1, 1, 1, 1, 1, 1, 1 };
	struct de_sqe e;
	struct de_cqe q;

	/* a non-finite gradient anywhere rejects the whole batch: key 5 is not even created */
	float bad_vals[3] = { NAN, INFINITY, -INFINITY };
	for (int b = 0; b < 3; b++) {
		put_keys(&c, keys, 2);
		memcpy(vals(&c), g, sizeof g);
		vals(&c)[7] = bad_vals[b];
		e = grad_sqe((uint16_t)t, 2, 4, 1);
		q = cli_do(&c, &e);
		cr_assert_eq(q.res, -EINVAL);
	}
	put_keys(&c, keys, 2);
	e = int_sqe(DE_OP_LOOKUP, DE_SQE_STATUS, (uint16_t)t, 2, 4);
	q = cli_do(&c, &e);
	cr_assert_eq(q.res, 0);
	cr_assert_eq(c.data[SOFF], DE_MISSING, "a rejected batch touches nothing");
	cr_assert_eq(c.data[SOFF + 1], DE_MISSING);

	/* the lr override: finite and > 0, only with the flag */
	double bad_lr[] = { NAN, INFINITY, -INFINITY, 0.0, -0.1 };
	for (unsigned b = 0; b < sizeof bad_lr / sizeof bad_lr[0]; b++) {
		put_keys(&c, keys, 2);
		memcpy(vals(&c), g, sizeof g);
		e = grad_sqe((uint16_t)t, 2, 4, 1);
		e.flags = DE_GRAD_LR;
		e.status_off = de_lr_to_wire(bad_lr[b]);
		q = cli_do(&c, &e);
		cr_assert_eq(q.res, -EINVAL, "lr %g", bad_lr[b]);
	}
	e = grad_sqe((uint16_t)t, 2, 4, 1);
	e.status_off = de_lr_to_wire(0.1); /* an lr without the flag */
	cr_assert_eq(cli_do(&c, &e).res, -EINVAL);
	/* flags APPLY_GRADS does not take */
	e = grad_sqe((uint16_t)t, 2, 4, 1);
	e.flags = DE_SQE_STATUS;
	cr_assert_eq(cli_do(&c, &e).res, -EINVAL);
	e.flags = DE_LOOKUP_CREATE;
	cr_assert_eq(cli_do(&c, &e).res, -EINVAL);
	/* gradient length != count * dim * 4, misaligned, out of the area */
	e = grad_sqe((uint16_t)t, 2, 4, 1);
	e.vals_len -= 4;
	cr_assert_eq(cli_do(&c, &e).res, -EINVAL);
	e.vals_len += 8;
	cr_assert_eq(cli_do(&c, &e).res, -EINVAL);
	e = grad_sqe((uint16_t)t, 2, 4, 1);
	e.vals_off += 2;
	cr_assert_eq(cli_do(&c, &e).res, -EINVAL);
	e = grad_sqe((uint16_t)t, 2, 4, 1);
	e.vals_off = DATA - 16;
	cr_assert_eq(cli_do(&c, &e).res, -EINVAL);
	e = grad_sqe((uint16_t)t, 2, 4, 1);
	e.keys_len = 8;
	cr_assert_eq(cli_do(&c, &e).res, -EINVAL);
	e = grad_sqe((uint16_t)t, c.max_batch + 1, 4, 1);
	cr_assert_eq(cli_do(&c, &e).res, -E2BIG);
	e = grad_sqe(9, 2, 4, 1);
	cr_assert_eq(cli_do(&c, &e).res, -EINVAL, "no such table");
	/* a table without an optimizer */
	put_keys(&c, keys, 2);
	memcpy(vals(&c), g, sizeof g);
	e = grad_sqe((uint16_t)tn, 2, 4, 1);
	cr_assert_eq(cli_do(&c, &e).res, -EOPNOTSUPP);
	/* still nothing created anywhere, and the channel works */
	put_keys(&c, keys, 2);
	e = int_sqe(DE_OP_LOOKUP, DE_SQE_STATUS, (uint16_t)t, 2, 4);
	q = cli_do(&c, &e);
	cr_assert_eq(q.count, 0u);
	cr_assert_eq(c.data[SOFF], DE_MISSING);
	nop_ok(&c);
	cli_close(&c);
	cr_assert_eq(dmn_stop(&d), 0);
	dmn_cleanup(&d);
}

Test(learn, apply_grads_string_keys, .timeout = 20)
{
	struct dmn d;
	dmn_start(&d, NULL);
	struct cli c;
	cr_assert_eq(cli_hello(&c, d.sock), 0);
	struct de_wire_table_config tc = int_cfg(4, 0.0f);
	tc.key_type = DE_KEYS_STRING;
	struct de_wire_learn_config l = sgd_cfg(1.0);
	int t = cli_open_learn(&c, "words", &tc, &l, NULL, NULL);
	cr_assert_geq(t, 0, "%s", c.msg);
	const char *w[] = { "apple", "pear", "apple", "" };
	uint64_t kl = put_strings(&c, w, 4);
	for (int i = 0; i < 16; i++)
		vals(&c)[i] = (float)(i + 1);
	struct de_sqe e = grad_sqe((uint16_t)t, 4, 4, 1);
	e.keys_len = kl;
	struct de_cqe q = cli_do(&c, &e);
	cr_assert_eq(q.res, 0);
	cr_assert_eq(q.count, 2u, "apple and pear; '' is key 0");
	cr_assert_eq(q.aux0, 2u);
	/* a bad string region: lengths past the end */
	uint32_t big = 1000;
	memcpy(c.data + KOFF, &big, 4);
	cr_assert_eq(cli_do(&c, &e).res, -EINVAL);
	/* read back: apple = -(g0 + g2), pear = -g1 */
	const char *r[] = { "apple", "pear" };
	kl = put_strings(&c, r, 2);
	e = int_sqe(DE_OP_LOOKUP, 0, (uint16_t)t, 2, 4);
	e.keys_len = kl;
	q = cli_do(&c, &e);
	cr_assert_eq(q.res, 0);
	cr_assert_eq(q.count, 2u);
	for (int j = 0; j < 4; j++) {
		cr_assert_eq(vals(&c)[j], -(float)((j + 1) + (8 + j + 1)));
		cr_assert_eq(vals(&c)[4 + j], -(float)(4 + j + 1));
	}
	cli_close(&c);
	cr_assert_eq(dmn_stop(&d), 0);
	dmn_cleanup(&d);
}
