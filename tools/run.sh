#!/usr/bin/env bash
# Installs what is needed, builds (release), and runs the main job. Until the daemon
# exists (issue 3), the main job is the table benchmark's short mode: it builds a table of
# 1M keys in shared memory and measures lookups against a plain in-process gather.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
[ -f build-release/build.ninja ] || meson setup build-release --buildtype=release -Dtests=disabled >/dev/null
ninja -C build-release >/dev/null
exec build-release/tools/bench/dynemb-bench table --short "$@"
