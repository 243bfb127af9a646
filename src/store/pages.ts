import type { Statement } from 'better-sqlite3';
import type { BanRow } from './rows';
import { ACTIVE, BAN_FIELDS } from './sql';

/** The order of a listing: newest first (time), by address as text, or most banned first (count). */
export type BanSort = 'time' | 'address' | 'count';
export const BAN_SORTS: readonly BanSort[] = ['time', 'address', 'count'];
/** The sources a ban row can have. */
export const BAN_SOURCES = ['auto', 'manual', 'range', 'legacy', 'fail2ban', 'kernel', 'fleet'] as const;

/**
 * Options of a listing page (Store.listBansPage). source and since (started at or after, ms)
 * filter; `before` is the cursor of the previous page's `next` (an id in time order, an offset
 * in the other orders).
 */
export interface PageOptions { all?: boolean; address?: string; before?: number; limit: number; scan?: number; source?: string; since?: number; sort?: BanSort }

/** The outer ORDER BY of a page, over `bans` joined with `hosts`. */
const ORDER: Record<BanSort, string> = {
  time: 'bans.id DESC',
  address: 'bans.address, bans.id DESC',
  count: 'coalesce(hosts.ban_count, 0) DESC, bans.id DESC',
};

/** The Store's statements, each prepared once on its first use. */
type Sql = (text: string) => Statement;

/** The reason text of src/control/views.ts reasonText, in SQL (test/bound.test.ts holds the two equal). */
const REASON_SQL = `bans.reason_kind || iif(bans.source = 'auto' AND bans.reason_service != '', ' ' || bans.reason_service, '')
  || iif(bans.reason_account != '', ' account ' || bans.reason_account, '')
  || iif(bans.source = 'auto' AND bans.failures != 0, ' (' || bans.failures || ' failure' || iif(bans.failures = 1, '', 's') || ')', '')`;

/**
 * One page of a listing, newest first (by id, the order bans were made): at most `limit`
 * rows with ids below `before`. Without an address, one call reads at most `scan` ids, so a
 * page may come back short with a `next` to go on from: no call walks the whole history.
 * `next` is null at the end.
 */
export function banPage(sql: Sql, now: number, opts: PageOptions): { rows: BanRow[]; next: number | null } {
  const page = pageQuery(sql, now, opts);
  if (!page) return { rows: [], next: null };
  const rows = sql(`SELECT ${BAN_FIELDS}, coalesce(hosts.ban_count, 0) AS banCount FROM (${page.inner}) AS bans LEFT JOIN hosts ON hosts.address = bans.address ORDER BY ${ORDER[opts.sort ?? 'time']}`)
    .all(...page.params) as BanRow[];
  return { rows, next: page.next(rows.length, rows.length ? rows[rows.length - 1].id : 0) };
}

/**
 * The same page as a JSON array of listing views (src/control/views.ts banView, the same
 * fields and reason text), made by SQLite in one string: the daemon serves a long history
 * without making an object, let alone a string, per ban.
 */
export function banPageJson(sql: Sql, now: number, opts: PageOptions): { json: string; next: number | null } {
  const page = pageQuery(sql, now, opts);
  if (!page) return { json: '[]', next: null };
  const [json, count, lastId] = sql(`SELECT json_group_array(json_object('address', bans.address, 'family', bans.family, 'since', bans.started_at,
      'until', bans.until, 'banCount', coalesce(hosts.ban_count, 0), 'source', bans.source, 'origin', bans.origin, 'reason', ${REASON_SQL}, 'kind', bans.reason_kind,
      'service', bans.reason_service, 'account', bans.reason_account, 'failures', bans.failures,
      'active', json(iif(bans.lifted_at IS NULL AND (bans.until IS NULL OR bans.until > ?), 'true', 'false')), 'liftedAt', bans.lifted_at, 'liftReason', bans.lift_reason) ORDER BY ${ORDER[opts.sort ?? 'time']}),
      count(*), min(bans.id)
    FROM (${page.inner}) AS bans LEFT JOIN hosts ON hosts.address = bans.address`).raw().get(now, ...page.params) as [string, number, number | null];
  return { json, next: page.next(count, lastId ?? 0) };
}

/** The rows of one page (a subquery over bans) and how the next cursor follows from what it returned. */
function pageQuery(sql: Sql, now: number, opts: PageOptions): { inner: string; params: (string | number)[]; next: (count: number, lastId: number) => number | null } | null {
  const where: string[] = [];
  const filter: (string | number)[] = [];
  if (!opts.all) { where.push(ACTIVE); filter.push(now); }
  if (opts.source !== undefined) { where.push('bans.source = ?'); filter.push(opts.source); }
  if (opts.since !== undefined) { where.push('bans.started_at >= ?'); filter.push(opts.since); }
  if (opts.address !== undefined) { where.push('bans.address = ?'); filter.push(opts.address); }
  const and = where.map((w) => ` AND ${w}`).join('');
  if (opts.sort && opts.sort !== 'time') return sortedQuery(opts, and, filter);
  const hi = opts.before ?? Number.MAX_SAFE_INTEGER;
  if (opts.address !== undefined) {
    return {
      inner: `SELECT * FROM bans INDEXED BY bans_address WHERE bans.id < ?${and} ORDER BY bans.id DESC LIMIT ?`,
      params: [hi, ...filter, opts.limit],
      next: (count, lastId) => (count === opts.limit ? lastId : null),
    };
  }
  // Two queries: SQLite answers a lone min() or max() from the rowid tree, but both in one scan every row.
  const minId = sql(`SELECT min(id) FROM bans`).pluck().get() as number | null;
  const maxId = sql(`SELECT max(id) FROM bans`).pluck().get() as number | null;
  if (minId === null || maxId === null) return null;
  const top = Math.min(hi, maxId + 1);
  const lo = Math.max(minId, top - (opts.scan ?? 50_000));
  return {
    // NOT INDEXED: the rowid range, never an index walk and a sort of everything active.
    inner: `SELECT * FROM bans NOT INDEXED WHERE bans.id < ? AND bans.id >= ?${and} ORDER BY bans.id DESC LIMIT ?`,
    params: [top, lo, ...filter, opts.limit],
    next: (count, lastId) => (count === opts.limit ? lastId : lo > minId ? lo : null),
  };
}

/**
 * A page in address or count order: SQLite keeps only the top `offset + limit` rows while it
 * reads the matching ones (no whole sorted copy); the cursor is the offset of the next page.
 */
function sortedQuery(opts: PageOptions, and: string, filter: (string | number)[]): { inner: string; params: (string | number)[]; next: (count: number) => number | null } {
  const offset = opts.before ?? 0;
  const order = opts.sort === 'count' ? 'coalesce(h.ban_count, 0) DESC, bans.id DESC' : 'bans.address, bans.id DESC';
  return {
    inner: `SELECT bans.* FROM bans LEFT JOIN hosts AS h ON h.address = bans.address WHERE 1${and} ORDER BY ${order} LIMIT ? OFFSET ?`,
    params: [...filter, opts.limit, offset],
    next: (count) => (count === opts.limit ? offset + count : null),
  };
}
