import type { Logger } from '../log';

/** The event loop's delay as status shows it: over the last minute or so. */
export const LOOP_DELAY_WINDOW_MS = 60_000;
/** Offending events wait at most this long for the history's batch write. */
export const HISTORY_FLUSH_MS = 200;
/** Bans end within this long of their time. */
export const EXPIRY_MS = 1000;
/** Penalties older than findtime are dropped from memory this often. */
export const PENALTY_PRUNE_MS = 30_000;
/** How often the database is pruned (in small steps that yield): often enough that a flood of new hosts meets the cap soon. */
export const DB_PRUNE_MS = 10_000;
/** A flood of new hosts meets the row cap within this many written events, not a prune interval later. */
export const PRUNE_AFTER_EVENTS = 10_000;
/** The status file is rewritten this often; `ampere health` calls a file older than 30 s stale. */
export const STATUS_FILE_MS = 5_000;
/** How often a firewall that lost a batch is rebuilt from the database, when the reconciler does not run. */
export const RESYNC_MS = 10_000;

/** What the periodic jobs act on: each a call, so the jobs hold no state of their own. */
export interface JobParts {
  log: Pick<Logger, 'warn' | 'error'>;
  resetLoopDelay(): void;
  flushHistory(): void;
  expireBans(now: number): Promise<unknown>;
  prunePenalties(now: number): void;
  pruneDatabase(): void;
  writeStatus(): void;
  /** True when a failed kernel batch left the kernel unsure and the reconciler is not there to repair it. */
  needsResync(): boolean;
  resync(now: number): Promise<void>;
}

/**
 * Runs the database prune, one at a time: by the DB_PRUNE_MS job and after PRUNE_AFTER_EVENTS
 * written events, so a flood of new hosts meets the row cap soon. A failed prune is logged.
 */
export class PruneTrigger {
  private sincePrune = 0;

  constructor(private readonly run: (now: number) => Promise<unknown>, private readonly log: Pick<Logger, 'warn'>) {}

  /** Counts events the history wrote; past PRUNE_AFTER_EVENTS the database is pruned at once. */
  written(events: number): void {
    if ((this.sincePrune += events) < PRUNE_AFTER_EVENTS) return;
    this.sincePrune = 0;
    this.now();
  }

  now(): void {
    this.run(Date.now()).catch((err) => { this.log.warn({ err: String(err) }, 'database prune failed'); });
  }
}

/** The daemon's timers, started at construction. */
export class Jobs {
  private readonly timers: NodeJS.Timeout[];

  constructor(j: JobParts) {
    const every = (ms: number, fn: () => void) => setInterval(fn, ms);
    this.timers = [
      every(LOOP_DELAY_WINDOW_MS, () => j.resetLoopDelay()),
      every(HISTORY_FLUSH_MS, () => j.flushHistory()),
      every(EXPIRY_MS, () => { j.expireBans(Date.now()).catch((err) => j.log.error({ err: String(err) }, 'expiry failed')); }),
      every(PENALTY_PRUNE_MS, () => j.prunePenalties(Date.now())),
      every(DB_PRUNE_MS, () => j.pruneDatabase()),
      every(STATUS_FILE_MS, () => j.writeStatus()),
      // A failed kernel batch leaves the kernel unsure: rebuild it from the database, which is
      // the truth (the reconciler does it at once when it runs).
      every(RESYNC_MS, () => { if (j.needsResync()) j.resync(Date.now()).catch((err) => j.log.error({ err: String(err) }, 'resync failed')); }),
    ];
  }

  stop(): void {
    for (const t of this.timers) clearInterval(t);
  }
}
