/*
 * util.h — PRIVATE to dynembd: small helpers with no daemon state (util.c), for any layer
 * above the validators.
 */
#ifndef DE_SRV_UTIL_H
#define DE_SRV_UTIL_H

#include <stdint.h>
#include <sys/types.h>

/* mkdir -p path: each missing directory created with mode (the data_dir, the listener's
 * socket directory, the disk tier). 0 or -errno. */
int srv_mkdir_p(const char *path, mode_t mode);

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t srv_mono_ns(void);

#endif /* DE_SRV_UTIL_H */
