/*
 * daemon_proc.h — running dynembd as a child process, for the test drivers in tools/
 * (soak/): find the binary, start it on a private socket with its output in a log file,
 * wait until it accepts, SIGKILL or SIGTERM it, show the end of its log, remove a work
 * directory, read its VmRSS. Header-only (static inline): crashtest.c and soak/soak.c
 * use it, each one program built against the public dynemb.h.
 *
 * Owns nothing beyond the struct below: the caller owns the paths and the argv.
 */
#ifndef DE_TOOLS_DAEMON_PROC_H
#define DE_TOOLS_DAEMON_PROC_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
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

struct dproc {
	const char *exe;        /* dynembd */
	char sock[108];         /* its control socket */
	char logpath[PATH_MAX]; /* its stdout and stderr, appended */
	pid_t pid;              /* -1: not running */
	int status;             /* the wait status of the last exit that dproc saw */
};

static inline uint64_t dproc_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* True when something accepts on the unix SEQPACKET socket at path. */
static inline bool dproc_can_connect(const char *path)
{
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
	bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
	if (fd >= 0)
		close(fd);
	return ok;
}

/* The last ~4 KB of the daemon's log, to stderr. */
static inline void dproc_log_tail(const struct dproc *d)
{
	FILE *f = fopen(d->logpath, "r");
	if (!f)
		return;
	char line[512];
	long size = 0;
	if (!fseek(f, 0, SEEK_END))
		size = ftell(f);
	fseek(f, size > 4000 ? size - 4000 : 0, SEEK_SET);
	fprintf(stderr, "---- the end of %s ----\n", d->logpath);
	while (fgets(line, sizeof line, f))
		fputs(line, stderr);
	fprintf(stderr, "----\n");
	fclose(f);
}

/* $DYNEMBD, else ../src/server/dynembd next to this program (a build directory). buf
 * receives the path; returns it, or NULL when it does not fit. */
static inline const char *dproc_default_exe(char *buf, size_t cap, const char *argv0)
{
	const char *env = getenv("DYNEMBD");
	if (env)
		return env;
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
	if (n <= 0)
		snprintf(self, sizeof self, "%s", argv0);
	else
		self[n] = '\0';
	char *slash = strrchr(self, '/');
	if (slash)
		*slash = '\0';
	else
		snprintf(self, sizeof self, ".");
	/* tools/soak/soak or tools/crashtest: the build root is one or two levels up */
	for (const char *up = "/..", *up2 = "/../.."; up; up = up2, up2 = NULL) {
		int k = snprintf(buf, cap, "%s%s/src/server/dynembd", self, up);
		if (k < 0 || (size_t)k >= cap)
			return NULL;
		if (!access(buf, X_OK))
			return buf;
	}
	return buf;
}

/*
 * Start d->exe with argv (argv[0] is the program; NULL-terminated) and wait until its
 * socket accepts (at most timeout_s). 0 started; -1 failed (said why on stderr, with the
 * log's end); 2: it exited with status 2 at startup (refused its flags).
 */
static inline int dproc_start(struct dproc *d, char *const *argv, unsigned timeout_s)
{
	unlink(d->sock);
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0) {
		fprintf(stderr, "fork: %s\n", strerror(errno));
		return -1;
	}
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(1);
		int fd = open(d->logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execv(d->exe, argv);
		fprintf(stderr, "exec %s: %s\n", d->exe, strerror(errno));
		_exit(127);
	}
	d->pid = pid;
	uint64_t end = dproc_now_ns() + (uint64_t)timeout_s * 1000000000ull;
	while (!dproc_can_connect(d->sock)) {
		if (waitpid(pid, &d->status, WNOHANG) == pid) {
			d->pid = -1;
			if (WIFEXITED(d->status) && WEXITSTATUS(d->status) == 2)
				return 2;
			fprintf(stderr, "dynembd exited at startup (%s %d)\n",
				WIFEXITED(d->status) ? "status" : "signal",
				WIFEXITED(d->status) ? WEXITSTATUS(d->status) : WTERMSIG(d->status));
			dproc_log_tail(d);
			return -1;
		}
		if (dproc_now_ns() > end) {
			fprintf(stderr, "dynembd did not listen on %s within %u s\n", d->sock,
				timeout_s);
			dproc_log_tail(d);
			return -1;
		}
		usleep(2000);
	}
	return 0;
}

/* True (and d->status set, d->pid -1) when the daemon has exited on its own. */
static inline bool dproc_exited(struct dproc *d)
{
	if (d->pid <= 0)
		return false;
	if (waitpid(d->pid, &d->status, WNOHANG) != d->pid)
		return false;
	d->pid = -1;
	return true;
}

static inline void dproc_kill(struct dproc *d)
{
	if (d->pid > 0) {
		kill(d->pid, SIGKILL);
		while (waitpid(d->pid, &d->status, 0) < 0 && errno == EINTR)
			;
		d->pid = -1;
	}
}

/* SIGTERM and wait (SIGKILL after timeout_s): 0 when it exited with status 0. */
static inline int dproc_stop(struct dproc *d, unsigned timeout_s)
{
	int st = 0;
	if (d->pid <= 0)
		return 0;
	kill(d->pid, SIGTERM);
	uint64_t end = dproc_now_ns() + (uint64_t)timeout_s * 1000000000ull;
	while (waitpid(d->pid, &st, WNOHANG) == 0) {
		if (dproc_now_ns() > end) {
			kill(d->pid, SIGKILL);
			waitpid(d->pid, &st, 0);
			break;
		}
		usleep(2000);
	}
	d->pid = -1;
	d->status = st;
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

/* rm -r of dir, depth levels of subdirectories deep. */
static inline void dproc_rm_tree(const char *dir, int depth)
{
	char path[PATH_MAX];
	DIR *d = opendir(dir);
	struct dirent *e;
	while (d && (e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		int n = snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
		if (n < 0 || (size_t)n >= sizeof path)
			continue;
		struct stat st;
		if (!lstat(path, &st) && S_ISDIR(st.st_mode) && depth > 0)
			dproc_rm_tree(path, depth - 1);
		else
			unlink(path);
	}
	if (d)
		closedir(d);
	rmdir(dir);
}

/* VmRSS of pid in KiB from /proc/pid/status; 0 when it cannot be read. */
static inline uint64_t dproc_rss_kib(pid_t pid)
{
	char path[64], line[256];
	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	uint64_t kib = 0;
	while (f && fgets(line, sizeof line, f))
		if (!strncmp(line, "VmRSS:", 6)) {
			kib = strtoull(line + 6, NULL, 10);
			break;
		}
	if (f)
		fclose(f);
	return kib;
}

#endif
