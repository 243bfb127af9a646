import { ConfigError, formatDuration, loadConfig, type Config } from '../config';
import { KEYS, type Key } from '../config/keys';
import { redactUrl } from '../config/fleet-keys';
import { redactUrl as redactNotifyUrl } from '../notify/url';
import { CliError, EXIT, parse } from './common';
import { printJson, printTable } from './table';
import { USAGE_OF } from './usage';

/** Keys whose value is a duration in ms (shown as the text a config file would hold). */
const DURATIONS = new Set<Key>(['findtime', 'bantime', 'bantime_max', 'ami_timeout', 'ban_history_keep', 'backup_interval', 'fleet_resync', 'fleet_ban_max', 'notify_timeout']);

export interface ConfigRow { key: Key; value: string; source: string; env: string }

/** A key's effective value as text; the password never, only whether one was given. */
export function shownValue(cfg: Config, key: Key, source: string): string {
  if (key === 'pass') return source === 'default' ? 'not set (the default)' : 'set';
  if (key === 'fleet_url') return redactUrl(cfg.fleet_url);
  const v = cfg[key];
  if (key === 'notify_url') return cfg.notify_url ? redactNotifyUrl(cfg.notify_url) : '';
  if (key === 'allow') return cfg.allow.map((c) => c.text).join(',');
  if (key === 'bantime' && v === 0) return '0 (permanent)';
  if (DURATIONS.has(key)) return formatDuration(v as number);
  return String(v);
}

/**
 * `ampere config`: the configuration a daemon started now would run with, read from the same
 * sources (environment, .env, file, defaults), each value with its source. Needs no daemon.
 */
export async function configCommand(args: string[]): Promise<number> {
  const { values } = parse('config', args, { json: { type: 'boolean' } }, { min: 0, max: 0, usage: USAGE_OF.config });
  let loaded;
  try { loaded = loadConfig(); } catch (err) { if (err instanceof ConfigError) throw new CliError(err.message); throw err; }
  const rows: ConfigRow[] = (Object.keys(KEYS) as Key[]).map((key) => ({
    key, value: shownValue(loaded.config, key, loaded.sources[key]), source: loaded.sources[key], env: `AMPERE_${key.toUpperCase()}`,
  }));
  if (values.json) {
    printJson({ file: loaded.file, keys: rows, warnings: loaded.warnings });
    return EXIT.ok;
  }
  process.stdout.write(`config file: ${loaded.file ?? 'none'}\n`);
  printTable(rows, [{ header: 'KEY', get: (r) => r.key }, { header: 'VALUE', get: (r) => r.value || '(empty)' }, { header: 'SOURCE', get: (r) => r.source }]);
  for (const w of loaded.warnings) process.stderr.write(`warning: ${w}\n`);
  return EXIT.ok;
}
