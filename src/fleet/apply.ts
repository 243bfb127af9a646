import type { Decisions, PeerBan } from '../decisions';
import type { Logger } from '../log';
import { parseHost, type Family } from '../net/ip';
import type { Store } from '../store';

/** A decision read from the fleet table (every field hostile until checked here). */
export interface Received {
  id: string;
  txid: string;
  origin: unknown;
  action: unknown;
  address: unknown;
  until: number | null;
  reasonKind: unknown;
  reasonService: unknown;
  reasonAccount: unknown;
  failures: unknown;
  operator: boolean;
  createdAt: number;
}

/** Why a peer's decision was not applied (the metric's `why` label). */
export type Refusal = 'invalid' | 'allowed' | 'rate' | 'foreign-unban' | 'expired' | 'full';

export type Applied =
  | { ok: true; what: 'ban' | 'unban' | 'already'; address: string; capped: boolean; applied?: Promise<void> }
  | { ok: false; why: Refusal; address?: string; detail: string };

export interface ApplyDeps {
  decisions: Decisions;
  store: Store;
  /** This node's allow list (configured, runtime, loopback, the AMI host). */
  isAllowed(address: string, family: Family): boolean;
  banMaxMs: number;
  /** set_size as configured now (a reload changes it): the hosts each family's set holds. */
  setSize(): number;
  log: Logger;
}

/**
 * Peers may fill each family's set up to this share of set_size and no further: the last
 * eighth stays for this node's own bans, so a compromised or confused peer that floods bans
 * (within fleet_receive_rate, for fleet_ban_max) cannot fill the set and keep the scanners
 * attacking this node out of the kernel.
 */
export const peerLimit = (setSize: number): number => setSize - Math.floor(setSize / 8);

/** New hosts peers' bans may still add per family, given the bans held now. */
export function peerRoom(held: { v4: number; v6: number }, setSize: number): Record<Family, number> {
  const limit = peerLimit(setSize);
  return { 4: limit - held.v4, 6: limit - held.v6 };
}

/**
 * A peer's ban made longer ago than this when it arrives (a catch-up: a node joining, or back
 * after an outage) leaves its host's established flows alone. Fresh ones come at most at
 * fleet_receive_rate and are cut as a local ban's; a joining node's million would queue a
 * million addresses for the conntrack helper (~60 MB of heap, and hours of its table walks).
 */
export const FLOW_CUT_AGE_MS = 60_000;

export const ORIGIN_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/** A peer's text as it may be stored and shown: one line, bounded. */
const clean = (v: unknown, max: number) => (typeof v === 'string' ? v.replace(/[\u0000-\u001f\u007f]+/g, ' ').trim().slice(0, max) : '');

/** A decision that passed every check and is a ban to make (fresh: of a host this node holds no ban of), or the decision's outcome (an unban is made here). */
export type Checked = { ban: PeerBan; capped: boolean; fresh: boolean } | Applied;

/**
 * One peer decision through the same checks as a local ban: a canonical single host, not on
 * this node's allow list, at most fleet_ban_max long and never permanent. A ban that passes is
 * returned, to be made with its page by Decisions.banMany (stored with source fleet and its
 * origin); anything else is done here. A peer's unban lifts only a ban that came from that same
 * peer, unless an operator role made it.
 */
export function checkDecision(d: Received, deps: ApplyDeps, now: number): Checked {
  if (typeof d.origin !== 'string' || !ORIGIN_RE.test(d.origin)) return { ok: false, why: 'invalid', detail: 'bad origin' };
  if (d.action !== 'ban' && d.action !== 'unban') return { ok: false, why: 'invalid', detail: 'bad action' };
  const ip = typeof d.address === 'string' ? parseHost(d.address) : { ok: false as const, reason: 'no address' };
  if (!ip.ok) return { ok: false, why: 'invalid', detail: ip.reason };
  const { address, family } = ip;
  if (d.action === 'unban') return unbanFromPeer(d, address, deps, now);
  if (deps.isAllowed(address, family)) return { ok: false, why: 'allowed', address, detail: 'on this node\'s allow list' };
  // Counted from the decision's creation, so every node ends it at the same time however late it reads it.
  const created = Math.min(Number.isFinite(d.createdAt) ? d.createdAt : now, now);
  const cap = created + deps.banMaxMs;
  const until = d.until === null || d.until > cap ? cap : d.until;
  if (until <= now) return { ok: false, why: 'expired', address, detail: 'ended before it arrived' };
  const current = deps.decisions.bannedUntil(address);
  // Already banned at least as long (a local permanent ban above all): nothing to shorten.
  if (current === null || (current !== undefined && current >= until)) return { ok: true, what: 'already', address, capped: false };
  const failures = typeof d.failures === 'number' && Number.isSafeInteger(d.failures) && d.failures >= 0 ? d.failures : 0;
  const reason = { kind: clean(d.reasonKind, 200) || 'fleet', service: clean(d.reasonService, 64), account: clean(d.reasonAccount, 200), failures };
  return { ban: { address, family, until, reason, origin: d.origin, cutFlows: now - created <= FLOW_CUT_AGE_MS }, capped: until !== d.until, fresh: current === undefined };
}

function unbanFromPeer(d: Received, address: string, deps: ApplyDeps, now: number): Applied {
  if (deps.decisions.bannedUntil(address) === undefined) return { ok: true, what: 'already', address, capped: false };
  // The active row says whose ban it is: pending rows are written first so a ban from a
  // moment ago is seen.
  deps.decisions.flushWrites(true);
  const active = deps.store.bans.listBans(now, { address })[0];
  const fromThatPeer = active !== undefined && active.source === 'fleet' && active.origin === d.origin;
  if (!fromThatPeer && !d.operator) {
    return { ok: false, why: 'foreign-unban', address, detail: `the ban here is ${active ? (active.origin ? `from ${active.origin}` : `this node's (${active.source})`) : 'not stored yet'}` };
  }
  void deps.decisions.unban(address, now, 'fleet').catch((err) => deps.log.error({ address, err: String(err) }, 'fleet unban failed'));
  return { ok: true, what: 'unban', address, capped: false };
}
