/*
 * bench_persist.c — dynemb-bench persist: persistence (libdeuring) against fio on the
 * same file system, in one run.
 *
 * Owns the `persist` sub-command. What it measures, in this order, all in --dir:
 *   1. fio (a subprocess, --output-format=json, ioengine=io_uring) on a file of --fio-size:
 *      sequential 1 MiB writes with O_DIRECT (the baseline), the same buffered with
 *      an fsync at the end (how snapshots write: buffered 1 MiB chunks, fsync at the end),
 *      buffered writes of the WAL's buffer size each followed by fdatasync (how the WAL
 *      writes), sequential 1 MiB reads with O_DIRECT and buffered from a cold cache (how a
 *      snapshot is read), and the time of one 4 KiB write + fdatasync.
 *   2. a table of --rows rows (dim --dim, --slots optimizer slots as a real table with
 *      an optimizer has: 1 = Adagrad's accumulator), filled in this process;
 *   3. snapshot write: de_persist_checkpoint (full) of that table -> bytes/s;
 *   4. WAL, async: one thread appends batches of --batch random keys of the table as the
 *      daemon does (.table and .dirty), the WAL's group-commit thread flushing every
 *      10 ms, until --seconds or --wal-bytes -> bytes/s (bytes written, flushed);
 *   5. WAL, sync with group commit: --threads threads, each appending --sync-batch keys
 *      and waiting in de_wal_sync for its record (one fdatasync serves every record
 *      appended before it) -> bytes/s, sync latency p50 / p99, records per fdatasync;
 *   6. a WAL tail of --tail-rows rows (new values, logged) after the snapshot; the table
 *      is then closed;
 *   7. restore: de_snapshot_load of the snapshot into a fresh table, cold cache
 *      (POSIX_FADV_DONTNEED on every file first) -> bytes/s of the snapshot file;
 *   8. restart: a fresh arena and table, then de_persist_recover (manifest, snapshot, WAL
 *      tail), cold cache -> restart_s; the result is checked against rows read from the
 *      table before it was closed (values of sampled keys, tail keys included, and the
 *      key count): a wrong restore is a failure (exit 1), not a figure.
 * Goals (the issue): WAL async >= 70% of fio's sequential write, WAL sync >= 50%,
 * snapshot write and restore >= 70% of fio's sequential write and read. Each ratio is
 * printed against the fio job that writes / reads the way the code does (the verdict)
 * and against the O_DIRECT job (the baseline figure).
 * Never: compares against figures from another run; leaves its files behind (the
 * directory it made is removed, --keep keeps it); writes outside --dir.
 * Ownership: cmd_persist owns everything; the table lives from 2 to 6, the fresh tables
 * of 7 and 8 one at a time (the memory of one table at a time).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_util.h"
#include "de_shm.h"
#include "de_uring.h"

extern char **environ;

#define GOAL_WAL_ASYNC 0.70
#define GOAL_WAL_SYNC 0.50
#define GOAL_SNAP_WRITE 0.70
#define GOAL_RESTORE 0.70
#define WAL_WINDOW_MS 10u
#define WAL_BUFFER (4u << 20) /* de_wal_options' default buffer_bytes */
#define TABLE_ID 1u
#define NVERIFY 4096u
#define FILL_BATCH 65536u
#define KEY_POOL (1u << 20) /* random keys the WAL cases draw batches from */
#define MAX_SYNC_THREADS 64u
#define LAT_CAP (1u << 20)  /* sync latencies kept per thread */

struct persist_opts {
	const char *dir;
	uint64_t rows, tail_rows, wal_bytes, fio_size;
	uint32_t dim, slots, batch, sync_batch, threads;
	double seconds;
	bool json, keep, no_fio, short_mode;
};

static double secs(uint64_t ns) { return (double)ns / 1e9; }

/* CPU seconds of the whole process (every thread: the WAL's committer, io_uring's
 * workers are kernel threads and not counted) */
static double cpu_s(void)
{
	struct rusage ru;
	if (getrusage(RUSAGE_SELF, &ru))
		return NAN;
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

/* dir/name into out: 0, or -ENAMETOOLONG */
static int join(char *out, size_t cap, const char *dir, const char *name)
{
	int n = snprintf(out, cap, "%s/%s", dir, name);
	return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

/* ---- file system of the directory ------------------------------------------------------ */

struct fs_info {
	char type[64];    /* from /proc/self/mountinfo (e.g. ext4), else statfs's magic */
	char source[256]; /* the device or source of the mount */
	char mount[512];  /* its mount point */
};

static void fs_describe(const char *dir, struct fs_info *fi)
{
	char real[PATH_MAX], line[2048];
	size_t best = 0;
	struct statfs sf;

	snprintf(fi->type, sizeof fi->type, "unknown");
	snprintf(fi->source, sizeof fi->source, "unknown");
	snprintf(fi->mount, sizeof fi->mount, "?");
	if (!realpath(dir, real))
		snprintf(real, sizeof real, "%s", dir);
	FILE *f = fopen("/proc/self/mountinfo", "r");
	while (f && fgets(line, sizeof line, f)) {
		/* id parent maj:min root mountpoint opts [optional...] - fstype source superopts */
		char mp[512], fst[64], src[256];
		const char *dash = strstr(line, " - ");
		if (!dash || sscanf(line, "%*s %*s %*s %*s %511s", mp) != 1 ||
		    sscanf(dash + 3, "%63s %255s", fst, src) != 2)
			continue;
		size_t n = strlen(mp);
		bool under = !strcmp(mp, "/") ||
			     (!strncmp(real, mp, n) && (real[n] == '/' || real[n] == '\0'));
		if (under && n >= best) {
			best = n;
			snprintf(fi->type, sizeof fi->type, "%s", fst);
			snprintf(fi->source, sizeof fi->source, "%s", src);
			snprintf(fi->mount, sizeof fi->mount, "%s", mp);
		}
	}
	if (f)
		fclose(f);
	if (!best && statfs(dir, &sf) == 0)
		snprintf(fi->type, sizeof fi->type, "magic 0x%lx", (unsigned long)sf.f_type);
}

/* Evict the clean page-cache pages of every regular file in dir (a cold read next). */
static void drop_cache_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	while (d && (e = readdir(d))) {
		char p[PATH_MAX];
		if (join(p, sizeof p, dir, e->d_name))
			continue;
		int fd = open(p, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		struct stat st;
		if (!fstat(fd, &st) && S_ISREG(st.st_mode)) {
			(void)fdatasync(fd);
			(void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
		}
		close(fd);
	}
	if (d)
		closedir(d);
}

static int mk_sub(char *out, size_t cap, const char *dir, const char *name)
{
	if (join(out, cap, dir, name))
		return -ENAMETOOLONG;
	if (mkdir(out, 0755) && errno != EEXIST)
		return -errno;
	return 0;
}

/* ---- fio ------------------------------------------------------------------------------- */

struct fio_res {
	bool ok;
	double bw;         /* bytes/s of the section */
	double runtime_ms; /* of the section */
	double ios;        /* total_ios of the section */
	double sync_mean_us; /* mean fdatasync latency (0 when the job had none) */
	char why[160];     /* when !ok */
};

/* The number after "key" : in [p, end), or NAN. */
static double json_field(const char *p, const char *end, const char *key)
{
	char pat[64];
	snprintf(pat, sizeof pat, "\"%s\"", key);
	const char *q = p ? strstr(p, pat) : NULL;
	if (!q || q >= end)
		return NAN;
	q += strlen(pat);
	while (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r')
		q++;
	if (*q != ':')
		return NAN;
	char *e;
	double v = strtod(q + 1, &e);
	return e == q + 1 ? NAN : v;
}

/* The start of the object "key" : { in [p, end), or NULL. */
static const char *json_obj(const char *p, const char *end, const char *key)
{
	char pat[64];
	snprintf(pat, sizeof pat, "\"%s\"", key);
	for (const char *q = p; q && (q = strstr(q, pat)) && q < end; q += strlen(pat)) {
		const char *r = q + strlen(pat);
		while (*r == ' ' || *r == '\n' || *r == '\t' || *r == '\r')
			r++;
		if (*r != ':')
			continue;
		r++;
		while (*r == ' ' || *r == '\n' || *r == '\t' || *r == '\r')
			r++;
		if (*r == '{')
			return r;
	}
	return NULL;
}

/* Run fio with args (NULL-terminated, after the common ones) in dir; parse section
 * ("write" or "read") of the first job. */
static void run_fio(const char *dir, const char *const *args, const char *section,
		    struct fio_res *r)
{
	char dir_arg[PATH_MAX + 16], errpath[PATH_MAX];
	const char *argv[40];
	unsigned n = 0;
	memset(r, 0, sizeof *r);
	snprintf(dir_arg, sizeof dir_arg, "--directory=%s", dir);
	if (join(errpath, sizeof errpath, dir, "fio.stderr")) {
		snprintf(r->why, sizeof r->why, "directory name too long");
		return;
	}
	argv[n++] = "fio";
	argv[n++] = "--output-format=json";
	argv[n++] = "--name=dynemb";
	argv[n++] = dir_arg;
	argv[n++] = "--filename=fio.dat";
	argv[n++] = "--ioengine=io_uring";
	for (unsigned i = 0; args[i] && n < 38; i++)
		argv[n++] = args[i];
	argv[n] = NULL;

	int pfd[2];
	if (pipe2(pfd, O_CLOEXEC)) {
		snprintf(r->why, sizeof r->why, "pipe: %s", strerror(errno));
		return;
	}
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
	posix_spawn_file_actions_addopen(&fa, 2, errpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	pid_t pid;
	int se = posix_spawnp(&pid, "fio", &fa, NULL, (char *const *)argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(pfd[1]);
	if (se) {
		close(pfd[0]);
		snprintf(r->why, sizeof r->why,
			 "cannot run fio: %s (install it: Debian package fio)", strerror(se));
		return;
	}
	size_t cap = 1 << 16, len = 0;
	char *out = malloc(cap + 1);
	for (;;) {
		if (out && len == cap) {
			char *bigger = realloc(out, 2 * cap + 1);
			if (!bigger) {
				free(out);
				out = NULL;
			} else {
				out = bigger;
				cap *= 2;
			}
		}
		char sink[4096];
		ssize_t k = out ? read(pfd[0], out + len, cap - len)
				: read(pfd[0], sink, sizeof sink);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		if (out)
			len += (size_t)k;
	}
	close(pfd[0]);
	int status = 0;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (!out) {
		snprintf(r->why, sizeof r->why, "out of memory reading fio's output");
		return;
	}
	out[len] = '\0';
	const char *end = out + len;
	const char *jobs = strstr(out, "\"jobs\"");
	double err = json_field(jobs, end, "error");
	const char *sec = jobs ? json_obj(jobs, end, section) : NULL;
	if (!WIFEXITED(status) || WEXITSTATUS(status) || !jobs || !sec || err != 0) {
		char line[160] = "";
		FILE *ef = fopen(errpath, "r");
		if (ef) {
			if (!fgets(line, sizeof line, ef))
				line[0] = '\0';
			fclose(ef);
		}
		line[strcspn(line, "\n")] = '\0';
		snprintf(r->why, sizeof r->why, "fio failed (status %d, error %.0f)%s%s",
			 WIFEXITED(status) ? WEXITSTATUS(status) : -1, isnan(err) ? -1.0 : err,
			 line[0] ? ": " : "", line);
	} else {
		r->bw = json_field(sec, end, "bw_bytes");
		r->runtime_ms = json_field(sec, end, "runtime");
		r->ios = json_field(sec, end, "total_ios");
		const char *sy = json_obj(jobs, end, "sync");
		const char *lat = sy ? json_obj(sy, end, "lat_ns") : NULL;
		double m = lat ? json_field(lat, end, "mean") : NAN;
		r->sync_mean_us = isfinite(m) ? m / 1e3 : 0;
		r->ok = isfinite(r->bw) && r->bw > 0;
		if (!r->ok)
			snprintf(r->why, sizeof r->why, "fio's output had no bandwidth for %s",
				 section);
	}
	free(out);
	unlink(errpath);
}

enum {
	F_WRITE_DIRECT, F_WRITE_BUFFERED, F_WRITE_FDATASYNC, F_READ_DIRECT, F_READ_BUFFERED,
	F_SYNC_4K, F_COUNT
};
static const char *const fio_names[F_COUNT] = {
	"seq write, 1 MiB, O_DIRECT, iodepth 4",
	"seq write, 1 MiB, buffered, iodepth 4, fsync at end (snapshot's mode)",
	"seq write, 4 MiB buffered + fdatasync each, iodepth 1 (the WAL's mode)",
	"seq read, 1 MiB, O_DIRECT, iodepth 4",
	"seq read, 1 MiB, buffered, cold cache, iodepth 4 (snapshot load's mode)",
	"4 KiB write + fdatasync, iodepth 1",
};

static void fio_all(const char *dir, const struct persist_opts *o, struct fio_res *f, FILE *hu)
{
	char size[64], rt[32];
	snprintf(size, sizeof size, "--size=%" PRIu64, o->fio_size);
	snprintf(rt, sizeof rt, "--runtime=%d", o->short_mode ? 1 : 2);
	const char *const a_wd[] = { size, "--rw=write", "--bs=1M", "--iodepth=4", "--direct=1",
				     NULL };
	const char *const a_wb[] = { size, "--rw=write", "--bs=1M", "--iodepth=4",
				     "--end_fsync=1", NULL };
	const char *const a_wf[] = { size, "--rw=write", "--bs=4M", "--iodepth=1",
				     "--fdatasync=1", NULL };
	const char *const a_rd[] = { size, "--rw=read", "--bs=1M", "--iodepth=4", "--direct=1",
				     NULL };
	const char *const a_rb[] = { size, "--rw=read", "--bs=1M", "--iodepth=4",
				     "--invalidate=1", NULL };
	const char *const a_s4[] = { "--size=64M", "--rw=write", "--bs=4k", "--iodepth=1",
				     "--fdatasync=1", "--time_based", rt, NULL };
	const char *const *args[F_COUNT] = { a_wd, a_wb, a_wf, a_rd, a_rb, a_s4 };
	for (int i = 0; i < F_COUNT; i++) {
		if (i == F_READ_BUFFERED)
			drop_cache_dir(dir);
		run_fio(dir, args[i], i == F_READ_DIRECT || i == F_READ_BUFFERED ? "read" : "write",
			&f[i]);
		if (f[i].ok && i == F_SYNC_4K)
			fprintf(hu,
				"  %-72s %8.1f us per write+fdatasync (fdatasync alone %.1f us)\n",
				fio_names[i], f[i].runtime_ms * 1e3 / f[i].ios, f[i].sync_mean_us);
		else if (f[i].ok)
			fprintf(hu, "  %-72s %8.1f MB/s\n", fio_names[i], f[i].bw / 1e6);
		else
			fprintf(hu, "  %-72s n/a: %s\n", fio_names[i], f[i].why);
		fflush(hu);
	}
	char p[PATH_MAX];
	if (!join(p, sizeof p, dir, "fio.dat"))
		unlink(p);
}

/* ---- tables ------------------------------------------------------------------------------ */

struct tab {
	de_arena *a;
	de_table *t;
};

static int tab_open(const struct persist_opts *o, struct tab *x)
{
	struct de_arena_config ac = { .pages = DE_PAGES_AUTO, .numa_node = DE_NUMA_AUTO,
				      .name = "dynemb-bench-persist" };
	struct de_table_config tc = { .dim = o->dim, .nslots = o->slots, .init = DE_INIT_UNIFORM,
				      .init_a = -0.05f, .init_b = 0.05f, .slot_init = 0.1f,
				      .seed = 7 };
	int err = de_arena_create(&ac, &x->a);
	if (!err && (err = de_table_open(x->a, &tc, &x->t))) {
		de_arena_destroy(x->a);
		x->a = NULL;
	}
	return err;
}

static void tab_close(struct tab *x)
{
	de_table_close(x->t);
	de_arena_destroy(x->a);
	x->t = NULL;
	x->a = NULL;
}

/* ---- WAL cases ------------------------------------------------------------------------- */

static void wal_log(void *ctx, const char *line)
{
	(void)ctx;
	fprintf(stderr, PROG " persist: wal: %s\n", line);
}

struct sync_thread {
	pthread_t tid;
	de_wal *w;
	de_table *t;
	de_dirty *d;
	const uint64_t *pool;
	uint32_t batch, id;
	uint64_t deadline_ns;
	uint64_t *lat; /* ns per de_wal_sync */
	size_t nlat;
	uint64_t records;
	int err;
};

static void *sync_run(void *arg)
{
	struct sync_thread *s = arg;
	uint64_t r = de_splitmix64(s->id + 1);
	while (!s->err) {
		size_t at = (size_t)(de_splitmix64(r++) % (KEY_POOL - s->batch));
		struct de_wal_batch b = { .table_id = TABLE_ID, .type = DE_WAL_PUT,
					  .keys = s->pool + at, .n = s->batch, .table = s->t,
					  .dirty = s->d };
		uint64_t lsn, t0 = ns_now();
		s->err = de_wal_append(s->w, &b, &lsn);
		if (!s->err)
			s->err = de_wal_sync(s->w, lsn);
		uint64_t t1 = ns_now();
		if (s->err)
			break;
		s->records++;
		if (s->nlat < LAT_CAP)
			s->lat[s->nlat++] = t1 - t0;
		if (t1 >= s->deadline_ns)
			break;
	}
	return NULL;
}

struct wal_result {
	double bytes_per_s, rows_per_s, seconds;
	uint64_t bytes, records, fsyncs;
	double p50_us, p99_us; /* sync only: append + de_wal_sync */
};

static int wal_open_in(const char *dir, uint32_t window_ms, de_wal **w)
{
	struct de_wal_options wo = { .window_ms = window_ms, .log = wal_log };
	return de_wal_open(dir, &wo, w);
}

/* The end of a WAL case that ran for ns and logged rows: closes w and d, fills r's
 * figures from st; returns err, else the error of de_wal_close. */
static int wal_case_end(de_wal *w, de_dirty *d, int err, uint64_t ns,
			const struct de_wal_stats *st, uint64_t rows, struct wal_result *r)
{
	int cerr = de_wal_close(w);
	de_dirty_destroy(d);
	if (!err)
		err = cerr;
	r->seconds = secs(ns);
	r->bytes = st->bytes_written;
	r->fsyncs = st->fsyncs;
	r->bytes_per_s = (double)st->bytes_written / r->seconds;
	r->rows_per_s = (double)rows / r->seconds;
	return err;
}

static int wal_async_case(const char *dir, const struct persist_opts *o, de_table *t,
			  const uint64_t *pool, struct wal_result *r)
{
	de_wal *w = NULL;
	de_dirty *d = NULL;
	int err = de_dirty_create(&d);
	if (!err)
		err = wal_open_in(dir, WAL_WINDOW_MS, &w);
	uint64_t rng = 99, rows = 0, t0 = ns_now();
	uint64_t deadline = t0 + (uint64_t)(o->seconds * 1e9);
	struct de_wal_stats st = { 0 };
	while (!err) {
		size_t at = (size_t)(de_splitmix64(rng++) % (KEY_POOL - o->batch));
		struct de_wal_batch b = { .table_id = TABLE_ID, .type = DE_WAL_PUT,
					  .keys = pool + at, .n = o->batch, .table = t,
					  .dirty = d };
		err = de_wal_append(w, &b, NULL);
		rows += o->batch;
		r->records++;
		if ((r->records & 7) == 0) {
			if (ns_now() >= deadline)
				break;
			if ((err = de_wal_stats(w, &st)))
				break;
			if (st.bytes_written >= o->wal_bytes)
				break;
		}
	}
	if (!err)
		err = de_wal_flush(w);
	uint64_t t1 = ns_now();
	if (!err)
		err = de_wal_stats(w, &st);
	return wal_case_end(w, d, err, t1 - t0, &st, rows, r);
}

static int wal_sync_case(const char *dir, const struct persist_opts *o, de_table *t,
			 const uint64_t *pool, struct wal_result *r)
{
	de_wal *w = NULL;
	de_dirty *d = NULL;
	struct sync_thread *th = calloc(o->threads, sizeof *th);
	int err = th ? de_dirty_create(&d) : -ENOMEM;
	if (!err)
		err = wal_open_in(dir, 0, &w); /* no timer: every flush is a syncer's */
	unsigned started = 0;
	uint64_t t0 = ns_now(), deadline = t0 + (uint64_t)(o->seconds * 1e9);
	for (unsigned i = 0; !err && i < o->threads; i++) {
		th[i] = (struct sync_thread){ .w = w, .t = t, .d = d, .pool = pool,
					      .batch = o->sync_batch, .id = i,
					      .deadline_ns = deadline };
		if (!(th[i].lat = malloc(LAT_CAP * sizeof(uint64_t)))) {
			err = -ENOMEM;
			break;
		}
		if (pthread_create(&th[i].tid, NULL, sync_run, &th[i])) {
			err = -EAGAIN;
			break;
		}
		started++;
	}
	uint64_t rows = 0;
	size_t nlat = 0;
	for (unsigned i = 0; i < started; i++) {
		pthread_join(th[i].tid, NULL);
		if (th[i].err && !err)
			err = th[i].err;
		rows += th[i].records * o->sync_batch;
		r->records += th[i].records;
		nlat += th[i].nlat;
	}
	uint64_t t1 = ns_now();
	struct de_wal_stats st = { 0 };
	if (w && !err)
		err = de_wal_stats(w, &st);
	uint64_t *all = nlat ? malloc(nlat * sizeof *all) : NULL;
	if (all) {
		size_t k = 0;
		for (unsigned i = 0; i < started; i++) {
			memcpy(all + k, th[i].lat, th[i].nlat * sizeof *all);
			k += th[i].nlat;
		}
		qsort(all, nlat, sizeof *all, cmp_u64);
		r->p50_us = (double)all[nlat / 2] / 1e3;
		r->p99_us = (double)all[(size_t)((double)(nlat - 1) * 0.99)] / 1e3;
	} else {
		r->p50_us = r->p99_us = NAN;
	}
	free(all);
	for (unsigned i = 0; th && i < o->threads; i++)
		free(th[i].lat);
	free(th);
	return wal_case_end(w, d, err, t1 - t0, &st, rows, r);
}

/* ---- output ------------------------------------------------------------------------------ */

/* ,"key":v (null when v is not finite) */
static void jnum(FILE *f, const char *key, double v)
{
	fprintf(f, ",\"%s\":", key);
	json_num(f, v, "%.6g");
}

static void jbool(FILE *f, const char *key, double ratio, double goal)
{
	fprintf(f, ",\"%s\":%s", key, !isfinite(ratio) ? "null" : ratio >= goal ? "true" : "false");
}

/* "0.83 (goal 0.70: met)" */
static void verdict(FILE *f, const char *what, double v, double vs_matched, double vs_direct,
		    double goal, const char *matched_name)
{
	fprintf(f, "  %-20s %9.1f MB/s", what, v / 1e6);
	double rm = v / vs_matched, rd = v / vs_direct;
	if (isfinite(rm))
		fprintf(f, "   %.2f of fio %s -> goal %.2f %s", rm, matched_name, goal,
			rm >= goal ? "met" : "NOT met");
	else
		fprintf(f, "   (no fio %s figure)", matched_name);
	if (isfinite(rd))
		fprintf(f, "; %.2f of fio O_DIRECT (%s)", rd, rd >= goal ? "met" : "not met");
	fputc('\n', f);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: " PROG " persist [--dir DIR] [--rows N] [--dim D] [--slots S] [--batch B]\n"
		"                       [--sync-batch B] [--threads T] [--seconds S]\n"
		"                       [--wal-bytes N] [--tail-rows N] [--fio-size N] [--no-fio]\n"
		"                       [--keep] [--short] [--json]\n"
		"  --dir         where to write (default: a new directory under /var/tmp, removed\n"
		"                at the end); fio runs on the same file system\n"
		"  --rows        rows of the snapshot / restart table (default 10000000)\n"
		"  --dim         values per row (default 64)\n"
		"  --slots       optimizer slots per row (default 1: Adagrad)\n"
		"  --batch       keys per WAL record, async case (default 1024)\n"
		"  --sync-batch  keys per WAL record, sync case (default 64)\n"
		"  --threads     writer threads of the sync case (default 4)\n"
		"  --seconds     time limit of each WAL case (default 3)\n"
		"  --wal-bytes   byte limit of the async WAL case (default 4 GiB)\n"
		"  --tail-rows   rows logged after the snapshot, replayed at restart (default rows/20)\n"
		"  --fio-size    bytes of each fio throughput job (default 2 GiB)\n"
		"  --no-fio      skip fio (ratios are n/a)\n"
		"  --keep        keep the files\n"
		"  --short       1000000 rows, 1 s per WAL case, 512 MiB fio jobs\n"
		"  --json        one JSON object on stdout (the human text goes to stderr)\n"
		"Exit status: 0 done, 1 run-time failure (I/O, a wrong restore), 2 bad usage.\n");
}

static int parse(int argc, char **argv, struct persist_opts *o)
{
	bool rows_set = false, tail_set = false, sec_set = false, wal_set = false,
	     fio_set = false;
	for (int i = 1; i < argc; i++) {
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		char *end = NULL;
		if (!strcmp(argv[i], "--json"))
			o->json = true;
		else if (!strcmp(argv[i], "--short"))
			o->short_mode = true;
		else if (!strcmp(argv[i], "--keep"))
			o->keep = true;
		else if (!strcmp(argv[i], "--no-fio"))
			o->no_fio = true;
		else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			usage(stdout);
			return 1;
		} else if (v && !strcmp(argv[i], "--dir")) {
			o->dir = v;
			i++;
			continue;
		} else if (v && !strcmp(argv[i], "--seconds")) {
			o->seconds = strtod(v, &end);
			sec_set = true;
			i++;
		} else if (v && argv[i][0] == '-' && argv[i][1] == '-') {
			unsigned long long x = strtoull(v, &end, 0);
			if (*v == '-')
				end = (char *)v; /* no negative numbers */
			if (!strcmp(argv[i], "--rows"))
				o->rows = x, rows_set = true;
			else if (!strcmp(argv[i], "--dim"))
				o->dim = (uint32_t)x;
			else if (!strcmp(argv[i], "--slots"))
				o->slots = (uint32_t)x;
			else if (!strcmp(argv[i], "--batch"))
				o->batch = (uint32_t)x;
			else if (!strcmp(argv[i], "--sync-batch"))
				o->sync_batch = (uint32_t)x;
			else if (!strcmp(argv[i], "--threads"))
				o->threads = (uint32_t)x;
			else if (!strcmp(argv[i], "--wal-bytes"))
				o->wal_bytes = x, wal_set = true;
			else if (!strcmp(argv[i], "--tail-rows"))
				o->tail_rows = x, tail_set = true;
			else if (!strcmp(argv[i], "--fio-size"))
				o->fio_size = x, fio_set = true;
			else
				goto bad;
			i++;
		} else {
			goto bad;
		}
		if (end && (*end || end == v)) {
			fprintf(stderr, PROG " persist: '%s' is not a number for %s\n", v,
				argv[i - 1]);
			return -1;
		}
		continue;
bad:
		fprintf(stderr, PROG " persist: unknown or incomplete option '%s'\n", argv[i]);
		usage(stderr);
		return -1;
	}
	if (o->short_mode) {
		if (!rows_set)
			o->rows = 1000000;
		if (!sec_set)
			o->seconds = 1;
		if (!wal_set)
			o->wal_bytes = 1ull << 30;
		if (!fio_set)
			o->fio_size = 512ull << 20;
	}
	if (!tail_set)
		o->tail_rows = o->rows / 20;
	if (o->rows < 1000 || o->rows > (1ull << 32) || !o->dim || o->dim > DE_MAX_DIM ||
	    o->slots > DE_MAX_SLOTS || o->batch < 1 || o->batch > 65536 || o->sync_batch < 1 ||
	    o->sync_batch > 65536 || !o->threads || o->threads > MAX_SYNC_THREADS ||
	    !(o->seconds > 0 && o->seconds <= 600) || o->tail_rows > o->rows ||
	    o->fio_size < (4u << 20) || o->wal_bytes < (1u << 20)) {
		fprintf(stderr, PROG " persist: --rows 1000..2^32, --dim 1..4096, --slots 0..8, "
				"--batch / --sync-batch 1..65536, --threads 1..64, --seconds (0, 600], "
				"--tail-rows <= --rows, --fio-size >= 4 MiB, --wal-bytes >= 1 MiB\n");
		return -1;
	}
	return 0;
}

/* ---- the run ----------------------------------------------------------------------------- */

struct verify {
	uint64_t keys[NVERIFY];
	float *vals; /* NVERIFY * dim */
};

/* Fill rows [0, rows) of t (values from the uniform initializer, slots slot_init). */
static int fill(de_table *t, uint64_t rows, uint32_t dim)
{
	uint64_t *k = malloc(FILL_BATCH * sizeof *k);
	float *v = malloc((size_t)FILL_BATCH * dim * sizeof *v);
	int err = k && v ? 0 : -ENOMEM;
	for (uint64_t i = 0; !err && i < rows; i += FILL_BATCH) {
		uint64_t n = rows - i < FILL_BATCH ? rows - i : FILL_BATCH;
		for (uint64_t j = 0; j < n; j++)
			k[j] = key_of(i + j);
		err = de_table_find_or_insert(t, k, n, v, NULL, 1);
	}
	free(k);
	free(v);
	return err;
}

/* The tail: new values for rows [0, tail) (step 2), each batch logged. */
static int tail(de_table *t, de_wal *w, uint64_t tail_rows, uint32_t dim)
{
	const size_t B = 1024;
	uint64_t *k = malloc(B * sizeof *k);
	float *v = malloc(B * dim * sizeof *v);
	int err = k && v ? 0 : -ENOMEM;
	for (uint64_t i = 0; !err && i < tail_rows; i += B) {
		size_t n = tail_rows - i < B ? (size_t)(tail_rows - i) : B;
		for (size_t j = 0; j < n; j++) {
			k[j] = key_of(i + j);
			for (uint32_t c = 0; c < dim; c++)
				v[j * dim + c] = (float)(i + j) + (float)c * 0.25f;
		}
		if ((err = de_table_assign(t, k, n, v, NULL, 2)))
			break;
		struct de_wal_batch b = { .table_id = TABLE_ID, .type = DE_WAL_PUT, .keys = k,
					  .n = n, .table = t };
		err = de_wal_append(w, &b, NULL);
	}
	if (!err)
		err = de_wal_flush(w);
	free(k);
	free(v);
	return err;
}

/* Compare t against the rows saved in vf and its key count against rows. */
static int check(de_table *t, const struct verify *vf, uint32_t dim, uint64_t rows,
		 const char *what)
{
	float *got = malloc((size_t)NVERIFY * dim * sizeof *got);
	uint8_t *st = malloc(NVERIFY);
	int err = got && st ? de_table_find(t, vf->keys, NVERIFY, got, st) : -ENOMEM;
	struct de_table_stats ts;
	if (!err)
		err = de_table_stats(t, &ts);
	if (!err && ts.keys != rows) {
		fprintf(stderr, PROG " persist: %s: %" PRIu64 " keys, expected %" PRIu64 "\n",
			what, ts.keys, rows);
		err = -EBADMSG;
	}
	for (size_t i = 0; !err && i < NVERIFY; i++)
		if (st[i] != DE_FOUND ||
		    memcmp(got + i * dim, vf->vals + i * dim, dim * sizeof(float))) {
			fprintf(stderr, PROG " persist: %s: key %016" PRIx64 " %s\n", what,
				vf->keys[i],
				st[i] != DE_FOUND ? "missing" : "has the wrong values");
			err = -EBADMSG;
		}
	free(got);
	free(st);
	return err;
}

int cmd_persist(int argc, char **argv, const char *command_line)
{
	struct persist_opts o = { .rows = 10000000, .dim = 64, .slots = 1, .batch = 1024,
				  .sync_batch = 64, .threads = 4, .seconds = 3,
				  .wal_bytes = 4ull << 30, .fio_size = 2ull << 30 };
	int rc = parse(argc, argv, &o);
	if (rc)
		return rc > 0 ? 0 : EXIT_USAGE;
	FILE *hu = o.json ? stderr : stdout;
	char base[PATH_MAX], sub[PATH_MAX], wdir[PATH_MAX];
	bool made = false;
	if (o.dir) {
		if (mkdir(o.dir, 0755) && errno != EEXIST) {
			fprintf(stderr, PROG " persist: --dir %s: %s\n", o.dir, strerror(errno));
			return 1;
		}
		snprintf(base, sizeof base, "%s/dynemb-bench-persist.XXXXXX", o.dir);
	} else {
		snprintf(base, sizeof base, "/var/tmp/dynemb-bench-persist.XXXXXX");
	}
	if (!mkdtemp(base)) {
		fprintf(stderr, PROG " persist: cannot make a directory %s: %s\n", base,
			strerror(errno));
		return 1;
	}
	made = true;
	struct fs_info fi;
	fs_describe(base, &fi);

	uint32_t rf = o.dim * (1 + o.slots);
	uint64_t row_bytes = 4ull * rf + 32, need = o.rows * (row_bytes + 24);
	int64_t avail = proc_kb("/proc/meminfo", "MemAvailable");

	double load1 = NAN;
	{
		FILE *lf = fopen("/proc/loadavg", "r");
		if (!lf || fscanf(lf, "%lf", &load1) != 1)
			load1 = NAN;
		if (lf)
			fclose(lf);
	}
	fprintf(hu, "%s\n", command_line);
	bench_machine_print(hu, false);
	fprintf(hu, "load average (1 min) at the start: %.2f%s\n", load1,
		load1 > 1.0 ? " -- other work runs on this machine: the figures are lower bounds"
			    : "");
	fprintf(hu, "directory: %s, file system %s on %s (mounted at %s)%s\n", base, fi.type,
		fi.source, fi.mount,
		!strcmp(fi.type, "tmpfs") || !strcmp(fi.type, "ramfs")
			? " -- MEMORY, not a disk: these figures say nothing about storage" : "");
	fprintf(hu, "table: %" PRIu64 " rows, dim %u, %u slots (%" PRIu64 " bytes a snapshot "
		    "record), about %.2f GiB in memory; WAL buffer %u MiB, async window %u ms\n",
		o.rows, o.dim, o.slots, (uint64_t)(40 + 4ull * rf), (double)need / (1 << 30),
		WAL_BUFFER >> 20, WAL_WINDOW_MS);
	if (avail > 0 && (double)need > 0.85 * (double)avail) {
		fprintf(stderr, PROG " persist: the table needs about %.1f GiB, %.1f GiB available:"
				" use fewer --rows\n", (double)need / (1 << 30),
			(double)avail / (1 << 30));
		bench_rm_tree(base, 1);
		return 1;
	}

	struct fio_res f[F_COUNT];
	memset(f, 0, sizeof f);
	int err = 0;
	struct tab x = { 0 };
	uint64_t *pool = NULL;
	struct verify *vf = calloc(1, sizeof *vf);
	de_wal *w = NULL;
	struct wal_result wa = { 0 }, ws = { 0 };
	struct de_snapshot_info si = { 0 };
	struct de_snapshot_load_report lr = { 0 };
	struct de_recover_report rr = { 0 };
	struct de_manifest *man = calloc(1, sizeof *man);
	double fill_s = 0, snap_s = 0, restore_s = 0, restart_s = 0;
	const char *stage = "setup";
	if (!vf || !man || !(vf->vals = malloc((size_t)NVERIFY * o.dim * sizeof(float))) ||
	    !(pool = malloc(KEY_POOL * sizeof *pool))) {
		err = -ENOMEM;
		goto out;
	}

	/* 1: fio */
	if (!o.no_fio) {
		fprintf(hu, "\nfio %s (ioengine io_uring, %" PRIu64 " MiB a job):\n",
			o.short_mode ? "(short)" : "", o.fio_size >> 20);
		stage = "fio";
		if ((err = mk_sub(sub, sizeof sub, base, "fio")))
			goto out;
		fio_all(sub, &o, f, hu);
	}

	/* 2: the table */
	stage = "filling the table";
	if ((err = tab_open(&o, &x)))
		goto out;
	uint64_t t0 = ns_now();
	if ((err = fill(x.t, o.rows, o.dim)))
		goto out;
	fill_s = secs(ns_now() - t0);
	fprintf(hu, "\nfilled %" PRIu64 " rows in %.2f s (%s pages)\n", o.rows, fill_s,
		de_pages_name(de_arena_pages(x.a)));

	/* 3: snapshot write (full checkpoint, as the daemon takes it) */
	stage = "snapshot write";
	if ((err = mk_sub(sub, sizeof sub, base, "data")) ||
	    (err = wal_open_in(sub, WAL_WINDOW_MS, &w)))
		goto out;
	double c0 = cpu_s(), cpu_snap, cpu_async, cpu_sync, cpu_restore, cpu_restart;
	t0 = ns_now();
	if ((err = de_persist_checkpoint(sub, w, NULL, x.t, TABLE_ID, DE_CHECKPOINT_FULL, NULL,
					 NULL, &si)))
		goto out;
	snap_s = secs(ns_now() - t0);
	cpu_snap = cpu_s() - c0;
	double snap_bps = (double)si.file_bytes / snap_s;
	fprintf(hu,
		"snapshot write: %" PRIu64 " rows, %.1f MiB in %.2f s: %.1f MB/s (cpu %.2f s)\n",
		si.records, (double)si.file_bytes / (1 << 20), snap_s, snap_bps / 1e6, cpu_snap);
	fflush(hu);

	/* 4, 5: WAL cases, each in its own directory, removed after */
	for (size_t i = 0; i < KEY_POOL; i++)
		pool[i] = key_of(de_splitmix64(i + 12345) % o.rows);
	stage = "WAL async";
	c0 = cpu_s();
	if ((err = mk_sub(wdir, sizeof wdir, base, "wal-async")) ||
	    (err = wal_async_case(wdir, &o, x.t, pool, &wa)))
		goto out;
	cpu_async = cpu_s() - c0;
	bench_rm_tree(wdir, 0);
	fprintf(hu, "WAL async: %" PRIu64 " records of %u rows, %.1f MiB in %.2f s: %.1f MB/s, "
		    "%.2f M rows/s, %" PRIu64 " fdatasyncs (cpu %.2f s)\n",
		wa.records, o.batch, (double)wa.bytes / (1 << 20), wa.seconds,
		wa.bytes_per_s / 1e6, wa.rows_per_s / 1e6, wa.fsyncs, cpu_async);
	fflush(hu);
	stage = "WAL sync";
	c0 = cpu_s();
	if ((err = mk_sub(wdir, sizeof wdir, base, "wal-sync")) ||
	    (err = wal_sync_case(wdir, &o, x.t, pool, &ws)))
		goto out;
	cpu_sync = cpu_s() - c0;
	bench_rm_tree(wdir, 0);
	fprintf(hu, "WAL sync: %u threads, %" PRIu64 " records of %u rows, %.1f MiB in %.2f s: "
		    "%.1f MB/s, %.0f rows/s; %" PRIu64 " fdatasyncs (%.1f records each); append +"
		    " sync p50 %.0f us, p99 %.0f us (cpu %.2f s)\n",
		o.threads, ws.records, o.sync_batch, (double)ws.bytes / (1 << 20), ws.seconds,
		ws.bytes_per_s / 1e6, ws.rows_per_s, ws.fsyncs,
		ws.fsyncs ? (double)ws.records / (double)ws.fsyncs : NAN, ws.p50_us, ws.p99_us,
		cpu_sync);
	fflush(hu);

	/* 6: the WAL tail, then the expected rows, then the table goes */
	stage = "WAL tail";
	if ((err = tail(x.t, w, o.tail_rows, o.dim)))
		goto out;
	err = de_wal_close(w);
	w = NULL;
	if (err)
		goto out;
	for (size_t i = 0; i < NVERIFY; i++) /* half from the tail (when there is one) */
		vf->keys[i] = key_of(i % 2 && o.tail_rows ? de_splitmix64(i) % o.tail_rows
							  : de_splitmix64(i) % o.rows);
	if ((err = de_table_find(x.t, vf->keys, NVERIFY, vf->vals, NULL)))
		goto out;
	tab_close(&x);

	/* 7: restore the snapshot into a fresh table, cold cache */
	stage = "restore";
	const char *problem = NULL;
	if ((err = de_manifest_read(sub, man, &problem)))
		goto out;
	if (man->ntables != 1 || man->tables[0].nsnaps != 1) {
		err = -EBADMSG;
		goto out;
	}
	drop_cache_dir(sub);
	if ((err = tab_open(&o, &x)))
		goto out;
	c0 = cpu_s();
	t0 = ns_now();
	err = de_snapshot_load(x.t, sub, TABLE_ID, man->tables[0].seqs, 1, &lr);
	restore_s = secs(ns_now() - t0);
	cpu_restore = cpu_s() - c0;
	if (err)
		goto out;
	if (lr.rows != o.rows) {
		fprintf(stderr, PROG " persist: restore loaded %" PRIu64 " rows, expected %" PRIu64
				"\n", lr.rows, o.rows);
		err = -EBADMSG;
		goto out;
	}
	tab_close(&x);
	double restore_bps = (double)si.file_bytes / restore_s;
	fprintf(hu, "restore (de_snapshot_load, cold cache; verifies the file, then loads it): "
		    "%.2f s: %.1f MB/s (cpu %.2f s)\n", restore_s, restore_bps / 1e6, cpu_restore);
	fflush(hu);

	/* 8: restart: fresh table + de_persist_recover (manifest, snapshot, WAL tail) */
	stage = "restart";
	drop_cache_dir(sub);
	c0 = cpu_s();
	t0 = ns_now();
	if ((err = tab_open(&o, &x)))
		goto out;
	struct de_recover_table rt = { .table_id = TABLE_ID, .table = x.t };
	err = de_persist_recover(sub, &rt, 1, wal_log, NULL, &rr);
	restart_s = secs(ns_now() - t0);
	cpu_restart = cpu_s() - c0;
	if (err) {
		fprintf(stderr, PROG " persist: recovery: %s\n", rr.message);
		goto out;
	}
	if ((err = check(x.t, vf, o.dim, o.rows, "restart")))
		goto out;
	fprintf(hu, "restart (table + de_persist_recover: manifest, %u snapshot, %" PRIu64
		    " rows, %" PRIu64 " WAL records = %" PRIu64 " tail rows; cold cache): %.2f s (cpu %.2f s);"
		    " %u sampled rows and the key count checked\n",
		rr.snapshots, rr.snapshot_rows, rr.wal_applied, o.tail_rows, restart_s, cpu_restart,
		NVERIFY);

	/* summary */
	fprintf(hu, "\nSummary (goals: the issue's; 'fio same mode' is the fio job that writes or"
		    " reads the way the code does):\n");
	verdict(hu, "WAL async", wa.bytes_per_s, f[F_WRITE_FDATASYNC].bw, f[F_WRITE_DIRECT].bw,
		GOAL_WAL_ASYNC, "4 MiB+fdatasync");
	verdict(hu, "WAL sync", ws.bytes_per_s, f[F_WRITE_FDATASYNC].bw, f[F_WRITE_DIRECT].bw,
		GOAL_WAL_SYNC, "4 MiB+fdatasync");
	verdict(hu, "snapshot write", snap_bps, f[F_WRITE_BUFFERED].bw, f[F_WRITE_DIRECT].bw,
		GOAL_SNAP_WRITE, "buffered write");
	verdict(hu, "restore", restore_bps, f[F_READ_BUFFERED].bw, f[F_READ_DIRECT].bw,
		GOAL_RESTORE, "buffered read");
	fprintf(hu, "  %-20s %9.2f s for %" PRIu64 " rows at dim %u (+ %" PRIu64 " WAL rows)%s\n",
		"restart", restart_s, o.rows, o.dim, o.tail_rows,
		o.rows == 10000000 && o.dim == 64 ? "" : " (the issue's case is 10M rows, dim 64)");
	if (f[F_SYNC_4K].ok)
		fprintf(hu, "  %-20s p50 %.0f us per append + sync of %u rows; fio 4 KiB write + "
			    "fdatasync %.0f us\n", "sync latency", ws.p50_us, o.sync_batch,
			f[F_SYNC_4K].runtime_ms * 1e3 / f[F_SYNC_4K].ios);

	if (o.json) {
		FILE *j = stdout;
		fputs("{\"command\":", j);
		json_str(j, command_line);
		fputs(",\"dir\":", j);
		json_str(j, base);
		fputs(",\"fs_type\":", j);
		json_str(j, fi.type);
		fputs(",\"fs_source\":", j);
		json_str(j, fi.source);
		fprintf(j, ",\"rows\":%" PRIu64 ",\"dim\":%u,\"slots\":%u,\"tail_rows\":%" PRIu64
			   ",\"batch\":%u,\"sync_batch\":%u,\"sync_threads\":%u,\"short\":%s",
			o.rows, o.dim, o.slots, o.tail_rows, o.batch, o.sync_batch, o.threads,
			o.short_mode ? "true" : "false");
		double nan = NAN;
#define FBW(i) (f[i].ok ? f[i].bw : nan)
		jnum(j, "fio_write_bytes_per_s", FBW(F_WRITE_DIRECT));
		jnum(j, "fio_read_bytes_per_s", FBW(F_READ_DIRECT));
		jnum(j, "fio_write_buffered_bytes_per_s", FBW(F_WRITE_BUFFERED));
		jnum(j, "fio_write_4m_fdatasync_bytes_per_s", FBW(F_WRITE_FDATASYNC));
		jnum(j, "fio_read_buffered_bytes_per_s", FBW(F_READ_BUFFERED));
		jnum(j, "fio_write_4k_fdatasync_us",
		     f[F_SYNC_4K].ok ? f[F_SYNC_4K].runtime_ms * 1e3 / f[F_SYNC_4K].ios : nan);
		jnum(j, "wal_async_bytes_per_s", wa.bytes_per_s);
		jnum(j, "wal_async_rows_per_s", wa.rows_per_s);
		jnum(j, "wal_sync_bytes_per_s", ws.bytes_per_s);
		jnum(j, "wal_sync_rows_per_s", ws.rows_per_s);
		jnum(j, "wal_sync_p50_us", ws.p50_us);
		jnum(j, "wal_sync_p99_us", ws.p99_us);
		jnum(j, "wal_sync_records_per_fdatasync",
		     ws.fsyncs ? (double)ws.records / (double)ws.fsyncs : nan);
		jnum(j, "snapshot_write_bytes_per_s", snap_bps);
		jnum(j, "snapshot_bytes", (double)si.file_bytes);
		jnum(j, "restore_bytes_per_s", restore_bps);
		jnum(j, "restart_s", restart_s);
		jnum(j, "fill_s", fill_s);
		jnum(j, "loadavg_1min_at_start", load1);
		jnum(j, "snapshot_write_cpu_s", cpu_snap);
		jnum(j, "snapshot_write_s", snap_s);
		jnum(j, "wal_async_cpu_s", cpu_async);
		jnum(j, "wal_async_s", wa.seconds);
		jnum(j, "wal_sync_cpu_s", cpu_sync);
		jnum(j, "wal_sync_s", ws.seconds);
		jnum(j, "restore_cpu_s", cpu_restore);
		jnum(j, "restore_s", restore_s);
		jnum(j, "restart_cpu_s", cpu_restart);
		double r;
		jnum(j, "wal_async_over_fio", r = wa.bytes_per_s / FBW(F_WRITE_FDATASYNC));
		jbool(j, "wal_async_goal_met", r, GOAL_WAL_ASYNC);
		jnum(j, "wal_async_over_fio_direct", wa.bytes_per_s / FBW(F_WRITE_DIRECT));
		jnum(j, "wal_sync_over_fio", r = ws.bytes_per_s / FBW(F_WRITE_FDATASYNC));
		jbool(j, "wal_sync_goal_met", r, GOAL_WAL_SYNC);
		jnum(j, "wal_sync_over_fio_direct", ws.bytes_per_s / FBW(F_WRITE_DIRECT));
		jnum(j, "snapshot_write_over_fio", r = snap_bps / FBW(F_WRITE_BUFFERED));
		jbool(j, "snapshot_write_goal_met", r, GOAL_SNAP_WRITE);
		jnum(j, "snapshot_write_over_fio_direct", snap_bps / FBW(F_WRITE_DIRECT));
		jnum(j, "restore_over_fio", r = restore_bps / FBW(F_READ_BUFFERED));
		jbool(j, "restore_goal_met", r, GOAL_RESTORE);
		jnum(j, "restore_over_fio_direct", restore_bps / FBW(F_READ_DIRECT));
#undef FBW
		fputs(",\"machine\":", j);
		bench_machine_print(j, true);
		fputs("}\n", j);
		fflush(j);
	}

out:
	if (err)
		fprintf(stderr, PROG " persist: %s: %s\n", stage, strerror(-err));
	if (w)
		de_wal_close(w);
	if (x.t)
		tab_close(&x);
	if (vf)
		free(vf->vals);
	free(vf);
	free(man);
	free(pool);
	if (made && !o.keep)
		bench_rm_tree(base, 1);
	else if (made)
		fprintf(hu, "kept %s\n", base);
	return err ? 1 : 0;
}
