/*
 * test_strcollide.c — string keys whose fingerprints collide never share a row.
 *
 * 64-bit collisions cannot be found for a test, so this one runs on a fault-injection
 * build with DE_FAULT_KEY_BITS=8 (de_key_from_string keeps 8 bits, in this process and
 * in the daemon it starts): among 300 strings some share a fingerprint, found here by
 * dynemb_string_key. Without that build no pair collides and every test says SKIP.
 *
 * For a pair (a, b) of one fingerprint where a owns the row: every call with b (create
 * lookups, read-only lookups from the mapping, updates, gradients, erases) fails with
 * -EEXIST and a text naming b, and a's row keeps a's values (the reference: what a was
 * given). Two fresh colliding strings in one request are refused as a whole. On a table
 * with admission the admitted string owns the fingerprint. An erase of b in flight while
 * a is first created (another worker; the daemon holds the erase between its check and
 * its erase) leaves a's new row alone.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <pthread.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dynemb.h"
#include "daemon_util.h"

#define TIMEOUT 30
#define DIM 4
#define NSTR 300

static pid_t d_pid = -1;
static char d_sock[108];

static void daemon_start(void)
{
	setenv("DE_FAULT_KEY_BITS", "8", 1); /* before the first fingerprint, here and there */
	const char *bin = daemon_bin();
	snprintf(d_sock, sizeof d_sock, "/tmp/de-coll-%d.sock", (int)getpid());
	unlink(d_sock);
	const char *argv[32];
	daemon_argv(argv, 32, bin, d_sock, "warn", NULL, NULL);
	d_pid = daemon_spawn(argv, SIGTERM, NULL);
	daemon_wait_listen(d_pid, d_sock, 5, NULL);
}

static void daemon_stop(void)
{
	if (d_pid > 0) {
		daemon_terminate(d_pid, 3);
		d_pid = -1;
	}
	unlink(d_sock);
}

TestSuite(collide, .init = daemon_start, .fini = daemon_stop, .timeout = TIMEOUT);

/* Two workers, and each string ERASE held 400 ms between its check and its erase. */
static void daemon_start_slow_erase(void)
{
	setenv("DE_FAULT_KEY_BITS", "8", 1);
	setenv("DYNEMBD_TEST_ERASE_DELAY_MS", "400", 1);
	snprintf(d_sock, sizeof d_sock, "/tmp/de-coll-%d.sock", (int)getpid());
	unlink(d_sock);
	const char *argv[32];
	daemon_argv(argv, 32, daemon_bin(), d_sock, "warn", NULL,
		    (const char *const[]){ "--workers", "2", NULL });
	d_pid = daemon_spawn(argv, SIGTERM, NULL);
	daemon_wait_listen(d_pid, d_sock, 5, NULL);
}

static dynemb_client *connect_ok(void)
{
	dynemb_client *c = NULL;
	struct dynemb_connect_opts o = { .name = "test_strcollide", .timeout_ms = 5000 };
	int err = dynemb_connect(d_sock, &o, &c);
	cr_assert_eq(err, 0, "dynemb_connect: %s", dynemb_strerror(err));
	return c;
}

static int open_words(dynemb_client *c, const char *name)
{
	struct dynemb_table_spec s = { .name = name, .dim = DIM, .init = DYNEMB_ZEROS,
				       .keys = DYNEMB_STRING_KEYS,
				       .optim = { .kind = DYNEMB_OPTIM_SGD, .lr = 1.0 } };
	int t = -1;
	int err = dynemb_open(c, &s, &t);
	cr_assert_eq(err, 0, "dynemb_open: %s", dynemb_strerror(err));
	return t;
}

static char strs[NSTR][16];

/* Up to maxp disjoint pairs of strings with one fingerprint in table t; SKIP if none. */
static int find_pairs(dynemb_client *c, int t, const char *(*pairs)[2], int maxp)
{
	uint64_t fp[NSTR];
	bool used[NSTR] = { false };
	int np = 0;
	for (int i = 0; i < NSTR; i++) {
		snprintf(strs[i], sizeof strs[i], "key-%d", i);
		int err = dynemb_string_key(c, t, strs[i], strlen(strs[i]), &fp[i]);
		cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
		for (int j = 0; j < i && np < maxp && !used[i]; j++)
			if (!used[j] && fp[j] == fp[i]) {
				pairs[np][0] = strs[j];
				pairs[np][1] = strs[i];
				used[i] = used[j] = true;
				np++;
			}
	}
	if (!np)
		cr_skip_test("no colliding fingerprints: not a fault-injection build");
	return np;
}

static void set_row(float *v, float x)
{
	for (int j = 0; j < DIM; j++)
		v[j] = x + (float)j;
}

/* a's row reads want (a daemon lookup without create) */
static void expect_row(dynemb_client *c, int t, const char *a, float want)
{
	float out[DIM];
	uint8_t st;
	int err = dynemb_lookup_str(c, t, &a, NULL, 1, out, &st, DYNEMB_READONLY, 0);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	cr_expect_eq(st, DYNEMB_ST_FOUND, "'%s' lost its row", a);
	for (int j = 0; j < DIM; j++)
		cr_expect_eq(out[j], want + (float)j, "'%s'[%d] = %g, want %g", a, j, (double)out[j],
			     (double)(want + (float)j));
}

static void expect_conflict(int err, const char *b, size_t i)
{
	char want[256];
	snprintf(want, sizeof want, "key conflict: string key %zu (\"%s\") has the fingerprint of "
		 "another key's string in this table: it has no row of its own, and its request "
		 "was refused", i, b);
	cr_expect_eq(err, -EEXIST, "got %d (%s)", err, dynemb_strerror(err));
	cr_expect_str_eq(dynemb_strerror(err), want);
}

Test(collide, a_colliding_string_never_reaches_the_other_keys_row)
{
	dynemb_client *c = connect_ok();
	int t = open_words(c, "w");
	const char *p[1][2];
	find_pairs(c, t, p, 1);
	const char *a = p[0][0], *b = p[0][1];
	float v[DIM];
	set_row(v, 10);
	int err = dynemb_update_str(c, t, &a, NULL, 1, v, 1, NULL);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));

	float out[2 * DIM];
	uint8_t st[2];
	/* a create lookup, a read-only lookup (this client and a fresh one) */
	expect_conflict(dynemb_lookup_str(c, t, &b, NULL, 1, out, st, 0, 2), b, 0);
	expect_conflict(dynemb_lookup_str(c, t, &b, NULL, 1, out, st, DYNEMB_READONLY, 2), b, 0);
	dynemb_client *c2 = connect_ok();
	int t2 = open_words(c2, "w");
	expect_conflict(dynemb_lookup_str(c2, t2, &b, NULL, 1, out, st, DYNEMB_READONLY, 2), b, 0);
	/* in a batch: the text names the caller's index of b */
	const char *ab[2] = { a, b };
	expect_conflict(dynemb_lookup_str(c2, t2, ab, NULL, 2, out, st, DYNEMB_READONLY, 2), b, 1);
	/* writes */
	float w[DIM];
	set_row(w, 99);
	expect_conflict(dynemb_update_str(c, t, &b, NULL, 1, w, 3, NULL), b, 0);
	expect_conflict(dynemb_apply_gradients_str(c, t, &b, NULL, 1, w, 3, 0, NULL), b, 0);
	size_t erased = 7;
	expect_conflict(dynemb_erase_str(c, t, &b, NULL, 1, &erased), b, 0);
	/* a keeps its own row, untouched */
	expect_row(c, t, a, 10);
	expect_row(c2, t2, a, 10);
	/* and a itself is still served, from the mapping once the daemon served it */
	uint64_t l0, r0, l1, r1;
	err = dynemb_lookup_str(c2, t2, &a, NULL, 1, out, st, DYNEMB_READONLY, 4);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	dynemb_zero_copy_counts(c2, &l0, &r0);
	err = dynemb_lookup_str(c2, t2, &a, NULL, 1, out, st, DYNEMB_READONLY, 4);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	dynemb_zero_copy_counts(c2, &l1, &r1);
	cr_expect_eq(l1 - l0, 1, "a verified key is served locally");
	cr_expect_eq(out[0], 10.0f);
	dynemb_close(c2);
	dynemb_close(c);
}

Test(collide, two_new_colliding_strings_in_one_request)
{
	dynemb_client *c = connect_ok();
	int t = open_words(c, "w2");
	const char *p[2][2];
	int np = find_pairs(c, t, p, 2);
	const char *ab[2] = { p[0][0], p[0][1] };
	float v[2 * DIM];
	set_row(v, 1);
	set_row(v + DIM, 2);
	/* update: the daemon refuses the request as a whole (the later of the two named) */
	expect_conflict(dynemb_update_str(c, t, ab, NULL, 2, v, 1, NULL), ab[1], 1);
	float out[2 * DIM];
	uint8_t st[2];
	int err = dynemb_lookup_str(c, t, ab, NULL, 2, out, st, DYNEMB_READONLY, 1);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	cr_expect_eq(st[0], DYNEMB_ST_MISSING, "a refused request created '%s'", ab[0]);
	cr_expect_eq(st[1], DYNEMB_ST_MISSING, "a refused request created '%s'", ab[1]);
	/* create lookups: the same */
	expect_conflict(dynemb_lookup_str(c, t, ab, NULL, 2, out, st, 0, 1), ab[1], 1);
	/* gradients are summed per fingerprint on this side: refused before they are sent */
	if (np > 1) {
		const char *cd[2] = { p[1][0], p[1][1] };
		err = dynemb_apply_gradients_str(c, t, cd, NULL, 2, v, 1, 0, NULL);
		cr_expect_eq(err, -EEXIST, "got %d (%s)", err, dynemb_strerror(err));
		cr_expect_str_eq(dynemb_strerror(err), "key conflict: string keys 0 and 1 have one "
				 "fingerprint: they cannot share a row, and nothing was applied");
		err = dynemb_lookup_str(c, t, cd, NULL, 2, out, st, DYNEMB_READONLY, 1);
		cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
		cr_expect_eq(st[0], DYNEMB_ST_MISSING);
		cr_expect_eq(st[1], DYNEMB_ST_MISSING);
	}
	/* the same string twice is one key, as always */
	const char *aa[2] = { ab[0], ab[0] };
	err = dynemb_update_str(c, t, aa, NULL, 2, v, 1, NULL);
	cr_expect_eq(err, 0, "%s", dynemb_strerror(err));
	expect_row(c, t, ab[0], 2); /* the later value wins */
	dynemb_close(c);
}

/* With admission the sightings of a fingerprint count together; whichever string is
 * admitted owns the fingerprint, and the other never reads or writes its row. */
Test(collide, admission_table)
{
	dynemb_client *c = connect_ok();
	struct dynemb_table_spec s = { .name = "adm", .dim = DIM, .init = DYNEMB_ZEROS,
				       .keys = DYNEMB_STRING_KEYS,
				       .optim = { .kind = DYNEMB_OPTIM_SGD, .lr = 1.0 },
				       .admission = { .mode = DYNEMB_ADMISSION_COUNT,
						      .min_count = 2 } };
	int t = -1;
	int err = dynemb_open(c, &s, &t);
	cr_assert_eq(err, 0, "dynemb_open: %s", dynemb_strerror(err));
	const char *p[1][2];
	find_pairs(c, t, p, 1);
	const char *a = p[0][0], *b = p[0][1];
	float out[DIM];
	uint8_t st;
	/* a's sighting: not admitted yet; b's: admitted (the fingerprint's second), b owns */
	err = dynemb_lookup_str(c, t, &a, NULL, 1, out, &st, 0, 1);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	cr_expect_eq(st, DYNEMB_ST_MISSING);
	err = dynemb_lookup_str(c, t, &b, NULL, 1, out, &st, 0, 1);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	cr_expect_eq(st, DYNEMB_ST_CREATED);
	float v[DIM];
	set_row(v, 5);
	err = dynemb_update_str(c, t, &b, NULL, 1, v, 2, NULL);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	expect_conflict(dynemb_lookup_str(c, t, &a, NULL, 1, out, &st, 0, 3), a, 0);
	expect_conflict(dynemb_update_str(c, t, &a, NULL, 1, v, 3, NULL), a, 0);
	expect_conflict(dynemb_apply_gradients_str(c, t, &a, NULL, 1, v, 3, 0, NULL), a, 0);
	expect_row(c, t, b, 5);
	dynemb_close(c);
}

struct eraser {
	const char *b;
	int ready;      /* 1: connected and opened; the erase goes next */
	int err;        /* the erase's result (or a setup error) */
	size_t erased;
};

static void *erase_b(void *arg)
{
	struct eraser *e = arg;
	dynemb_client *c = NULL;
	struct dynemb_connect_opts o = { .name = "eraser", .timeout_ms = 5000 };
	struct dynemb_table_spec s = { .name = "race", .dim = DIM, .init = DYNEMB_ZEROS,
				       .keys = DYNEMB_STRING_KEYS,
				       .optim = { .kind = DYNEMB_OPTIM_SGD, .lr = 1.0 } };
	int t = -1;
	e->err = dynemb_connect(d_sock, &o, &c);
	if (!e->err)
		e->err = dynemb_open(c, &s, &t);
	__atomic_store_n(&e->ready, 1, __ATOMIC_RELEASE);
	if (!e->err)
		e->err = dynemb_erase_str(c, t, &e->b, NULL, 1, &e->erased);
	if (c)
		dynemb_close(c);
	return NULL;
}

Test(collide, an_erase_in_flight_never_erases_a_colliding_new_row,
     .init = daemon_start_slow_erase)
{
	dynemb_client *c = connect_ok(); /* worker 0; the eraser gets worker 1 */
	int t = open_words(c, "race");
	const char *p[1][2];
	find_pairs(c, t, p, 1);
	const char *a = p[0][0];
	struct eraser e = { .b = p[0][1] };
	pthread_t th;
	cr_assert_eq(pthread_create(&th, NULL, erase_b, &e), 0);
	while (!__atomic_load_n(&e.ready, __ATOMIC_ACQUIRE))
		nanosleep(&(struct timespec){ 0, 1000000 }, NULL);
	nanosleep(&(struct timespec){ 0, 150000000 }, NULL); /* the erase is held now */
	float v[DIM];
	set_row(v, 20);
	int err = dynemb_update_str(c, t, &a, NULL, 1, v, 1, NULL); /* a's first create */
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	pthread_join(th, NULL);
	cr_expect_eq(e.err, 0, "the erase of b: %d (%s)", e.err, dynemb_strerror(e.err));
	cr_expect_eq(e.erased, 0, "b had no row, yet the erase erased %zu", e.erased);
	expect_row(c, t, a, 20);
	dynemb_close(c);
}
