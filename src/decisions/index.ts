import type { AllowCheck } from '../allow';
import type { SecurityEvent } from '../events/types';
import type { BanSource, KernelBan, ListedBan } from '../firewall/types';
import { bansToAdopt } from './adopt';
import { banLine } from './ban-line';
import type { CountryOf } from '../geoip';
import { restoreActive } from './restore';
import { expire, unban, unbanAll, type LiftParts } from './lift';
import type { Logger } from '../log';
import { familyOf, type Family } from '../net/ip';
import { banDuration, type BantimeOptions } from '../scoring/bantime';
import type { NewBan, Store } from '../store';
import { BannedSet, CountCache } from './banned';
import { banMany, type PeerBan } from './bulk';
import { PendingWrites, StoreHealth, type PendingBan, type StorageState } from './pending';
import { BanNotStoredYet, type BanFacts, type BanReason, type BanResult, type ChangeListener, type DecisionsOptions, type KernelQueue } from './types';

export type { StorageState } from './pending';
export type { PeerBan } from './bulk';
export { BanNotStoredYet, type BanFacts, type BanReason, type BanResult, type ChangeListener, type DecisionsOptions, type KernelQueue } from './types';

/**
 * Turns a decision into a ban that is real and remembered. The kernel command is sent first,
 * before anything touches the database, so a slow, locked, full or broken database can never
 * delay or prevent a drop. The row is written after (an operator's at once, automatic ones
 * together after the loop turn or commitDelayMs); a row that cannot be written stays pending
 * in memory and is retried with backoff until it is stored (PendingWrites). A crash before
 * the write leaves a kernel ban the database lacks: the next start adopts it (adopt) before
 * loading the kernel from the database, so nothing the kernel held is lost.
 * Keeps the set of banned addresses in memory so events from them cost nothing; each ends by
 * its own time even when the database cannot say so.
 */
export class Decisions {
  private readonly banned = new BannedSet();
  private readonly counts = new CountCache();
  readonly storeHealth: StoreHealth;
  /** Bans sent to the kernel whose rows are still to be written (retried until they are). */
  private readonly pending: PendingWrites;
  /** What unban, unbanAll and expire (lift.ts) work on. */
  private readonly lift: LiftParts;

  private readonly store: Store;
  private readonly kernel: KernelQueue;
  private bantime: BantimeOptions;
  private readonly log: Logger;
  private readonly commitDelayMs: number;
  private readonly storeRebansFirst: boolean;
  private readonly listeners: ChangeListener[] = [];
  private readonly storedListeners: (() => void)[] = [];
  /** The country lookup for the ban log line (null: none), set by the daemon once it is loaded. */
  countryOf: CountryOf | null = null;

  constructor(o: DecisionsOptions) {
    this.store = o.store;
    this.kernel = o.kernel;
    this.bantime = o.bantime;
    this.log = o.log;
    this.commitDelayMs = o.commitDelayMs ?? 0;
    this.storeRebansFirst = o.storeRebansFirst ?? false;
    const clock = o.clock ?? Date.now;
    this.storeHealth = new StoreHealth(o.log, clock);
    this.pending = new PendingWrites(o.store, this.storeHealth, (bans) => this.logStored(bans), clock);
    this.lift = {
      store: this.store, kernel: this.kernel, banned: this.banned, pending: this.pending, storeHealth: this.storeHealth, log: this.log,
      flushWrites: () => this.flushWrites(), changed: (what, address, detail) => this.changed(what, address, detail),
    };
  }
  /** A reload: bans decided from now on get these durations; the ones in force keep theirs. */
  setBantime(b: BantimeOptions): void {
    this.bantime = b;
  }

  /** Subscribes to every ban made and lifted (the daemon's counts, metrics). */
  onChange(listener: ChangeListener): void { this.listeners.push(listener); }

  /** Subscribes to ban rows being committed (fleet mode publishes them from the database right after). */
  onStored(listener: () => void): void { this.storedListeners.push(listener); }

  private changed(what: 'ban' | 'unban', address: string, detail: string, ban?: BanFacts): void {
    for (const l of this.listeners) l(what, address, detail, ban);
  }

  /** The database side as status, metrics and health show it. */
  storage(): StorageState {
    const h = this.storeHealth;
    return { pending: this.pending.count, oldestPendingSince: this.pending.oldestSince, failingSince: h.failingSince, lastError: h.lastError, failures: h.failures };
  }

  /**
   * At start: drop what expired while we were away, lift the bans of addresses allowed since
   * they were made, load the rest into the kernel in one batch. onLoaded(count) is called as
   * soon as the kernel holds them (or the load failed: the queue knows).
   * A backend that loads text (ipset) gets the bans as lines the store rendered, and the
   * daemon's own in-memory set is made once the kernel holds them. Otherwise the checks and
   * the set are made as the kernel load reads the bans, so that work overlaps the load.
   */
  async restore(now: number, allow: AllowCheck, onLoaded: (bans: number) => void = () => {}): Promise<{ restored: number; lifted: number }> {
    this.flushWrites();
    // Expired rows are only marked: the load below takes active bans alone either way.
    try { this.store.bans.expireBans(now); } catch (err) { this.storeHealth.failed('expiry', 'expiry at start not stored', err); }
    // Allowed addresses are lifted before the load: only the stored addresses that could be in
    // an allowed network (their text starts right) are looked at, not every ban.
    const allowed = this.store.bans.activeAddressesStartingWith(now, allow.textPrefixes()).filter((a) => allow.allows(a, familyOf(a)));
    for (const address of allowed) this.liftAllowed(address, now);
    await restoreActive({ kernel: this.kernel, store: this.store, log: this.log, banned: this.banned }, now, new Set(allowed), onLoaded);
    await this.reloadPending(now);
    return { restored: this.banned.size, lifted: allowed.length };
  }

  /**
   * At start, before restore: store the bans the kernel holds in Ampere's own sets or chain
   * that the database lacks (see bansToAdopt). Rows that cannot be written stay pending, and
   * restore puts them back into the kernel after its load. Returns how many were adopted.
   */
  async adopt(listed: Iterable<ListedBan> | AsyncIterable<ListedBan>, now: number, allow: AllowCheck): Promise<{ adopted: number; listed: number }> {
    // The stored bans in the compact in-memory set (restore clears and fills it again), made on
    // the first member: a Set of a million address strings beside the listing did not fit the
    // daemon's heap, and a lookup in the address index per member took ~8 µs (BENCHMARKS.md, Findings).
    let filled = false;
    const stored = (address: string) => {
      if (!filled) { for (const b of this.store.bans.streamActiveKernelBans(now)) this.banned.set(b.address, b.until); filled = true; }
      return this.banned.has(address);
    };
    const { rows, listed: count } = await bansToAdopt(listed, stored, allow, now, banDuration(0, this.bantime), (address) => this.store.bans.latestBan(address));
    if (rows.length === 0) return { adopted: 0, listed: count };
    for (const row of rows) this.pending.push({ row, banCount: 1, since: now }, 0);
    this.pending.flush(true);
    this.log.warn({ count: rows.length, inKernel: count, stored: this.pending.count === 0 }, `adopted ${rows.length} bans from the kernel`);
    return { adopted: rows.length, listed: count };
  }

  /** The pending rows' bans, back into the kernel and the in-memory set after a full load. */
  private async reloadPending(now: number): Promise<void> {
    const live = this.pending.list().map((p) => p.row).filter((r) => r.until === null || r.until > now);
    if (live.length === 0) return;
    for (const r of live) this.banned.set(r.address, r.until);
    await this.kernel.add(live.map((r) => ({ address: r.address, family: r.family, until: r.until })), now);
  }

  private liftAllowed(address: string, now: number): void {
    try {
      this.store.bans.liftBan(address, now, 'allowed');
    } catch (err) {
      this.storeHealth.failed('other', 'lift of an allowed ban not stored', err, { address });
    }
    this.log.warn({ address }, 'stored ban lifted: address is allowed now');
  }

  /** The in-memory bans as the kernel needs them. */
  private bannedNow(): KernelBan[] {
    const out: KernelBan[] = [];
    for (const [address, until] of this.banned.entries()) out.push({ address, family: familyOf(address), until });
    return out;
  }

  /**
   * Load the active bans into the kernel again (after a failed kernel command, or drift). From
   * the in-memory set: restore made it from the database, and it also holds the bans whose
   * rows are still pending, which a load from the database alone would drop. When nothing is
   * pending and the database holds exactly the bans in memory, the start's rendered load is used.
   */
  async resync(now: number): Promise<void> {
    this.flushWrites();
    const live = () => this.bannedNow().filter((b) => b.until === null || b.until > now);
    const source: BanSource = {
      [Symbol.iterator]: () => live()[Symbol.iterator](),
      render: (format) => {
        if (this.pending.count > 0) return undefined;
        const lines = this.store.bans.renderActiveBans(now, format);
        return lines.count === this.banned.size ? lines : undefined;
      },
    };
    await this.kernel.setAll(source, now);
  }

  isBanned(address: string): boolean { return this.banned.has(address); }
  get activeCount(): number { return this.banned.size; }
  countByFamily(): { v4: number; v6: number } { return this.banned.byFamily; }

  /** How many of a family's bans end by `at` (the firewall check asks only when counts differ). */
  countEndedBy(family: Family, at: number): number {
    return this.banned.countEndedBy(family, at);
  }

  /** An automatic ban from the scoring. */
  banFromEvent(event: SecurityEvent, failures: number, now: number): BanResult {
    return this.ban(event.address, event.family, { kind: event.kind, service: event.service, account: event.account, failures }, now, 'auto');
  }

  ban(address: string, family: Family, reason: BanReason, now: number, source: 'auto' | 'manual' | 'range' | 'legacy' | 'fail2ban' | 'fleet', forMs?: number | null, origin?: string): BanResult {
    // The kernel command leaves first (written synchronously by the queue), with the ban time
    // the cached count gives (a first ban's when unknown), so nothing on the database side can
    // delay the drop, and a failing disk cannot keep an attacker in. Without kernel ban times
    // (storeRebansFirst) a host banned before is the exception: its row goes first. So do a
    // peer's ban (bulk.ts banMany: a crash must not make it this node's own) and a range (a
    // start adopts no range the database lacks, adopt.ts).
    const fromPeer = source === 'fleet';
    const known = this.counts.get(address) ?? (this.storeRebansFirst || fromPeer ? this.readBanCount(address) : undefined);
    const untilFor = (count: number): number | null => {
      const duration = forMs !== undefined ? forMs : banDuration(count - 1, this.bantime);
      return duration === null || duration === 0 ? null : now + duration;
    };
    let banCount = (known ?? 0) + 1;
    let until = untilFor(banCount);
    const entry = (): PendingBan => ({ row: { address, family, now, until, source, reasonKind: reason.kind, reasonService: reason.service, reasonAccount: reason.account, failures: reason.failures, origin }, banCount, since: now });
    const storedFirst = source === 'range' || fromPeer || (this.storeRebansFirst && banCount > 1);
    // A failure leaves the row pending and retried, as any other.
    if (storedFirst) { this.pending.push(entry(), 0); this.pending.flush(true); }
    this.banned.set(address, until);
    let applied = this.kernel.add([{ address, family, until }], now);
    // A peer's ban has its own length, and its row is stored already (it would count itself).
    if (known === undefined && !fromPeer) {
      // Read after the kernel command: a repeat offender's longer ban replaces the first
      // one (an ipset add refreshes the timeout); unreadable, the first ban's time stays.
      banCount = (this.readBanCount(address) ?? 0) + 1;
      const longer = untilFor(banCount);
      if (longer !== until) {
        until = longer;
        this.banned.set(address, until);
        applied = this.kernel.add([{ address, family, until }], now);
      }
    }
    this.counts.set(address, banCount);
    // Automatic bans (and a peer's, which come in bursts too) are committed together, after
    // this loop turn or commitDelayMs: under a burst each commit would otherwise hold up
    // reading the next attacker's event. The "ban" line is logged once the ban is stored.
    const batched = source === 'auto' || source === 'fleet';
    if (!storedFirst) this.pending.push(entry(), batched ? this.commitDelayMs : 0);
    this.changed('ban', address, source, { reason, until, banCount, now });
    // An operator's ban (or an import) is in the database when the call returns, or the
    // caller hears why not (the kernel holds it, and the row is retried).
    const result = { address, family, until, banCount, applied };
    if (!batched && !this.pending.flush(true)) {
      throw new BanNotStoredYet(`ban of ${address} is in the kernel, but not stored yet (retried): ${this.storeHealth.lastError ?? 'database write failed'}`, result);
    }
    return result;
  }

  /** Peers' bans in one kernel batch (a fleet catch-up page); a lone one, or where rebans are stored first, as any ban. */
  banMany(bans: PeerBan[], now: number): Promise<void> {
    if (this.storeRebansFirst || bans.length === 1) return Promise.all(bans.map((b) => this.ban(b.address, b.family, b.reason, now, 'fleet', b.until - now, b.origin).applied)).then(() => {});
    return banMany({ ...this.lift, counts: this.counts, commitDelayMs: this.commitDelayMs, changed: (w, a, d, f) => this.changed(w, a, d, f) }, bans, now);
  }

  /** Earlier bans of this address in the database; undefined (and logged) when unreadable. */
  private readBanCount(address: string): number | undefined {
    try {
      return this.store.bans.banCount(address);
    } catch (err) {
      this.storeHealth.failed('other', 'ban count not read: first ban duration used', err, { address });
      return undefined;
    }
  }

  /**
   * Commit the bans not yet written, now. Runs by itself after the loop turn that made them
   * (or commitDelayMs, or the retry backoff); every other database change of Decisions runs
   * it first, so the order is kept. false when rows are still pending (the write failed).
   */
  flushWrites(force = false): boolean {
    return this.pending.flush(force);
  }

  /** Stop retrying (shutdown) after a last attempt; returns how many rows stay unwritten. */
  close(): number {
    this.pending.flush(true);
    this.pending.stop();
    return this.pending.count;
  }

  private logStored(bans: PendingBan[]): void {
    for (const b of bans) if (!b.quiet) this.log.info(banLine(b, this.countryOf), 'ban');
    for (const l of this.storedListeners) l();
  }

  /** Lift one ban early (operator, or the address became allowed). */
  async unban(address: string, now: number, why: 'unban' | 'allowed' | 'fleet'): Promise<boolean> {
    return unban(this.lift, address, now, why);
  }

  /** Lift every ban (operator `unban --all`): database first, then one kernel batch. Returns the addresses. */
  async unbanAll(now: number): Promise<string[]> {
    return unbanAll(this.lift, now);
  }

  /** When a host's current ban ends (null = permanent); undefined when it is not banned. */
  bannedUntil(address: string): number | null | undefined {
    return this.banned.get(address);
  }

  /**
   * Bans whose time is up: the database marks them, the kernel drops them (rules have no
   * timeout). A ban also ends by its in-memory time when the database cannot be updated or
   * its row is still pending; the database catches up on a later tick.
   */
  async expire(now: number): Promise<number> {
    return expire(this.lift, now);
  }
}
