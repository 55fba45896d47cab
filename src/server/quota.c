/*
 * quota.c — per-uid and host memory quotas of tables, and a table's memory sizing
 * (quota.h states what a table is charged and which error names which quota).
 *
 * Owns: struct srv_quota (a mutex, the host's totals, a list of per-uid totals, created
 * on a uid's first table and kept: a uid's entry is 32 bytes) and every
 * struct srv_quota_acct (one per table; freed by srv_quota_table_end).
 * Never: logs (its callers do, with the message it writes), or lets a total go below 0
 * (a give-back larger than the account is cut to the account).
 * Callers: the registry (tables.c: OPEN, growth through the arena's charge hook, drop).
 */
#include "quota.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MiB ((uint64_t)1 << 20)

struct uid_total {
	uid_t uid;
	uint32_t tables;
	uint64_t bytes;
	struct uid_total *next;
};

struct srv_quota {
	pthread_mutex_t mu;
	struct srv_quota_limits lim;
	uint32_t tables;       /* host */
	uint64_t bytes;
	struct uid_total *uids;
};

struct srv_quota_acct {
	struct srv_quota *q;
	struct uid_total *u;   /* NULL: SRV_QUOTA_UID_NONE (host only) */
	uint64_t bytes;
	char name[64];
};

int srv_quota_create(const struct srv_quota_limits *l, struct srv_quota **out)
{
	struct srv_quota *q = calloc(1, sizeof *q);
	if (!q)
		return -ENOMEM;
	pthread_mutex_init(&q->mu, NULL);
	q->lim = *l;
	*out = q;
	return 0;
}

void srv_quota_destroy(struct srv_quota *q)
{
	if (!q)
		return;
	for (struct uid_total *u = q->uids, *n; u; u = n) {
		n = u->next;
		free(u);
	}
	pthread_mutex_destroy(&q->mu);
	free(q);
}

static struct uid_total *uid_get(struct srv_quota *q, uid_t uid, bool make)
{
	for (struct uid_total *u = q->uids; u; u = u->next)
		if (u->uid == uid)
			return u;
	if (!make)
		return NULL;
	struct uid_total *u = calloc(1, sizeof *u);
	if (!u)
		return NULL;
	u->uid = uid;
	u->next = q->uids;
	q->uids = u;
	return u;
}

/* Would `bytes` more fit? 0, or the error with msg. q->mu held. */
static int bytes_fit(const struct srv_quota *q, const struct uid_total *u, const char *name,
		     uint64_t bytes, char *msg, size_t cap)
{
	const struct srv_quota_limits *l = &q->lim;
	if (u && l->uid_bytes && (bytes > l->uid_bytes || u->bytes > l->uid_bytes - bytes)) {
		if (msg)
			snprintf(msg, cap, "table '%s' needs %" PRIu64 " MiB more: uid %u holds %"
				 PRIu64 " MiB of its quota of %" PRIu64 " MiB ([quota] uid_bytes)",
				 name, (bytes + MiB - 1) / MiB, (unsigned)u->uid, u->bytes / MiB,
				 l->uid_bytes / MiB);
		return -EDQUOT;
	}
	if (l->host_bytes && (bytes > l->host_bytes || q->bytes > l->host_bytes - bytes)) {
		if (msg)
			snprintf(msg, cap, "table '%s' needs %" PRIu64 " MiB more: the tables of this "
				 "host hold %" PRIu64 " MiB of the host quota of %" PRIu64 " MiB "
				 "([quota] host_bytes)", name, (bytes + MiB - 1) / MiB, q->bytes / MiB,
				 l->host_bytes / MiB);
		return -ENOSPC;
	}
	return 0;
}

int srv_quota_table_begin(struct srv_quota *q, uid_t uid, const char *name, uint64_t bytes,
			  bool recovered, struct srv_quota_acct **out, char *msg, size_t cap)
{
	*out = NULL;
	struct srv_quota_acct *a = calloc(1, sizeof *a);
	if (!a)
		return -ENOMEM;
	a->q = q;
	snprintf(a->name, sizeof a->name, "%s", name);
	pthread_mutex_lock(&q->mu);
	int err = 0;
	struct uid_total *u = NULL;
	if (uid != SRV_QUOTA_UID_NONE && !(u = uid_get(q, uid, true))) {
		err = -ENOMEM;
		snprintf(msg, cap, "table '%s': out of memory", name);
		goto out;
	}
	if (recovered)
		goto take; /* an acknowledged table comes back whatever the limits are now */
	if (u && q->lim.uid_tables && u->tables >= q->lim.uid_tables) {
		snprintf(msg, cap, "table '%s' not created: uid %u has %u tables, its quota "
			 "([quota] uid_tables); drop one it no longer needs", name, (unsigned)uid,
			 u->tables);
		err = -EDQUOT;
		goto out;
	}
	if (q->lim.host_tables && q->tables >= q->lim.host_tables) {
		snprintf(msg, cap, "table '%s' not created: this host has %u tables, the host "
			 "quota ([quota] host_tables)", name, q->tables);
		err = -ENOSPC;
		goto out;
	}
	if ((err = bytes_fit(q, u, name, bytes, msg, cap)))
		goto out;
take:
	a->u = u;
	a->bytes = bytes;
	q->tables++;
	q->bytes += bytes;
	if (u) {
		u->tables++;
		u->bytes += bytes;
	}
out:
	pthread_mutex_unlock(&q->mu);
	if (err)
		free(a);
	else
		*out = a;
	return err;
}

int srv_quota_charge(struct srv_quota_acct *a, uint64_t bytes, char *msg, size_t cap)
{
	struct srv_quota *q = a->q;
	pthread_mutex_lock(&q->mu);
	int err = bytes_fit(q, a->u, a->name, bytes, msg, cap);
	if (!err) {
		a->bytes += bytes;
		q->bytes += bytes;
		if (a->u)
			a->u->bytes += bytes;
	}
	pthread_mutex_unlock(&q->mu);
	return err;
}

void srv_quota_give_back(struct srv_quota_acct *a, uint64_t bytes)
{
	struct srv_quota *q = a->q;
	pthread_mutex_lock(&q->mu);
	if (bytes > a->bytes)
		bytes = a->bytes;
	a->bytes -= bytes;
	q->bytes -= bytes;
	if (a->u)
		a->u->bytes -= bytes;
	pthread_mutex_unlock(&q->mu);
}

void srv_quota_table_end(struct srv_quota_acct *a)
{
	if (!a)
		return;
	srv_quota_give_back(a, a->bytes);
	struct srv_quota *q = a->q;
	pthread_mutex_lock(&q->mu);
	q->tables--;
	if (a->u)
		a->u->tables--;
	pthread_mutex_unlock(&q->mu);
	free(a);
}

uint64_t srv_quota_acct_bytes(const struct srv_quota_acct *a)
{
	pthread_mutex_lock(&a->q->mu);
	uint64_t b = a->bytes;
	pthread_mutex_unlock(&a->q->mu);
	return b;
}

void srv_quota_usage(struct srv_quota *q, uid_t uid, uint32_t *tables, uint64_t *bytes)
{
	pthread_mutex_lock(&q->mu);
	if (uid == SRV_QUOTA_UID_NONE) {
		*tables = q->tables;
		*bytes = q->bytes;
	} else {
		struct uid_total *u = uid_get(q, uid, false);
		*tables = u ? u->tables : 0;
		*bytes = u ? u->bytes : 0;
	}
	pthread_mutex_unlock(&q->mu);
}

static uint64_t round2m(uint64_t v)
{
	return v > UINT64_MAX - (2 * MiB - 1) ? UINT64_MAX & ~(2 * MiB - 1)
					      : (v + 2 * MiB - 1) & ~(2 * MiB - 1);
}

uint64_t srv_quota_table_reserve(uint64_t budget_bytes, uint64_t table_bytes, uint64_t cap)
{
	uint64_t r = table_bytes;
	if (budget_bytes) {
		uint64_t q = budget_bytes / 4;
		r = budget_bytes > UINT64_MAX / 2 ? UINT64_MAX / 2 : budget_bytes + q + 64 * MiB;
	}
	if (cap && r > cap)
		r = cap;
	return round2m(r);
}

uint64_t srv_quota_names_reserve(uint64_t table_reserve)
{
	uint64_t r = table_reserve / 4;
	return round2m(r < 64 * MiB ? 64 * MiB : r);
}
