/**
 * The banned addresses (address -> until, null = permanent), counting the IPv6 ones as they
 * come and go: the status asks every few seconds, and counting the keys of a large set each time is slow.
 */
export class BannedSet {
  private readonly map = new Map<string, number | null>();
  private v6 = 0;

  set(address: string, until: number | null): void {
    const before = this.map.size;
    this.map.set(address, until);
    if (this.map.size > before && address.includes(':')) this.v6++;
  }

  delete(address: string): boolean {
    const had = this.map.delete(address);
    if (had && address.includes(':')) this.v6--;
    return had;
  }

  clear(): void {
    this.map.clear();
    this.v6 = 0;
  }

  has(address: string): boolean { return this.map.has(address); }
  get(address: string): number | null | undefined { return this.map.get(address); }
  keys(): IterableIterator<string> { return this.map.keys(); }
  entries(): IterableIterator<[string, number | null]> { return this.map.entries(); }
  get size(): number { return this.map.size; }
  get byFamily(): { v4: number; v6: number } { return { v4: this.map.size - this.v6, v6: this.v6 }; }
}

/** Ban counts of hosts banned since start, so a repeat ban needs no database read before its kernel command. */
export class CountCache {
  private readonly map = new Map<string, number>();
  constructor(private readonly max = 65_536) {}
  get(address: string): number | undefined { return this.map.get(address); }
  set(address: string, count: number): void {
    this.map.delete(address);
    this.map.set(address, count);
    // Oldest first out: the cache only saves a read, the database keeps the truth.
    if (this.map.size > this.max) this.map.delete(this.map.keys().next().value as string);
  }
}
