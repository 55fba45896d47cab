/*
 * dynemb-bench — benchmark CLI for dynemb: the sub-command dispatcher and its usage text.
 *
 * One program, several sub-commands, each a {name, fn, help} entry in `commands` at the
 * bottom of this file: `table` (bench_table.c: the table against a plain gather, growth
 * latency), `channel` (bench_channel.c: shm channel round trips), `sidecar`
 * (bench_sidecar.c: the daemon end to end through libdynemb), `learn` (bench_learn.c:
 * optimizer steps, eviction, top-k), `persist` (bench_persist.c: WAL, snapshots,
 * restore), `fair` (bench_fair.c: a victim client's latency while another floods the
 * daemon), `peers` (bench_peers.c: one table over three members on loopback TCP
 * against a Redis Cluster) and `serve` (bench_serve.c: a serving table's latency without
 * and during version swaps). Each has its own cmd_<name>() and options, declared in
 * bench_util.h with the helpers they share (bench_util.c). main() hands a sub-command argv from its name on and
 * the whole command line, quoted, for the figures' header.
 *
 * Exit status: 0 done, 1 a run-time failure, 2 bad usage (EXIT_USAGE). This file keeps no
 * mutable global state and measures nothing itself.
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "bench_util.h"

static void command_line(char *buf, size_t len, int argc, char **argv)
{
	size_t used = 0;

	buf[0] = '\0';
	for (int i = 0; i < argc && used + 1 < len; i++) {
		bool quote = argv[i][0] == '\0' || strpbrk(argv[i], " \t\"'$\\") != NULL;
		int n = snprintf(buf + used, len - used, quote ? "%s'%s'" : "%s%s", i ? " " : "",
				 argv[i]);

		if (n < 0)
			break;
		used += (size_t)n;
	}
}

/* ------------------------------------------------------------------------- */
/* Sub-commands                                                               */
/* ------------------------------------------------------------------------- */

static int cmd_channel_entry(int argc, char **argv, const char *command_line)
{
	(void)command_line;
	return cmd_channel(argc, argv);
}

static int cmd_sidecar_entry(int argc, char **argv, const char *command_line)
{
	(void)command_line;
	return cmd_sidecar(argc, argv);
}

struct command {
	const char *name;
	int (*fn)(int argc, char **argv, const char *command_line);
	const char *help;
};

static const struct command commands[] = {
	{"table", cmd_table,
	 "table find / find_or_insert throughput against a plain gather, and growth latency"},
	{"channel", cmd_channel_entry,
	 "shm channel round trips (busy-poll, futex) vs a unix socket; ring vs zero-copy vs in-process"},
	{"sidecar", cmd_sidecar_entry,
	 "dynembd end to end: ring and zero-copy vs in-process find, a unix socket and Redis"},
	{"learn", cmd_learn,
	 "optimizer steps vs find, Hogwild vs per-row exclusion, eviction overhead, top-k"},
	{"persist", cmd_persist,
	 "WAL async / sync, snapshot write, restore and restart time against fio"},
	{"fair", cmd_fair,
	 "a victim client's p50/p99 alone and under a flood (max-size lookups, top-k, wake storm)"},
	{"peers", cmd_peers,
	 "3 dynembd members on loopback TCP: local / half / remote lookups, wire bytes, Redis Cluster"},
	{"serve", cmd_serve,
	 "a serving table's p50/p99/p99.9 without and during version swaps, vs a hash map and Redis"},
};

static void usage(FILE *f)
{
	fprintf(f, "usage: " PROG " <command> [options]\n"
		   "       " PROG " <command> --help\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
	fprintf(f, "\nExit status: 0 done, 1 run-time failure, 2 bad usage.\n"
		   "Quick start: " PROG " table --short\n");
}

int main(int argc, char **argv)
{
	char command[1024];

	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		usage(stdout);
		return 0;
	}
	command_line(command, sizeof(command), argc, argv);
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(argv[1], commands[i].name) == 0)
			return commands[i].fn(argc - 1, argv + 1, command);
	fprintf(stderr, PROG ": unknown command '%s'\n\n", argv[1]);
	usage(stderr);
	return EXIT_USAGE;
}
