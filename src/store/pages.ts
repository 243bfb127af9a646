import type { Statement } from 'better-sqlite3';
import type { BanRow } from './rows';
import { ACTIVE, BAN_FIELDS } from './sql';

/** Options of a listing page (Store.listBansPage). */
export interface PageOptions { all?: boolean; address?: string; before?: number; limit: number; scan?: number }

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
  const rows = sql(`SELECT ${BAN_FIELDS}, coalesce(hosts.ban_count, 0) AS banCount FROM (${page.inner}) AS bans LEFT JOIN hosts ON hosts.address = bans.address ORDER BY bans.id DESC`)
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
      'until', bans.until, 'banCount', coalesce(hosts.ban_count, 0), 'source', bans.source, 'reason', ${REASON_SQL}, 'kind', bans.reason_kind,
      'service', bans.reason_service, 'account', bans.reason_account, 'failures', bans.failures,
      'active', json(iif(bans.lifted_at IS NULL AND (bans.until IS NULL OR bans.until > ?), 'true', 'false')), 'liftedAt', bans.lifted_at, 'liftReason', bans.lift_reason) ORDER BY bans.id DESC),
      count(*), min(bans.id)
    FROM (${page.inner}) AS bans LEFT JOIN hosts ON hosts.address = bans.address`).raw().get(now, ...page.params) as [string, number, number | null];
  return { json, next: page.next(count, lastId ?? 0) };
}

/** The rows of one page (a subquery over bans) and how the next cursor follows from what it returned. */
function pageQuery(sql: Sql, now: number, opts: PageOptions): { inner: string; params: (string | number)[]; next: (count: number, lastId: number) => number | null } | null {
  const active = opts.all ? '' : ` AND ${ACTIVE}`;
  const hi = opts.before ?? Number.MAX_SAFE_INTEGER;
  const params = (...p: (string | number)[]) => [...(opts.all ? p : [...p, now]), opts.limit];
  if (opts.address !== undefined) {
    return {
      inner: `SELECT * FROM bans INDEXED BY bans_address WHERE bans.address = ? AND bans.id < ?${active} ORDER BY bans.id DESC LIMIT ?`,
      params: params(opts.address, hi),
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
    inner: `SELECT * FROM bans NOT INDEXED WHERE bans.id < ? AND bans.id >= ?${active} ORDER BY bans.id DESC LIMIT ?`,
    params: params(top, lo),
    next: (count, lastId) => (count === opts.limit ? lastId : lo > minId ? lo : null),
  };
}
