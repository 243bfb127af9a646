import type { Cidr } from '../net/cidr';
import { cidrContains, parseCidr } from '../net/cidr';
import { canonicalIp, type Family } from '../net/ip';
import type { BanRow, Store } from '../store';
import { BAN_SORTS, BAN_SOURCES, type BanSort } from '../store/pages';

/**
 * What the control API and the offline readers return: the same shapes whether the daemon
 * answered or the CLI read the database itself. Times are epoch milliseconds.
 */
export interface BanView {
  address: string;
  family: Family;
  since: number;
  until: number | null; // null = permanent
  banCount: number;
  source: string; // auto, manual, range, legacy, fail2ban, kernel, fleet
  /** The fleet node that made it; null: this node. */
  origin: string | null;
  reason: string; // one line for people
  kind: string;
  service: string;
  account: string;
  failures: number;
  active: boolean;
  liftedAt: number | null;
  liftReason: string | null;
}

export interface HistoryView {
  address: string;
  host: {
    firstSeen: number; lastSeen: number; failures: number; banCount: number; banned: boolean; banUntil: number | null;
    lastKind: string | null; lastService: string | null; lastAccount: string | null;
  } | null;
  /** Failures currently counted in memory (only when the daemon answered). */
  penalty: number | null;
  bans: BanView[];
  events: { at: number; kind: string; service: string; transport: string | null; account: string }[];
}

/** "ChallengeResponseFailed PJSIP account 100 (3 failures)" or the operator's text. */
export function reasonText(r: Pick<BanRow, 'reasonKind' | 'reasonService' | 'reasonAccount' | 'failures' | 'source'>): string {
  if (r.source !== 'auto') {
    const parts = [r.reasonKind];
    if (r.reasonAccount) parts.push(`account ${r.reasonAccount}`);
    return parts.join(' ');
  }
  const parts = [r.reasonKind];
  if (r.reasonService) parts.push(r.reasonService);
  if (r.reasonAccount) parts.push(`account ${r.reasonAccount}`);
  if (r.failures) parts.push(`(${r.failures} failure${r.failures === 1 ? '' : 's'})`);
  return parts.join(' ');
}

export function banView(r: BanRow, now: number): BanView {
  return {
    address: r.address, family: r.family, since: r.startedAt, until: r.until, banCount: r.banCount, source: r.source, origin: r.origin ?? null,
    reason: reasonText(r), kind: r.reasonKind, service: r.reasonService, account: r.reasonAccount, failures: r.failures,
    active: r.liftedAt === null && (r.until === null || r.until > now), liftedAt: r.liftedAt, liftReason: r.liftReason,
  };
}

/** A filter given on the command line: one address or a network. Null when it is neither. */
export function parseMatch(text: string): Cidr | null {
  return parseCidr(text);
}

/** A listing's filter: a network to match, or one host's address (read through its index). */
function matchFilter(text: string | undefined): { match: Cidr | null; address: string | undefined } {
  if (!text) return { match: null, address: undefined };
  const match = parseMatch(text);
  if (!match) throw new Error(`not an IP address or CIDR: ${JSON.stringify(text)}`);
  return { match, address: match.bits === (match.family === 4 ? 32 : 128) ? match.text : undefined };
}

export function listBanViews(store: Store, now: number, opts: { all?: boolean; match?: string }): BanView[] {
  const { match, address } = matchFilter(opts.match);
  const rows = store.bans.listBans(now, { all: opts.all, address });
  const out = match && address === undefined ? rows.filter((r) => cidrContains(match!, r.address, r.family as Family)) : rows;
  return out.map((r) => banView(r, now));
}

/** Filters and order of a listing, applied by SQLite: only this source, started at or after since (ms), the order. */
export interface BanFilter { source?: string; since?: number; sort?: BanSort }

/** A listing's filter from the control API's query (source, since, sort), or what is wrong with it. */
export function parseBanFilter(get: (name: string) => string | null): BanFilter | { error: string } {
  const f: BanFilter = {};
  const source = get('source');
  if (source !== null) {
    if (!(BAN_SOURCES as readonly string[]).includes(source)) return { error: `source must be one of ${BAN_SOURCES.join(', ')}` };
    f.source = source;
  }
  const since = get('since');
  if (since !== null) {
    if (!/^\d{1,16}$/.test(since) || !Number.isSafeInteger(Number(since))) return { error: 'since must be a time in epoch milliseconds' };
    f.since = Number(since);
  }
  const sort = get('sort');
  if (sort !== null) {
    if (!(BAN_SORTS as readonly string[]).includes(sort)) return { error: `sort must be one of ${BAN_SORTS.join(', ')}` };
    f.sort = sort as BanSort;
  }
  return f;
}

/** Rows a listing page holds at most, and the default. */
export const MAX_PAGE = 5000;
export const DEFAULT_PAGE = 2000;

/**
 * One page of listBanViews (newest first), for the daemon and the offline reader alike: a
 * listing of any length is read page by page, never whole. Continue with before = next until
 * next is null; a page may be short (even empty) before the end.
 */
export function listBanPage(store: Store, now: number, opts: { all?: boolean; match?: string; before?: number; limit?: number } & BanFilter): { bans: BanView[]; next: number | null } {
  const { match, address } = matchFilter(opts.match);
  const limit = Math.min(MAX_PAGE, Math.max(1, opts.limit ?? DEFAULT_PAGE));
  const { rows, next } = store.bans.listBansPage(now, { all: opts.all, address, before: opts.before, limit, source: opts.source, since: opts.since, sort: opts.sort });
  const out = match && address === undefined ? rows.filter((r) => cidrContains(match!, r.address, r.family as Family)) : rows;
  return { bans: out.map((r) => banView(r, now)), next };
}

/**
 * listBanPage as the JSON text of its answer ({"bans": [...], "next": ...}): made by SQLite for
 * one address or none; a network filter goes through listBanPage (the match is made in JS).
 */
export function listBanPageJson(store: Store, now: number, opts: { all?: boolean; match?: string; before?: number; limit?: number } & BanFilter): string {
  const match = opts.match ? parseMatch(opts.match) : null;
  if (opts.match && !match) throw new Error(`not an IP address or CIDR: ${JSON.stringify(opts.match)}`);
  if (match && match.bits !== (match.family === 4 ? 32 : 128)) return JSON.stringify(listBanPage(store, now, opts));
  const limit = Math.min(MAX_PAGE, Math.max(1, opts.limit ?? DEFAULT_PAGE));
  const { json, next } = store.bans.listBansPageJson(now, { all: opts.all, address: match?.text, before: opts.before, limit, source: opts.source, since: opts.since, sort: opts.sort });
  return `{"bans":${json},"next":${next}}`;
}

export function historyView(store: Store, text: string, now: number, limit = 1000): HistoryView {
  const ip = canonicalIp(text);
  if (!ip) throw new Error(`not an IP address: ${JSON.stringify(text)}`);
  const h = store.history.host(ip.address);
  return {
    address: ip.address,
    host: h ? {
      firstSeen: h.firstSeen, lastSeen: h.lastSeen, failures: h.failures, banCount: h.banCount, banned: h.banned, banUntil: h.banUntil,
      lastKind: h.lastKind, lastService: h.lastService, lastAccount: h.lastAccount,
    } : null,
    penalty: null,
    bans: store.bans.listBans(now, { all: true, address: ip.address }).map((r) => banView(r, now)),
    events: store.history.recentEvents(ip.address, limit).map((e) => ({ at: e.at, kind: e.kind, service: e.service, transport: e.transport, account: e.account })),
  };
}
