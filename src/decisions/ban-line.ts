import { formatDuration } from '../config/duration';
import type { CountryOf } from '../geoip';
import type { PendingBan } from './pending';

/**
 * The fields of a stored ban's "ban" log line. The country is there when a country database
 * is loaded and knows the address (the daemon loads it after the start, not on a ban's path).
 */
export function banLine({ row: b, banCount }: PendingBan, countryOf: CountryOf | null): Record<string, unknown> {
  const country = countryOf?.(b.address) ?? null;
  return {
    address: b.address,
    ...(country ? { country } : {}),
    reason: { kind: b.reasonKind, service: b.reasonService, account: b.reasonAccount },
    failures: b.failures,
    count: banCount,
    duration: b.until === null ? 'permanent' : formatDuration(b.until - b.now),
    until: b.until === null ? null : new Date(b.until).toISOString(),
    source: b.source,
    ...(b.origin ? { origin: b.origin } : {}),
  };
}
