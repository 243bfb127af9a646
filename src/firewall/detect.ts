import { run, which } from './exec';
import type { FirewallOptions } from './types';

export type Flavour = 'nft' | 'legacy';

export interface IptablesTools {
  flavour: Flavour;
  iptables: string;
  ip6tables: string;
  iptablesRestore: string;
  ip6tablesRestore: string;
  /** One line saying why this flavour was chosen (the daemon logs it). */
  reason: string;
  /**
   * The filter table of the chosen flavour as detection read it (`iptables -S` form), per
   * family, when it was read at all (auto): init uses it instead of listing the table again.
   */
  filterRules?: { 4?: string[]; 6?: string[] };
}

export function toolsFor(flavour: Flavour, reason: string): IptablesTools {
  return {
    flavour,
    iptables: `iptables-${flavour}`,
    ip6tables: `ip6tables-${flavour}`,
    iptablesRestore: `iptables-${flavour}-restore`,
    ip6tablesRestore: `ip6tables-${flavour}-restore`,
    reason,
  };
}

function binariesOf(flavour: Flavour): string[] {
  const t = toolsFor(flavour, '');
  return [t.iptables, t.ip6tables, t.iptablesRestore, t.ip6tablesRestore, `iptables-${flavour}-save`, `ip6tables-${flavour}-save`];
}

function missingOf(flavour: Flavour): string[] {
  return binariesOf(flavour).filter((b) => !which(b));
}

/**
 * The filter table of an `iptables-save` output in `iptables -S` form: `:name - [0:0]`
 * becomes `-N name`, `:INPUT ACCEPT [0:0]` becomes `-P INPUT ACCEPT`, rules stay as they are.
 */
export function filterRulesOfSave(save: string): string[] {
  const out: string[] = [];
  let inFilter = false;
  for (const line of save.split('\n')) {
    if (line.startsWith('*')) { inFilter = line === '*filter'; continue; }
    if (!inFilter) continue;
    if (line === 'COMMIT') { inFilter = false; continue; }
    if (line.startsWith(':')) {
      const [name, policy] = line.slice(1).split(' ');
      out.push(policy === '-' ? `-N ${name}` : `-P ${name} ${policy}`);
    } else if (line.startsWith('-A ')) out.push(line);
  }
  return out;
}

interface FlavourLook { rules: number; filter: NonNullable<IptablesTools['filterRules']> }

/** Rule lines (`-A ...`) in the IPv4 + IPv6 save output of one flavour (0 when a save fails), and its filter tables. */
async function lookAt(flavour: Flavour, netns?: string): Promise<FlavourLook> {
  // Both families at once: each save is a process start, and they do not depend on each other.
  const looks = await Promise.all([`iptables-${flavour}-save`, `ip6tables-${flavour}-save`].map(async (save) => {
    try {
      const { stdout } = await run(save, [], { netns, timeoutMs: 30_000 });
      let n = 0;
      for (const line of stdout.split('\n')) if (line.startsWith('-A')) n++;
      return { n, filter: filterRulesOfSave(stdout) };
    } catch {
      // e.g. legacy modules not loadable in a container: that flavour holds no rules here.
      return { n: 0, filter: undefined };
    }
  }));
  return { rules: looks[0].n + looks[1].n, filter: { 4: looks[0].filter, 6: looks[1].filter } };
}

/**
 * Choose the iptables flavour. Rules written with one flavour are invisible to the other,
 * so in a container we must use whatever the host uses. Like kubernetes' iptables-wrapper:
 * the flavour holding more rules wins; on a tie (e.g. no rules at all) nft, the modern default.
 */
export async function detectIptables(opts: Pick<FirewallOptions, 'iptables' | 'netns'>): Promise<IptablesTools> {
  const want = opts.iptables ?? 'auto';
  if (want === 'nft' || want === 'legacy') {
    const missing = missingOf(want);
    if (missing.length) throw new Error(`iptables=${want} requested but ${missing.join(', ')} not found: install iptables`);
    return toolsFor(want, `configured iptables=${want}`);
  }
  const haveNft = missingOf('nft').length === 0;
  const haveLegacy = missingOf('legacy').length === 0;
  if (!haveNft && !haveLegacy) {
    throw new Error('iptables not found: install iptables (need iptables-nft or iptables-legacy with their -save/-restore tools)');
  }
  if (!haveLegacy) return toolsFor('nft', 'auto: only iptables-nft is installed');
  if (!haveNft) return toolsFor('legacy', 'auto: only iptables-legacy is installed');
  const [legacy, nft] = await Promise.all([lookAt('legacy', opts.netns), lookAt('nft', opts.netns)]);
  const counts = `legacy ${legacy.rules} rules, nft ${nft.rules} rules`;
  if (legacy.rules > nft.rules) return { ...toolsFor('legacy', `auto: ${counts}`), filterRules: legacy.filter };
  return { ...toolsFor('nft', `auto: ${counts}`), filterRules: nft.filter };
}
