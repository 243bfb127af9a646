import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AllowList } from '../src/allow';
import { cidrContains, ipv4ToUint, NetworkSet, parseCidr, textPrefix } from '../src/net/cidr';

const LOOPBACK = [parseCidr('127.0.0.0/8')!, parseCidr('::1/128')!];
import { checkedIp } from '../src/firewall/exec';
import { canonicalIp, isCanonicalIpv6, notSingleHost } from '../src/net/ip';

// A small deterministic generator, so a failure can be replayed.
function rng(seed: number): () => number {
  return () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
}

const EDGE = [0, 1, 9, 10, 99, 100, 127, 128, 191, 192, 199, 200, 249, 250, 255];

test('NetworkSet: the integer IPv4 match answers exactly as the BigInt reference, for every prefix length', () => {
  const r = rng(7);
  const octet = () => (r() < 0.3 ? EDGE[Math.floor(r() * EDGE.length)] : Math.floor(r() * 256));
  const addr = () => [octet(), octet(), octet(), octet()].join('.');
  const cidrs = Array.from({ length: 33 }, (_, bits) => parseCidr(`${addr()}/${bits}`)!);
  // One list per network (a /0 in a shared list would answer every probe), and one with all.
  const lists = cidrs.map((c) => new NetworkSet([...LOOPBACK, c]));
  const all = new NetworkSet([...LOOPBACK, ...cidrs]);
  const builtin = [parseCidr('127.0.0.0/8')!, parseCidr('::1/128')!];
  let matched = 0;
  for (let i = 0; i < 20_000; i++) {
    const j = Math.floor(r() * cidrs.length);
    // Half the probes share the first three octets with the network, to exercise matches as well as misses.
    const base = cidrs[j].text.split('/')[0].split('.').map(Number);
    const a = r() < 0.5 ? addr() : [base[0], base[1], base[2], octet()].join('.');
    const want = [...builtin, cidrs[j]].find((c) => cidrContains(c, a, 4))?.text;
    assert.equal(lists[j].matches(a, 4)?.text, want, `${a} in ${cidrs[j].text}`);
    assert.equal(all.matches(a, 4)?.text, [...builtin, ...cidrs].find((c) => cidrContains(c, a, 4))?.text, a);
    if (want && want !== '127.0.0.0/8') matched++;
    const n = a.split('.').reduce((x, p) => x * 256 + Number(p), 0);
    assert.equal(ipv4ToUint(a), n, a);
  }
  assert.ok(matched > 2_000 && matched < 18_000, `probes matched ${matched} times`);
  all.remove(cidrs[0].text); // 0.0.0.0/0: removing it must take it out of the fast index too
  assert.equal(all.matches('203.0.113.77', 4)?.text, cidrs.slice(1).find((c) => cidrContains(c, '203.0.113.77', 4))?.text);
  assert.equal(new NetworkSet(LOOPBACK).matches('127.1.2.3', 4)?.text, '127.0.0.0/8');
  assert.equal(new NetworkSet(LOOPBACK).matches('::1', 6)?.text, '::1');
  assert.equal(new NetworkSet([parseCidr('2001:db8::/32')!]).matches('2001:db8:5::1', 6)?.text, '2001:db8::/32');
});

test('NetworkSet: the word-wise IPv6 match answers exactly as the BigInt reference, for every prefix length', () => {
  const r = rng(11);
  const word = () => (r() < 0.3 ? [0, 1, 0xffff, 0x8000, 0x00ff, 0xff00][Math.floor(r() * 6)] : Math.floor(r() * 0x10000));
  const addr = (w: number[]) => w.map((x) => x.toString(16)).join(':');
  const cidrs = Array.from({ length: 129 }, (_, bits) => parseCidr(`${addr(Array.from({ length: 8 }, word))}/${bits}`)!);
  const lists = cidrs.map((c) => new NetworkSet([...LOOPBACK, c]));
  const builtin = [parseCidr('127.0.0.0/8')!, parseCidr('::1/128')!];
  let matched = 0;
  for (let i = 0; i < 20_000; i++) {
    // Half the probes share a random-length prefix with the network.
    const j = Math.floor(r() * cidrs.length);
    const base = cidrs[j].base;
    const keep = Math.floor(r() * 8);
    const words = Array.from({ length: 8 }, (_, k) => (r() < 0.5 && k <= keep ? Number((base >> BigInt(16 * (7 - k))) & 0xffffn) : word()));
    const a = canonicalIp(addr(words))!.address;
    const want = [...builtin, cidrs[j]].find((c) => cidrContains(c, a, 6))?.text;
    assert.equal(lists[j].matches(a, 6)?.text, want, `${a} in ${cidrs[j].text}`);
    if (want) matched++;
  }
  assert.ok(matched > 2_000 && matched < 18_000, `probes matched ${matched} times`);
});

test('textPrefix: the canonical text of every address inside a network starts with it, for every prefix length', () => {
  const r = rng(23);
  const rand = (bits: number) => { let x = 0n; for (let i = 0; i < bits; i += 16) x = (x << 16n) | BigInt(r() < 0.3 ? 0 : Math.floor(r() * 0x10000)); return x & ((1n << BigInt(bits)) - 1n); };
  const text4 = (x: bigint) => [24, 16, 8, 0].map((s) => Number((x >> BigInt(s)) & 255n)).join('.');
  const text6 = (x: bigint) => Array.from({ length: 8 }, (_, k) => Number((x >> BigInt(16 * (7 - k))) & 0xffffn).toString(16)).join(':');
  let checked = 0;
  for (const [family, width, text] of [[4, 32, text4], [6, 128, text6]] as const) {
    for (let bits = 0; bits <= width; bits++) {
      for (let n = 0; n < 20; n++) {
        const c = parseCidr(`${text(rand(width))}/${bits}`)!;
        const prefix = textPrefix(c);
        for (let k = 0; k < 20; k++) {
          const host = rand(width) & ((1n << BigInt(width - bits)) - 1n);
          const a = canonicalIp(text(c.base | host))!;
          if (a.family !== family) continue; // ::ffff:a.b.c.d is IPv4 to everyone
          assert.ok(cidrContains(c, a.address, family));
          assert.ok(a.address.startsWith(prefix), `${a.address} in ${c.text}: prefix ${JSON.stringify(prefix)}`);
          checked++;
        }
      }
    }
  }
  assert.ok(checked > 60_000, `${checked} addresses checked`);
  const examples: [string, string][] = [['10.0.0.0/8', '10.'], ['192.168.1.0/24', '192.168.1.'], ['192.168.1.0/23', '192.168.'], ['1.2.3.4', '1.2.3.4'], ['8.0.0.0/5', ''],
    ['2001:db8::/32', '2001:db8:'], ['2001:0:1::/48', '2001:'], ['::1', '::1'], ['fd00::/8', ''], ['::/0', '']];
  for (const [cidr, want] of examples) assert.equal(textPrefix(parseCidr(cidr)!), want, cidr);
  assert.deepEqual(AllowList.of(['10.0.0.0/8', '10.1.0.0/16']).textPrefixes(), ['127.', '::1', '10.', '10.1.']);
});

test('ipv4ToUint refuses what is not a dotted quad', () => {
  for (const t of ['', '1.2.3', '1.2.3.4.5', '256.1.1.1', '1..2.3', ' 1.2.3.4', '1.2.3.4 ', 'a.b.c.d', '1.2.3.-4', '::1']) {
    assert.ok(Number.isNaN(ipv4ToUint(t)), t);
  }
});

test('checkedIp: the IPv4 fast path accepts exactly the canonical forms canonicalIp produces', () => {
  const cases = ['1.2.3.4', '0.0.0.0', '255.255.255.255', '01.2.3.4', '1.2.3.04', '00.1.1.1', '1.2.3', '1.2.3.4.5', '256.1.1.1',
    '1..2.3', ' 1.2.3.4', '1.2.3.4\n', '::ffff:1.2.3.4', '2001:DB8::1', '2001:db8::1', '[2001:db8::1]', '1.2.3.4%eth0'];
  for (const t of cases) {
    const c = canonicalIp(t);
    const canonical = c !== null && c.address === t && notSingleHost(c.address, c.family) === null;
    let ok = true;
    try { assert.equal(checkedIp(t), t); } catch { ok = false; }
    assert.equal(ok, canonical, JSON.stringify(t));
  }
  assert.throws(() => checkedIp('1.2.3.4', 6), /family 6/);
  assert.throws(() => checkedIp('2001:db8::1', 4), /family 4/);
});

// The definition isCanonicalIpv6 must agree with, on every input.
function canonicalV6(t: string): boolean {
  const c = canonicalIp(t);
  return c !== null && c.address === t && c.family === 6;
}

// checkedIp as it was before any fast path: the reference for accept/refuse and the message.
function slowCheckedIp(address: string, family?: 4 | 6): string {
  const c = canonicalIp(address);
  if (!c || c.address !== address || (family !== undefined && c.family !== family)) {
    throw new Error(`refusing non-canonical address ${JSON.stringify(address)}${family ? ` (family ${family})` : ''}`);
  }
  const why = notSingleHost(c.address, c.family);
  if (why) throw new Error(`refusing ${address}: not a single host, ${why}`);
  return c.address;
}

function outcome(f: () => string): string {
  try { return `ok ${f()}`; } catch (e) { return `throws ${(e as Error).message}`; }
}

const hex = (w: number) => w.toString(16);
/** The words written with '::' in place of words [start, start + len) (len 0: no '::'). */
function spell(words: number[], start: number, len: number, pad = false): string {
  const h = words.map((w) => (pad ? hex(w).padStart(4, '0') : hex(w)));
  if (len === 0) return h.join(':');
  return `${h.slice(0, start).join(':')}::${h.slice(start + len).join(':')}`;
}

/** Random 8-word addresses, biased toward zero runs of every length and position and ties. */
function* ipv6Words(r: () => number, count: number): Generator<number[]> {
  // Every zero/non-zero pattern of the eight words (all run lengths, positions and ties).
  const nonZero = [1, 0xa, 0x10, 0xff, 0x100, 0xabc, 0x1000, 0xffff];
  for (let mask = 0; mask < 256; mask++) {
    yield Array.from({ length: 8 }, (_, k) => ((mask >> k) & 1 ? nonZero[Math.floor(r() * nonZero.length)] : 0));
  }
  const word = () => (r() < 0.5 ? nonZero[Math.floor(r() * nonZero.length)] : 1 + Math.floor(r() * 0xffff));
  for (let i = 0; i < count; i++) {
    const w = Array.from({ length: 8 }, word);
    const runs = Math.floor(r() * 4);
    for (let k = 0; k < runs; k++) {
      const len = 1 + Math.floor(r() * 8);
      const at = Math.floor(r() * (9 - len));
      w.fill(0, at, at + len);
    }
    if (r() < 0.05) w.splice(0, 6, 0, 0, 0, 0, 0, 0xffff); // IPv4-mapped
    if (r() < 0.05) w.splice(0, 6, 0, 0, 0, 0, 0, 0); // IPv4-compatible (stays IPv6)
    yield w;
  }
}

const JUNK = [' ', '\t', '\n', '\r', '\u00a0', '\u0000', 'g', 'G', 'x', 'A', 'F', '.', '%', '[', ']', ':', '::', '0', '-', '/', '+', 'é', '\uff10', '\u{1d7ce}'];

/** Spellings near a canonical one: most are not canonical, a few are (the reference decides). */
function mutations(r: () => number, words: number[], s: string): string[] {
  const out: string[] = [];
  const at = () => Math.floor(r() * (s.length + 1));
  const pick = <T>(a: T[]) => a[Math.floor(r() * a.length)];
  // Every way to write the words: no '::', or '::' for any sub-run of zeros (a single zero,
  // the shorter run, the other side of a tie), with and without leading zeros.
  out.push(spell(words, 0, 0), spell(words, 0, 0, true));
  for (let i = 0; i < 8; i++) {
    for (let j = i + 1; j <= 8 && words[j - 1] === 0; j++) out.push(spell(words, i, j - i), spell(words, i, j - i, r() < 0.5));
  }
  const letters = [...s].map((ch, i) => (/[a-f]/.test(ch) ? i : -1)).filter((i) => i >= 0);
  if (letters.length) {
    const i = pick(letters);
    out.push(s.slice(0, i) + s[i].toUpperCase() + s.slice(i + 1), s.toUpperCase());
  }
  // A leading zero on some word, a word replaced, dropped or added.
  const groups = s.split(':');
  const g = Math.floor(r() * groups.length);
  const edit = (f: (a: string[]) => void) => { const a = [...groups]; f(a); return a.join(':'); };
  out.push(edit((a) => { a[g] = `0${a[g]}`; }));
  out.push(edit((a) => { a[g] = pick(['0', '00', '1', 'ffff', '10000', 'fffff', '0000', '', 'g', hex(Math.floor(r() * 0x10000))]); }));
  out.push(edit((a) => { a.splice(g, 1); }));
  out.push(edit((a) => { a.splice(g, 0, pick(['0', '1', 'abcd'])); }));
  out.push(`${s}:1`, `1:${s}`, `${s}:0`, `0:${s}`, `${s}:`, `:${s}`, `${s}::`, `::${s}`, s.replace('::', ':::'), s.replace('::', ':'));
  out.push(`${spell(words, 0, 0)}:1`, `${spell(words, 0, 0)}::`); // nine words; eight words and '::'
  // Junk characters, whitespace, zone, brackets.
  for (let k = 0; k < 3; k++) { const i = at(); out.push(s.slice(0, i) + pick(JUNK) + s.slice(i)); }
  const i = Math.floor(r() * s.length);
  out.push(s.slice(0, i) + s.slice(i + 1));
  out.push(` ${s}`, `${s} `, `${s}\n`, `\t${s}`, `${s}%eth0`, `${s}%`, `${s}%1`, `[${s}]`, `[${s}`, `${s}]`, `[${s}%eth0]`, `[${s}]%eth0`);
  // Dotted tails and IPv4-mapped spellings.
  const q = `${words[6] >> 8}.${words[6] & 255}.${words[7] >> 8}.${words[7] & 255}`;
  const six = canonicalIp(spell([...words.slice(0, 6), 0, 0], 0, 0))!.address;
  out.push(six.endsWith('::') ? `${six}${q}` : `${six.replace(/:0:0$/, ':')}${q}`, `${spell(words.slice(0, 6), 0, 0)}:${q}`);
  out.push(`::ffff:${q}`, `::ffff:${hex(words[6])}:${hex(words[7])}`, `0:0:0:0:0:ffff:${hex(words[6])}:${hex(words[7])}`,
    `::ffff:0:${hex(words[6])}:${hex(words[7])}`, `::${hex(words[6])}:${hex(words[7])}`, `::${q}`);
  return out;
}

const TRICKY = [
  '::', '::0', '0::', ':::', '::::', ':', '', '0', '1', '::1', '1::', '::1:0', '0:0::1', '::0:1', '1:0::', '::ffff', '::ffff:0',
  '::ffff:0:0', '::ffff:1:2', '::ffff:102:304', '::ffff:1.2.3.4', '::FFFF:102:304', '0:0:0:0:0:ffff:102:304', '::fffe:1:2',
  '::1:ffff:1:2', '1::ffff:1:2', '::ffff:1:2:3', '::102:304', '::1.2.3.4', '::ffff:0:1.2.3.4', '64:ff9b::1.2.3.4', '64:ff9b::102:304',
  '0:0:0:0:0:0:0:0', '0:0:0:0:0:0:0:1', '1:0:0:0:0:0:0:0', '1:0:1:0:1:0:1:0', '1:0:1::1:0:1', '1::1:0:0:1', '1:0:0:1::1',
  '1:0:0:1::1:1', '1::1:0:0:1:1', '1:0:0::1:1:1', '1::1:1:0:0', '1:1::1:1:0:0', '1:1:0:0::1:1', '1:1:1:1:1:1:1:1', '1:1:1:1:1:1:1:1:1',
  '1:1:1:1:1:1:1', '1:1:1:1:1:1:1::', '::1:1:1:1:1:1:1', '1::1:1:1:1:1:1', '1:1:1:1::1:1:1', '1::1::1', '2001:db8::1', '2001:DB8::1',
  '2001:db8:0::1', '2001:0db8::1', '2001:db8::01', '2001:db8::0001', '2001:db8::1%eth0', '[2001:db8::1]', ' 2001:db8::1',
  '2001:db8::1 ', '2001:db8::1\n', '2001:db8::g', '2001:db8:::1', '2001:db8::1:', ':2001:db8::1', 'fe80::1%', 'fe80::%eth0',
  'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffff', 'fffff::1', '10000::1', '1:2:3:4:5:6:7:8',
  '1:2:3:4:5:6:7:8%0', 'a:b:c:d:e:f:0:0', 'a:b:c:d:e:f::', 'a:b:c:d:e::f', 'a:b:c:d:e:f:0:1', 'a:b:c:d:e:0:0:1',
  'abcd:ef01:2345:6789:abcd:ef01:2345:6789', 'fd33::1:2a', 'fd33:0:0:0:0:0:1:2a', 'fd33::1:2A', 'fd33::1:02a', '::1.2.3.4',
  '1.2.3.4', '::ffff:1.2.3.4%eth0', '[::1]', '::1]', '[::1', '::1 ', '\u00a0::1', '::\uff11', '::1\u0000', 'x::1', '::-1', '::+1',
];

test('isCanonicalIpv6 answers exactly as canonicalIp(x) gives x back as IPv6, on random, mutated and tricky spellings', () => {
  const r = rng(5952);
  let positives = 0;
  let total = 0;
  const check = (t: string) => {
    const want = canonicalV6(t);
    assert.equal(isCanonicalIpv6(t), want, JSON.stringify(t));
    total++;
    if (want) positives++;
  };
  for (const words of ipv6Words(r, 4000)) {
    const c = canonicalIp(spell(words, 0, 0))!;
    const mapped = words.slice(0, 5).every((w) => w === 0) && words[5] === 0xffff;
    assert.equal(c.family, mapped ? 4 : 6);
    check(c.address);
    if (mapped) continue;
    assert.ok(isCanonicalIpv6(c.address), c.address);
    for (const m of mutations(r, words, c.address)) check(m);
  }
  for (const t of TRICKY) check(t);
  for (const t of ['::', '::1', '1::', '1:0:1::1:0:1', '1::1:0:0:1:1', '2001:db8::1', 'fd33::1:2a', '::ffff:1', '::102:304']) {
    assert.ok(isCanonicalIpv6(t), t);
  }
  for (const t of ['::ffff:102:304', '::0', '1:0:0:1::1:1', '1::1:1:1:1:1:1', '2001:DB8::1', '[::1]', '::1%lo']) {
    assert.ok(!isCanonicalIpv6(t), t);
  }
  // Not strings at all (the store is typed, the check is defence in depth).
  for (const v of [undefined, null, 1, {}, ['::1']]) assert.equal(isCanonicalIpv6(v as unknown as string), false);
  assert.ok(total > 100_000 && positives > 5_000 && total - positives > 80_000, `${positives} of ${total}`);
});

test('checkedIp: the IPv6 fast path accepts, refuses and words its errors exactly as the slow path', () => {
  const r = rng(4291);
  const inputs = [...TRICKY];
  for (const words of ipv6Words(r, 150)) {
    const a = canonicalIp(spell(words, 0, 0))!.address;
    inputs.push(a, ...mutations(r, words, a));
  }
  let accepted = 0;
  for (const t of inputs) {
    for (const family of [6, undefined, 4] as const) {
      const want = outcome(() => slowCheckedIp(t, family));
      assert.equal(outcome(() => checkedIp(t, family)), want, `${JSON.stringify(t)} family ${family}`);
      if (family === 6 && want.startsWith('ok')) accepted++;
    }
  }
  assert.ok(accepted > 1_000, `${accepted} accepted`);
});
