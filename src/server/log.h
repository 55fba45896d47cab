/*
 * log.h — PRIVATE to dynembd: the daemon's log (log.c), one event per line on stderr.
 * Any layer above the validators may log; the validators never do (they are pure).
 */
#ifndef DE_SRV_LOG_H
#define DE_SRV_LOG_H

enum srv_log_level { SRV_LOG_ERROR = 0, SRV_LOG_WARN, SRV_LOG_INFO, SRV_LOG_DEBUG };

/* The one process-wide setting: set once at startup, before any thread starts. */
void srv_log_set_level(int level);
/* One event per line on stderr, prefixed "dynembd: ", written with one write(2). */
__attribute__((format(printf, 2, 3))) void srv_log(int level, const char *fmt, ...);

#endif /* DE_SRV_LOG_H */
