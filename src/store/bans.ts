import type Database from 'better-sqlite3';
import type { Statement } from 'better-sqlite3';
import type { Family } from '../net/ip';
import { bulkWritable, writeBulk } from './bulk-bans';
import { banPage, banPageJson, type PageOptions } from './pages';
import { BAN_COLUMNS, kernelBanRows, toBans, type ActiveBan, type BanRow, type KernelBanRow, type LineTemplate, type NewBan, type RenderedLines, type RenderedSlices } from './rows';
import { ACTIVE, BAN_FIELDS } from './sql';

/** A statement prepared once, on its first use (shared by the store's tables, one connection). */
export type Prepared = (text: string) => Statement;

// One host's bans are read through bans_address, named (INDEXED BY): since bans_active holds
// the address too (migration 0001), SQLite's planner would otherwise prefer it for them and
// scan every active ban per ban made (see docs/notes/measurements.md, Store).
const BAN_HOST = `INSERT INTO hosts (address, family, first_seen, last_seen, failures, ban_count, banned, ban_until, last_kind, last_service, last_account)
  VALUES (?, ?, ?, ?, 0, 1, 1, ?, ?, ?, ?)
  ON CONFLICT (address) DO UPDATE SET last_seen = max(hosts.last_seen, excluded.last_seen), ban_count = hosts.ban_count + 1,
    banned = 1, ban_until = excluded.ban_until
  RETURNING ban_count`;
const SUPERSEDE = `UPDATE bans INDEXED BY bans_address SET lifted_at = ?, lift_reason = 'superseded' WHERE address = ? AND lifted_at IS NULL`;
const INSERT_BAN = `INSERT INTO bans (address, family, started_at, until, reason_kind, reason_service, reason_account, failures, source, origin) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`;
const UNBAN_HOST = `UPDATE hosts SET banned = 0, ban_until = NULL WHERE address = ?`;
// Active bans as raw arrays, through the bans_active (lifted_at, until, address) index.
const SELECT_ACTIVE = `SELECT ${BAN_COLUMNS} FROM bans WHERE ${ACTIVE}`;
// Every active ban as one text of lines "address until", made by SQLite in one call from the
// index alone; the rows are made in JS as the caller pulls (see kernelBanRows).
const SELECT_ACTIVE_TEXT = `SELECT group_concat(address || ' ' || ifnull(until, ''), char(10)) FROM bans WHERE ${ACTIVE}`;
/**
 * The active bans of one family rendered as lines (LineTemplate), one statement per family, since
 * a GROUP BY would sort them all first. Only addresses of hex digits, '.', ':' and '/' (GLOB), so no
 * line can carry another command; seconds rounded up in integers (a JS number binds as a real).
 */
const renderLines = `group_concat(iif(instr(address, '/') > 0, @rangePrefix, @prefix) || address || @infix ||
    iif(until IS NULL OR until - CAST(@now AS INTEGER) > @max * 1000, 0, (until - CAST(@now AS INTEGER) + 999) / 1000), char(10))`;
const renderSql = (family: string) => `
  SELECT count(*), ${renderLines}
  FROM bans WHERE lifted_at IS NULL AND (until IS NULL OR until > @now) AND ${family} AND address NOT GLOB '*[^0-9a-f.:/]*'`;
/** One slice of ids (@from, @to], by the table's rowid, as bytes (no JS string made). */
const renderSliceSql = (family: string) => `
  SELECT count(*), CAST(${renderLines} AS BLOB)
  FROM bans NOT INDEXED WHERE id > @from AND id <= @to AND lifted_at IS NULL AND (until IS NULL OR until > @now) AND ${family} AND address NOT GLOB '*[^0-9a-f.:/]*'`;
// An address that cannot be a single host is never rendered (notSingleHost in src/net/ip.ts):
// ipset refuses 0.0.0.0 and ::, which would fail the whole load.
const FAMILY_SQL: Record<Family, string> = {
  4: `instr(address, ':') = 0 AND NOT (address GLOB '0.*' OR address GLOB '22[4-9].*' OR address GLOB '2[3-5][0-9].*')`,
  6: `instr(address, ':') > 0 AND address <> '::' AND address NOT GLOB 'ff[0-9a-f][0-9a-f]:*'`,
};
const RENDER: Record<Family, string> = { 4: renderSql(FAMILY_SQL[4]), 6: renderSql(FAMILY_SQL[6]) };
const RENDER_SLICE: Record<Family, string> = { 4: renderSliceSql(FAMILY_SQL[4]), 6: renderSliceSql(FAMILY_SQL[6]) };
const ACTIVE_IDS = `SELECT count(*), min(id), max(id) FROM bans WHERE lifted_at IS NULL AND (until IS NULL OR until > ?)`;
/** Ids a slice spans: about 160 KB of IPv6 lines, what a Unix socket to a child holds at once. */
const SLICE_IDS = 4096;
const NEWLINE = Buffer.from('\n');
const SELECT_DUE = `SELECT ${BAN_COLUMNS} FROM bans WHERE lifted_at IS NULL AND until <= ?`;
const MARK_EXPIRED = `UPDATE bans SET lifted_at = until, lift_reason = 'expired' WHERE lifted_at IS NULL AND until <= ?`;
const LIFT_ONE = `UPDATE bans INDEXED BY bans_address SET lifted_at = ?, lift_reason = ? WHERE bans.address = ? AND ${ACTIVE}`;
const ACTIVE_BY_PREFIX = `SELECT address FROM bans INDEXED BY bans_address WHERE address >= ? AND address < ? AND ${ACTIVE}`;
const IS_BANNED = `SELECT 1 FROM bans INDEXED BY bans_address WHERE bans.address = ? AND ${ACTIVE}`;

/** The bans table: written when a ban is made, lifted or ends; read at start, by expiry and by listings. */
export class BanTable {
  private readonly recordTx: (b: NewBan) => { id: number; banCount: number };
  private readonly recordManyTx: (list: NewBan[]) => void;
  private readonly expireTx: (now: number) => ActiveBan[];
  private readonly liftTx: (address: string, now: number, reason: string) => boolean;
  private readonly liftAllTx: (now: number, reason: string) => ActiveBan[];

  constructor(c: Database.Database, private readonly sql: Prepared, private readonly onCommit: () => void) {
    const write = (b: NewBan) => {
      const banCount = sql(BAN_HOST).pluck().get(b.address, b.family, b.now, b.now, b.until, b.reasonKind, b.reasonService, b.reasonAccount) as number;
      sql(SUPERSEDE).run(b.now, b.address);
      const id = sql(INSERT_BAN).pluck().get(b.address, b.family, b.now, b.until, b.reasonKind, b.reasonService, b.reasonAccount, b.failures, b.source, b.origin ?? null) as number;
      return { id, banCount };
    };
    this.recordTx = c.transaction(write);
    this.recordManyTx = c.transaction((list: NewBan[]) => {
      if (bulkWritable(list)) writeBulk(sql, list);
      else for (const b of list) write(b);
    });
    this.expireTx = c.transaction((now: number) => {
      const due = toBans(sql(SELECT_DUE).raw().iterate(now) as Iterable<unknown[]>);
      if (due.length === 0) return due;
      sql(MARK_EXPIRED).run(now);
      for (const b of due) sql(UNBAN_HOST).run(b.address);
      return due;
    });
    this.liftTx = c.transaction((address: string, now: number, reason: string) => {
      const lifted = sql(LIFT_ONE).run(now, reason, address, now).changes;
      sql(UNBAN_HOST).run(address);
      return lifted > 0;
    });
    this.liftAllTx = c.transaction((now: number, reason: string) => {
      const lifted = sql(`SELECT ${BAN_FIELDS} FROM bans WHERE ${ACTIVE}`).all(now) as ActiveBan[];
      sql(`UPDATE bans SET lifted_at = ?, lift_reason = ? WHERE ${ACTIVE}`).run(now, reason, now);
      sql(`UPDATE hosts SET banned = 0, ban_until = NULL WHERE banned = 1`).run();
      return lifted;
    });
  }

  /** How many bans this host had before (for escalating ban times). */
  banCount(address: string): number {
    return (this.sql(`SELECT ban_count FROM hosts WHERE address = ?`).pluck().get(address) as number | undefined) ?? 0;
  }

  /** Record a ban atomically: host row, the ban row, and any earlier active ban superseded. Returns the host's ban count. */
  recordBan(b: NewBan): { id: number; banCount: number } {
    const r = this.recordTx(b);
    this.onCommit();
    return r;
  }

  /**
   * Several bans in one transaction, in order (the daemon's automatic bans of one loop turn, a
   * page of a fleet catch-up): the same rows as recordBan each, in three statements for the
   * lot when it allows (bulk-bans.ts).
   */
  recordBans(list: NewBan[]): void {
    if (list.length === 0) return;
    this.recordManyTx(list);
    this.onCommit();
  }

  /** Bans in force at `now`: not lifted, and permanent (until null) or ending after now. */
  activeBans(now: number): ActiveBan[] {
    return toBans(this.sql(SELECT_ACTIVE).raw().iterate(now) as Iterable<unknown[]>);
  }

  /** The same bans as activeBans, with only what the kernel needs. */
  activeKernelBans(now: number): KernelBanRow[] {
    return Array.from(this.streamActiveKernelBans(now));
  }

  /** The same, one at a time as the caller pulls, for a start to stream into the kernel (see docs/notes/measurements.md, Store). */
  streamActiveKernelBans(now: number): Generator<KernelBanRow, void, undefined> {
    return kernelBanRows(this.sql(SELECT_ACTIVE_TEXT).pluck().get(now) as string | null);
  }

  /**
   * The active bans rendered as lines, in SQLite (no string made per ban in JS). Addresses with
   * other characters than an address has, and canonical ones that cannot be a single host, are
   * left out (a caller that reads the bans too sees the count differ for the former).
   */
  renderActiveBans(now: number, format: LineTemplate): RenderedLines {
    const lines: RenderedLines = { 4: '', 6: '', count: 0 };
    for (const f of [4, 6] as Family[]) {
      const [count, text] = this.sql(RENDER[f]).raw().get({ now, prefix: format.prefix[f], rangePrefix: format.rangePrefix[f], infix: format.infix, max: format.maxSeconds }) as [number, string | null];
      lines[f] = text ?? '';
      lines.count += count;
    }
    return lines;
  }

  /**
   * The same lines as renderActiveBans, rendered a slice of ids at a time as the caller pulls
   * them, so a loader can load one slice while the next is made. Undefined when the active bans
   * are spread thin over the ids (a long history between them): slices would read every row.
   */
  renderActiveBanSlices(now: number, format: LineTemplate): RenderedSlices | undefined {
    const [active, first, last] = this.sql(ACTIVE_IDS).raw().get(now) as [number, number | null, number | null];
    if (first === null || last === null || last - first + 1 > 2 * active) return undefined;
    const sql = this.sql;
    const out = { count: 0, slices: [] as Iterable<Buffer> };
    out.slices = (function* (): Generator<Buffer> {
      for (let from = first - 1; from < last; from += SLICE_IDS) {
        for (const f of [4, 6] as Family[]) {
          const [count, bytes] = sql(RENDER_SLICE[f]).raw().get({ from, to: Math.min(from + SLICE_IDS, last), now, prefix: format.prefix[f], rangePrefix: format.rangePrefix[f], infix: format.infix, max: format.maxSeconds }) as [number, Buffer | null];
          out.count += count;
          if (bytes) yield Buffer.concat([bytes, NEWLINE]);
        }
      }
    })();
    return out;
  }

  /** Addresses of the bans in force whose text starts with one of these prefixes ('' matches all). */
  activeAddressesStartingWith(now: number, prefixes: string[]): string[] {
    // A range of the bans_address index: texts from the prefix up to the prefix followed by '~',
    // which sorts after every character an address has (hex digits, '.' and ':').
    const select = this.sql(ACTIVE_BY_PREFIX);
    const found = new Set<string>();
    for (const p of new Set(prefixes)) for (const row of select.all(p, `${p}~`, now) as { address: string }[]) found.add(row.address);
    return [...found];
  }

  /** A host's most recent ban row (undefined: never banned). */
  latestBan(address: string): { until: number | null; liftedAt: number | null } | undefined {
    return this.sql('SELECT until, lifted_at AS liftedAt FROM bans INDEXED BY bans_address WHERE address = ? ORDER BY started_at DESC, id DESC LIMIT 1').get(address) as { until: number | null; liftedAt: number | null } | undefined;
  }

  isBanned(address: string, now: number): boolean {
    return this.sql(IS_BANNED).get(address, now) !== undefined;
  }

  /** Mark bans whose time is up as lifted; returns them so the kernel and logs can follow. */
  expireBans(now: number): (ActiveBan & { until: number })[] {
    return this.expireTx(now) as (ActiveBan & { until: number })[];
  }

  /** End a host's active ban early; false when it had none. */
  liftBan(address: string, now: number, reason: 'unban' | 'allowed' | 'fleet'): boolean {
    return this.liftTx(address, now, reason);
  }

  /** End every active ban at once (operator `unban --all`); returns the bans lifted. */
  liftAllBans(now: number, reason: 'unban'): ActiveBan[] {
    return this.liftAllTx(now, reason);
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
    return banPage(this.sql, now, opts);
  }

  /** The same page as a JSON array of listing views, made by SQLite (see banPageJson in pages.ts). */
  listBansPageJson(now: number, opts: PageOptions): { json: string; next: number | null } {
    return banPageJson(this.sql, now, opts);
  }
}
