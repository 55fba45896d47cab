/*
 * tier.c — the disk tier of eviction (public header: de_learn.h, "Disk tier"): evicted
 * rows with their slots and metadata, appended to an unlinked file with io_uring, and an
 * in-memory index key -> file offset, so that a returning key gets its old row back.
 *
 * File: records of 48 + 4 * row_floats bytes, appended; no header (nothing survives
 * close, so nothing needs to be recognized later):
 *   0  u32 magic "DETR" (0x52544544)   4  u32 row_floats   8  u64 key
 *   16 struct de_row_meta (key, last_step, freq, flags, aux: 32 bytes)
 *   48 f32[row_floats] values then slots
 * A record read back is checked (length read, magic, row_floats, key) before use.
 *
 * Owns: the file, one io_uring, the index (open addressing, linear probing, tombstones),
 * and a mutex over all three: the ring is not thread-safe, and the tier is a cold path
 * (evictions in the evictor's thread, restores of returning keys).
 * Never: trusts what it reads back; keeps a record it could not write fully (a failed
 * put indexes nothing); blocks a caller on anything but its own I/O and lock.
 * Callers: evict.c (puts while evicting, takes in de_evict_after_lookup), tests.
 *
 * Durable tier (de_tier_open_file): the same records in a named file, each followed by an
 * 8-byte trailer { u32 XXH32 of the record before it (seed 0x44455452), u32 magic "DETE"
 * (0x45544544) }, so a record is 56 + 4 * row_floats bytes. Open scans the file: the
 * index is every intact record's key, the later record of a key winning; the first record
 * that fails its check ends the file (truncated there: a torn tail of a crash). Each put
 * is fdatasync'ed before it returns, so a put that returned is on disk. A take forgets the
 * key in memory only: the record stays in the file until a compaction, which first calls
 * the compaction hook (the owner makes durable whatever now holds the taken rows), then
 * writes path.tmp, fdatasyncs it, renames it over path and fsyncs the directory.
 * de_tier_erase appends tombstones (the record layout with magic "DETX" (0x58544544) and
 * zero meta and floats), fdatasync'ed: the scan forgets the key there.
 */
#include "de_learn.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <liburing.h>
#include <xxhash.h>

#define REC_MAGIC 0x52544544u /* "DETR" little-endian */
#define REC_HDR 48u
#define EMPTY 0ull         /* key 0 is never stored */
#define TOMB UINT64_MAX    /* a slot whose key was taken */
#define COMPACT_MIN (1ull << 20)
#define TRL_MAGIC 0x45544544u /* "DETE" little-endian */
#define TOMB_MAGIC 0x58544544u /* "DETX": a durable tier's erase of a key */
#define TRL_BYTES 8u
#define TRL_SEED 0x44455452u

_Static_assert(sizeof(struct de_row_meta) == 32, "record layout");

struct rec_hdr {
	uint32_t magic, row_floats;
	uint64_t key;
	struct de_row_meta meta;
};
_Static_assert(sizeof(struct rec_hdr) == REC_HDR, "record layout");

struct slot {
	uint64_t key; /* EMPTY, TOMB or a key */
	uint64_t off;
};

struct de_tier {
	pthread_mutex_t lock;
	int fd;
	char *dir;
	struct io_uring ring;
	uint32_t row_floats;
	uint64_t rec_bytes;
	uint64_t tail;         /* file bytes written */
	struct slot *map;
	uint64_t cap, used;    /* slots, slots not EMPTY (live + tombstones) */
	struct de_tier_stats st;
	char *path;            /* durable tier: its file (NULL: an unlinked file) */
	int (*before_compact)(void *ctx);
	void *compact_ctx;
};

/* Durable tier: the trailer of the record in rec[0..rec_bytes - TRL_BYTES). */
static void put_trailer(const struct de_tier *t, char *rec)
{
	uint32_t trl[2] = { XXH32(rec, t->rec_bytes - TRL_BYTES, TRL_SEED), TRL_MAGIC };
	memcpy(rec + t->rec_bytes - TRL_BYTES, trl, TRL_BYTES);
}

static bool trailer_ok(const struct de_tier *t, const char *rec)
{
	uint32_t trl[2];
	memcpy(trl, rec + t->rec_bytes - TRL_BYTES, TRL_BYTES);
	return trl[1] == TRL_MAGIC && trl[0] == XXH32(rec, t->rec_bytes - TRL_BYTES, TRL_SEED);
}

/* The slot of key, or (with insert) the slot to put it in; NULL when absent. */
static struct slot *map_find(struct de_tier *t, uint64_t key, bool insert)
{
	uint64_t m = t->cap - 1, i = de_fmix64(key) & m;
	struct slot *tomb = NULL;
	for (uint64_t n = 0; n < t->cap; n++, i = (i + 1) & m) {
		struct slot *s = &t->map[i];
		if (s->key == key)
			return s;
		if (s->key == TOMB && !tomb)
			tomb = s;
		if (s->key == EMPTY)
			return insert ? (tomb ? tomb : s) : NULL;
	}
	return insert ? tomb : NULL;
}

/* Rehash into cap slots (drops tombstones). */
static int map_resize(struct de_tier *t, uint64_t cap)
{
	struct slot *old = t->map;
	uint64_t ocap = t->cap;
	struct slot *nm = calloc(cap, sizeof *nm);
	if (!nm)
		return -ENOMEM;
	t->map = nm;
	t->cap = cap;
	t->used = 0;
	for (uint64_t i = 0; i < ocap; i++) {
		if (old[i].key == EMPTY || old[i].key == TOMB)
			continue;
		*map_find(t, old[i].key, true) = old[i];
		t->used++;
	}
	free(old);
	return 0;
}

/* Room for one more key: keep (live + tombstones) under half the slots. */
static int map_reserve(struct de_tier *t)
{
	if ((t->used + 1) * 2 <= t->cap)
		return 0;
	uint64_t cap = t->cap;
	while ((t->st.live + 1) * 4 > cap)
		cap *= 2;
	return map_resize(t, cap);
}

/* Full read or write of len bytes at off through the ring: 0, -EIO on a short read (end
 * of file), or the negative errno of the operation. */
static int ring_rw(struct de_tier *t, int fd, bool wr, void *buf, uint64_t len, uint64_t off)
{
	char *p = buf;
	while (len) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&t->ring);
		if (!sqe)
			return -EBUSY; /* cannot happen: one SQE in flight at a time */
		unsigned chunk = len > (1u << 30) ? 1u << 30 : (unsigned)len;
		if (wr)
			io_uring_prep_write(sqe, fd, p, chunk, off);
		else
			io_uring_prep_read(sqe, fd, p, chunk, off);
		int err = io_uring_submit_and_wait(&t->ring, 1);
		if (err < 0)
			return err;
		struct io_uring_cqe *cqe;
		if ((err = io_uring_wait_cqe(&t->ring, &cqe)) < 0)
			return err;
		int res = cqe->res;
		io_uring_cqe_seen(&t->ring, cqe);
		if (res < 0)
			return res;
		if (res == 0)
			return -EIO;
		p += res;
		len -= (unsigned)res;
		off += (unsigned)res;
	}
	return 0;
}

static int tmpfile_in(const char *dir)
{
	int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR))
		return fd >= 0 ? fd : -errno;
	/* file systems without O_TMPFILE: create, then unlink */
	char path[PATH_MAX];
	if (snprintf(path, sizeof path, "%s/de_tier.XXXXXX", dir) >= (int)sizeof path)
		return -ENAMETOOLONG;
	fd = mkostemp(path, O_CLOEXEC);
	if (fd < 0)
		return -errno;
	unlink(path);
	return fd;
}

/* The parts both opens share: a tier with its index and no file yet (NULL: no memory),
 * its ring and lock once the file is open, and the unwinding of a failed open. */
static de_tier *tier_alloc(uint32_t row_floats, uint64_t rec_bytes)
{
	de_tier *t = calloc(1, sizeof *t);
	if (!t)
		return NULL;
	t->fd = -1;
	t->row_floats = row_floats;
	t->rec_bytes = rec_bytes;
	t->cap = 1024;
	if (!(t->map = calloc(t->cap, sizeof *t->map))) {
		free(t);
		return NULL;
	}
	return t;
}

static int tier_start(de_tier *t, de_tier **out)
{
	int err = io_uring_queue_init(4, &t->ring, 0);
	if (err < 0)
		return err;
	pthread_mutex_init(&t->lock, NULL);
	*out = t;
	return 0;
}

static int tier_unwind(de_tier *t, int err)
{
	if (t->fd >= 0)
		close(t->fd);
	free(t->dir);
	free(t->path);
	free(t->map);
	free(t);
	return err;
}

int de_tier_open(const char *dir, uint32_t row_floats, de_tier **out)
{
	if (!dir || !out || !row_floats || row_floats > DE_MAX_DIM * (1 + DE_MAX_SLOTS))
		return -EINVAL;
	de_tier *t = tier_alloc(row_floats, REC_HDR + 4ull * row_floats);
	if (!t)
		return -ENOMEM;
	if (!(t->dir = strdup(dir)))
		return tier_unwind(t, -ENOMEM);
	if ((t->fd = tmpfile_in(dir)) < 0)
		return tier_unwind(t, t->fd);
	int err = tier_start(t, out);
	return err ? tier_unwind(t, err) : 0;
}

void de_tier_close(de_tier *t)
{
	if (!t)
		return;
	io_uring_queue_exit(&t->ring);
	if (t->fd >= 0)
		close(t->fd);
	pthread_mutex_destroy(&t->lock);
	free(t->dir);
	free(t->path);
	free(t->map);
	free(t);
}

/* Index the intact records of t->fd from offset 0; truncate the file after the last. */
static int scan_file(struct de_tier *t)
{
	char *rec = malloc(t->rec_bytes);
	if (!rec)
		return -ENOMEM;
	int err = 0;
	uint64_t off = 0;
	for (;;) {
		ssize_t r = pread(t->fd, rec, t->rec_bytes, (off_t)off);
		if (r < 0) {
			err = -errno;
			break;
		}
		if ((uint64_t)r < t->rec_bytes)
			break; /* end of file, or a record cut by it */
		struct rec_hdr h;
		memcpy(&h, rec, REC_HDR);
		if ((h.magic != REC_MAGIC && h.magic != TOMB_MAGIC) || h.key == 0 ||
		    h.meta.key != h.key || !trailer_ok(t, rec))
			break; /* the torn tail */
		if (h.magic == TOMB_MAGIC && h.row_floats == t->row_floats) {
			struct slot *s = map_find(t, h.key, false);
			if (s) {
				s->key = TOMB;
				t->st.live--;
				t->st.dead_bytes += t->rec_bytes;
			}
			t->st.dead_bytes += t->rec_bytes;
			off += t->rec_bytes;
			continue;
		}
		if (h.row_floats != t->row_floats) {
			err = -EEXIST; /* a tier of another row size */
			break;
		}
		if ((err = map_reserve(t)))
			break;
		struct slot *s = map_find(t, h.key, true);
		if (s->key == h.key) {
			t->st.dead_bytes += t->rec_bytes;
		} else {
			if (s->key == EMPTY)
				t->used++;
			s->key = h.key;
			t->st.live++;
		}
		s->off = off;
		off += t->rec_bytes;
	}
	free(rec);
	if (err)
		return err;
	struct stat sb;
	if (fstat(t->fd, &sb))
		return -errno;
	if ((uint64_t)sb.st_size != off && (ftruncate(t->fd, (off_t)off) || fdatasync(t->fd)))
		return -errno;
	t->tail = off;
	t->st.file_bytes = off;
	return 0;
}

int de_tier_open_file(const char *path, uint32_t row_floats, de_tier **out)
{
	if (!path || !*path || !out || !row_floats || row_floats > DE_MAX_DIM * (1 + DE_MAX_SLOTS))
		return -EINVAL;
	de_tier *t = tier_alloc(row_floats, REC_HDR + 4ull * row_floats + TRL_BYTES);
	if (!t)
		return -ENOMEM;
	int err = -ENOMEM;
	if (!(t->path = strdup(path)) || !(t->dir = strdup(path)))
		goto fail;
	char *slash = strrchr(t->dir, '/');
	if (slash)
		slash[slash == t->dir] = 0;
	else
		strcpy(t->dir, ".");
	bool existed = access(path, F_OK) == 0;
	if ((t->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0) {
		err = -errno;
		goto fail;
	}
	if (!existed) { /* its directory entry is durable before the first put counts */
		int dfd = open(t->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		err = dfd < 0 || fsync(dfd) ? -errno : 0;
		if (dfd >= 0)
			close(dfd);
		if (err)
			goto fail;
	}
	if ((err = scan_file(t)))
		goto fail;
	if ((err = tier_start(t, out)))
		goto fail;
	return 0;
fail:
	return tier_unwind(t, err);
}

void de_tier_set_compact_hook(de_tier *t, int (*fn)(void *ctx), void *ctx)
{
	if (!t)
		return;
	pthread_mutex_lock(&t->lock);
	t->before_compact = fn;
	t->compact_ctx = ctx;
	pthread_mutex_unlock(&t->lock);
}

int de_tier_erase(de_tier *t, const uint64_t *keys, size_t n)
{
	if (!t || (n && !keys))
		return -EINVAL;
	if (!t->path) { /* a cache: forgetting is enough */
		pthread_mutex_lock(&t->lock);
		for (size_t i = 0; i < n; i++) {
			struct slot *s = keys[i] ? map_find(t, keys[i], false) : NULL;
			if (s) {
				s->key = TOMB;
				t->st.live--;
				t->st.dead_bytes += t->rec_bytes;
			}
		}
		pthread_mutex_unlock(&t->lock);
		return 0;
	}
	char *buf = calloc(n ? n : 1, t->rec_bytes);
	if (!buf)
		return -ENOMEM;
	pthread_mutex_lock(&t->lock);
	size_t m = 0;
	for (size_t i = 0; i < n; i++) {
		if (!keys[i])
			continue; /* a taken key's record may still be in the file: every key */
		struct rec_hdr h = { TOMB_MAGIC, t->row_floats, keys[i], { .key = keys[i] } };
		memcpy(buf + m * t->rec_bytes, &h, REC_HDR);
		put_trailer(t, buf + m * t->rec_bytes);
		m++;
	}
	int err = m ? ring_rw(t, t->fd, true, buf, m * t->rec_bytes, t->tail) : 0;
	if (!err && m && fdatasync(t->fd))
		err = -errno;
	if (err) {
		t->st.io_errors++;
	} else if (m) {
		t->tail += m * t->rec_bytes;
		t->st.file_bytes = t->tail;
		t->st.dead_bytes += m * t->rec_bytes;
		for (size_t i = 0; i < n; i++) {
			struct slot *s = keys[i] ? map_find(t, keys[i], false) : NULL;
			if (s) {
				s->key = TOMB;
				t->st.live--;
				t->st.dead_bytes += t->rec_bytes;
			}
		}
	}
	pthread_mutex_unlock(&t->lock);
	free(buf);
	return err;
}

size_t de_tier_drop_if(de_tier *t, bool (*drop)(void *ctx, uint64_t key), void *ctx)
{
	if (!t || !drop)
		return 0;
	size_t n = 0;
	pthread_mutex_lock(&t->lock);
	for (uint64_t i = 0; i < t->cap; i++) {
		struct slot *s = &t->map[i];
		if (s->key == EMPTY || s->key == TOMB || !drop(ctx, s->key))
			continue;
		s->key = TOMB;
		t->st.live--;
		t->st.dead_bytes += t->rec_bytes;
		n++;
	}
	pthread_mutex_unlock(&t->lock);
	return n;
}

/* Copy the live records to a new file; on any error keep the old one. Locked. */
static int compact_locked(struct de_tier *t)
{
	char *tmp = NULL;
	int nfd;
	if (t->path) {
		/* the taken rows live elsewhere now: make that durable before their records go */
		int herr = t->before_compact ? t->before_compact(t->compact_ctx) : 0;
		if (herr)
			return herr;
		size_t len = strlen(t->path) + 5;
		if (!(tmp = malloc(len)))
			return -ENOMEM;
		snprintf(tmp, len, "%s.tmp", t->path);
		nfd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (nfd < 0) {
			nfd = -errno;
			free(tmp);
			return nfd;
		}
	} else if ((nfd = tmpfile_in(t->dir)) < 0) {
		return nfd;
	}
	uint64_t *noff = malloc(t->cap * sizeof *noff);
	char *rec = malloc(t->rec_bytes);
	int err = (!noff || !rec) ? -ENOMEM : 0;
	uint64_t tail = 0;
	for (uint64_t i = 0; !err && i < t->cap; i++) {
		struct slot *s = &t->map[i];
		if (s->key == EMPTY || s->key == TOMB)
			continue;
		if (!(err = ring_rw(t, t->fd, false, rec, t->rec_bytes, s->off)) &&
		    !(err = ring_rw(t, nfd, true, rec, t->rec_bytes, tail))) {
			noff[i] = tail;
			tail += t->rec_bytes;
		}
	}
	if (!err && tmp) { /* durable: the new file complete on disk, then in place */
		if (fdatasync(nfd) || rename(tmp, t->path)) {
			err = -errno;
		} else {
			/* renamed: the new file is the one to use; should the directory fsync
			 * fail, a power loss brings back the old file, a superset of it */
			int dfd = open(t->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			if (dfd >= 0) {
				(void)fsync(dfd);
				close(dfd);
			}
		}
	}
	if (!err) {
		for (uint64_t i = 0; i < t->cap; i++)
			if (t->map[i].key != EMPTY && t->map[i].key != TOMB)
				t->map[i].off = noff[i];
		close(t->fd);
		t->fd = nfd;
		t->tail = tail;
		t->st.dead_bytes = 0;
		t->st.compactions++;
	} else {
		close(nfd);
		if (tmp)
			unlink(tmp);
		t->st.io_errors++;
	}
	free(tmp);
	free(rec);
	free(noff);
	return err;
}

int de_tier_compact(de_tier *t)
{
	if (!t)
		return -EINVAL;
	pthread_mutex_lock(&t->lock);
	int err = compact_locked(t);
	pthread_mutex_unlock(&t->lock);
	return err;
}

int de_tier_put(de_tier *t, const float *rows, const struct de_row_meta *metas, size_t n)
{
	if (!t || (n && (!rows || !metas)))
		return -EINVAL;
	if (!n)
		return 0;
	if (n > (1ull << 40) / t->rec_bytes)
		return -E2BIG;
	char *buf = malloc(n * t->rec_bytes);
	if (!buf)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		struct rec_hdr h = { REC_MAGIC, t->row_floats, metas[i].key, metas[i] };
		memcpy(buf + i * t->rec_bytes, &h, REC_HDR);
		memcpy(buf + i * t->rec_bytes + REC_HDR, rows + i * t->row_floats,
		       4ull * t->row_floats);
		if (t->path)
			put_trailer(t, buf + i * t->rec_bytes);
	}
	pthread_mutex_lock(&t->lock);
	int err = ring_rw(t, t->fd, true, buf, n * t->rec_bytes, t->tail);
	if (!err && t->path && fdatasync(t->fd))
		err = -errno; /* the records may be on disk, but are not known to be: unindexed */
	if (err) {
		t->st.io_errors++;
		goto out;
	}
	uint64_t base = t->tail;
	t->tail += n * t->rec_bytes;
	t->st.file_bytes = t->tail;
	for (size_t i = 0; i < n; i++) {
		if (!metas[i].key) {
			t->st.dead_bytes += t->rec_bytes;
			continue;
		}
		if ((err = map_reserve(t)))
			goto out; /* the records not indexed are dead space */
		struct slot *s = map_find(t, metas[i].key, true);
		if (s->key == metas[i].key) {
			t->st.dead_bytes += t->rec_bytes; /* superseded */
		} else {
			if (s->key == EMPTY)
				t->used++;
			s->key = metas[i].key;
			t->st.live++;
		}
		s->off = base + i * t->rec_bytes;
		t->st.puts++;
	}
	if (t->st.dead_bytes > COMPACT_MIN && t->st.dead_bytes * 2 > t->tail)
		compact_locked(t); /* failure keeps the old file: still correct */
out:
	t->st.file_bytes = t->tail;
	pthread_mutex_unlock(&t->lock);
	free(buf);
	return err;
}

int de_tier_take(de_tier *t, uint64_t key, float *row, struct de_row_meta *meta)
{
	if (!t || !row || !meta)
		return -EINVAL;
	if (!key)
		return -ENOENT;
	char *buf = malloc(t->rec_bytes);
	if (!buf)
		return -ENOMEM;
	pthread_mutex_lock(&t->lock);
	int err = -ENOENT;
	struct slot *s = map_find(t, key, false);
	if (!s)
		goto out;
	err = ring_rw(t, t->fd, false, buf, t->rec_bytes, s->off);
	struct rec_hdr h;
	memcpy(&h, buf, REC_HDR);
	if (!err && (h.magic != REC_MAGIC || h.row_floats != t->row_floats || h.key != key ||
		     h.meta.key != key || (t->path && !trailer_ok(t, buf))))
		err = -EIO;
	/* forget it either way: a record that cannot be read will not be readable later */
	s->key = TOMB;
	t->st.live--;
	t->st.dead_bytes += t->rec_bytes;
	if (err) {
		t->st.io_errors++;
		goto out;
	}
	*meta = h.meta;
	memcpy(row, buf + REC_HDR, 4ull * t->row_floats);
	t->st.takes++;
out:
	pthread_mutex_unlock(&t->lock);
	free(buf);
	return err;
}

bool de_tier_contains(de_tier *t, uint64_t key)
{
	if (!t || !key)
		return false;
	pthread_mutex_lock(&t->lock);
	bool r = map_find(t, key, false) != NULL;
	pthread_mutex_unlock(&t->lock);
	return r;
}

int de_tier_stats(de_tier *t, struct de_tier_stats *out)
{
	if (!t || !out)
		return -EINVAL;
	pthread_mutex_lock(&t->lock);
	*out = t->st;
	out->row_floats = t->row_floats;
	pthread_mutex_unlock(&t->lock);
	return 0;
}

#ifdef DE_FAULT_INJECTION
void de_tier_break_fd(de_tier *t)
{
	if (!t)
		return;
	pthread_mutex_lock(&t->lock);
	close(t->fd);
	t->fd = open("/dev/null", O_RDONLY | O_CLOEXEC); /* writes fail with EBADF; reads return 0 */
	pthread_mutex_unlock(&t->lock);
}
#endif
