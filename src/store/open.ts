import { mkdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import Database from 'better-sqlite3';
import type { BetterSQLite3Database } from 'drizzle-orm/better-sqlite3';
import type * as schema from './schema';

export type Db = BetterSQLite3Database<typeof schema> & { $client: Database.Database };

/** drizzle/ sits two levels above both src/store and dist/store; migrate() wants it absolute. */
export const MIGRATIONS = resolve(__dirname, '..', '..', 'drizzle');

/**
 * Open (creating the directory), WAL, then migrate with foreign keys OFF: a migration that
 * rebuilds a table would otherwise cascade its DROP and silently delete child rows.
 *
 * No Drizzle module is loaded unless a migration is pending: loading drizzle-orm is costly at
 * every start (docs/notes/measurements.md, Store), and the daemon's queries are plain prepared statements.
 */
/**
 * The daemon's busy timeout once it runs: SQLite waits for another process's lock on the event
 * loop, so it waits only this long and the write is retried later (bans, history, expiry);
 * the start and the CLI keep BUSY_TIMEOUT_MS.
 */
export const DAEMON_BUSY_TIMEOUT_MS = 5;
export const BUSY_TIMEOUT_MS = 5000;

/** How long an operator's write through the daemon waits for another connection's lock (a checkpoint, another process's import) before it fails. */
export const OPERATOR_LOCK_WAIT_MS = 2000;

/** SQLITE_BUSY and its extended codes: another connection holds the lock. */
export function isBusy(err: unknown): boolean {
  return String((err as { code?: unknown } | null)?.code ?? '').startsWith('SQLITE_BUSY');
}

/** How often untilUnlocked tries again. */
const LOCK_POLL_MS = 25;

/**
 * Runs fn, and again every LOCK_POLL_MS while it fails on another connection's lock, for up to
 * waitMs, without holding the event loop: an operator's command waits for a checkpoint or another
 * process's import instead of failing (the daemon's busy timeout is a few milliseconds). fn must
 * be safe to run again after a busy failure; the last failure is thrown.
 */
export async function untilUnlocked<T>(fn: () => T, waitMs = OPERATOR_LOCK_WAIT_MS): Promise<T> {
  const end = Date.now() + waitMs;
  for (;;) {
    try {
      return fn();
    } catch (err) {
      if (!isBusy(err) || Date.now() >= end) throw err;
    }
    await new Promise((r) => setTimeout(r, LOCK_POLL_MS));
  }
}

/** PRAGMA cache_size: negative is KiB. */
export const CACHE_SIZE = -2000;

export function openSqlite(path: string, migrationsFolder = MIGRATIONS): Database.Database {
  if (!isMemory(path)) mkdirSync(dirname(resolve(path)), { recursive: true });
  const sqlite = new Database(path);
  try {
    sqlite.pragma('journal_mode = WAL');
    // NORMAL in WAL survives a process crash (SIGKILL) with every commit; only power loss may lose the last ones.
    sqlite.pragma('synchronous = NORMAL');
    // The temporary schema holds scratch tables only (src/store/bulk-bans.ts): its rollback journal
    // in memory, not a file made and removed by every transaction that writes one (docs/notes/measurements.md, Store).
    sqlite.pragma('temp.journal_mode = MEMORY');
    sqlite.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
    // SQLite's own default page cache, not better-sqlite3's larger one, which a flood of new
    // sources filled and never gave back, for no speed (docs/notes/measurements.md, Store).
    sqlite.pragma(`cache_size = ${CACHE_SIZE}`);
    sqlite.pragma('foreign_keys = OFF');
    if (pendingMigrations(sqlite, migrationsFolder) > 0) {
      const { drizzle } = require('drizzle-orm/better-sqlite3') as typeof import('drizzle-orm/better-sqlite3');
      const { migrate } = require('drizzle-orm/better-sqlite3/migrator') as typeof import('drizzle-orm/better-sqlite3/migrator');
      migrate(drizzle(sqlite), { migrationsFolder });
      // Only after a migration ran: the check reads every row, too slow for each start.
      const broken = sqlite.pragma('foreign_key_check') as unknown[];
      if (broken.length > 0) throw new Error(`database ${path}: ${broken.length} rows break foreign keys after migration`);
    }
    sqlite.pragma('foreign_keys = ON');
    return sqlite;
  } catch (err) {
    sqlite.close();
    throw err;
  }
}

/** openSqlite with a Drizzle query builder over it (Drizzle loaded now): for scripts and tools. */
export function openDatabase(path: string, migrationsFolder = MIGRATIONS): Db {
  return drizzleOf(openSqlite(path, migrationsFolder));
}

/** A Drizzle instance (with the schema) over an open connection; requires drizzle-orm on first call. */
export function drizzleOf(sqlite: Database.Database): Db {
  const { drizzle } = require('drizzle-orm/better-sqlite3') as typeof import('drizzle-orm/better-sqlite3');
  return drizzle(sqlite, { schema: require('./schema') as typeof schema }) as Db;
}

/**
 * How many migrations Drizzle's migrator would run, decided as it does (drizzle-orm's
 * readMigrationFiles and SQLiteSyncDialect.migrate): every journal entry whose `when` is later
 * than the created_at of the newest row in __drizzle_migrations; all of them without a row.
 */
export function pendingMigrations(sqlite: Database.Database, migrationsFolder = MIGRATIONS): number {
  const journal = join(migrationsFolder, 'meta', '_journal.json');
  let entries: { when: number }[];
  try {
    entries = (JSON.parse(readFileSync(journal, 'utf8')) as { entries: { when: number }[] }).entries;
    if (!Array.isArray(entries)) throw new Error('no "entries" list');
  } catch (err) {
    throw new Error(`migrations folder ${migrationsFolder}: cannot read meta/_journal.json (${(err as Error).message})`);
  }
  const hasTable = sqlite.prepare(`SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '__drizzle_migrations'`).get() !== undefined;
  const last = hasTable ? sqlite.prepare('SELECT created_at FROM __drizzle_migrations ORDER BY created_at DESC LIMIT 1').pluck().get() : undefined;
  return entries.filter((e) => last === undefined || Number(last) < e.when).length;
}

/** In-memory and temporary databases (no file, so no WAL to checkpoint). */
export const isMemory = (path: string) => path === ':memory:' || path === '';
