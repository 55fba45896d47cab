/*
 * test_log.c — the daemon's log line formatter (src/server/log.c, linked alone): every
 * line written to stderr (redirected here to a memfd or a pipe) is parsed back by the
 * little logfmt and JSON parsers below, written for this test from the formats' rules,
 * not from log.c. Hostile values (quotes, '=', newlines, control bytes, invalid UTF-8,
 * U+2028) must come back byte for byte (invalid UTF-8 as U+FFFD) in one line, with no
 * field added; lines past the limit are cut and say so; the level filters, clamps and can
 * be changed while other threads log.
 */
#define SRV_LOG_COMPONENT "unit"
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "log.h"

/* ---- capture ------------------------------------------------------------------------ */

static int cap_fd = -1;
static off_t cap_off;

static void capture_start(void)
{
	cap_fd = memfd_create("log", 0);
	cr_assert_geq(cap_fd, 0);
	cr_assert_eq(dup2(cap_fd, STDERR_FILENO), STDERR_FILENO);
	cap_off = 0;
	srv_log_set_level(SRV_LOG_DEBUG);
	srv_log_set_format(SRV_LOG_LOGFMT);
}

/* What was written since the last call (malloc'ed, NUL-terminated). */
static char *capture_take(void)
{
	off_t end = lseek(cap_fd, 0, SEEK_END);
	size_t n = (size_t)(end - cap_off);
	char *b = malloc(n + 1);
	cr_assert_eq(pread(cap_fd, b, n, cap_off), (ssize_t)n);
	b[n] = 0;
	cap_off = end;
	return b;
}

/* ---- an independent reader of both formats ----------------------------------------- */

#define MAXF 32
struct rec {
	unsigned n;
	char key[MAXF][64];
	char *val[MAXF];
	bool quoted[MAXF]; /* JSON: a string (not a number or true) */
};

static void rec_free(struct rec *r)
{
	for (unsigned i = 0; i < r->n; i++)
		free(r->val[i]);
	r->n = 0;
}

static const char *rec_get(const struct rec *r, const char *key)
{
	for (unsigned i = 0; i < r->n; i++)
		if (!strcmp(r->key[i], key))
			return r->val[i];
	return NULL;
}

/* UTF-8 of code point cp into o; its length. */
static size_t put_utf8(char *o, unsigned cp)
{
	if (cp < 0x80) {
		o[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (char)(0xc0 | cp >> 6), o[1] = (char)(0x80 | (cp & 63));
		return 2;
	}
	o[0] = (char)(0xe0 | cp >> 12), o[1] = (char)(0x80 | ((cp >> 6) & 63));
	o[2] = (char)(0x80 | (cp & 63));
	return 3;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* A quoted string at *pp (at its opening quote): its decoded bytes, *pp past the closing
 * quote; NULL when malformed (raw control byte, bad escape, no closing quote). */
static char *read_quoted(const char **pp)
{
	const char *p = *pp;
	if (*p++ != '"')
		return NULL;
	char *out = malloc(strlen(p) * 3 + 1), *o = out;
	for (;;) {
		unsigned char c = (unsigned char)*p++;
		if (c == '"')
			break;
		if (c < 0x20) { /* the end of the line, or a raw control byte: malformed */
			free(out);
			return NULL;
		}
		if (c != '\\') {
			*o++ = (char)c;
			continue;
		}
		char e = *p++;
		if (e == '"' || e == '\\' || e == '/')
			*o++ = e;
		else if (e == 'n')
			*o++ = '\n';
		else if (e == 'r')
			*o++ = '\r';
		else if (e == 't')
			*o++ = '\t';
		else if (e == 'u') {
			unsigned cp = 0;
			for (int i = 0; i < 4; i++) {
				int h = hexval(*p++);
				if (h < 0) {
					free(out);
					return NULL;
				}
				cp = cp << 4 | (unsigned)h;
			}
			o += put_utf8(o, cp);
		} else {
			free(out);
			return NULL;
		}
	}
	*o = 0;
	*pp = p;
	return out;
}

/* One logfmt line (exactly one '\n', at its end): key=value pairs separated by one space,
 * a value bare (no space, quote or '=') or quoted. false when malformed. */
static bool parse_logfmt(const char *line, struct rec *r)
{
	r->n = 0;
	const char *nl = strchr(line, '\n');
	if (!nl || nl[1])
		return false;
	const char *p = line;
	while (p < nl) {
		if (r->n == MAXF)
			return false;
		size_t k = strcspn(p, "= \"\n");
		if (!k || k >= sizeof r->key[0] || p[k] != '=')
			return false;
		memcpy(r->key[r->n], p, k);
		r->key[r->n][k] = 0;
		for (unsigned i = 0; i < r->n; i++)
			if (!strcmp(r->key[i], r->key[r->n]))
				return false; /* a field given twice */
		p += k + 1;
		char *v;
		if (*p == '"') {
			v = read_quoted(&p);
			if (!v)
				return false;
		} else {
			size_t n = strcspn(p, " \n");
			if (memchr(p, '"', n) || memchr(p, '=', n) || memchr(p, '\\', n))
				return false;
			v = strndup(p, n);
			p += n;
		}
		r->quoted[r->n] = true;
		r->val[r->n++] = v;
		if (*p == ' ')
			p++;
		else if (p != nl)
			return false;
	}
	return r->n > 0;
}

/* One JSON line: a flat object of string keys to strings, integers or true, then '\n'. */
static bool parse_json(const char *line, struct rec *r)
{
	r->n = 0;
	const char *nl = strchr(line, '\n');
	if (!nl || nl[1])
		return false;
	const char *p = line;
	if (*p++ != '{')
		return false;
	while (*p != '}') {
		if (r->n) {
			if (*p++ != ',')
				return false;
		}
		if (r->n == MAXF)
			return false;
		char *k = read_quoted(&p);
		if (!k || strlen(k) >= sizeof r->key[0] || *p++ != ':') {
			free(k);
			return false;
		}
		strcpy(r->key[r->n], k);
		free(k);
		for (unsigned i = 0; i < r->n; i++)
			if (!strcmp(r->key[i], r->key[r->n]))
				return false;
		char *v;
		if (*p == '"') {
			v = read_quoted(&p);
			if (!v)
				return false;
			r->quoted[r->n] = true;
		} else if (!strncmp(p, "true", 4)) {
			v = strdup("true");
			p += 4;
			r->quoted[r->n] = false;
		} else {
			size_t n = strspn(p, "-0123456789");
			if (!n)
				return false;
			v = strndup(p, n);
			p += n;
			r->quoted[r->n] = false;
		}
		r->val[r->n++] = v;
	}
	return p + 1 == nl;
}

/* Every byte sequence of s is valid UTF-8 (written for this test: lead byte ranges of
 * RFC 3629, continuation bytes, no overlong forms, no surrogates). */
static bool valid_utf8(const char *s)
{
	const unsigned char *u = (const unsigned char *)s;
	while (*u) {
		unsigned c = *u, need;
		unsigned lo = 0x80, hi = 0xbf;
		if (c < 0x80) {
			u++;
			continue;
		} else if (c >= 0xc2 && c <= 0xdf) {
			need = 1;
		} else if (c == 0xe0) {
			need = 2, lo = 0xa0;
		} else if (c == 0xed) {
			need = 2, hi = 0x9f;
		} else if (c >= 0xe1 && c <= 0xef) {
			need = 2;
		} else if (c == 0xf0) {
			need = 3, lo = 0x90;
		} else if (c >= 0xf1 && c <= 0xf3) {
			need = 3;
		} else if (c == 0xf4) {
			need = 3, hi = 0x8f;
		} else {
			return false;
		}
		u++;
		if (*u < lo || *u > hi)
			return false;
		u++;
		for (unsigned i = 1; i < need; i++, u++)
			if (*u < 0x80 || *u > 0xbf)
				return false;
	}
	return true;
}

/* time=YYYY-MM-DDTHH:MM:SS.mmmZ */
static bool rfc3339_ms_utc(const char *t)
{
	static const char pat[] = "dddd-dd-ddTdd:dd:dd.dddZ";
	if (strlen(t) != strlen(pat))
		return false;
	for (size_t i = 0; pat[i]; i++)
		if (pat[i] == 'd' ? (t[i] < '0' || t[i] > '9') : t[i] != pat[i])
			return false;
	return true;
}

/* The one line in s, parsed in the format f; asserts it is one well-formed line. */
static void parse_one(const char *s, int f, struct rec *r)
{
	cr_assert(valid_utf8(s), "not UTF-8: %s", s);
	bool ok = f == SRV_LOG_JSON ? parse_json(s, r) : parse_logfmt(s, r);
	cr_assert(ok, "not one %s line: [%s]", f == SRV_LOG_JSON ? "JSON" : "logfmt", s);
	cr_assert_geq(r->n, 4u);
	cr_assert_str_eq(r->key[0], "time", "%s", s);
	cr_assert_str_eq(r->key[1], "level", "%s", s);
	cr_assert_str_eq(r->key[2], "component", "%s", s);
	cr_assert_str_eq(r->key[3], "msg", "%s", s);
	cr_assert(rfc3339_ms_utc(r->val[0]), "time %s", r->val[0]);
}

static const int formats[] = { SRV_LOG_LOGFMT, SRV_LOG_JSON };

/* ---- the tests ------------------------------------------------------------------------ */

Test(log, fields_round_trip)
{
	capture_start();
	for (int fi = 0; fi < 2; fi++) {
		srv_log_set_format(formats[fi]);
		srv_logf(SRV_LOG_WARN, SRV_KV(SRV_F_TABLE("users"), SRV_F_PATH("/var/lib/d e"),
					      SRV_F_UINT("uid", 1000), SRV_F_INT("pid", -7),
					      SRV_F_ERRNO(-ENOSPC)),
			 "snapshot of %s failed", "users");
		char *s = capture_take();
		struct rec r;
		parse_one(s, formats[fi], &r);
		cr_expect_str_eq(rec_get(&r, "level"), "warn");
		cr_expect_str_eq(rec_get(&r, "component"), "unit");
		cr_expect_str_eq(rec_get(&r, "msg"), "snapshot of users failed");
		cr_expect_str_eq(rec_get(&r, "table"), "users");
		cr_expect_str_eq(rec_get(&r, "path"), "/var/lib/d e");
		cr_expect_str_eq(rec_get(&r, "uid"), "1000");
		cr_expect_str_eq(rec_get(&r, "pid"), "-7");
		cr_expect_str_eq(rec_get(&r, "errno"), "28");
		cr_expect_str_eq(rec_get(&r, "err"), "ENOSPC");
		cr_expect_eq(r.n, 10u, "%s", s);
		if (formats[fi] == SRV_LOG_JSON) {
			cr_expect(!r.quoted[6] && !r.quoted[8], "numbers are JSON numbers: %s", s);
			cr_expect(r.quoted[9], "err is a string: %s", s);
		} else {
			/* bare where nothing needs quotes, quoted where something does */
			cr_expect(strstr(s, " table=users ") && strstr(s, " path=\"/var/lib/d e\" "),
				  "%s", s);
		}
		rec_free(&r);
		free(s);
	}
}

Test(log, exact_logfmt_and_json_text)
{
	capture_start();
	srv_logf(SRV_LOG_INFO, SRV_KV(SRV_F_TABLE("t"), SRV_F_ERRNO(EACCES)), "a=b");
	char *s = capture_take();
	const char *tail = strchr(s, ' ');
	cr_assert_str_eq(tail, " level=info component=unit msg=\"a=b\" table=t errno=13 "
			       "err=EACCES\n");
	free(s);
	srv_log_set_format(SRV_LOG_JSON);
	srv_log(SRV_LOG_ERROR, "x \"y\" \\ z");
	s = capture_take();
	tail = strchr(s, ',');
	cr_assert_str_eq(tail, ",\"level\":\"error\",\"component\":\"unit\","
			       "\"msg\":\"x \\\"y\\\" \\\\ z\"}\n");
	free(s);
}

/* Values a client chooses: each comes back as it was, the line stays one line, and no
 * field appears that the code did not log. */
Test(log, hostile_values_stay_in_their_field)
{
	static const char *const hostile[] = {
		"a\"b",
		"x\" injected=1 y=\"",
		"line1\nlevel=error msg=forged",
		"cr\rlf\r\n",
		"tab\there",
		"nul-free \x01\x02\x1f\x7f controls",
		"\\\" backslash-quote",
		"",
		" ",
		"=",
		"key=value",
		"{\"json\":\"inside\"}",
		"\",\"injected\":\"1",
		"line\xe2\x80\xa8sep\xe2\x80\xa9para\xc2\x85nel",
		"caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80",
	};
	capture_start();
	for (int fi = 0; fi < 2; fi++) {
		srv_log_set_format(formats[fi]);
		for (size_t i = 0; i < sizeof hostile / sizeof hostile[0]; i++) {
			srv_logf(SRV_LOG_INFO, SRV_KV(SRV_F_TABLE(hostile[i]), SRV_F_UINT("uid", 1)),
				 "open '%s' refused", hostile[i]);
			char *s = capture_take();
			struct rec r;
			parse_one(s, formats[fi], &r);
			cr_expect_eq(r.n, 6u, "[%s]: %s", hostile[i], s);
			cr_expect_str_eq(rec_get(&r, "table"), hostile[i], "%s", s);
			char want[256];
			snprintf(want, sizeof want, "open '%s' refused", hostile[i]);
			cr_expect_str_eq(rec_get(&r, "msg"), want, "%s", s);
			cr_expect_null(rec_get(&r, "injected"));
			cr_expect_str_eq(rec_get(&r, "level"), "info");
			for (const char *p = s; *p; p++) /* U+2028/9, U+0085 are escaped too */
				cr_expect(!((unsigned char)p[0] == 0xe2 && (unsigned char)p[1] == 0x80 &&
					    ((unsigned char)p[2] & 0xfe) == 0xa8) &&
					  !((unsigned char)p[0] == 0xc2 && (unsigned char)p[1] == 0x85),
					  "raw line separator in %s", s);
			rec_free(&r);
			free(s);
		}
	}
}

Test(log, invalid_utf8_becomes_replacement_characters)
{
	static const struct { const char *in, *out; } cases[] = {
		{ "a\xff" "b", "a\xef\xbf\xbd" "b" },
		{ "\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd" },                  /* overlong '/' */
		{ "\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" },  /* a surrogate */
		{ "\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" },
		{ "cut \xe6\x97", "cut \xef\xbf\xbd\xef\xbf\xbd" },
		{ "\x80", "\xef\xbf\xbd" },
	};
	capture_start();
	for (int fi = 0; fi < 2; fi++) {
		srv_log_set_format(formats[fi]);
		for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
			srv_logf(SRV_LOG_INFO, SRV_KV(SRV_F_TABLE(cases[i].in)), "m");
			char *s = capture_take();
			struct rec r;
			parse_one(s, formats[fi], &r);
			cr_expect_str_eq(rec_get(&r, "table"), cases[i].out, "case %zu: %s", i, s);
			rec_free(&r);
			free(s);
		}
	}
}

/* A message or value past the line limit: cut (never inside an escape or a UTF-8
 * sequence), closed, marked truncated; for every length around the limit. */
Test(log, long_lines_are_cut_and_marked)
{
	capture_start();
	static const char *const fill[] = { "a", "\"", "\n", "\x01", "\xe6\x97\xa5", " " };
	char *big = malloc(4200 * 3 + 2 * SRV_LOG_LINE_MAX + 1);
	for (int fi = 0; fi < 2; fi++) {
		srv_log_set_format(formats[fi]);
		for (size_t k = 0; k < sizeof fill / sizeof fill[0]; k++) {
			size_t flen = strlen(fill[k]);
			/* the line holds big twice (msg, table): it fills up near 2000 escaped
			 * bytes of each, for every fill between 333 and 2000 repetitions */
			for (size_t reps = 250; reps < 4200; reps += reps < 2300 ? 1 : 61) {
				for (size_t i = 0; i < reps; i++)
					memcpy(big + i * flen, fill[k], flen);
				big[reps * flen] = 0;
				srv_logf(SRV_LOG_INFO, SRV_KV(SRV_F_TABLE(big), SRV_F_STR("after", "x")),
					 "%s", big);
				char *s = capture_take();
				size_t len = strlen(s);
				cr_assert_leq(len, (size_t)SRV_LOG_LINE_MAX, "a line of %zu bytes", len);
				struct rec r;
				parse_one(s, formats[fi], &r);
				const char *t = rec_get(&r, "truncated");
				if (t) {
					cr_assert_str_eq(t, "true");
					cr_assert_str_eq(r.key[r.n - 1], "truncated");
				} else {
					cr_assert_str_eq(rec_get(&r, "msg"), big, "fill %zu x %zu", k, reps);
					cr_assert_str_eq(rec_get(&r, "table"), big);
					cr_assert_str_eq(rec_get(&r, "after"), "x");
				}
				/* what was kept is a prefix of what was logged */
				const char *m = rec_get(&r, "msg");
				cr_assert_not_null(m);
				cr_assert_eq(strncmp(m, big, strlen(m)), 0, "msg is not a prefix");
				rec_free(&r);
				free(s);
			}
		}
	}
	/* a message alone over the limit */
	memset(big, 'm', 2 * SRV_LOG_LINE_MAX);
	big[2 * SRV_LOG_LINE_MAX] = 0;
	srv_log_set_format(SRV_LOG_LOGFMT);
	srv_log(SRV_LOG_INFO, "%s", big);
	char *s = capture_take();
	struct rec r;
	parse_one(s, SRV_LOG_LOGFMT, &r);
	cr_expect_str_eq(rec_get(&r, "truncated"), "true");
	cr_expect_gt(strlen(rec_get(&r, "msg")), (size_t)SRV_LOG_LINE_MAX / 2);
	rec_free(&r);
	free(s);
	free(big);
}

Test(log, errno_either_sign_and_unknown)
{
	capture_start();
	srv_logf(SRV_LOG_ERROR, SRV_KV(SRV_F_ERRNO(ENOENT)), "m");
	srv_logf(SRV_LOG_ERROR, SRV_KV(SRV_F_ERRNO(-EROFS)), "m");
	srv_logf(SRV_LOG_ERROR, SRV_KV(SRV_F_ERRNO(-9999)), "m");
	char *s = capture_take();
	char *save = NULL;
	static const char *const want[][2] = { { "2", "ENOENT" }, { "30", "EROFS" },
					       { "9999", "E9999" } };
	unsigned i = 0;
	for (char *line = strtok_r(s, "\n", &save); line; line = strtok_r(NULL, "\n", &save), i++) {
		char buf[512];
		snprintf(buf, sizeof buf, "%s\n", line);
		struct rec r;
		parse_one(buf, SRV_LOG_LOGFMT, &r);
		cr_assert_lt(i, 3u);
		cr_expect_str_eq(rec_get(&r, "errno"), want[i][0]);
		cr_expect_str_eq(rec_get(&r, "err"), want[i][1]);
		rec_free(&r);
	}
	cr_expect_eq(i, 3u);
	free(s);
}

Test(log, level_filters_and_clamps)
{
	capture_start();
	srv_log_set_level(SRV_LOG_WARN);
	cr_expect_eq(srv_log_get_level(), SRV_LOG_WARN);
	srv_log(SRV_LOG_INFO, "hidden");
	srv_log(SRV_LOG_DEBUG, "hidden");
	char *s = capture_take();
	cr_expect_str_eq(s, "");
	free(s);
	srv_log(SRV_LOG_WARN, "shown");
	srv_log(SRV_LOG_ERROR, "shown");
	s = capture_take();
	unsigned lines = 0;
	for (const char *p = s; (p = strchr(p, '\n')); p++)
		lines++;
	cr_expect_eq(lines, 2u, "%s", s);
	cr_expect(strstr(s, "level=warn") && strstr(s, "level=error"), "%s", s);
	free(s);
	srv_log_set_level(99);
	cr_expect_eq(srv_log_get_level(), SRV_LOG_DEBUG);
	srv_log_set_level(-5);
	cr_expect_eq(srv_log_get_level(), SRV_LOG_ERROR);

	cr_expect_eq(srv_log_level_parse("WARN"), SRV_LOG_WARN);
	cr_expect_eq(srv_log_level_parse("warning"), -1);
	cr_expect_eq(srv_log_level_parse(NULL), -1);
	cr_expect_str_eq(srv_log_level_name(SRV_LOG_DEBUG), "debug");
	cr_expect_null(srv_log_level_name(4));
	cr_expect_eq(srv_log_format_parse("json"), SRV_LOG_JSON);
	cr_expect_eq(srv_log_format_parse("text"), -1);
	cr_expect_str_eq(srv_log_format_name(SRV_LOG_LOGFMT), "logfmt");
}

Test(log, component_from_the_file_name)
{
	capture_start();
	srv_log_kv(SRV_LOG_INFO, "../src/server/persist_jobs.c", NULL, 0, "a");
	srv_log_kv(SRV_LOG_INFO, "worker.c", NULL, 0, "b");
	srv_log_kv(SRV_LOG_INFO, NULL, NULL, 0, "c");
	srv_log_kv(SRV_LOG_INFO, "learn", NULL, 0, "d");
	char *s = capture_take();
	cr_expect(strstr(s, "component=persist msg=a\n"), "%s", s);
	cr_expect(strstr(s, "component=worker msg=b\n"), "%s", s);
	cr_expect(strstr(s, "component=dynembd msg=c\n"), "%s", s);
	cr_expect(strstr(s, "component=learn msg=d\n"), "%s", s);
	free(s);
}

Test(log, keeps_errno)
{
	capture_start();
	errno = EAGAIN;
	srv_log(SRV_LOG_INFO, "x");
	cr_expect_eq(errno, EAGAIN);
}

/* Threads logging to one pipe while another changes the level: every line read back is
 * whole (one write(2) each) and parses. */
struct logger { int id; unsigned lines; };

static void *logger_main(void *arg)
{
	struct logger *lg = arg;
	for (unsigned i = 0; i < lg->lines; i++)
		srv_logf(SRV_LOG_WARN, SRV_KV(SRV_F_INT("thread", lg->id), SRV_F_UINT("i", i),
					      SRV_F_TABLE("a \"quoted\" name\nwith a newline")),
			 "line %u of thread %d", i, lg->id);
	return NULL;
}

static int flip_stop;

static void *level_flipper(void *arg)
{
	(void)arg;
	while (!__atomic_load_n(&flip_stop, __ATOMIC_RELAXED)) {
		srv_log_set_level(SRV_LOG_DEBUG);
		srv_log_set_level(SRV_LOG_WARN);
	}
	return NULL;
}

Test(log, threads_write_whole_lines)
{
	int p[2];
	cr_assert_eq(pipe(p), 0);
	cr_assert_eq(dup2(p[1], STDERR_FILENO), STDERR_FILENO);
	close(p[1]);
	srv_log_set_format(SRV_LOG_JSON);
	srv_log_set_level(SRV_LOG_WARN);
	enum { NT = 4, LINES = 300 };
	struct logger lg[NT];
	pthread_t th[NT], flip;
	pthread_create(&flip, NULL, level_flipper, NULL);
	for (int i = 0; i < NT; i++) {
		lg[i] = (struct logger){ .id = i, .lines = LINES };
		pthread_create(&th[i], NULL, logger_main, &lg[i]);
	}
	/* read while they write (the pipe would fill); lines end where '\n' is */
	size_t cap = 1u << 22, n = 0;
	char *buf = malloc(cap);
	unsigned seen[NT] = { 0 }, total = 0;
	while (total < NT * LINES) {
		ssize_t r = read(p[0], buf + n, cap - n - 1);
		cr_assert_gt(r, 0);
		n += (size_t)r;
		buf[n] = 0;
		char *start = buf, *nl;
		while ((nl = strchr(start, '\n'))) {
			char save = nl[1];
			nl[1] = 0;
			struct rec rec;
			parse_one(start, SRV_LOG_JSON, &rec);
			int id = atoi(rec_get(&rec, "thread"));
			cr_assert(id >= 0 && id < NT);
			cr_assert_eq((unsigned)atoi(rec_get(&rec, "i")), seen[id]++, "order per thread");
			cr_assert_str_eq(rec_get(&rec, "table"), "a \"quoted\" name\nwith a newline");
			rec_free(&rec);
			nl[1] = save;
			start = nl + 1;
			total++;
		}
		memmove(buf, start, n - (size_t)(start - buf));
		n -= (size_t)(start - buf);
	}
	__atomic_store_n(&flip_stop, 1, __ATOMIC_RELAXED);
	for (int i = 0; i < NT; i++)
		pthread_join(th[i], NULL);
	pthread_join(flip, NULL);
	cr_expect_eq(n, 0u, "a partial line left");
	free(buf);
}

/* The per-site limit: one line a second, the lines left out counted and handed to the
 * next due one; every call is either due or counted (threads racing included). */
struct limit_arg { struct srv_log_limit *lim; unsigned calls, due; uint64_t reported; };

static void *limit_main(void *arg)
{
	struct limit_arg *a = arg;
	for (unsigned i = 0; i < a->calls; i++) {
		uint64_t q;
		if (srv_log_limit_due(a->lim, &q)) {
			a->due++;
			a->reported += q;
		}
	}
	return NULL;
}

Test(log, rate_limit_counts_what_it_leaves_out)
{
	static struct srv_log_limit lim;
	enum { NT = 4, CALLS = 20000 };
	struct limit_arg a[NT];
	pthread_t th[NT];
	for (int i = 0; i < NT; i++) {
		a[i] = (struct limit_arg){ .lim = &lim, .calls = CALLS };
		pthread_create(&th[i], NULL, limit_main, &a[i]);
	}
	unsigned due = 0;
	uint64_t reported = 0;
	for (int i = 0; i < NT; i++) {
		pthread_join(th[i], NULL);
		due += a[i].due;
		reported += a[i].reported;
	}
	cr_expect_geq(due, 1u, "the first call is due");
	/* 80,000 calls take far less than a second each way; a loaded box may cross a few */
	cr_expect_leq(due, 10u, "%u lines due", due);
	usleep(1100 * 1000);
	uint64_t q = 0;
	cr_assert(srv_log_limit_due(&lim, &q), "due again after a second");
	cr_expect_eq(reported + q + due, (uint64_t)NT * CALLS,
		     "every call due or counted: %u due, %llu + %llu reported", due,
		     (unsigned long long)reported, (unsigned long long)q);
	cr_expect(!srv_log_limit_due(&lim, &q), "not due right after");
}
