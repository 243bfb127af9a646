import { and, desc, eq, gt, isNull, lte, or, sql } from 'drizzle-orm';
import type { SecurityEvent } from '../events/types';
import type { Family } from '../net/ip';
import { openDatabase, type Db } from './open';
import { allowed, bans, events, hosts } from './schema';

export { openDatabase, MIGRATIONS, type Db } from './open';
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

const active = (now: number) => and(isNull(bans.liftedAt), or(isNull(bans.until), gt(bans.until, now)));

/** The daemon's queries. Synchronous (better-sqlite3): a ban is committed before the kernel hears of it. */
export class Store {
  readonly db: Db;
  private readonly upsertHost;
  private readonly insertEvent;
  private readonly trimEvents;

  constructor(path: string, private readonly historyPerHost = 20) {
    this.db = openDatabase(path);
    this.upsertHost = this.db
      .insert(hosts)
      .values({
        address: sql.placeholder('address'), family: sql.placeholder('family'), firstSeen: sql.placeholder('at'),
        lastSeen: sql.placeholder('at'), failures: 1, lastKind: sql.placeholder('kind'),
        lastService: sql.placeholder('service'), lastAccount: sql.placeholder('account'),
      })
      .onConflictDoUpdate({
        target: hosts.address,
        set: {
          lastSeen: sql`max(${hosts.lastSeen}, excluded.last_seen)`, failures: sql`${hosts.failures} + 1`,
          lastKind: sql`excluded.last_kind`, lastService: sql`excluded.last_service`, lastAccount: sql`excluded.last_account`,
        },
      })
      .prepare();
    this.insertEvent = this.db
      .insert(events)
      .values({
        address: sql.placeholder('address'), at: sql.placeholder('at'), kind: sql.placeholder('kind'),
        service: sql.placeholder('service'), transport: sql.placeholder('transport'), account: sql.placeholder('account'),
      })
      .prepare();
    // Keep only the newest N events of one host.
    this.trimEvents = this.db.$client.prepare(
      `DELETE FROM events WHERE address = ? AND id <= (SELECT id FROM events WHERE address = ? ORDER BY id DESC LIMIT 1 OFFSET ?)`,
    );
  }

  /** Offending events, written in one transaction per batch (the daemon batches them). */
  recordEvents(batch: { event: SecurityEvent; at: number }[]): void {
    if (batch.length === 0) return;
    this.db.$client.transaction(() => {
      const touched = new Map<string, number>();
      for (const { event: e, at } of batch) {
        const row = { address: e.address, family: e.family, at, kind: e.kind, service: e.service, account: e.account, transport: e.transport };
        this.upsertHost.run(row);
        if (this.historyPerHost > 0) this.insertEvent.run(row);
        touched.set(e.address, (touched.get(e.address) ?? 0) + 1);
      }
      if (this.historyPerHost > 0) {
        for (const address of touched.keys()) this.trimEvents.run(address, address, this.historyPerHost);
      }
    })();
  }

  /** How many bans this host had before (for escalating ban times). */
  banCount(address: string): number {
    const row = this.db.select({ n: hosts.banCount }).from(hosts).where(eq(hosts.address, address)).get();
    return row?.n ?? 0;
  }

  /** Record a ban atomically: host row, the ban row, and any earlier active ban superseded. Returns the host's ban count. */
  recordBan(b: NewBan): { id: number; banCount: number } {
    return this.db.transaction((tx) => {
      tx.insert(hosts)
        .values({ address: b.address, family: b.family, firstSeen: b.now, lastSeen: b.now, failures: 0, banCount: 1, banned: true, banUntil: b.until, lastKind: b.reasonKind, lastService: b.reasonService, lastAccount: b.reasonAccount })
        .onConflictDoUpdate({ target: hosts.address, set: { banCount: sql`${hosts.banCount} + 1`, banned: true, banUntil: b.until, lastSeen: sql`max(${hosts.lastSeen}, ${b.now})` } })
        .run();
      tx.update(bans).set({ liftedAt: b.now, liftReason: 'superseded' }).where(and(eq(bans.address, b.address), isNull(bans.liftedAt))).run();
      const row = tx
        .insert(bans)
        .values({ address: b.address, family: b.family, startedAt: b.now, until: b.until, reasonKind: b.reasonKind, reasonService: b.reasonService, reasonAccount: b.reasonAccount, failures: b.failures, source: b.source })
        .returning({ id: bans.id })
        .get();
      const host = tx.select({ n: hosts.banCount }).from(hosts).where(eq(hosts.address, b.address)).get();
      return { id: row.id, banCount: host!.n };
    });
  }

  activeBans(now: number): ActiveBan[] {
    return this.db
      .select({ id: bans.id, address: bans.address, family: bans.family, startedAt: bans.startedAt, until: bans.until, reasonKind: bans.reasonKind, reasonService: bans.reasonService, reasonAccount: bans.reasonAccount, failures: bans.failures, source: bans.source })
      .from(bans)
      .where(active(now))
      .all() as ActiveBan[];
  }

  isBanned(address: string, now: number): boolean {
    return this.db.select({ id: bans.id }).from(bans).where(and(eq(bans.address, address), active(now))).get() !== undefined;
  }

  /** Mark bans whose time is up as lifted; returns them so the kernel and logs can follow. */
  expireBans(now: number): ActiveBan[] {
    return this.db.transaction((tx) => {
      const due = tx.select().from(bans).where(and(isNull(bans.liftedAt), lte(bans.until, now))).all() as (ActiveBan & { until: number })[];
      for (const b of due) {
        tx.update(bans).set({ liftedAt: b.until, liftReason: 'expired' }).where(eq(bans.id, b.id)).run();
        tx.update(hosts).set({ banned: false, banUntil: null }).where(eq(hosts.address, b.address)).run();
      }
      return due;
    });
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

  close(): void {
    this.db.$client.close();
  }
}
