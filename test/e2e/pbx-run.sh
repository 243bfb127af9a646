#!/usr/bin/env bash
# Runs a command inside the Debian sid root that scripts/e2e-setup.sh made,
# the way the `asterisk` compose service runs it in its container:
#   /etc/asterisk    <- the repo's deploy/asterisk/, read-only (the compose bind mount)
#   /run, /tmp       <- fresh tmpfs, /run/asterisk owned by asterisk
#   /var/log/asterisk <- LOGDIR on the host, so the test can read the security log
# Usage (normally under `ip netns exec <ns>`):
#   pbx-run.sh ROOT CONFDIR LOGDIR -- COMMAND [ARGS...]
# All mounts are made in a private mount namespace: they vanish with the
# command, however it ends.
set -euo pipefail
if [ "${1:-}" != "--in-ns" ]; then
  exec unshare --mount --propagation private -- "$0" --in-ns "$@"
fi
shift
root=$1 conf=$2 logdir=$3
shift 3
[ "${1:-}" = "--" ] && shift
[ -x "$root/usr/sbin/asterisk" ] || { echo "pbx-run: no asterisk in $root (run scripts/e2e-setup.sh)" >&2; exit 2; }
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount -t tmpfs -o mode=0755 tmpfs "$root/run"
mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
install -d -o "$(chroot "$root" id -u asterisk)" -g "$(chroot "$root" id -g asterisk)" "$root/run/asterisk"
mount --bind "$conf" "$root/etc/asterisk"
mount -o remount,bind,ro "$root/etc/asterisk"
mkdir -p "$logdir"
chown "$(chroot "$root" id -u asterisk):$(chroot "$root" id -g asterisk)" "$logdir"
mount --bind "$logdir" "$root/var/log/asterisk"
exec chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 HOME=/var/lib/asterisk "$@"
