import type { Family } from '../net/ip';
import { compressIpv6, isCanonicalIp } from '../net/ip';
import { ipv4ToUint } from '../net/cidr';
import { HostTable } from './host-table';

/** The value standing for a permanent ban (null) in the tables. */
const PERMANENT = Number.NaN;

/**
 * The banned addresses (address -> until, null = permanent). A single host written exactly in
 * canonical form is kept as binary words in a HostTable, so a million bans fit in tens of MB;
 * any other text (a range, or a stored address that is not canonical) in a Map. Every key comes
 * back exactly as it was set: only text that formats back to itself goes into a table.
 */
export class BannedSet {
  private readonly v4 = new HostTable(1);
  private readonly v6 = new HostTable(4);
  private readonly other = new Map<string, number | null>();
  private readonly key = new Uint32Array(4);
  private readonly out = new Uint32Array(4);

  /** The table and key for a canonical single host, or null (the Map keeps it). */
  private tableOf(address: string): HostTable | null {
    if (address.includes(':')) {
      if (!isCanonicalIp(address, 6) || !parseIpv6(address, this.key)) return null;
      return this.v6;
    }
    if (!isCanonicalIp(address, 4)) return null;
    this.key[0] = ipv4ToUint(address);
    return this.v4;
  }

  set(address: string, until: number | null): void {
    const t = this.tableOf(address);
    if (t) t.set(this.key, until === null ? PERMANENT : until);
    else this.other.set(address, until);
  }

  delete(address: string): boolean {
    const t = this.tableOf(address);
    return t ? t.delete(this.key) : this.other.delete(address);
  }

  clear(): void {
    this.v4.clear();
    this.v6.clear();
    this.other.clear();
  }

  has(address: string): boolean {
    const t = this.tableOf(address);
    return t ? t.find(this.key) >= 0 : this.other.has(address);
  }

  get(address: string): number | null | undefined {
    const t = this.tableOf(address);
    if (!t) return this.other.get(address);
    const slot = t.find(this.key);
    if (slot < 0) return undefined;
    const v = t.value(slot);
    return Number.isNaN(v) ? null : v;
  }

  /** Not to be changed while iterated: a delete moves entries within a table. */
  *entries(): Generator<[string, number | null]> {
    for (const [t, format] of [[this.v4, formatIpv4], [this.v6, formatIpv6]] as const) {
      for (const slot of t.slots()) {
        const v = t.value(slot);
        yield [format(t.keyAt(slot, this.out)), Number.isNaN(v) ? null : v];
      }
    }
    yield* this.other.entries();
  }

  /**
   * The entries ended by `at` (permanent ones never are): only their keys are formatted. The
   * expiry tick asks while rows are pending, every second of a catch-up: formatting every key
   * of a million bans for it cost ~0.5 s of CPU and ~80 MB of garbage each time.
   */
  *endedBy(at: number): Generator<[string, number]> {
    for (const [t, format] of [[this.v4, formatIpv4], [this.v6, formatIpv6]] as const) {
      for (const slot of t.slotsAtMost(at)) yield [format(t.keyAt(slot, this.out)), t.value(slot)];
    }
    for (const [address, until] of this.other) if (until !== null && until <= at) yield [address, until];
  }

  *keys(): Generator<string> {
    for (const [address] of this.entries()) yield address;
  }

  /** How many bans of a family end by `at` (permanent ones never do); no key is formatted. */
  countEndedBy(family: Family, at: number): number {
    let n = 0;
    // NaN (permanent) is never <= at.
    (family === 4 ? this.v4 : this.v6).forEachValue((v) => { if (v <= at) n++; });
    for (const [address, until] of this.other) if (until !== null && until <= at && (address.includes(':') ? 6 : 4) === family) n++;
    return n;
  }

  get size(): number { return this.v4.size + this.v6.size + this.other.size; }

  get byFamily(): { v4: number; v6: number } {
    let v6 = this.v6.size;
    for (const address of this.other.keys()) if (address.includes(':')) v6++;
    return { v4: this.size - v6, v6 };
  }
}

function formatIpv4(k: Uint32Array): string {
  const n = k[0];
  return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

const groups = new Uint16Array(8);

function formatIpv6(k: Uint32Array): string {
  for (let w = 0; w < 4; w++) { groups[2 * w] = k[w] >>> 16; groups[2 * w + 1] = k[w] & 0xffff; }
  return compressIpv6(groups);
}

/**
 * The words of an IPv6 address already known canonical (isCanonicalIp): hex groups and at most
 * one '::'. One pass, nothing allocated; false when the text does not add up to eight groups.
 */
function parseIpv6(text: string, out: Uint32Array): boolean {
  let n = 0;
  let gap = -1;
  let word = 0;
  let digits = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 58) {
      if (digits > 0) { groups[n++] = word; word = 0; digits = 0; }
      if (text.charCodeAt(i + 1) === 58) { gap = n; i++; }
      continue;
    }
    word = word * 16 + (c <= 57 ? c - 48 : c - 87);
    digits++;
  }
  if (digits > 0) groups[n++] = word;
  if (gap < 0 ? n !== 8 : n > 6) return false;
  if (gap >= 0) {
    const tail = n - gap;
    groups.copyWithin(8 - tail, gap, n);
    groups.fill(0, gap, 8 - tail);
  }
  for (let w = 0; w < 4; w++) out[w] = ((groups[2 * w] << 16) | groups[2 * w + 1]) >>> 0;
  return true;
}

/**
 * Ban counts of hosts banned since start, so a repeat ban needs no database read before its
 * kernel command. Two generations: sets go into the young map; when it holds max/2 it becomes
 * the old one and the oldest generation is dropped. So the max/2 to max most recently set
 * counts are kept, each set and get O(1). (Evicting the first key of one Map was not: V8's
 * iterator walks over the deleted entries still in the table, ~18 µs a set once full, 18 s of a
 * 1M fleet catch-up; docs/notes/measurements.md, Banned set.)
 */
export class CountCache {
  private young = new Map<string, number>();
  private old = new Map<string, number>();
  constructor(private readonly max = 65_536) {}
  get(address: string): number | undefined { return this.young.get(address) ?? this.old.get(address); }
  set(address: string, count: number): void {
    // The cache only saves a read, the database keeps the truth.
    this.young.set(address, count);
    if (this.young.size >= this.max / 2) {
      this.old = this.young;
      this.young = new Map();
    }
  }
  get size(): number { return this.young.size + this.old.size; }
}
