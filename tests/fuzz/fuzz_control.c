/*
 * fuzz_control.c — libFuzzer target for srv_check_msg (src/server/validate_msg.c): the
 * check of every control packet a client sends (framing, order, version, an OPEN's name
 * and table config) before dynembd reads its body. It links the validators alone.
 *
 * Input: 1 byte of flags (bit 0: the packet came with MSG_TRUNC; bit 1: the connection
 * said HELLO already), then the packet (at most DE_MSG_MAX bytes, as the daemon's receive
 * buffer). The packet is copied into a buffer of exactly its size, so ASan sees any read
 * past it. Beyond "no crash, no sanitizer report", the target checks what a caller relies
 * on: a 0 means a request of the right type, length, order and version, a good name and a
 * normalized config; every error has a reply text; the result is deterministic.
 * Seeds: tests/fuzz/corpus_control/ (tests/fuzz/make_seeds.py). Build and run: tools/fuzz.sh.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "validate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#include "fuzz_check.h"

/* What a normalized config from srv_wire_config_normalize must satisfy. */
static void check_config(const struct de_wire_table_config *c)
{
	for (unsigned i = 0; i < 6; i++)
		CHECK(c->reserved[i] == 0);
	CHECK(c->dim >= 1 && c->dim <= DE_MAX_DIM);
	CHECK(c->nslots <= DE_MAX_SLOTS);
	CHECK(c->key_type == DE_KEYS_INT64 || c->key_type == DE_KEYS_STRING);
	CHECK(c->seg_buckets >= 64 && c->seg_buckets <= 65536 &&
	      !(c->seg_buckets & (c->seg_buckets - 1)));
	CHECK(isfinite(c->init_a) && isfinite(c->init_b) && isfinite(c->slot_init));
	CHECK(c->init <= 3);
	/* normalizing twice changes nothing */
	struct de_wire_table_config again = *c;
	char msg[240];
	CHECK(srv_wire_config_normalize(&again, msg, sizeof msg) == 0);
	CHECK(memcmp(&again, c, sizeof again) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	bool trunc = data[0] & 1, hello_done = data[0] & 2;
	size_t n = size - 1;
	if (n > DE_MSG_MAX)
		n = DE_MSG_MAX;
	uint8_t *pkt = malloc(n ? n : 1);
	CHECK(pkt);
	memcpy(pkt, data + 1, n);

	union srv_msg m, m2;
	char msg[240], msg2[240];
	memset(msg, 0x5a, sizeof msg);
	int r = srv_check_msg(pkt, n, trunc, hello_done, &m, msg, sizeof msg);
	CHECK(r == 0 || r == -EBADMSG || r == -EPROTO || r == -EINVAL);
	if (r) /* an error always comes with a reply text */
		CHECK(memchr(msg, 0, sizeof msg) && msg[0]);

	struct de_msg_hdr h = { 0 };
	if (n >= sizeof h)
		memcpy(&h, pkt, sizeof h);
	CHECK(memcmp(&m.h, &h, sizeof h) == 0);
	if (r != -EBADMSG) { /* framing was good */
		CHECK(!trunc && n >= sizeof h && h.magic == DE_MSG_MAGIC && h.len == n);
		CHECK(srv_request_len(h.type) == n ||
		      (h.type == DE_MSG_DROP && n == DE_MSG_DROP_V0_LEN)); /* DROP without flags */
	}
	if (r == 0 && h.type == DE_MSG_DROP)
		CHECK(!(m.drop.flags & ~DE_DROP_FORCE) && !m.drop.pad);
	if (r == 0 || r == -EINVAL) {
		CHECK(hello_done == (h.type != DE_MSG_HELLO));
		CHECK(h.type == DE_MSG_HELLO || h.version == DE_PROTO_VERSION);
	}
	if (r == -EINVAL)
		CHECK(h.type == DE_MSG_OPEN || h.type == DE_MSG_SNAPSHOT || h.type == DE_MSG_EXPORT ||
		      h.type == DE_MSG_IMPORT || h.type == DE_MSG_DROP || h.type == DE_MSG_TABLES ||
		      h.type == DE_MSG_STATS_BY_NAME || h.type == DE_MSG_EVICT ||
		      h.type == DE_MSG_LOG_LEVEL || h.type == DE_MSG_OPSTATS ||
		      h.type == DE_MSG_SERVE_LOAD || h.type == DE_MSG_SERVE_OPEN);
	if (r == 0 && h.type == DE_MSG_SERVE_LOAD) {
		const char *p = m.serve_load.path;
		size_t len = strnlen(m.serve_load.name, DE_NAME_MAX);
		CHECK(len >= 1 && len < DE_NAME_MAX);
		CHECK(!(m.serve_load.flags & ~DE_SERVE_MISS_INIT) && !m.serve_load.pad);
		CHECK(memchr(p, 0, DE_PATH_MAX) && p[0] == '/' && !strstr(p, "/../"));
	}
	if (r == 0 && h.type == DE_MSG_SERVE_OPEN) {
		size_t len = strnlen(m.serve_open.name, DE_NAME_MAX);
		CHECK(len >= 1 && len < DE_NAME_MAX);
		CHECK(!m.serve_open.pad[0] && !m.serve_open.pad[1] && !m.serve_open.pad[2]);
	}
	if (r == 0 && (h.type == DE_MSG_STATS_BY_NAME || h.type == DE_MSG_EVICT)) {
		size_t len = strnlen(m.by_name.name, DE_NAME_MAX);
		CHECK(len >= 1 && len < DE_NAME_MAX);
	}
	if (r == 0 && h.type == DE_MSG_LOG_LEVEL)
		CHECK(m.log_level.level <= DE_LOG_LEVEL_MAX && !m.log_level.pad);
	if (r == 0 && (h.type == DE_MSG_TABLES || h.type == DE_MSG_OPSTATS))
		CHECK(!m.tables.pad); /* OPSTATS shares TABLES' layout */
	if (r == 0 && (h.type == DE_MSG_EXPORT || h.type == DE_MSG_IMPORT)) {
		/* srv_check_persist_msg's rule: an absolute, NUL-terminated path */
		const char *p = h.type == DE_MSG_EXPORT ? m.exp.path : m.imp.path;
		CHECK(memchr(p, 0, DE_PATH_MAX) && p[0] == '/' && !strstr(p, "/../"));
	}
	if (r == 0) {
		if (h.type == DE_MSG_OPEN) {
			const struct de_msg_open *o = &m.open;
			size_t len = strnlen(o->name, DE_NAME_MAX);
			CHECK(len >= 1 && len < DE_NAME_MAX);
			for (size_t i = 0; i < len; i++)
				CHECK((unsigned char)o->name[i] >= 0x20 && o->name[i] != 0x7f);
			CHECK(memcmp(o, pkt, offsetof(struct de_msg_open, cfg)) == 0);
			check_config(&o->cfg);
		} else {
			CHECK(memcmp(&m, pkt, n) == 0); /* the body is the packet, untouched */
		}
	}

	/* deterministic: the same bytes give the same answer */
	int r2 = srv_check_msg(pkt, n, trunc, hello_done, &m2, msg2, sizeof msg2);
	CHECK(r2 == r);
	if (r)
		CHECK(strcmp(msg, msg2) == 0);
	else
		CHECK(memcmp(&m, &m2, srv_request_len(h.type)) == 0);
	free(pkt);
	return 0;
}
