/*
 * test_index_refusals.c — a hash flood through the daemon: keys whose seeded hashes
 * collide (the table's seed is the client's to choose) fill one bucket pair; the index
 * refuses the rest with -ENOSPC, and the user sees why: dynemb_strerror names the
 * index's refusal, and STATS counts it (index_refusals). Other keys still insert.
 * The daemon runs as a child process (tests/daemon_util.h).
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "daemon_util.h"
#include "hostile_keys.h"
#include "dynemb.h"

#define SEED 0x5eed5eed12345678ull

Test(index_refusals, flood_is_refused_named_and_counted, .timeout = 120)
{
	char dir[] = "/tmp/dynembd-refusals.XXXXXX", sock[128], log[128];
	cr_assert_not_null(mkdtemp(dir));
	snprintf(sock, sizeof sock, "%s/d.sock", dir);
	snprintf(log, sizeof log, "%s/log", dir);
	const char *argv[48];
	daemon_argv(argv, 48, daemon_bin(), sock, "info", NULL, NULL);
	pid_t pid = daemon_spawn(argv, SIGKILL, log);
	int st = 0, r = daemon_await_listen(pid, sock, 10, &st);
	if (r)
		daemon_show_log(log);
	cr_assert_eq(r, 0, "the daemon did not come up (%d, status %d)", r, st);

	dynemb_client *c = NULL;
	struct dynemb_connect_opts o = { .name = "test_index_refusals", .timeout_ms = 10000 };
	int err = dynemb_connect(sock, &o, &c);
	cr_assert_eq(err, 0, "connect: %s", dynemb_strerror(err));
	struct dynemb_table_spec s = { .name = "flood", .dim = 4, .seed = SEED };
	int t;
	cr_assert_eq(err = dynemb_open(c, &s, &t), 0, "open: %s", dynemb_strerror(err));

	/* hashes that share their low 32 bits (both bucket indices, for any bucket count up
	 * to 2^16) and their top 22 bits (no split separates them): one bucket pair */
	enum { NA = 40 };
	unsigned refused = 0, created = 0;
	float v[4];
	char msg[512] = "";
	for (unsigned i = 0; i < NA; i++) {
		uint64_t h = 0xabc0000000000000ull | (uint64_t)(i + 1) << 32 | 0x12345678ull;
		uint64_t k = key_with_hash(h, SEED);
		cr_assert_eq(XXH3_64bits_withSeed(&k, 8, SEED), h);
		err = dynemb_lookup(c, t, &k, 1, v, NULL, 0, 1);
		if (!err) {
			created++;
		} else {
			cr_assert_eq(err, -ENOSPC, "key %u: %s", i, dynemb_strerror(err));
			refused++;
			snprintf(msg, sizeof msg, "%s", dynemb_strerror(err));
		}
	}
	cr_expect_leq(created, 10, "%u colliding keys fit a bucket pair of 10 slots", created);
	cr_assert_geq(refused, NA - 10);
	cr_expect_not_null(strstr(msg, "index refused the key"), "the message: %s", msg);
	char want[64];
	snprintf(want, sizeof want, "index_refusals %u)", refused);
	cr_expect_not_null(strstr(msg, want), "the message (%s) names the count %u", msg, refused);

	/* an update of a refused key is refused the same way */
	uint64_t h = 0xabc0000000000000ull | (uint64_t)(NA + 1) << 32 | 0x12345678ull;
	uint64_t k = key_with_hash(h, SEED);
	float w[4] = { 1, 2, 3, 4 };
	err = dynemb_update(c, t, &k, 1, w, 1, NULL);
	cr_expect_eq(err, -ENOSPC, "update: %s", dynemb_strerror(err));
	cr_expect_not_null(strstr(dynemb_strerror(err), "index refused the key"), "update: %s",
			   dynemb_strerror(err));
	refused++;

	/* and an async lookup's completion */
	h = 0xabc0000000000000ull | (uint64_t)(NA + 2) << 32 | 0x12345678ull;
	k = key_with_hash(h, SEED);
	uint64_t req;
	cr_assert_eq(err = dynemb_submit_lookup(c, t, &k, 1, 0, 1, &req), 0, "submit: %s",
		     dynemb_strerror(err));
	err = dynemb_complete(c, req, -1);
	cr_expect_eq(err, -ENOSPC, "async: %s", dynemb_strerror(err));
	cr_expect_not_null(strstr(dynemb_strerror(err), "index refused the key"), "async: %s",
			   dynemb_strerror(err));
	refused++;

	struct dynemb_stats stt = { 0 };
	cr_assert_eq(err = dynemb_stats(c, t, &stt), 0, "stats: %s", dynemb_strerror(err));
	cr_expect_eq(stt.index_refusals, refused, "STATS index_refusals %lu, refused %u",
		     (unsigned long)stt.index_refusals, refused);
	cr_expect_eq(stt.keys, created);

	/* other keys still insert, and their -ENOSPC-free lookups carry no stale text */
	uint64_t ok[100];
	for (unsigned i = 0; i < 100; i++)
		ok[i] = 1000 + i * 7919;
	float *vals = calloc(100 * 4, sizeof *vals);
	cr_expect_eq(err = dynemb_lookup(c, t, ok, 100, vals, NULL, 0, 2), 0, "%s",
		     dynemb_strerror(err));
	free(vals);

	dynemb_close(c);
	int ds = daemon_terminate(pid, 8);
	if (!WIFEXITED(ds) || WEXITSTATUS(ds))
		daemon_show_log(log);
	cr_expect(WIFEXITED(ds) && WEXITSTATUS(ds) == 0, "the daemon stopped uncleanly");
	daemon_show_log_if_asked(log);
	char cmd[200];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	cr_expect_eq(system(cmd), 0);
}
