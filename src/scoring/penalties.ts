import type { SecurityEvent } from '../events/types';
import type { Family } from '../net/ip';

export interface ScoringOptions {
  /** Failures (Error-severity events) within findtime that ban a host: the loyalty-th one decides. */
  loyalty: number;
  findtimeMs: number;
  /** Bound on tracked hosts; the least recently seen are dropped first. */
  maxHosts: number;
  /** Unanswered challenges weigh less: this many times loyalty of them ban. */
  challengeFactor?: number;
  /** Hosts never banned whatever arrives (loopback, AMI host, allow list). */
  isExempt?: (address: string, family: Family) => boolean;
}

export type Verdict =
  | { action: 'none' }
  | { action: 'exempt' }
  | { action: 'cleared'; failures: number }
  | { action: 'ban'; failures: number; challenges: number; event: SecurityEvent };

interface Entry {
  fails: number[]; // receive times (ms) of failures inside the window, oldest first
  challenges: number[];
  last: number;
}

/**
 * The lists are replaced, never grown in place: a list holds at most loyalty-1 (or
 * challengeFactor x loyalty - 1) times, and an array grown by push() reserves room for 17
 * more, which for 200,000 tracked hosts is ~30 MB of empty slots. The unused list of an
 * entry is this shared, frozen empty one.
 */
const EMPTY: number[] = Object.freeze([]) as unknown as number[];

function appended(times: number[], t: number): number[] {
  return times.length === 0 ? [t] : times.concat(t);
}

const NONE: Verdict = { action: 'none' };
const EXEMPT: Verdict = { action: 'exempt' };

/**
 * The penalty table, after fail2ban's failmanager: pure, no I/O, time passed in.
 * A failure is any Error-severity event; a ChallengeSent counts separately and only bans
 * after challengeFactor x loyalty of them; a SuccessfulAuth forgets the host (as the original did).
 * Windows slide: only events newer than findtime count.
 */
export class PenaltyTable {
  private readonly hosts = new Map<string, Entry>(); // insertion order = least recently seen first
  private readonly challengeLimit: number;
  private cursor: IterableIterator<string> | null = null; // see evictOldest()

  constructor(private readonly opts: ScoringOptions) {
    this.challengeLimit = opts.loyalty * (opts.challengeFactor ?? 5);
  }

  observe(event: SecurityEvent, now: number): Verdict {
    const { address } = event;
    if (event.kind === 'SuccessfulAuth') {
      const entry = this.hosts.get(address);
      if (!entry) return NONE;
      this.hosts.delete(address);
      return { action: 'cleared', failures: entry.fails.length };
    }
    const isFailure = event.severity === 'Error';
    if (!isFailure && event.kind !== 'ChallengeSent') return NONE;
    let entry = this.hosts.get(address);
    if (entry) {
      this.hosts.delete(address); // re-inserted below: most recent last
    } else {
      if (this.opts.isExempt?.(address, event.family)) return EXEMPT;
      entry = { fails: EMPTY, challenges: EMPTY, last: now };
      while (this.hosts.size >= this.opts.maxHosts) this.evictOldest();
    }
    entry.last = now;
    if (isFailure) entry.fails = appended(entry.fails, now);
    else entry.challenges = appended(entry.challenges, now);
    const since = now - this.opts.findtimeMs;
    entry.fails = trimBefore(entry.fails, since);
    entry.challenges = trimBefore(entry.challenges, since);
    if (entry.fails.length >= this.opts.loyalty || entry.challenges.length >= this.challengeLimit) {
      return { action: 'ban', failures: entry.fails.length, challenges: entry.challenges.length, event };
    }
    this.hosts.set(address, entry);
    return NONE;
  }

  /**
   * Drop the least recently seen host. A Map keeps deleted entries as holes until it is
   * rehashed, and a fresh keys() iterator walks over all of them: with a full table under a
   * flood of new sources each eviction cost O(holes) (2/3 of the daemon's time at 1M
   * sources). One iterator kept across calls walks over each hole once. Everything before
   * its position has been deleted, and new or touched entries go to the end, so its next
   * key is always the oldest; once done it is replaced (a finished iterator stays done).
   */
  private evictOldest(): void {
    let next = this.cursor?.next();
    if (!next || next.done) {
      this.cursor = this.hosts.keys();
      next = this.cursor.next();
    }
    if (!next.done) this.hosts.delete(next.value);
  }

  /** Forget a host (it was banned, unbanned by hand, or allowed). */
  forget(address: string): boolean {
    return this.hosts.delete(address);
  }

  /** Drop hosts with nothing inside the window; cheap because the oldest come first. */
  prune(now: number): number {
    const since = now - this.opts.findtimeMs;
    let dropped = 0;
    for (const [address, entry] of this.hosts) {
      if (entry.last >= since) break;
      this.hosts.delete(address);
      dropped++;
    }
    return dropped;
  }

  get size(): number {
    return this.hosts.size;
  }

  /** Failures currently counted for a host (for status and tests). */
  failures(address: string, now: number): number {
    const e = this.hosts.get(address);
    return e ? e.fails.filter((t) => t >= now - this.opts.findtimeMs).length : 0;
  }
}

/** The times from `since` on (the same array when none is older). */
function trimBefore(times: number[], since: number): number[] {
  let n = 0;
  while (n < times.length && times[n] < since) n++;
  return n === 0 ? times : n === times.length ? EMPTY : times.slice(n);
}
