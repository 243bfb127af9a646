import { redactUrl } from '../config/fleet-keys';
import { CliError, config, EXIT, parse, usageError } from './common';
import { printJson } from './table';
import { USAGE_OF } from './usage';

/**
 * `ampere fleet init`: the fleet's schema, trigger, roles and policies on a PostgreSQL database
 * (idempotent), through an owner's URL (--url, else fleet_url); --print shows the SQL instead.
 */
export async function fleetCommand(args: string[]): Promise<number> {
  const { values, positionals } = parse('fleet', args, {
    url: { type: 'string' }, node: { type: 'string', multiple: true }, operator: { type: 'string', multiple: true },
    print: { type: 'boolean' }, json: { type: 'boolean' },
  }, { min: 1, max: 1, usage: USAGE_OF.fleet });
  if (positionals[0] !== 'init') throw usageError(`fleet: unknown subcommand "${positionals[0]}"\nusage: ampere ${USAGE_OF.fleet}`);
  // Loaded only here: no other command loads pg.
  const { fleetInit, initScript, parseRole } = require('../fleet/init') as typeof import('../fleet/init');
  const { tlsOf } = require('../fleet/connect') as typeof import('../fleet/connect');
  let roles;
  try {
    roles = [...(values.node ?? []).map((n) => parseRole(n, 'node')), ...(values.operator ?? []).map((n) => parseRole(n, 'operator'))];
  } catch (err) { throw usageError(`fleet init: ${(err as Error).message}`); }
  if (values.print) { process.stdout.write(initScript(roles)); return EXIT.ok; }
  const cfg = config();
  const url = values.url ?? cfg.fleet_url;
  if (!url) throw usageError('fleet init: no database: give --url postgres://owner@host/db (or set fleet_url)');
  let done;
  try {
    done = await fleetInit(url, tlsOf(cfg), roles);
  } catch (err) {
    throw new CliError(`fleet init on ${redactUrl(url)}: ${(err as Error).message}`);
  }
  const generated = roles.filter((r) => r.generated);
  if (values.json) { printJson({ ...done, passwords: Object.fromEntries(generated.map((r) => [r.name, r.password])) }); return EXIT.ok; }
  process.stdout.write(`fleet schema on ${redactUrl(url)}: ${done.migrations} migration(s) applied${done.migrations === 0 ? ' (already up to date)' : ''}\n`);
  for (const r of roles) process.stdout.write(`role ${r.name} (${r.kind}) ready\n`);
  for (const r of generated) process.stdout.write(`password of ${r.name} (shown once): ${r.password}\n`);
  return EXIT.ok;
}
