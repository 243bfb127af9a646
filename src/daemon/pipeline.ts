import type { AmiMessage } from '../ami';
import type { BanResult } from '../decisions';
import type { StoreHealth } from '../decisions/pending';
import { toSecurityEvent, type SecurityEvent } from '../events';
import type { Logger } from '../log';
import type { Verdict } from '../scoring';
import type { DaemonStats } from './status';

/** Offending events kept in memory while the history cannot be written: history is worth less than the memory. */
export const MAX_UNWRITTEN_EVENTS = 100_000;
/** Offending events gathered before the history is written without waiting for the flush job. */
export const HISTORY_BATCH = 1000;

/** What the pipeline needs of the rest of the daemon: each a narrow interface, so tests pass fakes. */
export interface PipelineParts {
  stats: DaemonStats;
  hearing: { heard(at: number): void };
  window: { add(kind: string, at: number): void };
  /** Checks the allow list (the one check on this path); `ampere allow add` forgets the penalties it covers. */
  penalties: { observe(e: SecurityEvent, at: number): Verdict };
  decisions: {
    isBanned(address: string): boolean;
    banFromEvent(e: SecurityEvent, failures: number, now: number): BanResult;
    readonly storeHealth: Pick<StoreHealth, 'ok' | 'failed'>;
  };
  history: { recordEvents(batch: { event: SecurityEvent; at: number }[]): void };
  firewall: { readonly healthy: boolean };
  log: Pick<Logger, 'debug'>;
  /** Per event and per ban made real: the metrics, when they are served. */
  telemetry: PipelineTelemetry | null;
  /** Called with the number of events written by each successful history flush. */
  onHistoryWritten?(events: number): void;
  clock?: { wall(): number; mono(): number };
}

export interface PipelineTelemetry {
  event(kind: string, service: string): void;
  /** Seconds from the deciding event's arrival to the ban in the kernel. */
  observeReaction(seconds: number): void;
}

const realClock = { wall: () => Date.now(), mono: () => performance.now() };

/**
 * The meaning of one AMI message: parse it, count it, score it, and ban when the score says so.
 * A host's history is written in batches and only once it matters; a banned host's events cost a lookup.
 */
export class EventPipeline {
  private unwritten: { event: SecurityEvent; at: number }[] = [];
  private readonly clock: { wall(): number; mono(): number };

  constructor(private readonly p: PipelineParts) {
    this.clock = p.clock ?? realClock;
  }

  /** Offending events not written to the history yet. */
  get unwrittenCount(): number { return this.unwritten.length; }

  /** One message from AMI; receivedAt is the wall time its bytes were parsed. Never throws for a bad message. */
  handle(msg: AmiMessage, receivedAt: number): void {
    const { p } = this;
    const parsed = toSecurityEvent(msg);
    if (parsed.ok || !parsed.ignored) p.hearing.heard(receivedAt);
    if (!parsed.ok) {
      if (!parsed.ignored) { p.stats.malformed++; p.log.debug({ reason: parsed.reason }, 'malformed security event skipped'); }
      return;
    }
    const e = parsed.event;
    this.count(e, receivedAt);
    if (p.decisions.isBanned(e.address)) return;
    const verdict = p.penalties.observe(e, receivedAt);
    if (verdict.action === 'allowed') return;
    // A host's history is written only once it matters: from its second failure within
    // findtime, or its ban; a spoofed source's lone failure never reaches the disk.
    if (e.severity === 'Error' && !(verdict.action === 'none' && verdict.first)) {
      this.unwritten.push({ event: e, at: receivedAt });
      if (this.unwritten.length >= HISTORY_BATCH) this.flush();
    }
    if (verdict.action === 'ban') this.ban(e, verdict.failures, receivedAt);
    else if (verdict.action === 'cleared' && verdict.failures > 0) {
      p.log.debug({ address: e.address, failures: verdict.failures }, 'penalty cleared by successful auth');
    }
  }

  private count(e: SecurityEvent, at: number): void {
    const { stats } = this.p;
    stats.events++;
    stats.byKind[e.kind] = (stats.byKind[e.kind] ?? 0) + 1;
    this.p.window.add(e.kind, at);
    this.p.telemetry?.event(e.kind, e.service);
  }

  private ban(e: SecurityEvent, failures: number, receivedAt: number): void {
    const { p, clock } = this;
    // The arrival on the monotonic clock (receivedAt is wall time, taken when the bytes were parsed).
    const arrived = clock.mono() - Math.max(0, clock.wall() - receivedAt);
    let res: BanResult;
    // Logged by Decisions; a database failure must not reach ami-io's parser (it would reconnect).
    try { res = p.decisions.banFromEvent(e, failures, clock.wall()); } catch { return; }
    const t = p.telemetry;
    if (t) void res.applied.then(() => { if (p.firewall.healthy) t.observeReaction((clock.mono() - arrived) / 1000); });
  }

  /** Writes the gathered history in one transaction; on failure keeps the newest, up to MAX_UNWRITTEN_EVENTS. */
  flush(): void {
    if (this.unwritten.length === 0) return;
    const batch = this.unwritten;
    this.unwritten = [];
    const health = this.p.decisions.storeHealth;
    try {
      this.p.history.recordEvents(batch);
      health.ok('history');
    } catch (err) {
      const kept = Math.min(batch.length, Math.max(0, MAX_UNWRITTEN_EVENTS - this.unwritten.length));
      this.unwritten = batch.slice(batch.length - kept).concat(this.unwritten);
      health.failed('history', 'event history kept for the next flush', err, { kept, lost: batch.length - kept });
      return;
    }
    this.p.onHistoryWritten?.(batch.length);
  }
}
