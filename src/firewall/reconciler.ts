import type { Logger } from '../log';
import type { Family } from '../net/ip';
import type { FirewallQueue } from './queue';
import type { FirewallBackend } from './types';
import { countDrifts, describeDrifts, type Drift } from './verify';

export interface ReconcilerDeps {
  backend: Pick<FirewallBackend, 'inspect' | 'verifiable'>;
  queue: Pick<FirewallQueue, 'healthy' | 'generation' | 'loads' | 'loading' | 'quiet'>;
  /** The daemon's bans per family, and how many of a family's end by a time. */
  banned(): { v4: number; v6: number };
  endedBy(family: Family, at: number): number;
  /** Load the database's bans into the kernel in one batch, through the queue (Decisions.resync). */
  repair(): Promise<void>;
  log: Logger;
  /** Each repair, once per kind of drift it mended (the metric's `what`). */
  onRepair?(what: string): void;
  /** The kernel was found wrong, before the repair (drifting is already true). */
  onDrift?(found: Drift[]): void;
}

/** What `ampere status` shows of the checks. */
export interface ReconcilerState {
  intervalMs: number;
  /** False when off: verify_interval 0, or a backend with nothing to check (dry-run). */
  running: boolean;
  checks: number;
  repairs: number;
  lastDrift: { what: string; at: number; repairMs: number | null } | null;
}

/** The kernel may hold fewer members by bans ended this long ago (clocks, the kernel's timers). */
const ENDED_SLACK_MS = 1000;
/** A repair that did not mend the kernel is tried again after this, doubling up to the maximum. */
const RETRY_MIN_MS = 2_000;
const RETRY_MAX_MS = 60_000;

/**
 * Compares the kernel with what Ampere believes, every so often and whenever kicked (a failed
 * batch), and reloads the kernel from the database when they differ. Checks run so that drift
 * is repaired within the configured interval, looks and repair included: twice per interval. A count is compared
 * only when no kernel command ran during the look, and the chain only when no full load did,
 * so neither a ban in flight nor Ampere's own rebuild is ever taken for drift.
 */
export class Reconciler {
  readonly state: ReconcilerState;
  /** The kernel is known to differ from what Ampere made, and is not repaired yet. */
  drifting = false;
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private again = false;
  private failedLook: string | null = null;
  private retryAt = 0;
  private retryMs = RETRY_MIN_MS;
  private lastUnrepaired: string | null = null;

  constructor(private readonly d: ReconcilerDeps, intervalMs: number) {
    this.state = { intervalMs, running: false, checks: 0, repairs: 0, lastDrift: null };
  }

  start(): void {
    if (this.state.intervalMs <= 0 || !this.d.backend.verifiable || this.timer) return;
    this.timer = setInterval(() => void this.check(), Math.max(50, Math.round(this.state.intervalMs / 2)));
    this.state.running = true;
  }

  /** Stops the timer and waits for a check under way. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.state.running = false;
    this.again = false;
    await this.running;
  }

  /** A check soon (after a failed batch), outside the caller's turn. */
  kick(): void {
    if (this.timer) setTimeout(() => void this.check(), 0);
  }

  /** One check (and repair); a call during one makes one more after it. */
  check(): Promise<void> {
    if (this.running) { this.again = true; return this.running; }
    this.running = this.round().catch((err) => this.d.log.error({ err: String(err) }, 'firewall check failed')).finally(() => {
      this.running = null;
      if (this.again && this.timer) { this.again = false; void this.check(); }
    });
    return this.running;
  }

  private async round(): Promise<void> {
    this.state.checks++;
    let found = await this.look();
    const failed = !this.d.queue.healthy;
    // Drift in the rules or sets is confirmed by a second look before the repair: one look may
    // meet a change half made (a reload's rules going in one by one), and the warning names
    // what is really there. Counts need none: they are compared only over a still queue.
    if (found?.some((x) => x.what !== 'entries') && !failed) found = await this.look();
    if (found === null || (found.length === 0 && !failed)) {
      if (found !== null) { this.drifting = false; this.lastUnrepaired = null; this.retryMs = RETRY_MIN_MS; }
      return;
    }
    const was = this.drifting;
    this.drifting = true;
    if (!was) this.d.onDrift?.(found);
    if (Date.now() < this.retryAt) return;
    await this.repair(found, failed);
  }

  private async repair(found: Drift[], failed: boolean): Promise<void> {
    const at = Date.now();
    const t0 = performance.now();
    await this.d.repair();
    const ms = Math.round(performance.now() - t0);
    const after = await this.look();
    const what = found.length ? describeDrifts(found) : 'a kernel command failed';
    const kinds = found.length ? [...new Set(found.map((x) => x.what))] : ['failed-batch'];
    this.state.repairs++;
    for (const k of kinds) this.d.onRepair?.(k);
    if (after !== null && after.length === 0 && this.d.queue.healthy) {
      this.drifting = false;
      this.lastUnrepaired = null;
      this.retryMs = RETRY_MIN_MS;
      this.state.lastDrift = { what, at, repairMs: ms };
      this.d.log.warn({ drift: found, failedBatch: failed, repairMs: ms }, `firewall drift: ${what}; repaired in ${ms} ms`);
      return;
    }
    // Not mended (a kernel that refuses the load): told once, tried again with backoff.
    this.state.lastDrift = { what, at, repairMs: null };
    this.retryAt = Date.now() + this.retryMs;
    this.retryMs = Math.min(RETRY_MAX_MS, this.retryMs * 2);
    const still = after === null ? 'the kernel could not be read' : after.length ? describeDrifts(after) : 'the reload failed';
    if (this.lastUnrepaired !== what) this.d.log.error({ drift: found, still }, `firewall drift: ${what}; NOT repaired (${still}); retrying`);
    this.lastUnrepaired = what;
  }

  /** The drift the kernel shows now, or null when it could not be read. */
  private async look(): Promise<Drift[] | null> {
    const q = this.d.queue;
    const [gen, loads, quiet, loading] = [q.generation, q.loads, q.quiet, q.loading > 0];
    const banned = this.d.banned();
    let view;
    try {
      view = await this.d.backend.inspect();
    } catch (err) {
      const msg = String(err);
      if (this.failedLook !== msg) this.d.log.warn({ err: msg }, 'firewall check could not read the kernel');
      this.failedLook = msg;
      return null;
    }
    this.failedLook = null;
    // The chain and sets are rebuilt by Ampere's own full loads: judged only when none ran meanwhile.
    const drifts = loading || q.loading > 0 || q.loads !== loads ? [] : view.drifts;
    // Counts only when no kernel command was under way or taken during the look.
    if (quiet && q.quiet && q.generation === gen) {
      const now = Date.now();
      drifts.push(...countDrifts(view.counts, { 4: banned.v4, 6: banned.v6 }, (f) => this.d.endedBy(f, now + ENDED_SLACK_MS)));
    }
    return drifts;
  }
}
