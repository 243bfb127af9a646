import type { Logger } from '../log';
import { detectIptables } from './detect';
import { DryRunBackend } from './dryrun';
import { IpsetBackend } from './ipset';
import { RulesBackend } from './rules';
import type { FirewallBackend, FirewallOptions } from './types';

export type { BanLineFormat, BanLines, FirewallBackend, FirewallOptions, KernelBan, ListedBan } from './types';
export type { IptablesTools, Flavour } from './detect';
export { detectIptables } from './detect';
export { FirewallQueue, type QueueOptions } from './queue';
export { ConntrackFlusher } from './conntrack';
export { CommandError } from './exec';
export { chooseIpv6, type Ipv6Choice } from './ipv6';

export type BackendKind = 'ipset' | 'rules' | 'dry-run';

/**
 * The folder's one door: detect the iptables flavour (logged, since a wrong one makes rules
 * invisible to the host) and build the backend. The caller then runs init() and setAll().
 */
export async function createFirewall(kind: BackendKind, opts: FirewallOptions, log: Logger): Promise<FirewallBackend> {
  if (kind === 'dry-run') return new DryRunBackend(opts, log);
  const tools = await detectIptables(opts);
  log.info({ flavour: tools.flavour, iptables: tools.iptables, reason: tools.reason, backend: kind }, `iptables flavour: ${tools.flavour}`);
  if (kind === 'ipset') return new IpsetBackend(opts, tools, log);
  if (kind === 'rules') return new RulesBackend(opts, tools, log);
  throw new Error(`unknown firewall backend ${JSON.stringify(kind)}: use ipset, rules or dry-run`);
}
