import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AllowList, cidrContains, ipv4ToUint, parseCidr } from '../src/net/cidr';
import { checkedIp } from '../src/firewall/exec';
import { canonicalIp } from '../src/net/ip';

// A small deterministic generator, so a failure can be replayed.
function rng(seed: number): () => number {
  return () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
}

const EDGE = [0, 1, 9, 10, 99, 100, 127, 128, 191, 192, 199, 200, 249, 250, 255];

test('AllowList: the integer IPv4 match answers exactly as the BigInt reference, for every prefix length', () => {
  const r = rng(7);
  const octet = () => (r() < 0.3 ? EDGE[Math.floor(r() * EDGE.length)] : Math.floor(r() * 256));
  const addr = () => [octet(), octet(), octet(), octet()].join('.');
  const cidrs = Array.from({ length: 33 }, (_, bits) => parseCidr(`${addr()}/${bits}`)!);
  // One list per network (a /0 in a shared list would answer every probe), and one with all.
  const lists = cidrs.map((c) => new AllowList([c]));
  const all = new AllowList(cidrs);
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
  assert.equal(new AllowList().matches('127.1.2.3', 4)?.text, '127.0.0.0/8');
  assert.equal(new AllowList().matches('::1', 6)?.text, '::1');
  assert.equal(new AllowList([parseCidr('2001:db8::/32')!]).matches('2001:db8:5::1', 6)?.text, '2001:db8::/32');
});

test('AllowList: the word-wise IPv6 match answers exactly as the BigInt reference, for every prefix length', () => {
  const r = rng(11);
  const word = () => (r() < 0.3 ? [0, 1, 0xffff, 0x8000, 0x00ff, 0xff00][Math.floor(r() * 6)] : Math.floor(r() * 0x10000));
  const addr = (w: number[]) => w.map((x) => x.toString(16)).join(':');
  const cidrs = Array.from({ length: 129 }, (_, bits) => parseCidr(`${addr(Array.from({ length: 8 }, word))}/${bits}`)!);
  const lists = cidrs.map((c) => new AllowList([c]));
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
    const canonical = c !== null && c.address === t;
    let ok = true;
    try { assert.equal(checkedIp(t), t); } catch { ok = false; }
    assert.equal(ok, canonical, JSON.stringify(t));
  }
  assert.throws(() => checkedIp('1.2.3.4', 6), /family 6/);
  assert.throws(() => checkedIp('2001:db8::1', 4), /family 4/);
});
