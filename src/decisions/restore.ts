import type { BanLines, BanSource, KernelBan } from '../firewall/types';
import { banRows } from '../firewall/types';
import type { Logger } from '../log';
import { SkipLog } from '../firewall/exec';
import { familyOf } from '../net/ip';
import { isBannableTarget } from '../net/range';
import type { Store } from '../store';
import type { BannedSet } from './banned';
import type { KernelQueue } from './types';

export interface RestoreParts {
  kernel: KernelQueue;
  store: Store;
  log: Logger;
  banned: BannedSet;
}

/**
 * The start's one load of the stored bans. The source renders them as lines when the backend
 * loads text (ipset): the kernel gets them first and the in-memory set is made after, since
 * making it during that load only slowed both on two cores (see BENCHMARKS.md, Findings).
 * Otherwise the set is made as the load reads the bans. A stored address that may not be
 * banned stays out of the kernel and the set (logged); `ampere unban` still lifts its row.
 * skip: addresses just lifted (allowed) whose rows may still read as active.
 */
export async function restoreActive(d: RestoreParts, now: number, skip: Set<string>, onLoaded: (bans: number) => void): Promise<void> {
  const banned = d.banned;
  banned.clear();
  const skipped = new SkipLog(d.log);
  // Read on first use: with rendered lines, only after the kernel holds them.
  let rows: Iterator<KernelBan> | null = null;
  const next = (): KernelBan | undefined => {
    rows ??= d.store.bans.streamActiveKernelBans(now);
    for (let r = rows.next(); !r.done; r = rows.next()) {
      const b = r.value;
      if (skip.has(b.address) || (!isBannableTarget(b.address, b.family) && skipped.check(b) === null)) continue;
      banned.set(b.address, b.until);
      return b;
    }
    return undefined;
  };
  const drain = () => { while (next() !== undefined) { /* banned.set happens in next() */ } skipped.done(); };
  // What the store rendered, whole or in slices (the count is known once the load drained them).
  let rendered: Pick<BanLines, 'count'> | undefined;
  const source: BanSource = {
    // A plain iterator, not a generator: a load that stops early (a failed restore) cannot close it.
    [Symbol.iterator]: () => ({ next: () => { const b = next(); return b ? { value: b, done: false } : { value: undefined, done: true }; } }),
    render: (format) => { const lines = d.store.bans.renderActiveBans(now, format); rendered = lines; return lines; },
    // Both families or none: the count must cover every stored ban, as render's does.
    renderSliced: (format, families) => (families.length === 2 ? (rendered = d.store.bans.renderActiveBanSlices(now, format)) : undefined),
  };
  // Whatever a failed load did not read still goes into the set: the resync after a failure loads from it.
  try { await d.kernel.setAll(source, now); } catch (err) { drain(); throw err; }
  if (rendered) onLoaded(rendered.count);
  drain();
  if (!rendered) { onLoaded(banned.size); return; }
  // The store renders no address that is not a single host; a count that differs means a
  // malformed address was rendered (or a ban stored in between): load again, checked.
  if (rendered.count !== banned.size) {
    d.log.warn({ loaded: rendered.count, stored: banned.size }, 'restore: loading the stored bans again, checked one by one');
    const all: KernelBan[] = [];
    for (const [address, until] of banned.entries()) all.push({ address, family: familyOf(address), until });
    await d.kernel.setAll(banRows(all), now);
  }
}
