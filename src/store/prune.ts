import type Database from 'better-sqlite3';
import type { Statement } from 'better-sqlite3';
import { isBusy } from './open';

export interface PruneLimits {
  /** Never-banned hosts not seen for this long are forgotten (their events with them). */
  hostMaxAgeMs: number;
  /** At most this many never-banned hosts are kept; the least recently seen go first. */
  maxHostRows: number;
  /** Ended (lifted or expired) bans are kept this long; active bans always. */
  banHistoryKeepMs: number;
}

export interface PruneReport {
  /** Never-banned hosts dropped for age, and for the row cap. */
  aged: number;
  capped: number;
  /** Ended bans past the history retention, and hosts left with no ban and no recent sighting. */
  bans: number;
  bannedHosts: number;
  steps: number;
  /** The longest single step (one statement, the event loop blocked): milliseconds, and which rule it was. */
  maxStepMs: number;
  slowest: string;
  /**
   * The most CPU one step used (the process's, so the WAL checkpointer's thread too when it ran
   * meanwhile): the step's own cost, where maxStepMs also holds the time other processes had
   * the core.
   */
  maxStepCpuMs: number;
}

export interface PrunerOptions {
  /** What one step should take at most; the batch size adapts to it. */
  targetStepMs?: number;
  /** Called after each step that deleted rows (the WAL checkpointer counts commits). */
  onCommit?: () => void;
  /** Between two steps: lets the event loop run (events, bans, control requests). */
  pause?: () => Promise<void>;
}

/** A step that finds the database locked waits this long and goes again, this many times at most. */
const BUSY_PAUSE_MS = 50;
const BUSY_TRIES = 100;
const MIN_BATCH = 16;
const MAX_BATCH = 1024;

/**
 * The database's housekeeping, in small steps that yield: every statement deletes one batch
 * (its size adapted so that a step takes about targetStepMs), so no prune holds the event
 * loop, whatever is to be deleted. One run at a time; a run asked for during one follows it.
 */
export class Pruner {
  private readonly batch = { aged: 128, capped: 128, bans: 128, bannedHosts: 128 };
  private running: Promise<PruneReport> | null = null;
  private queued: Promise<PruneReport> | null = null;
  private stopped = false;
  private lastStepMs = 0;
  private readonly stmt: Record<'aged' | 'capped' | 'count' | 'bans' | 'candidates' | 'dropHost', Statement>;
  private readonly target: number;
  private readonly pause: () => Promise<void>;
  private readonly tx: <T>(fn: () => T) => T;

  constructor(sqlite: Database.Database, private readonly limits: PruneLimits, private readonly opts: PrunerOptions = {}) {
    this.target = opts.targetStepMs ?? 10;
    // As long as the last step took: half of the time is the daemon's, and the WAL checkpointer
    // can start the log over between two steps (back to back, the log grew past its bound and
    // the daemon's thread had to checkpoint it).
    this.pause = opts.pause ?? (() => new Promise<void>((r) => setTimeout(r, Math.max(1, Math.round(this.lastStepMs)))));
    this.tx = <T>(fn: () => T): T => sqlite.transaction(fn)();
    const unbanned = `SELECT address FROM hosts INDEXED BY hosts_unbanned_seen WHERE ban_count = 0`;
    this.stmt = {
      aged: sqlite.prepare(`DELETE FROM hosts WHERE address IN (${unbanned} AND last_seen <= ? ORDER BY last_seen LIMIT ?)`),
      capped: sqlite.prepare(`DELETE FROM hosts WHERE address IN (${unbanned} ORDER BY last_seen LIMIT ?)`),
      count: sqlite.prepare(`SELECT count(*) FROM hosts INDEXED BY hosts_unbanned_seen WHERE ban_count = 0`).pluck(),
      bans: sqlite.prepare(`DELETE FROM bans WHERE id IN (SELECT id FROM bans INDEXED BY bans_active WHERE lifted_at < ? LIMIT ?)`),
      // Hosts once banned, seen last before the retention: walked in (last_seen, rowid) order
      // from a cursor, so the ones that stay (a permanent ban) are read once per run.
      candidates: sqlite.prepare(`SELECT rowid, last_seen, address, banned, EXISTS (SELECT 1 FROM bans INDEXED BY bans_address WHERE bans.address = hosts.address) AS hasBans
        FROM hosts INDEXED BY hosts_last_seen WHERE last_seen < ? AND (last_seen, rowid) > (?, ?) ORDER BY last_seen, rowid LIMIT ?`).raw(),
      dropHost: sqlite.prepare(`DELETE FROM hosts WHERE address = ? AND banned = 0`),
    };
  }

  /** Run every rule until nothing is left to delete. */
  run(now: number): Promise<PruneReport> {
    if (this.stopped) return Promise.resolve({ aged: 0, capped: 0, bans: 0, bannedHosts: 0, steps: 0, maxStepMs: 0, slowest: '', maxStepCpuMs: 0 });
    // Asked during a run: one more run after it (what was written meanwhile is pruned too).
    if (this.running) return (this.queued ??= this.running.catch(() => {}).then(() => { this.queued = null; return this.run(now); }));
    return (this.running = this.runAll(now).finally(() => { this.running = null; }));
  }

  /** No step after this; resolves once a run in progress has ended (before the connection closes). */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.queued?.catch(() => {});
    await this.running?.catch(() => {});
  }

  /**
   * fn, timed (wall and CPU of the try that succeeded). Another connection's write lock (the
   * checkpoint worker truncating a big log, a CLI import) outlasting the daemon's short busy
   * wait: the step waits and goes again, the run goes on (a run given up would leave the rows
   * till the next one).
   */
  private async attempt(fn: () => number): Promise<{ n: number; ms: number; cpuMs: number }> {
    for (let busy = 0; ; busy++) {
      const t0 = performance.now();
      const c0 = process.cpuUsage();
      try {
        const n = fn();
        const c = process.cpuUsage(c0);
        return { n, ms: performance.now() - t0, cpuMs: (c.user + c.system) / 1000 };
      } catch (err) {
        if (!isBusy(err) || busy >= BUSY_TRIES || this.stopped) throw err;
      }
      await new Promise((r) => setTimeout(r, BUSY_PAUSE_MS));
    }
  }

  private async runAll(now: number): Promise<PruneReport> {
    const r: PruneReport = { aged: 0, capped: 0, bans: 0, bannedHosts: 0, steps: 0, maxStepMs: 0, slowest: '', maxStepCpuMs: 0 };
    const step = async (kind: keyof Pruner['batch'], fn: (limit: number) => number): Promise<number> => {
      if (this.stopped) return 0;
      const { n, ms, cpuMs } = await this.attempt(() => fn(this.batch[kind]));
      r.maxStepCpuMs = Math.max(r.maxStepCpuMs, cpuMs);
      this.lastStepMs = ms;
      r.steps++;
      if (ms > r.maxStepMs) { r.maxStepMs = ms; r.slowest = `${kind} (${this.batch[kind]} rows)`; }
      // Halve when a step took too long; grow slowly (a quarter) when it took under half the target.
      if (ms > this.target) this.batch[kind] = Math.max(MIN_BATCH, this.batch[kind] >> 1);
      else if (ms < this.target / 2) this.batch[kind] = Math.min(MAX_BATCH, Math.ceil(this.batch[kind] * 1.25));
      if (n > 0) this.opts.onCommit?.();
      await this.pause();
      return n;
    };
    const agedBefore = now - this.limits.hostMaxAgeMs;
    for (let n = 1; n > 0;) r.aged += n = await step('aged', (limit) => this.stmt.aged.run(agedBefore, limit).changes);
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    const unbanned = this.stmt.count.get() as number;
    const c = process.cpuUsage(c0);
    r.maxStepCpuMs = Math.max(r.maxStepCpuMs, (c.user + c.system) / 1000);
    if (performance.now() - t0 > r.maxStepMs) { r.maxStepMs = performance.now() - t0; r.slowest = 'count'; }
    await this.pause();
    for (let excess = unbanned - this.limits.maxHostRows; excess > 0;) {
      const n = await step('capped', (limit) => this.stmt.capped.run(Math.min(limit, excess)).changes);
      if (n === 0) break;
      r.capped += n;
      excess -= n;
    }
    const keepAfter = now - this.limits.banHistoryKeepMs;
    for (let n = 1; n > 0;) r.bans += n = await step('bans', (limit) => this.stmt.bans.run(keepAfter, limit).changes);
    let cursor: [number, number] = [-Infinity, -Infinity];
    for (let more = true; more && !this.stopped;) {
      // The cursor and count move only once the step committed: a step that was busy goes again from the same place.
      await step('bannedHosts', (limit) => {
        const done = this.tx(() => {
          const rows = this.stmt.candidates.all(keepAfter, cursor[0], cursor[1], limit) as [number, number, string, number, number][];
          let dropped = 0;
          for (const [, , address, banned, hasBans] of rows) if (banned === 0 && hasBans === 0) dropped += this.stmt.dropHost.run(address).changes;
          const last = rows[rows.length - 1];
          return { dropped, more: rows.length === limit, last: last ? [last[1], last[0]] as [number, number] : cursor };
        });
        [more, cursor] = [done.more, done.last];
        r.bannedHosts += done.dropped;
        return done.dropped;
      });
    }
    return r;
  }
}
