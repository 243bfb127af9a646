#!/usr/bin/env bash
# One setup command for a fresh Debian/Ubuntu machine with Node 20:
# the kernel tools Ampere drives (iptables, ipset, conntrack), the tools its tests use
# (iproute2, debootstrap, sipvicious, fail2ban for import-fail2ban, and gcc for the benchmark's netprobe), then npm ci and the TypeScript build.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(iptables ipset conntrack iproute2)
[ "${1:-}" = "--with-test-tools" ] && pkgs+=(debootstrap sipvicious gcc libc6-dev fail2ban)
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
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The tests need fail2ban's programs only: its service (sshd jail, iptables) must not run here.
  if [[ " ${missing[*]} " == *" fail2ban "* ]] && command -v systemctl >/dev/null; then systemctl disable --now fail2ban >/dev/null 2>&1 || true; fi
fi

node -e 'const [maj]=process.versions.node.split(".");if(+maj<20){console.error("setup: Node 20 or newer is needed, found "+process.version);process.exit(1)}'
npm ci --no-audit --no-fund
npm run build
echo "setup: done. Start with: sudo npm start   (config: /etc/ampere/ampere.cfg or AMPERE_* variables)"
