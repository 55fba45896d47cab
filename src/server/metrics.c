/*
 * metrics.c — dynembd's Prometheus endpoint: GET /metrics in the text exposition format
 * 0.0.4, over HTTP from libmicrohttpd.
 *
 * Owns: the listening socket ([metrics] listen, config.c; bound before the daemon
 * detaches, so a bad or busy address stops the start with a line naming it), the
 * libmicrohttpd daemon (MHD_USE_INTERNAL_POLLING_THREAD: one thread of its own that
 * polls every connection; no worker ever serves HTTP) and nothing else: every value is
 * read from the layers that own it at each scrape.
 *
 * HTTP: parsing is libmicrohttpd's alone (request line, headers, bodies): this file only
 * compares the path and the method it hands over, so there is no parser of ours to fuzz.
 * GET (and HEAD) /metrics: 200, Content-Type text/plain; version=0.0.4; charset=utf-8.
 * Any other path: 404; another method on /metrics: 405 with Allow. At most MAX_CONN
 * connections at once and an idle one is closed after CONN_TIMEOUT_S, so a slow or stuck
 * scraper cannot hold the endpoint; nothing is logged per request.
 *
 * A scrape: under the registry's lock (tables.h: the list, and each table's layer state,
 * cannot change or go meanwhile; a DROP waits for it, no worker ever takes it) each
 * table's STATS (srv_table_wire_stats: relaxed atomics and the layers' own short locks)
 * and its per-op counters (tables.h, added to by the workers) are copied out; the text
 * is formatted after the lock is let go. Every family is written whole, its # HELP and
 * # TYPE first. Labels: table (escaped: \\, \", \n) and op, never a key.
 *
 * Series: build info, start time and uptime, clients, workers, tables; per table and op
 * requests, errors and a latency histogram (buckets 1 us * 2^i up to ~1.05 s; only of
 * the ops the table has seen, to keep a scrape of many tables small); per table
 * rows, arena, budget and resident bytes, the page kind the arena got, admissions and
 * filtered keys, evictions (to the tier) and tier restores, index refusals, snapshots of
 * this run and the age of the last one; the WAL's last and durable LSN, bytes written,
 * flushes, fdatasyncs and a flush (write + fdatasync) latency histogram; the data plane's
 * empty wakes and back-offs. Not here (they do not exist yet): peers and serving.
 */
#include "metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "de_uring.h" /* struct de_wal_stats */
#include "log.h"
#include "persist.h"
#include "tables.h"
#include "util.h"
#include "worker.h"

#define MAX_CONN 8          /* scrapers at once */
#define CONN_TIMEOUT_S 10   /* an idle connection is closed after this */
#define CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

struct srv_metrics {
	int fd;                 /* the listening socket until libmicrohttpd owns it */
	char addr[80];          /* for messages */
	struct MHD_Daemon *d;
	struct srv_server *s;
	uint64_t start_mono_ns;
	double start_unix_s;
};

/* ---- the text ------------------------------------------------------------------------- */

struct buf {
	char *p;
	size_t len, cap;
	bool oom;
};

__attribute__((format(printf, 2, 3))) static void put(struct buf *b, const char *fmt, ...)
{
	for (;;) {
		if (b->oom)
			return;
		va_list ap;
		va_start(ap, fmt);
		size_t room = b->cap - b->len;
		int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? room : 0, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->oom = true;
			return;
		}
		if ((size_t)n < room) {
			b->len += (size_t)n;
			return;
		}
		size_t cap = b->cap ? b->cap : 16384;
		while (cap - b->len <= (size_t)n)
			cap *= 2;
		char *q = realloc(b->p, cap);
		if (!q) {
			b->oom = true;
			return;
		}
		b->p = q;
		b->cap = cap;
	}
}

/* A label value: \ " and newline escaped, as the format asks. */
static void put_escaped(struct buf *b, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\')
			put(b, "\\\\");
		else if (*s == '"')
			put(b, "\\\"");
		else if (*s == '\n')
			put(b, "\\n");
		else
			put(b, "%c", *s);
	}
}

static void family(struct buf *b, const char *name, const char *type, const char *help)
{
	put(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Seconds of ns, exactly, without trailing zeros ("0.000001", "1.048576", "3"). */
static void put_seconds(struct buf *b, uint64_t ns)
{
	char frac[16];
	snprintf(frac, sizeof frac, "%09" PRIu64, ns % UINT64_C(1000000000));
	size_t n = strlen(frac);
	while (n && frac[n - 1] == '0')
		frac[--n] = 0;
	put(b, "%" PRIu64 "%s%s", ns / UINT64_C(1000000000), n ? "." : "", frac);
}

static const char *const OP_NAMES[SRV_OP_SLOTS] = {
	[DE_OP_LOOKUP] = "lookup", [DE_OP_UPDATE] = "update", [DE_OP_ERASE] = "erase",
	[DE_OP_STATS] = "stats", [DE_OP_APPLY_GRADS] = "apply_grads",
	[DE_OP_SAMPLE] = "sample", [DE_OP_TOPK] = "topk", [DE_OP_KEY_STRINGS] = "key_strings",
};
_Static_assert(DE_OP_MAX == DE_OP_KEY_STRINGS, "every op has a name above");

/* What a scrape copies of one table under the registry's lock. */
struct snap {
	char name[DE_NAME_MAX];
	bool has_stats;               /* srv_table_wire_stats succeeded */
	struct de_wire_stats ws;
	struct srv_op_counters ops[SRV_OP_SLOTS];
	enum de_pages pages;
	uint64_t snapshot_ns;         /* monotonic; 0: no snapshot this run */
};

static void copy_table(struct srv_server *s, struct srv_table *t, struct snap *x)
{
	memcpy(x->name, t->name, sizeof x->name);
	x->name[sizeof x->name - 1] = 0;
	x->has_stats = srv_table_wire_stats(s, t, &x->ws) == 0;
	for (unsigned op = 0; op < SRV_OP_SLOTS; op++)
		srv_op_counters_read(t, op, &x->ops[op]);
	x->pages = de_arena_pages(t->arena);
	x->snapshot_ns = srv_persist_snapshot_mono_ns(t);
}

/* The pages label: the [pages] mode words, stable whatever de_pages_name prints. */
static const char *pages_label(enum de_pages p)
{
	switch (p) {
	case DE_PAGES_HUGETLB: return "hugetlb";
	case DE_PAGES_THP: return "thp";
	case DE_PAGES_SMALL: return "small";
	default: return "unknown";
	}
}

static void table_label(struct buf *b, const struct snap *x)
{
	put(b, "table=\"");
	put_escaped(b, x->name);
	put(b, "\"");
}

/* One value of the wire stats per table with stats: a gauge or counter family. */
static void per_table(struct buf *b, const struct snap *x, unsigned n, const char *name,
		      const char *type, const char *help, size_t off)
{
	family(b, name, type, help);
	for (unsigned i = 0; i < n; i++) {
		if (!x[i].has_stats)
			continue;
		uint64_t v;
		memcpy(&v, (const char *)&x[i].ws + off, sizeof v);
		put(b, "%s{", name);
		table_label(b, &x[i]);
		put(b, "} %" PRIu64 "\n", v);
	}
}

/* A histogram's series for one label set (labels: `k="v",...` or ""). */
static void histogram(struct buf *b, const char *name, const char *labels, const uint64_t *le,
		      unsigned nb, uint64_t sum_ns)
{
	uint64_t cum = 0;
	const char *sep = *labels ? "," : "";
	for (unsigned i = 0; i < nb; i++) {
		cum += le[i];
		put(b, "%s_bucket{%s%sle=\"", name, labels, sep);
		put_seconds(b, 1000ull << i);
		put(b, "\"} %" PRIu64 "\n", cum);
	}
	cum += le[nb];
	put(b, "%s_bucket{%s%sle=\"+Inf\"} %" PRIu64 "\n", name, labels, sep, cum);
	put(b, "%s_sum%s%s%s ", name, *labels ? "{" : "", labels, *labels ? "}" : "");
	put_seconds(b, sum_ns);
	put(b, "\n%s_count%s%s%s %" PRIu64 "\n", name, *labels ? "{" : "", labels,
	    *labels ? "}" : "", cum);
}

static uint64_t op_requests(const struct srv_op_counters *k)
{
	uint64_t n = 0;
	for (unsigned i = 0; i <= SRV_LAT_BUCKETS; i++)
		n += k->le[i];
	return n;
}

static uint64_t op_errors(const struct srv_op_counters *k)
{
	return k->errors;
}

static uint64_t op_keys(const struct srv_op_counters *k)
{
	return k->keys;
}

/* One counter family with a series per table and op. */
static void put_op_counter(struct buf *b, const char *name, const char *help,
			   const struct snap *x, unsigned n,
			   uint64_t (*get)(const struct srv_op_counters *))
{
	family(b, name, "counter", help);
	for (unsigned i = 0; i < n; i++)
		for (unsigned op = 1; op < SRV_OP_SLOTS; op++) {
			put(b, "%s{", name);
			table_label(b, &x[i]);
			put(b, ",op=\"%s\"} %" PRIu64 "\n", OP_NAMES[op], get(&x[i].ops[op]));
		}
}

static void put_ops(struct buf *b, const struct snap *x, unsigned n)
{
	put_op_counter(b, "dynemb_requests_total",
		       "Requests (descriptors) completed on a table, by op.", x, n, op_requests);
	put_op_counter(b, "dynemb_request_errors_total",
		       "Requests completed with an error (a negative res), by table and op.", x,
		       n, op_errors);
	put_op_counter(b, "dynemb_request_keys_total",
		       "Keys (or queries) the completed requests carried, by table and op.", x,
		       n, op_keys);
	/* histograms only of the ops a table has seen: 24 series each, and most tables see
	 * two or three of the eight ops (the counters above are there from the start, so
	 * that rate() and increase() see their first requests) */
	family(b, "dynemb_request_duration_seconds", "histogram",
	       "Time from a worker starting a request to its completion being ready.");
	for (unsigned i = 0; i < n; i++)
		for (unsigned op = 1; op < SRV_OP_SLOTS; op++) {
			if (!op_requests(&x[i].ops[op]))
				continue;
			struct buf lb = { 0 };
			table_label(&lb, &x[i]);
			put(&lb, ",op=\"%s\"", OP_NAMES[op]);
			if (lb.oom) {
				b->oom = true;
			} else {
				histogram(b, "dynemb_request_duration_seconds", lb.p, x[i].ops[op].le,
					  SRV_LAT_BUCKETS, x[i].ops[op].sum_ns);
			}
			free(lb.p);
		}
}

static void put_tables(struct buf *b, const struct snap *x, unsigned n, uint64_t now)
{
#define OFF(f) offsetof(struct de_wire_stats, f)
	per_table(b, x, n, "dynemb_table_rows", "gauge", "Keys (rows) in the table.", OFF(keys));
	per_table(b, x, n, "dynemb_table_arena_bytes", "gauge",
		  "Bytes of the arena segments the table mapped.", OFF(arena_bytes));
	per_table(b, x, n, "dynemb_table_budget_bytes", "gauge",
		  "The table's eviction budget in bytes (0: no eviction).", OFF(budget_bytes));
	per_table(b, x, n, "dynemb_table_resident_bytes", "gauge",
		  "Bytes the eviction accounts as resident (0: no eviction).", OFF(resident_bytes));
	per_table(b, x, n, "dynemb_table_admitted_total", "counter",
		  "Keys the admission filter let in (0: the table admits every key).", OFF(admitted));
	per_table(b, x, n, "dynemb_table_admission_filtered_total", "counter",
		  "Keys the admission filter kept out.", OFF(filtered));
	per_table(b, x, n, "dynemb_table_evictions_total", "counter",
		  "Rows evicted from memory.", OFF(evicted));
	per_table(b, x, n, "dynemb_table_evictions_to_tier_total", "counter",
		  "Rows evicted to the disk tier.", OFF(evicted_to_tier));
	per_table(b, x, n, "dynemb_table_tier_restores_total", "counter",
		  "Rows restored from the disk tier.", OFF(restored_from_tier));
	per_table(b, x, n, "dynemb_table_index_refusals_total", "counter",
		  "Inserts the hash index refused (keys whose seeded hashes collide).",
		  OFF(index_refusals));
	per_table(b, x, n, "dynemb_table_snapshots_total", "counter",
		  "Snapshots (checkpoints) of the table in this run of the daemon.", OFF(snapshots));
#undef OFF
	family(b, "dynemb_table_pages_info", "gauge",
	       "The page kind the table's arena got (hugetlb, thp or small).");
	for (unsigned i = 0; i < n; i++) {
		put(b, "dynemb_table_pages_info{");
		table_label(b, &x[i]);
		put(b, ",pages=\"%s\"} 1\n", pages_label(x[i].pages));
	}
	family(b, "dynemb_table_snapshot_age_seconds", "gauge",
	       "Seconds since the table's last snapshot of this run (absent: none yet).");
	for (unsigned i = 0; i < n; i++) {
		if (!x[i].snapshot_ns)
			continue;
		put(b, "dynemb_table_snapshot_age_seconds{");
		table_label(b, &x[i]);
		put(b, "} ");
		put_seconds(b, now > x[i].snapshot_ns ? now - x[i].snapshot_ns : 0);
		put(b, "\n");
	}
}

static void put_wal(struct buf *b, struct srv_server *s)
{
	struct de_wal_stats w;
	if (srv_persist_wal_stats(s->persist, &w) != 0)
		return; /* no data_dir: no WAL families */
	family(b, "dynemb_wal_last_lsn", "gauge", "LSN of the last record appended to the WAL.");
	put(b, "dynemb_wal_last_lsn %" PRIu64 "\n", w.next_lsn ? w.next_lsn - 1 : 0);
	family(b, "dynemb_wal_durable_lsn", "gauge", "Every WAL record up to this LSN is on disk.");
	put(b, "dynemb_wal_durable_lsn %" PRIu64 "\n", w.durable_lsn);
	family(b, "dynemb_wal_written_bytes_total", "counter", "Bytes written to the WAL.");
	put(b, "dynemb_wal_written_bytes_total %" PRIu64 "\n", w.bytes_written);
	family(b, "dynemb_wal_flushes_total", "counter",
	       "WAL flushes that completed (write and fdatasync).");
	put(b, "dynemb_wal_flushes_total %" PRIu64 "\n", w.flushes);
	family(b, "dynemb_wal_fsyncs_total", "counter", "fdatasyncs submitted on WAL segments.");
	put(b, "dynemb_wal_fsyncs_total %" PRIu64 "\n", w.fsyncs);
	family(b, "dynemb_wal_flush_duration_seconds", "histogram",
	       "Time of a WAL flush, the buffer taken to durable (write and fdatasync).");
	histogram(b, "dynemb_wal_flush_duration_seconds", "", w.flush_le, DE_WAL_FLUSH_BUCKETS,
		  w.flush_ns_sum);
}

int srv_metrics_render(struct srv_server *s, uint64_t start_mono_ns, double start_unix_s,
		       char **out, size_t *len)
{
	struct buf b = { 0 };
	struct snap *x = NULL;
	unsigned n = 0;
	srv_registry_lock(&s->reg);
	if (s->reg.count)
		x = calloc(s->reg.count, sizeof *x);
	for (struct srv_table *t = s->reg.head; t && x && n < s->reg.count; t = t->next)
		copy_table(s, t, &x[n++]);
	bool lost = s->reg.count && !x;
	srv_registry_unlock(&s->reg);
	if (lost)
		return -ENOMEM;
	uint64_t now = srv_mono_ns();

	family(&b, "dynemb_build_info", "gauge", "dynembd's version and protocol; always 1.");
	put(&b, "dynemb_build_info{version=\"%s\",protocol=\"%u\"} 1\n", DYNEMBD_VERSION,
	    (unsigned)DE_PROTO_VERSION);
	family(&b, "dynemb_start_time_seconds", "gauge", "When dynembd started (Unix time).");
	put(&b, "dynemb_start_time_seconds %.3f\n", start_unix_s);
	family(&b, "dynemb_uptime_seconds", "gauge", "Seconds since dynembd started.");
	put(&b, "dynemb_uptime_seconds ");
	put_seconds(&b, now - start_mono_ns);
	put(&b, "\n");
	unsigned clients = 0;
	uint64_t wakes = 0, backoffs = 0, slices = 0;
	for (unsigned i = 0; i < s->nworkers; i++) {
		clients += __atomic_load_n(&s->workers[i].nclients, __ATOMIC_RELAXED);
		wakes += __atomic_load_n(&s->workers[i].n_empty_wakes, __ATOMIC_RELAXED);
		backoffs += __atomic_load_n(&s->workers[i].n_backoffs, __ATOMIC_RELAXED);
		slices += __atomic_load_n(&s->workers[i].n_chunks, __ATOMIC_RELAXED);
	}
	family(&b, "dynemb_clients_connected", "gauge",
	       "Client connections that said HELLO and have a worker.");
	put(&b, "dynemb_clients_connected %u\n", clients);
	family(&b, "dynemb_workers", "gauge", "Data-plane worker threads.");
	put(&b, "dynemb_workers %u\n", s->nworkers);
	family(&b, "dynemb_tables", "gauge", "Tables in the daemon.");
	put(&b, "dynemb_tables %u\n", n);
	family(&b, "dynemb_dataplane_empty_wakes_total", "counter",
	       "Wakes of a client channel that brought no work.");
	put(&b, "dynemb_dataplane_empty_wakes_total %" PRIu64 "\n", wakes);
	family(&b, "dynemb_dataplane_wake_backoffs_total", "counter",
	       "Times a channel's wakes were ignored for a while (a wake storm).");
	put(&b, "dynemb_dataplane_wake_backoffs_total %" PRIu64 "\n", backoffs);
	family(&b, "dynemb_dataplane_slices_total", "counter",
	       "Slices of int64 LOOKUPs and UPDATEs too large for one pass, served pass by pass.");
	put(&b, "dynemb_dataplane_slices_total %" PRIu64 "\n", slices);
	family(&b, "dynemb_table_drops_total", "counter",
	       "Tables dropped (forced: while connections held them, their handles revoked).");
	put(&b, "dynemb_table_drops_total{forced=\"false\"} %" PRIu64 "\n",
	    __atomic_load_n(&s->n_drops, __ATOMIC_RELAXED));
	put(&b, "dynemb_table_drops_total{forced=\"true\"} %" PRIu64 "\n",
	    __atomic_load_n(&s->n_drops_forced, __ATOMIC_RELAXED));
	family(&b, "dynemb_table_drops_refused_total", "counter",
	       "DROPs refused (no right, no table, held without force, a job, a failed write).");
	put(&b, "dynemb_table_drops_refused_total %" PRIu64 "\n",
	    __atomic_load_n(&s->n_drops_refused, __ATOMIC_RELAXED));
	family(&b, "dynemb_table_handles_revoked_total", "counter",
	       "Connections' handles to a table revoked by a forced DROP.");
	put(&b, "dynemb_table_handles_revoked_total %" PRIu64 "\n",
	    __atomic_load_n(&s->n_handles_revoked, __ATOMIC_RELAXED));
	put_ops(&b, x, n);
	put_tables(&b, x, n, now);
	put_wal(&b, s);
	free(x);
	if (b.oom) {
		free(b.p);
		return -ENOMEM;
	}
	*out = b.p;
	*len = b.len;
	return 0;
}

/* ---- HTTP ----------------------------------------------------------------------------- */

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *text,
			     bool allow)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), (void *)text,
								 MHD_RESPMEM_PERSISTENT);
	if (!r)
		return MHD_NO;
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
	if (allow)
		MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
	enum MHD_Result ret = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version,
				  const char *upload_data, size_t *upload_data_size, void **req)
{
	(void)version;
	(void)upload_data;
	(void)upload_data_size;
	(void)req;
	struct srv_metrics *m = cls;
	if (strcmp(url, "/metrics"))
		return reply(conn, MHD_HTTP_NOT_FOUND, "not found: dynembd serves /metrics only\n",
			     false);
	if (strcmp(method, MHD_HTTP_METHOD_GET) && strcmp(method, MHD_HTTP_METHOD_HEAD))
		return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
			     "method not allowed: /metrics takes GET\n", true);
	char *text;
	size_t len;
	if (srv_metrics_render(m->s, m->start_mono_ns, m->start_unix_s, &text, &len))
		return reply(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory\n", false);
	struct MHD_Response *r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
	if (!r) {
		free(text);
		return MHD_NO;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, CONTENT_TYPE);
	enum MHD_Result ret = MHD_queue_response(conn, MHD_HTTP_OK, r);
	MHD_destroy_response(r);
	return ret;
}

/* libmicrohttpd's own errors (not per request): one log line each. */
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	const struct srv_metrics *m = cls;
	char line[256];
	vsnprintf(line, sizeof line, fmt, ap);
	size_t n = strlen(line);
	while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		line[--n] = 0;
	srv_log(SRV_LOG_WARN, "metrics %s: %s", m->addr, line);
}

/* ---- life ----------------------------------------------------------------------------- */

int srv_metrics_bind(const struct srv_config *cfg, struct srv_metrics **out)
{
	*out = NULL;
	if (!cfg->metrics_on)
		return 0;
	struct srv_metrics *m = calloc(1, sizeof *m);
	if (!m)
		return -ENOMEM;
	srv_config_metrics_addr(cfg, m->addr, sizeof m->addr);
	int family = cfg->metrics_addr.ss_family;
	m->fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	int err = m->fd < 0 ? -errno : 0;
	int one = 1;
	if (!err && setsockopt(m->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one))
		err = -errno;
	if (!err && family == AF_INET6 &&
	    setsockopt(m->fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one))
		err = -errno;
	const char *what = "socket";
	if (!err && bind(m->fd, (const struct sockaddr *)&cfg->metrics_addr, cfg->metrics_addrlen)) {
		err = -errno;
		what = "bind";
	}
	if (!err && listen(m->fd, 16)) {
		err = -errno;
		what = "listen";
	}
	if (err) {
		srv_log(SRV_LOG_ERROR, "[metrics] listen %s: cannot %s: %s%s", m->addr, what,
			strerror(-err), err == -EADDRINUSE ? " (another process has that port: "
			"pick another one, or stop it)" : "");
		if (m->fd >= 0)
			close(m->fd);
		free(m);
		return err;
	}
	struct timespec rt;
	clock_gettime(CLOCK_REALTIME, &rt);
	m->start_unix_s = (double)rt.tv_sec + rt.tv_nsec / 1e9;
	m->start_mono_ns = srv_mono_ns();
	*out = m;
	return 0;
}

int srv_metrics_start(struct srv_metrics *m, struct srv_server *s)
{
	if (!m)
		return 0;
	m->s = s;
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
	if (s->cfg.metrics_addr.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	m->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, m,
				MHD_OPTION_LISTEN_SOCKET, (MHD_socket)m->fd,
				MHD_OPTION_CONNECTION_LIMIT, (unsigned)MAX_CONN,
				MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)CONN_TIMEOUT_S,
				MHD_OPTION_EXTERNAL_LOGGER, mhd_log, m,
				MHD_OPTION_END);
	if (!m->d) {
		srv_log(SRV_LOG_ERROR, "[metrics] listen %s: libmicrohttpd cannot start", m->addr);
		return -EIO;
	}
	m->fd = -1; /* libmicrohttpd's now: it closes it */
	srv_log(SRV_LOG_INFO, "metrics: http://%s/metrics", m->addr);
	return 0;
}

void srv_metrics_free(struct srv_metrics *m)
{
	if (!m)
		return;
	if (m->d)
		MHD_stop_daemon(m->d);
	if (m->fd >= 0)
		close(m->fd);
	free(m);
}
