import { canonicalIp, expandIpv6, type Family } from './ip';

/** A network as family + prefix bits, stored as a bigint for a uniform match. */
export interface Cidr {
  text: string;
  family: Family;
  bits: number;
  base: bigint;
}

function toBigInt(address: string, family: Family): bigint {
  if (family === 4) return address.split('.').reduce((acc, p) => (acc << 8n) | BigInt(Number(p)), 0n);
  return expandIpv6(address)!.reduce((acc, w) => (acc << 16n) | BigInt(w), 0n);
}

function mask(family: Family, bits: number): bigint {
  const width = family === 4 ? 32 : 128;
  return ((1n << BigInt(width)) - 1n) ^ ((1n << BigInt(width - bits)) - 1n);
}

/** "10.0.0.0/8", "fd00::/8" or a bare address (a host route). Null when invalid. */
export function parseCidr(text: string): Cidr | null {
  const [addr, prefix, extra] = text.trim().split('/');
  if (extra !== undefined) return null;
  const ip = canonicalIp(addr);
  if (!ip) return null;
  const width = ip.family === 4 ? 32 : 128;
  const bits = prefix === undefined ? width : /^\d{1,3}$/.test(prefix) ? Number(prefix) : NaN;
  if (!(bits >= 0 && bits <= width)) return null;
  const base = toBigInt(ip.address, ip.family) & mask(ip.family, bits);
  return { text: bits === width ? ip.address : `${ip.address}/${bits}`, family: ip.family, bits, base };
}

export function cidrContains(c: Cidr, address: string, family: Family): boolean {
  return c.family === family && (toBigInt(address, family) & mask(family, c.bits)) === c.base;
}

/** Addresses that must never be banned, whatever arrives: loopback, the AMI host and the allow list. */
export class AllowList {
  private entries: Cidr[];
  constructor(entries: Cidr[] = []) {
    this.entries = [parseCidr('127.0.0.0/8')!, parseCidr('::1/128')!, ...entries];
  }
  add(c: Cidr): void {
    this.entries.push(c);
  }
  remove(text: string): void {
    this.entries = this.entries.filter((e) => e.text !== text);
  }
  matches(address: string, family: Family): Cidr | undefined {
    return this.entries.find((e) => cidrContains(e, address, family));
  }
  list(): string[] {
    return this.entries.map((e) => e.text);
  }
}
