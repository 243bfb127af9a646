import { lookup } from 'node:dns/promises';
import type { Config } from '../config';
import type { Logger } from '../log';
import { cidrContains, NetworkSet, parseCidr, textPrefix, type Cidr } from '../net/cidr';
import { canonicalIp, familyOf, type Family } from '../net/ip';
import { overlaps } from '../net/range';

/** Where an allow entry comes from: only runtime entries live in the database (and can be removed). */
export type AllowSource = 'builtin' | 'ami-host' | 'config' | 'runtime';

/** One entry of the allow list as `ampere allow list` shows it. */
export interface AllowEntry {
  cidr: string;
  source: AllowSource;
  addedAt: number | null;
  note: string;
}

/** What the allow list needs of the database (the store's `allowed` table). */
export interface AllowStore {
  allowList(): { cidr: string; addedAt: number; note: string }[];
  addAllowed(cidr: string, now: number, note?: string): void;
  removeAllowed(cidr: string): boolean;
  /** Runs the change once the database's write lock is free (waiting, not failing, behind another writer). */
  writing<T>(fn: () => T): Promise<T>;
}

/** The check the ban paths need: restore and adopt at start, the penalty table on an event. */
export interface AllowCheck {
  allows(address: string, family: Family): boolean;
  /** Texts every allowed address starts with ('' for any): see textPrefix in src/net/cidr. */
  textPrefixes(): string[];
}

/** What adding an entry does beyond storing it: bans it covers are lifted, penalties it covers forgotten. */
export interface AllowEffects {
  activeBans(now: number): { address: string; family: Family }[];
  unban(address: string, now: number, why: 'allowed'): Promise<boolean>;
  /** Forgets the penalty of every tracked host the test picks. */
  forgetWhere(test: (address: string) => boolean): number;
}

/** Loopback is never banned. */
const LOOPBACK: AllowEntry[] = [
  { cidr: '127.0.0.0/8', source: 'builtin', addedAt: null, note: 'loopback' },
  { cidr: '::1', source: 'builtin', addedAt: null, note: 'loopback' },
];

/**
 * A network in its canonical text: the address part masked to the prefix, so 192.0.2.50/28 is
 * stored (and removed) as 192.0.2.48/28, the way the operator will see it listed.
 */
export function networkOf(text: string): Cidr | null {
  const c = parseCidr(text);
  if (!c) return null;
  const width = c.family === 4 ? 32 : 128;
  if (c.bits === width) return c;
  const hex = c.base.toString(16).padStart(width / 4, '0');
  const addr = c.family === 4
    ? [0, 2, 4, 6].map((i) => parseInt(hex.slice(i, i + 2), 16)).join('.')
    : canonicalIp(hex.match(/.{4}/g)!.join(':'))!.address;
  return parseCidr(`${addr}/${c.bits}`);
}

/**
 * The Asterisk host's addresses: it is never banned. A name is resolved only when asked (the
 * daemon, once at start); one that does not resolve is logged and adds nothing.
 */
export async function amiHostAddresses(host: string, log: Pick<Logger, 'warn'> | null): Promise<string[]> {
  const literal = canonicalIp(host);
  if (literal) return [literal.address];
  if (!log) return [];
  return lookup(host, { all: true }).then((r) => r.map((a) => canonicalIp(a.address)?.address).filter((a): a is string => !!a), (err) => {
    log.warn({ host, err: String(err) }, 'AMI host name did not resolve: not added to the allow list');
    return [];
  });
}

/** The entries not in the database: loopback, the configured networks, the Asterisk host. */
export function fixedEntries(cfg: Pick<Config, 'allow' | 'host'>, amiAddresses: string[]): AllowEntry[] {
  return [
    ...LOOPBACK,
    ...cfg.allow.map((c) => ({ cidr: c.text, source: 'config' as const, addedAt: null, note: '' })),
    ...amiAddresses.map((a) => ({ cidr: a, source: 'ami-host' as const, addedAt: null, note: `the Asterisk host${a === cfg.host ? '' : ` (${cfg.host})`}` })),
  ];
}

/** The allow list without a daemon (the CLI's offline paths): the AMI host only when it is an address, no name resolved. */
export function offlineAllowList(cfg: Pick<Config, 'allow' | 'host'>, store: AllowStore | null): AllowList {
  const ami = canonicalIp(cfg.host);
  return new AllowList(fixedEntries(cfg, ami ? [ami.address] : []), store);
}

/**
 * The allow list: addresses Ampere never bans. Fixed entries (fixedEntries) and runtime ones
 * (the database, `ampere allow add`), matched as one set; the daemon and the CLI both read it here.
 */
export class AllowList implements AllowCheck {
  private readonly set: NetworkSet;
  private fixedByText: Map<string, AllowEntry>;

  constructor(private fixed: AllowEntry[], private readonly store: AllowStore | null) {
    this.fixedByText = new Map(fixed.map((e) => [e.cidr, e]));
    const runtime = store ? store.allowList().map((r) => r.cidr) : [];
    this.set = new NetworkSet([...fixed.map((e) => e.cidr), ...runtime].map(parseCidr).filter((c): c is Cidr => c !== null));
  }

  /** Loopback and these networks, nothing stored (tests, dry runs). */
  static of(networks: string[]): AllowList {
    return new AllowList([...LOOPBACK, ...networks.map((cidr) => ({ cidr, source: 'config' as const, addedAt: null, note: '' }))], null);
  }

  allows(address: string, family: Family): boolean {
    return this.set.matches(address, family) !== undefined;
  }

  /** The entry that allows this address, if one does: for messages that say why. */
  allowedBy(address: string, family: Family): { cidr: string; source: AllowSource } | undefined {
    const c = this.set.matches(address, family);
    if (!c) return undefined;
    return { cidr: c.text, source: this.fixedByText.get(c.text)?.source ?? 'runtime' };
  }

  /** "allowed (10.0.0.0/8)" or undefined: the reason an import refuses an address. */
  refusal(address: string, family: Family): string | undefined {
    const by = this.allowedBy(address, family);
    return by ? `allowed (${by.cidr})` : undefined;
  }

  /** The entry a range would cover or lie inside (a range ban must not reach an allowed host), if any. */
  rangeConflict(range: Cidr): { cidr: string; source: AllowSource } | undefined {
    const c = this.set.list().find((a) => overlaps(a, range));
    return c ? { cidr: c.text, source: this.fixedByText.get(c.text)?.source ?? 'runtime' } : undefined;
  }

  textPrefixes(): string[] {
    return [...new Set(this.set.list().map(textPrefix))];
  }

  /** Fixed entries first, then the runtime ones in the order they were added. */
  entries(): AllowEntry[] {
    const runtime = this.store ? this.store.allowList().map((e) => ({ cidr: e.cidr, source: 'runtime' as const, addedAt: e.addedAt, note: e.note })) : [];
    return [...this.fixed, ...runtime];
  }

  fixedEntry(cidr: string): AllowEntry | undefined {
    return this.fixedByText.get(cidr);
  }

  /**
   * A runtime entry: stored, matched from now on, the active bans it covers lifted and the
   * penalties it covers forgotten (so no tracked host is banned later: the penalty table checks
   * the allow list only for hosts it does not track).
   */
  async add(c: Cidr, note: string, now: number, effects: AllowEffects): Promise<{ cidr: string; added: boolean; unbanned: string[] }> {
    if (!this.store) throw new Error('this allow list has no database');
    const store = this.store;
    const known = await store.writing(() => {
      const had = store.allowList().some((e) => e.cidr === c.text);
      store.addAllowed(c.text, now, note);
      return had;
    });
    if (!this.set.list().some((e) => e.text === c.text)) this.set.add(c);
    return { cidr: c.text, added: !known, unbanned: await lift(c, now, effects) };
  }

  /**
   * A reload: the configured entries become these (the others stay). An entry that is new lifts
   * the bans and forgets the penalties it covers, as `allow add` does; a dropped one stops
   * matching unless a runtime or other fixed entry holds the same network.
   */
  async replaceConfigured(networks: Cidr[], now: number, effects: AllowEffects): Promise<{ added: string[]; removed: string[]; unbanned: string[] }> {
    const before = new Set(this.fixed.filter((e) => e.source === 'config').map((e) => e.cidr));
    const next = new Map(networks.map((c) => [c.text, c]));
    const kept = this.fixed.filter((e) => e.source !== 'config');
    this.fixed = [...kept, ...[...next.keys()].map((cidr) => ({ cidr, source: 'config' as const, addedAt: null, note: '' }))];
    this.fixedByText = new Map(this.fixed.map((e) => [e.cidr, e]));
    const runtime = new Set(this.store ? this.store.allowList().map((r) => r.cidr) : []);
    const removed = [...before].filter((t) => !next.has(t));
    for (const t of removed) if (!this.fixedByText.has(t) && !runtime.has(t)) this.set.remove(t);
    const added = [...next.values()].filter((c) => !before.has(c.text));
    const unbanned: string[] = [];
    for (const c of added) {
      if (!this.set.list().some((e) => e.text === c.text)) this.set.add(c);
      // One by one, not push(...): a wide entry may lift more bans than a call takes arguments.
      for (const a of await lift(c, now, effects)) unbanned.push(a);
    }
    return { added: added.map((c) => c.text), removed, unbanned };
  }

  /** Removes a runtime entry; a fixed one stays (its runtime duplicate, if any, is removed). */
  async remove(c: Cidr): Promise<{ removed: boolean; fixed: AllowEntry | undefined }> {
    const store = this.store;
    const removed = store ? await store.writing(() => store.removeAllowed(c.text)) : false;
    const fixed = this.fixedByText.get(c.text);
    if (removed && !fixed) this.set.remove(c.text);
    return { removed, fixed };
  }
}

/** The active bans a new entry covers are lifted and the tracked penalties it covers forgotten. */
async function lift(c: Cidr, now: number, effects: AllowEffects): Promise<string[]> {
  const unbanned: string[] = [];
  for (const b of effects.activeBans(now)) {
    if (!cidrContains(c, b.address, b.family)) continue;
    await effects.unban(b.address, now, 'allowed');
    unbanned.push(b.address);
  }
  effects.forgetWhere((address) => cidrContains(c, address, familyOf(address)));
  return unbanned;
}
