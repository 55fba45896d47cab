/*
 * persist_catalog.c — the table catalog of a data_dir: which tables exist, with their
 * ids and normalized wire configs, so that a restart recreates them before recovery
 * (persist_recover.c reads it; srv_persist_table_open rewrites it for a new table).
 *
 * CATALOG, format version 2 (all little-endian):
 * data_dir/CATALOG, replaced atomically (CATALOG.tmp, fsync, rename, fsync dir):
 *   0    u8[8] magic "DECATLG1"
 *   8    u32 version (2)         12   u32 count (<= DE_MANIFEST_MAX_TABLES)
 *   16   u32 entry_bytes (400)   20   u32 reserved, zero
 *   24   u64 next_id: above every id the daemon ever gave, dropped tables' included, so
 *        that a new table never takes the id (and the WAL records) of a dropped one
 *        (version 1: zero; the next id is then the largest entry's + 1), 0 or > every
 *        entry's id
 *   32   count entries of 400 bytes:
 *          0    u32 table_id (>= 1, strictly increasing)
 *          4    u32 owner: the uid that created the table (authz.h)
 *          8    char name[64] (NUL-terminated, srv_name_check)
 *          72   struct de_wire_table_config (64 bytes, normalized)
 *          136  struct de_wire_learn_config (256 bytes, normalized)
 *          392  u64 reserved, zero
 *   32 + 400 * count: u32 CRC32C of every byte before it. The file is exactly that long.
 * A reader refuses any deviation (-EBADMSG; -EPROTO for another version). Version 1 is
 * the same with a reserved zero at entry offset 4: it is still read, every table then
 * owned by the daemon's effective uid (root for a daemon run as root), and the next
 * rewrite is version 2.
 * Entries are checked again with the validators (srv_name_check and the config
 * normalizers must leave them unchanged). Never: trust a byte of the file.
 */
#include "persist_int.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "validate.h"

#define CAT_MAGIC "DECATLG1"
#define CAT_VERSION 2u
#define CAT_VERSION_NO_OWNER 1u
#define CAT_HDR 32u
#define CAT_ENTRY 400u

_Static_assert(sizeof(struct srv_catalog_entry) == CAT_ENTRY, "spec");
_Static_assert(offsetof(struct srv_catalog_entry, cfg) == 72, "spec");
_Static_assert(offsetof(struct srv_catalog_entry, learn) == 136, "spec");

/* Decode a catalog image. 0, -EBADMSG / -EPROTO with *problem (static text). */
static int cat_decode(const unsigned char *b, size_t len, struct srv_catalog_entry **out,
		      uint32_t *count, uint64_t *next_id, const char **problem)
{
	uint32_t v, n, eb, r32;
	uint64_t nid = 0;
	*out = NULL;
	*count = 0;
	*next_id = 0;
	if (len < CAT_HDR + 4 || memcmp(b, CAT_MAGIC, 8)) {
		*problem = "not a dynemb catalog (magic)";
		return -EBADMSG;
	}
	memcpy(&v, b + 8, 4);
	memcpy(&n, b + 12, 4);
	memcpy(&eb, b + 16, 4);
	memcpy(&r32, b + 20, 4);
	if (v != CAT_VERSION && v != CAT_VERSION_NO_OWNER) {
		*problem = "another catalog version";
		return -EPROTO;
	}
	memcpy(&nid, b + 24, 8);
	if (eb != CAT_ENTRY || n > DE_MANIFEST_MAX_TABLES || r32 || (v == CAT_VERSION_NO_OWNER && nid) ||
	    nid > UINT32_MAX || len != CAT_HDR + (size_t)n * CAT_ENTRY + 4) {
		*problem = "bad header or file size";
		return -EBADMSG;
	}
	uint32_t crc;
	memcpy(&crc, b + len - 4, 4);
	if (crc != de_crc32c(0, b, len - 4)) {
		*problem = "checksum mismatch";
		return -EBADMSG;
	}
	struct srv_catalog_entry *e = calloc(n ? n : 1, sizeof *e);
	if (!e)
		return -ENOMEM;
	memcpy(e, b + CAT_HDR, (size_t)n * CAT_ENTRY);
	for (uint32_t i = 0; i < n; i++) {
		char msg[240];
		struct de_wire_table_config c = e[i].cfg;
		struct de_wire_learn_config l = e[i].learn;
		if (!e[i].table_id || (i && e[i].table_id <= e[i - 1].table_id) ||
		    (nid && e[i].table_id >= nid) ||
		    (v == CAT_VERSION_NO_OWNER && e[i].owner) || e[i].reserved1 ||
		    e[i].owner == UINT32_MAX) {
			*problem = "bad table id, owner or reserved field";
			goto bad;
		}
		if (v == CAT_VERSION_NO_OWNER)
			e[i].owner = (uint32_t)geteuid();
		if (srv_name_check(e[i].name, msg, sizeof msg) ||
		    srv_wire_config_normalize(&c, msg, sizeof msg) ||
		    srv_learn_config_normalize(&l, &c, msg, sizeof msg) ||
		    memcmp(&c, &e[i].cfg, sizeof c) || memcmp(&l, &e[i].learn, sizeof l)) {
			*problem = "bad table name or config";
			goto bad;
		}
		for (uint32_t j = 0; j < i; j++)
			if (!strcmp(e[j].name, e[i].name)) {
				*problem = "a table name twice";
				goto bad;
			}
	}
	*out = e;
	*count = n;
	*next_id = nid;
	return 0;
bad:
	free(e);
	return -EBADMSG;
}

int persist_cat_read(const char *dir, struct srv_catalog_entry **out, uint32_t *count,
		     uint64_t *next_id, const char **problem)
{
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s/CATALOG", dir);
	*problem = NULL;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat st;
	int err = 0;
	unsigned char *b = NULL;
	if (fstat(fd, &st)) {
		err = -errno;
		goto out;
	}
	if (st.st_size > (off_t)(CAT_HDR + DE_MANIFEST_MAX_TABLES * CAT_ENTRY + 4) ||
	    st.st_size < (off_t)(CAT_HDR + 4)) {
		*problem = "bad file size";
		err = -EBADMSG;
		goto out;
	}
	size_t len = (size_t)st.st_size;
	if (!(b = malloc(len))) {
		err = -ENOMEM;
		goto out;
	}
	size_t got = 0;
	while (got < len) {
		ssize_t r = pread(fd, b + got, len - got, (off_t)got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			err = r < 0 ? -errno : -EBADMSG;
			*problem = r < 0 ? NULL : "file shrank while read";
			goto out;
		}
		got += (size_t)r;
	}
	err = cat_decode(b, len, out, count, next_id, problem);
out:
	free(b);
	close(fd);
	return err;
}

static int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len) {
		ssize_t r = write(fd, p, len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		p += r;
		len -= (size_t)r;
	}
	return 0;
}

/* Test builds: the power-loss log (de_persist_plog_note) of one step of the replace; a
 * write and an fsync are reported done, as the calls that made them returned. */
static void cat_plog(enum de_plog_op op, const char *path, const char *path2, size_t len,
		     const void *data)
{
#ifdef DE_FAULT_INJECTION
	uint64_t id = de_persist_plog_note(op, path, path2, 0, 0, len, data);
	if (op == DE_PLOG_WRITE || op == DE_PLOG_FSYNC)
		de_persist_plog_note(op == DE_PLOG_WRITE ? DE_PLOG_WRITE_DONE : DE_PLOG_FSYNC_DONE,
				     NULL, NULL, id, 0, len, NULL);
#else
	(void)op, (void)path, (void)path2, (void)len, (void)data;
#endif
}

int persist_cat_write(const char *dir, struct srv_table *const *tables, unsigned n,
		      uint64_t next_id)
{
	size_t len = CAT_HDR + (size_t)n * CAT_ENTRY + 4;
	unsigned char *b = calloc(1, len);
	if (!b)
		return -ENOMEM;
	memcpy(b, CAT_MAGIC, 8);
	uint32_t v = CAT_VERSION, eb = CAT_ENTRY, cnt = n;
	memcpy(b + 8, &v, 4);
	memcpy(b + 12, &cnt, 4);
	memcpy(b + 16, &eb, 4);
	memcpy(b + 24, &next_id, 8);
	for (unsigned i = 0; i < n; i++) {
		struct srv_catalog_entry e;
		memset(&e, 0, sizeof e);
		e.table_id = tables[i]->ps->id;
		e.owner = (uint32_t)tables[i]->owner;
		memcpy(e.name, tables[i]->name, DE_NAME_MAX);
		e.cfg = tables[i]->wcfg;
		e.learn = tables[i]->learn;
		memcpy(b + CAT_HDR + (size_t)i * CAT_ENTRY, &e, sizeof e);
	}
	uint32_t crc = de_crc32c(0, b, len - 4);
	memcpy(b + len - 4, &crc, 4);
	char tmp[PATH_MAX], path[PATH_MAX];
	snprintf(tmp, sizeof tmp, "%s/CATALOG.tmp", dir);
	snprintf(path, sizeof path, "%s/CATALOG", dir);
	int err = 0;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		err = -errno;
	else
		cat_plog(DE_PLOG_CREATE, tmp, NULL, 0, NULL);
	if (!err && !(err = write_all(fd, b, len)))
		cat_plog(DE_PLOG_WRITE, tmp, NULL, len, b);
	if (!err && fsync(fd))
		err = -errno;
	else if (!err)
		cat_plog(DE_PLOG_FSYNC, tmp, NULL, 0, NULL);
	if (fd >= 0)
		close(fd);
	if (!err && rename(tmp, path))
		err = -errno;
	else if (!err)
		cat_plog(DE_PLOG_RENAME, tmp, path, 0, NULL);
	if (!err) {
		int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd < 0 || fsync(dfd))
			err = -errno;
		else
			cat_plog(DE_PLOG_DIRSYNC, dir, NULL, 0, NULL);
		if (dfd >= 0)
			close(dfd);
	} else {
		unlink(tmp);
	}
	free(b);
	return err;
}
