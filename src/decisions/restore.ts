import type { BanLines, KernelBan } from '../firewall/types';
import type { Logger } from '../log';
import { SkipLog } from '../firewall/exec';
import { familyOf, isBannable } from '../net/ip';
import type { Store } from '../store';
import type { BannedSet } from './banned';
import type { AllowCheck } from '../allow';
import type { KernelQueue } from './index';

/**
 * restore for a backend that loads rendered lines. The kernel gets the bans first, and the
 * in-memory set is made after: measured at 100k bans, making it while ipset loaded only
 * slowed both (two cores). A malformed stored address (or a ban stored in between) found
 * then makes a second load, from what was read here, through the queue's own checks.
 */
export async function restoreLines(d: { kernel: KernelQueue; store: Store; log: Logger; banned: BannedSet }, lines: BanLines, now: number, onLoaded: (bans: number) => void): Promise<void> {
  await d.kernel.setAllLines!(lines);
  onLoaded(lines.count);
  const banned = d.banned;
  banned.clear();
  const skipped = new SkipLog(d.log);
  for (const b of d.store.streamActiveKernelBans(now)) {
    // A stored address that may not be banned stays out of the kernel and of the set (logged);
    // `ampere unban` still lifts its row.
    if (isBannable(b.address, b.family) || skipped.check(b) !== null) banned.set(b.address, b.until);
  }
  skipped.done();
  // The store renders no canonical address that is not a single host; a count that differs
  // means a malformed address was rendered (or a ban stored in between): load again, checked.
  if (lines.count !== banned.size) {
    d.log.warn({ loaded: lines.count, stored: banned.size }, 'restore: loading the stored bans again, checked one by one');
    const all: KernelBan[] = [];
    for (const [address, until] of banned.entries()) all.push({ address, family: familyOf(address), until });
    await d.kernel.setAll(all, now);
  }
}

/** restore for any other backend: the checks and the set are made as the load reads the bans. */
export async function restoreStream(kernel: KernelQueue, log: Logger, banned: BannedSet, rows: Iterator<KernelBan>, now: number, allow: AllowCheck, onLoaded: (bans: number) => void): Promise<string[]> {
  const allowed: string[] = [];
  banned.clear();
  const skipped = new SkipLog(log);
  /** The next ban to load, after the allow-list check; undefined at the end. */
  const next = (): KernelBan | undefined => {
    for (let r = rows.next(); !r.done; r = rows.next()) {
      const b = r.value;
      if (!isBannable(b.address, b.family) && skipped.check(b) === null) continue;
      if (allow.allows(b.address, b.family)) { allowed.push(b.address); continue; }
      banned.set(b.address, b.until);
      return b;
    }
    return undefined;
  };
  // A plain iterator, not a generator: a load that stops early (a failed restore) cannot close it.
  const bans: Iterable<KernelBan> = { [Symbol.iterator]: () => ({ next: () => { const b = next(); return b ? { value: b, done: false } : { value: undefined, done: true }; } }) };
  try {
    await kernel.setAll(bans, now);
  } finally {
    // Whatever a failed load did not read: the in-memory set (and with it the resync that
    // follows a failure) must still hold every stored ban.
    while (next() !== undefined) { /* banned.set happens in next() */ }
    skipped.done();
  }
  onLoaded(banned.size);
  return allowed;
}
