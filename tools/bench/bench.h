/*
 * bench.h — what the sub-commands of dynemb-bench share: the program name, the usage
 * exit code, and each sub-command's entry point (one file each beyond `table`).
 */
#ifndef DE_BENCH_H
#define DE_BENCH_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define PROG "dynemb-bench"
#define EXIT_USAGE 2

/* dynemb-bench channel: data-plane round trips and throughput (bench_channel.c). */
int cmd_channel(int argc, char **argv);

/* dynemb-bench sidecar: dynembd end to end vs in-process, a socket and Redis (bench_sidecar.c). */
int cmd_sidecar(int argc, char **argv);

/* dynemb-bench learn: optimizer steps vs find, Hogwild vs per-row exclusion, eviction
 * overhead, top-k (bench_learn.c). */
int cmd_learn(int argc, char **argv, const char *command_line);

/* dynemb-bench persist: WAL async / sync, snapshot write, restore and restart against fio
 * on the same file system (bench_persist.c). */
int cmd_persist(int argc, char **argv, const char *command_line);

/* The machine, for the figures' header: one human line, or a JSON object (no newline). */
void bench_machine_print(FILE *f, bool json);

/* Zipf sampler (dynemb-bench.c): P(rank k) proportional to (k+1)^-q over [0, n). */
struct zipf {
	double q;
	uint64_t n;
	double h_x1;   /* H(1.5) - h(1) */
	double h_n;    /* H(n + 0.5) */
	double squeeze;
};
void zipf_init(struct zipf *z, uint64_t n, double q);
uint64_t zipf_draw(const struct zipf *z, uint64_t *rng);

#endif
