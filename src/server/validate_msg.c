/*
 * validate_msg.c — the pure checks of control packets (validate.h): srv_check_msg frames
 * one SOCK_SEQPACKET packet (size, magic, type, exact length from srv_request_len, order,
 * version) and checks its body: an OPEN's name and configs (validate_config.c), the
 * names, flags and paths of SNAPSHOT, EXPORT, IMPORT, SERVE_LOAD (srv_check_persist_msg),
 * the name and pad of a SERVE_OPEN, the name of a DROP, STATS_BY_NAME or EVICT, a TABLES or OPSTATS pad, a LOG_LEVEL's level.
 *
 * Callers: control.c on every packet it receives, tests/fuzz/fuzz_control.c. Never: read
 * past n bytes, or a body before its framing is good; an error always leaves the reply
 * text in msg.
 */
#include "validate.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

size_t srv_request_len(uint16_t type)
{
	switch (type) {
	case DE_MSG_HELLO: return sizeof(struct de_msg_hello);
	case DE_MSG_OPEN: return sizeof(struct de_msg_open);
	case DE_MSG_SEGMENTS: return sizeof(struct de_msg_segments);
	case DE_MSG_BYE: return sizeof(struct de_msg_hdr);
	case DE_MSG_SNAPSHOT: return sizeof(struct de_msg_snapshot);
	case DE_MSG_EXPORT: return sizeof(struct de_msg_export);
	case DE_MSG_IMPORT: return sizeof(struct de_msg_import);
	case DE_MSG_DROP: return sizeof(struct de_msg_drop);
	case DE_MSG_STATUS: return sizeof(struct de_msg_hdr);
	case DE_MSG_TABLES: return sizeof(struct de_msg_tables);
	case DE_MSG_STATS_BY_NAME: return sizeof(struct de_msg_by_name);
	case DE_MSG_EVICT: return sizeof(struct de_msg_by_name);
	case DE_MSG_LOG_LEVEL: return sizeof(struct de_msg_log_level);
	case DE_MSG_OPSTATS: return sizeof(struct de_msg_tables);
	case DE_MSG_SERVE_LOAD: return sizeof(struct de_msg_serve_load);
	case DE_MSG_SERVE_OPEN: return sizeof(struct de_msg_serve_open);
	default: return 0; /* not a request a client sends */
	}
}

int srv_check_msg(const void *buf, size_t n, bool trunc, bool hello_done, union srv_msg *out,
		  char *msg, size_t msgcap)
{
	struct de_msg_hdr h = { 0 };
	memset(out, 0, sizeof *out);
	if (n >= sizeof h)
		memcpy(&h, buf, sizeof h);
	out->h = h;
	/* DROP without flags (proto.h): shorter, its flags read as 0 */
	bool drop_v0 = n >= sizeof h && h.type == DE_MSG_DROP && n == DE_MSG_DROP_V0_LEN;
	if (trunc || n < sizeof h || h.magic != DE_MSG_MAGIC || h.len != n ||
	    !srv_request_len(h.type) || (n != srv_request_len(h.type) && !drop_v0)) {
		snprintf(msg, msgcap, "malformed message (%zu bytes, type %u)", n,
			 n >= sizeof h ? h.type : 0);
		return -EBADMSG;
	}
	if (!hello_done && h.type != DE_MSG_HELLO) {
		snprintf(msg, msgcap, "the first message must be HELLO");
		return -EPROTO;
	}
	if (hello_done && h.type == DE_MSG_HELLO) {
		snprintf(msg, msgcap, "HELLO twice");
		return -EPROTO;
	}
	memcpy(out, buf, n); /* n <= srv_request_len(h.type) <= sizeof *out */
	if (h.type == DE_MSG_HELLO)
		return 0;    /* its version: after the allow-list, in on_hello */
	if (h.version != DE_PROTO_VERSION) {
		snprintf(msg, msgcap, "protocol version %u; this dynembd speaks %u", h.version,
			 DE_PROTO_VERSION);
		return -EPROTO;
	}
	if (h.type == DE_MSG_OPEN) {
		int err = srv_name_check(out->open.name, msg, msgcap);
		if (!err)
			err = srv_wire_config_normalize(&out->open.cfg, msg, msgcap);
		if (!err)
			err = srv_learn_config_normalize(&out->open.learn, &out->open.cfg, msg, msgcap);
		return err;
	}
	if (h.type == DE_MSG_SNAPSHOT || h.type == DE_MSG_EXPORT || h.type == DE_MSG_IMPORT ||
	    h.type == DE_MSG_SERVE_LOAD)
		return srv_check_persist_msg(out, msg, msgcap);
	if (h.type == DE_MSG_SERVE_OPEN) {
		if (!srv_all_zero(out->serve_open.pad, sizeof out->serve_open.pad)) {
			snprintf(msg, msgcap, "SERVE_OPEN: a nonzero pad");
			return -EINVAL;
		}
		return srv_name_check(out->serve_open.name, msg, msgcap);
	}
	if (h.type == DE_MSG_DROP && (out->drop.flags & ~DE_DROP_FORCE || out->drop.pad)) {
		snprintf(msg, msgcap, "DROP: unknown flags 0x%x (known: 0x%x force)%s",
			 out->drop.flags & ~DE_DROP_FORCE, DE_DROP_FORCE,
			 out->drop.pad ? ", and a nonzero pad" : "");
		return -EINVAL;
	}
	if (h.type == DE_MSG_DROP)
		return srv_name_check(out->drop.name, msg, msgcap);
	if (h.type == DE_MSG_STATS_BY_NAME || h.type == DE_MSG_EVICT)
		return srv_name_check(out->by_name.name, msg, msgcap);
	if ((h.type == DE_MSG_TABLES || h.type == DE_MSG_OPSTATS) && out->tables.pad) {
		snprintf(msg, msgcap, "%s: a nonzero pad",
			 h.type == DE_MSG_TABLES ? "TABLES" : "OPSTATS");
		return -EINVAL;
	}
	if (h.type == DE_MSG_LOG_LEVEL && (out->log_level.level > DE_LOG_LEVEL_MAX ||
					   out->log_level.pad)) {
		snprintf(msg, msgcap, "log level %u: the levels are 0 error, 1 warn, 2 info, "
			 "3 debug%s", out->log_level.level, out->log_level.pad ? " (and the pad "
			 "must be 0)" : "");
		return -EINVAL;
	}
	return 0;
}


bool srv_all_zero(const void *p, size_t n)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < n; i++)
		if (b[i])
			return false;
	return true;
}

static bool nul_within(const char *s, size_t cap)
{
	return memchr(s, 0, cap) != NULL;
}

static int path_check(const char *path, char *msg, size_t cap)
{
	if (!nul_within(path, DE_PATH_MAX) || path[0] != '/') {
		snprintf(msg, cap, "the path must be absolute and NUL-terminated within %u bytes",
			 DE_PATH_MAX);
		return -EINVAL;
	}
	for (const char *q = path; *q;) {
		while (*q == '/')
			q++;
		size_t n = strcspn(q, "/");
		if ((n == 1 && q[0] == '.') || (n == 2 && q[0] == '.' && q[1] == '.')) {
			snprintf(msg, cap, "the path must not have '.' or '..' components");
			return -EINVAL;
		}
		q += n;
	}
	size_t len = strlen(path);
	if (path[len - 1] == '/') {
		snprintf(msg, cap, "the path names a directory, not a file");
		return -EINVAL;
	}
	return 0;
}

int srv_check_persist_msg(union srv_msg *m, char *msg, size_t cap)
{
	switch (m->h.type) {
	case DE_MSG_SNAPSHOT:
		if ((m->snapshot.flags & ~DE_SNAP_FULL) || m->snapshot.pad) {
			snprintf(msg, cap, "SNAPSHOT: unknown flags or a nonzero pad");
			return -EINVAL;
		}
		if (srv_all_zero(m->snapshot.name, DE_NAME_MAX))
			return 0;
		return srv_name_check(m->snapshot.name, msg, cap);
	case DE_MSG_EXPORT: {
		int err = srv_name_check(m->exp.name, msg, cap);
		return err ? err : path_check(m->exp.path, msg, cap);
	}
	case DE_MSG_IMPORT: {
		if ((m->imp.flags & ~DE_WIMPORT_SALVAGE) || m->imp.pad) {
			snprintf(msg, cap, "IMPORT: unknown flags or a nonzero pad");
			return -EINVAL;
		}
		int err = srv_name_check(m->imp.name, msg, cap);
		return err ? err : path_check(m->imp.path, msg, cap);
	}
	case DE_MSG_SERVE_LOAD: {
		if ((m->serve_load.flags & ~DE_SERVE_MISS_INIT) || m->serve_load.pad) {
			snprintf(msg, cap, "SERVE_LOAD: unknown flags 0x%x (known: 0x%x miss-init)%s",
				 m->serve_load.flags & ~DE_SERVE_MISS_INIT, DE_SERVE_MISS_INIT,
				 m->serve_load.pad ? ", and a nonzero pad" : "");
			return -EINVAL;
		}
		int err = srv_name_check(m->serve_load.name, msg, cap);
		return err ? err : path_check(m->serve_load.path, msg, cap);
	}
	default:
		return 0;
	}
}

