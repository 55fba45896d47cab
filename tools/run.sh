#!/usr/bin/env bash
# Installs what is needed, builds (release), and runs the main job: starts dynembd on its
# embedded default config (a private socket, nothing else needed), runs a short demo
# client against it (lookups and updates over a growing key set, with a progress line and
# a summary), then tools/demo (PyTorch: dynemb vs. a hashed table vs. a fixed vocabulary,
# held-out AUC table and plot), then stops the daemon with SIGTERM and reports how it exited.
#   tools/run.sh [--seconds S]     (demo length, default 5)
# The table benchmark is `build-release/tools/bench/dynemb-bench table --short`.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
[ -f build-release/build.ninja ] || meson setup build-release --buildtype=release -Dtests=disabled >/dev/null
ninja -C build-release >/dev/null

run=$(mktemp -d /tmp/dynemb-run.XXXXXX)
sock="$run/dynemb.sock"
build-release/src/server/dynembd --foreground --socket "$sock" --allow-uid "$(id -u)" 2> "$run/dynembd.log" &
pid=$!
stop() { kill -TERM "$pid" 2>/dev/null || true; }
trap stop EXIT
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
[ -S "$sock" ] || { echo "run.sh: dynembd did not start:" >&2; cat "$run/dynembd.log" >&2; exit 1; }
echo "dynembd (pid $pid) listening on $sock"

rc=0
build-release/tools/demo_client --socket "$sock" "$@" || rc=$?
# The PyTorch demo on the same daemon: a click-through model with dynemb embeddings
# against a hashed table and a fixed vocabulary (AUC table, plot; tools/demo --help).
if [ "$rc" -eq 0 ]; then
  DYNEMB_BUILD="$PWD/build-release" tools/demo --socket "$sock" || rc=$?
fi

trap - EXIT
kill -TERM "$pid"
drc=0
wait "$pid" || drc=$?
echo "dynembd stopped on SIGTERM (exit $drc); its log:"
sed 's/^/  /' "$run/dynembd.log"
rm -rf "$run"
[ "$rc" -eq 0 ] && [ "$drc" -eq 0 ]
