/*
 * test_errors.c — the texts dynemb_strerror gives for mistakes a user can act on, word
 * for word, through libdynemb against the real daemon ($DYNEMBD, as test_client.c).
 *
 * Each case makes one mistake and checks the whole text: the problem is named (which
 * argument, which row, which limit, which optimizer), enums by name, floats as the user
 * wrote them; and where the call must apply nothing, that nothing was applied (read
 * back by a read-only lookup).
 *
 * Suites:
 *   args    client-side checks: non-finite gradients, learning rates and update values,
 *           string keys over the limit, table names, handles, key types; a snapshot of
 *           a table the daemon does not have (not "is dynembd running?").
 *   reopen  the daemon's -EEXIST for a reopen with another config: another optimizer
 *           (not "nslots"), enum names, floats as written, the table's seed not echoed.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dynemb.h"
#include "daemon_util.h"

#define TIMEOUT 20 /* Criterion's guard against a hang, seconds */
#define DIM 4

static pid_t d_pid = -1;
static char d_sock[108];

static void daemon_start(void)
{
	const char *bin = daemon_bin();
	snprintf(d_sock, sizeof d_sock, "/tmp/de-err-%d.sock", (int)getpid());
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

static dynemb_client *connect_ok(void)
{
	dynemb_client *c = NULL;
	struct dynemb_connect_opts o = { .name = "test_errors", .timeout_ms = 5000 };
	int err = dynemb_connect(d_sock, &o, &c);
	cr_assert_eq(err, 0, "dynemb_connect: %s", dynemb_strerror(err));
	return c;
}

static int open_spec(dynemb_client *c, const struct dynemb_table_spec *s)
{
	int t = -1;
	int err = dynemb_open(c, s, &t);
	cr_assert_eq(err, 0, "dynemb_open(%s): %s", s->name, dynemb_strerror(err));
	return t;
}

static int open_sgd(dynemb_client *c, const char *name, enum dynemb_key_kind keys)
{
	struct dynemb_table_spec s = { .name = name, .dim = DIM, .init = DYNEMB_ZEROS,
				       .keys = keys, .optim = { .kind = DYNEMB_OPTIM_SGD,
								.lr = 0.5 } };
	return open_spec(c, &s);
}

/* err is want and dynemb_strerror(err) is exactly text */
#define expect_text(err, want, text) do { \
	int e_ = (err); \
	cr_expect_eq(e_, (want), "got %d (%s), want %d", e_, dynemb_strerror(e_), (want)); \
	cr_expect_str_eq(dynemb_strerror(e_), (text)); \
} while (0)

/* int64 keys k[0..n) are missing from table t (a rejected call applied nothing) */
static void expect_missing(dynemb_client *c, int t, const uint64_t *k, size_t n)
{
	float out[8 * DIM];
	uint8_t st[8];
	int err = dynemb_lookup(c, t, k, n, out, st, DYNEMB_READONLY, 0);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	for (size_t i = 0; i < n; i++)
		cr_expect_eq(st[i], DYNEMB_ST_MISSING, "key %llu was written by a rejected call",
			     (unsigned long long)k[i]);
}

TestSuite(args, .init = daemon_start, .fini = daemon_stop, .timeout = TIMEOUT);

Test(args, nonfinite_gradient_names_its_row_and_column)
{
	dynemb_client *c = connect_ok();
	int t = open_sgd(c, "g", DYNEMB_INT64_KEYS);
	uint64_t k[3] = { 1, 2, 3 };
	float g[3 * DIM] = { 0 };
	g[2 * DIM + 1] = NAN;
	expect_text(dynemb_apply_gradients(c, t, k, 3, g, 1, 0, NULL), -EINVAL,
		    "invalid argument: non-finite gradient in row 2 (column 1: nan): nothing "
		    "was applied");
	g[2 * DIM + 1] = 0;
	g[DIM + 3] = -INFINITY;
	expect_text(dynemb_apply_gradients(c, t, k, 3, g, 1, 0, NULL), -EINVAL,
		    "invalid argument: non-finite gradient in row 1 (column 3: -inf): nothing "
		    "was applied");
	/* the async call checks the same way */
	uint64_t req;
	expect_text(dynemb_submit_apply_gradients(c, t, k, 3, g, 1, 0, &req), -EINVAL,
		    "invalid argument: non-finite gradient in row 1 (column 3: -inf): nothing "
		    "was applied");
	expect_missing(c, t, k, 3);
	/* string keys: the same row numbers (the caller's, before deduplication) */
	int ts = open_sgd(c, "gs", DYNEMB_STRING_KEYS);
	const char *sk[3] = { "a", "b", "a" };
	expect_text(dynemb_apply_gradients_str(c, ts, sk, NULL, 3, g, 1, 0, NULL), -EINVAL,
		    "invalid argument: non-finite gradient in row 1 (column 3: -inf): nothing "
		    "was applied");
	dynemb_close(c);
}

Test(args, nonfinite_learning_rate)
{
	dynemb_client *c = connect_ok();
	int t = open_sgd(c, "lr", DYNEMB_INT64_KEYS);
	uint64_t k = 5;
	float g[DIM] = { 1, 1, 1, 1 };
	expect_text(dynemb_apply_gradients(c, t, &k, 1, g, 1, INFINITY, NULL), -EINVAL,
		    "invalid argument: non-finite learning rate inf: give a finite lr > 0, or 0 "
		    "for the table's");
	expect_text(dynemb_apply_gradients(c, t, &k, 1, g, 1, NAN, NULL), -EINVAL,
		    "invalid argument: non-finite learning rate nan: give a finite lr > 0, or 0 "
		    "for the table's");
	expect_missing(c, t, &k, 1);
	dynemb_close(c);
}

Test(args, update_with_nonfinite_values_is_refused)
{
	dynemb_client *c = connect_ok();
	int t = open_sgd(c, "u", DYNEMB_INT64_KEYS);
	uint64_t k[2] = { 7, 8 };
	float v[2 * DIM] = { 1, 2, 3, 4, 5, 6, 7, 8 };
	v[DIM + 2] = NAN;
	expect_text(dynemb_update(c, t, k, 2, v, 1, NULL), -EINVAL,
		    "invalid argument: non-finite value in row 1 (column 2: nan): nothing was "
		    "applied");
	v[DIM + 2] = INFINITY;
	expect_text(dynemb_update(c, t, k, 2, v, 1, NULL), -EINVAL,
		    "invalid argument: non-finite value in row 1 (column 2: inf): nothing was "
		    "applied");
	expect_missing(c, t, k, 2);
	/* finite values still go in */
	v[DIM + 2] = 7;
	int err = dynemb_update(c, t, k, 2, v, 1, NULL);
	cr_assert_eq(err, 0, "%s", dynemb_strerror(err));
	dynemb_close(c);
}

Test(args, string_key_over_the_limit_says_the_limit)
{
	dynemb_client *c = connect_ok();
	int t = open_sgd(c, "long", DYNEMB_STRING_KEYS);
	size_t big = DYNEMB_MAX_KEY_BYTES + 1;
	char *s = malloc(big);
	cr_assert_not_null(s);
	memset(s, 'k', big);
	const char *keys[2] = { "short", s };
	size_t lens[2] = { 5, big };
	float out[2 * DIM];
	expect_text(dynemb_lookup_str(c, t, keys, lens, 2, out, NULL, 0, 1), -EINVAL,
		    "invalid argument: string key 1 is 65536 bytes: a string key is at most "
		    "65535 bytes");
	expect_text(dynemb_lookup_str(c, t, keys, lens, 2, out, NULL, DYNEMB_READONLY, 1),
		    -EINVAL, "invalid argument: string key 1 is 65536 bytes: a string key is at "
		    "most 65535 bytes");
	uint64_t fp;
	expect_text(dynemb_string_key(c, t, s, big, &fp), -EINVAL,
		    "invalid argument: the string key is 65536 bytes: a string key is at most "
		    "65535 bytes");
	/* at the limit it works */
	lens[1] = DYNEMB_MAX_KEY_BYTES;
	int err = dynemb_lookup_str(c, t, keys, lens, 2, out, NULL, 0, 1);
	cr_expect_eq(err, 0, "%s", dynemb_strerror(err));
	free(s);
	dynemb_close(c);
}

Test(args, bad_table_name_says_the_rule)
{
	dynemb_client *c = connect_ok();
	struct dynemb_table_spec s = { .name = "", .dim = DIM };
	int t;
	expect_text(dynemb_open(c, &s, &t), -EINVAL,
		    "invalid argument: table name empty: a table name is 1 to 63 bytes, without "
		    "control characters");
	char longname[80];
	memset(longname, 'n', 64);
	longname[64] = 0;
	s.name = longname;
	expect_text(dynemb_open(c, &s, &t), -EINVAL,
		    "invalid argument: table name too long: a table name is 1 to 63 bytes, "
		    "without control characters");
	s.name = "bad\nname";
	expect_text(dynemb_open(c, &s, &t), -EINVAL,
		    "invalid argument: table name has a control character at byte 3: a table "
		    "name is 1 to 63 bytes, without control characters");
	s.name = "ok";
	s.dim = 0;
	expect_text(dynemb_open(c, &s, &t), -EINVAL,
		    "invalid argument: dynemb_table_spec.dim is 0: it must be 1..4096");
	dynemb_close(c);
}

Test(args, handles_and_key_types)
{
	dynemb_client *c = connect_ok();
	uint64_t k = 1;
	float out[DIM];
	expect_text(dynemb_lookup(c, 0, &k, 1, out, NULL, 0, 1), -EINVAL,
		    "invalid argument: table handle 0: no table is open on this client "
		    "(dynemb_open gives handles)");
	int t = open_sgd(c, "h", DYNEMB_INT64_KEYS);
	expect_text(dynemb_lookup(c, t + 3, &k, 1, out, NULL, 0, 1), -EINVAL,
		    "invalid argument: table handle 3 is not open on this client (its handles "
		    "are 0..0)");
	const char *sk = "x";
	expect_text(dynemb_lookup_str(c, t, &sk, NULL, 1, out, NULL, 0, 1), -EINVAL,
		    "invalid argument: table handle 0 has int64 keys: use the int64 calls "
		    "(dynemb_* without _str)");
	expect_text(dynemb_lookup(c, t, &k, 1, out, NULL, 0x40, 1), -EINVAL,
		    "invalid argument: flags 0x40: only DYNEMB_READONLY is known");
	/* the next call's own error does not carry the last one's text */
	expect_text(dynemb_lookup(c, t, &k, 1, NULL, NULL, 0, 1), -EINVAL,
		    "invalid argument: out is NULL");
	int err = dynemb_lookup(c, t, &k, 1, out, NULL, 0, 1);
	cr_expect_eq(err, 0, "%s", dynemb_strerror(err));
	dynemb_close(c);
}

Test(args, snapshot_of_no_such_table_says_so)
{
	dynemb_client *c = connect_ok();
	struct dynemb_snapshot_result res;
	expect_text(dynemb_snapshot(c, "NOSUCH", false, NULL, NULL, &res), -ENOENT,
		    "not found: no table 'NOSUCH' in this daemon");
	expect_text(dynemb_export(c, "NOSUCH", "rel/path", NULL, NULL, NULL, NULL), -EINVAL,
		    "invalid argument: path not absolute: a path is absolute, 1 to 1023 bytes");
	dynemb_close(c);
}

TestSuite(reopen, .init = daemon_start, .fini = daemon_stop, .timeout = TIMEOUT);

#define EEXIST_TEXT "a table of that name exists with a different config: "

Test(reopen, another_optimizer_names_both)
{
	dynemb_client *c = connect_ok();
	struct dynemb_table_spec s = { .name = "opt", .dim = DIM, .init = DYNEMB_ZEROS,
				       .optim = { .kind = DYNEMB_OPTIM_ADAGRAD, .lr = 0.1 } };
	open_spec(c, &s);
	int t;
	struct dynemb_table_spec o = s;
	o.optim = (struct dynemb_optim_spec){ .kind = DYNEMB_OPTIM_SGD, .lr = 0.1 };
	expect_text(dynemb_open(c, &o, &t), -EEXIST,
		    EEXIST_TEXT "table 'opt' exists with another config: asked optimizer.kind "
		    "sgd, not adagrad");
	o.optim = (struct dynemb_optim_spec){ 0 };
	expect_text(dynemb_open(c, &o, &t), -EEXIST,
		    EEXIST_TEXT "table 'opt' exists with another config: asked optimizer.kind "
		    "none, not adagrad");
	/* the same optimizer with another lr: the lr as written */
	o.optim = (struct dynemb_optim_spec){ .kind = DYNEMB_OPTIM_ADAGRAD, .lr = 0.01 };
	expect_text(dynemb_open(c, &o, &t), -EEXIST,
		    EEXIST_TEXT "table 'opt' exists with another config: asked optimizer.lr "
		    "0.01, not 0.1");
	dynemb_close(c);
}

Test(reopen, enums_by_name_floats_as_written_seed_not_echoed)
{
	dynemb_client *c = connect_ok();
	struct dynemb_table_spec s = { .name = "cfg", .dim = DIM, .init = DYNEMB_UNIFORM,
				       .init_a = -0.3f, .init_b = 0.3f, .seed = 1234567 };
	open_spec(c, &s);
	int t;
	struct dynemb_table_spec o = s;
	o.keys = DYNEMB_STRING_KEYS;
	expect_text(dynemb_open(c, &o, &t), -EEXIST,
		    EEXIST_TEXT "table 'cfg' exists with another config: asked key_type string, "
		    "not int64");
	o = s;
	o.init = DYNEMB_TRUNC_NORMAL;
	expect_text(dynemb_open(c, &o, &t), -EEXIST,
		    EEXIST_TEXT "table 'cfg' exists with another config: asked init "
		    "trunc_normal, not uniform");
	o = s;
	o.init_b = nextafterf(0.3f, 1.0f);
	expect_text(dynemb_open(c, &o, &t), -EEXIST,
		    EEXIST_TEXT "table 'cfg' exists with another config: asked init_b "
		    "0.30000004, not 0.3");
	o = s;
	o.seed = 7;
	expect_text(dynemb_open(c, &o, &t), -EEXIST,
		    EEXIST_TEXT "table 'cfg' exists with another config: asked seed 7, not the "
		    "table's seed");
	o = s;
	o.eviction = (struct dynemb_eviction_spec){ .policy = DYNEMB_EVICTION_LRU,
						    .budget_bytes = 1 << 30 };
	expect_text(dynemb_open(c, &o, &t), -EEXIST,
		    EEXIST_TEXT "table 'cfg' exists with another config: asked eviction.policy "
		    "lru, not none");
	dynemb_close(c);
}
