#!/usr/bin/env bash
# Installs every build and test dependency of dynemb on Debian 12 with apt-get.
# Idempotent, and silent when everything is already there. Needs root (or sudo).
set -euo pipefail

pkgs=(
  gcc make pkg-config meson ninja-build    # toolchain and build
  libasan8 libubsan1 libtsan2              # sanitizer runtimes for the test builds
  liburing-dev libhwloc-dev hwloc libnuma-dev libxxhash-dev   # libraries
  libisal-dev                               # CRC32C (isa-l) for the export format
  libinih-dev                               # dynembd's config file (INI)
  libcriterion-dev                          # C test framework
  clang libclang-rt-14-dev                  # libFuzzer targets (tools/fuzz.sh)
  python3-numpy python3-pytest              # the Python package and its tests
  python3-venv python3-setuptools python3-pip  # the venv the tests install the package into
  python3-torch                             # the reference for the optimizer tests
  python3-matplotlib                        # tools/demo's and tools/word2vec's plots
  fio                                       # dynemb-bench persist's file-system baseline
)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
