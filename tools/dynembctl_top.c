/*
 * dynembctl_top.c — dynembctl top: a live view of a running daemon, polled through
 * libdynemb's query calls (dynemb.h: dynemb_status, dynemb_list_tables,
 * dynemb_stats_by_name, dynemb_op_stats).
 *
 *   dynembctl [...] top [--interval MS] [--iterations N] [--json]
 *
 * A poll reads the daemon's state; a frame compares two polls --interval ms apart (1000
 * by default): per table and operation requests/s, errors/s, keys/s and the p50 / p99
 * latency of the interval's requests (from the difference of the two cumulative
 * histograms, interpolated within buckets: dynembctl_hist.h states the method and its
 * error), and the totals since the daemon started; per table its rows, its memory (what
 * its eviction budget counts, else its arena) against its budget, evictions and
 * admissions (totals and per second); the WAL: records not yet durable (last LSN -
 * durable LSN), bytes written per second, flushes per second and the flush (write +
 * fdatasync) p50 / p99 of the interval; peers ("none" until peers exist).
 *
 * When it stops: a terminal on stdout without --json redraws each frame in place (ANSI
 * clear screen) until Ctrl-C, or N frames with --iterations N. Anything else (a pipe, a
 * file, --json) prints one frame after another, N of them (1 without --iterations), and
 * exits: a script or a test never waits on it. Ctrl-C or SIGTERM ends the loop at once
 * (exit 0). --json: one JSON object per frame, one per line.
 * The first frame comes one interval after the start (it needs two polls).
 *
 * Owns the display only: every number is the daemon's. Rates use this process's
 * CLOCK_MONOTONIC at the end of each OPSTATS request (JSON: poll_start_ns, poll_end_ns
 * say when it was sent and answered, so that a test can bound what it counted).
 */
#include "dynembctl.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dynemb.h"
#include "dynembctl_hist.h"

static volatile sig_atomic_t g_top_stop;

static void on_stop(int sig)
{
	(void)sig;
	g_top_stop = 1;
}

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static const char *const op_names[DYNEMB_OP_MAX + 1] = {
	[DYNEMB_OP_LOOKUP] = "lookup", [DYNEMB_OP_UPDATE] = "update",
	[DYNEMB_OP_ERASE] = "erase", [DYNEMB_OP_STATS] = "stats",
	[DYNEMB_OP_APPLY_GRADS] = "apply_grads", [DYNEMB_OP_SAMPLE] = "sample",
	[DYNEMB_OP_TOPK] = "topk", [DYNEMB_OP_KEY_STRINGS] = "key_strings",
};

/* One table of one poll. */
struct ttab {
	struct dynemb_table_info info;
	struct dynemb_stats st;
	bool has_stats;           /* dynemb_stats_by_name answered (a table may go meanwhile) */
};

/* One poll. */
struct poll {
	struct dynemb_status status;
	struct ttab *t;
	size_t nt;
	struct dynemb_op_stat *ops;
	size_t nops, cap_ops;
	struct dynemb_wal_stats wal;
	uint64_t start_ns, end_ns; /* around dynemb_op_stats */
};

static void poll_free(struct poll *p)
{
	free(p->t);
	free(p->ops);
	memset(p, 0, sizeof *p);
}

/* Fill p (its ops buffer kept and grown across polls). 0 or the failing call's errno;
 * *what names it. */
static int poll_take(dynemb_client *c, struct poll *p, const char **what)
{
	*what = "status";
	int err = dynemb_status(c, &p->status);
	if (err)
		return err;
	*what = "tables";
	free(p->t);
	p->t = NULL;
	p->nt = 0;
	size_t cap = 64, total = 0;
	for (;;) {
		struct ttab *nt = realloc(p->t, cap * sizeof *nt);
		if (!nt)
			return -ENOMEM;
		p->t = nt;
		size_t got = 0;
		struct dynemb_table_info buf[64];
		err = dynemb_list_tables(c, p->nt, buf, 64, &got, &total);
		if (err)
			return err;
		for (size_t i = 0; i < got; i++) {
			if (p->nt == cap)
				break;
			memset(&p->t[p->nt], 0, sizeof p->t[p->nt]);
			p->t[p->nt++].info = buf[i];
		}
		if (!got || p->nt >= total)
			break;
		if (p->nt == cap)
			cap *= 2;
	}
	*what = "stats";
	for (size_t i = 0; i < p->nt; i++) {
		err = dynemb_stats_by_name(c, p->t[i].info.name, &p->t[i].st);
		if (err == -ENOENT || err == -EACCES)
			continue; /* dropped meanwhile */
		if (err)
			return err;
		p->t[i].has_stats = true;
	}
	*what = "op stats";
	for (int tries = 0;; tries++) {
		p->start_ns = mono_ns();
		err = dynemb_op_stats(c, p->ops, p->cap_ops, &p->nops, &p->wal);
		p->end_ns = mono_ns();
		if (err != -ENOBUFS || tries == 8)
			return err;
		size_t want = 2 * p->nops + 16; /* more may come meanwhile */
		struct dynemb_op_stat *no = realloc(p->ops, want * sizeof *no);
		if (!no)
			return -ENOMEM;
		p->ops = no;
		p->cap_ops = want;
	}
}

static const struct dynemb_op_stat *find_op(const struct poll *p, const char *table, uint32_t op)
{
	for (size_t i = 0; i < p->nops; i++)
		if (p->ops[i].op == op && !strcmp(p->ops[i].table, table))
			return &p->ops[i];
	return NULL;
}

static const struct ttab *find_table(const struct poll *p, const char *name)
{
	for (size_t i = 0; i < p->nt; i++)
		if (!strcmp(p->t[i].info.name, name))
			return &p->t[i];
	return NULL;
}

/* An op of a frame: the interval's differences. */
struct fop {
	const struct dynemb_op_stat *now;
	uint64_t d_req, d_err, d_keys;
	uint64_t d_le[TOP_HIST_BUCKETS + 1];
	double p50, p99;          /* ns; NaN: no request in the interval */
	bool p50_over, p99_over;
};

static uint64_t diff(uint64_t now, uint64_t prev, bool reset)
{
	return reset || now < prev ? now : now - prev;
}

static void frame_op(const struct dynemb_op_stat *now, const struct dynemb_op_stat *prev,
		     struct fop *f)
{
	memset(f, 0, sizeof *f);
	f->now = now;
	bool reset = top_hist_delta(now->le, prev ? prev->le : NULL, f->d_le);
	reset |= prev && now->requests < prev->requests;
	f->d_req = diff(now->requests, prev ? prev->requests : 0, reset);
	f->d_err = diff(now->errors, prev ? prev->errors : 0, reset);
	f->d_keys = diff(now->keys, prev ? prev->keys : 0, reset);
	f->p50 = top_hist_quantile(f->d_le, 0.50, &f->p50_over);
	f->p99 = top_hist_quantile(f->d_le, 0.99, &f->p99_over);
}

/* ---- text -------------------------------------------------------------------------------- */

static const char *dur_h(char *b, size_t cap, double ns, bool over)
{
	if (isnan(ns))
		snprintf(b, cap, "-");
	else if (ns >= 1e9)
		snprintf(b, cap, "%s%.2fs", over ? ">" : "", ns / 1e9);
	else if (ns >= 1e6)
		snprintf(b, cap, "%s%.2fms", over ? ">" : "", ns / 1e6);
	else
		snprintf(b, cap, "%s%.1fus", over ? ">" : "", ns / 1e3);
	return b;
}

static const char *num_h(char *b, size_t cap, double v)
{
	if (v >= 1e9)
		snprintf(b, cap, "%.2fG", v / 1e9);
	else if (v >= 1e6)
		snprintf(b, cap, "%.2fM", v / 1e6);
	else if (v >= 1e4)
		snprintf(b, cap, "%.1fk", v / 1e3);
	else if (v >= 100 || v == 0)
		snprintf(b, cap, "%.0f", v);
	else
		snprintf(b, cap, "%.1f", v);
	return b;
}

static const char *bytes_h(char *b, size_t cap, double v)
{
	static const char *const u[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	unsigned i = 0;
	while (v >= 1024 && i + 1 < sizeof u / sizeof u[0]) {
		v /= 1024;
		i++;
	}
	snprintf(b, cap, i ? "%.1f %s" : "%.0f %s", v, u[i]);
	return b;
}

static uint64_t table_mem(const struct ttab *t)
{
	return t->st.budget_bytes ? t->st.resident_bytes : t->st.arena_bytes;
}

/* p50 and p99 of the WAL's flush (write + fdatasync) latency between polls p and q, in
 * ns (over: past the last bucket), from its bucket deltas dl. */
static void wal_flush_quantiles(const struct poll *p, const struct poll *q,
				uint64_t dl[TOP_HIST_BUCKETS + 1], double *f50, bool *o50,
				double *f99, bool *o99)
{
	top_hist_delta(q->wal.flush_le, p->wal.present ? p->wal.flush_le : NULL, dl);
	*f50 = top_hist_quantile(dl, 0.50, o50);
	*f99 = top_hist_quantile(dl, 0.99, o99);
}

static void frame_text(const struct poll *p, const struct poll *q, double dt, unsigned frame,
		       bool redraw)
{
	char a[32], b[32], c[32], d[32], e[32];
	if (redraw)
		fputs("\033[H\033[2J", stdout);
	uint64_t up = p->status.uptime_ms / 1000;
	printf("dynembd %s (pid %u), up %" PRIu64 "h%02" PRIu64 "m%02" PRIu64 "s, %u client%s"
	       " | frame %u, interval %.2f s\n\n", p->status.version, p->status.pid, up / 3600,
	       up / 60 % 60, up % 60, p->status.clients, p->status.clients == 1 ? "" : "s", frame,
	       dt);
	printf("%-24s %-11s %10s %8s %10s %10s %10s %12s\n", "TABLE", "OP", "REQ/S", "ERR/S",
	       "KEYS/S", "P50", "P99", "REQUESTS");
	size_t shown = 0;
	for (size_t i = 0; i < q->nops; i++) {
		struct fop f;
		frame_op(&q->ops[i], find_op(p, q->ops[i].table, q->ops[i].op), &f);
		const char *name = i && !strcmp(q->ops[i - 1].table, q->ops[i].table) ? ""
										 : q->ops[i].table;
		printf("%-24.24s %-11s %10s %8s %10s %10s %10s %12" PRIu64 "\n", name,
		       op_names[q->ops[i].op], num_h(a, sizeof a, (double)f.d_req / dt),
		       num_h(b, sizeof b, (double)f.d_err / dt),
		       num_h(c, sizeof c, (double)f.d_keys / dt),
		       dur_h(d, sizeof d, f.p50, f.p50_over), dur_h(e, sizeof e, f.p99, f.p99_over),
		       q->ops[i].requests);
		shown++;
	}
	if (!shown)
		printf("(no requests yet)\n");
	printf("\n%-24s %12s %23s %10s %10s %10s\n", "TABLE", "ROWS", "MEMORY / BUDGET",
	       "EVICTED/S", "ADMIT/S", "EVICTED");
	for (size_t i = 0; i < q->nt; i++) {
		const struct ttab *t = &q->t[i], *o = find_table(p, t->info.name);
		if (!t->has_stats) {
			printf("%-24.24s (gone)\n", t->info.name);
			continue;
		}
		bool po = o && o->has_stats;
		char mem[72];
		snprintf(mem, sizeof mem, "%s / %s", bytes_h(a, sizeof a, (double)table_mem(t)),
			 t->st.budget_bytes ? bytes_h(b, sizeof b, (double)t->st.budget_bytes)
					    : "none");
		printf("%-24.24s %12" PRIu64 " %23s %10s %10s %10" PRIu64 "\n", t->info.name,
		       t->st.keys, mem,
		       num_h(c, sizeof c,
			     (double)diff(t->st.evicted, po ? o->st.evicted : 0, !po) / dt),
		       num_h(d, sizeof d,
			     (double)diff(t->st.admitted, po ? o->st.admitted : 0, !po) / dt),
		       t->st.evicted);
	}
	if (!q->nt)
		printf("(no tables that this uid may open)\n");
	printf("\n");
	if (!q->wal.present) {
		printf("wal    none (no data directory)\n");
	} else {
		uint64_t dl[TOP_HIST_BUCKETS + 1];
		bool o50, o99;
		double f50, f99;
		wal_flush_quantiles(p, q, dl, &f50, &o50, &f99, &o99);
		printf("wal    %s, lag %" PRIu64 " records (durable lsn %" PRIu64 " of %" PRIu64
		       "), %s/s written, %s flushes/s, fsync p50 %s p99 %s\n",
		       q->status.wal_state == DYNEMB_WAL_FAILED ? "FAILED" : "ok",
		       q->wal.last_lsn - q->wal.durable_lsn, q->wal.durable_lsn, q->wal.last_lsn,
		       bytes_h(a, sizeof a,
			       (double)diff(q->wal.bytes_written, p->wal.bytes_written, false) / dt),
		       num_h(b, sizeof b, (double)diff(q->wal.flushes, p->wal.flushes, false) / dt),
		       dur_h(c, sizeof c, f50, o50), dur_h(d, sizeof d, f99, o99));
	}
	if (q->status.peers)
		printf("peers  %u\n", q->status.peers);
	else
		printf("peers  none\n");
	fflush(stdout);
}

/* ---- JSON -------------------------------------------------------------------------------- */

static void json_num(double v)
{
	if (isnan(v))
		printf("null");
	else
		printf("%.3f", v);
}

static void frame_json(const struct poll *p, const struct poll *q, double dt, unsigned frame)
{
	printf("{\"ok\": true, \"command\": \"top\", \"frame\": %u, \"interval_s\": %.6f, "
	       "\"poll_start_ns\": %" PRIu64 ", \"poll_end_ns\": %" PRIu64 ", "
	       "\"prev_poll_start_ns\": %" PRIu64 ", \"prev_poll_end_ns\": %" PRIu64 ", "
	       "\"uptime_ms\": %" PRIu64 ", \"clients\": %u, \"tables\": [",
	       frame, dt, q->start_ns, q->end_ns, p->start_ns, p->end_ns, q->status.uptime_ms,
	       q->status.clients);
	for (size_t i = 0; i < q->nt; i++) {
		const struct ttab *t = &q->t[i], *o = find_table(p, t->info.name);
		bool po = o && o->has_stats;
		printf("%s{\"name\": ", i ? ", " : "");
		ctl_json_str(stdout, t->info.name);
		printf(", \"present\": %s, \"rows\": %" PRIu64 ", \"arena_bytes\": %" PRIu64
		       ", \"resident_bytes\": %" PRIu64 ", \"memory_bytes\": %" PRIu64
		       ", \"budget_bytes\": %" PRIu64 ", \"evicted\": %" PRIu64 ", \"admitted\": %"
		       PRIu64 ", \"filtered\": %" PRIu64 ", \"evicted_per_s\": ",
		       t->has_stats ? "true" : "false", t->st.keys, t->st.arena_bytes,
		       t->st.resident_bytes, table_mem(t), t->st.budget_bytes, t->st.evicted,
		       t->st.admitted, t->st.filtered);
		json_num((double)diff(t->st.evicted, po ? o->st.evicted : 0, !po) / dt);
		printf(", \"admitted_per_s\": ");
		json_num((double)diff(t->st.admitted, po ? o->st.admitted : 0, !po) / dt);
		printf(", \"ops\": [");
		bool first = true;
		for (size_t k = 0; k < q->nops; k++) {
			if (strcmp(q->ops[k].table, t->info.name))
				continue;
			struct fop f;
			frame_op(&q->ops[k], find_op(p, t->info.name, q->ops[k].op), &f);
			printf("%s{\"op\": \"%s\", \"requests\": %" PRIu64 ", \"errors\": %" PRIu64
			       ", \"keys\": %" PRIu64 ", \"sum_ns\": %" PRIu64
			       ", \"delta_requests\": %" PRIu64 ", \"delta_errors\": %" PRIu64
			       ", \"delta_keys\": %" PRIu64
			       ", \"requests_per_s\": ", first ? "" : ", ", op_names[q->ops[k].op],
			       f.now->requests, f.now->errors, f.now->keys, f.now->sum_ns, f.d_req,
			       f.d_err, f.d_keys);
			json_num((double)f.d_req / dt);
			printf(", \"errors_per_s\": ");
			json_num((double)f.d_err / dt);
			printf(", \"keys_per_s\": ");
			json_num((double)f.d_keys / dt);
			printf(", \"p50_us\": ");
			json_num(f.p50 / 1e3);
			printf(", \"p99_us\": ");
			json_num(f.p99 / 1e3);
			printf(", \"p50_over\": %s, \"p99_over\": %s, \"le\": [",
			       f.p50_over ? "true" : "false", f.p99_over ? "true" : "false");
			for (unsigned b = 0; b <= TOP_HIST_BUCKETS; b++)
				printf("%s%" PRIu64, b ? ", " : "", f.now->le[b]);
			printf("], \"delta_le\": [");
			for (unsigned b = 0; b <= TOP_HIST_BUCKETS; b++)
				printf("%s%" PRIu64, b ? ", " : "", f.d_le[b]);
			printf("]}");
			first = false;
		}
		printf("]}");
	}
	printf("], \"bucket_bounds_us\": [");
	for (unsigned b = 0; b < TOP_HIST_BUCKETS; b++)
		printf("%s%.0f", b ? ", " : "", top_hist_bound_ns(b) / 1e3);
	printf("], \"wal\": ");
	if (!q->wal.present) {
		printf("null");
	} else {
		uint64_t dl[TOP_HIST_BUCKETS + 1];
		bool o50, o99;
		double f50, f99;
		wal_flush_quantiles(p, q, dl, &f50, &o50, &f99, &o99);
		printf("{\"state\": \"%s\", \"last_lsn\": %" PRIu64 ", \"durable_lsn\": %" PRIu64
		       ", \"lag_records\": %" PRIu64 ", \"bytes_written\": %" PRIu64
		       ", \"flushes\": %" PRIu64 ", \"fsyncs\": %" PRIu64 ", \"bytes_per_s\": ",
		       q->status.wal_state == DYNEMB_WAL_FAILED ? "failed" : "ok", q->wal.last_lsn,
		       q->wal.durable_lsn, q->wal.last_lsn - q->wal.durable_lsn,
		       q->wal.bytes_written, q->wal.flushes, q->wal.fsyncs);
		json_num((double)diff(q->wal.bytes_written, p->wal.bytes_written, false) / dt);
		printf(", \"flushes_per_s\": ");
		json_num((double)diff(q->wal.flushes, p->wal.flushes, false) / dt);
		printf(", \"fsync_p50_us\": ");
		json_num(f50 / 1e3);
		printf(", \"fsync_p99_us\": ");
		json_num(f99 / 1e3);
		printf(", \"fsync_p99_over\": %s, \"delta_flush_le\": [", o99 ? "true" : "false");
		for (unsigned b = 0; b <= TOP_HIST_BUCKETS; b++)
			printf("%s%" PRIu64, b ? ", " : "", dl[b]);
		printf("]}");
	}
	printf(", \"peers\": ");
	if (q->status.peers)
		printf("%u", q->status.peers);
	else
		printf("\"none\"");
	printf("}\n");
	fflush(stdout);
}

/* ---- the loop ----------------------------------------------------------------------------- */

/* Sleep until the monotonic instant at_ns, or a signal to stop. */
static void sleep_until(uint64_t at_ns)
{
	struct timespec ts = { .tv_sec = (time_t)(at_ns / 1000000000ull),
			       .tv_nsec = (long)(at_ns % 1000000000ull) };
	while (!g_top_stop && clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

int ctl_top(dynemb_client *c, const struct ctl_opts *o)
{
	bool redraw = !o->json && isatty(1) == 1;
	long iterations = o->iterations > 0 ? o->iterations : redraw ? 0 : 1; /* 0: until ^C */
	uint64_t interval_ns = (uint64_t)o->interval_ms * 1000000ull;
	struct sigaction sa = { .sa_handler = on_stop };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	struct poll a, b;
	memset(&a, 0, sizeof a);
	memset(&b, 0, sizeof b);
	struct poll *prev = &a, *now = &b;
	const char *what = "";
	int rc = 0, err = poll_take(c, prev, &what);
	uint64_t next = prev->end_ns + interval_ns;
	for (unsigned frame = 1; !err && !g_top_stop && (!iterations || frame <= iterations);
	     frame++) {
		sleep_until(next);
		if (g_top_stop)
			break;
		err = poll_take(c, now, &what);
		if (err)
			break;
		next += interval_ns;
		if (next < now->end_ns) /* a slow poll: no burst of frames to catch up */
			next = now->end_ns + interval_ns;
		double dt = (double)(now->end_ns - prev->end_ns) / 1e9;
		if (dt <= 0)
			dt = 1e-9;
		if (o->json)
			frame_json(prev, now, dt, frame);
		else
			frame_text(prev, now, dt, frame, redraw);
		struct poll *t = prev;
		prev = now;
		now = t;
	}
	if (err) {
		const char *why = dynemb_strerror(err);
		fprintf(stderr, "dynembctl: top: %s: %s\n", what, why);
		ctl_json_error(o, "top", err, why);
		rc = EXIT_FAIL;
	}
	poll_free(&a);
	poll_free(&b);
	return rc;
}
