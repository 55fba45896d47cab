/*
 * test_wal.c — the write-ahead log (uring/wal.c): round trip against the reference,
 * group commit (async window, sync; the window as a bound on acknowledged records while
 * every flush is late: de_wal_delay), segment roll, injected write / fsync / allocation
 * faults, a real ENOSPC on a 1 MiB tmpfs, and every byte flip and truncation of a small
 * log (replay must give exactly the records before the damage).
 */
#ifdef DE_MINI_CRITERION
#include "../mini_criterion.h" /* ThreadSanitizer build: see that header */
#else
#include <criterion/criterion.h>
#endif
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mount.h>

#include "persist_util.h"

#define NK 300

/* random puts and erases over two table ids: ref0 for table 1, ref1 for table 2 */
static void workload(de_wal *w, struct tab *t0, struct tab *t1, struct ref *r0, struct ref *r1,
		     size_t nrec, uint64_t *seed, uint64_t *last_lsn)
{
	uint64_t keys[64];
	size_t idx[64];
	for (size_t rec = 0; rec < nrec; rec++) {
		bool second = rng_below(seed, 3) == 0;
		de_table *t = second ? t1->t : t0->t;
		struct ref *r = second ? r1 : r0;
		size_t n = 1 + rng_below(seed, 20);
		for (size_t k = 0; k < n; k++)
			idx[k] = rng_below(seed, NK);
		struct de_wal_batch b = { .table_id = second ? 2 : 1, .keys = keys, .n = n };
		if (rng_below(seed, 5) == 0) {
			erase_keys(t, r, idx, n, keys);
			b.type = DE_WAL_ERASE;
		} else {
			put_keys(t, r, idx, n, 100 + rec, keys);
			b.type = DE_WAL_PUT;
			b.table = t;
		}
		cr_assert_eq(de_wal_append(w, &b, last_lsn), 0);
	}
}

struct two {
	de_table *t[2];
};

static int apply_two(void *ctx, const struct de_wal_record *r)
{
	struct two *x = ctx;
	cr_assert(r->table_id == 1 || r->table_id == 2);
	return de_wal_record_apply(x->t[r->table_id - 1], r);
}

Test(wal, round_trip_two_tables_and_roll)
{
	char d[64];
	mk_dir(d, sizeof d);
	struct tab t0 = mk_table(), t1 = mk_table();
	struct ref r0 = ref_new(NK), r1 = ref_new(NK);
	struct de_wal_options o = { .segment_bytes = 64 << 10, .buffer_bytes = 16 << 10 };
	de_wal *w;
	cr_assert_eq(de_wal_open(d, &o, &w), 0);
	uint64_t seed = 1, last = 0;
	workload(w, &t0, &t1, &r0, &r1, 600, &seed, &last);
	cr_assert_eq(last, 600);
	cr_assert_eq(de_wal_close(w), 0);

	struct tab u0 = mk_table(), u1 = mk_table();
	struct two x = { { u0.t, u1.t } };
	struct de_wal_replay_result res;
	cr_assert_eq(de_wal_replay(d, 1, 0, apply_two, &x, quiet_log, NULL, &res), 0);
	cr_assert_eq(res.records, 600);
	cr_assert_eq(res.last_lsn, 600);
	cr_assert_eq(res.bytes_dropped, 0);
	cr_assert_null(res.problem);
	cr_assert_gt(res.segments, 2, "64 KiB segments must roll (%u)", res.segments);
	cr_assert_eq(ref_diff(u0.t, &r0), 0);
	cr_assert_eq(ref_diff(u1.t, &r1), 0);

	/* reopen: the log continues at 601, and replay from 550 sees 51 + new records */
	cr_assert_eq(de_wal_open(d, &o, &w), 0);
	cr_assert_eq(de_wal_next_lsn(w), 601);
	workload(w, &t0, &t1, &r0, &r1, 50, &seed, &last);
	cr_assert_eq(last, 650);
	cr_assert_eq(de_wal_close(w), 0);
	cr_assert_eq(de_wal_replay(d, 550, 0, NULL, NULL, quiet_log, NULL, &res), 0);
	cr_assert_eq(res.records, 101);
	cr_assert_eq(res.last_lsn, 650);
	free(r0.r);
	free(r1.r);
	rm_table(&t0);
	rm_table(&t1);
	rm_table(&u0);
	rm_table(&u1);
	rm_dir(d);
}

static int apply_first(void *ctx, const struct de_wal_record *r)
{
	return r->lsn == 1 ? de_wal_record_apply((de_table *)ctx, r) : 0;
}

Test(wal, explicit_rows_absent_keys_and_bad_args)
{
	char d[64];
	mk_dir(d, sizeof d);
	de_wal *w;
	cr_assert_eq(de_wal_open(d, NULL, &w), 0);
	struct tab t = mk_table();
	struct ref r = ref_new(8);
	uint64_t keys[3] = { key_of(0), key_of(1), key_of(2) };
	struct ref_row rows[3] = { gen_row(0, 5), gen_row(1, 5), gen_row(2, 5) };
	float fl[3 * RF];
	struct de_row_meta meta[3];
	for (int i = 0; i < 3; i++) {
		memcpy(fl + i * RF, rows[i].row, sizeof rows[i].row);
		meta[i] = (struct de_row_meta){ .last_step = rows[i].last_step, .freq = rows[i].freq,
						.flags = i == 1 ? 0 : 1, .aux = rows[i].aux };
		if (i != 1)
			r.r[i] = rows[i];
	}
	/* key 1 was present in the table before: the record says absent, replay erases it */
	struct tab pre = mk_table();
	size_t one = 1;
	uint64_t k1;
	struct ref scratch = ref_new(8);
	put_keys(pre.t, &scratch, &one, 1, 1, &k1);
	struct de_wal_batch b = { .table_id = 9, .type = DE_WAL_PUT, .keys = keys, .n = 3,
				  .rows = fl, .meta = meta, .row_floats = RF };
	uint64_t lsn;
	cr_assert_eq(de_wal_append(w, &b, &lsn), 0);
	cr_assert_eq(lsn, 1);
	/* bad arguments: nothing appended */
	uint64_t zero = 0;
	struct de_wal_batch bad = b;
	bad.keys = &zero;
	bad.n = 1;
	cr_assert_eq(de_wal_append(w, &bad, NULL), -EINVAL);
	bad = b;
	bad.type = 7;
	cr_assert_eq(de_wal_append(w, &bad, NULL), -EINVAL);
	bad = b;
	bad.row_floats = 0;
	cr_assert_eq(de_wal_append(w, &bad, NULL), -EINVAL);
	/* a record larger than a buffer (other keys: key_of(100..)) */
	size_t big = de_wal_max_keys(w, RF) + 1;
	uint64_t *bk = xcalloc(big, 8);
	float *bf = xcalloc(big * RF, 4);
	struct de_row_meta *bm = xcalloc(big, sizeof *bm);
	for (size_t i = 0; i < big; i++)
		bk[i] = key_of(100 + i);
	struct de_wal_batch huge = { .table_id = 9, .type = DE_WAL_PUT, .keys = bk, .n = big,
				     .rows = bf, .meta = bm, .row_floats = RF };
	cr_assert_eq(de_wal_append(w, &huge, NULL), -EMSGSIZE);
	huge.n = big - 1;
	cr_assert_eq(de_wal_append(w, &huge, &lsn), 0, "max_keys keys must fit");
	cr_assert_eq(lsn, 2);
	cr_assert_eq(de_wal_sync(w, 3), -EINVAL, "lsn 3 was not appended");
	cr_assert_eq(de_wal_close(w), 0);
	/* replay lsn 1 only into pre: keys 0 and 2 set, key 1 (present before) erased */
	struct de_wal_replay_result res;
	cr_assert_eq(de_wal_replay(d, 1, 0, apply_first, pre.t, quiet_log, NULL, &res), 0);
	cr_assert_eq(res.records, 2);
	cr_assert_eq(ref_diff(pre.t, &r), 0);
	/* a table of another row size refuses the record */
	struct de_table_config c2 = pcfg;
	c2.nslots = 0;
	struct de_arena_config ac = { .reserve_bytes = 1ull << 30, .segment_bytes = 4 << 20,
				      .pages = DE_PAGES_SMALL, .numa_node = DE_NUMA_NONE };
	de_arena *a2;
	de_table *t2;
	cr_assert_eq(de_arena_create(&ac, &a2), 0);
	cr_assert_eq(de_table_open(a2, &c2, &t2), 0);
	cr_assert_eq(de_wal_replay(d, 1, 0, apply_cb, t2, quiet_log, NULL, &res), -EEXIST);
	de_table_close(t2);
	de_arena_destroy(a2);
	free(bk);
	free(bf);
	free(bm);
	free(r.r);
	free(scratch.r);
	rm_table(&t);
	rm_table(&pre);
	rm_dir(d);
}

Test(wal, async_window_group_commit)
{
	char d[64];
	mk_dir(d, sizeof d);
	struct de_wal_options o = { .window_ms = 50 };
	de_wal *w;
	cr_assert_eq(de_wal_open(d, &o, &w), 0);
	struct tab t = mk_table();
	struct ref r = ref_new(NK);
	uint64_t keys[64], lsn = 0;
	size_t idx[4] = { 1, 2, 3, 4 };
	double worst = 0;
	for (int round = 0; round < 5; round++) {
		put_keys(t.t, &r, idx, 4, (uint64_t)round + 1, keys);
		struct de_wal_batch b = { .table_id = 1, .type = DE_WAL_PUT, .keys = keys, .n = 4,
					  .table = t.t };
		cr_assert_eq(de_wal_append(w, &b, &lsn), 0);
		double t0 = now_s();
		while (de_wal_durable_lsn(w) < lsn && now_s() - t0 < 5)
			usleep(1000);
		double dt = now_s() - t0;
		cr_assert_geq(de_wal_durable_lsn(w), lsn, "the group commit never came");
		if (dt > worst)
			worst = dt;
	}
	/* within the window plus an fdatasync; generous for a loaded 2-core CI machine */
	cr_assert_lt(worst, 1.0, "group commit took %.3f s with a 50 ms window", worst);
	cr_log_info("async: worst append-to-durable %.1f ms (window 50 ms)", worst * 1e3);
	struct de_wal_stats st;
	cr_assert_eq(de_wal_stats(w, &st), 0);
	cr_assert_geq(st.flushes, 5);
	cr_log_info("registered buffers: %d", st.registered);
	/* durable means on disk: a reader sees the records while the WAL is open */
	struct tab u = mk_table();
	struct de_wal_replay_result res;
	cr_assert_eq(de_wal_replay(d, 1, 0, apply_cb, u.t, quiet_log, NULL, &res), 0);
	cr_assert_eq(res.records, 5);
	cr_assert_eq(ref_diff(u.t, &r), 0);
	cr_assert_eq(de_wal_close(w), 0);
	free(r.r);
	rm_table(&t);
	rm_table(&u);
	rm_dir(d);
}

struct syncer {
	de_wal *w;
	int id;
	int n;
	int err;
};

static void *sync_thread(void *arg)
{
	struct syncer *s = arg;
	for (int i = 0; i < s->n && !s->err; i++) {
		uint64_t key = key_of((size_t)s->id * 1000 + (size_t)i);
		float row[RF] = { (float)i };
		struct de_row_meta m = { .flags = 1, .last_step = (uint64_t)i };
		struct de_wal_batch b = { .table_id = 1, .type = DE_WAL_PUT, .keys = &key, .n = 1,
					  .rows = row, .meta = &m, .row_floats = RF };
		uint64_t lsn;
		if ((s->err = de_wal_append(s->w, &b, &lsn)))
			break;
		s->err = de_wal_sync(s->w, lsn);
		if (!s->err && de_wal_durable_lsn(s->w) < lsn)
			s->err = -EPROTO;
	}
	return NULL;
}

Test(wal, sync_mode_group_commit_threads)
{
	char d[64];
	mk_dir(d, sizeof d);
	de_wal *w;
	cr_assert_eq(de_wal_open(d, NULL, &w), 0);
	/* one record: not durable before sync, durable after */
	uint64_t key = key_of(0), lsn;
	cr_assert_eq(de_wal_append(w, &(struct de_wal_batch){ .table_id = 1, .type = DE_WAL_ERASE,
							      .keys = &key, .n = 1 }, &lsn), 0);
	cr_assert_eq(de_wal_durable_lsn(w), 0);
	cr_assert_eq(de_wal_sync(w, lsn), 0);
	cr_assert_eq(de_wal_durable_lsn(w), lsn);
	/* 4 threads, each append + sync 100 times */
	pthread_t th[4];
	struct syncer s[4];
	for (int i = 0; i < 4; i++) {
		s[i] = (struct syncer){ w, i, 100, 0 };
		pthread_create(&th[i], NULL, sync_thread, &s[i]);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		cr_assert_eq(s[i].err, 0, "thread %d: %d", i, s[i].err);
	}
	struct de_wal_stats st;
	cr_assert_eq(de_wal_stats(w, &st), 0);
	cr_assert_eq(st.durable_lsn, 401);
	cr_assert_leq(st.fsyncs, 401);
	cr_log_info("sync: 401 syncs took %" PRIu64 " fdatasyncs (group commit)", st.fsyncs);
	cr_assert_eq(de_wal_close(w), 0);
	struct de_wal_replay_result res;
	cr_assert_eq(de_wal_replay(d, 1, 0, NULL, NULL, quiet_log, NULL, &res), 0);
	cr_assert_eq(res.records, 401);
	rm_dir(d);
}

#ifdef DE_FAULT_INJECTION
static uint64_t append_one(de_wal *w, size_t i)
{
	uint64_t key = key_of(i), lsn = 0;
	float row[RF] = { (float)i };
	struct de_row_meta m = { .flags = 1 };
	struct de_wal_batch b = { .table_id = 1, .type = DE_WAL_PUT, .keys = &key, .n = 1,
				  .rows = row, .meta = &m, .row_floats = RF };
	int err = de_wal_append(w, &b, &lsn);
	return err ? 0 : lsn;
}

/* The async window as a bound: every flush lands LATE_MS after its fdatasync returned
 * (de_wal_delay: a loaded disk), the window is WINDOW_MS, and one thread appends and
 * "acknowledges" (de_wal_ack_wait) a record every half millisecond while another notes
 * when each LSN became durable. On the fixed cadence with acknowledgements held while a
 * flush that leaves them behind is in flight, an acknowledged record lands within
 * WINDOW_MS + LATE_MS (its flush starts within the window; one held lands the flush it
 * waited for and then the next tick's); a committer that sleeps the window after each
 * flush returned, acknowledging at once, lets a record appended just after a flush
 * started wait for that flush, the window and its own flush: WINDOW_MS + 2 * LATE_MS.
 * LATE_MS is what the test adds; the flush really takes that plus its write and
 * fdatasync, which on a loaded CI disk can be as long again, so the bound uses the
 * longest flush the WAL measured (de_wal_stats.flush_ns_max, at least LATE_MS), and the
 * watcher's own longest gap between looks (a starved watcher sees a record late). */
#define WINDOW_MS 20u
#define LATE_MS 100u
#define BOUND_SLACK_MS 50.0 /* scheduling on a loaded 2-core machine */
#define MAX_ACKS 8192u

struct watch {
	de_wal *w;
	double *durable_at; /* [lsn]: when durable_lsn first reached it */
	double gap_max;     /* longest time between two looks */
	_Atomic bool stop;
};

static void *watch_thread(void *arg)
{
	struct watch *x = arg;
	uint64_t seen = 0;
	double prev = now_s();
	while (!atomic_load(&x->stop)) {
		uint64_t d = de_wal_durable_lsn(x->w);
		double t = now_s();
		if (t - prev > x->gap_max)
			x->gap_max = t - prev;
		prev = t;
		for (; seen < d && seen + 1 < MAX_ACKS; seen++)
			x->durable_at[seen + 1] = t;
		usleep(200);
	}
	return NULL;
}

Test(wal, async_window_bounds_acks_while_flushes_are_late)
{
	char d[64];
	mk_dir(d, sizeof d);
	struct de_wal_options o = { .window_ms = WINDOW_MS };
	de_wal *w;
	cr_assert_eq(de_wal_open(d, &o, &w), 0);
	cr_assert_eq(de_wal_delay(w, LATE_MS), 0);
	double *acked_at = calloc(MAX_ACKS, sizeof *acked_at);
	struct watch x = { .w = w, .durable_at = calloc(MAX_ACKS, sizeof(double)) };
	cr_assert(acked_at && x.durable_at);
	pthread_t th;
	cr_assert_eq(pthread_create(&th, NULL, watch_thread, &x), 0);
	double t0 = now_s(), held_max = 0;
	uint64_t last = 0;
	unsigned held = 0;
	for (size_t i = 0; now_s() - t0 < 1.2 && last + 1 < MAX_ACKS; i++) {
		uint64_t lsn = append_one(w, i);
		cr_assert_gt(lsn, last);
		double a = now_s();
		cr_assert_eq(de_wal_ack_wait(w), 0);
		double h = now_s() - a;
		held += h > 0.5e-3 * LATE_MS;
		if (h > held_max)
			held_max = h;
		acked_at[lsn] = now_s();
		last = lsn;
		usleep(500);
	}
	cr_assert_eq(de_wal_flush(w), 0);
	double t1 = now_s();
	while (de_wal_durable_lsn(w) >= last && x.durable_at[last] == 0 && now_s() - t1 < 5)
		usleep(1000);
	atomic_store(&x.stop, true);
	pthread_join(th, NULL);
	double worst = 0;
	uint64_t worst_lsn = 0;
	for (uint64_t l = 1; l <= last; l++) {
		cr_assert_gt(x.durable_at[l], 0, "lsn %" PRIu64 " never seen durable", l);
		double dt = x.durable_at[l] - acked_at[l];
		if (dt > worst) {
			worst = dt;
			worst_lsn = l;
		}
	}
	struct de_wal_stats st;
	cr_assert_eq(de_wal_stats(w, &st), 0);
	double flush_ms = (double)st.flush_ns_max / 1e6, gap_ms = x.gap_max * 1e3;
	cr_assert_geq(flush_ms, LATE_MS, "the late flush was not late: %.1f ms", flush_ms);
	cr_log_info("late flushes (%u ms added, longest %.1f ms) with a %u ms window: %" PRIu64
		    " acks, %u held (longest %.1f ms), worst ack-to-durable %.1f ms (lsn %" PRIu64
		    "), watcher's longest gap %.1f ms", LATE_MS, flush_ms, WINDOW_MS, last, held,
		    held_max * 1e3, worst * 1e3, worst_lsn, gap_ms);
	cr_assert_lt(worst * 1e3, WINDOW_MS + flush_ms + BOUND_SLACK_MS + gap_ms,
		     "an acknowledged record took %.1f ms to land: more than the window %u ms + the "
		     "longest flush %.1f ms + slack %.0f ms + the watcher's gap %.1f ms", worst * 1e3,
		     WINDOW_MS, flush_ms, BOUND_SLACK_MS, gap_ms);
	cr_assert_gt(held, 0, "acknowledgements were never held while a flush was late");
	cr_assert_eq(de_wal_delay(w, 0), 0);
	cr_assert_eq(de_wal_close(w), 0);
	free(acked_at);
	free(x.durable_at);
	rm_dir(d);
}

Test(wal, fault_write_fails_the_wal)
{
	char d[64];
	mk_dir(d, sizeof d);
	de_wal *w;
	cr_assert_eq(de_wal_open(d, NULL, &w), 0);
	cr_assert_eq(de_wal_sync(w, append_one(w, 0)), 0);
	de_wal_fail(w, DE_FAULT_WRITE, 1);
	uint64_t lsn = append_one(w, 1);
	cr_assert_eq(lsn, 2);
	cr_assert_eq(de_wal_sync(w, lsn), -EIO);
	char why[256];
	cr_assert_eq(de_wal_failed(w, why, sizeof why), -EIO);
	cr_assert_not_null(strstr(why, "write"), "%s", why);
	cr_assert_eq(de_wal_durable_lsn(w), 1, "nothing is reported durable that is not");
	cr_assert_eq(append_one(w, 2), 0, "a failed WAL takes no appends");
	cr_assert_eq(de_wal_flush(w), -EIO);
	cr_assert_eq(de_wal_close(w), -EIO);
	struct de_wal_replay_result res;
	cr_assert_eq(de_wal_replay(d, 1, 0, NULL, NULL, quiet_log, NULL, &res), 0);
	cr_assert_eq(res.records, 1);
	rm_dir(d);
}

Test(wal, fault_fsync_fails_once_never_retried)
{
	char d[64];
	mk_dir(d, sizeof d);
	de_wal *w;
	cr_assert_eq(de_wal_open(d, NULL, &w), 0);
	cr_assert_eq(de_wal_sync(w, append_one(w, 0)), 0);
	de_wal_fail(w, DE_FAULT_FSYNC, 1);
	uint64_t lsn = append_one(w, 1);
	cr_assert_eq(de_wal_sync(w, lsn), -EIO);
	struct de_wal_stats st0, st1;
	cr_assert_eq(de_wal_stats(w, &st0), 0);
	char why[256];
	cr_assert_eq(de_wal_failed(w, why, sizeof why), -EIO);
	cr_assert_not_null(strstr(why, "fdatasync"), "%s", why);
	/* no later call submits another fsync, and lsn 2 never becomes durable */
	cr_assert_eq(de_wal_sync(w, lsn), -EIO);
	cr_assert_eq(de_wal_flush(w), -EIO);
	cr_assert_eq(de_wal_stats(w, &st1), 0);
	cr_assert_eq(st1.fsyncs, st0.fsyncs, "an fsync was retried");
	cr_assert_eq(st1.durable_lsn, 1);
	cr_assert_eq(de_wal_close(w), -EIO);
	rm_dir(d);
}

Test(wal, fault_alloc_every_allocation_of_open_and_replay)
{
	char d[64];
	mk_dir(d, sizeof d);
	de_wal *w;
	cr_assert_eq(de_wal_open(d, NULL, &w), 0);
	for (size_t i = 0; i < 5; i++)
		append_one(w, i);
	cr_assert_eq(de_wal_close(w), 0);
	int ok_at = 0;
	for (long nth = 1; nth < 40 && !ok_at; nth++) {
		de_persist_fail(DE_FAULT_ALLOC, nth);
		int err = de_wal_open(d, NULL, &w);
		long left = de_persist_fail(DE_FAULT_ALLOC, 0);
		if (left) { /* the fault did not fire: every allocation succeeded */
			cr_assert_eq(err, 0);
			ok_at = (int)nth;
			cr_assert_eq(de_wal_next_lsn(w), 6);
			cr_assert_eq(de_wal_close(w), 0);
		} else {
			cr_assert_eq(err, -ENOMEM, "allocation %ld: %d", nth, err);
		}
	}
	cr_assert_gt(ok_at, 2, "open allocates");
	/* replay: a failed allocation is -ENOMEM, never a partial success claimed as whole */
	for (long nth = 1; nth < 40; nth++) {
		struct tab t = mk_table();
		de_persist_fail(DE_FAULT_ALLOC, nth);
		struct de_wal_replay_result res;
		int err = de_wal_replay(d, 1, 0, apply_cb, t.t, quiet_log, NULL, &res);
		long left = de_persist_fail(DE_FAULT_ALLOC, 0);
		rm_table(&t);
		if (left) {
			cr_assert_eq(err, 0);
			cr_assert_eq(res.records, 5);
			break;
		}
		cr_assert_eq(err, -ENOMEM, "allocation %ld: %d", nth, err);
	}
	rm_dir(d);
}
#endif

Test(wal, tmpfs_enospc)
{
	char d[64];
	mk_dir(d, sizeof d);
	if (mount("tmpfs", d, "tmpfs", 0, "size=1m")) {
		int e = errno;
		rm_dir(d);
		cr_skip_test("cannot mount a 1 MiB tmpfs (%s): needs root / CAP_SYS_ADMIN",
			     strerror(e));
	}
	char wd[80];
	snprintf(wd, sizeof wd, "%s/wal", d);
	struct de_wal_options o = { .segment_bytes = 256 << 10, .buffer_bytes = 64 << 10 };
	de_wal *w;
	cr_assert_eq(de_wal_open(wd, &o, &w), 0);
	struct ref r = ref_new(4000);
	struct tab t = mk_table();
	uint64_t keys[64], lsn = 0, acked = 0;
	int err = 0;
	size_t rec = 0;
	for (; rec < 3999 && !err; rec++) {
		size_t idx[32];
		for (size_t k = 0; k < 32; k++)
			idx[k] = (rec * 32 + k) % 4000;
		put_keys(t.t, &r, idx, 32, rec + 1, keys);
		struct de_wal_batch b = { .table_id = 1, .type = DE_WAL_PUT, .keys = keys,
					  .n = 32, .table = t.t };
		err = de_wal_append(w, &b, &lsn);
		if (!err && rec % 8 == 7) {
			err = de_wal_sync(w, lsn);
			if (!err)
				acked = lsn;
		}
	}
	cr_assert(err == -ENOSPC || err == -EROFS, "err %d after %zu records", err, rec);
	cr_assert_eq(de_wal_failed(w, NULL, 0), -ENOSPC);
	uint64_t durable = de_wal_durable_lsn(w);
	cr_assert_geq(durable, acked);
	cr_log_info("ENOSPC after %zu records; durable lsn %" PRIu64, rec, durable);
	de_wal_close(w);
	/* replay: at least every durable record, and each replayed record equals what was
	 * written (the rows of lsn k are rec k's keys at step k) */
	struct de_wal_replay_result res;
	struct tab u = mk_table();
	cr_assert_eq(de_wal_replay(wd, 1, DE_WAL_REPLAY_TRUNCATE, apply_cb, u.t, quiet_log, NULL,
				   &res), 0);
	cr_assert_geq(res.last_lsn, durable);
	struct ref want = ref_new(4000);
	for (uint64_t l = 1; l <= res.last_lsn; l++)
		for (size_t k = 0; k < 32; k++) {
			size_t i = ((l - 1) * 32 + k) % 4000;
			want.r[i] = gen_row(i, l);
		}
	cr_assert_eq(ref_diff(u.t, &want), 0);
	free(want.r);
	free(r.r);
	rm_table(&t);
	rm_table(&u);
	umount(d);
	rm_dir(d);
}

/* ---- every byte flip and every truncation of a small log ---------------------------- */

struct rec_pos {
	uint64_t start, end; /* byte range in the segment */
};

Test(wal, every_flip_and_truncation_gives_the_exact_prefix)
{
	char d[64], c[80];
	mk_dir(d, sizeof d);
	snprintf(c, sizeof c, "%s.copy", d);
	de_wal *w;
	cr_assert_eq(de_wal_open(d, NULL, &w), 0);
	struct tab t = mk_table();
	struct ref r = ref_new(16);
	struct ref prefix[8]; /* the reference after records 0..k-1 */
	struct rec_pos pos[7];
	prefix[0] = ref_new(16);
	uint64_t keys[64], off = 64;
	for (int k = 0; k < 7; k++) {
		size_t idx[3] = { (size_t)k, (size_t)k + 3, (size_t)k + 7 };
		struct de_wal_batch b = { .table_id = 1, .keys = keys, .n = k == 4 ? 2 : 3 };
		if (k == 4) {
			erase_keys(t.t, &r, idx, 2, keys);
			b.type = DE_WAL_ERASE;
		} else {
			put_keys(t.t, &r, idx, 3, (uint64_t)k + 1, keys);
			b.type = DE_WAL_PUT;
			b.table = t.t;
		}
		cr_assert_eq(de_wal_append(w, &b, NULL), 0);
		uint64_t len = b.type == DE_WAL_PUT ? (40 + 3 * (32 + 4 * RF) + 7) / 8 * 8 : 40 + 16;
		pos[k] = (struct rec_pos){ off, off + len };
		off += len;
		prefix[k + 1] = ref_copy(&r);
	}
	cr_assert_eq(de_wal_close(w), 0);
	char seg[128], cseg[160];
	snprintf(seg, sizeof seg, "%s/wal-0000000000000001.log", d);
	snprintf(cseg, sizeof cseg, "%s/wal-0000000000000001.log", c);
	struct stat sb;
	cr_assert_eq(stat(seg, &sb), 0);
	cr_assert_eq((uint64_t)sb.st_size, off, "the layout in the spec");
	FILE *f = fopen(seg, "rb");
	unsigned char *orig = xcalloc(1, off);
	cr_assert_eq(fread(orig, 1, off, f), off);
	fclose(f);

	cr_assert_eq(mkdir(c, 0755), 0);
	for (uint64_t at = 0; at <= 2 * off; at++) {
		bool trunc = at >= off; /* flips of bytes 0..off-1, then truncations to 0..off */
		uint64_t b = trunc ? at - off : at;
		FILE *g = fopen(cseg, "wb");
		cr_assert_not_null(g);
		cr_assert_eq(fwrite(orig, 1, trunc ? b : off, g), trunc ? b : off);
		if (!trunc) {
			fseek(g, (long)b, SEEK_SET);
			fputc(orig[b] ^ 0xff, g);
		}
		fclose(g);
		/* the records whose bytes all come before the damage */
		uint64_t size = trunc ? b : off, damage = trunc ? b : b;
		int want = 0;
		while (want < 7 && pos[want].end <= damage && damage >= 64)
			want++;
		if (trunc && b == off)
			want = 7;
		struct tab u = mk_table();
		struct de_wal_replay_result res;
		cr_assert_eq(de_wal_replay(c, 1, DE_WAL_REPLAY_TRUNCATE, apply_cb, u.t, quiet_log,
					   NULL, &res), 0, "at %" PRIu64, at);
		cr_assert_eq(res.records, (uint64_t)want, "%s %" PRIu64 ": %" PRIu64 " records, want %d",
			     trunc ? "truncated to" : "flip at", b, res.records, want);
		cr_assert_eq(ref_diff(u.t, &prefix[want]), 0, "at %" PRIu64, at);
		uint64_t good_end = want ? pos[want - 1].end : damage >= 64 ? 64 : 0;
		cr_assert_eq(res.bytes_dropped, size > good_end ? size - good_end : 0,
			     "at %" PRIu64 " dropped %" PRIu64, at, res.bytes_dropped);
		cr_assert((res.bytes_dropped == 0) == (res.problem == NULL) || size <= 64,
			  "at %" PRIu64, at);
		if (!trunc)
			cr_assert_geq(res.records_dropped, 1, "at %" PRIu64, at);
		/* the tail is gone: a second replay is clean and gives the same prefix */
		rm_table(&u);
		u = mk_table();
		cr_assert_eq(de_wal_replay(c, 1, 0, apply_cb, u.t, quiet_log, NULL, &res), 0);
		cr_assert_eq(res.records, (uint64_t)want);
		cr_assert_eq(res.bytes_dropped, 0, "at %" PRIu64, at);
		cr_assert_eq(ref_diff(u.t, &prefix[want]), 0, "at %" PRIu64, at);
		rm_table(&u);
	}
	/* the log continues after a truncation: open appends lsn want + 1 */
	FILE *g = fopen(cseg, "wb");
	cr_assert_eq(fwrite(orig, 1, pos[5].end - 3, g), pos[5].end - 3);
	fclose(g);
	cr_assert_eq(de_wal_open(c, NULL, &w), 0);
	cr_assert_eq(de_wal_next_lsn(w), 6);
	cr_assert_eq(de_wal_close(w), 0);
	for (int k = 0; k < 8; k++)
		free(prefix[k].r);
	free(r.r);
	free(orig);
	rm_table(&t);
	rm_dir(c);
	rm_dir(d);
}

/* ---- LSNs never go back: gaps at a segment start, damage no table needs ------------- */

/* one PUT of key_of(i) with explicit rows; its LSN */
static uint64_t put_one(de_wal *w, size_t i)
{
	uint64_t key = key_of(i), lsn = 0;
	float row[RF] = { (float)i };
	struct de_row_meta m = { .flags = 1, .last_step = i };
	struct de_wal_batch b = { .table_id = 1, .type = DE_WAL_PUT, .keys = &key, .n = 1,
				  .rows = row, .meta = &m, .row_floats = RF };
	cr_assert_eq(de_wal_append(w, &b, &lsn), 0);
	return lsn;
}

/* byte offset of record k (0-based) of a segment of put_one records */
static long rec_off(int k)
{
	return 64 + (long)k * (long)((40 + 32 + 4 * RF + 7) / 8 * 8);
}

static void seg_path(char *out, size_t cap, const char *d, uint64_t lsn)
{
	snprintf(out, cap, "%s/wal-%016" PRIx64 ".log", d, lsn);
}

static long file_size(const char *path)
{
	struct stat sb;
	cr_assert_eq(stat(path, &sb), 0, "%s", path);
	return (long)sb.st_size;
}

static void xor_byte(const char *path, long off, unsigned char x)
{
	FILE *f = fopen(path, "r+b");
	cr_assert_not_null(f, "%s", path);
	fseek(f, off, SEEK_SET);
	int c = fgetc(f);
	fseek(f, off, SEEK_SET);
	fputc(c ^ x, f);
	fclose(f);
}

static int lsns_cb(void *ctx, const struct de_wal_record *r)
{
	uint64_t *v = ctx; /* v[0]: count, then the LSNs */
	v[1 + v[0]++] = r->lsn;
	return 0;
}

Test(wal, gap_at_a_segment_start)
{
	char d[64], p1[128], p2[128];
	mk_dir(d, sizeof d);
	de_wal *w;
	cr_assert_eq(de_wal_open(d, NULL, &w), 0);
	for (size_t i = 0; i < 3; i++)
		cr_assert_eq(put_one(w, i), i + 1);
	cr_assert_eq(de_wal_close(w), 0);
	/* the caller names LSN 100 (a table's manifest LSN): the log continues there */
	cr_assert_eq(de_wal_open(d, &(struct de_wal_options){ .start_lsn = 100 }, &w), 0);
	cr_assert_eq(de_wal_next_lsn(w), 100, "LSNs never go back below start_lsn");
	cr_assert_eq(put_one(w, 10), 100);
	cr_assert_eq(put_one(w, 11), 101);
	cr_assert_eq(de_wal_close(w), 0);
	uint64_t got[16] = { 0 };
	struct de_wal_replay_result res;
	cr_assert_eq(de_wal_replay(d, 1, 0, lsns_cb, got, quiet_log, NULL, &res), 0);
	cr_assert_null(res.problem, "%s", res.problem);
	cr_assert_eq(got[0], 5);
	cr_assert_eq(got[3], 3);
	cr_assert_eq(got[4], 100);
	cr_assert_eq(got[5], 101);
	cr_assert_eq(res.last_lsn, 101);
	cr_assert_eq(res.segments, 2);
	/* from an LSN inside the gap: nothing missing */
	cr_assert_eq(de_wal_replay(d, 50, 0, NULL, NULL, quiet_log, NULL, &res), 0);
	cr_assert_eq(res.records, 2);
	cr_assert_null(res.problem);
	/* reopened without start_lsn: after the last record, no new gap */
	cr_assert_eq(de_wal_open(d, NULL, &w), 0);
	cr_assert_eq(de_wal_next_lsn(w), 102);
	cr_assert_eq(de_wal_close(w), 0);

	/* a gap the next segment does not declare (the first segment lost its last record)
	 * is damage: needed records lost when replay starts at or below it, skipped above */
	seg_path(p1, sizeof p1, d, 1);
	seg_path(p2, sizeof p2, d, 100);
	cr_assert_eq(truncate(p1, rec_off(2)), 0);
	cr_assert_eq(de_wal_replay(d, 1, 0, NULL, NULL, quiet_log, NULL, &res), 0);
	cr_assert_eq(res.records, 2);
	cr_assert_str_eq(res.problem, "segment does not continue the previous one");
	cr_assert_eq(de_wal_replay(d, 4, 0, NULL, NULL, quiet_log, NULL, &res), 0);
	cr_assert_eq(res.records, 2, "LSN 3 is below every start: the records after it count");
	cr_assert_null(res.problem);
	cr_assert_eq(res.unneeded_records, 1);

	/* a gap inside a segment stays an error: LSN 101 -> 103, its CRC made right */
	char d2[64], q[128];
	mk_dir(d2, sizeof d2);
	cr_assert_eq(de_wal_open(d2, NULL, &w), 0);
	for (size_t i = 0; i < 4; i++)
		put_one(w, i);
	cr_assert_eq(de_wal_close(w), 0);
	seg_path(q, sizeof q, d2, 1);
	FILE *f = fopen(q, "r+b");
	unsigned char r[40 + 32 + 4 * RF + 7];
	size_t len = (40 + 32 + 4 * RF + 7) / 8 * 8;
	fseek(f, rec_off(2), SEEK_SET);
	cr_assert_eq(fread(r, 1, len, f), len);
	uint64_t lsn = 5;
	memcpy(r + 8, &lsn, 8);
	uint32_t crc = de_crc32c(de_crc32c(0, r, 32), r + 36, len - 36);
	memcpy(r + 32, &crc, 4);
	fseek(f, rec_off(2), SEEK_SET);
	cr_assert_eq(fwrite(r, 1, len, f), len);
	fclose(f);
	cr_assert_eq(de_wal_replay(d2, 1, 0, NULL, NULL, quiet_log, NULL, &res), 0);
	cr_assert_eq(res.records, 2);
	cr_assert_str_eq(res.problem, "record LSN out of sequence");
	rm_dir(d2);
	rm_dir(d);
}

/* A fresh log directory d holding n records (put_one 0..n-1) in one segment, path p. */
static void log_of(char *d, size_t dcap, size_t n, char *p, size_t pcap)
{
	mk_dir(d, dcap);
	de_wal *w;
	cr_assert_eq(de_wal_open(d, NULL, &w), 0);
	for (size_t i = 0; i < n; i++)
		put_one(w, i);
	cr_assert_eq(de_wal_close(w), 0);
	seg_path(p, pcap, d, 1);
}

Test(wal, bad_unneeded_record_keeps_the_needed_after_it)
{
	char d[64], p[128];
	de_wal *w;
	log_of(d, sizeof d, 10, p, sizeof p);
	long size = file_size(p);
	xor_byte(p, rec_off(2) + 48, 0x04); /* a bit in record 3's key */
	/* replay from 6 (every table's start): record 3 is not needed; 6..10 are read */
	uint64_t got[16] = { 0 };
	struct de_wal_replay_result res;
	cr_assert_eq(de_wal_replay(d, 6, DE_WAL_REPLAY_TRUNCATE, lsns_cb, got, quiet_log, NULL,
				   &res), 0);
	cr_assert_null(res.problem, "%s", res.problem);
	cr_assert_eq(got[0], 5);
	cr_assert_eq(got[1], 6);
	cr_assert_eq(got[5], 10);
	cr_assert_eq(res.last_lsn, 10);
	cr_assert_eq(res.skipped, 4, "1, 2, 4, 5: intact, below 6");
	cr_assert_eq(res.unneeded_records, 1);
	cr_assert_eq(res.unneeded_bytes, (uint64_t)(rec_off(3) - rec_off(2)));
	cr_assert_str_eq(res.unneeded_problem, "record checksum");
	cr_assert_eq(res.bytes_dropped, 0);
	cr_assert_eq(file_size(p), size, "nothing is cut");
	/* from 3 the damaged record is needed: replay stops there, as a torn tail */
	cr_assert_eq(de_wal_replay(d, 3, 0, NULL, NULL, quiet_log, NULL, &res), 0);
	cr_assert_eq(res.records, 0);
	cr_assert_eq(res.last_lsn, 2);
	cr_assert_str_eq(res.problem, "record checksum");
	/* cut there, the next LSN is still above every intact record that was in the log */
	cr_assert_eq(de_wal_replay(d, 1, DE_WAL_REPLAY_TRUNCATE, NULL, NULL, quiet_log, NULL,
				   &res), 0);
	cr_assert_eq(res.records, 2);
	cr_assert_eq(res.lsn_floor, 11);
	cr_assert_eq(file_size(p), rec_off(2));
	/* as recovery does: next_lsn (the floor) given to the open, which leaves a gap */
	cr_assert_eq(de_wal_open(d, &(struct de_wal_options){ .start_lsn = res.lsn_floor }, &w),
		     0);
	cr_assert_eq(de_wal_next_lsn(w), 11);
	cr_assert_eq(put_one(w, 20), 11);
	cr_assert_eq(de_wal_close(w), 0);
	memset(got, 0, sizeof got);
	cr_assert_eq(de_wal_replay(d, 1, 0, lsns_cb, got, quiet_log, NULL, &res), 0);
	cr_assert_null(res.problem, "%s", res.problem);
	cr_assert_eq(got[0], 3);
	cr_assert_eq(got[3], 11);
	rm_dir(d);
}

/* Damage that replay skips (an intact record with the expected LSN follows it), then that
 * record fails after all (key 0 under a right CRC) with nothing intact after it: the torn
 * tail starts at the skipped damage, not at the failing record, so the cut log replays
 * clean. (A fuzz_wal find: cutting at the failing record left the damage as the tail.) */
Test(wal, torn_tail_right_after_skipped_damage_takes_the_damage_with_it)
{
	char d[64], p[128];
	de_wal *w;
	log_of(d, sizeof d, 3, p, sizeof p);
	size_t len = (size_t)(rec_off(3) - rec_off(2));
	unsigned char *r3 = xcalloc(1, len);
	FILE *f = fopen(p, "r+b");
	cr_assert_not_null(f);
	fseek(f, rec_off(2), SEEK_SET);
	cr_assert_eq(fread(r3, 1, len, f), len);
	memset(r3 + 40, 0, 8); /* its key */
	uint32_t crc = de_crc32c(de_crc32c(0, r3, 32), r3 + 36, len - 36);
	memcpy(r3 + 32, &crc, 4);
	unsigned char junk[64];
	memset(junk, 0xab, sizeof junk);
	fseek(f, rec_off(2), SEEK_SET);
	cr_assert_eq(fwrite(junk, 1, sizeof junk, f), sizeof junk);
	cr_assert_eq(fwrite(r3, 1, len, f), len);
	fclose(f);
	free(r3);

	struct de_wal_replay_result res;
	cr_assert_eq(de_wal_replay(d, 1, 0, NULL, NULL, quiet_log, NULL, &res), 0);
	cr_assert_eq(res.records, 2);
	cr_assert_eq(res.last_lsn, 2);
	cr_assert_str_eq(res.problem, "record with key 0");
	cr_assert_eq(res.bytes_dropped, sizeof junk + len, "the junk belongs to the tail");
	cr_assert_eq(res.unneeded_bytes, 0);
	cr_assert_eq(de_wal_replay(d, 1, DE_WAL_REPLAY_TRUNCATE, NULL, NULL, quiet_log, NULL,
				   &res), 0);
	cr_assert_eq(file_size(p), rec_off(2), "cut after the last intact record");
	uint64_t floor = res.lsn_floor;
	cr_assert_geq(floor, 4, "LSN 3 (named by the dropped record) is not used again");
	cr_assert_eq(de_wal_replay(d, 1, 0, NULL, NULL, quiet_log, NULL, &res), 0);
	cr_assert_null(res.problem, "%s", res.problem);
	cr_assert_eq(res.records, 2);
	cr_assert_eq(res.bytes_dropped, 0);
	/* as recovery does: the floor given to the open; every record reads back */
	cr_assert_eq(de_wal_open(d, &(struct de_wal_options){ .start_lsn = floor }, &w), 0);
	uint64_t next = de_wal_next_lsn(w);
	cr_assert_eq(next, floor);
	cr_assert_eq(put_one(w, 9), next);
	cr_assert_eq(de_wal_close(w), 0);
	uint64_t got[16] = { 0 };
	cr_assert_eq(de_wal_replay(d, 1, 0, lsns_cb, got, quiet_log, NULL, &res), 0);
	cr_assert_null(res.problem, "%s", res.problem);
	cr_assert_eq(got[0], 3);
	cr_assert_eq(got[3], next);
	rm_dir(d);
}
