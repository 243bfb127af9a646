import type { Logger } from '../log';
import type { NewBan, Store } from '../store';

/** A ban the kernel holds whose database row is still to be written. */
/** quiet: no "ban" line of its own when stored (one line told of its whole batch). */
export interface PendingBan { row: NewBan; banCount: number; since: number; quiet?: boolean }

/** First wait after a failed write, and the longest: doubled after each failure. */
export const RETRY_FIRST_MS = 50;
export const RETRY_MAX_MS = 2000;

/** What status, metrics and health show of the database's state. */
export interface StorageState {
  /** Bans in the kernel whose row is not written yet. */
  pending: number;
  /** Epoch ms since when the oldest pending row waits; null when none. */
  oldestPendingSince: number | null;
  /** Epoch ms since when database writes fail; null while they succeed. */
  failingSince: number | null;
  lastError: string | null;
  /** Failed writes (bans, expiry, history) since start. */
  failures: number;
}

/** A ban row pending longer than this, or any failing write, is a health problem. */
export const PENDING_HEALTH_MS = 60_000;

/** Health problems of the database side. */
export function storageProblems(s: StorageState, now: number): string[] {
  const out: string[] = [];
  if (s.failingSince !== null) out.push(`database writes failing since ${new Date(s.failingSince).toISOString()}: ${s.lastError ?? ''}`);
  if (s.oldestPendingSince !== null && now - s.oldestPendingSince > PENDING_HEALTH_MS) out.push(`${s.pending} bans in the kernel not stored for more than ${PENDING_HEALTH_MS / 1000} s`);
  return out;
}

/**
 * What a database operation was for: a channel with a retry clears its failure when it
 * succeeds; a one-shot failure ('other': an unban, a read) is cleared by any success.
 */
export type StoreChannel = 'bans' | 'expiry' | 'history' | 'other';

/**
 * Whether database writes succeed, as every writer reports it: a failure is logged (per
 * message, the first at once, repeats at most once per logEveryMs with a count) so a failing
 * disk cannot flood the log, and health reads the state.
 */
export class StoreHealth {
  lastError: string | null = null;
  failures = 0;
  private readonly failing = new Map<StoreChannel, number>();
  private readonly logged = new Map<string, { at: number; unlogged: number }>();
  private readonly listeners: ((failing: boolean) => void)[] = [];

  constructor(private readonly log: Logger, private readonly clock: () => number = Date.now, private readonly logEveryMs = 10_000) {}

  /** Epoch ms since when some channel fails; null when none does. */
  get failingSince(): number | null {
    let min: number | null = null;
    for (const t of this.failing.values()) if (min === null || t < min) min = t;
    return min;
  }

  /** Called with true when writes start failing, false when they all succeed again. */
  onFailingChange(listener: (failing: boolean) => void): void {
    this.listeners.push(listener);
  }

  ok(channel: StoreChannel): void {
    const before = this.failingSince;
    this.failing.delete(channel);
    this.failing.delete('other');
    if (before !== null && this.failingSince === null) {
      this.log.info({ failedFor: this.clock() - before }, 'database writes succeed again');
      this.logged.clear();
      for (const l of this.listeners) l(false);
    }
  }

  failed(channel: StoreChannel, what: string, err: unknown, fields: Record<string, unknown> = {}): void {
    const now = this.clock();
    this.failures++;
    this.lastError = `${what}: ${err instanceof Error ? err.message : String(err)}`;
    const wasFailing = this.failing.size > 0;
    if (!this.failing.has(channel)) this.failing.set(channel, now);
    if (!wasFailing) for (const l of this.listeners) l(true);
    const l = this.logged.get(what);
    if (!l || now - l.at >= this.logEveryMs) {
      this.log.error({ ...fields, err: String(err), repeats: l?.unlogged ?? 0 }, `database write failed: ${what}`);
      this.logged.set(what, { at: now, unlogged: 0 });
    } else {
      l.unlogged++;
    }
  }
}

/**
 * The ban rows still to be written, in order. A write that fails keeps every row and tries
 * again after a backoff (RETRY_FIRST_MS doubling to RETRY_MAX_MS) until it succeeds: a ban the
 * kernel holds is never dropped from here except by its own unban.
 */
export class PendingWrites {
  private items: PendingBan[] = [];
  /** The write waiting to run (after the loop turn, commitDelayMs or a backoff), if any. */
  private timer: { cancel(): void } | null = null;
  private delay = RETRY_FIRST_MS;
  private backingOff = false;

  constructor(
    private readonly store: Store,
    private readonly health: StoreHealth,
    private readonly onStored: (bans: PendingBan[]) => void,
    private readonly clock: () => number = Date.now,
  ) {}

  get count(): number { return this.items.length; }
  get oldestSince(): number | null { return this.items.length ? this.items[0].since : null; }
  has(address: string): boolean { return this.items.some((p) => p.row.address === address); }
  /** The pending bans of these addresses (for a start that must load them too). */
  list(): readonly PendingBan[] { return this.items; }

  /** Queue a row; it is written after delayMs (0: after this loop turn) unless a retry is waiting. */
  push(p: PendingBan, delayMs: number): void {
    this.items.push(p);
    if (this.timer === null) this.timer = later(() => this.tick(), delayMs);
  }

  private tick(): void {
    this.timer = null;
    this.backingOff = false;
    this.flush();
  }

  /**
   * Write every pending row in one transaction now. true when nothing is left; false when the
   * write failed (logged, retry scheduled) or a backoff is still running (force: try anyway).
   */
  flush(force = false): boolean {
    if (this.items.length === 0) return true;
    if (this.backingOff && !force) return false;
    const batch = this.items;
    try {
      if (batch.length === 1) this.store.bans.recordBan(batch[0].row);
      else this.store.bans.recordBans(batch.map((b) => b.row));
    } catch (err) {
      this.health.failed('bans', 'ban rows kept in memory and retried', err, { pending: batch.length, retryInMs: this.delay, addresses: batch.slice(0, 20).map((b) => b.row.address) });
      this.schedule();
      return false;
    }
    this.items = [];
    this.delay = RETRY_FIRST_MS;
    this.health.ok('bans');
    this.onStored(batch);
    return true;
  }

  private schedule(): void {
    this.timer?.cancel();
    this.backingOff = true;
    // Unref'd: a retry alone does not keep a process alive (the daemon's own timers do).
    this.timer = later(() => this.tick(), this.delay, true);
    this.delay = Math.min(this.delay * 2, RETRY_MAX_MS);
  }

  /** Forget the rows of an address whose ban was lifted before it could be stored. */
  drop(address?: string): number {
    const before = this.items.length;
    this.items = address === undefined ? [] : this.items.filter((p) => p.row.address !== address);
    return before - this.items.length;
  }

  /** Stop the retry timer (shutdown); the rows stay for a last flush. */
  stop(): void {
    this.timer?.cancel();
    this.timer = null;
    this.backingOff = false;
  }
}

/** fn after ms (0: after this loop turn), cancellable. */
function later(fn: () => void, ms: number, unref = false): { cancel(): void } {
  if (ms <= 0) { const i = setImmediate(fn); return { cancel: () => clearImmediate(i) }; }
  const t = setTimeout(fn, ms);
  if (unref) t.unref();
  return { cancel: () => clearTimeout(t) };
}
