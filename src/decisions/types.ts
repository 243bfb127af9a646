import type { BanSource, KernelBan } from '../firewall/types';
import type { Logger } from '../log';
import type { Family } from '../net/ip';
import type { BantimeOptions } from '../scoring/bantime';
import type { Store } from '../store';

/** What Decisions needs of the firewall: the serialising queue in src/firewall. */
export interface KernelQueue {
  add(bans: KernelBan[], now: number): Promise<void>;
  remove(bans: Pick<KernelBan, 'address' | 'family'>[]): Promise<void>;
  /** One full load; the source renders lines for a backend that loads text. */
  setAll(bans: BanSource, now: number): Promise<void>;
}

/** detail: the ban's source (auto, manual, legacy, fail2ban, fleet) or the unban's reason (unban, allowed, expired); ban: what a ban is (bans only). */
export type ChangeListener = (what: 'ban' | 'unban', address: string, detail: string, ban?: BanFacts) => void;

/** What a new ban is, for listeners that report it (notifications). */
export interface BanFacts { reason: BanReason; until: number | null; banCount: number; now: number }

export interface DecisionsOptions {
  store: Store;
  kernel: KernelQueue;
  bantime: BantimeOptions;
  log: Logger;
  /**
   * How long automatic bans wait to be committed together, from the first of them: 0 (the
   * default) commits at the end of the loop turn; the daemon waits for the burst to pass.
   */
  commitDelayMs?: number;
  /**
   * The kernel keeps no ban times (rules backend): a host banned before is stored before its
   * kernel command, since a start cannot tell its new rule from one an ended ban left behind.
   */
  storeRebansFirst?: boolean;
  clock?: () => number;
}

export interface BanReason {
  kind: string;
  service: string;
  account: string;
  failures: number;
}

export interface BanResult {
  address: string;
  family: Family;
  until: number | null;
  banCount: number;
  /** Resolves when the kernel holds the ban (or the command failed and was logged). */
  applied: Promise<void>;
}

/** An operator's ban (or an import's) that is in the kernel but whose row is still being retried. */
export class BanNotStoredYet extends Error {
  constructor(message: string, readonly result: BanResult) { super(message); }
}
