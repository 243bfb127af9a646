import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Decisions, type KernelQueue } from '../src/decisions';
import type { BanLines, KernelBan } from '../src/firewall';
import { createLogger, type Logger } from '../src/log';
import { Store } from '../src/store';
import { AllowList, parseCidr } from '../src/net/cidr';

function captureLog(): { log: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  return { log: createLogger('debug', { write: (s: string) => void lines.push(JSON.parse(s)) }), lines };
}

/** A kernel that records each call together with what the database held at that moment. */
class RecordingKernel implements KernelQueue {
  calls: { op: string; addresses: string[]; storedBefore: boolean[] }[] = [];
  constructor(private readonly store: () => Store) {}
  async add(bans: KernelBan[], now: number) {
    this.calls.push({ op: 'add', addresses: bans.map((b) => b.address), storedBefore: bans.map((b) => this.store().isBanned(b.address, now)) });
  }
  async remove(bans: { address: string }[]) { this.calls.push({ op: 'remove', addresses: bans.map((b) => b.address), storedBefore: [] }); }
  async setAll(bans: Iterable<KernelBan>) { this.calls.push({ op: 'setAll', addresses: [...bans].map((b) => b.address), storedBefore: [] }); }
}

const reason = { kind: 'InvalidPassword', service: 'PJSIP', account: '100', failures: 3 };
const bantime = { bantimeMs: 3_600_000, factor: 2, maxMs: 86_400_000 };

const nextTurn = () => new Promise((r) => setImmediate(r));

/** A Store on a fresh file for one test, closed and removed after it. */
async function withStore(fn: (store: Store) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'ampere-decisions-'));
  const store = new Store(join(dir, 'ampere.db'));
  try {
    await fn(store);
  } finally {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

test('a ban: the kernel command is sent before the database commit; automatic bans are committed together after the loop turn, an operator\'s at once', () => withStore(async (store) => {
  const kernel = new RecordingKernel(() => store);
  const { log, lines } = captureLog();
  const d = new Decisions(store, kernel, bantime, log);
  const now = Date.now();
  const committed = () => ['192.0.2.1', '192.0.2.2', '192.0.2.3'].filter((a) => store.isBanned(a, now));
  const res = d.ban('192.0.2.1', 4, reason, now, 'auto');
  d.ban('192.0.2.2', 4, reason, now, 'auto');
  d.ban('192.0.2.3', 4, reason, now, 'auto');
  assert.deepEqual(kernel.calls.map((c) => [c.op, c.addresses, c.storedBefore]), [['add', ['192.0.2.1'], [false]], ['add', ['192.0.2.2'], [false]], ['add', ['192.0.2.3'], [false]]]);
  assert.deepEqual(committed(), [], 'not yet: the burst is still being handled');
  assert.equal(lines.filter((l) => l.msg === 'ban').length, 0, '"ban" is logged once stored');
  await nextTurn();
  assert.deepEqual(committed(), ['192.0.2.1', '192.0.2.2', '192.0.2.3'], 'all three in one commit after the turn');
  assert.deepEqual(lines.filter((l) => l.msg === 'ban').map((l) => [l.address, l.count]), [['192.0.2.1', 1], ['192.0.2.2', 1], ['192.0.2.3', 1]]);
  assert.equal(res.banCount, 1);
  assert.equal(res.until, now + 3_600_000);
  assert.equal(d.isBanned('192.0.2.1'), true);
  // Escalation reads the count of the stored bans, also one still pending in the same turn.
  assert.equal(d.ban('192.0.2.1', 4, reason, now + 1, 'auto').until, now + 1 + 7_200_000);
  const again = d.ban('192.0.2.1', 4, reason, now + 2, 'auto');
  assert.equal(again.banCount, 3);
  assert.equal(again.until, now + 2 + 14_400_000);
  // An operator's ban is in the database when ban() returns, after the pending automatic ones.
  d.ban('198.51.100.1', 4, { ...reason, kind: 'manual' }, now, 'manual');
  assert.equal(store.isBanned('198.51.100.1', now), true);
  assert.equal(store.banCount('192.0.2.1'), 3, 'the pending automatic ban went first');
  // An unban cannot overtake a pending ban (the ban would come back on commit).
  d.ban('192.0.2.9', 4, reason, now, 'auto');
  assert.equal(await d.unban('192.0.2.9', now, 'unban'), true);
  await nextTurn();
  assert.equal(store.isBanned('192.0.2.9', now), false);
}));

test('a database that fails: the kernel ban is still sent and the failure logged; an operator\'s ban reports it', () => withStore(async (store) => {
  const kernel = new RecordingKernel(() => store);
  const { log, lines } = captureLog();
  const d = new Decisions(store, kernel, bantime, log);
  const full = () => { throw new Error('SQLITE_FULL: database or disk is full'); };
  store.recordBan = full;
  store.recordBans = full;
  d.ban('192.0.2.2', 4, reason, Date.now(), 'auto');
  await nextTurn();
  assert.throws(() => d.ban('192.0.2.3', 4, reason, Date.now(), 'manual'), /SQLITE_FULL/);
  assert.deepEqual(kernel.calls.map((c) => [c.op, c.addresses]), [['add', ['192.0.2.2']], ['add', ['192.0.2.3']]], 'the attackers are blocked anyway');
  const errs = lines.filter((l) => l.level === 50);
  assert.equal(errs.length, 2);
  for (const e of errs) assert.match(String(e.msg), /in the kernel but could not be stored/);
  assert.deepEqual(errs.map((e) => e.addresses), [['192.0.2.2'], ['192.0.2.3']]);
}));

test('restore: the kernel reads the stored bans as it loads; allowed ones are lifted; a load cut short still leaves every ban known', () => withStore(async (store) => {
  const now = Date.now();
  const seed = new Decisions(store, new RecordingKernel(() => store), bantime, captureLog().log);
  for (const a of ['192.0.2.1', '192.0.2.2', '198.51.100.9', '2001:db8::1']) seed.ban(a, a.includes(':') ? 6 : 4, reason, now - 1000, 'auto');
  seed.flushWrites();
  const exempt = new AllowList([parseCidr('198.51.100.0/24')!]);
  for (const readAll of [true, false]) {
    const loaded: string[] = [];
    const kernel: KernelQueue = {
      add: async () => {}, remove: async () => {},
      async setAll(bans) {
        for (const b of bans) { loaded.push(b.address); if (!readAll) break; } // a load that fails after the first line
      },
    };
    const { log, lines } = captureLog();
    const d = new Decisions(store, kernel, bantime, log);
    const r = await d.restore(now, exempt);
    assert.equal(d.activeCount, 3, `every non-allowed stored ban known (readAll ${readAll})`);
    for (const a of ['192.0.2.1', '192.0.2.2', '2001:db8::1']) assert.equal(d.isBanned(a), true, a);
    if (readAll) {
      assert.deepEqual(loaded.sort(), ['192.0.2.1', '192.0.2.2', '2001:db8::1']);
      assert.deepEqual(r, { restored: 3, lifted: 1 });
      assert.equal(store.isBanned('198.51.100.9', now), false, 'the allowed one is lifted in the database');
      assert.equal(lines.filter((l) => l.msg === 'stored ban lifted: address is allowed now').length, 1);
    } else {
      assert.equal(loaded.length, 1);
      assert.deepEqual(r, { restored: 3, lifted: 0 });
    }
  }
  // A load that throws half-way: restore fails, yet every ban is known, and the database
  // still serves.
  const failing: KernelQueue = {
    add: async () => {}, remove: async () => {},
    async setAll(bans) { for (const b of bans) { void b; throw new Error('ipset restore failed'); } },
  };
  const d = new Decisions(store, failing, bantime, captureLog().log);
  await assert.rejects(d.restore(now, exempt), /ipset restore failed/);
  assert.equal(d.activeCount, 3);
  assert.equal(store.isBanned('192.0.2.2', now), true);
  d.ban('192.0.2.77', 4, reason, now, 'manual');
  assert.equal(store.isBanned('192.0.2.77', now), true);
}));

/** A kernel that takes a full load as lines (as the ipset backend does), recording the order of calls. */
function linesKernel(calls: string[], loads: BanLines[]): KernelQueue {
  return {
    add: async () => {}, remove: async () => {},
    async setAll(bans) { calls.push(`setAll ${[...bans].map((b) => b.address).sort().join(',')}`); },
    lineFormat: { prefix: { 4: 'add t4 ', 6: 'add t6 ' }, infix: ' timeout ', maxSeconds: 2_147_483 },
    async setAllLines(lines) { loads.push(lines); calls.push('setAllLines'); },
  };
}

const fam = (a: string) => (a.includes(':') ? 6 : 4);

test('restore into a backend that loads lines: allowed bans lifted first (also in a network with no text prefix), the rest rendered by the store and loaded before the in-memory set is made', () => withStore(async (store) => {
  const now = Date.now();
  const seed = new Decisions(store, new RecordingKernel(() => store), bantime, captureLog().log);
  for (const a of ['192.0.2.1', '198.51.100.9', '2001:db8::1', '203.0.113.5', '10.1.2.3']) seed.ban(a, fam(a), reason, now - 1000, 'auto');
  seed.ban('192.0.2.8', 4, reason, now - 1000, 'manual', null); // permanent
  seed.flushWrites();
  // 8.0.0.0/5 holds 10.1.2.3 but has no text prefix (''): every stored IPv4 ban is looked at.
  const allow = new AllowList([parseCidr('198.51.100.0/24')!, parseCidr('8.0.0.0/5')!]);
  const calls: string[] = [];
  const loads: BanLines[] = [];
  const { log, lines } = captureLog();
  const d = new Decisions(store, linesKernel(calls, loads), bantime, log);
  let knownAtLoad = -1;
  const r = await d.restore(now, allow, (n) => { knownAtLoad = d.activeCount; calls.push(`loaded ${n}`); });
  assert.deepEqual(calls, ['setAllLines', 'loaded 4'], 'one load, no second one');
  assert.equal(knownAtLoad, 0, 'the kernel first, the in-memory set after');
  assert.deepEqual(r, { restored: 4, lifted: 2 });
  assert.equal(loads[0].count, 4);
  assert.deepEqual(loads[0][4].split('\n').sort(), ['add t4 192.0.2.1 timeout 3599', 'add t4 192.0.2.8 timeout 0', 'add t4 203.0.113.5 timeout 3599']);
  assert.equal(loads[0][6], 'add t6 2001:db8::1 timeout 3599');
  for (const a of ['192.0.2.1', '192.0.2.8', '203.0.113.5', '2001:db8::1']) assert.equal(d.isBanned(a), true, a);
  for (const a of ['198.51.100.9', '10.1.2.3']) {
    assert.equal(d.isBanned(a), false, a);
    assert.equal(store.isBanned(a, now), false, `${a} lifted in the database`);
  }
  assert.deepEqual(lines.filter((l) => l.msg === 'stored ban lifted: address is allowed now').map((l) => l.address).sort(), ['10.1.2.3', '198.51.100.9']);
}));

test('restore into a backend that loads lines: a malformed stored address is left out; if rendered, a second load of the checked bans', () => withStore(async (store) => {
  const now = Date.now();
  const seed = new Decisions(store, new RecordingKernel(() => store), bantime, captureLog().log);
  seed.ban('192.0.2.1', 4, reason, now - 1000, 'auto');
  seed.flushWrites();
  // Written past the daemon's own checks (a hand-edited file): one with an address's
  // characters only, one with a space and letters, which the store does not render.
  for (const bad of ['192.0.2.01', '1.2.3.4 -j ACCEPT']) {
    store.sqlite.prepare('INSERT INTO hosts (address, family, first_seen, last_seen) VALUES (?, 4, 0, 0)').run(bad);
    store.sqlite.prepare(`INSERT INTO bans (address, family, started_at, until, reason_kind) VALUES (?, 4, 0, NULL, 'manual')`).run(bad);
  }
  const calls: string[] = [];
  const loads: BanLines[] = [];
  const { log, lines } = captureLog();
  const d = new Decisions(store, linesKernel(calls, loads), bantime, log);
  const r = await d.restore(now, new AllowList(), (n) => calls.push(`loaded ${n}`));
  assert.deepEqual(loads[0][4].split('\n').sort(), ['add t4 192.0.2.01 timeout 0', 'add t4 192.0.2.1 timeout 3599'], 'the one with other characters is not rendered');
  assert.deepEqual(calls, ['setAllLines', 'loaded 2', 'setAll 192.0.2.1'], 'then the checked bans again, without the malformed ones');
  assert.deepEqual(r, { restored: 1, lifted: 0 });
  assert.equal(d.isBanned('192.0.2.01'), false);
  const warn = lines.find((l) => l.msg === 'restore: loading the stored bans again, checked one by one');
  assert.deepEqual([warn?.loaded, warn?.stored], [2, 1]);
  assert.deepEqual(lines.filter((l) => l.msg === 'full load: stored ban left out, its address may not be banned').map((l) => l.address).sort(), ['1.2.3.4 -j ACCEPT', '192.0.2.01']);
}));

test('restore: stored addresses that cannot be one host are neither rendered nor loaded, and need no second load', () => withStore(async (store) => {
  const now = Date.now();
  const seed = new Decisions(store, new RecordingKernel(() => store), bantime, captureLog().log);
  seed.ban('192.0.2.1', 4, reason, now - 1000, 'auto');
  seed.ban('2001:db8::1', 6, reason, now - 1000, 'auto');
  seed.flushWrites();
  /** A ban row written straight into SQLite, past every check of the daemon. */
  const insert = (address: string) => {
    const f = address.includes(':') ? 6 : 4;
    store.sqlite.prepare(`INSERT INTO hosts (address, family, first_seen, last_seen) VALUES (?, ${f}, 0, 0)`).run(address);
    store.sqlite.prepare(`INSERT INTO bans (address, family, started_at, until, reason_kind) VALUES (?, ${f}, 0, NULL, 'auto')`).run(address);
  };
  const notHosts = ['0.0.0.0', '0.1.2.3', '224.0.0.1', '239.255.255.250', '240.0.0.1', '255.255.255.255', '::', 'ff02::1', 'ff00::'];
  for (const bad of notHosts) insert(bad);
  insert('ff:1::1'); // not multicast: a first word of 00ff is written "ff".
  const calls: string[] = [];
  const loads: BanLines[] = [];
  const { log, lines } = captureLog();
  const d = new Decisions(store, linesKernel(calls, loads), bantime, log);
  const r = await d.restore(now, new AllowList(), (n) => calls.push(`loaded ${n}`));
  assert.deepEqual(loads[0][4].split('\n'), ['add t4 192.0.2.1 timeout 3599']);
  assert.deepEqual(loads[0][6].split('\n').sort(), ['add t6 2001:db8::1 timeout 3599', 'add t6 ff:1::1 timeout 0']);
  assert.deepEqual(calls, ['setAllLines', 'loaded 3'], 'no second load');
  assert.deepEqual(r, { restored: 3, lifted: 0 });
  assert.deepEqual(lines.filter((l) => l.msg === 'full load: stored ban left out, its address may not be banned').map((l) => l.address).sort(), [...notHosts].sort());
  // The streamed restore (other backends) leaves them out the same way.
  const streamed: string[] = [];
  const kernel: KernelQueue = { add: async () => {}, remove: async () => {}, async setAll(bans) { for (const b of bans) streamed.push(b.address); } };
  const d2 = new Decisions(store, kernel, bantime, captureLog().log);
  assert.deepEqual(await d2.restore(now, new AllowList()), { restored: 3, lifted: 0 });
  assert.deepEqual(streamed.sort(), ['192.0.2.1', '2001:db8::1', 'ff:1::1']);
  // unban lifts such a row by its exact text; nothing goes to the kernel for it.
  const removed: string[] = [];
  const k3: KernelQueue = { ...kernel, remove: async (bans) => { for (const b of bans) removed.push(b.address); } };
  const d3 = new Decisions(store, k3, bantime, captureLog().log);
  assert.equal(await d3.unban('0.0.0.0', now, 'unban'), true);
  assert.equal(await d3.unban('ff02::1', now, 'unban'), true);
  assert.equal(store.isBanned('0.0.0.0', now), false);
  assert.equal(store.isBanned('ff02::1', now), false);
  assert.deepEqual(removed, []);
  // A non-canonical stored text, lifted as given.
  insert('192.0.2.010');
  assert.equal(await d3.unban('192.0.2.010', now, 'unban'), true);
  assert.equal(store.isBanned('192.0.2.010', now), false);
}));

test('resync: the kernel gets the stored active bans the daemon knows, pending ones committed first', () => withStore(async (store) => {
  const now = Date.now();
  const loads: string[][] = [];
  const kernel: KernelQueue = { add: async () => {}, remove: async () => {}, async setAll(bans) { loads.push([...bans].map((b) => b.address).sort()); } };
  const d = new Decisions(store, kernel, bantime, captureLog().log);
  d.ban('192.0.2.1', 4, reason, now, 'auto');
  d.ban('2001:db8::1', 6, reason, now, 'auto'); // both still pending: resync must commit them first
  d.ban('192.0.2.2', 4, reason, now, 'manual', 1); // ends 1 ms later: not active by resync time
  await d.resync(now + 10);
  assert.deepEqual(loads, [['192.0.2.1', '2001:db8::1']]);
}));

test('the counts by family follow every change (ban, ban again, unban, expiry, restore, unban all)', () => withStore(async (store) => {
  const kernel = new RecordingKernel(() => store);
  const d = new Decisions(store, kernel, bantime, captureLog().log);
  const now = Date.now();
  const expect = (v4: number, v6: number, what: string) => assert.deepEqual(d.countByFamily(), { v4, v6 }, what);
  expect(0, 0, 'empty');
  d.ban('192.0.2.1', 4, reason, now, 'manual');
  d.ban('2001:db8::1', 6, reason, now, 'manual');
  d.ban('2001:db8::2', 6, reason, now - 3_600_000, 'manual'); // ends now
  expect(1, 2, 'three bans');
  d.ban('2001:db8::1', 6, reason, now, 'manual');
  expect(1, 2, 'the same address banned again counts once');
  assert.equal(await d.unban('2001:db8::1', now, 'unban'), true);
  assert.equal(await d.unban('2001:db8::1', now, 'unban'), false);
  expect(1, 1, 'unbanned (twice)');
  assert.equal(await d.expire(now + 1), 1);
  expect(1, 0, '2001:db8::2 expired');
  d.ban('2001:db8::3', 6, reason, now, 'manual');
  const restarted = new Decisions(store, kernel, bantime, captureLog().log);
  await restarted.restore(now + 1, new AllowList());
  assert.deepEqual(restarted.countByFamily(), { v4: 1, v6: 1 }, 'restored from the database');
  await restarted.unbanAll(now + 2);
  assert.deepEqual(restarted.countByFamily(), { v4: 0, v6: 0 }, 'all lifted');
}));

test('with a commit delay, a burst of automatic bans is stored together once the delay has passed; an unban meanwhile stores them first', () => withStore(async (store) => {
  const kernel = new RecordingKernel(() => store);
  const { log, lines } = captureLog();
  const d = new Decisions(store, kernel, bantime, log, () => {}, 40);
  const now = Date.now();
  const burst = ['192.0.2.1', '192.0.2.2', '192.0.2.3'];
  for (const a of burst) d.ban(a, 4, reason, now, 'auto');
  assert.equal(kernel.calls.length, 3, 'the kernel at once');
  await nextTurn();
  await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(burst.filter((a) => store.isBanned(a, now)), [], 'not stored yet');
  assert.equal(lines.filter((l) => l.msg === 'ban').length, 0);
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(burst.filter((a) => store.isBanned(a, now)), burst, 'stored together');
  assert.equal(lines.filter((l) => l.msg === 'ban').length, 3);
  // A second burst, cut short by an unban: the pending bans are stored first.
  d.ban('192.0.2.4', 4, reason, now, 'auto');
  d.ban('192.0.2.5', 4, reason, now, 'auto');
  assert.equal(await d.unban('192.0.2.5', now, 'unban'), true);
  assert.equal(store.isBanned('192.0.2.4', now), true);
  assert.equal(store.isBanned('192.0.2.5', now), false);
  assert.equal(store.banCount('192.0.2.5'), 1, 'the ban was stored before its unban');
}));
