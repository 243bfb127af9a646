/**
 * Test data: ban lists, databases holding them, and AMI event streams built from the
 * Asterisk 22 captures in test/fixtures/ami.
 *
 * Addresses: the lab itself uses 10.233.0.0/16 and fd33::/64. Bulk addresses (stored bans,
 * spoofed event sources) come from 198.18.0.0/15, the range RFC 2544 sets aside for
 * benchmarks (131,072 IPv4 addresses), and from fd33::/64. They only ever exist as text in
 * events and as set elements or rules inside the benchmark's namespaces.
 */
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { openSqlite } from '../../src/store/open';
import { ROOT } from './build';

export const V4_BULK = 131_072;

/** The i-th bulk IPv4 address (198.18.0.0 + i). */
export function bulk4(i: number): string {
  const k = i % V4_BULK;
  return `198.${18 + (k >> 16)}.${(k >> 8) & 255}.${k & 255}`;
}

/** The i-th of up to 4,194,304 distinct IPv4 addresses (100.64.0.0/10), for sets larger than V4_BULK. */
export function wide4(i: number): string {
  if (i >= 1 << 22) throw new Error(`wide4: ${i} is past 100.127.255.255`);
  return `${100}.${64 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
}

/** The i-th bulk IPv6 address, in fd33::/64 (canonical text). */
export function bulk6(i: number, tag = 'b'): string {
  return `fd33::${tag}:${((i >>> 16) & 0xffff).toString(16)}:${(i & 0xffff).toString(16)}`;
}

export interface BanSpec { address: string; family: 4 | 6 }

/** n bans: every 10th IPv6 unless v6Every = 0 (IPv4 only). */
export function banList(n: number, v6Every = 10): BanSpec[] {
  const out: BanSpec[] = [];
  let k4 = 0;
  for (let i = 0; i < n; i++) {
    if (v6Every && i % v6Every === v6Every - 1) out.push({ address: bulk6(i), family: 6 });
    else out.push({ address: bulk4(k4++), family: 4 });
  }
  return out;
}

/** A database (schema by the project's own migrations) holding these bans, all active for a day. */
export function writeBanDb(path: string, bans: BanSpec[]): void {
  const c = openSqlite(path);
  const now = Date.now();
  const host = c.prepare(`INSERT INTO hosts (address, family, first_seen, last_seen, failures, ban_count, banned, ban_until, last_kind, last_service, last_account) VALUES (?, ?, ?, ?, 3, 1, 1, ?, 'ChallengeResponseFailed', 'PJSIP', '100')`);
  const ban = c.prepare(`INSERT INTO bans (address, family, started_at, until, reason_kind, reason_service, reason_account, failures, source) VALUES (?, ?, ?, ?, 'ChallengeResponseFailed', 'PJSIP', '100', 3, 'auto')`);
  c.transaction(() => {
    bans.forEach((b, i) => {
      const until = i % 10 === 3 ? null : now + 86_400_000 + i; // some permanent, as bantime = 0 gives
      host.run(b.address, b.family, now - 60_000, now - 60_000, until);
      ban.run(b.address, b.family, now - 60_000, until);
    });
  })();
  c.pragma('wal_checkpoint(TRUNCATE)');
  c.close();
}

// ---------------------------------------------------------------- AMI streams

const FIXTURES = join(ROOT, 'test', 'fixtures', 'ami');

interface Block { text: string; address: string | null; v6: boolean; error: boolean }

/** Every security event of every capture, in capture order (banner and login responses dropped). */
export function fixtureBlocks(): Block[] {
  const out: Block[] = [];
  for (const f of readdirSync(FIXTURES).filter((x) => x.endsWith('.ami')).sort()) {
    const raw = readFileSync(join(FIXTURES, f), 'utf8');
    for (const b of raw.split('\r\n\r\n')) {
      if (!b.includes('Privilege: security')) continue;
      const m = /RemoteAddress: IPV([46])\/(?:[A-Z]+\/)?([^/\r\n]+)\//.exec(b);
      out.push({ text: b + '\r\n\r\n', address: m ? m[2] : null, v6: m?.[1] === '6', error: /Severity: Error/.test(b) });
    }
  }
  return out;
}

export interface Stream { file: string; offsetsFile: string; events: number; bytes: number; sources: number; errors: number; bansExpected: number }

/**
 * The captures' events replayed over and over with the attackers' addresses rewritten, so that
 * they come from many sources. Each source sends loyalty-1 failures (Error events; the
 * Informational ones around them go with it) and is then replaced by a fresh one, except every
 * `banEvery`-th source (0: none), which sends `loyalty` and is banned by the last: it sends
 * nothing more, since the kernel would drop it. banEvery = 1 is a storm in which every source
 * is banned (about one ban per 6 events of this mix). Loopback (AMI's own logins) stays.
 */
export function mixStream(path: string, events: number, banEvery: number, loyalty: number): Stream {
  const blocks = fixtureBlocks();
  const parts: string[] = [];
  const offsets: number[] = [];
  let bytes = 0;
  let sources = 0;
  let errors = 0;
  let bans = 0;
  let n4 = 0;
  let n6 = 0;
  // original address -> current replacement, its failures so far and its limit
  const current = new Map<string, { addr: string; fails: number; limit: number }>();
  const fresh = (v6: boolean) => {
    const limit = banEvery > 0 && sources % banEvery === 0 ? loyalty : loyalty - 1;
    sources++;
    return { addr: v6 ? bulk6(n6++, 'e') : bulk4(n4++), fails: 0, limit };
  };
  for (let k = 0; parts.length < events; k = (k + 1) % blocks.length) {
    const b = blocks[k];
    let text = b.text;
    if (b.address && b.address !== '127.0.0.1' && b.address !== '::1') {
      let cur = current.get(b.address);
      if (!cur) { cur = fresh(b.v6); current.set(b.address, cur); }
      text = text.replace(`/${b.address}/`, `/${cur.addr}/`);
      if (b.error) {
        cur.fails++;
        errors++;
        if (cur.fails >= cur.limit) {
          if (cur.fails >= loyalty) bans++;
          current.delete(b.address); // next event of this attacker: a fresh source
        }
      }
    }
    offsets.push(bytes);
    parts.push(text);
    bytes += Buffer.byteLength(text);
  }
  offsets.push(bytes);
  writeFileSync(path, parts.join(''));
  writeFileSync(`${path}.offsets.json`, JSON.stringify(offsets));
  return { file: path, offsetsFile: `${path}.offsets.json`, events: parts.length, bytes, sources, errors, bansExpected: bans };
}

/** One wire-format security event (the field set Asterisk 22 sends for PJSIP). */
export function eventBlock(kind: string, address: string, session: number): string {
  const fam = address.includes(':') ? 'IPV6' : 'IPV4';
  const sev = kind === 'ChallengeSent' || kind === 'SuccessfulAuth' ? 'Informational' : 'Error';
  return `Event: ${kind}\r\nPrivilege: security,all\r\nEventTV: 2026-11-27T06:17:31.081+0000\r\nSeverity: ${sev}\r\nService: PJSIP\r\nEventVersion: 1\r\nAccountID: ${session % 1000}\r\nSessionID: ${session}\r\nLocalAddress: ${fam}/UDP/${fam === 'IPV4' ? '10.233.0.1' : 'fd33::1'}/5060\r\nRemoteAddress: ${fam}/UDP/${address}/5060\r\n\r\n`;
}

/** Writes `n` events, one InvalidAccountID from each of n distinct sources (IPv4 first, then IPv6). */
export function distinctSources(path: string, n: number): { file: string; last: string[]; first: string[] } {
  const addr = (i: number) => (i < V4_BULK ? bulk4(i) : bulk6(i, 'f'));
  const CH = 50_000;
  writeFileSync(path, '');
  const { appendFileSync } = require('node:fs') as typeof import('node:fs');
  for (let s = 0; s < n; s += CH) {
    let chunk = '';
    for (let i = s; i < Math.min(n, s + CH); i++) chunk += eventBlock('InvalidAccountID', addr(i), 5_000_000 + i);
    appendFileSync(path, chunk);
  }
  return { file: path, last: [addr(n - 1), addr(n - 2)], first: [addr(0), addr(1)] };
}
