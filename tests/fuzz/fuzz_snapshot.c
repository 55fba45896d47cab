/*
 * fuzz_snapshot.c — libFuzzer target for the snapshot reader (uring/snapshot.c):
 * de_snapshot_check, then de_snapshot_load of the file as a one-file chain into a table
 * with the file's own config.
 *
 * Input: 1 byte of flags, then the file (snap-00000001-0000000000000001.dsnp in a fresh
 * directory). Flag bit 0: the header CRC (bytes 124..127) is recomputed; bit 1: every
 * complete record's CRC and the trailer's (records_crc, tombstones, crc) are recomputed
 * for the record size the header says (layout at the top of uring/snapshot.c).
 * Checks: check and load agree; a load that fails leaves the table empty (no partial
 * load); an accepted file's rows are all in the table (rows == records - tombstones,
 * keys <= rows).
 * Build and run: tools/fuzz.sh (seeds: tests/fuzz/corpus_snapshot/).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "de_shm.h"
#include "de_uring.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#include "fuzz_check.h"

static char dir[64];

static void fix(uint8_t *f, size_t n, unsigned flags)
{
	if (n < 128)
		return;
	if (flags & 2) {
		uint32_t rb;
		memcpy(&rb, f + 52, 4);
		if (rb >= 40 && rb <= (1u << 20)) {
			uint64_t i = 0;
			uint32_t all = 0, tombs = 0;
			for (size_t off = 128; off + rb <= n; off += rb, i++) {
				uint32_t c = de_crc32c(0, &i, 8);
				c = de_crc32c(c, f + off, 32);
				c = de_crc32c(c, f + off + 36, rb - 36);
				memcpy(f + off + 32, &c, 4);
				all = de_crc32c(all, &c, 4);
				uint32_t fl;
				memcpy(&fl, f + off + 20, 4);
				tombs += fl == 2;
			}
			size_t t = 128 + i * (size_t)rb;
			if (t + 32 <= n) {
				memcpy(f + t + 16, &all, 4);
				memcpy(f + t + 20, &tombs, 4);
				uint32_t c = de_crc32c(0, f + t, 28);
				memcpy(f + t + 28, &c, 4);
			}
		}
	}
	if (flags & 1) {
		uint32_t c = de_crc32c(0, f, 124);
		memcpy(f + 124, &c, 4);
	}
}

static uint64_t nkeys(de_table *t)
{
	struct de_table_stats st;
	CHECK(de_table_stats(t, &st) == 0);
	return st.keys;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > (1u << 20))
		return 0;
	if (!dir[0]) {
		snprintf(dir, sizeof dir, "/tmp/fuzz_snapshot_XXXXXX");
		CHECK(mkdtemp(dir));
	}
	size_t n = size - 1;
	uint8_t *f = malloc(n ? n : 1);
	CHECK(f);
	memcpy(f, data + 1, n);
	fix(f, n, data[0]);
	char path[128];
	snprintf(path, sizeof path, "%s/snap-00000001-0000000000000001.dsnp", dir);
	FILE *fp = fopen(path, "wb");
	CHECK(fp);
	CHECK(fwrite(f, 1, n, fp) == n);
	fclose(fp);
	free(f);

	struct de_snapshot_info info;
	int rc = de_snapshot_check(path, &info);
	CHECK(rc == 0 || rc == -EBADMSG || rc == -EPROTO);
	CHECK((rc == 0) == (info.problem == NULL));
	if (info.config.dim && info.config.dim * (1 + info.config.nslots) <= 4096) {
		struct de_arena_config ac = { .reserve_bytes = 256u << 20, .segment_bytes = 4 << 20,
					      .max_segment_bytes = 16 << 20,
					      .pages = DE_PAGES_SMALL, .numa_node = DE_NUMA_NONE };
		de_arena *a = NULL;
		de_table *t = NULL;
		CHECK(de_arena_create(&ac, &a) == 0);
		CHECK(de_table_open(a, &info.config, &t) == 0);
		uint64_t seq = 1;
		struct de_snapshot_load_report lr;
		int rl = de_snapshot_load(t, dir, 1, &seq, 1, &lr);
		if (rc == 0 && (info.table_id != 1 || info.seq != 1 ||
				info.kind != DE_SNAPSHOT_FULL)) {
			CHECK(rl == -EBADMSG); /* intact, but not this chain's file */
		} else {
			CHECK(rl == rc);
		}
		if (rl) {
			CHECK(nkeys(t) == 0);
		} else {
			CHECK(lr.files == 1 && lr.rows == info.records - info.tombstones);
			CHECK(nkeys(t) <= lr.rows);
		}
		de_table_close(t);
		de_arena_destroy(a);
	}
	unlink(path);
	return 0;
}
