/*
 * test_keystore.c — the daemon's string-key store as a unit: its registry
 * (src/server/tables.c, linked directly through dynembd_core; no daemon runs) opens a
 * string table, keeps the first string of each key (srv_table_keep_string) and gives it
 * back (srv_table_key_string: the length, -ENOSPC with the length needed, -ENOENT for an
 * unknown key, '' as key 0); the same name with the same config is the same table,
 * another config is -EEXIST naming the field; an int table keeps no strings (-EINVAL).
 * Collisions (srv_table_check_strings): a fake string kept directly for a real string's
 * fingerprint, then the real string is -EEXIST naming its index, in every build.
 * String keys end to end through the daemon: test_daemon.c (daemon/string_keys) and
 * test_client_learn.c (the suite "strings").
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "de_shm.h"
#include "proto.h"
#include "tables.h"
#include "validate.h"

#define MiB (1ull << 20)

static struct de_wire_table_config int_cfg(uint32_t dim, float init)
{
	return (struct de_wire_table_config){ .dim = dim, .init = DE_INIT_CONSTANT, .init_a = init,
					      .seed = 42, .key_type = DE_KEYS_INT64 };
}

/* The daemon's string store, linked directly (src/server/tables.c). */
Test(keystore, keep_and_fetch, .timeout = 20)
{
	struct srv_registry r;
	srv_registry_init(&r, DE_PAGES_SMALL, DE_NUMA_NONE, 2 * MiB, 256 * MiB);
	struct de_wire_table_config cfg = int_cfg(4, 0);
	cfg.key_type = DE_KEYS_STRING;
	char msg[240];
	cr_assert_eq(srv_wire_config_normalize(&cfg, msg, sizeof msg), 0);
	struct srv_table *t;
	bool created;
	struct de_wire_learn_config none = { 0 };
	cr_assert_eq(srv_registry_open(&r, 0, false, "s", &cfg, &none, &t, &created, msg, sizeof msg), 0,
		     "%s", msg);
	cr_assert(created);
	char s[300];
	for (int i = 0; i < 2000; i++) {
		int n = snprintf(s, sizeof s, "key-%d-%0*d", i, i % 200, 0);
		uint64_t k = de_key_from_string(cfg.seed, s, (size_t)n);
		cr_assert_eq(srv_table_keep_string(t, k, s, (uint32_t)n), 0);
		cr_assert_eq(srv_table_keep_string(t, k, s, (uint32_t)n), 0, "the same string again");
		cr_assert_eq(srv_table_keep_string(t, k, "other", 5), -EEXIST,
			     "another string of a kept fingerprint");
	}
	for (int i = 0; i < 2000; i++) {
		int n = snprintf(s, sizeof s, "key-%d-%0*d", i, i % 200, 0);
		uint64_t k = de_key_from_string(cfg.seed, s, (size_t)n);
		char got[300];
		uint32_t len = 0;
		cr_assert_eq(srv_table_key_string(t, k, got, sizeof got, &len), 0);
		cr_assert_eq(len, (uint32_t)n);
		cr_assert_eq(memcmp(got, s, (size_t)n), 0);
		if (n > 4) {
			cr_assert_eq(srv_table_key_string(t, k, got, 4, &len), -ENOSPC);
			cr_assert_eq(len, (uint32_t)n);
		}
	}
	uint32_t len;
	char got[8];
	cr_assert_eq(srv_table_key_string(t, 12345, got, sizeof got, &len), -ENOENT);
	cr_assert_eq(srv_table_key_string(t, 0, got, sizeof got, &len), 0, "'' is key 0");
	cr_assert_eq(len, 0u);

	/* same name: same config shares, another config is -EEXIST naming the field */
	struct srv_table *t2;
	cr_assert_eq(srv_registry_open(&r, 0, false, "s", &cfg, &none, &t2, &created, msg, sizeof msg), 0);
	cr_assert_eq(t2, t);
	cr_assert_not(created);
	struct de_wire_table_config other = cfg;
	other.seed = 7;
	cr_assert_eq(srv_registry_open(&r, 0, false, "s", &other, &none, &t2, &created, msg, sizeof msg), -EEXIST);
	cr_assert_not_null(strstr(msg, "seed"), "%s", msg);
	/* int tables keep no strings */
	struct de_wire_table_config ic = int_cfg(4, 0);
	cr_assert_eq(srv_wire_config_normalize(&ic, msg, sizeof msg), 0);
	cr_assert_eq(srv_registry_open(&r, 0, false, "i", &ic, &none, &t2, &created, msg, sizeof msg), 0);
	cr_assert_eq(srv_table_key_string(t2, 1, got, sizeof got, &len), -EINVAL);
	srv_registry_destroy(&r);
}

/* A request's strings as the worker holds them: lengths, offsets into one buffer, keys. */
struct req {
	char buf[256];
	uint32_t slen[8];
	uint64_t soff[8], keys[8];
	uint32_t n;
};

static void req_add(struct req *q, uint64_t seed, const char *s, const uint64_t *key)
{
	uint64_t off = q->n ? q->soff[q->n - 1] + q->slen[q->n - 1] : 0;
	size_t l = strlen(s);
	memcpy(q->buf + off, s, l);
	q->soff[q->n] = off;
	q->slen[q->n] = (uint32_t)l;
	q->keys[q->n] = key ? *key : de_key_from_string(seed, s, l);
	q->n++;
}

Test(keystore, a_string_never_takes_another_strings_fingerprint, .timeout = 20)
{
	struct srv_registry r;
	srv_registry_init(&r, DE_PAGES_SMALL, DE_NUMA_NONE, 2 * MiB, 256 * MiB);
	struct de_wire_table_config cfg = int_cfg(4, 0);
	cfg.key_type = DE_KEYS_STRING;
	char msg[240];
	cr_assert_eq(srv_wire_config_normalize(&cfg, msg, sizeof msg), 0);
	struct srv_table *t;
	bool created;
	struct de_wire_learn_config none = { 0 };
	cr_assert_eq(srv_registry_open(&r, 0, false, "s", &cfg, &none, &t, &created, msg, sizeof msg), 0,
		     "%s", msg);
	/* "alice"'s fingerprint, kept for a fake string (as if it collided) */
	uint64_t fa = de_key_from_string(cfg.seed, "alice", 5);
	cr_assert_eq(srv_table_keep_string(t, fa, "mallory", 7), 0);
	struct req q = { .n = 0 };
	req_add(&q, cfg.seed, "bob", NULL);
	req_add(&q, cfg.seed, "alice", NULL);
	uint32_t bad = 99;
	for (int creating = 0; creating < 2; creating++) {
		bad = 99;
		cr_expect_eq(srv_table_check_strings(t, q.keys, q.buf, q.slen, q.soff, q.n,
						     creating, &bad), -EEXIST);
		cr_expect_eq(bad, 1u, "names alice's index");
	}
	/* the fake one is the owner: it passes */
	struct req m = { .n = 0 };
	req_add(&m, cfg.seed, "mallory", &fa);
	cr_expect_eq(srv_table_check_strings(t, m.keys, m.buf, m.slen, m.soff, m.n, false, &bad), 0);
	/* a creating request keeps its new strings first (no admission): bob is kept now */
	struct req b = { .n = 0 };
	req_add(&b, cfg.seed, "bob", NULL);
	cr_expect_eq(srv_table_check_strings(t, b.keys, b.buf, b.slen, b.soff, b.n, true, &bad), 0);
	char got[16];
	uint32_t len = 0;
	cr_assert_eq(srv_table_key_string(t, b.keys[0], got, sizeof got, &len), 0);
	cr_expect(len == 3 && !memcmp(got, "bob", 3));
	/* ... a lookup does not */
	struct req c = { .n = 0 };
	req_add(&c, cfg.seed, "carol", NULL);
	cr_expect_eq(srv_table_check_strings(t, c.keys, c.buf, c.slen, c.soff, c.n, false, &bad), 0);
	cr_expect_eq(srv_table_key_string(t, c.keys[0], got, sizeof got, &len), -ENOENT);
	/* two new strings of one fingerprint in one request: the later is named, none kept */
	uint64_t fd = de_key_from_string(cfg.seed, "dave", 4);
	struct req d = { .n = 0 };
	req_add(&d, cfg.seed, "x", NULL);
	req_add(&d, cfg.seed, "dave", &fd);
	req_add(&d, cfg.seed, "erin", &fd);
	bad = 99;
	cr_expect_eq(srv_table_check_strings(t, d.keys, d.buf, d.slen, d.soff, d.n, true, &bad),
		     -EEXIST);
	cr_expect_eq(bad, 2u);
	cr_expect_eq(srv_table_key_string(t, fd, got, sizeof got, &len), -ENOENT);
	/* the same string twice is one key */
	struct req e = { .n = 0 };
	req_add(&e, cfg.seed, "dave", &fd);
	req_add(&e, cfg.seed, "dave", &fd);
	cr_expect_eq(srv_table_check_strings(t, e.keys, e.buf, e.slen, e.soff, e.n, true, &bad), 0);
	srv_registry_destroy(&r);
}
