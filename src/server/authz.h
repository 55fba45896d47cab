/*
 * authz.h — PRIVATE to dynembd: who may do what to which table (authz.c), the layer of
 * the registry (it reads the configuration only; callers pass a table's owner).
 *
 * Rights (config_ns.h): open (read: OPEN maps the table), write, export, import,
 * snapshot, drop, and create (OPEN of a name no table has). A caller's rights on a name
 * come from the [namespace] with the longest prefix of the name; a name outside every
 * namespace gets the default: every right for the table's creator (its owner), create
 * for every client, nothing else for anyone else. Root (uid 0) has every right: it can
 * read the daemon's memory anyway. Clients are judged by the uid and the primary gid of
 * SO_PEERCRED (supplementary groups are not seen).
 *
 * Callers check rights before they look at whether the table exists, and a refusal
 * names the caller, the right and the rule (the namespace), never another table's
 * config.
 */
#ifndef DE_SRV_AUTHZ_H
#define DE_SRV_AUTHZ_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "config.h"

/* SRV_RIGHT_BIT set of what uid/gid may do to the table called name: exists says
 * whether a table has that name now, owner is its creator (ignored when !exists). */
unsigned srv_authz_rights(const struct srv_config *cfg, uid_t uid, gid_t gid, const char *name,
			  bool exists, uid_t owner);
/* -EACCES with a message in msg when rights lack right, else 0. */
int srv_authz_need(const struct srv_config *cfg, unsigned rights, enum srv_right right,
		   uid_t uid, gid_t gid, const char *name, char *msg, size_t cap);

#endif /* DE_SRV_AUTHZ_H */
