import type { BanView } from '../control/views';
import { listBanViews, parseMatch } from '../control/views';
import { formatSpan, formatTable, formatTime, iso, printJson } from './table';
import { askOrOffline, config, EXIT, note, openOffline, parse, refusal, usageError } from './common';

const USAGE = 'bans [<address-or-cidr>] [--all] [--json]';

/** `ampere bans`: active bans (with --all the whole history), optionally only those in an address or network. */
export async function bansCommand(args: string[]): Promise<number> {
  const { values, positionals } = parse('bans', args, { all: { type: 'boolean' }, json: { type: 'boolean' } }, { min: 0, max: 1, usage: USAGE });
  const match = positionals[0];
  if (match !== undefined && !parseMatch(match)) throw usageError(`bans: ${JSON.stringify(match)} is not an IP address or CIDR`);
  const cfg = config();
  const q = new URLSearchParams();
  if (values.all) q.set('all', '1');
  if (match) q.set('match', match);
  const res = await askOrOffline<{ bans: BanView[] }>(cfg, 'GET', `/bans?${q}`);
  if (res && res.status !== 200) throw refusal(res);
  let bans: BanView[];
  if (res) bans = res.body.bans;
  else {
    note('ampere: daemon not running; read from the database');
    const store = openOffline(cfg);
    try { bans = listBanViews(store, Date.now(), { all: values.all, match }); } finally { store.close(); }
  }
  if (values.json) {
    printJson(bans.map((b) => ({ ...b, since: iso(b.since), until: iso(b.until), liftedAt: iso(b.liftedAt) })));
    return EXIT.ok;
  }
  process.stdout.write(formatBans(bans, !!values.all));
  if (!values.json && process.stdout.isTTY) note(`${bans.length} ${values.all ? 'bans' : 'active bans'}`);
  return EXIT.ok;
}

export function formatBans(bans: BanView[], all: boolean, now = Date.now()): string {
  return formatTable(bans, [
    { header: 'ADDRESS', get: (b) => b.address },
    { header: 'SINCE', get: (b) => formatTime(b.since) },
    { header: 'UNTIL', get: (b) => (b.until === null ? 'permanent' : `${formatTime(b.until)}${b.active ? ` (${formatSpan(b.until - now)} left)` : ''}`) },
    ...(all ? [{ header: 'STATE', get: (b: BanView) => (b.active ? 'active' : b.liftReason ?? 'expired') }] : []),
    { header: 'BANS', get: (b) => b.banCount, right: true },
    { header: 'SOURCE', get: (b) => b.source },
    { header: 'REASON', get: (b) => b.reason },
  ]);
}
