/**
 * The compact set of banned addresses (src/decisions/banned.ts, host-table.ts) against a plain
 * Map as the model: the same answers for every operation, keys back exactly as given.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BannedSet, CountCache } from '../src/decisions/banned';
import { HostTable } from '../src/decisions/host-table';
import { canonicalIp } from '../src/net/ip';

/** A small deterministic generator (mulberry32), so a failure can be replayed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Addresses from a small pool (so sets, deletes and lookups hit each other), in every shape the set meets. */
function addressPool(r: () => number, n: number): string[] {
  const hex = () => Math.floor(r() * 3 === 0 ? 0 : r() * 0x10000).toString(16);
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const kind = Math.floor(r() * 6);
    if (kind <= 1) out.push(`${Math.floor(r() * 256)}.${Math.floor(r() * 256)}.${Math.floor(r() * 4)}.${Math.floor(r() * 256)}`);
    else if (kind <= 3) {
      // Random words, many zero, through canonicalIp: every '::' placement occurs.
      const words = Array.from({ length: 8 }, () => (r() < 0.4 ? '0' : hex()));
      out.push(canonicalIp(words.join(':'))!.address);
    } else if (kind === 4) out.push(r() < 0.5 ? `203.0.${Math.floor(r() * 256)}.0/24` : `2001:db8:${hex()}::/48`);
    else out.push(['::FFFF:1.2.3.4', '01.2.3.4', '2001:DB8::1', '2001:db8:0:0:0:0:0:1', '::ffff:10.0.0.1', 'garbage', '', '1.2.3', '::', '0.0.0.0'][Math.floor(r() * 10)]);
  }
  return out;
}

test('the set answers as a Map does over 300,000 random operations, keys back exactly as set', () => {
  const r = rng(20261205);
  const pool = addressPool(r, 20_000);
  const set = new BannedSet();
  const model = new Map<string, number | null>();
  for (let i = 0; i < 300_000; i++) {
    const a = pool[Math.floor(r() * pool.length)];
    const op = r();
    if (op < 0.45) {
      const until = r() < 0.1 ? null : Math.floor(r() * 1e12);
      set.set(a, until);
      model.set(a, until);
    } else if (op < 0.75) assert.equal(set.delete(a), model.delete(a), `delete ${a}`);
    else if (op < 0.9) assert.equal(set.get(a), model.get(a), `get ${a}`);
    else assert.equal(set.has(a), model.has(a), `has ${a}`);
    if (i % 50_000 === 0) assert.equal(set.size, model.size);
  }
  assert.equal(set.size, model.size);
  assert.deepEqual(new Map(set.entries()), model);
  assert.deepEqual(new Set(set.keys()), new Set(model.keys()));
  const v6 = [...model.keys()].filter((a) => a.includes(':')).length;
  assert.deepEqual(set.byFamily, { v4: model.size - v6, v6 });
  for (const at of [0, 3e11, 6e11, 1e12]) {
    for (const f of [4, 6] as const) {
      const expected = [...model].filter(([a, u]) => u !== null && u <= at && (a.includes(':') ? 6 : 4) === f).length;
      assert.equal(set.countEndedBy(f, at), expected, `countEndedBy(${f}, ${at})`);
    }
  }
});

test('text that is not canonical is kept as given, apart from its canonical twin', () => {
  const set = new BannedSet();
  for (const [a, u] of [['2001:DB8::1', 1], ['2001:db8::1', 2], ['2001:db8:0:0:0:0:0:1', 3], ['::FFFF:1.2.3.4', 4], ['1.2.3.4', 5], ['01.2.3.4', 6], ['::', null]] as const) set.set(a, u);
  assert.equal(set.size, 7);
  assert.equal(set.get('2001:db8::1'), 2);
  assert.equal(set.get('2001:DB8::1'), 1);
  assert.equal(set.get('::'), null);
  assert.deepEqual(new Set(set.keys()), new Set(['2001:DB8::1', '2001:db8::1', '2001:db8:0:0:0:0:0:1', '::FFFF:1.2.3.4', '1.2.3.4', '01.2.3.4', '::']));
  assert.equal(set.delete('2001:db8::1'), true);
  assert.equal(set.has('2001:DB8::1'), true);
  set.clear();
  assert.equal(set.size, 0);
  assert.deepEqual([...set.entries()], []);
});

test('every shape of a canonical IPv6 address goes through the table and back', () => {
  const set = new BannedSet();
  const all = ['1::', '::1', '1::1', '1:0:0:1::', 'fd33::b:0:1', '1:2:3:4:5:6:7:8', '1:0:2:3:4:5:6:7', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', '2001:db8::8:800:200c:417a', '0:2:3:4:5:6:7:8', '1:2:3:4:5:6:7:0', '::2:3:4:5:6:7', '1:2:3:4:5:6::'];
  for (const [i, a] of all.entries()) { assert.equal(canonicalIp(a)!.address, a); set.set(a, i); }
  assert.deepEqual(new Map(set.entries()), new Map(all.map((a, i) => [a, i])));
  assert.deepEqual(set.byFamily, { v4: 0, v6: all.length });
});

test('the table survives forced collisions: deletes in the middle of a run keep the others reachable', () => {
  const t = new HostTable(1, 8);
  const k = new Uint32Array(1);
  const r = rng(7);
  const model = new Map<number, number>();
  for (let i = 0; i < 200_000; i++) {
    // Keys from a small range in a table that grows from 8 slots: long runs, many wraps.
    k[0] = Math.floor(r() * 64) * 1024;
    if (r() < 0.55) { t.set(k, i); model.set(k[0], i); } else assert.equal(t.delete(k), model.delete(k[0]));
    if (i % 997 === 0) for (const [key, v] of model) { k[0] = key; const s = t.find(k); assert.ok(s >= 0, `lost ${key}`); assert.equal(t.value(s), v); }
  }
  assert.equal(t.size, model.size);
});

test('the ban count cache keeps at least the last max/2 counts set, at most max, newest value first', () => {
  const c = new CountCache(8);
  for (let i = 0; i < 100; i++) c.set(`10.0.0.${i}`, i);
  for (let i = 96; i < 100; i++) assert.equal(c.get(`10.0.0.${i}`), i);
  assert.equal(c.get('10.0.0.0'), undefined);
  assert.ok(c.size <= 8);
  // A newer count of an address in the older generation wins.
  c.set('10.0.0.1', 1); c.set('10.0.0.2', 2); c.set('10.0.0.3', 3); c.set('10.0.0.4', 4);
  c.set('10.0.0.1', 7);
  assert.equal(c.get('10.0.0.1'), 7);
});

test('the ban count cache stays fast when full (a Map evicting its first key walked its deleted entries)', () => {
  const c = new CountCache(65_536);
  const t = performance.now();
  for (let i = 0; i < 400_000; i++) c.set(`10.${(i >>> 16) & 255}.${(i >>> 8) & 255}.${i & 255}`, i);
  // ~0.2 s; the old cache took ~7 s for these.
  assert.ok(performance.now() - t < 2000, `took ${Math.round(performance.now() - t)} ms`);
});

test('endedBy: exactly the entries ending by a time, tables and map alike, permanent ones never', () => {
  const set = new BannedSet();
  const model = new Map<string, number | null>();
  const r = rng(11);
  for (let i = 0; i < 5000; i++) {
    const a = i % 3 === 0 ? `2001:db8::${i.toString(16)}` : i % 7 === 0 ? `10.${i >> 8}.0.0/24` : `10.${i >> 8}.${i & 255}.1`;
    const until = r() < 0.1 ? null : Math.floor(r() * 1000);
    set.set(a, until);
    model.set(a, until);
  }
  for (const at of [-1, 0, 250, 999, 5000]) {
    const want = [...model].filter(([, u]) => u !== null && u <= at).sort();
    assert.deepEqual([...set.endedBy(at)].sort(), want);
  }
});
