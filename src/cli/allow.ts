import { USAGE_OF } from './usage';
import type { Config } from '../config';
import { networkOf, offlineAllowList, type AllowEntry } from '../allow';
import { formatTable, formatTime, iso, printJson } from './table';
import { askOrOffline, config, EXIT, mustAsk, note, openOffline, parse, refusal, usageError } from './common';

const USAGE = USAGE_OF['allow'];

/** `ampere allow`: the runtime allow list (database), shown merged with the configured one. */
export async function allowCommand(args: string[]): Promise<number> {
  const { values, positionals } = parse('allow', args, { note: { type: 'string' }, json: { type: 'boolean' } }, { min: 1, max: 2, usage: USAGE });
  const [sub, target] = positionals;
  const cfg = config();
  if (sub === 'list' || sub === 'ls') {
    if (target !== undefined) throw usageError(`allow list takes no argument\nusage: ampere ${USAGE}`);
    const res = await askOrOffline<{ entries: AllowEntry[] }>(cfg, 'GET', '/allow');
    if (res && res.status !== 200) throw refusal(res);
    const entries = res ? res.body.entries : offlineEntries(cfg);
    if (values.json) printJson(entries.map((e) => ({ ...e, addedAt: iso(e.addedAt) })));
    else process.stdout.write(formatTable(entries, [
      { header: 'NETWORK', get: (e) => e.cidr },
      { header: 'SOURCE', get: (e) => e.source },
      { header: 'ADDED', get: (e) => (e.addedAt ? formatTime(e.addedAt) : null) },
      { header: 'NOTE', get: (e) => e.note || null },
    ]));
    return EXIT.ok;
  }
  if (sub !== 'add' && sub !== 'rm' && sub !== 'remove' && sub !== 'del') throw usageError(`allow: unknown subcommand "${sub}"\nusage: ampere ${USAGE}`);
  if (target === undefined) throw usageError(`allow ${sub}: give an IP address or CIDR\nusage: ampere ${USAGE}`);
  const c = networkOf(target);
  if (!c) throw usageError(`allow ${sub}: ${JSON.stringify(target)} is not an IP address or CIDR`);
  if (sub === 'add') {
    const res = await mustAsk<{ cidr: string; added: boolean; unbanned: string[] }>(cfg, 'POST', '/allow', { cidr: c.text, note: values.note });
    if (res.status !== 200) throw refusal(res);
    if (values.json) printJson(res.body);
    else {
      const r = res.body;
      process.stdout.write(`${r.added ? 'allowed' : 'already allowed:'} ${r.cidr}${r.unbanned.length ? `; unbanned ${r.unbanned.join(', ')}` : ''}\n`);
    }
    return EXIT.ok;
  }
  const res = await mustAsk<{ cidr: string; removed: boolean }>(cfg, 'DELETE', `/allow?${new URLSearchParams({ cidr: c.text })}`);
  if (res.status !== 200) throw refusal(res);
  if (values.json) printJson(res.body);
  else process.stdout.write(`removed ${res.body.cidr} from the allow list\n`);
  return EXIT.ok;
}

function offlineEntries(cfg: Config): AllowEntry[] {
  note('ampere: daemon not running; read from the database and the configuration');
  const store = openOffline(cfg);
  try { return offlineAllowList(cfg, store.allowed).entries(); } finally { store.close(); }
}
