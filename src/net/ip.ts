import { isIP } from 'node:net';

export type Family = 4 | 6;

/** The family of an address already in canonical form (only IPv6 text holds a ':'). */
export function familyOf(canonical: string): Family {
  return canonical.includes(':') ? 6 : 4;
}

/**
 * Canonical text form of an IP address, or null when the text is not one.
 * This is the only gate between hostile text and the firewall: nothing that fails
 * here may ever reach a command line. IPv6 is compressed and lower-cased, a %scope
 * is dropped (the firewall cannot match it), IPv4-mapped IPv6 becomes IPv4.
 */
export function canonicalIp(text: string): { address: string; family: Family } | null {
  if (typeof text !== 'string' || text.length === 0 || text.length > 64) return null;
  // Already canonical (every address a peer or the database sends): no split and join.
  if (CANONICAL_V4.test(text)) return { address: text, family: 4 };
  let t = text.trim();
  if (t.startsWith('[') && t.endsWith(']')) t = t.slice(1, -1);
  const pct = t.indexOf('%');
  if (pct >= 0) t = t.slice(0, pct);
  const fam = isIP(t);
  if (fam === 4) {
    const parts = t.split('.');
    // node's isIP refuses leading zeros already; normalise anyway.
    return { address: parts.map((p) => String(Number(p))).join('.'), family: 4 };
  }
  if (fam === 6) {
    const words = expandIpv6(t);
    if (!words) return null;
    // ::ffff:a.b.c.d is an IPv4 peer seen through a dual-stack socket.
    if (words.slice(0, 5).every((w) => w === 0) && words[5] === 0xffff) {
      return { address: `${words[6] >> 8}.${words[6] & 255}.${words[7] >> 8}.${words[7] & 255}`, family: 4 };
    }
    return { address: compressIpv6(words), family: 6 };
  }
  return null;
}

/** Eight 16-bit words of an IPv6 address (which must already pass isIP). */
export function expandIpv6(text: string): number[] | null {
  let t = text.toLowerCase();
  // Trailing dotted quad.
  const lastColon = t.lastIndexOf(':');
  const tail = t.slice(lastColon + 1);
  if (tail.includes('.')) {
    const q = tail.split('.').map(Number);
    if (q.length !== 4 || q.some((n) => !(n >= 0 && n <= 255))) return null;
    t = `${t.slice(0, lastColon + 1)}${((q[0] << 8) | q[1]).toString(16)}:${((q[2] << 8) | q[3]).toString(16)}`;
  }
  const halves = t.split('::');
  if (halves.length > 2) return null;
  const head = halves[0] ? halves[0].split(':') : [];
  const rest = halves.length === 2 ? (halves[1] ? halves[1].split(':') : []) : [];
  const missing = 8 - head.length - rest.length;
  if (halves.length === 1 && missing !== 0) return null;
  if (halves.length === 2 && missing < 1) return null;
  const words = [...head, ...Array(halves.length === 2 ? missing : 0).fill('0'), ...rest].map((w) => parseInt(w, 16));
  if (words.length !== 8 || words.some((w) => !(w >= 0 && w <= 0xffff))) return null;
  return words;
}

/** RFC 5952 text form: longest run (>1) of zero words becomes '::'. */
export function compressIpv6(words: ArrayLike<number>): string {
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (words[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen && j - i > 1) { bestStart = i; bestLen = j - i; }
    i = j;
  }
  const hex = Array.from(words, (w) => w.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

const OCTET = '(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])';
const CANONICAL_V4 = new RegExp(`^${OCTET}(?:\\.${OCTET}){3}$`);

/**
 * True exactly when canonicalIp(text) would return { address: text, family }: the one test
 * every address bound for the kernel passes. Nothing allocated (a pattern for IPv4, one scan
 * for IPv6): at start it runs once per stored ban.
 */
export function isCanonicalIp(text: string, family: Family): boolean {
  return family === 4 ? typeof text === 'string' && CANONICAL_V4.test(text) : isCanonicalIpv6(text);
}

/**
 * True exactly when canonicalIp(text) would return { address: text, family: 6 }: the text
 * is already the RFC 5952 form compressIpv6 prints (lower-case hex, no leading zeros, '::'
 * for the longest run of two or more zero words, the leftmost on a tie, a lone zero word
 * written '0') and not an IPv4-mapped address (canonicalIp turns those into IPv4). No
 * whitespace, brackets, %zone or dotted tail: canonicalIp never prints them.
 * One charCodeAt pass, nothing allocated: every restored IPv6 ban is checked here.
 */
export function isCanonicalIpv6(text: string): boolean {
  if (typeof text !== 'string') return false;
  const n = text.length;
  if (n < 2 || n > 39) return false;
  let words = 0; // words written out so far
  let head = -1; // words before '::', -1 while there is none
  let run = 0; // written zero words just before this point
  let runBefore = 0; // longest run of written zero words before '::' (anywhere when there is none)
  let runAfter = 0; // longest run of written zero words after '::'
  let digits = 0; // hex digits of the word being read
  let zero = false; // that word began with '0' (so it must be exactly '0')
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c === 58) {
      if (digits === 0) {
        // No word before this ':' (only at 0 or right after a ':'): '::'. At most one, and
        // never next to a zero word (that word would belong to the run '::' stands for).
        if (head >= 0 || run > 0) return false;
        if (i === 0 && text.charCodeAt(++i) !== 58) return false;
        head = words;
        continue;
      }
      if (i === n - 1 || ++words === 8) return false; // a trailing ':', or a ninth word
      if (zero) {
        if (head === words - 1) return false; // right after '::'
        run++;
        if (head < 0) { if (run > runBefore) runBefore = run; } else if (run > runAfter) runAfter = run;
      } else run = 0;
      digits = 0;
    } else if (digits === 0) {
      if (c === 48) zero = true;
      else if ((c >= 49 && c <= 57) || (c >= 97 && c <= 102)) zero = false;
      else return false;
      digits = 1;
    } else {
      if (zero || digits === 4 || !((c >= 48 && c <= 57) || (c >= 97 && c <= 102))) return false;
      digits++;
    }
  }
  if (digits > 0) {
    words++;
    if (zero) {
      if (head === words - 1) return false;
      run++;
      if (head < 0) { if (run > runBefore) runBefore = run; } else if (run > runAfter) runAfter = run;
    }
  }
  if (head < 0) return words === 8 && runBefore < 2;
  // '::' must stand for two or more zero words, more than any written run to its left
  // (the leftmost run wins a tie) and at least as many as any to its right.
  const gap = 8 - words;
  if (gap < 2 || runBefore >= gap || runAfter > gap) return false;
  // ::ffff:x:y (words 0-4 zero, word 5 ffff) is IPv4-mapped: canonicalIp prints it as IPv4.
  return !(head === 0 && words === 3 && text.charCodeAt(6) === 58 && text.startsWith('::ffff'));
}

/** ff00::/8 in canonical text: a first word of four hex digits starting "ff" (no leading zeros). */
const MULTICAST_V6 = /^ff[0-9a-f]{2}:/;

/**
 * Why a canonical address cannot be one remote host, or null when it can: no such source
 * may ever be banned (ipset refuses 0.0.0.0 and ::, which would sink a whole load, and a
 * multicast or broadcast "ban" blocks no attacker). Cheap: one look at the first octet or word.
 */
export function notSingleHost(address: string, family: Family): string | null {
  if (family === 4) {
    // The first octet from its digits, nothing allocated: this runs for every event.
    let first = 0;
    for (let i = 0, c = address.charCodeAt(0); c >= 48 && c <= 57; c = address.charCodeAt(++i)) first = first * 10 + (c - 48);
    if (first === 0) return 'unspecified ("this network", 0.0.0.0/8)';
    if (first >= 224 && first <= 239) return 'multicast (224.0.0.0/4)';
    if (address === '255.255.255.255') return 'broadcast (255.255.255.255)';
    if (first >= 240) return 'reserved (class E, 240.0.0.0/4)';
    return null;
  }
  if (address === '::') return 'unspecified (::)';
  if (MULTICAST_V6.test(address)) return 'multicast (ff00::/8)';
  return null;
}

/** The one checked parse of an address that is to be banned: canonical and a single host, or why not. */
export type HostParse = { ok: true; address: string; family: Family } | { ok: false; reason: string };

/**
 * Text to a bannable address. `written` is the family the source claims (an event's IPV4/IPV6):
 * IPv6 text under IPV4 or a dotted quad under IPV6 is refused. An IPv4-mapped IPv6 address
 * (::ffff:a.b.c.d, what a dual-stack socket reports) becomes its IPv4 address, under either
 * claim being IPv6: its packets reach the kernel as IPv4, so only an IPv4 ban stops them.
 */
export function parseHost(text: string, written?: Family): HostParse {
  const ip = canonicalIp(text);
  if (!ip) return { ok: false, reason: 'not an IP address' };
  if (written !== undefined) {
    const textFamily: Family = text.includes(':') ? 6 : 4;
    if (textFamily !== written) return { ok: false, reason: `IPv${textFamily} address given as IPv${written}` };
  }
  const why = notSingleHost(ip.address, ip.family);
  return why ? { ok: false, reason: `${ip.address} is not a single host: ${why}` } : { ok: true, address: ip.address, family: ip.family };
}

/** True when a stored address may go to the kernel: canonical for its family and a single host. */
export function isBannable(address: string, family: Family): boolean {
  return isCanonicalIp(address, family) && notSingleHost(address, family) === null;
}
