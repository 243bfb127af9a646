import type Database from 'better-sqlite3';
import type { Statement } from 'better-sqlite3';
import type { SecurityEvent } from '../events/types';
import type { BanLineFormat, BanLines } from '../firewall/types';
import { familyOf, type Family } from '../net/ip';
import { startCheckpointer, type Checkpointer, type CheckpointerOptions } from './checkpointer';
import { drizzleOf, openSqlite, type Db } from './open';
import { banPage, banPageJson, type PageOptions } from './pages';
import { ACTIVE, BAN_FIELDS } from './sql';
// Types only (erased): src/store/schema.ts stays the schema's source for drizzle-kit and the
// migrations, but the Store never loads Drizzle itself (see Store.db).
import type { events, hosts } from './schema';

export { openDatabase, openSqlite, pendingMigrations, MIGRATIONS, type Db } from './open';
export { Checkpointer, type CheckpointerOptions, type CheckpointerStats } from './checkpointer';
export { Pruner, type PruneLimits, type PruneReport, type PrunerOptions } from './prune';
export type { PageOptions } from './pages';

/** A hosts row, as host() returns it (banned a boolean, as schema.ts's mode: 'boolean'). */
export type HostRow = typeof hosts.$inferSelect;
/** An events row, as recentEvents() returns it. */
export type EventRow = typeof events.$inferSelect;

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
  /** The fleet node that made it; null: this node. */
  origin: string | null;
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
  /** kernel: adopted at start from a kernel ban the database lacked; fleet: a peer's (src/fleet). */
  source: 'auto' | 'manual' | 'legacy' | 'fail2ban' | 'kernel' | 'fleet';
  /** The fleet node that made it (fleet bans only). */
  origin?: string | null;
}

export interface StoreOptions {
  /**
   * The daemon only: checkpoint the WAL on a worker thread instead of inside commits (bans).
   * Short-lived stores (CLI commands) leave SQLite's automatic checkpoint on.
   */
  checkpointer?: boolean | CheckpointerOptions;
}

/** What the kernel needs of a ban. */
export interface KernelBanRow { address: string; family: Family; until: number | null }

/** One line of selectActiveKernelText ("address until", until empty when permanent) to its fields. */
function kernelBanRow(row: string): KernelBanRow {
  // The last space: until has none, and an address with one (a hand-edited file) must stay
  // whole, so the checks after see it and refuse it.
  const sp = row.lastIndexOf(' ');
  const address = row.slice(0, sp);
  return { address, family: familyOf(address), until: sp === row.length - 1 ? null : Number(row.slice(sp + 1)) };
}

/** The lines of selectActiveKernelText as rows, made as the caller pulls them. */
function* kernelBanRows(text: string | null): Generator<KernelBanRow, void, undefined> {
  if (!text) return;
  for (let i = 0; i < text.length;) {
    let j = text.indexOf('\n', i);
    if (j < 0) j = text.length;
    yield kernelBanRow(text.slice(i, j));
    i = j + 1;
  }
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

// One host's bans are read through bans_address, named (INDEXED BY): since bans_active holds
// the address too (migration 0001), SQLite's planner preferred it for them, which scans every
// active ban per ban made (the ban storm fell from ~5,600 to ~1,700 bans/s at 28k bans).


/**
 * The daemon's queries. Synchronous (better-sqlite3); Decisions decides when a ban is written (after its kernel command).
 *
 * Every query is plain SQL on better-sqlite3 (the SQL Drizzle generated for it, same rows and
 * field names), none goes through Drizzle's query builder: loading drizzle-orm costs each start
 * ~90 ms of CPU and ~8.6 MB of RSS for the process's life. schema.ts stays the schema's source
 * (drizzle-kit makes the migrations from it) and test/store.test.ts compares these queries with
 * the query builder's. Drizzle is loaded only to run a pending migration, or by `db`.
 */
export class Store {
  /** The connection. */
  readonly sqlite: Database.Database;
  private drizzleDb: Db | null = null;
  // The two writes on the daemon's hot paths (every failure, every ban) are plain prepared
  // statements, built once instead of per call.
  private readonly upsertHost: Statement;
  private readonly insertEvent: Statement;
  private readonly trimEvents: Statement;
  private readonly banHost: Statement;
  private readonly supersedeBans: Statement;
  private readonly insertBan: Statement;
  private readonly selectBanCount: Statement;
  private readonly selectActive: Statement;
  private readonly selectActiveKernelText: Statement;
  private readonly renderActive: Record<Family, Statement>;
  private readonly selectDue: Statement;
  private readonly markExpired: Statement;
  private readonly unbanHost: Statement;
  private readonly expireTx: (now: number) => ActiveBan[];
  private cp: Checkpointer | null = null;
  private readonly path: string;
  private readonly recordEventsTx: (batch: { event: SecurityEvent; at: number }[]) => void;
  private readonly recordBanTx: (b: NewBan) => { id: number; banCount: number };
  private readonly recordBansTx: (list: NewBan[]) => void;
  private readonly liftBanTx: (address: string, now: number, reason: string) => boolean;
  private readonly liftAllBansTx: (now: number, reason: string) => ActiveBan[];
  /** The other statements, each prepared on its first use (operator commands, hourly prune). */
  private readonly prepared = new Map<string, Statement>();

  constructor(path: string, private readonly historyPerHost = 20, opts: StoreOptions = {}) {
    this.sqlite = openSqlite(path);
    const c = this.sqlite;
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
    this.supersedeBans = c.prepare(`UPDATE bans INDEXED BY bans_address SET lifted_at = ?, lift_reason = 'superseded' WHERE address = ? AND lifted_at IS NULL`);
    this.insertBan = c.prepare(
      `INSERT INTO bans (address, family, started_at, until, reason_kind, reason_service, reason_account, failures, source, origin) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
    ).pluck();
    // Asked on every ban (escalation): built by Drizzle per call it was half of the ban's path.
    this.selectBanCount = c.prepare(`SELECT ban_count FROM hosts WHERE address = ?`).pluck();
    // Active bans and every expiry tick: plain statements, rows as arrays. Both use the
    // bans_active (lifted_at, until, address) index; same order as before.
    this.selectActive = c.prepare(`SELECT ${BAN_COLUMNS} FROM bans WHERE ${ACTIVE}`).raw();
    // What the kernel needs of every active ban, as one text of lines "address until": SQLite
    // builds it in one call, far faster than a row (let alone a row object) per ban; the
    // objects are then made here, in JS (streamActiveKernelBans). From the index alone: it holds
    // address too (migration 0001), so no table lookup per row.
    this.selectActiveKernelText = c.prepare(`SELECT group_concat(address || ' ' || ifnull(until, ''), char(10)) FROM bans WHERE ${ACTIVE}`).pluck();
    // The same bans rendered as a backend's load lines (BanLineFormat), one statement per family
    // (a GROUP BY would sort them all first: ~100 ms against ~45 for both at 100k bans). Only
    // addresses of hex digits, '.' and ':' (GLOB): nothing else can reach such a line. Seconds
    // rounded up in integers: a JS number is bound as a real, hence the CAST.
    const render = (family: string) => c.prepare(`
      SELECT count(*), group_concat(@prefix || address || @infix ||
        iif(until IS NULL OR until - CAST(@now AS INTEGER) > @max * 1000, 0, (until - CAST(@now AS INTEGER) + 999) / 1000), char(10))
      FROM bans WHERE lifted_at IS NULL AND (until IS NULL OR until > @now) AND ${family} AND address NOT GLOB '*[^0-9a-f.:]*'`).raw();
    // An address that cannot be a single host is never rendered (notSingleHost in src/net/ip.ts,
    // for canonical text): ipset refuses 0.0.0.0 and ::, which would fail the whole load.
    this.renderActive = {
      4: render(`instr(address, ':') = 0 AND NOT (address GLOB '0.*' OR address GLOB '22[4-9].*' OR address GLOB '2[3-5][0-9].*')`),
      6: render(`instr(address, ':') > 0 AND address <> '::' AND address NOT GLOB 'ff[0-9a-f][0-9a-f]:*'`),
    };
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
      const id = this.insertBan.get(b.address, b.family, b.now, b.until, b.reasonKind, b.reasonService, b.reasonAccount, b.failures, b.source, b.origin ?? null) as number;
      return { id, banCount };
    };
    this.recordBanTx = c.transaction(writeBan);
    this.recordBansTx = c.transaction((list: NewBan[]) => { for (const b of list) writeBan(b); });
    this.liftBanTx = c.transaction((address: string, now: number, reason: string) => {
      const lifted = this.sql(`UPDATE bans INDEXED BY bans_address SET lifted_at = ?, lift_reason = ? WHERE bans.address = ? AND ${ACTIVE}`).run(now, reason, address, now).changes;
      this.unbanHost.run(address);
      return lifted > 0;
    });
    this.liftAllBansTx = c.transaction((now: number, reason: string) => {
      const lifted = this.sql(`SELECT ${BAN_FIELDS} FROM bans WHERE ${ACTIVE}`).all(now) as ActiveBan[];
      this.sql(`UPDATE bans SET lifted_at = ?, lift_reason = ? WHERE ${ACTIVE}`).run(now, reason, now);
      this.sql(`UPDATE hosts SET banned = 0, ban_until = NULL WHERE banned = 1`).run();
      return lifted;
    });
    this.path = path;
    if (opts.checkpointer) this.startCheckpointer(opts.checkpointer === true ? {} : opts.checkpointer);
  }

  /** The daemon's WAL checkpointer (option `checkpointer`, or startCheckpointer), null elsewhere. */
  get checkpointer(): Checkpointer | null {
    return this.cp;
  }

  /**
   * Start the WAL checkpointer now (the daemon: after the start's reads of every ban, which its
   * worker's start-up slowed by half: a second isolate starting on a two-core machine).
   */
  startCheckpointer(opts: CheckpointerOptions = {}): void {
    if (!this.cp) this.cp = startCheckpointer(this.path, this.sqlite, opts);
  }

  /**
   * A Drizzle query builder (with the schema) over the same connection, for tools and tests:
   * made, and drizzle-orm loaded, on first use. The daemon never uses it.
   */
  get db(): Db {
    return (this.drizzleDb ??= drizzleOf(this.sqlite));
  }

  /** A statement prepared once, on its first use. */
  private sql(text: string): Statement {
    let s = this.prepared.get(text);
    if (s === undefined) this.prepared.set(text, (s = this.sqlite.prepare(text)));
    return s;
  }

  /** Offending events, written in one transaction per batch (the daemon batches them). */
  recordEvents(batch: { event: SecurityEvent; at: number }[]): void {
    if (batch.length === 0) return;
    this.recordEventsTx(batch);
    this.checkpointer?.noteCommit();
  }

  /** How long a statement waits for another connection's lock before SQLITE_BUSY. */
  setBusyTimeout(ms: number): void {
    this.sqlite.pragma(`busy_timeout = ${Math.max(0, Math.floor(ms))}`);
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
  activeKernelBans(now: number): KernelBanRow[] {
    return Array.from(this.streamActiveKernelBans(now));
  }

  /**
   * The same, one at a time, for a start to stream into the kernel. SQLite joins them into one
   * text in a single call (a line "address until" each), which is split here as the caller
   * pulls: 100k bans take ~40 ms that way against ~120 ms a row at a time, and the first lines
   * reach ipset at once.
   */
  streamActiveKernelBans(now: number): Generator<KernelBanRow, void, undefined> {
    return kernelBanRows(this.selectActiveKernelText.get(now) as string | null);
  }

  /**
   * The active bans rendered as a backend's load lines, in SQLite: ~45 ms for 100k, where the
   * daemon making those strings itself took hundreds. Addresses with other characters than
   * an address has, and canonical ones that cannot be a single host, are left out (a caller
   * that reads the bans too sees the count differ for the former).
   */
  renderActiveBans(now: number, format: BanLineFormat): BanLines {
    const lines: BanLines = { 4: '', 6: '', count: 0 };
    for (const f of [4, 6] as Family[]) {
      const [count, text] = this.renderActive[f].get({ now, prefix: format.prefix[f], infix: format.infix, max: format.maxSeconds }) as [number, string | null];
      lines[f] = text ?? '';
      lines.count += count;
    }
    return lines;
  }

  /** Addresses of the bans in force whose text starts with one of these prefixes ('' matches all). */
  activeAddressesStartingWith(now: number, prefixes: string[]): string[] {
    // A range of the bans_address index: texts from the prefix up to the prefix followed by '~',
    // which sorts after every character an address has (hex digits, '.' and ':').
    const select = this.sql(`SELECT address FROM bans INDEXED BY bans_address WHERE address >= ? AND address < ? AND ${ACTIVE}`);
    const found = new Set<string>();
    for (const p of new Set(prefixes)) for (const row of select.all(p, `${p}~`, now) as { address: string }[]) found.add(row.address);
    return [...found];
  }

  /** A host's most recent ban row (undefined: never banned). */
  latestBan(address: string): { until: number | null; liftedAt: number | null } | undefined {
    return this.sql('SELECT until, lifted_at AS liftedAt FROM bans INDEXED BY bans_address WHERE address = ? ORDER BY started_at DESC, id DESC LIMIT 1').get(address) as { until: number | null; liftedAt: number | null } | undefined;
  }

  isBanned(address: string, now: number): boolean {
    return this.sql(`SELECT 1 FROM bans INDEXED BY bans_address WHERE bans.address = ? AND ${ACTIVE}`).get(address, now) !== undefined;
  }

  /** Mark bans whose time is up as lifted; returns them so the kernel and logs can follow. */
  expireBans(now: number): (ActiveBan & { until: number })[] {
    return this.expireTx(now) as (ActiveBan & { until: number })[];
  }

  /** End a host's active ban early; false when it had none. */
  liftBan(address: string, now: number, reason: 'unban' | 'allowed' | 'fleet'): boolean {
    return this.liftBanTx(address, now, reason);
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

  allowList(): { cidr: string; addedAt: number; note: string }[] {
    return this.sql(`SELECT cidr, added_at AS addedAt, note FROM allowed`).all() as { cidr: string; addedAt: number; note: string }[];
  }

  addAllowed(cidr: string, now: number, note = ''): void {
    this.sql(`INSERT INTO allowed (cidr, added_at, note) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`).run(cidr, now, note);
  }

  removeAllowed(cidr: string): boolean {
    return this.sql(`DELETE FROM allowed WHERE cidr = ?`).run(cidr).changes > 0;
  }

  /** Bans for listings, newest first: active ones, or (all) every ban ever made; optionally one host's. */
  listBans(now: number, opts: { all?: boolean; address?: string } = {}): BanRow[] {
    const where: string[] = [];
    const params: (string | number)[] = [];
    if (!opts.all) { where.push(ACTIVE); params.push(now); }
    if (opts.address !== undefined) { where.push('bans.address = ?'); params.push(opts.address); }
    return this.sql(
      `SELECT ${BAN_FIELDS}, coalesce(hosts.ban_count, 0) AS banCount FROM bans ${opts.address !== undefined ? 'INDEXED BY bans_address ' : ''}LEFT JOIN hosts ON hosts.address = bans.address
       ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY bans.started_at DESC, bans.id DESC`,
    ).all(...params) as BanRow[];
  }

  /** One page of a listing (see banPage in pages.ts). */
  listBansPage(now: number, opts: PageOptions): { rows: BanRow[]; next: number | null } {
    return banPage((t) => this.sql(t), now, opts);
  }

  /** The same page as a JSON array of listing views, made by SQLite (see banPageJson in pages.ts). */
  listBansPageJson(now: number, opts: PageOptions): { json: string; next: number | null } {
    return banPageJson((t) => this.sql(t), now, opts);
  }

  /** End every active ban at once (operator `unban --all`); returns the bans lifted. */
  liftAllBans(now: number, reason: 'unban'): ActiveBan[] {
    return this.liftAllBansTx(now, reason);
  }

  /** Stops the checkpointer (with a last checkpoint) first, then closes the connection. */
  close(): void {
    try { this.checkpointer?.stop(); } finally { this.sqlite.close(); }
  }
}
