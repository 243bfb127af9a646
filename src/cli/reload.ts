import { USAGE_OF } from './usage';
import { ConfigError, loadConfig, type Config } from '../config';
import { KEYS, type Key } from '../config/keys';
import { askOrOffline, CliError, EXIT, parse } from './common';
import { printJson } from './table';

const USAGE = USAGE_OF['reload'];

/**
 * `ampere reload`: the running daemon re-reads its configuration (as SIGHUP does) and says what
 * it applied and what waits for a restart; an invalid configuration is refused, the old one stays.
 */
export async function reloadCommand(args: string[]): Promise<number> {
  const { values } = parse('reload', args, { json: { type: 'boolean' } }, { min: 0, max: 0, usage: USAGE });
  const res = await askOrOffline<{ applied: string[]; needsRestart: string[]; error?: string }>(daemonConfig(), 'POST', '/reload', {}, 30_000);
  if (!res) throw new CliError('daemon not running');
  if (res.status !== 200) throw new CliError(`reload refused: ${String(res.body.error ?? `the daemon answered ${res.status}`)}`);
  const r = res.body;
  if (values.json) { printJson({ applied: r.applied, needsRestart: r.needsRestart }); return EXIT.ok; }
  const lines = [
    r.applied.length ? `applied: ${r.applied.join(', ')}` : 'applied: nothing changed that applies live',
    ...(r.needsRestart.length ? [`needs a restart: ${r.needsRestart.join(', ')}`] : []),
  ];
  process.stdout.write(lines.join('\n') + '\n');
  return EXIT.ok;
}

/**
 * Enough of the configuration to find the daemon's socket, even when the file now holds an
 * invalid value: that key is read as its default here, and the daemon's own reload refuses it.
 */
function daemonConfig(): Config {
  const env = { ...process.env };
  for (let i = 0; i <= Object.keys(KEYS).length; i++) {
    try {
      return loadConfig(env).config;
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      const key = err.key as Key | undefined;
      if (!key || key === 'db' || !(key in KEYS) || env[`AMPERE_${key.toUpperCase()}`] === KEYS[key].default) throw new CliError(err.message);
      env[`AMPERE_${key.toUpperCase()}`] = KEYS[key].default;
    }
  }
  throw new CliError('the configuration cannot be read');
}
