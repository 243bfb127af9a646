import type { Logger } from '../log';
import type { Family } from '../net/ip';
import { ensureChain, familyBinaries, targetSpec, type FamilyTools } from './chain';
import type { IptablesTools } from './detect';
import { checkBatch, CommandError, requireBinaries, run } from './exec';
import { isSetFull, loadDroppingRefused, refusedLine, splitLines, type RefusedLine } from './ipset-load';

export { splitLines } from './ipset-load';
import { IpsetShell } from './ipset-shell';
import { IpsetBulk } from './ipset-native';
import { addLines, addScript, IPSET_MAX_TIMEOUT, ipsetSaveMember } from './ipset-text';
import { commandLines } from './exec-lines';
import { createLine, setSlots, slotFor, type SetSlot } from './ipset-sets';
import { SetFull } from './set-full';
import { SET_SIZE_DEFAULT } from './set-size';

export { IPSET_MAX_TIMEOUT, ipsetTimeout, parseIpsetSave } from './ipset-text';
import { backendTools, type RulesetCache } from './monitor';
import type { BanLineFormat, BanLines, BanSource, FirewallBackend, FirewallOptions, KernelBan, ListedBan } from './types';
import { inspectIpset, parseSetHeaders, setView, type KernelView } from './verify';

/** Above this many lines a batch goes through the bulk loader rather than the interactive shell. */
const SHELL_MAX_LINES = 2000;

/** Default backend: per family a `hash:ip` set of hosts and a `hash:net` set of ranges, with timeouts, each matched by one rule in the chain. */
export class IpsetBackend implements FirewallBackend {
  readonly name = 'ipset';
  readonly verifiable = true;
  readonly keepsBanTimes = true;
  readonly netns: string | undefined;
  readonly families: readonly Family[];
  private readonly fams: FamilyTools[];
  /** Per family: the ranges' hash:net set and the hosts' hash:ip set (ipset-sets.ts). */
  private readonly slots: SetSlot[];
  private readonly shell: IpsetShell | null;
  /** Big batches and full loads: the native loader (native/ipset-load.c), else `ipset restore`. */
  private readonly bulk: IpsetBulk;
  /** Sets at their maxelem: bans that do not fit, counted and said once. */
  private readonly full: SetFull;
  /** The filter tables for the firewall check, listed again only when they changed. */
  private readonly ruleset: RulesetCache;
  /** Set by init, cleared by the next call: sets and chains were made a moment ago. */
  private fresh = false;
  /** The filter tables flavour detection read just before us, for the first init only. */
  private detected: IptablesTools['filterRules'];

  constructor(
    private opts: FirewallOptions,
    tools: IptablesTools,
    private readonly log: Logger,
  ) {
    ({ netns: this.netns, fams: this.fams, families: this.families, ruleset: this.ruleset } = backendTools(opts, tools));
    this.detected = tools.filterRules;
    this.shell = IpsetShell.available() ? new IpsetShell(opts.netns) : null;
    this.bulk = new IpsetBulk(opts.netns);
    setSlots(opts.chain, [4, 6]); // every name checked, whichever families run
    this.slots = setSlots(opts.chain, this.families);
    this.full = new SetFull(log, this.slots, () => this.setSize);
  }

  /** The most elements each set of hosts holds (set_size): sets are made with it. */
  private get setSize(): number {
    return this.opts.setSize ?? SET_SIZE_DEFAULT;
  }

  /** The hosts' live set of a family. */
  setName(f: Family): string {
    return `${this.opts.chain}-v${f}`;
  }

  /** One match rule per set of the family (ranges first), RETURN last. */
  private chainContent(ft: FamilyTools): string[] {
    return [
      ...this.slots.filter((s) => s.family === ft.family).map((s) => `-A ${this.opts.chain} -m set --match-set ${s.live} src -j ${targetSpec(this.opts.target, ft.family)}`),
      `-A ${this.opts.chain} -j RETURN`,
    ];
  }

  private ipset(args: string[], input?: string | Iterable<string>): Promise<{ stdout: string; stderr: string }> {
    return run('ipset', args, { input, netns: this.opts.netns, timeoutMs: 300_000 });
  }

  async init(): Promise<void> {
    requireBinaries(['ipset', ...familyBinaries(this.fams, this.opts.netns)]);
    if (!this.bulk.native) this.log.info('native ipset loader not built (npm run build with gcc): big batches and full loads use ipset restore, about 5 times slower');
    // The sets, then the chains (their rule names the sets, so it needs them first); the two
    // families' chains at once (separate tables, a process start each step).
    await this.createMissingSets();
    // The chain's content is fixed for this backend, so rewriting it (atomically) also repairs it.
    // Flavour detection has just read the filter tables (auto): no second look, the first time.
    const known = this.detected;
    this.detected = undefined;
    await Promise.all(this.fams.map((ft) => ensureChain(ft, this.opts, this.log, this.chainContent(ft), true, known?.[ft.family])));
    this.shell?.start();
    this.fresh = true;
  }

  /**
   * Make the live sets if they are missing. Usually one command (through the live shell when
   * there is one): `create -exist` leaves an identical set alone. An existing set with other
   * parameters (an older maxelem) refuses it; then only the missing ones are made, and
   * setAll's swap replaces the other one without a gap.
   */
  private async createMissingSets(): Promise<void> {
    try {
      await this.command(this.slots.map((s) => createLine(s.live, s, s.range ? 64 : 4096, this.setSize)));
      return;
    } catch { /* a set with other parameters: look first */ }
    const existing = await this.setNames();
    const create = this.slots.filter((s) => !existing.has(s.live));
    if (create.length) {
      await this.ipset(['restore', '-exist'], create.map((s) => createLine(s.live, s, s.range ? 64 : 4096, this.setSize)).join('\n') + '\n');
    }
  }

  /** Each live set that exists: true when it is of the type this backend makes (a swap needs that). */
  private async liveSets(): Promise<Map<string, boolean>> {
    const headers = parseSetHeaders(this.shell ? await this.shell.query('list -t') : (await this.ipset(['list', '-t'])).stdout);
    const out = new Map<string, boolean>();
    for (const s of this.slots) if (headers.has(s.live)) out.set(s.live, !setView(headers, s.live, s.family, s.range).drift);
    return out;
  }

  private async setNames(): Promise<Set<string>> {
    return new Set((await this.ipset(['list', '-n'])).stdout.split('\n'));
  }

  async setAll(source: BanSource, now: number): Promise<void> {
    // The native loader loads a slice while the store renders the next (BENCHMARKS.md, Findings).
    const sliced = this.bulk.native && source.renderSliced?.(this.lineFormat, this.families);
    if (sliced) return this.load([sliced.slices[Symbol.iterator]()]);
    const lines = source.render?.(this.lineFormat);
    if (lines) return this.setAllLines(lines);
    // The loaders share one stream of chunks, each taking the next as soon as its pipe
    // drains. An address that may not be banned is left out (and logged) as the stream is made.
    const adds = addScript(source, now, (address, f) => slotFor(this.slots, address, f)!.scratch, this.families.includes(6), this.log);
    const shared: Iterator<string> = { next: () => adds.next() };
    await this.load(Array.from({ length: this.bulk.loaders }, () => shared));
  }

  /** A full load that drops the lines the kernel refuses, and those of a full set (see loadDroppingRefused). */
  private async load(sources: Iterator<string | Buffer>[]): Promise<void> {
    // The native loader takes no create lines: the sets are made before it runs.
    const head = this.bulk.native ? () => '' : () => this.createsText();
    await loadDroppingRefused(sources, this.bulk.loaders, head, (inputFor) => this.replaceSets(inputFor), this.log, this.full.bounds);
    this.full.loaded();
  }

  /** The scratch sets' names in each ban's line: the store renders the adds of a full load. */
  get lineFormat(): BanLineFormat {
    const all = setSlots(this.opts.chain, [4, 6]);
    const [host, range] = [all.filter((s) => !s.range), all.filter((s) => s.range)];
    return {
      prefix: { 4: `add ${host[0].scratch} `, 6: `add ${host[1].scratch} ` }, rangePrefix: { 4: `add ${range[0].scratch} `, 6: `add ${range[1].scratch} ` },
      infix: ' timeout ', maxSeconds: IPSET_MAX_TIMEOUT,
    };
  }

  /** setAll for lines rendered in lineFormat: each loader takes its share of each family's text. */
  private async setAllLines(lines: BanLines): Promise<void> {
    const shares = this.families.map((f) => splitLines(lines[f], this.bulk.loaders));
    await this.load(Array.from({ length: this.bulk.loaders }, (_, i) => shares.map((parts) => parts[i]).filter((t) => t.length > 0).map((t) => `${t}\n`)[Symbol.iterator]()));
  }

  /** The scratch sets' create lines (every `ipset restore` loader starts with them). */
  private createsText(): string {
    return this.slots.map((s) => createLine(s.scratch, s, s.range ? 64 : 1024, this.setSize)).join('\n') + '\n';
  }

  /**
   * Load fresh scratch sets, then swap them in: the live sets (and the rules using them) never
   * see a gap. `destroy` first clears a scratch set a crash may have left (-exist: absent is
   * fine); if a live set is gone (a firewall wipe), the loaded one simply takes its name.
   * inputFor(i) is what loader i writes after the create lines.
   */
  private async replaceSets(inputFor: (loader: number) => Iterable<string | Buffer>): Promise<RefusedLine[]> {
    // Right after init the sets and chains are known to be there: no second look (each
    // process start costs tens of ms once the daemon holds 100k bans in memory).
    const fresh = this.fresh;
    this.fresh = false;
    const existing = fresh ? new Map(this.slots.map((s) => [s.live, true])) : await this.liveSets();
    const scratch = this.slots.map((s) => `destroy ${s.scratch}`);
    // When the live sets are there, the chain and the jump (a reload may have removed them) are
    // made again before the load, so the bans the sets still hold drop packets meanwhile.
    const early = !fresh && this.slots.every((s) => existing.get(s.live) === true);
    if (early) for (const ft of this.fams) await ensureChain(ft, this.opts, this.log, this.chainContent(ft), true);
    await this.command(scratch);
    try {
      // `ipset restore` batches its adds only into a set it created in that run, so each such
      // loader starts with the create lines (-exist: the second keeps the set; the hash grows by
      // itself: docs/notes/measurements.md, ipset loads). The native loader batches into any set.
      const creates = this.createsText();
      if (this.bulk.native) await this.command(creates.trimEnd().split('\n'));
      const input = this.bulk.native ? (rest: Iterable<string | Buffer>) => rest : function* (rest: Iterable<string | Buffer>): Generator<string | Buffer> { yield creates; yield* rest; };
      // Every loader settles (a failed one ends a shared stream for the others) before any cleanup.
      const loads = await Promise.allSettled(Array.from({ length: this.bulk.loaders }, (_, i) => this.bulk.run(input(inputFor(i)))));
      const refused: RefusedLine[] = [];
      for (const [loader, l] of loads.entries()) {
        if (l.status === 'fulfilled') continue;
        const r = refusedLine(loader, l.reason);
        if (!r) throw l.reason;
        refused.push(r);
      }
      if (refused.length) {
        await this.command(scratch).catch(() => {});
        return refused;
      }
    } catch (err) {
      await this.command(scratch).catch(() => {});
      throw err;
    }
    await this.command(this.slots.flatMap(({ scratch: tmp, live }) => {
      const fit = existing.get(live);
      return fit === undefined ? [`rename ${tmp} ${live}`] : fit ? [`swap ${tmp} ${live}`, `destroy ${tmp}`] : [];
    }));
    // A live set of another type (made by someone after a wipe) cannot be swapped: it is
    // destroyed, which the kernel allows only when no rule uses it, and the loaded one renamed.
    for (const { scratch: tmp, live } of this.slots.filter((x) => existing.get(x.live) === false)) {
      await this.ipset(['restore'], `destroy ${live}\nrename ${tmp} ${live}\n`).catch(async (err: unknown) => {
        await this.command([`destroy ${tmp}`]).catch(() => {});
        throw err;
      });
    }
    if (!fresh && !early) for (const ft of this.fams) await ensureChain(ft, this.opts, this.log, this.chainContent(ft), true);
    return [];
  }

  /** A few lines of our own (sets made, swapped, destroyed): through the live shell, no process start. */
  private async command(lines: string[]): Promise<void> {
    if (this.shell) return this.shell.run(lines);
    await this.ipset(['restore', '-exist'], lines.join('\n') + '\n');
  }

  async add(bans: KernelBan[], now: number): Promise<void> {
    this.fresh = false;
    checkBatch(bans);
    // -exist: adding a present address refreshes its timeout instead of failing.
    const lines = this.slots.flatMap((s) => addLines(s.live, bans.filter((b) => slotFor(this.slots, b.address, b.family) === s), now));
    await this.apply(lines);
  }

  async remove(bans: Pick<KernelBan, 'address' | 'family'>[]): Promise<void> {
    this.fresh = false;
    checkBatch(bans);
    const lines = bans.filter((b) => this.families.includes(b.family)).map((b) => `del ${slotFor(this.slots, b.address, b.family)!.live} ${b.address}`); // checked just above
    await this.apply(lines);
  }

  keepsOrder(count: number): boolean { return this.shell !== null && count <= SHELL_MAX_LINES; }

  /** Small batches (every ban as it happens) through the live shell; big ones in one bulk run; a full set's batch line by line. */
  private async apply(lines: string[]): Promise<void> {
    if (lines.length === 0) return;
    try {
      if (this.shell && lines.length <= SHELL_MAX_LINES) return await this.shell.run(lines);
      await this.bulk.run(lines.join('\n') + '\n');
    } catch (err) {
      if (!(err instanceof CommandError) || !isSetFull(err.stderr)) throw err;
      await this.full.retry(lines, (input) => this.ipset(['-exist', '-'], input));
    }
  }

  async list(): Promise<string[]> {
    const out: string[] = [];
    for await (const { address } of await this.listBans()) out.push(address);
    return out;
  }

  /** `ipset save` of each set (`add <set> <address> timeout <seconds>` per member), parsed line by line as it comes. */
  async listBans(): Promise<AsyncIterable<ListedBan>> {
    const [slots, netns] = [this.slots, this.opts.netns];
    return (async function* () {
      for (const s of slots) for await (const line of commandLines('ipset', ['save', s.live], { netns })) { const b = ipsetSaveMember(line, s.live, s.family, s.range); if (b) yield b; }
    })();
  }

  /** Every set's header through the live shell (no process start), and each family's filter table. */
  inspect(): Promise<KernelView> {
    return inspectIpset({
      fams: this.fams, chain: this.opts.chain, ports: this.opts.ports ?? '', tables: () => this.ruleset.tables(), slots: this.slots,
      rules: (ft) => this.chainContent(ft), headers: () => (this.shell ? this.shell.query('list -t') : this.ipset(['list', '-t']).then((r) => r.stdout)),
    });
  }

  setTarget(target: FirewallOptions['target']): void {
    this.opts = { ...this.opts, target };
  }

  setSetSize(setSize: number): void {
    this.opts = { ...this.opts, setSize };
  }

  async shutdown(): Promise<void> {
    // Bans stay in the kernel (with their timeouts) while the daemon is down.
    this.shell?.close();
    this.bulk.close();
    this.ruleset.close();
  }
}
