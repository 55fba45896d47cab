/*
 * persist_strings.c — the strings of string-key tables across restarts: one append-only
 * file per persisted string table, data_dir/strings-<table id, 8 hex>.dks, holding each
 * key's string once it was kept (tables.c, srv_table_keep_string, through the table's
 * string_kept hook).
 *
 * Record (little-endian, 20 + len bytes, back to back from offset 0):
 *   0 u32 magic "DEKS" (0x534b4544)   4 u32 len (<= DE_MAX_KEY_BYTES)   8 u64 key (!= 0)
 *   16 u8[len] the string   16+len u32 CRC32C of bytes 0..16+len
 * Open (persist_strings_open, after recovery or at a new table's OPEN) reads every intact
 * record into the table's string store and truncates the file after the last one (a torn
 * tail). A record is written (write(2), under the table's strings lock) when the string
 * is first kept: it survives a process crash at once; fdatasync'ed at each checkpoint of
 * the table (persist_strings_sync), so a power loss may forget strings kept since the
 * last checkpoint (KEY_STRINGS then says "unknown" for them). A key kept again after an
 * erase may be written twice; the first record wins at load.
 *
 * Owns: the file descriptor and lock in struct srv_table_persist. Callers: persist.c,
 * persist_recover.c. Never: fails a data-plane request (a write error is logged once and
 * later strings are not persisted).
 */
#include "persist_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

#define STR_MAGIC 0x534b4544u
#define STR_HDR 16u

/* the table's string_kept hook: append one record */
static void string_kept(void *ctx, struct srv_table *t, uint64_t key, const void *s,
			uint32_t len)
{
	(void)ctx;
	struct srv_table_persist *ps = t->ps;
	if (!ps || ps->strings_fd < 0)
		return;
	unsigned char rec[STR_HDR + DE_MAX_KEY_BYTES + 4];
	uint32_t h[2] = { STR_MAGIC, len };
	memcpy(rec, h, 8);
	memcpy(rec + 8, &key, 8);
	memcpy(rec + STR_HDR, s, len);
	uint32_t crc = de_crc32c(0, rec, STR_HDR + len);
	memcpy(rec + STR_HDR + len, &crc, 4);
	size_t n = STR_HDR + len + 4;
	pthread_mutex_lock(&ps->strings_mu);
	ssize_t w = ps->strings_fd >= 0 ? write(ps->strings_fd, rec, n) : (ssize_t)n;
	if (w != (ssize_t)n) {
		/* a short or failed append: later records would follow a torn one, so stop
		 * (logged once: the file is closed); a short write logs as EIO */
		int e = w < 0 ? errno : EIO;
		srv_logf(SRV_LOG_ERROR, SRV_KV(SRV_F_TABLE(t->name), SRV_F_UINT("table_id", ps->id),
					      SRV_F_ERRNO(e)),
			 "persistence: table '%s': writing its strings file: %s; "
			 "strings kept from now on are not persisted", t->name,
			 w < 0 ? strerror(e) : "short write");
		close(ps->strings_fd);
		ps->strings_fd = -1;
	}
	pthread_mutex_unlock(&ps->strings_mu);
}

int persist_strings_open(struct srv_persist *p, struct srv_table *t)
{
	struct srv_table_persist *ps = t->ps;
	if (!ps || t->wcfg.key_type != DE_KEYS_STRING || ps->strings_fd >= 0)
		return 0;
	char path[sizeof p->dir + 40];
	snprintf(path, sizeof path, "%s/strings-%08" PRIx32 ".dks", p->dir, ps->id);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	off_t size = lseek(fd, 0, SEEK_END);
	unsigned char *buf = size > 0 ? malloc((size_t)size) : NULL;
	if (size > 0 && (!buf || pread(fd, buf, (size_t)size, 0) != size)) {
		int err = buf ? -EIO : -ENOMEM;
		free(buf);
		close(fd);
		return err;
	}
	uint64_t off = 0, loaded = 0;
	while (size > 0 && off + STR_HDR + 4 <= (uint64_t)size) {
		uint32_t h[2], crc;
		uint64_t key;
		memcpy(h, buf + off, 8);
		memcpy(&key, buf + off + 8, 8);
		if (h[0] != STR_MAGIC || h[1] > DE_MAX_KEY_BYTES || !key ||
		    off + STR_HDR + h[1] + 4 > (uint64_t)size)
			break;
		memcpy(&crc, buf + off + STR_HDR + h[1], 4);
		if (crc != de_crc32c(0, buf + off, STR_HDR + h[1]))
			break;
		if (srv_table_keep_string(t, key, buf + off + STR_HDR, h[1]) == 0)
			loaded++;
		off += STR_HDR + h[1] + 4;
	}
	free(buf);
	if (size > 0 && off != (uint64_t)size) {
		srv_logf(SRV_LOG_WARN, SRV_KV(SRV_F_TABLE(t->name), SRV_F_PATH(path),
					     SRV_F_UINT("bytes", (uint64_t)size - off)),
			 "persistence: %s: torn tail of %" PRIu64 " bytes dropped", path,
			 (uint64_t)size - off);
		if (ftruncate(fd, (off_t)off) || fdatasync(fd)) {
			int err = -errno;
			close(fd);
			return err;
		}
	}
	if (lseek(fd, (off_t)off, SEEK_SET) < 0) {
		int err = -errno;
		close(fd);
		return err;
	}
	if (loaded)
		srv_logf(SRV_LOG_INFO, SRV_KV(SRV_F_TABLE(t->name), SRV_F_PATH(path),
					     SRV_F_UINT("strings", loaded)),
			 "persistence: table '%s': %" PRIu64 " key strings loaded", t->name, loaded);
	ps->strings_fd = fd;
	t->string_ctx = p;
	__atomic_store_n(&t->string_kept, string_kept, __ATOMIC_RELEASE);
	return 0;
}

void persist_strings_sync(struct srv_table_persist *ps)
{
	pthread_mutex_lock(&ps->strings_mu);
	if (ps->strings_fd >= 0 && fdatasync(ps->strings_fd))
		srv_logf(SRV_LOG_WARN, SRV_KV(SRV_F_UINT("table_id", ps->id), SRV_F_ERRNO(errno)),
			 "persistence: fdatasync of a strings file: %s", strerror(errno));
	pthread_mutex_unlock(&ps->strings_mu);
}
