/*
 * util.c — small helpers of dynembd that own nothing and know nothing of the daemon's
 * layers (util.h): srv_mkdir_p, the monotonic clock and a job thread's file identity
 * (srv_fs_as_client: the persistence and serving jobs touch files as their client).
 */
#include "util.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int srv_mkdir_p(const char *path, mode_t mode)
{
	char buf[PATH_MAX];
	snprintf(buf, sizeof buf, "%s", path);
	for (char *q = buf + 1; *q; q++) {
		if (*q != '/')
			continue;
		*q = 0;
		if (mkdir(buf, mode) && errno != EEXIST)
			return -errno;
		*q = '/';
	}
	if (mkdir(buf, mode) && errno != EEXIST)
		return -errno;
	return 0;
}

uint64_t srv_mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int srv_fs_as_client(struct srv_fs_ids *s, uid_t uid, gid_t gid)
{
	s->switched = false;
	if (geteuid() != 0 || uid == 0)
		return 0;
	s->ngroups = getgroups((int)(sizeof s->groups / sizeof s->groups[0]), s->groups);
	if (s->ngroups < 0 || syscall(SYS_setgroups, 0, NULL))
		return -EPERM;
	setfsgid(gid);
	setfsuid(uid);
	s->switched = true;
	/* setfsuid returns the previous value and reports no error: ask again */
	if ((uid_t)setfsuid((uid_t)-1) != uid || (gid_t)setfsgid((gid_t)-1) != gid)
		return -EPERM;
	return 0;
}

int srv_fs_as_daemon(struct srv_fs_ids *s)
{
	if (!s->switched)
		return 0;
	setfsuid(geteuid());
	setfsgid(getegid());
	s->switched = false;
	return syscall(SYS_setgroups, (size_t)s->ngroups, s->groups) ? -errno : 0;
}
