import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Decisions, type KernelQueue } from '../src/decisions';
import { StoreHealth } from '../src/decisions/pending';
import type { BanLines, KernelBan } from '../src/firewall';
import { createLogger, type Logger } from '../src/log';
import { Store } from '../src/store';
import { parseIpsetSave } from '../src/firewall/ipset';
import { AllowList } from '../src/allow';

function captureLog(): { log: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  return { log: createLogger('debug', { write: (s: string) => void lines.push(JSON.parse(s)) }), lines };
}

/** A kernel that records each call together with what the database held at that moment. */
class RecordingKernel implements KernelQueue {
  calls: { op: string; addresses: string[]; storedBefore: boolean[] }[] = [];
  constructor(private readonly store: () => Store) {}
  async add(bans: KernelBan[], now: number) {
    this.calls.push({ op: 'add', addresses: bans.map((b) => b.address), storedBefore: bans.map((b) => this.store().bans.isBanned(b.address, now)) });
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
  const d = new Decisions({ store, kernel, bantime, log });
  const now = Date.now();
  const committed = () => ['192.0.2.1', '192.0.2.2', '192.0.2.3'].filter((a) => store.bans.isBanned(a, now));
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
  assert.equal(store.bans.isBanned('198.51.100.1', now), true);
  assert.equal(store.bans.banCount('192.0.2.1'), 3, 'the pending automatic ban went first');
  // An unban cannot overtake a pending ban (the ban would come back on commit).
  d.ban('192.0.2.9', 4, reason, now, 'auto');
  assert.equal(await d.unban('192.0.2.9', now, 'unban'), true);
  await nextTurn();
  assert.equal(store.bans.isBanned('192.0.2.9', now), false);
}));

test('a database that fails: the kernel ban is still sent and the failure logged; an operator\'s ban reports it; the rows wait in memory', () => withStore(async (store) => {
  const kernel = new RecordingKernel(() => store);
  const { log, lines } = captureLog();
  const d = new Decisions({ store, kernel, bantime, log });
  const full = () => { throw new Error('SQLITE_FULL: database or disk is full'); };
  const { recordBan, recordBans } = { recordBan: store.bans.recordBan.bind(store.bans), recordBans: store.bans.recordBans.bind(store.bans) };
  store.bans.recordBan = full;
  store.bans.recordBans = full;
  d.ban('192.0.2.2', 4, reason, Date.now(), 'auto');
  await nextTurn();
  assert.throws(() => d.ban('192.0.2.3', 4, reason, Date.now(), 'manual'), /in the kernel, but not stored yet.*SQLITE_FULL/);
  assert.deepEqual(kernel.calls.map((c) => [c.op, c.addresses]), [['add', ['192.0.2.2']], ['add', ['192.0.2.3']]], 'the attackers are blocked anyway');
  const errs = lines.filter((l) => l.level === 50);
  assert.ok(errs.length >= 1);
  assert.match(String(errs[0].msg), /database write failed: ban rows kept in memory and retried/);
  assert.deepEqual(errs[0].addresses, ['192.0.2.2']);
  assert.equal(d.storage().pending, 2, 'both rows wait');
  assert.notEqual(d.storage().failingSince, null);
  assert.equal(d.isBanned('192.0.2.2'), true);
  store.bans.recordBan = recordBan;
  store.bans.recordBans = recordBans;
  await waitFor(() => d.storage().pending === 0, 'stored once the disk has room');
  assert.equal(store.bans.isBanned('192.0.2.2', Date.now()), true);
  assert.equal(store.bans.isBanned('192.0.2.3', Date.now()), true);
  assert.equal(d.storage().failingSince, null);
  assert.ok(lines.some((l) => l.msg === 'database writes succeed again'));
}));

/** Polls cond until true, failing after boundMs: for what the design promises to happen "soon". */
async function waitFor(cond: () => boolean, what: string, boundMs = 10_000): Promise<void> {
  const end = Date.now() + boundMs;
  while (!cond()) {
    if (Date.now() > end) assert.fail(`not within ${boundMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

test('retry: a failing write is tried again with a growing backoff until it succeeds; no ban is ever dropped', () => withStore(async (store) => {
  const kernel = new RecordingKernel(() => store);
  const { log, lines } = captureLog();
  const d = new Decisions({ store, kernel, bantime, log });
  const real = store.bans.recordBans.bind(store.bans);
  const realOne = store.bans.recordBan.bind(store.bans);
  const attempts: number[] = [];
  let failuresLeft = 5;
  const busy = () => { attempts.push(Date.now()); if (failuresLeft-- > 0) throw new Error('SQLITE_BUSY: database is locked'); };
  store.bans.recordBan = (b) => { busy(); return realOne(b); };
  store.bans.recordBans = (l) => { busy(); real(l); };
  const now = Date.now();
  const addresses = Array.from({ length: 20 }, (_, i) => `203.0.113.${i + 1}`);
  for (const a of addresses) d.ban(a, 4, reason, now, 'auto');
  assert.equal(kernel.calls.length, 20, 'every ban in the kernel at once');
  await waitFor(() => d.storage().pending === 0, 'stored after the failures');
  assert.equal(attempts.length, 6, 'five failures, then one write');
  const gaps = attempts.slice(1).map((t, i) => t - attempts[i]);
  // 50, 100, 200, 400, 800 ms: each wait at least the backoff, and growing.
  for (let i = 0; i < gaps.length; i++) assert.ok(gaps[i] >= 50 * 2 ** i - 2, `gap ${i}: ${gaps[i]} ms`);
  assert.deepEqual(addresses.filter((a) => store.bans.isBanned(a, now)), addresses, 'none dropped');
  assert.equal(lines.filter((l) => l.msg === 'ban').length, 20, 'each logged once stored');
  const failedLines = lines.filter((l) => String(l.msg).startsWith('database write failed'));
  assert.ok(failedLines.length >= 1 && failedLines.length <= 5, 'logged, without a line per retry flood');
  assert.equal(d.storage().failures, 5);
}));

test('kernel first: a database that cannot be read still bans at once, for the first ban\'s time, and says so', () => withStore(async (store) => {
  const order: string[] = [];
  const kernel: KernelQueue = { add: async (b) => { order.push(`kernel ${b[0].address} ${b[0].until}`); }, remove: async () => {}, setAll: async () => {} };
  const { log, lines } = captureLog();
  const d = new Decisions({ store, kernel, bantime, log });
  store.bans.banCount = () => { order.push('read'); throw new Error('SQLITE_CORRUPT: database disk image is malformed'); };
  const now = Date.now();
  const res = d.ban('192.0.2.7', 4, reason, now, 'auto');
  assert.deepEqual(order, [`kernel 192.0.2.7 ${now + 3_600_000}`, 'read'], 'the kernel command left before any database read');
  assert.equal(res.until, now + 3_600_000);
  assert.equal(d.isBanned('192.0.2.7'), true);
  const err = lines.find((l) => l.level === 50);
  assert.match(String(err?.msg), /ban count not read: first ban duration used/);
  assert.match(String(err?.err), /SQLITE_CORRUPT/);
}));

test('kernel first: a repeat offender gets the first ban at once, then its longer time; later bans use the cached count', () => withStore(async (store) => {
  const now = Date.now();
  const seed = new Decisions({ store, kernel: new RecordingKernel(() => store), bantime, log: captureLog().log });
  seed.ban('192.0.2.8', 4, reason, now - 10_000_000, 'auto');
  seed.flushWrites();
  const adds: [string, number | null][] = [];
  let reads = 0;
  const kernel: KernelQueue = { add: async (b) => { adds.push([b[0].address, b[0].until]); }, remove: async () => {}, setAll: async () => {} };
  const d = new Decisions({ store, kernel, bantime, log: captureLog().log });
  const realCount = store.bans.banCount.bind(store.bans);
  store.bans.banCount = (a) => { reads++; return realCount(a); };
  const res = d.ban('192.0.2.8', 4, reason, now, 'auto');
  assert.deepEqual(adds, [['192.0.2.8', now + 3_600_000], ['192.0.2.8', now + 7_200_000]]);
  assert.equal(res.banCount, 2);
  assert.equal(d.bannedUntil('192.0.2.8'), now + 7_200_000);
  await nextTurn();
  const third = d.ban('192.0.2.8', 4, reason, now + 1, 'auto');
  assert.equal(third.until, now + 1 + 14_400_000);
  assert.equal(reads, 1, 'the count came from the cache');
  assert.equal(adds.length, 3, 'one kernel command for a cached count');
}));

test('in-memory expiry: a ban ends by its own time when the database cannot be updated, and when its row is still pending', () => withStore(async (store) => {
  const kernel = new RecordingKernel(() => store);
  const { log, lines } = captureLog();
  const d = new Decisions({ store, kernel, bantime, log });
  const now = Date.now();
  d.ban('192.0.2.10', 4, reason, now, 'auto', 1000);
  d.flushWrites();
  store.bans.expireBans = () => { throw new Error('SQLITE_IOERR: disk I/O error'); };
  assert.equal(await d.expire(now + 500), 0);
  assert.equal(d.isBanned('192.0.2.10'), true, 'not before its time');
  assert.equal(await d.expire(now + 1000), 1);
  assert.equal(d.isBanned('192.0.2.10'), false);
  assert.deepEqual(kernel.calls.at(-1), { op: 'remove', addresses: ['192.0.2.10'], storedBefore: [] });
  assert.ok(lines.some((l) => l.msg === 'unban' && l.address === '192.0.2.10' && l.reason === 'expired'));
  assert.ok(lines.some((l) => String(l.msg).includes('expiry not stored')));
  // A ban whose row never got written ends by its time too (the database works, but lacks it).
  const s2 = new Decisions({ store, kernel, bantime, log: captureLog().log });
  store.bans.recordBan = () => { throw new Error('SQLITE_READONLY: attempt to write a readonly database'); };
  store.bans.recordBans = store.bans.recordBan as never;
  delete (store.bans as { expireBans?: unknown }).expireBans;
  s2.ban('192.0.2.11', 4, reason, now, 'auto', 1000);
  await nextTurn();
  assert.equal(s2.storage().pending, 1);
  assert.equal(await s2.expire(now + 1001), 2, 'its own, and the first ban\'s row the database now marks');
  assert.equal(s2.isBanned('192.0.2.11'), false);
  assert.equal(s2.storage().pending, 1, 'the row is still written later: the history keeps it');
  s2.close();
}));

test('resync loads the in-memory bans, also those whose rows are still pending', () => withStore(async (store) => {
  const kernel = new RecordingKernel(() => store);
  const d = new Decisions({ store, kernel, bantime, log: captureLog().log });
  const now = Date.now();
  d.ban('192.0.2.20', 4, reason, now, 'auto');
  d.flushWrites();
  store.bans.recordBan = () => { throw new Error('SQLITE_BUSY: database is locked'); };
  store.bans.recordBans = store.bans.recordBan as never;
  d.ban('192.0.2.21', 4, reason, now, 'auto');
  await d.resync(now);
  assert.deepEqual(kernel.calls.at(-1)?.addresses.sort(), ['192.0.2.20', '192.0.2.21']);
  d.close();
}));

test('adopt: kernel bans the database lacks are stored before restore (canonical, never allowed, rules get the bantime)', () => withStore(async (store) => {
  const now = Date.now();
  const seed = new Decisions({ store, kernel: new RecordingKernel(() => store), bantime, log: captureLog().log });
  seed.ban('192.0.2.1', 4, reason, now - 1000, 'auto');
  seed.flushWrites();
  const { log, lines } = captureLog();
  const kernel = new RecordingKernel(() => store);
  const d = new Decisions({ store, kernel, bantime, log });
  const allow = AllowList.of(['198.51.100.0/24']);
  const n = (await d.adopt([
    { address: '192.0.2.1', family: 4, timeoutSec: 99 }, // stored already
    { address: '192.0.2.2', family: 4, timeoutSec: 600 },
    { address: '2001:db8::5', family: 6, timeoutSec: 0 }, // permanent
    { address: '198.51.100.4', family: 4, timeoutSec: 600 }, // allowed
    { address: '2001:DB8::6', family: 6, timeoutSec: 600 }, // not canonical
    { address: '192.0.2.3', family: 6, timeoutSec: 600 }, // wrong family
    { address: '0.0.0.0', family: 4, timeoutSec: 600 }, // not a host: refused
    { address: '192.0.2.9', family: 4, timeoutSec: null }, // a rule: no time
  ], now, allow)).adopted;
  const rows = new Map(store.bans.activeKernelBans(now).map((b) => [b.address, b.until]));
  assert.deepEqual([...rows.keys()].sort(), ['192.0.2.1', '192.0.2.2', '192.0.2.9', '2001:db8::5']);
  assert.equal(rows.get('192.0.2.2'), now + 600_000);
  assert.equal(rows.get('2001:db8::5'), null);
  assert.equal(rows.get('192.0.2.9'), now + 3_600_000);
  assert.ok(!rows.has('198.51.100.4') && !rows.has('2001:DB8::6') && !rows.has('192.0.2.3'));
  assert.equal(n, rows.size - 1);
  assert.ok(lines.some((l) => l.msg === `adopted ${n} bans from the kernel`));
  await d.restore(now, allow);
  for (const a of ['192.0.2.2', '2001:db8::5', '192.0.2.9']) assert.equal(d.isBanned(a), true, a);
  // Adopted rows that cannot be written stay pending, and restore puts them back after its load.
  const kernel2 = new RecordingKernel(() => store);
  const d2 = new Decisions({ store, kernel: kernel2, bantime, log: captureLog().log });
  store.bans.recordBan = () => { throw new Error('SQLITE_READONLY: attempt to write a readonly database'); };
  store.bans.recordBans = store.bans.recordBan as never;
  assert.deepEqual(await d2.adopt([{ address: '192.0.2.30', family: 4, timeoutSec: 600 }], now, allow), { adopted: 1, listed: 1 });
  await d2.restore(now, allow);
  assert.equal(d2.isBanned('192.0.2.30'), true);
  assert.deepEqual(kernel2.calls.at(-1)?.addresses, ['192.0.2.30']);
  d2.close();
}));

test('restore: the kernel reads the stored bans as it loads; allowed ones are lifted; a load cut short still leaves every ban known', () => withStore(async (store) => {
  const now = Date.now();
  const seed = new Decisions({ store, kernel: new RecordingKernel(() => store), bantime, log: captureLog().log });
  for (const a of ['192.0.2.1', '192.0.2.2', '198.51.100.9', '2001:db8::1']) seed.ban(a, a.includes(':') ? 6 : 4, reason, now - 1000, 'auto');
  seed.flushWrites();
  const exempt = AllowList.of(['198.51.100.0/24']);
  for (const readAll of [true, false]) {
    const loaded: string[] = [];
    const kernel: KernelQueue = {
      add: async () => {}, remove: async () => {},
      async setAll(bans) {
        for (const b of bans) { loaded.push(b.address); if (!readAll) break; } // a load that fails after the first line
      },
    };
    const { log, lines } = captureLog();
    const d = new Decisions({ store, kernel, bantime, log });
    const r = await d.restore(now, exempt);
    assert.equal(d.activeCount, 3, `every non-allowed stored ban known (readAll ${readAll})`);
    for (const a of ['192.0.2.1', '192.0.2.2', '2001:db8::1']) assert.equal(d.isBanned(a), true, a);
    if (readAll) {
      assert.deepEqual(loaded.sort(), ['192.0.2.1', '192.0.2.2', '2001:db8::1']);
      assert.deepEqual(r, { restored: 3, lifted: 1 });
      assert.equal(store.bans.isBanned('198.51.100.9', now), false, 'the allowed one is lifted in the database');
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
  const d = new Decisions({ store, kernel: failing, bantime, log: captureLog().log });
  await assert.rejects(d.restore(now, exempt), /ipset restore failed/);
  assert.equal(d.activeCount, 3);
  assert.equal(store.bans.isBanned('192.0.2.2', now), true);
  d.ban('192.0.2.77', 4, reason, now, 'manual');
  assert.equal(store.bans.isBanned('192.0.2.77', now), true);
}));

/** A kernel that takes a full load as lines (as the ipset backend does), recording the order of calls. */
function linesKernel(calls: string[], loads: BanLines[]): KernelQueue {
  return {
    add: async () => {}, remove: async () => {},
    async setAll(bans) {
      const lines = bans.render?.({ prefix: { 4: 'add t4 ', 6: 'add t6 ' }, rangePrefix: { 4: 'add m4 ', 6: 'add m6 ' }, infix: ' timeout ', maxSeconds: 2_147_483 });
      if (lines) { loads.push(lines); calls.push('setAllLines'); return; }
      calls.push(`setAll ${[...bans].map((b) => b.address).sort().join(',')}`);
    },
  };
}

const fam = (a: string) => (a.includes(':') ? 6 : 4);

test('restore into a backend that loads lines: allowed bans lifted first (also in a network with no text prefix), the rest rendered by the store and loaded before the in-memory set is made', () => withStore(async (store) => {
  const now = Date.now();
  const seed = new Decisions({ store, kernel: new RecordingKernel(() => store), bantime, log: captureLog().log });
  for (const a of ['192.0.2.1', '198.51.100.9', '2001:db8::1', '203.0.113.5', '10.1.2.3']) seed.ban(a, fam(a), reason, now - 1000, 'auto');
  seed.ban('192.0.2.8', 4, reason, now - 1000, 'manual', null); // permanent
  seed.flushWrites();
  // 8.0.0.0/5 holds 10.1.2.3 but has no text prefix (''): every stored IPv4 ban is looked at.
  const allow = AllowList.of(['198.51.100.0/24', '8.0.0.0/5']);
  const calls: string[] = [];
  const loads: BanLines[] = [];
  const { log, lines } = captureLog();
  const d = new Decisions({ store, kernel: linesKernel(calls, loads), bantime, log });
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
    assert.equal(store.bans.isBanned(a, now), false, `${a} lifted in the database`);
  }
  assert.deepEqual(lines.filter((l) => l.msg === 'stored ban lifted: address is allowed now').map((l) => l.address).sort(), ['10.1.2.3', '198.51.100.9']);
}));

test('restore into a backend that loads lines: a malformed stored address is left out; if rendered, a second load of the checked bans', () => withStore(async (store) => {
  const now = Date.now();
  const seed = new Decisions({ store, kernel: new RecordingKernel(() => store), bantime, log: captureLog().log });
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
  const d = new Decisions({ store, kernel: linesKernel(calls, loads), bantime, log });
  const r = await d.restore(now, AllowList.of([]), (n) => calls.push(`loaded ${n}`));
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
  const seed = new Decisions({ store, kernel: new RecordingKernel(() => store), bantime, log: captureLog().log });
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
  const d = new Decisions({ store, kernel: linesKernel(calls, loads), bantime, log });
  const r = await d.restore(now, AllowList.of([]), (n) => calls.push(`loaded ${n}`));
  assert.deepEqual(loads[0][4].split('\n'), ['add t4 192.0.2.1 timeout 3599']);
  assert.deepEqual(loads[0][6].split('\n').sort(), ['add t6 2001:db8::1 timeout 3599', 'add t6 ff:1::1 timeout 0']);
  assert.deepEqual(calls, ['setAllLines', 'loaded 3'], 'no second load');
  assert.deepEqual(r, { restored: 3, lifted: 0 });
  assert.deepEqual(lines.filter((l) => l.msg === 'full load: stored ban left out, its address may not be banned').map((l) => l.address).sort(), [...notHosts].sort());
  // The streamed restore (other backends) leaves them out the same way.
  const streamed: string[] = [];
  const kernel: KernelQueue = { add: async () => {}, remove: async () => {}, async setAll(bans) { for (const b of bans) streamed.push(b.address); } };
  const d2 = new Decisions({ store, kernel, bantime, log: captureLog().log });
  assert.deepEqual(await d2.restore(now, AllowList.of([])), { restored: 3, lifted: 0 });
  assert.deepEqual(streamed.sort(), ['192.0.2.1', '2001:db8::1', 'ff:1::1']);
  // unban lifts such a row by its exact text; nothing goes to the kernel for it.
  const removed: string[] = [];
  const k3: KernelQueue = { ...kernel, remove: async (bans) => { for (const b of bans) removed.push(b.address); } };
  const d3 = new Decisions({ store, kernel: k3, bantime, log: captureLog().log });
  assert.equal(await d3.unban('0.0.0.0', now, 'unban'), true);
  assert.equal(await d3.unban('ff02::1', now, 'unban'), true);
  assert.equal(store.bans.isBanned('0.0.0.0', now), false);
  assert.equal(store.bans.isBanned('ff02::1', now), false);
  assert.deepEqual(removed, []);
  // A non-canonical stored text, lifted as given.
  insert('192.0.2.010');
  assert.equal(await d3.unban('192.0.2.010', now, 'unban'), true);
  assert.equal(store.bans.isBanned('192.0.2.010', now), false);
}));

test('resync: the kernel gets the stored active bans the daemon knows, pending ones committed first', () => withStore(async (store) => {
  const now = Date.now();
  const loads: string[][] = [];
  const kernel: KernelQueue = { add: async () => {}, remove: async () => {}, async setAll(bans) { loads.push([...bans].map((b) => b.address).sort()); } };
  const d = new Decisions({ store, kernel, bantime, log: captureLog().log });
  d.ban('192.0.2.1', 4, reason, now, 'auto');
  d.ban('2001:db8::1', 6, reason, now, 'auto'); // both still pending: resync must commit them first
  d.ban('192.0.2.2', 4, reason, now, 'manual', 1); // ends 1 ms later: not active by resync time
  await d.resync(now + 10);
  assert.deepEqual(loads, [['192.0.2.1', '2001:db8::1']]);
}));

test('the counts by family follow every change (ban, ban again, unban, expiry, restore, unban all)', () => withStore(async (store) => {
  const kernel = new RecordingKernel(() => store);
  const d = new Decisions({ store, kernel, bantime, log: captureLog().log });
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
  const restarted = new Decisions({ store, kernel, bantime, log: captureLog().log });
  await restarted.restore(now + 1, AllowList.of([]));
  assert.deepEqual(restarted.countByFamily(), { v4: 1, v6: 1 }, 'restored from the database');
  await restarted.unbanAll(now + 2);
  assert.deepEqual(restarted.countByFamily(), { v4: 0, v6: 0 }, 'all lifted');
}));

test('with a commit delay, a burst of automatic bans is stored together once the delay has passed; an unban meanwhile stores them first', () => withStore(async (store) => {
  const kernel = new RecordingKernel(() => store);
  const { log, lines } = captureLog();
  const d = new Decisions({ store, kernel, bantime, log, commitDelayMs: 40 });
  const now = Date.now();
  const burst = ['192.0.2.1', '192.0.2.2', '192.0.2.3'];
  for (const a of burst) d.ban(a, 4, reason, now, 'auto');
  assert.equal(kernel.calls.length, 3, 'the kernel at once');
  await nextTurn();
  await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(burst.filter((a) => store.bans.isBanned(a, now)), [], 'not stored yet');
  assert.equal(lines.filter((l) => l.msg === 'ban').length, 0);
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(burst.filter((a) => store.bans.isBanned(a, now)), burst, 'stored together');
  assert.equal(lines.filter((l) => l.msg === 'ban').length, 3);
  // A second burst, cut short by an unban: the pending bans are stored first.
  d.ban('192.0.2.4', 4, reason, now, 'auto');
  d.ban('192.0.2.5', 4, reason, now, 'auto');
  assert.equal(await d.unban('192.0.2.5', now, 'unban'), true);
  assert.equal(store.bans.isBanned('192.0.2.4', now), true);
  assert.equal(store.bans.isBanned('192.0.2.5', now), false);
  assert.equal(store.bans.banCount('192.0.2.5'), 1, 'the ban was stored before its unban');
}));

test('parseIpsetSave: members of the named set with their timeouts; anything else in the output is ignored', () => {
  const text = [
    'create ampere-v4 hash:ip family inet hashsize 1024 maxelem 1048576 timeout 0 bucketsize 12 initval 0x1',
    'add ampere-v4 192.0.2.1 timeout 3599',
    'add ampere-v4 192.0.2.2 timeout 0',
    'add ampere-v4 192.0.2.3',
    'add other-set 192.0.2.4 timeout 10',
    'add ampere-v4 192.0.2.005 timeout 10',
    'add ampere-v4 2001:db8::1 timeout 10',
    'add ampere-v4 192.0.2.6 timeout -5',
    'add ampere-v4 192.0.2.7;rm timeout 5',
    '',
  ].join('\n');
  assert.deepEqual(parseIpsetSave(text, 'ampere-v4', 4), [
    { address: '192.0.2.1', family: 4, timeoutSec: 3599 },
    { address: '192.0.2.2', family: 4, timeoutSec: 0 },
    { address: '192.0.2.3', family: 4, timeoutSec: 0 },
    { address: '192.0.2.6', family: 4, timeoutSec: null },
  ]);
});

test('adopt: a kernel member whose ban the database already ended (a crash between an unban or expiry and its kernel command) is not brought back', () => withStore(async (store) => {
  const now = Date.now();
  const d0 = new Decisions({ store, kernel: new RecordingKernel(() => store), bantime, log: captureLog().log });
  d0.ban('192.0.2.40', 4, reason, now - 1000, 'auto'); // until now + 3599 s, then unbanned
  d0.ban('192.0.2.41', 4, reason, now - 1000, 'auto'); // unbanned; the kernel holds a newer ban
  d0.ban('192.0.2.42', 4, reason, now - 3_700_000, 'auto'); // expired (rules: its rule stayed)
  d0.flushWrites();
  await d0.unban('192.0.2.40', now - 500, 'unban');
  await d0.unban('192.0.2.41', now - 500, 'unban');
  await d0.expire(now);
  const d = new Decisions({ store, kernel: new RecordingKernel(() => store), bantime, log: captureLog().log });
  const n = (await d.adopt([
    { address: '192.0.2.40', family: 4, timeoutSec: 3599 }, // the unbanned ban itself: not adopted
    { address: '192.0.2.41', family: 4, timeoutSec: 7000 }, // another ban (its row lost): adopted
    { address: '192.0.2.42', family: 4, timeoutSec: null }, // a rule of an expired ban: not adopted
  ], now, AllowList.of([]))).adopted;
  assert.equal(n, 1);
  assert.deepEqual(store.bans.activeKernelBans(now).map((b) => b.address), ['192.0.2.41']);
}));

test('health: failing writes, and a ban row pending more than 60 s, are problems; a short wait is not', async () => {
  const { storageProblems } = await import('../src/decisions/pending.js');
  const now = 1_000_000_000;
  const base = { pending: 0, oldestPendingSince: null, failingSince: null, lastError: null, failures: 0 };
  assert.deepEqual(storageProblems(base, now), []);
  assert.deepEqual(storageProblems({ ...base, pending: 3, oldestPendingSince: now - 59_000 }, now), []);
  assert.match(storageProblems({ ...base, pending: 3, oldestPendingSince: now - 61_000 }, now).join(), /3 bans in the kernel not stored for more than 60 s/);
  assert.match(storageProblems({ ...base, failingSince: now - 10, lastError: 'expiry: SQLITE_READONLY' }, now).join(), /database writes failing since .*SQLITE_READONLY/);
});

test('StoreHealth tells its subscribers once when writes start failing and once when all succeed again', () => {
  const seen: boolean[] = [];
  const h = new StoreHealth(createLogger('silent'), () => 1000);
  h.onFailingChange((failing) => seen.push(failing));
  h.failed('bans', 'ban rows', new Error('SQLITE_BUSY: database is locked'));
  h.failed('history', 'history', new Error('SQLITE_BUSY: database is locked'));
  h.failed('bans', 'ban rows', new Error('SQLITE_BUSY: database is locked'));
  assert.deepEqual(seen, [true], 'one signal for the start of the failure, however many writes fail');
  h.ok('bans');
  assert.deepEqual(seen, [true], 'history still fails');
  h.ok('history');
  assert.deepEqual(seen, [true, false]);
  h.failed('expiry', 'expiry', new Error('disk I/O error'));
  assert.deepEqual(seen, [true, false, true]);
});

test('without kernel ban times (rules backend): a host banned before is stored before its kernel command, a first ban still goes kernel first', () => withStore(async (store) => {
  const kernel = new RecordingKernel(() => store);
  const d = new Decisions({ store, kernel, bantime, log: captureLog().log, commitDelayMs: 20, storeRebansFirst: true });
  const t0 = Date.now();
  d.ban('192.0.2.7', 4, reason, t0, 'auto');
  assert.deepEqual(kernel.calls.map((c) => c.storedBefore), [[false]], 'first ban: kernel first, the row follows in a batch');
  d.flushWrites(true);
  await d.unban('192.0.2.7', t0 + 1000, 'unban');
  // A crash right after the re-ban's kernel command must find its row: a start cannot tell
  // the new rule from the one the unban left if the database only holds the ended ban.
  kernel.calls = [];
  const again = d.ban('192.0.2.7', 4, reason, t0 + 2000, 'auto');
  assert.equal(again.banCount, 2);
  assert.deepEqual(kernel.calls.map((c) => [c.op, c.storedBefore]), [['add', [true]]], 're-ban: stored before the kernel command');

  // The same re-ban where the kernel keeps ban times (ipset): kernel first.
  const k2 = new RecordingKernel(() => store);
  const d2 = new Decisions({ store, kernel: k2, bantime, log: captureLog().log, commitDelayMs: 20 });
  await d2.unban('192.0.2.7', t0 + 3000, 'unban');
  k2.calls = [];
  d2.ban('192.0.2.7', 4, reason, t0 + 4000, 'auto');
  const adds = k2.calls.filter((c) => c.op === 'add');
  assert.ok(adds.length >= 1 && adds.every((c) => c.storedBefore[0] === false), 'ipset: kernel first (then the longer time once the count is read), the row follows');
  d2.flushWrites(true);
}));

test('peers\' bans of a catch-up page: rows stored first, then one kernel batch, rows stored with source fleet and origin, one log line for the lot', () => withStore(async (store) => {
  const kernel = new RecordingKernel(() => store);
  const { log, lines } = captureLog();
  const d = new Decisions({ store, kernel, bantime, log });
  const now = Date.now();
  const page = Array.from({ length: 30 }, (_, i) => ({ address: `198.51.100.${i + 1}`, family: 4 as const, until: now + 60_000 + i, reason, origin: i % 2 ? 'pbx1' : 'pbx2' }));
  const applied = d.banMany(page, now);
  assert.equal(kernel.calls.length, 1, 'one kernel batch');
  assert.deepEqual(kernel.calls[0].addresses, page.map((b) => b.address));
  assert.ok(kernel.calls[0].storedBefore.every((s) => s), 'rows first, then the kernel (src/decisions/bulk.ts)');
  await applied;
  await nextTurn();
  const rows = store.bans.listBans(now);
  assert.equal(rows.length, 30);
  assert.ok(rows.every((r) => r.source === 'fleet' && r.origin === (Number(r.address.split('.')[3]) % 2 === 0 ? 'pbx1' : 'pbx2')));
  assert.equal(d.bannedUntil('198.51.100.30'), now + 60_029);
  assert.equal(lines.filter((l) => l.msg === 'ban').length, 0, 'no line per ban');
  assert.deepEqual(lines.filter((l) => l.msg === 'bans from the fleet').map((l) => [l.count, l.origins]), [[30, ['pbx2', 'pbx1']]]);
  // A lone peer ban goes the way of any ban: its own line.
  await d.banMany([{ address: '198.51.100.200', family: 4, until: now + 60_000, reason, origin: 'pbx1' }], now).then(nextTurn);
  assert.equal(lines.filter((l) => l.msg === 'ban' && l.address === '198.51.100.200' && l.origin === 'pbx1').length, 1);
}));
