/*
 * soak.h — what the soak driver's processes share (private to tools/soak/).
 *
 * The driver (soak.c) maps one anonymous shared region before it forks its children:
 * the oracle (per table and key: what was sent and what was acknowledged), the counters
 * every process adds to, and the violations they report. Children are fork()ed, not
 * exec'ed, so the region and the options are inherited; a child SIGKILLed at any moment
 * leaves the region consistent because every field it writes is one atomic store.
 *
 * The oracle shares no code with the daemon: the expected rows are computed here
 * (oracle.c) from versions and counts, never from the daemon's optimizer code.
 */
#ifndef DE_SOAK_H
#define DE_SOAK_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "dynemb.h"

#define SOAK_DIM 8u
#define SOAK_MAX_BATCH 32u
#define SOAK_MAX_WORKERS 16u
#define SOAK_SGD_LR 0.5 /* a power of two: every SGD row below stays exact in float */

/* The tables. PUT tables hold versioned rows (oracle_put_row); SGD holds unit counts. */
enum soak_table {
	T_SYNC = 0,  /* durability sync, dynemb_update of versioned rows, read-only lookups */
	T_SGD = 1,   /* durability sync, server-side SGD; lookups may create */
	T_ASYNC = 2, /* durability async (window 20 ms), versioned rows */
	T_NONE = 3,  /* no durability (snapshots only), versioned rows; lookups may create */
	T_EVICT = 4, /* no durability, LRU eviction under a small budget; erases too */
	SOAK_NTABLES = 5,
};
extern const char *const soak_table_names[SOAK_NTABLES];
#define SOAK_EVICT_BUDGET ((2u << 20) + (96u << 10)) /* one 2 MiB arena segment of fixed cost, and about half the rows */

/* Attacks of the hostile client (hostile.c). */
enum soak_attack {
	A_IDLE = 0,      /* connections that never send HELLO */
	A_GARBAGE,       /* random bytes on the control socket, before and after HELLO */
	A_BIG_MSG,       /* a control packet far over the protocol's maximum */
	A_BAD_SQE,       /* random descriptors on its own ring (no table opened) */
	A_HUGE_SQE,      /* descriptors asking for 2^32-1 keys or out-of-range data */
	A_HUGE_API,      /* top-k k > 65536, sample 2^21, dim 4097, a 1 TiB data area */
	SOAK_NATTACKS,
};
extern const char *const soak_attack_names[SOAK_NATTACKS];

/* One key of one table. PUT tables: versions (row f(i, v)); SGD: gradient units. Only
 * the key's owner (worker i % workers) writes sent and acked; sent is stored (release)
 * before the request, acked after its acknowledgement, and both only grow, so a reader
 * that loads acked, then reads the row, then loads sent (acquire) may demand
 * acked <= what the row says <= sent in a sync table. */
struct soak_key {
	_Atomic uint32_t sent;
	_Atomic uint32_t acked;
	_Atomic uint32_t touched; /* 1: some lookup may have created the row */
};

enum soak_counter {
	C_LOOKUP_CALLS, C_LOOKUP_KEYS, C_ZERO_COPY_KEYS, C_UPDATE_CALLS, C_UPDATE_KEYS,
	C_GRAD_CALLS, C_GRAD_KEYS, C_ERASE_CALLS, C_SAMPLE_CALLS, C_TOPK_CALLS,
	C_SNAPSHOTS, C_ROWS_CHECKED, C_WORKER_STARTS,
	SOAK_NCOUNTERS,
};

#define SOAK_VIOL_KEEP 16u
#define SOAK_VIOL_LEN 240u

struct soak_shared {
	_Atomic uint32_t down;   /* 1 while the driver kills the daemon: failures expected */
	_Atomic uint64_t viol;   /* violations reported */
	char viol_msg[SOAK_VIOL_KEEP][SOAK_VIOL_LEN];
	_Atomic uint64_t count[SOAK_NCOUNTERS];
	_Atomic uint64_t attack_tries[SOAK_NATTACKS];
	_Atomic uint64_t attack_clean[SOAK_NATTACKS]; /* failed as they must */
	_Atomic uint64_t idle_closed; /* idle connections the daemon closed itself */
	_Atomic uint64_t idle_opened;
	struct soak_key key[]; /* SOAK_NTABLES * keys */
};

struct soak_opts {
	unsigned seconds, workers, keys, client_kill_ms, daemon_kill_s, warmup_s;
	unsigned rss_tol_pct, rss_slack_mib, timeout_ms;
	uint64_t seed;
	const char *daemon, *dir;
	bool keep, verbose, no_hostile, no_daemon_kills, self_check, hello_deadline;
};

/* What every child gets (a copy through fork). */
struct soak_ctx {
	struct soak_opts o;
	const char *sock;
	struct soak_shared *sh;
};

static inline struct soak_key *soak_key(const struct soak_ctx *x, int t, uint32_t i)
{
	return &x->sh->key[(size_t)t * x->o.keys + i];
}

static inline void soak_add(const struct soak_ctx *x, enum soak_counter c, uint64_t n)
{
	atomic_fetch_add_explicit(&x->sh->count[c], n, memory_order_relaxed);
}

/* Record a violation (any process); the first SOAK_VIOL_KEEP are kept verbatim. */
void soak_violation(const struct soak_ctx *x, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* ---- the oracle (oracle.c) ------------------------------------------------------------ */

uint64_t oracle_key(int t, uint32_t i); /* key index i of table t: distinct, never 0 */
/* The key index of key k in table t, or -1 when k is none of the table's keys. */
int64_t oracle_index(int t, uint64_t k);
int oracle_init(uint32_t keys);  /* the reverse map for oracle_index; 0 or -ENOMEM */

/* PUT tables: version v >= 1 of key i is this row (every component exact in float). */
void oracle_put_row(int t, uint32_t i, uint32_t v, float *out);
/* SGD: one unit of key i's gradient (grads = m units; component 0 is always -2). */
void oracle_sgd_unit(uint32_t i, float *out);
/* SGD: the row after u units in total, stepped by SGD with lr SOAK_SGD_LR from zeros. */
void oracle_sgd_row(uint32_t i, uint32_t u, float *out);

/*
 * Check one row read from table t for key i: st is its lookup status, lo and hi the
 * acknowledged and sent counts loaded around the read (lo 0 for tables that promise
 * nothing after a daemon kill). An absent row (MISSING, or all zeros where lookups may
 * create) counts as 0. Returns the version / units the row holds, or -1 after
 * reporting the violation (named by who, the table, the key and the values).
 */
int64_t oracle_check(const struct soak_ctx *x, const char *who, int t, uint32_t i, uint8_t st,
		     const float *row, uint32_t lo, uint32_t hi);

/* ---- the children (worker.c, hostile.c) ---------------------------------------------- */

__attribute__((noreturn)) void soak_worker(const struct soak_ctx *x, unsigned slot, uint64_t seed);
__attribute__((noreturn)) void soak_snapshotter(const struct soak_ctx *x, uint64_t seed);
__attribute__((noreturn)) void soak_hostile(const struct soak_ctx *x, uint64_t seed);

/* Open table t on c with the soak's spec for it (every process uses this one). */
int soak_open(dynemb_client *c, int t, int *handle);
int soak_connect(const struct soak_ctx *x, const char *name, uint64_t data_bytes,
		 dynemb_client **c);

#endif
