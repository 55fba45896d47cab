/*
 * log.h — PRIVATE to dynembd: the daemon's log (log.c), one event per line on stderr.
 * Any layer above the validators may log; the validators never do (they are pure).
 *
 * A line holds time (RFC 3339, UTC, milliseconds), level, component, msg, then the
 * event's fields, as logfmt (the default) or as one JSON object:
 *
 *   time=2026-12-03T18:28:57.123Z level=warn component=persist msg="..." table=t errno=28 err=ENOSPC
 *   {"time":"2026-12-03T18:28:57.123Z","level":"warn","component":"persist","msg":"...",
 *    "table":"t","errno":28,"err":"ENOSPC"}
 *
 * Every value is escaped (log.c): a table name, path or message from a client can never
 * break the line or add a field. A line longer than SRV_LOG_LINE_MAX is cut inside a value
 * and ends with truncated=true.
 *
 * Components: a file names its own before including this header
 * (#define SRV_LOG_COMPONENT "persist"); without one the component is the source file's
 * name up to its first '_' or '.' ("control_drop.c" logs as "control").
 *
 * Caveats: lines are written with one write(2) each and never interleave, but a full
 * stderr pipe blocks the thread that logs; nothing on a per-request path may log without
 * a rate limit (worker.c's log_due, control.c's refusal counters).
 */
#ifndef DE_SRV_LOG_H
#define DE_SRV_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum srv_log_level { SRV_LOG_ERROR = 0, SRV_LOG_WARN, SRV_LOG_INFO, SRV_LOG_DEBUG };
enum srv_log_format { SRV_LOG_LOGFMT = 0, SRV_LOG_JSON };

#define SRV_LOG_LINE_MAX 4096 /* PIPE_BUF: one write(2) of a line is atomic on a pipe */

/* The level: any thread, at any time (an atomic; a line being formatted meanwhile may
 * still come out). Out-of-range values are clamped to error..debug. */
void srv_log_set_level(int level);
int srv_log_get_level(void);
/* The format: set at startup, before any thread starts. */
void srv_log_set_format(int format);
/* "error", "warn", "info", "debug" <-> the level; NULL / -1 for anything else
 * (case-insensitive). */
const char *srv_log_level_name(int level);
int srv_log_level_parse(const char *name);
/* "logfmt", "json" <-> the format; NULL / -1 for anything else. */
const char *srv_log_format_name(int format);
int srv_log_format_parse(const char *name);

/* One field of an event. Build them with the SRV_F_* macros below. */
enum srv_log_ftype { SRV_LOG_FSTR, SRV_LOG_FINT, SRV_LOG_FUINT, SRV_LOG_FERRNO };
struct srv_log_field {
	const char *key; /* a constant of the code: [A-Za-z0-9_.-] (others become '_') */
	enum srv_log_ftype type;
	union {
		const char *s; /* NULL logs as an empty string */
		long long i;
		unsigned long long u;
		int err; /* an errno, either sign: logged as errno=N err=ENAME */
	};
};
#define SRV_F_STR(k, v) ((struct srv_log_field){ .key = (k), .type = SRV_LOG_FSTR, .s = (v) })
#define SRV_F_INT(k, v) ((struct srv_log_field){ .key = (k), .type = SRV_LOG_FINT, .i = (v) })
#define SRV_F_UINT(k, v) \
	((struct srv_log_field){ .key = (k), .type = SRV_LOG_FUINT, .u = (v) })
#define SRV_F_ERRNO(e) ((struct srv_log_field){ .key = "errno", .type = SRV_LOG_FERRNO, .err = (e) })
#define SRV_F_TABLE(name) SRV_F_STR("table", (name))
#define SRV_F_PATH(p) SRV_F_STR("path", (p))
/* The fields of one event: SRV_KV(SRV_F_TABLE(t->name), SRV_F_ERRNO(err)) is the two
 * arguments (array, count) that srv_log_kv takes. */
#define SRV_KV(...) \
	(const struct srv_log_field[]){ __VA_ARGS__ }, \
	sizeof((const struct srv_log_field[]){ __VA_ARGS__ }) / sizeof(struct srv_log_field)

/* One event: msg is the printf-formatted text, the fields follow it. Written with one
 * write(2), or not at all when level is above the current one. */
__attribute__((format(printf, 5, 6))) void
srv_log_kv(int level, const char *component, const struct srv_log_field *fields,
	   size_t nfields, const char *fmt, ...);

/* A rate limit for a line that a request can cause (an error on a per-request path): at
 * most one line a second per limit (a static at the call site; any thread). When due,
 * *suppressed is the number of lines left out since the last one (log it as a field). */
struct srv_log_limit {
	uint64_t last_ms; /* atomic: CLOCK_MONOTONIC ms of the last line + 1; 0 = none yet */
	uint64_t quiet;   /* atomic: lines left out since */
};
bool srv_log_limit_due(struct srv_log_limit *lim, uint64_t *suppressed);

#ifndef SRV_LOG_COMPONENT
#define SRV_LOG_COMPONENT __FILE__ /* log.c keeps the base name up to its first '_' or '.' */
#endif
/* An event with no fields but its message, of this file's component. */
#define srv_log(level, ...) srv_log_kv((level), SRV_LOG_COMPONENT, NULL, 0, __VA_ARGS__)
/* An event with fields: srv_logf(SRV_LOG_WARN, SRV_KV(SRV_F_TABLE(name)), "fmt", ...). */
#define srv_logf(level, kv, ...) srv_log_kv((level), SRV_LOG_COMPONENT, kv, __VA_ARGS__)

#endif /* DE_SRV_LOG_H */
