/*
 * bench_peers.c — `dynemb-bench peers`: one table sharded over three dynembd members on
 * loopback TCP ([peers], docs/peers.md), reached by one client through member a's socket
 * only, against a 3-node Redis Cluster serving the same rows, in one run.
 *
 * The process tree. The bench process (pinned to CPU 0) is the one client thread. It
 * forks and execs three dynembd members a, b, c (--workers 1 --numa-node none, not
 * pinned), each with its own unix socket, data directory and config file:
 *     [peers]
 *     members = a=127.0.0.1:PA, b=127.0.0.1:PB, c=127.0.0.1:PC
 *     self = a            (b, c)
 *     secret_file = DIR/secret   (mode 0600)
 *     listen = 127.0.0.1:PA      (PB, PC)
 *     sharded = peers_bench
 * and, unless --redis-cluster none, three redis-server (cluster-enabled, no persistence,
 * cluster-config-file in DIR) joined by `redis-cli --cluster create ... --cluster-replicas
 * 0 --cluster-yes`. Every child gets PR_SET_PDEATHSIG and is stopped with SIGTERM (SIGKILL
 * after 10 s) before cmd_peers returns; logs, configs and data go to a private mkdtemp
 * directory DIR, removed at the end (a log's tail is printed when its server fails).
 *
 * The phases, in order:
 *   1. dynembd: connect to a (retrying for 10 s while the socket appears), open the table
 *      (int64 keys, dim 64, uniform init), fill N keys with dynemb_update in batches of
 *      4096 (row k: first float = the key's low 24 bits, the tag every read checks). The
 *      first batch is retried for 10 s while b and c may not listen yet.
 *   2. The owners: the same member list parsed here with libdepeer (de_peer_members_parse)
 *      and de_peer_owners of every key: each member's share must be what its own stats say
 *      it holds (an independent check of the classification).
 *   3. Lookups through the ring (dynemb_lookup without DYNEMB_READONLY: a remote key cannot
 *      be served zero-copy), batches of 4096 existing keys, for --seconds each, three
 *      mixes: all owned by a (local), half a's and half b's or c's (alternating in the
 *      batch), all b's or c's (remote). Keys drawn uniformly (with repeats) from the keys
 *      of the mix into a pool of 256 batches before timing; one untimed pass (at most S/4)
 *      first. Each call is timed alone (per-batch p50/p99); every row of every batch is
 *      checked (status FOUND, tag): a wrong one fails the run with exit 1.
 *   4. Wire bytes per key: (a) from the frame layout (src/peer/wire.c) of one remote
 *      LOOKUP: request (header, 24 fixed bytes, 8-byte keys) + reply (header, 16 bytes,
 *      statuses padded to 8, rows), divided by its keys, against the payload (8-byte key +
 *      4 * dim row); (b) measured: lo's rx bytes (/proc/net/dev) over the timed all-remote
 *      phase divided by the keys looked up in it, TCP/IP headers and ACKs included.
 *   5. Redis Cluster: the same N rows (256-byte values) under keys "{T}" + the 8 raw key
 *      bytes, T = (key >> 1) % tags in decimal, so that every group of one tag has one slot
 *      (CRC16-XMODEM of T, as Redis computes it; checked against CLUSTER KEYSLOT) and MGET
 *      works; the slot -> node map from CLUSTER NODES. A batch of 4096 uniform keys is
 *      served as a TFRA-style client would: grouped by node and tag, one MGET per group,
 *      every group of every node written before any reply is read; every value checked.
 * Figures: the three mixes, wire bytes, Redis, and the goals (met / NOT met). --json
 * prints one JSON object on stdout; the table then goes to stderr.
 *
 * Bounded loops: every wait has a deadline (server start 10 s, cluster create and
 * cluster_state:ok 30 s each, stop 10 s + SIGKILL), every timed loop its clock, every
 * socket a 10 s SO_RCVTIMEO / SO_SNDTIMEO, and every read loop makes progress or fails.
 *
 * Ownership: everything is created by cmd_peers (through struct run) and freed in
 * run_free, on success and on every error path.
 */
#include "bench_util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "de_peer.h"
#include "dynemb.h"

#define DIM 64
#define ROW_BYTES (DIM * 4)
#define BATCH 4096
#define NMEM 3
#define POOL_BATCHES 256u          /* batches per mix, drawn before timing */
#define MAX_SAMPLES (1u << 20)     /* per-batch latencies kept per mix */
#define TABLE "peers_bench"
#define CLIENT_CPU 0
#define RBUF (4u << 20)            /* a Redis connection's reader */
#define REDIS_TAGS 1024u
#define CLUSTER_WAIT_MS 30000
#define RETRY_MS 10000             /* the first fill batch while the members come up */
#define KEY_MAX 32                 /* "{T}" + 8 key bytes */

enum { MIX_LOCAL = 0, MIX_HALF = 1, MIX_REMOTE = 2, NMIX = 3 };
static const char *const mix_name[NMIX] = { "local", "half_remote", "remote" };
static const char *const mix_human[NMIX] = { "all local (a's keys)",
					     "half local, half remote",
					     "all remote (b's, c's)" };

struct opts {
	uint64_t keys;
	double seconds;
	bool json;
	const char *redis;  /* redis-server binary; NULL: skip */
	bool redis_none;    /* --redis-cluster none */
	unsigned tags;
};

struct mix_fig {
	double rows_per_s, p50_ns, p99_ns;
	uint64_t rows;
};

struct figures {
	struct mix_fig mix[NMIX];
	double fill_rows_per_s;
	uint64_t owned[NMEM];        /* keys per owner, by de_peer_owners */
	uint64_t lo_rx_bytes;        /* lo's rx bytes over the timed all-remote phase */
	uint64_t lo_remote_keys;     /* keys looked up in it */
	double wire_per_key, wire_per_key_sent, payload_per_key, measured_per_key;
	uint32_t frame_keys_sent;    /* keys of one remote frame as the client's chunks go */
	bool have_redis;
	double redis_rows_per_s, redis_load_rows_per_s, redis_mgets_per_batch;
	char redis_note[200];
};

struct member {
	char name[2];
	unsigned port;
	char sock[128], log[128], conf[128], data[128];
	pid_t pid;
};

struct rnode {
	unsigned port;
	char log[128];
	pid_t pid;
	struct resp rr;
	char *wbuf;
	unsigned ntags, *tags;       /* the tags whose slot this node serves */
};

/* Everything a run owns; run_free releases it all. */
struct run {
	char dir[64], secret[128];
	struct member m[NMEM];
	struct de_peer_members members;
	dynemb_client *c;
	uint64_t *keys;               /* the N keys of the fill */
	uint16_t *owner;              /* their owners (index into members) */
	uint64_t *mine, *theirs;      /* a's keys, b's and c's */
	uint64_t nmine, ntheirs;
	uint64_t *pool[NMIX];         /* POOL_BATCHES * BATCH keys per mix */
	float *vals, *out;            /* BATCH rows */
	uint8_t *st;                  /* BATCH statuses */
	uint64_t *lat;                /* MAX_SAMPLES latencies */
	struct rnode rn[NMEM];
	char clilog[128];
	pid_t clipid;
	uint8_t *tag_node;            /* tags entries: the node of each tag's slot */
	uint32_t *gcount, *gstart, *order; /* grouping a batch by tag */
	size_t wcap;
};

/* ---- small helpers ------------------------------------------------------------------ */

#define fail(...) bench_fail("peers", __VA_ARGS__)

/* A loopback TCP port free now (bound to port 0 and released); 0 on failure. */
static unsigned free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return 0;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t l = sizeof a;
	unsigned port = 0;
	if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
	    getsockname(fd, (struct sockaddr *)&a, &l) == 0)
		port = ntohs(a.sin_port);
	close(fd);
	return port;
}

/* true when 127.0.0.1:port can be bound now. */
static bool port_free(unsigned port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	bool ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
	close(fd);
	return ok;
}

/* A Redis Cluster port: free, and its bus port (port + 10000) free too. 0 on failure. */
static unsigned cluster_port(void)
{
	for (int i = 0; i < 200; i++) {
		unsigned p = free_port();
		if (p && p + 10000 <= 65535 && port_free(p + 10000))
			return p;
	}
	return 0;
}

static int write_file(const char *path, const char *text, mode_t mode)
{
	FILE *f = fopen(path, "w");
	if (!f)
		return -errno;
	bool ok = fputs(text, f) >= 0;
	ok = fclose(f) == 0 && ok;
	if (!ok || chmod(path, mode))
		return -EIO;
	return 0;
}

/* lo's received bytes (/proc/net/dev); 0 when not found. */
static uint64_t lo_rx_bytes(void)
{
	FILE *f = fopen("/proc/net/dev", "r");
	char line[512];
	uint64_t v = 0;
	while (f && fgets(line, sizeof line, f)) {
		char *p = line;
		while (*p == ' ')
			p++;
		if (!strncmp(p, "lo:", 3)) {
			v = strtoull(p + 3, NULL, 10);
			break;
		}
	}
	if (f)
		fclose(f);
	return v;
}

/* CRC16-XMODEM (poly 0x1021, init 0), Redis Cluster's key hash. */
static uint16_t crc16_xmodem(const char *s, size_t n)
{
	uint16_t crc = 0;
	for (size_t i = 0; i < n; i++) {
		crc ^= (uint16_t)((uint8_t)s[i] << 8);
		for (int b = 0; b < 8; b++)
			crc = crc & 0x8000 ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
	}
	return crc;
}

static unsigned key_tag(uint64_t key, unsigned tags)
{
	return (unsigned)((key >> 1) % tags); /* the keys are odd: bit 0 says nothing */
}

/* The Redis key of key: "{T}" + its 8 raw bytes into buf (KEY_MAX); its length. */
static size_t redis_key(char *buf, uint64_t key, unsigned tags)
{
	int n = snprintf(buf, KEY_MAX, "{%u}", key_tag(key, tags));
	memcpy(buf + n, &key, 8);
	return (size_t)n + 8;
}

static uint16_t tag_slot(unsigned t)
{
	char s[16];
	int n = snprintf(s, sizeof s, "%u", t);
	return crc16_xmodem(s, (size_t)n) & 16383;
}

/* ---- the members ------------------------------------------------------------------------ */

static int setup_members(struct run *r)
{
	char list[256] = "";
	for (unsigned i = 0; i < NMEM; i++) {
		struct member *m = &r->m[i];
		m->name[0] = (char)('a' + i);
		snprintf(m->sock, sizeof m->sock, "%s/%s.sock", r->dir, m->name);
		snprintf(m->log, sizeof m->log, "%s/%s.log", r->dir, m->name);
		snprintf(m->conf, sizeof m->conf, "%s/%s.conf", r->dir, m->name);
		snprintf(m->data, sizeof m->data, "%s/%s.data", r->dir, m->name);
		if (mkdir(m->data, 0700))
			return -errno;
		m->port = free_port();
		if (!m->port)
			return -EADDRNOTAVAIL;
		char e[48];
		snprintf(e, sizeof e, "%s%s=127.0.0.1:%u", i ? ", " : "", m->name, m->port);
		strcat(list, e);
	}
	char msg[256];
	int err = de_peer_members_parse(list, &r->members, msg, sizeof msg);
	if (err) {
		fail("the member list '%s': %s", list, msg);
		return err;
	}
	snprintf(r->secret, sizeof r->secret, "%s/secret", r->dir);
	if ((err = write_file(r->secret, "dynemb-bench peers: a loopback-only secret\n", 0600)))
		return err;
	for (unsigned i = 0; i < NMEM && !err; i++) {
		char text[1024];
		snprintf(text, sizeof text, "[peers]\nmembers = %s\nself = %s\nsecret_file = %s\n"
			 "listen = 127.0.0.1:%u\nsharded = " TABLE "\n", list, r->m[i].name,
			 r->secret, r->m[i].port);
		err = write_file(r->m[i].conf, text, 0600);
	}
	return err;
}

/* Connects to member m's socket, retrying while it is not there yet (BENCH_START_WAIT_MS). */
static int connect_member(struct member *m, dynemb_client **c)
{
	int err = bench_connect_daemon(m->sock, "dynemb-bench peers", &m->pid, c);
	if (err) {
		fail("member %s did not come up on %s: %s", m->name, m->sock, dynemb_strerror(err));
		bench_log_tail(m->log);
	}
	return err;
}

static int start_members(struct run *r, const char *path)
{
	char uid[16];
	snprintf(uid, sizeof uid, "%u", (unsigned)geteuid()); /* dynembd allows listed uids only */
	for (unsigned i = 0; i < NMEM; i++) {
		struct member *m = &r->m[i];
		char *argv[] = { (char *)path, "--foreground", "--socket", m->sock, "--config",
				 m->conf, "--data-dir", m->data, "--workers", "1", "--numa-node",
				 "none", "--allow-uid", uid, NULL };
		m->pid = bench_spawn(argv, m->log, -1);
		if (m->pid < 0) {
			m->pid = 0;
			return -errno;
		}
	}
	int err = 0;
	for (unsigned i = 1; i < NMEM && !err; i++) { /* b and c up, then a is the client's */
		dynemb_client *c = NULL;
		err = connect_member(&r->m[i], &c);
		dynemb_close(c);
	}
	return err ? err : connect_member(&r->m[0], &r->c);
}

/* Stops the members (a last); -EIO when one did not exit 0 at SIGTERM. */
static int stop_members(struct run *r)
{
	int err = 0;
	for (int i = NMEM - 1; i >= 0; i--) {
		if (r->m[i].pid <= 0)
			continue;
		int st = bench_stop_child(&r->m[i].pid);
		if (st != 0) {
			fail("member %s did not stop cleanly at SIGTERM (status %d)", r->m[i].name, st);
			bench_log_tail(r->m[i].log);
			err = -EIO;
		}
	}
	return err;
}

/* The first batch is retried for RETRY_MS while b and c may still be starting their
 * listeners; the rest goes in one bench_fill. */
static int fill(struct run *r, int t, uint64_t n, double *rate)
{
	uint64_t t0 = ns_now();
	double unused;
	int err = -EHOSTDOWN;
	for (int k = 0; k < RETRY_MS / 100 &&
	     (err == -EHOSTDOWN || err == -ECONNREFUSED || err == -ETIMEDOUT); k++) {
		if (k)
			usleep(100000);
		err = bench_fill(r->c, t, r->keys, BATCH, r->vals, DIM, BATCH, &unused);
	}
	if (!err)
		err = bench_fill(r->c, t, r->keys + BATCH, n - BATCH, r->vals, DIM, BATCH, &unused);
	*rate = (double)n / ((double)(ns_now() - t0) / 1e9);
	return err;
}

/* Each member's own count of the table's keys against the owner hash's share. */
static int check_shares(struct run *r, const struct figures *f)
{
	int err = 0;
	for (unsigned i = 0; i < NMEM && !err; i++) {
		dynemb_client *c = NULL;
		struct dynemb_stats s;
		err = connect_member(&r->m[i], &c);
		if (!err && (err = dynemb_stats_by_name(c, TABLE, &s)))
			fail("stats of member %s: %s", r->m[i].name, dynemb_strerror(err));
		if (!err && s.keys != f->owned[i]) {
			fail("member %s holds %" PRIu64 " keys; the owner hash gives it %" PRIu64,
			     r->m[i].name, s.keys, f->owned[i]);
			err = -EBADMSG;
		}
		dynemb_close(c);
	}
	return err;
}

/* ---- the lookups ------------------------------------------------------------------------ */

/* The keys owned by a, and those owned by b or c; counts per owner into f. */
static int classify(struct run *r, uint64_t n, struct figures *f)
{
	de_peer_owners(&r->members, r->keys, n, r->owner);
	r->mine = malloc(n * 8);
	r->theirs = malloc(n * 8);
	if (!r->mine || !r->theirs)
		return -ENOMEM;
	for (uint64_t i = 0; i < n; i++) {
		if (r->owner[i] >= NMEM)
			return -EINVAL;
		f->owned[r->owner[i]]++;
		if (r->owner[i] == 0)
			r->mine[r->nmine++] = r->keys[i];
		else
			r->theirs[r->ntheirs++] = r->keys[i];
	}
	if (!r->nmine || !r->ntheirs) {
		fail("%" PRIu64 " keys of a and %" PRIu64 " of b and c: too few keys", r->nmine,
		     r->ntheirs);
		return -EINVAL;
	}
	uint64_t rng = 42;
	for (int x = 0; x < NMIX; x++) {
		uint64_t *p = r->pool[x] = malloc((size_t)POOL_BATCHES * BATCH * 8);
		if (!p)
			return -ENOMEM;
		for (size_t i = 0; i < (size_t)POOL_BATCHES * BATCH; i++) {
			bool local = x == MIX_LOCAL || (x == MIX_HALF && i % 2 == 0);
			p[i] = local ? r->mine[rand_below(&rng, r->nmine)]
				     : r->theirs[rand_below(&rng, r->ntheirs)];
		}
	}
	return 0;
}

/* Every row of the last lookup of k: FOUND, with its tag. */
static int check_rows(struct run *r, const uint64_t *k, int x)
{
	for (uint32_t j = 0; j < BATCH; j++)
		if (r->st[j] != DYNEMB_ST_FOUND || r->out[(size_t)j * DIM] != row_tag(k[j])) {
			fail("%s lookup: key %" PRIu64 " (owner %s): status %u, first float %.1f, "
			     "not FOUND and %.1f", mix_name[x], k[j],
			     r->m[de_peer_owner(&r->members, k[j])].name, r->st[j],
			     (double)r->out[(size_t)j * DIM], (double)row_tag(k[j]));
			return -EBADMSG;
		}
	return 0;
}

static int measure(struct run *r, int t, int x, double secs, struct mix_fig *f,
		   uint64_t *lo_bytes)
{
	const uint64_t *pool = r->pool[x];
	int err = 0;
	uint64_t end = ns_now() + (uint64_t)(secs * 0.25e9);
	for (uint32_t b = 0; b < POOL_BATCHES && !err && ns_now() < end; b++) {
		const uint64_t *k = pool + (size_t)b * BATCH;
		err = dynemb_lookup(r->c, t, k, BATCH, r->out, r->st, 0, 1);
		if (!err)
			err = check_rows(r, k, x);
	}
	uint64_t b = 0, nlat = 0, lo0 = lo_rx_bytes(), t0 = ns_now();
	end = t0 + (uint64_t)(secs * 1e9);
	while (!err && ns_now() < end) {
		const uint64_t *k = pool + (b % POOL_BATCHES) * BATCH;
		uint64_t s = ns_now();
		err = dynemb_lookup(r->c, t, k, BATCH, r->out, r->st, 0, 1);
		uint64_t dt = ns_now() - s;
		if (!err)
			err = check_rows(r, k, x);
		if (nlat < MAX_SAMPLES)
			r->lat[nlat++] = dt;
		b++;
	}
	double wall = (double)(ns_now() - t0) / 1e9;
	*lo_bytes = lo_rx_bytes() - lo0;
	if (err) {
		if (err != -EBADMSG)
			fail("%s lookup: %s", mix_name[x], dynemb_strerror(err));
		return err;
	}
	f->rows = b * BATCH;
	f->rows_per_s = (double)f->rows / wall;
	double p[2];
	pctl(r->lat, (unsigned)nlat, p);
	f->p50_ns = p[0];
	f->p99_ns = p[1];
	return 0;
}

/* (a): one remote LOOKUP frame of n keys at DIM, request and reply, per key. */
static double frame_bytes_per_key(uint32_t n)
{
	uint64_t req = DE_PEER_HDR_BYTES + de_peer_batch_fixed(DE_PEER_LOOKUP) + 8ull * n;
	uint64_t rep = DE_PEER_HDR_BYTES + de_peer_lookup_reply_bytes(n, DIM);
	return (double)(req + rep) / n;
}

static int run_members(struct run *r, const char *path, const struct opts *o, struct figures *f)
{
	int err = setup_members(r), t = -1;
	if (err) {
		fail("member configs in %s: %s", r->dir, strerror(-err));
		return err;
	}
	if ((err = start_members(r, path)))
		return err;
	struct dynemb_table_spec spec = { .name = TABLE, .dim = DIM, .init = DYNEMB_UNIFORM,
					  .init_a = -1, .init_b = 1, .seed = 1,
					  .keys = DYNEMB_INT64_KEYS };
	const char *what = "open";
	err = dynemb_open(r->c, &spec, &t);
	if (!err)
		what = "fill", err = fill(r, t, o->keys, &f->fill_rows_per_s);
	if (!err)
		what = "owners", err = classify(r, o->keys, f);
	if (err && err != -EBADMSG && err != -EINVAL)
		fail("%s: %s", what, dynemb_strerror(err));
	if (!err)
		err = check_shares(r, f);
	for (int x = 0; x < NMIX && !err; x++) {
		uint64_t lo = 0;
		err = measure(r, t, x, o->seconds, &f->mix[x], &lo);
		if (x == MIX_REMOTE) {
			f->lo_rx_bytes = lo;
			f->lo_remote_keys = f->mix[x].rows;
		}
	}
	f->payload_per_key = 8 + ROW_BYTES;
	f->wire_per_key = frame_bytes_per_key(BATCH);
	/* libdynemb sends a 4096-key call as 4 chunks of 1024 (client.c, PIPE_DEPTH); a's
	 * forwarder splits each all-remote chunk between b and c */
	f->frame_keys_sent = BATCH / 4 / (NMEM - 1);
	f->wire_per_key_sent = frame_bytes_per_key(f->frame_keys_sent);
	f->measured_per_key = f->lo_remote_keys ? (double)f->lo_rx_bytes / f->lo_remote_keys : NAN;
	if (err)
		for (unsigned i = 0; i < NMEM; i++)
			bench_log_tail(r->m[i].log);
	dynemb_close(r->c);
	r->c = NULL;
	int st = stop_members(r);
	return err ? err : st;
}

/* ---- Redis Cluster ------------------------------------------------------------------------ */

static int node_connect(struct rnode *n)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)n->port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int err = resp_connect(&n->rr, (struct sockaddr *)&a, sizeof a, n->pid, RBUF);
	if (err == -ECHILD)
		n->pid = 0;
	return err;
}

/* Sends the command of argc words and reads a bulk-string reply into *p, *len. */
static int node_query(struct rnode *n, char *buf, int argc, const char *const *argv,
		      const char **p, size_t *len)
{
	char *w = resp_put_array(buf, (size_t)argc);
	for (int i = 0; i < argc; i++)
		w = resp_put_bulk(w, argv[i], strlen(argv[i]));
	int err = resp_write_all(n->rr.fd, buf, (size_t)(w - buf));
	return err ? err : resp_bulk(&n->rr, p, len);
}

/* Waits (bounded) for `redis-cli --cluster create` to exit 0. */
static int cluster_create(struct run *r, const char *cli)
{
	char a[NMEM][32];
	char *argv[NMEM + 8];
	int k = 0;
	argv[k++] = (char *)cli;
	argv[k++] = "--cluster";
	argv[k++] = "create";
	for (unsigned i = 0; i < NMEM; i++) {
		snprintf(a[i], sizeof a[i], "127.0.0.1:%u", r->rn[i].port);
		argv[k++] = a[i];
	}
	argv[k++] = "--cluster-replicas";
	argv[k++] = "0";
	argv[k++] = "--cluster-yes";
	argv[k] = NULL;
	r->clipid = bench_spawn(argv, r->clilog, -1);
	if (r->clipid < 0) {
		r->clipid = 0;
		return -errno;
	}
	for (int i = 0; i < CLUSTER_WAIT_MS / 10; i++) {
		int st;
		if (waitpid(r->clipid, &st, WNOHANG) == r->clipid) {
			r->clipid = 0;
			if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
				return 0;
			fail("redis-cli --cluster create failed (status 0x%x)", st);
			bench_log_tail(r->clilog);
			return -EIO;
		}
		usleep(10000);
	}
	fail("redis-cli --cluster create did not finish in %d s", CLUSTER_WAIT_MS / 1000);
	bench_log_tail(r->clilog);
	return -ETIMEDOUT;
}

/* Every node says cluster_state:ok (bounded), then the slot map from CLUSTER NODES. */
static int cluster_map(struct run *r, unsigned tags)
{
	static const char *const info[] = { "CLUSTER", "INFO" };
	static const char *const nodes[] = { "CLUSTER", "NODES" };
	const char *p;
	size_t len;
	int err = 0;
	for (unsigned i = 0; i < NMEM && !err; i++) {
		err = -ETIMEDOUT;
		for (int k = 0; k < CLUSTER_WAIT_MS / 100 && err == -ETIMEDOUT; k++) {
			err = node_query(&r->rn[i], r->rn[i].wbuf, 2, info, &p, &len);
			if (!err && !memmem(p, len, "cluster_state:ok", 16)) {
				err = -ETIMEDOUT;
				usleep(100000);
			}
		}
		if (err)
			fail("redis node %u: no cluster_state:ok within %d s: %s", r->rn[i].port,
			     CLUSTER_WAIT_MS / 1000, strerror(-err));
	}
	if (err || (err = node_query(&r->rn[0], r->rn[0].wbuf, 2, nodes, &p, &len)))
		return err;
	/* lines: id ip:port@bus[,host] flags master ping pong epoch state slot... */
	static int16_t slot_node[16384];
	memset(slot_node, -1, sizeof slot_node);
	char *text = strndup(p, len), *save = NULL;
	if (!text)
		return -ENOMEM;
	for (char *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		char *f[64], *s2 = NULL;
		int nf = 0;
		for (char *w = strtok_r(l, " ", &s2); w && nf < 64; w = strtok_r(NULL, " ", &s2))
			f[nf++] = w;
		if (nf < 8)
			continue;
		char *colon = strrchr(strtok_r(f[1], "@", &s2), ':');
		unsigned port = colon ? (unsigned)strtoul(colon + 1, NULL, 10) : 0;
		int node = -1;
		for (int i = 0; i < NMEM; i++)
			if (r->rn[i].port == port)
				node = i;
		for (int j = 8; j < nf && node >= 0; j++) {
			if (f[j][0] == '[')
				continue; /* a slot being migrated */
			char *dash = strchr(f[j], '-');
			long lo = strtol(f[j], NULL, 10), hi = dash ? strtol(dash + 1, NULL, 10) : lo;
			for (long s = lo; s <= hi && s >= 0 && s < 16384; s++)
				slot_node[s] = (int16_t)node;
		}
	}
	free(text);
	for (unsigned t = 0; t < tags; t++) {
		int16_t nd = slot_node[tag_slot(t)];
		if (nd < 0) {
			fail("redis cluster: slot %u (tag %u) has no node in CLUSTER NODES",
			     tag_slot(t), t);
			return -EPROTO;
		}
		r->tag_node[t] = (uint8_t)nd;
		r->rn[nd].tags[r->rn[nd].ntags++] = t;
	}
	/* our slots against the server's: CLUSTER KEYSLOT of some keys */
	for (unsigned t = 0; t < tags && t < 64 && !err; t++) {
		char kb[KEY_MAX], cmd[128];
		uint64_t key = ((uint64_t)t << 1) | 1; /* key_tag(key) == t */
		size_t kl = redis_key(kb, key, tags);
		char *w = resp_put_array(cmd, 3);
		w = resp_put_bulk(w, "CLUSTER", 7);
		w = resp_put_bulk(w, "KEYSLOT", 7);
		w = resp_put_bulk(w, kb, kl);
		long long slot = -1;
		err = resp_write_all(r->rn[0].rr.fd, cmd, (size_t)(w - cmd));
		if (!err)
			err = resp_header(&r->rn[0].rr, ':', &slot);
		if (!err && slot != tag_slot(t)) {
			fail("redis: CLUSTER KEYSLOT of tag %u is %lld, CRC16 here gives %u", t, slot,
			     tag_slot(t));
			err = -EPROTO;
		}
	}
	return err;
}

/* Groups keys[0, n) by tag: r->order lists their indexes tag by tag, r->gstart[t] where
 * tag t's run starts, r->gcount[t] its length. */
static void group(struct run *r, const uint64_t *keys, uint32_t n, unsigned tags)
{
	memset(r->gcount, 0, tags * sizeof *r->gcount);
	for (uint32_t j = 0; j < n; j++)
		r->gcount[key_tag(keys[j], tags)]++;
	uint32_t at = 0;
	for (unsigned t = 0; t < tags; t++) {
		r->gstart[t] = at;
		at += r->gcount[t];
	}
	for (uint32_t j = 0; j < n; j++)
		r->order[r->gstart[key_tag(keys[j], tags)]++] = j;
	for (unsigned t = 0; t < tags; t++)
		r->gstart[t] -= r->gcount[t];
}

/* Pipelined SETs of every key, node by node, all written before the replies are read. */
static int redis_load(struct run *r, uint64_t nkeys, unsigned tags, double *rate)
{
	uint64_t t0 = ns_now();
	float v[DIM];
	char kb[KEY_MAX];
	int err = 0;
	for (uint64_t i = 0; i < nkeys && !err; i += BATCH) {
		uint32_t n = (uint32_t)(nkeys - i < BATCH ? nkeys - i : BATCH), sets[NMEM] = { 0 };
		char *p[NMEM];
		for (int d = 0; d < NMEM; d++)
			p[d] = r->rn[d].wbuf;
		for (uint32_t j = 0; j < n; j++) {
			uint64_t k = r->keys[i + j];
			int d = r->tag_node[key_tag(k, tags)];
			bench_row(v, DIM, k); /* the row as the table returns it */
			p[d] = resp_put_array(p[d], 3);
			p[d] = resp_put_bulk(p[d], "SET", 3);
			p[d] = resp_put_bulk(p[d], kb, redis_key(kb, k, tags));
			p[d] = resp_put_bulk(p[d], v, ROW_BYTES);
			sets[d]++;
		}
		for (int d = 0; d < NMEM && !err; d++)
			err = resp_write_all(r->rn[d].rr.fd, r->rn[d].wbuf, (size_t)(p[d] - r->rn[d].wbuf));
		for (int d = 0; d < NMEM && !err; d++)
			err = resp_ok(&r->rn[d].rr, sets[d]);
	}
	*rate = (double)nkeys / ((double)(ns_now() - t0) / 1e9);
	return err;
}

/* One batch: an MGET per (node, tag) group, all written, then all read and checked. */
static int redis_batch(struct run *r, const uint64_t *keys, unsigned tags, uint64_t *mgets)
{
	char kb[KEY_MAX];
	int err = 0;
	group(r, keys, BATCH, tags);
	for (int d = 0; d < NMEM && !err; d++) {
		struct rnode *n = &r->rn[d];
		char *p = n->wbuf;
		for (unsigned i = 0; i < n->ntags; i++) {
			unsigned t = n->tags[i];
			if (!r->gcount[t])
				continue;
			p = resp_put_array(p, r->gcount[t] + 1);
			p = resp_put_bulk(p, "MGET", 4);
			for (uint32_t j = 0; j < r->gcount[t]; j++) {
				uint64_t k = keys[r->order[r->gstart[t] + j]];
				p = resp_put_bulk(p, kb, redis_key(kb, k, tags));
			}
			(*mgets)++;
		}
		err = resp_write_all(n->rr.fd, n->wbuf, (size_t)(p - n->wbuf));
	}
	for (int d = 0; d < NMEM && !err; d++) {
		struct rnode *n = &r->rn[d];
		for (unsigned i = 0; i < n->ntags && !err; i++) {
			unsigned t = n->tags[i];
			long long cnt;
			if (!r->gcount[t])
				continue;
			err = resp_header(&n->rr, '*', &cnt);
			if (!err && cnt != r->gcount[t])
				err = -EPROTO;
			for (uint32_t j = 0; j < r->gcount[t] && !err; j++) {
				uint64_t k = keys[r->order[r->gstart[t] + j]];
				const char *v;
				size_t len;
				float first;
				err = resp_bulk(&n->rr, &v, &len); /* -ENOENT: a nil */
				if (!err && len != ROW_BYTES)
					err = -EPROTO;
				if (!err) {
					memcpy(r->out + (size_t)j * DIM, v, ROW_BYTES);
					memcpy(&first, v, 4);
					if (first != row_tag(k)) {
						fail("redis: key %" PRIu64 ": first float %.1f, not %.1f",
						     k, (double)first, (double)row_tag(k));
						err = -EBADMSG;
					}
				}
			}
		}
	}
	return err;
}

static double redis_mget(struct run *r, const struct opts *o, double *mgets_per_batch,
			 int *err)
{
	/* uniform over all the keys: a fourth pool, in the local mix's buffer (measured) */
	uint64_t *pool = r->pool[MIX_LOCAL], rng = 7, rows = 0, b = 0, t0 = 0, mg = 0;
	for (size_t i = 0; i < (size_t)POOL_BATCHES * BATCH; i++)
		pool[i] = r->keys[rand_below(&rng, o->keys)];
	for (int timed = 0; timed < 2 && !*err; timed++) {
		t0 = ns_now();
		uint64_t end = t0 + (uint64_t)(o->seconds * (timed ? 1e9 : 1e8));
		rows = 0;
		mg = 0;
		uint64_t nb = 0;
		while (!*err && ns_now() < end) {
			*err = redis_batch(r, pool + (b % POOL_BATCHES) * BATCH, o->tags, &mg);
			rows += BATCH;
			b++;
			nb++;
		}
		*mgets_per_batch = nb ? (double)mg / (double)nb : NAN;
	}
	return (double)rows / ((double)(ns_now() - t0) / 1e9);
}

static int run_redis(struct run *r, const struct opts *o, const char *cli, struct figures *f)
{
	int err = 0;
	r->tag_node = malloc(o->tags);
	r->gcount = malloc(o->tags * sizeof *r->gcount);
	r->gstart = malloc(o->tags * sizeof *r->gstart);
	r->order = malloc(BATCH * sizeof *r->order);
	/* the biggest write: BATCH SETs of ROW_BYTES, or BATCH keys in up to tags MGETs */
	r->wcap = (size_t)BATCH * (ROW_BYTES + 64) + (size_t)o->tags * 32 + 4096;
	if (!r->tag_node || !r->gcount || !r->gstart || !r->order)
		return -ENOMEM;
	for (unsigned i = 0; i < NMEM; i++) {
		struct rnode *n = &r->rn[i];
		char port[16], conf[160];
		n->port = cluster_port();
		n->wbuf = malloc(r->wcap);
		n->tags = malloc(o->tags * sizeof *n->tags);
		if (!n->port || !n->wbuf || !n->tags)
			return n->port ? -ENOMEM : -EADDRNOTAVAIL;
		snprintf(port, sizeof port, "%u", n->port);
		snprintf(conf, sizeof conf, "%s/redis-%u.nodes", r->dir, n->port);
		snprintf(n->log, sizeof n->log, "%s/redis-%u.log", r->dir, n->port);
		char *argv[] = { (char *)o->redis, "--port", port, "--bind", "127.0.0.1",
				 "--cluster-enabled", "yes", "--cluster-config-file", conf,
				 "--save", "", "--appendonly", "no", "--dir", r->dir,
				 "--daemonize", "no", "--loglevel", "warning", NULL };
		n->pid = bench_spawn(argv, n->log, -1);
		if (n->pid < 0) {
			n->pid = 0;
			return -errno;
		}
	}
	for (unsigned i = 0; i < NMEM && !err; i++)
		if ((err = node_connect(&r->rn[i]))) {
			fail("redis-server (%s) did not answer on 127.0.0.1:%u: %s", o->redis,
			     r->rn[i].port, strerror(-err));
			bench_log_tail(r->rn[i].log);
		}
	if (!err)
		err = cluster_create(r, cli);
	if (!err)
		err = cluster_map(r, o->tags);
	if (!err)
		err = redis_load(r, o->keys, o->tags, &f->redis_load_rows_per_s);
	if (!err)
		f->redis_rows_per_s = redis_mget(r, o, &f->redis_mgets_per_batch, &err);
	if (err && err != -EBADMSG)
		fail("redis cluster: %s", strerror(-err));
	f->have_redis = !err;
	for (unsigned i = 0; i < NMEM; i++) {
		resp_close(&r->rn[i].rr);
		bench_stop_child(&r->rn[i].pid);
	}
	return err;
}

/* ---- the report --------------------------------------------------------------------------- */

static void report(const struct opts *o, const struct figures *f, const char *command_line,
		   const char *dynembd, const struct machine *mach)
{
	FILE *h = o->json ? stderr : stdout;
	const struct mix_fig *m = f->mix;
	double overhead = f->wire_per_key / f->payload_per_key - 1;
	double rl = m[MIX_REMOTE].rows_per_s / m[MIX_LOCAL].rows_per_s;
	double xr = f->have_redis ? m[MIX_REMOTE].rows_per_s / f->redis_rows_per_s : NAN;
	double xh = f->have_redis ? m[MIX_HALF].rows_per_s / f->redis_rows_per_s : NAN;
	fprintf(h, "lookups through member a's ring (dynemb_lookup, not DYNEMB_READONLY: a remote "
		   "key cannot be zero-copy),\nbatch %d existing keys, dim %d, one client thread, "
		   "%.1f s each, every row checked:\n", BATCH, DIM, o->seconds);
	fprintf(h, "  %-28s %12s %14s %14s\n", "mix", "M rows/s", "batch p50 us", "batch p99 us");
	for (int x = 0; x < NMIX; x++)
		fprintf(h, "  %-28s %12.2f %14.1f %14.1f\n", mix_human[x], m[x].rows_per_s / 1e6,
			m[x].p50_ns / 1e3, m[x].p99_ns / 1e3);
	if (f->have_redis)
		fprintf(h, "  %-28s %12.2f %14s %14s   (%u tags, %.0f MGETs per batch)\n",
			"redis cluster, 3 nodes", f->redis_rows_per_s / 1e6, "-", "-", o->tags,
			f->redis_mgets_per_batch);
	else
		fprintf(h, "  %-28s %12s   (%s)\n", "redis cluster, 3 nodes", "-", f->redis_note);
	fprintf(h, "wire bytes per key (remote LOOKUP, dim %d):\n", DIM);
	fprintf(h, "  payload (8-byte key + %d-byte row)             %8.2f\n", ROW_BYTES,
		f->payload_per_key);
	fprintf(h, "  frame layout, one %d-key frame (wire.c)      %8.2f  (+%.2f%%)\n", BATCH,
		f->wire_per_key, overhead * 100);
	fprintf(h, "  frame layout, %u-key frames as sent             %8.2f  (+%.2f%%)\n",
		f->frame_keys_sent, f->wire_per_key_sent,
		(f->wire_per_key_sent / f->payload_per_key - 1) * 100);
	fprintf(h, "  measured: lo rx bytes / remote keys             %8.2f  (+%.2f%%; TCP/IP "
		   "headers and ACKs included: %" PRIu64 " bytes, %" PRIu64 " keys)\n",
		f->measured_per_key, (f->measured_per_key / f->payload_per_key - 1) * 100,
		f->lo_rx_bytes, f->lo_remote_keys);
	fprintf(h, "ratios:\n");
	fprintf(h, "  half remote / local       %6.2f\n",
		m[MIX_HALF].rows_per_s / m[MIX_LOCAL].rows_per_s);
	fprintf(h, "  remote / local            %6.2f\n", rl);
	if (f->have_redis) {
		fprintf(h, "  local / redis cluster     %6.1f\n",
			m[MIX_LOCAL].rows_per_s / f->redis_rows_per_s);
		fprintf(h, "  half remote / redis       %6.1f\n", xh);
		fprintf(h, "  remote / redis cluster    %6.1f\n", xr);
	}
	fprintf(h, "goals:\n");
	fprintf(h, "  all-remote >= 0.40 of all-local rows/s         %-8s (%.2f)\n", bench_met(rl >= 0.4),
		rl);
	fprintf(h, "  protocol overhead < 10%% of payload             %-8s (%.2f%%)\n",
		bench_met(overhead < 0.10), overhead * 100);
	if (f->have_redis) {
		fprintf(h, "  3 hosts, all-remote >= 10x redis cluster       %-8s (%.1fx; the strict one)\n",
			bench_met(xr >= 10), xr);
		fprintf(h, "  3 hosts, half-remote >= 10x redis cluster      %-8s (%.1fx)\n",
			bench_met(xh >= 10), xh);
	} else {
		fprintf(h, "  3 hosts >= 10x redis cluster                   n/a (%s)\n", f->redis_note);
	}
	if (!o->json)
		return;
	printf("{\"command\":\"peers\",\"command_line\":");
	json_str(stdout, command_line);
	printf(",\"machine\":");
	machine_json(stdout, mach);
	printf(",\"dynembd\":");
	json_str(stdout, dynembd);
	printf(",\"keys\":%" PRIu64 ",\"dim\":%d,\"batch\":%d,\"seconds\":%.3f,"
	       "\"members\":%d,\"owned\":[%" PRIu64 ",%" PRIu64 ",%" PRIu64 "],"
	       "\"fill_rows_per_s\":%.0f",
	       o->keys, DIM, BATCH, o->seconds, NMEM, f->owned[0], f->owned[1], f->owned[2],
	       f->fill_rows_per_s);
	for (int x = 0; x < NMIX; x++)
		printf(",\"%s_rows_per_s\":%.0f,\"%s_p50_ns\":%.0f,\"%s_p99_ns\":%.0f,"
		       "\"%s_rows\":%" PRIu64, mix_name[x], m[x].rows_per_s, mix_name[x],
		       m[x].p50_ns, mix_name[x], m[x].p99_ns, mix_name[x], m[x].rows);
	printf(",\"payload_bytes_per_key\":%.2f,\"wire_bytes_per_key\":%.3f,"
	       "\"wire_frame_keys\":%d,\"wire_bytes_per_key_as_sent\":%.3f,"
	       "\"wire_frame_keys_as_sent\":%u,\"protocol_overhead\":%.5f,"
	       "\"lo_rx_bytes\":%" PRIu64 ",\"lo_remote_keys\":%" PRIu64 ","
	       "\"measured_lo_bytes_per_key\":",
	       f->payload_per_key, f->wire_per_key, BATCH, f->wire_per_key_sent,
	       f->frame_keys_sent, overhead, f->lo_rx_bytes, f->lo_remote_keys);
	json_num(stdout, f->measured_per_key, "%.2f");
	printf(",\"redis_cluster_rows_per_s\":");
	json_num(stdout, f->have_redis ? f->redis_rows_per_s : NAN, "%.0f");
	printf(",\"redis_cluster_load_rows_per_s\":");
	json_num(stdout, f->have_redis ? f->redis_load_rows_per_s : NAN, "%.0f");
	printf(",\"redis_tags\":%u,\"redis_mgets_per_batch\":", o->tags);
	json_num(stdout, f->have_redis ? f->redis_mgets_per_batch : NAN, "%.1f");
	printf(",\"remote_over_local\":%.3f,\"half_remote_over_local\":%.3f,"
	       "\"remote_over_redis\":", rl, m[MIX_HALF].rows_per_s / m[MIX_LOCAL].rows_per_s);
	json_num(stdout, xr, "%.2f");
	printf(",\"half_remote_over_redis\":");
	json_num(stdout, xh, "%.2f");
	printf(",\"goal_remote_40pct\":%s,\"goal_overhead_10pct\":%s,\"goal_10x_redis\":%s,"
	       "\"goal_10x_redis_half_remote\":%s}\n", rl >= 0.4 ? "true" : "false",
	       overhead < 0.10 ? "true" : "false",
	       !f->have_redis ? "null" : xr >= 10 ? "true" : "false",
	       !f->have_redis ? "null" : xh >= 10 ? "true" : "false");
}

/* ---- options, setup, teardown -------------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: " PROG " peers [--keys N] [--seconds S] [--redis-cluster PATH|none]\n"
		"                          [--redis-tags T] [--json]\n"
		"  One table sharded over three dynembd members on loopback TCP ([peers]), one client\n"
		"  on member a's socket: lookup throughput and per-batch p50/p99 (batch 4096, dim\n"
		"  64, through the ring) for keys all local, half remote and all remote; wire bytes\n"
		"  per key (the frame layout, and lo's counters); a 3-node Redis Cluster serving the\n"
		"  same rows with MGETs grouped by node and hash tag.\n"
		"  dynembd: $DYNEMBD, else ../../src/server/dynembd from this binary's directory.\n"
		"  --keys N             keys in the table (default 300000)\n"
		"  --seconds S          per measurement (default 2)\n"
		"  --redis-cluster PATH the redis-server binary (default: redis-server on $PATH,\n"
		"                       skipped when absent; redis-cli from its directory or $PATH);\n"
		"                       none: skip the baseline\n"
		"  --redis-tags T       hash tags the Redis keys spread over (default %u)\n"
		"  --json               one JSON object on stdout (the table goes to stderr)\n"
		"Exit status: 0 done, 1 a run-time failure (a row read back wrong among them), 2 bad "
		"usage.\n", REDIS_TAGS);
}

static int parse(int argc, char **argv, struct opts *o)
{
	static const struct option lo[] = {
		{ "keys", required_argument, NULL, 'k' }, { "seconds", required_argument, NULL, 's' },
		{ "redis-cluster", required_argument, NULL, 'r' },
		{ "redis-tags", required_argument, NULL, 't' }, { "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' }, { 0 } };
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		char *end = NULL;
		errno = 0;
		switch (c) {
		case 'k': o->keys = strtoull(optarg, &end, 10); break;
		case 's': o->seconds = strtod(optarg, &end); break;
		case 't': {
			unsigned long v = strtoul(optarg, &end, 10);
			o->tags = v > 1u << 20 ? 0 : (unsigned)v;
			break;
		}
		case 'r': o->redis = optarg; break;
		case 'j': o->json = true; break;
		case 'h': usage(stdout); return 1;
		default: usage(stderr); return EXIT_USAGE;
		}
		if (bench_check_number("peers", optarg, end))
			return EXIT_USAGE;
	}
	if (bench_check_operands("peers", argc, argv, optind, usage))
		return EXIT_USAGE;
	if (o->keys < BATCH || o->keys > (1ull << 28) || !(o->seconds >= 0.01 && o->seconds <= 600) ||
	    o->tags < NMEM || o->tags > 65536) {
		fprintf(stderr, PROG " peers: --keys 4096..2^28, --seconds 0.01..600, "
				"--redis-tags 3..65536\n");
		return EXIT_USAGE;
	}
	return bench_server_opt("peers", "--redis-cluster", &o->redis, &o->redis_none);
}

static void run_free(struct run *r)
{
	dynemb_close(r->c);
	stop_members(r);
	bench_stop_child(&r->clipid);
	for (unsigned i = 0; i < NMEM; i++) {
		resp_close(&r->rn[i].rr);
		bench_stop_child(&r->rn[i].pid);
		free(r->rn[i].wbuf);
		free(r->rn[i].tags);
	}
	free(r->keys);
	free(r->owner);
	free(r->mine);
	free(r->theirs);
	for (int x = 0; x < NMIX; x++)
		free(r->pool[x]);
	free(r->vals);
	free(r->out);
	free(r->st);
	free(r->lat);
	free(r->tag_node);
	free(r->gcount);
	free(r->gstart);
	free(r->order);
	if (r->dir[0])
		bench_rm_tree(r->dir, 4); /* DIR, a.data and what the members keep in it */
}

/* redis-cli beside redis-server, else on $PATH; NULL when neither. */
static char *find_cli(const char *server, char *buf, size_t cap)
{
	const char *slash = strrchr(server, '/');
	if (slash && snprintf(buf, cap, "%.*s/redis-cli", (int)(slash - server), server) < (int)cap &&
	    bench_executable(buf))
		return buf;
	return bench_find_on_path("redis-cli", buf, cap);
}

int cmd_peers(int argc, char **argv, const char *command_line)
{
	struct opts o = { .keys = 300000, .seconds = 2, .tags = REDIS_TAGS };
	int pr = parse(argc, argv, &o);
	if (pr)
		return pr == 1 ? 0 : pr;
	char dynembd[PATH_MAX], redis_path[PATH_MAX], cli[PATH_MAX];
	if (bench_find_dynembd(dynembd, sizeof dynembd)) {
		fail("dynembd not found at %s: build it (ninja) or set DYNEMBD to its path", dynembd);
		return 1;
	}
	struct figures f = { 0 };
	if (o.redis_none) {
		snprintf(f.redis_note, sizeof f.redis_note, "skipped: --redis-cluster none");
	} else if (!o.redis && !(o.redis = bench_find_on_path("redis-server", redis_path,
							       sizeof redis_path))) {
		snprintf(f.redis_note, sizeof f.redis_note,
			 "skipped: no redis-server on $PATH (apt-get install -y redis-server redis-tools)");
	} else if (!find_cli(o.redis, cli, sizeof cli)) {
		snprintf(f.redis_note, sizeof f.redis_note,
			 "skipped: no redis-cli beside %s or on $PATH (apt-get install -y redis-tools)",
			 o.redis);
		o.redis = NULL;
	}
	FILE *h = o.json ? stderr : stdout;

	struct run r = { 0 };
	for (unsigned i = 0; i < NMEM; i++)
		r.rn[i].rr.fd = -1;
	int err = 0;
	r.keys = malloc(o.keys * 8);
	r.owner = malloc(o.keys * sizeof *r.owner);
	r.vals = malloc((size_t)BATCH * ROW_BYTES);
	r.out = malloc((size_t)BATCH * ROW_BYTES);
	r.st = malloc(BATCH);
	r.lat = malloc(MAX_SAMPLES * sizeof *r.lat);
	if (!r.keys || !r.owner || !r.vals || !r.out || !r.st || !r.lat)
		err = -ENOMEM;
	if (!err)
		err = bench_mkdtemp(r.dir, sizeof r.dir, "dynemb-peers");
	if (err) {
		fail("setup: %s", strerror(-err));
		run_free(&r);
		return 1;
	}
	snprintf(r.clilog, sizeof r.clilog, "%s/redis-cli.log", r.dir);
	for (uint64_t i = 0; i < o.keys; i++)
		r.keys[i] = key_of(i + 0x1000);
	fprintf(h, "%s\n", command_line);
	struct machine mach; /* before the pinning: what the children get */
	machine_describe(&mach);
	bench_machine_print(h, false);
	pin(CLIENT_CPU);
	fprintf(h, "%s peers: %" PRIu64 " keys, dim %d, 3 members on loopback TCP, dynembd %s\n",
		PROG, o.keys, DIM, dynembd);
	fflush(h);

	err = run_members(&r, dynembd, &o, &f);
	if (!err) {
		fprintf(h, "dynembd: filled %" PRIu64 " keys through a with dynemb_update at %.2f M "
			   "rows/s; owners a %" PRIu64 ", b %" PRIu64 ", c %" PRIu64
			   " (each member's own count agrees); stopped\n", o.keys,
			f.fill_rows_per_s / 1e6, f.owned[0], f.owned[1], f.owned[2]);
		fflush(h);
	}
	if (!err && o.redis) {
		err = run_redis(&r, &o, cli, &f);
		if (!err)
			fprintf(h, "redis cluster: %" PRIu64 " keys of %d bytes loaded with pipelined SET "
				   "at %.2f M keys/s; stopped\n", o.keys, ROW_BYTES,
				f.redis_load_rows_per_s / 1e6);
	}
	if (!err)
		report(&o, &f, command_line, dynembd, &mach);
	run_free(&r);
	return err ? 1 : 0;
}
