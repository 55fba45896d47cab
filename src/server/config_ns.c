/*
 * config_ns.c — the [namespace NAME] sections of dynembd's configuration (config_ns.h
 * states their syntax and defaults): parsing one key (config.c's set_key hands every key
 * of a "namespace ..." section here), the checks after the file, printing, and the
 * longest-prefix match authz.c uses.
 *
 * Owns nothing after startup: struct srv_namespaces lives inside struct srv_config.
 * Never: resolve a name later than startup (user and group names go through getpwnam
 * and getgrnam once, here).
 */
#include "config_ns.h"

#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>

static const char *const RIGHT_NAMES[SRV_NRIGHTS] = {
	"open", "write", "export", "import", "snapshot", "drop", "create",
};

const char *srv_right_name(enum srv_right r)
{
	return (unsigned)r < SRV_NRIGHTS ? RIGHT_NAMES[r] : "?";
}

static char *trim(char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	size_t n = strlen(s);
	while (n && isspace((unsigned char)s[n - 1]))
		s[--n] = 0;
	return s;
}

/* A decimal id below UINT32_MAX (the "no id" value -1), or -1. */
static int parse_id(const char *s, uint32_t *out)
{
	if (!*s || !isdigit((unsigned char)*s))
		return -1;
	errno = 0;
	char *end;
	unsigned long long x = strtoull(s, &end, 10);
	if (errno || *end || x >= UINT32_MAX)
		return -1;
	*out = (uint32_t)x;
	return 0;
}

static int parse_acl(const char *v, struct srv_acl *a, char *err, size_t cap)
{
	char buf[1024];
	if (strlen(v) >= sizeof buf) {
		snprintf(err, cap, "list too long (at most %zu bytes)", sizeof buf - 1);
		return -1;
	}
	strcpy(buf, v);
	*a = (struct srv_acl){ 0 };
	char *save = NULL;
	for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		const char *t = trim(tok);
		uint32_t id;
		if (!*t)
			continue;
		if (!strcmp(t, "*")) {
			a->anyone = true;
		} else if (!strcmp(t, "owner")) {
			a->owner = true;
		} else if (t[0] == '@') {
			struct group *g = parse_id(t + 1, &id) ? getgrnam(t + 1) : NULL;
			if (!g && parse_id(t + 1, &id)) {
				snprintf(err, cap, "'%s' is not a group id or name", t + 1);
				return -1;
			}
			if (a->ngids == SRV_NS_MAX_IDS) {
				snprintf(err, cap, "more than %u groups", SRV_NS_MAX_IDS);
				return -1;
			}
			a->gids[a->ngids++] = g ? g->gr_gid : (gid_t)id;
		} else {
			struct passwd *p = parse_id(t, &id) ? getpwnam(t) : NULL;
			if (!p && parse_id(t, &id)) {
				snprintf(err, cap, "'%s' is not a user id or name (groups are "
					 "written @group, the creator 'owner', everyone '*')", t);
				return -1;
			}
			if (a->nuids == SRV_NS_MAX_IDS) {
				snprintf(err, cap, "more than %u users", SRV_NS_MAX_IDS);
				return -1;
			}
			a->uids[a->nuids++] = p ? p->pw_uid : (uid_t)id;
		}
	}
	return 0;
}

int srv_ns_set(struct srv_namespaces *n, const char *rest, const char *key, const char *val,
	       char *err, size_t errcap)
{
	char nbuf[128];
	snprintf(nbuf, sizeof nbuf, "%s", rest);
	const char *name = trim(nbuf);
	if (rest[0] && !isspace((unsigned char)rest[0])) {
		snprintf(err, errcap, "unknown section [namespace%s] (a namespace is [namespace NAME])",
			 rest);
		return -1;
	}
	if (!*name || strlen(name) >= sizeof n->ns[0].name) {
		snprintf(err, errcap, "a namespace section is [namespace NAME], NAME 1..%zu bytes",
			 sizeof n->ns[0].name - 1);
		return -1;
	}
	struct srv_namespace *ns = NULL;
	for (unsigned i = 0; i < n->n && !ns; i++)
		if (!strcmp(n->ns[i].name, name))
			ns = &n->ns[i];
	if (!ns) {
		if (n->n == SRV_NS_MAX) {
			snprintf(err, errcap, "more than %u [namespace] sections", SRV_NS_MAX);
			return -1;
		}
		ns = &n->ns[n->n++];
		*ns = (struct srv_namespace){ 0 };
		strcpy(ns->name, name);
	}
	char vbuf[1024];
	snprintf(vbuf, sizeof vbuf, "%s", val ? val : "");
	const char *v = trim(vbuf);
	if (!strcmp(key, "prefix")) {
		if (strlen(v) >= DE_NAME_MAX) {
			snprintf(err, errcap, "namespace '%s': prefix is longer than a table name "
				 "(at most %u bytes)", name, DE_NAME_MAX - 1);
			return -1;
		}
		for (const char *p = v; *p; p++)
			if ((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e) {
				snprintf(err, errcap, "namespace '%s': prefix has a byte that no table "
					 "name has (printable ASCII, no spaces)", name);
				return -1;
			}
		strcpy(ns->prefix, v);
		ns->has_prefix = true;
		return 0;
	}
	for (unsigned r = 0; r < SRV_NRIGHTS; r++) {
		if (strcmp(key, RIGHT_NAMES[r]))
			continue;
		char e[200];
		if (parse_acl(v, &ns->acl[r], e, sizeof e)) {
			snprintf(err, errcap, "namespace '%s': %s: %s", name, key, e);
			return -1;
		}
		ns->set |= SRV_RIGHT_BIT(r);
		return 0;
	}
	snprintf(err, errcap, "unknown key '%s' in [namespace %s] (prefix, open, write, export, "
		 "import, snapshot, drop, create)", key, name);
	return -1;
}

int srv_ns_finish(struct srv_namespaces *n, char *err, size_t errcap)
{
	for (unsigned i = 0; i < n->n; i++) {
		struct srv_namespace *ns = &n->ns[i];
		if (!ns->has_prefix) {
			snprintf(err, errcap, "[namespace %s] has no prefix (prefix = tenant-a/ covers "
				 "every table whose name starts with tenant-a/)", ns->name);
			return -1;
		}
		for (unsigned j = 0; j < i; j++)
			if (!strcmp(n->ns[j].prefix, ns->prefix)) {
				snprintf(err, errcap, "[namespace %s] and [namespace %s] have the same "
					 "prefix '%s'", n->ns[j].name, ns->name, ns->prefix);
				return -1;
			}
		for (unsigned r = 0; r < SRV_NRIGHTS; r++)
			if (!(ns->set & SRV_RIGHT_BIT(r))) {
				ns->acl[r] = (struct srv_acl){ 0 };
				if (r == SRV_RIGHT_CREATE)
					ns->acl[r].anyone = true;
				else
					ns->acl[r].owner = true;
			}
	}
	return 0;
}

static void print_acl(const struct srv_acl *a, FILE *f)
{
	const char *sep = "";
	if (a->anyone) {
		fputs("*", f);
		sep = ",";
	}
	if (a->owner) {
		fprintf(f, "%sowner", sep);
		sep = ",";
	}
	for (unsigned i = 0; i < a->nuids; i++, sep = ",")
		fprintf(f, "%s%u", sep, (unsigned)a->uids[i]);
	for (unsigned i = 0; i < a->ngids; i++, sep = ",")
		fprintf(f, "%s@%u", sep, (unsigned)a->gids[i]);
	fputc('\n', f);
}

void srv_ns_print(const struct srv_namespaces *n, FILE *f)
{
	for (unsigned i = 0; i < n->n; i++) {
		const struct srv_namespace *ns = &n->ns[i];
		fprintf(f, "[namespace %s]\nprefix = %s\n", ns->name, ns->prefix);
		for (unsigned r = 0; r < SRV_NRIGHTS; r++) {
			fprintf(f, "%s = ", RIGHT_NAMES[r]);
			print_acl(&ns->acl[r], f);
		}
	}
}

const struct srv_namespace *srv_ns_match(const struct srv_namespaces *n, const char *name)
{
	const struct srv_namespace *best = NULL;
	size_t best_len = 0;
	for (unsigned i = 0; i < n->n; i++) {
		size_t l = strlen(n->ns[i].prefix);
		if (!strncmp(name, n->ns[i].prefix, l) && (!best || l > best_len)) {
			best = &n->ns[i];
			best_len = l;
		}
	}
	return best;
}
