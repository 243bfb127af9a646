import type { Family } from '../net/ip';
import type { KernelView } from './verify';

/** One ban as the kernel should hold it. */
export interface KernelBan {
  address: string; // canonical IP text (src/net/ip.ts canonicalIp), never anything else
  family: Family;
  /** Epoch ms when the ban ends; null = permanent. */
  until: number | null;
  /** false: the host's established flows are not cut (a peer's decision read long after it was made; src/fleet/apply.ts). */
  cutFlows?: boolean;
}

/**
 * How a backend that loads text (ipset) wants a full load written, so the store can render
 * every ban in one query, in SQLite, instead of the daemon making a string per ban (at 100k
 * bans that work, not the kernel, was most of the start). A ban becomes the line
 * `<prefix of its family><address><infix><seconds>`: seconds left, rounded up; 0 when the
 * ban has no end or more than maxSeconds left (ipset: no timeout).
 */
export interface BanLineFormat {
  prefix: Record<Family, string>;
  /** A range's lines (an address with a `/`). */
  rangePrefix: Record<Family, string>;
  infix: string;
  maxSeconds: number;
}

/**
 * Bans rendered in a backend's BanLineFormat, one text per family (lines joined by newlines,
 * no newline at the end; '' for none), and how many lines in all. Only addresses made of
 * hex digits, '.' and ':' are rendered, so no line can carry another command; the caller
 * checks each address for canonical form (see Decisions.restore).
 */
export interface BanLines {
  4: string;
  6: string;
  count: number;
}

/**
 * A ban as the kernel holds it in Ampere's own sets or chain, read back at start.
 * timeoutSec: seconds left (0: no timeout, a permanent ipset member); null when the backend
 * keeps no time (rules).
 */
export interface ListedBan {
  address: string;
  family: Family;
  timeoutSec: number | null;
}

/** What a backend needs to know; built from the config by the composition root. */
export interface FirewallOptions {
  chain: string; // e.g. "ampere"
  target: 'DROP' | 'REJECT';
  /** Ports the jump from INPUT matches (TCP and UDP), as `iptables -S` prints them; empty or absent: every packet. */
  ports?: string;
  /** Which iptables flavour to run: binaries are iptables-<flavour>, ip6tables-<flavour>, ... */
  iptables: 'auto' | 'nft' | 'legacy';
  /** Run every command through `ip netns exec <ns>` (tests and benchmarks only). */
  netns?: string;
  /**
   * false: IPv4 only, for a kernel without IPv6 (booted with ipv6.disable=1), where every
   * ip6tables command fails: no IPv6 chain or set is made, and IPv6 bans stay out of the kernel.
   * Default true.
   */
  ipv6?: boolean;
  /** The ipset backend: the most elements each family's set of hosts holds (its maxelem, set_size). Default SET_SIZE_DEFAULT. */
  setSize?: number;
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
  readonly netns: string | undefined;
  /** The address families it enforces. Bans of another family must not reach it. */
  readonly families: readonly Family[];
  /** False when there is no kernel state to check (dry-run): the reconciler does not run. */
  readonly verifiable: boolean;
  /**
   * True when the kernel keeps each ban's end (ipset timeouts): a start can then tell a ban
   * the database has not stored yet from one the database already ended.
   */
  readonly keepsBanTimes: boolean;
  /** Check binaries, create chain/sets, ensure the one jump rule. Idempotent. */
  init(): Promise<void>;
  /**
   * Flush Ampere's own chain/sets and load exactly these bans, in one batch. The bans are read
   * once, in order, as the load goes; a backend that loads text (ipset) asks the source to
   * render them in its format first, and reads them one by one only when the source cannot.
   */
  setAll(bans: BanSource, now: number): Promise<void>;
  /** Apply a batch of new bans (one process per family at most). */
  add(bans: KernelBan[], now: number): Promise<void>;
  /** Remove bans early (unban). Removing a ban that is not there is not an error. */
  remove(bans: Pick<KernelBan, 'address' | 'family'>[]): Promise<void>;
  /**
   * True when an add or remove of this many bans goes through one channel that applies batches
   * in the order they were written (the ipset backend's live shell): the queue may then send it
   * while an earlier one is still in flight. False: one batch at a time.
   */
  keepsOrder(count: number): boolean;
  /** Addresses the kernel holds now (for checks, status and tests). */
  list(): Promise<string[]>;
  /** Look at the kernel without changing it: the jump, the chain and its rules, the sets, and the members per family (see verify.ts). */
  inspect(): Promise<KernelView>;
  /**
   * The bans in Ampere's own sets or chain with the time they have left, canonical addresses
   * only (a start adopts those the database lacks). Read once: it may be read from the kernel
   * as it is iterated (a failure then throws there), so a million members are never all held.
   */
  listBans(): Promise<Iterable<ListedBan> | AsyncIterable<ListedBan>>;
  /** The target of the rules written from now on (a reload); the next full load (setAll) rewrites every rule with it. */
  setTarget(target: FirewallOptions['target']): void;
  /** The maxelem of the sets of hosts made from now on (ipset's set_size, a reload): the next full load swaps in sets of it. Nothing for a backend without sets. */
  setSetSize(setSize: number): void;
  /** Leave bans in the kernel; only release resources. */
  shutdown(): Promise<void>;
}

/**
 * The bans of a full load. Read one by one (each once, in order), or rendered all at once as
 * lines in a backend's format when the source can (the store does it in SQL, with no string
 * made per ban here); render returns undefined when it cannot.
 */
export interface BanSource extends Iterable<KernelBan> {
  render?(format: BanLineFormat): BanLines | undefined;
  /** The same lines a slice at a time (whole lines, each ending in a newline) as the loader pulls them; count once drained. */
  renderSliced?(format: BanLineFormat, families: readonly Family[]): { readonly slices: Iterable<Buffer>; readonly count: number } | undefined;
}

/** A source of plain bans (a list, or any iterable): nothing rendered. */
export function banRows(bans: Iterable<KernelBan>): BanSource {
  return { [Symbol.iterator]: () => bans[Symbol.iterator]() };
}

/** A source of bans already rendered (tests, benchmarks): for a backend that loads text only. */
export function renderedBans(lines: BanLines): BanSource {
  return { [Symbol.iterator]: () => [][Symbol.iterator](), render: () => lines };
}
