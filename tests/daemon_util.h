/*
 * daemon_util.h — what the tests that run the real dynembd share: the binary ($DYNEMBD,
 * default /tmp/dynembd-c; a missing one is a failure, not a skip: the daemon is part of
 * this project), its argv (with the common small-footprint flags, or with the daemon's
 * own page and segment defaults; both allow this process's uid, which dynembd does not
 * allow unless listed: a later --allow-uid replaces it), fork + exec with PR_SET_PDEATHSIG (a failed assertion
 * never leaves a daemon behind), connecting to its socket and waiting until it accepts,
 * stopping it (SIGTERM, SIGKILL after a deadline), and showing its log (the stderr file
 * daemon_spawn wrote; always, or only when DYNEMBD_TEST_SHOW_LOGS is set).
 * Each test keeps its own pid, socket name and log; nothing here holds state.
 * Users: test_client.c, test_client_learn.c, test_persist_daemon.c, test_daemon.c,
 * tf_standin/test_tf_kernels.c.
 * Include after the Criterion header (uses now_s from test_util.h).
 */
#ifndef DE_DAEMON_UTIL_H
#define DE_DAEMON_UTIL_H

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_util.h"

static inline const char *daemon_bin(void)
{
	const char *b = getenv("DYNEMBD");
	if (!b || !*b)
		b = "/tmp/dynembd-c";
	if (access(b, X_OK) != 0)
		cr_assert_fail("no daemon binary at %s (set DYNEMBD to the built dynembd)", b);
	return b;
}

/* A SOCK_SEQPACKET connection to path: its fd (close-on-exec), or a negative errno
 * (-ENAMETOOLONG when path does not fit in sun_path). The caller closes the fd. */
static inline int daemon_connect(const char *path)
{
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path) >= (int)sizeof sa.sun_path) {
		close(fd);
		return -ENAMETOOLONG;
	}
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	return fd;
}

/* true when a SOCK_SEQPACKET connect to path succeeds */
static inline bool daemon_can_connect(const char *path)
{
	int fd = daemon_connect(path);
	if (fd < 0)
		return false;
	close(fd);
	return true;
}

/* Append the NULL-terminated list (NULL: nothing) to argv from index a while it fits in
 * cap entries with the final NULL, and write that NULL. The next index. */
static inline unsigned daemon_argv_add(const char **argv, unsigned cap, unsigned a,
				       const char *const *list)
{
	for (unsigned i = 0; list && list[i] && a + 1 < cap; i++)
		argv[a++] = list[i];
	argv[a] = NULL;
	return a;
}

/* This process's euid as a string, for --allow-uid. */
static inline const char *daemon_self_uid(void)
{
	static char buf[16];
	snprintf(buf, sizeof buf, "%u", (unsigned)geteuid());
	return buf;
}

/* Fill argv (cap entries): bin --foreground --socket sock --log-level level
 * --allow-uid (this euid) --segment-bytes 2M --reserve-bytes 2G --pages small, then the NULL-terminated lists
 * more and extra (either may be NULL) while they fit; argv ends with NULL. */
static inline void daemon_argv(const char **argv, unsigned cap, const char *bin, const char *sock,
			       const char *level, const char *const *more,
			       const char *const *extra)
{
	const char *const head[] = { bin, "--foreground", "--socket", sock, "--log-level", level,
				     "--allow-uid", daemon_self_uid(), NULL };
	const char *const small[] = { "--segment-bytes", "2M", "--reserve-bytes", "2G",
				      "--pages", "small", NULL };
	unsigned a = daemon_argv_add(argv, cap, 0, head);
	a = daemon_argv_add(argv, cap, a, small);
	a = daemon_argv_add(argv, cap, a, more);
	daemon_argv_add(argv, cap, a, extra);
}

/* Fill argv like daemon_argv without the small-footprint flags (the daemon's own page,
 * segment and reserve defaults): bin --foreground --socket sock --log-level level
 * --allow-uid (this euid), then the NULL-terminated extra (may be NULL) while it fits; argv ends with NULL. */
static inline void daemon_argv_defaults(const char **argv, unsigned cap, const char *bin,
					const char *sock, const char *level,
					const char *const *extra)
{
	const char *const head[] = { bin, "--foreground", "--socket", sock, "--log-level", level,
				     "--allow-uid", daemon_self_uid(), NULL };
	daemon_argv_add(argv, cap, daemon_argv_add(argv, cap, 0, head), extra);
}

/* fork + exec argv[0] with argv; the child gets death_sig when this process dies, and its
 * stderr is appended to log when log is not NULL. The child's pid. */
static inline pid_t daemon_spawn(const char *const *argv, int death_sig, const char *log)
{
	pid_t parent = getpid();
	pid_t pid = fork();
	cr_assert_geq(pid, 0, "fork failed");
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, death_sig);
		if (getppid() != parent)
			_exit(1);
		if (log) {
			int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
			if (fd >= 0)
				dup2(fd, 2);
		}
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	return pid;
}

/* Poll until sock accepts: 0; -ECHILD when pid exited first (its wait status in *status
 * when status is not NULL), -ETIMEDOUT after secs seconds. Asserts nothing. */
static inline int daemon_await_listen(pid_t pid, const char *sock, double secs, int *status)
{
	double end = now_s() + secs;
	while (!daemon_can_connect(sock)) {
		int st = 0;
		if (waitpid(pid, &st, WNOHANG) != 0) {
			if (status)
				*status = st;
			return -ECHILD;
		}
		if (now_s() >= end)
			return -ETIMEDOUT;
		usleep(2000);
	}
	return 0;
}

/* Wait until sock accepts; fails the test when pid exits first or after secs seconds
 * (log, when not NULL, is named in the message). */
static inline void daemon_wait_listen(pid_t pid, const char *sock, double secs, const char *log)
{
	int r = daemon_await_listen(pid, sock, secs, NULL);
	cr_assert_neq(r, -ECHILD, "dynembd exited at startup%s%s", log ? ", log " : "",
		      log ? log : "");
	cr_assert_eq(r, 0, "dynembd did not listen on %s within %.0f s", sock, secs);
}

/* SIGTERM pid and wait for it; SIGKILL after secs seconds. Its wait status. */
static inline int daemon_terminate(pid_t pid, double secs)
{
	kill(pid, SIGTERM);
	int st = 0;
	double end = now_s() + secs;
	while (waitpid(pid, &st, WNOHANG) == 0) {
		if (now_s() > end) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			break;
		}
		usleep(2000);
	}
	return st;
}

/* Copy the file log (a daemon's stderr, see daemon_spawn) to this process's stderr after
 * a header line naming it; nothing when it cannot be opened. */
static inline void daemon_show_log(const char *log)
{
	FILE *f = fopen(log, "r");
	if (!f)
		return;
	char line[512];
	fprintf(stderr, "---- daemon log %s ----\n", log);
	while (fgets(line, sizeof line, f))
		fputs(line, stderr);
	fclose(f);
}

/* daemon_show_log when DYNEMBD_TEST_SHOW_LOGS is set (to anything): for debugging, every
 * daemon's log, also of the tests that passed. */
static inline void daemon_show_log_if_asked(const char *log)
{
	if (getenv("DYNEMBD_TEST_SHOW_LOGS"))
		daemon_show_log(log);
}

/* The whole of file path into buf (cap bytes, NUL-terminated; empty when unreadable). */
static inline void daemon_slurp(const char *path, char *buf, size_t cap)
{
	buf[0] = 0;
	FILE *f = fopen(path, "r");
	if (!f)
		return;
	size_t n = fread(buf, 1, cap - 1, f);
	buf[n] = 0;
	fclose(f);
}

/*
 * $DYNEMBCTL --socket sock ARGS... (args NULL-terminated) with stdout and stderr to files
 * in dir (not a terminal; the child is killed after 30 s, so a test never hangs): their
 * text into out and err, the stdout file's path into out_path. Its exit status (128 + the
 * signal that killed it), or -1 when DYNEMBCTL is unset or the fork failed.
 */
static inline int daemon_ctl_run(const char *sock, const char *dir, const char *const *args,
				 char *out, size_t outcap, char *err, size_t errcap,
				 char *out_path, size_t pathcap)
{
	const char *bin = getenv("DYNEMBCTL");
	if (!bin || !*bin)
		return -1;
	static unsigned seq;
	char errp[160];
	snprintf(out_path, pathcap, "%s/out.%u", dir, ++seq);
	snprintf(errp, sizeof errp, "%s/err.%u", dir, seq);
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		if (!freopen(out_path, "w", stdout) || !freopen(errp, "w", stderr))
			_exit(126);
		const char *argv[24] = { bin, "--socket", sock };
		unsigned a = 3;
		for (unsigned i = 0; args[i] && a < 23; i++)
			argv[a++] = args[i];
		argv[a] = NULL;
		alarm(30);
		execv(bin, (char *const *)argv);
		_exit(127);
	}
	int st = 0;
	waitpid(pid, &st, 0);
	daemon_slurp(out_path, out, outcap);
	daemon_slurp(errp, err, errcap);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

#endif /* DE_DAEMON_UTIL_H */
