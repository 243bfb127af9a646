import type { ListedBan } from '../firewall/types';
import { isBannable, isCanonicalIp } from '../net/ip';
import type { NewBan } from '../store';
import type { AllowCheck } from '../allow';

/**
 * The rows for kernel bans the database lacks: a SIGKILL between a kernel command and its
 * commit, or a database lost or emptied, must not cost a ban the kernel still holds. Only
 * canonical addresses of their own family, never an allowed one, each once. An ipset member
 * keeps the time it has left (0: none, permanent); a rule keeps none, so it gets
 * firstBanMs from now (null: permanent).
 */
export async function bansToAdopt(listed: Iterable<ListedBan> | AsyncIterable<ListedBan>, stored: (address: string) => boolean, allow: AllowCheck, now: number, firstBanMs: number | null, latest: (address: string) => LatestBan | undefined = () => undefined): Promise<{ rows: NewBan[]; listed: number }> {
  const rows: NewBan[] = [];
  const seen = new Set<string>();
  let count = 0;
  for await (const b of listed) {
    count++;
    // The same test as canonicalIp(address) giving back {address, family}, in one pass.
    if (!isCanonicalIp(b.address, b.family) || !isBannable(b.address, b.family)) continue;
    if (seen.has(b.address) || stored(b.address)) continue;
    if (allow.allows(b.address, b.family)) continue;
    seen.add(b.address);
    const until = b.timeoutSec === null
      ? (firstBanMs === null || firstBanMs === 0 ? null : now + firstBanMs)
      : b.timeoutSec === 0 ? null : now + b.timeoutSec * 1000;
    if (endedInDatabase(latest(b.address), b.timeoutSec === null ? undefined : until, now)) continue;
    rows.push({
      address: b.address, family: b.family, now, until, source: 'kernel',
      reasonKind: 'Adopted', reasonService: '', reasonAccount: '', failures: 0,
    });
  }
  return { rows, listed: count };
}

export interface LatestBan { until: number | null; liftedAt: number | null }

/**
 * True when the kernel member is a ban the database has already ended (a crash between an
 * unban or expiry's commit and its kernel command): adopting it would bring it back. With
 * a known end (ipset), the same ban is the latest row ending at that time (ipset keeps whole
 * seconds); without one (rules), any ended latest row counts.
 */
function endedInDatabase(row: LatestBan | undefined, kernelUntil: number | null | undefined, now: number): boolean {
  if (!row) return false;
  const ended = row.liftedAt !== null || (row.until !== null && row.until <= now);
  if (!ended) return false;
  if (kernelUntil === undefined) return true;
  if (kernelUntil === null || row.until === null) return kernelUntil === row.until;
  return Math.abs(kernelUntil - row.until) <= 2000;
}
