/*
 * dynembctl_query.c — dynembctl's view of a running daemon, through libdynemb's query
 * calls (dynemb.h, DYNEMB_CAP_QUERY):
 *
 *   dynembctl [...] status              version, uptime, pages, NUMA, clients, tables, WAL
 *   dynembctl [...] tables              the tables this uid may open, one per line
 *   dynembctl [...] stats TABLE         a table's statistics, without opening it
 *   dynembctl [...] health              exit 0 serving, 1 degraded (the reason on stdout:
 *                                       the WAL failed, a table is read-only), 2 down or
 *                                       unreachable; --quiet prints nothing
 *   dynembctl [...] evict TABLE         one eviction pass on TABLE now
 *   dynembctl [...] log-level LEVEL     error, warn, info or debug, from now on
 *   dynembctl [...] top [--interval MS] [--iterations N]
 *                                       a live view: requests/s and latency per table
 *                                       and op, rows, memory, WAL (dynembctl_top.c)
 *
 * Output: aligned text with human byte sizes by default; --json: one JSON object on
 * stdout (byte counts as exact integers), also for a failure ({"ok": false, ...}, the
 * text still on stderr). Every failure carries the daemon's reason (dynemb_strerror).
 * Owns the formatting only: the daemon decides rights and existence.
 */
#include "dynembctl.h"

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dynemb.h"

static const char *const query_cmds[] = { "status", "tables", "stats", "health", "evict",
					  "log-level", "top" };

bool ctl_is_query(const char *cmd)
{
	for (size_t i = 0; i < sizeof query_cmds / sizeof query_cmds[0]; i++)
		if (!strcmp(cmd, query_cmds[i]))
			return true;
	return false;
}

/* ---- output helpers ------------------------------------------------------------------- */

/* Bytes in a valid UTF-8 sequence at p (1..4), or 0. */
static int utf8_len(const unsigned char *p)
{
	int n = p[0] >= 0xf0 && p[0] <= 0xf4 ? 4 : p[0] >= 0xe0 ? 3 : p[0] >= 0xc2 ? 2 : 0;
	if (p[0] >= 0xf5)
		n = 0;
	for (int i = 1; i < n; i++)
		if ((p[i] & 0xc0) != 0x80)
			return 0;
	if ((n == 3 && p[0] == 0xe0 && p[1] < 0xa0) || (n == 3 && p[0] == 0xed && p[1] >= 0xa0) ||
	    (n == 4 && p[0] == 0xf0 && p[1] < 0x90) || (n == 4 && p[0] == 0xf4 && p[1] >= 0x90))
		return 0; /* overlong, surrogate, beyond U+10FFFF */
	return n;
}

void ctl_json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
		if (*p == '"' || *p == '\\') {
			fprintf(f, "\\%c", *p);
		} else if (*p == '\n') {
			fputs("\\n", f);
		} else if (*p == '\t') {
			fputs("\\t", f);
		} else if (*p < 0x20 || *p == 0x7f) {
			fprintf(f, "\\u%04x", *p);
		} else if (*p >= 0x80) { /* valid UTF-8 as it is; a stray byte as U+FFFD */
			int n = utf8_len(p);
			if (n) {
				fwrite(p, 1, (size_t)n, f);
				p += n - 1;
			} else {
				fputs("\\ufffd", f);
			}
		} else {
			fputc(*p, f);
		}
	}
	fputc('"', f);
}

void ctl_json_error(const struct ctl_opts *o, const char *cmd, int err, const char *msg)
{
	if (!o->json)
		return;
	printf("{\"ok\": false, \"command\": ");
	ctl_json_str(stdout, cmd);
	printf(", \"errno\": %d, \"error\": ", err);
	ctl_json_str(stdout, msg);
	printf("}\n");
}

/* 1536 -> "1.5 KiB" */
static const char *bytes_h(char *buf, size_t cap, uint64_t v)
{
	static const char *const u[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
	double d = (double)v;
	unsigned i = 0;
	while (d >= 1024 && i + 1 < sizeof u / sizeof u[0]) {
		d /= 1024;
		i++;
	}
	if (i == 0)
		snprintf(buf, cap, "%" PRIu64 " B", v);
	else
		snprintf(buf, cap, "%.1f %s", d, u[i]);
	return buf;
}

static const char *uptime_h(char *buf, size_t cap, uint64_t ms)
{
	uint64_t s = ms / 1000;
	if (s >= 86400)
		snprintf(buf, cap, "%" PRIu64 "d%02" PRIu64 "h%02" PRIu64 "m", s / 86400,
			 s / 3600 % 24, s / 60 % 60);
	else if (s >= 3600)
		snprintf(buf, cap, "%" PRIu64 "h%02" PRIu64 "m%02" PRIu64 "s", s / 3600, s / 60 % 60,
			 s % 60);
	else if (s >= 60)
		snprintf(buf, cap, "%" PRIu64 "m%02" PRIu64 "s", s / 60, s % 60);
	else
		snprintf(buf, cap, "%" PRIu64 ".%01" PRIu64 "s", s, ms % 1000 / 100);
	return buf;
}

static const char *pages_name(uint32_t p)
{
	switch (p) {
	case DYNEMB_PAGES_AUTO: return "auto";
	case DYNEMB_PAGES_HUGETLB: return "huge";
	case DYNEMB_PAGES_THP: return "thp";
	case DYNEMB_PAGES_SMALL: return "4k";
	default: return "?";
	}
}

static const char *evict_name(uint32_t p)
{
	static const char *const n[] = { "none", "lru", "lfu", "ttl", "l2" };
	return p < sizeof n / sizeof n[0] ? n[p] : "?";
}

static const char *durable_name(uint32_t m)
{
	static const char *const n[] = { "none", "async", "sync" };
	return m < sizeof n / sizeof n[0] ? n[m] : "?";
}

static const char *wal_name(uint32_t s)
{
	static const char *const n[] = { "none", "ok", "failed" };
	return s < sizeof n / sizeof n[0] ? n[s] : "?";
}

/* "huge,4k" for a pages_got mask; "-" for none */
static const char *pages_got_h(char *buf, size_t cap, uint32_t mask)
{
	buf[0] = 0;
	size_t at = 0;
	for (uint32_t k = 0; k < 4; k++)
		if (mask & (1u << k))
			at += (size_t)snprintf(buf + at, cap - at, "%s%s", at ? "," : "", pages_name(k));
	if (!at)
		snprintf(buf, cap, "-");
	return buf;
}

static int query_fail(const struct ctl_opts *o, const char *cmd, const char *table, int err)
{
	const char *why = dynemb_strerror(err);
	fprintf(stderr, "dynembctl: %s%s%s: %s\n", cmd, table ? " " : "", table ? table : "", why);
	ctl_json_error(o, cmd, err, why);
	return EXIT_FAIL;
}

/* ---- status ------------------------------------------------------------------------- */

static void status_json(const struct dynemb_status *st)
{
	char got[32];
	printf("{\"ok\": true, \"command\": \"status\", \"version\": ");
	ctl_json_str(stdout, st->version);
	printf(", \"pid\": %u, \"uptime_ms\": %" PRIu64 ", \"workers\": %u, \"clients\": %u, "
	       "\"tables\": %u, \"pages_config\": \"%s\", \"pages\": \"%s\", \"numa_node\": %d, "
	       "\"peers\": %u, \"wal\": {\"state\": \"%s\", \"errno\": %d, \"error\": ",
	       st->pid, st->uptime_ms, st->workers, st->clients, st->tables,
	       pages_name(st->pages_config), pages_got_h(got, sizeof got, st->pages_got),
	       st->numa_node, st->peers, wal_name(st->wal_state), st->wal_err);
	ctl_json_str(stdout, st->wal_error);
	printf(", \"last_lsn\": %" PRIu64 ", \"durable_lsn\": %" PRIu64 "}}\n", st->wal_last_lsn,
	       st->wal_durable_lsn);
}

static void status_text(const struct dynemb_status *st)
{
	char b[64], got[32];
	printf("dynembd %s (pid %u), up %s\n", st->version, st->pid,
	       uptime_h(b, sizeof b, st->uptime_ms));
	printf("%-10s %u\n", "workers", st->workers);
	printf("%-10s %u\n", "clients", st->clients);
	printf("%-10s %u\n", "tables", st->tables);
	printf("%-10s %s (configured %s)\n", "pages", pages_got_h(got, sizeof got, st->pages_got),
	       pages_name(st->pages_config));
	if (st->numa_node >= 0)
		printf("%-10s node %d\n", "numa", st->numa_node);
	else
		printf("%-10s not bound\n", "numa");
	if (st->wal_state == DYNEMB_WAL_NONE)
		printf("%-10s none (no data directory)\n", "wal");
	else if (st->wal_state == DYNEMB_WAL_OK)
		printf("%-10s ok, durable lsn %" PRIu64 " of %" PRIu64 "\n", "wal",
		       st->wal_durable_lsn, st->wal_last_lsn);
	else
		printf("%-10s FAILED (%s): %s; durable lsn %" PRIu64 " of %" PRIu64 "\n", "wal",
		       strerror(-st->wal_err), st->wal_error[0] ? st->wal_error : "no reason given",
		       st->wal_durable_lsn, st->wal_last_lsn);
	if (st->peers)
		printf("%-10s %u\n", "peers", st->peers);
	else
		printf("%-10s none configured\n", "peers");
}

/* ---- tables ----------------------------------------------------------------------------- */

/* Every table this caller may open: *out (malloc'd, the caller frees), *n. */
static int all_tables(dynemb_client *c, struct dynemb_table_info **out, size_t *n)
{
	size_t cap = 64, have = 0, total = 0;
	struct dynemb_table_info *v = malloc(cap * sizeof *v);
	if (!v)
		return -ENOMEM;
	for (;;) {
		size_t got = 0;
		int err = dynemb_list_tables(c, have, v + have, cap - have, &got, &total);
		if (err) {
			free(v);
			return err;
		}
		have += got;
		if (!got || have >= total)
			break;
		if (have == cap) {
			cap *= 2;
			struct dynemb_table_info *nv = realloc(v, cap * sizeof *v);
			if (!nv) {
				free(v);
				return -ENOMEM;
			}
			v = nv;
		}
	}
	*out = v;
	*n = have;
	return 0;
}

static void tables_json(const struct dynemb_table_info *t, size_t n)
{
	printf("{\"ok\": true, \"command\": \"tables\", \"count\": %zu, \"tables\": [", n);
	for (size_t i = 0; i < n; i++) {
		printf("%s{\"name\": ", i ? ", " : "");
		ctl_json_str(stdout, t[i].name);
		printf(", \"key_type\": \"%s\", \"dim\": %u, \"keys\": %" PRIu64 ", \"resident_bytes\": %"
		       PRIu64 ", \"budget_bytes\": %" PRIu64 ", \"read_only\": %s, \"pages\": \"%s\", "
		       "\"owner_uid\": %u, \"eviction\": \"%s\", \"durability\": \"%s\", "
		       "\"open_connections\": %u}",
		       t[i].key_kind == DYNEMB_STRING_KEYS ? "string" : "int64", t[i].dim, t[i].keys,
		       t[i].resident_bytes, t[i].budget_bytes, t[i].read_only ? "true" : "false",
		       pages_name(t[i].pages), t[i].owner_uid, evict_name(t[i].eviction),
		       durable_name(t[i].durability), t[i].open_connections);
	}
	printf("]}\n");
}

enum { T_NAME, T_KEY, T_DIM, T_KEYS, T_RES, T_BUDGET, T_EVICT, T_DUR, T_PAGES, T_RO, T_OPEN,
       T_NCOL };

static void tables_text(const struct dynemb_table_info *t, size_t n)
{
	static const char *const head[T_NCOL] = { "NAME", "KEY", "DIM", "KEYS", "RESIDENT",
						  "BUDGET", "EVICT", "DURABLE", "PAGES", "RO",
						  "OPEN" };
	/* right-aligned: the numbers */
	static const bool right[T_NCOL] = { false, false, true, true, true, true, false, false,
					    false, false, true };
	if (!n) {
		printf("no tables (that this uid may open)\n");
		return;
	}
	char (*cell)[T_NCOL][72] = calloc(n, sizeof *cell);
	if (!cell)
		return;
	int w[T_NCOL];
	for (int k = 0; k < T_NCOL; k++)
		w[k] = (int)strlen(head[k]);
	for (size_t i = 0; i < n; i++) {
		char b[32];
		snprintf(cell[i][T_NAME], 72, "%s", t[i].name);
		snprintf(cell[i][T_KEY], 72, "%s", t[i].key_kind == DYNEMB_STRING_KEYS ? "string" : "int64");
		snprintf(cell[i][T_DIM], 72, "%u", t[i].dim);
		snprintf(cell[i][T_KEYS], 72, "%" PRIu64, t[i].keys);
		snprintf(cell[i][T_RES], 72, "%s", bytes_h(b, sizeof b, t[i].resident_bytes));
		snprintf(cell[i][T_BUDGET], 72, "%s",
			 t[i].budget_bytes ? bytes_h(b, sizeof b, t[i].budget_bytes) : "-");
		snprintf(cell[i][T_EVICT], 72, "%s", evict_name(t[i].eviction));
		snprintf(cell[i][T_DUR], 72, "%s", durable_name(t[i].durability));
		snprintf(cell[i][T_PAGES], 72, "%s", pages_name(t[i].pages));
		snprintf(cell[i][T_RO], 72, "%s", t[i].read_only ? "yes" : "no");
		snprintf(cell[i][T_OPEN], 72, "%u", t[i].open_connections);
		for (int k = 0; k < T_NCOL; k++) {
			int l = (int)strlen(cell[i][k]);
			w[k] = l > w[k] ? l : w[k];
		}
	}
	for (size_t i = 0; i <= n; i++) {
		for (int k = 0; k < T_NCOL; k++) {
			const char *s = i ? cell[i - 1][k] : head[k];
			if (k == T_NCOL - 1)
				printf(right[k] ? "%*s\n" : "%-*s\n", w[k], s);
			else
				printf(right[k] ? "%*s  " : "%-*s  ", w[k], s);
		}
	}
	free(cell);
}

/* ---- stats ------------------------------------------------------------------------------ */

#define STAT_FIELDS(X)                                                                      \
	X(keys, 0) X(rows_allocated, 0) X(rows_free, 0) X(row_bytes, 1) X(index_bytes, 1)     \
	X(arena_bytes, 1) X(segments, 0) X(splits, 0) X(dir_doublings, 0)                       \
	X(arena_segments, 0) X(admitted, 0) X(filtered, 0) X(grads_dropped, 0) X(evicted, 0)   \
	X(evicted_to_tier, 0) X(restored_from_tier, 0) X(returned_fresh, 0)                     \
	X(resident_bytes, 1) X(budget_bytes, 1) X(wal_lsn, 0) X(durable_lsn, 0)                 \
	X(snapshots, 0) X(snapshot_lsn, 0) X(index_refusals, 0)

static void stats_json(const char *name, const struct dynemb_stats *s)
{
	printf("{\"ok\": true, \"command\": \"stats\", \"table\": ");
	ctl_json_str(stdout, name);
	printf(", \"dim\": %u, \"load_factor\": %.6g, \"read_only\": %s", s->dim, s->load_factor,
	       s->read_only ? "true" : "false");
#define X(f, b) printf(", \"" #f "\": %" PRIu64, s->f);
	STAT_FIELDS(X)
#undef X
	printf("}\n");
}

static void stats_text(const char *name, const struct dynemb_stats *s)
{
	char b[32];
	printf("table %s\n", name);
	printf("  %-20s %u\n", "dim", s->dim);
	printf("  %-20s %.3f\n", "load_factor", s->load_factor);
	printf("  %-20s %s\n", "read_only", s->read_only ? "yes (its WAL failed)" : "no");
#define X(f, b_) \
	if (b_) \
		printf("  %-20s %s (%" PRIu64 ")\n", #f, bytes_h(b, sizeof b, s->f), s->f); \
	else \
		printf("  %-20s %" PRIu64 "\n", #f, s->f);
	STAT_FIELDS(X)
#undef X
}

/* ---- health ----------------------------------------------------------------------------- */

static int health_out(const struct ctl_opts *o, int rc, const char *state, const char *why)
{
	if (o->json) {
		printf("{\"ok\": %s, \"command\": \"health\", \"state\": \"%s\", \"exit\": %d, "
		       "\"reason\": ", rc == 0 ? "true" : "false", state, rc);
		ctl_json_str(stdout, why);
		printf("}\n");
	} else if (!o->quiet) {
		printf("%s%s%s\n", state, why[0] ? ": " : "", why);
	}
	return rc;
}

static int health(dynemb_client *c, const struct ctl_opts *o)
{
	char why[1024] = "";
	struct dynemb_status st;
	int err = dynemb_status(c, &st);
	if (err) {
		snprintf(why, sizeof why, "STATUS failed: %s", dynemb_strerror(err));
		return health_out(o, EXIT_DOWN, "down", why);
	}
	size_t at = 0;
	if (st.wal_state == DYNEMB_WAL_FAILED)
		at += (size_t)snprintf(why, sizeof why, "the WAL failed (%s): %s", strerror(-st.wal_err),
				       st.wal_error[0] ? st.wal_error : "no reason given");
	struct dynemb_table_info *t = NULL;
	size_t n = 0;
	err = all_tables(c, &t, &n);
	if (err) {
		snprintf(why, sizeof why, "TABLES failed: %s", dynemb_strerror(err));
		return health_out(o, EXIT_DOWN, "down", why);
	}
	unsigned ro = 0;
	for (size_t i = 0; i < n; i++) {
		if (!t[i].read_only || at >= sizeof why)
			continue;
		if (!ro++)
			at += (size_t)snprintf(why + at, sizeof why - at, "%sread-only table%s: '%s'",
					       at ? "; " : "", "(s)", t[i].name);
		else
			at += (size_t)snprintf(why + at, sizeof why - at, ", '%s'", t[i].name);
	}
	free(t);
	if (at)
		return health_out(o, EXIT_FAIL, "degraded", why);
	return health_out(o, 0, "ok", "");
}

/* ---- the commands ----------------------------------------------------------------------- */

int ctl_query(const char *cmd, int npos, const char *const *pos, const struct ctl_opts *o)
{
	bool named = !strcmp(cmd, "stats") || !strcmp(cmd, "evict");
	int want = named || !strcmp(cmd, "log-level") ? 1 : 0;
	if (npos != want) {
		fprintf(stderr, "dynembctl: %s takes %s\nTry 'dynembctl --help'.\n", cmd,
			named ? "TABLE" : want ? "LEVEL (error, warn, info, debug)" : "no arguments");
		return EXIT_USAGE;
	}
	if (named && (!pos[0][0] || strlen(pos[0]) > 63)) {
		fprintf(stderr, "dynembctl: a table name has 1..63 bytes: '%s'\nTry 'dynembctl "
			"--help'.\n", pos[0]);
		return EXIT_USAGE;
	}
	bool is_health = !strcmp(cmd, "health");
	dynemb_client *c = NULL;
	struct dynemb_connect_opts co = { .name = "dynembctl", .timeout_ms = o->timeout_ms };
	int err = dynemb_connect(o->socket_path, &co, &c);
	if (err) {
		if (!is_health)
			return ctl_connect_fail(o, cmd, err);
		char why[512];
		snprintf(why, sizeof why, "cannot reach dynembd at %s: %s",
			 o->socket_path ? o->socket_path : "the default socket", dynemb_strerror(err));
		return health_out(o, EXIT_DOWN, "down", why);
	}
	int rc = 0;
	if (is_health) {
		rc = health(c, o);
	} else if (!strcmp(cmd, "top")) {
		rc = ctl_top(c, o);
	} else if (!strcmp(cmd, "status")) {
		struct dynemb_status st;
		err = dynemb_status(c, &st);
		if (err)
			rc = query_fail(o, cmd, NULL, err);
		else if (o->json)
			status_json(&st);
		else
			status_text(&st);
	} else if (!strcmp(cmd, "tables")) {
		struct dynemb_table_info *t = NULL;
		size_t n = 0;
		err = all_tables(c, &t, &n);
		if (err)
			rc = query_fail(o, cmd, NULL, err);
		else if (o->json)
			tables_json(t, n);
		else
			tables_text(t, n);
		free(t);
	} else if (!strcmp(cmd, "stats")) {
		struct dynemb_stats st;
		err = dynemb_stats_by_name(c, pos[0], &st);
		if (err)
			rc = query_fail(o, cmd, pos[0], err);
		else if (o->json)
			stats_json(pos[0], &st);
		else
			stats_text(pos[0], &st);
	} else if (!strcmp(cmd, "evict")) {
		uint64_t n = 0;
		err = dynemb_evict_table(c, pos[0], &n);
		if (err) {
			rc = query_fail(o, cmd, pos[0], err);
		} else if (o->json) {
			printf("{\"ok\": true, \"command\": \"evict\", \"table\": ");
			ctl_json_str(stdout, pos[0]);
			printf(", \"evicted\": %" PRIu64 "}\n", n);
		} else {
			printf("evicted %s: %" PRIu64 " row%s\n", pos[0], n, n == 1 ? "" : "s");
		}
	} else { /* log-level */
		err = dynemb_set_log_level(c, pos[0]);
		if (err) {
			rc = query_fail(o, cmd, pos[0], err);
		} else if (o->json) {
			printf("{\"ok\": true, \"command\": \"log-level\", \"level\": ");
			ctl_json_str(stdout, pos[0]);
			printf("}\n");
		} else {
			printf("log level: %s\n", pos[0]);
		}
	}
	dynemb_close(c);
	return rc;
}
