/*
 * test_client.c — libdynemb (src/client/dynemb.h) against the real daemon.
 *
 * Every test starts its own dynembd (the binary named by $DYNEMBD, default
 * /tmp/dynembd-c) in the foreground on a socket of its own under /tmp, with small
 * arena segments and reservation, and stops it at the end (SIGTERM; PR_SET_PDEATHSIG
 * as well, so a failed assertion never leaves a daemon behind). A missing binary is a
 * failure, not a skip: the daemon is part of this project.
 *
 * Values are checked against references computed here: the initializer's constant or
 * zeros, and val(key, j) below for assigned rows.
 *
 * Suites:
 *   basic     connect/open/lookup-create with constant and zeros initializers, update,
 *             erase, stats, config mismatch, no daemon, key-type and argument errors.
 *   strings   string keys by update/lookup (blocking and read-only), "" reads zeros.
 *   batch     batches larger than the daemon's --max-batch.
 *   async     8 lookups in flight completed in reverse order; limits.
 *   zerocopy  read-only lookups served from the mapping; arena growth; two processes.
 *   gone      the daemon SIGKILLed while a call waits on the ring and between calls: that
 *             call and every later one fail with -ECONNRESET/-EPIPE within seconds
 *             (not the connection's 30 s timeout), saying the daemon went away.
 *   untrusted a fake daemon (a thread here) answering HELLO with malformed replies: the
 *             library must refuse each one and close every fd it was sent.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dynemb.h"
#include "proto.h" /* the fake daemon below speaks the wire protocol */
#include "daemon_util.h"

#define TIMEOUT 20 /* Criterion's guard against a hang, seconds */

/* ---- the daemon -------------------------------------------------------------------- */

static pid_t d_pid = -1;
static char d_sock[108];

/* Start dynembd with the common flags plus extra (NULL-terminated), wait until its
 * socket accepts. */
static void daemon_start(const char *const *extra)
{
	const char *bin = daemon_bin();
	static unsigned n;
	snprintf(d_sock, sizeof d_sock, "/tmp/de-test-%d-%u.sock", (int)getpid(), n++);
	unlink(d_sock);
	const char *argv[32];
	daemon_argv(argv, 32, bin, d_sock, "warn", NULL, extra);
	d_pid = daemon_spawn(argv, SIGTERM, NULL);
	daemon_wait_listen(d_pid, d_sock, 5, NULL);
}

static void daemon_stop(void)
{
	if (d_pid > 0) {
		kill(d_pid, SIGCONT); /* in case a test stopped it */
		daemon_terminate(d_pid, 3);
		d_pid = -1;
	}
	unlink(d_sock);
}

static void start_default(void) { daemon_start(NULL); }

static dynemb_client *connect_ok(void)
{
	dynemb_client *c = NULL;
	struct dynemb_connect_opts o = { .name = "test_client", .timeout_ms = 5000 };
	int err = dynemb_connect(d_sock, &o, &c);
	cr_assert_eq(err, 0, "dynemb_connect: %s", dynemb_strerror(err));
	cr_assert_not_null(c);
	return c;
}

static int open_ok(dynemb_client *c, const char *name, uint32_t dim, enum dynemb_initializer init,
		   float a, enum dynemb_key_kind kind)
{
	struct dynemb_table_spec s = { .name = name, .dim = dim, .init = init, .init_a = a,
				   .seed = 42, .keys = kind };
	int t = -1;
	int err = dynemb_open(c, &s, &t);
	cr_assert_eq(err, 0, "dynemb_open(%s): %s", name, dynemb_strerror(err));
	cr_assert_geq(t, 0);
	cr_assert_eq(dynemb_table_dim(c, t), dim);
	return t;
}

/* ---- references -------------------------------------------------------------------- */

/* The value assigned to element j of key k's row: exact in float. */
static float val(uint64_t k, uint32_t j)
{
	return (float)((k * 131 + j * 7) % 4093) * 0.25f - 100.0f;
}

static float *vals_for(const uint64_t *keys, size_t n, uint32_t dim)
{
	float *v = malloc(n * dim * sizeof *v);
	cr_assert_not_null(v);
	for (size_t i = 0; i < n; i++)
		for (uint32_t j = 0; j < dim; j++)
			v[i * dim + j] = val(keys[i], j);
	return v;
}

static uint64_t *seq_keys(size_t n, uint64_t first)
{
	uint64_t *k = malloc(n * sizeof *k);
	cr_assert_not_null(k);
	for (size_t i = 0; i < n; i++)
		k[i] = first + i * 7919;
	return k;
}

/* Rows [0, n) of out are val(keys[i], .); returns the first bad index or n. */
static size_t first_bad(const uint64_t *keys, size_t n, uint32_t dim, const float *out)
{
	for (size_t i = 0; i < n; i++)
		for (uint32_t j = 0; j < dim; j++)
			if (out[i * dim + j] != val(keys[i], j))
				return i;
	return n;
}

static size_t first_not_const(size_t n, uint32_t dim, const float *out, float c)
{
	for (size_t i = 0; i < n; i++)
		for (uint32_t j = 0; j < dim; j++)
			if (out[i * dim + j] != c)
				return i;
	return n;
}

/* ---- basic ------------------------------------------------------------------------- */

TestSuite(basic, .init = start_default, .fini = daemon_stop, .timeout = TIMEOUT);

Test(basic, lookup_creates_with_constant_then_finds)
{
	dynemb_client *c = connect_ok();
	const uint32_t dim = 16;
	int t = open_ok(c, "const", dim, DYNEMB_CONSTANT, 0.375f, DYNEMB_INT64_KEYS);
	size_t n = 500;
	uint64_t *k = seq_keys(n, 1);
	float *out = calloc(n * dim, sizeof *out);
	uint8_t *st = calloc(n, 1);
	int err = dynemb_lookup(c, t, k, n, out, st, 0, 1);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	cr_assert_eq(first_not_const(n, dim, out, 0.375f), n);
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(st[i], DYNEMB_ST_CREATED, "key %zu: status %u", i, st[i]);
	memset(out, 0, n * dim * sizeof *out);
	err = dynemb_lookup(c, t, k, n, out, st, 0, 2);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	cr_assert_eq(first_not_const(n, dim, out, 0.375f), n);
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(st[i], DYNEMB_ST_FOUND);
	/* read-only: the same values, served locally */
	memset(out, 0, n * dim * sizeof *out);
	err = dynemb_lookup(c, t, k, n, out, st, DYNEMB_READONLY, 3);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	cr_assert_eq(first_not_const(n, dim, out, 0.375f), n);
	free(k), free(out), free(st);
	dynemb_close(c);
}

Test(basic, lookup_creates_with_zeros)
{
	dynemb_client *c = connect_ok();
	const uint32_t dim = 8;
	int t = open_ok(c, "zeros", dim, DYNEMB_ZEROS, 0, DYNEMB_INT64_KEYS);
	size_t n = 300;
	uint64_t *k = seq_keys(n, 5);
	float *out = malloc(n * dim * sizeof *out);
	for (size_t i = 0; i < n * dim; i++)
		out[i] = 9.0f;
	uint8_t *st = calloc(n, 1);
	int err = dynemb_lookup(c, t, k, n, out, st, 0, 1);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	cr_assert_eq(first_not_const(n, dim, out, 0.0f), n);
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(st[i], DYNEMB_ST_CREATED);
	struct dynemb_stats s;
	err = dynemb_stats(c, t, &s);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	cr_assert_eq(s.keys, n);
	cr_assert_eq(s.dim, dim);
	free(k), free(out), free(st);
	dynemb_close(c);
}

Test(basic, update_then_lookup_gives_assigned_values)
{
	dynemb_client *c = connect_ok();
	const uint32_t dim = 12;
	int t = open_ok(c, "upd", dim, DYNEMB_CONSTANT, 1.0f, DYNEMB_INT64_KEYS);
	size_t n = 2000;
	uint64_t *k = seq_keys(n, 100);
	float *v = vals_for(k, n, dim);
	size_t created = 0;
	int err = dynemb_update(c, t, k, n / 2, v, 1, &created); /* half exist before the rest */
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	cr_assert_eq(created, n / 2);
	err = dynemb_update(c, t, k, n, v, 2, &created);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	cr_assert_eq(created, n - n / 2);

	float *out = calloc(n * dim, sizeof *out);
	uint8_t *st = calloc(n, 1);
	err = dynemb_lookup(c, t, k, n, out, st, 0, 3); /* through the daemon */
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	size_t bad = first_bad(k, n, dim, out);
	cr_assert_eq(bad, n, "daemon path: key %zu wrong", bad);
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(st[i], DYNEMB_ST_FOUND);
	memset(out, 0, n * dim * sizeof *out);
	err = dynemb_lookup(c, t, k, n, out, NULL, DYNEMB_READONLY, 3);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	bad = first_bad(k, n, dim, out);
	cr_assert_eq(bad, n, "read-only path: key %zu wrong", bad);

	struct dynemb_stats s;
	err = dynemb_stats(c, t, &s);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	cr_assert_eq(s.keys, n, "stats keys %llu", (unsigned long long)s.keys);
	free(k), free(v), free(out), free(st);
	dynemb_close(c);
}

Test(basic, erase_then_readonly_reads_zeros_missing)
{
	dynemb_client *c = connect_ok();
	const uint32_t dim = 4;
	int t = open_ok(c, "erase", dim, DYNEMB_CONSTANT, 2.0f, DYNEMB_INT64_KEYS);
	size_t n = 1000;
	uint64_t *k = seq_keys(n, 7);
	float *v = vals_for(k, n, dim);
	int err = dynemb_update(c, t, k, n, v, 1, NULL);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	/* erase the even ones (and one key that never existed) */
	uint64_t *ek = malloc((n / 2 + 1) * sizeof *ek);
	for (size_t i = 0; i < n / 2; i++)
		ek[i] = k[2 * i];
	ek[n / 2] = 999999999999ull;
	size_t erased = 0;
	err = dynemb_erase(c, t, ek, n / 2 + 1, &erased);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	cr_assert_eq(erased, n / 2);

	float *out = malloc(n * dim * sizeof *out);
	uint8_t *st = calloc(n, 1);
	for (int path = 0; path < 2; path++) {
		/* path 0: this client; path 1: a fresh client with a fresh mapping */
		dynemb_client *c2 = path ? connect_ok() : c;
		int t2 = path ? open_ok(c2, "erase", dim, DYNEMB_CONSTANT, 2.0f, DYNEMB_INT64_KEYS) : t;
		for (size_t i = 0; i < n * dim; i++)
			out[i] = 5.0f;
		err = dynemb_lookup(c2, t2, k, n, out, st, DYNEMB_READONLY, 2);
		cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
		for (size_t i = 0; i < n; i++) {
			if (i % 2 == 0) {
				cr_assert_eq(st[i], DYNEMB_ST_MISSING, "key %zu status %u", i, st[i]);
				for (uint32_t j = 0; j < dim; j++)
					cr_assert_eq(out[i * dim + j], 0.0f);
			} else {
				cr_assert_eq(st[i], DYNEMB_ST_FOUND);
				for (uint32_t j = 0; j < dim; j++)
					cr_assert_eq(out[i * dim + j], val(k[i], j));
			}
		}
		if (path)
			dynemb_close(c2);
	}
	struct dynemb_stats s;
	err = dynemb_stats(c, t, &s);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	cr_assert_eq(s.keys, n / 2);
	free(k), free(v), free(ek), free(out), free(st);
	dynemb_close(c);
}

Test(basic, config_mismatch_is_eexist_with_message)
{
	dynemb_client *c = connect_ok();
	int t = open_ok(c, "shared", 8, DYNEMB_ZEROS, 0, DYNEMB_INT64_KEYS);
	/* same name and config: the same table */
	int t2 = open_ok(c, "shared", 8, DYNEMB_ZEROS, 0, DYNEMB_INT64_KEYS);
	cr_assert_eq(t2, t);
	struct dynemb_table_spec s = { .name = "shared", .dim = 16, .init = DYNEMB_ZEROS, .seed = 42 };
	int t3 = -1;
	int err = dynemb_open(c, &s, &t3);
	cr_assert_eq(err, -EEXIST, "got %d (%s)", err, dynemb_strerror(err));
	const char *msg = dynemb_strerror(err);
	cr_log_info("-EEXIST: %s", msg);
	cr_assert(strlen(msg) > strlen("a table of that name exists with a different config") + 2,
		  "no daemon message in '%s'", msg);
	/* the connection still works */
	float out[8];
	uint64_t key = 3;
	err = dynemb_lookup(c, t, &key, 1, out, NULL, 0, 1);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	/* a bad spec never reaches the daemon */
	s.dim = 0;
	cr_assert_eq(dynemb_open(c, &s, &t3), -EINVAL);
	s.dim = 8;
	s.name = "";
	cr_assert_eq(dynemb_open(c, &s, &t3), -EINVAL);
	dynemb_close(c);
}

Test(basic, argument_and_key_type_errors)
{
	dynemb_client *c = connect_ok();
	int ti = open_ok(c, "ints", 4, DYNEMB_ZEROS, 0, DYNEMB_INT64_KEYS);
	int ts = open_ok(c, "strs", 4, DYNEMB_ZEROS, 0, DYNEMB_STRING_KEYS);
	uint64_t k = 1;
	float out[4];
	const char *sk[] = { "a" };
	cr_assert_eq(dynemb_lookup(c, ts, &k, 1, out, NULL, 0, 0), -EINVAL);
	cr_assert_eq(dynemb_lookup_str(c, ti, sk, NULL, 1, out, NULL, 0, 0), -EINVAL);
	cr_assert_eq(dynemb_lookup(c, 99, &k, 1, out, NULL, 0, 0), -EINVAL);
	cr_assert_eq(dynemb_lookup(c, ti, &k, 1, out, NULL, 0x80, 0), -EINVAL);
	cr_assert_eq(dynemb_lookup(c, ti, NULL, 0, NULL, NULL, 0, 0), 0);
	cr_assert_eq(dynemb_table_dim(c, 99), 0);
	cr_assert_eq(dynemb_complete(c, 12345, 0), -ESRCH);
	cr_assert_null(dynemb_request_vals(c, 12345));
	dynemb_close(c);
	dynemb_close(NULL);
}

Test(basic, reserved_fields_must_be_zero)
{
	dynemb_client *c = NULL;
	struct dynemb_connect_opts o = { .name = "test_client", .reserved[7] = 1 };
	int err = dynemb_connect(d_sock, &o, &c);
	cr_assert_eq(err, -EINVAL);
	cr_assert_null(c);
	cr_assert(strstr(dynemb_strerror(err), "dynemb_connect_opts.reserved[7]"), "%s",
		  dynemb_strerror(err));
	c = connect_ok();
	int t = -1;
	struct dynemb_table_spec s = { .name = "reserved", .dim = 4, .reserved[3] = 9 };
	err = dynemb_open(c, &s, &t);
	cr_assert_eq(err, -EINVAL);
	cr_assert(strstr(dynemb_strerror(err), "dynemb_table_spec.reserved[3]"), "%s",
		  dynemb_strerror(err));
	s.reserved[3] = 0;
	s.eviction.reserved[0] = 1;
	err = dynemb_open(c, &s, &t);
	cr_assert_eq(err, -EINVAL);
	cr_assert(strstr(dynemb_strerror(err), "dynemb_table_spec.eviction.reserved[0]"), "%s",
		  dynemb_strerror(err));
	s.eviction.reserved[0] = 0;
	err = dynemb_open(c, &s, &t);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	uint64_t k = 1, sampled[1];
	struct dynemb_sample_spec ss = { .kind = DYNEMB_SAMPLER_UNIFORM, .num_sampled = 1,
					 .reserved[1] = 1 };
	err = dynemb_sample(c, t, &ss, &k, 1, sampled, NULL, NULL, NULL);
	cr_assert_eq(err, -EINVAL);
	cr_assert(strstr(dynemb_strerror(err), "dynemb_sample_spec.reserved[1]"), "%s",
		  dynemb_strerror(err));
	dynemb_close(c);
}

Test(basic, capabilities_of_a_default_daemon)
{
	/* every operation; of the configuration only the default [memory] tier_dir (no
	 * data_dir, no export_dir) */
	const uint64_t ops = DYNEMB_CAP_APPLY_GRADS | DYNEMB_CAP_ADMISSION | DYNEMB_CAP_EVICTION |
			     DYNEMB_CAP_SAMPLE | DYNEMB_CAP_TOPK | DYNEMB_CAP_KEY_STRINGS |
			     DYNEMB_CAP_SNAPSHOT | DYNEMB_CAP_EXPORT_IMPORT | DYNEMB_CAP_DROP |
			     DYNEMB_CAP_QUERY | DYNEMB_CAP_OPSTATS | DYNEMB_CAP_DROP_FORCE |
			     DYNEMB_CAP_SERVING;
	dynemb_client *c = connect_ok();
	uint64_t caps = dynemb_capabilities(c);
	cr_assert_eq(caps, ops | DYNEMB_CAP_DISK_TIER, "capabilities %#llx",
		     (unsigned long long)caps);
	cr_assert_eq(caps & (DYNEMB_CAP_PERSISTENCE | DYNEMB_CAP_EXPORT_DIR), 0);
	cr_assert_eq(dynemb_capabilities(NULL), 0);
	dynemb_close(c);
}

Test(basic, struct_sizes_are_exported)
{
	cr_assert_eq(dynemb_struct_size("dynemb_table_spec"), sizeof(struct dynemb_table_spec));
	cr_assert_eq(dynemb_struct_size("dynemb_stats"), sizeof(struct dynemb_stats));
	cr_assert_eq(dynemb_struct_size("dynemb_import_result"), sizeof(struct dynemb_import_result));
	cr_assert_eq(dynemb_struct_size("dynemb_connect_opts"), sizeof(struct dynemb_connect_opts));
	cr_assert_eq(dynemb_struct_size("dynemb_nothing"), 0);
	cr_assert_eq(dynemb_struct_size(NULL), 0);
}

Test(nodaemon, enoent_econnrefused, .timeout = TIMEOUT)
{
	dynemb_client *c = NULL;
	char path[108];
	snprintf(path, sizeof path, "/tmp/de-test-none-%d.sock", (int)getpid());
	unlink(path);
	int err = dynemb_connect(path, NULL, &c);
	cr_assert_eq(err, -ENOENT, "got %d (%s)", err, dynemb_strerror(err));
	cr_assert_null(c);
	/* a socket file with nobody listening */
	int s = socket(AF_UNIX, SOCK_SEQPACKET, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
	cr_assert_eq(bind(s, (struct sockaddr *)&sa, sizeof sa), 0, "bind: %s", strerror(errno));
	close(s);
	err = dynemb_connect(path, NULL, &c);
	cr_assert_eq(err, -ECONNREFUSED, "got %d (%s)", err, dynemb_strerror(err));
	cr_assert(strlen(dynemb_strerror(err)) > 0);
	unlink(path);
}

/* ---- a daemon that goes away ------------------------------------------------------- */

#define GONE_TIMEOUT_MS 30000 /* far above the bound below: a call that waits it out fails */
#define GONE_BOUND_S 3.0      /* generous: the library looks every 100 ms */

static dynemb_client *connect_slow(void)
{
	dynemb_client *c = NULL;
	struct dynemb_connect_opts o = { .name = "test_gone", .timeout_ms = GONE_TIMEOUT_MS };
	int err = dynemb_connect(d_sock, &o, &c);
	cr_assert_eq(err, 0, "dynemb_connect: %s", dynemb_strerror(err));
	return c;
}

static void stop_and_wait(pid_t pid); /* below: SIGSTOP, and wait until it took effect */

static void kill_daemon(void)
{
	kill(d_pid, SIGKILL);
	waitpid(d_pid, NULL, 0);
	d_pid = -1;
}

/* err is -ECONNRESET or -EPIPE, and its text (dynemb_strerror on the thread of the
 * call: text, NULL for this one) says the daemon went away */
static void assert_gone_text(int err, const char *text, const char *what)
{
	if (!text)
		text = dynemb_strerror(err);
	cr_assert(err == -ECONNRESET || err == -EPIPE, "%s: %d (%s), want -ECONNRESET/-EPIPE",
		  what, err, text);
	cr_assert(strstr(text, "dynembd went away"), "%s: %s", what, text);
}

static void assert_gone(int err, const char *what) { assert_gone_text(err, NULL, what); }

/* Every kind of call on c fails at once, saying the daemon went away. */
static void assert_every_call_gone(dynemb_client *c, int t)
{
	uint64_t k[4] = { 1, 2, 3, 4 };
	float out[4 * 8];
	struct dynemb_stats st;
	uint64_t req;
	double t0 = now_s();
	assert_gone(dynemb_lookup(c, t, k, 4, out, NULL, 0, 0), "lookup after");
	assert_gone(dynemb_update(c, t, k, 4, out, 0, NULL), "update after");
	assert_gone(dynemb_stats(c, t, &st), "stats after");
	assert_gone(dynemb_submit_lookup(c, t, k, 4, 0, 0, &req), "submit after");
	struct dynemb_table_spec s = { .name = "other", .dim = 8, .init = DYNEMB_ZEROS };
	int t2;
	assert_gone(dynemb_open(c, &s, &t2), "open after");
	cr_assert_lt(now_s() - t0, GONE_BOUND_S, "later calls took %.2f s", now_s() - t0);
}

struct waiter {
	dynemb_client *c;
	int t, err;
	double done;
	char text[512]; /* dynemb_strerror(err) on the waiting thread */
};

static void *lookup_waits(void *arg)
{
	struct waiter *w = arg;
	uint64_t k[4] = { 11, 12, 13, 14 };
	float out[4 * 8];
	w->err = dynemb_lookup(w->c, w->t, k, 4, out, NULL, 0, 0);
	w->done = now_s();
	snprintf(w->text, sizeof w->text, "%s", dynemb_strerror(w->err));
	return NULL;
}

TestSuite(gone, .init = start_default, .fini = daemon_stop, .timeout = 90);

/* The daemon dies while a blocking lookup waits on the ring (the daemon is stopped so
 * the request stays unserved): the call returns within the bound, and so does every
 * later one. */
Test(gone, sigkill_while_a_call_waits)
{
	dynemb_client *c = connect_slow();
	int t = open_ok(c, "g", 8, DYNEMB_ZEROS, 0, DYNEMB_INT64_KEYS);
	stop_and_wait(d_pid);
	struct waiter w = { .c = c, .t = t };
	pthread_t th;
	cr_assert_eq(pthread_create(&th, NULL, lookup_waits, &w), 0);
	usleep(300 * 1000); /* the lookup is submitted and sleeps on the ring */
	double killed = now_s();
	kill_daemon();
	pthread_join(th, NULL);
	assert_gone_text(w.err, w.text, "the waiting lookup");
	cr_assert_lt(w.done - killed, GONE_BOUND_S, "the waiting lookup returned %.2f s after the "
		     "kill", w.done - killed);
	assert_every_call_gone(c, t);
	dynemb_close(c);
}

/* The daemon dies between calls: the next blocking call, an async completion and a
 * control request each notice it within the bound. */
Test(gone, sigkill_between_calls)
{
	dynemb_client *c = connect_slow(), *c2 = connect_slow();
	int t = open_ok(c, "g", 8, DYNEMB_ZEROS, 0, DYNEMB_INT64_KEYS);
	int t2 = open_ok(c2, "g", 8, DYNEMB_ZEROS, 0, DYNEMB_INT64_KEYS);
	uint64_t k[4] = { 1, 2, 3, 4 }, req;
	float out[4 * 8];
	cr_assert_eq(dynemb_submit_lookup(c2, t2, k, 4, 0, 0, &req), 0);
	cr_assert_eq(dynemb_complete(c2, req, -1), 0);
	stop_and_wait(d_pid);
	cr_assert_eq(dynemb_submit_lookup(c2, t2, k, 4, 0, 0, &req), 0);
	kill_daemon();
	double t0 = now_s();
	assert_gone(dynemb_lookup(c, t, k, 4, out, NULL, 0, 0), "the first lookup");
	assert_gone(dynemb_complete(c2, req, -1), "the async completion");
	cr_assert_lt(now_s() - t0, GONE_BOUND_S, "took %.2f s", now_s() - t0);
	assert_every_call_gone(c, t);
	assert_every_call_gone(c2, t2);
	dynemb_close(c);
	dynemb_close(c2);

	/* a control request first */
	daemon_start(NULL);
	c = connect_slow();
	t = open_ok(c, "g", 8, DYNEMB_ZEROS, 0, DYNEMB_INT64_KEYS);
	kill_daemon();
	struct dynemb_table_spec s = { .name = "h", .dim = 8, .init = DYNEMB_ZEROS };
	int th;
	t0 = now_s();
	assert_gone(dynemb_open(c, &s, &th), "the first open");
	cr_assert_lt(now_s() - t0, GONE_BOUND_S, "took %.2f s", now_s() - t0);
	assert_every_call_gone(c, t);
	dynemb_close(c);
}

/* ---- strings ----------------------------------------------------------------------- */

TestSuite(strings, .init = start_default, .fini = daemon_stop, .timeout = TIMEOUT);

Test(strings, update_and_read_back_by_string)
{
	dynemb_client *c = connect_ok();
	const uint32_t dim = 6;
	int t = open_ok(c, "words", dim, DYNEMB_CONSTANT, 0.5f, DYNEMB_STRING_KEYS);
	enum { N = 300 };
	char *buf[N];
	const char *keys[N];
	size_t lens[N];
	uint64_t ref[N]; /* the reference row of key i is val(ref[i], .) */
	for (size_t i = 0; i < N; i++) {
		buf[i] = malloc(64);
		/* lengths 1..~40, some sharing prefixes */
		int l = snprintf(buf[i], 64, "feature/%zu/%.*s", i, (int)(i % 30), "abcdefghijklmnopqrstuvwxyz0123");
		keys[i] = buf[i];
		lens[i] = (size_t)l;
		ref[i] = 1000 + i;
	}
	float *v = vals_for(ref, N, dim);
	size_t created = 0;
	int err = dynemb_update_str(c, t, keys, lens, N, v, 1, &created);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	cr_assert_eq(created, N);

	float *out = calloc(N * dim, sizeof *out);
	uint8_t st[N];
	uint64_t l0, r0, l1, r1;
	dynemb_zero_copy_counts(c, &l0, &r0);
	for (int ro = 0; ro < 2; ro++) {
		memset(out, 0, N * dim * sizeof *out);
		/* NUL-terminated (lens NULL) one way, explicit lengths the other */
		err = dynemb_lookup_str(c, t, keys, ro ? NULL : lens, N, out, st,
				    ro ? DYNEMB_READONLY : 0, 2);
		cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
		size_t bad = first_bad(ref, N, dim, out);
		cr_assert_eq(bad, N, "%s: key '%s' wrong", ro ? "read-only" : "daemon", keys[bad < N ? bad : 0]);
		for (size_t i = 0; i < N; i++)
			cr_assert_eq(st[i], DYNEMB_ST_FOUND);
	}
	dynemb_zero_copy_counts(c, &l1, &r1);
	cr_assert_eq(l1 - l0, N, "read-only string lookups served locally: %llu",
		     (unsigned long long)(l1 - l0));
	cr_assert_eq(r1 - r0, 0);

	/* "" is key 0: zeros, both ways; a new string is created with the constant */
	const char *odd[] = { "", "never-seen-before" };
	float o2[2 * dim];
	for (int ro = 0; ro < 2; ro++) {
		for (size_t i = 0; i < 2 * dim; i++)
			o2[i] = 7.0f;
		err = dynemb_lookup_str(c, t, odd, NULL, 2, o2, NULL, ro ? DYNEMB_READONLY : 0, 3);
		cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
		for (uint32_t j = 0; j < dim; j++) {
			cr_assert_eq(o2[j], 0.0f, "\"\" reads %f", (double)o2[j]);
			cr_assert_eq(o2[dim + j], 0.5f);
		}
	}
	/* erase by string */
	size_t erased = 0;
	err = dynemb_erase_str(c, t, keys, lens, 10, &erased);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	cr_assert_eq(erased, 10);
	err = dynemb_lookup_str(c, t, keys, lens, 10, out, st, DYNEMB_READONLY, 4);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	for (size_t i = 0; i < 10; i++)
		cr_assert_eq(st[i], DYNEMB_ST_MISSING);
	cr_assert_eq(first_not_const(10, dim, out, 0.0f), 10);

	for (size_t i = 0; i < N; i++)
		free(buf[i]);
	free(v), free(out);
	dynemb_close(c);
}

/* ---- batch ------------------------------------------------------------------------- */

static void start_small_batch(void)
{
	static const char *const extra[] = { "--max-batch", "1000", NULL };
	daemon_start(extra);
}

TestSuite(batch, .init = start_small_batch, .fini = daemon_stop, .timeout = TIMEOUT);

Test(batch, larger_than_max_batch_is_split)
{
	dynemb_client *c = connect_ok();
	const uint32_t dim = 8;
	int t = open_ok(c, "big", dim, DYNEMB_CONSTANT, -1.5f, DYNEMB_INT64_KEYS);
	size_t n = 10000;
	uint64_t *k = seq_keys(n, 11);
	float *out = calloc(n * dim, sizeof *out);
	uint8_t *st = calloc(n, 1);
	int err = dynemb_lookup(c, t, k, n, out, st, 0, 1);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	cr_assert_eq(first_not_const(n, dim, out, -1.5f), n);
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(st[i], DYNEMB_ST_CREATED);

	float *v = vals_for(k, n, dim);
	size_t created = 99;
	err = dynemb_update(c, t, k, n, v, 2, &created);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	cr_assert_eq(created, 0);
	memset(out, 0, n * dim * sizeof *out);
	err = dynemb_lookup(c, t, k, n, out, st, 0, 3);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	size_t bad = first_bad(k, n, dim, out);
	cr_assert_eq(bad, n, "key %zu wrong", bad);

	/* strings too */
	enum { NS = 2500 };
	char (*sb)[24] = malloc(NS * sizeof *sb);
	const char **sk = malloc(NS * sizeof *sk);
	for (size_t i = 0; i < NS; i++) {
		snprintf(sb[i], sizeof sb[i], "s%zu", i * 13);
		sk[i] = sb[i];
	}
	int ts = open_ok(c, "bigs", dim, DYNEMB_ZEROS, 0, DYNEMB_STRING_KEYS);
	err = dynemb_update_str(c, ts, sk, NULL, NS, v, 1, &created);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	cr_assert_eq(created, NS);
	memset(out, 0, n * dim * sizeof *out);
	err = dynemb_lookup_str(c, ts, sk, NULL, NS, out, NULL, 0, 2);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	bad = first_bad(k, NS, dim, out);
	cr_assert_eq(bad, NS, "string key %zu wrong", bad);

	struct dynemb_stats s;
	err = dynemb_stats(c, t, &s);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	cr_assert_eq(s.keys, n);

	/* an async request must fit one descriptor */
	uint64_t req;
	cr_assert_eq(dynemb_submit_lookup(c, t, k, 1001, 0, 0, &req), -E2BIG);
	free(sb), free(sk);
	free(k), free(v), free(out), free(st);
	dynemb_close(c);
}

/* ---- async ------------------------------------------------------------------------- */

TestSuite(async, .init = start_default, .fini = daemon_stop, .timeout = TIMEOUT);

Test(async, eight_in_flight_completed_in_reverse)
{
	dynemb_client *c = connect_ok();
	const uint32_t dim = 16;
	int t = open_ok(c, "async", dim, DYNEMB_CONSTANT, 3.0f, DYNEMB_INT64_KEYS);
	enum { R = 8, N = 700 };
	uint64_t *k[R];
	uint64_t req[R];
	/* requests 0..3 read assigned keys, 4..7 create new ones (constant) */
	for (int r = 0; r < R; r++) {
		k[r] = seq_keys(N, 1 + (uint64_t)r * 10000000);
		if (r < 4) {
			float *v = vals_for(k[r], N, dim);
			int err = dynemb_update(c, t, k[r], N, v, 1, NULL);
			cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
			free(v);
		}
	}
	for (int r = 0; r < R; r++) {
		int err = dynemb_submit_lookup(c, t, k[r], N, 0, 2, &req[r]);
		cr_assert_eq(err, 0, "submit %d: %s", r, dynemb_strerror(err));
	}
	for (int r = R - 1; r >= 0; r--) {
		int err = dynemb_complete(c, req[r], -1);
		cr_assert_eq(err, 0, "complete %d: %s", r, dynemb_strerror(err));
		const float *v = dynemb_request_vals(c, req[r]);
		cr_assert_not_null(v);
		if (r < 4) {
			size_t bad = first_bad(k[r], N, dim, v);
			cr_assert_eq(bad, (size_t)N, "request %d key %zu wrong", r, bad);
		} else {
			cr_assert_eq(first_not_const(N, dim, v, 3.0f), (size_t)N);
		}
		/* completing twice gives the same result */
		cr_assert_eq(dynemb_complete(c, req[r], 0), 0);
	}
	/* read-only async (zero-copy) */
	uint64_t rq;
	int err = dynemb_submit_lookup(c, t, k[0], N, DYNEMB_READONLY, 3, &rq);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	cr_assert_null(dynemb_request_vals(c, req[0]), "values of older requests end at a submit");
	err = dynemb_complete(c, rq, -1);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	size_t bad = first_bad(k[0], N, dim, dynemb_request_vals(c, rq));
	cr_assert_eq(bad, (size_t)N);
	for (int r = 0; r < R; r++)
		free(k[r]);
	dynemb_close(c);
}

Test(async, fills_up_then_recovers)
{
	dynemb_client *c = NULL;
	/* a small channel: 8 entries, 1 MiB of data */
	struct dynemb_connect_opts o = { .sq_entries = 8, .data_bytes = 1 << 20, .timeout_ms = 5000 };
	int err = dynemb_connect(d_sock, &o, &c);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	const uint32_t dim = 64;
	int t = open_ok(c, "fill", dim, DYNEMB_CONSTANT, 1.0f, DYNEMB_INT64_KEYS);
	enum { N = 1000 }; /* 8 KB keys + 256 KB values: 3 fit in 1 MiB */
	uint64_t *k = seq_keys(N, 3);
	uint64_t req[16];
	int r = 0;
	for (; r < 16; r++) {
		err = dynemb_submit_lookup(c, t, k, N, 0, 1, &req[r]);
		if (err)
			break;
	}
	cr_assert_eq(err, -EAGAIN, "got %d (%s)", err, dynemb_strerror(err));
	cr_assert_geq(r, 2);
	cr_assert_leq(r, 8);
	/* too big for the area at all */
	uint64_t *kk = seq_keys(5000, 3);
	cr_assert_eq(dynemb_submit_lookup(c, t, kk, 5000, 0, 1, &req[15]), -ENOBUFS);
	for (int i = 0; i < r; i++) {
		err = dynemb_complete(c, req[i], -1);
		cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
		cr_assert_eq(first_not_const(N, dim, dynemb_request_vals(c, req[i]), 1.0f), (size_t)N);
	}
	/* space is back; a blocking call larger than the area is split */
	float *out = malloc(5000 * (size_t)dim * sizeof *out);
	err = dynemb_lookup(c, t, kk, 5000, out, NULL, 0, 2);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	cr_assert_eq(first_not_const(5000, dim, out, 1.0f), 5000);
	err = dynemb_submit_lookup(c, t, k, N, 0, 1, &req[0]);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	cr_assert_eq(dynemb_complete(c, req[0], -1), 0);
	free(k), free(kk), free(out);
	dynemb_close(c);
}

/* Completing out of allocation order and submitting in between: a region released
 * behind an older one held must not be handed out twice. */
Test(async, interleaved_submit_and_complete)
{
	dynemb_client *c = NULL;
	struct dynemb_connect_opts o = { .sq_entries = 8, .data_bytes = 1 << 20, .timeout_ms = 5000 };
	int err = dynemb_connect(d_sock, &o, &c);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	const uint32_t dim = 32;
	int t = open_ok(c, "inter", dim, DYNEMB_ZEROS, 0, DYNEMB_INT64_KEYS);
	enum { K = 6, N = 1500 }; /* 12 KB keys + 192 KB values each: 4 fit in 1 MiB */
	uint64_t *k[K];
	for (int i = 0; i < K; i++) {
		k[i] = seq_keys(N, 1 + (uint64_t)i * 100000000);
		float *v = vals_for(k[i], N, dim);
		cr_assert_eq(dynemb_update(c, t, k[i], N, v, 1, NULL), 0);
		free(v);
	}
	uint64_t seed = 1;
	uint64_t req[K];
	bool live[K] = { 0 };
	int owner[K]; /* key set of each live request */
	unsigned done = 0, rounds = 0;
	while (done < 200 && rounds++ < 10000) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		int i = (int)((seed >> 33) % K);
		if (!live[i]) {
			int ks = (int)((seed >> 40) % K);
			err = dynemb_submit_lookup(c, t, k[ks], N, 0, 2, &req[i]);
			if (err == -EAGAIN)
				continue;
			cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
			live[i] = true;
			owner[i] = ks;
		} else {
			err = dynemb_complete(c, req[i], -1);
			cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
			size_t bad = first_bad(k[owner[i]], N, dim, dynemb_request_vals(c, req[i]));
			cr_assert_eq(bad, (size_t)N, "round %u: key %zu wrong", rounds, bad);
			live[i] = false;
			done++;
		}
	}
	cr_assert_geq(done, 200u);
	for (int i = 0; i < K; i++) {
		if (live[i])
			cr_assert_eq(dynemb_complete(c, req[i], -1), 0);
		free(k[i]);
	}
	dynemb_close(c);
}

/* kill(SIGSTOP) returns before the target has stopped: wait (boundedly) until
 * /proc/PID/stat says so, or a busy-polling worker may still answer. */
static void stop_and_wait(pid_t pid)
{
	cr_assert_eq(kill(pid, SIGSTOP), 0);
	char path[64], buf[512];
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	for (int i = 0; i < 2000; i++) {
		FILE *f = fopen(path, "re");
		size_t got = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
		if (f)
			fclose(f);
		buf[got] = 0;
		const char *r = strrchr(buf, ')');
		if (r && r[1] == ' ' && r[2] == 'T')
			return;
		usleep(1000);
	}
	cr_assert_fail("the daemon did not stop within 2 s");
}

Test(async, timeout_then_recovery)
{
	dynemb_client *c = NULL;
	struct dynemb_connect_opts o = { .timeout_ms = 300 };
	int err = dynemb_connect(d_sock, &o, &c);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	const uint32_t dim = 8;
	int t = open_ok(c, "stall", dim, DYNEMB_CONSTANT, 2.0f, DYNEMB_INT64_KEYS);
	size_t n = 100;
	uint64_t *k = seq_keys(n, 9);
	float *out = calloc(n * dim, sizeof *out);
	/* a stopped daemon: the blocking call gives up, its request stays accounted for */
	stop_and_wait(d_pid);
	double t0 = now_s();
	err = dynemb_lookup(c, t, k, n, out, NULL, 0, 1);
	cr_assert_eq(err, -ETIMEDOUT, "got %d (%s)", err, dynemb_strerror(err));
	cr_assert_lt(now_s() - t0, 2.0);
	uint64_t req;
	err = dynemb_submit_lookup(c, t, k, n, 0, 1, &req);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	cr_assert_eq(dynemb_complete(c, req, 0), -ETIMEDOUT); /* not yet */
	cr_assert_eq(kill(d_pid, SIGCONT), 0);
	/* the late completion of the abandoned request is taken and dropped on the way */
	err = dynemb_complete(c, req, -1);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	cr_assert_eq(first_not_const(n, dim, dynemb_request_vals(c, req), 2.0f), n);
	err = dynemb_lookup(c, t, k, n, out, NULL, 0, 2);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	cr_assert_eq(first_not_const(n, dim, out, 2.0f), n);
	struct dynemb_stats s;
	cr_assert_eq(dynemb_stats(c, t, &s), 0);
	cr_assert_eq(s.keys, n);
	free(k), free(out);
	dynemb_close(c);
}

/* ---- zero-copy --------------------------------------------------------------------- */

TestSuite(zerocopy, .init = start_default, .fini = daemon_stop, .timeout = TIMEOUT);

Test(zerocopy, readonly_lookups_are_local_and_agree)
{
	dynemb_client *c = connect_ok();
	const uint32_t dim = 32;
	int t = open_ok(c, "zc", dim, DYNEMB_CONSTANT, 0.125f, DYNEMB_INT64_KEYS);
	size_t n = 5000;
	uint64_t *k = seq_keys(n, 1);
	float *v = vals_for(k, n, dim);
	int err = dynemb_update(c, t, k, n, v, 1, NULL);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));

	uint64_t l0, r0, l1, r1;
	dynemb_zero_copy_counts(c, &l0, &r0);
	float *a = calloc(n * dim, sizeof *a), *b = calloc(n * dim, sizeof *b);
	uint8_t *st = calloc(n, 1);
	err = dynemb_lookup(c, t, k, n, a, st, DYNEMB_READONLY, 2);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	dynemb_zero_copy_counts(c, &l1, &r1);
	cr_assert_eq(l1 - l0, n, "local %llu", (unsigned long long)(l1 - l0));
	cr_assert_eq(r1 - r0, 0, "remote %llu", (unsigned long long)(r1 - r0));
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(st[i], DYNEMB_ST_FOUND);
	err = dynemb_lookup(c, t, k, n, b, st, 0, 2); /* the daemon's answer */
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	cr_assert_eq(memcmp(a, b, n * dim * sizeof *a), 0, "zero-copy and daemon disagree");
	cr_assert_eq(first_bad(k, n, dim, a), n);

	/* missing keys: local too, zeros, not created */
	uint64_t miss[3] = { 77777777777ull, 0, 88888888888ull };
	float mo[3 * dim];
	uint8_t ms[3];
	err = dynemb_lookup(c, t, miss, 3, mo, ms, DYNEMB_READONLY, 3);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	cr_assert_eq(ms[0], DYNEMB_ST_MISSING);
	cr_assert_eq(ms[1], DYNEMB_ST_FOUND); /* key 0: "no feature", zeros */
	cr_assert_eq(ms[2], DYNEMB_ST_MISSING);
	cr_assert_eq(first_not_const(3, dim, mo, 0.0f), 3);
	struct dynemb_stats s;
	cr_assert_eq(dynemb_stats(c, t, &s), 0);
	cr_assert_eq(s.keys, n);
	free(k), free(v), free(a), free(b), free(st);
	dynemb_close(c);
}

Test(zerocopy, picks_up_new_arena_segments)
{
	dynemb_client *c = connect_ok();
	const uint32_t dim = 64;
	int t = open_ok(c, "grow", dim, DYNEMB_ZEROS, 0, DYNEMB_INT64_KEYS);
	struct dynemb_stats s0;
	int err = dynemb_stats(c, t, &s0);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	/* map the table now, while it has its first segment only */
	uint64_t probe = 5;
	float po[64];
	err = dynemb_lookup(c, t, &probe, 1, po, NULL, DYNEMB_READONLY, 0);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));

	size_t n = 300000;
	uint64_t *k = seq_keys(n, 1000);
	float *v = vals_for(k, n, dim);
	err = dynemb_update(c, t, k, n, v, 1, NULL);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	struct dynemb_stats s1;
	err = dynemb_stats(c, t, &s1);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	cr_assert_eq(s1.keys, n);
	cr_assert_gt(s1.arena_segments, s0.arena_segments, "the arena did not grow (%llu segments)",
		     (unsigned long long)s1.arena_segments);
	cr_log_info("arena segments %llu -> %llu", (unsigned long long)s0.arena_segments,
		    (unsigned long long)s1.arena_segments);

	uint64_t l0, r0, l1, r1;
	dynemb_zero_copy_counts(c, &l0, &r0);
	float *out = malloc(n * dim * sizeof *out);
	uint8_t *st = calloc(n, 1);
	err = dynemb_lookup(c, t, k, n, out, st, DYNEMB_READONLY, 2);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	dynemb_zero_copy_counts(c, &l1, &r1);
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(st[i], DYNEMB_ST_FOUND, "key %zu status %u", i, st[i]);
	size_t bad = first_bad(k, n, dim, out);
	cr_assert_eq(bad, n, "key %zu wrong", bad);
	cr_assert_eq(r1 - r0, 0, "remote %llu", (unsigned long long)(r1 - r0));
	cr_assert_eq(l1 - l0, n);
	free(k), free(v), free(out), free(st);
	dynemb_close(c);
}

Test(zerocopy, two_processes_share_a_table)
{
	dynemb_client *c = connect_ok();
	const uint32_t dim = 8;
	int t = open_ok(c, "shared", dim, DYNEMB_CONSTANT, 4.0f, DYNEMB_INT64_KEYS);
	size_t n = 3000;
	uint64_t *k = seq_keys(n, 50);
	/* before the child writes: missing */
	float *out = malloc(n * dim * sizeof *out);
	uint8_t *st = calloc(n, 1);
	int err = dynemb_lookup(c, t, k, n, out, st, DYNEMB_READONLY, 0);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	cr_assert_eq(st[0], DYNEMB_ST_MISSING);

	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		/* the child: its own connection; the parent's client is not touched */
		dynemb_client *cc = NULL;
		struct dynemb_connect_opts o = { .name = "child", .timeout_ms = 5000 };
		if (dynemb_connect(d_sock, &o, &cc))
			_exit(2);
		struct dynemb_table_spec s = { .name = "shared", .dim = dim, .init = DYNEMB_CONSTANT,
					   .init_a = 4.0f, .seed = 42 };
		int ct;
		if (dynemb_open(cc, &s, &ct))
			_exit(3);
		float *v = vals_for(k, n, dim);
		size_t created = 0;
		if (dynemb_update(cc, ct, k, n, v, 1, &created) || created != n)
			_exit(4);
		dynemb_close(cc);
		_exit(0);
	}
	int status;
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child failed: status %#x", status);

	for (int ro = 0; ro < 2; ro++) {
		memset(out, 0, n * dim * sizeof *out);
		err = dynemb_lookup(c, t, k, n, out, st, ro ? DYNEMB_READONLY : 0, 2);
		cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
		size_t bad = first_bad(k, n, dim, out);
		cr_assert_eq(bad, n, "%s: key %zu wrong", ro ? "read-only" : "daemon", bad);
		for (size_t i = 0; i < n; i++)
			cr_assert_eq(st[i], DYNEMB_ST_FOUND);
	}
	free(k), free(out), free(st);
	dynemb_close(c);
}

/* ---- untrusted: a fake daemon ------------------------------------------------------- */

struct fake {
	char path[108];
	int lfd;
	struct de_msg_error reply; /* the biggest reply; len bytes of it are sent */
	size_t len;
	int nfds;                  /* memfds to attach */
	bool silent;               /* send nothing */
	pthread_t th;
};

static void *fake_main(void *arg)
{
	struct fake *f = arg;
	int s = accept4(f->lfd, NULL, NULL, SOCK_CLOEXEC);
	if (s < 0)
		return NULL;
	struct de_msg_hello h;
	ssize_t r = recv(s, &h, sizeof h, 0);
	if (r == (ssize_t)sizeof h && !f->silent) {
		f->reply.h.seq = h.h.seq;
		int fds[4];
		union {
			struct cmsghdr a;
			char b[CMSG_SPACE(sizeof fds)];
		} cm;
		struct iovec iov = { .iov_base = &f->reply, .iov_len = f->len };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
		for (int i = 0; i < f->nfds; i++)
			fds[i] = memfd_create("fake", MFD_CLOEXEC);
		if (f->nfds) {
			mh.msg_control = cm.b;
			mh.msg_controllen = CMSG_SPACE(f->nfds * sizeof(int));
			struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
			c->cmsg_level = SOL_SOCKET;
			c->cmsg_type = SCM_RIGHTS;
			c->cmsg_len = CMSG_LEN(f->nfds * sizeof(int));
			memcpy(CMSG_DATA(c), fds, f->nfds * sizeof(int));
		}
		sendmsg(s, &mh, MSG_NOSIGNAL);
		for (int i = 0; i < f->nfds; i++)
			close(fds[i]);
	}
	char b[64];
	while (recv(s, b, sizeof b, 0) > 0) /* until the client hangs up */
		;
	close(s);
	return NULL;
}

static void fake_start(struct fake *f)
{
	static unsigned n;
	snprintf(f->path, sizeof f->path, "/tmp/de-fake-%d-%u.sock", (int)getpid(), n++);
	unlink(f->path);
	f->lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", f->path);
	cr_assert_eq(bind(f->lfd, (struct sockaddr *)&sa, sizeof sa), 0);
	cr_assert_eq(listen(f->lfd, 4), 0);
	cr_assert_eq(pthread_create(&f->th, NULL, fake_main, f), 0);
}

static void fake_stop(struct fake *f)
{
	pthread_join(f->th, NULL);
	close(f->lfd);
	unlink(f->path);
}

static int count_fds(void)
{
	int n = 0;
	for (int fd = 0; fd < 1024; fd++)
		n += fcntl(fd, F_GETFD) >= 0;
	return n;
}

static struct de_msg_hello_ok good_hello_ok(void)
{
	return (struct de_msg_hello_ok){
		.h = { .magic = DE_MSG_MAGIC, .type = DE_MSG_HELLO_OK, .version = DE_PROTO_VERSION,
		       .len = sizeof(struct de_msg_hello_ok) },
		.client_id = 1, .sq_entries = 8, .cq_entries = 16, .max_batch = 100,
		.data_bytes = 1 << 20,
	};
}

/* Connect to a fake daemon that sends f's reply; returns dynemb_connect's result. */
static int fake_connect(struct fake *f, int timeout_ms)
{
	int before = count_fds();
	fake_start(f);
	dynemb_client *c = NULL;
	struct dynemb_connect_opts o = { .timeout_ms = timeout_ms };
	int err = dynemb_connect(f->path, &o, &c);
	cr_assert_null(c);
	fake_stop(f);
	cr_assert_eq(count_fds(), before, "fds leaked: %d before, %d after", before, count_fds());
	return err;
}

Test(untrusted, malformed_hello_replies_are_refused, .timeout = TIMEOUT)
{
	struct fake f = { .nfds = 1, .len = sizeof(struct de_msg_hello_ok) };
	struct de_msg_hello_ok ok = good_hello_ok();

	/* a memfd that is no channel: -EBADMSG from de_channel_attach */
	memcpy(&f.reply, &ok, sizeof ok);
	cr_assert_eq(fake_connect(&f, 2000), -EBADMSG);

	/* two fds where one belongs */
	f.nfds = 2;
	cr_assert_eq(fake_connect(&f, 2000), -EPROTO);
	/* none */
	f.nfds = 0;
	cr_assert_eq(fake_connect(&f, 2000), -EPROTO);
	f.nfds = 1;

	struct de_msg_hello_ok bad = ok;
	bad.h.magic ^= 1;
	memcpy(&f.reply, &bad, sizeof bad);
	cr_assert_eq(fake_connect(&f, 2000), -EPROTO);

	bad = ok;
	bad.h.version = DE_PROTO_VERSION + 1;
	memcpy(&f.reply, &bad, sizeof bad);
	cr_assert_eq(fake_connect(&f, 2000), -EPROTO);

	bad = ok;
	bad.h.type = DE_MSG_OPEN_OK;
	memcpy(&f.reply, &bad, sizeof bad);
	cr_assert_eq(fake_connect(&f, 2000), -EPROTO);

	/* a length field that disagrees with the packet, and a short packet */
	bad = ok;
	bad.h.len += 4;
	memcpy(&f.reply, &bad, sizeof bad);
	cr_assert_eq(fake_connect(&f, 2000), -EPROTO);
	memcpy(&f.reply, &ok, sizeof ok);
	f.reply.h.len = sizeof ok - 8;
	f.len = sizeof ok - 8;
	cr_assert_eq(fake_connect(&f, 2000), -EPROTO);
	f.len = sizeof ok;

	/* no reply at all */
	f.silent = true;
	double t0 = now_s();
	cr_assert_eq(fake_connect(&f, 200), -ETIMEDOUT);
	cr_assert_lt(now_s() - t0, 2.0);
}

Test(untrusted, error_reply_gives_its_errno_and_message, .timeout = TIMEOUT)
{
	struct fake f = { .nfds = 1, .len = sizeof(struct de_msg_error) };
	f.reply = (struct de_msg_error){
		.h = { .magic = DE_MSG_MAGIC, .type = DE_MSG_ERROR, .version = DE_PROTO_VERSION,
		       .len = sizeof(struct de_msg_error) },
		.err = -EACCES,
	};
	memset(f.reply.msg, 'x', sizeof f.reply.msg); /* not NUL-terminated */
	memcpy(f.reply.msg, "uid 1234 is not allowed", 23);
	cr_assert_eq(fake_connect(&f, 2000), -EACCES); /* the fd sent with it is closed */
	const char *m = dynemb_strerror(-EACCES);
	cr_assert(strstr(m, "uid 1234 is not allowed"), "message: %s", m);
	cr_assert_lt(strlen(m), 400);
	cr_assert_null(strstr(dynemb_strerror(-EINVAL), "uid 1234"));

	/* an errno that is no errno */
	f.reply.err = 5;
	cr_assert_eq(fake_connect(&f, 2000), -EPROTO);
}

/* ---- learn: server-side optimizers through the client ------------------------------ */

/* a data dir: tables that ask durability async/sync need one (persist.c) */
static char learn_data[64];

static void start_learn(void)
{
	snprintf(learn_data, sizeof learn_data, "/tmp/de-test-data-%d", (int)getpid());
	const char *const extra[] = { "--max-batch", "1000", "--workers", "2",
				      "--data-dir", learn_data, NULL };
	daemon_start(extra);
}

static void stop_learn(void)
{
	daemon_stop();
	char cmd[96];
	snprintf(cmd, sizeof cmd, "rm -rf %s", learn_data);
	if (system(cmd) != 0)
		cr_log_warn("cannot remove %s", learn_data);
}

TestSuite(learn, .init = start_learn, .fini = stop_learn, .timeout = 60);

static int open_learn(dynemb_client *c, const char *name, uint32_t dim, float init,
		      const struct dynemb_optim_spec *o, enum dynemb_key_kind kind)
{
	struct dynemb_table_spec s = { .name = name, .dim = dim, .init = DYNEMB_CONSTANT, .init_a = init,
				   .seed = 42, .keys = kind, .optim = *o };
	int t = -1;
	int err = dynemb_open(c, &s, &t);
	cr_assert_eq(err, 0, "dynemb_open(%s): %s", name, dynemb_strerror(err));
	return t;
}

/* A deterministic generator (xorshift) for key choices and gradients. */
static uint64_t xorshift64(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* Reference optimizers, per key, in double, written from the formulas (torch.optim's
 * Adam; FTRL-Proximal as tf.keras: see src/learn/de_learn.h). */
struct ref_row {
	double p[8], a[8], b[8]; /* value; Adam m, v / FTRL n, z */
	uint64_t t;
};

static void ref_adam(struct ref_row *r, const double *g, uint32_t dim, double lr)
{
	const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
	r->t++;
	double bc1 = 1 - pow(b1, (double)r->t), bc2 = 1 - pow(b2, (double)r->t);
	for (uint32_t j = 0; j < dim; j++) {
		r->a[j] = b1 * r->a[j] + (1 - b1) * g[j];
		r->b[j] = b2 * r->b[j] + (1 - b2) * g[j] * g[j];
		r->p[j] -= lr / bc1 * r->a[j] / (sqrt(r->b[j]) / sqrt(bc2) + eps);
	}
}

static void ref_ftrl(struct ref_row *r, const double *g, uint32_t dim, double lr, double l1,
		     double l2, double init_acc)
{
	const double lp = -0.5;
	if (r->t++ == 0)
		for (uint32_t j = 0; j < dim; j++) {
			r->a[j] = init_acc; /* n */
			r->b[j] = 0;        /* z */
		}
	for (uint32_t j = 0; j < dim; j++) {
		double n = r->a[j], n2 = n + g[j] * g[j];
		r->b[j] += g[j] - (pow(n2, -lp) - pow(n, -lp)) / lr * r->p[j];
		r->a[j] = n2;
		double z = r->b[j];
		r->p[j] = fabs(z) <= l1 ? 0 : ((z > 0 ? l1 : -l1) - z) / (pow(n2, -lp) / lr + 2 * l2);
	}
}

/* 50 steps of batches with duplicate keys from a pool, an lr change at step 25, against
 * the reference; kind ADAM or FTRL. */
static void stream_vs_reference(enum dynemb_optim_kind kind)
{
	dynemb_client *c = connect_ok();
	enum { DIM = 4, POOL = 16, BATCH = 24, STEPS = 50 };
	struct dynemb_optim_spec o;
	dynemb_optim_spec_defaults(kind, &o);
	o.lr = kind == DYNEMB_OPTIM_ADAM ? 0.01 : 0.1;
	if (kind == DYNEMB_OPTIM_FTRL) {
		o.l1 = 0.001;
		o.l2 = 0.01;
	}
	const float init = 0.25f;
	int t = open_learn(c, kind == DYNEMB_OPTIM_ADAM ? "adam" : "ftrl", DIM, init, &o, DYNEMB_INT64_KEYS);
	struct ref_row ref[POOL];
	memset(ref, 0, sizeof ref);
	for (int k = 0; k < POOL; k++)
		for (int j = 0; j < DIM; j++)
			ref[k].p[j] = init;
	uint64_t s = 0x9e3779b97f4a7c15ull + (uint64_t)kind;
	for (int step = 0; step < STEPS; step++) {
		double lr = step < STEPS / 2 ? o.lr : o.lr * 0.3;
		uint64_t keys[BATCH];
		float g[BATCH * DIM];
		double sum[POOL][DIM];
		bool in[POOL] = { 0 };
		memset(sum, 0, sizeof sum);
		for (int i = 0; i < BATCH; i++) {
			int k = (int)(xorshift64(&s) % POOL);
			keys[i] = 100 + (uint64_t)k;
			for (int j = 0; j < DIM; j++) {
				g[i * DIM + j] = (float)((double)(xorshift64(&s) % 2001) / 1000.0 - 1.0);
				sum[k][j] += g[i * DIM + j];
			}
			in[k] = true;
		}
		size_t applied = 0, want = 0;
		/* the first half uses the table's lr (lr 0), the second an override */
		int err = dynemb_apply_gradients(c, t, keys, BATCH, g, (uint64_t)step,
					     step < STEPS / 2 ? 0 : lr, &applied);
		cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
		for (int k = 0; k < POOL; k++) {
			if (!in[k])
				continue;
			want++;
			if (kind == DYNEMB_OPTIM_ADAM)
				ref_adam(&ref[k], sum[k], DIM, lr);
			else
				ref_ftrl(&ref[k], sum[k], DIM, lr, o.l1, o.l2, o.initial_accumulator_value);
		}
		cr_assert_eq(applied, want, "distinct keys stepped");
	}
	uint64_t keys[POOL];
	for (int k = 0; k < POOL; k++)
		keys[k] = 100 + (uint64_t)k;
	float out[POOL * DIM];
	cr_assert_eq(dynemb_lookup(c, t, keys, POOL, out, NULL, DYNEMB_READONLY, 0), 0);
	for (int k = 0; k < POOL; k++)
		for (int j = 0; j < DIM; j++)
			cr_assert(fabs(out[k * DIM + j] - ref[k].p[j]) <= 1e-5,
				  "key %d col %d: %.9g vs reference %.9g", k, j, out[k * DIM + j],
				  ref[k].p[j]);
	dynemb_close(c);
}

Test(learn, adam_stream_matches_reference) { stream_vs_reference(DYNEMB_OPTIM_ADAM); }
Test(learn, ftrl_stream_matches_reference) { stream_vs_reference(DYNEMB_OPTIM_FTRL); }

/* 5000 gradients over 50 keys (max batch 1000: the call is split): each key is still
 * stepped once with the sum. SGD lr 1 from zeros with integer gradients is exact. */
Test(learn, split_batch_steps_each_key_once)
{
	dynemb_client *c = connect_ok();
	enum { DIM = 3, N = 5000, K = 50 };
	struct dynemb_optim_spec o;
	dynemb_optim_spec_defaults(DYNEMB_OPTIM_SGD, &o);
	o.lr = 1;
	int t = open_learn(c, "split", DIM, 0, &o, DYNEMB_INT64_KEYS);
	int ts = open_learn(c, "splits", DIM, 0, &o, DYNEMB_STRING_KEYS);
	uint64_t *k = malloc(N * sizeof *k);
	float *g = malloc(N * DIM * sizeof *g);
	const char **sk = malloc(N * sizeof *sk);
	static char names[K][16];
	double want[K][DIM];
	memset(want, 0, sizeof want);
	for (int i = 0; i < K; i++)
		snprintf(names[i], sizeof names[i], "w%d", i);
	for (int i = 0; i < N; i++) {
		int key = (i * 7) % K;
		k[i] = 1 + (uint64_t)key;
		sk[i] = names[key];
		for (int j = 0; j < DIM; j++) {
			g[i * DIM + j] = (float)((i + j) % 5) - 2.0f;
			want[key][j] -= g[i * DIM + j];
		}
	}
	size_t applied = 0;
	int err = dynemb_apply_gradients(c, t, k, N, g, 1, 0, &applied);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	cr_assert_eq(applied, (size_t)K);
	err = dynemb_apply_gradients_str(c, ts, sk, NULL, N, g, 1, 0, &applied);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	cr_assert_eq(applied, (size_t)K);
	float out[K * DIM], outs[K * DIM];
	cr_assert_eq(dynemb_lookup(c, t, k, K, out, NULL, DYNEMB_READONLY, 0), 0);
	cr_assert_eq(dynemb_lookup_str(c, ts, sk, NULL, K, outs, NULL, DYNEMB_READONLY, 0), 0);
	for (int i = 0; i < K; i++)
		for (int j = 0; j < DIM; j++) {
			int key = (i * 7) % K;
			cr_assert_eq(out[i * DIM + j], (float)want[key][j], "key %d", key);
			cr_assert_eq(outs[i * DIM + j], (float)want[key][j], "string key %d", key);
		}
	free(k), free(g), free(sk);
	dynemb_close(c);
}

struct pusher {
	const char *sock;
	int rounds, id, err;
};

static void *push_main(void *arg)
{
	struct pusher *p = arg;
	dynemb_client *c = NULL;
	p->err = dynemb_connect(p->sock, NULL, &c);
	if (p->err)
		return NULL;
	struct dynemb_table_spec s = { .name = "shared_sgd", .dim = 4, .seed = 42,
				   .optim = { .kind = DYNEMB_OPTIM_SGD, .lr = 1 } };
	int t;
	p->err = dynemb_open(c, &s, &t);
	uint64_t keys[64];
	float g[64 * 4];
	for (int i = 0; i < 64; i++)
		keys[i] = 1 + (uint64_t)i;
	for (int r = 0; !p->err && r < p->rounds; r++) {
		for (int i = 0; i < 64 * 4; i++)
			g[i] = (float)(((r + i) % 3) + p->id); /* integers: exact sums */
		p->err = dynemb_apply_gradients(c, t, keys, 64, g, (uint64_t)r, 0, NULL);
	}
	dynemb_close(c);
	return NULL;
}

/* Two trainers (threads with a client each; two workers) push to the same 64 rows at
 * once: the rows end with the exact sum of every step. */
Test(learn, concurrent_trainers_lose_no_step)
{
	enum { ROUNDS = 400 };
	struct pusher p[2] = { { d_sock, ROUNDS, 1, 0 }, { d_sock, ROUNDS, 2, 0 } };
	pthread_t th[2];
	for (int i = 0; i < 2; i++)
		cr_assert_eq(pthread_create(&th[i], NULL, push_main, &p[i]), 0);
	for (int i = 0; i < 2; i++) {
		pthread_join(th[i], NULL);
		cr_assert_eq(p[i].err, 0, "trainer %d: %s", i, dynemb_strerror(p[i].err));
	}
	dynemb_client *c = connect_ok();
	struct dynemb_table_spec s = { .name = "shared_sgd", .dim = 4, .seed = 42,
				   .optim = { .kind = DYNEMB_OPTIM_SGD, .lr = 1 } };
	int t;
	cr_assert_eq(dynemb_open(c, &s, &t), 0);
	uint64_t keys[64];
	float out[64 * 4];
	for (int i = 0; i < 64; i++)
		keys[i] = 1 + (uint64_t)i;
	cr_assert_eq(dynemb_lookup(c, t, keys, 64, out, NULL, DYNEMB_READONLY, 0), 0);
	for (int i = 0; i < 64 * 4; i++) {
		double want = 0;
		for (int id = 1; id <= 2; id++)
			for (int r = 0; r < ROUNDS; r++)
				want -= ((r + i) % 3) + id;
		cr_assert_eq(out[i], (float)want, "element %d: %g vs %g", i, out[i], want);
	}
	dynemb_close(c);
}

Test(learn, errors_and_async)
{
	dynemb_client *c = connect_ok();
	struct dynemb_optim_spec o;
	dynemb_optim_spec_defaults(DYNEMB_OPTIM_SGD, &o);
	o.lr = 0.5;
	int t = open_learn(c, "e", 2, 1.0f, &o, DYNEMB_INT64_KEYS);
	int tn = open_ok(c, "plain", 2, DYNEMB_ZEROS, 0, DYNEMB_INT64_KEYS);
	uint64_t k[2] = { 3, 4 };
	float g[4] = { 1, 2, 3, NAN };
	size_t applied = 9;
	cr_assert_eq(dynemb_apply_gradients(c, t, k, 2, g, 1, 0, &applied), -EINVAL, "non-finite");
	cr_assert_eq(applied, 0u);
	g[3] = 4;
	cr_assert_eq(dynemb_apply_gradients(c, t, k, 2, g, 1, NAN, NULL), -EINVAL, "lr NaN");
	cr_assert_eq(dynemb_apply_gradients(c, t, k, 2, g, 1, INFINITY, NULL), -EINVAL, "lr inf");
	cr_assert_eq(dynemb_apply_gradients(c, t, k, 2, NULL, 1, 0, NULL), -EINVAL);
	cr_assert_eq(dynemb_apply_gradients(c, tn, k, 2, g, 1, 0, NULL), -EOPNOTSUPP);
	cr_assert_not_null(strstr(dynemb_strerror(-EOPNOTSUPP), "optimizer"));
	const char *sk[1] = { "x" };
	cr_assert_eq(dynemb_apply_gradients_str(c, t, sk, NULL, 1, g, 1, 0, NULL), -EINVAL, "key type");
	float out[4];
	uint8_t st[2];
	cr_assert_eq(dynemb_lookup(c, t, k, 2, out, st, DYNEMB_READONLY, 0), 0);
	cr_assert_eq(st[0], DYNEMB_ST_MISSING, "nothing applied");
	cr_assert_eq(st[1], DYNEMB_ST_MISSING);

	/* async: lr override 0.25 */
	uint64_t req;
	cr_assert_eq(dynemb_submit_apply_gradients(c, t, k, 2, g, 1, 0.25, &req), 0);
	cr_assert_eq(dynemb_complete(c, req, -1), 0);
	uint64_t cnt = 0, aux = 0;
	cr_assert_eq(dynemb_request_counts(c, req, &cnt, &aux), 0);
	cr_assert_eq(cnt, 2u);
	cr_assert_eq(aux, 2u, "created");
	cr_assert_null(dynemb_request_vals(c, req), "no values for gradients");
	cr_assert_eq(dynemb_lookup(c, t, k, 2, out, NULL, DYNEMB_READONLY, 0), 0);
	for (int i = 0; i < 4; i++)
		cr_assert_eq(out[i], 1.0f - 0.25f * g[i]);
	uint64_t *big = calloc(1001, 8);
	float *bg = calloc(1001 * 2, 4);
	cr_assert_eq(dynemb_submit_apply_gradients(c, t, big, 1001, bg, 1, 0, &req), -E2BIG);
	g[0] = INFINITY;
	cr_assert_eq(dynemb_submit_apply_gradients(c, t, k, 2, g, 1, 0, &req), -EINVAL);
	free(big), free(bg);

	/* spec errors: out-of-range enums here, bad values by the daemon, with its reason */
	struct dynemb_table_spec s = { .name = "bad", .dim = 2, .optim = o };
	s.optim.kind = (enum dynemb_optim_kind)42;
	int tb;
	cr_assert_eq(dynemb_open(c, &s, &tb), -EINVAL);
	s.optim = o;
	s.admission.mode = DYNEMB_ADMISSION_PROBABILITY;
	s.admission.probability = 2;
	cr_assert_eq(dynemb_open(c, &s, &tb), -EINVAL);
	cr_assert_not_null(strstr(dynemb_strerror(-EINVAL), "(0, 1]"), "%s", dynemb_strerror(-EINVAL));
	s.admission = (struct dynemb_admission_spec){ 0 };
	s.eviction = (struct dynemb_eviction_spec){ .policy = DYNEMB_EVICTION_LFU, .budget_bytes = 1 << 20,
						 .lfu_decay = 1000, .disk_tier = true };
	s.durability = (struct dynemb_durability_spec){ .mode = DYNEMB_DURABLE_SYNC };
	cr_assert_eq(dynemb_open(c, &s, &tb), 0, "%s", dynemb_strerror(-EINVAL));
	s.durability.mode = DYNEMB_DURABLE_ASYNC;
	cr_assert_eq(dynemb_open(c, &s, &tb), -EEXIST);
	cr_assert_not_null(strstr(dynemb_strerror(-EEXIST), "durability.mode"), "%s", dynemb_strerror(-EEXIST));
	dynemb_close(c);
}
