#!/bin/sh
# The native ipset loader (native/ipset-load.c) into dist/ampere-ipset-load. Optional: without a
# C compiler Ampere loads through `ipset restore` (slower: BENCHMARKS.md, Findings), and says so.
set -eu
cd "$(dirname "$0")/.."
cc=$(command -v cc || command -v gcc || true)
if [ -z "$cc" ] || [ ! -e /usr/include/linux/netfilter/ipset/ip_set.h ]; then
  echo "build: no C compiler or kernel headers (gcc, libc6-dev): the native ipset loader is not built; full loads use ipset restore" >&2
  rm -f dist/ampere-ipset-load
  exit 0
fi
mkdir -p dist
"$cc" -O2 -Wall -Wextra -Werror -o dist/ampere-ipset-load.tmp native/ipset-load.c
mv dist/ampere-ipset-load.tmp dist/ampere-ipset-load
