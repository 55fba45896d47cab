/*
 * daemon_util.h — what the tests that run the real dynembd share: the binary ($DYNEMBD,
 * default /tmp/dynembd-c; a missing one is a failure, not a skip: the daemon is part of
 * this project), its argv with the common small-footprint flags, fork + exec with
 * PR_SET_PDEATHSIG (a failed assertion never leaves a daemon behind), waiting until its
 * socket accepts, and stopping it (SIGTERM, SIGKILL after a deadline).
 * Each test keeps its own pid and socket name; nothing here holds state.
 * Include after the Criterion header (uses now_s from test_util.h).
 */
#ifndef DE_DAEMON_UTIL_H
#define DE_DAEMON_UTIL_H

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

/* true when a SOCK_SEQPACKET connect to path succeeds */
static inline bool daemon_can_connect(const char *path)
{
	int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (s < 0)
		return false;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
	bool ok = connect(s, (struct sockaddr *)&sa, sizeof sa) == 0;
	close(s);
	return ok;
}

/* Fill argv (cap entries): bin --foreground --socket sock --log-level level
 * --segment-bytes 2M --reserve-bytes 2G --pages small, then the NULL-terminated lists
 * more and extra (either may be NULL) while they fit; argv ends with NULL. */
static inline void daemon_argv(const char **argv, unsigned cap, const char *bin, const char *sock,
			       const char *level, const char *const *more,
			       const char *const *extra)
{
	const char *common[] = { bin, "--foreground", "--socket", sock, "--log-level", level,
				 "--segment-bytes", "2M", "--reserve-bytes", "2G", "--pages", "small" };
	unsigned a = 0;
	for (unsigned i = 0; i < sizeof common / sizeof common[0] && a + 1 < cap; i++)
		argv[a++] = common[i];
	for (unsigned i = 0; more && more[i] && a + 1 < cap; i++)
		argv[a++] = more[i];
	for (unsigned i = 0; extra && extra[i] && a + 1 < cap; i++)
		argv[a++] = extra[i];
	argv[a] = NULL;
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

/* Wait until sock accepts; fails the test when pid exits first or after secs seconds
 * (log, when not NULL, is named in the message). */
static inline void daemon_wait_listen(pid_t pid, const char *sock, double secs, const char *log)
{
	double end = now_s() + secs;
	while (!daemon_can_connect(sock)) {
		int st;
		cr_assert_eq(waitpid(pid, &st, WNOHANG), 0, "dynembd exited at startup%s%s",
			     log ? ", log " : "", log ? log : "");
		cr_assert_lt(now_s(), end, "dynembd did not listen on %s within %.0f s", sock, secs);
		usleep(2000);
	}
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

#endif /* DE_DAEMON_UTIL_H */
