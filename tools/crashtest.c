/*
 * crashtest.c — kill dynembd at random moments and check that what it acknowledged
 * survives (ARCHITECTURE.md section 5, durability modes).
 *
 * Owns the `crashtest` program. One iteration:
 *   1. start dynembd (--data-dir) on a private socket and wait until it accepts;
 *   2. verify, through a fresh client, every key of both tables ("crash_sync", durability
 *      sync, and "crash_async", durability async with --window-ms) against the model
 *      below (the first start has nothing to verify: the model is empty);
 *   3. fork a writer process: it connects, opens the phase's table and updates batches of
 *      random keys (distinct keys per batch) until it is killed. Before each dynemb_update it
 *      publishes the batch (keys and their versions) in a shared log; after the update is
 *      acknowledged it stores the acknowledgement time and marks the entry acked (release
 *      order: the parent reads the count, then the entries);
 *   3b. in about half of the iterations, also fork a snapshotter: dynemb_snapshot of every
 *      table (full or incremental at random) in a loop, so kills hit checkpoints too;
 *   4. after a random delay (--min-ms..--max-ms) SIGKILL the daemon, note the time, then
 *      SIGKILL the writer (it cannot record anything after the daemon died that the
 *      daemon did not acknowledge before) and fold the log into the model.
 * The next iteration's start and verification check the kill. After the last kill the
 * daemon is started once more, verified, and stopped with SIGTERM.
 *
 * Values: version v of key index i is the row f(i, v) (component 0 = v, 1 = i, the rest
 * bits of a hash of (i, v, j): exact in float, distinct per version). Versions of a key
 * only grow and are never reused, even after a lost update, so a row is attributable to
 * exactly one write. Model per key: base (the version verified at the last start, 0 =
 * absent), and this iteration's first version sent, last version sent and last acked.
 * A recovered row r must be exactly f(i, r) with r == base or first <= r <= last sent
 * ("nothing never written appears": also a lost version from an earlier iteration must
 * not come back). Sync tables: r >= last acked. Async tables: r < last acked is a loss;
 * the first lost update (version r + 1) was acknowledged at some time a, and kill - a must
 * be at most window + slack: the daemon flushes on a fixed cadence of the window and
 * holds async acknowledgements while a flush that leaves them behind is late, so an
 * acknowledged update is in the kernel within the window plus one buffer write; the
 * slack (default 30 ms) covers that write and scheduling on 2 loaded cores, not a slow
 * fdatasync (which only power loss exposes). The worst loss seen is reported. The table
 * not written in a phase must read exactly its base.
 *
 * --tier adds a third table, "crash_tier": durability sync with LRU eviction to the disk
 * tier under a budget that holds about a third of the keys, so most acknowledged rows
 * live in the tier at a kill. It is verified like crash_sync (every acknowledged version
 * present), read with create lookups (which restore rows from the tier); an all-zero row
 * (the initializer) counts as absent.
 *
 * Never: trusts the daemon's own report of what is durable; reuses a version.
 * --self-check-wipe empties the data directory after each kill: the run then passes only
 * when the checker reports the loss (a test of the checker itself).
 * Exit status: 0 no violation, 1 a violation or a failure (the work directory is kept
 * and named), 2 bad usage, 77 the daemon has no persistence (--data-dir refused).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "daemon_proc.h"
#include "dynemb.h"
#include "mix.h"

#define DIM 8u
#define MAX_BATCH 2048u
#define LOG_CAP (1u << 18) /* updates one writer may log per iteration */
#define EXIT_USAGE 2
#define EXIT_SKIP 77
#define READ_BATCH 1024u

enum { T_SYNC = 0, T_ASYNC = 1, T_TIER = 2, NTABLES = 3 };
static const char *const table_names[NTABLES] = { "crash_sync", "crash_async", "crash_tier" };
#define TIER_BUDGET (192u << 10) /* crash_tier: the index and about a third of 4096 rows */

struct opts {
	unsigned iterations, keys, batch, min_ms, max_ms, window_ms, slack_ms;
	unsigned snapshot_s;
	int modes; /* bit 0 sync, bit 1 async */
	uint64_t seed;
	const char *daemon, *dir;
	bool keep, verbose;
	bool snapshots; /* a snapshotter process in about half of the iterations */
	bool wipe; /* self-check: empty the data directory after each kill (must fail) */
	bool corrupt_old_wal; /* after each kill, flip a bit of a WAL record no table needs */
	bool missing_files;   /* after each kill, a start without CATALOG / MANIFEST: exit 3 */
};

/* ---- the shared log (writer -> parent) ------------------------------------------------ */

struct entry {
	uint32_t n;
	uint32_t key[MAX_BATCH]; /* key indices */
	uint32_t ver[MAX_BATCH];
	uint64_t ack_ns;
	_Atomic uint32_t acked; /* release: ack_ns is written; pairs with the parent's acquire */
};

struct wlog {
	_Atomic uint64_t nsent; /* release: entries < nsent are filled; pairs with the parent */
	_Atomic int32_t error;  /* the writer's error (0 none), set before it stops */
	uint64_t error_ns;      /* when (written before error) */
	/* the snapshotter child: checkpoints completed, its error and when */
	_Atomic uint32_t snaps_ok;
	_Atomic int32_t snap_error;
	uint64_t snap_error_ns;
	struct entry e[LOG_CAP];
};

/* ---- model ------------------------------------------------------------------------------ */

struct keystate {
	uint32_t base;  /* verified at the last start (0: absent) */
	uint32_t first; /* first version sent this iteration (0: none) */
	uint32_t sent;  /* last version sent this iteration */
	uint32_t acked; /* last version acknowledged this iteration (0: none) */
	uint32_t next;  /* the next version to send: never reused */
};

struct run {
	struct opts o;
	char work[PATH_MAX], data[PATH_MAX], tier[PATH_MAX];
	struct dproc d; /* the daemon: its socket, log and pid (daemon_proc.h) */
	struct keystate *ks[NTABLES];
	struct wlog *log;
	/* this iteration's acknowledgement times per key, in version order (versions of a key
	 * in one iteration are consecutive: first, first + 1, ..., sent): ack_ns[off[i] +
	 * (v - first)] for version v of key index i; 0 = not acknowledged */
	uint64_t *off, *ack_ns;
	uint64_t rng;
	/* totals */
	unsigned kills[NTABLES];
	uint64_t acked_updates[NTABLES], acked_keys[NTABLES], verified_keys;
	uint64_t lost_keys, lost_updates_max, snapshots;
	double max_loss_ms;
	unsigned violations;
	unsigned old_flips, refusals; /* --corrupt-old-wal, --missing-files */
};

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t rnd(uint64_t *s) { return mix((*s)++); }

static uint64_t key_of(uint32_t i) { return mix(0xc0ffee0000ull + i) | 1; }

/* the row of version v of key index i (v >= 1): every component exact in float */
static void row_of(uint32_t i, uint32_t v, float *out)
{
	out[0] = (float)v;
	out[1] = (float)i;
	for (uint32_t j = 2; j < DIM; j++)
		out[j] = (float)(mix(((uint64_t)i << 32) ^ ((uint64_t)v << 8) ^ j) >> 41); /* 23 bits */
}

/* ---- the daemon ------------------------------------------------------------------------- */

/* 0 started; -1 failed (said why); EXIT_SKIP: no persistence in this daemon */
static int daemon_start(struct run *r)
{
	char uid[16];
	snprintf(uid, sizeof uid, "%u", (unsigned)geteuid()); /* dynembd allows listed uids only */
	const char *argv[32] = { r->o.daemon, "--foreground", "--socket", r->d.sock,
				 "--data-dir", r->data, "--log-level", "info", "--pages", "small",
				 "--segment-bytes", "2M", "--reserve-bytes", "2G",
				 "--tier-dir", r->tier, "--allow-uid", uid };
	unsigned a = 18;
	char snap[32];
	if (r->o.snapshot_s) {
		snprintf(snap, sizeof snap, "%u", r->o.snapshot_s);
		argv[a++] = "--snapshot-interval-s";
		argv[a++] = snap;
	}
	argv[a] = NULL;
	/* recovery of a big directory takes a while */
	int rc = dproc_start(&r->d, (char *const *)argv, 30);
	if (rc == 2) {
		fprintf(stderr, "crashtest: %s refused its flags (status 2): no persistence "
				"(--data-dir) in this daemon?\n", r->o.daemon);
		dproc_log_tail(&r->d);
		return EXIT_SKIP;
	}
	if (rc)
		fprintf(stderr, "crashtest: dynembd did not start\n");
	return rc ? -1 : 0;
}

/* ---- client side ---------------------------------------------------------------------- */

/* crash_tier (--tier): a sync table whose budget evicts most keys to the disk tier */
static void tier_spec(struct dynemb_table_spec *s)
{
	s->eviction.policy = DYNEMB_EVICTION_LRU;
	s->eviction.budget_bytes = TIER_BUDGET;
	s->eviction.disk_tier = true;
}

/* How verify_table reads table `which`: crash_tier with create lookups, which bring rows
 * back from the tier (read-only ones see only the resident rows) */
static unsigned read_flags(int which)
{
	return which == T_TIER ? 0 : DYNEMB_READONLY;
}

/* crash_tier's statuses as verify_table takes them: a row restored from the tier or
 * resident is FOUND; an all-zero row (the ZEROS initializer: a key created by an earlier
 * verification, never written since, or not at all) is MISSING */
static uint8_t read_status(int which, uint8_t st, const float *row)
{
	if (which != T_TIER || (st != DYNEMB_ST_FOUND && st != DYNEMB_ST_CREATED))
		return st;
	for (unsigned j = 0; j < DIM; j++)
		if (row[j] != 0.0f)
			return DYNEMB_ST_FOUND;
	return DYNEMB_ST_MISSING;
}

static int open_table(dynemb_client *c, const struct opts *o, int which, int *t)
{
	struct dynemb_table_spec s = { .name = table_names[which], .dim = DIM, .init = DYNEMB_ZEROS,
				       .seed = 11 };
	s.durability.mode = which == T_ASYNC ? DYNEMB_DURABLE_ASYNC : DYNEMB_DURABLE_SYNC;
	s.durability.window_ms = which == T_ASYNC ? o->window_ms : 0;
	if (which == T_TIER)
		tier_spec(&s);
	return dynemb_open(c, &s, t);
}

static int connect_client(struct run *r, const char *name, dynemb_client **c)
{
	struct dynemb_connect_opts co = { .name = name, .timeout_ms = 10000 };
	return dynemb_connect(r->d.sock, &co, c);
}

/* The writer process: never returns. */
__attribute__((noreturn)) static void writer(struct run *r, int which, uint64_t seed)
{
	dynemb_client *c = NULL;
	int t = -1, err = connect_client(r, "crashtest-writer", &c);
	if (!err)
		err = open_table(c, &r->o, which, &t);
	struct keystate *ks = r->ks[which]; /* our copy (fork): versions go on from next */
	float *vals = malloc((size_t)MAX_BATCH * DIM * sizeof *vals);
	uint64_t keys[MAX_BATCH];
	uint8_t *used = calloc(r->o.keys, 1);
	if (!err && (!vals || !used))
		err = -ENOMEM;
	for (uint64_t n = 0; !err && n < LOG_CAP; n++) {
		struct entry *e = &r->log->e[n];
		e->n = r->o.batch;
		for (uint32_t j = 0; j < e->n; j++) {
			uint32_t i;
			do
				i = (uint32_t)(rnd(&seed) % r->o.keys);
			while (used[i]);
			used[i] = 1;
			e->key[j] = i;
			e->ver[j] = ks[i].next++;
			keys[j] = key_of(i);
			row_of(i, e->ver[j], vals + (size_t)j * DIM);
		}
		for (uint32_t j = 0; j < e->n; j++)
			used[e->key[j]] = 0;
		atomic_store_explicit(&r->log->nsent, n + 1, memory_order_release);
		err = dynemb_update(c, t, keys, e->n, vals, n + 1, NULL);
		if (err)
			break;
		e->ack_ns = now_ns();
		atomic_store_explicit(&e->acked, 1, memory_order_release);
	}
	r->log->error_ns = now_ns();
	atomic_store(&r->log->error, err);
	/* stay until killed: the parent decides when the iteration ends */
	for (;;)
		pause();
}

/* The snapshotter process (some iterations): dynemb_snapshot of every table, full or
 * incremental at random, at random moments while the writer runs; never returns. */
__attribute__((noreturn)) static void snapshotter(struct run *r, uint64_t seed)
{
	dynemb_client *c = NULL;
	int err = connect_client(r, "crashtest-snapshot", &c);
	while (!err) {
		usleep((useconds_t)(rnd(&seed) % 50000));
		err = dynemb_snapshot(c, NULL, rnd(&seed) & 1, NULL, NULL, NULL);
		if (!err)
			atomic_fetch_add(&r->log->snaps_ok, 1);
	}
	r->log->snap_error_ns = now_ns();
	atomic_store(&r->log->snap_error, err);
	for (;;)
		pause();
}

static void violation(struct run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void violation(struct run *r, const char *fmt, ...)
{
	va_list ap;
	if (r->violations < 20) {
		fprintf(stderr, "crashtest: VIOLATION: ");
		va_start(ap, fmt);
		vfprintf(stderr, fmt, ap);
		va_end(ap);
		fputc('\n', stderr);
	}
	r->violations++;
}

/* Fold the writer's log of table `which` into the model (after both processes died). */
static int fold_log(struct run *r, int which)
{
	struct keystate *ks = r->ks[which];
	uint64_t n = atomic_load_explicit(&r->log->nsent, memory_order_acquire);
	if (n > LOG_CAP)
		n = LOG_CAP;
	memset(r->off, 0, ((size_t)r->o.keys + 1) * sizeof *r->off);
	for (uint64_t e = 0; e < n; e++)
		for (uint32_t j = 0; j < r->log->e[e].n; j++)
			r->off[r->log->e[e].key[j] + 1]++;
	for (uint32_t i = 0; i < r->o.keys; i++)
		r->off[i + 1] += r->off[i];
	free(r->ack_ns);
	r->ack_ns = calloc(r->off[r->o.keys] + 1, sizeof *r->ack_ns);
	if (!r->ack_ns)
		return -ENOMEM;
	for (uint64_t e = 0; e < n; e++) {
		const struct entry *en = &r->log->e[e];
		bool acked = atomic_load_explicit(&en->acked, memory_order_acquire);
		if (acked) {
			r->acked_updates[which]++;
			r->acked_keys[which] += en->n;
		}
		for (uint32_t j = 0; j < en->n; j++) {
			struct keystate *k = &ks[en->key[j]];
			uint32_t v = en->ver[j];
			if (!k->first)
				k->first = v;
			if (v != (k->sent ? k->sent + 1 : k->first))
				return -EPROTO; /* the writer broke its own rule: a bug here */
			k->sent = v;
			if (acked) {
				k->acked = v;
				r->ack_ns[r->off[en->key[j]] + (v - k->first)] = en->ack_ns;
			}
			if (k->next <= v)
				k->next = v + 1;
		}
	}
	return 0;
}

/* Verify one table after a start and make what it holds each key's base. kill_ns: when
 * the daemon was killed (0: the first start). */
static int verify_table(struct run *r, dynemb_client *c, int which, uint64_t kill_ns)
{
	int t = -1, err = open_table(c, &r->o, which, &t);
	if (err) {
		fprintf(stderr, "crashtest: dynemb_open(%s) after restart: %s\n",
			table_names[which], dynemb_strerror(err));
		return err;
	}
	struct keystate *ks = r->ks[which];
	uint64_t keys[READ_BATCH];
	float *got = malloc((size_t)READ_BATCH * DIM * sizeof *got), want[DIM];
	uint8_t st[READ_BATCH];
	if (!got)
		return -ENOMEM;
	for (uint32_t lo = 0; !err && lo < r->o.keys; lo += READ_BATCH) {
		uint32_t n = r->o.keys - lo < READ_BATCH ? r->o.keys - lo : READ_BATCH;
		for (uint32_t j = 0; j < n; j++)
			keys[j] = key_of(lo + j);
		if ((err = dynemb_lookup(c, t, keys, n, got, st, read_flags(which), 0))) {
			fprintf(stderr, "crashtest: dynemb_lookup after restart: %s\n",
				dynemb_strerror(err));
			break;
		}
		for (uint32_t j = 0; j < n; j++) {
			uint32_t i = lo + j;
			struct keystate *k = &ks[i];
			const float *g = got + (size_t)j * DIM;
			uint32_t v = 0;
			st[j] = read_status(which, st[j], g);
			if (st[j] == DYNEMB_ST_FOUND) {
				float f0 = g[0];
				if (!(f0 >= 1.0f && f0 <= 16777216.0f) ||
				    f0 != (float)(uint32_t)f0) {
					violation(r, "%s key %u: a row that was never written (first value"
						  " %g)", table_names[which], i, (double)f0);
					continue;
				}
				v = (uint32_t)f0;
				row_of(i, v, want);
				if (memcmp(want, g, sizeof want)) {
					violation(r,
						  "%s key %u: the row is not version %u as written",
						  table_names[which], i, v);
					continue;
				}
			} else if (st[j] != DYNEMB_ST_MISSING) {
				violation(r, "%s key %u: status %u", table_names[which], i, st[j]);
				continue;
			}
			bool written = v == k->base || (k->first && v >= k->first && v <= k->sent);
			if (!written) {
				const char *how = v > k->base && (!k->first || v < k->first)
					? "was lost before and came back"
					: v < k->base ? "is older than the version verified at the last "
							"start: that start's state was lost"
						      : "was never written";
				violation(r, "%s key %u: version %u %s (verified at the last start: %u;"
					  " sent since: %u..%u, acknowledged up to %u)",
					  table_names[which], i, v, how, k->base, k->first, k->sent,
					  k->acked);
				/* report each loss once: go on from what the table holds */
				k->base = v;
				k->first = k->sent = k->acked = 0;
				continue;
			}
			if (k->acked && v < k->acked) {
				if (which != T_ASYNC)
					violation(r, "%s key %u: acknowledged version %u lost (found %u)",
						  table_names[which], i, k->acked, v);
				uint32_t first_lost = v == k->base ? k->first : v + 1;
				uint64_t a = r->ack_ns[r->off[i] + (first_lost - k->first)];
				double ms = a && kill_ns > a ? (double)(kill_ns - a) / 1e6 : 0;
				r->lost_keys++;
				r->lost_updates_max += k->acked - (v == k->base ? k->first - 1 : v);
				if (ms > r->max_loss_ms)
					r->max_loss_ms = ms;
				if (which == T_ASYNC &&
				    ms > (double)(r->o.window_ms + r->o.slack_ms))
					violation(r, "%s key %u: version %u acknowledged %.1f ms before the "
						  "kill was lost (found %u): more than the window %u ms + "
						  "slack %u ms", table_names[which], i, first_lost, ms, v,
						  r->o.window_ms, r->o.slack_ms);
			}
			r->verified_keys++;
			k->base = v;
			k->first = k->sent = k->acked = 0;
			if (k->next <= v)
				k->next = v + 1;
		}
	}
	free(got);
	return err;
}

/* Start the daemon and verify every table of the selected modes. */
static int start_and_verify(struct run *r, uint64_t kill_ns)
{
	int rc = daemon_start(r);
	if (rc)
		return rc;
	dynemb_client *c = NULL;
	int err = connect_client(r, "crashtest-verify", &c);
	if (err) {
		fprintf(stderr, "crashtest: dynemb_connect after restart: %s\n",
			dynemb_strerror(err));
		return -1;
	}
	for (int w = 0; !err && w < NTABLES; w++)
		if (r->o.modes & (1 << w))
			err = verify_table(r, c, w, kill_ns);
	dynemb_close(c);
	return err ? -1 : 0;
}


/* ---- damage between a kill and the restart (--corrupt-old-wal, --missing-files) ------- */
/*
 * Read with this file's own parsing of the on-disk formats (uring/wal.c, uring/manifest.c
 * state them): MANIFEST gives each table's WAL start LSN; a WAL segment is a 64-byte
 * header, then records of u32 magic, u32 length, u64 lsn, ... A record whose LSN is below
 * every table's start LSN is one no recovery needs: a bit flipped in it must cost no
 * acknowledged write, now or after later writes and kills (the restart, then the next
 * iteration's writes, kill and restart verify exactly that).
 */

static unsigned char *read_all(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) || st.st_size <= 0 || st.st_size > (1ll << 31)) {
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	unsigned char *b = malloc((size_t)st.st_size);
	size_t got = 0;
	while (b && got < (size_t)st.st_size) {
		ssize_t k = pread(fd, b + got, (size_t)st.st_size - got, (off_t)got);
		if (k <= 0) {
			free(b);
			b = NULL;
			break;
		}
		got += (size_t)k;
	}
	close(fd);
	*len = got;
	return b;
}

/* the smallest table start LSN of data/MANIFEST; 0 when unreadable or no table */
static uint64_t manifest_min_lsn(struct run *r)
{
	char path[PATH_MAX + 16];
	snprintf(path, sizeof path, "%s/MANIFEST", r->data);
	size_t len = 0;
	unsigned char *b = read_all(path, &len);
	uint64_t min = 0;
	uint32_t n = 0;
	if (b && len >= 36 && !memcmp(b, "DEMANIF1", 8))
		memcpy(&n, b + 24, 4);
	size_t off = 32;
	for (uint32_t i = 0; i < n && off + 16 <= len; i++) {
		uint32_t nsnaps;
		uint64_t lsn;
		memcpy(&nsnaps, b + off + 4, 4);
		memcpy(&lsn, b + off + 8, 8);
		if (!min || lsn < min)
			min = lsn;
		off += 16 + 8 * (size_t)nsnaps;
	}
	free(b);
	return min;
}

/* Flip one random bit of one random WAL record below every table's start LSN. */
static int corrupt_old_record(struct run *r)
{
	uint64_t min = manifest_min_lsn(r);
	DIR *d = opendir(r->data);
	if (!d)
		return -errno;
	struct dirent *e;
	char pick[PATH_MAX + 32] = "";
	uint64_t pick_off = 0, pick_len = 0, seen = 0;
	while ((e = readdir(d))) {
		if (strncmp(e->d_name, "wal-", 4) || strlen(e->d_name) != 24)
			continue;
		char path[PATH_MAX + 32];
		snprintf(path, sizeof path, "%s/%s", r->data, e->d_name);
		size_t len = 0;
		unsigned char *b = read_all(path, &len);
		for (uint64_t off = 64; b && off + 40 <= len;) {
			uint32_t magic, rlen;
			uint64_t lsn;
			memcpy(&magic, b + off, 4);
			memcpy(&rlen, b + off + 4, 4);
			memcpy(&lsn, b + off + 8, 8);
			if (magic != 0x52574544u || rlen < 40 || rlen % 8 || rlen > len - off)
				break; /* an earlier flip or a torn tail: stop reading this one */
			if (lsn < min && rnd(&r->rng) % ++seen == 0) { /* reservoir: uniform */
				snprintf(pick, sizeof pick, "%s", path);
				pick_off = off;
				pick_len = rlen;
			}
			off += rlen;
		}
		free(b);
	}
	closedir(d);
	if (!seen)
		return 0; /* no old record left (gc, or no snapshot yet): nothing to damage */
	int fd = open(pick, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	off_t at = (off_t)(pick_off + rnd(&r->rng) % pick_len);
	unsigned char c;
	int err = pread(fd, &c, 1, at) == 1 ? 0 : -EIO;
	c ^= (unsigned char)(1u << (rnd(&r->rng) % 8));
	if (!err && (pwrite(fd, &c, 1, at) != 1 || fsync(fd)))
		err = -EIO;
	close(fd);
	if (!err) {
		r->old_flips++;
		if (r->o.verbose)
			printf("flipped a bit of %s at %lld (record below lsn %" PRIu64 ")\n", pick,
			       (long long)at, min);
	}
	return err;
}

/* The log written since offset from contains needle. */
static bool log_has_since(struct run *r, off_t from, const char *needle)
{
	size_t len = 0;
	unsigned char *b = read_all(r->d.logpath, &len);
	bool found = false;
	if (b && (size_t)from < len) {
		char *t = malloc(len - (size_t)from + 1);
		if (t) {
			memcpy(t, b + from, len - (size_t)from);
			t[len - (size_t)from] = 0;
			found = strstr(t, needle) != NULL;
			free(t);
		}
	}
	free(b);
	return found;
}

/* Move data/name aside, start dynembd: it must exit with status 3 within 30 s naming the
 * file; then put the file back. */
static int expect_refusal_without(struct run *r, const char *name)
{
	char path[PATH_MAX + 16], aside[PATH_MAX + 32];
	snprintf(path, sizeof path, "%s/%s", r->data, name);
	snprintf(aside, sizeof aside, "%s/%s.crashtest-aside", r->work, name);
	if (rename(path, aside))
		return errno == ENOENT ? 0 : -errno;
	struct stat st;
	off_t from = stat(r->d.logpath, &st) ? 0 : st.st_size;
	char uid[16];
	snprintf(uid, sizeof uid, "%u", (unsigned)geteuid()); /* dynembd allows listed uids only */
	const char *argv[] = { r->o.daemon, "--foreground", "--socket", r->d.sock, "--data-dir",
			       r->data, "--log-level", "info", "--pages", "small",
			       "--segment-bytes", "2M", "--reserve-bytes", "2G", "--allow-uid", uid,
			       NULL };
	pid_t pid = fork();
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		int fd = open(r->d.logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execv(r->o.daemon, (char *const *)argv);
		_exit(127);
	}
	int status = -1, ws = 0;
	uint64_t end = now_ns() + 30000000000ull;
	while (pid > 0 && waitpid(pid, &ws, WNOHANG) == 0) {
		if (now_ns() > end) {
			kill(pid, SIGKILL);
			waitpid(pid, &ws, 0);
			break;
		}
		usleep(2000);
	}
	if (pid > 0 && WIFEXITED(ws))
		status = WEXITSTATUS(ws);
	char needle[64];
	snprintf(needle, sizeof needle, "%s is missing", name);
	bool named = log_has_since(r, from, needle);
	int err = rename(aside, path) ? -errno : 0;
	if (status != 3 || !named) {
		violation(r, "dynembd without %s: exit status %d (3 wanted), %s", name, status,
			  named ? "the log names it" : "the log does not name it");
		dproc_log_tail(&r->d);
	} else {
		r->refusals++;
	}
	return err;
}

/* The damage of --corrupt-old-wal and --missing-files, between a kill and its restart. */
static int damage_after_kill(struct run *r, unsigned it)
{
	int err = 0;
	if (r->o.missing_files)
		err = expect_refusal_without(r, it % 2 ? "MANIFEST" : "CATALOG");
	if (!err && r->o.corrupt_old_wal)
		err = corrupt_old_record(r);
	if (err)
		fprintf(stderr, "crashtest: damaging the data directory: %s\n", strerror(-err));
	return err;
}

/* One kill of table `which`'s writer's daemon, and the restart that verifies it. */
static int iteration(struct run *r, int which, unsigned it)
{
	uint64_t prev = atomic_load(&r->log->nsent);
	if (prev > LOG_CAP)
		prev = LOG_CAP;
	memset(r->log->e, 0, prev * sizeof r->log->e[0]);
	atomic_store(&r->log->nsent, 0);
	atomic_store(&r->log->error, 0);
	atomic_store(&r->log->snap_error, 0);
	atomic_store(&r->log->snaps_ok, 0);
	uint64_t seed = mix(r->o.seed ^ ((uint64_t)it << 20) ^ (uint64_t)which);
	pid_t w = fork();
	if (w < 0) {
		fprintf(stderr, "crashtest: fork: %s\n", strerror(errno));
		return -1;
	}
	if (w == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		writer(r, which, seed);
	}
	pid_t sn = -1; /* every other iteration on average: checkpoints while writing */
	if (r->o.snapshots && rnd(&r->rng) % 2 == 0) {
		sn = fork();
		if (sn == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			snapshotter(r, seed ^ 0x5eed);
		}
		if (sn < 0) {
			fprintf(stderr, "crashtest: fork: %s\n", strerror(errno));
			kill(w, SIGKILL);
			waitpid(w, NULL, 0);
			return -1;
		}
	}
	/* the kill comes at a random moment after the first acknowledgement */
	uint64_t end = now_ns() + 10000000000ull;
	while (!atomic_load_explicit(&r->log->e[0].acked, memory_order_acquire) &&
	       !atomic_load(&r->log->error) && now_ns() < end)
		usleep(200);
	unsigned span = r->o.max_ms - r->o.min_ms + 1;
	uint64_t delay_ns = ((uint64_t)r->o.min_ms + rnd(&r->rng) % span) * 1000000ull +
			    rnd(&r->rng) % 1000000ull;
	struct timespec ts = { .tv_sec = (time_t)(delay_ns / 1000000000ull),
			       .tv_nsec = (long)(delay_ns % 1000000000ull) };
	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
	int st;
	bool died = waitpid(r->d.pid, &st, WNOHANG) == r->d.pid;
	uint64_t kill_ns = now_ns();
	if (died) {
		r->d.pid = -1;
		fprintf(stderr, "crashtest: dynembd died before the kill (%s %d)\n",
			WIFEXITED(st) ? "status" : "signal",
			WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
		dproc_log_tail(&r->d);
	}
	dproc_kill(&r->d);
	kill(w, SIGKILL);
	while (waitpid(w, NULL, 0) < 0 && errno == EINTR)
		;
	if (sn > 0) {
		kill(sn, SIGKILL);
		while (waitpid(sn, NULL, 0) < 0 && errno == EINTR)
			;
		int serr = atomic_load(&r->log->snap_error);
		if (serr && r->log->snap_error_ns < kill_ns) {
			fprintf(stderr, "crashtest: dynemb_snapshot failed while dynembd ran: %s\n",
				dynemb_strerror(serr));
			return -1;
		}
		r->snapshots += atomic_load(&r->log->snaps_ok);
	}
	int werr = atomic_load(&r->log->error);
	if (werr && r->log->error_ns < kill_ns) {
		fprintf(stderr, "crashtest: the writer failed while dynembd ran: %s\n",
			dynemb_strerror(werr));
		return -1;
	}
	if (died)
		return -1;
	if (r->o.wipe) { /* the self-check: lose everything; the verification must notice */
		dproc_rm_tree(r->data, 1);
		if (mkdir(r->data, 0755))
			return -1;
	}
	if (damage_after_kill(r, it))
		return -1;
	uint64_t nsent = atomic_load(&r->log->nsent);
	int err = fold_log(r, which);
	if (err) {
		fprintf(stderr, "crashtest: the writer's log is inconsistent (%s)\n",
			strerror(-err));
		return -1;
	}
	r->kills[which]++;
	unsigned v0 = r->violations;
	double loss0 = r->max_loss_ms;
	r->max_loss_ms = 0;
	int rc = start_and_verify(r, kill_ns);
	if (r->o.verbose)
		printf("kill %u (%s): %" PRIu64 " updates sent, killed %.1f ms after the first "
		       "ack; max loss %.1f ms; %u violations\n", it + 1, table_names[which], nsent,
		       (double)delay_ns / 1e6, r->max_loss_ms, r->violations - v0);
	if (loss0 > r->max_loss_ms)
		r->max_loss_ms = loss0;
	return rc;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: crashtest [--iterations N] [--mode sync|async|both] [--seed S]\n"
		"                 [--daemon PATH] [--dir DIR] [--keys N] [--batch N]\n"
		"                 [--window-ms MS] [--slack-ms MS] [--min-ms MS] [--max-ms MS]\n"
		"                 [--snapshot-interval S] [--no-snapshots] [--keep]\n"
		"                 [--verbose] [--self-check-wipe] [--tier] [--corrupt-old-wal]\n"
		"                 [--missing-files]\n"
		"Starts dynembd with a data directory, writes acknowledged updates, SIGKILLs it at\n"
		"a random moment, restarts it and checks every acknowledged update (sync), or that\n"
		"only updates acknowledged within the window before the kill were lost (async),\n"
		"and that nothing that was never written appears.\n"
		"  --iterations N   kills per mode (default 30)\n"
		"  --mode M         sync, async or both (default both: N sync kills, then N async;\n"
		"                   both tables are verified at every restart)\n"
		"  --seed S         random seed (default 1)\n"
		"  --daemon PATH    dynembd (default: $DYNEMBD, else ../src/server/dynembd next to\n"
		"                   this program)\n"
		"  --dir DIR        work directory: data, socket, daemon log (default: a new one\n"
		"                   under /var/tmp, removed when the run passes)\n"
		"  --keys N         key space per table (default 4096)\n"
		"  --batch N        keys per update, 1..%u (default 16)\n"
		"  --window-ms MS   async table's group-commit window (default 50)\n"
		"  --slack-ms MS    allowed loss beyond the window (default 30: one buffer write and\n"
		"                   scheduling on loaded cores)\n"
		"  --min-ms/--max-ms  kill delay after the first ack (default 0..200)\n"
		"  --snapshot-interval S  dynembd --snapshot-interval-s S (default 1; 0: the\n"
		"                   daemon's default, no periodic snapshots)\n"
		"  --no-snapshots   no snapshotter (default: in about half of the iterations a\n"
		"                   process calls dynemb_snapshot, full or incremental, in a loop\n"
		"                   while the writer runs, so kills also hit checkpoints)\n"
		"  --keep           keep the work directory\n"
		"  --verbose        one line per kill\n"
		"  --mode tier      only crash_tier's kills (see --tier)\n"
		"  --tier           also N kills of crash_tier: sync, LRU eviction to the disk\n"
		"                   tier under a small budget (read back with create lookups)\n"
		"  --self-check-wipe  empty the data directory after each kill and expect the\n"
		"                   checker to report violations: exit 0 when it does (a check\n"
		"                   of this checker), 1 when it does not\n"
		"  --corrupt-old-wal  after each kill, flip a random bit of a random WAL record\n"
		"                   below every table's start LSN (MANIFEST): no acknowledged\n"
		"                   write may be lost, at this restart or after later ones\n"
		"  --missing-files  after each kill, start dynembd without CATALOG (even kills)\n"
		"                   or MANIFEST (odd): it must exit 3 naming the file; then the\n"
		"                   file is put back and the restart verifies as usual\n"
		"Exit status: 0 no violation, 1 a violation or failure, 2 bad usage, 77 the daemon\n"
		"has no persistence.\n", MAX_BATCH);
}

static int parse(int argc, char **argv, struct opts *o)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return 1;
		}
		if (!strcmp(a, "--keep")) {
			o->keep = true;
			continue;
		}
		if (!strcmp(a, "--no-snapshots")) {
			o->snapshots = false;
			continue;
		}
		if (!strcmp(a, "--self-check-wipe")) {
			o->wipe = true;
			continue;
		}
		if (!strcmp(a, "--corrupt-old-wal")) {
			o->corrupt_old_wal = true;
			continue;
		}
		if (!strcmp(a, "--missing-files")) {
			o->missing_files = true;
			continue;
		}
		if (!strcmp(a, "--verbose") || !strcmp(a, "-v")) {
			o->verbose = true;
			continue;
		}
		if (!strcmp(a, "--tier")) {
			o->modes |= 1 << T_TIER;
			continue;
		}
		if (!v) {
			fprintf(stderr, "crashtest: unknown or incomplete option '%s'\n", a);
			return -1;
		}
		i++;
		if (!strcmp(a, "--daemon")) {
			o->daemon = v;
			continue;
		}
		if (!strcmp(a, "--dir")) {
			o->dir = v;
			continue;
		}
		if (!strcmp(a, "--mode")) {
			int tier = o->modes & (1 << T_TIER); /* --tier, before or after */
			if (!strcmp(v, "sync"))
				o->modes = 1 | tier;
			else if (!strcmp(v, "async"))
				o->modes = 2 | tier;
			else if (!strcmp(v, "both"))
				o->modes = 3 | tier;
			else if (!strcmp(v, "tier"))
				o->modes = 1 << T_TIER;
			else {
				fprintf(stderr,
					"crashtest: --mode is sync, async, both or tier, not '%s'\n", v);
				return -1;
			}
			continue;
		}
		char *end;
		errno = 0;
		unsigned long long x = strtoull(v, &end, 0);
		if (*v == '-' || !*v || *end || errno) {
			fprintf(stderr, "crashtest: '%s' is not a number for %s\n", v, a);
			return -1;
		}
		if (!strcmp(a, "--iterations"))
			o->iterations = (unsigned)(x > 1000000 ? 1000001 : x);
		else if (!strcmp(a, "--seed"))
			o->seed = x;
		else if (!strcmp(a, "--keys"))
			o->keys = (unsigned)(x > (1u << 24) ? (1u << 24) + 1 : x);
		else if (!strcmp(a, "--batch"))
			o->batch = (unsigned)(x > MAX_BATCH ? MAX_BATCH + 1 : x);
		else if (!strcmp(a, "--window-ms"))
			o->window_ms = (unsigned)(x > 100000 ? 100000 : x);
		else if (!strcmp(a, "--slack-ms"))
			o->slack_ms = (unsigned)(x > 100000 ? 100000 : x);
		else if (!strcmp(a, "--min-ms"))
			o->min_ms = (unsigned)(x > 100000 ? 100000 : x);
		else if (!strcmp(a, "--max-ms"))
			o->max_ms = (unsigned)(x > 100000 ? 100000 : x);
		else if (!strcmp(a, "--snapshot-interval"))
			o->snapshot_s = (unsigned)(x > 86400 ? 86400 : x);
		else {
			fprintf(stderr, "crashtest: unknown option '%s'\n", a);
			return -1;
		}
	}
	if (!o->iterations || o->iterations > 1000000 || o->keys < 1 || o->keys > (1u << 24) ||
	    o->batch < 1 || o->batch > MAX_BATCH || o->batch > o->keys || o->window_ms < 1 ||
	    o->window_ms > 60000 || o->min_ms > o->max_ms) {
		fprintf(stderr, "crashtest: --iterations 1..1000000, --keys 1..2^24, --batch 1..%u"
				" and <= --keys, --window-ms 1..60000, --min-ms <= --max-ms\n",
			MAX_BATCH);
		return -1;
	}
	return 0;
}

static int setup(struct run *r, const char *argv0)
{
	static char def_daemon[PATH_MAX];
	if (!r->o.daemon)
		r->o.daemon = dproc_default_exe(def_daemon, sizeof def_daemon, argv0);
	if (!r->o.daemon)
		return -ENAMETOOLONG;
	r->d.exe = r->o.daemon;
	if (access(r->o.daemon, X_OK)) {
		fprintf(stderr, "crashtest: no dynembd at %s (--daemon PATH or $DYNEMBD)\n",
			r->o.daemon);
		return -ENOENT;
	}
	if (r->o.dir) {
		if (mkdir(r->o.dir, 0755) && errno != EEXIST)
			return -errno;
		snprintf(r->work, sizeof r->work, "%s", r->o.dir);
	} else {
		snprintf(r->work, sizeof r->work, "/var/tmp/dynemb-crash.XXXXXX");
		if (!mkdtemp(r->work))
			return -errno;
	}
	if (strlen(r->work) + 16 > sizeof r->d.sock || strlen(r->work) + 32 > PATH_MAX)
		return -ENAMETOOLONG;
	snprintf(r->data, sizeof r->data, "%s/data", r->work);
	snprintf(r->d.sock, sizeof r->d.sock, "%s/d.sock", r->work);
	snprintf(r->d.logpath, sizeof r->d.logpath, "%s/dynembd.log", r->work);
	snprintf(r->tier, sizeof r->tier, "%s/tier", r->work);
	if (mkdir(r->data, 0755) && errno != EEXIST)
		return -errno;
	for (int w = 0; w < NTABLES; w++) {
		r->ks[w] = calloc(r->o.keys, sizeof *r->ks[w]);
		if (!r->ks[w])
			return -ENOMEM;
		for (uint32_t i = 0; i < r->o.keys; i++)
			r->ks[w][i].next = 1;
	}
	r->off = calloc((size_t)r->o.keys + 1, sizeof *r->off);
	r->log = mmap(NULL, sizeof *r->log, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
		      -1, 0);
	if (r->log == MAP_FAILED) {
		r->log = NULL;
		return -errno;
	}
	return r->off ? 0 : -ENOMEM;
}

int main(int argc, char **argv)
{
	static struct run run;
	struct run *r = &run;
	r->o = (struct opts){ .iterations = 30, .keys = 4096, .batch = 16, .min_ms = 0,
			      .max_ms = 200, .window_ms = 50, .slack_ms = 30, .modes = 3,
			      .seed = 1, .snapshot_s = 1, .snapshots = true };
	int rc = parse(argc, argv, &r->o);
	if (rc)
		return rc > 0 ? 0 : EXIT_USAGE;
	signal(SIGPIPE, SIG_IGN);
	r->d.pid = -1;
	r->rng = mix(r->o.seed);
	int err = setup(r, argv[0]);
	if (err) {
		fprintf(stderr, "crashtest: setup: %s\n", strerror(-err));
		return 1;
	}
	uint64_t t0 = now_ns();
	rc = start_and_verify(r, 0);
	for (int which = 0; !rc && which < NTABLES; which++) {
		if (!(r->o.modes & (1 << which)))
			continue;
		for (unsigned it = 0; !rc && it < r->o.iterations; it++)
			rc = iteration(r, which, it);
	}
	if (!rc && dproc_stop(&r->d, 10)) {
		fprintf(stderr, "crashtest: dynembd did not exit cleanly on SIGTERM\n");
		dproc_log_tail(&r->d);
		rc = -1;
	}
	dproc_kill(&r->d);
	if (rc == EXIT_SKIP) {
		printf("crashtest: SKIP: %s has no persistence\n", r->o.daemon);
		if (!r->o.keep && !r->o.dir)
			dproc_rm_tree(r->work, 2);
		return EXIT_SKIP;
	}
	printf("crashtest: %u kills (%u sync, %u async, %u tier) in %.1f s; acknowledged updates"
	       " verified: %" PRIu64 " sync (%" PRIu64 " key-updates), %" PRIu64 " tier (%" PRIu64
	       " key-updates), %" PRIu64 " async (%" PRIu64
	       " key-updates); async keys that lost acknowledged updates: %" PRIu64 " (within the"
	       " window); worst loss %.1f ms (asserted <= window %u ms + slack %u ms); %" PRIu64 " snapshots"
	       " taken while writing; %u violations\n",
	       r->kills[T_SYNC] + r->kills[T_ASYNC] + r->kills[T_TIER], r->kills[T_SYNC],
	       r->kills[T_ASYNC], r->kills[T_TIER],
	       (double)(now_ns() - t0) / 1e9, r->acked_updates[T_SYNC], r->acked_keys[T_SYNC],
	       r->acked_updates[T_TIER], r->acked_keys[T_TIER],
	       r->acked_updates[T_ASYNC], r->acked_keys[T_ASYNC], r->lost_keys, r->max_loss_ms,
	       r->o.window_ms, r->o.slack_ms, r->snapshots, r->violations);
	if (r->o.corrupt_old_wal || r->o.missing_files)
		printf("crashtest: %u old WAL records damaged, %u starts refused without CATALOG or "
		       "MANIFEST\n", r->old_flips, r->refusals);
	bool bad = rc || r->violations;
	if (r->o.wipe) { /* the self-check passes when the checker caught the wipes */
		bad = rc || !r->violations;
		printf("crashtest: self-check: %s\n", rc ? "the run failed for another reason"
			: r->violations ? "the wiped updates were caught, as they must be"
					: "the wiped updates were NOT caught: the checker is broken");
	}
	if (bad || r->o.keep || r->o.dir)
		printf("crashtest: work directory kept: %s\n", r->work);
	else
		dproc_rm_tree(r->work, 2);
	for (int w = 0; w < NTABLES; w++)
		free(r->ks[w]);
	free(r->off);
	free(r->ack_ns);
	if (r->log)
		munmap(r->log, sizeof *r->log);
	if (bad)
		fprintf(stderr, "crashtest: FAILED\n");
	return bad ? 1 : 0;
}
