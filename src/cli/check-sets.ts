import { existsSync } from 'node:fs';
import type { Config } from '../config';
import { SET_SIZE_MAX } from '../firewall/set-size';
import type { Check } from './check';

/** Bans in force of single hosts per family: what each family's set of hosts must hold. */
const HOSTS_BANNED = `SELECT instr(address, ':') > 0 AS v6, count(*) AS n FROM bans
  WHERE lifted_at IS NULL AND (until IS NULL OR until > ?) AND instr(address, '/') = 0 GROUP BY 1`;

/**
 * The ipset backend's sets against the database: a family with more hosts banned than set_size
 * cannot have them all in the kernel (the daemon leaves the rest out, logged). Null without a
 * database to count in.
 */
export function checkSetSize(cfg: Pick<Config, 'db' | 'set_size'>, now = Date.now()): Check | null {
  if (!existsSync(cfg.db)) return null;
  const Database = require('better-sqlite3') as typeof import('better-sqlite3');
  let db;
  const count = { 4: 0, 6: 0 };
  try {
    db = new Database(cfg.db, { fileMustExist: true, timeout: 5000 });
    for (const r of db.prepare(HOSTS_BANNED).all(now) as { v6: number; n: number }[]) count[r.v6 ? 6 : 4] = r.n;
  } catch {
    return null; // not a database with bans yet: the database check says why
  } finally {
    db?.close();
  }
  const over = ([4, 6] as const).filter((f) => count[f] > cfg.set_size);
  if (over.length === 0) return { name: 'set size', result: 'ok', detail: `${count[4]} IPv4 and ${count[6]} IPv6 hosts banned in the database; each family's set holds ${cfg.set_size} (set_size)` };
  const what = over.map((f) => `${count[f]} IPv${f} hosts`).join(' and ');
  return {
    name: 'set size', result: 'fail',
    detail: `${what} banned in the database, more than set_size ${cfg.set_size}: the kernel's set cannot hold them all (the rest stay out, logged); raise set_size (at most ${SET_SIZE_MAX})`,
  };
}
