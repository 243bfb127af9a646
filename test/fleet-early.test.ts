import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { amiEvent } from '../tools/lab/ami';
import { FakeAmiProcess } from '../tools/lab/ami-proc';
import { eventually, FleetNode, initFleet, range } from './helpers/fleet';
import { skipUnlessRoot } from '../tools/lab/netns';
import { PgCluster, skipUnlessPg } from './helpers/pg';

/**
 * Early publish: a local automatic ban goes to fleet_decisions before its row is committed
 * (seq 0 marks such a row), exactly once, never ahead of an older unban of its address, and
 * through the outbox when the early insert fails. One real daemon, one throwaway PostgreSQL.
 */
const skip = skipUnlessRoot() ?? skipUnlessPg();

describe('fleet: early publish', { skip }, () => {
  let pg: PgCluster;
  let pbx1: FleetNode;
  let ami: FakeAmiProcess;

  before(async () => {
    pg = await PgCluster.start();
    await initFleet(pg, ['pbx1']);
    pbx1 = await FleetNode.create('pbx1', pg);
    ami = await FakeAmiProcess.start(pbx1.ns.name);
    await pbx1.start({ AMPERE_PORT: String(ami.port) });
  });
  after(async () => {
    await ami?.stop();
    await pbx1?.destroy();
    await pg?.stop();
  });

  const attack = async (addresses: string[]) => {
    for (const a of addresses) for (let i = 0; i < 3; i++) await ami.send(amiEvent('ChallengeResponseFailed', a));
    await eventually('pbx1 bans them', async () => { const k = await pbx1.kernel(); return addresses.every((a) => k.has(a)); });
  };
  /** pbx1's rows of these addresses in fleet_decisions, in commit order: "action address seq". */
  const rows = async (addresses: string[]) => {
    const out = await pg.psql(`SELECT action || ' ' || host(address) || ' ' || seq FROM fleet_decisions
      WHERE origin = 'pbx1' AND host(address) IN (${addresses.map((a) => `'${a}'`).join(', ')}) ORDER BY txid, id`);
    return out === '' ? [] : out.split('\n');
  };
  // The node's role loses (and gets back) its right to insert: every publish fails meanwhile, connected.
  const blockInserts = () => pg.psql(`REVOKE INSERT ON fleet_decisions FROM ampere_node`);
  const allowInserts = () => pg.psql(`GRANT INSERT ON fleet_decisions TO ampere_node`);
  const fleet = async () => (await pbx1.status()).fleet;

  test('a burst of automatic bans goes out early, each exactly once', async () => {
    const burst = range(10, 40);
    const before0 = await fleet();
    await attack(burst);
    await eventually('all 40 in fleet_decisions', async () => (await rows(burst)).length >= 40);
    // Later drains of the committed outbox rows must skip them: wait past a few of them.
    await eventually('outbox drained', async () => (await fleet()).outbox.backlog === 0);
    await new Promise((r) => setTimeout(r, 1500));
    const got = await rows(burst);
    assert.equal(got.length, 40, `duplicates: ${got.join('; ')}`);
    assert.deepEqual(new Set(got.map((r) => r.split(' ')[1])), new Set(burst));
    // seq 0: published from memory, before any outbox row (whose seq is its id) existed.
    assert.ok(got.every((r) => r.endsWith(' 0')), got.join('; '));
    const s = await fleet();
    assert.equal(s.publishedEarly - before0.publishedEarly, 40);
    assert.equal(s.published - before0.published, 40);
    assert.equal(s.earlyFailed, 0);
    assert.match((await pbx1.cli(['status'])).stdout, /fleet outbox: +0 waiting, \d+ published since start \(\d+ early\)/);
  });

  test('a ban never goes out early ahead of an older unban of its address waiting in the outbox', async () => {
    const [x] = range(20, 1);
    await attack([x]);
    await eventually('the first ban is published', async () => (await rows([x])).length === 1);
    await blockInserts();
    try {
      await pbx1.unban([x]);
      await eventually('the unban waits in the outbox', async () => (await fleet()).outbox.backlog === 1);
      const before0 = await fleet();
      await attack([x]);
      await eventually('the new ban waits behind it', async () => (await fleet()).outbox.backlog === 2);
      const s = await fleet();
      assert.equal(s.publishedEarly, before0.publishedEarly, 'not published early');
      assert.equal(s.earlyFailed, before0.earlyFailed, 'not even tried');
    } finally { await allowInserts(); }
    await eventually('the outbox drains', async () => (await rows([x])).length === 3, 10_000, 100);
    const got = await rows([x]);
    assert.deepEqual(got.map((r) => r.split(' ')[0]), ['ban', 'unban', 'ban'], got.join('; '));
    assert.ok(!got[1].endsWith(' 0') && !got[2].endsWith(' 0'), 'both from the outbox');
    assert.equal((await fleet()).outbox.backlog, 0);
  });

  test('an early insert that fails leaves the ban to the outbox, published once', async () => {
    const ys = range(30, 5);
    const before0 = await fleet();
    await blockInserts();
    try {
      await attack(ys);
      // The first one's at least: once its row is committed (and its drain failed too) the rest wait in the outbox untried.
      await eventually('the early insert failed', async () => (await fleet()).earlyFailed > before0.earlyFailed);
      await eventually('the bans wait in the outbox', async () => (await fleet()).outbox.backlog === 5);
      assert.deepEqual(await rows(ys), []);
    } finally { await allowInserts(); }
    await eventually('the outbox publishes them', async () => (await rows(ys)).length >= 5, 10_000, 100);
    await new Promise((r) => setTimeout(r, 1500));
    const got = await rows(ys);
    assert.equal(got.length, 5, got.join('; '));
    assert.ok(got.every((r) => !r.endsWith(' 0')), 'from the outbox');
    const s = await fleet();
    assert.equal(s.publishedEarly, before0.publishedEarly);
    assert.equal(s.published - before0.published, 5);
    assert.equal(s.outbox.backlog, 0);
  });

  test('a ban published early whose row is never stored: its unban still reaches the fleet', async () => {
    const [z] = range(40, 1);
    // The disk refuses this host's ban row (a trigger from outside, as a damaged or hostile
    // database could): the ban is in the kernel and went out early, its row stays pending.
    const db = new Database(pbx1.db);
    db.exec(`CREATE TRIGGER test_refuse BEFORE INSERT ON bans WHEN NEW.address = '${z}' BEGIN SELECT RAISE(ABORT, 'test: row refused'); END`);
    try {
      await attack([z]);
      await eventually('the ban went out early', async () => (await rows([z])).join() === `ban ${z} 0`);
      await eventually('its row failed to store', async () => (await pbx1.status()).storage.pending === 1);
      const before0 = await fleet();
      // The unban drops the pending row, so no trigger writes an outbox row for it.
      await pbx1.unban([z]);
      assert.equal((await pbx1.kernel()).has(z), false);
      await eventually('the unban is published', async () => (await rows([z])).length === 2, 10_000, 100);
      const got = await rows([z]);
      assert.deepEqual(got.map((r) => r.split(' ')[0]), ['ban', 'unban'], got.join('; '));
      assert.ok(!got[1].endsWith(' 0'), 'the unban came through the outbox');
      await eventually('outbox drained', async () => (await fleet()).outbox.backlog === 0);
      assert.equal((await fleet()).published - before0.published, 1);
      const stored = db.prepare('SELECT count(*) FROM bans WHERE address = ?').pluck().get(z);
      assert.equal(stored, 0, 'the refused row was never written');
    } finally {
      db.exec('DROP TRIGGER IF EXISTS test_refuse');
      db.close();
    }
  });
});
