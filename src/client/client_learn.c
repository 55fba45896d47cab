/*
 * client_learn.c — libdynemb's candidate sampling, top-k and key strings (public API:
 * dynemb.h; wire: proto.h ops SAMPLE, TOPK, KEY_STRINGS; transport: client.c through
 * client_priv.h).
 *
 * Owns nothing between calls: each call builds its requests, waits for them one at a
 * time, and copies results out of a private buffer. Never trusts the daemon: counts,
 * flags and string lengths of a reply are checked before they are used (-EBADMSG).
 *
 * Splitting: dynemb_topk splits queries into requests of at most min(max batch, 65536,
 * 2^24 / k) queries that fit the data area (queries + 12 bytes per result), and fewer
 * when the daemon refuses a request over its cost cap (-E2BIG with aux0 = the cost and
 * aux1 = the cap: the queries per request are cut to what the cap allows);
 * dynemb_key_strings splits keys by the max batch and the data area, and halves a request
 * whose strings did not fit the area (as opposed to the caller's buffer).
 */
#include "dynemb.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "client_priv.h"
#include "de_shm.h"
#include "proto.h"

#define SLACK (3u * 64u) /* alignment padding of a request's three parts */

static uint64_t room_of(const struct de_priv_table *t)
{
	return t->avail > SLACK ? t->avail - SLACK : 0;
}

/* ---- SAMPLE ----------------------------------------------------------------------------- */

static int sample(dynemb_client *c, int table, const struct dynemb_sample_spec *s, bool str,
		  const uint64_t *ipos, const char *const *spos, const size_t *lens, size_t npos,
		  uint64_t *sampled, float *sampled_expected, float *true_expected,
		  uint8_t *accidental, struct dynemb_sample_info *info)
{
	struct de_priv_table t;
	int err = de_priv_table(c, table, &t);
	if (err)
		return err;
	if (s && DE_PRIV_RESERVED(s, "dynemb_sample_spec"))
		return -EINVAL;
	if (!s || !sampled || (npos && !ipos && !spos))
		return de_priv_err(-EINVAL, "%s is NULL", !s ? "spec" : !sampled ? "sampled"
							: "the positives");
	if (str && t.key_type != DE_KEYS_STRING)
		return de_priv_err(-EINVAL, "table handle %d has int64 keys: use dynemb_sample",
				   table);
	if ((unsigned)s->kind > DYNEMB_SAMPLER_UNIGRAM)
		return de_priv_err(-EINVAL, "dynemb_sample_spec.kind is %u: not a known sampler",
				   (unsigned)s->kind);
	if (!s->num_sampled)
		return de_priv_err(-EINVAL, "dynemb_sample_spec.num_sampled is 0: ask for at "
				   "least 1");
	if (s->unique & ~1)
		return de_priv_err(-EINVAL, "dynemb_sample_spec.unique is %u: it must be 0 or 1",
				   (unsigned)s->unique);
	double power = s->kind == DYNEMB_SAMPLER_UNIGRAM ? (s->power == 0 ? 0.75 : s->power) : 0;
	if (s->kind == DYNEMB_SAMPLER_UNIGRAM && !(power > 0 && power <= DE_WSAMPLE_MAX_POWER))
		return de_priv_err(-EINVAL, "dynemb_sample_spec.power is %g: it must be in (0, %g]",
				   power, (double)DE_WSAMPLE_MAX_POWER);
	uint32_t lim = t.max_batch < DE_WSAMPLE_MAX ? t.max_batch : DE_WSAMPLE_MAX;
	if (s->num_sampled > lim || npos > t.max_batch)
		return -E2BIG;
	uint64_t ns = s->num_sampled;
	/* positives on the wire */
	uint64_t kb = 8 * (uint64_t)npos;
	if (str) {
		kb = 4 * (uint64_t)npos;
		for (size_t i = 0; i < npos; i++) {
			size_t l = lens ? lens[i] : spos[i] ? strlen(spos[i]) : 0;
			if (!spos[i] && l)
				return de_priv_err(-EINVAL, "string key %zu is NULL with length %zu",
						   i, l);
			if (l > DE_MAX_KEY_BYTES)
				return de_priv_err(-EINVAL, "string key %zu is %zu bytes: a string "
						   "key is at most %u bytes", i, l, DE_MAX_KEY_BYTES);
			kb += l;
		}
	}
	uint64_t vb = 13 * ns + 4 * (uint64_t)npos + (info ? 8 : 0);
	char *kbuf = malloc(kb ? kb : 1), *vbuf = malloc(vb);
	if (!kbuf || !vbuf) {
		err = -ENOMEM;
		goto out;
	}
	if (str) {
		char *q = kbuf + 4 * npos;
		for (size_t i = 0; i < npos; i++) {
			uint32_t l = (uint32_t)(lens ? lens[i] : spos[i] ? strlen(spos[i]) : 0);
			memcpy(kbuf + 4 * i, &l, 4);
			if (l)
				memcpy(q, spos[i], l);
			q += l;
		}
	} else if (npos) {
		memcpy(kbuf, ipos, kb);
	}
	struct de_wire_sample_args a = { .kind = (uint32_t)s->kind, .num_sampled = s->num_sampled,
					 .unique = (uint32_t)s->unique, .power = power,
					 .seed = s->seed };
	struct de_sqe e = { .op = DE_OP_SAMPLE,
			    .flags = (str ? DE_SAMPLE_STR : 0) | (info ? DE_SAMPLE_WEIGHT : 0),
			    .table = t.wire_id, .count = (uint32_t)npos };
	struct de_cqe q;
	err = de_priv_call(c, &e, kbuf, kb, NULL, vb, vbuf, &a, sizeof a, &q);
	if (err)
		goto out;
	err = q.res;
	if (err)
		goto out;
	if (q.res > 0 || q.count != ns) {
		err = -EBADMSG;
		goto out;
	}
	const uint8_t *acc = (const uint8_t *)vbuf + 12 * ns + 4 * npos;
	for (uint64_t i = 0; i < ns; i++)
		if (acc[i] > 1) {
			err = -EBADMSG;
			goto out;
		}
	memcpy(sampled, vbuf, 8 * ns);
	if (sampled_expected)
		memcpy(sampled_expected, vbuf + 8 * ns, 4 * ns);
	if (true_expected && npos)
		memcpy(true_expected, vbuf + 12 * ns, 4 * npos);
	if (accidental)
		memcpy(accidental, acc, ns);
	if (info) {
		double w;
		memcpy(&w, vbuf + 13 * ns + 4 * npos, 8);
		if (!(isfinite(w) && w >= 0) || q.aux0 < ns) {
			err = -EBADMSG;
			goto out;
		}
		*info = (struct dynemb_sample_info){ .num_tries = q.aux0, .population = q.aux1,
						     .weight = w };
	}
out:
	free(kbuf);
	free(vbuf);
	return err;
}

int dynemb_sample(dynemb_client *c, int table, const struct dynemb_sample_spec *s,
		  const uint64_t *positives, size_t npos, uint64_t *sampled,
		  float *sampled_expected, float *true_expected, uint8_t *accidental)
{
	return sample(c, table, s, false, positives, NULL, NULL, npos, sampled, sampled_expected,
		      true_expected, accidental, NULL);
}

int dynemb_sample_ex(dynemb_client *c, int table, const struct dynemb_sample_spec *s,
		     const uint64_t *positives, size_t npos, uint64_t *sampled,
		     float *sampled_expected, float *true_expected, uint8_t *accidental,
		     struct dynemb_sample_info *info)
{
	if (!info)
		return de_priv_err(-EINVAL, "info is NULL: use dynemb_sample");
	return sample(c, table, s, false, positives, NULL, NULL, npos, sampled, sampled_expected,
		      true_expected, accidental, info);
}

int dynemb_sample_str(dynemb_client *c, int table, const struct dynemb_sample_spec *s,
		      const char *const *positives, const size_t *lens, size_t npos,
		      uint64_t *sampled, float *sampled_expected, float *true_expected,
		      uint8_t *accidental)
{
	return sample(c, table, s, true, NULL, positives, lens, npos, sampled, sampled_expected,
		      true_expected, accidental, NULL);
}

/* ---- TOPK ------------------------------------------------------------------------------- */

int dynemb_topk(dynemb_client *c, int table, const float *queries, size_t nq, uint32_t k,
		enum dynemb_metric metric, uint64_t *keys, float *scores, uint32_t *found)
{
	struct de_priv_table t;
	int err = de_priv_table(c, table, &t);
	if (err)
		return err;
	if (nq && (!queries || !keys || !scores))
		return de_priv_err(-EINVAL, "%s is NULL", !queries ? "queries" : !keys ? "keys"
										: "scores");
	if (!k)
		return de_priv_err(-EINVAL, "k is 0: ask for at least 1 neighbour");
	if ((unsigned)metric > DYNEMB_METRIC_COSINE)
		return de_priv_err(-EINVAL, "metric %u is not a dynemb_metric", (unsigned)metric);
	if (k > DE_WTOPK_MAX_K)
		return -E2BIG;
	uint64_t qrow = 4ull * t.dim, rrow = 12ull * k;
	size_t done = 0;
	char *buf = NULL;
	size_t bufcap = 0;
	uint64_t cost_q = UINT64_MAX; /* queries per request the daemon's cost cap allows */
	while (done < nq) {
		if ((err = de_priv_table(c, table, &t)))
			break;
		uint64_t cnt = nq - done;
		if (cnt > cost_q)
			cnt = cost_q;
		if (cnt > t.max_batch)
			cnt = t.max_batch;
		if (cnt > DE_WTOPK_MAX_QUERIES)
			cnt = DE_WTOPK_MAX_QUERIES;
		if (cnt > DE_WTOPK_MAX_RESULTS / k)
			cnt = DE_WTOPK_MAX_RESULTS / k;
		uint64_t fit = room_of(&t) / (qrow + rrow);
		if (cnt > fit)
			cnt = fit;
		if (!cnt) {
			err = -ENOBUFS; /* one query's results do not fit the data area */
			break;
		}
		size_t need = (size_t)(cnt * rrow);
		if (need > bufcap) {
			char *p = realloc(buf, need);
			if (!p) {
				err = -ENOMEM;
				break;
			}
			buf = p;
			bufcap = need;
		}
		struct de_sqe e = { .op = DE_OP_TOPK,
				    .flags = (uint8_t)metric, /* the metric is the flags */
				    .table = t.wire_id, .count = (uint32_t)cnt, .arg = k };
		struct de_cqe q;
		err = de_priv_call(c, &e, queries + done * t.dim, cnt * qrow, NULL, cnt * rrow, buf,
				   NULL, 0, &q);
		if (!err && q.res == -E2BIG && q.aux1 && q.aux0 > q.aux1) {
			/* over the daemon's cost cap (aux0 = cost, aux1 = cap): fewer queries */
			uint64_t per = q.aux0 / cnt ? q.aux0 / cnt : 1;
			if (cnt > 1) {
				cost_q = q.aux1 / per ? q.aux1 / per : 1;
				if (cost_q >= cnt)
					cost_q = cnt / 2;
				continue;
			}
			err = de_priv_err(-E2BIG, "one top-k query over this table costs %llu "
					   "(rows x dim), over the daemon's cost cap of %llu per "
					   "request", (unsigned long long)q.aux0,
					   (unsigned long long)q.aux1);
			break;
		}
		if (!err)
			err = q.res;
		if (err)
			break;
		if (q.res > 0 || q.count > k) {
			err = -EBADMSG;
			break;
		}
		memcpy(keys + done * k, buf, cnt * k * 8);
		memcpy(scores + done * k, buf + cnt * k * 8, cnt * k * 4);
		if (found)
			for (uint64_t i = 0; i < cnt; i++)
				found[done + i] = q.count;
		done += cnt;
	}
	free(buf);
	return err;
}

/* ---- KEY_STRINGS ----------------------------------------------------------------------- */

int dynemb_key_strings(dynemb_client *c, int table, const uint64_t *keys, size_t n, char *buf,
		       size_t cap, uint32_t *lens)
{
	struct de_priv_table t;
	int err = de_priv_table(c, table, &t);
	if (err)
		return err;
	if ((n && (!keys || !lens)) || (cap && !buf))
		return de_priv_err(-EINVAL, "%s is NULL", !buf && cap ? "buf" : !keys ? "keys"
										   : "lens");
	if (t.key_type != DE_KEYS_STRING)
		return de_priv_err(-EINVAL, "table handle %d has int64 keys: it keeps no strings",
				   table);
	size_t done = 0, used = 0;
	bool over = false; /* the caller's buffer is full: only lengths from now on */
	char *tmp = NULL;
	size_t tmpcap = 0;
	uint64_t cnt = 0;
	while (done < n) {
		if ((err = de_priv_table(c, table, &t)))
			break;
		uint64_t room = room_of(&t);
		if (!cnt || cnt > n - done)
			cnt = n - done;
		if (cnt > t.max_batch)
			cnt = t.max_batch;
		if (cnt > room / 24)
			cnt = room / 24; /* half the area for keys and lengths at most */
		if (!cnt) {
			err = -ENOBUFS;
			break;
		}
		uint64_t area = room - 12 * cnt;             /* for the strings */
		uint64_t want = over ? 0 : cap - used;       /* what the caller can still take */
		bool area_limited = want > area;
		uint64_t sroom = area_limited ? area : want;
		uint64_t vb = 4 * cnt + sroom;
		if (vb > tmpcap) {
			char *p = realloc(tmp, vb);
			if (!p) {
				err = -ENOMEM;
				break;
			}
			tmp = p;
			tmpcap = vb;
		}
		struct de_sqe e = { .op = DE_OP_KEY_STRINGS, .table = t.wire_id,
				    .count = (uint32_t)cnt };
		struct de_cqe q;
		err = de_priv_call(c, &e, keys + done, 8 * cnt, NULL, vb, tmp, NULL, 0, &q);
		if (err)
			break;
		if (q.res && q.res != -ENOSPC) {
			err = q.res;
			break;
		}
		if (q.res == -ENOSPC && area_limited && cnt > 1) {
			cnt /= 2; /* the area, not the caller, was too small: fewer keys */
			continue;
		}
		if (q.res == -ENOSPC && area_limited) {
			err = -ENOBUFS; /* one string larger than the data area */
			break;
		}
		/* check and copy: lengths, then the strings that were written */
		uint64_t written = 0, known = 0;
		bool stop = false;
		for (uint64_t i = 0; i < cnt; i++) {
			uint32_t l;
			memcpy(&l, tmp + 4 * i, 4);
			if (l != UINT32_MAX && l > DE_MAX_KEY_BYTES) {
				err = -EBADMSG;
				break;
			}
			lens[done + i] = l;
			if (l == UINT32_MAX)
				continue;
			known++;
			if (!stop && written + l <= sroom)
				written += l;
			else
				stop = true; /* the daemon writes no string after one that failed */
		}
		if (err)
			break;
		if (known != q.count || (q.res == 0 && stop)) {
			err = -EBADMSG;
			break;
		}
		if (written) {
			memcpy(buf + used, tmp + 4 * cnt, written);
			used += written;
		}
		if (q.res == -ENOSPC)
			over = true;
		done += cnt;
	}
	free(tmp);
	if (!err && over)
		err = -ENOSPC;
	return err;
}

int dynemb_string_key(dynemb_client *c, int table, const char *s, size_t len, uint64_t *key)
{
	struct de_priv_table t;
	int err = de_priv_table(c, table, &t);
	if (err)
		return err;
	if (!key || (len && !s))
		return de_priv_err(-EINVAL, "%s is NULL", key ? "s" : "key");
	if (len > DE_MAX_KEY_BYTES)
		return de_priv_err(-EINVAL, "the string key is %zu bytes: a string key is at "
				   "most %u bytes", len, DE_MAX_KEY_BYTES);
	if (t.key_type != DE_KEYS_STRING)
		return de_priv_err(-EINVAL, "table handle %d has int64 keys: it has no string "
				   "keys to fingerprint", table);
	*key = de_key_from_string(t.seed, s, len);
	return 0;
}
