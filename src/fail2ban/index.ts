import Database from 'better-sqlite3';
import { parseHost, type Family } from '../net/ip';

/** One fail2ban ban still in force, as an Ampere ban: until is epoch ms, null = permanent. */
export interface Fail2banEntry { address: string; family: Family; until: number | null; jail: string; bancount: number }
export interface Fail2banSkip { ip: string; jail: string; reason: string }
export interface Fail2banRead { table: 'bips' | 'bans'; jails: string[]; rows: number; entries: Fail2banEntry[]; skipped: Fail2banSkip[] }

/** Rows read at most: a fail2ban database is hostile input like any other. */
export const MAX_FAIL2BAN_ROWS = 1_000_000;

interface Row { ip: unknown; jail: unknown; timeofban: unknown; bantime: unknown; bancount: unknown }

/** The rows of the jail: `bips` (fail2ban 0.11+, one row per ip and jail), else the latest of `bans`. */
function readRows(db: Database.Database, path: string, jail: string | null): { table: 'bips' | 'bans'; rows: Row[]; jails: string[] } {
  const tables = new Set((db.prepare(`SELECT name FROM sqlite_master WHERE type = 'table'`).all() as { name: string }[]).map((t) => t.name));
  if (!tables.has('bans') || !tables.has('jails')) throw new Error(`${path} is not a fail2ban database: it has no tables "bans" and "jails"`);
  const jails = (db.prepare('SELECT name FROM jails ORDER BY name').all() as { name: unknown }[]).map((j) => String(j.name).slice(0, 80));
  if (jail !== null && !jails.includes(jail)) throw new Error(`${path} has no jail ${JSON.stringify(jail)} (its jails: ${jails.join(', ') || 'none'})`);
  const where = jail === null ? '' : 'WHERE jail = @jail';
  const sql = tables.has('bips')
    ? `SELECT ip, jail, timeofban, bantime, bancount FROM bips ${where} LIMIT ${MAX_FAIL2BAN_ROWS}`
    : `SELECT ip, jail, MAX(timeofban) AS timeofban, bantime, bancount FROM bans ${where} GROUP BY jail, ip LIMIT ${MAX_FAIL2BAN_ROWS}`;
  return { table: tables.has('bips') ? 'bips' : 'bans', rows: db.prepare(sql).all(jail === null ? {} : { jail }) as Row[], jails };
}

/** A row's end in ms (null = permanent, fail2ban's negative bantime), or why it cannot be read. */
function endOf(r: Row): number | null | string {
  const start = Number(r.timeofban);
  const span = Number(r.bantime);
  if (!Number.isFinite(start) || !Number.isFinite(span)) return 'unreadable time of ban or bantime';
  if (span < 0) return null;
  return (start + span) * 1000;
}

/**
 * fail2ban's bans still in force in `jail` (null = every jail). Each address goes through the
 * same check as every other way in (a single host); expired ones are skipped with the reason.
 */
export function readFail2banDatabase(path: string, jail: string | null, now: number): Fail2banRead {
  let db: Database.Database;
  try { db = new Database(path, { readonly: true, fileMustExist: true }); } catch (err) { throw new Error(`cannot open ${path}: ${(err as Error).message}`); }
  try {
    let read;
    try { read = readRows(db, path, jail); } catch (err) {
      throw new Error(/file is not a database/.test((err as Error).message) ? `${path} is not an SQLite database` : (err as Error).message);
    }
    const entries: Fail2banEntry[] = [];
    const skipped: Fail2banSkip[] = [];
    const seen = new Set<string>();
    for (const r of read.rows) {
      const ip = String(r.ip ?? '').slice(0, 64);
      const j = String(r.jail ?? '').slice(0, 80);
      const host = parseHost(ip);
      if (!host.ok) { skipped.push({ ip, jail: j, reason: ip.includes('/') ? 'not a single host (a network)' : host.reason === 'not an IP address' ? 'not an IP address' : host.reason }); continue; }
      const until = endOf(r);
      if (typeof until === 'string') { skipped.push({ ip, jail: j, reason: until }); continue; }
      if (until !== null && until - now < 1000) { skipped.push({ ip: host.address, jail: j, reason: 'expired' }); continue; }
      if (seen.has(host.address)) { skipped.push({ ip: host.address, jail: j, reason: 'listed twice (another jail)' }); continue; }
      seen.add(host.address);
      const bancount = Number(r.bancount);
      entries.push({ address: host.address, family: host.family, until, jail: j, bancount: Number.isSafeInteger(bancount) ? bancount : 1 });
    }
    return { table: read.table, jails: read.jails, rows: read.rows.length, entries, skipped };
  } finally {
    db.close();
  }
}
