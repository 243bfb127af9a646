import type { Prepared } from './bans';
import type { NewBan } from './rows';

/**
 * Many ban rows in a few statements instead of three a row: the list goes into a temporary
 * table (CHUNK rows a statement), then one statement each writes the hosts' rows, supersedes
 * their older active bans and inserts the bans, in the list's order. The same rows as
 * BanTable's per-row write, about twice as fast (docs/notes/measurements.md, Store); what
 * remains is SQLite's B-tree work. (A JSON text read with json_each was as slow as row by row
 * with ten fields a row: each field extracted parses the row's JSON again.)
 */
const TABLE = 'temp.ampere_bulk_bans';
const CREATE = `CREATE TEMP TABLE IF NOT EXISTS ampere_bulk_bans (address TEXT, family INT, now INT, until INT, kind TEXT, service TEXT, account TEXT, failures INT, source TEXT, origin TEXT)`;
const FIELDS = 10;
const CHUNK = 100;
const insert = (rows: number) => `INSERT INTO ${TABLE} VALUES ${Array(rows).fill(`(${Array(FIELDS).fill('?').join(',')})`).join(',')}`;
// WHERE true: an upsert's SELECT needs one, or ON CONFLICT parses as a join's.
const HOSTS = `INSERT INTO hosts (address, family, first_seen, last_seen, failures, ban_count, banned, ban_until, last_kind, last_service, last_account)
  SELECT address, family, now, now, 0, 1, 1, until, kind, service, account FROM ${TABLE} WHERE true ORDER BY rowid
  ON CONFLICT (address) DO UPDATE SET last_seen = max(hosts.last_seen, excluded.last_seen), ban_count = hosts.ban_count + 1,
    banned = 1, ban_until = excluded.ban_until`;
// One host's bans through bans_address, as the per-row write (see BanTable): a host with no active ban costs one probe.
const SUPERSEDE = `UPDATE bans INDEXED BY bans_address SET lifted_at = r.now, lift_reason = 'superseded'
  FROM ${TABLE} AS r WHERE bans.address = r.address AND bans.lifted_at IS NULL`;
const BANS = `INSERT INTO bans (address, family, started_at, until, reason_kind, reason_service, reason_account, failures, source, origin)
  SELECT address, family, now, until, kind, service, account, failures, source, origin FROM ${TABLE} ORDER BY rowid`;
const CLEAR = `DELETE FROM ${TABLE}`;

/** Below this many rows the per-row write is as fast. */
export const BULK_MIN = 8;

/**
 * Whether writeBulk may write this list: long enough, and no address twice (its second row must
 * supersede the first, which statements over the whole list would not do).
 */
export function bulkWritable(list: readonly NewBan[]): boolean {
  if (list.length < BULK_MIN) return false;
  const seen = new Set<string>();
  for (const b of list) {
    if (seen.has(b.address)) return false;
    seen.add(b.address);
  }
  return true;
}

/** Write the rows (a bulkWritable list) inside the caller's transaction. */
export function writeBulk(sql: Prepared, list: readonly NewBan[]): void {
  sql(CREATE).run();
  const params: unknown[] = new Array(CHUNK * FIELDS);
  const put = (b: NewBan, out: unknown[], o: number) => {
    out[o] = b.address; out[o + 1] = b.family; out[o + 2] = b.now; out[o + 3] = b.until; out[o + 4] = b.reasonKind;
    out[o + 5] = b.reasonService; out[o + 6] = b.reasonAccount; out[o + 7] = b.failures; out[o + 8] = b.source; out[o + 9] = b.origin ?? null;
  };
  let i = 0;
  if (list.length >= CHUNK) {
    const chunk = sql(insert(CHUNK));
    for (; i + CHUNK <= list.length; i += CHUNK) {
      for (let k = 0; k < CHUNK; k++) put(list[i + k], params, k * FIELDS);
      chunk.run(params);
    }
  }
  const one = sql(insert(1));
  const row: unknown[] = new Array(FIELDS);
  for (; i < list.length; i++) { put(list[i], row, 0); one.run(row); }
  sql(HOSTS).run();
  sql(SUPERSEDE).run();
  sql(BANS).run();
  sql(CLEAR).run();
}
