#!/usr/bin/env bash
# Ampere on a plain host (no Docker), after the build (npm run setup runs this as root):
#   - /usr/local/bin/ampere -> this checkout's dist/cli.js (ampere status, ampere ban, ...)
#   - /etc/ampere/ampere.cfg: an example, only if none exists (never overwritten)
#   - /etc/systemd/system/ampere.service from deploy/ampere.service (not enabled:
#     systemctl enable --now ampere)
# AMPERE_PREFIX (default empty) installs under another root, for tests and packaging.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
ROOT=${AMPERE_PREFIX:-}

say() { printf 'install: %s\n' "$*"; }
[ -f dist/cli.js ] || { say "error: dist/cli.js missing: run npm run build first" >&2; exit 1; }
chmod 0755 dist/cli.js

install -d "$ROOT/usr/local/bin" "$ROOT/etc/ampere" "$ROOT/etc/systemd/system"
ln -sfn "$REPO/dist/cli.js" "$ROOT/usr/local/bin/ampere"
say "ampere on PATH: /usr/local/bin/ampere -> $REPO/dist/cli.js"

cfg=$ROOT/etc/ampere/ampere.cfg
if [ -e "$cfg" ]; then
  say "/etc/ampere/ampere.cfg exists: left as it is"
else
  install -m 0640 deploy/ampere.cfg.example "$cfg"
  say "wrote /etc/ampere/ampere.cfg (example: set pass to the secret of [ampere] in manager.conf)"
fi

unit=$ROOT/etc/systemd/system/ampere.service
install -m 0644 deploy/ampere.service "$unit"
say "installed /etc/systemd/system/ampere.service; start it with: systemctl daemon-reload && systemctl enable --now ampere"
