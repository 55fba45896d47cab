/*
 * test_peer_members.c — libdepeer's membership (src/peer/members.c): the member-list
 * parser, every refusal with its message checked, and the weighted rendezvous owner
 * against a second implementation written here (long double math, the members walked in
 * reverse, its own name hashes), then what the hash promises, measured on 1,000,000 keys:
 * adding a member moves ~1/4 of the keys of 3, all to the newcomer; removing one moves
 * only its keys; weights 1,1,2 give shares 1/4,1/4,1/2; the owner depends on the names
 * and weights only (not the list's order, not the addresses). The measured fractions are
 * printed to the test log.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>

#include "de_peer.h"

#define NKEYS 1000000u

static char msg[512];

static void parse_ok(const char *spec, struct de_peer_members *m)
{
	msg[0] = 0;
	int err = de_peer_members_parse(spec, m, msg, sizeof msg);
	cr_assert_eq(err, 0, "'%s': %d %s", spec, err, msg);
}

/* spec is refused with err, and msg holds every one of the (up to 3) substrings. */
static void parse_bad(const char *spec, int err, const char *s1, const char *s2, const char *s3)
{
	struct de_peer_members m;
	msg[0] = 0;
	int got = de_peer_members_parse(spec, &m, msg, sizeof msg);
	cr_assert_eq(got, err, "'%.80s': got %d (%s), want %d", spec, got, msg, err);
	const char *want[] = { s1, s2, s3 };
	for (int i = 0; i < 3; i++)
		cr_assert(!want[i] || strstr(msg, want[i]), "'%.80s': message '%s' lacks '%s'",
			  spec, msg, want[i]);
}

/* SplitMix64: the keys (a stream independent of the hash under test). */
static uint64_t mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* The reference owner: the spec of the owner hash written again, differently. Members
 * walked from the last, long double logs, the name's hash recomputed from its text; a tie
 * (never met) goes to the lower name hash, as the library's. */
static unsigned ref_owner(const struct de_peer_members *m, uint64_t key)
{
	long double best = 0;
	uint64_t best_nh = 0;
	unsigned who = m->n;
	for (unsigned j = m->n; j-- > 0;) {
		uint64_t nh = XXH3_64bits(m->m[j].name, strlen(m->m[j].name));
		uint64_t h = XXH3_64bits_withSeed(&key, sizeof key, nh);
		long double u = ((long double)(h >> 11) + 0.5L) / 9007199254740992.0L; /* 2^53 */
		long double s = (long double)m->m[j].weight / -logl(u);
		if (who == m->n || s > best || (s == best && nh < best_nh)) {
			best = s;
			best_nh = nh;
			who = j;
		}
	}
	return who;
}

static uint16_t *owners_of(const struct de_peer_members *m, size_t n)
{
	uint64_t *keys = malloc(n * sizeof *keys);
	uint16_t *o = malloc(n * sizeof *o);
	cr_assert(keys && o);
	for (size_t i = 0; i < n; i++)
		keys[i] = mix(i);
	de_peer_owners(m, keys, n, o);
	free(keys);
	return o;
}

/* ---- the parser -------------------------------------------------------------------- */

Test(parse, good_lists_with_weights_ipv6_and_white_space)
{
	struct de_peer_members m;
	parse_ok("  a=10.0.0.1:7400*2.5,\tb=[fe80::1]:7401\n c=host.example.com:65535 ,,"
		 "d-1.x_y=x:1*1 e=[::1]:80*0.125", &m);
	cr_assert_eq(m.n, 5);
	const char *names[] = { "a", "b", "c", "d-1.x_y", "e" };
	const char *hosts[] = { "10.0.0.1", "fe80::1", "host.example.com", "x", "::1" };
	const unsigned ports[] = { 7400, 7401, 65535, 1, 80 };
	const double w[] = { 2.5, 1, 1, 1, 0.125 };
	for (unsigned i = 0; i < 5; i++) {
		cr_assert_str_eq(m.m[i].name, names[i]);
		cr_assert_str_eq(m.m[i].host, hosts[i]);
		cr_assert_eq(m.m[i].port, ports[i]);
		cr_assert_eq(m.m[i].weight, w[i]);
		cr_assert_eq(m.m[i].name_hash, XXH3_64bits(names[i], strlen(names[i])));
		cr_assert_eq(de_peer_members_find(&m, names[i]), (int)i);
	}
	cr_assert_eq(de_peer_members_find(&m, "zz"), -ENOENT);
	cr_assert_eq(de_peer_members_find(&m, "d-1"), -ENOENT);
	parse_ok("only=h:9", &m);
	cr_assert_eq(m.n, 1);
	for (uint64_t k = 0; k < 1000; k++)
		cr_assert_eq(de_peer_owner(&m, mix(k)), 0u);
}

Test(parse, names_at_the_limits)
{
	struct de_peer_members m;
	char spec[256], name[80];
	memset(name, 'n', 63);
	name[63] = 0;
	snprintf(spec, sizeof spec, "%s=h:1", name);
	parse_ok(spec, &m);
	cr_assert_str_eq(m.m[0].name, name);
	memset(name, 'n', 64);
	name[64] = 0;
	snprintf(spec, sizeof spec, "%s=h:1", name);
	parse_bad(spec, -EINVAL, name, "a name is 1..63", NULL);
	parse_bad("=h:1", -EINVAL, "'=h:1'", "a name is 1..63", NULL);
	parse_bad("a/b=h:1", -EINVAL, "'a/b=h:1'", "A-Z a-z 0-9 . _ -", NULL);
	parse_bad("a:b=h:1", -EINVAL, "'a:b=h:1'", "A-Z a-z 0-9 . _ -", NULL);
}

Test(parse, every_refusal_names_the_entry_and_the_problem)
{
	parse_bad("", -EINVAL, "empty", NULL, NULL);
	parse_bad(" ,\t, \n", -EINVAL, "empty", NULL, NULL);
	parse_bad(NULL, -EINVAL, "empty", NULL, NULL);
	parse_bad("a=h:1 b=h:2,a=other:3", -EINVAL, "'a'", "listed twice", NULL);
	parse_bad("a=h:1 bh:2", -EINVAL, "'bh:2'", "name=host:port", NULL);
	parse_bad("a=h", -EINVAL, "'a=h'", ":port", NULL);
	parse_bad("a=h:", -EINVAL, "'a=h:'", "port ''", "1..65535");
	parse_bad("a=h:0", -EINVAL, "'a=h:0'", "port '0'", "1..65535");
	parse_bad("a=h:65536", -EINVAL, "'a=h:65536'", "port '65536'", NULL);
	parse_bad("a=h:99999999999999999999", -EINVAL, "port '9999", "1..65535", NULL);
	parse_bad("a=h:-1", -EINVAL, "port '-1'", NULL, NULL);
	parse_bad("a=h:+80", -EINVAL, "port '+80'", NULL, NULL);
	parse_bad("a=h:80x", -EINVAL, "port '80x'", NULL, NULL);
	parse_bad("a=:80", -EINVAL, "'a=:80'", "host is empty", NULL);
	parse_bad("a=[]:80", -EINVAL, "'a=[]:80'", "host is empty", NULL);
	parse_bad("a=::1:80", -EINVAL, "'a=::1:80'", "brackets", NULL);
	parse_bad("a=[::1]80", -EINVAL, "'a=[::1]80'", "[ADDR]:PORT", NULL);
	parse_bad("a=[::1:80", -EINVAL, "'a=[::1:80'", "[ADDR]:PORT", NULL);
	const char *weights[] = { "0", "-1", "nan", "inf", "", "1x", "1e400", "0x", "-0" };
	for (unsigned i = 0; i < sizeof weights / sizeof *weights; i++) {
		char spec[64], w[32];
		snprintf(spec, sizeof spec, "a=h:1,b=h:2*%s", weights[i]);
		snprintf(w, sizeof w, "weight '%s'", weights[i]);
		parse_bad(spec, -EINVAL, spec + 6, w, NULL);
	}
	/* a host of 255 bytes is taken, 256 refused (with the entry's start named) */
	char spec[400], host[300];
	memset(host, 'h', 255);
	host[255] = 0;
	snprintf(spec, sizeof spec, "a=%s:1", host);
	struct de_peer_members m;
	parse_ok(spec, &m);
	cr_assert_str_eq(m.m[0].host, host);
	memset(host, 'h', 256);
	host[256] = 0;
	snprintf(spec, sizeof spec, "a=%s:1", host);
	parse_bad(spec, -EINVAL, "'a=hhh", "host is too long", NULL);
	/* an entry too long to hold is refused by its start */
	char big[2000];
	memset(big, 'x', sizeof big - 1);
	big[0] = 'q', big[1] = '=';
	big[sizeof big - 1] = 0;
	parse_bad(big, -EINVAL, "'q=xxx", "too long", NULL);
}

Test(parse, at_most_max_members)
{
	char spec[DE_PEER_MAX_MEMBERS * 16 + 32];
	size_t at = 0;
	for (unsigned i = 0; i < DE_PEER_MAX_MEMBERS; i++)
		at += (size_t)snprintf(spec + at, sizeof spec - at, "m%u=h:%u,", i, i + 1);
	struct de_peer_members m;
	parse_ok(spec, &m);
	cr_assert_eq(m.n, DE_PEER_MAX_MEMBERS);
	snprintf(spec + at, sizeof spec - at, "one-more=h:1");
	parse_bad(spec, -E2BIG, "more than 64", NULL, NULL);
}

/* ---- the owner hash ---------------------------------------------------------------- */

Test(owner, matches_the_reference_on_100k_keys)
{
	const char *lists[] = {
		"a=h:1 b=h:2 c=h:3",
		"n0=h:1*0.5 n1=h:1*3 n2=h:1 n3=h:1*1.5 n4=h:1*0.01 n5=h:1*7",
		"solo=h:1",
		"x.1=h:1*2 x.2=h:1*2",
	};
	for (unsigned l = 0; l < sizeof lists / sizeof *lists; l++) {
		struct de_peer_members m;
		parse_ok(lists[l], &m);
		uint16_t *o = owners_of(&m, 100000);
		for (uint64_t i = 0; i < 100000; i++) {
			unsigned want = ref_owner(&m, mix(i));
			cr_assert_eq(de_peer_owner(&m, mix(i)), want, "list %u key %lu", l,
				     (unsigned long)i);
			cr_assert_eq(o[i], want, "owners(): list %u key %lu", l, (unsigned long)i);
		}
		free(o);
	}
}

Test(owner, a_new_member_takes_a_quarter_and_only_from_others)
{
	struct de_peer_members m3, m4;
	parse_ok("a=h:1 b=h:2 c=h:3", &m3);
	parse_ok("a=h:1 b=h:2 c=h:3 d=h:4", &m4);
	uint16_t *o3 = owners_of(&m3, NKEYS), *o4 = owners_of(&m4, NKEYS);
	size_t moved = 0;
	for (size_t i = 0; i < NKEYS; i++)
		if (o3[i] != o4[i]) {
			moved++;
			cr_assert_eq(o4[i], 3, "key %zu moved from %u to %u, not to the new member",
				     i, o3[i], o4[i]);
		}
	double f = (double)moved / NKEYS;
	cr_log_info("3 -> 4 members: %.4f of 1e6 keys moved, all to the new member", f);
	printf("owner: 3 -> 4 members: %.4f of 1e6 keys moved, all to the new member\n", f);
	cr_assert(fabs(f - 0.25) <= 0.01, "moved %.4f", f);
	free(o3);
	free(o4);
}

Test(owner, a_leaving_member_moves_only_its_keys)
{
	struct de_peer_members m4, m3;
	parse_ok("a=h:1 b=h:2 c=h:3 d=h:4", &m4);
	parse_ok("a=h:1 b=h:2 d=h:4", &m3); /* c leaves: d is now index 2 */
	uint16_t *o4 = owners_of(&m4, NKEYS), *o3 = owners_of(&m3, NKEYS);
	size_t moved = 0;
	for (size_t i = 0; i < NKEYS; i++) {
		const char *before = m4.m[o4[i]].name, *after = m3.m[o3[i]].name;
		if (strcmp(before, after)) {
			moved++;
			cr_assert_str_eq(before, "c", "key %zu moved from %s to %s", i, before, after);
		} else {
			cr_assert_str_neq(before, "c");
		}
	}
	double f = (double)moved / NKEYS;
	cr_log_info("4 -> 3 members: %.4f of 1e6 keys moved, all of the leaving member's", f);
	printf("owner: 4 -> 3 members: %.4f of 1e6 keys moved, all of the leaving member's\n", f);
	cr_assert(fabs(f - 0.25) <= 0.01, "moved %.4f", f);
	free(o4);
	free(o3);
}

Test(owner, weights_give_proportional_shares)
{
	struct de_peer_members m;
	parse_ok("a=h:1*1 b=h:2*1 c=h:3*2", &m);
	uint16_t *o = owners_of(&m, NKEYS);
	size_t cnt[3] = { 0 };
	for (size_t i = 0; i < NKEYS; i++)
		cnt[o[i]]++;
	const double want[3] = { 0.25, 0.25, 0.5 };
	printf("owner: weights 1,1,2: shares %.4f %.4f %.4f\n", (double)cnt[0] / NKEYS,
	       (double)cnt[1] / NKEYS, (double)cnt[2] / NKEYS);
	cr_log_info("weights 1,1,2: shares %.4f %.4f %.4f", (double)cnt[0] / NKEYS,
		    (double)cnt[1] / NKEYS, (double)cnt[2] / NKEYS);
	for (int i = 0; i < 3; i++)
		cr_assert(fabs((double)cnt[i] / NKEYS - want[i]) <= 0.01, "member %d: %.4f", i,
			  (double)cnt[i] / NKEYS);
	free(o);
	/* equal weights, whatever the value, are plain HRW: the largest u wins */
	struct de_peer_members e;
	parse_ok("a=h:1*3 b=h:2*3 c=h:3*3", &e);
	for (uint64_t i = 0; i < 100000; i++) {
		uint64_t k = mix(i), bu = 0;
		unsigned who = 0;
		for (unsigned j = 0; j < 3; j++) {
			uint64_t u = XXH3_64bits_withSeed(&k, 8, e.m[j].name_hash) >> 11;
			if (j == 0 || u > bu)
				bu = u, who = j;
		}
		cr_assert_eq(de_peer_owner(&e, k), who, "key %lu", (unsigned long)i);
	}
}

Test(owner, depends_on_names_and_weights_only)
{
	struct de_peer_members m, p;
	parse_ok("a=10.0.0.1:1*1 b=10.0.0.2:2*2 c=10.0.0.3:3*0.5 d=10.0.0.4:4", &m);
	parse_ok("d=[fd00::4]:9000 c=other.example:1*0.5, a=a.example:7*1 b=127.0.0.1:2*2", &p);
	uint16_t *om = owners_of(&m, 200000), *op = owners_of(&p, 200000);
	for (size_t i = 0; i < 200000; i++)
		cr_assert_str_eq(m.m[om[i]].name, p.m[op[i]].name, "key %zu", i);
	free(om);
	free(op);
	/* and a weight is part of the identity: changing b's weight moves keys */
	parse_ok("a=10.0.0.1:1*1 b=10.0.0.2:2*3 c=10.0.0.3:3*0.5 d=10.0.0.4:4", &p);
	size_t moved = 0;
	for (uint64_t i = 0; i < 100000; i++)
		moved += de_peer_owner(&m, mix(i)) != de_peer_owner(&p, mix(i));
	cr_assert_gt(moved, 0);
}

/* Not a timed assertion: the speed of the batch form, printed for the log. */
Test(owner, batch_speed_printed)
{
	const char *lists[] = { "a=h:1 b=h:1 c=h:1 d=h:1 e=h:1 f=h:1 g=h:1 i=h:1",
				"a=h:1 b=h:1 c=h:1 d=h:1 e=h:1 f=h:1 g=h:1 i=h:1*2" };
	for (int l = 0; l < 2; l++) {
		struct de_peer_members m;
		parse_ok(lists[l], &m);
		struct timespec t0, t1;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		uint16_t *o = owners_of(&m, NKEYS);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		double ns = ((double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec)) / NKEYS;
		printf("owner: de_peer_owners, 8 members, %s weights: %.1f ns per key (key generation included)\n",
		       l ? "unequal" : "equal", ns);
		cr_log_info("de_peer_owners, 8 members, %s weights: %.1f ns per key", l ? "unequal" : "equal", ns);
		free(o);
	}
}
