import type { KernelBan } from '../firewall/types';
import type { Logger } from '../log';
import type { Family } from '../net/ip';
import type { BannedSet, CountCache } from './banned';
import type { PendingWrites } from './pending';
import type { BanFacts, BanReason, KernelQueue } from './types';

/**
 * A peer's ban that passed this node's checks (src/fleet/apply.ts): its end is given, never
 * escalated. cutFlows false: its host's established flows are left (a decision made long ago).
 */
export interface PeerBan { address: string; family: Family; until: number; reason: BanReason; origin: string; cutFlows?: boolean }

export interface BulkParts {
  banned: BannedSet;
  counts: CountCache;
  kernel: KernelQueue;
  pending: PendingWrites;
  commitDelayMs: number;
  log: Logger;
  changed(what: 'ban', address: string, detail: string, ban: BanFacts): void;
}

/** Up to this many bans of one call are logged one line each, as any ban; more get one line for the lot. */
const LINES_MAX = 20;

/**
 * Many peers' bans at once (a page of a fleet catch-up): the rows first, committed together,
 * then the in-memory set and ONE kernel batch. A peer's ban is stored before its kernel
 * command: a crash between the two must not leave a kernel member the next start adopts as
 * this node's own decision and publishes as its own (src/fleet/local.ts). A commit that fails
 * leaves the rows pending (retried) and the bans go to the kernel all the same.
 */
export function banMany(p: BulkParts, bans: PeerBan[], now: number): Promise<void> {
  const quiet = bans.length > LINES_MAX;
  const counts: number[] = [];
  for (const b of bans) {
    // The count is only shown (a peer's ban has its own length): the cache, or a first ban.
    const banCount = (p.counts.get(b.address) ?? 0) + 1;
    counts.push(banCount);
    p.counts.set(b.address, banCount);
    const r = b.reason;
    p.pending.push({
      row: { address: b.address, family: b.family, now, until: b.until, source: 'fleet', reasonKind: r.kind, reasonService: r.service, reasonAccount: r.account, failures: r.failures, origin: b.origin },
      banCount, since: now, quiet,
    }, p.commitDelayMs);
  }
  p.pending.flush(true);
  const kernel: KernelBan[] = [];
  for (const b of bans) {
    p.banned.set(b.address, b.until);
    kernel.push(b.cutFlows === false ? { address: b.address, family: b.family, until: b.until, cutFlows: false } : { address: b.address, family: b.family, until: b.until });
  }
  const applied = p.kernel.add(kernel, now);
  bans.forEach((b, i) => p.changed('ban', b.address, 'fleet', { reason: b.reason, until: b.until, banCount: counts[i], now }));
  if (quiet) p.log.info({ count: bans.length, origins: [...new Set(bans.map((b) => b.origin))].slice(0, 10) }, 'bans from the fleet');
  return applied;
}
