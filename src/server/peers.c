/*
 * peers.c — the peer layer (peers.h): the owner's listener and connection threads, and
 * the forwarding contexts the forwarding pool runs. The frames: src/peer/wire.c; the
 * handshake: src/peer/auth.c; the owner of a key: src/peer/members.c.
 *
 * Owner's side. One listener thread accepts TCP connections (at most MAX_CONNS at once);
 * each gets a thread that first runs the handshake as the responder (de_peer_auth,
 * within [peers] timeout_ms: a connection that does not authenticate, or whose peer is
 * not a member, is closed with a log line and never reads or writes a row), then reads
 * frames: OPEN opens the table through the thread's internal client (dynemb_open with
 * the config the requester sent, so a config that differs from this member's table is
 * refused with the field named, by the same check as a local client's OPEN); a batch
 * runs through it (dynemb_lookup, _update, _apply_gradients, _erase) and its reply goes
 * back. A frame that breaks the wire's rules closes that connection, with a log line,
 * and harms nothing else. An idle connection waits without a deadline; once a header
 * came, its payload must follow within timeout_ms.
 *
 * Forwarding side (srv_peer_forward, on a pool thread): the keys are copied out of the
 * data area once, their owners computed, and the batch split by owner keeping each
 * part in the caller's order (a stable counting sort), so duplicates of a key land in
 * one part in their order and a lookup's CREATED / FOUND statuses are those a single
 * host gives. Remote parts go out first, one frame each; the local part runs through
 * the internal client while they are in flight; then the replies are read and every
 * row put back at its caller's position. One connection per member per pool thread,
 * one request in flight on each: the pool's threads make several batches in flight per
 * member. A connection that fails (timeout, reset, a bad frame) is closed and the
 * member is retried after a backoff (BACKOFF_MIN_MS doubling to BACKOFF_MAX_MS) during
 * which its parts fail at once (-EHOSTDOWN), so a dead member costs each request at
 * most one timeout per backoff and the requests that do not touch it nothing.
 *
 * Never: trust a byte from the network before wire.c checked it, let an unauthenticated
 * connection reach the internal client, or run on a worker thread.
 */
#include "peers.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "de_peer.h"
#include "dynemb.h"
#include "log.h"
#include "util.h"
#include "validate.h"

#define MAX_CONNS 256u           /* owner's side: peer connections at once */
#define MAX_HANDLES 256u         /* tables one peer connection opens */
#define FWD_TABLES 64u           /* tables a forwarding context keeps handles of */
#define BACKOFF_MIN_MS 50u
#define BACKOFF_MAX_MS 2000u
#define LOG_EVERY_NS 1000000000ull /* a member's failures: one line a second */
#define REFILL_MIN 4096u           /* SAMPLE: draws a member's stream refill asks for */

struct srv_peers {
	const struct srv_config *cfg;
	struct de_peer_secret secret;
	const char *self;
	int listen_fd;
	int stop_fd;                 /* eventfd: wakes the listener and connection threads */
	pthread_t listener;
	bool listener_started;
	pthread_mutex_t mu;          /* conns */
	struct oconn *conns;
	unsigned nconns;
};

/* ---- the internal client: this daemon through its own socket ------------------------ */

static int internal_connect(const struct srv_config *cfg, const char *who, dynemb_client **out)
{
	struct dynemb_connect_opts o = { .name = who, .timeout_ms = (int)cfg->peer_timeout_ms };
	return dynemb_connect(cfg->socket, &o, out);
}

/* The spec a client would have sent for the wire config (cfg, learn): spec_to_wire of
 * src/client/client.c, inverted. The daemon normalizes it again, so a table's config
 * opens as itself. */
static void spec_from_wire(const char *name, const struct de_wire_table_config *w,
			   const struct de_wire_learn_config *l, struct dynemb_table_spec *s)
{
	memset(s, 0, sizeof *s);
	s->name = name;
	s->dim = w->dim;
	s->nslots = w->nslots;
	s->init = (enum dynemb_initializer)w->init;
	s->init_a = w->init_a;
	s->init_b = w->init_b;
	s->slot_init = w->slot_init;
	s->seed = w->seed;
	s->keys = (enum dynemb_key_kind)w->key_type;
	const struct de_wire_optim *o = &l->optim;
	s->optim = (struct dynemb_optim_spec){
		.kind = (enum dynemb_optim_kind)o->kind, .lr = o->lr,
		.weight_decay = o->weight_decay, .momentum = o->momentum,
		.dampening = o->dampening, .beta1 = o->beta1, .beta2 = o->beta2, .eps = o->eps,
		.initial_accumulator_value = o->initial_accumulator_value, .alpha = o->alpha,
		.l1 = o->l1, .l2 = o->l2, .lr_power = o->lr_power, .ftrl_beta = o->ftrl_beta,
	};
	s->admission = (struct dynemb_admission_spec){
		.mode = (enum dynemb_admission_mode)l->admission.mode,
		.min_count = l->admission.min_count, .probability = l->admission.probability,
		.sketch_width = l->admission.sketch_width,
		.sketch_depth = l->admission.sketch_depth,
		.reject_value = (enum dynemb_reject_read)l->admission.reject_value,
	};
	s->eviction = (struct dynemb_eviction_spec){
		.policy = (enum dynemb_eviction_policy)l->eviction.policy,
		.budget_bytes = l->eviction.budget_bytes, .ttl = l->eviction.ttl,
		.ttl_unit = (enum dynemb_time_unit)l->eviction.ttl_unit,
		.lru_clock = (enum dynemb_time_unit)l->eviction.lru_clock,
		.lfu_decay = l->eviction.lfu_decay,
		.disk_tier = (l->eviction.flags & DE_WEVICT_DISK_TIER) != 0,
	};
	s->durability = (struct dynemb_durability_spec){
		.mode = (enum dynemb_durability_mode)l->durability.mode,
		.window_ms = l->durability.window_ms,
	};
}

/* ---- owner's side ------------------------------------------------------------------ */

struct handle {
	int h;        /* the internal client's table handle */
	uint32_t dim;
};

struct oconn {
	struct srv_peers *p;
	int fd;
	pthread_t thread;
	bool done;                   /* atomic: the thread ended (the listener reaps it) */
	char addr[80];
	char peer[DE_PEER_NAME_MAX];
	dynemb_client *ic;
	struct handle h[MAX_HANDLES];
	unsigned nh;
	void *buf, *out;             /* the frame read, the reply built */
	size_t cap, ocap;
	struct oconn *next;
};

static int grow(void **b, size_t *cap, size_t want)
{
	if (want <= *cap)
		return 0;
	size_t c = *cap ? *cap : 65536;
	while (c < want)
		c *= 2;
	void *n = realloc(*b, c); /* malloc's alignment (16) suits the frames' u64 and f32 */
	if (!n)
		return -ENOMEM;
	*b = n;
	*cap = c;
	return 0;
}

/* Send a reply: its header, then len bytes of body. */
static int reply(struct oconn *o, const struct de_peer_hdr *rq, int32_t status,
		 const void *body, uint32_t len)
{
	struct de_peer_hdr h;
	de_peer_hdr_init(&h, (uint16_t)(rq->type | DE_PEER_REPLY), rq->req_id, len, status);
	struct iovec iov[2] = { { &h, sizeof h }, { (void *)body, len } };
	return de_peer_write_full(o->fd, iov, len ? 2 : 1, (int)o->p->cfg->peer_timeout_ms);
}

/* An error reply: the errno and its reason. */
static int reply_err(struct oconn *o, const struct de_peer_hdr *rq, int err, const char *why)
{
	size_t l = strlen(why);
	if (l > DE_PEER_MSG_MAX)
		l = DE_PEER_MSG_MAX;
	return reply(o, rq, err < 0 ? err : -EIO, why, (uint32_t)l);
}

static int on_open(struct oconn *o, const struct de_peer_hdr *rq)
{
	struct de_peer_open op;
	char msg[256];
	if (de_peer_parse_open(rq, o->buf, &op, msg, sizeof msg)) {
		srv_log(SRV_LOG_WARN, "peer %s: %s: closing its connection", o->peer, msg);
		return -EPROTO;
	}
	struct de_wire_table_config wc;
	struct de_wire_learn_config wl;
	memcpy(&wc, op.cfg, sizeof wc);
	memcpy(&wl, (const char *)op.cfg + sizeof wc, sizeof wl);
	const struct srv_config *cfg = o->p->cfg;
	if (!srv_config_sharded(cfg, op.name)) {
		snprintf(msg, sizeof msg, "table '%s' is not sharded on member %s ([peers] sharded "
			 "= %.100s): the members' configs differ", op.name, o->p->self, cfg->peer_sharded);
		srv_log(SRV_LOG_WARN, "peer %s: %s", o->peer, msg);
		return reply_err(o, rq, -EINVAL, msg);
	}
	if (wc.key_type != DE_KEYS_INT64) {
		snprintf(msg, sizeof msg, "table '%s': string-key tables are not sharded", op.name);
		return reply_err(o, rq, -EOPNOTSUPP, msg);
	}
	if (o->nh >= MAX_HANDLES)
		return reply_err(o, rq, -EMFILE, "a peer connection opens at most 256 tables");
	int err = 0;
	if (!o->ic) {
		char who[DE_PEER_NAME_MAX + 8];
		snprintf(who, sizeof who, "peer:%s", o->peer);
		err = internal_connect(cfg, who, &o->ic);
		if (err)
			return reply_err(o, rq, err, "the owner could not reach its own daemon");
	}
	struct dynemb_table_spec s;
	spec_from_wire(op.name, &wc, &wl, &s);
	int h;
	err = dynemb_open(o->ic, &s, &h);
	if (err) {
		snprintf(msg, sizeof msg, "member %s refused table '%s': %s", o->p->self, op.name,
			 dynemb_strerror(err));
		srv_log(SRV_LOG_WARN, "peer %s: %s", o->peer, msg);
		return reply_err(o, rq, err, msg);
	}
	o->h[o->nh] = (struct handle){ .h = h, .dim = wc.dim };
	uint32_t body[2] = { o->nh++, wc.dim };
	return reply(o, rq, 0, body, sizeof body);
}

/* SAMPLE: b->n draws with replacement from this member's sampler, with the weight the
 * requester mixes them by (wire.c). */
static int on_sample(struct oconn *o, const struct de_peer_hdr *rq, const struct handle *hd,
		     const struct de_peer_batch *b)
{
	uint64_t bytes = de_peer_sample_reply_bytes(b->n, b->npos);
	if (grow(&o->out, &o->ocap, bytes))
		return reply_err(o, rq, -ENOMEM, "out of memory for a SAMPLE reply");
	char *out = o->out;
	uint64_t *keys = (uint64_t *)(void *)(out + 24);
	float *prob = (float *)(void *)(keys + b->n), *pprob = prob + b->n;
	struct dynemb_sample_spec spec = {
		.kind = b->flags == DE_PEER_SAMPLE_UNIGRAM ? DYNEMB_SAMPLER_UNIGRAM
							   : DYNEMB_SAMPLER_UNIFORM,
		.num_sampled = b->n, .power = b->lr, .seed = b->step,
	};
	struct dynemb_sample_info info;
	int err = dynemb_sample_ex(o->ic, hd->h, &spec, b->keys, b->npos, keys, prob, pprob,
				   NULL, &info);
	if (!err && !(info.population && info.weight > 0))
		err = -ENOENT;
	if (err)
		return reply_err(o, rq, err, dynemb_strerror(err));
	/* expected counts of n draws with replacement are n * P: P back, within (0, 1] */
	for (uint64_t i = 0; i < (uint64_t)b->n + b->npos; i++) {
		float p = prob[i] / (float)b->n;
		prob[i] = p > 1 ? 1 : i < b->n && !(p > 0) ? 0x1p-126f : p;
	}
	uint32_t cnt[2] = { b->n, b->npos };
	memcpy(out, cnt, 8);
	memcpy(out + 8, &info.population, 8);
	memcpy(out + 16, &info.weight, 8);
	return reply(o, rq, 0, out, (uint32_t)bytes);
}

static int on_batch(struct oconn *o, const struct de_peer_hdr *rq)
{
	char msg[256];
	uint32_t handle;
	if (rq->len < 4) {
		srv_log(SRV_LOG_WARN, "peer %s: a batch frame of %u bytes: closing its connection",
			o->peer, rq->len);
		return -EPROTO;
	}
	memcpy(&handle, o->buf, 4);
	if (handle >= o->nh) {
		srv_log(SRV_LOG_WARN, "peer %s: a batch on handle %u, which it never opened (%u "
			"open): closing its connection", o->peer, handle, o->nh);
		return -EPROTO;
	}
	const struct handle *hd = &o->h[handle];
	struct de_peer_batch b;
	if (de_peer_parse_batch(rq, o->buf, hd->dim, &b, msg, sizeof msg)) {
		srv_log(SRV_LOG_WARN, "peer %s: %s: closing its connection", o->peer, msg);
		return -EPROTO;
	}
	if (b.type == DE_PEER_SAMPLE)
		return on_sample(o, rq, hd, &b);
	uint32_t c[4] = { b.n, 0, 0, 0 };
	int err = 0;
	size_t x = 0;
	if (b.type == DE_PEER_TOPK) {
		uint32_t k = (uint32_t)b.step;
		uint64_t bytes = de_peer_topk_reply_bytes(b.n, k);
		uint32_t *found = calloc(b.n, sizeof *found);
		if (!found || (err = grow(&o->out, &o->ocap, bytes))) {
			free(found);
			return reply_err(o, rq, -ENOMEM, "out of memory for a TOPK reply");
		}
		uint64_t *keys = (uint64_t *)(void *)((char *)o->out + 16);
		float *scores = (float *)(void *)(keys + (uint64_t)b.n * k);
		err = dynemb_topk(o->ic, hd->h, b.vals, b.n, k,
				  (b.flags & DE_PEER_TOPK_COSINE) ? DYNEMB_METRIC_COSINE
								  : DYNEMB_METRIC_DOT,
				  keys, scores, found);
		c[1] = found[0];
		free(found);
		if (err)
			return reply_err(o, rq, err, dynemb_strerror(err));
		memcpy(o->out, c, sizeof c);
		return reply(o, rq, 0, o->out, (uint32_t)bytes);
	}
	switch (b.type) {
	case DE_PEER_LOOKUP: {
		uint64_t bytes = de_peer_lookup_reply_bytes(b.n, hd->dim);
		if ((err = grow(&o->out, &o->ocap, bytes)))
			break;
		uint8_t *st = (uint8_t *)o->out + 16;
		uint64_t pad = ((uint64_t)b.n + 7) & ~7ull;
		float *rows = (float *)(void *)(st + pad);
		memset(st, 0, pad);
		err = dynemb_lookup(o->ic, hd->h, b.keys, b.n, rows, st,
				    (b.flags & DE_PEER_LOOKUP_CREATE) ? 0 : DYNEMB_READONLY, b.step);
		if (err)
			break;
		for (uint32_t i = 0; i < b.n; i++) {
			c[1] += st[i] == DYNEMB_ST_FOUND;
			c[2] += st[i] == DYNEMB_ST_CREATED;
		}
		memcpy(o->out, c, sizeof c);
		return reply(o, rq, 0, o->out, (uint32_t)bytes);
	}
	case DE_PEER_UPDATE:
		err = dynemb_update(o->ic, hd->h, b.keys, b.n, b.vals, b.step, &x);
		break;
	case DE_PEER_APPLY:
		err = dynemb_apply_gradients(o->ic, hd->h, b.keys, b.n, b.vals, b.step,
					     (b.flags & DE_PEER_APPLY_LR) ? b.lr : 0, &x);
		break;
	default: /* DE_PEER_ERASE */
		err = dynemb_erase(o->ic, hd->h, b.keys, b.n, &x);
		break;
	}
	if (err)
		return reply_err(o, rq, err, dynemb_strerror(err));
	c[1] = (uint32_t)x;
	return reply(o, rq, 0, c, sizeof c);
}

/* Wait for fd to be readable or the layer to stop: 1 readable, 0 stop, <0 errno. */
static int wait_readable(struct srv_peers *p, int fd)
{
	struct pollfd pf[2] = { { .fd = fd, .events = POLLIN }, { .fd = p->stop_fd, .events = POLLIN } };
	for (;;) {
		int r = poll(pf, 2, -1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (pf[1].revents)
			return 0;
		return 1;
	}
}

static void *oconn_main(void *arg)
{
	struct oconn *o = arg;
	struct srv_peers *p = o->p;
	int tmo = (int)p->cfg->peer_timeout_ms;
	char msg[256];
	int err = de_peer_auth(o->fd, &p->secret, false, p->self, NULL, tmo, o->peer,
			       sizeof o->peer, msg, sizeof msg);
	if (!err && (de_peer_members_find(&p->cfg->peers, o->peer) < 0 ||
		     !strcmp(o->peer, p->self))) {
		srv_log(SRV_LOG_WARN, "peer connection from %s: it authenticated as '%s', which is "
			"not another member: closed", o->addr, o->peer);
		goto out;
	}
	if (err) {
		srv_log(SRV_LOG_WARN, "peer connection from %s refused: %s", o->addr, msg);
		goto out;
	}
	srv_log(SRV_LOG_INFO, "peer %s connected from %s", o->peer, o->addr);
	for (;;) {
		int r = wait_readable(p, o->fd);
		if (r <= 0)
			break;
		struct de_peer_hdr h;
		err = de_peer_read_full(o->fd, &h, sizeof h, tmo);
		if (err) {
			if (err != -ECONNRESET)
				srv_log(SRV_LOG_WARN, "peer %s: reading a frame header: %s", o->peer,
					strerror(-err));
			break;
		}
		if (de_peer_hdr_check(&h, msg, sizeof msg) || (h.type & DE_PEER_REPLY)) {
			srv_log(SRV_LOG_WARN, "peer %s: %s: closing its connection", o->peer,
				h.type & DE_PEER_REPLY ? "a reply where a request belongs" : msg);
			break;
		}
		if ((err = grow(&o->buf, &o->cap, h.len ? h.len : 1)) ||
		    (h.len && (err = de_peer_read_full(o->fd, o->buf, h.len, tmo)))) {
			srv_log(SRV_LOG_WARN, "peer %s: reading a %u-byte frame: %s", o->peer, h.len,
				strerror(-err));
			break;
		}
		if (h.type == DE_PEER_PING)
			err = h.len ? -EPROTO : reply(o, &h, 0, NULL, 0);
		else if (h.type == DE_PEER_OPEN)
			err = on_open(o, &h);
		else
			err = on_batch(o, &h);
		if (err)
			break;
	}
out:
	if (*o->peer)
		srv_log(SRV_LOG_INFO, "peer %s (%s) disconnected", o->peer, o->addr);
	dynemb_close(o->ic);
	o->ic = NULL;
	shutdown(o->fd, SHUT_RDWR);
	__atomic_store_n(&o->done, true, __ATOMIC_RELEASE);
	return NULL;
}

static void oconn_free(struct oconn *o)
{
	pthread_join(o->thread, NULL);
	close(o->fd);
	free(o->buf);
	free(o->out);
	free(o);
}

/* Join and free the connections whose threads ended (all of them when all is set). */
static void reap(struct srv_peers *p, bool all)
{
	pthread_mutex_lock(&p->mu);
	for (struct oconn **pp = &p->conns; *pp;) {
		struct oconn *o = *pp;
		if (all || __atomic_load_n(&o->done, __ATOMIC_ACQUIRE)) {
			*pp = o->next;
			p->nconns--;
			pthread_mutex_unlock(&p->mu);
			oconn_free(o);
			pthread_mutex_lock(&p->mu);
		} else {
			pp = &o->next;
		}
	}
	pthread_mutex_unlock(&p->mu);
}

static void addr_text(const struct sockaddr_storage *ss, char *buf, size_t cap)
{
	char h[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const void *)ss;
		inet_ntop(AF_INET6, &a->sin6_addr, h, sizeof h);
		port = ntohs(a->sin6_port);
		snprintf(buf, cap, "[%s]:%u", h, port);
		return;
	}
	const struct sockaddr_in *a = (const void *)ss;
	inet_ntop(AF_INET, &a->sin_addr, h, sizeof h);
	port = ntohs(a->sin_port);
	snprintf(buf, cap, "%s:%u", h, port);
}

static void *listener_main(void *arg)
{
	struct srv_peers *p = arg;
	for (;;) {
		int r = wait_readable(p, p->listen_fd);
		if (r <= 0)
			break;
		struct sockaddr_storage ss;
		socklen_t sl = sizeof ss;
		int fd = accept4(p->listen_fd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
		reap(p, false);
		if (fd < 0) {
			if (errno != EINTR && errno != ECONNABORTED && errno != EAGAIN)
				srv_log(SRV_LOG_WARN, "peers: accept: %s", strerror(errno));
			continue;
		}
		char addr[80];
		addr_text(&ss, addr, sizeof addr);
		if (p->nconns >= MAX_CONNS) {
			srv_log(SRV_LOG_WARN, "peer connection from %s refused: %u peer connections "
				"open, the most this daemon takes", addr, MAX_CONNS);
			close(fd);
			continue;
		}
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		struct oconn *o = calloc(1, sizeof *o);
		if (!o) {
			close(fd);
			continue;
		}
		o->p = p;
		o->fd = fd;
		snprintf(o->addr, sizeof o->addr, "%s", addr);
		if (pthread_create(&o->thread, NULL, oconn_main, o)) {
			close(fd);
			free(o);
			continue;
		}
		pthread_mutex_lock(&p->mu);
		o->next = p->conns;
		p->conns = o;
		p->nconns++;
		pthread_mutex_unlock(&p->mu);
	}
	return NULL;
}

int srv_peers_start(const struct srv_config *cfg, struct srv_peers **out, char *msg, size_t cap)
{
	*out = NULL;
	if (!cfg->peers.n)
		return 0;
	struct srv_peers *p = calloc(1, sizeof *p);
	if (!p)
		return -ENOMEM;
	p->cfg = cfg;
	p->self = cfg->peers.m[cfg->peer_self].name;
	p->listen_fd = p->stop_fd = -1;
	pthread_mutex_init(&p->mu, NULL);
	int err = de_peer_secret_load(cfg->peer_secret_file, &p->secret, msg, cap);
	if (err)
		goto fail;
	p->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	p->listen_fd = socket(cfg->peer_listen.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	char addr[80];
	addr_text(&cfg->peer_listen, addr, sizeof addr);
	int one = 1;
	if (p->stop_fd < 0 || p->listen_fd < 0 ||
	    setsockopt(p->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
	    bind(p->listen_fd, (const struct sockaddr *)&cfg->peer_listen, cfg->peer_listen_len) ||
	    listen(p->listen_fd, 128)) {
		err = -errno;
		snprintf(msg, cap, "[peers] listen %s: %s", addr, strerror(errno));
		goto fail;
	}
	if ((err = -pthread_create(&p->listener, NULL, listener_main, p))) {
		snprintf(msg, cap, "peers: the listener thread: %s", strerror(-err));
		goto fail;
	}
	p->listener_started = true;
	srv_log(SRV_LOG_INFO, "peers: member %s of %u, listening on %s, sharded tables: %s",
		p->self, cfg->peers.n, addr, cfg->peer_sharded);
	*out = p;
	return 0;
fail:
	srv_peers_stop(p);
	return err;
}

void srv_peers_stop(struct srv_peers *p)
{
	if (!p)
		return;
	if (p->stop_fd >= 0) {
		uint64_t one = 1;
		ssize_t w = write(p->stop_fd, &one, sizeof one);
		(void)w;
	}
	if (p->listener_started)
		pthread_join(p->listener, NULL);
	pthread_mutex_lock(&p->mu);
	for (struct oconn *o = p->conns; o; o = o->next)
		shutdown(o->fd, SHUT_RDWR); /* a thread blocked in a read or write returns */
	pthread_mutex_unlock(&p->mu);
	reap(p, true);
	if (p->listen_fd >= 0)
		close(p->listen_fd);
	if (p->stop_fd >= 0)
		close(p->stop_fd);
	de_peer_secret_wipe(&p->secret);
	pthread_mutex_destroy(&p->mu);
	free(p);
}

bool srv_peers_shards(const struct srv_peers *p, const struct srv_table *t)
{
	return p && t->wcfg.key_type == DE_KEYS_INT64 && srv_config_sharded(p->cfg, t->name);
}

bool srv_peers_any_remote(const struct srv_peers *p, const uint64_t *keys, size_t n)
{
	unsigned self = p->cfg->peer_self;
	for (size_t i = 0; i < n; i++)
		if (de_peer_owner(&p->cfg->peers, keys[i]) != self)
			return true;
	return false;
}

/* ---- forwarding side --------------------------------------------------------------- */

/* A table's handle, known by name (a table dropped and made again may reuse the address
 * of another: names are what both sides agree on). */
struct rtable {
	char name[DE_NAME_MAX];
	uint32_t handle;
};

struct member {
	int fd;                      /* -1: not connected */
	uint64_t retry_ns;           /* no connect before (backoff) */
	unsigned backoff_ms;
	uint64_t req;                /* the last req_id */
	uint64_t last_log_ns;
	struct rtable tabs[FWD_TABLES];
	unsigned ntabs;
	char why[200];               /* the last failure, for the backoff's fast errors */
	/* this request's part */
	uint32_t start, n;
	int err;
	bool sent;
};

struct srv_peer_fwd {
	struct srv_peers *p;
	uint32_t max_batch;
	dynemb_client *ic;
	struct { char name[DE_NAME_MAX]; int h; } itabs[FWD_TABLES];
	unsigned nitabs;
	uint64_t *keys, *okeys;
	uint16_t *owner;
	uint32_t *pos;
	uint8_t *st;
	float *vals, *rows;          /* the parts' values / rows, in owner order */
	size_t vcap;                 /* floats in vals and in rows */
	void *rbuf;
	size_t rcap;
	struct member m[DE_PEER_MAX_MEMBERS];
};

int srv_peer_fwd_create(struct srv_peers *p, uint32_t max_batch, struct srv_peer_fwd **out)
{
	struct srv_peer_fwd *f = calloc(1, sizeof *f);
	if (!f)
		return -ENOMEM;
	f->p = p;
	f->max_batch = max_batch;
	f->keys = calloc(max_batch, sizeof *f->keys);
	f->okeys = calloc(max_batch, sizeof *f->okeys);
	f->owner = calloc(max_batch, sizeof *f->owner);
	f->pos = calloc(max_batch, sizeof *f->pos);
	f->st = calloc(max_batch, 1);
	for (unsigned i = 0; i < DE_PEER_MAX_MEMBERS; i++)
		f->m[i].fd = -1;
	if (!f->keys || !f->okeys || !f->owner || !f->pos || !f->st) {
		srv_peer_fwd_free(f);
		return -ENOMEM;
	}
	*out = f;
	return 0;
}

static void member_close(struct member *m)
{
	if (m->fd >= 0)
		close(m->fd);
	m->fd = -1;
	m->ntabs = 0;
}

void srv_peer_fwd_free(struct srv_peer_fwd *f)
{
	if (!f)
		return;
	for (unsigned i = 0; i < DE_PEER_MAX_MEMBERS; i++)
		member_close(&f->m[i]);
	dynemb_close(f->ic);
	free(f->keys);
	free(f->okeys);
	free(f->owner);
	free(f->pos);
	free(f->st);
	free(f->vals);
	free(f->rows);
	free(f->rbuf);
	free(f);
}

static int ms_left(uint64_t deadline)
{
	uint64_t now = srv_mono_ns();
	return now >= deadline ? 0 : (int)((deadline - now + 999999) / 1000000);
}

/* A failure of member i's part: remembered for the backoff, logged once a second. */
__attribute__((format(printf, 4, 5)))
static int member_fail(struct srv_peer_fwd *f, unsigned i, int err, const char *fmt, ...)
{
	struct member *m = &f->m[i];
	const struct de_peer_member *pm = &f->p->cfg->peers.m[i];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(m->why, sizeof m->why, fmt, ap);
	va_end(ap);
	uint64_t now = srv_mono_ns();
	member_close(m);
	m->backoff_ms = m->backoff_ms ? m->backoff_ms * 2 : BACKOFF_MIN_MS;
	if (m->backoff_ms > BACKOFF_MAX_MS)
		m->backoff_ms = BACKOFF_MAX_MS;
	m->retry_ns = now + m->backoff_ms * 1000000ull;
	if (now - m->last_log_ns >= LOG_EVERY_NS) {
		m->last_log_ns = now;
		srv_log(SRV_LOG_WARN, "peer %s (%s:%u): %s: its keys fail (%s) until it answers; "
			"next try in %u ms", pm->name, pm->host, pm->port, m->why, strerror(-err),
			m->backoff_ms);
	}
	return err;
}

/* Connect to member i and authenticate, before deadline. */
static int member_connect(struct srv_peer_fwd *f, unsigned i, uint64_t deadline)
{
	struct member *m = &f->m[i];
	const struct srv_config *cfg = f->p->cfg;
	const struct de_peer_member *pm = &cfg->peers.m[i];
	if (srv_mono_ns() < m->retry_ns)
		return -EHOSTDOWN; /* backing off: m->why says why */
	char port[8];
	snprintf(port, sizeof port, "%u", pm->port);
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai = NULL;
	int g = getaddrinfo(pm->host, port, &hints, &ai);
	if (g)
		return member_fail(f, i, -EHOSTUNREACH, "cannot resolve %s: %s", pm->host,
				   gai_strerror(g));
	int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	int err = fd < 0 ? -errno : 0;
	if (!err && connect(fd, ai->ai_addr, ai->ai_addrlen) && errno != EINPROGRESS)
		err = -errno;
	freeaddrinfo(ai);
	if (!err) {
		struct pollfd pf = { .fd = fd, .events = POLLOUT };
		int r = poll(&pf, 1, ms_left(deadline));
		int so = 0;
		socklen_t sl = sizeof so;
		if (r == 0)
			err = -ETIMEDOUT;
		else if (r < 0)
			err = -errno;
		else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &so, &sl) || so)
			err = -(so ? so : errno);
	}
	if (err) {
		if (fd >= 0)
			close(fd);
		return member_fail(f, i, err, "connect: %s", strerror(-err));
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	char msg[256], who[DE_PEER_NAME_MAX];
	err = de_peer_auth(fd, &f->p->secret, true, f->p->self, pm->name, ms_left(deadline), who,
			   sizeof who, msg, sizeof msg);
	if (err) {
		close(fd);
		return member_fail(f, i, err, "%s", msg);
	}
	m->fd = fd;
	m->ntabs = 0;
	m->backoff_ms = 0;
	return 0;
}

/* Read member i's reply to request (type, req) of n keys at dim into f->rbuf. */
static int read_reply(struct srv_peer_fwd *f, unsigned i, uint16_t type, uint32_t n,
		      uint32_t dim, uint64_t deadline, struct de_peer_reply *r)
{
	struct member *m = &f->m[i];
	struct de_peer_hdr h;
	char msg[256];
	int err = de_peer_read_full(m->fd, &h, sizeof h, ms_left(deadline));
	if (err == -ETIMEDOUT)
		return member_fail(f, i, err, "no answer within %u ms ([peers] timeout_ms)",
				   f->p->cfg->peer_timeout_ms);
	if (err)
		return member_fail(f, i, err, "reading its reply: %s", strerror(-err));
	if (de_peer_hdr_check(&h, msg, sizeof msg))
		return member_fail(f, i, -EPROTO, "%s", msg);
	if ((err = grow(&f->rbuf, &f->rcap, h.len ? h.len : 1)))
		return err;
	if (h.len && (err = de_peer_read_full(m->fd, f->rbuf, h.len, ms_left(deadline))))
		return member_fail(f, i, err, "reading its reply: %s", strerror(-err));
	if (de_peer_parse_reply(&h, f->rbuf, type, m->req, n, dim, r, msg, sizeof msg))
		return member_fail(f, i, -EPROTO, "%s", msg);
	return 0;
}

/* Member i's handle of t: opened on this connection the first time. */
static int member_table(struct srv_peer_fwd *f, unsigned i, const struct srv_table *t,
			uint64_t deadline, uint32_t *handle)
{
	struct member *m = &f->m[i];
	for (unsigned k = 0; k < m->ntabs; k++)
		if (!strcmp(m->tabs[k].name, t->name)) {
			*handle = m->tabs[k].handle;
			return 0;
		}
	if (m->ntabs == FWD_TABLES) /* forget them all: reopening is cheap */
		member_close(m);
	if (m->fd < 0) {
		int err = member_connect(f, i, deadline);
		if (err)
			return err;
	}
	char body[DE_PEER_OPEN_BYTES] = { 0 };
	snprintf(body, DE_NAME_MAX, "%s", t->name);
	memcpy(body + DE_NAME_MAX, &t->wcfg, sizeof t->wcfg);
	memcpy(body + DE_NAME_MAX + sizeof t->wcfg, &t->learn, sizeof t->learn);
	struct de_peer_hdr h;
	de_peer_hdr_init(&h, DE_PEER_OPEN, ++m->req, sizeof body, 0);
	struct iovec iov[2] = { { &h, sizeof h }, { body, sizeof body } };
	int err = de_peer_write_full(m->fd, iov, 2, ms_left(deadline));
	if (err)
		return member_fail(f, i, err, "sending OPEN: %s", strerror(-err));
	struct de_peer_reply r;
	if ((err = read_reply(f, i, DE_PEER_OPEN, 0, t->wcfg.dim, deadline, &r)))
		return err;
	if (r.status < 0) {
		srv_log(SRV_LOG_WARN, "peer %s refused table '%s': %s", f->p->cfg->peers.m[i].name,
			t->name, r.msg);
		return r.status;
	}
	snprintf(m->tabs[m->ntabs].name, DE_NAME_MAX, "%s", t->name);
	m->tabs[m->ntabs++].handle = r.handle;
	*handle = r.handle;
	return 0;
}

static uint16_t wire_type(uint32_t op)
{
	return op == DE_OP_LOOKUP ? DE_PEER_LOOKUP : op == DE_OP_UPDATE ? DE_PEER_UPDATE
	       : op == DE_OP_APPLY_GRADS ? DE_PEER_APPLY : op == DE_OP_TOPK ? DE_PEER_TOPK
	       : DE_PEER_ERASE;
}

/* Send member i its part (f->m[i].start, .n) of e. */
static int send_part(struct srv_peer_fwd *f, unsigned i, const struct srv_table *t,
		     const struct de_sqe *e, uint64_t deadline)
{
	struct member *m = &f->m[i];
	uint32_t handle = 0;
	int err = member_table(f, i, t, deadline, &handle);
	if (err)
		return err;
	uint16_t type = wire_type(e->op);
	uint32_t dim = t->wcfg.dim;
	unsigned char fixed[32] = { 0 };
	uint32_t flags = 0;
	double lr = 0;
	if (type == DE_PEER_LOOKUP && (e->flags & DE_LOOKUP_CREATE))
		flags = DE_PEER_LOOKUP_CREATE;
	if (type == DE_PEER_APPLY && (e->flags & DE_GRAD_LR)) {
		flags = DE_PEER_APPLY_LR;
		lr = de_lr_from_wire(e->status_off);
	}
	if (type == DE_PEER_TOPK && (e->flags & DE_WTOPK_COSINE))
		flags = DE_PEER_TOPK_COSINE;
	uint64_t step = type == DE_PEER_ERASE ? 0 : e->arg; /* TOPK: k */
	memcpy(fixed, &handle, 4);
	memcpy(fixed + 4, &flags, 4);
	memcpy(fixed + 8, &step, 8);
	memcpy(fixed + 16, &m->n, 4);
	memcpy(fixed + 24, &lr, 8);
	uint64_t nf = de_peer_batch_fixed(type);
	bool topk = type == DE_PEER_TOPK; /* every query to every member: no keys */
	bool vals = type == DE_PEER_UPDATE || type == DE_PEER_APPLY || topk;
	uint64_t vb = vals ? 4ull * m->n * dim : 0, kb = topk ? 0 : 8ull * m->n;
	struct de_peer_hdr h;
	de_peer_hdr_init(&h, type, ++m->req, (uint32_t)(nf + kb + vb), 0);
	struct iovec iov[4] = {
		{ &h, sizeof h }, { fixed, nf }, { topk ? NULL : f->okeys + m->start, kb },
		{ vals ? f->vals + (uint64_t)m->start * dim : NULL, vb },
	};
	err = de_peer_write_full(m->fd, iov, vals ? 4 : 3, ms_left(deadline));
	if (err == -ETIMEDOUT)
		return member_fail(f, i, err, "it takes no data within %u ms ([peers] timeout_ms)",
				   f->p->cfg->peer_timeout_ms);
	if (err)
		return member_fail(f, i, err, "sending: %s", strerror(-err));
	return 0;
}

/* Member i's reply to its part: rows and statuses at their owner-order places. */
static int recv_part(struct srv_peer_fwd *f, unsigned i, const struct srv_table *t,
		     const struct de_sqe *e, uint64_t deadline, uint32_t *a, uint32_t *b)
{
	struct member *m = &f->m[i];
	uint16_t type = wire_type(e->op);
	uint32_t dim = t->wcfg.dim;
	struct de_peer_reply r;
	int err = read_reply(f, i, type, m->n, dim, deadline, &r);
	if (err)
		return err;
	if (r.status == -EIDRM)
		member_close(m); /* its table was dropped: a new connection opens it anew */
	if (r.status < 0)
		return r.status; /* the owner's refusal of this batch (its message: r.msg) */
	if (type == DE_PEER_LOOKUP) {
		memcpy(f->st + m->start, r.st, m->n);
		memcpy(f->rows + (uint64_t)m->start * dim, r.rows, 4ull * m->n * dim);
	}
	*a += r.a;
	*b += r.b;
	return 0;
}

/* The internal client's handle of t. */
static int local_table(struct srv_peer_fwd *f, const struct srv_table *t, int *h)
{
	for (unsigned k = 0; k < f->nitabs; k++)
		if (!strcmp(f->itabs[k].name, t->name)) {
			*h = f->itabs[k].h;
			return 0;
		}
	int err = 0;
	if (!f->ic || f->nitabs == FWD_TABLES) {
		dynemb_close(f->ic);
		f->ic = NULL;
		f->nitabs = 0;
		if ((err = internal_connect(f->p->cfg, "peer:forward", &f->ic))) {
			srv_log(SRV_LOG_WARN, "peers: the forwarding thread cannot reach its own "
				"daemon: %s", dynemb_strerror(err));
			return err;
		}
	}
	struct dynemb_table_spec s;
	spec_from_wire(t->name, &t->wcfg, &t->learn, &s);
	if ((err = dynemb_open(f->ic, &s, h))) {
		srv_log(SRV_LOG_WARN, "peers: forwarding thread: table '%s': %s", t->name,
			dynemb_strerror(err));
		return err;
	}
	snprintf(f->itabs[f->nitabs].name, DE_NAME_MAX, "%s", t->name);
	f->itabs[f->nitabs++].h = *h;
	return 0;
}

/* The local part (member self) through the internal client. */
static int local_part(struct srv_peer_fwd *f, unsigned self, const struct srv_table *t,
		      const struct de_sqe *e, uint32_t *a, uint32_t *b)
{
	struct member *m = &f->m[self];
	int h;
	int err = local_table(f, t, &h);
	if (err)
		return err;
	uint32_t dim = t->wcfg.dim;
	const uint64_t *k = f->okeys + m->start;
	size_t x = 0;
	switch (e->op) {
	case DE_OP_LOOKUP:
		err = dynemb_lookup(f->ic, h, k, m->n, f->rows + (uint64_t)m->start * dim,
				    f->st + m->start, (e->flags & DE_LOOKUP_CREATE) ? 0 : DYNEMB_READONLY,
				    e->arg);
		for (uint32_t j = 0; !err && j < m->n; j++) {
			*a += f->st[m->start + j] == DYNEMB_ST_FOUND;
			*b += f->st[m->start + j] == DYNEMB_ST_CREATED;
		}
		return err;
	case DE_OP_UPDATE:
		err = dynemb_update(f->ic, h, k, m->n, f->vals + (uint64_t)m->start * dim, e->arg, &x);
		break;
	case DE_OP_APPLY_GRADS:
		err = dynemb_apply_gradients(f->ic, h, k, m->n, f->vals + (uint64_t)m->start * dim,
					     e->arg, (e->flags & DE_GRAD_LR) ? de_lr_from_wire(e->status_off)
								    : 0, &x);
		break;
	default:
		err = dynemb_erase(f->ic, h, k, m->n, &x);
		break;
	}
	if (err == -ECONNRESET || err == -EPIPE || err == -EIDRM) { /* reopen next time */
		dynemb_close(f->ic);
		f->ic = NULL;
		f->nitabs = 0;
	}
	*a += (uint32_t)x;
	return err;
}

/* Is result (ka, sa) before (kb, sb): the higher score, ties by the lower key (topk.c's
 * order), a -inf (no result) last? */
static bool before(uint64_t ka, float sa, uint64_t kb, float sb)
{
	return sa > sb || (sa == sb && ka < kb);
}

/* Merge the k best of (bk, bs: fb valid) into query row (ak, as: *fa valid). */
static void merge_k(uint64_t *ak, float *as, uint32_t *fa, const uint64_t *bk, const float *bs,
		    uint32_t fb, uint32_t k, uint64_t *tk, float *ts)
{
	uint32_t i = 0, j = 0, o = 0;
	while (o < k && (i < *fa || j < fb)) {
		bool a = j >= fb || (i < *fa && before(ak[i], as[i], bk[j], bs[j]));
		tk[o] = a ? ak[i] : bk[j];
		ts[o++] = a ? as[i++] : bs[j++];
	}
	*fa = o;
	memcpy(ak, tk, o * sizeof *ak);
	memcpy(as, ts, o * sizeof *as);
	for (uint32_t x = o; x < k; x++) {
		ak[x] = 0;
		as[x] = -__builtin_inff();
	}
}

/* A TOPK of a sharded table: every member's k best of every query (the queries copied
 * once, so each member sees the same), merged. */
static void forward_topk(struct srv_peer_fwd *f, const struct srv_table *t, char *data,
			 const struct de_sqe *e, struct de_cqe *q)
{
	const struct srv_config *cfg = f->p->cfg;
	unsigned nm = cfg->peers.n, self = cfg->peer_self;
	uint32_t nq = e->count, k = (uint32_t)e->arg, dim = t->wcfg.dim;
	uint64_t nr = (uint64_t)nq * k, nf = (uint64_t)nq * dim;
	uint64_t *ak = (uint64_t *)(void *)(data + e->vals_off);
	float *as = (float *)(void *)(ak + nr);
	uint32_t *found = calloc(nq, sizeof *found);
	uint64_t *tk = malloc(k * sizeof *tk);
	float *ts = malloc(k * sizeof *ts);
	int err = !found || !tk || !ts ? -ENOMEM : 0;
	if (!err && nf > f->vcap) {
		float *v = realloc(f->vals, nf * sizeof *v);
		if (v) {
			f->vals = v;
			float *r = realloc(f->rows, nf * sizeof *r);
			if (r) {
				f->rows = r;
				f->vcap = nf;
			}
		}
		if (f->vcap < nf)
			err = -ENOMEM;
	}
	if (err)
		goto out;
	memcpy(f->vals, data + e->keys_off, 4 * nf);
	uint64_t deadline = srv_mono_ns() + cfg->peer_timeout_ms * 1000000ull;
	for (unsigned i = 0; i < nm; i++) {
		f->m[i].start = 0;
		f->m[i].n = nq;
		f->m[i].err = 0;
		f->m[i].sent = false;
		if (i != self) {
			f->m[i].err = send_part(f, i, t, e, deadline);
			f->m[i].sent = !f->m[i].err;
		}
	}
	int h;
	err = local_table(f, t, &h);
	if (!err)
		err = dynemb_topk(f->ic, h, f->vals, nq, k,
				  (e->flags & DE_WTOPK_COSINE) ? DYNEMB_METRIC_COSINE : DYNEMB_METRIC_DOT,
				  ak, as, found);
	for (unsigned i = 0; i < nm; i++) {
		if (!f->m[i].sent)
			continue;
		struct de_peer_reply r;
		int e2 = read_reply(f, i, DE_PEER_TOPK, nq, k, deadline, &r);
		if (!e2 && r.status < 0)
			e2 = r.status;
		if (e2) {
			f->m[i].err = e2;
			continue;
		}
		for (uint32_t qi = 0; !err && qi < nq; qi++)
			merge_k(ak + (uint64_t)qi * k, as + (uint64_t)qi * k, &found[qi],
				r.tkeys + (uint64_t)qi * k, r.tscores + (uint64_t)qi * k, r.a, k, tk, ts);
	}
	for (unsigned i = 0; i < nm && !err; i++)
		err = f->m[i].err;
out:
	q->res = err;
	q->count = err ? 0 : found[0];
	free(found);
	free(tk);
	free(ts);
}

/* One copy of n keys out of the data area (the client may rewrite it meanwhile), their
 * owners, and a stable split by owner: member i's part is f->okeys[m[i].start ..
 * + m[i].n), in the caller's order, f->pos[x] the caller's index of okeys[x]; with src
 * (dim floats a key), the values go along into f->vals. */
static void split_by_owner(struct srv_peer_fwd *f, const char *keys, uint32_t n,
			   const float *src, uint32_t dim)
{
	const struct srv_config *cfg = f->p->cfg;
	unsigned nm = cfg->peers.n;
	memcpy(f->keys, keys, 8ull * n);
	de_peer_owners(&cfg->peers, f->keys, n, f->owner);
	for (unsigned i = 0; i < nm; i++) {
		f->m[i].n = 0;
		f->m[i].err = 0;
		f->m[i].sent = false;
	}
	for (uint32_t j = 0; j < n; j++)
		f->m[f->owner[j]].n++;
	uint32_t at = 0;
	for (unsigned i = 0; i < nm; i++) {
		f->m[i].start = at;
		at += f->m[i].n;
		f->m[i].n = 0;
	}
	for (uint32_t j = 0; j < n; j++) {
		struct member *m = &f->m[f->owner[j]];
		uint32_t to = m->start + m->n++;
		f->pos[to] = j;
		f->okeys[to] = f->keys[j];
		if (src)
			memcpy(f->vals + (uint64_t)to * dim, src + (uint64_t)j * dim, 4ull * dim);
	}
}

/* ---- SAMPLE of a sharded table -------------------------------------------------------
 * The sharded table's distribution is the mixture of the members' samplers: member i is
 * drawn with probability W_i / W (W_i its weight: live keys for UNIFORM, the sum of
 * freq^power for UNIGRAM; W the sum), then a key from P_i, so P(k) = W_i / W * P_i(k) is
 * what one host holding every key would give. Each member sends a stream of draws with
 * replacement (ns at first, more when one runs out) with W_i and P_i of its keys; the
 * streams are interleaved by the mixture's choices, draw by draw, from a generator
 * seeded by the caller's seed: that is ns i.i.d. draws from P (without unique) or the
 * draws until ns distinct keys (with unique, T counting them all), and the expected
 * counts follow de_learn.h's formulas with the global P. LOG_UNIFORM ranks keys over
 * one table: its ranks do not mix, and a sharded table refuses it (-EOPNOTSUPP). */

struct sstream {
	uint64_t *k;
	float *p;
	uint32_t len, at, round;
	double w;
	uint64_t pop;
};

/* The seed of member i's stream number round: every stream of a call its own. */
static uint64_t stream_seed(uint64_t seed, unsigned i, uint32_t round)
{
	return de_mix64(seed ^ de_mix64(((uint64_t)i << 32) | round));
}

/* Ask member i for a stream of n draws (its round; positives pk[np] the first time). */
static int sample_request(struct srv_peer_fwd *f, unsigned i, const struct srv_table *t,
			  const struct de_wire_sample_args *a, const struct sstream *s,
			  uint32_t n, const uint64_t *pk, uint32_t np, uint64_t deadline)
{
	struct member *m = &f->m[i];
	uint32_t handle = 0;
	int err = member_table(f, i, t, deadline, &handle);
	if (err)
		return err;
	unsigned char fixed[32];
	uint64_t seed = stream_seed(a->seed, i, s->round);
	memcpy(fixed, &handle, 4);
	memcpy(fixed + 4, &a->kind, 4);
	memcpy(fixed + 8, &seed, 8);
	memcpy(fixed + 16, &n, 4);
	memcpy(fixed + 20, &np, 4);
	memcpy(fixed + 24, &a->power, 8);
	struct de_peer_hdr h;
	de_peer_hdr_init(&h, DE_PEER_SAMPLE, ++m->req, 32 + 8 * np, 0);
	struct iovec iov[3] = { { &h, sizeof h }, { fixed, 32 }, { (void *)pk, 8ull * np } };
	err = de_peer_write_full(m->fd, iov, np ? 3 : 2, ms_left(deadline));
	if (err)
		return member_fail(f, i, err, "sending SAMPLE: %s", strerror(-err));
	return 0;
}

/* s holds n fresh draws; its weight and population are those of its first stream (the
 * mixture's weights stay fixed for the call). */
static void stream_filled(struct sstream *s, uint32_t n, double w, uint64_t pop)
{
	s->len = n;
	s->at = 0;
	if (!s->round) {
		s->w = w;
		s->pop = pop;
	}
}

/* Member i's stream (and its positives' probabilities into pp), as sent or run locally. */
static int sample_take(struct srv_peer_fwd *f, unsigned i, struct sstream *s, uint32_t n,
		       uint32_t np, float *pp, uint64_t deadline)
{
	struct de_peer_reply r;
	int err = read_reply(f, i, DE_PEER_SAMPLE, n, np, deadline, &r);
	if (err)
		return err;
	if (r.status < 0)
		return r.status;
	memcpy(s->k, r.tkeys, 8ull * n);
	memcpy(s->p, r.tscores, 4ull * n);
	if (np)
		memcpy(pp, r.pprob, 4ull * np);
	stream_filled(s, n, r.weight, r.population);
	return 0;
}

static int sample_local(struct srv_peer_fwd *f, const struct srv_table *t,
			const struct de_wire_sample_args *a, struct sstream *s, uint32_t n,
			const uint64_t *pk, uint32_t np, float *pp, unsigned self)
{
	int h;
	int err = local_table(f, t, &h);
	if (err)
		return err;
	struct dynemb_sample_spec spec = { .kind = (enum dynemb_sampler)a->kind, .num_sampled = n,
					   .power = a->power,
					   .seed = stream_seed(a->seed, self, s->round) };
	struct dynemb_sample_info info;
	err = dynemb_sample_ex(f->ic, h, &spec, pk, np, s->k, s->p, pp, NULL, &info);
	if (!err && !(info.population && info.weight > 0))
		err = -ENOENT;
	if (err)
		return err;
	for (uint32_t j = 0; j < n; j++)
		s->p[j] /= (float)n;
	for (uint32_t j = 0; j < np; j++)
		pp[j] /= (float)n;
	stream_filled(s, n, info.weight, info.population);
	return 0;
}

/* A set of nonzero keys (open addressing, 2^bits slots). */
struct keyset {
	uint64_t *slot;
	size_t mask;
};

static int keyset_init(struct keyset *s, size_t n)
{
	size_t cap = 16;
	while (cap < 2 * n + 16)
		cap <<= 1;
	s->slot = calloc(cap, sizeof *s->slot);
	s->mask = cap - 1;
	return s->slot ? 0 : -ENOMEM;
}

/* Adds k (not 0): true when it was not there. */
static bool keyset_add(struct keyset *s, uint64_t k)
{
	for (size_t i = de_mix64(k) & s->mask;; i = (i + 1) & s->mask) {
		if (s->slot[i] == k)
			return false;
		if (!s->slot[i]) {
			s->slot[i] = k;
			return true;
		}
	}
}

static bool keyset_has(const struct keyset *s, uint64_t k)
{
	for (size_t i = de_mix64(k) & s->mask;; i = (i + 1) & s->mask) {
		if (s->slot[i] == k)
			return true;
		if (!s->slot[i])
			return false;
	}
}

static double expected_of(double p, uint64_t n, uint64_t tries)
{
	return tries == n ? (double)n * p : -expm1((double)tries * log1p(-p));
}

static void forward_sample(struct srv_peer_fwd *f, const struct srv_table *t, char *data,
			   const struct de_sqe *e, struct de_cqe *q)
{
	const struct srv_config *cfg = f->p->cfg;
	unsigned nm = cfg->peers.n, self = cfg->peer_self;
	struct de_wire_sample_args a;
	memcpy(&a, data + e->status_off, sizeof a); /* checked on the copy */
	if ((q->res = srv_check_sample_args(&a, e, f->max_batch)))
		return;
	if (a.kind == DE_SAMPLER_LOG_UNIFORM || (e->flags & DE_SAMPLE_STR)) {
		static struct srv_log_limit lim;
		uint64_t quiet;
		if (srv_log_limit_due(&lim, &quiet))
			srv_logf(SRV_LOG_WARN, SRV_KV(SRV_F_TABLE(t->name), SRV_F_UINT("suppressed", quiet)),
				 "table '%s' is sharded: %s", t->name,
				 a.kind == DE_SAMPLER_LOG_UNIFORM
					 ? "log-uniform sampling ranks the keys of one table, its "
					   "ranks do not mix across members: use uniform or unigram"
					 : "string positives are not sharded");
		q->res = -EOPNOTSUPP;
		return;
	}
	uint32_t ns = a.num_sampled, np = e->count;
	if (np > f->max_batch || ns > DE_PEER_MAX_KEYS) {
		q->res = -E2BIG;
		return;
	}
	/* a refill draws at least REFILL_MIN (unique over skewed weights may need many draws
	 * of one member: 64 * ns + 2^20 at most) */
	uint32_t rn = ns < REFILL_MIN ? REFILL_MIN : ns;
	if (rn > f->max_batch)
		rn = f->max_batch;
	if (rn < ns)
		rn = ns;
	struct sstream *ss = calloc(nm, sizeof *ss);
	float *pp = malloc(4ull * (np ? np : 1)); /* positives' P_i, in owner order */
	double *gp = malloc(8ull * ns);
	struct keyset seen = { 0 }, pos = { 0 };
	int err = !ss || !pp || !gp ? -ENOMEM : 0;
	for (unsigned i = 0; !err && i < nm; i++) {
		ss[i].k = malloc(8ull * rn);
		ss[i].p = malloc(4ull * rn);
		if (!ss[i].k || !ss[i].p)
			err = -ENOMEM;
	}
	if (!err && a.unique)
		err = keyset_init(&seen, ns);
	if (!err && np)
		err = keyset_init(&pos, np);
	if (err)
		goto out;
	/* the positives split by owner, as a batch is */
	split_by_owner(f, data + e->keys_off, np, NULL, 0);
	for (uint32_t j = 0; j < np; j++)
		if (f->keys[j])
			keyset_add(&pos, f->keys[j]);
	/* the first streams: remote ones in flight while the local one is drawn */
	uint64_t deadline = srv_mono_ns() + cfg->peer_timeout_ms * 1000000ull;
	for (unsigned i = 0; i < nm; i++)
		if (i != self) {
			f->m[i].err = sample_request(f, i, t, &a, &ss[i], ns, f->okeys + f->m[i].start,
						     f->m[i].n, deadline);
			f->m[i].sent = !f->m[i].err;
		}
	f->m[self].err = sample_local(f, t, &a, &ss[self], ns, f->okeys + f->m[self].start,
				      f->m[self].n, pp + f->m[self].start, self);
	for (unsigned i = 0; i < nm; i++)
		if (f->m[i].sent)
			f->m[i].err = sample_take(f, i, &ss[i], ns, f->m[i].n, pp + f->m[i].start,
						  deadline);
	double W = 0;
	uint64_t pop = 0;
	for (unsigned i = 0; i < nm; i++) {
		if (f->m[i].err == -ENOENT) { /* nothing to draw there: weight 0 */
			f->m[i].err = 0;
			ss[i].w = 0;
			ss[i].pop = 0;
			ss[i].len = 0;
			for (uint32_t j = 0; j < f->m[i].n; j++)
				pp[f->m[i].start + j] = 0;
		}
		if (f->m[i].err && !err)
			err = f->m[i].err;
		W += ss[i].w;
		pop = ss[i].pop > UINT64_MAX - pop ? UINT64_MAX : pop + ss[i].pop;
	}
	if (err)
		goto out;
	if (!(W > 0)) {
		err = -ENOENT;
		goto out;
	}
	if (!isfinite(W)) { /* the members' weights add up past a double: not a table's */
		err = -EOVERFLOW;
		goto out;
	}
	if (a.unique && ns > pop) {
		err = -ERANGE;
		goto out;
	}
	/* the mixture's draws, one by one */
	uint64_t *sk = (uint64_t *)(void *)(data + e->vals_off);
	float *sexp = (float *)(void *)(data + e->vals_off + 8ull * ns), *texp = sexp + ns;
	uint8_t *acc = (uint8_t *)(texp + np);
	uint64_t rng = de_mix64(a.seed ^ 0x5a4d504cull), tries = 0;
	uint64_t max_tries = DE_SAMPLE_MAX_TRIES(ns);
	for (uint32_t got = 0; got < ns;) {
		if (tries >= max_tries) {
			err = -EAGAIN;
			goto out;
		}
		double u = (double)(de_splitmix64_next(&rng) >> 11) * 0x1p-53 * W, c = 0;
		unsigned i = 0;
		while (i + 1 < nm && (c += ss[i].w, u >= c || !(ss[i].w > 0)))
			i++;
		while (!(ss[i].w > 0)) /* u rounded past the last weight */
			i--;
		struct sstream *s = &ss[i];
		if (s->at == s->len) { /* its stream ran out: the next one */
			s->round++;
			/* each refill has its own deadline: a long call is no member's fault */
			uint64_t rd = srv_mono_ns() + cfg->peer_timeout_ms * 1000000ull;
			if (i == self)
				err = sample_local(f, t, &a, s, rn, NULL, 0, NULL, self);
			else if (!(err = sample_request(f, i, t, &a, s, rn, NULL, 0, rd)))
				err = sample_take(f, i, s, rn, 0, NULL, rd);
			if (err == -ENOENT) /* it emptied meanwhile: its weight is still counted */
				err = -EAGAIN;
			if (err)
				goto out;
		}
		tries++;
		uint64_t k = s->k[s->at];
		double p = s->w / W * (double)s->p[s->at++];
		if (a.unique && !keyset_add(&seen, k))
			continue;
		sk[got] = k;
		gp[got++] = p;
	}
	for (uint32_t j = 0; j < ns; j++) {
		sexp[j] = (float)expected_of(gp[j], ns, tries);
		acc[j] = np && keyset_has(&pos, sk[j]);
	}
	/* a positive whose owner has nothing to draw gets a floor, as on one host: uniform
	 * 1 / L, unigram the smallest P seen (never 0: log(expected) stays finite) */
	double pmin = 1;
	for (uint32_t j = 0; j < ns; j++)
		pmin = gp[j] > 0 && gp[j] < pmin ? gp[j] : pmin;
	for (unsigned i = 0; i < nm; i++)
		for (uint32_t j = 0; j < f->m[i].n; j++) {
			uint32_t x = f->m[i].start + j;
			double p = !f->okeys[x] ? 0
				   : !(ss[i].w > 0) ? (a.kind == DE_SAMPLER_UNIFORM ? 1.0 / (double)pop
										      : pmin)
				   : ss[i].w / W * (double)pp[x];
			texp[f->pos[x]] = (float)expected_of(p, ns, tries);
		}
	if (e->flags & DE_SAMPLE_WEIGHT)
		memcpy(acc + ns, &W, 8);
	q->count = ns;
	q->aux0 = tries;
	q->aux1 = pop;
out:
	q->res = err;
	free(gp);
	free(pp);
	free(seen.slot);
	free(pos.slot);
	if (ss)
		for (unsigned i = 0; i < nm; i++) {
			free(ss[i].k);
			free(ss[i].p);
		}
	free(ss);
}

void srv_peer_forward(struct srv_peer_fwd *f, const struct srv_table *t, char *data,
		      const struct de_sqe *e, struct de_cqe *q)
{
	const struct srv_config *cfg = f->p->cfg;
	unsigned nm = cfg->peers.n, self = cfg->peer_self;
	uint32_t n = e->count, dim = t->wcfg.dim;
	*q = (struct de_cqe){ .user_data = e->user_data };
	if (e->op == DE_OP_TOPK) {
		forward_topk(f, t, data, e, q);
		return;
	}
	if (e->op == DE_OP_SAMPLE) {
		forward_sample(f, t, data, e, q);
		return;
	}
	if (n > f->max_batch) {
		q->res = -E2BIG;
		return;
	}
	bool vals = e->op == DE_OP_UPDATE || e->op == DE_OP_APPLY_GRADS;
	uint64_t nf = (uint64_t)n * dim;
	if ((vals || e->op == DE_OP_LOOKUP) && nf > f->vcap) {
		float *v = realloc(f->vals, nf * sizeof *v), *r = v ? realloc(f->rows, nf * sizeof *r)
								    : NULL;
		if (v)
			f->vals = v;
		if (r)
			f->rows = r;
		if (!v || !r) {
			q->res = -ENOMEM;
			return;
		}
		f->vcap = nf;
	}
	split_by_owner(f, data + e->keys_off, n,
		       vals ? (const float *)(const void *)(data + e->vals_off) : NULL, dim);
	uint64_t deadline = srv_mono_ns() + cfg->peer_timeout_ms * 1000000ull;
	for (unsigned i = 0; i < nm; i++)
		if (i != self && f->m[i].n) {
			f->m[i].err = send_part(f, i, t, e, deadline);
			f->m[i].sent = !f->m[i].err;
		}
	uint32_t a = 0, b = 0;
	if (f->m[self].n) /* while the remote parts are in flight */
		f->m[self].err = local_part(f, self, t, e, &a, &b);
	for (unsigned i = 0; i < nm; i++)
		if (f->m[i].sent)
			f->m[i].err = recv_part(f, i, t, e, deadline, &a, &b);
	int err = 0;
	for (unsigned i = 0; i < nm && !err; i++)
		err = f->m[i].err;
	if (err) {
		q->res = err;
		return;
	}
	if (e->op == DE_OP_LOOKUP) {
		float *dst = (float *)(void *)(data + e->vals_off);
		for (uint32_t j = 0; j < n; j++)
			memcpy(dst + (uint64_t)f->pos[j] * dim, f->rows + (uint64_t)j * dim,
			       4ull * dim);
		if (e->flags & DE_SQE_STATUS)
			for (uint32_t j = 0; j < n; j++)
				data[e->status_off + f->pos[j]] = (char)f->st[j];
		q->count = a;
		q->aux0 = b;
	} else {
		q->count = a;
		q->aux0 = e->op == DE_OP_APPLY_GRADS ? b : 0;
	}
}
