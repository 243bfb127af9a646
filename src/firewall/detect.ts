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

/** Rule lines (`-A ...`) in the IPv4 + IPv6 save output of one flavour; 0 when a save fails. */
async function ruleCount(flavour: Flavour, netns?: string): Promise<number> {
  // Both families at once: each save is a process start, and they do not depend on each other.
  const counts = await Promise.all([`iptables-${flavour}-save`, `ip6tables-${flavour}-save`].map(async (save) => {
    try {
      const { stdout } = await run(save, [], { netns, timeoutMs: 30_000 });
      let n = 0;
      for (const line of stdout.split('\n')) if (line.startsWith('-A')) n++;
      return n;
    } catch {
      // e.g. legacy modules not loadable in a container: that flavour holds no rules here.
      return 0;
    }
  }));
  return counts[0] + counts[1];
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
  const [legacy, nft] = await Promise.all([ruleCount('legacy', opts.netns), ruleCount('nft', opts.netns)]);
  const counts = `legacy ${legacy} rules, nft ${nft} rules`;
  if (legacy > nft) return toolsFor('legacy', `auto: ${counts}`);
  return toolsFor('nft', `auto: ${counts}`);
}
