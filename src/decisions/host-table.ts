import { randomBytes } from 'node:crypto';

/**
 * A hash table from fixed-size binary keys (one 32-bit word for IPv4, four for IPv6) to a
 * number, in typed arrays: a million keys cost ~25 bytes a slot instead of a string, a Map
 * entry and a boxed number each (see docs/notes/measurements.md, Banned set). Open addressing
 * with linear probing; a delete shifts the following entries back, so there are no tombstones
 * and a lookup stops at the first empty slot.
 */
export class HostTable {
  /** Attackers pick their addresses (a /64 holds 2^64): a per-process seed keeps them from choosing colliding ones. */
  private readonly seed = randomBytes(4).readUInt32LE(0);
  private cap = 0;
  private mask = 0;
  private keys = new Uint32Array(0);
  private values = new Float64Array(0);
  private used = new Uint8Array(0);
  size = 0;

  /** words: 32-bit words per key. */
  constructor(readonly words: 1 | 4, initial = 1024) {
    this.allocate(initial);
  }

  private allocate(cap: number): void {
    this.cap = cap;
    this.mask = cap - 1;
    this.keys = new Uint32Array(cap * this.words);
    this.values = new Float64Array(cap);
    this.used = new Uint8Array(cap);
  }

  private home(k: Uint32Array): number {
    let h = Math.imul(k[0] ^ this.seed, 0x85ebca6b);
    for (let w = 1; w < this.words; w++) h = Math.imul(h ^ (h >>> 13) ^ k[w], 0xc2b2ae35);
    h ^= h >>> 16;
    return h & this.mask;
  }

  private same(slot: number, k: Uint32Array): boolean {
    const base = slot * this.words;
    for (let w = 0; w < this.words; w++) if (this.keys[base + w] !== k[w]) return false;
    return true;
  }

  /** The slot holding key k, or -1. */
  find(k: Uint32Array): number {
    for (let i = this.home(k); this.used[i] === 1; i = (i + 1) & this.mask) if (this.same(i, k)) return i;
    return -1;
  }

  /** Sets k's value; true when k is new. */
  set(k: Uint32Array, value: number): boolean {
    let i = this.home(k);
    for (; this.used[i] === 1; i = (i + 1) & this.mask) {
      if (this.same(i, k)) { this.values[i] = value; return false; }
    }
    this.used[i] = 1;
    for (let w = 0; w < this.words; w++) this.keys[i * this.words + w] = k[w];
    this.values[i] = value;
    // At most 7/8 full: runs stay short enough, and 869k IPv6 keys fit 2^20 slots (docs/notes/measurements.md, Banned set).
    if (++this.size * 8 > this.cap * 7) this.grow();
    return true;
  }

  delete(k: Uint32Array): boolean {
    let hole = this.find(k);
    if (hole < 0) return false;
    this.used[hole] = 0;
    this.size--;
    // Backward shift: an entry after the hole moves into it unless its home lies cyclically in (hole, j].
    for (let j = (hole + 1) & this.mask; this.used[j] === 1; j = (j + 1) & this.mask) {
      const h = this.home(this.keys.subarray(j * this.words, j * this.words + this.words));
      if (hole <= j ? hole < h && h <= j : hole < h || h <= j) continue;
      this.keys.copyWithin(hole * this.words, j * this.words, j * this.words + this.words);
      this.values[hole] = this.values[j];
      this.used[hole] = 1;
      this.used[j] = 0;
      hole = j;
    }
    return true;
  }

  clear(): void {
    this.allocate(1024);
    this.size = 0;
  }

  value(slot: number): number {
    return this.values[slot];
  }

  /** The key in a slot, copied into out. */
  keyAt(slot: number, out: Uint32Array): Uint32Array {
    for (let w = 0; w < this.words; w++) out[w] = this.keys[slot * this.words + w];
    return out;
  }

  /** The slots in use, in table order. */
  *slots(): Generator<number> {
    for (let i = 0; i < this.cap; i++) if (this.used[i] === 1) yield i;
  }

  /** The used slots whose value is at most `max` (NaN never is), in table order: one pass, no generator. */
  slotsAtMost(max: number): number[] {
    const out: number[] = [];
    for (let i = 0; i < this.cap; i++) if (this.used[i] === 1 && this.values[i] <= max) out.push(i);
    return out;
  }

  /** Calls fn with each used slot's value; fast path for scans that format no key. */
  forEachValue(fn: (value: number) => void): void {
    for (let i = 0; i < this.cap; i++) if (this.used[i] === 1) fn(this.values[i]);
  }

  private grow(): void {
    const { keys, values, used, cap } = this;
    this.allocate(cap * 2);
    this.size = 0;
    const k = new Uint32Array(this.words);
    for (let i = 0; i < cap; i++) {
      if (used[i] !== 1) continue;
      for (let w = 0; w < this.words; w++) k[w] = keys[i * this.words + w];
      this.set(k, values[i]);
    }
  }
}
