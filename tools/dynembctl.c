/*
 * dynembctl.c — the operator's command line for dynembd: snapshots, export and import
 * (ARCHITECTURE.md section 9), through libdynemb's persistence calls (dynemb.h:
 * dynemb_snapshot, dynemb_export, dynemb_import), and dropping a table
 * (dynemb_drop_table_flags; --force: DYNEMB_DROP_FORCE). The queries (status, tables,
 * stats, health, evict, log-level, top) are dynembctl_query.c's (top: dynembctl_top.c);
 * this file parses every command's arguments.
 *
 *   dynembctl [--socket PATH] [--timeout-ms N] [--quiet] [--json] snapshot [TABLE] [--full]
 *   dynembctl [...] export TABLE FILE
 *   dynembctl [...] import TABLE FILE [--salvage]
 *   dynembctl [...] drop [--force] TABLE
 *   dynembctl [...] serve-load NAME FILE [--miss-init]   (dynemb_serve_load)
 *
 * --json (before or after the command): the result as one JSON object on stdout (a
 * failure too: {"ok": false, "errno", "error"}; the text stays on stderr).
 * Owns the CLI only: argument checks, the progress display and the messages. The daemon
 * does the work (its job thread) and checks everything again (table names, paths under
 * its [persistence] export_dir, the file's format).
 * Progress: on a terminal (isatty(stderr)) one line redrawn with \r: a bar, percent,
 * rows, rate and ETA; otherwise a plain line at every 10% step. --quiet: none.
 * SIGINT / SIGTERM during a job: the progress callback asks to stop; the daemon finishes
 * what it must (no half-written snapshot or import is left) and the call returns
 * -ECANCELED; a second signal is not caught any more (the default action).
 * Paths: FILE is made absolute here (the daemon runs elsewhere and takes absolute paths
 * only): a relative FILE is taken from the current directory.
 * Exit status: 0 done, 1 failed (the reason on stderr), 2 bad usage.
 * Messages: a failure says what to fix as the command means it (connect_fail, job_fail):
 * no socket or no listener (is dynembd running?), a table or FILE that does not exist, a
 * daemon that went away mid-job; anything else is dynemb_strerror with the daemon's reason.
 * Never: retries a failed job (the daemon's error is final), or prints progress on
 * stdout (stdout has the result line only, for scripts).
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dynemb.h"
#include "dynembctl.h"

#define BAR_WIDTH 30

static volatile sig_atomic_t g_stop; /* set by SIGINT / SIGTERM: the progress cb stops */
static struct ctl_opts g_opts;       /* the options of this run (for the failure paths) */

static void on_signal(int sig)
{
	g_stop = 1;
	signal(sig, SIG_DFL); /* a second one ends the program */
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- progress ---------------------------------------------------------------------------- */

struct progress {
	bool tty, quiet, drawn;
	const char *verb;          /* "snapshot", "export", "import" */
	int phase;                 /* the phase / table the current bar is about */
	uint32_t table_index;
	double t0;                 /* start of the current bar */
	int last_decile;           /* non-tty: the last 10% step printed */
	double last_draw;
	char table[64];
};

static const char *phase_name(const struct progress *p, int phase)
{
	switch (phase) {
	case DYNEMB_PROGRESS_SNAPSHOT:
		return "snapshot";
	case DYNEMB_PROGRESS_EXPORT:
		return "export";
	case DYNEMB_PROGRESS_IMPORT:
		return "import";
	case DYNEMB_PROGRESS_SERVE_LOAD:
		return "serve-load";
	default:
		return p->verb;
	}
}

static void human(char *buf, size_t cap, double v)
{
	if (v >= 1e9)
		snprintf(buf, cap, "%.2fG", v / 1e9);
	else if (v >= 1e6)
		snprintf(buf, cap, "%.2fM", v / 1e6);
	else if (v >= 1e4)
		snprintf(buf, cap, "%.1fk", v / 1e3);
	else
		snprintf(buf, cap, "%.0f", v);
}

static void eta_text(char *buf, size_t cap, double s)
{
	if (!isfinite(s) || s < 0)
		snprintf(buf, cap, "--");
	else if (s >= 3600)
		snprintf(buf, cap, "%dh%02dm", (int)(s / 3600), (int)fmod(s / 60, 60));
	else if (s >= 60)
		snprintf(buf, cap, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
	else
		snprintf(buf, cap, "%.0fs", s);
}

static void progress_end_line(struct progress *p)
{
	if (p->tty && p->drawn) {
		fputc('\n', stderr);
		fflush(stderr);
	}
	p->drawn = false;
}

static int on_progress(void *ctx, const struct dynemb_progress *d)
{
	struct progress *p = ctx;
	if (g_stop)
		return 1;
	if (p->quiet)
		return 0;
	double t = now_s();
	/* a new bar when the phase or the table changes (import then snapshots the table;
	 * a snapshot of every table goes through them in turn) */
	if ((int)d->phase != p->phase || d->table_index != p->table_index ||
	    strncmp(p->table, d->table ? d->table : "", sizeof p->table - 1)) {
		progress_end_line(p);
		p->phase = (int)d->phase;
		p->table_index = d->table_index;
		snprintf(p->table, sizeof p->table, "%s", d->table ? d->table : "");
		p->t0 = t;
		p->last_decile = -1;
		p->last_draw = 0;
	}
	double frac = d->total ? (double)d->done / (double)d->total : 0;
	if (frac > 1)
		frac = 1; /* total is an estimate */
	double el = t - p->t0, rate = el > 0 ? (double)d->done / el : NAN;
	char dn[16], tn[16], rt[16], eta[16];
	human(dn, sizeof dn, (double)d->done);
	human(tn, sizeof tn, (double)d->total);
	human(rt, sizeof rt, rate);
	eta_text(eta, sizeof eta,
		 rate > 0 && d->total >= d->done ? (double)(d->total - d->done) / rate : NAN);
	if (p->tty) {
		if (t - p->last_draw < 0.1 && d->done < d->total)
			return 0;
		p->last_draw = t;
		char bar[BAR_WIDTH + 1];
		int fill = (int)(frac * BAR_WIDTH);
		for (int i = 0; i < BAR_WIDTH; i++)
			bar[i] = i < fill ? '#' : '.';
		bar[BAR_WIDTH] = 0;
		fprintf(stderr, "\r%s %s [%s] %3.0f%% %s/%s rows %s rows/s ETA %s\x1b[K",
			phase_name(p, p->phase), p->table, bar, frac * 100, dn, tn,
			isfinite(rate) ? rt : "--", eta);
		p->drawn = true;
		fflush(stderr);
	} else {
		int decile = (int)(frac * 10);
		if (decile > p->last_decile) {
			p->last_decile = decile;
			fprintf(stderr, "%s %s: %d%% (%" PRIu64 "/%" PRIu64 " rows)\n",
				phase_name(p, p->phase), p->table, decile * 10, d->done, d->total);
		}
	}
	return 0;
}

/* ---- commands ---------------------------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: dynembctl [--socket PATH] [--timeout-ms N] [--quiet] [--json] COMMAND [ARGS]\n"
		"\n"
		"Commands (the daemon does the work; dynembctl shows its progress):\n"
		"  snapshot [TABLE] [--full]   checkpoint TABLE, or every persisted table: an\n"
		"                              incremental snapshot where the table has one to\n"
		"                              extend, else (or with --full) a full one\n"
		"  export TABLE FILE           write TABLE to FILE in the export format (see\n"
		"                              uring/README.md; NumPy reads it)\n"
		"  import TABLE FILE [--salvage]  read FILE into TABLE (same config); --salvage\n"
		"                              keeps the verified prefix of a damaged file\n"
		"  drop [--force] TABLE        remove TABLE from the daemon (and its data_dir) and\n"
		"                              give its memory back; no client may have it open,\n"
		"                              unless --force: the daemon then revokes the clients'\n"
		"                              handles (their calls fail) and cancels its jobs\n"
		"  serve-load NAME FILE [--miss-init]  load FILE (an export) as the next version of\n"
		"                              serving table NAME beside the current one, then\n"
		"                              switch readers to it; --miss-init: missing keys\n"
		"                              read the initializer, not zeros\n"
		"\n"
		"The daemon's state:\n"
		"  status                      version, uptime, pages, NUMA node, clients, tables,\n"
		"                              WAL state, peers\n"
		"  tables                      the tables this uid may open: keys, dim, resident\n"
		"                              and budget bytes, read-only\n"
		"  stats TABLE                 TABLE's statistics (without opening it)\n"
		"  health                      exit 0 serving, 1 degraded (the reason on stdout: the\n"
		"                              WAL failed, a table is read-only), 2 down or\n"
		"                              unreachable; --quiet: no output (probes)\n"
		"  evict TABLE                 one eviction pass on TABLE now (a table with\n"
		"                              eviction; needs the write right)\n"
		"  log-level LEVEL             error, warn, info or debug (root or the daemon's uid)\n"
		"  top [--interval MS] [--iterations N]\n"
		"                              a live view: requests/s, errors/s and p50/p99\n"
		"                              latency per table and op, rows, memory against\n"
		"                              budget, evictions, admissions, WAL lag and fsync\n"
		"                              latency, peers; every MS ms (1000). A terminal is\n"
		"                              redrawn until Ctrl-C (or N frames); otherwise N\n"
		"                              frames (1) are printed one after another\n"
		"\n"
		"Options:\n"
		"  --socket PATH      the daemon's control socket (default: $DYNEMB_SOCKET, else\n"
		"                     /run/dynemb/dynemb.sock)\n"
		"  --timeout-ms N     longest wait between two messages of the daemon (10000)\n"
		"  --quiet            no progress display (health: no output)\n"
		"  --json             the result as one JSON object on stdout (top: one per frame)\n"
		"  -h, --help         this text\n"
		"\n"
		"FILE: the daemon reads and writes it itself, as its own user, and only under its\n"
		"[persistence] export_dir (dynembd --export-dir); a relative FILE is taken from\n"
		"the current directory. The daemon needs [persistence] data_dir for snapshots.\n"
		"Progress goes to stderr (a redrawn bar on a terminal, else a line every 10%%);\n"
		"the result goes to stdout. Ctrl-C asks the daemon to stop the job cleanly.\n"
		"Exit status: 0 done, 1 failed, 2 bad usage (health: 2 down).\n");
}

__attribute__((format(printf, 1, 2))) static int bad_usage(const char *fmt, ...)
{
	va_list ap;
	fputs("dynembctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\nTry 'dynembctl --help'.\n", stderr);
	return EXIT_USAGE;
}

/* FILE as an absolute path: -ENAMETOOLONG when it does not fit. */
static int absolute(const char *in, char *out, size_t cap)
{
	if (in[0] == '/') {
		if (strlen(in) >= cap)
			return -ENAMETOOLONG;
		snprintf(out, cap, "%s", in);
		return 0;
	}
	char cwd[PATH_MAX];
	if (!getcwd(cwd, sizeof cwd))
		return -errno;
	int n = snprintf(out, cap, "%s/%s", cwd, in);
	return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

static int fail(const char *what, const char *table, int err)
{
	const char *why = err == -ECANCELED ? "cancelled (the daemon finished or rolled back the job)"
					    : dynemb_strerror(err);
	fprintf(stderr, "dynembctl: %s%s%s: %s\n", what, table ? " " : "", table ? table : "", why);
	ctl_json_error(&g_opts, what, err, why);
	return EXIT_FAIL;
}

/* A failure with the message already printed (fmt, on stderr): the same as JSON. */
__attribute__((format(printf, 3, 4)))
static int fail_msg(const char *cmd, int err, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	fprintf(stderr, "dynembctl: %s\n", line);
	ctl_json_error(&g_opts, cmd, err, line);
	return EXIT_FAIL;
}

/* A failed snapshot, export or import: the reason as this command means it. -ENOENT from
 * the daemon is a missing table, or (export, import) a missing FILE or directory of FILE,
 * which is checked here (the daemon runs on this host: a path it cannot find is missing
 * here too); the daemon looks the table up first. Other errors: dynemb_strerror, which
 * carries the daemon's own reason. */
static int job_fail(const char *cmd, const char *table, const char *file, int err)
{
	const char *shown = table ? table : "(every table)";
	char dir[PATH_MAX];
	struct stat st;
	switch (err) {
	case -ENOENT:
		if (file && (!strcmp(cmd, "import") || !strcmp(cmd, "serve-load")) &&
		    stat(file, &st) && errno == ENOENT)
			return fail_msg(cmd, err, "%s %s: %s does not exist", cmd, shown, file);
		snprintf(dir, sizeof dir, "%s", file ? file : "");
		if (file && strrchr(dir, '/'))
			*strrchr(dir, '/') = 0;
		if (file && dir[0] && stat(dir, &st) && errno == ENOENT)
			return fail_msg(cmd, err, "%s %s: the directory %s does not exist", cmd, shown,
					dir);
		if (table)
			return fail_msg(cmd, err, "%s %s: table '%s' does not exist in this dynembd",
					cmd, shown, table);
		break;
	case -ECONNRESET:
	case -EPIPE:
		return fail_msg(cmd, err, "%s %s: dynembd went away during the %s (it exited or "
				"was killed): whether the job finished is unknown", cmd, shown, cmd);
	case -ETIMEDOUT:
		return fail_msg(cmd, err, "%s %s: dynembd sent nothing for --timeout-ms; the job "
				"may still be running", cmd, shown);
	default:
		break;
	}
	return fail(cmd, shown, err);
}

/* dynemb_connect failed: say what to check. */
int ctl_connect_fail(const struct ctl_opts *o, const char *cmd, int err)
{
	const char *where = o->socket_path ? o->socket_path
					   : "the default socket (/run/dynemb/dynemb.sock)";
	g_opts = *o;
	switch (err) {
	case -ENOENT:
		return fail_msg(cmd, err, "cannot reach dynembd at %s: no such socket (is dynembd "
				"running? --socket or DYNEMB_SOCKET names another one)", where);
	case -ECONNREFUSED:
		return fail_msg(cmd, err, "cannot reach dynembd at %s: nothing listens there (is "
				"dynembd running?)", where);
	case -EACCES:
		return fail_msg(cmd, err, "dynembd at %s refused uid %u: %s", where,
				(unsigned)geteuid(), dynemb_strerror(err));
	default:
		return fail_msg(cmd, err, "cannot reach dynembd at %s: %s", where,
				dynemb_strerror(err));
	}
}

int main(int argc, char **argv)
{
	const char *socket_path = getenv("DYNEMB_SOCKET");
	int timeout_ms = 10000;
	bool quiet = false;
	int i = 1;
	for (; i < argc && argv[i][0] == '-'; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(a, "--quiet") || !strcmp(a, "-q")) {
			quiet = true;
		} else if (!strcmp(a, "--json")) {
			g_opts.json = true;
		} else if (!strcmp(a, "--socket") || !strcmp(a, "--timeout-ms")) {
			if (i + 1 >= argc)
				return bad_usage("%s needs a value", a);
			const char *v = argv[++i];
			if (!strcmp(a, "--socket")) {
				socket_path = v;
				continue;
			}
			char *end;
			errno = 0;
			long t = strtol(v, &end, 10);
			if (!*v || *end || errno || t < 1 || t > 3600000)
				return bad_usage("--timeout-ms takes 1..3600000, not '%s'", v);
			timeout_ms = (int)t;
		} else {
			return bad_usage("unknown option '%s'", a);
		}
	}
	if (i >= argc)
		return bad_usage("no command (snapshot, export, import, drop, serve-load, "
				 "status, tables, stats, health, evict, log-level, top)");
	const char *cmd = argv[i++];

	/* the command's own arguments: positionals and its flags, in any order */
	const char *pos[3];
	int npos = 0;
	bool full = false, salvage = false, force = false, miss_init = false;
	for (; i < argc; i++) {
		if (!strcmp(argv[i], "--full") && !strcmp(cmd, "snapshot"))
			full = true;
		else if (!strcmp(argv[i], "--salvage") && !strcmp(cmd, "import"))
			salvage = true;
		else if (!strcmp(argv[i], "--force") && !strcmp(cmd, "drop"))
			force = true;
		else if (!strcmp(argv[i], "--miss-init") && !strcmp(cmd, "serve-load"))
			miss_init = true;
		else if (!strcmp(argv[i], "--json"))
			g_opts.json = true;
		else if (!strcmp(cmd, "top") && (!strcmp(argv[i], "--interval") ||
						 !strcmp(argv[i], "--iterations"))) {
			const char *a = argv[i];
			if (i + 1 >= argc)
				return bad_usage("top: %s needs a value", a);
			const char *v = argv[++i];
			bool ival = !strcmp(a, "--interval");
			long lo = ival ? 10 : 1, hi = ival ? 3600000 : 100000000;
			char *end;
			errno = 0;
			long x = strtol(v, &end, 10);
			if (!*v || *end || errno || x < lo || x > hi)
				return bad_usage("top: %s takes %ld..%ld%s, not '%s'", a, lo, hi,
						 ival ? " (ms)" : "", v);
			if (ival)
				g_opts.interval_ms = (int)x;
			else
				g_opts.iterations = x;
		}
		else if (!strcmp(argv[i], "--quiet") || !strcmp(argv[i], "-q"))
			quiet = true;
		else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			usage(stdout);
			return 0;
		} else if (argv[i][0] == '-' && argv[i][1])
			return bad_usage("%s: unknown option '%s'", cmd, argv[i]);
		else if (npos < 3)
			pos[npos++] = argv[i];
		else
			return bad_usage("%s: too many arguments", cmd);
	}
	if (!g_opts.interval_ms)
		g_opts.interval_ms = 1000;
	g_opts.socket_path = socket_path;
	g_opts.timeout_ms = timeout_ms;
	g_opts.quiet = quiet;
	if (ctl_is_query(cmd)) /* dynembctl_query.c */
		return ctl_query(cmd, npos, pos, &g_opts);
	enum { C_SNAPSHOT, C_EXPORT, C_IMPORT, C_DROP, C_SERVE } which;
	if (!strcmp(cmd, "snapshot")) {
		which = C_SNAPSHOT;
		if (npos > 1)
			return bad_usage("snapshot takes at most one TABLE");
	} else if (!strcmp(cmd, "export") || !strcmp(cmd, "import")) {
		which = cmd[0] == 'e' ? C_EXPORT : C_IMPORT;
		if (npos != 2)
			return bad_usage("%s takes TABLE FILE", cmd);
	} else if (!strcmp(cmd, "serve-load")) {
		which = C_SERVE;
		if (npos != 2)
			return bad_usage("serve-load takes NAME FILE [--miss-init]");
	} else if (!strcmp(cmd, "drop")) {
		which = C_DROP;
		if (npos != 1)
			return bad_usage("drop takes [--force] TABLE");
	} else {
		return bad_usage("unknown command '%s' (snapshot, export, import, drop, serve-load, "
				 "status, tables, stats, health, evict, log-level, top)", cmd);
	}
	if (npos && (!pos[0][0] || strlen(pos[0]) > 63))
		return bad_usage("a table name has 1..63 bytes: '%s'", pos[0]);
	char path[PATH_MAX];
	if (which == C_EXPORT || which == C_IMPORT || which == C_SERVE) {
		if (!pos[1][0])
			return bad_usage("%s: an empty FILE", cmd);
		int err = absolute(pos[1], path, sizeof path);
		if (err)
			return fail("FILE", pos[1], err);
	}

	dynemb_client *c = NULL;
	struct dynemb_connect_opts co = { .name = "dynembctl", .timeout_ms = timeout_ms };
	int err = dynemb_connect(socket_path, &co, &c);
	if (err)
		return ctl_connect_fail(&g_opts, cmd, err);
	struct sigaction sa = { .sa_handler = on_signal };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	struct progress p = { .tty = isatty(2) == 1, .quiet = quiet, .phase = -1,
			      .table_index = UINT32_MAX, .last_decile = -1 };
	double t0 = now_s();
	int rc = 0;
	switch (which) {
	case C_SNAPSHOT: {
		struct dynemb_snapshot_result res;
		p.verb = "snapshot";
		err = dynemb_snapshot(c, npos ? pos[0] : NULL, full, on_progress, &p, &res);
		progress_end_line(&p);
		if (err) {
			rc = job_fail("snapshot", npos ? pos[0] : NULL, NULL, err);
			break;
		}
		if (g_opts.json)
			printf("{\"ok\": true, \"command\": \"snapshot\", \"tables\": %u, \"rows\": %"
			       PRIu64 ", \"bytes\": %" PRIu64 ", \"lsn\": %" PRIu64 ", \"seconds\": %.3f}\n",
			       res.tables, res.rows, res.bytes, res.lsn, now_s() - t0);
		else
			printf("snapshot: %u table%s, %" PRIu64 " rows, %" PRIu64 " bytes, WAL from lsn %"
			       PRIu64 ", %.2f s\n", res.tables, res.tables == 1 ? "" : "s", res.rows,
			       res.bytes, res.lsn, now_s() - t0);
		break;
	}
	case C_EXPORT: {
		uint64_t records = 0, bytes = 0;
		p.verb = "export";
		err = dynemb_export(c, pos[0], path, on_progress, &p, &records, &bytes);
		progress_end_line(&p);
		if (err) {
			rc = job_fail("export", pos[0], path, err);
			break;
		}
		if (g_opts.json) {
			printf("{\"ok\": true, \"command\": \"export\", \"table\": ");
			ctl_json_str(stdout, pos[0]);
			printf(", \"file\": ");
			ctl_json_str(stdout, path);
			printf(", \"records\": %" PRIu64 ", \"bytes\": %" PRIu64 ", \"seconds\": %.3f}\n",
			       records, bytes, now_s() - t0);
			break;
		}
		printf("exported %s: %" PRIu64 " records, %" PRIu64 " bytes to %s, %.2f s\n",
		       pos[0], records, bytes, path, now_s() - t0);
		break;
	}
	case C_IMPORT: {
		struct dynemb_import_result res;
		memset(&res, 0, sizeof res);
		p.verb = "import";
		err = dynemb_import(c, pos[0], path, salvage ? DYNEMB_IMPORT_SALVAGE_PREFIX : 0,
				    on_progress, &p, &res);
		progress_end_line(&p);
		if (err) {
			rc = job_fail("import", pos[0], path, err);
			break;
		}
		res.problem[sizeof res.problem - 1] = 0;
		if (g_opts.json) {
			printf("{\"ok\": true, \"command\": \"import\", \"table\": ");
			ctl_json_str(stdout, pos[0]);
			printf(", \"file\": ");
			ctl_json_str(stdout, path);
			printf(", \"records\": %" PRIu64 ", \"imported\": %" PRIu64 ", \"dropped\": %"
			       PRIu64 ", \"problem\": ", res.records, res.imported, res.dropped);
			ctl_json_str(stdout, res.problem);
			printf(", \"seconds\": %.3f}\n", now_s() - t0);
			break;
		}
		printf("imported %s: %" PRIu64 " of %" PRIu64 " records from %s, %.2f s\n", pos[0],
		       res.imported, res.records, path, now_s() - t0);
		if (res.dropped || res.problem[0])
			printf("salvage: %" PRIu64 " records dropped: %s\n", res.dropped,
			       res.problem[0] ? res.problem : "(no reason given)");
		break;
	}
	case C_SERVE: {
		struct dynemb_serve_result res;
		memset(&res, 0, sizeof res);
		p.verb = "serve-load";
		err = dynemb_serve_load(c, pos[0], path, miss_init ? DYNEMB_SERVE_MISS_INIT : 0,
					on_progress, &p, &res);
		progress_end_line(&p);
		if (err) {
			rc = job_fail("serve-load", pos[0], path, err);
			break;
		}
		if (g_opts.json) {
			printf("{\"ok\": true, \"command\": \"serve-load\", \"table\": ");
			ctl_json_str(stdout, pos[0]);
			printf(", \"file\": ");
			ctl_json_str(stdout, path);
			printf(", \"version\": %" PRIu64 ", \"previous\": %" PRIu64 ", \"records\": %"
			       PRIu64 ", \"bytes\": %" PRIu64 ", \"seconds\": %.3f}\n", res.version,
			       res.previous, res.records, res.bytes, now_s() - t0);
			break;
		}
		printf("serving %s: version %" PRIu64 " (%" PRIu64 " records, %" PRIu64 " MiB) from %s"
		       "%s, %.2f s\n", pos[0], res.version, res.records, res.bytes >> 20, path,
		       res.previous ? " replaces the previous version" : "", now_s() - t0);
		break;
	}
	case C_DROP: {
		uint64_t bytes = 0;
		err = dynemb_drop_table_flags(c, pos[0], force ? DYNEMB_DROP_FORCE : 0, &bytes);
		if (err) {
			rc = fail("drop", pos[0], err);
			break;
		}
		if (g_opts.json) {
			printf("{\"ok\": true, \"command\": \"drop\", \"table\": ");
			ctl_json_str(stdout, pos[0]);
			printf(", \"bytes\": %" PRIu64 ", \"forced\": %s}\n", bytes,
			       force ? "true" : "false");
		} else {
			printf("%sdropped %s: %" PRIu64 " MiB given back\n", force ? "force-" : "",
			       pos[0], bytes >> 20);
		}
		break;
	}
	}
	dynemb_close(c);
	return rc;
}
