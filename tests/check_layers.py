#!/usr/bin/env python3
"""check_layers.py SRC_SERVER_DIR — calls in the daemon go down, never up.

Reads the #include "..." lines of every src/server/*.c and *.h and fails when a file
includes the header of a layer above its own, or the header of another module of its own
layer (learning and persistence are one layer: neither may call the other). A file may
always include its own module's headers. Every file and every local header must be named
below: a new one fails the check until it is given its layer.

The layer order, bottom (0) to top:

  0 validate  validate.h            the pure validators of untrusted bytes and configs;
                                    what the fuzz targets link (nothing of the daemon)
  1 log       log.h                 the log
    util      util.h                mkdir -p, the clock
    quota     quota.h               memory quotas of tables, sizing from budgets
  2 config    config.h config_ns.h  the daemon's configuration (and its [namespace]s)
    reply     reply.h               the one reply encoder of the control socket
  3 registry  tables.h batch.h      the table registry; the batch description
    authz     authz.h               who may do what to which table (config only)
  4 learn     learnops.h            admission, eviction, sampling, top-k on a batch
    persist   persist.h             WAL, snapshots, catalog, recovery, jobs on a batch
              persist_int.h         (private to the persist*.c files)
  5 peer      peers.h               forwarding to other hosts' dynembd (src/peer holds
                                    the wire, the handshake and the owner hash), between
                                    the operations and the worker
  6 worker    worker.h server.h     the data plane; it owns its batch
              slowpool.h            (TOPK and SAMPLE off the workers)
  7 control   control.h             the control plane (open -> learning -> persistence)
              control_int.h         (private to control*.c: DROP in control_drop.c,
                                    the queries in control_query.c, serving tables
                                    in control_serve.c)
    metrics   metrics.h             Prometheus /metrics on its own thread (libmicrohttpd)
  8 main                            main.c

Headers from outside src/server (proto.h, de_shm.h, de_learn.h, de_uring.h, de_peer.h, and
the client library's dynemb.h, which the peer layer uses to reach its own daemon) are below
every layer and always allowed. Exit 0 when every include goes down, 1 otherwise.
"""
import os
import re
import sys

# header -> (layer, module)
HEADERS = {
    "validate.h": (0, "validate"),
    "log.h": (1, "log"),
    "config.h": (2, "config"),
    "config_ns.h": (2, "config"),
    "util.h": (1, "util"),
    "quota.h": (1, "quota"),
    "reply.h": (2, "reply"),
    "tables.h": (3, "registry"),
    "authz.h": (3, "authz"),
    "batch.h": (3, "registry"),
    "learnops.h": (4, "learn"),
    "persist.h": (4, "persist"),
    "persist_int.h": (4, "persist"),
    "peers.h": (5, "peer"),
    "server.h": (6, "worker"),
    "worker.h": (6, "worker"),
    "slowpool.h": (6, "worker"),
    "control.h": (7, "control"),
    "control_int.h": (7, "control"),
    "metrics.h": (7, "metrics"),
}

# source file -> module (its layer is the module's)
SOURCES = {
    "validate_config.c": "validate",
    "validate_msg.c": "validate",
    "validate_sqe.c": "validate",
    "log.c": "log",
    "config.c": "config",
    "config_ns.c": "config",
    "util.c": "util",
    "quota.c": "quota",
    "reply.c": "reply",
    "tables.c": "registry",
    "authz.c": "authz",
    "learnops.c": "learn",
    "persist.c": "persist",
    "persist_catalog.c": "persist",
    "persist_write.c": "persist",
    "persist_threads.c": "persist",
    "persist_recover.c": "persist",
    "persist_jobs.c": "persist",
    "persist_strings.c": "persist",
    "persist_drop.c": "persist",
    "worker.c": "worker",
    "slowpool.c": "worker",
    "peers.c": "peer",
    "control.c": "control",
    "control_drop.c": "control",
    "control_query.c": "control",
    "control_serve.c": "control",
    "metrics.c": "metrics",
    "main.c": "main",
}

MODULE_LAYER = {m: l for (l, m) in HEADERS.values()}
MODULE_LAYER["main"] = 8

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')


def main(argv):
    if len(argv) != 2:
        print("usage: check_layers.py SRC_SERVER_DIR", file=sys.stderr)
        return 2
    root = argv[1]
    problems = []
    files = sorted(f for f in os.listdir(root) if f.endswith((".c", ".h")))
    for f in files:
        if f.endswith(".h"):
            if f not in HEADERS:
                problems.append(f"{f}: a header with no layer (add it to {argv[0]})")
                continue
            layer, module = HEADERS[f]
        else:
            if f not in SOURCES:
                problems.append(f"{f}: a source file with no layer (add it to {argv[0]})")
                continue
            module = SOURCES[f]
            layer = MODULE_LAYER[module]
        with open(os.path.join(root, f), encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                m = INCLUDE.match(line)
                if not m:
                    continue
                inc = os.path.basename(m.group(1))
                if inc not in HEADERS:
                    if os.path.exists(os.path.join(root, inc)):
                        problems.append(f"{f}:{n}: includes {inc}, which has no layer")
                    continue  # outside the daemon: proto.h, de_*.h
                il, imod = HEADERS[inc]
                if imod == module:
                    continue
                if il > layer:
                    problems.append(f"{f}:{n}: layer {layer} ({module}) includes {inc} of "
                                    f"layer {il} ({imod}) above it: calls go down only")
                elif il == layer:
                    problems.append(f"{f}:{n}: {module} includes {inc} of {imod}, another "
                                    f"module of the same layer {layer}")
    for p in problems:
        print("check_layers: " + p, file=sys.stderr)
    if not problems:
        print(f"check_layers: {len(files)} files, every include goes down")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
