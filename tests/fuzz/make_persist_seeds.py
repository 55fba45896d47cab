#!/usr/bin/python3
"""make_persist_seeds.py - writes the seeds of fuzz_wal, fuzz_snapshot and fuzz_manifest.

    /usr/bin/python3 tests/fuzz/make_persist_seeds.py   (rewrites corpus_{wal,snapshot,manifest}/)

Written from the byte layouts at the top of uring/wal.c, uring/snapshot.c and
uring/manifest.c (independently of the C code: the seeds double as a format check).
Each input is 1 byte of flags (what the target recomputes, see the target) + the file.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def crc32c(data, crc=0):
    crc ^= 0xffffffff
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82f63b78 & -(crc & 1))
    return crc ^ 0xffffffff


assert crc32c(b"123456789") == 0xe3069283


def wal_segment(records):
    h = b"DEWALSG1" + struct.pack("<IIQ", 1, 64, 1) + bytes(36)
    out = h + struct.pack("<I", crc32c(h))
    for lsn, (typ, table, payload, n, rf) in enumerate(records, 1):
        length = (40 + len(payload) + 7) // 8 * 8
        body = payload + bytes(length - 40 - len(payload))
        head = struct.pack("<IIQIHHII", 0x52574544, length, lsn, table, typ, 0, n, rf)
        crc = crc32c(struct.pack("<I", 0) + body, crc32c(head))
        out += head + struct.pack("<II", crc, 0) + body
    return out


def put(keys, rf, step=1):
    p = b""
    for k in keys:
        p += struct.pack("<QQIIQ", k, step, 3, 1, 7) + struct.pack("<%df" % rf, *[k % 10 + 0.5] * rf)
    return p


def snapshot(records, dim=2, nslots=1, kind=1, seq=1, parent=0, table=1, start_lsn=5):
    rf = dim * (1 + nslots)
    rb = 40 + 4 * rf
    h = b"DESNAP01" + struct.pack("<IIIIIfffQII", 1, 128, dim, nslots, 0, 0, 0, 0, 1, rf, rb)
    h += struct.pack("<IIQQQIIQ", table, kind, seq, parent, start_lsn, 1024, 0, len(records))
    h += bytes(20)
    h += struct.pack("<I", crc32c(h))
    body, crcs, tombs = b"", b"", 0
    for i, (key, flags) in enumerate(records):
        rec = struct.pack("<QQIIQ", key, 4, 2, flags, 9)
        floats = struct.pack("<%df" % rf, *([0.0] * rf if flags == 2 else [key * 0.25] * rf))
        crc = crc32c(struct.pack("<Q", i))
        crc = crc32c(rec, crc)
        crc = crc32c(struct.pack("<I", 0) + floats, crc)
        body += rec + struct.pack("<II", crc, 0) + floats
        crcs += struct.pack("<I", crc)
        tombs += flags == 2
    t = b"DESNEND1" + struct.pack("<QIII", len(records), crc32c(crcs), tombs, 0)
    t += struct.pack("<I", crc32c(t))
    return h + body + t


def manifest(tables, generation=3):
    body = b""
    for tid, lsn, seqs in tables:
        body += struct.pack("<IIQ", tid, len(seqs), lsn) + b"".join(struct.pack("<Q", s) for s in seqs)
    size = 32 + len(body) + 4
    data = b"DEMANIF1" + struct.pack("<IIQII", 1, size, generation, len(tables), 0) + body
    return data + struct.pack("<I", crc32c(data))


def write(corpus, name, data):
    d = os.path.join(HERE, corpus)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


seg = wal_segment([(1, 1, put([11, 12], 3), 2, 3), (2, 1, struct.pack("<Q", 11), 1, 0),
                   (1, 2, put([13], 5, 2), 1, 5)])
for flags in (0, 3):
    write("corpus_wal", "three-f%d" % flags, bytes([flags]) + seg)
write("corpus_wal", "torn-f0", bytes([0]) + seg[:-9])
write("corpus_wal", "header-only-f0", bytes([0]) + seg[:64])

full = snapshot([(5, 1), (6, 1), (7, 1)])
inc = snapshot([(5, 1), (8, 2)], kind=2, seq=2, parent=1)
for flags in (0, 3):
    write("corpus_snapshot", "full3-f%d" % flags, bytes([flags]) + full)
    write("corpus_snapshot", "incr-f%d" % flags, bytes([flags]) + inc)
write("corpus_snapshot", "empty-f0", bytes([0]) + snapshot([]))

m = manifest([(1, 40, [3, 5]), (4, 1, []), (9, 12, [1])])
for flags in (0, 1):
    write("corpus_manifest", "three-f%d" % flags, bytes([flags]) + m)
write("corpus_manifest", "empty-f0", bytes([0]) + manifest([]))
