/*
 * bench_channel.c — `dynemb-bench channel`: the data plane measured before the daemon
 * exists, with the pieces the daemon will use (shm/channel, shm/table).
 *
 * One process tree, one run. The parent plays the daemon: it owns a table (dim 64, N
 * keys) and a channel, and serves lookups: pop a descriptor, bounds-check its ranges
 * against the channel's data area, de_table_find the keys into the data area, post. The
 * forked child plays a client and measures:
 *   - round trips of 1 and 64 keys through the channel, with both sides busy-polling and
 *     with both sides sleeping on futexes, and, as the baseline, the same request and
 *     response over a unix SOCK_SEQPACKET socket pair (keys in, rows out);
 *   - lookup throughput, batch 4096, uniform keys, one client thread: through the channel,
 *     through the zero-copy path (the table's segments mapped read-only in the client,
 *     de_table_find on that mapping), and in-process (the owner's own de_table_find,
 *     measured by the parent before it forks).
 * Figures are printed as ratios against the in-process find and the socket.
 *
 * Ownership: everything is created by cmd_channel and freed before it returns; the child
 * _exits. The child reports its numbers through a pipe as one fixed struct.
 */
#include "bench_util.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "de_shm.h"

enum { OP_FIND = 1, OP_MODE = 2, OP_SOCKET = 3, OP_QUIT = 4 };
enum { MODE_BUSY = 0, MODE_SLEEP = 1 };

#define DIM 64
#define BATCH 4096

struct opts {
	uint64_t keys;
	unsigned iters;
	double seconds;
	bool json, shrt;
};

struct results { /* child -> parent, through a pipe */
	double rtt_ns[3][2][2]; /* [ring busy, ring futex, socket][1 key, 64 keys][p50, p99] */
	double ring_rows_per_s, zerocopy_rows_per_s;
	int err;
	char msg[160];
};

/* ---- the daemon's side ---------------------------------------------------------- */

/* Serve one descriptor; the ranges come from the client and are checked first. */
static void serve(de_table *t, de_channel *ch, const struct de_sqe *q)
{
	struct de_cqe c = { .user_data = q->user_data };
	char *data = de_channel_data(ch, NULL);
	uint64_t n = q->count;
	if (q->op != OP_FIND || n > BATCH || !de_channel_range_ok(ch, q->keys_off, n * 8) ||
	    !de_channel_range_ok(ch, q->vals_off, n * DIM * 4) || (q->keys_off | q->vals_off) & 7) {
		c.res = -EINVAL;
	} else {
		c.res = de_table_find(t, (const uint64_t *)(data + q->keys_off), n,
				      (float *)(data + q->vals_off), NULL);
		c.count = (uint32_t)n;
	}
	while (de_channel_post(ch, &c) == -EAGAIN)
		__builtin_ia32_pause();
}

static void serve_socket(de_table *t, int sk)
{
	static uint64_t keys[64];
	static float rows[64 * DIM];
	for (;;) {
		ssize_t r = recv(sk, keys, sizeof keys, 0);
		if (r <= 0 || r % 8)
			return; /* the client closed its end, or a malformed request */
		de_table_find(t, keys, (size_t)r / 8, rows, NULL);
		if (send(sk, rows, (size_t)r / 8 * DIM * 4, 0) < 0)
			return;
	}
}

static void daemon_loop(de_table *t, de_channel *ch, int sk)
{
	int mode = MODE_BUSY;
	struct de_sqe q;
	for (;;) {
		int r = de_channel_pop(ch, &q);
		if (r == -EAGAIN) {
			if (mode == MODE_SLEEP) {
				if (de_channel_sleep_prepare(ch) == 0)
					de_channels_wait(&ch, 1, 1000);
				de_channel_sleep_done(ch);
			} else {
				__builtin_ia32_pause();
			}
			continue;
		}
		if (r)
			return; /* broken channel */
		if (q.op == OP_QUIT)
			return;
		if (q.op == OP_MODE) {
			mode = (int)q.arg;
			struct de_cqe c = { .user_data = q.user_data };
			de_channel_post(ch, &c);
		} else if (q.op == OP_SOCKET) {
			struct de_cqe c = { .user_data = q.user_data };
			de_channel_post(ch, &c);
			serve_socket(t, sk);
		} else {
			serve(t, ch, &q);
		}
	}
}

/* ---- the client's side ------------------------------------------------------------ */

static int call(de_channel *ch, struct de_sqe *q, bool busy)
{
	int r;
	while ((r = de_channel_submit(ch, q)) == -EAGAIN)
		;
	if (r)
		return r;
	struct de_cqe c;
	r = de_channel_reap(ch, &c, true, busy ? 5000000000ull : 0, 10000);
	return r ? r : c.res;
}

struct ring_rtt {
	de_channel *ch;
	uint64_t *dk; /* the channel's data area: the keys go at offset 0 */
	bool busy;
};

/* One round trip of the n keys k through the channel (an rtt_call of sample_rtt). */
static int ring_rtt_call(void *ctx, const uint64_t *k, uint32_t n, uint64_t *ns)
{
	struct ring_rtt *c = ctx;
	memcpy(c->dk, k, n * sizeof *k);
	struct de_sqe q = { .op = OP_FIND, .count = n, .keys_off = 0, .keys_len = n * 8,
			    .vals_off = 1 << 20, .vals_len = n * DIM * 4 };
	if (!c->busy)
		usleep(20); /* let the daemon fall asleep: this measures a wake-up */
	uint64_t t0 = ns_now();
	int r = call(c->ch, &q, c->busy);
	*ns = ns_now() - t0;
	return r;
}

static int rtt_ring(de_channel *ch, const uint64_t *keys, uint64_t nkeys, unsigned iters,
		    bool busy, double out[2][2])
{
	struct de_sqe m = { .op = OP_MODE, .arg = busy ? MODE_BUSY : MODE_SLEEP };
	int r = call(ch, &m, true);
	if (r)
		return r;
	uint64_t *lat = malloc(iters * sizeof *lat);
	struct ring_rtt c = { .ch = ch, .dk = de_channel_data(ch, NULL), .busy = busy };
	if (!lat)
		return -ENOMEM;
	r = sample_rtt(keys, nkeys, iters, 0, lat, ring_rtt_call, &c, out);
	free(lat);
	return r;
}

/* One request of the n keys k over the socket, the rows back (an rtt_call of sample_rtt);
 * ctx: the socket. */
static int socket_rtt_call(void *ctx, const uint64_t *k, uint32_t n, uint64_t *ns)
{
	static float rows[64 * DIM];
	int sk = *(int *)ctx, r = 0;
	uint64_t t0 = ns_now();
	if (send(sk, k, n * 8, 0) < 0 ||
	    recv(sk, rows, sizeof rows, 0) != (ssize_t)(n * DIM * 4))
		r = -EIO;
	*ns = ns_now() - t0;
	return r;
}

static int rtt_socket(de_channel *ch, int sk, const uint64_t *keys, uint64_t nkeys, unsigned iters,
		      double out[2][2])
{
	struct de_sqe m = { .op = OP_SOCKET };
	int r = call(ch, &m, true);
	uint64_t *lat = malloc(iters * sizeof *lat);
	if (!lat)
		return -ENOMEM;
	if (!r)
		r = sample_rtt(keys, nkeys, iters, 0, lat, socket_rtt_call, &sk, out);
	shutdown(sk, SHUT_WR); /* the daemon's serve_socket returns */
	free(lat);
	return r;
}

static double thr_ring(de_channel *ch, const uint64_t *keys, uint64_t nkeys, double secs, int *err)
{
	struct de_sqe m = { .op = OP_MODE, .arg = MODE_BUSY };
	*err = call(ch, &m, true);
	uint64_t *dk = de_channel_data(ch, NULL), rows = 0, i = 0;
	uint64_t t0 = ns_now(), end = t0 + (uint64_t)(secs * 1e9);
	while (!*err && ns_now() < end) {
		for (uint32_t k = 0; k < BATCH; k++)
			dk[k] = keys[key_of(i++) % nkeys];
		struct de_sqe q = { .op = OP_FIND, .count = BATCH, .keys_off = 0,
				    .keys_len = BATCH * 8, .vals_off = 1 << 20,
				    .vals_len = BATCH * DIM * 4 };
		*err = call(ch, &q, true);
		rows += BATCH;
	}
	return (double)rows / ((double)(ns_now() - t0) / 1e9);
}

/* Lookups through a table handle (the owner's, or a read-only attach), batch 4096. */
static double thr_find(de_table *t, const uint64_t *keys, uint64_t nkeys, double secs)
{
	static uint64_t k[BATCH];
	float *out = malloc((size_t)BATCH * DIM * 4);
	uint8_t st[BATCH];
	uint64_t rows = 0, i = 0, t0 = ns_now(), end = t0 + (uint64_t)(secs * 1e9);
	if (!out)
		return 0;
	while (ns_now() < end) {
		for (uint32_t j = 0; j < BATCH; j++)
			k[j] = keys[key_of(i++) % nkeys];
		de_table_find(t, k, BATCH, out, st);
		rows += BATCH;
	}
	free(out);
	return (double)rows / ((double)(ns_now() - t0) / 1e9);
}

static void client(de_channel *dch, de_arena *a, int sk, const uint64_t *keys, const struct opts *o,
		   int outfd)
{
	struct results res = { 0 };
	de_channel *ch = NULL;
	de_arena *ra = NULL;
	de_table *rt = NULL;
	int fds[DE_ARENA_MAX_SEGMENTS];
	unsigned ns = de_arena_nsegments(a);
	pin(0);
	res.err = de_channel_attach(de_channel_fd(dch), &ch);
	for (unsigned i = 0; i < ns && !res.err; i++)
		if ((fds[i] = de_arena_segment_fd(a, i, true)) < 0)
			res.err = fds[i];
	if (!res.err)
		res.err = de_arena_attach_ro(fds, ns, &ra);
	if (!res.err)
		res.err = de_table_attach_ro(ra, &rt);
	if (!res.err)
		res.err = rtt_ring(ch, keys, o->keys, o->iters, true, res.rtt_ns[0]);
	if (!res.err)
		res.err = rtt_ring(ch, keys, o->keys, o->iters / 4 + 1, false, res.rtt_ns[1]);
	if (!res.err)
		res.ring_rows_per_s = thr_ring(ch, keys, o->keys, o->seconds, &res.err);
	if (!res.err)
		res.zerocopy_rows_per_s = thr_find(rt, keys, o->keys, o->seconds);
	if (!res.err)
		res.err = rtt_socket(ch, sk, keys, o->keys, o->iters, res.rtt_ns[2]);
	if (res.err)
		snprintf(res.msg, sizeof res.msg, "client: %s", strerror(-res.err));
	if (ch) {
		struct de_sqe q = { .op = OP_QUIT };
		de_channel_submit(ch, &q);
	}
	if (write(outfd, &res, sizeof res) != (ssize_t)sizeof res)
		_exit(3);
	_exit(res.err ? 1 : 0);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: " PROG " channel [--keys N] [--iters K] [--seconds S] [--short] [--json]\n"
		"  The data plane alone: a forked client looks up rows (dim 64) from a table owned\n"
		"  by the parent through a shm channel (busy-polled and futex), through a unix\n"
		"  socket (the baseline), and through the zero-copy read-only mapping.\n"
		"  --keys N      keys in the table (default 1000000; --short 200000)\n"
		"  --iters K     round trips per measured case (default 100000; --short 20000)\n"
		"  --seconds S   per throughput measurement (default 2; --short 0.5)\n"
		"  --json        one JSON object on stdout\n");
}

int cmd_channel(int argc, char **argv)
{
	struct opts o = { .keys = 1000000, .iters = 100000, .seconds = 2 };
	bool keys_set = false, iters_set = false, secs_set = false;
	static const struct option lo[] = {
		{ "keys", required_argument, NULL, 'k' }, { "iters", required_argument, NULL, 'i' },
		{ "seconds", required_argument, NULL, 's' }, { "short", no_argument, NULL, 'S' },
		{ "json", no_argument, NULL, 'j' }, { "help", no_argument, NULL, 'h' }, { 0 } };
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		char *end = NULL;
		switch (c) {
		case 'k': o.keys = strtoull(optarg, &end, 10), keys_set = true; break;
		case 'i': o.iters = (unsigned)strtoul(optarg, &end, 10), iters_set = true; break;
		case 's': o.seconds = strtod(optarg, &end), secs_set = true; break;
		case 'S': o.shrt = true; break;
		case 'j': o.json = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return EXIT_USAGE;
		}
		if (end && (*end || end == optarg)) {
			fprintf(stderr, PROG " channel: bad number '%s'\n", optarg);
			return EXIT_USAGE;
		}
	}
	if (optind < argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (o.shrt) {
		o.keys = keys_set ? o.keys : 200000;
		o.iters = iters_set ? o.iters : 20000;
		o.seconds = secs_set ? o.seconds : 0.5;
	}
	if (o.keys < BATCH || o.keys > (1ull << 31) || o.iters < 100 || o.iters > 10000000 ||
	    !(o.seconds > 0 && o.seconds <= 600)) {
		fprintf(stderr,
			PROG " channel: --keys 4096..2^31, --iters 100..1e7, --seconds (0, 600]\n");
		return EXIT_USAGE;
	}
	FILE *hu = o.json ? stderr : stdout;

	struct de_arena_config ac = { .pages = DE_PAGES_AUTO, .numa_node = DE_NUMA_AUTO };
	struct de_table_config tc = { .dim = DIM, .init = DE_INIT_UNIFORM, .init_a = -1,
				      .init_b = 1, .seed = 1 };
	de_arena *a = NULL;
	de_table *t = NULL;
	de_channel *ch = NULL;
	uint64_t *keys = malloc(o.keys * 8);
	float *out = malloc((size_t)BATCH * DIM * 4);
	struct de_channel_config cc = { .sq_entries = 64, .data_bytes = 4u << 20 };
	int err = keys && out ? 0 : -ENOMEM, sk[2] = { -1, -1 };
	if (!err)
		err = de_arena_create(&ac, &a);
	if (!err)
		err = de_table_open(a, &tc, &t);
	for (uint64_t i = 0; !err && i < o.keys; i += BATCH) {
		uint64_t n = o.keys - i < BATCH ? o.keys - i : BATCH;
		for (uint64_t k = 0; k < n; k++)
			keys[i + k] = key_of(i + k + 0x1000);
		err = de_table_find_or_insert(t, keys + i, n, out, NULL, 1);
	}
	if (!err)
		err = de_channel_create(&cc, &ch);
	if (!err && socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sk))
		err = -errno;
	if (err) {
		fprintf(stderr, PROG " channel: setup: %s\n", strerror(-err));
		goto out;
	}
	fprintf(hu, "%s channel: %" PRIu64 " keys, dim %d, arena pages %s\n", PROG, o.keys, DIM,
		de_pages_name(de_arena_pages(a)));
	pin(1);
	double inproc = thr_find(t, keys, o.keys, o.seconds);

	int pp[2];
	if (pipe(pp)) {
		err = -errno;
		goto out;
	}
	pid_t pid = fork();
	if (pid < 0) {
		err = -errno;
		goto out;
	}
	if (pid == 0) {
		close(pp[0]);
		close(sk[0]);
		client(ch, a, sk[1], keys, &o, pp[1]);
	}
	close(pp[1]);
	close(sk[1]);
	daemon_loop(t, ch, sk[0]);
	struct results r;
	ssize_t got = read(pp[0], &r, sizeof r);
	int status = 0;
	waitpid(pid, &status, 0);
	close(pp[0]);
	if (got != (ssize_t)sizeof r || !WIFEXITED(status) || WEXITSTATUS(status)) {
		fprintf(stderr, PROG " channel: the client failed: %s\n",
			got == (ssize_t)sizeof r ? r.msg : "no result");
		err = -EIO;
		goto out;
	}
	static const char *cases[3] = { "ring, busy-poll", "ring, futex", "unix socket" };
	fprintf(hu, "round trips (client and daemon in two processes, ns):\n");
	fprintf(hu, "  %-18s %12s %12s %12s %12s\n", "path", "1 key p50", "1 key p99",
		"64 keys p50", "64 keys p99");
	for (int i = 0; i < 3; i++)
		fprintf(hu, "  %-18s %12.0f %12.0f %12.0f %12.0f\n", cases[i], r.rtt_ns[i][0][0],
			r.rtt_ns[i][0][1], r.rtt_ns[i][1][0], r.rtt_ns[i][1][1]);
	fprintf(hu, "lookup throughput, batch %d, uniform, one client thread (rows/s):\n", BATCH);
	fprintf(hu, "  in-process find  %10.2f M\n", inproc / 1e6);
	fprintf(hu, "  zero-copy        %10.2f M   %.2f of in-process\n",
		r.zerocopy_rows_per_s / 1e6, r.zerocopy_rows_per_s / inproc);
	fprintf(hu, "  ring             %10.2f M   %.2f of in-process\n", r.ring_rows_per_s / 1e6,
		r.ring_rows_per_s / inproc);
	fprintf(hu, "1-key round trip: ring busy-poll is %.0fx faster than the unix socket (p50)\n",
		r.rtt_ns[2][0][0] / r.rtt_ns[0][0][0]);
	if (o.json)
		printf("{\"command\":\"channel\",\"keys\":%" PRIu64 ",\"dim\":%d,"
		       "\"rtt1_p50_ns\":%.0f,\"rtt1_p99_ns\":%.0f,\"rtt64_p50_ns\":%.0f,\"rtt64_p99_ns\":%.0f,"
		       "\"rtt1_futex_p50_ns\":%.0f,\"rtt1_futex_p99_ns\":%.0f,"
		       "\"rtt1_socket_p50_ns\":%.0f,\"rtt1_socket_p99_ns\":%.0f,"
		       "\"rtt64_socket_p50_ns\":%.0f,\"rtt64_socket_p99_ns\":%.0f,"
		       "\"ring_rows_per_s\":%.0f,\"zerocopy_rows_per_s\":%.0f,\"inproc_rows_per_s\":%.0f}\n",
		       o.keys, DIM, r.rtt_ns[0][0][0], r.rtt_ns[0][0][1], r.rtt_ns[0][1][0],
		       r.rtt_ns[0][1][1], r.rtt_ns[1][0][0], r.rtt_ns[1][0][1], r.rtt_ns[2][0][0],
		       r.rtt_ns[2][0][1], r.rtt_ns[2][1][0], r.rtt_ns[2][1][1], r.ring_rows_per_s,
		       r.zerocopy_rows_per_s, inproc);
out:
	if (sk[0] >= 0)
		close(sk[0]);
	de_channel_destroy(ch);
	de_table_close(t);
	de_arena_destroy(a);
	free(keys);
	free(out);
	return err ? 1 : 0;
}
