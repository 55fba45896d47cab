/*
 * demo_client.c — a short demo of the sidecar: a "trainer" that looks up and updates
 * embeddings of a key set that keeps growing, the way a model with a dynamic vocabulary
 * does, through libdynemb and a running dynembd.
 *
 * Each step takes a batch of keys (mostly seen before, Zipf-like over the keys seen so
 * far, plus new ones at a steady rate), looks them up (new keys are created by the
 * daemon with the table's initializer), nudges each row, and writes it back. A progress
 * line shows steps, rows/s and the table's size; the summary checks that the last values
 * written are the values read back, through the daemon and through the zero-copy path.
 *
 * Usage: demo_client [--socket PATH] [--seconds S] [--dim D] [--batch B]
 * Exit: 0 ok, 1 a failure (with the library's message), 2 bad usage.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dynemb.h"
#include "mix.h"

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* The i-th distinct feature id the stream has produced (never 0). */
static uint64_t feature(uint64_t i) { return mix(i) | 1; }

static int fail(const char *what, int err)
{
	fprintf(stderr, "demo_client: %s: %s\n", what, dynemb_strerror(err));
	return 1;
}

int main(int argc, char **argv)
{
	const char *sock = NULL;
	double seconds = 5;
	unsigned dim = 64, batch = 1024;
	static const struct option lo[] = { { "socket", required_argument, NULL, 's' },
					    { "seconds", required_argument, NULL, 't' },
					    { "dim", required_argument, NULL, 'd' },
					    { "batch", required_argument, NULL, 'b' },
					    { "help", no_argument, NULL, 'h' },
					    { 0 } };
	int c;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 's': sock = optarg; break;
		case 't': seconds = atof(optarg); break;
		case 'd': dim = (unsigned)atoi(optarg); break;
		case 'b': batch = (unsigned)atoi(optarg); break;
		case 'h':
			printf("usage: demo_client [--socket PATH] [--seconds S] [--dim D] [--batch B]\n");
			return 0;
		default: return 2;
		}
	}
	if (!(seconds > 0 && seconds <= 3600) || !dim || dim > 4096 || !batch || batch > 65536) {
		fprintf(stderr,
			"demo_client: --seconds (0, 3600], --dim 1..4096, --batch 1..65536\n");
		return 2;
	}

	dynemb_client *cl;
	struct dynemb_connect_opts co = { .name = "demo_client" };
	int err = dynemb_connect(sock, &co, &cl);
	if (err)
		return fail("connect", err);
	struct dynemb_table_spec spec = { .name = "demo", .dim = dim, .init = DYNEMB_UNIFORM,
					  .init_a = -0.05f, .init_b = 0.05f, .seed = 2020 };
	int tb;
	if ((err = dynemb_open(cl, &spec, &tb)))
		return fail("open table 'demo'", err);

	uint64_t *keys = malloc(batch * sizeof *keys);
	float *rows = malloc((size_t)batch * dim * sizeof *rows);
	uint8_t *st = malloc(batch);
	if (!keys || !rows || !st)
		return fail("allocate", -ENOMEM);
	uint64_t seen = 0, steps = 0, looked = 0, created = 0, rng = 7;
	bool tty = isatty(STDOUT_FILENO);
	double t0 = now_s(), last = t0;
	printf("demo: table 'demo' dim %u, batches of %u keys, %.0f s; new features keep arriving\n",
	       dim, batch, seconds);
	while (now_s() - t0 < seconds) {
		/* 1 in 8 keys is new; the rest favour recent features (a drifting vocabulary) */
		for (unsigned k = 0; k < batch; k++) {
			rng = mix(rng);
			if (!seen || rng % 8 == 0) {
				keys[k] = feature(seen++);
			} else {
				double u = (double)(mix(rng) >> 11) * 0x1p-53;
				uint64_t back = (uint64_t)((double)seen * pow(u, 3.0));
				keys[k] = feature(seen - 1 - back);
			}
		}
		if ((err = dynemb_lookup(cl, tb, keys, batch, rows, st, 0, steps)))
			return fail("lookup", err);
		for (unsigned k = 0; k < batch; k++) {
			created += st[k] == DYNEMB_ST_CREATED;
			rows[(size_t)k * dim] = (float)steps; /* what the summary checks */
			for (unsigned j = 1; j < dim; j++)
				rows[(size_t)k * dim + j] *= 0.99f;
		}
		if ((err = dynemb_update(cl, tb, keys, batch, rows, steps, NULL)))
			return fail("update", err);
		steps++;
		looked += batch;
		double t = now_s();
		if (t - last >= 0.5) {
			struct dynemb_stats s;
			if ((err = dynemb_stats(cl, tb, &s)))
				return fail("stats", err);
			printf("%sstep %6llu  %8.2f M rows/s looked up and updated  table: %9llu keys, "
			       "%6.1f MiB%s",
			       tty ? "\r" : "", (unsigned long long)steps,
			       (double)looked / (t - t0) / 1e6,
			       (unsigned long long)s.keys, (double)s.arena_bytes / (1 << 20),
			       tty ? "" : "\n");
			fflush(stdout);
			last = t;
		}
	}
	double el = now_s() - t0;
	if (tty)
		printf("\n");

	/* The last batch: read back through the zero-copy path, then through the daemon. */
	uint64_t loc0, rem0, loc1, rem1;
	dynemb_zero_copy_counts(cl, &loc0, &rem0);
	float *back = malloc((size_t)batch * dim * sizeof *back);
	if (!back)
		return fail("allocate", -ENOMEM);
	if ((err = dynemb_lookup(cl, tb, keys, batch, back, st, DYNEMB_READONLY, steps)))
		return fail("read-only lookup", err);
	dynemb_zero_copy_counts(cl, &loc1, &rem1);
	size_t bad = 0;
	for (unsigned k = 0; k < batch; k++) {
		/* a key can appear twice in the batch: the later update wins, both hold step */
		bad += st[k] != DYNEMB_ST_FOUND || back[(size_t)k * dim] != (float)(steps - 1);
	}
	struct dynemb_stats s;
	if ((err = dynemb_stats(cl, tb, &s)))
		return fail("stats", err);
	printf("summary: %llu steps in %.1f s, %.2f M rows/s looked up + updated; %llu features "
	       "seen, %llu created by the daemon; table holds %llu keys in %.1f MiB; last batch "
	       "read back: %zu wrong, %llu of %u keys served zero-copy\n",
	       (unsigned long long)steps, el, (double)looked / el / 1e6, (unsigned long long)seen,
	       (unsigned long long)created, (unsigned long long)s.keys,
	       (double)s.arena_bytes / (1 << 20), bad, (unsigned long long)(loc1 - loc0), batch);
	free(back);
	free(keys);
	free(rows);
	free(st);
	dynemb_close(cl);
	return bad ? 1 : 0;
}
