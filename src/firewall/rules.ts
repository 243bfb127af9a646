import type { Logger } from '../log';
import { canonicalIp, type Family } from '../net/ip';
import { ensureChain, familyBinaries, listRules, restoreFilter, targetSpec, type FamilyTools } from './chain';
import type { IptablesTools } from './detect';
import { checkBatch, checkedIp, checkedTarget, CommandError, isRange, requireBinaries, SkipLog } from './exec';
import { canonicalTarget } from '../net/range';
import type { FirewallBackend, FirewallOptions, KernelBan, ListedBan } from './types';
import { backendTools, type RulesetCache } from './monitor';
import { inspectRules, type KernelView } from './verify';

/** Rules the kernel may refuse in one full load before it fails after all. */
const MAX_REFUSED = 64;

/**
 * The original Ampere's way: one `-s <ip>/32 -j <target>` rule per host in the chain, before
 * a final RETURN. Rules have no timeout: the daemon calls remove() when a ban ends.
 * Linear in the number of bans per packet; kept for setups without ipset.
 */
export class RulesBackend implements FirewallBackend {
  readonly name = 'rules';
  /**
   * Mirror of the chain: address -> rule text after `-A <chain> ` (exactly as iptables prints
   * it, so `-D` matches even for rules written with another target). It is what keeps a
   * host from getting two rules, the original's defect.
   */
  private readonly present = new Map<string, string>();
  readonly verifiable = true;
  readonly keepsBanTimes = false;
  readonly netns: string | undefined;
  readonly families: readonly Family[];
  private readonly fams: FamilyTools[];
  /** The filter tables for the firewall check, listed again only when they changed. */
  private readonly ruleset: RulesetCache;

  constructor(
    private opts: FirewallOptions,
    tools: IptablesTools,
    private readonly log: Logger,
  ) {
    ({ netns: this.netns, fams: this.fams, families: this.families, ruleset: this.ruleset } = backendTools(opts, tools));
  }

  /** A host's rule (`-s <ip>/32`), or a range's (`-s <network>/<prefix>`, as iptables prints both). */
  private spec(address: string, f: Family): string {
    const source = isRange(address) ? checkedTarget(address, f) : `${checkedIp(address, f)}/${f === 4 ? 32 : 128}`;
    return `-s ${source} -j ${targetSpec(this.opts.target, f)}`;
  }

  /** Forget one family's mirror and refill it from `-A <chain> ...` lines. */
  private mirror(f: Family, lines: string[]): void {
    for (const [a] of this.present) if (canonicalTarget(a)?.family === f) this.present.delete(a);
    const head = `-A ${this.opts.chain} `;
    for (const line of lines) {
      const m = /^-s (\S+)\/(\d{1,3}) /.exec(line.slice(head.length));
      if (!m || !line.startsWith(head)) continue;
      const host = m[2] === (f === 4 ? '32' : '128');
      const c = host ? canonicalIp(m[1]) : canonicalTarget(`${m[1]}/${m[2]}`);
      if (c && c.family === f) this.present.set(c.address, line.slice(head.length));
    }
  }

  private async reread(ft: FamilyTools): Promise<void> {
    this.mirror(ft.family, await listRules(ft, this.opts.netns, this.opts.chain));
  }

  async init(): Promise<void> {
    requireBinaries(familyBinaries(this.fams, this.opts.netns));
    for (const ft of this.fams) {
      // Existing rules are bans from before a restart: keep them (setAll decides), and know them.
      await ensureChain(ft, this.opts, this.log, [`-A ${this.opts.chain} -j RETURN`], false);
      await this.reread(ft);
    }
  }

  async setAll(input: Iterable<KernelBan>, now: number): Promise<void> {
    // What may not be banned is left out and logged: one bad stored row must not sink the load.
    const skipped = new SkipLog(this.log);
    const bans = [...input].filter((b) => skipped.check(b) !== null);
    skipped.done();
    for (const ft of this.fams) {
      const f = ft.family;
      const live = unique(bans.filter((b) => b.family === f && (b.until === null || b.until > now)));
      const specs = live.map((b) => [b.address, this.spec(b.address, f)] as const);
      await this.loadChain(ft, specs);
      this.mirror(f, []);
      for (const [a, s] of specs) this.present.set(a, s);
    }
  }

  /**
   * One transaction: `:chain` (with --noflush) creates or flushes the chain, then all rules and
   * the final RETURN; the jump is re-made too if a firewall reload removed it. A rule the kernel
   * refuses (`Error occurred at line: N`) would fail them all: it is dropped (logged) and the
   * rest loaded again, at most MAX_REFUSED times. specs loses the dropped rules. A refusal
   * iptables-nft reports only at COMMIT (a missing jump target) names no rule: the load fails.
   */
  private async loadChain(ft: FamilyTools, specs: (readonly [string, string])[]): Promise<void> {
    const c = this.opts.chain;
    for (let dropped = 0; ;) {
      try {
        await ensureChain(ft, this.opts, this.log, [...specs.map(([, s]) => `-A ${c} ${s}`), `-A ${c} -j RETURN`], true);
        return;
      } catch (err) {
        const m = err instanceof CommandError ? /Error occurred at line: (\d+)/.exec(err.stderr) : null;
        // Line 1 is `*filter`, line 2 `:chain`, then the rules in order.
        const k = m ? Number(m[1]) - 3 : -1;
        if (k < 0 || k >= specs.length || ++dropped > MAX_REFUSED) throw err;
        this.log.error({ rule: `-A ${c} ${specs[k][1]}`, refused: (err as CommandError).stderr.split('\n')[0] }, 'full load: the kernel refused a rule; loading the other bans without it');
        specs.splice(k, 1);
      }
    }
  }

  async add(bans: KernelBan[], now: number): Promise<void> {
    checkBatch(bans);
    for (const ft of this.fams) {
      const f = ft.family;
      const fresh = unique(bans.filter((b) => b.family === f && (b.until === null || b.until > now) && !this.present.has(b.address)));
      if (!fresh.length) continue;
      const specs = fresh.map((b) => [b.address, this.spec(b.address, f)] as const);
      // Insert at the top so the final RETURN stays last.
      await restoreFilter(ft, specs.map(([, s]) => `-I ${this.opts.chain} 1 ${s}`), this.opts.netns);
      for (const [a, s] of specs) this.present.set(a, s);
    }
  }

  async remove(bans: Pick<KernelBan, 'address' | 'family'>[]): Promise<void> {
    checkBatch(bans);
    for (const ft of this.fams) {
      const mine = bans.filter((b) => b.family === ft.family);
      if (!mine.length) continue;
      try {
        await this.deletePresent(ft, mine);
      } catch {
        // One absent rule fails the whole transaction: someone changed the chain behind our
        // back. Read it again and retry with what is really there.
        await this.reread(ft);
        await this.deletePresent(ft, mine);
      }
    }
  }

  private async deletePresent(ft: FamilyTools, bans: Pick<KernelBan, 'address'>[]): Promise<void> {
    const gone = [...new Set(bans.map((b) => b.address))].filter((a) => this.present.has(a));
    if (!gone.length) return;
    await restoreFilter(ft, gone.map((a) => `-D ${this.opts.chain} ${this.present.get(a)}`), this.opts.netns);
    for (const a of gone) this.present.delete(a);
  }

  /** Every batch waits for the one before (one iptables process each). */
  keepsOrder(): boolean { return false; }

  async list(): Promise<string[]> {
    for (const ft of this.fams) await this.reread(ft);
    return [...this.present.keys()];
  }

  /** Each family's filter table: the chain holds one ban rule per host, then RETURN. */
  inspect(): Promise<KernelView> {
    return inspectRules({ fams: this.fams, chain: this.opts.chain, ports: this.opts.ports ?? '', tables: () => this.ruleset.tables(), target: this.opts.target });
  }

  /** The chain's ban rules; a rule keeps no time (timeoutSec null). */
  async listBans(): Promise<ListedBan[]> {
    const out: ListedBan[] = [];
    for (const address of await this.list()) {
      const c = canonicalIp(address);
      if (c && c.address === address) out.push({ address, family: c.family, timeoutSec: null });
    }
    return out;
  }

  setTarget(target: FirewallOptions['target']): void {
    this.opts = { ...this.opts, target };
  }

  setSetSize(): void { /* no sets */ }

  async shutdown(): Promise<void> {
    // Rules stay in the kernel while the daemon is down.
    this.ruleset.close();
  }
}

function unique<T extends { address: string }>(bans: T[]): T[] {
  const seen = new Set<string>();
  return bans.filter((b) => !seen.has(b.address) && (seen.add(b.address), true));
}
