import { formatDuration } from '../config/duration';
import type { Logger } from '../log';
import { familyOf, type Family } from '../net/ip';
import { canonicalTarget, isBannableTarget } from '../net/range';
import { OPERATOR_LOCK_WAIT_MS, untilUnlocked, type Store } from '../store';
import type { BannedSet } from './banned';
import type { KernelQueue } from './types';
import type { PendingWrites, StoreHealth } from './pending';

/** What lifting bans needs of Decisions: its store, kernel queue, in-memory set and pending rows. */
export interface LiftParts {
  store: Store;
  kernel: KernelQueue;
  banned: BannedSet;
  pending: PendingWrites;
  storeHealth: StoreHealth;
  log: Logger;
  flushWrites(): boolean;
  changed(what: 'ban' | 'unban', address: string, detail: string): void;
}

/**
 * An operator's unban waits for another writer's lock instead of leaving a ban that comes back
 * at the next start. A peer's does not (the receive cursor holds while writes fail, so it is read
 * again), nor does an allow entry's (each of its many lifts would wait again; the allow list
 * keeps the hosts out at the next start anyway).
 */
function lockWaitMs(why: 'unban' | 'allowed' | 'fleet'): number {
  return why === 'unban' ? OPERATOR_LOCK_WAIT_MS : 0;
}

/** Lift one ban early (operator, or the address became allowed). */
export async function unban(d: LiftParts, address: string, now: number, why: 'unban' | 'allowed' | 'fleet'): Promise<boolean> {
  // The exact stored text is lifted too: a row that is not canonical or not a single host
  // (an older or hand-edited database) must still be removable.
  const ip = canonicalTarget(address);
  const key = ip?.address ?? address;
  let had = false;
  let unstored = false;
  let inMemory = false;
  try {
    // Each try does all of it again: a ban of the host made while the lock was waited for is lifted too.
    await untilUnlocked(() => {
      d.flushWrites();
      // A row not stored yet must not be written after the lift (it would come back at start).
      if (d.pending.drop(key) > 0) unstored = true;
      if ([d.banned.delete(address), d.banned.delete(key)].includes(true)) inMemory = true;
      const exact = key !== address && d.store.bans.liftBan(address, now, why);
      if (d.store.bans.liftBan(key, now, why) || exact) had = true;
    }, lockWaitMs(why));
  } catch (err) {
    d.storeHealth.failed('other', 'unban not stored: the stored ban comes back at the next start', err, { address: key });
  }
  // Remove from the kernel even when the database had nothing: never leave a stray ban
  // behind. Only a bannable address can be in the kernel (and reach a command line).
  if (ip && isBannableTarget(ip.address, ip.family)) await d.kernel.remove([{ address: ip.address, family: ip.family }]);
  const lifted = had || inMemory || unstored;
  if (lifted) {
    d.log.info({ address: key, reason: why }, 'unban');
    d.changed('unban', key, why);
  }
  return lifted;
}

/** Lift every ban (operator `unban --all`): database first, then one kernel batch. Returns the addresses. */
export async function unbanAll(d: LiftParts, now: number): Promise<string[]> {
  const gone = new Map<string, Family>();
  try {
    await untilUnlocked(() => {
      d.flushWrites();
      for (const p of d.pending.list()) gone.set(p.row.address, p.row.family);
      d.pending.drop();
      for (const a of d.banned.keys()) gone.set(a, familyOf(a));
      d.banned.clear();
      for (const b of d.store.bans.liftAllBans(now, 'unban')) gone.set(b.address, b.family as Family);
    }, OPERATOR_LOCK_WAIT_MS);
  } catch (err) {
    d.storeHealth.failed('other', 'unban of all not stored: the stored bans come back at the next start', err);
  }
  await d.kernel.remove([...gone].map(([address, family]) => ({ address, family })));
  for (const address of gone.keys()) d.changed('unban', address, 'unban');
  d.log.info({ count: gone.size, reason: 'unban' }, 'unban all');
  return [...gone.keys()];
}

/**
 * Bans whose time is up: the database marks them, the kernel drops them (rules have no
 * timeout). A ban also ends by its in-memory time when the database cannot be updated or
 * its row is still pending; the database catches up on a later tick.
 */
export async function expire(d: LiftParts, now: number): Promise<number> {
  d.flushWrites();
  let due: { address: string; family: number; until: number; startedAt: number }[] = [];
  let dbFailed = false;
  try {
    due = d.store.bans.expireBans(now);
    d.storeHealth.ok('expiry');
  } catch (err) {
    dbFailed = true;
    d.storeHealth.failed('expiry', 'expiry not stored: bans end by their in-memory time', err);
  }
  const gone: { address: string; family: Family; startedAt: number | null; until: number }[] = [];
  for (const b of due) {
    const u = d.banned.get(b.address);
    // A newer ban of the host (its row still pending) is not ended by the old row.
    if (u !== undefined && (u === null || u > now)) continue;
    gone.push({ address: b.address, family: b.family as Family, startedAt: b.startedAt, until: b.until });
  }
  if (dbFailed || d.pending.count > 0) {
    for (const [address, until] of d.banned.endedBy(now)) {
      if (!gone.some((g) => g.address === address)) gone.push({ address, family: familyOf(address), startedAt: null, until });
    }
  }
  if (gone.length === 0) return 0;
  for (const b of gone) {
    if (!d.banned.delete(b.address)) continue;
    d.log.info({ address: b.address, reason: 'expired', banned_for: b.startedAt === null ? null : formatDuration(Math.max(0, b.until - b.startedAt)) }, 'unban');
    d.changed('unban', b.address, 'expired');
  }
  await d.kernel.remove(gone.map((b) => ({ address: b.address, family: b.family })));
  return gone.length;
}
