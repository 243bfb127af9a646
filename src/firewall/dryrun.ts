import type { Logger } from '../log';
import { checkBatch, SkipLog } from './exec';
import { familyOf } from '../net/ip';
import type { FirewallBackend, FirewallOptions, KernelBan, ListedBan } from './types';
import type { KernelView } from './verify';

/** Touches no kernel state: logs what it would do and keeps the bans in memory (development). */
export class DryRunBackend implements FirewallBackend {
  readonly name = 'dry-run';
  readonly netns = undefined;
  readonly families = [4, 6] as const;
  /** Nothing in the kernel to check. */
  readonly verifiable = false;
  readonly keepsBanTimes = true;
  private readonly bans = new Map<string, number | null>();

  constructor(
    private readonly opts: Pick<FirewallOptions, 'chain'>,
    private readonly log: Logger,
    private readonly clock: () => number = Date.now,
  ) {}

  async init(): Promise<void> {
    this.log.info({ chain: this.opts.chain }, 'dry-run firewall: no kernel changes will be made');
  }

  async setAll(input: Iterable<KernelBan>, now: number): Promise<void> {
    // As the kernel backends: what may not be banned is left out and logged.
    const skipped = new SkipLog(this.log);
    const bans = [...input].filter((b) => skipped.check(b) !== null);
    skipped.done();
    this.bans.clear();
    for (const b of bans) if (b.until === null || b.until > now) this.bans.set(b.address, b.until);
    this.log.info({ count: this.bans.size }, 'dry-run: would load bans');
  }

  async add(bans: KernelBan[], now: number): Promise<void> {
    checkBatch(bans);
    const live = bans.filter((b) => b.until === null || b.until > now);
    for (const b of live) this.bans.set(b.address, b.until);
    if (live.length) this.log.info({ addresses: live.map((b) => b.address) }, 'dry-run: would ban');
  }

  async remove(bans: Pick<KernelBan, 'address' | 'family'>[]): Promise<void> {
    checkBatch(bans);
    for (const b of bans) this.bans.delete(b.address);
    if (bans.length) this.log.info({ addresses: bans.map((b) => b.address) }, 'dry-run: would unban');
  }

  keepsOrder(): boolean { return false; }

  async inspect(): Promise<KernelView> { return { drifts: [], counts: [] }; }

  /** Like ipset, a ban whose time is over is gone by itself. */
  async list(): Promise<string[]> {
    const now = this.clock();
    return [...this.bans].filter(([, until]) => until === null || until > now).map(([a]) => a);
  }

  async listBans(): Promise<ListedBan[]> {
    const now = this.clock();
    return [...this.bans].filter(([, until]) => until === null || until > now)
      .map(([address, until]) => ({ address, family: familyOf(address), timeoutSec: until === null ? 0 : Math.ceil((until - now) / 1000) }));
  }

  setTarget(): void { /* no rules */ }
  setSetSize(): void { /* no sets */ }

  async shutdown(): Promise<void> {}
}
