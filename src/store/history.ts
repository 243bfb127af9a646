import type Database from 'better-sqlite3';
import type { SecurityEvent } from '../events/types';
import type { Prepared } from './bans';
import type { EventRow, HostRow } from './rows';

/**
 * One upsert per host and batch, carrying that host's failures (a flood from one address is one
 * row update per batch, not one per event): the row ends as it would after one upsert per event.
 * RETURNING failures: events are only inserted together with failures + 1, so a host with
 * failures <= history cannot have more than history events, and needs no trim.
 */
const UPSERT_HOST = `INSERT INTO hosts (address, family, first_seen, last_seen, failures, ban_count, banned, ban_until, last_kind, last_service, last_account)
  VALUES (?, ?, ?, ?, ?, 0, 0, NULL, ?, ?, ?)
  ON CONFLICT (address) DO UPDATE SET last_seen = max(hosts.last_seen, excluded.last_seen), failures = hosts.failures + excluded.failures,
    last_kind = excluded.last_kind, last_service = excluded.last_service, last_account = excluded.last_account
  RETURNING failures`;
const INSERT_EVENT = `INSERT INTO events (address, at, kind, service, transport, account) VALUES (?, ?, ?, ?, ?, ?)`;
/** Keeps only the newest N events of one host. */
const TRIM_EVENTS = `DELETE FROM events WHERE address = ? AND id <= (SELECT id FROM events WHERE address = ? ORDER BY id DESC LIMIT 1 OFFSET ?)`;

/** The hosts and events tables: what each offending host did, bounded per host. */
export class HistoryTable {
  private readonly recordTx: (batch: { event: SecurityEvent; at: number }[]) => void;

  constructor(c: Database.Database, private readonly sql: Prepared, private readonly onCommit: () => void, historyPerHost: number) {
    this.recordTx = c.transaction((batch: { event: SecurityEvent; at: number }[]) => {
      const keep = historyPerHost;
      // Per host, in order of first appearance (new rows get their rowids in that order).
      const perHost = new Map<string, { e: SecurityEvent; first: number; last: number; n: number }>();
      for (const { event: e, at } of batch) {
        const h = perHost.get(e.address);
        if (h) { h.e = e; h.last = Math.max(h.last, at); h.n++; } else perHost.set(e.address, { e, first: at, last: at, n: 1 });
      }
      const trim: string[] = [];
      const upsert = sql(UPSERT_HOST).pluck();
      for (const [address, h] of perHost) {
        const failures = upsert.get(address, h.e.family, h.first, h.last, h.n, h.e.kind, h.e.service, h.e.account) as number;
        if (keep > 0 && failures > keep) trim.push(address);
      }
      if (keep <= 0) return;
      const insert = sql(INSERT_EVENT);
      for (const { event: e, at } of batch) insert.run(e.address, at, e.kind, e.service, e.transport, e.account);
      for (const address of trim) sql(TRIM_EVENTS).run(address, address, keep);
    });
  }

  /** Offending events, written in one transaction per batch (the daemon batches them). */
  recordEvents(batch: { event: SecurityEvent; at: number }[]): void {
    if (batch.length === 0) return;
    this.recordTx(batch);
    this.onCommit();
  }

  /** Forget hosts never banned and not seen since `before` (keeps the file bounded under floods); their events go with them (cascade). */
  pruneHosts(before: number): number {
    return this.sql(`DELETE FROM hosts WHERE ban_count = 0 AND last_seen <= ?`).run(before).changes;
  }

  /** A host's newest events first. */
  recentEvents(address: string, limit = 100): EventRow[] {
    return this.sql(`SELECT id, address, at, kind, service, transport, account FROM events WHERE address = ? ORDER BY id DESC LIMIT ?`)
      .all(address, limit) as EventRow[];
  }

  host(address: string): HostRow | undefined {
    const row = this.sql(
      `SELECT address, family, first_seen AS firstSeen, last_seen AS lastSeen, failures, ban_count AS banCount, banned, ban_until AS banUntil,
         last_kind AS lastKind, last_service AS lastService, last_account AS lastAccount FROM hosts WHERE address = ?`,
    ).get(address) as (Omit<HostRow, 'banned'> & { banned: number }) | undefined;
    // As Drizzle's boolean mode reads it.
    return row && { ...row, banned: Number(row.banned) === 1 };
  }
}
