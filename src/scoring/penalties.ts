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
  /**
   * Failures that a SuccessfulAuth cleared still count here: this many times loyalty of them
   * within findtime ban, whatever successes came between (one valid credential must not buy
   * unlimited guesses at other accounts).
   */
  successFactor?: number;
  /** Hosts never banned whatever arrives (loopback, AMI host, allow list). */
  isAllowed?: (address: string, family: Family) => boolean;
}

export type Verdict =
  /** first: the first failure of a host not tracked (a spoofed flood is mostly these). */
  | { action: 'none'; first?: true }
  | { action: 'allowed' }
  | { action: 'cleared'; failures: number }
  | { action: 'ban'; failures: number; challenges: number; event: SecurityEvent };

interface Entry {
  fails: number[]; // receive times (ms) of failures inside the window, oldest first
  challenges: number[];
  last: number;
  cleared: number; // how many of the oldest fails came before a success: they no longer count toward loyalty
}

/**
 * The lists are replaced, never grown in place: a list holds at most loyalty-1 (or
 * challengeFactor x loyalty - 1) times (a host that authenticated: successFactor x loyalty - 1), and an array grown by push() reserves room for 17
 * more, which for a full table is tens of MB of empty slots (docs/notes/measurements.md, Heap). The unused list of an
 * entry is this shared, frozen empty one.
 */
const EMPTY: number[] = Object.freeze([]) as unknown as number[];

function appended(times: number[], t: number): number[] {
  return times.length === 0 ? [t] : times.concat(t);
}

/**
 * What the table holds per host. Most hosts of a scan or a spoofed flood send one failure and
 * are never heard of again: for those the Map holds just that failure's time (a number), and
 * an Entry with its lists is made only when the host comes back, which about halves both the
 * table and the garbage a flood of spoofed sources leaves behind (docs/notes/measurements.md, Heap).
 */
type HostState = number | Entry;

const NONE: Verdict = { action: 'none' };
const FIRST: Verdict = { action: 'none', first: true };
const ALLOWED: Verdict = { action: 'allowed' };

/**
 * The penalty table, after fail2ban's failmanager: pure, no I/O, time passed in.
 * A failure is any Error-severity event; a ChallengeSent counts separately and only bans
 * after challengeFactor x loyalty of them. A SuccessfulAuth clears the host's penalty (as the
 * original did: an office NAT where one phone mistypes is never banned), but the cleared failures
 * still count toward a second limit, successFactor x loyalty, which no success clears.
 * Windows slide: only events newer than findtime count.
 */
export class PenaltyTable {
  private readonly hosts = new Map<string, HostState>(); // insertion order = least recently seen first
  private challengeLimit: number;
  private failureLimit: number;
  private cursor: IterableIterator<string> | null = null; // see evictOldest()

  constructor(private readonly opts: ScoringOptions) {
    this.challengeLimit = opts.loyalty * (opts.challengeFactor ?? 5);
    this.failureLimit = opts.loyalty * (opts.successFactor ?? 10);
  }

  /** A reload: the next event of every host is judged with these (what is tracked stays). */
  configure(o: { loyalty: number; findtimeMs: number }): void {
    this.opts.loyalty = o.loyalty;
    this.opts.findtimeMs = o.findtimeMs;
    this.challengeLimit = o.loyalty * (this.opts.challengeFactor ?? 5);
    this.failureLimit = o.loyalty * (this.opts.successFactor ?? 10);
  }

  observe(event: SecurityEvent, now: number): Verdict {
    const { address } = event;
    if (event.kind === 'SuccessfulAuth') return this.succeeded(address, now);
    const isFailure = event.severity === 'Error';
    if (!isFailure && event.kind !== 'ChallengeSent') return NONE;
    const state = this.hosts.get(address);
    let entry: Entry;
    if (state !== undefined) {
      this.hosts.delete(address); // re-inserted below: most recent last
      entry = typeof state === 'number' ? { fails: [state], challenges: EMPTY, last: state, cleared: 0 } : state;
    } else {
      if (this.opts.isAllowed?.(address, event.family)) return ALLOWED;
      while (this.hosts.size >= this.opts.maxHosts) this.evictOldest();
      // A new host's first failure: its time is all there is to keep (unless it already bans).
      if (isFailure && this.opts.loyalty > 1) {
        this.hosts.set(address, now);
        return FIRST;
      }
      entry = { fails: EMPTY, challenges: EMPTY, last: now, cleared: 0 };
    }
    entry.last = now;
    if (isFailure) entry.fails = appended(entry.fails, now);
    else entry.challenges = appended(entry.challenges, now);
    trim(entry, now - this.opts.findtimeMs);
    const counted = entry.fails.length - entry.cleared;
    if (counted >= this.opts.loyalty || entry.fails.length >= this.failureLimit || entry.challenges.length >= this.challengeLimit) {
      const failures = counted >= this.opts.loyalty ? counted : entry.fails.length;
      return { action: 'ban', failures, challenges: entry.challenges.length, event };
    }
    this.hosts.set(address, entry);
    return NONE;
  }

  /**
   * A SuccessfulAuth: the host's failures stop counting toward loyalty and its challenges are
   * forgotten, but the failures stay (for successFactor x loyalty) until they leave the window.
   * The host keeps its place in the table (its last failure decides when prune drops it).
   */
  private succeeded(address: string, now: number): Verdict {
    const state = this.hosts.get(address);
    if (state === undefined) return NONE;
    const since = now - this.opts.findtimeMs;
    if (typeof state === 'number') {
      if (state < since) { this.hosts.delete(address); return { action: 'cleared', failures: 0 }; }
      this.hosts.set(address, { fails: [state], challenges: EMPTY, last: state, cleared: 1 });
      return { action: 'cleared', failures: 1 };
    }
    trim(state, since);
    const counted = state.fails.length - state.cleared;
    if (state.fails.length === 0) this.hosts.delete(address);
    else { state.cleared = state.fails.length; state.challenges = EMPTY; }
    return { action: 'cleared', failures: counted };
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

  /** Forgets every tracked host the test picks (a network just allowed): an operator's step, a walk of the table. */
  forgetWhere(test: (address: string) => boolean): number {
    let n = 0;
    for (const address of this.hosts.keys()) if (test(address)) { this.hosts.delete(address); n++; }
    return n;
  }

  /** Drop hosts with nothing inside the window; cheap because the oldest come first. */
  prune(now: number): number {
    const since = now - this.opts.findtimeMs;
    let dropped = 0;
    for (const [address, state] of this.hosts) {
      if ((typeof state === 'number' ? state : state.last) >= since) break;
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
    const s = this.hosts.get(address);
    const since = now - this.opts.findtimeMs;
    if (s === undefined) return 0;
    return typeof s === 'number' ? (s >= since ? 1 : 0) : s.fails.slice(s.cleared).filter((t) => t >= since).length;
  }
}

/** Drop an entry's times before `since`, keeping `cleared` pointing past the same failures. */
function trim(entry: Entry, since: number): void {
  const n = entry.fails.length;
  entry.fails = trimBefore(entry.fails, since);
  entry.cleared = Math.max(0, entry.cleared - (n - entry.fails.length));
  entry.challenges = trimBefore(entry.challenges, since);
}

/** The times from `since` on (the same array when none is older). */
function trimBefore(times: number[], since: number): number[] {
  let n = 0;
  while (n < times.length && times[n] < since) n++;
  return n === 0 ? times : n === times.length ? EMPTY : times.slice(n);
}
