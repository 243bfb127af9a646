#!/usr/bin/env bash
# Prepares what the end-to-end test (test/e2e.test.ts) needs, idempotently:
#   * a Debian sid root file system (debootstrap --variant=minbase) in
#     $AMPERE_E2E_ROOT (default /var/cache/ampere-e2e/sid), with Debian's
#     asterisk, asterisk-modules and asterisk-config installed inside: the
#     same packages and version that docker/asterisk/Dockerfile installs;
#   * sipvicious (svwar, svcrack) on this host, from the host's own Debian.
# A second run finds everything in place and returns in a second.
# Needs root. Prints how long each step took.
set -euo pipefail

ROOT="${AMPERE_E2E_ROOT:-/var/cache/ampere-e2e/sid}"
MIRROR="${AMPERE_E2E_MIRROR:-http://deb.debian.org/debian}"
SUITE="${AMPERE_E2E_SUITE:-sid}"
STAMP="$ROOT/.ampere-e2e-ready"
# The Asterisk the demo image installs (docker/asterisk/Dockerfile): the same version from
# the same dated snapshot of the archive, so the test runs what a build of the image gets.
# AMPERE_E2E_UNPINNED=1 takes sid's newest instead (to move the pin on).
dockerfile_arg() { sed -n "s/^ARG $1=//p" "$(dirname "$0")/../docker/asterisk/Dockerfile"; }
SNAPSHOT=$(dockerfile_arg DEBIAN_SNAPSHOT)
ASTERISK_VERSION=$(dockerfile_arg ASTERISK_VERSION)
[ -n "$SNAPSHOT" ] && [ -n "$ASTERISK_VERSION" ] || { echo "[e2e-setup] no DEBIAN_SNAPSHOT/ASTERISK_VERSION in docker/asterisk/Dockerfile" >&2; exit 1; }
if [ -n "${AMPERE_E2E_UNPINNED:-}" ]; then
  PKGS=(asterisk asterisk-modules asterisk-config)
else
  PKGS=("asterisk=$ASTERISK_VERSION" "asterisk-modules=$ASTERISK_VERSION" "asterisk-config=$ASTERISK_VERSION")
fi

log() { printf '[e2e-setup] %s\n' "$*"; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

if [ "$(id -u)" -ne 0 ]; then
  log "must run as root (debootstrap, chroot, apt-get)"; exit 1
fi

t_all=$(now)

# --- sipvicious on the host -------------------------------------------------
if command -v svcrack >/dev/null 2>&1 && command -v svwar >/dev/null 2>&1; then
  log "sipvicious: already installed"
else
  t=$(now)
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends sipvicious >/dev/null \
    || { apt-get update >/dev/null && apt-get install -y --no-install-recommends sipvicious >/dev/null; }
  log "sipvicious: installed in $(elapsed "$t") s"
fi

for tool in debootstrap chroot unshare ip ipset; do
  command -v "$tool" >/dev/null 2>&1 || { log "missing tool on host: $tool"; exit 1; }
done

# --- the sid root -------------------------------------------------------------
if [ -f "$STAMP" ] && [ -x "$ROOT/usr/sbin/asterisk" ]; then
  log "sid root ready at $ROOT ($(cat "$STAMP"))"
  log "total $(elapsed "$t_all") s"
  exit 0
fi

# Run every chroot step in a private mount namespace: the /proc and /dev
# mounts it needs disappear with it, even if this script is killed.
in_root() {
  unshare --mount --propagation private -- bash -c '
    set -e
    root=$1; shift
    mount -t proc proc "$root/proc"
    mount --rbind /dev "$root/dev"
    exec chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
      DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 HOME=/root "$@"
  ' in_root "$ROOT" "$@"
}

if [ ! -x "$ROOT/usr/bin/apt-get" ] || [ ! -f "$ROOT/.ampere-debootstrap-done" ]; then
  t=$(now)
  rm -rf "$ROOT"
  mkdir -p "$(dirname "$ROOT")"
  log "debootstrap --variant=minbase $SUITE $ROOT $MIRROR ..."
  debootstrap --variant=minbase "$SUITE" "$ROOT" "$MIRROR" >"$ROOT.debootstrap.log" 2>&1 \
    || { tail -n 30 "$ROOT.debootstrap.log"; log "debootstrap failed"; exit 1; }
  touch "$ROOT/.ampere-debootstrap-done"
  log "debootstrap: $(elapsed "$t") s"
else
  log "debootstrap: cached"
fi

t=$(now)
# No daemons may start inside the chroot while packages install.
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod 755 "$ROOT/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
# The snapshot beside the live mirror: the pinned version comes from it, whatever sid holds now.
echo "deb [check-valid-until=no] http://snapshot.debian.org/archive/debian/$SNAPSHOT sid main" \
  >"$ROOT/etc/apt/sources.list.d/ampere-snapshot.list"
in_root apt-get -o Acquire::Check-Valid-Until=false -q update >"$ROOT.apt.log" 2>&1 \
  || { tail -n 30 "$ROOT.apt.log"; log "apt-get update failed"; exit 1; }
in_root apt-get -q -y --no-install-recommends install "${PKGS[@]}" >>"$ROOT.apt.log" 2>&1 \
  || { tail -n 30 "$ROOT.apt.log"; log "apt-get install failed"; exit 1; }
in_root apt-get clean >/dev/null 2>&1 || true
version=$(in_root dpkg-query -W -f='${Version}' asterisk)
log "asterisk $version installed: $(elapsed "$t") s"
echo "asterisk $version, $(date -u +%FT%TZ)" >"$STAMP"
log "total $(elapsed "$t_all") s"
