/**
 * A peer's ban is stored before its kernel command. The attack it stops: a daemon killed
 * between the two (a SIGKILL, an OOM, a power cut) left kernel members without rows, and the
 * next start adopted them as this node's own bans and published them to the fleet as its
 * own: a peer's later unban could then no longer lift them anywhere. Here, at the moment each
 * kernel command leaves, a second connection (what the next start would read) must already
 * see every row, and the adoption must find nothing to take. A failing write still lets the
 * kernel drop the host, but the receive cursor does not move past the unstored rows.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AllowList } from '../src/allow';
import { bansToAdopt } from '../src/decisions/adopt';
import { Decisions, type KernelQueue } from '../src/decisions';
import type { KernelBan } from '../src/firewall';
import type { Received } from '../src/fleet/apply';
import { createLogger } from '../src/log';
import { Store } from '../src/store';
import { fakeReceiver } from './helpers/receiver';

const log = createLogger('fatal', { write: () => {} });
const bantime = { bantimeMs: 3_600_000, factor: 2, maxMs: 86_400_000 };

/** The kernel, and what a start beginning right as each command left would adopt of it. */
class Kernel implements KernelQueue {
  held: string[] = [];
  /** Per command: how many bans a start at that moment would adopt. */
  adoptedAtCommand: Promise<number>[] = [];
  constructor(private readonly path: string) {}
  async add(bans: KernelBan[], now: number) {
    this.held.push(...bans.map((b) => b.address));
    // Read now, as the command leaves: the listing and the second connection's view of the rows.
    const listed = this.held.map((address) => ({ address, family: 4 as const, timeoutSec: 3600 }));
    const next = new Store(this.path);
    const stored = new Set(listed.filter((b) => next.bans.isBanned(b.address, now)).map((b) => b.address));
    next.close();
    this.adoptedAtCommand.push(bansToAdopt(listed, (a) => stored.has(a), new AllowList([], null), now, 3_600_000).then((r) => r.rows.length));
  }
  async remove() {}
  async setAll() {}
}

const page = (n: number, now: number, base: number): Received[] => Array.from({ length: n }, (_, i) => ({
  id: String(base + i), txid: String(base + i), origin: 'pbx9', action: 'ban', address: `198.18.${(base + i) >> 8}.${(base + i) & 255}`,
  until: now + 3_600_000, reasonKind: 'ChallengeResponseFailed', reasonService: 'PJSIP', reasonAccount: '', failures: 3, operator: false, createdAt: now,
}));

function setup(dir: string) {
  const path = join(dir, 'ampere.db');
  const store = new Store(path);
  const kernel = new Kernel(path);
  const decisions = new Decisions({ store, kernel, bantime, log, commitDelayMs: 20 });
  return { store, kernel, decisions, ...fakeReceiver({ decisions, store, log, setSize: () => 65_536 }) };
}

test('a peer\'s ban, alone or in a page, is stored before its kernel command: a crash between leaves nothing to adopt as this node\'s own', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ampere-first-'));
  const { store, kernel, receive } = setup(dir);
  try {
    const now = Date.now();
    assert.equal((await receive(page(1, now, 1))).filter((r) => r.ok).length, 1);
    assert.equal((await receive(page(500, now, 10))).filter((r) => r.ok).length, 500);
    assert.equal(kernel.held.length, 501);
    assert.deepEqual(await Promise.all(kernel.adoptedAtCommand), [0, 0], 'a start at the kernel command would have adopted (and published) peers\' bans');
    const rows = store.bans.listBans(now);
    assert.equal(rows.length, 501);
    assert.ok(rows.every((r) => r.source === 'fleet' && r.origin === 'pbx9'));
    assert.equal(store.sqlite.prepare(`SELECT count(*) FROM bans WHERE source = 'kernel'`).pluck().get(), 0);
  } finally {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a page whose rows cannot be written: the kernel drops the hosts, the receive cursor stays until the rows are stored', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ampere-first-'));
  const { store, kernel, decisions, state, receive } = setup(dir);
  try {
    const now = Date.now();
    store.sqlite.exec(`CREATE TEMP TRIGGER refuse BEFORE INSERT ON bans BEGIN SELECT RAISE(ABORT, 'disk says no'); END`);
    await receive(page(50, now, 1));
    assert.equal(kernel.held.length, 50, 'the kernel did not wait for the database');
    assert.equal(state.get('receive_cursor'), undefined, 'the cursor moved past rows that are not stored');
    assert.equal(decisions.storage().pending, 50);
    await receive([]);
    assert.equal(state.get('receive_cursor'), undefined, 'the cursor moved while the rows are still pending');
    store.sqlite.exec(`DROP TRIGGER refuse`);
    // The pending rows' retry (after its backoff) stores them; the next round moves the cursor.
    for (let i = 0; i < 100 && decisions.storage().pending > 0; i++) await new Promise((r) => setTimeout(r, 50));
    assert.equal(decisions.storage().pending, 0);
    await receive([]);
    assert.equal(state.get('receive_cursor'), '50', 'the last txid read');
    assert.equal(store.bans.listBans(now).length, 50);
  } finally {
    decisions.close();
    store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
