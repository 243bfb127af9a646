import type Database from 'better-sqlite3';
import type { Statement } from 'better-sqlite3';

/** Rows the outbox keeps at most: an outage longer than that many local decisions loses the oldest. */
export const OUTBOX_MAX = 1_000_000;

/** Lift reasons a peer hears of: an operator's unban, or the address allowed on this node. */
const PUBLISHED_LIFTS = `('unban', 'allowed')`;

/**
 * The node's fleet state in its own SQLite database: the outbox of local decisions and the
 * cursors. The outbox is filled by triggers on `bans`, in the same transaction as the ban row,
 * so the ban path does no fleet work and a crash or an engine outage loses nothing. A peer's
 * ban (source fleet) is never published again. An adopted kernel ban is published: it is a
 * local decision whose row a crash lost (a peer's ban is stored before its kernel command).
 * The ban trigger is made again at each start, so a database keeps no older rule.
 */
export const LOCAL_SCHEMA = [
  `CREATE TABLE IF NOT EXISTS fleet_state (key TEXT PRIMARY KEY, value TEXT NOT NULL)`,
  `CREATE TABLE IF NOT EXISTS fleet_outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, action TEXT NOT NULL, address TEXT NOT NULL, until INTEGER,
     reason_kind TEXT NOT NULL, reason_service TEXT NOT NULL, reason_account TEXT NOT NULL, failures INTEGER NOT NULL, source TEXT NOT NULL, at INTEGER NOT NULL)`,
  `DROP TRIGGER IF EXISTS fleet_outbox_ban`,
  `CREATE TRIGGER fleet_outbox_ban AFTER INSERT ON bans WHEN NEW.source <> 'fleet' BEGIN
     INSERT INTO fleet_outbox (action, address, until, reason_kind, reason_service, reason_account, failures, source, at)
       VALUES ('ban', NEW.address, NEW.until, NEW.reason_kind, NEW.reason_service, NEW.reason_account, NEW.failures, NEW.source, NEW.started_at);
     DELETE FROM fleet_outbox WHERE id <= (SELECT max(id) FROM fleet_outbox) - ${OUTBOX_MAX};
   END`,
  `CREATE TRIGGER IF NOT EXISTS fleet_outbox_unban AFTER UPDATE OF lifted_at ON bans
     WHEN OLD.lifted_at IS NULL AND NEW.lifted_at IS NOT NULL AND NEW.lift_reason IN ${PUBLISHED_LIFTS} BEGIN
     INSERT INTO fleet_outbox (action, address, until, reason_kind, reason_service, reason_account, failures, source, at)
       VALUES ('unban', NEW.address, NULL, NEW.lift_reason, '', '', 0, '', NEW.lifted_at);
   END`,
];

/** One outbox row as published. */
export interface OutboxRow {
  id: number; action: 'ban' | 'unban'; address: string; until: number | null;
  reasonKind: string; reasonService: string; reasonAccount: string; failures: number; source: string; at: number;
}

export class LocalFleetState {
  private readonly get: Statement;
  private readonly put: Statement;
  private readonly after: Statement;
  private readonly backlogAfter: Statement;
  private readonly trim: Statement;
  private readonly banAhead: Statement;
  private readonly unban: Statement;

  constructor(sqlite: Database.Database) {
    sqlite.transaction(() => { for (const s of LOCAL_SCHEMA) sqlite.exec(s); })();
    this.get = sqlite.prepare(`SELECT value FROM fleet_state WHERE key = ?`).pluck();
    this.put = sqlite.prepare(`INSERT INTO fleet_state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value`);
    this.after = sqlite.prepare(`SELECT id, action, address, until, reason_kind AS reasonKind, reason_service AS reasonService, reason_account AS reasonAccount,
      failures, source, at FROM fleet_outbox WHERE id > ? ORDER BY id LIMIT ?`);
    this.backlogAfter = sqlite.prepare(`SELECT count(*) FROM fleet_outbox WHERE id > ?`).pluck();
    this.trim = sqlite.prepare(`DELETE FROM fleet_outbox WHERE id <= ?`);
    this.banAhead = sqlite.prepare(`SELECT 1 FROM fleet_outbox WHERE id > ? AND action = 'ban' AND address = ? LIMIT 1`).pluck();
    this.unban = sqlite.prepare(`INSERT INTO fleet_outbox (action, address, until, reason_kind, reason_service, reason_account, failures, source, at)
      VALUES ('unban', ?, NULL, ?, '', '', 0, '', ?)`);
  }

  value(key: string): string | undefined {
    return this.get.get(key) as string | undefined;
  }

  set(key: string, value: string): void {
    this.put.run(key, value);
  }

  /** Outbox rows after the publish cursor, oldest first. */
  pending(limit: number): OutboxRow[] {
    return this.after.all(this.outboxCursor, limit) as OutboxRow[];
  }

  get outboxCursor(): number {
    return Number(this.value('outbox_cursor') ?? 0);
  }

  /** The cursor moves past published rows, which are then deleted. */
  published(upTo: number): void {
    this.set('outbox_cursor', String(upTo));
    this.trim.run(upTo);
  }

  /** Whether a ban of this address waits in the outbox. */
  banWaiting(address: string): boolean {
    return this.banAhead.get(this.outboxCursor, address) !== undefined;
  }

  /** An unban no trigger wrote (its ban's row was never stored), as the unban trigger would have. */
  addUnban(address: string, reason: string, at: number): void {
    this.unban.run(address, reason, at);
  }

  backlog(): number {
    return this.backlogAfter.get(this.outboxCursor) as number;
  }
}
