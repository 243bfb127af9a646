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

/**
 * Text that the canonical form of every address in the network starts with ('' when nothing
 * shorter than a whole address is sure): lets the store pick the few stored bans worth
 * checking against the allow list. Canonical IPv6 writes a run of zero words as '::', so only
 * the words before the first zero word are sure to appear as they are.
 */
export function textPrefix(c: Cidr): string {
  if (c.bits === (c.family === 4 ? 32 : 128)) return c.text;
  const words: string[] = [];
  if (c.family === 4) {
    for (let i = 0; i < Math.floor(c.bits / 8); i++) words.push(String(Number((c.base >> BigInt(8 * (3 - i))) & 255n)));
    return words.length ? `${words.join('.')}.` : '';
  }
  for (let i = 0; i < Math.floor(c.bits / 16); i++) {
    const w = Number((c.base >> BigInt(16 * (7 - i))) & 0xffffn);
    if (w === 0) break;
    words.push(w.toString(16));
  }
  return words.length ? `${words.join(':')}:` : '';
}

export function cidrContains(c: Cidr, address: string, family: Family): boolean {
  return c.family === family && (toBigInt(address, family) & mask(family, c.bits)) === c.base;
}

/** A canonical dotted quad as an unsigned 32-bit number; NaN when it is not one. */
export function ipv4ToUint(address: string): number {
  let n = 0;
  let part = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < address.length; i++) {
    const c = address.charCodeAt(i);
    if (c === 46) {
      if (digits === 0 || part > 255) return NaN;
      n = n * 256 + part; part = 0; digits = 0; dots++;
    } else if (c >= 48 && c <= 57) {
      part = part * 10 + (c - 48); digits++;
    } else return NaN;
  }
  if (dots !== 3 || digits === 0 || part > 255) return NaN;
  return n * 256 + part;
}

/** An IPv4 network as plain numbers: asked for every event and every restored ban, no BigInt. */
interface V4Entry { cidr: Cidr; base: number; mask: number }

function v4Entry(c: Cidr): V4Entry {
  const mask = c.bits === 0 ? 0 : (0xffffffff << (32 - c.bits)) >>> 0;
  return { cidr: c, base: Number(c.base), mask };
}

/** An IPv6 network as eight 16-bit words of base and mask: no BigInt per check either. */
interface V6Entry { cidr: Cidr; base: number[]; mask: number[] }

function v6Entry(c: Cidr): V6Entry {
  const base: number[] = [];
  const mask: number[] = [];
  for (let i = 0; i < 8; i++) {
    const bits = Math.min(16, Math.max(0, c.bits - 16 * i));
    mask.push(bits === 0 ? 0 : (0xffff << (16 - bits)) & 0xffff);
    base.push(Number((c.base >> BigInt(16 * (7 - i))) & 0xffffn));
  }
  return { cidr: c, base, mask };
}

function v6Contains(e: V6Entry, words: number[]): boolean {
  for (let i = 0; i < 8; i++) if ((words[i] & e.mask[i]) !== e.base[i]) return false;
  return true;
}

/** A set of networks matched fast (integers, not BigInt, for plain addresses): the allow list's index (src/allow). */
export class NetworkSet {
  private entries: Cidr[];
  private v4: V4Entry[] = [];
  private v6: V6Entry[] = [];
  constructor(entries: Cidr[] = []) {
    this.entries = [...entries];
    this.index();
  }
  add(c: Cidr): void {
    this.entries.push(c);
    this.index();
  }
  remove(text: string): void {
    this.entries = this.entries.filter((e) => e.text !== text);
    this.index();
  }
  private index(): void {
    this.v4 = this.entries.filter((e) => e.family === 4).map(v4Entry);
    this.v6 = this.entries.filter((e) => e.family === 6).map(v6Entry);
  }
  matches(address: string, family: Family): Cidr | undefined {
    if (family === 4) {
      const n = ipv4ToUint(address);
      if (n === n) {
        for (const e of this.v4) if (((n & e.mask) >>> 0) === e.base) return e.cidr;
        return undefined;
      }
    }
    if (family === 6) {
      const words = expandIpv6(address);
      if (words) {
        for (const e of this.v6) if (v6Contains(e, words)) return e.cidr;
        return undefined;
      }
    }
    // What is not a plain address of its family: the BigInt path decides (and refuses) those.
    return this.entries.find((e) => cidrContains(e, address, family));
  }
  list(): Cidr[] {
    return [...this.entries];
  }
}
