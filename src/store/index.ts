import type { Statement } from 'better-sqlite3';
import { and, desc, eq, gt, isNull, lte, or, sql } from 'drizzle-orm';
import type { SecurityEvent } from '../events/types';
import type { Family } from '../net/ip';
import { startCheckpointer, type Checkpointer, type CheckpointerOptions } from './checkpointer';
import { openDatabase, type Db } from './open';
import { allowed, bans, events, hosts } from './schema';

export { openDatabase, MIGRATIONS, type Db } from './open';
export { Checkpointer, type CheckpointerOptions, type CheckpointerStats } from './checkpointer';
export * as schema from './schema';

export interface ActiveBan {
  id: number;
  address: string;
  family: Family;
  startedAt: number;
  until: number | null;
  reasonKind: string;
  reasonService: string;
  reasonAccount: string;
  failures: number;
  source: string;
}

/** A ban as listings show it: active or past, with the host's ban count. */
export interface BanRow extends ActiveBan {
  liftedAt: number | null;
  liftReason: string | null;
  banCount: number;
}

export interface NewBan {
  address: string;
  family: Family;
  now: number;
  until: number | null;
  reasonKind: string;
  reasonService: string;
  reasonAccount: string;
  failures: number;
  source: 'auto' | 'manual' | 'legacy';
}

export interface StoreOptions {
  /**
   * The daemon only: checkpoint the WAL on a worker thread instead of inside commits (bans).
   * Short-lived stores (CLI commands) leave SQLite's automatic checkpoint on.
   */
  checkpointer?: boolean | CheckpointerOptions;
}

/** An ActiveBan's columns, in the order toBans reads them. */
const BAN_COLUMNS = 'id, address, family, started_at, until, reason_kind, reason_service, reason_account, failures, source';

/**
 * Rows of BAN_COLUMNS (raw arrays) to ActiveBans. For 100k bans the time goes to making the
 * values (better-sqlite3, per row) and to the garbage collector copying what survives; Drizzle's
 * mapping was only a part. So: one row array at a time (iterate: it dies young), and the few
 * distinct reason/source texts shared instead of one copy per ban.
 */
function toBans(rows: Iterable<unknown[]>): ActiveBan[] {
  const texts = new Map<string, string>();
  const text = (v: unknown) => {
    const s = v as string;
    const seen = texts.get(s);
    if (seen !== undefined) return seen;
    if (texts.size < 10_000) texts.set(s, s);
    return s;
  };
  const out: ActiveBan[] = [];
  for (const r of rows) {
    out.push({
      id: r[0] as number, address: r[1] as string, family: r[2] as Family, startedAt: r[3] as number, until: r[4] as number | null,
      reasonKind: text(r[5]), reasonService: text(r[6]), reasonAccount: text(r[7]), failures: r[8] as number, source: text(r[9]),
    });
  }
  return out;
}

const active = (now: number) => and(isNull(bans.liftedAt), or(isNull(bans.until), gt(bans.until, now)));

/** The daemon's queries. Synchronous (better-sqlite3); Decisions decides when a ban is written (after its kernel command). */
export class Store {
  readonly db: Db;
  // The two writes on the daemon's hot paths (every failure, every ban) are plain prepared
  // statements: the SQL Drizzle generates for them, built once instead of per call.
  private readonly upsertHost: Statement;
  private readonly insertEvent: Statement;
  private readonly trimEvents: Statement;
  private readonly banHost: Statement;
  private readonly supersedeBans: Statement;
  private readonly insertBan: Statement;
  private readonly selectBanCount: Statement;
  private readonly selectActive: Statement;
  private readonly selectActiveKernel: Statement;
  private readonly selectDue: Statement;
  private readonly markExpired: Statement;
  private readonly unbanHost: Statement;
  private readonly expireTx: (now: number) => ActiveBan[];
  /** The daemon's WAL checkpointer (option `checkpointer`), null elsewhere. */
  readonly checkpointer: Checkpointer | null;
  private readonly recordEventsTx: (batch: { event: SecurityEvent; at: number }[]) => void;
  private readonly recordBanTx: (b: NewBan) => { id: number; banCount: number };
  private readonly recordBansTx: (list: NewBan[]) => void;

  constructor(path: string, private readonly historyPerHost = 20, opts: StoreOptions = {}) {
    this.db = openDatabase(path);
    const c = this.db.$client;
    // One upsert per host and batch, carrying that host's failures in it (a flood from one
    // address is one row update per batch, not one per event): the row ends as it would after
    // one upsert per event. RETURNING failures: events are only ever inserted together with
    // failures + 1, so a host with failures <= history cannot have more than history events,
    // and needs no trim.
    this.upsertHost = c.prepare(
      `INSERT INTO hosts (address, family, first_seen, last_seen, failures, ban_count, banned, ban_until, last_kind, last_service, last_account)
       VALUES (?, ?, ?, ?, ?, 0, 0, NULL, ?, ?, ?)
       ON CONFLICT (address) DO UPDATE SET last_seen = max(hosts.last_seen, excluded.last_seen), failures = hosts.failures + excluded.failures,
         last_kind = excluded.last_kind, last_service = excluded.last_service, last_account = excluded.last_account
       RETURNING failures`,
    ).pluck();
    this.insertEvent = c.prepare(`INSERT INTO events (address, at, kind, service, transport, account) VALUES (?, ?, ?, ?, ?, ?)`);
    // Keep only the newest N events of one host.
    this.trimEvents = c.prepare(
      `DELETE FROM events WHERE address = ? AND id <= (SELECT id FROM events WHERE address = ? ORDER BY id DESC LIMIT 1 OFFSET ?)`,
    );
    this.banHost = c.prepare(
      `INSERT INTO hosts (address, family, first_seen, last_seen, failures, ban_count, banned, ban_until, last_kind, last_service, last_account)
       VALUES (?, ?, ?, ?, 0, 1, 1, ?, ?, ?, ?)
       ON CONFLICT (address) DO UPDATE SET last_seen = max(hosts.last_seen, excluded.last_seen), ban_count = hosts.ban_count + 1,
         banned = 1, ban_until = excluded.ban_until
       RETURNING ban_count`,
    ).pluck();
    this.supersedeBans = c.prepare(`UPDATE bans SET lifted_at = ?, lift_reason = 'superseded' WHERE address = ? AND lifted_at IS NULL`);
    this.insertBan = c.prepare(
      `INSERT INTO bans (address, family, started_at, until, reason_kind, reason_service, reason_account, failures, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
    ).pluck();
    // Asked on every ban (escalation): built by Drizzle per call it was half of the ban's path.
    this.selectBanCount = c.prepare(`SELECT ban_count FROM hosts WHERE address = ?`).pluck();
    // Start (all active bans into the kernel) and every expiry tick: plain statements, rows as
    // arrays. Both use the bans_active (lifted_at, until) index; same order as before.
    this.selectActive = c.prepare(`SELECT ${BAN_COLUMNS} FROM bans WHERE lifted_at IS NULL AND (until IS NULL OR until > ?)`).raw();
    // What a start needs to load the kernel, one text per ban ("address until"): better-sqlite3
    // makes a plain string far faster than a row object (100k bans, fresh process: ~110 ms
    // against ~250 ms for {address, family, until}); the objects are then made here, in JS.
    this.selectActiveKernel = c.prepare(`SELECT address || ' ' || ifnull(until, '') FROM bans WHERE lifted_at IS NULL AND (until IS NULL OR until > ?)`).pluck();
    this.selectDue = c.prepare(`SELECT ${BAN_COLUMNS} FROM bans WHERE lifted_at IS NULL AND until <= ?`).raw();
    this.markExpired = c.prepare(`UPDATE bans SET lifted_at = until, lift_reason = 'expired' WHERE lifted_at IS NULL AND until <= ?`);
    this.unbanHost = c.prepare(`UPDATE hosts SET banned = 0, ban_until = NULL WHERE address = ?`);
    this.expireTx = c.transaction((now: number) => {
      const due = toBans(this.selectDue.iterate(now) as Iterable<unknown[]>);
      if (due.length === 0) return due;
      this.markExpired.run(now);
      for (const b of due) this.unbanHost.run(b.address);
      return due;
    });
    this.recordEventsTx = c.transaction((batch: { event: SecurityEvent; at: number }[]) => {
      const keep = this.historyPerHost;
      // Per host, in order of first appearance (new rows get their rowids in that order).
      const perHost = new Map<string, { e: SecurityEvent; first: number; last: number; n: number }>();
      for (const { event: e, at } of batch) {
        const h = perHost.get(e.address);
        if (h) { h.e = e; h.last = Math.max(h.last, at); h.n++; } else perHost.set(e.address, { e, first: at, last: at, n: 1 });
      }
      const trim: string[] = [];
      for (const [address, h] of perHost) {
        const failures = this.upsertHost.get(address, h.e.family, h.first, h.last, h.n, h.e.kind, h.e.service, h.e.account) as number;
        if (keep > 0 && failures > keep) trim.push(address);
      }
      if (keep > 0) {
        for (const { event: e, at } of batch) this.insertEvent.run(e.address, at, e.kind, e.service, e.transport, e.account);
        for (const address of trim) this.trimEvents.run(address, address, keep);
      }
    });
    const writeBan = (b: NewBan) => {
      const banCount = this.banHost.get(b.address, b.family, b.now, b.now, b.until, b.reasonKind, b.reasonService, b.reasonAccount) as number;
      this.supersedeBans.run(b.now, b.address);
      const id = this.insertBan.get(b.address, b.family, b.now, b.until, b.reasonKind, b.reasonService, b.reasonAccount, b.failures, b.source) as number;
      return { id, banCount };
    };
    this.recordBanTx = c.transaction(writeBan);
    this.recordBansTx = c.transaction((list: NewBan[]) => { for (const b of list) writeBan(b); });
    this.checkpointer = opts.checkpointer ? startCheckpointer(path, c, opts.checkpointer === true ? {} : opts.checkpointer) : null;
  }

  /** Offending events, written in one transaction per batch (the daemon batches them). */
  recordEvents(batch: { event: SecurityEvent; at: number }[]): void {
    if (batch.length === 0) return;
    this.recordEventsTx(batch);
    this.checkpointer?.noteCommit();
  }

  /** How many bans this host had before (for escalating ban times). */
  banCount(address: string): number {
    return (this.selectBanCount.get(address) as number | undefined) ?? 0;
  }

  /** Record a ban atomically: host row, the ban row, and any earlier active ban superseded. Returns the host's ban count. */
  recordBan(b: NewBan): { id: number; banCount: number } {
    const r = this.recordBanTx(b);
    this.checkpointer?.noteCommit();
    return r;
  }

  /** Several bans in one transaction, in order (the daemon's automatic bans of one loop turn). */
  recordBans(list: NewBan[]): void {
    if (list.length === 0) return;
    this.recordBansTx(list);
    this.checkpointer?.noteCommit();
  }

  /** Bans in force at `now`: not lifted, and permanent (until null) or ending after now. */
  activeBans(now: number): ActiveBan[] {
    return toBans(this.selectActive.iterate(now) as Iterable<unknown[]>);
  }

  /** The same bans as activeBans, with only what the kernel needs. */
  activeKernelBans(now: number): { address: string; family: Family; until: number | null }[] {
    const out: { address: string; family: Family; until: number | null }[] = [];
    for (const row of this.selectActiveKernel.all(now) as string[]) {
      const sp = row.indexOf(' ');
      const address = row.slice(0, sp);
      out.push({ address, family: address.includes(':') ? 6 : 4, until: sp === row.length - 1 ? null : Number(row.slice(sp + 1)) });
    }
    return out;
  }

  isBanned(address: string, now: number): boolean {
    return this.db.select({ id: bans.id }).from(bans).where(and(eq(bans.address, address), active(now))).get() !== undefined;
  }

  /** Mark bans whose time is up as lifted; returns them so the kernel and logs can follow. */
  expireBans(now: number): (ActiveBan & { until: number })[] {
    return this.expireTx(now) as (ActiveBan & { until: number })[];
  }

  /** End a host's active ban early; false when it had none. */
  liftBan(address: string, now: number, reason: 'unban' | 'allowed'): boolean {
    return this.db.transaction((tx) => {
      const res = tx.update(bans).set({ liftedAt: now, liftReason: reason }).where(and(eq(bans.address, address), active(now))).run();
      tx.update(hosts).set({ banned: false, banUntil: null }).where(eq(hosts.address, address)).run();
      return res.changes > 0;
    });
  }

  /** Forget hosts never banned and not seen since `before` (keeps the file bounded under floods). */
  pruneHosts(before: number): number {
    return this.db.delete(hosts).where(and(eq(hosts.banCount, 0), lte(hosts.lastSeen, before))).run().changes;
  }

  recentEvents(address: string, limit = 100) {
    return this.db.select().from(events).where(eq(events.address, address)).orderBy(desc(events.id)).limit(limit).all();
  }

  host(address: string) {
    return this.db.select().from(hosts).where(eq(hosts.address, address)).get();
  }

  allowList(): { cidr: string; addedAt: number; note: string }[] {
    return this.db.select().from(allowed).all();
  }

  addAllowed(cidr: string, now: number, note = ''): void {
    this.db.insert(allowed).values({ cidr, addedAt: now, note }).onConflictDoNothing().run();
  }

  removeAllowed(cidr: string): boolean {
    return this.db.delete(allowed).where(eq(allowed.cidr, cidr)).run().changes > 0;
  }

  /** Bans for listings, newest first: active ones, or (all) every ban ever made; optionally one host's. */
  listBans(now: number, opts: { all?: boolean; address?: string } = {}): BanRow[] {
    const conds = [opts.all ? undefined : active(now), opts.address !== undefined ? eq(bans.address, opts.address) : undefined].filter((c) => c !== undefined);
    return this.db
      .select({
        id: bans.id, address: bans.address, family: bans.family, startedAt: bans.startedAt, until: bans.until,
        reasonKind: bans.reasonKind, reasonService: bans.reasonService, reasonAccount: bans.reasonAccount,
        failures: bans.failures, source: bans.source, liftedAt: bans.liftedAt, liftReason: bans.liftReason,
        banCount: sql<number>`coalesce(${hosts.banCount}, 0)`,
      })
      .from(bans)
      .leftJoin(hosts, eq(hosts.address, bans.address))
      .where(conds.length ? and(...conds) : undefined)
      .orderBy(desc(bans.startedAt), desc(bans.id))
      .all() as BanRow[];
  }

  /** End every active ban at once (operator `unban --all`); returns the bans lifted. */
  liftAllBans(now: number, reason: 'unban'): ActiveBan[] {
    return this.db.transaction((tx) => {
      const lifted = tx.select().from(bans).where(active(now)).all() as ActiveBan[];
      tx.update(bans).set({ liftedAt: now, liftReason: reason }).where(active(now)).run();
      tx.update(hosts).set({ banned: false, banUntil: null }).where(eq(hosts.banned, true)).run();
      return lifted;
    });
  }

  /** Stops the checkpointer (with a last checkpoint) first, then closes the connection. */
  close(): void {
    try { this.checkpointer?.stop(); } finally { this.db.$client.close(); }
  }
}
