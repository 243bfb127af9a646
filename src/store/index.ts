import type Database from 'better-sqlite3';
import type { Statement } from 'better-sqlite3';
import { AllowedTable } from './allowed';
import { BanTable } from './bans';
import { startCheckpointer, type Checkpointer, type CheckpointerOptions } from './checkpointer';
import { HistoryTable } from './history';
import { drizzleOf, openSqlite, type Db } from './open';

export { openDatabase, openSqlite, pendingMigrations, untilUnlocked, MIGRATIONS, OPERATOR_LOCK_WAIT_MS, type Db } from './open';
export { Checkpointer, type CheckpointerOptions, type CheckpointerStats } from './checkpointer';
export { Pruner, type PruneLimits, type PruneReport, type PrunerOptions } from './prune';
export type { PageOptions } from './pages';
export type { ActiveBan, BanRow, EventRow, HostRow, KernelBanRow, LineTemplate, NewBan, RenderedLines, RenderedSlices } from './rows';
export { AllowedTable, BanTable, HistoryTable };

export interface StoreOptions {
  /**
   * The daemon only: checkpoint the WAL on a worker thread instead of inside commits (bans).
   * Short-lived stores (CLI commands) leave SQLite's automatic checkpoint on.
   */
  checkpointer?: boolean | CheckpointerOptions;
}

/**
 * The database, split by job on one connection: `bans` (BanTable), what hosts did (`history`,
 * HistoryTable), the runtime allow list (`allowed`, AllowedTable); callers name the table. Synchronous (better-sqlite3); Decisions decides when a
 * ban is written (after its kernel command).
 *
 * Every query is plain SQL on better-sqlite3 (the SQL Drizzle generated for it, same rows and
 * field names), none goes through Drizzle's query builder: loading drizzle-orm is costly at
 * every start (see docs/notes/measurements.md, Store). schema.ts stays the schema's source (drizzle-kit makes
 * the migrations from it) and test/store.test.ts compares these queries with the query builder's.
 */
export class Store {
  /** The connection. */
  readonly sqlite: Database.Database;
  readonly bans: BanTable;
  readonly history: HistoryTable;
  readonly allowed: AllowedTable;
  private drizzleDb: Db | null = null;
  private cp: Checkpointer | null = null;
  private readonly path: string;
  /** Statements prepared on their first use, shared by the tables (one connection). */
  private readonly prepared = new Map<string, Statement>();

  constructor(path: string, historyPerHost = 20, opts: StoreOptions = {}) {
    this.sqlite = openSqlite(path);
    this.path = path;
    const sql = (text: string) => {
      let s = this.prepared.get(text);
      if (s === undefined) this.prepared.set(text, (s = this.sqlite.prepare(text)));
      return s;
    };
    const committed = () => this.cp?.noteCommit();
    this.bans = new BanTable(this.sqlite, sql, committed);
    this.history = new HistoryTable(this.sqlite, sql, committed, historyPerHost);
    this.allowed = new AllowedTable(sql);
    if (opts.checkpointer) this.startCheckpointer(opts.checkpointer === true ? {} : opts.checkpointer);
  }

  /** The daemon's WAL checkpointer (option `checkpointer`, or startCheckpointer), null elsewhere. */
  get checkpointer(): Checkpointer | null {
    return this.cp;
  }

  /** Start the WAL checkpointer now (the daemon: after the start's reads of every ban, which a second isolate starting would slow). */
  startCheckpointer(opts: CheckpointerOptions = {}): void {
    if (!this.cp) this.cp = startCheckpointer(this.path, this.sqlite, opts);
  }

  /** A Drizzle query builder (with the schema) over the same connection, for tools and tests: made, and drizzle-orm loaded, on first use. */
  get db(): Db {
    return (this.drizzleDb ??= drizzleOf(this.sqlite));
  }

  /** How long a statement waits for another connection's lock before SQLITE_BUSY. */
  setBusyTimeout(ms: number): void {
    this.sqlite.pragma(`busy_timeout = ${Math.max(0, Math.floor(ms))}`);
  }

  /** Stops the checkpointer (with a last checkpoint) first, then closes the connection. */
  close(): void {
    try { this.checkpointer?.stop(); } finally { this.sqlite.close(); }
  }
}
