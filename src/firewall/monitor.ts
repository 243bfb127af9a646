import { spawn, type ChildProcess } from 'node:child_process';
import type { Family } from '../net/ip';
import { familyTools, listRules, type FamilyTools } from './chain';
import type { IptablesTools } from './detect';
import { checkChainName, which, inNetns } from './exec';
import { LegacySignature } from './legacy-sig';
import type { FirewallOptions } from './types';

/** A listing is trusted only once the monitor has been running this long (it prints nothing when subscribed). */
const SETTLE_MS = 500;
/** A monitor that exited is started again after this. */
const RESTART_MS = 5_000;
/** A legacy listing kept on its signature is still read again this often (a header-only signature may miss an equal-size edit). */
const LEGACY_MAX_AGE_MS = 30_000;
/**
 * The monitor, ended when the daemon is gone: its stdin is the daemon's pipe, and EOF there
 * (a stop, or a SIGKILL) kills it, which an idle monitor would otherwise never notice. The
 * reader gets the pipe as fd 3 (a background job's own stdin is /dev/null).
 * stdbuf -oL: each event line leaves at once, not when stdio's buffer fills.
 */
const MONITOR_SCRIPT = 'exec 3<&0; stdbuf -oL xtables-monitor -e & m=$!; { read _ <&3; kill $m 2>/dev/null; } & wait $m';

/**
 * The filter tables as the firewall check reads them (`iptables -S`, each family), listed
 * again only when something changed. With iptables-nft one long-lived `xtables-monitor -e`
 * prints a NEWGEN line for every change of the kernel's ruleset (any tool's, any table), so
 * an unchanged ruleset costs the check no process start; with legacy iptables a live helper's
 * signature of the tables (LegacySignature) does the same; without either every call lists.
 * Only our own fixed command line is spawned; its output is only counted, never parsed further.
 */
export class RulesetCache {
  private proc: ChildProcess | null = null;
  private startedAt = 0;
  private restartAt = 0;
  /** NEWGEN lines seen: the ruleset changed that many times since the monitor started. */
  private changes = 0;
  private cached: { changes: number; tables: string[][] } | null = null;
  private closed = false;
  private readonly legacy: LegacySignature | null;
  private legacyCached: { sig: string; at: number; tables: string[][] } | null = null;

  constructor(
    private readonly fams: FamilyTools[],
    private readonly netns: string | undefined,
    private readonly watch: boolean,
    /** Legacy iptables: tables kept while the helper's signature stays the same. */
    legacy = false,
  ) {
    this.legacy = legacy ? new LegacySignature(netns) : null;
  }

  /** Each family's `iptables -S` of the filter table, in the order of fams. */
  async tables(): Promise<string[][]> {
    if (this.legacy && !this.closed) return this.legacyTables(this.legacy);
    const trusted = this.ensure();
    if (trusted && this.cached && this.cached.changes === this.changes) return this.cached.tables;
    const changes = this.changes;
    const tables = await Promise.all(this.fams.map((ft) => listRules(ft, this.netns)));
    // Kept only when read under a running monitor and nothing changed meanwhile.
    this.cached = trusted && this.proc && changes === this.changes ? { changes, tables } : null;
    return tables;
  }

  /** The signature is read before the listing, so a kept listing is never older than its signature. */
  private async legacyTables(sig: LegacySignature): Promise<string[][]> {
    const now = await sig.query();
    const c = this.legacyCached;
    if (now !== null && c && c.sig === now && Date.now() - c.at < LEGACY_MAX_AGE_MS) return c.tables;
    const at = Date.now();
    const tables = await Promise.all(this.fams.map((ft) => listRules(ft, this.netns)));
    this.legacyCached = now === null ? null : { sig: now, at, tables };
    return tables;
  }

  close(): void {
    this.closed = true;
    this.legacy?.close();
    const p = this.proc;
    this.proc = null;
    p?.stdin?.end();
    p?.kill();
  }

  /** Starts the monitor if it should run; true when its word can be trusted now. */
  private ensure(): boolean {
    if (!this.watch || this.closed) return false;
    if (!this.proc && Date.now() >= this.restartAt) this.spawnMonitor();
    return this.proc !== null && Date.now() - this.startedAt >= SETTLE_MS;
  }

  private spawnMonitor(): void {
    if (!which('xtables-monitor') || !which('stdbuf')) { this.restartAt = Infinity; return; }
    const cmd = ['sh', '-c', MONITOR_SCRIPT];
    const [file, args] = inNetns(this.netns, cmd[0], cmd.slice(1));
    const p = spawn(file, args, { stdio: ['pipe', 'pipe', 'ignore'] });
    this.proc = p;
    this.startedAt = Date.now();
    this.cached = null;
    // The monitor must not keep the daemon alive.
    p.unref();
    for (const s of [p.stdin, p.stdout] as unknown as { unref?: () => void }[]) s?.unref?.();
    p.stdin!.on('error', () => {});
    p.stdout!.setEncoding('utf8');
    let tail = '';
    p.stdout!.on('data', (d: string) => {
      const text = tail + d;
      const lines = text.split('\n');
      tail = lines.pop() ?? '';
      // Every line is an event (a NEWGEN, or a change whose NEWGEN is still to come).
      this.changes += lines.length;
      if (tail.length > 65536) { this.changes++; tail = ''; }
    });
    const gone = () => {
      if (this.proc !== p) return;
      this.proc = null;
      this.cached = null;
      this.restartAt = Date.now() + RESTART_MS;
    };
    p.on('error', gone);
    p.on('exit', gone);
  }
}

/** What both kernel backends set up from the options: the chain name checked, the tools per family, the ruleset cache. */
export function backendTools(opts: FirewallOptions, tools: IptablesTools): { netns: string | undefined; fams: FamilyTools[]; families: Family[]; ruleset: RulesetCache } {
  checkChainName(opts.chain);
  const fams = familyTools(tools, opts.ipv6 !== false);
  return { netns: opts.netns, fams, families: fams.map((ft) => ft.family), ruleset: new RulesetCache(fams, opts.netns, tools.flavour === 'nft', tools.flavour === 'legacy') };
}
