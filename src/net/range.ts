import { parseCidr, type Cidr } from './cidr';
import { canonicalIp, isBannable, notSingleHost, type Family } from './ip';

/** The widest range an operator may ban: a /8 of IPv4 is 16.7M hosts, a /32 of IPv6 one provider's whole allocation. */
export const WIDEST_RANGE = { 4: 8, 6: 32 } as const;

/** A network to ban, canonical: its first address, then the prefix ("203.0.113.0/24"). */
export type RangeParse = { ok: true; range: string; family: Family; cidr: Cidr } | { ok: false; reason: string };

/**
 * Text to a bannable range, or why not. The network address must be written as it is (host
 * bits zero: "203.0.113.5/24" is refused, naming 203.0.113.0/24), not wider than WIDEST_RANGE
 * and narrower than one host (a /32 or /128 is an address: ban it as one). Unspecified,
 * multicast and reserved networks block no attacker and are refused like such addresses.
 */
export function parseRange(text: string): RangeParse {
  const slash = text.indexOf('/');
  if (slash < 0) return { ok: false, reason: 'not a range (address/prefix)' };
  const cidr = parseCidr(text);
  if (!cidr) return { ok: false, reason: 'not a valid IP address or range' };
  const width = cidr.family === 4 ? 32 : 128;
  if (cidr.bits === width) return { ok: false, reason: `a /${width} is one address: ban ${cidr.text} as an address` };
  if (cidr.bits < WIDEST_RANGE[cidr.family]) return { ok: false, reason: `wider than /${WIDEST_RANGE[cidr.family]}: a range that wide would cut off a large part of the internet` };
  const network = networkText(cidr);
  const range = `${network}/${cidr.bits}`;
  if (cidr.text !== range) return { ok: false, reason: `${text.trim()} is not a network address: the network is ${range}` };
  const why = notSingleHost(network, cidr.family);
  if (why) return { ok: false, reason: `${range} is ${why}` };
  return { ok: true, range, family: cidr.family, cidr };
}

/** The network's first address in canonical text. */
function networkText(c: Cidr): string {
  if (c.family === 4) return [24, 16, 8, 0].map((s) => Number((c.base >> BigInt(s)) & 255n)).join('.');
  const words = Array.from({ length: 8 }, (_, i) => Number((c.base >> BigInt(16 * (7 - i))) & 0xffffn).toString(16));
  return canonicalIp(words.join(':'))?.address ?? words.join(':');
}

/** Whether two networks share any address (one holds the other, as prefixes do). */
export function overlaps(a: Cidr, b: Cidr): boolean {
  if (a.family !== b.family) return false;
  const bits = Math.min(a.bits, b.bits);
  const width = a.family === 4 ? 32 : 128;
  const m = ((1n << BigInt(width)) - 1n) ^ ((1n << BigInt(width - bits)) - 1n);
  return (a.base & m) === (b.base & m);
}

/** A stored ban's address that may reach the kernel: one host (isBannable) or a range exactly as parseRange writes it. */
export function isBannableTarget(address: string, family: Family): boolean {
  if (!address.includes('/')) return isBannable(address, family);
  const r = parseRange(address);
  return r.ok && r.range === address && r.family === family;
}

/** A host or a range in the form the store and the kernel hold it, or null when it is neither. */
export function canonicalTarget(text: string): { address: string; family: Family } | null {
  if (!text.includes('/')) return canonicalIp(text);
  const r = parseRange(text);
  return r.ok ? { address: r.range, family: r.family } : null;
}
