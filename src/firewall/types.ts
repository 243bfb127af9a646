import type { Family } from '../net/ip';

/** One ban as the kernel should hold it. */
export interface KernelBan {
  address: string; // canonical IP text (src/net/ip.ts canonicalIp), never anything else
  family: Family;
  /** Epoch ms when the ban ends; null = permanent. */
  until: number | null;
}

/** What a backend needs to know; built from the config by the composition root. */
export interface FirewallOptions {
  chain: string; // e.g. "ampere"
  target: 'DROP' | 'REJECT';
  /** Which iptables flavour to run: binaries are iptables-<flavour>, ip6tables-<flavour>, ... */
  iptables: 'auto' | 'nft' | 'legacy';
  /** Run every command through `ip netns exec <ns>` (tests and benchmarks only). */
  netns?: string;
}

/**
 * Every backend has the same door, after CrowdSec's firewall bouncer:
 * init once, setAll at start (one batch), then add/remove as decisions come, shutdown.
 * All methods reject with an Error whose message carries the failing command's stderr;
 * the caller logs it and carries on.
 */
export interface FirewallBackend {
  readonly name: string;
  /** The namespace its commands run in, if any (so helpers like conntrack go to the same place). */
  readonly netns?: string;
  /** Check binaries, create chain/sets, ensure the one jump rule. Idempotent. */
  init(): Promise<void>;
  /**
   * Flush Ampere's own chain/sets and load exactly these bans, in one batch. The bans are read
   * once, in order, as the load goes (the ipset backend streams them into \`ipset restore\`).
   */
  setAll(bans: Iterable<KernelBan>, now: number): Promise<void>;
  /** Apply a batch of new bans (one process per family at most). */
  add(bans: KernelBan[], now: number): Promise<void>;
  /** Remove bans early (unban). Removing a ban that is not there is not an error. */
  remove(bans: Pick<KernelBan, 'address' | 'family'>[]): Promise<void>;
  /**
   * True when an add or remove of this many bans goes through one ordered channel that applies
   * batches in the order they were written (the ipset backend's live shell): the queue may then
   * send it while an earlier one is still in flight. Absent or false: one batch at a time.
   */
  pipelines?(count: number): boolean;
  /** Addresses the kernel holds now (for checks, status and tests). */
  list(): Promise<string[]>;
  /** Leave bans in the kernel; only release resources. */
  shutdown(): Promise<void>;
}
