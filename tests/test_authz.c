/*
 * test_authz.c — table rights as a unit (src/server/config_ns.c and authz.c, linked
 * directly through dynembd_core; no daemon runs): [namespace] sections read from a real
 * config file by srv_config_load, each right decided for owner / listed user / group /
 * anyone / nobody against a table written out by hand, the longest prefix winning, the
 * defaults (outside every namespace; a right a section leaves out), root, and every
 * error of a bad section naming its problem. End to end with a daemon and other uids:
 * test_tenant.c.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "authz.h"
#include "config.h"

#define B(r) SRV_RIGHT_BIT(SRV_RIGHT_##r)

static struct srv_config cfg;

static void load(const char *text)
{
	char path[] = "/tmp/de-authz-XXXXXX";
	int fd = mkstemp(path);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	char *argv[] = { "dynembd", "--config", path, NULL };
	int st = srv_config_load(&cfg, 3, argv);
	unlink(path);
	cr_assert_eq(st, 0, "srv_config_load refused:\n%s", text);
}

static const char CONF[] =
	"[namespace team]\n"
	"prefix = team/\n"
	"open = *\n"
	"write = owner, 1001, @2000\n"
	"export = 1001\n"
	"drop =\n"                  /* nobody but root */
	"[namespace team-secret]\n"
	"prefix = team/secret/\n"   /* longer: wins for its names */
	"open = 1001\n"
	"create = 1001\n";

Test(authz, namespace_rights_one_by_one)
{
	load(CONF);
	cr_assert_eq(cfg.ns.n, 2);
	const char *n = "team/emb";
	/* owner 1005 (who created it): open (*), write (owner), snapshot and import (left
	 * out: owner), not export (1001 only) nor drop (empty list) */
	unsigned own = srv_authz_rights(&cfg, 1005, 1005, n, true, 1005);
	cr_expect_eq(own, B(OPEN) | B(WRITE) | B(IMPORT) | B(SNAPSHOT) | B(CREATE), "0x%x", own);
	/* 1001 by uid: write, export; not import/snapshot (owner only), not drop */
	unsigned u = srv_authz_rights(&cfg, 1001, 1, n, true, 1005);
	cr_expect_eq(u, B(OPEN) | B(WRITE) | B(EXPORT) | B(CREATE), "0x%x", u);
	/* a member of group 2000: write by @2000 */
	unsigned g = srv_authz_rights(&cfg, 1007, 2000, n, true, 1005);
	cr_expect_eq(g, B(OPEN) | B(WRITE) | B(CREATE), "0x%x", g);
	/* anyone else: open only (and create, left out: *) */
	unsigned o = srv_authz_rights(&cfg, 1008, 1008, n, true, 1005);
	cr_expect_eq(o, B(OPEN) | B(CREATE), "0x%x", o);
	/* not the owner: the same whether or not the table exists */
	cr_expect_eq(srv_authz_rights(&cfg, 1008, 1008, n, false, 0), o);
	cr_expect_eq(srv_authz_rights(&cfg, 1001, 1, n, false, 0), u);
	/* root: everything, drop included */
	cr_expect_eq(srv_authz_rights(&cfg, 0, 0, n, true, 1005), SRV_RIGHTS_ALL);

	char msg[240];
	cr_expect_eq(srv_authz_need(&cfg, own, SRV_RIGHT_DROP, 1005, 1005, n, msg, sizeof msg),
		     -EACCES);
	cr_expect_str_eq(msg, "uid 1005 gid 1005 has no 'drop' right on table 'team/emb': "
			 "[namespace team] (prefix 'team/') of the daemon's config does not grant it");
	cr_expect_eq(srv_authz_need(&cfg, own, SRV_RIGHT_WRITE, 1005, 1005, n, msg, sizeof msg), 0);
}

Test(authz, longest_prefix_wins)
{
	load(CONF);
	const char *n = "team/secret/x";
	cr_expect_eq(srv_authz_rights(&cfg, 1008, 1008, n, true, 1005), 0,
		     "team-secret: open = 1001 only, not team's *");
	cr_expect_eq(srv_authz_rights(&cfg, 1008, 1008, n, false, 0), 0, "nor create");
	cr_expect(srv_authz_rights(&cfg, 1001, 1, n, false, 0) & B(CREATE));
	/* its creator 1001 owns it: the rights left out are the owner's */
	unsigned r = srv_authz_rights(&cfg, 1001, 1, n, true, 1001);
	cr_expect_eq(r, SRV_RIGHTS_ALL, "0x%x", r);
	/* the owner of a table another user created in there has no right it was not given */
	cr_expect_eq(srv_authz_rights(&cfg, 1001, 1, n, true, 1005), B(OPEN) | B(CREATE));
	char msg[240];
	srv_authz_need(&cfg, 0, SRV_RIGHT_OPEN, 1008, 1008, n, msg, sizeof msg);
	cr_expect(strstr(msg, "[namespace team-secret] (prefix 'team/secret/')"), "%s", msg);
}

Test(authz, default_outside_every_namespace)
{
	load("[namespace team]\nprefix = team/\n");
	const char *n = "other";
	cr_expect_eq(srv_authz_rights(&cfg, 1005, 1005, n, true, 1005), SRV_RIGHTS_ALL);
	cr_expect_eq(srv_authz_rights(&cfg, 1008, 1008, n, true, 1005), B(CREATE));
	cr_expect_eq(srv_authz_rights(&cfg, 1008, 1008, n, false, 0), B(CREATE));
	char msg[240];
	cr_expect_eq(srv_authz_need(&cfg, B(CREATE), SRV_RIGHT_EXPORT, 1008, 1008, n, msg,
				    sizeof msg), -EACCES);
	cr_expect_str_eq(msg, "uid 1008 has no 'export' right on table 'other': outside every "
			 "[namespace] of the daemon's config only a table's creator (and root) "
			 "may use it");
	/* a section that names no right: the default, owner for everything, create for all */
	const char *t = "team/x";
	cr_expect_eq(srv_authz_rights(&cfg, 1005, 1005, t, true, 1005), SRV_RIGHTS_ALL);
	cr_expect_eq(srv_authz_rights(&cfg, 1008, 1008, t, true, 1005), B(CREATE));
	/* "" is a prefix of every name: a site-wide default */
	load("[namespace all]\nprefix =\nopen = *\n");
	cr_expect_eq(srv_authz_rights(&cfg, 1008, 1008, "any", true, 1005), B(OPEN) | B(CREATE));
}

static void expect_bad(const char *rest, const char *key, const char *val, const char *want)
{
	struct srv_namespaces ns = { 0 };
	char err[400] = "";
	cr_expect_eq(srv_ns_set(&ns, rest, key, val, err, sizeof err), -1, "%s = %s", key, val);
	cr_expect(strstr(err, want), "%s = %s: got \"%s\", want \"%s\"", key, val, err, want);
}

Test(authz, bad_sections_name_their_problem)
{
	expect_bad(" t", "open", "1, nosuchuser-zz", "'nosuchuser-zz' is not a user id or name");
	expect_bad(" t", "open", "@nosuchgroup-zz", "'nosuchgroup-zz' is not a group id or name");
	expect_bad(" t", "open", "4294967295", "is not a user id or name");
	expect_bad(" t", "read", "1", "unknown key 'read' in [namespace t] (prefix, open, write");
	expect_bad("", "open", "1", "a namespace section is [namespace NAME]");
	expect_bad("s", "open", "1", "unknown section [namespaces]");
	expect_bad(" t", "prefix", "a b", "prefix has a byte that no table name has");
	char longp[80];
	memset(longp, 'p', sizeof longp - 1);
	longp[sizeof longp - 1] = 0;
	expect_bad(" t", "prefix", longp, "prefix is longer than a table name (at most 63 bytes)");
	char list[300] = "";
	for (int i = 0; i < 17; i++)
		snprintf(list + strlen(list), sizeof list - strlen(list), "%d,", 100 + i);
	expect_bad(" t", "write", list, "namespace 't': write: more than 16 users");

	struct srv_namespaces ns = { 0 };
	char err[400];
	cr_assert_eq(srv_ns_set(&ns, " t", "open", "*", err, sizeof err), 0);
	cr_expect_eq(srv_ns_finish(&ns, err, sizeof err), -1);
	cr_expect(strstr(err, "[namespace t] has no prefix"), "%s", err);
	cr_assert_eq(srv_ns_set(&ns, " t", "prefix", "a/", err, sizeof err), 0);
	cr_assert_eq(srv_ns_set(&ns, " u", "prefix", "a/", err, sizeof err), 0);
	cr_expect_eq(srv_ns_finish(&ns, err, sizeof err), -1);
	cr_expect(strstr(err, "[namespace t] and [namespace u] have the same prefix 'a/'"), "%s",
		  err);
}

Test(authz, print_config_reads_back)
{
	load(CONF);
	char buf[8192];
	FILE *f = fmemopen(buf, sizeof buf, "w");
	srv_config_print(&cfg, f);
	fclose(f);
	cr_expect(strstr(buf, "[namespace team]\nprefix = team/\nopen = *\nwrite = owner,1001,@2000\n"
			 "export = 1001\nimport = owner\nsnapshot = owner\ndrop = \ncreate = *\n"),
		  "%s", buf);
	struct srv_config before = cfg;
	load(buf);
	cr_assert_eq(cfg.ns.n, before.ns.n);
	for (unsigned i = 0; i < cfg.ns.n; i++) {
		cr_expect_str_eq(cfg.ns.ns[i].name, before.ns.ns[i].name);
		cr_expect_str_eq(cfg.ns.ns[i].prefix, before.ns.ns[i].prefix);
		cr_expect_eq(memcmp(cfg.ns.ns[i].acl, before.ns.ns[i].acl, sizeof cfg.ns.ns[i].acl),
			     0, "namespace %s: the printed rights read back", cfg.ns.ns[i].name);
	}
}
