#!/bin/sh
# check_exports.sh LIB — the installed library exports dynemb.h and nothing else: every
# defined dynamic symbol of LIB (libdynemb.so) is a dynemb_* function, apart from the
# version nodes of libdynemb.map (absolute symbols named DYNEMB_*). Run by meson
# (tests/meson.build, test 'exports'); exit 1 naming each stray symbol.
set -eu
lib=${1:?usage: check_exports.sh LIB}
NM=${NM:-nm}
syms=$("$NM" -D --defined-only "$lib") || { echo "check_exports: $NM failed on $lib" >&2; exit 1; }
bad=$(printf '%s\n' "$syms" | awk 'NF >= 2 {
	name = $NF; type = $(NF - 1); sub(/@.*/, "", name)
	if (name ~ /^dynemb_[a-z0-9_]+$/ && type == "T") next
	if (name ~ /^DYNEMB_[A-Za-z0-9_.]+$/ && type == "A") next
	print type " " name }')
n=$(printf '%s\n' "$syms" | awk '$(NF - 1) == "T"' | wc -l)
if [ -n "$bad" ]; then
	echo "check_exports: $lib defines symbols outside dynemb_*:" >&2
	printf '%s\n' "$bad" | sed 's/^/  /' >&2
	exit 1
fi
echo "check_exports: $lib: $n dynemb_* functions, nothing else"
