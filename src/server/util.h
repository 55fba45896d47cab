/*
 * util.h — PRIVATE to dynembd: small helpers with no daemon state (util.c), for any layer
 * above the validators.
 */
#ifndef DE_SRV_UTIL_H
#define DE_SRV_UTIL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* mkdir -p path: each missing directory created with mode (the data_dir, the listener's
 * socket directory, the disk tier). 0 or -errno. */
int srv_mkdir_p(const char *path, mode_t mode);

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t srv_mono_ns(void);

/* The daemon's file identity of this thread while it acts for a client. */
struct srv_fs_ids {
	bool switched;
	int ngroups;
	gid_t groups[256];
};
/* Act on files as uid/gid on this thread only: a root daemon sets the thread's fsuid,
 * fsgid and (no) supplementary groups, so the kernel's checks are the client's. A daemon
 * that is not root cannot, and acts as itself; root clients need nothing. 0 or -EPERM
 * (then srv_fs_as_daemon undoes what was done). */
int srv_fs_as_client(struct srv_fs_ids *s, uid_t uid, gid_t gid);
/* Back to the daemon's identity: 0, or -errno when its supplementary groups could not be
 * restored (the caller logs it). */
int srv_fs_as_daemon(struct srv_fs_ids *s);

#endif /* DE_SRV_UTIL_H */
