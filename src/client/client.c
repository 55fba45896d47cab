/*
 * client.c — libdynemb: the client side of the dynemb sidecar (public API: dynemb.h;
 * wire protocol: src/proto.h; shared memory: shm/de_shm.h).
 *
 * Owns, per dynemb_client: the control socket (SOCK_SEQPACKET, one request at a time), the
 * channel mapping (submission/completion rings + data area), the read-only mappings of
 * the tables it opened (zero-copy reads), and the bookkeeping of requests in flight.
 * Never writes table memory (it is mapped PROT_READ from O_RDONLY fds) and never trusts
 * the daemon: every reply is checked (magic, version, type, exact length, seq), every
 * fd count is checked against what the reply says and surplus fds are closed, every
 * count in a completion is checked against the request, every status byte is checked.
 *
 * Data area plan. The data area (D bytes) is a FIFO ring allocator: each request takes
 * one contiguous region [keys | vals | status] (each part 64-byte aligned) at the ring's
 * head; a region that would straddle the end skips to offset 0 (the skipped bytes belong
 * to it). Regions are released in any order but the tail only moves past released ones
 * from the oldest on, so space comes back in allocation order. Positions are free-running
 * u64 counters (offset = counter % D); head - tail <= D always. A completed async
 * request's region is released at dynemb_complete but its bytes stay put until a later
 * request allocates over them: that is why dynemb_request_vals is valid only until the next
 * call that submits (any dynemb_lookup/update/erase/stats/submit on this client).
 *
 * A slot whose region is released but not yet passed by the tail (an older region is
 * still held) is not reused until it is: the FIFO holds each slot at most once.
 *
 * Requests. Every request (blocking or async) takes a slot; slots in flight never exceed
 * the submission ring's size, so de_channel_submit cannot find the ring full and the
 * daemon can always post every completion (cq_entries >= sq_entries). user_data is
 * (generation << 16 | slot): a completion names its slot, and a stale or forged one is
 * caught by the generation. Completions are reaped in whatever order they come and
 * stashed in their slot. A blocking call that times out leaves its slot ABANDONED: the
 * region stays allocated (the daemon may still write it) until the completion shows up.
 *
 * Batches. A blocking call splits n keys into chunks of at most min(max_batch, what
 * fits in the largest free region of the data area), pipelined (up to PIPE_DEPTH in
 * flight). Gradients are checked finite first (so a rejected call applies nothing) and,
 * when there is more than one key, deduplicated here (by key, or by the string's
 * fingerprint, as the daemon does; summed in batch order, as the daemon does), so that
 * splitting never steps a key twice in one call.
 *
 * Learning config. dynemb_table_spec's optimizer/admission/eviction/durability go on the
 * wire as they are (struct de_wire_learn_config); the daemon validates and normalizes
 * them (proto.h). This side checks only what it must to build the message (enums in
 * range so they fit their wire fields).
 *
 * Zero-copy. dynemb_lookup/dynemb_lookup_str with DYNEMB_READONLY probe the table's read-only
 * mapping first (de_table_find). DE_FOUND and DE_MISSING are final; DE_RETRY keys (no
 * stable copy, or a key in an arena segment the daemon has not passed yet) go to the
 * daemon. A string key's DE_FOUND is final only once the daemon served that fingerprint
 * to the same string (struct vset): the row could be another string's. New segments are fetched on demand by the table's fd source (seg_source), which
 * sends SEGMENTS on the control socket and caches surplus fds of a reply.
 *
 * Errors. Every function returns 0 or a negative errno. The text of the daemon's last
 * ERROR reply is kept per thread (thread-local), with its errno; dynemb_strerror(err)
 * appends it while err is that errno. Each control request clears it first, and so does
 * each data-plane call. Every -EINVAL found on this side keeps a message the same way
 * (de_priv_err): which argument, and the rule it broke.
 *
 * A daemon that went away. The control socket is its liveness: a wait on the completion
 * ring looks at it every LIVENESS_MS (a dead daemon posts nothing and wakes no one), and a
 * closed one (POLLHUP/POLLRDHUP), like a control request that finds it closed, makes the
 * call and every later one fail at once with -ECONNRESET (or -EPIPE from a send), and the
 * text "dynembd went away ..." (broken_err). Zero-copy reads of tables already mapped
 * do not ask the daemon and so go on working until a call does.
 *
 * Not thread-safe: one dynemb_client per thread (dynemb.h says so). The fd source runs
 * inside de_table_find on the calling thread, so it may use the control socket.
 */
#include "dynemb.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "client_priv.h"
#include "de_shm.h"
#include "learn/optim_defaults.h"
#include "proto.h"

#define unlikely(x) __builtin_expect(!!(x), 0)

#define DEFAULT_TIMEOUT_MS 10000
#define SPIN_NS 50000ull       /* busy-poll the completion ring this long, then futex-sleep */
#define MAX_TABLES 256u        /* table handles per client */
#define MAX_SLOTS 4096u        /* requests in flight, at most the SQ size */
#define SCM_MAX 253u           /* the kernel's SCM_MAX_FD: the most fds one recvmsg can bring */
#define SEG_WAIT_MS 2000       /* how long the fd source waits for a segment the daemon lacks */
#define LIVENESS_MS 100        /* a ring wait looks at the control socket this often */
#define ALIGN 64u

/* ------------------------------------------------------------------------- */
/* Types                                                                      */
/* ------------------------------------------------------------------------- */

/*
 * A set of string fingerprints (open addressing, linear probing; 0 is never stored: the
 * empty string reads as zeros anyway). A read-only lookup serves a string key from the
 * mapping only once the daemon served that fingerprint's row to the same string: the
 * daemon compares each string with the one it keeps for the fingerprint (proto.h), and
 * that string never changes, so a colliding string never reads another key's row here.
 * Bounded: at VSET_MAX entries it starts over (the keys are verified again).
 */
#define VSET_MAX (1u << 20)
struct vset {
	uint64_t *slot;
	size_t cap, n;          /* cap: a power of two, or 0 */
};

static bool vset_has(const struct vset *v, uint64_t h)
{
	if (!v->cap)
		return false;
	for (size_t i = h & (v->cap - 1);; i = (i + 1) & (v->cap - 1)) {
		if (v->slot[i] == h)
			return true;
		if (!v->slot[i])
			return false;
	}
}

/* Add h (!= 0); a failed allocation only forgets (the key is verified again). */
static void vset_add(struct vset *v, uint64_t h)
{
	if (!h || vset_has(v, h))
		return;
	if (2 * (v->n + 1) > v->cap) {
		size_t cap = v->cap && v->n < VSET_MAX ? 2 * v->cap : 1024;
		uint64_t *ns = calloc(cap, sizeof *ns);
		if (!ns)
			return;
		for (size_t i = 0; v->n < VSET_MAX && i < v->cap; i++) /* full: start over */
			if (v->slot[i])
				for (size_t j = v->slot[i] & (cap - 1);; j = (j + 1) & (cap - 1))
					if (!ns[j]) {
						ns[j] = v->slot[i];
						break;
					}
		if (v->n >= VSET_MAX)
			v->n = 0;
		free(v->slot);
		v->slot = ns;
		v->cap = cap;
	}
	for (size_t j = h & (v->cap - 1);; j = (j + 1) & (v->cap - 1))
		if (!v->slot[j]) {
			v->slot[j] = h;
			v->n++;
			return;
		}
}

struct ctable {
	struct dynemb_client *c;    /* back pointer, for the fd source */
	uint16_t wire_id;       /* the daemon's table id on this connection */
	uint32_t dim;
	uint32_t key_type;      /* enum de_key_type */
	uint64_t seed;
	de_arena *arena;        /* read-only mapping of the table's arena; owned */
	de_table *ro;           /* read-only table on it; owned */
	int segfd[DE_ARENA_MAX_SEGMENTS]; /* fds received ahead of need, -1 when none; owned */
	struct vset verified;   /* string tables: fingerprints whose row the daemon served to
	                           this key's string (zero-copy may serve them); owned */
	char name[DE_NAME_MAX];
	bool miss_remote;       /* DE_OPEN_MISS_REMOTE: sharded over peers; a zero-copy miss
	                           asks the daemon (the key may be another host's) */
	bool dropped;           /* the daemon said -EIDRM (a forced DROP revoked it), or its
	                           mapping is retired: every later call fails -EIDRM */
	/* serving handles (dynemb_open_serving): name is the serving name; ro maps the version
	 * current when it was opened or last switched (serve_switch) */
	bool serving, miss_init;
	uint64_t serve_found, serve_missing, serve_switches;
};

enum slot_state {
	S_FREE = 0,
	S_INFLIGHT,   /* submitted, completion not reaped */
	S_REAPED,     /* completion stashed, dynemb_complete not called yet (async) */
	S_COMPLETED,  /* async, dynemb_complete returned: vals readable until the next submit */
	S_ABANDONED,  /* blocking call timed out: free when its completion arrives */
};

struct slot {
	uint64_t id;            /* user_data; 0 when free */
	uint8_t state;
	bool released;          /* its data-area region was given back */
	bool in_fifo;           /* its region is still in the allocator's FIFO: the slot
	                           cannot take a new one until the tail moved past */
	bool local;             /* async request served from the read-only mapping */
	uint8_t op;             /* async: DE_OP_LOOKUP or DE_OP_APPLY_GRADS */
	uint16_t table;         /* the descriptor's wire table id (-EIDRM names the table) */
	uint32_t n, dim;
	uint64_t start, end;    /* ring counters of its region */
	uint64_t vals_off;      /* data-area offset of its values */
	struct de_cqe cqe;      /* stashed completion */
};

struct dynemb_client {
	int sock;
	uint32_t seq;           /* last control request number */
	int timeout_ms;
	int broken;             /* 0, or the error every call returns from now on */
	bool gone;              /* broken because the daemon's end of the socket closed */
	bool error_reply;       /* the last ctl_recv got an ERROR reply */
	de_channel *ch;
	uint8_t *data;          /* the channel's data area */
	uint64_t data_bytes;
	uint32_t client_id, sq_entries, cq_entries, max_batch;
	uint64_t capabilities;  /* HELLO_OK's: DE_CAP_* == DYNEMB_CAP_* */

	struct ctable *tables[MAX_TABLES];
	unsigned ntables;

	struct slot *slots;
	unsigned nslots;
	uint32_t gen;
	/* FIFO of slots holding data-area regions, in allocation order */
	uint16_t *fifo;
	unsigned fifo_head, fifo_len;
	uint64_t rhead, rtail;  /* ring allocator counters */

	uint64_t local_keys, remote_keys;
	/* client_persist.c: ctl_recv also takes a PROGRESS of the current request (alt_len
	 * bytes) and returns it with alt_got set */
	uint32_t alt_len;
	bool alt_got;
};

/* ------------------------------------------------------------------------- */
/* Errors                                                                     */
/* ------------------------------------------------------------------------- */

/* The daemon's message for the last ERROR reply on this thread, with its errno. */
static __thread int tls_err;
static __thread char tls_msg[sizeof(((struct de_msg_error *)0)->msg)];
static __thread char tls_buf[sizeof tls_msg + 128];
static __thread bool tls_data_plane; /* the message is about a data-plane request */

static void err_clear(void)
{
	tls_err = 0;
	tls_msg[0] = 0;
	tls_data_plane = false;
}

int de_priv_err(int err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(tls_msg, sizeof tls_msg, fmt, ap);
	va_end(ap);
	tls_err = err;
	tls_data_plane = false;
	return err;
}

int de_priv_put_name(char dst[DE_NAME_MAX], const char *name)
{
	size_t n = name ? strlen(name) : 0;
	if (!n || n >= DE_NAME_MAX)
		return de_priv_err(-EINVAL, "table name %s: a table name is 1 to %u bytes, "
				   "without control characters", n ? "too long" : "empty",
				   DE_NAME_MAX - 1);
	memcpy(dst, name, n);
	return 0;
}

int de_priv_data_err(int err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(tls_msg, sizeof tls_msg, fmt, ap);
	va_end(ap);
	tls_err = err;
	tls_data_plane = true;
	return err;
}

const char *dynemb_strerror(int err)
{
	const char *s;
	switch (err) {
	case 0: s = "success"; break;
	case -ENOENT: s = "not found: no daemon socket at that path (is dynembd running?), or no such table or file"; break;
	case -ECONNREFUSED: s = "connection refused: no daemon listening on the socket"; break;
	case -EACCES: s = "permission denied: this uid/gid is not on the daemon's allow-list, or lacks the right (open, write, export, import, snapshot, drop) on this table ([namespace] in the daemon's config)"; break;
	case -EPROTO: s = "protocol error: the daemon speaks another protocol version or sent a malformed reply"; break;
	case -EEXIST: s = "a table of that name exists with a different config"; break;
	case -EINVAL: s = "invalid argument (bad handle, spec, key type or flags)"; break;
	case -ENOMEM: s = "out of memory"; break;
	case -ETIMEDOUT: s = "timed out waiting for the daemon"; break;
	case -EAGAIN: s = "too many requests in flight or the data area is full; complete some first"; break;
	case -ENOBUFS: s = "the request does not fit in the channel's data area"; break;
	case -E2BIG: s = "batch larger than the daemon's max batch"; break;
	case -EBADMSG: s = "corrupt data from the daemon (bad completion, channel or mapping)"; break;
	case -ECONNRESET: s = "the daemon closed the connection"; break;
	case -EPIPE: s = "the daemon closed the connection (broken pipe)"; break;
	case -ENOTCONN: s = "the connection is unusable after an earlier error"; break;
	case -EMFILE: s = "too many open files"; break;
	case -ENAMETOOLONG: s = "socket path or name too long"; break;
	case -ESRCH: s = "no such request (unknown, already recycled, or not submitted here)"; break;
	case -EROFS: s = "read-only"; break;
	case -ENOSPC: s = "the daemon is out of space"; break;
	case -EBUSY: s = "the daemon is busy"; break;
	case -ENFILE: s = "too many open files in the system"; break;
	case -EOPNOTSUPP: s = "the table has no optimizer: open it with one to apply gradients"; break;
	case -EIDRM: s = "the table was dropped (a forced drop revoked this handle): open it again"; break;
	default: {
		const char *d = err < 0 ? strerrordesc_np(-err) : NULL;
		s = d ? d : "unknown error";
		break;
	}
	}
	if (err != 0 && err == tls_err && tls_msg[0]) {
		/* the message names the problem: the generic texts would only mislead */
		if (err == -EINVAL)
			s = "invalid argument";
		else if (err == -ENOENT) /* the daemon answered: not a missing socket */
			s = "not found";
		else if (err == -EEXIST && tls_data_plane)
			s = "key conflict";
		else if (err == -ENOSPC && tls_data_plane)
			s = "no room for the key";
		snprintf(tls_buf, sizeof tls_buf, "%s: %s", s, tls_msg);
		return tls_buf;
	}
	return s;
}

int de_priv_reserved(const uint64_t *r, size_t n, const char *what)
{
	for (size_t i = 0; i < n; i++) {
		if (r[i]) {
			return de_priv_err(-EINVAL,
				 "%s.reserved[%zu] is not 0 (zero-initialize the struct)", what, i);
		}
	}
	return 0;
}

size_t dynemb_struct_size(const char *name)
{
	static const struct {
		const char *name;
		size_t size;
	} sizes[] = {
#define S(n) { #n, sizeof(struct n) }
		S(dynemb_connect_opts), S(dynemb_optim_spec), S(dynemb_admission_spec),
		S(dynemb_eviction_spec), S(dynemb_durability_spec), S(dynemb_table_spec),
		S(dynemb_stats), S(dynemb_sample_spec), S(dynemb_progress),
		S(dynemb_snapshot_result), S(dynemb_import_result), S(dynemb_status),
		S(dynemb_serve_result), S(dynemb_serve_info),
		S(dynemb_table_info), S(dynemb_op_stat), S(dynemb_wal_stats),
#undef S
	};
	for (size_t i = 0; name && i < sizeof sizes / sizeof sizes[0]; i++)
		if (!strcmp(name, sizes[i].name))
			return sizes[i].size;
	return 0;
}

/* ------------------------------------------------------------------------- */
/* Control plane                                                              */
/* ------------------------------------------------------------------------- */

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void close_fds(int *fds, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		if (fds[i] >= 0)
			close(fds[i]);
}

static void hdr_init(struct dynemb_client *c, struct de_msg_hdr *h, uint16_t type, uint32_t len)
{
	h->magic = DE_MSG_MAGIC;
	h->type = type;
	h->version = DE_PROTO_VERSION;
	h->len = len;
	h->seq = ++c->seq;
	if (!h->seq) /* 0 is the daemon's refusal of the connection (ctl_recv) */
		h->seq = ++c->seq;
}

static int ctl_send(struct dynemb_client *c, const void *msg, size_t len)
{
	ssize_t r;
	do
		r = send(c->sock, msg, len, MSG_NOSIGNAL);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return -errno;
	if ((size_t)r != len)
		return -EPROTO;
	return 0;
}

/*
 * Wait for the reply to request c->seq: a message of type want and exactly want_len
 * bytes, or ERROR. Replies to older requests (ones that timed out) are dropped with
 * their fds. fds (out): up to max_fds received fds; *nfds their count. Returns 0, the
 * ERROR's errno (its text saved for dynemb_strerror), or a negative errno.
 */
static int ctl_recv(struct dynemb_client *c, uint16_t want, size_t want_len, void *buf,
		    int *fds, unsigned max_fds, unsigned *nfds)
{
	union {
		struct de_msg_hdr h;
		struct de_msg_error e;
		char b[DE_MSG_MAX];
	} m;
	union {
		struct cmsghdr align;
		char b[CMSG_SPACE(SCM_MAX * sizeof(int))];
	} cm;
	*nfds = 0;
	c->error_reply = false;
	bool reset = false;
	int64_t deadline = now_ms() + c->timeout_ms;
	for (;;) {
		int left = (int)(deadline - now_ms());
		if (left <= 0)
			return -ETIMEDOUT;
		struct pollfd p = { .fd = c->sock, .events = POLLIN };
		int pr = poll(&p, 1, left);
		if (pr < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (pr == 0)
			return -ETIMEDOUT;

		struct iovec iov = { .iov_base = m.b, .iov_len = sizeof m.b };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
				     .msg_control = cm.b, .msg_controllen = sizeof cm.b };
		ssize_t r = recvmsg(c->sock, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
		if (r < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			/* a peer that closed with our request unread: the reset comes first,
			 * once, and its last reply (a refusal) may still be queued */
			if (errno == ECONNRESET && !reset) {
				reset = true;
				continue;
			}
			return -errno;
		}
		if (r == 0)
			return -ECONNRESET;

		/* Collect every fd that came, whatever the message says. */
		int got[SCM_MAX];
		unsigned ngot = 0;
		for (struct cmsghdr *h = CMSG_FIRSTHDR(&mh); h; h = CMSG_NXTHDR(&mh, h)) {
			if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS)
				continue;
			size_t k = (h->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			const unsigned char *d = CMSG_DATA(h);
			for (size_t i = 0; i < k; i++) {
				int fd;
				memcpy(&fd, d + i * sizeof(int), sizeof fd);
				if (ngot < SCM_MAX)
					got[ngot++] = fd;
				else
					close(fd);
			}
		}
		int err = 0;
		if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC))
			err = -EPROTO; /* a lost fd or byte: the reply cannot be trusted */
		else if ((size_t)r < sizeof(struct de_msg_hdr) || m.h.magic != DE_MSG_MAGIC)
			err = -EPROTO;
		else if (m.h.version != DE_PROTO_VERSION)
			err = -EPROTO;
		else if (m.h.len != (uint32_t)r)
			err = -EPROTO;
		if (err) {
			close_fds(got, ngot);
			return err;
		}
		/* seq 0: the daemon refused the connection at accept (allow-list, per-uid cap)
		 * or closes it (no HELLO in time): the answer to whatever was asked */
		bool refusal = m.h.seq == 0 && m.h.type == DE_MSG_ERROR;
		if (m.h.seq != c->seq && !refusal) {
			/* a late reply to a request that timed out: drop it */
			close_fds(got, ngot);
			if ((int32_t)(c->seq - m.h.seq) > 0)
				continue;
			return -EPROTO;
		}
		if (m.h.type == DE_MSG_ERROR) {
			close_fds(got, ngot);
			if ((size_t)r != sizeof(struct de_msg_error))
				return -EPROTO;
			int32_t e = m.e.err;
			if (e >= 0 || e < -4095)
				return -EPROTO;
			memcpy(tls_msg, m.e.msg, sizeof tls_msg);
			tls_msg[sizeof tls_msg - 1] = 0;
			tls_err = e;
			tls_data_plane = false;
			c->error_reply = true;
			return e;
		}
		c->alt_got = c->alt_len && m.h.type == DE_MSG_PROGRESS &&
			     (size_t)r == c->alt_len && !ngot;
		if (c->alt_got) {
			memcpy(buf, m.b, c->alt_len);
			return 0;
		}
		if (m.h.type != want || (size_t)r != want_len || ngot > max_fds) {
			close_fds(got, ngot);
			return -EPROTO;
		}
		memcpy(buf, m.b, want_len);
		memcpy(fds, got, ngot * sizeof(int));
		*nfds = ngot;
		return 0;
	}
}

/* c->broken, for a call that cannot proceed; when the daemon went away, with the reason
 * for dynemb_strerror (every later call says it again, whatever ran in between). */
static int broken_err(const struct dynemb_client *c)
{
	if (c->gone) {
		tls_err = c->broken;
		snprintf(tls_msg, sizeof tls_msg, "dynembd went away (it exited or was killed, or "
			 "closed this connection; its log says which): connect again once it is back");
	}
	return c->broken;
}

/* The daemon's end of the control socket closed (it exits, is killed, or dropped this
 * client): err (-ECONNRESET, -EPIPE) from every call from now on. */
static int daemon_gone(struct dynemb_client *c, int err)
{
	c->broken = err;
	c->gone = true;
	return broken_err(c);
}

/* Has the daemon closed the control socket? Never blocks. */
static bool peer_closed(const struct dynemb_client *c)
{
	struct pollfd p = { .fd = c->sock, .events = POLLRDHUP };
	return poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLRDHUP | POLLERR));
}

/* A control-plane failure other than an ERROR reply (c->error_reply) leaves the socket
 * in an unknown state: a malformed or missing reply makes later calls fail. A timeout
 * does not: a late reply is recognised by its seq and dropped. */
static int ctl_fail(struct dynemb_client *c, int err)
{
	if (!c->error_reply && (err == -ECONNRESET || err == -EPIPE))
		return daemon_gone(c, err);
	if (!c->error_reply && err == -EPROTO)
		c->broken = err;
	return err;
}

/* ------------------------------------------------------------------------- */
/* Connect                                                                    */
/* ------------------------------------------------------------------------- */

static void client_free(struct dynemb_client *c);

int dynemb_connect(const char *socket_path, const struct dynemb_connect_opts *opts,
		   dynemb_client **out)
{
	err_clear();
	if (!out)
		return de_priv_err(-EINVAL, "dynemb_connect: out is NULL");
	*out = NULL;
	if (!socket_path)
		socket_path = DE_DEFAULT_SOCKET;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t plen = strlen(socket_path);
	if (!plen)
		return de_priv_err(-EINVAL, "dynemb_connect: the socket path is empty");
	if (plen >= sizeof sa.sun_path)
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, socket_path, plen + 1);
	if (opts && DE_PRIV_RESERVED(opts, "dynemb_connect_opts"))
		return -EINVAL;
	if (opts && opts->timeout_ms < 0)
		return de_priv_err(-EINVAL, "dynemb_connect_opts.timeout_ms is %d: it must be >= 0 "
				   "(0 = the default)", opts->timeout_ms);

	struct dynemb_client *c = calloc(1, sizeof *c);
	if (!c)
		return -ENOMEM;
	c->timeout_ms = opts && opts->timeout_ms ? opts->timeout_ms : DEFAULT_TIMEOUT_MS;
	c->sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	int err = 0;
	if (c->sock < 0) {
		err = -errno;
		goto fail;
	}
	if (connect(c->sock, (struct sockaddr *)&sa, sizeof sa) != 0) {
		err = -errno;
		goto fail;
	}

	struct de_msg_hello hello = { 0 };
	hdr_init(c, &hello.h, DE_MSG_HELLO, sizeof hello);
	if (opts) {
		hello.sq_entries = opts->sq_entries;
		hello.data_bytes = opts->data_bytes;
		if (opts->name)
			snprintf(hello.name, sizeof hello.name, "%s", opts->name);
	}
	err = ctl_send(c, &hello, sizeof hello);
	if (err && err != -EPIPE && err != -ECONNRESET)
		goto fail;
	/* a daemon that refused this connection at accept sent its reason before closing:
	 * read it even when the HELLO found the socket closed */
	int send_err = err;
	struct de_msg_hello_ok ok;
	int fds[1];
	unsigned nfds;
	err = ctl_recv(c, DE_MSG_HELLO_OK, sizeof ok, &ok, fds, 1, &nfds);
	if (err && send_err && !c->error_reply)
		err = send_err;
	if (!err && send_err) {
		close_fds(fds, nfds);
		err = send_err;
	}
	if (err)
		goto fail;
	if (nfds != 1) {
		close_fds(fds, nfds);
		err = -EPROTO;
		goto fail;
	}
	err = de_channel_attach(fds[0], &c->ch); /* dups the fd */
	close(fds[0]);
	if (err)
		goto fail;

	/* The reply's sizes must agree with the channel it came with. */
	uint64_t dbytes = 0;
	c->data = de_channel_data(c->ch, &dbytes);
	if (ok.data_bytes != dbytes || !dbytes || !ok.max_batch || ok.sq_entries < 1 ||
	    ok.sq_entries > DE_CHANNEL_MAX_ENTRIES || ok.cq_entries < ok.sq_entries ||
	    ok.cq_entries > 2 * DE_CHANNEL_MAX_ENTRIES) {
		err = -EPROTO;
		goto fail;
	}
	c->data_bytes = dbytes;
	c->client_id = ok.client_id;
	c->capabilities = ok.capabilities;
	c->sq_entries = ok.sq_entries;
	c->cq_entries = ok.cq_entries;
	c->max_batch = ok.max_batch;

	c->nslots = ok.sq_entries < MAX_SLOTS ? ok.sq_entries : MAX_SLOTS;
	c->slots = calloc(c->nslots, sizeof *c->slots);
	c->fifo = calloc(c->nslots, sizeof *c->fifo);
	if (!c->slots || !c->fifo) {
		err = -ENOMEM;
		goto fail;
	}
	*out = c;
	return 0;
fail:
	client_free(c);
	return err;
}

static void table_free(struct ctable *t)
{
	if (!t)
		return;
	de_table_close(t->ro);
	de_arena_destroy(t->arena);
	close_fds(t->segfd, DE_ARENA_MAX_SEGMENTS);
	free(t->verified.slot);
	free(t);
}

static void client_free(struct dynemb_client *c)
{
	for (unsigned i = 0; i < c->ntables; i++)
		table_free(c->tables[i]);
	de_channel_destroy(c->ch);
	if (c->sock >= 0)
		close(c->sock);
	free(c->slots);
	free(c->fifo);
	free(c);
}

void dynemb_close(dynemb_client *c)
{
	if (!c)
		return;
	if (!c->broken) {
		struct de_msg_hdr bye;
		hdr_init(c, &bye, DE_MSG_BYE, sizeof bye);
		(void)ctl_send(c, &bye, sizeof bye); /* best effort; closing says the same */
	}
	client_free(c);
}

/* ------------------------------------------------------------------------- */
/* Tables                                                                     */
/* ------------------------------------------------------------------------- */

/* -EIDRM: t's table was dropped by a forced DROP (the daemon revoked this handle, or its
 * mapping is retired); t stays dead. */
static int dropped_err(struct ctable *t)
{
	t->dropped = true;
	return de_priv_data_err(-EIDRM, "table '%s' was dropped from the daemon (a forced drop, "
				"dynembctl drop --force): this handle no longer works; close it "
				"and open the table again (a new, empty table if it is created "
				"again)", t->name);
}

static struct ctable *table_get(const struct dynemb_client *c, int table)
{
	if (!c || table < 0 || (unsigned)table >= c->ntables)
		return NULL;
	return c->tables[table];
}

/* -EINVAL naming a handle that is not a table of this client (c may be NULL). */
static int bad_handle(const struct dynemb_client *c, int table)
{
	if (!c)
		return de_priv_err(-EINVAL, "the client is NULL");
	if (!c->ntables)
		return de_priv_err(-EINVAL, "table handle %d: no table is open on this client "
				   "(dynemb_open gives handles)", table);
	return de_priv_err(-EINVAL, "table handle %d is not open on this client (its handles "
			   "are 0..%u)", table, c->ntables - 1);
}

uint32_t dynemb_table_dim(const dynemb_client *c, int table)
{
	const struct ctable *t = table_get(c, table);
	return t ? t->dim : 0;
}

/*
 * The read-only table's fd source (runs inside de_table_find / de_arena_refresh): the
 * fd of arena segment seg, from the cache or by a SEGMENTS request from seg on. A
 * segment the daemon has not announced yet (count 0 or ERROR -EAGAIN) is asked again
 * for up to SEG_WAIT_MS. The arena takes ownership of the fd returned.
 */
static int seg_source(void *ctx, unsigned seg)
{
	struct ctable *t = ctx;
	struct dynemb_client *c = t->c;
	if (seg >= DE_ARENA_MAX_SEGMENTS)
		return -EBADMSG;
	if (t->segfd[seg] >= 0) {
		int fd = t->segfd[seg];
		t->segfd[seg] = -1;
		return fd;
	}
	if (c->broken)
		return broken_err(c);
	int64_t deadline = now_ms() + SEG_WAIT_MS;
	for (;;) {
		err_clear();
		struct de_msg_segments rq = { .table_id = t->wire_id, .first = seg };
		hdr_init(c, &rq.h, DE_MSG_SEGMENTS, sizeof rq);
		int err = ctl_send(c, &rq, sizeof rq);
		if (err)
			return ctl_fail(c, err);
		struct de_msg_segments_ok ok;
		int fds[SCM_MAX];
		unsigned nfds;
		err = ctl_recv(c, DE_MSG_SEGMENTS_OK, sizeof ok, &ok, fds, DE_FDS_PER_MSG, &nfds);
		if (err && err != -EAGAIN)
			return ctl_fail(c, err);
		if (!err) {
			if (ok.table_id != t->wire_id || ok.first != seg || ok.count != nfds ||
			    ok.count > DE_FDS_PER_MSG || ok.count > DE_ARENA_MAX_SEGMENTS - seg) {
				close_fds(fds, nfds);
				return ctl_fail(c, -EPROTO);
			}
			if (nfds) {
				for (unsigned i = 1; i < nfds; i++) {
					if (t->segfd[seg + i] >= 0)
						close(t->segfd[seg + i]);
					t->segfd[seg + i] = fds[i];
				}
				return fds[0];
			}
		}
		if (now_ms() >= deadline)
			return -ETIMEDOUT;
		usleep(1000);
	}
}

static int spec_to_wire(const struct dynemb_table_spec *s, struct de_msg_open *m)
{
	if (!s || !s->name)
		return de_priv_err(-EINVAL, s ? "dynemb_table_spec.name is NULL"
					      : "dynemb_open: spec is NULL");
	size_t nl = strnlen(s->name, DE_NAME_MAX);
	if (nl < 1 || nl >= DE_NAME_MAX)
		return de_priv_err(-EINVAL, "table name %s: a table name is 1 to %u bytes, "
				   "without control characters", nl ? "too long" : "empty",
				   DE_NAME_MAX - 1);
	for (size_t i = 0; i < nl; i++)
		if ((unsigned char)s->name[i] < 0x20 || s->name[i] == 0x7f)
			return de_priv_err(-EINVAL, "table name has a control character at byte "
					   "%zu: a table name is 1 to %u bytes, without control "
					   "characters", i, DE_NAME_MAX - 1);
	if (s->dim < 1 || s->dim > DE_MAX_DIM)
		return de_priv_err(-EINVAL, "dynemb_table_spec.dim is %u: it must be 1..%u", s->dim,
				   DE_MAX_DIM);
	if (s->nslots > DE_MAX_SLOTS)
		return de_priv_err(-EINVAL, "dynemb_table_spec.nslots is %u: it must be 0..%u "
				   "(0 = what the optimizer needs)", s->nslots, DE_MAX_SLOTS);
	if ((unsigned)s->init > DYNEMB_TRUNC_NORMAL)
		return de_priv_err(-EINVAL, "dynemb_table_spec.init is %u: not a dynemb_init",
				   (unsigned)s->init);
	if ((unsigned)s->keys > DYNEMB_STRING_KEYS)
		return de_priv_err(-EINVAL, "dynemb_table_spec.keys is %u: neither "
				   "DYNEMB_INT64_KEYS nor DYNEMB_STRING_KEYS", (unsigned)s->keys);
	if (DE_PRIV_RESERVED(s, "dynemb_table_spec") ||
	    DE_PRIV_RESERVED(&s->optim, "dynemb_table_spec.optim") ||
	    DE_PRIV_RESERVED(&s->admission, "dynemb_table_spec.admission") ||
	    DE_PRIV_RESERVED(&s->eviction, "dynemb_table_spec.eviction") ||
	    DE_PRIV_RESERVED(&s->durability, "dynemb_table_spec.durability"))
		return -EINVAL;
	memcpy(m->name, s->name, nl);
	m->cfg.dim = s->dim;
	m->cfg.nslots = s->nslots;
	m->cfg.init = (uint32_t)s->init;
	m->cfg.seg_buckets = 0;
	m->cfg.init_a = s->init_a;
	m->cfg.init_b = s->init_b;
	m->cfg.slot_init = s->slot_init;
	m->cfg.key_type = (uint32_t)s->keys;
	m->cfg.seed = s->seed;

	/* the learning config: the daemon checks every value; here only what must fit */
	const struct dynemb_optim_spec *o = &s->optim;
#define ENUM(v, max, what) if ((unsigned)(v) > (unsigned)(max)) \
	return de_priv_err(-EINVAL, "dynemb_table_spec." what " is %u: not a known value", \
			   (unsigned)(v));
	ENUM(o->kind, DYNEMB_OPTIM_RMSPROP, "optim.kind")
	ENUM(s->admission.mode, DYNEMB_ADMISSION_PROBABILITY, "admission.mode")
	ENUM(s->admission.reject_value, DYNEMB_REJECTED_READ_ZEROS, "admission.reject_value")
	ENUM(s->eviction.policy, DYNEMB_EVICTION_L2, "eviction.policy")
	ENUM(s->eviction.ttl_unit, DYNEMB_TIME_SECONDS, "eviction.ttl_unit")
	ENUM(s->eviction.lru_clock, DYNEMB_TIME_SECONDS, "eviction.lru_clock")
	ENUM(s->durability.mode, DYNEMB_DURABLE_SYNC, "durability.mode")
#undef ENUM
	struct de_wire_learn_config *l = &m->learn;
	l->optim = (struct de_wire_optim){
		.kind = (uint32_t)o->kind, /* DYNEMB_OPTIM_x == DE_WOPT_x (static asserts below) */
		.lr = o->lr, .weight_decay = o->weight_decay, .momentum = o->momentum,
		.dampening = o->dampening, .beta1 = o->beta1, .beta2 = o->beta2, .eps = o->eps,
		.initial_accumulator_value = o->initial_accumulator_value, .alpha = o->alpha,
		.l1 = o->l1, .l2 = o->l2, .lr_power = o->lr_power, .ftrl_beta = o->ftrl_beta,
	};
	l->admission = (struct de_wire_admission){
		.mode = (uint32_t)s->admission.mode, .min_count = s->admission.min_count,
		.probability = s->admission.probability, .sketch_width = s->admission.sketch_width,
		.sketch_depth = s->admission.sketch_depth,
		.reject_value = (uint32_t)s->admission.reject_value,
	};
	l->eviction = (struct de_wire_eviction){
		.policy = (uint32_t)s->eviction.policy,
		.flags = s->eviction.disk_tier ? DE_WEVICT_DISK_TIER : 0,
		.budget_bytes = s->eviction.budget_bytes, .ttl = s->eviction.ttl,
		.ttl_unit = (uint32_t)s->eviction.ttl_unit, .lru_clock = (uint32_t)s->eviction.lru_clock,
		.lfu_decay = s->eviction.lfu_decay,
	};
	l->durability = (struct de_wire_durability){ .mode = (uint32_t)s->durability.mode,
						     .window_ms = s->durability.window_ms };
	return 0;
}

/*
 * dynemb.h's constants are the wire's (proto.h, de_shm.h): this library passes every one
 * through as it is. dynemb.h is installed alone, so it cannot name them; these asserts
 * keep the two in step, all of them.
 */
#define SAME(a, b) _Static_assert((long long)(a) == (long long)(b), #a " == " #b)
SAME(DYNEMB_INT64_KEYS, DE_KEYS_INT64);
SAME(DYNEMB_STRING_KEYS, DE_KEYS_STRING);
SAME(DYNEMB_OP_LOOKUP, DE_OP_LOOKUP);
SAME(DYNEMB_OP_UPDATE, DE_OP_UPDATE);
SAME(DYNEMB_OP_ERASE, DE_OP_ERASE);
SAME(DYNEMB_OP_STATS, DE_OP_STATS);
SAME(DYNEMB_OP_APPLY_GRADS, DE_OP_APPLY_GRADS);
SAME(DYNEMB_OP_SAMPLE, DE_OP_SAMPLE);
SAME(DYNEMB_OP_TOPK, DE_OP_TOPK);
SAME(DYNEMB_OP_KEY_STRINGS, DE_OP_KEY_STRINGS);
SAME(DYNEMB_OP_MAX, DE_OP_MAX);
SAME(DYNEMB_LAT_BUCKETS, DE_OPSTATS_BUCKETS);
SAME(DYNEMB_CAP_OPSTATS, DE_CAP_OPSTATS);
SAME(DYNEMB_MAX_KEY_BYTES, DE_MAX_KEY_BYTES);
SAME(DYNEMB_ZEROS, DE_INIT_ZEROS);
SAME(DYNEMB_CONSTANT, DE_INIT_CONSTANT);
SAME(DYNEMB_UNIFORM, DE_INIT_UNIFORM);
SAME(DYNEMB_TRUNC_NORMAL, DE_INIT_TRUNC_NORMAL);
SAME(DYNEMB_OPTIM_NONE, DE_WOPT_NONE);
SAME(DYNEMB_OPTIM_SGD, DE_WOPT_SGD);
SAME(DYNEMB_OPTIM_MOMENTUM, DE_WOPT_MOMENTUM);
SAME(DYNEMB_OPTIM_NESTEROV, DE_WOPT_NESTEROV);
SAME(DYNEMB_OPTIM_ADAGRAD, DE_WOPT_ADAGRAD);
SAME(DYNEMB_OPTIM_ADAM, DE_WOPT_ADAM);
SAME(DYNEMB_OPTIM_ADAMW, DE_WOPT_ADAMW);
SAME(DYNEMB_OPTIM_FTRL, DE_WOPT_FTRL);
SAME(DYNEMB_OPTIM_RMSPROP, DE_WOPT_RMSPROP);
SAME(DYNEMB_ADMISSION_NONE, DE_WADMIT_ALL);
SAME(DYNEMB_ADMISSION_COUNT, DE_WADMIT_COUNT);
SAME(DYNEMB_ADMISSION_PROBABILITY, DE_WADMIT_PROBABILITY);
SAME(DYNEMB_REJECTED_READ_INIT, DE_WREJECT_INIT);
SAME(DYNEMB_REJECTED_READ_ZEROS, DE_WREJECT_ZEROS);
SAME(DYNEMB_EVICTION_NONE, DE_WEVICT_NONE);
SAME(DYNEMB_EVICTION_LRU, DE_WEVICT_LRU);
SAME(DYNEMB_EVICTION_LFU, DE_WEVICT_LFU);
SAME(DYNEMB_EVICTION_TTL, DE_WEVICT_TTL);
SAME(DYNEMB_EVICTION_L2, DE_WEVICT_L2);
SAME(DYNEMB_TIME_STEPS, DE_WUNIT_STEPS);
SAME(DYNEMB_TIME_SECONDS, DE_WUNIT_SECONDS);
SAME(DYNEMB_DURABLE_NONE, DE_WDURABLE_NONE);
SAME(DYNEMB_DURABLE_ASYNC, DE_WDURABLE_ASYNC);
SAME(DYNEMB_DURABLE_SYNC, DE_WDURABLE_SYNC);
SAME(DYNEMB_ST_MISSING, DE_MISSING);
SAME(DYNEMB_ST_FOUND, DE_FOUND);
SAME(DYNEMB_ST_CREATED, DE_CREATED);
SAME(DYNEMB_SAMPLER_UNIFORM, DE_WSAMPLER_UNIFORM);
SAME(DYNEMB_SAMPLER_LOG_UNIFORM, DE_WSAMPLER_LOG_UNIFORM);
SAME(DYNEMB_SAMPLER_UNIGRAM, DE_WSAMPLER_UNIGRAM);
SAME(DYNEMB_METRIC_DOT, 0); /* TOPK's flags */
SAME(DYNEMB_METRIC_COSINE, DE_WTOPK_COSINE);
SAME(DYNEMB_PROGRESS_SNAPSHOT, DE_PHASE_SNAPSHOT);
SAME(DYNEMB_PROGRESS_EXPORT, DE_PHASE_EXPORT);
SAME(DYNEMB_PROGRESS_IMPORT, DE_PHASE_IMPORT);
SAME(DYNEMB_PROGRESS_SERVE_LOAD, DE_PHASE_SERVE_LOAD);
SAME(DYNEMB_CAP_SERVING, DE_CAP_SERVING);
SAME(DYNEMB_SERVE_MISS_INIT, DE_SERVE_MISS_INIT);
SAME(DYNEMB_IMPORT_SALVAGE_PREFIX, DE_WIMPORT_SALVAGE);
SAME(DYNEMB_CAP_APPLY_GRADS, DE_CAP_APPLY_GRADS);
SAME(DYNEMB_CAP_ADMISSION, DE_CAP_ADMISSION);
SAME(DYNEMB_CAP_EVICTION, DE_CAP_EVICTION);
SAME(DYNEMB_CAP_SAMPLE, DE_CAP_SAMPLE);
SAME(DYNEMB_CAP_TOPK, DE_CAP_TOPK);
SAME(DYNEMB_CAP_KEY_STRINGS, DE_CAP_KEY_STRINGS);
SAME(DYNEMB_CAP_SNAPSHOT, DE_CAP_SNAPSHOT);
SAME(DYNEMB_CAP_EXPORT_IMPORT, DE_CAP_EXPORT_IMPORT);
SAME(DYNEMB_CAP_DROP, DE_CAP_DROP);
SAME(DYNEMB_CAP_PERSISTENCE, DE_CAP_PERSISTENCE);
SAME(DYNEMB_CAP_EXPORT_DIR, DE_CAP_EXPORT_DIR);
SAME(DYNEMB_CAP_DISK_TIER, DE_CAP_DISK_TIER);
#undef SAME

void dynemb_optim_spec_defaults(enum dynemb_optim_kind kind, struct dynemb_optim_spec *out)
{
	if (!out)
		return;
	/* the daemon's own table (src/learn/optim_defaults.h); kinds have one numbering */
	struct de_optim_config d;
	de_optim_defaults_fill((enum de_optimizer)kind, &d);
	*out = (struct dynemb_optim_spec){
		.kind = kind, .lr = d.lr, .weight_decay = d.weight_decay, .momentum = d.momentum,
		.dampening = d.dampening, .beta1 = d.beta1, .beta2 = d.beta2, .eps = d.eps,
		.initial_accumulator_value = d.initial_accumulator_value, .alpha = d.alpha,
		.l1 = d.l1, .l2 = d.l2, .lr_power = d.lr_power, .ftrl_beta = d.ftrl_beta,
	};
}

/* The read-only mapping of t's table from the nfds fds of its OPEN_OK (closed here, in
 * every case): *arena and *ro (t->dim checked), reading further segments through t. */
static int map_table(struct ctable *t, int *fds, unsigned nfds, de_arena **arena,
		     de_table **ro)
{
	*arena = NULL;
	*ro = NULL;
	int err = de_arena_attach_ro(fds, nfds, arena); /* dups the fds it keeps */
	close_fds(fds, nfds);
	if (!err)
		err = de_table_attach_ro(*arena, ro);
	if (!err && de_table_dim(*ro) != t->dim)
		err = -EBADMSG;
	if (err) {
		de_table_close(*ro);
		de_arena_destroy(*arena);
		*ro = NULL;
		*arena = NULL;
		return err;
	}
	de_table_set_fd_source(*ro, seg_source, t);
	return 0;
}

/* The handle of the table OPEN_OK ok (its nfds fds, closed here) announced, as name: the
 * one this connection has already for that table id, or a new one mapping it. */
static int add_handle(dynemb_client *c, const char *name, const struct de_msg_open_ok *ok,
		      int *fds, unsigned nfds, int *table)
{
	/* The same table opened twice on this connection: one handle. */
	for (unsigned i = 0; i < c->ntables; i++) {
		if (c->tables[i]->wire_id == ok->table_id) {
			close_fds(fds, nfds);
			*table = (int)i;
			return 0;
		}
	}
	struct ctable *t = calloc(1, sizeof *t);
	if (!t) {
		close_fds(fds, nfds);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < DE_ARENA_MAX_SEGMENTS; i++)
		t->segfd[i] = -1;
	t->c = c;
	snprintf(t->name, sizeof t->name, "%s", name);
	t->wire_id = ok->table_id;
	t->dim = ok->dim;
	t->key_type = ok->key_type;
	t->seed = ok->seed;
	t->miss_remote = ok->flags & DE_OPEN_MISS_REMOTE;
	t->serving = ok->flags & DE_OPEN_SERVING;
	t->miss_init = ok->flags & DE_OPEN_MISS_INIT;
	int err = map_table(t, fds, nfds, &t->arena, &t->ro);
	if (err) {
		table_free(t);
		return err;
	}
	c->tables[c->ntables] = t;
	*table = (int)c->ntables++;
	return 0;
}

int dynemb_open(dynemb_client *c, const struct dynemb_table_spec *spec, int *table)
{
	err_clear();
	if (!c || !table)
		return de_priv_err(-EINVAL, "dynemb_open: %s is NULL", c ? "table" : "the client");
	if (c->broken)
		return broken_err(c);
	struct de_msg_open m = { 0 };
	int err = spec_to_wire(spec, &m);
	if (err)
		return err;
	if (c->ntables >= MAX_TABLES)
		return -EMFILE;
	hdr_init(c, &m.h, DE_MSG_OPEN, sizeof m);
	err = ctl_send(c, &m, sizeof m);
	if (err)
		return ctl_fail(c, err);
	struct de_msg_open_ok ok;
	int fds[SCM_MAX];
	unsigned nfds;
	err = ctl_recv(c, DE_MSG_OPEN_OK, sizeof ok, &ok, fds, DE_FDS_PER_MSG, &nfds);
	if (err)
		return ctl_fail(c, err);

	unsigned want = ok.nsegments < DE_FDS_PER_MSG ? ok.nsegments : DE_FDS_PER_MSG;
	if (ok.nsegments < 1 || ok.nsegments > DE_ARENA_MAX_SEGMENTS || nfds != want ||
	    ok.dim != spec->dim || ok.key_type != m.cfg.key_type || ok.seed != spec->seed) {
		close_fds(fds, nfds);
		return ctl_fail(c, -EPROTO);
	}
	return add_handle(c, m.name, &ok, fds, nfds, table);
}

/* ------------------------------------------------------------------------- */
/* Serving tables (proto.h "Serving tables")                                  */
/* ------------------------------------------------------------------------- */

/* SERVE_OPEN of name (release: a wire id or DE_SERVE_NO_RELEASE): its OPEN_OK, checked,
 * with its fds (the caller owns them). */
static int serve_open_rq(dynemb_client *c, const char *name, uint16_t release,
			 struct de_msg_open_ok *ok, int *fds, unsigned *nfds)
{
	*nfds = 0;
	if (!(c->capabilities & DE_CAP_SERVING))
		return de_priv_err(-EOPNOTSUPP, "this daemon has no serving tables (it is older "
				   "than DYNEMB_CAP_SERVING)");
	struct de_msg_serve_open m;
	memset(&m, 0, sizeof m);
	if (de_priv_put_name(m.name, name))
		return -EINVAL;
	m.release_id = release;
	hdr_init(c, &m.h, DE_MSG_SERVE_OPEN, sizeof m);
	int err = ctl_send(c, &m, sizeof m);
	if (err)
		return ctl_fail(c, err);
	err = ctl_recv(c, DE_MSG_OPEN_OK, sizeof *ok, ok, fds, DE_FDS_PER_MSG, nfds);
	if (err)
		return ctl_fail(c, err);
	unsigned want = ok->nsegments < DE_FDS_PER_MSG ? ok->nsegments : DE_FDS_PER_MSG;
	if (ok->nsegments < 1 || ok->nsegments > DE_ARENA_MAX_SEGMENTS || *nfds != want ||
	    ok->key_type != DE_KEYS_INT64 || !(ok->flags & DE_OPEN_SERVING) || !ok->dim ||
	    ok->dim > DE_MAX_DIM || (release != DE_SERVE_NO_RELEASE && ok->table_id != release)) {
		close_fds(fds, *nfds);
		*nfds = 0;
		return ctl_fail(c, -EPROTO);
	}
	return 0;
}

int dynemb_open_serving(dynemb_client *c, const char *name, int *table)
{
	err_clear();
	if (!c || !table || !name)
		return de_priv_err(-EINVAL, "dynemb_open_serving: %s is NULL",
				   !c ? "the client" : !table ? "table" : "name");
	if (c->broken)
		return broken_err(c);
	if (c->ntables >= MAX_TABLES)
		return -EMFILE;
	struct de_msg_open_ok ok;
	int fds[SCM_MAX];
	unsigned nfds;
	int err = serve_open_rq(c, name, DE_SERVE_NO_RELEASE, &ok, fds, &nfds);
	return err ? err : add_handle(c, name, &ok, fds, nfds, table);
}

/* t's version was superseded: move its handle to the current version (the daemon gives
 * the same slot the new version), between two batches. */
static int serve_switch(dynemb_client *c, struct ctable *t)
{
	struct de_msg_open_ok ok;
	int fds[SCM_MAX];
	unsigned nfds;
	int err = serve_open_rq(c, t->name, t->wire_id, &ok, fds, &nfds);
	if (err)
		return err;
	if (ok.dim != t->dim) { /* the caller's buffers are for this dim */
		close_fds(fds, nfds);
		t->dropped = true;
		return de_priv_err(-ESTALE, "serving table '%s': its new version has dim %u, this "
				   "handle dim %u: open it again (dynemb_open_serving)", t->name,
				   ok.dim, t->dim);
	}
	/* the old version's fds ahead of need go: the fd source serves the new one now */
	close_fds(t->segfd, DE_ARENA_MAX_SEGMENTS);
	for (unsigned i = 0; i < DE_ARENA_MAX_SEGMENTS; i++)
		t->segfd[i] = -1;
	de_arena *arena;
	de_table *ro;
	err = map_table(t, fds, nfds, &arena, &ro);
	if (err)
		return err; /* the old mapping stays: still readable, still superseded */
	de_table_close(t->ro);
	de_arena_destroy(t->arena);
	t->arena = arena;
	t->ro = ro;
	t->seed = ok.seed;
	t->miss_init = ok.flags & DE_OPEN_MISS_INIT;
	t->serve_switches++;
	return 0;
}

int dynemb_serve_info(const dynemb_client *c, int table, struct dynemb_serve_info *out)
{
	const struct ctable *t = table_get(c, table);
	if (!out)
		return de_priv_err(-EINVAL, "out is NULL");
	if (!t)
		return bad_handle(c, table);
	if (!t->serving)
		return de_priv_err(-EINVAL, "table handle %d is not a serving table", table);
	memset(out, 0, sizeof *out);
	out->version = de_table_serve_version(t->ro);
	out->found = t->serve_found;
	out->missing = t->serve_missing;
	out->switches = t->serve_switches;
	return 0;
}

/* ------------------------------------------------------------------------- */
/* Data area: the ring allocator                                              */
/* ------------------------------------------------------------------------- */

static uint64_t align_up(uint64_t x) { return (x + ALIGN - 1) & ~(uint64_t)(ALIGN - 1); }

/* Give back the regions of released slots from the oldest on. */
static void ring_reclaim(struct dynemb_client *c)
{
	while (c->fifo_len) {
		struct slot *s = &c->slots[c->fifo[c->fifo_head]];
		if (!s->released)
			break;
		c->rtail = s->end;
		s->in_fifo = false;
		c->fifo_head = (c->fifo_head + 1) % c->nslots;
		c->fifo_len--;
	}
	if (!c->fifo_len) {
		/* empty: restart at offset 0 so the whole area is one free region */
		uint64_t D = c->data_bytes;
		c->rhead = c->rtail = (c->rhead + D - 1) / D * D;
	}
}

/* The largest region ring_alloc can give now. */
static uint64_t ring_avail(struct dynemb_client *c)
{
	uint64_t D = c->data_bytes, used = c->rhead - c->rtail, pos = c->rhead % D;
	if (!c->fifo_len)
		return D;
	uint64_t a = D - pos < D - used ? D - pos : D - used; /* up to the end */
	uint64_t b = 0;                                       /* after wrapping to 0 */
	if (pos) {
		uint64_t wrapped = c->rhead - pos + D - c->rtail; /* held if we wrap now */
		b = wrapped < D ? D - wrapped : 0;
	}
	return a > b ? a : b;
}

static int ring_alloc(struct dynemb_client *c, struct slot *s, unsigned slot_idx, uint64_t bytes,
		      uint64_t *off /* out */)
{
	uint64_t D = c->data_bytes;
	if (bytes > D)
		return -ENOBUFS;
	uint64_t start = c->rhead, pos = start % D;
	if (pos + bytes > D)
		start += D - pos;
	if (start + bytes - c->rtail > D)
		return -EAGAIN;
	s->start = start;
	s->end = start + bytes;
	s->released = false;
	s->in_fifo = true;
	c->rhead = s->end;
	c->fifo[(c->fifo_head + c->fifo_len) % c->nslots] = (uint16_t)slot_idx;
	c->fifo_len++;
	*off = start % D;
	return 0;
}

/* ------------------------------------------------------------------------- */
/* Slots and completions                                                      */
/* ------------------------------------------------------------------------- */

/* Before a new request: completed async requests give up their slots (their values are
 * valid only until the next submit), and released regions come back. */
static void recycle(struct dynemb_client *c)
{
	for (unsigned i = 0; i < c->nslots; i++)
		if (c->slots[i].state == S_COMPLETED) {
			c->slots[i].state = S_FREE;
			c->slots[i].id = 0;
		}
	ring_reclaim(c);
}

static int slot_get(struct dynemb_client *c, unsigned *idx)
{
	recycle(c);
	for (unsigned i = 0; i < c->nslots; i++) {
		if (c->slots[i].state == S_FREE && !c->slots[i].in_fifo) {
			struct slot *s = &c->slots[i];
			if (++c->gen == 0)
				c->gen = 1;
			memset(s, 0, sizeof *s);
			s->id = (uint64_t)c->gen << 16 | i;
			*idx = i;
			return 0;
		}
	}
	return -EAGAIN;
}

static void slot_release(struct dynemb_client *c, struct slot *s, enum slot_state to)
{
	s->released = true;
	s->state = (uint8_t)to;
	if (to == S_FREE)
		s->id = 0;
	ring_reclaim(c);
}

static struct slot *slot_of(struct dynemb_client *c, uint64_t id)
{
	unsigned i = (unsigned)(id & 0xffff);
	if (!id || i >= c->nslots || c->slots[i].id != id)
		return NULL;
	return &c->slots[i];
}

/* Reap completions until slot s has its own, stashing others (timeout_ms < 0: forever). */
static int wait_slot(struct dynemb_client *c, struct slot *s, int timeout_ms)
{
	int64_t deadline = timeout_ms < 0 ? INT64_MAX : now_ms() + timeout_ms;
	while (s->state == S_INFLIGHT) {
		/* in slices of LIVENESS_MS: a daemon that died posts nothing and wakes no one */
		int64_t l = deadline - now_ms();
		int left = l < 0 ? 0 : l > LIVENESS_MS ? LIVENESS_MS : (int)l;
		struct de_cqe e;
		int err = de_channel_reap(c->ch, &e, true, SPIN_NS, left);
		if (err == -ETIMEDOUT && peer_closed(c))
			return daemon_gone(c, -ECONNRESET);
		if (err == -ETIMEDOUT && now_ms() < deadline)
			continue;
		if (err) {
			if (err == -EBADMSG)
				c->broken = err;
			return err;
		}
		struct slot *o = slot_of(c, e.user_data);
		if (!o || (o->state != S_INFLIGHT && o->state != S_ABANDONED)) {
			c->broken = -EPROTO; /* a completion for nothing we submitted */
			return -EPROTO;
		}
		if (o->state == S_ABANDONED) {
			slot_release(c, o, S_FREE);
			continue;
		}
		o->cqe = e;
		o->state = S_REAPED;
		if (e.res == -EIDRM) /* its table was dropped (forced) */
			for (unsigned i = 0; i < c->ntables; i++)
				if (c->tables[i]->wire_id == o->table)
					dropped_err(c->tables[i]);
	}
	return 0;
}

static int submit(struct dynemb_client *c, struct slot *s, struct de_sqe *e)
{
	e->user_data = s->id;
	s->table = e->table;
	int err = de_channel_submit(c->ch, e);
	if (err) {
		if (err == -EBADMSG)
			c->broken = err;
		slot_release(c, s, S_FREE);
		return err == -EAGAIN ? -EAGAIN : err;
	}
	s->state = S_INFLIGHT;
	return 0;
}

/* A free slot and a region of bytes of the data area for it. out: *sp, *base (the
 * region's offset). On error nothing is held. */
static int slot_take(struct dynemb_client *c, uint64_t bytes, struct slot **sp, uint64_t *base)
{
	unsigned si;
	int err = slot_get(c, &si);
	if (err)
		return err;
	struct slot *s = &c->slots[si];
	err = ring_alloc(c, s, si, bytes, base);
	if (err) {
		s->state = S_FREE;
		s->id = 0;
		return err;
	}
	*sp = s;
	return 0;
}

/* An async request of n int64 keys and n rows of t's dim: a slot whose region holds the
 * keys (copied in) and then room for the rows at *voff. On error nothing is held. */
static int slot_take_keys(struct dynemb_client *c, const struct ctable *t, const uint64_t *keys,
			  size_t n, uint8_t op, struct slot **sp, uint64_t *base, uint64_t *voff)
{
	uint64_t row = (uint64_t)t->dim * sizeof(float);
	*voff = align_up(8 * (uint64_t)n);
	uint64_t total = *voff + align_up(n * row);
	if (total > c->data_bytes)
		return -ENOBUFS;
	int err = slot_take(c, total ? total : ALIGN, sp, base);
	if (err)
		return err;
	struct slot *s = *sp;
	s->n = (uint32_t)n;
	s->dim = t->dim;
	s->vals_off = *base + *voff;
	s->op = op;
	if (n)
		memcpy(c->data + *base, keys, 8 * n);
	return 0;
}

/* Wait for the completion of a submitted blocking request. On a timeout or a broken
 * channel the slot is left ABANDONED: the daemon may still write its region. */
static int wait_blocking(struct dynemb_client *c, struct slot *s)
{
	int err = wait_slot(c, s, c->timeout_ms);
	if (err && s->state == S_INFLIGHT)
		s->state = S_ABANDONED;
	return err;
}

/* ------------------------------------------------------------------------- */
/* Blocking batches                                                           */
/* ------------------------------------------------------------------------- */

/* A batch of keys: int64 (ik) or strings (sk, lens), optionally a subset (idx) of the
 * caller's arrays. Element j of the batch is the caller's key idx[j]. */
struct keyset {
	const uint64_t *ik;
	const char *const *sk;
	const size_t *lens;
	const size_t *idx;
	size_t n;
};

static inline size_t ks_at(const struct keyset *ks, size_t j) { return ks->idx ? ks->idx[j] : j; }

static inline size_t ks_len(const struct keyset *ks, size_t i)
{
	return ks->lens ? ks->lens[i] : strlen(ks->sk[i]);
}

static int ks_check(const struct keyset *ks)
{
	if (ks->ik)
		return 0;
	for (size_t i = 0; i < ks->n; i++) {
		if (!ks->sk[i] && (!ks->lens || ks->lens[i]))
			return de_priv_err(-EINVAL, "string key %zu is NULL with length %zu", i,
					   ks->lens ? ks->lens[i] : 0);
		size_t l = ks_len(ks, i);
		if (l > DE_MAX_KEY_BYTES)
			return de_priv_err(-EINVAL, "string key %zu is %zu bytes: a string key is "
					   "at most %u bytes", i, l, DE_MAX_KEY_BYTES);
	}
	return 0;
}

struct batch {
	uint8_t op, flags;
	uint64_t arg;
	uint64_t lr_bits;       /* APPLY_GRADS: the lr override as double bits, 0 = none */
	bool vals_by_pos;       /* vals_in is indexed by position in the keyset, not idx */
	const float *vals_in;   /* UPDATE, APPLY_GRADS: n * dim, by the caller's index */
	float *vals_out;        /* LOOKUP */
	uint8_t *status;        /* LOOKUP, may be NULL */
	size_t sum_count, sum_aux0;
};

/* One request in flight: its slot, the keys it carries and where its results land. */
struct pend {
	struct slot *s;
	size_t from, cnt;
	uint8_t *d;             /* its region of the data area */
	uint64_t voff, soff;    /* values and status within the region */
	bool want_vals, want_status;
};

/* Copy keys [from, from + cnt) of ks (kb wire bytes) into the data area and submit one
 * request for them. On success p describes it; the caller finishes it with chunk_finish. */
static int chunk_submit(struct dynemb_client *c, struct ctable *t, const struct keyset *ks,
			size_t from, size_t cnt, uint64_t kb, struct batch *b, struct pend *p)
{
	uint64_t row = (uint64_t)t->dim * sizeof(float);
	bool want_vals = b->op == DE_OP_LOOKUP || b->op == DE_OP_UPDATE || b->op == DE_OP_APPLY_GRADS;
	bool want_status = b->op == DE_OP_LOOKUP && b->status;
	uint64_t vb = want_vals ? cnt * row : 0, sb = want_status ? cnt : 0;
	uint64_t voff = align_up(kb), soff = voff + align_up(vb), total = soff + align_up(sb);

	struct slot *s;
	uint64_t base;
	int err = slot_take(c, total, &s, &base);
	if (err)
		return err;
	uint8_t *d = c->data + base;
	if (ks->ik) {
		for (size_t j = 0; j < cnt; j++)
			memcpy(d + 8 * j, &ks->ik[ks_at(ks, from + j)], 8);
	} else {
		uint8_t *q = d + 4 * cnt;
		for (size_t j = 0; j < cnt; j++) {
			size_t i = ks_at(ks, from + j), l = ks_len(ks, i);
			uint32_t l32 = (uint32_t)l;
			memcpy(d + 4 * j, &l32, 4);
			if (l)
				memcpy(q, ks->sk[i], l);
			q += l;
		}
	}
	if (b->op == DE_OP_UPDATE || b->op == DE_OP_APPLY_GRADS)
		for (size_t j = 0; j < cnt; j++) {
			size_t i = b->vals_by_pos ? from + j : ks_at(ks, from + j);
			memcpy(d + voff + j * row, b->vals_in + i * t->dim, row);
		}

	struct de_sqe e = { .op = b->op, .table = t->wire_id, .count = (uint32_t)cnt,
			    .keys_off = base, .keys_len = kb, .arg = b->arg };
	e.flags = b->flags | (want_status ? DE_SQE_STATUS : 0);
	if (want_vals) {
		e.vals_off = base + voff;
		e.vals_len = vb;
	}
	if (want_status)
		e.status_off = base + soff;
	if (b->op == DE_OP_APPLY_GRADS && b->lr_bits) {
		e.flags |= DE_GRAD_LR;
		e.status_off = b->lr_bits;
	}
	err = submit(c, s, &e);
	if (err)
		return err;
	*p = (struct pend){ .s = s, .from = from, .cnt = cnt, .d = d, .voff = voff, .soff = soff,
			    .want_vals = want_vals, .want_status = want_status };
	return 0;
}

/* A write refused -ENOSPC by the table's hash index (proto.h: aux1) says so. */
static void index_refusal_err(const struct de_cqe *q)
{
	if (q->res == -ENOSPC && q->aux1)
		de_priv_data_err(-ENOSPC, "the table's index refused the key: its hash bucket is "
				 "full of colliding keys (a hash flood; other keys still insert; "
				 "index_refusals %" PRIu64 ")", q->aux1);
}

/* Wait for a submitted request, check its completion and copy its results out. */
static int chunk_finish(struct dynemb_client *c, struct ctable *t, const struct keyset *ks,
			struct batch *b, struct pend *p)
{
	uint64_t row = (uint64_t)t->dim * sizeof(float);
	struct slot *s = p->s;
	int err = wait_blocking(c, s);
	if (err)
		return err;
	struct de_cqe q = s->cqe;
	err = q.res;
	if (err == -EEXIST && ks->sk && q.count < p->cnt) { /* proto.h: count names the key */
		size_t i = ks_at(ks, p->from + q.count), l = ks_len(ks, i);
		de_priv_data_err(-EEXIST, "string key %zu (\"%.*s\"%s) has the fingerprint of "
				 "another key's string in this table: it has no row of its own, and "
				 "its request was refused", i, (int)(l < 40 ? l : 40), ks->sk[i],
				 l > 40 ? "..." : "");
	}
	index_refusal_err(&q);
	if (!err && (q.res > 0 || q.count > p->cnt ||
		     ((b->op == DE_OP_LOOKUP || b->op == DE_OP_APPLY_GRADS) && q.aux0 > p->cnt)))
		err = -EBADMSG;
	if (!err && p->want_status) {
		for (size_t j = 0; j < p->cnt; j++) {
			uint8_t st = p->d[p->soff + j];
			if (st > DYNEMB_ST_CREATED) {
				err = -EBADMSG;
				break;
			}
			b->status[ks_at(ks, p->from + j)] = st;
			if (ks->sk && st != DYNEMB_ST_MISSING) { /* the daemon served it this row */
				size_t i = ks_at(ks, p->from + j);
				vset_add(&t->verified, de_key_from_string(t->seed, ks->sk[i] ? ks->sk[i]
									   : "", ks_len(ks, i)));
			}
		}
	}
	if (!err && b->op == DE_OP_LOOKUP)
		for (size_t j = 0; j < p->cnt; j++)
			memcpy(b->vals_out + ks_at(ks, p->from + j) * t->dim, p->d + p->voff + j * row, row);
	if (!err) {
		b->sum_count += q.count;
		b->sum_aux0 += q.aux0;
	}
	slot_release(c, s, S_FREE);
	return err;
}

/*
 * Run a batch of any size as a pipeline: chunks of at most max_batch keys that fit the
 * data area, up to PIPE_DEPTH in flight, so that this thread copies keys in and results
 * out of one chunk while the daemon works on the next. Chunks finish in order; after an
 * error the chunks already submitted are still waited for (the daemon writes into their
 * regions) and the first error is returned.
 */
#define PIPE_DEPTH 4
#define PIPE_MIN_KEYS 256 /* smaller batches go as one request */

static int run_batch(struct dynemb_client *c, struct ctable *t, const struct keyset *ks,
		     struct batch *b)
{
	uint64_t row = (uint64_t)t->dim * sizeof(float);
	uint64_t per = (b->op == DE_OP_LOOKUP || b->op == DE_OP_UPDATE ||
			b->op == DE_OP_APPLY_GRADS ? row : 0) +
		       (b->op == DE_OP_LOOKUP && b->status ? 1 : 0);
	size_t target = (ks->n + PIPE_DEPTH - 1) / PIPE_DEPTH;
	if (target < PIPE_MIN_KEYS)
		target = PIPE_MIN_KEYS;
	struct pend q[PIPE_DEPTH];
	unsigned head = 0, nq = 0;
	size_t from = 0;
	int err = 0;
	while ((!err && from < ks->n) || nq) {
		if (!err && from < ks->n && nq < PIPE_DEPTH) {
			if (c->broken) {
				err = broken_err(c);
				continue;
			}
			recycle(c);
			uint64_t avail = ring_avail(c);
			avail = avail > 3 * ALIGN ? avail - 3 * ALIGN : 0; /* alignment padding */
			size_t cnt = 0;
			uint64_t kb = 0;
			size_t lim = ks->n - from < c->max_batch ? ks->n - from : c->max_batch;
			if (lim > target)
				lim = target;
			if (ks->ik) {
				uint64_t fit = avail / (8 + per);
				cnt = lim < fit ? lim : (size_t)fit;
				kb = 8 * (uint64_t)cnt;
			} else {
				uint64_t used = 0;
				while (cnt < lim) {
					uint64_t k = 4 + ks_len(ks, ks_at(ks, from + cnt));
					if (used + k + per > avail)
						break;
					used += k + per;
					kb += k;
					cnt++;
				}
			}
			if (cnt) {
				err = chunk_submit(c, t, ks, from, cnt, kb, b, &q[(head + nq) % PIPE_DEPTH]);
				if (!err) {
					nq++;
					from += cnt;
				}
				continue;
			}
			if (!nq) { /* nothing of ours to wait for: the space is not there */
				err = c->fifo_len ? -EAGAIN : -ENOBUFS;
				continue;
			}
			/* no room now: finish the oldest chunk to free its space */
		}
		int e = chunk_finish(c, t, ks, b, &q[head]);
		if (!err)
			err = e;
		head = (head + 1) % PIPE_DEPTH;
		nq--;
	}
	return err;
}

static const char *keys_word(uint32_t key_type)
{
	return key_type == DE_KEYS_STRING ? "string" : "int64";
}

/* Checks every data-plane call starts with; clears the last error's message. */
static int check_call(dynemb_client *c, int table, uint32_t key_type, struct ctable **t)
{
	*t = NULL;
	err_clear();
	if (!c)
		return bad_handle(c, table);
	if (c->broken)
		return broken_err(c);
	*t = table_get(c, table);
	if (!*t)
		return bad_handle(c, table);
	if ((*t)->dropped)
		return dropped_err(*t);
	if ((*t)->key_type != key_type)
		return de_priv_err(-EINVAL, "table handle %d has %s keys: use the %s calls "
				   "(dynemb_*%s)", table, keys_word((*t)->key_type),
				   keys_word((*t)->key_type),
				   (*t)->key_type == DE_KEYS_STRING ? "_str" : " without _str");
	return 0;
}

/* check_call for an int64 call that writes: -EROFS on a serving handle. */
static int check_write(dynemb_client *c, int table, struct ctable **t)
{
	int err = check_call(c, table, DE_KEYS_INT64, t);
	if (!err && (*t)->serving)
		err = de_priv_err(-EROFS, "table handle %d is serving table '%s': read-only "
				  "(versions come from dynemb_serve_load; writes go to the "
				  "trainer's table)", table, (*t)->name);
	return err;
}

/* A serving handle's batch, wholly from the version it maps once a superseded one was
 * left: found rows, the default for missing keys, the daemon (no create) for a key the
 * mapping could not read stably (DE_RETRY: not expected, nothing writes a version). */
static int serve_read(dynemb_client *c, struct ctable *t, const uint64_t *keys, size_t n,
		      float *out, uint8_t *status, uint64_t *version)
{
	if (n && (!keys || !out))
		return de_priv_err(-EINVAL, "%s is NULL with n = %zu", keys ? "out" : "keys", n);
	int err = 0;
	if (de_table_superseded(t->ro) && (err = serve_switch(c, t)))
		return err;
	uint8_t stbuf[256];
	uint8_t *st = status ? status : n <= sizeof stbuf ? stbuf : malloc(n);
	if (!st)
		return -ENOMEM;
	err = de_table_find(t->ro, keys, n, out, st);
	size_t nr = 0, found = 0;
	for (size_t i = 0; !err && i < n; i++) {
		if (st[i] == DE_FOUND) {
			found++;
		} else if (st[i] == DE_MISSING) {
			float *row = out + i * (size_t)t->dim;
			if (t->miss_init)
				de_table_init_row(t->ro, keys[i], row);
			else
				memset(row, 0, (size_t)t->dim * sizeof *row);
		} else {
			nr++;
		}
	}
	if (!err && nr) {
		size_t *idx = malloc(nr * sizeof *idx);
		if (!idx) {
			err = -ENOMEM;
		} else {
			size_t k = 0;
			for (size_t i = 0; i < n; i++)
				if (st[i] != DE_FOUND && st[i] != DE_MISSING)
					idx[k++] = i;
			struct keyset rk = { .ik = keys, .idx = idx, .n = nr };
			struct batch b = { .op = DE_OP_LOOKUP, .vals_out = out, .status = st };
			err = run_batch(c, t, &rk, &b);
			for (size_t j = 0; !err && j < nr; j++) {
				size_t i = idx[j];
				found += st[i] == DE_FOUND;
				if (st[i] != DE_FOUND && t->miss_init)
					de_table_init_row(t->ro, keys[i], out + i * (size_t)t->dim);
			}
			free(idx);
		}
	}
	if (!err) {
		t->serve_found += found;
		t->serve_missing += n - found;
		if (version)
			*version = de_table_serve_version(t->ro);
	}
	if (st != status && st != stbuf)
		free(st);
	return err;
}

int dynemb_serve_lookup(dynemb_client *c, int table, const uint64_t *keys, size_t n,
			float *out, uint8_t *status, uint64_t *version)
{
	struct ctable *t;
	int err = check_call(c, table, DE_KEYS_INT64, &t);
	if (!err && !t->serving)
		err = de_priv_err(-EINVAL, "table handle %d is not a serving table (open one with "
				  "dynemb_open_serving)", table);
	return err ? err : serve_read(c, t, keys, n, out, status, version);
}

/*
 * Lookups. DYNEMB_READONLY: probe the read-only mapping (hashes: the int64 keys, or the
 * strings' fingerprints); DE_RETRY keys go to the daemon without create.
 */
static int lookup(dynemb_client *c, struct ctable *t, struct keyset *ks, const uint64_t *hashes,
		  float *out, uint8_t *status, unsigned flags, uint64_t step)
{
	if (ks->n && !out)
		return de_priv_err(-EINVAL, "out is NULL");
	if (flags & ~DYNEMB_READONLY)
		return de_priv_err(-EINVAL, "flags 0x%x: only DYNEMB_READONLY is known", flags);
	int err = ks_check(ks);
	if (err)
		return err;
	if (t->serving) /* never creates, whatever the flags */
		return serve_read(c, t, hashes, ks->n, out, status, NULL);
	struct batch b = { .op = DE_OP_LOOKUP, .arg = step, .vals_out = out, .status = status };
	if (!(flags & DYNEMB_READONLY)) {
		b.flags = DE_LOOKUP_CREATE;
		return run_batch(c, t, ks, &b);
	}
	uint8_t *st = status ? status : malloc(ks->n ? ks->n : 1);
	size_t *idx = malloc((ks->n ? ks->n : 1) * sizeof *idx);
	if (!st || !idx) {
		err = -ENOMEM;
		goto out;
	}
	err = de_table_find(t->ro, hashes, ks->n, out, st);
	if (!err && de_table_retired(t->ro)) /* dropped: what it read may be stale */
		err = dropped_err(t);
	if (err)
		goto out;
	size_t nr = 0;
	for (size_t i = 0; i < ks->n; i++) {
		/* a string the daemon has not served this row to yet: it compares the string */
		if (ks->sk && st[i] == DE_FOUND && hashes[i] && !vset_has(&t->verified, hashes[i]))
			st[i] = DE_RETRY;
		if (t->miss_remote && st[i] == DE_MISSING)
			st[i] = DE_RETRY;
		if (st[i] == DE_RETRY)
			idx[nr++] = i;
	}
	c->local_keys += ks->n - nr;
	c->remote_keys += nr;
	if (nr) {
		struct keyset rk = *ks;
		rk.idx = idx;
		rk.n = nr;
		b.status = st;
		err = run_batch(c, t, &rk, &b);
	}

out:
	if (st != status)
		free(st);
	free(idx);
	return err;
}

int dynemb_lookup(dynemb_client *c, int table, const uint64_t *keys, size_t n, float *out,
		  uint8_t *status, unsigned flags, uint64_t step)
{
	struct ctable *t;
	int err = check_call(c, table, DE_KEYS_INT64, &t);
	if (err)
		return err;
	if (n && !keys)
		return de_priv_err(-EINVAL, "keys is NULL with n = %zu", n);
	struct keyset ks = { .ik = keys, .n = n };
	return lookup(c, t, &ks, keys, out, status, flags, step);
}

int dynemb_lookup_str(dynemb_client *c, int table, const char *const *keys, const size_t *lens,
		      size_t n, float *out, uint8_t *status, unsigned flags, uint64_t step)
{
	struct ctable *t;
	int err = check_call(c, table, DE_KEYS_STRING, &t);
	if (err)
		return err;
	if (n && !keys)
		return de_priv_err(-EINVAL, "keys is NULL with n = %zu", n);
	struct keyset ks = { .sk = keys, .lens = lens, .n = n };
	if (!(flags & DYNEMB_READONLY))
		return lookup(c, t, &ks, NULL, out, status, flags, step);
	err = ks_check(&ks);
	if (err)
		return err;
	uint64_t *h = malloc((n ? n : 1) * sizeof *h);
	if (!h)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		h[i] = de_key_from_string(t->seed, keys[i] ? keys[i] : "", ks_len(&ks, i));
	err = lookup(c, t, &ks, h, out, status, flags, step);
	free(h);
	return err;
}

/* -EINVAL naming the first value of nf that is NaN or infinite (what: "value",
 * "gradient"), 0 when all are finite. Row i is the caller's i-th key. */
static int check_finite(const float *v, size_t nf, uint32_t dim, const char *what)
{
	for (size_t i = 0; i < nf; i++)
		if (unlikely(!isfinite(v[i])))
			return de_priv_err(-EINVAL, "non-finite %s in row %zu (column %zu: %g): "
					   "nothing was applied", what, i / dim, i % dim,
					   (double)v[i]);
	return 0;
}

static int update(dynemb_client *c, struct ctable *t, struct keyset *ks, const float *values,
		  uint64_t step, size_t *created)
{
	if (ks->n && !values)
		return de_priv_err(-EINVAL, "values is NULL");
	int err = ks_check(ks);
	if (!err)
		err = check_finite(values, ks->n * t->dim, t->dim, "value");
	if (err)
		return err;
	struct batch b = { .op = DE_OP_UPDATE, .arg = step, .vals_in = values };
	err = run_batch(c, t, ks, &b);
	if (created)
		*created = b.sum_count;
	return err;
}

int dynemb_update(dynemb_client *c, int table, const uint64_t *keys, size_t n, const float *values,
		  uint64_t step, size_t *created)
{
	struct ctable *t;
	int err = check_write(c, table, &t);
	if (err)
		return err;
	if (n && !keys)
		return de_priv_err(-EINVAL, "keys is NULL with n = %zu", n);
	struct keyset ks = { .ik = keys, .n = n };
	return update(c, t, &ks, values, step, created);
}

int dynemb_update_str(dynemb_client *c, int table, const char *const *keys, const size_t *lens,
		      size_t n, const float *values, uint64_t step, size_t *created)
{
	struct ctable *t;
	int err = check_call(c, table, DE_KEYS_STRING, &t);
	if (err)
		return err;
	if (n && !keys)
		return de_priv_err(-EINVAL, "keys is NULL with n = %zu", n);
	struct keyset ks = { .sk = keys, .lens = lens, .n = n };
	return update(c, t, &ks, values, step, created);
}

static int erase(dynemb_client *c, struct ctable *t, struct keyset *ks, size_t *erased)
{
	int err = ks_check(ks);
	if (err)
		return err;
	struct batch b = { .op = DE_OP_ERASE };
	err = run_batch(c, t, ks, &b);
	if (erased)
		*erased = b.sum_count;
	return err;
}

int dynemb_erase(dynemb_client *c, int table, const uint64_t *keys, size_t n, size_t *erased)
{
	struct ctable *t;
	int err = check_write(c, table, &t);
	if (err)
		return err;
	if (n && !keys)
		return de_priv_err(-EINVAL, "keys is NULL with n = %zu", n);
	struct keyset ks = { .ik = keys, .n = n };
	return erase(c, t, &ks, erased);
}

int dynemb_erase_str(dynemb_client *c, int table, const char *const *keys, const size_t *lens,
		     size_t n, size_t *erased)
{
	struct ctable *t;
	int err = check_call(c, table, DE_KEYS_STRING, &t);
	if (err)
		return err;
	if (n && !keys)
		return de_priv_err(-EINVAL, "keys is NULL with n = %zu", n);
	struct keyset ks = { .sk = keys, .lens = lens, .n = n };
	return erase(c, t, &ks, erased);
}

/* ------------------------------------------------------------------------- */
/* Gradients                                                                  */
/* ------------------------------------------------------------------------- */

/* The lr argument as the wire wants it: 0 (the table's lr) or a finite lr > 0. */
static int lr_bits(double lr, uint64_t *out)
{
	if (!isfinite(lr))
		return de_priv_err(-EINVAL, "non-finite learning rate %g: give a finite lr > 0, "
				   "or 0 for the table's", lr);
	*out = lr > 0 ? de_lr_to_wire(lr) : 0;
	return 0;
}


struct dkey {
	uint64_t h;             /* the daemon's key: the int64 key or the string's fingerprint */
	size_t i;               /* the caller's index */
};

static int dkey_cmp(const void *a, const void *b)
{
	const struct dkey *x = a, *y = b;
	if (x->h != y->h)
		return x->h < y->h ? -1 : 1;
	return x->i < y->i ? -1 : x->i > y->i;
}

static int first_cmp(const void *a, const void *b)
{
	size_t x = *(const size_t *)a, y = *(const size_t *)b;
	return x < y ? -1 : x > y;
}

/*
 * Deduplicate a gradient batch as the daemon would: distinct nonzero keys (key 0, the
 * empty string, is ignored by the daemon: dropped here) in order of first occurrence
 * into *idx (caller indices), their summed gradients (in batch order, float) into *sum
 * (by position). Both malloc'd: the caller frees.
 */
static int dedup_grads(const struct ctable *t, const struct keyset *ks, const float *grads,
		       size_t **idx_out, float **sum_out, size_t *nu_out)
{
	size_t n = ks->n, dim = t->dim;
	struct dkey *dk = malloc(n * sizeof *dk);
	size_t *idx = malloc(n * sizeof *idx);
	float *sum = malloc(n * dim * sizeof *sum);
	if (!dk || !idx || !sum) {
		free(dk);
		free(idx);
		free(sum);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		dk[i].i = i;
		dk[i].h = ks->ik ? ks->ik[i]
				 : de_key_from_string(t->seed, ks->sk[i] ? ks->sk[i] : "", ks_len(ks, i));
	}
	qsort(dk, n, sizeof *dk, dkey_cmp);
	size_t nu = 0;
	for (size_t a = 0, b; a < n; a = b) {
		for (b = a + 1; b < n && dk[b].h == dk[a].h; b++) {
			size_t x = dk[a].i, y = dk[b].i;
			if (ks->ik || !dk[a].h)
				continue;
			size_t lx = ks_len(ks, x);
			if (lx == ks_len(ks, y) && !memcmp(ks->sk[x], ks->sk[y], lx))
				continue;
			/* two strings of one fingerprint: summing them would merge two keys */
			free(dk);
			free(idx);
			free(sum);
			return de_priv_data_err(-EEXIST, "string keys %zu and %zu have one "
						"fingerprint: they cannot share a row, and nothing was "
						"applied", x, y);
		}
		if (dk[a].h)
			idx[nu++] = dk[a].i; /* the group's first occurrence */
	}
	qsort(idx, nu, sizeof *idx, first_cmp);
	/* sums: walk the sorted groups again, find each group's position by binary search */
	for (size_t a = 0, b; a < n; a = b) {
		for (b = a + 1; b < n && dk[b].h == dk[a].h; b++)
			;
		if (!dk[a].h)
			continue;
		size_t lo = 0, hi = nu;
		while (lo < hi) {
			size_t mid = (lo + hi) / 2;
			if (idx[mid] < dk[a].i)
				lo = mid + 1;
			else
				hi = mid;
		}
		float *u = sum + lo * dim;
		memcpy(u, grads + dk[a].i * dim, dim * sizeof *u);
		for (size_t k = a + 1; k < b; k++) { /* increasing caller index: batch order */
			const float *g = grads + dk[k].i * dim;
			for (size_t j = 0; j < dim; j++)
				u[j] += g[j];
		}
	}
	free(dk);
	*idx_out = idx;
	*sum_out = sum;
	*nu_out = nu;
	return 0;
}

static int apply_grads(dynemb_client *c, struct ctable *t, struct keyset *ks, const float *grads,
		       uint64_t step, double lr, size_t *applied)
{
	if (applied)
		*applied = 0;
	if (ks->n && !grads)
		return de_priv_err(-EINVAL, "grads is NULL");
	struct batch b = { .op = DE_OP_APPLY_GRADS, .arg = step, .vals_in = grads };
	int err = lr_bits(lr, &b.lr_bits);
	if (!err)
		err = ks_check(ks);
	if (!err) /* the daemon would reject its chunk: reject the whole call */
		err = check_finite(grads, ks->n * t->dim, t->dim, "gradient");
	if (err)
		return err;
	size_t *idx = NULL;
	float *sum = NULL;
	struct keyset dk = *ks;
	if (ks->n > 1) {
		err = dedup_grads(t, ks, grads, &idx, &sum, &dk.n);
		if (err)
			return err;
		dk.idx = idx;
		b.vals_in = sum;
		b.vals_by_pos = true;
	}
	err = run_batch(c, t, &dk, &b);
	if (applied)
		*applied = b.sum_count;
	free(idx);
	free(sum);
	return err;
}

int dynemb_apply_gradients(dynemb_client *c, int table, const uint64_t *keys, size_t n,
			   const float *grads, uint64_t step, double lr, size_t *applied)
{
	struct ctable *t;
	int err = check_write(c, table, &t);
	if (err)
		return err;
	if (n && !keys)
		return de_priv_err(-EINVAL, "keys is NULL with n = %zu", n);
	struct keyset ks = { .ik = keys, .n = n };
	return apply_grads(c, t, &ks, grads, step, lr, applied);
}

int dynemb_apply_gradients_str(dynemb_client *c, int table, const char *const *keys,
			       const size_t *lens, size_t n, const float *grads, uint64_t step,
			       double lr, size_t *applied)
{
	struct ctable *t;
	int err = check_call(c, table, DE_KEYS_STRING, &t);
	if (err)
		return err;
	if (n && !keys)
		return de_priv_err(-EINVAL, "keys is NULL with n = %zu", n);
	struct keyset ks = { .sk = keys, .lens = lens, .n = n };
	return apply_grads(c, t, &ks, grads, step, lr, applied);
}

void de_priv_stats_from_wire(const struct de_wire_stats *w, struct dynemb_stats *out)
{
	*out = (struct dynemb_stats){
		.keys = w->keys, .rows_allocated = w->rows_allocated, .rows_free = w->rows_free,
		.row_bytes = w->row_bytes, .index_bytes = w->index_bytes,
		.arena_bytes = w->arena_bytes, .segments = w->segments, .splits = w->splits,
		.dir_doublings = w->dir_doublings, .arena_segments = w->arena_segments,
		.load_factor = w->load_factor, .dim = w->dim, .read_only = w->read_only,
		.admitted = w->admitted, .filtered = w->filtered,
		.grads_dropped = w->grads_dropped, .evicted = w->evicted,
		.evicted_to_tier = w->evicted_to_tier,
		.restored_from_tier = w->restored_from_tier,
		.returned_fresh = w->returned_fresh, .resident_bytes = w->resident_bytes,
		.budget_bytes = w->budget_bytes, .wal_lsn = w->wal_lsn,
		.durable_lsn = w->durable_lsn, .snapshots = w->snapshots,
		.snapshot_lsn = w->snapshot_lsn, .index_refusals = w->index_refusals,
	};
}

int dynemb_stats(dynemb_client *c, int table, struct dynemb_stats *out)
{
	err_clear();
	if (!c || !out)
		return de_priv_err(-EINVAL, "%s is NULL", c ? "out" : "the client");
	if (c->broken)
		return broken_err(c);
	struct ctable *t = table_get(c, table);
	if (!t)
		return bad_handle(c, table);
	struct slot *s;
	uint64_t base;
	int err = slot_take(c, align_up(sizeof(struct de_wire_stats)), &s, &base);
	if (err)
		return err;
	struct de_sqe e = { .op = DE_OP_STATS, .table = t->wire_id, .vals_off = base,
			    .vals_len = sizeof(struct de_wire_stats) };
	err = submit(c, s, &e);
	if (err)
		return err;
	err = wait_blocking(c, s);
	if (err)
		return err;
	err = s->cqe.res > 0 ? -EBADMSG : s->cqe.res;
	if (!err) {
		struct de_wire_stats w;
		memcpy(&w, c->data + base, sizeof w);
		if (w.dim != t->dim || w.key_type != t->key_type) {
			err = -EBADMSG;
		} else {
			de_priv_stats_from_wire(&w, out);
		}
	}
	slot_release(c, s, S_FREE);
	return err;
}

/* ------------------------------------------------------------------------- */
/* Async lookups                                                              */
/* ------------------------------------------------------------------------- */

int dynemb_submit_lookup(dynemb_client *c, int table, const uint64_t *keys, size_t n,
			 unsigned flags, uint64_t step, uint64_t *req)
{
	struct ctable *t;
	int err = check_call(c, table, DE_KEYS_INT64, &t);
	if (err)
		return err;
	if (!req || (n && !keys))
		return de_priv_err(-EINVAL, "%s is NULL", req ? "keys" : "req");
	if (flags & ~DYNEMB_READONLY)
		return de_priv_err(-EINVAL, "flags 0x%x: only DYNEMB_READONLY is known", flags);
	if (n > c->max_batch)
		return -E2BIG;
	struct slot *s;
	uint64_t base, voff;
	err = slot_take_keys(c, t, keys, n, DE_OP_LOOKUP, &s, &base, &voff);
	if (err)
		return err;
	uint8_t *d = c->data + base;

	if (t->serving) { /* answered here and now: the request is complete */
		err = serve_read(c, t, keys, n, (float *)(void *)(d + voff), NULL, NULL);
		if (err) {
			slot_release(c, s, S_FREE);
			return err;
		}
		c->local_keys += n;
		s->local = true;
		s->state = S_REAPED;
		s->cqe = (struct de_cqe){ .user_data = s->id, .count = (uint32_t)n };
		*req = s->id;
		return 0;
	}
	if (flags & DYNEMB_READONLY) {
		/* Zero-copy: probe into the request's own values; done unless a key needs the
		 * daemon, in which case the whole request goes there. */
		uint8_t stbuf[256];
		uint8_t *st = n <= sizeof stbuf ? stbuf : malloc(n);
		if (!st) {
			slot_release(c, s, S_FREE);
			return -ENOMEM;
		}
		err = de_table_find(t->ro, keys, n, (float *)(d + voff), st);
		if (!err && de_table_retired(t->ro)) /* dropped: what it read may be stale */
			err = dropped_err(t);
		size_t found = 0, retry = 0;
		for (size_t i = 0; !err && i < n; i++) {
			found += st[i] == DE_FOUND;
			retry += st[i] == DE_RETRY || (t->miss_remote && st[i] == DE_MISSING);
		}
		if (st != stbuf)
			free(st);
		if (err) {
			slot_release(c, s, S_FREE);
			return err;
		}
		if (!retry) {
			c->local_keys += n;
			s->local = true;
			s->state = S_REAPED;
			s->cqe = (struct de_cqe){ .user_data = s->id, .count = (uint32_t)found };
			*req = s->id;
			return 0;
		}
		c->remote_keys += n;
	}
	struct de_sqe e = { .op = DE_OP_LOOKUP, .table = t->wire_id, .count = (uint32_t)n,
			    .keys_off = base, .keys_len = 8 * (uint64_t)n, .vals_off = base + voff,
			    .vals_len = n * (uint64_t)t->dim * sizeof(float), .arg = step };
	e.flags = flags & DYNEMB_READONLY ? 0 : DE_LOOKUP_CREATE;
	err = submit(c, s, &e);
	if (err)
		return err;
	*req = s->id;
	return 0;
}

int dynemb_complete(dynemb_client *c, uint64_t req, int timeout_ms)
{
	if (!c)
		return de_priv_err(-EINVAL, "the client is NULL");
	struct slot *s = slot_of(c, req);
	if (!s || s->state == S_ABANDONED)
		return -ESRCH;
	if (s->state == S_COMPLETED) {
		index_refusal_err(&s->cqe);
		return s->cqe.res;
	}
	if (s->state == S_INFLIGHT) {
		if (c->broken)
			return broken_err(c);
		int err = wait_slot(c, s, timeout_ms < 0 ? c->timeout_ms : timeout_ms);
		if (err)
			return err; /* still in flight: dynemb_complete may be called again */
	}
	struct de_cqe q = s->cqe;
	if (q.res > 0 || (q.res == 0 && (q.count > s->n || q.aux0 > s->n)))
		s->cqe.res = -EBADMSG;
	index_refusal_err(&s->cqe);
	slot_release(c, s, S_COMPLETED);
	return s->cqe.res;
}

const float *dynemb_request_vals(dynemb_client *c, uint64_t req)
{
	if (!c)
		return NULL;
	struct slot *s = slot_of(c, req);
	if (!s || s->state != S_COMPLETED || s->cqe.res || s->op != DE_OP_LOOKUP)
		return NULL;
	return (const float *)(c->data + s->vals_off);
}

int dynemb_request_counts(dynemb_client *c, uint64_t req, uint64_t *count, uint64_t *aux)
{
	if (!c)
		return de_priv_err(-EINVAL, "the client is NULL");
	struct slot *s = slot_of(c, req);
	if (!s || s->state != S_COMPLETED || s->cqe.res)
		return -ESRCH;
	if (count)
		*count = s->cqe.count;
	if (aux)
		*aux = s->cqe.aux0;
	return 0;
}

int dynemb_submit_apply_gradients(dynemb_client *c, int table, const uint64_t *keys, size_t n,
				  const float *grads, uint64_t step, double lr, uint64_t *req)
{
	struct ctable *t;
	int err = check_write(c, table, &t);
	if (err)
		return err;
	if (!req || (n && (!keys || !grads)))
		return de_priv_err(-EINVAL, "%s is NULL", !req ? "req" : !keys ? "keys" : "grads");
	uint64_t lrb = 0;
	err = lr_bits(lr, &lrb);
	if (err)
		return err;
	if (n > c->max_batch)
		return -E2BIG;
	err = check_finite(grads, n * t->dim, t->dim, "gradient");
	if (err)
		return err;
	struct slot *s;
	uint64_t base, voff;
	err = slot_take_keys(c, t, keys, n, DE_OP_APPLY_GRADS, &s, &base, &voff);
	if (err)
		return err;
	if (n)
		memcpy(c->data + base + voff, grads, n * (uint64_t)t->dim * sizeof(float));
	struct de_sqe e = { .op = DE_OP_APPLY_GRADS, .table = t->wire_id, .count = (uint32_t)n,
			    .keys_off = base, .keys_len = 8 * (uint64_t)n, .vals_off = base + voff,
			    .vals_len = n * (uint64_t)t->dim * sizeof(float), .arg = step };
	if (lrb) {
		e.flags = DE_GRAD_LR;
		e.status_off = lrb;
	}
	err = submit(c, s, &e);
	if (err)
		return err;
	*req = s->id;
	return 0;
}

/* ------------------------------------------------------------------------- */
/* For client_learn.c (client_priv.h)                                         */
/* ------------------------------------------------------------------------- */

int de_priv_ctl_request(dynemb_client *c, void *msg, size_t len, uint16_t want, void *reply,
			size_t reply_len, int (*on_progress)(void *ctx, const void *progress),
			void *ctx)
{
	err_clear();
	if (!c || !msg || len < sizeof(struct de_msg_hdr))
		return -EINVAL;
	if (c->broken)
		return broken_err(c);
	struct de_msg_hdr *h = msg;
	hdr_init(c, h, h->type, (uint32_t)len);
	int err = ctl_send(c, msg, len);
	if (err)
		return ctl_fail(c, err);
	if (reply_len > DE_MSG_MAX)
		return -EINVAL;
	union {
		uint64_t align;
		char b[DE_MSG_MAX];
	} buf;
	int cancel = 0;
	for (;;) {
		unsigned nfds;
		int fds[1];
		c->alt_len = sizeof(struct de_msg_progress);
		err = ctl_recv(c, want, reply_len, buf.b, fds, 0, &nfds);
		bool progress = c->alt_got;
		c->alt_len = 0;
		c->alt_got = false;
		if (err)
			return ctl_fail(c, err);
		if (!progress) {
			memcpy(reply, buf.b, reply_len);
			return cancel;
		}
		if (on_progress && !cancel && on_progress(ctx, buf.b))
			cancel = -ECANCELED; /* the daemon's job goes on; its reply is awaited */
	}
}

int de_priv_table(dynemb_client *c, int table, struct de_priv_table *out)
{
	err_clear();
	if (!c || !out)
		return de_priv_err(-EINVAL, "%s is NULL", c ? "out" : "the client");
	if (c->broken)
		return broken_err(c);
	struct ctable *t = table_get(c, table);
	if (!t)
		return bad_handle(c, table);
	recycle(c);
	*out = (struct de_priv_table){ .wire_id = t->wire_id, .dim = t->dim,
				       .key_type = t->key_type, .seed = t->seed,
				       .max_batch = c->max_batch, .avail = ring_avail(c) };
	return 0;
}

int de_priv_call(dynemb_client *c, struct de_sqe *e, const void *keys_in, uint64_t keys_len,
		 const void *vals_in, uint64_t vals_len, void *vals_out, const void *status_in,
		 uint64_t status_len, struct de_cqe *cqe)
{
	if (c->broken)
		return broken_err(c);
	uint64_t voff = align_up(keys_len), soff = voff + align_up(vals_len);
	uint64_t total = soff + align_up(status_len);
	struct slot *s;
	uint64_t base;
	int err = slot_take(c, total ? total : ALIGN, &s, &base);
	if (err)
		return err;
	uint8_t *d = c->data + base;
	if (keys_len)
		memcpy(d, keys_in, keys_len);
	if (vals_in && vals_len)
		memcpy(d + voff, vals_in, vals_len);
	if (status_len)
		memcpy(d + soff, status_in, status_len);
	e->keys_off = base;
	e->keys_len = keys_len;
	e->vals_off = base + voff;
	e->vals_len = vals_len;
	if (status_len)
		e->status_off = base + soff;
	err = submit(c, s, e);
	if (err)
		return err;
	err = wait_blocking(c, s);
	if (err)
		return err;
	*cqe = s->cqe;
	if (vals_out && vals_len && (cqe->res == 0 || cqe->res == -ENOSPC))
		memcpy(vals_out, d + voff, vals_len);
	slot_release(c, s, S_FREE);
	return 0;
}

uint64_t dynemb_capabilities(const dynemb_client *c)
{
	return c ? c->capabilities : 0;
}

void dynemb_zero_copy_counts(const dynemb_client *c, uint64_t *local_keys, uint64_t *remote_keys)
{
	if (local_keys)
		*local_keys = c ? c->local_keys : 0;
	if (remote_keys)
		*remote_keys = c ? c->remote_keys : 0;
}
