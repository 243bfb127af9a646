import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { amiEvent } from '../tools/lab/ami';
import { FakeAmiProcess } from '../tools/lab/ami-proc';
import { eventually, FleetNode, initFleet, range } from './helpers/fleet';
import { skipUnlessRoot } from '../tools/lab/netns';
import { PgCluster, skipUnlessPg } from './helpers/pg';

/** The engine stopped under attack, and the publish rate limit: nothing lost, nothing slower. */
const skip = skipUnlessRoot() ?? skipUnlessPg();

describe('fleet: engine outage and publish rate', { skip }, () => {
  let pg: PgCluster;
  let pbx1: FleetNode, pbx2: FleetNode;
  let ami: FakeAmiProcess;

  before(async () => {
    pg = await PgCluster.start();
    await initFleet(pg, ['pbx1', 'pbx2']);
    pbx1 = await FleetNode.create('pbx1', pg, { AMPERE_FLEET_PUBLISH_RATE: '50' });
    pbx2 = await FleetNode.create('pbx2', pg);
    ami = await FakeAmiProcess.start(pbx1.ns.name);
    await Promise.all([pbx1.start({ AMPERE_PORT: String(ami.port) }), pbx2.start()]);
  });
  after(async () => {
    await ami?.stop();
    for (const n of [pbx1, pbx2]) await n?.destroy();
    await pg?.stop();
  });

  /** Three failures from each address; resolves with the ms from each third failure to the address in pbx1's kernel. */
  const attack = async (addresses: string[]): Promise<number[]> => {
    const took: number[] = [];
    for (const a of addresses) {
      for (let i = 0; i < 2; i++) await ami.send(amiEvent('ChallengeResponseFailed', a));
      const t0 = performance.now();
      await ami.send(amiEvent('ChallengeResponseFailed', a));
      await eventually(`${a} in pbx1's kernel`, async () => (await pbx1.kernel()).has(a), 5000, 5);
      took.push(performance.now() - t0);
    }
    return took;
  };
  const p50 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

  test('PostgreSQL stopped for 20 s during attacks: local bans as fast, no crash; the outbox drains once it is back', async () => {
    const first = range(10, 10);
    const baseline = await attack(first);
    await eventually('pbx2 has the first ten', async () => { const k = await pbx2.kernel(); return first.every((a) => k.has(a)); });
    await pg.stopServer();
    const down = performance.now();
    await pbx1.daemon!.waitFor((l) => l.msg === 'fleet database unreachable: decisions wait in the outbox');
    // A peer's bans are in pbx2's own database: a restart with the engine down restores them.
    await pbx2.daemon!.stop();
    await pbx2.ns.must('ipset', ['flush', 'ampere-v4']);
    await pbx2.start({}, false);
    const restored = await pbx2.kernel();
    assert.ok(first.every((a) => restored.has(a)), 'fleet bans restored from SQLite with PostgreSQL down');
    const during = range(20, 30);
    const outage = await attack(during);
    const s = await pbx1.status();
    assert.equal(s.fleet.connected, false);
    assert.equal(s.fleet.outbox.backlog, 30);
    assert.ok(s.memory.rss < 300 * 1024 * 1024, `rss ${s.memory.rss}`);
    console.log(`# reaction (third failure -> pbx1's kernel, polled): p50 ${p50(baseline).toFixed(1)} ms with the engine up, ${p50(outage).toFixed(1)} ms with it down`);
    // Generous against polling noise on a loaded machine: the point is no wait on the engine.
    assert.ok(p50(outage) < Math.max(3 * p50(baseline), 150), `outage p50 ${p50(outage)} vs ${p50(baseline)}`);
    const left = 20_000 - (performance.now() - down);
    if (left > 0) await new Promise((r) => setTimeout(r, left));
    await pg.startServer();
    await eventually('pbx2 gets every ban made during the outage', async () => { const k = await pbx2.kernel(); return during.every((a) => k.has(a)); }, 30_000, 200);
    assert.equal((await pbx1.status()).fleet.outbox.backlog, 0);
    assert.equal(pbx1.daemon!.proc.exitCode, null);
    assert.equal(pbx2.daemon!.proc.exitCode, null);
  });

  test('fleet_publish_rate: a flood of local bans goes out at the limit, none dropped', async () => {
    const flood = range(100, 240);
    const t0 = performance.now();
    // Four operators at once: bans come faster than 50 a second.
    await Promise.all([0, 1, 2, 3].map((k) => pbx1.ban(flood.slice(k * 60, k * 60 + 60))));
    await eventually('pbx2 gets all 240', async () => { const k = await pbx2.kernel(); return flood.every((a) => k.has(a)); }, 30_000, 100);
    const took = performance.now() - t0;
    // 50/s with a 100 burst: 240 need at least 2.8 s, and no second of the table holds more than 150.
    assert.ok(took >= 2500, `all 240 arrived in ${Math.round(took)} ms: faster than the limit allows`);
    const busiest = Number(await pg.psql(`SELECT max(n) FROM (SELECT count(*) OVER (ORDER BY created_at RANGE BETWEEN CURRENT ROW AND interval '1 second' FOLLOWING) AS n
      FROM fleet_decisions WHERE origin = 'pbx1' AND address << inet '198.18.100.0/22') AS w`));
    assert.ok(busiest <= 150, `${busiest} published within one second`);
    console.log(`# 240 bans at fleet_publish_rate 50: all on pbx2 after ${Math.round(took)} ms, at most ${busiest} in any second`);
  });
});
