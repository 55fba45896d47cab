/*
 * fuzz_wal.c — libFuzzer target for the WAL reader (uring/wal.c): de_wal_replay of one
 * segment file, then a truncating replay, then a clean replay of what is left.
 *
 * Input: 1 byte of flags, then the segment's bytes (wal-0000000000000001.log in a fresh
 * directory). Random bytes rarely pass CRC32C, so flag bit 0 asks for the segment header's
 * CRC to be recomputed and bit 1 for every record's CRC (walking records by their length
 * field, the layout at the top of uring/wal.c).
 * Checks beyond "no crash, no leak": the callback sees consecutive LSNs from 1, keys != 0
 * and counts that match the record; records + bytes_dropped add up (what the replay took
 * plus what it dropped is the file); after the truncating replay a second one is clean
 * and returns the same records.
 * Build and run: tools/fuzz.sh (seeds: tests/fuzz/corpus_wal/, written by
 * tests/fuzz/make_persist_seeds.c via tools/fuzz.sh).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "de_uring.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#include "fuzz_check.h"

static char dir[64];

static void quiet(void *ctx, const char *line)
{
	(void)ctx;
	(void)line;
}

struct seen {
	uint64_t next, n;
};

static int on_record(void *ctx, const struct de_wal_record *r)
{
	struct seen *s = ctx;
	CHECK(r->lsn == s->next);
	CHECK(r->n >= 1 && r->keys);
	CHECK(r->type == DE_WAL_PUT || r->type == DE_WAL_ERASE);
	for (uint32_t i = 0; i < r->n; i++)
		CHECK(r->keys[i] != 0);
	if (r->type == DE_WAL_PUT) {
		CHECK(r->meta && r->rows && r->row_floats);
		volatile float sink = r->rows[(size_t)r->n * r->row_floats - 1];
		(void)sink;
	}
	s->next++;
	s->n++;
	return 0;
}

static void fix(uint8_t *f, size_t n, unsigned flags)
{
	if ((flags & 1) && n >= 64) {
		uint32_t c = de_crc32c(0, f, 60);
		memcpy(f + 60, &c, 4);
	}
	if (flags & 2) {
		for (size_t off = 64; off + 40 <= n;) {
			uint32_t len;
			memcpy(&len, f + off + 4, 4);
			if (len < 40 || len % 8 || len > n - off)
				break;
			uint32_t c = de_crc32c(0, f + off, 32);
			c = de_crc32c(c, f + off + 36, len - 36);
			memcpy(f + off + 32, &c, 4);
			off += len;
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > (1u << 20))
		return 0;
	if (!dir[0]) {
		snprintf(dir, sizeof dir, "/tmp/fuzz_wal_XXXXXX");
		CHECK(mkdtemp(dir));
	}
	size_t n = size - 1;
	uint8_t *f = malloc(n ? n : 1);
	CHECK(f);
	memcpy(f, data + 1, n);
	fix(f, n, data[0]);
	char path[128];
	snprintf(path, sizeof path, "%s/wal-0000000000000001.log", dir);
	FILE *fp = fopen(path, "wb");
	CHECK(fp);
	CHECK(fwrite(f, 1, n, fp) == n);
	fclose(fp);
	free(f);

	struct seen s = { 1, 0 };
	struct de_wal_replay_result r1, r2;
	CHECK(de_wal_replay(dir, 1, 0, on_record, &s, quiet, NULL, &r1) == 0);
	CHECK(r1.records == s.n && r1.last_lsn == s.n);
	CHECK(r1.bytes_dropped <= n);
	CHECK((r1.problem == NULL) == (r1.bytes_dropped == 0) || n <= 64);
	s = (struct seen){ 1, 0 };
	CHECK(de_wal_replay(dir, 1, DE_WAL_REPLAY_TRUNCATE, on_record, &s, quiet, NULL, &r2) == 0);
	CHECK(r2.records == r1.records && r2.bytes_dropped == r1.bytes_dropped);
	s = (struct seen){ 1, 0 };
	CHECK(de_wal_replay(dir, 1, 0, on_record, &s, quiet, NULL, &r2) == 0);
	CHECK(r2.records == r1.records && r2.bytes_dropped == 0);
	struct stat sb;
	if (stat(path, &sb) == 0)
		CHECK((uint64_t)sb.st_size == n - r1.bytes_dropped);
	else
		CHECK(r1.records == 0);
	unlink(path);
	return 0;
}
