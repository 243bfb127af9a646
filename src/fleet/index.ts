import { Client } from 'pg';
import { redactUrl } from '../config/fleet-keys';
import type { Config } from '../config';
import type { Decisions } from '../decisions';
import type { Logger } from '../log';
import type { Family } from '../net/ip';
import type { Store } from '../store';
import type { Applied, Received } from './apply';
import { clientConfig, tlsOf } from './connect';
import type { EarlyBan } from './early';
import { LocalFleetState } from './local';
import { Publisher } from './publisher';
import { KeyedBuckets, TokenBucket } from './rate';
import { Receiver, type Query } from './receiver';
import { CHANNEL } from './sql';
import { FleetCounters, type FleetStatus } from './status';

export type { FleetStatus } from './status';

export interface FleetDeps {
  cfg: Config;
  store: Store;
  decisions: Decisions;
  isAllowed(address: string, family: Family): boolean;
  log: Logger;
}

/** How long after a local decision the outbox is read again when its row was not there yet (an automatic ban is committed 20 ms after the first of a burst). */
const PUBLISH_DELAY_MS = 25;
const RECONNECT_MIN_MS = 500;
const RECONNECT_MAX_MS = 10_000;
/** Seconds of its rate a bucket holds: a burst of bans (a replayed attack) goes out at once. */
const BURST_SECONDS = 2;

/**
 * Fleet mode (loaded only when fleet_url is set): one PostgreSQL connection that publishes the
 * outbox, LISTENs for peers' decisions and catches up from the stored cursor after every
 * (re)connect, notification and fleet_resync. Nothing here is awaited by the ban path, and an
 * engine that is down only delays: the outbox and the cursor are in SQLite.
 */
export class Fleet {
  private client: Client | null = null;
  private stopped = false;
  private backoff = RECONNECT_MIN_MS;
  private readonly timers: NodeJS.Timeout[] = [];
  private reconnectTimer: NodeJS.Timeout | null = null;
  private publishTimer: NodeJS.Timeout | null = null;
  private publishTries = 0;
  private downLogged = false;
  private readonly local: LocalFleetState;
  private readonly publisher: Publisher;
  private readonly receiver: Receiver;
  readonly counters: FleetCounters;
  private role: string | null = null;
  /** Local bans of this loop turn, published together after it (noteBan). */
  private earlyQueue: EarlyBan[] = [];

  constructor(private readonly deps: FleetDeps) {
    const { cfg } = deps;
    this.local = new LocalFleetState(deps.store.sqlite);
    const query: Query = (text, params) => {
      const c = this.client;
      if (!c) return Promise.reject(new Error('fleet database not connected'));
      return c.query(text, params as unknown[]);
    };
    this.counters = new FleetCounters(cfg.fleet_origin, redactUrl(cfg.fleet_url));
    this.publisher = new Publisher(query, this.local, cfg.fleet_origin, new TokenBucket(cfg.fleet_publish_rate, cfg.fleet_publish_rate * BURST_SECONDS), deps.log);
    this.receiver = new Receiver(query, this.local, cfg.fleet_origin,
      { decisions: deps.decisions, store: deps.store, isAllowed: deps.isAllowed, banMaxMs: cfg.fleet_ban_max, setSize: () => cfg.set_size, log: deps.log },
      new KeyedBuckets(cfg.fleet_receive_rate, cfg.fleet_receive_rate * BURST_SECONDS), { onResult: (d, res) => this.onResult(d, res) });
  }

  start(): void {
    this.timers.push(
      setInterval(() => { if (this.client) void this.receive('resync'); }, this.deps.cfg.fleet_resync),
      // The safety net for the outbox (a decision whose notice was missed, the rate limit's rest).
      setInterval(() => { if (this.client && this.local.backlog() > 0) void this.publish(); }, 1000),
    );
    void this.connect();
  }

  /**
   * The observer of local decisions (and of ban rows committed, delayMs 0): the outbox is read
   * after this turn of the event loop, never on the ban path, and again a little later while
   * the row is not committed yet.
   */
  noteLocal(delayMs = 0): void {
    this.publishTries = 0;
    if (this.publishTimer && delayMs > 0) return;
    if (this.publishTimer) clearTimeout(this.publishTimer);
    this.publishTimer = setTimeout(() => { this.publishTimer = null; void this.publish(); }, delayMs);
  }

  /**
   * A local ban (never a peer's, never a range: the caller filters as the outbox trigger and
   * the publisher do): published after this loop turn with the turn's other bans, before its
   * row is committed, when Publisher.sendEarly's rules allow; otherwise the outbox publishes it
   * once committed, as any decision. Nothing here is awaited by the ban path.
   */
  noteBan(ban: EarlyBan): void {
    if (this.earlyQueue.push(ban) === 1) setImmediate(() => this.sendEarly());
  }

  private sendEarly(): void {
    const bans = this.earlyQueue;
    this.earlyQueue = [];
    if (this.stopped) return;
    // A database failing to store bans may never commit these rows, nor then their unbans'
    // (noteUnban): they wait for the outbox like any decision.
    const storing = this.deps.decisions.storage().failingSince === null;
    const left = storing ? this.publisher.sendEarly(bans, this.client !== null) : bans;
    if (left.length > 0) this.noteLocal();
  }

  /**
   * A local unban (operator or allow list). When its address's ban went out early but its row
   * never reached the outbox (the write failed and the unban dropped the pending row), no
   * trigger writes this unban: it is written to the outbox here, or peers would keep the ban.
   * Every early ban of the address is forgotten then, so a newer one (a race with this unban)
   * is published again from its own row, after this unban.
   */
  noteUnban(address: string, reason: string): void {
    if (!this.publisher.sentEarly(address)) return;
    try {
      if (this.local.banWaiting(address)) return;
      this.publisher.forgetEarly(address);
      this.local.addUnban(address, reason, Date.now());
    } catch (err) {
      this.deps.log.warn({ err: (err as Error).message, address }, 'fleet: unban of a ban published early not written to the outbox: peers keep it until its end');
    }
  }

  status(): FleetStatus {
    let backlog = -1;
    try { backlog = this.local.backlog(); } catch { /* shown as unknown */ }
    return this.counters.status({ connected: this.client !== null, role: this.role, cursor: this.receiver.storedCursor, outboxCursor: this.local.outboxCursor, backlog, published: this.publisher.published, publishedEarly: this.publisher.publishedEarly, earlyFailed: this.publisher.earlyFailed, lastOut: this.publisher.lastOut });
  }

  /** The fleet's metrics on the daemon's registry. */
  registerMetrics(registry: import('prom-client').Registry): void {
    this.counters.register(registry, () => this.status());
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    if (this.publishTimer) clearTimeout(this.publishTimer);
    const c = this.client;
    this.client = null;
    await c?.end().catch(() => {});
  }

  private async connect(): Promise<void> {
    this.reconnectTimer = null;
    if (this.stopped) return;
    const { cfg, log } = this.deps;
    const client = new Client(clientConfig(cfg.fleet_url, tlsOf(cfg), `ampere ${cfg.fleet_origin}`));
    client.on('error', (err) => this.down(client, err));
    client.on('end', () => this.down(client, new Error('connection closed')));
    client.on('notification', () => { void this.receive('notify'); });
    try {
      await client.connect();
      const who = (await client.query(`SELECT current_user AS role, to_regclass('public.fleet_decisions') IS NOT NULL AS ready`)).rows[0] as { role: string; ready: boolean };
      if (!who.ready) throw new Error('table fleet_decisions is missing: run "ampere fleet init" on the database');
      this.role = who.role;
      if (who.role !== cfg.fleet_origin) log.error({ role: who.role, origin: cfg.fleet_origin }, `fleet: this node connects as role ${who.role} but publishes as ${cfg.fleet_origin}: the database refuses its decisions (set fleet_origin to the role)`);
      await client.query(`LISTEN ${CHANNEL}`);
      if (this.stopped) { await client.end().catch(() => {}); return; }
      this.client = client;
      this.backoff = RECONNECT_MIN_MS;
      this.downLogged = false;
      this.counters.connected(Date.now());
      log.info({ fleet: redactUrl(cfg.fleet_url), origin: cfg.fleet_origin, cursor: this.receiver.storedCursor, backlog: this.local.backlog() }, 'fleet connected');
      await this.receive('connect');
      await this.publish();
    } catch (err) {
      this.down(client, err as Error);
    }
  }

  /** A connection that failed or ended: forgotten, and a new one tried with backoff. */
  private down(client: Client, err: Error): void {
    if ((client as unknown as { ampereDown?: boolean }).ampereDown) return;
    (client as unknown as { ampereDown?: boolean }).ampereDown = true;
    // A late error on the dead client must not become an uncaught exception.
    client.on('error', () => {});
    client.end().catch(() => {});
    if (this.client === client) this.client = null;
    this.counters.disconnected(Date.now(), err.message);
    if (this.stopped) return;
    const { log } = this.deps;
    if (!this.downLogged) log.warn({ err: err.message, retryMs: this.backoff }, 'fleet database unreachable: decisions wait in the outbox');
    else log.debug({ err: err.message }, 'fleet database still unreachable');
    this.downLogged = true;
    this.reconnectTimer = setTimeout(() => void this.connect(), this.backoff);
    this.backoff = Math.min(RECONNECT_MAX_MS, this.backoff * 2);
  }

  private async receive(why: string): Promise<void> {
    try { await this.receiver.kick(); } catch (err) { this.deps.log.warn({ err: (err as Error).message, why }, 'fleet catch-up failed'); }
  }

  private async publish(): Promise<void> {
    if (!this.client) return;
    let sent: number;
    try { sent = await this.publisher.drain(); } catch (err) { this.deps.log.warn({ err: (err as Error).message }, 'fleet publish failed: decisions wait in the outbox'); return; }
    // Rate limited: the rest goes a little later. Nothing yet: the ban's row may still be uncommitted.
    if (sent < 0) this.publishTimer ??= setTimeout(() => { this.publishTimer = null; void this.publish(); }, 200);
    else if (sent === 0 && ++this.publishTries < 4) this.publishTimer ??= setTimeout(() => { this.publishTimer = null; void this.publish(); }, PUBLISH_DELAY_MS);
  }

  private onResult(d: Received, res: Applied): void {
    this.counters.result(d, res, this.deps.log);
  }
}

/** Start fleet mode (the daemon calls this only when fleet_url is set). */
export function startFleet(deps: FleetDeps): Fleet {
  const f = new Fleet(deps);
  f.start();
  return f;
}
