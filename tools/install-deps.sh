#!/usr/bin/env bash
# Installs every build and test dependency of dynemb: Debian 12's packages with apt-get,
# then the project virtual environment .venv at the repository root (ignored by git) with
# the pinned Python packages of tools/python-requirements.txt (TensorFlow, PyTorch, numpy,
# pytest, matplotlib), from which meson builds the TensorFlow op library and every Python
# test, demo and benchmark runs. Idempotent, and silent when everything is already there.
# Needs root (or sudo) for apt-get. --tfra also makes .venv-tfra (tools/bench/bench_tf.py).
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(
  gcc make pkg-config meson ninja-build    # toolchain and build
  libasan8 libubsan1 libtsan2              # sanitizer runtimes for the test builds
  liburing-dev libhwloc-dev hwloc libnuma-dev libxxhash-dev   # libraries
  libisal-dev                               # CRC32C (isa-l) for the export format
  libinih-dev                               # dynembd's config file (INI)
  libcriterion-dev                          # C test framework
  clang libclang-rt-14-dev                  # libFuzzer targets (tools/fuzz.sh)
  python3-venv python3-setuptools python3-pip  # .venv, and the venvs the tests make from it
  fio                                       # dynemb-bench persist's file-system baseline
  redis-server redis-tools                  # dynemb-bench sidecar/peers baselines
  libmicrohttpd-dev                         # the daemon's /metrics endpoint (Prometheus)
  libssl-dev                                # libcrypto: HMAC-SHA256 of the peer handshake (src/peer)
  valgrind                                  # callgrind and its headers: the instruction-count
                                            # gate (tools/bench/icount.py, .ci/run)
  systemd                                   # systemd-analyze verify of tools/deploy/systemd's
                                            # unit (meson test deploy_systemd)
)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "install-deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >/dev/null
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# A venv from Debian's python3 (the interpreter the venv's packages are built for: cp311)
# with the pinned packages of a requirements file. VENV/dynemb-requirements.txt is the copy
# of the requirements it was last installed from: the same file means nothing to do.
install_venv() {
  local venv=$1 req=$2
  if [ -x "$venv/bin/python" ] && cmp -s "$req" "$venv/dynemb-requirements.txt"; then
    return 0
  fi
  echo "install-deps: installing $req into $venv (a few minutes the first time)" >&2
  [ -x "$venv/bin/python" ] || /usr/bin/python3 -m venv "$venv"
  local log
  log=$(mktemp)
  if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" \
       > "$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    echo "install-deps: pip install -r $req into $venv failed (output above)" >&2
    exit 1
  fi
  rm -f "$log"
  cp "$req" "$venv/dynemb-requirements.txt"
}

# The project venv.
install_venv .venv tools/python-requirements.txt
# --tfra: also .venv-tfra, TensorFlow Recommenders-Addons with the one TensorFlow its
# release is built for, for tools/bench/bench_tf.py's comparison only (not the tests).
if [ "${1:-}" = "--tfra" ]; then
  install_venv .venv-tfra tools/tfra-requirements.txt
fi
