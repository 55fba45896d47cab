/*
 * test_fair.c — one client cannot slow another down through the daemon's data plane: the
 * real dynembd (one worker) serves a well-behaved victim client while a hostile one
 * floods it, and the victim's latency and results are checked.
 *
 * The attacks, each against a victim doing small lookups of rows it checks value by value:
 *   - 4,096 in-flight lookups of max_batch keys each (the flooder keeps its ring full;
 *     every descriptor names the same data-area range, which the daemon allows), and the
 *     same with UPDATEs of max_batch rows into the flooder's own table;
 *   - long TOPK requests, and a TOPK over the daemon's cost cap (refused, the cap named in
 *     the completion; libdynemb's dynemb_topk then splits its queries under the cap, or
 *     names the cap when one query alone is over it);
 *   - a futex wake storm: the flooder bumps its channel's futex word and wakes it in a
 *     loop without submitting anything.
 * Bounds are generous (a loaded 2-core CI box under ASan): the victim's p99 under a flood
 * must stay under 20 times its p99 alone plus FLOOR_MS, and every victim request must
 * complete with the right values; without the fair worker a flooded victim waits for 32
 * whole max_batch lookups per pass (hundreds of milliseconds) and never gets there. The
 * wake storm is checked structurally (the daemon counts and backs off the channel:
 * STATS dp_wake_backoffs) and by the daemon's CPU time with a wide margin.
 *
 * Like test_daemon.c, the tests (but the dynemb_topk one) speak the raw protocol of src/proto.h (their own SEQPACKET
 * helpers, de_channel_attach on the channel fd) and link nothing of the daemon; the daemon
 * is started through tests/daemon_util.h. Every wait is bounded.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <linux/futex.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "daemon_util.h"
#include "de_shm.h"
#include "dynemb.h"
#include "proto.h"
#include "raw_client.h"

#define MiB (1ull << 20)
#define DIM 64
#define NKEYS 65536u          /* the table's keys, and the flooder's batch (max_batch) */
#define VICTIM_KEYS 16u
#define VICTIM_ITERS 1000u
#define VICTIM_SECS 40.0      /* the flooded victim's run is bounded by this too */
#define FLOOR_MS 2.0          /* added to the bound: scheduling noise of a loaded box */

struct dmn {
	pid_t pid;
	char dir[64], sock[128], log[128];
};

static void dmn_start(struct dmn *d, const char *const *extra)
{
	snprintf(d->dir, sizeof d->dir, "/tmp/dynemb-fair-XXXXXX");
	cr_assert_not_null(mkdtemp(d->dir));
	snprintf(d->sock, sizeof d->sock, "%s/sock", d->dir);
	snprintf(d->log, sizeof d->log, "%s/log", d->dir);
	const char *argv[40];
	daemon_argv(argv, 40, daemon_bin(), d->sock, "info",
		    (const char *const[]){ "--workers", "1", "--max-batch", "65536", NULL },
		    extra);
	d->pid = daemon_spawn(argv, SIGKILL, d->log);
	daemon_wait_listen(d->pid, d->sock, 10, d->log);
}

static void dmn_stop(struct dmn *d)
{
	int st = daemon_terminate(d->pid, 10);
	daemon_show_log_if_asked(d->log);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		daemon_show_log(d->log);
	cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "dynembd exits 0 (status %d)", st);
	char cmd[160];
	snprintf(cmd, sizeof cmd, "rm -rf %s", d->dir);
	cr_expect_eq(system(cmd), 0);
}

/* ---- the raw protocol (raw_client.h) -------------------------------------------------- */

static int cli_open(struct cli *c, const char *name)
{
	struct de_msg_open m;
	memset(&m, 0, sizeof m);
	snprintf(m.name, sizeof m.name, "%s", name);
	m.cfg = (struct de_wire_table_config){ .dim = DIM, .init = DE_INIT_CONSTANT,
					       .init_a = 0.0f, .seed = 42,
					       .key_type = DE_KEYS_INT64 };
	char buf[DE_MSG_MAX];
	ssize_t r = cli_call(c, &m, DE_MSG_OPEN, sizeof m, buf, sizeof buf);
	cr_assert_gt(r, 0);
	cr_assert_eq(((struct de_msg_hdr *)(void *)buf)->type, DE_MSG_OPEN_OK, "OPEN of '%s'", name);
	return ((struct de_msg_open_ok *)(void *)buf)->table_id;
}

static struct de_sqe lookup_sqe(int t, uint32_t n, uint64_t koff, uint64_t voff)
{
	return (struct de_sqe){ .op = DE_OP_LOOKUP, .table = (uint16_t)t, .count = n,
				.user_data = 7, .keys_off = koff, .keys_len = 8ull * n,
				.vals_off = voff, .vals_len = 4ull * n * DIM };
}

static uint64_t key_i(uint32_t i) { return mix64(i + 1) | 1; }
static float tag(uint64_t k) { return (float)(k % 100003); }

/* UPDATE the NKEYS keys: row of key k = (tag(k), 0.5, 0.5, ...). */
static void fill(struct cli *c, int t)
{
	for (uint32_t i = 0; i < NKEYS; i++) {
		uint64_t k = key_i(i);
		memcpy(c->data + 8ull * i, &k, 8);
		float *row = (float *)(void *)(c->data + MiB + 4ull * DIM * i);
		row[0] = tag(k);
		for (int d = 1; d < DIM; d++)
			row[d] = 0.5f;
	}
	struct de_sqe e = lookup_sqe(t, NKEYS, 0, MiB);
	e.op = DE_OP_UPDATE;
	struct de_cqe q = cli_do(c, &e);
	cr_assert_eq(q.res, 0, "fill: %d", q.res);
}

static struct de_wire_stats stats(struct cli *c, int t)
{
	struct de_sqe e = { .op = DE_OP_STATS, .table = (uint16_t)t, .user_data = 3,
			    .vals_off = 0, .vals_len = sizeof(struct de_wire_stats) };
	struct de_cqe q = cli_do(c, &e);
	cr_assert_eq(q.res, 0);
	struct de_wire_stats s;
	memcpy(&s, c->data, sizeof s);
	return s;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* The victim: lookups of VICTIM_KEYS keys, every value checked, for VICTIM_ITERS requests
 * or secs seconds. Its p99 in ms; *done: requests completed. */
static double victim_run(struct cli *v, int t, double secs, unsigned *done)
{
	static double lat[VICTIM_ITERS];
	uint64_t rng = 99;
	double end = now_s() + secs;
	unsigned n = 0;
	for (; n < VICTIM_ITERS && now_s() < end; n++) {
		uint64_t keys[VICTIM_KEYS];
		for (unsigned j = 0; j < VICTIM_KEYS; j++)
			keys[j] = key_i((uint32_t)(rng_next(&rng) % NKEYS));
		memcpy(v->data, keys, sizeof keys);
		struct de_sqe e = lookup_sqe(t, VICTIM_KEYS, 0, 4096);
		e.user_data = n;
		double t0 = now_s();
		struct de_cqe q = cli_do(v, &e);
		lat[n] = (now_s() - t0) * 1e3;
		cr_assert_eq(q.res, 0);
		cr_assert_eq(q.count, VICTIM_KEYS, "the victim finds every key (request %u)", n);
		const float *row = (const float *)(void *)(v->data + 4096);
		for (unsigned j = 0; j < VICTIM_KEYS; j++) {
			cr_assert_eq(row[j * DIM], tag(keys[j]), "victim value, request %u key %u", n, j);
			cr_assert_eq(row[j * DIM + DIM - 1], 0.5f);
		}
	}
	*done = n;
	qsort(lat, n, sizeof lat[0], cmp_double);
	return n ? lat[(size_t)(n * 0.99)] : INFINITY;
}

/* ---- the flooder --------------------------------------------------------------------- */

enum flood_kind { FLOOD_LOOKUP, FLOOD_UPDATE, FLOOD_TOPK, FLOOD_WAKE };

struct flood {
	struct cli c;
	int t;
	enum flood_kind kind;
	int stop;            /* atomic */
	uint64_t completed;  /* atomic: descriptors completed */
	uint64_t wrong;      /* atomic: completions with a wrong result */
	uint32_t topk_nq;
};

static void *flood_main(void *arg)
{
	struct flood *f = arg;
	if (f->kind == FLOOD_WAKE) { /* bump the word and wake, never submit anything */
		int fd = de_channel_fd(f->c.ch);
		char *raw = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (raw == MAP_FAILED)
			return NULL;
		uint32_t *w = (uint32_t *)(void *)(raw + 324); /* sq_futex: shm/channel.c */
		while (!__atomic_load_n(&f->stop, __ATOMIC_RELAXED)) {
			__atomic_fetch_add(w, 1, __ATOMIC_SEQ_CST);
			syscall(SYS_futex, w, FUTEX_WAKE, 1 << 30, NULL, NULL, 0);
			__atomic_fetch_add(&f->completed, 1, __ATOMIC_RELAXED);
		}
		munmap(raw, 4096);
		return NULL;
	}
	struct de_sqe e;
	if (f->kind == FLOOD_LOOKUP || f->kind == FLOOD_UPDATE) {
		e = lookup_sqe(f->t, NKEYS, 0, MiB); /* every descriptor: the same range */
		if (f->kind == FLOOD_UPDATE)
			e.op = DE_OP_UPDATE; /* rows in, into its own table */
	} else {
		e = (struct de_sqe){ .op = DE_OP_TOPK, .table = (uint16_t)f->t, .count = f->topk_nq,
				     .keys_off = 0, .keys_len = 4ull * f->topk_nq * DIM,
				     .vals_off = MiB, .vals_len = 12ull * f->topk_nq, .arg = 1 };
	}
	while (!__atomic_load_n(&f->stop, __ATOMIC_RELAXED)) {
		while (de_channel_submit(f->c.ch, &e) == 0)
			;
		struct de_cqe q;
		while (de_channel_reap(f->c.ch, &q, true, 0, 50) == 0) {
			__atomic_fetch_add(&f->completed, 1, __ATOMIC_RELAXED);
			bool ok = q.res == 0 && (f->kind != FLOOD_LOOKUP || q.count == NKEYS);
			if (!ok)
				__atomic_fetch_add(&f->wrong, 1, __ATOMIC_RELAXED);
			if (__atomic_load_n(&f->stop, __ATOMIC_RELAXED))
				break;
			if (de_channel_submit(f->c.ch, &e) != 0)
				break;
		}
	}
	return NULL;
}

static void flood_start(struct flood *f, pthread_t *th, const char *sock, enum flood_kind kind,
			uint32_t sq, uint32_t topk_nq)
{
	memset(f, 0, sizeof *f);
	f->kind = kind;
	f->topk_nq = topk_nq;
	cli_hello(&f->c, sock, sq, 32 * MiB);
	f->t = cli_open(&f->c, kind == FLOOD_UPDATE ? "flood" : "victim");
	if (kind == FLOOD_LOOKUP || kind == FLOOD_UPDATE) {
		for (uint32_t i = 0; i < NKEYS; i++) {
			uint64_t k = key_i(i);
			memcpy(f->c.data + 8ull * i, &k, 8);
		}
		if (kind == FLOOD_UPDATE) /* its rows: NKEYS x DIM floats at MiB */
			memset(f->c.data + MiB, 0, 4ull * DIM * NKEYS);
	} else if (kind == FLOOD_TOPK) {
		float *qv = (float *)(void *)f->c.data;
		for (uint64_t i = 0; i < (uint64_t)f->topk_nq * DIM; i++)
			qv[i] = 1.0f;
	}
	cr_assert_eq(pthread_create(th, NULL, flood_main, f), 0);
	/* until it is flooding: the first completion (or wake) is in */
	double end = now_s() + 30;
	while (__atomic_load_n(&f->completed, __ATOMIC_RELAXED) == 0 && now_s() < end)
		usleep(1000);
	cr_assert_gt(f->completed, 0, "the flooder got going");
}

static void flood_stop(struct flood *f, pthread_t th)
{
	__atomic_store_n(&f->stop, 1, __ATOMIC_RELAXED);
	pthread_join(th, NULL);
	cr_expect_eq(f->wrong, 0, "every flood completion is right (%lu wrong)",
		     (unsigned long)f->wrong);
	cli_close(&f->c);
}

/* Victim alone, then under the flood f (started by the caller's kind): the bound. */
static void check_victim(struct dmn *d, enum flood_kind kind, uint32_t topk_nq, const char *what)
{
	struct cli v;
	cli_hello(&v, d->sock, 64, 32 * MiB);
	int t = cli_open(&v, "victim");
	fill(&v, t);
	unsigned n_alone, n_flood;
	victim_run(&v, t, 30, &n_alone); /* warm-up */
	double alone = victim_run(&v, t, 30, &n_alone);
	struct flood f;
	pthread_t th;
	flood_start(&f, &th, d->sock, kind,
		    kind == FLOOD_LOOKUP || kind == FLOOD_UPDATE ? 4096 : 64, topk_nq);
	double flooded = victim_run(&v, t, VICTIM_SECS, &n_flood);
	uint64_t fdone = __atomic_load_n(&f.completed, __ATOMIC_RELAXED);
	flood_stop(&f, th);
	cr_log_info("%s: victim p99 alone %.3f ms, under the flood %.3f ms (%.1fx), %u requests; "
		    "flooder completed %lu", what, alone, flooded, flooded / alone, n_flood,
		    (unsigned long)fdone);
	cr_expect_eq(n_alone, VICTIM_ITERS);
	cr_expect_eq(n_flood, VICTIM_ITERS, "%s: the victim completed %u of %u requests in %.0f s",
		     what, n_flood, VICTIM_ITERS, VICTIM_SECS);
	cr_expect_lt(flooded, 20 * alone + FLOOR_MS,
		     "%s: victim p99 %.3f ms under the flood, %.3f ms alone", what, flooded, alone);
	cli_close(&v);
}

/* 4,096 in-flight lookups of max_batch keys each. */
Test(fair, lookup_flood, .timeout = 120)
{
	struct dmn d;
	dmn_start(&d, NULL);
	check_victim(&d, FLOOD_LOOKUP, 0, "lookup flood");
	dmn_stop(&d);
}

/* The split tests' setup: a daemon, client c (32 MiB) and o (1 MiB) on table "split"
 * (its id), filled by c. */
static int split_setup(struct dmn *d, struct cli *c, struct cli *o)
{
	dmn_start(d, NULL);
	cli_hello(c, d->sock, 64, 32 * MiB);
	cli_hello(o, d->sock, 64, 1 * MiB);
	int t = cli_open(c, "split");
	cr_assert_eq(cli_open(o, "split"), t);
	fill(c, t);
	return t;
}

/* 4,096 in-flight UPDATEs of max_batch keys each, into the flooder's own table: each is
 * served in slices too (before, one ran whole within a pass: the victim waited for a
 * whole 16 MiB write at every pass). */
Test(fair, update_flood, .timeout = 120)
{
	struct dmn d;
	dmn_start(&d, NULL);
	check_victim(&d, FLOOD_UPDATE, 0, "update flood");
	dmn_stop(&d);
}

/* A large UPDATE served in slices writes exactly what it would whole, checked against a
 * reference of its own (the last position of each key wins, within a slice and across
 * slices; a new key's first position is CREATED, later ones FOUND), with another
 * client's requests in between and its completion after the one before it. */
Test(fair, split_update_is_exact, .timeout = 60)
{
	struct dmn d;
	struct cli c, o;
	int t = split_setup(&d, &c, &o);
	/* odd positions: the known key i; even ones: new keys, each at two positions (i and
	 * i + 2 of the same group of 4: inside a slice or across a slice's end) */
	static uint64_t want_key[NKEYS];
	static uint32_t last_pos[NKEYS]; /* reference: by position, the last one of its key */
	for (uint32_t i = 0; i < NKEYS; i++) {
		uint64_t k = i % 2 ? key_i(i) : key_i(NKEYS + i / 4);
		want_key[i] = k;
		memcpy(c.data + 8ull * i, &k, 8);
		float *row = (float *)(void *)(c.data + MiB + 4ull * DIM * i);
		for (int j = 0; j < DIM; j++)
			row[j] = (float)i + (float)j / 128.0f;
	}
	for (uint32_t i = 0; i < NKEYS; i++)
		last_pos[i] = i % 2 ? i : (i % 4 == 0 ? i + 2 : i);
	struct de_sqe nop = { .op = DE_OP_NOP, .user_data = 1 };
	cr_assert_eq(de_channel_submit(c.ch, &nop), 0); /* before it: completes before it */
	struct de_sqe e = lookup_sqe(t, NKEYS, 0, MiB);
	e.op = DE_OP_UPDATE;
	e.flags = DE_SQE_STATUS;
	e.status_off = 30 * MiB;
	e.user_data = 0xabc;
	cr_assert_eq(de_channel_submit(c.ch, &e), 0);
	cr_assert_eq(de_channel_submit(c.ch, &(struct de_sqe){ .op = DE_OP_NOP, .user_data = 2 }), 0);
	struct de_cqe q2 = cli_do(&o, &(struct de_sqe){ .op = DE_OP_NOP, .user_data = 5 });
	cr_assert_eq(q2.res, 0);
	struct de_cqe q;
	uint64_t order[3] = { 1, 0xabc, 2 };
	for (int k = 0; k < 3; k++) {
		cr_assert_eq(de_channel_reap(c.ch, &q, true, 0, RAW_TIMEOUT_MS), 0);
		cr_assert_eq(q.user_data, order[k], "completions stay in order (%d)", k);
		cr_assert_eq(q.res, 0);
		if (k == 1)
			cr_assert_eq(q.count, NKEYS / 4, "created: the distinct new keys");
	}
	const uint8_t *st = (const uint8_t *)c.data + 30 * MiB;
	for (uint32_t i = 0; i < NKEYS; i++) {
		uint8_t want = i % 2 || i % 4 == 2 ? DE_FOUND : DE_CREATED;
		cr_assert_eq(st[i], want, "status of position %u", i);
	}
	/* read every position's key back (a large lookup: in slices too, tested above) */
	memcpy(c.data, want_key, sizeof want_key);
	struct de_sqe le = lookup_sqe(t, NKEYS, 0, MiB);
	struct de_cqe r = cli_do(&c, &le);
	cr_assert_eq(r.res, 0);
	cr_assert_eq(r.count, NKEYS);
	for (uint32_t i = 0; i < NKEYS; i++) {
		const float *row = (const float *)(void *)(c.data + MiB + 4ull * DIM * i);
		for (int j = 0; j < DIM; j += 21)
			cr_assert_eq(row[j], (float)last_pos[i] + (float)j / 128.0f,
				     "position %u, float %d: the row of position %u", i, j,
				     last_pos[i]);
	}
	cr_assert_eq(stats(&c, t).keys, (uint64_t)NKEYS + NKEYS / 4);
	cli_close(&o);
	cli_close(&c);
	dmn_stop(&d);
}

/* A large lookup served in slices returns exactly what it would whole: every value and
 * status, created keys included, with another client's requests in between. */
Test(fair, split_lookup_is_exact, .timeout = 60)
{
	struct dmn d;
	struct cli c, o;
	int t = split_setup(&d, &c, &o);
	/* half known keys, half new ones (create), in an interleaved order */
	for (uint32_t i = 0; i < NKEYS; i++) {
		uint64_t k = i % 2 ? key_i(i) : key_i(i + NKEYS);
		memcpy(c.data + 8ull * i, &k, 8);
	}
	struct de_sqe e = lookup_sqe(t, NKEYS, 0, MiB);
	e.flags = DE_LOOKUP_CREATE | DE_SQE_STATUS;
	e.status_off = 30 * MiB;
	e.user_data = 0xabc;
	cr_assert_eq(de_channel_submit(c.ch, &e), 0);
	struct de_sqe nop = { .op = DE_OP_NOP, .user_data = 1 };
	cr_assert_eq(de_channel_submit(c.ch, &nop), 0); /* after it: completes after it */
	struct de_cqe q2 = cli_do(&o, &(struct de_sqe){ .op = DE_OP_NOP, .user_data = 5 });
	cr_assert_eq(q2.res, 0);
	struct de_cqe q;
	cr_assert_eq(de_channel_reap(c.ch, &q, true, 0, RAW_TIMEOUT_MS), 0);
	cr_assert_eq(q.user_data, 0xabc, "completions stay in order");
	cr_assert_eq(q.res, 0);
	cr_assert_eq(q.count, NKEYS / 2, "found");
	cr_assert_eq(q.aux0, NKEYS / 2, "created");
	cr_assert_eq(de_channel_reap(c.ch, &q, true, 0, RAW_TIMEOUT_MS), 0);
	cr_assert_eq(q.user_data, 1);
	const uint8_t *st = (const uint8_t *)c.data + 30 * MiB;
	for (uint32_t i = 0; i < NKEYS; i++) {
		const float *row = (const float *)(void *)(c.data + MiB + 4ull * DIM * i);
		if (i % 2) {
			cr_assert_eq(st[i], DE_FOUND, "status of key %u", i);
			cr_assert_eq(row[0], tag(key_i(i)), "value of key %u", i);
			cr_assert_eq(row[DIM - 1], 0.5f);
		} else {
			cr_assert_eq(st[i], DE_CREATED, "status of key %u", i);
			cr_assert_eq(row[0], 0.0f, "a created row has the init value (key %u)", i);
		}
	}
	cr_assert_eq(stats(&c, t).keys, (uint64_t)NKEYS + NKEYS / 2);
	cli_close(&o);
	cli_close(&c);
	dmn_stop(&d);
}

/* Long TOPK requests (a scan of the whole table each) run off the data plane. */
Test(fair, topk_flood, .timeout = 120)
{
	struct dmn d;
	dmn_start(&d, (const char *const[]){ "--topk-threads", "1", NULL });
	check_victim(&d, FLOOD_TOPK, 256, "top-k flood");
	dmn_stop(&d);
}

/* A TOPK over the cost cap is refused at once, the cap in the completion. */
Test(fair, topk_over_cap_refused, .timeout = 60)
{
	struct dmn d;
	dmn_start(&d, NULL);
	struct cli c;
	cli_hello(&c, d.sock, 64, 32 * MiB);
	int t = cli_open(&c, "cap");
	fill(&c, t);
	/* 4,096 queries x 65,536 rows x 64 = 2^34 exactly: at the cap, runs; 4,097: over */
	uint32_t nq = 4097;
	float *qv = (float *)(void *)c.data;
	for (uint64_t i = 0; i < (uint64_t)nq * DIM; i++)
		qv[i] = 1.0f;
	struct de_sqe e = { .op = DE_OP_TOPK, .table = (uint16_t)t, .count = nq, .user_data = 9,
			    .keys_len = 4ull * nq * DIM, .vals_off = 4 * MiB,
			    .vals_len = 12ull * nq, .arg = 1 };
	double t0 = now_s();
	struct de_cqe q = cli_do(&c, &e);
	cr_assert_eq(q.res, -E2BIG, "over the cap: -E2BIG, not %d", q.res);
	cr_assert_eq(q.aux1, 1ull << 34, "the cap is in aux1");
	cr_assert_eq(q.aux0, (uint64_t)nq * NKEYS * DIM, "the cost is in aux0");
	cr_assert_lt(now_s() - t0, 1.0, "refused without scanning");
	/* a small one still runs */
	e.count = 2;
	e.keys_len = 4ull * 2 * DIM;
	e.vals_len = 24;
	q = cli_do(&c, &e);
	cr_assert_eq(q.res, 0);
	cr_assert_eq(q.count, 1);
	cli_close(&c);
	dmn_stop(&d);
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
	char *p = strrchr(buf, ')');
	cr_assert_not_null(p);
	unsigned long long ut, st;
	cr_assert_eq(sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
			    &st), 2);
	return ut + st;
}

/* A wake storm: counted, backed off, cheap for the daemon, harmless to the victim. */
Test(fair, wake_storm, .timeout = 120)
{
	struct dmn d;
	dmn_start(&d, NULL);
	struct cli v;
	cli_hello(&v, d.sock, 64, 32 * MiB);
	int t = cli_open(&v, "victim");
	fill(&v, t);
	struct flood f;
	pthread_t th;
	flood_start(&f, &th, d.sock, FLOOD_WAKE, 64, 0);
	usleep(200000);
	unsigned long long c0 = cpu_ticks(d.pid);
	double t0 = now_s();
	usleep(1000000);
	unsigned long long c1 = cpu_ticks(d.pid);
	double secs = now_s() - t0;
	uint64_t wakes = __atomic_load_n(&f.completed, __ATOMIC_RELAXED);
	/* the victim, idle between its requests, still gets served */
	for (int i = 0; i < 50; i++) {
		uint64_t k = key_i((uint32_t)i);
		memcpy(v.data, &k, 8);
		struct de_cqe q = cli_do(&v, &(struct de_sqe){ .op = DE_OP_LOOKUP, .table = (uint16_t)t,
							      .count = 1, .user_data = (uint64_t)i,
							      .keys_len = 8, .vals_off = 4096,
							      .vals_len = 4 * DIM });
		cr_assert_eq(q.res, 0);
		cr_assert_eq(q.count, 1);
		cr_assert_eq(((const float *)(void *)(v.data + 4096))[0], tag(k));
		usleep(2000);
	}
	struct de_wire_stats s = stats(&v, t);
	__atomic_store_n(&f.stop, 1, __ATOMIC_RELAXED);
	pthread_join(th, NULL);
	/* the storming channel itself is served again once it submits: within its poll */
	struct de_cqe q = cli_do(&f.c, &(struct de_sqe){ .op = DE_OP_NOP, .user_data = 77 });
	cr_assert_eq(q.res, 0);
	cli_close(&f.c);
	long hz = sysconf(_SC_CLK_TCK);
	double cpu = (double)(c1 - c0) / (double)hz / secs;
	cr_log_info("wake storm: %.2f M wakes/s, daemon CPU %.0f%%, %lu empty wakes counted, "
		    "%lu back-offs", (double)wakes / secs / 1e6, 100 * cpu,
		    (unsigned long)s.dp_empty_wakes, (unsigned long)s.dp_wake_backoffs);
	cr_expect_gt(s.dp_wake_backoffs, 0, "the storming channel was backed off");
	cr_expect_geq(s.dp_empty_wakes, 64, "its empty wakes were counted");
	cr_expect_lt(cpu, 0.30, "daemon CPU %.0f%% during the storm", 100 * cpu);
	cli_close(&v);
	dmn_stop(&d);
}

/* dynemb_topk under a small cap: requests split to fit it, results exact; a table where
 * one query is over it: -E2BIG, the cap named. */
Test(fair, topk_client_splits_under_cap, .timeout = 60)
{
	struct dmn d;
	dmn_start(&d, (const char *const[]){ "--topk-max-cost", "100000", NULL });
	dynemb_client *c;
	cr_assert_eq(dynemb_connect(d.sock, NULL, &c), 0);
	enum { D = 8, SMALL = 1000, BIG = 20000, NQ = 100 };
	int t, tb;
	struct dynemb_table_spec spec = { .name = "small", .dim = D, .keys = DYNEMB_INT64_KEYS };
	cr_assert_eq(dynemb_open(c, &spec, &t), 0);
	spec.name = "big";
	cr_assert_eq(dynemb_open(c, &spec, &tb), 0);
	static uint64_t keys[BIG];
	static float rows[BIG * D];
	for (uint32_t i = 0; i < BIG; i++) {
		keys[i] = key_i(i);
		for (int j = 0; j < D; j++)
			rows[i * D + j] = j ? 0.0f : (float)i / BIG; /* key_i(SMALL - 1) scores best */
	}
	cr_assert_eq(dynemb_update(c, t, keys, SMALL, rows, 1, NULL), 0);
	cr_assert_eq(dynemb_update(c, tb, keys, BIG, rows, 1, NULL), 0);
	static float q[NQ * D];
	for (int i = 0; i < NQ; i++)
		q[i * D] = 1.0f + (float)i; /* every query's best row is the same */
	uint64_t best[NQ];
	float score[NQ];
	uint32_t found[NQ];
	/* 8,000 per query: 12 queries per request fit the cap of 100,000 */
	cr_assert_eq(dynemb_topk(c, t, q, NQ, 1, DYNEMB_METRIC_DOT, best, score, found), 0);
	for (int i = 0; i < NQ; i++) {
		cr_assert_eq(found[i], 1);
		cr_assert_eq(best[i], key_i(SMALL - 1), "query %d: the best row", i);
		cr_assert_float_eq(score[i], (1.0f + (float)i) * (float)(SMALL - 1) / BIG, 1e-4);
	}
	/* 160,000 for one query: refused, the cap named */
	int err = dynemb_topk(c, tb, q, NQ, 1, DYNEMB_METRIC_DOT, best, score, found);
	cr_assert_eq(err, -E2BIG);
	const char *msg = dynemb_strerror(err);
	cr_assert(strstr(msg, "one top-k query over this table costs 160000 (rows x dim), over "
			      "the daemon's cost cap of 100000 per request"),
		  "message: %s", msg);
	dynemb_close(c);
	dmn_stop(&d);
}
