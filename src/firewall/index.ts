import type { Logger } from '../log';
import { detectIptables } from './detect';
import { DryRunBackend } from './dryrun';
import { IpsetBackend } from './ipset';
import { RulesBackend } from './rules';
import { ConntrackFlusher } from './conntrack';
import type { FirewallBackend, FirewallOptions } from './types';

export type { BanLineFormat, BanLines, BanSource, FirewallBackend, FirewallOptions, KernelBan, ListedBan } from './types';
export { banRows, renderedBans } from './types';
export type { IptablesTools, Flavour } from './detect';
export { detectIptables } from './detect';
export { FirewallQueue, type QueueHooks, type QueueOptions } from './queue';
export { ConntrackFlusher } from './conntrack';
export { CommandError } from './exec';
export { chooseIpv6, type Ipv6Choice } from './ipv6';

export type BackendKind = 'ipset' | 'rules' | 'dry-run';

/** A backend and, beside it, what cuts the established flows of new bans in the same namespace (none for dry-run). */
export interface Firewall {
  backend: FirewallBackend;
  conntrack: ConntrackFlusher | null;
}

/**
 * The folder's one door: detect the iptables flavour (logged, since a wrong one makes rules
 * invisible to the host) and build the backend and its conntrack cleaner. The caller then runs
 * init() and setAll(), and starts the cleaner.
 */
export async function createFirewall(kind: BackendKind, opts: FirewallOptions, log: Logger): Promise<Firewall> {
  return { backend: await createBackend(kind, opts, log), conntrack: kind === 'dry-run' ? null : new ConntrackFlusher(log, opts.netns) };
}

/** The backend alone (tests and tools that cut no flows). */
export async function createBackend(kind: BackendKind, opts: FirewallOptions, log: Logger): Promise<FirewallBackend> {
  if (kind === 'dry-run') return new DryRunBackend(opts, log);
  const tools = await detectIptables(opts);
  log.info({ flavour: tools.flavour, iptables: tools.iptables, reason: tools.reason, backend: kind }, `iptables flavour: ${tools.flavour}`);
  if (kind === 'ipset') return new IpsetBackend(opts, tools, log);
  if (kind === 'rules') return new RulesBackend(opts, tools, log);
  throw new Error(`unknown firewall backend ${JSON.stringify(kind)}: use ipset, rules or dry-run`);
}
