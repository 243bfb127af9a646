import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AllowList, fixedEntries, networkOf, amiHostAddresses } from '../src/allow';
import { parseCidr } from '../src/net/cidr';
import { PenaltyTable } from '../src/scoring';
import { Store } from '../src/store';
import type { SecurityEvent } from '../src/events';

const cfg = { allow: [parseCidr('203.0.113.0/24')!], host: '192.0.2.10' };
const failure = (address: string): SecurityEvent => ({ kind: 'InvalidPassword', severity: 'Error', service: 'PJSIP', address, family: 4, transport: 'UDP', port: 5060, account: '1', sessionId: '' });

function withStore(fn: (s: Store) => Promise<void> | void) {
  return async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ampt-allow-'));
    const s = new Store(join(dir, 'a.db'));
    try { await fn(s); } finally { s.close(); rmSync(dir, { recursive: true, force: true }); }
  };
}

test('the fixed entries: loopback, the configured networks, the Asterisk host; each says where it comes from', async () => {
  const list = new AllowList(fixedEntries(cfg, await amiHostAddresses(cfg.host, null)), null);
  assert.deepEqual(list.entries().map((e) => `${e.cidr} ${e.source}`), ['127.0.0.0/8 builtin', '::1 builtin', '203.0.113.0/24 config', '192.0.2.10 ami-host']);
  assert.deepEqual(list.allowedBy('127.9.9.9', 4), { cidr: '127.0.0.0/8', source: 'builtin' });
  assert.deepEqual(list.allowedBy('203.0.113.77', 4), { cidr: '203.0.113.0/24', source: 'config' });
  assert.equal(list.allows('192.0.2.10', 4), true);
  assert.equal(list.allows('192.0.2.11', 4), false);
  assert.equal(list.refusal('::1', 6), 'allowed (::1)');
  assert.deepEqual(await amiHostAddresses('pbx.example', null), [], 'a name is resolved only by the daemon');
});

test('networkOf masks the address to its prefix; junk is refused', () => {
  assert.equal(networkOf('192.0.2.50/28')?.text, '192.0.2.48/28');
  assert.equal(networkOf('2001:db8::1/32')?.text, '2001:db8::/32');
  assert.equal(networkOf('192.0.2.300'), null);
  assert.equal(networkOf('__proto__'), null);
  assert.equal(networkOf('10.1.2.3')?.text, '10.1.2.3', 'a bare address is its own /32');
  assert.equal(networkOf('10.1.2.3/33'), null, 'a prefix longer than the family');
});

test('adding a network stores it, lifts the bans it covers and forgets the penalties it covers', withStore(async (s) => {
  const list = new AllowList(fixedEntries(cfg, []), s.allowed);
  const penalties = new PenaltyTable({ loyalty: 3, findtimeMs: 600_000, maxHosts: 100, isAllowed: (a, f) => list.allows(a, f) });
  const now = 1_800_000_000_000;
  penalties.observe(failure('198.51.100.7'), now);
  penalties.observe(failure('198.51.100.7'), now + 1);
  penalties.observe(failure('198.51.101.1'), now);
  const unbans: string[] = [];
  const r = await list.add(networkOf('198.51.100.0/24')!, 'office', now, {
    activeBans: () => [{ address: '198.51.100.200', family: 4 }, { address: '198.51.101.9', family: 4 }],
    unban: async (a) => { unbans.push(a); return true; },
    forgetWhere: (t) => penalties.forgetWhere(t),
  });
  assert.deepEqual(r, { cidr: '198.51.100.0/24', added: true, unbanned: ['198.51.100.200'] });
  assert.deepEqual(unbans, ['198.51.100.200']);
  assert.equal(penalties.size, 1, 'only the host outside the network is still tracked');
  // The host's next failures meet the allow list, however many: never a ban.
  for (let i = 0; i < 5; i++) assert.equal(penalties.observe(failure('198.51.100.7'), now + 10 + i).action, 'allowed');
  assert.deepEqual(new AllowList(fixedEntries(cfg, []), s.allowed).entries().at(-1), { cidr: '198.51.100.0/24', source: 'runtime', addedAt: now, note: 'office' }, 'a restart reads it back');
  assert.equal((await list.add(networkOf('198.51.100.9/24')!, '', now, { activeBans: () => [], unban: async () => false, forgetWhere: () => 0 })).added, false, 'the same network again');
}));

test('removing: a runtime entry goes, a fixed one stays and says so', withStore(async (s) => {
  const list = new AllowList(fixedEntries(cfg, []), s.allowed);
  s.allowed.addAllowed('10.1.0.0/16', 1, '');
  s.allowed.addAllowed('203.0.113.0/24', 1, 'duplicate of the config');
  const again = new AllowList(fixedEntries(cfg, []), s.allowed);
  assert.equal(again.allows('10.1.2.3', 4), true);
  assert.deepEqual(await again.remove(networkOf('10.1.0.0/16')!), { removed: true, fixed: undefined });
  assert.equal(again.allows('10.1.2.3', 4), false);
  const fixed = await again.remove(networkOf('203.0.113.0/24')!);
  assert.equal(fixed.removed, true);
  assert.equal(fixed.fixed?.source, 'config');
  assert.equal(again.allows('203.0.113.5', 4), true, 'still allowed by the configuration');
  assert.deepEqual(await list.remove(networkOf('10.9.0.0/16')!), { removed: false, fixed: undefined });
}));

test('a reload that allows a network over 200,000 active bans lifts them all (no call takes that many arguments)', async () => {
  const list = AllowList.of([]);
  const bans = Array.from({ length: 200_000 }, (_, i) => ({ address: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, family: 4 as const }));
  bans.push({ address: '192.0.2.1', family: 4 });
  const lifted: string[] = [];
  const effects = { activeBans: () => bans, unban: async (a: string) => { lifted.push(a); return true; }, forgetWhere: () => 0 };
  const r = await list.replaceConfigured([parseCidr('10.0.0.0/8')!], Date.now(), effects);
  assert.deepEqual(r.added, ['10.0.0.0/8']);
  assert.equal(r.unbanned.length, 200_000);
  assert.equal(lifted.length, 200_000);
  assert.ok(!r.unbanned.includes('192.0.2.1'));
  assert.ok(list.allows('10.200.1.1', 4));
});
