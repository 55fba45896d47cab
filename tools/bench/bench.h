/*
 * bench.h — what the sub-commands of dynemb-bench share: the program name, the usage
 * exit code, and each sub-command's entry point (one file each beyond `table`).
 */
#ifndef DE_BENCH_H
#define DE_BENCH_H

#define PROG "dynemb-bench"
#define EXIT_USAGE 2

/* dynemb-bench channel: data-plane round trips and throughput (bench_channel.c). */
int cmd_channel(int argc, char **argv);

/* dynemb-bench sidecar: dynembd end to end vs in-process, a socket and Redis (bench_sidecar.c). */
int cmd_sidecar(int argc, char **argv);

#endif
