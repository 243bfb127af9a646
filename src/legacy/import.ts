import { parseHost } from '../net/ip';
import type { LegacyEntry } from './index';

/** Entries one import request to the daemon may carry, well inside its body limit: the CLI sends more in several. */
export const MAX_IMPORT_ENTRIES = 10_000;

export interface ImportTarget {
  /** Why the address must not be banned (allow list), or undefined. */
  allowed(address: string): string | undefined;
  isBanned(address: string): boolean;
  ban(entry: LegacyEntry): void;
}

export interface ImportReport {
  imported: string[];
  alreadyBanned: string[];
  refused: { address: string; reason: string }[];
}

/**
 * Apply decoded legacy entries: each becomes a ban (source "legacy") unless the address is
 * allowed or already banned. Used by the daemon (applied to the kernel at once) and, when no
 * daemon runs, against the database alone (the kernel gets them at the next start).
 */
export function applyLegacy(entries: LegacyEntry[], target: ImportTarget): ImportReport {
  const report: ImportReport = { imported: [], alreadyBanned: [], refused: [] };
  for (const e of entries) {
    // The same check as every other way in: canonical IPv4, and a single host.
    const ip = parseHost(String(e.address), 4);
    if (!ip.ok || ip.address !== e.address) {
      report.refused.push({ address: String(e.address).slice(0, 64), reason: ip.ok || ip.reason === 'not an IP address' || ip.reason.startsWith('IPv6') ? 'not an IPv4 address' : ip.reason });
      continue;
    }
    const why = target.allowed(ip.address);
    if (why) { report.refused.push({ address: ip.address, reason: why }); continue; }
    if (target.isBanned(ip.address)) { report.alreadyBanned.push(ip.address); continue; }
    target.ban({ address: ip.address, account: String(e.account ?? '').slice(0, 80) });
    report.imported.push(ip.address);
  }
  return report;
}
