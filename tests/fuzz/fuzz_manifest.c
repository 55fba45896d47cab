/*
 * fuzz_manifest.c — libFuzzer target for the manifest reader (uring/manifest.c):
 * de_manifest_decode on the input, and when it is accepted, write + read round trip.
 *
 * Input: 1 byte of flags, then the file. Flag bit 0: the trailing CRC32C is recomputed
 * (layout at the top of uring/manifest.c). Checks: the result is 0 / -EBADMSG / -EPROTO
 * with a problem text exactly when it is not 0; an accepted manifest obeys every rule
 * (table ids increasing, chains <= DE_MANIFEST_MAX_CHAIN with increasing seqs,
 * wal_lsn >= 1) and survives de_manifest_write / de_manifest_read unchanged.
 * Build and run: tools/fuzz.sh (seeds: tests/fuzz/corpus_manifest/).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "de_uring.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#include "fuzz_check.h"

static char dir[64];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > (1u << 20))
		return 0;
	if (!dir[0]) {
		snprintf(dir, sizeof dir, "/tmp/fuzz_manifest_XXXXXX");
		CHECK(mkdtemp(dir));
	}
	size_t n = size - 1;
	uint8_t *f = malloc(n ? n : 1);
	CHECK(f);
	memcpy(f, data + 1, n);
	if ((data[0] & 1) && n >= 4) {
		uint32_t c = de_crc32c(0, f, n - 4);
		memcpy(f + n - 4, &c, 4);
	}
	struct de_manifest *m = calloc(1, sizeof *m), *g = calloc(1, sizeof *g);
	CHECK(m && g);
	const char *problem = NULL;
	int rc = de_manifest_decode(f, n, m, &problem);
	CHECK(rc == 0 || rc == -EBADMSG || rc == -EPROTO);
	CHECK((rc == 0) == (problem == NULL));
	if (rc == 0) {
		CHECK(m->ntables <= DE_MANIFEST_MAX_TABLES);
		for (uint32_t i = 0; i < m->ntables; i++) {
			const struct de_manifest_table *t = &m->tables[i];
			CHECK(!i || t->table_id > m->tables[i - 1].table_id);
			CHECK(t->nsnaps <= DE_MANIFEST_MAX_CHAIN && t->wal_lsn >= 1);
			for (uint32_t j = 0; j < t->nsnaps; j++)
				CHECK(t->seqs[j] && (!j || t->seqs[j] > t->seqs[j - 1]));
		}
		CHECK(de_manifest_write(dir, m) == 0);
		CHECK(de_manifest_read(dir, g, &problem) == 0);
		CHECK(memcmp(m, g, sizeof *m) == 0);
	}
	free(f);
	free(m);
	free(g);
	return 0;
}
