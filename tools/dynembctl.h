/*
 * dynembctl.h — PRIVATE to dynembctl: what dynembctl.c (argument parsing, the jobs),
 * dynembctl_query.c (the operator's queries) and dynembctl_top.c (top) share.
 */
#ifndef DE_DYNEMBCTL_H
#define DE_DYNEMBCTL_H

#include <stdbool.h>
#include <stdio.h>

#define EXIT_FAIL 1
#define EXIT_USAGE 2
#define EXIT_DOWN 2 /* health: the daemon is down or unreachable */

struct ctl_opts {
	const char *socket_path; /* NULL: the library's default */
	int timeout_ms;
	bool quiet, json;
	int interval_ms;         /* top: between two polls (1000) */
	long iterations;         /* top: frames to print; 0: not given */
};

/* true for the commands of dynembctl_query.c */
bool ctl_is_query(const char *cmd);
/* Check the arguments of query command cmd (npos positionals; 2 and a message on bad
 * usage), connect, run it, print its result (text, or one JSON object with o->json).
 * The exit status. */
int ctl_query(const char *cmd, int npos, const char *const *pos, const struct ctl_opts *o);

struct dynemb_client;
/* dynembctl top on connection c (dynembctl_top.c): frames until o->iterations or a
 * signal. The exit status. */
int ctl_top(struct dynemb_client *c, const struct ctl_opts *o);

/* s as a JSON string: quoted; ", \ and control bytes escaped; valid UTF-8 as it is, any
 * other byte >= 0x80 as U+FFFD */
void ctl_json_str(FILE *f, const char *s);
/* With o->json: {"ok":false,"command":cmd,"errno":err,"error":msg} on stdout. */
void ctl_json_error(const struct ctl_opts *o, const char *cmd, int err, const char *msg);
/* dynemb_connect failed: what to check, on stderr (and as JSON with o->json); EXIT_FAIL. */
int ctl_connect_fail(const struct ctl_opts *o, const char *cmd, int err);

#endif /* DE_DYNEMBCTL_H */
