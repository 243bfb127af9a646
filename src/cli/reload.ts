import { USAGE_OF } from './usage';
import { askOrOffline, CliError, config, EXIT, parse } from './common';
import { printJson } from './table';

const USAGE = USAGE_OF['reload'];

/**
 * `ampere reload`: the running daemon re-reads its configuration (as SIGHUP does) and says what
 * it applied and what waits for a restart; an invalid configuration is refused, the old one stays.
 */
export async function reloadCommand(args: string[]): Promise<number> {
  const { values } = parse('reload', args, { json: { type: 'boolean' } }, { min: 0, max: 0, usage: USAGE });
  const res = await askOrOffline<{ applied: string[]; needsRestart: string[]; error?: string }>(config(), 'POST', '/reload', {}, 30_000);
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
