import type { SecurityEvent } from '../events/types';
import type { BanLineFormat, BanLines, KernelBan } from '../firewall/types';
import type { Logger } from '../log';
import { formatDuration } from '../config/duration';
import { SkipLog } from '../firewall/exec';
import { canonicalIp, familyOf, isBannable, type Family } from '../net/ip';
import { banDuration, type BantimeOptions } from '../scoring/bantime';
import type { NewBan, Store } from '../store';

/** What Decisions needs of the firewall: the serialising queue in src/firewall. */
export interface KernelQueue {
  add(bans: KernelBan[], now: number): Promise<void>;
  remove(bans: Pick<KernelBan, 'address' | 'family'>[]): Promise<void>;
  setAll(bans: Iterable<KernelBan>, now: number): Promise<void>;
  /** Present when the backend loads rendered lines (then setAllLines is there too). */
  readonly lineFormat?: BanLineFormat;
  setAllLines?(lines: BanLines): Promise<void>;
}

/** The allow list as restore needs it (AllowList): a check, and where to look for candidates. */
export interface Exemptions {
  /** Defined (the matching network) when the address must never be banned. */
  matches(address: string, family: Family): unknown;
  /** Texts every allowed address starts with ('' for any): see textPrefix in src/net/cidr. */
  textPrefixes(): string[];
}

export interface BanReason {
  kind: string;
  service: string;
  account: string;
  failures: number;
}

/** A ban sent to the kernel whose database row is still to be written. */
interface PendingBan { row: NewBan; banCount: number }

export interface BanResult {
  address: string;
  family: Family;
  until: number | null;
  banCount: number;
  /** Resolves when the kernel holds the ban (or the command failed and was logged). */
  applied: Promise<void>;
}

/**
 * The banned addresses (address -> until, null = permanent), counting the IPv6 ones as they
 * come and go: the status asks every few seconds, and counting 100k keys took ~40 ms.
 */
class BannedSet {
  private readonly map = new Map<string, number | null>();
  private v6 = 0;

  set(address: string, until: number | null): void {
    const before = this.map.size;
    this.map.set(address, until);
    if (this.map.size > before && address.includes(':')) this.v6++;
  }

  delete(address: string): boolean {
    const had = this.map.delete(address);
    if (had && address.includes(':')) this.v6--;
    return had;
  }

  clear(): void {
    this.map.clear();
    this.v6 = 0;
  }

  has(address: string): boolean { return this.map.has(address); }
  get(address: string): number | null | undefined { return this.map.get(address); }
  keys(): IterableIterator<string> { return this.map.keys(); }
  get size(): number { return this.map.size; }
  get byFamily(): { v4: number; v6: number } { return { v4: this.map.size - this.v6, v6: this.v6 }; }
}

/**
 * Turns a decision into a ban that is real and remembered: the kernel command is sent first,
 * then the database records the ban (an operator's at once, automatic ones together after
 * the loop turn or commitDelayMs). A crash in between can leave at most kernel bans the database does
 * not know; the next start loads the kernel from the database as a whole (a swap), so the
 * database stays the truth.
 * Keeps the set of banned addresses in memory so events from them cost nothing.
 */
export class Decisions {
  private readonly banned = new BannedSet();
  /** Automatic bans sent to the kernel, committed together a little later (flushWrites). */
  private pendingWrites: PendingBan[] = [];

  constructor(
    private readonly store: Store,
    private readonly kernel: KernelQueue,
    private readonly bantime: BantimeOptions,
    private readonly log: Logger,
    /** detail: the ban's source (auto, manual, legacy) or the unban's reason (unban, allowed, expired). */
    private readonly onChange: (what: 'ban' | 'unban', address: string, detail: string) => void = () => {},
    /**
     * How long automatic bans wait to be committed together, from the first of them: 0 (the
     * default) commits at the end of the loop turn; the daemon waits for the burst to pass.
     */
    private readonly commitDelayMs = 0,
  ) {}

  /**
   * At start: drop what expired while we were away, lift the bans of addresses allowed since
   * they were made, load the rest into the kernel in one batch. onLoaded(count) is called as
   * soon as the kernel holds them (or the load failed: the queue knows).
   * A backend that loads text (ipset) gets the bans as lines the store rendered, and the
   * daemon's own in-memory set is made once the kernel holds them. Otherwise the checks and
   * the set are made as the kernel load reads the bans, so that work overlaps the load.
   */
  async restore(now: number, allow: Exemptions, onLoaded: (bans: number) => void = () => {}): Promise<{ restored: number; lifted: number }> {
    this.flushWrites();
    this.store.expireBans(now);
    const format = this.kernel.lineFormat;
    if (format) {
      // A text load checks nothing itself, so allowed addresses are lifted before it: only the
      // stored addresses that could be in an allowed network (their text starts right) are
      // looked at, not every ban.
      const allowed = this.store.activeAddressesStartingWith(now, allow.textPrefixes()).filter((a) => allow.matches(a, familyOf(a)) !== undefined);
      for (const address of allowed) this.liftAllowed(address, now);
      await this.restoreLines(this.store.renderActiveBans(now, format), now, onLoaded);
      return { restored: this.banned.size, lifted: allowed.length };
    }
    const allowed = await this.restoreStream(this.store.streamActiveKernelBans(now), now, allow, onLoaded);
    for (const address of allowed) this.liftAllowed(address, now);
    return { restored: this.banned.size, lifted: allowed.length };
  }

  private liftAllowed(address: string, now: number): void {
    this.store.liftBan(address, now, 'allowed');
    this.log.warn({ address }, 'stored ban lifted: address is allowed now');
  }

  /**
   * restore for a backend that loads rendered lines. The kernel gets the bans first, and the
   * in-memory set is made after: measured at 100k bans, making it while ipset loaded only
   * slowed both (two cores). A malformed stored address (or a ban stored in between) found
   * then makes a second load, from what was read here, through the queue's own checks.
   */
  private async restoreLines(lines: BanLines, now: number, onLoaded: (bans: number) => void): Promise<void> {
    await this.kernel.setAllLines!(lines);
    onLoaded(lines.count);
    const banned = this.banned;
    banned.clear();
    const skipped = new SkipLog(this.log);
    for (const b of this.store.streamActiveKernelBans(now)) {
      // A stored address that may not be banned stays out of the kernel and of the set (logged);
      // `ampere unban` still lifts its row.
      if (isBannable(b.address, b.family) || skipped.check(b) !== null) banned.set(b.address, b.until);
    }
    skipped.done();
    // The store renders no canonical address that is not a single host; a count that differs
    // means a malformed address was rendered (or a ban stored in between): load again, checked.
    if (lines.count !== banned.size) {
      this.log.warn({ loaded: lines.count, stored: banned.size }, 'restore: loading the stored bans again, checked one by one');
      await this.kernel.setAll(this.bannedNow(), now);
    }
  }

  /** restore for any other backend: the checks and the set are made as the load reads the bans. */
  private async restoreStream(rows: Iterator<KernelBan>, now: number, allow: Exemptions, onLoaded: (bans: number) => void): Promise<string[]> {
    const allowed: string[] = [];
    const banned = this.banned;
    banned.clear();
    const skipped = new SkipLog(this.log);
    /** The next ban to load, after the allow-list check; undefined at the end. */
    const next = (): KernelBan | undefined => {
      for (let r = rows.next(); !r.done; r = rows.next()) {
        const b = r.value;
        if (!isBannable(b.address, b.family) && skipped.check(b) === null) continue;
        if (allow.matches(b.address, b.family) !== undefined) { allowed.push(b.address); continue; }
        banned.set(b.address, b.until);
        return b;
      }
      return undefined;
    };
    // A plain iterator, not a generator: a load that stops early (a failed restore) cannot close it.
    const bans: Iterable<KernelBan> = { [Symbol.iterator]: () => ({ next: () => { const b = next(); return b ? { value: b, done: false } : { value: undefined, done: true }; } }) };
    try {
      await this.kernel.setAll(bans, now);
    } finally {
      // Whatever a failed load did not read: the in-memory set (and with it the resync that
      // follows a failure) must still hold every stored ban.
      while (next() !== undefined) { /* banned.set happens in next() */ }
      skipped.done();
    }
    onLoaded(banned.size);
    return allowed;
  }

  /** The in-memory bans as the kernel needs them. */
  private bannedNow(): KernelBan[] {
    const out: KernelBan[] = [];
    for (const address of this.banned.keys()) out.push({ address, family: familyOf(address), until: this.banned.get(address)! });
    return out;
  }

  /** Load the database's active bans into the kernel again (a failed kernel command, drift found). */
  async resync(now: number): Promise<void> {
    this.flushWrites();
    const format = this.kernel.lineFormat;
    if (format) {
      // The start's load (lines SQLite renders), when the database holds exactly the bans in memory.
      const lines = this.store.renderActiveBans(now, format);
      if (lines.count === this.banned.size) return this.kernel.setAllLines!(lines);
    }
    await this.kernel.setAll(this.store.activeKernelBans(now).filter((b) => this.banned.has(b.address)), now);
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
    // An operator's ban goes after the pending ones; so does a host's second ban (its count).
    if (source !== 'auto' || this.pendingWrites.some((w) => w.row.address === address)) this.flushWrites();
    const banCount = this.store.banCount(address) + 1;
    const duration = forMs !== undefined ? forMs : banDuration(banCount - 1, this.bantime);
    const until = duration === null || duration === 0 ? null : now + duration;
    // The kernel command leaves first (written synchronously by the queue), so nothing on
    // the database side can delay the drop, and a failing disk cannot keep an attacker in.
    this.banned.set(address, until);
    const applied = this.kernel.add([{ address, family, until }], now);
    const row: NewBan = {
      address, family, now, until, source,
      reasonKind: reason.kind, reasonService: reason.service, reasonAccount: reason.account, failures: reason.failures,
    };
    const pending = { row, banCount };
    if (source === 'auto') {
      // Automatic bans are committed together, after this loop turn or commitDelayMs: under a
      // burst (a dozen attackers banned within a few ms) each commit would otherwise hold up
      // reading the next attacker's event, and with it that attacker's kernel command. A crash
      // before the commit leaves at most kernel bans the database lacks, which the next
      // start's full load removes. The "ban" line is logged once the ban is stored.
      this.pendingWrites.push(pending);
      if (this.pendingWrites.length === 1) {
        if (this.commitDelayMs > 0) setTimeout(() => this.flushWrites(), this.commitDelayMs);
        else setImmediate(() => this.flushWrites());
      }
    } else {
      // An operator's ban (or an import) is in the database when the call returns.
      this.write([pending], true);
    }
    this.onChange('ban', address, source);
    return { address, family, until, banCount, applied };
  }

  /**
   * Commit the automatic bans not yet written. Runs by itself after the loop turn that made
   * them (or commitDelayMs); every other database change of Decisions runs it first, so the
   * order is kept.
   */
  flushWrites(): void {
    if (this.pendingWrites.length === 0) return;
    this.write(this.pendingWrites.splice(0), false);
  }

  private write(bans: PendingBan[], rethrow: boolean): void {
    try {
      if (bans.length === 1) this.store.recordBan(bans[0].row);
      else this.store.recordBans(bans.map((b) => b.row));
    } catch (err) {
      this.log.error({ err: String(err), addresses: bans.map((b) => b.row.address) }, 'ban is in the kernel but could not be stored: it will not survive a restart');
      if (rethrow) throw err;
    }
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
    const exact = key !== address && this.store.liftBan(address, now, why);
    const had = this.store.liftBan(key, now, why) || exact;
    const inMemory = [this.banned.delete(address), this.banned.delete(key)].includes(true);
    // Remove from the kernel even when the database had nothing: never leave a stray ban
    // behind. Only a bannable address can be in the kernel (and reach a command line).
    if (ip && isBannable(ip.address, ip.family)) await this.kernel.remove([{ address: ip.address, family: ip.family }]);
    if (had || inMemory) {
      this.log.info({ address: key, reason: why }, 'unban');
      this.onChange('unban', key, why);
    }
    return had || inMemory;
  }

  /** Lift every ban (operator `unban --all`): database first, then one kernel batch. Returns the addresses. */
  async unbanAll(now: number): Promise<string[]> {
    this.flushWrites();
    const lifted = this.store.liftAllBans(now, 'unban');
    const gone = new Map<string, Family>();
    for (const b of lifted) gone.set(b.address, b.family as Family);
    for (const a of this.banned.keys()) gone.set(a, familyOf(a));
    this.banned.clear();
    await this.kernel.remove([...gone].map(([address, family]) => ({ address, family })));
    for (const address of gone.keys()) this.onChange('unban', address, 'unban');
    this.log.info({ count: gone.size, reason: 'unban' }, 'unban all');
    return [...gone.keys()];
  }

  /** When a host's current ban ends (null = permanent); undefined when it is not banned. */
  bannedUntil(address: string): number | null | undefined {
    return this.banned.get(address);
  }

  /** Bans whose time is up: the database marks them, the kernel drops them (rules have no timeout). */
  async expire(now: number): Promise<number> {
    this.flushWrites();
    const due = this.store.expireBans(now);
    if (due.length === 0) return 0;
    for (const b of due) {
      this.banned.delete(b.address);
      this.log.info({ address: b.address, reason: 'expired', banned_for: b.until === null ? null : formatDuration(Math.max(0, b.until - b.startedAt)) }, 'unban');
      this.onChange('unban', b.address, 'expired');
    }
    await this.kernel.remove(due.map((b) => ({ address: b.address, family: b.family as Family })));
    return due.length;
  }
}
