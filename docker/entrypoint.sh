#!/bin/sh
# Entrypoint of the Ampere container (PID 1 is tini, which runs this script;
# the script then execs Node, so SIGTERM from `docker stop` reaches Ampere).
#
#   (no argument) | run [...]   preflight checks, then `ampere run`
#   -...                        options for `ampere run`
#   restore FILE [--force]      replace the database with a backup; Ampere must
#                               be stopped (docker compose run --rm, see docs/deploy.md)
#   health | <other command>    `ampere <command>` (node /app/dist/cli.js): backup,
#                               bans, unban, status, ...
#   an executable on PATH       runs it (sh, iptables, ipset, ... for debugging)
#
# It does not choose the iptables backend: Ampere detects it (AMPERE_IPTABLES).
#
# It passes the environment on as it is: `docker exec` and the HEALTHCHECK
# see the same variables as the daemon, so nothing is fixed up here that the
# CLI would then read differently.
#
# Environment it reads besides Ampere's own AMPERE_* keys:
#   AMPERE_APP_DIR   where the built app lives (default /app)
set -eu

APP_DIR="${AMPERE_APP_DIR:-/app}"
CLI="$APP_DIR/dist/cli.js"

say() { printf 'ampere-entrypoint: %s\n' "$*" >&2; }
die() { say "error: $*"; exit "${EXIT_CODE:-1}"; }

# The database lives on the /data volume unless told otherwise.
: "${AMPERE_DB:=/data/ampere.db}"
export AMPERE_DB
DB_DIR=$(dirname -- "$AMPERE_DB")

# ------------------------------------------------------------------ checks --
has_cap() { # has_cap BIT: is capability BIT in this process's effective set?
  capeff=$(sed -n 's/^CapEff:[[:space:]]*//p' /proc/self/status 2>/dev/null || true)
  [ -n "$capeff" ] || return 0 # cannot tell: let Ampere find out
  [ $(( (0x$capeff >> $1) & 1 )) -eq 1 ]
}

preflight_run() {
  [ -f "$CLI" ] || die "$CLI not found (AMPERE_APP_DIR=$APP_DIR)"
  if ! mkdir -p -- "$DB_DIR" 2>/dev/null || [ ! -w "$DB_DIR" ]; then
    die "database directory $DB_DIR is not writable (is the /data volume mounted read-only?)"
  fi
  if [ -n "${AMPERE_CONFIG:-}" ] && [ ! -r "$AMPERE_CONFIG" ]; then
    die "AMPERE_CONFIG=$AMPERE_CONFIG is not a readable file (mount it, or unset AMPERE_CONFIG)"
  fi
  if [ "${AMPERE_BACKEND:-}" != "dry-run" ]; then
    # CAP_NET_ADMIN is bit 12: without it every iptables/ipset call fails.
    has_cap 12 || die "no CAP_NET_ADMIN: run the container with cap_add: [NET_ADMIN, NET_RAW] and network_mode: host"
  fi
  config=/etc/ampere/ampere.cfg
  [ -n "${AMPERE_CONFIG:-}" ] && config=$AMPERE_CONFIG
  if [ -r "$config" ]; then src="environment, then $config"; else src="environment"; fi
  say "starting ampere: database $AMPERE_DB, configuration from $src"
}

# ----------------------------------------------------------------- restore --
# Replaces the database with a backup (made by `ampere backup`) while Ampere is
# stopped (refused while the daemon answers on its control socket, unless
# --force), through better-sqlite3 from the image: integrity-checked first,
# the previous database kept beside it, stale -wal/-shm files removed.
restore() {
  src="" force=""
  for arg in "$@"; do
    case "$arg" in
      --force) force=1 ;;
      -*) EXIT_CODE=2 die "restore: unknown option $arg" ;;
      *) [ -z "$src" ] || EXIT_CODE=2 die "restore: one file only"; src=$arg ;;
    esac
  done
  [ -n "$src" ] || EXIT_CODE=2 die "usage: restore FILE [--force]"
  [ -f "$src" ] || die "restore: $src not found"
  mkdir -p -- "$DB_DIR"
  AMPERE_APP_DIR="$APP_DIR" node -e '
    const Database = require(require("path").join(process.env.AMPERE_APP_DIR, "node_modules", "better-sqlite3"));
    const fs = require("fs");
    const [src, target, force] = process.argv.slice(1);
    // A running daemon answers on its control socket beside the database (also
    // from another container sharing the volume); a stopped one does not.
    const running = () => new Promise((resolve) => {
      const sock = require("net").connect(require("path").join(require("path").dirname(target), "ampere.sock"));
      const done = (v) => { sock.destroy(); resolve(v); };
      sock.once("connect", () => done(true));
      sock.once("error", () => done(false));
      setTimeout(() => done(false), 2000).unref();
    });
    (async () => {
      if (force !== "force" && await running()) {
        console.error("ampere-entrypoint: error: restore: Ampere is running (it answers on its control socket); stop it first (docker compose stop ampere) or pass --force");
        process.exit(1);
      }
      const from = new Database(src, { readonly: true, fileMustExist: true });
      const check = from.pragma("integrity_check", { simple: true });
      if (check !== "ok") throw new Error(src + " fails the integrity check: " + check);
      await from.backup(target + ".restore");
      from.close();
      if (fs.existsSync(target)) {
        const stamp = new Date().toISOString().replace(/[-:]/g, "").replace(/\.(\d+)Z$/, ".$1Z");
        let keep = target + ".before-restore-" + stamp;
        for (let n = 2; fs.existsSync(keep); n++) keep = target + ".before-restore-" + stamp + "-" + n;
        const old = new Database(target, { fileMustExist: true });
        await old.backup(keep);
        old.close();
        console.log(JSON.stringify({ previous: keep }));
      }
      for (const suffix of ["-wal", "-shm"]) fs.rmSync(target + suffix, { force: true });
      fs.renameSync(target + ".restore", target);
      // The next start lets the kernel follow this database (no adoption of kernel bans it lacks).
      fs.writeFileSync(target + ".restored", JSON.stringify({ from: src, at: new Date().toISOString() }) + "\n");
      console.log(JSON.stringify({ restored: target, from: src }));
    })().catch((err) => { console.error("restore failed: " + err.message); process.exit(1); });
  ' "$src" "$AMPERE_DB" "${force:+force}"
}

# Node's heap size for the daemon, each part unless NODE_OPTIONS sets its own: a
# 256 MB limit holds the default penalty table with room to spare, and at or below
# 256 MB V8 grows its heap by 1.3x between collections instead of 4x; a 16 MB
# semi-space keeps the young generation as Node 20 sizes it, where Node 24 would
# make it four times larger (docs/operations.md, "Memory"). `ampere run` refuses
# a max_hosts that the limit cannot hold.
heap_options() {
  case " ${NODE_OPTIONS:-} " in
    *max-old-space-size*|*max_old_space_size*) ;;
    *) printf '%s ' '--max-old-space-size=256' ;;
  esac
  case " ${NODE_OPTIONS:-} " in
    *max-semi-space-size*|*max_semi_space_size*) ;;
    *) printf '%s ' '--max-semi-space-size=16' ;;
  esac
}

# ---------------------------------------------------------------- dispatch --
[ "$#" -gt 0 ] || set -- run
case "$1" in
  -*) set -- run "$@" ;;
esac

case "$1" in
  run)
    preflight_run
    # --no-lazy --no-flush-bytecode: the ban path compiled at load and kept, so the first
    # ban (after a start or a quiet spell) does not compile it on the spot (src/cli/launch.ts).
    # shellcheck disable=SC2046 # two words, one or none
    exec node $(heap_options) --no-lazy --no-flush-bytecode "$CLI" "$@"
    ;;
  restore)
    shift
    restore "$@"
    ;;
  *)
    if command -v -- "$1" >/dev/null 2>&1; then
      exec "$@"
    fi
    exec node "$CLI" "$@"
    ;;
esac
