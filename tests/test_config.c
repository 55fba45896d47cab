/*
 * test_config.c — dynembd's configuration handling, from outside: the real daemon binary
 * ($DYNEMBD, which meson sets to the built path; else /tmp/dynembd) runs as a child with
 * bad config files and flags, and the tests check its exit status (2 for bad
 * configuration) and that stderr names what was wrong (the file and line, the key).
 * Also: --help documents every key of the embedded default (the keys come from
 * --print-config), --print-config shows a file overridden by a flag, and a second
 * daemon on a live socket refuses to start while the first keeps serving.
 *
 * Every child gets PR_SET_PDEATHSIG and a bounded wait; files live in a mkdtemp dir.
 */
#include <criterion/criterion.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "proto.h"

#define RUN_TIMEOUT_MS 10000 /* generous: a sanitizer build starts slowly */

static char dir[64];

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static const char *daemon_bin(void)
{
	const char *bin = getenv("DYNEMBD");
	if (!bin || !*bin)
		bin = "/tmp/dynembd";
	cr_assert(access(bin, X_OK) == 0, "no daemon binary at %s (set DYNEMBD)", bin);
	return bin;
}

static void setup(void)
{
	strcpy(dir, "/tmp/dynembd-config.XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (dir[0] && system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
}

/* A file in the test dir with this content; returns its path (static buffer per call site). */
static void write_file(char *path, size_t cap, const char *name, const char *content)
{
	snprintf(path, cap, "%s/%s", dir, name);
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f, "%s", path);
	fputs(content, f);
	fclose(f);
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	cr_assert_not_null(f, "%s", path);
	size_t cap = 4096, n = 0;
	char *buf = malloc(cap);
	cr_assert_not_null(buf);
	size_t r;
	while ((r = fread(buf + n, 1, cap - n - 1, f)) > 0) {
		n += r;
		if (cap - n < 2) {
			cap *= 2;
			buf = realloc(buf, cap);
			cr_assert_not_null(buf);
		}
	}
	buf[n] = 0;
	fclose(f);
	return buf;
}

/* Start the daemon with args (NULL-terminated), stdout and stderr to files in dir. */
static pid_t spawn(const char *const *args, const char *tag)
{
	const char *argv[40] = { daemon_bin() };
	int n = 1;
	for (int i = 0; args[i] && n < 39; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	char outp[128], errp[128];
	snprintf(outp, sizeof outp, "%s/%s.out", dir, tag);
	snprintf(errp, sizeof errp, "%s/%s.err", dir, tag);
	pid_t parent = getpid();
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(99);
		int o = open(outp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		int e = open(errp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		int nul = open("/dev/null", O_RDONLY);
		if (o < 0 || e < 0 || nul < 0)
			_exit(97);
		dup2(nul, 0);
		dup2(o, 1);
		dup2(e, 2);
		execv(argv[0], (char *const *)argv);
		_exit(98);
	}
	return pid;
}

/* Wait (bounded) for pid; its exit status, or 128 + signal. */
static int wait_exit(pid_t pid)
{
	uint64_t end = now_ms() + RUN_TIMEOUT_MS;
	int st;
	while (waitpid(pid, &st, WNOHANG) != pid) {
		if (now_ms() > end) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			cr_assert_fail("the daemon did not exit within %d ms", RUN_TIMEOUT_MS);
		}
		usleep(2000);
	}
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

struct result {
	int status;
	char *out, *err;
};

/* Run the daemon to completion (it must exit by itself: a config error, --help, ...). */
static struct result run(const char *const *args)
{
	static unsigned seq;
	char tag[32];
	snprintf(tag, sizeof tag, "run%u", seq++);
	pid_t pid = spawn(args, tag);
	struct result r = { .status = wait_exit(pid) };
	char p[128];
	snprintf(p, sizeof p, "%s/%s.out", dir, tag);
	r.out = slurp(p);
	snprintf(p, sizeof p, "%s/%s.err", dir, tag);
	r.err = slurp(p);
	return r;
}

static void result_free(struct result *r)
{
	free(r->out);
	free(r->err);
}

/* word occurs in text as a whole identifier (not inside a longer one: data_bytes vs
 * max_data_bytes) */
static bool has_word(const char *text, const char *word)
{
	size_t n = strlen(word);
	for (const char *p = text; (p = strstr(p, word)); p++) {
		bool before = p == text || !(isalnum((unsigned char)p[-1]) || p[-1] == '_');
		bool after = !(isalnum((unsigned char)p[n]) || p[n] == '_');
		if (before && after)
			return true;
	}
	return false;
}

/* The value of "key = value" in --print-config output, or NULL. Static buffer. */
static const char *config_value(const char *text, const char *key)
{
	static char v[256];
	size_t n = strlen(key);
	for (const char *line = text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
		if (strncmp(line, key, n) || strncmp(line + n, " = ", 3))
			continue;
		const char *s = line + n + 3;
		size_t len = strcspn(s, "\n");
		snprintf(v, sizeof v, "%.*s", (int)len, s);
		return v;
	}
	return NULL;
}

TestSuite(config, .init = setup, .fini = teardown, .timeout = 30);

Test(config, unknown_key_in_file)
{
	char path[128];
	write_file(path, sizeof path, "unknown.ini",
		   "# a comment\n[server]\nworkers = 2\nwrokers = 3\n");
	struct result r = run((const char *const[]){ "--config", path, "--print-config", NULL });
	cr_assert_eq(r.status, 2, "exit %d, stderr: %s", r.status, r.err);
	char where[160];
	snprintf(where, sizeof where, "%s:4:", path);
	cr_assert_not_null(strstr(r.err, where), "stderr names %s: %s", where, r.err);
	cr_assert(has_word(r.err, "wrokers"), "stderr names the key: %s", r.err);
	cr_assert_eq(r.out[0], 0, "nothing on stdout: %s", r.out);
	result_free(&r);

	/* an unknown key in the other section, and an unknown section */
	write_file(path, sizeof path, "unknown2.ini", "[pages]\nmode = small\nsize = 3\n");
	r = run((const char *const[]){ "--config", path, NULL });
	cr_assert_eq(r.status, 2, "exit %d, stderr: %s", r.status, r.err);
	snprintf(where, sizeof where, "%s:3:", path);
	cr_assert_not_null(strstr(r.err, where), "stderr names %s: %s", where, r.err);
	cr_assert(has_word(r.err, "size"), "stderr names the key: %s", r.err);
	result_free(&r);

	write_file(path, sizeof path, "unknown3.ini", "[server]\nworkers = 1\n\n[client]\nx = 1\n");
	r = run((const char *const[]){ "--config", path, NULL });
	cr_assert_eq(r.status, 2, "exit %d, stderr: %s", r.status, r.err);
	snprintf(where, sizeof where, "%s:5:", path);
	cr_assert_not_null(strstr(r.err, where), "stderr names %s: %s", where, r.err);
	cr_assert(has_word(r.err, "client"), "stderr names the section: %s", r.err);
	result_free(&r);
}

static const struct {
	const char *key, *flag, *value;
} bad_values[] = {
	{ "workers", "--workers", "abc" },
	{ "workers", "--workers", "0" },
	{ "workers", "--workers", "65" },
	{ "sq_entries", "--sq-entries", "3" },
	{ "sq_entries", "--sq-entries", "8192" },
	{ "data_bytes", "--data-bytes", "12Q" },
	{ "data_bytes", "--data-bytes", "" },
	{ "max_batch", "--max-batch", "-1" },
	{ "poll_us", "--poll-us", "1e3" },
	{ "level", "--log-level", "loud" },
	{ "format", "--log-format", "xml" },
	{ "mode", "--pages", "huge" },
	{ "segment_bytes", "--segment-bytes", "1M" },
	{ "hello_timeout_ms", "--hello-timeout-ms", "5" },
	{ "hello_timeout_ms", "--hello-timeout-ms", "600001" },
	{ "max_connections_per_uid", "--max-connections-per-uid", "0" },
	{ "max_connections_per_uid", "--max-connections-per-uid", "4097" },
};

Test(config, bad_values_in_file)
{
	for (size_t i = 0; i < sizeof bad_values / sizeof bad_values[0]; i++) {
		const char *key = bad_values[i].key;
		const char *section = !strcmp(key, "mode") || !strcmp(key, "segment_bytes") ?
			"pages" : !strcmp(key, "level") || !strcmp(key, "format") ? "log" : "server";
		char content[256], path[128], name[32];
		snprintf(content, sizeof content, "[%s]\n%s = %s\n", section, key, bad_values[i].value);
		snprintf(name, sizeof name, "bad%zu.ini", i);
		write_file(path, sizeof path, name, content);
		struct result r = run((const char *const[]){ "--config", path, "--print-config", NULL });
		cr_assert_eq(r.status, 2, "%s = %s: exit %d, stderr: %s", key, bad_values[i].value,
			     r.status, r.err);
		char where[160];
		snprintf(where, sizeof where, "%s:2:", path);
		cr_assert_not_null(strstr(r.err, where), "%s = %s: stderr names %s: %s", key,
				   bad_values[i].value, where, r.err);
		cr_assert(has_word(r.err, key), "%s = %s: stderr names the key: %s", key,
			  bad_values[i].value, r.err);
		cr_assert_eq(r.out[0], 0, "nothing printed: %s", r.out);
		result_free(&r);
	}
}

Test(config, bad_values_as_flags)
{
	for (size_t i = 0; i < sizeof bad_values / sizeof bad_values[0]; i++) {
		struct result r = run((const char *const[]){ bad_values[i].flag, bad_values[i].value,
							     "--print-config", NULL });
		cr_assert_eq(r.status, 2, "%s %s: exit %d, stderr: %s", bad_values[i].flag,
			     bad_values[i].value, r.status, r.err);
		cr_assert(has_word(r.err, bad_values[i].key), "%s %s: stderr names the key: %s",
			  bad_values[i].flag, bad_values[i].value, r.err);
		cr_assert_not_null(strstr(r.err, bad_values[i].flag), "%s: stderr names the flag: %s",
				   bad_values[i].flag, r.err);
		result_free(&r);
	}
}

Test(config, data_bytes_above_max)
{
	struct result r = run((const char *const[]){ "--data-bytes", "2G", "--max-data-bytes", "1G",
						     "--print-config", NULL });
	cr_assert_eq(r.status, 2, "exit %d, stderr: %s", r.status, r.err);
	cr_assert(has_word(r.err, "data_bytes") && has_word(r.err, "max_data_bytes"), "%s", r.err);
	result_free(&r);
}

Test(config, missing_file)
{
	char path[128];
	snprintf(path, sizeof path, "%s/no-such.ini", dir);
	struct result r = run((const char *const[]){ "--config", path, "--print-config", NULL });
	cr_assert_eq(r.status, 2, "exit %d, stderr: %s", r.status, r.err);
	cr_assert_not_null(strstr(r.err, path), "stderr names the file: %s", r.err);
	result_free(&r);

	/* the short flag, and a missing file next to a flag that would be fine */
	r = run((const char *const[]){ "-w", "2", "-c", path, NULL });
	cr_assert_eq(r.status, 2, "exit %d, stderr: %s", r.status, r.err);
	cr_assert_not_null(strstr(r.err, path), "stderr names the file: %s", r.err);
	result_free(&r);

	/* a directory is not a config file (fopen would open it and read nothing) */
	r = run((const char *const[]){ "--config", dir, "--print-config", NULL });
	cr_assert_eq(r.status, 2, "exit %d, stderr: %s", r.status, r.err);
	cr_assert_not_null(strstr(r.err, "not a regular file"), "stderr: %s", r.err);
	result_free(&r);
}

Test(config, unknown_flag)
{
	const char *const *cases[] = {
		(const char *const[]){ "--no-such-flag", NULL },
		(const char *const[]){ "-Z", NULL },
		(const char *const[]){ "--workers", NULL },          /* missing its value */
		(const char *const[]){ "--print-config", "extra", NULL }, /* stray argument */
		(const char *const[]){ "--help=yes", NULL },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct result r = run(cases[i]);
		cr_assert_eq(r.status, 2, "%s: exit %d, stderr: %s", cases[i][0], r.status, r.err);
		cr_assert_not_null(strstr(r.err, "--help"), "%s: stderr points to --help: %s",
				   cases[i][0], r.err);
		cr_assert_eq(r.out[0], 0, "%s: nothing on stdout: %s", cases[i][0], r.out);
		result_free(&r);
	}
}

Test(config, help_names_every_key)
{
	struct result h = run((const char *const[]){ "--help", NULL });
	cr_assert_eq(h.status, 0, "--help: exit %d, stderr: %s", h.status, h.err);
	cr_assert_not_null(strstr(h.out, "Usage:"), "%s", h.out);
	struct result p = run((const char *const[]){ "--print-config", NULL });
	cr_assert_eq(p.status, 0, "--print-config: exit %d, stderr: %s", p.status, p.err);

	/* every "key = value" line of the embedded default, in every section */
	unsigned keys = 0, sections = 0;
	char *save = NULL;
	for (char *line = strtok_r(p.out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (line[0] == '[') {
			sections++;
			continue;
		}
		char *eq = strstr(line, " = ");
		if (!eq && (eq = strstr(line, " =")) && eq[2])
			eq = NULL;
		cr_assert_not_null(eq, "not a key line in --print-config: '%s'", line);
		*eq = 0;
		cr_assert(has_word(h.out, line), "--help does not mention the key '%s'", line);
		keys++;
	}
	cr_assert_geq(sections, 2, "[server] and [pages]");
	cr_assert_geq(keys, 14, "only %u keys in --print-config", keys);
	result_free(&h);
	result_free(&p);

	struct result v = run((const char *const[]){ "--version", NULL });
	cr_assert_eq(v.status, 0);
	cr_assert_not_null(strstr(v.out, "dynembd"), "%s", v.out);
	result_free(&v);
}

Test(config, print_config_file_then_flags)
{
	char path[128];
	write_file(path, sizeof path, "good.ini",
		   "; the file sets these\n"
		   "[server]\n"
		   "socket = /tmp/from-file.sock\n"
		   "workers = 3\n"
		   "poll_us = 7\n"
		   "max_batch = 1000\n"
		   "sq_entries = 64\n"
		   "data_bytes = 8M\n"
		   "log_level = debug\n"
		   "hello_timeout_ms = 500\n"
		   "max_connections_per_uid = 9\n"
		   "[pages]\n"
		   "mode = small\n"
		   "segment_bytes = 4M\n");
	/* flags on either side of --config: they win over the file all the same */
	struct result r = run((const char *const[]){ "--workers", "5", "--config", path,
						     "--sq-entries", "1024", "--pages", "thp",
						     "--max-connections-per-uid", "17",
						     "--print-config", NULL });
	cr_assert_eq(r.status, 0, "exit %d, stderr: %s", r.status, r.err);
	static const struct { const char *key, *want; } want[] = {
		{ "socket", "/tmp/from-file.sock" }, /* file */
		{ "workers", "5" },                  /* flag over file */
		{ "poll_us", "7" },                  /* file */
		{ "max_batch", "1000" },             /* file */
		{ "sq_entries", "1024" },            /* flag over file */
		{ "data_bytes", "8388608" },         /* file, in bytes */
		{ "max_data_bytes", "1073741824" },  /* default */
		{ "level", "debug" },                /* file ([server] log_level, the older name) */
		{ "mode", "thp" },                   /* flag over file */
		{ "numa_node", "auto" },             /* default */
		{ "segment_bytes", "4194304" },      /* file */
		{ "reserve_bytes", "0" },            /* default */
		{ "hello_timeout_ms", "500" },       /* file */
		{ "max_connections_per_uid", "17" }, /* flag over file */
	};
	for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
		const char *v = config_value(r.out, want[i].key);
		cr_assert_not_null(v, "no %s in --print-config:\n%s", want[i].key, r.out);
		cr_assert_str_eq(v, want[i].want, "%s = %s, want %s", want[i].key, v, want[i].want);
	}
	result_free(&r);

	/* the same key twice on the command line: the last one wins */
	r = run((const char *const[]){ "-w", "2", "--config", path, "-w", "4", "--print-config",
				       NULL });
	cr_assert_eq(r.status, 0, "exit %d, stderr: %s", r.status, r.err);
	cr_assert_str_eq(config_value(r.out, "workers"), "4");
	result_free(&r);
}

Test(config, connection_limits_default)
{
	struct result r = run((const char *const[]){ "--print-config", NULL });
	cr_assert_eq(r.status, 0, "exit %d, stderr: %s", r.status, r.err);
	cr_assert_str_eq(config_value(r.out, "hello_timeout_ms"), "2000");
	cr_assert_str_eq(config_value(r.out, "max_connections_per_uid"), "64");
	cr_assert_str_eq(config_value(r.out, "allow_uids"), "", "no uid is allowed unlisted");
	result_free(&r);
}

/* HELLO on path; 0 when HELLO_OK came back (with the channel fd, which is closed). */
static int hello(const char *path)
{
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
		int e = -errno;
		close(fd);
		return e;
	}
	struct de_msg_hello m;
	memset(&m, 0, sizeof m);
	m.h = (struct de_msg_hdr){ .magic = DE_MSG_MAGIC, .type = DE_MSG_HELLO,
				   .version = DE_PROTO_VERSION, .len = sizeof m, .seq = 1 };
	m.sq_entries = 8;
	m.data_bytes = 1 << 20;
	strcpy(m.name, "test_config");
	struct timeval tv = { .tv_sec = 5 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	if (send(fd, &m, sizeof m, MSG_NOSIGNAL) != (ssize_t)sizeof m) {
		close(fd);
		return -EIO;
	}
	union {
		char b[256];
		struct de_msg_hello_ok ok;
	} buf;
	union {
		char b[CMSG_SPACE(sizeof(int) * 4)];
		struct cmsghdr a;
	} cbuf;
	struct iovec iov = { .iov_base = buf.b, .iov_len = sizeof buf.b };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.b,
			     .msg_controllen = sizeof cbuf.b };
	ssize_t r = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
	int nfds = 0;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); r > 0 && cm; cm = CMSG_NXTHDR(&mh, cm))
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
			size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			for (size_t j = 0; j < k; j++) {
				int cfd;
				memcpy(&cfd, CMSG_DATA(cm) + j * sizeof(int), sizeof cfd);
				close(cfd);
				nfds++;
			}
		}
	close(fd);
	if (r != (ssize_t)sizeof buf.ok || buf.ok.h.type != DE_MSG_HELLO_OK || nfds != 1)
		return -EPROTO;
	return 0;
}

Test(config, second_daemon_on_live_socket)
{
	char sock[128];
	snprintf(sock, sizeof sock, "%s/run/d.sock", dir);
	char uid[16];
	snprintf(uid, sizeof uid, "%u", (unsigned)geteuid()); /* dynembd allows listed uids only */
	const char *const args[] = { "--foreground", "--socket", sock, "--log-level", "info",
				     "--data-bytes", "1M", "--segment-bytes", "2M", "--allow-uid",
				     uid, NULL };
	pid_t first = spawn(args, "first");
	uint64_t end = now_ms() + RUN_TIMEOUT_MS;
	while (hello(sock) != 0) {
		int st;
		cr_assert_neq(waitpid(first, &st, WNOHANG), first, "the first daemon exited at start");
		if (now_ms() > end) {
			kill(first, SIGKILL);
			waitpid(first, &st, 0);
			cr_assert_fail("the first daemon did not come up");
		}
		usleep(5000);
	}

	/* The second: same socket. (Foreground: the check comes before detaching either
	 * way, and a regression must not leave a detached daemon behind.) Twice: a refused
	 * start must not have disturbed the socket for the next one either. */
	for (int i = 0; i < 2; i++) {
		struct result r = run((const char *const[]){ "--foreground", "--socket", sock, NULL });
		cr_assert_neq(r.status, 0, "a second daemon started on a live socket");
		cr_assert_not_null(strstr(r.err, "another dynembd"), "stderr says why: %s", r.err);
		cr_assert_not_null(strstr(r.err, sock), "stderr names the socket: %s", r.err);
		result_free(&r);
		struct stat st;
		cr_assert_eq(stat(sock, &st), 0, "the socket file is still there");
		cr_assert_eq(hello(sock), 0, "the first daemon still serves");
	}

	kill(first, SIGTERM);
	int status = wait_exit(first);
	if (status != 0) {
		char p[128];
		snprintf(p, sizeof p, "%s/first.err", dir);
		char *log = slurp(p);
		cr_assert_fail("the first daemon exited %d after SIGTERM; log:\n%s", status, log);
	}
}

/* [quota]: the defaults, a file then a flag, and every bad value named. */
Test(config, quota_keys)
{
	struct result p = run((const char *const[]){ "--print-config", NULL });
	cr_assert_eq(p.status, 0, "%s", p.err);
	cr_expect_str_eq(config_value(p.out, "uid_tables"), "256");
	cr_expect_str_eq(config_value(p.out, "host_tables"), "1024");
	cr_expect_str_eq(config_value(p.out, "uid_bytes"), "0");
	cr_expect_str_eq(config_value(p.out, "table_bytes"), "17179869184");
	const char *hb = config_value(p.out, "host_bytes");
	cr_assert_not_null(hb);
	cr_expect_gt(strtoull(hb, NULL, 10), 0, "host_bytes auto is 3/4 of physical memory: %s", hb);
	result_free(&p);

	char path[128];
	write_file(path, sizeof path, "quota.ini",
		   "[quota]\nuid_tables = 3\nhost_tables = 0\nuid_bytes = 1G\nhost_bytes = 0\n"
		   "table_bytes = 128M\n");
	p = run((const char *const[]){ "--config", path, "--uid-tables", "5", "--print-config",
				       NULL });
	cr_assert_eq(p.status, 0, "%s", p.err);
	cr_expect_str_eq(config_value(p.out, "uid_tables"), "5", "the flag wins");
	cr_expect_str_eq(config_value(p.out, "host_tables"), "0");
	cr_expect_str_eq(config_value(p.out, "uid_bytes"), "1073741824");
	cr_expect_str_eq(config_value(p.out, "host_bytes"), "0");
	cr_expect_str_eq(config_value(p.out, "table_bytes"), "134217728");
	result_free(&p);

	static const struct { const char *flag, *key, *value; } bad[] = {
		{ "--uid-tables", "uid_tables", "-1" },
		{ "--host-tables", "host_tables", "99999999" },
		{ "--uid-bytes", "uid_bytes", "1M" },
		{ "--host-bytes", "host_bytes", "lots" },
		{ "--table-bytes", "table_bytes", "0" },
		{ "--table-bytes", "table_bytes", "17T" },
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct result r = run((const char *const[]){ bad[i].flag, bad[i].value,
							     "--print-config", NULL });
		cr_expect_eq(r.status, 2, "%s %s: exit %d", bad[i].flag, bad[i].value, r.status);
		cr_expect(has_word(r.err, bad[i].key), "%s %s: %s", bad[i].flag, bad[i].value, r.err);
		result_free(&r);
	}
}

/* [log]: level and format from the file, a flag over the file, [server] log_level (the
 * older name of [log] level) still read, and its bad value named by that name. */
Test(config, log_section)
{
	struct result p = run((const char *const[]){ "--print-config", NULL });
	cr_assert_eq(p.status, 0, "%s", p.err);
	cr_expect_str_eq(config_value(p.out, "level"), "info");
	cr_expect_str_eq(config_value(p.out, "format"), "logfmt");
	cr_expect_null(config_value(p.out, "log_level"), "one key prints the level: [log] level");
	result_free(&p);

	char path[128];
	write_file(path, sizeof path, "log.ini", "[log]\nlevel = warn\nformat = JSON\n");
	p = run((const char *const[]){ "--config", path, "--log-level", "debug", "--print-config",
				       NULL });
	cr_assert_eq(p.status, 0, "%s", p.err);
	cr_expect_str_eq(config_value(p.out, "level"), "debug", "the flag wins");
	cr_expect_str_eq(config_value(p.out, "format"), "json");
	result_free(&p);
	p = run((const char *const[]){ "--config", path, "--log-format", "logfmt", "--print-config",
				       NULL });
	cr_assert_eq(p.status, 0, "%s", p.err);
	cr_expect_str_eq(config_value(p.out, "level"), "warn");
	cr_expect_str_eq(config_value(p.out, "format"), "logfmt", "the flag wins");
	result_free(&p);

	write_file(path, sizeof path, "oldlog.ini", "[server]\nlog_level = loud\n");
	p = run((const char *const[]){ "--config", path, "--print-config", NULL });
	cr_expect_eq(p.status, 2, "exit %d: %s", p.status, p.err);
	cr_expect(has_word(p.err, "log_level"), "names the key as written: %s", p.err);
	result_free(&p);
	write_file(path, sizeof path, "badlog.ini", "[log]\nlevels = info\n");
	p = run((const char *const[]){ "--config", path, "--print-config", NULL });
	cr_expect_eq(p.status, 2, "exit %d: %s", p.status, p.err);
	cr_expect(has_word(p.err, "levels") && strstr(p.err, "[log]"), "%s", p.err);
	result_free(&p);
}
