import { parseHost, type Family } from '../net/ip';
import type { ImportReport } from '../legacy/import';

/** One ban to import: a single host, its end (epoch ms, null = permanent), the fail2ban jail. */
export interface ImportBan { address: string; until: number | null; jail: string }

export interface BanTarget {
  /** Why the address must not be banned (allow list), or undefined. */
  allowed(address: string, family: Family): string | undefined;
  isBanned(address: string): boolean;
  /** forMs: what is left of the ban (null = permanent). */
  ban(address: string, family: Family, forMs: number | null, jail: string): void;
}

/**
 * Apply imported bans: each becomes a ban (source "fail2ban") for what is left of it, unless
 * the address is not a single host, allowed, already banned, or its ban has run out.
 */
export function applyImportBans(entries: ImportBan[], target: BanTarget, now: number): ImportReport {
  const report: ImportReport = { imported: [], alreadyBanned: [], refused: [] };
  for (const e of entries) {
    const text = String(e?.address ?? '').slice(0, 64);
    const ip = parseHost(text);
    if (!ip.ok) { report.refused.push({ address: text, reason: ip.reason }); continue; }
    const until = e.until;
    if (until !== null && (typeof until !== 'number' || !Number.isSafeInteger(until))) { report.refused.push({ address: ip.address, reason: 'until must be epoch ms or null' }); continue; }
    if (until !== null && until - now < 1000) { report.refused.push({ address: ip.address, reason: 'expired' }); continue; }
    const why = target.allowed(ip.address, ip.family);
    if (why) { report.refused.push({ address: ip.address, reason: why }); continue; }
    if (target.isBanned(ip.address)) { report.alreadyBanned.push(ip.address); continue; }
    target.ban(ip.address, ip.family, until === null ? null : until - now, String(e.jail ?? '').replace(/[\u0000-\u001f\u007f]+/g, ' ').slice(0, 80));
    report.imported.push(ip.address);
  }
  return report;
}
