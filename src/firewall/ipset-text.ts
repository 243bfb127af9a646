import type { Logger } from '../log';
import { isCanonicalIp, type Family } from '../net/ip';
import { canonicalTarget } from '../net/range';
import { SkipLog } from './exec';
import type { KernelBan, ListedBan } from './types';

/** The kernel refuses element timeouts above this (about 24.8 days). */
export const IPSET_MAX_TIMEOUT = 2147483;
/** ipset's longest set name. */
export const IPSET_NAME_MAX = 31;

/**
 * Seconds to load for a ban, or null when it has already ended (skip it).
 * 0 means "no timeout" to ipset: used for permanent bans and for bans longer than ipset's
 * maximum. Those long bans stay in the set until the daemon removes them at their end
 * (it tracks every ban's end in the store), so nothing is held longer than intended.
 */
export function ipsetTimeout(until: number | null, now: number): number | null {
  if (until === null) return 0;
  const s = Math.ceil((until - now) / 1000);
  if (s <= 0) return null;
  return s > IPSET_MAX_TIMEOUT ? 0 : s;
}

/** A batch's add lines into one live set; a ban already ended is left out. Addresses were checked by checkBatch (every caller runs it first). */
export function addLines(set: string, bans: KernelBan[], now: number): string[] {
  const out: string[] = [];
  for (const b of bans) {
    const t = ipsetTimeout(b.until, now);
    if (t !== null) out.push(`add ${set} ${b.address} timeout ${t}`);
  }
  return out;
}

/**
 * The members of one set in `ipset save` output: only `add` lines of that set whose address is
 * canonical and of the family (a range as parseRange writes it, for the ranges' set). No
 * timeout: 0 (permanent); one that is not a whole number: null (unknown, as for a rule).
 */
export function parseIpsetSave(text: string, set: string, family: Family, range = false): ListedBan[] {
  return text.split('\n').map((line) => ipsetSaveMember(line, set, family, range)).filter((b) => b !== null);
}

/** One line of `ipset save`: the member of this set it adds, or null. */
export function ipsetSaveMember(line: string, set: string, family: Family, range = false): ListedBan | null {
  const w = line.trim().split(/\s+/);
  if (w[0] !== 'add' || w[1] !== set) return null;
  // A host is checked in one pass (isCanonicalIp), nothing made: a start lists up to millions.
  if (range) {
    const c = canonicalTarget(w[2] ?? '');
    if (!c || c.address !== w[2] || c.family !== family || !c.address.includes('/')) return null;
  } else if (!isCanonicalIp(w[2], family)) return null;
  const t = w.indexOf('timeout');
  const sec = t < 0 ? 0 : /^\d{1,10}$/.test(w[t + 1] ?? '') ? Number(w[t + 1]) : null;
  return { address: w[2], family, timeoutSec: sec };
}

/** Lines per chunk written to `ipset restore` during a full load. */
const STREAM_CHUNK = 4096;

const chunkOf = (v4: string[], v6: string[]) => (v4.length ? v4.join('\n') + '\n' : '') + (v6.length ? v6.join('\n') + '\n' : '');

/**
 * A full load's add lines into the scratch sets (setOf), in chunks, made as the bans are read.
 * Each chunk's lines are grouped by family: ipset batches only consecutive adds to one set. An
 * address that may not be banned is left out (and logged), as is a ban already ended.
 */
export function* addScript(bans: Iterable<KernelBan>, now: number, setOf: (address: string, f: Family) => string, v6On: boolean, log: Logger): Generator<string> {
  let v4: string[] = [];
  let v6: string[] = [];
  const skipped = new SkipLog(log);
  for (const b of bans) {
    const t = ipsetTimeout(b.until, now);
    if (t === null || (b.family === 6 && !v6On)) continue;
    const address = skipped.check(b);
    if (address === null) continue;
    (b.family === 4 ? v4 : v6).push(`add ${setOf(address, b.family)} ${address} timeout ${t}`);
    if (v4.length + v6.length === STREAM_CHUNK) { yield chunkOf(v4, v6); v4 = []; v6 = []; }
  }
  if (v4.length + v6.length) yield chunkOf(v4, v6);
  skipped.done();
}
