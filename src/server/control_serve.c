/*
 * control_serve.c — serving tables (proto.h "Serving tables"): read-only versions of a
 * name, loaded from export files beside the version that serves, switched atomically,
 * and freed once their readers moved on. Part of the control plane (control_int.h).
 *
 * A serving name ("ads") is not a registry table; its versions are: "ads@v1", "ads@v2",
 * ... (t->serve_version, t->serve_name), each an int64 table with the export file's
 * config and no learning, durability or eviction (a version is never persisted: the
 * catalog does not know it, a restart forgets it; the export file is the durable copy).
 * Writes on a version are refused by the worker (-EROFS).
 *
 *   SERVE_LOAD: rights (import on a serving name that exists, create on a new one) ->
 *     the name is no ordinary table (-EEXIST) and no load of it runs (-EBUSY) -> the path
 *     lies under export_dir (as IMPORT) -> the file's header, read as the client
 *     (de_export_header: a bad header is refused before any memory is taken) -> its rows
 *     fit in what the loader's uid and the host have left (version_fits) -> a new
 *     version table in the registry (charged to the loader's quota like any table, so
 *     while two versions coexist the host and uid budgets count both) -> a load thread
 *     imports the file as the client (de_import, strict: a damaged file imports nothing),
 *     streams PROGRESS to the client and logs every LOG_EVERY_NS. When it ends it wakes
 *     the control thread (the release eventfd), which either discards the new version
 *     (any error: the current version never changed) and replies ERROR, or switches:
 *     the name's current version becomes the new one, the old one is marked superseded
 *     in its shared header (de_table_supersede) and SERVE_LOAD_OK goes out.
 *   SERVE_OPEN: the current version into a slot of the connection, OPEN_OK with
 *     DE_OPEN_SERVING; release_id: the slot of an older version is given the current one
 *     (its old table's ref goes, and the old table is marked revoke_pending so its free
 *     first waits for every worker to pass the top of a round: worker.h "Revoked
 *     handles").
 *   Retirement (srv_serving_poll, every control-loop turn): a superseded version no
 *     connection holds is freed (after the workers' quiesce when a slot of it was given
 *     away); one still held [serving] grace_ms after the switch has its handles revoked
 *     first (its readers' mappings stay readable memory and still say superseded, so they
 *     reopen the current version; a reader that died let go when its connection closed).
 *     A version is never marked dropped: nobody reading it was cut off.
 *
 * Owns: the serving names and their load threads. Control thread only, except a load
 * thread's own struct load (its results are read after it said finished, acquire).
 * Never: frees a version a connection, a worker or a slow-pool job may still use; lets a
 * failed load touch the version that serves.
 */
#include "control_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "authz.h"
#include "de_uring.h"
#include "log.h"
#include "persist.h"
#include "reply.h"
#include "tables.h"
#include "util.h"

#define SERVE_MAX_OLD 8u          /* superseded versions still held, per name */
#define PROGRESS_NS (50ull * 1000000ull)
#define LOG_EVERY_NS (2000ull * 1000000ull)
#define REVOKE_WAIT_MS 10000u
#define FINAL_SEND_MS 5000

struct load {
	struct srv_server *s;
	pthread_t thread;
	int sock;                 /* a dup of the client's socket */
	unsigned client;
	uid_t uid;
	gid_t gid;
	uint32_t seq, flags;
	char path[DE_PATH_MAX];
	struct srv_table *t;      /* the new version */
	uint64_t version, records;
	uint64_t last_ns, last_log_ns;
	int err;                  /* written by the thread before finished */
	char problem[200];
	int finished;             /* atomic: the thread ended (release) */
};

struct old {
	struct srv_table *t;
	int64_t since_ms;         /* when it was superseded */
};

struct sname {
	char name[DE_NAME_MAX];
	uid_t owner;              /* the uid of the first load */
	struct srv_table *cur;    /* NULL until the first version loaded */
	uint64_t next_version;
	bool miss_init;           /* DE_SERVE_MISS_INIT of the current version */
	struct load *load;        /* the load that runs, or NULL */
	struct old old[SERVE_MAX_OLD + 1]; /* + 1: the current one, once unloaded */
	unsigned nold;
	struct sname *next;
};

struct srv_serving {
	struct sname *head;
	struct sname *dropped; /* unloaded names whose versions are not all freed yet */
};

static int64_t now_ms(void) { return (int64_t)(srv_mono_ns() / 1000000); }

static bool srv_stopping(const struct srv_server *s)
{
	return __atomic_load_n(&s->stopping, __ATOMIC_ACQUIRE) != 0;
}

static struct sname *sname_find(const struct srv_server *s, const char *name)
{
	for (struct sname *n = s->serving ? s->serving->head : NULL; n; n = n->next)
		if (!strcmp(n->name, name))
			return n;
	return NULL;
}

int srv_serving_open_check(const struct srv_server *s, const char *name,
			   const struct srv_table *t, char *msg, size_t cap)
{
	if (t && t->serve_version) {
		snprintf(msg, cap, "table '%s' is version %" PRIu64 " of serving table '%s' "
			 "(read-only): open '%s' with dynemb_open_serving", name, t->serve_version,
			 t->serve_name, t->serve_name);
		return -EROFS;
	}
	if (sname_find(s, name)) {
		snprintf(msg, cap, "'%s' is a serving table (read-only, loaded from an export "
			 "file): open it with dynemb_open_serving", name);
		return -EEXIST;
	}
	return 0;
}

/* ---- the load thread ----------------------------------------------------------------- */

static int load_progress(void *ctx, uint64_t done, uint64_t total)
{
	struct load *l = ctx;
	if (srv_stopping(l->s))
		return 1; /* -ECANCELED */
	uint64_t now = srv_mono_ns();
	if (now - l->last_log_ns >= LOG_EVERY_NS) {
		l->last_log_ns = now;
		srv_logf(SRV_LOG_INFO, SRV_KV(SRV_F_TABLE(l->t->serve_name),
					      SRV_F_UINT("version", l->version),
					      SRV_F_UINT("done", done), SRV_F_UINT("total", total)),
			 "serving: loading version %" PRIu64 " of '%s': %" PRIu64 " of %" PRIu64
			 " records", l->version, l->t->serve_name, done, total);
	}
	if (now - l->last_ns < PROGRESS_NS && done != total)
		return 0;
	l->last_ns = now;
	struct de_msg_progress m;
	memset(&m, 0, sizeof m);
	srv_reply_hdr(&m.h, DE_MSG_PROGRESS, sizeof m, l->seq);
	m.done = done;
	m.total = total;
	m.phase = DE_PHASE_SERVE_LOAD;
	snprintf(m.name, sizeof m.name, "%s", l->t->name);
	srv_reply_send(l->sock, &m, sizeof m, NULL, 0, 0); /* one not read is missed */
	return 0;
}

static void *load_main(void *arg)
{
	struct load *l = arg;
	struct de_import_report rep;
	memset(&rep, 0, sizeof rep);
	l->last_log_ns = srv_mono_ns();
	struct srv_fs_ids ids;
	int err = srv_fs_as_client(&ids, l->uid, l->gid);
	if (!err)
		err = de_import(l->t->t, l->path, 0, load_progress, l, &rep);
	srv_persist_fs_back(&ids);
	l->records = rep.imported;
	if (err)
		snprintf(l->problem, sizeof l->problem, "%s%s%s%s", strerror(-err),
			 rep.mismatch || rep.problem ? " (" : "",
			 rep.mismatch ? rep.mismatch : rep.problem ? rep.problem : "",
			 rep.mismatch || rep.problem ? ")" : "");
	l->err = err;
	__atomic_store_n(&l->finished, 1, __ATOMIC_RELEASE);
	uint64_t one = 1; /* wake the control thread (control.c reads it, then polls us) */
	ssize_t r = write(l->s->release_fd, &one, sizeof one);
	(void)r;
	return NULL;
}

/* ---- SERVE_LOAD ---------------------------------------------------------------------- */

/* Refused before anything is mapped: the new version's rows alone (records x dim x 4
 * bytes, less than all it will map) must fit in what the loader's uid ([quota] uid_bytes,
 * -EDQUOT) and the host (host_bytes, -ENOSPC) have left beside the versions that exist.
 * The rest (index, row metadata) is charged as the load maps it: a load that runs out
 * there fails the same way and is discarded. */
static int version_fits(struct srv_server *s, uid_t uid, const char *name,
			const struct de_export_info *info, char *msg, size_t cap)
{
	uint64_t need;
	if (__builtin_mul_overflow(info->records, (uint64_t)info->config.dim * 4, &need))
		need = UINT64_MAX;
	struct srv_quota *q = s->reg.quota;
	if (!q)
		return 0;
	const struct {
		uint64_t limit;
		uid_t who;
		int err;
		const char *what;
	} k[2] = { { s->cfg.quota_uid_bytes, uid, -EDQUOT, "uid_bytes" },
		   { s->cfg.quota_host_bytes, SRV_QUOTA_UID_NONE, -ENOSPC, "host_bytes" } };
	for (int i = 0; i < 2; i++) {
		uint32_t tables;
		uint64_t used;
		if (!k[i].limit)
			continue;
		srv_quota_usage(q, k[i].who, &tables, &used);
		uint64_t left = used < k[i].limit ? k[i].limit - used : 0;
		if (need <= left)
			continue;
		char who[32];
		if (i == 0)
			snprintf(who, sizeof who, "uid %u", (unsigned)uid);
		else
			snprintf(who, sizeof who, "the host");
		char text[400]; /* at most ~330; a reply carries 240: the tail may be cut */
		snprintf(text, sizeof text, "serving '%.40s': a new version does not fit: its rows "
			 "need %" PRIu64 " bytes (%" PRIu64 " x dim %u), %s has %" PRIu64 " of "
			 "[quota] %s %" PRIu64 " left; the current version serves on", name, need,
			 info->records, info->config.dim, who, left, k[i].what, k[i].limit);
		size_t len = strnlen(text, cap - 1);
		memcpy(msg, text, len);
		msg[len] = '\0';
		return k[i].err;
	}
	return 0;
}

/* Versions whose name an ordinary table took are skipped, this many at most. */
#define SERVE_SKIP_MAX 64u

/* The new version's table from the file's header: registry, owner, version. *v is the
 * first version number to try; a number whose name (name@vN) an ordinary table holds is
 * skipped, so *v (in, out) is the version made. */
static int version_create(struct srv_server *s, struct sname *n, const char *name, uid_t uid,
			  const struct de_export_info *info, uint64_t *v, struct srv_table **out,
			  char *msg, size_t cap)
{
	char vname[DE_NAME_MAX];
	struct srv_table *t;
	unsigned skipped = 0;
	for (;;) {
		snprintf(vname, sizeof vname, "%s@v%" PRIu64, name, *v);
		if (!srv_registry_find(&s->reg, vname))
			break;
		if (++skipped > SERVE_SKIP_MAX) {
			snprintf(msg, cap, "serving table '%s': the names of its next %u versions "
				 "(up to '%s') are all taken by ordinary tables", name,
				 SERVE_SKIP_MAX, vname);
			return -EEXIST;
		}
		(*v)++;
	}
	const struct de_table_config *c = &info->config;
	struct de_wire_table_config w;
	memset(&w, 0, sizeof w);
	w.dim = c->dim;
	w.nslots = c->nslots;
	w.init = c->init;
	w.seg_buckets = c->seg_buckets;
	w.init_a = c->init_a;
	w.init_b = c->init_b;
	w.slot_init = c->slot_init;
	w.key_type = DE_KEYS_INT64;
	w.seed = c->seed;
	struct de_wire_learn_config learn;
	memset(&learn, 0, sizeof learn);
	int err = srv_wire_config_normalize(&w, msg, cap);
	if (!err)
		err = srv_learn_config_normalize(&learn, &w, msg, cap);
	if (err)
		return err;
	bool created;
	srv_registry_lock(&s->reg);
	err = srv_registry_open(&s->reg, uid, false, vname, &w, &learn, &t, &created, msg, cap);
	if (!err) {
		t->owner = uid;
		t->serve_version = *v;
		snprintf(t->serve_name, sizeof t->serve_name, "%s", n ? n->name : name);
		__atomic_store_n(&t->shard, 2, __ATOMIC_RELAXED); /* host-local: never forwarded */
		de_table_set_serve_version(t->t, *v);
	}
	srv_registry_unlock(&s->reg);
	if (!err)
		*out = t;
	return err;
}

static void discard(struct srv_server *s, struct srv_table *t)
{
	srv_registry_lock(&s->reg);
	srv_registry_discard(&s->reg, t);
	srv_registry_unlock(&s->reg);
}

void srv_serving_load(struct srv_server *s, struct srv_client *c, const struct de_msg_serve_load *m)
{
	char msg[240];
	const char *name = m->name;
	struct sname *n = sname_find(s, name);
	const struct srv_table *plain = srv_registry_find(&s->reg, name);
	unsigned rights = srv_authz_rights(&s->cfg, c->uid, c->gid, name, n || plain,
					   n ? n->owner : plain ? plain->owner : 0);
	int err = srv_authz_need(&s->cfg, rights, n || plain ? SRV_RIGHT_IMPORT : SRV_RIGHT_CREATE,
				 c->uid, c->gid, name, msg, sizeof msg);
	if (!err && strlen(name) > DE_SERVE_NAME_MAX) {
		snprintf(msg, sizeof msg, "serving table name '%s' is %zu bytes: a serving name is "
			 "at most %u (its versions are called name@vN)", name, strlen(name),
			 DE_SERVE_NAME_MAX);
		err = -EINVAL;
	}
	if (!err && plain) {
		snprintf(msg, sizeof msg, "'%s' is an ordinary table of this daemon%s: a serving "
			 "table needs a name of its own", name,
			 plain->serve_version ? " (a serving table's version)" : "");
		err = -EEXIST;
	}
	if (!err && n && n->load) {
		snprintf(msg, sizeof msg, "serving table '%s': version %" PRIu64 " is loading "
			 "already (from %.120s)", name, n->load->version, n->load->path);
		err = -EBUSY;
	}
	if (!err && n && n->nold == SERVE_MAX_OLD) {
		snprintf(msg, sizeof msg, "serving table '%s': %u superseded versions are still "
			 "held by readers; wait for them to move on (at most [serving] grace_ms "
			 "%u ms)", name, n->nold, s->cfg.serve_grace_ms);
		err = -EBUSY;
	}
	if (!err)
		err = srv_persist_path_allowed(&s->cfg, c->uid, c->gid, m->path, msg, sizeof msg);
	struct de_export_info info;
	memset(&info, 0, sizeof info);
	if (!err) {
		struct srv_fs_ids ids;
		err = srv_fs_as_client(&ids, c->uid, c->gid);
		if (!err)
			err = de_export_header(m->path, &info);
		srv_persist_fs_back(&ids);
		if (!err && info.problem)
			err = -EBADMSG;
		if (err)
			snprintf(msg, sizeof msg, "serving table '%s': %.120s: %s%s%s%s", name,
				 m->path, strerror(-err), info.problem ? " (" : "",
				 info.problem ? info.problem : "", info.problem ? ")" : "");
	}
	if (!err)
		err = version_fits(s, c->uid, name, &info, msg, sizeof msg);
	struct srv_table *t = NULL;
	uint64_t v = n ? n->next_version : 1;
	if (!err)
		err = version_create(s, n, name, c->uid, &info, &v, &t, msg, sizeof msg);
	struct load *l = NULL;
	if (!err && !n && (!s->serving && !(s->serving = calloc(1, sizeof *s->serving))))
		err = -ENOMEM;
	if (!err && !n && !(n = calloc(1, sizeof *n)))
		err = -ENOMEM;
	if (!err && !(l = calloc(1, sizeof *l)))
		err = -ENOMEM;
	if (!err) {
		l->s = s;
		l->client = c->id;
		l->uid = c->uid;
		l->gid = c->gid;
		l->seq = m->h.seq;
		l->flags = m->flags;
		memcpy(l->path, m->path, sizeof l->path);
		l->t = t;
		l->version = v;
		l->sock = fcntl(c->sock, F_DUPFD_CLOEXEC, 0);
		if (l->sock < 0)
			err = -errno;
		else if ((err = -pthread_create(&l->thread, NULL, load_main, l)))
			close(l->sock);
	}
	if (err) {
		if (err == -ENOMEM)
			snprintf(msg, sizeof msg, "out of memory");
		else if (l && l->sock < 0)
			snprintf(msg, sizeof msg, "dup: %s", strerror(-err));
		else if (l)
			snprintf(msg, sizeof msg, "cannot start a load thread");
		free(l);
		if (n && !n->cur && !n->load && !sname_find(s, name))
			free(n); /* new, never listed */
		if (t)
			discard(s, t);
		srv_logf(SRV_LOG_INFO, SRV_KV(SRV_F_UINT("client", c->id), SRV_F_UINT("uid", c->uid),
					      SRV_F_TABLE(name), SRV_F_PATH(m->path), SRV_F_ERRNO(err)),
			 "client %u: serving load of '%s' refused: %s", c->id, name, msg);
		srv_reply_error(c->sock, m->h.seq, err, 0, "%s", msg);
		return;
	}
	if (!sname_find(s, name)) {
		snprintf(n->name, sizeof n->name, "%s", name);
		n->owner = c->uid;
		n->next_version = 1;
		n->next = s->serving->head;
		s->serving->head = n;
	}
	n->next_version = v + 1;
	n->load = l;
	srv_logf(SRV_LOG_INFO, SRV_KV(SRV_F_UINT("client", c->id), SRV_F_UINT("uid", c->uid),
				      SRV_F_TABLE(name), SRV_F_PATH(m->path), SRV_F_UINT("version", v),
				      SRV_F_UINT("records", info.records)),
		 "client %u: serving table '%s': loading version %" PRIu64 " from %s (%" PRIu64
		 " records, dim %u) beside the current one", c->id, name, v, m->path, info.records,
		 info.config.dim);
}

/* ---- SERVE_OPEN ---------------------------------------------------------------------- */

static int send_open_ok(struct srv_client *c, uint32_t seq, uint32_t id, const struct sname *n)
{
	struct srv_table *t = n->cur;
	struct de_msg_open_ok ok;
	memset(&ok, 0, sizeof ok);
	srv_reply_hdr(&ok.h, DE_MSG_OPEN_OK, sizeof ok, seq);
	ok.table_id = (uint16_t)id;
	ok.flags = DE_OPEN_SERVING | (n->miss_init ? DE_OPEN_MISS_INIT : 0);
	ok.dim = t->wcfg.dim;
	ok.key_type = t->wcfg.key_type;
	ok.seed = t->wcfg.seed;
	ok.nsegments = de_arena_nsegments(t->arena);
	uint32_t k = ok.nsegments < DE_FDS_PER_MSG ? ok.nsegments : DE_FDS_PER_MSG;
	return srv_control_send_segments(c, t, &ok, sizeof ok, 0, k);
}

bool srv_serving_open(struct srv_server *s, struct srv_client *c, const struct de_msg_serve_open *m)
{
	char msg[240];
	const char *name = m->name;
	struct sname *n = sname_find(s, name);
	unsigned rights = srv_authz_rights(&s->cfg, c->uid, c->gid, name, n != NULL,
					   n ? n->owner : 0);
	int err = srv_authz_need(&s->cfg, rights, SRV_RIGHT_OPEN, c->uid, c->gid, name, msg,
				 sizeof msg);
	if (!err && !n) {
		snprintf(msg, sizeof msg, "no serving table '%s' in this daemon (load one: "
			 "dynembctl serve-load %s FILE)", name, name);
		err = -ENOENT;
	}
	if (!err && !n->cur) {
		snprintf(msg, sizeof msg, "serving table '%s': its first version is still loading",
			 name);
		err = -EAGAIN;
	}
	uint32_t nt = c->ntables, id = m->release_id;
	struct srv_table *old = NULL;
	if (!err && id != DE_SERVE_NO_RELEASE) {
		old = id < nt ? c->tables[id] : NULL;
		if (id >= nt || (old && strcmp(old->serve_name, name))) {
			snprintf(msg, sizeof msg, "release id %u is not a handle of serving table '%s' "
				 "on this connection", id, name);
			err = -EINVAL;
		}
	}
	if (err) {
		srv_reply_error(c->sock, m->h.seq, err, 0, "%s", msg);
		return true;
	}
	struct srv_table *t = n->cur;
	unsigned r = rights & ~SRV_RIGHT_BIT(SRV_RIGHT_WRITE);
	if (id == DE_SERVE_NO_RELEASE) {
		for (id = 0; id < nt && c->tables[id] != t; id++)
			;
		if (id == nt) {
			if (nt == SRV_MAX_TABLES_PER_CLIENT) {
				srv_reply_error(c->sock, m->h.seq, -EMFILE, 0, "a connection opens at "
						"most %u tables", SRV_MAX_TABLES_PER_CLIENT);
				return true;
			}
			c->tables[nt] = t;
			c->rights[nt] = (uint8_t)r;
			t->refs++;
			/* release: publishes tables[nt] and rights[nt] (the worker's acquire) */
			__atomic_store_n(&c->ntables, nt + 1, __ATOMIC_RELEASE);
		}
	} else if (old != t) {
		/* the slot changes table: relaxed, published by the revoke_gen bump (release);
		 * the old table's free waits for the workers first (revoke_pending) */
		__atomic_store_n(&c->rights[id], (uint8_t)r, __ATOMIC_RELAXED);
		__atomic_store_n(&c->tables[id], t, __ATOMIC_RELAXED);
		t->refs++;
		if (old) {
			old->refs--;
			old->revoke_pending = true;
		}
		__atomic_add_fetch(&s->revoke_gen, 1, __ATOMIC_RELEASE);
	}
	if (send_open_ok(c, m->h.seq, id, n))
		return false;
	srv_logf(SRV_LOG_DEBUG, SRV_KV(SRV_F_UINT("client", c->id), SRV_F_TABLE(name),
				       SRV_F_UINT("version", t->serve_version), SRV_F_UINT("id", id)),
		 "client %u opened version %" PRIu64 " of serving table '%s' (id %u)", c->id,
		 t->serve_version, name, id);
	return true;
}

/* ---- switch and retirement ----------------------------------------------------------- */

static void load_finished(struct srv_server *s, struct sname *n)
{
	struct load *l = n->load;
	pthread_join(l->thread, NULL);
	n->load = NULL;
	struct srv_table *t = l->t;
	if (l->err) {
		discard(s, t);
		srv_logf(SRV_LOG_WARN, SRV_KV(SRV_F_TABLE(n->name), SRV_F_PATH(l->path),
					      SRV_F_UINT("version", l->version), SRV_F_ERRNO(l->err)),
			 "serving table '%s': version %" PRIu64 " from %s not loaded: %s; %s", n->name,
			 l->version, l->path, l->problem, n->cur ? "the current version serves on"
								: "nothing serves yet");
		srv_reply_error(l->sock, l->seq, l->err, FINAL_SEND_MS, "serving table '%s': "
				"version %" PRIu64 " from %.100s not loaded: %s%s", n->name,
				l->version, l->path, l->problem, n->cur ? " (the current version "
				"serves on)" : "");
	} else {
		struct srv_table *prev = n->cur;
		n->cur = t; /* from now on SERVE_OPEN gives t */
		n->miss_init = l->flags & DE_SERVE_MISS_INIT;
		if (prev) {
			de_table_supersede(prev->t); /* its readers' next batch reopens */
			n->old[n->nold++] = (struct old){ .t = prev, .since_ms = now_ms() };
		}
		uint64_t bytes = t->quota ? srv_quota_acct_bytes(t->quota)
					  : de_arena_mapped_bytes(t->arena);
		srv_logf(SRV_LOG_INFO, SRV_KV(SRV_F_TABLE(n->name), SRV_F_PATH(l->path),
					      SRV_F_UINT("version", l->version),
					      SRV_F_UINT("records", l->records), SRV_F_UINT("bytes", bytes)),
			 "serving table '%s' now answers from version %" PRIu64 " (%" PRIu64
			 " records, %" PRIu64 " MiB)%s", n->name, l->version, l->records, bytes >> 20,
			 prev ? "; the previous version goes once its readers moved on" : "");
		struct de_msg_serve_load_ok ok;
		memset(&ok, 0, sizeof ok);
		srv_reply_hdr(&ok.h, DE_MSG_SERVE_LOAD_OK, sizeof ok, l->seq);
		ok.version = l->version;
		ok.records = l->records;
		ok.bytes = bytes;
		ok.previous = prev ? prev->serve_version : 0;
		srv_reply_send(l->sock, &ok, sizeof ok, NULL, 0, FINAL_SEND_MS);
	}
	close(l->sock);
	free(l);
}

/* Free superseded version t once nothing can use it: revoke what still holds it, wait for
 * the workers and the slow pool when a slot of it was cleared. 0, or -ETIMEDOUT (it stays,
 * and is tried again later). */
static int version_free(struct srv_server *s, struct srv_client *clients, struct srv_table *t)
{
	unsigned revoked = 0;
	if (srv_control_revoke(s, clients, t, REVOKE_WAIT_MS, &revoked)) {
		srv_logf(SRV_LOG_WARN, SRV_KV(SRV_F_TABLE(t->name)),
			 "serving: version '%s' stays: a worker or a top-k job still used it "
			 "after %u ms", t->name, REVOKE_WAIT_MS);
		return -ETIMEDOUT;
	}
	uint64_t bytes = t->quota ? srv_quota_acct_bytes(t->quota) : 0;
	srv_logf(SRV_LOG_INFO, SRV_KV(SRV_F_TABLE(t->serve_name),
				      SRV_F_UINT("version", t->serve_version),
				      SRV_F_UINT("bytes", bytes), SRV_F_UINT("revoked", revoked)),
		 "serving table '%s': version %" PRIu64 " freed (%" PRIu64 " MiB back%s)",
		 t->serve_name, t->serve_version, bytes >> 20,
		 revoked ? ", its last holders revoked after [serving] grace_ms" : "");
	srv_registry_lock(&s->reg);
	srv_registry_drop(&s->reg, t); /* never de_table_retire: it stays superseded */
	srv_registry_unlock(&s->reg);
	return 0;
}

/* Frees n's superseded versions that nobody holds or whose grace is over. */
static void free_old(struct srv_server *s, struct srv_client *clients, struct sname *n,
		     int64_t now)
{
	for (unsigned i = 0; i < n->nold;) {
		struct srv_table *t = n->old[i].t;
		bool due = now - n->old[i].since_ms >= (int64_t)s->cfg.serve_grace_ms;
		if ((t->refs == 0 || due) && !version_free(s, clients, t)) {
			n->old[i] = n->old[--n->nold];
			continue;
		}
		if (due) /* a free that timed out: try again a grace later */
			n->old[i].since_ms = now;
		i++;
	}
}

void srv_serving_poll(struct srv_server *s, struct srv_client *clients)
{
	int64_t now = now_ms();
	for (struct sname *n = s->serving ? s->serving->head : NULL; n; n = n->next) {
		if (n->load && __atomic_load_n(&n->load->finished, __ATOMIC_ACQUIRE))
			load_finished(s, n);
		free_old(s, clients, n, now);
	}
	for (struct sname **pp = s->serving ? &s->serving->dropped : NULL; pp && *pp;) {
		struct sname *n = *pp;
		free_old(s, clients, n, now);
		if (n->nold) {
			pp = &n->next;
			continue;
		}
		*pp = n->next;
		free(n);
	}
}

/* ---- unloading (DROP of a serving name) ------------------------------------------------ */

/* Connections holding a version of n. */
static unsigned held(const struct sname *n)
{
	unsigned refs = n->cur ? n->cur->refs : 0;
	for (unsigned i = 0; i < n->nold; i++)
		refs += n->old[i].t->refs;
	return refs;
}

/* ... of them, from connections already closed (released at their reap). */
static unsigned closing(const struct srv_client *clients, const struct sname *n)
{
	unsigned refs = n->cur ? srv_control_closing_refs(clients, n->cur) : 0;
	for (unsigned i = 0; i < n->nold; i++)
		refs += srv_control_closing_refs(clients, n->old[i].t);
	return refs;
}

void srv_serving_drop(struct srv_server *s, struct srv_client *clients, struct srv_client *c,
		      const struct de_msg_drop *m)
{
	char msg[240];
	bool force = m->flags & DE_DROP_FORCE;
	const char *name = m->name;
	struct sname *n = sname_find(s, name), **pp;
	unsigned rights = srv_authz_rights(&s->cfg, c->uid, c->gid, name, true, n->owner);
	int err = srv_authz_need(&s->cfg, rights, SRV_RIGHT_DROP, c->uid, c->gid, name, msg,
				 sizeof msg);
	if (!err && n->load) {
		snprintf(msg, sizeof msg, "serving table '%.40s': version %" PRIu64 " is loading "
			 "(from %.100s); unload it when the load ended", name, n->load->version,
			 n->load->path);
		err = -EBUSY;
	}
	unsigned refs = held(n);
	if (!err && refs && !force && refs == closing(clients, n)) {
		c->drop_wait = true; /* only connections that closed just before: at the reap */
		c->drop_seq = m->h.seq;
		memcpy(c->drop_name, m->name, DE_NAME_MAX);
		return;
	}
	if (!err && refs && !force) {
		snprintf(msg, sizeof msg, "serving table '%.40s': %u reader handle%s hold%s its "
			 "versions: close them, or force the unload (dynembctl drop --force; their "
			 "next lookup fails -ENOENT)", name, refs, refs == 1 ? "" : "s",
			 refs == 1 ? "s" : "");
		err = -EBUSY;
	}
	if (err) {
		srv_reply_error(c->sock, m->h.seq, err, 0, "%s", msg);
		return;
	}
	/* off the list first: no SERVE_OPEN finds it, a new load starts a new name */
	for (pp = &s->serving->head; *pp != n; pp = &(*pp)->next)
		;
	*pp = n->next;
	n->next = s->serving->dropped;
	s->serving->dropped = n;
	int64_t now = now_ms();
	if (n->cur) {
		de_table_supersede(n->cur->t); /* readers' next batch asks SERVE_OPEN: -ENOENT */
		n->old[n->nold++] = (struct old){ .t = n->cur, .since_ms = now };
		n->cur = NULL;
	}
	uint64_t bytes = 0;
	unsigned stay = 0;
	for (unsigned i = 0; i < n->nold;) {
		struct srv_table *t = n->old[i].t;
		uint64_t b = t->quota ? srv_quota_acct_bytes(t->quota) : 0;
		if (!version_free(s, clients, t)) {
			bytes += b;
			n->old[i] = n->old[--n->nold];
			continue;
		}
		stay++;
		i++;
	}
	srv_logf(SRV_LOG_INFO, SRV_KV(SRV_F_UINT("client", c->id), SRV_F_UINT("uid", c->uid),
				      SRV_F_TABLE(name), SRV_F_UINT("bytes", bytes),
				      SRV_F_UINT("forced", force), SRV_F_UINT("readers", refs)),
		 "client %u (uid %u) %sunloaded serving table '%s': %" PRIu64 " MiB given back%s",
		 c->id, (unsigned)c->uid, force ? "force-" : "", name, bytes >> 20,
		 stay ? "; some versions are freed later (still used by a worker)" : "");
	if (stay) {
		srv_reply_error(c->sock, m->h.seq, -ETIMEDOUT, 0, "serving table '%s' unloaded, "
				"but %u of its versions were still used by a worker or a job after "
				"%u ms: the daemon frees them later", name, stay, REVOKE_WAIT_MS);
		return;
	}
	struct de_msg_drop_ok ok;
	memset(&ok, 0, sizeof ok);
	srv_reply_hdr(&ok.h, DE_MSG_DROP_OK, sizeof ok, m->h.seq);
	ok.bytes = bytes;
	srv_reply_send(c->sock, &ok, sizeof ok, NULL, 0, 0);
}

int srv_serving_next_ms(const struct srv_server *s)
{
	int64_t now = now_ms(), best = -1;
	for (int list = 0; list < 2; list++)
	for (const struct sname *n = !s->serving ? NULL : list ? s->serving->dropped
							      : s->serving->head; n; n = n->next)
		for (unsigned i = 0; i < n->nold; i++) {
			int64_t due = n->old[i].since_ms + (int64_t)s->cfg.serve_grace_ms - now;
			if (due < 0)
				due = 0;
			if (best < 0 || due < best)
				best = due;
		}
	return best > INT32_MAX ? INT32_MAX : (int)best;
}

int srv_serving_drop_check(const struct srv_server *s, const char *name,
			   const struct srv_table *t, char *msg, size_t cap)
{
	(void)s;
	if (t && t->serve_version) {
		snprintf(msg, cap, "table '%s' is version %" PRIu64 " of serving table '%s': the "
			 "daemon frees superseded versions itself", name, t->serve_version,
			 t->serve_name);
		return -EBUSY;
	}
	return 0;
}

bool srv_serving_is_name(const struct srv_server *s, const char *name)
{
	return sname_find(s, name) != NULL;
}

void srv_serving_stop(struct srv_server *s)
{
	if (!s->serving)
		return;
	for (struct sname *n = s->serving->head, *next; n; n = next) {
		next = n->next;
		if (n->load) { /* srv_stopping: its progress callback says stop */
			pthread_join(n->load->thread, NULL);
			close(n->load->sock);
			free(n->load);
		}
		free(n); /* the versions are registry tables: srv_registry_destroy frees them */
	}
	for (struct sname *n = s->serving->dropped, *next; n; n = next) {
		next = n->next;
		free(n);
	}
	free(s->serving);
	s->serving = NULL;
}
