#!/usr/bin/env bash
# Runs a command the way the `ampere` compose service runs its container's,
# minus the image: in a private mount namespace (normally entered with
# `ip netns exec <pbx-ns>`, which stands for network_mode: host), with the
# compose volumes bind-mounted at their container paths.
#   container-run.sh [--bind SRC:DST[:ro]]... [--empty DIR]... [--null FILE]... \
#                    [--cwd DIR] -- COMMAND [ARGS...]
#   --bind   a bind mount (the compose volumes, and the repo at /app)
#   --empty  an empty tmpfs over DIR (hides host files the image does not have)
#   --null   /dev/null over FILE (likewise, for a single file)
# The mounts vanish with the command however it ends. Mount points must exist.
set -euo pipefail
if [ "${1:-}" != "--in-ns" ]; then
  exec unshare --mount --propagation private -- "$0" --in-ns "$@"
fi
shift
cwd=/
while [ $# -gt 0 ]; do
  case "$1" in
    --bind)
      IFS=: read -r src dst mode <<<"$2"
      mount --bind "$src" "$dst"
      if [ "${mode:-}" = ro ]; then mount -o remount,bind,ro "$dst"; fi
      shift 2 ;;
    --empty) mount -t tmpfs -o mode=0755,size=1m tmpfs "$2"; shift 2 ;;
    --null) mount --bind /dev/null "$2"; shift 2 ;;
    --cwd) cwd=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "container-run: unknown option $1" >&2; exit 2 ;;
  esac
done
cd "$cwd"
exec "$@"
