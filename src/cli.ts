#!/usr/bin/env node
import { CliError } from './cli/common';

type Command = (args: string[]) => Promise<number>;

/**
 * `ampere <command>`: each command is one module under src/cli/, loaded only when used (so a
 * quick `ampere bans` does not load the daemon). Exit codes: 0 ok, 1 failure, 2 usage.
 */
/* eslint-disable @typescript-eslint/no-require-imports */
const COMMANDS: Record<string, () => Command> = {
  run: () => (require('./cli/help') as typeof import('./cli/help')).withHelp('run', (require('./cli/run') as typeof import('./cli/run')).runCommand),
  health: () => (require('./cli/help') as typeof import('./cli/help')).withHelp('health', (require('./cli/health') as typeof import('./cli/health')).healthCommand),
  status: () => (require('./cli/status') as typeof import('./cli/status')).statusCommand,
  bans: () => (require('./cli/bans') as typeof import('./cli/bans')).bansCommand,
  ban: () => (require('./cli/ban') as typeof import('./cli/ban')).banCommand,
  unban: () => (require('./cli/ban') as typeof import('./cli/ban')).unbanCommand,
  allow: () => (require('./cli/allow') as typeof import('./cli/allow')).allowCommand,
  history: () => (require('./cli/history') as typeof import('./cli/history')).historyCommand,
  check: () => (require('./cli/check') as typeof import('./cli/check')).checkCommand,
  reload: () => (require('./cli/reload') as typeof import('./cli/reload')).reloadCommand,
  backup: () => (require('./cli/backup') as typeof import('./cli/backup')).backupCommand,
  'import-legacy': () => (require('./cli/import-legacy') as typeof import('./cli/import-legacy')).importLegacyCommand,
  config: () => (require('./cli/config') as typeof import('./cli/config')).configCommand,
  top: () => (require('./cli/top') as typeof import('./cli/top')).topCommand,
  'import-fail2ban': () => (require('./cli/import-fail2ban') as typeof import('./cli/import-fail2ban')).importFail2banCommand,
  fleet: () => (require('./cli/fleet') as typeof import('./cli/fleet')).fleetCommand,
  help: () => (require('./cli/help') as typeof import('./cli/help')).helpCommand,
  completion: () => (require('./cli/help') as typeof import('./cli/help')).completionCommand,
};

const USAGE = `usage: ampere <command> [options]
commands:
  run                       run the daemon (what npm start and the container run)
  status                    AMI connection, events, tracked hosts, bans, firewall, backups
  bans [<ip-or-cidr>] [--all]
                            active bans (--all: with the expired and lifted ones)
  ban <ip>... [--for <duration>|permanent] [--reason <text>]
                            ban now, in the database and the kernel
  unban <ip>... | --all     lift bans (and forget the host's penalty)
  allow add|rm <ip-or-cidr> [--note <text>]
  allow list                the allow list: built in, configured and runtime entries
  history <ip>              a host's recorded events and bans
  config [--json]           the effective configuration and where each value came from
  top [--by address|network|account] [--since <duration>] [--limit <n>]
                            the worst offenders from the history, banned now or not
  check [--config-only]     validate the configuration and the environment
                            (--config-only: the configuration alone, as before a service start)
  reload [--json]           re-read the configuration now (as SIGHUP): live keys applied,
                            the others named as needing a restart
  backup [--to <dir>]       an online, consistent copy of the database
  import-legacy <file> [--for <duration>] [--dry-run]
                            import the bans of the original Ampere's database
  import-fail2ban <fail2ban.sqlite3> [--jail <name>|--all-jails] [--dry-run]
                            import fail2ban's bans still in force (default jail asterisk)
  fleet init [--url <owner-url>] [--node <name>[:<password>]]... [--print]
                            create the fleet's PostgreSQL schema, roles and policies
  health                    exit 0 when the daemon is connected to AMI and its firewall in sync
  help <command>            that command's usage (so does ampere <command> --help)
  completion bash|zsh       a shell completion script: eval "$(ampere completion bash)"
Listings print a table, or JSON with --json. Commands that change state go through the
running daemon (control socket ampere.sock beside the database).
Exit codes: 0 ok, 1 failure, 2 usage.`;

async function main(argv: string[]): Promise<number> {
  const [name, ...args] = argv;
  // A bare `ampere` explains itself rather than starting a daemon: `ampere run` starts it.
  if (name === undefined) { console.error(USAGE); return 2; }
  if (name === '-h' || name === '--help' || (name === 'help' && args.length === 0)) { console.log(USAGE); return 0; }
  const load = COMMANDS[name];
  if (!load) { console.error(`ampere: unknown command "${name}"\n${USAGE}`); return 2; }
  try {
    return await load()(args);
  } catch (err) {
    if (err instanceof CliError) {
      if (err.message) console.error(`ampere: ${err.message}`);
      return err.code;
    }
    throw err;
  }
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err) => { console.error(`ampere: ${err instanceof Error ? err.message : String(err)}`); process.exitCode = 1; },
);
