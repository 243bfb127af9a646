import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseCidr } from '../src/net/cidr';
import { overlaps, parseRange } from '../src/net/range';

test('parseRange: canonical networks only, not wider than /8 (v4) or /32 (v6), not one host, not special', () => {
  const ok = (t: string) => { const r = parseRange(t); assert.ok(r.ok, `${t}: ${!r.ok && r.reason}`); return r.ok ? [r.range, r.family] : null; };
  assert.deepEqual(ok('203.0.113.0/24'), ['203.0.113.0/24', 4]);
  assert.deepEqual(ok(' 10.0.0.0/8 '), ['10.0.0.0/8', 4]);
  assert.deepEqual(ok('2001:DB8:0:0::/48'), ['2001:db8::/48', 6]);
  assert.deepEqual(ok('2001:db8:1:2::/64'), ['2001:db8:1:2::/64', 6]);
  const why = (t: string) => { const r = parseRange(t); assert.ok(!r.ok, t); return r.ok ? '' : r.reason; };
  assert.match(why('203.0.113.5/24'), /not a network address: the network is 203\.0\.113\.0\/24/);
  assert.match(why('2001:db8::1/64'), /the network is 2001:db8::\/64/);
  assert.match(why('10.0.0.0/7'), /wider than \/8/);
  assert.match(why('2001:db8::/31'), /wider than \/32/);
  assert.match(why('203.0.113.7/32'), /one address: ban 203\.0\.113\.7 as an address/);
  assert.match(why('2001:db8::7/128'), /one address/);
  assert.match(why('224.0.0.0/8'), /multicast/);
  assert.match(why('0.0.0.0/8'), /unspecified/);
  assert.match(why('ff02::/32'), /multicast/);
  for (const bad of ['203.0.113.0', '203.0.113.0/', '203.0.113.0/33', '203.0.113.0/24/1', 'x/24', '203.0.113.0/2a', '']) assert.ok(!parseRange(bad).ok, bad);
});

test('overlaps: a network and an address or network inside it, either way round; other families never', () => {
  const c = (t: string) => parseCidr(t)!;
  assert.ok(overlaps(c('203.0.113.0/24'), c('203.0.113.77')));
  assert.ok(overlaps(c('203.0.113.77'), c('203.0.113.0/24')));
  assert.ok(overlaps(c('203.0.0.0/16'), c('203.0.113.0/24')));
  assert.ok(!overlaps(c('203.0.113.0/25'), c('203.0.113.128/25')));
  assert.ok(!overlaps(c('203.0.113.0/24'), c('203.0.114.1')));
  assert.ok(overlaps(c('2001:db8::/32'), c('2001:db8:ffff::1')));
  assert.ok(!overlaps(c('::/0'), c('10.0.0.1')));
});
