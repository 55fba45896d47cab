/*
 * client_persist.c — libdynemb's calls on named tables: dynemb_snapshot, dynemb_export,
 * dynemb_import, dynemb_serve_load, dynemb_drop_table (dynemb.h). Each is one control request (proto.h types 9..15) answered by a job thread
 * of the daemon: PROGRESS messages, then the OK reply or ERROR. The transport (send,
 * replies checked for magic, version, type, exact length and seq; the timeout restarting
 * at each message) is client.c's, through de_priv_ctl_request.
 *
 * Owns nothing beyond a call. Never trusts a reply: PROGRESS names are NUL-terminated
 * here, phases outside the enum are passed as they are (a newer daemon), counts as given.
 */
#include <errno.h>
#include <string.h>

#include "client_priv.h"
#include "dynemb.h"
#include "proto.h"

struct prog_ctx {
	dynemb_progress_cb cb;
	void *ctx;
};

static int on_progress(void *ctx, const void *msg)
{
	const struct prog_ctx *pc = ctx;
	struct de_msg_progress m;
	memcpy(&m, msg, sizeof m);
	if (!pc->cb)
		return 0;
	char name[DE_NAME_MAX];
	memcpy(name, m.name, sizeof name);
	name[sizeof name - 1] = 0;
	struct dynemb_progress p = { .done = m.done, .total = m.total,
				 .phase = (enum dynemb_progress_phase)m.phase,
				 .table_index = m.table_index, .table = name };
	return pc->cb(pc->ctx, &p);
}

static int put_path(char dst[DE_PATH_MAX], const char *path)
{
	size_t n = path ? strlen(path) : 0;
	if (!n || n >= DE_PATH_MAX || path[0] != '/')
		return de_priv_err(-EINVAL, "path %s: a path is absolute, 1 to %u bytes",
				   !n ? "empty" : n >= DE_PATH_MAX ? "too long" : "not absolute",
				   DE_PATH_MAX - 1);
	memcpy(dst, path, n);
	return 0;
}

int dynemb_snapshot(dynemb_client *c, const char *table_name, bool full, dynemb_progress_cb cb,
		    void *ctx, struct dynemb_snapshot_result *out)
{
	struct de_msg_snapshot m;
	memset(&m, 0, sizeof m);
	m.h.type = DE_MSG_SNAPSHOT;
	if (table_name && de_priv_put_name(m.name, table_name))
		return -EINVAL;
	m.flags = full ? DE_SNAP_FULL : 0;
	struct de_msg_snapshot_ok ok;
	struct prog_ctx pc = { cb, ctx };
	int err = de_priv_ctl_request(c, &m, sizeof m, DE_MSG_SNAPSHOT_OK, &ok, sizeof ok,
				      on_progress, &pc);
	if ((!err || err == -ECANCELED) && out)
		*out = (struct dynemb_snapshot_result){ .tables = ok.tables, .lsn = ok.lsn,
						    .rows = ok.rows, .bytes = ok.bytes };
	return err;
}

int dynemb_export(dynemb_client *c, const char *table_name, const char *path, dynemb_progress_cb cb,
		  void *ctx, uint64_t *records, uint64_t *bytes)
{
	struct de_msg_export m;
	memset(&m, 0, sizeof m);
	m.h.type = DE_MSG_EXPORT;
	if (de_priv_put_name(m.name, table_name) || put_path(m.path, path))
		return -EINVAL;
	struct de_msg_export_ok ok;
	struct prog_ctx pc = { cb, ctx };
	int err = de_priv_ctl_request(c, &m, sizeof m, DE_MSG_EXPORT_OK, &ok, sizeof ok,
				      on_progress, &pc);
	if (!err || err == -ECANCELED) {
		if (records)
			*records = ok.records;
		if (bytes)
			*bytes = ok.bytes;
	}
	return err;
}

int dynemb_import(dynemb_client *c, const char *table_name, const char *path, unsigned flags,
		  dynemb_progress_cb cb, void *ctx, struct dynemb_import_result *out)
{
	struct de_msg_import m;
	memset(&m, 0, sizeof m);
	m.h.type = DE_MSG_IMPORT;
	if (de_priv_put_name(m.name, table_name) || put_path(m.path, path))
		return -EINVAL;
	if (flags & ~DYNEMB_IMPORT_SALVAGE_PREFIX)
		return de_priv_err(-EINVAL, "flags 0x%x: only DYNEMB_IMPORT_SALVAGE_PREFIX is "
				   "known", flags);
	m.flags = flags; /* DYNEMB_IMPORT_SALVAGE_PREFIX is DE_WIMPORT_SALVAGE (client.c) */
	struct de_msg_import_ok ok;
	struct prog_ctx pc = { cb, ctx };
	int err = de_priv_ctl_request(c, &m, sizeof m, DE_MSG_IMPORT_OK, &ok, sizeof ok,
				      on_progress, &pc);
	if ((!err || err == -ECANCELED) && out) {
		memset(out, 0, sizeof *out);
		out->records = ok.records;
		out->imported = ok.imported;
		out->dropped = ok.dropped;
		memcpy(out->problem, ok.problem, sizeof out->problem);
		out->problem[sizeof out->problem - 1] = 0;
	}
	return err;
}

int dynemb_serve_load(dynemb_client *c, const char *name, const char *path, unsigned flags,
		      dynemb_progress_cb cb, void *ctx, struct dynemb_serve_result *out)
{
	struct de_msg_serve_load m;
	memset(&m, 0, sizeof m);
	m.h.type = DE_MSG_SERVE_LOAD;
	if (de_priv_put_name(m.name, name) || put_path(m.path, path))
		return -EINVAL;
	if (flags & ~DYNEMB_SERVE_MISS_INIT)
		return de_priv_err(-EINVAL, "flags 0x%x: only DYNEMB_SERVE_MISS_INIT is known",
				   flags);
	if (c && !(dynemb_capabilities(c) & DYNEMB_CAP_SERVING))
		return de_priv_err(-EOPNOTSUPP, "this daemon has no serving tables (it is older "
				   "than DYNEMB_CAP_SERVING)");
	m.flags = flags; /* DYNEMB_SERVE_MISS_INIT is DE_SERVE_MISS_INIT (client.c) */
	struct de_msg_serve_load_ok ok;
	struct prog_ctx pc = { cb, ctx };
	int err = de_priv_ctl_request(c, &m, sizeof m, DE_MSG_SERVE_LOAD_OK, &ok, sizeof ok,
				      on_progress, &pc);
	if (!err && out) {
		memset(out, 0, sizeof *out);
		out->version = ok.version;
		out->records = ok.records;
		out->bytes = ok.bytes;
		out->previous = ok.previous;
	}
	return err;
}

int dynemb_drop_table(dynemb_client *c, const char *table_name, uint64_t *bytes)
{
	return dynemb_drop_table_flags(c, table_name, 0, bytes);
}

_Static_assert(DYNEMB_DROP_FORCE == DE_DROP_FORCE, "one definition on the wire");
_Static_assert(DYNEMB_CAP_DROP_FORCE == DE_CAP_DROP_FORCE, "one definition on the wire");

int dynemb_drop_table_flags(dynemb_client *c, const char *table_name, unsigned flags,
			    uint64_t *bytes)
{
	if (!c)
		return -EINVAL;
	if (flags & ~DYNEMB_DROP_FORCE)
		return de_priv_err(-EINVAL, "drop flags 0x%x: only DYNEMB_DROP_FORCE is known",
				   flags);
	if (!(dynemb_capabilities(c) & DE_CAP_DROP))
		return -EOPNOTSUPP;
	if (flags && !(dynemb_capabilities(c) & DE_CAP_DROP_FORCE))
		return de_priv_err(-EOPNOTSUPP, "this daemon has no forced drop (an older dynembd)");
	struct de_msg_drop m;
	memset(&m, 0, sizeof m);
	m.h.type = DE_MSG_DROP;
	if (de_priv_put_name(m.name, table_name))
		return -EINVAL;
	m.flags = flags;
	/* a daemon without flags takes the 80-byte DROP only (proto.h) */
	size_t len = flags || (dynemb_capabilities(c) & DE_CAP_DROP_FORCE) ? sizeof m
									    : DE_MSG_DROP_V0_LEN;
	struct de_msg_drop_ok ok;
	int err = de_priv_ctl_request(c, &m, len, DE_MSG_DROP_OK, &ok, sizeof ok, NULL, NULL);
	if (!err && bytes)
		*bytes = ok.bytes;
	return err;
}
