import type { Family } from '../net/ip';
import { targetSpec, type FamilyTools } from './chain';
import { jumpOk, jumpState } from './jump';
import type { FirewallOptions } from './types';

/** What drifted, as the log line and the repairs metric (`what`) name it. */
export type DriftKind = 'jump' | 'chain' | 'rules' | 'set' | 'entries';

/** One way the kernel differs from what Ampere made. */
export interface Drift {
  what: DriftKind;
  family: Family;
  /** For the log line, e.g. "jump missing from INPUT". */
  detail: string;
}

/** How many bans one family's set (or chain) holds in the kernel. */
export interface KernelCount {
  family: Family;
  count: number;
  /** Where they are: the set's or the chain's name. */
  where: string;
  /**
   * The most members the family's set of hosts holds (its maxelem, set_size): with more bans
   * than that, some cannot be in the kernel, and missing ones are not drift (a reload would
   * only leave them out again).
   */
  capacity?: number;
}

/** A backend's look at the kernel: what is out of shape, and the members it could count. */
export interface KernelView {
  drifts: Drift[];
  counts: KernelCount[];
}

/**
 * The chain, a jump to it and its rules, from one `iptables -S` listing of the whole filter
 * table (so an operator's own jump from any chain counts). ruleOk(rule, last) judges each
 * `-A <chain> ...` line in order; `size`, when given, is how many rules there must be. The
 * chain's rules are returned for counting.
 */
export function chainView(lines: string[], chain: string, ports: string, family: Family, ruleOk: (rule: string, last: boolean, index: number) => boolean, size?: number): { drifts: Drift[]; rules: string[] } {
  const drifts: Drift[] = [];
  if (!lines.includes(`-N ${chain}`)) {
    drifts.push({ what: 'chain', family, detail: `chain ${chain} missing` });
    drifts.push({ what: 'jump', family, detail: 'jump missing from INPUT' });
    return { drifts, rules: [] };
  }
  const jump = jumpState(lines, chain, ports);
  if (!jumpOk(jump)) drifts.push({ what: 'jump', family, detail: jump.stale.length ? 'jump in INPUT for other ports' : 'jump missing from INPUT' });
  const head = `-A ${chain} `;
  const rules = lines.filter((l) => l.startsWith(head)).map((l) => l.slice(head.length));
  if (rules.length === 0) drifts.push({ what: 'rules', family, detail: `chain ${chain} flushed` });
  else if ((size !== undefined && rules.length !== size) || !rules.every((r, i) => ruleOk(r, i === rules.length - 1, i))) drifts.push({ what: 'rules', family, detail: `rules of chain ${chain} changed` });
  return { drifts, rules };
}

/** One set's header as `ipset list -t` prints it. */
export interface SetHeader {
  type: string;
  header: string;
  entries: number;
}

/** `ipset list -t` (every set, headers only) to name -> header. */
export function parseSetHeaders(text: string): Map<string, SetHeader> {
  const out = new Map<string, SetHeader>();
  let cur: (SetHeader & { name: string }) | null = null;
  for (const line of text.split('\n')) {
    const c = line.indexOf(': ');
    if (c < 0) continue;
    const [key, value] = [line.slice(0, c), line.slice(c + 2).trim()];
    if (key === 'Name') { cur = { name: value, type: '', header: '', entries: NaN }; out.set(value, cur); }
    else if (!cur) continue;
    else if (key === 'Type') cur.type = value;
    else if (key === 'Header') cur.header = value;
    else if (key === 'Number of entries') cur.entries = Number(value);
  }
  return out;
}

/**
 * A live set must exist as a `hash:ip` (`hash:net` for ranges) of its family with timeouts (else
 * every ban fails or never matches); its maxelem may be any (a set_size changed since it was made).
 */
export function setView(headers: Map<string, SetHeader>, name: string, family: Family, range = false): { drift?: Drift; count?: KernelCount; maxelem?: number } {
  const h = headers.get(name);
  if (!h) return { drift: { what: 'set', family, detail: `set ${name} missing` } };
  const words = h.header.split(/\s+/);
  const fam = words[words.indexOf('family') + 1];
  if (h.type !== (range ? 'hash:net' : 'hash:ip') || fam !== (family === 4 ? 'inet' : 'inet6') || !words.includes('timeout')) {
    return { drift: { what: 'set', family, detail: `set ${name} has the wrong type (${h.type} ${h.header.split(' hashsize')[0]})` } };
  }
  const maxelem = words.includes('maxelem') ? Number(words[words.indexOf('maxelem') + 1]) : NaN;
  return { ...(Number.isFinite(h.entries) ? { count: { family, count: h.entries, where: name } } : {}), ...(Number.isFinite(maxelem) ? { maxelem } : {}) };
}

/**
 * Compare the kernel's members with the daemon's bans, family by family. The kernel may hold
 * fewer by bans whose time is over (its own timeouts can take them before the daemon's expiry
 * tick): `ended(family)` says how many of those the daemon still counts.
 */
export function countDrifts(counts: KernelCount[], banned: Record<Family, number>, ended: (family: Family) => number): Drift[] {
  const out: Drift[] = [];
  for (const { family, count, where, capacity } of counts) {
    const want = banned[family];
    if (count > want) out.push({ what: 'entries', family, detail: `${count - want} entries in ${where} that are not bans` });
    else if (count < want && count < want - ended(family) && !(want > (capacity ?? Infinity))) out.push({ what: 'entries', family, detail: `${want - count} of ${want} bans missing from ${where}` });
  }
  return out;
}

/** "jump missing from INPUT (v4), set ampere-v6 missing (v6)" */
export function describeDrifts(drifts: Drift[]): string {
  return drifts.map((d) => `${d.detail} (v${d.family})`).join(', ');
}

/** What a look at an ipset backend's kernel state needs. */
export interface IpsetLook {
  fams: FamilyTools[];
  chain: string;
  /** The jump's ports ('' every packet). */
  ports: string;
  /** Each family's `iptables -S` of the filter table, in the order of fams. */
  tables(): Promise<string[][]>;
  /** Per family the ranges' and the hosts' sets (ipset-sets.ts). */
  slots: { family: Family; range: boolean; live: string }[];
  /** The chain's content as written: each set's rule, then RETURN. */
  rules(ft: FamilyTools): string[];
  /** `ipset list -t` of every set. */
  headers(): Promise<string>;
}

/** The ipset backend: exactly its rules, each live set of the right type, and the members of a family's sets together. */
export async function inspectIpset(x: IpsetLook): Promise<KernelView> {
  const [headers, tables] = await Promise.all([x.headers(), x.tables()]);
  const sets = parseSetHeaders(headers);
  const view: KernelView = { drifts: [], counts: [] };
  x.fams.forEach((ft, i) => {
    const want = x.rules(ft).map((l) => l.slice(`-A ${x.chain} `.length));
    view.drifts.push(...chainView(tables[i], x.chain, x.ports, ft.family, (r, _last, k) => r === want[k], want.length).drifts);
    const slots = x.slots.filter((s) => s.family === ft.family);
    const views = slots.map((s) => setView(sets, s.live, s.family, s.range));
    for (const v of views) if (v.drift) view.drifts.push(v.drift);
    const counted = views.map((v) => v.count).filter((c): c is KernelCount => c !== undefined);
    const capacity = views[slots.findIndex((s) => !s.range)]?.maxelem;
    if (counted.length === views.length && counted.length > 0) {
      view.counts.push({ family: ft.family, count: counted.reduce((n, c) => n + c.count, 0), where: counted.map((c) => c.where).join(' + '), ...(capacity !== undefined ? { capacity } : {}) });
    }
  });
  return view;
}

/** The rules backend: one ban rule per host with the configured target, RETURN last; the rules counted. */
export async function inspectRules(x: { fams: FamilyTools[]; chain: string; ports: string; tables(): Promise<string[][]>; target: FirewallOptions['target'] }): Promise<KernelView> {
  const tables = await x.tables();
  const view: KernelView = { drifts: [], counts: [] };
  x.fams.forEach((ft, i) => {
    const target = ` -j ${targetSpec(x.target, ft.family)}`;
    const ban = (r: string) => /^-s \S+\/\d{1,3} -j /.test(r) && r.endsWith(target);
    const { drifts, rules } = chainView(tables[i], x.chain, x.ports, ft.family, (r, last) => (last ? r === '-j RETURN' : ban(r)));
    view.drifts.push(...drifts);
    if (!drifts.some((d) => d.what === 'chain')) view.counts.push({ family: ft.family, count: rules.filter(ban).length, where: `chain ${x.chain}` });
  });
  return view;
}
