/*
 * config_ns.h — PRIVATE to dynembd: the [namespace NAME] sections of the configuration
 * (config_ns.c), part of the config layer. A namespace is a table name prefix with, for
 * each right, the clients that hold it; authz.c turns them into a caller's rights on one
 * table. Read once at startup, then only read.
 *
 *   [namespace tenant-a]
 *   prefix = tenant-a/          every table whose name starts with it (the longest
 *                               matching prefix of all namespaces wins; "" matches all)
 *   open = owner, 1000, @trainers        (read: OPEN maps the table read-only)
 *   write = owner                        (UPDATE, ERASE, APPLY_GRADS, LOOKUP creating)
 *   export = ...  import = ...  snapshot = ...  drop = ...
 *   create = 1000, @trainers             (OPEN of a name no table has yet)
 *
 * A list holds user ids or names, @group ids or names, `owner` (the uid that created the
 * table) and `*` (every client allowed to connect). An empty list grants the right to no
 * one (root keeps every right). A right a section does not name: `owner`, and for create
 * `*`, which is also what a name outside every namespace gets.
 */
#ifndef DE_SRV_CONFIG_NS_H
#define DE_SRV_CONFIG_NS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>

#include "proto.h" /* DE_NAME_MAX */

enum srv_right {
	SRV_RIGHT_OPEN,
	SRV_RIGHT_WRITE,
	SRV_RIGHT_EXPORT,
	SRV_RIGHT_IMPORT,
	SRV_RIGHT_SNAPSHOT,
	SRV_RIGHT_DROP,
	SRV_RIGHT_CREATE,
	SRV_NRIGHTS
};
#define SRV_RIGHT_BIT(r) (1u << (r))
#define SRV_RIGHTS_ALL ((1u << SRV_NRIGHTS) - 1u)

#define SRV_NS_MAX 32u       /* [namespace] sections */
#define SRV_NS_MAX_IDS 16u   /* users, and groups, in one right's list */

struct srv_acl {
	bool anyone;             /* `*` */
	bool owner;              /* `owner` */
	unsigned nuids, ngids;
	uid_t uids[SRV_NS_MAX_IDS];
	gid_t gids[SRV_NS_MAX_IDS];
};

struct srv_namespace {
	char name[48];           /* NAME of [namespace NAME] */
	char prefix[DE_NAME_MAX];
	bool has_prefix;
	unsigned set;            /* SRV_RIGHT_BIT of each right the section named */
	struct srv_acl acl[SRV_NRIGHTS];
};

struct srv_namespaces {
	unsigned n;
	struct srv_namespace ns[SRV_NS_MAX];
};

/* "open", "write", ... */
const char *srv_right_name(enum srv_right r);
/* One key of section "namespace REST" (rest: what follows "namespace"). 0, or -1 with a
 * message in err naming the problem. */
int srv_ns_set(struct srv_namespaces *n, const char *rest, const char *key, const char *val,
	       char *err, size_t errcap);
/* After the file: every namespace has a prefix, no two the same; rights a section does
 * not name get their defaults. 0, or -1 with a message in err. */
int srv_ns_finish(struct srv_namespaces *n, char *err, size_t errcap);
void srv_ns_print(const struct srv_namespaces *n, FILE *f);
/* The namespace whose prefix is the longest one that starts name, or NULL. */
const struct srv_namespace *srv_ns_match(const struct srv_namespaces *n, const char *name);

#endif /* DE_SRV_CONFIG_NS_H */
