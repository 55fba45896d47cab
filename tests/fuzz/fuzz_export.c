/*
 * fuzz_export.c — libFuzzer target for the export readers (uring/export.c): de_export_check,
 * then a strict and a salvage de_import into a small table with the file's own config.
 *
 * Input: 1 byte of flags, then the file. Random bytes rarely get past the CRC32Cs, so the
 * flags let the fuzzer ask for them to be fixed up before the file is read: bit 0 — the
 * header CRC (bytes 124..127) is recomputed; bit 1 — every complete record's CRC, and a
 * trailer CRC, are recomputed for the record size the header says (the layout at the top
 * of uring/export.c). The file goes to a regular file in /dev/shm (or /tmp), rewritten for
 * each input (import opens O_NOFOLLOW, so /proc/self/fd/N, a symlink, is refused).
 *
 * Beyond "no crash, no leak, no sanitizer report", it checks what a caller relies on:
 * check and strict import agree; a strict import that fails wrote nothing; salvage
 * imports exactly the prefix the check calls valid, or fails like strict when the header
 * is bad; the table never holds more keys than records imported.
 * Build and run: tools/fuzz.sh (seeds: tests/fuzz/corpus_export/).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "de_shm.h"
#include "de_uring.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#include "fuzz_check.h"

static uint32_t rd32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}

static void fix_crcs(uint8_t *f, size_t n, unsigned flags)
{
	if (n < 128)
		return;
	if (flags & 2) {
		uint32_t rb = rd32(f + 60);
		if (rb >= 40 && rb <= (1u << 20)) {
			uint64_t i = 0;
			uint32_t all = 0;
			for (size_t off = 128; off + rb <= n; off += rb, i++) {
				uint32_t c = de_crc32c(0, &i, 8);
				c = de_crc32c(c, f + off, 32);
				c = de_crc32c(c, f + off + 36, rb - 36);
				memcpy(f + off + 32, &c, 4);
				all = de_crc32c(all, &c, 4);
			}
			size_t t = 128 + i * (size_t)rb;
			if (t + 32 <= n) {
				memcpy(f + t + 16, &all, 4);
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

static char path[64];

static void remove_input(void)
{
	unlink(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > (1u << 20))
		return 0;
	unsigned flags = data[0];
	size_t n = size - 1;
	uint8_t *f = malloc(n ? n : 1);
	CHECK(f);
	memcpy(f, data + 1, n);
	fix_crcs(f, n, flags);
	if (!path[0]) {
		const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
		snprintf(path, sizeof path, "%s/fuzz_export.%d", dir, (int)getpid());
		atexit(remove_input);
	}
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	CHECK(fd >= 0);
	CHECK(write(fd, f, n) == (ssize_t)n);
	free(f);

	struct de_export_info info;
	int rc = de_export_check(path, &info);
	CHECK(rc == 0 || rc == -EBADMSG || rc == -EPROTO);
	CHECK((rc == 0) == (info.problem == NULL));
	CHECK(info.valid_records <= info.records);
	CHECK(rc != 0 || info.valid_records == info.records);
	bool header_ok = info.record_bytes != 0;
	if (header_ok && info.config.dim * (1 + info.config.nslots) <= 4096) {
		struct de_arena_config ac = { .reserve_bytes = 256u << 20, .segment_bytes = 4 << 20,
					      .max_segment_bytes = 16 << 20,
					      .pages = DE_PAGES_SMALL, .numa_node = DE_NUMA_NONE };
		de_arena *a = NULL;
		de_table *t = NULL;
		CHECK(de_arena_create(&ac, &a) == 0);
		CHECK(de_table_open(a, &info.config, &t) == 0); /* the check validated it */
		struct de_import_report rep;
		int rs = de_import(t, path, 0, NULL, NULL, &rep);
		CHECK(rs == rc);
		if (rs) {
			CHECK(rep.imported == 0 && nkeys(t) == 0);
		} else {
			CHECK(rep.imported == info.records && rep.problem == NULL);
			CHECK(nkeys(t) <= rep.imported); /* a crafted file may repeat a key */
		}
		de_table_close(t);
		de_arena_destroy(a);
		CHECK(de_arena_create(&ac, &a) == 0);
		CHECK(de_table_open(a, &info.config, &t) == 0);
		int rv = de_import(t, path, DE_IMPORT_SALVAGE, NULL, NULL, &rep);
		CHECK(rv == 0);
		CHECK(rep.imported == info.valid_records);
		CHECK(rep.dropped == info.records - rep.imported);
		CHECK((rep.problem == NULL) == (rc == 0));
		CHECK(nkeys(t) <= rep.imported);
		de_table_close(t);
		de_arena_destroy(a);
	} else if (!header_ok) {
		/* no header: salvage fails like the check, and nothing needs a table to say so */
		struct de_table_config c = { .dim = 1, .seg_buckets = 64 };
		struct de_arena_config ac = { .segment_bytes = 2 << 20, .reserve_bytes = 64u << 20,
					      .pages = DE_PAGES_SMALL, .numa_node = DE_NUMA_NONE };
		de_arena *a = NULL;
		de_table *t = NULL;
		CHECK(de_arena_create(&ac, &a) == 0);
		CHECK(de_table_open(a, &c, &t) == 0);
		struct de_import_report rep;
		CHECK(de_import(t, path, DE_IMPORT_SALVAGE, NULL, NULL, &rep) == rc);
		CHECK(rep.imported == 0 && nkeys(t) == 0);
		de_table_close(t);
		de_arena_destroy(a);
	}
	close(fd);
	return 0;
}
