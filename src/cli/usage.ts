/**
 * Each command's usage, the one source for its `--help`, `ampere help <command>`, its usage
 * errors and the shell completion (flags are read from this text, so they cannot drift apart).
 * Loaded without any command module: help and completion never load SQLite or the daemon.
 */
export const USAGE_OF: Record<string, string> = {
  run: 'run',
  status: 'status [--json]',
  bans: 'bans [<address-or-cidr>] [--all] [--since <duration>] [--source auto|manual|range|legacy|fail2ban|kernel|fleet] [--origin <node>|local] [--sort time|address|count] [--limit <n>] [--json]',
  ban: 'ban <ip-or-range>... [--for <duration>|permanent] [--reason <text>] [--json]',
  unban: 'unban <ip-or-range>... | --all [--json]',
  allow: 'allow add <ip-or-cidr> [--note <text>] | allow rm <ip-or-cidr> | allow list [--json]',
  history: 'history <ip> [--json]',
  top: 'top [--by address|network|account|country] [--since <duration>] [--limit <n>] [--json]',
  config: 'config [--json]',
  check: 'check [--config-only] [--json]',
  reload: 'reload [--json]',
  backup: 'backup [--to <dir>] [--json]',
  'import-legacy': 'import-legacy <file> [--for <duration>|permanent] [--dry-run] [--json]',
  'import-fail2ban': 'import-fail2ban <fail2ban.sqlite3> [--jail <name>|--all-jails] [--dry-run] [--json]',
  fleet: 'fleet init [--url <owner-url>] [--node <name>[:<password>]]... [--operator <name>[:<password>]]... [--print] [--json]',
  health: 'health',
  help: 'help [<command>]',
  completion: 'completion bash|zsh',
};

/** The long flags a command's usage names, for completion: --json, --for, ... */
export function flagsOf(command: string): string[] {
  const usage = USAGE_OF[command] ?? '';
  return [...new Set(usage.match(/--[a-z][a-z-]*/g) ?? []), '--help'];
}
