/*
 * config.h — PRIVATE to dynembd: the daemon's configuration (config.c), read once at
 * startup and then only read (by every layer above it). It depends on nothing of the
 * daemon but the log's level and format names (log.h); tests/test_daemon_learn.c drives
 * srv_config_load directly.
 */
#ifndef DE_SRV_CONFIG_H
#define DE_SRV_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "config_ns.h"
#include "de_peer.h"
#include "de_shm.h"

/* The version meson's project() gives (-DDYNEMB_VERSION on the daemon's library). */
#ifdef DYNEMB_VERSION
#define DYNEMBD_VERSION DYNEMB_VERSION
#else
#define DYNEMBD_VERSION "unknown"
#endif
#define SRV_MAX_IDS 64u                 /* entries in allow_uids / allow_gids */
#define SRV_MAX_WORKERS 64u
#define SRV_MAX_CONNECTIONS 4096u       /* open client sockets, all uids together */

struct srv_config {
	char socket[108];        /* sun_path */
	unsigned workers;
	unsigned poll_us;
	uint32_t max_batch;
	uint32_t sq_entries;     /* default for a HELLO that asks 0 */
	uint64_t data_bytes;     /* default channel data area */
	uint64_t max_data_bytes; /* most a HELLO may ask for */
	uid_t allow_uids[SRV_MAX_IDS];
	unsigned n_uids;
	gid_t allow_gids[SRV_MAX_IDS];
	unsigned n_gids;
	unsigned hello_timeout_ms; /* a connection without HELLO this long is closed */
	unsigned max_conn_per_uid; /* [server] max_connections_per_uid */
	int log_level;           /* [log] level (SRV_LOG_*, log.h); [server] log_level too */
	int log_format;          /* [log] format: SRV_LOG_LOGFMT or SRV_LOG_JSON */
	enum de_pages pages;
	int numa_node;           /* DE_NUMA_AUTO, DE_NUMA_NONE or an OS index */
	uint64_t segment_bytes;  /* first arena segment of a table */
	uint64_t reserve_bytes;  /* virtual space of a table's arena; 0 = libdeshm default */
	uint64_t host_budget_bytes; /* [memory]: all evicting tables together; 0 = none */
	char tier_dir[256];      /* [memory]: disk tier directory; "" = no disk tier */
	/* [quota] (quota.h): tables and mapped bytes per creating uid and for the host
	 * (0 = no limit); table_bytes: the memory of a table without an eviction budget */
	uint32_t quota_uid_tables, quota_host_tables;
	uint64_t quota_uid_bytes, quota_host_bytes, quota_table_bytes;
	unsigned topk_threads;   /* [learn]: threads of one top-k; 0 = online CPUs (<= 64) */
	uint64_t topk_max_cost;  /* [learn]: cap of one TOPK's queries x rows x dim (slowpool.h) */
	unsigned sampler_rebuild_ms; /* [learn]: log-uniform/unigram snapshot period; 0 = none */
	char data_dir[200];      /* [persistence]: WAL, snapshots, manifest, catalog; "" = off */
	unsigned snapshot_interval_s; /* [persistence]: checkpoint dirty tables; 0 = never */
	uint64_t wal_segment_bytes;   /* [persistence]: WAL segment size (64K..1G) */
	unsigned serve_grace_ms; /* [serving]: a superseded version's holders are revoked
	                            this long after the switch (control_serve.c) */
	char export_dir[200];    /* [persistence]: EXPORT/IMPORT paths must lie under it; "" = off */
	/* [metrics] listen: the Prometheus /metrics address (metrics.c); off when empty */
	bool metrics_on;
	struct sockaddr_storage metrics_addr; /* AF_INET or AF_INET6, port set */
	socklen_t metrics_addrlen;
	/* [peers] (peers.c): the dynembd of other hosts. On when members is set: then self,
	 * secret_file and a listen address are there too (checked at load) */
	struct de_peer_members peers;  /* n == 0: off */
	unsigned peer_self;            /* this daemon's index in peers */
	char peer_self_name[DE_PEER_NAME_MAX]; /* [peers] self, as given */
	char peer_secret_file[256];
	struct sockaddr_storage peer_listen; /* default: self's address */
	socklen_t peer_listen_len;
	char peer_listen_text[300];    /* as given ("" = self's host:port) */
	unsigned peer_timeout_ms;      /* a peer's answer, connect and handshake included */
	unsigned peer_threads;         /* the forwarding threads */
	char peer_sharded[1024];       /* tables sharded over the members: "*" or names */
	struct srv_namespaces ns; /* [namespace NAME] sections: who may do what to which
	                             tables (config_ns.h; authz.c decides) */
	bool foreground;
	bool print_config;
	bool recover_from_wal;   /* --recover-from-wal: start without a lost CATALOG/MANIFEST */
};

/* Defaults (the embedded config), then the file, then the flags.
 * Returns 0, 1 when the caller should exit 0 (--help, --version), or 2 after printing
 * an error to stderr (the exit status for bad configuration). */
int srv_config_load(struct srv_config *cfg, int argc, char **argv);
void srv_config_print(const struct srv_config *cfg, FILE *f);
/* Is the table of this name sharded over [peers] members (else host-local)? */
bool srv_config_sharded(const struct srv_config *cfg, const char *name);
/* [metrics] listen as "HOST:PORT" ("[V6]:PORT"), "" when off: for messages. */
void srv_config_metrics_addr(const struct srv_config *cfg, char *buf, size_t cap);

#endif /* DE_SRV_CONFIG_H */
