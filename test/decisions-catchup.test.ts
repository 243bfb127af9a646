/**
 * A fleet catch-up's page through Decisions.banMany: the rows first, written in bulk, then the
 * kernel (one batch) (src/store/bulk-bans.ts): every ban stored with source fleet and its
 * origin, an older local ban of a host superseded, and all of it back after a restart.
 * The age rule for cutting flows (src/fleet/apply.ts FLOW_CUT_AGE_MS) and the queue honouring it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AllowList } from '../src/allow';
import { Decisions, type KernelQueue, type PeerBan } from '../src/decisions';
import { FirewallQueue, type ConntrackFlusher, type FirewallBackend, type KernelBan } from '../src/firewall';
import { checkDecision, FLOW_CUT_AGE_MS, type ApplyDeps, type Received } from '../src/fleet/apply';
import { createLogger } from '../src/log';
import { Store } from '../src/store';

const log = createLogger('warn', { write: () => {} });
const bantime = { bantimeMs: 3_600_000, factor: 2, maxMs: 86_400_000 };
const reason = { kind: 'ChallengeResponseFailed', service: 'PJSIP', account: '', failures: 0 };

class Kernel implements KernelQueue {
  adds: { addresses: string[]; stored: number }[] = [];
  constructor(private readonly store: Store) {}
  async add(bans: KernelBan[], now: number) { this.adds.push({ addresses: bans.map((b) => b.address), stored: bans.filter((b) => this.store.bans.isBanned(b.address, now)).length }); }
  async remove() {}
  async setAll() {}
}

function withDir(fn: (path: string) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'ampere-catchup-'));
  return fn(join(dir, 'ampere.db')).finally(() => rmSync(dir, { recursive: true, force: true }));
}

const peerBans = (n: number, now: number, origin = 'pbx1'): PeerBan[] =>
  Array.from({ length: n }, (_, i) => ({ address: `100.64.${i >> 8}.${i & 255}`, family: 4 as const, until: now + 86_400_000 - i, reason, origin }));

test('a catch-up of N peer bans: N rows with source fleet and origin, then one kernel batch; all back after a restart', () => withDir(async (path) => {
  const now = Date.now();
  const n = 2_000;
  let store = new Store(path);
  const kernel = new Kernel(store);
  const d = new Decisions({ store, kernel, bantime, log, commitDelayMs: 20 });
  const applied = d.banMany(peerBans(n, now), now);
  // Stored first: a crash before the kernel command leaves nothing the next start would adopt as this node's own.
  assert.deepEqual(kernel.adds.map((a) => [a.addresses.length, a.stored]), [[n, n]], 'every row was stored before the kernel batch left');
  assert.equal(d.flushWrites(true), true);
  await applied;
  const rows = store.bans.listBans(now);
  assert.equal(rows.length, n);
  assert.ok(rows.every((r) => r.source === 'fleet' && r.origin === 'pbx1'));
  assert.equal(store.sqlite.prepare('SELECT count(*) FROM hosts WHERE banned = 1 AND ban_count = 1').pluck().get(), n);
  d.close();
  store.close();
  // A restart (PostgreSQL unreachable or not): the bans come back from SQLite alone.
  store = new Store(path);
  const again = new Decisions({ store, kernel: new Kernel(store), bantime, log });
  const { restored } = await again.restore(now + 1000, new AllowList([], null));
  assert.equal(restored, n);
  assert.equal(again.bannedUntil('100.64.3.7'), now + 86_400_000 - (3 * 256 + 7));
  store.close();
}));

test('a catch-up page holding a host with an older local ban supersedes it; a host in two pages of one commit is stored in order', () => withDir(async (path) => {
  const now = Date.now();
  const store = new Store(path);
  const d = new Decisions({ store, kernel: new Kernel(store), bantime, log });
  d.ban('100.64.0.5', 4, { ...reason, kind: 'InvalidPassword' }, now - 1000, 'manual');
  assert.equal(store.bans.listBans(now, { address: '100.64.0.5' })[0].source, 'manual');
  const page = peerBans(50, now);
  d.banMany(page, now);
  assert.equal(d.flushWrites(true), true);
  const hist = store.bans.listBans(now, { all: true, address: '100.64.0.5' });
  assert.deepEqual(hist.map((b) => [b.source, b.origin, b.liftReason]), [['fleet', 'pbx1', null], ['manual', null, 'superseded']]);
  assert.equal(hist[0].banCount, 2);
  assert.equal(store.bans.listBans(now).length, 50, 'one active ban per host');
  // Two pages pending together (one commit) with the same host: the later supersedes the earlier.
  d.banMany(peerBans(20, now + 1, 'pbx3'), now + 1);
  d.banMany([{ ...peerBans(1, now + 2, 'pbx4')[0] }, ...peerBans(20, now + 2, 'pbx4').slice(1)], now + 2);
  assert.equal(d.flushWrites(true), true);
  const latest = store.bans.listBans(now + 3, { all: true, address: '100.64.0.0' });
  assert.deepEqual(latest.map((b) => [b.origin, b.liftReason]), [['pbx4', null], ['pbx3', 'superseded'], ['pbx1', 'superseded']]);
  assert.equal(store.bans.listBans(now + 3).length, 50);
  store.close();
}));

test('a peer decision made more than FLOW_CUT_AGE_MS before it arrives leaves the flows; a fresh one cuts them', () => {
  const now = Date.now();
  const deps = { decisions: { bannedUntil: () => undefined }, isAllowed: () => false, banMaxMs: 7 * 86_400_000 } as unknown as ApplyDeps;
  const d = (createdAt: number): Received => ({ id: '1', txid: '1', origin: 'pbx1', action: 'ban', address: '192.0.2.1', until: now + 3_600_000, reasonKind: 'x', reasonService: '', reasonAccount: '', failures: 1, operator: false, createdAt });
  const fresh = checkDecision(d(now - 5_000), deps, now);
  const old = checkDecision(d(now - FLOW_CUT_AGE_MS - 1), deps, now);
  assert.ok('ban' in fresh && 'ban' in old);
  assert.equal(fresh.ban.cutFlows, true);
  assert.equal(old.ban.cutFlows, false);
});

test('the kernel queue hands conntrack only the bans whose flows are to be cut', async () => {
  const flushed: string[][] = [];
  const conntrack = { flush: (bans: { address: string }[]) => void flushed.push(bans.map((b) => b.address)) } as unknown as ConntrackFlusher;
  const backend = {
    name: 'fake', netns: undefined, families: [4, 6], verifiable: false, keepsBanTimes: true,
    init: async () => {}, setAll: async () => {}, add: async () => {}, remove: async () => {}, keepsOrder: () => false,
    list: async () => [], inspect: async () => ({ drifts: [], counts: [] }), listBans: async () => [], setTarget: () => {}, shutdown: async () => {},
  } as unknown as FirewallBackend;
  const q = new FirewallQueue(backend, log, { conntrack });
  await q.add([{ address: '192.0.2.1', family: 4, until: null }, { address: '192.0.2.2', family: 4, until: null, cutFlows: false }, { address: '192.0.2.3', family: 4, until: null, cutFlows: true }]);
  await q.add([{ address: '192.0.2.4', family: 4, until: null, cutFlows: false }]);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(flushed, [['192.0.2.1', '192.0.2.3']]);
});
