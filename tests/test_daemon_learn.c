/*
 * test_daemon_learn.c — the daemon's side of SAMPLE, TOPK and KEY_STRINGS: every rule of
 * srv_check_sqe / srv_check_sample_args (proto.h states them) on descriptors built here,
 * and the [memory] / [learn] config keys through srv_config_load (good values, every bad
 * value, --print-config) — the daemon's code linked directly (dynembd_core).
 * The ops end to end: tests/test_client_learn.c.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "config.h"
#include "quota.h"
#include "validate.h"

#define DATA (1ull << 20)
#define MB 1024u

static struct de_sqe base(uint8_t op, uint32_t count)
{
	return (struct de_sqe){ .op = op, .table = 0, .count = count, .keys_off = 0,
				.keys_len = 8ull * count, .vals_off = 65536, .vals_len = 0 };
}

static int chk(const struct de_sqe *e, uint32_t key_type)
{
	return srv_check_sqe(e, 1, 4, key_type, MB, DATA);
}

Test(sqe, sample_descriptor)
{
	struct de_sqe e = base(DE_OP_SAMPLE, 3);
	e.vals_len = 13 * 5 + 4 * 3;
	e.status_off = 4096;
	cr_assert_eq(chk(&e, DE_KEYS_INT64), 0);
	struct de_sqe x = e;
	x.table = 1;
	cr_assert_eq(chk(&x, DE_KEYS_INT64), -EINVAL, "unknown table");
	x = e, x.count = MB + 1, x.keys_len = 8ull * x.count;
	cr_assert_eq(chk(&x, DE_KEYS_INT64), -E2BIG, "npos over max batch");
	x = e, x.keys_len = 8 * 3 + 1;
	cr_assert_eq(chk(&x, DE_KEYS_INT64), -EINVAL, "keys_len");
	x = e, x.flags = 0x80;
	cr_assert_eq(chk(&x, DE_KEYS_INT64), -EINVAL, "unknown flag");
	x = e, x.flags = DE_SAMPLE_STR;
	cr_assert_eq(chk(&x, DE_KEYS_INT64), -EINVAL, "string positives on an int table");
	x = e, x.flags = DE_SAMPLE_STR, x.keys_len = 11;
	cr_assert_eq(chk(&x, DE_KEYS_STRING), -EINVAL, "string region shorter than its lengths");
	x.keys_len = 12;
	cr_assert_eq(chk(&x, DE_KEYS_STRING), 0);
	x = e, x.status_off = 4097;
	cr_assert_eq(chk(&x, DE_KEYS_INT64), -EINVAL, "args misaligned");
	x = e, x.status_off = DATA - 16;
	cr_assert_eq(chk(&x, DE_KEYS_INT64), -EINVAL, "args past the area");
	x = e, x.vals_off = 65537;
	cr_assert_eq(chk(&x, DE_KEYS_INT64), -EINVAL, "outputs misaligned");
	x = e, x.vals_off = DATA - 8;
	cr_assert_eq(chk(&x, DE_KEYS_INT64), -EINVAL, "outputs past the area");
	x = e, x.vals_len = 4 * 3 + 12;
	cr_assert_eq(chk(&x, DE_KEYS_INT64), -EINVAL, "room for no sample");
	x = e, x.arg = 1;
	cr_assert_eq(chk(&x, DE_KEYS_INT64), -EINVAL, "arg must be 0");
	x = e, x.keys_off = 4;
	cr_assert_eq(chk(&x, DE_KEYS_INT64), -EINVAL, "keys misaligned");
}

Test(sqe, sample_args)
{
	struct de_sqe e = base(DE_OP_SAMPLE, 3);
	e.vals_len = 13 * 5 + 4 * 3;
	struct de_wire_sample_args a = { .kind = DE_SAMPLER_UNIFORM, .num_sampled = 5 };
	cr_assert_eq(srv_check_sample_args(&a, &e, MB), 0);
	struct de_wire_sample_args x = a;
	x.num_sampled = 0;
	cr_assert_eq(srv_check_sample_args(&x, &e, MB), -EINVAL, "num_sampled 0");
	x = a, x.num_sampled = MB + 1;
	cr_assert_eq(srv_check_sample_args(&x, &e, MB), -E2BIG, "num_sampled over max batch");
	x = a, x.num_sampled = 6;
	cr_assert_eq(srv_check_sample_args(&x, &e, MB), -EINVAL, "vals_len disagrees");
	x = a, x.kind = 3;
	cr_assert_eq(srv_check_sample_args(&x, &e, MB), -EINVAL, "kind");
	x = a, x.unique = 2;
	cr_assert_eq(srv_check_sample_args(&x, &e, MB), -EINVAL, "unique");
	x = a, x.reserved = 1;
	cr_assert_eq(srv_check_sample_args(&x, &e, MB), -EINVAL, "reserved");
	x = a, x.power = 0.75;
	cr_assert_eq(srv_check_sample_args(&x, &e, MB), -EINVAL, "power for uniform");
	x = a, x.kind = DE_SAMPLER_UNIGRAM;
	cr_assert_eq(srv_check_sample_args(&x, &e, MB), -EINVAL, "unigram power 0");
	x.power = 0.75;
	cr_assert_eq(srv_check_sample_args(&x, &e, MB), 0);
	x.power = 16.5;
	cr_assert_eq(srv_check_sample_args(&x, &e, MB), -EINVAL, "power too big");
	x.power = NAN;
	cr_assert_eq(srv_check_sample_args(&x, &e, MB), -EINVAL, "power NaN");
	x = a, x.kind = DE_SAMPLER_LOG_UNIFORM, x.power = -0.0;
	cr_assert_eq(srv_check_sample_args(&x, &e, MB), -EINVAL, "-0.0 is not 0 on the wire");
}

Test(sqe, topk_descriptor)
{
	/* dim 4: nq 3 queries, k 5 */
	struct de_sqe e = base(DE_OP_TOPK, 3);
	e.keys_len = 4 * 3 * 4;
	e.arg = 5;
	e.vals_len = 12 * 3 * 5;
	cr_assert_eq(chk(&e, DE_KEYS_INT64), 0);
	cr_assert_eq(chk(&e, DE_KEYS_STRING), 0);
	struct de_sqe x = e;
	x.arg = 0;
	cr_assert_eq(chk(&x, DE_KEYS_INT64), -EINVAL, "k 0");
	x = e, x.arg = 65537, x.vals_len = 12ull * 3 * 65537;
	cr_assert_eq(srv_check_sqe(&x, 1, 4, DE_KEYS_INT64, MB, 1ull << 40), -E2BIG, "k too big");
	x = e, x.count = 0, x.keys_len = 0, x.vals_len = 0;
	cr_assert_eq(chk(&x, DE_KEYS_INT64), -EINVAL, "nq 0");
	x = e, x.count = MB + 1;
	cr_assert_eq(chk(&x, DE_KEYS_INT64), -E2BIG, "nq over max batch");
	x = e, x.keys_len = 4 * 3 * 4 - 4;
	cr_assert_eq(chk(&x, DE_KEYS_INT64), -EINVAL, "queries length");
	x = e, x.vals_len = 12 * 3 * 5 + 4;
	cr_assert_eq(chk(&x, DE_KEYS_INT64), -EINVAL, "results length");
	x = e, x.flags = 2;
	cr_assert_eq(chk(&x, DE_KEYS_INT64), -EINVAL, "metric flag");
	x.flags = DE_WTOPK_COSINE;
	cr_assert_eq(chk(&x, DE_KEYS_INT64), 0);
	x = e, x.status_off = 8;
	cr_assert_eq(chk(&x, DE_KEYS_INT64), -EINVAL, "status_off 0");
	x = e, x.vals_off = 65540;
	cr_assert_eq(chk(&x, DE_KEYS_INT64), -EINVAL, "results misaligned");
	x = e, x.vals_off = DATA - 100;
	cr_assert_eq(chk(&x, DE_KEYS_INT64), -EINVAL, "results past the area");
	/* nq * k over DE_TOPK_MAX_RESULTS with a big max batch */
	x = e, x.count = 1024, x.arg = 65536, x.keys_len = 4ull * 1024 * 4,
	x.vals_len = 12ull * 1024 * 65536;
	cr_assert_eq(srv_check_sqe(&x, 1, 4, DE_KEYS_INT64, 1u << 20, 1ull << 40), -E2BIG,
		     "nq * k too big");
}

Test(sqe, key_strings_descriptor)
{
	struct de_sqe e = base(DE_OP_KEY_STRINGS, 3);
	e.vals_len = 4 * 3 + 100;
	cr_assert_eq(chk(&e, DE_KEYS_STRING), 0);
	cr_assert_eq(chk(&e, DE_KEYS_INT64), -EINVAL, "int64 table");
	struct de_sqe x = e;
	x.vals_len = 11;
	cr_assert_eq(chk(&x, DE_KEYS_STRING), -EINVAL, "no room for the lengths");
	x = e, x.keys_len = 25;
	cr_assert_eq(chk(&x, DE_KEYS_STRING), -EINVAL, "keys_len");
	x = e, x.arg = 1;
	cr_assert_eq(chk(&x, DE_KEYS_STRING), -EINVAL, "arg");
	x = e, x.flags = 1;
	cr_assert_eq(chk(&x, DE_KEYS_STRING), -EINVAL, "flags");
	x = e, x.status_off = 8;
	cr_assert_eq(chk(&x, DE_KEYS_STRING), -EINVAL, "status_off");
	x = e, x.vals_off = 65538;
	cr_assert_eq(chk(&x, DE_KEYS_STRING), -EINVAL, "misaligned lengths");
	x = e, x.count = MB + 1, x.keys_len = 8ull * x.count, x.vals_len = 4ull * x.count;
	cr_assert_eq(chk(&x, DE_KEYS_STRING), -E2BIG);
	x = e, x.op = DE_OP_KEY_STRINGS + 1;
	cr_assert_eq(chk(&x, DE_KEYS_STRING), -EINVAL, "past the last op");
}

/* ---- config ---------------------------------------------------------------------------- */

static int load(struct srv_config *c, const char *const *flags)
{
	const char *argv[16] = { "dynembd" };
	int n = 1;
	while (flags && flags[n - 1])
		argv[n] = flags[n - 1], n++;
	argv[n] = NULL;
	return srv_config_load(c, n, (char **)argv);
}

static const char *printed(const struct srv_config *c, const char *key)
{
	static char buf[8192], val[512];
	FILE *f = fmemopen(buf, sizeof buf, "w");
	srv_config_print(c, f);
	fclose(f);
	char pat[64];
	snprintf(pat, sizeof pat, "\n%s = ", key);
	const char *p = strstr(buf, pat);
	if (!p)
		return NULL;
	p += strlen(pat);
	size_t n = strcspn(p, "\n");
	snprintf(val, sizeof val, "%.*s", (int)n, p);
	return val;
}

Test(config, defaults_and_flags)
{
	struct srv_config c;
	cr_assert_eq(load(&c, NULL), 0);
	cr_assert_eq(c.host_budget_bytes, 0u);
	cr_assert_str_eq(c.tier_dir, "/var/tmp/dynemb-tier");
	cr_assert_eq(c.topk_threads, 0u);
	cr_assert_eq(c.sampler_rebuild_ms, 1000u);
	cr_assert_str_eq(printed(&c, "tier_dir"), "/var/tmp/dynemb-tier");
	cr_assert_eq(load(&c, (const char *const[]){ "--host-budget-bytes", "3G", "--tier-dir",
						      "/tmp/x", "--topk-threads", "8",
						      "--sampler-rebuild-ms", "0", NULL }), 0);
	cr_assert_eq(c.host_budget_bytes, 3ull << 30);
	cr_assert_str_eq(c.tier_dir, "/tmp/x");
	cr_assert_eq(c.topk_threads, 8u);
	cr_assert_eq(c.sampler_rebuild_ms, 0u);
	cr_assert_str_eq(printed(&c, "host_budget_bytes"), "3221225472");
	cr_assert_str_eq(printed(&c, "topk_threads"), "8");
	cr_assert_str_eq(printed(&c, "sampler_rebuild_ms"), "0");
	cr_assert_eq(load(&c, (const char *const[]){ "--tier-dir", "", NULL }), 0);
	cr_assert_str_eq(c.tier_dir, "", "empty: no disk tier");
}

Test(config, file_sections)
{
	char path[] = "/tmp/de-learn-cfg-XXXXXX";
	int fd = mkstemp(path);
	cr_assert_geq(fd, 0);
	const char body[] = "[memory]\nhost_budget_bytes = 64M\ntier_dir = /tmp/t2\n"
			    "[learn]\ntopk_threads = 2\nsampler_rebuild_ms = 250\n";
	cr_assert_eq(write(fd, body, sizeof body - 1), (ssize_t)(sizeof body - 1));
	close(fd);
	struct srv_config c;
	cr_assert_eq(load(&c, (const char *const[]){ "--config", path, NULL }), 0);
	cr_assert_eq(c.host_budget_bytes, 64ull << 20);
	cr_assert_str_eq(c.tier_dir, "/tmp/t2");
	cr_assert_eq(c.topk_threads, 2u);
	cr_assert_eq(c.sampler_rebuild_ms, 250u);
	unlink(path);
}

Test(config, bad_values_exit_2)
{
	static const char *const bad[][2] = {
		{ "--host-budget-bytes", "12x" },     { "--host-budget-bytes", "-1" },
		{ "--host-budget-bytes", "1000" },    /* below 1M and not 0 */
		{ "--host-budget-bytes", "99999999999999999999" },
		{ "--tier-dir", "relative/dir" },
		{ "--tier-dir", "/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
				"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
				"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
				"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" },
		{ "--topk-threads", "65" },           { "--topk-threads", "x" },
		{ "--sampler-rebuild-ms", "3600001" }, { "--sampler-rebuild-ms", "" },
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct srv_config c;
		cr_assert_eq(load(&c, (const char *const[]){ bad[i][0], bad[i][1], NULL }), 2,
			     "%s %s", bad[i][0], bad[i][1]);
	}
	char path[] = "/tmp/de-learn-cfg-XXXXXX";
	int fd = mkstemp(path);
	const char body[] = "[memory]\nnot_a_key = 1\n";
	cr_assert_eq(write(fd, body, sizeof body - 1), (ssize_t)(sizeof body - 1));
	close(fd);
	struct srv_config c;
	cr_assert_eq(load(&c, (const char *const[]){ "--config", path, NULL }), 2, "unknown key");
	fd = open(path, O_WRONLY | O_TRUNC);
	const char body2[] = "[learn]\nbogus = 1\n";
	cr_assert_eq(write(fd, body2, sizeof body2 - 1), (ssize_t)(sizeof body2 - 1));
	close(fd);
	cr_assert_eq(load(&c, (const char *const[]){ "--config", path, NULL }), 2, "unknown key");
	unlink(path);
}

/* ---- libdelearn additions the daemon relies on ----------------------------------------- */

/* de_sample_seeded: the draw of a call depends on its seed (not on earlier calls), and
 * is the first draw of a sampler created with that seed and unique flag. */
Test(lib, sample_seeded_replays)
{
	struct de_arena_config ac = { .reserve_bytes = 256ull << 20, .segment_bytes = 4 << 20,
				      .pages = DE_PAGES_SMALL, .numa_node = DE_NUMA_NONE };
	de_arena *a;
	cr_assert_eq(de_arena_create(&ac, &a), 0);
	struct de_table_config tc = { .dim = 2, .seed = 1 };
	de_table *t;
	cr_assert_eq(de_table_open(a, &tc, &t), 0);
	uint64_t keys[300];
	float v[600];
	for (int i = 0; i < 300; i++)
		keys[i] = 10 + (uint64_t)i;
	for (int r = 0; r < 3; r++) /* frequencies for the snapshot kinds */
		cr_assert_eq(de_table_find_or_insert(t, keys, 300 - 100 * (size_t)r, v, NULL, 1), 0);
	for (int kind = 0; kind < 3; kind++) {
		for (int unique = 0; unique < 2; unique++) {
			struct de_sampler_config sc = { .kind = (enum de_sampler_kind)kind,
							.power = kind == 2 ? 0.75 : 0, .seed = 77 };
			de_sampler *shared, *fresh;
			cr_assert_eq(de_sampler_create(t, &sc, &shared), 0);
			uint64_t x[64], y[64], z[64];
			float ex[64], ez[64];
			/* a few calls first: the shared sampler's call counter moves */
			for (int i = 0; i < 3; i++)
				cr_assert_eq(de_sample(shared, 64, NULL, 0, x, NULL, NULL, NULL, NULL), 0);
			cr_assert_eq(de_sample_seeded(shared, unique, 1234, 64, NULL, 0, x, ex, NULL,
						      NULL, NULL), 0);
			cr_assert_eq(de_sample_seeded(shared, unique, 1234, 64, NULL, 0, y, NULL, NULL,
						      NULL, NULL), 0);
			cr_assert_arr_eq(x, y, sizeof x, "kind %d: same seed, same draw", kind);
			sc.seed = 1234;
			sc.unique = unique;
			cr_assert_eq(de_sampler_create(t, &sc, &fresh), 0);
			cr_assert_eq(de_sample(fresh, 64, NULL, 0, z, ez, NULL, NULL, NULL), 0);
			cr_assert_arr_eq(x, z, sizeof x, "kind %d unique %d: a fresh sampler's first draw",
					 kind, unique);
			cr_assert_arr_eq(ex, ez, sizeof ex);
			if (unique)
				for (int i = 0; i < 64; i++)
					for (int j = 0; j < i; j++)
						cr_assert_neq(x[i], x[j]);
			cr_assert_eq(de_sample_seeded(shared, unique, 1235, 64, NULL, 0, y, NULL, NULL,
						      NULL, NULL), 0);
			cr_assert(memcmp(x, y, sizeof x), "another seed, another draw");
			de_sampler_destroy(fresh);
			de_sampler_destroy(shared);
		}
	}
	de_table_close(t);
	de_arena_destroy(a);
}

/* DROP's framing and name (srv_check_msg): exact length, a valid name, after HELLO. */
Test(msg, drop_checked)
{
	struct de_msg_drop m;
	memset(&m, 0, sizeof m);
	m.h = (struct de_msg_hdr){ .magic = DE_MSG_MAGIC, .type = DE_MSG_DROP,
				   .version = DE_PROTO_VERSION, .len = sizeof m, .seq = 5 };
	strcpy(m.name, "emb");
	union srv_msg out;
	char msg[240];
	cr_assert_eq(srv_check_msg(&m, sizeof m, false, true, &out, msg, sizeof msg), 0, "%s", msg);
	cr_expect_str_eq(out.drop.name, "emb");
	cr_expect_eq(srv_check_msg(&m, sizeof m, false, false, &out, msg, sizeof msg), -EPROTO,
		     "DROP before HELLO");
	cr_expect_eq(srv_check_msg(&m, sizeof m - 8, false, true, &out, msg, sizeof msg), -EBADMSG);
	m.name[1] = '\t';
	cr_expect_eq(srv_check_msg(&m, sizeof m, false, true, &out, msg, sizeof msg), -EINVAL);
	cr_expect(strstr(msg, "control character"), "%s", msg);
	memset(m.name, 'x', sizeof m.name); /* no NUL */
	cr_expect_eq(srv_check_msg(&m, sizeof m, false, true, &out, msg, sizeof msg), -EINVAL);
	cr_expect(strstr(msg, "NUL-terminated"), "%s", msg);
}

/* DROP's flags: the force flag passes, other bits and a nonzero pad are -EINVAL naming
 * them, and the 80-byte DROP of a client without flags still passes as flags 0. */
Test(msg, drop_flags_checked)
{
	struct de_msg_drop m;
	memset(&m, 0, sizeof m);
	m.h = (struct de_msg_hdr){ .magic = DE_MSG_MAGIC, .type = DE_MSG_DROP,
				   .version = DE_PROTO_VERSION, .len = sizeof m, .seq = 5 };
	strcpy(m.name, "emb");
	m.flags = DE_DROP_FORCE;
	union srv_msg out;
	char msg[240];
	cr_assert_eq(srv_check_msg(&m, sizeof m, false, true, &out, msg, sizeof msg), 0, "%s", msg);
	cr_expect_eq(out.drop.flags, DE_DROP_FORCE);
	m.flags = DE_DROP_FORCE | 0x10;
	cr_expect_eq(srv_check_msg(&m, sizeof m, false, true, &out, msg, sizeof msg), -EINVAL);
	cr_expect(strstr(msg, "unknown flags 0x10"), "%s", msg);
	m.flags = DE_DROP_FORCE;
	m.pad = 1;
	cr_expect_eq(srv_check_msg(&m, sizeof m, false, true, &out, msg, sizeof msg), -EINVAL);
	cr_expect(strstr(msg, "pad"), "%s", msg);
	/* without flags: 80 bytes, flags read as 0 */
	m.h.len = DE_MSG_DROP_V0_LEN;
	cr_assert_eq(srv_check_msg(&m, DE_MSG_DROP_V0_LEN, false, true, &out, msg, sizeof msg), 0,
		     "%s", msg);
	cr_expect_eq(out.drop.flags, 0u, "the bytes past the 80 are not read");
	cr_expect_str_eq(out.drop.name, "emb");
	m.h.len = DE_MSG_DROP_V0_LEN + 4; /* neither length */
	cr_expect_eq(srv_check_msg(&m, DE_MSG_DROP_V0_LEN + 4, false, true, &out, msg, sizeof msg),
		     -EBADMSG);
}

/* A table's reservation from its budget, and the name index's. */
Test(quota, reservation_sizing)
{
	const uint64_t M = 1ull << 20;
	cr_expect_eq(srv_quota_table_reserve(0, 16384 * M, 0), 16384 * M, "no budget: table_bytes");
	cr_expect_eq(srv_quota_table_reserve(400 * M, 16384 * M, 0), 564 * M,
		     "budget * 5/4 + 64 MiB");
	cr_expect_eq(srv_quota_table_reserve(400 * M, 16384 * M, 256 * M), 256 * M, "capped");
	cr_expect_eq(srv_quota_table_reserve(1, 0, 0) % (2 * M), 0, "2 MiB multiples");
	cr_expect_eq(srv_quota_names_reserve(16384 * M), 4096 * M);
	cr_expect_eq(srv_quota_names_reserve(100 * M), 64 * M);
}

/* Accounts: counts and bytes per uid and for the host, the errors naming the quota, all
 * given back at the end. */
Test(quota, accounts)
{
	struct srv_quota_limits l = { .host_bytes = 100, .uid_bytes = 60, .host_tables = 3,
				      .uid_tables = 2 };
	struct srv_quota *q;
	cr_assert_eq(srv_quota_create(&l, &q), 0);
	struct srv_quota_acct *a, *b, *c, *x;
	char msg[240];
	cr_assert_eq(srv_quota_table_begin(q, 1000, "a", 10, false, &a, msg, sizeof msg), 0);
	cr_assert_eq(srv_quota_table_begin(q, 1000, "b", 10, false, &b, msg, sizeof msg), 0);
	cr_expect_eq(srv_quota_table_begin(q, 1000, "c", 10, false, &x, msg, sizeof msg), -EDQUOT);
	cr_expect(strstr(msg, "uid 1000") && strstr(msg, "uid_tables"), "%s", msg);
	cr_expect_null(x);
	cr_expect_eq(srv_quota_charge(a, 41, msg, sizeof msg), -EDQUOT, "uid_bytes 60");
	cr_expect(strstr(msg, "uid_bytes"), "%s", msg);
	cr_assert_eq(srv_quota_charge(a, 40, msg, sizeof msg), 0);
	cr_assert_eq(srv_quota_table_begin(q, 2000, "c", 30, false, &c, msg, sizeof msg), 0);
	cr_expect_eq(srv_quota_charge(c, 11, msg, sizeof msg), -ENOSPC, "host_bytes 100");
	cr_expect(strstr(msg, "host_bytes"), "%s", msg);
	cr_expect_eq(srv_quota_table_begin(q, 3000, "d", 0, false, &x, msg, sizeof msg), -ENOSPC);
	cr_expect(strstr(msg, "host_tables"), "%s", msg);
	/* a recovered table is never refused (uid 1000 is at both of its limits and the
	 * host at its table count), and is charged to its creator as well as the host */
	cr_assert_eq(srv_quota_table_begin(q, 1000, "r", 500, true, &x, msg, sizeof msg), 0);
	uint32_t n;
	uint64_t bytes;
	srv_quota_usage(q, SRV_QUOTA_UID_NONE, &n, &bytes);
	cr_expect(n == 4 && bytes == 590, "host: %u tables, %llu bytes", n, (unsigned long long)bytes);
	srv_quota_usage(q, 1000, &n, &bytes);
	cr_expect(n == 3 && bytes == 560, "uid 1000: %u tables, %llu bytes", n,
		  (unsigned long long)bytes);
	cr_expect_eq(srv_quota_charge(x, 1, msg, sizeof msg), -EDQUOT,
		     "a recovered table's growth is checked against its creator's quota");
	srv_quota_give_back(a, 1000); /* more than it holds: cut to its account */
	cr_expect_eq(srv_quota_acct_bytes(a), 0);
	srv_quota_table_end(a);
	srv_quota_table_end(b);
	srv_quota_table_end(c);
	srv_quota_table_end(x);
	srv_quota_usage(q, SRV_QUOTA_UID_NONE, &n, &bytes);
	cr_expect(n == 0 && bytes == 0, "all given back: %u, %llu", n, (unsigned long long)bytes);
	srv_quota_usage(q, 1000, &n, &bytes);
	cr_expect(n == 0 && bytes == 0);
	srv_quota_destroy(q);
}
