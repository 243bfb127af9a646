/**
 * A token bucket: `rate` per second, holding at most `burst`. The clock is the caller's, so a
 * receiver can count by the decisions' own creation times (every node then refuses the same
 * rows of a flood, whenever it reads them) and a publisher by its wall clock.
 */
export class TokenBucket {
  private tokens: number;
  private last: number | null = null;

  constructor(private readonly rate: number, private readonly burst: number) {
    this.tokens = burst;
  }

  take(atMs: number): boolean {
    this.refill(atMs);
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  /** Whole tokens available at atMs (for sizing a batch). */
  available(atMs: number): number {
    this.refill(atMs);
    return Math.floor(this.tokens);
  }

  private refill(atMs: number): void {
    // A time earlier than the last one (clocks of different nodes) adds nothing.
    if (this.last !== null && atMs > this.last) this.tokens = Math.min(this.burst, this.tokens + ((atMs - this.last) / 1000) * this.rate);
    if (this.last === null || atMs > this.last) this.last = atMs;
  }
}

/** One bucket per key (an origin), bounded in number: the least recently used go first. */
export class KeyedBuckets {
  private readonly buckets = new Map<string, TokenBucket>();
  constructor(private readonly rate: number, private readonly burst: number, private readonly maxKeys = 10_000) {}

  take(key: string, atMs: number): boolean {
    let b = this.buckets.get(key);
    if (b) this.buckets.delete(key);
    else b = new TokenBucket(this.rate, this.burst);
    this.buckets.set(key, b);
    if (this.buckets.size > this.maxKeys) this.buckets.delete(this.buckets.keys().next().value!);
    return b.take(atMs);
  }
}
