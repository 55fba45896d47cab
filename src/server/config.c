/*
 * config.c — dynembd's configuration: an embedded default config (DEFAULT_CONFIG below,
 * parsed first, so the daemon runs with no file at all), then one INI file (--config),
 * then command-line flags, each later source overriding the earlier. Every value goes
 * through one setter (set_key), so a key means the same in the file and as a flag.
 *
 * Sections: [server], [pages], [memory], [quota], [learn], [persistence], [metrics],
 * [peers] (set_peers_key, peers_finish: the other hosts' dynembd)
 * (set_metrics_key: the /metrics listen address), [namespace NAME] (config_ns.c).
 *
 * Errors name where the value came from ("FILE:LINE: ..." or "--flag: ...") and make
 * the daemon exit with status 2. Owns nothing after srv_config_load returns.
 */
#include "config.h"
#include "log.h" /* the level and format names */
#include "de_learn.h" /* DE_TOPK_MAX_THREADS */
#include "proto.h"
#include "validate.h" /* SRV_MAX_BATCH_LIMIT */
#include "de_uring.h" /* DE_WAL_MIN_SEGMENT, DE_WAL_MAX_SEGMENT */

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <ini.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdio.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* The built-in configuration: what runs when there is no file. */
static const char DEFAULT_CONFIG[] =
	"[server]\n"
	"socket = " DE_DEFAULT_SOCKET "\n"
	"workers = 1\n"
	"poll_us = 50\n"
	"max_batch = 65536\n"
	"sq_entries = 256\n"
	"data_bytes = 64M\n"
	"max_data_bytes = 1G\n"
	"allow_uids =\n"
	"allow_gids =\n"
	"hello_timeout_ms = 2000\n"
	"max_connections_per_uid = 64\n"
	"[pages]\n"
	"mode = auto\n"
	"numa_node = auto\n"
	"segment_bytes = 32M\n"
	"reserve_bytes = 0\n"
	"[memory]\n"
	"host_budget_bytes = 0\n"
	"tier_dir = /var/tmp/dynemb-tier\n"
	"[quota]\n"
	"uid_tables = 256\n"
	"host_tables = 1024\n"
	"uid_bytes = 0\n"
	"host_bytes = auto\n"
	"table_bytes = 16G\n"
	"[learn]\n"
	"topk_threads = 0\n"
	"topk_max_cost = 17179869184\n"
	"sampler_rebuild_ms = 1000\n"
	"[persistence]\n"
	"data_dir =\n"
	"snapshot_interval_s = 0\n"
	"wal_segment_bytes = 64M\n"
	"export_dir =\n"
	"[serving]\n"
	"grace_ms = 30000\n"
	"[log]\n"
	"level = info\n"
	"format = logfmt\n"
	"[metrics]\n"
	"listen =\n"
	"[peers]\n"
	"members =\n"
	"self =\n"
	"secret_file =\n"
	"listen =\n"
	"timeout_ms = 2000\n"
	"threads = 4\n"
	"sharded = *\n";

static const char *trim(char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	size_t n = strlen(s);
	while (n && isspace((unsigned char)s[n - 1]))
		s[--n] = 0;
	return s;
}

static int parse_u64(const char *v, uint64_t lo, uint64_t hi, uint64_t *out)
{
	if (!*v || !isdigit((unsigned char)*v))
		return -1;
	errno = 0;
	char *end;
	unsigned long long x = strtoull(v, &end, 10);
	if (errno || *end || x < lo || x > hi)
		return -1;
	*out = x;
	return 0;
}

/* A byte count: digits with an optional K, M, G (powers of 1024), optionally "iB"/"B". */
static int parse_size(const char *v, uint64_t *out)
{
	if (!*v || !isdigit((unsigned char)*v))
		return -1;
	errno = 0;
	char *end;
	unsigned long long x = strtoull(v, &end, 10);
	if (errno)
		return -1;
	unsigned shift = 0;
	switch (toupper((unsigned char)*end)) {
	case 'K': shift = 10; end++; break;
	case 'M': shift = 20; end++; break;
	case 'G': shift = 30; end++; break;
	default: break;
	}
	if (shift && (!strcasecmp(end, "iB") || !strcasecmp(end, "B")))
		end += strlen(end);
	if (*end || (shift && x > (UINT64_MAX >> shift)))
		return -1;
	*out = (uint64_t)x << shift;
	return 0;
}

/* "0, 1000,alice" -> ids; names go through getpwnam/getgrnam. An empty list is fine. */
static int parse_ids(const char *v, bool groups, unsigned *ids, unsigned *n, char *err,
		     size_t errcap)
{
	char buf[1024];
	if (strlen(v) >= sizeof buf) {
		snprintf(err, errcap, "list too long");
		return -1;
	}
	strcpy(buf, v);
	*n = 0;
	char *save = NULL;
	for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		const char *t = trim(tok);
		if (!*t)
			continue;
		if (*n == SRV_MAX_IDS) {
			snprintf(err, errcap, "more than %u entries", SRV_MAX_IDS);
			return -1;
		}
		uint64_t x;
		if (parse_u64(t, 0, UINT32_MAX - 1, &x) == 0) {
			ids[(*n)++] = (unsigned)x;
		} else if (!groups && getpwnam(t)) {
			ids[(*n)++] = getpwnam(t)->pw_uid;
		} else if (groups && getgrnam(t)) {
			ids[(*n)++] = getgrnam(t)->gr_gid;
		} else {
			snprintf(err, errcap, "'%s' is not a %s id or name", t, groups ? "group" : "user");
			return -1;
		}
	}
	return 0;
}

/* [log] level, format; key is the name the value came under ([server] log_level, the
 * older name of [log] level, is still read). 0, or -1 with a message in err. */
static int set_log_key(struct srv_config *c, const char *key, const char *v, char *err,
		       size_t errcap)
{
	if (!strcmp(key, "level") || !strcmp(key, "log_level")) {
		int lvl = srv_log_level_parse(v);
		if (lvl < 0) {
			snprintf(err, errcap, "%s '%s' is not one of error, warn, info, debug", key, v);
			return -1;
		}
		c->log_level = lvl;
	} else if (!strcmp(key, "format")) {
		int fmt = srv_log_format_parse(v);
		if (fmt < 0) {
			snprintf(err, errcap, "format '%s' is not one of logfmt, json", v);
			return -1;
		}
		c->log_format = fmt;
	} else {
		snprintf(err, errcap, "unknown key '%s' in [log]", key);
		return -1;
	}
	return 0;
}

/* ---- [metrics] ------------------------------------------------------------------------ */

/*
 * [metrics] listen: "" (off), "PORT" or ":PORT" (loopback: 127.0.0.1), "IPV4:PORT",
 * "localhost:PORT" (127.0.0.1), "[IPV6]:PORT". Names other than localhost are not
 * resolved (a daemon's bind address should not depend on DNS). 0 or -1 with err.
 */
static int parse_listen(struct srv_config *c, const char *v, char *err, size_t errcap)
{
	c->metrics_on = false;
	memset(&c->metrics_addr, 0, sizeof c->metrics_addr);
	c->metrics_addrlen = 0;
	if (!*v)
		return 0;
	char host[64] = "";
	const char *port;
	bool v6 = false;
	if (*v == '[') {
		const char *end = strchr(v, ']');
		if (!end || end[1] != ':' || (size_t)(end - v - 1) >= sizeof host) {
			snprintf(err, errcap, "[metrics] listen '%s' is not [IPV6]:PORT", v);
			return -1;
		}
		memcpy(host, v + 1, (size_t)(end - v - 1));
		port = end + 2;
		v6 = true;
	} else {
		const char *colon = strrchr(v, ':');
		if (colon && strchr(v, ':') != colon) {
			snprintf(err, errcap, "[metrics] listen '%s': an IPv6 address goes in "
				 "brackets, as in [::1]:9464", v);
			return -1;
		}
		if (colon && (size_t)(colon - v) >= sizeof host) {
			snprintf(err, errcap, "[metrics] listen '%s': the host is too long", v);
			return -1;
		}
		if (colon)
			memcpy(host, v, (size_t)(colon - v));
		port = colon ? colon + 1 : v;
	}
	uint64_t pn;
	if (parse_u64(port, 1, 65535, &pn)) {
		snprintf(err, errcap, "[metrics] listen '%s': port '%s' is not a number in "
			 "1..65535 (as in 127.0.0.1:9464)", v, port);
		return -1;
	}
	if (v6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&c->metrics_addr;
		a->sin6_family = AF_INET6;
		a->sin6_port = htons((uint16_t)pn);
		if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1) {
			snprintf(err, errcap, "[metrics] listen '%s': '%s' is not an IPv6 address",
				 v, host);
			return -1;
		}
		c->metrics_addrlen = sizeof *a;
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&c->metrics_addr;
		a->sin_family = AF_INET;
		a->sin_port = htons((uint16_t)pn);
		const char *h = !*host || !strcasecmp(host, "localhost") ? "127.0.0.1" : host;
		if (inet_pton(AF_INET, h, &a->sin_addr) != 1) {
			snprintf(err, errcap, "[metrics] listen '%s': '%s' is not an IPv4 address, "
				 "localhost or [IPV6] (names are not resolved)", v, host);
			return -1;
		}
		c->metrics_addrlen = sizeof *a;
	}
	c->metrics_on = true;
	return 0;
}

static int set_metrics_key(struct srv_config *c, const char *key, const char *v, char *err,
			   size_t errcap)
{
	if (!strcmp(key, "listen"))
		return parse_listen(c, v, err, errcap);
	snprintf(err, errcap, "unknown key '%s' in [metrics]", key);
	return -1;
}

void srv_config_metrics_addr(const struct srv_config *c, char *buf, size_t cap)
{
	char h[INET6_ADDRSTRLEN] = "";
	if (!c->metrics_on) {
		snprintf(buf, cap, "%s", "");
	} else if (c->metrics_addr.ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const void *)&c->metrics_addr;
		inet_ntop(AF_INET6, &a->sin6_addr, h, sizeof h);
		snprintf(buf, cap, "[%s]:%u", h, (unsigned)ntohs(a->sin6_port));
	} else {
		const struct sockaddr_in *a = (const void *)&c->metrics_addr;
		inet_ntop(AF_INET, &a->sin_addr, h, sizeof h);
		snprintf(buf, cap, "%s:%u", h, (unsigned)ntohs(a->sin_port));
	}
}

/* ---- [peers] -------------------------------------------------------------------------- */

/* A numeric HOST:PORT ("[V6]:PORT") into ss; -1 with err. */
static int parse_addr(const char *what, const char *v, struct sockaddr_storage *ss,
		      socklen_t *len, char *err, size_t errcap)
{
	char host[DE_PEER_HOST_MAX];
	const char *colon = strrchr(v, ':');
	if (!colon || colon == v) {
		snprintf(err, errcap, "%s '%s' is not HOST:PORT", what, v);
		return -1;
	}
	const char *h = v;
	size_t hl = (size_t)(colon - v);
	if (*h == '[' && hl >= 2 && h[hl - 1] == ']') {
		h++;
		hl -= 2;
	}
	if (hl >= sizeof host) {
		snprintf(err, errcap, "%s '%s': the host is too long", what, v);
		return -1;
	}
	memcpy(host, h, hl);
	host[hl] = 0;
	uint64_t port;
	if (parse_u64(colon + 1, 1, 65535, &port)) {
		snprintf(err, errcap, "%s '%s': port '%s' is not a number in 1..65535", what, v,
			 colon + 1);
		return -1;
	}
	memset(ss, 0, sizeof *ss);
	struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
		a4->sin_family = AF_INET;
		a4->sin_port = htons((uint16_t)port);
		*len = sizeof *a4;
	} else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons((uint16_t)port);
		*len = sizeof *a6;
	} else {
		snprintf(err, errcap, "%s '%s': '%s' is not a numeric IPv4 or IPv6 address", what,
			 v, host);
		return -1;
	}
	return 0;
}

static int set_peers_key(struct srv_config *c, const char *key, const char *v, char *err,
			 size_t errcap)
{
	uint64_t x;
	if (!strcmp(key, "members")) {
		c->peers.n = 0;
		if (*v && de_peer_members_parse(v, &c->peers, err, errcap))
			return -1;
	} else if (!strcmp(key, "self")) {
		if (strlen(v) >= sizeof c->peer_self_name) {
			snprintf(err, errcap, "[peers] self '%s' is longer than a member name (%u "
				 "bytes)", v, DE_PEER_NAME_MAX - 1);
			return -1;
		}
		strcpy(c->peer_self_name, v);
	} else if (!strcmp(key, "secret_file")) {
		if (*v && (*v != '/' || strlen(v) >= sizeof c->peer_secret_file)) {
			snprintf(err, errcap, "[peers] secret_file '%s' is not an absolute path of at "
				 "most %zu bytes", v, sizeof c->peer_secret_file - 1);
			return -1;
		}
		strcpy(c->peer_secret_file, v);
	} else if (!strcmp(key, "listen")) {
		if (strlen(v) >= sizeof c->peer_listen_text) {
			snprintf(err, errcap, "[peers] listen '%s' is too long", v);
			return -1;
		}
		if (*v && parse_addr("[peers] listen", v, &c->peer_listen, &c->peer_listen_len,
				     err, errcap))
			return -1;
		strcpy(c->peer_listen_text, v);
	} else if (!strcmp(key, "timeout_ms")) {
		if (parse_u64(v, 1, 600000, &x)) {
			snprintf(err, errcap, "[peers] timeout_ms '%s' is not a number in 1..600000",
				 v);
			return -1;
		}
		c->peer_timeout_ms = (unsigned)x;
	} else if (!strcmp(key, "threads")) {
		if (parse_u64(v, 1, 64, &x)) {
			snprintf(err, errcap, "[peers] threads '%s' is not a number in 1..64", v);
			return -1;
		}
		c->peer_threads = (unsigned)x;
	} else if (!strcmp(key, "sharded")) {
		if (strlen(v) >= sizeof c->peer_sharded) {
			snprintf(err, errcap, "[peers] sharded is longer than %zu bytes",
				 sizeof c->peer_sharded - 1);
			return -1;
		}
		strcpy(c->peer_sharded, v);
	} else {
		snprintf(err, errcap, "unknown key '%s' in [peers]", key);
		return -2;
	}
	return 0;
}

/* After the file and the flags: [peers] whole, or off. -1 with err. */
static int peers_finish(struct srv_config *c, char *err, size_t errcap)
{
	if (!c->peers.n) {
		if (*c->peer_self_name || *c->peer_secret_file || *c->peer_listen_text) {
			snprintf(err, errcap, "[peers] self, secret_file or listen is set but members "
				 "is empty (peers are off without members)");
			return -1;
		}
		return 0;
	}
	if (!*c->peer_self_name) {
		snprintf(err, errcap, "[peers] members is set but self is not: which member is "
			 "this daemon?");
		return -1;
	}
	int i = de_peer_members_find(&c->peers, c->peer_self_name);
	if (i < 0) {
		snprintf(err, errcap, "[peers] self '%s' is not one of the %u members",
			 c->peer_self_name, c->peers.n);
		return -1;
	}
	c->peer_self = (unsigned)i;
	if (!*c->peer_secret_file) {
		snprintf(err, errcap, "[peers] members is set but secret_file is not: peers "
			 "authenticate with a shared secret");
		return -1;
	}
	if (c->max_batch > DE_PEER_MAX_KEYS) {
		snprintf(err, errcap, "[server] max_batch %u is over %u, the most keys a peer "
			 "frame carries", c->max_batch, DE_PEER_MAX_KEYS);
		return -1;
	}
	if (!*c->peer_listen_text) { /* self's own address, which must then be numeric */
		const struct de_peer_member *m = &c->peers.m[i];
		char a[DE_PEER_HOST_MAX + 16];
		snprintf(a, sizeof a, strchr(m->host, ':') ? "[%s]:%u" : "%s:%u", m->host, m->port);
		char e2[400];
		if (parse_addr("[peers] listen", a, &c->peer_listen, &c->peer_listen_len, e2,
			       sizeof e2)) {
			snprintf(err, errcap, "%s (self's address in members; set [peers] listen)",
				 e2);
			return -1;
		}
	}
	return 0;
}

bool srv_config_sharded(const struct srv_config *c, const char *name)
{
	if (!c->peers.n)
		return false;
	const char *p = c->peer_sharded;
	size_t nl = strlen(name);
	while (*p) {
		while (*p == ',' || isspace((unsigned char)*p))
			p++;
		size_t l = strcspn(p, ", \t");
		if ((l == 1 && *p == '*') || (l == nl && !memcmp(p, name, l)))
			return true;
		p += l;
	}
	return false;
}

/* Set one key. 0, or -1 with a message in err ("unknown key" gets -2). */
static int set_key(struct srv_config *c, const char *section, const char *key, const char *val,
		   char *err, size_t errcap)
{
	char vbuf[4096];
	if (snprintf(vbuf, sizeof vbuf, "%s", val ? val : "") >= (int)sizeof vbuf) {
		snprintf(err, errcap, "the value of '%s' in [%s] is longer than %zu bytes", key,
			 section, sizeof vbuf - 1);
		return -1;
	}
	const char *v = trim(vbuf);
	uint64_t x;
#define BAD(...) do { snprintf(err, errcap, __VA_ARGS__); return -1; } while (0)
	if (!strcmp(section, "server")) {
		if (!strcmp(key, "socket")) {
			if (!*v || strlen(v) >= sizeof c->socket)
				BAD("socket path must be 1..%zu bytes", sizeof c->socket - 1);
			strcpy(c->socket, v);
		} else if (!strcmp(key, "workers")) {
			if (parse_u64(v, 1, SRV_MAX_WORKERS, &x))
				BAD("workers '%s' is not a number in 1..%u", v, SRV_MAX_WORKERS);
			c->workers = (unsigned)x;
		} else if (!strcmp(key, "poll_us")) {
			if (parse_u64(v, 0, 1000000, &x))
				BAD("poll_us '%s' is not a number in 0..1000000", v);
			c->poll_us = (unsigned)x;
		} else if (!strcmp(key, "max_batch")) {
			if (parse_u64(v, 1, SRV_MAX_BATCH_LIMIT, &x))
				BAD("max_batch '%s' is not a number in 1..%u", v, SRV_MAX_BATCH_LIMIT);
			c->max_batch = (uint32_t)x;
		} else if (!strcmp(key, "sq_entries")) {
			if (parse_u64(v, 2, DE_CHANNEL_MAX_ENTRIES, &x) || (x & (x - 1)))
				BAD("sq_entries '%s' is not a power of two in 2..%u", v, DE_CHANNEL_MAX_ENTRIES);
			c->sq_entries = (uint32_t)x;
		} else if (!strcmp(key, "data_bytes") || !strcmp(key, "max_data_bytes")) {
			if (parse_size(v, &x) || x < 4096 || x > DE_CHANNEL_MAX_DATA)
				BAD("%s '%s' is not a size in 4K..4G", key, v);
			x = (x + 4095) & ~4095ull;
			if (!strcmp(key, "data_bytes"))
				c->data_bytes = x;
			else
				c->max_data_bytes = x;
		} else if (!strcmp(key, "allow_uids")) {
			char e[256];
			if (parse_ids(v, false, c->allow_uids, &c->n_uids, e, sizeof e))
				BAD("allow_uids: %s", e);
		} else if (!strcmp(key, "allow_gids")) {
			char e[256];
			if (parse_ids(v, true, c->allow_gids, &c->n_gids, e, sizeof e))
				BAD("allow_gids: %s", e);
		} else if (!strcmp(key, "hello_timeout_ms")) {
			if (parse_u64(v, 10, 600000, &x))
				BAD("hello_timeout_ms '%s' is not a number of milliseconds in 10..600000", v);
			c->hello_timeout_ms = (unsigned)x;
		} else if (!strcmp(key, "max_connections_per_uid")) {
			if (parse_u64(v, 1, SRV_MAX_CONNECTIONS, &x))
				BAD("max_connections_per_uid '%s' is not a number in 1..%u", v,
				    SRV_MAX_CONNECTIONS);
			c->max_conn_per_uid = (unsigned)x;
		} else if (!strcmp(key, "log_level")) {
			return set_log_key(c, key, v, err, errcap); /* older name of [log] level */
		} else {
			BAD("unknown key '%s' in [%s]", key, section);
		}
	} else if (!strcmp(section, "pages")) {
		if (!strcmp(key, "mode")) {
			if (!strcasecmp(v, "auto"))
				c->pages = DE_PAGES_AUTO;
			else if (!strcasecmp(v, "hugetlb"))
				c->pages = DE_PAGES_HUGETLB;
			else if (!strcasecmp(v, "thp"))
				c->pages = DE_PAGES_THP;
			else if (!strcasecmp(v, "small"))
				c->pages = DE_PAGES_SMALL;
			else
				BAD("mode '%s' is not one of auto, hugetlb, thp, small", v);
		} else if (!strcmp(key, "numa_node")) {
			if (!strcasecmp(v, "auto"))
				c->numa_node = DE_NUMA_AUTO;
			else if (!strcasecmp(v, "none"))
				c->numa_node = DE_NUMA_NONE;
			else if (parse_u64(v, 0, 1023, &x) == 0)
				c->numa_node = (int)x;
			else
				BAD("numa_node '%s' is not auto, none or a node number", v);
		} else if (!strcmp(key, "segment_bytes")) {
			if (parse_size(v, &x) || x < (2u << 20) || x > (1ull << 36))
				BAD("segment_bytes '%s' is not a size in 2M..64G", v);
			c->segment_bytes = x;
		} else if (!strcmp(key, "reserve_bytes")) {
			if (parse_size(v, &x) || (x && (x < (64u << 20) || x > (1ull << 44))))
				BAD("reserve_bytes '%s' is not 0 (default) or a size in 64M..16T", v);
			c->reserve_bytes = x;
		} else {
			BAD("unknown key '%s' in [%s]", key, section);
		}
	} else if (!strcmp(section, "memory")) {
		if (!strcmp(key, "host_budget_bytes")) {
			if (parse_size(v, &x) || (x && x < (1u << 20)))
				BAD("host_budget_bytes '%s' is not 0 (none) or a size of at least 1M", v);
			c->host_budget_bytes = x;
		} else if (!strcmp(key, "tier_dir")) {
			if (*v && (*v != '/' || strlen(v) >= sizeof c->tier_dir - 32))
				BAD("tier_dir '%s' is not empty (no disk tier) or an absolute path of "
				    "at most %zu bytes", v, sizeof c->tier_dir - 33);
			strcpy(c->tier_dir, v);
		} else {
			BAD("unknown key '%s' in [%s]", key, section);
		}
	} else if (!strcmp(section, "quota")) {
		if (!strcmp(key, "uid_tables") || !strcmp(key, "host_tables")) {
			if (parse_u64(v, 0, 1u << 20, &x))
				BAD("%s '%s' is not a number of tables in 0..%u (0 = no limit)", key, v,
				    1u << 20);
			*(!strcmp(key, "uid_tables") ? &c->quota_uid_tables : &c->quota_host_tables) =
				(uint32_t)x;
		} else if (!strcmp(key, "uid_bytes") || !strcmp(key, "host_bytes")) {
			if (!strcmp(key, "host_bytes") && !strcasecmp(v, "auto")) {
				/* three quarters of the physical memory */
				long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
				x = pages > 0 && psz > 0 ? (uint64_t)pages / 4 * 3 * (uint64_t)psz : 0;
			} else if (parse_size(v, &x) || (x && x < (64u << 20))) {
				BAD("%s '%s' is not 0 (no limit)%s or a size of at least 64M", key, v,
				    !strcmp(key, "host_bytes") ? ", auto (3/4 of physical memory)" : "");
			}
			*(!strcmp(key, "uid_bytes") ? &c->quota_uid_bytes : &c->quota_host_bytes) = x;
		} else if (!strcmp(key, "table_bytes")) {
			if (parse_size(v, &x) || x < (64u << 20) || x > (1ull << 44))
				BAD("table_bytes '%s' is not a size in 64M..16T", v);
			c->quota_table_bytes = x;
		} else {
			BAD("unknown key '%s' in [%s]", key, section);
		}
	} else if (!strcmp(section, "learn")) {
		if (!strcmp(key, "topk_threads")) {
			if (parse_u64(v, 0, DE_TOPK_MAX_THREADS, &x))
				BAD("topk_threads '%s' is not a number in 0..%u (0 = online CPUs)", v,
				    DE_TOPK_MAX_THREADS);
			c->topk_threads = (unsigned)x;
		} else if (!strcmp(key, "topk_max_cost")) {
			if (parse_u64(v, 1, UINT64_MAX / 2, &x))
				BAD("topk_max_cost '%s' is not a number in 1..%llu (queries x rows "
				    "x dim of one request)", v, (unsigned long long)(UINT64_MAX / 2));
			c->topk_max_cost = x;
		} else if (!strcmp(key, "sampler_rebuild_ms")) {
			if (parse_u64(v, 0, 3600000, &x))
				BAD("sampler_rebuild_ms '%s' is not a number in 0..3600000", v);
			c->sampler_rebuild_ms = (unsigned)x;
		} else {
			BAD("unknown key '%s' in [%s]", key, section);
		}
	} else if (!strcmp(section, "persistence")) {
		if (!strcmp(key, "data_dir") || !strcmp(key, "export_dir")) {
			char *dst = !strcmp(key, "data_dir") ? c->data_dir : c->export_dir;
			if (*v && (*v != '/' || strlen(v) >= sizeof c->data_dir))
				BAD("%s '%s' is not empty (off) or an absolute path of at most %zu "
				    "bytes", key, v, sizeof c->data_dir - 1);
			strcpy(dst, v);
		} else if (!strcmp(key, "snapshot_interval_s")) {
			if (parse_u64(v, 0, 604800, &x))
				BAD("snapshot_interval_s '%s' is not a number of seconds in 0..604800 "
				    "(0 = no periodic snapshots)", v);
			c->snapshot_interval_s = (unsigned)x;
		} else if (!strcmp(key, "wal_segment_bytes")) {
			if (parse_size(v, &x) || x < DE_WAL_MIN_SEGMENT || x > DE_WAL_MAX_SEGMENT)
				BAD("wal_segment_bytes '%s' is not a size in 64K..1G", v);
			c->wal_segment_bytes = x;
		} else {
			BAD("unknown key '%s' in [%s]", key, section);
		}
	} else if (!strcmp(section, "serving")) {
		if (!strcmp(key, "grace_ms")) {
			if (parse_u64(v, 1, 3600000, &x))
				BAD("grace_ms '%s' is not a number of milliseconds in 1..3600000", v);
			c->serve_grace_ms = (unsigned)x;
		} else {
			BAD("unknown key '%s' in [%s]", key, section);
		}
	} else if (!strcmp(section, "log")) {
		return set_log_key(c, key, v, err, errcap);
	} else if (!strcmp(section, "metrics")) {
		return set_metrics_key(c, key, v, err, errcap);
	} else if (!strcmp(section, "peers")) {
		return set_peers_key(c, key, v, err, errcap) ? -1 : 0;
	} else if (!strncmp(section, "namespace", 9)) {
		return srv_ns_set(&c->ns, section + 9, key, val, err, errcap);
	} else {
		BAD("unknown section [%s]", section);
	}
#undef BAD
	return 0;
}

struct ini_ctx {
	struct srv_config *cfg;
	char err[512];
	bool failed;
};

static int on_ini_key(void *user, const char *section, const char *name, const char *value)
{
	struct ini_ctx *x = user;
	if (!name) /* a section header with no keys (inih with INI_CALL_HANDLER_ON_NEW_SECTION) */
		return 1;
	char e[400];
	if (set_key(x->cfg, section, name, value, e, sizeof e) == 0)
		return 1;
	if (!x->failed) { /* ini_parse reports the line of the first error: keep its message */
		x->failed = true;
		snprintf(x->err, sizeof x->err, "%s", e);
	}
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: dynembd [OPTION]...\n"
		"The dynemb embedding-store daemon: one per host; clients talk to it over a unix\n"
		"socket and shared-memory rings.\n"
		"\n"
		"Configuration comes from the built-in defaults, then --config FILE (INI), then\n"
		"these flags. Each flag sets the config key named after it.\n"
		"\n"
		"  -c, --config FILE         INI file with [server], [pages], [memory], [quota],\n"
		"                            [learn], [persistence], [log], [metrics],\n"
		"                            [peers], [namespace NAME] (table rights)\n"
		"  -s, --socket PATH         [server] socket: control socket (default %s;\n"
		"                            its directory is created)\n"
		"  -w, --workers N           [server] workers: data-plane threads, 1..%u (default 1)\n"
		"      --poll-us N           [server] poll_us: busy-poll this long before sleeping (50)\n"
		"      --max-batch N         [server] max_batch: most keys in one request (65536)\n"
		"      --sq-entries N        [server] sq_entries: default ring size, power of two (256)\n"
		"      --data-bytes SIZE     [server] data_bytes: default data area per channel (64M)\n"
		"      --max-data-bytes SIZE [server] max_data_bytes: largest data area a client gets (1G)\n"
		"  -u, --allow-uid LIST      [server] allow_uids: users allowed to connect (ids or names,\n"
		"                            comma-separated); no other user is, not root and not the\n"
		"                            daemon's own user (list them to let them in)\n"
		"  -g, --allow-gid LIST      [server] allow_gids: groups allowed to connect\n"
		"      --hello-timeout-ms N  [server] hello_timeout_ms: a connection that sends no\n"
		"                            HELLO this long is closed (2000)\n"
		"      --max-connections-per-uid N [server] max_connections_per_uid: connections\n"
		"                            one uid may hold, 1..%u (64; refused with -EUSERS)\n"
		"  -l, --log-level LEVEL     [log] level: error, warn, info (default), debug (the\n"
		"                            older [server] log_level is still read)\n"
		"      --log-format FORMAT   [log] format: logfmt (default) or json, one event a\n"
		"                            line on stderr\n"
		"      --pages MODE          [pages] mode: auto (default), hugetlb, thp, small\n"
		"      --numa-node N         [pages] numa_node: auto (default), none, or a node number\n"
		"      --segment-bytes SIZE  [pages] segment_bytes: first arena segment of a table (32M)\n"
		"      --reserve-bytes SIZE  [pages] reserve_bytes: most address space of a table\n"
		"                            (0 = sized from its budget or [quota] table_bytes)\n"
		"      --host-budget-bytes SIZE [memory] host_budget_bytes: all evicting tables\n"
		"                            together (0 = none; tables have their own budgets too)\n"
		"      --tier-dir DIR        [memory] tier_dir: disk tier of evicted rows (default\n"
		"                            /var/tmp/dynemb-tier; empty: no disk tier)\n"
		"      --uid-tables N        [quota] uid_tables: tables one uid may create (256;\n"
		"                            0 = no limit; over it OPEN is -EDQUOT)\n"
		"      --host-tables N       [quota] host_tables: tables of the host (1024; -ENOSPC)\n"
		"      --uid-bytes SIZE      [quota] uid_bytes: memory of one uid's tables (0 = none)\n"
		"      --host-bytes SIZE     [quota] host_bytes: memory of all tables (auto = 3/4 of\n"
		"                            physical memory; 0 = none). A table's memory: the arena\n"
		"                            segments it maps (charged as it grows) and its sketch\n"
		"      --table-bytes SIZE    [quota] table_bytes: memory of a table without an\n"
		"                            eviction budget (16G; a table with one gets budget\n"
		"                            * 5/4 + 64M); past it writes that create rows fail\n"
		"                            -ENOSPC\n"
		"      --topk-threads N      [learn] topk_threads: threads of one top-k (0 = CPUs)\n"
		"      --topk-max-cost N     [learn] topk_max_cost: most queries x rows x dim of one\n"
		"                            top-k request; more is refused (17179869184 = 2^34)\n"
		"      --sampler-rebuild-ms N [learn] sampler_rebuild_ms: sampler snapshot period\n"
		"                            (log-uniform, unigram; default 1000, 0 = never)\n"
		"  -d, --data-dir DIR        [persistence] data_dir: WAL, snapshots, manifest and table\n"
		"                            catalog; tables are recovered from it at start (default\n"
		"                            empty: no persistence; durability async/sync refused)\n"
		"      --snapshot-interval-s N [persistence] snapshot_interval_s: checkpoint every\n"
		"                            table with changes every N s (default 0 = never)\n"
		"      --wal-segment-bytes SIZE [persistence] wal_segment_bytes: 64K..1G (64M)\n"
		"      --export-dir DIR      [persistence] export_dir: EXPORT/IMPORT requests may only\n"
		"                            name files under it (default empty: refused)\n"
		"      --serve-grace-ms N    [serving] grace_ms: a replaced version of a serving\n"
		"                            table is freed this long after the switch at the\n"
		"                            latest, its last readers' handles revoked (30000)\n"
		"      --recover-from-wal    salvage: start even when data_dir lost its CATALOG or\n"
		"                            MANIFEST while snapshots or WAL segments remain (else\n"
		"                            exit 3): without CATALOG no table is recovered, without\n"
		"                            MANIFEST every WAL record still there is replayed\n"
		"      --metrics-listen ADDR [metrics] listen: serve Prometheus /metrics over HTTP\n"
		"                            at ADDR: PORT or :PORT (127.0.0.1), IPV4:PORT,\n"
		"                            localhost:PORT, [IPV6]:PORT (default empty: off)\n"
		"  [peers] (config file only; docs/peers.md): members (name=host:port[*weight],...),\n"
		"                            self, secret_file, listen, timeout_ms (2000),\n"
		"                            threads (4), sharded (*): shard tables over other\n"
		"                            hosts' dynembd (off while members is empty)\n"
		"  -f, --foreground          stay in the foreground (default: detach after binding)\n"
		"      --print-config        print the effective configuration and exit\n"
		"  -h, --help                this text\n"
		"      --version             the version\n"
		"\n"
		"SIZE takes K, M, G suffixes (powers of 1024). Bad values exit with status 2.\n"
		"SIGTERM or SIGINT: stop accepting, finish every queued request, snapshot the\n"
		"tables with changes (data_dir), exit 0. Exit 3: damaged catalog, manifest or\n"
		"snapshot in data_dir, or a missing catalog or manifest beside snapshots or WAL\n"
		"segments (the log names the file).\n",
		DE_DEFAULT_SOCKET, SRV_MAX_WORKERS, SRV_MAX_CONNECTIONS);
}

enum { O_POLL = 256, O_BATCH, O_SQ, O_DATA, O_MAXDATA, O_PAGES, O_NUMA, O_SEG, O_RES,
       O_PRINT, O_VERSION, O_HOSTB, O_TIER, O_TOPK, O_REBUILD, O_SNAPINT, O_WALSEG, O_EXPDIR,
       O_SALVAGE, O_HELLO_TO, O_PERUID, O_QUT, O_QHT, O_QUB, O_QHB, O_QTB, O_TOPKCOST,
       O_LOGFMT, O_METRICS, O_GRACE };

static const struct option opts[] = {
	{ "config", required_argument, NULL, 'c' },
	{ "socket", required_argument, NULL, 's' },
	{ "workers", required_argument, NULL, 'w' },
	{ "poll-us", required_argument, NULL, O_POLL },
	{ "max-batch", required_argument, NULL, O_BATCH },
	{ "sq-entries", required_argument, NULL, O_SQ },
	{ "data-bytes", required_argument, NULL, O_DATA },
	{ "max-data-bytes", required_argument, NULL, O_MAXDATA },
	{ "allow-uid", required_argument, NULL, 'u' },
	{ "allow-gid", required_argument, NULL, 'g' },
	{ "log-level", required_argument, NULL, 'l' },
	{ "log-format", required_argument, NULL, O_LOGFMT },
	{ "hello-timeout-ms", required_argument, NULL, O_HELLO_TO },
	{ "serve-grace-ms", required_argument, NULL, O_GRACE },
	{ "max-connections-per-uid", required_argument, NULL, O_PERUID },
	{ "pages", required_argument, NULL, O_PAGES },
	{ "numa-node", required_argument, NULL, O_NUMA },
	{ "segment-bytes", required_argument, NULL, O_SEG },
	{ "reserve-bytes", required_argument, NULL, O_RES },
	{ "host-budget-bytes", required_argument, NULL, O_HOSTB },
	{ "tier-dir", required_argument, NULL, O_TIER },
	{ "uid-tables", required_argument, NULL, O_QUT },
	{ "host-tables", required_argument, NULL, O_QHT },
	{ "uid-bytes", required_argument, NULL, O_QUB },
	{ "host-bytes", required_argument, NULL, O_QHB },
	{ "table-bytes", required_argument, NULL, O_QTB },
	{ "topk-threads", required_argument, NULL, O_TOPK },
	{ "topk-max-cost", required_argument, NULL, O_TOPKCOST },
	{ "sampler-rebuild-ms", required_argument, NULL, O_REBUILD },
	{ "data-dir", required_argument, NULL, 'd' },
	{ "snapshot-interval-s", required_argument, NULL, O_SNAPINT },
	{ "wal-segment-bytes", required_argument, NULL, O_WALSEG },
	{ "export-dir", required_argument, NULL, O_EXPDIR },
	{ "metrics-listen", required_argument, NULL, O_METRICS },
	{ "recover-from-wal", no_argument, NULL, O_SALVAGE },
	{ "foreground", no_argument, NULL, 'f' },
	{ "print-config", no_argument, NULL, O_PRINT },
	{ "help", no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, O_VERSION },
	{ NULL, 0, NULL, 0 },
};
static const char shortopts[] = "+c:s:w:u:g:l:d:fh";

/* The config key a flag sets. */
static bool flag_key(int o, const char **section, const char **key)
{
	static const struct { int o; const char *s, *k; } map[] = {
		{ 's', "server", "socket" },        { 'w', "server", "workers" },
		{ O_POLL, "server", "poll_us" },    { O_BATCH, "server", "max_batch" },
		{ O_SQ, "server", "sq_entries" },   { O_DATA, "server", "data_bytes" },
		{ O_MAXDATA, "server", "max_data_bytes" },
		{ 'u', "server", "allow_uids" },    { 'g', "server", "allow_gids" },
		{ 'l', "log", "level" },            { O_PAGES, "pages", "mode" },
		{ O_LOGFMT, "log", "format" },
		{ O_HELLO_TO, "server", "hello_timeout_ms" },
		{ O_PERUID, "server", "max_connections_per_uid" },
		{ O_NUMA, "pages", "numa_node" },   { O_SEG, "pages", "segment_bytes" },
		{ O_RES, "pages", "reserve_bytes" },
		{ O_HOSTB, "memory", "host_budget_bytes" }, { O_TIER, "memory", "tier_dir" },
		{ O_QUT, "quota", "uid_tables" },   { O_QHT, "quota", "host_tables" },
		{ O_QUB, "quota", "uid_bytes" },    { O_QHB, "quota", "host_bytes" },
		{ O_QTB, "quota", "table_bytes" },
		{ O_TOPK, "learn", "topk_threads" },
		{ O_TOPKCOST, "learn", "topk_max_cost" },
		{ O_REBUILD, "learn", "sampler_rebuild_ms" },
		{ 'd', "persistence", "data_dir" },
		{ O_SNAPINT, "persistence", "snapshot_interval_s" },
		{ O_WALSEG, "persistence", "wal_segment_bytes" },
		{ O_EXPDIR, "persistence", "export_dir" },
		{ O_METRICS, "metrics", "listen" },
		{ O_GRACE, "serving", "grace_ms" },
	};
	for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
		if (map[i].o == o) {
			*section = map[i].s;
			*key = map[i].k;
			return true;
		}
	return false;
}

static const char *flag_name(int o)
{
	for (const struct option *p = opts; p->name; p++)
		if (p->val == o)
			return p->name;
	return "?";
}

int srv_config_load(struct srv_config *c, int argc, char **argv)
{
	memset(c, 0, sizeof *c);
	struct ini_ctx x = { .cfg = c };
	int line = ini_parse_string(DEFAULT_CONFIG, on_ini_key, &x);
	if (line) { /* a bug in DEFAULT_CONFIG: say so loudly */
		fprintf(stderr, "dynembd: built-in config:%d: %s\n", line, x.err);
		return 2;
	}

	/* Pass 1: --config, --help, --version (and reject unknown options). */
	const char *file = NULL;
	opterr = 0;
	optind = 0;
	int o;
	while ((o = getopt_long(argc, argv, shortopts, opts, NULL)) != -1) {
		if (o == 'c')
			file = optarg;
		else if (o == 'h') {
			usage(stdout);
			return 1;
		} else if (o == O_VERSION) {
			printf("dynembd " DYNEMBD_VERSION " (protocol %u)\n", DE_PROTO_VERSION);
			return 1;
		} else if (o == '?' || o == ':') {
			if (optopt && optopt < 256)
				fprintf(stderr, "dynembd: option -%c: unknown or missing its value\n", optopt);
			else
				fprintf(stderr, "dynembd: option %s: unknown or missing its value\n",
					argv[optind - 1]);
			fprintf(stderr, "Try 'dynembd --help'.\n");
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "dynembd: unexpected argument '%s'\nTry 'dynembd --help'.\n", argv[optind]);
		return 2;
	}

	if (file) {
		struct stat st;
		if (stat(file, &st) == 0 && !S_ISREG(st.st_mode)) {
			/* fopen succeeds on a directory and ini_parse then reads it as empty */
			fprintf(stderr, "dynembd: %s: not a regular file\n", file);
			return 2;
		}
		x = (struct ini_ctx){ .cfg = c };
		line = ini_parse(file, on_ini_key, &x);
		if (line < 0) {
			fprintf(stderr, "dynembd: %s: cannot read the config file\n", file);
			return 2;
		}
		if (line > 0) {
			fprintf(stderr, "dynembd: %s:%d: %s\n", file, line,
				x.failed ? x.err : "syntax error");
			return 2;
		}
		if (srv_ns_finish(&c->ns, x.err, sizeof x.err)) {
			fprintf(stderr, "dynembd: %s: %s\n", file, x.err);
			return 2;
		}
	}

	/* Pass 2: the flags that set keys, in order. */
	optind = 0;
	while ((o = getopt_long(argc, argv, shortopts, opts, NULL)) != -1) {
		const char *section, *key;
		char e[400];
		if (o == 'f')
			c->foreground = true;
		else if (o == O_PRINT)
			c->print_config = true;
		else if (o == O_SALVAGE)
			c->recover_from_wal = true;
		else if (flag_key(o, &section, &key) && set_key(c, section, key, optarg, e, sizeof e)) {
			fprintf(stderr, "dynembd: --%s: %s\n", flag_name(o), e);
			return 2;
		}
	}
	char pe[600];
	if (peers_finish(c, pe, sizeof pe)) {
		fprintf(stderr, "dynembd: %s\n", pe);
		return 2;
	}
	if (c->data_bytes > c->max_data_bytes) {
		fprintf(stderr, "dynembd: data_bytes (%" PRIu64 ") is above max_data_bytes (%" PRIu64 ")\n",
			c->data_bytes, c->max_data_bytes);
		return 2;
	}
	return 0;
}

static void print_ids(FILE *f, const unsigned *ids, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		fprintf(f, "%s%u", i ? "," : "", ids[i]);
	fputc('\n', f);
}

void srv_config_print(const struct srv_config *c, FILE *f)
{
	fprintf(f, "[server]\nsocket = %s\nworkers = %u\npoll_us = %u\nmax_batch = %u\n"
		   "sq_entries = %u\ndata_bytes = %" PRIu64 "\nmax_data_bytes = %" PRIu64 "\n",
		c->socket, c->workers, c->poll_us, c->max_batch, c->sq_entries, c->data_bytes,
		c->max_data_bytes);
	fprintf(f, "allow_uids = ");
	print_ids(f, c->allow_uids, c->n_uids);
	fprintf(f, "allow_gids = ");
	print_ids(f, c->allow_gids, c->n_gids);
	fprintf(f, "hello_timeout_ms = %u\nmax_connections_per_uid = %u\n", c->hello_timeout_ms,
		c->max_conn_per_uid);
	fprintf(f, "[pages]\nmode = %s\n",
		c->pages == DE_PAGES_AUTO ? "auto" : de_pages_name(c->pages));
	if (c->numa_node == DE_NUMA_AUTO)
		fprintf(f, "numa_node = auto\n");
	else if (c->numa_node == DE_NUMA_NONE)
		fprintf(f, "numa_node = none\n");
	else
		fprintf(f, "numa_node = %d\n", c->numa_node);
	fprintf(f, "segment_bytes = %" PRIu64 "\nreserve_bytes = %" PRIu64 "\n", c->segment_bytes,
		c->reserve_bytes);
	fprintf(f, "[memory]\nhost_budget_bytes = %" PRIu64 "\ntier_dir = %s\n"
		   "[quota]\nuid_tables = %u\nhost_tables = %u\nuid_bytes = %" PRIu64
		   "\nhost_bytes = %" PRIu64 "\ntable_bytes = %" PRIu64 "\n"
		   "[learn]\ntopk_threads = %u\ntopk_max_cost = %" PRIu64 "\nsampler_rebuild_ms = %u\n",
		c->host_budget_bytes, c->tier_dir, c->quota_uid_tables, c->quota_host_tables,
		c->quota_uid_bytes, c->quota_host_bytes, c->quota_table_bytes, c->topk_threads,
		c->topk_max_cost,
		c->sampler_rebuild_ms);
	fprintf(f, "[persistence]\ndata_dir = %s\nsnapshot_interval_s = %u\n"
		   "wal_segment_bytes = %" PRIu64 "\nexport_dir = %s\n",
		c->data_dir, c->snapshot_interval_s, c->wal_segment_bytes, c->export_dir);
	fprintf(f, "[serving]\ngrace_ms = %u\n", c->serve_grace_ms);
	fprintf(f, "[log]\nlevel = %s\nformat = %s\n", srv_log_level_name(c->log_level),
		srv_log_format_name(c->log_format));
	char addr[80];
	srv_config_metrics_addr(c, addr, sizeof addr);
	fprintf(f, "[metrics]\nlisten = %s\n", addr);
	fprintf(f, "[peers]\nmembers =");
	for (unsigned i = 0; i < c->peers.n; i++) {
		const struct de_peer_member *m = &c->peers.m[i];
		fprintf(f, strchr(m->host, ':') ? "%s%s=[%s]:%u*%g" : "%s%s=%s:%u*%g", i ? "," : " ",
			m->name, m->host, m->port, m->weight);
	}
	fprintf(f, "\nself = %s\nsecret_file = %s\nlisten = %s\ntimeout_ms = %u\nthreads = %u\n"
		   "sharded = %s\n", c->peers.n ? c->peers.m[c->peer_self].name : "",
		c->peer_secret_file, c->peer_listen_text, c->peer_timeout_ms, c->peer_threads,
		c->peer_sharded);
	srv_ns_print(&c->ns, f);
}
