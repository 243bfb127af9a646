import type { Logger } from '../log';
import type { Family } from '../net/ip';
import type { ConntrackFlusher } from './conntrack';
import { CommandError, checkedTarget } from './exec';
import type { BanLineFormat, BanSource, FirewallBackend, KernelBan } from './types';

type Ban = Pick<KernelBan, 'address' | 'family'>;
type Item =
  | { kind: 'add'; bans: KernelBan[]; now?: number; done: () => void }
  | { kind: 'remove'; bans: Ban[]; now?: number; done: () => void }
  | { kind: 'setAll'; bans: BanSource; now?: number; done: () => void };

export interface QueueOptions {
  /** Cuts established flows of new bans (createFirewall makes it beside the backend); none by default. */
  conntrack?: ConntrackFlusher | null;
  clock?: () => number;
}

/** What the queue reports of each backend call (op: add, remove, setAll): metrics and the reconciler subscribe. */
export interface QueueHooks {
  applied?(op: string, count: number): void;
  failed?(op: string, err: Error): void;
}

/**
 * Serialises calls into one backend. A call made while the queue is idle is sent at once,
 * synchronously; while a kernel command is in flight, further calls wait and are then sent
 * together: 1,000 simultaneous bans become a few batches. A backend that applies small
 * batches in the order they were written (the ipset shell: `keepsOrder`) gets every add and
 * remove at once instead, even while earlier ones are in flight, as long as nothing waits
 * ahead of it: a dozen bans decided in one burst are then all in the kernel within a
 * millisecond or two, instead of the last eleven waiting for the first one's answer (see
 * BENCHMARKS.md, Attempts). Its promises
 * never reject: failures are logged with the command's stderr and recorded for the health
 * check (see `healthy`).
 */
export class FirewallQueue {
  /** Message (with stderr) of the last failed batch; kept after recovery, for status. */
  lastError: string | null = null;
  /** Epoch ms of the last batch the kernel accepted. */
  lastSyncAt: number | null = null;
  /**
   * False once any batch failed: the kernel may then lack a ban (or hold a stray one).
   * Only a successful setAll makes it true again, so the daemon should resync from its
   * store (setAll) when it sees false; no single failed batch is retried here.
   */
  healthy = true;
  /** Backend calls made (batches); for tests and status. */
  batches = 0;
  /** Calls taken (add, remove, setAll): a look at the kernel saw them all only if this did not move meanwhile. */
  generation = 0;
  /** Full loads taken so far, and those waiting or running (the chain and sets are being rebuilt). */
  loads = 0;
  loading = 0;
  private readonly conntrack: ConntrackFlusher | null;
  private readonly hooks: QueueHooks[] = [];
  private pending: Item[] = [];
  /** The one-at-a-time loop (drain) is running. */
  private busy = false;
  /** Pipelined add/remove batches in flight; the loop waits for them. */
  private pipelined = 0;
  private waiters: (() => void)[] = [];
  private readonly clock: () => number;
  /** IPv6 bans are left out: the backend enforces IPv4 alone (a kernel without IPv6). */
  private readonly v6Off: boolean;
  /** IPv6 bans left out so far; the first one is logged as a warning, the others at debug. */
  v6LeftOut = 0;

  constructor(
    readonly backend: FirewallBackend,
    private readonly log: Logger,
    opts: QueueOptions = {},
  ) {
    this.clock = opts.clock ?? Date.now;
    this.v6Off = !backend.families.includes(6);
    this.conntrack = opts.conntrack ?? null;
  }

  /** Subscribes to every applied and failed backend call. */
  subscribe(hooks: QueueHooks): void {
    this.hooks.push(hooks);
  }

  /**
   * Resolves once the batch holding these bans is in the kernel, or failed (and was logged).
   * `now` (default: the clock when the batch runs) is what remaining ban times are counted from.
   */
  add(bans: KernelBan[], now?: number): Promise<void> {
    return this.enqueue('add', bans, now);
  }

  remove(bans: Ban[]): Promise<void> {
    return this.enqueue('remove', bans);
  }

  /**
   * Replace everything (start-up, resync). Runs in order with add/remove. The bans are read
   * when the batch runs, once, as the backend loads them (an iterable is not copied).
   */
  setAll(bans: BanSource, now?: number): Promise<void> {
    return new Promise((done) => this.push({ kind: 'setAll', bans, now, done }));
  }

  /** Nothing waits and nothing is in flight: the kernel holds every call made so far. */
  get quiet(): boolean {
    return !this.busy && this.pipelined === 0 && this.pending.length === 0;
  }

  /** Resolves when no call is pending or in flight. */
  idle(): Promise<void> {
    if (!this.busy && this.pipelined === 0) return Promise.resolve();
    return new Promise((r) => this.waiters.push(r));
  }

  private enqueue(kind: 'add' | 'remove', bans: Ban[], now?: number): Promise<void> {
    const valid = this.validOnly(bans);
    if (!valid.length) return Promise.resolve();
    // Nothing waits ahead of it and the channel keeps order: straight through, synchronously.
    if (!this.busy && this.pending.length === 0 && this.backend.keepsOrder(valid.length)) {
      return this.sendPipelined(kind, valid, now);
    }
    return new Promise((done) => this.push({ kind, bans: valid, now, done } as Item));
  }

  private async sendPipelined(kind: 'add' | 'remove', bans: Ban[], now?: number): Promise<void> {
    this.generation++;
    this.pipelined++;
    try {
      if (kind === 'remove') {
        await this.call('remove', () => this.backend.remove(bans), () => bans.length);
      } else {
        const adds = bans as KernelBan[];
        if (await this.call('add', () => this.backend.add(adds, now ?? this.clock()), () => adds.length)) this.cutFlows(adds);
      }
    } finally {
      this.pipelined--;
      this.next();
    }
  }

  private push(item: Item): void {
    this.generation++;
    if (item.kind === 'setAll') { this.loads++; this.loading++; }
    this.pending.push(item);
    this.next();
  }

  /** Start the one-at-a-time loop when calls wait and nothing is in flight; else tell idle() waiters. */
  private next(): void {
    if (this.busy || this.pipelined > 0) return;
    if (this.pending.length) {
      this.busy = true;
      // At once, synchronously: the command is on its way to the kernel before the caller
      // goes on (Decisions writes the database meanwhile). Calls made while it is in
      // flight wait and then go out together as the next batch.
      void this.drain();
      return;
    }
    for (const w of this.waiters.splice(0)) w();
  }

  /**
   * The source as the backend reads it: each ban checked (validOnly) as it is read, and counted,
   * or its rendered lines counted. Rendered lines are the source's to check (see BanLines).
   */
  private checkedSource(bans: BanSource): { source: BanSource; count: () => number } {
    let count = 0;
    const valid = (function* (q: FirewallQueue) { for (const b of bans) if (q.isValid(b)) { count++; yield b; } })(this);
    const render = bans.render;
    const renderSliced = bans.renderSliced;
    let sliced: { readonly count: number } | undefined;
    const source: BanSource = {
      [Symbol.iterator]: () => valid,
      ...(render ? { render: (format: BanLineFormat) => { const lines = render.call(bans, format); if (lines) count = lines.count; return lines; } } : {}),
      ...(renderSliced ? { renderSliced: (format: BanLineFormat, families: readonly Family[]) => (sliced = renderSliced.call(bans, format, families)) } : {}),
    };
    return { source, count: () => sliced?.count ?? count };
  }

  /** Drop (and log) what is not a canonical address, so one bad entry cannot sink a batch. */
  private validOnly<T extends Ban>(bans: T[]): T[] {
    return bans.filter((b) => this.isValid(b));
  }

  private isValid(b: Ban): boolean {
    if (b.family === 6 && this.v6Off) {
      const msg = 'IPv6 is off: IPv6 bans are stored, not put in the kernel';
      if (this.v6LeftOut++ === 0) this.log.warn({ address: b.address }, `${msg} (logged once; the others at debug)`);
      else this.log.debug({ address: b.address }, msg);
      return false;
    }
    try {
      checkedTarget(b.address, b.family);
      return true;
    } catch (err) {
      this.log.error({ err, address: b.address }, 'firewall: refused invalid address');
      return false;
    }
  }

  private async drain(): Promise<void> {
    while (this.pending.length) {
      const first = this.pending[0];
      if (first.kind === 'setAll') {
        this.pending.shift();
        const { source, count } = this.checkedSource(first.bans);
        await this.call('setAll', () => this.backend.setAll(source, first.now ?? this.clock()), count);
        this.loading--;
        first.done();
        continue;
      }
      // Take the run of add/remove calls up to the next setAll and net them per address:
      // the last call for an address wins, so removes and adds touch disjoint addresses.
      const end = this.pending.findIndex((i) => i.kind === 'setAll');
      const items = this.pending.splice(0, end < 0 ? this.pending.length : end) as Exclude<Item, { kind: 'setAll' }>[];
      const last = new Map<string, { add: KernelBan | null; ban: Ban }>();
      let now: number | undefined;
      for (const it of items) {
        if (it.kind === 'add' && it.now !== undefined) now = Math.max(now ?? it.now, it.now);
        for (const b of it.bans) last.set(b.address, { add: it.kind === 'add' ? (b as KernelBan) : null, ban: b });
      }
      const adds = [...last.values()].flatMap((v) => (v.add ? [v.add] : []));
      const removes = [...last.values()].flatMap((v) => (v.add ? [] : [v.ban]));
      if (removes.length) await this.call('remove', () => this.backend.remove(removes), () => removes.length);
      const added = adds.length > 0 && (await this.call('add', () => this.backend.add(adds, now ?? this.clock()), () => adds.length));
      for (const it of items) it.done();
      if (added) this.cutFlows(adds);
    }
    this.busy = false;
    this.next();
  }

  /**
   * Cut the established flows of newly banned hosts, after the callers hear "applied" and off
   * this tick: the conntrack cleanup is defence in depth (a long-lived helper, batched) and
   * must never delay a ban or the next batch.
   */
  private cutFlows(adds: KernelBan[]): void {
    const c = this.conntrack;
    const cut = adds.filter((b) => b.cutFlows !== false);
    if (c && cut.length > 0) setImmediate(() => c.flush(cut));
  }

  private async call(op: string, fn: () => Promise<void>, count: () => number): Promise<boolean> {
    this.batches++;
    try {
      await fn();
      this.lastSyncAt = this.clock();
      if (op === 'setAll') this.healthy = true;
      for (const h of this.hooks) h.applied?.(op, count());
      return true;
    } catch (e) {
      const err = e instanceof Error ? e : new Error(String(e));
      this.lastError = err.message;
      this.healthy = false;
      const cmd = err instanceof CommandError ? err.cmd : undefined;
      this.log.error({ err, cmd, op, count: count(), backend: this.backend.name }, `firewall ${op} failed`);
      for (const h of this.hooks) h.failed?.(op, err);
      return false;
    }
  }
}
