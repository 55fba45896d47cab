/*
 * authz.c — table rights: a caller's rights on a table name (authz.h states the rules)
 * and the refusal message.
 *
 * The decision depends on the configuration, the caller's uid/gid, the name and, for
 * the `owner` entries only, on the owner of the table of that name; so for a caller who
 * is not the owner, the answer is the same whether or not the table exists. Messages
 * name the caller, the right and the namespace; they never print a table's config or
 * whether it exists.
 */
#include "authz.h"

#include <errno.h>
#include <stdio.h>

static bool acl_has(const struct srv_acl *a, uid_t uid, gid_t gid, bool exists, uid_t owner)
{
	if (a->anyone || (a->owner && exists && owner == uid))
		return true;
	for (unsigned i = 0; i < a->nuids; i++)
		if (a->uids[i] == uid)
			return true;
	for (unsigned i = 0; i < a->ngids; i++)
		if (a->gids[i] == gid)
			return true;
	return false;
}

unsigned srv_authz_rights(const struct srv_config *cfg, uid_t uid, gid_t gid, const char *name,
			  bool exists, uid_t owner)
{
	if (uid == 0)
		return SRV_RIGHTS_ALL;
	const struct srv_namespace *ns = srv_ns_match(&cfg->ns, name);
	if (!ns) /* the default: the owner has every right, anyone may create a new name */
		return (exists && owner == uid ? SRV_RIGHTS_ALL : 0) | SRV_RIGHT_BIT(SRV_RIGHT_CREATE);
	unsigned r = 0;
	for (unsigned i = 0; i < SRV_NRIGHTS; i++)
		if (acl_has(&ns->acl[i], uid, gid, exists, owner))
			r |= SRV_RIGHT_BIT(i);
	return r;
}

int srv_authz_need(const struct srv_config *cfg, unsigned rights, enum srv_right right,
		   uid_t uid, gid_t gid, const char *name, char *msg, size_t cap)
{
	if (rights & SRV_RIGHT_BIT(right))
		return 0;
	const struct srv_namespace *ns = srv_ns_match(&cfg->ns, name);
	if (ns)
		snprintf(msg, cap, "uid %u gid %u has no '%s' right on table '%s': [namespace %s] "
			 "(prefix '%s') of the daemon's config does not grant it", (unsigned)uid,
			 (unsigned)gid, srv_right_name(right), name, ns->name, ns->prefix);
	else
		snprintf(msg, cap, "uid %u has no '%s' right on table '%s': outside every "
			 "[namespace] of the daemon's config only a table's creator (and root) may "
			 "use it", (unsigned)uid, srv_right_name(right), name);
	return -EACCES;
}
