#!/bin/sh
# check_install.sh MESON BUILD_DIR SOURCE_DIR: the meson test 'install' (suite install).
# Installs the build into a temporary destdir, checks that only the daemon, dynembctl,
# libdynemb, its header, dynemb.pc (and the TensorFlow op library where it is built) are
# installed, then compiles consumer.c against the installed library through pkg-config
# alone (PKG_CONFIG_PATH and PKG_CONFIG_SYSROOT_DIR into the destdir), runs it with
# LD_LIBRARY_PATH into the destdir and checks it prints dynemb_strerror's text for ENOENT.
# CC (from meson) is the compiler.
set -eu
meson=$1 build=$2 src=$3
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dynemb-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
root=$tmp/root

"$meson" install -C "$build" --no-rebuild --quiet --destdir "$root"

bad=$(cd "$root" && find . -type f -o -type l | sed 's|^\./||' | grep -Ev \
  '(^|/)bin/(dynembd|dynembctl)$|(^|/)libdynemb\.so(\.[0-9]+)*$|(^|/)libdynemb_tf\.so$|(^|/)include/dynemb\.h$|(^|/)pkgconfig/dynemb\.pc$' \
  || true)
if [ -n "$bad" ]; then
  echo "installed but not part of the product:" >&2
  echo "$bad" >&2
  exit 1
fi
for f in dynembd dynembctl dynemb.h dynemb.pc; do
  [ -n "$(find "$root" -name "$f")" ] || { echo "not installed: $f" >&2; exit 1; }
done

pc=$(find "$root" -name dynemb.pc)
PKG_CONFIG_PATH=$(dirname "$pc") PKG_CONFIG_SYSROOT_DIR=$root PKG_CONFIG_LIBDIR=
export PKG_CONFIG_PATH PKG_CONFIG_SYSROOT_DIR PKG_CONFIG_LIBDIR
flags=$(pkg-config --cflags --libs dynemb)
echo "pkg-config --cflags --libs dynemb: $flags"
# shellcheck disable=SC2086  # the flags are words
${CC:-cc} -o "$tmp/consumer" "$src/tests/install/consumer.c" $flags
libdir=$(pkg-config --libs-only-L dynemb | sed 's/^ *-L//; s/ *$//')
out=$(LD_LIBRARY_PATH=$libdir "$tmp/consumer")
echo "consumer: $out"
case $out in
  "-2 not found"*) ;;
  *) echo "expected dynemb_strerror(-ENOENT) (\"not found...\")" >&2; exit 1 ;;
esac
