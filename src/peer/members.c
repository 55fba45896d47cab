/*
 * members.c — the membership and the owner of a key.
 *
 * A member list is "name=host:port[*weight]" entries separated by commas or white space;
 * a member's identity is its name (stable across restarts and address changes: a
 * Kubernetes DaemonSet pod's node name, say), never its address.
 *
 * Ownership: weighted rendezvous (highest-random-weight) hashing. Member i scores key k
 * with h = xxh3-64(k, seed = xxh3-64(name_i)), u = (top 53 bits of h + 0.5) / 2^53 in
 * (0, 1), and score = -weight_i / ln(u); the highest score owns k (ties: the lower
 * name_hash, so the list's order never matters). A member's share of the keys is its
 * weight over the sum of weights; adding or removing a member moves only the keys it
 * gains or loses, and none between two members that stayed. With equal weights this is
 * plain rendezvous hashing (the largest -1/ln(u) is the largest u), and that is how it is
 * computed then: the 53-bit u compared as integers, no log, exact (tests/peer measures
 * the speed of both paths).
 */
#include "de_peer.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

__attribute__((format(printf, 4, 5)))
static int fail(int err, char *msg, size_t cap, const char *fmt, ...)
{
	if (msg && cap) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(msg, cap, fmt, ap);
		va_end(ap);
	}
	return err;
}

static bool name_char(char c)
{
	return isalnum((unsigned char)c) || c == '.' || c == '_' || c == '-';
}

/* One entry e (len bytes, no separators) into m. */
static int parse_entry(const char *e, size_t len, struct de_peer_member *m, char *msg,
		       size_t cap)
{
	char ent[DE_PEER_NAME_MAX + DE_PEER_HOST_MAX + 64];
	if (len >= sizeof ent)
		return fail(-EINVAL, msg, cap, "[peers] members: entry '%.40s...' is too long", e);
	memcpy(ent, e, len);
	ent[len] = 0;
	char *eq = strchr(ent, '=');
	if (!eq)
		return fail(-EINVAL, msg, cap, "[peers] members: entry '%s' is not name=host:port",
			    ent);
	size_t nl = (size_t)(eq - ent);
	if (nl < 1 || nl >= DE_PEER_NAME_MAX)
		return fail(-EINVAL, msg, cap, "[peers] members: entry '%s': a name is 1..%u bytes",
			    ent, DE_PEER_NAME_MAX - 1);
	for (size_t i = 0; i < nl; i++)
		if (!name_char(ent[i]))
			return fail(-EINVAL, msg, cap, "[peers] members: entry '%s': a name is made "
				    "of A-Z a-z 0-9 . _ - only", ent);
	memset(m, 0, sizeof *m);
	memcpy(m->name, ent, nl);
	m->weight = 1;
	char *addr = eq + 1, *star = strchr(addr, '*');
	if (star) {
		*star = 0;
		char *end;
		errno = 0;
		double w = strtod(star + 1, &end);
		if (star[1] == 0 || *end || errno || !isfinite(w) || w <= 0 || w > 1e6)
			return fail(-EINVAL, msg, cap, "[peers] members: entry '%.*s': weight '%s' is "
				    "not a number in (0, 1e6]", (int)len, e, star + 1);
		m->weight = w;
	}
	char *host = addr, *colon;
	if (*addr == '[') {
		char *rb = strchr(addr, ']');
		if (!rb || rb[1] != ':')
			return fail(-EINVAL, msg, cap, "[peers] members: entry '%.*s': an IPv6 "
				    "address is [ADDR]:PORT", (int)len, e);
		*rb = 0;
		host = addr + 1;
		colon = rb + 1;
	} else {
		colon = strrchr(addr, ':');
		if (!colon)
			return fail(-EINVAL, msg, cap, "[peers] members: entry '%.*s' has no :port",
				    (int)len, e);
		*colon = 0;
		if (strchr(addr, ':'))
			return fail(-EINVAL, msg, cap, "[peers] members: entry '%.*s': an IPv6 "
				    "address goes in brackets", (int)len, e);
	}
	size_t hl = strlen(host);
	if (hl < 1 || hl >= DE_PEER_HOST_MAX)
		return fail(-EINVAL, msg, cap, "[peers] members: entry '%.*s': the host is %s",
			    (int)len, e, hl ? "too long" : "empty");
	memcpy(m->host, host, hl);
	char *end;
	errno = 0;
	unsigned long port = strtoul(colon + 1, &end, 10);
	if (!isdigit((unsigned char)colon[1]) || *end || errno || port < 1 || port > 65535)
		return fail(-EINVAL, msg, cap, "[peers] members: entry '%.*s': port '%s' is not a "
			    "number in 1..65535", (int)len, e, colon + 1);
	m->port = (uint16_t)port;
	m->name_hash = XXH3_64bits(m->name, nl);
	return 0;
}

int de_peer_members_parse(const char *spec, struct de_peer_members *out, char *msg,
			  size_t msgcap)
{
	struct de_peer_members m = { 0 };
	const char *p = spec ? spec : "";
	for (;;) {
		while (*p == ',' || isspace((unsigned char)*p))
			p++;
		if (!*p)
			break;
		size_t l = 0;
		while (p[l] && p[l] != ',' && !isspace((unsigned char)p[l]))
			l++;
		if (m.n == DE_PEER_MAX_MEMBERS)
			return fail(-E2BIG, msg, msgcap, "[peers] members: more than %u members",
				    DE_PEER_MAX_MEMBERS);
		int err = parse_entry(p, l, &m.m[m.n], msg, msgcap);
		if (err)
			return err;
		for (unsigned i = 0; i < m.n; i++)
			if (!strcmp(m.m[i].name, m.m[m.n].name))
				return fail(-EINVAL, msg, msgcap, "[peers] members: member '%s' is "
					    "listed twice", m.m[i].name);
			else if (m.m[i].name_hash == m.m[m.n].name_hash)
				return fail(-EINVAL, msg, msgcap, "[peers] members: the names '%s' and "
					    "'%s' hash alike: rename one", m.m[i].name,
					    m.m[m.n].name);
		m.n++;
		p += l;
	}
	if (!m.n)
		return fail(-EINVAL, msg, msgcap, "[peers] members: the list is empty");
	*out = m;
	return 0;
}

int de_peer_members_find(const struct de_peer_members *m, const char *name)
{
	for (unsigned i = 0; i < m->n; i++)
		if (!strcmp(m->m[i].name, name))
			return (int)i;
	return -ENOENT;
}

static inline uint64_t hash_of(const struct de_peer_member *m, uint64_t key)
{
	return XXH3_64bits_withSeed(&key, sizeof key, m->name_hash);
}

static inline double score(const struct de_peer_member *m, uint64_t key)
{
	double u = ((double)(hash_of(m, key) >> 11) + 0.5) * 0x1p-53; /* in (0, 1) */
	return -m->weight / log(u);
}

static bool equal_weights(const struct de_peer_members *m)
{
	for (unsigned i = 1; i < m->n; i++)
		if (m->m[i].weight != m->m[0].weight)
			return false;
	return true;
}

/* Equal weights: the score is increasing in u, so the largest u (its 53 bits, compared
 * as integers) wins, without a log; the same tie rule. */
static inline unsigned owner_plain(const struct de_peer_members *m, uint64_t key)
{
	unsigned best = 0;
	uint64_t bu = hash_of(&m->m[0], key) >> 11;
	for (unsigned i = 1; i < m->n; i++) {
		uint64_t u = hash_of(&m->m[i], key) >> 11;
		if (u > bu || (u == bu && m->m[i].name_hash < m->m[best].name_hash)) {
			bu = u;
			best = i;
		}
	}
	return best;
}

static inline unsigned owner_weighted(const struct de_peer_members *m, uint64_t key)
{
	unsigned best = 0;
	double bs = -1;
	for (unsigned i = 0; i < m->n; i++) {
		double s = score(&m->m[i], key);
		if (s > bs || (s == bs && m->m[i].name_hash < m->m[best].name_hash)) {
			bs = s;
			best = i;
		}
	}
	return best;
}

unsigned de_peer_owner(const struct de_peer_members *m, uint64_t key)
{
	if (m->n <= 1)
		return 0;
	return equal_weights(m) ? owner_plain(m, key) : owner_weighted(m, key);
}

void de_peer_owners(const struct de_peer_members *m, const uint64_t *keys, size_t n,
		    uint16_t *owner)
{
	if (m->n <= 1) {
		memset(owner, 0, n * sizeof *owner);
	} else if (equal_weights(m)) {
		for (size_t j = 0; j < n; j++)
			owner[j] = (uint16_t)owner_plain(m, keys[j]);
	} else {
		for (size_t j = 0; j < n; j++)
			owner[j] = (uint16_t)owner_weighted(m, keys[j]);
	}
}
