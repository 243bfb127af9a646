/**
 * 7. Fleet: from the deciding AMI event on pbx1 to the first probe datagram pbx2's kernel
 * drops, two labs (each its own namespaces, iptables and ipset), one throwaway PostgreSQL
 * reached over its Unix socket. Beside it, in the same run, the poll-based way: a bouncer that
 * asks the same table every 1 s (and 10 s) and adds what is new to an ipset set of its own in a
 * third lab, as CrowdSec's bouncers do against their API; its delay reaches past the probe's 5 s
 * window, so it is timed to the address being in its set (`ipset test` in a loop, ~10-20 ms
 * granularity, nothing beside a period of seconds). Full runs and --only=fleet only: it
 * needs PostgreSQL (scripts/setup.sh --with-test-tools), and the 10 s poll takes minutes.
 * Then the 1M scale rows (fleet-scale.ts).
 */
import { Client } from 'pg';
import { fleetInit } from '../../src/fleet/init';
import { PgCluster, skipUnlessPg } from '../../test/helpers/pg';
import { daemonEnv, PbxAgent, Prober, startDaemon, type DaemonProcess } from '../lib/procs';
import { percentile, spread, type Row } from '../lib/report';
import { createLab, monoNs, removeTempDir, sleep, tempDir, type Lab, type Netns } from '../lib/sys';
import type { Ctx } from './common';
import { fleetScaleRows } from './fleet-scale';

const SECTION = '7 Fleet';
const LOYALTY = 3;

/** IPv4 probe sources of this section: 10.233.200.0/21, apart from the other sections'. */
const src = (i: number) => `10.233.${200 + Math.floor(i / 250)}.${1 + (i % 250)}`;

/** Propagation samples (ms): deciding failure on pbx1's AMI -> first datagram dropped in the target lab. */
async function propagate(agent: PbxAgent, prober: Prober, n: number, base: number, pause: () => Promise<void>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const a = src(base + i);
    await agent.call('fail', { addrs: [a], n: LOYALTY - 1 });
    await prober.begin(a);
    const { t } = await agent.call('fail', { addrs: [a], n: 1 });
    const r = await prober.end(a);
    if (r) out.push(Number(r.firstLost - BigInt(t)) / 1e6);
    await pause();
  }
  return out;
}

/** The same samples timed to the address being in a set of the namespace (the poll rows). */
async function propagateToSet(agent: PbxAgent, ns: Netns, set: string, n: number, base: number, pause: () => Promise<void>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const a = src(base + i);
    await agent.call('fail', { addrs: [a], n: LOYALTY - 1 });
    const { t } = await agent.call('fail', { addrs: [a], n: 1 });
    const end = Date.now() + 60_000;
    while ((await ns.exec('ipset', ['test', set, a])).code !== 0 && Date.now() < end) await sleep(5);
    if (Date.now() < end) out.push(Number(monoNs() - BigInt(t)) / 1e6);
    await pause();
  }
  return out;
}

/** The poll-based receiver: every periodMs, new rows since the last id go into its own set in the lab. */
async function startPoller(url: string, ns: Netns, periodMs: number): Promise<{ stop(): Promise<void> }> {
  let stopped = false;
  const c = new Client({ connectionString: url });
  await c.connect();
  // Where it starts is known before the first sample is decided.
  const { rows } = await c.query<{ m: string | null }>(`SELECT max(id)::text AS m FROM fleet_decisions`);
  let last = Number(rows[0].m ?? 0);
  const loop = (async () => {
    while (!stopped) {
      await sleep(periodMs);
      const got = await c.query<{ id: string; a: string }>(`SELECT id::text AS id, host(address) AS a FROM fleet_decisions WHERE id > $1 AND action = 'ban' ORDER BY id`, [last]);
      if (got.rows.length === 0) continue;
      last = Number(got.rows[got.rows.length - 1].id);
      await ns.must('ipset', ['restore', '-exist'], got.rows.filter((r) => !r.a.includes(':')).map((r) => `add poll-v4 ${r.a}\n`).join(''));
    }
  })();
  return { stop: async () => { stopped = true; await loop.catch(() => {}); await c.end().catch(() => {}); } };
}

export async function fleetSection(ctx: Ctx): Promise<Row[]> {
  if (ctx.quick) { ctx.log('  fleet: skipped in --quick (needs PostgreSQL; run --only=fleet)'); return []; }
  const why = skipUnlessPg();
  if (why) throw new Error(`fleet: ${why}`);
  const rows = await propagationRows(ctx);
  return [...rows, ...await fleetScaleRows(ctx)];
}

/** Propagation from pbx1 to pbx2 by LISTEN, and beside it by polling every 1 s and 10 s. */
async function propagationRows(ctx: Ctx): Promise<Row[]> {
  const samples = { listen: 200, poll1: 30, poll10: 12 };
  const pg = await PgCluster.start();
  const labs: Lab[] = [];
  const daemons: DaemonProcess[] = [];
  const dirs: string[] = [];
  let agent: PbxAgent | undefined;
  const probers: Prober[] = [];
  try {
    await pg.createDb();
    const pw = (n: string) => `${n}-bench-pw`;
    await fleetInit(pg.url(), { ca: '', cert: '', key: '' }, ['pbx1', 'pbx2'].map((name) => ({ name, password: pw(name), kind: 'node' as const })));
    for (let i = 0; i < 3; i++) labs.push(await createLab(0));
    agent = await PbxAgent.start(labs[0].pbx, 5038, 0);
    for (const [k, name] of [[0, 'pbx1'], [1, 'pbx2']] as const) {
      const dir = tempDir(`fleet-${name}`);
      dirs.push(dir);
      const env = { AMPERE_BACKEND: 'ipset', AMPERE_FLEET_URL: pg.url(name, pw(name)), AMPERE_FLEET_ORIGIN: name, ...(k === 1 ? { AMPERE_PORT: '1' } : {}) };
      const d = startDaemon(labs[k].pbx, daemonEnv(dir, env));
      daemons.push(d);
      await d.waitFor((l) => l.msg === 'fleet connected', 60_000);
    }
    await agent.waitLogin(1, 60_000);
    // The poll lab: a set and a rule of the bouncer's own, no daemon.
    const poll = labs[2].pbx;
    await poll.must('ipset', ['create', 'poll-v4', 'hash:ip']);
    await poll.must('iptables', ['-w', '-I', 'INPUT', '-m', 'set', '--match-set', 'poll-v4', 'src', '-j', 'DROP']);
    probers.push(Prober.start(labs[1].pbx, labs[1].atk, labs[1].pbx4, labs[1].pbx6, 5071, 50));
    const rows: Row[] = [];
    const row = (variant: string, xs: number[]) => {
      for (const p of [50, 99]) rows.push({ section: SECTION, measure: `propagation p${p}, deciding event on pbx1 -> the peer's kernel`, variant, value: percentile(xs, p), unit: 'ms', spread: spread(xs), runs: xs.length, ...(p === 99 && variant.startsWith('LISTEN') ? { target: '≤ 50 ms', met: percentile(xs, 99) <= 50 } : {}) });
      ctx.log(`  fleet ${variant}: ${xs.length} bans, p50 ${percentile(xs, 50).toFixed(1)} ms, p99 ${percentile(xs, 99).toFixed(1)} ms; slowest ${[...xs].sort((a, b) => b - a).slice(0, 5).map((x) => x.toFixed(1)).join(', ')}`);
    };
    row('LISTEN (Ampere)', await propagate(agent, probers[0], samples.listen, 0, () => sleep(20 + Math.random() * 30)));
    for (const [period, n, base] of [[1000, samples.poll1, 200], [10_000, samples.poll10, 400]] as const) {
      const poller = await startPoller(pg.url('pbx2', pw('pbx2')), poll, period);
      try {
        // A random phase between bans, as a decision falls anywhere in the poll period.
        row(`poll every ${period / 1000} s (to its set)`, await propagateToSet(agent, poll, 'poll-v4', n, base, () => sleep(Math.random() * period)));
      } finally { await poller.stop(); }
    }
    return rows;
  } finally {
    for (const p of probers) await p.stop();
    for (const d of daemons) await d.stop();
    await agent?.stop();
    for (const l of labs) await l.destroy();
    for (const d of dirs) removeTempDir(d);
    await pg.stop();
  }
}
