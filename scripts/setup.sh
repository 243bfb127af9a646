#!/usr/bin/env bash
# One setup command for a fresh Debian/Ubuntu machine with Node 20 or newer (20 and 24 are tested):
# the kernel tools Ampere drives (iptables, ipset, conntrack), gcc and libc6-dev for its native
# ipset loader (native/ipset-load.c; without them full loads use the slower ipset restore), the
# tools its tests use (iproute2, debootstrap, sipvicious, fail2ban for import-fail2ban,
# postgresql for the fleet tests), then npm ci and the build (TypeScript, the native loader).
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(iptables ipset conntrack iproute2 gcc libc6-dev)
[ "${1:-}" = "--with-test-tools" ] && pkgs+=(debootstrap sipvicious fail2ban postgresql)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "setup: please install ${missing[*]} (needs root and apt-get)" >&2
    exit 1
  fi
  echo "setup: apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # The tests need fail2ban's and PostgreSQL's programs only (the fleet tests start throwaway
  # clusters): their services (an sshd jail with iptables, a system cluster) must never start
  # here, so package scripts may start no service during this install (policy-rc.d 101).
  guard=""
  if [[ " ${missing[*]} " == *" fail2ban "* || " ${missing[*]} " == *" postgresql "* ]] && [ ! -e /usr/sbin/policy-rc.d ]; then
    guard=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' > "$guard" && chmod 0755 "$guard"
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ -n "$guard" ] && rm -f "$guard"
  if [[ " ${missing[*]} " == *" fail2ban "* ]] && command -v systemctl >/dev/null; then systemctl disable --now fail2ban >/dev/null 2>&1 || true; fi
fi

node -e 'const [maj]=process.versions.node.split(".");if(+maj<20){console.error("setup: Node 20 or newer is needed, found "+process.version);process.exit(1)}'
# better-sqlite3 builds its native module in an install script; npm 12 runs only the
# scripts package.json's "allowScripts" allows, and says so without failing: check it loads.
npm ci --no-audit --no-fund
node scripts/check-native.cjs
npm run build
# A plain host: ampere on PATH, an example /etc/ampere/ampere.cfg, the systemd unit.
if [ "$(id -u)" -eq 0 ] && [ -z "${AMPERE_NO_INSTALL:-}" ]; then
  bash scripts/install.sh
else
  echo "setup: not root (or AMPERE_NO_INSTALL set): skipped scripts/install.sh (ampere on PATH, /etc/ampere, the unit)"
fi
echo "setup: done. Start with: sudo npm start, or systemctl enable --now ampere   (config: /etc/ampere/ampere.cfg or AMPERE_* variables)"
