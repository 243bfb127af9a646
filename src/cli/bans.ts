import { USAGE_OF } from './usage';
import type { BanView } from '../control/views';
import { DEFAULT_PAGE, listBanPage, parseMatch, type BanFilter } from '../control/views';
import { parseDuration } from '../config/duration';
import { BAN_SORTS, BAN_SOURCES, type BanSort } from '../store/pages';
import { formatSpan, formatTable, formatTime, iso } from './table';
import { askOrOffline, config, EXIT, note, openOffline, parse, refusal, usageError } from './common';
import type { Store } from '../store';

const USAGE = USAGE_OF['bans'];

type Page = { bans: BanView[]; next: number | null };

/**
 * `ampere bans`: active bans (with --all the whole history), optionally only those in an
 * address or network, newest first. Read page by page from the daemon (or the database) and
 * printed as each page arrives, so neither side ever holds a whole history.
 */
export async function bansCommand(args: string[]): Promise<number> {
  const { values, positionals } = parse('bans', args, {
    all: { type: 'boolean' }, json: { type: 'boolean' }, limit: { type: 'string' }, origin: { type: 'string' }, since: { type: 'string' }, source: { type: 'string' }, sort: { type: 'string' },
  }, { min: 0, max: 1, usage: USAGE });
  const match = positionals[0];
  if (match !== undefined && !parseMatch(match)) throw usageError(`bans: ${JSON.stringify(match)} is not an IP address or CIDR`);
  const limit = values.limit === undefined ? Infinity : Number(values.limit);
  if (values.limit !== undefined && !(/^\d{1,9}$/.test(values.limit) && limit >= 1)) throw usageError(`bans: --limit must be a whole number from 1 (got ${JSON.stringify(values.limit)})`);
  const filter = banFilter(values, Date.now());
  const cfg = config();
  let store: Store | null = null;
  const fetchPage = async (before: number | null): Promise<Page> => {
    const size = Math.min(DEFAULT_PAGE, limit - shown);
    if (!store) {
      const q = new URLSearchParams({ limit: String(size) });
      if (values.all) q.set('all', '1');
      if (match) q.set('match', match);
      if (before !== null) q.set('before', String(before));
      if (filter.source) q.set('source', filter.source);
      if (filter.since !== undefined) q.set('since', String(filter.since));
      if (filter.sort) q.set('sort', filter.sort);
      const res = await askOrOffline<Page>(cfg, 'GET', `/bans?${q}`);
      if (res && res.status !== 200) throw refusal(res);
      if (res) return res.body;
      note('ampere: daemon not running; read from the database');
      store = openOffline(cfg);
    }
    return listBanPage(store, Date.now(), { all: values.all, match, limit: size, before: before ?? undefined, ...filter });
  };
  let shown = 0;
  let before: number | null = null;
  try {
    if (values.json) process.stdout.write('[');
    do {
      const page = await fetchPage(before);
      // --origin: one fleet node's bans, or `local` for this node's own.
      const mine = values.origin === undefined ? page.bans : page.bans.filter((b) => (b.origin ?? 'local') === values.origin);
      const bans = mine.slice(0, limit - shown);
      if (values.json) {
        for (const b of bans) process.stdout.write(`${shown++ ? ',' : ''}\n  ${JSON.stringify({ ...b, since: iso(b.since), until: iso(b.until), liftedAt: iso(b.liftedAt) })}`);
      } else if (bans.length > 0 || (shown === 0 && page.next === null)) {
        // Aligned page by page; the header once.
        const text = formatBans(bans, !!values.all, Date.now(), !!cfg.fleet_url);
        process.stdout.write(shown === 0 ? text : text.slice(text.indexOf('\n') + 1));
        shown += bans.length;
      }
      before = page.next;
    } while (before !== null && shown < limit);
    if (values.json) process.stdout.write(shown ? '\n]\n' : ']\n');
  } finally {
    (store as Store | null)?.close();
  }
  if (!values.json && process.stdout.isTTY) note(`${shown} ${values.all ? 'bans' : 'active bans'}${before !== null ? ' (more: raise --limit)' : ''}`);
  return EXIT.ok;
}

/** --since, --source and --sort as the listing's filter; a bad value is a usage error naming the option. */
function banFilter(values: { since?: string; source?: string; sort?: string }, now: number): BanFilter {
  const f: BanFilter = {};
  if (values.since !== undefined) {
    const span = parseDuration(values.since);
    if (span === null || span === 0) throw usageError(`bans: --since ${JSON.stringify(values.since)} is not a duration such as 1h, 24h, 7d`);
    f.since = Math.max(0, now - span);
  }
  if (values.source !== undefined) {
    if (!(BAN_SOURCES as readonly string[]).includes(values.source)) throw usageError(`bans: --source must be one of ${BAN_SOURCES.join(', ')} (got ${JSON.stringify(values.source)})`);
    f.source = values.source;
  }
  if (values.sort !== undefined) {
    if (!(BAN_SORTS as readonly string[]).includes(values.sort)) throw usageError(`bans: --sort must be one of ${BAN_SORTS.join(', ')} (got ${JSON.stringify(values.sort)})`);
    f.sort = values.sort as BanSort;
  }
  return f;
}

/** origin: the ORIGIN column (fleet mode), `-` for this node's own bans. */
export function formatBans(bans: BanView[], all: boolean, now = Date.now(), origin = false): string {
  return formatTable(bans, [
    { header: 'ADDRESS', get: (b) => b.address },
    { header: 'SINCE', get: (b) => formatTime(b.since) },
    { header: 'UNTIL', get: (b) => (b.until === null ? 'permanent' : `${formatTime(b.until)}${b.active ? ` (${formatSpan(b.until - now)} left)` : ''}`) },
    ...(all ? [{ header: 'STATE', get: (b: BanView) => (b.active ? 'active' : b.liftReason ?? 'expired') }] : []),
    { header: 'BANS', get: (b) => b.banCount, right: true },
    { header: 'SOURCE', get: (b) => b.source },
    ...(origin ? [{ header: 'ORIGIN', get: (b: BanView) => b.origin ?? '-' }] : []),
    { header: 'REASON', get: (b) => b.reason },
  ]);
}
