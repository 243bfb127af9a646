#!/bin/sh
# Removes better-sqlite3's build leftovers from a node_modules (the image's build
# stage runs it after `npm prune --omit=dev`): the SQLite sources (deps/), the C++
# sources (src/), and everything under build/ but the addon build/Release/better_sqlite3.node.
#   prune-native.sh [node_modules directory]   (default ./node_modules)
set -eu
dir=${1:-node_modules}/better-sqlite3
[ -f "$dir/build/Release/better_sqlite3.node" ] || { echo "prune-native: no $dir/build/Release/better_sqlite3.node" >&2; exit 1; }
cd "$dir"
find build -mindepth 1 ! -path build/Release ! -path build/Release/better_sqlite3.node -prune -exec rm -rf {} +
rm -rf deps src binding.gyp
