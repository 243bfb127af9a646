import type { AllowCheck } from '../allow';
import type { SecurityEvent } from '../events/types';
import type { BanLineFormat, BanLines, KernelBan, ListedBan } from '../firewall/types';
import { bansToAdopt } from './adopt';
import { restoreLines, restoreStream } from './restore';
import type { Logger } from '../log';
import { formatDuration } from '../config/duration';
import { canonicalIp, familyOf, isBannable, type Family } from '../net/ip';
import { banDuration, type BantimeOptions } from '../scoring/bantime';
import type { NewBan, Store } from '../store';
import { BannedSet, CountCache } from './banned';
import { PendingWrites, StoreHealth, type PendingBan, type StorageState } from './pending';

export type { StorageState } from './pending';

/** What Decisions needs of the firewall: the serialising queue in src/firewall. */
export interface KernelQueue {
  add(bans: KernelBan[], now: number): Promise<void>;
  remove(bans: Pick<KernelBan, 'address' | 'family'>[]): Promise<void>;
  setAll(bans: Iterable<KernelBan>, now: number): Promise<void>;
  /** Present when the backend loads rendered lines (then setAllLines is there too). */
  readonly lineFormat?: BanLineFormat;
  setAllLines?(lines: BanLines): Promise<void>;
}


/** detail: the ban's source (auto, manual, legacy, fail2ban) or the unban's reason (unban, allowed, expired). */
export type ChangeListener = (what: 'ban' | 'unban', address: string, detail: string) => void;

export interface DecisionsOptions {
  store: Store;
  kernel: KernelQueue;
  bantime: BantimeOptions;
  log: Logger;
  /**
   * How long automatic bans wait to be committed together, from the first of them: 0 (the
   * default) commits at the end of the loop turn; the daemon waits for the burst to pass.
   */
  commitDelayMs?: number;
  clock?: () => number;
}

export interface BanReason {
  kind: string;
  service: string;
  account: string;
  failures: number;
}

export interface BanResult {
  address: string;
  family: Family;
  until: number | null;
  banCount: number;
  /** Resolves when the kernel holds the ban (or the command failed and was logged). */
  applied: Promise<void>;
}

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
/** An operator's ban (or an import's) that is in the kernel but whose row is still being retried. */
export class BanNotStoredYet extends Error {
  constructor(message: string, readonly result: BanResult) { super(message); }
}

export class Decisions {
  private readonly banned = new BannedSet();
  private readonly counts = new CountCache();
  readonly storeHealth: StoreHealth;
  /** Bans sent to the kernel whose rows are still to be written (retried until they are). */
  private readonly pending: PendingWrites;

  private readonly store: Store;
  private readonly kernel: KernelQueue;
  private readonly bantime: BantimeOptions;
  private readonly log: Logger;
  private readonly commitDelayMs: number;
  private readonly listeners: ChangeListener[] = [];

  constructor(o: DecisionsOptions) {
    this.store = o.store;
    this.kernel = o.kernel;
    this.bantime = o.bantime;
    this.log = o.log;
    this.commitDelayMs = o.commitDelayMs ?? 0;
    const clock = o.clock ?? Date.now;
    this.storeHealth = new StoreHealth(o.log, clock);
    this.pending = new PendingWrites(o.store, this.storeHealth, (bans) => this.logStored(bans), clock);
  }

  /** Subscribes to every ban made and lifted (the daemon's counts, metrics). */
  onChange(listener: ChangeListener): void { this.listeners.push(listener); }

  private changed(what: 'ban' | 'unban', address: string, detail: string): void {
    for (const l of this.listeners) l(what, address, detail);
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
    // Expired rows are only marked: the loads below take active bans alone either way.
    try { this.store.expireBans(now); } catch (err) { this.storeHealth.failed('expiry', 'expiry at start not stored', err); }
    const format = this.kernel.lineFormat;
    if (format) {
      // A text load checks nothing itself, so allowed addresses are lifted before it: only the
      // stored addresses that could be in an allowed network (their text starts right) are
      // looked at, not every ban.
      const allowed = this.store.activeAddressesStartingWith(now, allow.textPrefixes()).filter((a) => allow.allows(a, familyOf(a)));
      for (const address of allowed) this.liftAllowed(address, now);
      await restoreLines({ kernel: this.kernel, store: this.store, log: this.log, banned: this.banned }, this.store.renderActiveBans(now, format), now, onLoaded);
      await this.reloadPending(now);
      return { restored: this.banned.size, lifted: allowed.length };
    }
    const allowed = await restoreStream(this.kernel, this.log, this.banned, this.store.streamActiveKernelBans(now), now, allow, onLoaded);
    for (const address of allowed) this.liftAllowed(address, now);
    await this.reloadPending(now);
    return { restored: this.banned.size, lifted: allowed.length };
  }

  /**
   * At start, before restore: store the bans the kernel holds in Ampere's own sets or chain
   * that the database lacks (see bansToAdopt). Rows that cannot be written stay pending, and
   * restore puts them back into the kernel after its load. Returns how many were adopted.
   */
  adopt(listed: ListedBan[], now: number, allow: AllowCheck): number {
    if (listed.length === 0) return 0;
    const stored = new Set(this.store.activeKernelBans(now).map((b) => b.address));
    const rows = bansToAdopt(listed, stored, allow, now, banDuration(0, this.bantime), (address) => this.store.latestBan(address));
    if (rows.length === 0) return 0;
    for (const row of rows) this.pending.push({ row, banCount: 1, since: now }, 0);
    this.pending.flush(true);
    this.log.warn({ count: rows.length, inKernel: listed.length, stored: this.pending.count === 0 }, `adopted ${rows.length} bans from the kernel`);
    return rows.length;
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
      this.store.liftBan(address, now, 'allowed');
    } catch (err) {
      this.storeHealth.failed('other', 'lift of an allowed ban not stored', err, { address });
    }
    this.log.warn({ address }, 'stored ban lifted: address is allowed now');
  }

  /** The in-memory bans as the kernel needs them. */
  private bannedNow(): KernelBan[] {
    const out: KernelBan[] = [];
    for (const address of this.banned.keys()) out.push({ address, family: familyOf(address), until: this.banned.get(address)! });
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
    const format = this.kernel.lineFormat;
    if (format && this.pending.count === 0) {
      const lines = this.store.renderActiveBans(now, format);
      if (lines.count === this.banned.size) return this.kernel.setAllLines!(lines);
    }
    await this.kernel.setAll(this.bannedNow().filter((b) => b.until === null || b.until > now), now);
  }

  isBanned(address: string): boolean {
    return this.banned.has(address);
  }

  get activeCount(): number {
    return this.banned.size;
  }

  countByFamily(): { v4: number; v6: number } {
    return this.banned.byFamily;
  }

  /** How many of a family's bans end by `at` (the firewall check asks only when counts differ). */
  countEndedBy(family: Family, at: number): number {
    let n = 0;
    for (const address of this.banned.keys()) {
      const until = this.banned.get(address);
      if (until != null && until <= at && familyOf(address) === family) n++;
    }
    return n;
  }

  /** An automatic ban from the scoring. */
  banFromEvent(event: SecurityEvent, failures: number, now: number): BanResult {
    return this.ban(event.address, event.family, { kind: event.kind, service: event.service, account: event.account, failures }, now, 'auto');
  }

  ban(address: string, family: Family, reason: BanReason, now: number, source: 'auto' | 'manual' | 'legacy' | 'fail2ban', forMs?: number | null): BanResult {
    // The kernel command leaves first (written synchronously by the queue), with the ban time
    // the cached count gives (a first ban's when unknown), so nothing on the database side can
    // delay the drop, and a failing disk cannot keep an attacker in.
    const cached = this.counts.get(address);
    const untilFor = (count: number): number | null => {
      const duration = forMs !== undefined ? forMs : banDuration(count - 1, this.bantime);
      return duration === null || duration === 0 ? null : now + duration;
    };
    let banCount = (cached ?? 0) + 1;
    let until = untilFor(banCount);
    this.banned.set(address, until);
    let applied = this.kernel.add([{ address, family, until }], now);
    if (cached === undefined) {
      // Read after the kernel command: a repeat offender's longer ban replaces the first
      // one (an ipset add refreshes the timeout); unreadable, the first ban's time stays.
      try {
        banCount = this.store.banCount(address) + 1;
      } catch (err) {
        this.storeHealth.failed('other', 'ban count not read: first ban duration used', err, { address });
      }
      const longer = untilFor(banCount);
      if (longer !== until) {
        until = longer;
        this.banned.set(address, until);
        applied = this.kernel.add([{ address, family, until }], now);
      }
    }
    this.counts.set(address, banCount);
    const row: NewBan = {
      address, family, now, until, source,
      reasonKind: reason.kind, reasonService: reason.service, reasonAccount: reason.account, failures: reason.failures,
    };
    // Automatic bans are committed together, after this loop turn or commitDelayMs: under a
    // burst each commit would otherwise hold up reading the next attacker's event. The "ban"
    // line is logged once the ban is stored.
    this.pending.push({ row, banCount, since: now }, source === 'auto' ? this.commitDelayMs : 0);
    this.changed('ban', address, source);
    // An operator's ban (or an import) is in the database when the call returns, or the
    // caller hears why not (the kernel holds it, and the row is retried).
    const result = { address, family, until, banCount, applied };
    if (source !== 'auto' && !this.pending.flush(true)) {
      throw new BanNotStoredYet(`ban of ${address} is in the kernel, but not stored yet (retried): ${this.storeHealth.lastError ?? 'database write failed'}`, result);
    }
    return result;
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
    for (const { row: b, banCount } of bans) {
      this.log.info(
        { address: b.address, reason: { kind: b.reasonKind, service: b.reasonService, account: b.reasonAccount }, failures: b.failures, count: banCount, duration: b.until === null ? 'permanent' : formatDuration(b.until - b.now), until: b.until === null ? null : new Date(b.until).toISOString(), source: b.source },
        'ban',
      );
    }
  }

  /** Lift one ban early (operator, or the address became allowed). */
  async unban(address: string, now: number, why: 'unban' | 'allowed'): Promise<boolean> {
    this.flushWrites();
    // The exact stored text is lifted too: a row that is not canonical or not a single host
    // (an older or hand-edited database) must still be removable.
    const ip = canonicalIp(address);
    const key = ip?.address ?? address;
    // A row not stored yet must not be written after the lift (it would come back at start).
    const unstored = this.pending.drop(key) > 0;
    let had = false;
    try {
      const exact = key !== address && this.store.liftBan(address, now, why);
      had = this.store.liftBan(key, now, why) || exact;
    } catch (err) {
      this.storeHealth.failed('other', 'unban not stored: the stored ban comes back at the next start', err, { address: key });
    }
    const inMemory = [this.banned.delete(address), this.banned.delete(key)].includes(true);
    // Remove from the kernel even when the database had nothing: never leave a stray ban
    // behind. Only a bannable address can be in the kernel (and reach a command line).
    if (ip && isBannable(ip.address, ip.family)) await this.kernel.remove([{ address: ip.address, family: ip.family }]);
    const lifted = had || inMemory || unstored;
    if (lifted) {
      this.log.info({ address: key, reason: why }, 'unban');
      this.changed('unban', key, why);
    }
    return lifted;
  }

  /** Lift every ban (operator `unban --all`): database first, then one kernel batch. Returns the addresses. */
  async unbanAll(now: number): Promise<string[]> {
    this.flushWrites();
    const gone = new Map<string, Family>();
    for (const p of this.pending.list()) gone.set(p.row.address, p.row.family);
    this.pending.drop();
    try {
      for (const b of this.store.liftAllBans(now, 'unban')) gone.set(b.address, b.family as Family);
    } catch (err) {
      this.storeHealth.failed('other', 'unban of all not stored: the stored bans come back at the next start', err);
    }
    for (const a of this.banned.keys()) gone.set(a, familyOf(a));
    this.banned.clear();
    await this.kernel.remove([...gone].map(([address, family]) => ({ address, family })));
    for (const address of gone.keys()) this.changed('unban', address, 'unban');
    this.log.info({ count: gone.size, reason: 'unban' }, 'unban all');
    return [...gone.keys()];
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
    this.flushWrites();
    let due: { address: string; family: number; until: number; startedAt: number }[] = [];
    let dbFailed = false;
    try {
      due = this.store.expireBans(now);
      this.storeHealth.ok('expiry');
    } catch (err) {
      dbFailed = true;
      this.storeHealth.failed('expiry', 'expiry not stored: bans end by their in-memory time', err);
    }
    const gone: { address: string; family: Family; startedAt: number | null; until: number }[] = [];
    for (const b of due) {
      const u = this.banned.get(b.address);
      // A newer ban of the host (its row still pending) is not ended by the old row.
      if (u !== undefined && (u === null || u > now)) continue;
      gone.push({ address: b.address, family: b.family as Family, startedAt: b.startedAt, until: b.until });
    }
    if (dbFailed || this.pending.count > 0) {
      for (const [address, until] of this.banned.entries()) {
        if (until !== null && until <= now && !gone.some((g) => g.address === address)) gone.push({ address, family: familyOf(address), startedAt: null, until });
      }
    }
    if (gone.length === 0) return 0;
    for (const b of gone) {
      if (!this.banned.delete(b.address)) continue;
      this.log.info({ address: b.address, reason: 'expired', banned_for: b.startedAt === null ? null : formatDuration(Math.max(0, b.until - b.startedAt)) }, 'unban');
      this.changed('unban', b.address, 'expired');
    }
    await this.kernel.remove(gone.map((b) => ({ address: b.address, family: b.family })));
    return gone.length;
  }
}
