/*
 * quota.h — PRIVATE to dynembd: the memory quotas of tables (quota.c), per uid and for
 * the host, and the sizing of a table's memory from its budget. Layer 1: it depends on
 * nothing of the daemon (the limits come in as numbers; messages go back to the caller,
 * which logs or replies).
 *
 * What a table costs (its "charge"): every arena segment the daemon maps for it (the
 * table's arena and a string table's name index; the first segments at OPEN, later ones
 * when the table grows, through the arena's charge hook) plus its admission sketch. The
 * charge of a table goes to the uid that created it and to the host; a table that is
 * dropped gives all of it back, and its table count.
 *
 * Errors name the quota: -EDQUOT when the uid's own limit ([quota] uid_tables,
 * uid_bytes) is used up, -ENOSPC for the host's ([quota] host_tables, host_bytes).
 * Thread-safe (workers grow tables while the control thread opens others).
 */
#ifndef DE_SRV_QUOTA_H
#define DE_SRV_QUOTA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* 0 in any field: no limit of that kind. */
struct srv_quota_limits {
	uint64_t host_bytes, uid_bytes;
	uint32_t host_tables, uid_tables;
};

struct srv_quota;      /* the accounts of the host and of every uid */
struct srv_quota_acct; /* one table's charge */

/* "No uid": srv_quota_usage of the host as a whole, or a table charged to the host
 * only (a caller that knows no creator). */
#define SRV_QUOTA_UID_NONE ((uid_t)-1)

int srv_quota_create(const struct srv_quota_limits *l, struct srv_quota **out);
/* After every account was ended. NULL is fine. */
void srv_quota_destroy(struct srv_quota *q);

/* A new table of uid called name: counts it (table quotas) and charges `bytes` (what
 * its creation maps). 0 with *out, or -EDQUOT / -ENOSPC / -ENOMEM with msg.
 * recovered: a table brought back from the catalog at startup, charged to its creator
 * and the host like any other but never refused (an acknowledged table comes back
 * whatever the limits are now; only -ENOMEM fails it). A uid it puts over its quota
 * can create nothing more until it drops enough; its growth is checked as any other's. */
int srv_quota_table_begin(struct srv_quota *q, uid_t uid, const char *name, uint64_t bytes,
			  bool recovered, struct srv_quota_acct **out, char *msg, size_t cap);
/* Charge more bytes to the table's account (its growth): 0, or -EDQUOT / -ENOSPC with
 * msg (msg may be NULL). */
int srv_quota_charge(struct srv_quota_acct *a, uint64_t bytes, char *msg, size_t cap);
void srv_quota_give_back(struct srv_quota_acct *a, uint64_t bytes);
/* The table is gone: its bytes and its count go back. NULL is fine. */
void srv_quota_table_end(struct srv_quota_acct *a);
uint64_t srv_quota_acct_bytes(const struct srv_quota_acct *a);

/* What uid (or the host: SRV_QUOTA_UID_NONE) holds now. */
void srv_quota_usage(struct srv_quota *q, uid_t uid, uint32_t *tables, uint64_t *bytes);

/*
 * The address space (arena reservation) of a table, from its budget:
 *   budget_bytes > 0 (an evicting table): budget + budget / 4 + 64 MiB, the headroom the
 *     evictor needs between its passes (de_learn.h: resident bytes stay within 2% of the
 *     budget; rows freed are reused before the arena grows);
 *   else table_bytes (the [quota] default for a table without a budget).
 * cap (the [pages] reserve_bytes override; 0 = none) bounds both. Rounded up to 2 MiB.
 */
uint64_t srv_quota_table_reserve(uint64_t budget_bytes, uint64_t table_bytes, uint64_t cap);
/* A string table's name index: a quarter of the table's reservation, 64 MiB at least. */
uint64_t srv_quota_names_reserve(uint64_t table_reserve);

#endif /* DE_SRV_QUOTA_H */
