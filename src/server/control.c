/*
 * control.c — dynembd's control plane: one epoll thread for the listener, every client
 * socket, the signal fd and the workers' release eventfd.
 *
 * Per connection (SOCK_SEQPACKET, non-blocking; one request at a time, see proto.h):
 *   0. At accept, before it costs more than an fd (accept_all): SO_PEERCRED against the
 *      allow-list (only listed uids/gids: not root, not the daemon's own user, which
 *      could otherwise reach other clients' channels), the uid's open connections
 *      against max_connections_per_uid, and all of them against SRV_MAX_CONNECTIONS. A
 *      refusal is an ERROR (-EACCES, -EUSERS, -EBUSY; seq 0, the client takes it as the
 *      reply to its HELLO) and close at once: counted, and logged at most once a second
 *      per kind. The backlog always drains, so no uid can hold the listener.
 *   1. HELLO must come first (anything else: ERROR -EPROTO, close), within
 *      hello_timeout_ms of the accept (else ERROR -ETIMEDOUT, close: sweep_hello). Then
 *      the version (-EPROTO). Then a channel with the clamped sizes goes to the worker
 *      with the fewest channels (all full: -EBUSY) and its fd goes back with HELLO_OK.
 *   2. OPEN: name, table config and learning config (optimizer, admission, eviction,
 *      durability) checked, then the client's rights on the name (authz.h: open for a
 *      table that exists, create for a new name; -EACCES before anything else says
 *      whether a table exists), the registry finds or creates the table (a new one is
 *      owned by the client's uid), OPEN_OK carries read-only fds of its arena segments,
 *      and the client's rights on the table go with it to the worker (writes need the
 *      write right). SEGMENTS: fds from `first` on.
 *   3. Every message is checked (magic, version, type, exact length for its type) before
 *      anything reads its body (srv_check_msg, validate.h, side-effect free:
 *      tests/fuzz/fuzz_control.c drives it); a malformed one gets ERROR -EBADMSG and the
 *      connection is closed. Fds a client sends are closed unread. Replies (reply.h)
 *      never block: a client whose socket buffer is full is closed.
 *   4. SNAPSHOT, EXPORT, IMPORT: the right of that name on the table is checked first
 *      (-EACCES, the same whether or not the table exists; a snapshot of every table
 *      needs the snapshot right on each), then a persistence job replies
 *      (persist_jobs.c), touching files with the client's uid and gid.
 *   5. DROP: control_drop.c (a table no connection has open, or with the force flag one
 *      whose handles it revokes; rights, then the catalog).
 *   6. STATUS, TABLES, STATS_BY_NAME, EVICT, LOG_LEVEL, OPSTATS: control_query.c (the
 *      operator's view; rights as OPEN decides them).
 *   7. SERVE_LOAD, SERVE_OPEN: control_serve.c (serving tables; an OPEN of a serving
 *      name or of one of its versions is refused there: srv_serving_open_check).
 * Hang-up: the socket is closed at once; the client's channel stays until its worker
 * released it (see worker.h), then the reaper destroys it.
 *
 * Opening a table is this layer's sequence, for OPEN and for the catalog's tables at
 * startup (srv_control_recover): registry open -> learning attach (a new table; on
 * failure the registry discards it) -> persistence open. The layers below never call
 * each other for it.
 *
 * Owns: the listener (and the socket file), client sockets, struct srv_client memory.
 */
#include "control.h"
#include "control_int.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "authz.h"
#include "learnops.h"
#include "log.h"
#include "persist.h"
#include "reply.h"
#include "util.h"
#include "validate.h"
#include "worker.h"

/* The fields that name a connection in a log line. */
#define CLIENT_FIELDS(c) SRV_F_UINT("client", (c)->id), SRV_F_INT("pid", (c)->pid), \
	SRV_F_UINT("uid", (c)->uid)

#define EV_LISTEN 1u
#define EV_SIGNAL 2u
#define EV_RELEASE 3u
#define ACCEPT_BATCH 256u /* accepts per event: a connect flood cannot starve the rest */
#define SWEEP_MS 50       /* how often connections without HELLO are looked at */
#define LISTEN_BACKLOG 1024

/* Connections turned away of one kind: counted, logged at most once a second with the
 * number of lines left out (a flood must not flood the log). */
struct refusals {
	uint64_t n, quiet;
	int64_t last_ms;
};

struct ctl {
	struct srv_server *s;
	int ep, listen_fd, sig_fd;
	struct srv_client *clients;
	unsigned nconn;
	unsigned npending;        /* open connections that have not sent HELLO yet */
	unsigned next_id;
	int64_t next_sweep_ms;
	struct refusals denied, uid_full, no_hello, full;
	bool stopping;
};

static int64_t now_ms(void) { return (int64_t)(srv_mono_ns() / 1000000); }

/* ---- listener ---------------------------------------------------------------------- */

/* mkdir -p the directory that holds path (nothing for a bare name or one under /) */
static int mkdirs(const char *path)
{
	char buf[sizeof ((struct sockaddr_un *)0)->sun_path];
	snprintf(buf, sizeof buf, "%s", path);
	char *slash = strrchr(buf, '/');
	if (!slash || slash == buf)
		return 0;
	*slash = 0;
	return srv_mkdir_p(buf, 0755);
}

int srv_listen(const char *path, int *out_fd)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof sa.sun_path)
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	int err = mkdirs(path);
	if (err) {
		srv_logf(SRV_LOG_ERROR, SRV_KV(SRV_F_PATH(path), SRV_F_ERRNO(err)),
			 "cannot create the directory of %s: %s", path, strerror(-err));
		return err;
	}
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	struct stat st;
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			srv_logf(SRV_LOG_ERROR, SRV_KV(SRV_F_PATH(path)), "%s exists and is not a socket",
				 path);
			close(fd);
			return -EEXIST;
		}
		/* A stale socket refuses connections; a live one means another daemon. */
		int probe = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
		if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof sa) == 0) {
			close(probe);
			close(fd);
			srv_logf(SRV_LOG_ERROR, SRV_KV(SRV_F_PATH(path)), "another dynembd is serving %s",
				 path);
			return -EADDRINUSE;
		}
		if (probe >= 0)
			close(probe);
		unlink(path);
	}
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) || chmod(path, 0666) || listen(fd, LISTEN_BACKLOG)) {
		err = -errno;
		srv_logf(SRV_LOG_ERROR, SRV_KV(SRV_F_PATH(path), SRV_F_ERRNO(err)),
			 "cannot listen on %s: %s", path, strerror(-err));
		close(fd);
		return err;
	}
	*out_fd = fd;
	return 0;
}

/* ---- replies ----------------------------------------------------------------------- */

__attribute__((format(printf, 4, 5)))
static void send_error(struct srv_client *c, uint32_t seq, int err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	srv_reply_verror(c->sock, seq, err, 0, fmt, ap); /* never blocks */
	va_end(ap);
}

/* ---- clients ------------------------------------------------------------------------ */

static void client_free(struct ctl *x, struct srv_client *c)
{
	for (struct srv_client **p = &x->clients; *p; p = &(*p)->next)
		if (*p == c) {
			*p = c->next;
			break;
		}
	if (c->sock >= 0)
		close(c->sock);
	if (c->sock >= 0 && !c->hello_done)
		x->npending--;
	if (c->w)
		__atomic_fetch_sub(&c->w->nclients, 1, __ATOMIC_RELAXED); /* /metrics reads it */
	for (uint32_t i = 0; i < c->ntables; i++) /* its worker let go: a DROP may free them */
		if (c->tables[i]) /* NULL: revoked by a forced DROP, which took its ref */
			c->tables[i]->refs--;
	de_channel_destroy(c->ch);
	free(c);
	x->nconn--;
}

/* Close the socket; the client's memory goes once its worker (if any) released it. */
static void client_close(struct ctl *x, struct srv_client *c, const char *why)
{
	if (c->sock >= 0) {
		epoll_ctl(x->ep, EPOLL_CTL_DEL, c->sock, NULL);
		close(c->sock);
		c->sock = -1;
		if (!c->hello_done)
			x->npending--;
		if (why)
			srv_logf(SRV_LOG_INFO, SRV_KV(CLIENT_FIELDS(c)), "client %u (pid %d uid %u) %s",
				 c->id, (int)c->pid, (unsigned)c->uid, why);
	}
	if (!c->w) {
		client_free(x, c);
		return;
	}
	/* release: pairs with the worker's acquire in take_mail */
	__atomic_store_n(&c->want_remove, 1, __ATOMIC_RELEASE);
	srv_worker_kick(c->w);
}

/* Free every client a worker has released; close those that broke their channel. */
static void reap_released(struct ctl *x)
{
	uint64_t v;
	ssize_t r = read(x->s->release_fd, &v, sizeof v);
	(void)r;
	for (struct srv_client *c = x->clients, *n; c; c = n) {
		n = c->next;
		/* acquire: pairs with the release in the worker's release() */
		if (!__atomic_load_n(&c->released, __ATOMIC_ACQUIRE))
			continue;
		if (c->broken && c->sock >= 0)
			srv_logf(SRV_LOG_WARN, SRV_KV(CLIENT_FIELDS(c)),
				 "client %u (pid %d uid %u) broke its ring: closed", c->id, (int)c->pid,
				 (unsigned)c->uid);
		if (c->sock >= 0) {
			epoll_ctl(x->ep, EPOLL_CTL_DEL, c->sock, NULL);
			close(c->sock);
			c->sock = -1; /* released by a worker: HELLO was done */
		}
		client_free(x, c);
	}
	srv_control_drop_retry(x->s, x->clients); /* DROPs that waited for these */
}

/* Count one refusal of kind r; log it (fmt) unless one was logged less than a second ago. */
__attribute__((format(printf, 3, 4)))
static void refused(struct refusals *r, int64_t now, const char *fmt, ...)
{
	r->n++;
	if (r->last_ms && now - r->last_ms < 1000) {
		r->quiet++;
		return;
	}
	char line[300];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	if (r->quiet)
		srv_log(SRV_LOG_WARN, "%s (%llu refused so far; %llu more in the last second not "
			"logged)", line, (unsigned long long)r->n, (unsigned long long)r->quiet);
	else
		srv_log(SRV_LOG_WARN, "%s (%llu refused so far)", line, (unsigned long long)r->n);
	r->quiet = 0;
	r->last_ms = now;
}

/* The allow-list is the whole rule: no uid is allowed without being listed (by uid, or
 * by its primary gid), not root and not the daemon's own user. */
static bool allowed(const struct srv_config *cfg, uid_t uid, gid_t gid)
{
	for (unsigned i = 0; i < cfg->n_uids; i++)
		if (cfg->allow_uids[i] == uid)
			return true;
	for (unsigned i = 0; i < cfg->n_gids; i++)
		if (cfg->allow_gids[i] == gid)
			return true;
	return false;
}

static unsigned conns_of(const struct ctl *x, uid_t uid)
{
	unsigned n = 0;
	for (const struct srv_client *c = x->clients; c; c = c->next)
		n += c->sock >= 0 && c->uid == uid && !c->internal;
	return n;
}

/* Refuse the connection on fd at once: its reason as an ERROR for whatever request comes
 * (seq 0: the client takes it as the reply to its HELLO), then close. Never blocks.
 * Closing a unix socket with unread packets sets ECONNRESET on the peer, which its next
 * recv reports before the ERROR: so shut it (nothing more can come) and drain it first. */
__attribute__((format(printf, 3, 4)))
static void turn_away(int fd, int err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	srv_reply_verror(fd, 0, err, 0, fmt, ap);
	va_end(ap);
	shutdown(fd, SHUT_RDWR);
	char b[64];
	for (int i = 0; i < 64 && recv(fd, b, sizeof b, MSG_DONTWAIT) > 0; i++)
		;
	close(fd);
}

/*
 * Accept what waits, at most ACCEPT_BATCH (the listener stays readable: epoll comes back).
 * Every connection is decided here, before it costs more than an fd: its SO_PEERCRED
 * against the allow-list (-EACCES), its uid's open connections against
 * max_connections_per_uid (-EUSERS), all of them against SRV_MAX_CONNECTIONS (-EBUSY).
 * A refused one is closed at once, so the backlog always drains and no uid can hold
 * more than its share; a kept one has hello_timeout_ms to send HELLO (sweep_hello).
 */
static void accept_all(struct ctl *x)
{
	const struct srv_config *cfg = &x->s->cfg;
	for (unsigned k = 0; k < ACCEPT_BATCH; k++) {
		int fd = accept4(x->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				srv_log(SRV_LOG_WARN, "accept: %s", strerror(errno));
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			return;
		}
		int64_t now = now_ms();
		struct ucred cr;
		socklen_t crl = sizeof cr;
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &crl) != 0) {
			refused(&x->full, now, "refused a connection: SO_PEERCRED: %s", strerror(errno));
			close(fd);
			continue;
		}
		/* this daemon's own peer layer (peers.h) connects through its socket too */
		bool internal = cr.pid == getpid();
		if (!internal && !allowed(cfg, cr.uid, cr.gid)) {
			refused(&x->denied, now, "denied pid %d uid %u gid %u: not in allow_uids / "
				"allow_gids", (int)cr.pid, (unsigned)cr.uid, (unsigned)cr.gid);
			turn_away(fd, -EACCES, "uid %u gid %u is not allowed to use dynembd "
				  "(allow_uids / allow_gids)", (unsigned)cr.uid, (unsigned)cr.gid);
			continue;
		}
		if (x->nconn >= SRV_MAX_CONNECTIONS) {
			refused(&x->full, now, "refused pid %d uid %u: %u connections open, the most "
				"dynembd takes", (int)cr.pid, (unsigned)cr.uid, SRV_MAX_CONNECTIONS);
			turn_away(fd, -EBUSY, "dynembd has %u connections open, the most it takes",
				  SRV_MAX_CONNECTIONS);
			continue;
		}
		unsigned held = conns_of(x, cr.uid);
		if (!internal && held >= cfg->max_conn_per_uid) {
			refused(&x->uid_full, now, "refused pid %d uid %u: it holds %u connections "
				"(max_connections_per_uid)", (int)cr.pid, (unsigned)cr.uid, held);
			turn_away(fd, -EUSERS, "uid %u holds %u connections, the most one uid may "
				  "(max_connections_per_uid = %u)", (unsigned)cr.uid, held,
				  cfg->max_conn_per_uid);
			continue;
		}
		struct srv_client *c = calloc(1, sizeof *c);
		if (!c) {
			refused(&x->full, now, "refused a connection: out of memory");
			close(fd);
			continue;
		}
		c->id = ++x->next_id;
		c->sock = fd;
		c->pid = cr.pid;
		c->uid = cr.uid;
		c->internal = internal;
		c->gid = cr.gid;
		c->accepted_ms = now;
		struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP, .data.ptr = c };
		if (epoll_ctl(x->ep, EPOLL_CTL_ADD, fd, &ev)) {
			close(fd);
			free(c);
			continue;
		}
		c->next = x->clients;
		x->clients = c;
		x->nconn++;
		x->npending++;
		srv_logf(SRV_LOG_INFO, SRV_KV(CLIENT_FIELDS(c)), "client %u (pid %d uid %u) connected",
			 c->id, (int)c->pid, (unsigned)c->uid);
	}
}

/* Close every connection that sent no HELLO within hello_timeout_ms. */
static void sweep_hello(struct ctl *x, int64_t now)
{
	unsigned limit = x->s->cfg.hello_timeout_ms;
	for (struct srv_client *c = x->clients, *n; c && x->npending; c = n) {
		n = c->next;
		if (c->sock < 0 || c->hello_done || now - c->accepted_ms < limit)
			continue;
		refused(&x->no_hello, now, "client %u (pid %d uid %u) sent no HELLO within %u ms "
			"(hello_timeout_ms): closed", c->id, (int)c->pid, (unsigned)c->uid, limit);
		send_error(c, 0, -ETIMEDOUT, "no HELLO within %u ms (hello_timeout_ms): closed", limit);
		client_close(x, c, NULL);
	}
}

static uint32_t clamp_entries(uint32_t want, uint32_t dflt)
{
	uint32_t v = want ? want : dflt;
	if (v > DE_CHANNEL_MAX_ENTRIES)
		v = DE_CHANNEL_MAX_ENTRIES;
	uint32_t p = 2;
	while (p < v)
		p <<= 1;
	return p;
}

/* Returns false when the connection must be closed. */
static bool on_hello(struct ctl *x, struct srv_client *c, const struct de_msg_hello *m)
{
	const struct srv_config *cfg = &x->s->cfg;
	/* SO_PEERCRED was checked against the allow-list at accept */
	if (m->h.version != DE_PROTO_VERSION) {
		srv_log(SRV_LOG_WARN, "client %u: protocol version %u, not %u: closing", c->id,
			m->h.version, DE_PROTO_VERSION);
		send_error(c, m->h.seq, -EPROTO, "protocol version %u; this dynembd speaks %u",
			   m->h.version, DE_PROTO_VERSION);
		return false;
	}
	for (unsigned i = 0; i < DE_NAME_MAX - 1 && m->name[i]; i++)
		c->name[i] = (m->name[i] >= 0x20 && m->name[i] < 0x7f) ? m->name[i] : '?';

	struct srv_worker *best = NULL;
	for (unsigned i = 0; i < x->s->nworkers; i++) {
		struct srv_worker *w = &x->s->workers[i];
		if (w->nclients < SRV_MAX_CLIENTS_PER_WORKER && (!best || w->nclients < best->nclients))
			best = w;
	}
	if (!best) {
		send_error(c, m->h.seq, -EBUSY, "every worker serves %u channels already",
			   SRV_MAX_CLIENTS_PER_WORKER);
		return false;
	}
	uint64_t data = m->data_bytes ? m->data_bytes : cfg->data_bytes;
	if (data > cfg->max_data_bytes)
		data = cfg->max_data_bytes;
	data = (data + 4095) & ~4095ull;
	struct de_channel_config cc = { .sq_entries = clamp_entries(m->sq_entries, cfg->sq_entries),
					.data_bytes = data };
	cc.cq_entries = 2 * cc.sq_entries;
	int err = de_channel_create(&cc, &c->ch);
	if (err) {
		send_error(c, m->h.seq, err, "cannot create a channel: %s", strerror(-err));
		return false;
	}
	struct de_msg_hello_ok ok;
	memset(&ok, 0, sizeof ok);
	srv_reply_hdr(&ok.h, DE_MSG_HELLO_OK, sizeof ok, m->h.seq);
	ok.client_id = c->id;
	ok.sq_entries = cc.sq_entries;
	ok.cq_entries = cc.cq_entries;
	ok.max_batch = cfg->max_batch;
	ok.data_bytes = cc.data_bytes;
	ok.capabilities = DE_CAP_APPLY_GRADS | DE_CAP_ADMISSION | DE_CAP_EVICTION | DE_CAP_SAMPLE |
			  DE_CAP_TOPK | DE_CAP_KEY_STRINGS | DE_CAP_SNAPSHOT | DE_CAP_EXPORT_IMPORT |
			  DE_CAP_DROP | DE_CAP_DROP_FORCE | DE_CAP_QUERY | DE_CAP_OPSTATS | DE_CAP_SERVING |
			  (cfg->data_dir[0] ? DE_CAP_PERSISTENCE : 0) |
			  (cfg->export_dir[0] ? DE_CAP_EXPORT_DIR : 0) |
			  (cfg->tier_dir[0] ? DE_CAP_DISK_TIER : 0);
	int fd = de_channel_fd(c->ch);
	if (srv_reply_send(c->sock, &ok, sizeof ok, &fd, 1, 0)) {
		de_channel_destroy(c->ch);
		c->ch = NULL;
		return false;
	}
	c->hello_done = true;
	x->npending--;
	c->w = best;
	__atomic_fetch_add(&best->nclients, 1, __ATOMIC_RELAXED);
	pthread_mutex_lock(&best->mu);
	best->mail[best->nmail++] = c;
	pthread_mutex_unlock(&best->mu);
	srv_worker_kick(best);
	srv_logf(SRV_LOG_INFO, SRV_KV(CLIENT_FIELDS(c), SRV_F_STR("name", c->name),
				      SRV_F_UINT("worker", best->idx)),
		 "client %u (pid %d uid %u) '%s': channel sq %u data %llu on worker %u", c->id, (int)c->pid, (unsigned)c->uid, c->name, cc.sq_entries,
		(unsigned long long)cc.data_bytes, best->idx);
	return true;
}

/* Send fds of segments first.. (at most DE_FDS_PER_MSG) with a reply. */
int srv_control_send_segments(struct srv_client *c, struct srv_table *t, const void *msg,
			       size_t len, uint32_t first, uint32_t count)
{
	int fds[DE_FDS_PER_MSG];
	unsigned n = 0;
	int err = 0;
	for (; n < count; n++) {
		fds[n] = de_arena_segment_fd(t->arena, first + n, true);
		if (fds[n] < 0) {
			err = fds[n];
			break;
		}
	}
	if (!err)
		err = srv_reply_send(c->sock, msg, len, fds, n, 0);
	for (unsigned i = 0; i < n; i++)
		close(fds[i]);
	return err;
}

/* Find or create a table: registry, then (a new table) learning, whose failure undoes
 * the creation. Persistence is the caller's next step. */
static int open_table(struct srv_server *s, uid_t uid, bool recovered, const char *name,
		      const struct de_wire_table_config *cfg,
		      const struct de_wire_learn_config *learn, struct srv_table **out,
		      bool *created, char *msg, size_t cap)
{
	int err = srv_registry_open(&s->reg, uid, recovered, name, cfg, learn, out, created, msg,
				    cap);
	if (err || !*created)
		return err;
	/* last step of creating it: once the evictor holds the table nothing may fail */
	err = srv_learn_table_attach(s->learn, *out, msg, cap);
	if (err) {
		srv_registry_discard(&s->reg, *out);
		*out = NULL;
		*created = false;
	}
	return err;
}

int srv_control_recover(struct srv_server *s)
{
	const struct srv_catalog_entry *cat;
	unsigned n = srv_persist_catalog(s->persist, &cat);
	for (unsigned i = 0; i < n; i++) {
		char msg[240];
		struct srv_table *t;
		bool created;
		/* charged to its creator (a version 1 catalog: the daemon's euid) */
		int err = open_table(s, cat[i].owner, true, cat[i].name, &cat[i].cfg,
				     &cat[i].learn, &t, &created, msg, sizeof msg);
		if (!err) {
			t->owner = cat[i].owner;
			err = srv_persist_adopt(s->persist, t, &cat[i]);
		}
		if (err) {
			srv_logf(SRV_LOG_ERROR, SRV_KV(SRV_F_TABLE(cat[i].name),
						       SRV_F_PATH(s->cfg.data_dir), SRV_F_ERRNO(err)),
				 "persistence: cannot recreate table '%s' of %s/CATALOG: %s", cat[i].name, s->cfg.data_dir, err == -ENOMEM ? "out of memory" : msg);
			return 1;
		}
	}
	int status = srv_persist_recover(s->persist);
	if (!status) /* a row in the recovered table is newer than its tier copy */
		srv_learn_recovered(s->learn);
	return status;
}

/* m: checked by srv_check_msg (name valid, config normalized). */
static bool on_open(struct ctl *x, struct srv_client *c, const struct de_msg_open *m)
{
	char msg[240];
	const char *name = m->name;
	const struct de_wire_table_config cfg = m->cfg;
	const struct de_wire_learn_config learn = m->learn;
	struct srv_table *t = srv_registry_find(&x->s->reg, name);
	bool created;
	/* rights first: a refusal must not depend on whether the table exists */
	unsigned rights = srv_authz_rights(&x->s->cfg, c->uid, c->gid, name, t != NULL,
					   t ? t->owner : 0);
	if (c->internal) /* the peer layer acts for other members' clients (peers.h) */
		rights = SRV_RIGHTS_ALL;
	/* A new name needs create; a caller with neither open nor create hears about open
	 * whether or not the table exists (one with either may learn the name is free). */
	enum srv_right need = SRV_RIGHT_OPEN;
	if (!t && (rights & (SRV_RIGHT_BIT(SRV_RIGHT_CREATE) | SRV_RIGHT_BIT(SRV_RIGHT_OPEN))))
		need = SRV_RIGHT_CREATE;
	int err = srv_authz_need(&x->s->cfg, rights, need, c->uid, c->gid, name, msg, sizeof msg);
	if (err) {
		srv_logf(SRV_LOG_INFO, SRV_KV(CLIENT_FIELDS(c), SRV_F_TABLE(name), SRV_F_ERRNO(err)),
			 "client %u (uid %u): open '%s' refused: %s", c->id, (unsigned)c->uid, name,
			 msg);
		send_error(c, m->h.seq, err, "%s", msg);
		return true;
	}
	/* serving tables and their versions are opened with SERVE_OPEN only */
	if ((err = srv_serving_open_check(x->s, name, t, msg, sizeof msg))) {
		send_error(c, m->h.seq, err, "%s", msg);
		return true;
	}
	/* a new table its persistence would refuse is never created */
	if (!t && (err = srv_persist_table_admit(x->s->persist, name, learn.durability.mode, msg,
						 sizeof msg))) {
		srv_logf(SRV_LOG_INFO, SRV_KV(CLIENT_FIELDS(c), SRV_F_TABLE(name), SRV_F_ERRNO(err)),
			 "client %u: open '%s': %s", c->id, name, msg);
		send_error(c, m->h.seq, err, "%s", msg);
		return true;
	}
	srv_registry_lock(&x->s->reg); /* a new table's layers attach unseen by /metrics */
	err = open_table(x->s, c->uid, false, name, &cfg, &learn, &t, &created, msg, sizeof msg);
	if (!err && created) { /* the creator owns it (before the catalog records it) */
		t->owner = c->uid;
		rights = srv_authz_rights(&x->s->cfg, c->uid, c->gid, name, true, t->owner);
		if (c->internal)
			rights = SRV_RIGHTS_ALL;
	}
	if (!err) /* durability: catalog entry and first snapshot */
		err = srv_persist_table_open(x->s->persist, t, msg, sizeof msg);
	if (err && created) { /* its catalog entry could not be written: no client saw it */
		srv_learn_table_evict_leave(t);
		srv_learn_table_detach(x->s->learn, t);
		srv_registry_discard(&x->s->reg, t);
	}
	srv_registry_unlock(&x->s->reg);
	if (err) {
		srv_logf(SRV_LOG_INFO, SRV_KV(CLIENT_FIELDS(c), SRV_F_TABLE(name), SRV_F_ERRNO(err)),
			 "client %u: open '%s': %s", c->id, name, msg);
		send_error(c, m->h.seq, err, "%s", msg);
		return true;
	}
	uint32_t id, nt = c->ntables;
	for (id = 0; id < nt && c->tables[id] != t; id++)
		;
	if (id == nt) {
		if (nt == SRV_MAX_TABLES_PER_CLIENT) {
			send_error(c, m->h.seq, -EMFILE, "a connection opens at most %u tables",
				   SRV_MAX_TABLES_PER_CLIENT);
			return true;
		}
		c->tables[nt] = t;
		c->rights[nt] = (uint8_t)rights;
		t->refs++;
		/* release: publishes tables[nt] and rights[nt]; pairs with the acquire in the
		 * worker */
		__atomic_store_n(&c->ntables, nt + 1, __ATOMIC_RELEASE);
	}
	struct de_msg_open_ok ok;
	memset(&ok, 0, sizeof ok);
	srv_reply_hdr(&ok.h, DE_MSG_OPEN_OK, sizeof ok, m->h.seq);
	ok.table_id = (uint16_t)id;
	if (!c->internal && t->wcfg.key_type == DE_KEYS_INT64 && srv_config_sharded(&x->s->cfg, name))
		ok.flags = DE_OPEN_MISS_REMOTE; /* peers.h: a miss may be another host's key */
	ok.dim = t->wcfg.dim;
	ok.key_type = t->wcfg.key_type;
	ok.seed = t->wcfg.seed;
	ok.nsegments = de_arena_nsegments(t->arena);
	uint32_t n = ok.nsegments < DE_FDS_PER_MSG ? ok.nsegments : DE_FDS_PER_MSG;
	if (srv_control_send_segments(c, t, &ok, sizeof ok, 0, n))
		return false;
	srv_logf(SRV_LOG_INFO, SRV_KV(CLIENT_FIELDS(c), SRV_F_TABLE(name), SRV_F_UINT("dim", t->wcfg.dim)),
		 "client %u opened table '%s' dim %u%s optimizer %s (%s, id %u)",
		c->id, name, t->wcfg.dim, t->wcfg.key_type == DE_KEYS_STRING ? " string keys" : "",
		t->has_optim ? de_optim_name(t->optim.kind) : "none", created ? "new" : "shared", id);
	if (created)
		srv_logf(SRV_LOG_INFO, SRV_KV(SRV_F_TABLE(name)), "table '%s' memory: %s", name,
			 de_arena_pages_note(t->arena));
	return true;
}

static bool on_segments(struct srv_client *c, const struct de_msg_segments *m)
{
	uint32_t nt = c->ntables;
	if (m->table_id >= nt || m->pad) {
		send_error(c, m->h.seq, -EINVAL, "table id %u is not open on this connection",
			   m->table_id);
		return true;
	}
	struct srv_table *t = c->tables[m->table_id];
	if (!t) {
		send_error(c, m->h.seq, -EIDRM, "table id %u of this connection was dropped "
			   "(forced DROP by another connection): open it again", m->table_id);
		return true;
	}
	uint32_t nseg = de_arena_nsegments(t->arena);
	uint32_t count = m->first < nseg ? nseg - m->first : 0;
	if (count > DE_FDS_PER_MSG)
		count = DE_FDS_PER_MSG;
	struct de_msg_segments_ok ok;
	memset(&ok, 0, sizeof ok);
	srv_reply_hdr(&ok.h, DE_MSG_SEGMENTS_OK, sizeof ok, m->h.seq);
	ok.table_id = m->table_id;
	ok.first = m->first;
	ok.count = count;
	return srv_control_send_segments(c, t, &ok, sizeof ok, m->first, count) == 0;
}

/* SNAPSHOT / EXPORT / IMPORT: the client's right on the table, before anything looks at
 * whether it exists. false: refused (the ERROR is sent). */
static bool job_allowed(struct ctl *x, struct srv_client *c, const union srv_msg *m)
{
	const struct srv_config *cfg = &x->s->cfg;
	enum srv_right right = m->h.type == DE_MSG_SNAPSHOT ? SRV_RIGHT_SNAPSHOT
			       : m->h.type == DE_MSG_EXPORT ? SRV_RIGHT_EXPORT : SRV_RIGHT_IMPORT;
	const char *name = m->h.type == DE_MSG_SNAPSHOT ? m->snapshot.name
			   : m->h.type == DE_MSG_EXPORT ? m->exp.name : m->imp.name;
	char msg[240];
	int err = 0;
	if (name[0]) {
		const struct srv_table *t = srv_registry_find(&x->s->reg, name);
		unsigned r = srv_authz_rights(cfg, c->uid, c->gid, name, t != NULL, t ? t->owner : 0);
		err = srv_authz_need(cfg, r, right, c->uid, c->gid, name, msg, sizeof msg);
		if (!err && t && t->serve_version) { /* never persisted, freed by its switch */
			snprintf(msg, sizeof msg, "table '%s' is version %llu of serving table '%s' "
				 "(read-only, not persisted; its export file is the copy): no %s",
				 name, (unsigned long long)t->serve_version, t->serve_name,
				 srv_right_name(right));
			err = -EROFS;
		}
	} else if (c->uid != 0) { /* every table: the right on each (names stay unsaid) */
		for (const struct srv_table *t = x->s->reg.head; t && !err; t = t->next)
			if (!(srv_authz_rights(cfg, c->uid, c->gid, t->name, true, t->owner) &
			      SRV_RIGHT_BIT(SRV_RIGHT_SNAPSHOT))) {
				snprintf(msg, sizeof msg, "uid %u: a snapshot of every table needs the "
					 "snapshot right on each: name the table to snapshot",
					 (unsigned)c->uid);
				err = -EACCES;
			}
	}
	if (!err)
		return true;
	srv_logf(SRV_LOG_INFO, SRV_KV(CLIENT_FIELDS(c), SRV_F_STR("right", srv_right_name(right)),
				      SRV_F_ERRNO(err)),
		 "client %u (uid %u): %s refused: %s", c->id, (unsigned)c->uid,
		 srv_right_name(right), msg);
	send_error(c, m->h.seq, err, "%s", msg);
	return false;
}

/* Handle one received packet. Returns false when the connection must be closed. */
static bool on_message(struct ctl *x, struct srv_client *c, const void *buf, size_t n, bool trunc)
{
	union srv_msg m;
	char msg[240];
	int err = srv_check_msg(buf, n, trunc, c->hello_done, &m, msg, sizeof msg);
	if (err == -EBADMSG) {
		srv_log(SRV_LOG_WARN, "client %u: malformed message (%zu bytes, type %u): closing",
			c->id, n, m.h.type);
		send_error(c, m.h.seq, err, "%s", msg);
		return false;
	}
	if (err == -EPROTO) {
		if (!c->hello_done)
			srv_log(SRV_LOG_WARN, "client %u: message type %u before HELLO: closing", c->id,
				m.h.type);
		else if (m.h.type == DE_MSG_HELLO)
			srv_log(SRV_LOG_WARN, "client %u: HELLO twice: closing", c->id);
		send_error(c, m.h.seq, err, "%s", msg);
		return false;
	}
	if (err) { /* OPEN: bad name or config; SNAPSHOT/EXPORT/IMPORT: bad fields */
		send_error(c, m.h.seq, err, "%s", msg);
		return true;
	}
	switch (m.h.type) {
	case DE_MSG_HELLO:
		return on_hello(x, c, &m.hello);
	case DE_MSG_OPEN:
		return on_open(x, c, &m.open);
	case DE_MSG_SEGMENTS:
		return on_segments(c, &m.segments);
	case DE_MSG_STATUS:
	case DE_MSG_TABLES:
	case DE_MSG_STATS_BY_NAME:
	case DE_MSG_EVICT:
	case DE_MSG_LOG_LEVEL:
	case DE_MSG_OPSTATS: /* control_query.c */
		srv_control_query(x->s, x->clients, c, &m);
		return true;
	case DE_MSG_SERVE_LOAD: /* control_serve.c; its load thread replies */
		srv_serving_load(x->s, c, &m.serve_load);
		return true;
	case DE_MSG_SERVE_OPEN:
		return srv_serving_open(x->s, c, &m.serve_open);
	case DE_MSG_DROP: /* control_drop.c */
		srv_control_drop(x->s, x->clients, c, &m.drop);
		return true;
	case DE_MSG_SNAPSHOT:
	case DE_MSG_EXPORT:
	case DE_MSG_IMPORT: /* a job thread replies (persist_jobs.c) */
		if (job_allowed(x, c, &m))
			srv_persist_request(x->s->persist, &x->s->reg, c->id, c->uid, c->gid,
					    c->sock, &m);
		return true;
	default: /* BYE */
		return false;
	}
}

static void on_client(struct ctl *x, struct srv_client *c, uint32_t events)
{
	for (int i = 0; i < 16; i++) { /* bounded: one busy client cannot starve the others */
		union {
			uint64_t align;
			char b[DE_MSG_MAX];
		} buf;
		union {
			char b[CMSG_SPACE(sizeof(int) * 253)];
			struct cmsghdr align;
		} cbuf;
		struct iovec iov = { .iov_base = buf.b, .iov_len = sizeof buf.b };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.b,
				     .msg_controllen = sizeof cbuf.b };
		ssize_t r = recvmsg(c->sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		if (r < 0 && (errno == EAGAIN || errno == EINTR))
			break;
		/* Drop any fds the client sent: we never take them. */
		for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
			if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
				size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
				for (size_t j = 0; j < k; j++) {
					int fd;
					memcpy(&fd, CMSG_DATA(cm) + j * sizeof(int), sizeof fd);
					close(fd);
				}
			}
		if (r <= 0) {
			client_close(x, c, r == 0 ? "disconnected" : "failed: closed");
			return;
		}
		bool trunc = (mh.msg_flags & MSG_TRUNC) != 0;
		bool bye = !trunc && (size_t)r == sizeof(struct de_msg_hdr) &&
			   ((struct de_msg_hdr *)(void *)buf.b)->type == DE_MSG_BYE;
		if (!on_message(x, c, buf.b, (size_t)r, trunc)) {
			client_close(x, c, bye ? "said bye" : "closed");
			return;
		}
	}
	if (events & (EPOLLHUP | EPOLLERR | EPOLLRDHUP)) {
		/* the peer is gone; pending packets were read above (or will wake us again) */
		char b;
		if (recv(c->sock, &b, 1, MSG_DONTWAIT | MSG_PEEK) <= 0)
			client_close(x, c, "disconnected");
	}
}

int srv_control_run(struct srv_server *s, int listen_fd, int sig_fd)
{
	struct ctl x = { .s = s, .listen_fd = listen_fd, .sig_fd = sig_fd };
	x.ep = epoll_create1(EPOLL_CLOEXEC);
	if (x.ep < 0)
		return 1;
	struct epoll_event ev = { .events = EPOLLIN };
	ev.data.u64 = EV_LISTEN;
	epoll_ctl(x.ep, EPOLL_CTL_ADD, listen_fd, &ev);
	ev.data.u64 = EV_SIGNAL;
	epoll_ctl(x.ep, EPOLL_CTL_ADD, sig_fd, &ev);
	ev.data.u64 = EV_RELEASE;
	epoll_ctl(x.ep, EPOLL_CTL_ADD, s->release_fd, &ev);
	srv_log(SRV_LOG_INFO, "listening on %s (%u workers)", s->cfg.socket, s->nworkers);

	while (!x.stopping) {
		struct epoll_event evs[64];
		int timeout = srv_serving_next_ms(s); /* a superseded version's grace */
		if (x.npending && (timeout < 0 || timeout > SWEEP_MS))
			timeout = SWEEP_MS;
		int n = epoll_wait(x.ep, evs, 64, timeout);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			srv_log(SRV_LOG_ERROR, "epoll_wait: %s", strerror(errno));
			break;
		}
		/* Releases last: a client freed there may have an event in this batch. */
		bool released = false;
		for (int i = 0; i < n; i++) {
			uint64_t tag = evs[i].data.u64;
			if (tag == EV_RELEASE) {
				released = true;
				continue;
			}
			if (tag == EV_LISTEN) {
				accept_all(&x);
			} else if (tag == EV_SIGNAL) {
				struct signalfd_siginfo si;
				if (read(sig_fd, &si, sizeof si) == (ssize_t)sizeof si) {
					srv_log(SRV_LOG_INFO, "signal %u: finishing queued requests, then exiting",
						si.ssi_signo);
					x.stopping = true;
					/* release: load threads stop (control_serve.c) */
					__atomic_store_n(&s->stopping, 1, __ATOMIC_RELEASE);
				}
			} else {
				struct srv_client *c = evs[i].data.ptr;
				if (c->sock >= 0)
					on_client(&x, c, evs[i].events);
			}
		}
		if (released)
			reap_released(&x);
		srv_serving_poll(s, x.clients); /* loads that ended, versions to free */
		int64_t now = now_ms();
		if (x.npending && now >= x.next_sweep_ms) {
			sweep_hello(&x, now);
			x.next_sweep_ms = now + SWEEP_MS;
		}
	}
	srv_log(SRV_LOG_INFO, "connections refused: %llu not allowed, %llu over "
		"max_connections_per_uid, %llu without HELLO in time, %llu over the total",
		(unsigned long long)x.denied.n, (unsigned long long)x.uid_full.n,
		(unsigned long long)x.no_hello.n, (unsigned long long)x.full.n);
	/* Stop accepting, drain the workers, then let everything go. */
	epoll_ctl(x.ep, EPOLL_CTL_DEL, listen_fd, NULL);
	close(listen_fd);
	unlink(s->cfg.socket);
	__atomic_store_n(&s->stopping, 1, __ATOMIC_RELEASE);
	srv_serving_stop(s); /* joins the loads */
	srv_workers_stop(s);
	reap_released(&x);
	while (x.clients) /* not handed to any worker (no HELLO yet) */
		client_free(&x, x.clients);
	close(x.ep);
	srv_log(SRV_LOG_INFO, "stopped");
	return 0;
}
