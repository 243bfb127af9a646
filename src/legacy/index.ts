import Database from 'better-sqlite3';
import { notSingleHost } from '../net/ip';

/**
 * The original C Ampere kept its bans in `CREATE TABLE filter(addr INT PRIMARY KEY NOT NULL, id TEXT)`,
 * `addr` being the `inet_addr()` value: the four bytes in network order, read back as a host
 * integer on little-endian x86. So 1.2.3.4 is stored as 0x04030201 = 67305985: the first octet is
 * the lowest byte. (The original decoded it naively and restored bans on the wrong addresses.)
 */

export type LegacyDecode = { ok: true; address: string } | { ok: false; reason: string };

const U32 = 2 ** 32;

/**
 * One stored `addr` to dotted IPv4 text. Accepts the unsigned value (0..2^32-1) and the signed
 * 32-bit one (-2^31..-1, how a C `int` holding a high first byte reads back). Anything else:
 * not an integer, out of 32-bit range, 0.0.0.0 (unspecified), 255.255.255.255 (broadcast) or
 * any other address that cannot be a single host (src/net/ip.ts notSingleHost) is refused with the reason.
 */
export function decodeLegacyAddr(value: unknown): LegacyDecode {
  let n: number;
  if (typeof value === 'bigint') {
    if (value < -(2n ** 31n) || value >= 2n ** 32n) return { ok: false, reason: `out of 32-bit range: ${value}` };
    n = Number(value);
  } else if (typeof value === 'number') {
    n = value;
  } else if (typeof value === 'string' && /^-?\d{1,20}$/.test(value.trim())) {
    n = Number(value.trim());
  } else {
    return { ok: false, reason: value === null || value === undefined ? 'empty address' : `not an integer: ${JSON.stringify(typeof value === 'string' ? value.slice(0, 40) : String(value))}` };
  }
  if (!Number.isInteger(n)) return { ok: false, reason: `not an integer: ${n}` };
  if (n < -(2 ** 31) || n >= U32) return { ok: false, reason: `out of 32-bit range: ${n}` };
  const u = n < 0 ? n + U32 : n;
  if (u === 0) return { ok: false, reason: 'decodes to 0.0.0.0 (not a host address)' };
  if (u === U32 - 1) return { ok: false, reason: 'decodes to 255.255.255.255 (broadcast)' };
  // Little-endian memory order: the lowest byte is the first octet.
  const address = [u & 0xff, (u >>> 8) & 0xff, (u >>> 16) & 0xff, (u >>> 24) & 0xff].join('.');
  const why = notSingleHost(address, 4);
  if (why) return { ok: false, reason: `decodes to ${address}, not a single host: ${why}` };
  return { ok: true, address };
}

/** The inverse, for tests and for writing legacy fixtures: 1.2.3.4 -> 67305985. */
export function encodeLegacyAddr(address: string): number {
  const p = address.split('.').map(Number);
  return ((p[3] << 24) >>> 0) + (p[2] << 16) + (p[1] << 8) + p[0];
}

export interface LegacyEntry {
  address: string;
  /** The original's `id` column: the last AccountID it saw (hostile text: shown, never executed). */
  account: string;
}

export interface LegacySkip {
  row: number; // 1-based rowid order
  value: string; // the stored addr as text
  reason: string;
}

export interface LegacyRead {
  entries: LegacyEntry[];
  skipped: LegacySkip[];
  rows: number;
}

/** Account text from the network, bounded and without control characters. */
function cleanAccount(v: unknown): string {
  if (v === null || v === undefined) return '';
  return String(v).replace(/[\u0000-\u001f\u007f]/g, ' ').slice(0, 80);
}

/**
 * Read an original Ampere database (read-only, never modified). Throws when the file is not
 * SQLite or has no `filter` table; rows that do not decode are returned in `skipped`.
 */
export function readLegacyDatabase(path: string): LegacyRead {
  let db: Database.Database;
  try {
    db = new Database(path, { readonly: true, fileMustExist: true });
  } catch (err) {
    throw new Error(`cannot open ${path}: ${(err as Error).message}`);
  }
  try {
    db.defaultSafeIntegers(true);
    let table: unknown;
    try {
      table = db.prepare(`SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'filter'`).get();
    } catch (err) {
      throw new Error(`${path} is not an SQLite database: ${(err as Error).message}`);
    }
    if (!table) throw new Error(`${path} is not an original Ampere database: it has no table "filter"`);
    const cols = (db.prepare(`PRAGMA table_info(filter)`).all() as { name: string }[]).map((c) => c.name.toLowerCase());
    if (!cols.includes('addr')) throw new Error(`${path}: table "filter" has no column "addr"`);
    const hasId = cols.includes('id');
    const rows = db.prepare(`SELECT addr${hasId ? ', id' : ''} FROM filter ORDER BY rowid`).all() as { addr: unknown; id?: unknown }[];
    const entries: LegacyEntry[] = [];
    const skipped: LegacySkip[] = [];
    const seen = new Set<string>();
    rows.forEach((r, i) => {
      const d = decodeLegacyAddr(r.addr);
      if (!d.ok) { skipped.push({ row: i + 1, value: r.addr === null ? 'NULL' : String(r.addr).slice(0, 40), reason: d.reason }); return; }
      if (seen.has(d.address)) { skipped.push({ row: i + 1, value: String(r.addr), reason: `duplicate of ${d.address}` }); return; }
      seen.add(d.address);
      entries.push({ address: d.address, account: cleanAccount(r.id) });
    });
    return { entries, skipped, rows: rows.length };
  } finally {
    db.close();
  }
}
