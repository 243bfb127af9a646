import { existsSync } from 'node:fs';
import { parseDuration } from '../config/duration';
import { countryLookup, type CountryOf } from '../geoip';
import { canonicalIp, expandIpv6 } from '../net/ip';
import { CliError, config, EXIT, parse, usageError } from './common';
import { formatTime, iso, printJson, printTable } from './table';
import { USAGE_OF } from './usage';

type By = 'address' | 'network' | 'account' | 'country';
type HostBy = Exclude<By, 'account'>;
interface HostRow { address: string; family: number; failures: number; banCount: number; lastSeen: number; bannedNow: number }
export interface Offender { key: string; hosts: number; failures: number; bans: number; lastSeen: number; bannedNow: number; country?: string }
export interface AccountRow { account: string; attempts: number; hosts: number; lastSeen: number }

/** The /24 (IPv4) or /64 (IPv6) an address is in; an unreadable address stands for itself. */
export function networkKey(address: string, family: number): string {
  if (family === 4) {
    const p = address.split('.');
    return p.length === 4 ? `${p.slice(0, 3).join('.')}.0/24` : address;
  }
  const words = expandIpv6(address);
  if (!words) return address;
  return `${canonicalIp(`${words.slice(0, 4).map((w) => w.toString(16)).join(':')}::`)!.address}/64`;
}

/** Hosts seen since `since` with their totals and whether a ban holds them now (one query). */
function hostRows(db: import('better-sqlite3').Database, since: number, now: number): HostRow[] {
  return db.prepare(`SELECT h.address, h.family, h.failures, h.ban_count AS banCount, h.last_seen AS lastSeen,
      EXISTS(SELECT 1 FROM bans b WHERE b.address = h.address AND b.lifted_at IS NULL AND (b.until IS NULL OR b.until > @now)) AS bannedNow
    FROM hosts h WHERE h.last_seen >= @since`).all({ since, now }) as HostRow[];
}

/** Country code shown for an address the database does not know. */
export const UNKNOWN_COUNTRY = '-';

/** Group hosts by address, network or country; worst first (failures, then bans). With a lookup each address row gets its country. */
export function offenders(rows: HostRow[], by: HostBy, countryOf: CountryOf | null = null): Offender[] {
  const groups = new Map<string, Offender>();
  const country = (a: string) => countryOf?.(a) ?? UNKNOWN_COUNTRY;
  for (const r of rows) {
    const key = by === 'address' ? r.address : by === 'country' ? country(r.address) : networkKey(r.address, r.family);
    const g = groups.get(key) ?? { key, hosts: 0, failures: 0, bans: 0, lastSeen: 0, bannedNow: 0, ...(by === 'address' && countryOf ? { country: country(r.address) } : {}) };
    g.hosts++; g.failures += r.failures; g.bans += r.banCount; g.bannedNow += r.bannedNow ? 1 : 0; g.lastSeen = Math.max(g.lastSeen, r.lastSeen);
    groups.set(key, g);
  }
  return [...groups.values()].sort((a, b) => b.failures - a.failures || b.bans - a.bans || b.lastSeen - a.lastSeen);
}

function accounts(db: import('better-sqlite3').Database, since: number, limit: number): AccountRow[] {
  return db.prepare(`SELECT account, COUNT(*) AS attempts, COUNT(DISTINCT address) AS hosts, MAX(at) AS lastSeen
    FROM events WHERE at >= ? AND account <> '' GROUP BY account ORDER BY attempts DESC, hosts DESC, account LIMIT ?`).all(since, limit) as AccountRow[];
}

function openReadOnly(file: string): import('better-sqlite3').Database {
  if (!existsSync(file)) throw new CliError(`no database at ${file}; set AMPERE_DB`);
  const Database = require('better-sqlite3') as typeof import('better-sqlite3');
  try {
    const db = new Database(file, { readonly: true, fileMustExist: true });
    db.pragma('busy_timeout = 5000');
    return db;
  } catch (err) {
    throw new CliError(`cannot open ${file}: ${(err as Error).message}`);
  }
}

/**
 * `ampere top`: the worst offenders from the history, read-only straight from the database
 * (the daemon may run: WAL readers never block it). Needs no daemon.
 */
export async function topCommand(args: string[]): Promise<number> {
  const { values } = parse('top', args, { by: { type: 'string' }, since: { type: 'string' }, limit: { type: 'string' }, json: { type: 'boolean' } }, { min: 0, max: 0, usage: USAGE_OF.top });
  const by = (values.by ?? 'address') as By;
  if (!['address', 'network', 'account', 'country'].includes(by)) throw usageError(`top: --by ${JSON.stringify(values.by)} is not one of address, network, account, country`);
  const limit = values.limit === undefined ? 20 : /^\d{1,6}$/.test(values.limit) && Number(values.limit) > 0 ? Number(values.limit) : NaN;
  if (Number.isNaN(limit)) throw usageError(`top: --limit ${JSON.stringify(values.limit)} is not a whole number from 1`);
  const span = values.since === undefined ? null : parseDuration(values.since);
  if (values.since !== undefined && (span === null || span === 0)) throw usageError(`top: --since ${JSON.stringify(values.since)} is not a duration such as 1h, 24h, 7d`);
  const now = Date.now();
  const since = span === null ? 0 : now - span;
  const cfg = config();
  const countryOf = by === 'account' || by === 'network' ? null : countryLookup(cfg.geoip_db);
  if (by === 'country' && !countryOf) throw new CliError('top: --by country needs a country database: geoip_db is off, or the bundled one is not installed');
  const db = openReadOnly(cfg.db);
  try {
    if (by === 'account') return printAccounts(accounts(db, since, limit), !!values.json);
    return printOffenders(offenders(hostRows(db, since, now), by, countryOf).slice(0, limit), by, !!values.json);
  } finally {
    db.close();
  }
}

function printAccounts(rows: AccountRow[], json: boolean): number {
  if (json) printJson(rows.map((r) => ({ ...r, lastSeen: iso(r.lastSeen) })));
  else printTable(rows, [{ header: 'ACCOUNT', get: (r) => r.account }, { header: 'ATTEMPTS', get: (r) => r.attempts, right: true }, { header: 'HOSTS', get: (r) => r.hosts, right: true }, { header: 'LAST SEEN', get: (r) => formatTime(r.lastSeen) }]);
  return EXIT.ok;
}

function printOffenders(rows: Offender[], by: HostBy, json: boolean): number {
  const grouped = by !== 'address';
  if (json) {
    printJson(rows.map((r) => ({ [by]: r.key, ...(r.country !== undefined ? { country: r.country } : {}), ...(grouped ? { hosts: r.hosts, bannedNow: r.bannedNow } : { bannedNow: r.bannedNow > 0 }), failures: r.failures, bans: r.bans, lastSeen: iso(r.lastSeen) })));
    return EXIT.ok;
  }
  printTable(rows, [
    { header: by.toUpperCase(), get: (r) => r.key },
    ...(rows.some((r) => r.country !== undefined) ? [{ header: 'COUNTRY', get: (r: Offender) => r.country ?? UNKNOWN_COUNTRY }] : []),
    ...(grouped ? [{ header: 'HOSTS', get: (r: Offender) => r.hosts, right: true }] : []),
    { header: 'FAILURES', get: (r) => r.failures, right: true }, { header: 'BANS', get: (r) => r.bans, right: true },
    { header: 'BANNED', get: (r) => (grouped ? `${r.bannedNow}` : r.bannedNow ? 'yes' : 'no') },
    { header: 'LAST SEEN', get: (r) => formatTime(r.lastSeen) },
  ]);
  return EXIT.ok;
}
