/**
 * The attack: a compromised (or confused) peer floods the fleet with bans of fresh addresses,
 * within fleet_receive_rate, until this node's ipset sets are full; from then on the kernel
 * refuses this node's own bans and the scanner attacking it gets through. Defence: peers'
 * bans fill at most 7/8 of set_size per family (src/fleet/apply.ts peerLimit); the rest is
 * refused as `full` and counted, the last eighth stays for this node's own bans. The receiver
 * runs against rows as PostgreSQL returns them (no database: test/helpers/receiver.ts),
 * with a real Decisions on a real SQLite file.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Decisions, type KernelQueue } from '../src/decisions';
import type { KernelBan } from '../src/firewall';
import { peerLimit, type Applied, type Received } from '../src/fleet/apply';
import { createLogger } from '../src/log';
import { Store } from '../src/store';
import { fakeReceiver } from './helpers/receiver';

const log = createLogger('warn', { write: () => {} });
const bantime = { bantimeMs: 3_600_000, factor: 2, maxMs: 86_400_000 };
const reason = { kind: 'ChallengeResponseFailed', service: 'PJSIP', account: '', failures: 3 };

class Kernel implements KernelQueue {
  held = new Set<string>();
  async add(bans: KernelBan[]) { for (const b of bans) this.held.add(b.address); }
  async remove(bans: Pick<KernelBan, 'address'>[]) { for (const b of bans) this.held.delete(b.address); }
  async setAll() {}
}

/** A page of a peer's bans as the receiver's query returns them. */
function page(addresses: string[], now: number, from: number, origin = 'pbx9', until = now + 3_600_000): Received[] {
  return addresses.map((address, i) => ({
    id: String(from + i), txid: String(1000 + from + i), origin, action: 'ban', address, until, reasonKind: 'ChallengeResponseFailed',
    reasonService: 'PJSIP', reasonAccount: '', failures: 3, operator: false, createdAt: now,
  }));
}

function setup(path: string, setSize: { value: number }) {
  const store = new Store(path);
  const kernel = new Kernel();
  const decisions = new Decisions({ store, kernel, bantime, log, commitDelayMs: 0 });
  const { receive } = fakeReceiver({ decisions, store, log, setSize: () => setSize.value });
  return { store, kernel, decisions, receive };
}

const v4 = (n: number, base = 0) => Array.from({ length: n }, (_, i) => `198.18.${(base + i) >> 8}.${(base + i) & 255}`);
const why = (rs: Applied[]) => rs.map((r) => (r.ok ? r.what : r.why));

test('a peer flooding bans fills at most 7/8 of set_size per family; the last eighth stays for this node\'s own bans', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ampere-room-'));
  const size = { value: 80 };
  const { store, kernel, decisions, receive } = setup(join(dir, 'ampere.db'), size);
  try {
    const now = Date.now();
    assert.equal(peerLimit(80), 70);
    // This node's own bans first: 5 scanners it caught itself.
    for (const a of v4(5, 200)) decisions.ban(a, 4, reason, now, 'auto');
    // The flood: 100 fresh addresses in one page. 65 fit under 70 with the 5 local ones.
    const flood = v4(100);
    let got = await receive(page(flood, now, 1));
    assert.equal(why(got).filter((w) => w === 'ban').length, 65);
    assert.equal(why(got).filter((w) => w === 'full').length, 35);
    const refused = got.find((r) => !r.ok) as Extract<Applied, { ok: false }>;
    assert.match(refused.detail, /peers' bans fill 70 of set_size 80 in IPv4: the rest is kept for this node's own bans/);
    assert.equal(decisions.countByFamily().v4, 70);
    // The next page of the flood: nothing new gets in; a longer ban of a host already held still does.
    got = await receive([...page(v4(20, 100), now, 200), ...page([flood[0]], now, 300, 'pbx9', now + 7_200_000)]);
    assert.deepEqual(why(got), [...Array(20).fill('full'), 'ban']);
    assert.equal(decisions.bannedUntil(flood[0]), now + 7_200_000);
    // IPv6 has its own room.
    got = await receive(page(['2001:db8::1', '2001:db8::2'], now, 400));
    assert.deepEqual(why(got), ['ban', 'ban']);
    // This node's own bans still have the last eighth: 10 more scanners, all in the kernel.
    for (const a of v4(10, 300)) decisions.ban(a, 4, reason, now, 'auto');
    assert.equal(decisions.countByFamily().v4, 80);
    for (const a of v4(10, 300)) assert.ok(kernel.held.has(a), a);
    // A larger set_size (a reload) gives peers room again.
    size.value = 160;
    got = await receive(page(v4(5, 150), now, 500));
    assert.deepEqual(why(got), Array(5).fill('ban'));
  } finally {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
