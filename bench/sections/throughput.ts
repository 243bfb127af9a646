/**
 * 5. Throughput and CPU of the whole daemon: the real process in the pbx namespace (ipset
 * backend, loyalty 3), its AMI socket fed by the Asterisk stand-in with a stream built from
 * the captures (bench/lib/data.ts mixStream: the recorded events replayed with the attackers'
 * addresses spread over many sources). Mixes:
 *   - a scan: every source stays below loyalty (2 failures each): parse, score, history, no bans;
 *   - scan + brute force: 1 source in 10 sends a 3rd failure and is banned, then falls silent
 *     (as the kernel makes it): a ban every ~50 events;
 *   - a ban storm: every source is banned by its 3rd failure: the most bans the mix can give
 *     (one per ~6 events), each a database transaction, a kernel update, a conntrack cleanup.
 * Saturation: the stream in segments, each followed by the 3 failures of a marker host, with a
 * bounded number of segments unprocessed (see saturate()); the rate comes from the markers'
 * "ban" lines.
 * CPU: the stream paced at 5,000 events/s (in 10 ms ticks) for three windows one after the
 * other; CPU time of the daemon process (all its threads) from /proc over the third, once the
 * hot code is compiled, and separately that of its child processes (the long-lived ipset shell
 * and conntrack helper, and any that finished); the first window, just after the start, is
 * shown beside it (V8 still compiling: docs/notes/measurements.md, Throughput).
 */
import { mixStream, type Stream } from '../lib/data';
import { median, spread, type Row } from '../lib/report';
import { removeTempDir, sleep, tempDir } from '../lib/sys';
import { logProfiles, profArgs, startRunning, type Ctx } from './common';
import { cpuOf } from '../lib/procs';

const LOYALTY = 3;
const MARKER = '10.233.0.250';

const marker = (k: number) => `10.233.${200 + (k >> 8)}.${k & 255}`;

interface Sat { rate: number; cpu: number; bans: number; disconnects: number; lagMs: number }

/**
 * Segments of SEG events, each followed by the failures that ban a marker host; at most WINDOW
 * segments are unprocessed at any time, so the daemon always has work queued but never more
 * than about a second of it (a deeper backlog would also delay its AMI Ping answer past the
 * timeout). Rate = events between the first and the last marker ban / the time between them.
 */
async function saturate(ctx: Ctx, stream: Stream, seconds: number, tag: string): Promise<Sat> {
  const SEG = 2000;
  const WINDOW = 4;
  const r = await startRunning({ backend: 'ipset', env: { AMPERE_LOYALTY: String(LOYALTY) }, nodeArgs: profArgs(ctx, tag) });
  try {
    let bans = 0;
    let disconnects = 0;
    const seen = new Map<string, bigint>();
    const waiters = new Map<string, (t: bigint) => void>();
    r.daemon.on((l) => {
      if (l.msg === 'ami disconnected') disconnects++;
      if (l.msg !== 'ban') return;
      bans++;
      const w = waiters.get(l.address);
      if (w) { waiters.delete(l.address); w(process.hrtime.bigint()); } else seen.set(l.address, process.hrtime.bigint());
    });
    const banOf = (a: string) => new Promise<bigint>((res, rej) => {
      const t = seen.get(a);
      if (t !== undefined) return res(t);
      const timer = setTimeout(() => rej(new Error(`marker ${a} not banned within 120 s (daemon fell behind or lost the AMI connection)`)), 120_000);
      waiters.set(a, (x) => { clearTimeout(timer); res(x); });
    });
    const total = stream.events;
    let next = 0;
    let k = 0;
    const pending: { done: Promise<bigint>; end: number; sent: Promise<Record<string, any>> }[] = [];
    const send = () => {
      const m = marker(k++);
      const from = next;
      next = Math.min(total, next + SEG);
      const done = banOf(m);
      const sent = r.agent.call('segment', { file: stream.file, offsets: stream.offsetsFile, from, to: next, marker: m, markerFailures: LOYALTY }, 600_000);
      pending.push({ done, end: next, sent });
    };
    const c0 = cpuOf(r.daemon.pid);
    const w0 = process.hrtime.bigint();
    for (let i = 0; i < WINDOW && next < total; i++) send();
    const points: { t: bigint; events: number }[] = [];
    let lag = 0;
    while (pending.length) {
      const p = pending.shift()!;
      const t = await p.done;
      points.push({ t, events: p.end });
      lag = Number(t - BigInt((await p.sent).tm)) / 1e6;
      if (next < total && Number(t - w0) / 1e9 < seconds) send();
    }
    const c1 = cpuOf(r.daemon.pid);
    // Skip the first window (start-up, empty queue) when there is enough to measure.
    const a = points.length > WINDOW + 2 ? points[WINDOW - 1] : points[0];
    const b = points[points.length - 1];
    const rate = (b.events - a.events) / (Number(b.t - a.t) / 1e9);
    return { rate, cpu: (c1.self - c0.self) / (Number(b.t - w0) / 1e9), bans: bans - k, disconnects, lagMs: lag };
  } finally {
    await r.close();
    logProfiles(ctx, tag);
  }
}

interface Steady { first: number; self: number; children: number; lagMs: number; disconnects: number }

async function steady(ctx: Ctx, stream: Stream, rate: number, seconds: number, tag: string): Promise<Steady> {
  const r = await startRunning({ backend: 'ipset', env: { AMPERE_LOYALTY: String(LOYALTY) }, nodeArgs: profArgs(ctx, tag) });
  try {
    await sleep(500); // let start-up work settle
    let disconnects = 0;
    r.daemon.on((l) => { if (l.msg === 'ami disconnected') disconnects++; });
    const count = Math.round(rate * seconds);
    const window = (k: number) => r.agent.call('stream', { file: stream.file, offsets: stream.offsetsFile, rate, from: k * count, count }, 600_000);
    const f0 = cpuOf(r.daemon.pid);
    const fw0 = process.hrtime.bigint();
    await window(0);
    const first = (cpuOf(r.daemon.pid).self - f0.self) / (Number(process.hrtime.bigint() - fw0) / 1e9);
    await window(1);
    const done = r.daemon.next((l) => l.msg === 'ban' && l.address === MARKER, 60_000);
    const c0 = cpuOf(r.daemon.pid);
    const w0 = process.hrtime.bigint();
    await window(2);
    const m = await r.agent.call('fail', { addrs: [MARKER], n: LOYALTY });
    let at: bigint;
    try { at = (await done).at; } catch { at = process.hrtime.bigint(); disconnects = Math.max(disconnects, 1); }
    const c1 = cpuOf(r.daemon.pid);
    const wall = Number(at - w0) / 1e9;
    const lagMs = disconnects ? Infinity : Number(at - BigInt(m.t)) / 1e6;
    return { first, self: (c1.self - c0.self) / wall, children: (c1.children - c0.children) / wall, lagMs, disconnects };
  } finally {
    await r.close();
    logProfiles(ctx, tag);
  }
}

export async function throughputSection(ctx: Ctx): Promise<Row[]> {
  const runs = ctx.quick ? 1 : 3;
  const events = ctx.quick ? 100_000 : 400_000;
  const satSeconds = ctx.quick ? 3 : 6;
  const seconds = ctx.quick ? 2 : 5;
  const dir = tempDir('stream');
  const rows: Row[] = [];
  try {
    const mixes = [
      { name: 'scan, every source below loyalty (no bans)', banEvery: 0, steady: true, runs },
      { name: 'scan + brute force, 1 source in 10 banned at its 3rd failure', banEvery: 10, steady: true, runs: ctx.quick ? 0 : runs },
      { name: 'ban storm, every source banned at its 3rd failure', banEvery: 1, steady: false, runs: ctx.quick ? 0 : 2 },
    ];
    for (const mix of mixes) {
      if (!mix.runs) continue;
      const stream = mixStream(`${dir}/mix-${mix.banEvery}.ami`, Math.max(events, 3 * 5000 * seconds), mix.banEvery, LOYALTY);
      const sat: Sat[] = [];
      const cpu: Steady[] = [];
      for (let k = 0; k < mix.runs; k++) {
        sat.push(await saturate(ctx, stream, satSeconds, `saturate-${mix.banEvery}`));
        if (mix.steady) cpu.push(await steady(ctx, stream, 5000, seconds, `steady-${mix.banEvery}`));
      }
      ctx.log(`  throughput, ${mix.name}: ${sat.map((x) => `${Math.round(x.rate)}/s (${x.bans} bans, daemon CPU ${(x.cpu * 100).toFixed(0)}%, last marker ${x.lagMs.toFixed(0)} ms${x.disconnects ? `, ${x.disconnects} AMI disconnects` : ''})`).join('; ')}${cpu.length ? `; at 5000/s: ${cpu.map((x) => `first ${seconds} s ${(x.first * 100).toFixed(1)}%, then ${(x.self * 100).toFixed(1)}% + children ${(x.children * 100).toFixed(1)}%, lag ${x.lagMs.toFixed(0)} ms`).join('; ')}` : ''}`);
      const rates = sat.map((x) => x.rate);
      const banShare = stream.bansExpected / stream.events;
      const how = `daemon process; ${stream.sources.toLocaleString('en-US')} sources in ${stream.events.toLocaleString('en-US')} events${banShare ? `, 1 ban per ${Math.round(1 / banShare)} events` : ''}${sat.some((x) => x.disconnects) ? '; AMI connection dropped under load' : ''}`;
      if (mix.steady) {
        rows.push({ section: '5 Throughput', measure: `security events/s until it falls behind: ${mix.name}`, variant: 'ipset', value: median(rates), unit: '/s', spread: spread(rates), runs: mix.runs, digits: 0, how, target: '≥ 50,000/s', met: median(rates) >= 50_000 });
        const self = cpu.map((x) => x.self * 100);
        const both = cpu.map((x) => (x.self + x.children) * 100);
        const kept = cpu.every((x) => !x.disconnects);
        const lag = kept ? `; a marker after the stream decided ${median(cpu.map((x) => x.lagMs)).toFixed(0)} ms after it was written` : '; **fell behind**: the AMI connection was dropped';
        const first = cpu.map((x) => x.first * 100);
        rows.push({ section: '5 Throughput', measure: `CPU at a steady 5,000 events/s: ${mix.name}`, variant: 'ipset, daemon process', value: median(self), unit: '% of a core', spread: spread(self), runs: mix.runs, digits: 1, how: `${seconds} s, from ${2 * seconds} s into the stream${lag}`, target: '≤ 15%', met: median(self) <= 15 && kept });
        rows.push({ section: '5 Throughput', measure: `CPU at a steady 5,000 events/s: ${mix.name}`, variant: 'ipset, daemon + its child processes', value: median(both), unit: '% of a core', spread: spread(both), runs: mix.runs, digits: 1, how: 'children: the ipset shell, the conntrack helper and any process that finished' });
        rows.push({ section: '5 Throughput', measure: `CPU at 5,000 events/s in the first ${seconds} s after the start: ${mix.name}`, variant: 'ipset, daemon process', value: median(first), unit: '% of a core', spread: spread(first), runs: mix.runs, digits: 1, how: 'the same stream\'s first window: V8 still compiling the hot code' });
      } else {
        rows.push({ section: '5 Throughput', measure: `security events/s until it falls behind: ${mix.name}`, variant: 'ipset', value: median(rates), unit: '/s', spread: spread(rates), runs: mix.runs, digits: 0, how });
        const bps = rates.map((r) => r * banShare);
        rows.push({ section: '5 Throughput', measure: 'bans/s sustained in that storm', variant: 'ipset', value: median(bps), unit: '/s', spread: spread(bps), runs: mix.runs, digits: 0, how: 'each: database transaction, kernel update, conntrack cleanup' });
      }
    }
  } finally {
    removeTempDir(dir);
  }
  return rows;
}
