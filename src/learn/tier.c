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
 */
#include "de_learn.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <liburing.h>

#define REC_MAGIC 0x52544544u /* "DETR" little-endian */
#define REC_HDR 48u
#define EMPTY 0ull         /* key 0 is never stored */
#define TOMB UINT64_MAX    /* a slot whose key was taken */
#define COMPACT_MIN (1ull << 20)

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
};

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

int de_tier_open(const char *dir, uint32_t row_floats, de_tier **out)
{
	if (!dir || !out || !row_floats || row_floats > DE_MAX_DIM * (1 + DE_MAX_SLOTS))
		return -EINVAL;
	de_tier *t = calloc(1, sizeof *t);
	if (!t)
		return -ENOMEM;
	int err = -ENOMEM;
	t->fd = -1;
	t->row_floats = row_floats;
	t->rec_bytes = REC_HDR + 4ull * row_floats;
	t->cap = 1024;
	if (!(t->map = calloc(t->cap, sizeof *t->map)) || !(t->dir = strdup(dir)))
		goto fail;
	if ((t->fd = tmpfile_in(dir)) < 0) {
		err = t->fd;
		goto fail;
	}
	if ((err = io_uring_queue_init(4, &t->ring, 0)) < 0)
		goto fail;
	pthread_mutex_init(&t->lock, NULL);
	*out = t;
	return 0;
fail:
	if (t->fd >= 0)
		close(t->fd);
	free(t->dir);
	free(t->map);
	free(t);
	return err;
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
	free(t->map);
	free(t);
}

/* Copy the live records to a new file; on any error keep the old one. Locked. */
static int compact_locked(struct de_tier *t)
{
	int nfd = tmpfile_in(t->dir);
	if (nfd < 0)
		return nfd;
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
		t->st.io_errors++;
	}
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
	}
	pthread_mutex_lock(&t->lock);
	int err = ring_rw(t, t->fd, true, buf, n * t->rec_bytes, t->tail);
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
		     h.meta.key != key))
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
