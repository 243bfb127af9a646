import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import Database from 'better-sqlite3';
import { drizzle, type BetterSQLite3Database } from 'drizzle-orm/better-sqlite3';
import { migrate } from 'drizzle-orm/better-sqlite3/migrator';
import * as schema from './schema';

export type Db = BetterSQLite3Database<typeof schema> & { $client: Database.Database };

/** drizzle/ sits two levels above both src/store and dist/store; migrate() wants it absolute. */
export const MIGRATIONS = resolve(__dirname, '..', '..', 'drizzle');

/**
 * Open (creating the directory), WAL, then migrate with foreign keys OFF: a migration that
 * rebuilds a table would otherwise cascade its DROP and silently delete child rows.
 */
export function openDatabase(path: string, migrationsFolder = MIGRATIONS): Db {
  if (!isMemory(path)) mkdirSync(dirname(resolve(path)), { recursive: true });
  const sqlite = new Database(path);
  sqlite.pragma('journal_mode = WAL');
  // NORMAL in WAL survives a process crash (SIGKILL) with every commit; only power loss may lose the last ones.
  sqlite.pragma('synchronous = NORMAL');
  sqlite.pragma('busy_timeout = 5000');
  sqlite.pragma('foreign_keys = OFF');
  const db = drizzle(sqlite, { schema }) as Db;
  const before = appliedMigrations(sqlite);
  migrate(db, { migrationsFolder });
  // Only after a migration ran: the check reads every row (~25-50 ms at 100k bans, each start).
  if (appliedMigrations(sqlite) !== before) {
    const broken = sqlite.pragma('foreign_key_check') as unknown[];
    if (broken.length > 0) throw new Error(`database ${path}: ${broken.length} rows break foreign keys after migration`);
  }
  sqlite.pragma('foreign_keys = ON');
  return db;
}

/** Rows in Drizzle's migration journal; -1 before the first migration made the table. */
function appliedMigrations(sqlite: Database.Database): number {
  try {
    return sqlite.prepare('SELECT count(*) FROM __drizzle_migrations').pluck().get() as number;
  } catch {
    return -1;
  }
}

/** In-memory and temporary databases (no file, so no WAL to checkpoint). */
export const isMemory = (path: string) => path === ':memory:' || path === '';
