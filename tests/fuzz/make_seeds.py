#!/usr/bin/python3
"""make_seeds.py - writes the seed inputs of three libFuzzer targets in tests/fuzz/.

    /usr/bin/python3 tests/fuzz/make_seeds.py      (rewrites corpus_control/, corpus_sqe/,
                                                    corpus_peer/)

The layouts are those of src/proto.h and shm/de_shm.h (little-endian, packed by layout);
the framing of each input is the one its fuzz target reads:

  fuzz_control: 1 byte of flags (bit 0: MSG_TRUNC, bit 1: this connection said HELLO),
                then the packet.
  fuzz_sqe:     struct de_sqe (64 bytes), then 16 bytes of limits
                  u8 ntables, u8 key_type (bit 0), u16 dim (1 + v % 4096),
                  u32 max_batch (1 + v % 2^20), u8 mode (bit 0: a large data area, not
                  touched), 3 bytes pad, u32 area (pages: small mode 1 + v % 4, large mode
                  1 + v % 2^20),
                then the first bytes of the data area (the rest is zeros).
  fuzz_peer:    the 24-byte peer frame header (src/peer/wire.c), 4 bytes of context
                  u8 dim, u16 n (of the request a reply answers), u8 flags (bits 0-3: the
                  request type a reply answers, 0: the header's own; bit 4: another
                  req_id; bit 7: the header alone, its len kept),
                then the payload (the header's len is set to its size unless bit 7).
Keep this file in step with tests/fuzz/fuzz_control.c, fuzz_sqe.c and fuzz_peer.c.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

MAGIC = 0x314D4544
VERSION = 3
HELLO, OPEN, SEGMENTS, BYE = 1, 3, 5, 8
NOP, LOOKUP, UPDATE, ERASE, STATS, APPLY_GRADS = 0, 1, 2, 3, 4, 5
LOOKUP_CREATE, SQE_STATUS, GRAD_LR = 0x01, 0x02, 0x04
SAMPLE, TOPK, KEY_STRINGS = 6, 7, 8
SAMPLE_STR, TOPK_COSINE = 0x01, 0x01
TRUNC, HELLO_DONE = 0x01, 0x02


def hdr(typ, length, seq=1, version=VERSION, magic=MAGIC):
    return struct.pack('<IHHII', magic, typ, version, length, seq)


def name(s):
    b = s.encode()
    return b + b'\0' * (64 - len(b))


def wire_cfg(dim=8, nslots=0, init=0, seg_buckets=0, a=0.0, b=0.0, slot_init=0.0,
             key_type=0, seed=0, reserved=(0,) * 6):
    return struct.pack('<IIIIfffIQ6I', dim, nslots, init, seg_buckets, a, b, slot_init,
                       key_type, seed, *reserved)


def hello(sq=0, data=0, nm='seed-client', **kw):
    return hdr(HELLO, 96, **kw) + struct.pack('<IIQ', sq, 0, data) + name(nm)


def learn_cfg(kind=0, lr=0.0, hp=(0.0,) * 12, admission=(0, 0, 0.0, 0, 0, 0),
              eviction=(0, 0, 0, 0, 0, 0, 0.0), durability=(0, 0)):
    # struct de_wire_learn_config (256 bytes): optim 128, admission 32, eviction 48,
    # durability 16, reserved 32
    optim = struct.pack('<II13d2Q', kind, 0, lr, *hp, 0, 0)
    adm = struct.pack('<IIdIIII', *admission, 0)
    ev = struct.pack('<IIQQIIdQ', *eviction, 0)
    du = struct.pack('<IIQ', *durability, 0)
    return optim + adm + ev + du + bytes(32)


def open_msg(nm, cfg, learn=None, **kw):
    return hdr(OPEN, 400, **kw) + name(nm) + cfg + (learn if learn is not None else learn_cfg())


def segments(table=0, first=0, pad=0, **kw):
    return hdr(SEGMENTS, 24, **kw) + struct.pack('<HHI', table, pad, first)


SNAPSHOT, EXPORT, IMPORT = 9, 11, 13
DROP = 21
STATUS, TABLES, STATS_BY_NAME, EVICT, LOG_LEVEL, OPSTATS = 23, 25, 27, 29, 31, 33


def path(p):
    b = p.encode()
    return b + bytes(1024 - len(b))


def snapshot_msg(nm='', flags=0, pad=0, **kw):
    return hdr(SNAPSHOT, 88, **kw) + (name(nm) if nm else bytes(64)) + struct.pack('<II', flags, pad)


def export_msg(nm, p, **kw):
    return hdr(EXPORT, 1104, **kw) + name(nm) + path(p)


def import_msg(nm, p, flags=0, pad=0, **kw):
    return hdr(IMPORT, 1112, **kw) + name(nm) + struct.pack('<II', flags, pad) + path(p)


CONTROL = {
    'hello': (0, hello()),
    'hello_sizes': (0, hello(sq=1024, data=8 << 20)),
    'hello_twice': (HELLO_DONE, hello()),
    'hello_v9': (0, hello(version=9)),
    'open_int': (HELLO_DONE, open_msg('emb', wire_cfg(dim=16, seed=42))),
    'open_string': (HELLO_DONE, open_msg('words', wire_cfg(dim=4, key_type=1, seg_buckets=256))),
    'open_uniform': (HELLO_DONE, open_msg('u', wire_cfg(dim=64, init=2, a=-0.05, b=0.05,
                                                          nslots=2, slot_init=0.1))),
    'open_normal': (HELLO_DONE, open_msg('n', wire_cfg(dim=4096, init=3, b=0.01))),
    'open_adam': (HELLO_DONE, open_msg('adam', wire_cfg(dim=8), learn_cfg(
        5, 1e-3, (0.0, 0.0, 0.0, 0.9, 0.999, 1e-8, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)))),
    'open_full_learn': (HELLO_DONE, open_msg('f', wire_cfg(dim=4, nslots=2), learn_cfg(
        7, 0.05, (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.1, 0.0, 0.01, 0.0, -0.5, 0.0),
        admission=(1, 3, 0.0, 1024, 4, 1), eviction=(3, 1, 0, 3600, 1, 0, 0.0),
        durability=(1, 20)))),
    'open_bad_learn': (HELLO_DONE, open_msg('b', wire_cfg(dim=4), learn_cfg(
        5, float('nan'), durability=(3, 0)))),
    'open_old_size': (HELLO_DONE, hdr(OPEN, 144) + name('old') + wire_cfg()),
    'open_before_hello': (0, open_msg('emb', wire_cfg())),
    'open_bad_name': (HELLO_DONE, open_msg('bad\tname', wire_cfg())),
    'segments': (HELLO_DONE, segments(0, 1)),
    'bye': (HELLO_DONE, hdr(BYE, 16)),
    'truncated': (TRUNC | HELLO_DONE, hdr(BYE, 16)),
    'short': (0, hdr(HELLO, 96)[:8]),
    # persistence (types 9..15): checked by srv_check_persist_msg
    'snapshot_all': (HELLO_DONE, snapshot_msg()),
    'snapshot_one_full': (HELLO_DONE, snapshot_msg('emb', flags=1)),
    'snapshot_bad_flags': (HELLO_DONE, snapshot_msg('emb', flags=6, pad=1)),
    'export': (HELLO_DONE, export_msg('emb', '/var/lib/dynemb/exports/emb.dexp')),
    'export_dotdot': (HELLO_DONE, export_msg('emb', '/var/lib/dynemb/../../etc/passwd')),
    'export_relative': (HELLO_DONE, export_msg('emb', 'emb.dexp')),
    'import_salvage': (HELLO_DONE, import_msg('emb', '/tmp/emb.dexp', flags=1)),
    'import_bad': (HELLO_DONE, import_msg('emb', '/tmp/', flags=2, pad=3)),
    'import_short': (HELLO_DONE, import_msg('emb', '/tmp/x')[:600]),
    # DROP (type 21): a name, checked by srv_name_check
    'drop': (HELLO_DONE, hdr(DROP, 80) + name('emb')),
    'drop_bad_name': (HELLO_DONE, hdr(DROP, 80) + name('a\x01b')),
    'drop_short': (HELLO_DONE, (hdr(DROP, 80) + name('emb'))[:40]),
    # DROP with flags (88 bytes): force, then an unknown flag and a nonzero pad (-EINVAL)
    'drop_force': (HELLO_DONE, hdr(DROP, 88) + name('emb') + struct.pack('<II', 1, 0)),
    'drop_bad_flags': (HELLO_DONE, hdr(DROP, 88) + name('emb') + struct.pack('<II', 6, 0)),
    'drop_bad_pad': (HELLO_DONE, hdr(DROP, 88) + name('emb') + struct.pack('<II', 1, 9)),
    # the operator's queries (types 23..33): exact lengths, names, a pad, a level
    'status': (HELLO_DONE, hdr(STATUS, 16)),
    'status_long': (HELLO_DONE, hdr(STATUS, 24) + bytes(8)),
    'tables': (HELLO_DONE, hdr(TABLES, 24) + struct.pack('<II', 28, 0)),
    'tables_pad': (HELLO_DONE, hdr(TABLES, 24) + struct.pack('<II', 0, 1)),
    'stats_by_name': (HELLO_DONE, hdr(STATS_BY_NAME, 80) + name('emb')),
    'evict_bad_name': (HELLO_DONE, hdr(EVICT, 80) + name('a\x01b')),
    'log_level': (HELLO_DONE, hdr(LOG_LEVEL, 24) + struct.pack('<II', 3, 0)),
    'log_level_bad': (HELLO_DONE, hdr(LOG_LEVEL, 24) + struct.pack('<II', 4, 0)),
    'opstats': (HELLO_DONE, hdr(OPSTATS, 24) + struct.pack('<II', 4, 0)),
    'opstats_pad': (HELLO_DONE, hdr(OPSTATS, 24) + struct.pack('<II', 0, 1)),
}


def sqe(op, flags=0, table=0, count=0, user_data=7, keys=(0, 0), vals=(0, 0), status=0, arg=0):
    return struct.pack('<BBHIQQQQQQQ', op, flags, table, count, user_data, keys[0], keys[1],
                       vals[0], vals[1], status, arg)


def limits(ntables=1, key_type=0, dim=8, max_batch=1024, large=False, pages=1):
    # dim and max_batch are stored as v with 1 + v % N in the target: store value - 1
    return struct.pack('<BBHIB3xI', ntables, key_type, dim - 1, max_batch - 1,
                       1 if large else 0, pages - 1)


def strings(*words):
    bs = [w.encode() for w in words]
    return struct.pack('<%dI' % len(bs), *[len(b) for b in bs]) + b''.join(bs)


K = 0        # keys at the start of the area
V = 1024     # values after them
S = 3072     # status bytes near the end of a 4 KiB area
ks = strings('apple', '', 'banana', 'x' * 40)
SQE = {
    'nop': sqe(NOP) + limits(ntables=0),
    'lookup_int': sqe(LOOKUP, count=4, keys=(K, 32), vals=(V, 4 * 8 * 4)) + limits()
    + struct.pack('<4Q', 1, 2, 3, 1 << 63),
    'lookup_create_status': sqe(LOOKUP, LOOKUP_CREATE | SQE_STATUS, count=4, keys=(K, 32),
                                vals=(V, 128), status=S) + limits(),
    'update_int': sqe(UPDATE, SQE_STATUS, count=2, keys=(K, 16), vals=(V, 2 * 8 * 4), status=S,
                      arg=5) + limits(),
    'erase_int': sqe(ERASE, count=3, table=1, keys=(8, 24)) + limits(ntables=2),
    'stats': sqe(STATS, vals=(V, 128)) + limits(),
    'lookup_string': sqe(LOOKUP, LOOKUP_CREATE, count=4, keys=(K, len(ks)), vals=(V, 4 * 4 * 4))
    + limits(key_type=1, dim=4) + ks,
    'erase_string': sqe(ERASE, count=4, keys=(K, len(ks))) + limits(key_type=1) + ks,
    'string_bad_len': sqe(ERASE, count=2, keys=(K, 8 + 3)) + limits(key_type=1)
    + struct.pack('<II', 70000, 0) + b'abc',
    'range_end': sqe(LOOKUP, count=1, keys=(4096 - 8, 8), vals=(4096 - 32, 32)) + limits(),
    'range_past': sqe(LOOKUP, count=1, keys=(4096, 8), vals=(0, 32)) + limits(),
    'range_wrap': sqe(ERASE, count=1, keys=(0xFFFFFFFFFFFFFFF8, 8)) + limits(),
    'too_many': sqe(ERASE, count=1025, keys=(0, 8 * 1025)) + limits(pages=4),
    'misaligned': sqe(LOOKUP, count=1, keys=(4, 8), vals=(V + 2, 32)) + limits(),
    'grads_int': sqe(APPLY_GRADS, count=2, keys=(K, 16), vals=(V, 2 * 8 * 4), arg=3) + limits()
    + struct.pack('<2Q', 5, 5),
    'grads_lr': sqe(APPLY_GRADS, GRAD_LR, count=2, keys=(K, 16), vals=(V, 2 * 8 * 4),
                    status=struct.unpack('<Q', struct.pack('<d', 0.05))[0]) + limits(),
    'grads_bad_lr': sqe(APPLY_GRADS, GRAD_LR, count=1, keys=(K, 8), vals=(V, 32),
                        status=struct.unpack('<Q', struct.pack('<d', float('inf')))[0]) + limits(),
    'grads_string': sqe(APPLY_GRADS, count=4, keys=(K, len(ks)), vals=(V, 4 * 4 * 4))
    + limits(key_type=1, dim=4) + ks,
    # SAMPLE (6): positives, 32-byte args at S - 64 (kind, ns, unique, pad, power, seed)
    'sample_int': sqe(SAMPLE, count=2, keys=(K, 16), vals=(V, 13 * 5 + 4 * 2), status=S - 64)
    + limits() + struct.pack('<2Q', 1, 2).ljust(S - 64, b'\0')
    + struct.pack('<IIIIdQ', 1, 5, 1, 0, 0.0, 42),
    'sample_unigram': sqe(SAMPLE, count=0, vals=(V, 13 * 3), status=S - 64) + limits()
    + bytes(S - 64) + struct.pack('<IIIIdQ', 2, 3, 0, 0, 0.75, 1),
    'sample_string': sqe(SAMPLE, SAMPLE_STR, count=4, keys=(K, len(ks)), vals=(V, 13 + 16),
                         status=S - 64) + limits(key_type=1)
    + ks.ljust(S - 64, b'\0') + struct.pack('<IIIIdQ', 0, 1, 0, 0, 0.0, 7),
    'sample_bad_args': sqe(SAMPLE, count=0, vals=(V, 13 * 3), status=S - 64) + limits()
    + bytes(S - 64) + struct.pack('<IIIIdQ', 0, 4, 2, 1, float('nan'), 1),
    # TOPK (7): 2 queries of dim 8, k = 3, cosine
    'topk': sqe(TOPK, TOPK_COSINE, count=2, keys=(K, 2 * 8 * 4), vals=(V, 12 * 2 * 3), arg=3)
    + limits() + struct.pack('<16f', *range(16)),
    'topk_bad_k': sqe(TOPK, count=1, keys=(K, 32), vals=(V, 12), arg=0) + limits(),
    # KEY_STRINGS (8): 3 fingerprints, lengths + 100 bytes of strings
    'key_strings': sqe(KEY_STRINGS, count=3, keys=(K, 24), vals=(V, 12 + 100))
    + limits(key_type=1) + struct.pack('<3Q', 0, 1, 2),
    'key_strings_int': sqe(KEY_STRINGS, count=1, keys=(K, 8), vals=(V, 4)) + limits(),
    'bad_op': sqe(9) + limits(),
    'bad_table': sqe(ERASE, table=3, count=1, keys=(0, 8)) + limits(ntables=3),
    'large_area': sqe(UPDATE, count=1 << 20, keys=(0, 8 << 20), vals=(8 << 20, 4 << 20),
                      ) + limits(dim=1, max_batch=1 << 20, large=True, pages=1 << 20),
}


# ---- peer frames (src/peer/wire.c) ----
PEER_MAGIC = 0x52504544
P_OPEN, P_LOOKUP, P_UPDATE, P_APPLY, P_ERASE, P_PING, P_TOPK, P_SAMPLE = 1, 2, 3, 4, 5, 6, 7, 8
P_REPLY = 0x80


def phdr(typ, length, status=0, req=7, version=1, magic=PEER_MAGIC):
    return struct.pack('<IHHQIi', magic, version, typ, req, length, status)


def peer(typ, payload, dim=4, n=0, flags=0, status=0, req=7, **kw):
    return phdr(typ, len(payload), status, req, **kw) + struct.pack('<BHB', dim, n, flags) + payload


def pbatch(typ, n, dim, flags=0, handle=1, step=5, lr=0.0, reserved=0, vals=None):
    b = struct.pack('<IIQII', handle, flags, step, n, reserved)
    if typ == P_APPLY:
        b += struct.pack('<d', lr)
    if typ != P_TOPK:
        b += struct.pack('<%dQ' % n, *[1000 + i for i in range(n)])
    if typ in (P_UPDATE, P_APPLY, P_TOPK):
        v = vals if vals is not None else [i * 0.25 - 3 for i in range(n * dim)]
        b += struct.pack('<%df' % (n * dim), *v)
    return b


def topk_reply(n, k, found):
    keys, scores = [], []
    for q in range(n):
        for j in range(k):
            keys.append(500 + q * k + j if j < found else 0)
            scores.append(float(k - j) if j < found else float('-inf'))
    return (struct.pack('<IIII', n, found, 0, 0) + struct.pack('<%dQ' % (n * k), *keys)
            + struct.pack('<%df' % (n * k), *scores))


def sample_req(kind, n, pos, power=0.0, seed=9):
    return struct.pack('<IIQIId', 0, kind, seed, n, len(pos), power) + struct.pack(
        '<%dQ' % len(pos), *pos)


def sample_reply(keys, probs, pprobs, pop=100, weight=100.0):
    return (struct.pack('<IIQd', len(keys), len(pprobs), pop, weight)
            + struct.pack('<%dQ' % len(keys), *keys) + struct.pack('<%df' % len(probs), *probs)
            + struct.pack('<%df' % len(pprobs), *pprobs))


def lookup_reply(st, dim, found=None, created=None):
    n = len(st)
    found = st.count(1) if found is None else found
    created = st.count(2) if created is None else created
    pad = (n + 7) // 8 * 8
    return (struct.pack('<IIII', n, found, created, 0) + bytes(st) + bytes(pad - n)
            + struct.pack('<%df' % (n * dim), *[float(i) for i in range(n * dim)]))


LST = [0, 1, 2, 1, 1, 0, 2, 2, 1, 0, 1]
PEER = {
    'open': peer(P_OPEN, name('emb') + wire_cfg(dim=16) + learn_cfg()),
    'open_bad_pad': peer(P_OPEN, b'emb\0\0x' + bytes(58) + wire_cfg() + learn_cfg()),
    'open_ctl_name': peer(P_OPEN, name('e\nb') + wire_cfg() + learn_cfg()),
    'open_short': peer(P_OPEN, name('emb') + wire_cfg()),
    'lookup': peer(P_LOOKUP, pbatch(P_LOOKUP, 3, 4, flags=1), dim=4),
    'lookup_bad_flags': peer(P_LOOKUP, pbatch(P_LOOKUP, 3, 4, flags=2), dim=4),
    'update': peer(P_UPDATE, pbatch(P_UPDATE, 4, 3), dim=3),
    'update_nan': peer(P_UPDATE, pbatch(P_UPDATE, 2, 2, vals=[1.0, float('nan'), 0.0, 2.0]), dim=2),
    'update_dim0': peer(P_UPDATE, pbatch(P_UPDATE, 2, 2), dim=0),
    'apply_lr': peer(P_APPLY, pbatch(P_APPLY, 4, 2, flags=1, lr=0.05), dim=2),
    'apply_bad_lr': peer(P_APPLY, pbatch(P_APPLY, 1, 2, flags=1, lr=float('inf')), dim=2),
    'apply_lr_noflag': peer(P_APPLY, pbatch(P_APPLY, 1, 2, lr=0.5), dim=2),
    'erase': peer(P_ERASE, pbatch(P_ERASE, 5, 1), dim=1),
    'erase_reserved': peer(P_ERASE, pbatch(P_ERASE, 5, 1, reserved=1), dim=1),
    'batch_zero': peer(P_ERASE, pbatch(P_ERASE, 0, 1), dim=1),
    'topk': peer(P_TOPK, pbatch(P_TOPK, 2, 3, flags=1, step=4), dim=3),
    'topk_k0': peer(P_TOPK, pbatch(P_TOPK, 2, 3, step=0), dim=3),
    'topk_many': peer(P_TOPK, pbatch(P_TOPK, 300, 1, step=65536), dim=1),
    'topk_reply': peer(P_TOPK | P_REPLY, topk_reply(2, 4, 3), dim=4, n=2),
    'topk_reply_full': peer(P_TOPK | P_REPLY, topk_reply(3, 2, 2), dim=2, n=3),
    'topk_reply_over': peer(P_TOPK | P_REPLY, topk_reply(1, 2, 2), dim=1, n=1),
    'sample': peer(P_SAMPLE, sample_req(0, 5, [3, 0, 9])),
    'sample_unigram': peer(P_SAMPLE, sample_req(2, 64, [], power=0.75)),
    'sample_bad_power': peer(P_SAMPLE, sample_req(0, 5, [], power=0.5)),
    'sample_kind1': peer(P_SAMPLE, sample_req(1, 5, [1])),
    'sample_reply': peer(P_SAMPLE | P_REPLY, sample_reply([5, 6, 7], [0.25, 0.5, 1.0], [0.0, 0.1]),
                         dim=2, n=3),
    'sample_reply_key0': peer(P_SAMPLE | P_REPLY, sample_reply([5, 0], [0.2, 0.2], []), n=2),
    'sample_reply_w0': peer(P_SAMPLE | P_REPLY, sample_reply([5], [0.2], [], weight=0.0), n=1),
    'ping': peer(P_PING, b''),
    'ping_reply': peer(P_PING | P_REPLY, b''),
    'open_reply': peer(P_OPEN | P_REPLY, struct.pack('<II', 3, 16), dim=16),
    'lookup_reply': peer(P_LOOKUP | P_REPLY, lookup_reply(LST, 3), dim=3, n=len(LST)),
    'lookup_reply_counts': peer(P_LOOKUP | P_REPLY, lookup_reply(LST, 3, found=4), dim=3,
                                n=len(LST)),
    'lookup_reply_8': peer(P_LOOKUP | P_REPLY, lookup_reply([1] * 8, 2), dim=2, n=8),
    'update_reply': peer(P_UPDATE | P_REPLY, struct.pack('<IIII', 6, 2, 0, 0), n=6),
    'apply_reply': peer(P_APPLY | P_REPLY, struct.pack('<IIII', 6, 6, 2, 0), n=6),
    'erase_reply': peer(P_ERASE | P_REPLY, struct.pack('<IIII', 6, 3, 0, 0), n=6),
    'erase_reply_b': peer(P_ERASE | P_REPLY, struct.pack('<IIII', 6, 3, 1, 0), n=6),
    'error_reply': peer(P_LOOKUP | P_REPLY, b"no table 'x'\n\x1b[31m", status=-2, n=3),
    'reply_other_req': peer(P_UPDATE | P_REPLY, struct.pack('<IIII', 6, 2, 0, 0), n=6,
                            flags=16),
    'reply_other_type': peer(P_UPDATE | P_REPLY, struct.pack('<IIII', 6, 2, 0, 0), n=6,
                             flags=P_ERASE),
    'bad_magic': peer(P_PING, b'', magic=0x52504545),
    'bad_version': peer(P_PING, b'', version=2),
    'request_status': peer(P_PING, b'', status=-5),
    'header_len_over': phdr(P_LOOKUP, (64 << 20) + 1) + struct.pack('<BHB', 4, 0, 0x80),
}


def write(dirname, items):
    d = os.path.join(HERE, dirname)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        os.unlink(os.path.join(d, f))
    for k, v in items.items():
        with open(os.path.join(d, k), 'wb') as f:
            f.write(v)


write('corpus_control', {k: bytes([fl]) + m for k, (fl, m) in CONTROL.items()})
write('corpus_sqe', SQE)
write('corpus_peer', PEER)
print('make_seeds: %d control seeds, %d descriptor seeds, %d peer frame seeds'
      % (len(CONTROL), len(SQE), len(PEER)))
