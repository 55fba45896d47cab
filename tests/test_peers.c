/*
 * test_peers.c — dynembd over several hosts: three (or two) real daemons on loopback
 * ports of this machine, each with its own socket, data directory and [peers] member
 * name, against a fourth daemon without peers as the single-host reference. Every
 * expectation comes from the reference daemon or from values kept here, never from the
 * sharded daemons' own output. (Loopback ports, not network namespaces: what differs
 * between the two is the addresses, not the code paths under test.)
 *
 * Suites:
 *   shard    lookups (creating and read-only), gradients (with and without an lr),
 *            updates and erases through one member give the single-host rows, statuses
 *            and counts bit for bit; the other members read the same rows; each member
 *            holds its own share of the keys and the shares add up; sampling (uniform
 *            and unigram, with and without unique) draws live keys with the single
 *            host's expected counts and member shares; log-uniform is refused.
 *   failure  a member with a wrong secret: its keys fail, the others work, both logs say
 *            why; a member stopped (SIGSTOP): only batches with its keys fail, within
 *            the timeout, and it serves again after SIGCONT; a member SIGKILLed and
 *            restarted comes back with its sync-durable rows; a table whose config
 *            differs on the owner is refused with the field named.
 *   config   [peers] mistakes exit 2 naming the problem.
 */
#ifdef DE_MINI_CRITERION
#include "mini_criterion.h" /* ThreadSanitizer build: see that header */
#else
#include <criterion/criterion.h>
#endif

/* the paths below are built from short fixed parts that fit; GCC cannot see that */
#pragma GCC diagnostic ignored "-Wformat-truncation"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "de_peer.h"
#include "dynemb.h"
#include "proto.h"
#include "daemon_util.h"

#define DIM 8
#define NKEYS 3000
#define TIMEOUT_MS 1500

struct node {
	char name[4];
	char sock[108];
	char log[100];
	char conf[100];
	char data[100];
	unsigned port;
	pid_t pid;
};

static char tdir[48];
static char secret[80], secret2[80];
static struct node nodes[4]; /* a, b, c (members), and r: the reference */
static struct de_peer_members members; /* the same list the daemons parse: to pick keys */

static unsigned free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
	socklen_t l = sizeof a;
	getsockname(fd, (struct sockaddr *)&a, &l);
	close(fd);
	return ntohs(a.sin_port);
}

static void write_file(const char *path, const char *text, mode_t mode)
{
	FILE *f = fopen(path, "w");
	cr_assert(f, "cannot write %s", path);
	fputs(text, f);
	fclose(f);
	chmod(path, mode);
}

/* nm members named a, b, c...; member i's secret is secret2 when it is odd_one. */
static void setup_nodes(unsigned nm, int odd_one)
{
	snprintf(tdir, sizeof tdir, "/tmp/de-peers-%d", (int)getpid());
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf %s && mkdir -p %s", tdir, tdir);
	cr_assert_eq(system(cmd), 0);
	snprintf(secret, sizeof secret, "%s/secret", tdir);
	snprintf(secret2, sizeof secret2, "%s/secret2", tdir);
	write_file(secret, "correct horse battery staple 1\n", 0600);
	write_file(secret2, "a different secret altogether\n", 0600);
	char list[256] = "";
	for (unsigned i = 0; i < 4; i++) {
		struct node *n = &nodes[i];
		memset(n, 0, sizeof *n);
		n->name[0] = (char)(i < 3 ? 'a' + i : 'r');
		n->name[1] = 0;
		snprintf(n->sock, sizeof n->sock, "%s/%s.sock", tdir, n->name);
		snprintf(n->log, sizeof n->log, "%s/%s.log", tdir, n->name);
		snprintf(n->conf, sizeof n->conf, "%s/%s.conf", tdir, n->name);
		snprintf(n->data, sizeof n->data, "%s/%s.data", tdir, n->name);
		mkdir(n->data, 0700);
		n->port = free_port();
		n->pid = -1;
		if (i < nm) {
			char e[40];
			snprintf(e, sizeof e, "%s%s=127.0.0.1:%u", i ? "," : "", n->name, n->port);
			strcat(list, e);
		}
	}
	char msg[200];
	cr_assert_eq(de_peer_members_parse(list, &members, msg, sizeof msg), 0, "%s", msg);
	for (unsigned i = 0; i < 4; i++) {
		char text[1400];
		if (i < nm)
			snprintf(text, sizeof text, "[peers]\nmembers = %s\nself = %s\nsecret_file = %s\n"
				 "timeout_ms = %u\nsharded = emb, dur, cfgx, smp\n", list, nodes[i].name,
				 (int)i == odd_one ? secret2 : secret, TIMEOUT_MS);
		else
			snprintf(text, sizeof text, "[server]\n");
		write_file(nodes[i].conf, text, 0644);
	}
}

static void start_node(struct node *n)
{
	const char *more[] = { "--config", n->conf, "--data-dir", n->data, "--workers", "1", NULL };
	const char *argv[40];
	daemon_argv(argv, 40, daemon_bin(), n->sock, "info", more, NULL);
	unlink(n->sock);
	n->pid = daemon_spawn(argv, SIGKILL, n->log);
	daemon_wait_listen(n->pid, n->sock, 15, n->log);
}

static void start_all(unsigned nm, int odd_one)
{
	setup_nodes(nm, odd_one);
	for (unsigned i = 0; i < nm; i++)
		start_node(&nodes[i]);
	start_node(&nodes[3]);
}

static void stop_all(void)
{
	for (unsigned i = 0; i < 4; i++)
		if (nodes[i].pid > 0) {
			kill(nodes[i].pid, SIGCONT);
			int st = daemon_terminate(nodes[i].pid, 10);
			nodes[i].pid = -1;
			if (!WIFEXITED(st) || WEXITSTATUS(st))
				daemon_show_log(nodes[i].log);
			else
				daemon_show_log_if_asked(nodes[i].log);
			cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0,
				  "member %s did not exit cleanly at SIGTERM (status 0x%x)", nodes[i].name,
				  st);
		}
	char cmd[100];
	snprintf(cmd, sizeof cmd, "rm -rf %s", tdir);
	if (system(cmd) != 0)
		cr_log_warn("could not remove %s", tdir);
}

static dynemb_client *connect_to(const struct node *n)
{
	dynemb_client *c = NULL;
	struct dynemb_connect_opts o = { .name = "test_peers", .timeout_ms = 20000 };
	int err = dynemb_connect(n->sock, &o, &c);
	cr_assert_eq(err, 0, "connect %s: %s", n->sock, dynemb_strerror(err));
	return c;
}

static void emb_spec(struct dynemb_table_spec *s, const char *name)
{
	memset(s, 0, sizeof *s);
	s->name = name;
	s->dim = DIM;
	s->init = DYNEMB_UNIFORM;
	s->init_a = -0.5f;
	s->init_b = 0.5f;
	s->seed = 1234;
	dynemb_optim_spec_defaults(DYNEMB_OPTIM_ADAGRAD, &s->optim);
	s->optim.lr = 0.05;
}

static int open_table(dynemb_client *c, const struct dynemb_table_spec *s)
{
	int h = -1;
	int err = dynemb_open(c, s, &h);
	cr_assert_eq(err, 0, "open %s: %s", s->name, dynemb_strerror(err));
	return h;
}

static uint64_t rng = 88172645463325252ull;
static uint64_t next_rand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

/* Keys of member `owner` (by the members' hash), or of any member when owner < 0. */
static void pick_keys(uint64_t *k, size_t n, int owner)
{
	for (size_t i = 0; i < n;) {
		uint64_t x = next_rand() >> 1;
		if (owner < 0 || (int)de_peer_owner(&members, x) == owner)
			k[i++] = x;
	}
}

static size_t log_count(const char *log, const char *needle)
{
	static char buf[1 << 20];
	daemon_slurp(log, buf, sizeof buf);
	size_t c = 0;
	for (const char *p = buf; (p = strstr(p, needle)); p++)
		c++;
	return c;
}

/* Read-only rows of keys through c (table h): into out, statuses into st. */
static void read_rows(dynemb_client *c, int h, const uint64_t *k, size_t n, float *out,
		      uint8_t *st)
{
	int err = dynemb_lookup(c, h, k, n, out, st, DYNEMB_READONLY, 0);
	cr_assert_eq(err, 0, "read-only lookup: %s", dynemb_strerror(err));
}

/* P(k) of one draw by the reference's sampler (kind, power) for each of keys[n]: its
 * expected counts of n draws without unique, over n. */
static void ref_prob(dynemb_client *cr, int hr, enum dynemb_sampler kind, const uint64_t *keys,
		     size_t n, double *p)
{
	static uint64_t drawn[1 << 14];
	static float te[1 << 14];
	cr_assert_leq(n, 1u << 14);
	struct dynemb_sample_spec sp = { .kind = kind, .num_sampled = 64, .seed = 5 };
	int err = dynemb_sample(cr, hr, &sp, keys, n, drawn, NULL, te, NULL);
	cr_assert_eq(err, 0, "reference sample: %s", dynemb_strerror(err));
	for (size_t i = 0; i < n; i++)
		p[i] = te[i] / 64.0;
}

static bool near(double a, double b)
{
	return fabs(a - b) <= 2e-4 * fabs(b) + 1e-12;
}

/* Sampling a sharded table through member a against the single host's sampler, on a
 * table of its own whose keys are skewed over the members (a 600 keys used 4 times, b
 * 1200 used 1 to 4 times, c 2400 used once, then 300 of c's erased): every
 * draw a live key; its expected count (and the live positives') the single host's P(k)
 * under the formula of de_learn.h; the accidental hits; unique; and, over 20,000 draws,
 * each member's share of the draws against the sum of the single host's P over that
 * member's keys; log-uniform refused by name. */
static void check_sampling(dynemb_client *ca, dynemb_client *cr)
{
	enum { NS = 2000, NP = 40, NA = 600, NB = 1200, NC = 2400, NL = NA + NB + NC - 300 };
	static uint64_t all[NA + NB + NC], sk[NS];
	static uint64_t *live = all + 300; /* c's first 300 are erased */
	static double pl[NL], ps[NS], pp[NP];
	static float se[NS], te[NP], rows[(NA + NB + NC) * DIM];
	static uint8_t acc[NS];
	struct dynemb_table_spec spec;
	emb_spec(&spec, "smp");
	int ha = open_table(ca, &spec), hr = open_table(cr, &spec);
	pick_keys(all, NC, 2);
	pick_keys(all + NC, NA, 0);
	pick_keys(all + NC + NA, NB, 1);
	/* uses: c's keys once, a's 4 times, b's 1 to 4 times by a hash of i (unigram's
	 * shares are not uniform's) */
	for (int use = 0; use < 4; use++) {
		size_t n = 0;
		static uint64_t batch[NA + NB + NC];
		for (size_t i = 0; i < NA + NB + NC; i++)
			if (use == 0 || (i >= NC && i < NC + NA) ||
			    (i >= NC + NA && (i * 2654435761u) % 4 >= (size_t)use))
				batch[n++] = all[i];
		cr_assert_eq(dynemb_lookup(ca, ha, batch, n, rows, NULL, 0, 1), 0);
		cr_assert_eq(dynemb_lookup(cr, hr, batch, n, rows, NULL, 0, 1), 0);
	}
	size_t er = 0;
	cr_assert_eq(dynemb_erase(ca, ha, all, 300, &er), 0);
	cr_assert_eq(er, 300);
	cr_assert_eq(dynemb_erase(cr, hr, all, 300, &er), 0);
	struct dynemb_stats rst;
	cr_assert_eq(dynemb_stats(cr, hr, &rst), 0);
	cr_assert_eq(rst.keys, NL);
	const size_t nl = NL;
	const uint64_t gone0 = all[0];
	uint64_t pos[NP];
	for (size_t j = 0; j < NP; j++) /* live ones, an erased one and key 0 */
		pos[j] = j == 0 ? 0 : j == 1 ? gone0 : live[(j * 53) % nl];
	for (int kind = 0; kind < 2; kind++) {
		enum dynemb_sampler sk_kind = kind ? DYNEMB_SAMPLER_UNIGRAM : DYNEMB_SAMPLER_UNIFORM;
		const char *kn = kind ? "unigram" : "uniform";
		for (int uniq = 0; uniq < 2; uniq++) {
			struct dynemb_sample_spec sp = { .kind = sk_kind, .num_sampled = NS,
							 .unique = uniq, .seed = 77 + (uint64_t)uniq };
			struct dynemb_sample_info info;
			int err = dynemb_sample_ex(ca, ha, &sp, pos, NP, sk, se, te, acc, &info);
			cr_assert_eq(err, 0, "%s sample (unique %d) of a sharded table: %s", kn, uniq,
				     dynemb_strerror(err));
			cr_assert_eq(info.population, rst.keys,
				     "population %llu, the single host has %llu keys",
				     (unsigned long long)info.population, (unsigned long long)rst.keys);
			if (!kind)
				cr_assert_eq(info.weight, (double)rst.keys);
			uint64_t T = info.num_tries;
			cr_assert(uniq ? T >= NS : T == NS, "%llu tries", (unsigned long long)T);
			ref_prob(cr, hr, sk_kind, sk, NS, ps);
			ref_prob(cr, hr, sk_kind, pos, NP, pp);
			for (size_t i = 0; i < NS; i++) {
				cr_assert_gt(ps[i], 0, "%s draw %zu: key %llu is not one the single host "
					     "can draw", kn, i, (unsigned long long)sk[i]);
				double want = T == NS ? NS * ps[i] : -expm1((double)T * log1p(-ps[i]));
				cr_assert(near(se[i], want), "%s (unique %d) draw %zu: expected %.7g, the "
					  "single host's P gives %.7g", kn, uniq, i, se[i], want);
				bool hit = false;
				for (size_t j = 0; j < NP && !hit; j++)
					hit = pos[j] && pos[j] == sk[i];
				cr_assert_eq(acc[i], hit, "%s draw %zu: accidental %u", kn, i, acc[i]);
				for (size_t j = 0; uniq && j < i; j++)
					cr_assert_neq(sk[j], sk[i], "unique draws %zu and %zu repeat", j, i);
			}
			for (size_t j = 0; j < NP; j++) {
				/* key 0: 0; an erased key: the floor, which is the single host's for
				 * uniform (1/L) only */
				if (j == 1 && kind) {
					cr_assert(te[j] > 0 && isfinite(te[j]));
					continue;
				}
				double want = T == NS ? NS * pp[j] : -expm1((double)T * log1p(-pp[j]));
				cr_assert(near(te[j], want), "%s (unique %d) positive %zu: expected %.7g, "
					  "the single host's P gives %.7g", kn, uniq, j, te[j], want);
			}
		}
		/* the members' shares of 20,000 draws: within 5 standard deviations of the
		 * single host's P summed over each member's keys */
		double share[3] = { 0 };
		ref_prob(cr, hr, sk_kind, live, nl, pl);
		for (size_t i = 0; i < nl; i++)
			share[de_peer_owner(&members, live[i])] += pl[i];
		cr_assert(fabs(share[0] + share[1] + share[2] - 1) < 1e-3, "%s: P adds up to %.6f over "
			  "the keys it can draw", kn, share[0] + share[1] + share[2]);
		unsigned long cnt[3] = { 0 };
		for (int call = 0; call < 10; call++) {
			struct dynemb_sample_spec sp = { .kind = sk_kind, .num_sampled = NS,
							 .seed = 1000 + (uint64_t)call };
			cr_assert_eq(dynemb_sample(ca, ha, &sp, NULL, 0, sk, NULL, NULL, NULL), 0);
			for (size_t i = 0; i < NS; i++)
				cnt[de_peer_owner(&members, sk[i])]++;
		}
		for (unsigned m = 0; m < 3; m++)
			cr_log_info("%s: member %s drew %lu of %d (the single host's P: %.1f)", kn,
				    nodes[m].name, cnt[m], 10 * NS, 10.0 * NS * share[m]);
		for (unsigned m = 0; m < 3; m++) {
			double n = 10.0 * NS, mean = n * share[m], sd = sqrt(n * share[m] * (1 - share[m]));
			cr_assert(fabs((double)cnt[m] - mean) <= 5 * sd + 1, "%s: member %s drew %lu of "
				  "%.0f draws, the single host's P says %.1f +- %.1f", kn, nodes[m].name,
				  cnt[m], n, mean, sd);
		}
	}
	/* member c emptied: its weight is 0 (it answers -ENOENT), draws come from a and b
	 * only, and a positive c owns gets one host's floor (uniform: 1 / L), not 0 */
	cr_assert_eq(dynemb_erase(ca, ha, all + 300, NC - 300, &er), 0);
	cr_assert_eq(dynemb_erase(cr, hr, all + 300, NC - 300, &er), 0);
	{
		struct dynemb_sample_spec sp = { .kind = DYNEMB_SAMPLER_UNIFORM, .num_sampled = NS,
						 .seed = 3 };
		uint64_t cpos[2] = { all[400], all[NC] }; /* c's (erased), a's */
		float cte[2];
		cr_assert_eq(dynemb_sample(ca, ha, &sp, cpos, 2, sk, se, cte, acc), 0);
		double cp[2];
		ref_prob(cr, hr, DYNEMB_SAMPLER_UNIFORM, cpos, 2, cp);
		for (size_t i = 0; i < NS; i++)
			cr_assert_neq(de_peer_owner(&members, sk[i]), 2u, "a draw from emptied c");
		for (int j = 0; j < 2; j++)
			cr_assert(cte[j] > 0 && near(cte[j], NS * cp[j]), "positive %d: expected %.7g, "
				  "the single host's %.7g", j, cte[j], NS * cp[j]);
	}

	/* log-uniform ranks the keys of one table: refused on a sharded one, by name */
	struct dynemb_sample_spec lu = { .kind = DYNEMB_SAMPLER_LOG_UNIFORM, .num_sampled = 10 };
	cr_assert_eq(dynemb_sample(ca, ha, &lu, NULL, 0, sk, NULL, NULL, NULL), -EOPNOTSUPP);
	cr_assert_geq(log_count(nodes[0].log, "log-uniform sampling ranks the keys of one table"),
		      1);
}

TestSuite(shard, .timeout = 240);
TestSuite(failure, .timeout = 240);
TestSuite(config, .timeout = 120);

Test(shard, matches_single_host)
{
	start_all(3, -1);
	dynemb_client *ca = connect_to(&nodes[0]), *cr = connect_to(&nodes[3]);
	struct dynemb_table_spec s;
	emb_spec(&s, "emb");
	int ha = open_table(ca, &s), hr = open_table(cr, &s);

	static uint64_t keys[NKEYS];
	pick_keys(keys, NKEYS, -1);
	for (size_t i = 0; i < NKEYS; i += 97) /* duplicates, and key 0 ("no feature") */
		keys[i] = keys[(i * 7 + 3) % NKEYS];
	keys[5] = 0;
	static float va[NKEYS * DIM], vr[NKEYS * DIM], g[NKEYS * DIM];
	static uint8_t sa[NKEYS], sr[NKEYS];
	/* creating lookups: the rows and the CREATED / FOUND statuses of one host */
	int e1 = dynemb_lookup(ca, ha, keys, NKEYS, va, sa, 0, 1);
	int e2 = dynemb_lookup(cr, hr, keys, NKEYS, vr, sr, 0, 1);
	cr_assert_eq(e1, 0, "sharded lookup: %s", dynemb_strerror(e1));
	cr_assert_eq(e2, 0);
	cr_assert_eq(memcmp(sa, sr, NKEYS), 0, "statuses differ from the single host");
	cr_assert_eq(memcmp(va, vr, sizeof va), 0, "rows differ from the single host");
	/* gradient steps (duplicate keys summed by the owner), one with its own lr */
	for (int step = 2; step <= 4; step++) {
		for (size_t i = 0; i < NKEYS * DIM; i++)
			g[i] = (float)((int)(next_rand() % 2001) - 1000) / 1000.0f;
		double lr = step == 3 ? 0.2 : 0;
		size_t aa = 0, ar = 0;
		e1 = dynemb_apply_gradients(ca, ha, keys, NKEYS, g, (uint64_t)step, lr, &aa);
		e2 = dynemb_apply_gradients(cr, hr, keys, NKEYS, g, (uint64_t)step, lr, &ar);
		cr_assert_eq(e1, 0, "sharded gradients: %s", dynemb_strerror(e1));
		cr_assert_eq(e2, 0);
		cr_assert_eq(aa, ar, "keys stepped: %zu sharded, %zu single host", aa, ar);
	}
	/* updates of a slice, then erases of another */
	for (size_t i = 0; i < 500 * DIM; i++)
		g[i] = (float)i * 0.25f;
	size_t ca1 = 0, cr1 = 0;
	uint64_t fresh[500];
	memcpy(fresh, keys + 1000, 250 * sizeof *fresh);
	pick_keys(fresh + 250, 250, -1); /* new keys: created by the update */
	cr_assert_eq(dynemb_update(ca, ha, fresh, 500, g, 5, &ca1), 0);
	cr_assert_eq(dynemb_update(cr, hr, fresh, 500, g, 5, &cr1), 0);
	cr_assert_eq(ca1, cr1, "created by the update: %zu sharded, %zu single host", ca1, cr1);
	size_t ea = 0, er = 0;
	cr_assert_eq(dynemb_erase(ca, ha, keys + 2000, 300, &ea), 0);
	cr_assert_eq(dynemb_erase(cr, hr, keys + 2000, 300, &er), 0);
	cr_assert_eq(ea, er, "erased: %zu sharded, %zu single host", ea, er);
	cr_assert_gt(ea, 250);

	/* sampling over the members: the single host's distribution */
	check_sampling(ca, cr);

	/* every row, read back read-only through each member, is the single host's */
	static uint64_t all[NKEYS + 500];
	memcpy(all, keys, sizeof keys);
	memcpy(all + NKEYS, fresh, sizeof fresh);
	static float want[(NKEYS + 500) * DIM], got[(NKEYS + 500) * DIM];
	static uint8_t swant[NKEYS + 500], sgot[NKEYS + 500];
	read_rows(cr, hr, all, NKEYS + 500, want, swant);
	for (unsigned m = 0; m < 3; m++) {
		dynemb_client *c = m ? connect_to(&nodes[m]) : ca;
		int h = m ? open_table(c, &s) : ha;
		read_rows(c, h, all, NKEYS + 500, got, sgot);
		cr_assert_eq(memcmp(sgot, swant, sizeof swant), 0,
			     "member %s: statuses differ from the single host", nodes[m].name);
		for (size_t i = 0; i < (NKEYS + 500) * DIM; i++)
			cr_assert_eq(memcmp(&got[i], &want[i], 4), 0,
				     "member %s: key %zu col %zu: %.9g, single host %.9g",
				     nodes[m].name, i / DIM, i % DIM, got[i], want[i]);
		if (m)
			dynemb_close(c);
	}
	/* top-k over every member, merged: the single host's keys and scores */
	for (int metric = 0; metric < 2; metric++) {
		enum { NQ = 3, K = 20 };
		float qv[NQ * DIM];
		for (size_t i = 0; i < NQ * DIM; i++)
			qv[i] = (float)((int)(next_rand() % 2001) - 1000) / 1000.0f;
		uint64_t ka[NQ * K], kr[NQ * K];
		float sa2[NQ * K], sr2[NQ * K];
		uint32_t fa[NQ], fr[NQ];
		e1 = dynemb_topk(ca, ha, qv, NQ, K, (enum dynemb_metric)metric, ka, sa2, fa);
		e2 = dynemb_topk(cr, hr, qv, NQ, K, (enum dynemb_metric)metric, kr, sr2, fr);
		cr_assert_eq(e1, 0, "sharded top-k: %s", dynemb_strerror(e1));
		cr_assert_eq(e2, 0);
		cr_assert_eq(memcmp(fa, fr, sizeof fa), 0, "found differs");
		cr_assert_eq(memcmp(ka, kr, sizeof ka), 0, "top-k keys differ from the single host");
		cr_assert_eq(memcmp(sa2, sr2, sizeof sa2), 0, "top-k scores differ");
	}
	/* each member holds its share; the shares add up to the single host's keys */
	struct dynemb_stats st;
	cr_assert_eq(dynemb_stats(cr, hr, &st), 0);
	uint64_t total = 0;
	for (unsigned m = 0; m < 3; m++) {
		dynemb_client *c = connect_to(&nodes[m]);
		struct dynemb_stats sm;
		cr_assert_eq(dynemb_stats_by_name(c, "emb", &sm), 0);
		cr_log_info("member %s holds %llu of %llu keys", nodes[m].name,
			    (unsigned long long)sm.keys, (unsigned long long)st.keys);
		cr_assert_gt(sm.keys, st.keys / 5, "member %s holds %llu of %llu keys",
			     nodes[m].name, (unsigned long long)sm.keys, (unsigned long long)st.keys);
		total += sm.keys;
		dynemb_close(c);
	}
	cr_assert_eq(total, st.keys, "members hold %llu keys, the single host %llu",
		     (unsigned long long)total, (unsigned long long)st.keys);
	dynemb_close(ca);
	dynemb_close(cr);
	stop_all();
}

Test(failure, wrong_secret_refused)
{
	start_all(3, 2); /* c has another secret */
	dynemb_client *ca = connect_to(&nodes[0]);
	struct dynemb_table_spec s;
	emb_spec(&s, "emb");
	int ha = open_table(ca, &s);
	uint64_t kc[64], kb[64];
	pick_keys(kc, 64, 2);
	pick_keys(kb, 64, 1);
	static float v[64 * DIM];
	int err = dynemb_lookup(ca, ha, kc, 64, v, NULL, 0, 1);
	cr_assert_eq(err, -EACCES, "a lookup of c's keys: %d (%s), not -EACCES", err,
		     dynemb_strerror(err));
	err = dynemb_lookup(ca, ha, kb, 64, v, NULL, 0, 1);
	cr_assert_eq(err, 0, "b's keys: %s", dynemb_strerror(err));
	usleep(200000);
	cr_assert_geq(log_count(nodes[0].log, "authentication failed"), 1,
		      "a's log does not say why c was refused");
	cr_assert_geq(log_count(nodes[2].log, "authentication failed"), 1,
		      "c's log does not say why a was refused");
	dynemb_close(ca);
	stop_all();
}

Test(failure, stopped_member_fails_only_its_keys)
{
	start_all(3, -1);
	dynemb_client *ca = connect_to(&nodes[0]);
	struct dynemb_table_spec s;
	emb_spec(&s, "emb");
	int ha = open_table(ca, &s);
	uint64_t kc[64], kab[64];
	pick_keys(kc, 64, 2);
	for (unsigned i = 0; i < 64; i++) {
		pick_keys(&kab[i], 1, (int)(i % 2));
	}
	static float v[64 * DIM];
	cr_assert_eq(dynemb_lookup(ca, ha, kc, 64, v, NULL, 0, 1), 0);
	cr_assert_eq(dynemb_lookup(ca, ha, kab, 64, v, NULL, 0, 1), 0);
	kill(nodes[2].pid, SIGSTOP);
	double t0 = now_s();
	int err = dynemb_lookup(ca, ha, kc, 64, v, NULL, DYNEMB_READONLY, 0);
	double dt = now_s() - t0;
	cr_assert_eq(err, -ETIMEDOUT, "c's keys with c stopped: %d (%s)", err, dynemb_strerror(err));
	cr_assert_geq(dt, TIMEOUT_MS / 1000.0 * 0.8, "failed after %.3f s, before the timeout", dt);
	cr_assert_lt(dt, TIMEOUT_MS / 1000.0 + 5, "failed after %.3f s", dt);
	err = dynemb_lookup(ca, ha, kab, 64, v, NULL, DYNEMB_READONLY, 0);
	cr_assert_eq(err, 0, "a's and b's keys with c stopped: %s", dynemb_strerror(err));
	kill(nodes[2].pid, SIGCONT);
	/* back within the backoff (at most 2 s) plus a reconnect */
	double end = now_s() + 15;
	while ((err = dynemb_lookup(ca, ha, kc, 64, v, NULL, DYNEMB_READONLY, 0)) != 0 &&
	       now_s() < end)
		usleep(100000);
	cr_assert_eq(err, 0, "c's keys after SIGCONT: %s", dynemb_strerror(err));
	cr_assert_geq(log_count(nodes[0].log, "peer c"), 1, "a's log does not name c");
	dynemb_close(ca);
	stop_all();
}

Test(failure, killed_member_comes_back_with_its_rows)
{
	start_all(3, -1);
	dynemb_client *ca = connect_to(&nodes[0]);
	struct dynemb_table_spec s;
	emb_spec(&s, "dur");
	s.durability.mode = DYNEMB_DURABLE_SYNC;
	int ha = open_table(ca, &s);
	uint64_t k[300];
	pick_keys(k, 300, -1);
	static float v[300 * DIM], got[300 * DIM];
	for (size_t i = 0; i < 300 * DIM; i++)
		v[i] = (float)(i % 977) * 0.5f;
	cr_assert_eq(dynemb_update(ca, ha, k, 300, v, 1, NULL), 0);
	kill(nodes[2].pid, SIGKILL);
	waitpid(nodes[2].pid, NULL, 0);
	nodes[2].pid = -1;
	uint64_t kc[16];
	pick_keys(kc, 16, 2);
	int err = dynemb_lookup(ca, ha, kc, 16, got, NULL, DYNEMB_READONLY, 0);
	cr_assert_lt(err, 0, "c's keys with c dead: %d", err);
	start_node(&nodes[2]);
	double end = now_s() + 15;
	while ((err = dynemb_lookup(ca, ha, k, 300, got, NULL, DYNEMB_READONLY, 0)) != 0 &&
	       now_s() < end)
		usleep(100000);
	cr_assert_eq(err, 0, "after c's restart: %s", dynemb_strerror(err));
	cr_assert_eq(memcmp(got, v, sizeof v), 0, "rows lost across c's SIGKILL");
	dynemb_close(ca);
	stop_all();
}

Test(failure, config_mismatch_named)
{
	start_all(3, -1);
	struct dynemb_table_spec s;
	emb_spec(&s, "cfgx");
	dynemb_client *cb = connect_to(&nodes[1]);
	struct dynemb_table_spec s2 = s;
	s2.optim.lr = 0.5; /* b's table differs */
	open_table(cb, &s2);
	dynemb_client *ca = connect_to(&nodes[0]);
	int ha = open_table(ca, &s);
	uint64_t kb[8];
	pick_keys(kb, 8, 1);
	static float v[8 * DIM];
	int err = dynemb_lookup(ca, ha, kb, 8, v, NULL, 0, 1);
	cr_assert_eq(err, -EEXIST, "b's keys of a table b has with another config: %d", err);
	usleep(100000);
	cr_assert_geq(log_count(nodes[0].log, "refused table 'cfgx'"), 1);
	cr_assert_geq(log_count(nodes[0].log, "lr"), 1, "a's log does not name the field");
	dynemb_close(ca);
	dynemb_close(cb);
	stop_all();
}

/* A TCP connection to member n's peer port. */
static int tcp_to(const struct node *n)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)n->port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0, "connect to %s", n->name);
	return fd;
}

/* The peer closes fd within 5 s (what it still sends before is read and dropped). */
static void assert_closed(int fd, const char *what)
{
	struct timeval tv = { .tv_sec = 5 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	char b[4096];
	ssize_t r;
	while ((r = recv(fd, b, sizeof b, 0)) > 0)
		;
	cr_assert(r == 0 || (r < 0 && errno == ECONNRESET), "%s: the connection stayed open (%s)",
		  what, r < 0 ? strerror(errno) : "");
	close(fd);
}

static void send_bytes(int fd, const void *b, size_t n)
{
	struct iovec v = { (void *)b, n };
	cr_assert_eq(de_peer_write_full(fd, &v, 1, 5000), 0);
}

/* An authenticated connection to b as member `as` (the test holds the secret). */
static int authed_to_b(const char *as)
{
	int fd = tcp_to(&nodes[1]);
	struct de_peer_secret sec;
	char msg[256], who[DE_PEER_NAME_MAX];
	cr_assert_eq(de_peer_secret_load(secret, &sec, msg, sizeof msg), 0, "%s", msg);
	int err = de_peer_auth(fd, &sec, true, as, "b", 5000, who, sizeof who, msg, sizeof msg);
	cr_assert_eq(err, 0, "handshake with b: %s", msg);
	return fd;
}

/* A forwarded lookup through a still works: b's keys, created. */
static void still_serving(dynemb_client *ca, int ha, const char *after)
{
	uint64_t kb[32];
	pick_keys(kb, 32, 1);
	static float v[32 * DIM];
	int err = dynemb_lookup(ca, ha, kb, 32, v, NULL, 0, 1);
	cr_assert_eq(err, 0, "a's lookup of b's keys after %s: %s", after, dynemb_strerror(err));
}

Test(failure, hostile_frames_close_only_their_connection)
{
	start_all(3, -1);
	dynemb_client *ca = connect_to(&nodes[0]);
	struct dynemb_table_spec s;
	emb_spec(&s, "emb");
	int ha = open_table(ca, &s);
	still_serving(ca, ha, "start");

	/* no handshake: a batch frame straight away is not a HELLO */
	int fd = tcp_to(&nodes[1]);
	struct de_peer_hdr h;
	de_peer_hdr_init(&h, DE_PEER_LOOKUP, 1, 32, 0);
	unsigned char body[32] = { 0 };
	body[16] = 1; /* n = 1 */
	send_bytes(fd, &h, sizeof h);
	send_bytes(fd, body, sizeof body);
	assert_closed(fd, "a frame without the handshake");
	still_serving(ca, ha, "an unauthenticated frame");

	/* authenticated, but not a member's name */
	fd = tcp_to(&nodes[1]);
	struct de_peer_secret sec;
	char msg[256], who[DE_PEER_NAME_MAX];
	cr_assert_eq(de_peer_secret_load(secret, &sec, msg, sizeof msg), 0, "%s", msg);
	de_peer_auth(fd, &sec, true, "intruder", "b", 5000, who, sizeof who, msg, sizeof msg);
	assert_closed(fd, "a non-member");

	/* a bad magic */
	fd = authed_to_b("a");
	de_peer_hdr_init(&h, DE_PEER_PING, 1, 0, 0);
	h.magic ^= 1;
	send_bytes(fd, &h, sizeof h);
	assert_closed(fd, "a bad magic");
	still_serving(ca, ha, "a bad magic");

	/* a batch on a handle never opened */
	fd = authed_to_b("a");
	de_peer_hdr_init(&h, DE_PEER_LOOKUP, 2, 32, 0);
	memset(body, 0, sizeof body);
	body[16] = 1;
	send_bytes(fd, &h, sizeof h);
	send_bytes(fd, body, sizeof body);
	assert_closed(fd, "an unknown handle");

	/* OPEN, then a LOOKUP whose length does not match its key count */
	fd = authed_to_b("a");
	unsigned char open[DE_PEER_OPEN_BYTES] = { 0 };
	strcpy((char *)open, "emb");
	struct de_wire_table_config wc = { .dim = DIM, .init = DYNEMB_UNIFORM, .init_a = -0.5f,
					   .init_b = 0.5f, .seed = 1234 };
	memcpy(open + DE_NAME_MAX, &wc, sizeof wc);
	de_peer_hdr_init(&h, DE_PEER_OPEN, 3, sizeof open, 0);
	send_bytes(fd, &h, sizeof h);
	send_bytes(fd, open, sizeof open);
	struct de_peer_hdr rh;
	cr_assert_eq(de_peer_read_full(fd, &rh, sizeof rh, 5000), 0);
	cr_assert_eq(rh.type, DE_PEER_OPEN | DE_PEER_REPLY);
	static char rb[DE_PEER_MSG_MAX + 8];
	cr_assert_leq(rh.len, sizeof rb);
	cr_assert_eq(de_peer_read_full(fd, rb, rh.len, 5000), 0);
	/* the config differs from a's table (no optimizer): b refuses it, naming why */
	cr_assert_lt(rh.status, 0, "b opened a table whose config differs from its own");
	rb[rh.len] = 0;
	cr_assert(strstr(rb, "emb"), "b's refusal does not name the table: %s", rb);
	/* a table nobody has: opened with this config, handle 0 */
	memset(open, 0, DE_NAME_MAX);
	strcpy((char *)open, "cfgx");
	de_peer_hdr_init(&h, DE_PEER_OPEN, 4, sizeof open, 0);
	send_bytes(fd, &h, sizeof h);
	send_bytes(fd, open, sizeof open);
	cr_assert_eq(de_peer_read_full(fd, &rh, sizeof rh, 5000), 0);
	cr_assert_eq(rh.status, 0, "OPEN of cfgx: %d", rh.status);
	cr_assert_eq(rh.len, 8);
	cr_assert_eq(de_peer_read_full(fd, rb, 8, 5000), 0);
	de_peer_hdr_init(&h, DE_PEER_LOOKUP, 5, 24 + 8 * 3, 0);
	unsigned char lk[24 + 8 * 3] = { 0 };
	lk[16] = 2; /* n = 2, but three keys' bytes */
	send_bytes(fd, &h, sizeof h);
	send_bytes(fd, lk, sizeof lk);
	assert_closed(fd, "a length that does not match");
	still_serving(ca, ha, "a malformed batch");
	usleep(200000);
	cr_assert_geq(log_count(nodes[1].log, "peer connection from 127.0.0.1"), 2,
		      "b's log does not name the refused connections");
	cr_assert_geq(log_count(nodes[1].log, "frame magic"), 1, "b's log: the bad magic");
	cr_assert_geq(log_count(nodes[1].log, "never opened"), 1, "b's log: the unknown handle");
	cr_assert_geq(log_count(nodes[1].log, "keys at dim"), 1, "b's log: the bad length");
	dynemb_close(ca);
	stop_all();
}

/* dynembd with conf: exits 2 and stderr has want. */
static void bad_config(const char *text, const char *want)
{
	setup_nodes(3, -1);
	write_file(nodes[0].conf, text, 0644);
	const char *more[] = { "--config", nodes[0].conf, NULL };
	const char *argv[40];
	daemon_argv(argv, 40, daemon_bin(), nodes[0].sock, "info", more, NULL);
	unlink(nodes[0].log);
	pid_t pid = daemon_spawn(argv, SIGKILL, nodes[0].log);
	int st = 0;
	double end = now_s() + 10;
	while (waitpid(pid, &st, WNOHANG) == 0) {
		if (now_s() > end) {
			kill(pid, SIGKILL);
			cr_assert_fail("dynembd ran with a bad [peers]: %s", text);
		}
		usleep(5000);
	}
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2, "exit status %d for %s", st, text);
	cr_assert_geq(log_count(nodes[0].log, want), 1, "stderr does not say '%s'", want);
}

Test(config, peers_mistakes_exit_2)
{
	char t[600];
	bad_config("[peers]\nmembers = a=127.0.0.1:7001,b=127.0.0.1:7002\n", "self is not");
	bad_config("[peers]\nmembers = a=127.0.0.1:7001\nself = z\n", "not one of the 1 members");
	bad_config("[peers]\nmembers = a=127.0.0.1:7001\nself = a\n", "secret_file is not");
	bad_config("[peers]\nself = a\n", "members is empty");
	bad_config("[peers]\nmembers = a=127.0.0.1:70001\n", "a=127.0.0.1:70001");
	bad_config("[peers]\ntimeout_ms = 0\n", "timeout_ms");
	bad_config("[peers]\nbogus = 1\n", "unknown key 'bogus' in [peers]");
	snprintf(t, sizeof t, "[peers]\nmembers = a=127.0.0.1:7001\nself = a\nsecret_file = %s\n"
		 "[server]\nmax_batch = 100000\n", secret);
	bad_config(t, "max_batch");
	/* a secret others can read: the daemon does not start */
	chmod(secret, 0644);
	snprintf(t, sizeof t, "[peers]\nmembers = a=127.0.0.1:%u\nself = a\nsecret_file = %s\n",
		 free_port(), secret);
	setup_nodes(3, -1);
	chmod(secret, 0644);
	write_file(nodes[0].conf, t, 0644);
	const char *more[] = { "--config", nodes[0].conf, NULL };
	const char *argv[40];
	daemon_argv(argv, 40, daemon_bin(), nodes[0].sock, "info", more, NULL);
	pid_t pid = daemon_spawn(argv, SIGKILL, nodes[0].log);
	int st = 0;
	waitpid(pid, &st, 0);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) != 0, "started with a 0644 secret");
	cr_assert_geq(log_count(nodes[0].log, "chmod 600"), 1, "the log does not say chmod 600");
	stop_all();
}
