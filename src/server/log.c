/*
 * log.c — dynembd's log: one event per line on stderr (the format is in log.h), each
 * line built in a stack buffer and written with a single write(2), so that lines from
 * several threads never interleave. Owns two process-wide settings, the level (an
 * atomic: the control thread may change it while workers log) and the format (set once
 * at startup). Depends on nothing of the daemon.
 *
 * Escaping, the same rules in both formats, so that a client's bytes (a table name, a
 * path, a message quoting them) stay inside their value:
 *   - '"' and '\' are backslash-escaped; \n, \r, \t as such; every other byte below
 *     0x20, and DEL, as \u00XX; U+0085, U+2028 and U+2029 (line breaks to some readers)
 *     as \u0085, \u2028, \u2029;
 *   - a byte that does not start a valid UTF-8 sequence (overlong, surrogate, above
 *     U+10FFFF, cut short) becomes U+FFFD, so every line is valid UTF-8 (JSON needs it);
 *   - logfmt quotes a value that is empty or holds a space, '=', '"', or anything that
 *     the rules above escape; JSON quotes every string.
 * Keys are constants of the code; a byte outside [A-Za-z0-9_.-] in one still becomes '_'.
 */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* Relaxed: the level orders nothing; a thread sees a new level at its next line or soon
 * after. Written by srv_log_set_level (any thread), read by every srv_log_kv. */
static int log_level = SRV_LOG_INFO;
static int log_format = SRV_LOG_LOGFMT;

static const char *const level_names[] = { "error", "warn", "info", "debug" };
static const char *const format_names[] = { "logfmt", "json" };

void srv_log_set_level(int level)
{
	if (level < SRV_LOG_ERROR)
		level = SRV_LOG_ERROR;
	if (level > SRV_LOG_DEBUG)
		level = SRV_LOG_DEBUG;
	__atomic_store_n(&log_level, level, __ATOMIC_RELAXED);
}

int srv_log_get_level(void)
{
	return __atomic_load_n(&log_level, __ATOMIC_RELAXED);
}

void srv_log_set_format(int format)
{
	__atomic_store_n(&log_format, format == SRV_LOG_JSON ? SRV_LOG_JSON : SRV_LOG_LOGFMT,
			 __ATOMIC_RELAXED);
}

const char *srv_log_level_name(int level)
{
	return level >= SRV_LOG_ERROR && level <= SRV_LOG_DEBUG ? level_names[level] : NULL;
}

int srv_log_level_parse(const char *name)
{
	for (int i = 0; name && i <= SRV_LOG_DEBUG; i++)
		if (!strcasecmp(name, level_names[i]))
			return i;
	return -1;
}

const char *srv_log_format_name(int format)
{
	return format == SRV_LOG_LOGFMT || format == SRV_LOG_JSON ? format_names[format] : NULL;
}

int srv_log_format_parse(const char *name)
{
	for (int i = 0; name && i <= SRV_LOG_JSON; i++)
		if (!strcasecmp(name, format_names[i]))
			return i;
	return -1;
}

bool srv_log_limit_due(struct srv_log_limit *lim, uint64_t *suppressed)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	uint64_t now = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u + 1u;
	uint64_t last = __atomic_load_n(&lim->last_ms, __ATOMIC_RELAXED);
	/* relaxed: the limit orders nothing; one thread wins the CAS of a second */
	if ((last && now - last < 1000u) ||
	    !__atomic_compare_exchange_n(&lim->last_ms, &last, now, false, __ATOMIC_RELAXED,
					 __ATOMIC_RELAXED)) {
		__atomic_add_fetch(&lim->quiet, 1, __ATOMIC_RELAXED);
		return false;
	}
	*suppressed = __atomic_exchange_n(&lim->quiet, 0, __ATOMIC_RELAXED);
	return true;
}

/* ---- the line being built ---------------------------------------------------------- */

/* Room kept back for what closes a line in every case: a value's closing quote,
 * ' truncated=true' or ',"truncated":true', '}' and '\n'. */
#define LINE_TAIL 24

struct line {
	char b[SRV_LOG_LINE_MAX];
	size_t n;
	bool json, full; /* full: a piece did not fit; nothing more but the tail goes in */
};

/* Appends s[0..len) whole, or sets full and appends nothing. */
static bool put(struct line *l, const char *s, size_t len)
{
	size_t limit = sizeof l->b - LINE_TAIL; /* a closing quote may be past it already */
	if (l->full || l->n >= limit || len > limit - l->n) {
		l->full = true;
		return false;
	}
	memcpy(l->b + l->n, s, len);
	l->n += len;
	return true;
}

/* Into the tail room: only the closing pieces, whose sizes LINE_TAIL covers. */
static void put_tail(struct line *l, const char *s)
{
	size_t len = strlen(s);
	memcpy(l->b + l->n, s, len);
	l->n += len;
}

/* Length of the valid UTF-8 sequence at s[0..n) (n >= 1, s[0] >= 0x80) and its code
 * point; 0 when it is not one. */
static size_t utf8_seq(const unsigned char *s, size_t n, unsigned *cp)
{
	unsigned c = s[0], len, min;
	if (c >= 0xc2 && c <= 0xdf) {
		len = 2, min = 0x80, c &= 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3, min = 0x800, c &= 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4, min = 0x10000, c &= 0x07;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (unsigned i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		c = c << 6 | (s[i] & 0x3fu);
	}
	if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
		return 0;
	*cp = c;
	return len;
}

/* Whether logfmt must quote s. */
static bool needs_quotes(const char *s, size_t n)
{
	if (!n)
		return true;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c <= ' ' || c == '=' || c == '"' || c == '\\' || c >= 0x7f)
			return true;
	}
	return false;
}

/* The escaped characters of s[0..n), inside the quotes put_field_str opened. On a full
 * line the value is cut between two characters (never inside an escape). */
static void put_escaped(struct line *l, const char *s, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;
	for (size_t i = 0; i < n && !l->full;) {
		char esc[8];
		const char *piece = esc;
		size_t plen, step = 1;
		unsigned c = u[i], cp;
		if (c == '"' || c == '\\') {
			esc[0] = '\\', esc[1] = (char)c, plen = 2;
		} else if (c == '\n' || c == '\r' || c == '\t') {
			esc[0] = '\\', esc[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't', plen = 2;
		} else if (c < 0x20 || c == 0x7f) {
			plen = (size_t)snprintf(esc, sizeof esc, "\\u%04x", c);
		} else if (c < 0x80) {
			piece = s + i, plen = 1;
		} else if ((step = utf8_seq(u + i, n - i, &cp)) == 0) {
			piece = "\xef\xbf\xbd", plen = 3, step = 1; /* U+FFFD */
		} else if (cp == 0x85 || cp == 0x2028 || cp == 0x2029) {
			plen = (size_t)snprintf(esc, sizeof esc, "\\u%04x", cp);
		} else {
			piece = s + i, plen = step;
		}
		if (put(l, piece, plen))
			i += step;
	}
}

/* The key as it is written: [A-Za-z0-9_.-], others replaced, at most 48 bytes. */
static size_t clean_key(const char *key, char *k)
{
	size_t n = 0;
	for (; key && key[n] && n < 48; n++) {
		char c = key[n];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			  (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
		k[n] = ok ? c : '_';
	}
	if (!n)
		k[n++] = '_';
	k[n] = 0;
	return n;
}

/* ' key=' / ',"key":' (nothing before the first field) and then head, as one piece: a
 * key is written with the start of its value or not at all. */
static bool put_key(struct line *l, const char *key, const char *head, size_t hlen)
{
	char k[49], piece[128];
	clean_key(key, k);
	bool first = l->json ? l->n == 1 : l->n == 0;
	int n = l->json ? snprintf(piece, sizeof piece, "%s\"%s\":", first ? "" : ",", k)
			: snprintf(piece, sizeof piece, "%s%s=", first ? "" : " ", k);
	if (hlen > sizeof piece - (size_t)n) { /* a long bare value: key and value apart */
		if (l->n + (size_t)n + hlen >= sizeof l->b - LINE_TAIL) {
			l->full = true;
			return false;
		}
		put(l, piece, (size_t)n);
		return put(l, head, hlen);
	}
	memcpy(piece + n, head, hlen);
	return put(l, piece, (size_t)n + hlen);
}

static void put_field_str(struct line *l, const char *key, const char *s, size_t n)
{
	if (l->full)
		return;
	if (!l->json && !needs_quotes(s, n) && put_key(l, key, s, n))
		return; /* bare */
	l->full = false; /* a bare value too long for the line: quoted and cut instead */
	if (!put_key(l, key, "\"", 1))
		return;
	put_escaped(l, s, n);
	put_tail(l, "\""); /* the tail room holds it */
}

static void put_field_cstr(struct line *l, const char *key, const char *s)
{
	put_field_str(l, key, s ? s : "", s ? strlen(s) : 0);
}

static void put_field_num(struct line *l, const char *key, const char *digits)
{
	if (!l->full)
		put_key(l, key, digits, strlen(digits));
}

/* "ENOSPC"; "E<n>" for a number this libc has no name for. */
static const char *errno_name(long long e, char *buf, size_t cap)
{
#ifdef HAVE_STRERRORNAME_NP
	const char *s = e <= 4095 ? strerrorname_np((int)e) : NULL;
	if (s)
		return s;
#endif
	snprintf(buf, cap, "E%lld", e);
	return buf;
}

/* The component: an explicit name as is, a source path (SRV_LOG_COMPONENT's default,
 * __FILE__) cut to its base name up to the first '_' or '.'. */
static void component_name(const char *c, char *out, size_t cap)
{
	if (!c || !*c)
		c = "dynembd";
	size_t n = strlen(c);
	if (n > 2 && !strcmp(c + n - 2, ".c")) {
		const char *slash = strrchr(c, '/');
		c = slash ? slash + 1 : c;
		n = strcspn(c, "_.");
	}
	if (n >= cap)
		n = cap - 1;
	memcpy(out, c, n);
	out[n] = 0;
}

/* 2026-12-03T18:28:57.123Z */
static void rfc3339_now(char *out, size_t cap)
{
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	size_t n = strftime(out, cap, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + n, cap - n, ".%03uZ", (unsigned)(ts.tv_nsec / 1000000) % 1000u);
}

void srv_log_kv(int level, const char *component, const struct srv_log_field *fields,
		size_t nfields, const char *fmt, ...)
{
	if (level > srv_log_get_level())
		return;
	if (level < SRV_LOG_ERROR)
		level = SRV_LOG_ERROR;
	int saved_errno = errno; /* a caller may log between a failure and its errno check */
	char msg[SRV_LOG_LINE_MAX], when[40], comp[32], num[32];
	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	size_t mlen = m < 0 ? 0 : (size_t)m < sizeof msg ? (size_t)m : sizeof msg - 1;
	rfc3339_now(when, sizeof when);
	component_name(component, comp, sizeof comp);

	struct line l = { .json = __atomic_load_n(&log_format, __ATOMIC_RELAXED) == SRV_LOG_JSON };
	if (l.json)
		put(&l, "{", 1);
	put_field_cstr(&l, "time", when);
	put_field_cstr(&l, "level", srv_log_level_name(level));
	put_field_cstr(&l, "component", comp);
	put_field_str(&l, "msg", msg, mlen);
	for (size_t i = 0; i < nfields && !l.full; i++) {
		const struct srv_log_field *f = &fields[i];
		switch (f->type) {
		case SRV_LOG_FSTR:
			put_field_cstr(&l, f->key, f->s);
			break;
		case SRV_LOG_FINT:
			snprintf(num, sizeof num, "%lld", f->i);
			put_field_num(&l, f->key, num);
			break;
		case SRV_LOG_FUINT:
			snprintf(num, sizeof num, "%llu", f->u);
			put_field_num(&l, f->key, num);
			break;
		case SRV_LOG_FERRNO: {
			long long e = f->err < 0 ? -(long long)f->err : f->err;
			snprintf(num, sizeof num, "%lld", e);
			put_field_num(&l, f->key, num);
			char nb[24];
			put_field_cstr(&l, "err", errno_name(e, nb, sizeof nb));
			break;
		}
		default:
			put_field_cstr(&l, f->key, "?");
		}
	}
	if (l.full)
		put_tail(&l, l.json ? ",\"truncated\":true" : " truncated=true");
	if (l.json)
		put_tail(&l, "}");
	put_tail(&l, "\n");
	ssize_t w = write(STDERR_FILENO, l.b, l.n);
	(void)w; /* nowhere to report a failed log write */
	errno = saved_errno;
}
