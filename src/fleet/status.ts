import type { Registry } from 'prom-client';
import type { Logger } from '../log';
import type { Applied, Received } from './apply';

/** What `ampere status` shows of the fleet (GET /status, `fleet`). Times are epoch ms. */
export interface FleetStatus {
  url: string;
  origin: string;
  role: string | null;
  connected: boolean;
  since: number | null;
  lastError: string | null;
  /** The receive cursor: a PostgreSQL transaction id (xid8), as text. */
  cursor: string;
  outbox: { cursor: number; backlog: number };
  published: number;
  /** Of published: bans sent before their row was committed (see Publisher.sendEarly). */
  publishedEarly: number;
  /** Bans whose early insert failed: the outbox published them. */
  earlyFailed: number;
  received: number;
  refused: Record<string, number>;
  lastIn: { at: number; origin: string; action: string; address: string } | null;
  lastOut: { at: number; action: string; address: string } | null;
  /** Origins heard from, with the time of their newest decision. */
  peers: Record<string, number>;
  /** From a peer's decision being made to its ban in this kernel, the last one. */
  lagMs: number | null;
}

/** Refusal lines logged per reason and minute; the rest only at debug (a flood must not flood the log). */
const LOG_PER_MINUTE = 20;

export const LAG_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

export class FleetCounters {
  received = 0;
  readonly refused: Record<string, number> = Object.create(null) as Record<string, number>;
  private lastIn: FleetStatus['lastIn'] = null;
  private readonly peers = new Map<string, number>();
  private since: number | null = null;
  private lastError: string | null = null;
  private lagMs: number | null = null;
  private readonly logged = new Map<string, { minute: number; n: number }>();
  private lagObserver: ((s: number) => void) | null = null;

  constructor(private readonly origin: string, private readonly url: string) {}

  connected(at: number): void { this.since = at; this.lastError = null; }
  disconnected(at: number, err: string): void { this.since = at; this.lastError = err; }

  result(d: Received, res: Applied, log: Logger): void {
    const origin = typeof d.origin === 'string' ? d.origin.slice(0, 63) : '?';
    if (this.peers.size < 10_000 || this.peers.has(origin)) this.peers.set(origin, Math.max(this.peers.get(origin) ?? 0, d.createdAt));
    if (!res.ok) {
      this.refused[res.why] = (this.refused[res.why] ?? 0) + 1;
      const minute = Math.floor(Date.now() / 60_000);
      const l = this.logged.get(res.why);
      const n = l && l.minute === minute ? ++l.n : 1;
      if (!l || l.minute !== minute) this.logged.set(res.why, { minute, n });
      const fields = { why: res.why, origin, address: res.address ?? null, detail: res.detail, id: d.id };
      if (n <= LOG_PER_MINUTE) log.warn(fields, 'fleet decision refused');
      else log.debug(fields, 'fleet decision refused');
      return;
    }
    this.received++;
    this.lastIn = { at: Date.now(), origin, action: String(d.action), address: res.address };
    if (res.applied) {
      const made = d.createdAt;
      void res.applied.then(() => {
        this.lagMs = Math.max(0, Date.now() - made);
        this.lagObserver?.(this.lagMs / 1000);
      });
    }
    if (res.what !== 'already') log.debug({ origin, action: d.action, address: res.address, capped: res.capped }, 'fleet decision applied');
  }

  status(live: { connected: boolean; role: string | null; cursor: string; outboxCursor: number; backlog: number; published: number; publishedEarly: number; earlyFailed: number; lastOut: FleetStatus['lastOut'] }): FleetStatus {
    return {
      url: this.url, origin: this.origin, role: live.role, connected: live.connected, since: this.since, lastError: this.lastError,
      cursor: live.cursor, outbox: { cursor: live.outboxCursor, backlog: live.backlog }, published: live.published, publishedEarly: live.publishedEarly, earlyFailed: live.earlyFailed, received: this.received,
      refused: { ...this.refused }, lastIn: this.lastIn, lastOut: live.lastOut, peers: Object.fromEntries(this.peers), lagMs: this.lagMs,
    };
  }

  /** The fleet's Prometheus metrics on the daemon's registry (prom-client is loaded already when metrics are on). */
  register(registry: Registry, read: () => FleetStatus): void {
    const { Counter, Gauge, Histogram } = require('prom-client') as typeof import('prom-client');
    const registers = [registry];
    const follow = (name: string, help: string, get: (s: FleetStatus) => number) => {
      let last = 0;
      new Counter({ name, help, registers, collect() { const n = get(read()); if (n > last) { this.inc(n - last); last = n; } } });
    };
    follow('ampere_fleet_published_total', 'Local decisions published to the fleet.', (s) => s.published);
    follow('ampere_fleet_published_early_total', 'Of those, local bans published before their row was committed.', (s) => s.publishedEarly);
    follow('ampere_fleet_early_failed_total', 'Local bans whose early publish failed (the outbox published them).', (s) => s.earlyFailed);
    follow('ampere_fleet_received_total', "Peers' decisions applied (or already in force).", (s) => s.received);
    const seen: Record<string, number> = {};
    new Counter({
      name: 'ampere_fleet_refused_total', help: "Peers' decisions refused, by why (invalid, allowed, rate, foreign-unban, expired, full).", labelNames: ['why'], registers,
      collect() { for (const [why, n] of Object.entries(read().refused)) { if (n > (seen[why] ?? 0)) { this.inc({ why }, n - (seen[why] ?? 0)); seen[why] = n; } } },
    });
    new Gauge({ name: 'ampere_fleet_connected', help: '1 when connected to the fleet database.', registers, collect() { this.set(read().connected ? 1 : 0); } });
    new Gauge({ name: 'ampere_fleet_outbox_backlog', help: 'Local decisions waiting to be published.', registers, collect() { this.set(Math.max(0, read().outbox.backlog)); } });
    const lag = new Histogram({ name: 'ampere_fleet_lag_seconds', help: "From a peer's decision being made to its ban in this kernel.", buckets: LAG_BUCKETS, registers });
    this.lagObserver = (s) => lag.observe(s);
  }
}
