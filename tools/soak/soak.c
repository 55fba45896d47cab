/*
 * soak.c — the soak driver: dynembd under mixed load, client and daemon kills and a
 * hostile client for --seconds, then the promises checked.
 *
 * Owns the `soak` program. It starts dynembd (a data directory, a private socket), then
 * forks --workers worker processes (worker.c: lookups, updates, gradients, erases,
 * sampling, top-k on five tables: two sync, one async, one without durability, one
 * evicting), a snapshotter and a hostile client (hostile.c). While they run:
 *   - every --client-kill-ms (0.5x..1.5x, at random) a random worker is SIGKILLed and a
 *     new one takes its slot (its keys) 50 ms later;
 *   - every --daemon-kill-s (0.5x..1.5x) the daemon is SIGKILLed, then every child; the
 *     daemon is restarted, every table is read back and checked against the oracle (sync
 *     tables: every acknowledged update present), and the children are started again;
 *   - every second the daemon's VmRSS (/proc/PID/status) is sampled and every table's
 *     statistics read and checked: counters that only grow did not shrink within one
 *     daemon run, durable_lsn <= wal_lsn, a sync table's keys lie between the oracle's
 *     acknowledged and sent distinct keys.
 * At the end the children are killed, every table is read back (after a last daemon kill
 * and restart too) and its stats' key count must equal the rows read; the daemon must
 * exit 0 on SIGTERM; VmRSS after the warm-up (--warmup-s) must stay under the warm-up's
 * peak times (1 + --rss-tolerance-pct / 100) plus --rss-slack-mib.
 *
 * The oracle (oracle.c) shares no code with the daemon. Exit status: 0 no violation, 1 a
 * violation or a failure (each named on stderr and in the summary; the work directory
 * is kept), 2 bad usage, 77 the daemon has no persistence (--data-dir refused).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "../daemon_proc.h"
#include "../mix.h"
#include "soak.h"

#define EXIT_USAGE 2
#define EXIT_SKIP 77
#define READ_BATCH 1024u

struct drv {
	struct soak_ctx x;
	struct dproc d;
	char work[PATH_MAX], data[PATH_MAX];
	char exe[PATH_MAX];
	size_t shared_bytes;
	pid_t worker[SOAK_MAX_WORKERS], snap, hostile;
	uint64_t rng, t0;
	dynemb_client *c;
	int h[SOAK_NTABLES];
	struct dynemb_stats prev[SOAK_NTABLES]; /* this daemon run's last stats */
	struct dynemb_stats end[SOAK_NTABLES];  /* at the end, before the last kill */
	uint64_t evicted_total;                 /* soak_evict's evictions, all daemon runs */
	bool have_prev;
	uint64_t durable_before_kill[SOAK_NTABLES];
	uint64_t rss_warm_kib, rss_after_kib, rss_last_kib, rss_samples;
	unsigned client_kills, daemon_kills, child_deaths, verifications;
	uint64_t rows_verified, stat_checks;
	bool failed; /* a failure that is not a violation of a promise (setup, I/O) */
};

static uint64_t rnd(struct drv *r) { return mix(r->rng++); }

static double secs(const struct drv *r) { return (double)(dproc_now_ns() - r->t0) / 1e9; }

/* ---- the daemon and the children ----------------------------------------------------- */

/* --wal-segment-bytes 8M: recovery reads a whole WAL segment into one malloc'd buffer,
 * and glibc keeps that memory after the free (its mmap threshold has grown by then), so
 * a daemon restarted on a 64 MiB segment (the default) holds up to 64 MiB more than the
 * one before it. Small segments keep that under the RSS slack; docs/testing.md, "Soak". */
static int daemon_start(struct drv *r)
{
	char uid[16];
	snprintf(uid, sizeof uid, "%u", (unsigned)getuid());
	char *argv[] = { (char *)r->d.exe, "--foreground", "--socket", r->d.sock, "--data-dir",
			 r->data, "--log-level", "info", "--pages", "small", "--segment-bytes", "2M",
			 "--reserve-bytes", "1G", "--snapshot-interval-s", "5", "--allow-uid", uid,
			 "--wal-segment-bytes", "8M", NULL };
	int rc = dproc_start(&r->d, argv, 60);
	if (rc == 2) {
		fprintf(stderr, "soak: %s refused its flags (status 2): no persistence "
				"(--data-dir) in this daemon?\n", r->d.exe);
		dproc_log_tail(&r->d);
		return EXIT_SKIP;
	}
	if (rc)
		return -1;
	r->have_prev = false;
	return 0;
}

static pid_t spawn(struct drv *r, int kind, unsigned slot)
{
	uint64_t seed = rnd(r);
	pid_t pid = fork();
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL); /* never touches the driver's r->c */
		if (kind == 0)
			soak_worker(&r->x, slot, seed);
		if (kind == 1)
			soak_snapshotter(&r->x, seed);
		soak_hostile(&r->x, seed);
	}
	if (pid < 0) {
		fprintf(stderr, "soak: fork: %s\n", strerror(errno));
		r->failed = true;
	}
	return pid;
}

static void spawn_all(struct drv *r)
{
	for (unsigned i = 0; i < r->x.o.workers; i++)
		r->worker[i] = spawn(r, 0, i);
	r->snap = spawn(r, 1, 0);
	r->hostile = r->x.o.no_hostile ? -1 : spawn(r, 2, 0);
}

static void kill_wait(pid_t *pid)
{
	if (*pid > 0) {
		kill(*pid, SIGKILL);
		while (waitpid(*pid, NULL, 0) < 0 && errno == EINTR)
			;
	}
	*pid = -1;
}

static void kill_all(struct drv *r)
{
	for (unsigned i = 0; i < r->x.o.workers; i++)
		kill_wait(&r->worker[i]);
	kill_wait(&r->snap);
	kill_wait(&r->hostile);
}

/* A child that exited without being killed reported a violation first (or crashed):
 * count it, say how, and start another in its place. */
static void reap_children(struct drv *r)
{
	int st;
	pid_t pid;
	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		if (pid == r->d.pid) { /* the daemon: dproc_exited sees it next */
			r->d.pid = -1;
			r->d.status = st;
			soak_violation(&r->x, "dynembd exited on its own (%s %d) %.1f s into the run",
				       WIFEXITED(st) ? "status" : "signal",
				       WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st), secs(r));
			dproc_log_tail(&r->d);
			continue;
		}
		const char *what = NULL;
		int kind = 0;
		unsigned slot = 0;
		for (unsigned i = 0; i < r->x.o.workers; i++)
			if (r->worker[i] == pid) {
				what = "worker", slot = i;
				r->worker[i] = -1;
			}
		if (pid == r->snap)
			what = "snapshotter", kind = 1, r->snap = -1;
		if (pid == r->hostile)
			what = "hostile client", kind = 2, r->hostile = -1;
		if (!what)
			continue;
		r->child_deaths++;
		if (WIFSIGNALED(st))
			soak_violation(&r->x, "the %s process died of signal %d", what, WTERMSIG(st));
		pid_t n = spawn(r, kind, slot);
		if (kind == 0)
			r->worker[slot] = n;
		else if (kind == 1)
			r->snap = n;
		else
			r->hostile = n;
	}
}

/* ---- the driver's own client: reading back and statistics ---------------------------- */

static int driver_connect(struct drv *r)
{
	int err = soak_connect(&r->x, "soak-driver", 8u << 20, &r->c);
	for (int t = 0; !err && t < SOAK_NTABLES; t++)
		err = soak_open(r->c, t, &r->h[t]);
	if (err) {
		fprintf(stderr, "soak: the driver's connection: %s\n", dynemb_strerror(err));
		dynemb_close(r->c);
		r->c = NULL;
		r->failed = true;
	}
	return err;
}

static bool strict(int t) { return t == T_SYNC || t == T_SGD; }

/* Read every key of table t back (no writer runs) and check it; *present gets the rows
 * found. 0, or negative when a call failed. */
static int read_back(struct drv *r, int t, const char *who, uint64_t *present)
{
	uint64_t keys[READ_BATCH];
	static float vals[READ_BATCH * SOAK_DIM];
	uint8_t st[READ_BATCH];
	*present = 0;
	for (uint32_t lo = 0; lo < r->x.o.keys; lo += READ_BATCH) {
		uint32_t n = r->x.o.keys - lo < READ_BATCH ? r->x.o.keys - lo : READ_BATCH;
		for (uint32_t j = 0; j < n; j++)
			keys[j] = oracle_key(t, lo + j);
		int err = dynemb_lookup(r->c, r->h[t], keys, n, vals, st, DYNEMB_READONLY, 0);
		if (err) {
			fprintf(stderr, "soak: %s: reading %s back: %s\n", who, soak_table_names[t],
				dynemb_strerror(err));
			r->failed = true;
			return err;
		}
		for (uint32_t j = 0; j < n; j++) {
			struct soak_key *k = soak_key(&r->x, t, lo + j);
			oracle_check(&r->x, who, t, lo + j, st[j], vals + (size_t)j * SOAK_DIM,
				     strict(t) ? atomic_load(&k->acked) : 0, atomic_load(&k->sent));
			*present += st[j] != DYNEMB_ST_MISSING;
		}
		r->rows_verified += n;
	}
	return 0;
}

static int get_stats(struct drv *r, int t, struct dynemb_stats *s)
{
	int err = dynemb_stats(r->c, r->h[t], s);
	if (err) {
		fprintf(stderr, "soak: dynemb_stats(%s): %s\n", soak_table_names[t],
			dynemb_strerror(err));
		r->failed = true;
	}
	return err;
}

/* With every writer stopped: each table read back and checked, and its statistics
 * consistent with what was read. */
static int verify_quiet(struct drv *r, const char *who)
{
	r->verifications++;
	for (int t = 0; t < SOAK_NTABLES; t++) {
		struct dynemb_stats a, b;
		uint64_t present = 0;
		int err;
		/* an evictor pass may still be finishing: retry until two reads agree */
		for (int tries = 0; tries < 5; tries++) {
			if ((err = get_stats(r, t, &a)) || (err = read_back(r, t, who, &present)) ||
			    (err = get_stats(r, t, &b)))
				return err;
			if (a.keys == b.keys && b.keys == present)
				break;
			usleep(200000);
		}
		r->stat_checks++;
		if (b.keys != present)
			soak_violation(&r->x, "%s: %s: the stats count %" PRIu64 " keys, reading every"
					      " key back found %" PRIu64, who, soak_table_names[t],
				       b.keys, present);
		if (b.rows_free > b.rows_allocated || b.rows_allocated - b.rows_free != b.keys)
			soak_violation(&r->x, "%s: %s: %" PRIu64 " rows allocated and %" PRIu64 " free"
					      " do not leave %" PRIu64 " live keys", who,
				       soak_table_names[t], b.rows_allocated, b.rows_free, b.keys);
		if (t == T_EVICT && b.resident_bytes > b.budget_bytes)
			soak_violation(&r->x, "%s: soak_evict holds %" PRIu64 " resident bytes, over"
					      " its budget of %" PRIu64 ", with no writer running (%"
					      PRIu64 " keys, %" PRIu64 " row bytes, %" PRIu64 " arena"
					      " bytes, %" PRIu64 " evicted)", who, b.resident_bytes,
				       b.budget_bytes, b.keys, b.row_bytes, b.arena_bytes, b.evicted);
		if (b.durable_lsn > b.wal_lsn)
			soak_violation(&r->x, "%s: %s: durable_lsn %" PRIu64 " > wal_lsn %" PRIu64, who,
				       soak_table_names[t], b.durable_lsn, b.wal_lsn);
		if (strict(t) && b.wal_lsn < r->durable_before_kill[t])
			soak_violation(&r->x, "%s: %s: wal_lsn %" PRIu64 " after the restart is below"
					      " the durable_lsn %" PRIu64 " seen before the kill", who,
				       soak_table_names[t], b.wal_lsn, r->durable_before_kill[t]);
		r->prev[t] = b;
	}
	r->have_prev = true;
	return 0;
}

/* Distinct keys with acked >= 1 and with sent >= 1 (or touched by a creating lookup) */
static void oracle_counts(struct drv *r, int t, uint64_t *acked, uint64_t *maybe)
{
	*acked = *maybe = 0;
	for (uint32_t i = 0; i < r->x.o.keys; i++) {
		struct soak_key *k = soak_key(&r->x, t, i);
		*acked += atomic_load(&k->acked) > 0;
		*maybe += atomic_load(&k->sent) > 0 || atomic_load(&k->touched);
	}
}

#define MONO(f) { #f, offsetof(struct dynemb_stats, f) }
static const struct { const char *name; size_t off; } monotone[] = {
	MONO(wal_lsn), MONO(durable_lsn), MONO(snapshots), MONO(snapshot_lsn), MONO(evicted),
	MONO(splits), MONO(dir_doublings), MONO(segments),
};

/* While the children run: statistics that hold at any moment. */
static void check_stats_live(struct drv *r)
{
	for (int t = 0; t < SOAK_NTABLES; t++) {
		uint64_t acked0, maybe0, acked1, maybe1;
		struct dynemb_stats s;
		oracle_counts(r, t, &acked0, &maybe0);
		if (get_stats(r, t, &s))
			return;
		oracle_counts(r, t, &acked1, &maybe1);
		r->stat_checks++;
		const char *name = soak_table_names[t];
		if (t == T_SYNC && (s.keys < acked0 || s.keys > maybe1))
			soak_violation(&r->x, "stats of soak_sync: %" PRIu64 " keys, the oracle has"
					      " %" PRIu64 " acknowledged and %" PRIu64 " sent", s.keys,
				       acked0, maybe1);
		if (t == T_SGD && (s.keys < acked0 || s.keys > maybe1))
			soak_violation(&r->x, "stats of soak_sgd: %" PRIu64 " keys, the oracle has"
					      " %" PRIu64 " stepped and %" PRIu64 " touched", s.keys,
				       acked0, maybe1);
		if (s.keys > r->x.o.keys)
			soak_violation(&r->x, "stats of %s: %" PRIu64 " keys, but only %u exist", name,
				       s.keys, r->x.o.keys);
		if (s.durable_lsn > s.wal_lsn)
			soak_violation(&r->x, "stats of %s: durable_lsn %" PRIu64 " > wal_lsn %" PRIu64,
				       name, s.durable_lsn, s.wal_lsn);
		if (s.dim != SOAK_DIM || s.read_only)
			soak_violation(&r->x, "stats of %s: dim %u (not %u), read_only %u", name,
				       s.dim, SOAK_DIM, s.read_only);
		for (size_t m = 0; r->have_prev && m < sizeof monotone / sizeof monotone[0]; m++) {
			uint64_t was, now;
			memcpy(&was, (const char *)&r->prev[t] + monotone[m].off, sizeof was);
			memcpy(&now, (const char *)&s + monotone[m].off, sizeof now);
			if (now < was)
				soak_violation(&r->x, "stats of %s: %s went down from %" PRIu64 " to %"
						      PRIu64 " within one daemon run", name,
					       monotone[m].name, was, now);
		}
		r->prev[t] = s;
	}
	r->have_prev = true;
}

static void sample_rss(struct drv *r)
{
	if (r->d.pid <= 0)
		return;
	uint64_t kib = dproc_rss_kib(r->d.pid);
	if (!kib)
		return;
	r->rss_last_kib = kib;
	r->rss_samples++;
	if (secs(r) < r->x.o.warmup_s) {
		if (kib > r->rss_warm_kib)
			r->rss_warm_kib = kib;
	} else if (kib > r->rss_after_kib) {
		r->rss_after_kib = kib;
	}
}

/* Kill the daemon (and then every child), restart it, read everything back, restart
 * the children. 0, or negative (the run cannot go on). */
static int daemon_cycle(struct drv *r, bool kill_daemon, const char *who)
{
	atomic_store(&r->x.sh->down, 1);
	for (int t = 0; t < SOAK_NTABLES; t++)
		r->durable_before_kill[t] = r->have_prev ? r->prev[t].durable_lsn : 0;
	if (kill_daemon && r->have_prev)
		r->evicted_total += r->prev[T_EVICT].evicted;
	if (kill_daemon)
		dproc_kill(&r->d);
	kill_all(r);
	dynemb_close(r->c);
	r->c = NULL;
	if (kill_daemon && r->x.o.self_check) { /* lose everything: the checks must notice */
		dproc_rm_tree(r->data, 2);
		if (mkdir(r->data, 0755)) {
			r->failed = true;
			return -1;
		}
	}
	if (kill_daemon) {
		r->daemon_kills++;
		int rc = daemon_start(r);
		if (rc) {
			r->failed = true;
			return -1;
		}
	}
	if (driver_connect(r) || verify_quiet(r, who))
		return -1;
	return 0;
}

static void resume(struct drv *r)
{
	atomic_store(&r->x.sh->down, 0);
	spawn_all(r);
}

static uint64_t jitter(struct drv *r, uint64_t ns) { return ns / 2 + rnd(r) % (ns + 1); }

static int run(struct drv *r)
{
	const struct soak_opts *o = &r->x.o;
	int rc = daemon_start(r);
	if (rc)
		return rc;
	if (driver_connect(r) || verify_quiet(r, "first start"))
		return -1;
	resume(r);
	uint64_t end = r->t0 + (uint64_t)o->seconds * 1000000000ull;
	uint64_t now = dproc_now_ns();
	uint64_t ck_ns = (uint64_t)o->client_kill_ms * 1000000ull;
	uint64_t dk_ns = (uint64_t)o->daemon_kill_s * 1000000000ull;
	uint64_t next_ck = now + jitter(r, ck_ns), next_dk = now + jitter(r, dk_ns);
	uint64_t next_sample = now + 1000000000ull;
	while ((now = dproc_now_ns()) < end && !r->failed) {
		usleep(20000);
		reap_children(r);
		if (r->d.pid <= 0) /* died on its own: reported; the run stops here */
			return -1;
		if (o->client_kill_ms && now >= next_ck) {
			unsigned slot = (unsigned)(rnd(r) % o->workers);
			kill_wait(&r->worker[slot]);
			usleep(50000); /* let the daemon finish what the dead client had in flight */
			r->worker[slot] = spawn(r, 0, slot);
			r->client_kills++;
			next_ck = dproc_now_ns() + jitter(r, ck_ns);
		}
		if (!o->no_daemon_kills && now >= next_dk && now + 2000000000ull < end) {
			char who[48];
			snprintf(who, sizeof who, "after daemon kill %u", r->daemon_kills + 1);
			if (daemon_cycle(r, true, who))
				return -1;
			resume(r);
			next_dk = dproc_now_ns() + jitter(r, dk_ns);
		}
		if (now >= next_sample) {
			sample_rss(r);
			check_stats_live(r);
			next_sample = now + 1000000000ull;
			if (o->verbose)
				printf("soak: %.0f s: VmRSS %" PRIu64 " KiB, %" PRIu64 " lookups, %"
				       PRIu64 " updates, %" PRIu64 " gradient calls, %u client kills,"
				       " %u daemon kills, %" PRIu64 " violations\n", secs(r),
				       r->rss_last_kib, atomic_load(&r->x.sh->count[C_LOOKUP_CALLS]),
				       atomic_load(&r->x.sh->count[C_UPDATE_CALLS]),
				       atomic_load(&r->x.sh->count[C_GRAD_CALLS]), r->client_kills,
				       r->daemon_kills, atomic_load(&r->x.sh->viol));
		}
	}
	if (r->failed)
		return -1;
	/* the end: writers stopped, everything read back; then once more after a kill */
	if (daemon_cycle(r, false, "at the end"))
		return -1;
	memcpy(r->end, r->prev, sizeof r->end);
	if ((!o->no_daemon_kills && daemon_cycle(r, true, "after the final daemon kill")))
		return -1;
	dynemb_close(r->c);
	r->c = NULL;
	if (dproc_stop(&r->d, 30)) {
		soak_violation(&r->x, "dynembd did not exit with status 0 on SIGTERM (%s %d)",
			       WIFEXITED(r->d.status) ? "status" : "signal",
			       WIFEXITED(r->d.status) ? WEXITSTATUS(r->d.status)
						      : WTERMSIG(r->d.status));
		dproc_log_tail(&r->d);
	}
	return 0;
}

/* ---- options, setup, summary ---------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: soak [--seconds N] [--workers N] [--keys N] [--client-kill-ms MS]\n"
		"            [--daemon-kill-s S] [--no-daemon-kills] [--no-hostile] [--warmup-s S]\n"
		"            [--rss-tolerance-pct P] [--rss-slack-mib M] [--timeout-ms MS]\n"
		"            [--seed S] [--daemon PATH] [--dir DIR] [--keep] [--verbose]\n"
		"            [--self-check-wipe] [--require-hello-deadline]\n"
		"Runs dynembd under several clients (lookups, updates, gradients, erases,\n"
		"sampling, top-k, snapshots) on sync, async, non-durable and evicting tables,\n"
		"kills a client every few seconds and the daemon now and then, runs a hostile\n"
		"client's cheap attacks, and checks: every acknowledged update of the sync\n"
		"tables is present, every row read is one that was written, the statistics add\n"
		"up, and the daemon's VmRSS did not grow after the warm-up.\n"
		"  --seconds N          how long (default 60)\n"
		"  --workers N          worker processes, 1..%u (default 4)\n"
		"  --keys N             keys per table, 64..1048576 (default 2048)\n"
		"  --client-kill-ms MS  SIGKILL a random worker every MS (0.5x..1.5x; default\n"
		"                       3000; 0: never)\n"
		"  --daemon-kill-s S    SIGKILL dynembd every S seconds (0.5x..1.5x; default 20)\n"
		"  --no-daemon-kills    never (nor at the end)\n"
		"  --no-hostile         no hostile client\n"
		"  --require-hello-deadline  the daemon must close connections that send no\n"
		"                       HELLO within 5 s (default: counted, not required)\n"
		"  --warmup-s S         RSS warm-up (default: seconds / 6, within 5..60)\n"
		"  --rss-tolerance-pct P  allowed VmRSS growth after the warm-up (default 25)\n"
		"  --rss-slack-mib M    plus this much (default 16)\n"
		"  --timeout-ms MS      each client call's timeout (default 20000)\n"
		"  --seed S             random seed (default 1)\n"
		"  --daemon PATH        dynembd (default: $DYNEMBD, else the build's)\n"
		"  --dir DIR            work directory (default: a new one under /var/tmp,\n"
		"                       removed when the run passes)\n"
		"  --keep               keep the work directory\n"
		"  --verbose            a line every second\n"
		"  --self-check-wipe    empty the data directory at each daemon kill: exit 0 only\n"
		"                       when the checks report lost acknowledged updates (a check\n"
		"                       of this checker)\n"
		"Exit status: 0 no violation, 1 a violation or failure, 2 bad usage, 77 the daemon\n"
		"has no persistence.\n", SOAK_MAX_WORKERS);
}

static int parse(int argc, char **argv, struct soak_opts *o)
{
	bool warm_set = false;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return 1;
		}
		if (!strcmp(a, "--keep") || !strcmp(a, "--verbose") || !strcmp(a, "-v") ||
		    !strcmp(a, "--no-hostile") || !strcmp(a, "--no-daemon-kills") ||
		    !strcmp(a, "--self-check-wipe") || !strcmp(a, "--require-hello-deadline")) {
			o->hello_deadline |= !strcmp(a, "--require-hello-deadline");
			o->self_check |= !strcmp(a, "--self-check-wipe");
			o->keep |= !strcmp(a, "--keep");
			o->verbose |= !strcmp(a, "--verbose") || !strcmp(a, "-v");
			o->no_hostile |= !strcmp(a, "--no-hostile");
			o->no_daemon_kills |= !strcmp(a, "--no-daemon-kills");
			continue;
		}
		if (!v) {
			fprintf(stderr, "soak: unknown or incomplete option '%s'\n", a);
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
		char *endp;
		errno = 0;
		unsigned long long x = strtoull(v, &endp, 0);
		if (*v == '-' || !*v || *endp || errno) {
			fprintf(stderr, "soak: '%s' is not a number for %s\n", v, a);
			return -1;
		}
		unsigned u = x > 100000000ull ? 100000001u : (unsigned)x;
		if (!strcmp(a, "--seconds"))
			o->seconds = u;
		else if (!strcmp(a, "--workers"))
			o->workers = u;
		else if (!strcmp(a, "--keys"))
			o->keys = u;
		else if (!strcmp(a, "--client-kill-ms"))
			o->client_kill_ms = u;
		else if (!strcmp(a, "--daemon-kill-s"))
			o->daemon_kill_s = u;
		else if (!strcmp(a, "--warmup-s"))
			o->warmup_s = u, warm_set = true;
		else if (!strcmp(a, "--rss-tolerance-pct"))
			o->rss_tol_pct = u;
		else if (!strcmp(a, "--rss-slack-mib"))
			o->rss_slack_mib = u;
		else if (!strcmp(a, "--timeout-ms"))
			o->timeout_ms = u;
		else if (!strcmp(a, "--seed"))
			o->seed = x;
		else {
			fprintf(stderr, "soak: unknown option '%s'\n", a);
			return -1;
		}
	}
	if (!warm_set) {
		o->warmup_s = o->seconds / 6;
		o->warmup_s = o->warmup_s < 5 ? 5 : o->warmup_s > 60 ? 60 : o->warmup_s;
	}
	const char *bad = !o->seconds || o->seconds > 7 * 86400 ? "--seconds is 1..604800"
		: !o->workers || o->workers > SOAK_MAX_WORKERS ? "--workers is 1..16"
		: o->keys < 64 || o->keys > (1u << 20) ? "--keys is 64..1048576"
		: !o->daemon_kill_s || o->daemon_kill_s > 86400 ? "--daemon-kill-s is 1..86400"
		: o->client_kill_ms > 3600000 ? "--client-kill-ms is 0..3600000"
		: o->warmup_s >= o->seconds ? "--warmup-s must be below --seconds"
		: o->timeout_ms < 100 || o->timeout_ms > 600000 ? "--timeout-ms is 100..600000"
		: o->rss_tol_pct > 1000 ? "--rss-tolerance-pct is 0..1000" : NULL;
	if (bad) {
		fprintf(stderr, "soak: %s\n", bad);
		return -1;
	}
	return 0;
}

static int setup(struct drv *r, const char *argv0)
{
	r->d.exe = r->x.o.daemon ? r->x.o.daemon : dproc_default_exe(r->exe, sizeof r->exe, argv0);
	if (!r->d.exe || access(r->d.exe, X_OK)) {
		fprintf(stderr, "soak: no dynembd at %s (--daemon PATH or $DYNEMBD)\n",
			r->d.exe ? r->d.exe : "(a path too long)");
		return -ENOENT;
	}
	if (r->x.o.dir) {
		if (mkdir(r->x.o.dir, 0755) && errno != EEXIST)
			return -errno;
		snprintf(r->work, sizeof r->work, "%s", r->x.o.dir);
	} else {
		snprintf(r->work, sizeof r->work, "/var/tmp/dynemb-soak.XXXXXX");
		if (!mkdtemp(r->work))
			return -errno;
	}
	if (strlen(r->work) + 16 > sizeof r->d.sock || strlen(r->work) + 32 > PATH_MAX)
		return -ENAMETOOLONG;
	snprintf(r->data, sizeof r->data, "%s/data", r->work);
	snprintf(r->d.sock, sizeof r->d.sock, "%s/d.sock", r->work);
	snprintf(r->d.logpath, sizeof r->d.logpath, "%s/dynembd.log", r->work);
	r->x.sock = r->d.sock;
	r->d.pid = -1;
	if (mkdir(r->data, 0755) && errno != EEXIST)
		return -errno;
	int err = oracle_init(r->x.o.keys);
	if (err)
		return err;
	r->shared_bytes = sizeof *r->x.sh + (size_t)SOAK_NTABLES * r->x.o.keys *
					     sizeof(struct soak_key);
	r->x.sh = mmap(NULL, r->shared_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
		       -1, 0);
	if (r->x.sh == MAP_FAILED) {
		r->x.sh = NULL;
		return -errno;
	}
	for (unsigned i = 0; i < SOAK_MAX_WORKERS; i++)
		r->worker[i] = -1;
	r->snap = r->hostile = -1;
	return 0;
}

static void summary(struct drv *r)
{
	const struct soak_shared *sh = r->x.sh;
	const struct soak_opts *o = &r->x.o;
#define CNT(c) atomic_load(&sh->count[c])
	printf("soak: %.1f s, %u workers, %u keys per table; %u client kills (%" PRIu64
	       " worker starts), %u daemon kills, %u children that died on their own\n",
	       secs(r), o->workers, o->keys, r->client_kills, CNT(C_WORKER_STARTS),
	       r->daemon_kills, r->child_deaths);
	printf("soak: acknowledged: %" PRIu64 " updates (%" PRIu64 " key-updates), %" PRIu64
	       " gradient calls (%" PRIu64 " keys), %" PRIu64 " erases; %" PRIu64 " lookups (%"
	       PRIu64 " keys, %" PRIu64 " served zero-copy), %" PRIu64 " samples, %" PRIu64
	       " top-k, %" PRIu64 " snapshots\n",
	       CNT(C_UPDATE_CALLS), CNT(C_UPDATE_KEYS), CNT(C_GRAD_CALLS), CNT(C_GRAD_KEYS),
	       CNT(C_ERASE_CALLS), CNT(C_LOOKUP_CALLS), CNT(C_LOOKUP_KEYS), CNT(C_ZERO_COPY_KEYS),
	       CNT(C_SAMPLE_CALLS), CNT(C_TOPK_CALLS), CNT(C_SNAPSHOTS));
	printf("soak: checked: %" PRIu64 " rows read by the workers, %" PRIu64 " rows in %u"
	       " full read-backs, %" PRIu64 " statistics checks\n", CNT(C_ROWS_CHECKED),
	       r->rows_verified, r->verifications, r->stat_checks);
	printf("soak: the tables at the end (stats of the last daemon run, before its kill):\n");
	for (int t = 0; t < SOAK_NTABLES; t++)
		printf("soak:   %-10s %6" PRIu64 " keys, wal_lsn %" PRIu64 ", durable_lsn %" PRIu64
		       ", %" PRIu64 " snapshots, %" PRIu64 " resident bytes of a budget of %" PRIu64
		       "\n", soak_table_names[t], r->end[t].keys, r->end[t].wal_lsn,
		       r->end[t].durable_lsn, r->end[t].snapshots, r->end[t].resident_bytes,
		       r->end[t].budget_bytes);
	printf("soak: soak_evict evicted %" PRIu64 " rows over all daemon runs\n",
	       r->evicted_total + r->end[T_EVICT].evicted);
	printf("soak: hostile:");
	for (int a = 0; a < SOAK_NATTACKS; a++)
		printf("%s %s %" PRIu64 "/%" PRIu64, a ? ";" : "", soak_attack_names[a],
		       atomic_load(&sh->attack_clean[a]), atomic_load(&sh->attack_tries[a]));
	printf(" (clean/tried); idle connections closed by the daemon: %" PRIu64 " of %" PRIu64
	       "\n", atomic_load(&sh->idle_closed), atomic_load(&sh->idle_opened));
	uint64_t limit = r->rss_warm_kib + r->rss_warm_kib * o->rss_tol_pct / 100 +
			 (uint64_t)o->rss_slack_mib * 1024;
	printf("soak: dynembd VmRSS: %.1f MiB peak in the %u s warm-up, %.1f MiB peak after it"
	       " (limit %.1f MiB: +%u%% +%u MiB), %" PRIu64 " samples\n",
	       (double)r->rss_warm_kib / 1024, o->warmup_s, (double)r->rss_after_kib / 1024,
	       (double)limit / 1024, o->rss_tol_pct, o->rss_slack_mib, r->rss_samples);
	if (r->rss_warm_kib && r->rss_after_kib > limit)
		soak_violation(&r->x, "dynembd's VmRSS grew after the warm-up: %.1f MiB, above the"
				      " limit of %.1f MiB", (double)r->rss_after_kib / 1024,
			       (double)limit / 1024);
	uint64_t v = atomic_load(&sh->viol);
	printf("soak: %" PRIu64 " violations\n", v);
	for (uint64_t i = 0; i < v && i < SOAK_VIOL_KEEP; i++)
		printf("soak:   %s\n", sh->viol_msg[i]);
#undef CNT
}

int main(int argc, char **argv)
{
	static struct drv drv;
	struct drv *r = &drv;
	r->x.o = (struct soak_opts){ .seconds = 60, .workers = 4, .keys = 2048,
				     .client_kill_ms = 3000, .daemon_kill_s = 20,
				     .rss_tol_pct = 25, .rss_slack_mib = 16, .timeout_ms = 20000,
				     .seed = 1 };
	int rc = parse(argc, argv, &r->x.o);
	if (rc)
		return rc > 0 ? 0 : EXIT_USAGE;
	signal(SIGPIPE, SIG_IGN);
	r->rng = mix(r->x.o.seed ^ 0x50a1);
	int err = setup(r, argv[0]);
	if (err) {
		fprintf(stderr, "soak: setup: %s\n", strerror(-err));
		return 1;
	}
	r->t0 = dproc_now_ns();
	rc = run(r);
	atomic_store(&r->x.sh->down, 1);
	kill_all(r);
	dynemb_close(r->c);
	dproc_kill(&r->d);
	if (rc == EXIT_SKIP) {
		printf("soak: SKIP: %s has no persistence\n", r->d.exe);
		if (!r->x.o.keep && !r->x.o.dir)
			dproc_rm_tree(r->work, 3);
		return EXIT_SKIP;
	}
	summary(r);
	bool bad = rc || r->failed || atomic_load(&r->x.sh->viol);
	if (r->x.o.self_check) { /* passes when the wiped acknowledged updates were caught */
		bool caught = false;
		for (uint64_t i = 0; i < atomic_load(&r->x.sh->viol) && i < SOAK_VIOL_KEEP; i++)
			caught |= strstr(r->x.sh->viol_msg[i], "acknowledged update is missing") != NULL;
		printf("soak: self-check: %s\n", rc || r->failed ? "the run failed for another reason"
			: caught ? "the wiped acknowledged updates were caught, as they must be"
				 : "the wiped acknowledged updates were NOT caught: the checker is broken");
		bad = rc || r->failed || !caught;
	}
	if (bad || r->x.o.keep || r->x.o.dir)
		printf("soak: work directory kept: %s\n", r->work);
	else
		dproc_rm_tree(r->work, 3);
	if (bad)
		fprintf(stderr, "soak: FAILED%s\n", rc || r->failed ? " (the run could not finish:"
								      " see above)" : "");
	return bad ? 1 : 0;
}
