/*
 * main.c — dynembd, the per-host dynemb daemon: configuration, NUMA placement, the
 * listener, worker threads, and the control loop until SIGTERM/SIGINT.
 *
 * Not dumpable (PR_SET_DUMPABLE 0, first thing): /proc/<pid>/fd, mem and ptrace are
 * closed to processes of the daemon's own uid (only CAP_SYS_PTRACE reaches them), so a
 * client with that uid cannot open other clients' channels or the tables writable.
 * (The fork of daemon() keeps the flag; core dumps are off with it.)
 * Large allocations always come from mmap (M_MMAP_THRESHOLD fixed at 128 KiB, which stops
 * glibc raising it after a big free): recovery reads a whole WAL segment (up to 64 MiB)
 * into one buffer, and without this the heap keeps that memory for the daemon's life
 * (measured after recovering a 30 MB segment: 34 MiB VmRSS, 12 MiB with it). A
 * MALLOC_MMAP_THRESHOLD_ in the environment still wins.
 * Order matters: signals are blocked (and taken through a signalfd) before any thread
 * exists, so no worker ever runs a handler; the socket is bound before detaching, so a
 * client may connect as soon as the parent returns; threads start after detaching.
 * Exit status: 0 after a clean stop, 1 when the daemon cannot start, 2 for bad config,
 * 3 (SRV_EXIT_CORRUPT) when the data_dir's catalog, manifest or a snapshot is damaged.
 * The top of the daemon's layers (server.h lists them): it builds each layer bottom-up
 * and frees them top-down.
 */
#include "server.h"

#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "config.h"
#include "control.h"
#include "learnops.h"
#include "log.h"
#include "metrics.h"
#include "peers.h"
#include "persist.h"
#include "quota.h"
#include "tables.h"
#include "util.h"
#include "worker.h"

/* The node arenas use and workers are pinned near: an OS index or DE_NUMA_NONE. */
static int resolve_node(struct srv_server *s)
{
	int want = s->cfg.numa_node;
	if (want == DE_NUMA_NONE)
		return DE_NUMA_NONE;
	if (want == DE_NUMA_AUTO) {
		int node;
		if (de_numa_choose_local(&node) != 0) {
			srv_log(SRV_LOG_INFO, "no NUMA topology: memory is not bound, workers not pinned");
			return DE_NUMA_NONE;
		}
		return node;
	}
	if (!s->topo || !hwloc_get_numanode_obj_by_os_index(s->topo, (unsigned)want)) {
		srv_logf(SRV_LOG_ERROR, SRV_KV(SRV_F_INT("numa_node", want)),
			 "numa_node %d: no such NUMA node on this machine", want);
		return -3;
	}
	return want;
}

static void log_evicted(void *ctx, struct srv_table *t, const uint64_t *keys, size_t n)
{
	srv_persist_evicted(ctx, t, keys, n);
}

static int log_flush(void *ctx)
{
	return srv_persist_flush(ctx);
}

static void checkpointed(void *ctx, struct srv_table *t)
{
	(void)ctx;
	srv_learn_save_table(t);
}

/* A start that failed after recovery began: everything made so far goes, in order. */
static int undo_start(struct srv_server *s, struct srv_quota *quota, int status)
{
	srv_persist_free(s->persist);
	srv_learn_host_destroy(s->learn);
	srv_registry_destroy(&s->reg);
	srv_quota_destroy(quota); /* after every table gave its charge back */
	if (s->topo)
		hwloc_topology_destroy(s->topo);
	return status;
}

int main(int argc, char **argv)
{
	struct srv_server s = { .release_fd = -1, .start_ns = srv_mono_ns() };
	if (!getenv("MALLOC_MMAP_THRESHOLD_"))
		mallopt(M_MMAP_THRESHOLD, 128 * 1024);
	int r = srv_config_load(&s.cfg, argc, argv);
	if (r)
		return r == 1 ? 0 : r;
	if (s.cfg.print_config) {
		srv_config_print(&s.cfg, stdout);
		return 0;
	}
	srv_log_set_level(s.cfg.log_level);
	srv_log_set_format(s.cfg.log_format);
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
		srv_logf(SRV_LOG_ERROR, SRV_KV(SRV_F_ERRNO(errno)), "prctl(PR_SET_DUMPABLE, 0): %s",
			 strerror(errno));
		return 1;
	}
	if (!s.cfg.n_uids && !s.cfg.n_gids)
		srv_log(SRV_LOG_WARN, "allow_uids and allow_gids are empty: no client can connect "
			"(list the users or groups that may, root and this daemon's own user too)");

	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	int sig_fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sig_fd < 0) {
		srv_logf(SRV_LOG_ERROR, SRV_KV(SRV_F_ERRNO(errno)), "signalfd: %s", strerror(errno));
		return 1;
	}

	if (hwloc_topology_init(&s.topo) || hwloc_topology_load(s.topo)) {
		srv_log(SRV_LOG_WARN, "hwloc cannot load the topology: workers not pinned");
		if (s.topo)
			hwloc_topology_destroy(s.topo);
		s.topo = NULL;
	}
	int node = resolve_node(&s);
	if (node == -3) {
		if (s.topo)
			hwloc_topology_destroy(s.topo);
		return 2;
	}
	srv_registry_init(&s.reg, s.cfg.pages, node, s.cfg.segment_bytes, s.cfg.reserve_bytes);
	const struct srv_quota_limits ql = { .host_bytes = s.cfg.quota_host_bytes,
					     .uid_bytes = s.cfg.quota_uid_bytes,
					     .host_tables = s.cfg.quota_host_tables,
					     .uid_tables = s.cfg.quota_uid_tables };
	struct srv_quota *quota;
	if (srv_quota_create(&ql, &quota)) {
		srv_log(SRV_LOG_ERROR, "out of memory");
		return 1;
	}
	srv_registry_set_quota(&s.reg, quota, s.cfg.quota_table_bytes);
	if (srv_learn_host_create(&s.cfg, &s.learn) != 0) {
		srv_log(SRV_LOG_ERROR, "cannot create the evictor");
		srv_quota_destroy(quota);
		if (s.topo)
			hwloc_topology_destroy(s.topo);
		return 1;
	}
	/* persistence: catalog tables recreated and recovered before anyone can connect */
	r = srv_persist_open(&s.cfg, &s.persist);
	if (!r)
		r = srv_control_recover(&s);
	if (r)
		return undo_start(&s, quota, r);

	int listen_fd;
	if (srv_listen(s.cfg.socket, &listen_fd))
		return undo_start(&s, quota, 1);
	struct srv_metrics *metrics; /* [metrics] listen: bound now, served once workers run */
	if (srv_metrics_bind(&s.cfg, &metrics)) {
		close(listen_fd);
		unlink(s.cfg.socket);
		return undo_start(&s, quota, 1);
	}
	if (!s.cfg.foreground && daemon(0, 1) != 0) {
		srv_logf(SRV_LOG_ERROR, SRV_KV(SRV_F_ERRNO(errno)), "cannot detach: %s",
			 strerror(errno));
		return 1;
	}
	int status = 1;
	s.release_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	/* eviction of persisted tables is logged from now on (learnops.h, persist.h) */
	const struct srv_learn_log lg = { .evicted = log_evicted, .flush = log_flush,
					  .ctx = s.persist };
	srv_persist_set_checkpoint_hook(s.persist, checkpointed, NULL); /* admission sketches */
	/* [peers]: the listener, before the workers (their forwarding pool uses it) */
	char pmsg[400] = "";
	int perr = srv_peers_start(&s.cfg, &s.peers, pmsg, sizeof pmsg);
	if (perr)
		srv_logf(SRV_LOG_ERROR, SRV_KV(SRV_F_ERRNO(-perr)), "cannot start the peers: %s",
			 pmsg);
	if (perr) {
		close(listen_fd);
		unlink(s.cfg.socket);
	} else if (s.release_fd < 0 || srv_persist_start(s.persist) != 0 ||
	    srv_learn_host_set_log(s.learn, &lg) != 0 || srv_workers_start(&s) != 0) {
		srv_log(SRV_LOG_ERROR, "cannot start the workers");
		srv_workers_stop(&s);
		close(listen_fd);
		unlink(s.cfg.socket);
	} else if (srv_metrics_start(metrics, &s) != 0) { /* logged */
		srv_workers_stop(&s);
		close(listen_fd);
		unlink(s.cfg.socket);
	} else {
		const char *pages = s.cfg.pages == DE_PAGES_AUTO ? "auto"
								 : de_pages_name(s.cfg.pages);
		srv_logf(SRV_LOG_INFO, SRV_KV(SRV_F_INT("pid", (int)getpid()),
					      SRV_F_STR("socket", s.cfg.socket),
					      SRV_F_STR("pages", pages), SRV_F_INT("numa_node", node),
					      SRV_F_UINT("workers", s.nworkers),
					      SRV_F_STR("data_dir", s.cfg.data_dir)),
			 "started: pid %d, pages %s, NUMA node %s%d, max_batch %u, poll_us %u",
			 (int)getpid(), pages, node < 0 ? "none/" : "", node, s.cfg.max_batch,
			 s.cfg.poll_us);
		status = srv_control_run(&s, listen_fd, sig_fd);
	}
	srv_metrics_free(metrics); /* a scrape reads the workers and the tables: first */
	srv_workers_free(&s);
	srv_peers_stop(s.peers); /* after the forwarding pool (in the workers) */
	s.peers = NULL;
	srv_learn_host_set_log(s.learn, NULL); /* the evictor stopped: nothing logs any more */
	srv_learn_save_all(s.learn);           /* admission sketches (clean shutdown) */
	srv_persist_free(s.persist); /* after the workers: jobs, shutdown checkpoint, WAL */
	srv_learn_host_destroy(s.learn); /* the evictor reads tables: before they go */
	s.learn = NULL;
	srv_registry_destroy(&s.reg);
	srv_quota_destroy(quota); /* after every table gave its charge back */
	if (s.release_fd >= 0)
		close(s.release_fd);
	close(sig_fd);
	if (s.topo)
		hwloc_topology_destroy(s.topo);
	return status;
}
