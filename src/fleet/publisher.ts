import { canonicalIp } from '../net/ip';
import { EarlyRecord, type EarlyBan } from './early';
import type { LocalFleetState, OutboxRow } from './local';
import type { TokenBucket } from './rate';
import type { Query } from './receiver';

/** Rows sent in one insert at most. */
const BATCH = 500;

const INSERT = `INSERT INTO fleet_decisions (origin, seq, action, address, until, reason_kind, reason_service, reason_account, failures, source)
  SELECT $1, s, a, ad::inet, CASE WHEN u IS NULL THEN NULL ELSE to_timestamp(u / 1000.0) END, rk, rs, ra, f, src
  FROM unnest($2::bigint[], $3::text[], $4::text[], $5::float8[], $6::text[], $7::text[], $8::text[], $9::int[], $10::text[]) AS t(s, a, ad, u, rk, rs, ra, f, src)`;

/** Texts bounded as the table's check constraint wants them: one row too long would stop the outbox. */
const clip = (s: string, max: number) => s.slice(0, max);

/** What a row of fleet_decisions is made of; seq 0 marks a ban published early (it has no outbox row yet). */
type Published = Omit<OutboxRow, 'at'>;

/**
 * Drains the outbox into the fleet table in order, at most fleet_publish_rate decisions a
 * second (the rest waits in the outbox, nothing is dropped). The cursor moves only after the
 * insert committed; a crash in between publishes a batch twice, which peers apply harmlessly.
 *
 * A local ban can also go out early, from memory, before its row is committed (see sendEarly);
 * its outbox row is then skipped when drained. The outbox stays the truth: a ban whose early
 * insert failed, or was not tried, is published from it as any other decision.
 */
export class Publisher {
  private running: Promise<number> | null = null;
  /** The drain's insert of outbox rows is in flight: no early insert may overtake it. */
  private inserting = false;
  /** The early inserts in flight: a drain waits for them all before it reads the outbox. */
  private readonly flights = new Set<Promise<void>>();
  private readonly earlySent = new EarlyRecord();
  published = 0;
  /** Of published: the bans that went out early. */
  publishedEarly = 0;
  /** Early inserts that failed (their bans went out from the outbox). */
  earlyFailed = 0;
  private earlyFailLogged = false;
  lastOut: { at: number; address: string; action: string } | null = null;

  constructor(private readonly query: Query, private readonly local: LocalFleetState, private readonly origin: string, private readonly bucket: TokenBucket,
    private readonly log?: { warn(o: object, m: string): void; debug(o: object, m: string): void }) {}

  /** Publish what the outbox holds (one drain at a time); returns rows sent (or skipped as sent early), or -1 when the rate limit stopped it. */
  drain(): Promise<number> {
    return (this.running ??= this.run().finally(() => { this.running = null; }));
  }

  /** Whether a ban of this address went out early and its outbox row has not been drained yet. */
  sentEarly(address: string): boolean {
    return this.earlySent.hasAddress(address);
  }

  /** The early bans of an address whose row will never be stored (lifted before it was). */
  forgetEarly(address: string): void {
    this.earlySent.forget(address);
  }

  /**
   * Publish these local bans now, in one insert, before their rows are committed; returns the
   * ones left to the outbox (all of them unless the rules below hold). Never throws, and
   * nobody awaits the insert.
   * Order per address: an early ban must never overtake an older unban of the same address
   * that is still unpublished, or peers would lift the newer ban. So it goes early only while
   * the outbox holds no row but those of bans already sent early (or being sent), and no drain
   * insert is in flight: an unban is committed to the outbox at once (never batched), so any
   * unban older than these bans is either in fleet_decisions already or waits in the outbox
   * and stops this. A drain waits for the early inserts before it reads the outbox, so nothing
   * newer overtakes them. (A failed early insert leaves its bans to the outbox, after this
   * batch: a ban overtaken by a ban, which peers apply alike in either order.)
   */
  sendEarly(bans: EarlyBan[], connected: boolean): EarlyBan[] {
    if (bans.length === 0 || !connected || this.inserting) return bans;
    try { if (!this.nothingUnpublished()) return bans; } catch { return bans; }
    // The same rate limit as the outbox: what finds the bucket empty waits there.
    const now = Date.now();
    const n = Math.min(bans.length, this.bucket.available(now));
    if (n < 1) return bans;
    const batch = bans.slice(0, n);
    for (let i = 0; i < n; i++) this.bucket.take(now);
    // Remembered at once (a later early batch counts them as published), forgotten if the insert fails.
    this.earlySent.add(batch);
    const flight = this.insertEarly(batch).finally(() => this.flights.delete(flight));
    this.flights.add(flight);
    return bans.slice(n);
  }

  private async insertEarly(batch: EarlyBan[]): Promise<void> {
    const n = batch.length;
    try {
      await this.query(INSERT, this.params(batch.map((b) => ({ ...b, id: 0, action: 'ban' }))));
    } catch (err) {
      this.earlySent.remove(batch);
      this.earlyFailed += n;
      const fields = { err: (err as Error).message, bans: n };
      if (!this.earlyFailLogged) this.log?.warn(fields, 'fleet early publish failed: the outbox publishes these bans');
      else this.log?.debug(fields, 'fleet early publish failed');
      this.earlyFailLogged = true;
      return;
    }
    this.published += n;
    this.publishedEarly += n;
    this.lastOut = { at: Date.now(), address: batch[n - 1].address, action: 'ban' };
  }

  /** No outbox row waits but the committed rows of bans that went out early (drained as skipped). */
  private nothingUnpublished(): boolean {
    const backlog = this.local.backlog();
    return backlog === 0 || (backlog <= BATCH && this.earlySent.covers(this.local.pending(backlog)));
  }

  private async run(): Promise<number> {
    let sent = 0;
    for (;;) {
      // Every early insert has ended (and a failed one is forgotten) before rows are skipped as sent early.
      while (this.flights.size > 0) await Promise.all(this.flights);
      const room = this.bucket.available(Date.now());
      if (room < 1) return this.local.backlog() > 0 ? -1 : sent;
      const rows = this.local.pending(Math.min(BATCH, room));
      if (rows.length === 0) return sent;
      const valid = rows.filter((r) => canonicalIp(r.address)?.address === r.address && (r.action === 'ban' || r.action === 'unban'));
      const skipped: OutboxRow[] = [];
      const good = valid.filter((r) => !(this.earlySent.take(r) && skipped.push(r)));
      if (good.length > 0) await this.insert(good, skipped);
      this.local.published(rows[rows.length - 1].id);
      for (let i = 0; i < good.length; i++) this.bucket.take(Date.now());
      sent += valid.length;
      this.published += good.length;
      const last = good[good.length - 1];
      if (last) this.lastOut = { at: Date.now(), address: last.address, action: last.action };
    }
  }

  /** The outbox rows' insert; when it fails the batch is read again later, and its early bans must be skipped again then. */
  private async insert(rows: OutboxRow[], skipped: OutboxRow[]): Promise<void> {
    this.inserting = true;
    try {
      await this.query(INSERT, this.params(rows));
    } catch (err) {
      this.earlySent.add(skipped);
      throw err;
    } finally {
      this.inserting = false;
    }
  }

  private params(rows: Published[]): unknown[] {
    return [
      this.origin, rows.map((r) => r.id), rows.map((r) => r.action), rows.map((r) => r.address), rows.map((r) => r.until),
      rows.map((r) => clip(r.reasonKind, 200)), rows.map((r) => clip(r.reasonService, 64)), rows.map((r) => clip(r.reasonAccount, 200)),
      rows.map((r) => r.failures), rows.map((r) => clip(r.source, 16)),
    ];
  }
}
