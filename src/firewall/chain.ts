import type { Logger } from '../log';
import type { Family } from '../net/ip';
import type { IptablesTools } from './detect';
import { run } from './exec';
import { jumpOk, jumpRepair, jumpState, type JumpState } from './jump';
import type { FirewallOptions } from './types';

/** The two binaries one family needs. */
export interface FamilyTools {
  family: Family;
  iptables: string;
  restore: string;
}

/** The tools of each family a backend enforces: IPv4 alone when ipv6 is false. */
export function familyTools(t: IptablesTools, ipv6 = true): FamilyTools[] {
  const v4: FamilyTools = { family: 4, iptables: t.iptables, restore: t.iptablesRestore };
  return ipv6 ? [v4, { family: 6, iptables: t.ip6tables, restore: t.ip6tablesRestore }] : [v4];
}

/** The binaries a backend needs for these families (ip too when it runs in a namespace). */
export function familyBinaries(fams: FamilyTools[], netns?: string): string[] {
  return [...fams.flatMap((ft) => [ft.iptables, ft.restore]), ...(netns ? ['ip'] : [])];
}

/** Target arguments as `iptables -S` prints them back (so -D lines match exactly). */
export function targetSpec(target: FirewallOptions['target'], family: Family): string {
  if (target === 'DROP') return 'DROP';
  return `REJECT --reject-with ${family === 4 ? 'icmp-port-unreachable' : 'icmp6-port-unreachable'}`;
}

/** `iptables -S [chain]` of the filter table: `-P`/`-N`/`-A` lines only (no warnings/comments). */
export async function listRules(ft: FamilyTools, netns?: string, chain?: string): Promise<string[]> {
  const { stdout } = await run(ft.iptables, ['-w', '-t', 'filter', '-S', ...(chain ? [chain] : [])], { netns });
  return stdout.split('\n').filter((l) => l.startsWith('-'));
}

/**
 * One atomic transaction on the filter table; --noflush keeps every other chain as it is.
 * Note: with --noflush a `:chain` line flushes that (existing) chain, in both flavours.
 */
export async function restoreFilter(ft: FamilyTools, lines: string[], netns?: string): Promise<void> {
  const input = `*filter\n${lines.join('\n')}\nCOMMIT\n`;
  await run(ft.restore, ['-w', '--noflush'], { input, netns, timeoutMs: 300_000 });
}

/**
 * Make sure the chain exists and is jumped to: Ampere's own jump (src/firewall/jump.ts; made
 * again for other `ports`), unless the operator placed one of their own anywhere (e.g. `-A
 * INPUT -i eth1 -j ampere`), which is respected. Also repairs a wiped firewall (a reload that
 * flushed everything), which is why setAll runs it too.
 * `content`: rules to write into the chain; written when the chain is new, or always if `rewrite`.
 * All changes go in one transaction per family.
 */
export async function ensureChain(
  ft: FamilyTools,
  opts: FirewallOptions,
  log: Logger,
  content: string[],
  rewrite: boolean,
  /** The filter table as just read elsewhere (flavour detection): no listing of our own. */
  known?: string[],
): Promise<void> {
  const { chain, netns } = opts;
  const ports = opts.ports ?? '';
  let exists = true;
  let state: JumpState;
  if (known) {
    exists = known.includes(`-N ${chain}`);
    state = jumpState(known, chain, ports);
  } else {
    // Cheap look first: INPUT is short, while the whole table may hold 100k per-host rules.
    state = jumpState(await listRules(ft, netns, 'INPUT'), chain, ports);
    if (!jumpOk(state)) {
      const all = await listRules(ft, netns);
      exists = all.includes(`-N ${chain}`);
      state = jumpState(all, chain, ports);
    }
  }
  const tx: string[] = [];
  if (!exists || rewrite) tx.push(`:${chain} - [0:0]`, ...content);
  const jump = jumpRepair(state);
  tx.push(...jump);
  if (tx.length) await restoreFilter(ft, tx, netns);
  if (!exists) log.info({ chain, family: ft.family, tool: ft.iptables }, 'created firewall chain');
  if (jump.length) log.info({ chain, family: ft.family, tool: ft.iptables, ports: ports || 'all', changes: jump }, jumpMessage(chain, state));
}

function jumpMessage(chain: string, s: JumpState): string {
  if (s.stale.length === 0 && s.missing.length === 1) return `no rule jumps to ${chain}: inserted ${s.missing[0].replace('-A INPUT ', '-I INPUT 1 ')}`;
  return s.stale.length ? `jump to ${chain} made for the configured ports` : `no rule jumps to ${chain}: inserted one for TCP and one for UDP to the configured ports`;
}
